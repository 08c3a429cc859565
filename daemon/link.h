/*
 * link: the node's signed voice on the sockets, shared by the parts of the
 * swarm (gossip, pipeline, sync service, control).  It seals messages with
 * the node's identity and run id, publishes, replies, sends requests,
 * subscribes, and counts every dropped message by reason.
 *
 * The sockets sit behind swd_link_ops: swd_link_init gives the ops that
 * drive daemon/net.c; a unit test gives its own (a fake clock, no sockets),
 * so each part can be tested alone.
 *
 * Thread safety: the loop thread only.
 */
#ifndef SWD_LINK_H
#define SWD_LINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "net.h"
#include "wire.h"

#define SWD_HEX (2 * SW_ID_BYTES + 1) /* an id as lower-case hex, NUL-terminated */

typedef struct swd_link_ops {
    int (*publish)(void *ctx, const uint8_t *buf, size_t len);
    int (*reply)(void *ctx, uint64_t id, const uint8_t *buf, size_t len);
    /* The reply comes back later as an SWD_NET_REPLY event with *id. */
    int (*request)(void *ctx, const char *addr, const uint8_t *buf, size_t len, uint32_t timeout_ms,
                   uint64_t *id);
    int (*subscribe)(void *ctx, const char *pub_addr, sw_diag *d);
    void (*stats)(void *ctx, swd_net_stats *out);
    uint64_t (*now_ms)(void *ctx); /* a monotonic clock */
} swd_link_ops;

typedef struct swd_link {
    swd_link_ops ops;
    void *ctx;
    uint8_t self[SW_ID_BYTES];
    const unsigned char *sk; /* borrowed (sodium memory of the state's identity) */
    uint8_t run_id[SW_ID_BYTES];
    uint64_t last_pub_ms;             /* when anything was last published */
    uint64_t dropped[SWD_DROP_COUNT]; /* messages dropped, by reason */
} swd_link;

/* The link over net (borrowed). */
void swd_link_init(swd_link *l, swd_net *net, const uint8_t self[SW_ID_BYTES],
                   const unsigned char *sk, const uint8_t run_id[SW_ID_BYTES]);

uint64_t swd_link_now_ms(const swd_link *l);
/* The monotonic clock the daemon runs on, in ms and in s. */
uint64_t swd_clock_ms(void);
double swd_clock_s(void);
void swd_hex(const uint8_t id[SW_ID_BYTES], char out[SWD_HEX]);

/* Counts a dropped message (sender may be NULL: unknown); logs at debug. */
void swd_link_drop(swd_link *l, swd_drop d, const uint8_t *sender);

/* Seals m with the node's key and run id; *buf is malloc'd. */
int swd_link_seal(const swd_link *l, const swd_msg *m, uint8_t **buf, size_t *len);
/* Publishes a sealed message / seals and publishes m. */
int swd_link_publish_sealed(swd_link *l, const uint8_t *buf, size_t len);
int swd_link_publish(swd_link *l, const swd_msg *m);
/* Answers sync request id with a sealed message (NULL: an empty reply). */
void swd_link_reply_sealed(swd_link *l, uint64_t id, const uint8_t *buf, size_t len);
/* Answers sync request id with m sealed (an empty reply when sealing fails). */
void swd_link_reply(swd_link *l, uint64_t id, const swd_msg *m);
void swd_link_reply_error(swd_link *l, uint64_t id, swd_context ctx, swd_error_code code,
                          const char *text);
/* Answers control request id with reply (taken; NULL: an empty reply). */
void swd_link_reply_json(swd_link *l, uint64_t id, json_t *reply);
/* Sends m sealed to addr; *id names the reply event. */
int swd_link_request(swd_link *l, const char *addr, const swd_msg *m, uint32_t timeout_ms,
                     uint64_t *id);
int swd_link_subscribe(swd_link *l, const char *pub_addr, sw_diag *d);
void swd_link_stats(const swd_link *l, swd_net_stats *out);

#endif
