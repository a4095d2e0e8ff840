/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * How the shell prints: aligned tables whose column widths come from their
 * content, compressed cpu lists ("0-3,6"), human sizes, runs of memory blocks
 * and pretty-printed JSON.  Pure formatting, no I/O besides the FILE* given,
 * so the unit tests can drive it through fmemopen/open_memstream.
 */
#ifndef TESSERA_CLI_OUTPUT_H
#define TESSERA_CLI_OUTPUT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

struct table;

/* table_new("NAME", "STATE", ...): a table with these headers; NULL when out of memory. */
#define table_new(...)                                                                                                 \
        table_new_n((const char *[]){__VA_ARGS__}, sizeof((const char *[]){__VA_ARGS__}) / sizeof(const char *))
struct table *table_new_n(const char *const *headers, size_t n);
struct table *table_free(struct table *t);
static inline void table_freep(struct table **t)
{
        table_free(*t);
}

/* Numbers read better right-aligned (the header follows the column). */
void table_align_right(struct table *t, size_t column);
/* Leaves out a column (header included) when no row has anything in it, e.g. CAUSE. */
void table_hide_if_empty(struct table *t, size_t column);

/*
 * table_add_row(t, "sim", "running", ...): one cell per column, copied.  A NULL
 * cell and cells not given (fewer than the columns) print empty.  -E2BIG when
 * given more cells than columns, -ENOMEM.
 */
#define table_add_row(t, ...)                                                                                          \
        table_add_row_n((t), (const char *[]){__VA_ARGS__},                                                            \
                        sizeof((const char *[]){__VA_ARGS__}) / sizeof(const char *))
int table_add_row_n(struct table *t, const char *const *cells, size_t n);
size_t table_rows(const struct table *t);

/*
 * Columns separated by two spaces, padded to the widest cell (counted in
 * characters, not bytes), no trailing blanks.  A table without rows prints its
 * header.  Returns 0 or -EIO when the stream failed.
 */
int table_print(const struct table *t, FILE *f);

/*
 * {3, 0, 1, 2, 6, 2} -> "0-3,6": sorted, duplicates dropped, runs of two or
 * more joined with '-'.  An empty set gives "".  *ret is malloc'ed.
 */
int cpulist_format(const uint64_t *ids, size_t n, char **ret);
/* The same from a JSON array of non-negative integers; -EINVAL for anything else. */
int cpulist_from_json(const json_t *array, char **ret);

/* A JSON integer as decimal, else "-" (null, missing, negative, not a number). */
void format_json_uint(const json_t *v, char *buf, size_t n);
/* A JSON integer byte count as a human size ("128M"), else "-". */
void format_json_size(const json_t *v, char *buf, size_t n);
/* obj[key] when it is a non-empty string, else `fallback`. */
const char *json_string_or(const json_t *obj, const char *key, const char *fallback);

/* Consecutive memory blocks with one owner. `owner` is borrowed from the JSON. */
struct block_run {
        uint64_t first, count;
        const char *owner;
};
/*
 * Groups a NUMA node's "blocks" ([{"block": N, "owner": "..."}], any order)
 * into runs of consecutive block numbers with the same owner, in block order.
 * A gap in the numbering ends a run.  -EINVAL for a malformed entry or a block
 * listed twice.  *ret is malloc'ed (NULL when there are no blocks).
 */
int block_runs_from_json(const json_t *blocks, struct block_run **ret, size_t *ret_n);

/* The value pretty-printed with 2-space indents and a final newline; 0 or -EIO. */
int json_print_pretty(const json_t *v, FILE *f);

#endif
