/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The version-independent half of the cgroup part: mode detection, argument
 * checks, the dispatch through `struct cgroup_ops`, apply-with-undo, and the
 * helpers both implementations use (paths, control files, task lists, tree
 * walks, cpulists).
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>

#include "cgroup-internal.h"
#include "util.h"

#define DEFAULT_MOUNT "/sys/fs/cgroup"

/*
 * The nodes every enclave may use, as OCI runtimes grant them by default:
 * mknod of anything (opening still needs a rule), the memory devices, the
 * terminals and the pseudo-terminal multiplexer.
 */
const struct cgroup_device_rule cg_standard_devices[] = {
        {'c', -1, -1, "m"},    {'b', -1, -1, "m"},                     /* mknod only */
        {'c', 1, 3, "rwm"},    {'c', 1, 5, "rwm"}, {'c', 1, 7, "rwm"}, /* null zero full */
        {'c', 1, 8, "rwm"},    {'c', 1, 9, "rwm"},                     /* random urandom */
        {'c', 5, 0, "rwm"},    {'c', 5, 1, "rwm"}, {'c', 5, 2, "rwm"}, /* tty console ptmx */
        {'c', 136, -1, "rwm"},                                         /* /dev/pts/N */
};
const size_t cg_n_standard_devices = ELEMENTSOF(cg_standard_devices);

/* ---- paths and control files ---- */

int cg_join(char *buf, size_t n, struct tessera_error *err, ...)
{
        va_list ap;
        size_t len = 0;
        buf[0] = '\0';
        va_start(ap, err);
        for (const char *c = va_arg(ap, const char *); c; c = va_arg(ap, const char *)) {
                if (!*c)
                        continue;
                int w = snprintf(buf + len, n - len, "%s%s", len > 0 && buf[len - 1] != '/' ? "/" : "", c);
                if (w < 0 || (size_t)w >= n - len) {
                        va_end(ap);
                        return tessera_error_set(err, ENAMETOOLONG, "cgroup path too long: `%s...`", buf);
                }
                len += (size_t)w;
        }
        va_end(ap);
        return 0;
}

int cg_write(const char *path, const char *value, struct tessera_error *err)
{
        if (value[0])
                return write_file_at(AT_FDCWD, path, value, err);
        /* A zero-length write never reaches the kernel's handler: "" would silently change nothing. */
        int r = write_file_at(AT_FDCWD, path, "\n", NULL);
        if (r < 0)
                return tessera_error_set(err, -r, "cannot empty `%s`: %s", path, strerror(-r));
        return 0;
}

int cg_read(const char *path, char *buf, size_t n, struct tessera_error *err)
{
        return read_file_at(AT_FDCWD, path, buf, n, err);
}

int cg_read_u64(const char *path, uint64_t *ret, struct tessera_error *err)
{
        char buf[64];
        int r = cg_read(path, buf, sizeof(buf), err);
        if (r < 0)
                return r;
        if (STREQ(buf, "max")) {
                *ret = UINT64_MAX;
                return 0;
        }
        uint64_t v;
        if (parse_uint64(buf, UINT64_MAX, &v) < 0)
                return tessera_error_set(err, EBADMSG, "`%s` holds \"%s\", not a number", path, buf);
        /* v1 reports "no limit" as PAGE_COUNTER_MAX pages, a little under 2^63. */
        *ret = v >= (1ULL << 62) ? UINT64_MAX : v;
        return 0;
}

int cg_read_key(const char *path, const char *key, uint64_t *ret, struct tessera_error *err)
{
        char buf[4096];
        int r = cg_read(path, buf, sizeof(buf), err);
        if (r < 0)
                return r;
        size_t klen = strlen(key);
        for (char *line = buf; line && *line;) {
                char *next = strchr(line, '\n');
                if (next)
                        *next++ = '\0';
                if (strncmp(line, key, klen) == 0 && line[klen] == ' ') {
                        if (parse_uint64(line + klen + 1, UINT64_MAX, ret) < 0)
                                return tessera_error_set(err, EBADMSG, "`%s`: \"%s\" is not a number", path, line);
                        return 0;
                }
                line = next;
        }
        return tessera_error_set(err, ENOENT, "`%s` has no \"%s\" line", path, key);
}

bool cg_file_exists(const char *path)
{
        return access(path, F_OK) == 0;
}

int cg_mkdir(const char *path, bool *ret_created, struct tessera_error *err)
{
        if (ret_created)
                *ret_created = false;
        if (mkdir(path, 0755) == 0) {
                if (ret_created)
                        *ret_created = true;
                return 0;
        }
        if (errno != EEXIST)
                return tessera_error_set(err, errno, "cannot create cgroup `%s`: %s", path, strerror(errno));
        /* Names like "tasks" collide with control files, which mkdir also reports as EEXIST. */
        struct stat st;
        if (stat(path, &st) < 0 || !S_ISDIR(st.st_mode))
                return tessera_error_set(err, EEXIST, "cannot create cgroup `%s`: a control file has that name", path);
        return 0;
}

int cg_rmdir(const char *path, struct tessera_error *err)
{
        struct cg_backoff b;
        cg_backoff_init(&b, 2000);
        for (;;) {
                if (rmdir(path) == 0 || errno == ENOENT)
                        return 0;
                int e = errno;
                /* EBUSY: killed tasks have not finished exiting yet. */
                if (e != EBUSY || !cg_backoff_wait(&b))
                        return tessera_error_set(err, e, "cannot remove cgroup `%s`: %s", path, strerror(e));
        }
}

int cg_read_pids(const char *path, pid_t **ret, size_t *ret_n, struct tessera_error *err)
{
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        if (!f)
                return tessera_error_set(err, errno, "cannot open `%s`: %s", path, strerror(errno));
        _cleanup_free_ pid_t *pids = NULL;
        _cleanup_free_ char *line = NULL;
        size_t n = 0, cap = 0, linecap = 0;
        ssize_t len;
        while ((len = getline(&line, &linecap, f)) > 0) {
                if (line[len - 1] == '\n')
                        line[len - 1] = '\0';
                uint64_t v;
                if (parse_uint64(line, INT32_MAX, &v) < 0)
                        return tessera_error_set(err, EBADMSG, "`%s` lists \"%s\", not a pid", path, line);
                if (n == cap) {
                        cap = cap ? cap * 2 : 16;
                        pid_t *p = realloc(pids, cap * sizeof(*p));
                        if (!p)
                                return tessera_error_set(err, ENOMEM, "out of memory reading `%s`", path);
                        pids = p;
                }
                pids[n++] = (pid_t)v;
        }
        if (ferror(f))
                return tessera_error_set(err, EIO, "cannot read `%s`", path);
        *ret = TAKE_PTR(pids);
        *ret_n = n;
        return 0;
}

/* ---- walking a group and its descendants ---- */

static void closedirp(DIR **d)
{
        if (*d)
                closedir(*d);
}

int cg_walk(const char *path, bool children_first, cg_visit_fn fn, void *userdata, struct tessera_error *err)
{
        int r;
        if (!children_first) {
                r = fn(path, userdata, err);
                if (r < 0)
                        return r;
        }
        _cleanup_(closedirp) DIR *d = opendir(path);
        if (!d) {
                if (errno == ENOENT)
                        return 0; /* removed meanwhile */
                return tessera_error_set(err, errno, "cannot list cgroup `%s`: %s", path, strerror(errno));
        }
        struct dirent *de;
        while ((de = readdir(d))) {
                if (de->d_type != DT_DIR || de->d_name[0] == '.')
                        continue;
                char child[PATH_MAX];
                r = CG_PATH(child, err, path, de->d_name);
                if (r < 0)
                        return r;
                r = cg_walk(child, children_first, fn, userdata, err);
                if (r < 0)
                        return r;
        }
        if (children_first)
                return fn(path, userdata, err);
        return 0;
}

static int visit_rmdir(const char *path, void *userdata, struct tessera_error *err)
{
        return cg_rmdir(path, err);
}

int cg_rmdir_tree(const char *path, struct tessera_error *err)
{
        if (access(path, F_OK) < 0 && errno == ENOENT)
                return 0;
        return cg_walk(path, true, visit_rmdir, NULL, err);
}

static int visit_kill(const char *path, void *userdata, struct tessera_error *err)
{
        char file[PATH_MAX];
        int r = CG_PATH(file, err, path, (const char *)userdata);
        if (r < 0)
                return r;
        _cleanup_free_ pid_t *pids = NULL;
        size_t n = 0;
        r = cg_read_pids(file, &pids, &n, err);
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return r;
        /*
         * The tasks are frozen, so none can exit and free its pid for reuse
         * between the read and the kill.
         */
        for (size_t i = 0; i < n; i++)
                if (kill(pids[i], SIGKILL) < 0 && errno != ESRCH)
                        return tessera_error_set(err, errno, "cannot kill pid %d of `%s`: %s", (int)pids[i], path,
                                                 strerror(errno));
        return 0;
}

int cg_kill_tree(const char *path, const char *file, struct tessera_error *err)
{
        return cg_walk(path, false, visit_kill, (void *)file, err);
}

static int visit_count(const char *path, void *userdata, struct tessera_error *err)
{
        char file[PATH_MAX];
        int r = CG_PATH(file, err, path, "cgroup.procs");
        if (r < 0)
                return r;
        _cleanup_free_ pid_t *pids = NULL;
        size_t n = 0;
        r = cg_read_pids(file, &pids, &n, err);
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return r;
        *(size_t *)userdata += n;
        return 0;
}

int cg_count_tree(const char *path, struct tessera_error *err)
{
        size_t total = 0;
        int r = cg_walk(path, false, visit_count, &total, err);
        if (r < 0)
                return r;
        return total > INT32_MAX ? INT32_MAX : (int)total;
}

/* ---- bounded waits ---- */

void cg_backoff_init(struct cg_backoff *b, unsigned budget_ms)
{
        b->deadline_ns = now_ns() + (uint64_t)budget_ms * 1000000ULL;
        b->step_ms = 1;
}

bool cg_backoff_wait(struct cg_backoff *b)
{
        uint64_t now = now_ns();
        if (now >= b->deadline_ns)
                return false;
        uint64_t ns = (uint64_t)b->step_ms * 1000000ULL;
        if (ns > b->deadline_ns - now)
                ns = b->deadline_ns - now;
        struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000ULL), .tv_nsec = (long)(ns % 1000000000ULL)};
        (void)nanosleep(&ts, NULL);
        if (b->step_ms < 64)
                b->step_ms *= 2;
        return true;
}

/* ---- cpulists ---- */

static void cpubits_set(struct cpubits *b, unsigned i)
{
        b->w[i / 64] |= 1ULL << (i % 64);
}

static bool cpubits_test(const struct cpubits *b, unsigned i)
{
        return b->w[i / 64] & (1ULL << (i % 64));
}

static int parse_cpu_number(const char **p, unsigned *ret)
{
        if (!isdigit((unsigned char)**p))
                return -EINVAL;
        unsigned long v = 0;
        while (isdigit((unsigned char)**p)) {
                v = v * 10 + (unsigned long)(**p - '0');
                if (v >= CPULIST_MAX)
                        return -ERANGE;
                (*p)++;
        }
        *ret = (unsigned)v;
        return 0;
}

int cpulist_parse(const char *s, struct cpubits *ret)
{
        memset(ret, 0, sizeof(*ret));
        const char *p = s;
        while (*p == ' ' || *p == '\n')
                p++;
        while (*p && *p != '\n') {
                unsigned lo, hi;
                int r = parse_cpu_number(&p, &lo);
                if (r < 0)
                        return r;
                hi = lo;
                if (*p == '-') {
                        p++;
                        r = parse_cpu_number(&p, &hi);
                        if (r < 0)
                                return r;
                        if (hi < lo)
                                return -EINVAL;
                }
                for (unsigned i = lo; i <= hi; i++)
                        cpubits_set(ret, i);
                if (*p == ',')
                        p++;
                else if (*p && *p != '\n')
                        return -EINVAL;
        }
        return 0;
}

void cpulist_format(const struct cpubits *b, char *buf, size_t n)
{
        size_t len = 0;
        buf[0] = '\0';
        for (unsigned i = 0; i < CPULIST_MAX; i++) {
                /* whole empty words at once: the set is sparse on most machines */
                unsigned bits = sizeof(b->w[0]) * 8;
                if (i % bits == 0 && b->w[i / bits] == 0) {
                        i += bits - 1;
                        continue;
                }
                if (!cpubits_test(b, i))
                        continue;
                unsigned j = i;
                while (j + 1 < CPULIST_MAX && cpubits_test(b, j + 1))
                        j++;
                int w = j == i ? snprintf(buf + len, n - len, "%s%u", len ? "," : "", i)
                               : snprintf(buf + len, n - len, "%s%u-%u", len ? "," : "", i, j);
                if (w < 0 || (size_t)w >= n - len)
                        return; /* truncated: callers size buffers for real machines */
                len += (size_t)w;
                i = j;
        }
}

void cpubits_or(struct cpubits *dst, const struct cpubits *src)
{
        for (size_t i = 0; i < ELEMENTSOF(dst->w); i++)
                dst->w[i] |= src->w[i];
}

void cpubits_andnot(struct cpubits *dst, const struct cpubits *src)
{
        for (size_t i = 0; i < ELEMENTSOF(dst->w); i++)
                dst->w[i] &= ~src->w[i];
}

bool cpubits_subset(const struct cpubits *a, const struct cpubits *b)
{
        for (size_t i = 0; i < ELEMENTSOF(a->w); i++)
                if (a->w[i] & ~b->w[i])
                        return false;
        return true;
}

bool cpubits_equal(const struct cpubits *a, const struct cpubits *b)
{
        return memcmp(a->w, b->w, sizeof(a->w)) == 0;
}

bool cpubits_empty(const struct cpubits *b)
{
        for (size_t i = 0; i < ELEMENTSOF(b->w); i++)
                if (b->w[i])
                        return false;
        return true;
}

/* ---- device rules ---- */

static unsigned access_bits(const char *access)
{
        unsigned bits = 0;
        for (const char *p = access; *p; p++)
                bits |= *p == 'r' ? 1u : *p == 'w' ? 2u : *p == 'm' ? 4u : 0u;
        return bits;
}

static void access_string(unsigned bits, char buf[4])
{
        size_t i = 0;
        if (bits & 1u)
                buf[i++] = 'r';
        if (bits & 2u)
                buf[i++] = 'w';
        if (bits & 4u)
                buf[i++] = 'm';
        buf[i] = '\0';
}

void cg_device_rule_format(const struct cgroup_device_rule *r, char *buf, size_t n)
{
        char major[24], minor[24];
        if (r->major < 0)
                snprintf(major, sizeof(major), "*");
        else
                snprintf(major, sizeof(major), "%lld", (long long)r->major);
        if (r->minor < 0)
                snprintf(minor, sizeof(minor), "*");
        else
                snprintf(minor, sizeof(minor), "%lld", (long long)r->minor);
        snprintf(buf, n, "%c %s:%s %s", r->type, major, minor, r->access);
}

static int device_rule_check(const struct cgroup_device_rule *r, size_t i, struct tessera_error *err)
{
        char field[32];
        snprintf(field, sizeof(field), "devices[%zu]", i);
        if (r->type != 'c' && r->type != 'b')
                return tessera_error_field(err, EINVAL, field, "device type '%c' is neither 'c' nor 'b'", r->type);
        /* The kernel's dev_t has 12 bits of major and 20 of minor. */
        if (r->major < -1 || r->major > 4095)
                return tessera_error_field(err, EINVAL, field, "major %lld is outside 0..4095 (or -1 for any)",
                                           (long long)r->major);
        if (r->minor < -1 || r->minor > 1048575)
                return tessera_error_field(err, EINVAL, field, "minor %lld is outside 0..1048575 (or -1 for any)",
                                           (long long)r->minor);
        size_t len = strnlen(r->access, sizeof(r->access));
        if (len == 0 || len == sizeof(r->access) || strspn(r->access, "rwm") != len)
                return tessera_error_field(err, EINVAL, field, "access \"%.*s\" is not a non-empty subset of \"rwm\"",
                                           (int)len, r->access);
        return 0;
}

/* Adds `r` to the list, merging access with a rule for the same nodes as the kernel does. */
static void device_rules_add(struct cgroup_device_rule *list, size_t *n, const struct cgroup_device_rule *r)
{
        for (size_t i = 0; i < *n; i++) {
                struct cgroup_device_rule *o = &list[i];
                if (o->type == r->type && o->major == r->major && o->minor == r->minor) {
                        access_string(access_bits(o->access) | access_bits(r->access), o->access);
                        return;
                }
        }
        list[*n] = *r;
        access_string(access_bits(r->access), list[*n].access);
        (*n)++;
}

/* ---- mode detection ---- */

static enum cgroup_mode detect_mode(const char *mount)
{
        struct statfs fs;
        if (statfs(mount, &fs) < 0)
                return CGROUP_NONE;
        if (fs.f_type == CGROUP2_SUPER_MAGIC)
                return CGROUP_V2;
        if (fs.f_type != TMPFS_MAGIC)
                return CGROUP_NONE;
        /* A tmpfs of per-controller mounts is v1, or hybrid when "unified" is there too; the cpuset decides. */
        char cpuset[PATH_MAX];
        if (CG_PATH(cpuset, NULL, mount, "cpuset") < 0 || statfs(cpuset, &fs) < 0)
                return CGROUP_NONE;
        return fs.f_type == CGROUP_SUPER_MAGIC ? CGROUP_V1 : CGROUP_NONE;
}

const char *cgroup_mode_name(enum cgroup_mode m)
{
        switch (m) {
        case CGROUP_V1: return "v1";
        case CGROUP_V2: return "v2";
        default: return "none";
        }
}

int tessera_cgroup_open(const char *root_name, const char *mount, struct tessera_cgroup **ret,
                        struct tessera_error *err)
{
        if (!mount)
                mount = DEFAULT_MOUNT;
        if (!name_is_valid(root_name))
                return tessera_error_field(err, EINVAL, "cgroup-root",
                                           "cgroup root \"%s\" is not a name ([A-Za-z0-9][A-Za-z0-9_.-]{0,62})",
                                           root_name ? root_name : "");
        if (strlen(mount) >= sizeof(((struct tessera_cgroup *)0)->mount))
                return tessera_error_set(err, ENAMETOOLONG, "cgroup mount `%s` is too long", mount);
        enum cgroup_mode mode = detect_mode(mount);
        switch (mode) {
        case CGROUP_V1: return cgroup_v1_ops.open(root_name, mount, ret, err);
        case CGROUP_V2: return cgroup_v2_ops.open(root_name, mount, ret, err);
        default:
                return tessera_error_set(err, EOPNOTSUPP,
                                         "`%s` is neither a cgroup2 mount nor a tmpfs holding a cgroup v1 cpuset "
                                         "hierarchy",
                                         mount);
        }
}

void tessera_cgroup_free(struct tessera_cgroup *cg)
{
        if (cg)
                cg->ops->free(cg);
}

/* ---- argument checks ---- */

static int check_cg(struct tessera_cgroup *cg, struct tessera_error *err)
{
        if (!cg)
                return tessera_error_set(err, EINVAL, "no cgroup handle (tessera_cgroup_open not called)");
        return 0;
}

static int check_enclave(struct tessera_cgroup *cg, const char *enclave, struct tessera_error *err)
{
        int r = check_cg(cg, err);
        if (r < 0)
                return r;
        if (!name_is_valid(enclave))
                return tessera_error_field(err, EINVAL, "name", "enclave name \"%s\" is not a valid name",
                                           enclave ? enclave : "");
        return 0;
}

/* A leaf is "supervisor" or "apps/<name>"; nothing else may hold processes. */
static int check_leaf(const char *leaf, struct tessera_error *err)
{
        if (leaf && STREQ(leaf, "supervisor"))
                return 0;
        if (leaf && strncmp(leaf, "apps/", 5) == 0 && name_is_valid(leaf + 5))
                return 0;
        return tessera_error_field(err, EINVAL, "leaf",
                                   "cgroup leaf \"%s\" is neither \"supervisor\" nor "
                                   "\"apps/<name>\"",
                                   leaf ? leaf : "");
}

static int check_list(const char *field, const char *list, struct tessera_error *err)
{
        struct cpubits bits;
        int r = cpulist_parse(list ? list : "", &bits);
        if (r < 0)
                return tessera_error_field(err, -r, field, "%s \"%s\" is not a list like \"0-3,8\" (each below %d)",
                                           field, list ? list : "", CPULIST_MAX);
        return 0;
}

/* ---- the public calls ---- */

int cgroup_enclave_create(struct tessera_cgroup *cg, const char *enclave, struct tessera_error *err)
{
        int r = check_enclave(cg, enclave, err);
        if (r < 0)
                return r;
        return cg->ops->enclave_create(cg, enclave, err);
}

int cgroup_app_create(struct tessera_cgroup *cg, const char *enclave, const char *app, struct tessera_error *err)
{
        int r = check_enclave(cg, enclave, err);
        if (r < 0)
                return r;
        if (!name_is_valid(app))
                return tessera_error_field(err, EINVAL, "app", "application id \"%s\" is not a valid name",
                                           app ? app : "");
        char leaf[128];
        snprintf(leaf, sizeof(leaf), "apps/%s", app);
        return cg->ops->leaf_create(cg, enclave, leaf, err);
}

int cgroup_app_remove(struct tessera_cgroup *cg, const char *enclave, const char *app, struct tessera_error *err)
{
        int r = check_enclave(cg, enclave, err);
        if (r < 0)
                return r;
        if (!name_is_valid(app))
                return tessera_error_field(err, EINVAL, "app", "application id \"%s\" is not a valid name",
                                           app ? app : "");
        char rel[256];
        snprintf(rel, sizeof(rel), "%s/apps/%s", enclave, app);
        return cg->ops->remove_tree(cg, rel, err);
}

enum apply_step {
        STEP_UNEXCLUSIVE,
        STEP_CPUS,
        STEP_MEMS,
        STEP_MEMORY,
        STEP_PIDS,
        STEP_HUGETLB,
        STEP_EXCLUSIVE,
        STEP_END
};

static int apply_step(struct tessera_cgroup *cg, const char *enclave, enum apply_step step,
                      const struct cgroup_limits *lim, struct tessera_error *err)
{
        switch (step) {
        case STEP_UNEXCLUSIVE:
                /* Dropping exclusivity first lets the new cpus overlap a neighbour's. */
                return lim->exclusive_cpus ? 0 : cg->ops->set_exclusive(cg, enclave, false, err);
        case STEP_CPUS: return cg->ops->set_cpus(cg, enclave, lim->cpus ? lim->cpus : "", err);
        case STEP_MEMS: return cg->ops->set_mems(cg, enclave, lim->mems ? lim->mems : "", err);
        case STEP_MEMORY: return cg->ops->set_memory(cg, enclave, lim->memory_bytes, err);
        case STEP_PIDS: return cg->ops->set_pids(cg, enclave, lim->pids_max, err);
        case STEP_HUGETLB: return cg->ops->set_hugetlb(cg, enclave, lim->hugetlb_bytes, err);
        case STEP_EXCLUSIVE: return lim->exclusive_cpus ? cg->ops->set_exclusive(cg, enclave, true, err) : 0;
        default: return 0;
        }
}

/*
 * Applies every limit; when one step fails the earlier ones are put back to
 * what the snapshot saw, so the enclave is never left half-changed.
 * memory_bytes 0 and pids_max 0 mean "no limit"; cpus or mems "" mean the
 * root group's whole set.  hugetlb_bytes is ignored where no hugetlb
 * controller is available (cgroup_probe_report says so).
 */
int cgroup_enclave_apply(struct tessera_cgroup *cg, const char *enclave, const struct cgroup_limits *lim,
                         struct tessera_error *err)
{
        int r = check_enclave(cg, enclave, err);
        if (r < 0)
                return r;
        if (!lim)
                return tessera_error_set(err, EINVAL, "no limits given for enclave '%s'", enclave);
        r = check_list("cpus", lim->cpus, err);
        if (r < 0)
                return r;
        r = check_list("mems", lim->mems, err);
        if (r < 0)
                return r;
        struct cgroup_snapshot old;
        r = cg->ops->snapshot(cg, enclave, &old, err);
        if (r < 0)
                return tessera_error_prefix(err, r, "enclave '%s'", enclave);
        const struct cgroup_limits old_lim = {
                .cpus = old.cpus,
                .mems = old.mems,
                .memory_bytes = old.memory_bytes,
                .pids_max = old.pids_max,
                .exclusive_cpus = old.exclusive,
                .hugetlb_bytes = old.hugetlb_bytes,
        };
        for (enum apply_step s = STEP_UNEXCLUSIVE; s < STEP_END; s++) {
                r = apply_step(cg, enclave, s, lim, err);
                if (r >= 0)
                        continue;
                struct tessera_error undo_err;
                for (enum apply_step u = s; u-- > STEP_CPUS;)
                        (void)apply_step(cg, enclave, u, &old_lim, &undo_err);
                if (old.exclusive && !lim->exclusive_cpus)
                        (void)cg->ops->set_exclusive(cg, enclave, true, &undo_err);
                return r;
        }
        return 0;
}

int cgroup_enclave_set_cpus(struct tessera_cgroup *cg, const char *enclave, const char *cpus, struct tessera_error *err)
{
        int r = check_enclave(cg, enclave, err);
        if (r < 0)
                return r;
        r = check_list("cpus", cpus, err);
        if (r < 0)
                return r;
        return cg->ops->set_cpus(cg, enclave, cpus ? cpus : "", err);
}

int cgroup_enclave_set_mems(struct tessera_cgroup *cg, const char *enclave, const char *mems, struct tessera_error *err)
{
        int r = check_enclave(cg, enclave, err);
        if (r < 0)
                return r;
        r = check_list("mems", mems, err);
        if (r < 0)
                return r;
        return cg->ops->set_mems(cg, enclave, mems ? mems : "", err);
}

int cgroup_enclave_set_memory(struct tessera_cgroup *cg, const char *enclave, uint64_t bytes, struct tessera_error *err)
{
        int r = check_enclave(cg, enclave, err);
        if (r < 0)
                return r;
        return cg->ops->set_memory(cg, enclave, bytes, err);
}

int cgroup_enclave_set_devices(struct tessera_cgroup *cg, const char *enclave, const struct cgroup_device_rule *rules,
                               size_t n_rules, struct tessera_error *err)
{
        int r = check_enclave(cg, enclave, err);
        if (r < 0)
                return r;
        if (n_rules > 4096)
                return tessera_error_field(err, E2BIG, "devices", "%zu device rules; at most 4096", n_rules);
        for (size_t i = 0; i < n_rules; i++) {
                r = device_rule_check(&rules[i], i, err);
                if (r < 0)
                        return r;
        }
        _cleanup_free_ struct cgroup_device_rule *all = calloc(cg_n_standard_devices + n_rules, sizeof(*all));
        if (!all)
                return tessera_error_set(err, ENOMEM, "out of memory for %zu device rules", n_rules);
        size_t n = 0;
        for (size_t i = 0; i < cg_n_standard_devices; i++)
                device_rules_add(all, &n, &cg_standard_devices[i]);
        for (size_t i = 0; i < n_rules; i++)
                device_rules_add(all, &n, &rules[i]);
        return cg->ops->set_devices(cg, enclave, all, n, err);
}

int cgroup_enter(struct tessera_cgroup *cg, const char *enclave, const char *leaf, pid_t pid, struct tessera_error *err)
{
        int r = check_enclave(cg, enclave, err);
        if (r < 0)
                return r;
        r = check_leaf(leaf, err);
        if (r < 0)
                return r;
        if (pid < 0)
                return tessera_error_set(err, EINVAL, "pid %d is not a process", (int)pid);
        return cg->ops->enter(cg, enclave, leaf, pid ? pid : getpid(), err);
}

int cgroup_leaf_fd(struct tessera_cgroup *cg, const char *enclave, const char *leaf, struct tessera_error *err)
{
        int r = check_enclave(cg, enclave, err);
        if (r < 0)
                return r;
        r = check_leaf(leaf, err);
        if (r < 0)
                return r;
        return cg->ops->leaf_fd(cg, enclave, leaf, err);
}

int cgroup_enclave_destroy(struct tessera_cgroup *cg, const char *enclave, struct tessera_error *err)
{
        int r = check_enclave(cg, enclave, err);
        if (r < 0)
                return r;
        r = cg->ops->remove_tree(cg, enclave, err);
        if (r < 0)
                return tessera_error_prefix(err, r, "destroying enclave '%s'", enclave);
        return 0;
}

bool cgroup_enclave_exists(struct tessera_cgroup *cg, const char *enclave)
{
        if (!cg || !name_is_valid(enclave))
                return false;
        return cg->ops->exists(cg, enclave);
}

int cgroup_enclave_count_tasks(struct tessera_cgroup *cg, const char *enclave, struct tessera_error *err)
{
        int r = check_enclave(cg, enclave, err);
        if (r < 0)
                return r;
        return cg->ops->count_tasks(cg, enclave, err);
}

int cgroup_stats_read(struct tessera_cgroup *cg, const char *enclave, const char *leaf, struct cgroup_stats *ret,
                      struct tessera_error *err)
{
        int r = check_enclave(cg, enclave, err);
        if (r < 0)
                return r;
        if (leaf) {
                r = check_leaf(leaf, err);
                if (r < 0)
                        return r;
        }
        char rel[256];
        snprintf(rel, sizeof(rel), "%s%s%s", enclave, leaf ? "/" : "", leaf ? leaf : "");
        memset(ret, 0, sizeof(*ret));
        return cg->ops->stats(cg, rel, ret, err);
}

int cgroup_root_set_cpus(struct tessera_cgroup *cg, const char *cpus, struct tessera_error *err)
{
        int r = check_cg(cg, err);
        if (r < 0)
                return r;
        r = check_list("cpus", cpus, err);
        if (r < 0)
                return r;
        return cg->ops->root_set_cpus(cg, cpus ? cpus : "", err);
}

static int strcmp_ptr(const void *a, const void *b)
{
        return strcmp(*(char *const *)a, *(char *const *)b);
}

static void free_names(char **names, size_t n)
{
        for (size_t i = 0; i < n; i++)
                free(names[i]);
        free(names);
}

int cgroup_list_enclaves(struct tessera_cgroup *cg, char ***ret, size_t *ret_n, struct tessera_error *err)
{
        int r = check_cg(cg, err);
        if (r < 0)
                return r;
        char ref[PATH_MAX], dir[PATH_MAX];
        r = CG_PATH(dir, err, cg->ops->reference_dir(cg, ref, sizeof(ref)), cg->root);
        if (r < 0)
                return r;
        *ret = NULL;
        *ret_n = 0;
        _cleanup_(closedirp) DIR *d = opendir(dir);
        if (!d) {
                if (errno == ENOENT)
                        return 0;
                return tessera_error_set(err, errno, "cannot list `%s`: %s", dir, strerror(errno));
        }
        char **names = NULL;
        size_t n = 0, cap = 0;
        struct dirent *de;
        while ((de = readdir(d))) {
                if (de->d_type != DT_DIR || !name_is_valid(de->d_name))
                        continue;
                if (n == cap) {
                        cap = cap ? cap * 2 : 8;
                        char **p = realloc(names, cap * sizeof(*p));
                        if (!p) {
                                free_names(names, n);
                                return tessera_error_set(err, ENOMEM, "out of memory listing `%s`", dir);
                        }
                        names = p;
                }
                names[n] = strdup(de->d_name);
                if (!names[n]) {
                        free_names(names, n);
                        return tessera_error_set(err, ENOMEM, "out of memory listing `%s`", dir);
                }
                n++;
        }
        if (n > 1)
                qsort(names, n, sizeof(*names), strcmp_ptr);
        *ret = names;
        *ret_n = n;
        return 0;
}

/*
 * Finds "/<root>/<enclave>" in a cgroup path as /proc shows it.  The path is
 * relative to the hierarchy's (or cgroup namespace's) root, which need not be
 * our mount, so a candidate counts only if the same tail exists below `ref`.
 */
static int enclave_from_cgroup_path(struct tessera_cgroup *cg, const char *ref, const char *path, char *ret, size_t n)
{
        size_t rlen = strlen(cg->root);
        for (const char *p = strchr(path, '/'); p; p = strchr(p + 1, '/')) {
                if (strncmp(p + 1, cg->root, rlen) != 0 || p[1 + rlen] != '/')
                        continue;
                const char *enclave = p + 1 + rlen + 1;
                size_t elen = strcspn(enclave, "/");
                if (elen == 0 || elen >= n)
                        continue;
                char full[PATH_MAX];
                struct stat st;
                if (CG_PATH(full, NULL, ref, p) < 0 || stat(full, &st) < 0 || !S_ISDIR(st.st_mode))
                        continue;
                memcpy(ret, enclave, elen);
                ret[elen] = '\0';
                return name_is_valid(ret) ? 0 : -ENOENT;
        }
        return -ENOENT;
}

int cgroup_pid_enclave(struct tessera_cgroup *cg, pid_t pid, char *ret, size_t n, struct tessera_error *err)
{
        int r = check_cg(cg, err);
        if (r < 0)
                return r;
        char file[64], ref[PATH_MAX];
        snprintf(file, sizeof(file), "/proc/%d/cgroup", pid > 0 ? (int)pid : (int)getpid());
        _cleanup_fclose_ FILE *f = fopen(file, "re");
        if (!f)
                return tessera_error_set(err, errno, "cannot open `%s`: %s", file, strerror(errno));
        cg->ops->reference_dir(cg, ref, sizeof(ref));
        _cleanup_free_ char *line = NULL;
        size_t cap = 0;
        ssize_t len;
        while ((len = getline(&line, &cap, f)) > 0) {
                if (line[len - 1] == '\n')
                        line[len - 1] = '\0';
                /* "hierarchy-id:controller,list:/path" */
                char *c1 = strchr(line, ':');
                char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
                if (!c2)
                        continue;
                *c1 = *c2 = '\0';
                if (!cg->ops->is_reference_line(c1 + 1, line))
                        continue;
                if (enclave_from_cgroup_path(cg, ref, c2 + 1, ret, n) == 0)
                        return 0;
                return tessera_error_set(err, ENOENT, "pid %d is in cgroup `%s`, not in an enclave of '%s'", (int)pid,
                                         c2 + 1, cg->root);
        }
        return tessera_error_set(err, ENOENT, "`%s` has no line for the %s hierarchy", file,
                                 cg->mode == CGROUP_V1 ? "cpuset" : "unified");
}

int cgroup_root_remove(struct tessera_cgroup *cg, struct tessera_error *err)
{
        int r = check_cg(cg, err);
        if (r < 0)
                return r;
        char **names = NULL;
        size_t n = 0;
        r = cgroup_list_enclaves(cg, &names, &n, err);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n && r >= 0; i++)
                r = cgroup_enclave_destroy(cg, names[i], err);
        free_names(names, n);
        if (r < 0)
                return r;
        return cg->ops->root_remove(cg, err);
}

/* ---- probe ---- */

static int appendf(char *buf, size_t n, size_t *len, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int appendf(char *buf, size_t n, size_t *len, const char *fmt, ...)
{
        if (*len >= n)
                return -ENOBUFS;
        va_list ap;
        va_start(ap, fmt);
        int w = vsnprintf(buf + *len, n - *len, fmt, ap);
        va_end(ap);
        if (w < 0 || (size_t)w >= n - *len) {
                *len = n;
                return -ENOBUFS;
        }
        *len += (size_t)w;
        return 0;
}

static bool is_fs(const char *path, long magic)
{
        struct statfs fs;
        return statfs(path, &fs) == 0 && fs.f_type == magic;
}

static void probe_v1(char *buf, size_t n, size_t *len)
{
        static const char *const wanted[] = {"cpuset",  "memory", "pids",    "freezer",
                                             "devices", "cpu",    "cpuacct", "hugetlb"};
        char missing[256] = "";
        (void)appendf(buf, n, len, "controllers (v1):");
        for (size_t i = 0; i < ELEMENTSOF(wanted); i++) {
                char dir[PATH_MAX];
                snprintf(dir, sizeof(dir), DEFAULT_MOUNT "/%s", wanted[i]);
                if (is_fs(dir, CGROUP_SUPER_MAGIC))
                        (void)appendf(buf, n, len, " %s", wanted[i]);
                else
                        snprintf(missing + strlen(missing), sizeof(missing) - strlen(missing), " %s", wanted[i]);
        }
        (void)appendf(buf, n, len, "\nmissing:%s\n", missing[0] ? missing : " none");
        if (strstr(missing, "hugetlb"))
                (void)appendf(buf, n, len, "note: huge page limits are not enforced (no v1 hugetlb hierarchy)\n");
        if (is_fs(DEFAULT_MOUNT "/unified", CGROUP2_SUPER_MAGIC)) {
                char ctl[256] = "";
                (void)read_file_at(AT_FDCWD, DEFAULT_MOUNT "/unified/cgroup.controllers", ctl, sizeof(ctl), NULL);
                (void)appendf(buf, n, len,
                              "hybrid: cgroup2 at " DEFAULT_MOUNT "/unified holds \"%s\" (not used for "
                              "enclaves; its BPF device filters are)\n",
                              ctl);
        }
        (void)appendf(buf, n, len, "devices: v1 devices controller\n");
}

static void probe_v2(char *buf, size_t n, size_t *len)
{
        static const char *const wanted[] = {"cpuset", "memory", "pids", "hugetlb"};
        char ctl[512] = "", sub[512] = "", padded[520];
        (void)read_file_at(AT_FDCWD, DEFAULT_MOUNT "/cgroup.controllers", ctl, sizeof(ctl), NULL);
        (void)read_file_at(AT_FDCWD, DEFAULT_MOUNT "/cgroup.subtree_control", sub, sizeof(sub), NULL);
        (void)appendf(buf, n, len, "controllers (v2): %s\nenabled below the root: %s\n", ctl, sub[0] ? sub : "none");
        snprintf(padded, sizeof(padded), " %s ", ctl);
        (void)appendf(buf, n, len, "missing:");
        bool any = false;
        for (size_t i = 0; i < ELEMENTSOF(wanted); i++) {
                char word[32];
                snprintf(word, sizeof(word), " %s ", wanted[i]);
                if (!strstr(padded, word)) {
                        (void)appendf(buf, n, len, " %s", wanted[i]);
                        any = true;
                }
        }
        (void)appendf(buf, n, len, "%s\n", any ? "" : " none");
        (void)appendf(buf, n, len, "devices: BPF cgroup device programs\n");
}

int cgroup_probe_report(char *buf, size_t n)
{
        if (!buf || n == 0)
                return -EINVAL;
        size_t len = 0;
        buf[0] = '\0';
        enum cgroup_mode mode = detect_mode(DEFAULT_MOUNT);
        (void)appendf(buf, n, &len, "cgroup mode: %s (" DEFAULT_MOUNT ")\n", cgroup_mode_name(mode));
        if (mode == CGROUP_V1)
                probe_v1(buf, n, &len);
        else if (mode == CGROUP_V2)
                probe_v2(buf, n, &len);
        else
                (void)appendf(buf, n, &len, "no usable cgroup hierarchy: enclaves cannot be created\n");
        if (len >= n)
                return -ENOBUFS;
        return (int)len;
}

int cgroup_leaf_pids(struct tessera_cgroup *cg, const char *enclave, const char *leaf, pid_t **ret, size_t *n,
                     struct tessera_error *err)
{
        char ref[PATH_MAX], path[PATH_MAX];
        int r = CG_PATH(path, err, cg->ops->reference_dir(cg, ref, sizeof(ref)), cg->root, enclave, leaf,
                        "cgroup.procs");
        if (r < 0)
                return r;
        return cg_read_pids(path, ret, n, err);
}

int cgroup_enclave_read(struct tessera_cgroup *cg, const char *enclave, struct cgroup_state *ret,
                        struct tessera_error *err)
{
        struct cgroup_snapshot snap = {0};
        int r = cg->ops->snapshot(cg, enclave, &snap, err);
        if (r < 0)
                return r;
        snprintf(ret->cpus, sizeof(ret->cpus), "%s", snap.cpus);
        snprintf(ret->mems, sizeof(ret->mems), "%s", snap.mems);
        ret->memory_bytes = snap.memory_bytes;
        ret->pids_max = snap.pids_max;
        ret->exclusive = snap.exclusive;
        return 0;
}
