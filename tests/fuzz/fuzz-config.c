/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fuzzes the tesserad configuration file parser.  What a file sets must also pass
 * config_validate: the two share their rules, and this keeps them that way.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct tessera_config c;
        struct tessera_error err = {0};
        config_init(&c);
        if (config_load_string(&c, (const char *)data, size, "fuzz.yaml", &err) < 0) {
                if (err.code <= 0 || strncmp(err.msg, "fuzz.yaml:", 10) != 0)
                        abort();
                return 0;
        }
        if (config_validate(&c, &err) < 0)
                abort();
        uint64_t nodes[4];
        (void)config_host_memory(&c, nodes, 4, &err);
        return 0;
}
