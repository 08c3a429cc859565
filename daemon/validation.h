/*
 * validation: scoring `[data] valid` while training, on the trainer thread
 * (it owns the weights).  The file is scored when training starts, every
 * `eval_every` own steps and when the node is done, exactly as `swarmctl
 * model eval` scores it (core/eval.h: loss per scored token, and the
 * multiple-choice accuracy for prompt/completion files).  The best score so
 * far is kept: the highest accuracy (ties: the lower loss), or the lowest
 * loss where there is no accuracy; with keep_best its model is exported to
 * <state_dir>/best/ (Hugging Face layout, F32) with validation.json beside
 * it, which a restart reads back so that a later, worse score never
 * replaces it.
 *
 * A failed scoring or export is logged and counted, never fatal: the
 * weights and the ledger are not touched.
 *
 * Ownership: swd_validation_init takes the dataset.  Thread safety: one
 * thread (the worker's); the report is a plain value the worker copies to
 * the loop under its own mutex.
 */
#ifndef SWD_VALIDATION_H
#define SWD_VALIDATION_H

#include <stdbool.h>
#include <stdint.h>

#include "dataset.h"
#include "fixed.h"
#include "state.h"

#define SWD_VALIDATION_BEST_DIR "best"
#define SWD_VALIDATION_BEST_FILE "validation.json"

/* What the loop shows (status, /metrics); levels, not deltas. */
typedef struct swd_valid_report {
    bool enabled;   /* [data] valid is set */
    uint64_t evals; /* scorings done by this process */
    uint64_t failures;
    uint64_t step;         /* the own training step of the latest scoring */
    double loss, accuracy; /* the latest (accuracy NaN: not multiple choice) */
    double seconds;        /* how long the latest took */
    bool has_best;         /* from this process or from best/validation.json */
    uint64_t best_step;
    double best_loss, best_accuracy;
    bool best_kept; /* the best model is in best_dir */
    char best_dir[SW_STATE_PATH_MAX];
} swd_valid_report;

typedef struct swd_validation {
    sw_dataset *ds; /* NULL: validation off */
    uint64_t every;
    uint64_t next_step; /* the next scoring is due at this own step */
    bool keep_best;
    char base_dir[SW_STATE_PATH_MAX]; /* tokenizer files copied into best/ */
    swd_valid_report rep;
} swd_validation;

/*
 * ds NULL turns validation off (every call below is then a no-op).  The
 * first scoring is due at first_step.  With keep_best, the best so far is
 * read from state_dir/best/validation.json when it is there and readable
 * (a damaged one is ignored with a warning: the next scoring replaces it).
 */
void swd_validation_init(swd_validation *v, sw_dataset *ds, uint64_t every, bool keep_best,
                         const char *state_dir, const char *base_dir, uint64_t first_step);
void swd_validation_fini(swd_validation *v);

/* Whether a scoring is due at own step `step` (done: the node reached its
 * last step, which is scored once). */
bool swd_validation_due(const swd_validation *v, uint64_t step, bool done);

/*
 * Scores w at own step `step` (`updates`: ledger updates it holds), updates
 * the report and, on a new best with keep_best, exports it.  True when the
 * report changed.
 */
bool swd_validation_run(swd_validation *v, const sw_fixed *w, uint64_t step, uint64_t updates);

/* Whether a (loss, accuracy) scores better than the best so far. */
bool swd_validation_better(const swd_valid_report *r, double loss, double accuracy);

#endif
