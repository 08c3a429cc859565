/*
 * gossip: the swarm's membership.  It owns the peer table (members.h) and
 * everything that keeps it true: who is heard (bans, rate limits, the
 * verification of every published message), heartbeats and announces, the
 * members a Welcome or an announce gossips, failure detection (the table's
 * silence timeouts), Leave, and the SUB subscriptions to every live member.
 *
 * It knows nothing of updates: an announce's version vector and digest come
 * from the caller (swd_gossip_announce), and what a peer announces is read
 * by the pipeline from the table.
 *
 * Thread safety: the loop thread only.
 */
#ifndef SWD_GOSSIP_H
#define SWD_GOSSIP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "link.h"
#include "members.h"

#define SWD_GOSSIP_RATE_PER_S 200.0 /* messages per second per sender */
#define SWD_GOSSIP_RATE_BURST 400.0
#define SWD_GOSSIP_ANNOUNCE_EVERY 5 /* heartbeats: an announce at least this often */

typedef struct swd_gossip {
    swd_link *link; /* borrowed */
    swd_members *table;
    char pub_url[SWD_WIRE_MAX_ADDR + 1], sync_url[SWD_WIRE_MAX_ADDR + 1]; /* as advertised */
    uint64_t announce_seq;     /* grows across restarts (starts from the wall clock) */
    uint64_t last_announce_ms; /* when our last announce went out */
} swd_gossip;

typedef struct swd_gossip_opts {
    uint64_t heartbeat_ms;
    uint32_t suspect_after, dead_after; /* heartbeats of silence */
    uint64_t announce_seq;              /* the first announce's seq - 1 */
} swd_gossip_opts;

int swd_gossip_init(swd_gossip *g, swd_link *l, const swd_gossip_opts *o, const char *pub_url,
                    const char *sync_url);
void swd_gossip_fini(swd_gossip *g);

bool swd_gossip_banned(const swd_gossip *g, const uint8_t id[SW_ID_BYTES]);
void swd_gossip_ban(swd_gossip *g, const uint8_t id[SW_ID_BYTES]);
bool swd_gossip_rate_ok(swd_gossip *g, const uint8_t id[SW_ID_BYTES]);

/*
 * A message published by a peer (SUB), in the order that costs an attacker
 * the most: size bound, ban and rate checks on the unverified sender, then
 * the signature, run id and fields (swd_wire_open); our own echo is dropped
 * too.  True: *m holds it (swd_msg_fini it).  False: dropped and counted.
 */
bool swd_gossip_admit(swd_gossip *g, const uint8_t *data, size_t len, swd_msg *m);

/* A verified message from id: it is alive (logs a change of state). */
swd_peer *swd_gossip_seen(swd_gossip *g, const uint8_t id[SW_ID_BYTES]);
/* The same for a sync request or reply: it proves liveness, but a peer that
 * left stays left (its last requests may arrive after its Leave). */
void swd_gossip_heard(swd_gossip *g, const uint8_t id[SW_ID_BYTES]);

/* A verified Announce: records it, subscribes to what it names; returns the
 * peer (to repair from), NULL when it was dropped (a replay). */
const swd_peer *swd_gossip_on_announce(swd_gossip *g, const swd_msg *m);
void swd_gossip_on_leave(swd_gossip *g, const uint8_t id[SW_ID_BYTES]);
/* A running node's Hello with its addresses: listen to it at once. */
void swd_gossip_on_hello(swd_gossip *g, const uint8_t id[SW_ID_BYTES], const char *pub_addr,
                         const char *sync_addr);
/* Members from a Welcome. */
void swd_gossip_welcomed(swd_gossip *g, const swd_member_info *list, size_t n);
/* Silence timeouts (failure detection), every cron tick. */
void swd_gossip_tick(swd_gossip *g);
/* Subscribes to every live member not yet subscribed. */
void swd_gossip_subscribe_all(swd_gossip *g);

/* The members worth gossiping (alive or suspect, with addresses), self first
 * when with_self; at most max. */
size_t swd_gossip_list(const swd_gossip *g, swd_member_info *out, size_t max, bool with_self);
/* The Hello a running node sends: its identity is the envelope's, its
 * addresses are in it. */
void swd_gossip_hello_msg(const swd_gossip *g, swd_msg *m);
/*
 * Publishes an Announce: the caller fills what the node holds (state, step,
 * ledger_updates, loss, vv, digest); gossip adds seq, addresses and members.
 */
void swd_gossip_announce(swd_gossip *g, swd_announce *a);

/* Every alive, unbanned peer announced at least count of origin's updates. */
bool swd_gossip_all_hold(const swd_gossip *g, const uint8_t origin[SW_ID_BYTES], uint64_t count);
/* Some alive peer announces more than gap updates of an origin beyond
 * have(ctx, origin). */
bool swd_gossip_any_ahead(const swd_gossip *g, uint64_t (*have)(void *ctx, const uint8_t *origin),
                          void *ctx, uint64_t gap);

#endif
