/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * `open`: a file of the enclave for tesserad's `cat` and `write`, resolved
 * inside the enclave's root (openat2 RESOLVE_IN_ROOT: ".." and absolute
 * symlinks stay inside; no /proc magic links), with the rights of the
 * enclave's owner, regular files only.  The open happens in a short-lived
 * forked child that drops to the owner's ids, so no credential change can
 * leak into the supervisor, and opens with O_NONBLOCK, so a FIFO cannot
 * stall it.  The child sends the descriptor back over a socketpair.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/openat2.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "supervisor.h"
#include "util.h"

#define OPEN_WAIT_MS    2000
#define OPEN_CHILD_SOCK 3
#define RESOLVE_RETRIES 8 /* openat2 says EAGAIN when a rename raced the lookup */

struct open_result {
        int code; /* 0: the descriptor comes along */
        int64_t size;
        char msg[480];
};

struct open_request {
        const char *path;
        bool write;
        uid_t uid;
        gid_t gid;
        bool setgroups_denied;
};

/* ---- the child ---- */

__attribute__((format(printf, 3, 4))) static int open_fail(struct open_result *res, int code, const char *fmt, ...)
{
        res->code = code > 0 ? code : EIO;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(res->msg, sizeof(res->msg), fmt, ap);
        va_end(ap);
        return -res->code;
}

static int openat2_in_root(int root, const char *path, uint64_t flags, uint64_t mode)
{
        struct open_how how = {
                .flags = flags,
                .mode = mode,
                .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
        };
        int fd = -1;
        for (int i = 0; i < RESOLVE_RETRIES; i++) {
                fd = (int)syscall(SYS_openat2, root, path, &how, sizeof(how));
                if (fd >= 0 || errno != EAGAIN)
                        break;
        }
        return fd;
}

static int open_fail_errno(const struct open_request *o, struct open_result *res, int code)
{
        const char *p = o->path;
        switch (code) {
        case ENOENT: return open_fail(res, code, "'%.300s' does not exist in the enclave", p);
        case EACCES:
        case EPERM:
                return open_fail(res, code, "uid %u may not %s '%.300s' in the enclave", (unsigned)o->uid,
                                 o->write ? "write" : "read", p);
        case ELOOP:
                return open_fail(res, code, "'%.300s': too many symbolic links, or a /proc magic link (not followed)",
                                 p);
        case ENXIO: return open_fail(res, code, "'%.300s' is not a regular file", p);
        default: return open_fail(res, code, "cannot open '%.300s' in the enclave: %s", p, strerror(code));
        }
}

static int check_regular(int fd, const struct open_request *o, struct open_result *res)
{
        struct stat st;
        if (fstat(fd, &st) < 0)
                return open_fail(res, errno, "cannot stat '%.300s': %s", o->path, strerror(errno));
        if (S_ISDIR(st.st_mode))
                return open_fail(res, EISDIR, "'%.300s' is a directory, not a regular file", o->path);
        if (!S_ISREG(st.st_mode))
                return open_fail(res, EINVAL, "'%.300s' is not a regular file", o->path);
        res->size = st.st_size;
        return 0;
}

static int child_drop_ids(const struct open_request *o, struct open_result *res)
{
        if (o->uid == getuid() && o->gid == getgid())
                return 0;
        if (!o->setgroups_denied && setgroups(0, NULL) < 0)
                return open_fail(res, errno, "cannot drop the supplementary groups: %s", strerror(errno));
        if (setresgid(o->gid, o->gid, o->gid) < 0)
                return open_fail(res, errno, "cannot switch to gid %u: %s", (unsigned)o->gid, strerror(errno));
        if (setresuid(o->uid, o->uid, o->uid) < 0)
                return open_fail(res, errno, "cannot switch to uid %u: %s", (unsigned)o->uid, strerror(errno));
        return 0;
}

static int child_open(const struct open_request *o, struct open_result *res)
{
        int r = child_drop_ids(o, res);
        if (r < 0)
                return r;
        /* "/" is the enclave's root: the supervisor pivoted into it (or it is the host's, without a root) */
        _cleanup_close_ int root = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (root < 0)
                return open_fail(res, errno, "cannot open the enclave's root: %s", strerror(errno));
        /* a look without opening first: a device or FIFO is refused before any open can have side effects */
        _cleanup_close_ int probe = openat2_in_root(root, o->path, O_PATH | O_CLOEXEC, 0);
        if (probe < 0 && !(errno == ENOENT && o->write))
                return open_fail_errno(o, res, errno);
        if (probe >= 0) {
                r = check_regular(probe, o, res);
                if (r < 0)
                        return r;
        }
        uint64_t flags = (o->write ? O_WRONLY | O_CREAT | O_TRUNC : O_RDONLY) | O_NONBLOCK | O_NOCTTY | O_CLOEXEC;
        int fd = openat2_in_root(root, o->path, flags, o->write ? 0644 : 0);
        if (fd < 0)
                return open_fail_errno(o, res, errno);
        /* what was opened decides, whatever the probe saw */
        r = check_regular(fd, o, res);
        if (r < 0) {
                close(fd);
                return r;
        }
        return fd;
}

static _Noreturn void open_child_run(int sock, const struct open_request *o)
{
        struct open_result res = {0};
        /* nothing of the supervisor's stays open in a process that takes another uid */
        if (sock != OPEN_CHILD_SOCK && dup3(sock, OPEN_CHILD_SOCK, O_CLOEXEC) < 0)
                _exit(1);
        if (close_range(OPEN_CHILD_SOCK + 1, ~0U, 0) < 0)
                _exit(1);
        int fd = child_open(o, &res);
        struct iovec iov = {.iov_base = &res, .iov_len = sizeof(res)};
        char control[CMSG_SPACE(sizeof(int))] = {0};
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
        if (fd >= 0) {
                msg.msg_control = control;
                msg.msg_controllen = sizeof(control);
                struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
                cm->cmsg_level = SOL_SOCKET;
                cm->cmsg_type = SCM_RIGHTS;
                cm->cmsg_len = CMSG_LEN(sizeof(int));
                memcpy(CMSG_DATA(cm), &fd, sizeof(int));
        }
        _exit(sendmsg(OPEN_CHILD_SOCK, &msg, MSG_NOSIGNAL) == (ssize_t)sizeof(res) ? 0 : 1);
}

/* ---- the supervisor ---- */

static int open_parse(struct supervisor *s, json_t *req, struct open_request *o, struct tessera_error *err)
{
        uint32_t uid, gid;
        int r = req_absolute_path(req, "path", true, &o->path, err);
        if (r >= 0)
                r = req_bool(req, "write", false, &o->write, err);
        if (r >= 0)
                r = req_id(req, "uid", &uid, err);
        if (r >= 0)
                r = req_id(req, "gid", &gid, err);
        if (r < 0)
                return r;
        o->uid = uid;
        o->gid = gid;
        o->setgroups_denied = s->setgroups_denied;
        return 0;
}

/* The child's answer: 0 and *ret_fd, or the child's error. */
static int open_receive(int sock, struct open_result *res, int *ret_fd, struct tessera_error *err)
{
        struct pollfd pfd = {.fd = sock, .events = POLLIN};
        int n;
        do
                n = poll(&pfd, 1, OPEN_WAIT_MS);
        while (n < 0 && errno == EINTR);
        if (n == 0)
                return tessera_error_field(err, ETIMEDOUT, "path", "opening the file took longer than %d s",
                                           OPEN_WAIT_MS / 1000);
        struct iovec iov = {.iov_base = res, .iov_len = sizeof(*res)};
        char control[CMSG_SPACE(sizeof(int))];
        struct msghdr msg = {
                .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof(control)};
        ssize_t got = n > 0 ? recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT) : -1;
        int fd = -1;
        for (struct cmsghdr *cm = got >= 0 ? CMSG_FIRSTHDR(&msg) : NULL; cm; cm = CMSG_NXTHDR(&msg, cm))
                if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS &&
                    cm->cmsg_len == CMSG_LEN(sizeof(int)))
                        memcpy(&fd, CMSG_DATA(cm), sizeof(int));
        if (got != (ssize_t)sizeof(*res)) {
                if (fd >= 0)
                        close(fd);
                return tessera_error_set(err, EIO, "the file opener ended without an answer");
        }
        res->msg[sizeof(res->msg) - 1] = '\0';
        if (res->code != 0 || fd < 0) {
                if (fd >= 0)
                        close(fd);
                return tessera_error_field(err, res->code ? res->code : EIO, "path", "%s",
                                           res->code ? res->msg : "no descriptor came back");
        }
        *ret_fd = fd;
        return 0;
}

int op_open(struct supervisor *s, struct call *c, struct tessera_error *err)
{
        struct open_request o;
        int r = open_parse(s, c->request, &o, err);
        if (r < 0)
                return r;
        int sp[2];
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) < 0)
                return tessera_error_set(err, errno, "cannot create a socket pair: %s", strerror(errno));
        _cleanup_close_ int ours = sp[0], theirs = sp[1];
        pid_t pid = fork();
        if (pid < 0)
                return tessera_error_set(err, errno, "cannot fork the file opener: %s", strerror(errno));
        if (pid == 0)
                open_child_run(theirs, &o);
        close(TAKE_FD(theirs));
        struct open_result res = {0};
        int fd = -1;
        r = open_receive(ours, &res, &fd, err);
        if (r == -ETIMEDOUT) {
                /* stuck on a file system: the reaper takes it once it dies */
                (void)kill(pid, SIGKILL);
                return r;
        }
        /* it has answered (or died): it is exiting */
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
                ;
        if (r < 0)
                return r;
        c->result = json_pack("{s:I}", "size", (json_int_t)res.size);
        if (!c->result) {
                close(fd);
                return tessera_error_set(err, ENOMEM, "out of memory");
        }
        c->fds_out[c->n_fds_out++] = fd;
        return 0;
}
