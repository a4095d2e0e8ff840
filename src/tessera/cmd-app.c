/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Applications: `launch`, `apps`, `logs`, `kill`, `wait`, `console`, `cat`, `write`.
 *
 * Data never passes through tesserad (docs/apps.md): it takes this shell's own
 * stdin/stdout/stderr for an application, or hands the shell a descriptor (a
 * log file, a file inside the enclave, a pty master), and the copying happens
 * here.  Calls that can take long (`wait`) are sent first and their answer read
 * when poll() says it came, so signals and other descriptors are served
 * meanwhile.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/param.h>
#include <sys/sendfile.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>

#include "app-format.h"
#include "cli.h"
#include "output.h"
#include "proto.h"
#include "util.h"

#define NUM_BUF          32
#define DEFAULT_MAX_SIZE (64ull << 20)
#define COPY_CHUNK       (128u << 10)
#define CONSOLE_BUF      4096
/*
 * A pty master that said POLLOUT has room for some input, not necessarily a
 * whole buffer: small writes keep the shell from blocking on a program that
 * reads no input while its output waits for us.
 */
#define MASTER_WRITE_CHUNK    256
#define CONSOLE_EOF_REPEAT_MS 1000
#define INTERRUPTS_TO_GIVE_UP 3
#define RECONNECT_PAUSE_MS    200
#define RECONNECT_FOR_MS      60000 /* a tesserad restart, not an outage */
#define LOG_RETRY_MS          10
#define LOG_RETRY_MAX_MS      1000
#define LOG_SETTLE_MS         100

enum { OPT_CWD = 0x100 };

const struct option_help launch_options[] = {
        {"-n, --name APP", "the application's name (default: tesserad picks one, \"a<id>\")"},
        {"-c, --cpus LIST", "run on these of the enclave's cores (\"2-3\")"},
        {"-e, --env NAME=VALUE", "set an environment variable; repeat for more"},
        {"    --cwd DIR", "working directory inside the enclave"},
        {"-u, --user USER", "run as USER: a name, \"uid\" or \"uid:gid\""},
        {"-w, --wait", "give it this shell's stdin, stdout and stderr, wait, and exit with its status"},
        {"-t, --tty", "run it on a terminal (pty)"},
        {"    --", "ends the options: the command follows (options after NAME are ours until the command)"},
        {NULL},
};

const struct option_help logs_options[] = {
        {"-f, --follow", "keep printing what it writes until it has ended"},
        {NULL},
};

const struct option_help kill_options[] = {
        {"-s, --signal SIG", "a name (TERM, KILL, INT, HUP, USR1, ...) or a number; default TERM"},
        {NULL},
};

const struct option_help file_options[] = {
        {"-m, --max SIZE", "refuse files larger than SIZE (default 64M)"},
        {NULL},
};

static const char *const name_rule = "letters, digits, '_', '.' and '-', at most 63, starting with a letter or digit";

static int check_enclave_name(const struct cli *cli, const char *name)
{
        if (name_is_valid(name))
                return 0;
        return cli_fail("%s: '%s' is not an enclave name (%s)", cli->invoked_as, name, name_rule);
}

static int check_app_name(const struct cli *cli, const char *name)
{
        if (name_is_valid(name))
                return 0;
        return cli_fail("%s: '%s' is not an application name (%s)", cli->invoked_as, name, name_rule);
}

/* Exactly the operands named in `names` after the options; -1 to go on, else the exit status. */
static int want_operands(struct cli *cli, int argc, char **argv, const char *const *names, int n)
{
        if (argc - optind > n)
                return cli_usage(cli, "unexpected argument '%s'", argv[optind + n]);
        if (argc - optind < n)
                return cli_usage(cli, "missing %s", names[argc - optind]);
        return -1;
}

/* NAME APP, both checked; -1 to go on, else the exit status. */
static int take_enclave_and_app(struct cli *cli, int argc, char **argv, const char **enclave, const char **app)
{
        int status = want_operands(cli, argc, argv, (const char *const[]){"NAME", "APP"}, 2);
        if (status >= 0)
                return status;
        *enclave = argv[optind];
        *app = argv[optind + 1];
        if (check_enclave_name(cli, *enclave) != 0 || check_app_name(cli, *app) != 0)
                return EXIT_FAILURE;
        return -1;
}

static void client_freep(struct tessera_client **c)
{
        tessera_client_free(*c);
}

static int ensure_connected(struct cli *cli, struct tessera_error *err)
{
        return cli->client ? 0 : tessera_client_connect(cli->socket_path, &cli->client, err);
}

static void close_all(const int *fds, size_t n)
{
        for (size_t i = 0; i < n; i++)
                if (fds[i] >= 0)
                        close(fds[i]);
}

/* One call answered with descriptors: at most *n (in), how many came (out). */
static int call_for_fds(struct tessera_client *c, const char *op, json_t *request, json_t **ret, int *fds, size_t *n,
                        struct tessera_error *err)
{
        void *result = NULL;
        int r = tessera_client_call_fds(c, op, request, NULL, 0, &result, fds, n, err);
        if (r < 0)
                return r;
        *ret = result;
        return 0;
}

/* One call answered with exactly one descriptor (the `console`, `cat` and `write` ops). */
static int call_for_fd(struct tessera_client *c, const char *op, json_t *request, json_t **ret, int *ret_fd,
                       struct tessera_error *err)
{
        int fds[1];
        size_t n = ELEMENTSOF(fds);
        int r = call_for_fds(c, op, request, ret, fds, &n, err);
        if (r < 0)
                return r;
        if (n == 0) {
                json_decref(TAKE_PTR(*ret));
                return tessera_error_set(err, EPROTO,
                                         "tesserad answered `%s` without a descriptor; are tessera "
                                         "and tesserad the same version?",
                                         op);
        }
        *ret_fd = fds[0];
        return 0;
}

/* Sends a request without waiting for its answer (receive_answer() reads it). */
static int send_request(struct tessera_client *c, const char *op, json_t *request, const int *fds, size_t n_fds,
                        struct tessera_error *err)
{
        /* A copy: the caller's request is sent again with another op (`logs` after `wait`). */
        json_auto_t *req = request ? json_copy(request) : json_object();
        if (!req || json_object_set_new(req, "version", json_integer(TESSERA_PROTO_VERSION)) < 0 ||
            json_object_set_new(req, "op", json_string(op)) < 0)
                return tessera_error_set(err, ENOMEM, "out of memory");
        return proto_send(tessera_client_fd(c), req, fds, n_fds, err);
}

static int receive_answer(struct tessera_client *c, const char *op, json_t **ret, struct tessera_error *err)
{
        json_auto_t *reply = NULL;
        int r = proto_recv(tessera_client_fd(c), &reply, NULL, NULL, err);
        if (r < 0)
                return tessera_error_prefix(err, r, "no answer from tesserad to `%s`", op);
        json_t *result = NULL;
        r = proto_reply_result(reply, &result, err);
        if (r < 0)
                return r;
        *ret = json_incref(result ? result : json_null());
        return 0;
}

static bool signal_is_ignored(int sig)
{
        struct sigaction sa;
        return sigaction(sig, NULL, &sa) == 0 && sa.sa_handler == SIG_IGN;
}

/*
 * Blocks `signals` and returns a signalfd for them: they are read in a poll
 * loop instead of interrupting.  Signals the caller has us ignore stay
 * ignored (a blocked signal would be queued even so): `nohup tessera launch
 * --wait` must not pass SIGHUP on, nor must a background job the SIGINT of
 * its terminal.
 */
static int catch_signals(const int *signals, size_t n, struct tessera_error *err)
{
        sigset_t mask;
        sigemptyset(&mask);
        for (size_t i = 0; i < n; i++)
                if (!signal_is_ignored(signals[i]))
                        sigaddset(&mask, signals[i]);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
                return tessera_error_set(err, errno, "cannot block signals: %s", strerror(errno));
        int fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
        if (fd < 0)
                return tessera_error_set(err, errno, "cannot create a signalfd: %s", strerror(errno));
        return fd;
}

/* The next caught signal, or 0 when none is queued. */
static int next_signal(int sigfd)
{
        struct signalfd_siginfo si;
        ssize_t n;
        do
                n = read(sigfd, &si, sizeof(si));
        while (n < 0 && errno == EINTR);
        return n == (ssize_t)sizeof(si) ? (int)si.ssi_signo : 0;
}

static int wait_writable(int fd)
{
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        while (poll(&p, 1, -1) < 0)
                if (errno != EINTR)
                        return -errno;
        return 0;
}

static int write_all(int fd, const char *buf, size_t len)
{
        while (len > 0) {
                ssize_t n = write(fd, buf, len);
                if (n < 0 && errno == EINTR)
                        continue;
                /* Someone else made the terminal non-blocking (it is shared with the calling shell). */
                if (n < 0 && errno == EAGAIN && wait_writable(fd) == 0)
                        continue;
                if (n < 0)
                        return -errno;
                buf += n;
                len -= (size_t)n;
        }
        return 0;
}

/*
 * Copies from `in` to `out` until the end of `in` (*at_end) or `limit` bytes,
 * counting them in *copied.  sendfile() where the kernel can; read/write where
 * it cannot (a pipe or a terminal as input, an O_APPEND output).
 */
static int copy_data(int in, const char *in_name, int out, const char *out_name, uint64_t limit, uint64_t *copied,
                     bool *at_end, struct tessera_error *err)
{
        _cleanup_free_ char *buf = NULL;
        bool use_sendfile = true;
        *copied = 0;
        *at_end = false;
        while (*copied < limit) {
                size_t want = limit - *copied < COPY_CHUNK ? (size_t)(limit - *copied) : COPY_CHUNK;
                ssize_t n;
                if (use_sendfile) {
                        n = sendfile(out, in, NULL, want);
                        if (n < 0 && (errno == EINVAL || errno == ENOSYS)) {
                                use_sendfile = false;
                                continue;
                        }
                        if (n < 0 && errno == EAGAIN && wait_writable(out) == 0)
                                continue;
                        if (n < 0 && errno != EINTR)
                                return tessera_error_set(err, errno, "cannot copy %s to %s: %s", in_name, out_name,
                                                         strerror(errno));
                } else {
                        if (!buf && !(buf = malloc(COPY_CHUNK)))
                                return tessera_error_set(err, ENOMEM, "out of memory");
                        n = read(in, buf, want);
                        if (n < 0 && errno != EINTR)
                                return tessera_error_set(err, errno, "cannot read %s: %s", in_name, strerror(errno));
                        int r = n > 0 ? write_all(out, buf, (size_t)n) : 0;
                        if (r < 0)
                                return tessera_error_set(err, -r, "cannot write to %s: %s", out_name, strerror(-r));
                }
                if (n == 0) {
                        *at_end = true;
                        break;
                }
                if (n > 0)
                        *copied += (uint64_t)n;
        }
        return 0;
}

/* After `limit` bytes: is there more?  (One byte is read to know.) */
static int has_more(int fd, const char *name, bool *ret, struct tessera_error *err)
{
        char c;
        ssize_t n;
        do
                n = read(fd, &c, 1);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return tessera_error_set(err, errno, "cannot read %s: %s", name, strerror(errno));
        *ret = n > 0;
        return 0;
}

/* ---- launch and wait ---- */

/*
 * The exit status of an ended application, as a shell reports it (code, or
 * 128 + signal), so `tessera launch --wait` and `tessera wait` can stand in
 * for it under mpirun or srun.
 */
static int exit_like_app(const struct cli *cli, const json_t *app, const char *enclave, const char *name)
{
        int status;
        if (cli->json && cli_print_json(app) != 0)
                return EXIT_FAILURE;
        int r = app_exit_status(app, &status);
        if (r == -ESRCH)
                return cli_fail("%s/%s was lost: its exit status is not known", enclave, name);
        if (r < 0)
                return cli_unexpected_reply("wait", "an ended application with its status");
        return status;
}

/* A waiting shell passes the signals it gets on to the application, as srun and `docker run` do. */
struct waiter {
        const struct cli *cli;
        const char *enclave;
        const char *app; /* NULL until `launch` has answered */
        int held[4];     /* signals caught before the application was known */
        size_t n_held;
        unsigned interrupts; /* SIGINTs so far */
        bool forward_failed; /* said once, not for every signal */
};

static void forward_signal(struct waiter *w, int sig)
{
        _cleanup_(client_freep) struct tessera_client *c = NULL;
        json_auto_t *request = json_pack("{s:s, s:s, s:i}", "name", w->enclave, "app", w->app, "signal", sig);
        json_auto_t *result = NULL;
        struct tessera_error err = {0};
        int r = request ? tessera_client_connect(w->cli->socket_path, &c, &err) : -ENOMEM;
        /* A second connection: the first one carries the pending `wait`. */
        if (r >= 0)
                r = tessera_client_call(c, "kill", request, (void **)&result, &err);
        /* An application that ended meanwhile cannot be signalled; the answer to `wait` comes next. */
        if (r >= 0 || r == -ESRCH || w->forward_failed)
                return;
        w->forward_failed = true;
        char name[16];
        app_signal_name(sig, name, sizeof(name));
        fprintf(stderr, "tessera: cannot pass SIG%s on to %s/%s: %s\n", name, w->enclave, w->app,
                r == -ENOMEM ? "out of memory" : err.msg);
}

/* Returns 0 to go on waiting, else the status to exit with. */
static int waiter_on_signal(struct waiter *w, int sig)
{
        if (sig == SIGINT && ++w->interrupts >= INTERRUPTS_TO_GIVE_UP) {
                fprintf(stderr, "tessera: stopped waiting; %s%s%s may still be running (see `tessera apps %s`)\n",
                        w->enclave, w->app ? "/" : "", w->app ? w->app : "'s new application", w->enclave);
                return 128 + SIGINT;
        }
        if (sig == SIGINT && w->interrupts == INTERRUPTS_TO_GIVE_UP - 1)
                fprintf(stderr, "tessera: interrupt passed on; once more to stop waiting (the application keeps "
                                "running)\n");
        if (w->app) {
                forward_signal(w, sig);
                return 0;
        }
        for (size_t i = 0; i < w->n_held; i++)
                if (w->held[i] == sig)
                        return 0;
        if (w->n_held < ELEMENTSOF(w->held))
                w->held[w->n_held++] = sig;
        return 0;
}

/* Polls until the answer on `c` is there (0), handing caught signals to the waiter meanwhile. */
static int await_answer(struct tessera_client *c, int sigfd, struct waiter *w, struct tessera_error *err)
{
        struct pollfd p[2] = {{.fd = tessera_client_fd(c), .events = POLLIN}, {.fd = sigfd, .events = POLLIN}};
        for (;;) {
                if (poll(p, ELEMENTSOF(p), -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        return tessera_error_set(err, errno, "cannot wait for tesserad: %s", strerror(errno));
                }
                int sig;
                while ((p[1].revents & POLLIN) && (sig = next_signal(sigfd)) > 0) {
                        int status = waiter_on_signal(w, sig);
                        if (status > 0)
                                return status;
                }
                if (p[0].revents)
                        return 0;
        }
}

/* One call whose answer may take long; > 0 is the status to exit with (the user stopped waiting). */
static int call_waiting(struct tessera_client *c, const char *op, json_t *request, const int *fds, size_t n_fds,
                        int sigfd, struct waiter *w, json_t **ret, struct tessera_error *err)
{
        int r = send_request(c, op, request, fds, n_fds, err);
        if (r < 0)
                return r;
        r = await_answer(c, sigfd, w, err);
        if (r != 0)
                return r;
        return receive_answer(c, op, ret, err);
}

/* The connection broke under a call: tesserad went away (a restart, say), not the application. */
static bool connection_lost(int r)
{
        return r == -ECONNRESET || r == -EPIPE;
}

/* Sleeps up to `ms`, serving caught signals; > 0 is the status to exit with. */
static int pause_serving_signals(int sigfd, struct waiter *w, int ms)
{
        struct pollfd p = {.fd = sigfd, .events = POLLIN};
        int sig;
        if (poll(&p, 1, ms) <= 0)
                return 0;
        while ((sig = next_signal(sigfd)) > 0) {
                int status = waiter_on_signal(w, sig);
                if (status > 0)
                        return status;
        }
        return 0;
}

/* A new connection to tesserad while it restarts; applications outlive it, so waiting goes on. */
static int reconnect(struct cli *cli, int sigfd, struct waiter *w, struct tessera_error *err)
{
        uint64_t give_up = now_ns() + (uint64_t)RECONNECT_FOR_MS * 1000000u;
        tessera_client_free(TAKE_PTR(cli->client));
        for (;;) {
                int r = tessera_client_connect(cli->socket_path, &cli->client, err);
                if (r == 0)
                        return 0;
                if ((r != -ENOENT && r != -ECONNREFUSED) || now_ns() > give_up)
                        return tessera_error_prefix(err, r, "lost tesserad while waiting");
                if ((r = pause_serving_signals(sigfd, w, RECONNECT_PAUSE_MS)) != 0)
                        return r;
        }
}

/* `wait` for the application, asked again on a new connection when tesserad restarts meanwhile. */
static int wait_for_app(struct cli *cli, int sigfd, struct waiter *w, json_t **ret, struct tessera_error *err)
{
        json_auto_t *request = json_pack("{s:s, s:s}", "name", w->enclave, "app", w->app);
        if (!request)
                return tessera_error_set(err, ENOMEM, "out of memory");
        for (;;) {
                int r = call_waiting(cli->client, "wait", request, NULL, 0, sigfd, w, ret, err);
                if (!connection_lost(r))
                        return r;
                if ((r = reconnect(cli, sigfd, w, err)) != 0)
                        return r;
        }
}

static void close_stand_ins(int (*fds)[3])
{
        for (int i = 0; i < 3; i++)
                if ((*fds)[i] >= 0)
                        close((*fds)[i]);
}

/*
 * The shell's fds 0-2 for the application; /dev/null stands in for a closed
 * one (batch systems close stdin).  Called before any other descriptor is
 * made, so none of them can have taken a free 0-2.
 */
static int stdio_for_app(int fds[3], int stand_ins[3], struct tessera_error *err)
{
        for (int i = 0; i < 3; i++) {
                fds[i] = i;
                if (fcntl(i, F_GETFD) >= 0)
                        continue;
                stand_ins[i] = open("/dev/null", O_RDWR | O_CLOEXEC);
                if (stand_ins[i] < 0)
                        return tessera_error_set(err, errno, "cannot open /dev/null for fd %d: %s", i, strerror(errno));
                fds[i] = stand_ins[i];
        }
        return 0;
}

static int launch_and_wait(struct cli *cli, json_t *request, const char *enclave)
{
        static const int forwarded[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
        struct tessera_error err = {0};
        int stdio[3];
        _cleanup_(close_stand_ins) int stand_ins[3] = {-1, -1, -1};
        if (stdio_for_app(stdio, stand_ins, &err) < 0)
                return cli_fail("%s", err.msg);
        _cleanup_close_ int sigfd = catch_signals(forwarded, ELEMENTSOF(forwarded), &err);
        if (sigfd < 0 || ensure_connected(cli, &err) < 0)
                return cli_fail("%s", err.msg);

        struct waiter w = {.cli = cli, .enclave = enclave};
        json_auto_t *app = NULL, *ended = NULL;
        int r = call_waiting(cli->client, "launch", request, stdio, 3, sigfd, &w, &app, &err);
        if (r != 0)
                return r > 0 ? r : cli_fail("%s", err.msg);
        w.app = json_string_or(app, "name", NULL);
        if (!w.app)
                return cli_unexpected_reply("launch", "an application object with a name");
        for (size_t i = 0; i < w.n_held; i++)
                forward_signal(&w, w.held[i]);

        r = wait_for_app(cli, sigfd, &w, &ended, &err);
        if (r != 0)
                return r > 0 ? r : cli_fail("%s", err.msg);
        return exit_like_app(cli, ended, enclave, w.app);
}

/* Sets request[field] once; a second time is a usage error. */
static int set_once(struct cli *cli, json_t *request, const char *field, const char *flag, json_t *value)
{
        if (!value)
                return cli_out_of_memory();
        if (json_object_get(request, field)) {
                json_decref(value);
                return cli_usage(cli, "%s given twice", flag);
        }
        if (json_object_set_new(request, field, value) < 0)
                return cli_out_of_memory();
        return 0;
}

/* One launch option into the request; 0 to go on, else the exit status. */
static int launch_option(struct cli *cli, int c, json_t *request, json_t *env)
{
        switch (c) {
        case 'n':
                if (check_app_name(cli, optarg) != 0)
                        return EXIT_FAILURE;
                return set_once(cli, request, "app", "--name", json_string(optarg));
        case 'c':
                if (!app_cpulist_is_valid(optarg))
                        return cli_fail("%s: cpus: \"%s\" is not a cpu list (use \"2\" or \"2-3,5\")", cli->invoked_as,
                                        optarg);
                return set_once(cli, request, "cpus", "--cpus", json_string(optarg));
        case 'e':
                if (!app_env_is_valid(optarg))
                        return cli_fail("%s: env: \"%s\" is not NAME=VALUE (NAME: letters, digits and '_', not "
                                        "starting with a digit)",
                                        cli->invoked_as, optarg);
                return json_array_append_new(env, json_string(optarg)) < 0 ? cli_out_of_memory() : 0;
        case OPT_CWD:
                if (!*optarg)
                        return cli_usage(cli, "--cwd needs a directory");
                return set_once(cli, request, "cwd", "--cwd", json_string(optarg));
        case 'u':
                if (!*optarg)
                        return cli_usage(cli, "--user needs a user");
                return set_once(cli, request, "user", "--user", json_string(optarg));
        case 'w': return json_object_set_new(request, "wait", json_true()) < 0 ? cli_out_of_memory() : 0;
        case 't': return json_object_set_new(request, "tty", json_true()) < 0 ? cli_out_of_memory() : 0;
        default: return cli_option_status(cli, c) ?: -1; /* --help: done, with status 0 */
        }
}

/*
 * NAME, options and the command.  Options may come before and after NAME;
 * the command starts at the first operand after NAME (or after "--"), and
 * everything from there on is its own, options included.
 */
static int parse_launch(struct cli *cli, int argc, char **argv, json_t *request, const char **enclave)
{
        static const struct option options[] = {
                {"name", required_argument, NULL, 'n'}, {"cpus", required_argument, NULL, 'c'},
                {"env", required_argument, NULL, 'e'},  {"cwd", required_argument, NULL, OPT_CWD},
                {"user", required_argument, NULL, 'u'}, {"wait", no_argument, NULL, 'w'},
                {"tty", no_argument, NULL, 't'},        {0},
        };
        json_auto_t *env = json_array();
        json_t *command = json_array();
        if (!env || json_object_set_new(request, "argv", command) < 0)
                return cli_out_of_memory();
        cli->options_first = true;
        for (int round = 0; round < 2; round++) {
                int c, status;
                while ((c = cli_getopt(cli, argc, argv, options)) != -1)
                        if ((status = launch_option(cli, c, request, env)) != 0)
                                return status < 0 ? 0 : status;
                if (round == 1)
                        break;
                if (optind >= argc)
                        return cli_usage(cli, "missing NAME");
                *enclave = argv[optind++];
        }
        if (optind >= argc)
                return cli_usage(cli, "missing the command to run (after NAME, or after --)");
        if (check_enclave_name(cli, *enclave) != 0)
                return EXIT_FAILURE;
        for (int i = optind; i < argc; i++)
                if (json_array_append_new(command, json_string(argv[i])) < 0)
                        return cli_out_of_memory();
        if (json_object_set_new(request, "name", json_string(*enclave)) < 0 ||
            (json_array_size(env) > 0 && json_object_set(request, "env", env) < 0))
                return cli_out_of_memory();
        return -1;
}

int cmd_launch(struct cli *cli, int argc, char **argv)
{
        json_auto_t *request = json_pack("{s:b, s:b}", "wait", 0, "tty", 0);
        if (!request)
                return cli_out_of_memory();
        const char *enclave = NULL;
        int status = parse_launch(cli, argc, argv, request, &enclave);
        if (status >= 0)
                return status;
        if (json_is_true(json_object_get(request, "wait")))
                return launch_and_wait(cli, request, enclave);

        struct tessera_error err = {0};
        json_auto_t *app = NULL;
        if (cli_call(cli, "launch", request, &app, &err) < 0)
                return cli_fail("%s", err.msg);
        if (cli->json)
                return cli_print_json(app);
        const char *name = json_string_or(app, "name", NULL);
        if (!name)
                return cli_unexpected_reply("launch", "an application object with a name");
        printf("%s\n", name);
        return 0;
}

int cmd_wait(struct cli *cli, int argc, char **argv)
{
        const char *enclave, *app;
        int c, status;
        while ((c = cli_getopt(cli, argc, argv, NULL)) != -1)
                return cli_option_status(cli, c);
        if ((status = take_enclave_and_app(cli, argc, argv, &enclave, &app)) >= 0)
                return status;
        /* No signals caught: interrupting `tessera wait` just stops waiting. */
        struct waiter w = {.cli = cli, .enclave = enclave, .app = app};
        json_auto_t *ended = NULL;
        struct tessera_error err = {0};
        if (ensure_connected(cli, &err) < 0 || wait_for_app(cli, -1, &w, &ended, &err) < 0)
                return cli_fail("%s", err.msg);
        return exit_like_app(cli, ended, enclave, app);
}

/* ---- apps and kill ---- */

enum { COL_ID, COL_NAME, COL_ENCLAVE, COL_STATE, COL_PID, COL_NSPID, COL_STARTED, COL_STATUS, COL_CPU, COL_MEM };

static int app_table_add(struct table *t, const json_t *app, time_t now)
{
        char id[NUM_BUF], pid[NUM_BUF], ns_pid[NUM_BUF], started[NUM_BUF], status[NUM_BUF], cpu[NUM_BUF], mem[NUM_BUF];
        format_json_uint(json_object_get(app, "id"), id, sizeof(id));
        format_json_uint(json_object_get(app, "pid"), pid, sizeof(pid));
        format_json_uint(json_object_get(app, "ns_pid"), ns_pid, sizeof(ns_pid));
        app_format_started(json_object_get(app, "started"), now, started, sizeof(started));
        app_format_status(app, status, sizeof(status));
        app_format_cpu(json_object_get(app, "cpu_ns"), cpu, sizeof(cpu));
        format_json_size(json_object_get(app, "peak_memory"), mem, sizeof(mem));
        return table_add_row(t, id, json_string_or(app, "name", "-"), json_string_or(app, "enclave", "-"),
                             json_string_or(app, "state", "-"), pid, ns_pid, started, status, cpu, mem);
}

static int print_apps(const json_t *list)
{
        _cleanup_(table_freep) struct table *t =
                table_new("ID", "NAME", "ENCLAVE", "STATE", "PID", "NSPID", "STARTED", "STATUS", "CPU", "MEM");
        if (!t)
                return cli_out_of_memory();
        static const size_t right[] = {COL_ID, COL_PID, COL_NSPID, COL_CPU, COL_MEM};
        for (size_t i = 0; i < ELEMENTSOF(right); i++)
                table_align_right(t, right[i]);
        time_t now = time(NULL);
        size_t i;
        const json_t *app;
        json_array_foreach(list, i, app) if (app_table_add(t, app, now) < 0) return cli_out_of_memory();
        return cli_print_table(t);
}

int cmd_apps(struct cli *cli, int argc, char **argv)
{
        int c;
        while ((c = cli_getopt(cli, argc, argv, NULL)) != -1)
                return cli_option_status(cli, c);
        if (argc - optind > 1)
                return cli_usage(cli, "unexpected argument '%s'", argv[optind + 1]);
        json_auto_t *request = NULL, *list = NULL;
        if (optind < argc) {
                if (check_enclave_name(cli, argv[optind]) != 0)
                        return EXIT_FAILURE;
                if (!(request = json_pack("{s:s}", "name", argv[optind])))
                        return cli_out_of_memory();
        }
        struct tessera_error err = {0};
        if (cli_call(cli, "apps", request, &list, &err) < 0)
                return cli_fail("%s", err.msg);
        if (cli->json)
                return cli_print_json(list);
        if (!json_is_array(list))
                return cli_unexpected_reply("apps", "an array");
        return print_apps(list);
}

int cmd_kill(struct cli *cli, int argc, char **argv)
{
        static const struct option options[] = {
                {"signal", required_argument, NULL, 's'},
                {0},
        };
        int c, sig = SIGTERM, status;
        while ((c = cli_getopt(cli, argc, argv, options)) != -1) {
                if (c != 's')
                        return cli_option_status(cli, c);
                if (app_parse_signal(optarg, &sig) < 0)
                        return cli_usage(cli,
                                         "unknown signal '%s' (a name such as TERM, KILL, INT, HUP, USR1, or "
                                         "a number 1-64)",
                                         optarg);
        }
        const char *enclave, *app;
        if ((status = take_enclave_and_app(cli, argc, argv, &enclave, &app)) >= 0)
                return status;
        json_auto_t *request = json_pack("{s:s, s:s, s:i}", "name", enclave, "app", app, "signal", sig);
        json_auto_t *result = NULL;
        struct tessera_error err = {0};
        if (!request)
                return cli_out_of_memory();
        if (cli_call(cli, "kill", request, &result, &err) < 0)
                return cli_fail("%s", err.msg);
        if (cli->json)
                return cli_print_json(result);
        char name[16];
        app_signal_name(sig, name, sizeof(name));
        printf("%s: signal %d (%s) sent\n", json_string_or(result, "name", app), sig, name);
        return 0;
}

/* ---- logs ---- */

/*
 * `logs` answers with the log's files, oldest first: <app>.log.1 when the log
 * has been rotated, then <app>.log; none when the application has no log
 * (yet, or it was launched with --wait).
 */
#define LOG_MAX_FILES 4
_Static_assert(LOG_MAX_FILES <= PROTO_MAX_FDS, "more log files than a frame can carry");

/* Copies a log as it grows, across rotations (<app>.log -> <app>.log.1), until the application has ended. */
struct log_follower {
        const struct cli *cli;
        json_t *request;              /* {"name", "app"} of `logs` */
        struct tessera_client *asker; /* a second connection: the first one waits */
        int fd;                       /* the current <app>.log, or -1 while there is none */
        int inotify, watch;
        dev_t dev;
        ino_t ino;
        struct tessera_error err;
};

static void log_follower_done(struct log_follower *f)
{
        tessera_client_free(f->asker);
        if (f->fd >= 0)
                close(f->fd);
        if (f->inotify >= 0)
                close(f->inotify);
}

static int follower_watch(struct log_follower *f)
{
        char path[64];
        struct stat st;
        /* The magic link resolves to the open file itself, wherever tesserad found it. */
        snprintf(path, sizeof(path), "/proc/self/fd/%d", f->fd);
        f->watch = inotify_add_watch(f->inotify, path, IN_MODIFY | IN_MOVE_SELF | IN_DELETE_SELF | IN_ATTRIB);
        if (f->watch < 0)
                return tessera_error_set(&f->err, errno, "cannot watch the log with inotify: %s", strerror(errno));
        if (fstat(f->fd, &st) < 0)
                return tessera_error_set(&f->err, errno, "cannot stat the log: %s", strerror(errno));
        f->dev = st.st_dev;
        f->ino = st.st_ino;
        return 0;
}

static int drain_log(int fd, struct tessera_error *err)
{
        for (;;) {
                uint64_t copied;
                bool at_end;
                int r = copy_data(fd, "the log", STDOUT_FILENO, "standard output", UINT64_MAX, &copied, &at_end, err);
                if (r < 0)
                        return r;
                /* Cut short under us (truncated rather than rotated): start over from its beginning. */
                struct stat st;
                off_t pos = lseek(fd, 0, SEEK_CUR);
                if (pos <= 0 || fstat(fd, &st) < 0 || st.st_size >= pos || lseek(fd, 0, SEEK_SET) < 0)
                        return 0;
        }
}

static int follower_drain(struct log_follower *f)
{
        return f->fd >= 0 ? drain_log(f->fd, &f->err) : 0;
}

/*
 * Asks tesserad for the log again.  When its current file is another one now
 * (rotated), finishes the old one and goes on with the new.  1: moved, 0: the
 * same file, < 0: an error (-ENOENT while there is no file).
 */
static int follower_reopen(struct log_follower *f)
{
        int r, fds[LOG_MAX_FILES];
        size_t n = ELEMENTSOF(fds);
        if (!f->asker && (r = tessera_client_connect(f->cli->socket_path, &f->asker, &f->err)) < 0)
                return r == -ECONNREFUSED ? -ENOENT : r; /* tesserad restarting: ask again later */
        json_auto_t *app = NULL;
        r = call_for_fds(f->asker, "logs", f->request, &app, fds, &n, &f->err);
        if (connection_lost(r)) {
                /* tesserad restarting: ask again later, on a new connection. */
                tessera_client_free(TAKE_PTR(f->asker));
                return -ENOENT;
        }
        if (r < 0)
                return r;
        if (n == 0)
                return -ENOENT;
        /* Only the current file matters here: the one we read is either it or has become the older half. */
        close_all(fds, n - 1);
        _cleanup_close_ int fd = fds[n - 1];
        struct stat st;
        if (fstat(fd, &st) < 0)
                return tessera_error_set(&f->err, errno, "cannot stat the log: %s", strerror(errno));
        if (f->fd >= 0 && st.st_dev == f->dev && st.st_ino == f->ino)
                return 0;
        if ((r = follower_drain(f)) < 0)
                return r;
        if (f->fd >= 0) {
                (void)inotify_rm_watch(f->inotify, f->watch);
                close(f->fd);
        }
        f->fd = TAKE_FD(fd);
        if ((r = follower_watch(f)) < 0 || (r = follower_drain(f)) < 0)
                return r;
        return 1;
}

/* Reads the queued inotify events; *moved when the current file was renamed, removed or relinked. */
static int follower_events(struct log_follower *f, bool *moved)
{
        char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
        for (;;) {
                ssize_t n = read(f->inotify, buf, sizeof(buf));
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && errno == EAGAIN)
                        return 0;
                if (n < 0)
                        return tessera_error_set(&f->err, errno, "cannot read inotify events: %s", strerror(errno));
                for (char *p = buf; p < buf + n;) {
                        const struct inotify_event *ev = (const struct inotify_event *)p;
                        if (ev->wd == f->watch && (ev->mask & (IN_MOVE_SELF | IN_DELETE_SELF | IN_ATTRIB)))
                                *moved = true;
                        p += sizeof(*ev) + ev->len;
                }
        }
}

/* How long to wait before asking for the log again: never while we have it, sooner at first when we do not. */
static int next_retry(int r, int retry_ms)
{
        if (r != -ENOENT)
                return -1;
        return retry_ms < 0 ? LOG_RETRY_MS : MIN(retry_ms * 2, LOG_RETRY_MAX_MS);
}

/* The answer to the `wait` pending on the shell's connection came: 1 when it says the application ended. */
static int follower_wait_answered(struct log_follower *f, struct cli *cli)
{
        json_auto_t *ended = NULL;
        int r = receive_answer(cli->client, "wait", &ended, &f->err);
        if (!connection_lost(r))
                return r < 0 ? r : 1;
        /* tesserad restarted; the application and its log go on: ask again. */
        if ((r = reconnect(cli, -1, NULL, &f->err)) != 0 ||
            (r = send_request(cli->client, "wait", f->request, NULL, 0, &f->err)) < 0)
                return r;
        return 0;
}

/* Follows the log until the `wait` pending on the shell's connection answers. */
static int follow_until_ended(struct log_follower *f, struct cli *cli)
{
        /* A rotation between tesserad's open and our watch made no event: look once. */
        int r = follower_reopen(f);
        if (r < 0 && r != -ENOENT)
                return r;
        int retry_ms = next_retry(r, -1);
        for (;;) {
                struct pollfd p[2] = {{.fd = f->inotify, .events = POLLIN},
                                      {.fd = tessera_client_fd(cli->client), .events = POLLIN}};
                int n = poll(p, ELEMENTSOF(p), retry_ms);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return tessera_error_set(&f->err, errno, "cannot poll: %s", strerror(errno));
                bool moved = false;
                if ((p[0].revents & POLLIN) && ((r = follower_events(f, &moved)) < 0 || (r = follower_drain(f)) < 0))
                        return r;
                if (moved || (n == 0 && retry_ms >= 0)) {
                        r = follower_reopen(f);
                        if (r < 0 && r != -ENOENT)
                                return r;
                        retry_ms = next_retry(r, retry_ms);
                }
                if (p[1].revents && (r = follower_wait_answered(f, cli)) != 0)
                        return r < 0 ? r : 0;
        }
}

/*
 * The application has ended, but the supervisor may still be copying what its
 * pipe held into the log: take what comes until the file has been quiet a while.
 */
static int follow_to_quiet(struct log_follower *f)
{
        int r = follower_reopen(f);
        if (r < 0 && r != -ENOENT)
                return r;
        for (;;) {
                struct pollfd p = {.fd = f->inotify, .events = POLLIN};
                int n = poll(&p, 1, LOG_SETTLE_MS);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return follower_drain(f);
                bool moved = false;
                if ((r = follower_events(f, &moved)) < 0 || (r = follower_drain(f)) < 0)
                        return r;
                if (moved && (r = follower_reopen(f)) < 0 && r != -ENOENT)
                        return r;
        }
}

/* `fd` is the current file (or -1), already copied to its end. */
static int follow_log(struct cli *cli, json_t *request, const json_t *app, int fd)
{
        _cleanup_(log_follower_done) struct log_follower f = {
                .cli = cli, .request = request, .fd = fd, .inotify = -1, .watch = -1};
        int status;
        int r = app_exit_status(app, &status);
        if (r == 0 || r == -ESRCH)
                return 0; /* already ended: what is there is all there will be */
        f.inotify = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
        if (f.inotify < 0)
                return cli_fail("cannot create an inotify instance: %s", strerror(errno));
        if ((f.fd >= 0 && follower_watch(&f) < 0) || follower_drain(&f) < 0 ||
            send_request(cli->client, "wait", request, NULL, 0, &f.err) < 0 || follow_until_ended(&f, cli) < 0 ||
            follow_to_quiet(&f) < 0)
                return cli_fail("%s", f.err.msg);
        return 0;
}

static void close_logs(int (*fds)[LOG_MAX_FILES])
{
        close_all(*fds, LOG_MAX_FILES);
}

int cmd_logs(struct cli *cli, int argc, char **argv)
{
        static const struct option options[] = {
                {"follow", no_argument, NULL, 'f'},
                {0},
        };
        bool follow = false;
        int c, status;
        while ((c = cli_getopt(cli, argc, argv, options)) != -1) {
                if (c != 'f')
                        return cli_option_status(cli, c);
                follow = true;
        }
        const char *enclave, *app_name;
        if ((status = take_enclave_and_app(cli, argc, argv, &enclave, &app_name)) >= 0)
                return status;
        json_auto_t *request = json_pack("{s:s, s:s}", "name", enclave, "app", app_name);
        json_auto_t *app = NULL;
        _cleanup_(close_logs) int fds[LOG_MAX_FILES] = {-1, -1, -1, -1};
        size_t n = ELEMENTSOF(fds);
        struct tessera_error err = {0};
        if (!request)
                return cli_out_of_memory();
        if (ensure_connected(cli, &err) < 0 || call_for_fds(cli->client, "logs", request, &app, fds, &n, &err) < 0)
                return cli_fail("%s", err.msg);
        for (size_t i = 0; i < n; i++)
                if (drain_log(fds[i], &err) < 0)
                        return cli_fail("%s", err.msg);
        if (!follow)
                return 0;
        int current = n > 0 ? TAKE_FD(fds[n - 1]) : -1;
        return follow_log(cli, request, app, current);
}

/* ---- console ---- */

struct raw_terminal {
        int fd;
        bool active;
        struct termios saved;
};

static void raw_terminal_restore(struct raw_terminal *t)
{
        if (!t->active)
                return;
        (void)tcsetattr(t->fd, TCSADRAIN, &t->saved);
        t->active = false;
}

static int raw_terminal_enter(struct raw_terminal *t, int fd, struct tessera_error *err)
{
        if (tcgetattr(fd, &t->saved) < 0)
                return tessera_error_set(err, errno, "cannot read the terminal's settings: %s", strerror(errno));
        struct termios raw = t->saved;
        cfmakeraw(&raw);
        if (tcsetattr(fd, TCSADRAIN, &raw) < 0)
                return tessera_error_set(err, errno, "cannot put the terminal in raw mode: %s", strerror(errno));
        t->fd = fd;
        t->active = true;
        return 0;
}

/* The pty takes the size of the shell's terminal (ioctls on a master act on its slave). */
static void copy_window_size(int tty, int master)
{
        struct winsize ws;
        if (tty >= 0 && ioctl(tty, TIOCGWINSZ, &ws) == 0)
                (void)ioctl(master, TIOCSWINSZ, &ws);
}

enum step { STEP_GO_ON, STEP_DONE, STEP_FAILED };

struct console {
        const char *name;
        int master, sigfd;
        int tty;          /* the shell's terminal, for window sizes; -1 when none */
        bool interactive; /* stdin is a terminal: raw mode and the detach key */
        bool input_open;
        struct detach_scanner detach;
        char pending[CONSOLE_BUF + DETACH_COUNT]; /* read from stdin, not yet written to the master */
        size_t pending_len, pending_off;
        int status;
        struct tessera_error err;
};

static enum step console_done(struct console *con, int status)
{
        con->status = status;
        return STEP_DONE;
}

static enum step console_failed(struct console *con, int code, const char *what)
{
        tessera_error_set(&con->err, code, "%s: %s", what, strerror(code));
        return STEP_FAILED;
}

static enum step console_signals(struct console *con)
{
        int sig;
        while ((sig = next_signal(con->sigfd)) > 0) {
                if (sig != SIGWINCH)
                        return console_done(con, 128 + sig);
                copy_window_size(con->tty, con->master);
        }
        return STEP_GO_ON;
}

/* The pty's output to stdout; EIO once the shell inside and everything else on the slave have gone. */
static enum step console_output(struct console *con)
{
        char buf[CONSOLE_BUF];
        ssize_t n = read(con->master, buf, sizeof(buf));
        if (n > 0) {
                int r = write_all(STDOUT_FILENO, buf, (size_t)n);
                return r < 0 ? console_failed(con, -r, "cannot write to standard output") : STEP_GO_ON;
        }
        if (n == 0 || errno == EIO)
                return console_done(con, 0);
        if (errno == EINTR || errno == EAGAIN)
                return STEP_GO_ON;
        return console_failed(con, errno, "cannot read the console");
}

/* Scripted input has ended: the end-of-file character tells the shell inside (as ^D typed would). */
static void console_queue_eof(struct console *con)
{
        struct termios t;
        /* tcgetattr on a master reads its slave's settings, the ones the shell uses. */
        bool known = tcgetattr(con->master, &t) == 0 && t.c_cc[VEOF] != _POSIX_VDISABLE;
        con->pending[0] = known ? (char)t.c_cc[VEOF] : 0x04;
        con->pending_len = 1;
        con->pending_off = 0;
}

static enum step console_input(struct console *con)
{
        char buf[CONSOLE_BUF];
        ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
        if (n < 0)
                return errno == EINTR || errno == EAGAIN ? STEP_GO_ON
                                                         : console_failed(con, errno, "cannot read standard input");
        con->pending_off = 0;
        if (n == 0) {
                con->input_open = false;
                /* A terminal at end of file has hung up; nobody is left to talk to. */
                if (con->interactive)
                        return console_done(con, 0);
                console_queue_eof(con);
                return STEP_GO_ON;
        }
        if (!con->interactive) {
                memcpy(con->pending, buf, (size_t)n);
                con->pending_len = (size_t)n;
                return STEP_GO_ON;
        }
        if (!detach_scan(&con->detach, buf, (size_t)n, con->pending, &con->pending_len))
                return STEP_GO_ON;
        /* What was typed before the detach still goes in. */
        (void)write_all(con->master, con->pending, con->pending_len);
        fprintf(stderr, "\r\n[detached from %s]\r\n", con->name);
        return console_done(con, 0);
}

static enum step console_feed(struct console *con)
{
        size_t len = con->pending_len - con->pending_off;
        ssize_t n = write(con->master, con->pending + con->pending_off, MIN(len, (size_t)MASTER_WRITE_CHUNK));
        if (n < 0 && errno == EIO) {
                /* The shell has gone; its end shows on the reading side. */
                con->pending_off = con->pending_len = 0;
                return STEP_GO_ON;
        }
        if (n < 0)
                return errno == EINTR || errno == EAGAIN ? STEP_GO_ON
                                                         : console_failed(con, errno, "cannot write to the console");
        con->pending_off += (size_t)n;
        if (con->pending_off == con->pending_len)
                con->pending_off = con->pending_len = 0;
        return STEP_GO_ON;
}

/* Copies both ways until the shell inside ends, the user detaches, or a signal comes. */
static enum step console_relay(struct console *con)
{
        for (;;) {
                bool has_pending = con->pending_off < con->pending_len;
                struct pollfd p[3] = {
                        {.fd = con->input_open && !has_pending ? STDIN_FILENO : -1, .events = POLLIN},
                        {.fd = con->master, .events = POLLIN | (has_pending ? POLLOUT : 0)},
                        {.fd = con->sigfd, .events = POLLIN},
                };
                /*
                 * After scripted input ends, end-of-file is said again whenever the console has
                 * been quiet a while: a ^D that arrives while the shell switches its terminal
                 * modes (at start, between commands) can be lost.
                 */
                int timeout = con->input_open || con->interactive ? -1 : CONSOLE_EOF_REPEAT_MS;
                int n = poll(p, ELEMENTSOF(p), timeout);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return console_failed(con, errno, "cannot poll");
                if (n == 0 && !has_pending)
                        console_queue_eof(con);
                enum step s = STEP_GO_ON;
                if (p[2].revents & POLLIN)
                        s = console_signals(con);
                /* Output first: a closing shell's last words come before its hang-up. */
                if (s == STEP_GO_ON && (p[1].revents & (POLLIN | POLLHUP | POLLERR)))
                        s = console_output(con);
                if (s == STEP_GO_ON && (p[1].revents & POLLOUT))
                        s = console_feed(con);
                if (s == STEP_GO_ON && (p[0].revents & (POLLIN | POLLHUP | POLLERR)))
                        s = console_input(con);
                if (s != STEP_GO_ON)
                        return s;
        }
}

static int run_console(const char *name, int master)
{
        static const int caught[] = {SIGWINCH, SIGINT, SIGTERM, SIGHUP, SIGQUIT};
        _cleanup_(raw_terminal_restore) struct raw_terminal term = {.fd = -1};
        _cleanup_close_ int sigfd = -1;
        struct console con = {.name = name, .master = master, .input_open = true};
        con.interactive = isatty(STDIN_FILENO);
        con.tty = con.interactive ? STDIN_FILENO : isatty(STDOUT_FILENO) ? STDOUT_FILENO : -1;
        /* A closed reader of our output must end the relay through EPIPE, with the terminal restored. */
        signal(SIGPIPE, SIG_IGN);
        sigfd = con.sigfd = catch_signals(caught, ELEMENTSOF(caught), &con.err);
        if (sigfd < 0)
                return cli_fail("%s", con.err.msg);
        copy_window_size(con.tty, master);
        if (con.interactive) {
                fprintf(stderr, "[connected to %s; Ctrl-] three times to detach]\n", name);
                if (raw_terminal_enter(&term, STDIN_FILENO, &con.err) < 0)
                        return cli_fail("%s", con.err.msg);
        }
        enum step s = console_relay(&con);
        raw_terminal_restore(&term);
        if (s == STEP_FAILED)
                return cli_fail("console of %s: %s", name, con.err.msg);
        return con.status;
}

int cmd_console(struct cli *cli, int argc, char **argv)
{
        int status = cli_parse_plain(cli, argc, argv, 1);
        if (status >= 0)
                return status;
        const char *name = argv[optind];
        if (check_enclave_name(cli, name) != 0)
                return EXIT_FAILURE;
        json_auto_t *request = json_pack("{s:s}", "name", name);
        json_auto_t *shell = NULL;
        const char *term = getenv("TERM");
        _cleanup_close_ int master = -1;
        struct tessera_error err = {0};
        /* The shell inside speaks to this terminal: it needs its type. */
        if (!request || (term && *term && json_object_set_new(request, "term", json_string(term)) < 0))
                return cli_out_of_memory();
        if (ensure_connected(cli, &err) < 0 || call_for_fd(cli->client, "console", request, &shell, &master, &err) < 0)
                return cli_fail("%s", err.msg);
        return run_console(name, master);
}

/* ---- cat and write ---- */

/* NAME PATH [--max SIZE]; -1 to go on, else the exit status. */
static int parse_file_args(struct cli *cli, int argc, char **argv, json_t **request, uint64_t *max)
{
        static const struct option options[] = {
                {"max", required_argument, NULL, 'm'},
                {0},
        };
        int c, status;
        *max = DEFAULT_MAX_SIZE;
        while ((c = cli_getopt(cli, argc, argv, options)) != -1) {
                if (c != 'm')
                        return cli_option_status(cli, c);
                if (parse_size(optarg, max) < 0)
                        return cli_usage(cli, "--max: '%s' is not a size (use 64M, 1G, ...)", optarg);
        }
        if ((status = want_operands(cli, argc, argv, (const char *const[]){"NAME", "PATH"}, 2)) >= 0)
                return status;
        if (check_enclave_name(cli, argv[optind]) != 0)
                return EXIT_FAILURE;
        if (!*argv[optind + 1])
                return cli_usage(cli, "PATH is empty");
        *request = json_pack("{s:s, s:s}", "name", argv[optind], "path", argv[optind + 1]);
        return *request ? -1 : cli_out_of_memory();
}

static int open_in_enclave(struct cli *cli, const char *op, json_t *request, json_t **result, int *fd)
{
        struct tessera_error err = {0};
        if (ensure_connected(cli, &err) < 0 || call_for_fd(cli->client, op, request, result, fd, &err) < 0)
                return cli_fail("%s", err.msg);
        return 0;
}

int cmd_cat(struct cli *cli, int argc, char **argv)
{
        json_auto_t *request = NULL, *result = NULL;
        uint64_t max, copied;
        int status = parse_file_args(cli, argc, argv, &request, &max);
        if (status >= 0)
                return status;
        const char *path = argv[optind + 1];
        char max_text[NUM_BUF];
        format_size(max, max_text, sizeof(max_text));
        _cleanup_close_ int fd = -1;
        if ((status = open_in_enclave(cli, "cat", request, &result, &fd)) != 0)
                return status;
        struct stat st;
        if (fstat(fd, &st) < 0)
                return cli_fail("%s: cannot stat: %s", path, strerror(errno));
        if (!S_ISREG(st.st_mode))
                return cli_fail("%s: not a regular file", path);
        if ((uint64_t)st.st_size > max)
                return cli_fail("%s: file is larger than %s (use --max)", path, max_text);
        struct tessera_error err = {0};
        bool at_end, more = false;
        if (copy_data(fd, path, STDOUT_FILENO, "standard output", max, &copied, &at_end, &err) < 0 ||
            (!at_end && has_more(fd, path, &more, &err) < 0))
                return cli_fail("%s", err.msg);
        if (more)
                return cli_fail("%s: file grew past %s while being read (use --max)", path, max_text);
        return 0;
}

/* Input that is a regular file says its size: refuse it before tesserad truncates the target. */
static bool input_known_too_large(uint64_t max)
{
        struct stat st;
        if (fstat(STDIN_FILENO, &st) < 0 || !S_ISREG(st.st_mode))
                return false;
        off_t pos = lseek(STDIN_FILENO, 0, SEEK_CUR);
        uint64_t left = (uint64_t)st.st_size - (pos > 0 && pos <= st.st_size ? (uint64_t)pos : 0);
        return left > max;
}

int cmd_write(struct cli *cli, int argc, char **argv)
{
        json_auto_t *request = NULL, *result = NULL;
        uint64_t max, copied;
        int status = parse_file_args(cli, argc, argv, &request, &max);
        if (status >= 0)
                return status;
        const char *path = argv[optind + 1];
        char max_text[NUM_BUF];
        format_size(max, max_text, sizeof(max_text));
        if (input_known_too_large(max))
                return cli_fail("input is larger than %s (use --max); %s is unchanged", max_text, path);
        _cleanup_close_ int fd = -1;
        if ((status = open_in_enclave(cli, "write", request, &result, &fd)) != 0)
                return status;
        struct tessera_error err = {0};
        bool at_end, more = false;
        if (copy_data(STDIN_FILENO, "standard input", fd, path, max, &copied, &at_end, &err) < 0 ||
            (!at_end && has_more(STDIN_FILENO, "standard input", &more, &err) < 0))
                return cli_fail("%s", err.msg);
        if (more)
                return cli_fail("input is larger than %s (use --max); %s holds only its first %s", max_text, path,
                                max_text);
        /* Where the data lands on a file system that reports late (NFS), close says so. */
        if (close(TAKE_FD(fd)) < 0)
                return cli_fail("cannot write %s: %s", path, strerror(errno));
        if (cli->json)
                return cli_print_json(result);
        return 0;
}
