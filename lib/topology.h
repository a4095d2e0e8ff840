/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The node as hwloc sees it: processing units with their core and NUMA node,
 * NUMA nodes with their memory, PCI devices, plus network interfaces and
 * block devices from sysfs (virtual ones hwloc does not report).
 */
#ifndef TESSERA_TOPOLOGY_H
#define TESSERA_TOPOLOGY_H

#include <hwloc.h>
#include <stdbool.h>
#include <stdint.h>

#include "tessera/tessera.h"

struct topo_cpu {
        unsigned os_index; /* the kernel's CPU number */
        int core;          /* os_index of its core (or logical index when hwloc has none) */
        int package;
        int numa; /* os_index of its NUMA node */
};

struct topo_numa {
        unsigned os_index;
        uint64_t bytes; /* local memory */
        hwloc_bitmap_t cpus;
};

enum topo_device_kind { TOPO_DEV_PCI, TOPO_DEV_NET, TOPO_DEV_BLOCK, TOPO_DEV_CHAR };

struct topo_device {
        enum topo_device_kind kind;
        char id[64];                   /* "0000:00:03.0", "eth0", "/dev/loop3" */
        char description[128];         /* vendor/device name, driver, or "virtual" */
        char pci[16];                  /* PCI address behind a net/block device, or "" */
        int numa;                      /* -1 when unknown */
        unsigned dev_major, dev_minor; /* TOPO_DEV_BLOCK and TOPO_DEV_CHAR only */
};

struct tessera_topology {
        hwloc_topology_t hw;
        bool synthetic;        /* loaded from XML: planning only, no kernel steps */
        struct topo_cpu *cpus; /* sorted by os_index */
        size_t n_cpus;
        struct topo_numa *numa; /* sorted by os_index */
        size_t n_numa;
        struct topo_device *devices;
        size_t n_devices;
};

/* xml_path NULL: this machine.  Otherwise an hwloc XML file (synthetic). */
int topology_load(const char *xml_path, struct tessera_topology **ret, struct tessera_error *err);
void topology_free(struct tessera_topology *t);
/* Re-reads the device list (interfaces come and go); cores and NUMA stay. */
int topology_refresh_devices(struct tessera_topology *t, struct tessera_error *err);

const struct topo_cpu *topology_cpu(const struct tessera_topology *t, unsigned os_index);
const struct topo_numa *topology_numa(const struct tessera_topology *t, unsigned os_index);
/* Finds a device by id; for /dev paths and interfaces not in the list, probes the system. */
int topology_find_device(struct tessera_topology *t, const char *id, struct topo_device *ret,
                         struct tessera_error *err);

#endif
