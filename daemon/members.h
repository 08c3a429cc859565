/*
 * members: the node's view of the swarm: every peer it knows, its
 * membership state, what it last announced, when it was last heard from,
 * per-sender rate limits and bans.  Pure bookkeeping: no sockets, no clock
 * of its own (every call takes now_ms, CLOCK_MONOTONIC milliseconds), so it
 * is tested alone.
 *
 * States (docs/protocol.md, membership):
 *   joining  known from config, a Welcome or gossip, not heard from yet
 *   alive    a verified message from it within suspect_after heartbeats
 *   suspect  silent for suspect_after * heartbeat_ms
 *   dead     silent for dead_after * heartbeat_ms (a joining peer never
 *            heard from becomes dead the same way, from when it was added)
 *   left     it published Leave; stays left until it speaks again
 * Any verified message from a peer proves it alive (swd_members_seen).
 * Dead and left peers stay in the table (their updates are part of the
 * model; status shows them) up to SWD_MEMBERS_MAX; beyond that the longest
 * silent dead/left one is forgotten.
 *
 * Ownership: the table owns its peers and their arrays.  Thread safety:
 * none; the loop thread owns it.
 */
#ifndef SWD_MEMBERS_H
#define SWD_MEMBERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "update.h"
#include "wire.h"

#define SWD_MEMBERS_MAX 4096

typedef enum swd_peer_state {
    SWD_PEER_JOINING = 0,
    SWD_PEER_ALIVE,
    SWD_PEER_SUSPECT,
    SWD_PEER_DEAD,
    SWD_PEER_LEFT,
} swd_peer_state;

/* "joining", "alive", "suspect", "dead", "left" */
const char *swd_peer_state_name(swd_peer_state s);

typedef struct swd_peer {
    uint8_t id[SW_ID_BYTES];
    char pub_addr[SWD_WIRE_MAX_ADDR + 1]; /* "" until known */
    char sync_addr[SWD_WIRE_MAX_ADDR + 1];
    swd_peer_state state;
    uint64_t added_ms;
    uint64_t last_seen_ms; /* 0: never */
    uint64_t state_since_ms;

    /* its latest Announce (has_announce) */
    bool has_announce;
    uint64_t seq;
    swd_node_state node_state;
    uint64_t step;
    uint64_t ledger_updates;
    float loss;
    size_t n_vv;
    swd_vv_entry *vv; /* (n_vv) */
    bool has_digest;
    uint8_t digest[SW_ID_BYTES];
    size_t n_digest_vv;
    swd_vv_entry *digest_vv;

    /* pacing (swd_members_pace) */
    bool lagging;
    uint64_t behind_since_ms; /* 0: not behind */

    /* rate limit: token bucket of messages */
    double tokens;
    uint64_t tokens_ms;

    bool banned;
    bool subscribed;            /* the caller's: SUB dialed to pub_addr */
    uint64_t ae_quiet_until_ms; /* the caller's: do not ask it for updates before this */
} swd_peer;

typedef struct swd_members_opts {
    uint64_t heartbeat_ms;  /* > 0 */
    uint32_t suspect_after; /* heartbeats of silence */
    uint32_t dead_after;    /* heartbeats of silence, > suspect_after */
    double rate_per_s;      /* messages per second per sender (bucket refill) */
    double rate_burst;      /* bucket size */
} swd_members_opts;

typedef struct swd_members swd_members;

int swd_members_alloc(const swd_members_opts *o, const uint8_t self[SW_ID_BYTES],
                      swd_members **out);
void swd_members_free(swd_members *m);

size_t swd_members_count(const swd_members *m);
/*
 * The i-th peer (0 <= i < count; order stable until the next add or forget).
 * A swd_peer * stays valid until that peer is forgotten: only add, seen,
 * ban, gossip and announce forget, and only a dead or left, unbanned peer
 * when the table is full.
 */
swd_peer *swd_members_at(swd_members *m, size_t i);
const swd_peer *swd_members_at_const(const swd_members *m, size_t i);
/* NULL when unknown (or id is self). */
swd_peer *swd_members_find(swd_members *m, const uint8_t id[SW_ID_BYTES]);

/*
 * Adds a peer in state joining (or updates its addresses when empty or when
 * replace_addrs); never adds self.  Returns the peer, or NULL for self or
 * when the table is full of live peers.
 */
swd_peer *swd_members_add(swd_members *m, const uint8_t id[SW_ID_BYTES], const char *pub_addr,
                          const char *sync_addr, bool replace_addrs, uint64_t now_ms);

/* A verified message from id: alive, last_seen = now (adds it if unknown). */
swd_peer *swd_members_seen(swd_members *m, const uint8_t id[SW_ID_BYTES], uint64_t now_ms);

/*
 * Records a verified Announce from id (after swd_members_seen): copies its
 * fields, updates addresses, adds gossiped members it did not know (state
 * joining).  A seq not above the last one seen is SWD_DROP_REPLAY (nothing
 * changed, returns false).
 */
bool swd_members_announce(swd_members *m, const uint8_t id[SW_ID_BYTES], const swd_announce *a,
                          uint64_t now_ms, swd_drop *drop);

/* Adds members from a Welcome or an Announce's gossip (unknown ones only). */
void swd_members_gossip(swd_members *m, const swd_member_info *list, size_t n, uint64_t now_ms);

/* It published Leave. */
void swd_members_leave(swd_members *m, const uint8_t id[SW_ID_BYTES], uint64_t now_ms);

/* Marks id banned (adds it if unknown); its messages are dropped from now on. */
void swd_members_ban(swd_members *m, const uint8_t id[SW_ID_BYTES], uint64_t now_ms);
bool swd_members_banned(const swd_members *m, const uint8_t id[SW_ID_BYTES]);

/*
 * Takes one token from sender's bucket (unknown senders share one bucket
 * of the same size); false: drop it as SWD_DROP_RATE_LIMITED.
 */
bool swd_members_rate_ok(swd_members *m, const uint8_t id[SW_ID_BYTES], uint64_t now_ms);

/* A state change found by swd_members_tick. */
typedef void (*swd_members_change_fn)(void *ctx, const swd_peer *p, swd_peer_state from);

/* Applies the silence timeouts; calls fn (may be NULL) for each change. */
void swd_members_tick(swd_members *m, uint64_t now_ms, swd_members_change_fn fn, void *ctx);

/*
 * Pacing (DESIGN "Pacing"): the highest training step this node may start,
 * given that it must not run more than max_staleness steps ahead of any
 * alive, training, non-lagging peer.  held_steps(ctx, id) is how many of
 * that peer's training steps this node holds (its version-vector prefix
 * divided by directions).  A peer that stays behind the limit for
 * lag_timeout_ms is marked lagging and no longer waited for (unmarked when
 * it catches up).  UINT64_MAX when no peer constrains.  Precisely:
 * my_step is the step the node would start next; it may start step s iff
 * s <= held + max_staleness for every constraining, non-lagging peer, and
 * the result is the largest such s (start my_step iff my_step <= result).
 */
typedef uint64_t (*swd_members_held_fn)(void *ctx, const uint8_t id[SW_ID_BYTES]);
uint64_t swd_members_pace(swd_members *m, uint64_t my_step, uint64_t max_staleness,
                          uint64_t lag_timeout_ms, swd_members_held_fn held_steps, void *ctx,
                          uint64_t now_ms);

/* Counts by state (out indexed by swd_peer_state, 5 entries). */
void swd_members_count_states(const swd_members *m, size_t out[5]);

#endif
