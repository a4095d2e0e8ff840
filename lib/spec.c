/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Enclave specs.  A YAML file (libfyaml) is turned into JSON values field by field and
 * every field goes through one strict setter, the same one the daemon uses on the JSON
 * it gets from untrusted clients: the two paths cannot drift apart.  The YAML side only
 * adds where each value was, so messages can say "sim.yaml:4:9: memory: ...".
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <libfyaml.h>
#include <limits.h>
#include <net/if.h>
#include <string.h>
#include <sys/stat.h>

#include "spec.h"
#include "util.h"

#define CPU_INDEX_MAX  8191u /* the kernel's largest NR_CPUS */
#define CPU_COUNT_MAX  8192u
#define NUMA_INDEX_MAX 1023u              /* the kernel's largest MAX_NUMNODES */
#define PIDS_MAX       4194304u           /* PID_MAX_LIMIT */
#define MEMORY_MAX     (8388607ULL << 40) /* fits a JSON integer (int64) */
#define YAML_TEXT_MAX  (1u << 20)
#define QUOTE_MAX      48

static inline void bitmap_freep(hwloc_bitmap_t *b)
{
        if (*b)
                hwloc_bitmap_free(*b);
}
#define _cleanup_bitmap_ _cleanup_(bitmap_freep)
#define _cleanup_json_   _cleanup_(json_decrefp) /* jansson's own */

/* ---- messages ---- */

/* Copies a value for a message: at most QUOTE_MAX bytes, control characters as '?', so an
 * untrusted string can neither flood the message nor drive the terminal. */
static const char *quote(const char *s, char buf[static QUOTE_MAX + 4])
{
        size_t i = 0;
        for (; s[i] && i < QUOTE_MAX; i++)
                buf[i] = iscntrl((unsigned char)s[i]) ? '?' : s[i];
        if (s[i])
                memcpy(buf + i, "...", 3), i += 3;
        buf[i] = '\0';
        return buf;
}

/* "a string (\"x\")", "a list", ... : what a value of the wrong type was. */
static void describe(const json_t *v, char *buf, size_t n)
{
        char q[QUOTE_MAX + 4];
        switch (json_typeof(v)) {
        case JSON_OBJECT: snprintf(buf, n, "a mapping"); break;
        case JSON_ARRAY: snprintf(buf, n, "a list"); break;
        case JSON_STRING: snprintf(buf, n, "a string (\"%s\")", quote(json_string_value(v), q)); break;
        case JSON_INTEGER: snprintf(buf, n, "a number (%lld)", (long long)json_integer_value(v)); break;
        case JSON_REAL: snprintf(buf, n, "a number (%g)", json_real_value(v)); break;
        case JSON_TRUE:
        case JSON_FALSE: snprintf(buf, n, "a boolean (%s)", json_is_true(v) ? "true" : "false"); break;
        default: snprintf(buf, n, "no value"); break;
        }
}

static int type_error(struct tessera_error *err, const json_t *v, const char *expected, const char *hint)
{
        char what[QUOTE_MAX + 32];
        describe(v, what, sizeof(what));
        return tessera_error_set(err, EINVAL, "%s where %s is expected (%s)", what, expected, hint);
}

/* A JSON string as a C string; refuses other types and embedded NUL bytes. */
static int get_string(const json_t *v, const char *expected, const char *hint, const char **ret,
                      struct tessera_error *err)
{
        if (!json_is_string(v))
                return type_error(err, v, expected, hint);
        const char *s = json_string_value(v);
        if (strlen(s) != json_string_length(v))
                return tessera_error_set(err, EINVAL, "the value contains a NUL byte (%s)", hint);
        *ret = s;
        return 0;
}

/* A JSON integer within [min, max]. */
static int get_uint(const json_t *v, uint64_t min, uint64_t max, const char *expected, const char *hint, uint64_t *ret,
                    struct tessera_error *err)
{
        if (!json_is_integer(v))
                return type_error(err, v, expected, hint);
        json_int_t n = json_integer_value(v);
        if (n < 0 || (uint64_t)n < min || (uint64_t)n > max)
                return tessera_error_set(err, ERANGE, "%lld is out of range (%s)", (long long)n, hint);
        *ret = (uint64_t)n;
        return 0;
}

static void join_names(const char *const *names, const char *before, char *buf, size_t n)
{
        size_t off = 0;
        buf[0] = '\0';
        for (size_t i = 0; names[i] && off < n; i++) {
                int w = snprintf(buf + off, n - off, "%s%s%s", i ? ", " : "", before, names[i]);
                if (w < 0)
                        break;
                off += (size_t)w;
        }
}

/* ---- lists of numbers ---- */

static int read_number(const char **p, unsigned max_index, unsigned *ret)
{
        const char *s = *p;
        if (!isdigit((unsigned char)*s))
                return -EINVAL;
        uint64_t v = 0;
        for (; isdigit((unsigned char)*s); s++) {
                v = v * 10 + (uint64_t)(*s - '0');
                if (v > max_index)
                        return -ERANGE;
        }
        *p = s;
        *ret = (unsigned)v;
        return 0;
}

int spec_parse_cpulist(const char *s, unsigned max_index, hwloc_bitmap_t *ret, struct tessera_error *err)
{
        char q[QUOTE_MAX + 4];
        _cleanup_bitmap_ hwloc_bitmap_t set = hwloc_bitmap_alloc();
        if (!set)
                return tessera_error_set(err, ENOMEM, "out of memory");
        const char *p = s;
        while (*p) {
                unsigned lo, hi;
                int r = read_number(&p, max_index, &lo);
                hi = lo;
                if (r == 0 && *p == '-') {
                        p++;
                        r = read_number(&p, max_index, &hi);
                }
                if (r == -ERANGE)
                        return tessera_error_set(err, ERANGE, "\"%s\" has a number above %u (use 0 to %u)", quote(s, q),
                                                 max_index, max_index);
                if (r < 0 || (*p && *p != ',') || (*p == ',' && p[1] == '\0'))
                        return tessera_error_set(
                                err, EINVAL, "\"%s\" is not a list of numbers (use numbers and ranges, e.g. \"4-5,7\")",
                                quote(s, q));
                if (hi < lo)
                        return tessera_error_set(err, EINVAL, "\"%s\": the range %u-%u runs backwards (use %u-%u)",
                                                 quote(s, q), lo, hi, hi, lo);
                if (hwloc_bitmap_set_range(set, lo, (int)hi) < 0)
                        return tessera_error_set(err, ENOMEM, "out of memory");
                if (*p == ',')
                        p++;
        }
        *ret = TAKE_PTR(set);
        return 0;
}

/* A set of numbers from a string list, a list of integers, or (numa) one integer. */
static int bitmap_from_json(const json_t *v, unsigned max_index, bool allow_single, const char *hint,
                            hwloc_bitmap_t *ret, int *ret_item, struct tessera_error *err)
{
        _cleanup_bitmap_ hwloc_bitmap_t set = NULL;
        int r;
        if (json_is_string(v)) {
                const char *s;
                r = get_string(v, "a list", hint, &s, err);
                if (r < 0)
                        return r;
                r = spec_parse_cpulist(s, max_index, &set, err);
                if (r < 0)
                        return r;
        } else if (json_is_array(v) || (allow_single && json_is_integer(v))) {
                set = hwloc_bitmap_alloc();
                if (!set)
                        return tessera_error_set(err, ENOMEM, "out of memory");
                size_t n = json_is_array(v) ? json_array_size(v) : 1;
                for (size_t i = 0; i < n; i++) {
                        const json_t *item = json_is_array(v) ? json_array_get(v, i) : v;
                        uint64_t x;
                        r = get_uint(item, 0, max_index, "a number", hint, &x, err);
                        if (r >= 0 && hwloc_bitmap_isset(set, (unsigned)x))
                                r = tessera_error_set(err, EINVAL, "%llu is listed twice (list each once)",
                                                      (unsigned long long)x);
                        if (r < 0) {
                                if (json_is_array(v))
                                        *ret_item = (int)i;
                                return r;
                        }
                        hwloc_bitmap_set(set, (unsigned)x);
                }
        } else {
                return type_error(err, v, "a list", hint);
        }
        if (hwloc_bitmap_iszero(set))
                return tessera_error_set(err, EINVAL, "the list is empty (%s)", hint);
        *ret = TAKE_PTR(set);
        return 0;
}

/* ---- value rules ---- */

static bool is_pci_address(const char *s)
{
        /* dddd:bb:dd.f, hex digits, device <= 0x1f, function <= 7 */
        static const char shape[] = "xxxx:xx:xx.x";
        if (strlen(s) != sizeof(shape) - 1)
                return false;
        for (size_t i = 0; shape[i]; i++)
                if (shape[i] == 'x' ? !isxdigit((unsigned char)s[i]) : s[i] != shape[i])
                        return false;
        unsigned dev = (unsigned)strtoul(s + 8, NULL, 16);
        return dev <= 0x1f && s[11] >= '0' && s[11] <= '7';
}

static bool is_interface_name(const char *s)
{
        /* the kernel's dev_valid_name() */
        size_t len = strlen(s);
        if (len == 0 || len >= IFNAMSIZ || STREQ(s, ".") || STREQ(s, ".."))
                return false;
        for (const char *p = s; *p; p++)
                if (*p == '/' || *p == ':' || isspace((unsigned char)*p) || iscntrl((unsigned char)*p))
                        return false;
        return true;
}

static bool has_dotdot(const char *path)
{
        for (const char *p = path; (p = strstr(p, "..")); p += 2)
                if ((p == path || p[-1] == '/') && (p[2] == '\0' || p[2] == '/'))
                        return true;
        return false;
}

int spec_check_device(const char *id, struct tessera_error *err)
{
        char q[QUOTE_MAX + 4];
        if (strncmp(id, "/dev/", 5) == 0) {
                if (id[5] == '\0' || strlen(id) >= 256 || has_dotdot(id))
                        return tessera_error_set(err, EINVAL,
                                                 "\"%s\" is not a device path (use a path under /dev/ without \"..\")",
                                                 quote(id, q));
                for (const char *p = id; *p; p++)
                        if (iscntrl((unsigned char)*p))
                                return tessera_error_set(err, EINVAL, "\"%s\" has a control character", quote(id, q));
                return 0;
        }
        if (strchr(id, ':')) {
                if (!is_pci_address(id))
                        return tessera_error_set(err, EINVAL,
                                                 "\"%s\" is not a PCI address (use dddd:bb:dd.f, e.g. 0000:00:04.0)",
                                                 quote(id, q));
                return 0;
        }
        if (!is_interface_name(id))
                return tessera_error_set(err, EINVAL,
                                         "\"%s\" is not a device (use an interface name of at most %d characters, "
                                         "a PCI address such as 0000:00:04.0, or a /dev/ path)",
                                         quote(id, q), IFNAMSIZ - 1);
        return 0;
}

static bool is_hostname(const char *s)
{
        /* RFC 1123 labels separated by dots, at most 63 characters in all */
        size_t len = strlen(s);
        if (len == 0 || len > 63)
                return false;
        const char *label = s;
        for (const char *p = s;; p++) {
                if (*p == '.' || *p == '\0') {
                        if (p == label || *label == '-' || p[-1] == '-')
                                return false;
                        if (*p == '\0')
                                return true;
                        label = p + 1;
                } else if (!isalnum((unsigned char)*p) && *p != '-') {
                        return false;
                }
        }
}

static bool is_owner(const char *s)
{
        /* a numeric uid, or a user name as useradd allows it */
        uint64_t uid;
        if (isdigit((unsigned char)s[0]))
                return parse_uint64(s, UINT32_MAX - 1, &uid) == 0;
        size_t len = strlen(s);
        if (len == 0 || len > 32 || !(isalpha((unsigned char)s[0]) || s[0] == '_'))
                return false;
        for (size_t i = 1; i < len; i++)
                if (!isalnum((unsigned char)s[i]) && !strchr("_.-", s[i]) && !(s[i] == '$' && i == len - 1))
                        return false;
        return true;
}

/* ---- one setter per field; each leaves the spec unchanged on failure ---- */

typedef int (*field_setter)(struct tessera_spec *s, json_t *v, int *ret_item, struct tessera_error *err);

static int set_name(struct tessera_spec *s, json_t *v, int *ret_item, struct tessera_error *err)
{
        static const char hint[] = "use letters, digits, '_', '.' and '-', starting with a letter or digit, "
                                   "at most 63 characters";
        char q[QUOTE_MAX + 4];
        const char *name;
        int r = get_string(v, "a name", hint, &name, err);
        if (r < 0)
                return r;
        if (!name_is_valid(name))
                return tessera_error_set(err, EINVAL, "\"%s\" is not a valid name (%s)", quote(name, q), hint);
        snprintf(s->name, sizeof(s->name), "%s", name);
        return 0;
}

static int set_type(struct tessera_spec *s, json_t *v, int *ret_item, struct tessera_error *err)
{
        char q[QUOTE_MAX + 4];
        const char *t;
        int r = get_string(v, "a type", "use native or vm", &t, err);
        if (r < 0)
                return r;
        if (STREQ(t, "native"))
                s->type = SPEC_NATIVE;
        else if (STREQ(t, "vm"))
                s->type = SPEC_VM;
        else
                return tessera_error_set(err, EINVAL, "\"%s\" is not an enclave type (use native or vm)", quote(t, q));
        return 0;
}

static int set_cpus(struct tessera_spec *s, json_t *v, int *ret_item, struct tessera_error *err)
{
        static const char hint[] = "use a count such as 2, or a list such as \"4-5,7\" or [4, 5]";
        if (json_is_integer(v)) {
                uint64_t n;
                int r = get_uint(v, 1, CPU_COUNT_MAX, "a count",
                                 "use a count from 1 to 8192, or a list such as \"4-5\"", &n, err);
                if (r < 0)
                        return r;
                hwloc_bitmap_free(s->cpu_list);
                s->cpu_list = NULL;
                s->cpu_count = (unsigned)n;
                return 0;
        }
        if (!json_is_string(v) && !json_is_array(v))
                return type_error(err, v, "a core count or list", hint);
        hwloc_bitmap_t set;
        int r = bitmap_from_json(v, CPU_INDEX_MAX, false, hint, &set, ret_item, err);
        if (r < 0)
                return r;
        hwloc_bitmap_free(s->cpu_list);
        s->cpu_list = set;
        s->cpu_count = 0;
        return 0;
}

static int set_memory(struct tessera_spec *s, json_t *v, int *ret_item, struct tessera_error *err)
{
        char q[QUOTE_MAX + 4];
        uint64_t bytes;
        if (json_is_integer(v)) {
                int r = get_uint(v, 1, MEMORY_MAX, "a size", "use a size above 0, e.g. 1G or 1073741824", &bytes, err);
                if (r < 0)
                        return r;
        } else if (json_is_string(v)) {
                const char *t;
                int r = get_string(v, "a size", "use e.g. 1G", &t, err);
                if (r < 0)
                        return r;
                r = parse_size(t, &bytes);
                if (r == -ERANGE || (r == 0 && bytes > MEMORY_MAX))
                        return tessera_error_set(err, ERANGE, "\"%s\" is too large (at most 8388607T)", quote(t, q));
                if (r < 0)
                        return tessera_error_set(err, EINVAL, "\"%s\" is not a size (use K, M, G, T)", quote(t, q));
                if (bytes == 0)
                        return tessera_error_set(err, EINVAL, "\"%s\" is no memory (use a size above 0, e.g. 1G)",
                                                 quote(t, q));
        } else {
                return type_error(err, v, "a size", "use e.g. 1G, 512M or a number of bytes");
        }
        s->memory_bytes = bytes;
        return 0;
}

static int set_numa(struct tessera_spec *s, json_t *v, int *ret_item, struct tessera_error *err)
{
        hwloc_bitmap_t set;
        int r = bitmap_from_json(v, NUMA_INDEX_MAX, true, "use a node number such as 0, or a list such as [0, 1]", &set,
                                 ret_item, err);
        if (r < 0)
                return r;
        hwloc_bitmap_free(s->numa);
        s->numa = set;
        return 0;
}

static int set_hugepages(struct tessera_spec *s, json_t *v, int *ret_item, struct tessera_error *err)
{
        if (!json_is_boolean(v))
                return type_error(err, v, "true or false", "use true or false");
        s->hugepages = json_is_true(v);
        return 0;
}

static void free_devices(char **devices, size_t n)
{
        for (size_t i = 0; i < n; i++)
                free(devices[i]);
}

/* Checks one more device against the rules and the ones already listed. */
static int check_new_device(char *const *devices, size_t n, const char *id, struct tessera_error *err)
{
        char q[QUOTE_MAX + 4];
        if (n >= SPEC_MAX_DEVICES)
                return tessera_error_set(err, E2BIG, "more than %d devices (list at most %d)", SPEC_MAX_DEVICES,
                                         SPEC_MAX_DEVICES);
        int r = spec_check_device(id, err);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++)
                if (STREQ(devices[i], id))
                        return tessera_error_set(err, EINVAL, "\"%s\" is listed twice (list each device once)",
                                                 quote(id, q));
        return 0;
}

static int set_devices(struct tessera_spec *s, json_t *v, int *ret_item, struct tessera_error *err)
{
        static const char hint[] = "use a list such as [veth0, 0000:00:04.0, /dev/loop3]";
        if (!json_is_array(v))
                return type_error(err, v, "a list of devices", hint);
        char *devices[SPEC_MAX_DEVICES];
        size_t n = 0;
        int r = 0;
        for (size_t i = 0; i < json_array_size(v); i++) {
                const char *id;
                r = get_string(json_array_get(v, i), "a device name", hint, &id, err);
                if (r >= 0)
                        r = check_new_device(devices, n, id, err);
                if (r >= 0 && !(devices[n] = strdup(id)))
                        r = tessera_error_set(err, ENOMEM, "out of memory");
                if (r < 0) {
                        *ret_item = (int)i;
                        free_devices(devices, n);
                        return r;
                }
                n++;
        }
        free_devices(s->devices, s->n_devices);
        memcpy(s->devices, devices, n * sizeof(devices[0]));
        s->n_devices = n;
        return 0;
}

static int set_pids(struct tessera_spec *s, json_t *v, int *ret_item, struct tessera_error *err)
{
        return get_uint(v, 1, PIDS_MAX, "a number", "use a number from 1 to 4194304", &s->pids_max, err);
}

static int namespace_bit(const char *name, unsigned *ret)
{
        static const char *const always[] = {"mount", "pid", "ipc", "uts", "cgroup"};
        if (STREQ(name, "net"))
                *ret = SPEC_NS_NET;
        else if (STREQ(name, "user"))
                *ret = SPEC_NS_USER;
        else {
                for (size_t i = 0; i < ELEMENTSOF(always); i++)
                        if (STREQ(name, always[i])) {
                                *ret = 0; /* always made anyway */
                                return 0;
                        }
                return -EINVAL;
        }
        return 0;
}

static int set_namespaces(struct tessera_spec *s, json_t *v, int *ret_item, struct tessera_error *err)
{
        static const char hint[] = "use net and user; mount, pid, ipc, uts and cgroup are always made";
        char q[QUOTE_MAX + 4];
        if (!json_is_array(v))
                return type_error(err, v, "a list of namespaces", "use a list such as [net, user]");
        unsigned bits = 0;
        for (size_t i = 0; i < json_array_size(v); i++) {
                const char *name;
                unsigned bit;
                int r = get_string(json_array_get(v, i), "a namespace", hint, &name, err);
                if (r >= 0 && namespace_bit(name, &bit) < 0)
                        r = tessera_error_set(err, EINVAL, "\"%s\" is not a namespace (%s)", quote(name, q), hint);
                if (r < 0) {
                        *ret_item = (int)i;
                        return r;
                }
                bits |= bit;
        }
        s->namespaces = bits;
        return 0;
}

/* A directory, an image file, or an object naming the image's kind (lib/image.h). */
static int set_root(struct tessera_spec *s, json_t *v, int *ret_item, struct tessera_error *err)
{
        struct image_ref *ref = calloc(1, sizeof(*ref));
        if (!ref)
                return tessera_error_set(err, ENOMEM, "out of memory");
        int r = image_ref_from_json(v, ref, err);
        if (r < 0) {
                free(ref);
                return r;
        }
        free(s->root);
        s->root = ref;
        return 0;
}

static int set_hostname(struct tessera_spec *s, json_t *v, int *ret_item, struct tessera_error *err)
{
        static const char hint[] = "use letters, digits and '-', not at either end of a label, at most 63 characters";
        char q[QUOTE_MAX + 4];
        const char *h;
        int r = get_string(v, "a host name", hint, &h, err);
        if (r < 0)
                return r;
        if (!is_hostname(h))
                return tessera_error_set(err, EINVAL, "\"%s\" is not a host name (%s)", quote(h, q), hint);
        snprintf(s->hostname, sizeof(s->hostname), "%s", h);
        return 0;
}

static int set_on_failure(struct tessera_spec *s, json_t *v, int *ret_item, struct tessera_error *err)
{
        char q[QUOTE_MAX + 4];
        const char *t;
        int r = get_string(v, "a policy", "use keep, reclaim or restart", &t, err);
        if (r < 0)
                return r;
        for (int f = ON_FAILURE_KEEP; f <= ON_FAILURE_RESTART; f++)
                if (STREQ(t, spec_on_failure_name(f))) {
                        s->on_failure = f;
                        return 0;
                }
        return tessera_error_set(err, EINVAL, "\"%s\" is not a failure policy (use keep, reclaim or restart)",
                                 quote(t, q));
}

static int set_owner(struct tessera_spec *s, json_t *v, int *ret_item, struct tessera_error *err)
{
        static const char hint[] = "use a user name such as alice, or a numeric uid";
        char q[QUOTE_MAX + 4];
        if (json_is_integer(v)) {
                uint64_t uid;
                int r = get_uint(v, 0, UINT32_MAX - 1, "a user", hint, &uid, err);
                if (r < 0)
                        return r;
                snprintf(s->owner, sizeof(s->owner), "%llu", (unsigned long long)uid);
                return 0;
        }
        const char *o;
        int r = get_string(v, "a user", hint, &o, err);
        if (r < 0)
                return r;
        if (!is_owner(o))
                return tessera_error_set(err, EINVAL, "\"%s\" is not a user (%s)", quote(o, q), hint);
        snprintf(s->owner, sizeof(s->owner), "%s", o);
        return 0;
}

static int set_vm(struct tessera_spec *s, json_t *v, int *ret_item, struct tessera_error *err)
{
        if (!json_is_object(v))
                return type_error(err, v, "a mapping", "use keys under vm:, one per line");
        json_t *copy = json_deep_copy(v);
        if (!copy)
                return tessera_error_set(err, ENOMEM, "out of memory");
        json_decref(s->vm);
        s->vm = copy;
        return 0;
}

/* How a command-line value becomes the JSON the setter takes. */
enum flag_form { FLAG_STRING, FLAG_COUNT_OR_LIST, FLAG_INTEGER, FLAG_BOOL, FLAG_COMMA_LIST, FLAG_APPEND, FLAG_NONE };

struct spec_field {
        const char *name;
        bool text; /* YAML scalars stay text (a name may be 42) */
        field_setter set;
        enum flag_form flag;
};

static const struct spec_field spec_fields[] = {
        {"name", true, set_name, FLAG_STRING},
        {"type", true, set_type, FLAG_STRING},
        {"cpus", false, set_cpus, FLAG_COUNT_OR_LIST},
        {"memory", false, set_memory, FLAG_STRING},
        {"numa", false, set_numa, FLAG_COUNT_OR_LIST},
        {"hugepages", false, set_hugepages, FLAG_BOOL},
        {"devices", true, set_devices, FLAG_APPEND},
        {"pids", false, set_pids, FLAG_INTEGER},
        {"namespaces", true, set_namespaces, FLAG_COMMA_LIST},
        {"root", true, set_root, FLAG_STRING},
        {"hostname", true, set_hostname, FLAG_STRING},
        {"on_failure", true, set_on_failure, FLAG_STRING},
        {"owner", true, set_owner, FLAG_STRING},
        {"vm", false, set_vm, FLAG_NONE},
};

static const char *const spec_keys[] = {
        "name",       "type", "cpus",     "memory",     "numa",  "hugepages", "devices", "pids",
        "namespaces", "root", "hostname", "on_failure", "owner", "vm",        NULL,
};
static const char *const spec_text_keys[] = {
        "name", "type", "devices", "namespaces", "root", "hostname", "on_failure", "owner", NULL,
};

static const struct spec_field *find_field(const char *name)
{
        for (size_t i = 0; i < ELEMENTSOF(spec_fields); i++)
                if (STREQ(spec_fields[i].name, name))
                        return &spec_fields[i];
        return NULL;
}

/* The caller puts the key in front: "cpu: unknown field (known: ...)". */
static int unknown_key(struct tessera_error *err, const char *noun, const char *const *known, const char *before)
{
        char list[1024];
        join_names(known, before, list, sizeof(list));
        return tessera_error_set(err, EINVAL, "unknown %s (known: %s)", noun, list);
}

/* ---- spec lifetime ---- */

const char *spec_on_failure_name(enum spec_on_failure f)
{
        switch (f) {
        case ON_FAILURE_KEEP: return "keep";
        case ON_FAILURE_RECLAIM: return "reclaim";
        case ON_FAILURE_RESTART: return "restart";
        }
        return "unknown";
}

void spec_init(struct tessera_spec *s)
{
        memset(s, 0, sizeof(*s));
        s->type = SPEC_NATIVE;
        s->on_failure = ON_FAILURE_KEEP;
}

void spec_done(struct tessera_spec *s)
{
        if (s->cpu_list)
                hwloc_bitmap_free(s->cpu_list);
        if (s->numa)
                hwloc_bitmap_free(s->numa);
        free_devices(s->devices, s->n_devices);
        free(s->root);
        json_decref(s->vm);
        spec_init(s);
}

/* ---- YAML ---- */

/*
 * The reader walks libfyaml's event stream rather than its document tree: every event
 * carries the start mark of its node, collections included, which the tree API of
 * libfyaml 0.7 does not hand out (asking it to "report" a node instead leaks inside it).
 */

#define YAML_DEPTH_MAX 64

struct yaml_pos {
        int line, column; /* 1-based; 0 when libfyaml knows none */
};

struct yaml_pos_list {
        struct yaml_pos *at;
        size_t n, size;
};

struct yaml_reader {
        const char *file;
        const char *text; /* the source, which libfyaml's marks index */
        size_t len;
        struct fy_diag *diag;
        struct fy_parser *parser;
        struct fy_event *event; /* the current event, owned */
        struct yaml_pos bad;    /* where a value that cannot be read is */
        bool syntax_error;      /* the message is complete: FILE:LINE:COLUMN from libfyaml */
};

static void diag_discard(struct fy_diag *diag, void *user, const char *buf, size_t len)
{
        /* lib/ never prints: what matters comes back through the collected errors */
}

static struct fy_diag *diag_new(void)
{
        struct fy_diag_cfg cfg;
        fy_diag_cfg_default(&cfg);
        cfg.fp = NULL;
        cfg.output_fn = diag_discard;
        cfg.level = FYET_ERROR;
        cfg.colorize = false;
        struct fy_diag *diag = fy_diag_create(&cfg);
        if (diag)
                fy_diag_set_collect_errors(diag, true);
        return diag;
}

static void yaml_reader_done(struct yaml_reader *y)
{
        if (y->event)
                fy_parser_event_free(y->parser, y->event);
        if (y->parser)
                fy_parser_destroy(y->parser);
        /* fy_diag_destroy(), not fy_diag_unref(): only destroy frees the collected errors */
        if (y->diag)
                fy_diag_destroy(y->diag);
        memset(y, 0, sizeof(*y));
}

static struct yaml_pos event_pos(struct fy_event *e)
{
        struct yaml_pos pos = {0, 0};
        const struct fy_mark *m = e ? fy_event_start_mark(e) : NULL;
        if (!m || m->line < 0 || m->column < 0)
                return pos;
        pos.line = m->line + 1;
        pos.column = m->column + 1;
        /* a scalar's mark is where its text starts: step back over an opening quote or an alias's '*' */
        enum fy_scalar_style style = e->type == FYET_SCALAR ? fy_token_scalar_style(e->scalar.value) : FYSS_ANY;
        if ((e->type == FYET_ALIAS || style == FYSS_SINGLE_QUOTED || style == FYSS_DOUBLE_QUOTED) && pos.column > 1)
                pos.column--;
        return pos;
}

/* The first error libfyaml collected, as "FILE:LINE:COLUMN: not valid YAML: ..."; 0 when none. */
static int yaml_syntax_error(struct yaml_reader *y, struct tessera_error *err)
{
        void *iter = NULL;
        struct fy_diag_error *e = fy_diag_errors_iterate(y->diag, &iter);
        if (!e || !e->msg)
                return 0;
        return tessera_error_set(err, EINVAL, "%s:%d:%d: not valid YAML: %s", y->file, e->line > 0 ? e->line : 1,
                                 e->column > 0 ? e->column : 1, e->msg);
}

/* Moves to the next event; libfyaml gives none after a syntax error. */
static int yaml_next(struct yaml_reader *y, struct tessera_error *err)
{
        if (y->event)
                fy_parser_event_free(y->parser, y->event);
        y->event = fy_parser_parse(y->parser);
        if (y->event)
                return 0;
        y->syntax_error = true;
        int r = yaml_syntax_error(y, err);
        return r < 0 ? r : tessera_error_set(err, EINVAL, "%s: the YAML text ends early", y->file);
}

static int yaml_fail(struct yaml_reader *y, struct tessera_error *err, int code, const char *msg)
{
        y->bad = event_pos(y->event);
        return tessera_error_set(err, code, "%s", msg);
}

static bool is_yaml_null(const char *s)
{
        return STREQ(s, "") || STREQ(s, "~") || STREQ(s, "null") || STREQ(s, "Null") || STREQ(s, "NULL");
}

/* YAML 1.2 core schema integers, decimal only, in the canonical form so "007" stays text. */
static bool is_canonical_integer(const char *s)
{
        const char *p = s[0] == '-' ? s + 1 : s;
        if (!isdigit((unsigned char)p[0]) || (p[0] == '0' && (p[1] || p != s)))
                return false;
        for (; *p; p++)
                if (!isdigit((unsigned char)*p))
                        return false;
        return true;
}

static bool is_decimal_real(const char *s)
{
        const char *p = s + (s[0] == '-' || s[0] == '+');
        bool digits = false;
        for (; isdigit((unsigned char)*p); p++)
                digits = true;
        if (*p == '.')
                for (p++; isdigit((unsigned char)*p); p++)
                        digits = true;
        if (!digits)
                return false;
        if (*p == 'e' || *p == 'E') {
                p++;
                p += (*p == '-' || *p == '+');
                if (!isdigit((unsigned char)*p))
                        return false;
                while (isdigit((unsigned char)*p))
                        p++;
        }
        return *p == '\0';
}

static json_t *plain_scalar_to_json(const char *s, size_t len)
{
        if (STREQ(s, "true") || STREQ(s, "True") || STREQ(s, "TRUE"))
                return json_true();
        if (STREQ(s, "false") || STREQ(s, "False") || STREQ(s, "FALSE"))
                return json_false();
        if (is_canonical_integer(s)) {
                errno = 0;
                long long v = strtoll(s, NULL, 10);
                if (errno == 0)
                        return json_integer(v);
        } else if (is_decimal_real(s)) {
                json_t *r = json_real(strtod(s, NULL));
                if (r)
                        return r;
        }
        return json_stringn(s, len);
}

static bool is_blank(char c)
{
        return c == ' ' || c == '\t';
}

/*
 * The value of a single-quoted scalar from its source (the text between the quotes): '' is
 * one quote; white space around line breaks goes, one break becomes a space and each empty
 * line a newline.  Done here because libfyaml 0.7.12 leaks when it formats a run of ''.
 */
static char *single_quoted_text(const char *raw, size_t len, size_t *ret_len)
{
        char *out = malloc(len + 1);
        if (!out)
                return NULL;
        size_t o = 0, empty_lines = 0;
        for (size_t i = 0; i <= len;) {
                size_t eol = i;
                while (eol < len && raw[eol] != '\n')
                        eol++;
                bool first = i == 0, last = eol >= len;
                size_t b = i, e = eol;
                if (!last && e > b && raw[e - 1] == '\r')
                        e--;
                while (!first && b < e && is_blank(raw[b]))
                        b++;
                while (!last && e > b && is_blank(raw[e - 1]))
                        e--;
                if (!first && !last && b == e) {
                        empty_lines++;
                } else {
                        if (!first) {
                                if (empty_lines)
                                        memset(out + o, '\n', empty_lines), o += empty_lines;
                                else
                                        out[o++] = ' ';
                                empty_lines = 0;
                        }
                        for (size_t k = b; k < e; k++) {
                                out[o++] = raw[k];
                                if (raw[k] == '\'' && k + 1 < e && raw[k + 1] == '\'')
                                        k++;
                        }
                }
                i = eol + 1;
        }
        out[o] = '\0';
        *ret_len = o;
        return out;
}

/* The text of the current scalar event as a C string; refuses NUL bytes. */
static int scalar_text(struct yaml_reader *y, char **ret, size_t *ret_len, struct tessera_error *err)
{
        struct fy_token *t = y->event->scalar.value;
        const struct fy_mark *start = fy_token_start_mark(t), *end = fy_token_end_mark(t);
        _cleanup_free_ char *s = NULL;
        size_t len = 0;
        if (fy_token_scalar_style(t) == FYSS_SINGLE_QUOTED && start && end && start->input_pos <= end->input_pos &&
            end->input_pos <= y->len) {
                s = single_quoted_text(y->text + start->input_pos, end->input_pos - start->input_pos, &len);
        } else {
                const char *raw = fy_token_get_text(t, &len);
                if (!raw)
                        raw = "", len = 0;
                s = strndup(raw, len);
        }
        if (!s)
                return yaml_fail(y, err, ENOMEM, "out of memory");
        if (strlen(s) != len)
                return yaml_fail(y, err, EINVAL, "the value contains a NUL byte");
        *ret = TAKE_PTR(s);
        *ret_len = len;
        return 0;
}

static int read_scalar(struct yaml_reader *y, bool text, json_t **ret, struct tessera_error *err)
{
        _cleanup_free_ char *s = NULL;
        size_t len;
        int r = scalar_text(y, &s, &len, err);
        if (r < 0)
                return r;
        bool plain = fy_token_scalar_style(y->event->scalar.value) == FYSS_PLAIN;
        json_t *j;
        if (plain && is_yaml_null(s))
                j = json_null();
        else if (plain && !text)
                j = plain_scalar_to_json(s, len);
        else
                j = json_stringn(s, len);
        if (!j)
                return yaml_fail(y, err, EINVAL, "the value is not valid UTF-8");
        *ret = j;
        return 0;
}

static int push_pos(struct yaml_pos_list *l, struct yaml_pos pos)
{
        if (l->n == l->size) {
                size_t size = l->size ? l->size * 2 : 16;
                struct yaml_pos *at = reallocarray(l->at, size, sizeof(*at));
                if (!at)
                        return -ENOMEM;
                l->at = at;
                l->size = size;
        }
        l->at[l->n++] = pos;
        return 0;
}

static void yaml_pos_list_done(struct yaml_pos_list *l)
{
        free(l->at);
}

static int read_node(struct yaml_reader *y, bool text, int depth, json_t **ret, struct yaml_pos_list *items,
                     struct tessera_error *err);

/* From SEQUENCE_START to its SEQUENCE_END; `items` (may be NULL) gets where each item starts. */
static int read_sequence(struct yaml_reader *y, bool text, int depth, json_t **ret, struct yaml_pos_list *items,
                         struct tessera_error *err)
{
        _cleanup_json_ json_t *a = json_array();
        if (!a)
                return yaml_fail(y, err, ENOMEM, "out of memory");
        for (;;) {
                int r = yaml_next(y, err);
                if (r < 0)
                        return r;
                if (y->event->type == FYET_SEQUENCE_END)
                        break;
                if (items && push_pos(items, event_pos(y->event)) < 0)
                        return yaml_fail(y, err, ENOMEM, "out of memory");
                json_t *j;
                r = read_node(y, text, depth + 1, &j, NULL, err);
                if (r < 0)
                        return r;
                if (json_array_append_new(a, j) < 0)
                        return yaml_fail(y, err, ENOMEM, "out of memory");
        }
        *ret = TAKE_PTR(a);
        return 0;
}

/* A key must be plain text: no collection, no alias. */
static int read_key(struct yaml_reader *y, char **ret, struct tessera_error *err)
{
        if (y->event->type != FYET_SCALAR)
                return yaml_fail(y, err, EINVAL, "keys must be plain text (write key: value)");
        size_t len;
        return scalar_text(y, ret, &len, err);
}

/* From MAPPING_START to its MAPPING_END. */
static int read_mapping(struct yaml_reader *y, bool text, int depth, json_t **ret, struct tessera_error *err)
{
        char q[QUOTE_MAX + 4], msg[QUOTE_MAX + 64];
        _cleanup_json_ json_t *o = json_object();
        if (!o)
                return yaml_fail(y, err, ENOMEM, "out of memory");
        for (;;) {
                int r = yaml_next(y, err);
                if (r < 0)
                        return r;
                if (y->event->type == FYET_MAPPING_END)
                        break;
                _cleanup_free_ char *k = NULL;
                r = read_key(y, &k, err);
                if (r < 0)
                        return r;
                if (json_object_get(o, k)) {
                        snprintf(msg, sizeof(msg), "\"%s\" is given twice (give each key once)", quote(k, q));
                        return yaml_fail(y, err, EINVAL, msg);
                }
                json_t *j;
                r = yaml_next(y, err);
                if (r < 0)
                        return r;
                r = read_node(y, text, depth + 1, &j, NULL, err);
                if (r < 0)
                        return r;
                if (json_object_set_new(o, k, j) < 0)
                        return yaml_fail(y, err, EINVAL, "a key is not valid UTF-8");
        }
        *ret = TAKE_PTR(o);
        return 0;
}

/* Reads the node whose first event is the current one into JSON; stops on its last event. */
static int read_node(struct yaml_reader *y, bool text, int depth, json_t **ret, struct yaml_pos_list *items,
                     struct tessera_error *err)
{
        if (depth > YAML_DEPTH_MAX)
                return yaml_fail(y, err, E2BIG, "nested too deeply (at most 64 levels)");
        switch (y->event->type) {
        case FYET_SCALAR: return read_scalar(y, text, ret, err);
        case FYET_SEQUENCE_START: return read_sequence(y, text, depth, ret, items, err);
        case FYET_MAPPING_START: return read_mapping(y, text, depth, ret, err);
        case FYET_ALIAS:
                return yaml_fail(y, err, EINVAL, "anchors and aliases are not supported (write the value out)");
        default: return yaml_fail(y, err, EINVAL, "a value is missing");
        }
}

static bool in_list(const char *const *list, const char *s)
{
        for (size_t i = 0; list && list[i]; i++)
                if (STREQ(list[i], s))
                        return true;
        return false;
}

static int yaml_error_at(struct tessera_error *err, int r, const char *file, struct yaml_pos pos, const char *key)
{
        if (pos.line <= 0)
                pos.line = pos.column = 1;
        if (key) {
                tessera_error_prefix(err, r, "%s:%d:%d: %s", file, pos.line, pos.column, key);
                if (err)
                        snprintf(err->field, sizeof(err->field), "%s", key);
        } else {
                tessera_error_prefix(err, r, "%s:%d:%d", file, pos.line, pos.column);
        }
        return r;
}

/* Length of the UTF-8 sequence at s (at most n bytes), or 0 when it is not valid UTF-8. */
static size_t utf8_sequence(const unsigned char *s, size_t n)
{
        if (s[0] < 0x80)
                return 1;
        size_t len = 0;
        if (s[0] >= 0xc2 && s[0] <= 0xdf)
                len = 2;
        else if (s[0] >= 0xe0 && s[0] <= 0xef)
                len = 3;
        else if (s[0] >= 0xf0 && s[0] <= 0xf4)
                len = 4;
        if (len == 0 || len > n)
                return 0;
        for (size_t i = 1; i < len; i++)
                if ((s[i] & 0xc0) != 0x80)
                        return 0;
        /* no overlong forms, no surrogates, nothing above U+10FFFF */
        if ((s[0] == 0xe0 && s[1] < 0xa0) || (s[0] == 0xed && s[1] > 0x9f) || (s[0] == 0xf0 && s[1] < 0x90) ||
            (s[0] == 0xf4 && s[1] > 0x8f))
                return 0;
        return len;
}

/* The code point of a valid UTF-8 sequence of n bytes. */
static uint32_t utf8_decode(const unsigned char *s, size_t n)
{
        static const unsigned char lead_mask[] = {0, 0x7f, 0x1f, 0x0f, 0x07};
        uint32_t c = s[0] & lead_mask[n];
        for (size_t i = 1; i < n; i++)
                c = (c << 6) | (s[i] & 0x3f);
        return c;
}

/* YAML's printable set (c-printable): tab, line breaks and what is not a control character. */
static bool yaml_printable(uint32_t c)
{
        return c == 0x09 || c == 0x0a || c == 0x0d || (c >= 0x20 && c <= 0x7e) || c == 0x85 ||
               (c >= 0xa0 && c <= 0xd7ff) || (c >= 0xe000 && c <= 0xfffd) || c >= 0x10000;
}

/*
 * YAML text must be printable Unicode, and this reads only UTF-8 without tabs.  Checked
 * before libfyaml sees it, because libfyaml 0.7.12 loops forever on some invalid bytes
 * (a directive such as "%\xf9") and frees memory twice on some tabs ("? a:\t?") and NUL
 * bytes.  Tabs are also what YAML forbids for indentation, so spaces are the rule here.
 */
static int check_text(const char *text, size_t len, const char *file, struct tessera_error *err)
{
        const unsigned char *s = (const unsigned char *)text;
        int line = 1, column = 1;
        for (size_t i = 0; i < len;) {
                size_t n = utf8_sequence(s + i, len - i);
                if (n == 0)
                        return tessera_error_set(err, EILSEQ, "%s:%d:%d: not valid UTF-8 (save the file as UTF-8)",
                                                 file, line, column);
                uint32_t c = utf8_decode(s + i, n);
                if (c == '\t')
                        return tessera_error_set(err, EINVAL,
                                                 "%s:%d:%d: a tab character (indent and separate with spaces; in a "
                                                 "double-quoted string write \\t)",
                                                 file, line, column);
                if (!yaml_printable(c))
                        return tessera_error_set(err, EILSEQ,
                                                 "%s:%d:%d: control character U+%04X (YAML allows only line breaks; "
                                                 "in a double-quoted string use an escape such as \\n)",
                                                 file, line, column, (unsigned)c);
                if (c == '\n')
                        line++, column = 1;
                else
                        column++;
                i += n;
        }
        return 0;
}

/* Checks the text and sets up a parser over it, positioned before the first event. */
static int yaml_open(struct yaml_reader *y, const char *text, size_t len, const char *file, struct tessera_error *err)
{
        y->file = file;
        y->text = text;
        y->len = len;
        if (len > YAML_TEXT_MAX)
                return tessera_error_set(err, EFBIG, "%s: %zu bytes is too large (at most 1 MiB)", file, len);
        int r = check_text(text, len, file, err);
        if (r < 0)
                return r;
        y->diag = diag_new();
        struct fy_parse_cfg cfg = {
                .flags = FYPCF_QUIET | FYPCF_JSON_NONE | FYPCF_DISABLE_RECYCLING,
                .diag = y->diag,
        };
        if (y->diag)
                y->parser = fy_parser_create(&cfg);
        if (!y->parser || fy_parser_set_string(y->parser, text, len) < 0)
                return tessera_error_set(err, ENOMEM, "%s: out of memory", file);
        return 0;
}

/* Reads up to the root node of the one document: *ret_empty when there is none (or it is null). */
static int yaml_start(struct yaml_reader *y, bool *ret_empty, struct tessera_error *err)
{
        int r = yaml_next(y, err);
        if (r >= 0 && y->event->type == FYET_STREAM_START)
                r = yaml_next(y, err);
        if (r < 0)
                return r;
        *ret_empty = y->event->type == FYET_STREAM_END;
        if (*ret_empty)
                return 0;
        if (y->event->type != FYET_DOCUMENT_START)
                return tessera_error_set(err, EINVAL, "%s: not a YAML document", y->file);
        r = yaml_next(y, err);
        if (r < 0)
                return r;
        if (y->event->type == FYET_SCALAR && fy_token_scalar_style(y->event->scalar.value) == FYSS_PLAIN) {
                const char *t = fy_token_get_text0(y->event->scalar.value);
                *ret_empty = !t || is_yaml_null(t);
        }
        return 0;
}

/* After the root node: the document must end, and no second one follow (it would be ignored). */
static int yaml_finish(struct yaml_reader *y, struct tessera_error *err)
{
        int r = yaml_next(y, err);
        if (r >= 0 && y->event->type == FYET_DOCUMENT_END)
                r = yaml_next(y, err);
        if (r < 0)
                return r;
        if (y->event->type == FYET_STREAM_END)
                return 0;
        struct yaml_pos pos = event_pos(y->event);
        if (pos.line <= 0 && yaml_next(y, err) == 0)
                pos = event_pos(y->event);
        tessera_error_set(err, EINVAL, "a second YAML document (keep one per file)");
        return yaml_error_at(err, -EINVAL, y->file, pos, NULL);
}

/* One top-level key, its value the current event: convert it, hand it over, put the place on errors. */
static int yaml_apply_pair(struct yaml_reader *y, const struct spec_yaml_schema *schema, void *userdata,
                           const char *key, struct yaml_pos key_pos, struct spec_locations *locs,
                           struct tessera_error *err)
{
        struct yaml_pos pos = event_pos(y->event);
        if (pos.line <= 0)
                pos = key_pos; /* an empty value has no mark */
        if (locs && locs->n < ELEMENTSOF(locs->at)) {
                struct spec_location *l = &locs->at[locs->n++];
                snprintf(l->field, sizeof(l->field), "%s", key);
                l->line = pos.line;
                l->column = pos.column;
        }
        _cleanup_(yaml_pos_list_done) struct yaml_pos_list items = {0};
        _cleanup_json_ json_t *j = NULL;
        y->bad = (struct yaml_pos){0, 0};
        int r = read_node(y, in_list(schema->text_keys, key), 1, &j, &items, err);
        if (r < 0 && y->syntax_error)
                return r;
        if (r < 0)
                return yaml_error_at(err, r, y->file, y->bad.line > 0 ? y->bad : pos, key);
        int item = -1;
        r = schema->apply(userdata, key, j, &item, err);
        if (r < 0) {
                if (item >= 0 && (size_t)item < items.n && items.at[item].line > 0)
                        pos = items.at[item];
                return yaml_error_at(err, r, y->file, pos, key);
        }
        return 0;
}

int spec_yaml_read(const char *text, size_t len, const char *file_name, const struct spec_yaml_schema *schema,
                   void *userdata, struct spec_locations *locs, struct tessera_error *err)
{
        const char *file = file_name ? file_name : "<input>";
        if (locs) {
                memset(locs, 0, sizeof(*locs));
                snprintf(locs->file, sizeof(locs->file), "%s", file);
        }
        _cleanup_(yaml_reader_done) struct yaml_reader y = {0};
        bool empty;
        int r = yaml_open(&y, text, len, file, err);
        if (r >= 0)
                r = yaml_start(&y, &empty, err);
        if (r < 0)
                return r;
        if (empty) {
                r = y.event->type == FYET_STREAM_END ? 0 : yaml_finish(&y, err);
                if (r < 0 || schema->allow_empty)
                        return r;
                return tessera_error_set(err, ENODATA, "%s: the file is empty (write %s)", file, schema->example);
        }
        if (y.event->type != FYET_MAPPING_START) {
                tessera_error_set(err, EINVAL, "not a mapping of %ss (write %s)", schema->noun, schema->example);
                return yaml_error_at(err, -EINVAL, file, event_pos(y.event), NULL);
        }
        uint64_t seen = 0;
        int seen_line[64] = {0};
        for (;;) {
                r = yaml_next(&y, err);
                if (r < 0)
                        return r;
                if (y.event->type == FYET_MAPPING_END)
                        break;
                struct yaml_pos key_pos = event_pos(y.event);
                _cleanup_free_ char *key = NULL;
                r = read_key(&y, &key, err);
                if (r < 0)
                        return yaml_error_at(err, r, file, key_pos, NULL);
                size_t idx = 0;
                while (schema->keys[idx] && !STREQ(schema->keys[idx], key))
                        idx++;
                if (!schema->keys[idx] || idx >= 64) {
                        unknown_key(err, schema->noun, schema->keys, "");
                        return yaml_error_at(err, -EINVAL, file, key_pos, key);
                }
                if (seen & (1ULL << idx)) {
                        tessera_error_set(err, EINVAL, "given twice (first on line %d; give each %s once)",
                                          seen_line[idx], schema->noun);
                        return yaml_error_at(err, -EINVAL, file, key_pos, key);
                }
                seen |= 1ULL << idx;
                seen_line[idx] = key_pos.line;
                r = yaml_next(&y, err);
                if (r >= 0)
                        r = yaml_apply_pair(&y, schema, userdata, key, key_pos, locs, err);
                if (r < 0)
                        return r;
        }
        return yaml_finish(&y, err);
}

int spec_read_file(const char *path, size_t max, char **ret, size_t *ret_len, struct tessera_error *err)
{
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return tessera_error_set(err, errno, "cannot open `%s`: %s", path, strerror(errno));
        struct stat st;
        if (fstat(fd, &st) < 0)
                return tessera_error_set(err, errno, "cannot stat `%s`: %s", path, strerror(errno));
        if (!S_ISREG(st.st_mode))
                return tessera_error_set(err, EINVAL, "`%s` is not a regular file", path);
        if ((uint64_t)st.st_size > max)
                return tessera_error_set(err, EFBIG, "`%s` is too large (%lld bytes; at most %zu)", path,
                                         (long long)st.st_size, max);
        _cleanup_free_ char *buf = malloc(max + 1);
        if (!buf)
                return tessera_error_set(err, ENOMEM, "out of memory reading `%s`", path);
        size_t off = 0;
        for (;;) {
                /* read one byte past the limit, in case the file grew since fstat */
                ssize_t n = read(fd, buf + off, max + 1 - off);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return tessera_error_set(err, errno, "cannot read `%s`: %s", path, strerror(errno));
                if (n == 0)
                        break;
                off += (size_t)n;
                if (off > max)
                        return tessera_error_set(err, EFBIG, "`%s` is too large (at most %zu bytes)", path, max);
        }
        buf[off] = '\0';
        *ret = TAKE_PTR(buf);
        *ret_len = off;
        return 0;
}

/* ---- spec entry points ---- */

static int spec_apply(void *userdata, const char *key, json_t *value, int *ret_item, struct tessera_error *err)
{
        const struct spec_field *f = find_field(key);
        if (!f)
                return unknown_key(err, "field", spec_keys, "");
        return f->set(userdata, value, ret_item, err);
}

static const struct spec_yaml_schema spec_schema = {
        .keys = spec_keys,
        .text_keys = spec_text_keys,
        .noun = "field",
        .example = "name: sim, cpus: 2, memory: 1G, one per line",
        .allow_empty = false,
        .apply = spec_apply,
};

int spec_parse_string(const char *text, size_t len, const char *file_name, struct tessera_spec *ret,
                      struct spec_locations *locs, struct tessera_error *err)
{
        spec_init(ret);
        int r = spec_yaml_read(text, len, file_name, &spec_schema, ret, locs, err);
        if (r < 0)
                spec_done(ret);
        return r;
}

int spec_parse_file(const char *path, struct tessera_spec *ret, struct spec_locations *locs, struct tessera_error *err)
{
        spec_init(ret);
        if (locs) {
                memset(locs, 0, sizeof(*locs));
                snprintf(locs->file, sizeof(locs->file), "%s", path);
        }
        _cleanup_free_ char *text = NULL;
        size_t len;
        int r = spec_read_file(path, YAML_TEXT_MAX, &text, &len, err);
        if (r < 0)
                return r;
        return spec_parse_string(text, len, path, ret, locs, err);
}

int spec_from_json(json_t *j, struct tessera_spec *ret, struct tessera_error *err)
{
        spec_init(ret);
        if (!json_is_object(j))
                return type_error(err, j, "an object", "a spec is a JSON object such as {\"name\": \"sim\", ...}");
        const char *key;
        size_t key_len;
        json_t *value;
        json_object_keylen_foreach(j, key, key_len, value)
        {
                int item = -1, r;
                if (strlen(key) != key_len)
                        r = tessera_error_set(err, EINVAL, "a key contains a NUL byte (known: name, cpus, ...)");
                else
                        r = spec_apply(ret, key, value, &item, err);
                if (r < 0) {
                        char q[QUOTE_MAX + 4];
                        tessera_error_prefix(err, r, "%s", quote(key, q));
                        /* a key cut short by a NUL byte must not point at a real field */
                        if (err && strlen(key) == key_len)
                                snprintf(err->field, sizeof(err->field), "%s", key);
                        spec_done(ret);
                        return r;
                }
        }
        return 0;
}

/* ---- command-line flags ---- */

static int flag_bool(const char *value, json_t **ret, struct tessera_error *err)
{
        char q[QUOTE_MAX + 4];
        static const char *const yes[] = {"true", "yes", "on", "1"}, *const no[] = {"false", "no", "off", "0"};
        for (size_t i = 0; i < ELEMENTSOF(yes); i++) {
                if (strcasecmp(value, yes[i]) == 0)
                        return *ret = json_true(), 0;
                if (strcasecmp(value, no[i]) == 0)
                        return *ret = json_false(), 0;
        }
        return tessera_error_set(err, EINVAL, "\"%s\" is not true or false (use true, false, yes or no)",
                                 quote(value, q));
}

static int flag_comma_list(const char *value, json_t **ret, struct tessera_error *err)
{
        _cleanup_json_ json_t *a = json_array();
        if (!a)
                return tessera_error_set(err, ENOMEM, "out of memory");
        for (const char *p = value; *value;) {
                const char *end = strchrnul(p, ',');
                if (json_array_append_new(a, json_stringn(p, (size_t)(end - p))) < 0)
                        return tessera_error_set(err, EINVAL, "the value is not valid UTF-8");
                if (!*end)
                        break;
                p = end + 1;
        }
        *ret = TAKE_PTR(a);
        return 0;
}

/* The JSON value a flag's text stands for: "2" for --cpus is a count, "4-5" a list. */
static int flag_to_json(const struct spec_field *f, const char *value, json_t **ret, struct tessera_error *err)
{
        char q[QUOTE_MAX + 4];
        uint64_t n;
        switch (f->flag) {
        case FLAG_COUNT_OR_LIST:
                if (parse_uint64(value, INT64_MAX, &n) == 0) {
                        *ret = json_integer((json_int_t)n);
                        break;
                }
                *ret = json_string(value);
                break;
        case FLAG_INTEGER:
                if (parse_uint64(value, INT64_MAX, &n) < 0)
                        return tessera_error_set(err, EINVAL,
                                                 "\"%s\" is not a number (use a whole number such as 1024)",
                                                 quote(value, q));
                *ret = json_integer((json_int_t)n);
                break;
        case FLAG_BOOL: return flag_bool(value, ret, err);
        case FLAG_COMMA_LIST: return flag_comma_list(value, ret, err);
        case FLAG_NONE:
                return tessera_error_set(err, EINVAL, "cannot be set from the command line (put it in the spec file)");
        case FLAG_STRING:
        case FLAG_APPEND: *ret = json_string(value); break;
        }
        if (!*ret)
                return tessera_error_set(err, EINVAL, "the value is not valid UTF-8");
        return 0;
}

static int append_device(struct tessera_spec *s, const char *id, struct tessera_error *err)
{
        int r = check_new_device(s->devices, s->n_devices, id, err);
        if (r < 0)
                return r;
        char *copy = strdup(id);
        if (!copy)
                return tessera_error_set(err, ENOMEM, "out of memory");
        s->devices[s->n_devices++] = copy;
        return 0;
}

static int set_field_from_flag(struct tessera_spec *s, const struct spec_field *f, const char *value,
                               struct tessera_error *err)
{
        _cleanup_json_ json_t *j = NULL;
        int r = flag_to_json(f, value, &j, err);
        if (r < 0)
                return r;
        if (f->flag == FLAG_APPEND)
                return append_device(s, value, err);
        int item = -1;
        return f->set(s, j, &item, err);
}

int spec_set_field(struct tessera_spec *s, const char *field, const char *value, struct tessera_error *err)
{
        char name[32], flag[40];
        const char *p = field;
        if (strncmp(p, "--", 2) == 0)
                p += 2;
        size_t i = 0;
        for (; p[i] && i + 1 < sizeof(name); i++)
                name[i] = p[i] == '-' ? '_' : p[i];
        name[i] = '\0';
        snprintf(flag, sizeof(flag), "--%s", p);
        for (char *c = flag; *c; c++)
                if (*c == '_')
                        *c = '-';
        const struct spec_field *f = p[i] ? NULL : find_field(name);
        int r = 0;
        if (!f) {
                static const char *const flags[] = {
                        "name", "type",       "cpus", "memory",   "numa",       "hugepages", "device",
                        "pids", "namespaces", "root", "hostname", "on-failure", "owner",     NULL,
                };
                /* --device adds one device; the spec field is `devices` */
                if (STREQ(name, "device"))
                        f = find_field("devices");
                else
                        r = unknown_key(err, "option", flags, "--");
        }
        if (f)
                r = value ? set_field_from_flag(s, f, value, err)
                          : tessera_error_set(err, EINVAL, "needs a value (e.g. %s VALUE)", flag);
        if (r < 0) {
                tessera_error_prefix(err, r, "%s", flag);
                if (err)
                        snprintf(err->field, sizeof(err->field), "%s", f ? f->name : name);
        }
        return r;
}

/* ---- the whole spec ---- */

int spec_validate(const struct tessera_spec *s, struct tessera_error *err)
{
        if (!s->name[0])
                return tessera_error_field(err, EINVAL, "name",
                                           "name: missing (every enclave needs one, e.g. name: sim)");
        if (!name_is_valid(s->name))
                return tessera_error_field(err, EINVAL, "name", "name: \"%s\" is not a valid name", s->name);
        if (s->cpu_count == 0 && !s->cpu_list)
                return tessera_error_field(err, EINVAL, "cpus",
                                           "cpus: missing (give a count such as 2, or a list such as \"4-5\")");
        if (s->cpu_count && s->cpu_list)
                return tessera_error_field(err, EINVAL, "cpus", "cpus: both a count and a list (give one of them)");
        if (s->cpu_list && hwloc_bitmap_iszero(s->cpu_list))
                return tessera_error_field(err, EINVAL, "cpus", "cpus: the list is empty (give at least one core)");
        if (s->memory_bytes == 0)
                return tessera_error_field(err, EINVAL, "memory", "memory: missing (give a size such as 1G)");
        if (s->numa && hwloc_bitmap_iszero(s->numa))
                return tessera_error_field(err, EINVAL, "numa",
                                           "numa: the list is empty (give a node or leave numa out)");
        if (s->n_devices > SPEC_MAX_DEVICES)
                return tessera_error_field(err, E2BIG, "devices", "devices: more than %d", SPEC_MAX_DEVICES);
        if (s->vm && s->type != SPEC_VM)
                return tessera_error_field(err, EINVAL, "vm",
                                           "vm: settings for a native enclave (set type: vm, or drop vm:)");
        return 0;
}

void spec_locate_error(const struct spec_locations *locs, struct tessera_error *err)
{
        if (!locs || !err || !err->field[0])
                return;
        size_t flen = strlen(locs->file);
        if (flen && strncmp(err->msg, locs->file, flen) == 0 && err->msg[flen] == ':')
                return; /* located already */
        for (size_t i = 0; i < locs->n && i < ELEMENTSOF(locs->at); i++) {
                const struct spec_location *l = &locs->at[i];
                if (STREQ(l->field, err->field)) {
                        tessera_error_prefix(err, -err->code, "%s:%d:%d", locs->file, l->line, l->column);
                        return;
                }
        }
}

/* ---- to JSON ---- */

static json_t *bitmap_to_array(hwloc_const_bitmap_t set)
{
        json_t *a = json_array();
        if (!a)
                return NULL;
        int i;
        hwloc_bitmap_foreach_begin(i, set)
        {
                if (json_array_append_new(a, json_integer(i)) < 0) {
                        json_decref(a);
                        return NULL;
                }
        }
        hwloc_bitmap_foreach_end();
        return a;
}

static json_t *strings_to_array(char *const *strings, size_t n)
{
        json_t *a = json_array();
        for (size_t i = 0; a && i < n; i++)
                if (json_array_append_new(a, json_string(strings[i])) < 0) {
                        json_decref(a);
                        return NULL;
                }
        return a;
}

static json_t *cpus_to_json(const struct tessera_spec *s)
{
        if (!s->cpu_list)
                return json_integer(s->cpu_count);
        _cleanup_free_ char *list = NULL;
        if (hwloc_bitmap_list_asprintf(&list, s->cpu_list) < 0)
                return NULL;
        return json_string(list);
}

static json_t *namespaces_to_json(unsigned ns)
{
        json_t *a = json_array();
        if (a && (ns & SPEC_NS_NET) && json_array_append_new(a, json_string("net")) < 0)
                goto fail;
        if (a && (ns & SPEC_NS_USER) && json_array_append_new(a, json_string("user")) < 0)
                goto fail;
        return a;
fail:
        json_decref(a);
        return NULL;
}

json_t *spec_to_json(const struct tessera_spec *s)
{
        _cleanup_json_ json_t *o = json_object();
        if (!o)
                return NULL;
        /* json_object_set_new() takes (and drops) the value even when it fails, so a NULL from
         * an allocation that failed only needs to be counted */
        int bad = 0;
        if (s->name[0])
                bad |= json_object_set_new(o, "name", json_string(s->name));
        bad |= json_object_set_new(o, "type", json_string(s->type == SPEC_VM ? "vm" : "native"));
        if (s->cpu_count || s->cpu_list)
                bad |= json_object_set_new(o, "cpus", cpus_to_json(s));
        if (s->memory_bytes)
                bad |= json_object_set_new(o, "memory", json_integer((json_int_t)s->memory_bytes));
        if (s->numa)
                bad |= json_object_set_new(o, "numa", bitmap_to_array(s->numa));
        bad |= json_object_set_new(o, "hugepages", json_boolean(s->hugepages));
        if (s->n_devices)
                bad |= json_object_set_new(o, "devices", strings_to_array(s->devices, s->n_devices));
        if (s->pids_max)
                bad |= json_object_set_new(o, "pids", json_integer((json_int_t)s->pids_max));
        if (s->namespaces)
                bad |= json_object_set_new(o, "namespaces", namespaces_to_json(s->namespaces));
        if (s->root)
                bad |= json_object_set_new(o, "root", image_ref_to_json(s->root));
        if (s->hostname[0])
                bad |= json_object_set_new(o, "hostname", json_string(s->hostname));
        bad |= json_object_set_new(o, "on_failure", json_string(spec_on_failure_name(s->on_failure)));
        if (s->owner[0])
                bad |= json_object_set_new(o, "owner", json_string(s->owner));
        if (s->vm)
                bad |= json_object_set_new(o, "vm", json_deep_copy(s->vm));
        if (bad)
                return NULL;
        return TAKE_PTR(o);
}
