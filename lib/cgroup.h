/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * One interface over cgroup v1 and v2.  tesserad keeps everything under one
 * root group per daemon (`--cgroup-root`, default "tessera"); each enclave is
 * a group below it with two leaves: `supervisor` (the enclave's PID 1) and,
 * for applications, `apps/<id>`.  The v2 no-internal-process rule is why the
 * enclave group itself holds no process.
 *
 *   v1: /sys/fs/cgroup/<controller>/<root>/<enclave>/{supervisor,apps/...}
 *   v2: /sys/fs/cgroup/<root>/<enclave>/{supervisor,apps/...}
 */
#ifndef TESSERA_CGROUP_H
#define TESSERA_CGROUP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "tessera/tessera.h"

enum cgroup_mode { CGROUP_NONE, CGROUP_V1, CGROUP_V2 };

/* What tesserad asks of an enclave's group; applied as a whole, idempotently. */
struct cgroup_limits {
        const char *cpus;       /* cpulist, "" for none */
        const char *mems;       /* NUMA node list */
        uint64_t memory_bytes;  /* hard limit; also memory.min on v2 */
        uint64_t pids_max;      /* 0: no limit */
        bool exclusive_cpus;    /* v2: isolated partition; v1: cpu_exclusive where allowed */
        uint64_t hugetlb_bytes; /* 2 MiB pages limit; 0 = none allowed when hugetlb is managed */
};

/* A device allowed inside an enclave, as the devices cgroup / BPF program sees it. */
struct cgroup_device_rule {
        char type;      /* 'c' or 'b' */
        int64_t major;  /* -1: any */
        int64_t minor;  /* -1: any */
        char access[4]; /* subset of "rwm" */
};

struct cgroup_ops;

struct tessera_cgroup {
        const struct cgroup_ops *ops;
        enum cgroup_mode mode;
        char root[128];  /* the daemon's root group name */
        char mount[256]; /* "/sys/fs/cgroup" (v1: parent of the controller dirs) */
};

/* Detects the mode (statfs magic) once and prepares the root group. */
int tessera_cgroup_open(const char *root_name, const char *mount, struct tessera_cgroup **ret,
                        struct tessera_error *err);
void tessera_cgroup_free(struct tessera_cgroup *cg);

/* Creates <root>/<enclave>/supervisor and <root>/<enclave>/apps in every controller. */
int cgroup_enclave_create(struct tessera_cgroup *cg, const char *enclave, struct tessera_error *err);
int cgroup_enclave_apply(struct tessera_cgroup *cg, const char *enclave, const struct cgroup_limits *lim,
                         struct tessera_error *err);
int cgroup_enclave_set_cpus(struct tessera_cgroup *cg, const char *enclave, const char *cpus,
                            struct tessera_error *err);
int cgroup_enclave_set_mems(struct tessera_cgroup *cg, const char *enclave, const char *mems,
                            struct tessera_error *err);
int cgroup_enclave_set_memory(struct tessera_cgroup *cg, const char *enclave, uint64_t bytes,
                              struct tessera_error *err);
/* Replaces the device allow list: default deny plus the standard nodes plus `rules`. */
int cgroup_enclave_set_devices(struct tessera_cgroup *cg, const char *enclave, const struct cgroup_device_rule *rules,
                               size_t n_rules, struct tessera_error *err);
/* Moves `pid` into <enclave>/<leaf> ("supervisor" or "apps/<id>") in every controller. */
int cgroup_enter(struct tessera_cgroup *cg, const char *enclave, const char *leaf, pid_t pid,
                 struct tessera_error *err);
/* v2 only: an O_PATH|O_DIRECTORY fd of the leaf for clone3 CLONE_INTO_CGROUP; -EOPNOTSUPP on v1. */
int cgroup_leaf_fd(struct tessera_cgroup *cg, const char *enclave, const char *leaf, struct tessera_error *err);
/* Freezes, SIGKILLs every task, thaws, waits until empty, then removes the enclave's groups. */
int cgroup_enclave_destroy(struct tessera_cgroup *cg, const char *enclave, struct tessera_error *err);
bool cgroup_enclave_exists(struct tessera_cgroup *cg, const char *enclave);
/* Number of tasks in the whole enclave (all leaves). */
int cgroup_enclave_count_tasks(struct tessera_cgroup *cg, const char *enclave, struct tessera_error *err);
/* Lists enclave group names under the root (for reconcile).  Caller frees each and the array. */
int cgroup_list_enclaves(struct tessera_cgroup *cg, char ***ret, size_t *n, struct tessera_error *err);
/* Which enclave (if any) a pid's cgroup belongs to, read from /proc/<pid>/cgroup.  -ENOENT if none. */
int cgroup_pid_enclave(struct tessera_cgroup *cg, pid_t pid, char *ret, size_t n, struct tessera_error *err);

const char *cgroup_mode_name(enum cgroup_mode m);

/* Creates <enclave>/apps/<app> in every controller (v1: with the enclave's cpus, mems and devices). */
int cgroup_app_create(struct tessera_cgroup *cg, const char *enclave, const char *app, struct tessera_error *err);
/* Kills what is left in <enclave>/apps/<app> and removes it; 0 if it does not exist. */
int cgroup_app_remove(struct tessera_cgroup *cg, const char *enclave, const char *app, struct tessera_error *err);

/* What a group has used; a figure the kernel does not report reads 0. */
struct cgroup_stats {
        uint64_t memory_current; /* bytes charged now */
        uint64_t memory_peak;    /* high-water mark: v1 memory.max_usage_in_bytes, v2 memory.peak */
        uint64_t cpu_usage_ns;   /* CPU time of every task, v1 cpuacct.usage, v2 cpu.stat usage_usec */
};
/* Usage of <enclave>/<leaf>, or of the whole enclave when `leaf` is NULL. */
int cgroup_stats_read(struct tessera_cgroup *cg, const char *enclave, const char *leaf, struct cgroup_stats *ret,
                      struct tessera_error *err);

/*
 * Confines the root group to the CPU pool tesserad manages, which exclusive
 * enclaves need: v1 sets cpuset.cpu_exclusive on it, v2 makes it a cpuset
 * partition root.  The pool must leave the rest of the machine at least one
 * CPU.  "" gives the root group back every CPU and drops exclusivity.
 */
int cgroup_root_set_cpus(struct tessera_cgroup *cg, const char *cpus, struct tessera_error *err);
/* Destroys every enclave, then removes the root group itself in every controller. */
int cgroup_root_remove(struct tessera_cgroup *cg, struct tessera_error *err);
/* An enclave's limits as the kernel has them now (for `tessera check`). */
struct cgroup_state {
        char cpus[1024];
        char mems[256];
        uint64_t memory_bytes; /* 0: no limit */
        uint64_t pids_max;     /* 0: no limit */
        bool exclusive;        /* v1 cpu_exclusive, v2 a valid partition */
};
int cgroup_enclave_read(struct tessera_cgroup *cg, const char *enclave, struct cgroup_state *ret,
                        struct tessera_error *err);
/* The processes in <enclave>/<leaf> (e.g. the supervisor before its pid is recorded); caller frees. */
int cgroup_leaf_pids(struct tessera_cgroup *cg, const char *enclave, const char *leaf, pid_t **ret, size_t *n,
                     struct tessera_error *err);
/* Describes this machine's cgroup mode and controllers (for `tessera node`); returns the length written. */
int cgroup_probe_report(char *buf, size_t n);

#endif
