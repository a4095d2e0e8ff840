/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "ledger.h"
#include "util.h"

#define MAX_NUMA 1024

void enclave_record_done(struct enclave_record *r)
{
        if (r) {
                free(r->spec);
                r->spec = NULL;
        }
}

void enclave_records_free(struct enclave_record *r, size_t n)
{
        for (size_t i = 0; i < n; i++)
                enclave_record_done(&r[i]);
        free(r);
}

static const char *col_text(sqlite3_stmt *st, int i)
{
        const unsigned char *t = sqlite3_column_text(st, i);
        return t ? (const char *)t : "";
}

/* ---- initialisation: rows follow the topology and the host reserve ---- */

static int init_cpus(struct store *s, const struct tessera_topology *t, hwloc_const_bitmap_t host, json_t *warnings,
                     struct tessera_error *err)
{
        static const char insert[] = "INSERT INTO cpus(cpu, numa, core, package, owner) VALUES(?, ?, ?, ?, ?) "
                                     "ON CONFLICT(cpu) DO UPDATE SET numa = excluded.numa, core = excluded.core, "
                                     "package = excluded.package, owner = CASE WHEN owner = 'enclave' THEN owner "
                                     "ELSE excluded.owner END";
        static const char owned[] = "SELECT e.name FROM cpus c JOIN enclaves e ON c.enclave_id = e.id WHERE c.cpu = ?";
        for (size_t i = 0; i < t->n_cpus; i++) {
                const struct topo_cpu *c = &t->cpus[i];
                bool is_host = hwloc_bitmap_isset(host, c->os_index);
                sqlite3_stmt *st = store_stmt(s, insert, err);
                if (!st)
                        return -EIO;
                sqlite3_bind_int(st, 1, (int)c->os_index);
                sqlite3_bind_int(st, 2, c->numa);
                sqlite3_bind_int(st, 3, c->core);
                sqlite3_bind_int(st, 4, c->package);
                sqlite3_bind_text(st, 5, is_host ? "host" : "free", -1, SQLITE_STATIC);
                int r = store_step_done(s, st, err);
                if (r < 0)
                        return r;
                if (!is_host)
                        continue;
                st = store_stmt(s, owned, err);
                if (!st)
                        return -EIO;
                sqlite3_bind_int(st, 1, (int)c->os_index);
                if (sqlite3_step(st) == SQLITE_ROW)
                        json_array_append_new(warnings,
                                              json_sprintf("core %u is in the host reserve but owned by enclave '%s'; "
                                                           "it stays with the enclave",
                                                           c->os_index, col_text(st, 0)));
                sqlite3_reset(st);
        }
        return 0;
}

static int init_blocks(struct store *s, const struct tessera_topology *t, const struct ledger_host *host,
                       json_t *warnings, struct tessera_error *err)
{
        static const char insert[] = "INSERT INTO blocks(numa, block, owner) VALUES(?, ?, 'free') "
                                     "ON CONFLICT(numa, block) DO NOTHING";
        static const char mark[] = "UPDATE blocks SET owner = CASE WHEN block < ? THEN 'host' ELSE 'free' END "
                                   "WHERE numa = ? AND owner != 'enclave'";
        static const char extra[] = "DELETE FROM blocks WHERE numa = ? AND block >= ? AND owner != 'enclave'";
        for (size_t i = 0; i < t->n_numa; i++) {
                const struct topo_numa *nd = &t->numa[i];
                uint64_t total = nd->bytes / host->block_size;
                uint64_t reserve = (host->memory[i] + host->block_size - 1) / host->block_size;
                if (reserve > total)
                        reserve = total;
                for (uint64_t b = 0; b < total; b++) {
                        sqlite3_stmt *st = store_stmt(s, insert, err);
                        if (!st)
                                return -EIO;
                        sqlite3_bind_int(st, 1, (int)nd->os_index);
                        sqlite3_bind_int64(st, 2, (sqlite3_int64)b);
                        int r = store_step_done(s, st, err);
                        if (r < 0)
                                return r;
                }
                sqlite3_stmt *st = store_stmt(s, mark, err);
                if (!st)
                        return -EIO;
                sqlite3_bind_int64(st, 1, (sqlite3_int64)reserve);
                sqlite3_bind_int(st, 2, (int)nd->os_index);
                int r = store_step_done(s, st, err);
                if (r < 0)
                        return r;
                st = store_stmt(s, extra, err);
                if (!st)
                        return -EIO;
                sqlite3_bind_int(st, 1, (int)nd->os_index);
                sqlite3_bind_int64(st, 2, (sqlite3_int64)total);
                r = store_step_done(s, st, err);
                if (r < 0)
                        return r;
        }
        (void)warnings;
        return 0;
}

int ledger_init(struct store *s, const struct tessera_topology *t, const struct ledger_host *host, json_t *warnings,
                struct tessera_error *err)
{
        char buf[64], want[32];
        snprintf(want, sizeof(want), "%llu", (unsigned long long)host->block_size);
        const char *have = store_meta_get(s, "block_size", buf, sizeof(buf));
        if (have && !STREQ(have, want)) {
                sqlite3_stmt *st = store_stmt(s, "SELECT COUNT(*) FROM blocks WHERE owner = 'enclave'", err);
                if (!st)
                        return -EIO;
                int owned = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
                sqlite3_reset(st);
                if (owned > 0)
                        return tessera_error_field(err, EBUSY, "block_size",
                                                   "block_size: the store was made with %s-byte blocks and enclaves "
                                                   "hold %d of them; keep block_size %s or destroy them first",
                                                   have, owned, have);
                int r = store_exec(s, "DELETE FROM blocks", err);
                if (r < 0)
                        return r;
        }
        int r = store_meta_set(s, "block_size", want, err);
        if (r < 0)
                return r;
        r = init_cpus(s, t, host->cpus, warnings, err);
        if (r < 0)
                return r;
        return init_blocks(s, t, host, warnings, err);
}

/* ---- enclave records ---- */

int ledger_enclave_insert(struct store *s, const char *name, const char *type, uid_t owner, const char *spec,
                          int64_t *ret_id, struct tessera_error *err)
{
        static const char sql[] = "INSERT INTO enclaves(name, type, state, owner_uid, spec, created) "
                                  "VALUES(?, ?, 'creating', ?, ?, ?)";
        sqlite3_stmt *st = store_stmt(s, sql, err);
        if (!st)
                return -EIO;
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, type, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, owner);
        sqlite3_bind_text(st, 4, spec, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 5, (sqlite3_int64)time(NULL));
        int rc = sqlite3_step(st);
        sqlite3_reset(st);
        if (rc == SQLITE_CONSTRAINT_UNIQUE)
                return tessera_error_field(err, EEXIST, "name", "name: an enclave named '%s' exists already", name);
        if (rc != SQLITE_DONE)
                return store_error(s, "cannot record the enclave", err);
        *ret_id = sqlite3_last_insert_rowid(sqlite3_db_handle(st));
        return 0;
}

#define RECORD_COLUMNS                                                                                                 \
        "id, name, type, state, owner_uid, spec, supervisor_pid, supervisor_start, cause, restarts, created"

static void record_from_row(sqlite3_stmt *st, struct enclave_record *r)
{
        memset(r, 0, sizeof(*r));
        r->id = sqlite3_column_int64(st, 0);
        snprintf(r->name, sizeof(r->name), "%s", col_text(st, 1));
        snprintf(r->type, sizeof(r->type), "%s", col_text(st, 2));
        snprintf(r->state, sizeof(r->state), "%s", col_text(st, 3));
        r->owner_uid = (uid_t)sqlite3_column_int64(st, 4);
        r->spec = strdup(col_text(st, 5));
        r->supervisor_pid = (pid_t)sqlite3_column_int64(st, 6);
        r->supervisor_start = (uint64_t)sqlite3_column_int64(st, 7);
        snprintf(r->cause, sizeof(r->cause), "%s", col_text(st, 8));
        r->restarts = sqlite3_column_int(st, 9);
        r->created = sqlite3_column_int64(st, 10);
}

int ledger_enclave_get(struct store *s, const char *name, struct enclave_record *ret, struct tessera_error *err)
{
        static const char sql[] = "SELECT " RECORD_COLUMNS " FROM enclaves WHERE name = ?";
        sqlite3_stmt *st = store_stmt(s, sql, err);
        if (!st)
                return -EIO;
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
                record_from_row(st, ret);
        sqlite3_reset(st);
        if (rc == SQLITE_DONE)
                return tessera_error_field(err, ENOENT, "name", "no enclave named '%s'", name);
        if (rc != SQLITE_ROW)
                return store_error(s, "cannot read enclave", err);
        if (!ret->spec)
                return tessera_error_set(err, ENOMEM, "out of memory");
        return 0;
}

int ledger_enclave_list(struct store *s, struct enclave_record **ret, size_t *n, struct tessera_error *err)
{
        static const char sql[] = "SELECT " RECORD_COLUMNS " FROM enclaves ORDER BY name";
        sqlite3_stmt *st = store_stmt(s, sql, err);
        if (!st)
                return -EIO;
        struct enclave_record *v = NULL;
        size_t count = 0, cap = 0;
        int rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                if (count == cap) {
                        cap = cap ? cap * 2 : 16;
                        struct enclave_record *nv = realloc(v, cap * sizeof(*v));
                        if (!nv) {
                                sqlite3_reset(st);
                                enclave_records_free(v, count);
                                return tessera_error_set(err, ENOMEM, "out of memory");
                        }
                        v = nv;
                }
                record_from_row(st, &v[count++]);
        }
        sqlite3_reset(st);
        if (rc != SQLITE_DONE) {
                enclave_records_free(v, count);
                return store_error(s, "cannot list enclaves", err);
        }
        *ret = v;
        *n = count;
        return 0;
}

int ledger_enclave_set_state(struct store *s, int64_t id, const char *state, const char *cause,
                             struct tessera_error *err)
{
        static const char sql[] = "UPDATE enclaves SET state = ?, cause = ? WHERE id = ?";
        sqlite3_stmt *st = store_stmt(s, sql, err);
        if (!st)
                return -EIO;
        sqlite3_bind_text(st, 1, state, -1, SQLITE_STATIC);
        if (cause && *cause)
                sqlite3_bind_text(st, 2, cause, -1, SQLITE_STATIC);
        else
                sqlite3_bind_null(st, 2);
        sqlite3_bind_int64(st, 3, id);
        return store_step_done(s, st, err);
}

int ledger_enclave_name(struct store *s, int64_t id, char *ret, size_t n)
{
        static const char sql[] = "SELECT name FROM enclaves WHERE id = ?";
        sqlite3_stmt *st = store_stmt(s, sql, NULL);
        if (!st)
                return -EIO;
        sqlite3_bind_int64(st, 1, id);
        int r = -ENOENT;
        if (sqlite3_step(st) == SQLITE_ROW) {
                snprintf(ret, n, "%s", col_text(st, 0));
                r = 0;
        }
        sqlite3_reset(st);
        return r;
}

int ledger_enclave_set_supervisor(struct store *s, int64_t id, pid_t pid, uint64_t start, struct tessera_error *err)
{
        static const char sql[] = "UPDATE enclaves SET supervisor_pid = ?, supervisor_start = ? WHERE id = ?";
        sqlite3_stmt *st = store_stmt(s, sql, err);
        if (!st)
                return -EIO;
        sqlite3_bind_int64(st, 1, pid);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)start);
        sqlite3_bind_int64(st, 3, id);
        return store_step_done(s, st, err);
}

int ledger_enclave_count_restart(struct store *s, int64_t id, struct tessera_error *err)
{
        static const char sql[] = "UPDATE enclaves SET restarts = restarts + 1 WHERE id = ?";
        sqlite3_stmt *st = store_stmt(s, sql, err);
        if (!st)
                return -EIO;
        sqlite3_bind_int64(st, 1, id);
        return store_step_done(s, st, err);
}

int ledger_enclave_delete(struct store *s, int64_t id, struct tessera_error *err)
{
        static const char sql[] = "DELETE FROM enclaves WHERE id = ?";
        sqlite3_stmt *st = store_stmt(s, sql, err);
        if (!st)
                return -EIO;
        sqlite3_bind_int64(st, 1, id);
        int r = store_step_done(s, st, err);
        if (r == -EBUSY)
                return tessera_error_set(err, EBUSY, "enclave still owns resources; release them first");
        return r;
}

/* ---- cores ---- */

/* Describes who holds a core for an error message: "kept for the host", "owned by enclave 'x'". */
static int cpu_holder(struct store *s, unsigned cpu, char *buf, size_t n, bool *is_free, struct tessera_error *err)
{
        static const char sql[] = "SELECT c.owner, e.name FROM cpus c LEFT JOIN enclaves e ON c.enclave_id = e.id "
                                  "WHERE c.cpu = ?";
        sqlite3_stmt *st = store_stmt(s, sql, err);
        if (!st)
                return -EIO;
        sqlite3_bind_int(st, 1, (int)cpu);
        int rc = sqlite3_step(st);
        *is_free = false;
        if (rc != SQLITE_ROW) {
                sqlite3_reset(st);
                return -ENOENT;
        }
        const char *owner = col_text(st, 0);
        if (STREQ(owner, "free"))
                *is_free = true;
        else if (STREQ(owner, "host"))
                snprintf(buf, n, "kept for the host");
        else
                snprintf(buf, n, "owned by enclave '%s'", col_text(st, 1));
        sqlite3_reset(st);
        return 0;
}

static int take_cpu(struct store *s, int64_t id, unsigned cpu, struct tessera_error *err)
{
        static const char sql[] = "UPDATE cpus SET owner = 'enclave', enclave_id = ? WHERE cpu = ? AND owner = 'free'";
        sqlite3_stmt *st = store_stmt(s, sql, err);
        if (!st)
                return -EIO;
        sqlite3_bind_int64(st, 1, id);
        sqlite3_bind_int(st, 2, (int)cpu);
        int r = store_step_done(s, st, err);
        if (r < 0)
                return r;
        if (sqlite3_changes(sqlite3_db_handle(st)) != 1)
                return tessera_error_field(err, EBUSY, "cpus", "cpus: core %u is not free", cpu);
        return 0;
}

static int count_cpus(struct store *s, unsigned *ret, struct tessera_error *err)
{
        sqlite3_stmt *st = store_stmt(s, "SELECT COUNT(*), MAX(cpu) FROM cpus", err);
        if (!st)
                return -EIO;
        *ret = sqlite3_step(st) == SQLITE_ROW ? (unsigned)sqlite3_column_int(st, 0) : 0;
        sqlite3_reset(st);
        return 0;
}

int ledger_cpus_take_list(struct store *s, int64_t id, hwloc_const_bitmap_t cpus, struct tessera_error *err)
{
        int cpu;
        hwloc_bitmap_foreach_begin(cpu, cpus)
        {
                char holder[128];
                bool is_free;
                int r = cpu_holder(s, (unsigned)cpu, holder, sizeof(holder), &is_free, err);
                if (r == -ENOENT) {
                        unsigned total = 0;
                        count_cpus(s, &total, NULL);
                        return tessera_error_field(err, EINVAL, "cpus",
                                                   "cpus: core %d does not exist (this node has %u cores)", cpu, total);
                }
                if (r < 0)
                        return r;
                if (!is_free)
                        return tessera_error_field(err, EBUSY, "cpus", "cpus: core %d is %s", cpu, holder);
                r = take_cpu(s, id, (unsigned)cpu, err);
                if (r < 0)
                        return r;
        }
        hwloc_bitmap_foreach_end();
        return 0;
}

struct node_free {
        int numa;
        unsigned n_free;
        bool preferred;
};

/* Free cores (or blocks) per NUMA node, from the owner index. */
static int free_per_node(struct store *s, const char *sql, struct node_free *v, size_t cap, size_t *n,
                         struct tessera_error *err)
{
        sqlite3_stmt *st = store_stmt(s, sql, err);
        if (!st)
                return -EIO;
        *n = 0;
        while (sqlite3_step(st) == SQLITE_ROW && *n < cap) {
                v[*n].numa = sqlite3_column_int(st, 0);
                v[*n].n_free = (unsigned)sqlite3_column_int(st, 1);
                v[*n].preferred = false;
                (*n)++;
        }
        sqlite3_reset(st);
        return 0;
}

/*
 * Orders candidate nodes: preferred ones first; among equals, the smallest
 * node that fits the whole request (best fit keeps big holes for big
 * enclaves), then the ones with the most free units.
 */
static unsigned want_for_sort;
static int node_cmp(const void *a, const void *b)
{
        const struct node_free *x = a, *y = b;
        if (x->preferred != y->preferred)
                return x->preferred ? -1 : 1;
        bool xf = x->n_free >= want_for_sort, yf = y->n_free >= want_for_sort;
        if (xf != yf)
                return xf ? -1 : 1;
        if (xf && x->n_free != y->n_free)
                return x->n_free < y->n_free ? -1 : 1;
        if (x->n_free != y->n_free)
                return x->n_free > y->n_free ? -1 : 1;
        return x->numa - y->numa;
}

static void order_nodes(struct node_free *v, size_t n, unsigned want, hwloc_const_bitmap_t preferred)
{
        for (size_t i = 0; i < n; i++)
                v[i].preferred = preferred && hwloc_bitmap_isset(preferred, (unsigned)v[i].numa);
        want_for_sort = want;
        qsort(v, n, sizeof(*v), node_cmp);
}

/* The first column of `sql`'s rows for enclave `id`, as a set. */
static int enclave_set(struct store *s, const char *sql, int64_t id, hwloc_bitmap_t ret, struct tessera_error *err)
{
        sqlite3_stmt *st = store_stmt(s, sql, err);
        if (!st)
                return -EIO;
        sqlite3_bind_int64(st, 1, id);
        hwloc_bitmap_zero(ret);
        while (sqlite3_step(st) == SQLITE_ROW)
                hwloc_bitmap_set(ret, (unsigned)sqlite3_column_int(st, 0));
        sqlite3_reset(st);
        return 0;
}

static int nodes_of_enclave_cpus(struct store *s, int64_t id, hwloc_bitmap_t ret, struct tessera_error *err)
{
        static const char sql[] = "SELECT DISTINCT numa FROM cpus WHERE enclave_id = ?";
        return enclave_set(s, sql, id, ret, err);
}

int ledger_cpus_take_count(struct store *s, int64_t id, unsigned n, hwloc_const_bitmap_t only_numa,
                           hwloc_bitmap_t ret_taken, struct tessera_error *err)
{
        static const char per_node[] = "SELECT numa, COUNT(*) FROM cpus WHERE owner = 'free' GROUP BY numa";
        static const char pick[] = "SELECT cpu FROM cpus WHERE owner = 'free' AND numa = ? ORDER BY cpu LIMIT ?";
        struct node_free nodes[MAX_NUMA];
        size_t n_nodes;
        int r = free_per_node(s, per_node, nodes, MAX_NUMA, &n_nodes, err);
        if (r < 0)
                return r;
        unsigned avail = 0, avail_all = 0;
        for (size_t i = 0; i < n_nodes; i++) {
                avail_all += nodes[i].n_free;
                if (!only_numa || hwloc_bitmap_isset(only_numa, (unsigned)nodes[i].numa))
                        avail += nodes[i].n_free;
        }
        if (avail < n) {
                if (only_numa && avail_all >= n) {
                        _cleanup_free_ char *list = NULL;
                        hwloc_bitmap_list_asprintf(&list, only_numa);
                        return tessera_error_field(err, ENOSPC, "cpus",
                                                   "cpus: %u cores asked on NUMA node %s, %u free there (%u free on "
                                                   "the node)",
                                                   n, list ? list : "?", avail, avail_all);
                }
                return tessera_error_field(err, ENOSPC, "cpus", "cpus: %u cores asked, %u free", n, avail_all);
        }
        hwloc_bitmap_t near = hwloc_bitmap_alloc();
        if (!near)
                return tessera_error_set(err, ENOMEM, "out of memory");
        r = nodes_of_enclave_cpus(s, id, near, err);
        if (r < 0) {
                hwloc_bitmap_free(near);
                return r;
        }
        order_nodes(nodes, n_nodes, n, hwloc_bitmap_iszero(near) ? NULL : near);
        hwloc_bitmap_free(near);
        if (ret_taken)
                hwloc_bitmap_zero(ret_taken);
        unsigned left = n;
        for (size_t i = 0; i < n_nodes && left > 0; i++) {
                if (only_numa && !hwloc_bitmap_isset(only_numa, (unsigned)nodes[i].numa))
                        continue;
                sqlite3_stmt *st = store_stmt(s, pick, err);
                if (!st)
                        return -EIO;
                sqlite3_bind_int(st, 1, nodes[i].numa);
                sqlite3_bind_int(st, 2, (int)left);
                unsigned picked[256], n_picked = 0;
                while (sqlite3_step(st) == SQLITE_ROW && n_picked < ELEMENTSOF(picked))
                        picked[n_picked++] = (unsigned)sqlite3_column_int(st, 0);
                sqlite3_reset(st);
                for (unsigned k = 0; k < n_picked; k++) {
                        r = take_cpu(s, id, picked[k], err);
                        if (r < 0)
                                return r;
                        if (ret_taken)
                                hwloc_bitmap_set(ret_taken, picked[k]);
                        left--;
                }
        }
        if (left > 0)
                return tessera_error_field(err, ENOSPC, "cpus", "cpus: %u cores asked, only %u could be taken", n,
                                           n - left);
        return 0;
}

int ledger_cpus_give_back(struct store *s, int64_t id, hwloc_const_bitmap_t cpus, struct tessera_error *err)
{
        static const char sql[] = "UPDATE cpus SET owner = 'free', enclave_id = NULL WHERE cpu = ? AND enclave_id = ?";
        int cpu;
        hwloc_bitmap_foreach_begin(cpu, cpus)
        {
                sqlite3_stmt *st = store_stmt(s, sql, err);
                if (!st)
                        return -EIO;
                sqlite3_bind_int(st, 1, cpu);
                sqlite3_bind_int64(st, 2, id);
                int r = store_step_done(s, st, err);
                if (r < 0)
                        return r;
                if (sqlite3_changes(sqlite3_db_handle(st)) != 1)
                        return tessera_error_field(err, EINVAL, "cpus", "cpus: core %d does not belong to this enclave",
                                                   cpu);
        }
        hwloc_bitmap_foreach_end();
        return 0;
}

int ledger_cpus_of(struct store *s, int64_t id, hwloc_bitmap_t ret, struct tessera_error *err)
{
        static const char sql[] = "SELECT cpu FROM cpus WHERE enclave_id = ?";
        return enclave_set(s, sql, id, ret, err);
}

int ledger_cpus_give_back_count(struct store *s, int64_t id, unsigned n, hwloc_bitmap_t ret_given,
                                struct tessera_error *err)
{
        hwloc_bitmap_t mine = hwloc_bitmap_alloc();
        if (!mine)
                return tessera_error_set(err, ENOMEM, "out of memory");
        int r = ledger_cpus_of(s, id, mine, err);
        int have = hwloc_bitmap_weight(mine);
        if (r == 0 && (unsigned)have < n)
                r = tessera_error_field(err, EINVAL, "cpus", "cpus: %u cores to release, the enclave has %d", n, have);
        hwloc_bitmap_zero(ret_given);
        for (unsigned k = 0; r == 0 && k < n; k++) {
                int last = hwloc_bitmap_last(mine);
                hwloc_bitmap_clr(mine, (unsigned)last);
                hwloc_bitmap_set(ret_given, (unsigned)last);
        }
        hwloc_bitmap_free(mine);
        if (r < 0)
                return r;
        return ledger_cpus_give_back(s, id, ret_given, err);
}

/* ---- memory blocks ---- */

int ledger_blocks_take(struct store *s, int64_t id, unsigned n, int numa, hwloc_const_bitmap_t only_numa,
                       struct tessera_error *err)
{
        static const char per_node[] = "SELECT numa, COUNT(*) FROM blocks WHERE owner = 'free' GROUP BY numa";
        static const char take[] = "UPDATE blocks SET owner = 'enclave', enclave_id = ?1 WHERE rowid IN "
                                   "(SELECT rowid FROM blocks WHERE owner = 'free' AND numa = ?2 ORDER BY block "
                                   "LIMIT ?3)";
        struct node_free nodes[MAX_NUMA];
        size_t n_nodes;
        int r = free_per_node(s, per_node, nodes, MAX_NUMA, &n_nodes, err);
        if (r < 0)
                return r;
        unsigned avail = 0, avail_all = 0;
        for (size_t i = 0; i < n_nodes; i++) {
                bool allowed = numa >= 0 ? nodes[i].numa == numa
                                         : (!only_numa || hwloc_bitmap_isset(only_numa, (unsigned)nodes[i].numa));
                avail_all += nodes[i].n_free;
                if (allowed)
                        avail += nodes[i].n_free;
        }
        if (avail < n) {
                if (numa >= 0)
                        return tessera_error_field(err, ENOSPC, "memory",
                                                   "memory: %u blocks asked on NUMA node %d, %u free there", n, numa,
                                                   avail);
                return tessera_error_field(err, ENOSPC, "memory", "memory: %u blocks asked, %u free%s", n, avail,
                                           avail != avail_all ? " on the enclave's NUMA nodes" : "");
        }
        hwloc_bitmap_t near = hwloc_bitmap_alloc();
        if (!near)
                return tessera_error_set(err, ENOMEM, "out of memory");
        r = nodes_of_enclave_cpus(s, id, near, err);
        if (r == 0)
                order_nodes(nodes, n_nodes, n, hwloc_bitmap_iszero(near) ? NULL : near);
        hwloc_bitmap_free(near);
        if (r < 0)
                return r;
        unsigned left = n;
        for (size_t i = 0; i < n_nodes && left > 0; i++) {
                bool allowed = numa >= 0 ? nodes[i].numa == numa
                                         : (!only_numa || hwloc_bitmap_isset(only_numa, (unsigned)nodes[i].numa));
                if (!allowed)
                        continue;
                sqlite3_stmt *st = store_stmt(s, take, err);
                if (!st)
                        return -EIO;
                sqlite3_bind_int64(st, 1, id);
                sqlite3_bind_int(st, 2, nodes[i].numa);
                sqlite3_bind_int(st, 3, (int)left);
                r = store_step_done(s, st, err);
                if (r < 0)
                        return r;
                left -= (unsigned)sqlite3_changes(sqlite3_db_handle(st));
        }
        if (left > 0)
                return tessera_error_field(err, ENOSPC, "memory", "memory: %u blocks asked, only %u could be taken", n,
                                           n - left);
        return 0;
}

int ledger_blocks_give_back(struct store *s, int64_t id, unsigned n, int numa, struct tessera_error *err)
{
        static const char any[] = "UPDATE blocks SET owner = 'free', enclave_id = NULL WHERE rowid IN "
                                  "(SELECT rowid FROM blocks WHERE enclave_id = ?1 ORDER BY numa DESC, block DESC "
                                  "LIMIT ?2)";
        static const char on_node[] = "UPDATE blocks SET owner = 'free', enclave_id = NULL WHERE rowid IN "
                                      "(SELECT rowid FROM blocks WHERE enclave_id = ?1 AND numa = ?3 ORDER BY block "
                                      "DESC LIMIT ?2)";
        sqlite3_stmt *st = store_stmt(s, numa >= 0 ? on_node : any, err);
        if (!st)
                return -EIO;
        sqlite3_bind_int64(st, 1, id);
        sqlite3_bind_int(st, 2, (int)n);
        if (numa >= 0)
                sqlite3_bind_int(st, 3, numa);
        int r = store_step_done(s, st, err);
        if (r < 0)
                return r;
        unsigned done = (unsigned)sqlite3_changes(sqlite3_db_handle(st));
        if (done != n) {
                if (numa >= 0)
                        return tessera_error_field(err, EINVAL, "memory",
                                                   "memory: %u blocks to release on NUMA node %d, the enclave has %u "
                                                   "there",
                                                   n, numa, done);
                return tessera_error_field(err, EINVAL, "memory", "memory: %u blocks to release, the enclave has %u", n,
                                           done);
        }
        return 0;
}

int ledger_blocks_of(struct store *s, int64_t id, unsigned *ret_count, hwloc_bitmap_t ret_nodes,
                     struct tessera_error *err)
{
        static const char sql[] = "SELECT numa, COUNT(*) FROM blocks WHERE enclave_id = ? GROUP BY numa";
        sqlite3_stmt *st = store_stmt(s, sql, err);
        if (!st)
                return -EIO;
        sqlite3_bind_int64(st, 1, id);
        *ret_count = 0;
        if (ret_nodes)
                hwloc_bitmap_zero(ret_nodes);
        while (sqlite3_step(st) == SQLITE_ROW) {
                if (ret_nodes)
                        hwloc_bitmap_set(ret_nodes, (unsigned)sqlite3_column_int(st, 0));
                *ret_count += (unsigned)sqlite3_column_int(st, 1);
        }
        sqlite3_reset(st);
        return 0;
}

/* ---- devices ---- */

int ledger_device_take(struct store *s, int64_t id, const char *dev, const char *kind, struct tessera_error *err)
{
        static const char sql[] = "INSERT INTO devices(id, kind, enclave_id) VALUES(?, ?, ?)";
        sqlite3_stmt *st = store_stmt(s, sql, err);
        if (!st)
                return -EIO;
        sqlite3_bind_text(st, 1, dev, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, kind, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, id);
        int rc = sqlite3_step(st);
        sqlite3_reset(st);
        if (rc == SQLITE_CONSTRAINT_PRIMARYKEY) {
                char owner[128] = "another enclave";
                ledger_device_owner(s, dev, 0, owner, sizeof(owner), NULL);
                return tessera_error_field(err, EBUSY, "devices", "devices: '%s' is owned by enclave '%s'", dev, owner);
        }
        if (rc != SQLITE_DONE)
                return store_error(s, "cannot record the device", err);
        return 0;
}

int ledger_device_give_back(struct store *s, int64_t id, const char *dev, struct tessera_error *err)
{
        static const char sql[] = "DELETE FROM devices WHERE id = ? AND enclave_id = ?";
        sqlite3_stmt *st = store_stmt(s, sql, err);
        if (!st)
                return -EIO;
        sqlite3_bind_text(st, 1, dev, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, id);
        int r = store_step_done(s, st, err);
        if (r < 0)
                return r;
        if (sqlite3_changes(sqlite3_db_handle(st)) != 1)
                return tessera_error_field(err, EINVAL, "devices", "devices: '%s' does not belong to this enclave",
                                           dev);
        return 0;
}

int ledger_devices_of(struct store *s, int64_t id, json_t **ret, struct tessera_error *err)
{
        static const char sql[] = "SELECT id, kind FROM devices WHERE enclave_id = ? ORDER BY id";
        sqlite3_stmt *st = store_stmt(s, sql, err);
        if (!st)
                return -EIO;
        sqlite3_bind_int64(st, 1, id);
        json_t *a = json_array();
        while (sqlite3_step(st) == SQLITE_ROW)
                json_array_append_new(a, json_pack("{s:s, s:s}", "id", col_text(st, 0), "kind", col_text(st, 1)));
        sqlite3_reset(st);
        *ret = a;
        return 0;
}

int ledger_device_owner(struct store *s, const char *dev, uid_t viewer, char *ret, size_t n, struct tessera_error *err)
{
        static const char sql[] = "SELECT e.name, e.owner_uid FROM devices d JOIN enclaves e ON d.enclave_id = e.id "
                                  "WHERE d.id = ?";
        sqlite3_stmt *st = store_stmt(s, sql, err);
        if (!st)
                return -EIO;
        sqlite3_bind_text(st, 1, dev, -1, SQLITE_STATIC);
        int found = 0;
        if (sqlite3_step(st) == SQLITE_ROW) {
                bool visible = viewer == 0 || (uid_t)sqlite3_column_int64(st, 1) == viewer;
                snprintf(ret, n, "%s", visible ? col_text(st, 0) : "other");
                found = 1;
        }
        sqlite3_reset(st);
        return found;
}

int ledger_give_back_all(struct store *s, int64_t id, struct tessera_error *err)
{
        static const char cpus[] = "UPDATE cpus SET owner = 'free', enclave_id = NULL WHERE enclave_id = ?";
        static const char blocks[] = "UPDATE blocks SET owner = 'free', enclave_id = NULL WHERE enclave_id = ?";
        static const char devs[] = "DELETE FROM devices WHERE enclave_id = ?";
        const char *all[] = {cpus, blocks, devs};
        for (size_t i = 0; i < ELEMENTSOF(all); i++) {
                sqlite3_stmt *st = store_stmt(s, all[i], err);
                if (!st)
                        return -EIO;
                sqlite3_bind_int64(st, 1, id);
                int r = store_step_done(s, st, err);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* ---- listings ---- */

static const char *owner_for(sqlite3_stmt *st, int owner_col, int name_col, int uid_col, uid_t viewer)
{
        const char *owner = col_text(st, owner_col);
        if (!STREQ(owner, "enclave"))
                return owner;
        if (viewer != 0 && (uid_t)sqlite3_column_int64(st, uid_col) != viewer)
                return "other";
        return col_text(st, name_col);
}

json_t *ledger_cpus_json(struct store *s, uid_t viewer, struct tessera_error *err)
{
        static const char sql[] = "SELECT c.cpu, c.core, c.package, c.numa, c.owner, e.name, e.owner_uid FROM cpus c "
                                  "LEFT JOIN enclaves e ON c.enclave_id = e.id ORDER BY c.cpu";
        sqlite3_stmt *st = store_stmt(s, sql, err);
        if (!st)
                return NULL;
        json_t *a = json_array();
        while (sqlite3_step(st) == SQLITE_ROW)
                json_array_append_new(a,
                                      json_pack("{s:i, s:i, s:i, s:i, s:s}", "cpu", sqlite3_column_int(st, 0), "core",
                                                sqlite3_column_int(st, 1), "package", sqlite3_column_int(st, 2), "numa",
                                                sqlite3_column_int(st, 3), "owner", owner_for(st, 4, 5, 6, viewer)));
        sqlite3_reset(st);
        return a;
}

json_t *ledger_memory_json(struct store *s, const struct tessera_topology *t, const struct ledger_host *host,
                           uid_t viewer, struct tessera_error *err)
{
        static const char sql[] = "SELECT b.block, b.owner, e.name, e.owner_uid FROM blocks b "
                                  "LEFT JOIN enclaves e ON b.enclave_id = e.id WHERE b.numa = ? ORDER BY b.block";
        json_t *nodes = json_array();
        for (size_t i = 0; i < t->n_numa; i++) {
                sqlite3_stmt *st = store_stmt(s, sql, err);
                if (!st) {
                        json_decref(nodes);
                        return NULL;
                }
                sqlite3_bind_int(st, 1, (int)t->numa[i].os_index);
                json_t *blocks = json_array();
                while (sqlite3_step(st) == SQLITE_ROW)
                        json_array_append_new(blocks, json_pack("{s:i, s:s}", "block", sqlite3_column_int(st, 0),
                                                                "owner", owner_for(st, 1, 2, 3, viewer)));
                sqlite3_reset(st);
                json_array_append_new(nodes, json_pack("{s:i, s:I, s:I, s:o}", "numa", (int)t->numa[i].os_index,
                                                       "bytes", (json_int_t)t->numa[i].bytes, "host_bytes",
                                                       (json_int_t)host->memory[i], "blocks", blocks));
        }
        return json_pack("{s:I, s:o}", "block_size", (json_int_t)host->block_size, "nodes", nodes);
}

static int count_by_owner(struct store *s, const char *sql, unsigned *host, unsigned *free_, unsigned *enclaves,
                          struct tessera_error *err)
{
        sqlite3_stmt *st = store_stmt(s, sql, err);
        if (!st)
                return -EIO;
        *host = *free_ = *enclaves = 0;
        while (sqlite3_step(st) == SQLITE_ROW) {
                const char *o = col_text(st, 0);
                unsigned c = (unsigned)sqlite3_column_int(st, 1);
                if (STREQ(o, "host"))
                        *host = c;
                else if (STREQ(o, "free"))
                        *free_ = c;
                else
                        *enclaves = c;
        }
        sqlite3_reset(st);
        return 0;
}

int ledger_counts(struct store *s, unsigned *cpus_host, unsigned *cpus_free, unsigned *cpus_enclaves,
                  unsigned *blocks_host, unsigned *blocks_free, unsigned *blocks_enclaves, struct tessera_error *err)
{
        static const char c[] = "SELECT owner, COUNT(*) FROM cpus GROUP BY owner";
        static const char b[] = "SELECT owner, COUNT(*) FROM blocks GROUP BY owner";
        int r = count_by_owner(s, c, cpus_host, cpus_free, cpus_enclaves, err);
        if (r < 0)
                return r;
        return count_by_owner(s, b, blocks_host, blocks_free, blocks_enclaves, err);
}

int ledger_free_blocks_on(struct store *s, unsigned numa, unsigned *ret, struct tessera_error *err)
{
        static const char sql[] = "SELECT COUNT(*) FROM blocks WHERE owner = 'free' AND numa = ?";
        sqlite3_stmt *st = store_stmt(s, sql, err);
        if (!st)
                return -EIO;
        sqlite3_bind_int(st, 1, (int)numa);
        *ret = sqlite3_step(st) == SQLITE_ROW ? (unsigned)sqlite3_column_int(st, 0) : 0;
        sqlite3_reset(st);
        return 0;
}

int ledger_check(struct store *s, json_t *problems, struct tessera_error *err)
{
        static const char *const checks[][2] = {
                {"SELECT 'enclave ' || e.name || ' is running with no core' FROM enclaves e WHERE e.state = 'running' "
                 "AND NOT EXISTS (SELECT 1 FROM cpus c WHERE c.enclave_id = e.id)",
                 NULL},
                {"SELECT 'core ' || cpu || ' is owned by a missing enclave' FROM cpus WHERE enclave_id IS NOT NULL AND "
                 "enclave_id NOT IN (SELECT id FROM enclaves)",
                 NULL},
                {"SELECT 'block ' || numa || '/' || block || ' is owned by a missing enclave' FROM blocks WHERE "
                 "enclave_id IS NOT NULL AND enclave_id NOT IN (SELECT id FROM enclaves)",
                 NULL},
                {"SELECT 'enclave ' || name || ' is still ' || state FROM enclaves WHERE state IN "
                 "('creating','destroying')",
                 NULL},
        };
        for (size_t i = 0; i < ELEMENTSOF(checks); i++) {
                sqlite3_stmt *st = store_stmt(s, checks[i][0], err);
                if (!st)
                        return -EIO;
                while (sqlite3_step(st) == SQLITE_ROW)
                        json_array_append_new(problems, json_string(col_text(st, 0)));
                sqlite3_reset(st);
        }
        /* the schema's own view of itself */
        sqlite3_stmt *st = store_stmt(s, "PRAGMA foreign_key_check", err);
        if (!st)
                return -EIO;
        while (sqlite3_step(st) == SQLITE_ROW)
                json_array_append_new(problems, json_sprintf("foreign key broken in table %s", col_text(st, 0)));
        sqlite3_reset(st);
        return 0;
}
