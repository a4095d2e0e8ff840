/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The node as hwloc sees it (PUs, cores, packages, NUMA nodes, PCI devices),
 * plus the network interfaces of /sys/class/net, which include the virtual
 * ones hwloc never reports.  Device nodes under /dev are probed on demand.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/ethtool.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "topology.h"
#include "util.h"

#define SYS_CLASS_NET   "/sys/class/net"
#define SYS_PCI_DEVICES "/sys/bus/pci/devices"
#define XML_HINT        "is it an hwloc XML export, e.g. from `lstopo --of xml`?"

struct device_list {
        struct topo_device *v;
        size_t n, cap;
};

static void topology_freep(struct tessera_topology **t)
{
        topology_free(*t);
}

static void closedirp(DIR **d)
{
        if (*d)
                closedir(*d);
}

static const char *topology_origin(const struct tessera_topology *t)
{
        return t->synthetic ? "the topology" : "this machine's topology";
}

static int device_list_add(struct device_list *list, const struct topo_device *dev, struct tessera_error *err)
{
        if (list->n == list->cap) {
                size_t cap = list->cap ? list->cap * 2 : 16;
                struct topo_device *v = reallocarray(list->v, cap, sizeof(*v));
                if (!v)
                        return tessera_error_set(err, ENOMEM, "out of memory listing devices");
                list->v = v;
                list->cap = cap;
        }
        list->v[list->n++] = *dev;
        return 0;
}

/* "dddd:bb:dd.f" with a domain of 4 or more hex digits, as sysfs spells it. */
static bool is_pci_address(const char *s)
{
        size_t len = strlen(s);
        if (len < 12 || len >= sizeof(((struct topo_device *)0)->pci))
                return false;
        for (size_t i = 0; i < len; i++) {
                size_t from_end = len - i;
                if (from_end == 8 || from_end == 5) {
                        if (s[i] != ':')
                                return false;
                } else if (from_end == 2) {
                        if (s[i] != '.')
                                return false;
                } else if (!isxdigit((unsigned char)s[i])) {
                        return false;
                }
        }
        return true;
}

/* Accepts "0000:00:03.0", "00:03.0" (domain 0) and upper case; writes the sysfs spelling. */
static bool normalize_pci_address(const char *s, char ret[16])
{
        char buf[32];
        int n = snprintf(buf, sizeof(buf), "%s%s", strlen(s) == 7 ? "0000:" : "", s);
        if (n < 0 || (size_t)n >= sizeof(buf))
                return false;
        for (char *p = buf; *p; p++)
                *p = (char)tolower((unsigned char)*p);
        if (!is_pci_address(buf))
                return false;
        memcpy(ret, buf, (size_t)n + 1);
        return true;
}

/*
 * The PCI function a sysfs device hangs below: the last "dddd:bb:dd.f"
 * component of its resolved path (eth0 -> .../0000:00:03.0/virtio2).
 */
static bool sysfs_pci_address(const char *path, char ret[16])
{
        _cleanup_free_ char *real = realpath(path, NULL);
        if (!real)
                return false;
        bool found = false;
        char *save = NULL;
        for (char *c = strtok_r(real, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
                if (is_pci_address(c)) {
                        snprintf(ret, 16, "%s", c);
                        found = true;
                }
        }
        return found;
}

/* The single NUMA node an object is local to, or -1 when it spans several or none. */
static int nodeset_single_node(hwloc_const_nodeset_t nodeset)
{
        if (!nodeset || hwloc_bitmap_weight(nodeset) != 1)
                return -1;
        return hwloc_bitmap_first(nodeset);
}

static int io_object_numa(hwloc_topology_t hw, hwloc_obj_t obj)
{
        hwloc_obj_t ancestor = hwloc_get_non_io_ancestor_obj(hw, obj);
        return ancestor ? nodeset_single_node(ancestor->nodeset) : -1;
}

/* hwloc knows the locality of the PCI devices it kept; sysfs knows the others. */
static int pci_numa(const struct tessera_topology *t, const char *pci)
{
        hwloc_obj_t obj = hwloc_get_pcidev_by_busidstring(t->hw, pci);
        if (obj)
                return io_object_numa(t->hw, obj);
        if (t->synthetic)
                return -1;
        char path[PATH_MAX], buf[32];
        snprintf(path, sizeof(path), SYS_PCI_DEVICES "/%s/numa_node", pci);
        if (read_file_at(AT_FDCWD, path, buf, sizeof(buf), NULL) <= 0)
                return -1;
        char *end;
        long node = strtol(buf, &end, 10);
        return *end == '\0' && node >= 0 && node <= INT_MAX ? (int)node : -1;
}

static const char *pci_class_name(unsigned base_class)
{
        static const char *const names[] = {
                [0x01] = "storage controller",       [0x02] = "network controller",     [0x03] = "display controller",
                [0x04] = "multimedia controller",    [0x05] = "memory controller",      [0x06] = "bridge",
                [0x07] = "communication controller", [0x08] = "system peripheral",      [0x0b] = "processor",
                [0x0c] = "serial bus controller",    [0x12] = "processing accelerator",
        };
        if (base_class < ELEMENTSOF(names) && names[base_class])
                return names[base_class];
        return "PCI device";
}

static void describe_pci_ids(unsigned class_id, unsigned vendor, unsigned device, char *buf, size_t n)
{
        snprintf(buf, n, "%s (class %04x) [%04x:%04x]", pci_class_name(class_id >> 8), class_id, vendor, device);
}

static void describe_pci_object(hwloc_obj_t obj, char *buf, size_t n)
{
        const char *vendor = hwloc_obj_get_info_by_name(obj, "PCIVendor");
        const char *device = hwloc_obj_get_info_by_name(obj, "PCIDevice");
        if (vendor || device) {
                snprintf(buf, n, "%s%s%s", vendor ? vendor : "", vendor && device ? " " : "", device ? device : "");
                return;
        }
        const struct hwloc_pcidev_attr_s *pci = &obj->attr->pcidev;
        describe_pci_ids(pci->class_id, pci->vendor_id, pci->device_id, buf, n);
}

static void format_pci_address(const struct hwloc_pcidev_attr_s *pci, char ret[16])
{
        snprintf(ret, 16, "%04x:%02x:%02x.%x", (unsigned)pci->domain, (unsigned)pci->bus, (unsigned)pci->dev,
                 (unsigned)pci->func);
}

static int collect_pci_devices(const struct tessera_topology *t, struct device_list *list, struct tessera_error *err)
{
        for (hwloc_obj_t obj = hwloc_get_next_pcidev(t->hw, NULL); obj; obj = hwloc_get_next_pcidev(t->hw, obj)) {
                struct topo_device dev = {.kind = TOPO_DEV_PCI};
                format_pci_address(&obj->attr->pcidev, dev.id);
                describe_pci_object(obj, dev.description, sizeof(dev.description));
                dev.numa = io_object_numa(t->hw, obj);
                int r = device_list_add(list, &dev, err);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* An XML from another node may carry its interfaces as hwloc network OS devices. */
static int collect_xml_interfaces(const struct tessera_topology *t, struct device_list *list, struct tessera_error *err)
{
        for (hwloc_obj_t obj = hwloc_get_next_osdev(t->hw, NULL); obj; obj = hwloc_get_next_osdev(t->hw, obj)) {
                if (obj->attr->osdev.type != HWLOC_OBJ_OSDEV_NETWORK || !obj->name)
                        continue;
                struct topo_device dev = {.kind = TOPO_DEV_NET, .numa = io_object_numa(t->hw, obj)};
                snprintf(dev.id, sizeof(dev.id), "%s", obj->name);
                snprintf(dev.description, sizeof(dev.description), "network interface (from the topology XML)");
                if (obj->parent && obj->parent->type == HWLOC_OBJ_PCI_DEVICE)
                        format_pci_address(&obj->parent->attr->pcidev, dev.pci);
                int r = device_list_add(list, &dev, err);
                if (r < 0)
                        return r;
        }
        return 0;
}

static bool ifname_is_valid(const char *s)
{
        size_t len = strlen(s);
        return len > 0 && len < IFNAMSIZ && !strchr(s, '/') && !STREQ(s, ".") && !STREQ(s, "..");
}

/* The driver a virtual interface reports through ethtool ("veth", "ifb", "bridge"). */
static bool ethtool_driver(const char *ifname, char *buf, size_t n)
{
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return false;
        struct ethtool_drvinfo info = {.cmd = ETHTOOL_GDRVINFO};
        struct ifreq ifr = {0};
        snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
        ifr.ifr_data = (char *)&info;
        if (ioctl(fd, SIOCETHTOOL, &ifr) < 0 || info.driver[0] == '\0')
                return false;
        snprintf(buf, n, "%.*s", (int)sizeof(info.driver), info.driver);
        return true;
}

/* DEVTYPE= from the interface's uevent ("bridge", "vlan", "wlan"), when the kernel sets one. */
static bool uevent_devtype(int ifdir, char *buf, size_t n)
{
        char uevent[1024];
        if (read_file_at(ifdir, "uevent", uevent, sizeof(uevent), NULL) < 0)
                return false;
        char *save = NULL;
        for (char *line = strtok_r(uevent, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                if (strncmp(line, "DEVTYPE=", 8) == 0 && line[8]) {
                        snprintf(buf, n, "%s", line + 8);
                        return true;
                }
        }
        return false;
}

static void describe_virtual_interface(int ifdir, const char *ifname, char *buf, size_t n)
{
        char kind[64];
        if (uevent_devtype(ifdir, kind, sizeof(kind)) || ethtool_driver(ifname, kind, sizeof(kind)))
                snprintf(buf, n, "virtual (%s)", kind);
        else
                snprintf(buf, n, "virtual");
}

static void describe_hardware_interface(int ifdir, char *buf, size_t n)
{
        char target[PATH_MAX];
        ssize_t len = readlinkat(ifdir, "device/driver", target, sizeof(target) - 1);
        if (len < 0) {
                snprintf(buf, n, "no driver bound");
                return;
        }
        target[len] = '\0';
        const char *slash = strrchr(target, '/');
        snprintf(buf, n, "%s", slash ? slash + 1 : target);
}

/* Fills `dev` from /sys/class/net/IFNAME; -ENOENT (without a message) when there is no such interface. */
static int probe_interface(const struct tessera_topology *t, const char *ifname, struct topo_device *dev,
                           struct tessera_error *err)
{
        char path[PATH_MAX];
        snprintf(path, sizeof(path), SYS_CLASS_NET "/%s", ifname);
        _cleanup_close_ int ifdir = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (ifdir < 0) {
                if (errno == ENOENT)
                        return -ENOENT;
                return tessera_error_set(err, errno, "cannot open `%s`: %s", path, strerror(errno));
        }
        *dev = (struct topo_device){.kind = TOPO_DEV_NET, .numa = -1};
        snprintf(dev->id, sizeof(dev->id), "%s", ifname);

        struct stat st;
        if (fstatat(ifdir, "device", &st, 0) < 0) {
                describe_virtual_interface(ifdir, ifname, dev->description, sizeof(dev->description));
                return 0;
        }
        describe_hardware_interface(ifdir, dev->description, sizeof(dev->description));
        snprintf(path, sizeof(path), SYS_CLASS_NET "/%s/device", ifname);
        if (sysfs_pci_address(path, dev->pci))
                dev->numa = pci_numa(t, dev->pci);
        return 0;
}

static int collect_sysfs_interfaces(const struct tessera_topology *t, struct device_list *list,
                                    struct tessera_error *err)
{
        int fd = open(SYS_CLASS_NET, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return tessera_error_set(err, errno, "cannot open `" SYS_CLASS_NET "`: %s", strerror(errno));
        _cleanup_(closedirp) DIR *dir = fdopendir(fd);
        if (!dir) {
                int saved = errno;
                close(fd);
                return tessera_error_set(err, saved, "cannot read `" SYS_CLASS_NET "`: %s", strerror(saved));
        }
        for (struct dirent *de = readdir(dir); de; de = readdir(dir)) {
                if (de->d_name[0] == '.' || STREQ(de->d_name, "lo") || !ifname_is_valid(de->d_name))
                        continue;
                struct topo_device dev;
                int r = probe_interface(t, de->d_name, &dev, err);
                if (r == -ENOENT)
                        continue; /* it went away while we listed */
                if (r < 0)
                        return r;
                r = device_list_add(list, &dev, err);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int compare_devices(const void *a, const void *b)
{
        const struct topo_device *x = a, *y = b;
        if (x->kind != y->kind)
                return x->kind < y->kind ? -1 : 1;
        return strcmp(x->id, y->id);
}

int topology_refresh_devices(struct tessera_topology *t, struct tessera_error *err)
{
        struct device_list list = {0};
        int r = collect_pci_devices(t, &list, err);
        if (r >= 0)
                r = t->synthetic ? collect_xml_interfaces(t, &list, err) : collect_sysfs_interfaces(t, &list, err);
        if (r < 0) {
                free(list.v);
                return tessera_error_prefix(err, r, "cannot list the devices of %s", topology_origin(t));
        }
        if (list.n > 0)
                qsort(list.v, list.n, sizeof(*list.v), compare_devices);
        free(t->devices);
        t->devices = list.v;
        t->n_devices = list.n;
        return 0;
}

static int compare_cpus(const void *a, const void *b)
{
        const struct topo_cpu *x = a, *y = b;
        return x->os_index < y->os_index ? -1 : x->os_index > y->os_index;
}

static int compare_numa(const void *a, const void *b)
{
        const struct topo_numa *x = a, *y = b;
        return x->os_index < y->os_index ? -1 : x->os_index > y->os_index;
}

static void describe_cpu(hwloc_topology_t hw, hwloc_obj_t pu, struct topo_cpu *cpu)
{
        hwloc_obj_t core = hwloc_get_ancestor_obj_by_type(hw, HWLOC_OBJ_CORE, pu);
        hwloc_obj_t package = hwloc_get_ancestor_obj_by_type(hw, HWLOC_OBJ_PACKAGE, pu);
        cpu->os_index = pu->os_index;
        if (core)
                cpu->core = core->os_index != HWLOC_UNKNOWN_INDEX ? (int)core->os_index : (int)core->logical_index;
        else
                cpu->core = (int)pu->logical_index; /* no core level: each PU is its own core */
        cpu->package = package ? (int)package->logical_index : 0;
        /* A PU may see several nodes (HBM, CXL); the lowest is its ordinary DRAM node. */
        cpu->numa = pu->nodeset ? hwloc_bitmap_first(pu->nodeset) : -1;
}

static int collect_cpus(struct tessera_topology *t, struct tessera_error *err)
{
        int n = hwloc_get_nbobjs_by_type(t->hw, HWLOC_OBJ_PU);
        if (n <= 0)
                return tessera_error_set(err, EINVAL, "%s has no processing units", topology_origin(t));
        t->cpus = calloc((size_t)n, sizeof(*t->cpus));
        if (!t->cpus)
                return tessera_error_set(err, ENOMEM, "out of memory listing %d CPUs", n);
        hwloc_obj_t pu = NULL;
        while (t->n_cpus < (size_t)n && (pu = hwloc_get_next_obj_by_type(t->hw, HWLOC_OBJ_PU, pu)))
                describe_cpu(t->hw, pu, &t->cpus[t->n_cpus++]);
        qsort(t->cpus, t->n_cpus, sizeof(*t->cpus), compare_cpus);
        return 0;
}

static int collect_numa(struct tessera_topology *t, struct tessera_error *err)
{
        int n = hwloc_get_nbobjs_by_type(t->hw, HWLOC_OBJ_NUMANODE);
        if (n <= 0)
                return tessera_error_set(err, EINVAL, "%s has no NUMA nodes", topology_origin(t));
        t->numa = calloc((size_t)n, sizeof(*t->numa));
        if (!t->numa)
                return tessera_error_set(err, ENOMEM, "out of memory listing %d NUMA nodes", n);
        hwloc_obj_t node = NULL;
        while (t->n_numa < (size_t)n && (node = hwloc_get_next_obj_by_type(t->hw, HWLOC_OBJ_NUMANODE, node))) {
                struct topo_numa *numa = &t->numa[t->n_numa];
                numa->os_index = node->os_index;
                numa->bytes = node->attr->numanode.local_memory;
                numa->cpus = node->cpuset ? hwloc_bitmap_dup(node->cpuset) : hwloc_bitmap_alloc();
                if (!numa->cpus)
                        return tessera_error_set(err, ENOMEM, "out of memory copying the CPUs of NUMA node %u",
                                                 node->os_index);
                t->n_numa++;
        }
        qsort(t->numa, t->n_numa, sizeof(*t->numa), compare_numa);
        return 0;
}

static int check_xml_readable(const char *path, struct tessera_error *err)
{
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return tessera_error_set(err, errno, "cannot open topology XML `%s`: %s", path, strerror(errno));
        struct stat st;
        if (fstat(fd, &st) < 0)
                return tessera_error_set(err, errno, "cannot stat topology XML `%s`: %s", path, strerror(errno));
        if (!S_ISREG(st.st_mode))
                return tessera_error_set(err, EINVAL, "topology XML `%s` is not a regular file", path);
        return 0;
}

static int load_hwloc(struct tessera_topology *t, const char *xml_path, struct tessera_error *err)
{
        if (hwloc_topology_init(&t->hw) < 0) {
                t->hw = NULL;
                return tessera_error_set(err, errno, "cannot initialize hwloc: %s", strerror(errno));
        }
        /*
         * The whole node, not just what tesserad's own cgroup may use: on cgroup
         * v2 the enclaves' cpuset partitions take their cores out of every other
         * group's effective set, so a restarted tesserad would see only the host's.
         */
        if (hwloc_topology_set_flags(t->hw, HWLOC_TOPOLOGY_FLAG_INCLUDE_DISALLOWED) < 0)
                return tessera_error_set(err, errno, "cannot make hwloc include disallowed CPUs: %s", strerror(errno));
        /* Without this hwloc drops every PCI and OS device. */
        if (hwloc_topology_set_io_types_filter(t->hw, HWLOC_TYPE_FILTER_KEEP_IMPORTANT) < 0)
                return tessera_error_set(err, errno, "cannot make hwloc keep I/O devices: %s", strerror(errno));
        if (xml_path) {
                int r = check_xml_readable(xml_path, err);
                if (r < 0)
                        return r;
                if (hwloc_topology_set_xml(t->hw, xml_path) < 0)
                        return tessera_error_set(err, errno, "cannot parse topology XML `%s`: %s (" XML_HINT ")",
                                                 xml_path, strerror(errno));
                t->synthetic = true;
        }
        if (hwloc_topology_load(t->hw) < 0) {
                int saved = errno;
                if (xml_path)
                        return tessera_error_set(err, saved, "cannot load topology XML `%s`: %s (" XML_HINT ")",
                                                 xml_path, strerror(saved));
                return tessera_error_set(err, saved, "hwloc cannot discover this machine's topology: %s",
                                         strerror(saved));
        }
        return 0;
}

int topology_load(const char *xml_path, struct tessera_topology **ret, struct tessera_error *err)
{
        _cleanup_(topology_freep) struct tessera_topology *t = calloc(1, sizeof(*t));
        if (!t)
                return tessera_error_set(err, ENOMEM, "out of memory loading the topology");
        int r = load_hwloc(t, xml_path, err);
        if (r < 0)
                return r; /* its messages name the XML already */
        r = collect_cpus(t, err);
        if (r >= 0)
                r = collect_numa(t, err);
        if (r >= 0)
                r = topology_refresh_devices(t, err);
        if (r < 0)
                return xml_path ? tessera_error_prefix(err, r, "topology XML `%s`", xml_path) : r;
        *ret = TAKE_PTR(t);
        return 0;
}

void topology_free(struct tessera_topology *t)
{
        if (!t)
                return;
        for (size_t i = 0; i < t->n_numa; i++)
                hwloc_bitmap_free(t->numa[i].cpus);
        free(t->numa);
        free(t->cpus);
        free(t->devices);
        if (t->hw)
                hwloc_topology_destroy(t->hw);
        free(t);
}

const struct topo_cpu *topology_cpu(const struct tessera_topology *t, unsigned os_index)
{
        struct topo_cpu key = {.os_index = os_index};
        return bsearch(&key, t->cpus, t->n_cpus, sizeof(*t->cpus), compare_cpus);
}

const struct topo_numa *topology_numa(const struct tessera_topology *t, unsigned os_index)
{
        struct topo_numa key = {.os_index = os_index};
        return bsearch(&key, t->numa, t->n_numa, sizeof(*t->numa), compare_numa);
}

static const struct topo_device *find_listed(const struct tessera_topology *t, const char *id)
{
        for (size_t i = 0; i < t->n_devices; i++)
                if (STREQ(t->devices[i].id, id))
                        return &t->devices[i];
        return NULL;
}

static const char *file_type_name(mode_t mode)
{
        switch (mode & S_IFMT) {
        case S_IFREG: return "regular file";
        case S_IFDIR: return "directory";
        case S_IFIFO: return "FIFO";
        case S_IFSOCK: return "socket";
        default: return "not a device";
        }
}

static int probe_device_node(const struct tessera_topology *t, const char *path, struct topo_device *dev,
                             struct tessera_error *err)
{
        if (strlen(path) >= sizeof(dev->id))
                return tessera_error_set(err, ENAMETOOLONG, "device path '%s' is longer than %zu characters", path,
                                         sizeof(dev->id) - 1);
        struct stat st;
        if (stat(path, &st) < 0)
                return tessera_error_set(err, errno, "no such device '%s': %s", path, strerror(errno));
        if (!S_ISBLK(st.st_mode) && !S_ISCHR(st.st_mode))
                return tessera_error_set(err, ENODEV,
                                         "'%s' is not a device node (it is a %s): give a block or "
                                         "character device under /dev",
                                         path, file_type_name(st.st_mode));
        bool block = S_ISBLK(st.st_mode);
        *dev = (struct topo_device){
                .kind = block ? TOPO_DEV_BLOCK : TOPO_DEV_CHAR,
                .numa = -1,
                .dev_major = major(st.st_rdev),
                .dev_minor = minor(st.st_rdev),
        };
        snprintf(dev->id, sizeof(dev->id), "%s", path);
        snprintf(dev->description, sizeof(dev->description), "%s %u:%u", block ? "block" : "char", dev->dev_major,
                 dev->dev_minor);
        char sys[PATH_MAX];
        snprintf(sys, sizeof(sys), "/sys/dev/%s/%u:%u", block ? "block" : "char", dev->dev_major, dev->dev_minor);
        if (sysfs_pci_address(sys, dev->pci))
                dev->numa = pci_numa(t, dev->pci);
        return 0;
}

/* A PCI function hwloc filtered out (KEEP_IMPORTANT drops e.g. USB controllers) is still in sysfs. */
static int probe_pci_function(const struct tessera_topology *t, const char *pci, struct topo_device *dev)
{
        char dir[PATH_MAX], path[PATH_MAX + 16], vendor[16], device[16], class[16];
        snprintf(dir, sizeof(dir), SYS_PCI_DEVICES "/%s", pci);
        snprintf(path, sizeof(path), "%s/vendor", dir);
        if (read_file_at(AT_FDCWD, path, vendor, sizeof(vendor), NULL) < 0)
                return -ENOENT;
        snprintf(path, sizeof(path), "%s/device", dir);
        if (read_file_at(AT_FDCWD, path, device, sizeof(device), NULL) < 0)
                return -ENOENT;
        snprintf(path, sizeof(path), "%s/class", dir);
        if (read_file_at(AT_FDCWD, path, class, sizeof(class), NULL) < 0)
                return -ENOENT;
        *dev = (struct topo_device){.kind = TOPO_DEV_PCI, .numa = pci_numa(t, pci)};
        snprintf(dev->id, sizeof(dev->id), "%s", pci);
        /* sysfs class is 0xCCSSPP: base class, subclass, programming interface. */
        unsigned long class_code = strtoul(class, NULL, 16);
        describe_pci_ids((unsigned)(class_code >> 8), (unsigned)strtoul(vendor, NULL, 16),
                         (unsigned)strtoul(device, NULL, 16), dev->description, sizeof(dev->description));
        return 0;
}

static int no_such_device(const char *id, struct tessera_error *err)
{
        return tessera_error_set(err, ENODEV, "no such device '%s': not a PCI address, network interface or /dev node",
                                 id);
}

static int probe_system(struct tessera_topology *t, const char *id, struct topo_device *ret, struct tessera_error *err)
{
        char pci[16];
        if (normalize_pci_address(id, pci)) {
                const struct topo_device *listed = find_listed(t, pci);
                if (listed) {
                        *ret = *listed;
                        return 0;
                }
                if (probe_pci_function(t, pci, ret) == 0)
                        return 0;
                return tessera_error_set(err, ENODEV, "no PCI device '%s' on this node (see `lspci -D`)", id);
        }
        if (!ifname_is_valid(id))
                return no_such_device(id, err);
        /* Interfaces appear at run time (veth pairs, VFs): list them again. */
        int r = topology_refresh_devices(t, err);
        if (r < 0)
                return r;
        const struct topo_device *listed = find_listed(t, id);
        if (!listed)
                return no_such_device(id, err);
        *ret = *listed;
        return 0;
}

int topology_find_device(struct tessera_topology *t, const char *id, struct topo_device *ret, struct tessera_error *err)
{
        if (!id || !id[0])
                return tessera_error_set(err, EINVAL, "empty device name");
        const struct topo_device *listed = find_listed(t, id);
        if (listed) {
                *ret = *listed;
                return 0;
        }
        if (STREQ(id, "lo"))
                return tessera_error_set(err, EINVAL,
                                         "'lo' is the loopback interface: every net namespace has its "
                                         "own, so it cannot be assigned");
        if (t->synthetic)
                return tessera_error_set(err, ENODEV, "ledger-only topology: no device '%s'", id);
        if (id[0] == '/')
                return probe_device_node(t, id, ret, err);
        return probe_system(t, id, ret, err);
}
