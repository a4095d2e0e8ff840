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
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <net/if.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <jansson.h>

#include "common.h"
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

/* What one API call cost: wall time at the client, and the daemon's own CPU and run-queue wait. */
struct op_cost {
        double wall, cpu, wait; /* ms; cpu and wait are NAN when schedstat is unreadable */
};

struct bench {
        struct bench_run run; /* build, tesserad, tmp, log, fatal, notes, interruption */
        struct crun_env cr;
        /* options */
        char topology[PATH_MAX];
        unsigned iterations, crun_iterations;
        /* tools, absolute paths ("" when missing) */
        char ip[PATH_MAX], nsenter[PATH_MAX], unshare[PATH_MAX], cgcreate[PATH_MAX], cgset[PATH_MAX],
                cgdelete[PATH_MAX], true_bin[PATH_MAX];
        /* everything below is owned and undone by bench_cleanup() */
        struct daemon main, ledger;
        char veth[IFNAMSIZ], veth_peer[IFNAMSIZ];
        bool veth_made;
        pid_t sleeper;
        char cg_group[64];
        bool cg_made;
        /* results */
        struct samples api[_OP_MAX], cli[_OP_MAX], peer[_PEER_MAX];
        struct samples api_cpu[_OP_MAX], api_wait[_OP_MAX]; /* tesserad's own share of each API call */
        char peer_label[_PEER_MAX][64];
        struct samples ledger_create, ledger_cpu, ledger_list_api, ledger_list_cli;
        unsigned long rss_start_kb, rss_end_kb, ledger_rss_kb;
        char load_start[64], load_end[64]; /* /proc/loadavg: other work on the machine skews everything */
        struct op_cost last;               /* of the last API call */
};

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
        argv[n++] = b->run.tessera;
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
                return run_timed(&b->run, argv, NULL, ret_ms, why, size);
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
                return fatal(&b->run, "Tessera %s create: %s", cli ? "CLI" : "API", why);
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
                return fatal(&b->run, "Tessera %s destroy: %s", cli ? "CLI" : "API", why);
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
        else if (run_timed(&b->run, argv, NULL, NULL, why, sizeof(why)) == 0) {
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
        if (daemon_start(&b->run, &b->main) < 0)
                return -1;
        b->rss_start_kb = rss_kb(b->main.pid);
        /* one unrecorded pass each: page cache, SQLite's first pages, the supervisor binary */
        if (tessera_sequence(b, false, 0, false) < 0 || tessera_sequence(b, true, 0, false) < 0)
                return -1;
        for (unsigned i = 1; i <= b->iterations && !interrupted(&b->run); i++) {
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
                        return fatal(&b->run, "creating enclave '%s' for the list: %s", name, why);
        }
        for (unsigned i = 0; i <= b->iterations && !interrupted(&b->run); i++) {
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
                        return fatal(&b->run, "destroying enclave '%s': %s", name, why);
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
        if (daemon_start(&b->run, &b->ledger) < 0)
                return -1;
        struct tessera_error err = {0};
        for (int i = 0; i < LEDGER_ENCLAVES && !interrupted(&b->run); i++) {
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
        for (unsigned i = 0; i <= b->iterations && !interrupted(&b->run) && !b->ledger_create.failed[0]; i++) {
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
                if (run_timed(&b->run, argv, NULL, &ms, why, sizeof(why)) < 0) {
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
                if (run_timed(&b->run, argv, NULL, NULL, why, size) < 0)
                        return -1;
        } else {
                for (size_t i = 0; i < ELEMENTSOF(cg_controllers); i++) {
                        snprintf(spec, sizeof(spec), "%s:/%s", cg_controllers[i], b->cg_group);
                        char *argv[] = {b->cgdelete, "-g", spec, NULL};
                        if (run_timed(&b->run, argv, NULL, NULL, why, size) < 0)
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

        for (unsigned i = 0; i <= b->iterations && !interrupted(&b->run); i++) {
                double ms[_PEER_MAX] = {0}, t;
                b->cg_made = true;
                uint64_t t0 = now_ns();
                if (run_timed(&b->run, create, NULL, NULL, why, sizeof(why)) < 0 ||
                    run_timed(&b->run, limits, NULL, NULL, why, sizeof(why)) < 0) {
                        for (int p = CG_CREATE; p <= CG_CREATE_DELETE; p++)
                                samples_fail(&s[p], "%s", why);
                        return;
                }
                ms[CG_CREATE] = ms_since(t0);
                for (size_t c = 0; c < ELEMENTSOF(changes); c++)
                        if (run_timed(&b->run, changes[c].argv, NULL, &ms[changes[c].p], why, sizeof(why)) < 0)
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
                note(&b->run,
                     "cgdelete: cgroup-tools here removes only the first controller of `-g cpuset,memory,pids:/G` "
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
        pid_t pid = spawn(&b->run, argv, &o);
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
        for (unsigned i = 0; i <= b->iterations && !interrupted(&b->run); i++) {
                double add_ms, del_ms;
                if (run_timed(&b->run, add, NULL, &add_ms, why, sizeof(why)) < 0) {
                        samples_fail(&s[IP_ADD_NIC], "%s", why);
                        samples_fail(&s[IP_DEL_NIC], "nothing to move back: the move failed");
                        break;
                }
                if (if_nametoindex(b->veth) != 0) {
                        samples_fail(&s[IP_ADD_NIC], "%s is still on the host after the move", b->veth);
                        break;
                }
                if (run_timed(&b->run, del, NULL, &del_ms, why, sizeof(why)) < 0 || if_nametoindex(b->veth) == 0) {
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

static void crun_fail_all(struct bench *b, const char *why)
{
        for (int p = CRUN_CREATE; p <= CRUN_RUN; p++)
                samples_fail(&b->peer[p], "%s", why);
}

static void bench_crun(struct bench *b)
{
        static const char *const true_args[] = {"/bin/true", NULL};
        char why[512];
        if (!b->cr.bin[0] || !b->cr.busybox[0]) {
                crun_fail_all(b, !b->cr.bin[0] ? "crun not installed" : "busybox(-static) not installed");
                return;
        }
        if (crun_bundle_make(&b->run, &b->cr, true_args, why, sizeof(why)) < 0) {
                crun_fail_all(b, why);
                return;
        }
        if (b->cr.prepare)
                hugetlb_mount(&b->cr);
        fprintf(stderr, "mgmt: crun (%u iterations)\n", b->crun_iterations);
        for (unsigned i = 0; i <= b->crun_iterations && !interrupted(&b->run); i++) {
                double create_ms, delete_ms, run_ms;
                snprintf(b->cr.live, sizeof(b->cr.live), "tbm%d-c%u", (int)getpid(), i);
                if (crun_cmd(&b->run, &b->cr, "create", NULL, b->cr.live, NULL, &create_ms, why, sizeof(why)) < 0) {
                        if (!b->cr.prepare && strstr(why, "hybrid"))
                                strncat(why, " (run with --prepare-crun)", sizeof(why) - strlen(why) - 1);
                        crun_fail_all(b, why);
                        break;
                }
                if (crun_cmd(&b->run, &b->cr, "delete", NULL, b->cr.live, NULL, &delete_ms, why, sizeof(why)) < 0) {
                        crun_fail_all(b, why);
                        break;
                }
                snprintf(b->cr.live, sizeof(b->cr.live), "tbm%d-r%u", (int)getpid(), i);
                if (crun_cmd(&b->run, &b->cr, "run", NULL, b->cr.live, NULL, &run_ms, why, sizeof(why)) < 0) {
                        samples_fail(&b->peer[CRUN_RUN], "%s", why);
                        break;
                }
                /* `crun run` deletes the container when its process exits: check, as the row claims it */
                char state[PATH_MAX + 64];
                snprintf(state, sizeof(state), "%s/%s", b->cr.root, b->cr.live);
                if (access(state, F_OK) == 0) {
                        samples_fail(&b->peer[CRUN_RUN], "crun run left its container %s behind", b->cr.live);
                        break;
                }
                b->cr.live[0] = '\0';
                if (i > 0) {
                        samples_add(&b->peer[CRUN_CREATE], create_ms);
                        samples_add(&b->peer[CRUN_DELETE], delete_ms);
                        samples_add(&b->peer[CRUN_CREATE_DELETE], create_ms + delete_ms);
                        samples_add(&b->peer[CRUN_RUN], run_ms);
                }
        }
        crun_env_cleanup(&b->run, &b->cr);
}

/* ---- cleanup: everything this run made, in reverse ---- */

static void bench_cleanup(struct bench *b)
{
        crun_env_cleanup(&b->run, &b->cr);
        if (b->sleeper > 0) {
                (void)kill(b->sleeper, SIGKILL);
                (void)wait_status(b->sleeper);
                b->sleeper = 0;
        }
        daemon_cleanup(&b->run, &b->main, true);
        daemon_cleanup(&b->run, &b->ledger, false);
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
                        (void)run_quiet(&b->run, argv);
                }
                b->veth_made = false;
        }
        bench_run_close(&b->run);
}

/* ---- the report ---- */

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
        char crun_version[128] = "";
        if (b->cr.bin[0]) {
                char *v[] = {b->cr.bin, "--version", NULL};
                capture_line(&b->run, v, crun_version, sizeof(crun_version));
        }
        print_run_header(&b->run, "Tessera management benchmark", b->load_start, b->load_end);
        printf("# peers:    %s; cgroup-tools; iproute2\n", crun_version[0] ? crun_version : "crun: none");
        printf("# runs:     %u iterations per operation (crun: %u), after one unrecorded warm-up; "
               "median (p90) in ms\n",
               b->iterations, b->crun_iterations);
        printf("# API = one tessera_client_call round trip on an open connection (the daemon commits to SQLite "
               "before replying);\n# CLI and every peer tool = fork+exec+wait from this process, as a shell "
               "would\n");
        if (b->cr.hugetlb_note[0])
                printf("# host change: %s\n", b->cr.hugetlb_note);
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
                        fmt_cell(&b->run, &b->api[r->op], api, sizeof(api));
                        fmt_cell(&b->run, &b->cli[r->op], cli, sizeof(cli));
                }
                if (r->peer >= 0) {
                        fmt_cell(&b->run, &b->peer[r->peer], peer, sizeof(peer));
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
                note(&b->run,
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
               strrchr(b->topology, '/') ? strrchr(b->topology, '/') + 1 : b->topology, b->run.sync);
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
        printf("\nnotes:\n%s", b->run.notes);
        printf("[Pisces] J. Ouyang, B. Kocoloski, J. Lange, K. Pedretti: \"Achieving Performance Isolation with "
               "Lightweight Co-Kernels\", HPDC 2015 (add core 33.74 ms, add 128 MiB 82.66 ms, add NIC 118.98 ms).\n");
        if (b->run.fatal[0])
                printf("\nRUN FAILED: %s\n", b->run.fatal);
        if (b->run.interrupted)
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
        b->iterations = 30;
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
                        b->run.sync = optarg;
                        break;
                case 'P': b->cr.prepare = true; break;
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
        if (bench_find_build(&b->run, build) < 0) {
                fprintf(stderr, "mgmt: no tesserad and tessera under %s/src; give the build directory with --build\n",
                        b->run.build);
                return -ENOENT;
        }
        snprintf(b->run.source, sizeof(b->run.source), "%s", source ? source : BENCH_SOURCE_ROOT);
        if (topology) {
                /* tesserad wants an absolute path */
                if (!realpath(topology, b->topology)) {
                        fprintf(stderr, "mgmt: --topology: %s: %s\n", topology, strerror(errno));
                        return -EINVAL;
                }
        } else
                snprintf(b->topology, sizeof(b->topology), "%s/tests/data/topo-2s8n256c.xml", b->run.source);
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
                {"true", offsetof(struct bench, true_bin)},
        };
        for (size_t i = 0; i < ELEMENTSOF(tools); i++)
                (void)find_tool(tools[i].name, (char *)b + tools[i].off, PATH_MAX);
        (void)find_tool("git", b->run.git, sizeof(b->run.git));
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
        if (interrupted(&b->run))
                return -1;
        (void)make_veth(b);
        if (bench_tessera(b) < 0 || interrupted(&b->run))
                return -1;
        if (bench_list(b) < 0 || interrupted(&b->run))
                return -1;
        daemon_cleanup(&b->run, &b->main, true);
        bench_cgroup_tools(b);
        if (interrupted(&b->run))
                return -1;
        bench_ip(b);
        if (interrupted(&b->run))
                return -1;
        return bench_ledger(b);
}

int main(int argc, char **argv)
{
        static struct bench b = {.run = BENCH_RUN_INIT("mgmt")};
        crun_env_init(&b.cr);
        int r = parse_options(&b, argc, argv);
        if (r != 0)
                return r > 0 ? 0 : 2;
        if (geteuid() != 0) {
                fprintf(stderr, "mgmt: needs root (cgroups, namespaces, a veth pair)\n");
                return 77;
        }
        find_tools(&b);
        init_labels(&b);
        if (bench_run_open(&b.run) < 0)
                return 1;
        static const char *const main_flags[] = {"--host-cpus", "", "--host-memory", "2G", NULL};
        static const char *ledger_flags[] = {"--topology", NULL, "--host-cpus", "0-3", "--host-memory", "4G", NULL};
        ledger_flags[1] = b.topology;
        daemon_init(&b.run, &b.main, "main", main_flags);
        daemon_init(&b.run, &b.ledger, "ledger", (const char *const *)ledger_flags);

        read_loadavg(b.load_start, sizeof(b.load_start));
        r = run_all(&b);
        read_loadavg(b.load_end, sizeof(b.load_end));
        if (r < 0 && b.run.fatal[0]) {
                struct daemon *ds[] = {&b.main, &b.ledger};
                for (size_t i = 0; i < ELEMENTSOF(ds); i++) {
                        char said[512];
                        daemon_log_tail(ds[i], said, sizeof(said));
                        if (said[0])
                                note(&b.run, "last line of tesserad (%s): %s\n", ds[i]->tag, said);
                }
        }
        print_report(&b);
        fflush(stdout);
        bench_cleanup(&b);
        if (b.run.interrupted)
                return 130;
        return b.run.fatal[0] ? 1 : 0;
}
