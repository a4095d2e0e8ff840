/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Moves a veth end of our own into a child's net namespace and back over
 * rtnetlink.  (The dummy driver is a module this kernel cannot load, so a
 * veth pair stands in for it.)  Needs root.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include "netdev.h"
#include "tap.h"
#include "util.h"

struct fixture {
        pid_t child; /* sleeps in a net namespace of its own */
        int hold;    /* closing it lets the child exit */
        char veth[IFNAMSIZ], peer[IFNAMSIZ];
        char clash[IFNAMSIZ], clash_peer[IFNAMSIZ]; /* a second pair reusing veth's name */
};

static int run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int run(const char *fmt, ...)
{
        char cmd[256];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(cmd, sizeof(cmd), fmt, ap);
        va_end(ap);
        return system(cmd);
}

static void free_names(char **names, size_t n)
{
        for (size_t i = 0; i < n; i++)
                free(names[i]);
        free(names);
}

/* -1 on error, else whether `name` is among the interfaces of pid's namespace. */
static int listed_in(pid_t pid, const char *name, size_t *ret_n, struct tessera_error *err)
{
        char **names = NULL;
        size_t n = 0;
        if (netdev_list_in_pid(pid, &names, &n, err) < 0)
                return -1;
        int found = 0;
        for (size_t i = 0; i < n; i++) {
                found |= STREQ(names[i], name);
                if (STREQ(names[i], "lo"))
                        found = -2; /* lo must never be listed */
        }
        free_names(names, n);
        if (ret_n)
                *ret_n = n;
        return found;
}

static pid_t start_netns_child(int *ret_hold)
{
        int ready[2], hold[2];
        if (pipe2(ready, O_CLOEXEC) < 0)
                return -1;
        if (pipe2(hold, O_CLOEXEC) < 0) {
                close(ready[0]);
                close(ready[1]);
                return -1;
        }
        pid_t pid = fork();
        if (pid == 0) {
                (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
                close(ready[0]);
                close(hold[1]);
                char c = unshare(CLONE_NEWNET) == 0 ? 'y' : 'n';
                if (write(ready[1], &c, 1) != 1)
                        _exit(1);
                /* Wait until the test closes its end (or dies). */
                while (read(hold[0], &c, 1) < 0 && errno == EINTR)
                        ;
                _exit(0);
        }
        close(ready[1]);
        close(hold[0]);
        char c = 0;
        if (pid < 0 || read(ready[0], &c, 1) != 1 || c != 'y') {
                close(ready[0]);
                close(hold[1]);
                if (pid > 0)
                        (void)waitpid(pid, NULL, 0);
                return -1;
        }
        close(ready[0]);
        *ret_hold = hold[1];
        return pid;
}

static void stop_child(pid_t pid, int hold)
{
        if (pid <= 0)
                return;
        close(hold);
        (void)kill(pid, SIGKILL);
        (void)waitpid(pid, NULL, 0);
}

static void cleanup(struct fixture *f)
{
        /* The child's namespace dies with it and takes any veth end inside; delete the ones left here. */
        stop_child(f->child, f->hold);
        f->child = -1;
        const char *names[] = {f->veth, f->peer, f->clash, f->clash_peer};
        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                if (names[i][0] && netdev_exists(names[i]))
                        (void)run("ip link del %s 2>/dev/null", names[i]);
}

static void test_move_round_trip(struct fixture *f)
{
        struct tessera_error err = {0};
        ok(netdev_exists(f->veth) && netdev_exists(f->peer), "veth pair %s/%s exists", f->veth, f->peer);
        ok(!netdev_has_default_route(f->veth), "%s has no default route", f->veth);

        int r = netdev_move_to_pid(f->veth, f->child, &err);
        if (!ok(r == 0, "move %s into pid %d's namespace (%s)", f->veth, (int)f->child, err.msg))
                return;
        ok(!netdev_exists(f->veth), "%s is gone from this namespace", f->veth);
        ok(netdev_exists(f->peer), "its peer %s stays here", f->peer);
        size_t n = 0;
        r = listed_in(f->child, f->veth, &n, &err);
        ok(r == 1 && n == 1, "the child's namespace lists exactly %s (r=%d n=%zu %s)", f->veth, r, n, err.msg);
        r = listed_in(getpid(), f->peer, NULL, &err);
        ok(r == 1, "our own namespace lists %s, not lo (r=%d %s)", f->peer, r, err.msg);

        r = netdev_move_from_pid(f->veth, f->child, &err);
        if (!ok(r == 0, "move %s back from pid %d (%s)", f->veth, (int)f->child, err.msg))
                return;
        ok(netdev_exists(f->veth), "%s is back", f->veth);
        r = listed_in(f->child, f->veth, &n, &err);
        ok(r == 0 && n == 0, "the child's namespace is empty again (r=%d n=%zu)", r, n);
}

static void test_move_errors(struct fixture *f)
{
        struct tessera_error err = {0};
        char missing[IFNAMSIZ];
        snprintf(missing, sizeof(missing), "tnd%dx", (int)getpid());

        int r = netdev_move_to_pid(missing, f->child, &err);
        ok(r == -ENODEV && strstr(err.msg, missing) && strstr(err.msg, "no such interface"),
           "moving a missing interface: %s", err.msg);
        ok(STREQ(err.field, "interface"), "the error names the field (%s)", err.field);

        r = netdev_move_from_pid(f->veth, f->child, &err);
        char pid[32];
        snprintf(pid, sizeof(pid), "pid %d", (int)f->child);
        ok(r == -ENODEV && strstr(err.msg, f->veth) && strstr(err.msg, pid),
           "moving back what the child does not hold: %s", err.msg);
        ok(netdev_exists(f->veth), "%s is still here after the failed move", f->veth);

        r = netdev_move_to_pid("lo", f->child, &err);
        ok(r == -EINVAL && strstr(err.msg, "'lo'"), "lo is refused: %s", err.msg);

        r = netdev_move_to_pid("a/b", f->child, &err);
        ok(r == -EINVAL && strstr(err.msg, "'a/b'"), "a bad name is refused: %s", err.msg);
        r = netdev_move_to_pid("averyveryverylongname", f->child, &err);
        ok(r == -EINVAL, "a too long name is refused: %s", err.msg);

        /* pids are below pid_max, so pid_max itself never exists. */
        char buf[32];
        uint64_t pid_max = 0;
        if (read_file_at(AT_FDCWD, "/proc/sys/kernel/pid_max", buf, sizeof(buf), NULL) > 0 &&
            parse_uint64(buf, INT32_MAX, &pid_max) == 0) {
                r = netdev_move_to_pid(f->veth, (pid_t)pid_max, &err);
                snprintf(pid, sizeof(pid), "%d", (int)pid_max);
                ok(r == -ESRCH && strstr(err.msg, pid) && strstr(err.msg, f->veth), "no such pid: %s", err.msg);
                r = netdev_move_from_pid(f->veth, (pid_t)pid_max, &err);
                ok(r == -ESRCH && strstr(err.msg, pid), "no such pid to move back from: %s", err.msg);
                char **names = NULL;
                size_t n = 0;
                r = netdev_list_in_pid((pid_t)pid_max, &names, &n, &err);
                ok(r == -ESRCH && !names, "no such pid to list: %s", err.msg);
        } else {
                ok(0, "read /proc/sys/kernel/pid_max");
        }
        ok(netdev_exists(f->veth), "%s never left", f->veth);
}

/* Moving back onto a name that is taken here fails, names the clash and leaves the interface where it was. */
static void test_name_clash(struct fixture *f)
{
        struct tessera_error err = {0};
        if (!ok(netdev_move_to_pid(f->veth, f->child, &err) == 0, "move %s in again (%s)", f->veth, err.msg))
                return;
        snprintf(f->clash, sizeof(f->clash), "%s", f->veth);
        snprintf(f->clash_peer, sizeof(f->clash_peer), "tnd%dq", (int)getpid());
        if (!ok(run("ip link add %s type veth peer name %s", f->clash, f->clash_peer) == 0, "make a second %s here",
                f->clash))
                return;
        int r = netdev_move_from_pid(f->veth, f->child, &err);
        ok(r == -EEXIST && strstr(err.msg, "already exists"), "moving back onto a taken name: %s", err.msg);
        ok(listed_in(f->child, f->veth, NULL, &err) == 1, "%s stays in the child's namespace", f->veth);
        ok(run("ip link del %s", f->clash) == 0, "delete the second %s", f->clash);
        f->clash[0] = f->clash_peer[0] = '\0';
        tessera_error_clear(&err);
        r = netdev_move_from_pid(f->veth, f->child, &err);
        ok(r == 0 && netdev_exists(f->veth), "then it moves back (%s)", err.msg);
}

enum { ROUTE_V4 = 1, ROUTE_V4_GONE = 2, ROUTE_V6 = 4, ROUTE_REFUSED = 8, ROUTE_LO = 16 };

/* In a throwaway namespace: give a veth the default route and see it detected and protected. */
static int default_route_child(void)
{
        if (unshare(CLONE_NEWNET) < 0)
                return 0x80;
        int bits = 0;
        if (run("ip link add tdr0 type veth peer name tdr1 && ip link set tdr0 up && ip link set tdr1 up") != 0)
                return 0x80;
        if (run("ip route add default dev tdr0") == 0 && netdev_has_default_route("tdr0") &&
            !netdev_has_default_route("tdr1"))
                bits |= ROUTE_V4;
        struct tessera_error err = {0};
        if (netdev_move_to_pid("tdr0", getpid(), &err) == -EBUSY && strstr(err.msg, "default route"))
                bits |= ROUTE_REFUSED;
        if (run("ip route del default dev tdr0") == 0 && !netdev_has_default_route("tdr0"))
                bits |= ROUTE_V4_GONE;
        if (run("ip -6 route add default dev tdr0") == 0 && netdev_has_default_route("tdr0"))
                bits |= ROUTE_V6;
        if (!netdev_has_default_route("lo"))
                bits |= ROUTE_LO;
        return bits;
}

static void test_default_route(void)
{
        ok(!netdev_has_default_route("lo"), "lo carries no default route");
        ok(!netdev_has_default_route("nonexistent0"), "a missing interface carries no default route");
        if (geteuid() != 0) {
                skip("a net namespace to set a default route in needs root");
                return;
        }
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0)
                _exit(default_route_child());
        int status = 0;
        if (!ok(pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) != 0x80,
                "default-route probe ran in a namespace of its own"))
                return;
        int bits = WEXITSTATUS(status);
        ok(bits & ROUTE_V4, "an IPv4 default route is seen on its interface only");
        ok(bits & ROUTE_REFUSED, "the interface with the default route is never given away");
        ok(bits & ROUTE_V4_GONE, "no default route once deleted");
        ok(bits & ROUTE_V6, "an IPv6 default route is seen");
        ok(bits & ROUTE_LO, "lo's unreachable ::/0 is no default route");
}

static int count_open_fds(void)
{
        DIR *d = opendir("/proc/self/fd");
        if (!d)
                return -1;
        int n = 0;
        for (struct dirent *de = readdir(d); de; de = readdir(d))
                n += de->d_name[0] != '.';
        closedir(d);
        return n;
}

int main(void)
{
        int fds_before = count_open_fds();
        test_default_route();
        if (geteuid() != 0) {
                skip("moving interfaces between net namespaces needs root");
                return done_testing();
        }
        struct fixture f = {.child = -1, .hold = -1};
        snprintf(f.veth, sizeof(f.veth), "tnd%d", (int)getpid());
        snprintf(f.peer, sizeof(f.peer), "tnd%dp", (int)getpid());
        if (ok(run("ip link add %s type veth peer name %s", f.veth, f.peer) == 0, "create veth %s", f.veth)) {
                f.child = start_netns_child(&f.hold);
                if (ok(f.child > 0, "start a child in a new net namespace")) {
                        test_move_round_trip(&f);
                        test_move_errors(&f);
                        test_name_clash(&f);
                }
        }
        cleanup(&f);
        ok(!netdev_exists(f.veth) && !netdev_exists(f.peer), "no test interface is left");
        int fds_after = count_open_fds();
        ok(fds_after == fds_before, "no descriptor leaked (%d open before, %d after)", fds_before, fds_after);
        return done_testing();
}
