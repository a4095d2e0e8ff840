/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* What the benchmarks of bench/ share (see common.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>

#include <jansson.h>

#include "common.h"
#include "tessera-build.h"
#include "util.h"

/* ---- samples and their statistics ---- */

void samples_add(struct samples *s, double ms)
{
        if (s->n == s->cap) {
                size_t cap = s->cap ? s->cap * 2 : 64;
                double *v = realloc(s->ms, cap * sizeof(*v));
                if (!v)
                        return; /* a lost sample under memory pressure is not worth failing the run */
                s->ms = v;
                s->cap = cap;
        }
        s->ms[s->n++] = ms;
}

void samples_fail(struct samples *s, const char *fmt, ...)
{
        if (s->failed[0])
                return; /* the first reason is the one worth reading */
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(s->failed, sizeof(s->failed), fmt, ap);
        va_end(ap);
}

void samples_free(struct samples *s)
{
        free(s->ms);
        s->ms = NULL;
        s->n = s->cap = 0;
}

static int cmp_double(const void *a, const void *b)
{
        double x = *(const double *)a, y = *(const double *)b;
        return (x > y) - (x < y);
}

double quantile_of(const double *ms, size_t n, double q)
{
        if (n == 0)
                return NAN;
        _cleanup_free_ double *v = malloc(n * sizeof(*v));
        if (!v)
                return NAN;
        memcpy(v, ms, n * sizeof(*v));
        qsort(v, n, sizeof(*v), cmp_double);
        if (q == 0.5)
                return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
        size_t rank = (size_t)ceil(q * (double)n);
        return v[rank ? rank - 1 : 0];
}

double median(const struct samples *s)
{
        return s->failed[0] ? NAN : quantile_of(s->ms, s->n, 0.5);
}

double p90(const struct samples *s)
{
        return s->failed[0] ? NAN : quantile_of(s->ms, s->n, 0.9);
}

bool sched_times_read(pid_t pid, struct sched_times *ret)
{
        char path[64], buf[128];
        snprintf(path, sizeof(path), "/proc/%d/schedstat", (int)pid);
        unsigned long long cpu, wait;
        if (pid <= 0 || read_file_at(AT_FDCWD, path, buf, sizeof(buf), NULL) < 0 ||
            sscanf(buf, "%llu %llu", &cpu, &wait) != 2)
                return false;
        ret->on_cpu = cpu;
        ret->waiting = wait;
        return true;
}

/* ---- one benchmark run ---- */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
        (void)st;
        (void)flag;
        (void)ftw;
        (void)remove(path);
        return 0;
}

void remove_tree(const char *path)
{
        (void)nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

int bench_run_open(struct bench_run *r)
{
        sigset_t stop;
        sigemptyset(&stop);
        sigaddset(&stop, SIGINT);
        sigaddset(&stop, SIGTERM);
        sigaddset(&stop, SIGHUP);
        sigprocmask(SIG_BLOCK, &stop, NULL);
        /* a daemon that died must show up as an error from the call, not kill us before the cleanup */
        signal(SIGPIPE, SIG_IGN);

        snprintf(r->tmp, sizeof(r->tmp), "/tmp/tessera-bench-%d.XXXXXX", (int)getpid());
        if (!mkdtemp(r->tmp)) {
                fprintf(stderr, "%s: cannot make a temporary directory: %s\n", r->prog, strerror(errno));
                r->tmp[0] = '\0';
                return -errno;
        }
        char path[PATH_MAX + 32];
        snprintf(path, sizeof(path), "%s/commands.log", r->tmp);
        r->log_fd = open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        r->devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (r->log_fd < 0 || r->devnull < 0) {
                int e = errno;
                fprintf(stderr, "%s: cannot open %s or /dev/null: %s\n", r->prog, path, strerror(e));
                bench_run_close(r);
                return -e;
        }
        return 0;
}

void bench_run_close(struct bench_run *r)
{
        if (r->log_fd >= 0)
                close(r->log_fd);
        r->log_fd = -1;
        if (r->devnull >= 0)
                close(r->devnull);
        r->devnull = -1;
        if (r->tmp[0]) {
                remove_tree(r->tmp);
                r->tmp[0] = '\0';
        }
}

bool interrupted(struct bench_run *r)
{
        sigset_t pending;
        if (!r->interrupted && sigpending(&pending) == 0 &&
            (sigismember(&pending, SIGINT) || sigismember(&pending, SIGTERM) || sigismember(&pending, SIGHUP)))
                r->interrupted = true;
        return r->interrupted;
}

void note(struct bench_run *r, const char *fmt, ...)
{
        size_t len = strlen(r->notes);
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->notes + len, sizeof(r->notes) - len, fmt, ap);
        va_end(ap);
}

int fatal(struct bench_run *r, const char *fmt, ...)
{
        if (!r->fatal[0]) {
                va_list ap;
                va_start(ap, fmt);
                vsnprintf(r->fatal, sizeof(r->fatal), fmt, ap);
                va_end(ap);
        }
        return -1;
}

void sleep_ms(unsigned ms)
{
        struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

double ms_since(uint64_t t0)
{
        return (double)(now_ns() - t0) / 1e6;
}

int parse_count(const char *s, unsigned *ret)
{
        uint64_t v;
        if (parse_uint64(s, 100000, &v) < 0 || v == 0)
                return -EINVAL;
        *ret = (unsigned)v;
        return 0;
}

int bench_find_build(struct bench_run *r, const char *given)
{
        char exe[PATH_MAX];
        if (given) {
                if (!realpath(given, r->build))
                        return -errno;
        } else {
                ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
                exe[n > 0 ? n : 0] = '\0';
                char *slash = strrchr(exe, '/');
                if (slash) {
                        *slash = '\0';
                        slash = strrchr(exe, '/');
                        if (slash)
                                *slash = '\0';
                }
                snprintf(r->build, sizeof(r->build), "%s", exe);
        }
        snprintf(r->tesserad, sizeof(r->tesserad), "%s/src/tesserad/tesserad", r->build);
        if (!given && access(r->tesserad, X_OK) < 0) {
                snprintf(r->build, sizeof(r->build), "%s", TESSERA_BUILDDIR);
                snprintf(r->tesserad, sizeof(r->tesserad), "%s/src/tesserad/tesserad", r->build);
        }
        snprintf(r->tessera, sizeof(r->tessera), "%s/src/tessera/tessera", r->build);
        if (access(r->tesserad, X_OK) < 0 || access(r->tessera, X_OK) < 0)
                return -ENOENT;
        return 0;
}

/* ---- running programs ---- */

bool find_tool(const char *name, char *buf, size_t size)
{
        const char *path = getenv("PATH");
        char all[4096];
        snprintf(all, sizeof(all), "%s:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", path ? path : "");
        _cleanup_free_ char *copy = strdup(all);
        if (!copy)
                return false;
        char *save = NULL;
        for (char *dir = strtok_r(copy, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
                snprintf(buf, size, "%s/%s", dir, name);
                if (access(buf, X_OK) == 0)
                        return true;
        }
        buf[0] = '\0';
        return false;
}

pid_t spawn(struct bench_run *r, char *const argv[], const struct spawn_opts *o)
{
        pid_t parent = getpid();
        pid_t pid = fork();
        if (pid != 0)
                return pid < 0 ? -errno : pid;
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        if (o && o->new_session)
                (void)setsid();
        if (o && o->deathsig) {
                (void)prctl(PR_SET_PDEATHSIG, o->deathsig);
                if (getppid() != parent)
                        _exit(127);
        }
        int out = o && o->out_fd >= 0 ? o->out_fd : r->devnull;
        int errfd = o && o->err_fd >= 0 ? o->err_fd : r->log_fd;
        if (dup2(r->devnull, 0) < 0 || dup2(out, 1) < 0 || dup2(errfd, 2) < 0)
                _exit(127);
        if (o && o->cwd && chdir(o->cwd) < 0)
                _exit(127);
        execv(argv[0], argv);
        dprintf(2, "%s: cannot run %s: %s\n", r->prog, argv[0], strerror(errno));
        _exit(127);
}

int wait_status(pid_t pid)
{
        int st;
        while (waitpid(pid, &st, 0) < 0)
                if (errno != EINTR)
                        return -errno;
        return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

void log_tail(struct bench_run *r, off_t from, char *buf, size_t size)
{
        char tmp[2048];
        off_t end = lseek(r->log_fd, 0, SEEK_END);
        if (end - from > (off_t)sizeof(tmp) - 1)
                from = end - (off_t)sizeof(tmp) + 1;
        ssize_t n = end > from ? pread(r->log_fd, tmp, (size_t)(end - from), from) : 0;
        tmp[n > 0 ? n : 0] = '\0';
        while (n > 0 && (tmp[n - 1] == '\n' || tmp[n - 1] == ' '))
                tmp[--n] = '\0';
        char *line = strrchr(tmp, '\n');
        snprintf(buf, size, "%s", line ? line + 1 : tmp);
}

int run_timed(struct bench_run *r, char *const argv[], const char *cwd, double *ret_ms, char *why, size_t size)
{
        off_t from = lseek(r->log_fd, 0, SEEK_END);
        struct spawn_opts o = {.cwd = cwd, .out_fd = -1, .err_fd = -1};
        uint64_t t0 = now_ns();
        pid_t pid = spawn(r, argv, &o);
        if (pid < 0) {
                snprintf(why, size, "cannot fork for %s: %s", argv[0], strerror(-pid));
                return pid;
        }
        int st = wait_status(pid);
        if (ret_ms)
                *ret_ms = ms_since(t0);
        if (st == 0)
                return 0;
        char said[512];
        log_tail(r, from, said, sizeof(said));
        /* name the tool and its verb, not our private paths: "crun create", "tessera assign" */
        const char *tool = strrchr(argv[0], '/'), *verb = "";
        for (size_t i = 1; argv[i] && !verb[0]; i++)
                if (argv[i][0] != '-' && !strchr(argv[i], '/'))
                        verb = argv[i];
        snprintf(why, size, "`%s%s%s` exited %d%s%s", tool ? tool + 1 : argv[0], verb[0] ? " " : "", verb, st,
                 said[0] ? ": " : "", said);
        return st < 0 ? st : -EIO;
}

int run_quiet(struct bench_run *r, char *const argv[])
{
        char why[64];
        return run_timed(r, argv, NULL, NULL, why, sizeof(why));
}

void capture_line(struct bench_run *r, char *const argv[], char *buf, size_t size)
{
        buf[0] = '\0';
        int p[2];
        if (pipe2(p, O_CLOEXEC) < 0)
                return;
        struct spawn_opts o = {.out_fd = p[1], .err_fd = r->devnull};
        pid_t pid = spawn(r, argv, &o);
        close(p[1]);
        size_t len = 0;
        ssize_t n;
        char chunk[512];
        while ((n = read(p[0], chunk, sizeof(chunk))) > 0)
                for (ssize_t i = 0; i < n; i++)
                        if (len + 1 < size)
                                buf[len++] = chunk[i];
        close(p[0]);
        buf[len] = '\0';
        buf[strcspn(buf, "\n")] = '\0';
        if (pid > 0 && wait_status(pid) != 0)
                buf[0] = '\0';
}

/* ---- small kernel facts ---- */

void read_loadavg(char *buf, size_t size)
{
        char all[128];
        double one, five, fifteen;
        if (read_file_at(AT_FDCWD, "/proc/loadavg", all, sizeof(all), NULL) < 0 ||
            sscanf(all, "%lf %lf %lf", &one, &five, &fifteen) != 3)
                snprintf(buf, size, "?");
        else
                snprintf(buf, size, "%.2f %.2f %.2f", one, five, fifteen);
}

unsigned long rss_kb(pid_t pid)
{
        char path[64], buf[4096];
        snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
        if (read_file_at(AT_FDCWD, path, buf, sizeof(buf), NULL) < 0)
                return 0;
        const char *p = strstr(buf, "VmRSS:");
        unsigned long kb = 0;
        if (p)
                sscanf(p, "VmRSS: %lu", &kb);
        return kb;
}

bool file_has_word(const char *path, const char *word)
{
        char buf[4096];
        if (read_file_at(AT_FDCWD, path, buf, sizeof(buf), NULL) < 0)
                return false;
        size_t wl = strlen(word);
        for (const char *p = buf; (p = strstr(p, word)); p += wl)
                if ((p == buf || p[-1] == ' ' || p[-1] == '\n') && (p[wl] == '\0' || p[wl] == ' ' || p[wl] == '\n'))
                        return true;
        return false;
}

int controller_hierarchy(const char *controller)
{
        _cleanup_fclose_ FILE *f = fopen("/proc/cgroups", "re");
        char name[64];
        int hier, ncg, enabled;
        if (!f)
                return -1;
        if (fscanf(f, "%*[^\n]\n") < 0)
                return -1;
        while (fscanf(f, "%63s %d %d %d\n", name, &hier, &ncg, &enabled) == 4)
                if (STREQ(name, controller))
                        return hier;
        return -1;
}

bool is_mountpoint(const char *path)
{
        struct stat st, parent;
        char up[PATH_MAX];
        snprintf(up, sizeof(up), "%s/..", path);
        return stat(path, &st) == 0 && stat(up, &parent) == 0 && st.st_dev != parent.st_dev;
}

void cgroup_tree_remove(const char *path)
{
        DIR *d = opendir(path);
        if (!d)
                return;
        struct dirent *de;
        while ((de = readdir(d)))
                if (de->d_type == DT_DIR && !STREQ(de->d_name, ".") && !STREQ(de->d_name, "..")) {
                        char sub[PATH_MAX];
                        snprintf(sub, sizeof(sub), "%s/%s", path, de->d_name);
                        cgroup_tree_remove(sub);
                }
        closedir(d);
        char procs[PATH_MAX];
        snprintf(procs, sizeof(procs), "%s/cgroup.procs", path);
        _cleanup_fclose_ FILE *f = fopen(procs, "re");
        int pid;
        while (f && fscanf(f, "%d", &pid) == 1)
                if (pid > 1)
                        (void)kill(pid, SIGKILL);
        /* a killed process leaves its cgroup only once reaped: give that a moment */
        for (int i = 0; i < 100 && rmdir(path) < 0 && errno == EBUSY; i++)
                sleep_ms(10);
}

void cgroup_remove_everywhere(const char *name)
{
        if (!name[0])
                return;
        DIR *d = opendir(CGROUP_FS);
        if (!d)
                return;
        struct dirent *de;
        while ((de = readdir(d)))
                if (de->d_name[0] != '.') {
                        char path[PATH_MAX];
                        snprintf(path, sizeof(path), CGROUP_FS "/%s/%s", de->d_name, name);
                        cgroup_tree_remove(path);
                }
        closedir(d);
        char path[PATH_MAX];
        snprintf(path, sizeof(path), CGROUP_FS "/%s", name);
        cgroup_tree_remove(path);
}

/* ---- a private tesserad ---- */

int daemon_connect(struct daemon *d, struct tessera_error *err)
{
        if (d->client)
                return 0;
        return tessera_client_connect(d->socket, &d->client, err);
}

void daemon_log_tail(struct daemon *d, char *buf, size_t size)
{
        char all[4096];
        buf[0] = '\0';
        int fd = open(d->log, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return;
        off_t end = lseek(fd, 0, SEEK_END);
        off_t from = end > (off_t)sizeof(all) - 1 ? end - (off_t)sizeof(all) + 1 : 0;
        ssize_t n = pread(fd, all, (size_t)(end - from), from);
        close(fd);
        all[n > 0 ? n : 0] = '\0';
        while (n > 0 && all[n - 1] == '\n')
                all[--n] = '\0';
        char *line = strrchr(all, '\n');
        snprintf(buf, size, "%s", line ? line + 1 : all);
}

int daemon_start(struct bench_run *r, struct daemon *d)
{
        char *argv[32];
        size_t n = 0;
        argv[n++] = r->tesserad;
        argv[n++] = "--state-dir";
        argv[n++] = d->state;
        argv[n++] = "--socket";
        argv[n++] = d->socket;
        argv[n++] = "--cgroup-root";
        argv[n++] = d->cgroup_root;
        argv[n++] = "--sync";
        argv[n++] = (char *)r->sync;
        for (const char *const *e = d->extra; e && *e && n < ELEMENTSOF(argv) - 1; e++)
                argv[n++] = (char *)*e;
        argv[n] = NULL;

        _cleanup_close_ int log = open(d->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (log < 0)
                return fatal(r, "cannot open %s: %s", d->log, strerror(errno));
        struct spawn_opts o = {.out_fd = log, .err_fd = log, .new_session = true, .deathsig = SIGTERM};
        pid_t pid = spawn(r, argv, &o);
        if (pid < 0)
                return fatal(r, "cannot fork for tesserad: %s", strerror(-pid));
        d->pid = pid;
        for (int tries = 0; tries < 1000; tries++) {
                if (daemon_connect(d, NULL) == 0) {
                        void *res = NULL;
                        if (tessera_client_call(d->client, "node", NULL, &res, NULL) == 0) {
                                json_decref(res);
                                return 0;
                        }
                        tessera_client_free(d->client);
                        d->client = NULL;
                }
                int st;
                if (waitpid(pid, &st, WNOHANG) == pid) {
                        d->pid = 0;
                        char said[512];
                        daemon_log_tail(d, said, sizeof(said));
                        return fatal(r, "tesserad (%s) exited at start: %s", d->tag, said);
                }
                sleep_ms(10);
        }
        return fatal(r, "tesserad (%s) did not answer on %s within 10 s (log: %s)", d->tag, d->socket, d->log);
}

void daemon_stop(struct daemon *d)
{
        tessera_client_free(d->client);
        d->client = NULL;
        if (d->pid <= 0)
                return;
        (void)kill(d->pid, SIGTERM);
        int st;
        for (int i = 0; i < 500; i++) {
                if (waitpid(d->pid, &st, WNOHANG) == d->pid) {
                        d->pid = 0;
                        return;
                }
                sleep_ms(10);
        }
        (void)kill(d->pid, SIGKILL);
        (void)waitpid(d->pid, &st, 0);
        d->pid = 0;
}

static void daemon_destroy_all(struct daemon *d)
{
        if (daemon_connect(d, NULL) < 0)
                return;
        void *res = NULL;
        if (tessera_client_call(d->client, "list", NULL, &res, NULL) < 0)
                return;
        size_t i;
        json_t *e;
        json_array_foreach((json_t *)res, i, e)
        {
                json_t *req = json_pack("{s:O}", "name", json_object_get(e, "name"));
                void *out = NULL;
                if (req && tessera_client_call(d->client, "destroy", req, &out, NULL) == 0)
                        json_decref(out);
                json_decref(req);
        }
        json_decref(res);
}

void daemon_cleanup(struct bench_run *r, struct daemon *d, bool destroy_enclaves)
{
        if (!d->state[0] || d->cleaned)
                return;
        if (destroy_enclaves) {
                if (d->pid <= 0 && access(d->state, F_OK) == 0) {
                        char keep[sizeof(r->fatal)];
                        memcpy(keep, r->fatal, sizeof(keep));
                        (void)daemon_start(r, d);
                        memcpy(r->fatal, keep, sizeof(keep));
                }
                if (d->pid > 0)
                        daemon_destroy_all(d);
        }
        daemon_stop(d);
        cgroup_remove_everywhere(d->cgroup_root);
        d->cleaned = true;
}

void daemon_init(struct bench_run *r, struct daemon *d, const char *tag, const char *const *extra)
{
        d->tag = tag;
        d->extra = extra;
        snprintf(d->state, sizeof(d->state), "%s/state-%s", r->tmp, tag);
        snprintf(d->socket, sizeof(d->socket), "%s/%s.sock", r->tmp, tag);
        snprintf(d->log, sizeof(d->log), "%s/tesserad-%s.log", r->tmp, tag);
        snprintf(d->cgroup_root, sizeof(d->cgroup_root), "tessera-bench-%s-%d", tag, (int)getpid());
}

/* ---- crun ---- */

void crun_env_init(struct crun_env *c)
{
        (void)find_tool("crun", c->bin, sizeof(c->bin));
        (void)find_tool("busybox", c->busybox, sizeof(c->busybox));
        const char *env = getenv("TESSERA_BENCH_PREPARE_CRUN");
        c->prepare = env && *env && !STREQ(env, "0");
}

static int copy_file(const char *from, const char *to, mode_t mode)
{
        _cleanup_close_ int in = open(from, O_RDONLY | O_CLOEXEC);
        _cleanup_close_ int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
        if (in < 0 || out < 0)
                return -errno;
        char buf[65536];
        ssize_t n;
        while ((n = read(in, buf, sizeof(buf))) > 0)
                if (write(out, buf, (size_t)n) != n)
                        return -EIO;
        return n < 0 ? -errno : 0;
}

/* The rootfs: busybox and the applets the benchmarks run. */
static int crun_rootfs(struct crun_env *c, char *why, size_t size)
{
        static const char *const dirs[] = {
                "", "/rootfs", "/rootfs/bin", "/rootfs/proc", "/rootfs/dev", "/rootfs/sys", "/rootfs/tmp"};
        static const char *const applets[] = {"true", "sh", "sleep"};
        char path[PATH_MAX + 64];
        for (size_t i = 0; i < ELEMENTSOF(dirs); i++) {
                snprintf(path, sizeof(path), "%s%s", c->bundle, dirs[i]);
                if (mkdir(path, 0755) < 0 && errno != EEXIST) {
                        snprintf(why, size, "cannot make %s: %s", path, strerror(errno));
                        return -1;
                }
        }
        if (mkdir(c->root, 0700) < 0 && errno != EEXIST) {
                snprintf(why, size, "cannot make %s: %s", c->root, strerror(errno));
                return -1;
        }
        snprintf(path, sizeof(path), "%s/rootfs/bin/busybox", c->bundle);
        int r = copy_file(c->busybox, path, 0755);
        if (r < 0) {
                snprintf(why, size, "cannot copy %s to %s: %s", c->busybox, path, strerror(-r));
                return -1;
        }
        for (size_t i = 0; i < ELEMENTSOF(applets); i++) {
                snprintf(path, sizeof(path), "%s/rootfs/bin/%s", c->bundle, applets[i]);
                (void)symlink("busybox", path);
        }
        return 0;
}

int crun_bundle_make(struct bench_run *r, struct crun_env *c, const char *const *args, char *why, size_t size)
{
        snprintf(c->bundle, sizeof(c->bundle), "%s/bundle", r->tmp);
        snprintf(c->root, sizeof(c->root), "%s/crun-state", r->tmp);
        snprintf(c->cgroup, sizeof(c->cgroup), "tessera-bench-crun-%d", (int)getpid());
        if (crun_rootfs(c, why, size) < 0)
                return -1;

        char *spec[] = {c->bin, "spec", NULL};
        if (run_timed(r, spec, c->bundle, NULL, why, size) < 0)
                return -1;
        char path[PATH_MAX + 64];
        snprintf(path, sizeof(path), "%s/config.json", c->bundle);
        json_error_t jerr;
        json_t *cfg = json_load_file(path, 0, &jerr);
        json_t *process = cfg ? json_object_get(cfg, "process") : NULL;
        json_t *linux_ = cfg ? json_object_get(cfg, "linux") : NULL;
        json_t *argv = json_array();
        if (!process || !linux_ || !argv) {
                snprintf(why, size, "%s: %s", path, cfg ? "no process or linux object" : jerr.text);
                json_decref(argv);
                json_decref(cfg);
                return -1;
        }
        for (const char *const *a = args; *a; a++)
                json_array_append_new(argv, json_string(*a));
        char cgpath[96];
        snprintf(cgpath, sizeof(cgpath), "/%s", c->cgroup);
        json_object_set_new(process, "terminal", json_false());
        json_object_set_new(process, "args", argv);
        /* a known cgroup path, so a crun that fails half-way leaves nothing we cannot find */
        json_object_set_new(linux_, "cgroupsPath", json_string(cgpath));
        int res = json_dump_file(cfg, path, JSON_INDENT(2));
        json_decref(cfg);
        if (res < 0) {
                snprintf(why, size, "cannot write %s", path);
                return -1;
        }
        return 0;
}

void hugetlb_mount(struct crun_env *c)
{
        if (!file_has_word(CGROUP_FS "/unified/cgroup.controllers", "hugetlb") || is_mountpoint(HUGETLB_V1)) {
                snprintf(c->hugetlb_note, sizeof(c->hugetlb_note),
                         "--prepare-crun: nothing to do, the v2 hierarchy holds no hugetlb here");
                return;
        }
        if (mkdir(HUGETLB_V1, 0755) == 0)
                c->hugetlb_dir_made = true;
        else if (errno != EEXIST) {
                snprintf(c->hugetlb_note, sizeof(c->hugetlb_note), "could not make %s: %s", HUGETLB_V1,
                         strerror(errno));
                return;
        }
        if (mount("cgroup", HUGETLB_V1, "cgroup", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hugetlb") < 0) {
                snprintf(c->hugetlb_note, sizeof(c->hugetlb_note), "could not mount a v1 hugetlb hierarchy: %s",
                         strerror(errno));
                if (c->hugetlb_dir_made && rmdir(HUGETLB_V1) == 0)
                        c->hugetlb_dir_made = false;
                return;
        }
        c->hugetlb_mounted = true;
        snprintf(c->hugetlb_note, sizeof(c->hugetlb_note),
                 "--prepare-crun: mounted a v1 hugetlb hierarchy at " HUGETLB_V1 " for the crun section");
}

static bool hugetlb_back_on_v2(unsigned wait_ms)
{
        for (unsigned waited = 0;; waited += 10) {
                if (controller_hierarchy("hugetlb") == 0)
                        return true;
                if (waited >= wait_ms)
                        return false;
                sleep_ms(10);
        }
}

/*
 * An unmounted v1 hierarchy is freed asynchronously, and not at all while it
 * still has (dying) child cgroups: then hugetlb stays off v2.  So wait, and
 * if it is still held, mount it again once the children are gone and unmount
 * it empty.  Remounting sooner would only make a new hierarchy each time.
 */
void hugetlb_unmount(struct crun_env *c)
{
        if (!c->hugetlb_mounted)
                return;
        char crun_dir[PATH_MAX];
        snprintf(crun_dir, sizeof(crun_dir), HUGETLB_V1 "/%s", c->cgroup);
        cgroup_tree_remove(crun_dir);
        bool back = false;
        for (int attempt = 0; attempt < 5 && !back; attempt++) {
                if (attempt > 0 &&
                    mount("cgroup", HUGETLB_V1, "cgroup", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hugetlb") < 0)
                        break;
                if (umount2(HUGETLB_V1, 0) < 0)
                        break;
                back = hugetlb_back_on_v2(1000);
        }
        c->hugetlb_mounted = false; /* tried once: a second try at exit would only repeat the note */
        if (!is_mountpoint(HUGETLB_V1) && c->hugetlb_dir_made && rmdir(HUGETLB_V1) == 0)
                c->hugetlb_dir_made = false;
        size_t len = strlen(c->hugetlb_note);
        snprintf(c->hugetlb_note + len, sizeof(c->hugetlb_note) - len, "%s",
                 back ? "; unmounted after it: hugetlb is back on the v2 hierarchy"
                      : "; WARNING: could not give hugetlb back to the v2 hierarchy (see /proc/cgroups)");
}

int crun_cmd(struct bench_run *r, struct crun_env *c, const char *verb, const char *const *opts, const char *id,
             const char *const *tail, double *ms, char *why, size_t size)
{
        char *argv[24];
        size_t n = 0;
        argv[n++] = c->bin;
        argv[n++] = "--root";
        argv[n++] = c->root;
        argv[n++] = (char *)verb;
        if (STREQ(verb, "create") || STREQ(verb, "run")) {
                argv[n++] = "--bundle";
                argv[n++] = c->bundle;
        } else if (STREQ(verb, "delete")) {
                argv[n++] = "--force";
        }
        for (; opts && *opts && n < ELEMENTSOF(argv) - 8; opts++)
                argv[n++] = (char *)*opts;
        argv[n++] = (char *)id;
        for (; tail && *tail && n < ELEMENTSOF(argv) - 1; tail++)
                argv[n++] = (char *)*tail;
        argv[n] = NULL;
        return run_timed(r, argv, NULL, ms, why, size);
}

void crun_env_cleanup(struct bench_run *r, struct crun_env *c)
{
        if (c->live[0]) {
                char why[512];
                (void)crun_cmd(r, c, "delete", NULL, c->live, NULL, NULL, why, sizeof(why));
                c->live[0] = '\0';
        }
        cgroup_remove_everywhere(c->cgroup);
        hugetlb_unmount(c);
}

/* ---- the report ---- */

void fmt_cell(struct bench_run *r, const struct samples *s, char *buf, size_t size)
{
        if (s->failed[0]) {
                size_t no = 0;
                while (no < r->n_reasons && !STREQ(r->reasons[no], s->failed))
                        no++;
                if (no == r->n_reasons && no < ELEMENTSOF(r->reasons)) {
                        r->reasons[r->n_reasons++] = s->failed;
                        note(r, "[%zu] %s\n", no + 1, s->failed);
                }
                snprintf(buf, size, "n/a [%zu]", no + 1);
        } else if (s->n == 0) {
                snprintf(buf, size, "-");
        } else {
                snprintf(buf, size, "%.3f (%.3f)", median(s), p90(s));
        }
}

void fmt_ratio(double num, double den, char *buf, size_t size)
{
        if (isnan(num) || isnan(den) || den <= 0)
                snprintf(buf, size, "-");
        else
                snprintf(buf, size, "%.1fx", num / den);
}

const char *verdict(bool ok)
{
        return ok ? "PASS" : "MISS";
}

static const char *fs_name(const char *path)
{
        struct statfs sf;
        if (statfs(path, &sf) < 0)
                return "?";
        switch ((unsigned long)sf.f_type) {
        case 0xEF53: return "ext4";
        case 0x01021994: return "tmpfs (fsync is free: durable figures are flattered)";
        case 0x58465342: return "xfs";
        case 0x9123683E: return "btrfs";
        default: return "other";
        }
}

void print_run_header(struct bench_run *r, const char *title, const char *load_start, const char *load_end)
{
        char model[256] = "?", buf[8192];
        if (read_file_at(AT_FDCWD, "/proc/cpuinfo", buf, sizeof(buf), NULL) >= 0) {
                const char *p = strstr(buf, "model name");
                if (p && (p = strchr(p, ':')))
                        snprintf(model, sizeof(model), "%.*s", (int)strcspn(p + 2, "\n"), p + 2);
        }
        struct utsname u;
        uname(&u);
        char commit[64] = "", dirty[256] = "";
        if (r->git[0]) {
                char *rev[] = {r->git, "-C", r->source, "rev-parse", "--short", "HEAD", NULL};
                char *st[] = {r->git, "-C", r->source, "status", "--porcelain", "--untracked-files=no", NULL};
                capture_line(r, rev, commit, sizeof(commit));
                capture_line(r, st, dirty, sizeof(dirty));
        }
        time_t now = time(NULL);
        char date[64];
        strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S UTC", gmtime(&now));

        printf("# %s (bench/%s), %s\n", title, r->prog, date);
        printf("# hardware: %ld CPUs, %s\n", sysconf(_SC_NPROCESSORS_ONLN), model);
        printf("# kernel:   %s\n", u.release);
        printf("# load:     %s at start, %s at the end (1/5/15 min; %ld CPUs)\n", load_start, load_end,
               sysconf(_SC_NPROCESSORS_ONLN));
        printf("# commit:   %s%s\n", commit[0] ? commit : "unknown (no git)",
               dirty[0] ? " (working tree has uncommitted changes)" : "");
        printf("# tesserad: --sync %s; state on %s; %s\n", r->sync, fs_name(r->tmp), r->tesserad);
}
