/*
 * fixed: the master weights as fixed-point integers, and the perturbation
 * stream z that both the SPSA step and the update sweep use.
 *
 * Each canonical tensor t (gpt2.h order) holds int32 values W with its own
 * binary exponent e_t: w = W * 2^-e_t.  e_t is fixed once from the base model
 * (headroom: 8x the tensor's largest magnitude, see fixed.c) and never
 * changes.  Additions saturate at the int32 range and are counted: the
 * replicas' bit-identity holds whenever no saturation happened (a saturated
 * add does not commute with later adds); saturations are reported.
 *
 * Stream: ChaCha20-IETF (libsodium) keyed by an update's 32-byte seed, nonce
 * = 12 bytes whose first byte is the purpose (SW_STREAM_*), counter = block
 * index over the canonical flat parameter order, so any slice of z can be
 * generated alone.  rademacher: parameter j is bit (j % 512) of block j / 512
 * (byte (j % 512) / 8, least significant bit first), 1 -> +1, 0 -> -1.
 * gaussian: parameter j is byte j % 64 of block j / 64, an index into
 * sw_gauss_table (standard normal quantiles at (i + 0.5) / 256 in units of
 * 2^-SW_GAUSS_FRAC_BITS, committed constants).
 *
 * delta(u) for tensor t: k = stochastic_round(coef(u) * 2^e_t) once per
 * (update, tensor), driven by the update's SW_STREAM_ROUND stream; then
 * rademacher: delta_j = z_j * k; gaussian: delta_j = round_half_away(k * g_j /
 * 2^SW_GAUSS_FRAC_BITS) with g_j the table value.  Pure integer arithmetic
 * after k, so the sweep is exact and order-free.
 *
 * Ownership: a sw_fixed owns its arrays.  Thread safety: readers may share a
 * sw_fixed; sw_fixed_apply needs exclusive access (it may use worker threads
 * internally over disjoint slices).
 */
#ifndef SW_FIXED_H
#define SW_FIXED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gpt2.h"
#include "update.h"
#include "sw_error.h"

enum {
    SW_STREAM_Z = 0,      /* the perturbation direction */
    SW_STREAM_QROUND = 1, /* the origin's stochastic rounding of q */
    SW_STREAM_ROUND = 2,  /* stochastic rounding of the per-(update, tensor) coefficient */
};

#define SW_GAUSS_FRAC_BITS 13
extern const int16_t sw_gauss_table[256];

typedef struct sw_fixed {
    sw_gpt2_config cfg;
    size_t n_params;
    int32_t *w; /* (n_params) canonical flat order */
    size_t n_tensors;
    sw_gpt2_tensor *tensors; /* (n_tensors) the canonical table */
    int8_t *exp;             /* (n_tensors) e_t */
    uint64_t saturations;    /* adds clamped at the int32 range, since load */
} sw_fixed;

/* Whether a tensor kind is a vocabulary tensor whose rows a run may restrict
 * training to (sw_train_spec.rows): wte and an untied lm_head. */
static inline bool sw_fixed_row_tensor(sw_gpt2_kind kind)
{
    return kind == SW_GPT2_WTE || kind == SW_GPT2_LM_HEAD;
}

/* Converts a float model (exponents chosen from it, values rounded to nearest). */
int sw_fixed_from_model(const sw_gpt2 *m, sw_fixed **out, sw_diag *diag);
/* A zeroed copy-shaped object (same cfg, exponents copied), or a full copy. */
int sw_fixed_clone(const sw_fixed *f, sw_fixed **out, sw_diag *diag);
void sw_fixed_free(sw_fixed *f);

/* Writes float values (n_params) = W * 2^-e_t, canonical order. */
void sw_fixed_to_float(const sw_fixed *f, float *out);
/* A float model of the same architecture holding the current weights. */
int sw_fixed_to_model(const sw_fixed *f, sw_gpt2 **out, sw_diag *diag);

#define SW_FIXED_DIGEST_BYTES 32
/* BLAKE2b-256 over "swarmtune-fixed-v1", the exponents and the int32 LE weights. */
void sw_fixed_digest(const sw_fixed *f, uint8_t out[SW_FIXED_DIGEST_BYTES]);

/*
 * z for parameters [first, first + n) of the canonical order, as integers in
 * units of 2^-SW_GAUSS_FRAC_BITS (rademacher: +-2^13).
 */
void sw_zstream(const uint8_t seed[SW_ID_BYTES], sw_perturb dist, uint64_t first, size_t n,
                int16_t *z);

/*
 * Dequantize-and-perturb, fused: for parameters [first, first + n) (which may
 * span tensors), plus[j] = w_j + eps * z_j and minus[j] = w_j - eps * z_j in
 * float; z may be NULL (no perturbation: plus = minus = w; minus may be NULL).
 */
void sw_fixed_dequant_pm(const sw_fixed *f, uint64_t first, size_t n, const int16_t *z, float eps,
                         float *plus, float *minus);

/*
 * Applies updates u[0..k) in one fused sweep over the parameters (each
 * update's z generated block by block, all deltas summed in int64, written
 * once with saturation).  trainable (n_tensors, may be NULL = all) selects the
 * tensors that updates touch, and spec->rows the rows of a vocabulary tensor
 * (all when spec->n_rows is 0).  The caller has checked every update
 * (sw_update_check).  threads > 1 splits the sweep over disjoint slices.
 */
void sw_fixed_apply(sw_fixed *f, const sw_train_spec *spec, const bool *trainable,
                    const sw_update *u, size_t k, int threads);

/* ---- additions by the fixed.c owner (compatible; see docs/engine.md) ---- */

/* Exponent rule: tensors whose largest magnitude is below this are treated as
 * if it were this (all-zero biases, tiny tensors). */
#define SW_FIXED_MIN_MAGNITUDE 1.0
/* Values of this magnitude or more are refused by sw_fixed_from_model, which
 * keeps e_t in [-36, 31] and every dequantized value finite. */
#define SW_FIXED_MAX_MAGNITUDE 18446744073709551616.0 /* 2^64 */
/* |k| is clamped to this: one update moves a weight by at most the tensor's
 * base largest magnitude (gaussian: 2.9x that). */
#define SW_FIXED_K_MAX (INT64_C(1) << 28)

/* e_t for a tensor whose largest magnitude is max_abs: 28 - x where
 * max(max_abs, SW_FIXED_MIN_MAGNITUDE) = f * 2^x, f in [0.5, 1). */
int sw_fixed_exponent(double max_abs);

/* A zeroed object shaped like f (same cfg, exponents copied, saturations 0);
 * sw_fixed_clone is the full copy (weights and saturation count). */
int sw_fixed_alloc_like(const sw_fixed *f, sw_fixed **out, sw_diag *diag);

/*
 * Raw keystream bytes [offset, offset + n) of (seed, purpose): ChaCha20-IETF,
 * nonce[0] = purpose, counter = offset / 64.  offset + n <= 2^38.
 * sw_zstream is this stream read as bits (rademacher) or bytes (gaussian).
 */
void sw_stream_bytes(const uint8_t seed[SW_ID_BYTES], int purpose, uint64_t offset, size_t n,
                     uint8_t *out);

/*
 * The coefficient rule: x = coef * 2^e clamped to +-SW_FIXED_K_MAX, then
 * floor(x) + (uniform < frac(x) * 2^64), uniform a 64-bit uniform integer.
 */
int64_t sw_fixed_round_coef(double coef, int e, uint64_t uniform);
/* The uniform of (update seed, tensor t): bytes 8t..8t+7 of the update's
 * SW_STREAM_ROUND stream, little-endian. */
uint64_t sw_fixed_round_uniform(const uint8_t seed[SW_ID_BYTES], size_t tensor);
/* k of update u for tensor t of f (seed, coefficient, uniform, rounding). */
int64_t sw_fixed_update_k(const sw_fixed *f, const sw_train_spec *spec, const sw_update *u,
                          size_t tensor);
/* Gaussian delta: round_half_away(k * g / 2^SW_GAUSS_FRAC_BITS), |k| <= K_MAX. */
int32_t sw_fixed_gauss_delta(int64_t k, int16_t g);

#endif
