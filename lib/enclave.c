/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>

#include "cgroup.h"
#include "config.h"
#include "enclave.h"
#include "fault.h"
#include "image.h"
#include "ledger.h"
#include "mover.h"
#include "netdev.h"
#include "node.h"
#include "segment.h"
#include "proto.h"
#include "sandbox.h"
#include "spec.h"
#include "store.h"
#include "tessera-build.h"
#include "topology.h"
#include "util.h"

#define MAX_DEVICE_RULES 64

bool node_ledger_only(const struct tessera_node *n)
{
        return n->cg == NULL;
}

int node_mover_fd(struct tessera_node *n)
{
        return n->mover ? mover_fd(n->mover) : -1;
}

int node_pid_enclave(struct tessera_node *n, pid_t pid, char *ret, size_t len)
{
        if (!n->cg || pid <= 0)
                return 0;
        return cgroup_pid_enclave(n->cg, pid, ret, len, NULL) == 0 ? 1 : 0;
}

/* ---- watches: supervisors whose exit tesserad must notice ---- */

int node_watch_add(struct tessera_node *n, enum watch_kind kind, int64_t id, int pidfd)
{
        if (n->n_watches == n->cap_watches) {
                size_t cap = n->cap_watches ? n->cap_watches * 2 : 16;
                struct watch *w = realloc(n->watches, cap * sizeof(*w));
                if (!w)
                        return -ENOMEM;
                n->watches = w;
                n->cap_watches = cap;
        }
        n->watches[n->n_watches++] = (struct watch){.kind = kind, .id = id, .pidfd = pidfd};
        if (n->watcher.add)
                n->watcher.add(n->watcher.ctx, pidfd, kind, id);
        return 0;
}

int node_watch_find(struct tessera_node *n, enum watch_kind kind, int64_t id)
{
        for (size_t i = 0; i < n->n_watches; i++)
                if (n->watches[i].kind == kind && n->watches[i].id == id)
                        return n->watches[i].pidfd;
        return -1;
}

void node_watch_remove(struct tessera_node *n, enum watch_kind kind, int64_t id)
{
        for (size_t i = 0; i < n->n_watches; i++) {
                if (n->watches[i].kind != kind || n->watches[i].id != id)
                        continue;
                if (n->watcher.remove)
                        n->watcher.remove(n->watcher.ctx, n->watches[i].pidfd);
                close(n->watches[i].pidfd);
                n->watches[i] = n->watches[--n->n_watches];
                return;
        }
}

static int watch_add(struct tessera_node *n, int64_t id, int pidfd)
{
        return node_watch_add(n, WATCH_SUPERVISOR, id, pidfd);
}

static int watch_find(struct tessera_node *n, int64_t id)
{
        return node_watch_find(n, WATCH_SUPERVISOR, id);
}

static void watch_remove(struct tessera_node *n, int64_t id)
{
        node_watch_remove(n, WATCH_SUPERVISOR, id);
}

/* ---- loading ---- */

int enclave_load(struct tessera_node *n, uid_t caller, const char *name, struct enclave *e, struct tessera_error *err)
{
        memset(e, 0, sizeof(*e));
        spec_init(&e->spec);
        if (!name || !name_is_valid(name))
                return tessera_error_field(err, EINVAL, "name", "name: '%s' is not an enclave name", name ? name : "");
        int r = ledger_enclave_get(n->store, name, &e->rec, err);
        if (r < 0)
                return r;
        /* a tenant cannot even learn that another tenant's enclave exists */
        if (caller != 0 && e->rec.owner_uid != caller)
                return tessera_error_field(err, ENOENT, "name", "no enclave named '%s'", name);
        json_error_t jerr;
        json_t *j = json_loads(e->rec.spec, 0, &jerr);
        if (!j)
                return tessera_error_set(err, EIO, "enclave '%s': stored spec is not JSON: %s", name, jerr.text);
        r = spec_from_json(j, &e->spec, err);
        json_decref(j);
        if (r < 0)
                return tessera_error_prefix(err, r, "enclave '%s': stored spec", name);
        return 0;
}

static void owner_name(uid_t uid, char *buf, size_t n)
{
        struct passwd pw, *res = NULL;
        char tmp[1024];
        if (getpwuid_r(uid, &pw, tmp, sizeof(tmp), &res) == 0 && res)
                snprintf(buf, n, "%s", pw.pw_name);
        else
                snprintf(buf, n, "%u", (unsigned)uid);
}

static int resolve_owner(const char *owner, uid_t *ret, struct tessera_error *err)
{
        uint64_t v;
        if (parse_uint64(owner, UINT32_MAX - 1, &v) == 0) {
                *ret = (uid_t)v;
                return 0;
        }
        struct passwd pw, *res = NULL;
        char tmp[1024];
        if (getpwnam_r(owner, &pw, tmp, sizeof(tmp), &res) != 0 || !res)
                return tessera_error_field(err, ENOENT, "owner", "owner: no user named '%s'", owner);
        *ret = pw.pw_uid;
        return 0;
}

static json_t *bitmap_json(hwloc_const_bitmap_t b)
{
        json_t *a = json_array();
        int i;
        hwloc_bitmap_foreach_begin(i, b)
        {
                json_array_append_new(a, json_integer(i));
        }
        hwloc_bitmap_foreach_end();
        return a;
}

static json_t *enclave_json(struct tessera_node *n, struct enclave *e, struct tessera_error *err)
{
        hwloc_bitmap_t cpus = hwloc_bitmap_alloc(), nodes = hwloc_bitmap_alloc();
        json_t *devs = NULL, *o = NULL;
        unsigned blocks = 0;
        if (!cpus || !nodes)
                goto out;
        if (ledger_cpus_of(n->store, e->rec.id, cpus, err) < 0 ||
            ledger_blocks_of(n->store, e->rec.id, &blocks, nodes, err) < 0 ||
            ledger_devices_of(n->store, e->rec.id, &devs, err) < 0)
                goto out;
        json_t *dev_ids = json_array();
        size_t i;
        json_t *d;
        json_array_foreach(devs, i, d) json_array_append(dev_ids, json_object_get(d, "id"));
        json_t *ns = json_pack("[s,s,s,s,s]", "mount", "pid", "ipc", "uts", "cgroup");
        if (e->spec.namespaces & SPEC_NS_NET)
                json_array_append_new(ns, json_string("net"));
        if (e->spec.namespaces & SPEC_NS_USER)
                json_array_append_new(ns, json_string("user"));
        char owner[64];
        owner_name(e->rec.owner_uid, owner, sizeof(owner));
        o = json_pack("{s:s, s:s, s:s, s:s, s:i, s:o, s:I, s:i, s:o, s:o, s:I, s:o, s:o, s:s, s:i, s:s?, s:I, "
                      "s:i, s:b}",
                      "name", e->rec.name, "type", e->rec.type, "state", e->rec.state, "owner", owner, "owner_uid",
                      (int)e->rec.owner_uid, "cpus", bitmap_json(cpus), "memory",
                      (json_int_t)((uint64_t)blocks * n->host.block_size), "blocks", (int)blocks, "numa",
                      bitmap_json(nodes), "devices", dev_ids, "pids_max", (json_int_t)e->spec.pids_max, "namespaces",
                      ns, "root", e->spec.root ? image_ref_to_json(e->spec.root) : json_null(), "on_failure",
                      spec_on_failure_name(e->spec.on_failure), "supervisor_pid", (int)e->rec.supervisor_pid, "cause",
                      e->rec.cause[0] ? e->rec.cause : NULL, "created", (json_int_t)e->rec.created, "restarts",
                      e->rec.restarts, "hugepages", e->spec.hugepages);
        if (!o)
                tessera_error_set(err, ENOMEM, "cannot build the enclave's description");
out:
        json_decref(devs);
        hwloc_bitmap_free(cpus);
        hwloc_bitmap_free(nodes);
        return o;
}

/* ---- kernel steps ---- */

void node_sock_path(struct tessera_node *n, const char *name, char *buf, size_t len)
{
        snprintf(buf, len, "%s/%s.sock", n->run_dir, name);
}

/* Limits as the ledger has them: cores, the nodes of its blocks, their bytes, pids. */
static int apply_limits(struct tessera_node *n, struct enclave *e, struct tessera_error *err)
{
        if (!n->cg)
                return 0;
        hwloc_bitmap_t cpus = hwloc_bitmap_alloc(), mems = hwloc_bitmap_alloc();
        char *cpus_s = NULL, *mems_s = NULL;
        unsigned blocks = 0;
        int r = -ENOMEM;
        if (!cpus || !mems)
                goto out;
        r = ledger_cpus_of(n->store, e->rec.id, cpus, err);
        if (r == 0)
                r = ledger_blocks_of(n->store, e->rec.id, &blocks, mems, err);
        if (r < 0)
                goto out;
        if (e->spec.numa)
                hwloc_bitmap_or(mems, mems, e->spec.numa);
        if (hwloc_bitmap_iszero(mems)) {
                /* no block yet: memory comes from the cores' own nodes */
                int c;
                hwloc_bitmap_foreach_begin(c, cpus)
                {
                        const struct topo_cpu *tc = topology_cpu(n->topo, (unsigned)c);
                        if (tc && tc->numa >= 0)
                                hwloc_bitmap_set(mems, (unsigned)tc->numa);
                }
                hwloc_bitmap_foreach_end();
        }
        hwloc_bitmap_list_asprintf(&cpus_s, cpus);
        hwloc_bitmap_list_asprintf(&mems_s, mems);
        struct cgroup_limits lim = {
                .cpus = cpus_s ? cpus_s : "",
                .mems = mems_s ? mems_s : "",
                .memory_bytes = (uint64_t)blocks * n->host.block_size,
                .pids_max = e->spec.pids_max,
                .exclusive_cpus = n->exclusive_cpus,
                .hugetlb_bytes = e->spec.hugepages ? (uint64_t)blocks * n->host.block_size : 0,
        };
        r = cgroup_enclave_apply(n->cg, e->rec.name, &lim, err);
out:
        if (r == -ENOMEM && err && !err->code)
                tessera_error_set(err, ENOMEM, "out of memory");
        free(cpus_s);
        free(mems_s);
        hwloc_bitmap_free(cpus);
        hwloc_bitmap_free(mems);
        return r;
}

/* Device numbers behind a PCI function: every `dev` file below its sysfs directory. */
static void pci_dev_rules(const char *dir, int depth, struct cgroup_device_rule *rules, size_t *n_rules)
{
        if (depth > 4 || *n_rules >= MAX_DEVICE_RULES)
                return;
        _cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0)
                return;
        char buf[64];
        if (read_file_at(dfd, "dev", buf, sizeof(buf), NULL) > 0) {
                unsigned maj, min;
                if (sscanf(buf, "%u:%u", &maj, &min) == 2) {
                        /* block devices live under a "block" class directory */
                        bool is_block = strstr(dir, "/block/") != NULL;
                        rules[(*n_rules)++] = (struct cgroup_device_rule){
                                .type = is_block ? 'b' : 'c', .major = maj, .minor = min, .access = "rwm"};
                }
        }
        DIR *d = fdopendir(TAKE_FD(dfd));
        if (!d)
                return;
        struct dirent *de;
        while ((de = readdir(d)) && *n_rules < MAX_DEVICE_RULES) {
                if (de->d_name[0] == '.' || de->d_type != DT_DIR)
                        continue;
                char sub[PATH_MAX];
                snprintf(sub, sizeof(sub), "%s/%s", dir, de->d_name);
                pci_dev_rules(sub, depth + 1, rules, n_rules);
        }
        closedir(d);
}

static int device_rules(struct tessera_node *n, struct enclave *e, struct cgroup_device_rule *rules, size_t *n_rules,
                        struct tessera_error *err)
{
        json_t *devs = NULL;
        int r = ledger_devices_of(n->store, e->rec.id, &devs, err);
        if (r < 0)
                return r;
        *n_rules = 0;
        size_t i;
        json_t *d;
        json_array_foreach(devs, i, d)
        {
                const char *id = json_string_value(json_object_get(d, "id"));
                const char *kind = json_string_value(json_object_get(d, "kind"));
                if (STREQ(kind, "pci")) {
                        char dir[PATH_MAX];
                        snprintf(dir, sizeof(dir), "/sys/bus/pci/devices/%s", id);
                        pci_dev_rules(dir, 0, rules, n_rules);
                        continue;
                }
                if (!STREQ(kind, "block") && !STREQ(kind, "char"))
                        continue;
                struct stat st;
                if (stat(id, &st) < 0 || *n_rules >= MAX_DEVICE_RULES)
                        continue; /* a vanished node is allowed nothing */
                rules[(*n_rules)++] = (struct cgroup_device_rule){.type = S_ISBLK(st.st_mode) ? 'b' : 'c',
                                                                  .major = major(st.st_rdev),
                                                                  .minor = minor(st.st_rdev),
                                                                  .access = "rwm"};
        }
        json_decref(devs);
        return 0;
}

static int apply_devices(struct tessera_node *n, struct enclave *e, struct tessera_error *err)
{
        if (!n->cg)
                return 0;
        struct cgroup_device_rule rules[MAX_DEVICE_RULES];
        size_t n_rules = 0;
        int r = device_rules(n, e, rules, &n_rules, err);
        if (r < 0)
                return r;
        return cgroup_enclave_set_devices(n->cg, e->rec.name, rules, n_rules, err);
}

/*
 * Makes (or removes) a device node inside an enclave that has its own root,
 * resolved inside that root so a symlink planted by the tenant cannot send us
 * elsewhere.
 */
static int enclave_dev_node(struct tessera_node *n, struct enclave *e, const char *path, bool add,
                            struct tessera_error *err)
{
        if (!e->spec.root || e->rec.supervisor_pid <= 0)
                return 0; /* the host's /dev is the enclave's; the devices cgroup is the gate */
        struct stat st;
        if (add && stat(path, &st) < 0)
                return tessera_error_field(err, errno, "devices", "devices: cannot stat `%s`: %s", path,
                                           strerror(errno));
        char root[64];
        snprintf(root, sizeof(root), "/proc/%d/root", (int)e->rec.supervisor_pid);
        _cleanup_close_ int rfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (rfd < 0)
                return tessera_error_set(err, errno, "cannot open the root of enclave '%s': %s", e->rec.name,
                                         strerror(errno));
        struct open_how how = {.flags = O_PATH | O_DIRECTORY | O_CLOEXEC,
                               .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS};
        _cleanup_close_ int dfd = (int)syscall(SYS_openat2, rfd, "dev", &how, sizeof(how));
        if (dfd < 0)
                return tessera_error_set(err, errno, "cannot open /dev inside enclave '%s': %s", e->rec.name,
                                         strerror(errno));
        const char *base = strrchr(path, '/');
        base = base ? base + 1 : path;
        if (!add) {
                if (unlinkat(dfd, base, 0) < 0 && errno != ENOENT)
                        return tessera_error_set(err, errno, "cannot remove /dev/%s inside enclave '%s': %s", base,
                                                 e->rec.name, strerror(errno));
                return 0;
        }
        if (mknodat(dfd, base, (st.st_mode & S_IFMT) | 0660, st.st_rdev) < 0 && errno != EEXIST)
                return tessera_error_set(err, errno, "cannot create /dev/%s inside enclave '%s': %s", base, e->rec.name,
                                         strerror(errno));
        return 0;
}

/* Puts one device in place (or takes it out) once the ledger has recorded it. */
static int place_device(struct tessera_node *n, struct enclave *e, const char *id, const char *kind, bool add,
                        struct tessera_error *err)
{
        if (!n->cg)
                return 0;
        if (STREQ(kind, "net")) {
                if (e->rec.supervisor_pid <= 0)
                        return 0;
                return add ? netdev_move_to_pid(id, e->rec.supervisor_pid, err)
                           : netdev_move_from_pid(id, e->rec.supervisor_pid, err);
        }
        if (STREQ(kind, "block") || STREQ(kind, "char"))
                return enclave_dev_node(n, e, id, add, err);
        if (STREQ(kind, "pci")) {
                /* the PCI function's network interfaces follow it into the enclave */
                char dir[PATH_MAX];
                snprintf(dir, sizeof(dir), "/sys/bus/pci/devices/%s/net", id);
                DIR *d = opendir(dir);
                if (!d)
                        return 0;
                struct dirent *de;
                int r = 0;
                while (r == 0 && (de = readdir(d)))
                        if (de->d_name[0] != '.' && e->rec.supervisor_pid > 0)
                                r = add ? netdev_move_to_pid(de->d_name, e->rec.supervisor_pid, err)
                                        : netdev_move_from_pid(de->d_name, e->rec.supervisor_pid, err);
                closedir(d);
                return r;
        }
        return 0;
}

/* Best effort: every interface in the enclave's net namespace goes back to the host. */
static void return_all_interfaces(struct tessera_node *n, pid_t pid)
{
        char **names = NULL;
        size_t count = 0;
        if (pid <= 0 || netdev_list_in_pid(pid, &names, &count, NULL) < 0)
                return;
        for (size_t i = 0; i < count; i++) {
                (void)netdev_move_from_pid(names[i], pid, NULL);
                free(names[i]);
        }
        free(names);
}

static bool enclave_has_own_netns(pid_t pid)
{
        char path[64];
        struct stat a, b;
        snprintf(path, sizeof(path), "/proc/%d/ns/net", (int)pid);
        if (stat(path, &a) < 0 || stat("/proc/self/ns/net", &b) < 0)
                return false;
        return a.st_ino != b.st_ino || a.st_dev != b.st_dev;
}

static int make_listen_socket(const char *path, struct tessera_error *err)
{
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        if (strlen(path) >= sizeof(sa.sun_path))
                return tessera_error_set(err, ENAMETOOLONG, "socket path `%s` is too long", path);
        strcpy(sa.sun_path, path);
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return tessera_error_set(err, errno, "cannot create a socket: %s", strerror(errno));
        (void)unlink(path); /* a stale socket from a crashed supervisor */
        if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                return tessera_error_set(err, errno, "cannot bind `%s`: %s", path, strerror(errno));
        if (chmod(path, 0600) < 0 || listen(fd, 16) < 0) {
                int e = errno;
                (void)unlink(path);
                return tessera_error_set(err, e, "cannot listen on `%s`: %s", path, strerror(e));
        }
        return TAKE_FD(fd);
}

/* Starts the supervisor; on success records its pid in e->rec and returns its pidfd. */
static int start_supervisor(struct tessera_node *n, struct enclave *e, struct tessera_error *err)
{
        char path[PATH_MAX], log[PATH_MAX];
        node_sock_path(n, e->rec.name, path, sizeof(path));
        snprintf(log, sizeof(log), "%s/%s.log", n->log_dir, e->rec.name);
        _cleanup_close_ int lfd = make_listen_socket(path, err);
        if (lfd < 0)
                return lfd;
        _cleanup_close_ int logfd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
        char xemem_dir[PATH_MAX];
        xemem_socket_path(n->cfg.socket, xemem_dir, sizeof(xemem_dir));
        *strrchr(xemem_dir, '/') = '\0';
        /* it is bound into enclaves with a root of their own before tesserad listens there */
        (void)mkdir_p(xemem_dir, 0755, NULL);
        struct sandbox_config sc = {
                .enclave = e->rec.name,
                .hostname = e->spec.hostname[0] ? e->spec.hostname : e->rec.name,
                .root = e->spec.root ? e->root_path : NULL,
                .new_net = e->spec.namespaces & SPEC_NS_NET,
                .new_user = e->spec.namespaces & SPEC_NS_USER,
                .map_uid = e->rec.owner_uid,
                .map_gid = e->rec.owner_uid,
                .map_count = 1,
                .supervisor_path = n->cfg.supervisor,
                .listen_fd = lfd,
                .log_fd = logfd,
                .cgroup = n->cg,
                .xemem_dir = xemem_dir,
        };
        pid_t pid;
        int pidfd;
        int r = sandbox_spawn_supervisor(&sc, &pid, &pidfd, err);
        if (r < 0) {
                (void)unlink(path);
                return r;
        }
        uint64_t start = 0;
        r = process_start_time(pid, &start, err);
        if (r < 0) {
                (void)syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
                (void)waitid(P_PIDFD, (id_t)pidfd, NULL, WEXITED);
                close(pidfd);
                (void)unlink(path);
                return r;
        }
        e->rec.supervisor_pid = pid;
        e->rec.supervisor_start = start;
        return pidfd;
}

/* Kills the supervisor and everything in the enclave, reaps, removes its groups and socket. */
static int teardown_kernel(struct tessera_node *n, struct enclave *e, int pidfd, struct tessera_error *err)
{
        int r = 0;
        if (n->cg) {
                r = cgroup_enclave_destroy(n->cg, e->rec.name, err);
        } else if (pidfd >= 0) {
                (void)syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
        }
        if (pidfd >= 0) {
                /* reap it if it is our child; harmless ECHILD otherwise */
                (void)syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
                (void)waitid(P_PIDFD, (id_t)pidfd, NULL, WEXITED | WNOHANG);
                struct pollfd p = {.fd = pidfd, .events = POLLIN};
                (void)poll(&p, 1, 2000);
                (void)waitid(P_PIDFD, (id_t)pidfd, NULL, WEXITED | WNOHANG);
        }
        char path[PATH_MAX];
        node_sock_path(n, e->rec.name, path, sizeof(path));
        (void)unlink(path);
        return r;
}

/*
 * The supervisor as the kernel sees it: the one process in the enclave's
 * `supervisor` leaf.  Unlike the recorded pid this is known from the moment
 * of the spawn, so a crash before the record still finds it.
 */
static pid_t supervisor_in_cgroup(struct tessera_node *n, struct enclave *e)
{
        pid_t *pids = NULL, found = 0;
        size_t count = 0;
        if (cgroup_leaf_pids(n->cg, e->rec.name, "supervisor", &pids, &count, NULL) == 0 && count > 0)
                found = pids[0];
        free(pids);
        return found;
}

/* Puts every device the ledger gives the enclave in place; undoes them all on failure. */
static int place_all_devices(struct tessera_node *n, struct enclave *e, struct tessera_error *err)
{
        json_t *devs = NULL;
        int r = ledger_devices_of(n->store, e->rec.id, &devs, err);
        if (r < 0)
                return r;
        size_t i, done = 0;
        json_t *d;
        json_array_foreach(devs, i, d)
        {
                r = place_device(n, e, json_string_value(json_object_get(d, "id")),
                                 json_string_value(json_object_get(d, "kind")), true, err);
                if (r < 0)
                        break;
                done++;
        }
        if (r < 0)
                for (size_t k = done; k-- > 0;) {
                        json_t *u = json_array_get(devs, k);
                        (void)place_device(n, e, json_string_value(json_object_get(u, "id")),
                                           json_string_value(json_object_get(u, "kind")), false, NULL);
                }
        json_decref(devs);
        return r;
}

/* ---- device lookup and reservation ---- */

static const char *device_kind_name(enum topo_device_kind k)
{
        switch (k) {
        case TOPO_DEV_PCI: return "pci";
        case TOPO_DEV_NET: return "net";
        case TOPO_DEV_BLOCK: return "block";
        case TOPO_DEV_CHAR: return "char";
        }
        return "?";
}

static void find_root_disk(struct tessera_node *n)
{
        struct stat st;
        char link[64];
        n->root_disk[0] = '\0';
        if (stat("/", &st) < 0)
                return;
        snprintf(link, sizeof(link), "/sys/dev/block/%u:%u", major(st.st_dev), minor(st.st_dev));
        if (!realpath(link, n->root_disk))
                n->root_disk[0] = '\0';
}

/*
 * What the host cannot live without, whatever the config says: the interface
 * with the default route and the PCI function behind it, and the disk holding
 * the root filesystem with its PCI function.
 */
static bool is_host_critical(struct tessera_node *n, const struct topo_device *d)
{
        if (n->topo->synthetic)
                return false;
        switch (d->kind) {
        case TOPO_DEV_NET: return netdev_has_default_route(d->id);
        case TOPO_DEV_PCI: {
                char needle[80];
                snprintf(needle, sizeof(needle), "/%s/", d->id);
                if (n->root_disk[0] && strstr(n->root_disk, needle))
                        return true;
                for (size_t i = 0; i < n->topo->n_devices; i++) {
                        const struct topo_device *o = &n->topo->devices[i];
                        if (o->kind == TOPO_DEV_NET && STREQ(o->pci, d->id) && netdev_has_default_route(o->id))
                                return true;
                }
                return false;
        }
        case TOPO_DEV_BLOCK: {
                char link[64], path[PATH_MAX];
                snprintf(link, sizeof(link), "/sys/dev/block/%u:%u", d->dev_major, d->dev_minor);
                if (!n->root_disk[0] || !realpath(link, path))
                        return false;
                /* the root partition lives below its disk's sysfs directory */
                return strncmp(n->root_disk, path, strlen(path)) == 0;
        }
        case TOPO_DEV_CHAR: return false;
        }
        return false;
}

static bool is_host_device(struct tessera_node *n, const char *id)
{
        char list[sizeof(n->cfg.host_devices)];
        snprintf(list, sizeof(list), "%s", n->cfg.host_devices);
        char *save = NULL;
        for (char *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
                if (STREQ(tok, id))
                        return true;
        return false;
}

static int take_device(struct tessera_node *n, struct enclave *e, const char *id, const char **ret_kind,
                       struct tessera_error *err)
{
        /* asked first: an interface inside an enclave is invisible to the host's topology */
        char holder[64];
        if (ledger_device_owner(n->store, id, 0, holder, sizeof(holder), NULL) > 0)
                return tessera_error_field(err, EBUSY, "devices", "devices: '%s' is owned by enclave '%s'", id, holder);
        struct topo_device dev;
        int r = topology_find_device(n->topo, id, &dev, err);
        if (r < 0) {
                char why[sizeof(err->msg)];
                snprintf(why, sizeof(why), "%s", err ? err->msg : "no such device");
                return tessera_error_field(err, -r, "devices", "devices: %s", why);
        }
        if (is_host_device(n, dev.id))
                return tessera_error_field(err, EPERM, "devices", "devices: '%s' is kept for the host (host_devices)",
                                           dev.id);
        if (is_host_critical(n, &dev))
                return tessera_error_field(err, EPERM, "devices", "devices: '%s' %s and is never given away", dev.id,
                                           dev.kind == TOPO_DEV_NET ? "carries the host's default route"
                                                                    : "holds the host's root filesystem or network");
        if (dev.kind == TOPO_DEV_NET && !(e->spec.namespaces & SPEC_NS_NET))
                return tessera_error_field(err, EINVAL, "devices",
                                           "devices: enclave '%s' has no net namespace for interface '%s' (add "
                                           "`namespaces: [net]` to its spec)",
                                           e->rec.name, dev.id);
        *ret_kind = device_kind_name(dev.kind);
        return ledger_device_take(n->store, e->rec.id, dev.id, *ret_kind, err);
}

/* ---- node ---- */

static int find_supervisor(struct tessera_config *cfg, struct tessera_error *err)
{
        if (cfg->supervisor[0])
                return access(cfg->supervisor, X_OK) == 0
                               ? 0
                               : tessera_error_set(err, ENOENT, "supervisor: `%s` is not an executable",
                                                   cfg->supervisor);
        char exe[PATH_MAX];
        ssize_t len = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
        if (len > 0) {
                exe[len] = '\0';
                char *slash = strrchr(exe, '/');
                if (slash)
                        *slash = '\0';
                const char *rel[] = {"/tessera-supervisor", "/../supervisor/tessera-supervisor",
                                     "/../libexec/tessera-supervisor"};
                for (size_t i = 0; i < ELEMENTSOF(rel); i++) {
                        char cand[PATH_MAX];
                        snprintf(cand, sizeof(cand), "%s%s", exe, rel[i]);
                        if (access(cand, X_OK) == 0) {
                                snprintf(cfg->supervisor, sizeof(cfg->supervisor), "%s", cand);
                                return 0;
                        }
                }
        }
        snprintf(cfg->supervisor, sizeof(cfg->supervisor), "%s/tessera-supervisor", TESSERA_LIBEXECDIR);
        if (access(cfg->supervisor, X_OK) == 0)
                return 0;
        return tessera_error_set(err, ENOENT,
                                 "cannot find tessera-supervisor next to tesserad or in %s (set "
                                 "`supervisor` in the config)",
                                 TESSERA_LIBEXECDIR);
}

static int host_reserve(struct tessera_node *n, struct tessera_error *err)
{
        n->host.cpus = hwloc_bitmap_alloc();
        if (!n->host.cpus)
                return tessera_error_set(err, ENOMEM, "out of memory");
        if (n->cfg.host_cpus[0] && hwloc_bitmap_list_sscanf(n->host.cpus, n->cfg.host_cpus) < 0)
                return tessera_error_field(err, EINVAL, "host_cpus", "host_cpus: \"%s\" is not a core list",
                                           n->cfg.host_cpus);
        int c;
        hwloc_bitmap_foreach_begin(c, n->host.cpus)
        {
                if (!topology_cpu(n->topo, (unsigned)c))
                        return tessera_error_field(err, EINVAL, "host_cpus",
                                                   "host_cpus: core %d does not exist on this node", c);
        }
        hwloc_bitmap_foreach_end();
        unsigned max_os = 0;
        for (size_t i = 0; i < n->topo->n_numa; i++)
                if (n->topo->numa[i].os_index > max_os)
                        max_os = n->topo->numa[i].os_index;
        _cleanup_free_ uint64_t *by_os = calloc(max_os + 1, sizeof(uint64_t));
        n->host.memory = calloc(n->topo->n_numa ? n->topo->n_numa : 1, sizeof(uint64_t));
        if (!by_os || !n->host.memory)
                return tessera_error_set(err, ENOMEM, "out of memory");
        int r = config_host_memory(&n->cfg, by_os, max_os + 1, err);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n->topo->n_numa; i++)
                n->host.memory[i] = by_os[n->topo->numa[i].os_index];
        n->host.block_size = n->cfg.block_size;
        return 0;
}

/*
 * Exclusive cores need the root group confined to the pool the ledger hands
 * out (all cores but the host's).  With no core kept for the host there is no
 * such pool: the ledger still never gives a core twice, but the kernel is not
 * asked to keep other groups off them.
 */
static void confine_root_group(struct tessera_node *n, json_t *log)
{
        if (hwloc_bitmap_iszero(n->host.cpus)) {
                json_array_append_new(log, json_string("no core kept for the host: enclave cores are exclusive in "
                                                       "the ledger only, not as a kernel cpuset partition"));
                return;
        }
        hwloc_bitmap_t pool = hwloc_bitmap_alloc();
        char *list = NULL;
        for (size_t i = 0; i < n->topo->n_cpus; i++)
                hwloc_bitmap_set(pool, n->topo->cpus[i].os_index);
        hwloc_bitmap_andnot(pool, pool, n->host.cpus);
        hwloc_bitmap_list_asprintf(&list, pool);
        struct tessera_error err = {0};
        if (list && cgroup_root_set_cpus(n->cg, list, &err) == 0)
                n->exclusive_cpus = true;
        else
                json_array_append_new(log,
                                      json_sprintf("enclave cores stay exclusive in the ledger only: %s", err.msg));
        free(list);
        hwloc_bitmap_free(pool);
}

int node_open(const struct tessera_config *cfg, const struct node_watcher *w, json_t *log, struct tessera_node **ret,
              struct tessera_error *err)
{
        struct tessera_node *n = calloc(1, sizeof(*n));
        if (!n)
                return tessera_error_set(err, ENOMEM, "out of memory");
        n->cfg = *cfg;
        /* an application keeps its stem's leaf name (apps/stem-N) for life, across daemon restarts */
        n->stem_seq = (uint64_t)time(NULL) * 1000;
        if (w)
                n->watcher = *w;
        snprintf(n->run_dir, sizeof(n->run_dir), "%s/run", cfg->state_dir);
        snprintf(n->log_dir, sizeof(n->log_dir), "%s/log", cfg->state_dir);
        int r = mkdir_p(cfg->state_dir, 0700, err);
        if (r == 0)
                r = mkdir_p(n->run_dir, 0700, err);
        if (r == 0)
                r = mkdir_p(n->log_dir, 0700, err);
        if (r == 0)
                r = topology_load(cfg->topology[0] ? cfg->topology : NULL, &n->topo, err);
        if (r == 0)
                r = host_reserve(n, err);
        if (r == 0 && !n->topo->synthetic) {
                find_root_disk(n);
                r = find_supervisor(&n->cfg, err);
                if (r == 0)
                        r = tessera_cgroup_open(cfg->cgroup_root, NULL, &n->cg, err);
                if (r == 0)
                        confine_root_group(n, log);
                /* forked before the store is opened: the mover holds no descriptor of it */
                struct tessera_error merr = {0};
                if (r == 0 && mover_start(n->cg, &n->mover, &merr) < 0)
                        json_array_append_new(log, json_sprintf("no cgroup mover, moves happen inline: %s", merr.msg));
        }
        char db[PATH_MAX + 16];
        snprintf(db, sizeof(db), "%s/tessera.db", cfg->state_dir);
        if (r == 0)
                r = store_open(db, cfg->sync_full, &n->store, err);
        if (r == 0) {
                r = store_begin(n->store, err);
                if (r == 0)
                        r = ledger_init(n->store, n->topo, &n->host, log, err);
                if (r == 0)
                        r = store_commit(n->store, err);
                else
                        store_rollback(n->store);
        }
        if (r < 0) {
                node_close(n);
                return r;
        }
        *ret = n;
        return 0;
}

void node_close(struct tessera_node *n)
{
        if (!n)
                return;
        for (size_t i = 0; i < n->n_watches; i++)
                close(n->watches[i].pidfd);
        free(n->watches);
        for (size_t i = 0; i < n->n_stems; i++)
                close(n->stems[i].pidfd);
        free(n->stems);
        mover_stop(n->mover);
        store_close(n->store);
        if (n->cg)
                tessera_cgroup_free(n->cg);
        topology_free(n->topo);
        hwloc_bitmap_free(n->host.cpus);
        free(n->host.memory);
        free(n);
}

/* ---- huge pages ---- */

#define HUGEPAGE_SIZE (2ULL << 20)

static void hugepage_path(unsigned numa, char *buf, size_t n)
{
        snprintf(buf, n, "/sys/devices/system/node/node%u/hugepages/hugepages-2048kB/nr_hugepages", numa);
}

/*
 * The 2 MiB pool of each NUMA node is what the node had before tesserad
 * touched it (kept in the store) plus the blocks of every enclave whose spec
 * asks for huge pages.  Written whole each time, so a crash between a change
 * and its commit is mended by the next call (reconcile makes one).  Raising
 * the pool can fail when memory is too fragmented: then nothing changes.
 */
static int hugepages_apply(struct tessera_node *n, struct tessera_error *err)
{
        static const char sql[] = "SELECT b.numa, COUNT(*) FROM blocks b JOIN enclaves e ON b.enclave_id = e.id "
                                  "WHERE json_extract(e.spec, '$.hugepages') = 1 GROUP BY b.numa";
        if (!n->cg)
                return 0;
        uint64_t want_blocks[1024] = {0};
        sqlite3_stmt *st = store_stmt(n->store, sql, err);
        if (!st)
                return -EIO;
        bool any = false;
        while (sqlite3_step(st) == SQLITE_ROW) {
                int node = sqlite3_column_int(st, 0);
                if (node >= 0 && node < 1024) {
                        want_blocks[node] = (uint64_t)sqlite3_column_int64(st, 1);
                        any = true;
                }
        }
        sqlite3_reset(st);
        for (size_t i = 0; i < n->topo->n_numa; i++) {
                unsigned node = n->topo->numa[i].os_index;
                char key[64], buf[32], path[128];
                snprintf(key, sizeof(key), "hugepages_baseline_node%u", node);
                hugepage_path(node, path, sizeof(path));
                const char *base_s = store_meta_get(n->store, key, buf, sizeof(buf));
                if (!base_s && !any)
                        continue; /* never touched: leave the host's pool alone */
                char now_s[32];
                if (read_file_at(AT_FDCWD, path, now_s, sizeof(now_s), err) < 0)
                        return tessera_error_prefix(err, -EOPNOTSUPP, "huge pages on NUMA node %u", node);
                uint64_t base = 0, now = 0;
                (void)parse_uint64(now_s, UINT64_MAX, &now);
                if (base_s)
                        (void)parse_uint64(base_s, UINT64_MAX, &base);
                else {
                        base = now;
                        int r = store_meta_set(n->store, key, now_s, err);
                        if (r < 0)
                                return r;
                }
                uint64_t want = base + want_blocks[node < 1024 ? node : 0] * (n->host.block_size / HUGEPAGE_SIZE);
                if (want == now)
                        continue;
                char v[32];
                snprintf(v, sizeof(v), "%llu", (unsigned long long)want);
                int r = write_file_at(AT_FDCWD, path, v, err);
                if (r < 0)
                        return r;
                uint64_t got = 0;
                if (read_file_at(AT_FDCWD, path, now_s, sizeof(now_s), NULL) >= 0)
                        (void)parse_uint64(now_s, UINT64_MAX, &got);
                if (got < want) {
                        snprintf(v, sizeof(v), "%llu", (unsigned long long)now);
                        (void)write_file_at(AT_FDCWD, path, v, NULL);
                        return tessera_error_field(err, ENOMEM, "hugepages",
                                                   "hugepages: NUMA node %u gave %llu of %llu huge pages (its memory "
                                                   "is too fragmented or in use)",
                                                   node, (unsigned long long)got, (unsigned long long)want);
                }
        }
        return 0;
}

/* ---- create ---- */

static int reserve_resources(struct tessera_node *n, struct enclave *e, struct tessera_error *err)
{
        const struct tessera_spec *s = &e->spec;
        int r;
        if (s->cpu_list)
                r = ledger_cpus_take_list(n->store, e->rec.id, s->cpu_list, err);
        else
                r = ledger_cpus_take_count(n->store, e->rec.id, s->cpu_count, s->numa, NULL, err);
        if (r < 0)
                return r;
        uint64_t blocks = (s->memory_bytes + n->host.block_size - 1) / n->host.block_size;
        if (blocks > UINT32_MAX)
                return tessera_error_field(err, ERANGE, "memory", "memory: too large");
        r = ledger_blocks_take(n->store, e->rec.id, (unsigned)blocks, -1, s->numa, err);
        if (r < 0)
                return r;
        for (size_t i = 0; i < s->n_devices; i++) {
                const char *kind;
                r = take_device(n, e, s->devices[i], &kind, err);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int hugepages_apply(struct tessera_node *n, struct tessera_error *err);

/* The enclave's root image goes when the enclave is forgotten (a kept overlay stays, and the log says where). */
static void release_root(struct tessera_node *n, struct enclave *e, json_t *log)
{
        if (!e->spec.root || !n->cg)
                return;
        struct tessera_error ierr = {0};
        int r = image_release(e->spec.root, n->cfg.state_dir, e->rec.name, &ierr);
        char where[PATH_MAX];
        if (r == 1 && log && image_roots_path(n->cfg.state_dir, e->rec.name, where, sizeof(where), NULL) == 0)
                json_array_append_new(
                        log, json_sprintf("enclave '%s': its root overlay is kept in `%s`", e->rec.name, where));
        else if (r < 0 && log)
                json_array_append_new(log, json_sprintf("enclave '%s': %s", e->rec.name, ierr.msg));
}

/* Removes the record and its resources; the kernel side must already be gone. */
static int forget_enclave(struct tessera_node *n, int64_t id, struct tessera_error *err)
{
        int r = store_begin(n->store, err);
        if (r < 0)
                return r;
        r = ledger_give_back_all(n->store, id, err);
        if (r == 0)
                r = ledger_enclave_delete(n->store, id, err);
        if (r == 0)
                r = store_commit(n->store, err);
        else
                store_rollback(n->store);
        if (r == 0)
                (void)hugepages_apply(n, NULL); /* its huge pages go back to the host */
        return r;
}

static int create_kernel(struct tessera_node *n, struct enclave *e, int *ret_pidfd, struct tessera_error *err)
{
        int r = e->spec.hugepages ? hugepages_apply(n, err) : 0;
        if (r == 0)
                r = cgroup_enclave_create(n->cg, e->rec.name, err);
        if (r == 0)
                r = apply_limits(n, e, err);
        if (r == 0)
                r = apply_devices(n, e, err);
        if (r < 0)
                goto fail;
        fault_point("create:cgroup");
        /* the root stays mounted across supervisor restarts; only forgetting the enclave releases it */
        if (e->spec.root) {
                r = image_prepare(e->spec.root, n->cfg.state_dir, e->rec.name, e->root_path, sizeof(e->root_path), err);
                if (r < 0)
                        goto fail;
        }
        int pidfd = start_supervisor(n, e, err);
        if (pidfd < 0) {
                r = pidfd;
                goto fail;
        }
        fault_point("create:spawned");
        r = place_all_devices(n, e, err);
        if (r < 0) {
                struct tessera_error undo = {0};
                (void)teardown_kernel(n, e, pidfd, &undo);
                close(pidfd);
                return r;
        }
        fault_point("create:devices");
        *ret_pidfd = pidfd;
        return 0;
fail : {
        struct tessera_error undo = {0};
        (void)cgroup_enclave_destroy(n->cg, e->rec.name, &undo);
}
        return r;
}

int enclave_create(struct tessera_node *n, uid_t caller, json_t *spec_json, json_t **ret, struct tessera_error *err)
{
        if (caller != 0)
                return tessera_error_set(err, EPERM,
                                         "only root creates enclaves (ask the administrator for one "
                                         "with `tessera create --owner`)");
        _cleanup_enclave_ struct enclave e = {0};
        spec_init(&e.spec);
        int r = spec_from_json(spec_json, &e.spec, err);
        if (r == 0)
                r = spec_validate(&e.spec, err);
        if (r < 0)
                return r;
        if (e.spec.type == SPEC_VM)
                return tessera_error_field(err, EOPNOTSUPP, "type", "type: vm enclaves are not available yet");
        if (e.spec.root && !node_ledger_only(n)) {
                /* a missing or malformed image fails here, before anything is reserved */
                struct image_ref resolved;
                r = image_ref_resolve(e.spec.root, &resolved, err);
                if (r < 0)
                        return tessera_error_field(err, -r, "root", "root: %s", strdupa(err->msg));
        }
        uid_t owner = 0;
        if (e.spec.owner[0]) {
                r = resolve_owner(e.spec.owner, &owner, err);
                if (r < 0)
                        return r;
        }
        json_t *norm = spec_to_json(&e.spec);
        _cleanup_free_ char *spec_text = norm ? json_dumps(norm, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
        json_decref(norm);
        if (!spec_text)
                return tessera_error_set(err, ENOMEM, "out of memory");

        /* 1. the record and its resources, durable as 'creating' */
        r = store_begin(n->store, err);
        if (r < 0)
                return r;
        r = ledger_enclave_insert(n->store, e.spec.name, "native", owner, spec_text, &e.rec.id, err);
        if (r == 0)
                r = reserve_resources(n, &e, err);
        if (r == 0)
                r = store_commit(n->store, err);
        if (r < 0) {
                store_rollback(n->store);
                return r;
        }
        fault_point("create:recorded");
        snprintf(e.rec.name, sizeof(e.rec.name), "%s", e.spec.name);
        snprintf(e.rec.type, sizeof(e.rec.type), "native");
        e.rec.owner_uid = owner;

        /* 2. the kernel side, each step undone on failure */
        int pidfd = -1;
        if (n->cg) {
                r = create_kernel(n, &e, &pidfd, err);
                if (r < 0) {
                        release_root(n, &e, NULL);
                        (void)forget_enclave(n, e.rec.id, NULL);
                        return r;
                }
        }

        /* 3. running, committed before the reply */
        r = store_begin(n->store, err);
        if (r == 0)
                r = ledger_enclave_set_supervisor(n->store, e.rec.id, e.rec.supervisor_pid, e.rec.supervisor_start,
                                                  err);
        if (r == 0)
                r = ledger_enclave_set_state(n->store, e.rec.id, "running", NULL, err);
        if (r == 0)
                r = store_commit(n->store, err);
        if (r < 0) {
                store_rollback(n->store);
                struct tessera_error undo = {0};
                if (n->cg)
                        (void)teardown_kernel(n, &e, pidfd, &undo);
                if (pidfd >= 0)
                        close(pidfd);
                release_root(n, &e, NULL);
                (void)forget_enclave(n, e.rec.id, NULL);
                return r;
        }
        fault_point("create:committed");
        if (pidfd >= 0 && watch_add(n, e.rec.id, pidfd) < 0)
                close(pidfd); /* still managed; reconcile re-attaches it after a restart */
        snprintf(e.rec.state, sizeof(e.rec.state), "running");
        json_t *o = enclave_json(n, &e, err);
        if (!o)
                return -ENOMEM;
        *ret = o;
        return 0;
}

/* ---- destroy ---- */

static int destroy_loaded(struct tessera_node *n, struct enclave *e, struct tessera_error *err)
{
        int r = store_begin(n->store, err);
        if (r == 0)
                r = ledger_enclave_set_state(n->store, e->rec.id, "destroying", NULL, err);
        if (r == 0)
                r = store_commit(n->store, err);
        if (r < 0) {
                store_rollback(n->store);
                return r;
        }
        fault_point("destroy:marked");
        int pidfd = watch_find(n, e->rec.id);
        if (n->cg) {
                pid_t pid = supervisor_in_cgroup(n, e);
                /* interfaces first: killing the namespace would destroy virtual ones */
                if (pid > 0 && enclave_has_own_netns(pid))
                        return_all_interfaces(n, pid);
                fault_point("destroy:devices");
                r = teardown_kernel(n, e, pidfd, err);
                if (r < 0)
                        return tessera_error_prefix(err, r, "destroy '%s'", e->rec.name);
                fault_point("destroy:killed");
        }
        watch_remove(n, e->rec.id);
        app_pool_drop(n, e->rec.id);
        release_root(n, e, NULL);
        return forget_enclave(n, e->rec.id, err);
}

int enclave_destroy(struct tessera_node *n, uid_t caller, const char *name, struct tessera_error *err)
{
        _cleanup_enclave_ struct enclave e;
        int r = enclave_load(n, caller, name, &e, err);
        if (r < 0)
                return r;
        return destroy_loaded(n, &e, err);
}

/* ---- listing and ping ---- */

int enclave_list(struct tessera_node *n, uid_t caller, json_t **ret, struct tessera_error *err)
{
        struct enclave_record *recs = NULL;
        size_t count = 0;
        int r = ledger_enclave_list(n->store, &recs, &count, err);
        if (r < 0)
                return r;
        json_t *a = json_array();
        for (size_t i = 0; i < count && r == 0; i++) {
                if (caller != 0 && recs[i].owner_uid != caller)
                        continue;
                struct enclave e = {.rec = recs[i]};
                spec_init(&e.spec);
                json_t *j = json_loads(recs[i].spec, 0, NULL);
                if (j)
                        (void)spec_from_json(j, &e.spec, NULL);
                json_decref(j);
                json_t *o = enclave_json(n, &e, err);
                spec_done(&e.spec);
                if (!o)
                        r = -EIO;
                else
                        json_array_append_new(a, o);
        }
        enclave_records_free(recs, count);
        if (r < 0) {
                json_decref(a);
                return r;
        }
        *ret = a;
        return 0;
}

/* One request to a supervisor, bounded in time: a wedged enclave must not wedge tesserad. */
int supervisor_call_fds(struct tessera_node *n, const char *name, json_t *req, const int *fds_in, size_t n_in,
                        json_t **ret, int *fds_out, size_t *n_out, struct tessera_error *err)
{
        char path[PATH_MAX];
        node_sock_path(n, name, path, sizeof(path));
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return tessera_error_set(err, errno, "cannot create a socket: %s", strerror(errno));
        struct timeval tv = {.tv_sec = 2};
        (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                return tessera_error_set(err, errno, "enclave '%s': supervisor unreachable at `%s`: %s", name, path,
                                         strerror(errno));
        int r = proto_send(fd, req, fds_in, n_in, err);
        if (r < 0)
                return tessera_error_prefix(err, r, "enclave '%s'", name);
        json_t *reply = NULL;
        size_t got = n_out ? *n_out : 0;
        r = proto_recv(fd, &reply, fds_out, &got, err);
        if (n_out)
                *n_out = 0;
        if (r < 0) {
                for (size_t i = 0; i < got; i++)
                        close(fds_out[i]);
                return tessera_error_prefix(err, r, "enclave '%s': supervisor", name);
        }
        json_t *res = NULL;
        r = proto_reply_result(reply, &res, err);
        if (r == 0) {
                *ret = json_incref(res);
                if (n_out)
                        *n_out = got;
        } else {
                for (size_t i = 0; i < got; i++)
                        close(fds_out[i]);
        }
        json_decref(reply);
        return r;
}

int supervisor_call(struct tessera_node *n, const char *name, json_t *req, json_t **ret, struct tessera_error *err)
{
        return supervisor_call_fds(n, name, req, NULL, 0, ret, NULL, NULL, err);
}

int enclave_ping(struct tessera_node *n, uid_t caller, const char *name, json_t **ret, struct tessera_error *err)
{
        _cleanup_enclave_ struct enclave e;
        int r = enclave_load(n, caller, name, &e, err);
        if (r < 0)
                return r;
        if (!STREQ(e.rec.state, "running"))
                return tessera_error_set(err, EHOSTDOWN, "enclave '%s' is %s%s%s", name, e.rec.state,
                                         e.rec.cause[0] ? ": " : "", e.rec.cause);
        if (!n->cg)
                return tessera_error_set(err, EOPNOTSUPP, "enclave '%s' is ledger-only: there is no supervisor to ping",
                                         name);
        json_t *req = proto_request("ping"), *res = NULL;
        uint64_t t0 = now_ns();
        r = supervisor_call(n, name, req, &res, err);
        uint64_t rtt = now_ns() - t0;
        json_decref(req);
        if (r < 0)
                return r;
        json_decref(res);
        *ret = json_pack("{s:s, s:s, s:i, s:I}", "name", name, "state", e.rec.state, "supervisor_pid",
                         (int)e.rec.supervisor_pid, "rtt_us", (json_int_t)(rtt / 1000));
        return 0;
}

/* ---- assign and release ---- */

struct change {
        const char *cpus;   /* "2" or "4-5" */
        const char *memory; /* "256M" or "256M@1" */
        const char *device;
};

static int parse_memory_arg(struct tessera_node *n, const char *arg, unsigned *ret_blocks, int *ret_numa,
                            struct tessera_error *err)
{
        char buf[64];
        snprintf(buf, sizeof(buf), "%s", arg);
        *ret_numa = -1;
        char *at = strchr(buf, '@');
        if (at) {
                *at = '\0';
                uint64_t node;
                if (parse_uint64(at + 1, INT32_MAX, &node) < 0 || !topology_numa(n->topo, (unsigned)node))
                        return tessera_error_field(err, EINVAL, "memory",
                                                   "memory: \"%s\" names no NUMA node of this "
                                                   "node",
                                                   at + 1);
                *ret_numa = (int)node;
        }
        uint64_t bytes;
        if (parse_size(buf, &bytes) < 0 || bytes == 0)
                return tessera_error_field(err, EINVAL, "memory", "memory: \"%s\" is not a size (use K, M, G, T)", buf);
        if (bytes % n->host.block_size)
                return tessera_error_field(err, EINVAL, "memory", "memory: %s is not a whole number of %lluM blocks",
                                           buf, (unsigned long long)(n->host.block_size >> 20));
        *ret_blocks = (unsigned)(bytes / n->host.block_size);
        return 0;
}

/* Cores as asked: a bare count takes or gives back that many, a list names them. */
static int change_cpus(struct tessera_node *n, struct enclave *e, const char *arg, bool release,
                       struct tessera_error *err)
{
        uint64_t count;
        if (parse_uint64(arg, 4096, &count) == 0) {
                if (count == 0)
                        return tessera_error_field(err, EINVAL, "cpus", "cpus: a count must be at least 1");
                hwloc_bitmap_t tmp = hwloc_bitmap_alloc();
                int r = release ? ledger_cpus_give_back_count(n->store, e->rec.id, (unsigned)count, tmp, err)
                                : ledger_cpus_take_count(n->store, e->rec.id, (unsigned)count, e->spec.numa, tmp, err);
                hwloc_bitmap_free(tmp);
                return r;
        }
        hwloc_bitmap_t list = hwloc_bitmap_alloc();
        if (!list)
                return tessera_error_set(err, ENOMEM, "out of memory");
        int r = 0;
        if (hwloc_bitmap_list_sscanf(list, arg) < 0 || hwloc_bitmap_iszero(list) || hwloc_bitmap_weight(list) < 0)
                r = tessera_error_field(err, EINVAL, "cpus",
                                        "cpus: \"%s\" is neither a count nor a core list (\"4-5,7\")", arg);
        else
                r = release ? ledger_cpus_give_back(n->store, e->rec.id, list, err)
                            : ledger_cpus_take_list(n->store, e->rec.id, list, err);
        hwloc_bitmap_free(list);
        return r;
}

static int ensure_some_cpu(struct tessera_node *n, struct enclave *e, struct tessera_error *err)
{
        hwloc_bitmap_t c = hwloc_bitmap_alloc();
        int r = ledger_cpus_of(n->store, e->rec.id, c, err);
        if (r == 0 && hwloc_bitmap_iszero(c))
                r = tessera_error_field(err, EINVAL, "cpus", "cpus: an enclave keeps at least one core");
        hwloc_bitmap_free(c);
        return r;
}

int enclave_change(struct tessera_node *n, uid_t caller, json_t *args, bool release, json_t **ret,
                   struct tessera_error *err)
{
        const char *name = json_string_value(json_object_get(args, "name"));
        struct change c = {
                .cpus = json_string_value(json_object_get(args, "cpus")),
                .memory = json_string_value(json_object_get(args, "memory")),
                .device = json_string_value(json_object_get(args, "device")),
        };
        const char *op = release ? "release" : "assign";
        if (!c.cpus && !c.memory && !c.device)
                return tessera_error_set(err, EINVAL, "%s: give cpus, memory or device (as strings)", op);
        if (caller != 0 && !release)
                return tessera_error_set(err, EPERM, "only root assigns node resources");
        _cleanup_enclave_ struct enclave e;
        int r = enclave_load(n, caller, name, &e, err);
        if (r < 0)
                return r;
        if (!STREQ(e.rec.state, "running"))
                return tessera_error_set(err, EBUSY, "enclave '%s' is %s, not running", name, e.rec.state);

        r = store_begin(n->store, err);
        if (r < 0)
                return r;
        const char *dev_kind = NULL;
        if (c.cpus)
                r = change_cpus(n, &e, c.cpus, release, err);
        if (r == 0 && c.cpus && release)
                r = ensure_some_cpu(n, &e, err);
        if (r == 0 && c.memory) {
                unsigned blocks = 0;
                int numa = -1;
                r = parse_memory_arg(n, c.memory, &blocks, &numa, err);
                if (r == 0)
                        r = release ? ledger_blocks_give_back(n->store, e.rec.id, blocks, numa, err)
                                    : ledger_blocks_take(n->store, e.rec.id, blocks, numa, e.spec.numa, err);
        }
        if (r == 0 && c.device) {
                if (release) {
                        json_t *devs = NULL;
                        r = ledger_devices_of(n->store, e.rec.id, &devs, err);
                        size_t i;
                        json_t *d;
                        json_array_foreach(devs, i, d) if (STREQ(json_string_value(json_object_get(d, "id")), c.device))
                                dev_kind = json_string_value(json_object_get(d, "kind"));
                        dev_kind = dev_kind ? strdupa(dev_kind) : NULL;
                        json_decref(devs);
                        if (r == 0)
                                r = ledger_device_give_back(n->store, e.rec.id, c.device, err);
                } else {
                        r = take_device(n, &e, c.device, &dev_kind, err);
                }
        }
        if (r < 0)
                goto rollback;
        fault_point("assign:ledger");

        /* the kernel follows the ledger; each step is undone if a later one fails */
        bool moved = false;
        if (n->cg && c.device && dev_kind && !release) {
                r = place_device(n, &e, c.device, dev_kind, true, err);
                if (r < 0)
                        goto rollback;
                moved = true;
        }
        if (c.memory && e.spec.hugepages)
                r = hugepages_apply(n, err);
        if (r == 0)
                r = apply_limits(n, &e, err);
        if (r == 0 && c.device)
                r = apply_devices(n, &e, err);
        if (r == 0 && n->cg && c.device && dev_kind && release)
                r = place_device(n, &e, c.device, dev_kind, false, err);
        if (r < 0)
                goto undo;
        fault_point(release ? "release:kernel" : "assign:kernel");
        r = store_commit(n->store, err);
        if (r < 0)
                goto undo;
        *ret = enclave_json(n, &e, err);
        return *ret ? 0 : -EIO;

undo:
        store_rollback(n->store);
        {
                /* back to what the store (now rolled back) says */
                struct tessera_error undo_err = {0};
                if (moved)
                        (void)place_device(n, &e, c.device, dev_kind, false, &undo_err);
                (void)apply_limits(n, &e, &undo_err);
                (void)apply_devices(n, &e, &undo_err);
                if (c.memory && e.spec.hugepages)
                        (void)hugepages_apply(n, &undo_err);
        }
        return r;
rollback:
        store_rollback(n->store);
        return r;
}

/* ---- failures ---- */

static void exit_cause(int pidfd, pid_t pid, char *buf, size_t n)
{
        siginfo_t si = {0};
        if (pidfd >= 0 && waitid(P_PIDFD, (id_t)pidfd, &si, WEXITED | WNOHANG) == 0 && si.si_pid != 0) {
                if (si.si_code == CLD_EXITED)
                        snprintf(buf, n, "supervisor (pid %d) exited with status %d", (int)pid, si.si_status);
                else
                        snprintf(buf, n, "supervisor (pid %d) killed by signal %d (%s)", (int)pid, si.si_status,
                                 strsignal(si.si_status));
                return;
        }
        snprintf(buf, n, "supervisor (pid %d) exited", (int)pid);
}

static int restart_enclave(struct tessera_node *n, struct enclave *e, json_t *log, struct tessera_error *err)
{
        struct tessera_error undo = {0};
        (void)cgroup_enclave_destroy(n->cg, e->rec.name, &undo);
        int r = store_begin(n->store, err);
        if (r < 0)
                return r;
        /* virtual interfaces died with the namespace: they leave the ledger */
        json_t *devs = NULL;
        r = ledger_devices_of(n->store, e->rec.id, &devs, err);
        size_t i;
        json_t *d;
        json_array_foreach(devs, i, d)
        {
                const char *id = json_string_value(json_object_get(d, "id"));
                if (STREQ(json_string_value(json_object_get(d, "kind")), "net") && !netdev_exists(id)) {
                        (void)ledger_device_give_back(n->store, e->rec.id, id, NULL);
                        json_array_append_new(log, json_sprintf("enclave '%s': interface '%s' vanished with its "
                                                                "namespace",
                                                                e->rec.name, id));
                }
        }
        json_decref(devs);
        int pidfd = -1;
        if (r == 0)
                r = create_kernel(n, e, &pidfd, err);
        if (r == 0)
                r = ledger_enclave_set_supervisor(n->store, e->rec.id, e->rec.supervisor_pid, e->rec.supervisor_start,
                                                  err);
        if (r == 0)
                r = ledger_enclave_count_restart(n->store, e->rec.id, err);
        if (r == 0)
                r = ledger_enclave_set_state(n->store, e->rec.id, "running", NULL, err);
        if (r == 0)
                r = store_commit(n->store, err);
        if (r < 0) {
                store_rollback(n->store);
                if (pidfd >= 0) {
                        (void)teardown_kernel(n, e, pidfd, &undo);
                        close(pidfd);
                }
                return r;
        }
        (void)watch_add(n, e->rec.id, pidfd);
        return 0;
}

/* The supervisor is gone: record why, then do what the spec's on_failure says. */
static int handle_failure(struct tessera_node *n, struct enclave *e, const char *cause, json_t *log,
                          struct tessera_error *err)
{
        app_pool_drop(n, e->rec.id); /* they died with the supervisor */
        json_array_append_new(log, json_sprintf("enclave '%s' failed: %s (on_failure: %s)", e->rec.name, cause,
                                                spec_on_failure_name(e->spec.on_failure)));
        if (e->spec.on_failure == ON_FAILURE_RESTART) {
                struct tessera_error rerr = {0};
                if (restart_enclave(n, e, log, &rerr) == 0) {
                        json_array_append_new(log, json_sprintf("enclave '%s' restarted", e->rec.name));
                        app_pool_refill(n, e->rec.name);
                        return 0;
                }
                json_array_append_new(log, json_sprintf("enclave '%s': restart failed: %s", e->rec.name, rerr.msg));
        }
        struct tessera_error undo = {0};
        if (e->spec.on_failure != ON_FAILURE_KEEP && n->cg)
                (void)teardown_kernel(n, e, -1, &undo);
        int r = store_begin(n->store, err);
        if (r == 0 && e->spec.on_failure != ON_FAILURE_KEEP)
                r = ledger_give_back_all(n->store, e->rec.id, err);
        if (r == 0)
                r = ledger_enclave_set_state(n->store, e->rec.id, "failed", cause, err);
        if (r == 0)
                r = store_commit(n->store, err);
        else
                store_rollback(n->store);
        if (r == 0 && e->spec.hugepages && e->spec.on_failure != ON_FAILURE_KEEP)
                (void)hugepages_apply(n, NULL);
        return r;
}

int enclave_supervisor_exited(struct tessera_node *n, int64_t id, json_t *log, struct tessera_error *err)
{
        char name[64] = "";
        (void)ledger_enclave_name(n->store, id, name, sizeof(name));
        int pidfd = watch_find(n, id);
        _cleanup_enclave_ struct enclave e;
        int r = enclave_load(n, 0, name, &e, err);
        if (r < 0) {
                watch_remove(n, id);
                return r;
        }
        char cause[256];
        exit_cause(pidfd, e.rec.supervisor_pid, cause, sizeof(cause));
        watch_remove(n, id);
        return handle_failure(n, &e, cause, log, err);
}

/* ---- reconcile ---- */

static bool name_in(char **names, size_t n, const char *name)
{
        for (size_t i = 0; i < n; i++)
                if (STREQ(names[i], name))
                        return true;
        return false;
}

/* A running record: re-attach its supervisor and make the kernel match the store. */
static int reconcile_running(struct tessera_node *n, struct enclave *e, json_t *log, struct tessera_error *err)
{
        if (!n->cg)
                return 0;
        struct tessera_error perr = {0};
        int pidfd = e->rec.supervisor_pid > 0
                            ? pidfd_open_checked(e->rec.supervisor_pid, e->rec.supervisor_start, &perr)
                            : -ESRCH;
        /* a pidfd polls readable once its process has exited, zombies included */
        struct pollfd exited = {.fd = pidfd, .events = POLLIN};
        if (pidfd >= 0 && poll(&exited, 1, 0) == 1) {
                close(pidfd);
                pidfd = -ESRCH;
        }
        if (pidfd < 0)
                return handle_failure(n, e, "supervisor died while tesserad was away", log, err);
        if (!cgroup_enclave_exists(n->cg, e->rec.name)) {
                close(pidfd);
                return handle_failure(n, e, "its cgroup vanished while tesserad was away", log, err);
        }
        int r = apply_limits(n, e, err);
        if (r == 0)
                r = apply_devices(n, e, err);
        if (r < 0) {
                close(pidfd);
                return tessera_error_prefix(err, r, "re-applying limits of '%s'", e->rec.name);
        }
        /* interfaces: the ledger decides which are inside */
        if (enclave_has_own_netns(e->rec.supervisor_pid)) {
                json_t *devs = NULL;
                char **inside = NULL;
                size_t n_inside = 0;
                (void)ledger_devices_of(n->store, e->rec.id, &devs, NULL);
                (void)netdev_list_in_pid(e->rec.supervisor_pid, &inside, &n_inside, NULL);
                for (size_t i = 0; i < n_inside; i++) {
                        bool owned = false;
                        size_t k;
                        json_t *d;
                        json_array_foreach(devs, k, d) if (STREQ(json_string_value(json_object_get(d, "id")),
                                                                 inside[i])) owned = true;
                        if (!owned && netdev_move_from_pid(inside[i], e->rec.supervisor_pid, NULL) == 0)
                                json_array_append_new(log, json_sprintf("enclave '%s': gave back interface '%s' it "
                                                                        "did not own",
                                                                        e->rec.name, inside[i]));
                }
                size_t k;
                json_t *d;
                json_array_foreach(devs, k, d)
                {
                        const char *id = json_string_value(json_object_get(d, "id"));
                        if (STREQ(json_string_value(json_object_get(d, "kind")), "net") &&
                            !name_in(inside, n_inside, id) && netdev_exists(id) &&
                            netdev_move_to_pid(id, e->rec.supervisor_pid, NULL) == 0)
                                json_array_append_new(log, json_sprintf("enclave '%s': moved owned interface '%s' "
                                                                        "back in",
                                                                        e->rec.name, id));
                }
                for (size_t i = 0; i < n_inside; i++)
                        free(inside[i]);
                free(inside);
                json_decref(devs);
        }
        if (watch_find(n, e->rec.id) < 0)
                (void)watch_add(n, e->rec.id, pidfd);
        else
                close(pidfd);
        json_array_append_new(log, json_sprintf("enclave '%s' re-attached (supervisor pid %d)", e->rec.name,
                                                (int)e->rec.supervisor_pid));
        struct tessera_error aerr = {0};
        if (apps_reconcile(n, e, log, &aerr) < 0)
                json_array_append_new(log, json_sprintf("enclave '%s': applications: %s", e->rec.name, aerr.msg));
        app_pool_refill(n, e->rec.name);
        return 0;
}

static int reconcile_one(struct tessera_node *n, struct enclave *e, json_t *log, struct tessera_error *err)
{
        if (STREQ(e->rec.state, "creating")) {
                /* half-created: whatever the kernel has of it goes, then the record */
                if (n->cg) {
                        pid_t sup = supervisor_in_cgroup(n, e);
                        if (sup > 0 && enclave_has_own_netns(sup))
                                return_all_interfaces(n, sup);
                        int r = teardown_kernel(n, e, -1, err);
                        if (r < 0)
                                return r;
                }
                release_root(n, e, log);
                int r = forget_enclave(n, e->rec.id, err);
                if (r == 0)
                        json_array_append_new(log, json_sprintf("rolled back half-created enclave '%s'", e->rec.name));
                return r;
        }
        if (STREQ(e->rec.state, "destroying")) {
                int r = destroy_loaded(n, e, err);
                if (r == 0)
                        json_array_append_new(log, json_sprintf("finished destroying enclave '%s'", e->rec.name));
                return r;
        }
        if (STREQ(e->rec.state, "running"))
                return reconcile_running(n, e, log, err);
        /* failed: resources follow on_failure (a crash may have come between the two) */
        if (e->spec.on_failure != ON_FAILURE_KEEP) {
                unsigned blocks = 0;
                (void)ledger_blocks_of(n->store, e->rec.id, &blocks, NULL, NULL);
                hwloc_bitmap_t c = hwloc_bitmap_alloc();
                (void)ledger_cpus_of(n->store, e->rec.id, c, NULL);
                bool holds = blocks > 0 || !hwloc_bitmap_iszero(c);
                hwloc_bitmap_free(c);
                if (holds)
                        return handle_failure(n, e, e->rec.cause, log, err);
        }
        return 0;
}

int node_reconcile(struct tessera_node *n, json_t *log, struct tessera_error *err)
{
        struct enclave_record *recs = NULL;
        size_t count = 0;
        int r = ledger_enclave_list(n->store, &recs, &count, err);
        if (r < 0)
                return r;
        int first = 0;
        for (size_t i = 0; i < count; i++) {
                _cleanup_enclave_ struct enclave e;
                struct tessera_error eerr = {0};
                r = enclave_load(n, 0, recs[i].name, &e, &eerr);
                if (r == 0)
                        r = reconcile_one(n, &e, log, &eerr);
                if (r < 0) {
                        json_array_append_new(log, json_sprintf("enclave '%s': %s", recs[i].name, eerr.msg));
                        if (!first) {
                                first = r;
                                if (err)
                                        *err = eerr;
                        }
                }
        }
        if (n->cg) {
                char **groups = NULL;
                size_t n_groups = 0;
                r = cgroup_list_enclaves(n->cg, &groups, &n_groups, err);
                if (r < 0) {
                        enclave_records_free(recs, count);
                        return r;
                }
                for (size_t g = 0; g < n_groups; g++) {
                        bool known = false;
                        for (size_t i = 0; i < count; i++)
                                if (STREQ(recs[i].name, groups[g]))
                                        known = true;
                        struct enclave_record probe;
                        /* a record may have been forgotten just now (rolled back above) */
                        if (known && ledger_enclave_get(n->store, groups[g], &probe, NULL) == 0)
                                enclave_record_done(&probe);
                        else if (known)
                                known = false;
                        if (!known) {
                                struct tessera_error gerr = {0};
                                if (cgroup_enclave_destroy(n->cg, groups[g], &gerr) == 0)
                                        json_array_append_new(log, json_sprintf("removed stray cgroup '%s' and its "
                                                                                "processes",
                                                                                groups[g]));
                                else
                                        json_array_append_new(
                                                log, json_sprintf("stray cgroup '%s': %s", groups[g], gerr.msg));
                        }
                        free(groups[g]);
                }
                free(groups);
        }
        if (n->cg) {
                struct tessera_error herr = {0};
                if (hugepages_apply(n, &herr) < 0)
                        json_array_append_new(log, json_sprintf("huge pages: %s", herr.msg));
        }
        /* sockets of supervisors nobody records */
        DIR *d = opendir(n->run_dir);
        if (d) {
                struct dirent *de;
                while ((de = readdir(d))) {
                        size_t len = strlen(de->d_name);
                        if (len < 6 || !STREQ(de->d_name + len - 5, ".sock"))
                                continue;
                        char name[64];
                        snprintf(name, sizeof(name), "%.*s", (int)(len - 5), de->d_name);
                        struct enclave_record probe;
                        if (ledger_enclave_get(n->store, name, &probe, NULL) == 0) {
                                enclave_record_done(&probe);
                                continue;
                        }
                        (void)unlinkat(dirfd(d), de->d_name, 0);
                }
                closedir(d);
        }
        enclave_records_free(recs, count);
        /* last: processes of stray cgroups were killed above, and their segments go with them */
        struct tessera_error serr = {0};
        if (segments_reconcile(n, log, &serr) < 0)
                json_array_append_new(log, json_sprintf("XEMEM segments: %s", serr.msg));
        return first;
}

/* ---- node-wide listings ---- */

json_t *node_cpus(struct tessera_node *n, uid_t caller, struct tessera_error *err)
{
        return ledger_cpus_json(n->store, caller, err);
}

json_t *node_memory(struct tessera_node *n, uid_t caller, struct tessera_error *err)
{
        return ledger_memory_json(n->store, n->topo, &n->host, caller, err);
}

json_t *node_devices(struct tessera_node *n, uid_t caller, struct tessera_error *err)
{
        if (!n->topo->synthetic)
                (void)topology_refresh_devices(n->topo, NULL);
        json_t *a = json_array();
        for (size_t i = 0; i < n->topo->n_devices; i++) {
                const struct topo_device *d = &n->topo->devices[i];
                char owner[64] = "free";
                if (ledger_device_owner(n->store, d->id, caller, owner, sizeof(owner), NULL) <= 0 &&
                    (is_host_device(n, d->id) || is_host_critical(n, d)))
                        snprintf(owner, sizeof(owner), "host");
                json_array_append_new(a, json_pack("{s:s, s:s, s:s, s:s, s:i, s:s}", "id", d->id, "kind",
                                                   device_kind_name(d->kind), "description", d->description, "pci",
                                                   d->pci, "numa", d->numa, "owner", owner));
        }
        /* devices owned by enclaves that the topology no longer sees (moved interfaces, /dev nodes) */
        sqlite3_stmt *st = store_stmt(n->store,
                                      "SELECT d.id, d.kind, e.name, e.owner_uid FROM devices d JOIN enclaves e ON "
                                      "d.enclave_id = e.id ORDER BY d.id",
                                      err);
        while (st && sqlite3_step(st) == SQLITE_ROW) {
                const char *id = (const char *)sqlite3_column_text(st, 0);
                bool listed = false;
                for (size_t i = 0; i < n->topo->n_devices; i++)
                        if (STREQ(n->topo->devices[i].id, id))
                                listed = true;
                if (listed)
                        continue;
                bool visible = caller == 0 || (uid_t)sqlite3_column_int64(st, 3) == caller;
                json_array_append_new(a, json_pack("{s:s, s:s, s:s, s:s, s:i, s:s}", "id", id, "kind",
                                                   (const char *)sqlite3_column_text(st, 1), "description",
                                                   "in enclave", "pci", "", "numa", -1, "owner",
                                                   visible ? (const char *)sqlite3_column_text(st, 2) : "other"));
        }
        if (st)
                sqlite3_reset(st);
        return a;
}

static uint64_t self_rss(void)
{
        char buf[4096];
        if (read_file_at(AT_FDCWD, "/proc/self/status", buf, sizeof(buf), NULL) < 0)
                return 0;
        const char *p = strstr(buf, "VmRSS:");
        unsigned long long kb = 0;
        if (p)
                sscanf(p, "VmRSS: %llu", &kb);
        return kb * 1024;
}

json_t *node_summary(struct tessera_node *n, uid_t caller, struct tessera_error *err)
{
        unsigned ch, cf, ce, bh, bf, be;
        if (ledger_counts(n->store, &ch, &cf, &ce, &bh, &bf, &be, err) < 0)
                return NULL;
        struct utsname u;
        uname(&u);
        json_t *numa = json_array();
        for (size_t i = 0; i < n->topo->n_numa; i++) {
                unsigned free_blocks = 0;
                (void)ledger_free_blocks_on(n->store, n->topo->numa[i].os_index, &free_blocks, NULL);
                json_array_append_new(numa, json_pack("{s:i, s:o, s:I, s:I, s:i}", "id", (int)n->topo->numa[i].os_index,
                                                      "cpus", bitmap_json(n->topo->numa[i].cpus), "memory",
                                                      (json_int_t)n->topo->numa[i].bytes, "blocks",
                                                      (json_int_t)(n->topo->numa[i].bytes / n->host.block_size),
                                                      "free_blocks", (int)free_blocks));
        }
        uint64_t total = 0, host_mem = 0;
        for (size_t i = 0; i < n->topo->n_numa; i++) {
                total += n->topo->numa[i].bytes;
                host_mem += n->host.memory[i];
        }
        struct enclave_record *recs = NULL;
        size_t count = 0;
        unsigned running = 0, failed = 0, visible = 0;
        if (ledger_enclave_list(n->store, &recs, &count, err) < 0) {
                json_decref(numa);
                return NULL;
        }
        for (size_t i = 0; i < count; i++) {
                if (caller != 0 && recs[i].owner_uid != caller)
                        continue;
                visible++;
                running += STREQ(recs[i].state, "running");
                failed += STREQ(recs[i].state, "failed");
        }
        enclave_records_free(recs, count);
        uint64_t bs = n->host.block_size;
        json_t *devs = node_devices(n, caller, NULL);
        int dev_free = 0, dev_enclaves = 0;
        size_t di;
        json_t *dv;
        json_array_foreach(devs, di, dv)
        {
                const char *o = json_string_value(json_object_get(dv, "owner"));
                if (STREQ(o, "free"))
                        dev_free++;
                else if (!STREQ(o, "host"))
                        dev_enclaves++;
        }
        int dev_total = (int)json_array_size(devs);
        json_decref(devs);
        return json_pack("{s:s, s:s, s:s, s:b, s:I, s:o, s:I, s:{s:i, s:i, s:i, s:i}, s:{s:I, s:I, s:I, s:I}, "
                         "s:o, s:{s:i, s:i, s:i}, s:{s:i, s:i, s:i}, s:{s:i, s:I, s:s, s:s, s:s, s:s}}",
                         "hostname", u.nodename, "kernel", u.release, "cgroup",
                         n->cg ? cgroup_mode_name(n->cg->mode) : "none", "ledger_only", n->cg == NULL, "block_size",
                         (json_int_t)bs, "host_cpus", bitmap_json(n->host.cpus), "host_memory", (json_int_t)host_mem,
                         "cpus", "total", (int)(ch + cf + ce), "host", (int)ch, "free", (int)cf, "enclaves", (int)ce,
                         "memory", "total", (json_int_t)total, "host", (json_int_t)(bh * bs), "free",
                         (json_int_t)(bf * bs), "enclaves", (json_int_t)(be * bs), "numa", numa, "devices", "total",
                         dev_total, "free", dev_free, "enclaves", dev_enclaves, "enclaves", "total", (int)visible,
                         "running", (int)running, "failed", (int)failed, "daemon", "pid", (int)getpid(), "rss",
                         (json_int_t)self_rss(), "version", TESSERA_VERSION, "state_dir", n->cfg.state_dir, "socket",
                         n->cfg.socket, "cgroup_root", n->cfg.cgroup_root);
}

/* The kernel's limits of one enclave against the ledger's. */
static void check_limits(struct tessera_node *n, const struct enclave_record *e, json_t *problems)
{
        struct cgroup_state k;
        struct tessera_error kerr = {0};
        if (cgroup_enclave_read(n->cg, e->name, &k, &kerr) < 0) {
                json_array_append_new(problems, json_sprintf("enclave '%s': %s", e->name, kerr.msg));
                return;
        }
        hwloc_bitmap_t cpus = hwloc_bitmap_alloc();
        unsigned blocks = 0;
        char *want = NULL;
        if (ledger_cpus_of(n->store, e->id, cpus, NULL) == 0 &&
            ledger_blocks_of(n->store, e->id, &blocks, NULL, NULL) == 0 &&
            hwloc_bitmap_list_asprintf(&want, cpus) >= 0) {
                if (!STREQ(want, k.cpus))
                        json_array_append_new(problems, json_sprintf("enclave '%s': cpuset.cpus is \"%s\", the ledger "
                                                                     "says \"%s\"",
                                                                     e->name, k.cpus, want));
                uint64_t bytes = (uint64_t)blocks * n->host.block_size;
                if (k.memory_bytes != bytes)
                        json_array_append_new(problems, json_sprintf("enclave '%s': memory limit is %llu, the ledger "
                                                                     "says %llu",
                                                                     e->name, (unsigned long long)k.memory_bytes,
                                                                     (unsigned long long)bytes));
                if (n->exclusive_cpus && !k.exclusive)
                        json_array_append_new(
                                problems, json_sprintf("enclave '%s': its cores are not an exclusive cpuset", e->name));
        }
        free(want);
        hwloc_bitmap_free(cpus);
}

int node_check(struct tessera_node *n, uid_t caller, json_t **ret, struct tessera_error *err)
{
        if (caller != 0)
                return tessera_error_set(err, EPERM, "only root runs the ledger check");
        json_t *problems = json_array();
        int r = ledger_check(n->store, problems, err);
        struct enclave_record *recs = NULL;
        size_t count = 0;
        if (r == 0)
                r = ledger_enclave_list(n->store, &recs, &count, err);
        for (size_t i = 0; r == 0 && n->cg && i < count; i++) {
                struct enclave_record *e = &recs[i];
                bool has_group = cgroup_enclave_exists(n->cg, e->name);
                if (STREQ(e->state, "running")) {
                        if (!has_group)
                                json_array_append_new(problems, json_sprintf("enclave '%s' has no cgroup", e->name));
                        else
                                check_limits(n, e, problems);
                        struct tessera_error perr = {0};
                        int pfd = pidfd_open_checked(e->supervisor_pid, e->supervisor_start, &perr);
                        if (pfd < 0) {
                                json_array_append_new(problems, json_sprintf("enclave '%s': supervisor pid %d is gone",
                                                                             e->name, (int)e->supervisor_pid));
                        } else {
                                close(pfd);
                                char in[64] = "";
                                if (cgroup_pid_enclave(n->cg, e->supervisor_pid, in, sizeof(in), NULL) < 0 ||
                                    !STREQ(in, e->name))
                                        json_array_append_new(problems,
                                                              json_sprintf("enclave '%s': supervisor is not in its "
                                                                           "cgroup",
                                                                           e->name));
                        }
                }
        }
        if (r == 0 && n->cg) {
                char **groups = NULL;
                size_t n_groups = 0;
                if (cgroup_list_enclaves(n->cg, &groups, &n_groups, NULL) == 0) {
                        for (size_t g = 0; g < n_groups; g++) {
                                bool known = false;
                                for (size_t i = 0; i < count; i++)
                                        known |= STREQ(recs[i].name, groups[g]);
                                if (!known)
                                        json_array_append_new(
                                                problems, json_sprintf("cgroup '%s' belongs to no enclave", groups[g]));
                                free(groups[g]);
                        }
                        free(groups);
                }
        }
        enclave_records_free(recs, count);
        if (r < 0) {
                json_decref(problems);
                return r;
        }
        *ret = json_pack("{s:b, s:o}", "ok", json_array_size(problems) == 0, "problems", problems);
        return 0;
}
