/*
 * swarm_fakes: what the unit tests of the swarm's parts (gossip, pipeline,
 * sync service, control, requests) stand them on instead of sockets and a
 * clock: a link whose ops record every message sent and read a fake clock,
 * identities that sign like a real peer, a temporary state directory and an
 * unstarted worker (its loop-side API works without its thread).
 * Header-only: each test is one executable.
 */
#ifndef SWARM_FAKES_H
#define SWARM_FAKES_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "link.h"
#include "wire.h"
#include "worker.h"

#define FAKE_MAX_SENT 256

typedef enum fake_kind { FAKE_PUBLISH, FAKE_REPLY, FAKE_REQUEST, FAKE_SUBSCRIBE } fake_kind;

typedef struct fake_sent {
    fake_kind kind;
    uint64_t id;       /* REPLY: the request answered; REQUEST: the id handed out */
    char addr[256];    /* REQUEST, SUBSCRIBE */
    uint8_t *buf;      /* a copy (NULL: an empty reply) */
    size_t len;
    uint32_t timeout_ms;
} fake_sent;

/* The sockets and the clock the link talks to. */
typedef struct fake_net {
    uint64_t now_ms;
    fake_sent sent[FAKE_MAX_SENT];
    size_t n_sent;
    uint64_t next_request_id;
    int fail_requests;  /* nonzero: request returns this */
    int fail_subscribe; /* nonzero: subscribe returns this */
    swd_net_stats stats;
} fake_net;

/* A signing identity: the node itself or a peer. */
typedef struct fake_id {
    uint8_t pk[SW_ID_BYTES];
    unsigned char sk[crypto_sign_SECRETKEYBYTES];
} fake_id;

static inline fake_sent *fake_record(fake_net *n, fake_kind k, const uint8_t *buf, size_t len)
{
    assert_true(n->n_sent < FAKE_MAX_SENT);
    fake_sent *s = &n->sent[n->n_sent++];
    memset(s, 0, sizeof *s);
    s->kind = k;
    if (buf) {
        s->buf = malloc(len ? len : 1);
        assert_non_null(s->buf);
        memcpy(s->buf, buf, len);
    }
    s->len = len;
    return s;
}

static inline int fake_publish(void *ctx, const uint8_t *buf, size_t len)
{
    fake_record(ctx, FAKE_PUBLISH, buf, len);
    return 0;
}

static inline int fake_reply(void *ctx, uint64_t id, const uint8_t *buf, size_t len)
{
    fake_record(ctx, FAKE_REPLY, buf, len)->id = id;
    return 0;
}

static inline int fake_request(void *ctx, const char *addr, const uint8_t *buf, size_t len,
                        uint32_t timeout_ms, uint64_t *id)
{
    fake_net *n = ctx;
    if (n->fail_requests) return n->fail_requests;
    fake_sent *s = fake_record(n, FAKE_REQUEST, buf, len);
    snprintf(s->addr, sizeof s->addr, "%s", addr);
    s->timeout_ms = timeout_ms;
    s->id = *id = ++n->next_request_id;
    return 0;
}

static inline int fake_subscribe(void *ctx, const char *pub_addr, sw_diag *d)
{
    fake_net *n = ctx;
    if (n->fail_subscribe) {
        snprintf(d->msg, sizeof d->msg, "fake subscribe failure");
        return n->fail_subscribe;
    }
    snprintf(fake_record(n, FAKE_SUBSCRIBE, NULL, 0)->addr, 256, "%s", pub_addr);
    return 0;
}

static inline void fake_stats(void *ctx, swd_net_stats *out)
{
    *out = ((fake_net *)ctx)->stats;
}

static inline uint64_t fake_now(void *ctx)
{
    return ((fake_net *)ctx)->now_ms;
}

static inline void fake_net_clear(fake_net *n)
{
    for (size_t i = 0; i < n->n_sent; i++)
        free(n->sent[i].buf);
    n->n_sent = 0;
}

static inline size_t fake_count(const fake_net *n, fake_kind k)
{
    size_t c = 0;
    for (size_t i = 0; i < n->n_sent; i++)
        c += n->sent[i].kind == k;
    return c;
}

/* The last message of kind k (NULL when none). */
static inline const fake_sent *fake_last(const fake_net *n, fake_kind k)
{
    for (size_t i = n->n_sent; i > 0; i--)
        if (n->sent[i - 1].kind == k) return &n->sent[i - 1];
    return NULL;
}

static inline void fake_id_make(fake_id *id)
{
    crypto_sign_keypair(id->pk, id->sk);
}

static const uint8_t fake_run_id[SW_ID_BYTES] = {0x5a, 0x11, 0x7e};

/* A link for self over the fake net (clock at 1000 s, so "0 ms ago" never
 * underflows). */
static inline void fake_link(swd_link *l, fake_net *n, const fake_id *self)
{
    memset(n, 0, sizeof *n);
    n->now_ms = 1000000;
    swd_link_init(l, NULL, self->pk, self->sk, fake_run_id);
    l->ops = (swd_link_ops){.publish = fake_publish,
                            .reply = fake_reply,
                            .request = fake_request,
                            .subscribe = fake_subscribe,
                            .stats = fake_stats,
                            .now_ms = fake_now};
    l->ctx = n;
}

/* m sealed by id for the fake run; *len set; free the result. */
static inline uint8_t *fake_seal(const fake_id *id, const swd_msg *m, size_t *len)
{
    uint8_t *buf = NULL;
    assert_int_equal(swd_wire_seal(m, m->context == SWD_CTX_JOIN ? NULL : fake_run_id, id->pk,
                                   id->sk, &buf, len),
                     0);
    return buf;
}

/* Opens what the node sent (a sealed message) into *m. */
static inline void fake_open(const fake_sent *s, swd_msg *m)
{
    swd_drop drop;
    assert_non_null(s->buf);
    assert_int_equal(swd_wire_open(s->buf, s->len, fake_run_id, m, &drop), 0);
}

/* A batch message from origin: n updates from first, all q, one scale. */
static inline void fake_batch(swd_msg *m, uint64_t first, size_t n, int8_t q, float scale)
{
    memset(m, 0, sizeof *m);
    m->type = SWD_MSG_BATCH;
    m->u.batch.first_step = first;
    m->u.batch.n = n;
    m->u.batch.scale = scale;
    for (size_t i = 0; i < n; i++)
        m->u.batch.q[i] = (int8_t)(q + (int8_t)i);
}

/* A temporary directory (removed by fake_rmdir). */
static inline void fake_tmpdir(char *out, size_t size)
{
    snprintf(out, size, "/tmp/swarm-part-XXXXXX");
    assert_non_null(mkdtemp(out));
}

static inline void fake_rmdir(const char *dir)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

/* A worker that never started: pushes land in its inbox, jobs in its queue. */
static inline void fake_worker(swd_worker *wk)
{
    memset(wk, 0, sizeof *wk);
    pthread_mutex_init(&wk->mu, NULL);
    pthread_cond_init(&wk->cv, NULL);
    wk->step_limit = UINT64_MAX;
}

static inline void fake_worker_fini(swd_worker *wk)
{
    free(wk->inbox);
    free(wk->own);
    pthread_mutex_destroy(&wk->mu);
    pthread_cond_destroy(&wk->cv);
}

/* The peer's side: what it delivers and what it announces. */

#include "members.h"

/* m as a peer's id would deliver it: sealed for the fake run and opened
 * again into *out (what the loop holds after swd_gossip_admit).  Returns
 * the envelope (free it), *len its size. */
static inline uint8_t *fake_receive(const fake_id *id, const swd_msg *m, swd_msg *out, size_t *len)
{
    uint8_t *env = fake_seal(id, m, len);
    swd_drop drop;
    assert_int_equal(swd_wire_open(env, *len, fake_run_id, out, &drop), 0);
    return env;
}

/* id in the table, alive, with an announce (seq) of vv[0..n) and sync_addr. */
static inline swd_peer *fake_announced(swd_members *t, const fake_id *id, const char *sync_addr,
                                       const swd_vv_entry *vv, size_t n, uint64_t seq,
                                       uint64_t now_ms)
{
    swd_announce a;
    memset(&a, 0, sizeof a);
    a.seq = seq;
    snprintf(a.pub_addr, sizeof a.pub_addr, "tcp://peer-pub:1");
    snprintf(a.sync_addr, sizeof a.sync_addr, "%s", sync_addr);
    a.state = SWD_STATE_TRAINING;
    a.vv = (swd_vv_entry *)vv;
    a.n_vv = n;
    swd_drop drop;
    assert_non_null(swd_members_seen(t, id->pk, now_ms));
    assert_true(swd_members_announce(t, id->pk, &a, now_ms, &drop));
    swd_peer *p = swd_members_find(t, id->pk);
    assert_non_null(p);
    assert_int_equal(p->state, SWD_PEER_ALIVE);
    return p;
}

#endif
