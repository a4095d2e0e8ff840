/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The agent of a whole-address-space exporter: a library thread that, when
 * tesserad asks, converts a range of this process's memory in place and
 * names the memfds behind it.  MPI libraries export everything once and let
 * peers attach any buffer by address; converting the whole address space up
 * front is impossible, so each range is converted the first time someone
 * attaches it.
 *
 * The channel is a socketpair: the thread reads one end; the process keeps
 * the other open too, so that tesserad, restarted or not, can take it with
 * pidfd_getfd() whenever it needs to ask.  Requests carry a sequence number
 * that the reply repeats, so a reply to a daemon that died mid-request is
 * told apart.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>

#include "client-internal.h"
#include "proto.h"
#include "util.h"

static pthread_mutex_t agent_lock = PTHREAD_MUTEX_INITIALIZER;
static pid_t agent_pid;
static int daemon_end = -1;

/* Bytes of a frame a dying daemon left half-sent: the stream restarts at the next request. */
static void drain(int sock)
{
        char buf[4096];
        while (recv(sock, buf, sizeof(buf), MSG_DONTWAIT) > 0)
                ;
}

static json_t *convert_request(json_t *req)
{
        struct tessera_error err = {0};
        json_t *a = json_object_get(req, "addr"), *s = json_object_get(req, "size");
        long ps = sysconf(_SC_PAGESIZE);
        if (!STREQ(json_string_value(json_object_get(req, "op")) ?: "", "convert") || !json_is_integer(a) ||
            !json_is_integer(s)) {
                tessera_error_set(&err, EINVAL, "the agent only converts {addr, size}");
                return proto_reply_error(&err);
        }
        uint64_t addr = (uint64_t)json_integer_value(a), size = (uint64_t)json_integer_value(s);
        if (size == 0 || addr % (uint64_t)ps || size % (uint64_t)ps || addr + size < addr) {
                tessera_error_set(&err, EINVAL, "range %#llx + %llu is not whole pages", (unsigned long long)addr,
                                  (unsigned long long)size);
                return proto_reply_error(&err);
        }
        struct xemem_piece *pieces = NULL;
        size_t n = 0;
        int r = convert_range((uintptr_t)addr, (size_t)size, &pieces, &n, &err);
        if (r < 0)
                return proto_reply_error(&err);
        json_t *reply = proto_reply_ok(json_pack("{s:o}", "pieces", xemem_pieces_json(pieces, n, 0)));
        free(pieces);
        return reply;
}

static void *agent_main(void *arg)
{
        int sock = (int)(intptr_t)arg;
        for (;;) {
                json_t *req = NULL;
                size_t n_fds = 0;
                int r = proto_recv(sock, &req, NULL, &n_fds, NULL);
                if (r == -ECONNRESET)
                        break; /* only if this process closed the other end itself */
                if (r < 0) {
                        drain(sock);
                        continue;
                }
                json_t *reply = convert_request(req);
                json_object_set(reply, "seq", json_object_get(req, "seq") ?: json_null());
                (void)proto_send(sock, reply, NULL, 0, NULL);
                json_decref(reply);
                json_decref(req);
        }
        close(sock);
        return NULL;
}

/* The signal convert.c parks threads with must reach this thread too; nothing else should. */
static void block_other_signals(sigset_t *old)
{
        sigset_t all;
        sigfillset(&all);
        const char *env = getenv("TESSERA_XEMEM_SIGNAL");
        int stop = env && *env ? atoi(env) : SIGRTMAX - 2;
        sigdelset(&all, stop);
        pthread_sigmask(SIG_SETMASK, &all, old);
}

int xemem_agent_start(int *ret_fd, struct tessera_error *err)
{
        pthread_mutex_lock(&agent_lock);
        if (agent_pid == getpid() && daemon_end >= 0) {
                *ret_fd = daemon_end;
                pthread_mutex_unlock(&agent_lock);
                return 0;
        }
        /* a child of fork(): the parent's thread did not come along; its descriptors did, and stay unused */
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
                pthread_mutex_unlock(&agent_lock);
                return tessera_error_set(err, errno, "cannot create the XEMEM agent's socket: %s", strerror(errno));
        }
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&attr, 256 << 10);
        sigset_t old;
        block_other_signals(&old);
        pthread_t t;
        int r = pthread_create(&t, &attr, agent_main, (void *)(intptr_t)sv[0]);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        pthread_attr_destroy(&attr);
        if (r != 0) {
                close(sv[0]);
                close(sv[1]);
                pthread_mutex_unlock(&agent_lock);
                return tessera_error_set(err, r, "cannot start the XEMEM agent thread: %s", strerror(r));
        }
        daemon_end = sv[1];
        agent_pid = getpid();
        *ret_fd = daemon_end;
        pthread_mutex_unlock(&agent_lock);
        return 0;
}
