/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The socket loop.  Single-threaded on purpose: every operation is a few
 * milliseconds of store and kernel work, forks happen from one thread (no
 * malloc-lock hazards in children), and requests are ordered for free.  One
 * epoll set holds the listening socket, clients, a signalfd and the pidfd of
 * every supervisor.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "app.h"
#include "proto.h"
#include "tesserad.h"
#include "util.h"

#define MAX_CLIENTS 1024

enum tag_kind {
        TAG_LISTEN,
        TAG_SIGNAL,
        TAG_CLIENT,
        TAG_PIDFD,
        TAG_APP,
        TAG_MOVER,
        TAG_XLISTEN,
        TAG_XCLIENT,
        TAG_XEMEM,
        TAG_AGENT
};

/* epoll's data word: the kind in the top bits, an fd or an enclave id below. */
#define TAG(kind, v) (((uint64_t)(kind) << 56) | ((uint64_t)(v) & ((1ULL << 56) - 1)))
#define TAG_KIND(t)  ((enum tag_kind)((t) >> 56))
#define TAG_VALUE(t) ((int64_t)((t) & ((1ULL << 56) - 1)))

/* A client whose `wait` is answered when its application ends. */
struct waiter {
        int fd;
        int64_t app;
};

struct server {
        int epfd;
        struct tessera_node *node;
        size_t n_clients;
        struct waiter *waiters;
        size_t n_waiters, cap_waiters;
        struct conn **conns; /* by client fd */
        size_t n_conns;
};

/*
 * A client connection.  Requests are read without blocking into `buf` and
 * run once a whole frame is there: a client that sends half a frame and
 * stalls costs the daemon nothing (XEMEM's socket is open to every process
 * of the node).
 */
struct conn {
        char *buf;
        size_t len, cap;
        int fds[PROTO_MAX_FDS]; /* descriptors that came with the frame being read */
        size_t n_fds;
        struct xemem_caller caller; /* pidfd -1 until known */
        bool xemem_socket;
        struct segment_pending *pending; /* an attach waiting for an exporter's agent: nothing else is read meanwhile */
};

static void log_lines(const char *what, json_t *log)
{
        size_t i;
        json_t *v;
        json_array_foreach(log, i, v) fprintf(stderr, "tesserad: %s: %s\n", what, json_string_value(v));
        json_array_clear(log);
}

static void watcher_add(void *ctx, int pidfd, enum watch_kind kind, int64_t id)
{
        struct server *s = ctx;
        enum tag_kind tag = kind == WATCH_APP ? TAG_APP : kind == WATCH_XEMEM ? TAG_XEMEM : TAG_PIDFD;
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TAG(tag, id)};
        if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, pidfd, &ev) < 0)
                fprintf(stderr, "tesserad: cannot watch %s %lld: %m\n",
                        kind == WATCH_APP     ? "application"
                        : kind == WATCH_XEMEM ? "XEMEM process"
                                              : "enclave",
                        (long long)id);
}

static void watcher_remove(void *ctx, int pidfd)
{
        struct server *s = ctx;
        (void)epoll_ctl(s->epfd, EPOLL_CTL_DEL, pidfd, NULL);
}

/*
 * Binds the control socket.  A socket file that refuses connections is a
 * leftover of a crashed daemon and is replaced; one that answers means
 * another tesserad is running there.
 */
static int bind_control_socket(const char *path, struct tessera_error *err)
{
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        if (strlen(path) >= sizeof(sa.sun_path))
                return tessera_error_set(err, ENAMETOOLONG, "socket: `%s` is too long", path);
        strcpy(sa.sun_path, path);
        char dir[sizeof(sa.sun_path)];
        snprintf(dir, sizeof(dir), "%s", path);
        char *slash = strrchr(dir, '/');
        if (slash && slash != dir) {
                *slash = '\0';
                int r = mkdir_p(dir, 0755, err);
                if (r < 0)
                        return r;
        }
        _cleanup_close_ int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0)
                return tessera_error_set(err, EADDRINUSE, "another tesserad answers at `%s`", path);
        (void)unlink(path);
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return tessera_error_set(err, errno, "cannot create the control socket: %s", strerror(errno));
        if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                return tessera_error_set(err, errno, "cannot bind `%s`: %s", path, strerror(errno));
        /* everyone may connect: SO_PEERCRED, not the file mode, decides what they may do */
        if (chmod(path, 0666) < 0 || listen(fd, 128) < 0)
                return tessera_error_set(err, errno, "cannot listen on `%s`: %s", path, strerror(errno));
        return TAKE_FD(fd);
}

/* One daemon per state directory, whatever socket it is given. */
static int lock_state_dir(const char *dir, struct tessera_error *err)
{
        int r = mkdir_p(dir, 0700, err);
        if (r < 0)
                return r;
        char path[PATH_MAX + 16];
        snprintf(path, sizeof(path), "%s/tesserad.lock", dir);
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
                return tessera_error_set(err, errno, "cannot open `%s`: %s", path, strerror(errno));
        if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
                int e = errno;
                close(fd);
                return tessera_error_set(err, e, "state dir `%s` is in use by another tesserad", dir);
        }
        return fd;
}

static void conn_free(struct conn *c)
{
        segment_pending_free(c->pending);
        for (size_t i = 0; i < c->n_fds; i++)
                close(c->fds[i]);
        if (c->caller.pidfd >= 0)
                close(c->caller.pidfd);
        free(c->buf);
        free(c);
}

static struct conn *conn_new(struct server *s, int fd)
{
        if ((size_t)fd >= s->n_conns) {
                size_t n = (size_t)fd + 64;
                struct conn **v = realloc(s->conns, n * sizeof(*v));
                if (!v)
                        return NULL;
                memset(v + s->n_conns, 0, (n - s->n_conns) * sizeof(*v));
                s->conns = v;
                s->n_conns = n;
        }
        struct conn *c = calloc(1, sizeof(*c));
        if (c)
                c->caller.pidfd = -1;
        s->conns[fd] = c;
        return c;
}

static void accept_client(struct server *s, int lfd, enum tag_kind kind)
{
        for (;;) {
                int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
                if (fd < 0)
                        return;
                if (s->n_clients >= MAX_CLIENTS || !conn_new(s, fd)) {
                        close(fd);
                        continue;
                }
                s->conns[fd]->xemem_socket = kind == TAG_XCLIENT;
                /* requests are read without blocking; a client that does not read its replies costs at most this */
                struct timeval tv = {.tv_sec = 2};
                (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
                struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u64 = TAG(kind, fd)};
                if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
                        conn_free(s->conns[fd]);
                        s->conns[fd] = NULL;
                        close(fd);
                        continue;
                }
                s->n_clients++;
        }
}

static void drop_client(struct server *s, int fd)
{
        for (size_t i = 0; i < s->n_waiters;)
                if (s->waiters[i].fd == fd)
                        s->waiters[i] = s->waiters[--s->n_waiters];
                else
                        i++;
        if ((size_t)fd < s->n_conns && s->conns[fd]) {
                /* the exporter holds the agent socket's file too: closing ours would not take it out of epoll */
                if (s->conns[fd]->pending)
                        (void)epoll_ctl(s->epfd, EPOLL_CTL_DEL, segment_pending_fd(s->conns[fd]->pending), NULL);
                conn_free(s->conns[fd]);
                s->conns[fd] = NULL;
        }
        (void)epoll_ctl(s->epfd, EPOLL_CTL_DEL, fd, NULL);
        close(fd);
        s->n_clients--;
}

static int add_waiter(struct server *s, int fd, int64_t app)
{
        if (s->n_waiters == s->cap_waiters) {
                size_t cap = s->cap_waiters ? s->cap_waiters * 2 : 16;
                struct waiter *w = realloc(s->waiters, cap * sizeof(*w));
                if (!w)
                        return -ENOMEM;
                s->waiters = w;
                s->cap_waiters = cap;
        }
        s->waiters[s->n_waiters++] = (struct waiter){.fd = fd, .app = app};
        return 0;
}

/* The application ended: every client waiting for it gets its record. */
static void answer_waiters(struct server *s, int64_t app)
{
        json_t *now = app_json_by_id(s->node, app, NULL);
        bool running = now && STREQ(json_string_value(json_object_get(now, "state")), "running");
        json_decref(now);
        if (running)
                return; /* the supervisor has not reaped it yet: its pidfd will fire again */
        for (size_t i = 0; i < s->n_waiters;) {
                if (s->waiters[i].app != app) {
                        i++;
                        continue;
                }
                int fd = s->waiters[i].fd;
                s->waiters[i] = s->waiters[--s->n_waiters];
                struct tessera_error err = {0};
                json_t *o = app_json_by_id(s->node, app, &err);
                json_t *reply = o ? proto_reply_ok(o) : proto_reply_error(&err);
                if (proto_send(fd, reply, NULL, 0, NULL) < 0)
                        drop_client(s, fd);
                json_decref(reply);
        }
}

/*
 * Client `fd` waits for an exporter's agent: the agent's socket joins the
 * loop and the client's socket leaves it until the answer is sent, so its
 * requests stay in order.
 */
static void wait_for_agent(struct server *s, int fd, struct segment_pending *p)
{
        struct conn *c = s->conns[fd];
        c->pending = p;
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TAG(TAG_AGENT, fd)};
        struct epoll_event quiet = {.events = 0, .data.u64 = TAG(c->xemem_socket ? TAG_XCLIENT : TAG_CLIENT, fd)};
        if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, segment_pending_fd(p), &ev) < 0 ||
            epoll_ctl(s->epfd, EPOLL_CTL_MOD, fd, &quiet) < 0)
                drop_client(s, fd);
}

static void serve_buffered(struct server *s, int fd, bool closing);

/* The agent answered (or failed, or timed out: `timeout`): the waiting client gets its reply. */
static void agent_answered(struct server *s, int fd, bool timeout)
{
        struct conn *c = (size_t)fd < s->n_conns ? s->conns[fd] : NULL;
        if (!c || !c->pending)
                return;
        struct tessera_error err = {0};
        json_t *ret = NULL;
        int fds[MAX_REPLY_FDS];
        size_t n_fds = MAX_REPLY_FDS;
        int r = timeout ? tessera_error_set(&err, ETIMEDOUT, "the exporter's XEMEM agent did not answer in time")
                        : segment_pending_read(s->node, c->pending, &ret, fds, &n_fds, &err);
        if (r == 0)
                return; /* more of its answer later */
        (void)epoll_ctl(s->epfd, EPOLL_CTL_DEL, segment_pending_fd(c->pending), NULL);
        segment_pending_free(c->pending);
        c->pending = NULL;
        json_t *reply = r > 0 ? proto_reply_ok(ret) : proto_reply_error(&err);
        int sent = proto_send(fd, reply, r > 0 ? fds : NULL, r > 0 ? n_fds : 0, NULL);
        json_decref(reply);
        if (r > 0)
                for (size_t i = 0; i < n_fds; i++)
                        close(fds[i]);
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP,
                                 .data.u64 = TAG(c->xemem_socket ? TAG_XCLIENT : TAG_CLIENT, fd)};
        if (sent < 0 || epoll_ctl(s->epfd, EPOLL_CTL_MOD, fd, &ev) < 0) {
                drop_client(s, fd);
                return;
        }
        serve_buffered(s, fd, false); /* requests that came meanwhile */
}

/* The earliest deadline of an agent's answer, as an epoll_wait timeout; expired ones are answered. */
static int agent_timeouts(struct server *s)
{
        uint64_t now = now_ns(), next = UINT64_MAX;
        for (size_t fd = 0; fd < s->n_conns; fd++) {
                struct conn *c = s->conns[fd];
                if (!c || !c->pending)
                        continue;
                uint64_t d = segment_pending_deadline(c->pending);
                if (d <= now)
                        agent_answered(s, (int)fd, true);
                else if (d < next)
                        next = d;
        }
        return next == UINT64_MAX ? -1 : (int)((next - now) / 1000000ULL) + 1;
}

/* Runs one request of client `fd`; its descriptors are only lent to the request. */
static void handle_request(struct server *s, int fd, bool xemem_socket, json_t *req, int *fds_in, size_t n_in)
{
        struct outcome out = {0};
        struct conn *c = s->conns[fd];
        const char *op = json_string_value(json_object_get(req, "op"));
        json_t *reply;
        if (xemem_socket || dispatch_is_xemem(op)) {
                /* who is asking comes from the kernel, once per connection */
                reply = dispatch_xemem(s->node, fd, &c->caller, req, &out);
        } else {
                struct ucred cred;
                socklen_t len = sizeof(cred);
                char inside[64];
                struct tessera_error err = {0};
                if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 || len != sizeof(cred)) {
                        tessera_error_set(&err, EACCES, "cannot identify the caller");
                        reply = proto_reply_error(&err);
                } else if (node_pid_enclave(s->node, cred.pid, inside, sizeof(inside)) == 1) {
                        /* root inside an enclave is not the node's administrator: its uid proves nothing here */
                        tessera_error_set(&err, EPERM, "requests from inside enclave '%s' are not accepted", inside);
                        reply = proto_reply_error(&err);
                } else {
                        struct caller who = {.pid = cred.pid, .uid = cred.uid, .gid = cred.gid};
                        reply = dispatch(s->node, &who, req, fds_in, n_in, &out);
                }
        }
        if (!reply && out.pending) {
                wait_for_agent(s, fd, out.pending);
                return;
        }
        if (!reply && out.wait_app > 0) {
                if (add_waiter(s, fd, out.wait_app) < 0)
                        drop_client(s, fd);
                return;
        }
        if (!reply || proto_send(fd, reply, out.fds, out.n_fds, NULL) < 0)
                drop_client(s, fd);
        for (size_t i = 0; i < out.n_fds; i++)
                close(out.fds[i]);
        json_decref(reply);
        if (out.refill[0])
                app_pool_refill(s->node, out.refill);
}

/* Reads what has arrived without blocking; -ECONNRESET at the end of the stream. */
static int read_available(struct conn *c, int fd)
{
        for (;;) {
                if (c->cap - c->len < 4096) {
                        size_t cap = c->cap ? c->cap * 2 : 4096;
                        if (cap > PROTO_MAX_FRAME + 65536 + 4)
                                return c->len > PROTO_MAX_FRAME + 4 ? -EMSGSIZE : 0;
                        char *b = realloc(c->buf, cap);
                        if (!b)
                                return -ENOMEM;
                        c->buf = b;
                        c->cap = cap;
                }
                struct iovec iov = {.iov_base = c->buf + c->len, .iov_len = c->cap - c->len};
                char control[CMSG_SPACE(sizeof(int) * PROTO_MAX_FDS)];
                struct msghdr msg = {
                        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof(control)};
                ssize_t n = recvmsg(fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
                if (n < 0)
                        return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : errno == EINTR ? 0 : -errno;
                for (struct cmsghdr *h = CMSG_FIRSTHDR(&msg); h; h = CMSG_NXTHDR(&msg, h)) {
                        if (h->cmsg_level != SOL_SOCKET || h->cmsg_type != SCM_RIGHTS)
                                continue;
                        int *in = (int *)CMSG_DATA(h);
                        for (size_t i = 0; i < (h->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
                                if (c->n_fds < PROTO_MAX_FDS)
                                        c->fds[c->n_fds++] = in[i];
                                else
                                        close(in[i]); /* more than a request may carry: not kept */
                        }
                }
                if (n == 0)
                        return -ECONNRESET;
                c->len += (size_t)n;
        }
}

/* Client `fd` has data: buffer it, then run every whole request that arrived, in order. */
static void serve_client(struct server *s, int fd, bool xemem_socket)
{
        struct conn *c = (size_t)fd < s->n_conns ? s->conns[fd] : NULL;
        if (!c) {
                drop_client(s, fd);
                return;
        }
        int r = read_available(c, fd);
        serve_buffered(s, fd, r < 0);
}

/* Runs every whole request in client `fd`'s buffer, in order, unless one waits for an agent. */
static void serve_buffered(struct server *s, int fd, bool closing)
{
        struct conn *c = s->conns[fd];
        bool xemem_socket = c->xemem_socket;
        while (c->len > 0 && !c->pending) {
                struct tessera_error err = {0};
                json_t *req = NULL;
                size_t used = 0;
                int k = proto_take_frame(c->buf, c->len, &req, &used, &err);
                if (k == 0)
                        break;
                if (k < 0) {
                        json_t *reply = proto_reply_error(&err);
                        (void)proto_send(fd, reply, NULL, 0, NULL);
                        json_decref(reply);
                        drop_client(s, fd);
                        return;
                }
                memmove(c->buf, c->buf + used, c->len - used);
                c->len -= used;
                /* descriptors ride on a frame's first byte: those read so far belong to this one */
                int fds[PROTO_MAX_FDS];
                size_t n_fds = c->n_fds;
                memcpy(fds, c->fds, n_fds * sizeof(int));
                c->n_fds = 0;
                handle_request(s, fd, xemem_socket, req, fds, n_fds);
                json_decref(req);
                for (size_t i = 0; i < n_fds; i++)
                        close(fds[i]);
                if ((size_t)fd >= s->n_conns || s->conns[fd] != c)
                        return; /* dropped while handling */
        }
        if (c->pending)
                return; /* the rest waits for the agent's answer; so does a close */
        if (closing || c->len > PROTO_MAX_FRAME + 4) {
                drop_client(s, fd);
                return;
        }
        if (c->len == 0 && c->cap > 4096) {
                /* an idle connection keeps a small buffer, whatever it sent once */
                free(c->buf);
                c->buf = NULL;
                c->cap = 0;
        }
}

int serve(const struct tessera_config *cfg)
{
        struct tessera_error err = {0};
        struct server s = {.epfd = -1};
        _cleanup_close_ int lock = lock_state_dir(cfg->state_dir, &err);
        if (lock < 0) {
                fprintf(stderr, "tesserad: %s\n", err.msg);
                return 1;
        }
        s.epfd = epoll_create1(EPOLL_CLOEXEC);
        struct node_watcher w = {.ctx = &s, .add = watcher_add, .remove = watcher_remove};
        json_t *log = json_array();
        uint64_t t0 = now_ns();
        int r = node_open(cfg, &w, log, &s.node, &err);
        log_lines("start", log);
        if (r < 0) {
                fprintf(stderr, "tesserad: %s\n", err.msg);
                json_decref(log);
                close(s.epfd);
                return 1;
        }
        r = node_reconcile(s.node, log, &err);
        log_lines("reconcile", log);
        if (r < 0)
                fprintf(stderr, "tesserad: reconcile left a problem: %s\n", err.msg);
        _cleanup_close_ int lfd = bind_control_socket(cfg->socket, &err);
        if (lfd < 0) {
                fprintf(stderr, "tesserad: %s\n", err.msg);
                node_close(s.node);
                json_decref(log);
                close(s.epfd);
                return 1;
        }
        char xpath[PATH_MAX];
        xemem_socket_path(cfg->socket, xpath, sizeof(xpath));
        _cleanup_close_ int xfd = bind_control_socket(xpath, &err);
        if (xfd < 0) {
                fprintf(stderr, "tesserad: XEMEM: %s\n", err.msg);
                node_close(s.node);
                json_decref(log);
                close(s.epfd);
                return 1;
        }
        sigset_t mask;
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        signal(SIGPIPE, SIG_IGN);
        _cleanup_close_ int sfd = signalfd(-1, &mask, SFD_CLOEXEC);
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TAG(TAG_LISTEN, lfd)};
        epoll_ctl(s.epfd, EPOLL_CTL_ADD, lfd, &ev);
        ev.data.u64 = TAG(TAG_XLISTEN, xfd);
        epoll_ctl(s.epfd, EPOLL_CTL_ADD, xfd, &ev);
        ev.data.u64 = TAG(TAG_SIGNAL, sfd);
        epoll_ctl(s.epfd, EPOLL_CTL_ADD, sfd, &ev);
        int mfd = node_mover_fd(s.node);
        if (mfd >= 0) {
                ev.data.u64 = TAG(TAG_MOVER, mfd);
                epoll_ctl(s.epfd, EPOLL_CTL_ADD, mfd, &ev);
        }
        fprintf(stderr, "tesserad: ready on %s (state %s, cgroup %s%s) in %.1f ms\n", cfg->socket, cfg->state_dir,
                cfg->cgroup_root, node_ledger_only(s.node) ? ", ledger-only" : "", (double)(now_ns() - t0) / 1e6);

        bool running = true;
        while (running) {
                struct epoll_event events[64];
                int n = epoll_wait(s.epfd, events, 64, agent_timeouts(&s));
                if (n < 0 && errno != EINTR)
                        break;
                for (int i = 0; i < n; i++) {
                        uint64_t tag = events[i].data.u64;
                        switch (TAG_KIND(tag)) {
                        case TAG_LISTEN: accept_client(&s, lfd, TAG_CLIENT); break;
                        case TAG_XLISTEN: accept_client(&s, xfd, TAG_XCLIENT); break;
                        case TAG_SIGNAL: running = false; break;
                        case TAG_CLIENT:
                        case TAG_XCLIENT:
                                if (events[i].events & (EPOLLIN))
                                        serve_client(&s, (int)TAG_VALUE(tag), TAG_KIND(tag) == TAG_XCLIENT);
                                else
                                        drop_client(&s, (int)TAG_VALUE(tag));
                                break;
                        case TAG_XEMEM: segment_process_exited(s.node, (pid_t)TAG_VALUE(tag)); break;
                        case TAG_AGENT: agent_answered(&s, (int)TAG_VALUE(tag), false); break;
                        case TAG_MOVER: app_pool_events(s.node); break;
                        case TAG_APP: {
                                struct tessera_error aerr = {0};
                                if (app_exited(s.node, TAG_VALUE(tag), log, &aerr) < 0)
                                        fprintf(stderr, "tesserad: %s\n", aerr.msg);
                                log_lines("application", log);
                                answer_waiters(&s, TAG_VALUE(tag));
                                break;
                        }
                        case TAG_PIDFD: {
                                struct tessera_error perr = {0};
                                if (enclave_supervisor_exited(s.node, TAG_VALUE(tag), log, &perr) < 0)
                                        fprintf(stderr, "tesserad: %s\n", perr.msg);
                                log_lines("enclave", log);
                                break;
                        }
                        }
                }
        }
        /* enclaves outlive the daemon: only our own socket goes */
        fprintf(stderr, "tesserad: stopping; enclaves keep running\n");
        (void)unlink(cfg->socket);
        (void)unlink(xpath);
        node_close(s.node);
        json_decref(log);
        free(s.waiters);
        for (size_t i = 0; i < s.n_conns; i++)
                if (s.conns[i])
                        conn_free(s.conns[i]);
        free(s.conns);
        close(s.epfd);
        return 0;
}
