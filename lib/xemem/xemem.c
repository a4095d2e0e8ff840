/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libxemem: the calls of include/tessera/xemem.h.  One connection to
 * tesserad per process (re-made after fork and after a daemon restart), one
 * lock around it; the memory work (conversion, snapshots, the agent) is in
 * the files beside this one.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>

#include "client-internal.h"
#include "convert.h"
#include "proto.h"
#include "snapshot.h"
#include "tessera/xemem.h"
#include "util.h"

#ifndef HUGETLBFS_MAGIC
#define HUGETLBFS_MAGIC 0x958458f6
#endif

static pthread_mutex_t conn_lock = PTHREAD_MUTEX_INITIALIZER;
static struct tessera_client *conn;
static pid_t conn_pid;
static __thread char last_error[1024];

/* An attachment of this process: its reservation, for xemem_detach. */
struct attachment {
        uintptr_t base;
        size_t len;
        int64_t id;
        struct attachment *next;
};

/* A snapshot this process produces: the memfd it holds and the copy in progress. */
struct produced {
        int64_t segid; /* 0 until registered */
        int fd;
        struct snapshot *snap;
        bool done;
        int result;
        struct produced *next;
};

static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static struct attachment *attachments;
static struct produced *produced;

int xemem_fail(int r, const struct tessera_error *err)
{
        snprintf(last_error, sizeof(last_error), "%s", err && err->msg[0] ? err->msg : strerror(-r));
        return r;
}

int xemem_failf(int code, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(last_error, sizeof(last_error), fmt, ap);
        va_end(ap);
        return -code;
}

const char *xemem_error(void)
{
        return last_error;
}

static const char *socket_path(void)
{
        const char *p = getenv("TESSERA_XEMEM_SOCKET");
        return p && *p ? p : XEMEM_DEFAULT_SOCKET;
}

/* One round trip, under conn_lock; a daemon restarted since the last call is reconnected to once. */
int xemem_call(const char *op, json_t *req, json_t **result, int *fds, size_t *n_fds, struct tessera_error *err)
{
        pthread_mutex_lock(&conn_lock);
        int r = 0;
        for (int attempt = 0; attempt < 2; attempt++) {
                if (conn && conn_pid != getpid()) {
                        /* a child of fork(): the parent's connection would speak for the parent */
                        tessera_client_free(conn);
                        conn = NULL;
                }
                if (!conn) {
                        r = tessera_client_connect(socket_path(), &conn, err);
                        if (r < 0)
                                break;
                        conn_pid = getpid();
                }
                size_t cap = n_fds ? *n_fds : 0;
                r = tessera_client_call_fds(conn, op, req, NULL, 0, (void **)result, fds, n_fds ? &cap : NULL, err);
                if (n_fds)
                        *n_fds = r == 0 ? cap : 0;
                if (r != -EPIPE && r != -ECONNRESET && r != -EPROTO)
                        break;
                tessera_client_free(conn);
                conn = NULL;
                if (r == -EPROTO && attempt == 0 && err && !strstr(err->msg, "closed"))
                        break; /* a real protocol error, not a daemon that went away */
        }
        pthread_mutex_unlock(&conn_lock);
        return r;
}

static long page_size(void)
{
        static long ps;
        if (!ps)
                ps = sysconf(_SC_PAGESIZE);
        return ps;
}

/* Pieces as the daemon reads them: [offset from `base`, length, fd, fd_offset, inode, prot]. */
json_t *xemem_pieces_json(const struct xemem_piece *p, size_t n, uintptr_t base)
{
        json_t *a = json_array();
        for (size_t i = 0; i < n; i++)
                json_array_append_new(a, json_pack("[I, I, i, I, I, i]", (json_int_t)(p[i].addr - base),
                                                   (json_int_t)p[i].len, p[i].fd, (json_int_t)p[i].fd_offset,
                                                   (json_int_t)p[i].ino, p[i].prot));
        return a;
}

xemem_segid_t xemem_make(void *addr, size_t size, const char *name, unsigned mode)
{
        struct tessera_error err = {0};
        if (mode > 0777)
                return xemem_failf(EINVAL, "xemem_make: mode %o has bits beyond 0777", mode);
        json_t *req;
        if (size == XEMEM_WHOLE_ADDRESS_SPACE) {
                if (addr)
                        return xemem_failf(EINVAL, "xemem_make: the whole address space starts at NULL, not %p", addr);
                int agent_fd;
                int r = xemem_agent_start(&agent_fd, &err);
                if (r < 0)
                        return xemem_fail(r, &err);
                req = json_pack("{s:s, s:i, s:i}", "kind", "whole", "agent_fd", agent_fd, "mode", (int)mode);
        } else {
                if (size == 0)
                        return xemem_failf(EINVAL, "xemem_make: size 0");
                uintptr_t ps = (uintptr_t)page_size();
                uintptr_t lo = (uintptr_t)addr & ~(ps - 1);
                if ((uintptr_t)addr + size < (uintptr_t)addr || (uintptr_t)addr + size > UINTPTR_MAX - ps)
                        return xemem_failf(EINVAL, "xemem_make: %p + %zu wraps around", addr, size);
                uintptr_t hi = ((uintptr_t)addr + size + ps - 1) & ~(ps - 1);
                struct xemem_piece *pieces = NULL;
                size_t n = 0;
                int r = convert_range(lo, hi - lo, &pieces, &n, &err);
                if (r < 0)
                        return xemem_fail(r, &err);
                req = json_pack("{s:s, s:I, s:I, s:i, s:o}", "kind", "range", "addr", (json_int_t)lo, "size",
                                (json_int_t)(hi - lo), "mode", (int)mode, "pieces", xemem_pieces_json(pieces, n, lo));
                free(pieces);
        }
        if (name)
                json_object_set_new(req, "name", json_string(name));
        json_t *res = NULL;
        int r = xemem_call("xemem_make", req, &res, NULL, NULL, &err);
        json_decref(req);
        if (r < 0)
                return xemem_fail(r, &err);
        xemem_segid_t id = json_integer_value(json_object_get(res, "segid"));
        json_decref(res);
        return id > 0 ? id : xemem_failf(EPROTO, "xemem_make: tesserad sent no segment id");
}

static struct produced *take_produced(int64_t segid)
{
        pthread_mutex_lock(&table_lock);
        struct produced **pp = &produced, *p = NULL;
        for (; *pp; pp = &(*pp)->next)
                if ((*pp)->segid == segid) {
                        p = *pp;
                        *pp = p->next;
                        break;
                }
        pthread_mutex_unlock(&table_lock);
        return p;
}

int xemem_remove(xemem_segid_t segid)
{
        struct tessera_error err = {0};
        json_t *req = json_pack("{s:I}", "segid", (json_int_t)segid);
        int r = xemem_call("xemem_remove", req, NULL, NULL, NULL, &err);
        json_decref(req);
        if (r < 0)
                return xemem_fail(r, &err);
        /* a snapshot of ours: its memory goes with the last attacher's mapping */
        struct produced *p = take_produced(segid);
        if (p) {
                (void)snapshot_finish(p->snap);
                close(p->fd);
                free(p);
        }
        return 0;
}

xemem_segid_t xemem_lookup(const char *name)
{
        struct tessera_error err = {0};
        if (!name)
                return xemem_failf(EINVAL, "xemem_lookup: no name given");
        json_t *req = json_pack("{s:s}", "name", name), *res = NULL;
        int r = xemem_call("xemem_lookup", req, &res, NULL, NULL, &err);
        json_decref(req);
        if (r < 0)
                return xemem_fail(r, &err);
        xemem_segid_t id = json_integer_value(json_object_get(res, "segid"));
        json_decref(res);
        return id;
}

xemem_apid_t xemem_get(xemem_segid_t segid, int flags)
{
        struct tessera_error err = {0};
        json_t *req = json_pack("{s:I, s:i}", "segid", (json_int_t)segid, "flags", flags), *res = NULL;
        int r = xemem_call("xemem_get", req, &res, NULL, NULL, &err);
        json_decref(req);
        if (r < 0)
                return xemem_fail(r, &err);
        xemem_apid_t id = json_integer_value(json_object_get(res, "apid"));
        json_decref(res);
        return id;
}

int xemem_release(xemem_apid_t apid)
{
        struct tessera_error err = {0};
        json_t *req = json_pack("{s:I}", "apid", (json_int_t)apid);
        int r = xemem_call("xemem_release", req, NULL, NULL, NULL, &err);
        json_decref(req);
        return r < 0 ? xemem_fail(r, &err) : 0;
}

static void forget_attachment_on_daemon(int64_t id)
{
        json_t *req = json_pack("{s:I}", "attachment", (json_int_t)id);
        (void)xemem_call("xemem_detach", req, NULL, NULL, NULL, NULL);
        json_decref(req);
}

/* The page size the pieces need (2 MiB for hugetlb memfds): the reservation is aligned to it. */
static size_t pieces_alignment(const int *fds, size_t n)
{
        size_t align = (size_t)page_size();
        for (size_t i = 0; i < n; i++) {
                struct statfs sf;
                if (fstatfs(fds[i], &sf) == 0 && sf.f_type == (typeof(sf.f_type))HUGETLBFS_MAGIC &&
                    (size_t)sf.f_bsize > align)
                        align = (size_t)sf.f_bsize;
        }
        return align;
}

/* Maps each piece over a PROT_NONE reservation of [base, base + len) of the segment. */
static int map_pieces(json_t *pieces, const int *fds, size_t n_fds, uint64_t seg_base, size_t len, void *want,
                      uintptr_t *ret)
{
        size_t align = pieces_alignment(fds, n_fds);
        bool populate = getenv("TESSERA_XEMEM_POPULATE") && STREQ(getenv("TESSERA_XEMEM_POPULATE"), "1");
        uintptr_t region;
        if (want) {
                if ((uintptr_t)want % align)
                        return xemem_failf(EINVAL, "xemem_attach: address %p is not aligned to %zu", want, align);
                void *m = mmap(want, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
                if (m == MAP_FAILED)
                        return xemem_failf(errno, "xemem_attach: cannot reserve %zu bytes at %p: %s", len, want,
                                           strerror(errno));
                region = (uintptr_t)m;
        } else {
                /* over-reserve so an aligned start exists, then give the slack back */
                void *m = mmap(NULL, len + align, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
                if (m == MAP_FAILED)
                        return xemem_failf(errno, "xemem_attach: cannot reserve %zu bytes: %s", len, strerror(errno));
                region = ((uintptr_t)m + align - 1) & ~(uintptr_t)(align - 1);
                if (region > (uintptr_t)m)
                        munmap(m, region - (uintptr_t)m);
                uintptr_t end = (uintptr_t)m + len + align;
                if (end > region + len)
                        munmap((void *)(region + len), end - (region + len));
        }
        size_t i;
        json_t *p;
        json_array_foreach(pieces, i, p)
        {
                uint64_t off = json_integer_value(json_array_get(p, 0)),
                         plen = json_integer_value(json_array_get(p, 1));
                json_int_t idx = json_integer_value(json_array_get(p, 2));
                uint64_t fd_off = json_integer_value(json_array_get(p, 3));
                int prot = (int)json_integer_value(json_array_get(p, 4));
                if (idx < 0 || (size_t)idx >= n_fds || off < seg_base || off - seg_base + plen > len) {
                        munmap((void *)region, len);
                        return xemem_failf(EPROTO, "xemem_attach: tesserad sent a piece outside the attachment");
                }
                void *m = mmap((void *)(region + (off - seg_base)), plen, prot,
                               MAP_SHARED | MAP_FIXED | (populate ? MAP_POPULATE : 0), fds[idx], (off_t)fd_off);
                if (m == MAP_FAILED) {
                        int e = errno;
                        munmap((void *)region, len);
                        return xemem_failf(e, "xemem_attach: cannot map piece %zu: %s", i, strerror(e));
                }
        }
        *ret = region;
        return 0;
}

int xemem_attach(xemem_apid_t apid, uint64_t offset, size_t size, void **addr)
{
        struct tessera_error err = {0};
        if (!addr)
                return xemem_failf(EINVAL, "xemem_attach: addr must point to the address wanted (NULL: any)");
        json_t *req = json_pack("{s:I, s:I, s:I}", "apid", (json_int_t)apid, "offset", (json_int_t)offset, "size",
                                (json_int_t)size),
               *res = NULL;
        int fds[PROTO_MAX_FDS];
        size_t n_fds = PROTO_MAX_FDS;
        int r;
        /* a snapshot is attachable once its copy is complete: wait for it, a little longer each time */
        for (long wait_us = 100;; wait_us = wait_us < 2000 ? wait_us * 2 : wait_us) {
                n_fds = PROTO_MAX_FDS;
                r = xemem_call("xemem_attach", req, &res, fds, &n_fds, &err);
                if (r != -EAGAIN)
                        break;
                struct timespec ts = {.tv_sec = wait_us / 1000000, .tv_nsec = (wait_us % 1000000) * 1000};
                nanosleep(&ts, NULL);
        }
        json_decref(req);
        if (r < 0)
                return xemem_fail(r, &err);
        int64_t id = json_integer_value(json_object_get(res, "attachment"));
        uint64_t base = (uint64_t)json_integer_value(json_object_get(res, "base"));
        uint64_t ps = (uint64_t)page_size();
        size_t len = (size_t)(((offset + size + ps - 1) & ~(ps - 1)) - base);
        size_t align = pieces_alignment(fds, n_fds);
        len = (len + align - 1) & ~(align - 1);
        uintptr_t region = 0;
        r = map_pieces(json_object_get(res, "pieces"), fds, n_fds, base, len, *addr, &region);
        for (size_t i = 0; i < n_fds; i++)
                close(fds[i]);
        json_decref(res);
        struct attachment *a = r == 0 ? calloc(1, sizeof(*a)) : NULL;
        if (!a) {
                if (r == 0) {
                        munmap((void *)region, len);
                        r = xemem_failf(ENOMEM, "xemem_attach: out of memory");
                }
                forget_attachment_on_daemon(id);
                return r;
        }
        *a = (struct attachment){.base = region, .len = len, .id = id};
        pthread_mutex_lock(&table_lock);
        a->next = attachments;
        attachments = a;
        pthread_mutex_unlock(&table_lock);
        *addr = (void *)(region + (offset - base));
        return 0;
}

int xemem_detach(void *addr)
{
        pthread_mutex_lock(&table_lock);
        struct attachment **pp = &attachments, *a = NULL;
        for (; *pp; pp = &(*pp)->next)
                if ((uintptr_t)addr >= (*pp)->base && (uintptr_t)addr < (*pp)->base + (*pp)->len) {
                        a = *pp;
                        *pp = a->next;
                        break;
                }
        pthread_mutex_unlock(&table_lock);
        if (!a)
                return xemem_failf(EINVAL, "xemem_detach: %p is not inside an attachment of this process", addr);
        munmap((void *)a->base, a->len);
        forget_attachment_on_daemon(a->id);
        free(a);
        return 0;
}

/* ---- snapshots ---- */

static void snapshot_done(void *arg, int result)
{
        struct produced *p = arg;
        pthread_mutex_lock(&table_lock);
        p->done = true;
        p->result = result;
        int64_t segid = p->segid;
        pthread_mutex_unlock(&table_lock);
        if (segid <= 0)
                return; /* not registered yet: xemem_snapshot reports it */
        json_t *req = json_pack("{s:I}", "segid", (json_int_t)segid);
        (void)xemem_call(result == 0 ? "xemem_ready" : "xemem_remove", req, NULL, NULL, NULL, NULL);
        json_decref(req);
}

/* The memfd that will hold the snapshot: the source's page size, sealed like every segment memfd. */
static int snapshot_memfd(uintptr_t addr, size_t size, struct tessera_error *err)
{
        struct xemem_piece *pieces = NULL;
        size_t n = 0;
        int flags = MFD_CLOEXEC | MFD_ALLOW_SEALING;
        /* already converted: this only names the pieces */
        int r = convert_range(addr, size, &pieces, &n, err);
        if (r < 0)
                return r;
        if (n > 0 && pieces_alignment(&pieces[0].fd, 1) > (size_t)page_size())
                flags |= MFD_HUGETLB;
        free(pieces);
        int fd = memfd_create("xemem-snapshot", flags);
        if (fd < 0)
                return tessera_error_set(err, errno, "cannot create the snapshot's memfd: %s", strerror(errno));
        if (ftruncate(fd, (off_t)size) < 0 || fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
                int e = errno;
                close(fd);
                return tessera_error_set(err, e, "cannot size the snapshot's memfd to %zu bytes: %s", size,
                                         strerror(e));
        }
        return fd;
}

xemem_segid_t xemem_snapshot(xemem_segid_t segid)
{
        struct tessera_error err = {0};
        json_t *req = json_pack("{s:I}", "segid", (json_int_t)segid), *res = NULL;
        int fds[1];
        size_t n_fds = 1;
        int r = xemem_call("xemem_snapshot", req, &res, fds, &n_fds, &err);
        json_decref(req);
        if (r < 0)
                return xemem_fail(r, &err);
        _cleanup_close_ int uffd_dev = n_fds > 0 ? fds[0] : -1;
        uintptr_t addr = (uintptr_t)json_integer_value(json_object_get(res, "addr"));
        size_t size = (size_t)json_integer_value(json_object_get(res, "size"));
        json_decref(res);
        struct produced *p = calloc(1, sizeof(*p));
        if (!p)
                return xemem_failf(ENOMEM, "xemem_snapshot: out of memory");
        p->fd = snapshot_memfd(addr, size, &err);
        if (p->fd < 0) {
                r = p->fd;
                free(p);
                return xemem_fail(r, &err);
        }
        r = snapshot_start(addr, size, p->fd, uffd_dev, snapshot_done, p, &p->snap, &err);
        if (r < 0) {
                close(p->fd);
                free(p);
                return xemem_fail(r, &err);
        }
        struct stat sb;
        fstat(p->fd, &sb);
        req = json_pack("{s:s, s:I, s:I, s:I, s:i, s:[[I, I, i, I, I, i]]}", "kind", "snapshot", "source",
                        (json_int_t)segid, "size", (json_int_t)size, "addr", (json_int_t)0, "mode", 0, "pieces",
                        (json_int_t)0, (json_int_t)size, p->fd, (json_int_t)0, (json_int_t)sb.st_ino, PROT_READ);
        r = xemem_call("xemem_make", req, &res, NULL, NULL, &err);
        json_decref(req);
        if (r < 0) {
                (void)snapshot_finish(p->snap);
                close(p->fd);
                free(p);
                return xemem_fail(r, &err);
        }
        int64_t id = json_integer_value(json_object_get(res, "segid"));
        json_decref(res);
        pthread_mutex_lock(&table_lock);
        p->segid = id;
        bool done = p->done;
        int result = p->result;
        p->next = produced;
        produced = p;
        pthread_mutex_unlock(&table_lock);
        if (done) /* the copy beat the registration */
                snapshot_done(p, result);
        return id;
}
