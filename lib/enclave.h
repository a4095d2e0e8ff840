/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Enclave lifecycles: the steps that turn a spec into kernel objects and
 * back, each with its undo, under the ledger's transactions.  A `node` is
 * what tesserad holds: config, topology, cgroups, store, and the pidfds of
 * the supervisors it watches.
 *
 * Order of every change: take resources in the store (transaction open) ->
 * change the kernel step by step -> commit.  On failure: undo the kernel
 * steps in reverse, roll the transaction back, return the first error.  On a
 * crash: the store says what should be, node_reconcile() makes the kernel
 * agree (re-applying limits, finishing or rolling back half-done creates and
 * destroys, removing groups nobody owns).
 */
#ifndef TESSERA_ENCLAVE_H
#define TESSERA_ENCLAVE_H

#include <jansson.h>
#include <sys/types.h>

#include "config.h"
#include "ledger.h"
#include "tessera/tessera.h"

struct tessera_node;

/* tesserad learns which pidfds to watch (supervisors, applications) through these. */
enum watch_kind { WATCH_SUPERVISOR, WATCH_APP, WATCH_XEMEM /* id: a pid */ };
struct node_watcher {
        void *ctx;
        void (*add)(void *ctx, int pidfd, enum watch_kind kind, int64_t id);
        void (*remove)(void *ctx, int pidfd);
};

/* Opens topology, cgroups (unless ledger-only), the store; fills the ledger. `log` gets warnings. */
int node_open(const struct tessera_config *cfg, const struct node_watcher *w, json_t *log, struct tessera_node **ret,
              struct tessera_error *err);
void node_close(struct tessera_node *n);
/* Makes the kernel agree with the store; appends what it fixed to `log`. */
int node_reconcile(struct tessera_node *n, json_t *log, struct tessera_error *err);
bool node_ledger_only(const struct tessera_node *n);
/* The enclave whose cgroup holds `pid` (1, name in ret), or 0 when it is in none. */
int node_pid_enclave(struct tessera_node *n, pid_t pid, char *ret, size_t len);

json_t *node_summary(struct tessera_node *n, uid_t caller, struct tessera_error *err);
json_t *node_cpus(struct tessera_node *n, uid_t caller, struct tessera_error *err);
json_t *node_memory(struct tessera_node *n, uid_t caller, struct tessera_error *err);
json_t *node_devices(struct tessera_node *n, uid_t caller, struct tessera_error *err);
int node_check(struct tessera_node *n, uid_t caller, json_t **ret, struct tessera_error *err);

int enclave_list(struct tessera_node *n, uid_t caller, json_t **ret, struct tessera_error *err);
int enclave_create(struct tessera_node *n, uid_t caller, json_t *spec, json_t **ret, struct tessera_error *err);
int enclave_destroy(struct tessera_node *n, uid_t caller, const char *name, struct tessera_error *err);
int enclave_ping(struct tessera_node *n, uid_t caller, const char *name, json_t **ret, struct tessera_error *err);
/* args: {"name", "cpus"?, "memory"?, "device"?}; release=false adds, true removes. */
int enclave_change(struct tessera_node *n, uid_t caller, json_t *args, bool release, json_t **ret,
                   struct tessera_error *err);
/* The cgroup mover's socket (-1: none) and its finished jobs (app.c's stem pool). */
int node_mover_fd(struct tessera_node *n);
void app_pool_events(struct tessera_node *n);
/* Tops up the enclave's pool of prewarmed application stems (after a launch, a create, a restart). */
void app_pool_refill(struct tessera_node *n, const char *enclave);

/* A watched supervisor's pidfd became readable: mark failed, apply on_failure. */
int enclave_supervisor_exited(struct tessera_node *n, int64_t id, json_t *log, struct tessera_error *err);

#endif
