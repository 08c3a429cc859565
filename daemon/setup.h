/*
 * setup: everything swarmd does between reading its configuration and
 * starting the trainer thread, on the main thread before the loop runs:
 *
 *   1. load the base model (its digest and architecture pin the run), the
 *      tokenizer and the training data;
 *   2. build the run spec from the configuration; on a state directory that
 *      has one already, refuse (exit 2, naming the configuration key) a
 *      configuration that disagrees on a run-spec value; on a new one with
 *      max_scale = 0, calibrate max_scale from the first probes;
 *   3. open the state directory (lock, identity, run spec, ledger with a
 *      torn tail truncated, newest valid checkpoint) and rebuild the weights
 *      (checkpoint + ledger replay);
 *   4. create the SPSA trainer and position it after the last own update in
 *      the ledger (never reusing a step number).
 *
 * Ownership: a swd_setup owns what it built until swd_worker_init takes it
 * (swd_setup_release), or swd_setup_fini frees it.
 */
#ifndef SWD_SETUP_H
#define SWD_SETUP_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "dataset.h"
#include "fixed.h"
#include "runspec.h"
#include "state.h"
#include "tokenizer.h"
#include "trainer.h"

/* Process exit codes. */
#define SWD_EXIT_OK 0
#define SWD_EXIT_FAIL 1
#define SWD_EXIT_USAGE 2

/* Probes of the max_scale calibration on a founding node. */
#define SWD_CALIBRATE_PROBES 8

typedef struct swd_setup {
    sw_state *state;
    sw_fixed *w;
    sw_trainer *trainer;
    sw_dataset *ds;
    sw_dataset *valid; /* [data] valid, or NULL */
    sw_tokenizer *tok;
    int threads; /* resolved [train] threads */
    int seq_len; /* resolved [train] seq_len */
    /* for the startup line */
    uint64_t n_params;
    uint64_t n_trainable_params;
    bool calibrated;
    double calib_median_abs_g;
    uint64_t ckpt_count;  /* ledger position of the checkpoint used; UINT64_MAX: none */
    uint64_t replayed;    /* ledger updates replayed onto it */
    uint64_t next_update; /* the node's next own update number */
} swd_setup;

/*
 * Returns an exit code: SWD_EXIT_OK, or _USAGE / _FAIL after logging why.
 * adopt (may be NULL): the run spec of the swarm this node joins (from a
 * Welcome); the node adopts it and refuses when its base model or a
 * swarm-wide value its configuration sets differs.  snap (may be NULL): a
 * downloaded snapshot (catchup.h) for a new state directory: its updates
 * are written to the ledger, its weights become the first checkpoint and
 * the current weights (setup takes snap->w); ignored, with a warning, when
 * the ledger already holds updates.
 */
struct swd_snapshot;
int swd_setup_open(const swd_config *cfg, const sw_runspec *adopt, struct swd_snapshot *snap,
                   swd_setup *out);
/* Hands the objects over (the setup no longer frees them). */
void swd_setup_release(swd_setup *s);
void swd_setup_fini(swd_setup *s);

/* Warning sink for core's sw_warn_fn: logs at level warn. */
void swd_setup_warn(void *ctx, const char *msg);

#endif
