/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libtessera public interface: the error object shared by every call, and the
 * client side of the control protocol used by the `tessera` shell, libxemem
 * and the SPANK plugin.
 */
#ifndef TESSERA_TESSERA_H
#define TESSERA_TESSERA_H

#include <stdarg.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TESSERA_PROTO_VERSION  1
#define TESSERA_DEFAULT_SOCKET "/run/tessera/tessera.sock"

/*
 * Every fallible call returns a negative errno and, when given one, fills an
 * error object.  `field` names the spec or request field at fault (empty when
 * none), so a caller that knows where that field came from (a YAML file) can
 * add file, line and column.
 */
struct tessera_error {
        int code;       /* positive errno, 0 when no error */
        char field[64]; /* request or spec field at fault, or "" */
        char msg[1024];
};

int tessera_error_set(struct tessera_error *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int tessera_error_setv(struct tessera_error *err, int code, const char *fmt, va_list ap);
/* Like tessera_error_set, and records the field at fault. */
int tessera_error_field(struct tessera_error *err, int code, const char *field, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
/* Puts "context: " in front of the message; returns `ret` so callers can `return`. */
int tessera_error_prefix(struct tessera_error *err, int ret, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
void tessera_error_clear(struct tessera_error *err);

/* Client side of the control socket. */
struct tessera_client;

/*
 * Connects to tesserad: `socket_path`, else $TESSERA_SOCKET, else the default.
 */
int tessera_client_connect(const char *socket_path, struct tessera_client **ret, struct tessera_error *err);
void tessera_client_free(struct tessera_client *c);
/* Path the client connected to (for messages). */
const char *tessera_client_path(const struct tessera_client *c);
/* The connected socket (for callers that pass descriptors alongside a call). */
int tessera_client_fd(const struct tessera_client *c);

/*
 * One request/reply round trip.  `request` is a jansson json_t* object
 * (declared void* here so this header does not pull in jansson); `op` and
 * `version` are added.  On success *result is a new reference the caller
 * json_decref()s; on failure the daemon's errno, field and message are in err.
 */
int tessera_client_call(struct tessera_client *c, const char *op, void *request, void **result,
                        struct tessera_error *err);

/*
 * The same, with descriptors: `fds_in` (n_in, may be 0) ride along the
 * request as SCM_RIGHTS; descriptors that come with the reply land in
 * fds_out (*n_out: in, its capacity; out, how many), CLOEXEC, owned by the
 * caller.
 */
int tessera_client_call_fds(struct tessera_client *c, const char *op, void *request, const int *fds_in, size_t n_in,
                            void **result, int *fds_out, size_t *n_out, struct tessera_error *err);

#ifdef __cplusplus
}
#endif
#endif
