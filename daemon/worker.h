/*
 * worker: swarmd's trainer thread.  It OWNS, while it runs, everything that
 * touches the weights: the node's state (ledger, checkpoints), the
 * fixed-point weights, the SPSA trainer and its dataset.  Per training step
 * it runs the trainer, writes the step's updates ahead to the ledger (append
 * + fsync), then applies them (sw_fixed_apply): an update counts as made
 * only once it is in the ledger.  It writes checkpoints itself (every
 * checkpoint_every steps, when asked, at the end), because it owns the
 * weights.
 *
 * The loop thread talks to it only through this API, under one mutex:
 *   - requests: stop, checkpoint, and an inbox of "updates to apply" (from
 *     peers, in a later issue: the worker ledgers and applies them in one
 *     fused sweep between its own steps);
 *   - reports: the worker accumulates progress and events in a report and
 *     calls uv_async_send, which coalesces; the loop drains the whole report
 *     in its async callback (swd_worker_drain).
 * After a report with `exited` set the worker sends nothing more; the loop
 * joins it (swd_worker_join) and may then close the async handle.
 *
 * Ownership: swd_worker_init takes the setup's objects (state, weights,
 * trainer, dataset, tokenizer); swd_worker_fini frees them, after the join.
 */
#ifndef SWD_WORKER_H
#define SWD_WORKER_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "dataset.h"
#include "fixed.h"
#include "state.h"
#include "sw_error.h"
#include "tokenizer.h"
#include "trainer.h"
#include "update.h"
#include "validation.h"

/* The inbox refuses updates beyond this many pending (the caller retries later). */
#define SWD_WORKER_INBOX_MAX (1u << 20)
/* While training, the weights' digest is recomputed at most this often (it
 * costs one pass over the weights); when idle, as soon as the ledger moved. */
#define SWD_WORKER_DIGEST_PERIOD_S 5.0
/* Equivocations reported per drain (more wait for the next one). */
#define SWD_WORKER_EQUIV_MAX 8

/* Upper bounds (seconds) of the step-duration histogram's buckets; one more
 * bucket counts the steps above the last. */
#define SWD_STEP_BUCKETS 9
extern const double swd_step_bucket_bounds[SWD_STEP_BUCKETS];

/* Jobs the loop hands the worker (it owns the weights): done between steps. */
#define SWD_WORKER_JOBS_MAX 8
#define SWD_JOB_PATH_MAX 4096
typedef enum swd_job_kind {
    SWD_JOB_CHECKPOINT, /* write one now (or report the newest, when the ledger did not move) */
    SWD_JOB_EXPORT,     /* the live model in Hugging Face layout at path */
    SWD_JOB_EVAL,       /* the live model's loss on the JSONL file at path */
} swd_job_kind;

typedef struct swd_job {
    swd_job_kind kind;
    uint64_t tag; /* the caller's (the control request to answer) */
    char path[SWD_JOB_PATH_MAX];
    int dtype; /* SWD_JOB_EXPORT: sw_dtype, F32 or F16 */
} swd_job;

typedef struct swd_job_result {
    swd_job_kind kind;
    uint64_t tag;
    int rc; /* 0, or an error code with err naming what failed */
    char err[SW_DIAG_MAX];
    char path[SWD_JOB_PATH_MAX]; /* checkpoint file, export directory, eval data */
    uint64_t updates;            /* ledger updates the weights held */
    uint8_t digest[32];          /* export: sw_gpt2_digest of what a reader loads */
    double loss, perplexity, accuracy;
    bool has_accuracy;
    int64_t tokens;
    size_t records;
} swd_job_result;

/* A received update that contradicts the one the ledger holds for its step. */
typedef struct swd_worker_equivocation {
    sw_update held, got;
} swd_worker_equivocation;

/* What the worker reports; swd_worker_drain hands over and resets the deltas. */
typedef struct swd_worker_report {
    /* levels: the latest values */
    uint64_t next_step;    /* the next training step (= steps taken by this origin) */
    uint64_t ledger_count; /* updates held and applied */
    uint64_t saturations;  /* sw_fixed.saturations */
    float scale;           /* the current window's quantization scale */
    uint64_t ckpt_count;   /* ledger position of the newest checkpoint */
    double ckpt_time;      /* CLOCK_MONOTONIC seconds of the newest checkpoint */
    /* deltas since the last drain */
    uint64_t steps;                           /* training steps taken */
    double loss_sum;                          /* sum of their losses */
    uint64_t nonfinite;                       /* directions whose loss was not finite (q = 0) */
    uint64_t received;                        /* inbox updates ledgered and applied */
    uint64_t duplicates;                      /* inbox updates already held */
    uint64_t step_hist[SWD_STEP_BUCKETS + 1]; /* steps per duration bucket (not cumulative) */
    double step_seconds;                      /* their total duration */
    size_t n_equiv;
    swd_worker_equivocation equiv[SWD_WORKER_EQUIV_MAX];
    swd_valid_report valid; /* [data] valid: the latest and the best scoring (a level) */
    /* events */
    bool done;   /* next_step reached max_steps and a checkpoint holds it */
    bool exited; /* the thread has finished: join it */
    int error;   /* nonzero: a fatal error (the thread exits), message in err */
    char err[SW_DIAG_MAX];
} swd_worker_report;

typedef struct swd_worker {
    /* owned by the thread while it runs */
    sw_state *state;
    sw_fixed *w;
    sw_trainer *trainer;
    sw_dataset *ds;
    sw_tokenizer *tok;
    uint64_t max_steps;
    uint64_t checkpoint_every; /* 0: not by step count */
    int threads;
    sw_trainer_result res; /* large: kept here, not on the thread's stack */
    swd_validation val;    /* [data] valid */
    sw_update *batch;      /* inbox updates being applied */
    size_t batch_cap;

    /* shared with the loop, under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
    bool ckpt_request;
    sw_update *inbox;
    size_t n_inbox, inbox_cap;
    swd_worker_report rep;

    /* the ledger's version vector (vv_gen counts changes) and the digest of
     * the weights with the version vector it belongs to (digest_gen) */
    sw_vv vv;
    uint64_t vv_gen;
    sw_vv digest_vv;
    uint8_t digest[SW_FIXED_DIGEST_BYTES];
    uint64_t digest_gen;    /* 0: none yet */
    uint64_t digest_count;  /* ledger updates the digest covers */
    uint64_t digest_of_gen; /* vv_gen the digest was computed at (worker only) */
    double digest_time;     /* worker only */
    /* own updates made since the loop last took them (to publish) */
    sw_update *own;
    size_t n_own, own_cap;
    uint64_t step_limit; /* pacing: train only steps < step_limit */
    bool paused;         /* make no updates (still apply, checkpoint, serve jobs) */
    swd_job jobs[SWD_WORKER_JOBS_MAX];
    size_t n_jobs;
    swd_job_result results[SWD_WORKER_JOBS_MAX];
    size_t n_results;

    uv_async_t *notify; /* the loop's handle; uv_async_send is thread-safe */
    uv_thread_t thread;
    bool started;
} swd_worker;

typedef struct swd_worker_parts {
    sw_state *state;
    sw_fixed *w;
    sw_trainer *trainer;
    sw_dataset *ds;
    sw_tokenizer *tok;
    uint64_t max_steps;
    uint64_t checkpoint_every;
    int threads;
    sw_dataset *valid; /* NULL: no validation */
    uint64_t eval_every;
    bool keep_best;
} swd_worker_parts;

/* Takes ownership of parts' objects (also on failure). */
int swd_worker_init(swd_worker *wk, const swd_worker_parts *parts, uv_async_t *notify);
/* Starts the thread.  On failure nothing runs and the caller still finis. */
int swd_worker_start(swd_worker *wk);

/* Loop-thread requests (never block beyond the mutex). */
void swd_worker_request_stop(swd_worker *wk);
void swd_worker_request_checkpoint(swd_worker *wk);
/* Queues updates (already checked with sw_update_check) to ledger and apply;
 * SW_ETOOBIG when the inbox is full, SW_ENOMEM. */
int swd_worker_push_updates(swd_worker *wk, const sw_update *u, size_t n);

/* Pacing: the worker starts only training steps < limit (UINT64_MAX: no limit). */
void swd_worker_set_step_limit(swd_worker *wk, uint64_t limit);

/* Stops or restarts making updates (received ones are still applied). */
void swd_worker_set_paused(swd_worker *wk, bool paused);

/* Queues a job; SW_ETOOBIG when SWD_WORKER_JOBS_MAX are pending (try later). */
int swd_worker_submit(swd_worker *wk, const swd_job *job);
/* Pops one finished job's result; false when none. */
bool swd_worker_take_result(swd_worker *wk, swd_job_result *out);

/* Hands over the own updates made since the last call (*out malloc'd or NULL). */
void swd_worker_take_own(swd_worker *wk, sw_update **out, size_t *n);

/* Copies the version vector when its generation differs from *gen (then
 * updates *gen and returns true; dst is finied first). */
bool swd_worker_copy_vv(swd_worker *wk, uint64_t *gen, sw_vv *dst);

/* Copies the latest digest and its version vector when digest_gen differs
 * from *gen (returns true). */
bool swd_worker_copy_digest(swd_worker *wk, uint64_t *gen, uint8_t digest[SW_FIXED_DIGEST_BYTES],
                            uint64_t *count, sw_vv *vv);

/* Copies the report into *out and resets its deltas and events. */
void swd_worker_drain(swd_worker *wk, swd_worker_report *out);

/* Joins a started thread (after it reported `exited`). */
void swd_worker_join(swd_worker *wk);
/* Frees everything (joins first if needed). */
void swd_worker_fini(swd_worker *wk);

#endif
