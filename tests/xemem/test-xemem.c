/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libxemem and libxpmem against a real tesserad: every call, its errors, and
 * what other processes (forked children, some of them as nobody) see.  Run
 * by tests/integration/xemem.sh, which starts a private daemon and sets
 * TESSERA_XEMEM_SOCKET (and TESSERA_BIN, TESSERA_SOCKET for the listing).
 *
 * Children report their checks over a pipe; the parent prints them as its
 * own TAP lines, so the numbering stays one sequence.
 *
 * Exported memory is shared across fork() (docs/xemem.md).  So the stack
 * buffer is exported in a child only (its pages would otherwise be shared
 * stack of every later child), and the heap buffer sits between two guard
 * allocations that are never freed (nothing writes malloc's bookkeeping into
 * its shared pages).
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tap.h"
#include "tessera/xemem.h"
#include "xpmem.h"

#define NOBODY        65534
#define CHILD_TIMEOUT 20000 /* ms */

static long ps;
static pid_t me;
static int report_fd = -1; /* in a child: the pipe its checks go to */

/* ---- checks that work in the parent and in its children ---- */

__attribute__((format(printf, 2, 3))) static int check(int cond, const char *fmt, ...)
{
        char desc[768];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(desc, sizeof(desc), fmt, ap);
        va_end(ap);
        for (char *p = desc; *p; p++)
                if (*p == '\n' || *p == '#')
                        *p = ' ';
        if (report_fd < 0)
                return ok(cond, "%s", desc);
        dprintf(report_fd, "%d %s\n", cond ? 1 : 0, desc);
        return cond;
}

__attribute__((format(printf, 1, 2))) static void note(const char *fmt, ...)
{
        char msg[768];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        for (char *p = msg; *p; p++)
                if (*p == '\n')
                        *p = ' ';
        if (report_fd < 0) {
                diag("%s", msg);
                fflush(stdout);
        } else {
                dprintf(report_fd, "# %s\n", msg);
        }
}

/* A failed call: the right errno, and a message that names `word`. */
static int check_err(long r, int want, const char *word, const char *what)
{
        const char *msg = xemem_error();
        return check(r == -want && msg[0] && strstr(msg, word), "%s: -%s with a message naming '%s' (got %ld: \"%s\")",
                     what, strerrorname_np(want), word, r, msg);
}

static int check_errno(bool failed, int want, const char *what)
{
        int e = errno;
        return check(failed && e == want, "%s: -1 and errno %s (got %s, errno %s)", what, strerrorname_np(want),
                     failed ? "-1" : "success", strerrorname_np(e) ?: "0");
}

static const char *seg_name(char *buf, size_t len, const char *what)
{
        snprintf(buf, len, "tx%d-%s", (int)me, what);
        return buf;
}

static uint8_t pat(uint64_t i, unsigned salt)
{
        return (uint8_t)((i * 7 + salt * 13) % 251 + 3);
}

static void fill(volatile char *p, size_t len, unsigned salt)
{
        for (size_t i = 0; i < len; i++)
                p[i] = (char)pat(i, salt);
}

/* Index of the first byte of p[first..first+len) that is not the pattern, or -1. */
static long differs_from(const volatile char *p, size_t first, size_t len, unsigned salt)
{
        for (size_t i = first; i < first + len; i++)
                if ((uint8_t)p[i] != pat(i, salt))
                        return (long)i;
        return -1;
}

static long differs(const volatile char *p, size_t len, unsigned salt)
{
        return differs_from(p, 0, len, salt);
}

static uintptr_t page_down(uintptr_t a)
{
        return a & ~(uintptr_t)(ps - 1);
}

static uintptr_t page_up(uintptr_t a)
{
        return (a + (uintptr_t)ps - 1) & ~(uintptr_t)(ps - 1);
}

static void *page_alloc(size_t len)
{
        void *p = aligned_alloc((size_t)ps, len);
        if (!p) {
                printf("Bail out! out of memory\n");
                exit(1);
        }
        return p;
}

/* ---- children ---- */

struct child {
        pid_t pid;
        int report; /* parent: the child's checks */
        int to;     /* parent: to the child; child: to the parent */
        int from;
};

/* Returns 0 in the child (as uid/gid when uid >= 0), the child's pid in the parent. */
static pid_t child_fork(struct child *c, int uid, int gid)
{
        int rep[2], down[2], up[2];
        if (pipe2(rep, O_CLOEXEC) < 0 || pipe2(down, O_CLOEXEC) < 0 || pipe2(up, O_CLOEXEC) < 0) {
                printf("Bail out! pipe: %s\n", strerror(errno));
                exit(1);
        }
        fflush(stdout);
        pid_t pid = fork();
        if (pid < 0) {
                printf("Bail out! fork: %s\n", strerror(errno));
                exit(1);
        }
        if (pid == 0) {
                close(rep[0]);
                close(down[1]);
                close(up[0]);
                report_fd = rep[1];
                *c = (struct child){.pid = getpid(), .report = -1, .to = up[1], .from = down[0]};
                if (uid >= 0 && (setgroups(0, NULL) < 0 || setgid((gid_t)gid) < 0 || setuid((uid_t)uid) < 0)) {
                        check(0, "child becomes %d:%d: %s", uid, gid, strerror(errno));
                        _exit(1);
                }
                return 0;
        }
        close(rep[1]);
        close(down[0]);
        close(up[1]);
        *c = (struct child){.pid = pid, .report = rep[0], .to = down[1], .from = up[0]};
        return pid;
}

static void send_u64(int fd, uint64_t v)
{
        if (write(fd, &v, sizeof(v)) != sizeof(v))
                note("cannot write to the other process: %s", strerror(errno));
}

static int64_t now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * 0, or -1 when nothing came within CHILD_TIMEOUT (the other side died or is
 * stuck).  EINTR is expected: a whole-address-space exporter's threads are
 * stopped with a signal while an attacher's range is converted.
 */
static int recv_u64(int fd, uint64_t *v)
{
        int64_t end = now_ms() + CHILD_TIMEOUT;
        for (;;) {
                struct pollfd pfd = {.fd = fd, .events = POLLIN};
                int64_t left = end - now_ms();
                int r = left > 0 ? poll(&pfd, 1, (int)left) : 0;
                if (r < 0 && errno == EINTR)
                        continue;
                ssize_t n = r == 1 ? read(fd, v, sizeof(*v)) : -1;
                if (n < 0 && errno == EINTR)
                        continue;
                if (n == sizeof(*v))
                        return 0;
                note("nothing from the other process within %d ms (%s)", CHILD_TIMEOUT,
                     r == 0   ? "timeout"
                     : n == 0 ? "it closed the pipe"
                              : strerror(errno));
                return -1;
        }
}

/* Parent: prints the child's checks as its own, reaps it; returns its wait status. */
static int child_end(struct child *c)
{
        close(c->to);
        FILE *f = fdopen(c->report, "r");
        char line[1024];
        while (f && fgets(line, sizeof(line), f)) {
                line[strcspn(line, "\n")] = '\0';
                if (line[0] == '#')
                        note("child %d: %s", (int)c->pid, line + 2);
                else
                        ok(line[0] == '1', "%s", line + 2);
        }
        if (f)
                fclose(f);
        else
                close(c->report);
        close(c->from);
        int status = 0;
        waitpid(c->pid, &status, 0);
        return status;
}

static void child_end_ok(struct child *c, const char *what)
{
        int st = child_end(c);
        check(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: the child ended normally (status %#x)", what, st);
}

/* ---- the daemon's listing, as `tessera --json segments` prints it ---- */

static json_t *listing(void)
{
        if (!getenv("TESSERA_BIN"))
                return NULL;
        fflush(stdout);
        FILE *f = popen("exec \"$TESSERA_BIN\" --json segments", "r");
        if (!f)
                return NULL;
        json_t *j = json_loadf(f, 0, NULL);
        pclose(f);
        return j;
}

static json_t *listed(json_t *list, int64_t id)
{
        size_t i;
        json_t *s;
        json_array_foreach(list, i, s)
        {
                if (json_integer_value(json_object_get(s, "id")) == id)
                        return s;
        }
        return NULL;
}

static size_t listed_by_pid(json_t *list, pid_t pid)
{
        size_t i, n = 0;
        json_t *s;
        json_array_foreach(list, i, s)
        {
                if (json_integer_value(json_object_get(s, "pid")) == pid)
                        n++;
        }
        return n;
}

/* ---- make ---- */

/* The heap buffer most tests share: 10000 bytes at a heap address, so its ends are not page aligned. */
static struct {
        char *buf;
        size_t len;
        uintptr_t lo;    /* the segment's byte 0: buf rounded down to a page */
        size_t seg_size; /* buf..buf+len rounded out to pages */
        int64_t id, ro, rw;
        void *att; /* a read-write attachment of all of it */
        char name[64];
} m;
static void *guards[2];

static char *seg_byte(void *att, size_t i)
{
        return (char *)att + ((uintptr_t)m.buf - m.lo) + i;
}

static void test_make_malloc(void)
{
        guards[0] = malloc(8192);
        m.len = 10000;
        m.buf = malloc(m.len);
        guards[1] = malloc(8192);
        if (!guards[0] || !m.buf || !guards[1]) {
                printf("Bail out! out of memory\n");
                exit(1);
        }
        fill(m.buf, m.len, 0);
        m.lo = page_down((uintptr_t)m.buf);
        m.seg_size = page_up((uintptr_t)m.buf + m.len) - m.lo;
        seg_name(m.name, sizeof(m.name), "malloc");
        m.id = xemem_make(m.buf, m.len, m.name, 0600);
        check(m.id > 0, "xemem_make of a 10000-byte malloc'd buffer at %p gives a segment id (%lld: %s)", (void *)m.buf,
              (long long)m.id, m.id < 0 ? xemem_error() : "");
        check(differs(m.buf, m.len, 0) < 0, "the buffer kept its data through the export in place");
        volatile char *b = m.buf;
        b[17] = 0x11;
        check(b[17] == 0x11, "the exporter still writes its own buffer");
        b[17] = (char)pat(17, 0);
}

static char static_buf[4 * 4096] __attribute__((aligned(4096)));

static void test_make_static(void)
{
        char name[64];
        fill(static_buf + 100, 5000, 1);
        int64_t id = xemem_make(static_buf + 100, 5000, seg_name(name, sizeof(name), "static"), 0644);
        check(id > 0, "xemem_make of a static buffer at an unaligned address (+100, 5000 bytes): %lld", (long long)id);
        int64_t ap = xemem_get(id, XEMEM_RDONLY);
        void *a = NULL;
        int r = xemem_attach(ap, 0, 8192, &a);
        check(r == 0 && (uintptr_t)a % (uintptr_t)ps == 0 && differs((char *)a + 100, 5000, 1) < 0,
              "its segment is the two pages around it: attached at %p with the data at +100", a);
        void *b = NULL;
        check_err(xemem_attach(ap, 0, 8193, &b), ERANGE, "outside", "one byte more than the two pages");
        r = xemem_attach(ap, 8191, 1, &b);
        check(r == 0 && *(char *)b == static_buf[8191], "its last byte (offset 8191) can be attached alone");
        check(xemem_detach(b) == 0 && xemem_detach(a) == 0 && xemem_release(ap) == 0 && xemem_remove(id) == 0,
              "detach, release and remove it");
}

/* In a child: the stack pages it converts stay shared only in this child. */
static int stack_child(void)
{
        char name[64];
        volatile char stk[6000] __attribute__((aligned(16)));
        fill(stk, sizeof(stk), 2);
        int64_t id = xemem_make((void *)stk, sizeof(stk), seg_name(name, sizeof(name), "stack"), 0600);
        check(id > 0, "xemem_make of a buffer on the stack (%p, 6000 bytes): %lld", (void *)stk, (long long)id);
        check(differs(stk, sizeof(stk), 2) < 0, "the stack buffer kept its data");
        int64_t ap = xemem_get(id, XEMEM_RDWR);
        void *a = NULL;
        uint64_t off = (uintptr_t)stk % (uintptr_t)ps;
        int r = xemem_attach(ap, off, sizeof(stk), &a);
        volatile char *v = a;
        check(r == 0 && differs(v, sizeof(stk), 2) < 0, "an attachment of it holds the same bytes");
        v[10] = 0x42;
        stk[20] = 0x24;
        check(stk[10] == 0x42 && v[20] == 0x24, "a write on either side shows on the other");
        /* deeper calls run below the buffer: the function's frames still work */
        check(xemem_detach(a) == 0 && xemem_release(ap) == 0 && xemem_remove(id) == 0, "detach, release and remove it");
        return 0;
}

static void test_make_stack(void)
{
        struct child c;
        if (child_fork(&c, -1, -1) == 0)
                _exit(stack_child());
        child_end_ok(&c, "stack export");
}

static void test_make_errors(void)
{
        char name[256];
        char *scratch = page_alloc((size_t)ps);
        fill(scratch, (size_t)ps, 3);
        check_err(xemem_make(scratch, 100, seg_name(name, sizeof(name), "badmode"), 01000), EINVAL, "mode",
                  "mode 01000");
        check_err(xemem_make(scratch, 100, m.name, 0600), EEXIST, m.name, "a name that is taken");
        check(differs(m.buf, m.len, 0) < 0 && xemem_lookup(m.name) == m.id,
              "the refused duplicate left the first segment and its data alone");
        memset(name, 'n', sizeof(name));
        name[128] = '\0';
        check_err(xemem_make(scratch, 100, name, 0600), EINVAL, "name", "a name of 128 characters");
        name[127] = '\0';
        int64_t id = xemem_make(scratch, 100, name, 0600);
        check(id > 0 && xemem_remove(id) == 0, "a name of 127 characters (XEMEM_NAME_MAX) is fine (%lld)",
              (long long)id);
        check_err(xemem_make(scratch, 100, "has space", 0600), EINVAL, "name", "a name with a space");
        check_err(xemem_make(scratch, 100, "tab\there", 0600), EINVAL, "name", "a name with a tab");
        check_err(xemem_make(scratch, 100, "", 0600), EINVAL, "name", "an empty name");
        check_err(xemem_make(scratch, 0, NULL, 0600), EINVAL, "size", "size 0");
        check(differs(scratch, (size_t)ps, 3) < 0, "refused exports left the buffer's data alone");
        /* no name: found by id only */
        id = xemem_make(scratch, (size_t)ps, NULL, 0600);
        int64_t ap = id > 0 ? xemem_get(id, XEMEM_RDONLY) : id;
        check(id > 0 && ap > 0 && xemem_release(ap) == 0 && xemem_remove(id) == 0,
              "a segment without a name is made, got by id and removed");
}

/* ---- lookup, get ---- */

static void test_lookup_get(void)
{
        char name[64];
        int64_t id = xemem_lookup(m.name);
        check(id == m.id, "xemem_lookup finds the segment by name (%lld)", (long long)id);
        const char *missing = seg_name(name, sizeof(name), "missing");
        check_err(xemem_lookup(missing), ENOENT, missing, "lookup of a name nobody exported");
        check_err(xemem_lookup(NULL), EINVAL, "name", "lookup(NULL)");
        m.ro = xemem_get(m.id, XEMEM_RDONLY);
        m.rw = xemem_get(m.id, XEMEM_RDWR);
        check(m.ro > 0 && m.rw > 0 && m.ro != m.rw, "xemem_get RDONLY and RDWR give two access ids (%lld, %lld)",
              (long long)m.ro, (long long)m.rw);
        static const int bad_flags[] = {0, XEMEM_RDONLY | XEMEM_RDWR, 4, -1};
        for (size_t i = 0; i < sizeof(bad_flags) / sizeof(bad_flags[0]); i++) {
                char what[64];
                snprintf(what, sizeof(what), "get with flags %d", bad_flags[i]);
                check_err(xemem_get(m.id, bad_flags[i]), EINVAL, "flags", what);
        }
        check_err(xemem_get(999999999, XEMEM_RDONLY), ENOENT, "999999999", "get of a segment id nobody has");
        check_err(xemem_get(0, XEMEM_RDONLY), EINVAL, "segid", "get of segment id 0");
        check_err(xemem_get(-5, XEMEM_RDONLY), EINVAL, "segid", "get of segment id -5");
}

/* ---- attach ---- */

static void test_attach(void)
{
        int r = xemem_attach(m.rw, 0, m.seg_size, &m.att);
        check(r == 0 && (uintptr_t)m.att % (uintptr_t)ps == 0 && differs(seg_byte(m.att, 0), m.len, 0) < 0,
              "attach all %zu bytes: page aligned at %p, the buffer's data at +%lu", m.seg_size, m.att,
              (unsigned long)((uintptr_t)m.buf - m.lo));
        uint64_t off = ((uintptr_t)m.buf - m.lo) + 1003;
        void *s = NULL;
        r = xemem_attach(m.rw, off, 200, &s);
        check(r == 0 && (uintptr_t)s % (uintptr_t)ps == off % (uintptr_t)ps && *(uint8_t *)s == pat(1003, 0),
              "attach of 200 bytes at the unaligned offset %" PRIu64 " gives the address of that byte (%p)", off, s);
        void *x = NULL;
        check_err(xemem_attach(m.rw, m.seg_size - 10, 100, &x), ERANGE, "outside", "attach past the end");
        check_err(xemem_attach(m.rw, m.seg_size, 1, &x), ERANGE, "outside", "attach at the end");
        check_err(xemem_attach(m.rw, 0, 0, &x), ERANGE, "size", "attach of 0 bytes");
        check_err(xemem_attach(m.rw, UINT64_MAX - 10, 100, &x), EINVAL, "offset", "attach at offset 2^64-11");
        check_err(xemem_attach(987654321, 0, 1, &x), ENOENT, "987654321", "attach with an access id nobody has");
        check_err(xemem_attach(m.rw, 0, 1, NULL), EINVAL, "addr", "attach with no place for the address");
        /* a caller-given address (MAP_FIXED): reserve a place, attach there */
        void *want = mmap(NULL, m.seg_size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        void *at = want;
        r = xemem_attach(m.rw, 0, m.seg_size, &at);
        check(r == 0 && at == want && differs(seg_byte(at, 0), m.len, 0) < 0,
              "attach at a caller-given address %p maps it there", want);
        void *odd = (char *)want + 1;
        check_err(xemem_attach(m.rw, 0, m.seg_size, &odd), EINVAL, "aligned", "attach at an unaligned address");
        /* no copy anywhere: a write on one side is there on the other at once */
        volatile char *b = m.buf, *v = m.att, *w = at;
        size_t d = (uintptr_t)m.buf - m.lo;
        b[500] = 0x5a;
        check(v[d + 500] == 0x5a && w[d + 500] == 0x5a, "the exporter's write shows in both attachments at once");
        v[d + 600] = (char)0xa5;
        check(b[600] == (char)0xa5 && w[d + 600] == (char)0xa5, "a write through an attachment shows in the exporter's "
                                                                "buffer at once");
        b[500] = (char)pat(500, 0);
        b[600] = (char)pat(600, 0);
        check(xemem_detach(s) == 0 && xemem_detach(at) == 0, "detach the sub-range and the fixed attachment");
        json_t *l = listing(), *e = listed(l, m.id);
        json_t *att = json_object_get(e, "attachers");
        check(e && json_is_string(json_object_get(e, "name")) &&
                      !strcmp(json_string_value(json_object_get(e, "name")), m.name) &&
                      (size_t)json_integer_value(json_object_get(e, "size")) == m.seg_size &&
                      !strcmp(json_string_value(json_object_get(e, "mode")) ?: "", "600") &&
                      json_integer_value(json_object_get(e, "pid")) == me &&
                      json_integer_value(json_object_get(e, "owner_uid")) == 0 &&
                      json_is_null(json_object_get(e, "enclave")) && json_array_size(att) == 2,
              "tessera --json segments: name, size %zu, mode 600, owner 0, pid %d, host, 2 attachers", m.seg_size,
              (int)me);
        json_decref(l);
}

/* ---- other processes ---- */

static int sharing_child(struct child *c)
{
        int64_t id = xemem_lookup(m.name);
        int64_t ap = xemem_get(id, XEMEM_RDWR);
        void *a = NULL;
        int r = xemem_attach(ap, 0, m.seg_size, &a);
        check(id == m.id && ap > 0 && r == 0, "a forked child looks up, gets and attaches the segment itself (%s)",
              r < 0 ? xemem_error() : "ok");
        if (r < 0)
                return 1;
        volatile char *v = seg_byte(a, 0);
        check(differs(v, m.len, 0) < 0, "the child reads the exporter's data");
        uint64_t t;
        send_u64(c->to, 1);
        if (recv_u64(c->from, &t) < 0)
                return 1;
        check(v[100] == (char)0xab, "the child sees the parent's write made after its attach");
        v[200] = (char)0xcd;
        send_u64(c->to, 2);
        if (recv_u64(c->from, &t) < 0)
                return 1;
        check(xemem_detach(a) == 0 && xemem_release(ap) == 0, "the child detaches and releases");
        return 0;
}

static void test_fork_sharing(void)
{
        struct child c;
        if (child_fork(&c, -1, -1) == 0)
                _exit(sharing_child(&c));
        uint64_t t;
        volatile char *b = m.buf;
        if (recv_u64(c.from, &t) == 0) {
                b[100] = (char)0xab;
                send_u64(c.to, 1);
                if (recv_u64(c.from, &t) == 0)
                        check(b[200] == (char)0xcd, "the parent sees the child's write in its own buffer");
                send_u64(c.to, 3);
        }
        child_end_ok(&c, "sharing with a forked child");
        b[100] = (char)pat(100, 0);
        b[200] = (char)pat(200, 0);
}

static int readonly_child(void)
{
        int64_t ap = xemem_get(m.id, XEMEM_RDONLY);
        void *a = NULL;
        int r = xemem_attach(ap, 0, m.seg_size, &a);
        check(r == 0 && differs(seg_byte(a, 0), m.len, 0) < 0, "a child attaches read-only and reads");
        if (r < 0)
                return 1;
        *(volatile char *)seg_byte(a, 1) = 1; /* must raise SIGSEGV */
        check(0, "a write to a read-only attachment went through");
        return 1;
}

static void test_readonly(void)
{
        struct child c;
        if (child_fork(&c, -1, -1) == 0)
                _exit(readonly_child());
        int st = child_end(&c);
        check(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV,
              "its write to the read-only attachment raised SIGSEGV "
              "(status %#x)",
              st);
        check(differs(m.buf, m.len, 0) < 0, "and changed nothing");
        void *a = NULL;
        int r = xemem_attach(m.ro, 0, m.seg_size, &a);
        errno = 0;
        bool refused = r == 0 && mprotect(a, (size_t)ps, PROT_READ | PROT_WRITE) < 0;
        check_errno(refused, EACCES, "mprotect(PROT_WRITE) of a read-only attachment");
        volatile char *b = m.buf;
        b[300] = 0x33;
        check(r == 0 && *seg_byte(a, 300) == 0x33, "a read-only attachment still sees the exporter's writes live");
        b[300] = (char)pat(300, 0);
        check(r == 0 && xemem_detach(a) == 0, "detach it");
}

/* ---- detach, release, remove ---- */

static void test_detach_release_remove(void)
{
        void *a = NULL;
        int r = xemem_attach(m.rw, 0, m.seg_size, &a);
        check(r == 0 && xemem_detach(a) == 0, "attach, then detach");
        unsigned char vec[4];
        errno = 0;
        check_errno(msync(a, (size_t)ps, MS_ASYNC) < 0, ENOMEM, "msync on the detached address");
        errno = 0;
        check_errno(mincore(a, (size_t)ps, vec) < 0, ENOMEM, "mincore on the detached address");
        check_err(xemem_detach(a), EINVAL, "not inside an attachment", "detach twice");
        int local;
        check_err(xemem_detach(&local), EINVAL, "not inside an attachment", "detach of an address never attached");
        void *s = NULL;
        uint64_t off = ((uintptr_t)m.buf - m.lo) + 2000;
        r = xemem_attach(m.rw, off, 10, &s);
        check(r == 0 && (uintptr_t)s % (uintptr_t)ps != 0 && xemem_detach(s) == 0,
              "detach takes the address attach returned, in-page offset included (%p)", s);
        check(xemem_release(m.ro) == 0, "release");
        check_err(xemem_release(m.ro), ENOENT, "released", "release twice");
        check_err(xemem_attach(m.ro, 0, 1, &s), ENOENT, "released", "attach through a released access id");
        check_err(xemem_release(0), EINVAL, "apid", "release of access id 0");
        /* remove: the name goes, attachments stay */
        check(xemem_remove(m.id) == 0, "remove the segment while it is attached");
        check_err(xemem_lookup(m.name), ENOENT, m.name, "lookup after remove");
        check(differs(seg_byte(m.att, 0), m.len, 0) < 0, "the existing attachment is still readable");
        volatile char *b = m.buf;
        b[700] = 0x77;
        note("after remove, the exporter's write %s in the existing attachment",
             *seg_byte(m.att, 700) == 0x77 ? "still shows" : "no longer shows");
        b[700] = (char)pat(700, 0);
        check_err(xemem_remove(m.id), ENOENT, "does not exist", "remove twice");
        check_err(xemem_get(m.id, XEMEM_RDONLY), ENOENT, "does not exist", "get after remove");
        void *x = NULL;
        check_err(xemem_attach(m.rw, 0, 1, &x), ENOENT, "removed", "attach through a grant of a removed one");
        char *again = page_alloc((size_t)ps);
        fill(again, (size_t)ps, 4);
        int64_t id = xemem_make(again, (size_t)ps, m.name, 0600);
        check(id > 0 && id != m.id && xemem_remove(id) == 0, "the name can be used again (%lld)", (long long)id);
        check(xemem_detach(m.att) == 0, "detach the last attachment");
        /* the grants went with the segment */
        check_err(xemem_release(m.rw), ENOENT, "removed", "release of a grant of the removed segment");
}

/* ---- permissions ---- */

static struct perm {
        unsigned mode;
        char name[64];
        char *buf;
        int64_t id;
} perms[] = {{0600}, {0604}, {0640}, {0660}, {0666}};

static struct perm *perm(unsigned mode)
{
        for (size_t i = 0; i < sizeof(perms) / sizeof(perms[0]); i++)
                if (perms[i].mode == mode)
                        return &perms[i];
        return NULL;
}

/* Gets `p` with `flags` and reads its data; 0 or the negative errno of get. */
static long get_and_read(struct perm *p, int flags, void **ret)
{
        int64_t ap = xemem_get(p->id, flags);
        if (ap < 0)
                return ap;
        void *a = NULL;
        int r = xemem_attach(ap, 0, (size_t)ps, &a);
        if (r < 0)
                return r;
        if (differs(a, (size_t)ps, p->mode) >= 0)
                return -EIO;
        *ret = a;
        return 0;
}

static int nobody_child(void)
{
        void *a = NULL;
        check_err(xemem_lookup(perm(0600)->name), ENOENT, perm(0600)->name, "nobody: lookup of root's 0600 segment");
        check_err(xemem_get(perm(0600)->id, XEMEM_RDONLY), ENOENT, "does not exist",
                  "nobody: get of root's 0600 segment by id");
        check(xemem_lookup(perm(0604)->name) == perm(0604)->id, "nobody: lookup of a 0604 segment");
        check(get_and_read(perm(0604), XEMEM_RDONLY, &a) == 0, "nobody: gets, attaches and reads a 0604 segment");
        check_err(xemem_get(perm(0604)->id, XEMEM_RDWR), EACCES, "read-write", "nobody: RDWR of a 0604 segment");
        check_err(xemem_lookup(perm(0640)->name), ENOENT, perm(0640)->name,
                  "nobody (other group): lookup of a 0640 segment");
        long r = get_and_read(perm(0666), XEMEM_RDWR, &a);
        check(r == 0, "nobody: RDWR of a 0666 segment (%ld)", r);
        if (r == 0)
                ((volatile char *)a)[5] = 0x66;
        check_err(xemem_remove(perm(0666)->id), EPERM, "not by you", "nobody: remove of root's segment");
        check_err(xemem_snapshot(perm(0666)->id), EPERM, "not by you", "nobody: snapshot of root's segment");
        return 0;
}

static int group_child(void)
{
        void *a = NULL;
        check(xemem_lookup(perm(0640)->name) == perm(0640)->id && get_and_read(perm(0640), XEMEM_RDONLY, &a) == 0,
              "uid nobody, gid root: reads a 0640 segment through the group bits");
        check_err(xemem_get(perm(0640)->id, XEMEM_RDWR), EACCES, "read-write",
                  "uid nobody, gid root: RDWR of a 0640 segment");
        long r = get_and_read(perm(0660), XEMEM_RDWR, &a);
        check(r == 0, "uid nobody, gid root: RDWR of a 0660 segment (%ld)", r);
        if (r == 0)
                ((volatile char *)a)[6] = 0x60;
        check_err(xemem_lookup(perm(0600)->name), ENOENT, perm(0600)->name,
                  "uid nobody, gid root: lookup of a 0600 segment");
        return 0;
}

static int other_root_child(void)
{
        int64_t r = xemem_snapshot(perm(0666)->id);
        check(r < 0, "another root process cannot snapshot the segment (%lld: %s)", (long long)r, xemem_error());
        if (r != -EPERM)
                note("a root process that is not the exporter gets %s, not EPERM, for a snapshot",
                     strerrorname_np((int)-r) ?: "success");
        return 0;
}

static void test_permissions(void)
{
        bool made = true;
        for (size_t i = 0; i < sizeof(perms) / sizeof(perms[0]); i++) {
                struct perm *p = &perms[i];
                char what[16];
                snprintf(what, sizeof(what), "p%03o", p->mode);
                seg_name(p->name, sizeof(p->name), what);
                p->buf = page_alloc((size_t)ps);
                fill(p->buf, (size_t)ps, p->mode);
                p->id = xemem_make(p->buf, (size_t)ps, p->name, p->mode);
                made &= p->id > 0;
        }
        check(made, "root exports segments with modes 0600, 0604, 0640, 0660, 0666");
        struct child c;
        if (child_fork(&c, NOBODY, NOBODY) == 0)
                _exit(nobody_child());
        child_end_ok(&c, "as nobody");
        check(perm(0666)->buf[5] == 0x66, "root sees nobody's write into the 0666 segment");
        if (child_fork(&c, NOBODY, 0) == 0)
                _exit(group_child());
        child_end_ok(&c, "as nobody with group root");
        check(perm(0660)->buf[6] == 0x60, "root sees the group member's write into the 0660 segment");
        if (child_fork(&c, -1, -1) == 0)
                _exit(other_root_child());
        child_end_ok(&c, "as another root process");
        bool removed = true;
        for (size_t i = 0; i < sizeof(perms) / sizeof(perms[0]); i++)
                removed &= xemem_remove(perms[i].id) == 0;
        check(removed, "remove them");
}

/* ---- an exporter that dies ---- */

static __attribute__((noreturn)) void dying_exporter(struct child *c)
{
        char name[64];
        size_t len = 20000;
        char *buf = malloc(len);
        fill(buf, len, 5);
        volatile uint64_t *counter = (volatile uint64_t *)buf;
        *counter = 0;
        int64_t id = xemem_make(buf, len, seg_name(name, sizeof(name), "dying"), 0644);
        send_u64(c->to, (uint64_t)id);
        send_u64(c->to, (uintptr_t)buf % (uintptr_t)ps);
        for (;;) {
                (*counter)++;
                struct timespec ts = {0, 1000000};
                nanosleep(&ts, NULL);
        }
}

static void test_lifetime(void)
{
        char name[64];
        seg_name(name, sizeof(name), "dying");
        struct child c;
        if (child_fork(&c, -1, -1) == 0)
                dying_exporter(&c);
        uint64_t id = 0, off = 0;
        if (recv_u64(c.from, &id) < 0 || recv_u64(c.from, &off) < 0 || (int64_t)id <= 0) {
                check(0, "a child exports a segment (%lld)", (long long)id);
                kill(c.pid, SIGKILL);
                child_end(&c);
                return;
        }
        int64_t ap = xemem_get((int64_t)id, XEMEM_RDONLY);
        void *a = NULL;
        int r = xemem_attach(ap, 0, 20000 + off, &a);
        volatile uint64_t *counter = (volatile uint64_t *)((char *)a + off);
        check(r == 0, "attach a child's segment (%s)", r < 0 ? xemem_error() : "ok");
        if (r < 0) {
                kill(c.pid, SIGKILL);
                child_end(&c);
                return;
        }
        uint64_t c0 = *counter;
        struct timespec ts = {0, 30000000};
        nanosleep(&ts, NULL);
        check(*counter != c0, "its counter moves (%" PRIu64 " -> %" PRIu64 ")", c0, *counter);
        kill(c.pid, SIGKILL);
        int st = child_end(&c);
        check(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "the exporter is killed with SIGKILL");
        uint64_t c1 = *counter;
        nanosleep(&ts, NULL);
        check(*counter == c1 && differs_from((char *)a + off, 8, 20000 - 8, 5) < 0,
              "the attachment still reads, without a crash: the last data (counter %" PRIu64 ", frozen)", c1);
        int64_t looked = 0;
        for (int i = 0; i < 100; i++) {
                looked = xemem_lookup(name);
                if (looked == -ENOENT)
                        break;
                nanosleep(&(struct timespec){0, 20000000}, NULL);
        }
        check(looked == -ENOENT, "within 2 s its name is gone (%lld)", (long long)looked);
        check_err(xemem_get((int64_t)id, XEMEM_RDONLY), ENOENT, "does not exist", "get of the dead exporter's id");
        json_t *l = listing();
        check(l && !listed(l, (int64_t)id) && listed_by_pid(l, c.pid) == 0,
              "tessera --json segments keeps no record of it or of pid %d", (int)c.pid);
        json_decref(l);
        check(xemem_detach(a) == 0, "its attachment can still be detached");
        r = xemem_release(ap);
        note("release of the grant on the dead exporter's segment: %d (%s)", r, r < 0 ? xemem_error() : "ok");
}

/* ---- snapshots ---- */

static int snapshot_reader(int64_t sid, size_t len)
{
        int64_t ap = xemem_get(sid, XEMEM_RDONLY);
        void *a = NULL;
        int r = xemem_attach(ap, 0, len, &a);
        check(r == 0 && differs(a, len, 6) < 0, "another process reads the snapshot's old data too");
        return 0;
}

static int writer_child(struct child *c, int64_t id)
{
        int64_t ap = xemem_get(id, XEMEM_RDWR);
        check(ap > 0, "a child takes a read-write grant on the segment");
        send_u64(c->to, 1);
        uint64_t t;
        (void)recv_u64(c->from, &t);
        check(xemem_release(ap) == 0, "the child releases its read-write grant");
        send_u64(c->to, 2);
        (void)recv_u64(c->from, &t);
        return 0;
}

static void test_snapshots(void)
{
        char name[64];
        size_t len = 64 << 10;
        char *buf = page_alloc(len);
        fill(buf, len, 6);
        int64_t id = xemem_make(buf, len, seg_name(name, sizeof(name), "snap"), 0644);
        int64_t live_ap = xemem_get(id, XEMEM_RDONLY);
        void *live = NULL;
        int r = xemem_attach(live_ap, 0, len, &live);
        check(id > 0 && r == 0, "export 64 KiB and attach it read-only (live)");
        int64_t sid = xemem_snapshot(id);
        /* right after: the producer rewrites everything */
        fill(buf, len, 7);
        check(sid > 0 && sid != id, "xemem_snapshot gives a new segment (%lld: %s)", (long long)sid,
              sid < 0 ? xemem_error() : "ok");
        int64_t sap = sid > 0 ? xemem_get(sid, XEMEM_RDONLY) : sid;
        void *snap = NULL;
        r = sap > 0 ? xemem_attach(sap, 0, len, &snap) : (int)sap;
        check(r == 0 && differs(snap, len, 6) < 0, "the snapshot holds the data of before the producer's writes");
        check(differs(live, len, 7) < 0, "the live attachment sees the new data");
        check_err(xemem_get(sid, XEMEM_RDWR), EACCES, "snapshot", "RDWR of a snapshot");
        json_t *l = listing(), *e = listed(l, sid);
        check(e && json_is_null(json_object_get(e, "name")) &&
                      !strcmp(json_string_value(json_object_get(e, "kind")) ?: "", "snapshot") &&
                      json_integer_value(json_object_get(e, "source")) == id &&
                      !strcmp(json_string_value(json_object_get(e, "mode")) ?: "", "644"),
              "the listing shows the snapshot: no name, kind snapshot, source %lld, the source's mode", (long long)id);
        json_decref(l);
        struct child c;
        if (child_fork(&c, -1, -1) == 0)
                _exit(snapshot_reader(sid, len));
        child_end_ok(&c, "a snapshot reader");
        check(xemem_detach(snap) == 0 && xemem_release(sap) == 0 && xemem_remove(sid) == 0,
              "detach, release and remove the snapshot");
        check_err(xemem_snapshot(999999999), ENOENT, "does not exist", "snapshot of a segment nobody has");
        /* another process that may write: its writes could not be kept out of a snapshot */
        if (child_fork(&c, -1, -1) == 0)
                _exit(writer_child(&c, id));
        uint64_t t;
        if (recv_u64(c.from, &t) == 0) {
                check_err(xemem_snapshot(id), EBUSY, "read-write", "snapshot while another process holds RDWR");
                send_u64(c.to, 1);
                if (recv_u64(c.from, &t) == 0) {
                        sid = xemem_snapshot(id);
                        check(sid > 0, "once it released, the snapshot is taken (%lld)", (long long)sid);
                        if (sid > 0)
                                check(xemem_remove(sid) == 0, "remove that snapshot");
                }
                send_u64(c.to, 3);
        }
        child_end_ok(&c, "a writer");
        check(xemem_detach(live) == 0 && xemem_release(live_ap) == 0 && xemem_remove(id) == 0,
              "detach, release and remove the source");
}

/* ---- XPMEM ---- */

static int xpmem_child(int64_t segid, size_t len)
{
        int64_t ap = xpmem_get(segid, XPMEM_RDONLY, XPMEM_PERMIT_MODE, NULL);
        void *p = ap > 0 ? xpmem_attach((struct xpmem_addr){.apid = ap, .offset = 0}, len, NULL) : (void *)-1;
        check(p != (void *)-1 && differs(p, len, 8) < 0, "a child reads it through XPMEM by segid");
        check(p != (void *)-1 && xpmem_detach(p) == 0 && xpmem_release(ap) == 0, "and detaches and releases");
        return 0;
}

static void test_xpmem(void)
{
        check(xpmem_version() == XPMEM_CURRENT_VERSION, "xpmem_version() is %#x", xpmem_version());
        size_t len = 3 * (size_t)ps;
        char *buf = page_alloc(len);
        fill(buf, len, 8);
        int64_t s = xpmem_make(buf, len, XPMEM_PERMIT_MODE, (void *)0600);
        check(s > 0, "xpmem_make of 3 pages, permit mode 0600 (%lld)", (long long)s);
        errno = 0;
        check_errno(xpmem_make(buf + 1, len, XPMEM_PERMIT_MODE, (void *)0600) == -1, EINVAL,
                    "xpmem_make of an unaligned address");
        errno = 0;
        check_errno(xpmem_make(buf, len, 0x7, (void *)0600) == -1, EINVAL, "xpmem_make with an unknown permit type");
        errno = 0;
        check_errno(xpmem_make(buf, len, XPMEM_PERMIT_MODE, (void *)01777) == -1, EINVAL, "xpmem_make with mode 01777");
        errno = 0;
        check_errno(xpmem_make(buf, XPMEM_MAXADDR_SIZE, XPMEM_PERMIT_MODE, (void *)0600) == -1, EINVAL,
                    "xpmem_make of the whole address space at a non-NULL address");
        int64_t ap = xpmem_get(s, XPMEM_RDWR, XPMEM_PERMIT_MODE, NULL);
        check(ap > 0, "xpmem_get RDWR (%lld)", (long long)ap);
        errno = 0;
        check_errno(xpmem_get(s, 7, XPMEM_PERMIT_MODE, NULL) == -1, EINVAL, "xpmem_get with flags 7");
        errno = 0;
        check_errno(xpmem_get(999999999, XPMEM_RDONLY, XPMEM_PERMIT_MODE, NULL) == -1, ENOENT,
                    "xpmem_get of a segment nobody has");
        void *p = xpmem_attach((struct xpmem_addr){.apid = ap, .offset = ps}, (size_t)ps, NULL);
        check(p != (void *)-1 && memcmp(p, buf + ps, (size_t)ps) == 0,
              "xpmem_attach of the second page maps the exporter's second page");
        volatile char *v = p, *b = buf;
        if (p != (void *)-1) {
                v[9] = 0x19;
                check(b[ps + 9] == 0x19, "a write through it lands in the exporter's buffer");
                b[ps + 9] = (char)pat((uint64_t)ps + 9, 8);
        }
        errno = 0;
        check_errno(xpmem_attach((struct xpmem_addr){.apid = ap, .offset = -1}, 10, NULL) == (void *)-1, EINVAL,
                    "xpmem_attach at offset -1");
        errno = 0;
        check_errno(xpmem_attach((struct xpmem_addr){.apid = 999999999, .offset = 0}, 10, NULL) == (void *)-1, ENOENT,
                    "xpmem_attach with an access id nobody has");
        errno = 0;
        check_errno(xpmem_attach((struct xpmem_addr){.apid = ap, .offset = (off_t)len}, 10, NULL) == (void *)-1, ERANGE,
                    "xpmem_attach past the end");
        struct child c;
        if (child_fork(&c, -1, -1) == 0)
                _exit(xpmem_child(s, len));
        child_end_ok(&c, "an XPMEM reader");
        check(xpmem_detach(p) == 0, "xpmem_detach");
        errno = 0;
        check_errno(xpmem_detach(p) == -1, EINVAL, "xpmem_detach twice");
        check(xpmem_release(ap) == 0, "xpmem_release");
        errno = 0;
        check_errno(xpmem_release(ap) == -1, ENOENT, "xpmem_release twice");
        check(xpmem_remove(s) == 0, "xpmem_remove");
        errno = 0;
        check_errno(xpmem_remove(s) == -1, ENOENT, "xpmem_remove twice");
}

/* A child exports its whole address space, then mallocs and fills a buffer. */
static int whole_exporter(struct child *c)
{
        int64_t s = xpmem_make(NULL, XPMEM_MAXADDR_SIZE, XPMEM_PERMIT_MODE, (void *)0600);
        check(s > 0, "a child exports its whole address space (%lld: %s)", (long long)s, s < 0 ? xemem_error() : "");
        size_t len = 50000;
        volatile char *buf = malloc(len);
        fill(buf, len, 9);
        send_u64(c->to, (uint64_t)s);
        send_u64(c->to, (uintptr_t)buf);
        uint64_t t;
        if (recv_u64(c->from, &t) < 0)
                return 1;
        buf[10] = 0x5e;
        send_u64(c->to, 1);
        if (recv_u64(c->from, &t) < 0)
                return 1;
        check(buf[20] == 0x6f, "the child sees the attacher's write in its malloc'd buffer");
        check(xpmem_remove(s) == 0, "the child removes its whole-address-space segment");
        return 0;
}

static void test_xpmem_whole(void)
{
        struct child c;
        if (child_fork(&c, -1, -1) == 0)
                _exit(whole_exporter(&c));
        uint64_t s = 0, addr = 0, t;
        size_t len = 50000;
        if (recv_u64(c.from, &s) == 0 && recv_u64(c.from, &addr) == 0 && (int64_t)s > 0) {
                int64_t ap = xpmem_get((int64_t)s, XPMEM_RDWR, XPMEM_PERMIT_MODE, NULL);
                void *p = ap > 0 ? xpmem_attach((struct xpmem_addr){.apid = ap, .offset = (off_t)addr}, len, NULL)
                                 : (void *)-1;
                check(p != (void *)-1 && (uintptr_t)p % (uintptr_t)ps == addr % (uintptr_t)ps,
                      "xpmem_attach of the child's buffer by its address %#" PRIx64 " (%s)", addr,
                      p == (void *)-1 ? xemem_error() : "ok");
                check(p != (void *)-1 && differs(p, len, 9) < 0,
                      "it holds what the child wrote after the make: converted on demand");
                void *q = ap > 0 ? xpmem_attach((struct xpmem_addr){.apid = ap, .offset = (off_t)addr}, 100, NULL)
                                 : (void *)-1;
                check(q != (void *)-1 && q != p, "a second attachment of the same buffer");
                send_u64(c.to, 1);
                if (p != (void *)-1 && q != (void *)-1 && recv_u64(c.from, &t) == 0) {
                        volatile char *v = p, *w = q;
                        check(v[10] == 0x5e && w[10] == 0x5e,
                              "both attachments see the child's write made after the attach");
                        v[20] = 0x6f;
                        check(w[20] == 0x6f, "they are the same memory, not two conversions");
                }
                errno = 0;
                void *hole = xpmem_attach((struct xpmem_addr){.apid = ap, .offset = 4096}, 4096, NULL);
                check_errno(hole == (void *)-1, EFAULT, "xpmem_attach of an unmapped address of the child");
                check(p != (void *)-1 && q != (void *)-1 && xpmem_detach(p) == 0 && xpmem_detach(q) == 0 &&
                              xpmem_release(ap) == 0,
                      "detach both and release");
                send_u64(c.to, 2);
        } else {
                check(0, "the child sent its segment id and buffer address");
        }
        child_end_ok(&c, "a whole-address-space exporter");
}

int main(void)
{
        if (!getenv("TESSERA_XEMEM_SOCKET")) {
                skip("TESSERA_XEMEM_SOCKET is not set: tests/integration/xemem.sh runs this against its tesserad");
                return done_testing();
        }
        if (getuid() != 0) {
                skip("needs root (children become nobody; snapshots need /dev/userfaultfd)");
                return done_testing();
        }
        /* a stuck call must end the run, not hang the suite */
        alarm(150);
        /* a child that died must show as a failed check, not kill us on the next write to it */
        signal(SIGPIPE, SIG_IGN);
        ps = sysconf(_SC_PAGESIZE);
        me = getpid();
        test_make_malloc();
        test_make_static();
        test_make_stack();
        test_make_errors();
        test_lookup_get();
        test_attach();
        test_fork_sharing();
        test_readonly();
        test_detach_release_remove();
        test_permissions();
        test_lifetime();
        test_snapshots();
        test_xpmem();
        test_xpmem_whole();
        json_t *l = listing();
        check(l && listed_by_pid(l, me) == 0, "every segment of this process was removed: none listed with pid %d",
              (int)me);
        json_decref(l);
        return done_testing();
}
