/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Enclaves on cgroup v1 (and on hybrid hosts, whose unified hierarchy does
 * not hold the controllers we need): one tree per controller,
 * <mount>/<controller>/<root>/<enclave>/{supervisor,apps/<id>}.
 *
 * v1 differs from v2 in ways that shape this file:
 *  - a new cpuset has no cpus and no mems, and a child's set must stay
 *    within its parent's, so every group gets explicit lists, written
 *    parents first when they grow and children first when they shrink;
 *  - there is no memory.min: memory.soft_limit_in_bytes = limit is the
 *    nearest thing (reclaim prefers groups above their soft limit);
 *  - a devices group copies its parent's list only when it is created, "a"
 *    may be written only to a group without children, and a child can never
 *    allow more than its parent, so the allow list is kept as a diff;
 *  - there is no cgroup.kill: destroy freezes, kills, thaws, then removes.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>

#include "cgroup-internal.h"
#include "util.h"

enum v1_ctrl { V1_CPUSET, V1_MEMORY, V1_PIDS, V1_FREEZER, V1_DEVICES, V1_CPU, V1_CPUACCT, V1_HUGETLB, V1_MAX };

static const char *const v1_names[V1_MAX] = {
        [V1_CPUSET] = "cpuset",   [V1_MEMORY] = "memory", [V1_PIDS] = "pids",       [V1_FREEZER] = "freezer",
        [V1_DEVICES] = "devices", [V1_CPU] = "cpu",       [V1_CPUACCT] = "cpuacct", [V1_HUGETLB] = "hugetlb",
};

#define HUGETLB_LIMIT "hugetlb.2MB.limit_in_bytes"

struct cgroup_v1 {
        struct tessera_cgroup pub;
        bool have[V1_MAX]; /* a v1 hierarchy with this controller is mounted */
        bool own[V1_MAX];  /* first name of its hierarchy (cpu,cpuacct may share one): groups are made here */
        bool memsw;        /* swap accounting: memory.memsw.* exists */
        bool hugetlb_2m;
};

static struct cgroup_v1 *to_v1(struct tessera_cgroup *cg)
{
        return (struct cgroup_v1 *)cg;
}

/* <mount>/<controller>/<root>/<rel>/<file>; rel and file may be "". */
static int v1_path(struct cgroup_v1 *v1, enum v1_ctrl c, const char *rel, const char *file, char *buf, size_t n,
                   struct tessera_error *err)
{
        return cg_join(buf, n, err, v1->pub.mount, v1_names[c], v1->pub.root, rel, file, (const char *)NULL);
}

static int v1_need(struct cgroup_v1 *v1, enum v1_ctrl c, struct tessera_error *err)
{
        if (v1->have[c])
                return 0;
        return tessera_error_set(err, EOPNOTSUPP, "cgroup v1: no %s hierarchy is mounted at `%s/%s`", v1_names[c],
                                 v1->pub.mount, v1_names[c]);
}

static bool dir_exists(const char *path)
{
        struct stat st;
        return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static void closedirp(DIR **d)
{
        if (*d)
                closedir(*d);
}

/* ---- cpuset lists ---- */

/* Fills the lists of a fresh cpuset, which start empty; an empty `cpus` leaves it without CPUs for now. */
static int v1_cpuset_init(const char *group, const char *cpus, const char *mems, struct tessera_error *err)
{
        const char *files[] = {"cpuset.cpus", "cpuset.mems"};
        const char *values[] = {cpus, mems};
        for (size_t i = 0; i < ELEMENTSOF(files); i++) {
                char path[PATH_MAX], cur[1024];
                int r = CG_PATH(path, err, group, files[i]);
                if (r < 0 || (r = cg_read(path, cur, sizeof(cur), err)) < 0)
                        return r;
                if (cur[0] || !values[i][0])
                        continue;
                r = cg_write(path, values[i], err);
                if (r < 0)
                        return r;
        }
        /* Pages follow a change of mems instead of staying on the old node. */
        char path[PATH_MAX];
        int r = CG_PATH(path, err, group, "cpuset.memory_migrate");
        if (r < 0)
                return r;
        return cg_write(path, "1", err);
}

/* A leaf gets its parent's lists: v1 cpusets inherit nothing. */
static int v1_cpuset_inherit(const char *group, const char *parent, struct tessera_error *err)
{
        char cpus_path[PATH_MAX], mems_path[PATH_MAX], cpus[1024], mems[1024];
        int r;
        if ((r = CG_PATH(cpus_path, err, parent, "cpuset.cpus")) < 0 ||
            (r = CG_PATH(mems_path, err, parent, "cpuset.mems")) < 0 ||
            (r = cg_read(cpus_path, cpus, sizeof(cpus), err)) < 0 ||
            (r = cg_read(mems_path, mems, sizeof(mems), err)) < 0)
                return r;
        return v1_cpuset_init(group, cpus, mems, err);
}

/*
 * The CPUs an enclave gets when it names none: the root group's, less those
 * of exclusive enclaves, since v1 lets no sibling overlap an exclusive
 * cpuset at all.  `self` is left out of the subtraction.
 */
static int v1_free_cpus(struct cgroup_v1 *v1, const char *self, char *buf, size_t n, struct tessera_error *err)
{
        char root[PATH_MAX], path[PATH_MAX], val[1024];
        int r;
        if ((r = v1_path(v1, V1_CPUSET, "", "", root, sizeof(root), err)) < 0 ||
            (r = CG_PATH(path, err, root, "cpuset.cpus")) < 0 || (r = cg_read(path, val, sizeof(val), err)) < 0)
                return r;
        struct cpubits free_cpus, held;
        if (cpulist_parse(val, &free_cpus) < 0)
                return tessera_error_set(err, EBADMSG, "cannot parse `%s` (\"%s\")", path, val);
        _cleanup_(closedirp) DIR *d = opendir(root);
        if (!d)
                return tessera_error_set(err, errno, "cannot list `%s`: %s", root, strerror(errno));
        struct dirent *de;
        while ((de = readdir(d))) {
                if (de->d_type != DT_DIR || de->d_name[0] == '.' || (self && STREQ(de->d_name, self)))
                        continue;
                if (CG_PATH(path, err, root, de->d_name, "cpuset.cpu_exclusive") < 0 ||
                    cg_read(path, val, sizeof(val), NULL) < 0 || !STREQ(val, "1"))
                        continue;
                if ((r = CG_PATH(path, err, root, de->d_name, "cpuset.cpus")) < 0 ||
                    (r = cg_read(path, val, sizeof(val), err)) < 0)
                        return r;
                if (cpulist_parse(val, &held) == 0)
                        cpubits_andnot(&free_cpus, &held);
        }
        cpulist_format(&free_cpus, buf, n);
        return 0;
}

struct write_ctx {
        const char *file;
        const char *value;
};

static int visit_write(const char *group, void *userdata, struct tessera_error *err)
{
        const struct write_ctx *w = userdata;
        char path[PATH_MAX];
        int r = CG_PATH(path, err, group, w->file);
        if (r < 0)
                return r;
        return cg_write(path, w->value, err);
}

static int write_tree(const char *group, const char *file, const char *value, bool children_first,
                      struct tessera_error *err)
{
        struct write_ctx w = {file, value};
        return cg_walk(group, children_first, visit_write, &w, err);
}

/*
 * Moves a whole enclave subtree from its current list to `want`.  Growing
 * goes parents first, shrinking children first; a list that does both
 * ("0" -> "1") first grows every group to the union, then shrinks to
 * `want`, so no group is ever outside its parent.
 */
static int retarget_list(const char *group, const char *file, const struct cpubits *old, const struct cpubits *want,
                         struct tessera_error *err)
{
        struct cpubits uni = *old;
        cpubits_or(&uni, want);
        char uni_s[1024], want_s[1024];
        cpulist_format(&uni, uni_s, sizeof(uni_s));
        cpulist_format(want, want_s, sizeof(want_s));
        bool grow = !cpubits_subset(want, old);
        if (grow) {
                int r = write_tree(group, file, uni_s, false, err);
                if (r < 0)
                        return r;
                if (cpubits_equal(&uni, want))
                        return 0;
        }
        return write_tree(group, file, want_s, true, err);
}

static int v1_set_cpuset_list(struct tessera_cgroup *cg, const char *enclave, const char *file, const char *what,
                              const char *list, struct tessera_error *err)
{
        struct cgroup_v1 *v1 = to_v1(cg);
        char group[PATH_MAX], path[PATH_MAX], rootpath[PATH_MAX], cur[1024], pool[1024];
        int r = v1_path(v1, V1_CPUSET, enclave, "", group, sizeof(group), err);
        if (r < 0)
                return r;
        if (!dir_exists(group))
                return tessera_error_set(err, ENOENT, "enclave '%s' has no cpuset group `%s`", enclave, group);
        r = v1_path(v1, V1_CPUSET, "", file, rootpath, sizeof(rootpath), err);
        if (r < 0)
                return r;
        if (STREQ(file, "cpuset.cpus"))
                r = v1_free_cpus(v1, enclave, pool, sizeof(pool), err);
        else
                r = cg_read(rootpath, pool, sizeof(pool), err);
        if (r < 0)
                return r;
        r = CG_PATH(path, err, group, file);
        if (r < 0)
                return r;
        r = cg_read(path, cur, sizeof(cur), err);
        if (r < 0)
                return r;
        struct cpubits old, want;
        if (cpulist_parse(cur, &old) < 0 || cpulist_parse(list[0] ? list : pool, &want) < 0)
                return tessera_error_set(err, EBADMSG, "cannot parse `%s` (\"%s\") or %s \"%s\"", path, cur, what,
                                         list);
        r = retarget_list(group, file, &old, &want, err);
        if (r < 0) {
                struct tessera_error undo_err;
                (void)retarget_list(group, file, &want, &old, &undo_err);
                if (r == -EINVAL && STREQ(file, "cpuset.cpus"))
                        return tessera_error_prefix(err, r,
                                                    "enclave '%s' cpus \"%s\" (they must lie within the "
                                                    "root group's cpus and not overlap an exclusive enclave's; free "
                                                    "now: \"%s\")",
                                                    enclave, list, pool);
                return tessera_error_prefix(err, r, "enclave '%s' %s \"%s\"", enclave, what, list);
        }
        return 0;
}

static int v1_set_cpus(struct tessera_cgroup *cg, const char *enclave, const char *cpus, struct tessera_error *err)
{
        return v1_set_cpuset_list(cg, enclave, "cpuset.cpus", "cpus", cpus, err);
}

static int v1_set_mems(struct tessera_cgroup *cg, const char *enclave, const char *mems, struct tessera_error *err)
{
        return v1_set_cpuset_list(cg, enclave, "cpuset.mems", "mems", mems, err);
}

static int v1_set_exclusive(struct tessera_cgroup *cg, const char *enclave, bool on, struct tessera_error *err)
{
        struct cgroup_v1 *v1 = to_v1(cg);
        char path[PATH_MAX], rootpath[PATH_MAX], val[16];
        int r = v1_path(v1, V1_CPUSET, enclave, "cpuset.cpu_exclusive", path, sizeof(path), err);
        if (r < 0)
                return r;
        r = cg_read(path, val, sizeof(val), err);
        if (r < 0)
                return r;
        if (STREQ(val, on ? "1" : "0"))
                return 0;
        if (on) {
                /* v1 allows an exclusive cpuset only below an exclusive parent. */
                r = v1_path(v1, V1_CPUSET, "", "cpuset.cpu_exclusive", rootpath, sizeof(rootpath), err);
                if (r < 0)
                        return r;
                r = cg_read(rootpath, val, sizeof(val), err);
                if (r < 0)
                        return r;
                if (!STREQ(val, "1"))
                        return tessera_error_field(err, EPERM, "exclusive_cpus",
                                                   "enclave '%s' asks for exclusive CPUs, but the root group is not "
                                                   "exclusive (`%s` reads %s): confine it to the managed CPU pool "
                                                   "with cgroup_root_set_cpus first",
                                                   enclave, rootpath, val);
        }
        if (on) {
                char cpus_path[PATH_MAX], cpus[1024];
                if ((r = v1_path(v1, V1_CPUSET, enclave, "cpuset.cpus", cpus_path, sizeof(cpus_path), err)) < 0 ||
                    (r = cg_read(cpus_path, cpus, sizeof(cpus), err)) < 0)
                        return r;
                if (!cpus[0])
                        return tessera_error_field(err, EINVAL, "exclusive_cpus",
                                                   "enclave '%s' asks for exclusive "
                                                   "CPUs without naming them (`%s` is empty)",
                                                   enclave, cpus_path);
        }
        r = cg_write(path, on ? "1" : "0", err);
        if (r < 0 && on)
                return tessera_error_prefix(err, r,
                                            "exclusive CPUs refused for enclave '%s' (its cpus overlap "
                                            "another enclave's)",
                                            enclave);
        return r;
}

/* ---- memory, pids, hugetlb ---- */

static void format_limit(uint64_t bytes, char *buf, size_t n)
{
        if (bytes == 0 || bytes == UINT64_MAX)
                snprintf(buf, n, "-1");
        else
                snprintf(buf, n, "%llu", (unsigned long long)bytes);
}

static int memory_busy_error(struct cgroup_v1 *v1, const char *enclave, uint64_t bytes, struct tessera_error *err)
{
        char usage_path[PATH_MAX], used[32], want[32];
        uint64_t usage = 0;
        struct tessera_error ignored;
        if (v1_path(v1, V1_MEMORY, enclave, "memory.usage_in_bytes", usage_path, sizeof(usage_path), &ignored) == 0)
                (void)cg_read_u64(usage_path, &usage, &ignored);
        format_size(usage, used, sizeof(used));
        format_size(bytes, want, sizeof(want));
        char kernel[sizeof(err->msg)] = "";
        if (err)
                snprintf(kernel, sizeof(kernel), "%s", err->msg);
        return tessera_error_field(err, EBUSY, "memory",
                                   "enclave '%s' uses %s, more than the new limit %s, and the kernel could not "
                                   "reclaim enough (%s)",
                                   enclave, used, want, kernel);
}

static int v1_set_memory(struct tessera_cgroup *cg, const char *enclave, uint64_t bytes, struct tessera_error *err)
{
        struct cgroup_v1 *v1 = to_v1(cg);
        int r = v1_need(v1, V1_MEMORY, err);
        if (r < 0)
                return r;
        char limit[PATH_MAX], memsw[PATH_MAX], soft[PATH_MAX], val[32], oldval[32];
        if ((r = v1_path(v1, V1_MEMORY, enclave, "memory.limit_in_bytes", limit, sizeof(limit), err)) < 0 ||
            (r = v1_path(v1, V1_MEMORY, enclave, "memory.memsw.limit_in_bytes", memsw, sizeof(memsw), err)) < 0 ||
            (r = v1_path(v1, V1_MEMORY, enclave, "memory.soft_limit_in_bytes", soft, sizeof(soft), err)) < 0)
                return r;
        uint64_t old;
        r = cg_read_u64(limit, &old, err);
        if (r < 0)
                return tessera_error_prefix(err, r, "enclave '%s'", enclave);
        uint64_t want = bytes ? bytes : UINT64_MAX;
        bool grow = want >= old;
        format_limit(want, val, sizeof(val));
        format_limit(old, oldval, sizeof(oldval));

        /* memsw (memory+swap) must never be below the memory limit, hence the order. */
        if (v1->memsw && grow && (r = cg_write(memsw, val, err)) < 0)
                return r;
        r = cg_write(limit, val, err);
        if (r == -EBUSY)
                return memory_busy_error(v1, enclave, bytes, err);
        if (r < 0)
                return r;
        if (v1->memsw && !grow) {
                r = cg_write(memsw, val, err);
                if (r < 0) {
                        struct tessera_error undo_err;
                        (void)cg_write(limit, oldval, &undo_err);
                        return r == -EBUSY ? memory_busy_error(v1, enclave, bytes, err) : r;
                }
        }
        /* v1 has no memory.min; a soft limit at the hard limit is the nearest protection. */
        return cg_write(soft, val, err);
}

static int v1_set_pids(struct tessera_cgroup *cg, const char *enclave, uint64_t max, struct tessera_error *err)
{
        struct cgroup_v1 *v1 = to_v1(cg);
        if (!v1->have[V1_PIDS] && max == 0)
                return 0;
        int r = v1_need(v1, V1_PIDS, err);
        if (r < 0)
                return r;
        char path[PATH_MAX], val[32];
        r = v1_path(v1, V1_PIDS, enclave, "pids.max", path, sizeof(path), err);
        if (r < 0)
                return r;
        if (max == 0 || max == UINT64_MAX)
                snprintf(val, sizeof(val), "max");
        else
                snprintf(val, sizeof(val), "%llu", (unsigned long long)max);
        return cg_write(path, val, err);
}

static int v1_set_hugetlb(struct tessera_cgroup *cg, const char *enclave, uint64_t bytes, struct tessera_error *err)
{
        struct cgroup_v1 *v1 = to_v1(cg);
        if (!v1->have[V1_HUGETLB] || !v1->hugetlb_2m)
                return 0; /* not managed here: cgroup_probe_report says so */
        char path[PATH_MAX], val[32];
        int r = v1_path(v1, V1_HUGETLB, enclave, HUGETLB_LIMIT, path, sizeof(path), err);
        if (r < 0)
                return r;
        if (bytes == UINT64_MAX)
                snprintf(val, sizeof(val), "-1");
        else
                snprintf(val, sizeof(val), "%llu", (unsigned long long)bytes);
        return cg_write(path, val, err);
}

static int v1_snapshot(struct tessera_cgroup *cg, const char *enclave, struct cgroup_snapshot *ret,
                       struct tessera_error *err)
{
        struct cgroup_v1 *v1 = to_v1(cg);
        char path[PATH_MAX], val[16];
        int r;
        memset(ret, 0, sizeof(*ret));
        if ((r = v1_path(v1, V1_CPUSET, enclave, "cpuset.cpus", path, sizeof(path), err)) < 0 ||
            (r = cg_read(path, ret->cpus, sizeof(ret->cpus), err)) < 0 ||
            (r = v1_path(v1, V1_CPUSET, enclave, "cpuset.mems", path, sizeof(path), err)) < 0 ||
            (r = cg_read(path, ret->mems, sizeof(ret->mems), err)) < 0 ||
            (r = v1_path(v1, V1_CPUSET, enclave, "cpuset.cpu_exclusive", path, sizeof(path), err)) < 0 ||
            (r = cg_read(path, val, sizeof(val), err)) < 0)
                return r;
        ret->exclusive = STREQ(val, "1");
        if (v1->have[V1_MEMORY]) {
                if ((r = v1_path(v1, V1_MEMORY, enclave, "memory.limit_in_bytes", path, sizeof(path), err)) < 0 ||
                    (r = cg_read_u64(path, &ret->memory_bytes, err)) < 0)
                        return r;
                if (ret->memory_bytes == UINT64_MAX)
                        ret->memory_bytes = 0;
        }
        if (v1->have[V1_PIDS]) {
                if ((r = v1_path(v1, V1_PIDS, enclave, "pids.max", path, sizeof(path), err)) < 0 ||
                    (r = cg_read_u64(path, &ret->pids_max, err)) < 0)
                        return r;
                if (ret->pids_max == UINT64_MAX)
                        ret->pids_max = 0;
        }
        ret->hugetlb_bytes = UINT64_MAX;
        if (v1->have[V1_HUGETLB] && v1->hugetlb_2m) {
                if ((r = v1_path(v1, V1_HUGETLB, enclave, HUGETLB_LIMIT, path, sizeof(path), err)) < 0 ||
                    (r = cg_read_u64(path, &ret->hugetlb_bytes, err)) < 0)
                        return r;
        }
        return 0;
}

/* ---- devices ---- */

static int devices_write_standard(const char *group, struct tessera_error *err)
{
        char path[PATH_MAX], rule[64];
        int r = CG_PATH(path, err, group, "devices.allow");
        if (r < 0)
                return r;
        for (size_t i = 0; i < cg_n_standard_devices; i++) {
                cg_device_rule_format(&cg_standard_devices[i], rule, sizeof(rule));
                r = cg_write(path, rule, err);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* Turns an allow-all group (as mkdir below the allow-all root makes it) into deny-all plus the standard set. */
static int devices_restrict(const char *group, struct tessera_error *err)
{
        char path[PATH_MAX], list[256];
        int r = CG_PATH(path, err, group, "devices.list");
        if (r < 0)
                return r;
        r = cg_read(path, list, sizeof(list), err);
        if (r < 0)
                return r;
        if (!STREQ(list, "a *:* rwm"))
                return 0;
        r = CG_PATH(path, err, group, "devices.deny");
        if (r < 0)
                return r;
        r = cg_write(path, "a", err);
        if (r < 0)
                return r;
        return devices_write_standard(group, err);
}

static bool rule_wanted(const char *line, const struct cgroup_device_rule *rules, size_t n)
{
        char rule[64];
        for (size_t i = 0; i < n; i++) {
                cg_device_rule_format(&rules[i], rule, sizeof(rule));
                if (STREQ(rule, line))
                        return true;
        }
        return false;
}

struct allow_ctx {
        const struct cgroup_device_rule *rules;
        size_t n;
};

static int visit_allow(const char *group, void *userdata, struct tessera_error *err)
{
        const struct allow_ctx *a = userdata;
        char path[PATH_MAX], rule[64];
        /* A leaf made while its parent still allowed everything (a crash between steps) would ignore allows. */
        int r = devices_restrict(group, err);
        if (r < 0 || (r = CG_PATH(path, err, group, "devices.allow")) < 0)
                return r;
        for (size_t i = 0; i < a->n; i++) {
                cg_device_rule_format(&a->rules[i], rule, sizeof(rule));
                r = cg_write(path, rule, err);
                if (r < 0)
                        return r;
        }
        return 0;
}

/*
 * Denies on the enclave group every exception that is no longer wanted (the
 * kernel removes it from the descendants too), then allows the wanted ones
 * in every group, parents first, since leaves do not inherit later allows.
 */
static int v1_set_devices(struct tessera_cgroup *cg, const char *enclave, const struct cgroup_device_rule *rules,
                          size_t n_rules, struct tessera_error *err)
{
        struct cgroup_v1 *v1 = to_v1(cg);
        int r = v1_need(v1, V1_DEVICES, err);
        if (r < 0)
                return r;
        char group[PATH_MAX], list_path[PATH_MAX], deny[PATH_MAX];
        if ((r = v1_path(v1, V1_DEVICES, enclave, "", group, sizeof(group), err)) < 0 ||
            (r = CG_PATH(list_path, err, group, "devices.list")) < 0 ||
            (r = CG_PATH(deny, err, group, "devices.deny")) < 0)
                return r;
        if (!dir_exists(group))
                return tessera_error_set(err, ENOENT, "enclave '%s' has no devices group `%s`", enclave, group);
        r = devices_restrict(group, err);
        if (r < 0)
                return r;
        /* Room for the kernel's whole list: up to 4096 earlier rules plus the standard set. */
        size_t cap = 64 * (4096 + 64 + n_rules);
        _cleanup_free_ char *list = malloc(cap);
        if (!list)
                return tessera_error_set(err, ENOMEM, "out of memory reading `%s`", list_path);
        r = cg_read(list_path, list, cap, err);
        if (r < 0)
                return r;
        for (char *line = list; line && *line;) {
                char *next = strchr(line, '\n');
                if (next)
                        *next++ = '\0';
                if (!rule_wanted(line, rules, n_rules) && (r = cg_write(deny, line, err)) < 0)
                        return tessera_error_prefix(err, r, "enclave '%s' devices", enclave);
                line = next;
        }
        struct allow_ctx a = {rules, n_rules};
        r = cg_walk(group, false, visit_allow, &a, err);
        if (r < 0)
                return tessera_error_prefix(err, r, "enclave '%s' devices", enclave);
        return 0;
}

/* ---- groups ---- */

/* Which of an enclave's three groups this call created, per controller, for the undo. */
enum { MADE_GROUP = 1, MADE_SUPERVISOR = 2, MADE_APPS = 4 };

static void undo_create(struct cgroup_v1 *v1, const char *enclave, const unsigned made[V1_MAX])
{
        struct tessera_error undo_err;
        for (int c = V1_MAX - 1; c >= 0; c--) {
                char path[PATH_MAX];
                if ((made[c] & MADE_APPS) && v1_path(v1, c, enclave, "apps", path, sizeof(path), &undo_err) == 0)
                        (void)cg_rmdir(path, &undo_err);
                if ((made[c] & MADE_SUPERVISOR) &&
                    v1_path(v1, c, enclave, "supervisor", path, sizeof(path), &undo_err) == 0)
                        (void)cg_rmdir(path, &undo_err);
                if ((made[c] & MADE_GROUP) && v1_path(v1, c, enclave, "", path, sizeof(path), &undo_err) == 0)
                        (void)cg_rmdir(path, &undo_err);
        }
}

static int create_in(struct cgroup_v1 *v1, enum v1_ctrl c, const char *enclave, unsigned *made,
                     struct tessera_error *err)
{
        char root[PATH_MAX], group[PATH_MAX], sub[PATH_MAX];
        bool created;
        int r;
        if ((r = v1_path(v1, c, "", "", root, sizeof(root), err)) < 0 ||
            (r = v1_path(v1, c, enclave, "", group, sizeof(group), err)) < 0)
                return r;
        r = cg_mkdir(group, &created, err);
        if (r < 0)
                return r;
        *made |= created ? MADE_GROUP : 0;
        if (c == V1_CPUSET) {
                char cpus[1024], mems[1024], mems_path[PATH_MAX];
                if ((r = v1_free_cpus(v1, enclave, cpus, sizeof(cpus), err)) < 0 ||
                    (r = CG_PATH(mems_path, err, root, "cpuset.mems")) < 0 ||
                    (r = cg_read(mems_path, mems, sizeof(mems), err)) < 0 ||
                    (r = v1_cpuset_init(group, cpus, mems, err)) < 0)
                        return r;
        }
        /* Before the leaves exist: they copy this list when they are made. */
        if (c == V1_DEVICES && (r = devices_restrict(group, err)) < 0)
                return r;
        static const char *const leaves[] = {"supervisor", "apps"};
        for (size_t i = 0; i < ELEMENTSOF(leaves); i++) {
                if ((r = CG_PATH(sub, err, group, leaves[i])) < 0 || (r = cg_mkdir(sub, &created, err)) < 0)
                        return r;
                *made |= created ? (i == 0 ? MADE_SUPERVISOR : MADE_APPS) : 0;
                if (c == V1_CPUSET && (r = v1_cpuset_inherit(sub, group, err)) < 0)
                        return r;
        }
        return 0;
}

static int v1_enclave_create(struct tessera_cgroup *cg, const char *enclave, struct tessera_error *err)
{
        struct cgroup_v1 *v1 = to_v1(cg);
        unsigned made[V1_MAX] = {0};
        for (int c = 0; c < V1_MAX; c++) {
                if (!v1->own[c])
                        continue;
                int r = create_in(v1, c, enclave, &made[c], err);
                if (r < 0) {
                        undo_create(v1, enclave, made);
                        return tessera_error_prefix(err, r, "creating enclave '%s'", enclave);
                }
        }
        return 0;
}

static int v1_leaf_create(struct tessera_cgroup *cg, const char *enclave, const char *leaf, struct tessera_error *err)
{
        struct cgroup_v1 *v1 = to_v1(cg);
        bool made[V1_MAX] = {false};
        char rel[256], path[PATH_MAX], parent[PATH_MAX];
        int r = 0;
        snprintf(rel, sizeof(rel), "%s/%s", enclave, leaf);
        for (int c = 0; c < V1_MAX && r >= 0; c++) {
                if (!v1->own[c])
                        continue;
                if ((r = v1_path(v1, c, rel, "", path, sizeof(path), err)) < 0 ||
                    (r = cg_mkdir(path, &made[c], err)) < 0)
                        break;
                /* Devices copy the parent's list at mkdir; cpusets start empty and must be filled. */
                if (c == V1_CPUSET && ((r = v1_path(v1, c, enclave, "apps", parent, sizeof(parent), err)) < 0 ||
                                       (r = v1_cpuset_inherit(path, parent, err)) < 0))
                        break;
        }
        if (r >= 0)
                return 0;
        struct tessera_error undo_err;
        for (int c = V1_MAX - 1; c >= 0; c--)
                if (made[c] && v1_path(v1, c, rel, "", path, sizeof(path), &undo_err) == 0)
                        (void)cg_rmdir(path, &undo_err);
        return tessera_error_prefix(err, r, "creating `%s` of enclave '%s'", leaf, enclave);
}

static bool v1_exists(struct tessera_cgroup *cg, const char *rel)
{
        char path[PATH_MAX];
        return v1_path(to_v1(cg), V1_CPUSET, rel, "", path, sizeof(path), NULL) == 0 && dir_exists(path);
}

static int freezer_set(const char *group, const char *state, struct tessera_error *err)
{
        char path[PATH_MAX];
        int r = CG_PATH(path, err, group, "freezer.state");
        if (r < 0)
                return r;
        return cg_write(path, state, err);
}

/* v1's freezer.state has no change notification: re-read it with a short backoff. */
static void freezer_wait_frozen(const char *group)
{
        char path[PATH_MAX], state[32];
        struct tessera_error ignored;
        if (CG_PATH(path, &ignored, group, "freezer.state") < 0)
                return;
        struct cg_backoff b;
        cg_backoff_init(&b, 2000);
        do {
                if (cg_read(path, state, sizeof(state), &ignored) < 0 || !STREQ(state, "FREEZING"))
                        return;
        } while (cg_backoff_wait(&b));
}

/*
 * Frozen tasks cannot fork or exit, so one pass of kills reaches them all;
 * they die when thawed.  The thaw happens on every path, including failures.
 */
static int v1_remove_tree(struct tessera_cgroup *cg, const char *rel, struct tessera_error *err)
{
        struct cgroup_v1 *v1 = to_v1(cg);
        char freezer[PATH_MAX], path[PATH_MAX];
        int r = v1_path(v1, V1_FREEZER, rel, "", freezer, sizeof(freezer), err);
        if (r < 0)
                return r;
        bool frozen = false;
        if (dir_exists(freezer)) {
                r = freezer_set(freezer, "FROZEN", err);
                if (r < 0)
                        return r;
                frozen = true;
                freezer_wait_frozen(freezer);
        }
        /* Every hierarchy, not only the freezer's: a partial cgroup_enter may have left a task elsewhere. */
        for (int c = 0; c < V1_MAX && r >= 0; c++) {
                if (!v1->own[c] || (r = v1_path(v1, c, rel, "", path, sizeof(path), err)) < 0)
                        continue;
                if (dir_exists(path))
                        r = cg_kill_tree(path, "tasks", err);
        }
        if (frozen) {
                struct tessera_error thaw_err;
                int t = freezer_set(freezer, "THAWED", r < 0 ? &thaw_err : err);
                if (r >= 0)
                        r = t;
        }
        if (r < 0)
                return r;
        for (int c = V1_MAX - 1; c >= 0; c--) {
                if (!v1->own[c])
                        continue;
                if ((r = v1_path(v1, c, rel, "", path, sizeof(path), err)) < 0 || (r = cg_rmdir_tree(path, err)) < 0)
                        return r;
        }
        return 0;
}

/* ---- processes ---- */

/* Where `pid` is now in controller c's hierarchy, read from /proc/PID/cgroup, for moving it back. */
static int current_paths(pid_t pid, char paths[V1_MAX][PATH_MAX], struct tessera_error *err)
{
        char file[64];
        snprintf(file, sizeof(file), "/proc/%d/cgroup", (int)pid);
        _cleanup_fclose_ FILE *f = fopen(file, "re");
        if (!f)
                return tessera_error_set(err, errno, "cannot open `%s`: %s", file, strerror(errno));
        _cleanup_free_ char *line = NULL;
        size_t cap = 0;
        ssize_t len;
        for (int c = 0; c < V1_MAX; c++)
                paths[c][0] = '\0';
        while ((len = getline(&line, &cap, f)) > 0) {
                if (line[len - 1] == '\n')
                        line[len - 1] = '\0';
                char *c1 = strchr(line, ':');
                char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
                if (!c2)
                        continue;
                *c2 = '\0';
                char *save = NULL;
                for (char *tok = strtok_r(c1 + 1, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
                        for (int c = 0; c < V1_MAX; c++)
                                if (STREQ(tok, v1_names[c]))
                                        snprintf(paths[c], PATH_MAX, "%s", c2 + 1);
        }
        return 0;
}

static int write_pid(const char *group, pid_t pid, struct tessera_error *err)
{
        char path[PATH_MAX], val[16];
        int r = CG_PATH(path, err, group, "cgroup.procs");
        if (r < 0)
                return r;
        snprintf(val, sizeof(val), "%d", (int)pid);
        return cg_write(path, val, err);
}

static int v1_enter(struct tessera_cgroup *cg, const char *enclave, const char *leaf, pid_t pid,
                    struct tessera_error *err)
{
        struct cgroup_v1 *v1 = to_v1(cg);
        _cleanup_free_ char(*before)[PATH_MAX] = calloc(V1_MAX, PATH_MAX);
        if (!before)
                return tessera_error_set(err, ENOMEM, "out of memory moving pid %d", (int)pid);
        int r = current_paths(pid, before, err);
        if (r < 0)
                return r;
        char rel[256], group[PATH_MAX];
        snprintf(rel, sizeof(rel), "%s/%s", enclave, leaf);
        int c;
        for (c = 0; c < V1_MAX; c++) {
                if (!v1->own[c])
                        continue;
                if ((r = v1_path(v1, c, rel, "", group, sizeof(group), err)) < 0 ||
                    (r = write_pid(group, pid, err)) < 0)
                        break;
        }
        if (r >= 0)
                return 0;
        struct tessera_error undo_err;
        while (c-- > 0) {
                if (!v1->own[c] || !before[c][0])
                        continue;
                if (cg_join(group, sizeof(group), &undo_err, v1->pub.mount, v1_names[c], before[c],
                            (const char *)NULL) == 0)
                        (void)write_pid(group, pid, &undo_err);
        }
        return tessera_error_prefix(err, r, "moving pid %d into `%s` of enclave '%s'", (int)pid, leaf, enclave);
}

static int v1_leaf_fd(struct tessera_cgroup *cg, const char *enclave, const char *leaf, struct tessera_error *err)
{
        return tessera_error_set(err, EOPNOTSUPP,
                                 "cgroup v1 cannot clone into a cgroup: move the process with "
                                 "cgroup_enter instead");
}

static int v1_count_tasks(struct tessera_cgroup *cg, const char *rel, struct tessera_error *err)
{
        char group[PATH_MAX];
        int r = v1_path(to_v1(cg), V1_CPUSET, rel, "", group, sizeof(group), err);
        if (r < 0)
                return r;
        if (!dir_exists(group))
                return tessera_error_set(err, ENOENT, "enclave '%s' has no cgroup `%s`", rel, group);
        return cg_count_tree(group, err);
}

static int v1_stats(struct tessera_cgroup *cg, const char *rel, struct cgroup_stats *ret, struct tessera_error *err)
{
        struct cgroup_v1 *v1 = to_v1(cg);
        char path[PATH_MAX];
        int r;
        if (v1->have[V1_MEMORY]) {
                if ((r = v1_path(v1, V1_MEMORY, rel, "memory.usage_in_bytes", path, sizeof(path), err)) < 0 ||
                    (r = cg_read_u64(path, &ret->memory_current, err)) < 0 ||
                    (r = v1_path(v1, V1_MEMORY, rel, "memory.max_usage_in_bytes", path, sizeof(path), err)) < 0 ||
                    (r = cg_read_u64(path, &ret->memory_peak, err)) < 0)
                        return r;
        }
        if (v1->have[V1_CPUACCT]) {
                if ((r = v1_path(v1, V1_CPUACCT, rel, "cpuacct.usage", path, sizeof(path), err)) < 0 ||
                    (r = cg_read_u64(path, &ret->cpu_usage_ns, err)) < 0)
                        return r;
        }
        return 0;
}

/* ---- the root group ---- */

static int v1_root_set_cpus(struct tessera_cgroup *cg, const char *cpus, struct tessera_error *err)
{
        struct cgroup_v1 *v1 = to_v1(cg);
        char root[PATH_MAX], top[PATH_MAX], path[PATH_MAX], excl[PATH_MAX], old[1024], all[1024];
        int r;
        if ((r = v1_path(v1, V1_CPUSET, "", "", root, sizeof(root), err)) < 0 ||
            (r = CG_PATH(top, err, v1->pub.mount, "cpuset", "cpuset.cpus")) < 0 ||
            (r = CG_PATH(path, err, root, "cpuset.cpus")) < 0 ||
            (r = CG_PATH(excl, err, root, "cpuset.cpu_exclusive")) < 0 ||
            (r = cg_read(path, old, sizeof(old), err)) < 0 || (r = cg_read(top, all, sizeof(all), err)) < 0)
                return r;
        if (!cpus[0]) {
                /* Back to sharing every CPU: drop exclusivity first, then grow. */
                if ((r = cg_write(excl, "0", err)) < 0)
                        return tessera_error_prefix(err, r, "an enclave is still exclusive");
                return cg_write(path, all, err);
        }
        r = cg_write(path, cpus, err);
        if (r < 0)
                return tessera_error_prefix(err, r,
                                            "confining the root group to cpus \"%s\" (enclaves must not use "
                                            "CPUs outside it; the machine has \"%s\")",
                                            cpus, all);
        r = cg_write(excl, "1", err);
        if (r < 0) {
                struct tessera_error undo_err;
                (void)cg_write(path, old, &undo_err);
                return tessera_error_prefix(err, r,
                                            "making the root group's cpus \"%s\" exclusive (another "
                                            "top-level cpuset shares them)",
                                            cpus);
        }
        return 0;
}

static int v1_root_remove(struct tessera_cgroup *cg, struct tessera_error *err)
{
        struct cgroup_v1 *v1 = to_v1(cg);
        for (int c = V1_MAX - 1; c >= 0; c--) {
                char path[PATH_MAX];
                int r;
                if (!v1->own[c])
                        continue;
                if ((r = v1_path(v1, c, "", "", path, sizeof(path), err)) < 0 || (r = cg_rmdir(path, err)) < 0)
                        return r;
        }
        return 0;
}

static const char *v1_reference_dir(struct tessera_cgroup *cg, char *buf, size_t n)
{
        snprintf(buf, n, "%s/cpuset", cg->mount);
        return buf;
}

static bool v1_is_reference_line(const char *controllers, const char *hierarchy_id)
{
        size_t len = strlen("cpuset");
        for (const char *p = controllers; p && *p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL)
                if (strncmp(p, "cpuset", len) == 0 && (p[len] == ',' || p[len] == '\0'))
                        return true;
        return false;
}

/* ---- open ---- */

static void detect_controllers(struct cgroup_v1 *v1)
{
        dev_t devs[V1_MAX];
        for (int c = 0; c < V1_MAX; c++) {
                char dir[PATH_MAX];
                struct statfs fs;
                struct stat st;
                if (CG_PATH(dir, NULL, v1->pub.mount, v1_names[c]) < 0 || statfs(dir, &fs) < 0 ||
                    fs.f_type != CGROUP_SUPER_MAGIC || stat(dir, &st) < 0)
                        continue;
                v1->have[c] = true;
                devs[c] = st.st_dev;
                /* Co-mounted controllers (cpu,cpuacct) are one hierarchy: make groups there once. */
                v1->own[c] = true;
                for (int o = 0; o < c; o++)
                        if (v1->have[o] && devs[o] == st.st_dev)
                                v1->own[c] = false;
        }
}

static int prepare_root(struct cgroup_v1 *v1, bool made[V1_MAX], struct tessera_error *err)
{
        for (int c = 0; c < V1_MAX; c++) {
                if (!v1->own[c])
                        continue;
                char path[PATH_MAX], top[PATH_MAX];
                int r = v1_path(v1, c, "", "", path, sizeof(path), err);
                if (r < 0 || (r = cg_mkdir(path, &made[c], err)) < 0)
                        return r;
                if (c == V1_CPUSET && ((r = CG_PATH(top, err, v1->pub.mount, v1_names[c])) < 0 ||
                                       (r = v1_cpuset_inherit(path, top, err)) < 0))
                        return r;
        }
        return 0;
}

static int v1_open(const char *root_name, const char *mount, struct tessera_cgroup **ret, struct tessera_error *err)
{
        _cleanup_free_ struct cgroup_v1 *v1 = calloc(1, sizeof(*v1));
        if (!v1)
                return tessera_error_set(err, ENOMEM, "out of memory");
        v1->pub.ops = &cgroup_v1_ops;
        v1->pub.mode = CGROUP_V1;
        snprintf(v1->pub.root, sizeof(v1->pub.root), "%s", root_name);
        snprintf(v1->pub.mount, sizeof(v1->pub.mount), "%s", mount);
        detect_controllers(v1);
        /* The cpuset tree is the reference for listing; the freezer is how destroy reaches every task. */
        static const enum v1_ctrl required[] = {V1_CPUSET, V1_FREEZER};
        for (size_t i = 0; i < ELEMENTSOF(required); i++) {
                int r = v1_need(v1, required[i], err);
                if (r < 0)
                        return r;
        }
        bool made[V1_MAX] = {false};
        int r = prepare_root(v1, made, err);
        if (r < 0) {
                struct tessera_error undo_err;
                for (int c = V1_MAX - 1; c >= 0; c--) {
                        char path[PATH_MAX];
                        if (made[c] && v1_path(v1, c, "", "", path, sizeof(path), &undo_err) == 0)
                                (void)cg_rmdir(path, &undo_err);
                }
                return tessera_error_prefix(err, r, "preparing cgroup root '%s'", root_name);
        }
        char path[PATH_MAX];
        v1->memsw = v1->have[V1_MEMORY] &&
                    v1_path(v1, V1_MEMORY, "", "memory.memsw.limit_in_bytes", path, sizeof(path), NULL) == 0 &&
                    cg_file_exists(path);
        v1->hugetlb_2m = v1->have[V1_HUGETLB] &&
                         v1_path(v1, V1_HUGETLB, "", HUGETLB_LIMIT, path, sizeof(path), NULL) == 0 &&
                         cg_file_exists(path);
        *ret = &TAKE_PTR(v1)->pub;
        return 0;
}

static void v1_free(struct tessera_cgroup *cg)
{
        free(to_v1(cg));
}

const struct cgroup_ops cgroup_v1_ops = {
        .mode = CGROUP_V1,
        .open = v1_open,
        .free = v1_free,
        .root_set_cpus = v1_root_set_cpus,
        .root_remove = v1_root_remove,
        .enclave_create = v1_enclave_create,
        .leaf_create = v1_leaf_create,
        .remove_tree = v1_remove_tree,
        .exists = v1_exists,
        .snapshot = v1_snapshot,
        .set_cpus = v1_set_cpus,
        .set_mems = v1_set_mems,
        .set_memory = v1_set_memory,
        .set_pids = v1_set_pids,
        .set_hugetlb = v1_set_hugetlb,
        .set_exclusive = v1_set_exclusive,
        .set_devices = v1_set_devices,
        .enter = v1_enter,
        .leaf_fd = v1_leaf_fd,
        .count_tasks = v1_count_tasks,
        .stats = v1_stats,
        .reference_dir = v1_reference_dir,
        .is_reference_line = v1_is_reference_line,
};
