/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <string.h>

#include "store.h"
#include "util.h"

#define STMT_CACHE 64

struct store {
        sqlite3 *db;
        bool sync_full;
        struct {
                const char *sql; /* cached by the address of a string literal */
                sqlite3_stmt *st;
        } cache[STMT_CACHE];
        size_t n_cache;
};

/*
 * Ownership is one column per resource row: `owner` says host, free or
 * enclave, and `enclave_id` names the enclave exactly when owner is
 * 'enclave'.  The foreign keys (RESTRICT) keep an enclave row alive while it
 * owns something, so no record of an owner can vanish under its resources.
 */
static const char schema_v1[] = "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                                "CREATE TABLE enclaves("
                                "  id INTEGER PRIMARY KEY,"
                                "  name TEXT NOT NULL UNIQUE,"
                                "  type TEXT NOT NULL CHECK(type IN ('native','vm')),"
                                "  state TEXT NOT NULL CHECK(state IN ('creating','running','failed','destroying')),"
                                "  owner_uid INTEGER NOT NULL CHECK(owner_uid >= 0),"
                                "  spec TEXT NOT NULL,"
                                "  supervisor_pid INTEGER,"
                                "  supervisor_start INTEGER,"
                                "  cause TEXT,"
                                "  restarts INTEGER NOT NULL DEFAULT 0,"
                                "  created INTEGER NOT NULL);"
                                "CREATE TABLE cpus("
                                "  cpu INTEGER PRIMARY KEY,"
                                "  numa INTEGER NOT NULL,"
                                "  core INTEGER NOT NULL,"
                                "  package INTEGER NOT NULL,"
                                "  owner TEXT NOT NULL CHECK(owner IN ('host','free','enclave')),"
                                "  enclave_id INTEGER REFERENCES enclaves(id) ON DELETE RESTRICT,"
                                "  CHECK((owner = 'enclave') = (enclave_id IS NOT NULL)));"
                                "CREATE INDEX cpus_by_owner ON cpus(owner, numa, cpu);"
                                "CREATE INDEX cpus_by_enclave ON cpus(enclave_id);"
                                "CREATE TABLE blocks("
                                "  numa INTEGER NOT NULL,"
                                "  block INTEGER NOT NULL,"
                                "  owner TEXT NOT NULL CHECK(owner IN ('host','free','enclave')),"
                                "  enclave_id INTEGER REFERENCES enclaves(id) ON DELETE RESTRICT,"
                                "  PRIMARY KEY(numa, block),"
                                "  CHECK((owner = 'enclave') = (enclave_id IS NOT NULL)));"
                                "CREATE INDEX blocks_by_owner ON blocks(owner, numa, block);"
                                "CREATE INDEX blocks_by_enclave ON blocks(enclave_id);"
                                "CREATE TABLE devices("
                                "  id TEXT PRIMARY KEY,"
                                "  kind TEXT NOT NULL CHECK(kind IN ('pci','net','block','char')),"
                                "  enclave_id INTEGER NOT NULL REFERENCES enclaves(id) ON DELETE RESTRICT);"
                                "CREATE INDEX devices_by_enclave ON devices(enclave_id);";

int store_error(struct store *s, const char *what, struct tessera_error *err)
{
        int code = sqlite3_extended_errcode(s->db);
        int e = EIO;
        if ((code & 0xff) == SQLITE_CONSTRAINT)
                e = EBUSY;
        else if ((code & 0xff) == SQLITE_FULL)
                e = ENOSPC;
        else if ((code & 0xff) == SQLITE_NOMEM)
                e = ENOMEM;
        else if ((code & 0xff) == SQLITE_BUSY || (code & 0xff) == SQLITE_LOCKED)
                e = EAGAIN;
        return tessera_error_set(err, e, "store: %s: %s", what, sqlite3_errmsg(s->db));
}

int store_exec(struct store *s, const char *sql, struct tessera_error *err)
{
        if (sqlite3_exec(s->db, sql, NULL, NULL, NULL) != SQLITE_OK)
                return store_error(s, "cannot run statement", err);
        return 0;
}

/* v2: applications.  They go with their enclave (CASCADE): history of a destroyed enclave is not kept. */
static const char schema_v2[] = "CREATE TABLE apps("
                                "  id INTEGER PRIMARY KEY,"
                                "  enclave_id INTEGER NOT NULL REFERENCES enclaves(id) ON DELETE CASCADE,"
                                "  name TEXT NOT NULL,"
                                "  argv TEXT NOT NULL,"
                                "  state TEXT NOT NULL CHECK(state IN ('running','exited','lost')),"
                                "  pid INTEGER,"
                                "  ns_pid INTEGER,"
                                "  start_time INTEGER,"
                                "  started INTEGER NOT NULL,"
                                "  ended INTEGER,"
                                "  exit_code INTEGER,"
                                "  signal INTEGER,"
                                "  cpu_ns INTEGER,"
                                "  peak_memory INTEGER,"
                                "  cause TEXT,"
                                "  UNIQUE(enclave_id, name));"
                                "CREATE INDEX apps_by_state ON apps(state);";

/* v3: an application's cgroup leaf may be a prewarmed stem's, not named after it. */
static const char schema_v3[] = "ALTER TABLE apps ADD COLUMN leaf TEXT;";

/*
 * v4: XEMEM.  A segment names its exporter by pid and start time; its
 * pieces are [offset, length, fd, fd_offset, inode, prot] rows in JSON, fd
 * numbered in the exporter.  Grants (apids) and attachments go with their
 * segment.  AUTOINCREMENT: a removed segment's id is never handed out again.
 */
static const char schema_v4[] = "CREATE TABLE segments("
                                "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
                                "  name TEXT UNIQUE,"
                                "  kind TEXT NOT NULL CHECK(kind IN ('range','whole','snapshot')),"
                                "  size INTEGER NOT NULL CHECK(size > 0),"
                                "  addr INTEGER NOT NULL,"
                                "  owner_uid INTEGER NOT NULL,"
                                "  owner_gid INTEGER NOT NULL,"
                                "  mode INTEGER NOT NULL CHECK(mode BETWEEN 0 AND 511),"
                                "  writable INTEGER NOT NULL,"
                                "  enclave TEXT,"
                                "  pid INTEGER NOT NULL,"
                                "  start_time INTEGER NOT NULL,"
                                "  pieces TEXT NOT NULL,"
                                "  agent_fd INTEGER,"
                                "  agent_ino INTEGER,"
                                "  source INTEGER,"
                                "  ready INTEGER NOT NULL DEFAULT 1,"
                                "  created INTEGER NOT NULL);"
                                "CREATE INDEX segments_by_pid ON segments(pid);"
                                "CREATE TABLE grants("
                                "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
                                "  segment_id INTEGER NOT NULL REFERENCES segments(id) ON DELETE CASCADE,"
                                "  pid INTEGER NOT NULL,"
                                "  start_time INTEGER NOT NULL,"
                                "  uid INTEGER NOT NULL,"
                                "  enclave TEXT,"
                                "  writable INTEGER NOT NULL);"
                                "CREATE INDEX grants_by_pid ON grants(pid);"
                                "CREATE INDEX grants_by_segment ON grants(segment_id);"
                                "CREATE TABLE attachments("
                                "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
                                "  grant_id INTEGER NOT NULL REFERENCES grants(id) ON DELETE CASCADE,"
                                "  offset INTEGER NOT NULL,"
                                "  size INTEGER NOT NULL);"
                                "CREATE INDEX attachments_by_grant ON attachments(grant_id);";

static int store_migrate(struct store *s, struct tessera_error *err)
{
        sqlite3_stmt *st = store_stmt(s, "PRAGMA user_version", err);
        if (!st)
                return -EIO;
        int version = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
        sqlite3_reset(st);
        if (version == STORE_SCHEMA_VERSION)
                return 0;
        if (version > STORE_SCHEMA_VERSION)
                return tessera_error_set(err, EPROTO, "store schema version %d is newer than this tesserad (%d)",
                                         version, STORE_SCHEMA_VERSION);
        /* Each step is one transaction: a crash mid-migration leaves the old version intact. */
        int r = store_begin(s, err);
        if (r < 0)
                return r;
        if (version < 1) {
                r = store_exec(s, schema_v1, err);
                if (r < 0)
                        goto fail;
        }
        if (version < 2) {
                r = store_exec(s, schema_v2, err);
                if (r < 0)
                        goto fail;
        }
        if (version < 3) {
                r = store_exec(s, schema_v3, err);
                if (r < 0)
                        goto fail;
        }
        if (version < 4) {
                r = store_exec(s, schema_v4, err);
                if (r < 0)
                        goto fail;
        }
        char sql[64];
        snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", STORE_SCHEMA_VERSION);
        r = store_exec(s, sql, err);
        if (r < 0)
                goto fail;
        return store_commit(s, err);
fail:
        store_rollback(s);
        return r;
}

int store_open(const char *path, bool sync_full, struct store **ret, struct tessera_error *err)
{
        struct store *s = calloc(1, sizeof(*s));
        if (!s)
                return tessera_error_set(err, ENOMEM, "out of memory");
        /* SQLITE_OPEN_EXRESCODE and no shared cache; fds SQLite opens are CLOEXEC (unix VFS). */
        int rc = sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
        if (rc != SQLITE_OK) {
                int r = tessera_error_set(err, EIO, "cannot open store `%s`: %s", path,
                                          s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
                store_close(s);
                return r;
        }
        sqlite3_extended_result_codes(s->db, 1);
        s->sync_full = sync_full;
        char pragmas[256];
        snprintf(pragmas, sizeof(pragmas),
                 "PRAGMA journal_mode=WAL; PRAGMA foreign_keys=ON; PRAGMA synchronous=%s; PRAGMA busy_timeout=2000;",
                 sync_full ? "FULL" : "NORMAL");
        int r = store_exec(s, pragmas, err);
        if (r == 0)
                r = store_migrate(s, err);
        if (r < 0) {
                tessera_error_prefix(err, r, "store `%s`", path);
                store_close(s);
                return r;
        }
        *ret = s;
        return 0;
}

void store_close(struct store *s)
{
        if (!s)
                return;
        for (size_t i = 0; i < s->n_cache; i++)
                sqlite3_finalize(s->cache[i].st);
        sqlite3_close(s->db);
        free(s);
}

int store_begin(struct store *s, struct tessera_error *err)
{
        return store_exec(s, "BEGIN IMMEDIATE", err);
}

int store_commit(struct store *s, struct tessera_error *err)
{
        int r = store_exec(s, "COMMIT", err);
        if (r < 0)
                store_rollback(s);
        return r;
}

void store_rollback(struct store *s)
{
        if (!sqlite3_get_autocommit(s->db))
                (void)sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
}

bool store_in_transaction(struct store *s)
{
        return !sqlite3_get_autocommit(s->db);
}

sqlite3_stmt *store_stmt(struct store *s, const char *sql, struct tessera_error *err)
{
        for (size_t i = 0; i < s->n_cache; i++)
                if (s->cache[i].sql == sql) {
                        sqlite3_reset(s->cache[i].st);
                        sqlite3_clear_bindings(s->cache[i].st);
                        return s->cache[i].st;
                }
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) != SQLITE_OK) {
                store_error(s, "cannot prepare statement", err);
                return NULL;
        }
        if (s->n_cache < STMT_CACHE) {
                s->cache[s->n_cache].sql = sql;
                s->cache[s->n_cache].st = st;
                s->n_cache++;
        }
        /* a full cache only costs a leak-free re-prepare: callers never finalize */
        return st;
}

int store_step_done(struct store *s, sqlite3_stmt *st, struct tessera_error *err)
{
        int rc = sqlite3_step(st);
        sqlite3_reset(st);
        if (rc != SQLITE_DONE && rc != SQLITE_ROW)
                return store_error(s, "cannot update", err);
        return 0;
}

const char *store_meta_get(struct store *s, const char *key, char *buf, size_t n)
{
        static const char sql[] = "SELECT value FROM meta WHERE key = ?";
        sqlite3_stmt *st = store_stmt(s, sql, NULL);
        if (!st)
                return NULL;
        sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
        const char *r = NULL;
        if (sqlite3_step(st) == SQLITE_ROW) {
                snprintf(buf, n, "%s", (const char *)sqlite3_column_text(st, 0));
                r = buf;
        }
        sqlite3_reset(st);
        return r;
}

int store_meta_set(struct store *s, const char *key, const char *value, struct tessera_error *err)
{
        static const char sql[] = "INSERT INTO meta(key, value) VALUES(?, ?) "
                                  "ON CONFLICT(key) DO UPDATE SET value = excluded.value";
        sqlite3_stmt *st = store_stmt(s, sql, err);
        if (!st)
                return -EIO;
        sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, value, -1, SQLITE_STATIC);
        return store_step_done(s, st, err);
}

int store_begin_light(struct store *s, struct tessera_error *err)
{
        if (s->sync_full && store_exec(s, "PRAGMA synchronous=NORMAL", err) < 0)
                return -EIO;
        int r = store_begin(s, err);
        if (r < 0 && s->sync_full)
                (void)store_exec(s, "PRAGMA synchronous=FULL", NULL);
        return r;
}

int store_commit_light(struct store *s, struct tessera_error *err)
{
        int r = store_commit(s, err);
        store_rollback_light(s);
        return r;
}

void store_rollback_light(struct store *s)
{
        store_rollback(s);
        if (s->sync_full)
                (void)store_exec(s, "PRAGMA synchronous=FULL", NULL);
}
