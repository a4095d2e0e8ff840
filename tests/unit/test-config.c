/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* tesserad's configuration: defaults, the YAML file with exact error places, flags, checks. */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include "config.h"
#include "tap.h"
#include "util.h"

static bool starts(const char *s, const char *prefix)
{
        return strncmp(s, prefix, strlen(prefix)) == 0;
}

static int load(struct tessera_config *c, const char *yaml, struct tessera_error *err)
{
        config_init(c);
        return config_load_string(c, yaml, strlen(yaml), "t.yaml", err);
}

static void test_defaults(void)
{
        struct tessera_config c;
        struct tessera_error err = {0};
        config_init(&c);
        ok(STREQ(c.state_dir, "/var/lib/tessera") && STREQ(c.socket, "/run/tessera/tessera.sock") &&
                   STREQ(c.cgroup_root, "tessera") && STREQ(c.host_cpus, "0") && STREQ(c.host_memory, "1G") &&
                   c.block_size == 128ULL << 20 && !c.topology[0] && !c.host_devices[0] && c.sync_full &&
                   !c.supervisor[0] && !c.fault[0],
           "defaults");
        ok(config_validate(&c, &err) == 0, "the defaults are valid (%s)", err.msg);
        ok(load(&c, "", &err) == 0 && c.block_size == 128ULL << 20, "an empty file keeps the defaults (%s)", err.msg);
        ok(load(&c, "# all commented out\n# block_size: 2M\n", &err) == 0 && c.block_size == 128ULL << 20,
           "a file of comments keeps the defaults");
}

static void test_good(void)
{
        struct tessera_config c;
        struct tessera_error err = {0};
        const char *full = "state_dir: /srv/tessera/state\n"
                           "socket: /run/t.sock\n"
                           "cgroup_root: tessera/test\n"
                           "host_cpus: 0-1\n"
                           "host_memory: \"0:1G,1:512M\"\n"
                           "block_size: 2M\n"
                           "topology: /usr/share/topo.xml\n"
                           "host_devices: [eth0, 0000:00:03.0, /dev/sda]\n"
                           "sync: normal\n"
                           "supervisor: /usr/libexec/tessera-supervisor\n"
                           "fault: create:recorded\n";
        int r = load(&c, full, &err);
        ok(r == 0, "every key (%s)", r ? err.msg : "");
        ok(STREQ(c.state_dir, "/srv/tessera/state") && STREQ(c.socket, "/run/t.sock") &&
                   STREQ(c.cgroup_root, "tessera/test") && STREQ(c.host_cpus, "0-1") &&
                   STREQ(c.host_memory, "0:1G,1:512M") && c.block_size == 2ULL << 20 &&
                   STREQ(c.topology, "/usr/share/topo.xml") && STREQ(c.host_devices, "eth0,0000:00:03.0,/dev/sda") &&
                   !c.sync_full && STREQ(c.supervisor, "/usr/libexec/tessera-supervisor") &&
                   STREQ(c.fault, "create:recorded"),
           "every key is read");
        ok(config_validate(&c, &err) == 0, "and is valid (%s)", err.msg);
        ok(load(&c, "host_cpus: 0\n", &err) == 0 && STREQ(c.host_cpus, "0"), "host_cpus: 0 is the list \"0\"");
        ok(load(&c, "host_cpus: \"\"\n", &err) == 0 && STREQ(c.host_cpus, ""), "host_cpus: \"\" keeps no core");
        ok(load(&c, "block_size: 134217728\n", &err) == 0 && c.block_size == 128ULL << 20, "block_size in bytes");
        ok(load(&c, "block_size: 1G\n", &err) == 0 && c.block_size == 1ULL << 30, "block_size 1G");
        ok(load(&c, "host_devices: eth0,eth1\n", &err) == 0 && STREQ(c.host_devices, "eth0,eth1"),
           "host_devices as a comma string");
        ok(load(&c, "host_devices: []\n", &err) == 0 && STREQ(c.host_devices, ""), "host_devices empty");
        ok(load(&c, "sync: full\n", &err) == 0 && c.sync_full, "sync: full");
        ok(load(&c, "topology: \"\"\nsupervisor: ''\n", &err) == 0 && !c.topology[0] && !c.supervisor[0],
           "empty topology and supervisor");
}

struct bad_case {
        const char *yaml, *want, *field;
};

static const struct bad_case bad_cases[] = {
        {"block_size: 3M\n", "t.yaml:1:13: block_size: \"3M\" is not a block size (use a power of two multiple of 2M",
         "block_size"},
        {"block_size: 1M\n", "t.yaml:1:13: block_size: \"1M\" is not a block size", "block_size"},
        {"block_size: 128G\n", "t.yaml:1:13: block_size: \"128G\" is not a block size", "block_size"},
        {"block_size: 4X\n", "t.yaml:1:13: block_size: \"4X\" is not a size (use K, M, G, T)", "block_size"},
        {"block_size: [2M]\n", "t.yaml:1:13: block_size: a list where text is expected", "block_size"},
        {"syncc: full\n",
         "t.yaml:1:1: syncc: unknown key (known: state_dir, socket, cgroup_root, host_cpus, "
         "host_memory, block_size, topology, host_devices, sync, supervisor, fault)",
         "syncc"},
        {"sync: fast\n", "t.yaml:1:7: sync: \"fast\" is not a sync mode (use full", "sync"},
        {"sync: true\n", "t.yaml:1:7: sync: \"true\" is not a sync mode", "sync"},
        {"state_dir: relative\n", "t.yaml:1:12: state_dir: \"relative\" is not an absolute path", "state_dir"},
        {"state_dir: /a/../b\n", "t.yaml:1:12: state_dir: \"/a/../b\" has a \"..\" component", "state_dir"},
        {"state_dir:\n", "t.yaml:1:1: state_dir: no value where text is expected", "state_dir"},
        {"socket: "
         "/run/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.sock\n",
         "t.yaml:1:9: socket: \"/run/aaaa", "socket"},
        {"cgroup_root: /tessera\n", "t.yaml:1:14: cgroup_root: \"/tessera\" is not a cgroup path", "cgroup_root"},
        {"cgroup_root: a/../b\n", "t.yaml:1:14: cgroup_root: \"a/../b\" is not a cgroup path", "cgroup_root"},
        {"cgroup_root: \"\"\n", "t.yaml:1:14: cgroup_root: \"\" is not a cgroup path", "cgroup_root"},
        {"host_cpus: 5-4\n", "t.yaml:1:12: host_cpus: \"5-4\": the range 5-4 runs backwards", "host_cpus"},
        {"host_cpus: [0]\n", "t.yaml:1:12: host_cpus: a list where text is expected", "host_cpus"},
        {"host_memory: 1X\n", "t.yaml:1:14: host_memory: \"1X\" is not a size", "host_memory"},
        {"host_memory: \"0:1G,0:2G\"\n", "t.yaml:1:14: host_memory: node 0 is given twice", "host_memory"},
        {"host_memory: \"0:1G,x\"\n", "t.yaml:1:14: host_memory: \"0:1G,x\" is not a list of NODE:SIZE", "host_memory"},
        {"host_memory: \"5000:1G\"\n", "t.yaml:1:14: host_memory: \"5000:1G\" is not a list of NODE:SIZE",
         "host_memory"},
        {"host_devices: [eth0, \"a/b\"]\n", "t.yaml:1:22: host_devices: \"a/b\" is not a device", "host_devices"},
        {"host_devices:\n  - eth0\n  - 0000:zz:00.0\n",
         "t.yaml:3:5: host_devices: \"0000:zz:00.0\" is not a PCI address", "host_devices"},
        {"host_devices: \"eth0,,eth1\"\n", "t.yaml:1:15: host_devices: \"\" is not a device", "host_devices"},
        {"topology: rel.xml\n", "t.yaml:1:11: topology: \"rel.xml\" is not an absolute path", "topology"},
        {"supervisor: bin/sup\n", "t.yaml:1:13: supervisor: \"bin/sup\" is not an absolute path", "supervisor"},
        {"fault: \"a b\"\n", "t.yaml:1:8: fault: \"a b\" is not a fault point name", "fault"},
        {"sync: full\nsync: normal\n", "t.yaml:2:1: sync: given twice (first on line 1; give each key once)", "sync"},
        {"sync: [full\n", "t.yaml:2:1: not valid YAML: flow sequence without a closing bracket", ""},
        {"- sync\n", "t.yaml:1:1: not a mapping of keys", ""},
        {"sync: &a full\nsocket: *a\n", "t.yaml:2:9: socket: anchors and aliases are not supported", "socket"},
};

static void test_bad(void)
{
        for (size_t i = 0; i < ELEMENTSOF(bad_cases); i++) {
                const struct bad_case *b = &bad_cases[i];
                struct tessera_config c;
                struct tessera_error err = {0};
                int r = load(&c, b->yaml, &err);
                bool good = r < 0 && err.code == -r && starts(err.msg, b->want) && STREQ(err.field, b->field);
                ok(good, "bad: %s", b->want);
                if (!good)
                        diag("got r=%d field='%s' msg: %s", r, err.field, err.msg);
        }
}

static void test_set(void)
{
        struct tessera_config c;
        struct tessera_error err = {0};
        config_init(&c);
        ok(config_set(&c, "block-size", "256M", &err) == 0 && c.block_size == 256ULL << 20, "--block-size 256M");
        ok(config_set(&c, "--block-size", "3M", &err) == -EINVAL &&
                   starts(err.msg, "--block-size: \"3M\" is not a block "
                                   "size (use a power of two") &&
                   STREQ(err.field, "block_size"),
           "--block-size 3M names the flag (%s)", err.msg);
        ok(c.block_size == 256ULL << 20, "a refused value leaves the old one");
        ok(config_set(&c, "state_dir", "/srv/state", &err) == 0 && STREQ(c.state_dir, "/srv/state"),
           "state_dir with '_'");
        ok(config_set(&c, "state-dir", "rel", &err) < 0 &&
                   starts(err.msg, "--state-dir: \"rel\" is not an absolute path"),
           "--state-dir rel (%s)", err.msg);
        ok(config_set(&c, "sync", "normal", &err) == 0 && !c.sync_full, "--sync normal");
        ok(config_set(&c, "host-devices", "eth0,eth1", &err) == 0 && STREQ(c.host_devices, "eth0,eth1"),
           "--host-devices eth0,eth1");
        ok(config_set(&c, "host-cpus", "", &err) == 0 && STREQ(c.host_cpus, ""), "--host-cpus \"\"");
        ok(config_set(&c, "host-memory", "0:2G", &err) == 0 && STREQ(c.host_memory, "0:2G"), "--host-memory 0:2G");
        ok(config_set(&c, "fault", "create:recorded", &err) == 0 && STREQ(c.fault, "create:recorded"), "--fault");
        ok(config_set(&c, "bogus", "1", &err) < 0 &&
                   starts(err.msg, "--bogus: unknown option (known: --state-dir, --socket, --cgroup-root,") &&
                   STREQ(err.field, "bogus"),
           "unknown option lists the known ones (%s)", err.msg);
        ok(config_set(&c, "socket", NULL, &err) < 0 && strstr(err.msg, "needs a value"), "an option without a value");
        ok(config_validate(&c, &err) == 0, "the result is valid (%s)", err.msg);
}

static void test_validate(void)
{
        struct tessera_config c;
        struct tessera_error err = {0};
        config_init(&c);
        snprintf(c.state_dir, sizeof(c.state_dir), "rel");
        ok(config_validate(&c, &err) < 0 && starts(err.msg, "state_dir: \"rel\" is not an absolute path") &&
                   STREQ(err.field, "state_dir"),
           "a bad state_dir (%s)", err.msg);
        config_init(&c);
        c.block_size = 3ULL << 20;
        ok(config_validate(&c, &err) < 0 && starts(err.msg, "block_size: \"3145728\" is not a block size") &&
                   STREQ(err.field, "block_size"),
           "a bad block_size (%s)", err.msg);
        config_init(&c);
        snprintf(c.host_memory, sizeof(c.host_memory), "lots");
        ok(config_validate(&c, &err) < 0 && STREQ(err.field, "host_memory"), "a bad host_memory (%s)", err.msg);
        config_init(&c);
        snprintf(c.host_devices, sizeof(c.host_devices), "eth0,../x");
        ok(config_validate(&c, &err) < 0 && STREQ(err.field, "host_devices"), "a bad host_devices (%s)", err.msg);
}

static void test_host_memory(void)
{
        struct tessera_config c;
        struct tessera_error err = {0};
        uint64_t nodes[3];
        config_init(&c);
        ok(config_host_memory(&c, nodes, 2, &err) == 0 && nodes[0] == 1ULL << 30 && nodes[1] == 1ULL << 30,
           "1G on each node");
        snprintf(c.host_memory, sizeof(c.host_memory), "0:1G,1:512M");
        ok(config_host_memory(&c, nodes, 3, &err) == 0 && nodes[0] == 1ULL << 30 && nodes[1] == 512ULL << 20 &&
                   nodes[2] == 0,
           "per node; an unnamed node keeps nothing");
        snprintf(c.host_memory, sizeof(c.host_memory), "2:1G");
        ok(config_host_memory(&c, nodes, 2, &err) == -ENOENT &&
                   STREQ(err.msg, "host_memory: node 2 does not exist (this machine has nodes 0 to 1)") &&
                   STREQ(err.field, "host_memory"),
           "a node the machine lacks (%s)", err.msg);
        ok(config_host_memory(&c, nodes, 0, &err) < 0, "no nodes at all");
}

static const char *source_dir(void)
{
        const char *src = getenv("TESSERA_SRC");
        if (src)
                return src;
        static char dir[4096];
        snprintf(dir, sizeof(dir), "%s", __FILE__);
        char *p = strstr(dir, "tests/unit/");
        if (!p)
                return NULL;
        if (p == dir)
                return ".";
        p[-1] = '\0';
        return dir;
}

static void test_files(void)
{
        char tmpl[] = "/tmp/test-config-XXXXXX";
        char *dir = mkdtemp(tmpl);
        if (!dir) {
                ok(0, "mkdtemp: %s", strerror(errno));
                return;
        }
        char path[4200];
        struct tessera_config c;
        struct tessera_error err = {0};
        snprintf(path, sizeof(path), "%s/tesserad.yaml", dir);
        FILE *f = fopen(path, "we");
        if (f) {
                fputs("state_dir: /srv/s\nblock_size: 3M\n", f);
                fclose(f);
        }
        config_init(&c);
        int r = config_load_file(&c, path, &err);
        ok(r < 0 && starts(err.msg, path) && strstr(err.msg, ":2:13: block_size: \"3M\""),
           "file errors name the path (%s)", err.msg);
        unlink(path);
        r = config_load_file(&c, path, &err);
        ok(r == -ENOENT && strstr(err.msg, path), "a missing file (%s)", err.msg);
        rmdir(dir);

        /* the example the package installs must load */
        const char *src = source_dir();
        snprintf(path, sizeof(path), "%s/dist/tesserad.yaml", src ? src : ".");
        struct stat st;
        if (!src || stat(path, &st) < 0) {
                skip("dist/tesserad.yaml not found (set TESSERA_SRC)");
                return;
        }
        config_init(&c);
        r = config_load_file(&c, path, &err);
        if (r == 0)
                r = config_validate(&c, &err);
        ok(r == 0, "dist/tesserad.yaml loads and is valid (%s)", r ? err.msg : "");
}

int main(void)
{
        test_defaults();
        test_good();
        test_bad();
        test_set();
        test_validate();
        test_host_memory();
        test_files();
        return done_testing();
}
