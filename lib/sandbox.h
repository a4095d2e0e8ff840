/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Starting an enclave's supervisor: one clone3() into fresh namespaces with a
 * pidfd, placed in the enclave's cgroup before it runs any code of its own,
 * then the mount setup (private propagation, optional new root with /proc,
 * /sys read-only, a minimal /dev, /dev/shm, /tmp) and an exec of the static
 * `tessera-supervisor` binary, opened before the root changes so it need not
 * exist inside the enclave's root.
 */
#ifndef TESSERA_SANDBOX_H
#define TESSERA_SANDBOX_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "tessera/tessera.h"

struct tessera_cgroup;

struct sandbox_config {
        const char *enclave; /* enclave name: cgroup group and default hostname */
        const char *hostname;
        const char *root; /* NULL: keep the host's root (still a private mount ns) */
        bool new_net;     /* CLONE_NEWNET */
        bool new_user;    /* CLONE_NEWUSER with the map below */
        uid_t map_uid;    /* enclave root -> this host uid (count ids) */
        gid_t map_gid;
        uint32_t map_count;
        const char *supervisor_path;   /* the tessera-supervisor binary */
        int listen_fd;                 /* the supervisor's control socket, passed as fd 3 */
        int log_fd;                    /* stdout/stderr of the supervisor, or -1 for /dev/null */
        struct tessera_cgroup *cgroup; /* placed in <enclave>/supervisor before exec */
        const char *xemem_dir;         /* with a root of its own: bound at /run/tessera/xemem (NULL: none) */
};

/*
 * Starts the supervisor; returns its host pid and a pidfd (CLOEXEC).  On any
 * failure the child is killed and reaped, and nothing is left behind.
 */
int sandbox_spawn_supervisor(const struct sandbox_config *cfg, pid_t *ret_pid, int *ret_pidfd,
                             struct tessera_error *err);

/* The process's start time in clock ticks since boot (field 22 of /proc/PID/stat):
 * with the pid it names a process across daemon restarts. */
int process_start_time(pid_t pid, uint64_t *ret, struct tessera_error *err);

/* pidfd_open() with a check that the pid still is the process that started at `start_time`. */
int pidfd_open_checked(pid_t pid, uint64_t start_time, struct tessera_error *err);

#endif
