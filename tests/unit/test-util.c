/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <string.h>

#include "tap.h"
#include "util.h"

static void test_sizes(void)
{
        uint64_t v = 0;
        ok(parse_size("128M", &v) == 0 && v == 128ULL << 20, "128M is 128 MiB");
        ok(parse_size("1G", &v) == 0 && v == 1ULL << 30, "1G");
        ok(parse_size("2GiB", &v) == 0 && v == 2ULL << 30, "2GiB");
        ok(parse_size("4096", &v) == 0 && v == 4096, "plain bytes");
        ok(parse_size("4X", &v) == -EINVAL, "4X is refused");
        ok(parse_size("", &v) == -EINVAL, "empty is refused");
        ok(parse_size("-1G", &v) == -EINVAL, "negative is refused");
        ok(parse_size("99999999999T", &v) == -ERANGE, "overflow is refused");
        char buf[32];
        format_size(128ULL << 20, buf, sizeof(buf));
        ok(STREQ(buf, "128M"), "format 128M (%s)", buf);
        format_size(1536ULL << 20, buf, sizeof(buf));
        ok(STREQ(buf, "1.5G"), "format 1.5G (%s)", buf);
}

static void test_names(void)
{
        ok(name_is_valid("sim-01.a_b"), "ordinary name");
        ok(!name_is_valid("../etc"), "path is not a name");
        ok(!name_is_valid(""), "empty is not a name");
        ok(!name_is_valid("-x"), "leading dash is not a name");
        ok(!name_is_valid("a/b"), "slash is not a name");
}

static void test_errors(void)
{
        struct tessera_error err = {0};
        int r = tessera_error_field(&err, EBUSY, "cpus", "core %d is owned by '%s'", 3, "sim");
        ok(r == -EBUSY && err.code == EBUSY && STREQ(err.field, "cpus"), "error keeps errno and field");
        tessera_error_prefix(&err, r, "create");
        ok(STREQ(err.msg, "create: core 3 is owned by 'sim'"), "prefix adds context (%s)", err.msg);
        ok(tessera_error_set(NULL, ENOENT, "x") == -ENOENT, "NULL error object is allowed");
        ok(tessera_error_set(&err, 0, "x") < 0, "errno 0 still reads as failure");
}

int main(void)
{
        test_sizes();
        test_names();
        test_errors();
        return done_testing();
}
