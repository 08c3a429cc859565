/*
 * update: seeds, learning-rate schedules, coefficients and checks of updates
 * (update.h).  Every number the swarm must agree on is computed here with
 * double +, -, *, / in a fixed order (core/ is built with -ffp-contract=off),
 * so every IEEE-754 platform computes the same bits.  No libm.
 */
#include "update.h"

#include <math.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

void sw_update_seed(const uint8_t run_id[SW_ID_BYTES], const uint8_t origin[SW_ID_BYTES],
                    uint64_t step, uint8_t seed[SW_ID_BYTES])
{
    uint8_t in[2 * SW_ID_BYTES + 8];
    memcpy(in, run_id, SW_ID_BYTES);
    memcpy(in + SW_ID_BYTES, origin, SW_ID_BYTES);
    for (int i = 0; i < 8; i++)
        in[2 * SW_ID_BYTES + i] = (uint8_t)(step >> (8 * i));
    SW_ASSERT(sodium_init() >= 0);
    crypto_generichash(seed, SW_ID_BYTES, in, sizeof(in), NULL, 0);
}

/*
 * cos(pi * p) for p in [0, 1] without libm: reflect to [0, 1/2] (cos(pi p) =
 * -cos(pi (1 - p)), and 1 - p is exact there), then the Taylor series of cos
 * up to x^26 by Horner's rule.  For x = pi p <= pi/2 the first omitted term is
 * below 2e-22, so the error is a few ulp; the test compares against libm.
 */
static double update_cos_pi(double p)
{
    double sign = 1.0;
    if (p > 0.5) {
        p = 1.0 - p;
        sign = -1.0;
    }
    const double x = 3.141592653589793115997963468544185161590576171875 * p;
    const double x2 = x * x;
    /* 1 - x2/2! + x2^2/4! - ... ; term n is (-1)^n x2^n / (2n)!, n = 0..13 */
    double s = 1.0;
    for (int n = 13; n >= 1; n--)
        s = 1.0 - x2 / (double)((2 * n - 1) * (2 * n)) * s;
    return sign * s;
}

double sw_update_lr(const sw_train_spec *spec, uint64_t step)
{
    const uint64_t dirs = spec->directions > 0 ? (uint64_t)spec->directions : 1;
    const uint64_t t = step / dirs; /* the training step */
    if (spec->schedule == SW_SCHEDULE_CONSTANT) return spec->lr;
    if (t < spec->warmup_steps) return spec->lr * (double)(t + 1) / (double)spec->warmup_steps;
    double p = 1.0;
    if (t < spec->total_steps) /* then total_steps > t >= warmup_steps */
        p = (double)(t - spec->warmup_steps) / (double)(spec->total_steps - spec->warmup_steps);
    if (spec->schedule == SW_SCHEDULE_LINEAR) return spec->lr * (1.0 - p);
    return spec->lr * 0.5 * (1.0 + update_cos_pi(p));
}

double sw_update_coef(const sw_train_spec *spec, const sw_update *u)
{
    const double dirs = spec->directions > 0 ? (double)spec->directions : 1.0;
    return -sw_update_lr(spec, u->step) * (double)u->q * (double)u->scale / dirs;
}

int sw_update_check(const sw_train_spec *spec, const sw_update *u, sw_diag *diag)
{
    char who[24];
    sodium_bin2hex(who, sizeof(who), u->origin, 8); /* 16 hex digits name the origin */
    if (u->q < -SW_Q_MAX)
        return sw_diag_set(diag, SW_EFORMAT, "update %s/%llu: q = %d is out of range -127..127",
                           who, (unsigned long long)u->step, (int)u->q);
    if (!isfinite(u->scale) || !(u->scale > 0.0f))
        return sw_diag_set(diag, SW_EFORMAT, "update %s/%llu: scale %g is not finite and > 0", who,
                           (unsigned long long)u->step, (double)u->scale);
    if ((double)u->scale > spec->max_scale)
        return sw_diag_set(diag, SW_ETOOBIG, "update %s/%llu: scale %g exceeds max_scale %g", who,
                           (unsigned long long)u->step, (double)u->scale, spec->max_scale);
    return 0;
}

const char *sw_schedule_name(sw_schedule s)
{
    switch (s) {
    case SW_SCHEDULE_CONSTANT:
        return "constant";
    case SW_SCHEDULE_LINEAR:
        return "linear";
    case SW_SCHEDULE_COSINE:
        return "cosine";
    }
    return "unknown";
}

int sw_schedule_parse(const char *name, sw_schedule *out)
{
    static const sw_schedule all[] = {SW_SCHEDULE_CONSTANT, SW_SCHEDULE_LINEAR, SW_SCHEDULE_COSINE};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        if (name && strcmp(name, sw_schedule_name(all[i])) == 0) {
            *out = all[i];
            return 0;
        }
    }
    return SW_EINVAL;
}

const char *sw_perturb_name(sw_perturb p)
{
    switch (p) {
    case SW_PERTURB_RADEMACHER:
        return "rademacher";
    case SW_PERTURB_GAUSSIAN:
        return "gaussian";
    }
    return "unknown";
}

int sw_perturb_parse(const char *name, sw_perturb *out)
{
    static const sw_perturb all[] = {SW_PERTURB_RADEMACHER, SW_PERTURB_GAUSSIAN};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        if (name && strcmp(name, sw_perturb_name(all[i])) == 0) {
            *out = all[i];
            return 0;
        }
    }
    return SW_EINVAL;
}

int sw_update_key_cmp(const sw_update *a, const sw_update *b)
{
    int c = memcmp(a->origin, b->origin, SW_ID_BYTES);
    if (c != 0) return c;
    return a->step < b->step ? -1 : a->step > b->step;
}

/* By key, then by position: the first of equal keys sorts first. */
static int update_ptr_cmp(const void *a, const void *b)
{
    const sw_update *x = *(const sw_update *const *)a, *y = *(const sw_update *const *)b;
    int c = sw_update_key_cmp(x, y);
    if (c != 0) return c;
    return x < y ? -1 : x > y;
}

int sw_update_dedup(sw_update *u, size_t n, size_t *kept)
{
    *kept = n;
    if (n < 2) return 0;
    const sw_update **by_key = malloc(n * sizeof *by_key);
    bool *drop = calloc(n, sizeof *drop);
    if (by_key == NULL || drop == NULL) {
        free(by_key);
        free(drop);
        return SW_ENOMEM;
    }
    for (size_t i = 0; i < n; i++)
        by_key[i] = &u[i];
    qsort(by_key, n, sizeof *by_key, update_ptr_cmp);
    for (size_t i = 1; i < n; i++)
        if (sw_update_key_cmp(by_key[i - 1], by_key[i]) == 0) drop[by_key[i] - u] = true;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (!drop[i]) u[k++] = u[i];
    free(by_key);
    free(drop);
    *kept = k;
    return 0;
}

bool sw_train_spec_row(const sw_train_spec *spec, int64_t row)
{
    if (spec->n_rows == 0) return true;
    int lo = 0, hi = spec->n_rows;
    while (lo < hi) {
        const int mid = lo + (hi - lo) / 2;
        if (spec->rows[mid] < row)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < spec->n_rows && spec->rows[lo] == row;
}
