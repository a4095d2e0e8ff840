/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * bench/xemem: what XEMEM costs next to what a program would otherwise use
 * to share memory on one node, all in one run on the machine it runs on:
 * exporting an existing buffer (the in-place conversion), attaching it from
 * another process lazily and populated, reading through the attachment
 * against reading locally, POSIX shm, process_vm_readv and a pipe as peers;
 * XASM snapshots (the producer's cost against a memcpy, the time until the
 * snapshot can be attached); and an MPI-style ping-pong through libxpmem
 * between two enclaves, beside process_vm_readv.  It starts its own tesserad
 * (private state dir, sockets and cgroup root, named with this process's
 * pid) and undoes everything it made before it exits, also when a step
 * fails or it is interrupted.  See bench/README.md.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/ioctl.h>
#include <sys/param.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include <jansson.h>

#include "common.h"
#include "segment.h"
#include "tessera/xemem.h"
#include "util.h"

#define MAX_SIZES        12
#define PAGE_4K          4096UL
#define PAGE_2M          (2UL << 20)
#define GiB              (1UL << 30)
#define READ_TARGET      0.9       /* the issue: reading through an attachment at least 0.9x a local read, at 1 GiB */
#define SNAPSHOT_TARGET  0.05      /* the issue: the producer's cost of a snapshot under 5% of one memcpy of it */
#define SAMPLE_BYTES     (4 * GiB) /* per size and way: fewer samples for large sizes, at least MIN_SAMPLES */
#define MIN_SAMPLES      5
#define READER_TIMEOUT   120000 /* ms the reader may take over one command */
#define SNAP_POLL_MS     1
#define HUGEPAGES_SYSCTL "/proc/sys/vm/nr_hugepages"
#define HUGEPAGES_FREE   "/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages"
#define PP_MAX_SIZES     5
#define PP_TIMEOUT_S     "40"
#define PUBLISHED_XEMEM  "Kocoloski & Lange, HPDC 2015"
#define PUBLISHED_XPMEM  "XPMEM (kernel module)"

/* ---- what is measured ---- */

/* Setup and teardown latencies, in ms. */
enum lat_row {
        LAT_MAKE,          /* xemem_make of a touched buffer: the in-place conversion */
        LAT_ATTACH_LAZY,   /* xemem_get + xemem_attach, nothing populated */
        LAT_ATTACH_MADV,   /* get + attach + MADV_POPULATE_READ */
        LAT_POPULATE,      /* of which MADV_POPULATE_READ */
        LAT_ATTACH_ENV,    /* get + attach with TESSERA_XEMEM_POPULATE=1 (MAP_POPULATE) */
        LAT_DETACH,        /* xemem_detach + xemem_release after reading it all */
        LAT_SHM_EXPORT,    /* shm_open + ftruncate + mmap in the exporter */
        LAT_SHM_EXPORT_CP, /* the same + memcpy of the existing buffer into it */
        LAT_SHM_ATTACH,    /* shm_open + mmap in the reader */
        _LAT_MAX,
};

/* Bandwidths, kept as ms per pass of the whole range. */
enum bw_row {
        BW_LOCAL_PRIVATE, /* the exporter reading its buffer before the export (private anonymous memory) */
        BW_LOCAL_FIRST,   /* the exporter's first read after the export */
        BW_LOCAL,         /* the exporter reading it warm: the reference */
        BW_FIRST,         /* the reader's first read through a lazy attachment (page faults) */
        BW_SECOND,        /* its second pass */
        BW_AFTER_MADV,    /* a read after MADV_POPULATE_READ */
        BW_MADV_AND_READ, /* populate + that read, together */
        BW_AFTER_ENV,     /* a read of an attachment made with TESSERA_XEMEM_POPULATE=1 */
        BW_SHM_FIRST,     /* POSIX shm, the reader's first read */
        BW_SHM_SECOND,    /* and its second pass */
        BW_CMA,           /* process_vm_readv of the range into a warm buffer */
        BW_PIPE,          /* the range written into a pipe and read out into a warm buffer */
        _BW_MAX,
};

static const char *const lat_label[_LAT_MAX] = {
        [LAT_MAKE] = "XEMEM make (in-place conversion)",
        [LAT_ATTACH_LAZY] = "XEMEM get+attach, lazy",
        [LAT_ATTACH_MADV] = "XEMEM get+attach+MADV_POPULATE_READ",
        [LAT_POPULATE] = "  of which MADV_POPULATE_READ",
        [LAT_ATTACH_ENV] = "XEMEM get+attach, TESSERA_XEMEM_POPULATE=1",
        [LAT_DETACH] = "XEMEM detach+release (after reading)",
        [LAT_SHM_EXPORT] = "shm: exporter shm_open+ftruncate+mmap",
        [LAT_SHM_EXPORT_CP] = "shm: the same + memcpy of the buffer in",
        [LAT_SHM_ATTACH] = "shm: reader shm_open+mmap",
};

static const char *const bw_label[_BW_MAX] = {
        [BW_LOCAL_PRIVATE] = "local read before the export (private)",
        [BW_LOCAL_FIRST] = "local read, first after a make",
        [BW_LOCAL] = "local read in the exporter (warm)",
        [BW_FIRST] = "XEMEM attachment: first read (lazy)",
        [BW_SECOND] = "XEMEM attachment: second pass",
        [BW_AFTER_MADV] = "XEMEM: read after MADV_POPULATE_READ",
        [BW_MADV_AND_READ] = "XEMEM: MADV_POPULATE_READ + read",
        [BW_AFTER_ENV] = "XEMEM: read, TESSERA_XEMEM_POPULATE=1",
        [BW_SHM_FIRST] = "shm: reader's first read",
        [BW_SHM_SECOND] = "shm: reader's second pass",
        [BW_CMA] = "process_vm_readv (CMA) copy",
        [BW_PIPE] = "pipe: write -> read copy",
};

/* How the reader attaches before it reads. */
enum attach_way {
        ATTACH_LAZY,
        ATTACH_MADVISE,
        ATTACH_ENV,
        _ATTACH_MAX,
};

/* One snapshot case: 4 KiB or 2 MiB pages. */
struct snap_case {
        const char *label;
        size_t page, size, pages_written;
        char skipped[768]; /* why it did not run; "" when it ran */
        struct samples memcpy_ms, plain_writes, wp_floor, call, writes, producer;
        struct samples ready, attachable; /* rounds where the reader polls tesserad's list, then attaches */
        struct samples attach_waited;     /* rounds where it calls xemem_attach at once, which waits itself */
};

enum pp_column {
        PP_XPMEM_CROSS, /* two enclaves, libxpmem */
        PP_XPMEM_SAME,  /* two processes of one enclave, libxpmem */
        PP_CMA_SAME,    /* two processes of one enclave, process_vm_readv */
        _PP_MAX,
};

struct pp_cell {
        bool have;
        unsigned iters;
        double rtt_med_ns, rtt_p90_ns;
};

/* Where the two sides of a ping-pong ran: their pid namespaces' inodes and CPUs. */
struct pp_sides {
        bool have;
        unsigned long long pidns[2];
        int cpu[2];
        size_t register_bytes; /* XPMEM: the first get + attach of the peer's buffer */
        unsigned long long register_ns;
};

struct bench {
        struct bench_run run;
        /* options */
        bool quick, raise_hugepages, skip_pingpong;
        size_t sizes[MAX_SIZES], n_sizes;
        unsigned iterations, pp_iters;
        size_t snap_size;
        char command[1024];
        char pingpong[PATH_MAX], xemem_socket[PATH_MAX];
        /* everything below is owned and undone by bench_cleanup() */
        struct daemon d;
        pid_t reader;
        int reader_sock, pipe_w;
        char shm_name[64];    /* a POSIX shm object that exists now; "" when none */
        long hugepages_added; /* what we added to vm.nr_hugepages, to take back */
        bool enclaves[3];     /* which of ours exist */
        /* results */
        struct samples lat[MAX_SIZES][_LAT_MAX], bw[MAX_SIZES][_BW_MAX];
        struct snap_case snap[2];
        size_t pp_sizes[PP_MAX_SIZES];
        struct pp_cell pp[_PP_MAX][PP_MAX_SIZES];
        struct pp_sides pp_sides[_PP_MAX];
        char pp_failed[_PP_MAX][512];
        size_t pipe_size;
        char load_start[64], load_end[64];
};

static const char *const enclave_name[3] = {"xpa", "xpb", "xpc"};

/* ---- memory: a pattern that tells where every word came from, and reading it ---- */

#define GOLDEN 0x9E3779B97F4A7C15ULL

static inline uint64_t pattern_word(uint64_t i)
{
        return (i + 1) * GOLDEN;
}

static void fill_pattern(void *p, size_t n)
{
        uint64_t *w = p;
        for (size_t i = 0; i < n / 8; i++)
                w[i] = pattern_word(i);
}

/* The producer's writes after a snapshot: word 0 of a page, tagged with the round. */
static inline uint64_t marker(unsigned round, uint64_t page)
{
        return (0xC0FEULL << 48) | ((uint64_t)(round & 0xffff) << 32) | (page & 0xffffffffULL);
}

static inline bool is_marker_of(uint64_t w, unsigned round)
{
        return (w >> 48) == 0xC0FE && ((w >> 32) & 0xffff) == (round & 0xffff);
}

/*
 * Reads every byte of [p, p + n) (16-byte aligned, n a multiple of 64) and
 * returns the sum of its 64-bit words, so the compiler cannot drop the reads
 * and the reader can check what it read.  SSE2 loads into four accumulators:
 * one core's read bandwidth, not the loop's.
 */
static __attribute__((noinline)) uint64_t read_sum(const void *p, size_t n)
{
#ifdef __SSE2__
        const __m128i *v = p;
        __m128i a = _mm_setzero_si128(), b = a, c = a, d = a;
        for (size_t i = 0; i < n / 64; i++, v += 4) {
                a = _mm_add_epi64(a, _mm_load_si128(v));
                b = _mm_add_epi64(b, _mm_load_si128(v + 1));
                c = _mm_add_epi64(c, _mm_load_si128(v + 2));
                d = _mm_add_epi64(d, _mm_load_si128(v + 3));
        }
        a = _mm_add_epi64(_mm_add_epi64(a, b), _mm_add_epi64(c, d));
        uint64_t lanes[2];
        _mm_storeu_si128((__m128i *)lanes, a);
        return lanes[0] + lanes[1];
#else
        const uint64_t *w = p;
        uint64_t a = 0, b = 0, c = 0, d = 0;
        for (size_t i = 0; i + 4 <= n / 8; i += 4) {
                a += w[i];
                b += w[i + 1];
                c += w[i + 2];
                d += w[i + 3];
        }
        return a + b + c + d;
#endif
}

/* Where reads whose sum nobody checks go, so that the compiler keeps them. */
static volatile uint64_t read_sink;

static void *map_anon(size_t size, int extra)
{
        void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | extra, -1, 0);
        return p == MAP_FAILED ? NULL : p;
}

static double ns_to_ms(uint64_t a, uint64_t b)
{
        return (double)(b - a) / 1e6;
}

/* ---- the reader: a fork()ed process that attaches and reads what this one exports ---- */

enum cmd_kind {
        CMD_READ,     /* attach segid one way, read it twice, detach */
        CMD_SHM,      /* open + map the shm object, read it twice */
        CMD_CMA,      /* process_vm_readv of [addr, addr + size) of pid */
        CMD_PIPE,     /* read size bytes from the pipe */
        CMD_SNAPSHOT, /* wait until snapshot segid is ready, attach it, check it */
        CMD_QUIT,
};

struct cmd {
        enum cmd_kind kind;
        enum attach_way way;
        int64_t segid;
        uint64_t size, addr, expect, t0;
        unsigned round;
        bool poll; /* CMD_SNAPSHOT: poll tesserad's list before attaching, else let xemem_attach wait */
        pid_t pid;
        char name[64];
};

struct reply {
        int error; /* 0, or a negative errno with `why` */
        char why[400];
        double ms[6];
        uint64_t end_ns; /* CMD_PIPE: when the last byte arrived */
};

/* The reader's state, in the reader. */
struct reader_state {
        const struct bench *b;
        int pipe_r;
        char *dst; /* a warm buffer for the copies (CMA, pipe) */
        size_t dst_size;
        struct tessera_client *control; /* for the snapshot's readiness */
};

static void reply_fail(struct reply *rep, int error, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void reply_fail(struct reply *rep, int error, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(rep->why, sizeof(rep->why), fmt, ap);
        va_end(ap);
        rep->error = error < 0 ? error : -EIO;
}

static int reader_dst(struct reader_state *rs, size_t size, struct reply *rep)
{
        if (rs->dst_size >= size)
                return 0;
        if (rs->dst)
                munmap(rs->dst, rs->dst_size);
        rs->dst_size = 0;
        rs->dst = map_anon(size, 0);
        if (!rs->dst) {
                reply_fail(rep, -errno, "reader: cannot map %zu bytes to copy into: %s", (size_t)size, strerror(errno));
                return -1;
        }
        /* warm, as an MPI receive buffer is: the copies below pay no page faults of their own */
        memset(rs->dst, 0x5a, size);
        rs->dst_size = size;
        return 0;
}

static void reader_read(const struct cmd *c, struct reply *rep)
{
        uint64_t t0 = now_ns();
        if (c->way == ATTACH_ENV)
                setenv("TESSERA_XEMEM_POPULATE", "1", 1);
        xemem_apid_t apid = xemem_get(c->segid, XEMEM_RDONLY);
        void *p = NULL;
        int r = apid < 0 ? (int)apid : xemem_attach(apid, 0, c->size, &p);
        unsetenv("TESSERA_XEMEM_POPULATE");
        uint64_t t1 = now_ns();
        if (r < 0) {
                reply_fail(rep, r, "xemem_%s of segment %lld: %s", apid < 0 ? "get" : "attach", (long long)c->segid,
                           xemem_error());
                if (apid > 0)
                        (void)xemem_release(apid);
                return;
        }
        if (c->way == ATTACH_MADVISE && madvise(p, c->size, MADV_POPULATE_READ) < 0)
                reply_fail(rep, -errno, "madvise(MADV_POPULATE_READ) of a %llu-byte attachment: %s",
                           (unsigned long long)c->size, strerror(errno));
        uint64_t t2 = now_ns();
        uint64_t s1 = read_sum(p, c->size);
        uint64_t t3 = now_ns();
        uint64_t s2 = read_sum(p, c->size);
        uint64_t t4 = now_ns();
        int dr = xemem_detach(p);
        const char *derr = dr < 0 ? strdupa(xemem_error()) : "";
        int rr = xemem_release(apid);
        uint64_t t5 = now_ns();
        double ms[] = {ns_to_ms(t0, t1), ns_to_ms(t1, t2), ns_to_ms(t2, t3), ns_to_ms(t3, t4), ns_to_ms(t4, t5)};
        memcpy(rep->ms, ms, sizeof(ms));
        if (rep->error)
                return;
        if (s1 != c->expect || s2 != c->expect)
                reply_fail(rep, -EIO, "the attachment of segment %lld holds other data than the exporter's buffer",
                           (long long)c->segid);
        else if (dr < 0 || rr < 0)
                reply_fail(rep, dr < 0 ? dr : rr, "xemem_%s: %s", dr < 0 ? "detach" : "release",
                           dr < 0 ? derr : xemem_error());
}

static void reader_shm(const struct cmd *c, struct reply *rep)
{
        uint64_t t0 = now_ns();
        int fd = shm_open(c->name, O_RDONLY, 0);
        void *p = fd < 0 ? MAP_FAILED : mmap(NULL, c->size, PROT_READ, MAP_SHARED, fd, 0);
        int e = errno;
        if (fd >= 0)
                close(fd);
        uint64_t t1 = now_ns();
        if (p == MAP_FAILED) {
                reply_fail(rep, -e, "reader: shm_open + mmap of %s: %s", c->name, strerror(e));
                return;
        }
        uint64_t s1 = read_sum(p, c->size);
        uint64_t t2 = now_ns();
        uint64_t s2 = read_sum(p, c->size);
        uint64_t t3 = now_ns();
        munmap(p, c->size);
        double ms[] = {ns_to_ms(t0, t1), ns_to_ms(t1, t2), ns_to_ms(t2, t3)};
        memcpy(rep->ms, ms, sizeof(ms));
        if (s1 != c->expect || s2 != c->expect)
                reply_fail(rep, -EIO, "the shm object %s holds other data than the exporter copied in", c->name);
}

static void reader_cma(struct reader_state *rs, const struct cmd *c, struct reply *rep)
{
        if (reader_dst(rs, c->size, rep) < 0)
                return;
        uint64_t t0 = now_ns();
        size_t done = 0;
        while (done < c->size) {
                struct iovec local = {.iov_base = rs->dst + done, .iov_len = c->size - done};
                struct iovec remote = {.iov_base = (void *)(uintptr_t)(c->addr + done), .iov_len = c->size - done};
                ssize_t n = process_vm_readv(c->pid, &local, 1, &remote, 1, 0);
                if (n <= 0) {
                        reply_fail(rep, n < 0 ? -errno : -EIO, "process_vm_readv from pid %d: %s", (int)c->pid,
                                   n < 0 ? strerror(errno) : "no progress");
                        return;
                }
                done += (size_t)n;
        }
        rep->ms[0] = ms_since(t0);
        if (read_sum(rs->dst, c->size) != c->expect)
                reply_fail(rep, -EIO, "process_vm_readv copied other data than the exporter's buffer");
}

/* Reads all of it even without a buffer to keep it in, so the writer never blocks forever. */
static void reader_pipe(struct reader_state *rs, const struct cmd *c, struct reply *rep)
{
        static char scratch[65536];
        bool keep = reader_dst(rs, c->size, rep) == 0;
        size_t got = 0;
        while (got < c->size) {
                char *to = keep ? rs->dst + got : scratch;
                size_t room = keep ? c->size - got : MIN(sizeof(scratch), c->size - got);
                ssize_t n = read(rs->pipe_r, to, room);
                if (n <= 0) {
                        if (n < 0 && errno == EINTR)
                                continue;
                        reply_fail(rep, n < 0 ? -errno : -EPIPE, "reading the pipe: %s",
                                   n < 0 ? strerror(errno) : "closed early");
                        return;
                }
                got += (size_t)n;
        }
        rep->end_ns = now_ns();
        if (keep && read_sum(rs->dst, c->size) != c->expect)
                reply_fail(rep, -EIO, "the pipe delivered other data than the exporter wrote");
}

/* Whether tesserad lists segment `id` as ready (1), not yet (0), or an error. */
static int segment_ready(struct reader_state *rs, int64_t id, char *why, size_t size)
{
        struct tessera_error err = {0};
        if (!rs->control && tessera_client_connect(rs->b->d.socket, &rs->control, &err) < 0) {
                snprintf(why, size, "reader: %s", err.msg);
                return -ECONNREFUSED;
        }
        void *res = NULL;
        if (tessera_client_call(rs->control, "segments", NULL, &res, &err) < 0) {
                snprintf(why, size, "segments: %s", err.msg);
                return -EIO;
        }
        int ready = -ENOENT;
        size_t i;
        json_t *s;
        json_array_foreach((json_t *)res, i, s)
        {
                if (json_integer_value(json_object_get(s, "id")) == id)
                        ready = json_is_true(json_object_get(s, "ready"));
        }
        json_decref(res);
        if (ready == -ENOENT)
                snprintf(why, size, "snapshot segment %lld is not in tesserad's list", (long long)id);
        return ready;
}

/* Each 4 KiB page: word 1 as filled, word 0 as filled or a write of an earlier round, never of this one. */
static int snapshot_check(const uint64_t *w, size_t size, unsigned round, char *why, size_t wsize)
{
        for (size_t pg = 0; pg < size / PAGE_4K; pg++) {
                const uint64_t *p = w + pg * (PAGE_4K / 8);
                uint64_t first = pg * (PAGE_4K / 8);
                if (p[1] != pattern_word(first + 1)) {
                        snprintf(why, wsize, "snapshot: page %zu holds other data than the segment had", pg);
                        return -EIO;
                }
                if (is_marker_of(p[0], round)) {
                        snprintf(why, wsize, "snapshot: page %zu holds a write the producer made after the snapshot",
                                 pg);
                        return -EIO;
                }
                if ((p[0] >> 48) != 0xC0FE && p[0] != pattern_word(first)) {
                        snprintf(why, wsize, "snapshot: page %zu word 0 holds other data than the segment had", pg);
                        return -EIO;
                }
        }
        return 0;
}

static void reader_snapshot(struct reader_state *rs, const struct cmd *c, struct reply *rep)
{
        char why[300];
        int ready = 1;
        uint64_t deadline = c->t0 + 60 * 1000000000ULL;
        while (c->poll && (ready = segment_ready(rs, c->segid, why, sizeof(why))) == 0 && now_ns() < deadline)
                sleep_ms(SNAP_POLL_MS);
        uint64_t t_ready = now_ns();
        if (ready <= 0) {
                reply_fail(rep, ready < 0 ? ready : -ETIMEDOUT, "%s",
                           ready < 0 ? why : "the snapshot was not ready within 60 s");
                return;
        }
        xemem_apid_t apid = xemem_get(c->segid, XEMEM_RDONLY);
        void *p = NULL;
        int r = apid < 0 ? (int)apid : xemem_attach(apid, 0, c->size, &p);
        uint64_t t_att = now_ns();
        if (r < 0) {
                reply_fail(rep, r, "xemem_%s of snapshot %lld: %s", apid < 0 ? "get" : "attach", (long long)c->segid,
                           xemem_error());
                if (apid > 0)
                        (void)xemem_release(apid);
                return;
        }
        rep->ms[0] = ns_to_ms(c->t0, t_ready);
        rep->ms[1] = ns_to_ms(c->t0, t_att);
        r = snapshot_check(p, c->size, c->round, why, sizeof(why));
        if (r < 0)
                reply_fail(rep, r, "%s (round %u)", why, c->round);
        (void)xemem_detach(p);
        (void)xemem_release(apid);
}

static _Noreturn void reader_main(struct reader_state *rs, int sock)
{
        for (;;) {
                struct cmd c;
                ssize_t n = recv(sock, &c, sizeof(c), 0);
                if (n != (ssize_t)sizeof(c) || c.kind == CMD_QUIT)
                        _exit(0);
                struct reply rep = {0};
                switch (c.kind) {
                case CMD_READ: reader_read(&c, &rep); break;
                case CMD_SHM: reader_shm(&c, &rep); break;
                case CMD_CMA: reader_cma(rs, &c, &rep); break;
                case CMD_PIPE: reader_pipe(rs, &c, &rep); break;
                case CMD_SNAPSHOT: reader_snapshot(rs, &c, &rep); break;
                default: reply_fail(&rep, -EINVAL, "reader: unknown command %d", (int)c.kind);
                }
                if (send(sock, &rep, sizeof(rep), MSG_NOSIGNAL) != (ssize_t)sizeof(rep))
                        _exit(1);
        }
}

/* A pipe as large as this machine lets one be (fs.pipe-max-size), so it is measured at its best. */
static size_t pipe_grow(int fd)
{
        char buf[32];
        uint64_t max = 1 << 20;
        if (read_file_at(AT_FDCWD, "/proc/sys/fs/pipe-max-size", buf, sizeof(buf), NULL) >= 0)
                (void)parse_uint64(buf, 1ULL << 31, &max);
        int got = fcntl(fd, F_SETPIPE_SZ, (int)max);
        if (got < 0)
                got = fcntl(fd, F_GETPIPE_SZ);
        return got > 0 ? (size_t)got : 0;
}

static int reader_start(struct bench *b)
{
        int sv[2], pp[2];
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
                return fatal(&b->run, "cannot make a socketpair for the reader: %s", strerror(errno));
        if (pipe2(pp, O_CLOEXEC) < 0) {
                int e = errno;
                close(sv[0]);
                close(sv[1]);
                return fatal(&b->run, "cannot make a pipe: %s", strerror(e));
        }
        b->pipe_size = pipe_grow(pp[1]);
        pid_t parent = getpid();
        pid_t pid = fork();
        if (pid < 0) {
                int e = errno;
                close(sv[0]);
                close(sv[1]);
                close(pp[0]);
                close(pp[1]);
                return fatal(&b->run, "cannot fork the reader: %s", strerror(e));
        }
        if (pid == 0) {
                close(sv[0]);
                close(pp[1]);
                (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (getppid() != parent)
                        _exit(1);
                struct reader_state rs = {.b = b, .pipe_r = pp[0]};
                reader_main(&rs, sv[1]);
        }
        close(sv[1]);
        close(pp[0]);
        b->reader = pid;
        b->reader_sock = sv[0];
        b->pipe_w = pp[1];
        return 0;
}

static void reader_stop(struct bench *b)
{
        if (b->reader <= 0)
                return;
        struct cmd quit = {.kind = CMD_QUIT};
        (void)send(b->reader_sock, &quit, sizeof(quit), MSG_NOSIGNAL);
        for (int i = 0; i < 200 && waitpid(b->reader, NULL, WNOHANG) == 0; i++)
                sleep_ms(10);
        if (kill(b->reader, SIGKILL) == 0)
                (void)waitpid(b->reader, NULL, 0);
        b->reader = 0;
        close(b->reader_sock);
        close(b->pipe_w);
        b->reader_sock = b->pipe_w = -1;
}

static int reader_send(struct bench *b, const struct cmd *c, char *why, size_t size)
{
        if (b->reader <= 0) {
                snprintf(why, size, "the reader process is gone");
                return -ESRCH;
        }
        if (send(b->reader_sock, c, sizeof(*c), MSG_NOSIGNAL) != (ssize_t)sizeof(*c)) {
                snprintf(why, size, "cannot reach the reader: %s", strerror(errno));
                return -EPIPE;
        }
        return 0;
}

/* The reader's reply; a reader that hangs is killed (a libxemem call that never returns, say). */
static int reader_reply(struct bench *b, struct reply *rep, char *why, size_t size)
{
        struct pollfd pfd = {.fd = b->reader_sock, .events = POLLIN};
        int n = poll(&pfd, 1, READER_TIMEOUT);
        if (n <= 0 || recv(b->reader_sock, rep, sizeof(*rep), 0) != (ssize_t)sizeof(*rep)) {
                snprintf(why, size, "the reader %s", n == 0 ? "did not answer within 120 s" : "died");
                kill(b->reader, SIGKILL);
                (void)waitpid(b->reader, NULL, 0);
                b->reader = 0;
                return -EIO;
        }
        if (rep->error) {
                snprintf(why, size, "%s", rep->why);
                return rep->error;
        }
        return 0;
}

static int reader_ask(struct bench *b, const struct cmd *c, struct reply *rep, char *why, size_t size)
{
        int r = reader_send(b, c, why, size);
        return r < 0 ? r : reader_reply(b, rep, why, size);
}

/* ---- one size: export, attach, read, and the peers ---- */

static unsigned samples_for(const struct bench *b, size_t size)
{
        uint64_t n = SAMPLE_BYTES / size;
        if (n < MIN_SAMPLES)
                n = MIN_SAMPLES;
        return n < b->iterations ? (unsigned)n : b->iterations;
}

static void fail_rows(struct samples *rows, const int *which, size_t n, const char *why)
{
        for (size_t i = 0; i < n; i++)
                samples_fail(&rows[which[i]], "%s", why);
}

/*
 * One xemem_make of a fresh, touched buffer: what exporting memory that
 * exists costs; then the exporter's first read of it, on the new mapping.
 */
static int make_once(size_t size, double *ms, double *first_read_ms, char *why, size_t wsize)
{
        void *buf = map_anon(size, 0);
        if (!buf) {
                snprintf(why, wsize, "cannot map %zu bytes: %s", size, strerror(errno));
                return -ENOMEM;
        }
        fill_pattern(buf, size);
        uint64_t t0 = now_ns();
        xemem_segid_t id = xemem_make(buf, size, NULL, 0600);
        *ms = ms_since(t0);
        t0 = now_ns();
        if (id > 0)
                read_sink = read_sum(buf, size);
        *first_read_ms = ms_since(t0);
        int r = 0;
        if (id < 0) {
                snprintf(why, wsize, "xemem_make of a %zu-byte buffer: %s", size, xemem_error());
                r = (int)id;
        } else if (xemem_remove(id) < 0) {
                snprintf(why, wsize, "xemem_remove(%lld): %s", (long long)id, xemem_error());
                r = -EIO;
        }
        munmap(buf, size);
        return r;
}

static void bench_make(struct bench *b, size_t k)
{
        size_t size = b->sizes[k];
        unsigned n = samples_for(b, size);
        char why[512];
        for (unsigned i = 0; i <= n && !interrupted(&b->run); i++) {
                double ms, first;
                if (make_once(size, &ms, &first, why, sizeof(why)) < 0) {
                        samples_fail(&b->lat[k][LAT_MAKE], "%s", why);
                        samples_fail(&b->bw[k][BW_LOCAL_FIRST], "%s", why);
                        return;
                }
                if (i == 0)
                        continue; /* unrecorded warm-up */
                samples_add(&b->lat[k][LAT_MAKE], ms);
                samples_add(&b->bw[k][BW_LOCAL_FIRST], first);
        }
}

/* The exporter reading its own buffer, after one unrecorded pass (the first after a make has page faults). */
static void bench_local(struct bench *b, size_t k, const void *buf, uint64_t expect, enum bw_row row, unsigned n)
{
        read_sink = read_sum(buf, b->sizes[k]);
        for (unsigned i = 0; i < n; i++) {
                uint64_t t0 = now_ns();
                uint64_t s = read_sum(buf, b->sizes[k]);
                double ms = ms_since(t0);
                if (s != expect) {
                        samples_fail(&b->bw[k][row], "the exporter's own buffer changed under it");
                        return;
                }
                samples_add(&b->bw[k][row], ms);
        }
}

static void bench_attach(struct bench *b, size_t k, xemem_segid_t segid, uint64_t expect)
{
        static const int lazy_rows[] = {LAT_ATTACH_LAZY, LAT_DETACH}, lazy_bw[] = {BW_FIRST, BW_SECOND};
        static const int madv_rows[] = {LAT_ATTACH_MADV, LAT_POPULATE}, madv_bw[] = {BW_AFTER_MADV, BW_MADV_AND_READ};
        static const int env_rows[] = {LAT_ATTACH_ENV}, env_bw[] = {BW_AFTER_ENV};
        size_t size = b->sizes[k];
        unsigned n = samples_for(b, size);
        char why[512];
        for (int way = 0; way < _ATTACH_MAX; way++) {
                for (unsigned i = 0; i <= n && !interrupted(&b->run); i++) {
                        struct cmd c = {.kind = CMD_READ, .way = way, .segid = segid, .size = size, .expect = expect};
                        struct reply rep;
                        if (reader_ask(b, &c, &rep, why, sizeof(why)) < 0) {
                                if (way == ATTACH_LAZY) {
                                        fail_rows(b->lat[k], lazy_rows, 2, why);
                                        fail_rows(b->bw[k], lazy_bw, 2, why);
                                } else if (way == ATTACH_MADVISE) {
                                        fail_rows(b->lat[k], madv_rows, 2, why);
                                        fail_rows(b->bw[k], madv_bw, 2, why);
                                } else {
                                        fail_rows(b->lat[k], env_rows, 1, why);
                                        fail_rows(b->bw[k], env_bw, 1, why);
                                }
                                break;
                        }
                        if (i == 0)
                                continue; /* unrecorded warm-up */
                        /* rep.ms: get+attach, populate, first read, second read, detach+release */
                        if (way == ATTACH_LAZY) {
                                samples_add(&b->lat[k][LAT_ATTACH_LAZY], rep.ms[0]);
                                samples_add(&b->lat[k][LAT_DETACH], rep.ms[4]);
                                samples_add(&b->bw[k][BW_FIRST], rep.ms[2]);
                                samples_add(&b->bw[k][BW_SECOND], rep.ms[3]);
                        } else if (way == ATTACH_MADVISE) {
                                samples_add(&b->lat[k][LAT_ATTACH_MADV], rep.ms[0] + rep.ms[1]);
                                samples_add(&b->lat[k][LAT_POPULATE], rep.ms[1]);
                                samples_add(&b->bw[k][BW_AFTER_MADV], rep.ms[2]);
                                samples_add(&b->bw[k][BW_MADV_AND_READ], rep.ms[1] + rep.ms[2]);
                        } else {
                                samples_add(&b->lat[k][LAT_ATTACH_ENV], rep.ms[0]);
                                samples_add(&b->bw[k][BW_AFTER_ENV], rep.ms[2]);
                        }
                }
        }
}

static void bench_cma(struct bench *b, size_t k, const void *buf, uint64_t expect)
{
        unsigned n = samples_for(b, b->sizes[k]);
        char why[512];
        for (unsigned i = 0; i <= n && !interrupted(&b->run); i++) {
                struct cmd c = {.kind = CMD_CMA,
                                .pid = getpid(),
                                .addr = (uintptr_t)buf,
                                .size = b->sizes[k],
                                .expect = expect};
                struct reply rep;
                if (reader_ask(b, &c, &rep, why, sizeof(why)) < 0) {
                        samples_fail(&b->bw[k][BW_CMA], "%s", why);
                        return;
                }
                if (i > 0) /* the first one also makes the reader's buffer */
                        samples_add(&b->bw[k][BW_CMA], rep.ms[0]);
        }
}

static int pipe_push(struct bench *b, const char *buf, size_t size, char *why, size_t wsize)
{
        size_t done = 0;
        while (done < size) {
                ssize_t n = write(b->pipe_w, buf + done, MIN(size - done, (size_t)1 << 20));
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0) {
                        snprintf(why, wsize, "writing into the pipe: %s", strerror(errno));
                        return -EPIPE;
                }
                done += (size_t)n;
        }
        return 0;
}

static void bench_pipe(struct bench *b, size_t k, const void *buf, uint64_t expect)
{
        size_t size = b->sizes[k];
        unsigned n = samples_for(b, size);
        char why[512];
        for (unsigned i = 0; i < n && !interrupted(&b->run); i++) {
                struct cmd c = {.kind = CMD_PIPE, .size = size, .expect = expect};
                struct reply rep;
                int r = reader_send(b, &c, why, sizeof(why));
                uint64_t t0 = now_ns();
                if (r == 0)
                        r = pipe_push(b, buf, size, why, sizeof(why));
                int rr = r == 0 ? reader_reply(b, &rep, why, sizeof(why)) : r;
                if (rr < 0) {
                        samples_fail(&b->bw[k][BW_PIPE], "%s", why);
                        return;
                }
                samples_add(&b->bw[k][BW_PIPE], ns_to_ms(t0, rep.end_ns));
        }
}

/* One shm object: made and filled by the exporter, mapped and read by the reader, then gone. */
static int shm_once(struct bench *b, size_t k, const void *buf, uint64_t expect, char *why, size_t wsize)
{
        size_t size = b->sizes[k];
        snprintf(b->shm_name, sizeof(b->shm_name), "/tessera-bench-xemem-%d", (int)getpid());
        uint64_t t0 = now_ns();
        int fd = shm_open(b->shm_name, O_RDWR | O_CREAT | O_EXCL, 0600);
        if (fd < 0) {
                snprintf(why, wsize, "shm_open(%s): %s", b->shm_name, strerror(errno));
                b->shm_name[0] = '\0';
                return -errno;
        }
        void *p = ftruncate(fd, (off_t)size) == 0 ? mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
                                                  : MAP_FAILED;
        int e = errno;
        close(fd);
        uint64_t t1 = now_ns();
        if (p == MAP_FAILED) {
                snprintf(why, wsize, "ftruncate + mmap of %s to %zu bytes: %s", b->shm_name, size, strerror(e));
                return -e;
        }
        memcpy(p, buf, size);
        uint64_t t2 = now_ns();
        struct cmd c = {.kind = CMD_SHM, .size = size, .expect = expect};
        snprintf(c.name, sizeof(c.name), "%s", b->shm_name);
        struct reply rep;
        int r = reader_ask(b, &c, &rep, why, wsize);
        munmap(p, size);
        if (r == 0) {
                samples_add(&b->lat[k][LAT_SHM_EXPORT], ns_to_ms(t0, t1));
                samples_add(&b->lat[k][LAT_SHM_EXPORT_CP], ns_to_ms(t0, t2));
                samples_add(&b->lat[k][LAT_SHM_ATTACH], rep.ms[0]);
                samples_add(&b->bw[k][BW_SHM_FIRST], rep.ms[1]);
                samples_add(&b->bw[k][BW_SHM_SECOND], rep.ms[2]);
        }
        return r;
}

static void shm_forget(struct bench *b)
{
        if (b->shm_name[0])
                (void)shm_unlink(b->shm_name);
        b->shm_name[0] = '\0';
}

static void bench_shm(struct bench *b, size_t k, const void *buf, uint64_t expect)
{
        static const int rows[] = {LAT_SHM_EXPORT, LAT_SHM_EXPORT_CP, LAT_SHM_ATTACH};
        static const int bws[] = {BW_SHM_FIRST, BW_SHM_SECOND};
        unsigned n = samples_for(b, b->sizes[k]);
        char why[512];
        for (unsigned i = 0; i < n && !interrupted(&b->run); i++) {
                int r = shm_once(b, k, buf, expect, why, sizeof(why));
                shm_forget(b);
                if (r < 0) {
                        fail_rows(b->lat[k], rows, ELEMENTSOF(rows), why);
                        fail_rows(b->bw[k], bws, ELEMENTSOF(bws), why);
                        return;
                }
        }
}

/* Everything for one size; the exported buffer is made once and shared by the ways that read it. */
static void bench_size(struct bench *b, size_t k)
{
        static const int xemem_rows[] = {LAT_ATTACH_LAZY, LAT_ATTACH_MADV, LAT_POPULATE, LAT_ATTACH_ENV, LAT_DETACH};
        static const int xemem_bw[] = {BW_LOCAL, BW_FIRST, BW_SECOND, BW_AFTER_MADV, BW_MADV_AND_READ, BW_AFTER_ENV};
        size_t size = b->sizes[k];
        char label[32], why[512];
        format_size(size, label, sizeof(label));
        fprintf(stderr, "xemem: %s: make, attach and read (%u samples each), shm, process_vm_readv, pipe\n", label,
                samples_for(b, size));
        bench_make(b, k);
        void *buf = map_anon(size, 0);
        if (!buf) {
                (void)fatal(&b->run, "cannot map %zu bytes for the exported buffer: %s", size, strerror(errno));
                return;
        }
        fill_pattern(buf, size);
        uint64_t expect = read_sum(buf, size);
        bench_local(b, k, buf, expect, BW_LOCAL_PRIVATE, samples_for(b, size));
        xemem_segid_t segid = xemem_make(buf, size, NULL, 0644);
        if (segid < 0) {
                snprintf(why, sizeof(why), "xemem_make of a %zu-byte buffer: %s", size, xemem_error());
                fail_rows(b->lat[k], xemem_rows, ELEMENTSOF(xemem_rows), why);
                fail_rows(b->bw[k], xemem_bw, ELEMENTSOF(xemem_bw), why);
        } else {
                bench_local(b, k, buf, expect, BW_LOCAL, samples_for(b, size));
                bench_attach(b, k, segid, expect);
        }
        if (!interrupted(&b->run))
                bench_cma(b, k, buf, expect);
        if (!interrupted(&b->run))
                bench_pipe(b, k, buf, expect);
        if (!interrupted(&b->run))
                bench_shm(b, k, buf, expect);
        if (segid > 0 && xemem_remove(segid) < 0)
                note(&b->run, "xemem_remove(%lld) of the %s buffer: %s\n", (long long)segid, label, xemem_error());
        munmap(buf, size);
}

/* ---- snapshots (XASM) ---- */

static unsigned long hugepages_free(void)
{
        char buf[32];
        uint64_t v = 0;
        if (read_file_at(AT_FDCWD, HUGEPAGES_FREE, buf, sizeof(buf), NULL) < 0 || parse_uint64(buf, 1ULL << 40, &v) < 0)
                return 0;
        return (unsigned long)v;
}

static long sysctl_long(const char *path)
{
        char buf[32];
        uint64_t v;
        if (read_file_at(AT_FDCWD, path, buf, sizeof(buf), NULL) < 0 || parse_uint64(buf, 1ULL << 40, &v) < 0)
                return -1;
        return (long)v;
}

static int sysctl_set(const char *path, long v)
{
        char buf[32];
        snprintf(buf, sizeof(buf), "%ld", v);
        return write_file_at(AT_FDCWD, path, buf, NULL);
}

/* Gives back the huge pages this run added; what others changed meanwhile is theirs to keep. */
static void hugepages_restore(struct bench *b)
{
        if (b->hugepages_added <= 0)
                return;
        long now = sysctl_long(HUGEPAGES_SYSCTL);
        long want = now - b->hugepages_added;
        if (now < 0 || sysctl_set(HUGEPAGES_SYSCTL, want < 0 ? 0 : want) < 0)
                note(&b->run, "WARNING: could not give back %ld huge pages (vm.nr_hugepages is %ld)\n",
                     b->hugepages_added, now);
        else
                note(&b->run, "vm.nr_hugepages raised by %ld for the 2 MiB snapshot case and set back to %ld\n",
                     b->hugepages_added, want);
        b->hugepages_added = 0;
}

/*
 * Enough free 2 MiB pages for the 2 MiB case: `need` of them (the segment
 * twice when it is exported: the conversion copies the private huge pages
 * into a hugetlb memfd, later the segment has a snapshot).  Only with
 * --raise-hugepages does it add any.
 */
static bool hugepages_enough(struct bench *b, struct snap_case *sc, unsigned long need, const char *what)
{
        unsigned long have = hugepages_free();
        if (have >= need)
                return true;
        if (!b->raise_hugepages) {
                snprintf(sc->skipped, sizeof(sc->skipped),
                         "needs %lu free 2 MiB pages (%s), %s has %lu; --raise-hugepages raises vm.nr_hugepages for "
                         "the run and sets it back after",
                         need, what, HUGEPAGES_FREE, have);
                return false;
        }
        long nr = sysctl_long(HUGEPAGES_SYSCTL);
        long add = (long)(need - have);
        if (nr < 0 || sysctl_set(HUGEPAGES_SYSCTL, nr + add) < 0) {
                snprintf(sc->skipped, sizeof(sc->skipped), "could not raise vm.nr_hugepages by %ld: %s", add,
                         strerror(errno));
                return false;
        }
        b->hugepages_added = sysctl_long(HUGEPAGES_SYSCTL) - nr;
        have = hugepages_free();
        if (have < need) {
                snprintf(sc->skipped, sizeof(sc->skipped),
                         "raised vm.nr_hugepages by %ld but only %lu 2 MiB pages are free (memory too fragmented?)",
                         b->hugepages_added, have);
                hugepages_restore(b);
                return false;
        }
        return true;
}

/* 1% of the segment's pages (at least one), distinct, in a random order. */
static size_t *pick_pages(size_t npages, size_t *ret_n, unsigned *seed)
{
        size_t n = npages / 100 ? npages / 100 : 1;
        size_t *all = malloc(npages * sizeof(*all));
        if (!all)
                return NULL;
        for (size_t i = 0; i < npages; i++)
                all[i] = i;
        for (size_t i = 0; i < n; i++) {
                size_t j = i + (size_t)rand_r(seed) % (npages - i);
                size_t t = all[i];
                all[i] = all[j];
                all[j] = t;
        }
        *ret_n = n;
        return all;
}

static void write_pages(char *seg, size_t page, const size_t *pages, size_t n, unsigned round)
{
        for (size_t i = 0; i < n; i++)
                *(volatile uint64_t *)(seg + pages[i] * page) = marker(round, pages[i]);
}

/* The rows that need an exported segment and its snapshots. */
static void snapshot_fail(struct snap_case *sc, const char *why)
{
        struct samples *all[] = {&sc->call,  &sc->writes,     &sc->producer,
                                 &sc->ready, &sc->attachable, &sc->attach_waited};
        for (size_t i = 0; i < ELEMENTSOF(all); i++)
                samples_fail(all[i], "%s", why);
}

/* The reference: one memcpy of the whole segment into a warm buffer. */
static int snapshot_memcpy(struct snap_case *sc, const char *seg, unsigned n)
{
        char *dst = map_anon(sc->size, 0);
        if (!dst)
                return -ENOMEM;
        memset(dst, 0, sc->size);
        for (unsigned i = 0; i <= n; i++) {
                uint64_t t0 = now_ns();
                memcpy(dst, seg, sc->size);
                if (i > 0)
                        samples_add(&sc->memcpy_ms, ms_since(t0));
        }
        munmap(dst, sc->size);
        return 0;
}

static int uffd_wp(int uffd, void *p, size_t len, bool on)
{
        struct uffdio_writeprotect wp = {
                .range = {.start = (uintptr_t)p, .len = len},
                .mode = on ? UFFDIO_WRITEPROTECT_MODE_WP : 0,
        };
        while (ioctl(uffd, UFFDIO_WRITEPROTECT, &wp) < 0)
                if (errno != EAGAIN)
                        return -errno;
        return 0;
}

/* A userfaultfd of our own, for write-protecting shmem and hugetlb mappings. */
static int uffd_for_wp(char *why, size_t wsize)
{
        _cleanup_close_ int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
        int uffd = dev >= 0 ? ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK) : -1;
        if (uffd < 0) {
                snprintf(why, wsize, "no userfaultfd from /dev/userfaultfd: %s", strerror(errno));
                return -errno;
        }
        struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_WP_HUGETLBFS_SHMEM};
        if (ioctl(uffd, UFFDIO_API, &api) < 0) {
                snprintf(why, wsize, "UFFDIO_API with write-protection of shmem: %s", strerror(errno));
                close(uffd);
                return -EOPNOTSUPP;
        }
        return uffd;
}

/*
 * The kernel's part of a snapshot's instant, alone: UFFDIO_WRITEPROTECT of
 * every page of a populated shared mapping as large as the segment, with
 * the same page size.  No snapshot can make its producer pay less.
 */
static int wp_floor(struct snap_case *sc, bool huge, unsigned n, char *why, size_t wsize)
{
        _cleanup_close_ int uffd = uffd_for_wp(why, wsize);
        _cleanup_close_ int mfd = memfd_create("bench-xemem-wp-floor", MFD_CLOEXEC | (huge ? MFD_HUGETLB : 0));
        if (uffd < 0)
                return uffd;
        void *p = mfd >= 0 && ftruncate(mfd, (off_t)sc->size) == 0
                          ? mmap(NULL, sc->size, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0)
                          : MAP_FAILED;
        if (p == MAP_FAILED) {
                snprintf(why, wsize, "cannot map a memfd of %zu bytes: %s", sc->size, strerror(errno));
                return -ENOMEM;
        }
        memset(p, 1, sc->size);
        struct uffdio_register reg = {.range = {.start = (uintptr_t)p, .len = sc->size},
                                      .mode = UFFDIO_REGISTER_MODE_WP};
        int r = ioctl(uffd, UFFDIO_REGISTER, &reg) < 0 ? -errno : 0;
        if (r < 0)
                snprintf(why, wsize, "UFFDIO_REGISTER (write-protect) of a memfd mapping: %s", strerror(-r));
        for (unsigned i = 0; i < n && r == 0; i++) {
                uint64_t t0 = now_ns();
                r = uffd_wp(uffd, p, sc->size, true);
                double ms = ms_since(t0);
                if (r == 0)
                        r = uffd_wp(uffd, p, sc->size, false);
                if (r < 0)
                        snprintf(why, wsize, "UFFDIO_WRITEPROTECT of %zu bytes: %s", sc->size, strerror(-r));
                else
                        samples_add(&sc->wp_floor, ms);
        }
        munmap(p, sc->size);
        return r;
}

/*
 * One round: the producer snapshots, then writes 1% of the pages (each
 * first write to a page faults while the copy runs); the reader waits for
 * the snapshot to be ready, attaches it and checks that it holds the data
 * of the instant of the snapshot.
 */
static int snapshot_round(struct bench *b, struct snap_case *sc, char *seg, xemem_segid_t segid, unsigned round,
                          unsigned *seed, char *why, size_t wsize)
{
        size_t npages = sc->size / sc->page, n;
        _cleanup_free_ size_t *pages = pick_pages(npages, &n, seed);
        if (!pages) {
                snprintf(why, wsize, "out of memory");
                return -ENOMEM;
        }
        sc->pages_written = n;
        uint64_t t0 = now_ns();
        xemem_segid_t snap = xemem_snapshot(segid);
        uint64_t t1 = now_ns();
        if (snap < 0) {
                snprintf(why, wsize, "xemem_snapshot(%lld): %s", (long long)segid, xemem_error());
                return (int)snap;
        }
        write_pages(seg, sc->page, pages, n, round);
        uint64_t t2 = now_ns();
        bool poll = round % 2;
        struct cmd c = {.kind = CMD_SNAPSHOT, .segid = snap, .size = sc->size, .t0 = t0, .round = round, .poll = poll};
        struct reply rep;
        int r = reader_ask(b, &c, &rep, why, wsize);
        if (xemem_remove(snap) < 0 && r == 0) {
                snprintf(why, wsize, "xemem_remove of snapshot %lld: %s", (long long)snap, xemem_error());
                r = -EIO;
        }
        if (r < 0)
                return r;
        samples_add(&sc->call, ns_to_ms(t0, t1));
        samples_add(&sc->writes, ns_to_ms(t1, t2));
        samples_add(&sc->producer, ns_to_ms(t0, t2));
        if (poll) {
                samples_add(&sc->ready, rep.ms[0]);
                samples_add(&sc->attachable, rep.ms[1]);
        } else {
                samples_add(&sc->attach_waited, rep.ms[1]);
        }
        return 0;
}

/* The references, with no XEMEM: one memcpy of the segment, the kernel's write-protection, the writes alone. */
static void snapshot_references(struct snap_case *sc, char *seg, bool huge, unsigned n, unsigned *seed)
{
        char why[512];
        if (snapshot_memcpy(sc, seg, n) < 0)
                samples_fail(&sc->memcpy_ms, "cannot map %zu bytes to copy into", sc->size);
        if (wp_floor(sc, huge, n, why, sizeof(why)) < 0)
                samples_fail(&sc->wp_floor, "%s", why);
        for (unsigned i = 0; i < n; i++) {
                size_t cnt;
                _cleanup_free_ size_t *pages = pick_pages(sc->size / sc->page, &cnt, seed);
                uint64_t t0 = now_ns();
                if (pages)
                        write_pages(seg, sc->page, pages, cnt, 0);
                samples_add(&sc->plain_writes, ms_since(t0));
                sc->pages_written = cnt;
        }
}

/*
 * One case.  `no_export`: why XEMEM cannot export this kind of memory; the
 * references are still measured, so the report shows what the case could
 * reach.
 */
static void snapshot_case(struct bench *b, struct snap_case *sc, bool huge, const char *no_export)
{
        char why[512], label[32];
        format_size(sc->size, label, sizeof(label));
        /* the segment, and either the write-protection reference's memfd, its conversion copy or its snapshot */
        unsigned long need = 2 * sc->size / PAGE_2M;
        if (huge && !hugepages_enough(b, sc, need,
                                      "the segment twice: with its conversion copy, its snapshot, or "
                                      "the write-protection reference")) {
                if (no_export) {
                        size_t len = strlen(sc->skipped);
                        snprintf(sc->skipped + len, sizeof(sc->skipped) - len, "; and %s", no_export);
                }
                return;
        }
        fprintf(stderr, "xemem: snapshots of %s, %s pages%s\n", label, huge ? "2 MiB" : "4 KiB",
                no_export ? " (references only)" : "");
        char *seg = map_anon(sc->size, huge ? MAP_HUGETLB : 0);
        if (!seg) {
                snprintf(sc->skipped, sizeof(sc->skipped), "cannot map %s%s: %s", label,
                         huge ? " with MAP_HUGETLB" : "", strerror(errno));
                hugepages_restore(b);
                return;
        }
        fill_pattern(seg, sc->size);
        unsigned n = samples_for(b, sc->size), seed = (unsigned)getpid();
        snapshot_references(sc, seg, huge, n, &seed);
        xemem_segid_t segid = no_export ? -EINVAL : xemem_make(seg, sc->size, NULL, 0644);
        if (no_export) {
                snapshot_fail(sc, no_export);
        } else if (segid < 0) {
                snprintf(why, sizeof(why), "xemem_make of %s of %s pages: %s", label, huge ? "2 MiB" : "4 KiB",
                         xemem_error());
                snapshot_fail(sc, why);
        } else {
                /* odd rounds poll, even ones let xemem_attach wait: at least 3 of each */
                unsigned rounds = n < 6 ? 6 : n;
                for (unsigned round = 1; round <= rounds && !interrupted(&b->run); round++)
                        if (snapshot_round(b, sc, seg, segid, round, &seed, why, sizeof(why)) < 0) {
                                snapshot_fail(sc, why);
                                break;
                        }
                (void)xemem_remove(segid);
        }
        munmap(seg, sc->size);
        if (huge)
                hugepages_restore(b);
}

/* Whether convert.c makes hugetlb memfds (MFD_HUGETLB) for huge-page mappings. */
static bool convert_handles_hugetlb(const struct bench *b)
{
        char path[PATH_MAX + 32];
        snprintf(path, sizeof(path), "%s/lib/xemem/convert.c", b->run.source);
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        char line[512];
        while (f && fgets(line, sizeof(line), f))
                if (strstr(line, "MFD_HUGETLB"))
                        return true;
        return !f; /* no source to look at (installed elsewhere): try, and let xemem_make say */
}

static void bench_snapshots(struct bench *b)
{
        snapshot_case(b, &b->snap[0], false, NULL);
        if (interrupted(&b->run))
                return;
        snapshot_case(b, &b->snap[1], true,
                      convert_handles_hugetlb(b)
                              ? NULL
                              : "xemem_make cannot export MAP_HUGETLB memory: lib/xemem/convert.c refuses hugetlb "
                                "mappings (it makes no MFD_HUGETLB memfd), and a hugetlb memfd mapped by the program "
                                "is refused as a shared mapping not made by libxemem");
}

/* ---- the MPI-style ping-pong, in enclaves ---- */

static int cli(struct bench *b, char *why, size_t size, const char *const *args)
{
        char *argv[32];
        size_t n = 0;
        argv[n++] = b->run.tessera;
        argv[n++] = "--socket";
        argv[n++] = b->d.socket;
        for (; *args && n < ELEMENTSOF(argv) - 1; args++)
                argv[n++] = (char *)*args;
        argv[n] = NULL;
        return run_timed(&b->run, argv, NULL, NULL, why, size);
}

static int enclave_create(struct bench *b, int which, const char *cpus, char *why, size_t size)
{
        const char *const args[] = {"create", "--name", enclave_name[which], "--cpus", cpus, "--memory", "512M", NULL};
        int r = cli(b, why, size, args);
        if (r == 0)
                b->enclaves[which] = true;
        return r;
}

static void enclave_destroy(struct bench *b, int which)
{
        char why[512];
        if (!b->enclaves[which])
                return;
        const char *const args[] = {"destroy", enclave_name[which], NULL};
        if (cli(b, why, sizeof(why), args) < 0)
                note(&b->run, "destroying enclave %s: %s\n", enclave_name[which], why);
        b->enclaves[which] = false;
}

/* `tessera launch ENCLAVE --wait -e TESSERA_XEMEM_SOCKET=... -- pingpong ARGS...`, not waited for. */
static pid_t pingpong_spawn(struct bench *b, int which, const char *const *pp_args)
{
        char env[PATH_MAX + 32], iters[16];
        snprintf(env, sizeof(env), "TESSERA_XEMEM_SOCKET=%s", b->xemem_socket);
        snprintf(iters, sizeof(iters), "%u", b->pp_iters);
        char *argv[40];
        size_t n = 0;
        const char *const head[] = {b->run.tessera,  "--socket", b->d.socket, "launch",     enclave_name[which],
                                    "--wait",        "-e",       env,         "--",         b->pingpong,
                                    "--iters",       iters,      "--timeout", PP_TIMEOUT_S, "--sizes",
                                    "8,4K,64K,1M,4M"};
        for (size_t i = 0; i < ELEMENTSOF(head); i++)
                argv[n++] = (char *)head[i];
        for (; *pp_args && n < ELEMENTSOF(argv) - 1; pp_args++)
                argv[n++] = (char *)*pp_args;
        argv[n] = NULL;
        struct spawn_opts o = {.out_fd = -1, .err_fd = -1};
        return spawn(&b->run, argv, &o);
}

/* Side a's lines: "METHOD SIZE ITERATIONS RTT_MEDIAN_NS RTT_P90_NS", then "sides PIDNS_A PIDNS_B CPU_A CPU_B". */
static int pingpong_parse(struct bench *b, enum pp_column col, const char *path)
{
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        if (!f)
                return -errno;
        char line[256], method[16];
        size_t size;
        unsigned iters;
        double med, p;
        int got = 0;
        struct pp_sides *sd = &b->pp_sides[col];
        while (fgets(line, sizeof(line), f)) {
                if (sscanf(line, "sides %llu %llu %d %d", &sd->pidns[0], &sd->pidns[1], &sd->cpu[0], &sd->cpu[1]) ==
                    4) {
                        sd->have = true;
                        continue;
                }
                if (sscanf(line, "register %zu %llu", &sd->register_bytes, &sd->register_ns) == 2)
                        continue;
                if (sscanf(line, "%15s %zu %u %lf %lf", method, &size, &iters, &med, &p) != 5)
                        continue;
                for (size_t k = 0; k < PP_MAX_SIZES; k++)
                        if (b->pp_sizes[k] == size) {
                                b->pp[col][k] = (struct pp_cell){
                                        .have = true, .iters = iters, .rtt_med_ns = med, .rtt_p90_ns = p};
                                got++;
                        }
        }
        return got > 0 ? 0 : -ENODATA;
}

static void pingpong_failed(struct bench *b, enum pp_column col, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
static void pingpong_failed(struct bench *b, enum pp_column col, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(b->pp_failed[col], sizeof(b->pp_failed[col]), fmt, ap);
        va_end(ap);
}

/* Waits for the launched sides; `why` gets the first failure with what the log said last. */
static int pingpong_wait(struct bench *b, const pid_t *pids, size_t n, off_t log_from, char *why, size_t size)
{
        int res = 0;
        for (size_t i = 0; i < n; i++) {
                int st = pids[i] > 0 ? wait_status(pids[i]) : -ECHILD;
                if (st != 0 && res == 0) {
                        char said[400];
                        log_tail(&b->run, log_from, said, sizeof(said));
                        snprintf(why, size, "pingpong side %c exited %d%s%s", (int)('a' + i), st, said[0] ? ": " : "",
                                 said);
                        res = -EIO;
                }
        }
        return res;
}

static void pingpong_cross(struct bench *b)
{
        char why[512], out[PATH_MAX + 32], name[64];
        snprintf(out, sizeof(out), "%s/pingpong-cross.txt", b->run.tmp);
        snprintf(name, sizeof(name), "bench-pingpong-%d", (int)getpid());
        if (enclave_create(b, 0, "1", why, sizeof(why)) < 0 || enclave_create(b, 1, "1", why, sizeof(why)) < 0) {
                pingpong_failed(b, PP_XPMEM_CROSS, "creating two 1-core enclaves: %s", why);
                return;
        }
        const char *const side_a[] = {"--side", "a", "--name", name, "--method", "xpmem", "--out", out, NULL};
        const char *const side_b[] = {"--side", "b", "--name", name, "--method", "xpmem", NULL};
        off_t from = lseek(b->run.log_fd, 0, SEEK_END);
        pid_t pids[2] = {pingpong_spawn(b, 0, side_a), pingpong_spawn(b, 1, side_b)};
        if (pingpong_wait(b, pids, 2, from, why, sizeof(why)) < 0)
                pingpong_failed(b, PP_XPMEM_CROSS, "%s", why);
        else if (pingpong_parse(b, PP_XPMEM_CROSS, out) < 0)
                pingpong_failed(b, PP_XPMEM_CROSS, "pingpong side a wrote no results to %s", out);
        enclave_destroy(b, 0);
        enclave_destroy(b, 1);
}

static void pingpong_pair(struct bench *b, enum pp_column col, const char *method)
{
        char why[512], out[PATH_MAX + 32];
        snprintf(out, sizeof(out), "%s/pingpong-%s.txt", b->run.tmp, method);
        const char *const args[] = {"--pair", "--method", method, "--out", out, NULL};
        off_t from = lseek(b->run.log_fd, 0, SEEK_END);
        pid_t pid = pingpong_spawn(b, 2, args);
        if (pingpong_wait(b, &pid, 1, from, why, sizeof(why)) < 0)
                pingpong_failed(b, col, "%s", why);
        else if (pingpong_parse(b, col, out) < 0)
                pingpong_failed(b, col, "pingpong --pair wrote no results to %s", out);
}

static void bench_pingpong(struct bench *b)
{
        static const size_t sizes[PP_MAX_SIZES] = {8, 4096, 65536, 1 << 20, 4 << 20};
        memcpy(b->pp_sizes, sizes, sizeof(sizes));
        if (access(b->pingpong, X_OK) < 0) {
                for (int c = 0; c < _PP_MAX; c++)
                        pingpong_failed(b, c, "%s: %s (build bench/pingpong)", b->pingpong, strerror(errno));
                return;
        }
        fprintf(stderr, "xemem: ping-pong through libxpmem between two enclaves\n");
        pingpong_cross(b);
        if (interrupted(&b->run))
                return;
        fprintf(stderr, "xemem: ping-pong in one 2-core enclave: libxpmem, process_vm_readv\n");
        char why[512];
        if (enclave_create(b, 2, "2", why, sizeof(why)) < 0) {
                pingpong_failed(b, PP_XPMEM_SAME, "creating a 2-core enclave: %s", why);
                pingpong_failed(b, PP_CMA_SAME, "creating a 2-core enclave: %s", why);
                return;
        }
        pingpong_pair(b, PP_XPMEM_SAME, "xpmem");
        if (!interrupted(&b->run))
                pingpong_pair(b, PP_CMA_SAME, "cma");
        enclave_destroy(b, 2);
}

/* ---- the report ---- */

static void size_header(const struct bench *b, const char *title)
{
        printf("%-44s", title);
        for (size_t k = 0; k < b->n_sizes; k++) {
                char s[32];
                format_size(b->sizes[k], s, sizeof(s));
                printf(" %17s", s);
        }
        printf("\n");
}

/* GB/s from the median time, and from the p90 time in brackets (the slow tail). */
static void fmt_bw(struct bench_run *r, const struct samples *s, size_t size, char *buf, size_t len)
{
        if (s->failed[0] || s->n == 0) {
                fmt_cell(r, s, buf, len);
                return;
        }
        snprintf(buf, len, "%.1f (%.1f)", (double)size / median(s) / 1e6, (double)size / p90(s) / 1e6);
}

static double gbps(const struct samples *s, size_t size)
{
        double m = median(s);
        return isnan(m) || m <= 0 ? NAN : (double)size / m / 1e6;
}

static void print_published(const struct bench *b, const char *label, const char *cell)
{
        printf("%-44s", label);
        for (size_t k = 0; k < b->n_sizes; k++)
                printf(" %17s", cell);
        printf("\n");
}

static void print_setup(struct bench *b)
{
        size_header(b, "setup and teardown, ms: median (p90)");
        for (int row = 0; row < _LAT_MAX; row++) {
                printf("%-44s", lat_label[row]);
                for (size_t k = 0; k < b->n_sizes; k++) {
                        char cell[48];
                        fmt_cell(&b->run, &b->lat[k][row], cell, sizeof(cell));
                        printf(" %17s", cell);
                }
                printf("\n");
        }
        print_published(b, "published: XEMEM (" PUBLISHED_XEMEM ")", "see paper");
        print_published(b, "published: " PUBLISHED_XPMEM, "not found");
}

static void print_ratio_row(struct bench *b, const char *label, enum bw_row num, enum bw_row den)
{
        printf("%-44s", label);
        for (size_t k = 0; k < b->n_sizes; k++) {
                char cell[16];
                double n = gbps(&b->bw[k][num], b->sizes[k]), d = gbps(&b->bw[k][den], b->sizes[k]);
                if (isnan(n) || isnan(d) || d <= 0)
                        snprintf(cell, sizeof(cell), "-");
                else
                        snprintf(cell, sizeof(cell), "%.2fx", n / d);
                printf(" %17s", cell);
        }
        printf("\n");
}

static void print_bandwidth(struct bench *b)
{
        printf("\n");
        size_header(b, "bandwidth, GB/s: median (from the p90 time)");
        for (int row = 0; row < _BW_MAX; row++) {
                printf("%-44s", bw_label[row]);
                for (size_t k = 0; k < b->n_sizes; k++) {
                        char cell[48];
                        fmt_bw(&b->run, &b->bw[k][row], b->sizes[k], cell, sizeof(cell));
                        printf(" %17s", cell);
                }
                printf("\n");
        }
        print_published(b, "published: XEMEM (" PUBLISHED_XEMEM ")", "see paper");
        print_published(b, "published: " PUBLISHED_XPMEM, "not found");
        printf("\n");
        size_header(b, "ratios to the exporter's warm local read");
        print_ratio_row(b, "XEMEM attachment: first read (lazy)", BW_FIRST, BW_LOCAL);
        print_ratio_row(b, "XEMEM attachment: second pass", BW_SECOND, BW_LOCAL);
        print_ratio_row(b, "XEMEM: read after MADV_POPULATE_READ", BW_AFTER_MADV, BW_LOCAL);
        print_ratio_row(b, "XEMEM: MADV_POPULATE_READ + read", BW_MADV_AND_READ, BW_LOCAL);
        print_ratio_row(b, "XEMEM: read, TESSERA_XEMEM_POPULATE=1", BW_AFTER_ENV, BW_LOCAL);
        print_ratio_row(b, "shm: reader's first read", BW_SHM_FIRST, BW_LOCAL);
        print_ratio_row(b, "process_vm_readv (CMA) copy", BW_CMA, BW_LOCAL);
        print_ratio_row(b, "pipe copy", BW_PIPE, BW_LOCAL);
        print_ratio_row(b, "XEMEM first read / shm first read", BW_FIRST, BW_SHM_FIRST);
}

/* One row of the snapshot table: a cell per case, with its share of that case's memcpy when `share`. */
static void print_snap_row(struct bench *b, const char *label, size_t offset, bool share)
{
        printf("  %-52s", label);
        for (int i = 0; i < 2; i++) {
                const struct snap_case *sc = &b->snap[i];
                const struct samples *s = (const struct samples *)((const char *)sc + offset);
                char cell[64], pct[16] = "";
                if (sc->skipped[0])
                        snprintf(cell, sizeof(cell), "skipped");
                else
                        fmt_cell(&b->run, s, cell, sizeof(cell));
                double v = median(s), m = median(&sc->memcpy_ms);
                if (share && !sc->skipped[0] && !isnan(v) && !isnan(m) && m > 0)
                        snprintf(pct, sizeof(pct), "%.1f%%", 100 * v / m);
                printf(" %22s %6s", cell, pct);
        }
        printf("\n");
}

static void print_snapshots(struct bench *b)
{
        char size[32];
        format_size(b->snap_size, size, sizeof(size));
        printf("\nXASM snapshots of a %s segment, ms: median (p90),%*s %29s %29s\n", size, (int)(20 - strlen(size)), "",
               b->snap[0].label, b->snap[1].label);
        printf("  %-52s %29s %29s\n", "% = of the memcpy", "", "");
        static const struct {
                const char *label;
                size_t offset;
                bool share;
        } rows[] = {
                {"memcpy of the whole segment (reference)", offsetof(struct snap_case, memcpy_ms), false},
                {"1% of the pages written, no snapshot", offsetof(struct snap_case, plain_writes), true},
                {"floor: UFFDIO_WRITEPROTECT of every page (kernel)", offsetof(struct snap_case, wp_floor), true},
                {"xemem_snapshot()", offsetof(struct snap_case, call), true},
                {"then 1% of the pages written (copy under way)", offsetof(struct snap_case, writes), true},
                {"producer's cost: the call + those writes", offsetof(struct snap_case, producer), true},
                {"ready in tesserad's list, polled each ms (from call)", offsetof(struct snap_case, ready), false},
                {"  reader attached it then (from the call)", offsetof(struct snap_case, attachable), false},
                {"xemem_attach at once, its own wait (from the call)", offsetof(struct snap_case, attach_waited),
                 false},
        };
        for (size_t i = 0; i < ELEMENTSOF(rows); i++)
                print_snap_row(b, rows[i].label, rows[i].offset, rows[i].share);
        for (int k = 0; k < 2; k++) {
                const struct snap_case *sc = &b->snap[k];
                if (sc->skipped[0])
                        printf("  %s: skipped: %s\n", sc->label, sc->skipped);
                else if (sc->pages_written)
                        printf("  %s: %zu of %zu pages written per round, one 8-byte store each, at random pages\n",
                               sc->label, sc->pages_written, sc->size / sc->page);
        }
}

static void pp_cell_fmt(const struct bench *b, enum pp_column col, size_t k, char *buf, size_t len)
{
        const struct pp_cell *c = &b->pp[col][k];
        if (!c->have) {
                snprintf(buf, len, "%s", b->pp_failed[col][0] ? "n/a (below)" : "-");
                return;
        }
        double one_way_us = c->rtt_med_ns / 2 / 1e3;
        double gb = (double)b->pp_sizes[k] / (c->rtt_med_ns / 2);
        snprintf(buf, len, "%.2f (%.2f) %6.2f", one_way_us, c->rtt_p90_ns / 2 / 1e3, gb);
}

static void print_pingpong(struct bench *b)
{
        static const char *const col_label[_PP_MAX] = {
                [PP_XPMEM_CROSS] = "libxpmem, 2 enclaves",
                [PP_XPMEM_SAME] = "libxpmem, 1 enclave",
                [PP_CMA_SAME] = "process_vm_readv, 1 encl.",
        };
        printf("\nMPI-style ping-pong: one-way latency us = half a round trip, median (p90), then GB/s = size / "
               "one-way\n");
        printf("  %-8s", "size");
        for (int c = 0; c < _PP_MAX; c++)
                printf(" %28s", col_label[c]);
        printf(" %28s\n", "process_vm_readv, 2 encl.");
        for (size_t k = 0; k < PP_MAX_SIZES; k++) {
                char s[16];
                format_size(b->pp_sizes[k], s, sizeof(s));
                if (b->pp_sizes[k] < 1024)
                        strncat(s, " B", sizeof(s) - strlen(s) - 1);
                printf("  %-8s", s);
                for (int c = 0; c < _PP_MAX; c++) {
                        char cell[64];
                        pp_cell_fmt(b, c, k, cell, sizeof(cell));
                        printf(" %28s", cell);
                }
                printf(" %28s\n", "impossible (see notes)");
        }
        printf("  %-8s %28s\n", "published", "XPMEM: not found; XEMEM (" PUBLISHED_XEMEM "): see paper");
        for (int c = 0; c < _PP_MAX; c++)
                if (b->pp_failed[c][0])
                        printf("  %s: n/a: %s\n", col_label[c], b->pp_failed[c]);
        for (int c = 0; c < _PP_MAX; c++) {
                const struct pp_sides *sd = &b->pp_sides[c];
                if (sd->have)
                        printf("  %s: side a in pid namespace %llu on CPU %d, side b in %llu on CPU %d (%s)\n",
                               col_label[c], sd->pidns[0], sd->cpu[0], sd->pidns[1], sd->cpu[1],
                               sd->pidns[0] == sd->pidns[1] ? "one namespace" : "two namespaces");
                if (sd->register_ns) {
                        char sz[32];
                        format_size(sd->register_bytes, sz, sizeof(sz));
                        printf("    registration (once): xpmem_get + xpmem_attach of the peer's %s buffer %.3f ms, "
                               "the peer's agent converting it in place\n",
                               sz, (double)sd->register_ns / 1e6);
                }
        }
        if (b->pp[PP_XPMEM_CROSS][0].have)
                printf("  round trips per size: %u up to 64K, %u at 4M (fewer for large messages), after 10%% "
                       "unrecorded warm-up\n",
                       b->pp[PP_XPMEM_CROSS][0].iters, b->pp[PP_XPMEM_CROSS][PP_MAX_SIZES - 1].iters);
}

static void verdict_read(struct bench *b)
{
        size_t k = b->n_sizes;
        for (size_t i = 0; i < b->n_sizes; i++)
                if (b->sizes[i] == GiB)
                        k = i;
        if (k == b->n_sizes) {
                printf("  read through an attachment >= %.1fx a local read at 1 GiB: not checked (1G not among the "
                       "sizes; see the ratios above)\n",
                       READ_TARGET);
                return;
        }
        static const struct {
                enum bw_row row;
                const char *what;
        } ways[] = {
                {BW_FIRST, "first read of a lazy attachment"},    {BW_SECOND, "second pass"},
                {BW_AFTER_MADV, "read after MADV_POPULATE_READ"}, {BW_MADV_AND_READ, "MADV_POPULATE_READ + read"},
                {BW_AFTER_ENV, "read, TESSERA_XEMEM_POPULATE=1"},
        };
        double local = gbps(&b->bw[k][BW_LOCAL], GiB);
        for (size_t i = 0; i < ELEMENTSOF(ways); i++) {
                double v = gbps(&b->bw[k][ways[i].row], GiB);
                if (isnan(v) || isnan(local)) {
                        printf("  read >= %.1fx local at 1 GiB, %-32s: not measured\n", READ_TARGET, ways[i].what);
                        continue;
                }
                printf("  read >= %.1fx local at 1 GiB, %-32s: %5.1f / %5.1f GB/s = %.2fx  %s\n", READ_TARGET,
                       ways[i].what, v, local, v / local, v / local >= READ_TARGET ? "met" : "missed");
        }
}

static void print_verdicts(struct bench *b)
{
        printf("\ntargets:\n");
        verdict_read(b);
        for (int i = 0; i < 2; i++) {
                const struct snap_case *sc = &b->snap[i];
                double p = median(&sc->producer), m = median(&sc->memcpy_ms);
                double floor = median(&sc->wp_floor);
                if (sc->skipped[0] || isnan(p) || isnan(m)) {
                        printf("  snapshot producer's cost < %.0f%% of a memcpy, %-26s: not measured (see above)\n",
                               SNAPSHOT_TARGET * 100, sc->label);
                        if (!isnan(floor) && !isnan(m))
                                printf("    the kernel's write-protection of every page alone: %.3f / %.3f ms = %.2f%% "
                                       "of the memcpy\n",
                                       floor, m, 100 * floor / m);
                        continue;
                }
                printf("  snapshot producer's cost < %.0f%% of a memcpy, %-26s: %.3f / %.3f ms = %.1f%%  %s\n",
                       SNAPSHOT_TARGET * 100, sc->label, p, m, 100 * p / m, p / m < SNAPSHOT_TARGET ? "met" : "missed");
                double w = median(&sc->writes), plain = median(&sc->plain_writes);
                if (!isnan(floor) && !isnan(w) && sc->pages_written)
                        printf("    where it goes: the kernel's write-protection of every page alone %.3f ms (%.1f%%); "
                               "the rest of xemem_snapshot() %.3f ms; %.1f us per page written while the copy runs "
                               "(%.3f us without a snapshot)\n",
                               floor, 100 * floor / m, median(&sc->call) - floor, 1e3 * w / (double)sc->pages_written,
                               1e3 * plain / (double)sc->pages_written);
        }
}

static void print_header(struct bench *b)
{
        print_run_header(&b->run, "XEMEM: shared memory between processes and enclaves", b->load_start, b->load_end);
        char sizes[256] = "";
        for (size_t k = 0; k < b->n_sizes; k++) {
                size_t len = strlen(sizes);
                format_size(b->sizes[k], sizes + len, sizeof(sizes) - len - 1);
                if (k + 1 < b->n_sizes)
                        strncat(sizes, " ", sizeof(sizes) - strlen(sizes) - 1);
        }
        char mem[64] = "?", thp[128] = "?";
        long pages = sysconf(_SC_PHYS_PAGES);
        if (pages > 0)
                snprintf(mem, sizeof(mem), "%.1f GiB", (double)pages * (double)sysconf(_SC_PAGESIZE) / GiB);
        (void)read_file_at(AT_FDCWD, "/sys/kernel/mm/transparent_hugepage/shmem_enabled", thp, sizeof(thp), NULL);
        printf("# command:  %s\n", b->command);
        printf("# memory:   %s; 2 MiB pages free: %lu; shmem THP: %s; pipe buffer: %zu bytes\n", mem, hugepages_free(),
               thp, b->pipe_size);
        printf("# sizes:    %s; samples per cell: %u, fewer for large sizes (4 GiB / size, at least %d); after the "
               "copies' unrecorded warm-up\n",
               sizes, b->iterations, MIN_SAMPLES);
        printf("# exporter: this process, an mmap'd anonymous buffer filled before xemem_make; reader: a fork()ed "
               "process, XEMEM_RDONLY;\n#           every read, copy and snapshot is checked against the "
               "exporter's data\n\n");
}

static void print_report(struct bench *b)
{
        print_header(b);
        print_setup(b);
        print_bandwidth(b);
        print_snapshots(b);
        if (!b->skip_pingpong)
                print_pingpong(b);
        print_verdicts(b);
        printf("\nnotes:\n%s", b->run.notes);
        printf("process_vm_readv across two enclaves is impossible: every enclave has its own pid namespace, so a "
               "process there cannot name its peer's pid (MPI's CMA path needs one namespace); XPMEM's path needs "
               "no pid.\n");
        printf("Published figures: the XEMEM paper (%s) reports attachment latency and throughput between Linux, "
               "Kitten and Palacios enclaves; no exact numbers could be checked here, so none are printed. No "
               "published XPMEM figures were found.\n",
               PUBLISHED_XEMEM);
        if (b->run.fatal[0])
                printf("\nRUN FAILED: %s\n", b->run.fatal);
        if (b->run.interrupted)
                printf("\nINTERRUPTED: the figures above are partial\n");
}

/* ---- options, setup, cleanup ---- */

static void usage(FILE *f)
{
        fprintf(f, "usage: xemem [--quick] [--sizes LIST] [--iterations N] [--pingpong-iterations N]\n"
                   "             [--snapshot-size SIZE] [--raise-hugepages] [--no-pingpong]\n"
                   "             [--sync full|normal] [--build DIR] [--source DIR]\n"
                   "  --quick                sizes up to 16M, a 256M snapshot, fewer round trips\n"
                   "  --sizes LIST           e.g. 4K,1M,1G (whole 4 KiB pages; default 4K,64K,1M,16M,256M,1G)\n"
                   "  --iterations N         samples per cell for small sizes (default 15)\n"
                   "  --pingpong-iterations  round trips per message size up to 64K (default 10000, --quick 2000)\n"
                   "  --snapshot-size SIZE   the snapshot segment (default 1G, --quick 256M)\n"
                   "  --raise-hugepages      raise vm.nr_hugepages for the 2 MiB snapshot case (set back after)\n"
                   "  --no-pingpong          leave out the ping-pong in enclaves\n"
                   "needs root: it starts a private tesserad and makes enclaves, all named with its pid.\n");
}

static int parse_sizes(struct bench *b, const char *list)
{
        char copy[512];
        snprintf(copy, sizeof(copy), "%s", list);
        char *save = NULL;
        b->n_sizes = 0;
        for (char *w = strtok_r(copy, ",", &save); w; w = strtok_r(NULL, ",", &save)) {
                uint64_t v;
                if (parse_size(w, &v) < 0 || v < PAGE_4K || v % PAGE_4K || v > 16 * GiB || b->n_sizes == MAX_SIZES) {
                        fprintf(stderr,
                                "xemem: --sizes: '%s' is not a size of whole 4 KiB pages up to 16G (at most %d "
                                "sizes)\n",
                                w, MAX_SIZES);
                        return -EINVAL;
                }
                b->sizes[b->n_sizes++] = (size_t)v;
        }
        return b->n_sizes ? 0 : -EINVAL;
}

static int parse_options(struct bench *b, int argc, char **argv)
{
        static const struct option opts[] = {
                {"quick", no_argument, NULL, 'q'},
                {"sizes", required_argument, NULL, 'z'},
                {"iterations", required_argument, NULL, 'n'},
                {"pingpong-iterations", required_argument, NULL, 'p'},
                {"snapshot-size", required_argument, NULL, 'Z'},
                {"raise-hugepages", no_argument, NULL, 'H'},
                {"no-pingpong", no_argument, NULL, 'P'},
                {"sync", required_argument, NULL, 's'},
                {"build", required_argument, NULL, 'b'},
                {"source", required_argument, NULL, 'S'},
                {"help", no_argument, NULL, 'h'},
                {0},
        };
        const char *build = NULL, *source = NULL, *sizes = NULL, *snap = NULL;
        int c;
        b->iterations = 15;
        while ((c = getopt_long(argc, argv, "n:h", opts, NULL)) != -1) {
                switch (c) {
                case 'q': b->quick = true; break;
                case 'z': sizes = optarg; break;
                case 'n':
                        if (parse_count(optarg, &b->iterations) < 0) {
                                fprintf(stderr, "xemem: --iterations: '%s' is not a count from 1 to 100000\n", optarg);
                                return -EINVAL;
                        }
                        break;
                case 'p':
                        if (parse_count(optarg, &b->pp_iters) < 0) {
                                fprintf(stderr, "xemem: --pingpong-iterations: '%s' is not a count from 1 to 100000\n",
                                        optarg);
                                return -EINVAL;
                        }
                        break;
                case 'Z': snap = optarg; break;
                case 'H': b->raise_hugepages = true; break;
                case 'P': b->skip_pingpong = true; break;
                case 's':
                        if (!STREQ(optarg, "full") && !STREQ(optarg, "normal")) {
                                fprintf(stderr, "xemem: --sync: '%s' is neither full nor normal\n", optarg);
                                return -EINVAL;
                        }
                        b->run.sync = optarg;
                        break;
                case 'b': build = optarg; break;
                case 'S': source = optarg; break;
                case 'h': usage(stdout); return 1;
                default: usage(stderr); return -EINVAL;
                }
        }
        if (optind < argc) {
                fprintf(stderr, "xemem: unexpected argument '%s'\n", argv[optind]);
                usage(stderr);
                return -EINVAL;
        }
        if (parse_sizes(b, sizes ? sizes : b->quick ? "4K,64K,1M,16M" : "4K,64K,1M,16M,256M,1G") < 0)
                return -EINVAL;
        uint64_t ss = b->quick ? 256 << 20 : GiB;
        if (snap && (parse_size(snap, &ss) < 0 || ss < PAGE_2M || ss % PAGE_2M || ss > 16 * GiB)) {
                fprintf(stderr, "xemem: --snapshot-size: '%s' is not whole 2 MiB pages up to 16G\n", snap);
                return -EINVAL;
        }
        b->snap_size = (size_t)ss;
        b->snap[0] = (struct snap_case){.label = "4 KiB pages", .page = PAGE_4K, .size = b->snap_size};
        b->snap[1] = (struct snap_case){.label = "2 MiB pages (MAP_HUGETLB)", .page = PAGE_2M, .size = b->snap_size};
        if (!b->pp_iters)
                b->pp_iters = b->quick ? 2000 : 10000;
        if (bench_find_build(&b->run, build) < 0) {
                fprintf(stderr, "xemem: no tesserad and tessera under %s/src; give the build directory with --build\n",
                        b->run.build);
                return -ENOENT;
        }
        snprintf(b->run.source, sizeof(b->run.source), "%s", source ? source : BENCH_SOURCE_ROOT);
        return 0;
}

/* The command line that reproduces this run, with this binary's absolute path. */
static void record_command(struct bench *b, int argc, char **argv)
{
        char exe[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
        exe[n > 0 ? n : 0] = '\0';
        snprintf(b->command, sizeof(b->command), "%s", n > 0 ? exe : argv[0]);
        for (int i = 1; i < argc; i++) {
                size_t len = strlen(b->command);
                snprintf(b->command + len, sizeof(b->command) - len, " %s", argv[i]);
        }
        char *slash = n > 0 ? strrchr(exe, '/') : NULL;
        if (slash)
                snprintf(b->pingpong, sizeof(b->pingpong), "%.*s/pingpong", (int)(slash - exe), exe);
}

static int run_all(struct bench *b)
{
        if (daemon_start(&b->run, &b->d) < 0)
                return -1;
        xemem_socket_path(b->d.socket, b->xemem_socket, sizeof(b->xemem_socket));
        /* libxemem, in this process and the reader, finds the private daemon here */
        setenv("TESSERA_XEMEM_SOCKET", b->xemem_socket, 1);
        if (reader_start(b) < 0)
                return -1;
        for (size_t k = 0; k < b->n_sizes && !interrupted(&b->run) && !b->run.fatal[0]; k++)
                bench_size(b, k);
        if (!interrupted(&b->run) && !b->run.fatal[0])
                bench_snapshots(b);
        if (!interrupted(&b->run) && !b->run.fatal[0] && !b->skip_pingpong)
                bench_pingpong(b);
        return b->run.fatal[0] ? -1 : 0;
}

static void bench_cleanup(struct bench *b)
{
        reader_stop(b);
        shm_forget(b);
        hugepages_restore(b);
        for (int i = 0; i < 3; i++)
                enclave_destroy(b, i);
        daemon_cleanup(&b->run, &b->d, true);
        bench_run_close(&b->run);
}

int main(int argc, char **argv)
{
        static struct bench b = {.run = BENCH_RUN_INIT("xemem"), .reader_sock = -1, .pipe_w = -1};
        int r = parse_options(&b, argc, argv);
        if (r != 0)
                return r > 0 ? 0 : 2;
        if (geteuid() != 0) {
                fprintf(stderr, "xemem: needs root (a private tesserad, enclaves, process_vm_readv)\n");
                return 77;
        }
        record_command(&b, argc, argv);
        (void)find_tool("git", b.run.git, sizeof(b.run.git));
        if (bench_run_open(&b.run) < 0)
                return 1;
        static const char *const flags[] = {"--host-cpus", "", "--host-memory", "2G", NULL};
        daemon_init(&b.run, &b.d, "xemem", flags);

        read_loadavg(b.load_start, sizeof(b.load_start));
        r = run_all(&b);
        read_loadavg(b.load_end, sizeof(b.load_end));
        if (r < 0 && b.run.fatal[0]) {
                char said[512];
                daemon_log_tail(&b.d, said, sizeof(said));
                if (said[0])
                        note(&b.run, "last line of tesserad: %s\n", said);
        }
        /* print only once the hugetlb pool and the enclaves are back, so the notes say so */
        reader_stop(&b);
        hugepages_restore(&b);
        print_report(&b);
        fflush(stdout);
        bench_cleanup(&b);
        if (b.run.interrupted)
                return 130;
        return b.run.fatal[0] ? 1 : 0;
}
