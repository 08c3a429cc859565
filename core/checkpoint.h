/*
 * checkpoint: durable snapshots of the fixed-point weights, so a restart
 * replays only the ledger suffix.
 *
 * A checkpoint holds the int32 weights, the per-tensor exponents, the
 * architecture, the run id, the number of ledger updates it includes
 * (state = checkpoint + ledger updates [ledger_count, ...)), the version
 * vector of those updates, the saturation count and the sw_fixed digest, and
 * ends with a BLAKE2b-256 over every byte before it (layout in
 * docs/state.md).
 *
 * Files live in one directory, named ckpt-<ledger_count as 20 digits>.swck so
 * that names sort by age.  Writing streams the file (the weights are never
 * copied in memory) to NAME.tmp.PID, fsyncs it, renames it to NAME, fsyncs
 * the directory, and only then deletes all but the newest `keep`
 * checkpoints.  A crash at any point leaves the previous checkpoints intact
 * (and maybe a *.tmp.* file, which sw_checkpoint_cleanup removes).
 *
 * Loading the newest VALID checkpoint tries them newest first: one that is
 * truncated, fails its checksum or its digest, belongs to another run or
 * architecture, is reported through the warn callback and skipped.  A
 * damaged file is never a crash and never an unbounded allocation.
 *
 * Ownership: the caller owns what load returns.  Thread safety: reentrant;
 * write only reads f (a caller may checkpoint a snapshot on another thread
 * while nothing writes f).
 */
#ifndef SW_CHECKPOINT_H
#define SW_CHECKPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fixed.h"
#include "gpt2_config.h"
#include "ledger.h"
#include "sw_error.h"
#include "update.h"

#define SW_CHECKPOINT_VERSION 1
#define SW_CHECKPOINT_KEEP 2
#define SW_CHECKPOINT_PATH_MAX 4096

/* Receives one warning line (a skipped checkpoint, a removed temp file). */
typedef void (*sw_warn_fn)(void *ctx, const char *msg);

/* What a checkpoint says about itself. */
typedef struct sw_checkpoint_meta {
    char path[SW_CHECKPOINT_PATH_MAX];
    uint8_t run_id[SW_ID_BYTES];
    sw_gpt2_config cfg;
    uint64_t ledger_count;                 /* ledger updates [0, ledger_count) are included */
    uint64_t saturations;                  /* sw_fixed.saturations when written */
    uint8_t digest[SW_FIXED_DIGEST_BYTES]; /* sw_fixed_digest of the weights */
    sw_vv vv;                              /* the included updates; sw_checkpoint_meta_fini frees */
} sw_checkpoint_meta;

void sw_checkpoint_meta_fini(sw_checkpoint_meta *m);

/*
 * Writes f as the checkpoint of ledger position ledger_count into dir (which
 * must exist), then prunes to the newest `keep` (>= 1) checkpoints.  vv
 * describes the included updates (sw_ledger_vv at that position).
 * path_out (may be NULL, SW_CHECKPOINT_PATH_MAX bytes) receives the file
 * name.  A failure to prune is reported through warn, not as an error: the
 * new checkpoint is durable by then.
 */
int sw_checkpoint_write(const char *dir, const uint8_t run_id[SW_ID_BYTES], const sw_fixed *f,
                        uint64_t ledger_count, const sw_vv *vv, int keep, char *path_out,
                        sw_warn_fn warn, void *warn_ctx, sw_diag *diag);

/*
 * Loads one checkpoint file, verifying the checksum, that run_id and cfg
 * (either may be NULL: not checked) match, and the sw_fixed digest of the
 * loaded weights.  *out is a new sw_fixed (saturations restored) and meta
 * (may be NULL) is filled.  Errors name the file and the problem.
 */
int sw_checkpoint_load(const char *path, const uint8_t run_id[SW_ID_BYTES],
                       const sw_gpt2_config *cfg, sw_fixed **out, sw_checkpoint_meta *meta,
                       sw_diag *diag);

/*
 * Loads the newest valid checkpoint of dir whose ledger_count is at most
 * max_ledger_count (a checkpoint claiming more updates than the ledger holds
 * does not describe this ledger: skipped with a warning).  SW_ENOTFOUND
 * (with *out NULL) when there is none; a missing dir counts as empty.
 */
int sw_checkpoint_load_newest(const char *dir, const uint8_t run_id[SW_ID_BYTES],
                              const sw_gpt2_config *cfg, uint64_t max_ledger_count, sw_fixed **out,
                              sw_checkpoint_meta *meta, sw_warn_fn warn, void *warn_ctx,
                              sw_diag *diag);

/*
 * Lists checkpoint file names in dir, newest first (paths joined with dir,
 * malloc'd array of malloc'd strings; sw_checkpoint_list_free).  Only names
 * of the ckpt-<20 digits>.swck form count.
 */
int sw_checkpoint_list(const char *dir, char ***paths, size_t *n, sw_diag *diag);
void sw_checkpoint_list_free(char **paths, size_t n);

/* Removes leftover *.tmp.* files in dir (crash during a write). */
int sw_checkpoint_cleanup(const char *dir, sw_warn_fn warn, void *warn_ctx, sw_diag *diag);

#endif
