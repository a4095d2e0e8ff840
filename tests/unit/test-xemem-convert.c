/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Export in place, on real memory of this process: heap, .data/.bss, stack,
 * anonymous mmaps; second mappings of the memfds; threads writing during the
 * conversion; the /proc/self/maps fallback and the rollback forced with
 * seccomp; signal conflicts in re-executed children.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <seccomp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <dirent.h>

#include "tap.h"
#include "util.h"
#include "xemem/convert.h"

/* _IOWR('f', 17, struct procmap_query): PROCMAP_QUERY of Linux 6.11 (include/uapi/linux/fs.h). */
#define TEST_PROCMAP_QUERY 0xC0686611UL

static size_t PG;

static uintptr_t page_down(const void *p)
{
        return (uintptr_t)p & ~(PG - 1);
}

static uintptr_t page_up(const void *p)
{
        return ((uintptr_t)p + PG - 1) & ~(PG - 1);
}

static double ms_since(uint64_t t0)
{
        return (double)(now_ns() - t0) / 1e6;
}

/* ---- looking at /proc/self/maps ----------------------------------------- */

struct maps_line {
        uintptr_t start, end;
        char perms[8];
        char rest[512]; /* offset, device, inode, name */
};

/* Calls fn for each line of /proc/self/maps overlapping [a, a+len), clipped to it. */
static int maps_each(uintptr_t a, size_t len, bool (*fn)(const struct maps_line *l, void *u), void *u)
{
        _cleanup_fclose_ FILE *f = fopen("/proc/self/maps", "re");
        char buf[4096];
        int n = 0;
        if (!f)
                return -1;
        while (fgets(buf, sizeof(buf), f)) {
                struct maps_line l = {0};
                int off = 0;
                if (sscanf(buf, "%lx-%lx %7s %n", &l.start, &l.end, l.perms, &off) < 3)
                        continue;
                if (l.end <= a || l.start >= a + len)
                        continue;
                l.start = l.start < a ? a : l.start;
                l.end = l.end > a + len ? a + len : l.end;
                snprintf(l.rest, sizeof(l.rest), "%s", buf + off);
                n++;
                if (!fn(&l, u))
                        return -1;
        }
        return n;
}

static bool line_is_memfd(const struct maps_line *l, void *u)
{
        return l->perms[3] == 's' && strstr(l->rest, "memfd:tessera-xemem");
}

static bool line_is_not_memfd(const struct maps_line *l, void *u)
{
        return !strstr(l->rest, "memfd:");
}

static bool range_converted(uintptr_t a, size_t len)
{
        return maps_each(a, len, line_is_memfd, NULL) > 0;
}

static bool range_private(uintptr_t a, size_t len)
{
        return maps_each(a, len, line_is_not_memfd, NULL) > 0;
}

struct maps_text {
        char text[16384];
};

static bool line_append(const struct maps_line *l, void *u)
{
        struct maps_text *t = u;
        size_t n = strlen(t->text);
        snprintf(t->text + n, sizeof(t->text) - n, "%lx-%lx %s %s", l->start, l->end, l->perms, l->rest);
        return true;
}

/* The range's lines of /proc/self/maps, clipped to it. */
static void maps_snapshot(uintptr_t a, size_t len, struct maps_text *t)
{
        t->text[0] = '\0';
        maps_each(a, len, line_append, t);
}

static bool line_perms(const struct maps_line *l, void *u)
{
        snprintf(u, 8, "%s", l->perms);
        return true;
}

static void perms_at(uintptr_t a, char perms[8])
{
        perms[0] = '\0';
        maps_each(a, PG, line_perms, perms);
}

static int fd_count(void)
{
        DIR *d = opendir("/proc/self/fd");
        int n = 0;
        if (!d)
                return -1;
        while (readdir(d))
                n++;
        closedir(d);
        return n;
}

/* ---- checking pieces ----------------------------------------------------- */

static bool pieces_cover(const struct xemem_piece *p, size_t n, uintptr_t a, size_t len)
{
        uintptr_t at = a;
        for (size_t i = 0; i < n; i++) {
                if (p[i].addr != at || p[i].len == 0 || p[i].len % PG || p[i].fd < 0)
                        return false;
                at += p[i].len;
        }
        return n > 0 && at == a + len;
}

/*
 * Maps each piece's fd a second time at its fd_offset and checks both views
 * show the same bytes, and that a write through either is seen at once
 * through the other (writable pieces; the bytes are put back).
 */
static bool pieces_shared(const struct xemem_piece *p, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                int prot = PROT_READ | (p[i].prot & PROT_WRITE);
                volatile unsigned char *second = mmap(NULL, p[i].len, prot, MAP_SHARED, p[i].fd, (off_t)p[i].fd_offset);
                volatile unsigned char *orig = (volatile unsigned char *)p[i].addr;
                bool good = second != MAP_FAILED;
                if (good && (p[i].prot & PROT_READ))
                        good = memcmp((const void *)second, (const void *)orig, p[i].len) == 0;
                if (good && (p[i].prot & PROT_WRITE)) {
                        size_t mid = p[i].len / 2;
                        unsigned char keep0 = orig[0], keep1 = orig[mid];
                        orig[0] = (unsigned char)~keep0;
                        good = second[0] == (unsigned char)~keep0;
                        second[mid] = (unsigned char)~keep1;
                        good = good && orig[mid] == (unsigned char)~keep1;
                        orig[0] = keep0;
                        orig[mid] = keep1;
                }
                if (second != MAP_FAILED)
                        munmap((void *)second, p[i].len);
                if (!good)
                        return false;
        }
        return true;
}

static void fill(void *p, size_t len, unsigned seed)
{
        unsigned char *c = p;
        for (size_t i = 0; i < len; i++)
                c[i] = (unsigned char)(i * 7 + seed);
}

static bool filled(const void *p, size_t len, unsigned seed)
{
        const unsigned char *c = p;
        for (size_t i = 0; i < len; i++)
                if (c[i] != (unsigned char)(i * 7 + seed))
                        return false;
        return true;
}

/* Converts, checks the pieces cover the range, are shared and the range reads as memfds; returns the pieces. */
static int convert_checked(const char *what, uintptr_t a, size_t len, struct xemem_piece **ret, size_t *n_ret)
{
        struct tessera_error err = {0};
        int r = convert_range(a, len, ret, n_ret, &err);
        if (!ok(r == 0, "%s: converted (%s)", what, r == 0 ? "ok" : err.msg))
                return r;
        ok(pieces_cover(*ret, *n_ret, a, len), "%s: %zu piece(s) cover the range exactly", what, *n_ret);
        ok(range_converted(a, len), "%s: /proc/self/maps shows our memfds over the range", what);
        ok(pieces_shared(*ret, *n_ret), "%s: a second mapping of each fd sees the same memory, both ways", what);
        return 0;
}

static void *sleeper_run(void *arg);

/* ---- the kinds of memory ------------------------------------------------- */

/* Page-aligned, so that the range holds no other variable (convert.c refuses the page of its own state). */
static unsigned char bss_buf[6 * 4096] __attribute__((aligned(4096)));
static int data_buf[8192] __attribute__((aligned(4096))) = {
        [0 ... 8191] = 0x5a5a5a5a}; /* 32 KiB of .data, left untouched until converted */

static void test_heap(void)
{
        size_t n = 5 * PG + 123;
        unsigned char *buf = malloc(n);
        struct xemem_piece *p = NULL;
        size_t np = 0;
        fill(buf, n, 1);
        uintptr_t a = page_down(buf), e = page_up(buf + n);
        if (convert_checked("malloc'd buffer", a, e - a, &p, &np) == 0)
                ok(filled(buf, n, 1), "malloc'd buffer: contents preserved");
        free(p);
        free(buf); /* the heap goes on working on converted pages */
        void *again = malloc(n);
        ok(again != NULL, "malloc after free of converted heap memory");
        free(again);
}

static void test_static(void)
{
        struct xemem_piece *p = NULL;
        size_t np = 0;
        fill(bss_buf, sizeof(bss_buf), 2);
        uintptr_t a = page_down(bss_buf), e = page_up(bss_buf + sizeof(bss_buf));
        if (convert_checked("static .bss buffer", a, e - a, &p, &np) == 0)
                ok(filled(bss_buf, sizeof(bss_buf), 2), ".bss buffer: contents preserved");
        free(p);

        /* .data is a private file mapping: pages never touched hold the file's data, not zeroes. */
        p = NULL;
        a = page_down(data_buf);
        e = page_up(data_buf + ELEMENTSOF(data_buf));
        if (convert_checked("static .data buffer (untouched)", a, e - a, &p, &np) == 0) {
                bool same = true;
                for (size_t i = 0; i < ELEMENTSOF(data_buf); i++)
                        same = same && data_buf[i] == 0x5a5a5a5a;
                ok(same, ".data buffer: initial values from the executable preserved");
        }
        free(p);
}

static void __attribute__((noinline)) stack_grow(size_t bytes)
{
        volatile char *deep = alloca(bytes);
        for (size_t i = 0; i < bytes; i += 256)
                deep[i] = 1;
}

/* The range includes this function's frame and the frames convert_range() runs in. */
static void __attribute__((noinline)) test_stack(void)
{
        unsigned char buf[3 * 4096 + 100];
        struct xemem_piece *p = NULL;
        size_t np = 0;
        fill(buf, sizeof(buf), 3);
        uintptr_t a = page_down(buf) - 16 * PG, e = page_up(buf + sizeof(buf));
        if (convert_checked("stack buffer and the frames below it", a, e - a, &p, &np) == 0)
                ok(filled(buf, sizeof(buf), 3), "stack buffer: contents preserved");
        free(p);
}

static void test_anon_prot(void)
{
        size_t len = 8 * PG;
        unsigned char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        struct xemem_piece *p = NULL, *q = NULL;
        size_t np = 0, nq = 0;
        char perms[8];

        fill(m, len, 4);
        mprotect(m + 3 * PG, 2 * PG, PROT_READ);
        if (convert_checked("mmap'd range, read-only in the middle", (uintptr_t)m, len, &p, &np) != 0)
                goto out;
        ok(filled(m, len, 4), "mmap'd range: contents preserved");
        ok(np == 3 && p[0].prot == (PROT_READ | PROT_WRITE) && p[1].prot == PROT_READ &&
                   p[2].prot == (PROT_READ | PROT_WRITE),
           "three pieces with the original protections (rw, r, rw)");
        perms_at((uintptr_t)m + 3 * PG, perms);
        ok(STREQ(perms, "r--s"), "read-only pages stay read-only (%s)", perms);

        pid_t pid = fork();
        if (pid == 0) {
                m[0] = 0xee;                        /* shared after conversion: the parent sees it */
                *(volatile char *)(m + 3 * PG) = 1; /* read-only: SIGSEGV */
                _exit(0);
        }
        int st = 0;
        waitpid(pid, &st, 0);
        ok(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV, "a write to the read-only piece faults (status %#x)", st);
        ok(m[0] == 0xee, "converted pages are shared with a fork() child, not copy-on-write (documented)");
        m[0] = (unsigned char)(0 * 7 + 4);

        struct tessera_error err = {0};
        int r = convert_range((uintptr_t)m, len, &q, &nq, &err);
        bool same = r == 0 && nq == np;
        for (size_t i = 0; same && i < np; i++)
                same = q[i].fd == p[i].fd && q[i].ino == p[i].ino && q[i].addr == p[i].addr &&
                       q[i].fd_offset == p[i].fd_offset && q[i].prot == p[i].prot;
        ok(same, "converting again returns the same fds and inodes (%s)", r ? err.msg : "ok");
out:
        free(p);
        free(q);
        munmap(m, len);
}

static void test_prot_none(void)
{
        size_t len = 2 * PG;
        unsigned char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        struct xemem_piece *p = NULL;
        size_t np = 0;
        struct tessera_error err = {0};

        fill(m, len, 5);
        mprotect(m + PG, PG, PROT_NONE);
        int r = convert_range((uintptr_t)m, len, &p, &np, &err);
        ok(r == 0 && np == 2 && p[1].prot == 0, "a PROT_NONE page converts and stays PROT_NONE (%s)",
           r ? err.msg : "ok");
        if (r == 0 && np == 2) {
                unsigned char *view = mmap(NULL, PG, PROT_READ, MAP_SHARED, p[1].fd, (off_t)p[1].fd_offset);
                ok(view != MAP_FAILED && filled(view, PG, (unsigned)(5 + PG * 7)),
                   "the PROT_NONE page's data was copied (read through /proc/self/mem)");
                if (view != MAP_FAILED)
                        munmap(view, PG);
        }
        free(p);
        munmap(m, len);
}

static void test_straddle(void)
{
        size_t len = 8 * PG;
        unsigned char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        struct xemem_piece *a = NULL, *b = NULL, *c = NULL;
        size_t na = 0, nb = 0, nc = 0;
        struct tessera_error err = {0};

        fill(m, len, 6);
        int r = convert_range((uintptr_t)m, 4 * PG, &a, &na, &err);
        ok(r == 0 && na == 1, "first half converted (%s)", r ? err.msg : "ok");
        r = convert_range((uintptr_t)m + 2 * PG, 6 * PG, &b, &nb, &err);
        ok(r == 0 && pieces_cover(b, nb, (uintptr_t)m + 2 * PG, 6 * PG) && nb >= 2,
           "a range straddling a converted piece and fresh memory gives %zu pieces (%s)", nb, r ? err.msg : "ok");
        if (r == 0 && na == 1 && nb >= 2) {
                ok(b[0].ino == a[0].ino && b[0].fd == a[0].fd && b[0].fd_offset == 2 * PG && b[0].len == 2 * PG,
                   "the converted part is the old piece, clipped (fd_offset %llu, len %zu)",
                   (unsigned long long)b[0].fd_offset, b[0].len);
                ok(b[1].ino != a[0].ino, "the fresh part is a new memfd");
                ok(pieces_shared(b, nb) && filled(m, len, 6), "both pieces share the process's memory");
        }
        r = convert_range((uintptr_t)m, 4 * PG, &c, &nc, &err);
        ok(r == 0 && nc == 1 && na == 1 && c[0].ino == a[0].ino,
           "the first half still has its first inode (not converted again)");
        free(a);
        free(b);
        free(c);
        munmap(m, len);
}

/* ---- refusals ------------------------------------------------------------ */

static void test_refusals(const char *dir)
{
        struct xemem_piece *p = NULL;
        size_t np = 0;
        struct tessera_error err = {0};
        char hole[32];

        unsigned char *m = mmap(NULL, 3 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        fill(m, 3 * PG, 7);
        munmap(m + PG, PG);
        snprintf(hole, sizeof(hole), "%#lx", (unsigned long)(m + PG));
        int r = convert_range((uintptr_t)m, 3 * PG, &p, &np, &err);
        ok(r == -EFAULT && strstr(err.msg, hole), "a hole gives EFAULT naming %s (%s)", hole, err.msg);
        ok(range_private((uintptr_t)m, PG) && filled(m, PG, 7), "the range around the hole is left as it was");
        munmap(m, 3 * PG);

        char path[4200];
        snprintf(path, sizeof(path), "%s/shared-file", dir);
        _cleanup_close_ int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        ok(fd >= 0 && ftruncate(fd, (off_t)(2 * PG)) == 0, "made %s", path);
        void *s = fd >= 0 ? mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) : MAP_FAILED;
        if (s != MAP_FAILED) {
                r = convert_range((uintptr_t)s, 2 * PG, &p, &np, &err);
                ok(r == -EINVAL && strstr(err.msg, "shared-file"), "a shared mapping of a file gives EINVAL (%s)",
                   err.msg);
                munmap(s, 2 * PG);
        }
        unlink(path);

        uintptr_t vdso = getauxval(AT_SYSINFO_EHDR);
        if (vdso) {
                r = convert_range(vdso, PG, &p, &np, &err);
                ok(r == -EINVAL && strstr(err.msg, "[vdso]"), "the vDSO gives EINVAL (%s)", err.msg);
        } else {
                skip("no vDSO in this process");
        }

        void *h = mmap(NULL, 2 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
        if (h != MAP_FAILED) {
                r = convert_range((uintptr_t)h, 2 << 20, &p, &np, &err);
                ok(r == -EINVAL && strstr(err.msg, "hugetlb"), "hugetlb memory gives EINVAL (%s)", err.msg);
                munmap(h, 2 << 20);
        } else {
                skip("no huge pages reserved here (vm.nr_hugepages is 0), so no private hugetlb mapping to refuse");
        }

        r = convert_range((uintptr_t)bss_buf + 1, PG, &p, &np, &err);
        ok(r == -EINVAL, "an unaligned address gives EINVAL (%s)", err.msg);
}

/* ---- threads ------------------------------------------------------------- */

#define HAMMER_THREADS 4
#define HAMMER_PAGES   128

struct hammer {
        volatile uint64_t *buf;
        int idx;
        volatile int *stop;
        uint64_t count;
        uint64_t progress; /* read by the main thread while running */
};

static void *hammer_run(void *arg)
{
        struct hammer *h = arg;
        size_t words = PG / sizeof(uint64_t);
        uint64_t n = 0;
        while (!*h->stop) {
                for (size_t pg = 0; pg < HAMMER_PAGES; pg++) {
                        h->buf[pg * words + (size_t)h->idx * 8]++;
                        n++;
                }
                __atomic_store_n(&h->progress, n, __ATOMIC_RELAXED);
        }
        h->count = n;
        return NULL;
}

static void test_threads_hammering(void)
{
        size_t len = HAMMER_PAGES * PG, words = PG / sizeof(uint64_t);
        volatile uint64_t *buf = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        volatile int stop = 0;
        struct hammer h[HAMMER_THREADS];
        pthread_t t[HAMMER_THREADS];
        int failures = 0;
        char first_error[1024] = "";

        for (int i = 0; i < HAMMER_THREADS; i++) {
                h[i] = (struct hammer){.buf = buf, .idx = i, .stop = &stop};
                pthread_create(&t[i], NULL, hammer_run, &h[i]);
        }
        for (int i = 0; i < HAMMER_THREADS; i++)
                while (__atomic_load_n(&h[i].progress, __ATOMIC_RELAXED) == 0)
                        usleep(1000);

        uint64_t t0 = now_ns();
        for (int i = 0; i < 50; i++) {
                struct xemem_piece *p = NULL;
                size_t np = 0;
                struct tessera_error err = {0};
                int r = convert_range((uintptr_t)buf + (size_t)(2 * i) * PG, 3 * PG, &p, &np, &err);
                if (r < 0 && failures++ == 0)
                        snprintf(first_error, sizeof(first_error), "%s", err.msg);
                free(p);
        }
        double ms = ms_since(t0);
        stop = 1;
        for (int i = 0; i < HAMMER_THREADS; i++)
                pthread_join(t[i], NULL);

        ok(failures == 0, "50 conversions with %d threads writing: %d failed %s", HAMMER_THREADS, failures,
           first_error);
        bool all = true;
        for (int i = 0; i < HAMMER_THREADS; i++) {
                uint64_t sum = 0;
                for (size_t pg = 0; pg < HAMMER_PAGES; pg++)
                        sum += buf[pg * words + (size_t)i * 8];
                if (sum != h[i].count) {
                        diag("thread %d counted %llu increments, memory holds %llu", i, (unsigned long long)h[i].count,
                             (unsigned long long)sum);
                        all = false;
                }
        }
        ok(all, "no increment lost (%llu+%llu+%llu+%llu increments)", (unsigned long long)h[0].count,
           (unsigned long long)h[1].count, (unsigned long long)h[2].count, (unsigned long long)h[3].count);
        ok(range_converted((uintptr_t)buf, 101 * PG), "the 101 pages the loop covered are converted");
        diag("50 conversions with 4 writing threads stopped: %.1f ms in all", ms);
        munmap((void *)buf, len);
}

struct blocker {
        volatile int stop;
        volatile pid_t tid;
};

static void *blocker_run(void *arg)
{
        struct blocker *b = arg;
        sigset_t all;
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, NULL);
        b->tid = gettid();
        while (!b->stop)
                usleep(1000);
        return NULL;
}

static void test_thread_blocking_signal(void)
{
        struct blocker b = {0};
        pthread_t t;
        size_t len = 4 * PG;
        unsigned char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        struct xemem_piece *p = NULL;
        size_t np = 0;
        struct tessera_error err = {0};
        char tid[16];

        fill(m, len, 8);
        pthread_create(&t, NULL, blocker_run, &b);
        while (!b.tid)
                usleep(1000);
        snprintf(tid, sizeof(tid), "%d", (int)b.tid);
        convert_gc(); /* so that convert_range's own gc closes nothing below */
        int fds = fd_count();
        uint64_t t0 = now_ns();
        int r = convert_range((uintptr_t)m, len, &p, &np, &err);
        double ms = ms_since(t0);
        ok(r == -EBUSY && strstr(err.msg, tid), "a thread blocking the signal gives EBUSY naming thread %s (%s)", tid,
           err.msg);
        ok(ms > 900 && ms < 2000, "... after about 1 s (%.0f ms)", ms);
        ok(range_private((uintptr_t)m, len) && filled(m, len, 8), "the buffer is left unconverted and intact");
        ok(fd_count() == fds, "no memfd left open");
        b.stop = 1;
        pthread_join(t, NULL);
        free(p);
        munmap(m, len);
}

/* Threads come and go during the conversions: each is found by a rescan, or has exited. */
struct spawner {
        volatile uint64_t *buf;
        volatile int stop;
        uint64_t spawned;
};

static void *short_lived_run(void *arg)
{
        volatile uint64_t *word = arg;
        for (int i = 0; i < 1000; i++)
                (*word)++;
        return NULL;
}

static void *spawner_run(void *arg)
{
        struct spawner *sp = arg;
        size_t words = PG / sizeof(uint64_t);
        while (!sp->stop) {
                pthread_t t;
                volatile uint64_t *word = sp->buf + (sp->spawned % 16) * words;
                if (pthread_create(&t, NULL, short_lived_run, (void *)word) != 0)
                        break;
                pthread_join(t, NULL);
                sp->spawned++;
        }
        return NULL;
}

static void test_threads_coming_and_going(void)
{
        size_t len = 320 * PG, words = PG / sizeof(uint64_t);
        volatile uint64_t *buf = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        struct spawner sp = {.buf = buf};
        pthread_t t;
        int failures = 0;
        char first_error[1024] = "";

        pthread_create(&t, NULL, spawner_run, &sp);
        while (sp.spawned < 10)
                usleep(1000);
        for (int i = 0; i < 300; i++) {
                struct xemem_piece *p = NULL;
                size_t np = 0;
                struct tessera_error err = {0};
                /* the 16 pages the short-lived threads write, and one fresh page each time (so a stop) */
                int r = convert_range((uintptr_t)buf, (size_t)(16 + i) * PG, &p, &np, &err);
                if (r < 0 && failures++ == 0)
                        snprintf(first_error, sizeof(first_error), "%s", err.msg);
                free(p);
        }
        sp.stop = 1;
        pthread_join(t, NULL);
        uint64_t sum = 0;
        for (size_t i = 0; i < 16; i++)
                sum += buf[i * words];
        ok(failures == 0 && sum == sp.spawned * 1000,
           "300 conversions while %llu threads were created and exited: %d failed %s, %llu of %llu increments kept",
           (unsigned long long)sp.spawned, failures, first_error, (unsigned long long)sum,
           (unsigned long long)sp.spawned * 1000);
        munmap((void *)buf, len);
}

/* A main thread that called pthread_exit() stays listed as a zombie: it must not hold the stop up. */
static void *orphan_worker(void *arg)
{
        volatile int stop = 0;
        pthread_t t;
        struct xemem_piece *p = NULL;
        size_t np = 0;
        struct tessera_error err = {0};
        unsigned char *m = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

        m[0] = 1;
        pthread_create(&t, NULL, sleeper_run, (void *)&stop);
        usleep(20000); /* let the main thread finish exiting */
        uint64_t t0 = now_ns();
        int r = convert_range((uintptr_t)m, PG, &p, &np, &err);
        double ms = ms_since(t0);
        stop = 1;
        pthread_join(t, NULL);
        if (r != 0 || ms > 500)
                fprintf(stderr, "orphan worker: %d after %.0f ms: %s\n", r, ms, err.msg);
        exit(r == 0 && ms <= 500 ? 0 : 1);
}

static void test_zombie_main_thread(void)
{
        pid_t pid = fork();
        if (pid == 0) {
                pthread_t w;
                pthread_create(&w, NULL, orphan_worker, NULL);
                pthread_exit(NULL);
        }
        int st = 0;
        waitpid(pid, &st, 0);
        ok(WIFEXITED(st) && WEXITSTATUS(st) == 0,
           "a main thread gone with pthread_exit() (a zombie) does not hold the stop up (status %#x)", st);
}

/* ---- bookkeeping --------------------------------------------------------- */

static void test_gc_and_seals(void)
{
        size_t len = 4 * PG;
        unsigned char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        struct xemem_piece *p = NULL;
        size_t np = 0;
        struct tessera_error err = {0};

        fill(m, len, 9);
        int r = convert_range((uintptr_t)m, len, &p, &np, &err);
        if (!ok(r == 0 && np == 1, "converted a range for gc (%s)", r ? err.msg : "ok")) {
                munmap(m, len);
                return;
        }
        int fd = p[0].fd;
        int seals = fcntl(fd, F_GET_SEALS);
        ok(seals >= 0 && (seals & F_SEAL_SHRINK) && (seals & F_SEAL_GROW) && (seals & F_SEAL_SEAL),
           "the memfd is sealed against shrink, grow and further seals (%#x)", seals);
        ok(ftruncate(fd, 0) < 0 && errno == EPERM, "so nobody can truncate it");
        ok(fcntl(fd, F_GETFD) >= 0 && (fcntl(fd, F_GETFD) & FD_CLOEXEC), "the memfd is close-on-exec");

        convert_gc();
        ok(fcntl(fd, F_GETFD) >= 0, "convert_gc keeps the memfd of a range still mapped");
        munmap(m + PG, PG);
        convert_gc();
        ok(fcntl(fd, F_GETFD) >= 0, "... and of a range partly unmapped");
        munmap(m, len);
        size_t closed = convert_gc();
        ok(closed >= 1 && fcntl(fd, F_GETFD) < 0 && errno == EBADF,
           "convert_gc closes the memfd once its range is unmapped (%zu closed)", closed);
        free(p);
}

static void test_untouched(void)
{
        size_t len = 256UL << 20;
        unsigned char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        struct xemem_piece *p = NULL;
        size_t np = 0;
        struct tessera_error err = {0};
        struct stat st = {0};

        m[0] = 1;
        m[len / 2] = 2;
        m[len - 1] = 3;
        uint64_t t0 = now_ns();
        int r = convert_range((uintptr_t)m, len, &p, &np, &err);
        double ms = ms_since(t0);
        ok(r == 0 && np == 1, "256 MiB mmap'd, 3 pages touched: converted (%s)", r ? err.msg : "ok");
        ok(ms < 50, "... in %.1f ms (< 50 ms: untouched pages are not copied)", ms);
        if (r == 0)
                fstat(p[0].fd, &st);
        ok(r == 0 && st.st_blocks * 512 <= 16 * (off_t)PG, "... and the memfd holds %lld bytes, not 256 MiB",
           (long long)st.st_blocks * 512);
        ok(m[0] == 1 && m[len / 2] == 2 && m[len - 1] == 3 && m[PG] == 0, "... with the touched bytes preserved");
        free(p);
        munmap(m, len);

        /* The same through malloc, which takes big blocks with mmap and writes a header. */
        p = NULL;
        unsigned char *b = malloc(len);
        b[12345] = 7;
        uintptr_t a = page_down(b), e = page_up(b + len);
        t0 = now_ns();
        r = convert_range(a, e - a, &p, &np, &err);
        ms = ms_since(t0);
        ok(r == 0 && ms < 50 && b[12345] == 7, "256 MiB malloc'd, untouched: converted in %.1f ms (%s)", ms,
           r ? err.msg : "ok");
        free(p);
        free(b);
        convert_gc();
}

static void test_one_gib(void)
{
        size_t len = 1UL << 30;
        uint64_t *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        struct xemem_piece *p = NULL;
        size_t np = 0;
        struct tessera_error err = {0};
        size_t words = PG / sizeof(uint64_t);

        if (m == MAP_FAILED) {
                skip("cannot map 1 GiB here");
                return;
        }
        uint64_t t0 = now_ns();
        for (size_t pg = 0; pg < len / PG; pg++)
                for (size_t w = 0; w < words; w += 64)
                        m[pg * words + w] = pg ^ w;
        double touch_ms = ms_since(t0);
        t0 = now_ns();
        int r = convert_range((uintptr_t)m, len, &p, &np, &err);
        double ms = ms_since(t0);
        bool same = r == 0;
        for (size_t pg = 0; same && pg < len / PG; pg += 97)
                same = m[pg * words] == pg && m[pg * words + 64] == (pg ^ 64);
        ok(r == 0 && np == 1 && same, "1 GiB of touched memory converted, contents preserved (%s)", r ? err.msg : "ok");
        diag("convert 1 GiB touched: %.0f ms (%.2f GB/s); for scale, touching it first took %.0f ms", ms,
             (double)len / ms / 1e6, touch_ms);
        free(p);
        munmap(m, len);
        convert_gc();
}

/* ---- forced fallbacks and failures (seccomp, in forked children) --------- */

static int seccomp_errno_rule(int syscall_nr, int error, unsigned arg, uint64_t mask, uint64_t value)
{
        scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
        int r = ctx ? 0 : -ENOMEM;
        if (r == 0 && mask)
                r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(error), syscall_nr, 1,
                                     SCMP_CMP(arg, SCMP_CMP_MASKED_EQ, mask, value));
        else if (r == 0)
                r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(error), syscall_nr, 0);
        if (r == 0)
                r = seccomp_load(ctx);
        seccomp_release(ctx);
        return r;
}

/* Runs the main paths with PROCMAP_QUERY failing ENOTTY, as on kernels before 6.11. */
static int fallback_child(const char *dir)
{
        int failed = 0;
        struct xemem_piece *p = NULL, *q = NULL;
        size_t np = 0, nq = 0;
        struct tessera_error err = {0};

        if (seccomp_errno_rule(SCMP_SYS(ioctl), ENOTTY, 1, 0xffffffffULL, TEST_PROCMAP_QUERY) < 0)
                return 0x80;
        int maps = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
        char probe[104] = {0};
        *(uint64_t *)probe = sizeof(probe);
        if (!(ioctl(maps, TEST_PROCMAP_QUERY, probe) < 0 && errno == ENOTTY))
                failed |= 0x40;
        close(maps);

        size_t len = 6 * PG;
        unsigned char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        fill(m, len, 10);
        if (convert_range((uintptr_t)m, 3 * PG, &p, &np, &err) != 0 || !pieces_cover(p, np, (uintptr_t)m, 3 * PG) ||
            !range_converted((uintptr_t)m, 3 * PG) || !pieces_shared(p, np) || !filled(m, len, 10))
                failed |= 0x01;
        if (convert_range((uintptr_t)m + PG, 5 * PG, &q, &nq, &err) != 0 || nq != 2 || q[0].ino != p[0].ino ||
            q[0].fd_offset != PG)
                failed |= 0x02;
        free(q);

        unsigned char *h = mmap(NULL, 3 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        munmap(h + PG, PG);
        if (convert_range((uintptr_t)h, 3 * PG, &q, &nq, &err) != -EFAULT)
                failed |= 0x04;

        char path[4200];
        snprintf(path, sizeof(path), "%s/fallback-file", dir);
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        void *s = fd >= 0 && ftruncate(fd, (off_t)PG) == 0 ? mmap(NULL, PG, PROT_READ, MAP_SHARED, fd, 0) : MAP_FAILED;
        if (s == MAP_FAILED || convert_range((uintptr_t)s, PG, &q, &nq, &err) != -EINVAL ||
            !strstr(err.msg, "fallback-file"))
                failed |= 0x08;

        int pfd = p ? p[0].fd : -1;
        munmap(m, len);
        convert_gc();
        if (pfd < 0 || fcntl(pfd, F_GETFD) >= 0)
                failed |= 0x10;
        if (failed)
                fprintf(stderr, "fallback child: last error: %s\n", err.msg);
        return failed;
}

static void test_fallback(const char *dir)
{
        pid_t pid = fork();
        if (pid == 0)
                _exit(fallback_child(dir));
        int st = 0;
        waitpid(pid, &st, 0);
        ok(WIFEXITED(st) && WEXITSTATUS(st) == 0,
           "with PROCMAP_QUERY refused (ENOTTY, forced by seccomp) the /proc/self/maps text is used: convert, "
           "reuse, straddle, hole, shared file, gc (failed checks mask %#x)",
           WIFEXITED(st) ? WEXITSTATUS(st) : 0x100 | st);
}

/*
 * Rollback: the second piece's memfd cannot be mapped (seccomp makes
 * mmap(MAP_FIXED_NOREPLACE) of a read-only piece fail), after the first
 * piece has been remapped; then memfd_create() fails.  Each time the range
 * must be exactly as before, with a writing thread released.
 */
static int rollback_child(void)
{
        int failed = 0;
        size_t len = 6 * PG;
        unsigned char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        volatile uint64_t *w =
                mmap(NULL, HAMMER_PAGES * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        volatile int stop = 0;
        struct hammer h = {.buf = w, .idx = 0, .stop = &stop};
        pthread_t t;
        struct xemem_piece *p = NULL;
        size_t np = 0;
        struct tessera_error err = {0};
        struct maps_text *before = calloc(1, sizeof(*before)), *after = calloc(1, sizeof(*after));

        fill(m, len, 11);
        mprotect(m + 3 * PG, 3 * PG, PROT_READ);
        pthread_create(&t, NULL, hammer_run, &h);
        while (__atomic_load_n(&h.progress, __ATOMIC_RELAXED) == 0)
                usleep(1000);
        maps_snapshot((uintptr_t)m, len, before);
        int fds = fd_count();

        if (seccomp_errno_rule(SCMP_SYS(mmap), ENOMEM, 3, MAP_FIXED_NOREPLACE, MAP_FIXED_NOREPLACE) < 0)
                return 0x80;
        int r = convert_range((uintptr_t)m, len, &p, &np, &err);
        if (r != -ENOMEM || !strstr(err.msg, "mapping the memfd"))
                failed |= 0x01;
        maps_snapshot((uintptr_t)m, len, after);
        if (!STREQ(before->text, after->text) || !filled(m, len, 11))
                failed |= 0x02;
        if (fd_count() != fds)
                failed |= 0x04;
        uint64_t seen = __atomic_load_n(&h.progress, __ATOMIC_RELAXED);
        usleep(20000);
        if (__atomic_load_n(&h.progress, __ATOMIC_RELAXED) == seen)
                failed |= 0x08; /* the writer was not released */

        if (seccomp_errno_rule(SCMP_SYS(memfd_create), EMFILE, 0, 0, 0) < 0)
                return 0x80;
        r = convert_range((uintptr_t)m, len, &p, &np, &err);
        maps_snapshot((uintptr_t)m, len, after);
        if (r != -EMFILE || !STREQ(before->text, after->text) || !filled(m, len, 11) || fd_count() != fds)
                failed |= 0x10;

        stop = 1;
        pthread_join(t, NULL);
        if (failed)
                fprintf(stderr, "rollback child: last error: %s\nbefore:\n%safter:\n%s", err.msg, before->text,
                        after->text);
        return failed;
}

/* As above, but only the read-only piece fails to map: the read-write one before it was remapped already. */
static int rollback_second_piece_child(void)
{
        int failed = 0;
        size_t len = 6 * PG;
        unsigned char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        struct xemem_piece *p = NULL;
        size_t np = 0;
        struct tessera_error err = {0};
        struct maps_text *before = calloc(1, sizeof(*before)), *after = calloc(1, sizeof(*after));

        fill(m, len, 12);
        mprotect(m + 3 * PG, 3 * PG, PROT_READ);
        maps_snapshot((uintptr_t)m, len, before);
        int fds = fd_count();

        scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
        if (!ctx ||
            seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOMEM), SCMP_SYS(mmap), 2, SCMP_A2(SCMP_CMP_EQ, PROT_READ),
                             SCMP_A3(SCMP_CMP_MASKED_EQ, MAP_FIXED_NOREPLACE, MAP_FIXED_NOREPLACE)) < 0 ||
            seccomp_load(ctx) < 0)
                return 0x80;
        seccomp_release(ctx);

        int r = convert_range((uintptr_t)m, len, &p, &np, &err);
        if (r != -ENOMEM || !strstr(err.msg, "mapping the memfd"))
                failed |= 0x01;
        maps_snapshot((uintptr_t)m, len, after);
        if (!STREQ(before->text, after->text) || !filled(m, len, 12))
                failed |= 0x02;
        if (fd_count() != fds)
                failed |= 0x04;
        m[0] = 0x77; /* still private: writable, and ours alone */
        if (failed)
                fprintf(stderr, "rollback child: last error: %s\nbefore:\n%safter:\n%s", err.msg, before->text,
                        after->text);
        return failed;
}

static void test_rollback(void)
{
        pid_t pid = fork();
        if (pid == 0)
                _exit(rollback_child());
        int st = 0;
        waitpid(pid, &st, 0);
        ok(WIFEXITED(st) && WEXITSTATUS(st) == 0,
           "a failed remap or memfd_create leaves the range exactly as it was, no fd left, threads released "
           "(failed checks mask %#x)",
           WIFEXITED(st) ? WEXITSTATUS(st) : 0x100 | st);

        pid = fork();
        if (pid == 0)
                _exit(rollback_second_piece_child());
        waitpid(pid, &st, 0);
        ok(WIFEXITED(st) && WEXITSTATUS(st) == 0,
           "a failure on the second piece also puts back the first, already remapped (failed checks mask %#x)",
           WIFEXITED(st) ? WEXITSTATUS(st) : 0x100 | st);
}

/* ---- the stop signal, in re-executed children (the variable is read once per process) ---- */

static void other_handler(int sig)
{
}

static void *sleeper_run(void *arg)
{
        volatile int *stop = arg;
        while (!*stop)
                usleep(1000);
        return NULL;
}

/* Modes: "busy" (SIGRTMAX-2 taken), "override" (taken, but TESSERA_XEMEM_SIGNAL names another), "bad". */
static int signal_child(const char *mode)
{
        volatile int stop = 0;
        pthread_t t;
        struct xemem_piece *p = NULL;
        size_t np = 0;
        struct tessera_error err = {0};
        char num[16];
        int failed = 0;

        signal(SIGRTMAX - 2, other_handler);
        pthread_create(&t, NULL, sleeper_run, (void *)&stop);
        unsigned char *m = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        m[0] = 1;
        int r = convert_range((uintptr_t)m, PG, &p, &np, &err);
        snprintf(num, sizeof(num), "%d", SIGRTMAX - 2);
        if (STREQ(mode, "busy")) {
                if (r != -EBUSY || !strstr(err.msg, num) || !strstr(err.msg, "TESSERA_XEMEM_SIGNAL"))
                        failed |= 1;
        } else if (STREQ(mode, "override")) {
                struct sigaction sa;
                sigaction(SIGRTMIN + 5, NULL, &sa);
                if (r != 0 || !(sa.sa_flags & SA_SIGINFO) || !range_converted((uintptr_t)m, PG))
                        failed |= 1;
        } else if (STREQ(mode, "bad")) {
                if (r != -EINVAL || !strstr(err.msg, "TESSERA_XEMEM_SIGNAL"))
                        failed |= 1;
        }
        if (failed)
                fprintf(stderr, "signal child %s: %d %s\n", mode, r, err.msg);
        stop = 1;
        pthread_join(t, NULL);
        return failed;
}

static int run_signal_child(const char *mode, const char *env)
{
        pid_t pid = fork();
        if (pid == 0) {
                if (env)
                        setenv("TESSERA_XEMEM_SIGNAL", env, 1);
                else
                        unsetenv("TESSERA_XEMEM_SIGNAL");
                execl("/proc/self/exe", "test-xemem-convert", "--signal-child", mode, (char *)NULL);
                _exit(127);
        }
        int st = 0;
        waitpid(pid, &st, 0);
        return WIFEXITED(st) ? WEXITSTATUS(st) : 0x100 | st;
}

static void test_signal_choice(void)
{
        char rt[16];
        int r = run_signal_child("busy", NULL);
        ok(r == 0, "SIGRTMAX-2 already handled by the program: EBUSY naming the signal and TESSERA_XEMEM_SIGNAL (%#x)",
           r);
        snprintf(rt, sizeof(rt), "%d", SIGRTMIN + 5);
        r = run_signal_child("override", rt);
        ok(r == 0, "TESSERA_XEMEM_SIGNAL=%s picks another signal, and conversion works (%#x)", rt, r);
        r = run_signal_child("bad", "5");
        ok(r == 0, "TESSERA_XEMEM_SIGNAL=5 (not real-time) gives EINVAL naming the variable (%#x)", r);
}

int main(int argc, char **argv)
{
        PG = (size_t)sysconf(_SC_PAGESIZE);
        if (argc == 3 && STREQ(argv[1], "--signal-child"))
                return signal_child(argv[2]);

        char dir[] = "/tmp/test-xemem-convert.XXXXXX";
        if (!mkdtemp(dir)) {
                ok(0, "mkdtemp: %s", strerror(errno));
                return done_testing();
        }
        stack_grow(512 * 1024);

        /*
         * First everything that forks: once heap, static or stack pages that hold the
         * process's own data (malloc's chunk headers, other variables, frames) are
         * converted, a fork() child shares them and both processes corrupt each
         * other (the documented limit).
         */
        test_anon_prot();
        test_prot_none();
        test_straddle();
        test_refusals(dir);
        test_gc_and_seals();
        test_fallback(dir);
        test_rollback();
        test_signal_choice();
        test_zombie_main_thread();
        test_threads_hammering();
        test_threads_coming_and_going();
        test_thread_blocking_signal();
        test_untouched();
        test_one_gib();
        test_heap();
        test_static();
        test_stack();

        char path[sizeof(dir) + 32];
        snprintf(path, sizeof(path), "%s/fallback-file", dir);
        unlink(path);
        ok(rmdir(dir) == 0, "removed %s", dir);
        return done_testing();
}
