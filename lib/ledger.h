/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The ledger: who owns each core, memory block and device, and the enclave
 * records, all in the store.  Every function here runs inside the caller's
 * transaction (store_begin .. store_commit): the ledger decides, the caller
 * commits once the kernel agrees.
 */
#ifndef TESSERA_LEDGER_H
#define TESSERA_LEDGER_H

#include <hwloc.h>
#include <jansson.h>
#include <stdint.h>
#include <sys/types.h>

#include "store.h"
#include "topology.h"

struct enclave_record {
        int64_t id;
        char name[64];
        char type[8];   /* native | vm */
        char state[16]; /* creating | running | failed | destroying */
        uid_t owner_uid;
        char *spec; /* JSON text */
        pid_t supervisor_pid;
        uint64_t supervisor_start;
        char cause[256];
        int restarts;
        int64_t created;
};
void enclave_record_done(struct enclave_record *r);

struct ledger_host {
        hwloc_bitmap_t cpus; /* kept for the host */
        uint64_t *memory;    /* bytes kept on each NUMA node, indexed like topo->numa */
        uint64_t block_size;
};

/*
 * Makes the resource rows match the topology and the host reserve.  Rows
 * owned by enclaves are never taken back; a host reserve that now covers one
 * is reported in `warnings` (a JSON array of strings).
 */
int ledger_init(struct store *s, const struct tessera_topology *t, const struct ledger_host *host, json_t *warnings,
                struct tessera_error *err);

int ledger_enclave_insert(struct store *s, const char *name, const char *type, uid_t owner, const char *spec,
                          int64_t *ret_id, struct tessera_error *err);
/* -ENOENT with "no enclave named 'x'" when absent. */
int ledger_enclave_get(struct store *s, const char *name, struct enclave_record *ret, struct tessera_error *err);
/* The name of enclave `id` into ret; -ENOENT when there is none. */
int ledger_enclave_name(struct store *s, int64_t id, char *ret, size_t n);
int ledger_enclave_list(struct store *s, struct enclave_record **ret, size_t *n, struct tessera_error *err);
void enclave_records_free(struct enclave_record *r, size_t n);
int ledger_enclave_set_state(struct store *s, int64_t id, const char *state, const char *cause,
                             struct tessera_error *err);
int ledger_enclave_set_supervisor(struct store *s, int64_t id, pid_t pid, uint64_t start, struct tessera_error *err);
int ledger_enclave_count_restart(struct store *s, int64_t id, struct tessera_error *err);
/* Refused by the store while the enclave still owns anything. */
int ledger_enclave_delete(struct store *s, int64_t id, struct tessera_error *err);

/* Cores.  Errors name the field "cpus" and the owner of a taken core. */
int ledger_cpus_take_list(struct store *s, int64_t id, hwloc_const_bitmap_t cpus, struct tessera_error *err);
/* Picks n free cores: on `only_numa` if given, else near the enclave's own cores, else best fit. */
int ledger_cpus_take_count(struct store *s, int64_t id, unsigned n, hwloc_const_bitmap_t only_numa,
                           hwloc_bitmap_t ret_taken, struct tessera_error *err);
int ledger_cpus_give_back(struct store *s, int64_t id, hwloc_const_bitmap_t cpus, struct tessera_error *err);
/* Gives back n of the enclave's cores, the highest-numbered first. */
int ledger_cpus_give_back_count(struct store *s, int64_t id, unsigned n, hwloc_bitmap_t ret_given,
                                struct tessera_error *err);
int ledger_cpus_of(struct store *s, int64_t id, hwloc_bitmap_t ret, struct tessera_error *err);

/* Memory blocks.  `numa` -1: any node, preferring `prefer` then the enclave's cores' nodes. */
int ledger_blocks_take(struct store *s, int64_t id, unsigned n, int numa, hwloc_const_bitmap_t only_numa,
                       struct tessera_error *err);
int ledger_blocks_give_back(struct store *s, int64_t id, unsigned n, int numa, struct tessera_error *err);
/* Count of blocks and the set of nodes they are on. */
int ledger_blocks_of(struct store *s, int64_t id, unsigned *ret_count, hwloc_bitmap_t ret_nodes,
                     struct tessera_error *err);

int ledger_device_take(struct store *s, int64_t id, const char *dev, const char *kind, struct tessera_error *err);
int ledger_device_give_back(struct store *s, int64_t id, const char *dev, struct tessera_error *err);
/* JSON array of {"id","kind"} the enclave owns. */
int ledger_devices_of(struct store *s, int64_t id, json_t **ret, struct tessera_error *err);
/* Frees every core, block and device of the enclave. */
int ledger_give_back_all(struct store *s, int64_t id, struct tessera_error *err);

/*
 * Listings.  viewer_uid 0 sees every owner; a tenant sees its own enclaves by
 * name and every other enclave as "other".
 */
json_t *ledger_cpus_json(struct store *s, uid_t viewer, struct tessera_error *err);
json_t *ledger_memory_json(struct store *s, const struct tessera_topology *t, const struct ledger_host *host,
                           uid_t viewer, struct tessera_error *err);
/* Owner of a device id as seen by `viewer`: "free", "host" is decided by the caller. */
int ledger_device_owner(struct store *s, const char *dev, uid_t viewer, char *ret, size_t n, struct tessera_error *err);
/* Totals for `node`: counts of cores and blocks by owner class. */
int ledger_counts(struct store *s, unsigned *cpus_host, unsigned *cpus_free, unsigned *cpus_enclaves,
                  unsigned *blocks_host, unsigned *blocks_free, unsigned *blocks_enclaves, struct tessera_error *err);
int ledger_free_blocks_on(struct store *s, unsigned numa, unsigned *ret, struct tessera_error *err);

/* Self-check of the invariants the schema cannot express; appends problems to `problems`. */
int ledger_check(struct store *s, json_t *problems, struct tessera_error *err);

#endif
