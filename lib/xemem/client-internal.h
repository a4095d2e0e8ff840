/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* What the parts of libxemem share: the connection to tesserad, the error text, the agent. */
#ifndef XEMEM_CLIENT_INTERNAL_H
#define XEMEM_CLIENT_INTERNAL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "convert.h"
#include "tessera/tessera.h"

/* One request to tesserad's XEMEM socket; descriptors of the reply in fds (*n_fds: capacity in, count out). */
int xemem_call(const char *op, json_t *req, json_t **result, int *fds, size_t *n_fds, struct tessera_error *err);

/* Record the message for xemem_error() and return r (a negative errno). */
int xemem_fail(int r, const struct tessera_error *err);
int xemem_failf(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The pieces as tesserad reads them, offsets counted from `base`. */
json_t *xemem_pieces_json(const struct xemem_piece *p, size_t n, uintptr_t base);

/*
 * Starts this process's agent (once; again in a child after fork): a thread
 * that converts ranges of the address space when tesserad asks, for the
 * whole-address-space segments.  *ret_fd: the socket tesserad takes from us.
 */
int xemem_agent_start(int *ret_fd, struct tessera_error *err);

#endif
