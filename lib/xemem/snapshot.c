/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * XASM snapshots, producer side.
 *
 * The live range is registered with a userfaultfd of this process in
 * write-protect mode and protected as a whole; that is the snapshot's
 * instant.  From then on a page reaches the snapshot memfd in one of two
 * ways, whichever comes first:
 *   - the producer writes it: the write faults, the fault thread copies the
 *     page (still unchanged) into the snapshot and lifts its protection,
 *     which lets the write through;
 *   - the copy thread reaches it: it copies the page and lifts the
 *     protection of its chunk.
 * Pages go into the snapshot memfd with UFFDIO_COPY through this module's
 * own mapping of it, registered in MISSING mode.  UFFDIO_COPY inserts a
 * whole page atomically and refuses (EEXIST) to replace one already there,
 * so the first copy of a page wins and a later, racing copy is dropped.
 * Every copy reads the live page before its protection is lifted, hence
 * before any later write, so whichever copy wins holds the old data.  The
 * two threads therefore need no lock between them, and a faulting
 * producer waits for its own page only, never for a chunk of the copy
 * thread.  It also keeps "a page present in the snapshot memfd holds its
 * final data" true at every moment, which snapshot readers that fill
 * missing pages on their side rely on.
 *
 * Limits, by construction:
 *   - only writes through this mapping are seen; writes through another
 *     mapping (another process, or a second mapping of the memfd here) or
 *     with write(2) on the memfd go straight to the live pages;
 *   - writes racing with snapshot_start() land on either side of the
 *     instant, page by page; a producer that needs a cut across pages
 *     holds its writers while it calls snapshot_start();
 *   - the range must stay mapped until done() has been called;
 *   - reading a hole of the live memfd allocates a page there (shmem and
 *     hugetlb have no shared zero page), so a sparse segment ends up fully
 *     allocated, live and snapshot alike.  Telling holes apart safely
 *     would need the live memfd itself (SEEK_HOLE): mincore() reports
 *     swapped-out tmpfs pages and hugetlb pages not mapped here as absent.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "snapshot.h"
#include "util.h"

/* Bytes the copy thread takes in one step: one UFFDIO_COPY and one un-protect. */
#define SNAPSHOT_CHUNK ((size_t)256 << 10)

/*
 * PROCMAP_QUERY (Linux 6.11) on /proc/self/maps: the VMA covering an
 * address, with its page size, without the page-table walk of smaps.
 * Declared here under our own names, since the installed headers may
 * predate it.
 */
struct snapshot_procmap_query {
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
#define SNAPSHOT_PROCMAP_QUERY      _IOWR('f', 17, struct snapshot_procmap_query)
#define SNAPSHOT_PROCMAP_VMA_SHARED 0x08

struct snapshot {
        uintptr_t addr;
        size_t len;
        size_t page_size; /* the live mapping's: the unit of protection and of copy */
        size_t n_pages;
        size_t dst_page_size;
        dev_t dst_dev;
        ino_t dst_ino;
        uint8_t *dst; /* this module's mapping of the snapshot memfd, or MAP_FAILED */
        int uffd;
        int stop_fd;      /* eventfd: tells the fault thread to return */
        uint64_t *copied; /* one bit a page: the snapshot has it (a hint; UFFDIO_COPY decides) */
        int error;        /* first failure, a negative errno; atomic */
        uint64_t faults;  /* atomic */
        void (*done)(void *arg, int result);
        void *arg;
        pthread_t fault_thread, copy_thread;
        bool fault_thread_running, copy_thread_running;
        int result;
        bool claimed;
        struct snapshot *next; /* in `active` */
};

/* Snapshots under way in this process, so that no two cover the same pages or fill the same memfd. */
static pthread_mutex_t active_lock = PTHREAD_MUTEX_INITIALIZER;
static struct snapshot *active;

struct vma_info {
        uintptr_t start, end;
        bool shared;
        size_t page_size;
};

static int vma_by_query(int maps_fd, uintptr_t a, struct vma_info *ret)
{
        struct snapshot_procmap_query q = {
                .size = sizeof(q),
                .query_addr = a,
        };
        if (ioctl(maps_fd, SNAPSHOT_PROCMAP_QUERY, &q) < 0)
                return -errno;
        *ret = (struct vma_info){
                .start = q.vma_start,
                .end = q.vma_end,
                .shared = q.vma_flags & SNAPSHOT_PROCMAP_VMA_SHARED,
                .page_size = q.vma_page_size,
        };
        return 0;
}

/* For kernels without PROCMAP_QUERY. */
static int vma_by_smaps(uintptr_t a, struct vma_info *ret)
{
        _cleanup_fclose_ FILE *f = fopen("/proc/self/smaps", "re");
        if (!f)
                return -errno;
        _cleanup_free_ char *line = NULL;
        size_t size = 0;
        bool inside = false;
        while (getline(&line, &size, f) > 0) {
                unsigned long start, end, kib;
                char perms[5];
                /* Only VMA header lines have this shape; field lines never have a '-' after hex digits. */
                if (sscanf(line, "%lx-%lx %4s", &start, &end, perms) == 3) {
                        inside = start <= a && a < end;
                        ret->start = start;
                        ret->end = end;
                        ret->shared = perms[3] == 's';
                        continue;
                }
                if (inside && sscanf(line, "KernelPageSize: %lu kB", &kib) == 1) {
                        ret->page_size = (size_t)kib << 10;
                        return 0;
                }
        }
        return -ENOENT;
}

static int vma_at(int maps_fd, uintptr_t a, struct vma_info *ret)
{
        int r = vma_by_query(maps_fd, a, ret);
        if (r == -ENOTTY || r == -EINVAL)
                r = vma_by_smaps(a, ret);
        return r;
}

/* The page size of the VMAs covering [addr, addr + len): all MAP_SHARED, all with the same page size. */
static int range_page_size(uintptr_t addr, size_t len, size_t *ret, struct tessera_error *err)
{
        _cleanup_close_ int maps_fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
        if (maps_fd < 0)
                return tessera_error_set(err, errno, "cannot open /proc/self/maps: %s", strerror(errno));
        size_t page_size = 0;
        for (uintptr_t a = addr; a < addr + len;) {
                struct vma_info v = {0};
                int r = vma_at(maps_fd, a, &v);
                if (r == -ENOENT)
                        return tessera_error_set(err, EFAULT, "address 0x%lx of the range [0x%lx, +%zu) is not mapped",
                                                 (unsigned long)a, (unsigned long)addr, len);
                if (r < 0)
                        return tessera_error_set(err, -r, "cannot find the mapping of 0x%lx in /proc/self/maps: %s",
                                                 (unsigned long)a, strerror(-r));
                if (!v.shared)
                        return tessera_error_set(err, EINVAL,
                                                 "mapping [0x%lx, 0x%lx) is private: snapshots need a MAP_SHARED "
                                                 "mapping of a shmem or hugetlb memfd",
                                                 (unsigned long)v.start, (unsigned long)v.end);
                if (page_size && v.page_size != page_size)
                        return tessera_error_set(err, EINVAL,
                                                 "range [0x%lx, +%zu) mixes %zu-byte and %zu-byte pages: snapshot "
                                                 "each part on its own",
                                                 (unsigned long)addr, len, page_size, v.page_size);
                page_size = v.page_size;
                a = v.end;
        }
        *ret = page_size;
        return 0;
}

/* Checks the snapshot memfd: big enough, empty (UFFDIO_COPY never replaces a page), pages no larger than ours. */
static int dst_inspect(struct snapshot *s, int dst_fd, struct tessera_error *err)
{
        struct stat st;
        if (fstat(dst_fd, &st) < 0)
                return tessera_error_set(err, errno, "snapshot memfd (fd %d): %s", dst_fd, strerror(errno));
        if (!S_ISREG(st.st_mode) || st.st_size < 0 || (uint64_t)st.st_size < s->len)
                return tessera_error_set(err, EINVAL,
                                         "snapshot memfd (fd %d) must be a memfd of at least %zu bytes, not %lld",
                                         dst_fd, s->len, (long long)st.st_size);
        if (st.st_blocks != 0)
                return tessera_error_set(err, EINVAL,
                                         "snapshot memfd (fd %d) already holds data (%lld blocks): pass a fresh memfd",
                                         dst_fd, (long long)st.st_blocks);
        struct statfs sf;
        if (fstatfs(dst_fd, &sf) < 0)
                return tessera_error_set(err, errno, "snapshot memfd (fd %d): %s", dst_fd, strerror(errno));
        s->dst_page_size = sf.f_type == HUGETLBFS_MAGIC ? (size_t)sf.f_bsize : (size_t)sysconf(_SC_PAGESIZE);
        if (s->page_size % s->dst_page_size != 0)
                return tessera_error_set(err, EINVAL,
                                         "snapshot memfd (fd %d) has %zu-byte pages, larger than the mapping's %zu",
                                         dst_fd, s->dst_page_size, s->page_size);
        s->dst_dev = st.st_dev;
        s->dst_ino = st.st_ino;
        return 0;
}

static int active_claim(struct snapshot *s, struct tessera_error *err)
{
        int r = 0;
        pthread_mutex_lock(&active_lock);
        for (struct snapshot *o = active; o; o = o->next) {
                if (s->addr < o->addr + o->len && o->addr < s->addr + s->len) {
                        r = tessera_error_set(err, EBUSY,
                                              "range [0x%lx, +%zu) overlaps [0x%lx, +%zu), whose snapshot is under way",
                                              (unsigned long)s->addr, s->len, (unsigned long)o->addr, o->len);
                        break;
                }
                if (s->dst_dev == o->dst_dev && s->dst_ino == o->dst_ino) {
                        r = tessera_error_set(err, EBUSY,
                                              "the snapshot memfd is already being filled from [0x%lx, +%zu)",
                                              (unsigned long)o->addr, o->len);
                        break;
                }
        }
        if (r == 0) {
                s->next = active;
                active = s;
                s->claimed = true;
        }
        pthread_mutex_unlock(&active_lock);
        return r;
}

static void active_release(struct snapshot *s)
{
        if (!s->claimed)
                return;
        pthread_mutex_lock(&active_lock);
        for (struct snapshot **p = &active; *p; p = &(*p)->next)
                if (*p == s) {
                        *p = s->next;
                        break;
                }
        s->claimed = false;
        pthread_mutex_unlock(&active_lock);
}

/*
 * Never UFFD_USER_MODE_ONLY as a way around a refusal: with it, a write the
 * kernel makes on the producer's behalf (read(2) into the range) fails with
 * EFAULT instead of waiting for the page to be preserved.
 */
static int uffd_open(int uffd_dev, struct tessera_error *err)
{
        if (uffd_dev >= 0) {
                int fd = ioctl(uffd_dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
                if (fd < 0)
                        return tessera_error_set(err, errno,
                                                 "USERFAULTFD_IOC_NEW on fd %d (an open /dev/userfaultfd): %s",
                                                 uffd_dev, strerror(errno));
                return fd;
        }
        int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
        if (fd < 0 && errno == EPERM)
                return tessera_error_set(err, EPERM,
                                         "userfaultfd(2) refused (vm.unprivileged_userfaultfd=0): snapshots need "
                                         "access to /dev/userfaultfd (pass it as uffd_dev) or CAP_SYS_PTRACE");
        if (fd < 0)
                return tessera_error_set(err, errno, "userfaultfd(2): %s", strerror(errno));
        return fd;
}

/*
 * UFFD_FEATURE_WP_UNPOPULATED is not requested, on purpose: it only makes
 * anonymous memory use pte markers.  For shmem and hugetlb the kernel always
 * puts a marker in an empty pte when it write-protects a range, so a page
 * that is only in the page cache, or not allocated at all, is protected
 * without MADV_POPULATE_READ first.  Checked on Linux 6.18, and by the
 * test: pages written with pwrite(2) before the mapping existed, and
 * holes, are preserved.
 */
static int uffd_enable(int uffd, struct tessera_error *err)
{
        struct uffdio_api api = {
                .api = UFFD_API,
                .features = UFFD_FEATURE_WP_HUGETLBFS_SHMEM,
        };
        if (ioctl(uffd, UFFDIO_API, &api) < 0) {
                int e = errno;
                return tessera_error_set(err, e == EINVAL ? EOPNOTSUPP : e,
                                         "UFFDIO_API: userfaultfd write-protection of shmem and hugetlb (Linux 5.19 "
                                         "or later) is not available: %s",
                                         strerror(e));
        }
        return 0;
}

static int uffd_register(int uffd, uintptr_t a, size_t len, uint64_t mode, uint64_t need_ioctls, const char *what,
                         struct tessera_error *err)
{
        struct uffdio_register reg = {
                .range = {.start = a, .len = len},
                .mode = mode,
        };
        if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0) {
                int e = errno;
                if (e == EBUSY)
                        return tessera_error_set(err, EBUSY,
                                                 "%s [0x%lx, +%zu) is already registered with another userfaultfd",
                                                 what, (unsigned long)a, len);
                return tessera_error_set(err, e, "UFFDIO_REGISTER of %s [0x%lx, +%zu): %s", what, (unsigned long)a, len,
                                         strerror(e));
        }
        if ((reg.ioctls & need_ioctls) != need_ioctls)
                return tessera_error_set(
                        err, EOPNOTSUPP, "%s [0x%lx, +%zu): userfaultfd offers ioctls 0x%llx, not 0x%llx", what,
                        (unsigned long)a, len, (unsigned long long)reg.ioctls, (unsigned long long)need_ioctls);
        return 0;
}

static int uffd_unregister(int uffd, uintptr_t a, size_t len)
{
        struct uffdio_range range = {.start = a, .len = len};
        return ioctl(uffd, UFFDIO_UNREGISTER, &range) < 0 ? -errno : 0;
}

/* Lifting the protection (on = false) also wakes the threads waiting on the range. */
static int uffd_protect(int uffd, uintptr_t a, size_t len, bool on)
{
        struct uffdio_writeprotect wp = {
                .range = {.start = a, .len = len},
                .mode = on ? UFFDIO_WRITEPROTECT_MODE_WP : 0,
        };
        for (;;) {
                if (ioctl(uffd, UFFDIO_WRITEPROTECT, &wp) == 0)
                        return 0;
                if (errno != EAGAIN) /* EAGAIN: the address space is changing under us; try again */
                        return -errno;
        }
}

static bool snapshot_failed(const struct snapshot *s)
{
        return __atomic_load_n(&s->error, __ATOMIC_ACQUIRE) != 0;
}

/*
 * Records the first failure and lifts the protection of the whole range at
 * once: the producer must never stay stuck on a fault nobody will serve.
 */
static void snapshot_fail(struct snapshot *s, int r)
{
        int expected = 0;
        if (__atomic_compare_exchange_n(&s->error, &expected, r, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
                (void)uffd_protect(s->uffd, s->addr, s->len, false);
}

static bool page_copied(const struct snapshot *s, size_t i)
{
        return __atomic_load_n(&s->copied[i / 64], __ATOMIC_ACQUIRE) & (UINT64_C(1) << (i % 64));
}

static void page_mark_copied(struct snapshot *s, size_t i)
{
        __atomic_fetch_or(&s->copied[i / 64], UINT64_C(1) << (i % 64), __ATOMIC_RELEASE);
}

/*
 * Copies [off, off + len) of the live range into the snapshot.  A page
 * already in the snapshot (EEXIST) was put there by the other thread, or
 * by a snapshot reader, from the same unchanged live page: it is skipped.
 */
static int copy_range(struct snapshot *s, size_t off, size_t len)
{
        while (len > 0) {
                struct uffdio_copy c = {
                        .dst = (uintptr_t)s->dst + off,
                        .src = s->addr + off,
                        .len = len,
                        .mode = UFFDIO_COPY_MODE_DONTWAKE, /* nobody waits on our own mapping */
                };
                if (ioctl(s->uffd, UFFDIO_COPY, &c) == 0)
                        return 0;
                int e = errno;
                if (c.copy > 0) { /* partial progress: go on from there */
                        off += (size_t)c.copy;
                        len -= (size_t)c.copy;
                        continue;
                }
                if (c.copy < 0)
                        e = (int)-c.copy;
                if (e == EEXIST) {
                        off += s->dst_page_size;
                        len -= s->dst_page_size;
                } else if (e != EAGAIN) {
                        return -e;
                }
        }
        return 0;
}

static void serve_fault(struct snapshot *s, const struct uffd_msg *m)
{
        if (m->event != UFFD_EVENT_PAGEFAULT || !(m->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP))
                return;
        uintptr_t a = (uintptr_t)m->arg.pagefault.address;
        if (a < s->addr || a >= s->addr + s->len)
                return;
        size_t i = (a - s->addr) / s->page_size;
        size_t off = i * s->page_size;
        /* A page already copied is a fault that raced with the copy thread: only wake the writer. */
        if (!snapshot_failed(s) && !page_copied(s, i)) {
                int r = copy_range(s, off, s->page_size);
                if (r < 0) {
                        snapshot_fail(s, r);
                        return;
                }
                page_mark_copied(s, i);
                __atomic_add_fetch(&s->faults, 1, __ATOMIC_RELAXED);
        }
        int r = uffd_protect(s->uffd, s->addr + off, s->page_size, false);
        if (r < 0)
                snapshot_fail(s, r);
}

static void *fault_thread_main(void *p)
{
        struct snapshot *s = p;
        struct pollfd fds[2] = {
                {.fd = s->uffd, .events = POLLIN},
                {.fd = s->stop_fd, .events = POLLIN},
        };
        for (;;) {
                if (poll(fds, ELEMENTSOF(fds), -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        snapshot_fail(s, -errno);
                        return NULL;
                }
                if (fds[1].revents)
                        return NULL;
                struct uffd_msg msgs[32];
                ssize_t n = read(s->uffd, msgs, sizeof(msgs));
                if (n < 0) {
                        if (errno == EAGAIN || errno == EINTR)
                                continue;
                        snapshot_fail(s, -errno);
                        return NULL;
                }
                for (size_t k = 0; k < (size_t)n / sizeof(msgs[0]); k++)
                        serve_fault(s, &msgs[k]);
        }
}

/* Copies the pages of [first, end) nobody has copied yet, then lifts the chunk's protection. */
static int copy_chunk(struct snapshot *s, size_t first, size_t end)
{
        for (size_t i = first; i < end;) {
                if (page_copied(s, i)) {
                        i++;
                        continue;
                }
                size_t j = i + 1;
                while (j < end && !page_copied(s, j))
                        j++;
                int r = copy_range(s, i * s->page_size, (j - i) * s->page_size);
                if (r < 0)
                        return r;
                for (size_t k = i; k < j; k++)
                        page_mark_copied(s, k);
                i = j;
        }
        return uffd_protect(s->uffd, s->addr + first * s->page_size, (end - first) * s->page_size, false);
}

static void stop_fault_thread(struct snapshot *s)
{
        if (!s->fault_thread_running)
                return;
        uint64_t one = 1;
        /* An eventfd write of 1 cannot fail short of an overflow, which one write cannot reach. */
        (void)!write(s->stop_fd, &one, sizeof(one));
        pthread_join(s->fault_thread, NULL);
        s->fault_thread_running = false;
}

/*
 * Undoes whatever snapshot_start() did, in reverse.  Closing the
 * userfaultfd drops its registrations and wakes any thread still waiting on
 * it, whatever state the protection was left in.
 */
static void snapshot_release(struct snapshot *s)
{
        stop_fault_thread(s);
        if (s->stop_fd >= 0)
                close(TAKE_FD(s->stop_fd));
        if (s->uffd >= 0)
                close(TAKE_FD(s->uffd));
        if (s->dst != MAP_FAILED) {
                (void)munmap(s->dst, s->len);
                s->dst = MAP_FAILED;
        }
        active_release(s);
}

static void snapshot_free(struct snapshot *s)
{
        if (!s)
                return;
        snapshot_release(s);
        free(s->copied);
        free(s);
}

static void snapshot_freep(struct snapshot **s)
{
        snapshot_free(*s);
}

/* The snapshot whose copy thread this is, so snapshot_finish() called from done() can refuse to join itself. */
static __thread const struct snapshot *copy_thread_of;

static void *copy_thread_main(void *p)
{
        struct snapshot *s = p;
        copy_thread_of = s;
        /*
         * The background copy yields to everything else, the producer's own
         * threads first: the producer pays for the pages it writes, and the
         * copy takes the cycles nobody wants (the fault thread keeps its
         * normal priority, so a producer's fault is served at once).
         */
        struct sched_param idle = {0};
        (void)pthread_setschedparam(pthread_self(), SCHED_IDLE, &idle);
        size_t per_chunk = SNAPSHOT_CHUNK > s->page_size ? SNAPSHOT_CHUNK / s->page_size : 1;
        for (size_t first = 0; first < s->n_pages && !snapshot_failed(s); first += per_chunk) {
                size_t end = first + per_chunk < s->n_pages ? first + per_chunk : s->n_pages;
                int r = copy_chunk(s, first, end);
                if (r < 0)
                        snapshot_fail(s, r);
        }
        /* Every page is unprotected now, so no new fault can come: the fault thread may go. */
        stop_fault_thread(s);
        if (!snapshot_failed(s)) {
                int r = uffd_unregister(s->uffd, s->addr, s->len);
                if (r < 0)
                        snapshot_fail(s, r);
        }
        snapshot_release(s);
        s->result = __atomic_load_n(&s->error, __ATOMIC_ACQUIRE);
        if (s->done)
                s->done(s->arg, s->result);
        return NULL;
}

/* Library threads take no signals: the application's handlers must not run on them. */
static int thread_start(pthread_t *t, void *(*fn)(void *), void *arg)
{
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        int r = pthread_create(t, NULL, fn, arg);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        return -r;
}

static int snapshot_new(uintptr_t addr, size_t len, size_t page_size, struct snapshot **ret, struct tessera_error *err)
{
        _cleanup_free_ struct snapshot *s = calloc(1, sizeof(*s));
        if (!s)
                return tessera_error_set(err, ENOMEM, "out of memory for a snapshot of %zu bytes", len);
        s->addr = addr;
        s->len = len;
        s->page_size = page_size;
        s->n_pages = len / page_size;
        s->dst = MAP_FAILED;
        s->uffd = -1;
        s->stop_fd = -1;
        s->copied = calloc((s->n_pages + 63) / 64, sizeof(uint64_t));
        if (!s->copied)
                return tessera_error_set(err, ENOMEM, "out of memory for the page bitmap of %zu pages", s->n_pages);
        *ret = TAKE_PTR(s);
        return 0;
}

static int snapshot_map_dst(struct snapshot *s, int dst_fd, struct tessera_error *err)
{
        s->dst = mmap(NULL, s->len, PROT_READ | PROT_WRITE, MAP_SHARED, dst_fd, 0);
        if (s->dst == MAP_FAILED) {
                int e = errno;
                return tessera_error_set(err, e, "cannot map the snapshot memfd (fd %d, %zu bytes)%s: %s", dst_fd,
                                         s->len,
                                         e == ENOMEM && s->dst_page_size > (size_t)sysconf(_SC_PAGESIZE)
                                                 ? " (not enough free huge pages?)"
                                                 : "",
                                         strerror(e));
        }
        return 0;
}

static int snapshot_open_uffd(struct snapshot *s, int uffd_dev, struct tessera_error *err)
{
        s->uffd = uffd_open(uffd_dev, err);
        if (s->uffd < 0)
                return s->uffd;
        int r = uffd_enable(s->uffd, err);
        if (r < 0)
                return r;
        r = uffd_register(s->uffd, (uintptr_t)s->dst, s->len, UFFDIO_REGISTER_MODE_MISSING, UINT64_C(1) << _UFFDIO_COPY,
                          "the snapshot memfd's mapping", err);
        if (r < 0)
                return r;
        r = uffd_register(s->uffd, s->addr, s->len, UFFDIO_REGISTER_MODE_WP, UINT64_C(1) << _UFFDIO_WRITEPROTECT,
                          "the range", err);
        if (r < 0)
                return r;
        s->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (s->stop_fd < 0)
                return tessera_error_set(err, errno, "eventfd: %s", strerror(errno));
        return 0;
}

int snapshot_start(uintptr_t addr, size_t len, int dst_fd, int uffd_dev, void (*done)(void *arg, int result), void *arg,
                   struct snapshot **ret, struct tessera_error *err)
{
        size_t base = (size_t)sysconf(_SC_PAGESIZE);
        if (!ret)
                return tessera_error_set(err, EINVAL, "snapshot_start: no place for the result");
        if (len == 0 || addr % base != 0 || len % base != 0 || addr + len < addr)
                return tessera_error_set(err, EINVAL, "range [0x%lx, +%zu) is empty or not aligned to %zu-byte pages",
                                         (unsigned long)addr, len, base);
        size_t page_size = 0;
        int r = range_page_size(addr, len, &page_size, err);
        if (r < 0)
                return r;
        if (addr % page_size != 0 || len % page_size != 0)
                return tessera_error_set(err, EINVAL,
                                         "range [0x%lx, +%zu) is not aligned to its mapping's %zu-byte pages",
                                         (unsigned long)addr, len, page_size);

        _cleanup_(snapshot_freep) struct snapshot *s = NULL;
        r = snapshot_new(addr, len, page_size, &s, err);
        if (r < 0)
                return r;
        s->done = done;
        s->arg = arg;
        r = dst_inspect(s, dst_fd, err);
        if (r < 0)
                return r;
        r = active_claim(s, err);
        if (r < 0)
                return r;
        r = snapshot_map_dst(s, dst_fd, err);
        if (r < 0)
                return r;
        r = snapshot_open_uffd(s, uffd_dev, err);
        if (r < 0)
                return r;
        /* The fault thread runs before the protection exists, so no fault ever waits for it to start. */
        r = thread_start(&s->fault_thread, fault_thread_main, s);
        if (r < 0)
                return tessera_error_set(err, -r, "cannot start the snapshot's fault thread: %s", strerror(-r));
        s->fault_thread_running = true;
        r = uffd_protect(s->uffd, addr, len, true);
        if (r < 0)
                return tessera_error_set(err, -r, "UFFDIO_WRITEPROTECT of [0x%lx, +%zu): %s", (unsigned long)addr, len,
                                         strerror(-r));
        r = thread_start(&s->copy_thread, copy_thread_main, s);
        if (r < 0)
                return tessera_error_set(err, -r, "cannot start the snapshot's copy thread: %s", strerror(-r));
        s->copy_thread_running = true;
        *ret = TAKE_PTR(s);
        return 0;
}

int snapshot_finish(struct snapshot *s)
{
        if (!s)
                return 0;
        if (copy_thread_of == s)
                return -EDEADLK;
        if (s->copy_thread_running) {
                pthread_join(s->copy_thread, NULL);
                s->copy_thread_running = false;
        }
        int r = s->result;
        snapshot_free(s);
        return r;
}

uint64_t snapshot_faults(const struct snapshot *s)
{
        return __atomic_load_n(&s->faults, __ATOMIC_RELAXED);
}
