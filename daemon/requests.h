/*
 * requests: the node's outgoing sync requests in flight (anti-entropy
 * GetUpdates, a running node's Hello), at most SWD_REQUESTS_MAX at once.
 * A reply event is matched to its request by id and takes it off the table;
 * one that never comes is reclaimed by swd_requests_expire.
 *
 * Thread safety: the loop thread only.
 */
#ifndef SWD_REQUESTS_H
#define SWD_REQUESTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "link.h"

#define SWD_REQUESTS_MAX 64             /* outgoing requests in flight */
#define SWD_REQUESTS_AE_TIMEOUT_MS 5000 /* a GetUpdates */
#define SWD_REQUESTS_HELLO_TIMEOUT_MS 3000

typedef enum swd_req_kind { SWD_REQ_NONE, SWD_REQ_GET_UPDATES, SWD_REQ_HELLO } swd_req_kind;

typedef struct swd_req {
    swd_req_kind kind;
    uint64_t id;
    uint8_t origin[SW_ID_BYTES]; /* GET_UPDATES: whose updates */
    uint8_t peer[SW_ID_BYTES];   /* GET_UPDATES: asked */
    uint64_t ctl_id;             /* HELLO from `swarmctl join`: the control request to answer */
    bool has_ctl;
    uint64_t sent_ms;
} swd_req;

typedef struct swd_requests {
    swd_req slot[SWD_REQUESTS_MAX];
} swd_requests;

/*
 * Sends m to addr through the link (timeout by kind) and records it.
 * origin and peer may be NULL.  Returns the slot, NULL when none is free or
 * the request could not be sent.
 */
swd_req *swd_requests_send(swd_requests *t, swd_link *l, swd_req_kind kind, const char *addr,
                           const swd_msg *m, const uint8_t *origin, const uint8_t *peer);
/* The request a reply event answers, taken off the table; false: unknown id. */
bool swd_requests_take(swd_requests *t, uint64_t id, swd_req *out);
/* A GetUpdates for origin is in flight. */
bool swd_requests_pending_origin(const swd_requests *t, const uint8_t origin[SW_ID_BYTES]);
/* Reclaims requests older than twice the longest timeout plus a second
 * (net promises a reply event; this is the backstop); returns how many. */
size_t swd_requests_expire(swd_requests *t, uint64_t now_ms);
size_t swd_requests_in_flight(const swd_requests *t);

#endif
