/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Network interfaces over rtnetlink: moving one into an enclave's net namespace and back. */
#ifndef TESSERA_NETDEV_H
#define TESSERA_NETDEV_H

#include <stdbool.h>
#include <sys/types.h>

#include "tessera/tessera.h"

/* True when `ifname` exists in the caller's net namespace. */
bool netdev_exists(const char *ifname);
/* Moves `ifname` from the caller's net namespace into the one of `pid`. */
int netdev_move_to_pid(const char *ifname, pid_t pid, struct tessera_error *err);
/* Moves `ifname` from the net namespace of `pid` back to the caller's. */
int netdev_move_from_pid(const char *ifname, pid_t pid, struct tessera_error *err);
/* Lists interface names (except lo) in the net namespace of `pid`; caller frees. */
int netdev_list_in_pid(pid_t pid, char ***ret, size_t *n, struct tessera_error *err);
/* True when `ifname` carries the caller's default route: never given away. */
bool netdev_has_default_route(const char *ifname);

#endif
