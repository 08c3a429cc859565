/*
 * update: the unit of training the whole swarm agrees on, and the
 * swarm-wide hyperparameters needed to turn an update into a weight change.
 *
 *   u     = (origin, step, q, scale)
 *   seed  = BLAKE2b-256(run_id || origin || LE64(step))        (nobody chooses it)
 *   delta(u) = -lr(step) * q * scale / directions * z(seed)   (fixed point; fixed.h)
 *
 * `step` counts the origin's updates, one per SPSA direction: a training step
 * with n directions makes n updates with consecutive numbers, all measured on
 * the same minibatch.  The training step of update `step` is
 * step / directions; the learning-rate schedule is a function of it.
 *
 * Everything here that produces a number the swarm must agree on uses only
 * IEEE-754 double +, -, *, / and exact operations (no libm: the cosine
 * schedule has its own fixed polynomial), so every node computes the same bits.
 *
 * Thread safety: pure functions over caller-owned structs.
 */
#ifndef SW_UPDATE_H
#define SW_UPDATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sw_error.h"

#define SW_ID_BYTES 32 /* origin public key, run id, seeds */
#define SW_Q_MAX 127   /* |q| <= 127 */

typedef struct sw_update {
    uint8_t origin[SW_ID_BYTES]; /* the origin node's Ed25519 public key */
    uint64_t step;               /* the origin's update counter, from 0 */
    int8_t q;                    /* quantized projected gradient, -127..127 */
    float scale;                 /* > 0, finite, <= max_scale */
} sw_update;

typedef enum sw_schedule {
    SW_SCHEDULE_CONSTANT = 0,
    SW_SCHEDULE_LINEAR = 1, /* warmup, then linear decay to 0 at total_steps */
    SW_SCHEDULE_COSINE = 2, /* warmup, then half-cosine decay to 0 at total_steps */
} sw_schedule;

typedef enum sw_perturb {
    SW_PERTURB_RADEMACHER = 0, /* z = +-1, one stream bit per parameter (default) */
    SW_PERTURB_GAUSSIAN = 1,   /* z = table[byte], one stream byte per parameter */
} sw_perturb;

/*
 * The hyperparameters every node must share to apply updates identically.
 * They are part of the run spec (runspec.h); run_id is its digest.
 */
/* Rows of the vocabulary a run may restrict training to (train.trainable_tokens). */
#define SW_SPEC_MAX_ROWS 64

typedef struct sw_train_spec {
    uint8_t run_id[SW_ID_BYTES];
    sw_perturb perturb;
    sw_schedule schedule;
    double lr;             /* peak learning rate, > 0 */
    uint64_t warmup_steps; /* training steps of linear warmup from lr/warmup to lr */
    uint64_t total_steps;  /* training steps the decay schedules end at (>= 1) */
    int directions;        /* n-SPSA: updates per training step, 1..64 */
    double max_scale;      /* every update's scale must be <= this (> 0) */
    /* train.trainable_tokens: 0, every row of wte (and of an untied lm_head) is
     * trained; else only rows[0..n_rows) (sorted, distinct token ids) */
    int n_rows;
    int32_t rows[SW_SPEC_MAX_ROWS];
} sw_train_spec;

/* Whether row `row` of a vocabulary tensor (wte, lm_head) is trained. */
bool sw_train_spec_row(const sw_train_spec *spec, int64_t row);

/* BLAKE2b-256(run_id || origin || LE64(step)). */
void sw_update_seed(const uint8_t run_id[SW_ID_BYTES], const uint8_t origin[SW_ID_BYTES],
                    uint64_t step, uint8_t seed[SW_ID_BYTES]);

/* Learning rate of update `step` (training step step / directions). */
double sw_update_lr(const sw_train_spec *spec, uint64_t step);

/*
 * The real-valued coefficient of u before the fixed-point exponent:
 * -lr(step) * q * scale / directions.  Identical bits on every platform.
 */
double sw_update_coef(const sw_train_spec *spec, const sw_update *u);

/*
 * Checks an update against the spec: |q| <= 127 (always true for int8 but
 * -128 is refused), scale finite, > 0 and <= max_scale.
 */
int sw_update_check(const sw_train_spec *spec, const sw_update *u, sw_diag *diag);

/* Orders updates by (origin bytes, step): the key an update is known by. */
int sw_update_key_cmp(const sw_update *a, const sw_update *b);

/*
 * Drops every update whose (origin, step) already appeared earlier in u[0..n),
 * keeping the first of each and the order of those kept; *kept is their count.
 * O(n log n) time, n pointers and n flags of scratch.  SW_ENOMEM leaves u as
 * it was.
 */
int sw_update_dedup(sw_update *u, size_t n, size_t *kept);

/* Names as written in configs and the run spec: "constant"/"linear"/"cosine",
 * "rademacher"/"gaussian". */
const char *sw_schedule_name(sw_schedule s);
int sw_schedule_parse(const char *name, sw_schedule *out);
const char *sw_perturb_name(sw_perturb p);
int sw_perturb_parse(const char *name, sw_perturb *out);

#endif
