/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The topology of this machine and of two hwloc XML files made with lstopo's synthetic backend. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <net/if.h>
#include <string.h>
#include <sys/stat.h>

#include "tessera-build.h"
#include "tap.h"
#include "topology.h"
#include "util.h"

static void topology_freep(struct tessera_topology **t)
{
        topology_free(*t);
}
#define _cleanup_topology_ _cleanup_(topology_freep)

/*
 * tests/run exports TESSERA_SRC; without it, find the data next to this file:
 * Meson compiles from the build dir, so a relative __FILE__ starts there.
 */
static void data_path(const char *name, char *buf, size_t n)
{
        const char *src = getenv("TESSERA_SRC");
        if (src && src[0]) {
                snprintf(buf, n, "%s/tests/data/%s", src, name);
                return;
        }
        char file[] = __FILE__;
        const char *dir = dirname(file);
        snprintf(buf, n, "%s%s/../data/%s", dir[0] == '/' ? "" : TESSERA_BUILDDIR "/", dir, name);
}

/* Online CPUs as the kernel lists them ("0-1,4"), counted. */
static long count_online_cpus(void)
{
        char buf[4096];
        if (read_file_at(AT_FDCWD, "/sys/devices/system/cpu/online", buf, sizeof(buf), NULL) <= 0)
                return sysconf(_SC_NPROCESSORS_ONLN);
        long count = 0;
        char *save = NULL;
        for (char *range = strtok_r(buf, ",", &save); range; range = strtok_r(NULL, ",", &save)) {
                unsigned long lo, hi;
                int n = sscanf(range, "%lu-%lu", &lo, &hi);
                if (n == 1)
                        hi = lo;
                else if (n != 2)
                        return -1;
                count += (long)(hi - lo + 1);
        }
        return count;
}

/* Every CPU names an existing NUMA node whose cpuset contains it. */
static bool cpus_match_numa(const struct tessera_topology *t)
{
        for (size_t i = 0; i < t->n_cpus; i++) {
                const struct topo_cpu *cpu = &t->cpus[i];
                if (cpu->numa < 0)
                        return false;
                const struct topo_numa *node = topology_numa(t, (unsigned)cpu->numa);
                if (!node || !hwloc_bitmap_isset(node->cpus, cpu->os_index))
                        return false;
        }
        return true;
}

static bool cpus_sorted(const struct tessera_topology *t)
{
        for (size_t i = 1; i < t->n_cpus; i++)
                if (t->cpus[i - 1].os_index >= t->cpus[i].os_index)
                        return false;
        return true;
}

static void test_this_machine(void)
{
        struct tessera_error err = {0};
        _cleanup_topology_ struct tessera_topology *t = NULL;
        int r = topology_load(NULL, &t, &err);
        if (!ok(r == 0 && t, "load this machine (%s)", err.msg))
                return;
        ok(!t->synthetic, "this machine is not synthetic");
        long online = count_online_cpus();
        ok(t->n_cpus == (size_t)online, "one cpu per online CPU (%zu, kernel says %ld)", t->n_cpus, online);
        ok(cpus_sorted(t), "cpus sorted by os_index");
        ok(t->n_numa >= 1, "at least one NUMA node (%zu)", t->n_numa);
        uint64_t total = 0;
        for (size_t i = 0; i < t->n_numa; i++)
                total += t->numa[i].bytes;
        ok(total > 0, "NUMA memory is known (%llu bytes)", (unsigned long long)total);
        ok(cpus_match_numa(t), "every cpu's NUMA node exists and holds it");
        ok(topology_cpu(t, t->cpus[0].os_index) == &t->cpus[0], "topology_cpu finds cpu %u", t->cpus[0].os_index);
        ok(topology_cpu(t, 1u << 30) == NULL, "topology_cpu of a missing cpu is NULL");

        size_t pci = 0, net = 0;
        for (size_t i = 0; i < t->n_devices; i++) {
                const struct topo_device *d = &t->devices[i];
                diag("device %s: %s pci=%s numa=%d", d->id, d->description, d->pci, d->numa);
                pci += d->kind == TOPO_DEV_PCI;
                net += d->kind == TOPO_DEV_NET;
                if (d->kind == TOPO_DEV_NET && STREQ(d->id, "lo"))
                        ok(0, "lo must not be listed");
        }
        diag("%zu PCI devices, %zu interfaces", pci, net);
        ok(net == 0 || t->devices[t->n_devices - 1].kind == TOPO_DEV_NET, "interfaces listed after PCI (%zu)", net);
}

static void test_find_device(void)
{
        struct tessera_error err = {0};
        _cleanup_topology_ struct tessera_topology *t = NULL;
        if (!ok(topology_load(NULL, &t, &err) == 0, "load this machine (%s)", err.msg))
                return;
        struct topo_device dev;

        int r = topology_find_device(t, "lo", &dev, &err);
        ok(r < 0 && strstr(err.msg, "'lo'") && strstr(err.msg, "loopback"), "lo is refused (%s)", err.msg);

        r = topology_find_device(t, "nonexistent0", &dev, &err);
        ok(r == -ENODEV && strstr(err.msg, "no such device 'nonexistent0'"), "unknown interface: %s", err.msg);

        r = topology_find_device(t, "/dev/null", &dev, &err);
        ok(r == 0 && dev.kind == TOPO_DEV_CHAR && dev.dev_major == 1 && dev.dev_minor == 3 &&
                   STREQ(dev.description, "char 1:3") && STREQ(dev.id, "/dev/null"),
           "/dev/null is char 1:3 (%s)", r == 0 ? dev.description : err.msg);

        r = topology_find_device(t, "/etc/passwd", &dev, &err);
        ok(r == -ENODEV && strstr(err.msg, "'/etc/passwd' is not a device node"), "regular file refused: %s", err.msg);

        r = topology_find_device(t, "/nonexistent-dev-node", &dev, &err);
        ok(r == -ENOENT && strstr(err.msg, "/nonexistent-dev-node"), "missing node: %s", err.msg);

        r = topology_find_device(t, "0000:ff:1f.7", &dev, &err);
        ok(r == -ENODEV && strstr(err.msg, "0000:ff:1f.7"), "missing PCI address: %s", err.msg);

        /* Any block device will do; loop devices exist only when the loop driver is there. */
        const char *blocks[] = {"/dev/vda", "/dev/sda", "/dev/nvme0n1", "/dev/loop0"};
        const char *block = NULL;
        for (size_t i = 0; i < ELEMENTSOF(blocks) && !block; i++)
                if (stat(blocks[i], &(struct stat){0}) == 0)
                        block = blocks[i];
        if (block) {
                r = topology_find_device(t, block, &dev, &err);
                ok(r == 0 && dev.kind == TOPO_DEV_BLOCK && strncmp(dev.description, "block ", 6) == 0,
                   "%s is a block device (%s, pci=%s)", block, r == 0 ? dev.description : err.msg, dev.pci);
        } else {
                skip("no block device node among /dev/vda, sda, nvme0n1, loop0");
        }

        /* A listed PCI device can be found by id, also in short form. */
        for (size_t i = 0; i < t->n_devices; i++) {
                if (t->devices[i].kind != TOPO_DEV_PCI)
                        continue;
                char id[64];
                snprintf(id, sizeof(id), "%s", t->devices[i].id);
                r = topology_find_device(t, id, &dev, &err);
                ok(r == 0 && STREQ(dev.id, id), "find PCI device %s (%s)", id, dev.description);
                if (strncmp(id, "0000:", 5) == 0) {
                        r = topology_find_device(t, id + 5, &dev, &err);
                        ok(r == 0 && STREQ(dev.id, id), "find PCI device by short form %s", id + 5);
                }
                break;
        }
}

/* An interface made after topology_load is found by re-probing sysfs. */
static void test_new_interface(void)
{
        if (geteuid() != 0) {
                skip("creating a veth pair needs root");
                return;
        }
        struct tessera_error err = {0};
        _cleanup_topology_ struct tessera_topology *t = NULL;
        if (!ok(topology_load(NULL, &t, &err) == 0, "load this machine (%s)", err.msg))
                return;
        char a[IFNAMSIZ], b[IFNAMSIZ], cmd[128];
        snprintf(a, sizeof(a), "ttp%da", (int)getpid());
        snprintf(b, sizeof(b), "ttp%db", (int)getpid());
        snprintf(cmd, sizeof(cmd), "ip link add %s type veth peer name %s", a, b);
        if (system(cmd) != 0) {
                skip("`%s` failed: no veth support", cmd);
                return;
        }
        struct topo_device dev;
        int r = topology_find_device(t, a, &dev, &err);
        ok(r == 0 && dev.kind == TOPO_DEV_NET && STREQ(dev.id, a) && STREQ(dev.description, "virtual (veth)") &&
                   dev.pci[0] == '\0' && dev.numa == -1,
           "new veth %s found after load (%s)", a, r == 0 ? dev.description : err.msg);
        bool listed = false;
        for (size_t i = 0; i < t->n_devices; i++)
                listed |= STREQ(t->devices[i].id, b);
        ok(listed, "its peer %s is in the refreshed list", b);

        snprintf(cmd, sizeof(cmd), "ip link del %s", a);
        ok(system(cmd) == 0, "delete veth %s", a);
        ok(topology_refresh_devices(t, &err) == 0, "refresh (%s)", err.msg);
        listed = false;
        for (size_t i = 0; i < t->n_devices; i++)
                listed |= STREQ(t->devices[i].id, a) || STREQ(t->devices[i].id, b);
        ok(!listed, "deleted veth gone after refresh");
}

static void test_hardware_interface(void)
{
        struct tessera_error err = {0};
        _cleanup_topology_ struct tessera_topology *t = NULL;
        if (!ok(topology_load(NULL, &t, &err) == 0, "load this machine (%s)", err.msg))
                return;
        for (size_t i = 0; i < t->n_devices; i++) {
                const struct topo_device *d = &t->devices[i];
                if (d->kind != TOPO_DEV_NET || !d->pci[0])
                        continue;
                struct topo_device pci;
                int r = topology_find_device(t, d->pci, &pci, &err);
                ok(r == 0 && pci.kind == TOPO_DEV_PCI, "interface %s (driver %s) sits on PCI device %s", d->id,
                   d->description, d->pci);
                ok(strncmp(d->description, "virtual", 7) != 0, "a PCI-backed interface is not called virtual");
                return;
        }
        skip("no PCI-backed network interface on this machine");
}

static void test_xml_256(void)
{
        struct tessera_error err = {0};
        _cleanup_topology_ struct tessera_topology *t = NULL;
        char path[4096];
        data_path("topo-2s8n256c.xml", path, sizeof(path));
        int r = topology_load(path, &t, &err);
        if (!ok(r == 0 && t, "load topo-2s8n256c.xml (%s)", err.msg))
                return;
        ok(t->synthetic, "XML topology is synthetic");
        ok(t->n_cpus == 256, "256 cpus (%zu)", t->n_cpus);
        ok(t->n_numa == 8, "8 NUMA nodes (%zu)", t->n_numa);
        ok(cpus_sorted(t), "cpus sorted");
        int max_package = -1;
        bool packages_ok = true;
        for (size_t i = 0; i < t->n_cpus; i++) {
                const struct topo_cpu *c = &t->cpus[i];
                if (c->package > max_package)
                        max_package = c->package;
                /* 32 cores per node, 4 nodes per package, numbered in order */
                packages_ok &= c->package == (int)(c->os_index / 128) && c->numa == (int)(c->os_index / 32);
        }
        ok(max_package == 1, "2 packages (max index %d)", max_package);
        ok(packages_ok, "cpu n is in package n/128 and NUMA node n/32");
        ok(cpus_match_numa(t), "cpu->numa matches the NUMA cpusets");
        bool mem_ok = true, weight_ok = true;
        for (size_t i = 0; i < t->n_numa; i++) {
                mem_ok &= t->numa[i].os_index == i && t->numa[i].bytes == 64ULL << 30;
                weight_ok &= hwloc_bitmap_weight(t->numa[i].cpus) == 32;
        }
        ok(mem_ok, "each NUMA node has the XML's 64 GiB");
        ok(weight_ok, "each NUMA node holds 32 cpus");
        ok(t->n_devices == 0, "the synthetic XML has no devices (%zu)", t->n_devices);

        struct topo_device dev;
        r = topology_find_device(t, "/dev/null", &dev, &err);
        ok(r == -ENODEV && strstr(err.msg, "ledger-only topology: no device '/dev/null'"), "no /dev probe: %s",
           err.msg);
        r = topology_find_device(t, "lo", &dev, &err);
        ok(r < 0, "no lo either: %s", err.msg);
        r = topology_find_device(t, "eth0", &dev, &err);
        ok(r == -ENODEV && strstr(err.msg, "ledger-only topology: no device 'eth0'"), "no sysfs probe: %s", err.msg);
        ok(topology_refresh_devices(t, &err) == 0 && t->n_devices == 0, "refresh keeps the XML's devices only");
}

static void test_xml_small(void)
{
        struct tessera_error err = {0};
        _cleanup_topology_ struct tessera_topology *t = NULL;
        char path[4096];
        data_path("topo-1s2n4c.xml", path, sizeof(path));
        int r = topology_load(path, &t, &err);
        if (!ok(r == 0 && t, "load topo-1s2n4c.xml (%s)", err.msg))
                return;
        ok(t->n_cpus == 4 && t->n_numa == 2, "4 cpus in 2 NUMA nodes (%zu, %zu)", t->n_cpus, t->n_numa);
        ok(t->n_numa == 2 && t->numa[0].bytes == 8ULL << 30 && t->numa[1].bytes == 8ULL << 30, "8 GiB per node");
        ok(t->n_cpus == 4 && t->cpus[0].numa == 0 && t->cpus[1].numa == 0 && t->cpus[2].numa == 1 &&
                   t->cpus[3].numa == 1,
           "cpus 0-1 on node 0, 2-3 on node 1");
        bool cores_distinct = true;
        for (size_t i = 1; i < t->n_cpus; i++)
                cores_distinct &= t->cpus[i].core != t->cpus[i - 1].core;
        ok(cores_distinct, "one core per cpu");
        ok(topology_numa(t, 1) && topology_numa(t, 2) == NULL, "topology_numa finds 1, not 2");
}

static bool has_device(const struct tessera_topology *t, const struct topo_device *d)
{
        for (size_t i = 0; i < t->n_devices; i++)
                if (t->devices[i].kind == d->kind && STREQ(t->devices[i].id, d->id) && STREQ(t->devices[i].pci, d->pci))
                        return true;
        return false;
}

/* This machine exported to XML and loaded back: same CPUs, NUMA nodes and PCI devices, planning only. */
static void test_exported_xml(void)
{
        struct tessera_error err = {0};
        _cleanup_topology_ struct tessera_topology *live = NULL, *saved = NULL;
        if (!ok(topology_load(NULL, &live, &err) == 0, "load this machine (%s)", err.msg))
                return;
        char dir[] = "/tmp/test-topology-XXXXXX";
        if (!ok(mkdtemp(dir) != NULL, "make a scratch directory %s", dir))
                return;
        char path[sizeof(dir) + 16];
        snprintf(path, sizeof(path), "%s/node.xml", dir);
        if (ok(hwloc_topology_export_xml(live->hw, path, 0) == 0, "export this machine to %s", path)) {
                int r = topology_load(path, &saved, &err);
                ok(r == 0 && saved->synthetic, "load the export (%s)", err.msg);
                if (r == 0) {
                        ok(saved->n_cpus == live->n_cpus && saved->n_numa == live->n_numa, "same cpus and NUMA nodes");
                        bool same = true;
                        size_t pci = 0;
                        for (size_t i = 0; i < saved->n_devices; i++) {
                                const struct topo_device *d = &saved->devices[i];
                                /* hwloc exports interfaces with hardware behind them only */
                                same &= has_device(live, d);
                                pci += d->kind == TOPO_DEV_PCI;
                        }
                        for (size_t i = 0; i < live->n_devices; i++)
                                pci -= live->devices[i].kind == TOPO_DEV_PCI;
                        ok(same && pci == 0, "the export's devices are this machine's, with the same PCI devices");
                }
        }
        unlink(path);
        rmdir(dir);
}

static void test_bad_xml(void)
{
        struct tessera_error err = {0};
        struct tessera_topology *t = NULL;
        int r = topology_load("/nonexistent/topo.xml", &t, &err);
        ok(r == -ENOENT && !t && strstr(err.msg, "/nonexistent/topo.xml"), "missing XML names the path: %s", err.msg);

        char dir[] = "/tmp/test-topology-XXXXXX";
        if (!ok(mkdtemp(dir) != NULL, "make a scratch directory %s", dir))
                return;
        char path[sizeof(dir) + 16];
        snprintf(path, sizeof(path), "%s/bad.xml", dir);
        _cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd >= 0 && write(fd, "this is not XML", 15) == 15) {
                r = topology_load(path, &t, &err);
                ok(r < 0 && !t && strstr(err.msg, path), "garbage XML is refused and named: %s", err.msg);
        } else {
                ok(0, "cannot write %s: %s", path, strerror(errno));
        }
        unlink(path);
        r = topology_load(dir, &t, &err);
        ok(r < 0 && !t && strstr(err.msg, dir), "a directory is refused: %s", err.msg);
        rmdir(dir);
}

int main(void)
{
        test_this_machine();
        test_find_device();
        test_new_interface();
        test_hardware_interface();
        test_xml_256();
        test_xml_small();
        test_exported_xml();
        test_bad_xml();
        return done_testing();
}
