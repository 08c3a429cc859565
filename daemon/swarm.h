/*
 * swarm: the node's life in the swarm, on the loop thread.  It owns the
 * sockets (net.h), the membership table (members.h), the archive of signed
 * batches (core/archive.h) and the counters, and it drives the worker
 * (worker.h) through its loop-thread API:
 *
 *   - own updates (written ahead by the worker) are cut into batches of one
 *     scale, at most batch_max_steps long or batch_max_ms old, signed,
 *     archived and published;
 *   - every message from the network goes through: size bound, ban and rate
 *     checks on the unverified sender, swd_wire_open (signature, run id,
 *     fields), then the content checks against the run (scale, steps,
 *     duplicates, equivocation); a dropped message is counted by reason;
 *   - received batches are archived and queued to the worker, which ledgers
 *     and applies them in fused sweeps;
 *   - announces (every heartbeat_ms of silence, and at least every
 *     SWD_SWARM_ANNOUNCE_EVERY heartbeats) carry the version vector and the
 *     digest; a peer ahead on some origin is asked for the missing range
 *     (anti-entropy), served from its archive;
 *   - the sync service answers Hello (Welcome), GetUpdates, GetSnapshot;
 *   - the control socket answers swarmctl's JSON requests (status);
 *   - pacing: the worker's step limit follows swd_members_pace.
 *
 * The state's immutable parts (identity, run spec, directory) are read
 * here; everything else in it belongs to the worker once it runs.
 */
#ifndef SWD_SWARM_H
#define SWD_SWARM_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "config.h"
#include "control.h"
#include "state.h"
#include "wire.h"
#include "worker.h"

#define SWD_SWARM_JOIN_WAIT_S 60.0 /* a new node waits this long for a bootstrap member */

typedef struct swd_swarm swd_swarm;

/* The node's phase (control.h): training, done, stopping. */
typedef swd_phase swd_swarm_phase;

typedef struct swd_swarm_params {
    const swd_config *cfg;
    sw_state *state; /* ledger read at open only (before the worker starts) */
    swd_worker *worker;
    uv_async_t *net_notify; /* the node's handle that net signals */
    const char *version;
    uint64_t max_steps;
    const swd_welcome *welcome;  /* from the startup join (members to add), or NULL */
    void (*on_leave)(void *ctx); /* `swarmctl leave`: stop gracefully */
    void *on_leave_ctx;
} swd_swarm_params;

/*
 * The join handshake at startup, before the state is opened: a Hello
 * (signed with a throwaway key: admission is open) to each bootstrap
 * address in turn until one answers, going round again every second for
 * up to wait_s seconds (members may still be starting).  On SWD_EXIT_OK *welcome holds the
 * reply (swd_msg_fini it), *rs its parsed run spec and addr the member's
 * sync address that answered.  SWD_EXIT_FAIL when
 * nobody answered (logged), SWD_EXIT_USAGE for a bad bootstrap value.
 */
int swd_swarm_hello(const swd_config *cfg, double wait_s, swd_msg *welcome, sw_runspec *rs,
                    char *addr, size_t addr_size);

/* Opens the sockets and the archive; logs and returns an exit code. */
int swd_swarm_open(const swd_swarm_params *p, swd_swarm **out);
void swd_swarm_close(swd_swarm *s); /* accepts NULL; blocks briefly (sockets) */

void swd_swarm_on_net(swd_swarm *s);                                /* net async callback */
void swd_swarm_on_report(swd_swarm *s, const swd_worker_report *r); /* after each drain */
void swd_swarm_on_cron(swd_swarm *s);                               /* every SWD_CRON_MS */
void swd_swarm_set_phase(swd_swarm *s, swd_swarm_phase phase);
/* Publishes every pending own update at once, and an announce. */
void swd_swarm_flush(swd_swarm *s);
/* True when every alive peer announced holding all of our own updates
 * (a graceful stop waits for it, bounded, so nothing is lost with us). */
bool swd_swarm_peers_hold_own(swd_swarm *s);
/* Graceful stop: publishes pending own updates, then Leave. */
void swd_swarm_leave(swd_swarm *s);

#endif
