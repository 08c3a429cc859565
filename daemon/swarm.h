/*
 * swarm: the node's life in the swarm, on the loop thread.  It owns the
 * sockets (net.h) and the archive of signed batches (core/archive.h), holds
 * the swarm's parts and wires them; each part owns its own state
 * (docs/architecture.md has the map):
 *
 *   link          the signed voice: seal, publish, reply, request, drops
 *   gossip        membership: who is heard, announces, failure detection
 *   pipeline      own and received batches, the archive, anti-entropy
 *   requests      our sync requests in flight
 *   sync_service  our answers on the sync socket (Hello, GetUpdates, GetSnapshot)
 *   control       progress, the status object, the control verbs
 *   worker_view   the loop's copy of what the worker holds
 *
 * swarm.c itself routes network events and worker reports to the part they
 * belong to, runs the cron (flush, failure detection, announces,
 * anti-entropy rounds, request timeouts, the bootstrap Hello, pacing), and
 * does the startup Hello of a joiner (swd_swarm_hello).
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
