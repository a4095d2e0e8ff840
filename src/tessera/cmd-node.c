/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The node's resources: `node`, `cpus`, `memory`, `devices`, `segments`. */
#include <errno.h>
#include <pwd.h>
#include <stdarg.h>
#include <string.h>

#include "cli.h"
#include "output.h"
#include "util.h"

#define NODE_KEY_WIDTH 13
#define NUM_BUF        24 /* a 64-bit number in decimal, or a human size */

typedef int (*print_result_fn)(const json_t *result);

/* The common shape of a listing: no arguments, one call, then JSON or a human form. */
static int run_listing(struct cli *cli, int argc, char **argv, const char *op, print_result_fn print)
{
        int status = cli_parse_plain(cli, argc, argv, 0);
        if (status >= 0)
                return status;
        struct tessera_error err = {0};
        json_auto_t *result = NULL;
        if (cli_call(cli, op, NULL, &result, &err) < 0)
                return cli_fail("%s", err.msg);
        if (cli->json)
                return cli_print_json(result);
        return print(result);
}

/* One "key        value" line of the node summary. */
__attribute__((format(printf, 2, 3))) static void summary_line(const char *key, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        printf("%-*s", NODE_KEY_WIDTH, key);
        vprintf(fmt, ap);
        putchar('\n');
        va_end(ap);
}

/* Decimal or "-", for the summary: buffers are the caller's, one per value. */
static const char *uint_of(const json_t *obj, const char *key, char buf[static NUM_BUF])
{
        format_json_uint(json_object_get(obj, key), buf, NUM_BUF);
        return buf;
}

static const char *size_of(const json_t *obj, const char *key, char buf[static NUM_BUF])
{
        format_json_size(json_object_get(obj, key), buf, NUM_BUF);
        return buf;
}

static void print_node_cpus(const json_t *node)
{
        const json_t *cpus = json_object_get(node, "cpus");
        char total[NUM_BUF], host[NUM_BUF], free_[NUM_BUF], enclaves[NUM_BUF];
        _cleanup_free_ char *host_list = NULL;
        if (cpulist_from_json(json_object_get(node, "host_cpus"), &host_list) < 0)
                host_list = NULL;
        summary_line("cpus", "%s total: %s host%s%s%s, %s free, %s in enclaves", uint_of(cpus, "total", total),
                     uint_of(cpus, "host", host), host_list && *host_list ? " (" : "",
                     host_list && *host_list ? host_list : "", host_list && *host_list ? ")" : "",
                     uint_of(cpus, "free", free_), uint_of(cpus, "enclaves", enclaves));
}

static void print_node_memory(const json_t *node)
{
        const json_t *mem = json_object_get(node, "memory");
        char total[NUM_BUF], host[NUM_BUF], free_[NUM_BUF], enclaves[NUM_BUF];
        summary_line("memory", "%s total: %s host, %s free, %s in enclaves", size_of(mem, "total", total),
                     size_of(mem, "host", host), size_of(mem, "free", free_), size_of(mem, "enclaves", enclaves));
}

static void print_node_numa(const json_t *node)
{
        size_t i;
        const json_t *numa;
        json_array_foreach(json_object_get(node, "numa"), i, numa)
        {
                char key[32], id[NUM_BUF], memory[NUM_BUF], blocks[NUM_BUF], free_blocks[NUM_BUF];
                _cleanup_free_ char *cpus = NULL;
                if (cpulist_from_json(json_object_get(numa, "cpus"), &cpus) < 0)
                        cpus = NULL;
                snprintf(key, sizeof(key), "numa %s", uint_of(numa, "id", id));
                summary_line(key, "cpus %s, memory %s, %s blocks (%s free)", cpus && *cpus ? cpus : "-",
                             size_of(numa, "memory", memory), uint_of(numa, "blocks", blocks),
                             uint_of(numa, "free_blocks", free_blocks));
        }
}

static int print_node(const json_t *node)
{
        if (!json_is_object(node))
                return cli_unexpected_reply("node", "an object");
        char block[NUM_BUF], a[NUM_BUF], b[NUM_BUF], c[NUM_BUF];
        const json_t *ledger_only = json_object_get(node, "ledger_only");
        summary_line("hostname", "%s", json_string_or(node, "hostname", "-"));
        summary_line("kernel", "%s", json_string_or(node, "kernel", "-"));
        summary_line("cgroup", "%s", json_string_or(node, "cgroup", "-"));
        summary_line("ledger only", "%s",
                     json_is_true(ledger_only)    ? "yes (resources are booked, not enforced)"
                     : json_is_false(ledger_only) ? "no"
                                                  : "-");
        summary_line("block size", "%s", size_of(node, "block_size", block));
        print_node_cpus(node);
        print_node_memory(node);
        print_node_numa(node);

        const json_t *devices = json_object_get(node, "devices");
        summary_line("devices", "%s total: %s free, %s in enclaves", uint_of(devices, "total", a),
                     uint_of(devices, "free", b), uint_of(devices, "enclaves", c));
        const json_t *enclaves = json_object_get(node, "enclaves");
        summary_line("enclaves", "%s total: %s running, %s failed", uint_of(enclaves, "total", a),
                     uint_of(enclaves, "running", b), uint_of(enclaves, "failed", c));

        const json_t *daemon = json_object_get(node, "daemon");
        summary_line("daemon", "pid %s, RSS %s, version %s", uint_of(daemon, "pid", a), size_of(daemon, "rss", b),
                     json_string_or(daemon, "version", "-"));
        summary_line("state dir", "%s", json_string_or(daemon, "state_dir", "-"));
        summary_line("socket", "%s", json_string_or(daemon, "socket", "-"));
        summary_line("cgroup root", "%s", json_string_or(daemon, "cgroup_root", "-"));
        return 0;
}

int cmd_node(struct cli *cli, int argc, char **argv)
{
        return run_listing(cli, argc, argv, "node", print_node);
}

static int print_cpus(const json_t *cpus)
{
        if (!json_is_array(cpus))
                return cli_unexpected_reply("cpus", "an array");
        _cleanup_(table_freep) struct table *t = table_new("CPU", "CORE", "PACKAGE", "NUMA", "OWNER");
        if (!t)
                return cli_out_of_memory();
        for (size_t col = 0; col < 4; col++)
                table_align_right(t, col);
        size_t i;
        const json_t *cpu;
        json_array_foreach(cpus, i, cpu)
        {
                char id[NUM_BUF], core[NUM_BUF], package[NUM_BUF], numa[NUM_BUF];
                if (table_add_row(t, uint_of(cpu, "cpu", id), uint_of(cpu, "core", core),
                                  uint_of(cpu, "package", package), uint_of(cpu, "numa", numa),
                                  json_string_or(cpu, "owner", "-")) < 0)
                        return cli_out_of_memory();
        }
        return cli_print_table(t);
}

int cmd_cpus(struct cli *cli, int argc, char **argv)
{
        return run_listing(cli, argc, argv, "cpus", print_cpus);
}

static int add_block_runs(struct table *t, const json_t *node, uint64_t block_size)
{
        _cleanup_free_ struct block_run *runs = NULL;
        size_t n_runs;
        if (block_runs_from_json(json_object_get(node, "blocks"), &runs, &n_runs) < 0)
                return -EINVAL;
        char numa[NUM_BUF];
        uint_of(node, "numa", numa);
        for (size_t i = 0; i < n_runs; i++) {
                char count[NUM_BUF], range[48], size[NUM_BUF];
                snprintf(count, sizeof(count), "%llu", (unsigned long long)runs[i].count);
                uint64_t last = runs[i].first + runs[i].count - 1;
                if (runs[i].count == 1)
                        snprintf(range, sizeof(range), "%llu", (unsigned long long)runs[i].first);
                else
                        snprintf(range, sizeof(range), "%llu-%llu", (unsigned long long)runs[i].first,
                                 (unsigned long long)last);
                if (block_size)
                        format_size(runs[i].count * block_size, size, sizeof(size));
                else
                        snprintf(size, sizeof(size), "-");
                if (table_add_row(t, numa, count, range, size, runs[i].owner) < 0)
                        return -ENOMEM;
        }
        return 0;
}

/* One line per node (size, host reserve), then one table of block runs for all nodes. */
static int print_memory(const json_t *memory)
{
        const json_t *nodes = json_object_get(memory, "nodes");
        const json_t *bs = json_object_get(memory, "block_size");
        if (!json_is_array(nodes))
                return cli_unexpected_reply("memory", "an object with `nodes`");
        uint64_t block_size = json_is_integer(bs) && json_integer_value(bs) > 0 ? (uint64_t)json_integer_value(bs) : 0;
        _cleanup_(table_freep) struct table *t = table_new("NUMA", "BLOCKS", "RANGE", "SIZE", "OWNER");
        if (!t)
                return cli_out_of_memory();
        table_align_right(t, 1);
        table_align_right(t, 3);
        char block[NUM_BUF];
        printf("block size %s\n", size_of(memory, "block_size", block));
        size_t i;
        const json_t *node;
        json_array_foreach(nodes, i, node)
        {
                char numa[NUM_BUF], bytes[NUM_BUF], host[NUM_BUF];
                size_t n_blocks = json_array_size(json_object_get(node, "blocks"));
                printf("numa %s: %s, host reserve %s, %zu block%s\n", uint_of(node, "numa", numa),
                       size_of(node, "bytes", bytes), size_of(node, "host_bytes", host), n_blocks,
                       n_blocks == 1 ? "" : "s");
                int r = add_block_runs(t, node, block_size);
                if (r == -ENOMEM)
                        return cli_out_of_memory();
                if (r < 0)
                        return cli_unexpected_reply("memory", "`blocks` as [{\"block\", \"owner\"}], each block once");
        }
        putchar('\n');
        return cli_print_table(t);
}

int cmd_memory(struct cli *cli, int argc, char **argv)
{
        return run_listing(cli, argc, argv, "memory", print_memory);
}

static int print_devices(const json_t *devices)
{
        if (!json_is_array(devices))
                return cli_unexpected_reply("devices", "an array");
        _cleanup_(table_freep) struct table *t = table_new("ID", "KIND", "NUMA", "OWNER", "DESCRIPTION");
        if (!t)
                return cli_out_of_memory();
        size_t i;
        const json_t *dev;
        json_array_foreach(devices, i, dev)
        {
                char numa[NUM_BUF];
                if (table_add_row(t, json_string_or(dev, "id", "-"), json_string_or(dev, "kind", "-"),
                                  uint_of(dev, "numa", numa), json_string_or(dev, "owner", "-"),
                                  json_string_or(dev, "description", "")) < 0)
                        return cli_out_of_memory();
        }
        return cli_print_table(t);
}

int cmd_devices(struct cli *cli, int argc, char **argv)
{
        return run_listing(cli, argc, argv, "devices", print_devices);
}

/* "1234@sim(rw)": who holds access to a segment, and how. */
static int attachers_cell(const json_t *attachers, char **ret)
{
        size_t len = 0, i;
        const json_t *a;
        FILE *f = open_memstream(ret, &len);
        if (!f)
                return -ENOMEM;
        json_array_foreach(attachers, i, a)
        {
                const char *encl = json_string_value(json_object_get(a, "enclave"));
                fprintf(f, "%s%lld@%s(%s", i ? "," : "", (long long)json_integer_value(json_object_get(a, "pid")),
                        encl ? encl : "host", json_is_true(json_object_get(a, "writable")) ? "rw" : "r");
                long long n = json_integer_value(json_object_get(a, "attachments"));
                if (n > 1)
                        fprintf(f, " x%lld", n);
                fputc(')', f);
        }
        if (i == 0)
                fputc('-', f);
        return fclose(f) == 0 ? 0 : -ENOMEM;
}

static int print_segments(const json_t *segments)
{
        if (!json_is_array(segments))
                return cli_unexpected_reply("segments", "an array");
        _cleanup_(table_freep) struct table *t =
                table_new("ID", "NAME", "SIZE", "OWNER", "MODE", "KIND", "ENCLAVE", "PID", "ATTACHERS");
        if (!t)
                return cli_out_of_memory();
        table_align_right(t, 0);
        table_align_right(t, 2);
        table_align_right(t, 7);
        size_t i;
        const json_t *s;
        json_array_foreach(segments, i, s)
        {
                char id[NUM_BUF], size[NUM_BUF], owner[64], pid[NUM_BUF], kind[32];
                uint_of(s, "id", id);
                uint_of(s, "pid", pid);
                const char *k = json_string_value(json_object_get(s, "kind")) ?: "?";
                if (STREQ(k, "whole"))
                        snprintf(size, sizeof(size), "all");
                else
                        format_json_size(json_object_get(s, "size"), size, sizeof(size));
                snprintf(kind, sizeof(kind), "%s%s", k, json_is_false(json_object_get(s, "ready")) ? " (copying)" : "");
                uid_t uid = (uid_t)json_integer_value(json_object_get(s, "owner_uid"));
                struct passwd *pw = getpwuid(uid);
                if (pw)
                        snprintf(owner, sizeof(owner), "%s", pw->pw_name);
                else
                        snprintf(owner, sizeof(owner), "%u", (unsigned)uid);
                const char *name = json_string_value(json_object_get(s, "name"));
                const char *encl = json_string_value(json_object_get(s, "enclave"));
                _cleanup_free_ char *att = NULL;
                if (attachers_cell(json_object_get(s, "attachers"), &att) < 0)
                        return cli_out_of_memory();
                if (table_add_row(t, id, name ? name : "-", size, owner,
                                  json_string_value(json_object_get(s, "mode")) ?: "?", kind, encl ? encl : "host", pid,
                                  att) < 0)
                        return cli_out_of_memory();
        }
        return cli_print_table(t);
}

int cmd_segments(struct cli *cli, int argc, char **argv)
{
        return run_listing(cli, argc, argv, "segments", print_segments);
}
