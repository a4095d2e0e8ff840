/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The spec parser: YAML forms, exact error places, the JSON wire form, flags. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>

#include "spec.h"
#include "tap.h"
#include "util.h"

/* ---- good YAML: each field form, and the JSON it must come out as ---- */

struct good_case {
        const char *what, *yaml, *json;
};

static const struct good_case good_cases[] = {
        {"every field",
         "name: sim\ntype: native\ncpus: 2\nmemory: 1G\nnuma: [0]\nhugepages: false\n"
         "devices: [veth0, 0000:00:04.0, /dev/loop3]\npids: 1024\nnamespaces: [net, user]\nroot: /srv/sim\n"
         "hostname: sim\non_failure: keep\nowner: alice\n",
         "{\"name\":\"sim\",\"type\":\"native\",\"cpus\":2,\"memory\":1073741824,\"numa\":[0],\"hugepages\":false,"
         "\"devices\":[\"veth0\",\"0000:00:04.0\",\"/dev/loop3\"],\"pids\":1024,\"namespaces\":[\"net\",\"user\"],"
         "\"root\":\"/srv/sim\",\"hostname\":\"sim\",\"on_failure\":\"keep\",\"owner\":\"alice\"}"},
        {"cpus as a quoted list", "name: a\ncpus: \"4-5,7\"\n",
         "{\"name\":\"a\",\"type\":\"native\",\"cpus\":\"4-5,7\",\"hugepages\":false,\"on_failure\":\"keep\"}"},
        {"cpus as a plain range", "name: a\ncpus: 4-5\n",
         "{\"name\":\"a\",\"type\":\"native\",\"cpus\":\"4-5\",\"hugepages\":false,\"on_failure\":\"keep\"}"},
        {"cpus as a YAML list", "name: a\ncpus: [5, 4, 7]\n",
         "{\"name\":\"a\",\"type\":\"native\",\"cpus\":\"4-5,7\",\"hugepages\":false,\"on_failure\":\"keep\"}"},
        {"cpus as a block list", "name: a\ncpus:\n  - 3\n",
         "{\"name\":\"a\",\"type\":\"native\",\"cpus\":\"3\",\"hugepages\":false,\"on_failure\":\"keep\"}"},
        {"quoted \"2\" is core 2, not two cores", "name: a\ncpus: \"2\"\n",
         "{\"name\":\"a\",\"type\":\"native\",\"cpus\":\"2\",\"hugepages\":false,\"on_failure\":\"keep\"}"},
        {"memory in bytes", "name: a\nmemory: 4096\n",
         "{\"name\":\"a\",\"type\":\"native\",\"memory\":4096,\"hugepages\":false,\"on_failure\":\"keep\"}"},
        {"memory with iB", "name: a\nmemory: 512MiB\n",
         "{\"name\":\"a\",\"type\":\"native\",\"memory\":536870912,\"hugepages\":false,\"on_failure\":\"keep\"}"},
        {"memory quoted", "name: a\nmemory: '2G'\n",
         "{\"name\":\"a\",\"type\":\"native\",\"memory\":2147483648,\"hugepages\":false,\"on_failure\":\"keep\"}"},
        {"numa as one number", "name: a\nnuma: 1\n",
         "{\"name\":\"a\",\"type\":\"native\",\"numa\":[1],\"hugepages\":false,\"on_failure\":\"keep\"}"},
        {"numa as a range", "name: a\nnuma: \"0-1\"\n",
         "{\"name\":\"a\",\"type\":\"native\",\"numa\":[0,1],\"hugepages\":false,\"on_failure\":\"keep\"}"},
        {"hugepages true", "name: a\nhugepages: true\n",
         "{\"name\":\"a\",\"type\":\"native\",\"hugepages\":true,\"on_failure\":\"keep\"}"},
        {"devices as a block list", "name: a\ndevices:\n  - eth1\n  - /dev/net/tun\n",
         "{\"name\":\"a\",\"type\":\"native\",\"hugepages\":false,\"devices\":[\"eth1\",\"/dev/net/tun\"],"
         "\"on_failure\":\"keep\"}"},
        {"always-made namespaces are accepted and dropped",
         "name: a\nnamespaces: [mount, pid, ipc, uts, cgroup, net]\n",
         "{\"name\":\"a\",\"type\":\"native\",\"hugepages\":false,\"namespaces\":[\"net\"],\"on_failure\":\"keep\"}"},
        {"no namespaces", "name: a\nnamespaces: []\n",
         "{\"name\":\"a\",\"type\":\"native\",\"hugepages\":false,\"on_failure\":\"keep\"}"},
        {"numeric owner", "name: a\nowner: 1000\non_failure: restart\n",
         "{\"name\":\"a\",\"type\":\"native\",\"hugepages\":false,\"owner\":\"1000\",\"on_failure\":\"restart\"}"},
        {"a number as a name stays text", "name: 007\nhostname: h.example-1\n",
         "{\"name\":\"007\",\"type\":\"native\",\"hugepages\":false,\"hostname\":\"h.example-1\","
         "\"on_failure\":\"keep\"}"},
        {"vm subtree kept as JSON",
         "name: g\ntype: vm\non_failure: reclaim\nvm:\n  slots: 4\n  ratio: 0.5\n  on: true\n  none: ~\n"
         "  args: [a, \"b\"]\n  nested: {x: 1}\n",
         "{\"name\":\"g\",\"type\":\"vm\",\"hugepages\":false,\"on_failure\":\"reclaim\",\"vm\":{\"slots\":4,"
         "\"ratio\":0.5,\"on\":true,\"none\":null,\"args\":[\"a\",\"b\"],\"nested\":{\"x\":1}}}"},
        {"quoted scalars: escapes, runs of '', folded lines",
         "name: q\ntype: vm\nvm:\n  s: 'it''s'\n  run: 'x''''''''''y'\n  m: 'multi  \n   line\n\n    end '\n"
         "  d: \"tab\\there \\u00e9\"\n  p: plain\n    folded\n",
         "{\"name\":\"q\",\"type\":\"vm\",\"hugepages\":false,\"on_failure\":\"keep\",\"vm\":{\"s\":\"it's\","
         "\"run\":\"x'''''y\",\"m\":\"multi line\\nend \",\"d\":\"tab\\there \\u00e9\",\"p\":\"plain folded\"}}"},
        {"comments, document markers and flow mapping", "--- # start\n{name: a, cpus: 1} # flow\n...\n",
         "{\"name\":\"a\",\"type\":\"native\",\"cpus\":1,\"hugepages\":false,\"on_failure\":\"keep\"}"},
};

static void test_good(void)
{
        for (size_t i = 0; i < ELEMENTSOF(good_cases); i++) {
                const struct good_case *c = &good_cases[i];
                struct tessera_spec s;
                struct tessera_error err = {0};
                int r = spec_parse_string(c->yaml, strlen(c->yaml), "t.yaml", &s, NULL, &err);
                json_t *want = json_loads(c->json, 0, NULL);
                json_t *got = r == 0 ? spec_to_json(&s) : NULL;
                char *dump = got ? json_dumps(got, JSON_COMPACT) : NULL;
                ok(r == 0 && want && got && json_equal(want, got), "good: %s (%s%s)", c->what, r ? err.msg : "",
                   dump ? dump : "");
                free(dump);
                json_decref(want);
                json_decref(got);
                spec_done(&s);
        }
}

/* ---- bad YAML: the exact start of each message, and the field ---- */

struct bad_case {
        const char *yaml, *want, *field;
};

static const struct bad_case bad_cases[] = {
        {"name: sim\ncpus: 2\n\nmemory: \"4X\"\n", "t.yaml:4:9: memory: \"4X\" is not a size (use K, M, G, T)",
         "memory"},
        {"name: sim\nmemory: 4X\n", "t.yaml:2:9: memory: \"4X\" is not a size (use K, M, G, T)", "memory"},
        {"name: sim\ncpu: 2\n",
         "t.yaml:2:1: cpu: unknown field (known: name, type, cpus, memory, numa, hugepages, "
         "devices, pids, namespaces, root, hostname, on_failure, owner, vm)",
         "cpu"},
        {"cpus: 5-4\n", "t.yaml:1:7: cpus: \"5-4\": the range 5-4 runs backwards (use 4-5)", "cpus"},
        {"name: a\ncpus: 1\nname: b\n", "t.yaml:3:1: name: given twice (first on line 1; give each field once)",
         "name"},
        {"name: [sim\n", "t.yaml:2:1: not valid YAML: flow sequence without a closing bracket", ""},
        {"name: sim\n\tcpus: 2\n", "t.yaml:2:1: a tab character (indent and separate with spaces", ""},
        {"name: sim\ncpus:\t2\n", "t.yaml:2:6: a tab character", ""},
        {"? p:\t?", "t.yaml:1:5: a tab character", ""}, /* made libfyaml 0.7.12 free memory twice */
        {"devices: veth0\n", "t.yaml:1:10: devices: a string (\"veth0\") where a list of devices is expected",
         "devices"},
        {"devices: {a: 1}\n", "t.yaml:1:10: devices: a mapping where a list of devices is expected", "devices"},
        {"name: ../x\n", "t.yaml:1:7: name: \"../x\" is not a valid name", "name"},
        {"name: [a]\n", "t.yaml:1:7: name: a list where a name is expected", "name"},
        {"name:\n", "t.yaml:1:1: name: no value where a name is expected", "name"},
        {"devices: [veth0, \"a/b\"]\n", "t.yaml:1:18: devices: \"a/b\" is not a device", "devices"},
        {"devices:\n  - veth0\n  - /dev/../etc\n", "t.yaml:3:5: devices: \"/dev/../etc\" is not a device path",
         "devices"},
        {"devices: [veth0, veth0]\n", "t.yaml:1:18: devices: \"veth0\" is listed twice", "devices"},
        {"devices: [0000:00:20.0]\n", "t.yaml:1:11: devices: \"0000:00:20.0\" is not a PCI address", "devices"},
        {"devices: [0000:00:04.8]\n", "t.yaml:1:11: devices: \"0000:00:04.8\" is not a PCI address", "devices"},
        {"devices: [abcdefghijklmnop]\n", "t.yaml:1:11: devices: \"abcdefghijklmnop\" is not a device", "devices"},
        {"devices: [/dev/]\n", "t.yaml:1:11: devices: \"/dev/\" is not a device path", "devices"},
        {"devices: [[a]]\n", "t.yaml:1:11: devices: a list where a device name is expected", "devices"},
        {"cpus: 0\n", "t.yaml:1:7: cpus: 0 is out of range (use a count from 1 to 8192", "cpus"},
        {"cpus: -1\n", "t.yaml:1:7: cpus: -1 is out of range", "cpus"},
        {"cpus: 9000\n", "t.yaml:1:7: cpus: 9000 is out of range", "cpus"},
        {"cpus: \"1-99999\"\n", "t.yaml:1:7: cpus: \"1-99999\" has a number above 8191", "cpus"},
        {"cpus: [4, 4]\n", "t.yaml:1:11: cpus: 4 is listed twice", "cpus"},
        {"cpus: [4, x]\n", "t.yaml:1:11: cpus: a string (\"x\") where a number is expected", "cpus"},
        {"cpus: []\n", "t.yaml:1:7: cpus: the list is empty", "cpus"},
        {"cpus: \"\"\n", "t.yaml:1:7: cpus: the list is empty", "cpus"},
        {"cpus: 2.5\n", "t.yaml:1:7: cpus: a number (2.5) where a core count or list is expected", "cpus"},
        {"cpus: true\n", "t.yaml:1:7: cpus: a boolean (true) where a core count or list is expected", "cpus"},
        {"cpus: \"1,\"\n", "t.yaml:1:7: cpus: \"1,\" is not a list of numbers", "cpus"},
        {"cpus: \",1\"\n", "t.yaml:1:7: cpus: \",1\" is not a list of numbers", "cpus"},
        {"cpus: \"1 - 2\"\n", "t.yaml:1:7: cpus: \"1 - 2\" is not a list of numbers", "cpus"},
        {"cpus: \"-1\"\n", "t.yaml:1:7: cpus: \"-1\" is not a list of numbers", "cpus"},
        {"memory: 0\n", "t.yaml:1:9: memory: 0 is out of range", "memory"},
        {"memory: \"0\"\n", "t.yaml:1:9: memory: \"0\" is no memory", "memory"},
        {"memory: [1G]\n", "t.yaml:1:9: memory: a list where a size is expected", "memory"},
        {"memory: 99999999T\n", "t.yaml:1:9: memory: \"99999999T\" is too large", "memory"},
        {"numa: [0, x]\n", "t.yaml:1:11: numa: a string (\"x\") where a number is expected", "numa"},
        {"numa: 1024\n", "t.yaml:1:7: numa: 1024 is out of range", "numa"},
        {"hugepages: yes\n", "t.yaml:1:12: hugepages: a string (\"yes\") where true or false is expected", "hugepages"},
        {"pids: 0\n", "t.yaml:1:7: pids: 0 is out of range (use a number from 1 to 4194304)", "pids"},
        {"pids: \"1024\"\n", "t.yaml:1:7: pids: a string (\"1024\") where a number is expected", "pids"},
        {"namespaces: [net, time]\n", "t.yaml:1:19: namespaces: \"time\" is not a namespace", "namespaces"},
        {"namespaces: net\n", "t.yaml:1:13: namespaces: a string (\"net\") where a list of namespaces is expected",
         "namespaces"},
        {"root: srv/x\n", "t.yaml:1:7: root: \"srv/x\" is not an absolute path", "root"},
        {"root: /srv/../etc\n", "t.yaml:1:7: root: \"/srv/../etc\" has a \"..\" component", "root"},
        {"hostname: -bad\n", "t.yaml:1:11: hostname: \"-bad\" is not a host name", "hostname"},
        {"hostname: a..b\n", "t.yaml:1:11: hostname: \"a..b\" is not a host name", "hostname"},
        {"on_failure: explode\n",
         "t.yaml:1:13: on_failure: \"explode\" is not a failure policy (use keep, reclaim "
         "or restart)",
         "on_failure"},
        {"owner: \"bad user\"\n", "t.yaml:1:8: owner: \"bad user\" is not a user", "owner"},
        {"owner: 4294967295\n", "t.yaml:1:8: owner: \"4294967295\" is not a user", "owner"},
        {"type: container\n", "t.yaml:1:7: type: \"container\" is not an enclave type (use native or vm)", "type"},
        {"vm: 3\n", "t.yaml:1:5: vm: a number (3) where a mapping is expected", "vm"},
        {"vm:\n  a: 1\n  a: 2\n", "t.yaml:3:3: vm: \"a\" is given twice", "vm"},
        {"a: &x 1\n", "t.yaml:1:1: a: unknown field", "a"},
        {"name: &x a\nhostname: *x\n", "t.yaml:2:11: hostname: anchors and aliases are not supported", "hostname"},
        {"vm: {k: [1, {b: *y}]}\n", "t.yaml:1:17: vm: anchors and aliases are not supported", "vm"},
        {"[a]: 1\n", "t.yaml:1:1: keys must be plain text", ""},
        {"- name: a\n", "t.yaml:1:1: not a mapping of fields", ""},
        {"just text\n", "t.yaml:1:1: not a mapping of fields", ""},
        {"name: a\n%\xf9YAML 1.2\n", "t.yaml:2:2: not valid UTF-8 (save the file as UTF-8)", ""},
        {"name: \"\xc0\xaf\"\n", "t.yaml:1:8: not valid UTF-8", ""},
        {"name: \xed\xa0\x80\n", "t.yaml:1:7: not valid UTF-8", ""},
        {"name: a\n---\nname: b\n", "t.yaml:2:1: a second YAML document (keep one per file)", ""},
        {"name: a\n--- [b\n", "t.yaml:2:1: a second YAML document", ""},
        {"name: [a\n---\n", "t.yaml:2:1: not valid YAML:", ""},
        {"---\n", "t.yaml: the file is empty", ""},
        {"", "t.yaml: the file is empty", ""},
        {"# nothing\n", "t.yaml: the file is empty", ""},
        {"~\n", "t.yaml: the file is empty", ""},
};

static void test_bad(void)
{
        for (size_t i = 0; i < ELEMENTSOF(bad_cases); i++) {
                const struct bad_case *c = &bad_cases[i];
                struct tessera_spec s;
                struct tessera_error err = {0};
                int r = spec_parse_string(c->yaml, strlen(c->yaml), "t.yaml", &s, NULL, &err);
                bool good = r < 0 && err.code == -r && strncmp(err.msg, c->want, strlen(c->want)) == 0 &&
                            STREQ(err.field, c->field);
                ok(good, "bad: %s", c->want);
                if (!good)
                        diag("got r=%d field='%s' msg: %s", r, err.field, err.msg);
                /* a failed parse leaves nothing to free */
                ok(!s.cpu_list && !s.numa && !s.root && !s.vm && s.n_devices == 0 && !s.name[0],
                   "failed parse leaves the spec empty");
                spec_done(&s);
        }
}

/* Two device lists of 64 and 65 entries. */
static void test_device_limit(void)
{
        char yaml[4096] = "devices:\n";
        for (int i = 0; i < SPEC_MAX_DEVICES; i++)
                snprintf(yaml + strlen(yaml), sizeof(yaml) - strlen(yaml), "  - veth%d\n", i);
        struct tessera_spec s;
        struct tessera_error err = {0};
        int r = spec_parse_string(yaml, strlen(yaml), "t.yaml", &s, NULL, &err);
        ok(r == 0 && s.n_devices == SPEC_MAX_DEVICES, "%d devices are fine (%s)", SPEC_MAX_DEVICES, r ? err.msg : "");
        spec_done(&s);
        snprintf(yaml + strlen(yaml), sizeof(yaml) - strlen(yaml), "  - veth%d\n", SPEC_MAX_DEVICES);
        r = spec_parse_string(yaml, strlen(yaml), "t.yaml", &s, NULL, &err);
        ok(r < 0 && strstr(err.msg, "t.yaml:66:5: devices: more than 64 devices"), "65 devices are refused (%s)",
           err.msg);
        spec_done(&s);
}

static void test_control_characters(void)
{
        /* NUL bytes and tabs can make libfyaml free memory twice: both are refused before it gets there */
        static const char nul[] = "? a: \0[[]]\n";
        struct tessera_spec s;
        struct tessera_error err = {0};
        int r = spec_parse_string(nul, sizeof(nul) - 1, "t.yaml", &s, NULL, &err);
        ok(r == -EILSEQ && strncmp(err.msg, "t.yaml:1:6: control character U+0000", 36) == 0, "a NUL byte (%s)",
           err.msg);
        spec_done(&s);
        const char *ctl = "name: a\x01"
                          "b\n";
        r = spec_parse_string(ctl, strlen(ctl), "t.yaml", &s, NULL, &err);
        ok(r == -EILSEQ && strncmp(err.msg, "t.yaml:1:8: control character U+0001", 36) == 0,
           "a control character (%s)", err.msg);
        spec_done(&s);
        const char *c1 = "name: a\xc2\x80\n";
        r = spec_parse_string(c1, strlen(c1), "t.yaml", &s, NULL, &err);
        ok(r == -EILSEQ && strstr(err.msg, "U+0080"), "a C1 control character (%s)", err.msg);
        spec_done(&s);
        const char *bom = "\xef\xbb\xbfname: a\r\ncpus: 1\r\n";
        r = spec_parse_string(bom, strlen(bom), "t.yaml", &s, NULL, &err);
        ok(r == 0 && STREQ(s.name, "a") && s.cpu_count == 1, "a byte order mark and CRLF line ends are fine (%s)",
           r ? err.msg : "");
        spec_done(&s);
}

static void test_size_limit(void)
{
        size_t n = (1u << 20) + 1;
        char *big = malloc(n);
        if (!big) {
                skip("out of memory");
                return;
        }
        memset(big, '#', n);
        struct tessera_spec s;
        struct tessera_error err = {0};
        int r = spec_parse_string(big, n, "big.yaml", &s, NULL, &err);
        ok(r == -EFBIG && strstr(err.msg, "big.yaml: "), "more than 1 MiB is refused (%s)", err.msg);
        spec_done(&s);
        free(big);
}

/* ---- JSON ---- */

static void test_json_round_trip(void)
{
        for (size_t i = 0; i < ELEMENTSOF(good_cases); i++) {
                const struct good_case *c = &good_cases[i];
                struct tessera_spec a, b;
                struct tessera_error err = {0};
                int r = spec_parse_string(c->yaml, strlen(c->yaml), "t.yaml", &a, NULL, &err);
                json_t *ja = r == 0 ? spec_to_json(&a) : NULL;
                /* through text, as the wire carries it */
                char *text = ja ? json_dumps(ja, JSON_COMPACT) : NULL;
                json_t *parsed = text ? json_loads(text, 0, NULL) : NULL;
                r = parsed ? spec_from_json(parsed, &b, &err) : -EINVAL;
                json_t *jb = r == 0 ? spec_to_json(&b) : NULL;
                ok(ja && jb && json_equal(ja, jb) && (r != 0 || STREQ(a.name, b.name)), "JSON round trip: %s (%s)",
                   c->what, r ? err.msg : "");
                bool same = r == 0 && a.cpu_count == b.cpu_count && a.memory_bytes == b.memory_bytes &&
                            a.hugepages == b.hugepages && a.n_devices == b.n_devices && a.pids_max == b.pids_max &&
                            a.namespaces == b.namespaces && a.on_failure == b.on_failure && a.type == b.type &&
                            STREQ(a.hostname, b.hostname) && STREQ(a.owner, b.owner) && !a.root == !b.root &&
                            (!a.cpu_list ? !b.cpu_list : b.cpu_list && hwloc_bitmap_isequal(a.cpu_list, b.cpu_list)) &&
                            (!a.numa ? !b.numa : b.numa && hwloc_bitmap_isequal(a.numa, b.numa)) &&
                            (!a.vm ? !b.vm : b.vm && json_equal(a.vm, b.vm));
                ok(same, "JSON round trip keeps every struct field: %s", c->what);
                free(text);
                json_decref(ja);
                json_decref(jb);
                json_decref(parsed);
                spec_done(&a);
                spec_done(&b);
        }
}

struct json_bad_case {
        const char *json, *want, *field;
};

static const struct json_bad_case json_bad_cases[] = {
        {"{\"name\": 5}", "name: a number (5) where a name is expected", "name"},
        {"{\"name\": \"a/b\"}", "name: \"a/b\" is not a valid name", "name"},
        {"{\"cpus\": true}", "cpus: a boolean (true) where a core count or list is expected", "cpus"},
        {"{\"cpus\": 2.0}", "cpus: a number (2) where a core count or list is expected", "cpus"},
        {"{\"cpus\": -3}", "cpus: -3 is out of range", "cpus"},
        {"{\"cpus\": [1, \"2\"]}", "cpus: a string (\"2\") where a number is expected", "cpus"},
        {"{\"cpus\": \"5-4\"}", "cpus: \"5-4\": the range 5-4 runs backwards", "cpus"},
        {"{\"cpus\": \"0-4000000000\"}", "cpus: \"0-4000000000\" has a number above 8191", "cpus"},
        {"{\"memory\": [1]}", "memory: a list where a size is expected", "memory"},
        {"{\"memory\": \"4X\"}", "memory: \"4X\" is not a size (use K, M, G, T)", "memory"},
        {"{\"memory\": 9223372036854775807}", "memory: 9223372036854775807 is out of range", "memory"},
        {"{\"numa\": {}}", "numa: a mapping where a list is expected", "numa"},
        {"{\"hugepages\": \"true\"}", "hugepages: a string (\"true\") where true or false is expected", "hugepages"},
        {"{\"hugepages\": 1}", "hugepages: a number (1) where true or false is expected", "hugepages"},
        {"{\"devices\": \"veth0\"}", "devices: a string (\"veth0\") where a list of devices is expected", "devices"},
        {"{\"devices\": [1]}", "devices: a number (1) where a device name is expected", "devices"},
        {"{\"devices\": [\"/dev/x/../../etc\"]}", "devices: \"/dev/x/../../etc\" is not a device path", "devices"},
        {"{\"pids\": \"1024\"}", "pids: a string (\"1024\") where a number is expected", "pids"},
        {"{\"pids\": -1}", "pids: -1 is out of range", "pids"},
        {"{\"namespaces\": \"net\"}", "namespaces: a string (\"net\") where a list of namespaces is expected",
         "namespaces"},
        {"{\"namespaces\": [\"net\", null]}", "namespaces: no value where a namespace is expected", "namespaces"},
        {"{\"root\": null}", "root: must be a path or a mapping", "root"},
        {"{\"root\": \"/a\\u0000/b\"}", "root: the path contains a NUL byte", "root"},
        {"{\"hostname\": false}", "hostname: a boolean (false) where a host name is expected", "hostname"},
        {"{\"on_failure\": 0}", "on_failure: a number (0) where a policy is expected", "on_failure"},
        {"{\"owner\": -5}", "owner: -5 is out of range", "owner"},
        {"{\"type\": \"VM\"}", "type: \"VM\" is not an enclave type", "type"},
        {"{\"vm\": []}", "vm: a list where a mapping is expected", "vm"},
        {"{\"bogus\": 1}", "bogus: unknown field (known: name, type,", "bogus"},
        {"[1, 2]", "a list where an object is expected", ""},
        {"\"sim\"", "a string (\"sim\") where an object is expected", ""},
};

static void test_json_bad(void)
{
        for (size_t i = 0; i < ELEMENTSOF(json_bad_cases); i++) {
                const struct json_bad_case *c = &json_bad_cases[i];
                json_error_t jerr;
                json_t *j = json_loads(c->json, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
                struct tessera_spec s;
                struct tessera_error err = {0};
                int r = j ? spec_from_json(j, &s, &err) : -EINVAL;
                bool good = j && r < 0 && strncmp(err.msg, c->want, strlen(c->want)) == 0 && STREQ(err.field, c->field);
                ok(good, "JSON %s is refused: %s", c->json, c->want);
                if (!good)
                        diag("got r=%d field='%s' msg: %s%s", r, err.field, err.msg, j ? "" : jerr.text);
                spec_done(&s);
                json_decref(j);
        }
}

static void test_json_nul_key(void)
{
        /* jansson's parser refuses such keys, but a json_t built in memory can hold one */
        json_t *j = json_object();
        json_object_setn_new(j, "name\0x", 6, json_string("a"));
        struct tessera_spec s;
        struct tessera_error err = {0};
        int r = spec_from_json(j, &s, &err);
        ok(r < 0 && strncmp(err.msg, "name: a key contains a NUL byte", 31) == 0 && !err.field[0],
           "a key with a NUL byte is refused and names no field (%s)", err.msg);
        spec_done(&s);
        json_decref(j);
}

/* ---- flags ---- */

static void test_flags(void)
{
        struct tessera_spec s;
        struct tessera_error err = {0};
        spec_init(&s);
        ok(spec_set_field(&s, "cpus", "4-5", &err) == 0 && s.cpu_list && hwloc_bitmap_weight(s.cpu_list) == 2,
           "--cpus 4-5 is a list");
        ok(spec_set_field(&s, "--cpus", "2", &err) == 0 && s.cpu_count == 2 && !s.cpu_list,
           "--cpus 2 is a count and drops the list");
        ok(spec_set_field(&s, "memory", "4X", &err) == -EINVAL &&
                   STREQ(err.msg, "--memory: \"4X\" is not a size (use K, M, G, T)") && STREQ(err.field, "memory"),
           "--memory 4X names the flag (%s)", err.msg);
        ok(spec_set_field(&s, "memory", "256M", &err) == 0 && s.memory_bytes == 256ULL << 20, "--memory 256M");
        ok(spec_set_field(&s, "name", "sim", &err) == 0 && STREQ(s.name, "sim"), "--name sim");
        ok(spec_set_field(&s, "name", "../x", &err) < 0 &&
                   strncmp(err.msg, "--name: \"../x\" is not a valid name", 34) == 0,
           "--name ../x refused (%s)", err.msg);
        ok(STREQ(s.name, "sim"), "a refused value leaves the field as it was");
        ok(spec_set_field(&s, "device", "veth0", &err) == 0 &&
                   spec_set_field(&s, "--device", "/dev/loop3", &err) == 0 && s.n_devices == 2 &&
                   STREQ(s.devices[1], "/dev/loop3"),
           "--device appends");
        ok(spec_set_field(&s, "device", "veth0", &err) < 0 &&
                   STREQ(err.msg, "--device: \"veth0\" is listed twice (list each device once)") &&
                   STREQ(err.field, "devices"),
           "--device twice is refused (%s)", err.msg);
        ok(spec_set_field(&s, "namespaces", "net,user", &err) == 0 && s.namespaces == (SPEC_NS_NET | SPEC_NS_USER),
           "--namespaces net,user");
        ok(spec_set_field(&s, "namespaces", "net,bogus", &err) < 0 &&
                   strncmp(err.msg, "--namespaces: \"bogus\" is not a namespace", 40) == 0,
           "--namespaces net,bogus refused (%s)", err.msg);
        ok(spec_set_field(&s, "on-failure", "reclaim", &err) == 0 && s.on_failure == ON_FAILURE_RECLAIM,
           "--on-failure reclaim");
        ok(spec_set_field(&s, "on-failure", "later", &err) < 0 &&
                   strncmp(err.msg, "--on-failure: \"later\"", 21) == 0 && STREQ(err.field, "on_failure"),
           "--on-failure later refused (%s)", err.msg);
        ok(spec_set_field(&s, "hugepages", "yes", &err) == 0 && s.hugepages, "--hugepages yes");
        ok(spec_set_field(&s, "hugepages", "maybe", &err) < 0 &&
                   strncmp(err.msg, "--hugepages: \"maybe\" is not true or false", 41) == 0,
           "--hugepages maybe refused (%s)", err.msg);
        ok(spec_set_field(&s, "pids", "512", &err) == 0 && s.pids_max == 512, "--pids 512");
        ok(spec_set_field(&s, "pids", "lots", &err) < 0 &&
                   strncmp(err.msg, "--pids: \"lots\" is not a number", 30) == 0,
           "--pids lots refused (%s)", err.msg);
        ok(spec_set_field(&s, "pids", "0", &err) < 0 && strncmp(err.msg, "--pids: 0 is out of range", 25) == 0,
           "--pids 0 refused (%s)", err.msg);
        ok(spec_set_field(&s, "numa", "0,1", &err) == 0 && s.numa && hwloc_bitmap_weight(s.numa) == 2, "--numa 0,1");
        ok(spec_set_field(&s, "numa", "1", &err) == 0 && hwloc_bitmap_isset(s.numa, 1) &&
                   hwloc_bitmap_weight(s.numa) == 1,
           "--numa 1");
        ok(spec_set_field(&s, "root", "/srv/sim", &err) == 0 && s.root && STREQ(s.root->path, "/srv/sim"),
           "--root /srv/sim");
        ok(spec_set_field(&s, "hostname", "node-1", &err) == 0 && STREQ(s.hostname, "node-1"), "--hostname");
        ok(spec_set_field(&s, "owner", "1000", &err) == 0 && STREQ(s.owner, "1000"), "--owner 1000");
        ok(spec_set_field(&s, "type", "vm", &err) == 0 && s.type == SPEC_VM, "--type vm");
        ok(spec_set_field(&s, "vm", "{}", &err) < 0 && strncmp(err.msg, "--vm: cannot be set", 19) == 0,
           "--vm refused (%s)", err.msg);
        ok(spec_set_field(&s, "cpu", "2", &err) < 0 &&
                   strncmp(err.msg, "--cpu: unknown option (known: --name, --type, --cpus,", 52) == 0,
           "unknown flag lists the known ones (%s)", err.msg);
        ok(spec_set_field(&s, "cpus", NULL, &err) < 0 && strstr(err.msg, "needs a value"), "a flag without a value");
        ok(spec_validate(&s, &err) == 0, "flags alone make a complete spec (%s)", err.msg);
        spec_done(&s);
        ok(!s.root && !s.numa && s.n_devices == 0 && s.type == SPEC_NATIVE, "spec_done leaves an empty spec");
        spec_done(&s);
        ok(1, "a second spec_done is harmless");
}

static void test_validate(void)
{
        struct tessera_spec s;
        struct tessera_error err = {0};
        spec_init(&s);
        ok(s.type == SPEC_NATIVE && s.on_failure == ON_FAILURE_KEEP, "defaults: native, keep");
        ok(spec_validate(&s, &err) < 0 && STREQ(err.field, "name"), "no name (%s)", err.msg);
        spec_set_field(&s, "name", "sim", &err);
        ok(spec_validate(&s, &err) < 0 && STREQ(err.field, "cpus"), "no cpus (%s)", err.msg);
        spec_set_field(&s, "cpus", "2", &err);
        ok(spec_validate(&s, &err) < 0 && STREQ(err.field, "memory"), "no memory (%s)", err.msg);
        spec_set_field(&s, "memory", "1G", &err);
        ok(spec_validate(&s, &err) == 0, "name, cpus and memory make a spec");
        const char *yaml = "name: g\ncpus: 1\nmemory: 1G\nvm: {slots: 2}\n";
        spec_done(&s);
        ok(spec_parse_string(yaml, strlen(yaml), "t.yaml", &s, NULL, &err) == 0 && spec_validate(&s, &err) < 0 &&
                   STREQ(err.field, "vm"),
           "vm: on a native enclave contradicts (%s)", err.msg);
        spec_set_field(&s, "type", "vm", &err);
        ok(spec_validate(&s, &err) == 0, "vm: on a vm enclave is fine");
        spec_done(&s);
}

static void test_locate(void)
{
        const char *yaml = "name: sim\n# cores\ncpus: \"3\"\nmemory: 1G\ndevices:\n  - veth0\n";
        struct tessera_spec s;
        struct spec_locations locs;
        struct tessera_error err = {0};
        int r = spec_parse_string(yaml, strlen(yaml), "sim.yaml", &s, &locs, &err);
        ok(r == 0 && locs.n == 4 && STREQ(locs.file, "sim.yaml"), "four locations recorded");
        tessera_error_field(&err, EBUSY, "cpus", "cpus: core 3 is owned by 'other'");
        spec_locate_error(&locs, &err);
        ok(STREQ(err.msg, "sim.yaml:3:7: cpus: core 3 is owned by 'other'") && err.code == EBUSY,
           "a daemon error gets file:line:column (%s)", err.msg);
        spec_locate_error(&locs, &err);
        ok(STREQ(err.msg, "sim.yaml:3:7: cpus: core 3 is owned by 'other'"), "a second call adds nothing");
        tessera_error_field(&err, EBUSY, "devices", "devices: veth0 is in use");
        spec_locate_error(&locs, &err);
        ok(STREQ(err.msg, "sim.yaml:6:3: devices: veth0 is in use"), "a list value is found at its start (%s)",
           err.msg);
        tessera_error_field(&err, EINVAL, "pids", "pids: too many");
        spec_locate_error(&locs, &err);
        ok(STREQ(err.msg, "pids: too many"), "a field not in the file stays as it is");
        tessera_error_set(&err, EIO, "something else");
        spec_locate_error(&locs, &err);
        ok(STREQ(err.msg, "something else"), "an error without a field stays as it is");
        spec_locate_error(NULL, &err);
        spec_locate_error(&locs, NULL);
        ok(1, "NULL locations or error are harmless");
        spec_done(&s);
}

/* ---- files ---- */

static const char *source_dir(void)
{
        const char *src = getenv("TESSERA_SRC");
        if (src)
                return src;
        /* run by hand from the build directory: __FILE__ is relative to it */
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
        char tmpl[] = "/tmp/test-spec-XXXXXX";
        char *dir = mkdtemp(tmpl);
        if (!dir) {
                ok(0, "mkdtemp: %s", strerror(errno));
                return;
        }
        char path[4200];
        struct tessera_spec s;
        struct spec_locations locs;
        struct tessera_error err = {0};
        snprintf(path, sizeof(path), "%s/sim.yaml", dir);
        FILE *f = fopen(path, "we");
        if (f) {
                fputs("name: sim\ncpus: 2\nmemory: 4X\n", f);
                fclose(f);
        }
        int r = spec_parse_file(path, &s, &locs, &err);
        ok(r < 0 && strncmp(err.msg, path, strlen(path)) == 0 && strstr(err.msg, ":3:9: memory: \"4X\""),
           "file errors name the path (%s)", err.msg);
        spec_done(&s);
        unlink(path);
        r = spec_parse_file(path, &s, &locs, &err);
        ok(r == -ENOENT && strstr(err.msg, path) && strstr(err.msg, "No such file"), "a missing file (%s)", err.msg);
        r = spec_parse_file(dir, &s, &locs, &err);
        ok(r < 0 && strstr(err.msg, dir) && strstr(err.msg, "not a regular file"), "a directory (%s)", err.msg);
        snprintf(path, sizeof(path), "%s/big.yaml", dir);
        int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        bool made = fd >= 0 && ftruncate(fd, (1 << 20) + 1) == 0;
        if (fd >= 0)
                close(fd);
        r = spec_parse_file(path, &s, &locs, &err);
        ok(made && r == -EFBIG && strstr(err.msg, path), "a file above 1 MiB (%s)", err.msg);
        unlink(path);
        rmdir(dir);

        const char *src = source_dir();
        char specs[4200];
        snprintf(specs, sizeof(specs), "%s/tests/data/specs", src ? src : ".");
        struct stat st;
        if (!src || stat(specs, &st) < 0) {
                skip("tests/data/specs not found (set TESSERA_SRC)");
                return;
        }
        for (int good = 1; good >= 0; good--) {
                char sub[4300];
                snprintf(sub, sizeof(sub), "%s/%s", specs, good ? "good" : "bad");
                DIR *d = opendir(sub);
                if (!d) {
                        ok(0, "cannot open %s", sub);
                        continue;
                }
                struct dirent *e;
                while ((e = readdir(d))) {
                        if (!strstr(e->d_name, ".yaml"))
                                continue;
                        snprintf(path, sizeof(path), "%s/%s", sub, e->d_name);
                        r = spec_parse_file(path, &s, &locs, &err);
                        if (good) {
                                if (r == 0)
                                        r = spec_validate(&s, &err);
                                ok(r == 0, "example %s parses and is complete (%s)", e->d_name, r ? err.msg : "");
                        } else {
                                /* the first line says what the message must be: "# expect: 4:9: memory: ..." */
                                char first[512] = "";
                                FILE *ff = fopen(path, "re");
                                if (ff) {
                                        if (!fgets(first, sizeof(first), ff))
                                                first[0] = '\0';
                                        fclose(ff);
                                }
                                first[strcspn(first, "\n")] = '\0';
                                const char *want = strncmp(first, "# expect: ", 10) == 0 ? first + 10 : NULL;
                                size_t plen = strlen(path);
                                const char *rest = err.msg + plen + 1;
                                while (r < 0 && *rest == ' ')
                                        rest++;
                                bool good_msg = r < 0 && want && strncmp(err.msg, path, plen) == 0 &&
                                                err.msg[plen] == ':' && strncmp(rest, want, strlen(want)) == 0;
                                ok(good_msg, "example %s is refused as its first line says", e->d_name);
                                if (!good_msg)
                                        diag("want %s, got: %s", want ? want : "(no # expect: line)", err.msg);
                        }
                        spec_done(&s);
                }
                closedir(d);
        }
}

int main(void)
{
        test_good();
        test_bad();
        test_device_limit();
        test_control_characters();
        test_size_limit();
        test_json_round_trip();
        test_json_bad();
        test_json_nul_key();
        test_flags();
        test_validate();
        test_locate();
        test_files();
        return done_testing();
}
