/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Typed request fields.  Requests come from tesserad only, but they carry
 * what a tenant typed (argv, env, cwd, paths), so every field is checked for
 * type, range and size here, and every error names the field.
 */
#include <errno.h>
#include <string.h>

#include "supervisor.h"
#include "util.h"

#define MAX_CPUS 8192 /* highest cpu number + 1 this supervisor accepts */

/* A JSON string without embedded NULs (C sees only up to the first one). */
static bool is_c_string(json_t *v)
{
        return json_is_string(v) && strlen(json_string_value(v)) == json_string_length(v);
}

int req_string(json_t *req, const char *field, bool required, size_t max_len, const char **ret,
               struct tessera_error *err)
{
        json_t *v = json_object_get(req, field);
        if (!v || json_is_null(v)) {
                if (required)
                        return tessera_error_field(err, EINVAL, field, "%s: missing (a string is required)", field);
                *ret = NULL;
                return 0;
        }
        if (!is_c_string(v))
                return tessera_error_field(err, EINVAL, field, "%s: must be a string without NUL bytes", field);
        if (json_string_length(v) > max_len)
                return tessera_error_field(err, ENAMETOOLONG, field, "%s: %zu bytes long (at most %zu)", field,
                                           json_string_length(v), max_len);
        *ret = json_string_value(v);
        return 0;
}

int req_bool(json_t *req, const char *field, bool def, bool *ret, struct tessera_error *err)
{
        json_t *v = json_object_get(req, field);
        if (!v || json_is_null(v)) {
                *ret = def;
                return 0;
        }
        if (!json_is_boolean(v))
                return tessera_error_field(err, EINVAL, field, "%s: must be true or false", field);
        *ret = json_is_true(v);
        return 0;
}

static int id_value(json_t *v, const char *field, uint32_t *ret, struct tessera_error *err)
{
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= (json_int_t)UINT32_MAX)
                return tessera_error_field(err, EINVAL, field, "%s: must be a number from 0 to %u", field,
                                           UINT32_MAX - 1);
        *ret = (uint32_t)json_integer_value(v);
        return 0;
}

int req_id(json_t *req, const char *field, uint32_t *ret, struct tessera_error *err)
{
        json_t *v = json_object_get(req, field);
        if (!v)
                return tessera_error_field(err, EINVAL, field, "%s: missing (a number is required)", field);
        return id_value(v, field, ret, err);
}

int req_name(json_t *req, const char *field, bool required, const char **ret, struct tessera_error *err)
{
        const char *name;
        int r = req_string(req, field, required, 63, &name, err);
        if (r < 0)
                return r;
        if (name && !name_is_valid(name))
                return tessera_error_field(err, EINVAL, field,
                                           "%s: `%s` is not a valid name ([A-Za-z0-9][A-Za-z0-9_.-]{0,62})", field,
                                           name);
        *ret = name;
        return 0;
}

int req_app(json_t *req, const char **ret, struct tessera_error *err)
{
        return req_name(req, "app", true, ret, err);
}

int req_absolute_path(json_t *req, const char *field, bool required, const char **ret, struct tessera_error *err)
{
        const char *path;
        int r = req_string(req, field, required, MAX_PATH_LEN, &path, err);
        if (r < 0)
                return r;
        if (path && path[0] != '/')
                return tessera_error_field(err, EINVAL, field, "%s: `%.200s` is not an absolute path", field, path);
        *ret = path;
        return 0;
}

static int check_string_item(json_t *v, const char *field, size_t i, const struct string_limits *lim,
                             struct tessera_error *err)
{
        if (!is_c_string(v))
                return tessera_error_field(err, EINVAL, field, "%s[%zu]: must be a string without NUL bytes", field, i);
        size_t len = json_string_length(v);
        if (len > lim->max_each)
                return tessera_error_field(err, E2BIG, field, "%s[%zu]: %zu bytes long (at most %zu)", field, i, len,
                                           lim->max_each);
        const char *s = json_string_value(v);
        if (lim->key_value && (s[0] == '=' || !strchr(s, '=')))
                return tessera_error_field(err, EINVAL, field, "%s[%zu]: `%.100s` is not of the form NAME=VALUE", field,
                                           i, s);
        return 0;
}

int req_strings(json_t *req, const char *field, const struct string_limits *lim, char ***ret, size_t *ret_n,
                struct tessera_error *err)
{
        json_t *v = json_object_get(req, field);
        if (!v || json_is_null(v)) {
                if (lim->min_count > 0)
                        return tessera_error_field(err, EINVAL, field, "%s: missing (an array of strings is required)",
                                                   field);
                v = NULL;
        } else if (!json_is_array(v)) {
                return tessera_error_field(err, EINVAL, field, "%s: must be an array of strings", field);
        }
        size_t n = v ? json_array_size(v) : 0;
        if (n < lim->min_count || n > lim->max_count)
                return tessera_error_field(err, n > lim->max_count ? E2BIG : EINVAL, field,
                                           "%s: has %zu strings (%zu to %zu allowed)", field, n, lim->min_count,
                                           lim->max_count);
        size_t total = 0;
        for (size_t i = 0; i < n; i++) {
                int r = check_string_item(json_array_get(v, i), field, i, lim, err);
                if (r < 0)
                        return r;
                total += json_string_length(json_array_get(v, i)) + 1;
        }
        if (total > lim->max_total)
                return tessera_error_field(err, E2BIG, field, "%s: %zu bytes in all (at most %zu)", field, total,
                                           lim->max_total);
        char **list = calloc(n + 1, sizeof(char *));
        if (!list)
                return tessera_error_field(err, ENOMEM, field, "%s: out of memory", field);
        for (size_t i = 0; i < n; i++)
                list[i] = (char *)json_string_value(json_array_get(v, i));
        *ret = list;
        *ret_n = n;
        return 0;
}

int req_ids(json_t *req, const char *field, size_t max_count, gid_t **ret, size_t *ret_n, struct tessera_error *err)
{
        json_t *v = json_object_get(req, field);
        *ret = NULL;
        *ret_n = 0;
        if (!v || json_is_null(v))
                return 0;
        if (!json_is_array(v))
                return tessera_error_field(err, EINVAL, field, "%s: must be an array of group ids", field);
        size_t n = json_array_size(v);
        if (n > max_count)
                return tessera_error_field(err, E2BIG, field, "%s: has %zu ids (at most %zu)", field, n, max_count);
        _cleanup_free_ gid_t *ids = calloc(n ? n : 1, sizeof(gid_t));
        if (!ids)
                return tessera_error_field(err, ENOMEM, field, "%s: out of memory", field);
        for (size_t i = 0; i < n; i++) {
                uint32_t id;
                int r = id_value(json_array_get(v, i), field, &id, err);
                if (r < 0)
                        return tessera_error_prefix(err, r, "%s[%zu]", field, i);
                ids[i] = id;
        }
        *ret = TAKE_PTR(ids);
        *ret_n = n;
        return 0;
}

/* ---- cpus ---- */

static int cpu_add(cpu_set_t *set, size_t size, const cpu_set_t *allowed, unsigned long cpu, const char *field,
                   struct tessera_error *err)
{
        if (cpu >= MAX_CPUS)
                return tessera_error_field(err, EINVAL, field, "%s: cpu %lu is out of range (0 to %d)", field, cpu,
                                           MAX_CPUS - 1);
        if (!CPU_ISSET_S(cpu, size, allowed))
                return tessera_error_field(err, EINVAL, field, "%s: cpu %lu is not one of the enclave's", field, cpu);
        CPU_SET_S(cpu, size, set);
        return 0;
}

static int parse_cpu_number(const char **p, unsigned long *ret)
{
        if (**p < '0' || **p > '9')
                return -EINVAL;
        unsigned long v = 0;
        while (**p >= '0' && **p <= '9') {
                v = v * 10 + (unsigned long)(**p - '0');
                if (v >= MAX_CPUS)
                        return -ERANGE;
                (*p)++;
        }
        *ret = v;
        return 0;
}

/* "0-3,6,8-9" */
static int cpulist_add(cpu_set_t *set, size_t size, const cpu_set_t *allowed, const char *list, const char *field,
                       struct tessera_error *err)
{
        const char *p = list;
        for (;;) {
                unsigned long lo, hi;
                if (parse_cpu_number(&p, &lo) < 0)
                        return tessera_error_field(err, EINVAL, field,
                                                   "%s: `%.100s` is not a cpu list (like \"0-3,6\")", field, list);
                hi = lo;
                if (*p == '-') {
                        p++;
                        if (parse_cpu_number(&p, &hi) < 0 || hi < lo)
                                return tessera_error_field(err, EINVAL, field,
                                                           "%s: `%.100s` has a bad range (like \"0-3\")", field, list);
                }
                for (unsigned long cpu = lo; cpu <= hi; cpu++) {
                        int r = cpu_add(set, size, allowed, cpu, field, err);
                        if (r < 0)
                                return r;
                }
                if (*p == '\0')
                        return 0;
                if (*p != ',')
                        return tessera_error_field(err, EINVAL, field,
                                                   "%s: `%.100s` is not a cpu list (like \"0-3,6\")", field, list);
                p++;
        }
}

static int cpu_array_add(cpu_set_t *set, size_t size, const cpu_set_t *allowed, json_t *v, const char *field,
                         struct tessera_error *err)
{
        size_t n = json_array_size(v);
        if (n == 0)
                return tessera_error_field(err, EINVAL, field, "%s: an empty list (null means no pinning)", field);
        for (size_t i = 0; i < n; i++) {
                json_t *item = json_array_get(v, i);
                if (!json_is_integer(item) || json_integer_value(item) < 0)
                        return tessera_error_field(err, EINVAL, field, "%s[%zu]: must be a cpu number", field, i);
                int r = cpu_add(set, size, allowed, (unsigned long)json_integer_value(item), field, err);
                if (r < 0)
                        return r;
        }
        return 0;
}

static void cpuset_format(const cpu_set_t *set, size_t size, char *buf, size_t n)
{
        size_t at = 0;
        buf[0] = '\0';
        for (int cpu = 0; cpu < MAX_CPUS && at < n; cpu++) {
                if (!CPU_ISSET_S(cpu, size, set))
                        continue;
                int last = cpu;
                while (last + 1 < MAX_CPUS && CPU_ISSET_S(last + 1, size, set))
                        last++;
                int w = last == cpu ? snprintf(buf + at, n - at, "%s%d", at ? "," : "", cpu)
                                    : snprintf(buf + at, n - at, "%s%d-%d", at ? "," : "", cpu, last);
                if (w < 0)
                        return;
                at += (size_t)w;
                cpu = last;
        }
}

static void cpu_freep(cpu_set_t **set)
{
        if (*set)
                CPU_FREE(*set);
}

int req_cpus(json_t *req, const char *field, cpu_set_t **ret, size_t *ret_size, char *desc, size_t desc_size,
             struct tessera_error *err)
{
        json_t *v = json_object_get(req, field);
        *ret = NULL;
        *ret_size = 0;
        desc[0] = '\0';
        if (!v || json_is_null(v))
                return 0;
        if (!json_is_array(v) && !is_c_string(v))
                return tessera_error_field(err, EINVAL, field,
                                           "%s: must be a list of cpu numbers, a cpu list string "
                                           "or null",
                                           field);
        size_t size = CPU_ALLOC_SIZE(MAX_CPUS);
        _cleanup_(cpu_freep) cpu_set_t *allowed = CPU_ALLOC(MAX_CPUS);
        _cleanup_(cpu_freep) cpu_set_t *set = CPU_ALLOC(MAX_CPUS);
        if (!allowed || !set)
                return tessera_error_field(err, ENOMEM, field, "%s: out of memory", field);
        CPU_ZERO_S(size, set);
        if (sched_getaffinity(0, size, allowed) < 0)
                return tessera_error_field(err, errno, field, "%s: cannot read the enclave's cpus: %s", field,
                                           strerror(errno));
        int r = json_is_array(v) ? cpu_array_add(set, size, allowed, v, field, err)
                                 : cpulist_add(set, size, allowed, json_string_value(v), field, err);
        if (r < 0)
                return r;
        cpuset_format(set, size, desc, desc_size);
        *ret = TAKE_PTR(set);
        *ret_size = size;
        return 0;
}
