/*
 * Fuzzes the safetensors reader on arbitrary file images: open from memory,
 * then check the invariants every accepted file must keep (each tensor's
 * bytes inside the image, nbytes = numel x dtype size, find() agrees with
 * at()) and convert every tensor to float.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "fuzz_safetensors: invariant broken: %s\n", what);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sw_safetensors *st = NULL;
    sw_diag diag;
    int rc = sw_safetensors_open_mem(data, size, "fuzz.safetensors", &st, &diag);
    if (rc != 0) {
        fuzz_check(rc < 0 && st == NULL, "failure returns a negative code and no object");
        fuzz_check(strncmp(diag.msg, "fuzz.safetensors: ", 18) == 0, "message names the input");
        return 0;
    }
    const uint8_t *end = data + size;
    uint64_t covered = 0;
    for (size_t i = 0; i < sw_safetensors_count(st); i++) {
        const sw_st_tensor *t = sw_safetensors_at(st, i);
        fuzz_check(t->name[0] != '\0', "names are not empty");
        fuzz_check(sw_safetensors_find(st, t->name) == t, "find() returns the same tensor");
        fuzz_check(t->ndim >= 0 && t->ndim <= SW_ST_MAX_DIMS, "ndim within bounds");
        fuzz_check(t->nbytes == t->numel * sw_dtype_size(t->dtype), "nbytes = numel x size");
        const uint8_t *p = t->data;
        fuzz_check(p >= data + 8 && p <= end && t->nbytes <= (uint64_t)(end - p),
                   "data inside the image");
        covered += t->nbytes;
        float *out = malloc(t->numel ? (size_t)t->numel * sizeof *out : 1);
        if (out == NULL) abort();
        sw_st_tensor_to_f32(t, out);
        free(out);
    }
    fuzz_check(covered <= size, "tensors do not overlap");
    const char *meta = sw_safetensors_metadata(st);
    fuzz_check(meta == NULL || meta[0] == '{', "metadata is an object");
    sw_safetensors_close(st);
    return 0;
}
