/*
 * catchup: how a joiner with a new state directory catches up with the
 * swarm, decided once at startup from the member's Welcome:
 *
 *   replay    start from the base model; anti-entropy fetches every update
 *             and the worker applies them in fused sweeps.
 *             cost ~ ledger_updates * params / (apply rate * threads)
 *   snapshot  download the member's newest checkpoint (int32 weights and the
 *             version vector they hold, in digest-checked chunks) and the
 *             origin-signed batches of exactly those updates (so the ledger
 *             and archive hold them, every one verified); then replay the
 *             rest as above.
 *             cost ~ snapshot_bytes / link rate
 *                    + (ledger_updates - snapshot_updates) * params / (apply rate * threads)
 *
 * The rates are documented constants (docs/swarmd.md, catch-up), measured on
 * the reference machine (tests/bench/bench_apply) and an assumed 100 Mbit/s
 * link; `[node] catch_up` forces either way.  The estimate is logged.
 *
 * Trust: the snapshot's weights come from one member.  Each chunk is
 * digest-checked and the file's own digest checked on load; the updates it
 * claims are fetched and verified against their origins' signatures, and
 * the digest is compared with peers' announced digests afterwards (status).
 *
 * Runs on the main thread before the loop (blocking requests are fine).
 */
#ifndef SWD_CATCHUP_H
#define SWD_CATCHUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "checkpoint.h"
#include "fixed.h"
#include "runspec.h"
#include "update.h"
#include "wire.h"

/*
 * Parameter-updates per second per thread a joiner's replay achieves.  The
 * fused sweep alone does 3-4e9 (bench_apply, K = 64, rademacher); a joiner
 * also fetches, ledgers and trains meanwhile: bench_swarm measured 0.5-1.5e9.
 */
#define SWD_CATCHUP_APPLY_RATE_RADEMACHER 1.0e9
#define SWD_CATCHUP_APPLY_RATE_GAUSSIAN 0.4e9
/* Assumed link rate for a snapshot download, bytes per second (100 Mbit/s). */
#define SWD_CATCHUP_LINK_RATE 12.5e6
#define SWD_CATCHUP_TIMEOUT_MS 15000
/* A snapshot larger than this is refused (64 GiB: a 16G-parameter model). */
#define SWD_CATCHUP_MAX_SNAPSHOT (UINT64_C(64) << 30)

enum { SWD_CATCHUP_AUTO = 0, SWD_CATCHUP_REPLAY = 1, SWD_CATCHUP_SNAPSHOT = 2 };

typedef struct swd_catchup_plan {
    bool snapshot;
    double replay_s, snapshot_s; /* the estimates */
} swd_catchup_plan;

/* Chooses (mode: SWD_CATCHUP_*) and logs the estimate. */
void swd_catchup_plan_for(const swd_welcome *w, const sw_runspec *rs, int threads, int mode,
                          swd_catchup_plan *out);

/* A downloaded snapshot, handed to swd_setup_open (which takes its parts). */
typedef struct swd_snapshot {
    sw_fixed *w;
    sw_checkpoint_meta meta;
    sw_update *updates; /* (n) exactly meta.vv's updates, sorted by origin then step */
    size_t n;
} swd_snapshot;

void swd_snapshot_fini(swd_snapshot *s); /* accepts a zeroed one */

/*
 * Downloads the snapshot w describes from the member at sync_addr into
 * state_dir (created if missing; the archive there receives the verified
 * batches), loads and checks it.  Returns 0, or an error logged with what
 * failed (the caller falls back to replay).
 */
int swd_catchup_snapshot(const char *sync_addr, const sw_runspec *rs, const swd_welcome *w,
                         const char *state_dir, swd_snapshot *out);

#endif
