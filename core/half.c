/*
 * half: F16/BF16 <-> F32 by bit manipulation, so that the result does not
 * depend on the compiler, the FPU rounding mode or hardware F16C support.
 */
#include "half.h"

#include <string.h>

static uint32_t half_bits(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    return x;
}

static float half_float(uint32_t x)
{
    float f;
    memcpy(&f, &x, sizeof f);
    return f;
}

float sw_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    if (exp == 0x1f) /* Inf and NaN keep their payload in the top mantissa bits */
        return half_float(sign | 0x7f800000u | (man << 13));
    if (exp == 0) {
        if (man == 0) return half_float(sign);
        /* Subnormal: man * 2^-24; normalise so that the implicit bit is bit 10. */
        int e = 1;
        while ((man & 0x400u) == 0) {
            man <<= 1;
            e--;
        }
        man &= 0x3ffu;
        return half_float(sign | ((uint32_t)(e + 112) << 23) | (man << 13));
    }
    return half_float(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t sw_f32_to_f16(float f)
{
    uint32_t x = half_bits(f);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t absx = x & 0x7fffffffu;
    if (absx > 0x7f800000u) {
        /* NaN: keep the top payload bits; a payload that truncates to zero would
         * read as infinity, so it becomes the quiet bit instead. */
        uint32_t man = (absx >> 13) & 0x3ffu;
        if (man == 0) man = 0x200u;
        return (uint16_t)(sign | 0x7c00u | man);
    }
    /* 65520 is halfway between 65504 (odd mantissa) and 65536: ties to even
     * rounds it, and everything above, to infinity. */
    if (absx >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);
    if (absx < 0x38800000u) {
        /* Below 2^-14: the result is subnormal (or zero), m * 2^-24. 2^-25 is the
         * halfway point to the smallest subnormal and rounds to even, i.e. 0. */
        if (absx <= 0x33000000u) return (uint16_t)sign;
        uint32_t e = absx >> 23; /* 102..112 */
        uint32_t man = (absx & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - e; /* 14..24 */
        uint32_t m = man >> shift;
        uint32_t rem = man & ((1u << shift) - 1);
        uint32_t halfway = 1u << (shift - 1);
        if (rem > halfway || (rem == halfway && (m & 1u)))
            m++; /* may carry into the smallest normal, which is the right answer */
        return (uint16_t)(sign | m);
    }
    uint32_t h = (((absx >> 23) - 112) << 10) | ((absx >> 13) & 0x3ffu);
    uint32_t rem = absx & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u)))
        h++; /* a carry into the exponent is correct rounding; cannot reach Inf here */
    return (uint16_t)(sign | h);
}

float sw_bf16_to_f32(uint16_t h)
{
    return half_float((uint32_t)h << 16);
}

uint16_t sw_f32_to_bf16(float f)
{
    uint32_t x = half_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) {
        uint32_t hi = x >> 16;
        if ((hi & 0x7fu) == 0) hi |= 0x40u; /* keep it a NaN (see sw_f32_to_f16) */
        return (uint16_t)hi;
    }
    /* Round to nearest even; overflow carries into the exponent and ends at Inf. */
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

/* Files are little-endian; assembling bytes keeps this independent of the host. */
void sw_f16_to_f32_n(const void *src, float *dst, size_t n)
{
    const unsigned char *p = src;
    for (size_t i = 0; i < n; i++)
        dst[i] = sw_f16_to_f32((uint16_t)(p[2 * i] | (p[2 * i + 1] << 8)));
}

void sw_bf16_to_f32_n(const void *src, float *dst, size_t n)
{
    const unsigned char *p = src;
    for (size_t i = 0; i < n; i++)
        dst[i] = sw_bf16_to_f32((uint16_t)(p[2 * i] | (p[2 * i + 1] << 8)));
}
