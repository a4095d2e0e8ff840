/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The error object: a positive errno, the field at fault and a message. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "tessera/tessera.h"

int tessera_error_setv(struct tessera_error *err, int code, const char *fmt, va_list ap)
{
        if (code <= 0)
                code = EIO; /* a failure must never read as success */
        if (err) {
                err->code = code;
                err->field[0] = '\0';
                vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        }
        return -code;
}

int tessera_error_set(struct tessera_error *err, int code, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        int r = tessera_error_setv(err, code, fmt, ap);
        va_end(ap);
        return r;
}

int tessera_error_field(struct tessera_error *err, int code, const char *field, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        int r = tessera_error_setv(err, code, fmt, ap);
        va_end(ap);
        if (err && field)
                snprintf(err->field, sizeof(err->field), "%s", field);
        return r;
}

int tessera_error_prefix(struct tessera_error *err, int ret, const char *fmt, ...)
{
        if (!err)
                return ret;
        char ctx[512], old[sizeof(err->msg)];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ctx, sizeof(ctx), fmt, ap);
        va_end(ap);
        memcpy(old, err->msg, sizeof(old));
        snprintf(err->msg, sizeof(err->msg), "%s: %s", ctx, old);
        return ret;
}

void tessera_error_clear(struct tessera_error *err)
{
        if (err) {
                err->code = 0;
                err->field[0] = '\0';
                err->msg[0] = '\0';
        }
}
