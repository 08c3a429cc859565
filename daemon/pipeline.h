/*
 * pipeline: the update path between the network and the worker.
 *
 *   own updates   the worker's own updates (written ahead to the ledger) are
 *                 cut into batches of one scale, at most batch_max_steps long
 *                 or batch_max_ms old, signed, archived and published;
 *   received      a verified UpdateBatch is checked against the run (steps,
 *                 scale, duplicates, equivocation against the archive),
 *                 queued to the worker and archived;
 *   restart       own updates the ledger holds but the archive lost are
 *                 signed again; archived batches the ledger lacks are queued
 *                 again;
 *   bans          an equivocating origin is banned with its proof (bans.h);
 *   anti-entropy  a peer that announces more of an origin than we hold is
 *                 asked for the missing range (GetUpdates); its reply comes
 *                 back here.
 *
 * It reads the worker's view and the membership's table, writes the archive
 * and the worker's inbox, and talks through the link.
 *
 * Thread safety: the loop thread only.
 */
#ifndef SWD_PIPELINE_H
#define SWD_PIPELINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "archive.h"
#include "gossip.h"
#include "ledger.h"
#include "link.h"
#include "requests.h"
#include "runspec.h"
#include "worker.h"
#include "worker_view.h"

#define SWD_PIPELINE_AE_MAX_STEPS 8192             /* steps asked for in one GetUpdates */
#define SWD_PIPELINE_MAX_AHEAD (UINT64_C(1) << 24) /* steps beyond what we hold: absurd */

typedef struct swd_pipeline_params {
    swd_link *link;
    swd_gossip *gossip;
    swd_requests *requests;
    const swd_worker_view *view;
    swd_worker *worker;
    sw_archive *archive;
    const sw_train_spec *train;
    const char *state_dir; /* bans/ goes there */
    size_t batch_max_steps;
    uint64_t batch_max_ms;
    uint64_t heartbeat_ms;
} swd_pipeline_params;

typedef struct swd_pipeline {
    swd_pipeline_params p; /* all borrowed */
    sw_update *pend;       /* own updates not yet published */
    size_t n_pend, pend_cap;
    uint64_t pend_since_ms;
    bool quiet;              /* leaving: ask for nothing more */
    uint64_t ae_progress_ms; /* when anti-entropy last brought updates (0: never) */
    uint64_t updates_made, updates_out, batches_out, updates_in;
} swd_pipeline;

void swd_pipeline_init(swd_pipeline *pl, const swd_pipeline_params *p);
void swd_pipeline_fini(swd_pipeline *pl);

/* Leaving: from now on anti-entropy asks for nothing more. */
void swd_pipeline_quiet(swd_pipeline *pl);
/* What we hold of origin, or have queued to the worker (archived). */
uint64_t swd_pipeline_have(const swd_pipeline *pl, const uint8_t origin[SW_ID_BYTES]);
/* Our own updates published so far (archived), from step 0. */
uint64_t swd_pipeline_published(const swd_pipeline *pl);

/* Own updates taken from the worker (copied); publishes complete batches. */
void swd_pipeline_add_own(swd_pipeline *pl, const sw_update *u, size_t n);
/* Publishes complete or old batches; with force, everything pending. */
void swd_pipeline_flush(swd_pipeline *pl, bool force);

/* At open, before the worker starts (see above); an error is fatal. */
int swd_pipeline_refill_own(swd_pipeline *pl, sw_ledger *ledger);
int swd_pipeline_requeue_archived(swd_pipeline *pl, sw_ledger *ledger);

/* A verified UpdateBatch m (env: its envelope, to archive). */
void swd_pipeline_take_batch(swd_pipeline *pl, const swd_msg *m, const uint8_t *env,
                             size_t env_len);
/* Equivocation the worker found (envelopes not at hand). */
void swd_pipeline_ban(swd_pipeline *pl, const sw_update *held, const sw_update *got);

/* Anti-entropy: asks p for every origin it announces more of than we hold. */
void swd_pipeline_repair_from(swd_pipeline *pl, const swd_peer *p);
/* The reply m (verified) to our GetUpdates req. */
void swd_pipeline_on_updates(swd_pipeline *pl, const swd_req *req, const swd_msg *m);

#endif
