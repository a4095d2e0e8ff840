/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef TESSERAD_H
#define TESSERAD_H

#include <jansson.h>
#include <sys/types.h>

#include "config.h"
#include "enclave.h"
#include "segment.h"

#define MAX_REPLY_FDS 64

struct caller {
        pid_t pid;
        uid_t uid;
        gid_t gid;
};

/* What a request hands back besides its reply. */
struct outcome {
        int fds[MAX_REPLY_FDS]; /* descriptors for the client, owned until sent */
        size_t n_fds;
        int64_t wait_app;                /* > 0: no reply now; answer when this application ends */
        char refill[64];                 /* after the reply: top up this enclave's prewarmed stems */
        struct segment_pending *pending; /* no reply now: answer when this XEMEM agent has */
};

/* Runs one request; returns the reply, or NULL when it is deferred (out->wait_app). */
json_t *dispatch(struct tessera_node *node, const struct caller *who, json_t *request, const int *fds_in, size_t n_in,
                 struct outcome *out);

/*
 * Runs one XEMEM request (xemem_* ops, `segments`) for the process at the
 * other end of `sock`, identified by the kernel: `who` caches that identity
 * for the connection (who->pidfd < 0: not known yet).
 */
json_t *dispatch_xemem(struct tessera_node *node, int sock, struct xemem_caller *who, json_t *request,
                       struct outcome *out);
bool dispatch_is_xemem(const char *op);

/* The socket loop: returns when SIGTERM or SIGINT arrives; enclaves keep running. */
int serve(const struct tessera_config *cfg);

#endif
