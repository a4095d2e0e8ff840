/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * xemem-tool: what tests/integration/xemem.sh runs on the host and inside
 * enclaves to show that XEMEM shares memory between them.
 *
 *   export NAME SIZE MODE KIND SECONDS  KIND: malloc, static, stack, mmap, or whole (XPMEM's
 *                                       whole address space, its buffer found through NAME-info)
 *   check NAME ro|rw [OFFSET SIZE]      attach (all of the buffer, or OFFSET..+SIZE of it), check
 *                                       the pattern, the heartbeat and, read-write, the echo
 *   stop NAME                           ask the exporter to end
 *   hold NAME ro|rw SECONDS             attach and keep the attachment for SECONDS
 *   gone NAME SECONDS                   wait until neither NAME nor NAME-info can be looked up
 *   mutex-export NAME ROUNDS SECONDS    a process-shared mutex, condition variable and futex
 *   mutex-attach NAME ROUNDS            in exported memory, used from both sides
 *
 * An exported buffer starts with a struct hdr; every byte after it follows
 * pattern().  Exit status 0: every check passed; otherwise one line says
 * what was expected and what was seen.
 */
#include <errno.h>
#include <inttypes.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "tessera/xemem.h"
#include "xpmem.h"

#define HDR_MAGIC     0x54534554584d4558ULL /* "XEMXTEST" */
#define STOP_MAGIC    0x504f5453ULL
#define INFO_MAGIC    0x4f464e494d454d58ULL
#define MUTEX_MAGIC   0x5845544d554d4558ULL
#define STATIC_MAX    (1u << 20)
#define STACK_MAX     (1u << 20)
#define WAIT_SECONDS  5.0
#define BEAT_SECONDS  2.0
#define EXPORT_PERIOD 5000000L /* ns: the exporter's heartbeat */

/* The start of every exported buffer; the offsets are the suite's contract. */
struct hdr {
        uint64_t heartbeat; /* 0: counted up by the exporter */
        uint64_t stop;      /* 8: STOP_MAGIC ends the exporter */
        uint8_t echo_in;    /* 16: written by an attacher */
        uint8_t pad1[7];
        uint8_t echo_out; /* 24: echo_in, copied by the exporter */
        uint8_t pad2[7];
        uint64_t magic; /* 32: HDR_MAGIC, so an attacher can find the buffer in the first page */
        uint64_t size;  /* 40: bytes of the buffer, this header included */
        uint64_t pad3[2];
};
_Static_assert(sizeof(struct hdr) == 64, "the header is 64 bytes");

/* A whole-address-space exporter's directions to its buffer, exported as NAME-info. */
struct whole_info {
        uint64_t magic;
        int64_t segid;
        uint64_t addr;
        uint64_t size;
};

static char static_buf[STATIC_MAX] __attribute__((aligned(64)));
static union {
        struct whole_info i;
        char page[4096];
} info_page __attribute__((aligned(4096)));

static uint8_t pattern(uint64_t i)
{
        return (uint8_t)((i * 7) % 251 + 3);
}

static double now_s(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ns(long ns)
{
        struct timespec ts = {.tv_sec = ns / 1000000000L, .tv_nsec = ns % 1000000000L};
        nanosleep(&ts, NULL);
}

__attribute__((format(printf, 1, 2))) static int fail(const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        printf("FAIL: ");
        vprintf(fmt, ap);
        printf("\n");
        va_end(ap);
        fflush(stdout);
        return 1;
}

__attribute__((format(printf, 1, 2))) static void say(const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        vprintf(fmt, ap);
        printf("\n");
        va_end(ap);
        fflush(stdout);
}

static int parse_u64(const char *s, int base, uint64_t *ret)
{
        char *end;
        errno = 0;
        unsigned long long v = strtoull(s, &end, base);
        if (errno || end == s || *end || s[0] == '-')
                return -EINVAL;
        *ret = v;
        return 0;
}

/* ---- export ---- */

static void fill(char *buf, size_t size)
{
        struct hdr *h = (struct hdr *)buf;
        memset(h, 0, sizeof(*h));
        h->magic = HDR_MAGIC;
        h->size = size;
        for (size_t i = sizeof(*h); i < size; i++)
                buf[i] = (char)pattern(i);
}

/* Beats, echoes, and watches for the stop word until `seconds` pass. */
static void serve(struct hdr *h, double seconds)
{
        double end = now_s() + seconds;
        bool stopped = false;
        while (now_s() < end) {
                __atomic_add_fetch(&h->heartbeat, 1, __ATOMIC_RELEASE);
                uint8_t b = __atomic_load_n(&h->echo_in, __ATOMIC_ACQUIRE);
                __atomic_store_n(&h->echo_out, b, __ATOMIC_RELEASE);
                if (__atomic_load_n(&h->stop, __ATOMIC_ACQUIRE) == STOP_MAGIC) {
                        stopped = true;
                        break;
                }
                sleep_ns(EXPORT_PERIOD);
        }
        say("exporter ends: %s after %" PRIu64 " beats", stopped ? "asked to stop" : "time is up",
            __atomic_load_n(&h->heartbeat, __ATOMIC_ACQUIRE));
}

static int export_range(char *buf, size_t size, const char *name, unsigned mode, double seconds)
{
        fill(buf, size);
        xemem_segid_t id = xemem_make(buf, size, name, mode);
        if (id < 0)
                return fail("xemem_make(%p, %zu, %s, %03o): %s: %s", (void *)buf, size, name, mode, strerror((int)-id),
                            xemem_error());
        /* the data written before the make must have come along */
        for (size_t i = sizeof(struct hdr); i < size; i++)
                if ((uint8_t)buf[i] != pattern(i))
                        return fail("byte %zu of the buffer changed at export: %#x, not %#x", i, (uint8_t)buf[i],
                                    pattern(i));
        say("segid %lld offset %lu size %zu", (long long)id, (unsigned long)((uintptr_t)buf % 4096), size);
        serve((struct hdr *)buf, seconds);
        int r = xemem_remove(id);
        if (r < 0)
                return fail("xemem_remove(%lld): %s", (long long)id, xemem_error());
        return 0;
}

/* The buffer lives in this frame: the loop runs here, before the frame goes. */
static int export_stack(size_t size, const char *name, unsigned mode, double seconds)
{
        char buf[size] __attribute__((aligned(64)));
        return export_range(buf, size, name, mode, seconds);
}

/* XPMEM's way: the whole address space, and a buffer malloc'd after it, converted when someone attaches it. */
static int export_whole(size_t size, const char *name, unsigned mode, double seconds)
{
        char info_name[XEMEM_NAME_MAX + 1];
        if ((size_t)snprintf(info_name, sizeof(info_name), "%s-info", name) >= sizeof(info_name))
                return fail("name %s is too long for %s-info", name, name);
        xpmem_segid_t w = xpmem_make(NULL, XPMEM_MAXADDR_SIZE, XPMEM_PERMIT_MODE, (void *)(uintptr_t)mode);
        if (w < 0)
                return fail("xpmem_make(whole address space): %s: %s", strerror(errno), xemem_error());
        char *buf = malloc(size);
        if (!buf)
                return fail("out of memory");
        fill(buf, size);
        info_page.i = (struct whole_info){.magic = INFO_MAGIC, .segid = w, .addr = (uintptr_t)buf, .size = size};
        xemem_segid_t info = xemem_make(&info_page, sizeof(info_page), info_name, mode);
        if (info < 0)
                return fail("xemem_make(%s): %s", info_name, xemem_error());
        say("segid %lld whole %lld addr %#lx size %zu", (long long)info, (long long)w, (unsigned long)(uintptr_t)buf,
            size);
        serve((struct hdr *)buf, seconds);
        if (xemem_remove(info) < 0)
                return fail("xemem_remove(%s): %s", info_name, xemem_error());
        if (xpmem_remove(w) < 0)
                return fail("xpmem_remove(%lld): %s", (long long)w, strerror(errno));
        free(buf);
        return 0;
}

static int cmd_export(int argc, char **argv)
{
        uint64_t size, mode, seconds;
        if (argc != 7 || parse_u64(argv[3], 10, &size) < 0 || parse_u64(argv[4], 8, &mode) < 0 ||
            parse_u64(argv[6], 10, &seconds) < 0 || size < sizeof(struct hdr))
                return fail("usage: export NAME SIZE(>= 64) MODE(octal) malloc|static|stack|mmap|whole SECONDS");
        const char *name = argv[2], *kind = argv[5];
        alarm((unsigned)seconds + 60);
        if (!strcmp(kind, "malloc")) {
                char *buf = malloc(size);
                if (!buf)
                        return fail("out of memory");
                return export_range(buf, size, name, (unsigned)mode, (double)seconds);
        }
        if (!strcmp(kind, "static")) {
                if (size > STATIC_MAX)
                        return fail("static: at most %u bytes", STATIC_MAX);
                return export_range(static_buf, size, name, (unsigned)mode, (double)seconds);
        }
        if (!strcmp(kind, "stack")) {
                if (size > STACK_MAX)
                        return fail("stack: at most %u bytes", STACK_MAX);
                return export_stack(size, name, (unsigned)mode, (double)seconds);
        }
        if (!strcmp(kind, "mmap")) {
                void *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                if (m == MAP_FAILED)
                        return fail("mmap(%zu): %s", (size_t)size, strerror(errno));
                return export_range(m, size, name, (unsigned)mode, (double)seconds);
        }
        if (!strcmp(kind, "whole"))
                return export_whole(size, name, (unsigned)mode, (double)seconds);
        return fail("kind %s: malloc, static, stack, mmap or whole", kind);
}

/* ---- attach ---- */

/* An attachment of (part of) an exported buffer: `buf` is where its byte 0 would be. */
struct view {
        bool whole;
        int64_t apid;
        char *at;  /* what attach returned */
        char *buf; /* at - offset */
        uint64_t off, len, size;
};

/* The buffer's offset in the segment: its header is somewhere in the first page or two. */
static int find_header(int64_t apid, uint64_t *ret_off, uint64_t *ret_size)
{
        for (size_t span = 8192; span >= 4096; span -= 4096) {
                void *at = NULL;
                int r = xemem_attach(apid, 0, span, &at);
                if (r == -ERANGE)
                        continue;
                if (r < 0)
                        return fail("xemem_attach(%lld, 0, %zu): %s", (long long)apid, span, xemem_error());
                const char *p = at;
                bool found = false;
                for (size_t o = 0; o + sizeof(struct hdr) <= span && !found; o += 8) {
                        const struct hdr *h = (const struct hdr *)(p + o);
                        if (h->magic == HDR_MAGIC && h->size >= sizeof(*h)) {
                                *ret_off = o;
                                *ret_size = h->size;
                                found = true;
                        }
                }
                if (xemem_detach(at) < 0)
                        return fail("xemem_detach(%p): %s", at, xemem_error());
                return found ? 0 : fail("no buffer header in the first %zu bytes of the segment", span);
        }
        return fail("the segment is smaller than a page");
}

static int64_t lookup_either(const char *name, bool *whole)
{
        char info_name[XEMEM_NAME_MAX + 16];
        snprintf(info_name, sizeof(info_name), "%s-info", name);
        double end = now_s() + WAIT_SECONDS;
        for (;;) {
                int64_t id = xemem_lookup(name);
                *whole = false;
                if (id == -ENOENT) {
                        id = xemem_lookup(info_name);
                        *whole = true;
                }
                if (id != -ENOENT || now_s() > end)
                        return id;
                sleep_ns(20000000L);
        }
}

static int open_range(int64_t segid, bool rw, uint64_t off, uint64_t len, struct view *v)
{
        v->apid = xemem_get(segid, rw ? XEMEM_RDWR : XEMEM_RDONLY);
        if (v->apid < 0)
                return fail("xemem_get(%lld, %s): %s", (long long)segid, rw ? "RDWR" : "RDONLY", xemem_error());
        uint64_t base = 0;
        if (find_header(v->apid, &base, &v->size))
                return 1;
        if (len == 0)
                len = v->size - off;
        if (off > v->size || len > v->size - off)
                return fail("range %" PRIu64 "+%" PRIu64 " is outside the %" PRIu64 "-byte buffer", off, len, v->size);
        void *at = NULL;
        int r = xemem_attach(v->apid, base + off, len, &at);
        if (r < 0)
                return fail("xemem_attach(%lld, %" PRIu64 ", %" PRIu64 "): %s", (long long)v->apid, base + off, len,
                            xemem_error());
        if ((uintptr_t)at % 4096 != (base + off) % 4096)
                return fail("xemem_attach returned %p for segment offset %" PRIu64 ": not the same offset in the page",
                            at, base + off);
        v->at = at;
        v->buf = (char *)at - off;
        v->off = off;
        v->len = len;
        return 0;
}

static int open_whole(int64_t info_id, bool rw, uint64_t off, uint64_t len, struct view *v)
{
        int64_t ia = xemem_get(info_id, XEMEM_RDONLY);
        if (ia < 0)
                return fail("xemem_get(info %lld): %s", (long long)info_id, xemem_error());
        void *at = NULL;
        if (xemem_attach(ia, 0, sizeof(struct whole_info), &at) < 0)
                return fail("xemem_attach(info): %s", xemem_error());
        struct whole_info info = *(struct whole_info *)at;
        if (xemem_detach(at) < 0 || xemem_release(ia) < 0)
                return fail("detach/release of the info segment: %s", xemem_error());
        if (info.magic != INFO_MAGIC)
                return fail("the info segment holds no directions (magic %#" PRIx64 ")", info.magic);
        v->whole = true;
        v->size = info.size;
        if (len == 0)
                len = v->size - off;
        if (off > v->size || len > v->size - off)
                return fail("range %" PRIu64 "+%" PRIu64 " is outside the %" PRIu64 "-byte buffer", off, len, v->size);
        v->apid = xpmem_get(info.segid, rw ? XPMEM_RDWR : XPMEM_RDONLY, XPMEM_PERMIT_MODE, NULL);
        if (v->apid < 0)
                return fail("xpmem_get(%lld): %s: %s", (long long)info.segid, strerror(errno), xemem_error());
        struct xpmem_addr a = {.apid = v->apid, .offset = (off_t)(info.addr + off)};
        void *p = xpmem_attach(a, len, NULL);
        if (p == (void *)-1)
                return fail("xpmem_attach(%#" PRIx64 ", %" PRIu64 "): %s: %s", info.addr + off, len, strerror(errno),
                            xemem_error());
        if ((uintptr_t)p % 4096 != (info.addr + off) % 4096)
                return fail("xpmem_attach returned %p for address %#" PRIx64 ": not the same offset in the page", p,
                            info.addr + off);
        v->at = p;
        v->buf = (char *)p - off;
        v->off = off;
        v->len = len;
        say("via libxpmem: segid %lld, the exporter's buffer at %#" PRIx64, (long long)info.segid, info.addr);
        return 0;
}

static int open_view(const char *name, bool rw, uint64_t off, uint64_t len, struct view *v)
{
        *v = (struct view){0};
        bool whole;
        int64_t id = lookup_either(name, &whole);
        if (id < 0)
                return fail("xemem_lookup(%s): %s: %s", name, strerror((int)-id), xemem_error());
        return whole ? open_whole(id, rw, off, len, v) : open_range(id, rw, off, len, v);
}

/* Gives the grant back; the mapping stays until view_detach(). */
static int view_release(struct view *v)
{
        if (v->whole ? xpmem_release(v->apid) < 0 : xemem_release(v->apid) < 0)
                return fail("release of access %lld: %s", (long long)v->apid, xemem_error());
        return 0;
}

static int view_detach(struct view *v)
{
        if (v->whole ? xpmem_detach(v->at) < 0 : xemem_detach(v->at) < 0)
                return fail("detach of %p: %s", (void *)v->at, xemem_error());
        return 0;
}

static int close_view(struct view *v)
{
        return view_detach(v) || view_release(v);
}

static bool covers_header(const struct view *v)
{
        return v->off == 0 && v->len >= 32;
}

static int check_pattern(const struct view *v)
{
        uint64_t from = v->off > sizeof(struct hdr) ? v->off : sizeof(struct hdr), bad = 0, first = 0;
        for (uint64_t i = from; i < v->off + v->len; i++)
                if ((uint8_t)v->buf[i] != pattern(i) && bad++ == 0)
                        first = i;
        if (bad)
                return fail("%" PRIu64 " bytes differ from the pattern, the first at %" PRIu64 ": %#x, not %#x", bad,
                            first, (uint8_t)v->buf[first], pattern(first));
        say("pattern ok over %" PRIu64 "..%" PRIu64, v->off, v->off + v->len);
        return 0;
}

/* The exporter's writes show up here at once: the mapping is its memory, not a copy. */
static int check_heartbeat(const struct view *v)
{
        struct hdr *h = (struct hdr *)v->buf;
        uint64_t first = __atomic_load_n(&h->heartbeat, __ATOMIC_ACQUIRE);
        double t0 = now_s();
        while (now_s() - t0 < BEAT_SECONDS) {
                uint64_t b = __atomic_load_n(&h->heartbeat, __ATOMIC_ACQUIRE);
                if (b != first) {
                        say("heartbeat %" PRIu64 " -> %" PRIu64 " in %.1f ms", first, b, (now_s() - t0) * 1e3);
                        return 0;
                }
                sleep_ns(1000000L);
        }
        return fail("the heartbeat stayed at %" PRIu64 " for %.0f s: not the exporter's live memory", first,
                    BEAT_SECONDS);
}

/* Ours show up there: the exporter copies byte 16 to byte 24. */
static int check_echo(const struct view *v)
{
        struct hdr *h = (struct hdr *)v->buf;
        uint8_t b = (uint8_t)(__atomic_load_n(&h->echo_out, __ATOMIC_ACQUIRE) + 1 + getpid() % 200);
        if (b == 0)
                b = 1;
        __atomic_store_n(&h->echo_in, b, __ATOMIC_RELEASE);
        double t0 = now_s();
        while (now_s() - t0 < BEAT_SECONDS) {
                if (__atomic_load_n(&h->echo_out, __ATOMIC_ACQUIRE) == b) {
                        say("echo %#x came back in %.1f ms", b, (now_s() - t0) * 1e3);
                        return 0;
                }
                sleep_ns(1000000L);
        }
        return fail("wrote %#x at offset 16, the exporter did not copy it to offset 24 within %.0f s", b, BEAT_SECONDS);
}

/* A read-only attachment's file is read-only: it cannot even be made writable. */
static int check_read_only(const struct view *v)
{
        void *page = (void *)((uintptr_t)v->at & ~(uintptr_t)4095);
        if (mprotect(page, 4096, PROT_READ | PROT_WRITE) == 0)
                return fail("a read-only attachment could be made writable with mprotect");
        if (errno != EACCES)
                return fail("mprotect of a read-only attachment: %s, expected EACCES", strerror(errno));
        say("read-only: mprotect(PROT_WRITE) is refused with EACCES");
        return 0;
}

static int cmd_check(int argc, char **argv)
{
        uint64_t off = 0, len = 0;
        bool rw = argc >= 4 && !strcmp(argv[3], "rw");
        if ((argc != 4 && argc != 6) || (!rw && strcmp(argv[3], "ro")) ||
            (argc == 6 && (parse_u64(argv[4], 10, &off) < 0 || parse_u64(argv[5], 10, &len) < 0 || len == 0)))
                return fail("usage: check NAME ro|rw [OFFSET SIZE]");
        struct view v;
        if (open_view(argv[2], rw, off, len, &v))
                return 1;
        if (check_pattern(&v))
                return 1;
        if (covers_header(&v) && check_heartbeat(&v))
                return 1;
        if (covers_header(&v) && rw && check_echo(&v))
                return 1;
        if (!rw && check_read_only(&v))
                return 1;
        if (close_view(&v))
                return 1;
        say("check %s %s: all good", argv[2], rw ? "rw" : "ro");
        return 0;
}

static int cmd_stop(int argc, char **argv)
{
        if (argc != 3)
                return fail("usage: stop NAME");
        struct view v;
        if (open_view(argv[2], true, 0, sizeof(struct hdr), &v))
                return 1;
        /* the exporter removes its segment when told to stop, and the grants go with it: release first */
        if (view_release(&v))
                return 1;
        __atomic_store_n(&((struct hdr *)v.buf)->stop, STOP_MAGIC, __ATOMIC_RELEASE);
        return view_detach(&v);
}

/* Keeps an attachment for SECONDS, so that listings show an attacher. */
static int cmd_hold(int argc, char **argv)
{
        uint64_t seconds;
        bool rw = argc == 5 && !strcmp(argv[3], "rw");
        if (argc != 5 || (!rw && strcmp(argv[3], "ro")) || parse_u64(argv[4], 10, &seconds) < 0)
                return fail("usage: hold NAME ro|rw SECONDS");
        alarm((unsigned)seconds + 60);
        struct view v;
        if (open_view(argv[2], rw, 0, 0, &v))
                return 1;
        say("attached %s %s", argv[2], rw ? "rw" : "ro");
        sleep_ns((long)seconds * 1000000000L);
        return close_view(&v);
}

static int cmd_gone(int argc, char **argv)
{
        uint64_t seconds;
        if (argc != 4 || parse_u64(argv[3], 10, &seconds) < 0)
                return fail("usage: gone NAME SECONDS");
        char info_name[XEMEM_NAME_MAX + 16];
        snprintf(info_name, sizeof(info_name), "%s-info", argv[2]);
        double end = now_s() + (double)seconds;
        for (;;) {
                int64_t a = xemem_lookup(argv[2]), b = xemem_lookup(info_name);
                if (a == -ENOENT && b == -ENOENT)
                        return 0;
                if (now_s() > end)
                        return fail("%s can still be looked up after %" PRIu64 " s (%lld, %lld)", argv[2], seconds,
                                    (long long)a, (long long)b);
                sleep_ns(20000000L);
        }
}

/* ---- a mutex, a condition variable and a futex shared across enclaves ---- */

struct shared_sync {
        uint64_t magic;
        pthread_mutex_t mutex;
        pthread_cond_t cond;
        uint32_t turn; /* 0: the exporter's, 1: the attacher's */
        uint32_t rounds;
        uint32_t attached;
        uint32_t futex_word;
        uint32_t futex_round; /* the exporter is about to wait in this round */
        uint32_t futex_result;
        uint32_t finished; /* the attacher has released its grant: the segment may go */
};

static union {
        struct shared_sync s;
        char page[4096];
} sync_page __attribute__((aligned(4096)));

static long futex(uint32_t *word, int op, uint32_t val, const struct timespec *timeout)
{
        /* no FUTEX_PRIVATE_FLAG: the waiter and the waker are different processes */
        return syscall(SYS_futex, word, op, val, timeout, NULL, 0);
}

static int timed_wait(struct shared_sync *s, uint32_t want_turn, const char *who)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += (time_t)WAIT_SECONDS;
        while (s->turn != want_turn) {
                int r = pthread_cond_timedwait(&s->cond, &s->mutex, &ts);
                if (r == ETIMEDOUT && s->turn != want_turn)
                        return fail("%s: no turn within %.0f s (round %u)", who, WAIT_SECONDS, s->rounds);
                if (r != 0 && r != ETIMEDOUT)
                        return fail("%s: pthread_cond_timedwait: %s", who, strerror(r));
        }
        return 0;
}

/* One side of the ping-pong: waits for its turn, hands the turn over. */
static int ping_pong(struct shared_sync *s, uint32_t mine, uint64_t rounds, const char *who)
{
        for (uint64_t i = 0; i < rounds; i++) {
                int r = pthread_mutex_lock(&s->mutex);
                if (r != 0)
                        return fail("%s: pthread_mutex_lock: %s", who, strerror(r));
                if (timed_wait(s, mine, who)) {
                        pthread_mutex_unlock(&s->mutex);
                        return 1;
                }
                s->turn = !mine;
                if (mine == 0)
                        s->rounds++;
                pthread_cond_broadcast(&s->cond);
                pthread_mutex_unlock(&s->mutex);
        }
        return 0;
}

static int init_sync(struct shared_sync *s)
{
        pthread_mutexattr_t ma;
        pthread_condattr_t ca;
        pthread_mutexattr_init(&ma);
        pthread_condattr_init(&ca);
        int r = pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
        if (r == 0)
                r = pthread_condattr_setpshared(&ca, PTHREAD_PROCESS_SHARED);
        if (r == 0)
                r = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        if (r == 0)
                r = pthread_mutex_init(&s->mutex, &ma);
        if (r == 0)
                r = pthread_cond_init(&s->cond, &ca);
        pthread_mutexattr_destroy(&ma);
        pthread_condattr_destroy(&ca);
        if (r != 0)
                return fail("process-shared mutex/condvar: %s", strerror(r));
        s->magic = MUTEX_MAGIC;
        return 0;
}

/* Waits on the futex until the attacher wakes it; a wake that came before the wait is tried again. */
static int futex_wait_side(struct shared_sync *s)
{
        for (uint32_t round = 1; round <= 3; round++) {
                __atomic_store_n(&s->futex_word, 0, __ATOMIC_RELEASE);
                __atomic_store_n(&s->futex_round, round, __ATOMIC_RELEASE);
                struct timespec t = {.tv_sec = (time_t)WAIT_SECONDS};
                long r = futex(&s->futex_word, FUTEX_WAIT, 0, &t);
                int e = errno;
                if (r == 0 && __atomic_load_n(&s->futex_word, __ATOMIC_ACQUIRE) == 1) {
                        __atomic_store_n(&s->futex_result, 1, __ATOMIC_RELEASE);
                        say("futex: woken by the other process (round %u)", round);
                        return 0;
                }
                if (r < 0 && e == ETIMEDOUT)
                        return fail("futex: nobody woke this process within %.0f s", WAIT_SECONDS);
                /* EAGAIN: the word was 1 before we slept; EINTR or a spurious wake: again */
        }
        return fail("futex: three rounds without a proper wake");
}

static int futex_wake_side(struct shared_sync *s)
{
        double end = now_s() + WAIT_SECONDS;
        uint32_t done = 0;
        while (now_s() < end) {
                uint32_t round = __atomic_load_n(&s->futex_round, __ATOMIC_ACQUIRE);
                if (round == done || round == 0) {
                        sleep_ns(1000000L);
                        continue;
                }
                /* give the other process time to go to sleep in the kernel */
                sleep_ns(50000000L);
                __atomic_store_n(&s->futex_word, 1, __ATOMIC_RELEASE);
                long n = futex(&s->futex_word, FUTEX_WAKE, 1, NULL);
                if (n == 1) {
                        say("futex: FUTEX_WAKE woke 1 waiter of the other process");
                        return 0;
                }
                done = round;
        }
        return fail("futex: FUTEX_WAKE never found the other process waiting");
}

static int cmd_mutex_export(int argc, char **argv)
{
        uint64_t rounds, seconds;
        if (argc != 5 || parse_u64(argv[3], 10, &rounds) < 0 || parse_u64(argv[4], 10, &seconds) < 0)
                return fail("usage: mutex-export NAME ROUNDS SECONDS");
        alarm((unsigned)seconds + 60);
        struct shared_sync *s = &sync_page.s;
        /* set up before the export: the objects move with the memory */
        if (init_sync(s))
                return 1;
        xemem_segid_t id = xemem_make(&sync_page, sizeof(sync_page), argv[2], 0600);
        if (id < 0)
                return fail("xemem_make(%s): %s", argv[2], xemem_error());
        say("segid %lld", (long long)id);
        double end = now_s() + (double)seconds;
        while (!__atomic_load_n(&s->attached, __ATOMIC_ACQUIRE)) {
                if (now_s() > end)
                        return fail("nobody attached within %" PRIu64 " s", seconds);
                sleep_ns(1000000L);
        }
        double t0 = now_s();
        if (ping_pong(s, 0, rounds, "exporter"))
                return 1;
        /* the last hand-over: the attacher answers the last round */
        pthread_mutex_lock(&s->mutex);
        int r = timed_wait(s, 0, "exporter");
        pthread_mutex_unlock(&s->mutex);
        if (r)
                return 1;
        say("pingpong: %u rounds through the shared condition variable in %.1f ms", s->rounds, (now_s() - t0) * 1e3);
        if (futex_wait_side(s))
                return 1;
        for (double t = now_s(); !__atomic_load_n(&s->finished, __ATOMIC_ACQUIRE) && now_s() - t < WAIT_SECONDS;)
                sleep_ns(1000000L);
        if (xemem_remove(id) < 0)
                return fail("xemem_remove: %s", xemem_error());
        say("mutex-export: all good");
        return 0;
}

static int cmd_mutex_attach(int argc, char **argv)
{
        uint64_t rounds;
        if (argc != 4 || parse_u64(argv[3], 10, &rounds) < 0)
                return fail("usage: mutex-attach NAME ROUNDS");
        bool whole;
        int64_t id = lookup_either(argv[2], &whole);
        if (id < 0 || whole)
                return fail("xemem_lookup(%s): %s", argv[2], id < 0 ? xemem_error() : "a whole-address-space one");
        int64_t apid = xemem_get(id, XEMEM_RDWR);
        void *at = NULL;
        if (apid < 0 || xemem_attach(apid, 0, sizeof(sync_page), &at) < 0)
                return fail("xemem_get/attach(%s): %s", argv[2], xemem_error());
        struct shared_sync *s = at;
        if (s->magic != MUTEX_MAGIC)
                return fail("the segment holds no shared mutex (magic %#" PRIx64 ")", s->magic);
        __atomic_store_n(&s->attached, 1, __ATOMIC_RELEASE);
        if (ping_pong(s, 1, rounds, "attacher"))
                return 1;
        say("pingpong: %" PRIu64 " rounds answered", rounds);
        if (futex_wake_side(s))
                return 1;
        /* release, then say so, then unmap: the exporter removes the segment once told */
        if (xemem_release(apid) < 0)
                return fail("xemem_release: %s", xemem_error());
        __atomic_store_n(&s->finished, 1, __ATOMIC_RELEASE);
        if (xemem_detach(at) < 0)
                return fail("xemem_detach: %s", xemem_error());
        say("mutex-attach: all good");
        return 0;
}

int main(int argc, char **argv)
{
        static const struct {
                const char *name;
                int (*fn)(int argc, char **argv);
        } cmds[] = {
                {"export", cmd_export},
                {"check", cmd_check},
                {"stop", cmd_stop},
                {"hold", cmd_hold},
                {"gone", cmd_gone},
                {"mutex-export", cmd_mutex_export},
                {"mutex-attach", cmd_mutex_attach},
        };
        /* a test must never hang the suite */
        alarm(120);
        for (size_t i = 0; argc >= 2 && i < sizeof(cmds) / sizeof(cmds[0]); i++)
                if (!strcmp(argv[1], cmds[i].name))
                        return cmds[i].fn(argc, argv);
        fprintf(stderr, "usage: xemem-tool export|check|stop|hold|gone|mutex-export|mutex-attach ...\n");
        return 2;
}
