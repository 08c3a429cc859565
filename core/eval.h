/*
 * eval: scores a model on a dataset (dataset.h): language-model loss,
 * perplexity and, for multiple-choice data, accuracy.
 *
 * Definitions (nll_t = -log softmax(logits at t-1)[tokens[t]], natural log):
 *   tokens      = sum over records of their scored positions
 *   loss        = (sum over records, over scored positions t, of nll_t) / tokens
 *   perplexity  = exp(loss)
 *   accuracy    = correct / records, computed only when every record of the
 *                 file is prompt/completion and the file has between 2 and
 *                 SW_EVAL_MAX_CHOICES distinct completions.  Each distinct
 *                 completion c is scored for each record as
 *                 score(c) = -(sum of nll_t over c's positions) of the sequence
 *                 enc(prompt) ++ enc(c) cut to max_tokens, its positions being
 *                 those of c's tokens (never position 0).  A record is correct
 *                 when its own completion's score is strictly greater than
 *                 every other candidate's: a tie counts as wrong.
 *
 * Records go through the model in batches of batch_size, sorted by length so
 * that padding stays small; memory is bounded by (batch_size, longest
 * sequence) activations.  nll values are float, summed in double.
 *
 * Thread safety: sw_eval_run reads the model and dataset only; several may
 * run at once on separate threads (OpenBLAS's own threading is process-wide).
 * The progress callback runs on the calling thread.
 */
#ifndef SW_EVAL_H
#define SW_EVAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dataset.h"
#include "gpt2.h"
#include "sw_error.h"

/* More distinct completions than this is generation data, not multiple choice. */
#define SW_EVAL_MAX_CHOICES 64
#define SW_EVAL_MAX_BATCH 4096

/*
 * Called after each batch: done and total count sequences through the model
 * (records for the loss, then records x candidates for the accuracy).
 */
typedef void (*sw_eval_progress_fn)(void *ctx, uint64_t done, uint64_t total);

typedef struct sw_eval_opts {
    int batch_size;               /* sequences per forward, 1..SW_EVAL_MAX_BATCH */
    bool accuracy;                /* compute the accuracy when it applies */
    sw_eval_progress_fn progress; /* may be NULL */
    void *progress_ctx;
} sw_eval_opts;

/* batch_size 8, accuracy on, no progress callback. */
void sw_eval_opts_init(sw_eval_opts *opts);

typedef struct sw_eval_result {
    double loss;       /* nats per scored token */
    double perplexity; /* exp(loss) */
    int64_t tokens;    /* scored tokens */
    size_t records;
    bool has_accuracy; /* false: accuracy, correct and choices are 0 */
    double accuracy;   /* correct / records */
    size_t correct;
    size_t choices; /* candidates per record (distinct completions) */
} sw_eval_result;

/*
 * Evaluates m on ds; opts may be NULL (sw_eval_opts_init's values).  Fails
 * with SW_EMISMATCH (diag naming the dataset) when a sequence is longer than
 * the model's n_positions or holds a token id outside the model's
 * vocabulary, SW_EINVAL on bad options.
 */
int sw_eval_run(const sw_gpt2 *m, const sw_dataset *ds, const sw_eval_opts *opts,
                sw_eval_result *out, sw_diag *diag);

#endif
