/*
 * Fuzzes the config.json parser on arbitrary bytes (not NUL-terminated): an
 * accepted config must pass validation and stay under the parameter bound.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpt2_config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "fuzz_config: invariant broken: %s\n", what);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sw_gpt2_config cfg;
    sw_diag diag;
    int rc = sw_gpt2_config_parse((const char *)data, size, "fuzz.json", &cfg, &diag);
    if (rc != 0) {
        fuzz_check(rc < 0, "failure returns a negative code");
        fuzz_check(strncmp(diag.msg, "fuzz.json: ", 11) == 0, "message names the input");
        return 0;
    }
    fuzz_check(sw_gpt2_config_validate(&cfg, "fuzz.json", &diag) == 0, "accepted is valid");
    fuzz_check(cfg.n_embd % cfg.n_head == 0, "n_embd is a multiple of n_head");
    fuzz_check(sw_gpt2_config_param_count(&cfg) <= SW_GPT2_MAX_PARAMS, "parameter bound");
    fuzz_check(cfg.layer_norm_epsilon > 0.0f && cfg.layer_norm_epsilon <= 1.0f, "epsilon");
    return 0;
}
