/*
 * update: seed derivation, learning-rate schedules (the libm-free cosine
 * against libm), coefficients, checks and names.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "update.h"

#define assert_near(a, b, tol) assert_true(fabs((double)(a) - (double)(b)) <= (tol))

static sw_train_spec spec_of(sw_schedule s, double lr, uint64_t warmup, uint64_t total, int dirs)
{
    sw_train_spec spec;
    memset(&spec, 0, sizeof(spec));
    spec.schedule = s;
    spec.lr = lr;
    spec.warmup_steps = warmup;
    spec.total_steps = total;
    spec.directions = dirs;
    spec.max_scale = 4.0;
    return spec;
}

static void test_seed_is_blake2b_of_the_concatenation(void **state)
{
    (void)state;
    uint8_t run[SW_ID_BYTES], origin[SW_ID_BYTES], seed[SW_ID_BYTES], want[SW_ID_BYTES];
    for (int i = 0; i < SW_ID_BYTES; i++) {
        run[i] = (uint8_t)i;
        origin[i] = (uint8_t)(0xa0 + i);
    }
    const uint64_t step = UINT64_C(0x0102030405060708);
    sw_update_seed(run, origin, step, seed);
    uint8_t in[72];
    memcpy(in, run, 32);
    memcpy(in + 32, origin, 32);
    const uint8_t le[8] = {8, 7, 6, 5, 4, 3, 2, 1};
    memcpy(in + 64, le, 8);
    assert_true(sodium_init() >= 0);
    crypto_generichash(want, 32, in, sizeof(in), NULL, 0);
    assert_memory_equal(seed, want, 32);
    /* every input matters */
    uint8_t other[SW_ID_BYTES];
    sw_update_seed(run, origin, step + 1, other);
    assert_memory_not_equal(seed, other, 32);
    origin[5] ^= 1;
    sw_update_seed(run, origin, step, other);
    assert_memory_not_equal(seed, other, 32);
}

static void test_constant_schedule(void **state)
{
    (void)state;
    sw_train_spec s = spec_of(SW_SCHEDULE_CONSTANT, 1e-4, 10, 100, 1);
    assert_true(sw_update_lr(&s, 0) == 1e-4);
    assert_true(sw_update_lr(&s, 50) == 1e-4);
    assert_true(sw_update_lr(&s, 1000) == 1e-4);
}

static void test_linear_schedule_key_points(void **state)
{
    (void)state;
    /* 2 directions: update step s belongs to training step s / 2 */
    sw_train_spec s = spec_of(SW_SCHEDULE_LINEAR, 1e-3, 10, 110, 2);
    assert_true(sw_update_lr(&s, 0) == 1e-3 * 1 / 10);
    assert_true(sw_update_lr(&s, 1) == 1e-3 * 1 / 10);
    assert_true(sw_update_lr(&s, 2) == 1e-3 * 2 / 10);
    assert_near(sw_update_lr(&s, 2 * 9), 1e-3, 1e-18); /* last warmup step: full lr */
    assert_true(sw_update_lr(&s, 2 * 10) == 1e-3);     /* p = 0 */
    assert_true(sw_update_lr(&s, 2 * 60 + 1) == 5e-4); /* p = 1/2 */
    assert_near(sw_update_lr(&s, 2 * 85), 1e-3 * 0.25, 1e-18);
    assert_true(sw_update_lr(&s, 2 * 110) == 0.0);
    assert_true(sw_update_lr(&s, 2 * 5000) == 0.0); /* clamped past the end */
    /* no warmup */
    s = spec_of(SW_SCHEDULE_LINEAR, 2.0, 0, 4, 1);
    assert_true(sw_update_lr(&s, 0) == 2.0);
    assert_true(sw_update_lr(&s, 1) == 1.5);
    assert_true(sw_update_lr(&s, 4) == 0.0);
    /* warmup longer than the run: decay never starts before the end */
    s = spec_of(SW_SCHEDULE_LINEAR, 1.0, 8, 4, 1);
    assert_true(sw_update_lr(&s, 3) == 0.5);
    assert_true(sw_update_lr(&s, 9) == 0.0);
}

static void test_cosine_schedule_matches_libm(void **state)
{
    (void)state;
    const uint64_t warm = 7, total = 7 + 1000003;
    sw_train_spec s = spec_of(SW_SCHEDULE_COSINE, 1.0, warm, total, 1);
    assert_true(sw_update_lr(&s, 3) == 4.0 / 7.0);
    assert_true(sw_update_lr(&s, warm) == 1.0);
    assert_near(sw_update_lr(&s, total), 0.0, 1e-15);
    double worst = 0;
    for (uint64_t t = warm; t <= total; t += 997) {
        const double p = (double)(t - warm) / (double)(total - warm);
        const double want = 0.5 * (1.0 + cos(3.14159265358979323846 * p));
        const double err = fabs(sw_update_lr(&s, t) - want);
        if (err > worst) worst = err;
    }
    /* the exact midpoint and the far end too */
    s = spec_of(SW_SCHEDULE_COSINE, 1.0, 0, 2, 1);
    assert_near(sw_update_lr(&s, 1), 0.5, 1e-15);
    assert_true(worst < 1e-12);
}

static void test_coef(void **state)
{
    (void)state;
    sw_train_spec s = spec_of(SW_SCHEDULE_CONSTANT, 1e-3, 0, 1, 4);
    sw_update u;
    memset(&u, 0, sizeof(u));
    u.q = -100;
    u.scale = 0.5f;
    assert_true(sw_update_coef(&s, &u) == 1e-3 * 100 * 0.5 / 4);
    u.q = 127;
    assert_true(sw_update_coef(&s, &u) < 0);
    u.q = 0;
    assert_true(sw_update_coef(&s, &u) == 0.0);
}

static void test_check_refusals(void **state)
{
    (void)state;
    sw_train_spec s = spec_of(SW_SCHEDULE_CONSTANT, 1e-3, 0, 1, 1);
    s.max_scale = 2.0;
    sw_update u;
    memset(&u, 0, sizeof(u));
    u.origin[0] = 0xab;
    u.step = 42;
    u.q = 127;
    u.scale = 2.0f;
    sw_diag d;
    assert_int_equal(sw_update_check(&s, &u, &d), 0);
    u.q = -127;
    assert_int_equal(sw_update_check(&s, &u, &d), 0);
    u.q = -128;
    assert_int_equal(sw_update_check(&s, &u, &d), SW_EFORMAT);
    assert_non_null(strstr(d.msg, "ab00000000000000/42"));
    assert_non_null(strstr(d.msg, "-128"));
    u.q = 1;
    const float bad[] = {0.0f, -1.0f, NAN, INFINITY, -INFINITY};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        u.scale = bad[i];
        assert_int_equal(sw_update_check(&s, &u, &d), SW_EFORMAT);
        assert_non_null(strstr(d.msg, "scale"));
    }
    u.scale = 2.0001f;
    assert_int_equal(sw_update_check(&s, &u, &d), SW_ETOOBIG);
    assert_non_null(strstr(d.msg, "max_scale"));
}

static void test_names(void **state)
{
    (void)state;
    sw_schedule s;
    sw_perturb p;
    const sw_schedule ss[] = {SW_SCHEDULE_CONSTANT, SW_SCHEDULE_LINEAR, SW_SCHEDULE_COSINE};
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(sw_schedule_parse(sw_schedule_name(ss[i]), &s), 0);
        assert_int_equal(s, ss[i]);
    }
    assert_string_equal(sw_schedule_name(SW_SCHEDULE_COSINE), "cosine");
    assert_int_equal(sw_schedule_parse("Cosine", &s), SW_EINVAL);
    assert_int_equal(sw_schedule_parse("", &s), SW_EINVAL);
    assert_int_equal(sw_perturb_parse("rademacher", &p), 0);
    assert_int_equal(p, SW_PERTURB_RADEMACHER);
    assert_int_equal(sw_perturb_parse("gaussian", &p), 0);
    assert_int_equal(p, SW_PERTURB_GAUSSIAN);
    assert_string_equal(sw_perturb_name(SW_PERTURB_GAUSSIAN), "gaussian");
    assert_int_equal(sw_perturb_parse("normal", &p), SW_EINVAL);
}

static sw_update upd(uint8_t who, uint64_t step, int8_t q)
{
    sw_update u = {.step = step, .q = q, .scale = 1.0f};
    memset(u.origin, who, SW_ID_BYTES);
    return u;
}

/* The quadratic scan the worker used before: keep the first of each key. */
static size_t dedup_reference(sw_update *u, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        bool dup = false;
        for (size_t j = 0; j < k && !dup; j++)
            dup = sw_update_key_cmp(&u[j], &u[i]) == 0;
        if (!dup) u[k++] = u[i];
    }
    return k;
}

static void test_dedup_keeps_the_first_in_order(void **state)
{
    (void)state;
    size_t kept = 99;
    assert_int_equal(sw_update_dedup(NULL, 0, &kept), 0);
    assert_int_equal(kept, 0);
    sw_update one = upd(1, 5, 3);
    assert_int_equal(sw_update_dedup(&one, 1, &kept), 0);
    assert_int_equal(kept, 1);

    /* q tells the copies apart: the first of each key must survive. */
    sw_update u[] = {upd(2, 7, 1), upd(1, 7, 2), upd(2, 7, 3), upd(2, 8, 4),
                     upd(1, 7, 5), upd(3, 0, 6), upd(2, 8, 7)};
    assert_int_equal(sw_update_dedup(u, 7, &kept), 0);
    assert_int_equal(kept, 4);
    const int8_t want_q[] = {1, 2, 4, 6};
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(u[i].q, want_q[i]);

    sw_update same[64];
    for (int i = 0; i < 64; i++)
        same[i] = upd(9, 1, (int8_t)i);
    assert_int_equal(sw_update_dedup(same, 64, &kept), 0);
    assert_int_equal(kept, 1);
    assert_int_equal(same[0].q, 0);
}

static void test_dedup_matches_the_quadratic_scan(void **state)
{
    (void)state;
    enum { N = 6000 };
    sw_update *a = malloc(N * sizeof *a), *b = malloc(N * sizeof *b);
    assert_non_null(a);
    assert_non_null(b);
    uint64_t x = 0x9e3779b97f4a7c15u;
    for (int round = 0; round < 4; round++) {
        /* Few origins and steps: many collisions, including across origins
         * that share a step. */
        uint64_t steps = round == 0 ? 8 : round == 1 ? 300 : round == 2 ? 3000 : 1000000;
        for (size_t i = 0; i < N; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            a[i] = upd((uint8_t)(x % 5), (x >> 8) % steps, (int8_t)(i % 127));
            a[i].origin[SW_ID_BYTES - 1] = (uint8_t)(x >> 40) % 2;
        }
        memcpy(b, a, N * sizeof *a);
        size_t kept = 0;
        assert_int_equal(sw_update_dedup(a, N, &kept), 0);
        size_t want = dedup_reference(b, N);
        assert_int_equal(kept, want);
        for (size_t i = 0; i < want; i++) {
            assert_int_equal(sw_update_key_cmp(&a[i], &b[i]), 0);
            assert_int_equal(a[i].q, b[i].q);
        }
    }
    free(a);
    free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seed_is_blake2b_of_the_concatenation),
        cmocka_unit_test(test_constant_schedule),
        cmocka_unit_test(test_linear_schedule_key_points),
        cmocka_unit_test(test_cosine_schedule_matches_libm),
        cmocka_unit_test(test_coef),
        cmocka_unit_test(test_check_refusals),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_dedup_keeps_the_first_in_order),
        cmocka_unit_test(test_dedup_matches_the_quadratic_scan),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
