/*
 * gpt2_forward: the GPT-2 forward pass (OpenBLAS sgemm, causal attention,
 * gelu_new) over batches of sequences of different lengths, logits, and the
 * per-token negative log-likelihood with a mask.
 *
 * The pass is exposed in pieces (embed, one block, final norm) so that a
 * driver can materialise one layer's weights at a time, as the training
 * engine does; sw_gpt2_forward runs them all over a model's own weights.
 *
 * Batches are (B, T) row-major token arrays padded to T; lengths[b] <= T is
 * sequence b's real length.  Padding positions must hold a valid token id
 * (0 is fine); attention is causal, so they never influence real positions.
 *
 * Ownership: a sw_gpt2_acts is scratch owned by its caller, sized once for
 * (max_B, max_T); it is not shared between threads.  OpenBLAS's thread count
 * is process-wide (sw_gpt2_set_threads).
 */
#ifndef SW_GPT2_FORWARD_H
#define SW_GPT2_FORWARD_H

#include <stddef.h>
#include <stdint.h>

#include "gpt2.h"
#include "gpt2_config.h"
#include "sw_error.h"

typedef struct sw_gpt2_acts sw_gpt2_acts;

int sw_gpt2_acts_alloc(const sw_gpt2_config *cfg, int max_B, int max_T, sw_gpt2_acts **out,
                       sw_diag *diag);
void sw_gpt2_acts_free(sw_gpt2_acts *a);
/* Bytes of scratch that sw_gpt2_acts_alloc would allocate (SIZE_MAX when
 * the size is impossible).  About 7*C floats per token of max_B*max_T plus
 * fixed loss buffers; docs/model.md gives figures. */
size_t sw_gpt2_acts_bytes(const sw_gpt2_config *cfg, int max_B, int max_T);

/*
 * residual (B, T, C) = wte[tokens] + wpe[0..T).  Fails with SW_EINVAL (and a
 * diag naming batch row and position) on a token id outside [0, V), B or T
 * beyond the scratch, T beyond n_positions, or a length outside [1, T].
 * Only real positions (t < lengths[b]) are read, so only they are checked.
 * Internally only real positions are stored and computed (packed rows).
 */
int sw_gpt2_embed(sw_gpt2_acts *a, const sw_gpt2_config *cfg, const float *wte, const float *wpe,
                  const int32_t *tokens, const int32_t *lengths, int B, int T, sw_diag *diag);
/* residual += attn(ln_1(residual)); residual += mlp(ln_2(residual)).
 * Requires a successful sw_gpt2_embed on a (programmer error otherwise). */
void sw_gpt2_block(sw_gpt2_acts *a, const sw_gpt2_config *cfg, const sw_gpt2_layer *lw);
/* hidden (B, T, C) = ln_f(residual). */
void sw_gpt2_final(sw_gpt2_acts *a, const sw_gpt2_config *cfg, const float *ln_f_w,
                   const float *ln_f_b);
/* The final hidden states (B, T, C) of the last forward, row b*T + t. */
const float *sw_gpt2_acts_hidden(const sw_gpt2_acts *a);

/* embed + every block + final, with m's own weights. */
int sw_gpt2_forward(const sw_gpt2 *m, sw_gpt2_acts *a, const int32_t *tokens,
                    const int32_t *lengths, int B, int T, sw_diag *diag);

/* out (n, V) = hidden (n, C) x lm_head (V, C)^T. */
void sw_gpt2_logits(const sw_gpt2_config *cfg, const float *lm_head, const float *hidden, int n,
                    float *out);

/*
 * After a forward: for every (b, t) with mask[b*T + t] != 0, 1 <= t < lengths[b],
 * nll[b*T + t] = -log softmax(logits(hidden[b, t-1]))[tokens[b, t]]; other
 * entries are set to 0.  Logits are computed only for the rows needed, a
 * chunk at a time, so memory stays small for large vocabularies.  *sum and
 * *count (either may be NULL) receive the total and the number scored.
 * A mask bit at t = 0 or t >= lengths[b] is ignored; mask may be NULL
 * (every position scored).  tokens and lengths must be the forward's
 * (SW_EINVAL otherwise).  A row whose hidden state is not finite (a
 * diverged model) scores NaN, so the sum is NaN too.
 */
int sw_gpt2_nll(sw_gpt2_acts *a, const sw_gpt2_config *cfg, const float *lm_head,
                const int32_t *tokens, const int32_t *lengths, const uint8_t *mask, int B, int T,
                float *nll, double *sum, int64_t *count, sw_diag *diag);

/*
 * Row kernels of the loss, shared with the training engine's tiled loss so
 * that both compute bit-identical values: the max of x[0..n) (n >= 1, NaNs
 * skipped), and the sum of exp(x[i] - m) for x[i] <= m (a fixed polynomial
 * exp, the same operations in the same order on every CPU).
 */
float sw_gpt2_row_max(const float *x, int n);
float sw_gpt2_row_exp_sum(const float *x, int n, float m);

/* Sets OpenBLAS's thread count (process-wide); n < 1 means 1. */
void sw_gpt2_set_threads(int n);

#endif
