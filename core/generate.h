/*
 * generate: autoregressive text generation with a GPT-2 model, in token ids
 * (no tokenizer here, so the daemon can reuse it behind its own front end).
 *
 * Each step runs the full forward pass over the current window and takes the
 * logits of its last position (no KV cache: for the model sizes this project
 * trains, recomputing costs a few milliseconds per token).  When prompt plus
 * generated ids exceed n_positions, the window keeps the last n_positions ids.
 *
 * Choosing the next id:
 *   temperature == 0: argmax of the logits, the lowest id on ties (greedy);
 *   temperature  > 0: a draw from softmax(logits / temperature), restricted to
 *                     the top_k most likely ids when top_k > 0.
 * Draws are deterministic for a seed: draw i is the little-endian uint64 at
 * byte 8*i of libsodium's randombytes_buf_deterministic stream keyed by the
 * seed (32 bytes: the seed as 8 little-endian bytes, then 24 zero bytes),
 * mapped to u = (x >> 11) * 2^-53 in [0, 1).  The id chosen is the first whose
 * cumulative probability exceeds u (ids in ascending order, or in descending
 * probability, ties by id, under top_k).
 *
 * Ownership: sw_generate borrows the model and the prompt and allocates its
 * own scratch; it may run on any thread, several at once on one model (the
 * model is only read).  OpenBLAS's thread count is set by the caller
 * (sw_gpt2_set_threads).
 */
#ifndef SW_GENERATE_H
#define SW_GENERATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gpt2.h"
#include "sw_error.h"

/* Upper bound of max_new_tokens (keeps the random stream's buffer small). */
#define SW_GENERATE_MAX_NEW (1 << 20)

typedef struct sw_generate_opts {
    int max_new_tokens; /* 0..SW_GENERATE_MAX_NEW */
    float temperature;  /* 0 (greedy) or a finite value > 0 */
    int top_k;          /* 0: the whole vocabulary */
    uint64_t seed;      /* keys the sampling stream; unused when greedy */
    int32_t stop_id;    /* -1: none; choosing it ends generation and it is not emitted */
} sw_generate_opts;

/* Greedy, 40 new tokens, no top-k, seed 0, no stop id. */
void sw_generate_opts_default(sw_generate_opts *opts);

/*
 * Called with each generated id, in order, as soon as it is chosen (before
 * the next forward pass).  Returning non-zero stops generation; that id has
 * been emitted already.
 */
typedef int (*sw_generate_cb)(int32_t id, void *user);

typedef struct sw_generate_result {
    size_t n;         /* ids emitted */
    bool hit_stop;    /* ended because stop_id was chosen */
    int64_t forwards; /* forward passes run (one per chosen id) */
} sw_generate_result;

/*
 * Generates up to opts->max_new_tokens ids following prompt[0..n_prompt).
 * An empty prompt starts from stop_id (GPT-2's <|endoftext|> doubles as the
 * beginning of a document); it is SW_EINVAL when stop_id is -1.  Prompt ids
 * must lie in [0, vocab_size).  out (may be NULL) receives the ids and must
 * hold max_new_tokens of them; cb (may be NULL) sees each one as it comes;
 * result (may be NULL) receives the counts.  Fails with SW_EINVAL on bad
 * options or ids, SW_ENOMEM when scratch cannot be allocated.
 */
int sw_generate(const sw_gpt2 *m, const int32_t *prompt, size_t n_prompt,
                const sw_generate_opts *opts, int32_t *out, sw_generate_cb cb, void *user,
                sw_generate_result *result, sw_diag *diag);

/* The index of the largest of logits[0..V), the lowest on ties. */
int32_t sw_generate_argmax(const float *logits, int V);

/*
 * Draws an id from softmax(logits / temperature) over logits[0..V), or over
 * the top_k largest when 0 < top_k < V, with u in [0, 1) as described above.
 * scratch holds top_k ids (unused, may be NULL, when top_k is 0 or >= V).
 * temperature must be > 0.
 */
int32_t sw_generate_sample(const float *logits, int V, float temperature, int top_k, double u,
                           int32_t *scratch);

#endif
