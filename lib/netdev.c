/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Network interfaces over raw rtnetlink.  A netlink socket stays bound to the
 * net namespace it was created in, so to act inside an enclave's namespace a
 * short-lived child joins it, opens a socket there and hands it back over
 * SCM_RIGHTS; every request is then sent from the caller, whose fd table
 * resolves IFLA_NET_NS_FD.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <net/route.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "netdev.h"
#include "util.h"

#define NL_RECV_SIZE 32768 /* enough for any single rtnetlink dump part */

struct link_request {
        struct nlmsghdr nh;
        struct ifinfomsg ifi;
        char attrs[64];
};

/* What the kernel said about a failed request. */
struct nl_status {
        int error;     /* negative errno, 0 */
        char msg[256]; /* extended ACK message, or "" */
};

static bool ifname_is_valid(const char *s)
{
        size_t len = s ? strlen(s) : 0;
        return len > 0 && len < IFNAMSIZ && !strchr(s, '/') && !strpbrk(s, " \t\n:") && !STREQ(s, ".") &&
               !STREQ(s, "..");
}

static int check_ifname(const char *ifname, struct tessera_error *err)
{
        if (!ifname_is_valid(ifname))
                return tessera_error_field(err, EINVAL, "interface",
                                           "invalid interface name '%s': want 1-%d characters, no '/', ':' or blanks",
                                           ifname ? ifname : "(null)", IFNAMSIZ - 1);
        return 0;
}

bool netdev_exists(const char *ifname)
{
        return ifname_is_valid(ifname) && if_nametoindex(ifname) > 0;
}

static int nl_put_attr(struct nlmsghdr *nh, size_t cap, unsigned short type, const void *data, size_t len)
{
        size_t offset = NLMSG_ALIGN(nh->nlmsg_len);
        if (offset + RTA_SPACE(len) > cap)
                return -ENOBUFS;
        struct rtattr *rta = (struct rtattr *)((char *)nh + offset);
        rta->rta_type = type;
        rta->rta_len = (unsigned short)RTA_LENGTH(len);
        memcpy(RTA_DATA(rta), data, len);
        nh->nlmsg_len = (unsigned)(offset + RTA_SPACE(len));
        return 0;
}

static int nl_open(struct tessera_error *err)
{
        int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
        if (fd < 0)
                return tessera_error_set(err, errno, "cannot open an rtnetlink socket: %s", strerror(errno));
        return fd;
}

/* Asks for the kernel's own words on errors, without a copy of our request. */
static void nl_enable_ext_ack(int fd)
{
        int one = 1;
        (void)setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof(one));
        (void)setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof(one));
}

static int nl_send(int fd, struct nlmsghdr *nh)
{
        static unsigned seq;
        struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
        nh->nlmsg_seq = __atomic_add_fetch(&seq, 1, __ATOMIC_RELAXED);
        ssize_t n;
        do
                n = sendto(fd, nh, nh->nlmsg_len, 0, (struct sockaddr *)&kernel, sizeof(kernel));
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return -errno;
        return n == (ssize_t)nh->nlmsg_len ? 0 : -EIO;
}

static ssize_t nl_recv(int fd, void *buf, size_t size)
{
        ssize_t n;
        do
                n = recv(fd, buf, size, MSG_TRUNC);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return -errno;
        return (size_t)n > size ? -EMSGSIZE : n;
}

static void nl_parse_error(const struct nlmsghdr *nh, struct nl_status *st)
{
        const struct nlmsgerr *e = NLMSG_DATA(nh);
        st->error = e->error;
        if (!(nh->nlmsg_flags & NLM_F_ACK_TLVS))
                return;
        /* The TLVs follow the echoed request, which NETLINK_CAP_ACK trims to its header. */
        size_t payload = sizeof(*e);
        if (!(nh->nlmsg_flags & NLM_F_CAPPED) && e->msg.nlmsg_len >= NLMSG_HDRLEN)
                payload += e->msg.nlmsg_len - NLMSG_HDRLEN;
        size_t offset = NLMSG_HDRLEN + NLMSG_ALIGN(payload);
        if (offset >= nh->nlmsg_len)
                return;
        int len = (int)(nh->nlmsg_len - offset);
        for (const struct rtattr *a = (const void *)((const char *)nh + offset); RTA_OK(a, len); a = RTA_NEXT(a, len))
                if (a->rta_type == NLMSGERR_ATTR_MSG && RTA_PAYLOAD(a) > 0)
                        snprintf(st->msg, sizeof(st->msg), "%.*s", (int)RTA_PAYLOAD(a), (const char *)RTA_DATA(a));
}

/* Sends a request and waits for its ACK. */
static int nl_transact(int fd, struct nlmsghdr *req, struct nl_status *st)
{
        *st = (struct nl_status){0};
        req->nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
        int r = nl_send(fd, req);
        if (r < 0)
                return st->error = r;
        _cleanup_free_ char *buf = malloc(NL_RECV_SIZE);
        if (!buf)
                return st->error = -ENOMEM;
        for (;;) {
                ssize_t n = nl_recv(fd, buf, NL_RECV_SIZE);
                if (n < 0)
                        return st->error = (int)n;
                int len = (int)n;
                for (struct nlmsghdr *nh = (void *)buf; NLMSG_OK(nh, len); nh = NLMSG_NEXT(nh, len)) {
                        if (nh->nlmsg_seq != req->nlmsg_seq || nh->nlmsg_type != NLMSG_ERROR)
                                continue;
                        nl_parse_error(nh, st);
                        return st->error;
                }
        }
}

/* Calls `fn` for each interface in a RTM_GETLINK dump. */
static int nl_dump_links(int fd, int (*fn)(const struct ifinfomsg *ifi, const char *name, void *userdata),
                         void *userdata, struct nl_status *st)
{
        *st = (struct nl_status){0};
        struct link_request req = {
                .nh.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifinfomsg)),
                .nh.nlmsg_type = RTM_GETLINK,
                .nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP,
                .ifi.ifi_family = AF_UNSPEC,
        };
        int r = nl_send(fd, &req.nh);
        if (r < 0)
                return st->error = r;
        _cleanup_free_ char *buf = malloc(NL_RECV_SIZE);
        if (!buf)
                return st->error = -ENOMEM;
        for (;;) {
                ssize_t n = nl_recv(fd, buf, NL_RECV_SIZE);
                if (n < 0)
                        return st->error = (int)n;
                int len = (int)n;
                for (struct nlmsghdr *nh = (void *)buf; NLMSG_OK(nh, len); nh = NLMSG_NEXT(nh, len)) {
                        if (nh->nlmsg_seq != req.nh.nlmsg_seq)
                                continue;
                        if (nh->nlmsg_type == NLMSG_DONE)
                                return 0;
                        if (nh->nlmsg_type == NLMSG_ERROR) {
                                nl_parse_error(nh, st);
                                return st->error ? st->error : -EIO;
                        }
                        if (nh->nlmsg_type != RTM_NEWLINK || nh->nlmsg_len < NLMSG_LENGTH(sizeof(struct ifinfomsg)))
                                continue;
                        const struct ifinfomsg *ifi = NLMSG_DATA(nh);
                        int alen = (int)IFLA_PAYLOAD(nh);
                        for (const struct rtattr *a = IFLA_RTA(ifi); RTA_OK(a, alen); a = RTA_NEXT(a, alen)) {
                                if (a->rta_type != IFLA_IFNAME)
                                        continue;
                                char name[IFNAMSIZ];
                                snprintf(name, sizeof(name), "%.*s", (int)RTA_PAYLOAD(a), (const char *)RTA_DATA(a));
                                r = fn(ifi, name, userdata);
                                if (r < 0)
                                        return st->error = r;
                        }
                }
        }
}

/* Moves `ifname`, as seen by the namespace of socket `fd`, into the namespace `target_nsfd` names. */
static int link_set_netns(int fd, const char *ifname, int target_nsfd, struct nl_status *st)
{
        /* ifi_index 0 plus IFLA_IFNAME: the kernel looks the name up in the socket's namespace. */
        struct link_request req = {
                .nh.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifinfomsg)),
                .nh.nlmsg_type = RTM_NEWLINK,
                .ifi.ifi_family = AF_UNSPEC,
        };
        uint32_t nsfd = (uint32_t)target_nsfd;
        int r = nl_put_attr(&req.nh, sizeof(req), IFLA_IFNAME, ifname, strlen(ifname) + 1);
        if (r >= 0)
                r = nl_put_attr(&req.nh, sizeof(req), IFLA_NET_NS_FD, &nsfd, sizeof(nsfd));
        if (r < 0)
                return st->error = r;
        return nl_transact(fd, &req.nh, st);
}

static int pidfd_open_compat(pid_t pid)
{
        return (int)syscall(SYS_pidfd_open, pid, 0);
}

/*
 * The net namespace of `pid`.  A pidfd taken first and checked after the
 * open proves the namespace belongs to that process, not to a later one
 * that reused its pid.
 */
static int open_netns_of_pid(pid_t pid, struct tessera_error *err)
{
        if (pid <= 0)
                return tessera_error_field(err, EINVAL, "pid", "invalid pid %d", (int)pid);
        _cleanup_close_ int pidfd = pidfd_open_compat(pid);
        if (pidfd < 0 && errno != ENOSYS)
                return tessera_error_set(err, errno == ESRCH ? ESRCH : errno, "no process with pid %d: %s", (int)pid,
                                         strerror(errno));
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/ns/net", (int)pid);
        _cleanup_close_ int nsfd = open(path, O_RDONLY | O_CLOEXEC);
        if (nsfd < 0) {
                int e = errno == ENOENT ? ESRCH : errno;
                return tessera_error_set(err, e, "cannot open the net namespace of pid %d (`%s`): %s", (int)pid, path,
                                         e == ESRCH ? "the process is gone" : strerror(e));
        }
        if (pidfd >= 0 && syscall(SYS_pidfd_send_signal, pidfd, 0, NULL, 0) < 0 && errno == ESRCH)
                return tessera_error_set(err, ESRCH, "process %d exited while its net namespace was opened", (int)pid);
        return TAKE_FD(nsfd);
}

static int open_own_netns(struct tessera_error *err)
{
        /* thread-self: the namespace of this thread, which is what its sockets get. */
        int fd = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return tessera_error_set(err, errno, "cannot open `/proc/thread-self/ns/net`: %s", strerror(errno));
        return fd;
}

struct child_report {
        int error; /* positive errno, 0 when a socket comes with it */
        int step;  /* 0 setns, 1 socket */
};

/* Runs in the forked child: only system calls, then _exit. */
static _Noreturn void netns_socket_child(int nsfd, int reply)
{
        struct child_report report = {0};
        int fd = -1;
        if (setns(nsfd, CLONE_NEWNET) < 0)
                report = (struct child_report){.error = errno, .step = 0};
        else if ((fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE)) < 0)
                report = (struct child_report){.error = errno, .step = 1};

        union {
                struct cmsghdr align;
                char buf[CMSG_SPACE(sizeof(int))];
        } control = {0};
        struct iovec iov = {.iov_base = &report, .iov_len = sizeof(report)};
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
        if (fd >= 0) {
                msg.msg_control = control.buf;
                msg.msg_controllen = sizeof(control.buf);
                struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
                cmsg->cmsg_level = SOL_SOCKET;
                cmsg->cmsg_type = SCM_RIGHTS;
                cmsg->cmsg_len = CMSG_LEN(sizeof(int));
                memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));
        }
        _exit(sendmsg(reply, &msg, MSG_NOSIGNAL) < 0 ? 1 : 0);
}

static int receive_child_socket(int sock, pid_t pid, struct tessera_error *err)
{
        struct child_report report = {0};
        union {
                struct cmsghdr align;
                char buf[CMSG_SPACE(sizeof(int))];
        } control;
        struct iovec iov = {.iov_base = &report, .iov_len = sizeof(report)};
        struct msghdr msg = {
                .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf, .msg_controllen = sizeof(control.buf)};
        ssize_t n;
        do
                n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return tessera_error_set(err, errno,
                                         "cannot read the reply of the helper for pid %d's net namespace: %s", (int)pid,
                                         strerror(errno));
        if (n != sizeof(report))
                return tessera_error_set(err, EIO, "the helper that joins pid %d's net namespace died", (int)pid);

        int fd = -1;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
                if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS && c->cmsg_len == CMSG_LEN(sizeof(int)))
                        memcpy(&fd, CMSG_DATA(c), sizeof(int));
        if (report.error)
                return tessera_error_set(err, report.error, "cannot %s the net namespace of pid %d: %s",
                                         report.step == 0 ? "join" : "open a netlink socket in", (int)pid,
                                         strerror(report.error));
        if (fd < 0)
                return tessera_error_set(err, EIO, "the helper in pid %d's net namespace sent no socket%s", (int)pid,
                                         msg.msg_flags & MSG_CTRUNC ? " (control data truncated)" : "");
        return fd;
}

static void reap(pid_t child)
{
        /* ECHILD: a SIGCHLD handler of the caller reaped it first; the socket carried the result. */
        while (waitpid(child, NULL, 0) < 0 && errno == EINTR)
                ;
}

/* An rtnetlink socket bound to the net namespace of `pid`. */
static int nl_open_in_netns_of(pid_t pid, int nsfd, struct tessera_error *err)
{
        int pair[2];
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0)
                return tessera_error_set(err, errno, "cannot make a socket pair: %s", strerror(errno));
        _cleanup_close_ int ours = pair[0], theirs = pair[1];
        pid_t child = fork();
        if (child < 0)
                return tessera_error_set(err, errno, "cannot fork to join pid %d's net namespace: %s", (int)pid,
                                         strerror(errno));
        if (child == 0)
                netns_socket_child(nsfd, theirs);
        close(TAKE_FD(theirs)); /* so a dead child reads as EOF */
        int fd = receive_child_socket(ours, pid, err);
        reap(child);
        if (fd >= 0)
                nl_enable_ext_ack(fd);
        return fd;
}

static int move_error(const char *ifname, const char *direction, pid_t pid, const struct nl_status *st,
                      struct tessera_error *err)
{
        int e = -st->error;
        const char *why = strerror(e);
        if (e == ENODEV)
                why = "no such interface there";
        else if (e == EEXIST)
                why = "an interface with that name already exists in the destination";
        else if (e == EPERM)
                why = "Operation not permitted (needs CAP_NET_ADMIN in both namespaces)";
        return tessera_error_field(err, e, "interface",
                                   "cannot move interface '%s' %s the net namespace of pid %d: "
                                   "%s%s%s%s",
                                   ifname, direction, (int)pid, why, st->msg[0] ? " (kernel: " : "", st->msg,
                                   st->msg[0] ? ")" : "");
}

int netdev_move_to_pid(const char *ifname, pid_t pid, struct tessera_error *err)
{
        int r = check_ifname(ifname, err);
        if (r < 0)
                return r;
        if (STREQ(ifname, "lo"))
                return tessera_error_field(err, EINVAL, "interface",
                                           "cannot move 'lo': every net namespace has its "
                                           "own loopback");
        if (netdev_has_default_route(ifname))
                return tessera_error_field(err, EBUSY, "interface",
                                           "interface '%s' carries this node's default "
                                           "route: giving it away would cut the node off",
                                           ifname);
        _cleanup_close_ int nsfd = open_netns_of_pid(pid, err);
        if (nsfd < 0)
                return tessera_error_prefix(err, nsfd, "cannot move interface '%s'", ifname);
        _cleanup_close_ int fd = nl_open(err);
        if (fd < 0)
                return fd;
        nl_enable_ext_ack(fd);
        struct nl_status st;
        if (link_set_netns(fd, ifname, nsfd, &st) < 0)
                return move_error(ifname, "into", pid, &st, err);
        return 0;
}

int netdev_move_from_pid(const char *ifname, pid_t pid, struct tessera_error *err)
{
        int r = check_ifname(ifname, err);
        if (r < 0)
                return r;
        _cleanup_close_ int nsfd = open_netns_of_pid(pid, err);
        if (nsfd < 0)
                return tessera_error_prefix(err, nsfd, "cannot move interface '%s' back", ifname);
        _cleanup_close_ int own = open_own_netns(err);
        if (own < 0)
                return own;
        _cleanup_close_ int fd = nl_open_in_netns_of(pid, nsfd, err);
        if (fd < 0)
                return tessera_error_prefix(err, fd, "cannot move interface '%s' back", ifname);
        struct nl_status st;
        if (link_set_netns(fd, ifname, own, &st) < 0)
                return move_error(ifname, "out of", pid, &st, err);
        return 0;
}

struct name_list {
        char **v;
        size_t n, cap;
};

static void name_list_done(struct name_list *l)
{
        for (size_t i = 0; i < l->n; i++)
                free(l->v[i]);
        free(l->v);
        *l = (struct name_list){0};
}

static int collect_name(const struct ifinfomsg *ifi, const char *name, void *userdata)
{
        struct name_list *l = userdata;
        if (ifi->ifi_flags & IFF_LOOPBACK)
                return 0;
        if (l->n == l->cap) {
                size_t cap = l->cap ? l->cap * 2 : 8;
                char **v = reallocarray(l->v, cap, sizeof(*v));
                if (!v)
                        return -ENOMEM;
                l->v = v;
                l->cap = cap;
        }
        l->v[l->n] = strdup(name);
        if (!l->v[l->n])
                return -ENOMEM;
        l->n++;
        return 0;
}

int netdev_list_in_pid(pid_t pid, char ***ret, size_t *n, struct tessera_error *err)
{
        _cleanup_close_ int nsfd = open_netns_of_pid(pid, err);
        if (nsfd < 0)
                return nsfd;
        _cleanup_close_ int fd = nl_open_in_netns_of(pid, nsfd, err);
        if (fd < 0)
                return fd;
        struct name_list names = {0};
        struct nl_status st;
        if (nl_dump_links(fd, collect_name, &names, &st) < 0) {
                name_list_done(&names);
                return tessera_error_set(err, -st.error,
                                         "cannot list the interfaces in the net namespace of pid %d: "
                                         "%s%s%s%s",
                                         (int)pid, strerror(-st.error), st.msg[0] ? " (kernel: " : "", st.msg,
                                         st.msg[0] ? ")" : "");
        }
        *ret = names.v;
        *n = names.n;
        return 0;
}

/* /proc/net/route: "Iface Destination Gateway Flags RefCnt Use Metric Mask ..." in hex. */
static bool ipv4_default_route(const char *ifname)
{
        _cleanup_fclose_ FILE *f = fopen("/proc/thread-self/net/route", "re");
        if (!f)
                return false;
        char line[512];
        if (!fgets(line, sizeof(line), f))
                return false; /* header */
        while (fgets(line, sizeof(line), f)) {
                char iface[IFNAMSIZ + 1];
                unsigned long dest, mask;
                unsigned flags;
                if (sscanf(line, "%16s %lx %*x %x %*d %*d %*d %lx", iface, &dest, &flags, &mask) != 4)
                        continue;
                if (dest == 0 && mask == 0 && (flags & RTF_UP) && STREQ(iface, ifname))
                        return true;
        }
        return false;
}

/*
 * /proc/net/ipv6_route: "dest plen src splen nexthop metric refcnt use flags iface".
 * lo always holds an unreachable ::/0 (RTF_REJECT), which is no default route.
 */
static bool ipv6_default_route(const char *ifname)
{
        _cleanup_fclose_ FILE *f = fopen("/proc/thread-self/net/ipv6_route", "re");
        if (!f)
                return false;
        char line[512];
        while (fgets(line, sizeof(line), f)) {
                char dest[33], iface[IFNAMSIZ + 1];
                unsigned plen, flags;
                if (sscanf(line, "%32s %x %*s %*x %*s %*x %*x %*x %x %16s", dest, &plen, &flags, iface) != 4)
                        continue;
                if (plen == 0 && strspn(dest, "0") == 32 && (flags & RTF_UP) && !(flags & RTF_REJECT) &&
                    STREQ(iface, ifname))
                        return true;
        }
        return false;
}

bool netdev_has_default_route(const char *ifname)
{
        if (!ifname_is_valid(ifname))
                return false;
        return ipv4_default_route(ifname) || ipv6_default_route(ifname);
}
