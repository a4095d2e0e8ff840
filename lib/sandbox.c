/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Starting an enclave's supervisor.
 *
 * The parent prepares everything the child needs (fds, strings, argv, envp)
 * before the clone, because the child is a copy of a possibly multi-threaded
 * daemon: between clone and exec it sticks to plain system calls, no malloc
 * and no stdio.  Two CLOEXEC pipes connect them: `sync` (parent -> child:
 * "you are in your cgroup and your id maps are written, go on") and `error`
 * (child -> parent: one record naming the failed step, or EOF when the exec
 * succeeded and closed it).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h> /* struct clone_args */
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/pidfd.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cgroup.h"
#include "sandbox.h"
#include "util.h"

/* How long the parent waits for the child to reach its exec. */
#define SANDBOX_EXEC_TIMEOUT_MS 30000

#define SUPERVISOR_PATH_ENV "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/* What the child sends back when a step fails. */
struct child_error {
        int code;
        char msg[500];
};

/* Everything the child uses, prepared by the parent before the clone. */
struct spawn_plan {
        const struct sandbox_config *cfg;
        const char *hostname;
        int supervisor_fd; /* O_PATH of the binary */
        int null_fd;
        int sync_fd;        /* child's read end */
        int error_fd;       /* child's write end */
        int parent_sync_fd; /* the parent's ends, closed first thing in the child */
        int parent_error_fd;
        char env_enclave[96];
        char *argv[4];
        char *envp[3];
};

struct dev_node {
        const char *name;
        unsigned major, minor;
};

static const struct dev_node dev_nodes[] = {
        {"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0},
};

static const struct {
        const char *name, *target;
} dev_links[] = {
        {"fd", "/proc/self/fd"},       {"stdin", "/proc/self/fd/0"}, {"stdout", "/proc/self/fd/1"},
        {"stderr", "/proc/self/fd/2"}, {"ptmx", "pts/ptmx"},
};

/* ---- the child: system calls only, from here to the exec ---- */

static size_t append(char *buf, size_t size, size_t at, const char *s)
{
        while (s && *s && at + 1 < size)
                buf[at++] = *s++;
        buf[at] = '\0';
        return at;
}

/* Records a failure as the concatenation of NULL-terminated pieces; returns -code. */
static int child_fail_pieces(struct child_error *e, int code, ...)
{
        va_list ap;
        size_t at = 0;
        e->code = code > 0 ? code : EIO;
        e->msg[0] = '\0';
        va_start(ap, code);
        for (const char *s = va_arg(ap, const char *); s; s = va_arg(ap, const char *))
                at = append(e->msg, sizeof(e->msg), at, s);
        va_end(ap);
        return -e->code;
}
#define child_fail(e, code, ...) child_fail_pieces((e), (code), __VA_ARGS__, (const char *)NULL)

/* "/proc/self/fd/N": names what an O_PATH fd points at, for calls that want a path. */
static void fd_path(int fd, char buf[32])
{
        char digits[12];
        int n = 0;
        unsigned v = (unsigned)fd;
        do {
                digits[n++] = (char)('0' + v % 10);
                v /= 10;
        } while (v);
        size_t at = append(buf, 32, 0, "/proc/self/fd/");
        while (n > 0 && at + 1 < 32)
                buf[at++] = digits[--n];
        buf[at] = '\0';
}

static const char *root_or_empty(const struct spawn_plan *p)
{
        return p->cfg->root ? p->cfg->root : "";
}

static int child_reset_signals(struct child_error *e)
{
        struct sigaction sa = {.sa_handler = SIG_DFL};
        for (int sig = 1; sig < NSIG; sig++)
                (void)sigaction(sig, &sa, NULL); /* SIGKILL, SIGSTOP and libc-internal ones refuse: fine */
        sigset_t none;
        sigemptyset(&none);
        if (sigprocmask(SIG_SETMASK, &none, NULL) < 0)
                return child_fail(e, errno, "cannot unblock signals");
        return 0;
}

/* Blocks until the parent has placed us in the cgroup and written the id maps. */
static int child_wait_for_parent(const struct spawn_plan *p, struct child_error *e)
{
        char go;
        ssize_t n;
        do
                n = read(p->sync_fd, &go, 1);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return child_fail(e, errno, "cannot read the start signal from the parent");
        if (n == 0)
                return child_fail(e, ECANCELED, "the parent gave up before the start");
        return 0;
}

/* One mount inside the new root; `path` is where it lands as seen from inside, for messages. */
struct mount_spec {
        const char *path; /* "/proc", "/dev/pts": its last component is created in the directory given */
        const char *what; /* "proc", "a tmpfs": names the file system in messages */
        const char *source;
        const char *fstype;
        unsigned long flags;
        const char *data;
};

/*
 * Creates the mount point (if missing) and opens it without following a
 * symlink, so an image cannot point a mount point out of its root.
 */
static int child_open_mountpoint(const struct spawn_plan *p, int dirfd, const char *path, struct child_error *e)
{
        const char *name = strrchr(path, '/') + 1;
        if (mkdirat(dirfd, name, 0755) < 0 && errno != EEXIST)
                return child_fail(e, errno, "cannot create the mount point ", root_or_empty(p), path);
        int fd = openat(dirfd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0 && (errno == ENOTDIR || errno == ELOOP))
                return child_fail(e, errno, "mount point ", root_or_empty(p), path,
                                  " is a symlink or not a directory (symlinks are never followed out of the root)");
        if (fd < 0)
                return child_fail(e, errno, "cannot open the mount point ", root_or_empty(p), path);
        return fd;
}

static int child_mount_in_root(const struct spawn_plan *p, int dirfd, const struct mount_spec *m, struct child_error *e)
{
        int fd = child_open_mountpoint(p, dirfd, m->path, e);
        if (fd < 0)
                return fd;
        char target[32];
        fd_path(fd, target);
        int r = mount(m->source, target, m->fstype, m->flags, m->data);
        int saved = errno;
        close(fd);
        if (r < 0)
                return child_fail(e, saved, "cannot mount ", m->what, " on ", root_or_empty(p), m->path);
        return 0;
}

/* Reopens a mount point after the mount, to reach the new file system rather than the directory under it. */
static int child_reopen(const struct spawn_plan *p, int dirfd, const struct mount_spec *m, struct child_error *e)
{
        int fd = openat(dirfd, strrchr(m->path, '/') + 1, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return child_fail(e, errno, "cannot open ", root_or_empty(p), m->path, " after mounting it");
        return fd;
}

#define MS_LOCKED_DOWN (MS_NOSUID | MS_NODEV | MS_NOEXEC)
static const struct mount_spec mount_proc = {"/proc", "proc", "proc", "proc", MS_LOCKED_DOWN, NULL};
static const struct mount_spec mount_sysfs = {"/sys", "sysfs", "sysfs", "sysfs", MS_LOCKED_DOWN | MS_RDONLY, NULL};
static const struct mount_spec mount_host_sys = {"/sys", "the host's /sys", "/sys", NULL, MS_BIND | MS_REC, NULL};
static const struct mount_spec mount_dev = {"/dev", "a tmpfs", "tmpfs", "tmpfs", MS_NOSUID, "mode=755"};
static const struct mount_spec mount_devpts = {
        "/dev/pts", "devpts", "devpts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"};
static const struct mount_spec mount_shm = {"/dev/shm", "a tmpfs", "tmpfs", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777"};
static const struct mount_spec mount_tmp = {"/tmp", "a tmpfs", "tmpfs", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777"};
static const struct mount_spec mount_run = {"/run", "a tmpfs", "tmpfs", "tmpfs", MS_NOSUID | MS_NODEV, "mode=755"};

/* /sys: a fresh read-only sysfs in a new network namespace; else the host's, bound read-only. */
static int child_mount_sys(const struct spawn_plan *p, int rootfd, struct child_error *e)
{
        if (p->cfg->new_net)
                return child_mount_in_root(p, rootfd, &mount_sysfs, e);

        /* sysfs shows the network namespace of its mounter: without our own, reuse the host's tree */
        int r = child_mount_in_root(p, rootfd, &mount_host_sys, e);
        if (r < 0)
                return r;
        int fd = child_reopen(p, rootfd, &mount_host_sys, e);
        if (fd < 0)
                return fd;
        struct mount_attr attr = {.attr_set =
                                          MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC};
        r = (int)syscall(SYS_mount_setattr, fd, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof(attr));
        if (r < 0 && errno == ENOSYS) {
                /* older kernels: at least the top of the tree becomes read-only */
                char target[32];
                fd_path(fd, target);
                r = mount(NULL, target, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_LOCKED_DOWN, NULL);
        }
        int saved = errno;
        close(fd);
        if (r < 0)
                return child_fail(e, saved, "cannot make ", root_or_empty(p), "/sys", " read-only");
        return 0;
}

/* A device node: mknod when we may, else a bind mount of the host's node onto an empty file. */
static int child_make_dev_node(const struct spawn_plan *p, int devfd, const struct dev_node *n, struct child_error *e)
{
        if (!p->cfg->new_user) {
                if (mknodat(devfd, n->name, S_IFCHR | 0666, makedev(n->major, n->minor)) < 0)
                        return child_fail(e, errno, "cannot create the device node ", root_or_empty(p), "/dev/",
                                          n->name);
                return 0;
        }
        /* a user namespace may not create device nodes (and its tmpfs is nodev anyway) */
        int fd = openat(devfd, n->name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
        if (fd < 0)
                return child_fail(e, errno, "cannot create ", root_or_empty(p), "/dev/", n->name);
        char source[32] = "/dev/", target[32];
        append(source, sizeof(source), strlen(source), n->name);
        fd_path(fd, target);
        int r = mount(source, target, NULL, MS_BIND, NULL);
        int saved = errno;
        close(fd);
        if (r < 0)
                return child_fail(e, saved, "cannot bind the host's ", source, " into ", root_or_empty(p));
        return 0;
}

/* /dev: a tmpfs with the standard nodes, a private devpts, /dev/shm and the usual links. */
static int child_mount_dev(const struct spawn_plan *p, int rootfd, struct child_error *e)
{
        int r = child_mount_in_root(p, rootfd, &mount_dev, e);
        if (r < 0)
                return r;
        int devfd = child_reopen(p, rootfd, &mount_dev, e);
        if (devfd < 0)
                return devfd;
        for (size_t i = 0; i < ELEMENTSOF(dev_nodes) && r >= 0; i++)
                r = child_make_dev_node(p, devfd, &dev_nodes[i], e);
        if (r >= 0)
                r = child_mount_in_root(p, devfd, &mount_devpts, e);
        if (r >= 0)
                r = child_mount_in_root(p, devfd, &mount_shm, e);
        for (size_t i = 0; i < ELEMENTSOF(dev_links) && r >= 0; i++)
                if (symlinkat(dev_links[i].target, devfd, dev_links[i].name) < 0)
                        r = child_fail(e, errno, "cannot create the link ", root_or_empty(p), "/dev/",
                                       dev_links[i].name);
        close(devfd);
        return r;
}

/*
 * /run, when the root has one: a tmpfs, with tesserad's XEMEM socket
 * directory bound at /run/tessera/xemem.  The directory, not the socket, so a restarted
 * daemon's new socket shows up inside too.
 */
static int child_mount_run(const struct spawn_plan *p, int rootfd, struct child_error *e)
{
        struct stat sb;
        /* a root without /run keeps it so (it may be read-only, or not ours to write in a user namespace) */
        if (fstatat(rootfd, "run", &sb, AT_SYMLINK_NOFOLLOW) < 0 && errno == ENOENT)
                return 0;
        int r = child_mount_in_root(p, rootfd, &mount_run, e);
        if (r < 0 || !p->cfg->xemem_dir)
                return r;
        int runfd = child_reopen(p, rootfd, &mount_run, e);
        if (runfd < 0)
                return runfd;
        static const struct mount_spec tessera_dir = {"/run/tessera", "", NULL, NULL, 0, NULL};
        int tfd = child_open_mountpoint(p, runfd, tessera_dir.path, e);
        close(runfd);
        if (tfd < 0)
                return tfd;
        const struct mount_spec xemem = {
                "/run/tessera/xemem", "tesserad's XEMEM socket directory", p->cfg->xemem_dir, NULL, MS_BIND, NULL};
        r = child_mount_in_root(p, tfd, &xemem, e);
        close(tfd);
        return r;
}

/* The new root: bound on itself, then /proc, /sys, /dev, /tmp and /run, then pivot_root into it. */
static int child_enter_root(const struct spawn_plan *p, struct child_error *e)
{
        const char *root = p->cfg->root;
        if (mount(root, root, NULL, MS_BIND | MS_REC, NULL) < 0)
                return child_fail(e, errno, "cannot bind the root ", root, " onto itself");
        /* opened after the bind, so it names the new mount rather than the directory under it */
        int rootfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (rootfd < 0)
                return child_fail(e, errno, "cannot open the root ", root);
        int r = child_mount_in_root(p, rootfd, &mount_proc, e);
        if (r >= 0)
                r = child_mount_sys(p, rootfd, e);
        if (r >= 0)
                r = child_mount_dev(p, rootfd, e);
        if (r >= 0)
                r = child_mount_in_root(p, rootfd, &mount_tmp, e);
        if (r >= 0)
                r = child_mount_run(p, rootfd, e);
        if (r >= 0 && fchdir(rootfd) < 0)
                r = child_fail(e, errno, "cannot change directory to the root ", root);
        close(rootfd);
        if (r < 0)
                return r;
        /* the old root ends up stacked on "." and is detached right away: no directory to create or remove */
        if (syscall(SYS_pivot_root, ".", ".") < 0)
                return child_fail(e, errno, "cannot pivot_root into ", root);
        if (umount2(".", MNT_DETACH) < 0)
                return child_fail(e, errno, "cannot detach the host's root after pivot_root into ", root);
        if (chdir("/") < 0)
                return child_fail(e, errno, "cannot change directory to / in ", root);
        return 0;
}

static int child_setup_mounts(const struct spawn_plan *p, struct child_error *e)
{
        /* nothing we mount may propagate back to the host */
        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
                return child_fail(e, errno, "cannot make the mounts private");
        if (p->cfg->root)
                return child_enter_root(p, e);
        /* the host's root stays, but /proc must show the new pid namespace */
        if (mount("proc", "/proc", "proc", MS_LOCKED_DOWN, NULL) < 0)
                return child_fail(e, errno, "cannot mount proc on /proc");
        return 0;
}

static int child_close_from(int lowest)
{
        if (close_range((unsigned)lowest, ~0U, 0) == 0)
                return 0;
        if (errno != ENOSYS)
                return -errno;
        struct rlimit rl;
        int max = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY ? (int)rl.rlim_cur : 65536;
        for (int fd = lowest; fd < max; fd++)
                (void)close(fd);
        return 0;
}

/*
 * The final descriptor table: 0 /dev/null, 1-2 log, 3 control socket, and
 * (both CLOEXEC) 4 the supervisor binary and 5 the error pipe; nothing else.
 */
static int child_arrange_fds(struct spawn_plan *p, struct child_error *e)
{
        int log_fd = p->cfg->log_fd >= 0 ? p->cfg->log_fd : p->null_fd;
        int want[6] = {p->null_fd, log_fd, log_fd, p->cfg->listen_fd, p->supervisor_fd, p->error_fd};
        int high[6];
        /* first lift every source above the target slots so no dup3 overwrites a source still needed */
        for (int i = 0; i < 6; i++) {
                high[i] = fcntl(want[i], F_DUPFD_CLOEXEC, 6);
                if (high[i] < 0)
                        return child_fail(e, errno, "cannot duplicate a descriptor for the supervisor");
        }
        p->error_fd = high[5];
        for (int i = 0; i < 6; i++)
                if (dup3(high[i], i, i >= 4 ? O_CLOEXEC : 0) < 0)
                        return child_fail(e, errno, "cannot set up the supervisor's descriptors");
        p->supervisor_fd = 4;
        p->error_fd = 5;
        if (child_close_from(6) < 0)
                return child_fail(e, errno, "cannot close the daemon's other descriptors");
        return 0;
}

static int child_setup(struct spawn_plan *p, struct child_error *e)
{
        const struct sandbox_config *cfg = p->cfg;
        close(p->parent_sync_fd);
        close(p->parent_error_fd);
        int r = child_reset_signals(e);
        if (r < 0)
                return r;
        /* a session of its own: the enclave must not die with the daemon's terminal or session */
        if (setsid() < 0)
                return child_fail(e, errno, "cannot start a new session");
        /* and no PR_SET_PDEATHSIG: the enclave outlives a restart of tesserad */
        r = child_wait_for_parent(p, e);
        if (r < 0)
                return r;
        if (cfg->new_user) {
                /* become the namespace's root, or the exec would drop every capability */
                if (setresgid(0, 0, 0) < 0)
                        return child_fail(e, errno, "cannot become gid 0 of the user namespace");
                if (setresuid(0, 0, 0) < 0)
                        return child_fail(e, errno, "cannot become uid 0 of the user namespace");
        }
        /* only now, inside the enclave's group, so the namespace is rooted there */
        if (unshare(CLONE_NEWCGROUP) < 0)
                return child_fail(e, errno, "cannot create a cgroup namespace");
        if (sethostname(p->hostname, strlen(p->hostname)) < 0)
                return child_fail(e, errno, "cannot set the hostname to ", p->hostname);
        umask(0);
        r = child_setup_mounts(p, e);
        if (r < 0)
                return r;
        umask(022);
        r = child_arrange_fds(p, e);
        if (r < 0)
                return r;
        execveat(p->supervisor_fd, "", p->argv, p->envp, AT_EMPTY_PATH);
        return child_fail(e, errno, "cannot execute the supervisor ", cfg->supervisor_path);
}

static _Noreturn void child_run(struct spawn_plan *p)
{
        struct child_error e = {0};
        (void)child_setup(p, &e);
        ssize_t n;
        do
                n = write(p->error_fd, &e, sizeof(e));
        while (n < 0 && errno == EINTR);
        _exit(127);
}

/* ---- the parent ---- */

static int sandbox_validate(const struct sandbox_config *cfg, struct tessera_error *err)
{
        if (!cfg->enclave || !name_is_valid(cfg->enclave))
                return tessera_error_field(err, EINVAL, "name", "enclave name `%s` is not valid",
                                           cfg->enclave ? cfg->enclave : "(null)");
        const char *hostname = cfg->hostname ? cfg->hostname : cfg->enclave;
        if (!*hostname || strlen(hostname) > 64)
                return tessera_error_field(err, EINVAL, "hostname", "hostname `%s` must have 1 to 64 characters",
                                           hostname);
        if (cfg->root && cfg->root[0] != '/')
                return tessera_error_field(err, EINVAL, "root", "root `%s` must be an absolute path", cfg->root);
        if (!cfg->supervisor_path || !*cfg->supervisor_path)
                return tessera_error_set(err, EINVAL, "no supervisor binary given");
        if (cfg->listen_fd < 0)
                return tessera_error_set(err, EBADF, "no control socket given for the supervisor");
        if (cfg->new_user && cfg->map_count == 0)
                return tessera_error_field(err, EINVAL, "namespaces",
                                           "a user namespace needs at least one mapped id (map_count is 0)");
        return 0;
}

static int open_supervisor_binary(const char *path, struct tessera_error *err)
{
        _cleanup_close_ int fd = open(path, O_PATH | O_CLOEXEC);
        if (fd < 0)
                return tessera_error_set(err, errno, "cannot open the supervisor binary `%s`: %s", path,
                                         strerror(errno));
        struct stat st;
        if (fstat(fd, &st) < 0)
                return tessera_error_set(err, errno, "cannot stat the supervisor binary `%s`: %s", path,
                                         strerror(errno));
        if (!S_ISREG(st.st_mode) || !(st.st_mode & 0111))
                return tessera_error_set(err, EACCES, "the supervisor binary `%s` is not an executable file", path);
        return TAKE_FD(fd);
}

/*
 * clone3 with fork semantics (no new stack), straight into the cgroup when
 * given its fd; clone() only where clone3 does not exist, and then the
 * caller places the child itself (*ret_placed false).
 */
static pid_t clone_supervisor(uint64_t flags, int cgroup_fd, int *ret_pidfd, bool *ret_placed)
{
        int pidfd = -1;
        struct clone_args args = {
                .flags = flags | CLONE_PIDFD | (cgroup_fd >= 0 ? CLONE_INTO_CGROUP : 0),
                .pidfd = (uint64_t)(uintptr_t)&pidfd,
                .exit_signal = SIGCHLD,
                .cgroup = cgroup_fd >= 0 ? (uint64_t)cgroup_fd : 0,
        };
        *ret_placed = cgroup_fd >= 0;
        long pid = syscall(SYS_clone3, &args, sizeof(args));
        if (pid < 0 && errno == ENOSYS) {
                *ret_placed = false;
                /* x86-64/arm64 argument order: flags, stack, parent_tid (the pidfd lands there), ... */
                pid = syscall(SYS_clone, (unsigned long)(flags | CLONE_PIDFD | SIGCHLD), NULL, &pidfd, NULL, 0);
        }
        if (pid > 0)
                *ret_pidfd = pidfd;
        return (pid_t)pid;
}

static void kill_and_reap(int pidfd)
{
        (void)pidfd_send_signal(pidfd, SIGKILL, NULL, 0);
        siginfo_t si;
        while (waitid(P_PIDFD, (id_t)pidfd, &si, WEXITED) < 0 && errno == EINTR)
                ;
}

static int write_id_maps(pid_t pid, const struct sandbox_config *cfg, struct tessera_error *err)
{
        char path[64], map[64];
        snprintf(path, sizeof(path), "/proc/%d/uid_map", (int)pid);
        snprintf(map, sizeof(map), "0 %u %u\n", (unsigned)cfg->map_uid, cfg->map_count);
        int r = write_file_at(AT_FDCWD, path, map, err);
        if (r < 0)
                return r;
        /* required before an unprivileged gid_map, and the enclave has no business changing groups */
        snprintf(path, sizeof(path), "/proc/%d/setgroups", (int)pid);
        r = write_file_at(AT_FDCWD, path, "deny", err);
        if (r < 0)
                return r;
        snprintf(path, sizeof(path), "/proc/%d/gid_map", (int)pid);
        snprintf(map, sizeof(map), "0 %u %u\n", (unsigned)cfg->map_gid, cfg->map_count);
        return write_file_at(AT_FDCWD, path, map, err);
}

/* After EOF on the error pipe: an exec closes it, but so does a death before (or right after) the exec. */
static int check_still_running(int pidfd, const struct sandbox_config *cfg, struct tessera_error *err)
{
        siginfo_t si = {0};
        if (waitid(P_PIDFD, (id_t)pidfd, &si, WEXITED | WNOHANG | WNOWAIT) < 0 || si.si_pid == 0)
                return 0;
        if (si.si_code == CLD_EXITED)
                return tessera_error_set(err, ECHILD,
                                         "the supervisor of enclave `%s` exited with status %d as it "
                                         "started (see its log)",
                                         cfg->enclave, si.si_status);
        return tessera_error_set(err, ECHILD, "the supervisor of enclave `%s` was killed by signal %d as it started",
                                 cfg->enclave, si.si_status);
}

/* Waits until the child execs (EOF) or reports the step that failed. */
static int wait_for_exec(int error_fd, int pidfd, const struct sandbox_config *cfg, struct tessera_error *err)
{
        struct pollfd pfd = {.fd = error_fd, .events = POLLIN};
        uint64_t deadline = now_ns() + (uint64_t)SANDBOX_EXEC_TIMEOUT_MS * 1000000ULL;
        for (;;) {
                uint64_t now = now_ns();
                if (now >= deadline)
                        return tessera_error_set(err, ETIMEDOUT,
                                                 "the supervisor of enclave `%s` did not start "
                                                 "within %d s",
                                                 cfg->enclave, SANDBOX_EXEC_TIMEOUT_MS / 1000);
                int n = poll(&pfd, 1, (int)((deadline - now) / 1000000ULL) + 1);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return tessera_error_set(err, errno, "cannot wait for the supervisor: %s", strerror(errno));
                if (n > 0)
                        break;
        }
        struct child_error e;
        ssize_t got;
        do
                got = read(error_fd, &e, sizeof(e));
        while (got < 0 && errno == EINTR);
        if (got == 0)
                return check_still_running(pidfd, cfg, err);
        if (got < 0)
                return tessera_error_set(err, errno, "cannot read the supervisor's start status: %s", strerror(errno));
        if ((size_t)got != sizeof(e))
                return tessera_error_set(err, EIO, "truncated start status from the supervisor of `%s`", cfg->enclave);
        e.msg[sizeof(e.msg) - 1] = '\0';
        return tessera_error_set(err, e.code, "%s: %s", e.msg, strerror(e.code));
}

/* Cgroup placement and id maps: what the child waits for before it unshares its cgroup namespace. */
static int prepare_child(pid_t pid, const struct sandbox_config *cfg, bool placed, struct tessera_error *err)
{
        if (cfg->cgroup && !placed) {
                int r = cgroup_enter(cfg->cgroup, cfg->enclave, "supervisor", pid, err);
                if (r < 0)
                        return r;
        }
        if (cfg->new_user)
                return write_id_maps(pid, cfg, err);
        return 0;
}

int sandbox_spawn_supervisor(const struct sandbox_config *cfg, pid_t *ret_pid, int *ret_pidfd,
                             struct tessera_error *err)
{
        int r = sandbox_validate(cfg, err);
        if (r < 0)
                return r;
        struct spawn_plan plan = {.cfg = cfg, .hostname = cfg->hostname ? cfg->hostname : cfg->enclave};
        _cleanup_close_ int supervisor_fd = open_supervisor_binary(cfg->supervisor_path, err);
        if (supervisor_fd < 0)
                return supervisor_fd;
        _cleanup_close_ int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC | O_NOCTTY);
        if (null_fd < 0)
                return tessera_error_set(err, errno, "cannot open /dev/null: %s", strerror(errno));
        int sync_pipe[2], error_pipe[2];
        if (pipe2(sync_pipe, O_CLOEXEC) < 0)
                return tessera_error_set(err, errno, "cannot create a pipe: %s", strerror(errno));
        _cleanup_close_ int sync_rd = sync_pipe[0], sync_wr = sync_pipe[1];
        if (pipe2(error_pipe, O_CLOEXEC) < 0)
                return tessera_error_set(err, errno, "cannot create a pipe: %s", strerror(errno));
        _cleanup_close_ int error_rd = error_pipe[0], error_wr = error_pipe[1];

        /* v2 can start the child inside its group; v1 (or any failure here) goes through cgroup_enter */
        _cleanup_close_ int cgroup_fd = -1;
        if (cfg->cgroup) {
                cgroup_fd = cgroup_leaf_fd(cfg->cgroup, cfg->enclave, "supervisor", NULL);
                if (cgroup_fd < 0)
                        cgroup_fd = -1;
        }

        snprintf(plan.env_enclave, sizeof(plan.env_enclave), "TESSERA_ENCLAVE=%s", cfg->enclave);
        plan.argv[0] = (char *)"tessera-supervisor";
        plan.argv[1] = (char *)"--enclave";
        plan.argv[2] = (char *)cfg->enclave;
        plan.argv[3] = NULL;
        plan.envp[0] = (char *)SUPERVISOR_PATH_ENV;
        plan.envp[1] = plan.env_enclave;
        plan.envp[2] = NULL;
        plan.supervisor_fd = supervisor_fd;
        plan.null_fd = null_fd;
        plan.sync_fd = sync_rd;
        plan.error_fd = error_wr;
        plan.parent_sync_fd = sync_wr;
        plan.parent_error_fd = error_rd;

        uint64_t flags = CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS;
        if (cfg->new_net)
                flags |= CLONE_NEWNET;
        if (cfg->new_user)
                flags |= CLONE_NEWUSER;
        int raw_pidfd = -1;
        bool placed = false;
        pid_t pid = clone_supervisor(flags, cgroup_fd, &raw_pidfd, &placed);
        if (pid < 0)
                return tessera_error_set(err, errno, "cannot clone the supervisor of enclave `%s`: %s", cfg->enclave,
                                         strerror(errno));
        if (pid == 0)
                child_run(&plan);

        _cleanup_close_ int pidfd = raw_pidfd;
        /* the error pipe must read EOF once the exec closes the child's end, so drop ours */
        close(TAKE_FD(error_wr));

        r = prepare_child(pid, cfg, placed, err);
        /* we still hold a read end, so a child that died already costs no SIGPIPE here */
        if (r >= 0 && write(sync_wr, "g", 1) != 1)
                r = tessera_error_set(err, errno, "cannot release the supervisor of enclave `%s`: %s", cfg->enclave,
                                      strerror(errno));
        close(TAKE_FD(sync_rd));
        if (r >= 0)
                r = wait_for_exec(error_rd, pidfd, cfg, err);
        if (r < 0) {
                kill_and_reap(pidfd);
                return tessera_error_prefix(err, r, "cannot start the supervisor of enclave `%s`", cfg->enclave);
        }
        *ret_pid = pid;
        *ret_pidfd = TAKE_FD(pidfd);
        return 0;
}

/* ---- identifying processes across daemon restarts ---- */

int process_start_time(pid_t pid, uint64_t *ret, struct tessera_error *err)
{
        char path[64], buf[1024];
        snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
        int r = read_file_at(AT_FDCWD, path, buf, sizeof(buf), err);
        if (r < 0)
                return r == -ENOENT ? tessera_error_set(err, ESRCH, "no process with pid %d", (int)pid) : r;
        /* comm (field 2) may hold spaces and ')': the fields resume after the last ')' */
        char *p = strrchr(buf, ')');
        if (!p)
                return tessera_error_set(err, EIO, "`%s` has no closing parenthesis after the command name", path);
        p++;
        /* after ')' come fields 3, 4, ...: skip 19 of them to reach field 22 */
        for (int field = 3; field < 22; field++) {
                while (*p == ' ')
                        p++;
                if (!*p)
                        return tessera_error_set(err, EIO, "`%s` ends before field 22 (start time)", path);
                while (*p && *p != ' ')
                        p++;
        }
        while (*p == ' ')
                p++;
        char *end = p;
        while (*end >= '0' && *end <= '9')
                end++;
        if (end == p || (*end != ' ' && *end != '\0'))
                return tessera_error_set(err, EIO, "`%s`: field 22 (start time) is not a number", path);
        *end = '\0';
        uint64_t v;
        if (parse_uint64(p, UINT64_MAX, &v) < 0)
                return tessera_error_set(err, EIO, "`%s`: start time `%s` is out of range", path, p);
        *ret = v;
        return 0;
}

int pidfd_open_checked(pid_t pid, uint64_t start_time, struct tessera_error *err)
{
        if (pid <= 0)
                return tessera_error_set(err, EINVAL, "invalid pid %d", (int)pid);
        _cleanup_close_ int fd = pidfd_open(pid, 0);
        if (fd < 0)
                return tessera_error_set(err, errno, "cannot open a pidfd for pid %d: %s", (int)pid, strerror(errno));
        /* the pid may have been recycled before pidfd_open: the start time read now, with the fd held, decides */
        uint64_t now;
        int r = process_start_time(pid, &now, err);
        if (r < 0)
                return r;
        if (now != start_time)
                return tessera_error_set(err, ESRCH,
                                         "pid %d is another process now (started at tick %llu, expected %llu)",
                                         (int)pid, (unsigned long long)now, (unsigned long long)start_time);
        return TAKE_FD(fd);
}
