/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * What tesserad holds, shared by the parts that act on it (enclave.c for
 * enclaves, app.c for applications).  Internal to libtessera.
 */
#ifndef TESSERA_NODE_H
#define TESSERA_NODE_H

#include <limits.h>

#include "cgroup.h"
#include "config.h"
#include "enclave.h"
#include "ledger.h"
#include "spec.h"
#include "store.h"
#include "topology.h"
#include "util.h"

struct watch {
        enum watch_kind kind;
        int64_t id; /* enclave id or app id */
        int pidfd;
};

/* A child the supervisor forked ahead of time, moved into its own leaf in the background (app.c). */
struct stem {
        int64_t enclave_id;
        char name[32]; /* its record in the supervisor and its cgroup leaf: "stem-N" */
        int pidfd;
        uint64_t job; /* the mover's job while it is being moved */
        bool ready;
};

struct mover;

struct tessera_node {
        struct tessera_config cfg;
        struct tessera_topology *topo;
        struct tessera_cgroup *cg; /* NULL: ledger-only */
        struct store *store;
        struct ledger_host host;
        char run_dir[PATH_MAX];
        char log_dir[PATH_MAX];
        bool exclusive_cpus;      /* the root group could be confined to the enclaves' pool */
        char root_disk[PATH_MAX]; /* sysfs path of the block device holding /, or "" */
        struct node_watcher watcher;
        struct watch *watches;
        size_t n_watches, cap_watches;
        struct mover *mover; /* NULL: moves happen inline (ledger-only has none) */
        struct stem *stems;
        size_t n_stems, cap_stems;
        uint64_t stem_seq; /* seeded from the clock: a restarted daemon never reuses a name a running app's leaf has */
        uint64_t next_job;
};

/* Everything about one enclave an operation needs: its record and its parsed spec. */
struct enclave {
        struct enclave_record rec;
        struct tessera_spec spec;
        char root_path[PATH_MAX]; /* where its root image is mounted, once prepared */
};

static inline void enclave_done(struct enclave *e)
{
        enclave_record_done(&e->rec);
        spec_done(&e->spec);
}
#define _cleanup_enclave_ _cleanup_(enclave_done)

/* Loads an enclave the caller may see: root sees all, a tenant only its own (-ENOENT otherwise). */
int enclave_load(struct tessera_node *n, uid_t caller, const char *name, struct enclave *e, struct tessera_error *err);

int node_watch_add(struct tessera_node *n, enum watch_kind kind, int64_t id, int pidfd);
int node_watch_find(struct tessera_node *n, enum watch_kind kind, int64_t id);
void node_watch_remove(struct tessera_node *n, enum watch_kind kind, int64_t id);

void node_sock_path(struct tessera_node *n, const char *name, char *buf, size_t len);
/* One request to an enclave's supervisor, bounded in time; descriptors both ways. */
int supervisor_call_fds(struct tessera_node *n, const char *name, json_t *req, const int *fds_in, size_t n_in,
                        json_t **ret, int *fds_out, size_t *n_out, struct tessera_error *err);
int supervisor_call(struct tessera_node *n, const char *name, json_t *req, json_t **ret, struct tessera_error *err);

/* Applications (app.c): re-attached after the enclave's supervisor is, on reconcile. */
int apps_reconcile(struct tessera_node *n, struct enclave *e, json_t *log, struct tessera_error *err);
/* The enclave's prewarmed stems are gone with it. */
void app_pool_drop(struct tessera_node *n, int64_t enclave_id);

#endif
