/*
 * half: known bit patterns, exhaustive 16 -> 32 -> 16 round trips, and
 * float -> 16-bit rounding checked against an independent oracle that rounds
 * with double arithmetic (frexp/ldexp/nearbyint, round-to-nearest-even).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <string.h>

#include <cmocka.h>

#include "half.h"

static uint32_t bits(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    return x;
}

static float from_bits(uint32_t x)
{
    float f;
    memcpy(&f, &x, sizeof f);
    return f;
}

/* Value of an F16 pattern from its definition, in double. */
static double f16_value(uint16_t h)
{
    int sign = h >> 15, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    double v;
    if (exp == 31)
        v = man ? NAN : INFINITY;
    else if (exp == 0)
        v = ldexp(man, -24);
    else
        v = ldexp(1024 + man, exp - 25);
    return sign ? -v : v;
}

/*
 * Rounds x to a binary format with `mbits` explicit mantissa bits and minimum
 * normal exponent emin, ties to even (nearbyint in the default rounding mode);
 * results at or above `overflow` become infinity.
 */
static double oracle_round(double x, int mbits, int emin, double overflow)
{
    if (x == 0 || isnan(x) || isinf(x)) return x;
    int e;
    frexp(x, &e);
    e -= 1;                 /* x = 1.f * 2^e */
    if (e < emin) e = emin; /* subnormal: fixed quantum 2^(emin - mbits) */
    double r = ldexp(nearbyint(ldexp(x, mbits - e)), e - mbits);
    if (fabs(r) >= overflow) return copysign(INFINITY, x);
    return r;
}

static void test_f16_known_patterns(void **state)
{
    (void)state;
    assert_int_equal(sw_f32_to_f16(1.0f), 0x3c00);
    assert_int_equal(sw_f32_to_f16(-2.0f), 0xc000);
    assert_int_equal(sw_f32_to_f16(0.5f), 0x3800);
    assert_int_equal(sw_f32_to_f16(65504.0f), 0x7bff);  /* largest finite */
    assert_int_equal(sw_f32_to_f16(65519.99f), 0x7bff); /* just below the halfway point */
    assert_int_equal(sw_f32_to_f16(65520.0f), 0x7c00);  /* halfway, ties to even: Inf */
    assert_int_equal(sw_f32_to_f16(1e10f), 0x7c00);
    assert_int_equal(sw_f32_to_f16(-INFINITY), 0xfc00);
    assert_int_equal(sw_f32_to_f16(0x1p-14f), 0x0400);     /* smallest normal */
    assert_int_equal(sw_f32_to_f16(0x1p-24f), 0x0001);     /* smallest subnormal */
    assert_int_equal(sw_f32_to_f16(0x1.ff8p-15f), 0x03ff); /* largest subnormal */
    assert_int_equal(sw_f32_to_f16(0x1p-25f), 0x0000);     /* halfway to 2^-24: even is 0 */
    assert_int_equal(sw_f32_to_f16(0x1.000002p-25f), 0x0001);
    assert_int_equal(sw_f32_to_f16(0x1.8p-24f), 0x0002);      /* 1.5 quanta: tie to even 2 */
    assert_int_equal(sw_f32_to_f16(0x1.4p-23f), 0x0002);      /* 2.5 quanta: tie to even 2 */
    assert_int_equal(sw_f32_to_f16(1.0f + 0x1p-11f), 0x3c00); /* tie: even is 1.0 */
    assert_int_equal(sw_f32_to_f16(1.0f + 0x3p-11f), 0x3c02); /* tie: even is 1+2^-9 */
    assert_int_equal(sw_f32_to_f16(0x1.ffep-15f), 0x0400);    /* rounds up into the normals */
    assert_int_equal(sw_f32_to_f16(-0.0f), 0x8000);
    assert_int_equal(sw_f32_to_f16(1e-30f), 0x0000);
    assert_int_equal(sw_f32_to_f16(-1e-30f), 0x8000);
    uint16_t nan = sw_f32_to_f16(NAN);
    assert_int_equal(nan & 0x7c00, 0x7c00);
    assert_int_not_equal(nan & 0x3ff, 0);
    /* A NaN whose payload lives only in the low bits must not become Inf. */
    uint16_t low_nan = sw_f32_to_f16(from_bits(0x7f800001u));
    assert_int_equal(low_nan & 0x7c00, 0x7c00);
    assert_int_not_equal(low_nan & 0x3ff, 0);

    assert_true(sw_f16_to_f32(0x3c00) == 1.0f);
    assert_true(sw_f16_to_f32(0x7bff) == 65504.0f);
    assert_true(sw_f16_to_f32(0x0001) == 0x1p-24f);
    assert_true(sw_f16_to_f32(0x03ff) == 0x1.ff8p-15f);
    assert_int_equal(bits(sw_f16_to_f32(0x8000)), 0x80000000u);
    assert_true(isinf(sw_f16_to_f32(0x7c00)) && sw_f16_to_f32(0x7c00) > 0);
    assert_true(isnan(sw_f16_to_f32(0x7e00)));
}

static void test_bf16_known_patterns(void **state)
{
    (void)state;
    assert_int_equal(sw_f32_to_bf16(1.0f), 0x3f80);
    assert_int_equal(sw_f32_to_bf16(-2.0f), 0xc000);
    assert_int_equal(sw_f32_to_bf16(from_bits(0x3f808000u)), 0x3f80); /* tie: even */
    assert_int_equal(sw_f32_to_bf16(from_bits(0x3f818000u)), 0x3f82); /* tie: even */
    assert_int_equal(sw_f32_to_bf16(from_bits(0x3f808001u)), 0x3f81);
    assert_int_equal(sw_f32_to_bf16(from_bits(0x7f7fffffu)), 0x7f80); /* FLT_MAX -> Inf */
    assert_int_equal(sw_f32_to_bf16(INFINITY), 0x7f80);
    assert_int_equal(sw_f32_to_bf16(from_bits(0x00000001u)), 0x0000);
    assert_int_equal(sw_f32_to_bf16(from_bits(0x00008001u)), 0x0001);
    uint16_t nan = sw_f32_to_bf16(from_bits(0x7f800001u));
    assert_int_equal(nan & 0x7f80, 0x7f80);
    assert_int_not_equal(nan & 0x7f, 0);
    assert_int_equal(bits(sw_bf16_to_f32(0x3f80)), 0x3f800000u);
    assert_int_equal(bits(sw_bf16_to_f32(0x8001)), 0x80010000u);
}

static void test_f16_exhaustive(void **state)
{
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = sw_f16_to_f32((uint16_t)h);
        double want = f16_value((uint16_t)h);
        if (isnan(want)) {
            assert_true(isnan(f));
            /* NaN payloads survive the round trip too. */
            assert_int_equal(sw_f32_to_f16(f), h);
            continue;
        }
        assert_true((double)f == want);
        assert_int_equal(signbit(f) != 0, (h >> 15) != 0);
        assert_int_equal(sw_f32_to_f16(f), h);
    }
}

static void test_bf16_exhaustive(void **state)
{
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = sw_bf16_to_f32((uint16_t)h);
        assert_int_equal(bits(f), h << 16);
        assert_int_equal(sw_f32_to_bf16(f), h);
    }
}

/* Compares one float against the oracle for both formats. */
static void check_against_oracle(uint32_t x)
{
    float f = from_bits(x);
    if (isnan(f)) {
        assert_true(isnan(sw_f16_to_f32(sw_f32_to_f16(f))));
        assert_true(isnan(sw_bf16_to_f32(sw_f32_to_bf16(f))));
        return;
    }
    double want16 = oracle_round(f, 10, -14, 65536.0);
    float got16 = sw_f16_to_f32(sw_f32_to_f16(f));
    if ((double)got16 != want16 || signbit(got16) != signbit(f))
        fail_msg("F16 of %a (0x%08x): got %a, oracle %a", (double)f, x, (double)got16, want16);
    /* BF16 shares float's exponent range; its largest finite value is 0x1.fep127. */
    double want_bf = oracle_round(f, 7, -126, 0x1.ffp127);
    float got_bf = sw_bf16_to_f32(sw_f32_to_bf16(f));
    if ((double)got_bf != want_bf || signbit(got_bf) != signbit(f))
        fail_msg("BF16 of %a (0x%08x): got %a, oracle %a", (double)f, x, (double)got_bf, want_bf);
}

static void test_rounding_against_oracle(void **state)
{
    (void)state;
    /* Every sign/exponent/top-mantissa combination with low bits at and around
     * both formats' rounding points... */
    static const uint32_t low[] = {0x0000, 0x0001, 0x0fff, 0x1000, 0x1001,
                                   0x1fff, 0x7fff, 0x8000, 0x8001, 0xffff};
    for (uint32_t hi = 0; hi < (1u << 16); hi++)
        for (size_t k = 0; k < sizeof low / sizeof low[0]; k++)
            check_against_oracle((hi << 16) | low[k]);
    /* ... every F16-relevant subnormal rounding point (the quantum moves with the
     * exponent there), ... */
    for (uint32_t e = 100; e <= 113; e++)
        for (uint32_t m = 0; m < (1u << 23); m += 0x101)
            check_against_oracle((e << 23) | m);
    /* ... and pseudo-random patterns. */
    uint64_t s = 0x9e3779b97f4a7c15u;
    for (int i = 0; i < 2000000; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        check_against_oracle((uint32_t)s);
    }
}

static void test_bulk_unaligned(void **state)
{
    (void)state;
    unsigned char buf[1 + 2 * 4];
    const uint16_t h[4] = {0x3c00, 0xc000, 0x0001, 0x7bff};
    for (int i = 0; i < 4; i++) { /* little-endian bytes at an odd address */
        buf[1 + 2 * i] = (unsigned char)(h[i] & 0xff);
        buf[2 + 2 * i] = (unsigned char)(h[i] >> 8);
    }
    float out[4];
    sw_f16_to_f32_n(buf + 1, out, 4);
    assert_true(out[0] == 1.0f && out[1] == -2.0f && out[2] == 0x1p-24f && out[3] == 65504.0f);
    sw_bf16_to_f32_n(buf + 1, out, 4);
    for (int i = 0; i < 4; i++)
        assert_int_equal(bits(out[i]), (uint32_t)h[i] << 16);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f16_known_patterns),      cmocka_unit_test(test_bf16_known_patterns),
        cmocka_unit_test(test_f16_exhaustive),          cmocka_unit_test(test_bf16_exhaustive),
        cmocka_unit_test(test_rounding_against_oracle), cmocka_unit_test(test_bulk_unaligned),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
