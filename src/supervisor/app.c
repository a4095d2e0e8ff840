/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Applications: `launch` forks a child that waits (tesserad moves it into
 * its cgroup leaf meanwhile), `start` lets it exec and answers once the exec
 * is done or has failed, the supervisor (PID 1, so the parent of everything
 * left over) reaps it and keeps its exit status and rusage until tesserad
 * `forget`s the record, so nothing is lost while tesserad is down.  Records
 * are found by name; there are at most MAX_APPS of them.  `stem` forks a
 * child ahead of any launch (stem.c) and records it under a name of its own;
 * a launch that names it hands it the plan instead of forking, and the
 * application's record takes the stem's place.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/pidfd.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>

#include "supervisor.h"
#include "util.h"

#define EXEC_WAIT_MS 2000 /* how long `start` waits for the exec before it gives up on the child */
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

static const struct string_limits argv_limits = {
        .min_count = 1, .max_count = 256, .max_each = 4096, .max_total = 128 * 1024};
static const struct string_limits env_limits = {
        .min_count = 0, .max_count = 1024, .max_each = 32 * 1024, .max_total = 128 * 1024, .key_value = true};

static const char *const state_names[] = {
        [APP_STARTING] = "starting",
        [APP_RUNNING] = "running",
        [APP_EXITED] = "exited",
        [APP_STEM] = "stem",
};

/* ---- records ---- */

static struct app *app_find(struct supervisor *s, const char *name)
{
        for (size_t i = 0; i < s->n_apps; i++)
                if (STREQ(s->apps[i]->name, name))
                        return s->apps[i];
        return NULL;
}

static struct app *app_find_pid(struct supervisor *s, pid_t pid)
{
        for (size_t i = 0; i < s->n_apps; i++)
                if (s->apps[i]->pid == pid && s->apps[i]->state != APP_EXITED)
                        return s->apps[i];
        return NULL;
}

static int app_lookup(struct supervisor *s, struct call *c, struct app **ret, struct tessera_error *err)
{
        const char *name;
        int r = req_app(c->request, &name, err);
        if (r < 0)
                return r;
        *ret = app_find(s, name);
        if (!*ret)
                return tessera_error_field(err, ENOENT, "app", "no application '%s' in enclave '%s'", name, s->enclave);
        return 0;
}

static struct app *app_new(const char *name)
{
        struct app *a = calloc(1, sizeof(*a));
        if (!a)
                return NULL;
        snprintf(a->name, sizeof(a->name), "%s", name);
        a->go_fd = a->error_fd = a->spec_fd = -1;
        a->log = (struct log_relay){.pipe_fd = -1, .dir_fd = -1, .file_fd = -1};
        a->exit_code = a->signal = -1;
        return a;
}

static void app_close_start_pipes(struct app *a)
{
        if (a->go_fd >= 0)
                close(a->go_fd);
        if (a->error_fd >= 0)
                close(a->error_fd);
        a->go_fd = a->error_fd = -1;
}

static void app_free(struct app *a)
{
        if (!a)
                return;
        app_close_start_pipes(a);
        closep(&a->spec_fd);
        log_drain(&a->log, a->name);
        log_close(&a->log, a->name);
        free(a->error);
        free(a);
}

static void app_freep(struct app **a)
{
        app_free(*a);
}

static void app_drop(struct supervisor *s, struct app *a)
{
        for (size_t i = 0; i < s->n_apps; i++)
                if (s->apps[i] == a) {
                        s->apps[i] = s->apps[--s->n_apps];
                        break;
                }
        app_free(a);
}

/* A stem's record, alive (APP_STEM) or dead (APP_EXITED), until a launch takes it or it is forgotten. */
static bool app_is_stem(const struct app *a)
{
        return a->spec_fd >= 0;
}

static void app_set_error(struct app *a, const char *field, const char *msg)
{
        if (a->error)
                return; /* the first reason is the one that counts */
        a->error = strdup(msg);
        snprintf(a->error_field, sizeof(a->error_field), "%s", field);
}

size_t apps_count_alive(const struct supervisor *s)
{
        size_t n = 0;
        for (size_t i = 0; i < s->n_apps; i++)
                n += s->apps[i]->state != APP_EXITED;
        return n;
}

/* ---- exits ---- */

static uint64_t timeval_ns(struct timeval tv)
{
        return (uint64_t)tv.tv_sec * 1000000000ULL + (uint64_t)tv.tv_usec * 1000ULL;
}

/* A child that never reached `start`: keep what it wrote on the error pipe (it is dead, so the read cannot block). */
static void app_collect_start_error(struct app *a)
{
        if (a->error_fd < 0)
                return;
        struct exec_error e;
        ssize_t n;
        do
                n = read(a->error_fd, &e, sizeof(e));
        while (n < 0 && errno == EINTR);
        if (n == (ssize_t)sizeof(e)) {
                e.msg[sizeof(e.msg) - 1] = '\0';
                e.field[sizeof(e.field) - 1] = '\0';
                app_set_error(a, e.field, e.msg);
        }
}

static void app_record_exit(struct app *a, int status, const struct rusage *ru)
{
        if (a->state == APP_STARTING) {
                app_collect_start_error(a);
                app_set_error(a, "app", "ended before it was started");
        }
        app_close_start_pipes(a);
        a->state = APP_EXITED;
        a->start_deadline_ns = 0;
        if (WIFEXITED(status)) {
                a->exit_code = WEXITSTATUS(status);
                a->signal = -1;
        } else {
                a->exit_code = -1;
                a->signal = WIFSIGNALED(status) ? WTERMSIG(status) : -1;
        }
        a->cpu_ns = timeval_ns(ru->ru_utime) + timeval_ns(ru->ru_stime);
        a->peak_memory = (uint64_t)ru->ru_maxrss * 1024;
        /* whatever it wrote before it ended is in the file before anyone sees it ended */
        log_drain(&a->log, a->name);
}

void apps_reap(struct supervisor *s)
{
        for (;;) {
                int status;
                struct rusage ru;
                pid_t pid = wait4(-1, &status, WNOHANG, &ru);
                if (pid < 0 && errno == EINTR)
                        continue;
                if (pid <= 0)
                        return;
                /* anything else is an orphan re-parented to us: reaping it is all there is to do */
                struct app *a = app_find_pid(s, pid);
                if (a)
                        app_record_exit(a, status, &ru);
        }
}

/* For a child known to be ending by itself (it wrote its error, or closed its pipes): wait for it. */
static void app_reap_now(struct app *a)
{
        int status;
        struct rusage ru;
        pid_t pid;
        do
                pid = wait4(a->pid, &status, 0, &ru);
        while (pid < 0 && errno == EINTR);
        if (pid == a->pid)
                app_record_exit(a, status, &ru);
}

/* ---- start deadlines ---- */

void apps_enforce_start_deadlines(struct supervisor *s)
{
        uint64_t now = now_ns();
        for (size_t i = 0; i < s->n_apps; i++) {
                struct app *a = s->apps[i];
                if (a->state != APP_STARTING || a->start_deadline_ns == 0 || now < a->start_deadline_ns)
                        continue;
                char msg[128];
                snprintf(msg, sizeof(msg), "not started within %llu ms of its launch; killed",
                         (unsigned long long)(s->start_timeout_ns / 1000000ULL));
                say("application '%s' (pid %d) %s", a->name, (int)a->pid, msg);
                app_set_error(a, "app", msg);
                (void)kill(a->pid, SIGKILL);
                a->start_deadline_ns = 0;
                /* so a `start` before the reaper sees it die is refused rather than let go */
                close(a->go_fd);
                a->go_fd = -1;
        }
}

int apps_poll_timeout_ms(const struct supervisor *s)
{
        uint64_t next = 0;
        for (size_t i = 0; i < s->n_apps; i++) {
                uint64_t d = s->apps[i]->start_deadline_ns;
                if (d && (!next || d < next))
                        next = d;
        }
        if (!next)
                return -1;
        uint64_t now = now_ns();
        if (next <= now)
                return 0;
        uint64_t ms = (next - now + 999999ULL) / 1000000ULL;
        return ms > INT32_MAX ? INT32_MAX : (int)ms;
}

/* ---- launch ---- */

struct launch_request {
        const char *app;
        const char *stem;  /* the stem to hand the plan to, or NULL to fork */
        const char *stdio; /* "pass", "log", or NULL with a tty */
        bool tty;
        char cpus_desc[256];
        struct launch_plan plan;
};

static void launch_request_done(struct launch_request *lr)
{
        free(lr->plan.argv);
        free(lr->plan.envp);
        free(lr->plan.groups);
        if (lr->plan.cpus)
                CPU_FREE(lr->plan.cpus);
}

static const char *env_path(char **envp)
{
        for (char **e = envp; *e; e++)
                if (strncmp(*e, "PATH=", 5) == 0)
                        return *e + 5;
        return DEFAULT_PATH;
}

static int launch_parse_ids(struct supervisor *s, json_t *req, struct launch_plan *p, struct tessera_error *err)
{
        uint32_t uid, gid;
        int r = req_id(req, "uid", &uid, err);
        if (r >= 0)
                r = req_id(req, "gid", &gid, err);
        if (r >= 0)
                r = req_ids(req, "groups", 256, &p->groups, &p->n_groups, err);
        if (r < 0)
                return r;
        if (p->n_groups > 0 && s->setgroups_denied)
                return tessera_error_field(err, EPERM, "groups",
                                           "groups: this enclave's user namespace cannot set supplementary groups "
                                           "(setgroups is denied); give none");
        p->uid = uid;
        p->gid = gid;
        p->set_ids = uid != getuid() || gid != getgid() || p->n_groups > 0;
        p->setgroups_denied = s->setgroups_denied;
        return 0;
}

static int launch_parse_stdio(json_t *req, struct launch_request *lr, struct tessera_error *err)
{
        int r = req_bool(req, "tty", false, &lr->tty, err);
        if (r < 0)
                return r;
        r = req_string(req, "stdio", !lr->tty, 8, &lr->stdio, err);
        if (r < 0)
                return r;
        if (lr->stdio && !STREQ(lr->stdio, "pass") && !STREQ(lr->stdio, "log"))
                return tessera_error_field(err, EINVAL, "stdio", "stdio: `%s` is neither \"pass\" nor \"log\"",
                                           lr->stdio);
        return 0;
}

static int launch_parse(struct supervisor *s, json_t *req, struct launch_request *lr, struct tessera_error *err)
{
        struct launch_plan *p = &lr->plan;
        size_t n;
        int r = req_app(req, &lr->app, err);
        if (r >= 0)
                r = req_name(req, "stem", false, &lr->stem, err);
        if (r >= 0)
                r = req_strings(req, "argv", &argv_limits, &p->argv, &n, err);
        if (r >= 0 && p->argv[0][0] == '\0')
                r = tessera_error_field(err, EINVAL, "argv", "argv[0]: the command is empty");
        if (r >= 0)
                r = req_strings(req, "env", &env_limits, &p->envp, &n, err);
        if (r >= 0)
                r = req_absolute_path(req, "cwd", false, &p->cwd, err);
        if (r >= 0)
                r = launch_parse_ids(s, req, p, err);
        if (r >= 0)
                r = req_cpus(req, "cpus", &p->cpus, &p->cpus_size, lr->cpus_desc, sizeof(lr->cpus_desc), err);
        if (r >= 0)
                r = launch_parse_stdio(req, lr, err);
        if (r < 0)
                return r;
        if (!p->cwd)
                p->cwd = "/";
        p->path = env_path(p->envp);
        p->cpus_desc = lr->cpus_desc;
        p->nofile = s->nofile;
        return 0;
}

/* The descriptors that came with the request must be what `stdio` says. */
static int launch_check_fds(const struct call *c, const struct launch_request *lr, struct tessera_error *err)
{
        size_t want = !lr->stdio ? 0 : STREQ(lr->stdio, "pass") ? 3 : 1;
        if (c->n_fds_in == want)
                return 0;
        if (!lr->stdio)
                return tessera_error_field(err, EINVAL, "stdio",
                                           "stdio: none given with tty, so no descriptors may come (%zu came)",
                                           c->n_fds_in);
        return tessera_error_field(err, EINVAL, "stdio", "stdio \"%s\" needs exactly %zu descriptor%s (%s); %zu came",
                                   lr->stdio, want, want == 1 ? "" : "s",
                                   want == 1 ? "the log directory" : "stdin, stdout, stderr", c->n_fds_in);
}

/* A pty master of the enclave's devpts, unlocked, for the child to open its slave from. */
static int open_pty(struct tessera_error *err)
{
        _cleanup_close_ int master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
        if (master < 0)
                return tessera_error_field(err, errno, "tty", "cannot open /dev/ptmx in the enclave: %s",
                                           strerror(errno));
        int unlock = 0;
        if (ioctl(master, TIOCSPTLCK, &unlock) < 0)
                return tessera_error_field(err, errno, "tty", "cannot unlock the pty: %s", strerror(errno));
        return TAKE_FD(master);
}

/* Descriptors the supervisor holds across the fork; the child's ends are closed after it. */
struct launch_fds {
        int master, null, log_write;
        int go[2], error[2];
};

static void launch_fds_done(struct launch_fds *f)
{
        int *all[] = {&f->master, &f->null, &f->log_write, &f->go[0], &f->go[1], &f->error[0], &f->error[1]};
        for (size_t i = 0; i < ELEMENTSOF(all); i++)
                closep(all[i]);
}

static int launch_prepare_stdio(struct call *c, struct launch_request *lr, struct app *a, struct launch_fds *f,
                                struct tessera_error *err)
{
        struct launch_plan *p = &lr->plan;
        p->tty_master = -1;
        if (lr->tty) {
                /* descriptors that came with a stdio mode are not used: the pty is the application's stdio */
                f->master = open_pty(err);
                if (f->master < 0)
                        return f->master;
                p->tty_master = f->master;
                return 0;
        }
        if (STREQ(lr->stdio, "pass")) {
                for (int i = 0; i < 3; i++)
                        p->stdio[i] = c->fds_in[i];
                return 0;
        }
        int r = log_open(&a->log, c->fds_in[0], a->name, &f->log_write, err);
        if (r < 0)
                return r;
        f->null = open("/dev/null", O_RDONLY | O_NOCTTY | O_CLOEXEC);
        if (f->null < 0)
                return tessera_error_field(err, errno, "stdio", "cannot open /dev/null in the enclave: %s",
                                           strerror(errno));
        p->stdio[0] = f->null;
        p->stdio[1] = p->stdio[2] = f->log_write;
        return 0;
}

static void kill_and_reap(pid_t pid)
{
        (void)kill(pid, SIGKILL);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
                ;
}

static int stem_gone(const char *name, struct tessera_error *err)
{
        return tessera_error_field(err, ESRCH, "stem", "stem '%s' is gone", name);
}

/* The stem a launch names: alive and unused.  A dead one's record is dropped. */
static int launch_find_stem(struct supervisor *s, const char *name, struct app **ret, struct tessera_error *err)
{
        /* one killed from outside is seen dead now, rather than after the launch */
        apps_reap(s);
        struct app *a = app_find(s, name);
        if (!a)
                return tessera_error_field(err, ENOENT, "stem", "no stem '%s' in enclave '%s'", name, s->enclave);
        if (!app_is_stem(a))
                return tessera_error_field(err, EINVAL, "stem", "'%s' is an application (%s), not a stem", name,
                                           state_names[a->state]);
        if (a->state != APP_STEM) {
                app_drop(s, a);
                return stem_gone(name, err);
        }
        *ret = a;
        return 0;
}

/* Room for a new record named `name`; a stem being used gives its record (and its name) to the application. */
static int check_room(struct supervisor *s, const char *name, const struct app *stem, struct tessera_error *err)
{
        const struct app *same = app_find(s, name);
        if (same && same != stem)
                return tessera_error_field(err, EEXIST, "app", "%s '%s' exists already in enclave '%s'",
                                           app_is_stem(same) ? "stem" : "application", name, s->enclave);
        if (!stem && s->n_apps >= MAX_APPS)
                return tessera_error_field(err, ENOSPC, "app",
                                           "enclave '%s' keeps %d records (applications and stems) already; forget "
                                           "exited ones",
                                           s->enclave, MAX_APPS);
        return 0;
}

static int launch_fork(struct launch_request *lr, pid_t *ret_pid, struct tessera_error *err)
{
        pid_t pid = fork();
        if (pid < 0)
                return tessera_error_set(err, errno, "cannot fork application '%s': %s", lr->app, strerror(errno));
        if (pid == 0)
                app_child_run(&lr->plan);
        *ret_pid = pid;
        return 0;
}

/* The stem gets the plan; its record is dropped, the application's takes its place. */
static int launch_into_stem(struct supervisor *s, struct launch_request *lr, struct app *stem, pid_t *ret_pid,
                            struct tessera_error *err)
{
        int r = stem_send_plan(stem->spec_fd, &lr->plan, err);
        if (r == -EPIPE || r == -ECONNRESET) {
                /*
                 * Dead, yet the reaper did not see it: still exiting, or a zombie only a tracer sees until it lets
                 * go.  No wait here, then: unreaped, its pid stays ours, and the reaper takes it later, unrecorded.
                 */
                (void)kill(stem->pid, SIGKILL);
                app_drop(s, stem);
                return stem_gone(lr->stem, err);
        }
        if (r < 0)
                return r;
        *ret_pid = stem->pid;
        app_drop(s, stem);
        return 0;
}

/* The child that runs the plan: a new fork, or the stem given. */
static int launch_spawn(struct supervisor *s, struct launch_request *lr, struct app *stem, struct launch_fds *f,
                        pid_t *ret_pid, struct tessera_error *err)
{
        if (pipe2(f->go, O_CLOEXEC) < 0 || pipe2(f->error, O_CLOEXEC) < 0)
                return tessera_error_set(err, errno, "cannot create the start pipes: %s", strerror(errno));
        lr->plan.go_fd = f->go[0];
        lr->plan.error_fd = f->error[1];
        int r = stem ? launch_into_stem(s, lr, stem, ret_pid, err) : launch_fork(lr, ret_pid, err);
        if (r < 0)
                return r;
        /* the child's ends: the error pipe must read EOF once the exec closes the child's copy */
        closep(&f->go[0]);
        closep(&f->error[1]);
        closep(&f->log_write);
        closep(&f->null);
        f->go[0] = f->error[1] = f->log_write = f->null = -1;
        return 0;
}

/* {"ns_pid"} and a pidfd of the child, as launch and stem answer; without them the child is killed. */
static int reply_with_child(struct call *c, pid_t pid, const char *name, struct tessera_error *err)
{
        int pidfd = pidfd_open(pid, 0);
        int code = pidfd < 0 ? errno : ENOMEM;
        json_t *result = pidfd >= 0 ? json_pack("{s:i}", "ns_pid", (int)pid) : NULL;
        if (!result) {
                if (pidfd >= 0)
                        close(pidfd);
                kill_and_reap(pid);
                return tessera_error_set(err, code, "cannot hand out '%s': %s", name, strerror(code));
        }
        c->result = result;
        c->fds_out[c->n_fds_out++] = pidfd;
        return 0;
}

int op_launch(struct supervisor *s, struct call *c, struct tessera_error *err)
{
        _cleanup_(launch_request_done) struct launch_request lr = {0};
        struct app *stem = NULL;
        int r = launch_parse(s, c->request, &lr, err);
        if (r >= 0)
                r = launch_check_fds(c, &lr, err);
        if (r >= 0 && lr.stem)
                r = launch_find_stem(s, lr.stem, &stem, err);
        if (r >= 0)
                r = check_room(s, lr.app, stem, err);
        if (r < 0)
                return r;
        _cleanup_(app_freep) struct app *a = app_new(lr.app);
        if (!a)
                return tessera_error_set(err, ENOMEM, "out of memory");
        _cleanup_(launch_fds_done) struct launch_fds f = {-1, -1, -1, {-1, -1}, {-1, -1}};
        r = launch_prepare_stdio(c, &lr, a, &f, err);
        if (r < 0)
                return r;
        pid_t pid = -1;
        r = launch_spawn(s, &lr, stem, &f, &pid, err);
        if (r >= 0)
                r = reply_with_child(c, pid, lr.app, err);
        if (r < 0)
                return r;
        a->pid = pid;
        a->state = APP_STARTING;
        a->go_fd = TAKE_FD(f.go[1]);
        a->error_fd = TAKE_FD(f.error[0]);
        a->start_deadline_ns = now_ns() + s->start_timeout_ns;
        if (f.master >= 0)
                c->fds_out[c->n_fds_out++] = TAKE_FD(f.master);
        s->apps[s->n_apps++] = TAKE_PTR(a);
        return 0;
}

int op_stem(struct supervisor *s, struct call *c, struct tessera_error *err)
{
        const char *name;
        int r = req_app(c->request, &name, err);
        if (r >= 0)
                r = check_room(s, name, NULL, err);
        if (r < 0)
                return r;
        _cleanup_(app_freep) struct app *a = app_new(name);
        if (!a)
                return tessera_error_set(err, ENOMEM, "out of memory");
        pid_t pid = -1;
        r = stem_fork(&a->spec_fd, &pid, err);
        if (r >= 0)
                r = reply_with_child(c, pid, name, err);
        if (r < 0)
                return r;
        /* no start deadline: tesserad keeps its stems as long as it likes */
        a->pid = pid;
        a->state = APP_STEM;
        s->apps[s->n_apps++] = TAKE_PTR(a);
        return 0;
}

/* ---- start ---- */

/* 0 when the exec closed the pipe, 1 with a failure in *e, or a negative errno (-ETIMEDOUT). */
static int wait_for_exec(int error_fd, struct exec_error *e)
{
        struct pollfd pfd = {.fd = error_fd, .events = POLLIN};
        uint64_t deadline = now_ns() + EXEC_WAIT_MS * 1000000ULL;
        for (;;) {
                uint64_t now = now_ns();
                if (now >= deadline)
                        return -ETIMEDOUT;
                int n = poll(&pfd, 1, (int)((deadline - now) / 1000000ULL) + 1);
                if (n < 0 && errno != EINTR)
                        return -errno;
                if (n > 0)
                        break;
        }
        ssize_t got;
        do
                got = read(error_fd, e, sizeof(*e));
        while (got < 0 && errno == EINTR);
        if (got < 0)
                return -errno;
        if (got == 0)
                return 0;
        if ((size_t)got != sizeof(*e))
                return -EIO;
        e->msg[sizeof(e->msg) - 1] = '\0';
        e->field[sizeof(e->field) - 1] = '\0';
        return 1;
}

static int start_error_of_exited(const struct app *a, struct tessera_error *err)
{
        if (a->error)
                return tessera_error_field(err, ECHILD, a->error_field, "application '%s' %s", a->name, a->error);
        return tessera_error_field(err, ECHILD, "app", "application '%s' ended before it was started", a->name);
}

int op_start(struct supervisor *s, struct call *c, struct tessera_error *err)
{
        struct app *a;
        int r = app_lookup(s, c, &a, err);
        if (r < 0)
                return r;
        if (app_is_stem(a))
                return tessera_error_field(err, EINVAL, "app",
                                           "'%s' is a stem, not an application: launch one into it (\"stem\": \"%s\")",
                                           a->name, a->name);
        if (a->state == APP_RUNNING)
                return tessera_error_field(err, EALREADY, "app", "application '%s' has started already", a->name);
        if (a->state == APP_EXITED)
                return start_error_of_exited(a, err);
        if (a->go_fd < 0)
                return tessera_error_field(err, ECANCELED, "app", "application '%s' %s", a->name,
                                           a->error ? a->error : "is being killed");
        /* EPIPE (SIGPIPE is blocked) means it died waiting: its error pipe says why */
        bool released = write(a->go_fd, "g", 1) == 1;
        close(a->go_fd);
        a->go_fd = -1;
        a->start_deadline_ns = 0;
        struct exec_error e;
        r = wait_for_exec(a->error_fd, &e);
        close(a->error_fd);
        a->error_fd = -1;
        if (r == 0 && released) {
                a->state = APP_RUNNING;
                c->result = json_object();
                return c->result ? 0 : tessera_error_set(err, ENOMEM, "out of memory");
        }
        if (r == -ETIMEDOUT) {
                /* stuck before its exec (a hung file system?): the reaper records it once it dies */
                app_set_error(a, "app", "did not reach its exec within 2 s; killed");
                (void)kill(a->pid, SIGKILL);
                return tessera_error_field(err, ETIMEDOUT, "app", "application '%s' %s", a->name, a->error);
        }
        if (r == 1)
                app_set_error(a, e.field, e.msg);
        else if (r < 0)
                app_set_error(a, "app", "sent an unreadable start status");
        /* it wrote its error (or closed its pipes by dying): it is ending by itself */
        app_reap_now(a);
        if (r == 1)
                return tessera_error_field(err, e.code, e.field, "%s", e.msg);
        return start_error_of_exited(a, err);
}

/* ---- collect, forget, apps, kill ---- */

static json_t *app_json(const struct app *a)
{
        json_t *o = json_pack("{s:s, s:i, s:s}", "app", a->name, "ns_pid", (int)a->pid, "state", state_names[a->state]);
        if (!o || a->state != APP_EXITED)
                return o;
        json_object_set_new(o, "exit_code", a->exit_code >= 0 ? json_integer(a->exit_code) : json_null());
        json_object_set_new(o, "signal", a->signal >= 0 ? json_integer(a->signal) : json_null());
        json_object_set_new(o, "cpu_ns", json_integer((json_int_t)a->cpu_ns));
        json_object_set_new(o, "peak_memory", json_integer((json_int_t)a->peak_memory));
        if (a->error)
                json_object_set_new(o, "error", json_string(a->error));
        return o;
}

int op_collect(struct supervisor *s, struct call *c, struct tessera_error *err)
{
        /* tesserad may ask as soon as its pidfd says the process ended, before our SIGCHLD is read */
        apps_reap(s);
        struct app *a;
        int r = app_lookup(s, c, &a, err);
        if (r < 0)
                return r;
        c->result = app_json(a);
        return c->result ? 0 : tessera_error_set(err, ENOMEM, "out of memory");
}

int op_forget(struct supervisor *s, struct call *c, struct tessera_error *err)
{
        apps_reap(s);
        struct app *a;
        int r = app_lookup(s, c, &a, err);
        if (r < 0)
                return r;
        if (a->state == APP_STEM || (a->state == APP_STARTING && a->go_fd >= 0)) {
                /* a stem, or never started: forgetting it ends it (it waits in a read, so SIGKILL ends it at once) */
                app_set_error(a, "app", "cancelled before the start");
                (void)kill(a->pid, SIGKILL);
                app_reap_now(a);
        }
        if (a->state != APP_EXITED)
                return tessera_error_field(err, EBUSY, "app", "application '%s' is %s; kill it first", a->name,
                                           a->state == APP_RUNNING ? "still running" : "being killed");
        app_drop(s, a);
        c->result = json_object();
        return c->result ? 0 : tessera_error_set(err, ENOMEM, "out of memory");
}

int op_apps(struct supervisor *s, struct call *c, struct tessera_error *err)
{
        apps_reap(s);
        json_t *list = json_array();
        for (size_t i = 0; list && i < s->n_apps; i++)
                if (json_array_append_new(list, app_json(s->apps[i])) < 0) {
                        json_decref(list);
                        list = NULL;
                }
        c->result = list;
        return list ? 0 : tessera_error_set(err, ENOMEM, "out of memory");
}

int op_kill(struct supervisor *s, struct call *c, struct tessera_error *err)
{
        apps_reap(s);
        struct app *a;
        int r = app_lookup(s, c, &a, err);
        if (r < 0)
                return r;
        json_t *sig = json_object_get(c->request, "signal");
        if (!json_is_integer(sig) || json_integer_value(sig) < 1 || json_integer_value(sig) > 64)
                return tessera_error_field(err, EINVAL, "signal", "signal: must be a number from 1 to 64");
        if (a->state == APP_EXITED)
                return tessera_error_field(err, ESRCH, "app", "application '%s' has exited already", a->name);
        if (a->state == APP_STEM) {
                /* nothing runs there yet: whatever the signal, the stem ends and its record goes */
                kill_and_reap(a->pid);
                app_drop(s, a);
                c->result = json_object();
                return c->result ? 0 : tessera_error_set(err, ENOMEM, "out of memory");
        }
        /* our own unreaped child: the pid cannot have been reused */
        if (kill(a->pid, (int)json_integer_value(sig)) < 0)
                return tessera_error_set(err, errno, "cannot signal application '%s': %s", a->name, strerror(errno));
        c->result = json_object();
        return c->result ? 0 : tessera_error_set(err, ENOMEM, "out of memory");
}
