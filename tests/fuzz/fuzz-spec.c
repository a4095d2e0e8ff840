/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fuzzes the YAML spec parser.  Besides "never crash, never leak", it checks what the
 * daemon relies on: a spec that parses survives the JSON wire form unchanged.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "spec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct tessera_spec s, back;
        struct spec_locations locs;
        struct tessera_error err = {0};
        if (spec_parse_string((const char *)data, size, "fuzz.yaml", &s, &locs, &err) < 0) {
                /* every failure says why, and a located one names its file */
                if (err.code <= 0 || !err.msg[0] || strncmp(err.msg, "fuzz.yaml:", 10) != 0)
                        abort();
                spec_done(&s);
                return 0;
        }
        if (spec_validate(&s, &err) < 0) {
                spec_locate_error(&locs, &err);
                if (!err.msg[0])
                        abort();
        }
        json_t *j = spec_to_json(&s);
        if (!j)
                abort();
        if (spec_from_json(j, &back, &err) < 0)
                abort(); /* the wire form of a good spec must be accepted */
        json_t *again = spec_to_json(&back);
        if (!again || !json_equal(j, again))
                abort();
        json_decref(again);
        json_decref(j);
        spec_done(&back);
        spec_done(&s);
        return 0;
}
