/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef TESSERAD_H
#define TESSERAD_H

#include <jansson.h>
#include <sys/types.h>

#include "config.h"
#include "enclave.h"

struct caller {
        pid_t pid;
        uid_t uid;
        gid_t gid;
};

/* Runs one request; always returns a reply (ok or error). */
json_t *dispatch(struct tessera_node *node, const struct caller *who, json_t *request);

/* The socket loop: returns when SIGTERM or SIGINT arrives; enclaves keep running. */
int serve(const struct tessera_config *cfg);

#endif
