/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The forked application child, from fork to exec.  The supervisor is
 * single-threaded, so the child is a whole copy of it and may use libc
 * freely.  It first sheds everything of the supervisor's (only its stdio,
 * the start pipe and the error pipe survive, so a child waiting for `start`
 * holds no control connection) and resets its signals, then waits for the
 * start byte, then pins itself, drops to the application's ids, changes
 * directory and execs.  A failing step writes one exec_error to the error
 * pipe; the exec closes that pipe (CLOEXEC), which the supervisor reads as
 * success.  A stem (stem.c) runs this same path once its plan has come.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <termios.h>
#include <unistd.h>

#include "supervisor.h"
#include "util.h"

/* Where the child keeps its pipes once its descriptors are arranged. */
#define CHILD_GO_FD    3
#define CHILD_ERROR_FD 4

int app_child_fail(struct exec_error *e, int code, const char *field, const char *fmt, ...)
{
        e->code = code > 0 ? code : EIO;
        snprintf(e->field, sizeof(e->field), "%s", field);
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
        va_end(ap);
        return -e->code;
}

/* The pty slave, as controlling terminal of the new session. */
static int child_open_tty(const struct launch_plan *p, struct exec_error *e)
{
        int slave = ioctl(p->tty_master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
        if (slave < 0)
                return app_child_fail(e, errno, "tty", "cannot open the pty slave: %s", strerror(errno));
        if (ioctl(slave, TIOCSCTTY, 0) < 0)
                return app_child_fail(e, errno, "tty", "cannot make the pty the controlling terminal: %s",
                                      strerror(errno));
        /* as grantpt would: the slave belongs to the user who runs on it */
        if (p->set_ids && fchown(slave, p->uid, (gid_t)-1) < 0)
                return app_child_fail(e, errno, "tty", "cannot give the pty to uid %u: %s", (unsigned)p->uid,
                                      strerror(errno));
        return slave;
}

/*
 * 0-2 the application's stdio, 3 the start pipe, 4 the error pipe (both
 * CLOEXEC), nothing else.  Every source is first lifted above 4, so no dup3
 * overwrites a source that is still needed.
 */
static int child_arrange_fds(const struct launch_plan *p, int slave, struct exec_error *e)
{
        int want[5], high[5];
        for (int i = 0; i < 3; i++)
                want[i] = slave >= 0 ? slave : p->stdio[i];
        want[CHILD_GO_FD] = p->go_fd;
        want[CHILD_ERROR_FD] = p->error_fd;
        for (int i = 0; i < 5; i++) {
                high[i] = fcntl(want[i], F_DUPFD_CLOEXEC, 5);
                if (high[i] < 0)
                        return app_child_fail(e, errno, "stdio", "cannot duplicate a descriptor: %s", strerror(errno));
        }
        for (int i = 0; i < 5; i++)
                if (dup3(high[i], i, i >= CHILD_GO_FD ? O_CLOEXEC : 0) < 0)
                        return app_child_fail(e, errno, "stdio", "cannot set up the application's descriptors: %s",
                                              strerror(errno));
        if (close_range(5, ~0U, 0) < 0)
                return app_child_fail(e, errno, "stdio", "cannot close the supervisor's descriptors: %s",
                                      strerror(errno));
        return 0;
}

int app_child_reset_signals(struct exec_error *e)
{
        struct sigaction sa = {.sa_handler = SIG_DFL};
        for (int sig = 1; sig < NSIG; sig++)
                (void)sigaction(sig, &sa, NULL); /* SIGKILL, SIGSTOP and libc-internal ones refuse: fine */
        sigset_t none;
        sigemptyset(&none);
        if (sigprocmask(SIG_SETMASK, &none, NULL) < 0)
                return app_child_fail(e, errno, "app", "cannot unblock signals: %s", strerror(errno));
        return 0;
}

/*
 * Runs before the wait: default signals (so a SIGTERM from tesserad ends a
 * child that waits, as it would end the application), a session of its own,
 * the terminal, the descriptors.
 */
static int child_prepare(const struct launch_plan *p, int *error_fd, struct exec_error *e)
{
        int r = app_child_reset_signals(e);
        if (r < 0)
                return r;
        if (setsid() < 0)
                return app_child_fail(e, errno, "tty", "cannot start a new session: %s", strerror(errno));
        int slave = -1;
        if (p->tty_master >= 0) {
                slave = child_open_tty(p, e);
                if (slave < 0)
                        return slave;
        }
        r = child_arrange_fds(p, slave, e);
        if (r < 0)
                return r;
        *error_fd = CHILD_ERROR_FD;
        return 0;
}

static int child_wait_for_start(struct exec_error *e)
{
        char go;
        ssize_t n;
        do
                n = read(CHILD_GO_FD, &go, 1);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return app_child_fail(e, errno, "app", "cannot read the start signal: %s", strerror(errno));
        if (n == 0)
                return app_child_fail(e, ECANCELED, "app", "the launch was cancelled before the start");
        return 0;
}

/* Supplementary groups, then gid, then uid: each later step removes the right to do the earlier ones. */
static int child_set_ids(const struct launch_plan *p, struct exec_error *e)
{
        /* a user namespace with setgroups "deny" keeps what it inherited; launch refused explicit groups there */
        if (!p->setgroups_denied && setgroups(p->n_groups, p->groups) < 0)
                return app_child_fail(e, errno, "groups", "cannot set the supplementary groups: %s", strerror(errno));
        if (setresgid(p->gid, p->gid, p->gid) < 0)
                return app_child_fail(e, errno, "gid", "cannot switch to gid %u: %s", (unsigned)p->gid,
                                      strerror(errno));
        if (setresuid(p->uid, p->uid, p->uid) < 0)
                return app_child_fail(e, errno, "uid", "cannot switch to uid %u: %s", (unsigned)p->uid,
                                      strerror(errno));
        return 0;
}

static int child_exec_failed(const struct launch_plan *p, int code, struct exec_error *e)
{
        const char *cmd = p->argv[0];
        if (code == ENOENT && !strchr(cmd, '/'))
                return app_child_fail(e, code, "argv", "no such command '%.200s' in the enclave (PATH=%.200s)", cmd,
                                      p->path);
        if (code == ENOENT)
                return app_child_fail(e, code, "argv", "no such file '%.200s' in the enclave", cmd);
        if (code == EACCES)
                return app_child_fail(e, code, "argv", "'%.200s' is not executable in the enclave (permission denied)",
                                      cmd);
        return app_child_fail(e, code, "argv", "cannot execute '%.200s': %s", cmd, strerror(code));
}

static int child_exec(const struct launch_plan *p, struct exec_error *e)
{
        int r;
        if (p->cpus && sched_setaffinity(0, p->cpus_size, p->cpus) < 0)
                return app_child_fail(e, errno, "cpus", "cannot pin the application to cpus %s: %s", p->cpus_desc,
                                      strerror(errno));
        if (p->set_ids) {
                r = child_set_ids(p, e);
                if (r < 0)
                        return r;
        }
        /* after the drop: the directory is checked with the application's own rights */
        if (chdir(p->cwd) < 0)
                return app_child_fail(e, errno, "cwd", "cannot chdir to '%.200s': %s", p->cwd, strerror(errno));
        /* the supervisor raised its own limit to hold many logs; programs expect the usual one */
        if (setrlimit(RLIMIT_NOFILE, &p->nofile) < 0)
                return app_child_fail(e, errno, "app", "cannot restore the open-file limit: %s", strerror(errno));
        /* execvpe searches the PATH of this process, not the one in envp */
        if (setenv("PATH", p->path, 1) < 0)
                return app_child_fail(e, errno, "env", "cannot set the command search path: %s", strerror(errno));
        execvpe(p->argv[0], p->argv, p->envp);
        return child_exec_failed(p, errno, e);
}

_Noreturn void app_child_run(const struct launch_plan *p)
{
        struct exec_error e = {0};
        int error_fd = p->error_fd;
        int r = child_prepare(p, &error_fd, &e);
        if (r >= 0)
                r = child_wait_for_start(&e);
        if (r >= 0)
                (void)child_exec(p, &e);
        ssize_t n;
        do
                n = write(error_fd, &e, sizeof(e));
        while (n < 0 && errno == EINTR);
        _exit(127);
}
