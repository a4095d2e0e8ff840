/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * sandbox_spawn_supervisor() and tessera-supervisor against the real kernel:
 * namespaces, a busybox root, a user namespace, failures that leave nothing
 * behind, the peer checks and the shutdown.  Needs root.  Every supervisor is
 * SIGKILLed and reaped at the end, whatever happened; all mounts happen in the
 * supervisors' own mount namespaces.
 */
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <libgen.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <linux/magic.h>
#include <seccomp.h>

#include "tessera-build.h"
#include "cgroup.h"
#include "proto.h"
#include "sandbox.h"
#include "tap.h"
#include "util.h"

#define BUSYBOX "/bin/busybox"

static char supervisor_bin[PATH_MAX];
static char tmpdir[PATH_MAX];
static int enclave_seq;

/* Every supervisor started here, so the end (or a failed check) can still kill and reap it. */
struct enclave_fixture {
        char name[64];
        char socket_path[PATH_MAX];
        char log_path[PATH_MAX];
        int listen_fd;
        int log_fd;
        pid_t pid;
        int pidfd;
};

/* ---- helpers ---- */

static void find_supervisor(void)
{
        const char *build = getenv("TESSERA_BUILD");
        if (build && *build) {
                snprintf(supervisor_bin, sizeof(supervisor_bin), "%s/src/supervisor/tessera-supervisor", build);
                return;
        }
        /* this test lives in <build>/tests/unit */
        char self[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        if (n > 0) {
                self[n] = '\0';
                snprintf(supervisor_bin, sizeof(supervisor_bin), "%s/../../src/supervisor/tessera-supervisor",
                         dirname(self));
                if (access(supervisor_bin, X_OK) == 0)
                        return;
        }
        snprintf(supervisor_bin, sizeof(supervisor_bin), "%s/src/supervisor/tessera-supervisor", TESSERA_BUILDDIR);
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
        (void)st;
        (void)type;
        (void)ftw;
        if (remove(path) < 0)
                diag("cannot remove %s: %s", path, strerror(errno));
        return 0;
}

static void remove_tree(const char *path)
{
        /* FTW_MOUNT: never descend into something mounted (there should be nothing) */
        nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

static int listen_on(const char *path)
{
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 16) < 0) {
                int r = -errno;
                close(fd);
                return r;
        }
        (void)chmod(path, 0777); /* so the uid-65534 test reaches the supervisor's own check */
        return fd;
}

static int connect_to(const char *path)
{
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        struct timeval tv = {.tv_sec = 5};
        (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
                int r = -errno;
                close(fd);
                return r;
        }
        return fd;
}

/* One request on an open connection; returns the reply (new reference) or NULL. */
static json_t *call_on(int fd, const char *op, struct tessera_error *err)
{
        json_t *req = proto_request(op);
        int r = proto_send(fd, req, NULL, 0, err);
        json_decref(req);
        if (r < 0)
                return NULL;
        json_t *reply = NULL;
        if (proto_recv(fd, &reply, NULL, NULL, err) < 0)
                return NULL;
        return reply;
}

static json_t *call(const struct enclave_fixture *e, const char *op, struct tessera_error *err)
{
        int fd = connect_to(e->socket_path);
        if (fd < 0) {
                tessera_error_set(err, -fd, "cannot connect to %s: %s", e->socket_path, strerror(-fd));
                return NULL;
        }
        json_t *reply = call_on(fd, op, err);
        close(fd);
        return reply;
}

static void fixture_init(struct enclave_fixture *e)
{
        memset(e, 0, sizeof(*e));
        snprintf(e->name, sizeof(e->name), "tsb-%d-%d", (int)getpid(), ++enclave_seq);
        snprintf(e->socket_path, sizeof(e->socket_path), "%s/%s.sock", tmpdir, e->name);
        snprintf(e->log_path, sizeof(e->log_path), "%s/%s.log", tmpdir, e->name);
        e->listen_fd = listen_on(e->socket_path);
        e->log_fd = open(e->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        e->pid = 0;
        e->pidfd = -1;
}

static void fixture_config(const struct enclave_fixture *e, struct sandbox_config *cfg)
{
        memset(cfg, 0, sizeof(*cfg));
        cfg->enclave = e->name;
        cfg->supervisor_path = supervisor_bin;
        cfg->listen_fd = e->listen_fd;
        cfg->log_fd = e->log_fd;
}

static int fixture_spawn(struct enclave_fixture *e, const struct sandbox_config *cfg, struct tessera_error *err)
{
        return sandbox_spawn_supervisor(cfg, &e->pid, &e->pidfd, err);
}

/* Kills and reaps the supervisor if it still runs; returns its wait status (or -1). */
static int fixture_reap(struct enclave_fixture *e, bool kill_first)
{
        int status = -1;
        if (e->pidfd >= 0) {
                if (kill_first)
                        (void)pidfd_send_signal(e->pidfd, SIGKILL, NULL, 0);
                siginfo_t si = {0};
                if (waitid(P_PIDFD, (id_t)e->pidfd, &si, WEXITED) == 0)
                        status = si.si_code == CLD_EXITED ? si.si_status << 8 : si.si_status;
                close(e->pidfd);
                e->pidfd = -1;
        }
        return status;
}

static void fixture_done(struct enclave_fixture *e)
{
        fixture_reap(e, true);
        if (e->listen_fd >= 0)
                close(e->listen_fd);
        if (e->log_fd >= 0)
                close(e->log_fd);
        e->listen_fd = e->log_fd = -1;
        unlink(e->socket_path);
        unlink(e->log_path);
}

static bool ns_differs(pid_t pid, const char *ns)
{
        char a[PATH_MAX], b[PATH_MAX], la[128] = "", lb[128] = "";
        snprintf(a, sizeof(a), "/proc/%d/ns/%s", (int)pid, ns);
        snprintf(b, sizeof(b), "/proc/self/ns/%s", ns);
        if (readlink(a, la, sizeof(la) - 1) < 0 || readlink(b, lb, sizeof(lb) - 1) < 0)
                return false;
        return !STREQ(la, lb);
}

/* The parent pid of `pid` from /proc/PID/stat (after the last ')'), or -1. */
static pid_t parent_of(pid_t pid, char *state)
{
        char path[64], buf[1024];
        snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
        if (read_file_at(AT_FDCWD, path, buf, sizeof(buf), NULL) < 0)
                return -1;
        char *p = strrchr(buf, ')');
        int ppid;
        char st;
        if (!p || sscanf(p + 1, " %c %d", &st, &ppid) != 2)
                return -1;
        if (state)
                *state = st;
        return ppid;
}

/* How many processes have `parent` as their parent (zombies too). */
static int count_children_of(pid_t parent)
{
        DIR *d = opendir("/proc");
        if (!d)
                return -1;
        int n = 0;
        struct dirent *de;
        while ((de = readdir(d))) {
                char *end;
                long pid = strtol(de->d_name, &end, 10);
                if (*end || pid <= 0)
                        continue;
                if (parent_of((pid_t)pid, NULL) == parent)
                        n++;
        }
        closedir(d);
        return n;
}

static int count_lines(const char *path)
{
        FILE *f = fopen(path, "re");
        if (!f)
                return -1;
        int n = 0, c;
        while ((c = fgetc(f)) != EOF)
                n += c == '\n';
        fclose(f);
        return n;
}

static bool file_contains(const char *path, const char *needle)
{
        char buf[8192];
        return read_file_at(AT_FDCWD, path, buf, sizeof(buf), NULL) >= 0 && strstr(buf, needle);
}

static int open_ns(pid_t pid, const char *ns)
{
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/ns/%s", (int)pid, ns);
        return open(path, O_RDONLY | O_CLOEXEC);
}

/*
 * Runs fn in a grandchild inside the supervisor's pid namespace (setns only
 * affects children, hence the extra fork).  Returns the grandchild's exit
 * code, or -1.
 */
static int run_in_pidns(pid_t sup, int (*fn)(void *), void *arg)
{
        pid_t child = fork();
        if (child < 0)
                return -1;
        if (child == 0) {
                int fd = open_ns(sup, "pid");
                if (fd < 0 || setns(fd, CLONE_NEWPID) < 0)
                        _exit(120);
                pid_t g = fork();
                if (g < 0)
                        _exit(121);
                if (g == 0)
                        _exit(fn(arg));
                int st;
                if (waitpid(g, &st, 0) < 0)
                        _exit(122);
                _exit(WIFEXITED(st) ? WEXITSTATUS(st) : 123);
        }
        int st;
        if (waitpid(child, &st, 0) < 0 || !WIFEXITED(st))
                return -1;
        return WEXITSTATUS(st);
}

/* A connection that gets no reply: 0 when the supervisor closed it without answering. */
static int expect_refused(const char *socket_path)
{
        int fd = connect_to(socket_path);
        if (fd < 0)
                return 10;
        json_t *req = proto_request("ping");
        (void)proto_send(fd, req, NULL, 0, NULL);
        json_decref(req);
        json_t *reply = NULL;
        int r = proto_recv(fd, &reply, NULL, NULL, NULL);
        json_decref(reply);
        close(fd);
        return r == -ECONNRESET ? 0 : 11;
}

static int refused_inside(void *arg)
{
        return expect_refused(arg);
}

static int signal_pid1(void *arg)
{
        (void)arg;
        return kill(1, SIGTERM) == 0 ? 0 : 1;
}

static int uname_in_uts(pid_t sup, char *ret, size_t n)
{
        int p[2];
        if (pipe2(p, O_CLOEXEC) < 0)
                return -errno;
        pid_t child = fork();
        if (child == 0) {
                int fd = open_ns(sup, "uts");
                struct utsname u;
                if (fd < 0 || setns(fd, CLONE_NEWUTS) < 0 || uname(&u) < 0)
                        _exit(1);
                (void)!write(p[1], u.nodename, strlen(u.nodename));
                _exit(0);
        }
        close(p[1]);
        ssize_t got = child > 0 ? read(p[0], ret, n - 1) : -1;
        close(p[0]);
        if (child > 0)
                waitpid(child, NULL, 0);
        if (got < 0)
                return -EIO;
        ret[got] = '\0';
        return 0;
}

/* ---- tests ---- */

static void test_start_time(void)
{
        uint64_t self = 0, child_t = 0;
        struct tessera_error err = {0};
        int r = process_start_time(getpid(), &self, &err);
        ok(r == 0 && self > 0, "start time of this process (%llu)", (unsigned long long)self);

        /* a child whose comm contains spaces and ')' */
        int p[2];
        if (pipe2(p, O_CLOEXEC) < 0)
                return;
        pid_t child = fork();
        if (child == 0) {
                close(p[1]);
                prctl(PR_SET_NAME, "a) b ) 7 8 (x");
                char c;
                (void)!read(p[0], &c, 1);
                _exit(0);
        }
        close(p[0]);
        usleep(20000); /* let it rename itself; the start time is fixed anyway */
        r = process_start_time(child, &child_t, &err);
        char path[64], buf[1024];
        snprintf(path, sizeof(path), "/proc/%d/stat", (int)child);
        read_file_at(AT_FDCWD, path, buf, sizeof(buf), NULL);
        unsigned long long expect = 0;
        char *q = strstr(buf, "(x) ");
        /* comm known here, so the plain parse of fields 3..22 after it is right */
        if (q)
                sscanf(q + 4, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu",
                       &expect);
        ok(r == 0 && child_t == expect && child_t >= self, "start time parsed after the last ')' (%llu, want %llu)",
           (unsigned long long)child_t, expect);

        int fd = pidfd_open_checked(child, child_t, &err);
        ok(fd >= 0, "pidfd_open_checked with the right start time (%s)", fd < 0 ? err.msg : "");
        if (fd >= 0)
                close(fd);
        fd = pidfd_open_checked(child, child_t + 1, &err);
        ok(fd == -ESRCH && strstr(err.msg, "another process"), "a recycled pid is refused: %s", err.msg);
        if (fd >= 0)
                close(fd);
        close(p[1]);
        waitpid(child, NULL, 0);
        ok(process_start_time(child, &child_t, &err) == -ESRCH, "start time of a reaped pid: %s", err.msg);
        fd = pidfd_open_checked(child, child_t, &err);
        ok(fd == -ESRCH, "pidfd_open_checked of a reaped pid: %s", err.msg);
        if (fd >= 0)
                close(fd);
}

static void test_plain(void)
{
        struct enclave_fixture e;
        struct sandbox_config cfg;
        struct tessera_error err = {0};
        fixture_init(&e);
        fixture_config(&e, &cfg);
        char hostname[64];
        snprintf(hostname, sizeof(hostname), "host-%s", e.name);
        cfg.hostname = hostname;

        /* deliberately inheritable: the supervisor must not get it */
        int leak = open("/dev/null", O_RDONLY);
        int mounts_before = count_lines("/proc/self/mountinfo");
        int r = fixture_spawn(&e, &cfg, &err);
        if (!ok(r == 0 && e.pid > 0 && e.pidfd >= 0, "spawn a supervisor without a root (%s)", err.msg)) {
                close(leak);
                fixture_done(&e);
                return;
        }
        close(leak);
        json_t *reply = call(&e, "ping", &err), *result = NULL;
        ok(reply && proto_reply_result(reply, &result, &err) == 0, "ping answered (%s)", err.msg);
        json_t *pid = json_object_get(result, "pid"), *name = json_object_get(result, "enclave");
        ok(json_integer_value(pid) == 1, "supervisor is PID 1 of its namespace");
        ok(json_is_string(name) && STREQ(json_string_value(name), e.name), "ping names the enclave");
        ok(json_is_integer(json_object_get(result, "uptime_ms")) &&
                   json_integer_value(json_object_get(result, "processes")) == 0,
           "ping has uptime_ms and processes");
        json_decref(reply);

        ok(ns_differs(e.pid, "pid") && ns_differs(e.pid, "mnt") && ns_differs(e.pid, "ipc") &&
                   ns_differs(e.pid, "uts") && ns_differs(e.pid, "cgroup"),
           "new pid, mount, ipc, uts and cgroup namespaces");
        ok(!ns_differs(e.pid, "net") && !ns_differs(e.pid, "user"), "same net and user namespace when not asked");
        char uts[128] = "";
        ok(uname_in_uts(e.pid, uts, sizeof(uts)) == 0 && STREQ(uts, hostname), "hostname in its uts ns: %s", uts);
        ok(getsid(e.pid) == e.pid, "the supervisor leads its own session");
        ok(count_lines("/proc/self/mountinfo") == mounts_before, "no mount appeared on the host");

        char path[PATH_MAX];
        snprintf(path, sizeof(path), "/proc/%d/fd", (int)e.pid);
        int n_fds = 0;
        DIR *d = opendir(path);
        bool has_leak = false;
        for (struct dirent *de; d && (de = readdir(d));) {
                if (de->d_name[0] == '.')
                        continue;
                n_fds++;
                if (atoi(de->d_name) == leak)
                        has_leak = leak > 4;
        }
        if (d)
                closedir(d);
        /* 0-3 from the spawn, 4 its own signalfd */
        ok(n_fds == 5 && !has_leak, "supervisor holds only fds 0-4 (%d fds)", n_fds);
        snprintf(path, sizeof(path), "/proc/%d/fd/3", (int)e.pid);
        struct stat st_sup, st_ours;
        ok(stat(path, &st_sup) == 0 && fstat(e.listen_fd, &st_ours) == 0 && st_sup.st_ino == st_ours.st_ino,
           "fd 3 is the control socket");
        snprintf(path, sizeof(path), "/proc/%d/environ", (int)e.pid);
        char env[512] = "";
        int env_len = read_file_at(AT_FDCWD, path, env, sizeof(env), NULL);
        bool env_ok = env_len > 0 && STREQ(env, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        if (env_ok) {
                char want[128];
                snprintf(want, sizeof(want), "TESSERA_ENCLAVE=%s", e.name);
                env_ok = STREQ(env + strlen(env) + 1, want);
        }
        ok(env_ok, "minimal environment");
        ok(file_contains(e.log_path, "tessera-supervisor[") && file_contains(e.log_path, "]: started"),
           "log line in the log fd");

        /* bad input: unknown op, then garbage, then an absurd length; it must survive all */
        reply = call(&e, "frobnicate", &err);
        r = reply ? proto_reply_result(reply, NULL, &err) : -EIO;
        ok(r == -EOPNOTSUPP && strstr(err.msg, "frobnicate"), "unknown op refused: %s", err.msg);
        json_decref(reply);
        int fd = connect_to(e.socket_path);
        const char garbage[] = "\x05\x00\x00\x00{{{{{";
        (void)!write(fd, garbage, sizeof(garbage) - 1);
        reply = NULL;
        r = proto_recv(fd, &reply, NULL, NULL, &err);
        ok(r == 0 && proto_reply_result(reply, NULL, &err) == -EPROTO, "malformed JSON gets an error reply: %s",
           err.msg);
        json_decref(reply);
        close(fd);
        fd = connect_to(e.socket_path);
        (void)!write(fd, "\xff\xff\xff\xff", 4);
        reply = NULL;
        r = proto_recv(fd, &reply, NULL, NULL, &err);
        ok(r == 0 && proto_reply_result(reply, NULL, &err) == -EPROTO, "oversized frame refused: %s", err.msg);
        json_decref(reply);
        close(fd);
        fd = connect_to(e.socket_path);
        (void)!write(fd, "\x10\x00\x00\x00{\"op\"", 9); /* then silence: the receive timeout must end it */
        usleep(200000);                                 /* the supervisor now waits for the rest of that frame */
        uint64_t t0 = now_ns();
        reply = call(&e, "ping", &err);
        double waited = (now_ns() - t0) / 1e9;
        ok(reply != NULL && waited < 4, "a stalled request holds others up only until its timeout (%.1f s)", waited);
        json_decref(reply);
        reply = NULL;
        r = proto_recv(fd, &reply, NULL, NULL, &err);
        ok(r == -ECONNRESET || (r == 0 && proto_reply_result(reply, NULL, &err) < 0),
           "the stalled connection got an error and was closed (%s)", err.msg);
        json_decref(reply);
        close(fd);

        /* an orphan inside is re-parented to the supervisor and reaped by it */
        ok(count_children_of(e.pid) == 0, "no children yet");
        int orphan_pipe[2];
        if (pipe2(orphan_pipe, 0) == 0) {
                pid_t helper = fork();
                if (helper == 0) {
                        int nsfd = open_ns(e.pid, "pid");
                        if (nsfd < 0 || setns(nsfd, CLONE_NEWPID) < 0)
                                _exit(1);
                        close(orphan_pipe[1]);
                        if (fork() == 0) { /* g: exits at once, leaving h to the enclave's init */
                                if (fork() == 0) {
                                        char c;
                                        (void)!read(orphan_pipe[0], &c, 1);
                                        _exit(0);
                                }
                                _exit(0);
                        }
                        wait(NULL);
                        _exit(0);
                }
                close(orphan_pipe[0]);
                waitpid(helper, NULL, 0);
                int adopted = 0;
                for (int i = 0; i < 100 && (adopted = count_children_of(e.pid)) == 0; i++)
                        usleep(10000);
                ok(adopted == 1, "an orphan inside is adopted by the supervisor");
                close(orphan_pipe[1]); /* the orphan exits now */
                int left = 1;
                for (int i = 0; i < 200 && (left = count_children_of(e.pid)) != 0; i++)
                        usleep(10000);
                ok(left == 0, "the supervisor reaped it (no zombie left)");
        }

        /* refused peers: a process inside the enclave, and a non-root one outside */
        ok(run_in_pidns(e.pid, refused_inside, e.socket_path) == 0, "a connection from inside the enclave is refused");
        pid_t child = fork();
        if (child == 0) {
                if (setgid(65534) < 0 || setuid(65534) < 0)
                        _exit(20);
                _exit(expect_refused(e.socket_path));
        }
        int st = 0;
        waitpid(child, &st, 0);
        ok(WIFEXITED(st) && WEXITSTATUS(st) == 0, "a connection from uid 65534 is refused (exit %d)", WEXITSTATUS(st));
        ok(file_contains(e.log_path, "refused a connection from pid") &&
                   file_contains(e.log_path, "refused a connection from uid 65534"),
           "refusals are logged");

        /* SIGTERM from inside is ignored; the supervisor keeps answering */
        ok(run_in_pidns(e.pid, signal_pid1, NULL) == 0, "a process inside sent SIGTERM to PID 1");
        usleep(50000);
        reply = call(&e, "ping", &err);
        ok(reply && proto_reply_result(reply, NULL, &err) == 0, "still alive after SIGTERM from inside");
        json_decref(reply);

        /* shutdown: reply first, then exit 0 */
        t0 = now_ns();
        reply = call(&e, "shutdown", &err);
        result = NULL;
        ok(reply && proto_reply_result(reply, &result, &err) == 0 && json_is_object(result) &&
                   json_object_size(result) == 0,
           "shutdown replies {}");
        json_decref(reply);
        int status = fixture_reap(&e, false);
        ok(status == 0, "supervisor exited 0 after shutdown (status %#x, %.0f ms)", status, (now_ns() - t0) / 1e6);
        fixture_done(&e);
}

static int ignore_term_and_wait(void *arg)
{
        int fd = *(int *)arg;
        signal(SIGTERM, SIG_IGN);
        char c;
        (void)!read(fd, &c, 1); /* until SIGKILL */
        return 0;
}

/* A process inside that ignores SIGTERM: shutdown waits the grace period, then SIGKILLs it. */
static void test_shutdown_grace(void)
{
        struct enclave_fixture e;
        struct sandbox_config cfg;
        struct tessera_error err = {0};
        fixture_init(&e);
        fixture_config(&e, &cfg);
        if (!ok(fixture_spawn(&e, &cfg, &err) == 0, "spawn for the shutdown test (%s)", err.msg)) {
                fixture_done(&e);
                return;
        }
        int p[2];
        if (pipe2(p, 0) < 0) {
                fixture_done(&e);
                return;
        }
        pid_t child = fork();
        if (child == 0) {
                close(p[1]);
                pid_t c = run_in_pidns(e.pid, ignore_term_and_wait, &p[0]);
                _exit(c == 123 ? 0 : 1); /* 123: killed by a signal */
        }
        close(p[0]);
        usleep(100000); /* let it get inside and ignore SIGTERM */
        uint64_t t0 = now_ns();
        json_t *reply = call(&e, "shutdown", &err);
        ok(reply != NULL, "shutdown answered");
        json_decref(reply);
        int status = fixture_reap(&e, false);
        double ms = (now_ns() - t0) / 1e6;
        int st = 0;
        waitpid(child, &st, 0);
        close(p[1]);
        ok(status == 0 && ms >= 1900 && ms < 4000, "exit 0 after the 2 s grace (%.0f ms)", ms);
        ok(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the process that ignored SIGTERM was killed");
        ok(file_contains(e.log_path, "SIGKILL"), "the SIGKILL is logged");
        fixture_done(&e);
}

static int make_tiny_root(char *root, size_t n)
{
        snprintf(root, n, "%s/root-XXXXXX", tmpdir);
        if (!mkdtemp(root) || chmod(root, 0755) < 0)
                return -errno;
        static const char *const dirs[] = {"bin", "proc", "sys", "dev", "tmp", "etc"};
        char path[PATH_MAX];
        for (size_t i = 0; i < ELEMENTSOF(dirs); i++) {
                snprintf(path, sizeof(path), "%s/%s", root, dirs[i]);
                if (mkdir(path, 0755) < 0)
                        return -errno;
        }
        snprintf(path, sizeof(path), "%s/bin/busybox", root);
        int in = open(BUSYBOX, O_RDONLY | O_CLOEXEC);
        int out = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0755);
        int r = 0;
        char buf[65536];
        ssize_t got;
        while (in >= 0 && out >= 0 && (got = read(in, buf, sizeof(buf))) > 0)
                if (write(out, buf, (size_t)got) != got)
                        r = -EIO;
        if (in < 0 || out < 0)
                r = -errno;
        if (in >= 0)
                close(in);
        if (out >= 0)
                close(out);
        return r;
}

static bool is_char_dev(const char *path, unsigned major, unsigned minor)
{
        struct stat st;
        return stat(path, &st) == 0 && S_ISCHR(st.st_mode) && major(st.st_rdev) == major && minor(st.st_rdev) == minor;
}

static void check_root_contents(const struct enclave_fixture *e, const char *what)
{
        char path[PATH_MAX], comm[64] = "";
        snprintf(path, sizeof(path), "/proc/%d/root/proc/1/comm", (int)e->pid);
        read_file_at(AT_FDCWD, path, comm, sizeof(comm), NULL);
        ok(strncmp(comm, "tessera-superv", 14) == 0, "%s: the enclave's own /proc shows PID 1 as `%s`", what, comm);
        snprintf(path, sizeof(path), "/proc/%d/root/bin/busybox", (int)e->pid);
        ok(access(path, X_OK) == 0, "%s: its / is the given root", what);
        bool devs = true;
        static const struct {
                const char *name;
                unsigned major, minor;
        } nodes[] = {
                {"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0},
        };
        for (size_t i = 0; i < ELEMENTSOF(nodes); i++) {
                snprintf(path, sizeof(path), "/proc/%d/root/dev/%s", (int)e->pid, nodes[i].name);
                if (!is_char_dev(path, nodes[i].major, nodes[i].minor)) {
                        diag("%s is not char %u:%u", path, nodes[i].major, nodes[i].minor);
                        devs = false;
                }
        }
        ok(devs, "%s: /dev has null zero full random urandom tty", what);
        snprintf(path, sizeof(path), "/proc/%d/root/dev/pts/ptmx", (int)e->pid);
        bool pts = access(path, F_OK) == 0;
        snprintf(path, sizeof(path), "/proc/%d/root/dev/ptmx", (int)e->pid);
        char link[64] = "";
        pts = pts && readlink(path, link, sizeof(link) - 1) > 0 && STREQ(link, "pts/ptmx");
        ok(pts, "%s: /dev/pts is a devpts with /dev/ptmx -> pts/ptmx", what);
        struct statfs sfs;
        snprintf(path, sizeof(path), "/proc/%d/root/tmp", (int)e->pid);
        bool tmp = statfs(path, &sfs) == 0 && sfs.f_type == TMPFS_MAGIC;
        snprintf(path, sizeof(path), "/proc/%d/root/dev/shm", (int)e->pid);
        ok(tmp && statfs(path, &sfs) == 0 && sfs.f_type == TMPFS_MAGIC, "%s: /tmp and /dev/shm are tmpfs", what);
        struct statvfs svfs;
        snprintf(path, sizeof(path), "/proc/%d/root/sys", (int)e->pid);
        ok(statvfs(path, &svfs) == 0 && (svfs.f_flag & ST_RDONLY), "%s: /sys is read-only", what);
        snprintf(path, sizeof(path), "/proc/%d/root/dev/fd", (int)e->pid);
        memset(link, 0, sizeof(link));
        ok(readlink(path, link, sizeof(link) - 1) > 0 && STREQ(link, "/proc/self/fd"), "%s: /dev/fd link", what);
}

static void test_root(bool new_net)
{
        const char *what = new_net ? "root+net" : "root";
        char root[PATH_MAX];
        if (access(BUSYBOX, X_OK) < 0) {
                skip("%s: %s is missing (install busybox-static)", what, BUSYBOX);
                return;
        }
        if (!ok(make_tiny_root(root, sizeof(root)) == 0, "%s: a busybox root in %s", what, root))
                return;
        struct enclave_fixture e;
        struct sandbox_config cfg;
        struct tessera_error err = {0};
        fixture_init(&e);
        fixture_config(&e, &cfg);
        cfg.root = root;
        cfg.new_net = new_net;
        int mounts_before = count_lines("/proc/self/mountinfo");
        int r = fixture_spawn(&e, &cfg, &err);
        if (ok(r == 0, "%s: spawn with a root (%s)", what, err.msg)) {
                json_t *reply = call(&e, "ping", &err);
                ok(reply && proto_reply_result(reply, NULL, &err) == 0, "%s: ping (%s)", what, err.msg);
                json_decref(reply);
                check_root_contents(&e, what);
                ok(ns_differs(e.pid, "net") == new_net, "%s: net namespace %s", what, new_net ? "new" : "shared");
                if (new_net) {
                        char path[PATH_MAX];
                        snprintf(path, sizeof(path), "/proc/%d/root/sys/class/net/lo", (int)e.pid);
                        bool lo = access(path, F_OK) == 0;
                        snprintf(path, sizeof(path), "/proc/%d/root/sys/class/net/eth0", (int)e.pid);
                        ok(lo && access(path, F_OK) < 0, "%s: its sysfs shows its own net namespace (lo only)", what);
                }
                ok(count_lines("/proc/self/mountinfo") == mounts_before, "%s: no mount appeared on the host", what);
                char path[PATH_MAX];
                snprintf(path, sizeof(path), "%s/dev/null", root);
                ok(access(path, F_OK) < 0, "%s: the host's view of root/dev is untouched", what);
        }
        fixture_done(&e);
        remove_tree(root);
}

static void test_user_ns(void)
{
        char root[PATH_MAX];
        bool have_root = access(BUSYBOX, X_OK) == 0 && make_tiny_root(root, sizeof(root)) == 0;
        struct enclave_fixture e;
        struct sandbox_config cfg;
        struct tessera_error err = {0};
        fixture_init(&e);
        fixture_config(&e, &cfg);
        cfg.new_user = true;
        cfg.map_uid = 1000000;
        cfg.map_gid = 1000000;
        cfg.map_count = 65536;
        cfg.root = have_root ? root : NULL;
        int r = fixture_spawn(&e, &cfg, &err);
        if (ok(r == 0, "userns: spawn in a user namespace (%s)", err.msg)) {
                char path[PATH_MAX], buf[256];
                snprintf(path, sizeof(path), "/proc/%d/uid_map", (int)e.pid);
                unsigned a = 1, b = 0, c = 0;
                ok(read_file_at(AT_FDCWD, path, buf, sizeof(buf), NULL) > 0 &&
                           sscanf(buf, "%u %u %u", &a, &b, &c) == 3 && a == 0 && b == 1000000 && c == 65536,
                   "userns: uid_map maps 0 to 1000000 (%s)", buf);
                snprintf(path, sizeof(path), "/proc/%d/gid_map", (int)e.pid);
                ok(read_file_at(AT_FDCWD, path, buf, sizeof(buf), NULL) > 0 &&
                           sscanf(buf, "%u %u %u", &a, &b, &c) == 3 && a == 0 && b == 1000000 && c == 65536,
                   "userns: gid_map maps 0 to 1000000");
                snprintf(path, sizeof(path), "/proc/%d/setgroups", (int)e.pid);
                ok(read_file_at(AT_FDCWD, path, buf, sizeof(buf), NULL) > 0 && STREQ(buf, "deny"),
                   "userns: setgroups is deny");
                snprintf(path, sizeof(path), "/proc/%d/status", (int)e.pid);
                ok(file_contains(path, "\nUid:\t1000000\t1000000\t1000000"), "userns: runs as host uid 1000000");
                ok(ns_differs(e.pid, "user"), "userns: new user namespace");
                json_t *reply = call(&e, "ping", &err);
                ok(reply && proto_reply_result(reply, NULL, &err) == 0, "userns: tesserad's root may still connect");
                json_decref(reply);
                if (have_root)
                        check_root_contents(&e, "userns");
                else
                        skip("userns: no busybox root");
        }
        fixture_done(&e);
        if (have_root)
                remove_tree(root);
}

static void test_failures(void)
{
        struct enclave_fixture e;
        struct sandbox_config cfg;
        struct tessera_error err = {0};
        fixture_init(&e);
        fixture_config(&e, &cfg);
        int children_before = count_children_of(getpid());

        cfg.root = "/nonexistent";
        int r = fixture_spawn(&e, &cfg, &err);
        ok(r == -ENOENT && strstr(err.msg, "/nonexistent") && e.pidfd < 0, "bad root: %s", err.msg);
        ok(count_children_of(getpid()) == children_before, "bad root: no process left");

        cfg.root = NULL;
        char bad[PATH_MAX];
        snprintf(bad, sizeof(bad), "%s/no-such-supervisor", tmpdir);
        cfg.supervisor_path = bad;
        r = fixture_spawn(&e, &cfg, &err);
        ok(r == -ENOENT && strstr(err.msg, bad), "missing supervisor: %s", err.msg);

        /* an executable that is no program: the exec itself fails in the child */
        snprintf(bad, sizeof(bad), "%s/not-a-program", tmpdir);
        int fd = open(bad, O_WRONLY | O_CREAT | O_CLOEXEC, 0755);
        (void)!write(fd, "garbage\n", 8);
        close(fd);
        r = fixture_spawn(&e, &cfg, &err);
        ok(r == -ENOEXEC && strstr(err.msg, "cannot execute the supervisor"), "exec failure reported: %s", err.msg);
        ok(count_children_of(getpid()) == children_before, "exec failure: no process left");
        chmod(bad, 0644);
        r = fixture_spawn(&e, &cfg, &err);
        ok(r == -EACCES, "non-executable supervisor: %s", err.msg);
        unlink(bad);
        cfg.supervisor_path = supervisor_bin;

        /* a root whose mount point is a symlink pointing outside must not be followed */
        char root[PATH_MAX], outside[PATH_MAX], link[PATH_MAX];
        if (access(BUSYBOX, X_OK) == 0 && make_tiny_root(root, sizeof(root)) == 0) {
                snprintf(outside, sizeof(outside), "%s/outside-XXXXXX", tmpdir);
                snprintf(link, sizeof(link), "%s/tmp", root);
                if (mkdtemp(outside) && rmdir(link) == 0 && symlink(outside, link) == 0) {
                        cfg.root = root;
                        r = fixture_spawn(&e, &cfg, &err);
                        ok(r < 0 && strstr(err.msg, "symlink"), "symlinked mount point refused: %s", err.msg);
                        ok(count_children_of(getpid()) == children_before, "symlink: no process left");
                        cfg.root = NULL;
                        rmdir(outside);
                }
                remove_tree(root);
        }

        cfg.enclave = "../etc";
        r = fixture_spawn(&e, &cfg, &err);
        ok(r == -EINVAL, "bad enclave name: %s", err.msg);
        fixture_done(&e);
}

/* Reads /proc/PID/cgroup as a process inside the supervisor's cgroup namespace sees it. */
static int cgroup_file_in_cgroupns(pid_t sup, char *ret, size_t n)
{
        int p[2];
        if (pipe2(p, O_CLOEXEC) < 0)
                return -errno;
        pid_t child = fork();
        if (child == 0) {
                char path[64], buf[4096];
                int fd = open_ns(sup, "cgroup");
                snprintf(path, sizeof(path), "/proc/%d/cgroup", (int)sup);
                if (fd < 0 || setns(fd, CLONE_NEWCGROUP) < 0)
                        _exit(1);
                int len = read_file_at(AT_FDCWD, path, buf, sizeof(buf), NULL);
                if (len > 0)
                        (void)!write(p[1], buf, (size_t)len);
                _exit(0);
        }
        close(p[1]);
        size_t got = 0;
        ssize_t r;
        while (child > 0 && got + 1 < n && (r = read(p[0], ret + got, n - 1 - got)) > 0)
                got += (size_t)r;
        ret[got] = '\0';
        close(p[0]);
        if (child > 0)
                waitpid(child, NULL, 0);
        return got > 0 ? 0 : -EIO;
}

/* With a real cgroup: placed in <root>/<enclave>/supervisor before it runs, its cgroup namespace rooted there. */
static void test_cgroup(const char *mount)
{
        char root_name[64];
        snprintf(root_name, sizeof(root_name), "tsb-cg-%d", (int)getpid());
        struct tessera_cgroup *cg = NULL;
        struct tessera_error err = {0};
        if (tessera_cgroup_open(root_name, mount, &cg, &err) < 0) {
                skip("cgroup: no usable cgroup hierarchy at %s: %s", mount ? mount : "the default mount", err.msg);
                return;
        }
        diag("cgroup %s at %s", cgroup_mode_name(cg->mode), cg->mount);
        struct enclave_fixture e;
        struct sandbox_config cfg;
        fixture_init(&e);
        fixture_config(&e, &cfg);
        cfg.cgroup = cg;
        struct cgroup_limits lim = {.cpus = "", .mems = "", .memory_bytes = 64ULL << 20, .pids_max = 64};
        int r = cgroup_enclave_create(cg, e.name, &err);
        /* v1 cpusets start empty and take no task; v2 (CLONE_INTO_CGROUP) needs no limits */
        if (r >= 0 && cg->mode == CGROUP_V1)
                r = cgroup_enclave_apply(cg, e.name, &lim, &err);
        if (ok(r == 0, "cgroup: enclave group %s/%s (%s)", root_name, e.name, err.msg) &&
            ok(fixture_spawn(&e, &cfg, &err) == 0, "cgroup: spawn into it (%s)", err.msg)) {
                char path[64], buf[4096], want[256];
                snprintf(path, sizeof(path), "/proc/%d/cgroup", (int)e.pid);
                snprintf(want, sizeof(want), "/%s/%s/supervisor\n", root_name, e.name);
                read_file_at(AT_FDCWD, path, buf, sizeof(buf) - 1, NULL);
                strcat(buf, "\n");
                ok(strstr(buf, want) != NULL, "cgroup: the host sees it in %.*s", (int)strlen(want) - 1, want);
                ok(cgroup_enclave_count_tasks(cg, e.name, &err) == 1, "cgroup: the enclave's group counts 1 task");
                bool rooted = cgroup_file_in_cgroupns(e.pid, buf, sizeof(buf)) == 0;
                int lines = 0;
                for (char *line = strtok(buf, "\n"); rooted && line; line = strtok(NULL, "\n")) {
                        lines++;
                        size_t len = strlen(line);
                        rooted = len >= 2 && STREQ(line + len - 2, ":/");
                        if (!rooted)
                                diag("inside its cgroup namespace: %s", line);
                }
                ok(rooted && lines > 0, "cgroup: its cgroup namespace is rooted at its own group (%d hierarchies)",
                   lines);
                json_t *reply = call(&e, "ping", &err);
                ok(reply && proto_reply_result(reply, NULL, &err) == 0, "cgroup: ping (%s)", err.msg);
                json_decref(reply);
        }
        fixture_done(&e);
        ok(cgroup_root_remove(cg, &err) == 0, "cgroup: root group %s removed (%s)", root_name, err.msg);
        tessera_cgroup_free(cg);
}

/* Hybrid host (v1 + a unified mount): drive the v2 path (CLONE_INTO_CGROUP) in a group of our own there. */
static void test_cgroup_v2_hybrid(void)
{
        struct statfs fs;
        if (statfs("/sys/fs/cgroup", &fs) < 0 || fs.f_type != TMPFS_MAGIC ||
            statfs("/sys/fs/cgroup/unified", &fs) < 0 || fs.f_type != CGROUP2_SUPER_MAGIC)
                return; /* pure v2 ran above as the default mount; pure v1 has no v2 */
        char base[PATH_MAX];
        snprintf(base, sizeof(base), "/sys/fs/cgroup/unified/tsb-v2-%d", (int)getpid());
        if (mkdir(base, 0755) < 0) {
                skip("cgroup v2: cannot create %s: %s", base, strerror(errno));
                return;
        }
        test_cgroup(base);
        ok(rmdir(base) == 0, "cgroup v2: removed %s", base);
}

static int hold_until_killed(void *arg)
{
        (void)arg;
        pause();
        return 0;
}

static void test_sigkill(void)
{
        struct enclave_fixture e;
        struct sandbox_config cfg;
        struct tessera_error err = {0};
        fixture_init(&e);
        fixture_config(&e, &cfg);
        if (!ok(fixture_spawn(&e, &cfg, &err) == 0, "spawn for SIGKILL (%s)", err.msg)) {
                fixture_done(&e);
                return;
        }
        /* a process inside, so we see the namespace die with its init */
        pid_t child = fork();
        if (child == 0)
                _exit(run_in_pidns(e.pid, hold_until_killed, NULL) == 123 ? 0 : 1);
        usleep(100000);
        struct pollfd pfd = {.fd = e.pidfd, .events = POLLIN};
        ok(poll(&pfd, 1, 0) == 0, "pidfd not readable while it runs");
        ok(pidfd_send_signal(e.pidfd, SIGKILL, NULL, 0) == 0, "SIGKILL through the pidfd");
        ok(poll(&pfd, 1, 2000) == 1 && (pfd.revents & POLLIN), "pidfd becomes readable when it dies");
        siginfo_t si = {0};
        ok(waitid(P_PIDFD, (id_t)e.pidfd, &si, WEXITED) == 0 && si.si_code == CLD_KILLED && si.si_status == SIGKILL,
           "reaped, killed by SIGKILL");
        close(e.pidfd);
        e.pidfd = -1;
        int st = 0;
        waitpid(child, &st, 0);
        ok(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the process inside died with its init");
        fixture_done(&e);
}

/* In a child with seccomp making clone3 fail with ENOSYS: spawn through the clone() fallback and ping. */
static int spawn_without_clone3(void)
{
        scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
        if (!ctx || seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0) < 0 || seccomp_load(ctx) < 0)
                return 30;
        seccomp_release(ctx);
        struct clone_args_probe {
                uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls;
        } probe = {.exit_signal = SIGCHLD};
        if (syscall(SYS_clone3, &probe, sizeof(probe)) >= 0 || errno != ENOSYS)
                return 31; /* the filter did not take: this would not test the fallback */
        struct enclave_fixture e;
        struct sandbox_config cfg;
        struct tessera_error err = {0};
        fixture_init(&e);
        fixture_config(&e, &cfg);
        int code = 0;
        if (fixture_spawn(&e, &cfg, &err) < 0) {
                printf("# fallback spawn: %s\n", err.msg);
                code = 32;
        } else {
                json_t *reply = call(&e, "ping", &err), *result = NULL;
                if (!reply || proto_reply_result(reply, &result, &err) < 0 ||
                    json_integer_value(json_object_get(result, "pid")) != 1)
                        code = 33;
                json_decref(reply);
                if (!ns_differs(e.pid, "pid"))
                        code = 34;
        }
        fixture_done(&e);
        fflush(stdout); /* the caller leaves through _exit */
        return code;
}

static void test_clone_fallback(void)
{
        fflush(stdout);
        pid_t child = fork();
        if (child == 0)
                _exit(spawn_without_clone3());
        int st = 0;
        waitpid(child, &st, 0);
        ok(WIFEXITED(st) && WEXITSTATUS(st) == 0,
           "clone() fallback when clone3 is ENOSYS (seccomp): spawn and ping "
           "(exit %d)",
           WIFEXITED(st) ? WEXITSTATUS(st) : -1);
}

static int cmp_u64(const void *a, const void *b)
{
        uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
        return x < y ? -1 : x > y;
}

static void bench_spawn(void)
{
        enum { RUNS = 50 };
        uint64_t times[RUNS];
        int done = 0;
        for (int i = 0; i < RUNS; i++) {
                struct enclave_fixture e;
                struct sandbox_config cfg;
                struct tessera_error err = {0};
                fixture_init(&e);
                fixture_config(&e, &cfg);
                uint64_t t0 = now_ns();
                json_t *reply = NULL;
                if (fixture_spawn(&e, &cfg, &err) == 0)
                        reply = call(&e, "ping", &err);
                uint64_t t1 = now_ns();
                if (reply && proto_reply_result(reply, NULL, &err) == 0)
                        times[done++] = t1 - t0;
                json_decref(reply);
                fixture_done(&e);
        }
        if (!ok(done == RUNS, "%d of %d spawn+ping runs succeeded", done, RUNS))
                return;
        qsort(times, RUNS, sizeof(times[0]), cmp_u64);
        diag("spawn (clone3 to ping answered) over %d runs: median %.2f ms, min %.2f ms, max %.2f ms", RUNS,
             times[RUNS / 2] / 1e6, times[0] / 1e6, times[RUNS - 1] / 1e6);
}

int main(void)
{
        if (geteuid() != 0) {
                skip("sandbox tests need root (namespaces, mounts, setns)");
                return done_testing();
        }
        find_supervisor();
        if (access(supervisor_bin, X_OK) < 0) {
                ok(0, "supervisor binary at %s (set TESSERA_BUILD to the build dir)", supervisor_bin);
                return done_testing();
        }
        snprintf(tmpdir, sizeof(tmpdir), "/tmp/tessera-sandbox-%d-XXXXXX", (int)getpid());
        if (!mkdtemp(tmpdir)) {
                ok(0, "mkdtemp: %s", strerror(errno));
                return done_testing();
        }
        chmod(tmpdir, 0755); /* the uid-65534 and user-namespace tests must reach their sockets and roots */
        diag("supervisor: %s, temp dir: %s", supervisor_bin, tmpdir);

        test_start_time();
        test_plain();
        test_shutdown_grace();
        test_root(false);
        test_root(true);
        test_user_ns();
        test_failures();
        test_cgroup(NULL);
        test_cgroup_v2_hybrid();
        test_sigkill();
        test_clone_fallback();
        bench_spawn();

        remove_tree(tmpdir);
        ok(access(tmpdir, F_OK) < 0, "temp dir removed");
        return done_testing();
}
