/*
 * fixed: exponent rule and round trip, the stream (slices, balance, table),
 * dequantize-and-perturb, digest layout, the coefficient rounding, and the
 * fused sweep against a naive one-update-at-a-time reference: any order,
 * grouping or thread count gives bit-identical weights.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "fixed.h"
#include "gpt2.h"
#include "update.h"

/* xorshift64*: the tests' own reproducible randomness */
static uint64_t rng_state = 0x9e3779b97f4a7c15u;
static uint64_t rnd(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1du;
}
static size_t rnd_below(size_t n)
{
    return (size_t)(rnd() % n);
}

/* wte (300, 16) spans two sweep blocks; every other tensor is small. */
static sw_gpt2_config small_cfg(void)
{
    sw_gpt2_config c = {.n_layer = 2,
                        .n_head = 2,
                        .n_embd = 16,
                        .n_positions = 24,
                        .vocab_size = 300,
                        .layer_norm_epsilon = 1e-5f,
                        .tie_word_embeddings = false};
    return c;
}

static sw_gpt2 *small_model(uint64_t seed)
{
    sw_gpt2_config cfg = small_cfg();
    sw_gpt2 *m = NULL;
    assert_int_equal(sw_gpt2_alloc(&cfg, &m, NULL), 0);
    sw_gpt2_init_random(m, seed);
    return m;
}

static sw_fixed *small_fixed(uint64_t seed)
{
    sw_gpt2 *m = small_model(seed);
    sw_fixed *f = NULL;
    assert_int_equal(sw_fixed_from_model(m, &f, NULL), 0);
    sw_gpt2_free(m);
    return f;
}

static sw_train_spec test_spec(sw_perturb p, double lr)
{
    sw_train_spec s;
    memset(&s, 0, sizeof(s));
    for (int i = 0; i < SW_ID_BYTES; i++)
        s.run_id[i] = (uint8_t)(3 * i + 1);
    s.perturb = p;
    s.schedule = SW_SCHEDULE_CONSTANT;
    s.lr = lr;
    s.total_steps = 1000;
    s.directions = 1;
    s.max_scale = 1.0;
    return s;
}

static sw_update random_update(void)
{
    sw_update u;
    memset(&u, 0, sizeof(u));
    u.origin[0] = (uint8_t)rnd_below(4); /* a few origins */
    u.step = rnd() % 1000000;
    u.q = (int8_t)((int)rnd_below(255) - 127);
    u.scale = (float)(rnd_below(1000) + 1) / 1000.0f;
    return u;
}

/*
 * The naive reference: per update, per tensor, z from sw_zstream over the
 * whole tensor, k from sw_fixed_update_k, the delta rule, summed in int64;
 * then one saturating write.
 */
static uint64_t ref_apply(sw_fixed *f, const sw_train_spec *spec, const bool *trainable,
                          const sw_update *u, size_t k)
{
    int64_t *sum = calloc(f->n_params, sizeof(int64_t));
    int16_t *z = malloc(f->n_params * sizeof(int16_t));
    assert_non_null(sum);
    assert_non_null(z);
    for (size_t i = 0; i < k; i++) {
        uint8_t seed[SW_ID_BYTES];
        sw_update_seed(spec->run_id, u[i].origin, u[i].step, seed);
        for (size_t t = 0; t < f->n_tensors; t++) {
            if (trainable && !trainable[t]) continue;
            const sw_gpt2_tensor *ts = &f->tensors[t];
            const int64_t kk = sw_fixed_update_k(f, spec, &u[i], t);
            sw_zstream(seed, spec->perturb, ts->offset, ts->numel, z);
            for (size_t j = 0; j < ts->numel; j++) {
                const int64_t d = spec->perturb == SW_PERTURB_RADEMACHER
                                      ? (z[j] > 0 ? kk : -kk)
                                      : sw_fixed_gauss_delta(kk, z[j]);
                sum[ts->offset + j] += d;
            }
        }
    }
    uint64_t sat = 0;
    for (size_t j = 0; j < f->n_params; j++) {
        int64_t v = f->w[j] + sum[j];
        if (v > INT32_MAX || v < INT32_MIN) {
            v = v > 0 ? INT32_MAX : INT32_MIN;
            sat++;
        }
        f->w[j] = (int32_t)v;
    }
    free(sum);
    free(z);
    f->saturations += sat;
    return sat;
}

static void test_exponent_rule(void **state)
{
    (void)state;
    /* below SW_FIXED_MIN_MAGNITUDE (1.0) every tensor gets the exponent of 1.0 */
    assert_int_equal(sw_fixed_exponent(0.0), 27);
    assert_int_equal(sw_fixed_exponent(1e-9), 27);
    assert_int_equal(sw_fixed_exponent(0.0625), 27);
    assert_int_equal(sw_fixed_exponent(0.99), 27);
    assert_int_equal(sw_fixed_exponent(1.0), 27);
    assert_int_equal(sw_fixed_exponent(2.0), 26);
    assert_int_equal(sw_fixed_exponent(65504.0), 12);
    /* 8x the largest magnitude fits; 16x does not (the exponent is the largest that fits) */
    const double ms[] = {1.0, 1.5, 2.0, 3.0, 1000.0, 1e18};
    for (size_t i = 0; i < sizeof(ms) / sizeof(ms[0]); i++) {
        const int e = sw_fixed_exponent(ms[i]);
        assert_true(8.0 * ms[i] * ldexp(1.0, e) < 2147483648.0);
        assert_true(16.0 * ms[i] * ldexp(1.0, e) >= 2147483648.0);
    }
}

/* For every tensor: e_t follows the rule, and to_float(from_model(w)) is
 * within half a fixed-point unit of w. */
static void check_round_trip(const sw_gpt2 *m)
{
    sw_fixed *f = NULL;
    assert_int_equal(sw_fixed_from_model(m, &f, NULL), 0);
    assert_int_equal(f->n_params, m->n_params);
    float *back = malloc(f->n_params * sizeof(float));
    assert_non_null(back);
    sw_fixed_to_float(f, back);
    for (size_t t = 0; t < f->n_tensors; t++) {
        const sw_gpt2_tensor *ts = &f->tensors[t];
        double mx = 0;
        for (size_t j = 0; j < ts->numel; j++)
            mx = fmax(mx, fabs((double)m->params[ts->offset + j]));
        assert_int_equal(f->exp[t], sw_fixed_exponent(mx));
        const double unit = ldexp(1.0, -f->exp[t]);
        for (size_t j = 0; j < ts->numel; j++) {
            const double err = fabs((double)back[ts->offset + j] - m->params[ts->offset + j]);
            assert_true(err <= 0.5 * unit);
            assert_true(llabs((long long)f->w[ts->offset + j]) < (1ll << 28));
        }
    }
    /* to_model is the same floats */
    sw_gpt2 *m2 = NULL;
    assert_int_equal(sw_fixed_to_model(f, &m2, NULL), 0);
    assert_memory_equal(m2->params, back, f->n_params * sizeof(float));
    /* converting the converted model again changes nothing */
    sw_fixed *f2 = NULL;
    assert_int_equal(sw_fixed_from_model(m2, &f2, NULL), 0);
    assert_memory_equal(f2->exp, f->exp, f->n_tensors);
    assert_memory_equal(f2->w, f->w, f->n_params * sizeof(int32_t));
    sw_fixed_free(f2);
    sw_gpt2_free(m2);
    free(back);
    sw_fixed_free(f);
}

static void test_round_trip_small_and_fixture(void **state)
{
    (void)state;
    sw_gpt2 *m = small_model(5);
    check_round_trip(m);
    /* values at awkward places: exact ties, tiny values, one large tensor */
    m->params[0] = 0.1f;
    m->params[1] = -3.0e-12f;
    m->params[2] = 12345.678f;
    check_round_trip(m);
    sw_gpt2_free(m);
    sw_gpt2 *fx = NULL;
    sw_diag d;
    int rc = sw_gpt2_load(SW_MODEL_DIR, &fx, &d);
    if (rc < 0) fail_msg("%s", d.msg);
    check_round_trip(fx);
    sw_gpt2_free(fx);
}

static void test_from_model_refuses_unrepresentable(void **state)
{
    (void)state;
    sw_gpt2 *m = small_model(6);
    sw_fixed *f = NULL;
    sw_diag d;
    sw_gpt2_tensor t;
    sw_gpt2_tensor_at(&m->cfg, 3, &t);
    m->params[t.offset + 2] = NAN;
    assert_int_equal(sw_fixed_from_model(m, &f, &d), SW_EFORMAT);
    assert_null(f);
    assert_non_null(strstr(d.msg, t.name));
    m->params[t.offset + 2] = 3e19f;
    assert_int_equal(sw_fixed_from_model(m, &f, &d), SW_EFORMAT);
    assert_non_null(strstr(d.msg, "2^64"));
    m->params[t.offset + 2] = 1e19f; /* below 2^64: fine */
    assert_int_equal(sw_fixed_from_model(m, &f, &d), 0);
    assert_int_equal(f->exp[3], -36);
    sw_fixed_free(f);
    sw_gpt2_free(m);
}

static void test_zstream_slices_equal_full_generation(void **state)
{
    (void)state;
    uint8_t seed[SW_ID_BYTES];
    for (int i = 0; i < SW_ID_BYTES; i++)
        seed[i] = (uint8_t)(7 * i);
    const size_t n = 70001;
    int16_t *full = malloc(n * sizeof(int16_t));
    int16_t *part = malloc(n * sizeof(int16_t));
    assert_non_null(full);
    assert_non_null(part);
    for (int dist = 0; dist < 2; dist++) {
        const sw_perturb p = dist ? SW_PERTURB_GAUSSIAN : SW_PERTURB_RADEMACHER;
        const uint64_t base = dist ? (UINT64_C(1) << 37) - 40000 : (UINT64_C(1) << 40) + 3;
        const uint64_t bases[] = {0, base};
        for (int b = 0; b < 2; b++) {
            sw_zstream(seed, p, bases[b], n, full);
            for (int trial = 0; trial < 200; trial++) {
                const size_t first = rnd_below(n);
                const size_t len = trial < 20 ? rnd_below(20) : rnd_below(n - first + 1);
                if (first + len > n) continue;
                sw_zstream(seed, p, bases[b] + first, len, part);
                assert_memory_equal(part, full + first, len * sizeof(int16_t));
            }
        }
    }
    /* the purposes are distinct streams */
    uint8_t a[64], c[64];
    sw_stream_bytes(seed, SW_STREAM_Z, 0, 64, a);
    sw_stream_bytes(seed, SW_STREAM_ROUND, 0, 64, c);
    assert_memory_not_equal(a, c, 64);
    free(full);
    free(part);
}

static void test_rademacher_balance(void **state)
{
    (void)state;
    uint8_t seed[SW_ID_BYTES] = {1, 2, 3};
    const size_t n = 1000000;
    int16_t *z = malloc(n * sizeof(int16_t));
    assert_non_null(z);
    sw_zstream(seed, SW_PERTURB_RADEMACHER, 12345, n, z);
    long plus = 0, runs = 0;
    for (size_t j = 0; j < n; j++) {
        assert_true(z[j] == 8192 || z[j] == -8192);
        plus += z[j] > 0;
        runs += j > 0 && z[j] != z[j - 1];
    }
    /* sigma = 500 for both counts: 5 sigma */
    assert_true(labs(plus - (long)n / 2) < 2500);
    assert_true(labs(runs - (long)n / 2) < 2500);
    free(z);
}

static void test_gauss_table_and_stream(void **state)
{
    (void)state;
    double var = 0;
    for (int i = 0; i < 256; i++) {
        assert_int_equal(sw_gauss_table[i], -sw_gauss_table[255 - i]);
        if (i > 0) assert_true(sw_gauss_table[i] > sw_gauss_table[i - 1]);
        var += (double)sw_gauss_table[i] * sw_gauss_table[i] / (8192.0 * 8192.0) / 256.0;
    }
    /* quantiles of the standard normal: variance a little below 1 */
    assert_true(var > 0.97 && var < 1.0);
    uint8_t seed[SW_ID_BYTES] = {9};
    const size_t n = 256 * 4000;
    int16_t *z = malloc(n * sizeof(int16_t));
    assert_non_null(z);
    sw_zstream(seed, SW_PERTURB_GAUSSIAN, 77, n, z);
    long count[256] = {0};
    for (size_t j = 0; j < n; j++) {
        int idx = -1;
        for (int i = 0; i < 256 && idx < 0; i++)
            if (sw_gauss_table[i] == z[j]) idx = i;
        assert_true(idx >= 0);
        count[idx]++;
    }
    for (int i = 0; i < 256; i++) /* mean 4000, sigma 63 */
        assert_true(labs(count[i] - 4000) < 400);
    free(z);
}

static void test_dequant_pm(void **state)
{
    (void)state;
    sw_fixed *f = small_fixed(11);
    const size_t n = f->n_params;
    float *w = malloc(n * sizeof(float)), *p = malloc(n * sizeof(float)),
          *m = malloc(n * sizeof(float));
    int16_t *z = malloc(n * sizeof(int16_t));
    assert_true(w && p && m && z);
    sw_fixed_to_float(f, w);
    uint8_t seed[SW_ID_BYTES] = {4, 4};
    sw_zstream(seed, SW_PERTURB_GAUSSIAN, 0, n, z);
    const float eps = 1e-3f;
    for (int trial = 0; trial < 50; trial++) {
        const size_t first = trial == 0 ? 0 : rnd_below(n);
        const size_t len = trial == 0 ? n : rnd_below(n - first + 1);
        sw_fixed_dequant_pm(f, first, len, z + first, eps, p, m);
        for (size_t j = 0; j < len; j++) {
            const float d = eps * ((float)z[first + j] / 8192.0f);
            assert_true(p[j] == w[first + j] + d);
            assert_true(m[j] == w[first + j] - d);
        }
        sw_fixed_dequant_pm(f, first, len, z + first, eps, p, NULL);
        for (size_t j = 0; j < len; j++)
            assert_true(p[j] == w[first + j] + eps * ((float)z[first + j] / 8192.0f));
        sw_fixed_dequant_pm(f, first, len, NULL, eps, p, m);
        assert_memory_equal(p, w + first, len * sizeof(float));
        assert_memory_equal(m, w + first, len * sizeof(float));
    }
    /* rademacher: exactly w +- eps */
    sw_zstream(seed, SW_PERTURB_RADEMACHER, 0, n, z);
    sw_fixed_dequant_pm(f, 0, n, z, eps, p, m);
    for (size_t j = 0; j < n; j++)
        assert_true(p[j] == w[j] + (z[j] > 0 ? eps : -eps));
    free(w);
    free(p);
    free(m);
    free(z);
    sw_fixed_free(f);
}

static void test_digest_layout_and_clone(void **state)
{
    (void)state;
    sw_fixed *f = small_fixed(12);
    uint8_t d1[32], d2[32], want[32];
    sw_fixed_digest(f, d1);
    /* independently: BLAKE2b-256 of the tag, the exponents and the LE weights */
    const size_t len = 18 + f->n_tensors + 4 * f->n_params;
    uint8_t *buf = malloc(len);
    assert_non_null(buf);
    memcpy(buf, "swarmtune-fixed-v1", 18);
    for (size_t t = 0; t < f->n_tensors; t++)
        buf[18 + t] = (uint8_t)f->exp[t];
    for (size_t j = 0; j < f->n_params; j++)
        for (int b = 0; b < 4; b++)
            buf[18 + f->n_tensors + 4 * j + (size_t)b] = (uint8_t)((uint32_t)f->w[j] >> (8 * b));
    crypto_generichash(want, 32, buf, len, NULL, 0);
    assert_memory_equal(d1, want, 32);
    free(buf);
    sw_fixed *c = NULL;
    assert_int_equal(sw_fixed_clone(f, &c, NULL), 0);
    sw_fixed_digest(c, d2);
    assert_memory_equal(d1, d2, 32);
    c->w[c->n_params - 1] ^= 1;
    sw_fixed_digest(c, d2);
    assert_memory_not_equal(d1, d2, 32);
    c->w[c->n_params - 1] ^= 1;
    c->exp[0]++;
    sw_fixed_digest(c, d2);
    assert_memory_not_equal(d1, d2, 32);
    sw_fixed_free(c);
    sw_fixed *z = NULL;
    assert_int_equal(sw_fixed_alloc_like(f, &z, NULL), 0);
    assert_memory_equal(z->exp, f->exp, f->n_tensors);
    for (size_t j = 0; j < z->n_params; j++)
        assert_int_equal(z->w[j], 0);
    sw_fixed_free(z);
    sw_fixed_free(f);
}

static void test_round_coef_and_gauss_delta(void **state)
{
    (void)state;
    const uint64_t half = UINT64_C(1) << 63;
    /* exact integers ignore the uniform */
    assert_int_equal(sw_fixed_round_coef(3.0, 0, 0), 3);
    assert_int_equal(sw_fixed_round_coef(3.0, 0, UINT64_MAX), 3);
    assert_int_equal(sw_fixed_round_coef(-0.75, 2, 0), -3);
    /* 2.5: up when uniform < 2^63 */
    assert_int_equal(sw_fixed_round_coef(2.5, 0, half - 1), 3);
    assert_int_equal(sw_fixed_round_coef(2.5, 0, half), 2);
    assert_int_equal(sw_fixed_round_coef(-2.5, 0, half - 1), -2);
    assert_int_equal(sw_fixed_round_coef(-2.5, 0, half), -3);
    assert_int_equal(sw_fixed_round_coef(0x1p-40, 10, 0), 1);
    assert_int_equal(sw_fixed_round_coef(0x1p-40, 10, UINT64_C(1) << 34), 0);
    /* clamp */
    assert_int_equal(sw_fixed_round_coef(1e30, 31, 0), SW_FIXED_K_MAX);
    assert_int_equal(sw_fixed_round_coef(-1e30, 31, 0), -SW_FIXED_K_MAX);
    /* round half away from zero, symmetric */
    assert_int_equal(sw_fixed_gauss_delta(1, 4096), 1);
    assert_int_equal(sw_fixed_gauss_delta(1, -4096), -1);
    assert_int_equal(sw_fixed_gauss_delta(1, 4095), 0);
    assert_int_equal(sw_fixed_gauss_delta(-1, 4095), 0);
    assert_int_equal(sw_fixed_gauss_delta(3, 8192), 3);
    assert_int_equal(sw_fixed_gauss_delta(-5, 12288), -8); /* -7.5 */
    for (int i = 0; i < 256; i++) {
        const int64_t k = (int64_t)(rnd() % (2 * SW_FIXED_K_MAX + 1)) - SW_FIXED_K_MAX;
        assert_int_equal(sw_fixed_gauss_delta(k, sw_gauss_table[i]),
                         -sw_fixed_gauss_delta(k, sw_gauss_table[255 - i]));
        const double want = (double)k * sw_gauss_table[i] / 8192.0;
        assert_true(fabs((double)sw_fixed_gauss_delta(k, sw_gauss_table[i]) - want) <= 0.5);
    }
    /* sw_fixed_update_k is the documented composition */
    sw_fixed *f = small_fixed(1);
    sw_train_spec spec = test_spec(SW_PERTURB_RADEMACHER, 1e-4);
    sw_update u = random_update();
    uint8_t seed[SW_ID_BYTES], b[8];
    sw_update_seed(spec.run_id, u.origin, u.step, seed);
    const size_t t = 5;
    sw_stream_bytes(seed, SW_STREAM_ROUND, 8 * t, 8, b);
    uint64_t uni = 0;
    for (int i = 0; i < 8; i++)
        uni |= (uint64_t)b[i] << (8 * i);
    assert_true(uni == sw_fixed_round_uniform(seed, t));
    assert_int_equal(sw_fixed_update_k(f, &spec, &u, t),
                     sw_fixed_round_coef(sw_update_coef(&spec, &u), f->exp[t], uni));
    sw_fixed_free(f);
}

/* Applies u[0..k) in a random grouping (batches of random sizes, each a
 * sw_fixed_apply call) with the given thread count. */
static void apply_grouped(sw_fixed *f, const sw_train_spec *spec, const bool *tr,
                          const sw_update *u, size_t k, int threads)
{
    for (size_t i = 0; i < k;) {
        size_t len = 1 + rnd_below(k - i);
        if (rnd() % 3 == 0) len = k - i;
        sw_fixed_apply(f, spec, tr, u + i, len, threads);
        i += len;
    }
}

static void shuffle(sw_update *u, size_t k)
{
    for (size_t i = k; i > 1; i--) {
        const size_t j = rnd_below(i);
        const sw_update t = u[i - 1];
        u[i - 1] = u[j];
        u[j] = t;
    }
}

static void check_order_free(sw_perturb p, double lr, bool zero_start, int trials, size_t kmax)
{
    sw_fixed *base = small_fixed(21);
    if (zero_start) memset(base->w, 0, base->n_params * sizeof(int32_t));
    bool *tr = malloc(base->n_tensors);
    sw_update *u = malloc(kmax * sizeof(sw_update));
    assert_non_null(tr);
    assert_non_null(u);
    sw_train_spec spec = test_spec(p, lr);
    for (int trial = 0; trial < trials; trial++) {
        const size_t k = 1 + rnd_below(kmax);
        for (size_t i = 0; i < k; i++)
            u[i] = random_update();
        const bool masked = trial % 3 == 2;
        for (size_t t = 0; t < base->n_tensors; t++)
            tr[t] = !masked || rnd() % 2;
        sw_fixed *ref = NULL, *a = NULL, *b = NULL;
        assert_int_equal(sw_fixed_clone(base, &ref, NULL), 0);
        assert_int_equal(sw_fixed_clone(base, &a, NULL), 0);
        assert_int_equal(sw_fixed_clone(base, &b, NULL), 0);
        ref_apply(ref, &spec, masked ? tr : NULL, u, k);
        assert_int_equal(ref->saturations, 0);
        /* all at once, one thread */
        sw_fixed_apply(a, &spec, masked ? tr : NULL, u, k, 1);
        /* shuffled, random batches, 2 or 3 threads */
        shuffle(u, k);
        apply_grouped(b, &spec, masked ? tr : NULL, u, k, 2 + (int)rnd_below(2));
        assert_memory_equal(a->w, ref->w, ref->n_params * sizeof(int32_t));
        assert_memory_equal(b->w, ref->w, ref->n_params * sizeof(int32_t));
        assert_int_equal(a->saturations, 0);
        assert_int_equal(b->saturations, 0);
        uint8_t da[32], db[32];
        sw_fixed_digest(a, da);
        sw_fixed_digest(b, db);
        assert_memory_equal(da, db, 32);
        /* the updates did something, and only to trainable tensors */
        size_t changed = 0;
        for (size_t t = 0; t < base->n_tensors; t++) {
            const sw_gpt2_tensor *ts = &base->tensors[t];
            const bool same =
                memcmp(a->w + ts->offset, base->w + ts->offset, ts->numel * sizeof(int32_t)) == 0;
            if (masked && !tr[t]) assert_true(same);
            changed += !same;
        }
        assert_true(changed > 0 || k < 3);
        sw_fixed_free(ref);
        sw_fixed_free(a);
        sw_fixed_free(b);
    }
    free(u);
    free(tr);
    sw_fixed_free(base);
}

static void test_apply_order_free_rademacher(void **state)
{
    (void)state;
    check_order_free(SW_PERTURB_RADEMACHER, 5e-5, false, 40, 150);
}

static void test_apply_order_free_gaussian(void **state)
{
    (void)state;
    check_order_free(SW_PERTURB_GAUSSIAN, 5e-5, false, 40, 150);
}

/* Coefficients near 2^25: the int32 group sums overflow their bound and the
 * sweep goes through its int64 path; results must not change. */
static void test_apply_wide_sums(void **state)
{
    (void)state;
    check_order_free(SW_PERTURB_RADEMACHER, 2.5e-4, true, 12, 64);
    check_order_free(SW_PERTURB_GAUSSIAN, 2.5e-4, true, 12, 64);
}

static void test_apply_saturation(void **state)
{
    (void)state;
    sw_fixed *f = small_fixed(31);
    sw_train_spec spec = test_spec(SW_PERTURB_RADEMACHER, 1e-2);
    /* push every weight near the top; 1e-2 * 127 * 1.0 * 2^e is far above the headroom */
    for (size_t j = 0; j < f->n_params; j++)
        f->w[j] = INT32_MAX - (int32_t)rnd_below(1000);
    sw_fixed *ref = NULL;
    assert_int_equal(sw_fixed_clone(f, &ref, NULL), 0);
    sw_update u[3];
    for (int i = 0; i < 3; i++) {
        u[i] = random_update();
        u[i].q = -127; /* coefficient > 0: delta = +-k */
        u[i].scale = 1.0f;
    }
    const uint64_t want = ref_apply(ref, &spec, NULL, u, 3);
    sw_fixed_apply(f, &spec, NULL, u, 3, 2);
    assert_true(want > f->n_params / 4);
    assert_int_equal(f->saturations, want);
    assert_memory_equal(f->w, ref->w, f->n_params * sizeof(int32_t));
    size_t top = 0;
    for (size_t j = 0; j < f->n_params; j++)
        top += f->w[j] == INT32_MAX;
    assert_true(top > 0 && top <= want);
    sw_fixed_free(ref);
    sw_fixed_free(f);

    /* From the bottom: 12 updates at the k clamp; where most signs agree
     * the true sum exceeds 2^31 yet lands inside the range (the int64 path),
     * elsewhere it saturates at INT32_MIN. */
    spec.lr = 0.1; /* k at its clamp even with the 1.0 magnitude floor */
    for (int dist = 0; dist < 2; dist++) {
        spec.perturb = dist ? SW_PERTURB_GAUSSIAN : SW_PERTURB_RADEMACHER;
        f = small_fixed(32);
        for (size_t j = 0; j < f->n_params; j++)
            f->w[j] = INT32_MIN + (int32_t)rnd_below(1000);
        assert_int_equal(sw_fixed_clone(f, &ref, NULL), 0);
        sw_fixed *before = NULL;
        assert_int_equal(sw_fixed_clone(f, &before, NULL), 0);
        sw_update v[12];
        for (int i = 0; i < 12; i++) {
            v[i] = random_update();
            v[i].q = -127;
            v[i].scale = 1.0f;
        }
        const uint64_t w2 = ref_apply(ref, &spec, NULL, v, 12);
        sw_fixed_apply(f, &spec, NULL, v, 12, 1 + dist);
        assert_int_equal(f->saturations, w2);
        assert_memory_equal(f->w, ref->w, f->n_params * sizeof(int32_t));
        size_t wide = 0;
        for (size_t j = 0; j < f->n_params; j++)
            wide += (int64_t)f->w[j] - before->w[j] > INT32_MAX;
        assert_true(wide > 0);
        sw_fixed_free(before);
        sw_fixed_free(ref);
        sw_fixed_free(f);
    }
}

/* A learning rate far below one unit: k is 0 or -1, but the mean change per
 * update matches the real-valued coefficient. */
static void test_tiny_lr_moves_weights_on_average(void **state)
{
    (void)state;
    sw_fixed *f = small_fixed(41);
    const size_t t = 0;    /* wte */
    const double x = -0.3; /* wanted coef * 2^e_t */
    sw_train_spec spec = test_spec(SW_PERTURB_RADEMACHER, 1.0);
    spec.lr = -x * ldexp(1.0, -f->exp[t]) / 100.0; /* q = 100, scale = 1 */
    sw_fixed *zero = NULL;
    assert_int_equal(sw_fixed_alloc_like(f, &zero, NULL), 0);
    bool *tr = calloc(f->n_tensors, 1);
    assert_non_null(tr);
    tr[t] = true;
    const int n = 4000;
    int16_t z[64];
    double sum = 0;
    for (int i = 0; i < n; i++) {
        sw_update u;
        memset(&u, 0, sizeof(u));
        u.step = (uint64_t)i;
        u.q = 100;
        u.scale = 1.0f;
        memset(zero->w, 0, zero->n_params * sizeof(int32_t));
        sw_fixed_apply(zero, &spec, tr, &u, 1, 1);
        uint8_t seed[SW_ID_BYTES];
        sw_update_seed(spec.run_id, u.origin, u.step, seed);
        sw_zstream(seed, SW_PERTURB_RADEMACHER, f->tensors[t].offset, 64, z);
        /* delta_j * z_j is k for every j of the tensor */
        const int32_t k = zero->w[0] * (z[0] > 0 ? 1 : -1);
        for (int j = 0; j < 64; j++)
            assert_int_equal(zero->w[j] * (z[j] > 0 ? 1 : -1), k);
        assert_true(k == 0 || k == -1);
        sum += k;
    }
    /* sigma of the mean: sqrt(0.21 / 4000) = 0.0072; 5 sigma */
    assert_true(fabs(sum / n - x) < 0.036);
    free(tr);
    sw_fixed_free(zero);
    sw_fixed_free(f);
}

static void test_apply_nothing_trainable_or_zero_q(void **state)
{
    (void)state;
    sw_fixed *f = small_fixed(51);
    sw_fixed *c = NULL;
    assert_int_equal(sw_fixed_clone(f, &c, NULL), 0);
    sw_train_spec spec = test_spec(SW_PERTURB_GAUSSIAN, 1e-4);
    bool *tr = calloc(f->n_tensors, 1);
    assert_non_null(tr);
    sw_update u = random_update();
    sw_fixed_apply(c, &spec, tr, &u, 1, 2);
    assert_memory_equal(c->w, f->w, f->n_params * sizeof(int32_t));
    u.q = 0;
    sw_fixed_apply(c, &spec, NULL, &u, 1, 1);
    assert_memory_equal(c->w, f->w, f->n_params * sizeof(int32_t));
    sw_fixed_apply(c, &spec, NULL, &u, 0, 1);
    assert_memory_equal(c->w, f->w, f->n_params * sizeof(int32_t));
    free(tr);
    sw_fixed_free(c);
    sw_fixed_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exponent_rule),
        cmocka_unit_test(test_round_trip_small_and_fixture),
        cmocka_unit_test(test_from_model_refuses_unrepresentable),
        cmocka_unit_test(test_zstream_slices_equal_full_generation),
        cmocka_unit_test(test_rademacher_balance),
        cmocka_unit_test(test_gauss_table_and_stream),
        cmocka_unit_test(test_dequant_pm),
        cmocka_unit_test(test_digest_layout_and_clone),
        cmocka_unit_test(test_round_coef_and_gauss_delta),
        cmocka_unit_test(test_apply_order_free_rademacher),
        cmocka_unit_test(test_apply_order_free_gaussian),
        cmocka_unit_test(test_apply_wide_sums),
        cmocka_unit_test(test_apply_saturation),
        cmocka_unit_test(test_tiny_lr_moves_weights_on_average),
        cmocka_unit_test(test_apply_nothing_trainable_or_zero_q),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
