/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fuzzes spec_from_json, which reads what untrusted clients send the daemon.  A spec
 * it accepts must come out of spec_to_json and go back in unchanged.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "spec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        json_t *in = json_loadb((const char *)data, size, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
        if (!in)
                return 0;
        struct tessera_spec s, back;
        struct tessera_error err = {0};
        if (spec_from_json(in, &s, &err) < 0) {
                if (err.code <= 0 || !err.msg[0])
                        abort();
                spec_done(&s);
                json_decref(in);
                return 0;
        }
        (void)spec_validate(&s, &err);
        json_t *j = spec_to_json(&s);
        if (!j || spec_from_json(j, &back, &err) < 0)
                abort();
        json_t *again = spec_to_json(&back);
        if (!again || !json_equal(j, again))
                abort();
        json_decref(again);
        json_decref(j);
        json_decref(in);
        spec_done(&back);
        spec_done(&s);
        return 0;
}
