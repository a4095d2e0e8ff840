/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The durable store: one SQLite database in WAL mode, written only by
 * tesserad, committed before any reply.  The schema itself enforces the
 * ledger's invariants (a core, a memory block or a device has exactly one
 * row, so it can never be owned twice; an enclave cannot be deleted while it
 * still owns anything).
 */
#ifndef TESSERA_STORE_H
#define TESSERA_STORE_H

#include <sqlite3.h>
#include <stdbool.h>

#include "tessera/tessera.h"

#define STORE_SCHEMA_VERSION 4

struct store;

int store_open(const char *path, bool sync_full, struct store **ret, struct tessera_error *err);
void store_close(struct store *s);

/* BEGIN IMMEDIATE: the daemon is the only writer, so this never waits. */
int store_begin(struct store *s, struct tessera_error *err);
int store_commit(struct store *s, struct tessera_error *err);
void store_rollback(struct store *s);
bool store_in_transaction(struct store *s);
/*
 * A transaction that survives a crash of tesserad but not a power loss (WAL
 * without an fsync at commit), whatever `sync` says: for records of what a
 * power loss ends anyway, like application launches and exits.  The next
 * full commit makes it durable too, in order.
 */
int store_begin_light(struct store *s, struct tessera_error *err);
int store_commit_light(struct store *s, struct tessera_error *err);
void store_rollback_light(struct store *s);

/* A prepared statement, cached for the life of the store and reset for reuse. */
sqlite3_stmt *store_stmt(struct store *s, const char *sql, struct tessera_error *err);
/* Runs a cached statement with no result rows; maps constraint failures to -EBUSY. */
int store_step_done(struct store *s, sqlite3_stmt *st, struct tessera_error *err);
int store_exec(struct store *s, const char *sql, struct tessera_error *err);
int store_error(struct store *s, const char *what, struct tessera_error *err);

const char *store_meta_get(struct store *s, const char *key, char *buf, size_t n);
int store_meta_set(struct store *s, const char *key, const char *value, struct tessera_error *err);

#endif
