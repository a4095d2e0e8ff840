/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Enclaves on the unified hierarchy: <mount>/<root>/<enclave>/{supervisor,
 * apps/<id>}.  Limits sit on the enclave group and the leaves inherit them;
 * the enclave group and "apps" only pass controllers down (no internal
 * processes).  Devices are a BPF_PROG_TYPE_CGROUP_DEVICE program on the
 * enclave group, assembled here.  Exclusive CPUs make the enclave a cpuset
 * partition, which the kernel allows only below a partition root: the
 * daemon's root group becomes one when cgroup_root_set_cpus gives it the
 * managed CPU pool.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <poll.h>
#include <stddef.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "cgroup-internal.h"
#include "util.h"

enum v2_ctrl { V2_CPUSET, V2_MEMORY, V2_PIDS, V2_HUGETLB, V2_MAX };

static const char *const v2_names[V2_MAX] = {
        [V2_CPUSET] = "cpuset",
        [V2_MEMORY] = "memory",
        [V2_PIDS] = "pids",
        [V2_HUGETLB] = "hugetlb",
};

#define HUGETLB_MAX "hugetlb.2MB.max"

struct cgroup_v2 {
        struct tessera_cgroup pub;
        bool enabled[V2_MAX]; /* enabled in the root group's cgroup.subtree_control */
        bool have_kill;       /* cgroup.kill (Linux 5.14) */
};

static struct cgroup_v2 *to_v2(struct tessera_cgroup *cg)
{
        return (struct cgroup_v2 *)cg;
}

static int v2_path(struct cgroup_v2 *v2, const char *rel, const char *file, char *buf, size_t n,
                   struct tessera_error *err)
{
        return cg_join(buf, n, err, v2->pub.mount, v2->pub.root, rel, file, (const char *)NULL);
}

static int v2_need(struct cgroup_v2 *v2, enum v2_ctrl c, struct tessera_error *err)
{
        if (v2->enabled[c])
                return 0;
        return tessera_error_set(err, EOPNOTSUPP,
                                 "the %s controller is not available below `%s/%s` (it is not "
                                 "in `%s/cgroup.controllers`)",
                                 v2_names[c], v2->pub.mount, v2->pub.root, v2->pub.mount);
}

static bool dir_exists(const char *path)
{
        struct stat st;
        return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool word_in(const char *list, const char *word)
{
        size_t len = strlen(word);
        for (const char *p = list; (p = strstr(p, word)); p += len)
                if ((p == list || p[-1] == ' ') && (p[len] == ' ' || p[len] == '\0'))
                        return true;
        return false;
}

/* ---- controllers ---- */

/* Enables, in `group`'s subtree_control, each wanted controller its cgroup.controllers offers. */
static int enable_controllers(const char *group, bool ret_enabled[V2_MAX], struct tessera_error *err)
{
        char path[PATH_MAX], avail[512], on[512], add[128] = "";
        int r;
        if ((r = CG_PATH(path, err, group, "cgroup.controllers")) < 0 ||
            (r = cg_read(path, avail, sizeof(avail), err)) < 0 ||
            (r = CG_PATH(path, err, group, "cgroup.subtree_control")) < 0 ||
            (r = cg_read(path, on, sizeof(on), err)) < 0)
                return r;
        for (int c = 0; c < V2_MAX; c++) {
                bool can = word_in(avail, v2_names[c]);
                if (ret_enabled)
                        ret_enabled[c] = can;
                if (can && !word_in(on, v2_names[c]))
                        snprintf(add + strlen(add), sizeof(add) - strlen(add), "%s+%s", add[0] ? " " : "", v2_names[c]);
        }
        return add[0] ? cg_write(path, add, err) : 0;
}

/* ---- waiting on cgroup.events ---- */

/* Waits until cgroup.events shows "<key> <want>"; the kernel signals each change as POLLPRI. */
static int wait_event(const char *group, const char *key, uint64_t want, unsigned budget_ms, struct tessera_error *err)
{
        char path[PATH_MAX], buf[256];
        int r = CG_PATH(path, err, group, "cgroup.events");
        if (r < 0)
                return r;
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return tessera_error_set(err, errno, "cannot open `%s`: %s", path, strerror(errno));
        uint64_t deadline = now_ns() + (uint64_t)budget_ms * 1000000ULL;
        for (;;) {
                ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
                if (n < 0)
                        return tessera_error_set(err, errno, "cannot read `%s`: %s", path, strerror(errno));
                buf[n] = '\0';
                char line[64];
                snprintf(line, sizeof(line), "%s %llu", key, (unsigned long long)want);
                for (char *p = buf; (p = strstr(p, line)); p++)
                        if ((p == buf || p[-1] == '\n') && (p[strlen(line)] == '\n' || p[strlen(line)] == '\0'))
                                return 0;
                uint64_t now = now_ns();
                if (now >= deadline)
                        return tessera_error_set(err, ETIMEDOUT, "`%s` did not show \"%s\" within %u ms", path, line,
                                                 budget_ms);
                struct pollfd pfd = {.fd = fd, .events = POLLPRI};
                int timeout = (int)((deadline - now) / 1000000ULL) + 1;
                if (poll(&pfd, 1, timeout) < 0 && errno != EINTR)
                        return tessera_error_set(err, errno, "cannot wait on `%s`: %s", path, strerror(errno));
        }
}

/* ---- cpus, mems, exclusivity ---- */

static bool partition_is_valid_root(const char *state)
{
        return (strncmp(state, "root", 4) == 0 || strncmp(state, "isolated", 8) == 0) && !strstr(state, "invalid");
}

static int v2_set_list(struct tessera_cgroup *cg, const char *enclave, const char *file, const char *what,
                       const char *list, struct tessera_error *err)
{
        struct cgroup_v2 *v2 = to_v2(cg);
        if (!v2->enabled[V2_CPUSET] && !list[0])
                return 0;
        int r = v2_need(v2, V2_CPUSET, err);
        if (r < 0)
                return r;
        char path[PATH_MAX], part[PATH_MAX], pool_path[PATH_MAX], effective[64], old[1024], pool[1024];
        char state[256] = "";
        snprintf(effective, sizeof(effective), "%s.effective", file);
        if ((r = v2_path(v2, enclave, file, path, sizeof(path), err)) < 0 ||
            (r = v2_path(v2, enclave, "cpuset.cpus.partition", part, sizeof(part), err)) < 0 ||
            (r = v2_path(v2, "", effective, pool_path, sizeof(pool_path), err)) < 0 ||
            (r = cg_read(path, old, sizeof(old), err)) < 0)
                return r;
        /*
         * "" asks for the root group's whole set: an empty list inherits it.
         * A group with tasks may not go from a list to empty (ENOSPC), so it
         * gets the root group's effective list by name instead, which already
         * leaves out the CPUs of partitions.
         */
        struct tessera_error first;
        r = cg_write(path, list, &first);
        if (r == -ENOSPC && !list[0]) {
                if ((r = cg_read(pool_path, pool, sizeof(pool), err)) < 0)
                        return r;
                list = pool;
                r = cg_write(path, list, err);
        } else if (r < 0 && err) {
                *err = first;
        }
        if (r < 0)
                return tessera_error_prefix(err, r, "enclave '%s' %s \"%s\"", enclave, what, list);
        if (!STREQ(file, "cpuset.cpus") || !cg_file_exists(part))
                return 0;
        /* A partition that the new cpus break turns "invalid" instead of failing the write. */
        struct tessera_error ignored;
        if (cg_read(part, state, sizeof(state), &ignored) >= 0 && strstr(state, "invalid")) {
                (void)cg_write(path, old, &ignored);
                return tessera_error_field(err, EINVAL, "cpus",
                                           "enclave '%s' cpus \"%s\" would break its exclusive "
                                           "partition (`%s`: \"%s\"); kept \"%s\"",
                                           enclave, list, part, state, old);
        }
        return 0;
}

static int v2_set_cpus(struct tessera_cgroup *cg, const char *enclave, const char *cpus, struct tessera_error *err)
{
        return v2_set_list(cg, enclave, "cpuset.cpus", "cpus", cpus, err);
}

static int v2_set_mems(struct tessera_cgroup *cg, const char *enclave, const char *mems, struct tessera_error *err)
{
        return v2_set_list(cg, enclave, "cpuset.mems", "mems", mems, err);
}

static int v2_set_exclusive(struct tessera_cgroup *cg, const char *enclave, bool on, struct tessera_error *err)
{
        struct cgroup_v2 *v2 = to_v2(cg);
        if (!v2->enabled[V2_CPUSET] && !on)
                return 0;
        int r = v2_need(v2, V2_CPUSET, err);
        if (r < 0)
                return r;
        char part[PATH_MAX], rootpart[PATH_MAX], cpus[PATH_MAX], state[256], list[1024];
        if ((r = v2_path(v2, enclave, "cpuset.cpus.partition", part, sizeof(part), err)) < 0 ||
            (r = v2_path(v2, "", "cpuset.cpus.partition", rootpart, sizeof(rootpart), err)) < 0 ||
            (r = v2_path(v2, enclave, "cpuset.cpus", cpus, sizeof(cpus), err)) < 0)
                return r;
        if (!cg_file_exists(part)) {
                if (!on)
                        return 0;
                return tessera_error_field(err, EOPNOTSUPP, "exclusive_cpus",
                                           "this kernel has no cpuset partitions "
                                           "(`%s` is missing)",
                                           part);
        }
        if ((r = cg_read(part, state, sizeof(state), err)) < 0)
                return r;
        if (!on)
                return STREQ(state, "member") ? 0 : cg_write(part, "member", err);
        if (partition_is_valid_root(state))
                return 0;
        if ((r = cg_read(rootpart, state, sizeof(state), err)) < 0)
                return r;
        if (!partition_is_valid_root(state))
                return tessera_error_field(err, EPERM, "exclusive_cpus",
                                           "enclave '%s' asks for exclusive CPUs, but "
                                           "the root group is no partition root (`%s` reads \"%s\"): give it the "
                                           "managed CPU pool with cgroup_root_set_cpus first",
                                           enclave, rootpart, state);
        if ((r = cg_read(cpus, list, sizeof(list), err)) < 0)
                return r;
        if (!list[0])
                return tessera_error_field(err, EINVAL, "exclusive_cpus",
                                           "enclave '%s' asks for exclusive CPUs "
                                           "without naming them (`%s` is empty)",
                                           enclave, cpus);
        /* "isolated" also takes the CPUs out of scheduler load balancing; older kernels know only "root". */
        struct tessera_error ignored;
        if (cg_write(part, "isolated", &ignored) < 0 && (r = cg_write(part, "root", err)) < 0)
                return tessera_error_prefix(err, r, "exclusive CPUs refused for enclave '%s'", enclave);
        if ((r = cg_read(part, state, sizeof(state), err)) < 0)
                return r;
        if (strstr(state, "invalid")) {
                (void)cg_write(part, "member", &ignored);
                return tessera_error_field(err, EINVAL, "exclusive_cpus",
                                           "exclusive CPUs refused for enclave '%s': "
                                           "`%s` read \"%s\" (cpus \"%s\"); it is back to \"member\"",
                                           enclave, part, state, list);
        }
        return 0;
}

/* ---- memory, pids, hugetlb ---- */

static int v2_write_u64_or_max(const char *path, uint64_t v, struct tessera_error *err)
{
        char val[32];
        if (v == UINT64_MAX)
                snprintf(val, sizeof(val), "max");
        else
                snprintf(val, sizeof(val), "%llu", (unsigned long long)v);
        return cg_write(path, val, err);
}

/*
 * v2 answers a memory.max below usage by OOM-killing, not EBUSY as v1 does.
 * To refuse the same way, first ask for the reclaim through memory.high
 * (which never kills), and only lower memory.max when usage came down.
 */
static int reclaim_below(struct cgroup_v2 *v2, const char *enclave, uint64_t bytes, struct tessera_error *err)
{
        char high[PATH_MAX], cur[PATH_MAX];
        uint64_t usage;
        int r;
        if ((r = v2_path(v2, enclave, "memory.high", high, sizeof(high), err)) < 0 ||
            (r = v2_path(v2, enclave, "memory.current", cur, sizeof(cur), err)) < 0 ||
            (r = cg_read_u64(cur, &usage, err)) < 0)
                return r;
        if (usage <= bytes)
                return 0;
        r = v2_write_u64_or_max(high, bytes, err);
        if (r < 0)
                return r;
        struct tessera_error ignored;
        r = cg_read_u64(cur, &usage, err);
        (void)cg_write(high, "max", &ignored);
        if (r < 0)
                return r;
        if (usage <= bytes)
                return 0;
        char used[32], want[32];
        format_size(usage, used, sizeof(used));
        format_size(bytes, want, sizeof(want));
        return tessera_error_field(err, EBUSY, "memory",
                                   "enclave '%s' uses %s, more than the new limit %s, and the "
                                   "kernel could not reclaim enough (`%s`)",
                                   enclave, used, want, cur);
}

static int v2_set_memory(struct tessera_cgroup *cg, const char *enclave, uint64_t bytes, struct tessera_error *err)
{
        struct cgroup_v2 *v2 = to_v2(cg);
        if (!v2->enabled[V2_MEMORY] && bytes == 0)
                return 0;
        int r = v2_need(v2, V2_MEMORY, err);
        if (r < 0)
                return r;
        char max[PATH_MAX], min[PATH_MAX], swap[PATH_MAX];
        uint64_t old;
        if ((r = v2_path(v2, enclave, "memory.max", max, sizeof(max), err)) < 0 ||
            (r = v2_path(v2, enclave, "memory.min", min, sizeof(min), err)) < 0 ||
            (r = v2_path(v2, enclave, "memory.swap.max", swap, sizeof(swap), err)) < 0 ||
            (r = cg_read_u64(max, &old, err)) < 0)
                return r;
        uint64_t want = bytes ? bytes : UINT64_MAX;
        if (want < old && (r = reclaim_below(v2, enclave, want, err)) < 0)
                return r;
        if ((r = v2_write_u64_or_max(max, want, err)) < 0)
                return r;
        /* The enclave's memory is a guarantee as well as a cap. */
        if ((r = v2_write_u64_or_max(min, bytes, err)) < 0) {
                struct tessera_error undo_err;
                (void)v2_write_u64_or_max(max, old, &undo_err);
                return r;
        }
        /* Like v1's memsw = limit: the cap covers memory and swap together. */
        if (cg_file_exists(swap))
                return cg_write(swap, "0", err);
        return 0;
}

static int v2_set_pids(struct tessera_cgroup *cg, const char *enclave, uint64_t max, struct tessera_error *err)
{
        struct cgroup_v2 *v2 = to_v2(cg);
        if (!v2->enabled[V2_PIDS] && max == 0)
                return 0;
        int r = v2_need(v2, V2_PIDS, err);
        if (r < 0)
                return r;
        char path[PATH_MAX];
        r = v2_path(v2, enclave, "pids.max", path, sizeof(path), err);
        if (r < 0)
                return r;
        return v2_write_u64_or_max(path, max ? max : UINT64_MAX, err);
}

static int v2_set_hugetlb(struct tessera_cgroup *cg, const char *enclave, uint64_t bytes, struct tessera_error *err)
{
        struct cgroup_v2 *v2 = to_v2(cg);
        char path[PATH_MAX];
        if (!v2->enabled[V2_HUGETLB])
                return 0; /* not managed here: cgroup_probe_report says so */
        int r = v2_path(v2, enclave, HUGETLB_MAX, path, sizeof(path), err);
        if (r < 0)
                return r;
        if (!cg_file_exists(path))
                return 0; /* no 2 MiB huge page size on this machine */
        return v2_write_u64_or_max(path, bytes, err);
}

static int v2_snapshot(struct tessera_cgroup *cg, const char *enclave, struct cgroup_snapshot *ret,
                       struct tessera_error *err)
{
        struct cgroup_v2 *v2 = to_v2(cg);
        char path[PATH_MAX], state[256];
        int r;
        memset(ret, 0, sizeof(*ret));
        ret->hugetlb_bytes = UINT64_MAX;
        if (v2->enabled[V2_CPUSET]) {
                if ((r = v2_path(v2, enclave, "cpuset.cpus", path, sizeof(path), err)) < 0 ||
                    (r = cg_read(path, ret->cpus, sizeof(ret->cpus), err)) < 0 ||
                    (r = v2_path(v2, enclave, "cpuset.mems", path, sizeof(path), err)) < 0 ||
                    (r = cg_read(path, ret->mems, sizeof(ret->mems), err)) < 0 ||
                    (r = v2_path(v2, enclave, "cpuset.cpus.partition", path, sizeof(path), err)) < 0)
                        return r;
                ret->exclusive = cg_read(path, state, sizeof(state), NULL) >= 0 && partition_is_valid_root(state);
        }
        if (v2->enabled[V2_MEMORY]) {
                if ((r = v2_path(v2, enclave, "memory.max", path, sizeof(path), err)) < 0 ||
                    (r = cg_read_u64(path, &ret->memory_bytes, err)) < 0)
                        return r;
                if (ret->memory_bytes == UINT64_MAX)
                        ret->memory_bytes = 0;
        }
        if (v2->enabled[V2_PIDS]) {
                if ((r = v2_path(v2, enclave, "pids.max", path, sizeof(path), err)) < 0 ||
                    (r = cg_read_u64(path, &ret->pids_max, err)) < 0)
                        return r;
                if (ret->pids_max == UINT64_MAX)
                        ret->pids_max = 0;
        }
        if (v2->enabled[V2_HUGETLB]) {
                if ((r = v2_path(v2, enclave, HUGETLB_MAX, path, sizeof(path), err)) < 0)
                        return r;
                if (cg_file_exists(path) && (r = cg_read_u64(path, &ret->hugetlb_bytes, err)) < 0)
                        return r;
        }
        return 0;
}

/* ---- devices: a cgroup BPF program ---- */

static struct bpf_insn insn(uint8_t code, uint8_t dst, uint8_t src, int16_t off, int32_t imm)
{
        return (struct bpf_insn){.code = code, .dst_reg = dst, .src_reg = src, .off = off, .imm = imm};
}

static uint32_t rule_access(const char *access)
{
        uint32_t a = 0;
        for (const char *p = access; *p; p++)
                a |= *p == 'r'   ? BPF_DEVCG_ACC_READ
                     : *p == 'w' ? BPF_DEVCG_ACC_WRITE
                     : *p == 'm' ? BPF_DEVCG_ACC_MKNOD
                                 : 0;
        return a;
}

/*
 * The program: load type, access, major and minor from the context into
 * r2..r5, then one block per rule that jumps to the next block on any
 * mismatch and otherwise returns 1 (allow); after the last block, return 0.
 */
static size_t build_device_program(const struct cgroup_device_rule *rules, size_t n, struct bpf_insn *p)
{
        const uint32_t all = BPF_DEVCG_ACC_MKNOD | BPF_DEVCG_ACC_READ | BPF_DEVCG_ACC_WRITE;
        size_t i = 0;
        p[i++] = insn(BPF_LDX | BPF_MEM | BPF_W, BPF_REG_2, BPF_REG_1, offsetof(struct bpf_cgroup_dev_ctx, access_type),
                      0);
        p[i++] = insn(BPF_ALU | BPF_AND | BPF_K, BPF_REG_2, 0, 0, 0xffff);
        p[i++] = insn(BPF_LDX | BPF_MEM | BPF_W, BPF_REG_3, BPF_REG_1, offsetof(struct bpf_cgroup_dev_ctx, access_type),
                      0);
        p[i++] = insn(BPF_ALU | BPF_RSH | BPF_K, BPF_REG_3, 0, 0, 16);
        p[i++] = insn(BPF_LDX | BPF_MEM | BPF_W, BPF_REG_4, BPF_REG_1, offsetof(struct bpf_cgroup_dev_ctx, major), 0);
        p[i++] = insn(BPF_LDX | BPF_MEM | BPF_W, BPF_REG_5, BPF_REG_1, offsetof(struct bpf_cgroup_dev_ctx, minor), 0);
        for (size_t k = 0; k < n; k++) {
                const struct cgroup_device_rule *r = &rules[k];
                uint32_t denied = all & ~rule_access(r->access);
                size_t len = 1 + (denied ? 1 : 0) + (r->major >= 0 ? 1 : 0) + (r->minor >= 0 ? 1 : 0) + 2;
                size_t next = i + len;
#define JUMP_TO_NEXT ((int16_t)(next - (i + 1)))
                p[i] = insn(BPF_JMP | BPF_JNE | BPF_K, BPF_REG_2, 0, JUMP_TO_NEXT,
                            r->type == 'b' ? BPF_DEVCG_DEV_BLOCK : BPF_DEVCG_DEV_CHAR);
                i++;
                if (denied) {
                        p[i] = insn(BPF_JMP | BPF_JSET | BPF_K, BPF_REG_3, 0, JUMP_TO_NEXT, (int32_t)denied);
                        i++;
                }
                if (r->major >= 0) {
                        p[i] = insn(BPF_JMP | BPF_JNE | BPF_K, BPF_REG_4, 0, JUMP_TO_NEXT, (int32_t)r->major);
                        i++;
                }
                if (r->minor >= 0) {
                        p[i] = insn(BPF_JMP | BPF_JNE | BPF_K, BPF_REG_5, 0, JUMP_TO_NEXT, (int32_t)r->minor);
                        i++;
                }
#undef JUMP_TO_NEXT
                p[i++] = insn(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, 1);
                p[i++] = insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0);
        }
        p[i++] = insn(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, 0);
        p[i++] = insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0);
        return i;
}

static int sys_bpf(int cmd, union bpf_attr *attr)
{
        return (int)syscall(SYS_bpf, cmd, attr, sizeof(*attr));
}

/* Loads the program; the returned fd is close-on-exec, as every bpf() fd is. */
static int load_device_program(const struct bpf_insn *prog, size_t n, struct tessera_error *err)
{
        union bpf_attr attr;
        memset(&attr, 0, sizeof(attr));
        attr.prog_type = BPF_PROG_TYPE_CGROUP_DEVICE;
        attr.insns = (uint64_t)(uintptr_t)prog;
        attr.insn_cnt = (uint32_t)n;
        attr.license = (uint64_t)(uintptr_t) "LGPL-2.1-or-later";
        snprintf(attr.prog_name, sizeof(attr.prog_name), "tessera_devices");
        int fd = sys_bpf(BPF_PROG_LOAD, &attr);
        if (fd >= 0)
                return fd;
        int e = errno;
        /* Load again with the verifier's log to say why. */
        _cleanup_free_ char *log = calloc(1, 65536);
        if (log && e != EPERM && e != ENOSYS) {
                attr.log_level = 1;
                attr.log_buf = (uint64_t)(uintptr_t)log;
                attr.log_size = 65536;
                fd = sys_bpf(BPF_PROG_LOAD, &attr);
                if (fd >= 0)
                        return fd;
        }
        size_t len = log ? strlen(log) : 0;
        return tessera_error_set(err, e, "cannot load the device filter (%zu instructions): %s%s%s", n, strerror(e),
                                 len ? "; verifier: " : "",
                                 len > 300 ? log + len - 300
                                 : len     ? log
                                           : "");
}

/*
 * Attaches without BPF_F_ALLOW_MULTI, which replaces the group's previous
 * filter in one step (no window without one) and keeps anything below the
 * enclave from loosening it.
 */
static int attach_device_program(const char *group, int prog, struct tessera_error *err)
{
        _cleanup_close_ int dfd = open(group, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0)
                return tessera_error_set(err, errno, "cannot open cgroup `%s`: %s", group, strerror(errno));
        union bpf_attr attr;
        memset(&attr, 0, sizeof(attr));
        attr.target_fd = (uint32_t)dfd;
        attr.attach_bpf_fd = (uint32_t)prog;
        attr.attach_type = BPF_CGROUP_DEVICE;
        if (sys_bpf(BPF_PROG_ATTACH, &attr) < 0)
                return tessera_error_set(err, errno, "cannot attach the device filter to `%s`: %s%s", group,
                                         strerror(errno),
                                         errno == EPERM ? " (a parent group's filter forbids it, "
                                                          "or CAP_SYS_ADMIN is missing)"
                                                        : "");
        return 0;
}

static int device_program_count(const char *group, struct tessera_error *err)
{
        _cleanup_close_ int dfd = open(group, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0)
                return tessera_error_set(err, errno, "cannot open cgroup `%s`: %s", group, strerror(errno));
        union bpf_attr attr;
        memset(&attr, 0, sizeof(attr));
        attr.query.target_fd = (uint32_t)dfd;
        attr.query.attach_type = BPF_CGROUP_DEVICE;
        if (sys_bpf(BPF_PROG_QUERY, &attr) < 0)
                return tessera_error_set(err, errno, "cannot query the device filters of `%s`: %s", group,
                                         strerror(errno));
        return (int)attr.query.prog_cnt;
}

static int install_devices(const char *group, const struct cgroup_device_rule *rules, size_t n,
                           struct tessera_error *err)
{
        _cleanup_free_ struct bpf_insn *prog = calloc(6 * n + 8, sizeof(*prog));
        if (!prog)
                return tessera_error_set(err, ENOMEM, "out of memory for %zu device rules", n);
        size_t len = build_device_program(rules, n, prog);
        _cleanup_close_ int fd = load_device_program(prog, len, err);
        if (fd < 0)
                return fd;
        /* Once attached the group holds the program; our fd can go. */
        return attach_device_program(group, fd, err);
}

static int v2_set_devices(struct tessera_cgroup *cg, const char *enclave, const struct cgroup_device_rule *rules,
                          size_t n_rules, struct tessera_error *err)
{
        char group[PATH_MAX];
        int r = v2_path(to_v2(cg), enclave, "", group, sizeof(group), err);
        if (r < 0)
                return r;
        if (!dir_exists(group))
                return tessera_error_set(err, ENOENT, "enclave '%s' has no cgroup `%s`", enclave, group);
        r = install_devices(group, rules, n_rules, err);
        if (r < 0)
                return tessera_error_prefix(err, r, "enclave '%s' devices", enclave);
        return 0;
}

/* ---- groups ---- */

enum { MADE_GROUP = 1, MADE_SUPERVISOR = 2, MADE_APPS = 4 };

/*
 * Without the memory_recursiveprot mount option a group is protected only by
 * its own memory.min, however much its parent has: groups below the enclave
 * claim "max", so they share the enclave's guarantee between them.
 */
static int claim_parent_protection(const char *group, struct tessera_error *err)
{
        char path[PATH_MAX];
        int r = CG_PATH(path, err, group, "memory.min");
        if (r < 0 || !cg_file_exists(path))
                return r;
        return cg_write(path, "max", err);
}

static int create_groups(struct cgroup_v2 *v2, const char *enclave, unsigned *made, struct tessera_error *err)
{
        char group[PATH_MAX], sup[PATH_MAX], apps[PATH_MAX];
        bool created;
        int r;
        if ((r = v2_path(v2, enclave, "", group, sizeof(group), err)) < 0 ||
            (r = v2_path(v2, enclave, "supervisor", sup, sizeof(sup), err)) < 0 ||
            (r = v2_path(v2, enclave, "apps", apps, sizeof(apps), err)) < 0)
                return r;
        if ((r = cg_mkdir(group, &created, err)) < 0)
                return r;
        *made |= created ? MADE_GROUP : 0;
        if ((r = enable_controllers(group, NULL, err)) < 0)
                return r;
        /* Only when none is there: re-creating an existing enclave keeps its device rules. */
        if ((r = device_program_count(group, err)) < 0)
                return r;
        if (r == 0 && (r = install_devices(group, cg_standard_devices, cg_n_standard_devices, err)) < 0)
                return r;
        if ((r = cg_mkdir(sup, &created, err)) < 0)
                return r;
        *made |= created ? MADE_SUPERVISOR : 0;
        if ((r = claim_parent_protection(sup, err)) < 0)
                return r;
        if ((r = cg_mkdir(apps, &created, err)) < 0)
                return r;
        *made |= created ? MADE_APPS : 0;
        if ((r = claim_parent_protection(apps, err)) < 0)
                return r;
        return enable_controllers(apps, NULL, err);
}

static int v2_enclave_create(struct tessera_cgroup *cg, const char *enclave, struct tessera_error *err)
{
        struct cgroup_v2 *v2 = to_v2(cg);
        unsigned made = 0;
        int r = create_groups(v2, enclave, &made, err);
        if (r >= 0)
                return 0;
        struct tessera_error undo_err;
        char path[PATH_MAX];
        if ((made & MADE_APPS) && v2_path(v2, enclave, "apps", path, sizeof(path), &undo_err) == 0)
                (void)cg_rmdir(path, &undo_err);
        if ((made & MADE_SUPERVISOR) && v2_path(v2, enclave, "supervisor", path, sizeof(path), &undo_err) == 0)
                (void)cg_rmdir(path, &undo_err);
        if ((made & MADE_GROUP) && v2_path(v2, enclave, "", path, sizeof(path), &undo_err) == 0)
                (void)cg_rmdir(path, &undo_err);
        return tessera_error_prefix(err, r, "creating enclave '%s'", enclave);
}

static int v2_leaf_create(struct tessera_cgroup *cg, const char *enclave, const char *leaf, struct tessera_error *err)
{
        char rel[256], path[PATH_MAX];
        snprintf(rel, sizeof(rel), "%s/%s", enclave, leaf);
        int r = v2_path(to_v2(cg), rel, "", path, sizeof(path), err);
        if (r < 0)
                return r;
        bool created = false;
        r = cg_mkdir(path, &created, err);
        if (r >= 0)
                r = claim_parent_protection(path, err);
        if (r < 0) {
                struct tessera_error undo_err;
                if (created)
                        (void)cg_rmdir(path, &undo_err);
                return tessera_error_prefix(err, r, "creating `%s` of enclave '%s'", leaf, enclave);
        }
        return 0;
}

static bool v2_exists(struct tessera_cgroup *cg, const char *rel)
{
        char path[PATH_MAX];
        return v2_path(to_v2(cg), rel, "", path, sizeof(path), NULL) == 0 && dir_exists(path);
}

/* Without cgroup.kill: freeze so nothing forks while we kill, kill every task, thaw (always). */
static int freeze_and_kill(const char *group, struct tessera_error *err)
{
        char freeze[PATH_MAX];
        int r = CG_PATH(freeze, err, group, "cgroup.freeze");
        if (r < 0 || (r = cg_write(freeze, "1", err)) < 0)
                return r;
        r = wait_event(group, "frozen", 1, 2000, err);
        if (r >= 0)
                r = cg_kill_tree(group, "cgroup.procs", err);
        struct tessera_error thaw_err;
        int t = cg_write(freeze, "0", r < 0 ? &thaw_err : err);
        return r < 0 ? r : t;
}

static int v2_remove_tree(struct tessera_cgroup *cg, const char *rel, struct tessera_error *err)
{
        struct cgroup_v2 *v2 = to_v2(cg);
        char group[PATH_MAX], path[PATH_MAX];
        int r = v2_path(v2, rel, "", group, sizeof(group), err);
        if (r < 0)
                return r;
        if (!dir_exists(group))
                return 0;
        if (v2->have_kill) {
                /* One write kills every task below, forks racing with it included. */
                if ((r = CG_PATH(path, err, group, "cgroup.kill")) < 0 || (r = cg_write(path, "1", err)) < 0)
                        return r;
        } else if ((r = freeze_and_kill(group, err)) < 0) {
                return r;
        }
        r = wait_event(group, "populated", 0, 2000, err);
        if (r < 0)
                return r;
        return cg_rmdir_tree(group, err);
}

/* ---- processes ---- */

static int v2_enter(struct tessera_cgroup *cg, const char *enclave, const char *leaf, pid_t pid,
                    struct tessera_error *err)
{
        char rel[256], path[PATH_MAX], val[16];
        snprintf(rel, sizeof(rel), "%s/%s", enclave, leaf);
        int r = v2_path(to_v2(cg), rel, "cgroup.procs", path, sizeof(path), err);
        if (r < 0)
                return r;
        snprintf(val, sizeof(val), "%d", (int)pid);
        r = cg_write(path, val, err);
        if (r < 0)
                return tessera_error_prefix(err, r, "moving pid %d into `%s` of enclave '%s'", (int)pid, leaf, enclave);
        return 0;
}

static int v2_leaf_fd(struct tessera_cgroup *cg, const char *enclave, const char *leaf, struct tessera_error *err)
{
        char rel[256], path[PATH_MAX];
        snprintf(rel, sizeof(rel), "%s/%s", enclave, leaf);
        int r = v2_path(to_v2(cg), rel, "", path, sizeof(path), err);
        if (r < 0)
                return r;
        int fd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return tessera_error_set(err, errno, "cannot open cgroup `%s`: %s", path, strerror(errno));
        return fd;
}

static int v2_count_tasks(struct tessera_cgroup *cg, const char *rel, struct tessera_error *err)
{
        char group[PATH_MAX];
        int r = v2_path(to_v2(cg), rel, "", group, sizeof(group), err);
        if (r < 0)
                return r;
        if (!dir_exists(group))
                return tessera_error_set(err, ENOENT, "enclave '%s' has no cgroup `%s`", rel, group);
        return cg_count_tree(group, err);
}

static int v2_stats(struct tessera_cgroup *cg, const char *rel, struct cgroup_stats *ret, struct tessera_error *err)
{
        struct cgroup_v2 *v2 = to_v2(cg);
        char path[PATH_MAX];
        uint64_t usec = 0;
        int r;
        if (v2->enabled[V2_MEMORY]) {
                if ((r = v2_path(v2, rel, "memory.current", path, sizeof(path), err)) < 0 ||
                    (r = cg_read_u64(path, &ret->memory_current, err)) < 0 ||
                    (r = v2_path(v2, rel, "memory.peak", path, sizeof(path), err)) < 0)
                        return r;
                /* memory.peak is Linux 5.19. */
                if (cg_file_exists(path) && (r = cg_read_u64(path, &ret->memory_peak, err)) < 0)
                        return r;
        }
        /* cpu.stat exists in every v2 group, with or without the cpu controller. */
        if ((r = v2_path(v2, rel, "cpu.stat", path, sizeof(path), err)) < 0 ||
            (r = cg_read_key(path, "usage_usec", &usec, err)) < 0)
                return r;
        ret->cpu_usage_ns = usec * 1000;
        return 0;
}

/* ---- the root group ---- */

static int v2_root_set_cpus(struct tessera_cgroup *cg, const char *cpus, struct tessera_error *err)
{
        struct cgroup_v2 *v2 = to_v2(cg);
        int r = v2_need(v2, V2_CPUSET, err);
        if (r < 0)
                return r;
        char path[PATH_MAX], part[PATH_MAX], old[1024], state[256];
        if ((r = v2_path(v2, "", "cpuset.cpus", path, sizeof(path), err)) < 0 ||
            (r = v2_path(v2, "", "cpuset.cpus.partition", part, sizeof(part), err)) < 0 ||
            (r = cg_read(path, old, sizeof(old), err)) < 0)
                return r;
        bool partitions = cg_file_exists(part);
        if (!cpus[0]) {
                if (partitions && (r = cg_write(part, "member", err)) < 0)
                        return r;
                return cg_write(path, "", err);
        }
        if ((r = cg_write(path, cpus, err)) < 0)
                return tessera_error_prefix(err, r, "confining the root group to cpus \"%s\"", cpus);
        if (!partitions)
                return tessera_error_set(err, EOPNOTSUPP, "this kernel has no cpuset partitions (`%s` is missing)",
                                         part);
        struct tessera_error ignored;
        if ((r = cg_write(part, "root", err)) < 0 || (r = cg_read(part, state, sizeof(state), err)) < 0) {
                (void)cg_write(path, old, &ignored);
                return r;
        }
        if (strstr(state, "invalid")) {
                (void)cg_write(part, "member", &ignored);
                (void)cg_write(path, old, &ignored);
                return tessera_error_set(err, EINVAL,
                                         "the root group cannot become a cpuset partition with cpus "
                                         "\"%s\": `%s` read \"%s\" (the pool must leave the rest of the machine at "
                                         "least one CPU and not overlap a sibling's cpus)",
                                         cpus, part, state);
        }
        return 0;
}

static int v2_root_remove(struct tessera_cgroup *cg, struct tessera_error *err)
{
        char path[PATH_MAX];
        int r = v2_path(to_v2(cg), "", "", path, sizeof(path), err);
        if (r < 0)
                return r;
        return cg_rmdir(path, err);
}

static const char *v2_reference_dir(struct tessera_cgroup *cg, char *buf, size_t n)
{
        snprintf(buf, n, "%s", cg->mount);
        return buf;
}

static bool v2_is_reference_line(const char *controllers, const char *hierarchy_id)
{
        return STREQ(hierarchy_id, "0") && controllers[0] == '\0';
}

/* ---- open ---- */

static int prepare_root(struct cgroup_v2 *v2, bool *made, struct tessera_error *err)
{
        char root[PATH_MAX], path[PATH_MAX];
        int r;
        /*
         * The controllers must be enabled at every level down to the root
         * group.  On a v2-only host the mount is the top of the hierarchy
         * and this enables them there for good: other users may rely on
         * them by then, so nothing undoes it.
         */
        if ((r = enable_controllers(v2->pub.mount, NULL, err)) < 0)
                return r;
        if ((r = v2_path(v2, "", "", root, sizeof(root), err)) < 0 || (r = cg_mkdir(root, made, err)) < 0)
                return r;
        if ((r = enable_controllers(root, v2->enabled, err)) < 0)
                return r;
        /*
         * memory.min protects a group only up to its parent's: an unlimited
         * root group lets each enclave's own memory.min count in full.
         */
        if ((r = v2_path(v2, "", "memory.min", path, sizeof(path), err)) < 0)
                return r;
        if (cg_file_exists(path) && (r = cg_write(path, "max", err)) < 0)
                return r;
        if ((r = v2_path(v2, "", "cgroup.kill", path, sizeof(path), err)) < 0)
                return r;
        v2->have_kill = cg_file_exists(path);
        return 0;
}

static int v2_open(const char *root_name, const char *mount, struct tessera_cgroup **ret, struct tessera_error *err)
{
        _cleanup_free_ struct cgroup_v2 *v2 = calloc(1, sizeof(*v2));
        if (!v2)
                return tessera_error_set(err, ENOMEM, "out of memory");
        v2->pub.ops = &cgroup_v2_ops;
        v2->pub.mode = CGROUP_V2;
        snprintf(v2->pub.root, sizeof(v2->pub.root), "%s", root_name);
        snprintf(v2->pub.mount, sizeof(v2->pub.mount), "%s", mount);
        bool made = false;
        int r = prepare_root(v2, &made, err);
        if (r < 0) {
                char path[PATH_MAX];
                struct tessera_error undo_err;
                if (made && v2_path(v2, "", "", path, sizeof(path), &undo_err) == 0)
                        (void)cg_rmdir(path, &undo_err);
                return tessera_error_prefix(err, r, "preparing cgroup root '%s'", root_name);
        }
        *ret = &TAKE_PTR(v2)->pub;
        return 0;
}

static void v2_free(struct tessera_cgroup *cg)
{
        free(to_v2(cg));
}

const struct cgroup_ops cgroup_v2_ops = {
        .mode = CGROUP_V2,
        .open = v2_open,
        .free = v2_free,
        .root_set_cpus = v2_root_set_cpus,
        .root_remove = v2_root_remove,
        .enclave_create = v2_enclave_create,
        .leaf_create = v2_leaf_create,
        .remove_tree = v2_remove_tree,
        .exists = v2_exists,
        .snapshot = v2_snapshot,
        .set_cpus = v2_set_cpus,
        .set_mems = v2_set_mems,
        .set_memory = v2_set_memory,
        .set_pids = v2_set_pids,
        .set_hugetlb = v2_set_hugetlb,
        .set_exclusive = v2_set_exclusive,
        .set_devices = v2_set_devices,
        .enter = v2_enter,
        .leaf_fd = v2_leaf_fd,
        .count_tasks = v2_count_tasks,
        .stats = v2_stats,
        .reference_dir = v2_reference_dir,
        .is_reference_line = v2_is_reference_line,
};
