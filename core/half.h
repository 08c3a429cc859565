/*
 * half: conversions between float and the two 16-bit float formats found in
 * checkpoints, IEEE binary16 (F16) and bfloat16 (BF16).  Pure functions.
 *
 * float -> 16-bit rounds to nearest, ties to even; NaN stays NaN, overflow
 * becomes infinity.  16-bit -> float is exact.
 */
#ifndef SW_HALF_H
#define SW_HALF_H

#include <stddef.h>
#include <stdint.h>

float sw_f16_to_f32(uint16_t h);
uint16_t sw_f32_to_f16(float f);
float sw_bf16_to_f32(uint16_t h);
uint16_t sw_f32_to_bf16(float f);

/* Bulk forms over arrays of n values (the input may be unaligned bytes). */
void sw_f16_to_f32_n(const void *src, float *dst, size_t n);
void sw_bf16_to_f32_n(const void *src, float *dst, size_t n);

#endif
