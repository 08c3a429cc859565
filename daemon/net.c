#include "net.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/pubsub0/pub.h>
#include <nng/protocol/pubsub0/sub.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/util/platform.h>

#include "wire.h"

/* Headroom over the envelope bound for nng's own framing and headers. */
#define NET_RECV_MAX ((size_t)SWD_WIRE_MAX_MSG + 4096)
#define NET_MAX_INFLIGHT 256 /* outgoing requests not yet reaped */
#define NET_RECONN_MIN_MS 100
#define NET_RECONN_MAX_MS 2000

/* Request ids of REP events: (socket << 56) | (context << 48) | generation. */
#define NET_ID_SYNC 1u
#define NET_ID_CONTROL 2u
#define NET_GEN_MASK ((UINT64_C(1) << 48) - 1)

typedef enum net_rep_state {
    NET_REP_IDLE, /* nothing pending (closed, or never armed) */
    NET_REP_RECV, /* waiting for a request */
    NET_REP_WAIT, /* a request event is out: waiting for swd_net_reply */
    NET_REP_SEND, /* the reply is being sent */
} net_rep_state;

typedef struct net_rep_ctx {
    swd_net *net;
    nng_ctx ctx;
    nng_aio *aio;
    unsigned sock; /* NET_ID_SYNC or NET_ID_CONTROL */
    unsigned index;
    uint64_t gen;        /* of the request event out (under net->mu) */
    net_rep_state state; /* under net->mu */
} net_rep_ctx;

typedef struct net_reqsock {
    char *url;
    nng_socket sock;
    unsigned inflight;  /* requests not yet reaped (loop thread) */
    uint64_t last_used; /* n->tick of the latest request (loop thread) */
} net_reqsock;

typedef struct net_request {
    swd_net *net;
    net_reqsock *rs;
    nng_ctx ctx;
    nng_aio *aio;
    uint64_t id;
    nng_time deadline;
    size_t len;
    bool receiving; /* callback thread only: the send is done */
    bool done;      /* under net->mu: its REPLY event is queued, reap it */
    struct net_request *next;
} net_request;

typedef struct net_dialer {
    char *url;
    nng_dialer d;
} net_dialer;

struct swd_net {
    uv_async_t *notify;
    atomic_bool closing;

    nng_socket pub, sub, sync, control;
    char *pub_url, *sync_url, *control_path;

    nng_aio *sub_aio;
    net_dialer *dialers; /* (SWD_NET_MAX_SUBSCRIPTIONS) */
    size_t n_dialers;

    net_rep_ctx sync_ctx[SWD_NET_SYNC_CONTEXTS];
    net_rep_ctx control_ctx[SWD_NET_CONTROL_CONTEXTS];

    /* loop thread only */
    net_reqsock *reqsocks[SWD_NET_REQ_SOCKETS_MAX];
    size_t n_reqsocks;
    net_request *requests;
    size_t n_requests;
    uint64_t next_req_id, tick;

    /* under mu */
    pthread_mutex_t mu;
    swd_net_event *head, *tail;
    size_t queued_bytes;
    swd_net_stats stats;
    uint32_t drop_permille;
    uint64_t rng;
};

/* ---- errors ---------------------------------------------------------------------------------- */

static int net_code(int rv)
{
    switch (rv) {
    case 0:
        return 0;
    case NNG_ENOMEM:
        return SW_ENOMEM;
    case NNG_EINVAL:
    case NNG_EADDRINVAL:
        return SW_EINVAL;
    case NNG_ETIMEDOUT:
        return SWD_NET_ETIMEDOUT;
    case NNG_ENOENT:
        return SW_ENOENT;
    case NNG_EPERM:
        return SW_EACCES;
    case NNG_EADDRINUSE:
        return SW_EEXIST;
    case NNG_EMSGSIZE:
        return SW_ETOOBIG;
    case NNG_ENOTSUP:
        return SW_EUNSUPPORTED;
    default:
        if (rv & NNG_ESYSERR) return sw_error_from_errno(rv & ~NNG_ESYSERR);
        return SW_EIO;
    }
}

/* "tcp://...: connection refused": nng's text, lower-cased to read like errno's. */
static int net_fail(sw_diag *diag, int rv, const char *what)
{
    char text[128];
    snprintf(text, sizeof text, "%s", nng_strerror(rv));
    text[0] = (char)tolower((unsigned char)text[0]);
    return sw_diag_set(diag, net_code(rv), "%s: %s", what, text);
}

static bool net_sock_open(nng_socket s)
{
    return nng_socket_id(s) > 0;
}

/* Every socket refuses messages past the envelope bound before they are buffered. */
static int net_sock_limit(nng_socket s)
{
    return nng_socket_set_size(s, NNG_OPT_RECVMAXSZ, NET_RECV_MAX);
}

/* ---- the event queue (any thread) ------------------------------------------------------------ */

void swd_net_event_free(swd_net_event *ev)
{
    free(ev); /* data lives in the same allocation */
}

/* One allocation for the event and its bytes; the message is the caller's still. */
static swd_net_event *net_event_new(swd_net_kind kind, uint64_t id, int error, nng_msg *m)
{
    size_t len = m != NULL ? nng_msg_len(m) : 0;
    swd_net_event *ev = malloc(sizeof *ev + len);
    if (ev == NULL) return NULL;
    memset(ev, 0, sizeof *ev);
    ev->kind = kind;
    ev->id = id;
    ev->error = error;
    ev->len = len;
    if (len > 0) {
        ev->data = (uint8_t *)(ev + 1);
        memcpy(ev->data, nng_msg_body(m), len);
    }
    return ev;
}

/* Under n->mu.  false: the queue is full (the caller drops ev and counts it). */
static bool net_push(swd_net *n, swd_net_event *ev)
{
    if (ev->len > SWD_NET_QUEUE_MAX_BYTES - n->queued_bytes) return false;
    n->queued_bytes += ev->len;
    ev->next = NULL;
    if (n->tail != NULL)
        n->tail->next = ev;
    else
        n->head = ev;
    n->tail = ev;
    return true;
}

static void net_notify(swd_net *n)
{
    if (n->notify != NULL && !atomic_load(&n->closing)) uv_async_send(n->notify);
}

/* ---- SUB ------------------------------------------------------------------------------------- */

/* xorshift64*: fault injection only needs a repeatable, cheap stream. */
static uint64_t net_rand(swd_net *n)
{
    uint64_t x = n->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    n->rng = x;
    return x * UINT64_C(2685821657736338717);
}

static void net_sub_arm(swd_net *n)
{
    if (!atomic_load(&n->closing)) nng_recv_aio(n->sub, n->sub_aio);
}

static void net_sub_cb(void *arg)
{
    swd_net *n = arg;
    int rv = nng_aio_result(n->sub_aio);
    if (rv != 0) {
        if (rv != NNG_ECLOSED) net_sub_arm(n);
        return;
    }
    nng_msg *m = nng_aio_get_msg(n->sub_aio);
    nng_aio_set_msg(n->sub_aio, NULL);
    size_t len = nng_msg_len(m);
    bool drop = false;
    pthread_mutex_lock(&n->mu);
    if (n->drop_permille > 0 && net_rand(n) % 1000 < n->drop_permille) {
        n->stats.injected_drops++;
        drop = true;
    } else {
        n->stats.bytes_in += len;
        n->stats.msgs_in++;
    }
    pthread_mutex_unlock(&n->mu);
    swd_net_event *ev = drop ? NULL : net_event_new(SWD_NET_SUB_MSG, 0, 0, m);
    nng_msg_free(m);
    if (!drop) {
        pthread_mutex_lock(&n->mu);
        bool queued = ev != NULL && net_push(n, ev);
        if (!queued) n->stats.queue_dropped++;
        pthread_mutex_unlock(&n->mu);
        if (queued)
            net_notify(n);
        else
            free(ev);
    }
    net_sub_arm(n);
}

/* ---- REP (sync and control) ------------------------------------------------------------------ */

static void net_rep_arm(net_rep_ctx *c)
{
    swd_net *n = c->net;
    pthread_mutex_lock(&n->mu);
    bool closing = atomic_load(&n->closing);
    c->state = closing ? NET_REP_IDLE : NET_REP_RECV;
    pthread_mutex_unlock(&n->mu);
    if (!closing) nng_ctx_recv(c->ctx, c->aio);
}

static void net_rep_cb(void *arg)
{
    net_rep_ctx *c = arg;
    swd_net *n = c->net;
    int rv = nng_aio_result(c->aio);
    pthread_mutex_lock(&n->mu);
    net_rep_state state = c->state;
    pthread_mutex_unlock(&n->mu);

    if (state == NET_REP_SEND) {
        if (rv != 0) nng_msg_free(nng_aio_get_msg(c->aio));
        nng_aio_set_msg(c->aio, NULL);
        net_rep_arm(c);
        return;
    }
    if (rv != 0) {
        if (rv == NNG_ECLOSED) {
            pthread_mutex_lock(&n->mu);
            c->state = NET_REP_IDLE;
            pthread_mutex_unlock(&n->mu);
        } else {
            net_rep_arm(c);
        }
        return;
    }
    nng_msg *m = nng_aio_get_msg(c->aio);
    nng_aio_set_msg(c->aio, NULL);
    swd_net_kind kind = c->sock == NET_ID_SYNC ? SWD_NET_SYNC_REQ : SWD_NET_CONTROL_REQ;
    swd_net_event *ev = net_event_new(kind, 0, 0, m);
    size_t len = nng_msg_len(m);
    nng_msg_free(m);

    pthread_mutex_lock(&n->mu);
    if (c->sock == NET_ID_SYNC) {
        n->stats.bytes_in += len;
        n->stats.msgs_in++;
    }
    bool queued = false;
    if (ev != NULL) {
        c->gen = (c->gen + 1) & NET_GEN_MASK;
        if (c->gen == 0) c->gen = 1;
        ev->id = ((uint64_t)c->sock << 56) | ((uint64_t)c->index << 48) | c->gen;
        queued = net_push(n, ev);
    }
    if (queued)
        c->state = NET_REP_WAIT;
    else
        n->stats.queue_dropped++;
    pthread_mutex_unlock(&n->mu);

    if (queued) {
        net_notify(n);
    } else {
        free(ev); /* nobody will answer it: take the next request (the requester times out) */
        net_rep_arm(c);
    }
}

static int net_rep_contexts(swd_net *n, nng_socket s, net_rep_ctx *ctxs, unsigned count,
                            unsigned sock)
{
    for (unsigned i = 0; i < count; i++) {
        net_rep_ctx *c = &ctxs[i];
        c->net = n;
        c->sock = sock;
        c->index = i;
        int rv = nng_ctx_open(&c->ctx, s);
        if (rv != 0) return rv;
        if ((rv = nng_aio_alloc(&c->aio, net_rep_cb, c)) != 0) return rv;
    }
    for (unsigned i = 0; i < count; i++)
        net_rep_arm(&ctxs[i]);
    return 0;
}

int swd_net_reply(swd_net *n, uint64_t id, const uint8_t *buf, size_t len)
{
    if (n == NULL) return SW_EINVAL;
    unsigned sock = (unsigned)(id >> 56);
    unsigned index = (unsigned)((id >> 48) & 0xffu);
    uint64_t gen = id & NET_GEN_MASK;
    net_rep_ctx *c = NULL;
    if (sock == NET_ID_SYNC && index < SWD_NET_SYNC_CONTEXTS && net_sock_open(n->sync))
        c = &n->sync_ctx[index];
    else if (sock == NET_ID_CONTROL && index < SWD_NET_CONTROL_CONTEXTS &&
             net_sock_open(n->control))
        c = &n->control_ctx[index];
    if (c == NULL || gen == 0) return SW_EINVAL;

    nng_msg *m = NULL;
    int rv = 0;
    if (buf != NULL && (rv = nng_msg_alloc(&m, len)) == 0 && len > 0)
        memcpy(nng_msg_body(m), buf, len);

    pthread_mutex_lock(&n->mu);
    if (c->state != NET_REP_WAIT || c->gen != gen) {
        pthread_mutex_unlock(&n->mu);
        nng_msg_free(m);
        return SW_EINVAL; /* stale id or answered already */
    }
    bool closing = atomic_load(&n->closing);
    if (m == NULL || closing) {
        c->state = closing ? NET_REP_IDLE : NET_REP_RECV;
        pthread_mutex_unlock(&n->mu);
        nng_msg_free(m);
        if (!closing) nng_ctx_recv(c->ctx, c->aio);
        return net_code(rv);
    }
    c->state = NET_REP_SEND;
    if (c->sock == NET_ID_SYNC) {
        n->stats.bytes_out += len;
        n->stats.msgs_out++;
    }
    pthread_mutex_unlock(&n->mu);
    nng_aio_set_msg(c->aio, m);
    nng_ctx_send(c->ctx, c->aio);
    return 0;
}

/* ---- REQ ------------------------------------------------------------------------------------- */

/* Any thread.  Queues the request's one REPLY event and marks it for reaping. */
static void net_req_finish(net_request *r, int rv, nng_msg *m)
{
    swd_net *n = r->net;
    int err = rv == 0 ? 0 : rv == NNG_ETIMEDOUT ? SWD_NET_ETIMEDOUT : SW_EIO;
    size_t len = m != NULL ? nng_msg_len(m) : 0;
    swd_net_event *ev = net_event_new(SWD_NET_REPLY, r->id, err, m);
    nng_msg_free(m);
    /* Every request gets exactly one event: a reply that does not fit (or cannot be copied)
     * becomes a failure without data, which the queue always takes. */
    swd_net_event *fallback = NULL;
    if (ev == NULL || err == 0) fallback = net_event_new(SWD_NET_REPLY, r->id, SW_EIO, NULL);

    pthread_mutex_lock(&n->mu);
    if (ev != NULL && !net_push(n, ev)) {
        free(ev);
        ev = NULL;
        n->stats.queue_dropped++;
    }
    if (ev == NULL) {
        err = SW_EIO;
        if (fallback != NULL) {
            net_push(n, fallback); /* len 0: always fits */
            fallback = NULL;
        }
    }
    if (err != 0) {
        n->stats.requests_failed++;
    } else {
        n->stats.bytes_in += len;
        n->stats.msgs_in++;
    }
    r->done = true;
    pthread_mutex_unlock(&n->mu);
    free(fallback);
    net_notify(n);
}

static void net_req_cb(void *arg)
{
    net_request *r = arg;
    swd_net *n = r->net;
    int rv = nng_aio_result(r->aio);
    if (!r->receiving) {
        if (rv != 0) {
            nng_msg_free(nng_aio_get_msg(r->aio)); /* a failed send leaves the message ours */
            nng_aio_set_msg(r->aio, NULL);
            net_req_finish(r, rv, NULL);
            return;
        }
        nng_aio_set_msg(r->aio, NULL);
        pthread_mutex_lock(&n->mu);
        n->stats.bytes_out += r->len;
        n->stats.msgs_out++;
        pthread_mutex_unlock(&n->mu);
        nng_time now = nng_clock();
        if (atomic_load(&n->closing)) {
            net_req_finish(r, NNG_ECLOSED, NULL);
            return;
        }
        if (now >= r->deadline) {
            net_req_finish(r, NNG_ETIMEDOUT, NULL);
            return;
        }
        r->receiving = true;
        nng_aio_set_timeout(r->aio, (nng_duration)(r->deadline - now));
        nng_ctx_recv(r->ctx, r->aio);
        return;
    }
    nng_msg *m = NULL;
    if (rv == 0) {
        m = nng_aio_get_msg(r->aio);
        nng_aio_set_msg(r->aio, NULL);
    }
    net_req_finish(r, rv, m);
}

static void net_request_free(net_request *r)
{
    if (r == NULL) return;
    if (r->aio != NULL) nng_aio_free(r->aio); /* stops it: waits for a running callback */
    nng_ctx_close(r->ctx);
    free(r);
}

/* Loop thread: frees the requests whose event is queued. */
static void net_reap(swd_net *n)
{
    net_request **pp = &n->requests;
    while (*pp != NULL) {
        net_request *r = *pp;
        pthread_mutex_lock(&n->mu);
        bool done = r->done;
        pthread_mutex_unlock(&n->mu);
        if (!done) {
            pp = &r->next;
            continue;
        }
        *pp = r->next;
        r->rs->inflight--;
        n->n_requests--;
        net_request_free(r);
    }
}

static void net_reqsock_free(net_reqsock *rs)
{
    if (rs == NULL) return;
    if (net_sock_open(rs->sock)) nng_close(rs->sock);
    free(rs->url);
    free(rs);
}

/* The cached REQ socket for url, opened (and dialing in the background) on first use.  When
 * the cache is full the least recently used idle socket goes (requests hold their socket). */
static int net_reqsock_get(swd_net *n, const char *url, net_reqsock **out)
{
    for (size_t i = 0; i < n->n_reqsocks; i++) {
        if (strcmp(n->reqsocks[i]->url, url) == 0) {
            *out = n->reqsocks[i];
            return 0;
        }
    }
    if (n->n_reqsocks == SWD_NET_REQ_SOCKETS_MAX) {
        size_t lru = SWD_NET_REQ_SOCKETS_MAX;
        for (size_t i = 0; i < n->n_reqsocks; i++)
            if (n->reqsocks[i]->inflight == 0 &&
                (lru == SWD_NET_REQ_SOCKETS_MAX ||
                 n->reqsocks[i]->last_used < n->reqsocks[lru]->last_used))
                lru = i;
        if (lru == SWD_NET_REQ_SOCKETS_MAX) return SW_ETOOBIG; /* every one is busy */
        net_reqsock_free(n->reqsocks[lru]);
        n->reqsocks[lru] = n->reqsocks[--n->n_reqsocks];
    }
    net_reqsock *rs = calloc(1, sizeof *rs);
    if (rs == NULL || (rs->url = strdup(url)) == NULL) {
        free(rs);
        return SW_ENOMEM;
    }
    int rv;
    if ((rv = nng_req0_open(&rs->sock)) != 0 || (rv = net_sock_limit(rs->sock)) != 0 ||
        (rv = nng_socket_set_ms(rs->sock, NNG_OPT_RECONNMINT, NET_RECONN_MIN_MS)) != 0 ||
        (rv = nng_socket_set_ms(rs->sock, NNG_OPT_RECONNMAXT, NET_RECONN_MAX_MS)) != 0 ||
        (rv = nng_dial(rs->sock, url, NULL, NNG_FLAG_NONBLOCK)) != 0) {
        net_reqsock_free(rs);
        return net_code(rv);
    }
    n->reqsocks[n->n_reqsocks++] = rs;
    *out = rs;
    return 0;
}

int swd_net_request(swd_net *n, const char *sync_addr, const uint8_t *buf, size_t len,
                    uint32_t timeout_ms, uint64_t *id)
{
    if (n == NULL || sync_addr == NULL || id == NULL || (buf == NULL && len > 0) || timeout_ms == 0)
        return SW_EINVAL;
    if (strnlen(sync_addr, SWD_WIRE_MAX_ADDR + 1) > SWD_WIRE_MAX_ADDR) return SW_ETOOBIG;
    net_reap(n);
    if (n->n_requests >= NET_MAX_INFLIGHT) return SW_ETOOBIG;

    net_reqsock *rs = NULL;
    int rc = net_reqsock_get(n, sync_addr, &rs);
    if (rc != 0) return rc;
    rs->last_used = ++n->tick;

    net_request *r = calloc(1, sizeof *r);
    if (r == NULL) return SW_ENOMEM;
    r->net = n;
    r->rs = rs;
    r->len = len;
    r->deadline = nng_clock() + timeout_ms;
    r->id = ++n->next_req_id;
    nng_msg *m = NULL;
    int rv;
    if ((rv = nng_ctx_open(&r->ctx, rs->sock)) != 0) {
        free(r);
        return net_code(rv);
    }
    if ((rv = nng_aio_alloc(&r->aio, net_req_cb, r)) != 0 || (rv = nng_msg_alloc(&m, len)) != 0) {
        net_request_free(r);
        return net_code(rv);
    }
    if (len > 0) memcpy(nng_msg_body(m), buf, len);
    r->next = n->requests;
    n->requests = r;
    n->n_requests++;
    rs->inflight++;
    nng_aio_set_timeout(r->aio, (nng_duration)timeout_ms);
    nng_aio_set_msg(r->aio, m);
    nng_ctx_send(r->ctx, r->aio); /* from here on, failures arrive as the REPLY event */
    *id = r->id;
    return 0;
}

int swd_net_request_sync(const char *sync_addr, const uint8_t *buf, size_t len, uint32_t timeout_ms,
                         uint8_t **reply, size_t *reply_len, sw_diag *diag)
{
    if (sync_addr == NULL || (buf == NULL && len > 0) || reply == NULL || reply_len == NULL ||
        timeout_ms == 0)
        return sw_diag_set(diag, SW_EINVAL, "swd_net_request_sync: invalid argument");
    nng_socket s = NNG_SOCKET_INITIALIZER;
    nng_msg *m = NULL;
    uint8_t *out = NULL;
    int rc = 0, rv;
    nng_time deadline = nng_clock() + timeout_ms;

    if ((rv = nng_req0_open(&s)) != 0 || (rv = net_sock_limit(s)) != 0 ||
        (rv = nng_socket_set_ms(s, NNG_OPT_RECONNMINT, 10)) != 0 ||
        (rv = nng_socket_set_ms(s, NNG_OPT_SENDTIMEO, (nng_duration)timeout_ms)) != 0) {
        rc = net_fail(diag, rv, sync_addr);
        goto fail;
    }
    if ((rv = nng_dial(s, sync_addr, NULL, 0)) != 0) {
        rc = net_fail(diag, rv, sync_addr);
        goto fail;
    }
    if ((rv = nng_msg_alloc(&m, len)) != 0) {
        rc = net_fail(diag, rv, sync_addr);
        goto fail;
    }
    if (len > 0) memcpy(nng_msg_body(m), buf, len);
    if ((rv = nng_sendmsg(s, m, 0)) != 0) goto io_fail;
    m = NULL; /* the socket's now */
    nng_time now = nng_clock();
    nng_duration left = now < deadline ? (nng_duration)(deadline - now) : 1;
    if ((rv = nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, left)) != 0 ||
        (rv = nng_recvmsg(s, &m, 0)) != 0)
        goto io_fail;
    size_t n = nng_msg_len(m);
    if ((out = malloc(n > 0 ? n : 1)) == NULL) {
        rc = sw_diag_set(diag, SW_ENOMEM, "%s: out of memory for a %zu-byte reply", sync_addr, n);
        goto fail;
    }
    if (n > 0) memcpy(out, nng_msg_body(m), n);
    nng_msg_free(m);
    nng_close(s);
    *reply = out;
    *reply_len = n;
    return 0;

io_fail:
    if (rv == NNG_ETIMEDOUT)
        rc = sw_diag_set(diag, SWD_NET_ETIMEDOUT, "%s: timed out after %u ms", sync_addr,
                         (unsigned)timeout_ms);
    else
        rc = net_fail(diag, rv, sync_addr);
fail:
    nng_msg_free(m);
    if (net_sock_open(s)) nng_close(s);
    free(out);
    return rc;
}

/* ---- PUB, subscriptions ---------------------------------------------------------------------- */

int swd_net_publish(swd_net *n, const uint8_t *buf, size_t len)
{
    if (n == NULL || (buf == NULL && len > 0) || !net_sock_open(n->pub)) return SW_EINVAL;
    nng_msg *m;
    int rv = nng_msg_alloc(&m, len);
    if (rv != 0) return net_code(rv);
    if (len > 0) memcpy(nng_msg_body(m), buf, len);
    if ((rv = nng_sendmsg(n->pub, m, NNG_FLAG_NONBLOCK)) != 0) {
        nng_msg_free(m);
        return net_code(rv);
    }
    pthread_mutex_lock(&n->mu);
    n->stats.bytes_out += len;
    n->stats.msgs_out++;
    pthread_mutex_unlock(&n->mu);
    return 0;
}

int swd_net_subscribe(swd_net *n, const char *pub_addr, sw_diag *diag)
{
    if (n == NULL || pub_addr == NULL)
        return sw_diag_set(diag, SW_EINVAL, "swd_net_subscribe: invalid argument");
    if (strnlen(pub_addr, SWD_WIRE_MAX_ADDR + 1) > SWD_WIRE_MAX_ADDR)
        return sw_diag_set(diag, SW_ETOOBIG, "subscribe: address longer than %d bytes",
                           SWD_WIRE_MAX_ADDR);
    for (size_t i = 0; i < n->n_dialers; i++)
        if (strcmp(n->dialers[i].url, pub_addr) == 0) return 0;
    if (n->n_dialers == SWD_NET_MAX_SUBSCRIPTIONS)
        return sw_diag_set(diag, SW_ETOOBIG, "%s: already subscribed to %d peers", pub_addr,
                           SWD_NET_MAX_SUBSCRIPTIONS);
    net_dialer *d = &n->dialers[n->n_dialers];
    if ((d->url = strdup(pub_addr)) == NULL)
        return sw_diag_set(diag, SW_ENOMEM, "%s: out of memory", pub_addr);
    int rv = nng_dialer_create(&d->d, n->sub, pub_addr);
    if (rv == 0 && (rv = nng_dialer_start(d->d, NNG_FLAG_NONBLOCK)) != 0) nng_dialer_close(d->d);
    if (rv != 0) {
        free(d->url);
        d->url = NULL;
        return net_fail(diag, rv, pub_addr);
    }
    n->n_dialers++;
    return 0;
}

void swd_net_unsubscribe(swd_net *n, const char *pub_addr)
{
    if (n == NULL || pub_addr == NULL) return;
    for (size_t i = 0; i < n->n_dialers; i++) {
        if (strcmp(n->dialers[i].url, pub_addr) != 0) continue;
        nng_dialer_close(n->dialers[i].d);
        free(n->dialers[i].url);
        n->dialers[i] = n->dialers[--n->n_dialers];
        return;
    }
}

/* ---- open, close ----------------------------------------------------------------------------- */

/* Listens on url; *bound gets the URL with a port 0 resolved (tcp) or url itself. */
static int net_listen(nng_socket s, const char *url, bool ipc, char **bound, sw_diag *diag)
{
    nng_listener l;
    int rv = nng_listener_create(&l, s, url);
    if (rv != 0) return net_fail(diag, rv, url);
    if (ipc && (rv = nng_listener_set_int(l, NNG_OPT_IPC_PERMISSIONS, 0600)) != 0) {
        nng_listener_close(l);
        return net_fail(diag, rv, url);
    }
    if ((rv = nng_listener_start(l, 0)) != 0) {
        nng_listener_close(l);
        return net_fail(diag, rv, url);
    }
    const char *colon = strrchr(url, ':');
    int port = 0;
    if (strncmp(url, "tcp", 3) == 0 && colon != NULL && strcmp(colon, ":0") == 0 &&
        nng_listener_get_int(l, NNG_OPT_TCP_BOUND_PORT, &port) == 0) {
        size_t head = (size_t)(colon - url);
        size_t cap = head + 16;
        if ((*bound = malloc(cap)) == NULL)
            return sw_diag_set(diag, SW_ENOMEM, "%s: out of memory", url);
        snprintf(*bound, cap, "%.*s:%d", (int)head, url, port);
    } else if ((*bound = strdup(url)) == NULL) {
        return sw_diag_set(diag, SW_ENOMEM, "%s: out of memory", url);
    }
    return 0;
}

/*
 * Whether a live listener answers at the unix socket path.  A probe that disconnects in the
 * middle of the SP handshake stops nng 1.5.2's IPC listener from accepting ever again
 * (nanomsg/nng#1518), so the probe finishes the handshake, as a REQ peer of our REP, before
 * it hangs up: the live daemon then sees an ordinary connection come and go.
 */
static int net_ipc_probe(const char *path, bool *live, sw_diag *diag)
{
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0)
        return sw_diag_set(diag, sw_error_from_errno(errno), "%s: socket: %s", path,
                           strerror(errno));
    /* non-blocking: a live listener with a full backlog must not hang us */
    int flags = fcntl(fd, F_GETFL);
    if (flags >= 0) fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    int r = connect(fd, (struct sockaddr *)&sa, sizeof sa);
    int err = errno;
    if (r != 0) {
        close(fd);
        if (err == EAGAIN || err == EINPROGRESS) {
            *live = true;
            return 0;
        }
        if (err == ECONNREFUSED || err == ENOENT) {
            *live = false;
            return 0;
        }
        return sw_diag_set(diag, sw_error_from_errno(err), "%s: connect: %s", path, strerror(err));
    }
    *live = true;
    /* the listener speaks first: "\0SP\0", its protocol, two zero bytes */
    uint8_t head[8];
    size_t got = 0;
    nng_time end = nng_clock() + 1000;
    while (got < sizeof head) {
        nng_time now = nng_clock();
        if (now >= end) break;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, (int)(end - now)) <= 0) break;
        ssize_t k = read(fd, head + got, sizeof head - got);
        if (k <= 0) break;
        got += (size_t)k;
    }
    if (got == sizeof head && memcmp(head, "\0SP\0", 4) == 0) {
        static const uint8_t req0[8] = {0, 'S', 'P', 0, 0x00, 0x30, 0, 0}; /* REQ v0 = 48 */
        ssize_t k = write(fd, req0, sizeof req0);
        (void)k; /* a listener that is already gone does not matter here */
    }
    close(fd);
    return 0;
}

/* A path left by a dead daemon is removed; one with a live listener is refused. */
static int net_control_path_check(const char *path, sw_diag *diag)
{
    struct sockaddr_un sa;
    if (strlen(path) >= sizeof sa.sun_path)
        return sw_diag_set(diag, SW_ETOOBIG,
                           "%s: control socket path longer than %zu bytes (a unix socket limit)",
                           path, sizeof sa.sun_path - 1);
    struct stat st;
    if (lstat(path, &st) != 0) {
        if (errno == ENOENT) return 0;
        return sw_diag_set(diag, sw_error_from_errno(errno), "%s: %s", path, strerror(errno));
    }
    if (S_ISDIR(st.st_mode))
        return sw_diag_set(diag, SW_EEXIST, "%s: is a directory, not a control socket", path);
    if (S_ISSOCK(st.st_mode)) {
        bool live = false;
        int rc = net_ipc_probe(path, &live, diag);
        if (rc != 0) return rc;
        if (live)
            return sw_diag_set(diag, SW_EEXIST,
                               "%s: another swarmd is listening on this control socket", path);
    }
    if (unlink(path) != 0 && errno != ENOENT)
        return sw_diag_set(diag, sw_error_from_errno(errno), "%s: removing a stale file: %s", path,
                           strerror(errno));
    return 0;
}

int swd_net_open(const swd_net_opts *o, uv_async_t *notify, swd_net **out, sw_diag *diag)
{
    if (o == NULL || out == NULL) return sw_diag_set(diag, SW_EINVAL, "swd_net_open: no options");
    if (o->drop_in_permille > 1000)
        return sw_diag_set(diag, SW_EINVAL, "drop_in_permille %u: more than 1000",
                           (unsigned)o->drop_in_permille);
    swd_net *n = calloc(1, sizeof *n);
    if (n == NULL) return sw_diag_set(diag, SW_ENOMEM, "swd_net_open: out of memory");
    int rc = 0, rv;
    char *url = NULL;
    pthread_mutex_init(&n->mu, NULL);
    atomic_init(&n->closing, false);
    n->notify = notify;
    n->drop_permille = o->drop_in_permille;
    n->rng = o->drop_seed ^ UINT64_C(0x9e3779b97f4a7c15);
    if (n->rng == 0) n->rng = 1;
    if ((n->dialers = calloc(SWD_NET_MAX_SUBSCRIPTIONS, sizeof *n->dialers)) == NULL) {
        rc = sw_diag_set(diag, SW_ENOMEM, "swd_net_open: out of memory");
        goto fail;
    }

    if ((rv = nng_sub0_open(&n->sub)) != 0 || (rv = net_sock_limit(n->sub)) != 0 ||
        (rv = nng_socket_set(n->sub, NNG_OPT_SUB_SUBSCRIBE, "", 0)) != 0 ||
        (rv = nng_socket_set_ms(n->sub, NNG_OPT_RECONNMINT, NET_RECONN_MIN_MS)) != 0 ||
        (rv = nng_socket_set_ms(n->sub, NNG_OPT_RECONNMAXT, NET_RECONN_MAX_MS)) != 0 ||
        (rv = nng_aio_alloc(&n->sub_aio, net_sub_cb, n)) != 0) {
        rc = net_fail(diag, rv, "SUB socket");
        goto fail;
    }
    net_sub_arm(n);

    if (o->pub_addr != NULL) {
        if ((rv = nng_pub0_open(&n->pub)) != 0 || (rv = net_sock_limit(n->pub)) != 0) {
            rc = net_fail(diag, rv, o->pub_addr);
            goto fail;
        }
        if ((rc = net_listen(n->pub, o->pub_addr, false, &n->pub_url, diag)) != 0) goto fail;
    }
    if (o->sync_addr != NULL) {
        if ((rv = nng_rep0_open(&n->sync)) != 0 || (rv = net_sock_limit(n->sync)) != 0) {
            rc = net_fail(diag, rv, o->sync_addr);
            goto fail;
        }
        if ((rc = net_listen(n->sync, o->sync_addr, false, &n->sync_url, diag)) != 0) goto fail;
        if ((rv = net_rep_contexts(n, n->sync, n->sync_ctx, SWD_NET_SYNC_CONTEXTS, NET_ID_SYNC)) !=
            0) {
            rc = net_fail(diag, rv, n->sync_url);
            goto fail;
        }
    }
    if (o->control_path != NULL) {
        if ((rc = net_control_path_check(o->control_path, diag)) != 0) goto fail;
        size_t cap = strlen(o->control_path) + sizeof "ipc://";
        if ((url = malloc(cap)) == NULL) {
            rc = sw_diag_set(diag, SW_ENOMEM, "%s: out of memory", o->control_path);
            goto fail;
        }
        snprintf(url, cap, "ipc://%s", o->control_path);
        if ((rv = nng_rep0_open(&n->control)) != 0 || (rv = net_sock_limit(n->control)) != 0) {
            rc = net_fail(diag, rv, o->control_path);
            goto fail;
        }
        char *bound = NULL;
        if ((rc = net_listen(n->control, url, true, &bound, diag)) != 0) goto fail;
        free(bound);
        /* from here on the file is ours to remove */
        if ((n->control_path = strdup(o->control_path)) == NULL) {
            rc = sw_diag_set(diag, SW_ENOMEM, "%s: out of memory", o->control_path);
            goto fail;
        }
        if ((rv = net_rep_contexts(n, n->control, n->control_ctx, SWD_NET_CONTROL_CONTEXTS,
                                   NET_ID_CONTROL)) != 0) {
            rc = net_fail(diag, rv, o->control_path);
            goto fail;
        }
    }
    free(url);
    *out = n;
    return 0;

fail:
    free(url);
    swd_net_close(n);
    return rc;
}

void swd_net_close(swd_net *n)
{
    if (n == NULL) return;
    atomic_store(&n->closing, true);
    /* Closing a socket aborts its aios (ECLOSED); the callbacks see `closing` and stop. */
    nng_socket socks[] = {n->pub, n->sub, n->sync, n->control};
    for (size_t i = 0; i < sizeof socks / sizeof socks[0]; i++)
        if (net_sock_open(socks[i])) nng_close(socks[i]);
    for (size_t i = 0; i < n->n_reqsocks; i++)
        if (net_sock_open(n->reqsocks[i]->sock)) nng_close(n->reqsocks[i]->sock);

    /* nng_aio_free stops each aio first, waiting for a callback in progress. */
    if (n->sub_aio != NULL) nng_aio_free(n->sub_aio);
    for (size_t i = 0; i < SWD_NET_SYNC_CONTEXTS; i++)
        if (n->sync_ctx[i].aio != NULL) nng_aio_free(n->sync_ctx[i].aio);
    for (size_t i = 0; i < SWD_NET_CONTROL_CONTEXTS; i++)
        if (n->control_ctx[i].aio != NULL) nng_aio_free(n->control_ctx[i].aio);
    while (n->requests != NULL) {
        net_request *r = n->requests;
        n->requests = r->next;
        net_request_free(r);
    }
    for (size_t i = 0; i < n->n_reqsocks; i++)
        net_reqsock_free(n->reqsocks[i]);
    if (n->dialers != NULL)
        for (size_t i = 0; i < n->n_dialers; i++)
            free(n->dialers[i].url);
    free(n->dialers);

    if (n->control_path != NULL) {
        /* nng removes it on close too; a file that is already gone is fine */
        struct stat st;
        if (lstat(n->control_path, &st) == 0 && S_ISSOCK(st.st_mode)) unlink(n->control_path);
        free(n->control_path);
    }
    swd_net_event *ev = n->head;
    while (ev != NULL) {
        swd_net_event *next = ev->next;
        free(ev);
        ev = next;
    }
    free(n->pub_url);
    free(n->sync_url);
    pthread_mutex_destroy(&n->mu);
    free(n);
}

/* ---- loop-thread accessors ------------------------------------------------------------------- */

const char *swd_net_pub_url(const swd_net *n)
{
    return n != NULL ? n->pub_url : NULL;
}

const char *swd_net_sync_url(const swd_net *n)
{
    return n != NULL ? n->sync_url : NULL;
}

swd_net_event *swd_net_drain(swd_net *n)
{
    if (n == NULL) return NULL;
    pthread_mutex_lock(&n->mu);
    swd_net_event *head = n->head;
    n->head = n->tail = NULL;
    n->queued_bytes = 0;
    pthread_mutex_unlock(&n->mu);
    net_reap(n);
    return head;
}

void swd_net_get_stats(const swd_net *n, swd_net_stats *out)
{
    if (out == NULL) return;
    memset(out, 0, sizeof *out);
    if (n == NULL) return;
    swd_net *m = (swd_net *)n; /* the mutex is not part of the observable state */
    pthread_mutex_lock(&m->mu);
    *out = m->stats;
    pthread_mutex_unlock(&m->mu);
}
