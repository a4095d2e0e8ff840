/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * tesserad's configuration.  The file is read with the spec parser's YAML walker (same
 * "FILE:LINE:COLUMN: KEY: ..." messages), and the file, the flags and config_validate all
 * go through one setter per key, so a value is judged the same way wherever it came from.
 */
#include <errno.h>
#include <string.h>
#include <sys/un.h>

#include "config.h"
#include "fault.h"
#include "spec.h"
#include "util.h"

#define CONFIG_FILE_MAX (1u << 20)
#define HOST_NODE_MAX   1023u        /* the kernel's largest MAX_NUMNODES - 1 */
#define BLOCK_SIZE_MIN  (2ULL << 20) /* one 2 MiB huge page */
#define BLOCK_SIZE_MAX  (64ULL << 30)
#define SHOW_MAX        48

/* A value for a message: bounded, control characters as '?'. */
static const char *show(const char *s, char buf[static SHOW_MAX + 4])
{
        size_t i = 0;
        for (; s[i] && i < SHOW_MAX; i++)
                buf[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
        if (s[i])
                memcpy(buf + i, "...", 3), i += 3;
        buf[i] = '\0';
        return buf;
}

static const char *json_kind(const json_t *v)
{
        switch (json_typeof(v)) {
        case JSON_OBJECT: return "a mapping";
        case JSON_ARRAY: return "a list";
        case JSON_STRING: return "a string";
        case JSON_INTEGER:
        case JSON_REAL: return "a number";
        case JSON_TRUE:
        case JSON_FALSE: return "a boolean";
        default: return "no value";
        }
}

static int get_text(const json_t *v, const char *hint, const char **ret, struct tessera_error *err)
{
        if (!json_is_string(v))
                return tessera_error_set(err, EINVAL, "%s where text is expected (%s)", json_kind(v), hint);
        const char *s = json_string_value(v);
        if (strlen(s) != json_string_length(v))
                return tessera_error_set(err, EINVAL, "the value contains a NUL byte (%s)", hint);
        *ret = s;
        return 0;
}

static bool has_dotdot(const char *path)
{
        for (const char *p = path; (p = strstr(p, "..")); p += 2)
                if ((p == path || p[-1] == '/') && (p[2] == '\0' || p[2] == '/'))
                        return true;
        return false;
}

/* An absolute path without ".." that fits `size` (with its NUL); "" only when allowed. */
static int set_path(char *buf, size_t size, const json_t *v, bool allow_empty, const char *hint,
                    struct tessera_error *err)
{
        char q[SHOW_MAX + 4];
        const char *path;
        int r = get_text(v, hint, &path, err);
        if (r < 0)
                return r;
        if (path[0] == '\0' && !allow_empty)
                return tessera_error_set(err, EINVAL, "empty (%s)", hint);
        if (path[0] && path[0] != '/')
                return tessera_error_set(err, EINVAL, "\"%s\" is not an absolute path (%s)", show(path, q), hint);
        if (has_dotdot(path))
                return tessera_error_set(err, EINVAL, "\"%s\" has a \"..\" component (%s)", show(path, q), hint);
        if (strlen(path) >= size)
                return tessera_error_set(err, ENAMETOOLONG, "\"%s\" is too long (at most %zu characters)",
                                         show(path, q), size - 1);
        snprintf(buf, size, "%s", path);
        return 0;
}

static int set_state_dir(struct tessera_config *c, const json_t *v, int *ret_item, struct tessera_error *err)
{
        return set_path(c->state_dir, sizeof(c->state_dir), v, false, "use an absolute path such as /var/lib/tessera",
                        err);
}

static int set_socket(struct tessera_config *c, const json_t *v, int *ret_item, struct tessera_error *err)
{
        /* a unix socket path must fit sun_path */
        char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
        int r = set_path(path, sizeof(path), v, false, "use an absolute path such as " TESSERA_DEFAULT_SOCKET, err);
        if (r < 0)
                return r;
        snprintf(c->socket, sizeof(c->socket), "%s", path);
        return 0;
}

static int set_topology(struct tessera_config *c, const json_t *v, int *ret_item, struct tessera_error *err)
{
        return set_path(c->topology, sizeof(c->topology), v, true,
                        "use the absolute path of an hwloc XML file, or \"\" for this machine", err);
}

static int set_supervisor(struct tessera_config *c, const json_t *v, int *ret_item, struct tessera_error *err)
{
        return set_path(c->supervisor, sizeof(c->supervisor), v, true,
                        "use the absolute path of tessera-supervisor, or \"\" to find it next to tesserad", err);
}

static int set_cgroup_root(struct tessera_config *c, const json_t *v, int *ret_item, struct tessera_error *err)
{
        static const char hint[] = "use names such as tessera or tessera/nodes, without a leading '/'";
        char q[SHOW_MAX + 4], part[128];
        const char *s;
        int r = get_text(v, hint, &s, err);
        if (r < 0)
                return r;
        if (strlen(s) >= sizeof(c->cgroup_root))
                return tessera_error_set(err, ENAMETOOLONG, "\"%s\" is too long (at most %zu characters)", show(s, q),
                                         sizeof(c->cgroup_root) - 1);
        /* every '/'-separated part is a plain name: no "", ".", ".." or leading '/' */
        for (const char *p = s;;) {
                const char *end = strchrnul(p, '/');
                snprintf(part, sizeof(part), "%.*s", (int)(end - p), p);
                if (!name_is_valid(part) || STREQ(part, "..") || STREQ(part, "."))
                        return tessera_error_set(err, EINVAL, "\"%s\" is not a cgroup path (%s)", show(s, q), hint);
                if (!*end)
                        break;
                p = end + 1;
        }
        snprintf(c->cgroup_root, sizeof(c->cgroup_root), "%s", s);
        return 0;
}

static int set_host_cpus(struct tessera_config *c, const json_t *v, int *ret_item, struct tessera_error *err)
{
        char q[SHOW_MAX + 4];
        const char *s;
        int r = get_text(v, "use a list of cores such as \"0\" or \"0-1,4\", or \"\" to keep none", &s, err);
        if (r < 0)
                return r;
        hwloc_bitmap_t set;
        r = spec_parse_cpulist(s, 8191, &set, err);
        if (r < 0)
                return r;
        hwloc_bitmap_free(set);
        if (strlen(s) >= sizeof(c->host_cpus))
                return tessera_error_set(err, ENAMETOOLONG, "\"%s\" is too long (at most %zu characters)", show(s, q),
                                         sizeof(c->host_cpus) - 1);
        snprintf(c->host_cpus, sizeof(c->host_cpus), "%s", s);
        return 0;
}

/*
 * "1G" (every node) or "0:1G,1:512M" (those nodes; the others keep nothing).  `nodes` may be
 * NULL to only check; n_nodes bounds the node numbers.
 */
static int host_memory_parse(const char *s, uint64_t *nodes, size_t n_nodes, struct tessera_error *err)
{
        static const char hint[] = "use a size per node such as 1G, or sizes by node such as \"0:1G,1:512M\"";
        char q[SHOW_MAX + 4], item[64];
        uint64_t bytes, node, seen[(HOST_NODE_MAX + 1) / 64] = {0};
        if (!strchr(s, ':')) {
                if (parse_size(s, &bytes) < 0)
                        return tessera_error_set(err, EINVAL, "\"%s\" is not a size (%s)", show(s, q), hint);
                for (size_t i = 0; nodes && i < n_nodes; i++)
                        nodes[i] = bytes;
                return 0;
        }
        for (size_t i = 0; nodes && i < n_nodes; i++)
                nodes[i] = 0;
        for (const char *p = s;;) {
                const char *end = strchrnul(p, ',');
                snprintf(item, sizeof(item), "%.*s", (int)(end - p), p);
                char *colon = strchr(item, ':');
                if (colon)
                        *colon = '\0';
                if (!colon || parse_uint64(item, HOST_NODE_MAX, &node) < 0 || parse_size(colon + 1, &bytes) < 0)
                        return tessera_error_set(err, EINVAL, "\"%s\" is not a list of NODE:SIZE (%s)", show(s, q),
                                                 hint);
                if (node >= n_nodes)
                        return tessera_error_set(err, ENOENT,
                                                 "node %llu does not exist (this machine has nodes 0 to %zu)",
                                                 (unsigned long long)node, n_nodes - 1);
                if (seen[node / 64] & (1ULL << (node % 64)))
                        return tessera_error_set(err, EINVAL, "node %llu is given twice (give each node once)",
                                                 (unsigned long long)node);
                seen[node / 64] |= 1ULL << (node % 64);
                if (nodes)
                        nodes[node] = bytes;
                if (!*end)
                        break;
                p = end + 1;
        }
        return 0;
}

static int set_host_memory(struct tessera_config *c, const json_t *v, int *ret_item, struct tessera_error *err)
{
        char q[SHOW_MAX + 4];
        const char *s;
        int r = get_text(v, "use a size such as 1G, or \"0:1G,1:512M\"", &s, err);
        if (r < 0)
                return r;
        if (strlen(s) >= sizeof(c->host_memory))
                return tessera_error_set(err, ENAMETOOLONG, "\"%s\" is too long (at most %zu characters)", show(s, q),
                                         sizeof(c->host_memory) - 1);
        r = host_memory_parse(s, NULL, HOST_NODE_MAX + 1, err);
        if (r < 0)
                return r;
        snprintf(c->host_memory, sizeof(c->host_memory), "%s", s);
        return 0;
}

static int set_block_size(struct tessera_config *c, const json_t *v, int *ret_item, struct tessera_error *err)
{
        static const char hint[] = "use a power of two multiple of 2M, from 2M to 64G, such as 128M";
        char q[SHOW_MAX + 4];
        const char *s;
        uint64_t bytes;
        int r = get_text(v, hint, &s, err);
        if (r < 0)
                return r;
        if (parse_size(s, &bytes) < 0)
                return tessera_error_set(err, EINVAL, "\"%s\" is not a size (use K, M, G, T)", show(s, q));
        if (bytes < BLOCK_SIZE_MIN || bytes > BLOCK_SIZE_MAX || (bytes & (bytes - 1)))
                return tessera_error_set(err, EINVAL, "\"%s\" is not a block size (%s)", show(s, q), hint);
        c->block_size = bytes;
        return 0;
}

/* Appends one device id to a comma list kept in buf. */
static int add_host_device(char *buf, size_t size, const char *id, struct tessera_error *err)
{
        int r = spec_check_device(id, err);
        if (r < 0)
                return r;
        size_t used = strlen(buf);
        if (used + strlen(id) + 2 > size)
                return tessera_error_set(err, ENAMETOOLONG, "the list is too long (at most %zu characters)", size - 1);
        snprintf(buf + used, size - used, "%s%s", used ? "," : "", id);
        return 0;
}

static int set_host_devices(struct tessera_config *c, const json_t *v, int *ret_item, struct tessera_error *err)
{
        static const char hint[] = "use a list such as [eth0, 0000:00:03.0] or a comma list";
        char list[sizeof(c->host_devices)] = "", id[sizeof(c->host_devices)];
        const char *s;
        int r;
        if (json_is_array(v)) {
                for (size_t i = 0; i < json_array_size(v); i++) {
                        r = get_text(json_array_get(v, i), hint, &s, err);
                        if (r >= 0)
                                r = add_host_device(list, sizeof(list), s, err);
                        if (r < 0) {
                                *ret_item = (int)i;
                                return r;
                        }
                }
        } else {
                r = get_text(v, hint, &s, err);
                if (r < 0)
                        return r;
                for (const char *p = s; *s;) {
                        const char *end = strchrnul(p, ',');
                        if ((size_t)(end - p) >= sizeof(id))
                                return tessera_error_set(err, ENAMETOOLONG,
                                                         "the list is too long (at most %zu characters)",
                                                         sizeof(list) - 1);
                        snprintf(id, sizeof(id), "%.*s", (int)(end - p), p);
                        r = add_host_device(list, sizeof(list), id, err);
                        if (r < 0)
                                return r;
                        if (!*end)
                                break;
                        p = end + 1;
                }
        }
        snprintf(c->host_devices, sizeof(c->host_devices), "%s", list);
        return 0;
}

static int set_sync(struct tessera_config *c, const json_t *v, int *ret_item, struct tessera_error *err)
{
        static const char hint[] = "use full (survives power loss) or normal (survives a daemon crash)";
        char q[SHOW_MAX + 4];
        const char *s;
        int r = get_text(v, hint, &s, err);
        if (r < 0)
                return r;
        if (STREQ(s, "full"))
                c->sync_full = true;
        else if (STREQ(s, "normal"))
                c->sync_full = false;
        else
                return tessera_error_set(err, EINVAL, "\"%s\" is not a sync mode (%s)", show(s, q), hint);
        return 0;
}

static int set_fault(struct tessera_config *c, const json_t *v, int *ret_item, struct tessera_error *err)
{
        static const char hint[] = "use the name of a fault-injection point, or \"\" for none";
        char q[SHOW_MAX + 4];
        const char *s;
        int r = get_text(v, hint, &s, err);
        if (r < 0)
                return r;
        if (s[0] && fault_arm(s, NULL) < 0)
                return tessera_error_set(err, EINVAL, "\"%s\" is not a fault point name (%s)", show(s, q), hint);
        snprintf(c->fault, sizeof(c->fault), "%s", s);
        return 0;
}

struct config_key {
        const char *name;
        int (*set)(struct tessera_config *c, const json_t *v, int *ret_item, struct tessera_error *err);
};

static const struct config_key config_keys[] = {
        {"state_dir", set_state_dir},
        {"socket", set_socket},
        {"cgroup_root", set_cgroup_root},
        {"host_cpus", set_host_cpus},
        {"host_memory", set_host_memory},
        {"block_size", set_block_size},
        {"topology", set_topology},
        {"host_devices", set_host_devices},
        {"sync", set_sync},
        {"supervisor", set_supervisor},
        {"fault", set_fault},
};

static const char *const config_key_names[] = {
        "state_dir", "socket",       "cgroup_root", "host_cpus",  "host_memory", "block_size",
        "topology",  "host_devices", "sync",        "supervisor", "fault",       NULL,
};

static const struct config_key *find_key(const char *name)
{
        for (size_t i = 0; i < ELEMENTSOF(config_keys); i++)
                if (STREQ(config_keys[i].name, name))
                        return &config_keys[i];
        return NULL;
}

static int config_apply(void *userdata, const char *key, json_t *value, int *ret_item, struct tessera_error *err)
{
        const struct config_key *k = find_key(key);
        if (!k)
                return tessera_error_set(err, EINVAL, "unknown key");
        return k->set(userdata, value, ret_item, err);
}

void config_init(struct tessera_config *c)
{
        memset(c, 0, sizeof(*c));
        snprintf(c->state_dir, sizeof(c->state_dir), "/var/lib/tessera");
        snprintf(c->socket, sizeof(c->socket), "%s", TESSERA_DEFAULT_SOCKET);
        snprintf(c->cgroup_root, sizeof(c->cgroup_root), "tessera");
        snprintf(c->host_cpus, sizeof(c->host_cpus), "0");
        snprintf(c->host_memory, sizeof(c->host_memory), "1G");
        c->block_size = 128ULL << 20;
        c->sync_full = true;
}

int config_load_string(struct tessera_config *c, const char *text, size_t len, const char *file_name,
                       struct tessera_error *err)
{
        /* every scalar stays text: `host_cpus: 0` is the list "0", not a number */
        static const struct spec_yaml_schema schema = {
                .keys = config_key_names,
                .text_keys = config_key_names,
                .noun = "key",
                .example = "state_dir: /var/lib/tessera, block_size: 128M, one per line",
                .allow_empty = true,
                .apply = config_apply,
        };
        return spec_yaml_read(text, len, file_name, &schema, c, NULL, err);
}

int config_load_file(struct tessera_config *c, const char *path, struct tessera_error *err)
{
        _cleanup_free_ char *text = NULL;
        size_t len;
        int r = spec_read_file(path, CONFIG_FILE_MAX, &text, &len, err);
        if (r < 0)
                return r;
        return config_load_string(c, text, len, path, err);
}

int config_set(struct tessera_config *c, const char *key, const char *value, struct tessera_error *err)
{
        char name[32], flag[40];
        const char *p = strncmp(key, "--", 2) == 0 ? key + 2 : key;
        size_t i = 0;
        for (; p[i] && i + 1 < sizeof(name); i++)
                name[i] = p[i] == '-' ? '_' : p[i];
        name[i] = '\0';
        snprintf(flag, sizeof(flag), "--%s", name);
        for (char *f = flag; *f; f++)
                if (*f == '_')
                        *f = '-';
        const struct config_key *k = p[i] ? NULL : find_key(name);
        int r;
        if (!k) {
                char known[512];
                size_t off = 0;
                for (size_t j = 0; j < ELEMENTSOF(config_keys) && off < sizeof(known); j++) {
                        int w = snprintf(known + off, sizeof(known) - off, "%s--%s", j ? ", " : "",
                                         config_keys[j].name);
                        off += w > 0 ? (size_t)w : 0;
                }
                for (char *f = known; *f; f++)
                        if (*f == '_')
                                *f = '-';
                r = tessera_error_set(err, EINVAL, "unknown option (known: %s)", known);
        } else if (!value) {
                r = tessera_error_set(err, EINVAL, "needs a value (e.g. %s VALUE)", flag);
        } else {
                json_t *j = json_string(value);
                int item = -1;
                r = j ? k->set(c, j, &item, err) : tessera_error_set(err, EINVAL, "the value is not valid UTF-8");
                json_decref(j);
        }
        if (r < 0) {
                tessera_error_prefix(err, r, "%s", flag);
                if (err)
                        snprintf(err->field, sizeof(err->field), "%s", name);
        }
        return r;
}

/* A key's current value as the text a file would hold. */
static json_t *config_value(const struct tessera_config *c, const char *key)
{
        char buf[32];
        if (STREQ(key, "state_dir"))
                return json_string(c->state_dir);
        if (STREQ(key, "socket"))
                return json_string(c->socket);
        if (STREQ(key, "cgroup_root"))
                return json_string(c->cgroup_root);
        if (STREQ(key, "host_cpus"))
                return json_string(c->host_cpus);
        if (STREQ(key, "host_memory"))
                return json_string(c->host_memory);
        if (STREQ(key, "block_size")) {
                snprintf(buf, sizeof(buf), "%llu", (unsigned long long)c->block_size);
                return json_string(buf);
        }
        if (STREQ(key, "topology"))
                return json_string(c->topology);
        if (STREQ(key, "host_devices"))
                return json_string(c->host_devices);
        if (STREQ(key, "sync"))
                return json_string(c->sync_full ? "full" : "normal");
        if (STREQ(key, "supervisor"))
                return json_string(c->supervisor);
        if (STREQ(key, "fault"))
                return json_string(c->fault);
        return NULL;
}

int config_validate(const struct tessera_config *c, struct tessera_error *err)
{
        _cleanup_free_ struct tessera_config *scratch = malloc(sizeof(*scratch));
        if (!scratch)
                return tessera_error_set(err, ENOMEM, "out of memory");
        config_init(scratch);
        for (size_t i = 0; i < ELEMENTSOF(config_keys); i++) {
                const char *key = config_keys[i].name;
                json_t *v = config_value(c, key);
                int item = -1;
                /* a string field that lost its NUL would come back NULL (not valid UTF-8) */
                int r = v ? config_keys[i].set(scratch, v, &item, err)
                          : tessera_error_set(err, EINVAL, "not valid text");
                json_decref(v);
                if (r < 0) {
                        tessera_error_prefix(err, r, "%s", key);
                        if (err)
                                snprintf(err->field, sizeof(err->field), "%s", key);
                        return r;
                }
        }
        return 0;
}

int config_host_memory(const struct tessera_config *c, uint64_t *nodes, size_t n_nodes, struct tessera_error *err)
{
        if (n_nodes == 0)
                return tessera_error_field(err, EINVAL, "host_memory", "host_memory: no NUMA nodes to keep memory on");
        int r = host_memory_parse(c->host_memory, nodes, n_nodes, err);
        if (r < 0) {
                tessera_error_prefix(err, r, "host_memory");
                if (err)
                        snprintf(err->field, sizeof(err->field), "host_memory");
        }
        return r;
}
