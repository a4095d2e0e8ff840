/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fault injection for crash tests: tesserad --fault NAME kills itself with
 * SIGKILL when it reaches the named step, so a test can check that a restart
 * reconciles whatever was half-done.  Every step name is in one table, so a
 * test can walk all of them (`tesserad --list-fault-points`).
 */
#ifndef TESSERA_FAULT_H
#define TESSERA_FAULT_H

/* Arms the point; -EINVAL (with the list in err) for an unknown name. */
#include "tessera/tessera.h"
int fault_arm(const char *name, struct tessera_error *err);
/* Dies here if this point is armed. */
void fault_point(const char *name);
/* NULL-terminated list of every point. */
const char *const *fault_points(void);

#endif
