/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Stems: children forked before any launch needs them, so that tesserad can
 * move each into a cgroup leaf of its own in the background (on cgroup v1
 * that move waits for an RCU grace period, 10-16 ms, far too long for a
 * launch's path).  A stem sheds what it has of the supervisor's and resets
 * its signals as a launched child does, then waits on a SOCK_SEQPACKET
 * socket for its plan.  A launch that names the stem sends one message: the
 * plan written into a memfd (argv and env may take 256 KiB, more than one
 * socket message reliably carries), and as SCM_RIGHTS that memfd, the start
 * and error pipes and the stdio (or the pty master).  From there the stem is
 * a launched child: app_child_run(), from its first step.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "supervisor.h"
#include "util.h"

#define STEM_SPEC_FD  3         /* where a stem keeps its socket; nothing else stays open */
#define STEM_MAX_SPEC (1 << 20) /* more than launch's limits allow (2 x 128 KiB of strings, a cwd, ...) */

/*
 * The plan's fixed part.  Then: the cpu set (cpus_size bytes), the groups,
 * and NUL-terminated strings: argv, envp, path, cwd, cpus_desc.  The cpu set
 * follows it directly, so it is aligned as the set's longs want.
 */
struct stem_spec {
        uint32_t n_argv, n_env, n_groups, cpus_size;
        uint32_t uid, gid;
        bool set_ids, setgroups_denied, tty;
        struct rlimit nofile;
};
_Static_assert(sizeof(struct stem_spec) % sizeof(long) == 0, "the cpu set after stem_spec must stay aligned");

/* The socket message; its descriptors in this order (then the pty master alone, or stdin, stdout, stderr). */
struct stem_message {
        uint64_t spec_size;
};
enum { STEM_FD_SPEC, STEM_FD_GO, STEM_FD_ERROR, STEM_FD_STDIO, STEM_MAX_FDS = STEM_FD_STDIO + 3 };

/* ---- the supervisor: the plan as bytes ---- */

static size_t strings_size(char *const *list, uint32_t *ret_n)
{
        size_t size = 0;
        uint32_t n = 0;
        for (; list[n]; n++)
                size += strlen(list[n]) + 1;
        *ret_n = n;
        return size;
}

static char *put(char *at, const void *src, size_t n)
{
        if (n > 0)
                memcpy(at, src, n);
        return at + n;
}

static char *put_string(char *at, const char *s)
{
        return put(at, s, strlen(s) + 1);
}

static char *put_strings(char *at, char *const *list)
{
        for (; *list; list++)
                at = put_string(at, *list);
        return at;
}

/* The plan as one buffer, *ret_size bytes; the descriptors go beside it. */
static char *spec_build(const struct launch_plan *p, size_t *ret_size)
{
        struct stem_spec h = {
                .n_groups = (uint32_t)p->n_groups,
                .cpus_size = p->cpus ? (uint32_t)p->cpus_size : 0,
                .uid = p->uid,
                .gid = p->gid,
                .set_ids = p->set_ids,
                .setgroups_denied = p->setgroups_denied,
                .tty = p->tty_master >= 0,
                .nofile = p->nofile,
        };
        size_t size = sizeof(h) + h.cpus_size + p->n_groups * sizeof(gid_t) + strings_size(p->argv, &h.n_argv) +
                      strings_size(p->envp, &h.n_env) + strlen(p->path) + strlen(p->cwd) + strlen(p->cpus_desc) + 3;
        char *buf = malloc(size);
        if (!buf)
                return NULL;
        char *at = put(buf, &h, sizeof(h));
        at = put(at, p->cpus, h.cpus_size);
        at = put(at, p->groups, p->n_groups * sizeof(gid_t));
        at = put_strings(at, p->argv);
        at = put_strings(at, p->envp);
        at = put_string(at, p->path);
        at = put_string(at, p->cwd);
        (void)put_string(at, p->cpus_desc);
        *ret_size = size;
        return buf;
}

static int spec_memfd(const struct launch_plan *p, size_t *ret_size, struct tessera_error *err)
{
        size_t size;
        _cleanup_free_ char *spec = spec_build(p, &size);
        if (!spec)
                return tessera_error_set(err, ENOMEM, "out of memory");
        _cleanup_close_ int fd = memfd_create("tessera-launch-plan", MFD_CLOEXEC);
        if (fd < 0)
                return tessera_error_set(err, errno, "cannot create a memfd for the launch plan: %s", strerror(errno));
        for (size_t done = 0; done < size;) {
                ssize_t n = write(fd, spec + done, size - done);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return tessera_error_set(err, n < 0 ? errno : EIO, "cannot write the launch plan: %s",
                                                 n < 0 ? strerror(errno) : "short write");
                done += (size_t)n;
        }
        *ret_size = size;
        return TAKE_FD(fd);
}

int stem_send_plan(int spec_fd, const struct launch_plan *p, struct tessera_error *err)
{
        size_t size = 0;
        _cleanup_close_ int memfd = spec_memfd(p, &size, err);
        if (memfd < 0)
                return memfd;
        int fds[STEM_MAX_FDS] = {[STEM_FD_SPEC] = memfd, [STEM_FD_GO] = p->go_fd, [STEM_FD_ERROR] = p->error_fd};
        size_t n_fds = STEM_FD_STDIO;
        if (p->tty_master >= 0)
                fds[n_fds++] = p->tty_master;
        else
                for (int i = 0; i < 3; i++)
                        fds[n_fds++] = p->stdio[i];
        struct stem_message m = {.spec_size = size};
        struct iovec iov = {.iov_base = &m, .iov_len = sizeof(m)};
        char control[CMSG_SPACE(sizeof(fds))] = {0};
        struct msghdr msg = {.msg_iov = &iov,
                             .msg_iovlen = 1,
                             .msg_control = control,
                             .msg_controllen = CMSG_SPACE(n_fds * sizeof(int))};
        struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(n_fds * sizeof(int));
        memcpy(CMSG_DATA(cm), fds, n_fds * sizeof(int));
        /* the only message the stem ever gets: its queue has room, so it never waits */
        if (sendmsg(spec_fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT) != (ssize_t)sizeof(m))
                return tessera_error_set(err, errno, "cannot send the launch plan to the stem: %s", strerror(errno));
        return 0;
}

/* ---- the stem: the plan from bytes ---- */

struct spec_reader {
        char *at, *end;
        bool bad;
};

static void *take(struct spec_reader *rd, size_t n)
{
        if (rd->bad || (size_t)(rd->end - rd->at) < n) {
                rd->bad = true;
                return NULL;
        }
        void *p = rd->at;
        rd->at += n;
        return p;
}

static char *take_string(struct spec_reader *rd)
{
        char *nul = rd->bad ? NULL : memchr(rd->at, '\0', (size_t)(rd->end - rd->at));
        if (!nul) {
                rd->bad = true;
                return NULL;
        }
        return take(rd, (size_t)(nul - rd->at) + 1);
}

static char **take_strings(struct spec_reader *rd, uint32_t n)
{
        /* each string takes at least its NUL: a count past what is left is a bad spec, not a huge calloc */
        char **list = n <= (size_t)(rd->end - rd->at) ? calloc((size_t)n + 1, sizeof(*list)) : NULL;
        if (!list) {
                rd->bad = true;
                return NULL;
        }
        for (uint32_t i = 0; i < n; i++)
                list[i] = take_string(rd);
        return list;
}

/* The plan's fields from its bytes (pointers into buf; the descriptors are set apart). */
static int spec_parse(char *buf, size_t size, struct launch_plan *p, bool *ret_tty)
{
        struct spec_reader rd = {.at = buf, .end = buf + size};
        const struct stem_spec *h = take(&rd, sizeof(*h));
        if (!h || h->n_argv < 1)
                return -EBADMSG;
        p->cpus = h->cpus_size ? take(&rd, h->cpus_size) : NULL;
        p->cpus_size = h->cpus_size;
        p->groups = take(&rd, (size_t)h->n_groups * sizeof(gid_t));
        p->n_groups = h->n_groups;
        p->argv = take_strings(&rd, h->n_argv);
        p->envp = take_strings(&rd, h->n_env);
        p->path = take_string(&rd);
        p->cwd = take_string(&rd);
        p->cpus_desc = take_string(&rd);
        p->set_ids = h->set_ids;
        p->uid = h->uid;
        p->gid = h->gid;
        p->setgroups_denied = h->setgroups_denied;
        p->nofile = h->nofile;
        *ret_tty = h->tty;
        return rd.bad ? -EBADMSG : 0;
}

/* NULL with errno set when it cannot be read whole. */
static char *read_spec(int fd, size_t size)
{
        char *buf = malloc(size);
        for (size_t done = 0; buf && done < size;) {
                ssize_t n = pread(fd, buf + done, size - done, (off_t)done);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0) {
                        int saved = n < 0 ? errno : EIO;
                        free(buf);
                        errno = saved;
                        return NULL;
                }
                done += (size_t)n;
        }
        return buf;
}

/* The message's descriptors, in fds[]; returns how many came. */
static size_t received_fds(struct msghdr *msg, int *fds)
{
        size_t n = 0;
        for (struct cmsghdr *cm = CMSG_FIRSTHDR(msg); cm; cm = CMSG_NXTHDR(msg, cm))
                if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS && n == 0) {
                        n = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                        memcpy(fds, CMSG_DATA(cm), n * sizeof(int));
                }
        return n;
}

/* Puts the plan's descriptors where the plan says; *e is filled on failure. */
static int stem_take_fds(const int *fds, size_t n, bool tty, struct launch_plan *p, struct exec_error *e)
{
        if (n != (tty ? STEM_FD_STDIO + 1 : STEM_FD_STDIO + 3))
                return app_child_fail(e, EBADMSG, "app", "the stem got %zu descriptors with its plan", n);
        p->tty_master = tty ? fds[STEM_FD_STDIO] : -1;
        for (int i = 0; !tty && i < 3; i++)
                p->stdio[i] = fds[STEM_FD_STDIO + i];
        return 0;
}

/*
 * Waits for the plan: 0 with *p filled, 1 when the supervisor dropped the
 * stem (closed its end), or a negative errno with *e filled (and
 * p->error_fd set when the error pipe came, so the error can be reported).
 */
static int stem_receive(int sock, struct launch_plan *p, struct exec_error *e)
{
        struct stem_message m;
        struct iovec iov = {.iov_base = &m, .iov_len = sizeof(m)};
        char control[CMSG_SPACE(STEM_MAX_FDS * sizeof(int))];
        struct msghdr msg = {
                .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof(control)};
        ssize_t got;
        do
                got = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
        while (got < 0 && errno == EINTR);
        if (got == 0)
                return 1;
        if (got < 0)
                return app_child_fail(e, errno, "app", "the stem cannot receive its plan: %s", strerror(errno));
        int fds[STEM_MAX_FDS];
        size_t n = received_fds(&msg, fds);
        p->go_fd = n > STEM_FD_GO ? fds[STEM_FD_GO] : -1;
        p->error_fd = n > STEM_FD_ERROR ? fds[STEM_FD_ERROR] : -1;
        if (got != sizeof(m) || (msg.msg_flags & MSG_CTRUNC) || n <= STEM_FD_ERROR ||
            m.spec_size < sizeof(struct stem_spec) || m.spec_size > STEM_MAX_SPEC)
                return app_child_fail(e, EBADMSG, "app", "the stem got a malformed plan message");
        _cleanup_close_ int memfd = fds[STEM_FD_SPEC];
        char *spec = read_spec(memfd, m.spec_size); /* the plan's strings point into it until the exec */
        if (!spec)
                return app_child_fail(e, errno, "app", "the stem cannot read its plan: %s", strerror(errno));
        bool tty;
        if (spec_parse(spec, m.spec_size, p, &tty) < 0)
                return app_child_fail(e, EBADMSG, "app", "the stem got a malformed plan");
        return stem_take_fds(fds, n, tty, p, e);
}

/* Only the plan socket stays open, on STEM_SPEC_FD; signals as a launched child has them. */
static int stem_shed(int sock, struct exec_error *e)
{
        if ((sock != STEM_SPEC_FD && dup3(sock, STEM_SPEC_FD, O_CLOEXEC) < 0) ||
            close_range(0, STEM_SPEC_FD - 1, 0) < 0 || close_range(STEM_SPEC_FD + 1, ~0U, 0) < 0)
                return app_child_fail(e, errno, "app", "cannot close the supervisor's descriptors: %s",
                                      strerror(errno));
        return app_child_reset_signals(e);
}

static _Noreturn void stem_run(int sock)
{
        struct exec_error e = {0};
        struct launch_plan p = {.go_fd = -1, .error_fd = -1, .tty_master = -1};
        int r = stem_shed(sock, &e);
        if (r == 0)
                r = stem_receive(STEM_SPEC_FD, &p, &e);
        if (r == 0) {
                close(STEM_SPEC_FD);
                app_child_run(&p);
        }
        /* r > 0: dropped before any launch used it */
        if (r < 0 && p.error_fd >= 0)
                (void)!write(p.error_fd, &e, sizeof(e));
        _exit(r > 0 ? 0 : 127);
}

int stem_fork(int *ret_spec_fd, pid_t *ret_pid, struct tessera_error *err)
{
        int sp[2];
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) < 0)
                return tessera_error_set(err, errno, "cannot create a stem's plan socket: %s", strerror(errno));
        _cleanup_close_ int ours = sp[0], theirs = sp[1];
        pid_t pid = fork();
        if (pid < 0)
                return tessera_error_set(err, errno, "cannot fork a stem: %s", strerror(errno));
        if (pid == 0)
                stem_run(theirs);
        *ret_spec_fd = TAKE_FD(ours);
        *ret_pid = pid;
        return 0;
}
