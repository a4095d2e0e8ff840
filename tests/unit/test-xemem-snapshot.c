/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * XASM snapshots on real memfds and a real userfaultfd: the snapshot keeps
 * the data of its instant while producer threads (and the kernel, for
 * them) overwrite every page, live mappings keep seeing live data, holes
 * and untouched pages come out right, snapshots run side by side, and the
 * fallbacks (no PROCMAP_QUERY, no userfaultfd(2)) are forced with seccomp.
 * Prints the costs as TAP comments; XEMEM_TEST_BIG=1 measures 1 GiB
 * instead of 256 MiB.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <seccomp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tap.h"
#include "util.h"
#include "xemem/snapshot.h"

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)
#define GiB ((size_t)1 << 30)

#define HUGE_2M         (2 * MiB)
#define FREE_HUGE_PAGES "/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages"

static size_t page4k;

/* What a page of a test range should hold. */
enum content { OLD, NEW, ZERO };

static uint64_t word_of(size_t page, size_t w, enum content c)
{
        uint64_t old = ((uint64_t)page << 20 | w) * UINT64_C(0x9E3779B97F4A7C15) | 1;
        return c == OLD ? old : c == NEW ? old ^ UINT64_C(0xA5A5A5A5A5A5A5A5) : 0;
}

static void page_fill(void *p, size_t page_size, size_t page, enum content c)
{
        uint64_t *w = p;
        for (size_t i = 0; i < page_size / 8; i++)
                w[i] = word_of(page, i, c);
}

static bool page_holds(const void *p, size_t page_size, size_t page, enum content c)
{
        const uint64_t *w = p;
        for (size_t i = 0; i < page_size / 8; i++)
                if (w[i] != word_of(page, i, c))
                        return false;
        return true;
}

static int memfd_sized(const char *name, size_t len, unsigned flags)
{
        char full[64];
        snprintf(full, sizeof(full), "test-snap-%d-%s", (int)getpid(), name);
        int fd = memfd_create(full, MFD_CLOEXEC | flags);
        if (fd < 0)
                return -errno;
        if (ftruncate(fd, (off_t)len) < 0) {
                int e = errno;
                close(fd);
                return -e;
        }
        return fd;
}

static void *map_fd(int fd, size_t len, int prot)
{
        void *p = mmap(NULL, len, prot, MAP_SHARED, fd, 0);
        return p == MAP_FAILED ? NULL : p;
}

static void unmap(void *p, size_t len)
{
        if (p)
                munmap(p, len);
}

/* done() records what it was told; the test checks it was called once. */
struct done_record {
        int calls;
        int result;
        uint64_t at_ns;
};

static void on_done(void *arg, int result)
{
        struct done_record *d = arg;
        d->result = result;
        d->at_ns = now_ns();
        __atomic_add_fetch(&d->calls, 1, __ATOMIC_RELEASE);
}

/* A producer thread writes the NEW content into every `step`-th page from `first`, skipping every 5th page. */
struct producer {
        uint8_t *map;
        size_t page_size, first, step, n_pages;
        pthread_t thread;
};

static bool producer_skips(size_t page)
{
        return page % 5 == 4;
}

static void *producer_main(void *p)
{
        struct producer *pr = p;
        /* From the end, where the copy thread arrives last, so writes meet protected pages. */
        for (size_t k = pr->first; k < pr->n_pages; k += pr->step) {
                size_t page = pr->n_pages - 1 - k;
                if (!producer_skips(page))
                        page_fill(pr->map + page * pr->page_size, pr->page_size, page, NEW);
        }
        return NULL;
}

static int produce(uint8_t *map, size_t page_size, size_t n_pages, size_t n_threads)
{
        struct producer pr[8];
        size_t started = 0;
        for (; started < n_threads && started < ELEMENTSOF(pr); started++) {
                pr[started] = (struct producer){map, page_size, started, n_threads, n_pages, 0};
                if (pthread_create(&pr[started].thread, NULL, producer_main, &pr[started]) != 0)
                        break;
        }
        for (size_t i = 0; i < started; i++)
                pthread_join(pr[i].thread, NULL);
        return started == n_threads ? 0 : -EAGAIN;
}

/* The three kinds of pages a live memfd can hold when the snapshot starts. */
enum origin { WRITTEN_THROUGH_MAPPING, ONLY_IN_PAGE_CACHE, HOLE };

static enum origin origin_of(size_t page, size_t n_pages)
{
        if (page < n_pages / 2)
                return WRITTEN_THROUGH_MAPPING;
        if (page < n_pages * 3 / 4)
                return ONLY_IN_PAGE_CACHE;
        return HOLE;
}

/*
 * A live memfd of n_pages: the first half written through a mapping, the
 * next quarter with pwrite(2) before any mapping exists, the rest holes.
 */
static int live_prepare(const char *name, size_t page_size, size_t n_pages, unsigned mfd_flags, int *ret_fd,
                        uint8_t **ret_map)
{
        size_t len = page_size * n_pages;
        _cleanup_close_ int fd = memfd_sized(name, len, mfd_flags);
        if (fd < 0)
                return fd;
        bool can_pwrite = !(mfd_flags & MFD_HUGETLB); /* hugetlbfs has no write(2) */
        _cleanup_free_ void *buf = malloc(page_size);
        if (!buf)
                return -ENOMEM;
        for (size_t p = 0; can_pwrite && p < n_pages; p++) {
                if (origin_of(p, n_pages) != ONLY_IN_PAGE_CACHE)
                        continue;
                page_fill(buf, page_size, p, OLD);
                if (pwrite(fd, buf, page_size, (off_t)(p * page_size)) != (ssize_t)page_size)
                        return -EIO;
        }
        uint8_t *map = map_fd(fd, len, PROT_READ | PROT_WRITE);
        if (!map)
                return -errno;
        for (size_t p = 0; p < n_pages; p++) {
                enum origin o = origin_of(p, n_pages);
                if (o == WRITTEN_THROUGH_MAPPING || (o == ONLY_IN_PAGE_CACHE && !can_pwrite))
                        page_fill(map + p * page_size, page_size, p, OLD);
        }
        *ret_fd = TAKE_FD(fd);
        *ret_map = map;
        return 0;
}

static enum content expected_before(size_t page, size_t n_pages)
{
        return origin_of(page, n_pages) == HOLE ? ZERO : OLD;
}

static enum content expected_after(size_t page, size_t n_pages)
{
        return producer_skips(page) ? expected_before(page, n_pages) : NEW;
}

/* Counts the pages of `map` that differ from what `want` says; the first bad page goes to *first_bad. */
static size_t count_bad(const uint8_t *map, size_t page_size, size_t first_page, size_t n_pages, size_t all_pages,
                        enum content (*want)(size_t, size_t), size_t *first_bad)
{
        size_t bad = 0;
        *first_bad = SIZE_MAX;
        for (size_t i = 0; i < n_pages; i++) {
                size_t page = first_page + i;
                if (!page_holds(map + i * page_size, page_size, page, want(page, all_pages))) {
                        if (!bad)
                                *first_bad = page;
                        bad++;
                }
        }
        return bad;
}

/*
 * The main case: snapshot, then producer threads overwrite the range at
 * once.  The snapshot must hold the old data, the live memfd (seen through
 * a second, read-only mapping too) the new.
 */
static void test_cow(const char *what, size_t page_size, size_t n_pages, unsigned mfd_flags, int uffd_dev)
{
        size_t len = page_size * n_pages;
        int live_fd = -1;
        uint8_t *live = NULL;
        int r = live_prepare("live", page_size, n_pages, mfd_flags, &live_fd, &live);
        if (!ok(r == 0, "%s: live memfd of %zu MiB prepared (%s)", what, len / MiB, strerror(-r)))
                return;
        _cleanup_close_ int live_owned = live_fd;
        _cleanup_close_ int dst_fd = memfd_sized("snap", len, mfd_flags);
        uint8_t *attacher = map_fd(live_fd, len, PROT_READ);
        ok(dst_fd >= 0 && attacher, "%s: snapshot memfd and a read-only live attacher mapping", what);

        struct done_record rec = {0};
        struct tessera_error err = {0};
        struct snapshot *s = NULL;
        r = dst_fd >= 0 ? snapshot_start((uintptr_t)live, len, dst_fd, uffd_dev, on_done, &rec, &s, &err) : -EBADF;
        if (ok(r == 0, "%s: snapshot_start (%s)", what, err.msg)) {
                ok(produce(live, page_size, n_pages, 4) == 0, "%s: 4 producer threads overwrote the range", what);
                size_t first_bad;
                size_t bad = count_bad(attacher, page_size, 0, n_pages, n_pages, expected_after, &first_bad);
                ok(bad == 0, "%s: the live attacher sees the new data at once (%zu bad pages, first %zd)", what, bad,
                   (ssize_t)first_bad);
                uint64_t faults = snapshot_faults(s);
                r = snapshot_finish(s);
                ok(r == 0 && rec.calls == 1 && rec.result == 0,
                   "%s: copy ended well (finish %d, done called %d times "
                   "with %d)",
                   what, r, rec.calls, rec.result);
                diag("%s: %llu of %zu pages preserved on a fault, the rest by the copy thread", what,
                     (unsigned long long)faults, n_pages);
                ok(faults > 0, "%s: some writes met protected pages (%llu faults)", what, (unsigned long long)faults);

                uint8_t *snap = map_fd(dst_fd, len, PROT_READ);
                bad = snap ? count_bad(snap, page_size, 0, n_pages, n_pages, expected_before, &first_bad) : n_pages;
                ok(bad == 0,
                   "%s: snapshot holds the old data: mapped, page-cache-only and untouched pages, zeros for "
                   "holes (%zu bad pages, first %zd)",
                   what, bad, (ssize_t)first_bad);
                unmap(snap, len);
                bad = count_bad(live, page_size, 0, n_pages, n_pages, expected_after, &first_bad);
                ok(bad == 0, "%s: live memfd holds the new data (%zu bad pages, first %zd)", what, bad,
                   (ssize_t)first_bad);
        }
        unmap(attacher, len);
        unmap(live, len);
}

/* A write the kernel makes for the producer (read(2) into the range) waits for the page to be preserved. */
static void test_kernel_write(int uffd_dev, const char *what)
{
        size_t n_pages = 4096, len = n_pages * page4k;
        _cleanup_close_ int live_fd = memfd_sized("kwrite", len, 0);
        _cleanup_close_ int dst_fd = memfd_sized("kwrite-snap", len, 0);
        uint8_t *live = live_fd >= 0 ? map_fd(live_fd, len, PROT_READ | PROT_WRITE) : NULL;
        int pipe_fds[2] = {-1, -1};
        if (!ok(live && dst_fd >= 0 && pipe2(pipe_fds, O_CLOEXEC) == 0, "%s: memfds and a pipe", what)) {
                unmap(live, len);
                return;
        }
        _cleanup_close_ int rd = pipe_fds[0], wr = pipe_fds[1];
        for (size_t p = 0; p < n_pages; p++)
                page_fill(live + p * page4k, page4k, p, OLD);
        _cleanup_free_ uint8_t *msg = malloc(page4k);
        memset(msg, 'K', page4k);
        bool queued = write(wr, msg, page4k) == (ssize_t)page4k;

        struct tessera_error err = {0};
        struct snapshot *s = NULL;
        int r = snapshot_start((uintptr_t)live, len, dst_fd, uffd_dev, NULL, NULL, &s, &err);
        if (ok(r == 0, "%s: snapshot_start (%s)", what, err.msg)) {
                size_t last = n_pages - 1;
                ssize_t n = queued ? read(rd, live + last * page4k, page4k) : -1;
                int e = errno;
                uint64_t faults = snapshot_faults(s);
                ok(n == (ssize_t)page4k, "%s: read(2) into a protected page succeeded (%zd, %s)", what, n,
                   n < 0 ? strerror(e) : "no error");
                r = snapshot_finish(s);
                ok(r == 0, "%s: copy ended well (%d)", what, r);
                ok(faults >= 1, "%s: the kernel's write went through a fault (%llu)", what, (unsigned long long)faults);
                uint8_t *snap = map_fd(dst_fd, len, PROT_READ);
                ok(snap && page_holds(snap + last * page4k, page4k, last, OLD) &&
                           memcmp(live + last * page4k, msg, page4k) == 0,
                   "%s: snapshot has the old page, the live memfd what read(2) wrote", what);
                unmap(snap, len);
        }
        unmap(live, len);
}

static long free_huge_pages(void)
{
        _cleanup_fclose_ FILE *f = fopen(FREE_HUGE_PAGES, "re");
        long n = -1;
        if (!f || fscanf(f, "%ld", &n) != 1)
                return -1;
        return n;
}

static void test_hugetlb(void)
{
        size_t n_pages = 8; /* 16 MiB live + 16 MiB snapshot */
        long free_pages = free_huge_pages();
        if (free_pages < (long)(2 * n_pages)) {
                skip("hugetlb: %ld free 2 MiB huge pages, %zu needed; vm.nr_hugepages is host-wide, left alone",
                     free_pages, 2 * n_pages);
                return;
        }
        test_cow("hugetlb", HUGE_2M, n_pages, MFD_HUGETLB, -1);
}

/* Two halves of one mapping, snapshotted side by side into two memfds. */
static void test_concurrent(void)
{
        size_t n_pages = 4096, half = n_pages / 2, len = n_pages * page4k;
        int live_fd = -1;
        uint8_t *live = NULL;
        int r = live_prepare("two", page4k, n_pages, 0, &live_fd, &live);
        if (!ok(r == 0, "concurrent: live memfd (%s)", strerror(-r)))
                return;
        _cleanup_close_ int live_owned = live_fd;
        _cleanup_close_ int dst_a = memfd_sized("two-a", len / 2, 0);
        _cleanup_close_ int dst_b = memfd_sized("two-b", len / 2, 0);
        struct done_record rec_a = {0}, rec_b = {0};
        struct tessera_error err_a = {0}, err_b = {0};
        struct snapshot *a = NULL, *b = NULL;
        int ra = snapshot_start((uintptr_t)live, len / 2, dst_a, -1, on_done, &rec_a, &a, &err_a);
        int rb = snapshot_start((uintptr_t)live + len / 2, len / 2, dst_b, -1, on_done, &rec_b, &b, &err_b);
        ok(ra == 0 && rb == 0, "concurrent: two snapshots started (%s%s)", err_a.msg, err_b.msg);
        ok(produce(live, page4k, n_pages, 3) == 0, "concurrent: producers overwrote both halves");
        ra = snapshot_finish(a);
        rb = snapshot_finish(b);
        ok(ra == 0 && rb == 0 && rec_a.calls == 1 && rec_b.calls == 1, "concurrent: both ended well (%d, %d)", ra, rb);
        uint8_t *snap_a = map_fd(dst_a, len / 2, PROT_READ), *snap_b = map_fd(dst_b, len / 2, PROT_READ);
        size_t first_a, first_b;
        size_t bad_a = snap_a ? count_bad(snap_a, page4k, 0, half, n_pages, expected_before, &first_a) : half;
        size_t bad_b = snap_b ? count_bad(snap_b, page4k, half, half, n_pages, expected_before, &first_b) : half;
        ok(bad_a == 0 && bad_b == 0, "concurrent: each snapshot holds its half's old data (%zu, %zu bad pages)", bad_a,
           bad_b);
        unmap(snap_a, len / 2);
        unmap(snap_b, len / 2);
        unmap(live, len);
}

static void test_busy_and_again(void)
{
        size_t len = 8 * MiB;
        _cleanup_close_ int live_fd = memfd_sized("busy", len, 0);
        _cleanup_close_ int dst1 = memfd_sized("busy-1", len, 0);
        _cleanup_close_ int dst2 = memfd_sized("busy-2", len, 0);
        _cleanup_close_ int dst3 = memfd_sized("busy-3", len, 0);
        uint8_t *live = live_fd >= 0 ? map_fd(live_fd, len, PROT_READ | PROT_WRITE) : NULL;
        if (!ok(live && dst1 >= 0 && dst2 >= 0 && dst3 >= 0, "busy: memfds"))
                return;
        memset(live, 0x11, len);
        struct tessera_error err = {0};
        struct snapshot *s1 = NULL, *s2 = NULL, *s3 = NULL;
        int r = snapshot_start((uintptr_t)live, len, dst1, -1, NULL, NULL, &s1, &err);
        ok(r == 0, "busy: first snapshot started (%s)", err.msg);
        tessera_error_clear(&err);
        r = snapshot_start((uintptr_t)live + len / 2, page4k, dst2, -1, NULL, NULL, &s2, &err);
        ok(r == -EBUSY && strstr(err.msg, "overlaps"), "busy: a second snapshot of part of the range is -EBUSY (%s)",
           err.msg);
        tessera_error_clear(&err);
        r = s1 ? snapshot_finish(s1) : -1;
        ok(r == 0, "busy: first snapshot ended well (%d)", r);
        memset(live, 0x22, len);
        r = snapshot_start((uintptr_t)live, len, dst3, -1, NULL, NULL, &s3, &err);
        ok(r == 0, "busy: the range can be snapshotted again once the first is done (%s)", err.msg);
        memset(live, 0x33, len / 2);
        r = s3 ? snapshot_finish(s3) : -1;
        uint8_t *snap = map_fd(dst3, len, PROT_READ);
        bool same = snap && snap[0] == 0x22 && snap[len / 2 - 1] == 0x22 && snap[len - 1] == 0x22;
        ok(r == 0 && same, "busy: the second snapshot holds its own instant (0x22)");
        unmap(snap, len);
        unmap(live, len);
}

static void test_refusals(void)
{
        size_t len = 4 * MiB;
        _cleanup_close_ int live_fd = memfd_sized("refuse", len, 0);
        _cleanup_close_ int dst = memfd_sized("refuse-snap", len, 0);
        _cleanup_close_ int small = memfd_sized("refuse-small", len / 2, 0);
        _cleanup_close_ int used = memfd_sized("refuse-used", len, 0);
        uint8_t *live = live_fd >= 0 ? map_fd(live_fd, len, PROT_READ | PROT_WRITE) : NULL;
        uint8_t *private_map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (!ok(live && private_map != MAP_FAILED && dst >= 0 && small >= 0 && used >= 0, "refusals: memfds")) {
                unmap(live, len);
                return;
        }
        (void)!pwrite(used, "x", 1, 0);
        struct tessera_error err = {0};
        struct snapshot *s = NULL;
        int r = snapshot_start((uintptr_t)private_map, len, dst, -1, NULL, NULL, &s, &err);
        ok(r == -EINVAL && strstr(err.msg, "private"), "refusals: private memory (%s)", err.msg);
        r = snapshot_start((uintptr_t)live + 100, page4k, dst, -1, NULL, NULL, &s, &err);
        ok(r == -EINVAL, "refusals: unaligned range (%s)", err.msg);
        r = snapshot_start((uintptr_t)live, len, small, -1, NULL, NULL, &s, &err);
        ok(r == -EINVAL && strstr(err.msg, "at least"), "refusals: snapshot memfd too small (%s)", err.msg);
        r = snapshot_start((uintptr_t)live, len, used, -1, NULL, NULL, &s, &err);
        ok(r == -EINVAL && strstr(err.msg, "fresh"), "refusals: snapshot memfd with data (%s)", err.msg);
        munmap(private_map, len);
        r = snapshot_start((uintptr_t)private_map, len, dst, -1, NULL, NULL, &s, &err);
        ok(r == -EFAULT, "refusals: unmapped range (%s)", err.msg);
        /* A refused start must leave the range writable and free for the next snapshot. */
        memset(live, 0x44, len);
        r = snapshot_start((uintptr_t)live, len, dst, -1, NULL, NULL, &s, &err);
        int fin = r == 0 ? snapshot_finish(s) : r;
        ok(fin == 0, "refusals: a good snapshot right after the refusals (%s)", err.msg);
        unmap(live, len);
}

/*
 * The producer unmaps the range while the copy runs (a misuse): the copy
 * reads the live pages with UFFDIO_COPY, so it must end with an error
 * reported through done(), not with a crash.
 */
static void test_unmapped_during_copy(void)
{
        size_t len = 64 * MiB;
        _cleanup_close_ int live_fd = memfd_sized("gone", len, 0);
        _cleanup_close_ int dst = memfd_sized("gone-snap", len, 0);
        uint8_t *live = live_fd >= 0 ? map_fd(live_fd, len, PROT_READ | PROT_WRITE) : NULL;
        if (!ok(live && dst >= 0, "unmapped: memfds"))
                return;
        memset(live, 0x55, len);
        struct done_record rec = {0};
        struct tessera_error err = {0};
        struct snapshot *s = NULL;
        int r = snapshot_start((uintptr_t)live, len, dst, -1, on_done, &rec, &s, &err);
        if (!ok(r == 0, "unmapped: snapshot_start (%s)", err.msg)) {
                unmap(live, len);
                return;
        }
        munmap(live, len);
        r = snapshot_finish(s);
        ok(r < 0 && rec.calls == 1 && rec.result == r,
           "unmapped: the snapshot ends with an error (%d, %s), done() called once with it", r, strerror(-r));
}

/*
 * Runs `fn` in a child with a seccomp filter that makes one system call
 * (or one ioctl request) fail, as an older or stricter kernel would.
 */
static int run_with_filter(int syscall_nr, long ioctl_request, int fail_errno, int (*fn)(void))
{
        pid_t pid = fork();
        if (pid < 0)
                return -errno;
        if (pid == 0) {
                scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
                int r = ctx ? 0 : -ENOMEM;
                if (r == 0 && ioctl_request >= 0)
                        r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(fail_errno), syscall_nr, 1,
                                             SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffUL, (scmp_datum_t)ioctl_request));
                else if (r == 0)
                        r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(fail_errno), syscall_nr, 0);
                if (r == 0)
                        r = seccomp_load(ctx);
                _exit(r < 0 ? 100 : fn());
        }
        int status;
        if (waitpid(pid, &status, 0) < 0)
                return -errno;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* In the child: a small snapshot with writes, checked; returns the failing step or 0. */
static int child_small_snapshot(void)
{
        size_t n_pages = 1024, len = n_pages * page4k;
        int live_fd = -1;
        uint8_t *live = NULL;
        if (live_prepare("child", page4k, n_pages, 0, &live_fd, &live) < 0)
                return 1;
        int dst = memfd_sized("child-snap", len, 0);
        struct snapshot *s = NULL;
        if (dst < 0 || snapshot_start((uintptr_t)live, len, dst, -1, NULL, NULL, &s, NULL) < 0)
                return 2;
        if (produce(live, page4k, n_pages, 2) < 0 || snapshot_finish(s) != 0)
                return 3;
        uint8_t *snap = map_fd(dst, len, PROT_READ);
        size_t first_bad;
        if (!snap || count_bad(snap, page4k, 0, n_pages, n_pages, expected_before, &first_bad) != 0)
                return 4;
        return 0;
}

/* In the child: userfaultfd(2) is refused; the error must say what would work, the range must stay writable. */
static int child_refused_uffd(void)
{
        size_t len = 1 * MiB;
        int live_fd = memfd_sized("eperm", len, 0), dst = memfd_sized("eperm-snap", len, 0);
        uint8_t *live = live_fd >= 0 ? map_fd(live_fd, len, PROT_READ | PROT_WRITE) : NULL;
        if (!live || dst < 0)
                return 1;
        struct tessera_error err = {0};
        struct snapshot *s = NULL;
        int r = snapshot_start((uintptr_t)live, len, dst, -1, NULL, NULL, &s, &err);
        if (r != -EPERM || !strstr(err.msg, "/dev/userfaultfd") || !strstr(err.msg, "CAP_SYS_PTRACE"))
                return 2;
        memset(live, 1, len);
        return 0;
}

#define PROCMAP_QUERY_REQUEST 0xC0686611L /* _IOWR('f', 17, struct procmap_query) */

static void test_fallbacks(void)
{
        int r = run_with_filter(SCMP_SYS(ioctl), PROCMAP_QUERY_REQUEST, ENOTTY, child_small_snapshot);
        ok(r == 0, "fallback: without PROCMAP_QUERY (forced ENOTTY) the page size comes from smaps (child step %d)", r);
        r = run_with_filter(SCMP_SYS(userfaultfd), -1, EPERM, child_refused_uffd);
        ok(r == 0,
           "fallback: userfaultfd(2) refused gives -EPERM naming /dev/userfaultfd and CAP_SYS_PTRACE (child "
           "step %d)",
           r);
}

/* Random distinct pages, a Fisher-Yates prefix with a fixed seed. */
static size_t *random_pages(size_t n_pages, size_t n)
{
        size_t *all = malloc(n_pages * sizeof(*all));
        if (!all)
                return NULL;
        for (size_t i = 0; i < n_pages; i++)
                all[i] = i;
        uint64_t x = 88172645463325252ULL;
        for (size_t i = 0; i < n; i++) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                size_t j = i + (size_t)(x % (n_pages - i));
                size_t t = all[i];
                all[i] = all[j];
                all[j] = t;
        }
        return all;
}

static double ms_since(uint64_t t0)
{
        return (double)(now_ns() - t0) / 1e6;
}

static double write_pages(uint8_t *map, size_t page_size, const size_t *pages, size_t n, uint64_t value)
{
        uint64_t t0 = now_ns();
        for (size_t i = 0; i < n; i++)
                *(volatile uint64_t *)(map + pages[i] * page_size) = value;
        return ms_since(t0);
}

/*
 * One measured snapshot: memcpy the range into `copy` (the reference, and
 * the figure to compare with), snapshot, write 1% of the pages at once,
 * wait for the copy, check the snapshot against the reference.
 */
static void measure_once(const char *what, int run, uint8_t *live, uint8_t *copy, size_t page_size, size_t len,
                         unsigned mfd_flags, const size_t *pages, size_t n_writes, double plain_ms)
{
        _cleanup_close_ int dst_fd = memfd_sized("bench-snap", len, mfd_flags);
        uint64_t t0 = now_ns();
        memcpy(copy, live, len);
        double memcpy_ms = ms_since(t0);

        struct done_record rec = {0};
        struct tessera_error err = {0};
        struct snapshot *s = NULL;
        t0 = now_ns();
        int r = dst_fd >= 0 ? snapshot_start((uintptr_t)live, len, dst_fd, -1, on_done, &rec, &s, &err) : dst_fd;
        double start_ms = ms_since(t0);
        if (!ok(r == 0, "%s, run %d: snapshot_start (%s)", what, run, err.msg))
                return;
        double write_ms = write_pages(live, page_size, pages, n_writes, 0x1111111111111111ULL * (uint64_t)run);
        uint64_t faults = snapshot_faults(s);
        r = snapshot_finish(s);
        double copy_ms = (double)(rec.at_ns - t0) / 1e6;
        uint8_t *snap = map_fd(dst_fd, len, PROT_READ);
        ok(r == 0 && snap && memcmp(snap, copy, len) == 0, "%s, run %d: snapshot equals the data of its instant", what,
           run);
        unmap(snap, len);
        diag("%s, run %d, %zu MiB populated: snapshot_start (register + protect) %.2f ms", what, run, len / MiB,
             start_ms);
        diag("%s, run %d: producer writes 1%% of the pages (%zu random pages) right after: %.2f ms, %.1f us a page "
             "(%llu met a protected page); the same writes without a snapshot: %.3f ms",
             what, run, n_writes, write_ms, write_ms * 1e3 / (double)n_writes, (unsigned long long)faults, plain_ms);
        diag("%s, run %d: copy done %.1f ms after start (%.2f GB/s); one memcpy of %zu MiB into %s: %.1f ms "
             "(%.2f GB/s)",
             what, run, copy_ms, (double)len / copy_ms / 1e6, len / MiB,
             run == 1 ? "a fresh memfd" : "populated memory", memcpy_ms, (double)len / memcpy_ms / 1e6);
}

/* The figures: protect time, the producer's cost for 1% of the pages, the copy's length, against memcpy. */
static void measure(const char *what, size_t page_size, size_t len, unsigned mfd_flags)
{
        size_t n_pages = len / page_size, n_writes = n_pages / 100 ? n_pages / 100 : 1;
        _cleanup_close_ int live_fd = memfd_sized("bench", len, mfd_flags);
        _cleanup_close_ int copy_fd = memfd_sized("bench-copy", len, mfd_flags);
        uint8_t *live = live_fd >= 0 ? map_fd(live_fd, len, PROT_READ | PROT_WRITE) : NULL;
        uint8_t *copy = copy_fd >= 0 ? map_fd(copy_fd, len, PROT_READ | PROT_WRITE) : NULL;
        _cleanup_free_ size_t *pages = random_pages(n_pages, n_writes);
        if (ok(live && copy && pages, "%s: memfds for the measurement", what)) {
                memset(live, 0x5a, len);
                double plain_ms = write_pages(live, page_size, pages, n_writes, 0x5a5a5a5a5a5a5a5aULL);
                /* Run 1 meets fresh memory everywhere; run 2 shows the cost once the memory has been used. */
                for (int run = 1; run <= 2; run++)
                        measure_once(what, run, live, copy, page_size, len, mfd_flags, pages, n_writes, plain_ms);
        }
        unmap(live, len);
        unmap(copy, len);
}

static void measure_all(void)
{
        const char *big = getenv("XEMEM_TEST_BIG");
        size_t len = big && STREQ(big, "1") ? GiB : 256 * MiB;
        measure("4 KiB pages", page4k, len, 0);
        long free_pages = free_huge_pages();
        if (free_pages >= (long)(3 * len / HUGE_2M))
                measure("2 MiB huge pages", HUGE_2M, len, MFD_HUGETLB);
        else
                diag("2 MiB huge pages: measurement skipped, %ld free huge pages, %zu needed (vm.nr_hugepages is "
                     "host-wide, left alone)",
                     free_pages, 3 * len / HUGE_2M);
}

static bool uffd_usable(char *why, size_t n)
{
        int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
        if (fd >= 0) {
                close(fd);
                return true;
        }
        snprintf(why, n, "userfaultfd(2): %s (needs root or CAP_SYS_PTRACE here)", strerror(errno));
        return false;
}

int main(void)
{
        page4k = (size_t)sysconf(_SC_PAGESIZE);
        char why[256];
        if (!uffd_usable(why, sizeof(why))) {
                skip("%s", why);
                return done_testing();
        }
        test_cow("4 KiB, 64 MiB", page4k, 64 * MiB / page4k, 0, -1);
        test_kernel_write(-1, "kernel write");
        _cleanup_close_ int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
        if (dev >= 0)
                test_kernel_write(dev, "kernel write via /dev/userfaultfd");
        else
                skip("/dev/userfaultfd: %s", strerror(errno));
        test_hugetlb();
        test_concurrent();
        test_busy_and_again();
        test_refusals();
        test_unmapped_during_copy();
        test_fallbacks();
        measure_all();
        return done_testing();
}
