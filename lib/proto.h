/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The control protocol: length-prefixed JSON over a SOCK_STREAM unix socket.
 * A frame is a 4-byte little-endian length then that many bytes of UTF-8 JSON
 * (at most PROTO_MAX_FRAME).  File descriptors may ride along a frame as
 * SCM_RIGHTS (XEMEM).
 *
 *   request: {"version": 1, "op": "create", ...arguments}
 *   reply:   {"version": 1, "ok": true, "result": ...}
 *            {"version": 1, "ok": false, "errno": 22, "field": "cpus", "error": "message"}
 */
#ifndef TESSERA_PROTO_H
#define TESSERA_PROTO_H

#include <jansson.h>

#include "tessera/tessera.h"

#define PROTO_MAX_FRAME (16u << 20)
#define PROTO_MAX_FDS   64 /* an XEMEM attach hands over one memfd per piece */

/* Sends one frame, with `n_fds` descriptors (may be 0). */
int proto_send(int fd, json_t *msg, const int *fds, size_t n_fds, struct tessera_error *err);
/*
 * Receives one frame.  Returns 0 and a new reference in *ret, or -ECONNRESET
 * on a clean end of stream before a frame.  Received descriptors (CLOEXEC)
 * land in fds[] (*n_fds in: capacity, out: count); extra ones are closed.
 */
int proto_recv(int fd, json_t **ret, int *fds, size_t *n_fds, struct tessera_error *err);

/*
 * For a reader that buffers what arrives without blocking (tesserad): takes
 * one frame off the front of buf[0..len) if it is all there.  Returns 1 with
 * *ret and the bytes it used in *used, 0 when more bytes are needed, or a
 * negative errno for a frame that can never be valid.
 */
int proto_take_frame(const char *buf, size_t len, json_t **ret, size_t *used, struct tessera_error *err);

json_t *proto_request(const char *op);
json_t *proto_reply_ok(json_t *result /* stolen; NULL: null */);
json_t *proto_reply_error(const struct tessera_error *err);
/* Turns a reply into 0 and its result (borrowed from reply), or a negative errno with err filled. */
int proto_reply_result(json_t *reply, json_t **result, struct tessera_error *err);

#endif
