/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Framing of the control protocol: a 4-byte little-endian length, then JSON. */
#include <endian.h>
#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#include "proto.h"
#include "util.h"

static int parse_body(const char *buf, uint32_t len, json_t **ret, struct tessera_error *err);

static int send_all(int fd, const void *buf, size_t len, const int *fds, size_t n_fds, struct tessera_error *err)
{
        const char *p = buf;
        while (len > 0) {
                struct iovec iov = {.iov_base = (void *)p, .iov_len = len};
                struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
                char control[CMSG_SPACE(sizeof(int) * PROTO_MAX_FDS)];
                if (n_fds > 0) {
                        /* descriptors ride on the first byte sent, exactly once */
                        memset(control, 0, sizeof(control));
                        msg.msg_control = control;
                        msg.msg_controllen = CMSG_SPACE(sizeof(int) * n_fds);
                        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
                        c->cmsg_level = SOL_SOCKET;
                        c->cmsg_type = SCM_RIGHTS;
                        c->cmsg_len = CMSG_LEN(sizeof(int) * n_fds);
                        memcpy(CMSG_DATA(c), fds, sizeof(int) * n_fds);
                }
                ssize_t n = sendmsg(fd, &msg, MSG_NOSIGNAL);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return tessera_error_set(err, errno, "cannot send on the control socket: %s", strerror(errno));
                }
                p += n;
                len -= (size_t)n;
                n_fds = 0;
        }
        return 0;
}

int proto_send(int fd, json_t *msg, const int *fds, size_t n_fds, struct tessera_error *err)
{
        if (n_fds > PROTO_MAX_FDS)
                return tessera_error_set(err, EINVAL, "at most %d descriptors go with one message", PROTO_MAX_FDS);
        _cleanup_free_ char *text = json_dumps(msg, JSON_COMPACT);
        if (!text)
                return tessera_error_set(err, ENOMEM, "cannot encode a message");
        size_t len = strlen(text);
        if (len > PROTO_MAX_FRAME)
                return tessera_error_set(err, EMSGSIZE, "message of %zu bytes is larger than the %u-byte limit", len,
                                         PROTO_MAX_FRAME);
        _cleanup_free_ char *frame = malloc(len + 4);
        if (!frame)
                return tessera_error_set(err, ENOMEM, "cannot allocate a %zu-byte frame", len + 4);
        uint32_t le = htole32((uint32_t)len);
        memcpy(frame, &le, 4);
        memcpy(frame + 4, text, len);
        return send_all(fd, frame, len + 4, fds, n_fds, err);
}

static void collect_fds(struct msghdr *msg, int *fds, size_t *n_fds, size_t cap)
{
        for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR(msg, c)) {
                if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
                        continue;
                size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                int *in = (int *)CMSG_DATA(c);
                for (size_t i = 0; i < n; i++) {
                        if (fds && *n_fds < cap)
                                fds[(*n_fds)++] = in[i];
                        else
                                close(in[i]); /* nobody asked for it: do not leak it */
                }
        }
}

/* Reads exactly len bytes.  Returns 0, -ECONNRESET on end of stream before any byte, or an error. */
static int recv_all(int fd, void *buf, size_t len, int *fds, size_t *n_fds, size_t cap, struct tessera_error *err)
{
        char *p = buf;
        size_t got = 0;
        while (got < len) {
                struct iovec iov = {.iov_base = p + got, .iov_len = len - got};
                char control[CMSG_SPACE(sizeof(int) * PROTO_MAX_FDS)];
                struct msghdr msg = {
                        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof(control)};
                ssize_t n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return tessera_error_set(err, errno, "cannot read from the control socket: %s",
                                                 strerror(errno));
                }
                collect_fds(&msg, fds, n_fds, cap);
                if (n == 0)
                        return got == 0 ? -ECONNRESET
                                        : tessera_error_set(err, EPROTO, "the peer closed the connection mid-message");
                got += (size_t)n;
        }
        return 0;
}

int proto_recv(int fd, json_t **ret, int *fds, size_t *n_fds, struct tessera_error *err)
{
        size_t cap = n_fds ? *n_fds : 0, count = 0;
        uint32_t le;
        int r = recv_all(fd, &le, 4, fds, &count, cap, err);
        if (n_fds)
                *n_fds = count;
        if (r == -ECONNRESET)
                return tessera_error_set(err, ECONNRESET, "the peer closed the connection");
        if (r < 0)
                return r;
        uint32_t len = le32toh(le);
        if (len == 0 || len > PROTO_MAX_FRAME)
                return tessera_error_set(err, EPROTO, "bad frame length %u (1..%u)", len, PROTO_MAX_FRAME);
        _cleanup_free_ char *buf = malloc(len);
        if (!buf)
                return tessera_error_set(err, ENOMEM, "cannot allocate a %u-byte frame", len);
        r = recv_all(fd, buf, len, fds, &count, cap, err);
        if (n_fds)
                *n_fds = count;
        if (r == -ECONNRESET)
                return tessera_error_set(err, EPROTO, "the peer closed the connection mid-message");
        if (r < 0)
                return r;
        return parse_body(buf, len, ret, err);
}

static int parse_body(const char *buf, uint32_t len, json_t **ret, struct tessera_error *err)
{
        json_error_t jerr;
        json_t *msg = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
        if (!msg)
                return tessera_error_set(err, EPROTO, "malformed message at byte %d: %s", jerr.position, jerr.text);
        if (!json_is_object(msg)) {
                json_decref(msg);
                return tessera_error_set(err, EPROTO, "a message must be a JSON object");
        }
        *ret = msg;
        return 0;
}

int proto_take_frame(const char *buf, size_t len, json_t **ret, size_t *used, struct tessera_error *err)
{
        if (len < 4)
                return 0;
        uint32_t le;
        memcpy(&le, buf, 4);
        uint32_t n = le32toh(le);
        if (n == 0 || n > PROTO_MAX_FRAME)
                return tessera_error_set(err, EPROTO, "bad frame length %u (1..%u)", n, PROTO_MAX_FRAME);
        if (len - 4 < n)
                return 0;
        int r = parse_body(buf + 4, n, ret, err);
        if (r < 0)
                return r;
        *used = 4 + (size_t)n;
        return 1;
}

json_t *proto_request(const char *op)
{
        return json_pack("{s:i, s:s}", "version", TESSERA_PROTO_VERSION, "op", op);
}

json_t *proto_reply_ok(json_t *result)
{
        return json_pack("{s:i, s:b, s:o}", "version", TESSERA_PROTO_VERSION, "ok", 1, "result",
                         result ? result : json_null());
}

json_t *proto_reply_error(const struct tessera_error *err)
{
        json_t *r = json_pack("{s:i, s:b, s:i, s:s}", "version", TESSERA_PROTO_VERSION, "ok", 0, "errno",
                              err->code ? err->code : EIO, "error", err->msg);
        if (r && err->field[0])
                json_object_set_new(r, "field", json_string(err->field));
        return r;
}

int proto_reply_result(json_t *reply, json_t **result, struct tessera_error *err)
{
        json_t *v = json_object_get(reply, "version");
        if (!json_is_integer(v) || json_integer_value(v) != TESSERA_PROTO_VERSION)
                return tessera_error_set(err, EPROTO, "the daemon speaks another protocol version (want %d)",
                                         TESSERA_PROTO_VERSION);
        json_t *okv = json_object_get(reply, "ok");
        if (!json_is_boolean(okv))
                return tessera_error_set(err, EPROTO, "reply has no `ok` field");
        if (json_is_true(okv)) {
                if (result)
                        *result = json_object_get(reply, "result");
                return 0;
        }
        json_t *e = json_object_get(reply, "errno");
        json_t *m = json_object_get(reply, "error");
        json_t *f = json_object_get(reply, "field");
        int code = json_is_integer(e) ? (int)json_integer_value(e) : EIO;
        if (code <= 0 || code > 4095)
                code = EIO;
        int r = tessera_error_set(err, code, "%s", json_is_string(m) ? json_string_value(m) : "unknown error");
        if (err && json_is_string(f))
                snprintf(err->field, sizeof(err->field), "%s", json_string_value(f));
        return r;
}
