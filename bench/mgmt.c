/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * bench/mgmt: how long Tessera's management operations take on this machine,
 * next to the tools a user would otherwise reach for (cgroup-tools, crun,
 * ip link), all measured in one run, with Pisces' published figures as fixed
 * references.  It starts its own tesserad (private state dir, socket and
 * cgroup root, all named with this process's pid) and undoes everything it
 * made before it exits, also when a step fails or it is interrupted.
 * See bench/README.md.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <net/if.h>
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

#include "tessera-build.h"
#include "util.h"

/* Pisces (Ouyang, Kocoloski, Lange, Pedretti: "Achieving Performance Isolation with Lightweight
 * Co-Kernels", HPDC 2015), its published management latencies in ms. */
#define PISCES_CORE_MS 33.74
#define PISCES_MEM_MS  82.66
#define PISCES_NIC_MS  118.98
#define TARGET_SPEEDUP 30.0
#define LIST_TARGET_MS 5.0
#define RSS_TARGET_KB  (10 * 1024)

#define LEDGER_ENCLAVES 252
#define CGROUP_FS       "/sys/fs/cgroup"
#define HUGETLB_V1      CGROUP_FS "/hugetlb"

/* ---- samples and their statistics ---- */

struct samples {
        double *ms;
        size_t n, cap;
        char failed[256]; /* why this could not be measured; "" when it could */
};

static void samples_add(struct samples *s, double ms)
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

static void samples_fail(struct samples *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void samples_fail(struct samples *s, const char *fmt, ...)
{
        if (s->failed[0])
                return; /* the first reason is the one worth reading */
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(s->failed, sizeof(s->failed), fmt, ap);
        va_end(ap);
}

static int cmp_double(const void *a, const void *b)
{
        double x = *(const double *)a, y = *(const double *)b;
        return (x > y) - (x < y);
}

/* q = 0.5 is the median (mean of the middle two when n is even); otherwise the nearest rank. */
static double quantile_of(const double *ms, size_t n, double q)
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

static double median(const struct samples *s)
{
        return s->failed[0] ? NAN : quantile_of(s->ms, s->n, 0.5);
}

static double p90(const struct samples *s)
{
        return s->failed[0] ? NAN : quantile_of(s->ms, s->n, 0.9);
}

/* ---- what is measured ---- */

enum op {
        OP_CREATE,
        OP_ADD_CORE,
        OP_DEL_CORE,
        OP_ADD_MEM,
        OP_DEL_MEM,
        OP_ADD_NIC,
        OP_DEL_NIC,
        OP_DESTROY,
        OP_CREATE_DESTROY, /* derived: create + destroy of the same iteration */
        OP_LIST,
        _OP_MAX,
};

enum peer {
        PEER_SPAWN,
        CG_CREATE,
        CG_ADD_CORE,
        CG_DEL_CORE,
        CG_ADD_MEM,
        CG_DEL_MEM,
        CG_DELETE,
        CG_CREATE_DELETE,
        IP_ADD_NIC,
        IP_DEL_NIC,
        CRUN_CREATE,
        CRUN_DELETE,
        CRUN_CREATE_DELETE,
        CRUN_RUN,
        _PEER_MAX,
};

/*
 * A process's time on a CPU and waiting on a run queue, in ns, from
 * /proc/PID/schedstat: what the daemon itself spent on a call, apart from
 * what it waited for (the disk, the kernel, a CPU busy with other work).
 */
struct sched_times {
        uint64_t on_cpu, waiting;
};

static bool sched_times_read(pid_t pid, struct sched_times *ret)
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

/* What one API call cost: wall time at the client, and the daemon's own CPU and run-queue wait. */
struct op_cost {
        double wall, cpu, wait; /* ms; cpu and wait are NAN when schedstat is unreadable */
};

struct daemon {
        const char *tag;
        pid_t pid;
        char state[PATH_MAX], socket[PATH_MAX], log[PATH_MAX], cgroup_root[64];
        const char *const *extra; /* flags after the common ones */
        struct tessera_client *client;
        bool cleaned;
};

struct bench {
        /* options */
        char build[PATH_MAX], source[PATH_MAX], topology[PATH_MAX];
        const char *sync;
        unsigned iterations, crun_iterations;
        bool prepare_crun;
        /* tools, absolute paths ("" when missing) */
        char tesserad[PATH_MAX], tessera[PATH_MAX], ip[PATH_MAX], nsenter[PATH_MAX], unshare[PATH_MAX],
                cgcreate[PATH_MAX], cgset[PATH_MAX], cgdelete[PATH_MAX], crun[PATH_MAX], busybox[PATH_MAX],
                true_bin[PATH_MAX], git[PATH_MAX];
        /* everything below is owned and undone by bench_cleanup() */
        char tmp[PATH_MAX];
        int log_fd, devnull;
        struct daemon main, ledger;
        char veth[IFNAMSIZ], veth_peer[IFNAMSIZ];
        bool veth_made;
        pid_t sleeper;
        char cg_group[64];
        bool cg_made;
        char crun_root[PATH_MAX], crun_bundle[PATH_MAX], crun_cgroup[64], crun_live[64];
        bool hugetlb_mounted, hugetlb_dir_made;
        /* results */
        struct samples api[_OP_MAX], cli[_OP_MAX], peer[_PEER_MAX];
        struct samples api_cpu[_OP_MAX], api_wait[_OP_MAX]; /* tesserad's own share of each API call */
        char peer_label[_PEER_MAX][64];
        struct samples ledger_create, ledger_cpu, ledger_list_api, ledger_list_cli;
        unsigned long rss_start_kb, rss_end_kb, ledger_rss_kb;
        char load_start[64], load_end[64]; /* /proc/loadavg: other work on the machine skews everything */
        char fatal[512], notes[8192], hugetlb_note[256];
        const char *reasons[32]; /* distinct reasons of n/a cells, numbered from 1 in the notes */
        size_t n_reasons;
        bool interrupted;
        struct op_cost last; /* of the last API call */
};

static void note(struct bench *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(struct bench *b, const char *fmt, ...)
{
        size_t len = strlen(b->notes);
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(b->notes + len, sizeof(b->notes) - len, fmt, ap);
        va_end(ap);
}

static int fatal(struct bench *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fatal(struct bench *b, const char *fmt, ...)
{
        if (!b->fatal[0]) {
                va_list ap;
                va_start(ap, fmt);
                vsnprintf(b->fatal, sizeof(b->fatal), fmt, ap);
                va_end(ap);
        }
        return -1;
}

static void sleep_ms(unsigned ms)
{
        struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

static double ms_since(uint64_t t0)
{
        return (double)(now_ns() - t0) / 1e6;
}

/*
 * SIGINT, SIGTERM and SIGHUP stay blocked and are polled between steps, so an
 * interruption never lands in the middle of an operation whose undo we need.
 */
static bool interrupted(struct bench *b)
{
        sigset_t pending;
        if (!b->interrupted && sigpending(&pending) == 0 &&
            (sigismember(&pending, SIGINT) || sigismember(&pending, SIGTERM) || sigismember(&pending, SIGHUP)))
                b->interrupted = true;
        return b->interrupted;
}

/* ---- running programs ---- */

static bool find_tool(const char *name, char *buf, size_t size)
{
        /* PATH first, then the usual system directories (sudo and cron trim PATH) */
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

struct spawn_opts {
        const char *cwd;
        int out_fd;       /* stdout; -1: /dev/null */
        int err_fd;       /* stderr; -1: the command log */
        bool new_session; /* out of the terminal's process group: a ^C must not reach a daemon before its undo */
        int deathsig;     /* sent to the child if this process dies without cleaning up */
};

static pid_t spawn(struct bench *b, char *const argv[], const struct spawn_opts *o)
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
        int out = o && o->out_fd >= 0 ? o->out_fd : b->devnull;
        int errfd = o && o->err_fd >= 0 ? o->err_fd : b->log_fd;
        if (dup2(b->devnull, 0) < 0 || dup2(out, 1) < 0 || dup2(errfd, 2) < 0)
                _exit(127);
        if (o && o->cwd && chdir(o->cwd) < 0)
                _exit(127);
        execv(argv[0], argv);
        dprintf(2, "mgmt: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
}

/* Exit status (0-255, 128+N for signal N), or a negative errno. */
static int wait_status(pid_t pid)
{
        int st;
        while (waitpid(pid, &st, 0) < 0)
                if (errno != EINTR)
                        return -errno;
        return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* The last line the command log got since `from`: what a failing tool said. */
static void log_tail(struct bench *b, off_t from, char *buf, size_t size)
{
        char tmp[2048];
        off_t end = lseek(b->log_fd, 0, SEEK_END);
        if (end - from > (off_t)sizeof(tmp) - 1)
                from = end - (off_t)sizeof(tmp) + 1;
        ssize_t n = end > from ? pread(b->log_fd, tmp, (size_t)(end - from), from) : 0;
        tmp[n > 0 ? n : 0] = '\0';
        while (n > 0 && (tmp[n - 1] == '\n' || tmp[n - 1] == ' '))
                tmp[--n] = '\0';
        char *line = strrchr(tmp, '\n');
        snprintf(buf, size, "%s", line ? line + 1 : tmp);
}

/*
 * Runs argv (argv[0] absolute) to completion like a shell would (fork, exec,
 * wait), stdout to /dev/null; *ret_ms is the wall time from fork to reaping.
 * On failure `why` says which tool and what it printed last.
 */
static int run_timed(struct bench *b, char *const argv[], const char *cwd, double *ret_ms, char *why, size_t size)
{
        off_t from = lseek(b->log_fd, 0, SEEK_END);
        struct spawn_opts o = {.cwd = cwd, .out_fd = -1, .err_fd = -1};
        uint64_t t0 = now_ns();
        pid_t pid = spawn(b, argv, &o);
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
        log_tail(b, from, said, sizeof(said));
        /* name the tool and its verb, not our private paths: "crun create", "tessera assign" */
        const char *tool = strrchr(argv[0], '/'), *verb = "";
        for (size_t i = 1; argv[i] && !verb[0]; i++)
                if (argv[i][0] != '-' && !strchr(argv[i], '/'))
                        verb = argv[i];
        snprintf(why, size, "`%s%s%s` exited %d%s%s", tool ? tool + 1 : argv[0], verb[0] ? " " : "", verb, st,
                 said[0] ? ": " : "", said);
        return st < 0 ? st : -EIO;
}

static int run_quiet(struct bench *b, char *const argv[])
{
        char why[64];
        return run_timed(b, argv, NULL, NULL, why, sizeof(why));
}

/* First line of a command's stdout, or "" (for versions and the commit). */
static void capture_line(struct bench *b, char *const argv[], char *buf, size_t size)
{
        buf[0] = '\0';
        int p[2];
        if (pipe2(p, O_CLOEXEC) < 0)
                return;
        struct spawn_opts o = {.out_fd = p[1], .err_fd = b->devnull};
        pid_t pid = spawn(b, argv, &o);
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

static void read_loadavg(char *buf, size_t size)
{
        char all[128];
        double one, five, fifteen;
        if (read_file_at(AT_FDCWD, "/proc/loadavg", all, sizeof(all), NULL) < 0 ||
            sscanf(all, "%lf %lf %lf", &one, &five, &fifteen) != 3)
                snprintf(buf, size, "?");
        else
                snprintf(buf, size, "%.2f %.2f %.2f", one, five, fifteen);
}

static unsigned long rss_kb(pid_t pid)
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

static bool file_has_word(const char *path, const char *word)
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

/* The hierarchy id /proc/cgroups gives a controller: 0 means the v2 (default) hierarchy. */
static int controller_hierarchy(const char *controller)
{
        _cleanup_fclose_ FILE *f = fopen("/proc/cgroups", "re");
        char name[64];
        int hier, ncg, enabled;
        if (!f)
                return -1;
        fscanf(f, "%*[^\n]\n");
        while (fscanf(f, "%63s %d %d %d\n", name, &hier, &ncg, &enabled) == 4)
                if (STREQ(name, controller))
                        return hier;
        return -1;
}

static bool is_mountpoint(const char *path)
{
        struct stat st, parent;
        char up[PATH_MAX];
        snprintf(up, sizeof(up), "%s/..", path);
        return stat(path, &st) == 0 && stat(up, &parent) == 0 && st.st_dev != parent.st_dev;
}

/* Kills what runs in a cgroup directory tree we made, then removes the tree (deepest first). */
static void cgroup_tree_remove(const char *path)
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

/* `name` under every v1 controller and at the v2 root. */
static void cgroup_remove_everywhere(const char *name)
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

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
        (void)st;
        (void)flag;
        (void)ftw;
        (void)remove(path);
        return 0;
}

/* ---- tesserad ---- */

static int daemon_connect(struct daemon *d, struct tessera_error *err)
{
        if (d->client)
                return 0;
        return tessera_client_connect(d->socket, &d->client, err);
}

static void daemon_log_tail(struct daemon *d, char *buf, size_t size)
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

/* Starts tesserad with this daemon's private paths and waits until it answers `node`. */
static int daemon_start(struct bench *b, struct daemon *d)
{
        char *argv[32];
        size_t n = 0;
        argv[n++] = b->tesserad;
        argv[n++] = "--state-dir";
        argv[n++] = d->state;
        argv[n++] = "--socket";
        argv[n++] = d->socket;
        argv[n++] = "--cgroup-root";
        argv[n++] = d->cgroup_root;
        argv[n++] = "--sync";
        argv[n++] = (char *)b->sync;
        for (const char *const *e = d->extra; e && *e && n < ELEMENTSOF(argv) - 1; e++)
                argv[n++] = (char *)*e;
        argv[n] = NULL;

        _cleanup_close_ int log = open(d->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (log < 0)
                return fatal(b, "cannot open %s: %s", d->log, strerror(errno));
        struct spawn_opts o = {.out_fd = log, .err_fd = log, .new_session = true, .deathsig = SIGTERM};
        pid_t pid = spawn(b, argv, &o);
        if (pid < 0)
                return fatal(b, "cannot fork for tesserad: %s", strerror(-pid));
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
                        return fatal(b, "tesserad (%s) exited at start: %s", d->tag, said);
                }
                sleep_ms(10);
        }
        return fatal(b, "tesserad (%s) did not answer on %s within 10 s (log: %s)", d->tag, d->socket, d->log);
}

static void daemon_stop(struct daemon *d)
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

/*
 * Leaves nothing of a daemon behind: its enclaves destroyed (restarting it on
 * its state when it died, as its enclaves outlive it), the daemon stopped, and
 * whatever is still in its cgroup root killed and removed.
 */
static void daemon_cleanup(struct bench *b, struct daemon *d, bool destroy_enclaves)
{
        if (!d->state[0] || d->cleaned)
                return;
        if (destroy_enclaves) {
                if (d->pid <= 0 && access(d->state, F_OK) == 0) {
                        char keep[sizeof(b->fatal)];
                        memcpy(keep, b->fatal, sizeof(keep));
                        (void)daemon_start(b, d);
                        memcpy(b->fatal, keep, sizeof(keep));
                }
                if (d->pid > 0)
                        daemon_destroy_all(d);
        }
        daemon_stop(d);
        cgroup_remove_everywhere(d->cgroup_root);
        d->cleaned = true;
}

static void daemon_init(struct bench *b, struct daemon *d, const char *tag, const char *const *extra)
{
        d->tag = tag;
        d->extra = extra;
        snprintf(d->state, sizeof(d->state), "%s/state-%s", b->tmp, tag);
        snprintf(d->socket, sizeof(d->socket), "%s/%s.sock", b->tmp, tag);
        snprintf(d->log, sizeof(d->log), "%s/tesserad-%s.log", b->tmp, tag);
        snprintf(d->cgroup_root, sizeof(d->cgroup_root), "tessera-bench-%s-%d", tag, (int)getpid());
}

/* ---- Tessera operations, through the API and through the CLI ---- */

static const char *const op_verb[_OP_MAX] = {
        [OP_CREATE] = "create",   [OP_ADD_CORE] = "assign", [OP_DEL_CORE] = "release",
        [OP_ADD_MEM] = "assign",  [OP_DEL_MEM] = "release", [OP_ADD_NIC] = "assign",
        [OP_DEL_NIC] = "release", [OP_DESTROY] = "destroy", [OP_LIST] = "list",
};

static const char *const op_name[_OP_MAX] = {
        [OP_CREATE] = "create",          [OP_ADD_CORE] = "add one core",  [OP_DEL_CORE] = "remove one core",
        [OP_ADD_MEM] = "add 128 MiB",    [OP_DEL_MEM] = "remove 128 MiB", [OP_ADD_NIC] = "add a NIC",
        [OP_DEL_NIC] = "remove the NIC", [OP_DESTROY] = "destroy",        [OP_LIST] = "list (2 enclaves)",
};

static json_t *op_request(struct bench *b, enum op op, const char *name)
{
        switch (op) {
        case OP_CREATE:
                return json_pack("{s:{s:s, s:i, s:s, s:[s]}}", "spec", "name", name, "cpus", 1, "memory", "128M",
                                 "namespaces", "net");
        case OP_ADD_CORE:
        case OP_DEL_CORE: return json_pack("{s:s, s:s}", "name", name, "cpus", "1");
        case OP_ADD_MEM:
        case OP_DEL_MEM: return json_pack("{s:s, s:s}", "name", name, "memory", "128M");
        case OP_ADD_NIC:
        case OP_DEL_NIC: return json_pack("{s:s, s:s}", "name", name, "device", b->veth);
        case OP_DESTROY: return json_pack("{s:s}", "name", name);
        default: return json_object();
        }
}

/* argv of the `tessera` command a user would type for `op`; the strings live in b and name. */
static void op_argv(struct bench *b, struct daemon *d, enum op op, char *name, char *argv[16])
{
        size_t n = 0;
        argv[n++] = b->tessera;
        argv[n++] = "--socket";
        argv[n++] = d->socket;
        argv[n++] = (char *)op_verb[op];
        switch (op) {
        case OP_CREATE:
                argv[n++] = "--name";
                argv[n++] = name;
                argv[n++] = "--cpus";
                argv[n++] = "1";
                argv[n++] = "--memory";
                argv[n++] = "128M";
                argv[n++] = "--namespaces";
                argv[n++] = "net";
                break;
        case OP_ADD_CORE:
        case OP_DEL_CORE:
                argv[n++] = name;
                argv[n++] = "--cpus";
                argv[n++] = "1";
                break;
        case OP_ADD_MEM:
        case OP_DEL_MEM:
                argv[n++] = name;
                argv[n++] = "--memory";
                argv[n++] = "128M";
                break;
        case OP_ADD_NIC:
        case OP_DEL_NIC:
                argv[n++] = name;
                argv[n++] = "--device";
                argv[n++] = b->veth;
                break;
        case OP_DESTROY: argv[n++] = name; break;
        default: break;
        }
        argv[n] = NULL;
}

/* API: only tessera_client_call is timed (the request object is built before). */
static int tessera_op(struct bench *b, struct daemon *d, bool cli, enum op op, const char *name, double *ret_ms,
                      char *why, size_t size)
{
        char namebuf[64];
        snprintf(namebuf, sizeof(namebuf), "%s", name);
        if (cli) {
                char *argv[16];
                op_argv(b, d, op, namebuf, argv);
                return run_timed(b, argv, NULL, ret_ms, why, size);
        }
        struct tessera_error err = {0};
        int r = daemon_connect(d, &err);
        if (r < 0) {
                snprintf(why, size, "%s", err.msg);
                return r;
        }
        json_t *req = op_request(b, op, namebuf);
        void *res = NULL;
        struct sched_times s0, s1;
        bool have = sched_times_read(d->pid, &s0);
        uint64_t t0 = now_ns();
        r = tessera_client_call(d->client, op_verb[op], req, &res, &err);
        *ret_ms = ms_since(t0);
        have = have && sched_times_read(d->pid, &s1);
        b->last.wall = *ret_ms;
        b->last.cpu = have ? (double)(s1.on_cpu - s0.on_cpu) / 1e6 : NAN;
        b->last.wait = have ? (double)(s1.waiting - s0.waiting) / 1e6 : NAN;
        json_decref(req);
        json_decref(res);
        if (r < 0)
                snprintf(why, size, "%s: %s", op_verb[op], err.msg);
        return r;
}

static void record_cost(struct bench *b, bool cli, enum op op, const struct op_cost *c)
{
        if (cli || isnan(c->cpu))
                return;
        samples_add(&b->api_cpu[op], c->cpu);
        samples_add(&b->api_wait[op], c->wait);
}

/*
 * One enclave's life: create, a core in and out, 128 MiB in and out, the NIC
 * in and out, destroy.  A failing change is reported on its row and skipped
 * from then on; a failing create or destroy ends the run.
 */
static int tessera_sequence(struct bench *b, bool cli, unsigned iter, bool record)
{
        struct samples *s = cli ? b->cli : b->api;
        char name[32], why[512];
        double ms[_OP_MAX] = {0};
        struct op_cost cost[_OP_MAX];
        snprintf(name, sizeof(name), "%s%u", cli ? "cli" : "api", iter);
        if (tessera_op(b, &b->main, cli, OP_CREATE, name, &ms[OP_CREATE], why, sizeof(why)) < 0)
                return fatal(b, "Tessera %s create: %s", cli ? "CLI" : "API", why);
        cost[OP_CREATE] = b->last;

        static const enum op pairs[][2] = {
                {OP_ADD_CORE, OP_DEL_CORE}, {OP_ADD_MEM, OP_DEL_MEM}, {OP_ADD_NIC, OP_DEL_NIC}};
        for (size_t i = 0; i < ELEMENTSOF(pairs); i++) {
                enum op add = pairs[i][0], del = pairs[i][1];
                if (s[add].failed[0])
                        continue;
                if (tessera_op(b, &b->main, cli, add, name, &ms[add], why, sizeof(why)) < 0) {
                        samples_fail(&s[add], "%s", why);
                        samples_fail(&s[del], "nothing to remove: the add failed");
                        continue;
                }
                cost[add] = b->last;
                if (!s[del].failed[0] && tessera_op(b, &b->main, cli, del, name, &ms[del], why, sizeof(why)) < 0)
                        samples_fail(&s[del], "%s", why);
                cost[del] = b->last;
                if (record) {
                        samples_add(&s[add], ms[add]);
                        samples_add(&s[del], ms[del]);
                        record_cost(b, cli, add, &cost[add]);
                        record_cost(b, cli, del, &cost[del]);
                }
        }

        if (tessera_op(b, &b->main, cli, OP_DESTROY, name, &ms[OP_DESTROY], why, sizeof(why)) < 0)
                return fatal(b, "Tessera %s destroy: %s", cli ? "CLI" : "API", why);
        cost[OP_DESTROY] = b->last;
        if (record) {
                record_cost(b, cli, OP_CREATE, &cost[OP_CREATE]);
                record_cost(b, cli, OP_DESTROY, &cost[OP_DESTROY]);
                samples_add(&s[OP_CREATE], ms[OP_CREATE]);
                samples_add(&s[OP_DESTROY], ms[OP_DESTROY]);
                samples_add(&s[OP_CREATE_DESTROY], ms[OP_CREATE] + ms[OP_DESTROY]);
        }
        return 0;
}

static int make_veth(struct bench *b)
{
        snprintf(b->veth, sizeof(b->veth), "tbm%d", (int)getpid());
        snprintf(b->veth_peer, sizeof(b->veth_peer), "tbm%dp", (int)getpid());
        char why[512];
        char *argv[] = {b->ip, "link", "add", b->veth, "type", "veth", "peer", "name", b->veth_peer, NULL};
        if (!b->ip[0])
                snprintf(why, sizeof(why), "`ip` (iproute2) is not installed");
        else if (run_timed(b, argv, NULL, NULL, why, sizeof(why)) == 0) {
                b->veth_made = true;
                return 0;
        }
        samples_fail(&b->api[OP_ADD_NIC], "no veth pair: %s", why);
        samples_fail(&b->api[OP_DEL_NIC], "no veth pair: %s", why);
        samples_fail(&b->cli[OP_ADD_NIC], "no veth pair: %s", why);
        samples_fail(&b->cli[OP_DEL_NIC], "no veth pair: %s", why);
        samples_fail(&b->peer[IP_ADD_NIC], "no veth pair: %s", why);
        samples_fail(&b->peer[IP_DEL_NIC], "no veth pair: %s", why);
        return -1;
}

static int bench_tessera(struct bench *b)
{
        fprintf(stderr, "mgmt: Tessera: create, cores, memory, NIC, destroy (%u iterations, API and CLI)\n",
                b->iterations);
        if (daemon_start(b, &b->main) < 0)
                return -1;
        b->rss_start_kb = rss_kb(b->main.pid);
        /* one unrecorded pass each: page cache, SQLite's first pages, the supervisor binary */
        if (tessera_sequence(b, false, 0, false) < 0 || tessera_sequence(b, true, 0, false) < 0)
                return -1;
        for (unsigned i = 1; i <= b->iterations && !interrupted(b); i++) {
                /* alternate which goes first, so a slow drift of the machine hits both alike */
                bool cli_first = i % 2;
                if (tessera_sequence(b, cli_first, i, true) < 0 || tessera_sequence(b, !cli_first, i, true) < 0)
                        return -1;
        }
        return 0;
}

/* `list` with two enclaves, then the daemon's RSS after everything it did. */
static int bench_list(struct bench *b)
{
        fprintf(stderr, "mgmt: Tessera: list with 2 enclaves\n");
        char why[512];
        double ms;
        for (int i = 1; i <= 2; i++) {
                char name[16];
                snprintf(name, sizeof(name), "list%d", i);
                if (tessera_op(b, &b->main, false, OP_CREATE, name, &ms, why, sizeof(why)) < 0)
                        return fatal(b, "creating enclave '%s' for the list: %s", name, why);
        }
        for (unsigned i = 0; i <= b->iterations && !interrupted(b); i++) {
                double api_ms, cli_ms;
                if (tessera_op(b, &b->main, false, OP_LIST, "", &api_ms, why, sizeof(why)) < 0) {
                        samples_fail(&b->api[OP_LIST], "%s", why);
                        break;
                }
                if (i > 0)
                        record_cost(b, false, OP_LIST, &b->last);
                if (tessera_op(b, &b->main, true, OP_LIST, "", &cli_ms, why, sizeof(why)) < 0) {
                        samples_fail(&b->cli[OP_LIST], "%s", why);
                        break;
                }
                if (i > 0) {
                        samples_add(&b->api[OP_LIST], api_ms);
                        samples_add(&b->cli[OP_LIST], cli_ms);
                }
        }
        b->rss_end_kb = rss_kb(b->main.pid);
        for (int i = 1; i <= 2; i++) {
                char name[16];
                snprintf(name, sizeof(name), "list%d", i);
                if (tessera_op(b, &b->main, false, OP_DESTROY, name, &ms, why, sizeof(why)) < 0)
                        return fatal(b, "destroying enclave '%s': %s", name, why);
        }
        return 0;
}

/* 252 one-core enclaves on a synthetic 256-core node: the ledger's cost alone, as n grows. */
static int bench_ledger(struct bench *b)
{
        fprintf(stderr, "mgmt: ledger-only: %d creates on a 256-core synthetic topology\n", LEDGER_ENCLAVES);
        if (access(b->topology, R_OK) < 0) {
                samples_fail(&b->ledger_create, "cannot read %s: %s", b->topology, strerror(errno));
                return 0;
        }
        if (daemon_start(b, &b->ledger) < 0)
                return -1;
        struct tessera_error err = {0};
        for (int i = 0; i < LEDGER_ENCLAVES && !interrupted(b); i++) {
                char name[16];
                snprintf(name, sizeof(name), "l%03d", i);
                json_t *req = json_pack("{s:{s:s, s:i, s:s}}", "spec", "name", name, "cpus", 1, "memory", "1G");
                void *res = NULL;
                struct sched_times s0, s1;
                bool have = sched_times_read(b->ledger.pid, &s0);
                uint64_t t0 = now_ns();
                int r = tessera_client_call(b->ledger.client, "create", req, &res, &err);
                double ms = ms_since(t0);
                if (have && sched_times_read(b->ledger.pid, &s1))
                        samples_add(&b->ledger_cpu, (double)(s1.on_cpu - s0.on_cpu) / 1e6);
                json_decref(req);
                json_decref(res);
                if (r < 0) {
                        samples_fail(&b->ledger_create, "create %s: %s", name, err.msg);
                        break;
                }
                samples_add(&b->ledger_create, ms);
        }
        char why[512];
        for (unsigned i = 0; i <= b->iterations && !interrupted(b) && !b->ledger_create.failed[0]; i++) {
                double api_ms, cli_ms;
                if (tessera_op(b, &b->ledger, false, OP_LIST, "", &api_ms, why, sizeof(why)) < 0) {
                        samples_fail(&b->ledger_list_api, "%s", why);
                        break;
                }
                if (tessera_op(b, &b->ledger, true, OP_LIST, "", &cli_ms, why, sizeof(why)) < 0) {
                        samples_fail(&b->ledger_list_cli, "%s", why);
                        break;
                }
                if (i > 0) {
                        samples_add(&b->ledger_list_api, api_ms);
                        samples_add(&b->ledger_list_cli, cli_ms);
                }
        }
        b->ledger_rss_kb = rss_kb(b->ledger.pid);
        /* ledger-only enclaves are rows in its store and nothing else: stopping it and removing the state suffices */
        daemon_stop(&b->ledger);
        return 0;
}

/* ---- peers: fork+exec floor, cgroup-tools, ip link ---- */

static void bench_spawn_floor(struct bench *b)
{
        char *argv[] = {b->true_bin, NULL};
        char why[512];
        for (unsigned i = 0; i <= b->iterations; i++) {
                double ms;
                if (run_timed(b, argv, NULL, &ms, why, sizeof(why)) < 0) {
                        samples_fail(&b->peer[PEER_SPAWN], "%s", why);
                        return;
                }
                if (i > 0)
                        samples_add(&b->peer[PEER_SPAWN], ms);
        }
}

static void cg_dir(const struct bench *b, const char *controller, char *buf, size_t size)
{
        snprintf(buf, size, CGROUP_FS "/%s/%s", controller, b->cg_group);
}

static const char *const cg_controllers[] = {"cpuset", "memory", "pids"};

/* Which of the group's controller directories are still there ("" when none). */
static void cg_leftovers(const struct bench *b, char *buf, size_t size)
{
        buf[0] = '\0';
        for (size_t i = 0; i < ELEMENTSOF(cg_controllers); i++) {
                char dir[PATH_MAX];
                cg_dir(b, cg_controllers[i], dir, sizeof(dir));
                if (access(dir, F_OK) == 0)
                        snprintf(buf + strlen(buf), size - strlen(buf), "%s%s", buf[0] ? ", " : "", dir);
        }
}

/* The first two CPUs of the root cpuset and its first memory node, so the limits written are valid here. */
static bool cg_pick_cpus(char *one, char *two, size_t size, char *mems, size_t msize)
{
        char buf[256];
        unsigned a, b2;
        if (read_file_at(AT_FDCWD, CGROUP_FS "/cpuset/cpuset.cpus", buf, sizeof(buf), NULL) < 0)
                return false;
        /* "0-1", "0-7" or "0,2,...": the first CPU and the one after it */
        if (sscanf(buf, "%u-%u", &a, &b2) == 2 && b2 > a)
                b2 = a + 1;
        else if (sscanf(buf, "%u,%u", &a, &b2) != 2)
                return false;
        snprintf(one, size, "%u", a);
        snprintf(two, size, "%u,%u", a, b2);
        if (read_file_at(AT_FDCWD, CGROUP_FS "/cpuset/cpuset.mems", buf, sizeof(buf), NULL) < 0)
                return false;
        unsigned m;
        if (sscanf(buf, "%u", &m) != 1)
                return false;
        snprintf(mems, msize, "%u", m);
        return true;
}

/*
 * cgroup-tools 2.0.2 on this hybrid layout removes only the first controller
 * of `cgdelete -g a,b,c:/G` (and exits 0): try it once, and when it leaves
 * directories behind, time one cgdelete per controller, which is what a user
 * has to do here.
 */
static int cg_delete(struct bench *b, bool *per_controller, double *ret_ms, char *why, size_t size)
{
        char spec[160];
        uint64_t t0 = now_ns();
        if (!*per_controller) {
                snprintf(spec, sizeof(spec), "cpuset,memory,pids:/%s", b->cg_group);
                char *argv[] = {b->cgdelete, "-g", spec, NULL};
                if (run_timed(b, argv, NULL, NULL, why, size) < 0)
                        return -1;
        } else {
                for (size_t i = 0; i < ELEMENTSOF(cg_controllers); i++) {
                        snprintf(spec, sizeof(spec), "%s:/%s", cg_controllers[i], b->cg_group);
                        char *argv[] = {b->cgdelete, "-g", spec, NULL};
                        if (run_timed(b, argv, NULL, NULL, why, size) < 0)
                                return -1;
                }
        }
        *ret_ms = ms_since(t0);
        char left[3 * PATH_MAX];
        cg_leftovers(b, left, sizeof(left));
        if (!left[0])
                return 0;
        if (*per_controller) {
                snprintf(why, size, "cgdelete left %s", left);
                return -1;
        }
        /* the single call was not enough: finish by hand and switch to one call per controller */
        for (size_t i = 0; i < ELEMENTSOF(cg_controllers); i++) {
                char dir[PATH_MAX];
                cg_dir(b, cg_controllers[i], dir, sizeof(dir));
                (void)rmdir(dir);
        }
        *per_controller = true;
        return 1;
}

static void bench_cgroup_tools(struct bench *b)
{
        struct samples *s = b->peer;
        if (!b->cgcreate[0] || !b->cgset[0] || !b->cgdelete[0]) {
                for (int p = CG_CREATE; p <= CG_CREATE_DELETE; p++)
                        samples_fail(&s[p], "cgroup-tools (cgcreate, cgset, cgdelete) not installed");
                return;
        }
        char one[32], two[32], mems[32];
        if (!cg_pick_cpus(one, two, sizeof(one), mems, sizeof(mems))) {
                for (int p = CG_CREATE; p <= CG_CREATE_DELETE; p++)
                        samples_fail(&s[p], "needs a v1 cpuset hierarchy with 2 CPUs at " CGROUP_FS "/cpuset");
                return;
        }
        fprintf(stderr, "mgmt: cgroup-tools (%u iterations)\n", b->iterations);
        snprintf(b->cg_group, sizeof(b->cg_group), "tessera-bench-cg-%d", (int)getpid());
        char spec[160], cpus_one[64], cpus_two[64], mems_arg[64];
        snprintf(spec, sizeof(spec), "cpuset,memory,pids:/%s", b->cg_group);
        snprintf(cpus_one, sizeof(cpus_one), "cpuset.cpus=%s", one);
        snprintf(cpus_two, sizeof(cpus_two), "cpuset.cpus=%s", two);
        snprintf(mems_arg, sizeof(mems_arg), "cpuset.mems=%s", mems);
        char *create[] = {b->cgcreate, "-g", spec, NULL};
        char *limits[] = {
                b->cgset,        "-r",        cpus_one, "-r", mems_arg, "-r", "memory.limit_in_bytes=128M", "-r",
                "pids.max=1024", b->cg_group, NULL};
        char *add_core[] = {b->cgset, "-r", cpus_two, b->cg_group, NULL};
        char *del_core[] = {b->cgset, "-r", cpus_one, b->cg_group, NULL};
        char *add_mem[] = {b->cgset, "-r", "memory.limit_in_bytes=256M", b->cg_group, NULL};
        char *del_mem[] = {b->cgset, "-r", "memory.limit_in_bytes=128M", b->cg_group, NULL};
        struct {
                char **argv;
                enum peer p;
        } changes[] = {{add_core, CG_ADD_CORE}, {del_core, CG_DEL_CORE}, {add_mem, CG_ADD_MEM}, {del_mem, CG_DEL_MEM}};
        bool per_controller = false;
        char why[512];

        for (unsigned i = 0; i <= b->iterations && !interrupted(b); i++) {
                double ms[_PEER_MAX] = {0}, t;
                b->cg_made = true;
                uint64_t t0 = now_ns();
                if (run_timed(b, create, NULL, NULL, why, sizeof(why)) < 0 ||
                    run_timed(b, limits, NULL, NULL, why, sizeof(why)) < 0) {
                        for (int p = CG_CREATE; p <= CG_CREATE_DELETE; p++)
                                samples_fail(&s[p], "%s", why);
                        return;
                }
                ms[CG_CREATE] = ms_since(t0);
                for (size_t c = 0; c < ELEMENTSOF(changes); c++)
                        if (run_timed(b, changes[c].argv, NULL, &ms[changes[c].p], why, sizeof(why)) < 0)
                                samples_fail(&s[changes[c].p], "%s", why);
                int r = cg_delete(b, &per_controller, &t, why, sizeof(why));
                if (r < 0) {
                        for (int p = CG_CREATE; p <= CG_CREATE_DELETE; p++)
                                samples_fail(&s[p], "%s", why);
                        return;
                }
                b->cg_made = false;
                if (r > 0) {
                        /* the delete method changed: this iteration does not count */
                        i--;
                        continue;
                }
                ms[CG_DELETE] = t;
                ms[CG_CREATE_DELETE] = ms[CG_CREATE] + t;
                if (i > 0)
                        for (int p = CG_CREATE; p <= CG_CREATE_DELETE; p++)
                                samples_add(&s[p], ms[p]);
        }
        if (per_controller) {
                snprintf(b->peer_label[CG_DELETE], sizeof(b->peer_label[0]), "cgdelete x3 (one per controller)");
                snprintf(b->peer_label[CG_CREATE_DELETE], sizeof(b->peer_label[0]), "cgcreate+cgset+cgdelete x3");
                note(b, "cgdelete: cgroup-tools here removes only the first controller of `-g cpuset,memory,pids:/G` "
                        "(exit 0), so a delete is one cgdelete per controller.\n");
        }
}

/* `unshare -n sleep`: a process in its own network namespace to move the veth into. */
static int start_sleeper(struct bench *b, char *why, size_t size)
{
        char sleep_bin[PATH_MAX];
        if (!b->unshare[0] || !find_tool("sleep", sleep_bin, sizeof(sleep_bin))) {
                snprintf(why, size, "unshare or sleep not installed");
                return -1;
        }
        char *argv[] = {b->unshare, "-n", sleep_bin, "3600", NULL};
        struct spawn_opts o = {.out_fd = -1, .err_fd = -1, .new_session = true, .deathsig = SIGKILL};
        pid_t pid = spawn(b, argv, &o);
        if (pid < 0) {
                snprintf(why, size, "cannot fork: %s", strerror(-pid));
                return -1;
        }
        b->sleeper = pid;
        struct stat self, other;
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/ns/net", (int)pid);
        if (stat("/proc/self/ns/net", &self) < 0)
                return -1;
        /* moving the veth before unshare(2) ran would move it to where it already is */
        for (int i = 0; i < 2000; i++) {
                if (stat(path, &other) == 0 && other.st_ino != self.st_ino)
                        return 0;
                int st;
                if (waitpid(pid, &st, WNOHANG) == pid) {
                        b->sleeper = 0;
                        snprintf(why, size, "`unshare -n sleep` exited at once (status %d)", st);
                        return -1;
                }
                sleep_ms(1);
        }
        snprintf(why, size, "`unshare -n` did not make a network namespace within 2 s");
        return -1;
}

static void bench_ip(struct bench *b)
{
        struct samples *s = b->peer;
        if (!b->veth_made)
                return;
        char why[512];
        if (!b->nsenter[0] || start_sleeper(b, why, sizeof(why)) < 0) {
                samples_fail(&s[IP_ADD_NIC], "%s", b->nsenter[0] ? why : "nsenter not installed");
                samples_fail(&s[IP_DEL_NIC], "%s", b->nsenter[0] ? why : "nsenter not installed");
                return;
        }
        fprintf(stderr, "mgmt: ip link set netns (%u iterations)\n", b->iterations);
        char pid[16], self[16];
        snprintf(pid, sizeof(pid), "%d", (int)b->sleeper);
        snprintf(self, sizeof(self), "%d", (int)getpid());
        char *add[] = {b->ip, "link", "set", b->veth, "netns", pid, NULL};
        char *del[] = {b->nsenter, "-t", pid, "-n", b->ip, "link", "set", b->veth, "netns", self, NULL};
        for (unsigned i = 0; i <= b->iterations && !interrupted(b); i++) {
                double add_ms, del_ms;
                if (run_timed(b, add, NULL, &add_ms, why, sizeof(why)) < 0) {
                        samples_fail(&s[IP_ADD_NIC], "%s", why);
                        samples_fail(&s[IP_DEL_NIC], "nothing to move back: the move failed");
                        break;
                }
                if (if_nametoindex(b->veth) != 0) {
                        samples_fail(&s[IP_ADD_NIC], "%s is still on the host after the move", b->veth);
                        break;
                }
                if (run_timed(b, del, NULL, &del_ms, why, sizeof(why)) < 0 || if_nametoindex(b->veth) == 0) {
                        samples_fail(&s[IP_DEL_NIC], "%s", why[0] ? why : "the veth did not come back");
                        break;
                }
                if (i > 0) {
                        samples_add(&s[IP_ADD_NIC], add_ms);
                        samples_add(&s[IP_DEL_NIC], del_ms);
                }
        }
        (void)kill(b->sleeper, SIGKILL);
        (void)wait_status(b->sleeper);
        b->sleeper = 0;
}

/* ---- crun ---- */

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

/* A bundle: busybox-static as the rootfs, `crun spec`'s config.json made to run /bin/true without a terminal. */
static int crun_bundle(struct bench *b, char *why, size_t size)
{
        snprintf(b->crun_bundle, sizeof(b->crun_bundle), "%s/bundle", b->tmp);
        snprintf(b->crun_root, sizeof(b->crun_root), "%s/crun-state", b->tmp);
        snprintf(b->crun_cgroup, sizeof(b->crun_cgroup), "tessera-bench-crun-%d", (int)getpid());
        static const char *const dirs[] = {
                "", "/rootfs", "/rootfs/bin", "/rootfs/proc", "/rootfs/dev", "/rootfs/sys", "/rootfs/tmp"};
        char path[PATH_MAX + 64];
        for (size_t i = 0; i < ELEMENTSOF(dirs); i++) {
                snprintf(path, sizeof(path), "%s%s", b->crun_bundle, dirs[i]);
                if (mkdir(path, 0755) < 0 && errno != EEXIST) {
                        snprintf(why, size, "cannot make %s: %s", path, strerror(errno));
                        return -1;
                }
        }
        if (mkdir(b->crun_root, 0700) < 0 && errno != EEXIST) {
                snprintf(why, size, "cannot make %s: %s", b->crun_root, strerror(errno));
                return -1;
        }
        snprintf(path, sizeof(path), "%s/rootfs/bin/busybox", b->crun_bundle);
        int r = copy_file(b->busybox, path, 0755);
        if (r < 0) {
                snprintf(why, size, "cannot copy %s to %s: %s", b->busybox, path, strerror(-r));
                return -1;
        }
        snprintf(path, sizeof(path), "%s/rootfs/bin/true", b->crun_bundle);
        (void)symlink("busybox", path);
        snprintf(path, sizeof(path), "%s/rootfs/bin/sh", b->crun_bundle);
        (void)symlink("busybox", path);

        char *spec[] = {b->crun, "spec", NULL};
        if (run_timed(b, spec, b->crun_bundle, NULL, why, size) < 0)
                return -1;
        snprintf(path, sizeof(path), "%s/config.json", b->crun_bundle);
        json_error_t jerr;
        json_t *cfg = json_load_file(path, 0, &jerr);
        json_t *process = cfg ? json_object_get(cfg, "process") : NULL;
        json_t *linux_ = cfg ? json_object_get(cfg, "linux") : NULL;
        if (!process || !linux_) {
                snprintf(why, size, "%s: %s", path, cfg ? "no process or linux object" : jerr.text);
                json_decref(cfg);
                return -1;
        }
        char cgpath[96];
        snprintf(cgpath, sizeof(cgpath), "/%s", b->crun_cgroup);
        json_object_set_new(process, "terminal", json_false());
        json_object_set_new(process, "args", json_pack("[s]", "/bin/true"));
        /* a known cgroup path, so a crun that fails half-way leaves nothing we cannot find */
        json_object_set_new(linux_, "cgroupsPath", json_string(cgpath));
        r = json_dump_file(cfg, path, JSON_INDENT(2));
        json_decref(cfg);
        if (r < 0) {
                snprintf(why, size, "cannot write %s", path);
                return -1;
        }
        return 0;
}

/* crun 1.8 refuses hybrid cgroups while v2 holds a controller: move hugetlb to a v1 hierarchy (--prepare-crun). */
static void hugetlb_mount(struct bench *b)
{
        if (!file_has_word(CGROUP_FS "/unified/cgroup.controllers", "hugetlb") || is_mountpoint(HUGETLB_V1)) {
                snprintf(b->hugetlb_note, sizeof(b->hugetlb_note),
                         "--prepare-crun: nothing to do, the v2 hierarchy holds no hugetlb here");
                return;
        }
        if (mkdir(HUGETLB_V1, 0755) == 0)
                b->hugetlb_dir_made = true;
        else if (errno != EEXIST) {
                snprintf(b->hugetlb_note, sizeof(b->hugetlb_note), "could not make %s: %s", HUGETLB_V1,
                         strerror(errno));
                return;
        }
        if (mount("cgroup", HUGETLB_V1, "cgroup", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hugetlb") < 0) {
                snprintf(b->hugetlb_note, sizeof(b->hugetlb_note), "could not mount a v1 hugetlb hierarchy: %s",
                         strerror(errno));
                if (b->hugetlb_dir_made && rmdir(HUGETLB_V1) == 0)
                        b->hugetlb_dir_made = false;
                return;
        }
        b->hugetlb_mounted = true;
        snprintf(b->hugetlb_note, sizeof(b->hugetlb_note),
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
 * Undoes hugetlb_mount.  An unmounted v1 hierarchy is freed asynchronously,
 * and not at all while it still has (dying) child cgroups: then hugetlb
 * stays off v2.  So wait, and if it is still held, mount it again once the
 * children are gone and unmount it empty.  Remounting sooner would only make
 * a new hierarchy each time.
 */
static void hugetlb_unmount(struct bench *b)
{
        if (!b->hugetlb_mounted)
                return;
        char crun_dir[PATH_MAX];
        snprintf(crun_dir, sizeof(crun_dir), HUGETLB_V1 "/%s", b->crun_cgroup);
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
        b->hugetlb_mounted = false; /* tried once: a second try at exit would only repeat the note */
        if (!is_mountpoint(HUGETLB_V1) && b->hugetlb_dir_made && rmdir(HUGETLB_V1) == 0)
                b->hugetlb_dir_made = false;
        size_t len = strlen(b->hugetlb_note);
        snprintf(b->hugetlb_note + len, sizeof(b->hugetlb_note) - len, "%s",
                 back ? "; unmounted after it: hugetlb is back on the v2 hierarchy"
                      : "; WARNING: could not give hugetlb back to the v2 hierarchy (see /proc/cgroups)");
}

static int crun_cmd(struct bench *b, const char *verb, const char *id, double *ms, char *why, size_t size)
{
        char *argv[] = {b->crun, "--root", b->crun_root, (char *)verb, NULL, NULL, NULL, NULL};
        size_t n = 4;
        if (STREQ(verb, "create") || STREQ(verb, "run")) {
                argv[n++] = "--bundle";
                argv[n++] = b->crun_bundle;
        } else if (STREQ(verb, "delete")) {
                argv[n++] = "--force";
        }
        argv[n] = (char *)id;
        return run_timed(b, argv, NULL, ms, why, size);
}

static void crun_fail_all(struct bench *b, const char *why)
{
        for (int p = CRUN_CREATE; p <= CRUN_RUN; p++)
                samples_fail(&b->peer[p], "%s", why);
}

static void bench_crun(struct bench *b)
{
        char why[512];
        if (!b->crun[0] || !b->busybox[0]) {
                crun_fail_all(b, !b->crun[0] ? "crun not installed" : "busybox(-static) not installed");
                return;
        }
        if (crun_bundle(b, why, sizeof(why)) < 0) {
                crun_fail_all(b, why);
                return;
        }
        if (b->prepare_crun)
                hugetlb_mount(b);
        fprintf(stderr, "mgmt: crun (%u iterations)\n", b->crun_iterations);
        for (unsigned i = 0; i <= b->crun_iterations && !interrupted(b); i++) {
                double create_ms, delete_ms, run_ms;
                snprintf(b->crun_live, sizeof(b->crun_live), "tbm%d-c%u", (int)getpid(), i);
                if (crun_cmd(b, "create", b->crun_live, &create_ms, why, sizeof(why)) < 0) {
                        if (!b->prepare_crun && strstr(why, "hybrid"))
                                strncat(why, " (run with --prepare-crun)", sizeof(why) - strlen(why) - 1);
                        crun_fail_all(b, why);
                        break;
                }
                if (crun_cmd(b, "delete", b->crun_live, &delete_ms, why, sizeof(why)) < 0) {
                        crun_fail_all(b, why);
                        break;
                }
                snprintf(b->crun_live, sizeof(b->crun_live), "tbm%d-r%u", (int)getpid(), i);
                if (crun_cmd(b, "run", b->crun_live, &run_ms, why, sizeof(why)) < 0) {
                        samples_fail(&b->peer[CRUN_RUN], "%s", why);
                        break;
                }
                /* `crun run` deletes the container when its process exits: check, as the row claims it */
                char state[PATH_MAX + 64];
                snprintf(state, sizeof(state), "%s/%s", b->crun_root, b->crun_live);
                if (access(state, F_OK) == 0) {
                        samples_fail(&b->peer[CRUN_RUN], "crun run left its container %s behind", b->crun_live);
                        break;
                }
                b->crun_live[0] = '\0';
                if (i > 0) {
                        samples_add(&b->peer[CRUN_CREATE], create_ms);
                        samples_add(&b->peer[CRUN_DELETE], delete_ms);
                        samples_add(&b->peer[CRUN_CREATE_DELETE], create_ms + delete_ms);
                        samples_add(&b->peer[CRUN_RUN], run_ms);
                }
        }
        if (b->crun_live[0]) {
                (void)crun_cmd(b, "delete", b->crun_live, NULL, why, sizeof(why));
                b->crun_live[0] = '\0';
        }
        cgroup_remove_everywhere(b->crun_cgroup);
        hugetlb_unmount(b);
}

/* ---- cleanup: everything this run made, in reverse ---- */

static void bench_cleanup(struct bench *b)
{
        char why[512];
        if (b->crun_live[0]) {
                (void)crun_cmd(b, "delete", b->crun_live, NULL, why, sizeof(why));
                b->crun_live[0] = '\0';
        }
        cgroup_remove_everywhere(b->crun_cgroup);
        hugetlb_unmount(b);
        if (b->sleeper > 0) {
                (void)kill(b->sleeper, SIGKILL);
                (void)wait_status(b->sleeper);
                b->sleeper = 0;
        }
        daemon_cleanup(b, &b->main, true);
        daemon_cleanup(b, &b->ledger, false);
        if (b->cg_made) {
                for (size_t i = 0; i < ELEMENTSOF(cg_controllers); i++) {
                        char dir[PATH_MAX];
                        cg_dir(b, cg_controllers[i], dir, sizeof(dir));
                        cgroup_tree_remove(dir);
                }
                b->cg_made = false;
        }
        if (b->veth_made) {
                /* the veth dies with a namespace it was left in; if it is back on the host, delete it */
                if (if_nametoindex(b->veth) != 0) {
                        char *argv[] = {b->ip, "link", "del", b->veth, NULL};
                        (void)run_quiet(b, argv);
                }
                b->veth_made = false;
        }
        if (b->tmp[0]) {
                if (b->log_fd >= 0)
                        close(b->log_fd);
                b->log_fd = -1;
                (void)nftw(b->tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
                b->tmp[0] = '\0';
        }
}

/* ---- the report ---- */

/* A failed cell points at a numbered note; cells that failed for the same reason share it. */
static void fmt_cell(const struct samples *s, char *buf, size_t size, struct bench *b)
{
        if (s->failed[0]) {
                size_t no = 0;
                while (no < b->n_reasons && !STREQ(b->reasons[no], s->failed))
                        no++;
                if (no == b->n_reasons && no < ELEMENTSOF(b->reasons)) {
                        b->reasons[b->n_reasons++] = s->failed;
                        note(b, "[%zu] %s\n", no + 1, s->failed);
                }
                snprintf(buf, size, "n/a [%zu]", no + 1);
        } else if (s->n == 0) {
                snprintf(buf, size, "-");
        } else {
                snprintf(buf, size, "%.3f (%.3f)", median(s), p90(s));
        }
}

static void fmt_ratio(double num, double den, char *buf, size_t size)
{
        if (isnan(num) || isnan(den) || den <= 0)
                snprintf(buf, size, "-");
        else
                snprintf(buf, size, "%.1fx", num / den);
}

struct row {
        const char *label; /* NULL: another peer for the row above */
        int op;            /* Tessera columns, -1 none */
        int peer;          /* peer column, -1 none */
        int cmp;           /* the Tessera operation the peer is set against (peer/CLI), -1 none */
        double pisces;
};

static const struct row rows[] = {
        {"create enclave (1 core, 128M)", OP_CREATE, CG_CREATE, OP_CREATE, 0},
        {NULL, -1, CRUN_CREATE, OP_CREATE, 0},
        {"add one core", OP_ADD_CORE, CG_ADD_CORE, OP_ADD_CORE, PISCES_CORE_MS},
        {"remove one core", OP_DEL_CORE, CG_DEL_CORE, OP_DEL_CORE, 0},
        {"add 128 MiB", OP_ADD_MEM, CG_ADD_MEM, OP_ADD_MEM, PISCES_MEM_MS},
        {"remove 128 MiB", OP_DEL_MEM, CG_DEL_MEM, OP_DEL_MEM, 0},
        {"add a NIC (veth)", OP_ADD_NIC, IP_ADD_NIC, OP_ADD_NIC, PISCES_NIC_MS},
        {"remove the NIC", OP_DEL_NIC, IP_DEL_NIC, OP_DEL_NIC, 0},
        {"destroy enclave", OP_DESTROY, CG_DELETE, OP_DESTROY, 0},
        {NULL, -1, CRUN_DELETE, OP_DESTROY, 0},
        {"create + destroy", OP_CREATE_DESTROY, CG_CREATE_DELETE, OP_CREATE_DESTROY, 0},
        {NULL, -1, CRUN_CREATE_DELETE, OP_CREATE_DESTROY, 0},
        {"create+start /bin/true+delete", -1, CRUN_RUN, OP_CREATE_DESTROY, 0},
        {"list (2 enclaves)", OP_LIST, -1, -1, 0},
        {"spawn floor", -1, PEER_SPAWN, -1, 0},
};

static void print_header(struct bench *b)
{
        char model[256] = "?", buf[8192];
        if (read_file_at(AT_FDCWD, "/proc/cpuinfo", buf, sizeof(buf), NULL) >= 0) {
                const char *p = strstr(buf, "model name");
                if (p && (p = strchr(p, ':')))
                        snprintf(model, sizeof(model), "%.*s", (int)strcspn(p + 2, "\n"), p + 2);
        }
        struct utsname u;
        uname(&u);
        char commit[64] = "", dirty[256] = "", crun_version[128] = "";
        if (b->git[0]) {
                char *rev[] = {b->git, "-C", b->source, "rev-parse", "--short", "HEAD", NULL};
                char *st[] = {b->git, "-C", b->source, "status", "--porcelain", "--untracked-files=no", NULL};
                capture_line(b, rev, commit, sizeof(commit));
                capture_line(b, st, dirty, sizeof(dirty));
        }
        if (b->crun[0]) {
                char *v[] = {b->crun, "--version", NULL};
                capture_line(b, v, crun_version, sizeof(crun_version));
        }
        struct statfs sf;
        const char *fs = "?";
        if (statfs(b->tmp, &sf) == 0)
                fs = sf.f_type == 0xEF53       ? "ext4"
                     : sf.f_type == 0x01021994 ? "tmpfs (fsync is free: durable figures are flattered)"
                     : sf.f_type == 0x58465342 ? "xfs"
                     : sf.f_type == 0x9123683E ? "btrfs"
                                               : "other";
        time_t now = time(NULL);
        char date[64];
        strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S UTC", gmtime(&now));

        printf("# Tessera management benchmark (bench/mgmt), %s\n", date);
        printf("# hardware: %ld CPUs, %s\n", sysconf(_SC_NPROCESSORS_ONLN), model);
        printf("# kernel:   %s\n", u.release);
        printf("# load:     %s at start, %s at the end (1/5/15 min; %ld CPUs)\n", b->load_start, b->load_end,
               sysconf(_SC_NPROCESSORS_ONLN));
        printf("# commit:   %s%s\n", commit[0] ? commit : "unknown (no git)",
               dirty[0] ? " (working tree has uncommitted changes)" : "");
        printf("# tesserad: --sync %s; state on %s; %s\n", b->sync, fs, b->tesserad);
        printf("# peers:    %s; cgroup-tools; iproute2\n", crun_version[0] ? crun_version : "crun: none");
        printf("# runs:     %u iterations per operation (crun: %u), after one unrecorded warm-up; "
               "median (p90) in ms\n",
               b->iterations, b->crun_iterations);
        printf("# API = one tessera_client_call round trip on an open connection (the daemon commits to SQLite "
               "before replying);\n# CLI and every peer tool = fork+exec+wait from this process, as a shell "
               "would\n");
        if (b->hugetlb_note[0])
                printf("# host change: %s\n", b->hugetlb_note);
        printf("\n");
}

static void print_table(struct bench *b)
{
        printf("%-30s %-17s %-17s %-38s %-17s %7s %10s %10s %8s\n", "operation", "Tessera API", "Tessera CLI",
               "peer (same run)", "peer", "Pisces", "Pisces/API", "Pisces/CLI", "peer/CLI");
        for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
                const struct row *r = &rows[i];
                char api[48] = "", cli[48] = "", peer[48] = "", pisces[16] = "", ra[16] = "", rc[16] = "", rp[16] = "";
                if (r->op >= 0) {
                        fmt_cell(&b->api[r->op], api, sizeof(api), b);
                        fmt_cell(&b->cli[r->op], cli, sizeof(cli), b);
                }
                if (r->peer >= 0) {
                        fmt_cell(&b->peer[r->peer], peer, sizeof(peer), b);
                        if (r->cmp >= 0)
                                fmt_ratio(median(&b->peer[r->peer]), median(&b->cli[r->cmp]), rp, sizeof(rp));
                }
                if (r->pisces > 0) {
                        snprintf(pisces, sizeof(pisces), "%.2f", r->pisces);
                        fmt_ratio(r->pisces, median(&b->api[r->op]), ra, sizeof(ra));
                        fmt_ratio(r->pisces, median(&b->cli[r->op]), rc, sizeof(rc));
                }
                printf("%-30s %-17s %-17s %-38s %-17s %7s %10s %10s %8s\n", r->label ? r->label : "", api, cli,
                       r->peer >= 0 ? b->peer_label[r->peer] : "", peer, pisces, ra, rc, rp);
        }
        printf("(peer/CLI: the peer's median over Tessera CLI's for the same operation; crun run is set against "
               "create + destroy)\n");
}

static const char *verdict(bool ok)
{
        return ok ? "PASS" : "MISS";
}

static void print_op_target(struct bench *b, const char *what, enum op op, double pisces)
{
        double bound = pisces / TARGET_SPEEDUP, api = median(&b->api[op]), cli = median(&b->cli[op]);
        if (isnan(api)) {
                printf("  %-34s <= %6.3f ms (Pisces %6.2f / 30)   API n/a\n", what, bound, pisces);
                return;
        }
        printf("  %-34s <= %6.3f ms (Pisces %6.2f / 30)   API %7.3f ms %5.0fx %s", what, bound, pisces, api,
               pisces / api, verdict(api <= bound));
        if (api > bound)
                printf(" by %.3f ms", api - bound);
        if (!isnan(cli))
                printf("   (CLI %7.3f ms %5.0fx %s)", cli, pisces / cli, verdict(cli <= bound));
        printf("\n");
}

static void print_targets(struct bench *b)
{
        printf("\ntargets (Pisces published the add figures only; a remove is held to the same bound):\n");
        print_op_target(b, "add one core", OP_ADD_CORE, PISCES_CORE_MS);
        print_op_target(b, "remove one core", OP_DEL_CORE, PISCES_CORE_MS);
        print_op_target(b, "add 128 MiB", OP_ADD_MEM, PISCES_MEM_MS);
        print_op_target(b, "remove 128 MiB", OP_DEL_MEM, PISCES_MEM_MS);
        print_op_target(b, "add a NIC", OP_ADD_NIC, PISCES_NIC_MS);
        print_op_target(b, "remove the NIC", OP_DEL_NIC, PISCES_NIC_MS);

        double crun = median(&b->peer[CRUN_CREATE_DELETE]);
        double api = median(&b->api[OP_CREATE_DESTROY]), cli = median(&b->cli[OP_CREATE_DESTROY]);
        if (isnan(crun))
                printf("  %-34s <= crun create+delete: not checked (crun did not run, see its row)\n",
                       "create + destroy");
        else
                printf("  %-34s <= crun create+delete %.3f ms     API %7.3f ms %s   (CLI %7.3f ms %s)\n",
                       "create + destroy", crun, api, verdict(api <= crun), cli, verdict(cli <= crun));
        double list = median(&b->cli[OP_LIST]);
        printf("  %-34s <  %.0f ms                          CLI %7.3f ms %s\n", "tessera list (CLI, 2 enclaves)",
               LIST_TARGET_MS, list, verdict(list < LIST_TARGET_MS));
        printf("  %-34s <  %d MiB                         %.1f MiB %s (%.1f MiB at start)\n",
               "tesserad VmRSS after the run", RSS_TARGET_KB / 1024, b->rss_end_kb / 1024.0,
               verdict(b->rss_end_kb && b->rss_end_kb < RSS_TARGET_KB), b->rss_start_kb / 1024.0);
}

/* The daemon's side of each API call, so a reader can tell its own work from waiting (disk, kernel, CPU). */
static void print_breakdown(struct bench *b)
{
        static const enum op ops[] = {OP_CREATE,  OP_ADD_CORE, OP_DEL_CORE, OP_ADD_MEM, OP_DEL_MEM,
                                      OP_ADD_NIC, OP_DEL_NIC,  OP_DESTROY,  OP_LIST};
        printf("\nwhere the API time goes (medians in ms; tesserad's own thread from /proc/PID/schedstat; medians do "
               "not add up):\n");
        printf("  %-22s %9s %9s %12s %s\n", "operation", "wall", "on CPU", "CPU-queued",
               "   rest = blocked: disk sync, kernel waits (RCU), children; and the client");
        for (size_t i = 0; i < ELEMENTSOF(ops); i++) {
                const struct samples *w = &b->api[ops[i]];
                if (w->failed[0] || !w->n || !b->api_cpu[ops[i]].n)
                        continue;
                double wall = median(w), cpu = median(&b->api_cpu[ops[i]]), q = median(&b->api_wait[ops[i]]);
                printf("  %-22s %9.3f %9.3f %12.3f %9.3f\n", op_name[ops[i]], wall, cpu, q, wall - cpu - q);
        }
        double ip = median(&b->peer[IP_ADD_NIC]);
        if (!isnan(ip) && ip > PISCES_NIC_MS / TARGET_SPEEDUP)
                note(b,
                     "NIC: the kernel's own move of a netdev into another network namespace (`ip link set netns`) "
                     "takes %.3f ms here (median): above the %.3f ms target before any daemon work.\n",
                     ip, PISCES_NIC_MS / TARGET_SPEEDUP);
}

static double median_of_range(const struct samples *s, size_t from, size_t n)
{
        return from + n <= s->n ? quantile_of(s->ms + from, n, 0.5) : NAN;
}

static void print_ledger(struct bench *b)
{
        const struct samples *c = &b->ledger_create;
        printf("\nledger-only (tesserad --topology %s --host-cpus 0-3 --host-memory 4G: 2 sockets, 8 NUMA nodes, "
               "256 cores;\nno kernel objects, so this is the daemon, the protocol and the SQLite commit alone), "
               "--sync %s:\n",
               strrchr(b->topology, '/') ? strrchr(b->topology, '/') + 1 : b->topology, b->sync);
        if (c->failed[0] || c->n == 0) {
                printf("  n/a: %s\n", c->failed[0] ? c->failed : "not run (the run stopped before it)");
                return;
        }
        double sum = 0;
        for (size_t i = 0; i < c->n; i++)
                sum += c->ms[i];
        double first = median_of_range(c, 0, 10), last = c->n >= 10 ? median_of_range(c, c->n - 10, 10) : NAN;
        printf("  create one-core enclave (API), n=%zu:  median %.3f ms, p90 %.3f ms, total %.1f ms\n", c->n, median(c),
               p90(c), sum);
        printf("  first 10 creates: median %.3f ms;  last 10: median %.3f ms;  last/first %.2f\n", first, last,
               last / first);
        const struct samples *cpu = &b->ledger_cpu;
        if (cpu->n >= 20) {
                double cf = median_of_range(cpu, 0, 10), cl = median_of_range(cpu, cpu->n - 10, 10);
                printf("  tesserad on-CPU per create: median %.3f ms; first 10: %.3f ms; last 10: %.3f ms; "
                       "last/first %.2f (load-independent)\n",
                       median(cpu), cf, cl, cl / cf);
        }
        char api[48], cli[48];
        if (b->ledger_list_api.failed[0])
                snprintf(api, sizeof(api), "n/a (%s)", b->ledger_list_api.failed);
        else
                snprintf(api, sizeof(api), "%.3f (%.3f) ms", median(&b->ledger_list_api), p90(&b->ledger_list_api));
        if (b->ledger_list_cli.failed[0])
                snprintf(cli, sizeof(cli), "n/a (%s)", b->ledger_list_cli.failed);
        else
                snprintf(cli, sizeof(cli), "%.3f (%.3f) ms", median(&b->ledger_list_cli), p90(&b->ledger_list_cli));
        printf("  list of %zu enclaves:  API %s;  CLI %s\n", c->n, api, cli);
        printf("  tesserad VmRSS with %zu enclaves: %.1f MiB\n", c->n, b->ledger_rss_kb / 1024.0);
}

static void print_report(struct bench *b)
{
        print_header(b);
        print_table(b);
        print_targets(b);
        print_breakdown(b);
        print_ledger(b);
        printf("\nnotes:\n%s", b->notes);
        printf("[Pisces] J. Ouyang, B. Kocoloski, J. Lange, K. Pedretti: \"Achieving Performance Isolation with "
               "Lightweight Co-Kernels\", HPDC 2015 (add core 33.74 ms, add 128 MiB 82.66 ms, add NIC 118.98 ms).\n");
        if (b->fatal[0])
                printf("\nRUN FAILED: %s\n", b->fatal);
        if (b->interrupted)
                printf("\nINTERRUPTED: the figures above are partial\n");
}

/* ---- options and setup ---- */

static void usage(FILE *f)
{
        fprintf(f, "usage: mgmt [--iterations N] [--crun-iterations N] [--sync full|normal] [--prepare-crun]\n"
                   "            [--build DIR] [--source DIR] [--topology XML]\n"
                   "  --prepare-crun   (or TESSERA_BENCH_PREPARE_CRUN=1) let crun run on this hybrid cgroup host by\n"
                   "                   mounting a v1 hugetlb hierarchy for the crun section only (a host-wide change,\n"
                   "                   undone right after it)\n"
                   "needs root: it makes cgroups, namespaces and a veth pair, all named with its pid.\n");
}

static int parse_count(const char *s, unsigned *ret)
{
        uint64_t v;
        if (parse_uint64(s, 100000, &v) < 0 || v == 0)
                return -EINVAL;
        *ret = (unsigned)v;
        return 0;
}

/* The build dir: --build, else the parent of this binary's directory (BUILD/bench/mgmt), else the configured one. */
static int find_build(struct bench *b, const char *given)
{
        char exe[PATH_MAX];
        if (given) {
                if (!realpath(given, b->build))
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
                snprintf(b->build, sizeof(b->build), "%s", exe);
        }
        snprintf(b->tesserad, sizeof(b->tesserad), "%s/src/tesserad/tesserad", b->build);
        if (!given && access(b->tesserad, X_OK) < 0) {
                snprintf(b->build, sizeof(b->build), "%s", TESSERA_BUILDDIR);
                snprintf(b->tesserad, sizeof(b->tesserad), "%s/src/tesserad/tesserad", b->build);
        }
        snprintf(b->tessera, sizeof(b->tessera), "%s/src/tessera/tessera", b->build);
        if (access(b->tesserad, X_OK) < 0 || access(b->tessera, X_OK) < 0)
                return -ENOENT;
        return 0;
}

static int parse_options(struct bench *b, int argc, char **argv)
{
        static const struct option opts[] = {
                {"iterations", required_argument, NULL, 'n'},
                {"crun-iterations", required_argument, NULL, 'C'},
                {"sync", required_argument, NULL, 's'},
                {"prepare-crun", no_argument, NULL, 'P'},
                {"build", required_argument, NULL, 'b'},
                {"source", required_argument, NULL, 'S'},
                {"topology", required_argument, NULL, 'T'},
                {"help", no_argument, NULL, 'h'},
                {0},
        };
        const char *build = NULL, *source = NULL, *topology = NULL;
        bool crun_given = false;
        int c;
        b->sync = "full";
        b->iterations = 30;
        const char *env = getenv("TESSERA_BENCH_PREPARE_CRUN");
        b->prepare_crun = env && *env && !STREQ(env, "0");
        while ((c = getopt_long(argc, argv, "n:h", opts, NULL)) != -1) {
                switch (c) {
                case 'n':
                        if (parse_count(optarg, &b->iterations) < 0) {
                                fprintf(stderr, "mgmt: --iterations: '%s' is not a count from 1 to 100000\n", optarg);
                                return -EINVAL;
                        }
                        break;
                case 'C':
                        if (parse_count(optarg, &b->crun_iterations) < 0) {
                                fprintf(stderr, "mgmt: --crun-iterations: '%s' is not a count from 1 to 100000\n",
                                        optarg);
                                return -EINVAL;
                        }
                        crun_given = true;
                        break;
                case 's':
                        if (!STREQ(optarg, "full") && !STREQ(optarg, "normal")) {
                                fprintf(stderr, "mgmt: --sync: '%s' is neither full nor normal\n", optarg);
                                return -EINVAL;
                        }
                        b->sync = optarg;
                        break;
                case 'P': b->prepare_crun = true; break;
                case 'b': build = optarg; break;
                case 'S': source = optarg; break;
                case 'T': topology = optarg; break;
                case 'h': usage(stdout); return 1;
                default: usage(stderr); return -EINVAL;
                }
        }
        if (optind < argc) {
                fprintf(stderr, "mgmt: unexpected argument '%s'\n", argv[optind]);
                usage(stderr);
                return -EINVAL;
        }
        if (!crun_given)
                b->crun_iterations = b->iterations;
        if (find_build(b, build) < 0) {
                fprintf(stderr, "mgmt: no tesserad and tessera under %s/src; give the build directory with --build\n",
                        b->build);
                return -ENOENT;
        }
        snprintf(b->source, sizeof(b->source), "%s", source ? source : BENCH_SOURCE_ROOT);
        if (topology) {
                /* tesserad wants an absolute path */
                if (!realpath(topology, b->topology)) {
                        fprintf(stderr, "mgmt: --topology: %s: %s\n", topology, strerror(errno));
                        return -EINVAL;
                }
        } else
                snprintf(b->topology, sizeof(b->topology), "%s/tests/data/topo-2s8n256c.xml", b->source);
        return 0;
}

static void find_tools(struct bench *b)
{
        static const struct {
                const char *name;
                size_t off;
        } tools[] = {
                {"ip", offsetof(struct bench, ip)},           {"nsenter", offsetof(struct bench, nsenter)},
                {"unshare", offsetof(struct bench, unshare)}, {"cgcreate", offsetof(struct bench, cgcreate)},
                {"cgset", offsetof(struct bench, cgset)},     {"cgdelete", offsetof(struct bench, cgdelete)},
                {"crun", offsetof(struct bench, crun)},       {"busybox", offsetof(struct bench, busybox)},
                {"true", offsetof(struct bench, true_bin)},   {"git", offsetof(struct bench, git)},
        };
        for (size_t i = 0; i < ELEMENTSOF(tools); i++)
                (void)find_tool(tools[i].name, (char *)b + tools[i].off, PATH_MAX);
}

static void init_labels(struct bench *b)
{
        static const char *const labels[_PEER_MAX] = {
                [PEER_SPAWN] = "fork+exec+wait /bin/true",
                [CG_CREATE] = "cgcreate + cgset cpus,mems,mem,pids",
                [CG_ADD_CORE] = "cgset cpuset.cpus (1 -> 2 cores)",
                [CG_DEL_CORE] = "cgset cpuset.cpus (2 -> 1 core)",
                [CG_ADD_MEM] = "cgset memory.limit 128M -> 256M",
                [CG_DEL_MEM] = "cgset memory.limit 256M -> 128M",
                [CG_DELETE] = "cgdelete",
                [CG_CREATE_DELETE] = "cgcreate + cgset + cgdelete",
                [IP_ADD_NIC] = "ip link set DEV netns PID",
                [IP_DEL_NIC] = "nsenter -n ip link set DEV netns back",
                [CRUN_CREATE] = "crun create",
                [CRUN_DELETE] = "crun delete --force",
                [CRUN_CREATE_DELETE] = "crun create + crun delete --force",
                [CRUN_RUN] = "crun run (create,start,wait,delete)",
        };
        for (int i = 0; i < _PEER_MAX; i++)
                snprintf(b->peer_label[i], sizeof(b->peer_label[i]), "%s", labels[i]);
}

static int run_all(struct bench *b)
{
        bench_spawn_floor(b);
        /* crun first: its hugetlb mount must come and go before any tesserad of ours opens the hierarchies */
        bench_crun(b);
        if (interrupted(b))
                return -1;
        (void)make_veth(b);
        if (bench_tessera(b) < 0 || interrupted(b))
                return -1;
        if (bench_list(b) < 0 || interrupted(b))
                return -1;
        daemon_cleanup(b, &b->main, true);
        bench_cgroup_tools(b);
        if (interrupted(b))
                return -1;
        bench_ip(b);
        if (interrupted(b))
                return -1;
        return bench_ledger(b);
}

int main(int argc, char **argv)
{
        static struct bench b = {.log_fd = -1, .devnull = -1};
        int r = parse_options(&b, argc, argv);
        if (r != 0)
                return r > 0 ? 0 : 2;
        if (geteuid() != 0) {
                fprintf(stderr, "mgmt: needs root (cgroups, namespaces, a veth pair)\n");
                return 77;
        }
        sigset_t stop;
        sigemptyset(&stop);
        sigaddset(&stop, SIGINT);
        sigaddset(&stop, SIGTERM);
        sigaddset(&stop, SIGHUP);
        sigprocmask(SIG_BLOCK, &stop, NULL);
        /* a daemon that died must show up as an error from the call, not kill us before the cleanup */
        signal(SIGPIPE, SIG_IGN);

        find_tools(&b);
        init_labels(&b);
        snprintf(b.tmp, sizeof(b.tmp), "/tmp/tessera-bench-%d.XXXXXX", (int)getpid());
        if (!mkdtemp(b.tmp)) {
                fprintf(stderr, "mgmt: cannot make a temporary directory: %s\n", strerror(errno));
                return 1;
        }
        char path[PATH_MAX + 32];
        snprintf(path, sizeof(path), "%s/commands.log", b.tmp);
        b.log_fd = open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        b.devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (b.log_fd < 0 || b.devnull < 0) {
                fprintf(stderr, "mgmt: cannot open %s or /dev/null: %s\n", path, strerror(errno));
                bench_cleanup(&b);
                return 1;
        }
        static const char *const main_flags[] = {"--host-cpus", "", "--host-memory", "2G", NULL};
        static const char *ledger_flags[] = {"--topology", NULL, "--host-cpus", "0-3", "--host-memory", "4G", NULL};
        ledger_flags[1] = b.topology;
        daemon_init(&b, &b.main, "main", main_flags);
        daemon_init(&b, &b.ledger, "ledger", (const char *const *)ledger_flags);

        read_loadavg(b.load_start, sizeof(b.load_start));
        r = run_all(&b);
        read_loadavg(b.load_end, sizeof(b.load_end));
        if (r < 0 && b.fatal[0]) {
                struct daemon *ds[] = {&b.main, &b.ledger};
                for (size_t i = 0; i < ELEMENTSOF(ds); i++) {
                        char said[512];
                        daemon_log_tail(ds[i], said, sizeof(said));
                        if (said[0])
                                note(&b, "last line of tesserad (%s): %s\n", ds[i]->tag, said);
                }
        }
        print_report(&b);
        fflush(stdout);
        bench_cleanup(&b);
        if (b.interrupted)
                return 130;
        return b.fatal[0] ? 1 : 0;
}
