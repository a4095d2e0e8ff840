/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>

#include "app.h"
#include "mover.h"
#include "node.h"
#include "proto.h"
#include "sandbox.h"

#define ARGV_MAX       256
#define ARG_MAX_LEN    4096
#define ARGS_MAX_TOTAL (128 * 1024)
#define ENV_MAX        256
#define PATH_MAX_LEN   4096

#define APP_COLUMNS                                                                                                    \
        "a.id, a.name, e.name, a.state, a.pid, a.ns_pid, a.argv, a.started, a.ended, a.exit_code, a.signal, "          \
        "a.cpu_ns, a.peak_memory, a.cause, a.start_time, e.owner_uid, a.enclave_id, COALESCE(a.leaf, a.name)"

static json_t *int_or_null(sqlite3_stmt *st, int col)
{
        return sqlite3_column_type(st, col) == SQLITE_NULL ? json_null() : json_integer(sqlite3_column_int64(st, col));
}

static json_t *app_row_json(struct tessera_node *n, sqlite3_stmt *st)
{
        const char *enclave = (const char *)sqlite3_column_text(st, 2);
        const char *name = (const char *)sqlite3_column_text(st, 1);
        json_t *argv = json_loads((const char *)sqlite3_column_text(st, 6), 0, NULL);
        json_t *status = json_null();
        if (sqlite3_column_type(st, 10) != SQLITE_NULL)
                status = json_integer(128 + sqlite3_column_int(st, 10));
        else if (sqlite3_column_type(st, 9) != SQLITE_NULL)
                status = json_integer(sqlite3_column_int(st, 9));
        char log[PATH_MAX + 128];
        snprintf(log, sizeof(log), "%s/%s/%s.log", n->log_dir, enclave, name);
        const char *cause = (const char *)sqlite3_column_text(st, 13);
        char cgroup[96];
        snprintf(cgroup, sizeof(cgroup), "apps/%s", (const char *)sqlite3_column_text(st, 17));
        return json_pack("{s:I, s:s, s:s, s:s, s:o, s:o, s:o, s:I, s:o, s:o, s:o, s:o, s:o, s:o, s:s, s:s?, s:s}", "id",
                         (json_int_t)sqlite3_column_int64(st, 0), "name", name, "enclave", enclave, "state",
                         (const char *)sqlite3_column_text(st, 3), "pid", int_or_null(st, 4), "ns_pid",
                         int_or_null(st, 5), "argv", argv ? argv : json_array(), "started",
                         (json_int_t)sqlite3_column_int64(st, 7), "ended", int_or_null(st, 8), "exit_code",
                         int_or_null(st, 9), "signal", int_or_null(st, 10), "status", status, "cpu_ns",
                         int_or_null(st, 11), "peak_memory", int_or_null(st, 12), "log", log, "cause", cause, "cgroup",
                         cgroup);
}

json_t *app_json_by_id(struct tessera_node *n, int64_t id, struct tessera_error *err)
{
        static const char sql[] = "SELECT " APP_COLUMNS " FROM apps a JOIN enclaves e ON a.enclave_id = e.id "
                                  "WHERE a.id = ?";
        sqlite3_stmt *st = store_stmt(n->store, sql, err);
        if (!st)
                return NULL;
        sqlite3_bind_int64(st, 1, id);
        json_t *o = NULL;
        if (sqlite3_step(st) == SQLITE_ROW)
                o = app_row_json(n, st);
        else
                tessera_error_set(err, ENOENT, "no application with id %lld", (long long)id);
        sqlite3_reset(st);
        return o;
}

/* The application NAME of enclave ENCLAVE_ID: its id, or -ENOENT. */
static int app_find(struct tessera_node *n, const struct enclave *e, const char *app, int64_t *ret_id,
                    struct tessera_error *err)
{
        static const char sql[] = "SELECT id FROM apps WHERE enclave_id = ? AND name = ?";
        if (!app || !name_is_valid(app))
                return tessera_error_field(err, EINVAL, "app", "app: '%s' is not an application name", app ? app : "");
        sqlite3_stmt *st = store_stmt(n->store, sql, err);
        if (!st)
                return -EIO;
        sqlite3_bind_int64(st, 1, e->rec.id);
        sqlite3_bind_text(st, 2, app, -1, SQLITE_STATIC);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
                *ret_id = sqlite3_column_int64(st, 0);
        sqlite3_reset(st);
        if (rc != SQLITE_ROW)
                return tessera_error_field(err, ENOENT, "app", "enclave '%s' has no application '%s'", e->rec.name,
                                           app);
        return 0;
}

static int load_running(struct tessera_node *n, uid_t caller, json_t *req, struct enclave *e, struct tessera_error *err)
{
        int r = enclave_load(n, caller, json_string_value(json_object_get(req, "name")), e, err);
        if (r < 0)
                return r;
        if (!STREQ(e->rec.state, "running"))
                return tessera_error_set(err, EHOSTDOWN, "enclave '%s' is %s", e->rec.name, e->rec.state);
        if (!n->cg)
                return tessera_error_set(err, EOPNOTSUPP, "enclave '%s' is ledger-only: nothing runs in it",
                                         e->rec.name);
        return 0;
}

/* ---- launch ---- */

static int check_strings(json_t *a, const char *field, size_t min, size_t max, bool env, struct tessera_error *err)
{
        if (!json_is_array(a) || json_array_size(a) < min || json_array_size(a) > max)
                return tessera_error_field(err, EINVAL, field, "%s: a list of %zu to %zu strings is required", field,
                                           min, max);
        size_t i, total = 0;
        json_t *v;
        json_array_foreach(a, i, v)
        {
                const char *s = json_string_value(v);
                if (!s || strlen(s) > ARG_MAX_LEN)
                        return tessera_error_field(err, EINVAL, field,
                                                   "%s: item %zu is not a string of at most %d "
                                                   "bytes",
                                                   field, i, ARG_MAX_LEN);
                if (env && (!strchr(s, '=') || s[0] == '='))
                        return tessera_error_field(err, EINVAL, field, "%s: \"%s\" is not KEY=VALUE", field, s);
                total += strlen(s) + 1;
        }
        if (total > ARGS_MAX_TOTAL)
                return tessera_error_field(err, E2BIG, field, "%s: more than %d bytes in all", field, ARGS_MAX_TOTAL);
        return 0;
}

/*
 * Who the application runs as.  Without a user namespace, enclave root is
 * host root: a tenant's applications then run as the tenant, whatever it asks.
 */
static int app_identity(struct tessera_node *n, const struct enclave *e, uid_t caller, const char *user, uid_t *ret_uid,
                        gid_t *ret_gid, struct tessera_error *err)
{
        uid_t uid = 0;
        gid_t gid = 0;
        if (user && *user) {
                char buf[128];
                snprintf(buf, sizeof(buf), "%s", user);
                char *colon = strchr(buf, ':');
                if (colon)
                        *colon = '\0';
                uint64_t v;
                if (parse_uint64(buf, UINT32_MAX - 1, &v) == 0) {
                        uid = (uid_t)v;
                        gid = (gid_t)v;
                } else {
                        struct passwd pw, *res = NULL;
                        char tmp[1024];
                        if (getpwnam_r(buf, &pw, tmp, sizeof(tmp), &res) != 0 || !res)
                                return tessera_error_field(err, ENOENT, "user", "user: no user named '%s'", buf);
                        uid = pw.pw_uid;
                        gid = pw.pw_gid;
                }
                if (colon && (parse_uint64(colon + 1, UINT32_MAX - 1, &v) < 0 || !(gid = (gid_t)v, 1)))
                        return tessera_error_field(err, EINVAL, "user", "user: \"%s\" is not UID[:GID]", user);
        }
        if (e->spec.namespaces & SPEC_NS_USER) {
                /* the enclave's user namespace maps only its root, to the owner */
                if (uid != 0 || gid != 0)
                        return tessera_error_field(err, EINVAL, "user",
                                                   "user: enclave '%s' maps only uid 0 (its owner) in its user "
                                                   "namespace",
                                                   e->rec.name);
        } else if (caller != 0) {
                if (user && *user && uid != caller)
                        return tessera_error_field(err, EPERM, "user",
                                                   "user: a tenant's applications run as the tenant (uid %u) in an "
                                                   "enclave without a user namespace",
                                                   (unsigned)caller);
                uid = caller;
                struct passwd pw, *res = NULL;
                char tmp[1024];
                gid = (getpwuid_r(caller, &pw, tmp, sizeof(tmp), &res) == 0 && res) ? pw.pw_gid : caller;
        }
        *ret_uid = uid;
        *ret_gid = gid;
        return 0;
}

static int check_cpus(struct tessera_node *n, const struct enclave *e, const char *cpus, struct tessera_error *err)
{
        if (!cpus)
                return 0;
        hwloc_bitmap_t want = hwloc_bitmap_alloc(), have = hwloc_bitmap_alloc();
        int r = 0;
        if (hwloc_bitmap_list_sscanf(want, cpus) < 0 || hwloc_bitmap_iszero(want))
                r = tessera_error_field(err, EINVAL, "cpus", "cpus: \"%s\" is not a core list", cpus);
        else if ((r = ledger_cpus_of(n->store, e->rec.id, have, err)) == 0 && !hwloc_bitmap_isincluded(want, have)) {
                char *list = NULL;
                hwloc_bitmap_list_asprintf(&list, have);
                r = tessera_error_field(err, EINVAL, "cpus", "cpus: %s are not all cores of enclave '%s' (it has %s)",
                                        cpus, e->rec.name, list ? list : "none");
                free(list);
        }
        hwloc_bitmap_free(want);
        hwloc_bitmap_free(have);
        return r;
}

static int next_app_name(struct tessera_node *n, char *buf, size_t len, struct tessera_error *err)
{
        sqlite3_stmt *st = store_stmt(n->store, "SELECT COALESCE(MAX(id), 0) + 1 FROM apps", err);
        if (!st)
                return -EIO;
        int64_t next = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 1;
        sqlite3_reset(st);
        snprintf(buf, len, "a%lld", (long long)next);
        return 0;
}

/* The host pid behind a pidfd the supervisor made in its own pid namespace. */
static pid_t pidfd_host_pid(int pidfd)
{
        char path[64], buf[1024];
        snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", pidfd);
        if (read_file_at(AT_FDCWD, path, buf, sizeof(buf), NULL) < 0)
                return -1;
        const char *p = strstr(buf, "\nPid:");
        return p ? (pid_t)strtol(p + 5, NULL, 10) : -1;
}

/*
 * The supervisor writes logs through this directory's descriptor.  In an
 * enclave with a user namespace it is the owner's uid on the host, so the
 * directory is the owner's (still 0700, inside tesserad's 0700 state dir).
 */
static int open_log_dir(struct tessera_node *n, const struct enclave *e, struct tessera_error *err)
{
        char dir[PATH_MAX + 80];
        snprintf(dir, sizeof(dir), "%s/%s", n->log_dir, e->rec.name);
        int r = mkdir_p(dir, 0700, err);
        if (r < 0)
                return r;
        int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return tessera_error_set(err, errno, "cannot open `%s`: %s", dir, strerror(errno));
        uid_t want = (e->spec.namespaces & SPEC_NS_USER) ? e->rec.owner_uid : 0;
        if (fchown(fd, want, want) < 0) {
                int e2 = errno;
                close(fd);
                return tessera_error_set(err, e2, "cannot give `%s` to uid %u: %s", dir, (unsigned)want, strerror(e2));
        }
        return fd;
}

struct launch {
        const char *app;
        char leaf[32]; /* its cgroup leaf below apps/: its name, or the stem's it took */
        json_t *argv, *env;
        const char *cwd, *cpus;
        uid_t uid;
        gid_t gid;
        bool pass_stdio, tty;
};

/* ---- prewarmed stems ---- */

#define STEMS_PER_ENCLAVE 2

static void stem_discard(struct tessera_node *n, const char *enclave, struct stem *st)
{
        (void)syscall(SYS_pidfd_send_signal, st->pidfd, SIGKILL, NULL, 0);
        close(st->pidfd);
        json_t *q = json_pack("{s:i, s:s, s:s}", "version", TESSERA_PROTO_VERSION, "op", "forget", "app", st->name);
        json_t *ignored = NULL;
        if (enclave)
                (void)supervisor_call(n, enclave, q, &ignored, NULL);
        json_decref(ignored);
        json_decref(q);
        if (enclave)
                (void)cgroup_app_remove(n->cg, enclave, st->name, NULL);
}

void app_pool_drop(struct tessera_node *n, int64_t enclave_id)
{
        for (size_t i = 0; i < n->n_stems;) {
                if (n->stems[i].enclave_id != enclave_id) {
                        i++;
                        continue;
                }
                close(n->stems[i].pidfd);
                n->stems[i] = n->stems[--n->n_stems];
        }
}

/* Asks the supervisor for one more stem and has the mover put it in a leaf of its own. */
static int stem_new(struct tessera_node *n, struct enclave *e, struct tessera_error *err)
{
        if (n->n_stems == n->cap_stems) {
                size_t cap = n->cap_stems ? n->cap_stems * 2 : 16;
                struct stem *v = realloc(n->stems, cap * sizeof(*v));
                if (!v)
                        return tessera_error_set(err, ENOMEM, "out of memory");
                n->stems = v;
                n->cap_stems = cap;
        }
        struct stem st = {.enclave_id = e->rec.id};
        snprintf(st.name, sizeof(st.name), "stem-%llu", (unsigned long long)++n->stem_seq);
        int r = cgroup_app_create(n->cg, e->rec.name, st.name, err);
        if (r < 0)
                return r;
        json_t *q = json_pack("{s:i, s:s, s:s}", "version", TESSERA_PROTO_VERSION, "op", "stem", "app", st.name);
        json_t *res = NULL;
        int fds[APP_MAX_FDS];
        size_t n_fds = APP_MAX_FDS;
        r = supervisor_call_fds(n, e->rec.name, q, NULL, 0, &res, fds, &n_fds, err);
        json_decref(q);
        json_decref(res);
        if (r == 0 && n_fds < 1)
                r = tessera_error_set(err, EPROTO, "the supervisor sent no pidfd for a stem");
        if (r < 0) {
                (void)cgroup_app_remove(n->cg, e->rec.name, st.name, NULL);
                return r;
        }
        for (size_t i = 1; i < n_fds; i++)
                close(fds[i]);
        st.pidfd = fds[0];
        pid_t pid = pidfd_host_pid(st.pidfd);
        st.job = ++n->next_job;
        char leaf[64];
        snprintf(leaf, sizeof(leaf), "apps/%s", st.name);
        r = pid > 0 ? mover_submit(n->mover, st.job, e->rec.name, leaf, pid, err) : -ESRCH;
        if (r < 0) {
                stem_discard(n, e->rec.name, &st);
                return r;
        }
        n->stems[n->n_stems++] = st;
        return 0;
}

void app_pool_refill(struct tessera_node *n, const char *enclave)
{
        if (!n->mover || !enclave)
                return;
        _cleanup_enclave_ struct enclave e;
        if (enclave_load(n, 0, enclave, &e, NULL) < 0 || !STREQ(e.rec.state, "running"))
                return;
        size_t have = 0;
        for (size_t i = 0; i < n->n_stems; i++)
                have += n->stems[i].enclave_id == e.rec.id;
        while (have++ < STEMS_PER_ENCLAVE)
                if (stem_new(n, &e, NULL) < 0)
                        return; /* launches take the slow path meanwhile */
}

void app_pool_events(struct tessera_node *n)
{
        uint64_t job;
        int error;
        while (n->mover && mover_result(n->mover, &job, &error) == 1) {
                for (size_t i = 0; i < n->n_stems; i++) {
                        if (n->stems[i].job != job)
                                continue;
                        if (error == 0) {
                                n->stems[i].ready = true;
                                n->stems[i].job = 0;
                        } else {
                                char enclave[64];
                                bool known = ledger_enclave_name(n->store, n->stems[i].enclave_id, enclave,
                                                                 sizeof(enclave)) == 0;
                                stem_discard(n, known ? enclave : NULL, &n->stems[i]);
                                n->stems[i] = n->stems[--n->n_stems];
                        }
                        break;
                }
        }
}

/* A ready stem of the enclave, taken out of the pool; false when there is none. */
static bool take_stem(struct tessera_node *n, int64_t enclave_id, struct stem *ret)
{
        for (size_t i = 0; i < n->n_stems; i++)
                if (n->stems[i].enclave_id == enclave_id && n->stems[i].ready) {
                        *ret = n->stems[i];
                        n->stems[i] = n->stems[--n->n_stems];
                        return true;
                }
        return false;
}

/* Runs the two supervisor steps around the cgroup move; returns the pidfd (and the pty master). */
static int launch_in_enclave(struct tessera_node *n, struct enclave *e, struct launch *l, const int *stdio,
                             pid_t *ret_pid, int *ret_ns_pid, int *ret_master, struct tessera_error *err)
{
        /* a stem already sits in a leaf of its own: no cgroup move on this path */
        struct stem stem;
        bool stemmed = take_stem(n, e->rec.id, &stem);
        if (!stemmed) {
                int r = cgroup_app_create(n->cg, e->rec.name, l->app, err);
                if (r < 0)
                        return r;
        }
        _cleanup_close_ int logdir = -1;
        if (!l->pass_stdio && !l->tty) {
                logdir = open_log_dir(n, e, err);
                if (logdir < 0) {
                        if (stemmed)
                                stem_discard(n, e->rec.name, &stem);
                        return logdir;
                }
        }
        json_t *req = json_pack("{s:i, s:s, s:s, s:O, s:O, s:s, s:i, s:i, s:s?, s:b}", "version", TESSERA_PROTO_VERSION,
                                "op", "launch", "app", l->app, "argv", l->argv, "env", l->env, "cwd", l->cwd, "uid",
                                (int)l->uid, "gid", (int)l->gid, "cpus", l->cpus, "tty", l->tty);
        if (!l->tty) /* a pty is its own stdio */
                json_object_set_new(req, "stdio", json_string(l->pass_stdio ? "pass" : "log"));
        if (stemmed)
                json_object_set_new(req, "stem", json_string(stem.name));
        snprintf(l->leaf, sizeof(l->leaf), "%s", stemmed ? stem.name : l->app);
        int fds[APP_MAX_FDS];
        size_t n_fds = APP_MAX_FDS;
        json_t *res = NULL;
        int r = supervisor_call_fds(n, e->rec.name, req, l->pass_stdio ? stdio : &logdir,
                                    l->pass_stdio ? 3 : (logdir >= 0 ? 1 : 0), &res, fds, &n_fds, err);
        json_decref(req);
        if (r < 0) {
                if (stemmed) /* a refused request must not leave the stem unowned in the supervisor */
                        stem_discard(n, e->rec.name, &stem);
                return r;
        }
        if (stemmed)
                close(stem.pidfd); /* the supervisor sent a fresh one with the reply */
        *ret_ns_pid = (int)json_integer_value(json_object_get(res, "ns_pid"));
        json_decref(res);
        if (n_fds < 1 || (l->tty && n_fds < 2)) {
                for (size_t i = 0; i < n_fds; i++)
                        close(fds[i]);
                return tessera_error_set(err, EPROTO, "enclave '%s': the supervisor sent no pidfd", e->rec.name);
        }
        _cleanup_close_ int pidfd = fds[0];
        _cleanup_close_ int master = l->tty ? fds[1] : -1;
        for (size_t i = l->tty ? 2 : 1; i < n_fds; i++)
                close(fds[i]);
        pid_t pid = pidfd_host_pid(pidfd);
        if (pid <= 0)
                return tessera_error_set(err, ESRCH, "the new process of '%s' vanished", l->app);
        char leaf[128];
        snprintf(leaf, sizeof(leaf), "apps/%s", l->leaf);
        r = stemmed ? 0 : cgroup_enter(n->cg, e->rec.name, leaf, pid, err);
        json_t *start = json_pack("{s:i, s:s, s:s}", "version", TESSERA_PROTO_VERSION, "op", r == 0 ? "start" : "kill",
                                  "app", l->app);
        if (r < 0) {
                /* never started: the supervisor kills it and drops the record */
                json_object_set_new(start, "signal", json_integer(SIGKILL));
                json_t *ignored = NULL;
                (void)supervisor_call(n, e->rec.name, start, &ignored, NULL);
                json_decref(ignored);
                json_decref(start);
                return r;
        }
        r = supervisor_call(n, e->rec.name, start, &res, err);
        json_decref(start);
        if (r < 0)
                return r;
        json_decref(res);
        *ret_pid = pid;
        if (ret_master)
                *ret_master = TAKE_FD(master);
        return TAKE_FD(pidfd);
}

static int record_app(struct tessera_node *n, struct enclave *e, const char *app, const char *leaf, json_t *argv,
                      pid_t pid, int ns_pid, int64_t *ret_id, struct tessera_error *err)
{
        static const char sql[] = "INSERT INTO apps(enclave_id, name, argv, state, pid, ns_pid, start_time, started, "
                                  "leaf) VALUES(?, ?, ?, 'running', ?, ?, ?, ?, ?)";
        uint64_t start = 0;
        (void)process_start_time(pid, &start, NULL);
        _cleanup_free_ char *argv_text = json_dumps(argv, JSON_COMPACT);
        sqlite3_stmt *st = store_stmt(n->store, sql, err);
        if (!st || !argv_text)
                return -EIO;
        sqlite3_bind_int64(st, 1, e->rec.id);
        sqlite3_bind_text(st, 2, app, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, argv_text, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, pid);
        sqlite3_bind_int64(st, 5, ns_pid);
        sqlite3_bind_int64(st, 6, (sqlite3_int64)start);
        sqlite3_bind_int64(st, 7, (sqlite3_int64)time(NULL));
        sqlite3_bind_text(st, 8, leaf, -1, SQLITE_STATIC);
        int r = store_step_done(n->store, st, err);
        if (r < 0)
                return r;
        *ret_id = sqlite3_last_insert_rowid(sqlite3_db_handle(st));
        return 0;
}

static int launch_common(struct tessera_node *n, uid_t caller, json_t *req, struct launch *l, const int *stdio,
                         json_t **ret, int *ret_master, struct tessera_error *err)
{
        _cleanup_enclave_ struct enclave e;
        int r = load_running(n, caller, req, &e, err);
        if (r < 0)
                return r;
        char generated[32];
        if (!l->app) {
                r = next_app_name(n, generated, sizeof(generated), err);
                if (r < 0)
                        return r;
                l->app = generated;
        } else if (!name_is_valid(l->app)) {
                return tessera_error_field(err, EINVAL, "app", "app: '%s' is not a name (letters, digits, . _ -)",
                                           l->app);
        } else if (strncmp(l->app, "stem-", 5) == 0) {
                return tessera_error_field(err, EINVAL, "app", "app: names starting with 'stem-' are tesserad's own");
        }
        int64_t existing;
        if (app_find(n, &e, l->app, &existing, NULL) == 0)
                return tessera_error_field(err, EEXIST, "app", "enclave '%s' has an application '%s' already",
                                           e.rec.name, l->app);
        r = check_cpus(n, &e, l->cpus, err);
        if (r == 0)
                r = app_identity(n, &e, caller, json_string_value(json_object_get(req, "user")), &l->uid, &l->gid, err);
        if (r < 0)
                return r;
        pid_t pid = 0;
        int ns_pid = 0;
        int pidfd = launch_in_enclave(n, &e, l, stdio, &pid, &ns_pid, ret_master, err);
        if (pidfd < 0) {
                (void)cgroup_app_remove(n->cg, e.rec.name, l->app, NULL);
                return pidfd;
        }
        int64_t id = 0;
        /* a power loss ends the application too: surviving a crash of tesserad is what matters here */
        r = store_begin_light(n->store, err);
        if (r == 0)
                r = record_app(n, &e, l->app, l->leaf, l->argv, pid, ns_pid, &id, err);
        if (r == 0)
                r = store_commit_light(n->store, err);
        if (r < 0) {
                /* running but unrecorded: it must not outlive the failed request */
                store_rollback_light(n->store);
                (void)syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
                close(pidfd);
                (void)cgroup_app_remove(n->cg, e.rec.name, l->leaf, NULL);
                if (ret_master && *ret_master >= 0) {
                        close(*ret_master);
                        *ret_master = -1;
                }
                return r;
        }
        if (node_watch_add(n, WATCH_APP, id, pidfd) < 0)
                close(pidfd); /* still recorded: reconcile re-attaches it */
        *ret = app_json_by_id(n, id, err);
        return *ret ? 0 : -EIO;
}

int app_launch(struct tessera_node *n, uid_t caller, json_t *req, const int *fds_in, size_t n_in, json_t **ret,
               struct tessera_error *err)
{
        struct launch l = {
                .app = json_string_value(json_object_get(req, "app")),
                .argv = json_object_get(req, "argv"),
                .env = json_object_get(req, "env"),
                .cwd = json_string_value(json_object_get(req, "cwd")),
                .cpus = json_string_value(json_object_get(req, "cpus")),
                .pass_stdio = json_is_true(json_object_get(req, "wait")),
                .tty = false,
        };
        json_t *empty = json_array();
        if (!l.env)
                l.env = empty;
        if (!l.cwd)
                l.cwd = "/";
        int r = check_strings(l.argv, "argv", 1, ARGV_MAX, false, err);
        if (r == 0)
                r = check_strings(l.env, "env", 0, ENV_MAX, true, err);
        if (r == 0 && (l.cwd[0] != '/' || strlen(l.cwd) > PATH_MAX_LEN))
                r = tessera_error_field(err, EINVAL, "cwd", "cwd: \"%s\" is not an absolute path", l.cwd);
        if (r == 0 && l.pass_stdio && n_in != 3)
                r = tessera_error_set(err, EINVAL, "wait: stdin, stdout and stderr must come with the request");
        if (r == 0)
                r = launch_common(n, caller, req, &l, fds_in, ret, NULL, err);
        json_decref(empty);
        return r;
}

int app_console(struct tessera_node *n, uid_t caller, json_t *req, json_t **ret, int *fds_out, size_t *n_out,
                struct tessera_error *err)
{
        const char *term = json_string_value(json_object_get(req, "term"));
        char term_env[80];
        snprintf(term_env, sizeof(term_env), "TERM=%s", term && strlen(term) < 64 ? term : "xterm");
        json_t *argv = json_pack("[s, s]", "/bin/sh", "-l");
        json_t *env =
                json_pack("[s, s]", term_env, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        char name[32];
        int r = next_app_name(n, name, sizeof(name), err);
        if (r < 0) {
                json_decref(argv);
                json_decref(env);
                return r;
        }
        char console_name[40];
        snprintf(console_name, sizeof(console_name), "console-%s", name + 1); /* "a17" -> "console-17" */
        struct launch l = {.app = console_name, .argv = argv, .env = env, .cwd = "/", .tty = true};
        int master = -1;
        r = launch_common(n, caller, req, &l, NULL, ret, &master, err);
        json_decref(argv);
        json_decref(env);
        if (r < 0)
                return r;
        fds_out[0] = master;
        *n_out = 1;
        return 0;
}

/* ---- listing, kill, wait, logs, files ---- */

int app_list(struct tessera_node *n, uid_t caller, json_t *req, json_t **ret, struct tessera_error *err)
{
        static const char all[] = "SELECT " APP_COLUMNS " FROM apps a JOIN enclaves e ON a.enclave_id = e.id "
                                  "ORDER BY a.id";
        static const char one[] = "SELECT " APP_COLUMNS " FROM apps a JOIN enclaves e ON a.enclave_id = e.id "
                                  "WHERE e.name = ? ORDER BY a.id";
        const char *name = json_string_value(json_object_get(req, "name"));
        if (name) {
                _cleanup_enclave_ struct enclave e;
                int r = enclave_load(n, caller, name, &e, err);
                if (r < 0)
                        return r;
        }
        sqlite3_stmt *st = store_stmt(n->store, name ? one : all, err);
        if (!st)
                return -EIO;
        if (name)
                sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        json_t *a = json_array();
        while (sqlite3_step(st) == SQLITE_ROW) {
                if (caller != 0 && (uid_t)sqlite3_column_int64(st, 15) != caller)
                        continue;
                json_array_append_new(a, app_row_json(n, st));
        }
        sqlite3_reset(st);
        *ret = a;
        return 0;
}

static int load_app(struct tessera_node *n, uid_t caller, json_t *req, struct enclave *e, int64_t *ret_id,
                    struct tessera_error *err)
{
        int r = enclave_load(n, caller, json_string_value(json_object_get(req, "name")), e, err);
        if (r < 0)
                return r;
        return app_find(n, e, json_string_value(json_object_get(req, "app")), ret_id, err);
}

int app_kill(struct tessera_node *n, uid_t caller, json_t *req, json_t **ret, struct tessera_error *err)
{
        _cleanup_enclave_ struct enclave e;
        int64_t id;
        int r = load_app(n, caller, req, &e, &id, err);
        if (r < 0)
                return r;
        json_t *sv = json_object_get(req, "signal");
        int sig = sv ? (int)json_integer_value(sv) : SIGTERM;
        if (!(sv == NULL || json_is_integer(sv)) || sig < 1 || sig > 64)
                return tessera_error_field(err, EINVAL, "signal", "signal: a number from 1 to 64 is required");
        int pidfd = node_watch_find(n, WATCH_APP, id);
        if (pidfd < 0)
                return tessera_error_set(err, ESRCH, "application '%s' of enclave '%s' is not running",
                                         json_string_value(json_object_get(req, "app")), e.rec.name);
        if (syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0) < 0 && errno != ESRCH)
                return tessera_error_set(err, errno, "cannot signal application '%s': %s",
                                         json_string_value(json_object_get(req, "app")), strerror(errno));
        *ret = app_json_by_id(n, id, err);
        return *ret ? 0 : -EIO;
}

int app_wait(struct tessera_node *n, uid_t caller, json_t *req, json_t **ret, int64_t *ret_id,
             struct tessera_error *err)
{
        _cleanup_enclave_ struct enclave e;
        int64_t id;
        int r = load_app(n, caller, req, &e, &id, err);
        if (r < 0)
                return r;
        json_t *o = app_json_by_id(n, id, err);
        if (!o)
                return -EIO;
        if (!STREQ(json_string_value(json_object_get(o, "state")), "running")) {
                *ret = o;
                return 1;
        }
        json_decref(o);
        *ret_id = id;
        return 0;
}

int app_logs(struct tessera_node *n, uid_t caller, json_t *req, json_t **ret, int *fds_out, size_t *n_out,
             struct tessera_error *err)
{
        _cleanup_enclave_ struct enclave e;
        int64_t id;
        int r = load_app(n, caller, req, &e, &id, err);
        if (r < 0)
                return r;
        const char *app = json_string_value(json_object_get(req, "app"));
        char path[PATH_MAX + 160];
        *n_out = 0;
        for (int older = 1; older >= 0; older--) {
                snprintf(path, sizeof(path), "%s/%s/%s.log%s", n->log_dir, e.rec.name, app, older ? ".1" : "");
                int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
                if (fd >= 0)
                        fds_out[(*n_out)++] = fd;
        }
        *ret = app_json_by_id(n, id, err);
        if (!*ret) {
                for (size_t i = 0; i < *n_out; i++)
                        close(fds_out[i]);
                *n_out = 0;
                return -EIO;
        }
        json_object_set_new(*ret, "log_files", json_integer((json_int_t)*n_out));
        return 0;
}

int app_file(struct tessera_node *n, uid_t caller, json_t *req, bool write, json_t **ret, int *fds_out, size_t *n_out,
             struct tessera_error *err)
{
        _cleanup_enclave_ struct enclave e;
        int r = load_running(n, caller, req, &e, err);
        if (r < 0)
                return r;
        const char *path = json_string_value(json_object_get(req, "path"));
        if (!path || path[0] != '/' || strlen(path) > PATH_MAX_LEN)
                return tessera_error_field(err, EINVAL, "path",
                                           "path: an absolute path inside the enclave is required");
        /* the file is opened as the enclave's owner (root in a user namespace maps to it too) */
        uid_t uid = e.rec.owner_uid;
        gid_t gid = e.rec.owner_uid;
        if (e.spec.namespaces & SPEC_NS_USER)
                uid = gid = 0;
        json_t *q = json_pack("{s:i, s:s, s:s, s:b, s:i, s:i}", "version", TESSERA_PROTO_VERSION, "op", "open", "path",
                              path, "write", write, "uid", (int)uid, "gid", (int)gid);
        json_t *res = NULL;
        size_t got = 1;
        r = supervisor_call_fds(n, e.rec.name, q, NULL, 0, &res, fds_out, &got, err);
        json_decref(q);
        if (r < 0)
                return r;
        if (got != 1) {
                json_decref(res);
                return tessera_error_set(err, EPROTO, "enclave '%s': the supervisor sent no file", e.rec.name);
        }
        *n_out = 1;
        *ret = res;
        return 0;
}

/* ---- exits ---- */

static int record_exit(struct tessera_node *n, int64_t id, json_t *st_json, const char *cause,
                       struct tessera_error *err)
{
        static const char sql[] = "UPDATE apps SET state = ?, ended = ?, exit_code = ?, signal = ?, cpu_ns = ?, "
                                  "peak_memory = ?, cause = ? WHERE id = ?";
        sqlite3_stmt *st = store_stmt(n->store, sql, err);
        if (!st)
                return -EIO;
        json_t *code = json_object_get(st_json, "exit_code"), *sig = json_object_get(st_json, "signal");
        sqlite3_bind_text(st, 1, st_json ? "exited" : "lost", -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)time(NULL));
        if (json_is_integer(code))
                sqlite3_bind_int64(st, 3, json_integer_value(code));
        if (json_is_integer(sig) && json_integer_value(sig) > 0)
                sqlite3_bind_int64(st, 4, json_integer_value(sig));
        json_t *cpu = json_object_get(st_json, "cpu_ns"), *mem = json_object_get(st_json, "peak_memory");
        if (json_is_integer(cpu))
                sqlite3_bind_int64(st, 5, json_integer_value(cpu));
        if (json_is_integer(mem))
                sqlite3_bind_int64(st, 6, json_integer_value(mem));
        if (cause)
                sqlite3_bind_text(st, 7, cause, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 8, id);
        return store_step_done(n->store, st, err);
}

/* The whole tree's usage from its cgroup leaf, which sees grandchildren the supervisor's rusage does not. */
static void merge_cgroup_usage(struct tessera_node *n, const char *enclave, const char *app_leaf, json_t *status)
{
        struct cgroup_stats cs = {0};
        char leaf[128];
        snprintf(leaf, sizeof(leaf), "apps/%s", app_leaf);
        if (!status || cgroup_stats_read(n->cg, enclave, leaf, &cs, NULL) < 0)
                return;
        json_int_t cpu = json_integer_value(json_object_get(status, "cpu_ns"));
        json_int_t mem = json_integer_value(json_object_get(status, "peak_memory"));
        if ((json_int_t)cs.cpu_usage_ns > cpu)
                json_object_set_new(status, "cpu_ns", json_integer((json_int_t)cs.cpu_usage_ns));
        if ((json_int_t)cs.memory_peak > mem)
                json_object_set_new(status, "peak_memory", json_integer((json_int_t)cs.memory_peak));
}

/* Collects from the supervisor, records durably, then lets the supervisor forget. */
static int settle_app(struct tessera_node *n, int64_t id, const char *enclave, const char *app, const char *leaf,
                      struct tessera_error *err)
{
        json_t *q = json_pack("{s:i, s:s, s:s}", "version", TESSERA_PROTO_VERSION, "op", "collect", "app", app);
        json_t *status = NULL;
        struct tessera_error cerr = {0};
        int r = supervisor_call(n, enclave, q, &status, &cerr);
        json_decref(q);
        if (r == 0 && STREQ(json_string_value(json_object_get(status, "state")) ?: "", "running")) {
                json_decref(status);
                return 0; /* not yet: its pidfd said otherwise, so it is a zombie being reaped */
        }
        merge_cgroup_usage(n, enclave, leaf, r == 0 ? status : NULL);
        r = store_begin_light(n->store, err);
        if (r == 0)
                r = record_exit(n, id, status, status ? NULL : cerr.msg, err);
        if (r == 0) {
                r = store_commit_light(n->store, err);
        } else {
                store_rollback_light(n->store);
        }
        json_decref(status);
        if (r < 0)
                return r;
        q = json_pack("{s:i, s:s, s:s}", "version", TESSERA_PROTO_VERSION, "op", "forget", "app", app);
        json_t *ignored = NULL;
        (void)supervisor_call(n, enclave, q, &ignored, NULL);
        json_decref(q);
        json_decref(ignored);
        /* behind any move the mover is waiting on: the rmdir would wait for it too */
        if (!n->mover || mover_remove(n->mover, enclave, leaf, NULL) < 0)
                (void)cgroup_app_remove(n->cg, enclave, leaf, NULL);
        return 1;
}

int app_exited(struct tessera_node *n, int64_t id, json_t *log, struct tessera_error *err)
{
        json_t *o = app_json_by_id(n, id, err);
        if (!o) {
                node_watch_remove(n, WATCH_APP, id);
                return -ENOENT;
        }
        const char *cgroup = json_string_value(json_object_get(o, "cgroup"));
        int r = settle_app(n, id, json_string_value(json_object_get(o, "enclave")),
                           json_string_value(json_object_get(o, "name")), cgroup + strlen("apps/"), err);
        if (r != 0)
                node_watch_remove(n, WATCH_APP, id);
        json_decref(o);
        return r < 0 ? r : 0;
}

/*
 * After the enclave's supervisor is re-attached: running applications are
 * watched again; those that ended meanwhile are collected from the
 * supervisor (it kept their status); those the supervisor does not know (it
 * was restarted) are lost; those only the supervisor knows were never
 * acknowledged to anyone and are killed.
 */
int apps_reconcile(struct tessera_node *n, struct enclave *e, json_t *log, struct tessera_error *err)
{
        static const char sql[] = "SELECT id, name, pid, start_time, COALESCE(leaf, name) FROM apps WHERE "
                                  "enclave_id = ? AND state = 'running'";
        json_t *q = json_pack("{s:i, s:s}", "version", TESSERA_PROTO_VERSION, "op", "apps");
        json_t *known = NULL;
        int r = supervisor_call(n, e->rec.name, q, &known, err);
        json_decref(q);
        if (r < 0)
                return r;
        sqlite3_stmt *st = store_stmt(n->store, sql, err);
        if (!st) {
                json_decref(known);
                return -EIO;
        }
        sqlite3_bind_int64(st, 1, e->rec.id);
        struct row {
                int64_t id;
                char name[64];
                char leaf[64];
                pid_t pid;
                uint64_t start;
        } rows[512];
        size_t count = 0;
        while (count < ELEMENTSOF(rows) && sqlite3_step(st) == SQLITE_ROW) {
                rows[count].id = sqlite3_column_int64(st, 0);
                snprintf(rows[count].name, sizeof(rows[count].name), "%s", sqlite3_column_text(st, 1));
                rows[count].pid = (pid_t)sqlite3_column_int64(st, 2);
                rows[count].start = (uint64_t)sqlite3_column_int64(st, 3);
                snprintf(rows[count].leaf, sizeof(rows[count].leaf), "%s", sqlite3_column_text(st, 4));
                count++;
        }
        sqlite3_reset(st);
        for (size_t i = 0; i < count; i++) {
                if (node_watch_find(n, WATCH_APP, rows[i].id) >= 0)
                        continue;
                int pidfd = pidfd_open_checked(rows[i].pid, rows[i].start, NULL);
                struct pollfd p = {.fd = pidfd, .events = POLLIN};
                if (pidfd >= 0 && poll(&p, 1, 0) == 0) {
                        (void)node_watch_add(n, WATCH_APP, rows[i].id, pidfd);
                        continue;
                }
                if (pidfd >= 0)
                        close(pidfd);
                struct tessera_error serr = {0};
                if (settle_app(n, rows[i].id, e->rec.name, rows[i].name, rows[i].leaf, &serr) < 0)
                        json_array_append_new(
                                log, json_sprintf("application '%s' of '%s': %s", rows[i].name, e->rec.name, serr.msg));
                else
                        json_array_append_new(log, json_sprintf("application '%s' of '%s' ended while tesserad "
                                                                "was away",
                                                                rows[i].name, e->rec.name));
        }
        /* the supervisor's records nobody else has */
        size_t k;
        json_t *a;
        json_array_foreach(known, k, a)
        {
                const char *name = json_string_value(json_object_get(a, "app"));
                int64_t id;
                if (!name || app_find(n, e, name, &id, NULL) == 0)
                        continue;
                json_t *kq = json_pack("{s:i, s:s, s:s, s:i}", "version", TESSERA_PROTO_VERSION, "op", "kill", "app",
                                       name, "signal", SIGKILL);
                json_t *ignored = NULL;
                (void)supervisor_call(n, e->rec.name, kq, &ignored, NULL);
                json_decref(ignored);
                json_decref(kq);
                kq = json_pack("{s:i, s:s, s:s}", "version", TESSERA_PROTO_VERSION, "op", "forget", "app", name);
                ignored = NULL;
                (void)supervisor_call(n, e->rec.name, kq, &ignored, NULL);
                json_decref(ignored);
                json_decref(kq);
                (void)cgroup_app_remove(n->cg, e->rec.name, name, NULL);
                if (strncmp(name, "stem-", 5) != 0) /* stems of the previous tesserad are just replaced */
                        json_array_append_new(
                                log, json_sprintf("killed unrecorded application '%s' of '%s'", name, e->rec.name));
        }
        json_decref(known);
        return 0;
}
