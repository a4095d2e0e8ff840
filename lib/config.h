/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * tesserad's configuration: built-in defaults, then /etc/tessera/tesserad.yaml, then
 * command-line flags.  A file looks like
 *
 *   state_dir: /var/lib/tessera
 *   socket: /run/tessera/tessera.sock
 *   cgroup_root: tessera
 *   host_cpus: "0"            # cores kept for the host; "" keeps none
 *   host_memory: 1G           # per NUMA node, or "0:1G,1:512M"
 *   block_size: 128M          # a power of two multiple of 2M
 *   topology: ""              # hwloc XML for planning only; "" is this machine
 *   host_devices: [eth0]      # or "eth0,0000:00:03.0": never given away
 *   sync: full                # full | normal
 *   supervisor: ""            # "" finds tessera-supervisor next to tesserad
 *
 * Errors read "FILE:LINE:COLUMN: KEY: what is wrong (what would be right)"; from a flag,
 * "--block-size: ...".  Unknown keys are errors.
 */
#ifndef TESSERA_CONFIG_H
#define TESSERA_CONFIG_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tessera/tessera.h"

struct tessera_config {
        char state_dir[PATH_MAX];  /* default /var/lib/tessera */
        char socket[PATH_MAX];     /* default /run/tessera/tessera.sock */
        char cgroup_root[128];     /* default "tessera" */
        char host_cpus[256];       /* cpulist kept for the host; default "0"; "" keeps none */
        char host_memory[64];      /* per NUMA node: "1G" (each node) or "0:1G,1:512M"; default "1G" */
        uint64_t block_size;       /* default 128 MiB; a power of two multiple of 2 MiB */
        char topology[PATH_MAX];   /* hwloc XML for ledger-only planning, "" = this machine */
        char host_devices[1024];   /* comma list of device ids never given away */
        bool sync_full;            /* SQLite synchronous=FULL (survives power loss) vs NORMAL (survives daemon crash);
                                      default true */
        char supervisor[PATH_MAX]; /* path of tessera-supervisor; default "" (found next to tesserad) */
        char fault[128];           /* fault-injection point name (tests only), "" = none */
};

#define CONFIG_DEFAULT_PATH "/etc/tessera/tesserad.yaml"

void config_init(struct tessera_config *c);
/* YAML, keys: state_dir, socket, cgroup_root, host_cpus, host_memory, block_size, topology,
 * host_devices (list or comma string), sync (full|normal), supervisor, fault.  An empty file keeps
 * every default.  On failure *c may hold some of the file's values: do not use it. */
int config_load_file(struct tessera_config *c, const char *path, struct tessera_error *err);
/* The same from text (file_name only names it in messages). */
int config_load_string(struct tessera_config *c, const char *text, size_t len, const char *file_name,
                       struct tessera_error *err);
/* From --flag value; key spelled with '-' or '_', with or without the leading "--". */
int config_set(struct tessera_config *c, const char *key, const char *value, struct tessera_error *err);
/* Checks every value by the rules the file and flags follow; errors "KEY: ...", err->field = KEY. */
int config_validate(const struct tessera_config *c, struct tessera_error *err);
/* Parses host_memory into per-node bytes: nodes[i] for NUMA os_index i (n_nodes entries).  With the
 * per-node form, nodes it does not name keep nothing; naming a node >= n_nodes is an error. */
int config_host_memory(const struct tessera_config *c, uint64_t *nodes, size_t n_nodes, struct tessera_error *err);

#endif
