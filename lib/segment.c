/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* XEMEM segments, tesserad's side: records, permission checks, hand-over of memfds. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>

#include "node.h"
#include "proto.h"
#include "sandbox.h"
#include "segment.h"
#include "tessera/xemem.h"

#define XEMEM_NAME_BUF (XEMEM_NAME_MAX + 1)

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77 /* Linux 6.5 */
#endif
#ifndef TMPFS_MAGIC
#define TMPFS_MAGIC 0x01021994
#endif
#ifndef HUGETLBFS_MAGIC
#define HUGETLBFS_MAGIC 0x958458f6
#endif

#define PAGE 4096ULL
/* The highest user address on x86-64 with 5-level paging; attach offsets of a whole-address-space segment are
 * addresses. */
#define USER_ADDR_END       (1ULL << 56)
#define AGENT_TIMEOUT_MS    30000 /* converting tens of GiB of touched memory; the daemon does not wait meanwhile */
#define MAX_PIECES_RECORDED 4096

/* One row of the segments table. */
struct seg {
        int64_t id;
        char name[XEMEM_NAME_BUF];
        char kind[16];
        uint64_t size, addr;
        uid_t owner_uid;
        gid_t owner_gid;
        unsigned mode;
        bool writable, ready;
        char enclave[64];
        pid_t pid;
        uint64_t start;
        json_t *pieces; /* owned */
        int agent_fd;
        uint64_t agent_ino;
};

static void seg_done(struct seg *s)
{
        json_decref(s->pieces);
        s->pieces = NULL;
}
#define _cleanup_seg_ _cleanup_(seg_done)

void xemem_socket_path(const char *control, char *buf, size_t len)
{
        const char *slash = strrchr(control, '/');
        if (slash)
                snprintf(buf, len, "%.*s/xemem/xemem.sock", (int)(slash - control), control);
        else
                snprintf(buf, len, "xemem/xemem.sock");
}

static bool host_root(const struct xemem_caller *c)
{
        return c->uid == 0 && !c->enclave[0];
}

/* The file-mode rule: owner bits, else group bits, else other bits.  Root inside an enclave is nobody special. */
static bool mode_allows(const struct seg *s, const struct xemem_caller *c, bool write)
{
        if (host_root(c))
                return true;
        unsigned bits = s->mode;
        if (c->uid == s->owner_uid)
                bits >>= 6;
        else if (c->gid == s->owner_gid)
                bits >>= 3;
        unsigned want = write ? 06 : 04;
        return (bits & want) == want;
}

static bool same_process(const struct seg *s, const struct xemem_caller *c)
{
        return s->pid == c->pid && s->start == c->start;
}

int segment_caller_from_socket(struct tessera_node *n, int sock, struct xemem_caller *c, struct tessera_error *err)
{
        struct ucred cred;
        socklen_t len = sizeof(cred);
        *c = (struct xemem_caller){.pidfd = -1};
        if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 || len != sizeof(cred))
                return tessera_error_set(err, EACCES, "cannot identify the caller: %s", strerror(errno));
        c->pid = cred.pid;
        c->uid = cred.uid;
        c->gid = cred.gid;
        int pidfd = -1;
        len = sizeof(pidfd);
        if (getsockopt(sock, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) < 0)
                pidfd = pidfd_open(cred.pid, 0); /* older kernels: the pid is checked against its start time below */
        if (pidfd < 0)
                return tessera_error_set(err, ESRCH, "the calling process %d is gone", (int)cred.pid);
        c->pidfd = pidfd;
        int r = process_start_time(cred.pid, &c->start, err);
        /* with the pidfd held, a live pidfd now means the start time read was this process's */
        if (r < 0 || pidfd_send_signal(pidfd, 0, NULL, 0) < 0) {
                close(pidfd);
                c->pidfd = -1;
                return tessera_error_set(err, ESRCH, "the calling process %d is gone", (int)cred.pid);
        }
        if (node_pid_enclave(n, cred.pid, c->enclave, sizeof(c->enclave)) != 1)
                c->enclave[0] = '\0';
        return 0;
}

/* ---- records ---- */

#define SEG_COLUMNS                                                                                                    \
        "id, COALESCE(name, ''), kind, size, addr, owner_uid, owner_gid, mode, writable, COALESCE(enclave, ''), pid, " \
        "start_time, pieces, COALESCE(agent_fd, -1), COALESCE(agent_ino, 0), ready"

static void seg_from_row(sqlite3_stmt *st, struct seg *s)
{
        *s = (struct seg){.id = sqlite3_column_int64(st, 0)};
        snprintf(s->name, sizeof(s->name), "%s", (const char *)sqlite3_column_text(st, 1));
        snprintf(s->kind, sizeof(s->kind), "%s", (const char *)sqlite3_column_text(st, 2));
        s->size = (uint64_t)sqlite3_column_int64(st, 3);
        s->addr = (uint64_t)sqlite3_column_int64(st, 4);
        s->owner_uid = (uid_t)sqlite3_column_int64(st, 5);
        s->owner_gid = (gid_t)sqlite3_column_int64(st, 6);
        s->mode = (unsigned)sqlite3_column_int(st, 7);
        s->writable = sqlite3_column_int(st, 8) != 0;
        snprintf(s->enclave, sizeof(s->enclave), "%s", (const char *)sqlite3_column_text(st, 9));
        s->pid = (pid_t)sqlite3_column_int64(st, 10);
        s->start = (uint64_t)sqlite3_column_int64(st, 11);
        s->pieces = json_loads((const char *)sqlite3_column_text(st, 12), 0, NULL);
        s->agent_fd = sqlite3_column_int(st, 13);
        s->agent_ino = (uint64_t)sqlite3_column_int64(st, 14);
        s->ready = sqlite3_column_int(st, 15) != 0;
}

static int seg_load(struct tessera_node *n, int64_t id, struct seg *s, struct tessera_error *err)
{
        sqlite3_stmt *st = store_stmt(n->store, "SELECT " SEG_COLUMNS " FROM segments WHERE id = ?", err);
        if (!st)
                return -EIO;
        sqlite3_bind_int64(st, 1, id);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
                seg_from_row(st, s);
        sqlite3_reset(st);
        if (rc != SQLITE_ROW)
                return tessera_error_field(err, ENOENT, "segid", "segment %lld does not exist", (long long)id);
        return 0;
}

/* A segment the caller may see; one it may not is reported exactly like one that does not exist. */
static int seg_load_visible(struct tessera_node *n, const struct xemem_caller *c, int64_t id, struct seg *s,
                            struct tessera_error *err)
{
        int r = seg_load(n, id, s, err);
        if (r < 0)
                return r;
        if (!mode_allows(s, c, false) && !same_process(s, c)) {
                seg_done(s);
                return tessera_error_field(err, ENOENT, "segid", "segment %lld does not exist", (long long)id);
        }
        return 0;
}

/* ---- watches: the processes that records name ---- */

static void watch_process(struct tessera_node *n, const struct xemem_caller *c)
{
        if (node_watch_find(n, WATCH_XEMEM, c->pid) >= 0)
                return;
        int fd = fcntl(c->pidfd, F_DUPFD_CLOEXEC, 3);
        if (fd >= 0 && node_watch_add(n, WATCH_XEMEM, c->pid, fd) < 0)
                close(fd);
}

static void delete_process_records(struct tessera_node *n, pid_t pid, uint64_t start)
{
        static const char *const sqls[] = {
                "DELETE FROM grants WHERE pid = ? AND start_time = ?",
                "DELETE FROM segments WHERE pid = ? AND start_time = ?",
        };
        if (store_begin_light(n->store, NULL) < 0)
                return;
        for (size_t i = 0; i < ELEMENTSOF(sqls); i++) {
                sqlite3_stmt *st = store_stmt(n->store, sqls[i], NULL);
                if (!st)
                        continue;
                sqlite3_bind_int64(st, 1, pid);
                sqlite3_bind_int64(st, 2, (sqlite3_int64)start);
                (void)store_step_done(n->store, st, NULL);
        }
        if (store_commit_light(n->store, NULL) < 0)
                store_rollback_light(n->store);
}

/* The distinct start times recorded for `pid` (a pid may have been reused while tesserad was down). */
static size_t recorded_starts(struct tessera_node *n, pid_t pid, uint64_t *starts, size_t cap)
{
        sqlite3_stmt *st = store_stmt(n->store,
                                      "SELECT start_time FROM segments WHERE pid = ?1 UNION "
                                      "SELECT start_time FROM grants WHERE pid = ?1",
                                      NULL);
        if (!st)
                return 0;
        sqlite3_bind_int64(st, 1, pid);
        size_t k = 0;
        while (k < cap && sqlite3_step(st) == SQLITE_ROW)
                starts[k++] = (uint64_t)sqlite3_column_int64(st, 0);
        sqlite3_reset(st);
        return k;
}

/* Drops the records of every process named `pid` that is gone; watches the live one, if any. */
static void settle_pid(struct tessera_node *n, pid_t pid, json_t *log)
{
        uint64_t starts[8];
        size_t k = recorded_starts(n, pid, starts, ELEMENTSOF(starts));
        node_watch_remove(n, WATCH_XEMEM, pid);
        for (size_t i = 0; i < k; i++) {
                int fd = pidfd_open_checked(pid, starts[i], NULL);
                if (fd < 0) {
                        delete_process_records(n, pid, starts[i]);
                        if (log)
                                json_array_append_new(log, json_sprintf("XEMEM process %d is gone: its segments and "
                                                                        "grants were dropped",
                                                                        (int)pid));
                        continue;
                }
                if (node_watch_find(n, WATCH_XEMEM, pid) >= 0 || node_watch_add(n, WATCH_XEMEM, pid, fd) < 0)
                        close(fd);
        }
}

void segment_process_exited(struct tessera_node *n, pid_t pid)
{
        settle_pid(n, pid, NULL);
}

int segments_reconcile(struct tessera_node *n, json_t *log, struct tessera_error *err)
{
        sqlite3_stmt *st = store_stmt(n->store, "SELECT pid FROM segments UNION SELECT pid FROM grants", err);
        if (!st)
                return -EIO;
        size_t cap = 64, k = 0;
        _cleanup_free_ pid_t *pids = malloc(cap * sizeof(*pids));
        if (!pids) {
                sqlite3_reset(st);
                return tessera_error_set(err, ENOMEM, "out of memory");
        }
        while (sqlite3_step(st) == SQLITE_ROW) {
                if (k == cap) {
                        pid_t *p = realloc(pids, 2 * cap * sizeof(*pids));
                        if (!p)
                                break;
                        pids = p;
                        cap *= 2;
                }
                pids[k++] = (pid_t)sqlite3_column_int64(st, 0);
        }
        sqlite3_reset(st);
        for (size_t i = 0; i < k; i++)
                settle_pid(n, pids[i], log);
        /* a snapshot whose producer restarted its copy cannot exist: the producer is gone with its records */
        return 0;
}

/* ---- descriptors from the exporter ---- */

/* The exporter's descriptor `fd`, checked to be the recorded memfd, sealed against resizing. */
static int take_memfd(int pidfd, int fd, uint64_t ino, struct tessera_error *err)
{
        _cleanup_close_ int got = pidfd_getfd(pidfd, fd, 0);
        if (got < 0)
                return errno == ESRCH ? tessera_error_set(err, ESRCH, "the exporting process is gone")
                                      : tessera_error_set(err, EIO, "cannot take descriptor %d from the exporter: %s",
                                                          fd, strerror(errno));
        struct stat sb;
        struct statfs sf;
        if (fstat(got, &sb) < 0 || !S_ISREG(sb.st_mode) || (uint64_t)sb.st_ino != ino || fstatfs(got, &sf) < 0 ||
            (sf.f_type != TMPFS_MAGIC && sf.f_type != (typeof(sf.f_type))HUGETLBFS_MAGIC))
                return tessera_error_set(err, ESTALE,
                                         "descriptor %d of the exporter is no longer the segment's memfd (inode %llu)",
                                         fd, (unsigned long long)ino);
        int seals = fcntl(got, F_GET_SEALS);
        if (seals < 0 || (seals & (F_SEAL_SHRINK | F_SEAL_GROW)) != (F_SEAL_SHRINK | F_SEAL_GROW))
                return tessera_error_set(err, EPERM, "descriptor %d of the exporter is not sealed against resizing",
                                         fd);
        return TAKE_FD(got);
}

/* The memfd for an attacher: as held for read-write access, re-opened read-only otherwise. */
static int fetch_memfd(int pidfd, int fd, uint64_t ino, bool write, struct tessera_error *err)
{
        _cleanup_close_ int got = take_memfd(pidfd, fd, ino, err);
        if (got < 0)
                return got;
        int acc = fcntl(got, F_GETFL) & O_ACCMODE;
        if (write && acc != O_RDWR)
                return tessera_error_set(err, EACCES, "the exporter holds descriptor %d read-only", fd);
        if (write || acc == O_RDONLY)
                return TAKE_FD(got);
        /* a read-only open file: neither mprotect nor a new mmap can make it writable */
        char path[64];
        snprintf(path, sizeof(path), "/proc/self/fd/%d", got);
        int ro = open(path, O_RDONLY | O_CLOEXEC);
        if (ro < 0)
                return tessera_error_set(err, errno, "cannot reopen the segment's memfd read-only: %s",
                                         strerror(errno));
        return ro;
}

/* Reads one piece row [offset, length, fd, fd_offset, inode, prot], all checked. */
static int piece_parse(json_t *p, uint64_t v[6], struct tessera_error *err)
{
        if (!json_is_array(p) || json_array_size(p) != 6)
                return tessera_error_field(err, EINVAL, "pieces",
                                           "pieces: each is [offset, length, fd, fd_offset, "
                                           "inode, prot]");
        for (size_t i = 0; i < 6; i++) {
                json_t *x = json_array_get(p, i);
                if (!json_is_integer(x) || json_integer_value(x) < 0)
                        return tessera_error_field(err, EINVAL, "pieces", "pieces: field %zu is not a number >= 0", i);
                v[i] = (uint64_t)json_integer_value(x);
        }
        if (v[1] == 0 || v[1] % PAGE || v[0] % PAGE || v[3] % PAGE || v[2] > INT_MAX || v[5] > 7)
                return tessera_error_field(err, EINVAL, "pieces",
                                           "pieces: lengths and offsets must be whole pages, fd and prot valid");
        return 0;
}

/*
 * Checks that `pieces` cover [from, from + len) in order with no gap, and
 * that each memfd is what it claims (number, inode, seals, size).
 */
static int pieces_check(json_t *pieces, int pidfd, uint64_t from, uint64_t len, bool *ret_writable,
                        struct tessera_error *err)
{
        if (!json_is_array(pieces) || json_array_size(pieces) == 0 || json_array_size(pieces) > MAX_PIECES_RECORDED)
                return tessera_error_field(err, EINVAL, "pieces", "pieces: 1 to %d pieces are required",
                                           MAX_PIECES_RECORDED);
        uint64_t at = from;
        bool writable = true;
        size_t i;
        json_t *p;
        json_array_foreach(pieces, i, p)
        {
                uint64_t v[6];
                int r = piece_parse(p, v, err);
                if (r < 0)
                        return r;
                if (v[0] != at || v[1] > from + len - at)
                        return tessera_error_field(
                                err, EINVAL, "pieces",
                                "pieces: piece %zu starts at %llu, expected %llu (within %llu bytes)", i,
                                (unsigned long long)v[0], (unsigned long long)at, (unsigned long long)len);
                _cleanup_close_ int fd = take_memfd(pidfd, (int)v[2], v[4], err);
                if (fd < 0)
                        return fd;
                struct stat sb;
                if (fstat(fd, &sb) < 0 || (uint64_t)sb.st_size < v[3] + v[1])
                        return tessera_error_field(err, EINVAL, "pieces",
                                                   "pieces: memfd %llu is shorter than piece %zu",
                                                   (unsigned long long)v[2], i);
                /* the exporter's own descriptor and protection decide whether the segment can ever be written */
                if ((fcntl(fd, F_GETFL) & O_ACCMODE) != O_RDWR || !(v[5] & PROT_WRITE))
                        writable = false;
                at += v[1];
        }
        if (at != from + len)
                return tessera_error_field(err, EINVAL, "pieces", "pieces: they cover %llu of %llu bytes",
                                           (unsigned long long)(at - from), (unsigned long long)len);
        *ret_writable = writable;
        return 0;
}

/* ---- requests ---- */

static int get_u64(json_t *req, const char *key, uint64_t max, uint64_t *ret, struct tessera_error *err)
{
        json_t *v = json_object_get(req, key);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) > max)
                return tessera_error_field(err, EINVAL, key, "%s: a number from 0 to %llu is required", key,
                                           (unsigned long long)max);
        *ret = (uint64_t)json_integer_value(v);
        return 0;
}

static int get_id(json_t *req, const char *key, int64_t *ret, struct tessera_error *err)
{
        uint64_t v;
        int r = get_u64(req, key, INT64_MAX, &v, err);
        if (r == 0 && v == 0)
                r = tessera_error_field(err, EINVAL, key, "%s: ids start at 1", key);
        *ret = (int64_t)v;
        return r;
}

static int segment_name_check(json_t *v, const char **ret, struct tessera_error *err)
{
        *ret = NULL;
        if (!v || json_is_null(v))
                return 0;
        const char *s = json_string_value(v);
        size_t len = s ? strlen(s) : 0;
        if (!s || len == 0 || len > XEMEM_NAME_BUF - 1)
                return tessera_error_field(err, EINVAL, "name", "name: 1 to %d characters are required",
                                           XEMEM_NAME_BUF - 1);
        for (size_t i = 0; i < len; i++)
                if ((unsigned char)s[i] <= ' ' || (unsigned char)s[i] >= 0x7f)
                        return tessera_error_field(err, EINVAL, "name",
                                                   "name: character %zu is not printable ASCII (no spaces)", i + 1);
        *ret = s;
        return 0;
}

static json_t *segid_result(int64_t id)
{
        return json_pack("{s:I}", "segid", (json_int_t)id);
}

static int insert_segment(struct tessera_node *n, const struct xemem_caller *c, const char *name, const char *kind,
                          uint64_t size, uint64_t addr, unsigned mode, bool writable, json_t *pieces, int agent_fd,
                          uint64_t agent_ino, int64_t source, bool ready, int64_t *ret, struct tessera_error *err)
{
        static const char sql[] = "INSERT INTO segments(name, kind, size, addr, owner_uid, owner_gid, mode, writable, "
                                  "enclave, pid, start_time, pieces, agent_fd, agent_ino, source, ready, created) "
                                  "VALUES(?, ?, ?, ?, ?, ?, ?, ?, NULLIF(?, ''), ?, ?, ?, ?, ?, ?, ?, ?)";
        _cleanup_free_ char *text = json_dumps(pieces, JSON_COMPACT);
        sqlite3_stmt *st = store_stmt(n->store, sql, err);
        if (!st || !text)
                return st ? tessera_error_set(err, ENOMEM, "out of memory") : -EIO;
        int k = 1;
        if (name)
                sqlite3_bind_text(st, k++, name, -1, SQLITE_STATIC);
        else
                sqlite3_bind_null(st, k++);
        sqlite3_bind_text(st, k++, kind, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, k++, (sqlite3_int64)size);
        sqlite3_bind_int64(st, k++, (sqlite3_int64)addr);
        sqlite3_bind_int64(st, k++, c->uid);
        sqlite3_bind_int64(st, k++, c->gid);
        sqlite3_bind_int(st, k++, (int)mode);
        sqlite3_bind_int(st, k++, writable);
        sqlite3_bind_text(st, k++, c->enclave, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, k++, c->pid);
        sqlite3_bind_int64(st, k++, (sqlite3_int64)c->start);
        sqlite3_bind_text(st, k++, text, -1, SQLITE_STATIC);
        if (agent_fd >= 0) {
                sqlite3_bind_int(st, k++, agent_fd);
                sqlite3_bind_int64(st, k++, (sqlite3_int64)agent_ino);
        } else {
                sqlite3_bind_null(st, k++);
                sqlite3_bind_null(st, k++);
        }
        if (source > 0)
                sqlite3_bind_int64(st, k++, source);
        else
                sqlite3_bind_null(st, k++);
        sqlite3_bind_int(st, k++, ready);
        sqlite3_bind_int64(st, k++, (sqlite3_int64)time(NULL));
        int r = store_begin_light(n->store, err);
        if (r == 0) {
                r = store_step_done(n->store, st, err);
                if (r == -EBUSY)
                        r = tessera_error_field(err, EEXIST, "name", "a segment named '%s' exists already", name);
        } else {
                sqlite3_reset(st);
        }
        if (r == 0) {
                *ret = sqlite3_last_insert_rowid(sqlite3_db_handle(st));
                r = store_commit_light(n->store, err);
        }
        if (r < 0)
                store_rollback_light(n->store);
        return r;
}

/*
 * make: {name?, mode, size, addr, pieces} exports memfds the caller holds;
 * {kind: "whole", agent_fd, mode} promises the whole address space, converted
 * on demand by the caller's agent; {kind: "snapshot", source, ...} registers a
 * snapshot being copied (ready later).
 */
static int op_make(struct tessera_node *n, const struct xemem_caller *c, json_t *req, json_t **ret,
                   struct tessera_error *err)
{
        const char *name, *kind = json_string_value(json_object_get(req, "kind")) ?: "range";
        uint64_t mode, size = 0, addr = 0;
        int r = segment_name_check(json_object_get(req, "name"), &name, err);
        if (r == 0)
                r = get_u64(req, "mode", 0777, &mode, err);
        if (r < 0)
                return r;
        bool writable = false;
        int64_t id = 0, source = 0;
        if (STREQ(kind, "whole")) {
                uint64_t agent_fd;
                r = get_u64(req, "agent_fd", INT_MAX, &agent_fd, err);
                if (r < 0)
                        return r;
                _cleanup_close_ int sock = pidfd_getfd(c->pidfd, (int)agent_fd, 0);
                struct stat sb;
                if (sock < 0 || fstat(sock, &sb) < 0 || !S_ISSOCK(sb.st_mode))
                        return tessera_error_field(err, EINVAL, "agent_fd", "agent_fd: descriptor %d is not a socket",
                                                   (int)agent_fd);
                json_t *none = json_array();
                r = insert_segment(n, c, name, "whole", USER_ADDR_END, 0, (unsigned)mode, true, none, (int)agent_fd,
                                   (uint64_t)sb.st_ino, 0, true, &id, err);
                json_decref(none);
        } else if (STREQ(kind, "range") || STREQ(kind, "snapshot")) {
                r = get_u64(req, "size", USER_ADDR_END, &size, err);
                if (r == 0)
                        r = get_u64(req, "addr", USER_ADDR_END, &addr, err);
                if (r == 0 && (size == 0 || size % PAGE || addr % PAGE))
                        r = tessera_error_field(err, EINVAL, "size", "size and addr: whole pages, size > 0");
                if (r == 0 && STREQ(kind, "snapshot")) {
                        _cleanup_seg_ struct seg src = {0};
                        r = get_id(req, "source", &source, err);
                        if (r == 0)
                                r = seg_load(n, source, &src, err);
                        if (r == 0 && (!same_process(&src, c) || src.size != size))
                                r = tessera_error_field(err, EPERM, "source",
                                                        "source: only the exporter of segment %lld may snapshot it",
                                                        (long long)source);
                        if (r == 0)
                                mode = src.mode;
                }
                json_t *pieces = json_object_get(req, "pieces");
                if (r == 0)
                        r = pieces_check(pieces, c->pidfd, 0, size, &writable, err);
                if (r == 0)
                        r = insert_segment(n, c, name, kind, size, addr, (unsigned)mode,
                                           writable && !STREQ(kind, "snapshot"), pieces, -1, 0, source,
                                           !STREQ(kind, "snapshot"), &id, err);
        } else {
                r = tessera_error_field(err, EINVAL, "kind", "kind: range, whole or snapshot, not '%s'", kind);
        }
        if (r < 0)
                return r;
        watch_process(n, c);
        *ret = segid_result(id);
        return 0;
}

/* The exporter, or the node's administrator on the host. */
static int load_own(struct tessera_node *n, const struct xemem_caller *c, json_t *req, struct seg *s,
                    struct tessera_error *err)
{
        int64_t id;
        int r = get_id(req, "segid", &id, err);
        if (r == 0)
                r = seg_load_visible(n, c, id, s, err);
        if (r == 0 && !same_process(s, c) && !host_root(c)) {
                seg_done(s);
                r = tessera_error_field(err, EPERM, "segid", "segment %lld is exported by process %d, not by you",
                                        (long long)id, (int)s->pid);
        }
        return r;
}

static int delete_by_id(struct tessera_node *n, const char *sql, int64_t id, struct tessera_error *err)
{
        sqlite3_stmt *st = store_stmt(n->store, sql, err);
        if (!st)
                return -EIO;
        sqlite3_bind_int64(st, 1, id);
        int r = store_begin_light(n->store, err);
        if (r < 0) {
                sqlite3_reset(st);
                return r;
        }
        r = store_step_done(n->store, st, err);
        if (r == 0)
                r = store_commit_light(n->store, err);
        if (r < 0)
                store_rollback_light(n->store);
        return r;
}

static int op_remove(struct tessera_node *n, const struct xemem_caller *c, json_t *req, json_t **ret,
                     struct tessera_error *err)
{
        _cleanup_seg_ struct seg s = {0};
        int r = load_own(n, c, req, &s, err);
        if (r == 0)
                r = delete_by_id(n, "DELETE FROM segments WHERE id = ?", s.id, err);
        if (r == 0)
                *ret = json_null();
        return r;
}

/* The snapshot's producer says its copy is complete. */
static int op_ready(struct tessera_node *n, const struct xemem_caller *c, json_t *req, json_t **ret,
                    struct tessera_error *err)
{
        _cleanup_seg_ struct seg s = {0};
        int r = load_own(n, c, req, &s, err);
        if (r == 0 && !STREQ(s.kind, "snapshot"))
                r = tessera_error_field(err, EINVAL, "segid", "segment %lld is not a snapshot", (long long)s.id);
        if (r == 0)
                r = delete_by_id(n, "UPDATE segments SET ready = 1 WHERE id = ?", s.id, err);
        if (r == 0)
                *ret = json_null();
        return r;
}

static int op_lookup(struct tessera_node *n, const struct xemem_caller *c, json_t *req, json_t **ret,
                     struct tessera_error *err)
{
        const char *name;
        int r = segment_name_check(json_object_get(req, "name"), &name, err);
        if (r == 0 && !name)
                r = tessera_error_field(err, EINVAL, "name", "name: a segment name is required");
        if (r < 0)
                return r;
        sqlite3_stmt *st = store_stmt(n->store, "SELECT " SEG_COLUMNS " FROM segments WHERE name = ?", err);
        if (!st)
                return -EIO;
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        _cleanup_seg_ struct seg s = {0};
        bool found = sqlite3_step(st) == SQLITE_ROW;
        if (found)
                seg_from_row(st, &s);
        sqlite3_reset(st);
        if (!found || (!mode_allows(&s, c, false) && !same_process(&s, c)))
                return tessera_error_field(err, ENOENT, "name", "no segment named '%s'", name);
        *ret = json_pack("{s:I, s:I, s:i, s:s}", "segid", (json_int_t)s.id, "size", (json_int_t)s.size, "mode",
                         (int)s.mode, "kind", s.kind);
        return 0;
}

static int op_get(struct tessera_node *n, const struct xemem_caller *c, json_t *req, json_t **ret,
                  struct tessera_error *err)
{
        int64_t id;
        uint64_t flags;
        int r = get_id(req, "segid", &id, err);
        if (r == 0)
                r = get_u64(req, "flags", 3, &flags, err);
        if (r == 0 && flags != XEMEM_RDONLY && flags != XEMEM_RDWR)
                r = tessera_error_field(err, EINVAL, "flags", "flags: XEMEM_RDONLY (1) or XEMEM_RDWR (2)");
        if (r < 0)
                return r;
        bool write = flags == XEMEM_RDWR;
        _cleanup_seg_ struct seg s = {0};
        r = seg_load_visible(n, c, id, &s, err);
        if (r < 0)
                return r;
        if (!same_process(&s, c) && !mode_allows(&s, c, write))
                return tessera_error_field(err, EACCES, "flags",
                                           "segment %lld (mode %03o, owner %u) does not allow %s "
                                           "access to uid %u",
                                           (long long)id, s.mode, (unsigned)s.owner_uid, write ? "read-write" : "read",
                                           (unsigned)c->uid);
        if (write && (!s.writable || STREQ(s.kind, "snapshot")))
                return tessera_error_field(err, EACCES, "flags", "segment %lld is read-only (%s)", (long long)id,
                                           STREQ(s.kind, "snapshot") ? "a snapshot" : "the exporter's memory is");
        sqlite3_stmt *st = store_stmt(n->store,
                                      "INSERT INTO grants(segment_id, pid, start_time, uid, enclave, writable) "
                                      "VALUES(?, ?, ?, ?, NULLIF(?, ''), ?)",
                                      err);
        if (!st)
                return -EIO;
        sqlite3_bind_int64(st, 1, id);
        sqlite3_bind_int64(st, 2, c->pid);
        sqlite3_bind_int64(st, 3, (sqlite3_int64)c->start);
        sqlite3_bind_int64(st, 4, c->uid);
        sqlite3_bind_text(st, 5, c->enclave, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 6, write);
        r = store_begin_light(n->store, err);
        if (r < 0) {
                sqlite3_reset(st);
                return r;
        }
        r = store_step_done(n->store, st, err);
        int64_t apid = sqlite3_last_insert_rowid(sqlite3_db_handle(st));
        if (r == 0)
                r = store_commit_light(n->store, err);
        if (r < 0) {
                store_rollback_light(n->store);
                return r;
        }
        watch_process(n, c);
        *ret = json_pack("{s:I}", "apid", (json_int_t)apid);
        return 0;
}

/* A grant of the caller's: its segment id and whether it is for writing. */
static int load_grant(struct tessera_node *n, const struct xemem_caller *c, int64_t apid, int64_t *segid, bool *write,
                      struct tessera_error *err)
{
        sqlite3_stmt *st = store_stmt(n->store,
                                      "SELECT segment_id, writable FROM grants WHERE id = ? AND pid = ? AND "
                                      "start_time = ?",
                                      err);
        if (!st)
                return -EIO;
        sqlite3_bind_int64(st, 1, apid);
        sqlite3_bind_int64(st, 2, c->pid);
        sqlite3_bind_int64(st, 3, (sqlite3_int64)c->start);
        bool found = sqlite3_step(st) == SQLITE_ROW;
        if (found) {
                *segid = sqlite3_column_int64(st, 0);
                *write = sqlite3_column_int(st, 1) != 0;
        }
        sqlite3_reset(st);
        if (!found)
                return tessera_error_field(err, ENOENT, "apid",
                                           "access %lld is not yours, or was released, or its segment was removed",
                                           (long long)apid);
        return 0;
}

static int op_release(struct tessera_node *n, const struct xemem_caller *c, json_t *req, json_t **ret,
                      struct tessera_error *err)
{
        int64_t apid, segid;
        bool write;
        int r = get_id(req, "apid", &apid, err);
        if (r == 0)
                r = load_grant(n, c, apid, &segid, &write, err);
        if (r == 0)
                r = delete_by_id(n, "DELETE FROM grants WHERE id = ?", apid, err);
        if (r == 0)
                *ret = json_null();
        return r;
}

/* What an attach has checked, kept while a whole-address-space exporter's agent converts the range. */
struct attach_req {
        int64_t apid, segid;
        uint64_t off, size, lo, hi;
        bool write;
};

/*
 * An attach waiting for the exporter's agent.  tesserad's loop watches
 * `sock` and calls segment_pending_read(): a conversion may take seconds
 * (1 GiB of touched memory), and an agent may never answer, and neither may
 * hold up the node.
 */
struct segment_pending {
        struct attach_req a;
        struct xemem_caller caller; /* pidfd not kept: the caller's connection outlives this */
        pid_t exporter;
        int sock;
        json_int_t seq;
        uint64_t deadline_ns;
        char *buf;
        size_t len, cap;
};

void segment_pending_free(struct segment_pending *p)
{
        if (!p)
                return;
        if (p->sock >= 0)
                close(p->sock);
        free(p->buf);
        free(p);
}

int segment_pending_fd(const struct segment_pending *p)
{
        return p->sock;
}

uint64_t segment_pending_deadline(const struct segment_pending *p)
{
        return p->deadline_ns;
}

/* The memfds of the pieces of [a->lo, a->hi), clipped, recorded as an attachment of the caller. */
static int attach_finish(struct tessera_node *n, const struct attach_req *a, int pidfd, json_t *pieces, json_t **ret,
                         int *fds_out, size_t *n_out, size_t cap, struct tessera_error *err)
{
        int r = 0;
        json_t *out = json_array();
        size_t i;
        json_t *p;
        *n_out = 0;
        json_array_foreach(pieces, i, p)
        {
                uint64_t v[6];
                if (piece_parse(p, v, err) < 0) {
                        r = -EINVAL;
                        break;
                }
                if (v[0] + v[1] <= a->lo || v[0] >= a->hi)
                        continue;
                if (*n_out == cap) {
                        r = tessera_error_field(err, E2BIG, "size",
                                                "the range spans more than %zu pieces of memory: attach less at once",
                                                cap);
                        break;
                }
                int fd = fetch_memfd(pidfd, (int)v[2], v[4], a->write && (v[5] & PROT_WRITE), err);
                if (fd < 0) {
                        r = fd;
                        break;
                }
                /* clip to [lo, hi) */
                uint64_t from = v[0] > a->lo ? v[0] : a->lo, to = v[0] + v[1] < a->hi ? v[0] + v[1] : a->hi;
                int prot = PROT_READ | (a->write && (v[5] & PROT_WRITE) ? PROT_WRITE : 0);
                json_array_append_new(out, json_pack("[I, I, i, I, i]", (json_int_t)from, (json_int_t)(to - from),
                                                     (int)*n_out, (json_int_t)(v[3] + from - v[0]), prot));
                fds_out[(*n_out)++] = fd;
        }
        int64_t att = 0;
        if (r == 0) {
                sqlite3_stmt *st =
                        store_stmt(n->store, "INSERT INTO attachments(grant_id, offset, size) VALUES(?, ?, ?)", err);
                r = st ? store_begin_light(n->store, err) : -EIO;
                if (r == 0) {
                        sqlite3_bind_int64(st, 1, a->apid);
                        sqlite3_bind_int64(st, 2, (sqlite3_int64)a->off);
                        sqlite3_bind_int64(st, 3, (sqlite3_int64)a->size);
                        r = store_step_done(n->store, st, err);
                        att = sqlite3_last_insert_rowid(sqlite3_db_handle(st));
                        if (r == 0)
                                r = store_commit_light(n->store, err);
                        if (r < 0)
                                store_rollback_light(n->store);
                }
        }
        if (r < 0) {
                json_decref(out);
                for (size_t k = 0; k < *n_out; k++)
                        close(fds_out[k]);
                *n_out = 0;
                return r;
        }
        *ret = json_pack("{s:I, s:I, s:o}", "attachment", (json_int_t)att, "base", (json_int_t)a->lo, "pieces", out);
        return 0;
}

/* Sends the exporter's agent its request; the reply comes to segment_pending_read(). */
static int agent_ask(const struct seg *s, int pidfd, const struct xemem_caller *c, const struct attach_req *a,
                     struct segment_pending **ret, struct tessera_error *err)
{
        _cleanup_close_ int sock = pidfd_getfd(pidfd, s->agent_fd, 0);
        struct stat sb;
        if (sock < 0 || fstat(sock, &sb) < 0 || (uint64_t)sb.st_ino != s->agent_ino)
                return tessera_error_set(err, sock < 0 && errno == ESRCH ? ESRCH : ESTALE,
                                         "the exporter (pid %d) no longer holds its XEMEM agent socket", (int)s->pid);
        struct segment_pending *p = calloc(1, sizeof(*p));
        if (!p)
                return tessera_error_set(err, ENOMEM, "out of memory");
        *p = (struct segment_pending){.a = *a, .caller = *c, .exporter = s->pid, .sock = -1};
        p->caller.pidfd = -1;
        p->seq = (json_int_t)(now_ns() & INT64_MAX);
        p->deadline_ns = now_ns() + AGENT_TIMEOUT_MS * 1000000ULL;
        json_t *q = json_pack("{s:s, s:I, s:I, s:I}", "op", "convert", "seq", p->seq, "addr", (json_int_t)a->lo, "size",
                              (json_int_t)(a->hi - a->lo));
        /* the request is small: it fits the socket's buffer, so this send does not wait on the agent */
        struct timeval tv = {.tv_usec = 100000};
        (void)setsockopt(sock, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        int r = proto_send(sock, q, NULL, 0, err);
        json_decref(q);
        if (r < 0) {
                free(p);
                return tessera_error_prefix(err, r, "XEMEM agent of pid %d", (int)s->pid);
        }
        p->sock = TAKE_FD(sock);
        *ret = p;
        return 0;
}

/* Reads what the agent sent, without blocking; 1 with a whole frame in *ret, 0 for more later. */
static int pending_take_frame(struct segment_pending *p, json_t **ret, struct tessera_error *err)
{
        for (;;) {
                size_t used;
                int k = proto_take_frame(p->buf, p->len, ret, &used, err);
                if (k != 0) {
                        if (k > 0) {
                                memmove(p->buf, p->buf + used, p->len - used);
                                p->len -= used;
                        }
                        return k;
                }
                if (p->cap - p->len < 4096) {
                        size_t cap = p->cap ? p->cap * 2 : 4096;
                        char *b = cap <= PROTO_MAX_FRAME + 8192 ? realloc(p->buf, cap) : NULL;
                        if (!b)
                                return tessera_error_set(err, ENOMEM, "the agent's answer is too large");
                        p->buf = b;
                        p->cap = cap;
                }
                ssize_t got = recv(p->sock, p->buf + p->len, p->cap - p->len, MSG_DONTWAIT);
                if (got < 0 && (errno == EAGAIN || errno == EINTR))
                        return 0;
                if (got <= 0)
                        return tessera_error_set(err, EPIPE, "the agent closed its socket");
                p->len += (size_t)got;
        }
}

int segment_pending_read(struct tessera_node *n, struct segment_pending *p, json_t **ret, int *fds_out, size_t *n_out,
                         struct tessera_error *err)
{
        size_t cap = *n_out;
        *n_out = 0;
        for (;;) {
                json_t *reply = NULL;
                int r = pending_take_frame(p, &reply, err);
                if (r < 0)
                        return tessera_error_prefix(err, r, "XEMEM agent of pid %d", (int)p->exporter);
                if (r == 0)
                        return 0;
                /* a reply to an earlier daemon's request may still be queued: only ours, by seq, counts */
                if (json_integer_value(json_object_get(reply, "seq")) != p->seq) {
                        json_decref(reply);
                        continue;
                }
                json_t *res = NULL;
                r = proto_reply_result(reply, &res, err);
                json_t *pieces = r == 0 ? json_incref(json_object_get(res, "pieces")) : NULL;
                json_decref(reply);
                /* the exporter may have gone, or removed the segment, while its agent worked */
                _cleanup_seg_ struct seg s = {0};
                int pidfd = -1;
                if (r == 0)
                        r = seg_load(n, p->a.segid, &s, err);
                if (r == 0 && (pidfd = node_watch_find(n, WATCH_XEMEM, s.pid)) < 0)
                        r = tessera_error_set(err, ESRCH, "the exporter of segment %lld is gone",
                                              (long long)p->a.segid);
                bool writable;
                if (r == 0)
                        r = pieces_check(pieces, pidfd, p->a.lo, p->a.hi - p->a.lo, &writable, err);
                if (r == 0)
                        r = attach_finish(n, &p->a, pidfd, pieces, ret, fds_out, n_out, cap, err);
                json_decref(pieces);
                return r < 0 ? r : 1;
        }
}

/*
 * attach: {apid, offset, size} -> {attachment, base, pieces: [[offset,
 * length, fd index, fd_offset, prot]]} with the memfds; the client maps each
 * piece at its offset - base from the start of its reservation.  For a
 * whole-address-space segment the answer waits for the exporter's agent
 * (*pending).
 */
static int op_attach(struct tessera_node *n, const struct xemem_caller *c, json_t *req, json_t **ret, int *fds_out,
                     size_t *n_out, struct segment_pending **pending, struct tessera_error *err)
{
        size_t cap = *n_out;
        *n_out = 0;
        struct attach_req a = {0};
        int r = get_id(req, "apid", &a.apid, err);
        if (r == 0)
                r = get_u64(req, "offset", USER_ADDR_END, &a.off, err);
        if (r == 0)
                r = get_u64(req, "size", USER_ADDR_END, &a.size, err);
        if (r == 0)
                r = load_grant(n, c, a.apid, &a.segid, &a.write, err);
        if (r < 0)
                return r;
        _cleanup_seg_ struct seg s = {0};
        r = seg_load(n, a.segid, &s, err);
        if (r < 0)
                return r;
        /* the mode is checked again: the grant was for this process, the segment must still allow it */
        if (!same_process(&s, c) && !mode_allows(&s, c, a.write))
                return tessera_error_field(err, EACCES, "apid", "segment %lld no longer allows this access",
                                           (long long)a.segid);
        if (!s.ready)
                return tessera_error_field(err, EAGAIN, "apid", "snapshot %lld is still being copied",
                                           (long long)a.segid);
        if (a.size == 0 || a.off > s.size || a.size > s.size - a.off)
                return tessera_error_field(err, ERANGE, "size",
                                           "offset %llu + size %llu is outside segment %lld (%llu bytes)",
                                           (unsigned long long)a.off, (unsigned long long)a.size, (long long)a.segid,
                                           (unsigned long long)s.size);
        a.lo = a.off & ~(PAGE - 1);
        a.hi = (a.off + a.size + PAGE - 1) & ~(PAGE - 1);
        int pidfd = node_watch_find(n, WATCH_XEMEM, s.pid);
        if (pidfd < 0)
                return tessera_error_set(err, ESRCH, "the exporter of segment %lld is gone", (long long)a.segid);
        if (STREQ(s.kind, "whole")) {
                if (!pending)
                        return tessera_error_set(err, EOPNOTSUPP, "this caller cannot wait for an exporter's agent");
                return agent_ask(&s, pidfd, c, &a, pending, err);
        }
        return attach_finish(n, &a, pidfd, s.pieces, ret, fds_out, n_out, cap, err);
}

static int op_detach(struct tessera_node *n, const struct xemem_caller *c, json_t *req, json_t **ret,
                     struct tessera_error *err)
{
        int64_t att;
        int r = get_id(req, "attachment", &att, err);
        if (r < 0)
                return r;
        sqlite3_stmt *st = store_stmt(n->store,
                                      "DELETE FROM attachments WHERE id = ? AND grant_id IN "
                                      "(SELECT id FROM grants WHERE pid = ? AND start_time = ?)",
                                      err);
        if (!st)
                return -EIO;
        sqlite3_bind_int64(st, 1, att);
        sqlite3_bind_int64(st, 2, c->pid);
        sqlite3_bind_int64(st, 3, (sqlite3_int64)c->start);
        r = store_begin_light(n->store, err);
        if (r < 0) {
                sqlite3_reset(st);
                return r;
        }
        r = store_step_done(n->store, st, err);
        int changed = sqlite3_changes(sqlite3_db_handle(st));
        if (r == 0)
                r = store_commit_light(n->store, err);
        if (r < 0) {
                store_rollback_light(n->store);
                return r;
        }
        if (changed == 0)
                return tessera_error_field(err, ENOENT, "attachment", "attachment %lld is not yours or is gone",
                                           (long long)att);
        *ret = json_null();
        return 0;
}

/*
 * snapshot: the exporter asks before taking one.  It is refused while
 * another process may write the segment: its writes could not be kept out
 * of the snapshot (the producer's write-protection sees only its own).
 * The reply carries /dev/userfaultfd, opened here, for the producer.
 */
static int op_snapshot_begin(struct tessera_node *n, const struct xemem_caller *c, json_t *req, json_t **ret,
                             int *fds_out, size_t *n_out, struct segment_pending **pending, struct tessera_error *err)
{
        size_t cap = *n_out;
        *n_out = 0;
        _cleanup_seg_ struct seg s = {0};
        int r = load_own(n, c, req, &s, err);
        if (r < 0)
                return r;
        if (!same_process(&s, c))
                return tessera_error_field(err, EPERM, "segid",
                                           "segment %lld: only its exporter (pid %d) can snapshot it", (long long)s.id,
                                           (int)s.pid);
        if (!STREQ(s.kind, "range"))
                return tessera_error_field(err, EINVAL, "segid",
                                           "segment %lld is a %s segment: only a range segment can be snapshotted",
                                           (long long)s.id, s.kind);
        sqlite3_stmt *st = store_stmt(n->store,
                                      "SELECT COUNT(*) FROM grants WHERE segment_id = ? AND writable = 1 AND "
                                      "NOT (pid = ? AND start_time = ?)",
                                      err);
        if (!st)
                return -EIO;
        sqlite3_bind_int64(st, 1, s.id);
        sqlite3_bind_int64(st, 2, c->pid);
        sqlite3_bind_int64(st, 3, (sqlite3_int64)c->start);
        int writers = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
        sqlite3_reset(st);
        if (writers > 0)
                return tessera_error_field(err, EBUSY, "segid",
                                           "segment %lld has %d read-write grant(s) of other processes: a snapshot "
                                           "could not keep their writes out",
                                           (long long)s.id, writers);
        int uffd = cap > 0 ? open("/dev/userfaultfd", O_RDWR | O_CLOEXEC) : -1;
        if (uffd >= 0)
                fds_out[(*n_out)++] = uffd;
        *ret = json_pack("{s:I, s:I, s:b}", "size", (json_int_t)s.size, "addr", (json_int_t)s.addr, "userfaultfd",
                         uffd >= 0);
        return 0;
}

/* ---- listing ---- */

static json_t *grants_json(struct tessera_node *n, int64_t segid)
{
        json_t *a = json_array();
        sqlite3_stmt *st = store_stmt(n->store,
                                      "SELECT g.id, g.pid, g.uid, COALESCE(g.enclave, ''), g.writable, "
                                      "(SELECT COUNT(*) FROM attachments t WHERE t.grant_id = g.id), "
                                      "(SELECT COALESCE(SUM(t.size), 0) FROM attachments t WHERE t.grant_id = g.id) "
                                      "FROM grants g WHERE g.segment_id = ? ORDER BY g.id",
                                      NULL);
        if (!st)
                return a;
        sqlite3_bind_int64(st, 1, segid);
        while (sqlite3_step(st) == SQLITE_ROW) {
                const char *encl = (const char *)sqlite3_column_text(st, 3);
                json_array_append_new(a, json_pack("{s:I, s:I, s:I, s:o, s:b, s:I, s:I}", "apid",
                                                   (json_int_t)sqlite3_column_int64(st, 0), "pid",
                                                   (json_int_t)sqlite3_column_int64(st, 1), "uid",
                                                   (json_int_t)sqlite3_column_int64(st, 2), "enclave",
                                                   encl[0] ? json_string(encl) : json_null(), "writable",
                                                   sqlite3_column_int(st, 4), "attachments",
                                                   (json_int_t)sqlite3_column_int64(st, 5), "attached_bytes",
                                                   (json_int_t)sqlite3_column_int64(st, 6)));
        }
        sqlite3_reset(st);
        return a;
}

int segment_list(struct tessera_node *n, const struct xemem_caller *c, json_t **ret, struct tessera_error *err)
{
        sqlite3_stmt *st =
                store_stmt(n->store, "SELECT " SEG_COLUMNS ", COALESCE(source, 0) FROM segments ORDER BY id", err);
        if (!st)
                return -EIO;
        json_t *list = json_array();
        int64_t *ids = NULL;
        size_t k = 0;
        while (sqlite3_step(st) == SQLITE_ROW) {
                _cleanup_seg_ struct seg s = {0};
                seg_from_row(st, &s);
                if (!mode_allows(&s, c, false) && !same_process(&s, c) && c->uid != s.owner_uid)
                        continue;
                char mode[8];
                snprintf(mode, sizeof(mode), "%03o", s.mode);
                int64_t source = sqlite3_column_int64(st, 16);
                json_array_append_new(list,
                                      json_pack("{s:I, s:o, s:s, s:I, s:I, s:I, s:s, s:o, s:I, s:b, s:o, s:b}", "id",
                                                (json_int_t)s.id, "name", s.name[0] ? json_string(s.name) : json_null(),
                                                "kind", s.kind, "size", (json_int_t)s.size, "owner_uid",
                                                (json_int_t)s.owner_uid, "owner_gid", (json_int_t)s.owner_gid, "mode",
                                                mode, "enclave", s.enclave[0] ? json_string(s.enclave) : json_null(),
                                                "pid", (json_int_t)s.pid, "ready", s.ready, "source",
                                                source ? json_integer(source) : json_null(), "writable", s.writable));
                int64_t *grown = realloc(ids, (k + 1) * sizeof(*ids));
                if (grown) {
                        ids = grown;
                        ids[k++] = s.id;
                }
        }
        sqlite3_reset(st);
        /* grants after the segments' statement is done: the same connection, one statement at a time */
        for (size_t i = 0; i < k && i < json_array_size(list); i++)
                json_object_set_new(json_array_get(list, i), "attachers", grants_json(n, ids[i]));
        free(ids);
        *ret = list;
        return 0;
}

/* ---- dispatch ---- */

typedef int (*seg_fn)(struct tessera_node *n, const struct xemem_caller *c, json_t *req, json_t **ret,
                      struct tessera_error *err);
typedef int (*seg_fd_fn)(struct tessera_node *n, const struct xemem_caller *c, json_t *req, json_t **ret, int *fds,
                         size_t *n_fds, struct segment_pending **pending, struct tessera_error *err);

static const struct {
        const char *op;
        seg_fn fn;
        seg_fd_fn fd_fn;
} seg_ops[] = {
        {"xemem_attach", NULL, op_attach},
        {"xemem_detach", op_detach, NULL},
        {"xemem_get", op_get, NULL},
        {"xemem_lookup", op_lookup, NULL},
        {"xemem_make", op_make, NULL},
        {"xemem_ready", op_ready, NULL},
        {"xemem_release", op_release, NULL},
        {"xemem_remove", op_remove, NULL},
        {"xemem_snapshot", NULL, op_snapshot_begin},
};

bool segment_op_known(const char *op)
{
        for (size_t i = 0; i < ELEMENTSOF(seg_ops); i++)
                if (STREQ(seg_ops[i].op, op))
                        return true;
        return false;
}

int segment_op(struct tessera_node *n, const struct xemem_caller *c, const char *op, json_t *req, json_t **ret,
               int *fds_out, size_t *n_out, struct segment_pending **pending, struct tessera_error *err)
{
        if (pending)
                *pending = NULL;
        size_t cap = n_out ? *n_out : 0;
        if (n_out)
                *n_out = 0;
        for (size_t i = 0; i < ELEMENTSOF(seg_ops); i++) {
                if (!STREQ(seg_ops[i].op, op))
                        continue;
                if (seg_ops[i].fn)
                        return seg_ops[i].fn(n, c, req, ret, err);
                size_t got = cap;
                int r = seg_ops[i].fd_fn(n, c, req, ret, fds_out, &got, pending, err);
                if (n_out)
                        *n_out = got;
                return r;
        }
        return tessera_error_field(err, EOPNOTSUPP, "op", "unknown XEMEM operation '%s'", op);
}
