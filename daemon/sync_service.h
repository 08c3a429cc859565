/*
 * sync_service: the node's answers on its sync socket (REQ/REP), to any
 * peer: Hello (a Welcome with the run spec, the members, the version vector
 * and the snapshot on offer), GetUpdates (signed batches from the archive),
 * GetSnapshot (one chunk of the newest checkpoint).  Every request passes
 * the membership's ban and rate checks on the unverified sender before it is
 * verified; every refusal is an Error in the context the request claims.
 *
 * Thread safety: the loop thread only.
 */
#ifndef SWD_SYNC_SERVICE_H
#define SWD_SYNC_SERVICE_H

#include <stddef.h>
#include <stdint.h>

#include "archive.h"
#include "gossip.h"
#include "link.h"
#include "worker_view.h"

typedef struct swd_sync_service {
    swd_link *link; /* everything borrowed */
    swd_gossip *gossip;
    sw_archive *archive;
    const swd_worker_view *view;
    const char *runspec_json; /* canonical, as the run id hashes it */
    size_t runspec_len;
    const char *state_dir; /* checkpoints/ are the snapshots */
    uint64_t ae_max_steps; /* a GetUpdates with max_steps 0 gets this many */
} swd_sync_service;

/* Answers the request in (data, len) that arrived as sync request id. */
void swd_sync_serve(swd_sync_service *svc, uint64_t id, const uint8_t *data, size_t len);

#endif
