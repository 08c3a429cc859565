/*
 * trainer: the SPSA (MeZO) training step over fixed-point master weights.
 *
 * One training step t with n = spec.directions directions takes the
 * minibatch of step t (a pure function of the data seed and t, below) and,
 * for each direction d (update number s = t*n + d, seed = sw_update_seed(
 * run_id, origin, s)):
 *
 *   L+ = loss(W + eps z), L- = loss(W - eps z)       (lockstep, layer by layer)
 *   g  = (L+ - L-) / (2 eps) + weight_decay * <w, z>_decayed
 *   q  = clamp(floor(g / scale + u), -127, 127)      u in [0,1) from the update's
 *                                                    SW_STREAM_QROUND stream
 *
 * and returns the n updates (origin, s, q, scale).  It never applies them:
 * the caller writes them ahead to its ledger, then applies them with
 * sw_fixed_apply (fixed.h).  The loss is the mean negative log-likelihood
 * over the scored tokens of the minibatch (completion tokens only for
 * prompt/completion records, dataset.h).  Only tensors selected by the
 * trainable mask are perturbed (z is taken as 0 elsewhere; the stream keeps
 * the canonical indices).  The weight-decay term covers the trainable 2-D
 * tensors (embeddings and linear weights), not biases or layer norms.
 *
 * scale: fixed for each window of cfg.scale_window training steps before the
 * window starts.  Window 0 uses the initial scale (cfg.init_scale, or
 * max_scale * 3/16 when 0); window w >= 1 uses
 *   clamp(mean over the origin's own updates of window w-1 of |q| * scale / 16,
 *         max_scale * 2^-20, max_scale)
 * (the initial scale if window w-1 holds none), so a restarted node
 * recomputes it from its ledger (sw_trainer_resume).
 *
 * Data order: epoch e is a Fisher-Yates permutation of the dataset's records
 * driven by ChaCha20 keyed by BLAKE2b-256("swarmtune-data-v1" || LE64(seed)
 * || LE64(e)); training step t takes the batch_size consecutive positions
 * t*B .. t*B+B-1 of the concatenated epochs.  The caller loads the dataset
 * with max_tokens = seq_len (<= n_positions), which caps every record.
 *
 * Determinism: equal weights, config, data and step give bit-identical q
 * with the same binary, whatever cfg.threads (OpenBLAS's kernel choice is
 * the remaining dependency: same binary, same machine type).
 *
 * max_scale = 0 (auto): the founding node calls sw_trainer_calibrate
 * (max_scale = median |g| / 127 over a few probes on the base model, which
 * puts the clamp at the typical |g|; docs/engine.md) before the run spec
 * exists, then sw_trainer_set_spec.
 *
 * Ownership: a sw_trainer owns its scratch and a copy of its config and
 * trainable mask; it borrows the dataset (which must outlive it) and, for
 * the length of each call, the weights, which it only reads.
 * Thread safety: one thread at a time (the daemon's trainer thread).  With
 * cfg.threads >= 2 the trainer runs the + and - passes on two threads (its
 * own helper thread and the caller), OpenBLAS single-threaded in each; with 1
 * it runs them in turn.  Results are bit-identical either way.  It sets
 * OpenBLAS's (process-wide) thread count on each call.
 */
#ifndef SW_TRAINER_H
#define SW_TRAINER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dataset.h"
#include "fixed.h"
#include "gpt2_config.h"
#include "sw_error.h"
#include "update.h"

#define SW_TRAINER_MAX_DIRECTIONS 64 /* as update.h's spec.directions */
#define SW_TRAINER_MAX_BATCH 4096
#define SW_TRAINER_CALIBRATE_MAX 64
/* scale for window w >= 1 aims at a mean |q| of this */
#define SW_TRAINER_TARGET_Q 16
/* calibrated max_scale = median |g| / this: the clamp (127 * max_scale) then
 * sits at the typical |g| of the base model (docs/engine.md) */
#define SW_TRAINER_CALIBRATE_DIV 127.0

typedef struct sw_trainer_config {
    sw_train_spec spec;          /* the run's spec; max_scale may be 0 only to calibrate */
    uint8_t origin[SW_ID_BYTES]; /* this node's public key */
    float eps;                   /* perturbation size, > 0 (default 1e-3) */
    double weight_decay;         /* >= 0 (default 0) */
    int batch_size;              /* records per minibatch, 1..SW_TRAINER_MAX_BATCH */
    uint64_t data_seed;          /* [train] seed: the data order */
    int scale_window;            /* training steps per scale window, >= 1 (default 16) */
    double init_scale;           /* window 0's scale; 0 = max_scale * 3/16 */
    const bool *trainable;       /* (n_tensors) copied; NULL = every tensor */
    int threads;                 /* >= 1 */
} sw_trainer_config;

/* One direction of a step. */
typedef struct sw_trainer_dir {
    sw_update update;  /* what to ledger, publish and apply */
    double loss_plus;  /* L+ */
    double loss_minus; /* L- */
    double wz;         /* <w, z> over the decayed trainable tensors */
    double g;          /* the projected gradient that was quantized */
    bool nonfinite;    /* L+ or L- not finite (diverged): q was set to 0 */
} sw_trainer_dir;

typedef struct sw_trainer_result {
    uint64_t step;         /* training step t */
    uint64_t first_update; /* t * directions */
    int n;                 /* directions: dirs[0..n) */
    sw_trainer_dir dirs[SW_TRAINER_MAX_DIRECTIONS];
    double loss;            /* mean over directions of (L+ + L-) / 2: ~ loss(W) on the batch */
    int64_t tokens;         /* scored tokens in the minibatch */
    int batch_len;          /* the minibatch's padded length T */
    float scale;            /* the window's scale every update of the step carries */
    double seconds;         /* wall time of the whole step */
    double seconds_forward; /* of which the lockstep passes (blocks + head) */
} sw_trainer_result;

typedef struct sw_trainer sw_trainer;

/*
 * Validates cfg against the model architecture and the dataset (every
 * record must fit n_positions; token ids < vocab_size) and allocates the
 * scratch: two activation buffers for (batch_size, ds->max_len), two
 * one-layer weight buffers, one layer of z, one vocabulary tile.  The next
 * training step is 0 (see sw_trainer_resume).
 */
int sw_trainer_alloc(const sw_trainer_config *cfg, const sw_gpt2_config *model,
                     const sw_dataset *ds, sw_trainer **out, sw_diag *diag);
/* Accepts NULL. */
void sw_trainer_free(sw_trainer *tr);

/*
 * Runs training step next_step on w (which must have the trainer's
 * architecture; it is only read), returns its updates and advances.
 * SW_EINVAL when spec.max_scale is 0 (calibrate first).
 */
int sw_trainer_step(sw_trainer *tr, const sw_fixed *w, sw_trainer_result *res, sw_diag *diag);

/* The training step the next sw_trainer_step runs, and the scale it uses. */
uint64_t sw_trainer_next_step(const sw_trainer *tr);
float sw_trainer_scale(const sw_trainer *tr);

/*
 * Restart: the first own update number the resume needs to see, for a
 * node whose ledger's next own update number is next_update (the start of
 * the previous scale window, or 0).
 */
uint64_t sw_trainer_resume_from(const sw_trainer *tr, uint64_t next_update);
/*
 * Positions the trainer after a restart: the next training step is
 * ceil(next_update / directions) (a step torn by a crash is skipped, its
 * remaining numbers never used), and the scale policy is rebuilt from own[]:
 * the origin's updates with numbers in [sw_trainer_resume_from(next_update),
 * next_update), in any order (others are ignored).  SW_EINVAL (naming the
 * update) when one of them is not this origin's or breaks the spec.
 */
int sw_trainer_resume(sw_trainer *tr, uint64_t next_update, const sw_update *own, size_t n_own,
                      sw_diag *diag);

/* Replaces the spec (after calibration) and restarts at step 0. */
int sw_trainer_set_spec(sw_trainer *tr, const sw_train_spec *spec, sw_diag *diag);

/*
 * The auto max_scale of a founding node: n_probes (1..SW_TRAINER_CALIBRATE_MAX;
 * 8 is usual) single-direction probes, probe i on the minibatch of training
 * step i with seed BLAKE2b-256("swarmtune-calibrate-v1" || origin || LE64(i))
 * (independent of the run id, which does not exist yet).  Nothing is
 * applied and the trainer's position is unchanged.
 * max_scale = median |g| / SW_TRAINER_CALIBRATE_DIV.
 */
typedef struct sw_trainer_calibration {
    int n;
    double abs_g[SW_TRAINER_CALIBRATE_MAX];
    double median_abs_g;
    double max_scale;
} sw_trainer_calibration;
int sw_trainer_calibrate(sw_trainer *tr, const sw_fixed *w, int n_probes,
                         sw_trainer_calibration *out, sw_diag *diag);

/*
 * One probe, for tests and tools: L+ and L- (and <w, z>) along the
 * direction of `seed` on the minibatch of training step data_step; eps and
 * the trainable mask are the trainer's.  loss_minus may be NULL (then only
 * the + pass runs); wz may be NULL (it costs one more sweep over z).
 */
int sw_trainer_probe(sw_trainer *tr, const sw_fixed *w, const uint8_t seed[SW_ID_BYTES],
                     uint64_t data_step, double *loss_plus, double *loss_minus, double *wz,
                     sw_diag *diag);

/* The unperturbed loss of w on the minibatch of training step data_step. */
int sw_trainer_loss(sw_trainer *tr, const sw_fixed *w, uint64_t data_step, double *loss,
                    sw_diag *diag);

/* ---- pure functions (also used by the daemon and the tests) ---- */

/*
 * Record indices idx[0..batch_size) of training step `step` for a dataset
 * of n_records (>= 1) records.  Costs O(n_records) time and memory per call
 * (SW_ENOMEM when that cannot be allocated).
 */
int sw_trainer_batch_indices(uint64_t data_seed, size_t n_records, uint64_t step, int batch_size,
                             size_t *idx);

/*
 * Trainable mask (n_tensors of cfg) from a PCRE2 regular expression searched
 * (unanchored) in each canonical tensor name ("h.3.attn.c_attn.weight");
 * NULL or "" selects every tensor.  *n_params (may be NULL) receives the
 * parameters selected.  A bad pattern or one that selects nothing is
 * SW_EINVAL with a diag naming the pattern.
 */
int sw_trainer_trainable(const sw_gpt2_config *cfg, const char *regex, bool *mask,
                         uint64_t *n_params, sw_diag *diag);

/* q = clamp(floor(g / scale + u), -127, 127), u from seed's QROUND stream;
 * 0 for a non-finite g. */
int8_t sw_trainer_quantize(double g, float scale, const uint8_t seed[SW_ID_BYTES]);

/* Window 0's scale: init_scale, or max_scale * 3/16 when init_scale is 0;
 * always within [max_scale * 2^-20, max_scale]. */
float sw_trainer_initial_scale(double max_scale, double init_scale);

/*
 * Scale of the window after the one holding prev[0..n) (the origin's own
 * updates of that window, in step order): clamp(mean(|q| * scale) / 16,
 * max_scale * 2^-20, max_scale) rounded to float (never above max_scale);
 * `initial` when n is 0.
 */
float sw_trainer_next_scale(double max_scale, float initial, const sw_update *prev, size_t n);

#endif
