/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Export in place (contract in convert.h, design in docs/xemem.md): a range
 * of this process's private memory is copied into sealed memfds, which are
 * then mapped MAP_SHARED over the very same addresses with the original
 * protection, so every pointer stays valid and another process can map the
 * same pages.
 *
 * One conversion, in order (convert_apply):
 *   1. plan: walk the VMAs of the range; pieces already backed by one of our
 *      memfds are reused as they are, private VMAs are grouped into new
 *      pieces (adjacent VMAs of one protection share one memfd);
 *   2. make, size and seal one memfd per new piece;
 *   3. stop every other thread of the process (below), and check the VMAs
 *      did not change since the plan (else plan again);
 *   4. on a private stack: copy the pages that hold data, move the original
 *      VMAs aside with mremap(), map the memfds in their place; on a failure,
 *      move the originals back, so the range is exactly as it was;
 *   5. let the threads go; free the originals.
 *
 * Stopping the world.  A write by another thread between the copy and the
 * remap would be lost, so the other threads are parked for the duration, as
 * conservative garbage collectors do: each gets a library-reserved real-time
 * signal whose handler waits on a futex until the conversion is over.  The
 * signal is SIGRTMAX-2, or the number in the environment variable
 * TESSERA_XEMEM_SIGNAL (read once, must lie in SIGRTMIN..SIGRTMAX) when the
 * program or another library already uses SIGRTMAX-2.  The handler is
 * installed the first time a multi-threaded process converts; if the signal
 * already has a handler of someone else, conversion fails with EBUSY rather
 * than take it over.  A thread that blocks the signal for more than a second
 * makes the conversion fail with EBUSY, naming it.  Single-threaded
 * processes skip all of this.
 *
 * While the world is stopped the converting thread must not take a lock
 * another thread may hold (malloc, stdio): everything is allocated before
 * the stop and messages are written after it.  From the copy to the remap
 * it must not write to the range either, and the range may hold its own
 * stack frames (a stack buffer) or the heap around a malloc'd buffer: so
 * that stretch runs on a private mmap'd stack (makecontext) and writes only
 * to that scratch mapping, which mmap() cannot have placed inside a range
 * that is mapped.  While an original VMA is moved aside its addresses are
 * not mapped at all, so that stretch also reads nothing outside the scratch
 * mapping and our own code: it makes system calls with inline assembly
 * (libc's wrappers, their GOT slots and errno may lie in the range) and has
 * no stack protector (the canary lives in the thread's TCB).
 *
 * Limits (callers must know them):
 *   - After conversion the pages are MAP_SHARED: a child made by fork()
 *     shares them with its parent instead of getting a copy-on-write copy,
 *     and writes on either side are seen by the other.  This is fatal when
 *     the pages hold the process's own bookkeeping: the heap around a
 *     malloc'd buffer (malloc's chunk headers and free lists), static
 *     variables next to a static buffer, a thread's stack frames.  Parent
 *     and child then corrupt each other.  A program that may fork() must
 *     export only memory it allocated for sharing (mmap'd, or page-aligned
 *     whole pages).  posix_spawn() and vfork() are safe.  Per-mapping settings
 *     of the original (mlock, MADV_DONTFORK, MADV_WIPEONFORK, MADV_HUGEPAGE,
 *     a PR_SET_VMA name) are not carried over.
 *   - Memory that a device or the kernel holds by physical page must not be
 *     converted: RDMA registrations (ibv_reg_mr), io_uring fixed buffers,
 *     O_DIRECT or AIO transfers in flight, vmsplice'd pages, ranges the
 *     application registered with userfaultfd.  They keep pointing at the
 *     old pages, which are freed once the conversion is done.
 *   - MADV_DONTNEED on converted pages no longer zeroes them: on a shared
 *     mapping it drops only this process's page table entries and the next
 *     access reads the memfd's data again (MADV_REMOVE frees them).
 *   - free() may give converted heap pages back (munmap, brk shrink); the
 *     memfd then lives on for its attachers and convert_gc() forgets it.
 *   - Converting the lowest page of the main thread's [stack] mapping stops
 *     that stack from growing below it.
 *   - Hugetlb mappings are refused: they are shareable only as hugetlb
 *     memfds, which need reserved huge pages.
 *   - Parked threads return from system calls that SA_RESTART does not
 *     restart (nanosleep, poll, epoll_wait, select, ...) with EINTR, as with
 *     any signal handler.
 *   - Do not convert from a signal handler.  fork() waits for a conversion
 *     in progress to end.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <linux/magic.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include "util.h"
#include "xemem/convert.h"

/* The copy below calls pread64/pwrite64/mmap with 64-bit offsets in one register. */
_Static_assert(sizeof(long) == 8, "convert.c assumes a 64-bit ABI");

/*
 * PROCMAP_QUERY (Linux 6.11, include/uapi/linux/fs.h): one VMA of
 * /proc/<pid>/maps per ioctl, without formatting the whole file.  The
 * installed headers (linux-libc-dev 6.1) predate it, so the structure and
 * the ioctl number are spelled out here; the uapi struct only ever grows at
 * its end, and `size` tells the kernel which version we speak.
 */
struct xemem_procmap_query {
        uint64_t size;
        uint64_t query_flags;
        uint64_t query_addr;
        uint64_t vma_start;
        uint64_t vma_end;
        uint64_t vma_flags;
        uint64_t vma_page_size;
        uint64_t vma_offset;
        uint64_t inode;
        uint32_t dev_major;
        uint32_t dev_minor;
        uint32_t vma_name_size;
        uint32_t build_id_size;
        uint64_t vma_name_addr;
        uint64_t build_id_addr;
};
_Static_assert(sizeof(struct xemem_procmap_query) == 104, "struct procmap_query of Linux 6.11 is 104 bytes");
#define XEMEM_PROCMAP_QUERY        _IOWR('f', 17, struct xemem_procmap_query)
#define XEMEM_PMQ_READABLE         0x01
#define XEMEM_PMQ_WRITABLE         0x02
#define XEMEM_PMQ_EXECUTABLE       0x04
#define XEMEM_PMQ_SHARED           0x08
#define XEMEM_PMQ_COVERING_OR_NEXT 0x10

/* memfd flags of Linux 6.3, missing from the installed headers. */
#ifndef MFD_NOEXEC_SEAL
#define MFD_NOEXEC_SEAL 0x0008U
#endif
#ifndef MFD_EXEC
#define MFD_EXEC 0x0010U
#endif

/* /proc/self/pagemap entry bits (Documentation/admin-guide/mm/pagemap.rst). */
#define PM_PRESENT (1ULL << 63)
#define PM_SWAPPED (1ULL << 62)

#define MEMFD_NAME         "tessera-xemem"
#define SIGNAL_ENV         "TESSERA_XEMEM_SIGNAL"
#define STOP_TIMEOUT_NS    1000000000ULL
#define ZOMBIE_CHECK_NS    10000000ULL
#define PLAN_ATTEMPTS      8
#define SECTION_STACK_SIZE (128 * 1024)
#define PAGEMAP_BATCH      8192 /* entries read at a time: 32 MiB of 4 KiB pages */
#define BOUNCE_SIZE        (256 * 1024)
#define MAX_IO_CHUNK       (1UL << 30)

#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

/* ---- the module's state -------------------------------------------------- */

struct table_piece;
struct section;

/*
 * All mutable state of this module, in one object so that conversion can
 * refuse the pages holding it: shared with a fork() child after a
 * conversion, it would be written by both processes.
 */
static struct {
        pthread_mutex_t lock;
        pthread_once_t atfork_once;
        struct table_piece *table; /* the memfds we made; under lock */
        size_t table_n, table_cap;
        bool procmap_query_missing;
        uint32_t stop_active;            /* futex words shared with park_handler(): 1 while a stop is on */
        uint32_t release_gen;            /* bumped at each release */
        uint32_t parked;                 /* threads parked by the current stop (reset at each stop) */
        int stop_signal;                 /* resolved once, under lock; 0 until then */
        char stop_signal_bad[32];        /* the unusable value of TESSERA_XEMEM_SIGNAL, if it was one */
        struct section *section_current; /* under lock */
} state = {.lock = PTHREAD_MUTEX_INITIALIZER, .atfork_once = PTHREAD_ONCE_INIT};

/* ---- VMAs ---------------------------------------------------------------- */

struct vma {
        uintptr_t start, end;
        uint64_t offset; /* file offset of `start`; 0 for anonymous memory */
        uint64_t ino;
        dev_t dev;
        uint64_t page_size; /* 0 when unknown (read from the text of /proc/self/maps) */
        int prot;
        bool shared;
        char name[PATH_MAX + 32];
};

/* Returns 0 to go on, 1 to stop the walk (not an error), < 0 to fail it. */
typedef int (*vma_fn)(const struct vma *v, void *userdata);

/* walk_query()'s answer when the kernel has no PROCMAP_QUERY. */
#define WALK_NO_QUERY 2

static size_t page_size(void)
{
        return (size_t)sysconf(_SC_PAGESIZE);
}

static int walk_query(int maps_fd, uintptr_t start, uintptr_t end, vma_fn fn, void *userdata)
{
        struct vma v;
        bool first = true;

        for (uintptr_t at = start; at < end; first = false) {
                struct xemem_procmap_query q = {
                        .size = sizeof(q),
                        .query_flags = XEMEM_PMQ_COVERING_OR_NEXT,
                        .query_addr = at,
                        .vma_name_addr = (uintptr_t)v.name,
                        .vma_name_size = sizeof(v.name),
                };
                if (ioctl(maps_fd, XEMEM_PROCMAP_QUERY, &q) < 0) {
                        if (errno == ENOENT)
                                return 0; /* nothing mapped at or above `at` */
                        if (first && (errno == ENOTTY || errno == EINVAL))
                                return WALK_NO_QUERY;
                        return -errno;
                }
                if (q.vma_start >= end)
                        return 0;
                v.start = q.vma_start;
                v.end = q.vma_end;
                v.offset = q.inode ? q.vma_offset : 0;
                v.ino = q.inode;
                v.dev = makedev(q.dev_major, q.dev_minor);
                v.page_size = q.vma_page_size;
                v.prot = (q.vma_flags & XEMEM_PMQ_READABLE ? PROT_READ : 0) |
                         (q.vma_flags & XEMEM_PMQ_WRITABLE ? PROT_WRITE : 0) |
                         (q.vma_flags & XEMEM_PMQ_EXECUTABLE ? PROT_EXEC : 0);
                v.shared = q.vma_flags & XEMEM_PMQ_SHARED;
                if (q.vma_name_size == 0)
                        v.name[0] = '\0';
                int r = fn(&v, userdata);
                if (r != 0)
                        return r < 0 ? r : 0;
                at = q.vma_end;
        }
        return 0;
}

static const char *parse_hex(const char *p, uint64_t *ret)
{
        uint64_t v = 0;
        const char *s = p;
        for (;; p++) {
                int d;
                if (*p >= '0' && *p <= '9')
                        d = *p - '0';
                else if (*p >= 'a' && *p <= 'f')
                        d = *p - 'a' + 10;
                else
                        break;
                v = v * 16 + (uint64_t)d;
        }
        *ret = v;
        return p == s ? NULL : p;
}

static const char *parse_dec(const char *p, uint64_t *ret)
{
        uint64_t v = 0;
        const char *s = p;
        for (; *p >= '0' && *p <= '9'; p++)
                v = v * 10 + (uint64_t)(*p - '0');
        *ret = v;
        return p == s ? NULL : p;
}

static const char *expect_char(const char *p, char c)
{
        return p && *p == c ? p + 1 : NULL;
}

/* One line of /proc/self/maps: "start-end perms offset major:minor inode   name". */
static int parse_maps_line(const char *line, struct vma *v)
{
        uint64_t start, end, offset, major, minor, ino;
        const char *p = parse_hex(line, &start);
        p = p ? parse_hex(expect_char(p, '-'), &end) : NULL;
        p = expect_char(p, ' ');
        if (!p || strlen(p) < 5)
                return -EBADMSG;
        v->prot = (p[0] == 'r' ? PROT_READ : 0) | (p[1] == 'w' ? PROT_WRITE : 0) | (p[2] == 'x' ? PROT_EXEC : 0);
        v->shared = p[3] == 's';
        p = expect_char(p + 4, ' ');
        p = p ? parse_hex(p, &offset) : NULL;
        p = expect_char(p, ' ');
        p = p ? parse_hex(p, &major) : NULL;
        p = expect_char(p, ':');
        p = p ? parse_hex(p, &minor) : NULL;
        p = expect_char(p, ' ');
        p = p ? parse_dec(p, &ino) : NULL;
        if (!p)
                return -EBADMSG;
        while (*p == ' ')
                p++;
        v->start = start;
        v->end = end;
        v->ino = ino;
        v->offset = ino ? offset : 0;
        v->dev = makedev(major, minor);
        v->page_size = 0;
        size_t n = strnlen(p, sizeof(v->name) - 1); /* no snprintf: this runs while the world is stopped */
        memcpy(v->name, p, n);
        v->name[n] = '\0';
        return 0;
}

/* The fallback for kernels before 6.11: stream the text, no allocation (it runs while the world is stopped). */
static int walk_maps_text(int maps_fd, uintptr_t start, uintptr_t end, vma_fn fn, void *userdata)
{
        char buf[2 * PATH_MAX + 1];
        size_t pos = 0, have = 0;
        bool eof = false;
        struct vma v;

        if (lseek(maps_fd, 0, SEEK_SET) < 0)
                return -errno;
        for (;;) {
                char *nl = memchr(buf + pos, '\n', have - pos);
                if (!nl && !eof) {
                        memmove(buf, buf + pos, have - pos);
                        have -= pos;
                        pos = 0;
                        if (have == sizeof(buf) - 1)
                                return -EBADMSG; /* a line longer than any path */
                        ssize_t n = read(maps_fd, buf + have, sizeof(buf) - 1 - have);
                        if (n < 0 && errno == EINTR)
                                continue;
                        if (n < 0)
                                return -errno;
                        if (n == 0)
                                eof = true;
                        have += (size_t)n;
                        continue;
                }
                if (!nl && pos == have)
                        return 0;
                if (!nl)
                        nl = buf + have; /* the last line, without its newline */
                *nl = '\0';
                int r = parse_maps_line(buf + pos, &v);
                if (r < 0)
                        return r;
                pos = (size_t)(nl - buf) + (nl < buf + have ? 1 : 0);
                if (v.start >= end)
                        return 0;
                if (v.end > start) {
                        r = fn(&v, userdata);
                        if (r != 0)
                                return r < 0 ? r : 0;
                }
        }
}

/* thread-self: /proc/self is the main thread, whose maps read ESRCH once it called pthread_exit(). */
static int maps_open(void)
{
        int fd = open("/proc/thread-self/maps", O_RDONLY | O_CLOEXEC);
        return fd < 0 ? -errno : fd;
}

/*
 * Calls fn for each VMA overlapping [start, end), in address order, read
 * from maps_fd (maps_open()).  Uses no heap: it also runs while the other
 * threads are stopped.
 */
static int vma_walk_fd(int maps_fd, uintptr_t start, uintptr_t end, vma_fn fn, void *userdata)
{
        if (!__atomic_load_n(&state.procmap_query_missing, __ATOMIC_RELAXED)) {
                int r = walk_query(maps_fd, start, end, fn, userdata);
                if (r != WALK_NO_QUERY)
                        return r;
                __atomic_store_n(&state.procmap_query_missing, true, __ATOMIC_RELAXED);
        }
        return walk_maps_text(maps_fd, start, end, fn, userdata);
}

static int vma_walk(uintptr_t start, uintptr_t end, vma_fn fn, void *userdata)
{
        _cleanup_close_ int fd = maps_open();
        if (fd < 0)
                return fd;
        return vma_walk_fd(fd, start, end, fn, userdata);
}

/* ---- the piece table ----------------------------------------------------- */

/* A memfd this module made, and where it was mapped when it was made. */
struct table_piece {
        int fd;
        uintptr_t addr;
        size_t len;
        int prot;
        uint64_t ino;
        dev_t dev;
};

static void unlockp(pthread_mutex_t **m)
{
        if (*m)
                pthread_mutex_unlock(*m);
}

static const struct table_piece *table_find(uint64_t ino, dev_t dev)
{
        for (size_t i = 0; i < state.table_n; i++)
                if (state.table[i].ino == ino && state.table[i].dev == dev)
                        return &state.table[i];
        return NULL;
}

static int table_reserve(size_t more)
{
        if (state.table_n + more <= state.table_cap)
                return 0;
        size_t cap = MAX(state.table_cap * 2, state.table_n + more + 8);
        struct table_piece *t = realloc(state.table, cap * sizeof(*t));
        if (!t)
                return -ENOMEM;
        state.table = t;
        state.table_cap = cap;
        return 0;
}

struct mapped_check {
        uint64_t ino;
        dev_t dev;
        bool found;
};

static int mapped_check_vma(const struct vma *v, void *userdata)
{
        struct mapped_check *c = userdata;
        if (v->shared && v->ino == c->ino && v->dev == c->dev) {
                c->found = true;
                return 1;
        }
        return 0;
}

/* Closes fd only if it still is the memfd we made: the program may have closed it and reused the number. */
static void close_if_ours(int fd, uint64_t ino, dev_t dev)
{
        struct stat st;
        if (fstat(fd, &st) == 0 && st.st_ino == ino && st.st_dev == dev)
                close(fd);
}

static size_t gc_locked(void)
{
        size_t closed = 0, kept = 0;
        _cleanup_close_ int maps_fd = state.table_n ? maps_open() : -1;
        for (size_t i = 0; i < state.table_n; i++) {
                struct table_piece *p = &state.table[i];
                struct mapped_check c = {.ino = p->ino, .dev = p->dev};
                int r = maps_fd < 0 ? maps_fd : vma_walk_fd(maps_fd, p->addr, p->addr + p->len, mapped_check_vma, &c);
                if (r < 0 || c.found) {
                        state.table[kept++] = *p; /* still mapped, or we cannot tell: keep it */
                        continue;
                }
                close_if_ours(p->fd, p->ino, p->dev);
                closed++;
        }
        state.table_n = kept;
        return closed;
}

/*
 * fork() while another thread converts would leave the child's lock held
 * forever: hold it across fork().  Registered on first use, not from a
 * constructor.
 */
static void atfork_prepare(void)
{
        pthread_mutex_lock(&state.lock);
}

static void atfork_after(void)
{
        pthread_mutex_unlock(&state.lock);
}

static void atfork_register(void)
{
        (void)pthread_atfork(atfork_prepare, atfork_after, atfork_after);
}

size_t convert_gc(void)
{
        pthread_once(&state.atfork_once, atfork_register);
        pthread_mutex_lock(&state.lock);
        size_t n = gc_locked();
        pthread_mutex_unlock(&state.lock);
        return n;
}

/* ---- planning ------------------------------------------------------------ */

/* One VMA's share of a new piece: moved aside by one mremap(), so it must lie in one VMA. */
struct seg {
        uintptr_t start, end;
        size_t reserve_off; /* where the original waits in the reserve during the remap */
        bool sparse;        /* anonymous: a page never touched reads as zero, like a fresh memfd page */
        bool readable;      /* else it is read through /proc/self/mem */
};

struct plan_piece {
        uintptr_t addr;
        size_t len;
        int prot;
        bool fresh; /* to be converted; else an existing memfd mapping, reused */
        int fd;     /* fresh: owned by the plan until the conversion succeeds; reused: the table's */
        uint64_t fd_offset, ino;
        dev_t dev;
        size_t seg_first, n_segs;
};

/* What a VMA looked like when planned, clipped to the range: checked again once the world is stopped. */
struct print {
        uintptr_t start, end;
        uint64_t offset, ino;
        dev_t dev;
        int prot;
        bool shared;
};

struct plan {
        uintptr_t start, end, next;
        struct plan_piece *pieces;
        size_t n_pieces, cap_pieces;
        struct seg *segs;
        size_t n_segs, cap_segs;
        struct print *prints;
        size_t n_prints, cap_prints;
        size_t n_fresh, fresh_bytes;
        bool any_unreadable;
        size_t page;
        struct tessera_error *err;
        bool err_set; /* plan_add_vma() filled err */
};

static void plan_done(struct plan *p)
{
        for (size_t i = 0; i < p->n_pieces; i++)
                if (p->pieces[i].fresh && p->pieces[i].fd >= 0)
                        close(p->pieces[i].fd);
        free(p->pieces);
        free(p->segs);
        free(p->prints);
        *p = (struct plan){0};
}

static int grow(void **array, size_t *cap, size_t n, size_t size)
{
        if (n < *cap)
                return 0;
        size_t c = *cap ? *cap * 2 : 16;
        void *a = realloc(*array, c * size);
        if (!a)
                return -ENOMEM;
        *array = a;
        *cap = c;
        return 0;
}

static bool startswith(const char *s, const char *prefix)
{
        return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* Kernel-provided mappings ([vvar], [vdso], [vsyscall], [uprobes], ...), as opposed to [heap], [stack], [anon:x]. */
static bool name_is_special(const char *name)
{
        return name[0] == '[' && !STREQ(name, "[heap]") && !startswith(name, "[stack") && !startswith(name, "[anon:");
}

static bool vma_is_hugetlb(const struct vma *v)
{
        if (v->page_size)
                return v->page_size > page_size();
        if (strstr(v->name, "/anon_hugepage"))
                return true;
        struct statfs sfs;
        return v->ino && v->name[0] == '/' && statfs(v->name, &sfs) == 0 && sfs.f_type == HUGETLBFS_MAGIC;
}

enum vma_kind { KIND_ANON, KIND_FILE, KIND_OURS };

/* Says how a VMA can be exported, or why not (-EINVAL, message in err). */
static int vma_classify(const struct vma *v, uintptr_t s, uintptr_t e, const struct table_piece **ret_ours,
                        struct tessera_error *err)
{
        const char *what = v->name[0] ? v->name : "anonymous memory";

        if (v->shared) {
                *ret_ours = table_find(v->ino, v->dev);
                if (*ret_ours)
                        return KIND_OURS;
                return tessera_error_set(err, EINVAL,
                                         "[%#lx, %#lx) is a shared mapping of %s; only private memory or memory "
                                         "exported before can be exported",
                                         (unsigned long)s, (unsigned long)e, what);
        }
        if (name_is_special(v->name))
                return tessera_error_set(err, EINVAL,
                                         "[%#lx, %#lx) is the kernel's special mapping %s, which cannot be exported",
                                         (unsigned long)s, (unsigned long)e, v->name);
        if (vma_is_hugetlb(v))
                return tessera_error_set(err, EINVAL,
                                         "[%#lx, %#lx) is hugetlb memory (%s), which cannot be converted in place; "
                                         "export a hugetlb memfd instead",
                                         (unsigned long)s, (unsigned long)e, what);
        if (!v->ino)
                return KIND_ANON;

        struct stat st;
        if (v->name[0] == '/' && stat(v->name, &st) == 0 && st.st_ino == v->ino && st.st_dev == v->dev) {
                /* A private mapping of /dev/zero is plain anonymous memory. */
                if (S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 5))
                        return KIND_ANON;
                /* Device memory (VM_IO, VM_PFNMAP) is not ordinary pages that a memfd could take over. */
                if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode))
                        return tessera_error_set(err, EINVAL,
                                                 "[%#lx, %#lx) is a mapping of the device %s, which cannot be "
                                                 "exported",
                                                 (unsigned long)s, (unsigned long)e, v->name);
        }
        return KIND_FILE; /* .data, a private file mapping: copied whole, untouched pages hold file data */
}

static int plan_add_reused(struct plan *p, uintptr_t s, uintptr_t e, const struct vma *v,
                           const struct table_piece *ours)
{
        uint64_t fd_offset = v->offset + (s - v->start);
        struct plan_piece *last = p->n_pieces ? &p->pieces[p->n_pieces - 1] : NULL;

        if (last && !last->fresh && last->ino == ours->ino && last->dev == ours->dev && last->prot == v->prot &&
            last->addr + last->len == s && last->fd_offset + last->len == fd_offset) {
                last->len += e - s;
                return 0;
        }
        if (grow((void **)&p->pieces, &p->cap_pieces, p->n_pieces, sizeof(*p->pieces)) < 0)
                return -ENOMEM;
        p->pieces[p->n_pieces++] = (struct plan_piece){
                .addr = s,
                .len = e - s,
                .prot = v->prot,
                .fd = ours->fd,
                .fd_offset = fd_offset,
                .ino = ours->ino,
                .dev = ours->dev,
        };
        return 0;
}

static int plan_add_fresh(struct plan *p, uintptr_t s, uintptr_t e, int prot, bool sparse)
{
        struct plan_piece *last = p->n_pieces ? &p->pieces[p->n_pieces - 1] : NULL;

        if (grow((void **)&p->segs, &p->cap_segs, p->n_segs, sizeof(*p->segs)) < 0)
                return -ENOMEM;
        p->segs[p->n_segs] = (struct seg){
                .start = s,
                .end = e,
                .reserve_off = p->fresh_bytes,
                .sparse = sparse,
                .readable = prot & PROT_READ,
        };
        if (!(prot & PROT_READ))
                p->any_unreadable = true;
        p->fresh_bytes += e - s;

        if (last && last->fresh && last->prot == prot && last->addr + last->len == s) {
                last->len += e - s;
                last->n_segs++;
                p->n_segs++;
                return 0;
        }
        if (grow((void **)&p->pieces, &p->cap_pieces, p->n_pieces, sizeof(*p->pieces)) < 0)
                return -ENOMEM;
        p->pieces[p->n_pieces++] = (struct plan_piece){
                .addr = s,
                .len = e - s,
                .prot = prot,
                .fresh = true,
                .fd = -1,
                .seg_first = p->n_segs,
                .n_segs = 1,
        };
        p->n_segs++;
        p->n_fresh++;
        return 0;
}

static struct print print_of(const struct vma *v, uintptr_t s, uintptr_t e)
{
        return (struct print){
                .start = s,
                .end = e,
                .offset = v->ino ? v->offset + (s - v->start) : 0,
                .ino = v->ino,
                .dev = v->dev,
                .prot = v->prot,
                .shared = v->shared,
        };
}

static const char *section_needs(uintptr_t start, uintptr_t end, const struct vma *v);

static int plan_add_vma_checked(struct plan *p, const struct vma *v)
{
        uintptr_t s = MAX(v->start, p->start), e = MIN(v->end, p->end);
        const struct table_piece *ours = NULL;
        int r;

        if (s > p->next)
                return tessera_error_set(
                        p->err, EFAULT, "nothing is mapped at %#lx (a hole up to %#lx in [%#lx, %#lx))",
                        (unsigned long)p->next, (unsigned long)s, (unsigned long)p->start, (unsigned long)p->end);
        if (grow((void **)&p->prints, &p->cap_prints, p->n_prints, sizeof(*p->prints)) < 0)
                return tessera_error_set(p->err, ENOMEM, "out of memory planning the conversion");
        p->prints[p->n_prints++] = print_of(v, s, e);

        int kind = vma_classify(v, s, e, &ours, p->err);
        if (kind < 0)
                return kind;
        const char *needed = kind == KIND_OURS ? NULL : section_needs(s, e, v);
        if (needed)
                return tessera_error_set(p->err, EINVAL, "[%#lx, %#lx) holds %s, which cannot be converted",
                                         (unsigned long)s, (unsigned long)e, needed);
        if (kind == KIND_OURS)
                r = plan_add_reused(p, s, e, v, ours);
        else
                r = plan_add_fresh(p, s, e, v->prot, kind == KIND_ANON);
        if (r < 0)
                return tessera_error_set(p->err, -r, "out of memory planning the conversion");
        p->next = e;
        return 0;
}

static int plan_add_vma(const struct vma *v, void *userdata)
{
        struct plan *p = userdata;
        int r = plan_add_vma_checked(p, v);
        if (r < 0)
                p->err_set = true;
        return r;
}

static int plan_build(struct plan *p, uintptr_t start, uintptr_t end, struct tessera_error *err)
{
        *p = (struct plan){.start = start, .end = end, .next = start, .page = page_size(), .err = err};
        int r = vma_walk(start, end, plan_add_vma, p);
        if (r < 0) {
                if (p->err_set)
                        return r;
                return tessera_error_set(err, -r, "reading /proc/thread-self/maps: %s", strerror(-r));
        }
        if (p->next < end)
                return tessera_error_set(err, EFAULT, "nothing is mapped at %#lx (a hole up to %#lx in [%#lx, %#lx))",
                                         (unsigned long)p->next, (unsigned long)end, (unsigned long)start,
                                         (unsigned long)end);
        return 0;
}

struct validation {
        const struct plan *plan;
        size_t i;
        bool changed;
};

static int validate_vma(const struct vma *v, void *userdata)
{
        struct validation *c = userdata;
        const struct plan *p = c->plan;
        struct print now = print_of(v, MAX(v->start, p->start), MIN(v->end, p->end));
        const struct print *then = c->i < p->n_prints ? &p->prints[c->i] : NULL;

        c->i++;
        if (!then || now.start != then->start || now.end != then->end || now.offset != then->offset ||
            now.ino != then->ino || now.dev != then->dev || now.prot != then->prot || now.shared != then->shared) {
                c->changed = true;
                return 1;
        }
        return 0;
}

/* Did the range's VMAs change since the plan?  Runs with the world stopped. */
static int plan_check(const struct plan *p)
{
        struct validation c = {.plan = p};
        int r = vma_walk(p->start, p->end, validate_vma, &c);
        if (r < 0)
                return r;
        return c.changed || c.i != p->n_prints ? -EAGAIN : 0;
}

/* ---- memfds -------------------------------------------------------------- */

/*
 * A memfd of `len` bytes that neither we nor an attacher can resize: a
 * shrink would SIGBUS the exporter, and tesserad refuses memfds without
 * F_SEAL_SHRINK and F_SEAL_GROW.  MFD_EXEC keeps what a private mapping
 * allows (the program may mprotect it executable later, a JIT does).
 */
static int memfd_new(struct plan_piece *pc, struct tessera_error *err)
{
        const unsigned base = MFD_CLOEXEC | MFD_ALLOW_SEALING;
        _cleanup_close_ int fd = memfd_create(MEMFD_NAME, base | MFD_EXEC);
        if (fd < 0 && errno == EINVAL) /* before Linux 6.3 */
                fd = memfd_create(MEMFD_NAME, base);
        else if (fd < 0 && errno == EACCES && !(pc->prot & PROT_EXEC)) /* vm.memfd_noexec=2 */
                fd = memfd_create(MEMFD_NAME, base | MFD_NOEXEC_SEAL);
        if (fd < 0)
                return tessera_error_set(err, errno, "memfd_create() for [%#lx, %#lx): %s", (unsigned long)pc->addr,
                                         (unsigned long)(pc->addr + pc->len), strerror(errno));
        if (ftruncate(fd, (off_t)pc->len) < 0)
                return tessera_error_set(err, errno, "sizing the memfd for [%#lx, %#lx) to %zu bytes: %s",
                                         (unsigned long)pc->addr, (unsigned long)(pc->addr + pc->len), pc->len,
                                         strerror(errno));
        if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)
                return tessera_error_set(err, errno, "sealing the memfd for [%#lx, %#lx): %s", (unsigned long)pc->addr,
                                         (unsigned long)(pc->addr + pc->len), strerror(errno));
        struct stat st;
        if (fstat(fd, &st) < 0)
                return tessera_error_set(err, errno, "fstat() of a new memfd: %s", strerror(errno));
        pc->ino = st.st_ino;
        pc->dev = st.st_dev;
        pc->fd_offset = 0;
        pc->fd = TAKE_FD(fd);
        return 0;
}

/* ---- stopping the world -------------------------------------------------- */

static long futex(uint32_t *word, int op, uint32_t val, const struct timespec *timeout)
{
        return syscall(SYS_futex, word, op, val, timeout, NULL, 0);
}

/*
 * Async-signal-safe: loads, atomics and raw futex calls.  Only our own
 * tgkill() parks a thread (SI_TKILL from this process, while a stop is on);
 * a stray copy of the signal returns at once.
 *
 * `parked` counts arrivals of the current stop and is not decremented on
 * the way out: world_stop() resets it instead.  Waiting at each stop until
 * the threads of the previous one had left the handler cost 8-13 ms here
 * (they must be scheduled first).  A thread still leaving the previous stop
 * gets the new signal once it returns (the handler blocks its own signal),
 * then parks and counts for the new stop.
 */
static void park_handler(int sig, siginfo_t *si, void *ucontext)
{
        int saved_errno = errno;
        /* Read the generation before the flag: a release between the two makes us leave, never wait for the next. */
        uint32_t gen = __atomic_load_n(&state.release_gen, __ATOMIC_SEQ_CST);

        if (si->si_code == SI_TKILL && si->si_pid == getpid() &&
            __atomic_load_n(&state.stop_active, __ATOMIC_SEQ_CST)) {
                __atomic_add_fetch(&state.parked, 1, __ATOMIC_SEQ_CST);
                futex(&state.parked, FUTEX_WAKE_PRIVATE, 1, NULL);
                while (__atomic_load_n(&state.release_gen, __ATOMIC_SEQ_CST) == gen)
                        futex(&state.release_gen, FUTEX_WAIT_PRIVATE, gen, NULL);
        }
        errno = saved_errno;
}

static int signal_resolve(struct tessera_error *err)
{
        if (state.stop_signal == 0 && !state.stop_signal_bad[0]) {
                const char *env = getenv(SIGNAL_ENV);
                uint64_t v;
                if (!env || !env[0])
                        state.stop_signal = SIGRTMAX - 2;
                else if (parse_uint64(env, (uint64_t)SIGRTMAX, &v) == 0 && (int)v >= SIGRTMIN)
                        state.stop_signal = (int)v;
                else
                        snprintf(state.stop_signal_bad, sizeof(state.stop_signal_bad), "%s", env);
        }
        if (state.stop_signal_bad[0])
                return tessera_error_set(err, EINVAL, "%s=%s is not a real-time signal number (%d..%d)", SIGNAL_ENV,
                                         state.stop_signal_bad, SIGRTMIN, SIGRTMAX);
        return state.stop_signal;
}

static int signal_install(int sig, struct tessera_error *err)
{
        struct sigaction old;
        if (sigaction(sig, NULL, &old) < 0)
                return tessera_error_set(err, errno, "reading the action of signal %d: %s", sig, strerror(errno));
        if ((old.sa_flags & SA_SIGINFO) && old.sa_sigaction == park_handler)
                return 0;
        if (!(old.sa_flags & SA_SIGINFO) && old.sa_handler == SIG_DFL) {
                struct sigaction sa = {.sa_sigaction = park_handler, .sa_flags = SA_RESTART | SA_SIGINFO};
                sigfillset(&sa.sa_mask); /* nothing else runs on a parked thread */
                if (sigaction(sig, &sa, NULL) < 0)
                        return tessera_error_set(err, errno, "installing the handler of signal %d: %s", sig,
                                                 strerror(errno));
                return 0;
        }
        return tessera_error_set(err, EBUSY,
                                 "signal %d (SIGRTMAX-%d), which XEMEM uses to stop the other threads while it "
                                 "converts memory, already has a handler in this program; set %s to a free "
                                 "real-time signal (%d..%d)",
                                 sig, SIGRTMAX - sig, SIGNAL_ENV, SIGRTMIN, SIGRTMAX);
}

struct stopped_thread {
        pid_t tid;
        unsigned scan; /* last scan of /proc/self/task that listed it */
        bool zombie;   /* an exited thread group leader: it will never run the handler */
};

struct stopper {
        int sig;
        pid_t pid, self;
        struct stopped_thread *threads;
        size_t n, cap;
        pid_t culprit;
};

static pid_t parse_tid(const char *s)
{
        uint64_t v;
        const char *end = parse_dec(s, &v);
        return end && *end == '\0' && v <= INT_MAX ? (pid_t)v : 0;
}

/* "/proc/self/task/<tid>/<file>" without snprintf (this runs while other threads are stopped). */
static void task_path(char *buf, size_t size, pid_t tid, const char *file)
{
        char digits[16];
        size_t n = 0;
        do {
                digits[n++] = (char)('0' + tid % 10);
                tid /= 10;
        } while (tid && n < sizeof(digits));
        const char *prefix = "/proc/self/task/";
        size_t at = 0;
        for (const char *p = prefix; *p && at + 1 < size; p++)
                buf[at++] = *p;
        while (n && at + 1 < size)
                buf[at++] = digits[--n];
        if (at + 1 < size)
                buf[at++] = '/';
        for (const char *p = file; *p && at + 1 < size; p++)
                buf[at++] = *p;
        buf[at] = '\0';
}

static ssize_t task_read(pid_t tid, const char *file, char *buf, size_t size)
{
        char path[64];
        task_path(path, sizeof(path), tid, file);
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        ssize_t n = read(fd, buf, size - 1);
        if (n < 0)
                return -errno;
        buf[n] = '\0';
        return n;
}

static bool task_is_zombie(pid_t tid)
{
        char buf[512];
        if (task_read(tid, "stat", buf, sizeof(buf)) < 0)
                return true; /* gone */
        const char *p = strrchr(buf, ')');
        return p && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X');
}

/* The signal mask in a "SigPnd:\t0000000000000000" line of /proc/<tid>/status. */
static uint64_t status_mask(const char *status, const char *key)
{
        const char *p = strstr(status, key);
        uint64_t v = 0;
        if (p) {
                p += strlen(key);
                while (*p == '\t' || *p == ' ')
                        p++;
                parse_hex(p, &v);
        }
        return v;
}

/* Which thread did not stop?  The one with our signal still pending, preferably because it blocks it. */
static pid_t stopper_find_blocker(const struct stopper *s, unsigned scan)
{
        uint64_t bit = 1ULL << (s->sig - 1);
        pid_t pending = 0;
        for (size_t i = 0; i < s->n; i++) {
                char buf[4096];
                if (s->threads[i].scan != scan || s->threads[i].zombie ||
                    task_read(s->threads[i].tid, "status", buf, sizeof(buf)) < 0)
                        continue;
                if (!(status_mask(buf, "SigPnd:") & bit))
                        continue;
                if (status_mask(buf, "SigBlk:") & bit)
                        return s->threads[i].tid;
                if (!pending)
                        pending = s->threads[i].tid;
        }
        return pending;
}

/* Signals a thread the first time a scan lists it.  -ENOSPC: more threads than planned for. */
static int stopper_note(struct stopper *s, pid_t tid, unsigned scan, bool *added)
{
        for (size_t i = 0; i < s->n; i++)
                if (s->threads[i].tid == tid) {
                        s->threads[i].scan = scan;
                        return 0;
                }
        if (s->n == s->cap)
                return -ENOSPC;
        if (syscall(SYS_tgkill, s->pid, tid, s->sig) < 0) {
                if (errno == ESRCH)
                        return 0; /* exited meanwhile */
                return -errno;
        }
        /* A main thread that called pthread_exit() stays listed as a zombie. */
        bool zombie = tid == s->pid && task_is_zombie(tid);
        s->threads[s->n++] = (struct stopped_thread){.tid = tid, .scan = scan, .zombie = zombie};
        *added = true;
        return 0;
}

static int tasks_scan(int task_fd, struct stopper *s, unsigned scan, bool *added)
{
        char buf[4096] __attribute__((aligned(8)));
        if (lseek(task_fd, 0, SEEK_SET) < 0)
                return -errno;
        for (;;) {
                ssize_t n = getdents64(task_fd, buf, sizeof(buf));
                if (n < 0)
                        return -errno;
                if (n == 0)
                        return 0;
                for (ssize_t off = 0; off < n;) {
                        struct dirent64 *d = (struct dirent64 *)(buf + off);
                        off += d->d_reclen;
                        pid_t tid = parse_tid(d->d_name);
                        if (tid <= 0 || tid == s->self)
                                continue;
                        int r = stopper_note(s, tid, scan, added);
                        if (r < 0)
                                return r;
                }
        }
}

/* How many other threads does the process have now? */
static int tasks_count_others(size_t *ret)
{
        _cleanup_close_ int fd = open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        char buf[4096] __attribute__((aligned(8)));
        pid_t self = gettid();
        size_t n_others = 0;

        if (fd < 0)
                return -errno;
        for (;;) {
                ssize_t n = getdents64(fd, buf, sizeof(buf));
                if (n < 0)
                        return -errno;
                if (n == 0)
                        break;
                for (ssize_t off = 0; off < n;) {
                        struct dirent64 *d = (struct dirent64 *)(buf + off);
                        off += d->d_reclen;
                        pid_t tid = parse_tid(d->d_name);
                        if (tid > 0 && tid != self)
                                n_others++;
                }
        }
        *ret = n_others;
        return 0;
}

static void world_release(void)
{
        __atomic_add_fetch(&state.release_gen, 1, __ATOMIC_SEQ_CST);
        __atomic_store_n(&state.stop_active, 0, __ATOMIC_SEQ_CST);
        futex(&state.release_gen, FUTEX_WAKE_PRIVATE, INT_MAX, NULL);
}

/*
 * Parks every other thread in park_handler().  Threads may be created
 * meanwhile, so /proc/self/task is read again until a scan finds no new one
 * and all signalled threads still alive are parked.  Uses no heap (another
 * thread may be parked inside malloc).  On failure everyone is released:
 * -EBUSY (s->culprit did not stop within STOP_TIMEOUT_NS), -ENOSPC (more
 * threads than s->cap), or another negative errno.
 */
static int world_stop(struct stopper *s)
{
        s->pid = getpid();
        s->self = gettid();
        s->n = 0;
        s->culprit = 0;

        _cleanup_close_ int task_fd = open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (task_fd < 0)
                return -errno;
        /* Reset before the flag goes up: nothing parks while it is down. */
        __atomic_store_n(&state.parked, 0, __ATOMIC_SEQ_CST);
        __atomic_store_n(&state.stop_active, 1, __ATOMIC_SEQ_CST);
        uint64_t deadline = now_ns() + STOP_TIMEOUT_NS, next_check = now_ns() + ZOMBIE_CHECK_NS;
        for (unsigned scan = 1;; scan++) {
                bool added = false;
                int r = tasks_scan(task_fd, s, scan, &added);
                if (r < 0) {
                        world_release();
                        return r;
                }
                size_t expected = 0;
                for (size_t i = 0; i < s->n; i++)
                        if (s->threads[i].scan == scan && !s->threads[i].zombie)
                                expected++;
                uint32_t seen = __atomic_load_n(&state.parked, __ATOMIC_SEQ_CST);
                if (!added && seen >= expected)
                        return 0;

                uint64_t t = now_ns();
                if (t >= deadline) {
                        s->culprit = stopper_find_blocker(s, scan);
                        world_release();
                        return -EBUSY;
                }
                if (t >= next_check) {
                        for (size_t i = 0; i < s->n; i++)
                                if (s->threads[i].scan == scan && !s->threads[i].zombie)
                                        s->threads[i].zombie = task_is_zombie(s->threads[i].tid);
                        next_check = t + 5 * ZOMBIE_CHECK_NS;
                        continue;
                }
                struct timespec wait = {.tv_nsec = 1000000};
                futex(&state.parked, FUTEX_WAIT_PRIVATE, seen, &wait);
        }
}

/* ---- the critical section ------------------------------------------------ */

/*
 * Everything between the first copied byte and the last remap runs here, on
 * the private stack of the scratch mapping (see the top of this file).  From
 * the moment an original VMA is moved aside until the memfd is mapped in
 * its place, its addresses are unmapped: so the section reads and writes
 * nothing but the scratch mapping, which holds a copy of what it needs of
 * the plan, and calls nothing but its own functions and the kernel (checked
 * with objdump: no call out, no %fs access).  Ranges holding its code are
 * refused when planning.
 */
struct section_piece {
        uintptr_t addr;
        size_t len;
        int prot;
        int fd;
        uint64_t fd_offset;
        size_t seg_first, n_segs;
};

struct section {
        size_t page;
        int pagemap_fd; /* -1: copy every page */
        int mem_fd;     /* /proc/self/mem, for pages the process may not read; -1 if none */
        uintptr_t reserve;
        const struct section_piece *pieces; /* the fresh pieces only */
        size_t n_pieces;
        const struct seg *segs;
        size_t n_segs;
        uint64_t *pagemap;
        char *bounce;
        size_t moved; /* segments moved to the reserve so far, in order */
        int error;    /* negative errno */
        const char *step;
        uintptr_t at;
        int undo_error;
        const char *undo_step;
        uintptr_t undo_at;
        ucontext_t caller, runner;
};

/* The section's system calls: the kernel's result, a negative errno on failure; no libc involved. */
#if defined(__x86_64__)
static inline long raw_syscall(long n, long a, long b, long c, long d, long e, long f)
{
        register long r10 __asm__("r10") = d;
        register long r8 __asm__("r8") = e;
        register long r9 __asm__("r9") = f;
        long ret;
        __asm__ volatile("syscall"
                         : "=a"(ret)
                         : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                         : "rcx", "r11", "memory");
        return ret;
}
#elif defined(__aarch64__)
static inline long raw_syscall(long n, long a, long b, long c, long d, long e, long f)
{
        register long x8 __asm__("x8") = n;
        register long x0 __asm__("x0") = a;
        register long x1 __asm__("x1") = b;
        register long x2 __asm__("x2") = c;
        register long x3 __asm__("x3") = d;
        register long x4 __asm__("x4") = e;
        register long x5 __asm__("x5") = f;
        __asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5) : "memory");
        return x0;
}
#else
/* Elsewhere libc's syscall(): then a range holding libc's GOT or this thread's errno must not be converted. */
static inline long raw_syscall(long n, long a, long b, long c, long d, long e, long f)
{
        long r = syscall(n, a, b, c, d, e, f);
        return r == -1 ? -errno : r;
}
#endif

static bool raw_failed(long r)
{
        return (unsigned long)r > -4096UL;
}

/* Code of the section: no canary read from the TCB. */
#if defined(__has_attribute)
#if __has_attribute(no_stack_protector)
#define SECTION_CODE __attribute__((no_stack_protector))
#endif
#endif
#ifndef SECTION_CODE
#define SECTION_CODE
#endif

SECTION_CODE static int section_fail(struct section *s, int error, const char *step, uintptr_t at)
{
        s->error = error;
        s->step = step;
        s->at = at;
        return error;
}

SECTION_CODE static bool page_in_use(uint64_t entry)
{
        return entry & (PM_PRESENT | PM_SWAPPED);
}

SECTION_CODE static bool pagemap_read(struct section *s, uintptr_t at, size_t n_pages)
{
        size_t want = n_pages * sizeof(uint64_t), got = 0;
        long off = (long)(at / s->page * sizeof(uint64_t));
        if (s->pagemap_fd < 0)
                return false;
        while (got < want) {
                long n = raw_syscall(SYS_pread64, s->pagemap_fd, (long)((char *)s->pagemap + got), (long)(want - got),
                                     off + (long)got, 0, 0);
                if (n <= 0)
                        return false;
                got += (size_t)n;
        }
        return true;
}

SECTION_CODE static int write_all(struct section *s, int fd, const char *from, size_t len, long off, uintptr_t src)
{
        while (len > 0) {
                long n = raw_syscall(SYS_pwrite64, fd, (long)from, (long)MIN(len, MAX_IO_CHUNK), off, 0, 0);
                if (n < 0)
                        return section_fail(s, (int)n, "copying into the memfd", src);
                if (n == 0)
                        return section_fail(s, -EIO, "copying into the memfd", src);
                from += n;
                src += (uintptr_t)n;
                off += n;
                len -= (size_t)n;
        }
        return 0;
}

/*
 * pwrite() from the original pages rather than memcpy() into a mapping of
 * the memfd.  Measured here on 1 GiB in fresh processes: pwrite 0.34-3.0 s,
 * memcpy into a mapping 1.3-2.1 s, into a MAP_POPULATE'd mapping 0.66-2.0 s;
 * the kernel's page allocation dominates and varies from run to run (sys
 * time tracks wall time).  pwrite is as fast at best, takes no page faults
 * on the memfd side, and allocates only the pages written; a populated
 * mapping would also fill the pages skipped.
 */
SECTION_CODE static int copy_run(struct section *s, const struct section_piece *pc, const struct seg *sg, uintptr_t src,
                                 size_t len)
{
        long off = (long)(pc->fd_offset + (src - pc->addr));
        if (sg->readable)
                return write_all(s, pc->fd, (const char *)src, len, off, src);

        /* PROT_NONE or write-only: /proc/self/mem reads through the protection (FOLL_FORCE). */
        if (s->mem_fd < 0)
                return section_fail(s, -EACCES, "reading memory the process may not read", src);
        while (len > 0) {
                long n = raw_syscall(SYS_pread64, s->mem_fd, (long)s->bounce, (long)MIN(len, BOUNCE_SIZE), (long)src, 0,
                                     0);
                if (n <= 0)
                        return section_fail(s, n < 0 ? (int)n : -EIO, "reading /proc/self/mem", src);
                int r = write_all(s, pc->fd, s->bounce, (size_t)n, off, src);
                if (r < 0)
                        return r;
                src += (uintptr_t)n;
                off += n;
                len -= (size_t)n;
        }
        return 0;
}

SECTION_CODE static int copy_seg(struct section *s, const struct section_piece *pc, const struct seg *sg)
{
        size_t page = s->page;
        for (uintptr_t at = sg->start; at < sg->end;) {
                size_t n = MIN((sg->end - at) / page, (size_t)PAGEMAP_BATCH);
                int r = 0;
                if (!sg->sparse || !pagemap_read(s, at, n)) {
                        r = copy_run(s, pc, sg, at, n * page);
                } else {
                        for (size_t i = 0; i < n && r == 0;) {
                                if (!page_in_use(s->pagemap[i])) {
                                        i++;
                                        continue;
                                }
                                size_t j = i + 1;
                                while (j < n && page_in_use(s->pagemap[j]))
                                        j++;
                                r = copy_run(s, pc, sg, at + i * page, (j - i) * page);
                                i = j;
                        }
                }
                if (r < 0)
                        return r;
                at += n * page;
        }
        return 0;
}

SECTION_CODE static int section_copy(struct section *s)
{
        for (size_t i = 0; i < s->n_pieces; i++) {
                const struct section_piece *pc = &s->pieces[i];
                for (size_t j = 0; j < pc->n_segs; j++) {
                        int r = copy_seg(s, pc, &s->segs[pc->seg_first + j]);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

SECTION_CODE static long move_range(uintptr_t from, size_t len, uintptr_t to)
{
        return raw_syscall(SYS_mremap, (long)from, (long)len, (long)len, MREMAP_MAYMOVE | MREMAP_FIXED, (long)to, 0);
}

/* Puts the originals moved so far back in place (over any memfd mapped there), last first. */
SECTION_CODE static void section_undo(struct section *s)
{
        while (s->moved > 0) {
                const struct seg *sg = &s->segs[--s->moved];
                long r = move_range(s->reserve + sg->reserve_off, sg->end - sg->start, sg->start);
                if (raw_failed(r) && !s->undo_error) {
                        s->undo_error = (int)r;
                        s->undo_step = "moving the original memory back";
                        s->undo_at = sg->start;
                }
        }
}

/*
 * Moves the originals aside rather than mapping over them, so that a
 * failure can put back exactly what was there (private file mappings
 * included), not a copy.
 */
SECTION_CODE static int section_remap(struct section *s)
{
        for (size_t i = 0; i < s->n_pieces; i++) {
                const struct section_piece *pc = &s->pieces[i];
                for (size_t j = 0; j < pc->n_segs; j++) {
                        const struct seg *sg = &s->segs[pc->seg_first + j];
                        long r = move_range(sg->start, sg->end - sg->start, s->reserve + sg->reserve_off);
                        if (raw_failed(r)) {
                                section_fail(s, (int)r, "moving the original memory aside", sg->start);
                                section_undo(s);
                                return s->error;
                        }
                        s->moved++;
                }
                long m = raw_syscall(SYS_mmap, (long)pc->addr, (long)pc->len, pc->prot,
                                     MAP_SHARED | MAP_FIXED_NOREPLACE, pc->fd, 0);
                if (raw_failed(m) || (uintptr_t)m != pc->addr) {
                        section_fail(s, raw_failed(m) ? (int)m : -EEXIST, "mapping the memfd", pc->addr);
                        if (!raw_failed(m)) /* a kernel before 4.17 took the address as a hint */
                                raw_syscall(SYS_munmap, m, (long)pc->len, 0, 0, 0, 0);
                        section_undo(s);
                        return s->error;
                }
        }
        return 0;
}

SECTION_CODE static void section_run(void)
{
        /* Read the global once, before anything moves: the .bss holding it may be in the range. */
        struct section *s = *(struct section *volatile *)&state.section_current;
        if (section_copy(s) == 0)
                section_remap(s);
}

/* Runs section_run() on `stack`; returns its result. */
static int section_enter(struct section *s, void *stack, size_t stack_size)
{
        if (getcontext(&s->runner) < 0)
                return section_fail(s, -errno, "getcontext()", 0);
        s->runner.uc_stack.ss_sp = stack;
        s->runner.uc_stack.ss_size = stack_size;
        s->runner.uc_link = &s->caller;
        makecontext(&s->runner, section_run, 0);
        state.section_current = s;
        if (swapcontext(&s->caller, &s->runner) < 0)
                return section_fail(s, -errno, "swapcontext()", 0);
        return s->error;
}

/*
 * Does [start, end) of the VMA v hold what must stay private and in place:
 * the code that runs while the range is partly unmapped (the whole VMA that
 * holds it), or this module's state, which a fork() child must not share?
 */
static const char *section_needs(uintptr_t start, uintptr_t end, const struct vma *v)
{
        if ((uintptr_t)&state < end && (uintptr_t)(&state + 1) > start)
                return "XEMEM's own state";
        if ((uintptr_t)section_run >= v->start && (uintptr_t)section_run < v->end)
                return "the code that converts memory";
        return NULL;
}

/* ---- one conversion ------------------------------------------------------ */

/*
 * Memory the conversion needs but the range must not hold (mmap() never
 * places it inside a range that is mapped): a guard page, the section's
 * stack, the section with its copy of the plan, the pagemap and bounce
 * buffers; and address space where the originals wait during the remap.
 */
struct scratch {
        void *base;
        size_t size;
        uintptr_t reserve;
        size_t reserve_size;
        struct section *section;
};

static void scratch_done(struct scratch *sc)
{
        if (sc->base)
                munmap(sc->base, sc->size);
        if (sc->reserve)
                munmap((void *)sc->reserve, sc->reserve_size);
        *sc = (struct scratch){0};
}

static size_t align_up(size_t n, size_t to)
{
        return (n + to - 1) / to * to;
}

static int scratch_new(struct scratch *sc, const struct plan *p, struct tessera_error *err)
{
        size_t page = p->page;
        size_t at_section = page + SECTION_STACK_SIZE;
        size_t at_pieces = at_section + align_up(sizeof(struct section), 64);
        size_t at_segs = at_pieces + align_up(p->n_fresh * sizeof(struct section_piece), 64);
        size_t at_pagemap = at_segs + align_up(p->n_segs * sizeof(struct seg), 64);
        size_t at_bounce = at_pagemap + PAGEMAP_BATCH * sizeof(uint64_t);

        sc->size = align_up(at_bounce + BOUNCE_SIZE, page);
        void *b = mmap(NULL, sc->size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
        if (b == MAP_FAILED)
                return tessera_error_set(err, errno, "mapping %zu bytes of scratch memory: %s", sc->size,
                                         strerror(errno));
        sc->base = b;
        if (mprotect(b, page, PROT_NONE) < 0) { /* the guard page under the section's stack */
                int r = tessera_error_set(err, errno, "guarding the scratch stack: %s", strerror(errno));
                scratch_done(sc);
                return r;
        }
        void *res = mmap(NULL, p->fresh_bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (res == MAP_FAILED) {
                int r = tessera_error_set(err, errno, "reserving %zu bytes of address space: %s", p->fresh_bytes,
                                          strerror(errno));
                scratch_done(sc);
                return r;
        }
        sc->reserve = (uintptr_t)res;
        sc->reserve_size = p->fresh_bytes;

        char *base = b;
        struct section_piece *pieces = (struct section_piece *)(base + at_pieces);
        struct seg *segs = (struct seg *)(base + at_segs);
        size_t n = 0;
        for (size_t i = 0; i < p->n_pieces; i++) {
                const struct plan_piece *pc = &p->pieces[i];
                if (pc->fresh)
                        pieces[n++] = (struct section_piece){
                                .addr = pc->addr,
                                .len = pc->len,
                                .prot = pc->prot,
                                .fd = pc->fd,
                                .fd_offset = pc->fd_offset,
                                .seg_first = pc->seg_first,
                                .n_segs = pc->n_segs,
                        };
        }
        memcpy(segs, p->segs, p->n_segs * sizeof(*segs));

        sc->section = (struct section *)(base + at_section);
        *sc->section = (struct section){
                .page = page,
                .pagemap_fd = -1,
                .mem_fd = -1,
                .reserve = sc->reserve,
                .pieces = pieces,
                .n_pieces = n,
                .segs = segs,
                .n_segs = p->n_segs,
                .pagemap = (uint64_t *)(base + at_pagemap),
                .bounce = base + at_bounce,
        };
        return 0;
}

static int section_error(const struct section *s, const struct plan *p, struct tessera_error *err)
{
        int r = tessera_error_set(err, -s->error, "converting [%#lx, %#lx): %s at %#lx: %s", (unsigned long)p->start,
                                  (unsigned long)p->end, s->step, (unsigned long)s->at, strerror(-s->error));
        if (s->undo_error && err) {
                size_t l = strlen(err->msg);
                snprintf(err->msg + l, sizeof(err->msg) - l,
                         "; undoing it failed too (%s at %#lx: %s), so part of the range may be unmapped", s->undo_step,
                         (unsigned long)s->undo_at, strerror(-s->undo_error));
        }
        return r;
}

static int stop_error(int r, const struct stopper *st, struct tessera_error *err)
{
        if (r == -EBUSY && st->culprit)
                return tessera_error_set(err, EBUSY,
                                         "thread %d of this process did not stop within 1 s for signal %d: it blocks "
                                         "the signal (or never leaves the kernel), and memory cannot be converted "
                                         "while it may write; unblock signal %d in it, or choose another signal "
                                         "with %s",
                                         (int)st->culprit, st->sig, st->sig, SIGNAL_ENV);
        if (r == -EBUSY)
                return tessera_error_set(
                        err, EBUSY, "the other threads of this process did not stop within 1 s for signal %d", st->sig);
        return tessera_error_set(err, -r, "stopping the other threads: %s", strerror(-r));
}

/*
 * Copies and remaps the plan's fresh pieces, all other threads stopped.
 * -EAGAIN: the mappings changed after planning; plan again.
 */
static int convert_apply(struct plan *p, const struct scratch *sc, struct tessera_error *err)
{
        struct section *s = sc->section;
        _cleanup_close_ int pagemap_fd = open("/proc/thread-self/pagemap", O_RDONLY | O_CLOEXEC);
        _cleanup_close_ int mem_fd = p->any_unreadable ? open("/proc/thread-self/mem", O_RDONLY | O_CLOEXEC) : -1;
        struct stopper st = {.cap = 0};
        _cleanup_free_ struct stopped_thread *threads = NULL;
        sigset_t all, saved;
        size_t others;
        int r;

        s->pagemap_fd = pagemap_fd; /* if it cannot be read, every page is copied */
        s->mem_fd = mem_fd;

        sigfillset(&all);
        /* No signal handler of the program may run here and write to the range while it is copied. */
        pthread_sigmask(SIG_SETMASK, &all, &saved);
        r = tasks_count_others(&others);
        if (r < 0) {
                pthread_sigmask(SIG_SETMASK, &saved, NULL);
                return tessera_error_set(err, -r, "listing /proc/self/task: %s", strerror(-r));
        }
        if (others > 0) {
                st.sig = signal_resolve(err);
                if (st.sig < 0 || (r = signal_install(st.sig, err)) < 0) {
                        pthread_sigmask(SIG_SETMASK, &saved, NULL);
                        return st.sig < 0 ? st.sig : r;
                }
                for (size_t cap = others * 2 + 16;; cap *= 4) {
                        free(threads);
                        threads = calloc(cap, sizeof(*threads));
                        if (!threads) {
                                pthread_sigmask(SIG_SETMASK, &saved, NULL);
                                return tessera_error_set(err, ENOMEM, "out of memory for %zu thread slots", cap);
                        }
                        st.threads = threads;
                        st.cap = cap;
                        r = world_stop(&st);
                        if (r != -ENOSPC)
                                break;
                }
                if (r < 0) {
                        pthread_sigmask(SIG_SETMASK, &saved, NULL);
                        return stop_error(r, &st, err);
                }
        }

        r = plan_check(p);
        if (r == 0)
                r = section_enter(s, (char *)sc->base + page_size(), SECTION_STACK_SIZE);
        else if (r != -EAGAIN)
                section_fail(s, r, "reading /proc/thread-self/maps again", p->start);

        if (others > 0)
                world_release();
        pthread_sigmask(SIG_SETMASK, &saved, NULL);

        if (r == -EAGAIN)
                return r;
        if (r < 0)
                return section_error(s, p, err);
        return 0;
}

static void pieces_out(const struct plan *p, struct xemem_piece *out)
{
        for (size_t i = 0; i < p->n_pieces; i++) {
                const struct plan_piece *pc = &p->pieces[i];
                out[i] = (struct xemem_piece){
                        .addr = pc->addr,
                        .len = pc->len,
                        .fd = pc->fd,
                        .fd_offset = pc->fd_offset,
                        .ino = pc->ino,
                        .prot = pc->prot,
                };
        }
}

/* Hands the fresh memfds to the table (room reserved beforehand: nothing here can fail). */
static void plan_commit(struct plan *p)
{
        for (size_t i = 0; i < p->n_pieces; i++) {
                struct plan_piece *pc = &p->pieces[i];
                if (!pc->fresh)
                        continue;
                state.table[state.table_n++] = (struct table_piece){
                        .fd = pc->fd,
                        .addr = pc->addr,
                        .len = pc->len,
                        .prot = pc->prot,
                        .ino = pc->ino,
                        .dev = pc->dev,
                };
                pc->fresh = false; /* the table owns the fd now */
        }
}

static int convert_once(uintptr_t addr, size_t len, struct xemem_piece **ret, size_t *n_ret, struct tessera_error *err)
{
        struct plan p;
        struct scratch sc = {0};
        _cleanup_free_ struct xemem_piece *out = NULL;

        int r = plan_build(&p, addr, addr + len, err);
        for (size_t i = 0; r == 0 && i < p.n_pieces; i++)
                if (p.pieces[i].fresh)
                        r = memfd_new(&p.pieces[i], err);
        if (r == 0 && (!(out = calloc(MAX(p.n_pieces, 1), sizeof(*out))) || table_reserve(p.n_fresh) < 0))
                r = tessera_error_set(err, ENOMEM, "out of memory for %zu pieces", p.n_pieces);
        if (r == 0 && p.n_fresh > 0)
                r = scratch_new(&sc, &p, err);
        if (r == 0 && p.n_fresh > 0)
                r = convert_apply(&p, &sc, err);
        if (r == 0) {
                pieces_out(&p, out);
                plan_commit(&p);
                *ret = TAKE_PTR(out);
                *n_ret = p.n_pieces;
        }
        plan_done(&p);     /* closes the memfds of a failed attempt */
        scratch_done(&sc); /* frees the originals of a successful one */
        return r;
}

int convert_range(uintptr_t addr, size_t len, struct xemem_piece **ret, size_t *n_ret, struct tessera_error *err)
{
        size_t page = page_size();

        if (!ret || !n_ret)
                return tessera_error_set(err, EINVAL, "convert_range() needs somewhere to put the pieces");
        if (addr % page || len % page || len == 0 || addr + len < addr)
                return tessera_error_set(err, EINVAL, "[%#lx, +%zu) is not a non-empty range of whole %zu-byte pages",
                                         (unsigned long)addr, len, page);

        pthread_once(&state.atfork_once, atfork_register);
        _cleanup_(unlockp) pthread_mutex_t *lock = &state.lock;
        pthread_mutex_lock(lock);
        gc_locked();
        for (int attempt = 0; attempt < PLAN_ATTEMPTS; attempt++) {
                int r = convert_once(addr, len, ret, n_ret, err);
                if (r != -EAGAIN)
                        return r;
        }
        return tessera_error_set(err, EAGAIN,
                                 "the mappings of [%#lx, %#lx) kept changing while they were being converted",
                                 (unsigned long)addr, (unsigned long)(addr + len));
}
