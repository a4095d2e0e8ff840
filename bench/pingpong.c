/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * bench/pingpong: an MPI-style ping-pong between two processes, the way an
 * MPI library's single-copy path does it.  With XPMEM every rank exports its
 * whole address space once (xpmem_make(0, XPMEM_MAXADDR_SIZE, ...)), learns
 * its peer's segment id and buffer address, gets and attaches the peer's
 * buffer once (the registration cache), and then copies each message out of
 * the attachment with memcpy; flags in shared memory say when a message is
 * there and when it has been taken.  With CMA the copy is a
 * process_vm_readv() from the peer's buffer, the path MPI takes without
 * XPMEM.
 *
 * Two ways to run it: `--side a` and `--side b`, two separately launched
 * processes (in two enclaves, say) that meet through a small named XEMEM
 * segment; or `--pair`, which forks the peer itself and meets it through an
 * anonymous shared page (each side pinned to its own CPU when it has two).
 * Side a writes one line per message size to --out (else stdout):
 * "METHOD SIZE ITERATIONS RTT_MEDIAN_NS RTT_P90_NS", then "sides PIDNS_A PIDNS_B
 * CPU_A CPU_B" (the inodes of their pid namespaces, the CPUs they ran on), and
 * for XPMEM "register BYTES NS" (side a's xpmem_get + xpmem_attach of the
 * peer's buffer, which has the peer's agent convert it).  Exit status 0, or 1
 * with the reason on stderr.  Started by bench/xemem (see README.md).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tessera/xemem.h"
#include "xpmem.h"

#define LINE       64
#define PAGE       4096UL
#define MAX_SIZES  16
#define SPIN_YIELD (1U << 16) /* spins before a waiter starts yielding its CPU: it may share one */

enum method {
        METHOD_XPMEM,
        METHOD_CMA,
};

static const char *const method_name[] = {[METHOD_XPMEM] = "xpmem", [METHOD_CMA] = "cma"};

/* A counter alone on its cache line, so the two sides' flags do not share one. */
struct flag {
        _Atomic uint64_t v;
        char pad[LINE - sizeof(uint64_t)];
};

/* What a side tells its peer: where its messages are. */
struct side_info {
        int64_t segid;  /* XPMEM: the whole-address-space segment */
        uint64_t buf;   /* the buffer the peer copies from, in this side's address space */
        int32_t pid;    /* CMA: whom to read from */
        int32_t cpu;    /* where it ran at the end */
        uint64_t pidns; /* the inode of its pid namespace: shows whether the sides share one */
};

/* The shared page both sides meet in. */
struct ctl {
        struct flag post[2];  /* the last message each side made available (and so: took the peer's last one) */
        struct flag stage[2]; /* 1: info published; 2: finished */
        struct flag failed;   /* set by a side that gives up, so that the other stops waiting */
        struct side_info info[2];
};

struct options {
        enum method method;
        int side; /* 0 = a, 1 = b; -1 with --pair */
        bool pair;
        const char *name, *out;
        size_t sizes[MAX_SIZES], n_sizes, max_size;
        unsigned iters;
        unsigned timeout_s;
};

/* One side's state. */
struct run {
        const struct options *o;
        int me, peer;
        struct ctl *ctl;
        char *buf, *dst; /* the message this side offers; where it copies the peer's into */
        xemem_segid_t ctl_seg;
        xemem_apid_t ctl_apid;
        xpmem_segid_t segid;
        xpmem_apid_t apid;
        void *att;      /* XPMEM: the attachment of the peer's buffer */
        char *peer_buf; /* XPMEM: the peer's buffer inside it */
        size_t att_len;
        uint64_t attach_ns; /* xpmem_get + xpmem_attach of the peer's buffer: the registration, once */
        uint64_t deadline;
};

static char who[16] = "pingpong";

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "%s: ", who);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
        return -1;
}

static uint64_t now_ns(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
}

static void give_up(struct run *r)
{
        if (r->ctl)
                atomic_store_explicit(&r->ctl->failed.v, 1, memory_order_release);
}

/* Spins until *v >= want; gives up when the peer failed or the deadline passed. */
static int wait_at_least(struct run *r, _Atomic uint64_t *v, uint64_t want, const char *what)
{
        for (unsigned spins = 1;; spins++) {
                if (atomic_load_explicit(v, memory_order_acquire) >= want)
                        return 0;
                if (spins % 4096 == 0) {
                        if (atomic_load_explicit(&r->ctl->failed.v, memory_order_acquire))
                                return fail("the peer gave up while this side waited for %s", what);
                        if (now_ns() > r->deadline)
                                return fail("timed out after %u s waiting for %s", r->o->timeout_s, what);
                }
                if (spins >= SPIN_YIELD)
                        sched_yield();
                else
                        cpu_relax();
        }
}

/* ---- meeting the peer ---- */

static void *map_page_shared(void)
{
        void *p = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        return p == MAP_FAILED ? NULL : p;
}

/* Side a: a page of its own, exported under the name; side b finds it by the name. */
static int ctl_named(struct run *r)
{
        if (r->me == 0) {
                void *p = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                if (p == MAP_FAILED)
                        return fail("cannot map the control page: %s", strerror(errno));
                memset(p, 0, PAGE);
                r->ctl_seg = xemem_make(p, PAGE, r->o->name, 0666);
                if (r->ctl_seg < 0)
                        return fail("xemem_make of the control page as '%s': %s", r->o->name, xemem_error());
                r->ctl = p;
                return 0;
        }
        xemem_segid_t seg;
        while ((seg = xemem_lookup(r->o->name)) == -ENOENT && now_ns() < r->deadline) {
                struct timespec ts = {.tv_nsec = 2000000};
                nanosleep(&ts, NULL);
        }
        if (seg < 0)
                return fail("xemem_lookup('%s'): %s", r->o->name, xemem_error());
        r->ctl_apid = xemem_get(seg, XEMEM_RDWR);
        if (r->ctl_apid < 0)
                return fail("xemem_get of the control segment %lld: %s", (long long)seg, xemem_error());
        void *p = NULL;
        if (xemem_attach(r->ctl_apid, 0, PAGE, &p) < 0)
                return fail("xemem_attach of the control segment %lld: %s", (long long)seg, xemem_error());
        r->ctl = p;
        return 0;
}

static int buffers_make(struct run *r)
{
        size_t len = r->o->max_size;
        r->buf = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        r->dst = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (r->buf == MAP_FAILED || r->dst == MAP_FAILED)
                return fail("cannot map two buffers of %zu bytes: %s", len, strerror(errno));
        /* each side's message has its own byte, so a copy from the wrong place shows */
        memset(r->buf, 'A' + r->me, len);
        memset(r->dst, 0, len);
        return 0;
}

/* What MPI does at start: export everything once, publish the id and the buffer's address. */
static int publish(struct run *r)
{
        struct side_info *mine = &r->ctl->info[r->me];
        if (r->o->method == METHOD_XPMEM) {
                r->segid = xpmem_make(0, XPMEM_MAXADDR_SIZE, XPMEM_PERMIT_MODE, (void *)0666);
                if (r->segid == -1)
                        return fail("xpmem_make(0, XPMEM_MAXADDR_SIZE, XPMEM_PERMIT_MODE, 0666): %s (%s)",
                                    strerror(errno), xemem_error());
                mine->segid = r->segid;
        }
        struct stat st;
        mine->buf = (uintptr_t)r->buf;
        mine->pid = (int32_t)getpid();
        mine->pidns = stat("/proc/self/ns/pid", &st) == 0 ? (uint64_t)st.st_ino : 0;
        atomic_store_explicit(&r->ctl->stage[r->me].v, 1, memory_order_release);
        return wait_at_least(r, &r->ctl->stage[r->peer].v, 1, "the peer's segment id and address");
}

/* The registration cache: the peer's whole buffer attached once, by address, page aligned as MPI does. */
static int attach_peer(struct run *r)
{
        if (r->o->method != METHOD_XPMEM)
                return 0;
        const struct side_info *theirs = &r->ctl->info[r->peer];
        uint64_t t0 = now_ns();
        r->apid = xpmem_get(theirs->segid, XPMEM_RDWR, XPMEM_PERMIT_MODE, (void *)0666);
        if (r->apid == -1)
                return fail("xpmem_get(%lld): %s (%s)", (long long)theirs->segid, strerror(errno), xemem_error());
        uint64_t lo = theirs->buf & ~(PAGE - 1), hi = (theirs->buf + r->o->max_size + PAGE - 1) & ~(PAGE - 1);
        struct xpmem_addr at = {.apid = r->apid, .offset = (off_t)lo};
        void *m = xpmem_attach(at, hi - lo, NULL);
        if (m == (void *)-1)
                return fail("xpmem_attach(apid %lld, offset %#llx, %llu bytes): %s (%s)", (long long)r->apid,
                            (unsigned long long)lo, (unsigned long long)(hi - lo), strerror(errno), xemem_error());
        r->attach_ns = now_ns() - t0;
        r->att = m;
        r->att_len = hi - lo;
        r->peer_buf = (char *)m + (theirs->buf - lo);
        return 0;
}

/* ---- one message ---- */

static int take_message(struct run *r, size_t n)
{
        if (r->o->method == METHOD_XPMEM) {
                memcpy(r->dst, r->peer_buf, n);
                return 0;
        }
        const struct side_info *theirs = &r->ctl->info[r->peer];
        struct iovec local = {.iov_base = r->dst, .iov_len = n};
        struct iovec remote = {.iov_base = (void *)(uintptr_t)theirs->buf, .iov_len = n};
        ssize_t got = process_vm_readv(theirs->pid, &local, 1, &remote, 1, 0);
        if (got != (ssize_t)n)
                return fail("process_vm_readv of %zu bytes from pid %d: %s", n, (int)theirs->pid,
                            got < 0 ? strerror(errno) : "short copy");
        return 0;
}

static int check_message(struct run *r, size_t n)
{
        char want = (char)('A' + r->peer);
        for (size_t i = 0; i < n; i++)
                if (r->dst[i] != want)
                        return fail("byte %zu of a %zu-byte message is %#x, not the peer's %#x", i, n,
                                    (unsigned char)r->dst[i], (unsigned char)want);
        memset(r->dst, 0, n);
        return 0;
}

static int cmp_u64(const void *a, const void *b)
{
        uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
        return (x > y) - (x < y);
}

/* Fewer round trips for large messages: the copies dominate and the median settles sooner. */
static unsigned iterations_for(const struct options *o, size_t n)
{
        uint64_t it = n <= 65536 ? o->iters : (uint64_t)o->iters * 65536 / n;
        return it < 50 ? 50 : (unsigned)it;
}

/*
 * Round i: side a posts message i, waits for b's post of i (b has then
 * copied a's message and offers its own), copies b's message.  Side b
 * waits for a's post of i, copies, posts i.  a times each round trip: two
 * hand-overs and two copies.
 */
static int ping_pong(struct run *r, size_t n, uint64_t *seq, FILE *out)
{
        unsigned iters = iterations_for(r->o, n), warm = iters / 10 + 10;
        uint64_t *rtt = r->me == 0 ? calloc(iters, sizeof(*rtt)) : NULL;
        if (r->me == 0 && !rtt)
                return fail("out of memory for %u samples", iters);
        int res = 0;
        for (unsigned i = 0; i < warm + iters && res == 0; i++) {
                uint64_t s = ++*seq;
                if (r->me == 0) {
                        uint64_t t0 = now_ns();
                        atomic_store_explicit(&r->ctl->post[0].v, s, memory_order_release);
                        res = wait_at_least(r, &r->ctl->post[1].v, s, "the peer's message");
                        if (res == 0)
                                res = take_message(r, n);
                        if (i >= warm)
                                rtt[i - warm] = now_ns() - t0;
                } else {
                        res = wait_at_least(r, &r->ctl->post[0].v, s, "the peer's message");
                        if (res == 0)
                                res = take_message(r, n);
                        atomic_store_explicit(&r->ctl->post[1].v, s, memory_order_release);
                }
        }
        if (res == 0)
                res = check_message(r, n);
        if (res == 0 && r->me == 0) {
                qsort(rtt, iters, sizeof(*rtt), cmp_u64);
                double med = iters % 2 ? (double)rtt[iters / 2] : (rtt[iters / 2 - 1] + rtt[iters / 2]) / 2.0;
                size_t k = (size_t)((iters * 9 + 9) / 10);
                fprintf(out, "%s %zu %u %.1f %.1f\n", method_name[r->o->method], n, iters, med,
                        (double)rtt[k ? k - 1 : 0]);
                fflush(out);
        }
        free(rtt);
        return res;
}

static void teardown(struct run *r)
{
        if (r->att)
                (void)xpmem_detach(r->att);
        if (r->apid > 0)
                (void)xpmem_release(r->apid);
        if (r->segid > 0)
                (void)xpmem_remove(r->segid);
}

/* One side, from meeting to the end; the control page is set up already. */
static int run_side(struct run *r)
{
        FILE *out = stdout;
        if (r->me == 0 && r->o->out && !(out = fopen(r->o->out, "we")))
                return fail("cannot open %s: %s", r->o->out, strerror(errno));
        uint64_t seq = 0;
        int res = buffers_make(r);
        if (res == 0)
                res = publish(r);
        if (res == 0)
                res = attach_peer(r);
        for (size_t k = 0; k < r->o->n_sizes && res == 0; k++)
                res = ping_pong(r, r->o->sizes[k], &seq, out);
        if (res == 0) {
                /* neither side unmaps what the other may still be copying from */
                r->ctl->info[r->me].cpu = sched_getcpu();
                atomic_store_explicit(&r->ctl->stage[r->me].v, 2, memory_order_release);
                res = wait_at_least(r, &r->ctl->stage[r->peer].v, 2, "the peer to finish");
        }
        if (res == 0 && r->me == 0) {
                const struct side_info *a = &r->ctl->info[0], *b = &r->ctl->info[1];
                fprintf(out, "sides %llu %llu %d %d\n", (unsigned long long)a->pidns, (unsigned long long)b->pidns,
                        (int)a->cpu, (int)b->cpu);
                if (r->o->method == METHOD_XPMEM)
                        fprintf(out, "register %zu %llu\n", r->o->max_size, (unsigned long long)r->attach_ns);
        }
        if (res < 0)
                give_up(r);
        teardown(r);
        if (out != stdout && fclose(out) != 0 && res == 0)
                res = fail("cannot write %s: %s", r->o->out, strerror(errno));
        return res;
}

/* Pins the calling process to the n-th CPU it may use, when it may use more than one. */
static void pin_to(unsigned nth)
{
        cpu_set_t set;
        if (sched_getaffinity(0, sizeof(set), &set) < 0 || CPU_COUNT(&set) < 2)
                return;
        for (int cpu = 0, seen = 0; cpu < CPU_SETSIZE; cpu++)
                if (CPU_ISSET(cpu, &set) && (unsigned)seen++ == nth) {
                        cpu_set_t one;
                        CPU_ZERO(&one);
                        CPU_SET(cpu, &one);
                        (void)sched_setaffinity(0, sizeof(one), &one);
                        return;
                }
}

static int run_pair(const struct options *o)
{
        struct ctl *ctl = map_page_shared();
        if (!ctl)
                return fail("cannot map the shared control page: %s", strerror(errno));
        pid_t child = fork();
        if (child < 0)
                return fail("fork: %s", strerror(errno));
        struct run r = {.o = o, .me = child == 0, .ctl = ctl, .deadline = now_ns() + o->timeout_s * 1000000000ULL};
        r.peer = !r.me;
        snprintf(who, sizeof(who), "pingpong %c", 'a' + r.me);
        pin_to((unsigned)r.me);
        int res = run_side(&r);
        if (child == 0)
                _exit(res == 0 ? 0 : 1);
        int st;
        while (waitpid(child, &st, 0) < 0 && errno == EINTR)
                ;
        if (res == 0 && !(WIFEXITED(st) && WEXITSTATUS(st) == 0))
                res = fail("side b ended with status %d", WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
        return res;
}

static int run_named(const struct options *o)
{
        struct run r = {.o = o, .me = o->side, .peer = !o->side, .deadline = now_ns() + o->timeout_s * 1000000000ULL};
        snprintf(who, sizeof(who), "pingpong %c", 'a' + r.me);
        if (ctl_named(&r) < 0)
                return -1;
        int res = run_side(&r);
        if (r.me == 1) {
                (void)xemem_detach(r.ctl);
                (void)xemem_release(r.ctl_apid);
        } else {
                (void)xemem_remove(r.ctl_seg);
        }
        return res;
}

/* ---- options ---- */

static int parse_size_list(const char *list, struct options *o)
{
        char copy[512];
        snprintf(copy, sizeof(copy), "%s", list);
        char *save = NULL;
        o->n_sizes = 0;
        for (char *w = strtok_r(copy, ",", &save); w; w = strtok_r(NULL, ",", &save)) {
                char *end;
                unsigned long long v = strtoull(w, &end, 10);
                unsigned shift = 0;
                if (*end == 'K' || *end == 'k')
                        shift = 10, end++;
                else if (*end == 'M' || *end == 'm')
                        shift = 20, end++;
                if (end == w || *end || v == 0 || v > (1ULL << 30) >> shift || o->n_sizes == MAX_SIZES)
                        return fail("--sizes: '%s' is not a size from 1 byte to 1G (N, NK or NM), at most %d of them",
                                    w, MAX_SIZES);
                o->sizes[o->n_sizes++] = (size_t)(v << shift);
        }
        if (!o->n_sizes)
                return fail("--sizes: no size given");
        for (size_t k = 0; k < o->n_sizes; k++)
                if (o->sizes[k] > o->max_size)
                        o->max_size = o->sizes[k];
        return 0;
}

static void usage(FILE *f)
{
        fprintf(f, "usage: pingpong --side a|b --name NAME [--method xpmem]  (two launched processes)\n"
                   "       pingpong --pair [--method xpmem|cma]              (forks its peer)\n"
                   "       [--sizes 8,4K,64K,1M,4M] [--iters N] [--out FILE] [--timeout SECONDS]\n");
}

static int parse_options(int argc, char **argv, struct options *o)
{
        static const struct option opts[] = {
                {"side", required_argument, NULL, 's'},  {"pair", no_argument, NULL, 'p'},
                {"name", required_argument, NULL, 'n'},  {"method", required_argument, NULL, 'm'},
                {"sizes", required_argument, NULL, 'S'}, {"iters", required_argument, NULL, 'i'},
                {"out", required_argument, NULL, 'o'},   {"timeout", required_argument, NULL, 't'},
                {"help", no_argument, NULL, 'h'},        {0},
        };
        *o = (struct options){.side = -1, .iters = 10000, .timeout_s = 30};
        const char *sizes = "8,4K,64K,1M,4M";
        int c;
        while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
                switch (c) {
                case 's':
                        if (strcmp(optarg, "a") && strcmp(optarg, "b"))
                                return fail("--side: 'a' or 'b', not '%s'", optarg);
                        o->side = optarg[0] - 'a';
                        break;
                case 'p': o->pair = true; break;
                case 'n': o->name = optarg; break;
                case 'm':
                        if (!strcmp(optarg, "xpmem"))
                                o->method = METHOD_XPMEM;
                        else if (!strcmp(optarg, "cma"))
                                o->method = METHOD_CMA;
                        else
                                return fail("--method: 'xpmem' or 'cma', not '%s'", optarg);
                        break;
                case 'S': sizes = optarg; break;
                case 'i':
                        o->iters = (unsigned)strtoul(optarg, NULL, 10);
                        if (o->iters < 1 || o->iters > 10000000)
                                return fail("--iters: a count from 1 to 10000000, not '%s'", optarg);
                        break;
                case 'o': o->out = optarg; break;
                case 't':
                        o->timeout_s = (unsigned)strtoul(optarg, NULL, 10);
                        if (o->timeout_s < 1 || o->timeout_s > 3600)
                                return fail("--timeout: seconds from 1 to 3600, not '%s'", optarg);
                        break;
                case 'h': usage(stdout); exit(0);
                default: usage(stderr); return -1;
                }
        }
        if (optind < argc)
                return fail("unexpected argument '%s'", argv[optind]);
        if (o->pair == (o->side >= 0))
                return fail("give either --pair or --side a|b");
        if (!o->pair && !o->name)
                return fail("--side needs --name: the XEMEM segment both sides meet in");
        if (!o->pair && o->method == METHOD_CMA)
                return fail("--method cma needs --pair: a separately launched peer has no pid this side could name");
        return parse_size_list(sizes, o);
}

int main(int argc, char **argv)
{
        struct options o;
        if (parse_options(argc, argv, &o) < 0)
                return 2;
        return (o.pair ? run_pair(&o) : run_named(&o)) == 0 ? 0 : 1;
}
