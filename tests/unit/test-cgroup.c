/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The cgroup part against the real kernel: whatever mode this machine runs
 * (v1 here, v2 in the test guest), plus, on a hybrid host, the v2 code on a
 * group of our own inside the unified mount (which has no cpuset, memory or
 * pids there, so only structure, devices, clone-into and kill are checked).
 * Everything lives under "tessera-test-<pid>" and is removed at exit.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <linux/magic.h>
#include <linux/sched.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <time.h>

#include "cgroup.h"
#include "tap.h"
#include "util.h"

#define MiB (1024ULL * 1024ULL)
/* An emptied error object, so a passing line never shows an earlier call's message. */
#define FRESH(e) (tessera_error_clear(&(e)), &(e))

static struct tessera_cgroup *cg;
static char root_name[64];
static char v2_base[PATH_MAX];  /* hybrid hosts: our group in the unified mount, used as a v2 "mount" */
static char node_dir[PATH_MAX]; /* mkdtemp dir for a device node, when /dev lacks one */
static pid_t children[128];
static size_t n_children;

static const char *const v1_ctrls[] = {"cpuset", "memory", "pids", "freezer", "devices", "cpu", "cpuacct"};

/* ---- cleanup: must work from any failure point ---- */

static void track(pid_t pid)
{
        if (pid > 0 && n_children < ELEMENTSOF(children))
                children[n_children++] = pid;
}

/* Once reaped a pid may belong to someone else: forget it. */
static void untrack(pid_t pid)
{
        for (size_t i = 0; i < n_children; i++)
                if (children[i] == pid) {
                        children[i] = children[--n_children];
                        return;
                }
}

static void reap_all(void)
{
        for (size_t i = 0; i < n_children; i++) {
                (void)kill(children[i], SIGKILL);
                (void)waitpid(children[i], NULL, 0);
        }
        n_children = 0;
}

static int rmdir_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
        if (flag == FTW_DP)
                (void)rmdir(path);
        return 0;
}

/* Independent of the code under test: kill what we started, then rmdir our trees deepest first. */
static void remove_by_hand(const char *mount, enum cgroup_mode mode)
{
        char path[PATH_MAX];
        if (mode == CGROUP_V1) {
                for (size_t i = 0; i < ELEMENTSOF(v1_ctrls); i++) {
                        snprintf(path, sizeof(path), "%s/%s/%s", mount, v1_ctrls[i], root_name);
                        (void)nftw(path, rmdir_entry, 16, FTW_DEPTH | FTW_PHYS);
                }
        } else {
                snprintf(path, sizeof(path), "%s/%s", mount, root_name);
                (void)nftw(path, rmdir_entry, 16, FTW_DEPTH | FTW_PHYS);
        }
}

static void close_suite(void)
{
        reap_all();
        if (!cg)
                return;
        struct tessera_error err = {0};
        char mount[256];
        enum cgroup_mode mode = cg->mode;
        snprintf(mount, sizeof(mount), "%s", cg->mount);
        if (cgroup_root_remove(cg, FRESH(err)) < 0)
                diag("cgroup_root_remove: %s", err.msg);
        tessera_cgroup_free(cg);
        cg = NULL;
        remove_by_hand(mount, mode);
}

static void cleanup(void)
{
        close_suite();
        if (v2_base[0])
                (void)rmdir(v2_base);
        if (node_dir[0]) {
                char node[PATH_MAX];
                snprintf(node, sizeof(node), "%s/kmsg", node_dir);
                (void)unlink(node);
                (void)rmdir(node_dir);
        }
}

static void on_signal(int sig)
{
        /* A test run cut short must still remove its groups. */
        exit(128 + sig);
}

/* ---- reading what the kernel shows ---- */

static void ctl_path(char *buf, size_t n, const char *ctrl, const char *rel, const char *file)
{
        if (cg->mode == CGROUP_V1)
                snprintf(buf, n, "%s/%s/%s%s%s%s%s", cg->mount, ctrl, cg->root, rel ? "/" : "", rel ? rel : "",
                         file ? "/" : "", file ? file : "");
        else
                snprintf(buf, n, "%s/%s%s%s%s%s", cg->mount, cg->root, rel ? "/" : "", rel ? rel : "", file ? "/" : "",
                         file ? file : "");
}

/* The value of a control file, or "<unreadable>". */
static const char *ctl(const char *ctrl, const char *rel, const char *file)
{
        static char bufs[4][1024];
        static unsigned next;
        char *buf = bufs[next++ % 4];
        char path[PATH_MAX];
        ctl_path(path, sizeof(path), ctrl, rel, file);
        if (read_file_at(AT_FDCWD, path, buf, sizeof(bufs[0]), NULL) < 0)
                snprintf(buf, sizeof(bufs[0]), "<unreadable>");
        return buf;
}

static bool group_exists(const char *ctrl, const char *rel)
{
        char path[PATH_MAX];
        struct stat st;
        ctl_path(path, sizeof(path), ctrl, rel, NULL);
        return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool is_cgroup_fs(const char *path)
{
        struct statfs fs;
        return statfs(path, &fs) == 0 && fs.f_type == CGROUP_SUPER_MAGIC;
}

/* Is controller `c` usable by the suite's handle? */
static bool have(const char *c)
{
        char path[PATH_MAX];
        if (cg->mode == CGROUP_V1) {
                snprintf(path, sizeof(path), "%s/%s", cg->mount, c);
                return is_cgroup_fs(path);
        }
        const char *on = ctl(NULL, NULL, "cgroup.subtree_control");
        size_t len = strlen(c);
        for (const char *p = on; (p = strstr(p, c)); p += len)
                if ((p == on || p[-1] == ' ') && (p[len] == ' ' || p[len] == '\0'))
                        return true;
        return false;
}

/* The controllers an enclave's groups must exist in. */
static size_t hierarchies(const char **ret)
{
        size_t n = 0;
        if (cg->mode == CGROUP_V2) {
                ret[n++] = NULL;
                return n;
        }
        for (size_t i = 0; i < ELEMENTSOF(v1_ctrls); i++)
                if (have(v1_ctrls[i]))
                        ret[n++] = v1_ctrls[i];
        return n;
}

static bool in_every_hierarchy(const char *rel, bool want)
{
        const char *h[16];
        size_t n = hierarchies(h);
        for (size_t i = 0; i < n; i++)
                if (group_exists(h[i], rel) != want) {
                        diag("`%s` in %s: exists=%d", rel, h[i] ? h[i] : "v2", !want);
                        return false;
                }
        return true;
}

static bool procs_contain(const char *ctrl, const char *rel, pid_t pid)
{
        char path[PATH_MAX], buf[4096], want[16];
        ctl_path(path, sizeof(path), ctrl, rel, "cgroup.procs");
        if (read_file_at(AT_FDCWD, path, buf, sizeof(buf), NULL) < 0)
                return false;
        snprintf(want, sizeof(want), "%d", (int)pid);
        for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n"))
                if (STREQ(line, want))
                        return true;
        return false;
}

static uint64_t ctl_u64(const char *ctrl, const char *rel, const char *file)
{
        uint64_t v = 0;
        const char *s = ctl(ctrl, rel, file);
        if (STREQ(s, "max"))
                return UINT64_MAX;
        if (parse_uint64(s, UINT64_MAX, &v) < 0)
                return 0;
        return v >= (1ULL << 62) ? UINT64_MAX : v;
}

/* ---- children ---- */

/* A child that only waits to be killed; it dies with us if we die. */
static pid_t spawn_sleeper(void)
{
        pid_t pid = fork();
        if (pid == 0) {
                (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
                for (;;)
                        pause();
        }
        track(pid);
        return pid;
}

/* Runs fn in a child that first moves itself into <enclave>/<leaf>; returns the wait status. */
static int run_in(const char *enclave, const char *leaf, int (*fn)(void *), void *arg)
{
        pid_t pid = fork();
        if (pid < 0)
                return -1;
        if (pid == 0) {
                (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
                struct tessera_error err = {0};
                if (cgroup_enter(cg, enclave, leaf, 0, FRESH(err)) < 0) {
                        fprintf(stderr, "child: %s\n", err.msg);
                        _exit(100);
                }
                _exit(fn(arg));
        }
        track(pid);
        int status = 0;
        (void)waitpid(pid, &status, 0);
        untrack(pid);
        return status;
}

/* Waits up to 5 s, so a kill that never came fails the check instead of hanging the test. */
static bool reaped_by_sigkill(pid_t pid)
{
        int status = 0;
        uint64_t deadline = now_ns() + 5000000000ULL;
        pid_t r;
        while ((r = waitpid(pid, &status, WNOHANG)) == 0 && now_ns() < deadline) {
                struct timespec ts = {0, 5000000};
                nanosleep(&ts, NULL);
        }
        if (r != pid)
                return false;
        untrack(pid);
        return WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
}

static int touch_memory(void *arg)
{
        size_t bytes = (size_t)(uintptr_t)arg;
        char *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
                return 3;
        for (size_t off = 0; off < bytes; off += 4096)
                p[off] = 1;
        return 0;
}

/* Forks until the kernel refuses: exit code = forks that worked, or 200 when nothing refused. */
static int fork_until_refused(void *arg)
{
        pid_t kids[64];
        int n = 0, refused_errno = 0;
        while (n < (int)ELEMENTSOF(kids)) {
                pid_t pid = fork();
                if (pid == 0) {
                        (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
                        for (;;)
                                pause();
                }
                if (pid < 0) {
                        refused_errno = errno;
                        break;
                }
                kids[n++] = pid;
        }
        for (int i = 0; i < n; i++) {
                (void)kill(kids[i], SIGKILL);
                (void)waitpid(kids[i], NULL, 0);
        }
        if (refused_errno != EAGAIN)
                return 200;
        return n;
}

static const char *restricted_node; /* a node of c 1:11 (kmsg), not in the standard set */

/* Bit 0: /dev/null opened; bit 1: the restricted node opened; bit 2: it failed with EPERM. */
static int probe_devices(void *arg)
{
        int bits = 0;
        int fd = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (fd >= 0) {
                bits |= 1;
                close(fd);
        }
        fd = open(restricted_node, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        if (fd >= 0) {
                bits |= 2;
                close(fd);
        } else if (errno == EPERM) {
                bits |= 4;
        }
        return bits;
}

static int devices_in(const char *enclave, const char *leaf)
{
        int status = run_in(enclave, leaf, probe_devices, NULL);
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* /dev/kmsg (c 1:11) when /dev has it, else a node we make in a temporary directory. */
static const char *find_restricted_node(void)
{
        struct stat st;
        if (stat("/dev/kmsg", &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 11))
                return "/dev/kmsg";
        if (!node_dir[0]) {
                snprintf(node_dir, sizeof(node_dir), "/tmp/tessera-test-cgroup-XXXXXX");
                if (!mkdtemp(node_dir)) {
                        node_dir[0] = '\0';
                        return NULL;
                }
        }
        static char node[PATH_MAX];
        snprintf(node, sizeof(node), "%s/kmsg", node_dir);
        if (mknod(node, S_IFCHR | 0600, makedev(1, 11)) < 0 && errno != EEXIST)
                return NULL;
        return node;
}

/* ---- cpus ---- */

static int online_cpus(unsigned *ret, int max)
{
        char buf[256];
        if (read_file_at(AT_FDCWD, "/sys/devices/system/cpu/online", buf, sizeof(buf), NULL) < 0)
                return 0;
        int n = 0;
        for (char *tok = strtok(buf, ","); tok && n < max; tok = strtok(NULL, ",")) {
                unsigned lo, hi;
                if (sscanf(tok, "%u-%u", &lo, &hi) != 2)
                        hi = lo = (unsigned)strtoul(tok, NULL, 10);
                for (unsigned c = lo; c <= hi && n < max; c++)
                        ret[n++] = c;
        }
        return n;
}

/* The cpus an enclave's tasks can use: v1 writes every group, v2 only the enclave (leaves inherit). */
static bool cpus_everywhere(const char *enclave, const char *want)
{
        static const char *const subs[] = {"", "/supervisor", "/apps", "/apps/a1"};
        for (size_t i = 0; i < ELEMENTSOF(subs); i++) {
                char rel[128];
                snprintf(rel, sizeof(rel), "%s%s", enclave, subs[i]);
                if (!group_exists("cpuset", rel))
                        continue;
                const char *file = cg->mode == CGROUP_V1 ? "cpuset.cpus" : "cpuset.cpus.effective";
                const char *got = ctl("cpuset", rel, file);
                if (!STREQ(got, want)) {
                        diag("%s of %s is \"%s\", want \"%s\"", file, rel, got, want);
                        return false;
                }
        }
        return true;
}

static void cpus_string(const unsigned *cpus, int n, char *buf, size_t len)
{
        if (n == 1)
                snprintf(buf, len, "%u", cpus[0]);
        else if (cpus[1] == cpus[0] + 1)
                snprintf(buf, len, "%u-%u", cpus[0], cpus[1]);
        else
                snprintf(buf, len, "%u,%u", cpus[0], cpus[1]);
}

/* ---- the checks ---- */

static uint64_t t_start;
#define TIMED(what, expr)                                                                                              \
        ({                                                                                                             \
                t_start = now_ns();                                                                                    \
                __typeof__(expr) _v = (expr);                                                                          \
                diag("time: %s %.0f us", what, (double)(now_ns() - t_start) / 1000.0);                                 \
                _v;                                                                                                    \
        })

static void test_structure(void)
{
        struct tessera_error err = {0};
        int r = TIMED("enclave_create", cgroup_enclave_create(cg, "e1", FRESH(err)));
        ok(r == 0, "create enclave e1 (%s)", err.msg);
        ok(in_every_hierarchy("e1", true) && in_every_hierarchy("e1/supervisor", true) &&
                   in_every_hierarchy("e1/apps", true),
           "e1, e1/supervisor and e1/apps exist in every hierarchy");
        ok(cgroup_enclave_exists(cg, "e1"), "cgroup_enclave_exists(e1)");
        ok(!cgroup_enclave_exists(cg, "nope"), "an unknown enclave does not exist");
        ok(cgroup_enclave_create(cg, "e1", FRESH(err)) == 0, "creating e1 again is harmless (%s)", err.msg);
        if (cg->mode == CGROUP_V1)
                ok(cgroup_enclave_create(cg, "tasks", FRESH(err)) == -EEXIST &&
                           !group_exists("cpuset", "tasks/supervisor"),
                   "an enclave named like a v1 control file is refused (%s)", err.msg);
        ok(cgroup_enclave_create(cg, "../x", FRESH(err)) == -EINVAL, "a path is not an enclave name");
        if (cg->mode == CGROUP_V1) {
                const char *cpus = ctl("cpuset", "e1/supervisor", "cpuset.cpus");
                ok(cpus[0] && !STREQ(cpus, "<unreadable>") && STREQ(cpus, ctl("cpuset", NULL, "cpuset.cpus")),
                   "v1: a new leaf gets the root group's cpus (\"%s\")", cpus);
                ok(STREQ(ctl("cpuset", "e1", "cpuset.memory_migrate"), "1"), "v1: memory_migrate is on");
                ok(have("devices") && STREQ(ctl("devices", NULL, "devices.list"), "a *:* rwm"),
                   "v1: the root group stays allow-all");
                ok(strstr(ctl("devices", "e1/supervisor", "devices.list"), "c 1:3 rwm") &&
                           !strstr(ctl("devices", "e1/supervisor", "devices.list"), "a *:*"),
                   "v1: the leaves are deny-by-default with the standard nodes");
        }
        ok(cgroup_app_create(cg, "e1", "a1", FRESH(err)) == 0 && in_every_hierarchy("e1/apps/a1", true),
           "app_create makes e1/apps/a1 everywhere (%s)", err.msg);
        ok(cgroup_enclave_create(cg, "e2", FRESH(err)) == 0, "create enclave e2 (%s)", err.msg);
        char **names = NULL;
        size_t n = 0;
        r = cgroup_list_enclaves(cg, &names, &n, FRESH(err));
        ok(r == 0 && n == 2 && STREQ(names[0], "e1") && STREQ(names[1], "e2"), "list_enclaves: e1 e2 (%zu)", n);
        for (size_t i = 0; i < n; i++)
                free(names[i]);
        free(names);
}

static bool limits_available(void)
{
        return have("cpuset") && have("memory") && have("pids");
}

static void test_apply(const char *cpu0)
{
        struct tessera_error err = {0};
        if (!limits_available()) {
                skip("limits: cpuset, memory and pids are not available below `%s` (hybrid host: they live on v1)",
                     cg->mount);
                return;
        }
        struct cgroup_limits lim = {.cpus = cpu0, .mems = "0", .memory_bytes = 64 * MiB, .pids_max = 32};
        int r = TIMED("enclave_apply", cgroup_enclave_apply(cg, "e1", &lim, FRESH(err)));
        ok(r == 0, "apply cpus %s, mems 0, 64M, 32 pids to e1 (%s)", cpu0, err.msg);
        ok(cpus_everywhere("e1", cpu0), "cpus reach every group of e1");
        const char *mems_file = cg->mode == CGROUP_V1 ? "cpuset.mems" : "cpuset.mems.effective";
        ok(STREQ(ctl("cpuset", "e1/supervisor", mems_file), "0"), "mems reach the supervisor leaf");
        if (cg->mode == CGROUP_V1) {
                ok(ctl_u64("memory", "e1", "memory.limit_in_bytes") == 64 * MiB, "v1 memory.limit_in_bytes = 64M");
                ok(ctl_u64("memory", "e1", "memory.soft_limit_in_bytes") == 64 * MiB,
                   "v1 memory.soft_limit_in_bytes = 64M (the stand-in for memory.min)");
                char path[PATH_MAX];
                ctl_path(path, sizeof(path), "memory", "e1", "memory.memsw.limit_in_bytes");
                if (access(path, F_OK) == 0)
                        ok(ctl_u64("memory", "e1", "memory.memsw.limit_in_bytes") == 64 * MiB,
                           "v1 memory.memsw.limit_in_bytes = 64M");
                else
                        skip("no swap accounting (memory.memsw.*) on this kernel");
        } else {
                ok(ctl_u64("memory", "e1", "memory.max") == 64 * MiB, "v2 memory.max = 64M");
                ok(ctl_u64("memory", "e1", "memory.min") == 64 * MiB, "v2 memory.min = 64M");
        }
        ok(ctl_u64("pids", "e1", "pids.max") == 32, "pids.max = 32");

        struct cgroup_limits lim2 = {.cpus = "", .mems = "", .memory_bytes = 128 * MiB, .pids_max = 64};
        ok(cgroup_enclave_apply(cg, "e2", &lim2, FRESH(err)) == 0, "apply 128M, 64 pids, all cpus to e2 (%s)", err.msg);
        struct cgroup_limits bad = {.cpus = "0-", .mems = "0"};
        ok(cgroup_enclave_apply(cg, "e1", &bad, FRESH(err)) == -EINVAL && STREQ(err.field, "cpus"),
           "a malformed cpulist is refused with field \"cpus\" (%s)", err.msg);
}

static pid_t supervisor_pid; /* lives in e1/supervisor until destroy kills it */

static void test_enter(void)
{
        struct tessera_error err = {0};
        pid_t pid = supervisor_pid = spawn_sleeper();
        int r = TIMED("cgroup_enter", cgroup_enter(cg, "e1", "supervisor", pid, FRESH(err)));
        ok(r == 0, "move a child into e1/supervisor (%s)", err.msg);
        const char *h[16];
        size_t n = hierarchies(h);
        bool everywhere = true;
        for (size_t i = 0; i < n; i++)
                everywhere &= procs_contain(h[i], "e1/supervisor", pid);
        ok(everywhere, "the child is in cgroup.procs of e1/supervisor in every hierarchy");
        char name[64] = "";
        ok(cgroup_pid_enclave(cg, pid, name, sizeof(name), FRESH(err)) == 0 && STREQ(name, "e1"),
           "cgroup_pid_enclave finds e1 (\"%s\")", name);
        ok(cgroup_pid_enclave(cg, getpid(), name, sizeof(name), FRESH(err)) == -ENOENT,
           "the test itself is in no enclave (%s)", err.msg);
        ok(cgroup_enclave_count_tasks(cg, "e1", FRESH(err)) == 1, "e1 counts one task");
        ok(cgroup_enter(cg, "e1", "apps", pid, FRESH(err)) == -EINVAL, "\"apps\" itself is not a leaf");
        ok(cgroup_enter(cg, "e1", "apps/missing", pid, FRESH(err)) < 0 && strstr(err.msg, "apps/missing/cgroup.procs"),
           "entering a missing app leaf names the file (%s)", err.msg);
        ok(procs_contain(h[0], "e1/supervisor", pid), "a failed move leaves the child where it was");
        /* The sleeper stays in e1 until destroy, which must kill it. */
}

static void test_leaf_fd(void)
{
        struct tessera_error err = {0};
        int fd = cgroup_leaf_fd(cg, "e2", "supervisor", FRESH(err));
        if (cg->mode == CGROUP_V1) {
                ok(fd == -EOPNOTSUPP, "v1 has no leaf fd for CLONE_INTO_CGROUP (%s)", err.msg);
                return;
        }
        ok(fd >= 0, "leaf fd of e2/supervisor (%s)", err.msg);
        if (fd < 0)
                return;
        struct clone_args args = {.flags = CLONE_INTO_CGROUP, .exit_signal = SIGCHLD, .cgroup = (uint64_t)fd};
        pid_t pid = (pid_t)syscall(SYS_clone3, &args, sizeof(args));
        if (pid == 0) {
                (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
                for (;;)
                        pause();
        }
        close(fd);
        track(pid);
        ok(pid > 0 && procs_contain(NULL, "e2/supervisor", pid), "clone3 CLONE_INTO_CGROUP starts the child in "
                                                                 "e2/supervisor");
        char name[64] = "";
        ok(cgroup_pid_enclave(cg, pid, name, sizeof(name), FRESH(err)) == 0 && STREQ(name, "e2"),
           "cgroup_pid_enclave reads the 0:: line (\"%s\")", name);
        struct tessera_error kerr = {0};
        ok(cgroup_app_create(cg, "e2", "tmp", &kerr) == 0 && cgroup_app_remove(cg, "e2", "tmp", &kerr) == 0,
           "an empty app leaf comes and goes (%s)", kerr.msg);
        ok(pid > 0 && kill(pid, SIGKILL) == 0 && reaped_by_sigkill(pid), "the clone3 child is ours to kill");
}

static void test_memory(void)
{
        struct tessera_error err = {0};
        if (!have("memory")) {
                skip("memory: no memory controller below `%s` (hybrid host: it lives on v1)", cg->mount);
                return;
        }
        ok(cgroup_enclave_set_memory(cg, "e1", 32 * MiB, FRESH(err)) == 0, "set e1 memory to 32M (%s)", err.msg);
        int status = run_in("e1", "apps/a1", touch_memory, (void *)(uintptr_t)(8 * MiB));
        ok(WIFEXITED(status) && WEXITSTATUS(status) == 0, "a child touching 8M under 32M lives (status %#x)", status);
        status = run_in("e1", "apps/a1", touch_memory, (void *)(uintptr_t)(64 * MiB));
        ok(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
           "a child touching 64M under 32M is OOM-killed (status %#x)", status);

        /* Shrinking below what the enclave uses is refused, naming the enclave and both sizes. */
        ok(cgroup_enclave_set_memory(cg, "e1", 64 * MiB, FRESH(err)) == 0, "back to 64M (%s)", err.msg);
        int ready[2];
        if (pipe2(ready, O_CLOEXEC) < 0)
                return;
        pid_t pid = fork();
        if (pid == 0) {
                (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
                struct tessera_error cerr;
                if (cgroup_enter(cg, "e1", "apps/a1", 0, &cerr) < 0 || touch_memory((void *)(uintptr_t)(48 * MiB)))
                        _exit(1);
                (void)!write(ready[1], "x", 1);
                for (;;)
                        pause();
        }
        track(pid);
        close(ready[1]);
        char c;
        bool up = read(ready[0], &c, 1) == 1;
        close(ready[0]);
        ok(up, "a child holds 48M in e1/apps/a1");
        struct cgroup_stats st = {0};
        int r = cgroup_stats_read(cg, "e1", "apps/a1", &st, FRESH(err));
        ok(r == 0 && st.memory_current >= 40 * MiB && st.memory_peak >= st.memory_current,
           "stats: current %llu, peak %llu, cpu %llu ns (%s)", (unsigned long long)st.memory_current,
           (unsigned long long)st.memory_peak, (unsigned long long)st.cpu_usage_ns, err.msg);
        ok(st.cpu_usage_ns > 0, "stats: the leaf has used CPU time");
        r = TIMED("set_memory refused", cgroup_enclave_set_memory(cg, "e1", 32 * MiB, FRESH(err)));
        ok(r == -EBUSY && strstr(err.msg, "enclave 'e1' uses") && strstr(err.msg, "32M") && STREQ(err.field, "memory"),
           "shrinking e1 to 32M under 48M of use is refused (%s)", err.msg);
        const char *file = cg->mode == CGROUP_V1 ? "memory.limit_in_bytes" : "memory.max";
        ok(ctl_u64("memory", "e1", file) == 64 * MiB, "the limit stays 64M");
        ok(kill(pid, SIGKILL) == 0 && reaped_by_sigkill(pid), "the holder is gone");
        ok(ctl_u64("memory", "e2", cg->mode == CGROUP_V1 ? "memory.limit_in_bytes" : "memory.max") == 128 * MiB,
           "e2's memory limit is untouched by e1's changes");
}

static void test_pids(void)
{
        struct tessera_error err = {0};
        if (!have("pids")) {
                skip("pids: no pids controller below `%s` (hybrid host: it lives on v1)", cg->mount);
                return;
        }
        /* pids.max sits on the enclave group, so the sleeper in e1/supervisor counts too. */
        struct cgroup_limits lim = {.cpus = "", .mems = "", .memory_bytes = 64 * MiB, .pids_max = 8};
        ok(cgroup_enclave_apply(cg, "e1", &lim, FRESH(err)) == 0, "pids.max 8 on e1 (%s)", err.msg);
        int status = run_in("e1", "apps/a1", fork_until_refused, NULL);
        int forks = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        ok(forks >= 1 && forks <= 6, "fork fails with EAGAIN after %d forks (sleeper + child + forks <= 8)", forks);
        ok(ctl_u64("pids", "e2", "pids.max") == 64, "e2's pids.max is untouched");
}

static void test_devices(void)
{
        struct tessera_error err = {0};
        restricted_node = find_restricted_node();
        if (!restricted_node) {
                skip("devices: no c 1:11 node in /dev and mknod in a temporary directory failed");
                return;
        }
        int bits = devices_in("e1", "supervisor");
        ok(bits >= 0 && (bits & 1), "a task in e1 opens /dev/null (bits %d)", bits);
        ok(bits >= 0 && (bits & 4), "a task in e1 gets EPERM on %s (c 1:11) by default (bits %d)", restricted_node,
           bits);
        int outside = probe_devices(NULL);
        ok(outside & 2, "the test itself, outside, can open %s", restricted_node);
        struct cgroup_device_rule rule = {'c', 1, 11, "r"};
        int r = TIMED("set_devices", cgroup_enclave_set_devices(cg, "e1", &rule, 1, FRESH(err)));
        ok(r == 0, "allow c 1:11 r in e1 (%s)", err.msg);
        bits = devices_in("e1", "supervisor");
        ok(bits >= 0 && (bits & 2) && (bits & 1), "now it opens there, /dev/null still does (bits %d)", bits);
        bits = devices_in("e1", "apps/a1");
        ok(bits >= 0 && (bits & 2), "and in the app leaf made before the rule (bits %d)", bits);
        if (cg->mode == CGROUP_V1)
                ok(strstr(ctl("devices", "e1/apps/a1", "devices.list"), "c 1:11 r") != NULL,
                   "v1: devices.list of the app leaf shows c 1:11 r");
        bits = devices_in("e2", "supervisor");
        ok(bits >= 0 && (bits & 4), "e2 still refuses it (bits %d)", bits);
        ok(cgroup_enclave_set_devices(cg, "e1", NULL, 0, FRESH(err)) == 0, "drop the rule (%s)", err.msg);
        bits = devices_in("e1", "apps/a1");
        ok(bits >= 0 && (bits & 4) && (bits & 1), "refused again, /dev/null still fine (bits %d)", bits);
        struct cgroup_device_rule bad = {'x', 1, 3, "rw"};
        ok(cgroup_enclave_set_devices(cg, "e1", &bad, 1, FRESH(err)) == -EINVAL && STREQ(err.field, "devices[0]"),
           "a bad rule is refused with its index (%s)", err.msg);
}

static void test_cpus(const unsigned *cpus, int n_cpus)
{
        struct tessera_error err = {0};
        if (!have("cpuset")) {
                skip("cpus: no cpuset controller below `%s` (hybrid host: it lives on v1)", cg->mount);
                return;
        }
        char first[16], second[16], both[32], e2_before[1024];
        snprintf(first, sizeof(first), "%u", cpus[0]);
        snprintf(e2_before, sizeof(e2_before), "%s", ctl("cpuset", "e2", "cpuset.cpus"));
        int r = TIMED("set_cpus", cgroup_enclave_set_cpus(cg, "e1", first, FRESH(err)));
        ok(r == 0 && cpus_everywhere("e1", first), "e1 on cpu %s (%s)", first, err.msg);
        if (n_cpus < 2) {
                skip("cpus: one online CPU, no grow/shrink round trip");
        } else {
                snprintf(second, sizeof(second), "%u", cpus[1]);
                cpus_string(cpus, 2, both, sizeof(both));
                ok(cgroup_enclave_set_cpus(cg, "e1", both, FRESH(err)) == 0 && cpus_everywhere("e1", both),
                   "grow to %s with a task inside (%s)", both, err.msg);
                ok(cgroup_enclave_set_cpus(cg, "e1", second, FRESH(err)) == 0 && cpus_everywhere("e1", second),
                   "shrink to %s (%s)", second, err.msg);
                ok(cgroup_enclave_set_cpus(cg, "e1", first, FRESH(err)) == 0 && cpus_everywhere("e1", first),
                   "move to %s, neither subset nor superset (%s)", first, err.msg);
        }
        r = cgroup_enclave_set_cpus(cg, "e1", "4095", FRESH(err));
        ok(r < 0 && strstr(err.msg, "cpuset.cpus") && strstr(err.msg, "e1"),
           "an impossible cpu is refused and the message names the file (%s)", err.msg);
        ok(cpus_everywhere("e1", first), "e1 keeps cpu %s after the refusal", first);
        ok(STREQ(ctl("cpuset", "e2", "cpuset.cpus"), e2_before), "e2's cpus are untouched (\"%s\")", e2_before);
        ok(cgroup_enclave_set_mems(cg, "e1", "0", FRESH(err)) == 0, "set mems 0 (%s)", err.msg);
}

static void test_destroy(void)
{
        struct tessera_error err = {0};
        pid_t sup = supervisor_pid;
        pid_t app = spawn_sleeper();
        ok(cgroup_enter(cg, "e1", "apps/a1", app, FRESH(err)) == 0, "a second child in e1/apps/a1 (%s)", err.msg);
        ok(cgroup_enclave_count_tasks(cg, "e1", FRESH(err)) == 2, "e1 counts two tasks");
        int r = TIMED("enclave_destroy", cgroup_enclave_destroy(cg, "e1", FRESH(err)));
        ok(r == 0, "destroy e1 with two live tasks (%s)", err.msg);
        ok(reaped_by_sigkill(sup), "the supervisor child died of SIGKILL");
        ok(reaped_by_sigkill(app), "the app child died of SIGKILL");
        ok(in_every_hierarchy("e1", false), "e1 is gone from every hierarchy");
        ok(!cgroup_enclave_exists(cg, "e1"), "cgroup_enclave_exists(e1) is false");
        ok(cgroup_enclave_destroy(cg, "e1", FRESH(err)) == 0, "destroying e1 again returns 0 (%s)", err.msg);
        ok(cgroup_enclave_count_tasks(cg, "e1", FRESH(err)) == -ENOENT, "counting a missing enclave is ENOENT");
        ok(cgroup_app_remove(cg, "e1", "a1", FRESH(err)) == 0, "removing an app of a missing enclave returns 0");
        ok(cgroup_enclave_exists(cg, "e2") && in_every_hierarchy("e2/supervisor", true), "e2 is still there");
        if (have("memory"))
                ok(ctl_u64("memory", "e2", cg->mode == CGROUP_V1 ? "memory.limit_in_bytes" : "memory.max") == 128 * MiB,
                   "e2 keeps its 128M");
        /* An app leaf with a live task: app_remove kills it. */
        pid_t a2 = spawn_sleeper();
        ok(cgroup_app_create(cg, "e2", "a2", FRESH(err)) == 0 && cgroup_enter(cg, "e2", "apps/a2", a2, FRESH(err)) == 0,
           "a child in e2/apps/a2 (%s)", err.msg);
        ok(cgroup_app_remove(cg, "e2", "a2", FRESH(err)) == 0 && reaped_by_sigkill(a2) &&
                   in_every_hierarchy("e2/apps/a2", false),
           "app_remove kills it and removes the leaf (%s)", err.msg);
        ok(cgroup_enclave_destroy(cg, "e2", FRESH(err)) == 0 && !cgroup_enclave_exists(cg, "e2"), "destroy e2 (%s)",
           err.msg);
}

/* A top-level v1 cpuset that is not ours, which keeps our root group from being cpu_exclusive. */
static bool other_top_level_cpuset(char *ret, size_t n)
{
        char dir[PATH_MAX];
        snprintf(dir, sizeof(dir), "%s/cpuset", cg->mount);
        DIR *d = opendir(dir);
        if (!d)
                return false;
        struct dirent *de;
        bool found = false;
        while (!found && (de = readdir(d)))
                if (de->d_type == DT_DIR && de->d_name[0] != '.' && !STREQ(de->d_name, root_name)) {
                        snprintf(ret, n, "%s/%s", dir, de->d_name);
                        found = true;
                }
        closedir(d);
        return found;
}

/* Exclusive CPUs need a root group confined to a pool; this runs last, with no other enclave left. */
static void test_exclusive(const unsigned *cpus, int n_cpus)
{
        struct tessera_error err = {0};
        if (!have("cpuset")) {
                skip("exclusive: no cpuset controller below `%s`", cg->mount);
                return;
        }
        if (n_cpus < 2) {
                skip("exclusive: the pool must leave the machine a CPU, and there is only one");
                return;
        }
        char pool[16];
        snprintf(pool, sizeof(pool), "%u", cpus[n_cpus - 1]);
        struct cgroup_limits lim = {.cpus = pool, .mems = "", .memory_bytes = 0, .exclusive_cpus = true};
        ok(cgroup_enclave_create(cg, "x1", FRESH(err)) == 0, "create x1 (%s)", err.msg);
        int r = cgroup_enclave_apply(cg, "x1", &lim, FRESH(err));
        ok(r == -EPERM && strstr(err.msg, "cgroup_root_set_cpus"),
           "exclusive CPUs need a confined root group first (%s)", err.msg);
        /* v1 shrinks a parent only when every child fits: confine the root while it has no enclave. */
        ok(cgroup_enclave_destroy(cg, "x1", FRESH(err)) == 0, "destroy x1 (%s)", err.msg);
        r = cgroup_root_set_cpus(cg, pool, FRESH(err));
        if (r == -EINVAL && cg->mode == CGROUP_V1) {
                /* v1 refuses when another top-level cpuset (not ours) shares the cpu: a busy host, not a bug. */
                char other[256];
                if (other_top_level_cpuset(other, sizeof(other))) {
                        skip("exclusive: cpu %s is shared with the top-level cpuset `%s` (%s)", pool, other, err.msg);
                        return;
                }
        }
        ok(r == 0, "confine the root group to cpu %s (%s)", pool, err.msg);
        ok(cgroup_enclave_create(cg, "x1", FRESH(err)) == 0, "create x1 again (%s)", err.msg);
        r = cgroup_enclave_apply(cg, "x1", &lim, FRESH(err));
        ok(r == 0, "x1 gets cpu %s exclusively (%s)", pool, err.msg);
        if (cg->mode == CGROUP_V1) {
                ok(STREQ(ctl("cpuset", "x1", "cpuset.cpu_exclusive"), "1"), "v1: cpuset.cpu_exclusive = 1");
        } else {
                const char *state = ctl("cpuset", "x1", "cpuset.cpus.partition");
                ok(STREQ(state, "isolated") || STREQ(state, "root"), "v2: x1 is a partition (\"%s\")", state);
        }
        /* v1 gives a new enclave the pool less exclusive CPUs: here none, which must not fail the create. */
        ok(cgroup_enclave_create(cg, "x2", FRESH(err)) == 0, "create x2 beside an exclusive x1 (%s)", err.msg);
        struct cgroup_limits lim2 = lim;
        char x2_cpus[256];
        snprintf(x2_cpus, sizeof(x2_cpus), "%s", ctl("cpuset", "x2", "cpuset.cpus"));
        r = cgroup_enclave_apply(cg, "x2", &lim2, FRESH(err));
        ok(r < 0 && strstr(err.msg, "exclusive"), "x2 cannot have x1's cpu exclusively (%s)", err.msg);
        ok(STREQ(ctl("cpuset", "x2", "cpuset.cpus"), x2_cpus), "the refused apply put x2's cpus back (\"%s\")",
           x2_cpus);
        /* A step late in apply fails: the earlier memory step is undone. */
        lim2.cpus = "";
        lim2.memory_bytes = 96 * MiB;
        const char *mfile = cg->mode == CGROUP_V1 ? "memory.limit_in_bytes" : "memory.max";
        uint64_t before = have("memory") ? ctl_u64("memory", "x2", mfile) : 0;
        r = cgroup_enclave_apply(cg, "x2", &lim2, FRESH(err));
        ok(r == -EINVAL && strstr(err.msg, "without naming them"), "exclusive without cpus is refused (%s)", err.msg);
        if (have("memory"))
                ok(before != 96 * MiB && ctl_u64("memory", "x2", mfile) == before,
                   "the failed apply put x2's memory limit back");
        lim.exclusive_cpus = false;
        ok(cgroup_enclave_apply(cg, "x1", &lim, FRESH(err)) == 0, "x1 gives exclusivity up (%s)", err.msg);
        if (cg->mode == CGROUP_V1)
                ok(STREQ(ctl("cpuset", "x1", "cpuset.cpu_exclusive"), "0"), "v1: cpuset.cpu_exclusive = 0");
        else
                ok(STREQ(ctl("cpuset", "x1", "cpuset.cpus.partition"), "member"), "v2: x1 is a member again");
        ok(cgroup_enclave_destroy(cg, "x1", FRESH(err)) == 0 && cgroup_enclave_destroy(cg, "x2", FRESH(err)) == 0,
           "destroy x1 and x2 (%s)", err.msg);
        ok(cgroup_root_set_cpus(cg, "", FRESH(err)) == 0, "the root group gets every CPU back (%s)", err.msg);
}

static void run_suite(const char *mount)
{
        struct tessera_error err = {0};
        int r = TIMED("tessera_cgroup_open", tessera_cgroup_open(root_name, mount, &cg, FRESH(err)));
        ok(r == 0, "open cgroup root %s on %s (%s)", root_name, mount ? mount : "the default mount", err.msg);
        if (r < 0)
                return;
        diag("mode %s, mount %s", cgroup_mode_name(cg->mode), cg->mount);
        ok(in_every_hierarchy(NULL, true), "the root group exists in every hierarchy");
        unsigned cpus[8];
        int n_cpus = online_cpus(cpus, ELEMENTSOF(cpus));
        char cpu0[16];
        snprintf(cpu0, sizeof(cpu0), "%u", n_cpus > 0 ? cpus[0] : 0);

        test_structure();
        test_apply(cpu0);
        test_enter();
        test_leaf_fd();
        test_memory();
        test_pids();
        test_devices();
        test_cpus(cpus, n_cpus);
        test_destroy();
        test_exclusive(cpus, n_cpus);

        enum cgroup_mode mode = cg->mode;
        char saved_mount[256];
        snprintf(saved_mount, sizeof(saved_mount), "%s", cg->mount);
        r = TIMED("cgroup_root_remove", cgroup_root_remove(cg, FRESH(err)));
        ok(r == 0, "remove the root group (%s)", err.msg);
        ok(in_every_hierarchy(NULL, false), "the root group is gone from every hierarchy");
        tessera_cgroup_free(cg);
        cg = NULL;
        remove_by_hand(saved_mount, mode);
}

static void test_probe(void)
{
        char buf[2048];
        int r = cgroup_probe_report(buf, sizeof(buf));
        ok(r > 0 && strstr(buf, "cgroup mode: ") && strstr(buf, "controllers"), "probe report:\n%s", buf);
        ok(cgroup_probe_report(buf, 8) == -ENOBUFS, "a short buffer is ENOBUFS");
}

int main(void)
{
        if (geteuid() != 0) {
                skip("cgroups: needs root to create groups");
                return done_testing();
        }
        snprintf(root_name, sizeof(root_name), "tessera-test-%d", (int)getpid());
        atexit(cleanup);
        signal(SIGINT, on_signal);
        signal(SIGTERM, on_signal);
        signal(SIGALRM, on_signal);
        /* A closed stdout must not kill us before the groups are removed. */
        signal(SIGPIPE, SIG_IGN);
        alarm(300);

        test_probe();
        struct tessera_error err = {0};
        struct tessera_cgroup *bad = NULL;
        ok(tessera_cgroup_open("a/b", NULL, &bad, FRESH(err)) == -EINVAL && STREQ(err.field, "cgroup-root"),
           "a root name with a slash is refused (%s)", err.msg);
        ok(tessera_cgroup_open("x", "/proc", &bad, FRESH(err)) == -EOPNOTSUPP && strstr(err.msg, "/proc"),
           "a mount that is no cgroup is refused, naming it (%s)", err.msg);

        run_suite(NULL);

        /* Hybrid host: also drive the v2 code, in a group of our own inside the unified mount. */
        struct statfs fs;
        if (statfs("/sys/fs/cgroup", &fs) == 0 && fs.f_type == TMPFS_MAGIC &&
            statfs("/sys/fs/cgroup/unified", &fs) == 0 && fs.f_type == CGROUP2_SUPER_MAGIC) {
                snprintf(v2_base, sizeof(v2_base), "/sys/fs/cgroup/unified/%s-v2", root_name);
                if (mkdir(v2_base, 0755) < 0) {
                        skip("v2 on the hybrid unified mount: cannot create `%s`: %s", v2_base, strerror(errno));
                        v2_base[0] = '\0';
                } else {
                        diag("v2 code on the hybrid host's unified mount, below `%s`", v2_base);
                        run_suite(v2_base);
                        ok(rmdir(v2_base) == 0, "remove `%s`", v2_base);
                        v2_base[0] = '\0';
                }
        }
        return done_testing();
}
