/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * bench/launch: how long it takes to start /bin/true inside an enclave and
 * see it end, through tesserad's API and its CLI, next to what a user would
 * otherwise reach for (nsenter into the same enclave, crun exec into a
 * running container) and the plain fork+exec floor, all in one run; then 100
 * applications at once, and listing 1,000 recorded ones.  It starts its own
 * tesserad (private state dir, socket and cgroup root, named with this
 * process's pid) and undoes everything it made before it exits, also when a
 * step fails or it is interrupted.  See bench/README.md.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include <jansson.h>

#include "common.h"
#include "proto.h"
#include "util.h"

#define TARGET_MS        1.0 /* the issue: launch + wait of /bin/true at most 1 ms (median) */
#define ENCLAVE          "bench"
#define RECORD_ENCLAVE   "recorded"
#define KERNEL_CG_PARENT CGROUP_FS "/pids" /* any v1 hierarchy: the cost is in the cgroup core, not a controller */

/* ---- what is measured ---- */

/* One launch of /bin/true, waited for, by each way of doing it. */
enum way {
        WAY_API,     /* launch (wait, stdio) + wait on one open connection */
        WAY_CLI,     /* tessera launch NAME --wait -- /bin/true */
        WAY_NSENTER, /* nsenter -t SUPERVISOR -a /bin/true */
        WAY_CRUN,    /* crun exec CONTAINER /bin/true */
        WAY_SPAWN,   /* fork+exec+wait /bin/true */
        WAY_CGMOVE,  /* the kernel alone: a pid written into a new v1 cgroup leaf's cgroup.procs */
        _WAY_MAX,
};

/*
 * On cgroup v1 a move into a cgroup waits for an RCU grace period unless
 * another move happened a moment before, so the same launch costs different
 * amounts alone and in a row: every way is timed both after an idle gap and
 * back to back.
 */
enum pace {
        PACE_IDLE,
        PACE_B2B,
        _PACE_MAX,
};

static const char *const way_label[_WAY_MAX] = {
        [WAY_API] = "Tessera API: launch (wait, stdio fds) + wait",
        [WAY_CLI] = "Tessera CLI: tessera launch E --wait -- /bin/true",
        [WAY_NSENTER] = "nsenter -t SUPERVISOR -a /bin/true",
        [WAY_CRUN] = "crun exec CONTAINER /bin/true",
        [WAY_SPAWN] = "fork+exec+wait /bin/true (spawn floor)",
        [WAY_CGMOVE] = "kernel: pid -> new v1 cgroup leaf's cgroup.procs",
};

/* Where one API launch + wait spent its time, in ms (NAN when schedstat was unreadable). */
struct launch_cost {
        double wall, launch, wait;
        double daemon_cpu, daemon_queued, sup_cpu, sup_queued, helpers_cpu;
};

enum cost_part {
        COST_LAUNCH,
        COST_WAIT,
        COST_DAEMON_CPU,
        COST_DAEMON_QUEUED,
        COST_DAEMON_OFF, /* wall - on CPU - queued: blocked in the kernel, or waiting for the supervisor or the end */
        COST_SUP_CPU,
        COST_SUP_QUEUED,
        COST_HELPERS_CPU,
        _COST_MAX,
};

enum burst_side {
        BURST_API,
        BURST_NSENTER,
        _BURST_MAX,
};

#define MAX_HELPERS 16

struct bench {
        struct bench_run run;
        struct crun_env cr;
        /* options */
        unsigned iterations, burst, rounds, recorded, gap_ms;
        /* tools, absolute paths ("" when missing) */
        char nsenter[PATH_MAX], true_bin[PATH_MAX];
        /* everything below is owned and undone by bench_cleanup() */
        struct daemon d;
        pid_t supervisor;           /* of ENCLAVE */
        pid_t helpers[MAX_HELPERS]; /* tesserad's other children (a cgroup mover, say) */
        size_t n_helpers;
        char kernel_cg[PATH_MAX]; /* the cgroup of the kernel row; "" when not made */
        char namespaces[128];     /* of ENCLAVE, as `list` gives them */
        char crun_version[128];
        /* results */
        struct samples one[_PACE_MAX][_WAY_MAX];
        struct samples cost[_PACE_MAX][_COST_MAX];
        struct samples burst_total[_BURST_MAX], burst_each[_BURST_MAX], burst_reply;
        double record_ms;   /* launching and waiting for the recorded applications */
        size_t apps_listed; /* what `apps` returned */
        struct samples apps_api, apps_cli;
        unsigned long rss_kb_end;
        char load_start[64], load_end[64]; /* /proc/loadavg: other work on the machine skews everything */
};

/* ---- the kernel row: one pid into a new v1 cgroup leaf ---- */

/* A child that waits, blocked on a pipe, until the write end closes. */
static pid_t fork_waiter(int *ret_release)
{
        int p[2];
        if (pipe2(p, O_CLOEXEC) < 0)
                return -errno;
        pid_t pid = fork();
        if (pid < 0) {
                int e = errno;
                close(p[0]);
                close(p[1]);
                return -e;
        }
        if (pid == 0) {
                char c;
                close(p[1]);
                while (read(p[0], &c, 1) < 0 && errno == EINTR)
                        ;
                _exit(0);
        }
        close(p[0]);
        *ret_release = p[1];
        return pid;
}

/*
 * What tesserad asks of the kernel when it puts a new application in its
 * leaf, and nothing else: mkdir a leaf, write a waiting child's pid into its
 * cgroup.procs (timed), then let the child go and remove the leaf.
 */
static int cgmove_once(struct bench *b, unsigned i, unsigned gap_ms, double *ret_ms, char *why, size_t size)
{
        char leaf[PATH_MAX + 32], procs[PATH_MAX + 64];
        snprintf(leaf, sizeof(leaf), "%s/l%u", b->kernel_cg, i);
        snprintf(procs, sizeof(procs), "%s/cgroup.procs", leaf);
        if (mkdir(leaf, 0755) < 0 && errno != EEXIST) {
                snprintf(why, size, "cannot make %s: %s", leaf, strerror(errno));
                return -errno;
        }
        int release = -1;
        pid_t pid = fork_waiter(&release);
        if (pid < 0) {
                snprintf(why, size, "cannot fork: %s", strerror(-pid));
                (void)rmdir(leaf);
                return pid;
        }
        char text[16];
        int len = snprintf(text, sizeof(text), "%d", (int)pid);
        int fd = open(procs, O_WRONLY | O_CLOEXEC);
        int r = 0;
        if (gap_ms)
                sleep_ms(gap_ms);
        uint64_t t0 = now_ns();
        if (fd < 0 || write(fd, text, (size_t)len) != len) {
                r = -errno;
                snprintf(why, size, "cannot write %d to %s: %s", (int)pid, procs, strerror(errno));
        }
        *ret_ms = ms_since(t0);
        if (fd >= 0)
                close(fd);
        close(release);
        (void)wait_status(pid);
        /* the reaped child leaves the leaf empty */
        for (int tries = 0; tries < 100 && rmdir(leaf) < 0 && errno == EBUSY; tries++)
                sleep_ms(1);
        return r;
}

static int kernel_cg_make(struct bench *b, char *why, size_t size)
{
        if (access(KERNEL_CG_PARENT "/cgroup.procs", W_OK) < 0) {
                snprintf(why, size, "no writable v1 hierarchy at " KERNEL_CG_PARENT);
                return -ENOENT;
        }
        snprintf(b->kernel_cg, sizeof(b->kernel_cg), KERNEL_CG_PARENT "/tessera-bench-launch-kernel-%d", (int)getpid());
        if (mkdir(b->kernel_cg, 0755) < 0 && errno != EEXIST) {
                snprintf(why, size, "cannot make %s: %s", b->kernel_cg, strerror(errno));
                b->kernel_cg[0] = '\0';
                return -errno;
        }
        return 0;
}

static void kernel_cg_remove(struct bench *b)
{
        if (!b->kernel_cg[0])
                return;
        cgroup_tree_remove(b->kernel_cg);
        b->kernel_cg[0] = '\0';
}

/* ---- tesserad's processes: the daemon, the enclave's supervisor, helpers ---- */

/* tesserad's children that are not supervisors of enclaves: a mover of pids into cgroups, say. */
static void find_helpers(struct bench *b)
{
        char path[64], buf[1024];
        snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)b->d.pid, (int)b->d.pid);
        b->n_helpers = 0;
        if (read_file_at(AT_FDCWD, path, buf, sizeof(buf), NULL) < 0)
                return;
        char *save = NULL;
        for (char *w = strtok_r(buf, " \n", &save); w && b->n_helpers < MAX_HELPERS; w = strtok_r(NULL, " \n", &save)) {
                uint64_t v;
                if (parse_uint64(w, INT32_MAX, &v) < 0 || v == 0)
                        continue;
                pid_t pid = (pid_t)v;
                char comm[64] = "";
                snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
                (void)read_file_at(AT_FDCWD, path, comm, sizeof(comm), NULL);
                if (pid != b->supervisor && !strstr(comm, "supervi"))
                        b->helpers[b->n_helpers++] = pid;
        }
}

struct tree_times {
        struct sched_times daemon, sup;
        uint64_t helpers_cpu;
        bool ok;
};

static void tree_times_read(struct bench *b, struct tree_times *t)
{
        t->ok = sched_times_read(b->d.pid, &t->daemon) && sched_times_read(b->supervisor, &t->sup);
        t->helpers_cpu = 0;
        for (size_t i = 0; i < b->n_helpers; i++) {
                struct sched_times h;
                if (sched_times_read(b->helpers[i], &h))
                        t->helpers_cpu += h.on_cpu;
        }
}

static double ns_ms(uint64_t a, uint64_t b)
{
        return (double)(b - a) / 1e6;
}

static void cost_from(const struct tree_times *t0, const struct tree_times *t1, struct launch_cost *c)
{
        bool ok = t0->ok && t1->ok;
        c->daemon_cpu = ok ? ns_ms(t0->daemon.on_cpu, t1->daemon.on_cpu) : NAN;
        c->daemon_queued = ok ? ns_ms(t0->daemon.waiting, t1->daemon.waiting) : NAN;
        c->sup_cpu = ok ? ns_ms(t0->sup.on_cpu, t1->sup.on_cpu) : NAN;
        c->sup_queued = ok ? ns_ms(t0->sup.waiting, t1->sup.waiting) : NAN;
        c->helpers_cpu = ok ? ns_ms(t0->helpers_cpu, t1->helpers_cpu) : NAN;
}

/* ---- one launch + wait, each way ---- */

/* The status a shell would see from an ended application object; -1 when it has none. */
static int app_status(json_t *app)
{
        json_t *st = json_object_get(app, "status");
        return json_is_integer(st) ? (int)json_integer_value(st) : -1;
}

/*
 * API: `launch` with "wait": true and three /dev/null descriptors as the
 * application's stdio, then `wait` on the same connection, as `tessera
 * launch --wait` does it.  Only the two calls are timed.
 */
static int api_launch_wait(struct bench *b, struct launch_cost *c, char *why, size_t size)
{
        struct tessera_error err = {0};
        int r = daemon_connect(&b->d, &err);
        if (r < 0) {
                snprintf(why, size, "%s", err.msg);
                return r;
        }
        json_t *req = json_pack("{s:s, s:[s], s:b}", "name", ENCLAVE, "argv", "/bin/true", "wait", 1);
        const int stdio[3] = {b->run.devnull, b->run.devnull, b->run.devnull};
        void *app = NULL, *ended = NULL;
        struct tree_times t0, t1;
        tree_times_read(b, &t0);
        uint64_t start = now_ns();
        r = tessera_client_call_fds(b->d.client, "launch", req, stdio, 3, &app, NULL, NULL, &err);
        uint64_t launched = now_ns();
        json_t *wreq = NULL;
        const char *name = r == 0 ? json_string_value(json_object_get(app, "name")) : NULL;
        if (r == 0 && !name)
                r = tessera_error_set(&err, EPROTO, "the reply to launch names no application");
        if (r == 0) {
                wreq = json_pack("{s:s, s:s}", "name", ENCLAVE, "app", name);
                launched = now_ns();
                r = tessera_client_call(b->d.client, "wait", wreq, &ended, &err);
        }
        uint64_t end = now_ns();
        tree_times_read(b, &t1);
        c->wall = (double)(end - start) / 1e6;
        c->launch = (double)(launched - start) / 1e6;
        c->wait = (double)(end - launched) / 1e6;
        cost_from(&t0, &t1, c);
        if (r < 0)
                snprintf(why, size, "%s", err.msg);
        else if (app_status(ended) != 0) {
                snprintf(why, size, "/bin/true launched through the API ended with status %d", app_status(ended));
                r = -EIO;
        }
        json_decref(req);
        json_decref(wreq);
        json_decref(app);
        json_decref(ended);
        return r;
}

static int cli_launch_wait(struct bench *b, double *ms, char *why, size_t size)
{
        char *argv[] = {b->run.tessera, "--socket", b->d.socket, "launch", ENCLAVE, "--wait", "--", "/bin/true", NULL};
        return run_timed(&b->run, argv, NULL, ms, why, size);
}

static int nsenter_true(struct bench *b, double *ms, char *why, size_t size)
{
        char pid[16];
        snprintf(pid, sizeof(pid), "%d", (int)b->supervisor);
        char *argv[] = {b->nsenter, "-t", pid, "-a", "/bin/true", NULL};
        return run_timed(&b->run, argv, NULL, ms, why, size);
}

static int spawn_true(struct bench *b, double *ms, char *why, size_t size)
{
        char *argv[] = {b->true_bin, NULL};
        return run_timed(&b->run, argv, NULL, ms, why, size);
}

static int crun_exec_true(struct bench *b, double *ms, char *why, size_t size)
{
        static const char *const tail[] = {"/bin/true", NULL};
        return crun_cmd(&b->run, &b->cr, "exec", NULL, b->cr.live, tail, ms, why, size);
}

/* One sample of `way`; the idle pace sleeps first so that the kernel has nothing pending from the last one. */
static int one_sample(struct bench *b, enum way way, enum pace pace, unsigned i, bool record)
{
        struct samples *s = &b->one[pace][way];
        char why[512];
        double ms = 0;
        struct launch_cost c = {0};
        int r;
        if (s->failed[0])
                return -1;
        if (pace == PACE_IDLE && way != WAY_CGMOVE)
                sleep_ms(b->gap_ms);
        switch (way) {
        case WAY_API:
                r = api_launch_wait(b, &c, why, sizeof(why));
                ms = c.wall;
                break;
        case WAY_CLI: r = cli_launch_wait(b, &ms, why, sizeof(why)); break;
        case WAY_NSENTER: r = nsenter_true(b, &ms, why, sizeof(why)); break;
        case WAY_CRUN: r = crun_exec_true(b, &ms, why, sizeof(why)); break;
        case WAY_SPAWN: r = spawn_true(b, &ms, why, sizeof(why)); break;
        case WAY_CGMOVE: r = cgmove_once(b, i, pace == PACE_IDLE ? b->gap_ms : 0, &ms, why, sizeof(why)); break;
        default: return -1;
        }
        if (r < 0) {
                samples_fail(s, "%s", why);
                return -1;
        }
        if (!record)
                return 0;
        samples_add(s, ms);
        if (way == WAY_API) {
                const double parts[_COST_MAX] = {
                        [COST_LAUNCH] = c.launch,
                        [COST_WAIT] = c.wait,
                        [COST_DAEMON_CPU] = c.daemon_cpu,
                        [COST_DAEMON_QUEUED] = c.daemon_queued,
                        [COST_DAEMON_OFF] = c.wall - c.daemon_cpu - c.daemon_queued,
                        [COST_SUP_CPU] = c.sup_cpu,
                        [COST_SUP_QUEUED] = c.sup_queued,
                        [COST_HELPERS_CPU] = c.helpers_cpu,
                };
                for (int p = 0; p < _COST_MAX; p++)
                        if (!isnan(parts[p]))
                                samples_add(&b->cost[pace][p], parts[p]);
        }
        return 0;
}

/*
 * The ways in `ways`, each `iterations` times after one unrecorded warm-up.
 * After an idle gap: the ways take turns, the order rotating every
 * iteration, so that a slow drift of the machine hits all alike.  Back to
 * back: one way's samples in a row, as a script launching in a loop does.
 */
static void time_ways(struct bench *b, const enum way *ways, size_t n)
{
        for (size_t w = 0; w < n; w++)
                (void)one_sample(b, ways[w], PACE_IDLE, 0, false);
        for (unsigned i = 1; i <= b->iterations && !interrupted(&b->run); i++)
                for (size_t k = 0; k < n; k++)
                        (void)one_sample(b, ways[(i + k) % n], PACE_IDLE, i, true);
        for (size_t w = 0; w < n && !interrupted(&b->run); w++)
                for (unsigned i = 0; i <= b->iterations && !interrupted(&b->run); i++)
                        (void)one_sample(b, ways[w], PACE_B2B, b->iterations + 1 + i, i > 0);
}

static void fail_way(struct bench *b, enum way way, const char *why)
{
        for (int p = 0; p < _PACE_MAX; p++)
                samples_fail(&b->one[p][way], "%s", why);
}

/* ---- crun exec into a running container ---- */

static void bench_crun(struct bench *b)
{
        static const char *const sleep_args[] = {"/bin/sleep", "1000", NULL};
        static const char *const detach[] = {"--detach", NULL};
        char why[512];
        if (!b->cr.bin[0] || !b->cr.busybox[0]) {
                fail_way(b, WAY_CRUN, !b->cr.bin[0] ? "crun not installed" : "busybox(-static) not installed");
                return;
        }
        char *v[] = {b->cr.bin, "--version", NULL};
        capture_line(&b->run, v, b->crun_version, sizeof(b->crun_version));
        if (crun_bundle_make(&b->run, &b->cr, sleep_args, why, sizeof(why)) < 0) {
                fail_way(b, WAY_CRUN, why);
                return;
        }
        if (b->cr.prepare)
                hugetlb_mount(&b->cr);
        fprintf(stderr, "launch: crun exec (%u iterations after a %u ms gap and back to back)\n", b->iterations,
                b->gap_ms);
        snprintf(b->cr.live, sizeof(b->cr.live), "tbl%d", (int)getpid());
        if (crun_cmd(&b->run, &b->cr, "run", detach, b->cr.live, NULL, NULL, why, sizeof(why)) < 0) {
                if (!b->cr.prepare && strstr(why, "hybrid"))
                        strncat(why, " (run with --prepare-crun)", sizeof(why) - strlen(why) - 1);
                fail_way(b, WAY_CRUN, why);
        } else {
                static const enum way crun_ways[] = {WAY_CRUN};
                time_ways(b, crun_ways, ELEMENTSOF(crun_ways));
        }
        crun_env_cleanup(&b->run, &b->cr);
}

/* ---- Tessera: the daemon and its enclave ---- */

static int create_enclave(struct bench *b, const char *name)
{
        struct tessera_error err = {0};
        json_t *req = json_pack("{s:{s:s, s:i, s:s}}", "spec", "name", name, "cpus", 1, "memory", "256M");
        void *res = NULL;
        int r = daemon_connect(&b->d, &err);
        if (r == 0)
                r = tessera_client_call(b->d.client, "create", req, &res, &err);
        json_decref(req);
        json_decref(res);
        return r < 0 ? fatal(&b->run, "creating enclave '%s' (1 core, 256M, the host's root): %s", name, err.msg) : 0;
}

static int destroy_enclave(struct bench *b, const char *name)
{
        struct tessera_error err = {0};
        json_t *req = json_pack("{s:s}", "name", name);
        void *res = NULL;
        int r = tessera_client_call(b->d.client, "destroy", req, &res, &err);
        json_decref(req);
        json_decref(res);
        return r < 0 ? fatal(&b->run, "destroying enclave '%s': %s", name, err.msg) : 0;
}

/* The enclave's supervisor, from `list` (what `tessera --json list` prints as supervisor_pid). */
static int find_supervisor(struct bench *b, const char *name)
{
        struct tessera_error err = {0};
        void *res = NULL;
        if (tessera_client_call(b->d.client, "list", NULL, &res, &err) < 0)
                return fatal(&b->run, "list: %s", err.msg);
        size_t i;
        json_t *e;
        json_array_foreach((json_t *)res, i, e)
        {
                if (!STREQ(json_string_value(json_object_get(e, "name")) ?: "", name))
                        continue;
                b->supervisor = (pid_t)json_integer_value(json_object_get(e, "supervisor_pid"));
                size_t k;
                json_t *ns;
                json_array_foreach(json_object_get(e, "namespaces"), k, ns)
                {
                        size_t len = strlen(b->namespaces);
                        snprintf(b->namespaces + len, sizeof(b->namespaces) - len, "%s%s", len ? ", " : "",
                                 json_string_value(ns) ?: "?");
                }
        }
        json_decref(res);
        if (b->supervisor <= 0)
                return fatal(&b->run, "`list` gives no supervisor_pid for enclave '%s'", name);
        return 0;
}

static int bench_single(struct bench *b)
{
        static const enum way ways[] = {WAY_API, WAY_CLI, WAY_NSENTER, WAY_SPAWN, WAY_CGMOVE};
        fprintf(stderr,
                "launch: one at a time: API, CLI, nsenter, spawn, cgroup move (%u iterations after a %u ms gap "
                "and back to back)\n",
                b->iterations, b->gap_ms);
        char why[512];
        if (!b->nsenter[0])
                fail_way(b, WAY_NSENTER, "nsenter (util-linux) not installed");
        if (!b->true_bin[0])
                fail_way(b, WAY_SPAWN, "no /bin/true");
        if (kernel_cg_make(b, why, sizeof(why)) < 0)
                fail_way(b, WAY_CGMOVE, why);
        time_ways(b, ways, ELEMENTSOF(ways));
        kernel_cg_remove(b);
        if (b->one[PACE_IDLE][WAY_API].failed[0])
                return fatal(&b->run, "API launch: %s", b->one[PACE_IDLE][WAY_API].failed);
        return 0;
}

/* ---- many at once ---- */

static int send_frame(int fd, json_t *msg, char *why, size_t size)
{
        struct tessera_error err = {0};
        int r = proto_send(fd, msg, NULL, 0, &err);
        if (r < 0)
                snprintf(why, size, "sending to tesserad: %s", err.msg);
        return r;
}

/* One reply on a pipelined connection; its app object (borrowed from *ret_reply) or NULL with `why`. */
static json_t *recv_app(int fd, json_t **ret_reply, char *why, size_t size)
{
        struct tessera_error err = {0};
        json_t *reply = NULL, *app = NULL;
        size_t no_fds = 0;
        *ret_reply = NULL;
        if (proto_recv(fd, &reply, NULL, &no_fds, &err) < 0 || proto_reply_result(reply, &app, &err) < 0) {
                snprintf(why, size, "%s", err.msg);
                json_decref(reply);
                return NULL;
        }
        *ret_reply = reply;
        return app;
}

struct burst_app {
        char name[64];
        uint64_t sent, replied, ended;
};

static struct burst_app *burst_find(struct burst_app *apps, size_t n, const char *name)
{
        for (size_t i = 0; i < n; i++)
                if (STREQ(apps[i].name, name))
                        return &apps[i];
        return NULL;
}

/*
 * `n` launches of /bin/true without wait, written back to back on one new
 * connection before any reply is read (tesserad serves a connection's
 * requests in order); each launch's reply is answered with a `wait` on the
 * same connection; done when every wait has answered.  Per application:
 * request sent, launch answered, end known.
 */
static int api_burst(struct bench *b, const char *enclave, struct burst_app *apps, size_t n, double *ret_total,
                     char *why, size_t size)
{
        struct tessera_client *c = NULL;
        struct tessera_error err = {0};
        if (tessera_client_connect(b->d.socket, &c, &err) < 0) {
                snprintf(why, size, "%s", err.msg);
                return -EIO;
        }
        int fd = tessera_client_fd(c), r = 0;
        json_t *req = json_pack("{s:i, s:s, s:s, s:[s]}", "version", TESSERA_PROTO_VERSION, "op", "launch", "name",
                                enclave, "argv", "/bin/true");
        uint64_t t0 = now_ns();
        for (size_t i = 0; i < n && r == 0; i++) {
                apps[i].sent = now_ns();
                r = send_frame(fd, req, why, size);
        }
        json_decref(req);
        /* the launch replies come first and in order: every launch frame is ahead of every wait frame */
        for (size_t i = 0; i < n && r == 0; i++) {
                json_t *reply, *app = recv_app(fd, &reply, why, size);
                apps[i].replied = now_ns();
                const char *name = json_string_value(json_object_get(app, "name"));
                if (!name) {
                        if (app)
                                snprintf(why, size, "the reply to launch names no application");
                        r = -EIO;
                } else {
                        snprintf(apps[i].name, sizeof(apps[i].name), "%s", name);
                        json_t *w = json_pack("{s:i, s:s, s:s, s:s}", "version", TESSERA_PROTO_VERSION, "op", "wait",
                                              "name", enclave, "app", name);
                        r = send_frame(fd, w, why, size);
                        json_decref(w);
                }
                json_decref(reply);
        }
        for (size_t done = 0; done < n && r == 0; done++) {
                json_t *reply, *app = recv_app(fd, &reply, why, size);
                uint64_t t = now_ns();
                struct burst_app *a =
                        app ? burst_find(apps, n, json_string_value(json_object_get(app, "name")) ?: "") : NULL;
                if (!a) {
                        if (app)
                                snprintf(why, size, "a reply to wait names an application that was not launched");
                        r = -EIO;
                } else if (app_status(app) != 0) {
                        snprintf(why, size, "/bin/true (%s) ended with status %d", a->name, app_status(app));
                        r = -EIO;
                } else {
                        a->ended = t;
                }
                json_decref(reply);
        }
        *ret_total = ms_since(t0);
        tessera_client_free(c);
        return r;
}

/* `n` nsenter into the enclave, forked back to back, each reaped as soon as it ends (seen through its pidfd). */
static int nsenter_burst(struct bench *b, struct burst_app *apps, size_t n, double *ret_total, char *why, size_t size)
{
        char pid_arg[16];
        snprintf(pid_arg, sizeof(pid_arg), "%d", (int)b->supervisor);
        char *argv[] = {b->nsenter, "-t", pid_arg, "-a", "/bin/true", NULL};
        _cleanup_free_ struct pollfd *p = calloc(n, sizeof(*p));
        _cleanup_free_ pid_t *pids = calloc(n, sizeof(*pids));
        if (!p || !pids) {
                snprintf(why, size, "out of memory");
                return -ENOMEM;
        }
        int r = 0;
        size_t started = 0, left = 0;
        uint64_t t0 = now_ns();
        for (; started < n && r == 0; started++) {
                struct spawn_opts o = {.out_fd = -1, .err_fd = -1};
                apps[started].sent = now_ns();
                p[started].fd = -1;
                pids[started] = spawn(&b->run, argv, &o);
                if (pids[started] < 0) {
                        snprintf(why, size, "cannot fork nsenter: %s", strerror(-pids[started]));
                        r = pids[started];
                        pids[started] = 0;
                        break;
                }
                p[started].fd = (int)syscall(SYS_pidfd_open, pids[started], 0);
                p[started].events = POLLIN;
                if (p[started].fd < 0) {
                        snprintf(why, size, "pidfd_open of nsenter %d: %s", (int)pids[started], strerror(errno));
                        r = -errno;
                } else {
                        left++;
                }
        }
        while (left > 0) {
                int ready = poll(p, started, 10000);
                if (ready < 0 && errno == EINTR)
                        continue;
                if (ready <= 0) {
                        snprintf(why, size, "nsenter did not end within 10 s");
                        r = -ETIMEDOUT;
                        break;
                }
                for (size_t i = 0; i < started; i++) {
                        if (p[i].fd < 0 || !(p[i].revents & POLLIN))
                                continue;
                        apps[i].ended = now_ns();
                        int st = wait_status(pids[i]);
                        close(p[i].fd);
                        p[i].fd = -1;
                        pids[i] = 0;
                        left--;
                        if (st != 0 && r == 0) {
                                snprintf(why, size, "`nsenter -a /bin/true` exited %d", st);
                                r = -EIO;
                        }
                }
        }
        *ret_total = ms_since(t0);
        /* a child whose pidfd could not be made, or that outlived the poll, is reaped here */
        for (size_t i = 0; i < started; i++) {
                if (p[i].fd >= 0)
                        close(p[i].fd);
                if (pids[i] > 0) {
                        (void)kill(pids[i], SIGKILL);
                        (void)wait_status(pids[i]);
                }
        }
        return r;
}

static void record_burst(struct bench *b, enum burst_side side, const struct burst_app *apps, size_t n, double total)
{
        samples_add(&b->burst_total[side], total);
        for (size_t i = 0; i < n; i++) {
                samples_add(&b->burst_each[side], (double)(apps[i].ended - apps[i].sent) / 1e6);
                if (side == BURST_API)
                        samples_add(&b->burst_reply, (double)(apps[i].replied - apps[i].sent) / 1e6);
        }
}

static void bench_burst(struct bench *b)
{
        fprintf(stderr, "launch: %u at once, %u rounds (API and nsenter)\n", b->burst, b->rounds);
        _cleanup_free_ struct burst_app *apps = calloc(b->burst, sizeof(*apps));
        if (!apps) {
                samples_fail(&b->burst_total[BURST_API], "out of memory");
                return;
        }
        if (!b->nsenter[0])
                samples_fail(&b->burst_total[BURST_NSENTER], "nsenter (util-linux) not installed");
        char why[512];
        for (unsigned round = 1; round <= b->rounds && !interrupted(&b->run); round++) {
                /* alternate which goes first, so that neither always follows the other's aftermath */
                for (int k = 0; k < _BURST_MAX; k++) {
                        enum burst_side side = (enum burst_side)((k + round) % _BURST_MAX);
                        if (b->burst_total[side].failed[0])
                                continue;
                        double total;
                        memset(apps, 0, b->burst * sizeof(*apps));
                        sleep_ms(b->gap_ms);
                        int r = side == BURST_API ? api_burst(b, ENCLAVE, apps, b->burst, &total, why, sizeof(why))
                                                  : nsenter_burst(b, apps, b->burst, &total, why, sizeof(why));
                        if (r < 0)
                                samples_fail(&b->burst_total[side], "%s", why);
                        else
                                record_burst(b, side, apps, b->burst, total);
                }
        }
}

/* ---- listing recorded applications ---- */

static int list_apps_api(struct bench *b, double *ms, char *why, size_t size)
{
        struct tessera_error err = {0};
        void *res = NULL;
        json_t *req = json_object();
        uint64_t t0 = now_ns();
        int r = tessera_client_call(b->d.client, "apps", req, &res, &err);
        *ms = ms_since(t0);
        json_decref(req);
        if (r < 0)
                snprintf(why, size, "apps: %s", err.msg);
        else
                b->apps_listed = json_array_size(res);
        json_decref(res);
        return r;
}

/*
 * The first enclave (and with it every application it recorded) goes; a new
 * one gets `recorded` /bin/true launched and waited for, in bursts; then
 * `apps` lists them all.
 */
static int bench_listing(struct bench *b)
{
        fprintf(stderr, "launch: %u finished applications recorded, then `apps` (%u iterations, API and CLI)\n",
                b->recorded, b->iterations);
        if (destroy_enclave(b, ENCLAVE) < 0 || create_enclave(b, RECORD_ENCLAVE) < 0)
                return -1;
        size_t chunk = b->burst;
        _cleanup_free_ struct burst_app *apps = calloc(chunk, sizeof(*apps));
        if (!apps)
                return fatal(&b->run, "out of memory");
        char why[512];
        uint64_t t0 = now_ns();
        for (size_t done = 0; done < b->recorded && !interrupted(&b->run);) {
                size_t n = b->recorded - done < chunk ? b->recorded - done : chunk;
                double total;
                if (api_burst(b, RECORD_ENCLAVE, apps, n, &total, why, sizeof(why)) < 0)
                        return fatal(&b->run, "recording %u applications: %s", b->recorded, why);
                done += n;
        }
        b->record_ms = ms_since(t0);
        char *argv[] = {b->run.tessera, "--socket", b->d.socket, "apps", NULL};
        for (unsigned i = 0; i <= b->iterations && !interrupted(&b->run); i++) {
                double api_ms, cli_ms;
                bool cli_first = i % 2;
                int r = 0;
                if (cli_first && !b->apps_cli.failed[0] &&
                    run_timed(&b->run, argv, NULL, &cli_ms, why, sizeof(why)) < 0)
                        samples_fail(&b->apps_cli, "%s", why);
                if (list_apps_api(b, &api_ms, why, sizeof(why)) < 0)
                        r = -1;
                if (!cli_first && !b->apps_cli.failed[0] &&
                    run_timed(&b->run, argv, NULL, &cli_ms, why, sizeof(why)) < 0)
                        samples_fail(&b->apps_cli, "%s", why);
                if (r < 0) {
                        samples_fail(&b->apps_api, "%s", why);
                        break;
                }
                if (i > 0) {
                        samples_add(&b->apps_api, api_ms);
                        if (!b->apps_cli.failed[0])
                                samples_add(&b->apps_cli, cli_ms);
                }
        }
        return 0;
}

static int bench_tessera(struct bench *b)
{
        if (daemon_start(&b->run, &b->d) < 0 || create_enclave(b, ENCLAVE) < 0 || find_supervisor(b, ENCLAVE) < 0)
                return -1;
        find_helpers(b);
        if (bench_single(b) < 0 || interrupted(&b->run))
                return -1;
        bench_burst(b);
        if (interrupted(&b->run))
                return -1;
        if (bench_listing(b) < 0)
                return -1;
        b->rss_kb_end = rss_kb(b->d.pid);
        return 0;
}

/* ---- cleanup: everything this run made, in reverse ---- */

static void bench_cleanup(struct bench *b)
{
        crun_env_cleanup(&b->run, &b->cr);
        kernel_cg_remove(b);
        daemon_cleanup(&b->run, &b->d, true);
        bench_run_close(&b->run);
}

/* ---- the report ---- */

static void print_header(struct bench *b)
{
        print_run_header(&b->run, "Tessera application launch benchmark", b->load_start, b->load_end);
        printf("# peers:    %s; %s\n", b->crun_version[0] ? b->crun_version : "crun: none", "util-linux nsenter");
        printf("# enclave:  1 core, 256M, the host's root (no root:), namespaces %s\n",
               b->namespaces[0] ? b->namespaces : "?");
        printf("# runs:     %u iterations per way and pace after one unrecorded warm-up; %u at once x %u rounds; "
               "median (p90) in ms\n",
               b->iterations, b->burst, b->rounds);
        printf("# paces:    idle = a %u ms pause before each sample (the ways take turns); back to back = one way's "
               "samples in a row\n",
               b->gap_ms);
        printf("# API = tessera_client_call_fds(launch, wait: true, /dev/null x3) + tessera_client_call(wait) on one "
               "open connection;\n# CLI and every peer = fork+exec+wait from this process, as a shell would\n");
        if (b->cr.hugetlb_note[0])
                printf("# host change: %s\n", b->cr.hugetlb_note);
        printf("\n");
}

static void print_single(struct bench *b)
{
        printf("%-52s %-17s %-9s %-9s %-17s %-9s %-9s\n", "launch /bin/true and wait for its end", "idle gap",
               "/nsenter", "/floor", "back to back", "/nsenter", "/floor");
        for (int w = 0; w < _WAY_MAX; w++) {
                char cell[_PACE_MAX][48], rn[_PACE_MAX][16], rf[_PACE_MAX][16];
                for (int p = 0; p < _PACE_MAX; p++) {
                        fmt_cell(&b->run, &b->one[p][w], cell[p], sizeof(cell[p]));
                        double m = median(&b->one[p][w]);
                        bool launch = w != WAY_CGMOVE;
                        fmt_ratio(m, launch && w != WAY_NSENTER ? median(&b->one[p][WAY_NSENTER]) : NAN, rn[p],
                                  sizeof(rn[p]));
                        fmt_ratio(m, launch && w != WAY_SPAWN ? median(&b->one[p][WAY_SPAWN]) : NAN, rf[p],
                                  sizeof(rf[p]));
                }
                printf("%-52s %-17s %-9s %-9s %-17s %-9s %-9s\n", way_label[w], cell[PACE_IDLE], rn[PACE_IDLE],
                       rf[PACE_IDLE], cell[PACE_B2B], rn[PACE_B2B], rf[PACE_B2B]);
        }
        printf("(/nsenter, /floor: the row's median over nsenter's and over the spawn floor's at the same pace)\n");
}

static void print_burst(struct bench *b)
{
        printf("\n%u applications at once, then wait for all (%u rounds)\n", b->burst, b->rounds);
        printf("  %-50s %-19s %-22s %-12s\n", "", "total", "each: start -> end", "total / n");
        static const char *const label[_BURST_MAX] = {
                [BURST_API] = "Tessera API: n launches pipelined on 1 connection",
                [BURST_NSENTER] = "nsenter -a /bin/true: n forks, then reap",
        };
        for (int s = 0; s < _BURST_MAX; s++) {
                char total[48], each[48], per[16] = "-";
                fmt_cell(&b->run, &b->burst_total[s], total, sizeof(total));
                fmt_cell(&b->run, &b->burst_each[s], each, sizeof(each));
                double t = median(&b->burst_total[s]);
                if (!isnan(t))
                        snprintf(per, sizeof(per), "%.3f", t / b->burst);
                printf("  %-50s %-19s %-22s %-12s\n", label[s], total, each, per);
        }
        char rt[16], re[16];
        fmt_ratio(median(&b->burst_total[BURST_API]), median(&b->burst_total[BURST_NSENTER]), rt, sizeof(rt));
        fmt_ratio(median(&b->burst_each[BURST_API]), median(&b->burst_each[BURST_NSENTER]), re, sizeof(re));
        printf("  %-50s %-19s %-22s\n", "API / nsenter", rt, re);
        if (b->burst_reply.n)
                printf("  (API: request -> launch reply, per application: median %.3f ms, p90 %.3f ms; start -> end "
                       "includes waiting behind the earlier ones)\n",
                       median(&b->burst_reply), p90(&b->burst_reply));
}

static void print_listing(struct bench *b)
{
        char api[48], cli[48];
        fmt_cell(&b->run, &b->apps_api, api, sizeof(api));
        fmt_cell(&b->run, &b->apps_cli, cli, sizeof(cli));
        printf("\nlisting %u finished applications (%zu listed)\n", b->recorded, b->apps_listed);
        printf("  %-50s %s\n", "Tessera API: apps", api);
        printf("  %-50s %s\n", "Tessera CLI: tessera apps (stdout to /dev/null)", cli);
        if (b->record_ms > 0)
                printf("  (recording them: %u launches + waits in bursts of %u took %.0f ms, %.3f ms per "
                       "application)\n",
                       b->recorded, b->burst, b->record_ms, b->record_ms / b->recorded);
}

static void print_target_pair(struct bench *b, enum pace p, const char *pace_name)
{
        double api = median(&b->one[p][WAY_API]), cli = median(&b->one[p][WAY_CLI]);
        double ns = median(&b->one[p][WAY_NSENTER]);
        if (isnan(api)) {
                printf("  launch + wait %-14s API n/a\n", pace_name);
                return;
        }
        printf("  %-14s <= %.0f ms          API %7.3f ms %s", pace_name, TARGET_MS, api, verdict(api <= TARGET_MS));
        if (api > TARGET_MS)
                printf(" by %.3f ms", api - TARGET_MS);
        if (!isnan(cli))
                printf("   (CLI %7.3f ms %s)", cli, verdict(cli <= TARGET_MS));
        printf("\n");
        if (isnan(ns)) {
                printf("  %-14s <= nsenter: not checked (nsenter did not run, see its row)\n", pace_name);
                return;
        }
        printf("  %-14s <= nsenter %6.3f ms  API %7.3f ms %s", pace_name, ns, api, verdict(api <= ns));
        if (api > ns)
                printf(" by %.3f ms (%.1fx)", api - ns, api / ns);
        if (!isnan(cli))
                printf("   (CLI %7.3f ms %s)", cli, verdict(cli <= ns));
        printf("\n");
}

static void print_targets(struct bench *b)
{
        printf("\ntargets (the issue: launch + wait of /bin/true at most %.0f ms median, and no slower than "
               "nsenter):\n",
               TARGET_MS);
        print_target_pair(b, PACE_IDLE, "idle gap");
        print_target_pair(b, PACE_B2B, "back to back");
        printf("  tesserad VmRSS after the run: %.1f MiB\n", b->rss_kb_end / 1024.0);
}

static void print_breakdown(struct bench *b)
{
        static const char *const pace_name[_PACE_MAX] = {[PACE_IDLE] = "idle gap", [PACE_B2B] = "back to back"};
        printf("\nwhere the API launch + wait goes (medians in ms, which do not add up; on CPU and CPU-queued from "
               "/proc/PID/schedstat):\n");
        printf("  %-13s %8s %8s %8s | %9s %8s %8s | %10s %8s | %8s | %s\n", "pace", "wall", "launch", "wait",
               "tesserad", "queued", "off CPU", "supervisor", "queued", "helpers",
               "kernel: pid -> new v1 cgroup (same pace)");
        for (int p = 0; p < _PACE_MAX; p++) {
                const struct samples *c = b->cost[p];
                if (!b->one[p][WAY_API].n)
                        continue;
                char helpers[16] = "-";
                if (b->n_helpers)
                        snprintf(helpers, sizeof(helpers), "%.3f", median(&c[COST_HELPERS_CPU]));
                printf("  %-13s %8.3f %8.3f %8.3f | %9.3f %8.3f %8.3f | %10.3f %8.3f | %8s | %.3f (p90 %.3f)\n",
                       pace_name[p], median(&b->one[p][WAY_API]), median(&c[COST_LAUNCH]), median(&c[COST_WAIT]),
                       median(&c[COST_DAEMON_CPU]), median(&c[COST_DAEMON_QUEUED]), median(&c[COST_DAEMON_OFF]),
                       median(&c[COST_SUP_CPU]), median(&c[COST_SUP_QUEUED]), helpers, median(&b->one[p][WAY_CGMOVE]),
                       p90(&b->one[p][WAY_CGMOVE]));
        }
        printf("  launch = the launch call (tesserad: a cgroup leaf or a prewarmed one, the supervisor's fork, the "
               "move into the leaf, exec, ledger commit);\n  wait = until the end is recorded and answered; "
               "tesserad, supervisor = their own time on a CPU, queued = waiting for one;\n  off CPU = tesserad "
               "blocked in the kernel (disk sync, cgroup locks, RCU) or idle waiting for the supervisor and the end;\n"
               "  helpers = tesserad's other children%s\n",
               b->n_helpers ? " (their time on a CPU)" : " (none here)");
        double move = median(&b->one[PACE_IDLE][WAY_CGMOVE]), api = median(&b->one[PACE_IDLE][WAY_API]);
        if (!isnan(move) && move > TARGET_MS)
                note(&b->run,
                     "kernel: after a %u ms idle gap, writing a pid into a new v1 cgroup leaf takes %.3f ms here "
                     "(median; back to back %.3f ms), above the %.0f ms target before any daemon work (API launch + "
                     "wait: %.3f ms).  On cgroup v1 the write takes cgroup_mutex, then cgroup_threadgroup_rwsem for "
                     "writing, whose rcu_sync waits for an RCU grace period unless another move ran within about "
                     "one; meanwhile every other cgroup mkdir or rmdir on the node waits for cgroup_mutex.  nsenter "
                     "moves no process between cgroups.\n",
                     b->gap_ms, move, median(&b->one[PACE_B2B][WAY_CGMOVE]), TARGET_MS, api);
}

static void print_report(struct bench *b)
{
        print_header(b);
        print_single(b);
        print_burst(b);
        print_listing(b);
        print_targets(b);
        print_breakdown(b);
        printf("\nnotes:\n%s", b->run.notes[0] ? b->run.notes : "(none)\n");
        if (b->run.fatal[0])
                printf("\nRUN FAILED: %s\n", b->run.fatal);
        if (b->run.interrupted)
                printf("\nINTERRUPTED: the figures above are partial\n");
}

/* ---- options and setup ---- */

static void usage(FILE *f)
{
        fprintf(f, "usage: launch [--iterations N] [--gap MS] [--burst N] [--rounds N] [--recorded N]\n"
                   "              [--sync full|normal] [--prepare-crun] [--build DIR] [--source DIR]\n"
                   "  --iterations N   samples per way and pace (default 30)\n"
                   "  --gap MS         the idle pace's pause before each sample (default 100)\n"
                   "  --burst N        applications launched at once (default 100)\n"
                   "  --rounds N       rounds of the at-once test (default 3)\n"
                   "  --recorded N     finished applications recorded before timing `apps` (default 1000)\n"
                   "  --prepare-crun   (or TESSERA_BENCH_PREPARE_CRUN=1) let crun run on this hybrid cgroup host by\n"
                   "                   mounting a v1 hugetlb hierarchy for the crun section only (a host-wide change,\n"
                   "                   undone right after it)\n"
                   "needs root: it makes cgroups and namespaces, all named with its pid.\n");
}

static int count_option(const char *name, const char *arg, unsigned *ret)
{
        if (parse_count(arg, ret) == 0)
                return 0;
        fprintf(stderr, "launch: --%s: '%s' is not a count from 1 to 100000\n", name, arg);
        return -EINVAL;
}

static int parse_options(struct bench *b, int argc, char **argv)
{
        static const struct option opts[] = {
                {"iterations", required_argument, NULL, 'n'},
                {"gap", required_argument, NULL, 'g'},
                {"burst", required_argument, NULL, 'B'},
                {"rounds", required_argument, NULL, 'R'},
                {"recorded", required_argument, NULL, 'r'},
                {"sync", required_argument, NULL, 's'},
                {"prepare-crun", no_argument, NULL, 'P'},
                {"build", required_argument, NULL, 'b'},
                {"source", required_argument, NULL, 'S'},
                {"help", no_argument, NULL, 'h'},
                {0},
        };
        const char *build = NULL, *source = NULL;
        int c, r = 0;
        b->iterations = 30;
        b->gap_ms = 100;
        b->burst = 100;
        b->rounds = 3;
        b->recorded = 1000;
        while (r == 0 && (c = getopt_long(argc, argv, "n:h", opts, NULL)) != -1) {
                switch (c) {
                case 'n': r = count_option("iterations", optarg, &b->iterations); break;
                case 'g': r = count_option("gap", optarg, &b->gap_ms); break;
                case 'B': r = count_option("burst", optarg, &b->burst); break;
                case 'R': r = count_option("rounds", optarg, &b->rounds); break;
                case 'r': r = count_option("recorded", optarg, &b->recorded); break;
                case 's':
                        if (!STREQ(optarg, "full") && !STREQ(optarg, "normal")) {
                                fprintf(stderr, "launch: --sync: '%s' is neither full nor normal\n", optarg);
                                return -EINVAL;
                        }
                        b->run.sync = optarg;
                        break;
                case 'P': b->cr.prepare = true; break;
                case 'b': build = optarg; break;
                case 'S': source = optarg; break;
                case 'h': usage(stdout); return 1;
                default: usage(stderr); return -EINVAL;
                }
        }
        if (r < 0)
                return r;
        if (optind < argc) {
                fprintf(stderr, "launch: unexpected argument '%s'\n", argv[optind]);
                usage(stderr);
                return -EINVAL;
        }
        if (bench_find_build(&b->run, build) < 0) {
                fprintf(stderr, "launch: no tesserad and tessera under %s/src; give the build directory with --build\n",
                        b->run.build);
                return -ENOENT;
        }
        snprintf(b->run.source, sizeof(b->run.source), "%s", source ? source : BENCH_SOURCE_ROOT);
        return 0;
}

static int run_all(struct bench *b)
{
        /* crun first: its hugetlb mount must come and go before our tesserad opens the hierarchies */
        bench_crun(b);
        if (interrupted(&b->run))
                return -1;
        return bench_tessera(b);
}

int main(int argc, char **argv)
{
        static struct bench b = {.run = BENCH_RUN_INIT("launch")};
        crun_env_init(&b.cr);
        int r = parse_options(&b, argc, argv);
        if (r != 0)
                return r > 0 ? 0 : 2;
        if (geteuid() != 0) {
                fprintf(stderr, "launch: needs root (cgroups, namespaces)\n");
                return 77;
        }
        (void)find_tool("nsenter", b.nsenter, sizeof(b.nsenter));
        (void)find_tool("true", b.true_bin, sizeof(b.true_bin));
        (void)find_tool("git", b.run.git, sizeof(b.run.git));
        if (bench_run_open(&b.run) < 0)
                return 1;
        static const char *const flags[] = {"--host-cpus", "", "--host-memory", "2G", NULL};
        daemon_init(&b.run, &b.d, "launch", flags);

        read_loadavg(b.load_start, sizeof(b.load_start));
        r = run_all(&b);
        read_loadavg(b.load_end, sizeof(b.load_end));
        if (r < 0 && b.run.fatal[0]) {
                char said[512];
                daemon_log_tail(&b.d, said, sizeof(said));
                if (said[0])
                        note(&b.run, "last line of tesserad: %s\n", said);
        }
        print_report(&b);
        fflush(stdout);
        bench_cleanup(&b);
        if (b.run.interrupted)
                return 130;
        return b.run.fatal[0] ? 1 : 0;
}
