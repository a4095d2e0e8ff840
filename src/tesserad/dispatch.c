/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Requests to library calls: one small handler per op, found in a sorted table. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "proto.h"
#include "tesserad.h"
#include "util.h"

/* The request's descriptors and what goes back travel in `io`. */
struct io {
        const int *fds_in;
        size_t n_in;
        struct outcome *out;
};

typedef int (*handler_fn)(struct tessera_node *n, const struct caller *who, json_t *req, json_t **ret,
                          struct tessera_error *err);
typedef int (*io_handler_fn)(struct tessera_node *n, const struct caller *who, json_t *req, struct io *io, json_t **ret,
                             struct tessera_error *err);

/* After a launch or a create the enclave's stem pool is topped up, once the client has its answer. */
static void refill_after(json_t *req, struct io *io)
{
        const char *name = json_string_value(json_object_get(req, "name"));
        if (!name)
                name = json_string_value(json_object_get(json_object_get(req, "spec"), "name"));
        if (name)
                snprintf(io->out->refill, sizeof(io->out->refill), "%s", name);
}

static int need_name(json_t *req, const char **ret, struct tessera_error *err)
{
        json_t *v = json_object_get(req, "name");
        if (!json_is_string(v))
                return tessera_error_field(err, EINVAL, "name", "name: a string is required");
        *ret = json_string_value(v);
        return 0;
}

static int with_result(json_t *v, json_t **ret, struct tessera_error *err)
{
        if (!v)
                return err && err->code ? -err->code : tessera_error_set(err, EIO, "internal error");
        *ret = v;
        return 0;
}

static int op_node(struct tessera_node *n, const struct caller *who, json_t *req, json_t **ret,
                   struct tessera_error *err)
{
        return with_result(node_summary(n, who->uid, err), ret, err);
}

static int op_cpus(struct tessera_node *n, const struct caller *who, json_t *req, json_t **ret,
                   struct tessera_error *err)
{
        return with_result(node_cpus(n, who->uid, err), ret, err);
}

static int op_memory(struct tessera_node *n, const struct caller *who, json_t *req, json_t **ret,
                     struct tessera_error *err)
{
        return with_result(node_memory(n, who->uid, err), ret, err);
}

static int op_devices(struct tessera_node *n, const struct caller *who, json_t *req, json_t **ret,
                      struct tessera_error *err)
{
        return with_result(node_devices(n, who->uid, err), ret, err);
}

static int op_list(struct tessera_node *n, const struct caller *who, json_t *req, json_t **ret,
                   struct tessera_error *err)
{
        return enclave_list(n, who->uid, ret, err);
}

static int op_create(struct tessera_node *n, const struct caller *who, json_t *req, struct io *io, json_t **ret,
                     struct tessera_error *err)
{
        refill_after(req, io);
        json_t *spec = json_object_get(req, "spec");
        if (!json_is_object(spec))
                return tessera_error_field(err, EINVAL, "spec", "spec: an object is required");
        return enclave_create(n, who->uid, spec, ret, err);
}

static int op_destroy(struct tessera_node *n, const struct caller *who, json_t *req, json_t **ret,
                      struct tessera_error *err)
{
        const char *name = NULL;
        int r = need_name(req, &name, err);
        if (r == 0)
                r = enclave_destroy(n, who->uid, name, err);
        if (r == 0)
                *ret = json_pack("{s:s}", "name", name);
        return r;
}

static int op_ping(struct tessera_node *n, const struct caller *who, json_t *req, json_t **ret,
                   struct tessera_error *err)
{
        const char *name = NULL;
        int r = need_name(req, &name, err);
        return r < 0 ? r : enclave_ping(n, who->uid, name, ret, err);
}

static int op_assign(struct tessera_node *n, const struct caller *who, json_t *req, json_t **ret,
                     struct tessera_error *err)
{
        return enclave_change(n, who->uid, req, false, ret, err);
}

static int op_release(struct tessera_node *n, const struct caller *who, json_t *req, json_t **ret,
                      struct tessera_error *err)
{
        return enclave_change(n, who->uid, req, true, ret, err);
}

static int op_check(struct tessera_node *n, const struct caller *who, json_t *req, json_t **ret,
                    struct tessera_error *err)
{
        return node_check(n, who->uid, ret, err);
}

static int op_apps(struct tessera_node *n, const struct caller *who, json_t *req, json_t **ret,
                   struct tessera_error *err)
{
        return app_list(n, who->uid, req, ret, err);
}

static int op_kill(struct tessera_node *n, const struct caller *who, json_t *req, json_t **ret,
                   struct tessera_error *err)
{
        return app_kill(n, who->uid, req, ret, err);
}

static int op_launch(struct tessera_node *n, const struct caller *who, json_t *req, struct io *io, json_t **ret,
                     struct tessera_error *err)
{
        refill_after(req, io);
        return app_launch(n, who->uid, req, io->fds_in, io->n_in, ret, err);
}

static int op_wait(struct tessera_node *n, const struct caller *who, json_t *req, struct io *io, json_t **ret,
                   struct tessera_error *err)
{
        int r = app_wait(n, who->uid, req, ret, &io->out->wait_app, err);
        return r < 0 ? r : 0;
}

static int op_logs(struct tessera_node *n, const struct caller *who, json_t *req, struct io *io, json_t **ret,
                   struct tessera_error *err)
{
        return app_logs(n, who->uid, req, ret, io->out->fds, &io->out->n_fds, err);
}

static int op_console(struct tessera_node *n, const struct caller *who, json_t *req, struct io *io, json_t **ret,
                      struct tessera_error *err)
{
        refill_after(req, io);
        return app_console(n, who->uid, req, ret, io->out->fds, &io->out->n_fds, err);
}

static int op_cat(struct tessera_node *n, const struct caller *who, json_t *req, struct io *io, json_t **ret,
                  struct tessera_error *err)
{
        return app_file(n, who->uid, req, false, ret, io->out->fds, &io->out->n_fds, err);
}

static int op_write(struct tessera_node *n, const struct caller *who, json_t *req, struct io *io, json_t **ret,
                    struct tessera_error *err)
{
        return app_file(n, who->uid, req, true, ret, io->out->fds, &io->out->n_fds, err);
}

/* Sorted by name for bsearch; `io` handlers take or give descriptors. */
static const struct op {
        const char *name;
        handler_fn fn;
        io_handler_fn io_fn;
} ops[] = {
        {"apps", op_apps, NULL},     {"assign", op_assign, NULL},   {"cat", NULL, op_cat},
        {"check", op_check, NULL},   {"console", NULL, op_console}, {"cpus", op_cpus, NULL},
        {"create", NULL, op_create}, {"destroy", op_destroy, NULL}, {"devices", op_devices, NULL},
        {"kill", op_kill, NULL},     {"launch", NULL, op_launch},   {"list", op_list, NULL},
        {"logs", NULL, op_logs},     {"memory", op_memory, NULL},   {"node", op_node, NULL},
        {"ping", op_ping, NULL},     {"release", op_release, NULL}, {"wait", NULL, op_wait},
        {"write", NULL, op_write},
};

static int op_cmp(const void *key, const void *elem)
{
        return strcmp(key, *(const char *const *)elem);
}

json_t *dispatch(struct tessera_node *node, const struct caller *who, json_t *request, const int *fds_in, size_t n_in,
                 struct outcome *out)
{
        struct tessera_error err = {0};
        json_t *result = NULL;
        json_t *v = json_object_get(request, "version");
        const char *op = json_string_value(json_object_get(request, "op"));
        struct io io = {.fds_in = fds_in, .n_in = n_in, .out = out};
        int r;
        if (!json_is_integer(v) || json_integer_value(v) != TESSERA_PROTO_VERSION) {
                r = tessera_error_set(&err, EPROTO, "protocol version %d is required", TESSERA_PROTO_VERSION);
        } else if (!op) {
                r = tessera_error_set(&err, EINVAL, "op: a string is required");
        } else {
                const struct op *found = bsearch(op, ops, ELEMENTSOF(ops), sizeof(ops[0]), op_cmp);
                if (!found)
                        r = tessera_error_set(&err, EOPNOTSUPP, "unknown op '%.64s'", op);
                else if (found->io_fn)
                        r = found->io_fn(node, who, request, &io, &result, &err);
                else
                        r = found->fn(node, who, request, &result, &err);
        }
        if (r < 0) {
                for (size_t i = 0; i < out->n_fds; i++)
                        close(out->fds[i]);
                out->n_fds = 0;
                out->wait_app = 0;
                if (!err.code)
                        tessera_error_set(&err, -r, "%s failed: %s", op ? op : "request", strerror(-r));
                return proto_reply_error(&err);
        }
        if (out->wait_app > 0)
                return NULL;
        return proto_reply_ok(result);
}

bool dispatch_is_xemem(const char *op)
{
        return op && (STREQ(op, "segments") || segment_op_known(op));
}

json_t *dispatch_xemem(struct tessera_node *node, int sock, struct xemem_caller *who, json_t *request,
                       struct outcome *out)
{
        struct tessera_error err = {0};
        json_t *result = NULL;
        json_t *v = json_object_get(request, "version");
        const char *op = json_string_value(json_object_get(request, "op"));
        int r = 0;
        if (!json_is_integer(v) || json_integer_value(v) != TESSERA_PROTO_VERSION)
                r = tessera_error_set(&err, EPROTO, "protocol version %d is required", TESSERA_PROTO_VERSION);
        else if (!dispatch_is_xemem(op))
                r = tessera_error_set(&err, EOPNOTSUPP, "only XEMEM requests are served here, not '%.64s'",
                                      op ? op : "(none)");
        if (r == 0 && who->pidfd < 0)
                r = segment_caller_from_socket(node, sock, who, &err);
        if (r == 0 && STREQ(op, "segments")) {
                r = segment_list(node, who, &result, &err);
        } else if (r == 0) {
                size_t n = MAX_REPLY_FDS;
                r = segment_op(node, who, op, request, &result, out->fds, &n, &out->pending, &err);
                out->n_fds = r == 0 ? n : 0;
                if (r == 0 && out->pending)
                        return NULL;
        }
        if (r < 0) {
                if (!err.code)
                        tessera_error_set(&err, -r, "%s failed: %s", op ? op : "request", strerror(-r));
                return proto_reply_error(&err);
        }
        return proto_reply_ok(result);
}
