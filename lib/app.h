/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Applications inside enclaves (docs/apps.md): tesserad's side.  The
 * supervisor forks and reaps; tesserad checks the caller, puts the process in
 * its cgroup leaf, records it durably and hands descriptors to the client so
 * that no application data passes through the daemon.
 */
#ifndef TESSERA_APP_H
#define TESSERA_APP_H

#include <jansson.h>
#include <stdbool.h>
#include <sys/types.h>

#include "tessera/tessera.h"

struct tessera_node;

#define APP_MAX_FDS 4

/* `fds_in` (stdin, stdout, stderr with "wait") are borrowed. */
int app_launch(struct tessera_node *n, uid_t caller, json_t *req, const int *fds_in, size_t n_in, json_t **ret,
               struct tessera_error *err);
int app_list(struct tessera_node *n, uid_t caller, json_t *req, json_t **ret, struct tessera_error *err);
int app_kill(struct tessera_node *n, uid_t caller, json_t *req, json_t **ret, struct tessera_error *err);
/* The log (and its rotated older half first, when there is one), read-only. */
int app_logs(struct tessera_node *n, uid_t caller, json_t *req, json_t **ret, int *fds_out, size_t *n_out,
             struct tessera_error *err);
/* A shell on a pty inside the enclave; the master goes to the client. */
int app_console(struct tessera_node *n, uid_t caller, json_t *req, json_t **ret, int *fds_out, size_t *n_out,
                struct tessera_error *err);
/* A file inside the enclave's root, opened there by the supervisor. */
int app_file(struct tessera_node *n, uid_t caller, json_t *req, bool write, json_t **ret, int *fds_out, size_t *n_out,
             struct tessera_error *err);
/* 1 and *ret when the application has ended; 0 and *ret_id when the caller must wait for it. */
int app_wait(struct tessera_node *n, uid_t caller, json_t *req, json_t **ret, int64_t *ret_id,
             struct tessera_error *err);
json_t *app_json_by_id(struct tessera_node *n, int64_t id, struct tessera_error *err);
/* An application's pidfd became readable: collect its status from the supervisor and record it. */
int app_exited(struct tessera_node *n, int64_t id, json_t *log, struct tessera_error *err);

#endif
