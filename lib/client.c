/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The client side of the control socket, used by the shell, libxemem and the SPANK plugin. */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "proto.h"
#include "util.h"

struct tessera_client {
        int fd;
        char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
};

int tessera_client_connect(const char *socket_path, struct tessera_client **ret, struct tessera_error *err)
{
        const char *path = socket_path;
        if (!path || !*path)
                path = getenv("TESSERA_SOCKET");
        if (!path || !*path)
                path = TESSERA_DEFAULT_SOCKET;
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        if (strlen(path) >= sizeof(sa.sun_path))
                return tessera_error_set(err, ENAMETOOLONG, "socket path `%s` is too long", path);
        strcpy(sa.sun_path, path);
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return tessera_error_set(err, errno, "cannot create a socket: %s", strerror(errno));
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                return tessera_error_set(err, errno, "cannot reach tesserad at `%s`: %s%s", path, strerror(errno),
                                         errno == ENOENT || errno == ECONNREFUSED ? " (is tesserad running?)" : "");
        struct tessera_client *c = calloc(1, sizeof(*c));
        if (!c)
                return tessera_error_set(err, ENOMEM, "out of memory");
        c->fd = TAKE_FD(fd);
        strcpy(c->path, path);
        *ret = c;
        return 0;
}

void tessera_client_free(struct tessera_client *c)
{
        if (!c)
                return;
        if (c->fd >= 0)
                close(c->fd);
        free(c);
}

const char *tessera_client_path(const struct tessera_client *c)
{
        return c->path;
}

int tessera_client_fd(const struct tessera_client *c)
{
        return c->fd;
}

int tessera_client_call_fds(struct tessera_client *c, const char *op, void *request, const int *fds_in, size_t n_in,
                            void **result, int *fds_out, size_t *n_out, struct tessera_error *err)
{
        size_t cap = n_out ? *n_out : 0;
        if (n_out)
                *n_out = 0;
        json_t *req = request ? json_incref((json_t *)request) : json_object();
        if (!req)
                return tessera_error_set(err, ENOMEM, "out of memory");
        json_object_set_new(req, "version", json_integer(TESSERA_PROTO_VERSION));
        json_object_set_new(req, "op", json_string(op));
        int r = proto_send(c->fd, req, fds_in, n_in, err);
        json_decref(req);
        if (r < 0)
                return r;
        json_t *reply = NULL;
        size_t got = cap;
        r = proto_recv(c->fd, &reply, fds_out, &got, err);
        if (r < 0)
                return tessera_error_prefix(err, r, "no reply from tesserad to `%s`", op);
        json_t *res = NULL;
        r = proto_reply_result(reply, &res, err);
        if (r < 0) {
                json_decref(reply);
                for (size_t i = 0; i < got; i++)
                        close(fds_out[i]);
                return r;
        }
        if (result)
                *result = json_incref(res ? res : json_null());
        json_decref(reply);
        if (n_out)
                *n_out = got;
        return 0;
}

int tessera_client_call(struct tessera_client *c, const char *op, void *request, void **result,
                        struct tessera_error *err)
{
        return tessera_client_call_fds(c, op, request, NULL, 0, result, NULL, NULL, err);
}
