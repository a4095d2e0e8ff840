/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Tables, cpu lists, sizes and block runs for the shell's listings. */
#include <errno.h>
#include <string.h>

#include "output.h"
#include "util.h"

#define COLUMN_GAP 2

struct table {
        size_t n_columns;
        char **headers;
        bool *right;      /* per column: right-aligned */
        bool *hide_empty; /* per column: left out when every cell is empty */
        char ***rows;     /* n_rows arrays of n_columns strings */
        size_t n_rows, cap_rows;
};

static void free_cells(char **cells, size_t n)
{
        if (!cells)
                return;
        for (size_t i = 0; i < n; i++)
                free(cells[i]);
        free(cells);
}

/* Copies n strings into an array of `width` (NULL and missing ones become ""). */
static char **copy_cells(const char *const *cells, size_t n, size_t width)
{
        char **copy = calloc(width, sizeof(char *));
        if (!copy)
                return NULL;
        for (size_t i = 0; i < width; i++) {
                copy[i] = strdup(i < n && cells[i] ? cells[i] : "");
                if (!copy[i]) {
                        free_cells(copy, width);
                        return NULL;
                }
        }
        return copy;
}

struct table *table_new_n(const char *const *headers, size_t n)
{
        struct table *t = calloc(1, sizeof(*t));
        if (!t)
                return NULL;
        t->n_columns = n;
        t->headers = copy_cells(headers, n, n);
        t->right = calloc(n ? n : 1, sizeof(bool));
        t->hide_empty = calloc(n ? n : 1, sizeof(bool));
        if (!t->headers || !t->right || !t->hide_empty)
                return table_free(t);
        return t;
}

struct table *table_free(struct table *t)
{
        if (!t)
                return NULL;
        for (size_t r = 0; r < t->n_rows; r++)
                free_cells(t->rows[r], t->n_columns);
        free(t->rows);
        free_cells(t->headers, t->n_columns);
        free(t->right);
        free(t->hide_empty);
        free(t);
        return NULL;
}

void table_align_right(struct table *t, size_t column)
{
        if (column < t->n_columns)
                t->right[column] = true;
}

void table_hide_if_empty(struct table *t, size_t column)
{
        if (column < t->n_columns)
                t->hide_empty[column] = true;
}

int table_add_row_n(struct table *t, const char *const *cells, size_t n)
{
        if (n > t->n_columns)
                return -E2BIG;
        if (t->n_rows == t->cap_rows) {
                size_t cap = t->cap_rows ? t->cap_rows * 2 : 16;
                char ***rows = realloc(t->rows, cap * sizeof(*rows));
                if (!rows)
                        return -ENOMEM;
                t->rows = rows;
                t->cap_rows = cap;
        }
        char **copy = copy_cells(cells, n, t->n_columns);
        if (!copy)
                return -ENOMEM;
        t->rows[t->n_rows++] = copy;
        return 0;
}

size_t table_rows(const struct table *t)
{
        return t->n_rows;
}

/* Characters, not bytes: UTF-8 continuation bytes take no column. */
static size_t display_width(const char *s)
{
        size_t w = 0;
        for (; *s; s++)
                if (((unsigned char)*s & 0xc0) != 0x80)
                        w++;
        return w;
}

static bool column_visible(const struct table *t, size_t c)
{
        if (!t->hide_empty[c])
                return true;
        for (size_t r = 0; r < t->n_rows; r++)
                if (t->rows[r][c][0])
                        return true;
        return false;
}

static void print_padding(FILE *f, size_t n)
{
        while (n-- > 0)
                fputc(' ', f);
}

static void print_line(const struct table *t, char *const *cells, const size_t *width, const bool *visible, FILE *f)
{
        /* Blanks owed to the previous cell are written only when something follows, so lines never end in blanks. */
        size_t pending = 0;
        bool first = true;
        for (size_t c = 0; c < t->n_columns; c++) {
                if (!visible[c])
                        continue;
                size_t w = display_width(cells[c]);
                size_t fill = width[c] > w ? width[c] - w : 0;
                if (!first)
                        pending += COLUMN_GAP;
                first = false;
                if (t->right[c]) {
                        pending += fill;
                        fill = 0;
                }
                if (cells[c][0]) {
                        print_padding(f, pending);
                        pending = 0;
                        fputs(cells[c], f);
                }
                pending += fill;
        }
        fputc('\n', f);
}

int table_print(const struct table *t, FILE *f)
{
        _cleanup_free_ size_t *width = calloc(t->n_columns ? t->n_columns : 1, sizeof(size_t));
        _cleanup_free_ bool *visible = calloc(t->n_columns ? t->n_columns : 1, sizeof(bool));
        if (!width || !visible)
                return -ENOMEM;
        for (size_t c = 0; c < t->n_columns; c++) {
                visible[c] = column_visible(t, c);
                width[c] = display_width(t->headers[c]);
                for (size_t r = 0; r < t->n_rows; r++) {
                        size_t w = display_width(t->rows[r][c]);
                        if (w > width[c])
                                width[c] = w;
                }
        }
        print_line(t, t->headers, width, visible, f);
        for (size_t r = 0; r < t->n_rows; r++)
                print_line(t, t->rows[r], width, visible, f);
        return ferror(f) ? -EIO : 0;
}

static int compare_u64(const void *a, const void *b)
{
        uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
        return x < y ? -1 : x > y;
}

int cpulist_format(const uint64_t *ids, size_t n, char **ret)
{
        _cleanup_free_ uint64_t *sorted = malloc((n ? n : 1) * sizeof(uint64_t));
        /* Each id takes at most 20 digits and one separator. */
        _cleanup_free_ char *buf = malloc(n * 21 + 1);
        if (!sorted || !buf)
                return -ENOMEM;
        if (n)
                memcpy(sorted, ids, n * sizeof(uint64_t));
        qsort(sorted, n, sizeof(uint64_t), compare_u64);
        size_t len = 0;
        buf[0] = '\0';
        for (size_t i = 0; i < n;) {
                size_t j = i;
                /* Extend the run over successors and duplicates. */
                while (j + 1 < n && (sorted[j + 1] == sorted[j] || sorted[j + 1] == sorted[j] + 1))
                        j++;
                const char *sep = len ? "," : "";
                if (sorted[j] == sorted[i])
                        len += (size_t)sprintf(buf + len, "%s%llu", sep, (unsigned long long)sorted[i]);
                else
                        len += (size_t)sprintf(buf + len, "%s%llu-%llu", sep, (unsigned long long)sorted[i],
                                               (unsigned long long)sorted[j]);
                i = j + 1;
        }
        *ret = TAKE_PTR(buf);
        return 0;
}

int cpulist_from_json(const json_t *array, char **ret)
{
        if (!json_is_array(array))
                return -EINVAL;
        size_t n = json_array_size(array);
        _cleanup_free_ uint64_t *ids = malloc((n ? n : 1) * sizeof(uint64_t));
        if (!ids)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                const json_t *v = json_array_get(array, i);
                if (!json_is_integer(v) || json_integer_value(v) < 0)
                        return -EINVAL;
                ids[i] = (uint64_t)json_integer_value(v);
        }
        return cpulist_format(ids, n, ret);
}

void format_json_uint(const json_t *v, char *buf, size_t n)
{
        if (json_is_integer(v) && json_integer_value(v) >= 0)
                snprintf(buf, n, "%lld", (long long)json_integer_value(v));
        else
                snprintf(buf, n, "-");
}

void format_json_size(const json_t *v, char *buf, size_t n)
{
        if (json_is_integer(v) && json_integer_value(v) >= 0)
                format_size((uint64_t)json_integer_value(v), buf, n);
        else
                snprintf(buf, n, "-");
}

const char *json_string_or(const json_t *obj, const char *key, const char *fallback)
{
        const char *s = json_string_value(json_object_get(obj, key));
        return s && *s ? s : fallback;
}

static int compare_run_start(const void *a, const void *b)
{
        const struct block_run *x = a, *y = b;
        return x->first < y->first ? -1 : x->first > y->first;
}

int block_runs_from_json(const json_t *blocks, struct block_run **ret, size_t *ret_n)
{
        if (!json_is_array(blocks))
                return -EINVAL;
        size_t n = json_array_size(blocks);
        *ret = NULL;
        *ret_n = 0;
        if (n == 0)
                return 0;
        /* Start with one run per block, sort, then merge neighbours in place. */
        _cleanup_free_ struct block_run *runs = calloc(n, sizeof(*runs));
        if (!runs)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                const json_t *b = json_array_get(blocks, i);
                const json_t *id = json_object_get(b, "block");
                const char *owner = json_string_value(json_object_get(b, "owner"));
                if (!json_is_integer(id) || json_integer_value(id) < 0 || !owner)
                        return -EINVAL;
                runs[i] = (struct block_run){.first = (uint64_t)json_integer_value(id), .count = 1, .owner = owner};
        }
        qsort(runs, n, sizeof(*runs), compare_run_start);
        for (size_t i = 1; i < n; i++)
                if (runs[i].first == runs[i - 1].first)
                        return -EINVAL;
        size_t out = 0;
        for (size_t i = 1; i < n; i++) {
                struct block_run *cur = &runs[out];
                if (runs[i].first == cur->first + cur->count && STREQ(runs[i].owner, cur->owner))
                        cur->count++;
                else
                        runs[++out] = runs[i];
        }
        *ret_n = out + 1;
        *ret = TAKE_PTR(runs);
        return 0;
}

int json_print_pretty(const json_t *v, FILE *f)
{
        if (json_dumpf(v, f, JSON_INDENT(2) | JSON_ENCODE_ANY) < 0)
                return -EIO;
        fputc('\n', f);
        return ferror(f) ? -EIO : 0;
}
