/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <signal.h>
#include <string.h>

#include "fault.h"
#include "util.h"

static const char *const points[] = {
        "create:recorded",  /* enclave row and resources committed as 'creating' */
        "create:cgroup",    /* cgroups made and limited */
        "create:spawned",   /* supervisor running */
        "create:devices",   /* interfaces moved in */
        "create:committed", /* state 'running' committed, before the reply */
        "assign:ledger",    /* resources taken in the open transaction */
        "assign:kernel",    /* cgroup/interface changed, not yet committed */
        "release:kernel",   /* cgroup/interface changed, not yet committed */
        "destroy:marked",   /* state 'destroying' committed */
        "destroy:killed",   /* processes killed, cgroups removed */
        "destroy:devices",  /* interfaces moved back */
        NULL,
};

static const char *armed;

int fault_arm(const char *name, struct tessera_error *err)
{
        for (size_t i = 0; points[i]; i++)
                if (STREQ(points[i], name)) {
                        armed = points[i];
                        return 0;
                }
        return tessera_error_set(err, EINVAL, "unknown fault point '%s' (see tesserad --list-fault-points)", name);
}

void fault_point(const char *name)
{
        if (armed && STREQ(armed, name))
                raise(SIGKILL);
}

const char *const *fault_points(void)
{
        return points;
}
