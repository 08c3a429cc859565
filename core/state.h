/*
 * state: a node's state directory: identity, run spec, ledger, checkpoints,
 * and the lock that keeps two daemons out of one directory; plus rebuilding
 * the current fixed-point weights from it.
 *
 * Layout of DIR (docs/state.md):
 *   LOCK               flock(LOCK_EX) by the owning process; holds its pid
 *   identity.key       Ed25519 key (mode 0600, created so; or an explicit
 *                      path given by the caller, possibly shared by runs)
 *   runspec.json       canonical run spec; its BLAKE2b-256 is the run id
 *   base_model.path    absolute path of the base model directory + "\n"
 *                      (what `swarmctl model export` needs: tokenizer files)
 *   ledger             the ledger (ledger.h)
 *   checkpoints/       ckpt-<ledger count>.swck (checkpoint.h), newest 2
 * There is no separate step counter: the node's next own step is
 * sw_ledger_next_step(ledger, identity.pk), and a step counts as taken only
 * once its update is in the ledger (written ahead, fsynced).
 *
 * Identity file (72 bytes): "SWIDKEY1" | Ed25519 seed (32) | public key (32).
 * Loading re-derives the key pair from the seed and refuses a file whose
 * public key does not match, or whose mode lets group or others read it.
 * The secret key lives in sodium_malloc'd memory (guarded, locked, wiped on
 * free).  The public key is the node's origin id.
 *
 * Ownership: a sw_state owns everything it opened.  Thread safety: none
 * inside; the daemon's loop thread owns it (sw_state_rebuild and
 * sw_state_checkpoint are long: call them where blocking is acceptable).
 */
#ifndef SW_STATE_H
#define SW_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "checkpoint.h"
#include "fixed.h"
#include "ledger.h"
#include "runspec.h"
#include "sw_error.h"
#include "update.h"

#define SW_STATE_PATH_MAX 4096
#define SW_IDENTITY_FILE_BYTES 72

typedef struct sw_identity {
    uint8_t pk[SW_ID_BYTES]; /* Ed25519 public key = origin id */
    unsigned char *sk;       /* (64) libsodium secret key, sodium_malloc'd; NULL if not loaded */
} sw_identity;

/*
 * Loads the identity at path, or creates it when the file does not exist
 * and create is true: written to a temporary file opened O_CREAT|O_EXCL with
 * mode 0600, fsynced, then link()ed to path (so two processes creating the
 * same shared key race safely: the loser loads the winner's key), directory
 * fsynced.  *created (may be NULL) says which happened.
 */
int sw_identity_load_or_create(const char *path, bool create, sw_identity *out, bool *created,
                               sw_diag *diag);
/* Wipes and frees the secret key; accepts a zeroed identity. */
void sw_identity_fini(sw_identity *id);

typedef struct sw_state_options {
    /* Identity file; NULL: DIR/identity.key.  Ignored when readonly. */
    const char *identity_path;
    /*
     * The run spec from the node's config.  A new state dir records it; an
     * existing one must hold an equal spec (else SW_EMISMATCH naming the
     * first differing key).  NULL: the stored one is used (export).
     */
    const sw_runspec *runspec;
    /*
     * The base model directory.  Recorded (made absolute) on creation;
     * when it differs from the stored path the stored path is updated and a
     * warning is given (the run spec's digest is what binds the model).
     * NULL: keep the stored one.
     */
    const char *base_model_dir;
    /*
     * Read-only (export while a daemon may run): no lock, nothing created or
     * written, a torn ledger tail ignored; of the identity only the public
     * key is read, when the file is readable (else has_pk is false).
     */
    bool readonly;
    sw_warn_fn warn; /* warnings (torn tail truncated, checkpoint skipped); may be NULL */
    void *warn_ctx;
} sw_state_options;

typedef struct sw_state {
    char dir[SW_STATE_PATH_MAX];
    char base_model_dir[SW_STATE_PATH_MAX]; /* absolute */
    bool readonly;
    bool created;   /* the directory was initialised by this open */
    sw_identity id; /* pk only (sk NULL) when readonly */
    bool has_pk;    /* id.pk is known (false only when readonly) */
    bool identity_created;
    sw_runspec runspec;
    sw_train_spec train; /* from runspec, run_id included */
    sw_ledger *ledger;
    sw_ledger_open_info ledger_info; /* truncated_bytes: the torn tail removed */
    /* The newest valid checkpoint's weights, loaded by open (NULL: none),
     * owned until sw_state_rebuild takes them (sw_state_checkpoint drops
     * them too: they are stale then). */
    sw_fixed *ckpt;
    /* The newest checkpoint (loaded by open, or written since): valid when
     * has_ckpt.  A loaded one was checked against the ledger: its
     * ledger_count is within it and its version vector equals the ledger's
     * at that position (else it was skipped with a warning). */
    sw_checkpoint_meta ckpt_meta;
    bool has_ckpt;
    sw_gpt2_config model; /* the architecture trained: runspec.arch and its adapters */
    bool *trainable;    /* (n_tensors) mask from runspec.trainable */
    size_t n_trainable; /* tensors selected */
    int lock_fd;
    sw_warn_fn warn;
    void *warn_ctx;
} sw_state;

/*
 * Opens (and when needed initialises) the state directory dir: takes the
 * lock (another holder: SW_EEXIST "DIR: state directory is in use by
 * another process (pid N)"), creates or loads the identity, records or
 * checks the run spec, opens the ledger (truncating a torn tail; corruption
 * in the middle is an error naming the file and offset), cleans temporary
 * checkpoint files, and loads the newest valid checkpoint.  Does not load
 * the base model (sw_state_rebuild does when it needs to).
 */
int sw_state_open(const char *dir, const sw_state_options *opt, sw_state **out, sw_diag *diag);
/* Releases everything, the lock last.  Accepts NULL. */
void sw_state_close(sw_state *s);

/*
 * Rebuilds the current weights: the loaded checkpoint (ownership taken from
 * s) or, without one, the base model (loaded from base_model_dir, its
 * sw_gpt2_digest checked against the run spec, converted with
 * sw_fixed_from_model), then the ledger updates after it applied with
 * sw_fixed_apply in fused batches of SW_STATE_REPLAY_BATCH.  *out is the
 * caller's.  threads is passed to sw_fixed_apply.
 */
#define SW_STATE_REPLAY_BATCH 256
int sw_state_rebuild(sw_state *s, int threads, sw_fixed **out, sw_diag *diag);
/*
 * The same, for a caller that already holds the base model in memory (the
 * daemon loads it at start): used, digest-checked, instead of loading it
 * again when there is no checkpoint; ignored when there is one.  base is
 * only read.  May be NULL (then this is sw_state_rebuild).
 */
int sw_state_rebuild_from(sw_state *s, const sw_gpt2 *base, int threads, sw_fixed **out,
                          sw_diag *diag);

/*
 * Replays ledger updates [first, count) onto f (fused batches; each update
 * checked with sw_update_check against s->train first, an invalid one is
 * SW_EFORMAT naming its ledger index).
 */
int sw_state_replay(sw_state *s, sw_fixed *f, uint64_t first, int threads, sw_diag *diag);

/*
 * Writes a checkpoint of f, which must hold exactly the ledger's current
 * updates, keeping the newest SW_CHECKPOINT_KEEP.  path_out may be NULL.
 */
int sw_state_checkpoint(sw_state *s, const sw_fixed *f, char *path_out, sw_diag *diag);

/* The node's next own step number (from the ledger; see the layout note). */
uint64_t sw_state_next_step(const sw_state *s);

#endif
