/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * An enclave spec: what a tenant asks for.  It comes from a YAML file
 * (libfyaml; errors carry file:line:column and the field), from command-line
 * flags, or from the wire as JSON (untrusted: validated the same way).
 *
 *   name: sim
 *   type: native            # native | vm
 *   cpus: 2                 # a count, or a list: "4-5" / [4, 5]
 *   memory: 1G              # rounded up to whole blocks
 *   numa: [0]               # nodes for cores and memory (default: any)
 *   hugepages: false        # hugetlb-backed memory blocks
 *   devices: [veth0, 0000:00:04.0, /dev/loop3]
 *   pids: 1024              # pids.max
 *   namespaces: [net, user] # added to the ones always made: mount pid ipc uts cgroup
 *   root: /srv/sim          # a directory, a squashfs file, or {squashfs|oci|bundle|dir: PATH, tag, overlay}
 *   hostname: sim
 *   on_failure: keep        # keep | reclaim | restart
 *   owner: alice            # root only
 */
#ifndef TESSERA_SPEC_H
#define TESSERA_SPEC_H

#include <hwloc.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "image.h"
#include "tessera/tessera.h"

#define SPEC_MAX_DEVICES 64

enum spec_type { SPEC_NATIVE, SPEC_VM };
enum spec_on_failure { ON_FAILURE_KEEP, ON_FAILURE_RECLAIM, ON_FAILURE_RESTART };

/* Namespaces beyond the always-made mount, pid, ipc, uts and cgroup. */
enum {
        SPEC_NS_NET = 1u << 0,
        SPEC_NS_USER = 1u << 1,
};

struct tessera_spec {
        char name[64];
        enum spec_type type;
        unsigned cpu_count;      /* when the spec gave a count; 0 otherwise */
        hwloc_bitmap_t cpu_list; /* when the spec gave a list; NULL otherwise */
        uint64_t memory_bytes;   /* as asked; the ledger rounds up to blocks */
        hwloc_bitmap_t numa;     /* NULL: any node */
        bool hugepages;
        char *devices[SPEC_MAX_DEVICES];
        size_t n_devices;
        uint64_t pids_max;      /* 0: no limit */
        unsigned namespaces;    /* SPEC_NS_* */
        struct image_ref *root; /* NULL: share the host's root filesystem */
        char hostname[64];      /* default: the name */
        enum spec_on_failure on_failure;
        char owner[64]; /* "" unless given */
        /* VM enclaves (issue 6) keep their own keys under `vm:`; kept verbatim. */
        json_t *vm;
};

/* Where each top-level field of a YAML spec was, to put file:line:column on errors
 * the daemon reports later (it names the field). */
struct spec_location {
        char field[32];
        int line, column;
};
struct spec_locations {
        char file[256];
        struct spec_location at[32];
        size_t n;
};

void spec_init(struct tessera_spec *s);
/* Frees what the spec holds and leaves it as spec_init() does (so a second call is harmless). */
void spec_done(struct tessera_spec *s);

/*
 * Parses a YAML spec.  Errors read "FILE:LINE:COLUMN: FIELD: what is wrong (what would be right)",
 * e.g. `sim.yaml:4:9: memory: "4X" is not a size (use K, M, G, T)`; unknown fields are errors.
 * `locs` may be NULL.  *ret is initialised here: on failure it is left empty (spec_done is
 * harmless), on success the caller spec_done()s it.  Each field is checked; whether the spec
 * is complete is spec_validate's question (flags may still add to it).
 */
int spec_parse_file(const char *path, struct tessera_spec *ret, struct spec_locations *locs, struct tessera_error *err);
int spec_parse_string(const char *text, size_t len, const char *file_name, struct tessera_spec *ret,
                      struct spec_locations *locs, struct tessera_error *err);

/* Sets one field from a command-line flag value ("--cpus 2"); errors name the flag. */
int spec_set_field(struct tessera_spec *s, const char *field, const char *value, struct tessera_error *err);
/* Checks a complete spec: a name, some cores, some memory, no contradiction. */
int spec_validate(const struct tessera_spec *s, struct tessera_error *err);

/* The wire form: a JSON object with the same keys as the YAML.  NULL when out of memory. */
json_t *spec_to_json(const struct tessera_spec *s);
/* Checks every field as strictly as the YAML path (errors "FIELD: ...", err->field set); initialises
 * *ret like spec_parse_string.  Completeness is spec_validate's job. */
int spec_from_json(json_t *j, struct tessera_spec *ret, struct tessera_error *err);

/* "cpus: core 3 is owned by 'sim'" with field "cpus" -> "sim.yaml:3:7: cpus: core ..." */
void spec_locate_error(const struct spec_locations *locs, struct tessera_error *err);

const char *spec_on_failure_name(enum spec_on_failure f);

/* Helpers config.c shares with the spec parser. */

/* A strict list "0-3,5": numbers <= max_index, ranges low-high, no spaces; "" gives an empty set.
 * Messages name the value, not the field (callers put "FIELD: " in front). */
int spec_parse_cpulist(const char *s, unsigned max_index, hwloc_bitmap_t *ret, struct tessera_error *err);
/* A device id: a PCI address dddd:bb:dd.f, an interface name, or an absolute /dev/ path without "..". */
int spec_check_device(const char *id, struct tessera_error *err);

/*
 * Reads a YAML mapping (at most 1 MiB) key by key: each value becomes JSON (plain scalars typed as
 * YAML 1.2 does, 2 -> integer, true -> boolean, except for `text_keys`, whose scalars stay text)
 * and goes to apply(), which returns 0 or a negative errno with a message about the value; on a
 * list it may set *ret_item to the index at fault.  Every error comes back as
 * "FILE:LINE:COLUMN: KEY: message" with err->field = KEY.  Nothing is printed.
 */
struct spec_yaml_schema {
        const char *const *keys;      /* known keys, NULL-terminated (at most 64) */
        const char *const *text_keys; /* NULL-terminated, or NULL */
        const char *noun;             /* "field" or "key", for messages */
        const char *example;          /* what a good file looks like, for messages */
        bool allow_empty;             /* an empty file is fine (all defaults) */
        int (*apply)(void *userdata, const char *key, json_t *value, int *ret_item, struct tessera_error *err);
};
int spec_yaml_read(const char *text, size_t len, const char *file_name, const struct spec_yaml_schema *schema,
                   void *userdata, struct spec_locations *locs, struct tessera_error *err);
/* Reads a whole regular file of at most `max` bytes, NUL-terminated; errors name the path. */
int spec_read_file(const char *path, size_t max, char **ret, size_t *ret_len, struct tessera_error *err);

#endif
