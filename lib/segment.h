/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * XEMEM segments, tesserad's side: the node-wide namespace of shared memory
 * segments, the permission checks, and the hand-over of memory from the
 * exporting process to an attacher.
 *
 * tesserad holds no memory.  A segment is a list of pieces, each a memfd
 * that the exporter holds at a known descriptor number (its inode recorded).
 * At attach, after the checks, tesserad takes the descriptor from the
 * exporter with pidfd_getfd(), checks that it is still the recorded memfd,
 * and passes it on (re-opened read-only for read-only access).  A
 * whole-address-space segment has no pieces up front: tesserad asks the
 * exporter's library agent, over a socket the exporter holds, to convert the
 * range wanted and name its pieces.  Records (segments, access grants,
 * attachments) survive a restart of tesserad; they end with the processes
 * they name, seen through pidfds.
 */
#ifndef TESSERA_SEGMENT_H
#define TESSERA_SEGMENT_H

#include <jansson.h>
#include <stdbool.h>
#include <sys/types.h>

#include "tessera/tessera.h"

struct tessera_node;

#define SEGMENT_MAX_FDS 64 /* pieces one attach may hand over */

/*
 * XEMEM's socket, for any process of the node, enclaves included: beside the
 * control socket, in a directory of its own ("DIR/xemem/xemem.sock") that is
 * bound into enclaves with a root of their own at /run/tessera/xemem, so a
 * restarted daemon's new socket shows up there too.
 */
void xemem_socket_path(const char *control_socket, char *buf, size_t len);

/* Who is asking, as the kernel says: never what the request claims. */
struct xemem_caller {
        pid_t pid;
        uid_t uid;
        gid_t gid;
        int pidfd;        /* the peer's pidfd (SO_PEERPIDFD), owned by the caller of segment_op */
        uint64_t start;   /* its start time: with the pid it names the process in the store */
        char enclave[64]; /* the enclave holding it, "" on the host */
};

/* Fills `c` from a connected socket's peer; c->pidfd must be closed by the caller. */
int segment_caller_from_socket(struct tessera_node *n, int sock, struct xemem_caller *c, struct tessera_error *err);

/*
 * Runs one xemem_* request.  Descriptors for the caller go to fds_out
 * (*n_out in: capacity, out: count), owned by the caller.
 */
struct segment_pending;
int segment_op(struct tessera_node *n, const struct xemem_caller *c, const char *op, json_t *req, json_t **ret,
               int *fds_out, size_t *n_out, struct segment_pending **pending, struct tessera_error *err);

/*
 * An attach of a whole-address-space segment: segment_op() returns 0 with
 * *pending set and no reply yet.  The caller watches segment_pending_fd()
 * and calls segment_pending_read() when it is readable: 0 means not yet,
 * 1 means *ret and the descriptors are the reply, a negative errno the
 * failure.  Past segment_pending_deadline() (CLOCK_MONOTONIC ns) the agent
 * has failed to answer.
 */
int segment_pending_fd(const struct segment_pending *p);
uint64_t segment_pending_deadline(const struct segment_pending *p);
int segment_pending_read(struct tessera_node *n, struct segment_pending *p, json_t **ret, int *fds_out, size_t *n_out,
                         struct tessera_error *err);
void segment_pending_free(struct segment_pending *p);
bool segment_op_known(const char *op);

/* `tessera segments`: what the caller may see (host root: everything). */
int segment_list(struct tessera_node *n, const struct xemem_caller *c, json_t **ret, struct tessera_error *err);

/* A watched process ended: its segments leave the namespace, its grants and attachments go. */
void segment_process_exited(struct tessera_node *n, pid_t pid);

/* After a restart: watch every process named by a record, drop the records of those gone. */
int segments_reconcile(struct tessera_node *n, json_t *log, struct tessera_error *err);

#endif
