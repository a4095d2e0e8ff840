/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Enclaves: `list`, `create`, `destroy`, `ping`, `assign`, `release`, `check`. */
#include <errno.h>
#include <string.h>

#include "cli.h"
#include "output.h"
#include "spec.h"
#include "util.h"

#define NUM_BUF          24
#define MAX_CREATE_FLAGS 32

static int check_enclave_name(const struct cli *cli, const char *name)
{
        if (name_is_valid(name))
                return 0;
        return cli_fail("%s: '%s' is not an enclave name (letters, digits, '_', '.' and '-', at most 63, "
                        "starting with a letter or digit)",
                        cli->invoked_as, name);
}

/* Joins a JSON array of strings with ','; NULL when out of memory.  Non-strings are skipped. */
static char *join_strings(const json_t *array)
{
        size_t len = 1, i;
        const json_t *v;
        json_array_foreach(array, i, v) if (json_is_string(v)) len += json_string_length(v) + 1;
        char *buf = malloc(len);
        if (!buf)
                return NULL;
        buf[0] = '\0';
        json_array_foreach(array, i, v) if (json_is_string(v))
        {
                if (buf[0])
                        strcat(buf, ",");
                strcat(buf, json_string_value(v));
        }
        return buf;
}

enum { COL_NAME, COL_TYPE, COL_STATE, COL_OWNER, COL_CPUS, COL_MEMORY, COL_NUMA, COL_DEVICES, COL_CAUSE };

static struct table *enclave_table_new(void)
{
        struct table *t = table_new("NAME", "TYPE", "STATE", "OWNER", "CPUS", "MEMORY", "NUMA", "DEVICES", "CAUSE");
        if (!t)
                return NULL;
        table_align_right(t, COL_MEMORY);
        /* Only failed enclaves have a cause; without one the column would be noise. */
        table_hide_if_empty(t, COL_CAUSE);
        return t;
}

static const char *or_dash(const char *s)
{
        return s && *s ? s : "-";
}

static int enclave_table_add(struct table *t, const json_t *e)
{
        _cleanup_free_ char *cpus = NULL, *numa = NULL, *devices = NULL;
        char memory[NUM_BUF];
        /* A malformed list shows as "-" rather than hiding the whole enclave. */
        if (cpulist_from_json(json_object_get(e, "cpus"), &cpus) == -ENOMEM ||
            cpulist_from_json(json_object_get(e, "numa"), &numa) == -ENOMEM)
                return -ENOMEM;
        devices = join_strings(json_object_get(e, "devices"));
        if (!devices)
                return -ENOMEM;
        format_json_size(json_object_get(e, "memory"), memory, sizeof(memory));
        return table_add_row(t, json_string_or(e, "name", "-"), json_string_or(e, "type", "-"),
                             json_string_or(e, "state", "-"), json_string_or(e, "owner", "-"), or_dash(cpus), memory,
                             or_dash(numa), or_dash(devices), json_string_or(e, "cause", ""));
}

/* The answer of create, assign and release: one enclave, as a one-row `list`. */
static int print_enclave(const struct cli *cli, const char *op, const json_t *e)
{
        if (cli->json)
                return cli_print_json(e);
        if (!json_is_object(e))
                return cli_unexpected_reply(op, "an enclave object");
        _cleanup_(table_freep) struct table *t = enclave_table_new();
        if (!t || enclave_table_add(t, e) < 0)
                return cli_out_of_memory();
        return cli_print_table(t);
}

int cmd_list(struct cli *cli, int argc, char **argv)
{
        int status = cli_parse_plain(cli, argc, argv, 0);
        if (status >= 0)
                return status;
        struct tessera_error err = {0};
        json_auto_t *list = NULL;
        if (cli_call(cli, "list", NULL, &list, &err) < 0)
                return cli_fail("%s", err.msg);
        if (cli->json)
                return cli_print_json(list);
        if (!json_is_array(list))
                return cli_unexpected_reply("list", "an array");
        _cleanup_(table_freep) struct table *t = enclave_table_new();
        if (!t)
                return cli_out_of_memory();
        size_t i;
        const json_t *e;
        json_array_foreach(list, i, e) if (enclave_table_add(t, e) < 0) return cli_out_of_memory();
        return cli_print_table(t);
}

/* An enclave's name as the only argument, sent as {"name": ...}. */
static int call_with_name(struct cli *cli, int argc, char **argv, const char *op, json_t **ret)
{
        int status = cli_parse_plain(cli, argc, argv, 1);
        if (status >= 0)
                return status;
        const char *name = argv[optind];
        if (check_enclave_name(cli, name) != 0)
                return EXIT_FAILURE;
        json_auto_t *request = json_pack("{s:s}", "name", name);
        if (!request)
                return cli_out_of_memory();
        struct tessera_error err = {0};
        if (cli_call(cli, op, request, ret, &err) < 0)
                return cli_fail("%s", err.msg);
        return -1;
}

int cmd_destroy(struct cli *cli, int argc, char **argv)
{
        json_auto_t *result = NULL;
        int status = call_with_name(cli, argc, argv, "destroy", &result);
        if (status >= 0)
                return status;
        if (cli->json)
                return cli_print_json(result);
        printf("%s: destroyed\n", json_string_or(result, "name", argv[optind]));
        return 0;
}

int cmd_ping(struct cli *cli, int argc, char **argv)
{
        json_auto_t *result = NULL;
        int status = call_with_name(cli, argc, argv, "ping", &result);
        if (status >= 0)
                return status;
        const char *state = json_string_or(result, "state", "unknown");
        bool running = STREQ(state, "running");
        if (cli->json)
                return cli_print_json(result) ?: (running ? 0 : EXIT_FAILURE);
        const char *name = json_string_or(result, "name", argv[optind]);
        if (!running) {
                printf("%s: not running (%s)\n", name, state);
                return EXIT_FAILURE;
        }
        char pid[NUM_BUF], rtt[NUM_BUF];
        format_json_uint(json_object_get(result, "supervisor_pid"), pid, sizeof(pid));
        format_json_uint(json_object_get(result, "rtt_us"), rtt, sizeof(rtt));
        printf("%s: alive, supervisor pid %s, RTT %s us\n", name, pid, rtt);
        return 0;
}

int cmd_check(struct cli *cli, int argc, char **argv)
{
        int status = cli_parse_plain(cli, argc, argv, 0);
        if (status >= 0)
                return status;
        struct tessera_error err = {0};
        json_auto_t *result = NULL;
        if (cli_call(cli, "check", NULL, &result, &err) < 0)
                return cli_fail("%s", err.msg);
        const json_t *okv = json_object_get(result, "ok");
        const json_t *problems = json_object_get(result, "problems");
        if (!json_is_boolean(okv))
                return cli_unexpected_reply("check", "{\"ok\", \"problems\"}");
        bool healthy = json_is_true(okv);
        if (cli->json)
                return cli_print_json(result) ?: (healthy ? 0 : EXIT_FAILURE);
        if (healthy) {
                printf("ok\n");
                return 0;
        }
        size_t i;
        const json_t *p;
        json_array_foreach(problems, i, p)
                printf("%s\n", json_is_string(p) ? json_string_value(p) : "(malformed problem)");
        if (json_array_size(problems) == 0)
                printf("problems found, none described\n");
        return EXIT_FAILURE;
}

/*
 * `assign`/`release` values are checked here so a typo fails before the call;
 * the daemon checks them again (it trusts no client).
 */

/* A count ("2") or a cpu list ("4-5,7"). */
static bool cpus_value_is_valid(const char *s)
{
        uint64_t v;
        if (parse_uint64(s, UINT32_MAX, &v) == 0)
                return v > 0;
        _cleanup_free_ char *copy = strdup(s);
        if (!copy)
                return false;
        char *save = NULL;
        size_t items = 0;
        for (char *item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save), items++) {
                char *dash = strchr(item, '-');
                uint64_t lo, hi;
                if (dash)
                        *dash = '\0';
                if (parse_uint64(item, UINT32_MAX, &lo) < 0)
                        return false;
                if (dash && (parse_uint64(dash + 1, UINT32_MAX, &hi) < 0 || hi < lo))
                        return false;
        }
        /* strtok_r skips empty items; a leading, trailing or doubled ',' is still a typo. */
        return items > 0 && s[0] != ',' && s[strlen(s) - 1] != ',' && !strstr(s, ",,");
}

/* "256M" or "256M@1". */
static bool memory_value_is_valid(const char *s)
{
        _cleanup_free_ char *copy = strdup(s);
        if (!copy)
                return false;
        char *at = strchr(copy, '@');
        uint64_t bytes, numa;
        if (at)
                *at = '\0';
        if (parse_size(copy, &bytes) < 0 || bytes == 0)
                return false;
        return !at || parse_uint64(at + 1, INT32_MAX, &numa) == 0;
}

static int check_change_value(const struct cli *cli, const char *field, const char *value)
{
        if (STREQ(field, "cpus") && !cpus_value_is_valid(value))
                return cli_fail("%s: cpus: \"%s\" is neither a count nor a cpu list (use \"2\" or \"4-5,7\")",
                                cli->invoked_as, value);
        if (STREQ(field, "memory") && !memory_value_is_valid(value))
                return cli_fail("%s: memory: \"%s\" is not a size (use \"256M\", or \"256M@1\" for NUMA node 1)",
                                cli->invoked_as, value);
        if (STREQ(field, "device") && !*value)
                return cli_fail("%s: device: an empty id (see `tessera devices`)", cli->invoked_as);
        return 0;
}

/* Adds field=value to the request, once. */
static int add_change(struct cli *cli, json_t *request, const char *field, const char *value)
{
        if (json_object_get(request, field))
                return cli_usage(cli, "--%s given twice (one per call)", field);
        if (check_change_value(cli, field, value) != 0)
                return EXIT_FAILURE;
        if (json_object_set_new(request, field, json_string(value)) < 0)
                return cli_out_of_memory();
        return 0;
}

/* assign and release: NAME and --cpus/--memory/--device, or NAME VALUE for the Hobbes aliases. */
static int run_change(struct cli *cli, int argc, char **argv, const char *op)
{
        static const struct option options[] = {
                {"cpus", required_argument, NULL, 'c'},
                {"memory", required_argument, NULL, 'm'},
                {"device", required_argument, NULL, 'd'},
                {0},
        };
        json_auto_t *request = json_object();
        if (!request)
                return cli_out_of_memory();
        int c, status;
        while ((c = cli_getopt(cli, argc, argv, options)) != -1) {
                const char *field = c == 'c' ? "cpus" : c == 'm' ? "memory" : c == 'd' ? "device" : NULL;
                if (!field)
                        return cli_option_status(cli, c);
                if ((status = add_change(cli, request, field, optarg)) != 0)
                        return status;
        }
        int want = cli->positional ? 2 : 1;
        if (argc - optind < want)
                return cli_usage(cli, "missing %s", cli->positional ? cli->alias_args : "NAME");
        if (argc - optind > want)
                return cli_usage(cli, "unexpected argument '%s'", argv[optind + want]);
        const char *name = argv[optind];
        if (check_enclave_name(cli, name) != 0)
                return EXIT_FAILURE;
        if (cli->positional && (status = add_change(cli, request, cli->positional, argv[optind + 1])) != 0)
                return status;
        if (json_object_size(request) == 0)
                return cli_usage(cli, "say what to %s: --cpus, --memory and/or --device", op);
        if (json_object_set_new(request, "name", json_string(name)) < 0)
                return cli_out_of_memory();

        struct tessera_error err = {0};
        json_auto_t *enclave = NULL;
        if (cli_call(cli, op, request, &enclave, &err) < 0)
                return cli_fail("%s", err.msg);
        return print_enclave(cli, op, enclave);
}

int cmd_assign(struct cli *cli, int argc, char **argv)
{
        return run_change(cli, argc, argv, "assign");
}

int cmd_release(struct cli *cli, int argc, char **argv)
{
        return run_change(cli, argc, argv, "release");
}

/* ---- create ---- */

/* A flag that sets one spec field, applied in command-line order after the file. */
struct create_flag {
        const char *field; /* the YAML key, as spec_set_field() and the locations name it */
        const char *value;
};

struct create_args {
        const char *file;
        struct create_flag flags[MAX_CREATE_FLAGS];
        size_t n_flags;
        /* --device repeats; together they replace the file's devices. */
        const char *devices[SPEC_MAX_DEVICES];
        size_t n_devices;
};

enum {
        OPT_NUMA = 0x100,
        OPT_HUGEPAGES,
        OPT_PIDS,
        OPT_NAMESPACES,
        OPT_ROOT,
        OPT_HOSTNAME,
        OPT_ON_FAILURE,
        OPT_OWNER,
        OPT_TYPE,
};

static const char *create_option_field(int c)
{
        switch (c) {
        case 'n': return "name";
        case 'c': return "cpus";
        case 'm': return "memory";
        case OPT_NUMA: return "numa";
        case OPT_HUGEPAGES: return "hugepages";
        case OPT_PIDS: return "pids";
        case OPT_NAMESPACES: return "namespaces";
        case OPT_ROOT: return "root";
        case OPT_HOSTNAME: return "hostname";
        case OPT_ON_FAILURE: return "on_failure";
        case OPT_OWNER: return "owner";
        case OPT_TYPE: return "type";
        default: return NULL;
        }
}

/* Returns -1 to go on, else the exit status. */
static int parse_create_args(struct cli *cli, int argc, char **argv, struct create_args *a)
{
        static const struct option options[] = {
                {"name", required_argument, NULL, 'n'},
                {"cpus", required_argument, NULL, 'c'},
                {"memory", required_argument, NULL, 'm'},
                {"device", required_argument, NULL, 'd'},
                {"numa", required_argument, NULL, OPT_NUMA},
                {"hugepages", no_argument, NULL, OPT_HUGEPAGES},
                {"pids", required_argument, NULL, OPT_PIDS},
                {"namespaces", required_argument, NULL, OPT_NAMESPACES},
                {"root", required_argument, NULL, OPT_ROOT},
                {"hostname", required_argument, NULL, OPT_HOSTNAME},
                {"on-failure", required_argument, NULL, OPT_ON_FAILURE},
                {"owner", required_argument, NULL, OPT_OWNER},
                {"type", required_argument, NULL, OPT_TYPE},
                {0},
        };
        int c;
        while ((c = cli_getopt(cli, argc, argv, options)) != -1) {
                if (c == 'd') {
                        if (a->n_devices == SPEC_MAX_DEVICES)
                                return cli_usage(cli, "more than %d --device", SPEC_MAX_DEVICES);
                        a->devices[a->n_devices++] = optarg;
                        continue;
                }
                const char *field = create_option_field(c);
                if (!field)
                        return cli_option_status(cli, c);
                if (a->n_flags == MAX_CREATE_FLAGS)
                        return cli_usage(cli, "too many options");
                a->flags[a->n_flags++] = (struct create_flag){field, c == OPT_HUGEPAGES ? "true" : optarg};
        }
        if (argc - optind > 1)
                return cli_usage(cli, "unexpected argument '%s' (one spec FILE at most)", argv[optind + 1]);
        a->file = optind < argc ? argv[optind] : NULL;
        if (!a->file && a->n_flags == 0 && a->n_devices == 0)
                return cli_usage(cli, "give a spec FILE.yaml, or --name, --cpus and --memory");
        return -1;
}

static void spec_donep(struct tessera_spec *s)
{
        spec_done(s);
}

/* A field set by a flag is no longer where the file had it: forget that place. */
static void forget_location(struct spec_locations *locs, const char *field)
{
        size_t kept = 0;
        for (size_t i = 0; i < locs->n; i++)
                if (!STREQ(locs->at[i].field, field))
                        locs->at[kept++] = locs->at[i];
        locs->n = kept;
}

static void drop_devices(struct tessera_spec *spec)
{
        for (size_t i = 0; i < spec->n_devices; i++)
                free(spec->devices[i]);
        spec->n_devices = 0;
}

static int apply_flag(struct tessera_spec *spec, struct spec_locations *locs, const char *field, const char *value,
                      struct tessera_error *err)
{
        int r = spec_set_field(spec, field, value, err);
        if (r < 0)
                return r;
        forget_location(locs, field);
        return 0;
}

/* The file (if any), then the flags over it; checked as a whole. */
static int build_spec(const struct create_args *a, struct tessera_spec *spec, struct spec_locations *locs,
                      struct tessera_error *err)
{
        int r;
        if (a->file && (r = spec_parse_file(a->file, spec, locs, err)) < 0)
                return r;
        for (size_t i = 0; i < a->n_flags; i++)
                if ((r = apply_flag(spec, locs, a->flags[i].field, a->flags[i].value, err)) < 0)
                        return r;
        if (a->n_devices > 0) {
                /* --device adds one device each; together they replace the file's list rather than extend it. */
                drop_devices(spec);
                forget_location(locs, "devices");
                for (size_t i = 0; i < a->n_devices; i++)
                        if ((r = spec_set_field(spec, "device", a->devices[i], err)) < 0)
                                return r;
        }
        r = spec_validate(spec, err);
        if (r < 0)
                spec_locate_error(locs, err);
        return r;
}

int cmd_create(struct cli *cli, int argc, char **argv)
{
        struct create_args args = {0};
        int status = parse_create_args(cli, argc, argv, &args);
        if (status >= 0)
                return status;

        _cleanup_(spec_donep) struct tessera_spec spec;
        spec_init(&spec);
        struct spec_locations locs = {0};
        struct tessera_error err = {0};
        if (build_spec(&args, &spec, &locs, &err) < 0)
                return cli_fail("%s", err.msg);

        json_auto_t *request = json_object();
        json_t *spec_json = spec_to_json(&spec);
        if (!request || !spec_json || json_object_set_new(request, "spec", spec_json) < 0)
                return cli_out_of_memory();
        json_auto_t *enclave = NULL;
        if (cli_call(cli, "create", request, &enclave, &err) < 0) {
                /* The daemon names the field at fault; the file knows where it was written. */
                spec_locate_error(&locs, &err);
                return cli_fail("%s", err.msg);
        }
        return print_enclave(cli, "create", enclave);
}
