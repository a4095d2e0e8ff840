/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * What cgroup.c shares with the two implementations: the operations table,
 * the limits snapshot used to undo a partial apply, and small helpers for
 * paths, control files, task lists, cpulists and bounded waits.
 */
#ifndef TESSERA_CGROUP_INTERNAL_H
#define TESSERA_CGROUP_INTERNAL_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "cgroup.h"

/* The device nodes every enclave may use, before its own rules. */
extern const struct cgroup_device_rule cg_standard_devices[];
extern const size_t cg_n_standard_devices;

/* The limits an enclave has now, read back so that a failed apply can restore them. */
struct cgroup_snapshot {
        char cpus[1024];
        char mems[256];
        uint64_t memory_bytes; /* 0: no limit */
        uint64_t pids_max;     /* 0: no limit */
        uint64_t hugetlb_bytes;
        bool exclusive;
};

/*
 * One table per cgroup version, chosen once by tessera_cgroup_open().  `rel`
 * arguments are paths below the daemon's root group ("<enclave>" or
 * "<enclave>/apps/<id>"); names are validated by cgroup.c before any call.
 */
struct cgroup_ops {
        enum cgroup_mode mode;
        int (*open)(const char *root_name, const char *mount, struct tessera_cgroup **ret, struct tessera_error *err);
        void (*free)(struct tessera_cgroup *cg);
        int (*root_set_cpus)(struct tessera_cgroup *cg, const char *cpus, struct tessera_error *err);
        int (*root_remove)(struct tessera_cgroup *cg, struct tessera_error *err);

        int (*enclave_create)(struct tessera_cgroup *cg, const char *enclave, struct tessera_error *err);
        int (*leaf_create)(struct tessera_cgroup *cg, const char *enclave, const char *leaf, struct tessera_error *err);
        /* Freezes, kills, thaws, waits and removes `rel` and everything below it; 0 if absent. */
        int (*remove_tree)(struct tessera_cgroup *cg, const char *rel, struct tessera_error *err);
        bool (*exists)(struct tessera_cgroup *cg, const char *rel);

        int (*snapshot)(struct tessera_cgroup *cg, const char *enclave, struct cgroup_snapshot *ret,
                        struct tessera_error *err);
        int (*set_cpus)(struct tessera_cgroup *cg, const char *enclave, const char *cpus, struct tessera_error *err);
        int (*set_mems)(struct tessera_cgroup *cg, const char *enclave, const char *mems, struct tessera_error *err);
        int (*set_memory)(struct tessera_cgroup *cg, const char *enclave, uint64_t bytes, struct tessera_error *err);
        int (*set_pids)(struct tessera_cgroup *cg, const char *enclave, uint64_t max, struct tessera_error *err);
        int (*set_hugetlb)(struct tessera_cgroup *cg, const char *enclave, uint64_t bytes, struct tessera_error *err);
        int (*set_exclusive)(struct tessera_cgroup *cg, const char *enclave, bool on, struct tessera_error *err);
        /* `rules` already holds the standard set followed by the caller's rules, merged. */
        int (*set_devices)(struct tessera_cgroup *cg, const char *enclave, const struct cgroup_device_rule *rules,
                           size_t n_rules, struct tessera_error *err);

        int (*enter)(struct tessera_cgroup *cg, const char *enclave, const char *leaf, pid_t pid,
                     struct tessera_error *err);
        int (*leaf_fd)(struct tessera_cgroup *cg, const char *enclave, const char *leaf, struct tessera_error *err);
        int (*count_tasks)(struct tessera_cgroup *cg, const char *rel, struct tessera_error *err);
        int (*stats)(struct tessera_cgroup *cg, const char *rel, struct cgroup_stats *ret, struct tessera_error *err);
        /* Directory holding the root group in the reference hierarchy (v1: cpuset, v2: the mount). */
        const char *(*reference_dir)(struct tessera_cgroup *cg, char *buf, size_t n);
        /* Picks the line of /proc/PID/cgroup that belongs to the reference hierarchy. */
        bool (*is_reference_line)(const char *controllers, const char *hierarchy_id);
};

extern const struct cgroup_ops cgroup_v1_ops;
extern const struct cgroup_ops cgroup_v2_ops;

/* Paths: joins components with '/' (empty ones are skipped); the list ends with NULL. */
int cg_join(char *buf, size_t n, struct tessera_error *err, ...) __attribute__((sentinel));
#define CG_PATH(buf, err, ...) cg_join((buf), sizeof(buf), (err), __VA_ARGS__, (const char *)NULL)

/* Control files by absolute path, so every error names the whole path. */
int cg_write(const char *path, const char *value, struct tessera_error *err);
int cg_read(const char *path, char *buf, size_t n, struct tessera_error *err);
/* "max" (v2) and v1's "unlimited" (>= 2^62) read as UINT64_MAX. */
int cg_read_u64(const char *path, uint64_t *ret, struct tessera_error *err);
/* The value of `key` in a flat keyed file ("populated 1", "usage_usec 42"). */
int cg_read_key(const char *path, const char *key, uint64_t *ret, struct tessera_error *err);
bool cg_file_exists(const char *path);

/* mkdir that accepts an existing directory; *ret_created says whether this call made it. */
int cg_mkdir(const char *path, bool *ret_created, struct tessera_error *err);
/* rmdir that treats a missing group as removed and retries EBUSY (tasks still exiting) for ~2 s. */
int cg_rmdir(const char *path, struct tessera_error *err);

/* The pids listed in a cgroup.procs or tasks file. */
int cg_read_pids(const char *path, pid_t **ret, size_t *ret_n, struct tessera_error *err);

/* Visits `path` and every group below it: parents first, or children first with `children_first`. */
typedef int (*cg_visit_fn)(const char *path, void *userdata, struct tessera_error *err);
int cg_walk(const char *path, bool children_first, cg_visit_fn fn, void *userdata, struct tessera_error *err);
/* Removes `path` and its descendants, deepest first. */
int cg_rmdir_tree(const char *path, struct tessera_error *err);
/* Sends SIGKILL to every pid in `file` ("cgroup.procs" or "tasks") of every group under path. */
int cg_kill_tree(const char *path, const char *file, struct tessera_error *err);
/* Number of pids in cgroup.procs summed over path and its descendants. */
int cg_count_tree(const char *path, struct tessera_error *err);

/* A bounded wait: sleeps 1, 2, 4 .. 64 ms until `budget_ms` have passed (then returns false). */
struct cg_backoff {
        uint64_t deadline_ns;
        unsigned step_ms;
};
void cg_backoff_init(struct cg_backoff *b, unsigned budget_ms);
bool cg_backoff_wait(struct cg_backoff *b);

/* CPU and memory-node lists ("0-3,8") as bitmaps, for union and subset tests on v1 cpusets. */
#define CPULIST_MAX 8192
struct cpubits {
        uint64_t w[CPULIST_MAX / 64];
};
int cpulist_parse(const char *s, struct cpubits *ret);
void cpulist_format(const struct cpubits *b, char *buf, size_t n);
void cpubits_or(struct cpubits *dst, const struct cpubits *src);
void cpubits_andnot(struct cpubits *dst, const struct cpubits *src);
bool cpubits_subset(const struct cpubits *a, const struct cpubits *b); /* a within b */
bool cpubits_equal(const struct cpubits *a, const struct cpubits *b);
bool cpubits_empty(const struct cpubits *b);

/* "c 1:3 rwm", with '*' for -1. */
void cg_device_rule_format(const struct cgroup_device_rule *r, char *buf, size_t n);

#endif
