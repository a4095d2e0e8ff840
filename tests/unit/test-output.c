/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The shell's formatting: cpu lists, tables, memory block runs, JSON. */
#include <errno.h>
#include <string.h>

#include "../../src/tessera/output.h"
#include "tap.h"
#include "util.h"

static void test_cpulist_case(const uint64_t *ids, size_t n, const char *want, const char *what)
{
        _cleanup_free_ char *got = NULL;
        int r = cpulist_format(ids, n, &got);
        ok(r == 0 && got && STREQ(got, want), "cpulist %s: \"%s\" (got \"%s\")", what, want, got ? got : "(null)");
}

static void test_cpulist(void)
{
        test_cpulist_case(NULL, 0, "", "empty");
        test_cpulist_case((uint64_t[]){5}, 1, "5", "single");
        test_cpulist_case((uint64_t[]){0, 1, 2, 3, 6}, 5, "0-3,6", "a run and a single");
        test_cpulist_case((uint64_t[]){0, 2, 4}, 3, "0,2,4", "no runs");
        test_cpulist_case((uint64_t[]){3, 4}, 2, "3-4", "a run of two");
        test_cpulist_case((uint64_t[]){6, 3, 0, 2, 1}, 5, "0-3,6", "unsorted input");
        test_cpulist_case((uint64_t[]){2, 1, 2, 3, 1}, 5, "1-3", "duplicates");
        test_cpulist_case((uint64_t[]){10, 11, 12, 20, 22, 23}, 6, "10-12,20,22-23", "several runs");
        test_cpulist_case((uint64_t[]){UINT64_MAX, 0}, 2, "0,18446744073709551615", "extremes");

        _cleanup_free_ char *got = NULL;
        json_t *j = json_loads("[7, 4, 5, 6, 0]", 0, NULL);
        int r = cpulist_from_json(j, &got);
        ok(r == 0 && got && STREQ(got, "0,4-7"), "cpulist from JSON (%s)", got ? got : "(null)");
        json_decref(j);
        free(TAKE_PTR(got));

        j = json_loads("[]", 0, NULL);
        ok(cpulist_from_json(j, &got) == 0 && got && STREQ(got, ""), "empty JSON array gives \"\"");
        json_decref(j);
        free(TAKE_PTR(got));

        j = json_loads("[1, \"2\"]", 0, NULL);
        ok(cpulist_from_json(j, &got) == -EINVAL && !got, "a string in the array is refused");
        json_decref(j);
        j = json_loads("[1, -2]", 0, NULL);
        ok(cpulist_from_json(j, &got) == -EINVAL && !got, "a negative id is refused");
        json_decref(j);
        ok(cpulist_from_json(json_null(), &got) == -EINVAL && !got, "null is not a list");
}

/* Prints `t` into memory; the caller frees the text. */
static char *print_to_string(const struct table *t)
{
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        if (!f)
                return NULL;
        int r = table_print(t, f);
        fclose(f);
        if (r < 0) {
                free(buf);
                return NULL;
        }
        return buf;
}

static void check_table(const struct table *t, const char *want, const char *what)
{
        _cleanup_free_ char *got = print_to_string(t);
        ok(got && STREQ(got, want), "table: %s", what);
        if (got && !STREQ(got, want))
                diag("want:\n%sgot:\n%s", want, got);
}

static void test_table(void)
{
        _cleanup_(table_freep) struct table *t = table_new("NAME", "STATE", "CPUS");
        ok(t != NULL, "table_new");
        if (!t)
                return;
        check_table(t, "NAME  STATE  CPUS\n", "no rows prints the header");
        ok(table_add_row(t, "simulation", "running", "2-3") == 0, "add a row");
        ok(table_add_row(t, "a", "failed", "0,4-7") == 0, "add a second row");
        check_table(t,
                    "NAME        STATE    CPUS\n"
                    "simulation  running  2-3\n"
                    "a           failed   0,4-7\n",
                    "columns as wide as their widest cell, two spaces apart, no trailing blanks");
        ok(table_add_row(t, "x", "y", "z", "too many") == -E2BIG, "more cells than columns are refused");
        ok(table_rows(t) == 2, "the refused row was not added");

        ok(table_add_row(t, "b", NULL) == 0, "a NULL cell and a missing cell are allowed");
        check_table(t,
                    "NAME        STATE    CPUS\n"
                    "simulation  running  2-3\n"
                    "a           failed   0,4-7\n"
                    "b\n",
                    "empty trailing cells leave no blanks");

        _cleanup_(table_freep) struct table *n = table_new("CPU", "OWNER", "SIZE");
        table_align_right(n, 0);
        table_align_right(n, 2);
        table_add_row(n, "0", "host", "128M");
        table_add_row(n, "12", "sim", "1G");
        table_add_row(n, "3", "", "64K");
        check_table(n,
                    "CPU  OWNER  SIZE\n"
                    "  0  host   128M\n"
                    " 12  sim      1G\n"
                    "  3          64K\n",
                    "right-aligned number columns, an empty cell in the middle");

        _cleanup_(table_freep) struct table *c = table_new("NAME", "STATE", "CAUSE");
        table_hide_if_empty(c, 2);
        table_add_row(c, "a", "running", "");
        table_add_row(c, "bb", "running", NULL);
        check_table(c,
                    "NAME  STATE\n"
                    "a     running\n"
                    "bb    running\n",
                    "an empty optional column is left out");
        table_add_row(c, "c", "failed", "supervisor killed by signal 9");
        check_table(c,
                    "NAME  STATE    CAUSE\n"
                    "a     running\n"
                    "bb    running\n"
                    "c     failed   supervisor killed by signal 9\n",
                    "the optional column appears once a row fills it");

        _cleanup_(table_freep) struct table *u = table_new("ID", "DESCRIPTION");
        table_add_row(u, "\xc3\xa9t\xc3\xa9", "UTF-8 counts characters");
        table_add_row(u, "abcd", "x");
        check_table(u,
                    "ID    DESCRIPTION\n"
                    "\xc3\xa9t\xc3\xa9   UTF-8 counts characters\n"
                    "abcd  x\n",
                    "multibyte characters take one column each");

        /* A table printed into a stream that cannot take it reports the failure. */
        char small[8];
        FILE *f = fmemopen(small, sizeof(small), "w");
        if (f) {
                setvbuf(f, NULL, _IONBF, 0);
                ok(table_print(t, f) == -EIO, "a full stream is reported as -EIO");
                fclose(f);
        } else {
                ok(0, "fmemopen: %s", strerror(errno));
        }
}

static void test_block_runs(void)
{
        json_t *blocks = json_loads("[{\"block\": 4, \"owner\": \"sim\"}, {\"block\": 0, \"owner\": \"host\"},"
                                    " {\"block\": 1, \"owner\": \"host\"}, {\"block\": 2, \"owner\": \"free\"},"
                                    " {\"block\": 3, \"owner\": \"free\"}, {\"block\": 5, \"owner\": \"sim\"},"
                                    " {\"block\": 6, \"owner\": \"free\"}, {\"block\": 8, \"owner\": \"free\"}]",
                                    0, NULL);
        _cleanup_free_ struct block_run *runs = NULL;
        size_t n = 0;
        int r = block_runs_from_json(blocks, &runs, &n);
        ok(r == 0 && n == 5, "8 blocks (unsorted, one gap) make 5 runs (r=%d n=%zu)", r, n);
        if (r == 0 && n == 5) {
                ok(runs[0].first == 0 && runs[0].count == 2 && STREQ(runs[0].owner, "host"), "run 0-1 host");
                ok(runs[1].first == 2 && runs[1].count == 2 && STREQ(runs[1].owner, "free"), "run 2-3 free");
                ok(runs[2].first == 4 && runs[2].count == 2 && STREQ(runs[2].owner, "sim"), "run 4-5 sim");
                ok(runs[3].first == 6 && runs[3].count == 1 && STREQ(runs[3].owner, "free"), "run 6 free");
                ok(runs[4].first == 8 && runs[4].count == 1 && STREQ(runs[4].owner, "free"),
                   "a gap (no block 7) ends a run even with the same owner");
        }
        json_decref(blocks);
        free(TAKE_PTR(runs));

        blocks = json_loads("[]", 0, NULL);
        ok(block_runs_from_json(blocks, &runs, &n) == 0 && n == 0 && !runs, "no blocks, no runs");
        json_decref(blocks);

        blocks = json_loads("[{\"block\": 0, \"owner\": \"a\"}, {\"block\": 0, \"owner\": \"b\"}]", 0, NULL);
        ok(block_runs_from_json(blocks, &runs, &n) == -EINVAL, "a block listed twice is refused");
        json_decref(blocks);
        free(TAKE_PTR(runs));

        blocks = json_loads("[{\"block\": 0}]", 0, NULL);
        ok(block_runs_from_json(blocks, &runs, &n) == -EINVAL, "a block without an owner is refused");
        json_decref(blocks);
        free(TAKE_PTR(runs));

        ok(block_runs_from_json(json_null(), &runs, &n) == -EINVAL, "null is not a block list");
}

static void test_json_values(void)
{
        char buf[32];
        json_t *v = json_integer(268435456);
        format_json_size(v, buf, sizeof(buf));
        ok(STREQ(buf, "256M"), "JSON size 268435456 is 256M (%s)", buf);
        format_json_uint(v, buf, sizeof(buf));
        ok(STREQ(buf, "268435456"), "JSON integer as decimal (%s)", buf);
        json_decref(v);
        format_json_size(json_null(), buf, sizeof(buf));
        ok(STREQ(buf, "-"), "null size prints as -");
        v = json_integer(-1);
        format_json_uint(v, buf, sizeof(buf));
        ok(STREQ(buf, "-"), "negative number prints as -");
        json_decref(v);

        json_t *obj = json_pack("{s:s, s:s, s:i}", "name", "sim", "empty", "", "n", 3);
        ok(STREQ(json_string_or(obj, "name", "-"), "sim"), "json_string_or: a string");
        ok(STREQ(json_string_or(obj, "empty", "-"), "-"), "json_string_or: empty string falls back");
        ok(STREQ(json_string_or(obj, "n", "-"), "-"), "json_string_or: a number falls back");
        ok(STREQ(json_string_or(obj, "missing", "-"), "-"), "json_string_or: missing key falls back");

        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        json_t *list = json_pack("[{s:s, s:[i,i]}]", "name", "sim", "cpus", 2, 3);
        int r = f ? json_print_pretty(list, f) : -errno;
        if (f)
                fclose(f);
        ok(r == 0 && text &&
                   STREQ(text, "[\n  {\n    \"name\": \"sim\",\n    \"cpus\": [\n      2,\n      3\n    ]\n  }\n]\n"),
           "JSON pretty-printed with 2-space indents, keys in the daemon's order");
        free(text);
        json_decref(list);
        json_decref(obj);
}

int main(void)
{
        test_cpulist();
        test_table();
        test_block_runs();
        test_json_values();
        return done_testing();
}
