/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * tessera-supervisor: PID 1 of an enclave's pid namespace.
 *
 * Started by sandbox_spawn_supervisor() with the control socket (listening)
 * on fd 3 and its log on stdout/stderr.  One thread, one poll loop over a
 * signalfd and the sockets.  As init it reaps every process that ends up
 * re-parented to it.  It answers only tesserad: a peer outside its pid
 * namespace running as root of the parent user namespace; everything inside
 * the enclave is untrusted.  Requests are dispatched through `ops[]`, so the
 * application operations (launch, apps, kill, wait, logs) slot in as rows.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "proto.h"
#include "util.h"

#define LISTEN_FD            3
#define MAX_CONNECTIONS      32
#define MAX_CHILDREN         1024
#define CONNECTION_TIMEOUT_S 2    /* a half-sent request cannot hold the loop longer than this */
#define SHUTDOWN_GRACE_MS    2000 /* SIGTERM, then SIGKILL */
#define SHUTDOWN_CHECK_MS    20

struct child {
        pid_t pid;
};

struct supervisor {
        const char *enclave;
        int signal_fd;
        uint64_t started_ns;
        uid_t trusted_uid; /* how root of the parent user namespace (tesserad) appears here */
        int connections[MAX_CONNECTIONS];
        size_t n_connections;
        /* the processes it started (the application operations fill this) */
        struct child children[MAX_CHILDREN];
        size_t n_children;
        bool shutdown_requested;
};

static const char *log_name = "?";

__attribute__((format(printf, 1, 2))) static void say(const char *fmt, ...)
{
        char line[1024];
        int n = snprintf(line, sizeof(line), "tessera-supervisor[%s]: ", log_name);
        va_list ap;
        va_start(ap, fmt);
        if (n >= 0 && (size_t)n < sizeof(line))
                n += vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
        va_end(ap);
        if (n < 0)
                return;
        if ((size_t)n >= sizeof(line) - 1)
                n = (int)sizeof(line) - 2;
        line[n++] = '\n';
        /* one write per line, so lines from several writers do not interleave */
        (void)!write(STDERR_FILENO, line, (size_t)n);
}

/* ---- children ---- */

static void forget_child(struct supervisor *s, pid_t pid)
{
        for (size_t i = 0; i < s->n_children; i++)
                if (s->children[i].pid == pid) {
                        s->children[i] = s->children[--s->n_children];
                        return;
                }
}

/* Reaps everything that has exited, ours or re-parented.  Returns -ECHILD once no child is left. */
static int reap_children(struct supervisor *s)
{
        for (;;) {
                int status;
                pid_t pid = waitpid(-1, &status, WNOHANG);
                if (pid < 0)
                        return errno == EINTR ? 0 : -errno;
                if (pid == 0)
                        return 0;
                forget_child(s, pid);
        }
}

/* ---- signals and shutdown ---- */

static void drain_signals(int signal_fd)
{
        struct signalfd_siginfo si;
        while (read(signal_fd, &si, sizeof(si)) == (ssize_t)sizeof(si))
                ;
}

/* Whether any other process is left in the namespace (zombies of outside parents included). */
static bool others_left(void)
{
        return kill(-1, 0) == 0 || errno != ESRCH;
}

/*
 * SIGTERM to every process of the namespace, SIGKILL to what is left after
 * the grace period, then exit.  Processes that joined from outside (setns)
 * are not our children and send no SIGCHLD, so the wait also checks every
 * SHUTDOWN_CHECK_MS whether anyone is left.
 */
static _Noreturn void supervisor_shutdown(struct supervisor *s)
{
        say("shutting down: SIGTERM to every process of the enclave");
        /* from PID 1 of a pid namespace, -1 means every other process of that namespace */
        (void)kill(-1, SIGTERM);
        uint64_t deadline = now_ns() + SHUTDOWN_GRACE_MS * 1000000ULL;
        for (;;) {
                (void)reap_children(s);
                if (!others_left())
                        break;
                uint64_t now = now_ns();
                if (now >= deadline) {
                        say("processes left after %d ms: SIGKILL", SHUTDOWN_GRACE_MS);
                        (void)kill(-1, SIGKILL);
                        while (waitpid(-1, NULL, 0) > 0 || errno == EINTR)
                                ;
                        break;
                }
                struct pollfd pfd = {.fd = s->signal_fd, .events = POLLIN};
                uint64_t left_ms = (deadline - now) / 1000000ULL + 1;
                (void)poll(&pfd, 1, left_ms < SHUTDOWN_CHECK_MS ? (int)left_ms : SHUTDOWN_CHECK_MS);
                drain_signals(s->signal_fd);
        }
        say("stopped");
        _exit(0);
}

static void handle_signals(struct supervisor *s)
{
        struct signalfd_siginfo si;
        while (read(s->signal_fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
                switch (si.ssi_signo) {
                case SIGCHLD: (void)reap_children(s); break;
                case SIGTERM:
                case SIGINT:
                        /* a sender inside the enclave has a pid here; outside ones (tesserad, the host) show 0 */
                        if (si.ssi_pid != 0) {
                                say("ignoring signal %u from pid %u inside the enclave", si.ssi_signo, si.ssi_pid);
                                break;
                        }
                        supervisor_shutdown(s);
                default: say("ignoring signal %u", si.ssi_signo);
                }
        }
}

/* ---- requests ---- */

typedef int (*op_handler)(struct supervisor *s, json_t *request, json_t **ret_result, struct tessera_error *err);

static int op_ping(struct supervisor *s, json_t *request, json_t **ret_result, struct tessera_error *err)
{
        json_t *r = json_pack("{s:i, s:I, s:I, s:s}", "pid", (int)getpid(), "uptime_ms",
                              (json_int_t)((now_ns() - s->started_ns) / 1000000ULL), "processes",
                              (json_int_t)s->n_children, "enclave", s->enclave);
        if (!r)
                return tessera_error_set(err, ENOMEM, "cannot build the ping reply");
        *ret_result = r;
        return 0;
}

static int op_shutdown(struct supervisor *s, json_t *request, json_t **ret_result, struct tessera_error *err)
{
        /* the reply goes out first; the loop shuts down right after sending it */
        s->shutdown_requested = true;
        *ret_result = json_object();
        return *ret_result ? 0 : tessera_error_set(err, ENOMEM, "cannot build the shutdown reply");
}

static const struct op {
        const char *name;
        op_handler handler;
} ops[] = {
        {"ping", op_ping},
        {"shutdown", op_shutdown},
};

static int dispatch(struct supervisor *s, json_t *request, json_t **ret_result, struct tessera_error *err)
{
        json_t *version = json_object_get(request, "version");
        if (version && (!json_is_integer(version) || json_integer_value(version) != TESSERA_PROTO_VERSION))
                return tessera_error_field(err, EPROTO, "version", "protocol version must be %d",
                                           TESSERA_PROTO_VERSION);
        const char *op = json_string_value(json_object_get(request, "op"));
        if (!op)
                return tessera_error_field(err, EINVAL, "op", "request has no `op` string");
        for (size_t i = 0; i < ELEMENTSOF(ops); i++)
                if (STREQ(ops[i].name, op))
                        return ops[i].handler(s, request, ret_result, err);
        return tessera_error_field(err, EOPNOTSUPP, "op", "the supervisor has no operation `%.64s`", op);
}

static void close_connection(struct supervisor *s, size_t i)
{
        close(s->connections[i]);
        s->connections[i] = s->connections[--s->n_connections];
}

/* One request, one reply.  Returns false when the connection is to be closed. */
static bool serve_request(struct supervisor *s, int fd)
{
        struct tessera_error err = {0};
        json_t *request = NULL;
        int r = proto_recv(fd, &request, NULL, NULL, &err);
        if (r == -ECONNRESET)
                return false; /* the peer went away: nobody to answer */
        if (r < 0) {
                /* the stream may be out of step: answer once and close */
                say("bad request: %s", err.msg);
                json_t *reply = proto_reply_error(&err);
                if (reply)
                        (void)proto_send(fd, reply, NULL, 0, NULL);
                json_decref(reply);
                return false;
        }
        json_t *result = NULL;
        r = dispatch(s, request, &result, &err);
        json_decref(request);
        json_t *reply = r < 0 ? proto_reply_error(&err) : proto_reply_ok(result);
        if (!reply)
                return false;
        struct tessera_error send_err = {0};
        r = proto_send(fd, reply, NULL, 0, &send_err);
        json_decref(reply);
        if (r < 0) {
                say("cannot reply: %s", send_err.msg);
                return false;
        }
        return true;
}

/* ---- connections ---- */

static bool peer_is_trusted(struct supervisor *s, int fd)
{
        struct ucred cred;
        socklen_t len = sizeof(cred);
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 || len != sizeof(cred)) {
                say("refused a connection: cannot read its credentials: %s", strerror(errno));
                return false;
        }
        /* a process of this namespace (or below) has a pid here: it is part of the untrusted enclave */
        if (cred.pid != 0) {
                say("refused a connection from pid %d inside the enclave", (int)cred.pid);
                return false;
        }
        if (cred.uid != s->trusted_uid) {
                say("refused a connection from uid %u (only %u may connect)", (unsigned)cred.uid,
                    (unsigned)s->trusted_uid);
                return false;
        }
        return true;
}

static void accept_connections(struct supervisor *s)
{
        for (;;) {
                int fd = accept4(LISTEN_FD, NULL, NULL, SOCK_CLOEXEC);
                if (fd < 0) {
                        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED)
                                say("cannot accept a connection: %s", strerror(errno));
                        if (errno == EINTR || errno == ECONNABORTED)
                                continue;
                        return;
                }
                if (!peer_is_trusted(s, fd)) {
                        close(fd);
                        continue;
                }
                if (s->n_connections >= MAX_CONNECTIONS) {
                        say("refused a connection: %d are open already", MAX_CONNECTIONS);
                        close(fd);
                        continue;
                }
                struct timeval tv = {.tv_sec = CONNECTION_TIMEOUT_S};
                (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
                (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
                s->connections[s->n_connections++] = fd;
        }
}

/* ---- start ---- */

/*
 * Root of the parent user namespace, as SO_PEERCRED shows it here: its mapped
 * id, or the overflow uid when unmapped.  (Then any unmapped host user looks
 * the same; the socket's root-only directory is what keeps those out.)
 */
static uid_t parent_root_uid(void)
{
        _cleanup_fclose_ FILE *f = fopen("/proc/self/uid_map", "re");
        if (f) {
                unsigned long inside, outside, count;
                while (fscanf(f, "%lu %lu %lu", &inside, &outside, &count) == 3)
                        if (outside == 0 && count > 0)
                                return (uid_t)inside;
        }
        char buf[32];
        uint64_t v;
        if (read_file_at(AT_FDCWD, "/proc/sys/kernel/overflowuid", buf, sizeof(buf), NULL) > 0 &&
            parse_uint64(buf, UINT32_MAX, &v) == 0)
                return (uid_t)v;
        return 65534;
}

static int setup_signals(struct supervisor *s)
{
        sigset_t mask;
        sigemptyset(&mask);
        sigaddset(&mask, SIGCHLD);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        s->signal_fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
        /* SIGPIPE only blocked: a vanished log reader must not kill the enclave's init */
        sigaddset(&mask, SIGPIPE);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0 || s->signal_fd < 0)
                return -errno;
        return 0;
}

static int setup_listener(void)
{
        int accepting = 0;
        socklen_t len = sizeof(accepting);
        if (getsockopt(LISTEN_FD, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &len) < 0)
                return -errno;
        if (!accepting)
                return -EINVAL;
        /* applications it starts later must not inherit the control socket */
        if (fcntl(LISTEN_FD, F_SETFD, FD_CLOEXEC) < 0)
                return -errno;
        int fl = fcntl(LISTEN_FD, F_GETFL);
        if (fl < 0 || fcntl(LISTEN_FD, F_SETFL, fl | O_NONBLOCK) < 0)
                return -errno;
        return 0;
}

static int parse_args(int argc, char **argv, const char **ret_enclave)
{
        static const struct option options[] = {
                {"enclave", required_argument, NULL, 'e'},
                {},
        };
        int c;
        while ((c = getopt_long(argc, argv, "", options, NULL)) != -1) {
                if (c != 'e')
                        return -EINVAL;
                *ret_enclave = optarg;
        }
        if (optind != argc || !*ret_enclave || !name_is_valid(*ret_enclave))
                return -EINVAL;
        return 0;
}

static void serve_connections(struct supervisor *s, const struct pollfd *pfds, size_t n)
{
        /* walk backwards: closing swaps the last connection into the freed slot */
        for (size_t i = n; i-- > 0;) {
                if (!pfds[i].revents)
                        continue;
                if (!(pfds[i].revents & POLLIN) || !serve_request(s, s->connections[i]))
                        close_connection(s, i);
                if (s->shutdown_requested)
                        supervisor_shutdown(s);
        }
}

static _Noreturn void run(struct supervisor *s)
{
        for (;;) {
                struct pollfd pfds[2 + MAX_CONNECTIONS];
                size_t n_conn = s->n_connections;
                pfds[0] = (struct pollfd){.fd = s->signal_fd, .events = POLLIN};
                pfds[1] = (struct pollfd){.fd = LISTEN_FD, .events = POLLIN};
                for (size_t i = 0; i < n_conn; i++)
                        pfds[2 + i] = (struct pollfd){.fd = s->connections[i], .events = POLLIN};
                if (poll(pfds, 2 + n_conn, -1) < 0) {
                        if (errno != EINTR)
                                say("poll failed: %s", strerror(errno));
                        continue;
                }
                if (pfds[0].revents)
                        handle_signals(s);
                serve_connections(s, pfds + 2, n_conn);
                if (pfds[1].revents)
                        accept_connections(s);
        }
}

int main(int argc, char **argv)
{
        const char *enclave = NULL;
        if (parse_args(argc, argv, &enclave) < 0) {
                fprintf(stderr, "usage: tessera-supervisor --enclave NAME (started by tesserad, not by hand)\n");
                return 2;
        }
        log_name = enclave;
        (void)prctl(PR_SET_NAME, "tessera-supervisor");
        /* kill(-1) at shutdown is only safe as init of our own namespace */
        if (getpid() != 1) {
                say("must run as PID 1 of the enclave's pid namespace (pid is %d)", (int)getpid());
                return 1;
        }
        static struct supervisor s;
        s.enclave = enclave;
        s.started_ns = now_ns();
        int r = setup_signals(&s);
        if (r < 0) {
                say("cannot set up signal handling: %s", strerror(-r));
                return 1;
        }
        r = setup_listener();
        if (r < 0) {
                say("fd %d is not a listening socket: %s", LISTEN_FD, strerror(-r));
                return 1;
        }
        s.trusted_uid = parent_root_uid();
        say("started");
        run(&s);
}
