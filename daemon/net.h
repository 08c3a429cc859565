/*
 * net: every nng call of swarmd lives in net.c.  It owns the node's sockets:
 *   - PUB, listening on pub_addr: our batches, announces, leaves;
 *   - SUB, subscribed to everything, with one dialer per peer PUB address
 *     (swd_net_subscribe / swd_net_unsubscribe); nng reconnects by itself;
 *   - REP, listening on sync_addr: the sync service (several nng contexts, so
 *     a slow reply does not hold up the next request);
 *   - REP over IPC at control_path (file mode 0600): swarmctl's requests;
 *   - REQ sockets, one per peer sync address we ask (cached, bounded), for
 *     outgoing requests with a timeout (join, anti-entropy, snapshots).
 *
 * Threads: nng runs its callbacks on its own threads.  They never touch
 * daemon state: each turns what arrived into a swd_net_event, appends it to
 * a queue under a mutex and calls uv_async_send(notify) (which coalesces:
 * the loop drains the whole queue with swd_net_drain).  Every function
 * below except swd_net_request_sync is non-blocking and is called from the
 * loop thread only; swd_net_close blocks (shutdown).
 *
 * Memory: the queue is bounded (SWD_NET_QUEUE_MAX_BYTES); a message that
 * would overflow it is dropped and counted (stats.queue_dropped).  nng
 * refuses messages larger than SWD_WIRE_MAX_MSG on every socket.
 *
 * Ownership: events returned by swd_net_drain are the caller's
 * (swd_net_event_free).  Buffers passed to publish/reply/request are copied.
 */
#ifndef SWD_NET_H
#define SWD_NET_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "sw_error.h"

#define SWD_NET_QUEUE_MAX_BYTES (64u << 20)
#define SWD_NET_SYNC_CONTEXTS 4    /* concurrent sync requests served */
#define SWD_NET_CONTROL_CONTEXTS 2 /* concurrent control requests served */
#define SWD_NET_REQ_SOCKETS_MAX 64 /* cached REQ sockets (one per peer sync address) */
#define SWD_NET_MAX_SUBSCRIPTIONS 1024

/*
 * The error of a REPLY event (and of swd_net_request_sync) that timed out:
 * -ETIMEDOUT.  core/sw_error.h has no SW_ETIMEDOUT yet; sw_strerror() falls
 * back to errno's text for it.  Once sw_error.h lists SW_ETIMEDOUT as
 * -ETIMEDOUT the two are the same value.
 */
#define SWD_NET_ETIMEDOUT (-ETIMEDOUT)

typedef enum swd_net_kind {
    SWD_NET_SUB_MSG,     /* a message published by a peer */
    SWD_NET_SYNC_REQ,    /* a request on our sync REP: answer with swd_net_reply */
    SWD_NET_CONTROL_REQ, /* a request on the control socket: answer with swd_net_reply */
    SWD_NET_REPLY,       /* the reply to one of our swd_net_request calls (or its failure) */
} swd_net_kind;

typedef struct swd_net_event {
    swd_net_kind kind;
    uint64_t id;   /* SYNC_REQ / CONTROL_REQ: pass to swd_net_reply; REPLY: the request's id */
    int error;     /* REPLY: 0, or SW_ETIMEDOUT / SW_EIO (data NULL) */
    uint8_t *data; /* (len) */
    size_t len;
    struct swd_net_event *next;
} swd_net_event;

void swd_net_event_free(swd_net_event *ev); /* frees one event (not the list); accepts NULL */

typedef struct swd_net_opts {
    const char *pub_addr;      /* nng URL to listen on, e.g. tcp://0.0.0.0:7701; NULL: no PUB */
    const char *sync_addr;     /* nng URL to listen on; NULL: no sync service */
    const char *control_path;  /* file path of the IPC socket; NULL: none */
    uint32_t drop_in_permille; /* fault injection (tests): drop this share of SUB messages */
    uint64_t drop_seed;        /* its PRNG seed */
} swd_net_opts;

typedef struct swd_net_stats {
    uint64_t bytes_in, bytes_out; /* swarm sockets (PUB, SUB, sync REP, REQ), payload bytes */
    uint64_t msgs_in, msgs_out;
    uint64_t queue_dropped;   /* dropped because the queue was full */
    uint64_t injected_drops;  /* dropped by drop_in_permille */
    uint64_t requests_failed; /* outgoing requests that timed out or failed */
} swd_net_stats;

typedef struct swd_net swd_net;

/*
 * Opens the sockets and starts listening (a listen failure names the
 * address: "tcp://0.0.0.0:7701: address in use").  A control socket path
 * that exists and is not a live socket is removed first; one with a live
 * listener is SW_EEXIST.  notify is signalled whenever events are queued.
 */
int swd_net_open(const swd_net_opts *o, uv_async_t *notify, swd_net **out, sw_diag *diag);
/* Closes every socket and frees queued events.  Blocks briefly.  Accepts NULL. */
void swd_net_close(swd_net *n);

/* The URL actually bound (a port 0 in pub_addr/sync_addr is resolved). */
const char *swd_net_pub_url(const swd_net *n);
const char *swd_net_sync_url(const swd_net *n);

/* Takes every queued event, oldest first (NULL when none). */
swd_net_event *swd_net_drain(swd_net *n);

/* Publishes buf on PUB (never blocks; subscribers that are slow lose it). */
int swd_net_publish(swd_net *n, const uint8_t *buf, size_t len);

/* Dials the SUB socket to a peer's PUB address (idempotent per address). */
int swd_net_subscribe(swd_net *n, const char *pub_addr, sw_diag *diag);
/* Closes that dialer (no-op when not subscribed). */
void swd_net_unsubscribe(swd_net *n, const char *pub_addr);

/*
 * Answers request `id` (a SYNC_REQ or CONTROL_REQ event).  buf NULL: no
 * answer (the requester times out); the context is re-armed either way.
 * Every request event must be answered exactly once.
 */
int swd_net_reply(swd_net *n, uint64_t id, const uint8_t *buf, size_t len);

/*
 * Sends buf to the sync service at sync_addr and delivers the reply (or
 * the failure after timeout_ms) as a SWD_NET_REPLY event with *id.
 */
int swd_net_request(swd_net *n, const char *sync_addr, const uint8_t *buf, size_t len,
                    uint32_t timeout_ms, uint64_t *id);

/*
 * Blocking request on a private REQ socket (startup only, before the loop
 * runs: the join handshake).  *reply is malloc'd.
 */
int swd_net_request_sync(const char *sync_addr, const uint8_t *buf, size_t len, uint32_t timeout_ms,
                         uint8_t **reply, size_t *reply_len, sw_diag *diag);

void swd_net_get_stats(const swd_net *n, swd_net_stats *out);

#endif
