/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The supervisor's application operations (launch, start, collect, forget,
 * apps, kill, open) against the real kernel, driven over its control socket
 * as tesserad would: supervisors spawned by sandbox_spawn_supervisor()
 * without a cgroup, one on the host's root and one pivoted into a
 * busybox-static root.  Needs root.  Every supervisor is SIGKILLed and
 * reaped at the end (its applications die with its pid namespace), and the
 * temporary directory is removed.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libgen.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/pidfd.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "tessera-build.h"
#include "proto.h"
#include "sandbox.h"
#include "tap.h"
#include "util.h"

#define BUSYBOX     "/bin/busybox"
#define TEST_PATH   "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define LOG_ROTATE  (4LL << 20)
#define NOBODY      65534
#define USERNS_BASE 1000000 /* the user-namespace suite maps enclave ids 0..65535 here */

enum suite { HOST_ROOT, OWN_ROOT, USER_NS };

static char supervisor_bin[PATH_MAX];
static char tmpdir[PATH_MAX];
static int fixture_seq;

struct sup {
        const char *what; /* "host root", "own root" or "user ns", for test names */
        enum suite suite;
        uid_t base; /* host uid (and gid) of the enclave's uid 0 */
        char name[64];
        char socket_path[PATH_MAX];
        char log_path[PATH_MAX];
        char root[PATH_MAX]; /* "" without a root of its own */
        int listen_fd, log_fd, pidfd, conn;
        pid_t pid;
};

/* ---- helpers ---- */

static void find_supervisor(void)
{
        const char *build = getenv("TESSERA_BUILD");
        if (build && *build) {
                snprintf(supervisor_bin, sizeof(supervisor_bin), "%s/src/supervisor/tessera-supervisor", build);
                return;
        }
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
        if (remove(path) < 0)
                diag("cannot remove %s: %s", path, strerror(errno));
        return 0;
}

static void remove_tree(const char *path)
{
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
        return fd;
}

static int connect_to(const char *path)
{
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        struct timeval tv = {.tv_sec = 10};
        (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
                int r = -errno;
                close(fd);
                return r;
        }
        return fd;
}

static bool file_contains(const char *path, const char *needle)
{
        char buf[16384];
        return read_file_at(AT_FDCWD, path, buf, sizeof(buf), NULL) >= 0 && strstr(buf, needle);
}

static int copy_file(const char *from, const char *to, mode_t mode)
{
        int in = open(from, O_RDONLY | O_CLOEXEC);
        int out = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
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

static int write_text(const char *path, const char *text, mode_t mode)
{
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
        if (fd < 0)
                return -errno;
        ssize_t n = write(fd, text, strlen(text));
        close(fd);
        return n == (ssize_t)strlen(text) ? 0 : -EIO;
}

/* A busybox-static root with the applets the tests run, and files for `open`. */
static int make_busybox_root(char *root, size_t n)
{
        snprintf(root, n, "%s/root-XXXXXX", tmpdir);
        if (!mkdtemp(root) || chmod(root, 0755) < 0)
                return -errno;
        static const char *const dirs[] = {"bin", "proc", "sys", "dev", "tmp", "etc"};
        static const char *const applets[] = {"sh", "true", "id", "sleep", "head", "tty", "echo", "cat"};
        char path[PATH_MAX];
        for (size_t i = 0; i < ELEMENTSOF(dirs); i++) {
                snprintf(path, sizeof(path), "%s/%s", root, dirs[i]);
                if (mkdir(path, 0755) < 0)
                        return -errno;
        }
        snprintf(path, sizeof(path), "%s/bin/busybox", root);
        int r = copy_file(BUSYBOX, path, 0755);
        for (size_t i = 0; r >= 0 && i < ELEMENTSOF(applets); i++) {
                snprintf(path, sizeof(path), "%s/bin/%s", root, applets[i]);
                if (symlink("busybox", path) < 0)
                        r = -errno;
        }
        return r;
}

/* ---- the control connection ---- */

/* One request (stolen) with descriptors; the result is a new reference. */
static int rpc(struct sup *s, json_t *req, const int *fds, size_t n_fds, json_t **ret_result, int *fds_out,
               size_t *n_out, struct tessera_error *err)
{
        if (s->conn < 0)
                s->conn = connect_to(s->socket_path);
        if (s->conn < 0) {
                json_decref(req);
                return tessera_error_set(err, -s->conn, "cannot connect to %s", s->socket_path);
        }
        int r = proto_send(s->conn, req, fds, n_fds, err);
        json_decref(req);
        json_t *reply = NULL;
        if (r >= 0)
                r = proto_recv(s->conn, &reply, fds_out, n_out, err);
        if (r < 0) {
                close(s->conn);
                s->conn = -1;
                return r;
        }
        json_t *result = NULL;
        r = proto_reply_result(reply, &result, err);
        if (r >= 0 && ret_result)
                *ret_result = json_incref(result);
        json_decref(reply);
        return r;
}

static json_t *request(const char *op, const char *app)
{
        json_t *req = proto_request(op);
        if (app)
                json_object_set_new(req, "app", json_string(app));
        return req;
}

static int simple_call(struct sup *s, const char *op, const char *app, json_t **ret, struct tessera_error *err)
{
        return rpc(s, request(op, app), NULL, 0, ret, NULL, NULL, err);
}

struct launch_opts {
        const char *stdio; /* NULL: "pass" with /dev/null (or nothing with a tty) */
        int fds[3];
        size_t n_fds;
        bool tty;
        uint32_t uid, gid;
        json_t *cpus;   /* stolen */
        json_t *groups; /* stolen */
        const char *cwd;
        const char *stem; /* launch into this stem rather than a new fork */
};

struct launched {
        int pidfd, master, ns_pid;
};

static json_t *strings(const char *const *list)
{
        json_t *a = json_array();
        for (; *list; list++)
                json_array_append_new(a, json_string(*list));
        return a;
}

static json_t *launch_request(const char *app, const char *const *argv, const struct launch_opts *o)
{
        static const char *const env[] = {TEST_PATH, "HOME=/", "TERM=dumb", NULL};
        json_t *req = request("launch", app);
        json_object_set_new(req, "argv", strings(argv));
        json_object_set_new(req, "env", strings(env));
        json_object_set_new(req, "cwd", json_string(o->cwd ? o->cwd : "/"));
        json_object_set_new(req, "uid", json_integer(o->uid));
        json_object_set_new(req, "gid", json_integer(o->gid));
        json_object_set_new(req, "groups", o->groups ? o->groups : json_array());
        json_object_set_new(req, "cpus", o->cpus ? o->cpus : json_null());
        json_object_set_new(req, "tty", json_boolean(o->tty));
        if (o->stdio || !o->tty)
                json_object_set_new(req, "stdio", json_string(o->stdio ? o->stdio : "pass"));
        if (o->stem)
                json_object_set_new(req, "stem", json_string(o->stem));
        return req;
}

static int launch(struct sup *s, const char *app, const char *const *argv, const struct launch_opts *o,
                  struct launched *ret, struct tessera_error *err)
{
        int null_fd = -1, fds[3];
        size_t n_fds = o->n_fds;
        memcpy(fds, o->fds, sizeof(fds));
        if (!o->stdio && !o->tty) {
                null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
                fds[0] = fds[1] = fds[2] = null_fd;
                n_fds = 3;
        }
        int out[PROTO_MAX_FDS];
        size_t n_out = PROTO_MAX_FDS;
        json_t *result = NULL;
        int r = rpc(s, launch_request(app, argv, o), fds, n_fds, &result, out, &n_out, err);
        if (null_fd >= 0)
                close(null_fd);
        *ret = (struct launched){.pidfd = -1, .master = -1, .ns_pid = -1};
        if (r < 0) {
                for (size_t i = 0; i < n_out; i++)
                        close(out[i]);
                return r;
        }
        ret->ns_pid = (int)json_integer_value(json_object_get(result, "ns_pid"));
        json_decref(result);
        if (n_out >= 1)
                ret->pidfd = out[0];
        if (n_out >= 2)
                ret->master = out[1];
        for (size_t i = 2; i < n_out; i++)
                close(out[i]);
        if (ret->pidfd < 0 || (o->tty && ret->master < 0) || (!o->tty && n_out != 1))
                return tessera_error_set(err, EPROTO, "launch answered with %zu descriptors", n_out);
        return 0;
}

static void launched_close(struct launched *l)
{
        if (l->pidfd >= 0)
                close(l->pidfd);
        if (l->master >= 0)
                close(l->master);
        l->pidfd = l->master = -1;
}

static int start(struct sup *s, const char *app, struct tessera_error *err)
{
        return simple_call(s, "start", app, NULL, err);
}

/* Waits (pidfd) until the process has ended, then for the record to say so; returns the collect result. */
static json_t *wait_exited(struct sup *s, const char *app, int pidfd, struct tessera_error *err)
{
        struct pollfd pfd = {.fd = pidfd, .events = POLLIN};
        if (pidfd >= 0 && poll(&pfd, 1, 20000) != 1) {
                tessera_error_set(err, ETIMEDOUT, "application %s did not end within 20 s", app);
                return NULL;
        }
        for (int i = 0; i < 200; i++) {
                json_t *result = NULL;
                if (simple_call(s, "collect", app, &result, err) < 0)
                        return NULL;
                const char *state = json_string_value(json_object_get(result, "state"));
                if (state && STREQ(state, "exited"))
                        return result;
                json_decref(result);
                usleep(10000);
        }
        tessera_error_set(err, ETIMEDOUT, "the record of %s never said exited", app);
        return NULL;
}

static json_int_t int_field(json_t *o, const char *key)
{
        json_t *v = json_object_get(o, key);
        return json_is_integer(v) ? json_integer_value(v) : -1;
}

static bool null_field(json_t *o, const char *key)
{
        return json_is_null(json_object_get(o, key));
}

/* launch + start + wait; the collect result, or NULL. */
static json_t *run_app(struct sup *s, const char *app, const char *const *argv, const struct launch_opts *o,
                       struct tessera_error *err)
{
        struct launched l;
        if (launch(s, app, argv, o, &l, err) < 0)
                return NULL;
        json_t *result = NULL;
        if (start(s, app, err) >= 0)
                result = wait_exited(s, app, l.pidfd, err);
        launched_close(&l);
        return result;
}

/* The host pid behind a pidfd (its fdinfo). */
static pid_t pidfd_host_pid(int pidfd)
{
        char path[64], buf[4096];
        snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", pidfd);
        if (read_file_at(AT_FDCWD, path, buf, sizeof(buf), NULL) < 0)
                return -1;
        char *p = strstr(buf, "\nPid:");
        return p ? (pid_t)strtol(p + 5, NULL, 10) : -1;
}

/* Reads from fd until `needle` shows up (or timeout); buf gets everything read. */
static bool read_until(int fd, const char *needle, char *buf, size_t size, int timeout_ms)
{
        size_t got = 0;
        buf[0] = '\0';
        uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000ULL;
        while (!strstr(buf, needle) && got + 1 < size) {
                uint64_t now = now_ns();
                if (now >= deadline)
                        return false;
                struct pollfd pfd = {.fd = fd, .events = POLLIN};
                if (poll(&pfd, 1, (int)((deadline - now) / 1000000ULL) + 1) <= 0)
                        return false;
                ssize_t n = read(fd, buf + got, size - 1 - got);
                if (n <= 0)
                        return strstr(buf, needle) != NULL;
                got += (size_t)n;
                buf[got] = '\0';
        }
        return strstr(buf, needle) != NULL;
}

/* Runs argv with stdout and stderr on a pipe; *out gets what it wrote. */
static json_t *run_captured(struct sup *s, const char *app, const char *const *argv, struct launch_opts *o, char *out,
                            size_t size, struct tessera_error *err)
{
        int p[2];
        out[0] = '\0';
        if (pipe2(p, O_CLOEXEC) < 0)
                return NULL;
        int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        o->stdio = "pass";
        o->fds[0] = null_fd;
        o->fds[1] = o->fds[2] = p[1];
        o->n_fds = 3;
        struct launched l;
        int r = launch(s, app, argv, o, &l, err);
        close(p[1]);
        close(null_fd);
        json_t *result = NULL;
        if (r >= 0 && start(s, app, err) >= 0) {
                read_until(p[0], "\x01never", out, size, 10000); /* to EOF */
                result = wait_exited(s, app, l.pidfd, err);
        }
        close(p[0]);
        if (r >= 0)
                launched_close(&l);
        return result;
}

static int forget(struct sup *s, const char *app, struct tessera_error *err)
{
        return simple_call(s, "forget", app, NULL, err);
}

/* ---- fixtures ---- */

static void sup_init(struct sup *s, enum suite suite)
{
        static const char *const names[] = {[HOST_ROOT] = "host root", [OWN_ROOT] = "own root", [USER_NS] = "user ns"};
        memset(s, 0, sizeof(*s));
        s->what = names[suite];
        s->suite = suite;
        s->base = suite == USER_NS ? USERNS_BASE : 0;
        snprintf(s->name, sizeof(s->name), "tsa-%d-%d", (int)getpid(), ++fixture_seq);
        snprintf(s->socket_path, sizeof(s->socket_path), "%s/%s.sock", tmpdir, s->name);
        snprintf(s->log_path, sizeof(s->log_path), "%s/%s.log", tmpdir, s->name);
        s->listen_fd = s->log_fd = s->pidfd = s->conn = -1;
}

static int sup_spawn(struct sup *s, struct tessera_error *err)
{
        bool own_root = s->suite != HOST_ROOT;
        if (own_root) {
                int r = make_busybox_root(s->root, sizeof(s->root));
                if (r < 0)
                        return tessera_error_set(err, -r, "cannot make a busybox root: %s", strerror(-r));
        }
        s->listen_fd = listen_on(s->socket_path);
        s->log_fd = open(s->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (s->listen_fd < 0 || s->log_fd < 0)
                return tessera_error_set(err, EIO, "cannot create the socket or the log of %s", s->name);
        struct sandbox_config cfg = {
                .enclave = s->name,
                .supervisor_path = supervisor_bin,
                .listen_fd = s->listen_fd,
                .log_fd = s->log_fd,
                .root = own_root ? s->root : NULL,
                .new_user = s->suite == USER_NS,
                .map_uid = USERNS_BASE,
                .map_gid = USERNS_BASE,
                .map_count = 65536,
        };
        return sandbox_spawn_supervisor(&cfg, &s->pid, &s->pidfd, err);
}

static void sup_done(struct sup *s)
{
        if (s->conn >= 0)
                close(s->conn);
        if (s->pidfd >= 0) {
                (void)pidfd_send_signal(s->pidfd, SIGKILL, NULL, 0);
                siginfo_t si;
                (void)waitid(P_PIDFD, (id_t)s->pidfd, &si, WEXITED);
                close(s->pidfd);
        }
        if (s->listen_fd >= 0)
                close(s->listen_fd);
        if (s->log_fd >= 0)
                close(s->log_fd);
        unlink(s->socket_path);
        unlink(s->log_path);
        if (s->root[0])
                remove_tree(s->root);
        s->conn = s->pidfd = s->listen_fd = s->log_fd = -1;
}

static bool sup_alive(struct sup *s)
{
        struct tessera_error err = {0};
        json_t *r = NULL;
        bool alive = simple_call(s, "ping", NULL, &r, &err) == 0;
        json_decref(r);
        return alive;
}

/* A path as the supervisor sees it (through its root, from the host). */
static void inside(const struct sup *s, const char *path, char *buf, size_t n)
{
        snprintf(buf, n, "/proc/%d/root%s", (int)s->pid, path);
}

/*
 * Creates a directory (content NULL) or a file at `path` inside the enclave,
 * as the enclave's root: a file system mounted in a user namespace refuses
 * owners it cannot map (EOVERFLOW), so the host's root would not do.
 */
static int make_inside(const struct sup *s, const char *path, const char *content, mode_t mode)
{
        char host[PATH_MAX + 64];
        inside(s, path, host, sizeof(host));
        pid_t child = fork();
        if (child < 0)
                return -errno;
        if (child == 0) {
                (void)setfsgid(s->base);
                (void)setfsuid(s->base);
                int r = content ? write_text(host, content, mode) : mkdir_p(host, mode, NULL);
                _exit(r < 0 ? 1 : 0);
        }
        int st = 0;
        waitpid(child, &st, 0);
        return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -EIO;
}

/* ---- tests ---- */

static void test_exit_status(struct sup *s)
{
        struct tessera_error err = {0};
        struct launch_opts o = {0};
        json_t *r = run_app(s, "true", (const char *const[]){"true", NULL}, &o, &err);
        ok(r && int_field(r, "exit_code") == 0 && null_field(r, "signal") && int_field(r, "peak_memory") > 0 &&
                   int_field(r, "cpu_ns") >= 0,
           "%s: true exits 0 (peak %lld B, cpu %lld ns) %s", s->what, (long long)int_field(r, "peak_memory"),
           (long long)int_field(r, "cpu_ns"), r ? "" : err.msg);
        json_decref(r);

        r = run_app(s, "exit3", (const char *const[]){"sh", "-c", "exit 3", NULL}, &o, &err);
        ok(r && int_field(r, "exit_code") == 3 && null_field(r, "signal"), "%s: sh -c 'exit 3' exits 3 %s", s->what,
           r ? "" : err.msg);
        json_decref(r);

        /* a busy loop, so the rusage shows cpu time */
        r = run_app(s, "busy",
                    (const char *const[]){"sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done", NULL}, &o,
                    &err);
        ok(r && int_field(r, "exit_code") == 0 && int_field(r, "cpu_ns") > 1000000, "%s: cpu_ns counts (%lld ns)",
           s->what, (long long)int_field(r, "cpu_ns"));
        json_decref(r);

        struct launched l;
        if (launch(s, "killed", (const char *const[]){"sleep", "100", NULL}, &o, &l, &err) == 0 &&
            start(s, "killed", &err) == 0) {
                json_t *c = NULL;
                simple_call(s, "collect", "killed", &c, &err);
                const char *state = json_string_value(json_object_get(c, "state"));
                ok(state && STREQ(state, "running"), "%s: a sleeping application collects as running", s->what);
                json_decref(c);
                ok(pidfd_send_signal(l.pidfd, SIGKILL, NULL, 0) == 0, "%s: SIGKILL through the pidfd", s->what);
                r = wait_exited(s, "killed", l.pidfd, &err);
                ok(r && int_field(r, "signal") == 9 && null_field(r, "exit_code"), "%s: recorded as signal 9 %s",
                   s->what, r ? "" : err.msg);
                json_decref(r);
                launched_close(&l);
        } else {
                ok(0, "%s: launch sleep: %s", s->what, err.msg);
        }
        const char *apps[] = {"true", "exit3", "busy", "killed"};
        bool forgotten = true;
        for (size_t i = 0; i < ELEMENTSOF(apps); i++)
                forgotten = forget(s, apps[i], &err) == 0 && forgotten;
        ok(forgotten, "%s: exited records forgotten", s->what);
        ok(simple_call(s, "collect", "true", NULL, &err) == -ENOENT && STREQ(err.field, "app"),
           "%s: a forgotten record is gone: %s", s->what, err.msg);
}

static void test_start_failures(struct sup *s)
{
        struct tessera_error err = {0};
        struct launch_opts o = {0};
        struct launched l;
        char cmd[64];
        snprintf(cmd, sizeof(cmd), "no-such-cmd-%d", (int)getpid());
        int r = launch(s, "missing", (const char *const[]){cmd, "x", NULL}, &o, &l, &err);
        ok(r == 0, "%s: launch of a missing command succeeds (the exec decides) %s", s->what, err.msg);
        r = start(s, "missing", &err);
        ok(r == -ENOENT && strstr(err.msg, "no such command") && strstr(err.msg, cmd) && STREQ(err.field, "argv"),
           "%s: start fails: %s (field %s)", s->what, err.msg, err.field);
        json_t *c = NULL;
        simple_call(s, "collect", "missing", &c, &err);
        const char *state = json_string_value(json_object_get(c, "state"));
        const char *why = json_string_value(json_object_get(c, "error"));
        ok(state && STREQ(state, "exited") && why && strstr(why, "no such command"),
           "%s: its record is exited, with the reason (%s)", s->what, why ? why : "none");
        json_decref(c);
        struct pollfd pfd = {.fd = l.pidfd, .events = POLLIN};
        ok(poll(&pfd, 1, 0) == 1, "%s: the child is gone (pidfd readable)", s->what);
        launched_close(&l);
        json_t *list = NULL;
        simple_call(s, "apps", NULL, &list, &err);
        bool none_alive = json_is_array(list);
        for (size_t i = 0; i < json_array_size(list); i++) {
                json_t *a = json_array_get(list, i);
                const char *st = json_string_value(json_object_get(a, "state"));
                const char *name = json_string_value(json_object_get(a, "app"));
                /* "never" waits for its start deadline on purpose; stems wait alongside */
                none_alive =
                        none_alive && st && name && (STREQ(st, "exited") || STREQ(st, "stem") || STREQ(name, "never"));
        }
        ok(none_alive, "%s: no record stays starting or running", s->what);
        json_decref(list);
        ok(start(s, "missing", &err) == -ECHILD && strstr(err.msg, "no such command"),
           "%s: a second start repeats the reason: %s", s->what, err.msg);
        forget(s, "missing", &err);

        o.cwd = "/no/such/dir";
        if (launch(s, "badcwd", (const char *const[]){"true", NULL}, &o, &l, &err) == 0) {
                r = start(s, "badcwd", &err);
                ok(r == -ENOENT && strstr(err.msg, "cannot chdir to '/no/such/dir'") && STREQ(err.field, "cwd"),
                   "%s: missing cwd: %s", s->what, err.msg);
                launched_close(&l);
                forget(s, "badcwd", &err);
        }
        o.cwd = NULL;

        /* started twice, started after it ended, forgotten while running */
        if (launch(s, "twice", (const char *const[]){"sleep", "100", NULL}, &o, &l, &err) == 0) {
                start(s, "twice", &err);
                ok(start(s, "twice", &err) == -EALREADY, "%s: a second start: %s", s->what, err.msg);
                ok(forget(s, "twice", &err) == -EBUSY, "%s: forget of a running one: %s", s->what, err.msg);
                pidfd_send_signal(l.pidfd, SIGKILL, NULL, 0);
                json_decref(wait_exited(s, "twice", l.pidfd, &err));
                ok(forget(s, "twice", &err) == 0, "%s: forget once it ended", s->what);
                launched_close(&l);
        }

        /* forget before start cancels the launch */
        if (launch(s, "cancel", (const char *const[]){"true", NULL}, &o, &l, &err) == 0) {
                ok(forget(s, "cancel", &err) == 0, "%s: forget of a launched, unstarted one cancels it", s->what);
                struct pollfd p2 = {.fd = l.pidfd, .events = POLLIN};
                ok(poll(&p2, 1, 2000) == 1, "%s: the cancelled child is gone", s->what);
                launched_close(&l);
        }
        /* a waiting child ends on SIGTERM, as the application would */
        if (launch(s, "termwait", (const char *const[]){"sleep", "100", NULL}, &o, &l, &err) == 0) {
                json_t *k = request("kill", "termwait");
                json_object_set_new(k, "signal", json_integer(SIGTERM));
                ok(rpc(s, k, NULL, 0, NULL, NULL, NULL, &err) == 0, "%s: SIGTERM to a waiting child", s->what);
                json_t *c = wait_exited(s, "termwait", l.pidfd, &err);
                const char *why = json_string_value(json_object_get(c, "error"));
                ok(c && int_field(c, "signal") == SIGTERM && why && strstr(why, "before it was started"),
                   "%s: it ended by SIGTERM before its start (%s)", s->what, why ? why : err.msg);
                json_decref(c);
                ok(start(s, "termwait", &err) == -ECHILD, "%s: start after that: %s", s->what, err.msg);
                forget(s, "termwait", &err);
                launched_close(&l);
        }
        ok(launch(s, "dup", (const char *const[]){"true", NULL}, &o, &l, &err) == 0, "%s: launch dup", s->what);
        struct launched l2;
        ok(launch(s, "dup", (const char *const[]){"true", NULL}, &o, &l2, &err) == -EEXIST && STREQ(err.field, "app"),
           "%s: a second launch of the same name: %s", s->what, err.msg);
        forget(s, "dup", &err);
        launched_close(&l);
}

static int count_fds(pid_t pid);

/* A waiting child holds only its stdio and its two pipes; the application only its stdio, and the usual limits. */
static void test_child_fds(struct sup *s)
{
        struct tessera_error err = {0};
        struct launch_opts o = {0};
        struct launched l;
        if (launch(s, "fds", (const char *const[]){"sleep", "100", NULL}, &o, &l, &err) < 0) {
                ok(0, "%s: launch for the descriptor check: %s", s->what, err.msg);
                return;
        }
        pid_t pid = pidfd_host_pid(l.pidfd);
        int waiting = -1;
        /* the child arranges its descriptors right after the fork: give it a moment */
        for (int i = 0; i < 100 && (waiting = count_fds(pid)) != 5; i++)
                usleep(10000);
        ok(waiting == 5, "%s: the waiting child holds 5 descriptors (stdio, start and error pipes): %d", s->what,
           waiting);
        start(s, "fds", &err);
        int running = count_fds(pid);
        ok(running == 3, "%s: the application holds only 0-2: %d", s->what, running);
        struct rlimit ours;
        getrlimit(RLIMIT_NOFILE, &ours);
        char want[64], got[256] = "", path[64];
        snprintf(path, sizeof(path), "/proc/%d/limits", (int)pid);
        snprintf(want, sizeof(want), "Max open files            %llu", (unsigned long long)ours.rlim_cur);
        char limits[4096] = "";
        read_file_at(AT_FDCWD, path, limits, sizeof(limits), NULL);
        char *line = strstr(limits, "Max open files");
        if (line)
                snprintf(got, sizeof(got), "%.*s", (int)strcspn(line, "\n"), line);
        ok(line && strncmp(line, want, strlen(want)) == 0, "%s: it has the usual open-file limit (%s)", s->what, got);
        pidfd_send_signal(l.pidfd, SIGKILL, NULL, 0);
        json_decref(wait_exited(s, "fds", l.pidfd, &err));
        forget(s, "fds", &err);
        launched_close(&l);
}

static void test_stdio_pass(struct sup *s)
{
        struct tessera_error err = {0};
        struct launch_opts o = {0};
        char out[4096];
        json_t *r = run_captured(s, "pass",
                                 (const char *const[]){"sh", "-c",
                                                       "echo hello out; echo hello err >&2; "
                                                       "read x || echo stdin-eof",
                                                       NULL},
                                 &o, out, sizeof(out), &err);
        ok(r && strstr(out, "hello out\n") && strstr(out, "hello err\n") && strstr(out, "stdin-eof"),
           "%s: stdio pass: output on our pipe (%s)", s->what, r ? out : err.msg);
        json_decref(r);
        forget(s, "pass", &err);
}

static long long file_size(const char *path)
{
        struct stat st;
        return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

static void test_stdio_log(struct sup *s)
{
        struct tessera_error err = {0};
        char dir[PATH_MAX], log[PATH_MAX + 16], log1[PATH_MAX + 16];
        snprintf(dir, sizeof(dir), "%s/logs-XXXXXX", tmpdir);
        if (!ok(mkdtemp(dir) != NULL, "%s: a log directory", s->what))
                return;
        /* the supervisor writes the logs itself: in a user namespace it is the mapped root */
        if (chown(dir, s->base, s->base) < 0)
                diag("cannot chown %s: %s", dir, strerror(errno));
        int dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        struct launch_opts o = {.stdio = "log", .fds = {dir_fd}, .n_fds = 1};
        json_t *r = run_app(s, "logged",
                            (const char *const[]){"sh", "-c",
                                                  "echo to-log; echo err-to-log >&2; "
                                                  "read x || echo stdin-is-null",
                                                  NULL},
                            &o, &err);
        snprintf(log, sizeof(log), "%s/logged.log", dir);
        struct stat st = {0};
        stat(log, &st);
        ok(r && int_field(r, "exit_code") == 0 && file_contains(log, "to-log\nerr-to-log\nstdin-is-null"),
           "%s: log mode: output in %s once the record says exited %s", s->what, log, r ? "" : err.msg);
        ok((st.st_mode & 07777) == 0640, "%s: the log file is mode 0640 (%o)", s->what, st.st_mode & 07777);
        json_decref(r);
        forget(s, "logged", &err);

        /* 9 MiB of output: rotated past 4 MiB, never more than 8 MiB kept; the loop answers meanwhile */
        struct launched l;
        if (launch(s, "flood", (const char *const[]){"head", "-c", "9437184", "/dev/zero", NULL}, &o, &l, &err) < 0 ||
            start(s, "flood", &err) < 0) {
                ok(0, "%s: flood: %s", s->what, err.msg);
                close(dir_fd);
                return;
        }
        uint64_t t0 = now_ns();
        bool responsive = sup_alive(s);
        double ping_ms = (now_ns() - t0) / 1e6;
        r = wait_exited(s, "flood", l.pidfd, &err);
        snprintf(log, sizeof(log), "%s/flood.log", dir);
        snprintf(log1, sizeof(log1), "%s/flood.log.1", dir);
        long long a = file_size(log), b = file_size(log1);
        ok(r && int_field(r, "exit_code") == 0, "%s: flood exits 0 %s", s->what, r ? "" : err.msg);
        ok(responsive && ping_ms < 500, "%s: ping answered during the flood (%.1f ms)", s->what, ping_ms);
        /* rotated twice: the first generation is gone, .log.1 is a full second one, .log the rest */
        ok(a >= (1LL << 20) && a <= LOG_ROTATE && b > LOG_ROTATE - (64 << 10) && b <= LOG_ROTATE &&
                   a + b <= 2 * LOG_ROTATE,
           "%s: rotated: flood.log %lld B, flood.log.1 %lld B (each <= 4 MiB, %lld B kept of 9 MiB)", s->what, a, b,
           a + b);
        json_decref(r);
        launched_close(&l);
        forget(s, "flood", &err);
        close(dir_fd);
        remove_tree(dir);
}

static void test_tty(struct sup *s)
{
        struct tessera_error err = {0};
        struct launch_opts o = {.tty = true};
        struct launched l;
        int r = launch(s, "tty",
                       (const char *const[]){"sh", "-c",
                                             "tty; test -t 0 && test -t 1 && echo is-a-tty; "
                                             "read line; echo got-$line; exit 7",
                                             NULL},
                       &o, &l, &err);
        if (!ok(r == 0 && l.master >= 0, "%s: launch with a tty returns a pty master %s", s->what, err.msg))
                return;
        ok(start(s, "tty", &err) == 0, "%s: start the tty application %s", s->what, err.msg);
        char buf[4096];
        bool ttyok = read_until(l.master, "is-a-tty", buf, sizeof(buf), 5000);
        ok(ttyok && strstr(buf, "/dev/pts/"), "%s: it runs on a pty (%s)", s->what, buf);
        (void)!write(l.master, "hello\n", 6);
        ok(read_until(l.master, "got-hello", buf, sizeof(buf), 5000) && strstr(buf, "hello\r\n"),
           "%s: input through the master, echoed and answered", s->what);
        json_t *c = wait_exited(s, "tty", l.pidfd, &err);
        ok(c && int_field(c, "exit_code") == 7, "%s: the tty application exits 7 %s", s->what, c ? "" : err.msg);
        json_decref(c);
        launched_close(&l);
        forget(s, "tty", &err);

        /* an interactive shell: the prompt comes through the master */
        r = launch(s, "shell", (const char *const[]){"sh", "-i", NULL}, &o, &l, &err);
        if (r == 0 && start(s, "shell", &err) == 0) {
                bool prompt = read_until(l.master, "# ", buf, sizeof(buf), 5000);
                (void)!write(l.master, "echo $((6*7))x\n", 15);
                bool answer = read_until(l.master, "42x", buf, sizeof(buf), 5000);
                (void)!write(l.master, "exit 0\n", 7);
                c = wait_exited(s, "shell", l.pidfd, &err);
                ok(prompt && answer && c && int_field(c, "exit_code") == 0, "%s: interactive sh: prompt, command, exit",
                   s->what);
                json_decref(c);
        } else {
                ok(0, "%s: interactive sh: %s", s->what, err.msg);
        }
        launched_close(&l);
        forget(s, "shell", &err);
}

static bool read_status_field(pid_t pid, const char *key, char *val, size_t n)
{
        char path[64], buf[8192];
        snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
        if (read_file_at(AT_FDCWD, path, buf, sizeof(buf), NULL) < 0)
                return false;
        char *p = strstr(buf, key);
        if (!p)
                return false;
        p += strlen(key);
        while (*p == ' ' || *p == '\t')
                p++;
        size_t len = strcspn(p, "\n");
        snprintf(val, n, "%.*s", (int)len, p);
        return true;
}

static void test_cpus(struct sup *s)
{
        struct tessera_error err = {0};
        cpu_set_t mine;
        sched_getaffinity(0, sizeof(mine), &mine);
        int last = -1;
        for (int i = 0; i < CPU_SETSIZE; i++)
                if (CPU_ISSET(i, &mine))
                        last = i;
        char want[16], got[64] = "";
        snprintf(want, sizeof(want), "%d", last);
        json_t *forms[] = {json_pack("[i]", last), json_string(want)};
        for (int k = 0; k < 2; k++) {
                struct launch_opts o = {.cpus = forms[k]};
                struct launched l;
                if (launch(s, "pinned", (const char *const[]){"sleep", "100", NULL}, &o, &l, &err) < 0 ||
                    start(s, "pinned", &err) < 0) {
                        ok(0, "%s: pinned launch: %s", s->what, err.msg);
                        continue;
                }
                pid_t pid = pidfd_host_pid(l.pidfd);
                bool read_ok = read_status_field(pid, "Cpus_allowed_list:", got, sizeof(got));
                ok(read_ok && STREQ(got, want), "%s: cpus as %s: Cpus_allowed_list %s (want %s)", s->what,
                   k ? "a cpulist string" : "an array", got, want);
                pidfd_send_signal(l.pidfd, SIGKILL, NULL, 0);
                json_decref(wait_exited(s, "pinned", l.pidfd, &err));
                launched_close(&l);
                forget(s, "pinned", &err);
        }
}

static void test_ids(struct sup *s)
{
        struct tessera_error err = {0};
        struct launch_opts o = {.uid = NOBODY, .gid = NOBODY, .groups = json_pack("[i]", 100)};
        char out[1024];
        json_t *r;
        if (s->suite == USER_NS) {
                /* its setgroups is "deny": asking for groups is refused up front, none works */
                struct launched l;
                ok(launch(s, "id", (const char *const[]){"id", NULL}, &o, &l, &err) == -EPERM &&
                           STREQ(err.field, "groups"),
                   "%s: supplementary groups refused: %s", s->what, err.msg);
                o.groups = NULL;
                r = run_captured(s, "id", (const char *const[]){"id", NULL}, &o, out, sizeof(out), &err);
                ok(r && strstr(out, "uid=65534") && strstr(out, "gid=65534"), "%s: runs as uid/gid 65534: %s", s->what,
                   r ? out : err.msg);
        } else {
                r = run_captured(s, "id", (const char *const[]){"id", NULL}, &o, out, sizeof(out), &err);
                ok(r && strstr(out, "uid=65534") && strstr(out, "gid=65534") && strstr(out, "groups=") &&
                           strstr(strstr(out, "groups="), "100"),
                   "%s: runs as uid/gid 65534 with group 100: %s", s->what, r ? out : err.msg);
        }
        json_decref(r);
        forget(s, "id", &err);

        /* a cwd only root may enter is refused to uid 65534 */
        char dir[PATH_MAX], host_dir[PATH_MAX + 32], want[PATH_MAX + 32];
        snprintf(dir, sizeof(dir), "%s/private-%d", s->root[0] ? "/tmp" : tmpdir, (int)getpid());
        inside(s, dir, host_dir, sizeof(host_dir));
        if (make_inside(s, dir, NULL, 0700) < 0)
                diag("cannot create %s", host_dir);
        struct launch_opts o2 = {.uid = NOBODY, .gid = NOBODY, .cwd = dir};
        struct launched l;
        if (launch(s, "nocwd", (const char *const[]){"true", NULL}, &o2, &l, &err) == 0) {
                snprintf(want, sizeof(want), "cannot chdir to '%s'", dir);
                ok(start(s, "nocwd", &err) == -EACCES && strstr(err.msg, want),
                   "%s: the cwd is checked with the application's rights: %s", s->what, err.msg);
                launched_close(&l);
                forget(s, "nocwd", &err);
        }
        rmdir(host_dir);
}

/* Records are the supervisor's, not the connection's: tesserad may reconnect at any time. */
static void test_reconnect(struct sup *s)
{
        struct tessera_error err = {0};
        struct launch_opts o = {0};
        struct launched l;
        if (launch(s, "survivor", (const char *const[]){"sleep", "100", NULL}, &o, &l, &err) < 0 ||
            start(s, "survivor", &err) < 0) {
                ok(0, "%s: reconnect: %s", s->what, err.msg);
                return;
        }
        close(s->conn);
        s->conn = -1;
        json_t *c = NULL;
        simple_call(s, "collect", "survivor", &c, &err);
        const char *state = json_string_value(json_object_get(c, "state"));
        ok(state && STREQ(state, "running") && int_field(c, "ns_pid") == l.ns_pid,
           "%s: a new connection sees the running record", s->what);
        json_decref(c);
        json_t *killreq = request("kill", "survivor");
        json_object_set_new(killreq, "signal", json_integer(SIGTERM));
        ok(rpc(s, killreq, NULL, 0, NULL, NULL, NULL, &err) == 0, "%s: kill op with SIGTERM", s->what);
        json_decref(wait_exited(s, "survivor", l.pidfd, &err));
        close(s->conn);
        s->conn = -1;
        json_t *list = NULL;
        simple_call(s, "apps", NULL, &list, &err);
        bool found = false;
        for (size_t i = 0; i < json_array_size(list); i++) {
                json_t *a = json_array_get(list, i);
                const char *name = json_string_value(json_object_get(a, "app"));
                if (name && STREQ(name, "survivor"))
                        found = int_field(a, "signal") == SIGTERM && null_field(a, "exit_code");
        }
        ok(found, "%s: after another reconnect, apps lists it as ended by SIGTERM", s->what);
        json_decref(list);
        json_t *k2 = request("kill", "survivor");
        json_object_set_new(k2, "signal", json_integer(SIGTERM));
        ok(rpc(s, k2, NULL, 0, NULL, NULL, NULL, &err) == -ESRCH, "%s: kill of an ended one: %s", s->what, err.msg);
        forget(s, "survivor", &err);
        launched_close(&l);
}

/* ---- open ---- */

static int open_call(struct sup *s, const char *path, bool write, uint32_t uid, int *ret_fd, long long *ret_size,
                     struct tessera_error *err)
{
        json_t *req = proto_request("open");
        json_object_set_new(req, "path", json_string(path));
        json_object_set_new(req, "write", json_boolean(write));
        json_object_set_new(req, "uid", json_integer(uid));
        json_object_set_new(req, "gid", json_integer(uid));
        int fds[PROTO_MAX_FDS];
        size_t n = PROTO_MAX_FDS;
        json_t *result = NULL;
        *ret_fd = -1;
        int r = rpc(s, req, NULL, 0, &result, fds, &n, err);
        if (r >= 0 && n == 1) {
                *ret_fd = fds[0];
                *ret_size = int_field(result, "size");
        } else {
                for (size_t i = 0; i < n; i++)
                        close(fds[i]);
                if (r >= 0)
                        r = tessera_error_set(err, EPROTO, "open answered with %zu descriptors", n);
        }
        json_decref(result);
        return r;
}

/* Opens path for reading and compares the whole content. */
static bool open_reads(struct sup *s, const char *path, uint32_t uid, const char *want, struct tessera_error *err)
{
        int fd;
        long long size = -1;
        if (open_call(s, path, false, uid, &fd, &size, err) < 0)
                return false;
        char buf[4096];
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        buf[n > 0 ? n : 0] = '\0';
        if (!STREQ(buf, want) || size != (long long)strlen(want))
                diag("%s read `%s` (%lld B)", path, buf, size);
        return STREQ(buf, want) && size == (long long)strlen(want);
}

static void test_open_host(struct sup *s)
{
        struct tessera_error err = {0};
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/open-me", tmpdir);
        write_text(path, "host file\n", 0644);
        ok(open_reads(s, path, 0, "host file\n", &err), "%s: open reads a file (%s)", s->what, err.msg);
        int fd;
        long long size;
        ok(open_call(s, "/dev/zero", false, 0, &fd, &size, &err) == -EINVAL && strstr(err.msg, "not a regular file"),
           "%s: /dev/zero refused: %s", s->what, err.msg);
        unlink(path);
}

static void test_open_root(struct sup *s)
{
        struct tessera_error err = {0};
        char host[PATH_MAX + 64], path[PATH_MAX];
        /* owned by the enclave's root (the mapped one in a user namespace) */
        snprintf(host, sizeof(host), "%s/etc/hostname", s->root);
        write_text(host, "enclave-name\n", 0644);
        (void)!chown(host, s->base, s->base);
        snprintf(host, sizeof(host), "%s/etc/secret", s->root);
        write_text(host, "root only\n", 0600);
        (void)!chown(host, s->base, s->base);
        snprintf(host, sizeof(host), "%s/etc/fifo", s->root);
        mkfifo(host, 0666);
        (void)!chown(host, s->base, s->base);
        /* a host file the enclave must never reach, and absolute and relative links pointing at its path */
        char outside[PATH_MAX];
        snprintf(outside, sizeof(outside), "%s/outside-secret", tmpdir);
        write_text(outside, "HOST SECRET\n", 0644);
        snprintf(host, sizeof(host), "%s/etc/abs-link", s->root);
        symlink(outside, host);
        snprintf(host, sizeof(host), "%s/etc/rel-link", s->root);
        symlink("../../../../../../../../etc/hostname", host);

        ok(open_reads(s, "/etc/hostname", 0, "enclave-name\n", &err), "%s: reads a file of the root", s->what);
        ok(open_reads(s, "/../../../../../../etc/hostname", 0, "enclave-name\n", &err),
           "%s: `..` stops at the enclave's root", s->what);
        ok(open_reads(s, "/etc/rel-link", 0, "enclave-name\n", &err), "%s: a relative link climbing out stays in",
           s->what);
        int fd;
        long long size;
        ok(open_call(s, "/etc/abs-link", false, 0, &fd, &size, &err) == -ENOENT,
           "%s: an absolute link to a host path resolves inside (nothing there): %s", s->what, err.msg);
        if (fd >= 0)
                close(fd);
        /* the same path inside the enclave (its /tmp is its own tmpfs) */
        char in_path[PATH_MAX + 64];
        if (make_inside(s, tmpdir, NULL, 0755) < 0 || make_inside(s, outside, "inside copy\n", 0644) < 0)
                diag("cannot create %s inside", outside);
        ok(open_reads(s, "/etc/abs-link", 0, "inside copy\n", &err), "%s: ... and reads the enclave's copy", s->what);
        ok(open_call(s, "/proc/1/root/etc/hostname", false, 0, &fd, &size, &err) == -ELOOP,
           "%s: a /proc magic link is not followed: %s", s->what, err.msg);
        uint64_t t0 = now_ns();
        ok(open_call(s, "/etc/fifo", false, 0, &fd, &size, &err) == -EINVAL && strstr(err.msg, "not a regular file") &&
                   now_ns() - t0 < 1000000000ULL,
           "%s: a FIFO is refused at once: %s", s->what, err.msg);
        ok(open_call(s, "/etc/fifo", true, 0, &fd, &size, &err) == -EINVAL, "%s: also for writing: %s", s->what,
           err.msg);
        ok(open_call(s, "/dev/zero", false, 0, &fd, &size, &err) == -EINVAL &&
                   strstr(err.msg, "'/dev/zero' is not a regular file"),
           "%s: a device is refused: %s", s->what, err.msg);
        ok(open_call(s, "/etc", false, 0, &fd, &size, &err) == -EISDIR, "%s: a directory is refused: %s", s->what,
           err.msg);
        ok(open_call(s, "/etc/secret", false, NOBODY, &fd, &size, &err) == -EACCES && STREQ(err.field, "path"),
           "%s: uid 65534 may not read a 0600 root file: %s", s->what, err.msg);
        ok(open_reads(s, "/etc/secret", 0, "root only\n", &err), "%s: uid 0 may", s->what);
        ok(open_call(s, "/etc/new", true, NOBODY, &fd, &size, &err) == -EACCES,
           "%s: uid 65534 may not create in /etc: %s", s->what, err.msg);

        /* write: created, owned by the uid given, truncated on the next open */
        snprintf(path, sizeof(path), "/tmp/written-%d", (int)getpid());
        int r = open_call(s, path, true, NOBODY, &fd, &size, &err);
        ok(r == 0 && size == 0, "%s: open for writing creates %s %s", s->what, path, r == 0 ? "" : err.msg);
        if (r == 0) {
                (void)!write(fd, "written\n", 8);
                int fl = fcntl(fd, F_GETFL);
                ok((fl & O_ACCMODE) == O_WRONLY, "%s: the descriptor is write-only", s->what);
                close(fd);
        }
        inside(s, path, in_path, sizeof(in_path));
        struct stat st = {0};
        int sr = stat(in_path, &st);
        ok(sr == 0 && st.st_uid == s->base + NOBODY && st.st_gid == s->base + NOBODY && (st.st_mode & 0777) == 0644 &&
                   file_contains(in_path, "written"),
           "%s: owned by 65534:65534 (in the enclave), mode 0644, with what we wrote (host uid %u mode %o)", s->what,
           st.st_uid, st.st_mode & 0777);
        r = open_call(s, path, true, NOBODY, &fd, &size, &err);
        if (r == 0)
                close(fd);
        ok(r == 0 && file_size(in_path) == 0, "%s: a second write open truncates", s->what);
        ok(open_reads(s, path, NOBODY, "", &err), "%s: read back as 65534", s->what);
        unlink(outside);
}

/* ---- bad input ---- */

struct bad_case {
        const char *what;
        const char *json; /* merged over a good launch request */
        const char *field;
};

static json_t *good_launch(void)
{
        struct launch_opts o = {0};
        return launch_request("good", (const char *const[]){"true", NULL}, &o);
}

static void expect_refused(struct sup *s, const char *op, json_t *req, const int *fds, size_t n_fds, const char *field,
                           const char *what)
{
        struct tessera_error err = {0};
        int out[PROTO_MAX_FDS];
        size_t n_out = PROTO_MAX_FDS;
        int r = rpc(s, req, fds, n_fds, NULL, out, &n_out, &err);
        for (size_t i = 0; i < n_out; i++)
                close(out[i]);
        ok(r < 0 && STREQ(err.field, field) && n_out == 0, "%s %s: %s -> field %s: %s", op, what,
           r < 0 ? "refused" : "ACCEPTED", err.field, err.msg);
        if (r >= 0)
                forget(s, "good", &err);
}

static void test_bad_input(struct sup *s)
{
        char big[5000], longpath[5000];
        memset(big, 'a', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        longpath[0] = '/';
        memset(longpath + 1, 'p', sizeof(longpath) - 2);
        longpath[sizeof(longpath) - 1] = '\0';
        static const struct bad_case cases[] = {
                {"no app", "{\"app\": null}", "app"},
                {"app not a name", "{\"app\": \"../x\"}", "app"},
                {"app a number", "{\"app\": 5}", "app"},
                {"no argv", "{\"argv\": null}", "argv"},
                {"empty argv", "{\"argv\": []}", "argv"},
                {"argv a string", "{\"argv\": \"true\"}", "argv"},
                {"argv of numbers", "{\"argv\": [1]}", "argv"},
                {"empty command", "{\"argv\": [\"\"]}", "argv"},
                {"env not K=V", "{\"env\": [\"FOO\"]}", "env"},
                {"env empty key", "{\"env\": [\"=x\"]}", "env"},
                {"env an object", "{\"env\": {}}", "env"},
                {"cwd relative", "{\"cwd\": \"tmp\"}", "cwd"},
                {"cwd a number", "{\"cwd\": 5}", "cwd"},
                {"no uid", "{\"uid\": null}", "uid"},
                {"uid negative", "{\"uid\": -1}", "uid"},
                {"uid 2^32-1", "{\"uid\": 4294967295}", "uid"},
                {"uid a string", "{\"uid\": \"0\"}", "uid"},
                {"gid negative", "{\"gid\": -5}", "gid"},
                {"groups a string", "{\"groups\": \"x\"}", "groups"},
                {"groups negative", "{\"groups\": [-1]}", "groups"},
                {"cpus out of range", "{\"cpus\": [99999]}", "cpus"},
                {"cpus not the enclave's", "{\"cpus\": [8000]}", "cpus"},
                {"cpus empty list", "{\"cpus\": []}", "cpus"},
                {"cpus bad list", "{\"cpus\": \"0-\"}", "cpus"},
                {"cpus backwards", "{\"cpus\": \"1-0\"}", "cpus"},
                {"cpus garbage", "{\"cpus\": \"abc\"}", "cpus"},
                {"cpus a bool", "{\"cpus\": true}", "cpus"},
                {"stdio unknown", "{\"stdio\": \"file\"}", "stdio"},
                {"stdio missing", "{\"stdio\": null}", "stdio"},
                {"tty a string", "{\"tty\": \"yes\"}", "tty"},
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                json_t *req = good_launch();
                json_error_t jerr;
                json_t *patch = json_loads(cases[i].json, 0, &jerr);
                json_object_update(req, patch);
                json_decref(patch);
                int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
                expect_refused(s, "launch", req, (int[]){null_fd, null_fd, null_fd}, 3, cases[i].field, cases[i].what);
                close(null_fd);
        }
        /* sizes */
        json_t *req = good_launch();
        json_t *argv = json_array();
        for (int i = 0; i < 257; i++)
                json_array_append_new(argv, json_string("x"));
        json_object_set_new(req, "argv", argv);
        int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
        int three[3] = {null_fd, null_fd, null_fd};
        expect_refused(s, "launch", req, three, 3, "argv", "257 arguments");
        req = good_launch();
        json_array_append_new(json_object_get(req, "argv"), json_string(big));
        expect_refused(s, "launch", req, three, 3, "argv", "an argument of 4999 bytes");
        req = good_launch();
        argv = json_object_get(req, "argv");
        big[4000] = '\0';
        for (int i = 0; i < 40; i++)
                json_array_append_new(argv, json_string(big));
        expect_refused(s, "launch", req, three, 3, "argv", "160 KB of arguments");
        req = good_launch();
        json_object_set_new(req, "cwd", json_string(longpath));
        expect_refused(s, "launch", req, three, 3, "cwd", "a 4999-byte cwd");
        /* descriptors that do not match stdio */
        expect_refused(s, "launch", good_launch(), three, 1, "stdio", "pass with 1 descriptor");
        req = good_launch();
        json_object_set_new(req, "stdio", json_string("log"));
        expect_refused(s, "launch", req, NULL, 0, "stdio", "log without a directory");
        req = good_launch();
        json_object_set_new(req, "stdio", json_string("log"));
        expect_refused(s, "launch", req, three, 1, "stdio", "log with a file for a directory");
        req = good_launch();
        json_object_del(req, "stdio");
        json_object_set_new(req, "tty", json_true());
        expect_refused(s, "launch", req, three, 3, "stdio", "tty without stdio but with descriptors");
        close(null_fd);

        expect_refused(s, "start", request("start", NULL), NULL, 0, "app", "without app");
        expect_refused(s, "start", request("start", "nobody-launched-me"), NULL, 0, "app", "of an unknown app");
        expect_refused(s, "collect", request("collect", "nobody-launched-me"), NULL, 0, "app", "of an unknown app");
        expect_refused(s, "forget", request("forget", "x/y"), NULL, 0, "app", "of a bad name");
        const char *sigs[] = {"0", "65", "\"TERM\"", "null"};
        struct launched l;
        struct launch_opts o = {0};
        struct tessera_error err = {0};
        launch(s, "target", (const char *const[]){"sleep", "100", NULL}, &o, &l, &err);
        for (size_t i = 0; i < ELEMENTSOF(sigs); i++) {
                json_t *k = request("kill", "target");
                json_error_t jerr;
                json_object_set_new(k, "signal", json_loads(sigs[i], JSON_DECODE_ANY, &jerr));
                char what[32];
                snprintf(what, sizeof(what), "signal %s", sigs[i]);
                expect_refused(s, "kill", k, NULL, 0, "signal", what);
        }
        forget(s, "target", &err); /* cancels it */
        launched_close(&l);

        struct {
                const char *what, *json, *field;
        } opens[] = {
                {"no path", "{\"uid\": 0, \"gid\": 0}", "path"},
                {"relative path", "{\"path\": \"etc/hostname\", \"uid\": 0, \"gid\": 0}", "path"},
                {"empty path", "{\"path\": \"\", \"uid\": 0, \"gid\": 0}", "path"},
                {"path a number", "{\"path\": 7, \"uid\": 0, \"gid\": 0}", "path"},
                {"write a string", "{\"path\": \"/x\", \"write\": \"yes\", \"uid\": 0, \"gid\": 0}", "write"},
                {"no uid", "{\"path\": \"/x\", \"gid\": 0}", "uid"},
                {"no gid", "{\"path\": \"/x\", \"uid\": 0}", "gid"},
                {"uid a float", "{\"path\": \"/x\", \"uid\": 1.5, \"gid\": 0}", "uid"},
        };
        for (size_t i = 0; i < ELEMENTSOF(opens); i++) {
                json_t *r2 = proto_request("open");
                json_error_t jerr;
                json_t *patch = json_loads(opens[i].json, 0, &jerr);
                json_object_update(r2, patch);
                json_decref(patch);
                expect_refused(s, "open", r2, NULL, 0, opens[i].field, opens[i].what);
        }
        json_t *r3 = proto_request("open");
        json_object_set_new(r3, "path", json_string(longpath));
        json_object_set_new(r3, "uid", json_integer(0));
        json_object_set_new(r3, "gid", json_integer(0));
        expect_refused(s, "open", r3, NULL, 0, "path", "a 4999-byte path");

        json_t *list = NULL;
        simple_call(s, "apps", NULL, &list, &err);
        ok(json_is_array(list) && json_array_size(list) == 0, "no record was left by refused requests (%zu)",
           json_array_size(list));
        json_decref(list);
}

/* Descriptors the supervisor holds: none may leak from refused or finished requests. */
static int count_fds(pid_t pid)
{
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
        DIR *d = opendir(path);
        if (!d)
                return -1;
        int n = 0;
        for (struct dirent *de; (de = readdir(d));)
                n += de->d_name[0] != '.';
        closedir(d);
        return n;
}

/* ---- stems ---- */

/* `stem` NAME: *ret gets its pidfd and ns_pid. */
static int make_stem(struct sup *s, const char *name, struct launched *ret, struct tessera_error *err)
{
        int out[PROTO_MAX_FDS];
        size_t n_out = PROTO_MAX_FDS;
        json_t *result = NULL;
        *ret = (struct launched){.pidfd = -1, .master = -1, .ns_pid = -1};
        int r = rpc(s, request("stem", name), NULL, 0, &result, out, &n_out, err);
        if (r >= 0)
                ret->ns_pid = (int)int_field(result, "ns_pid");
        json_decref(result);
        if (r >= 0 && n_out == 1) {
                ret->pidfd = out[0];
                return 0;
        }
        for (size_t i = 0; i < n_out; i++)
                close(out[i]);
        return r < 0 ? r : tessera_error_set(err, EPROTO, "stem answered with %zu descriptors", n_out);
}

/* The state `collect` gives for name ("" when there is no such record). */
static const char *record_state(struct sup *s, const char *name, char *buf, size_t n)
{
        struct tessera_error err = {0};
        json_t *c = NULL;
        const char *state =
                simple_call(s, "collect", name, &c, &err) == 0 ? json_string_value(json_object_get(c, "state")) : NULL;
        snprintf(buf, n, "%s", state ? state : "");
        json_decref(c);
        return buf;
}

/* A stem sheds the supervisor's descriptors right after its fork: wait until it holds `want`. */
static int wait_fds(pid_t pid, int want)
{
        int n = -1;
        for (int i = 0; i < 100 && (n = count_fds(pid)) != want; i++)
                usleep(10000);
        return n;
}

static bool pidfd_ended(int pidfd, int timeout_ms)
{
        struct pollfd pfd = {.fd = pidfd, .events = POLLIN};
        return poll(&pfd, 1, timeout_ms) == 1;
}

/* Whether `apps` lists name with that state and ns_pid. */
static bool apps_lists(struct sup *s, const char *name, const char *state, int ns_pid)
{
        struct tessera_error err = {0};
        json_t *list = NULL;
        bool found = false;
        simple_call(s, "apps", NULL, &list, &err);
        for (size_t i = 0; i < json_array_size(list); i++) {
                json_t *a = json_array_get(list, i);
                const char *n = json_string_value(json_object_get(a, "app"));
                const char *st = json_string_value(json_object_get(a, "state"));
                if (n && st && STREQ(n, name))
                        found = STREQ(st, state) && int_field(a, "ns_pid") == ns_pid;
        }
        json_decref(list);
        return found;
}

static void test_stem_launch(struct sup *s)
{
        struct tessera_error err = {0};
        char state[32];
        struct launched st, l;
        int r = make_stem(s, "st-true", &st, &err);
        if (!ok(r == 0 && st.ns_pid > 1, "%s: stem forks a stem (ns pid %d) %s", s->what, st.ns_pid, err.msg))
                return;
        pid_t pid = pidfd_host_pid(st.pidfd);
        int held = wait_fds(pid, 1);
        ok(held == 1, "%s: a stem holds only its plan socket: %d descriptors", s->what, held);
        ok(apps_lists(s, "st-true", "stem", st.ns_pid), "%s: apps lists it as a stem", s->what);
        ok(STREQ(record_state(s, "st-true", state, sizeof(state)), "stem"), "%s: collect says `%s`", s->what, state);
        ok(start(s, "st-true", &err) == -EINVAL && STREQ(err.field, "app"), "%s: start of a stem is refused: %s",
           s->what, err.msg);
        struct launch_opts o = {.stem = "st-true"};
        r = launch(s, "via-stem", (const char *const[]){"/bin/true", NULL}, &o, &l, &err);
        ok(r == 0 && l.ns_pid == st.ns_pid && pidfd_host_pid(l.pidfd) == pid,
           "%s: launch into the stem: the stem's process (ns pid %d) %s", s->what, l.ns_pid, r == 0 ? "" : err.msg);
        if (r < 0) {
                forget(s, "st-true", &err);
                launched_close(&st);
                return;
        }
        held = wait_fds(pid, 5);
        ok(held == 5, "%s: the stem given its plan holds what a launched child holds (5): %d", s->what, held);
        ok(STREQ(record_state(s, "st-true", state, sizeof(state)), "") &&
                   apps_lists(s, "via-stem", "starting", l.ns_pid),
           "%s: the record is the application's now (stem's: `%s`)", s->what, state);
        r = start(s, "via-stem", &err);
        ok(r == 0, "%s: start it %s", s->what, r == 0 ? "" : err.msg);
        json_t *c = wait_exited(s, "via-stem", l.pidfd, &err);
        ok(c && int_field(c, "exit_code") == 0 && null_field(c, "signal"), "%s: /bin/true through a stem exits 0 %s",
           s->what, c ? "" : err.msg);
        json_decref(c);
        ok(forget(s, "via-stem", &err) == 0, "%s: forget it", s->what);
        launched_close(&l);
        launched_close(&st);

        /* the stem's name may go on as the application's */
        if (make_stem(s, "same", &st, &err) == 0) {
                o.stem = "same";
                c = run_app(s, "same", (const char *const[]){"sh", "-c", "exit 4", NULL}, &o, &err);
                ok(c && int_field(c, "exit_code") == 4, "%s: an application named as its stem exits 4 %s", s->what,
                   c ? "" : err.msg);
                json_decref(c);
                forget(s, "same", &err);
                launched_close(&st);
        }
}

static void test_stem_stdio(struct sup *s)
{
        struct tessera_error err = {0};
        struct launched st, l;
        char out[4096];

        struct launch_opts o = {.stem = "st-pass"};
        make_stem(s, "st-pass", &st, &err);
        json_t *r = run_captured(s, "pass-stem",
                                 (const char *const[]){"sh", "-c", "echo out; echo err >&2; read x || echo eof", NULL},
                                 &o, out, sizeof(out), &err);
        ok(r && int_field(r, "exit_code") == 0 && strstr(out, "out\n") && strstr(out, "err\n") && strstr(out, "eof\n"),
           "%s: stdio pass through a stem: %s", s->what, r ? out : err.msg);
        json_decref(r);
        forget(s, "pass-stem", &err);
        launched_close(&st);

        char dir[PATH_MAX], log[PATH_MAX + 32];
        snprintf(dir, sizeof(dir), "%s/stemlogs-XXXXXX", tmpdir);
        if (mkdtemp(dir) && chown(dir, s->base, s->base) == 0) {
                int dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                struct launch_opts lo = {.stdio = "log", .fds = {dir_fd}, .n_fds = 1, .stem = "st-log"};
                make_stem(s, "st-log", &st, &err);
                r = run_app(s, "log-stem",
                            (const char *const[]){"sh", "-c", "echo to-log; echo err-to-log >&2; read x || echo null",
                                                  NULL},
                            &lo, &err);
                snprintf(log, sizeof(log), "%s/log-stem.log", dir);
                ok(r && int_field(r, "exit_code") == 0 && file_contains(log, "to-log\nerr-to-log\nnull"),
                   "%s: log mode through a stem: output in log-stem.log %s", s->what, r ? "" : err.msg);
                json_decref(r);
                forget(s, "log-stem", &err);
                launched_close(&st);
                close(dir_fd);
        } else {
                ok(0, "%s: a log directory for the stem: %s", s->what, strerror(errno));
        }
        remove_tree(dir);

        struct launch_opts to = {.tty = true, .stem = "st-tty"};
        make_stem(s, "st-tty", &st, &err);
        int rc = launch(
                s, "tty-stem",
                (const char *const[]){"sh", "-c", "tty; test -t 0 && echo is-a-tty; read l; echo got-$l; exit 7", NULL},
                &to, &l, &err);
        if (ok(rc == 0 && l.master >= 0, "%s: tty launch into a stem returns a pty master %s", s->what, err.msg)) {
                start(s, "tty-stem", &err);
                bool is_tty = read_until(l.master, "is-a-tty", out, sizeof(out), 5000);
                (void)!write(l.master, "hi\n", 3);
                bool answered = read_until(l.master, "got-hi", out, sizeof(out), 5000);
                json_t *c = wait_exited(s, "tty-stem", l.pidfd, &err);
                ok(is_tty && answered && c && int_field(c, "exit_code") == 7,
                   "%s: tty through a stem: on a pty, answers, exits 7 %s", s->what, c ? "" : err.msg);
                json_decref(c);
                launched_close(&l);
        }
        forget(s, "tty-stem", &err);
        launched_close(&st);
}

static void test_stem_end(struct sup *s)
{
        struct tessera_error err = {0};
        struct launched st, l;
        char state[32];
        struct launch_opts o = {.stem = "st-dead"};
        if (make_stem(s, "st-dead", &st, &err) == 0) {
                pidfd_send_signal(st.pidfd, SIGKILL, NULL, 0);
                pidfd_ended(st.pidfd, 2000);
                ok(launch(s, "on-dead", (const char *const[]){"true", NULL}, &o, &l, &err) == -ESRCH &&
                           STREQ(err.field, "stem") && strstr(err.msg, "stem 'st-dead' is gone"),
                   "%s: launch into a stem killed from outside: %s", s->what, err.msg);
                ok(STREQ(record_state(s, "st-dead", state, sizeof(state)), "") &&
                           STREQ(record_state(s, "on-dead", state, sizeof(state)), ""),
                   "%s: the dead stem's record is dropped, no application recorded", s->what);
                launched_close(&st);
        }
        /* dead, yet a zombie only its tracer sees: the supervisor learns it by sending, and must not wait for it */
        if (make_stem(s, "st-traced", &st, &err) == 0) {
                pid_t pid = pidfd_host_pid(st.pidfd);
                if (ptrace(PTRACE_SEIZE, pid, NULL, NULL) == 0) {
                        pidfd_send_signal(st.pidfd, SIGKILL, NULL, 0);
                        bool dead = pidfd_ended(st.pidfd, 2000);
                        o.stem = "st-traced";
                        int r = launch(s, "on-traced", (const char *const[]){"true", NULL}, &o, &l, &err);
                        ok(dead && r == -ESRCH && STREQ(err.field, "stem"),
                           "%s: launch into a stem that died under a tracer: %s", s->what, err.msg);
                        /* the tracer lets go: the zombie goes on to its parent, the supervisor */
                        bool released = waitpid(pid, NULL, __WALL) == pid;
                        bool reaped = false;
                        for (int i = 0; i < 200 && !reaped; i++, usleep(10000))
                                reaped = kill(pid, 0) < 0 && errno == ESRCH;
                        ok(released && reaped && STREQ(record_state(s, "st-traced", state, sizeof(state)), ""),
                           "%s: its record is dropped, the supervisor reaps it once the tracer lets go", s->what);
                } else {
                        skip("%s: a stem dying under a tracer: cannot ptrace it: %s", s->what, strerror(errno));
                        forget(s, "st-traced", &err);
                }
                launched_close(&st);
        }
        err = (struct tessera_error){0};
        if (make_stem(s, "st-forget", &st, &err) == 0) {
                ok(forget(s, "st-forget", &err) == 0 && pidfd_ended(st.pidfd, 2000) &&
                           STREQ(record_state(s, "st-forget", state, sizeof(state)), ""),
                   "%s: forget of a stem ends it and drops its record %s", s->what, err.msg);
                launched_close(&st);
        }
        err = (struct tessera_error){0};
        if (make_stem(s, "st-kill", &st, &err) == 0) {
                json_t *k = request("kill", "st-kill");
                json_object_set_new(k, "signal", json_integer(SIGTERM));
                ok(rpc(s, k, NULL, 0, NULL, NULL, NULL, &err) == 0 && pidfd_ended(st.pidfd, 2000) &&
                           STREQ(record_state(s, "st-kill", state, sizeof(state)), ""),
                   "%s: kill of a stem ends it and drops its record %s", s->what, err.msg);
                launched_close(&st);
        }
        /* one that dies unused stays listed (exited) until forgotten, or until a launch names it */
        err = (struct tessera_error){0};
        if (make_stem(s, "st-died", &st, &err) == 0) {
                pidfd_send_signal(st.pidfd, SIGKILL, NULL, 0);
                json_t *c = wait_exited(s, "st-died", st.pidfd, &err);
                ok(c && int_field(c, "signal") == SIGKILL, "%s: a stem killed from outside is recorded as exited (%s)",
                   s->what, c ? "signal 9" : err.msg);
                json_decref(c);
                ok(forget(s, "st-died", &err) == 0, "%s: and forgotten %s", s->what, err.msg);
                launched_close(&st);
        }
}

static void test_stem_bad_input(struct sup *s)
{
        struct tessera_error err = {0};
        struct launched st, st2, l, l2, occupied;
        char state[32];
        struct launch_opts o = {.stem = "no-such-stem"};
        const char *const argv_true[] = {"true", NULL};

        ok(launch(s, "x", argv_true, &o, &l, &err) == -ENOENT && STREQ(err.field, "stem"),
           "%s: launch into an unknown stem: %s", s->what, err.msg);
        o.stem = "../x";
        ok(launch(s, "x", argv_true, &o, &l, &err) == -EINVAL && STREQ(err.field, "stem"),
           "%s: a stem that is not a name: %s", s->what, err.msg);
        ok(make_stem(s, "a/b", &st, &err) == -EINVAL && STREQ(err.field, "app"), "%s: stem of a bad name: %s", s->what,
           err.msg);
        ok(make_stem(s, NULL, &st, &err) == -EINVAL && STREQ(err.field, "app"), "%s: stem without a name: %s", s->what,
           err.msg);

        struct launch_opts plain = {0};
        launch(s, "occupied", (const char *const[]){"sleep", "100", NULL}, &plain, &occupied, &err);
        ok(make_stem(s, "occupied", &st, &err) == -EEXIST && STREQ(err.field, "app"),
           "%s: a stem named as an application: %s", s->what, err.msg);
        o.stem = "occupied";
        ok(launch(s, "x", argv_true, &o, &l, &err) == -EINVAL && STREQ(err.field, "stem"),
           "%s: launch into an application: %s", s->what, err.msg);

        if (make_stem(s, "st-keep", &st, &err) == 0) {
                ok(make_stem(s, "st-keep", &st2, &err) == -EEXIST, "%s: a second stem of the same name: %s", s->what,
                   err.msg);
                o.stem = "st-keep";
                ok(launch(s, "occupied", argv_true, &o, &l, &err) == -EEXIST && STREQ(err.field, "app"),
                   "%s: launch into a stem under an application's name: %s", s->what, err.msg);
                ok(launch(s, "st-keep2", (const char *const[]){"", NULL}, &o, &l, &err) == -EINVAL &&
                           STREQ(err.field, "argv"),
                   "%s: a bad request naming a stem is refused first: %s", s->what, err.msg);
                o.stdio = "log"; /* without a directory */
                ok(launch(s, "st-keep2", argv_true, &o, &l, &err) == -EINVAL && STREQ(err.field, "stdio"),
                   "%s: ... descriptors not matching stdio too: %s", s->what, err.msg);
                o.stdio = NULL;
                ok(STREQ(record_state(s, "st-keep", state, sizeof(state)), "stem") && !pidfd_ended(st.pidfd, 0),
                   "%s: the stem is untouched by refused launches", s->what);
                json_t *c = run_app(s, "kept", argv_true, &o, &err);
                ok(c && int_field(c, "exit_code") == 0, "%s: and serves the next launch %s", s->what, c ? "" : err.msg);
                json_decref(c);
                ok(launch(s, "again", argv_true, &o, &l, &err) == -ENOENT && STREQ(err.field, "stem"),
                   "%s: launch into a stem a second time: %s", s->what, err.msg);
                forget(s, "kept", &err);
                launched_close(&st);
        }
        /* a stem whose name its application took: that record is an application now */
        if (make_stem(s, "st-twice", &st, &err) == 0) {
                o.stem = "st-twice";
                launch(s, "st-twice", (const char *const[]){"sleep", "100", NULL}, &o, &l, &err);
                ok(launch(s, "other", argv_true, &o, &l2, &err) == -EINVAL && STREQ(err.field, "stem"),
                   "%s: launch into a stem its application was named after: %s", s->what, err.msg);
                forget(s, "st-twice", &err); /* cancels it */
                launched_close(&l);
                launched_close(&st);
        }
        forget(s, "occupied", &err);
        launched_close(&occupied);
        json_t *list = NULL;
        simple_call(s, "apps", NULL, &list, &err);
        ok(json_is_array(list) && json_array_size(list) == 0, "%s: no record left by the stem tests (%zu)", s->what,
           json_array_size(list));
        json_decref(list);
}

/* ---- start deadline ---- */

/*
 * Alongside: a stem kept unused all along (stems have no deadline), and one
 * launched into later and never started, whose deadline counts from that
 * launch, not from the stem's fork.
 */
struct never_started {
        struct launched l, aged, late_stem, late;
        uint64_t launched_ns, late_ns;
        bool ok, aged_ok, late_ok;
};

static void never_started_begin(struct sup *s, struct never_started *n)
{
        struct tessera_error err = {0};
        struct launch_opts o = {0};
        n->ok = launch(s, "never", (const char *const[]){"sleep", "100", NULL}, &o, &n->l, &err) == 0;
        n->launched_ns = now_ns();
        ok(n->ok, "%s: launch one that is never started (%s)", s->what, err.msg);
        n->aged_ok = make_stem(s, "aged", &n->aged, &err) == 0;
        n->late_ok = make_stem(s, "late-stem", &n->late_stem, &err) == 0;
        ok(n->aged_ok && n->late_ok, "%s: two stems that wait alongside (%s)", s->what, err.msg);
}

/* Launches into the second stem at least a second after it was forked. */
static void never_started_launch_late(struct sup *s, struct never_started *n)
{
        struct tessera_error err = {0};
        struct launch_opts o = {.stem = "late-stem"};
        uint64_t since = now_ns() - n->launched_ns;
        if (since < 1000000000ULL)
                usleep((useconds_t)((1000000000ULL - since) / 1000));
        n->late_ok =
                n->late_ok && launch(s, "late", (const char *const[]){"sleep", "100", NULL}, &o, &n->late, &err) == 0;
        n->late_ns = now_ns();
        ok(n->late_ok, "%s: launch into a stem %.1f s old, never started (%s)", s->what,
           (n->late_ns - n->launched_ns) / 1e9, err.msg);
}

static void never_started_check_stems(struct sup *s, struct never_started *n)
{
        struct tessera_error err = {0};
        char state[32];
        if (n->aged_ok) {
                double age = (now_ns() - n->launched_ns) / 1e9;
                ok(!pidfd_ended(n->aged.pidfd, 0) && STREQ(record_state(s, "aged", state, sizeof(state)), "stem"),
                   "%s: a stem %.1f s old is still there (`%s`): no start deadline", s->what, age, state);
                forget(s, "aged", &err);
                launched_close(&n->aged);
        }
        if (n->late_ok) {
                double left = 12.0 - (now_ns() - n->late_ns) / 1e9;
                bool alive = !pidfd_ended(n->late.pidfd, 0);
                bool died = pidfd_ended(n->late.pidfd, left > 0 ? (int)(left * 1000) : 0);
                double at = (now_ns() - n->late_ns) / 1e9;
                ok(alive && died && at >= 9.9 && at < 11.5,
                   "%s: launched into a stem, never started: killed %.2f s after that launch (%.2f s after the stem)",
                   s->what, at, (now_ns() - n->launched_ns) / 1e9);
                json_decref(wait_exited(s, "late", -1, &err));
                forget(s, "late", &err);
                launched_close(&n->late);
        }
        launched_close(&n->late_stem);
}

static void never_started_check(struct sup *s, struct never_started *n)
{
        if (!n->ok)
                return;
        struct tessera_error err = {0};
        double elapsed = (now_ns() - n->launched_ns) / 1e9;
        struct pollfd pfd = {.fd = n->l.pidfd, .events = POLLIN};
        bool early = elapsed < 9.5 && poll(&pfd, 1, 0) == 1;
        ok(!early, "%s: still waiting %.1f s after the launch", s->what, elapsed);
        int left_ms = (int)(12000 - elapsed * 1000);
        bool died = poll(&pfd, 1, left_ms > 0 ? left_ms : 0) == 1;
        double at = (now_ns() - n->launched_ns) / 1e9;
        ok(died && (elapsed >= 9.5 || (at >= 9.9 && at < 11.5)), "%s: killed %.2f s after its launch (10 s)", s->what,
           at);
        json_t *c = wait_exited(s, "never", -1, &err);
        const char *why = json_string_value(json_object_get(c, "error"));
        ok(c && int_field(c, "signal") == 9 && why && strstr(why, "not started within"), "%s: recorded as killed: %s",
           s->what, why ? why : err.msg);
        json_decref(c);
        ok(start(s, "never", &err) == -ECHILD && strstr(err.msg, "not started within"), "%s: start too late: %s",
           s->what, err.msg);
        forget(s, "never", &err);
        launched_close(&n->l);
}

/* ---- latency ---- */

static int cmp_u64(const void *a, const void *b)
{
        uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
        return x < y ? -1 : x > y;
}

/* Times of one launch+start of /bin/true: the launch's request to its reply, then the start's (to the exec done). */
struct bench_times {
        uint64_t launch_ns[100], start_ns[100], total_ns[100];
        int n;
};

/* A launch (into a ready stem, or forking) and a start; false when it did not run /bin/true to exit 0. */
static bool bench_once(struct sup *s, bool with_stem, struct bench_times *t)
{
        struct tessera_error err = {0};
        struct launch_opts o = {.stem = with_stem ? "bench-stem" : NULL};
        struct launched st = {.pidfd = -1, .master = -1}, l;
        /* a stem is forked ahead, as tesserad's pool does: outside the measured time, and settled */
        if (with_stem && (make_stem(s, "bench-stem", &st, &err) < 0 || wait_fds(pidfd_host_pid(st.pidfd), 1) != 1))
                return false;
        uint64_t t0 = now_ns();
        if (launch(s, "bench", (const char *const[]){"/bin/true", NULL}, &o, &l, &err) < 0) {
                launched_close(&st);
                return false;
        }
        uint64_t t1 = now_ns();
        int r = start(s, "bench", &err);
        uint64_t t2 = now_ns();
        json_t *c = r == 0 ? wait_exited(s, "bench", l.pidfd, &err) : NULL;
        bool good = c && int_field(c, "exit_code") == 0;
        json_decref(c);
        launched_close(&l);
        launched_close(&st);
        forget(s, "bench", &err);
        if (good) {
                t->launch_ns[t->n] = t1 - t0;
                t->start_ns[t->n] = t2 - t1;
                t->total_ns[t->n++] = t2 - t0;
        }
        return good;
}

static double median_ms(uint64_t *v, int n)
{
        qsort(v, (size_t)n, sizeof(v[0]), cmp_u64);
        return v[n / 2] / 1e6;
}

static void bench_report(struct sup *s, const char *what, struct bench_times *t)
{
        double launch = median_ms(t->launch_ns, t->n), start_ms = median_ms(t->start_ns, t->n);
        double total = median_ms(t->total_ns, t->n);
        diag("%s: %s+start of /bin/true (request to exec done) over %d runs: median %.3f ms (launch %.3f, start %.3f), "
             "min %.3f ms, p90 %.3f ms, max %.3f ms",
             s->what, what, t->n, total, launch, start_ms, t->total_ns[0] / 1e6, t->total_ns[t->n * 9 / 10] / 1e6,
             t->total_ns[t->n - 1] / 1e6);
}

static void bench_launch(struct sup *s)
{
        static struct bench_times forked, stemmed;
        int runs = (int)ELEMENTSOF(forked.total_ns);
        forked.n = stemmed.n = 0;
        /* interleaved, so both see the same machine */
        for (int i = 0; i < runs; i++) {
                bench_once(s, false, &forked);
                bench_once(s, true, &stemmed);
        }
        if (!ok(forked.n == runs && stemmed.n == runs, "%s: %d and %d of %d launch+start runs of /bin/true", s->what,
                forked.n, stemmed.n, runs))
                return;
        bench_report(s, "launch", &forked);
        bench_report(s, "launch into a stem", &stemmed);
}

/* ---- main ---- */

static void run_suite(enum suite suite)
{
        struct sup s;
        struct tessera_error err = {0};
        sup_init(&s, suite);
        if (!ok(sup_spawn(&s, &err) == 0, "%s: spawn a supervisor (%s)", s.what, err.msg)) {
                sup_done(&s);
                return;
        }
        /* counted with one connection open, as at the end */
        ok(sup_alive(&s), "%s: ping", s.what);
        int fds_before = count_fds(s.pid);
        /* the start deadline runs alongside the other tests */
        struct never_started never = {0};
        if (suite == HOST_ROOT)
                never_started_begin(&s, &never);
        test_exit_status(&s);
        test_start_failures(&s);
        if (suite == HOST_ROOT)
                never_started_launch_late(&s, &never);
        test_child_fds(&s);
        test_stdio_pass(&s);
        test_stdio_log(&s);
        test_tty(&s);
        test_cpus(&s);
        test_ids(&s);
        test_reconnect(&s);
        test_stem_launch(&s);
        test_stem_stdio(&s);
        test_stem_end(&s);
        if (suite == OWN_ROOT || suite == USER_NS)
                test_stem_bad_input(&s);
        if (suite == HOST_ROOT)
                test_open_host(&s);
        else
                test_open_root(&s);
        if (suite == OWN_ROOT)
                test_bad_input(&s);
        bench_launch(&s);
        if (suite == HOST_ROOT) {
                never_started_check(&s, &never);
                never_started_check_stems(&s, &never);
        }
        /* the connection is one of the supervisor's descriptors: count with the same one open */
        int fds_after = count_fds(s.pid);
        ok(fds_after == fds_before, "%s: the supervisor holds as many descriptors as before (%d, %d)", s.what,
           fds_before, fds_after);
        ok(sup_alive(&s), "%s: the supervisor still answers", s.what);
        ok(file_contains(s.log_path, "]: started"), "%s: supervisor log is there", s.what);
        sup_done(&s);
}

int main(void)
{
        if (geteuid() != 0) {
                skip("supervisor application tests need root (namespaces, mounts, other uids)");
                return done_testing();
        }
        /* a reader that goes away (`| head`) must not kill us before the supervisors are cleaned up */
        signal(SIGPIPE, SIG_IGN);
        find_supervisor();
        if (access(supervisor_bin, X_OK) < 0) {
                ok(0, "supervisor binary at %s (set TESSERA_BUILD to the build dir)", supervisor_bin);
                return done_testing();
        }
        snprintf(tmpdir, sizeof(tmpdir), "/tmp/tessera-supapps-%d-XXXXXX", (int)getpid());
        if (!mkdtemp(tmpdir)) {
                ok(0, "mkdtemp: %s", strerror(errno));
                return done_testing();
        }
        chmod(tmpdir, 0755); /* uid 65534 and the user-namespace enclave reach the files meant for them */
        diag("supervisor: %s, temp dir: %s", supervisor_bin, tmpdir);
        run_suite(HOST_ROOT);
        if (access(BUSYBOX, X_OK) == 0) {
                run_suite(OWN_ROOT);
                run_suite(USER_NS);
        } else {
                skip("own root and user ns: %s is missing (install busybox-static)", BUSYBOX);
        }
        remove_tree(tmpdir);
        ok(access(tmpdir, F_OK) < 0, "temp dir removed");
        return done_testing();
}
