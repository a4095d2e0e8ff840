/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A helper process that moves processes into cgroup leaves for tesserad.
 * On cgroup v1 a move waits for an RCU grace period (10-16 ms here) while
 * holding cgroup_mutex, so an rmdir issued meanwhile waits too: both are
 * done in this process, and tesserad's loop goes on serving.
 * It is forked from tesserad before the store is opened and holds nothing
 * but the cgroup paths and its socket; it dies with tesserad.
 */
#ifndef TESSERA_MOVER_H
#define TESSERA_MOVER_H

#include <stdint.h>
#include <sys/types.h>

#include "cgroup.h"
#include "tessera/tessera.h"

struct mover;

int mover_start(struct tessera_cgroup *cg, struct mover **ret, struct tessera_error *err);
void mover_stop(struct mover *m);
/* The socket to poll for results. */
int mover_fd(const struct mover *m);
int mover_submit(struct mover *m, uint64_t job, const char *enclave, const char *leaf, pid_t pid,
                 struct tessera_error *err);
/* Removes <enclave>/<leaf> (killing what is left in it) after the moves queued before it. */
int mover_remove(struct mover *m, const char *enclave, const char *leaf, struct tessera_error *err);
/* One finished job: 1 and its id and errno (0: moved), 0 when none is ready, or a negative errno. */
int mover_result(struct mover *m, uint64_t *ret_job, int *ret_errno);

#endif
