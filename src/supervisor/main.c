/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * tessera-supervisor: PID 1 of an enclave's pid namespace.
 *
 * Started by sandbox_spawn_supervisor() with the control socket (listening)
 * on fd 3 and its log on stdout/stderr.  One thread, one poll loop over a
 * signalfd and the sockets.  As init it reaps every process that ends up
 * re-parented to it.  It answers only tesserad: a peer outside its pid
 * namespace running as root of the parent user namespace; everything inside
 * the enclave is untrusted.  Requests are dispatched through `ops[]`: ping
 * and shutdown here, the application operations (and `stem`) in app.c,
 * `open` in files.c.
 * The loop also copies the output of "log" applications (log.c) and kills
 * launched children that are never started.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "proto.h"
#include "supervisor.h"
#include "util.h"

#define CONNECTION_TIMEOUT_S 2    /* a half-sent request cannot hold the loop longer than this */
#define SHUTDOWN_GRACE_MS    2000 /* SIGTERM, then SIGKILL */
#define SHUTDOWN_CHECK_MS    20
#define START_TIMEOUT_MS     10000 /* a launched child not started by then is killed */
#define NOFILE_WANTED        65536 /* every "log" application holds three descriptors here */

static const char *log_name = "?";

void say(const char *fmt, ...)
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
                apps_reap(s);
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
                case SIGCHLD: apps_reap(s); break;
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

static int op_ping(struct supervisor *s, struct call *c, struct tessera_error *err)
{
        json_t *r = json_pack("{s:i, s:I, s:I, s:s}", "pid", (int)getpid(), "uptime_ms",
                              (json_int_t)((now_ns() - s->started_ns) / 1000000ULL), "processes",
                              (json_int_t)apps_count_alive(s), "enclave", s->enclave);
        if (!r)
                return tessera_error_set(err, ENOMEM, "cannot build the ping reply");
        c->result = r;
        return 0;
}

static int op_shutdown(struct supervisor *s, struct call *c, struct tessera_error *err)
{
        /* the reply goes out first; the loop shuts down right after sending it */
        s->shutdown_requested = true;
        c->result = json_object();
        return c->result ? 0 : tessera_error_set(err, ENOMEM, "cannot build the shutdown reply");
}

static const struct op {
        const char *name;
        op_handler handler;
} ops[] = {
        {"ping", op_ping},       {"shutdown", op_shutdown}, {"launch", op_launch}, {"start", op_start},
        {"collect", op_collect}, {"forget", op_forget},     {"apps", op_apps},     {"kill", op_kill},
        {"open", op_open},       {"stem", op_stem},
};

static int dispatch(struct supervisor *s, struct call *c, struct tessera_error *err)
{
        json_t *request = c->request;
        json_t *version = json_object_get(request, "version");
        if (version && (!json_is_integer(version) || json_integer_value(version) != TESSERA_PROTO_VERSION))
                return tessera_error_field(err, EPROTO, "version", "protocol version must be %d",
                                           TESSERA_PROTO_VERSION);
        const char *op = json_string_value(json_object_get(request, "op"));
        if (!op)
                return tessera_error_field(err, EINVAL, "op", "request has no `op` string");
        for (size_t i = 0; i < ELEMENTSOF(ops); i++)
                if (STREQ(ops[i].name, op))
                        return ops[i].handler(s, c, err);
        return tessera_error_field(err, EOPNOTSUPP, "op", "the supervisor has no operation `%.64s`", op);
}

static void close_connection(struct supervisor *s, size_t i)
{
        close(s->connections[i]);
        s->connections[i] = s->connections[--s->n_connections];
}

static void close_fds(int *fds, size_t n)
{
        for (size_t i = 0; i < n; i++)
                if (fds[i] >= 0)
                        close(fds[i]);
}

/* Dispatches and sends the reply, with the descriptors the handler gave; returns false when sending failed. */
static bool answer(struct supervisor *s, int fd, struct call *c)
{
        struct tessera_error err = {0};
        int r = dispatch(s, c, &err);
        if (r < 0) {
                json_decref(c->result);
                c->result = NULL;
                close_fds(c->fds_out, c->n_fds_out);
                c->n_fds_out = 0;
        }
        json_t *reply = r < 0 ? proto_reply_error(&err) : proto_reply_ok(c->result);
        c->result = NULL; /* the reply owns it now */
        if (!reply)
                return false;
        struct tessera_error send_err = {0};
        r = proto_send(fd, reply, c->fds_out, c->n_fds_out, &send_err);
        json_decref(reply);
        if (r < 0) {
                say("cannot reply: %s", send_err.msg);
                return false;
        }
        return true;
}

/* One request, one reply.  Returns false when the connection is to be closed. */
static bool serve_request(struct supervisor *s, int fd)
{
        struct tessera_error err = {0};
        struct call c = {.n_fds_in = PROTO_MAX_FDS};
        int r = proto_recv(fd, &c.request, c.fds_in, &c.n_fds_in, &err);
        if (r < 0)
                close_fds(c.fds_in, c.n_fds_in);
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
        bool answered = answer(s, fd, &c);
        json_decref(c.request);
        /* what the handler did not keep, and what went out with the reply (the peer has its own copies) */
        close_fds(c.fds_in, c.n_fds_in);
        close_fds(c.fds_out, c.n_fds_out);
        return answered;
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

/* The log pipes still open, after the connections in pfds; owners[i] is the application of pfds[i]. */
static size_t add_log_pipes(struct supervisor *s, struct pollfd *pfds, struct app **owners)
{
        size_t n = 0;
        for (size_t i = 0; i < s->n_apps; i++)
                if (s->apps[i]->log.pipe_fd >= 0) {
                        owners[n] = s->apps[i];
                        pfds[n++] = (struct pollfd){.fd = s->apps[i]->log.pipe_fd, .events = POLLIN};
                }
        return n;
}

static void relay_logs(const struct pollfd *pfds, struct app *const *owners, size_t n)
{
        for (size_t i = 0; i < n; i++)
                if (pfds[i].revents)
                        log_relay_chunk(&owners[i]->log, owners[i]->name);
}

static _Noreturn void run(struct supervisor *s)
{
        static struct pollfd pfds[2 + MAX_CONNECTIONS + MAX_APPS];
        static struct app *log_owners[MAX_APPS];
        for (;;) {
                size_t n_conn = s->n_connections;
                pfds[0] = (struct pollfd){.fd = s->signal_fd, .events = POLLIN};
                pfds[1] = (struct pollfd){.fd = LISTEN_FD, .events = POLLIN};
                for (size_t i = 0; i < n_conn; i++)
                        pfds[2 + i] = (struct pollfd){.fd = s->connections[i], .events = POLLIN};
                size_t n_logs = add_log_pipes(s, pfds + 2 + n_conn, log_owners);
                if (poll(pfds, 2 + n_conn + n_logs, apps_poll_timeout_ms(s)) < 0) {
                        if (errno != EINTR)
                                say("poll failed: %s", strerror(errno));
                        continue;
                }
                /* output first, so what an application wrote is in its log before its exit is recorded */
                relay_logs(pfds + 2 + n_conn, log_owners, n_logs);
                if (pfds[0].revents)
                        handle_signals(s);
                /* may forget applications: log_owners is stale from here on */
                serve_connections(s, pfds + 2, n_conn);
                if (pfds[1].revents)
                        accept_connections(s);
                apps_enforce_start_deadlines(s);
        }
}

/* Whether this is a user namespace that may not call setgroups (its parent wrote "deny"). */
static bool setgroups_is_denied(void)
{
        char buf[16];
        return read_file_at(AT_FDCWD, "/proc/self/setgroups", buf, sizeof(buf), NULL) > 0 && STREQ(buf, "deny");
}

/* Room for the descriptors of many logged applications; applications get the original limit back. */
static void raise_nofile(struct supervisor *s)
{
        if (getrlimit(RLIMIT_NOFILE, &s->nofile) < 0) {
                s->nofile = (struct rlimit){1024, 1024};
                return;
        }
        struct rlimit raised = s->nofile;
        if (raised.rlim_cur >= NOFILE_WANTED)
                return;
        raised.rlim_cur = raised.rlim_max < NOFILE_WANTED ? raised.rlim_max : NOFILE_WANTED;
        if (setrlimit(RLIMIT_NOFILE, &raised) < 0)
                say("cannot raise the open-file limit to %llu: %s", (unsigned long long)raised.rlim_cur,
                    strerror(errno));
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
        /* processes of the enclave must not ptrace or pidfd_getfd their way to the control sockets */
        if (prctl(PR_SET_DUMPABLE, 0) < 0) {
                say("cannot make the supervisor non-dumpable: %s", strerror(errno));
                return 1;
        }
        static struct supervisor s;
        s.enclave = enclave;
        s.started_ns = now_ns();
        s.start_timeout_ns = START_TIMEOUT_MS * 1000000ULL;
        s.setgroups_denied = setgroups_is_denied();
        raise_nofile(&s);
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
