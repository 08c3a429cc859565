/*
 * worker_view: the loop thread's copy of what the worker holds (its last
 * report, the ledger's version vector, the latest model digest), refreshed
 * after each drain.  The parts of the swarm read it; only the swarm writes it.
 */
#ifndef SWD_WORKER_VIEW_H
#define SWD_WORKER_VIEW_H

#include <stddef.h>
#include <stdint.h>

#include "ledger.h"
#include "wire.h"
#include "worker.h"

typedef struct swd_worker_view {
    swd_worker_report last;
    sw_vv vv; /* what the ledger holds */
    uint64_t vv_gen;
    sw_vv digest_vv; /* what the digest is of */
    uint8_t digest[SW_ID_BYTES];
    uint64_t digest_gen, digest_count; /* digest_gen 0: no digest yet */
} swd_worker_view;

/* Copies what changed from the worker (after swd_worker_drain). */
void swd_worker_view_refresh(swd_worker_view *v, swd_worker *wk);
void swd_worker_view_fini(swd_worker_view *v);

/* The prefix of origin's steps vv holds (0 when absent). */
uint64_t swd_vv_prefix(const sw_vv *vv, const uint8_t origin[SW_ID_BYTES]);
/* vv as wire entries (prefix counts), at most SWD_WIRE_MAX_VV; *out malloc'd. */
int swd_vv_entries(const sw_vv *vv, swd_vv_entry **out, size_t *n);
/* The digest's version vector in prefixes only (the wire carries nothing else). */
bool swd_vv_exact(const sw_vv *vv);

#endif
