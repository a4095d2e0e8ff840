/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "mover.h"
#include "util.h"

enum mover_kind { MOVER_MOVE, MOVER_REMOVE };

struct mover_job {
        uint64_t job;
        int32_t kind;
        int32_t pid;
        char enclave[64];
        char leaf[64];
};

struct mover_done {
        uint64_t job;
        int32_t error;
};

struct mover {
        int fd;
        pid_t pid;
};

/* The child: one job at a time, until tesserad goes away. */
static _Noreturn void mover_main(struct tessera_cgroup *cg, int fd)
{
        for (;;) {
                struct mover_job j;
                ssize_t n = recv(fd, &j, sizeof(j), 0);
                if (n == 0)
                        _exit(0);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        _exit(1);
                }
                if ((size_t)n != sizeof(j))
                        continue;
                j.enclave[sizeof(j.enclave) - 1] = '\0';
                j.leaf[sizeof(j.leaf) - 1] = '\0';
                struct mover_done d = {.job = j.job};
                if (j.kind == MOVER_REMOVE)
                        d.error = -cgroup_app_remove(cg, j.enclave, j.leaf, NULL);
                else
                        d.error = -cgroup_enter(cg, j.enclave, j.leaf, (pid_t)j.pid, NULL);
                if (send(fd, &d, sizeof(d), MSG_NOSIGNAL) < 0 && errno != EINTR)
                        _exit(1);
        }
}

int mover_start(struct tessera_cgroup *cg, struct mover **ret, struct tessera_error *err)
{
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
                return tessera_error_set(err, errno, "cannot make the mover's socket: %s", strerror(errno));
        pid_t parent = getpid();
        pid_t pid = fork();
        if (pid < 0) {
                int e = errno;
                close(sv[0]);
                close(sv[1]);
                return tessera_error_set(err, e, "cannot start the cgroup mover: %s", strerror(e));
        }
        if (pid == 0) {
                (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (getppid() != parent)
                        _exit(0);
                (void)prctl(PR_SET_NAME, "tesserad-mover");
                /* nothing of the daemon's but the socket: no listening socket, no store */
                if (dup2(sv[1], 3) < 0)
                        _exit(1);
                (void)syscall(SYS_close_range, 4, ~0U, 0);
                int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
                if (devnull >= 0) {
                        dup2(devnull, 0);
                        dup2(devnull, 1);
                }
                signal(SIGINT, SIG_IGN);
                signal(SIGTERM, SIG_DFL);
                mover_main(cg, 3);
        }
        close(sv[1]);
        struct mover *m = calloc(1, sizeof(*m));
        if (!m) {
                close(sv[0]);
                kill(pid, SIGKILL);
                waitpid(pid, NULL, 0);
                return tessera_error_set(err, ENOMEM, "out of memory");
        }
        m->fd = sv[0];
        m->pid = pid;
        *ret = m;
        return 0;
}

void mover_stop(struct mover *m)
{
        if (!m)
                return;
        close(m->fd);
        (void)kill(m->pid, SIGKILL);
        (void)waitpid(m->pid, NULL, 0);
        free(m);
}

int mover_fd(const struct mover *m)
{
        return m->fd;
}

static int mover_send(struct mover *m, struct mover_job *j, const char *enclave, const char *leaf,
                      struct tessera_error *err)
{
        if (strlen(enclave) >= sizeof(j->enclave) || strlen(leaf) >= sizeof(j->leaf))
                return tessera_error_set(err, ENAMETOOLONG, "cgroup leaf name too long");
        strcpy(j->enclave, enclave);
        strcpy(j->leaf, leaf);
        if (send(m->fd, j, sizeof(*j), MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
                return tessera_error_set(err, errno, "cannot reach the cgroup mover: %s", strerror(errno));
        return 0;
}

int mover_remove(struct mover *m, const char *enclave, const char *leaf, struct tessera_error *err)
{
        struct mover_job j = {.job = 0, .kind = MOVER_REMOVE};
        return mover_send(m, &j, enclave, leaf, err);
}

int mover_submit(struct mover *m, uint64_t job, const char *enclave, const char *leaf, pid_t pid,
                 struct tessera_error *err)
{
        struct mover_job j = {.job = job, .kind = MOVER_MOVE, .pid = pid};
        return mover_send(m, &j, enclave, leaf, err);
}

int mover_result(struct mover *m, uint64_t *ret_job, int *ret_errno)
{
        struct mover_done d;
        ssize_t n = recv(m->fd, &d, sizeof(d), MSG_DONTWAIT);
        if (n < 0)
                return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
        if (n == 0)
                return -EPIPE;
        if ((size_t)n != sizeof(d))
                return -EPROTO;
        *ret_job = d.job;
        *ret_errno = d.error;
        return 1;
}
