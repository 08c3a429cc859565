/*
 * net: real nng sockets on loopback TCP (port 0) and IPC in a temp dir, driven by a real
 * libuv loop whose async handle drains the events.  Every wait is bounded by a deadline.
 * Addresses nobody may answer are ports the fixture holds bound but never listens on
 * (fx_dead_url): refused for the whole test, and nobody else can take them meanwhile.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <pthread.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>
#include <nng/nng.h>
#include <uv.h>

#include "net.h"
#include "wire.h"

#define FX_MAX_NETS 4
#define FX_MAX_HELD 64
#define FX_MAX_DEAD (SWD_NET_REQ_SOCKETS_MAX + 8)

typedef struct fx {
    uv_loop_t loop;
    uv_async_t async;
    uv_timer_t tick;
    swd_net *nets[FX_MAX_NETS];
    swd_net_event *events, **tailp; /* every drained event, oldest first */
    bool auto_reply;                /* answer each request with "re:" + its bytes */
    bool paused;                    /* leave the events queued in the nets */
    uint64_t held[FX_MAX_HELD];     /* request ids left unanswered (auto_reply off) */
    swd_net *held_net[FX_MAX_HELD];
    size_t n_held;
    int dead_fd[FX_MAX_DEAD]; /* bound, never listening: see fx_dead_url */
    size_t n_dead;
    char dir[64];
} fx;

static double fx_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void fx_on_async(uv_async_t *h)
{
    fx *f = h->data;
    if (f->paused) return;
    for (size_t i = 0; i < FX_MAX_NETS; i++) {
        if (f->nets[i] == NULL) continue;
        swd_net_event *ev = swd_net_drain(f->nets[i]);
        while (ev != NULL) {
            swd_net_event *next = ev->next;
            if (ev->kind == SWD_NET_SYNC_REQ || ev->kind == SWD_NET_CONTROL_REQ) {
                if (f->auto_reply) {
                    uint8_t buf[256];
                    size_t len = ev->len < sizeof buf - 3 ? ev->len : sizeof buf - 3;
                    memcpy(buf, "re:", 3);
                    if (len > 0) memcpy(buf + 3, ev->data, len);
                    assert_int_equal(swd_net_reply(f->nets[i], ev->id, buf, len + 3), 0);
                } else {
                    assert_true(f->n_held < FX_MAX_HELD);
                    f->held[f->n_held] = ev->id;
                    f->held_net[f->n_held++] = f->nets[i];
                }
            }
            ev->next = NULL;
            *f->tailp = ev;
            f->tailp = &ev->next;
            ev = next;
        }
    }
}

static void fx_on_tick(uv_timer_t *t)
{
    (void)t; /* wakes uv_run so the pump checks its predicate and deadline */
}

static int fx_setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    assert_int_equal(uv_async_init(&f->loop, &f->async, fx_on_async), 0);
    f->async.data = f;
    assert_int_equal(uv_timer_init(&f->loop, &f->tick), 0);
    assert_int_equal(uv_timer_start(&f->tick, fx_on_tick, 5, 5), 0);
    f->tailp = &f->events;
    f->auto_reply = true;
    snprintf(f->dir, sizeof f->dir, "/tmp/sw_test_net_XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    *state = f;
    return 0;
}

static void fx_clear(fx *f)
{
    while (f->events != NULL) {
        swd_net_event *next = f->events->next;
        swd_net_event_free(f->events);
        f->events = next;
    }
    f->tailp = &f->events;
}

static int fx_teardown(void **state)
{
    fx *f = *state;
    for (size_t i = 0; i < FX_MAX_NETS; i++)
        swd_net_close(f->nets[i]);
    fx_clear(f);
    uv_close((uv_handle_t *)&f->async, NULL);
    uv_close((uv_handle_t *)&f->tick, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    for (size_t i = 0; i < f->n_dead; i++)
        close(f->dead_fd[i]);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

static swd_net *fx_open(fx *f, const swd_net_opts *o)
{
    sw_diag d = {{0}};
    swd_net *n = NULL;
    int rc = swd_net_open(o, &f->async, &n, &d);
    if (rc != 0) fprintf(stderr, "swd_net_open: %s\n", d.msg);
    assert_int_equal(rc, 0);
    for (size_t i = 0; i < FX_MAX_NETS; i++) {
        if (f->nets[i] == NULL) {
            f->nets[i] = n;
            return n;
        }
    }
    fail_msg("too many nets");
    return NULL;
}

static void fx_close(fx *f, swd_net *n)
{
    for (size_t i = 0; i < FX_MAX_NETS; i++)
        if (f->nets[i] == n) f->nets[i] = NULL;
    swd_net_close(n);
}

static size_t fx_count(const fx *f, swd_net_kind kind)
{
    size_t c = 0;
    for (const swd_net_event *ev = f->events; ev != NULL; ev = ev->next)
        c += ev->kind == kind;
    return c;
}

static const swd_net_event *fx_reply(const fx *f, uint64_t id)
{
    for (const swd_net_event *ev = f->events; ev != NULL; ev = ev->next)
        if (ev->kind == SWD_NET_REPLY && ev->id == id) return ev;
    return NULL;
}

typedef bool (*fx_pred)(fx *f, void *arg);
typedef void (*fx_tick)(fx *f, void *arg);

/* Runs the loop until pred holds or ms pass; tick runs every `every` seconds. */
static bool fx_pump(fx *f, double ms, fx_pred pred, fx_tick tick, void *arg, double every)
{
    double end = fx_now() + ms / 1000.0, next_tick = 0;
    for (;;) {
        if (pred != NULL && pred(f, arg)) return true;
        double now = fx_now();
        if (now >= end) return pred == NULL;
        if (tick != NULL && now >= next_tick) {
            tick(f, arg);
            next_tick = now + every;
        }
        uv_run(&f->loop, UV_RUN_ONCE);
    }
}

/* ---- PUB / SUB ------------------------------------------------------------------------------- */

typedef struct pubjob {
    swd_net *net;
    const uint8_t *buf;
    size_t len;
    int published;
    int max;
} pubjob;

static void pub_tick(fx *f, void *arg)
{
    (void)f;
    pubjob *j = arg;
    if (j->published >= j->max) return;
    assert_int_equal(swd_net_publish(j->net, j->buf, j->len), 0);
    j->published++;
}

typedef struct sizewant {
    pubjob job;
    size_t len; /* a SUB_MSG of exactly this length */
} sizewant;

static bool got_len(fx *f, void *arg)
{
    sizewant *w = arg;
    for (const swd_net_event *ev = f->events; ev != NULL; ev = ev->next)
        if (ev->kind == SWD_NET_SUB_MSG && ev->len == w->len) return true;
    return false;
}

static void sizewant_tick(fx *f, void *arg)
{
    pub_tick(f, &((sizewant *)arg)->job);
}

static bool has_sub_msg(fx *f, void *arg)
{
    (void)arg;
    return fx_count(f, SWD_NET_SUB_MSG) > 0;
}

static void test_pub_sub_delivery_oversize_unsubscribe(void **state)
{
    fx *f = *state;
    swd_net *a = fx_open(f, &(swd_net_opts){.pub_addr = "tcp://127.0.0.1:0"});
    swd_net *b = fx_open(f, &(swd_net_opts){0});
    const char *url = swd_net_pub_url(a);
    assert_non_null(url);
    assert_int_equal(strncmp(url, "tcp://127.0.0.1:", 16), 0);
    assert_true(atoi(url + 16) > 0); /* port 0 resolved */
    assert_null(swd_net_sync_url(a));
    assert_int_equal(swd_net_publish(b, (const uint8_t *)"x", 1), SW_EINVAL); /* no PUB */

    sw_diag d;
    assert_int_equal(swd_net_subscribe(b, url, &d), 0);
    assert_int_equal(swd_net_subscribe(b, url, &d), 0); /* idempotent */
    assert_int_not_equal(swd_net_subscribe(b, "bogus://x", &d), 0);
    assert_non_null(strstr(d.msg, "bogus://x"));

    /* SUB connects asynchronously: publish until one arrives */
    sizewant w = {.job = {a, (const uint8_t *)"hello", 5, 0, 300}, .len = 5};
    assert_true(fx_pump(f, 5000, got_len, sizewant_tick, &w, 0.01));
    assert_memory_equal(f->events->data, "hello", 5);
    swd_net_stats sa, sb;
    swd_net_get_stats(a, &sa);
    swd_net_get_stats(b, &sb);
    assert_int_equal(sa.msgs_out, (uint64_t)w.job.published);
    assert_int_equal(sa.bytes_out, 5u * (uint64_t)w.job.published);
    assert_true(sb.msgs_in >= 1 && sb.msgs_in <= sa.msgs_out);
    assert_int_equal(sb.bytes_in, 5u * sb.msgs_in);
    fx_clear(f);

    /* a full-size envelope (larger than nng's 1 MiB default limit) gets through */
    size_t big = SWD_WIRE_MAX_MSG, over = (size_t)SWD_WIRE_MAX_MSG + 4096 + 1;
    uint8_t *buf = malloc(over);
    assert_non_null(buf);
    memset(buf, 0xab, over);
    sizewant wb = {.job = {a, buf, big, 0, 40}, .len = big};
    assert_true(fx_pump(f, 5000, got_len, sizewant_tick, &wb, 0.05));

    /* past the limit it is refused (nng drops the connection; the dialer reconnects) */
    fx_clear(f);
    assert_int_equal(swd_net_publish(a, buf, over), 0);
    sizewant ws = {.job = {a, (const uint8_t *)"after", 5, 0, 300}, .len = 5};
    assert_true(fx_pump(f, 5000, got_len, sizewant_tick, &ws, 0.02));
    fx_pump(f, 100, NULL, NULL, NULL, 0);
    for (const swd_net_event *ev = f->events; ev != NULL; ev = ev->next)
        assert_true(ev->len <= (size_t)SWD_WIRE_MAX_MSG + 4096);
    free(buf);

    /* unsubscribe: let in-flight messages land, then nothing more arrives */
    swd_net_unsubscribe(b, "tcp://127.0.0.1:1"); /* not subscribed: no-op */
    swd_net_unsubscribe(b, url);
    fx_pump(f, 150, NULL, NULL, NULL, 0);
    fx_clear(f);
    pubjob j = {a, (const uint8_t *)"late", 4, 0, 30};
    fx_pump(f, 400, NULL, pub_tick, &j, 0.01);
    assert_true(j.published >= 10);
    assert_int_equal(fx_count(f, SWD_NET_SUB_MSG), 0);

    /* and subscribing again restores delivery */
    assert_int_equal(swd_net_subscribe(b, url, &d), 0);
    pubjob j2 = {a, (const uint8_t *)"again", 5, 0, 300};
    assert_true(fx_pump(f, 5000, has_sub_msg, pub_tick, &j2, 0.01));
}

typedef struct floodjob {
    pubjob job;
    swd_net *watch;
} floodjob;

static bool queue_overflowed(fx *f, void *arg)
{
    (void)f;
    swd_net_stats s;
    swd_net_get_stats(((floodjob *)arg)->watch, &s);
    return s.queue_dropped > 0;
}

static void flood_tick(fx *f, void *arg)
{
    pub_tick(f, &((floodjob *)arg)->job);
}

static void test_queue_bound(void **state)
{
    fx *f = *state;
    swd_net *a = fx_open(f, &(swd_net_opts){.pub_addr = "tcp://127.0.0.1:0"});
    swd_net *b = fx_open(f, &(swd_net_opts){0});
    sw_diag d;
    assert_int_equal(swd_net_subscribe(b, swd_net_pub_url(a), &d), 0);
    pubjob j = {a, (const uint8_t *)"hi", 2, 0, 300};
    assert_true(fx_pump(f, 5000, has_sub_msg, pub_tick, &j, 0.01));

    /* nobody drains: full-size messages pile up until the queue refuses one */
    f->paused = true;
    size_t drained_before = fx_count(f, SWD_NET_SUB_MSG);
    size_t big = SWD_WIRE_MAX_MSG;
    uint8_t *buf = malloc(big);
    assert_non_null(buf);
    memset(buf, 0x5a, big);
    floodjob fl = {{a, buf, big, 0, 200}, b};
    assert_true(fx_pump(f, 8000, queue_overflowed, flood_tick, &fl, 0.01));
    free(buf);
    f->paused = false;
    swd_net_stats s0, s1;
    swd_net_get_stats(b, &s0);
    swd_net_event *ev = swd_net_drain(b);
    swd_net_get_stats(b, &s1); /* more may land while we count: compare against both */
    size_t n = 0, bytes = 0;
    bool only_sub = true;
    while (ev != NULL) {
        swd_net_event *next = ev->next;
        only_sub &= ev->kind == SWD_NET_SUB_MSG;
        n++;
        bytes += ev->len;
        swd_net_event_free(ev);
        ev = next;
    }
    /* A message counted in s0 may still be on its way into the queue (the
     * callback counts it, then queues it): collect those stragglers too. */
    size_t late = 0;
    for (int i = 0; i < 20; i++) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
        for (ev = swd_net_drain(b); ev != NULL;) {
            swd_net_event *next = ev->next;
            late++;
            swd_net_event_free(ev);
            ev = next;
        }
    }
    swd_net_stats s2;
    swd_net_get_stats(b, &s2);
    assert_true(only_sub);
    assert_true(bytes <= SWD_NET_QUEUE_MAX_BYTES);
    assert_true(bytes + big > SWD_NET_QUEUE_MAX_BYTES); /* it was full, give or take one */
    /* every message that arrived was either queued or counted as dropped */
    assert_true(drained_before + n + late + s2.queue_dropped >= s0.msgs_in);
    assert_true(drained_before + n + s0.queue_dropped <= s1.msgs_in);
    assert_true(s1.queue_dropped >= 1);
}

static void test_fault_injection(void **state)
{
    fx *f = *state;
    sw_diag d;
    swd_net *bad = NULL;
    assert_int_equal(swd_net_open(&(swd_net_opts){.drop_in_permille = 1001}, NULL, &bad, &d),
                     SW_EINVAL);
    assert_null(bad);

    swd_net *a = fx_open(f, &(swd_net_opts){.pub_addr = "tcp://127.0.0.1:0"});
    swd_net *all = fx_open(f, &(swd_net_opts){.drop_in_permille = 1000, .drop_seed = 42});
    swd_net *half = fx_open(f, &(swd_net_opts){.drop_in_permille = 500, .drop_seed = 7});
    assert_int_equal(swd_net_subscribe(all, swd_net_pub_url(a), &d), 0);
    assert_int_equal(swd_net_subscribe(half, swd_net_pub_url(a), &d), 0);

    /* publish until `all` has seen (and dropped) 200 and `half` has seen 200 */
    pubjob j = {a, (const uint8_t *)"drop me", 7, 0, 5000};
    double end = fx_now() + 5.0;
    swd_net_stats sall, shalf;
    for (;;) {
        swd_net_get_stats(all, &sall);
        swd_net_get_stats(half, &shalf);
        if ((sall.injected_drops >= 200 && shalf.injected_drops + shalf.msgs_in >= 200) ||
            fx_now() > end)
            break;
        for (int k = 0; k < 10; k++)
            pub_tick(f, &j);
        fx_pump(f, 5, NULL, NULL, NULL, 0);
    }
    fx_pump(f, 50, NULL, NULL, NULL, 0);
    swd_net_get_stats(all, &sall);
    swd_net_get_stats(half, &shalf);
    assert_true(sall.injected_drops >= 200);
    assert_int_equal(sall.msgs_in, 0);
    assert_int_equal(sall.bytes_in, 0);
    /* every SUB_MSG came to `half` (events are not tagged by net: count its stats) */
    assert_int_equal(fx_count(f, SWD_NET_SUB_MSG), shalf.msgs_in);
    uint64_t seen = shalf.injected_drops + shalf.msgs_in;
    assert_true(seen >= 200);
    /* binomial(seen, 1/2): 0.3..0.7 is more than 5 standard deviations either side */
    assert_true(shalf.injected_drops * 10 >= seen * 3 && shalf.injected_drops * 10 <= seen * 7);
}

/* ---- REQ / REP ------------------------------------------------------------------------------- */

static bool has_reply(fx *f, void *arg)
{
    return fx_reply(f, *(uint64_t *)arg) != NULL;
}

typedef struct idset {
    uint64_t *ids;
    size_t n;
} idset;

static bool has_all_replies(fx *f, void *arg)
{
    idset *s = arg;
    for (size_t i = 0; i < s->n; i++)
        if (fx_reply(f, s->ids[i]) == NULL) return false;
    return true;
}

static bool has_held(fx *f, void *arg)
{
    return f->n_held >= *(size_t *)arg;
}

static void test_request_reply(void **state)
{
    fx *f = *state;
    swd_net *a = fx_open(f, &(swd_net_opts){.sync_addr = "tcp://127.0.0.1:0"});
    swd_net *b = fx_open(f, &(swd_net_opts){0});
    const char *url = swd_net_sync_url(a);
    assert_int_equal(strncmp(url, "tcp://127.0.0.1:", 16), 0);
    assert_true(atoi(url + 16) > 0);

    /* more requests at once than the server has contexts; each reply matches its request */
    enum { N = 3 * SWD_NET_SYNC_CONTEXTS };
    uint64_t ids[N];
    char msg[N][16];
    for (int i = 0; i < N; i++) {
        snprintf(msg[i], sizeof msg[i], "ping %d", i);
        assert_int_equal(
            swd_net_request(b, url, (const uint8_t *)msg[i], strlen(msg[i]), 3000, &ids[i]), 0);
        for (int k = 0; k < i; k++)
            assert_true(ids[k] != ids[i]);
    }
    idset s = {ids, N};
    assert_true(fx_pump(f, 5000, has_all_replies, NULL, &s, 0));
    for (int i = 0; i < N; i++) {
        const swd_net_event *r = fx_reply(f, ids[i]);
        char want[32];
        snprintf(want, sizeof want, "re:%s", msg[i]);
        assert_int_equal(r->error, 0);
        assert_int_equal(r->len, strlen(want));
        assert_memory_equal(r->data, want, r->len);
    }
    assert_int_equal(fx_count(f, SWD_NET_SYNC_REQ), N);
    swd_net_stats sa, sb;
    swd_net_get_stats(a, &sa);
    swd_net_get_stats(b, &sb);
    assert_int_equal(sa.msgs_in, N);
    assert_int_equal(sa.msgs_out, N);
    assert_int_equal(sb.msgs_out, N);
    assert_int_equal(sb.msgs_in, N);
    assert_int_equal(sb.bytes_out, sa.bytes_in);
    assert_int_equal(sb.bytes_in, sa.bytes_out);
    assert_int_equal(sb.bytes_in, sb.bytes_out + 3u * N);
    assert_int_equal(sb.requests_failed, 0);
    fx_clear(f);

    /* a reply is given once: a second one, or a made-up id, is refused */
    f->auto_reply = false;
    uint64_t id;
    assert_int_equal(swd_net_request(b, url, (const uint8_t *)"q", 1, 3000, &id), 0);
    size_t want_held = 1;
    assert_true(fx_pump(f, 3000, has_held, NULL, &want_held, 0));
    uint64_t rid = f->held[0];
    assert_int_equal(swd_net_reply(a, rid + 1, (const uint8_t *)"no", 2), SW_EINVAL);
    assert_int_equal(swd_net_reply(a, 0, (const uint8_t *)"no", 2), SW_EINVAL);
    assert_int_equal(swd_net_reply(a, rid | (UINT64_C(3) << 56), (const uint8_t *)"n", 1),
                     SW_EINVAL);
    assert_int_equal(swd_net_reply(b, rid, (const uint8_t *)"no", 2), SW_EINVAL); /* no REP */
    assert_int_equal(swd_net_reply(a, rid, (const uint8_t *)"yes", 3), 0);
    assert_int_equal(swd_net_reply(a, rid, (const uint8_t *)"again", 5), SW_EINVAL);
    assert_true(fx_pump(f, 3000, has_reply, NULL, &id, 0));
    assert_memory_equal(fx_reply(f, id)->data, "yes", 3);

    /* buf NULL: no answer, the requester times out, and the context serves again */
    assert_int_equal(swd_net_request(b, url, (const uint8_t *)"q2", 2, 300, &id), 0);
    want_held = 2;
    assert_true(fx_pump(f, 3000, has_held, NULL, &want_held, 0));
    assert_int_equal(swd_net_reply(a, f->held[1], NULL, 0), 0);
    assert_int_equal(swd_net_reply(a, f->held[1], NULL, 0), SW_EINVAL);
    assert_true(fx_pump(f, 3000, has_reply, NULL, &id, 0));
    assert_int_equal(fx_reply(f, id)->error, SWD_NET_ETIMEDOUT);
    assert_null(fx_reply(f, id)->data);
    f->auto_reply = true;
    for (int i = 0; i < SWD_NET_SYNC_CONTEXTS + 1; i++) {
        assert_int_equal(swd_net_request(b, url, (const uint8_t *)"q3", 2, 3000, &id), 0);
        assert_true(fx_pump(f, 3000, has_reply, NULL, &id, 0));
        assert_int_equal(fx_reply(f, id)->error, 0);
    }
    swd_net_get_stats(b, &sb);
    assert_int_equal(sb.requests_failed, 1);
}

/* A loopback URL that refuses every connection until the fixture's teardown: its port
 * (the kernel's pick) stays bound to a socket that never listens, so a connection gets a
 * reset and nobody else (another test running beside this one) can bind it meanwhile.
 * A port found free and let go again could be anybody's by the time it is dialled. */
static void fx_dead_url(fx *f, char *url, size_t size)
{
    assert_true(f->n_dead < FX_MAX_DEAD);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = 0;
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    socklen_t len = sizeof sa;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    assert_true(ntohs(sa.sin_port) > 0);
    f->dead_fd[f->n_dead++] = fd;
    snprintf(url, size, "tcp://127.0.0.1:%u", (unsigned)ntohs(sa.sin_port));
}

static char *dead_url(fx *f)
{
    char url[64];
    fx_dead_url(f, url, sizeof url);
    return strdup(url);
}

static void test_request_to_nobody_times_out(void **state)
{
    fx *f = *state;
    char *url = dead_url(f);
    swd_net *b = fx_open(f, &(swd_net_opts){0});
    uint64_t id;
    double t0 = fx_now();
    assert_int_equal(swd_net_request(b, url, (const uint8_t *)"hi", 2, 300, &id), 0);
    assert_true(fx_pump(f, 3000, has_reply, NULL, &id, 0));
    double took = fx_now() - t0;
    const swd_net_event *r = fx_reply(f, id);
    assert_int_equal(r->error, SWD_NET_ETIMEDOUT);
    assert_null(r->data);
    assert_int_equal(r->len, 0);
    assert_true(took >= 0.25 && took < 2.0);
    swd_net_stats s;
    swd_net_get_stats(b, &s);
    assert_int_equal(s.requests_failed, 1);
    assert_int_equal(s.msgs_in, 0);

    /* bad arguments are refused at once, with no event */
    assert_int_equal(swd_net_request(b, url, NULL, 3, 300, &id), SW_EINVAL);
    assert_int_equal(swd_net_request(b, url, (const uint8_t *)"x", 1, 0, &id), SW_EINVAL);
    assert_int_not_equal(swd_net_request(b, "nonsense", (const uint8_t *)"x", 1, 300, &id), 0);

    /* the blocking form says who refused */
    sw_diag d = {{0}};
    uint8_t *reply = NULL;
    size_t reply_len = 0;
    int rc = swd_net_request_sync(url, (const uint8_t *)"hi", 2, 500, &reply, &reply_len, &d);
    assert_true(rc < 0);
    assert_null(reply);
    assert_non_null(strstr(d.msg, url));
    assert_non_null(strstr(d.msg, "refused"));
    free(url);
}

static void test_reqsock_cache_and_inflight_bound(void **state)
{
    fx *f = *state;
    swd_net *b = fx_open(f, &(swd_net_opts){0});
    /* SWD_NET_REQ_SOCKETS_MAX distinct addresses, all busy: one more finds no idle socket */
    uint64_t ids[SWD_NET_REQ_SOCKETS_MAX], id;
    char url[64], extra[64];
    for (int i = 0; i < SWD_NET_REQ_SOCKETS_MAX; i++) {
        fx_dead_url(f, url, sizeof url);
        assert_int_equal(swd_net_request(b, url, (const uint8_t *)"x", 1, 200, &ids[i]), 0);
    }
    fx_dead_url(f, extra, sizeof extra);
    assert_int_equal(swd_net_request(b, extra, (const uint8_t *)"x", 1, 200, &id), SW_ETOOBIG);
    /* once they have failed (nobody listens there), the least recently used is evicted */
    idset s = {ids, SWD_NET_REQ_SOCKETS_MAX};
    assert_true(fx_pump(f, 5000, has_all_replies, NULL, &s, 0));
    for (int i = 0; i < SWD_NET_REQ_SOCKETS_MAX; i++)
        assert_int_equal(fx_reply(f, ids[i])->error, SWD_NET_ETIMEDOUT);
    assert_int_equal(swd_net_request(b, extra, (const uint8_t *)"x", 1, 200, &id), 0);
    assert_true(fx_pump(f, 3000, has_reply, NULL, &id, 0));
    assert_int_equal(fx_reply(f, id)->error, SWD_NET_ETIMEDOUT);
}

static void test_close_with_requests_in_flight(void **state)
{
    fx *f = *state;
    f->auto_reply = false;
    swd_net *a = fx_open(f, &(swd_net_opts){.sync_addr = "tcp://127.0.0.1:0"});
    swd_net *b = fx_open(f, &(swd_net_opts){0});
    char *dead = dead_url(f);
    uint64_t id;
    int sent = 0;
    for (int i = 0; i < 10; i++, sent++)
        assert_int_equal(
            swd_net_request(b, swd_net_sync_url(a), (const uint8_t *)"slow", 4, 20000, &id), 0);
    /* the in-flight bound: 256 outstanding requests, then refusal */
    int rc = 0;
    while (sent < 1000 && (rc = swd_net_request(b, dead, (const uint8_t *)"x", 1, 20000, &id)) == 0)
        sent++;
    assert_int_equal(rc, SW_ETOOBIG);
    assert_int_equal(sent, 256);

    /* the server holds every context: exactly SWD_NET_SYNC_CONTEXTS requests reach it */
    size_t want = SWD_NET_SYNC_CONTEXTS;
    assert_true(fx_pump(f, 3000, has_held, NULL, &want, 0));
    fx_pump(f, 200, NULL, NULL, NULL, 0);
    assert_int_equal(f->n_held, SWD_NET_SYNC_CONTEXTS);
    assert_int_equal(fx_count(f, SWD_NET_REPLY), 0);
    /* closing both with requests in flight and requests unanswered leaks nothing (ASan) */
    fx_close(f, b);
    fx_close(f, a);
    free(dead);
}

/* ---- the blocking request and the control socket --------------------------------------------- */

typedef struct syncjob {
    const char *url;
    const char *msg;
    uint32_t timeout_ms;
    int rc;
    uint8_t *reply;
    size_t reply_len;
    sw_diag diag;
    atomic_bool done;
} syncjob;

static void *sync_thread(void *arg)
{
    syncjob *j = arg;
    j->rc = swd_net_request_sync(j->url, (const uint8_t *)j->msg, strlen(j->msg), j->timeout_ms,
                                 &j->reply, &j->reply_len, &j->diag);
    atomic_store(&j->done, true);
    return NULL;
}

static bool sync_done(fx *f, void *arg)
{
    (void)f;
    return atomic_load(&((syncjob *)arg)->done);
}

/* Runs swd_net_request_sync on a thread while the loop serves the other end. */
static void run_sync(fx *f, syncjob *j)
{
    pthread_t t;
    atomic_init(&j->done, false);
    j->reply = NULL;
    assert_int_equal(pthread_create(&t, NULL, sync_thread, j), 0);
    assert_true(fx_pump(f, 5000, sync_done, NULL, j, 0));
    assert_int_equal(pthread_join(t, NULL), 0);
}

static void test_request_sync(void **state)
{
    fx *f = *state;
    swd_net *a = fx_open(f, &(swd_net_opts){.sync_addr = "tcp://127.0.0.1:0"});
    syncjob j = {.url = swd_net_sync_url(a), .msg = "hello?", .timeout_ms = 3000};
    run_sync(f, &j);
    assert_int_equal(j.rc, 0);
    assert_int_equal(j.reply_len, 9);
    assert_memory_equal(j.reply, "re:hello?", 9);
    free(j.reply);

    /* nobody answers: the diag names the address and the wait */
    f->auto_reply = false;
    syncjob t = {.url = swd_net_sync_url(a), .msg = "anyone?", .timeout_ms = 300};
    double t0 = fx_now();
    run_sync(f, &t);
    assert_true(fx_now() - t0 < 2.0);
    assert_int_equal(t.rc, SWD_NET_ETIMEDOUT);
    assert_null(t.reply);
    char want[300];
    snprintf(want, sizeof want, "%s: timed out after 300 ms", swd_net_sync_url(a));
    assert_string_equal(t.diag.msg, want);
    assert_true(f->n_held >= 1);
}

static void make_stale_socket(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    assert_true(strlen(path) < sizeof sa.sun_path);
    memcpy(sa.sun_path, path, strlen(path) + 1);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    close(fd); /* the file stays; nobody listens */
}

static void assert_control_socket(const char *path)
{
    struct stat st;
    assert_int_equal(lstat(path, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0600);
}

static void test_control_socket(void **state)
{
    fx *f = *state;
    char path[128], url[160];
    snprintf(path, sizeof path, "%s/control.sock", f->dir);
    snprintf(url, sizeof url, "ipc://%s", path);

    swd_net *a = fx_open(f, &(swd_net_opts){.control_path = path});
    assert_control_socket(path);

    /* a live one is refused, naming the path */
    sw_diag d = {{0}};
    swd_net *second = NULL;
    assert_int_equal(swd_net_open(&(swd_net_opts){.control_path = path}, NULL, &second, &d),
                     SW_EEXIST);
    assert_null(second);
    assert_non_null(strstr(d.msg, path));
    assert_control_socket(path); /* and left alone */

    /* the liveness probe above must not wedge the live listener (nng 1.5.2, nanomsg/nng#1518):
     * requests still arrive, as CONTROL_REQ; control traffic is not swarm traffic */
    syncjob j = {.url = url, .msg = "status", .timeout_ms = 3000};
    run_sync(f, &j);
    assert_int_equal(j.rc, 0);
    assert_int_equal(j.reply_len, 9);
    assert_memory_equal(j.reply, "re:status", 9);
    free(j.reply);
    assert_int_equal(fx_count(f, SWD_NET_CONTROL_REQ), 1);
    assert_int_equal(fx_count(f, SWD_NET_SYNC_REQ), 0);
    swd_net_stats s;
    swd_net_get_stats(a, &s);
    assert_int_equal(s.msgs_in + s.msgs_out + s.bytes_in + s.bytes_out, 0);

    /* close removes the file */
    fx_close(f, a);
    assert_int_equal(access(path, F_OK), -1);

    /* a stale socket file (its daemon died) is replaced */
    make_stale_socket(path);
    struct stat st;
    assert_int_equal(lstat(path, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    a = fx_open(f, &(swd_net_opts){.control_path = path});
    assert_control_socket(path);
    syncjob j2 = {.url = url, .msg = "again", .timeout_ms = 3000};
    run_sync(f, &j2);
    assert_int_equal(j2.rc, 0);
    free(j2.reply);
    fx_close(f, a);

    /* so is a leftover regular file; a path too long for a unix socket is refused */
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fclose(fp);
    a = fx_open(f, &(swd_net_opts){.control_path = path});
    assert_control_socket(path);
    fx_close(f, a);
    char longpath[256];
    memset(longpath, 'a', sizeof longpath - 1);
    longpath[0] = '/';
    longpath[sizeof longpath - 1] = '\0';
    assert_int_equal(swd_net_open(&(swd_net_opts){.control_path = longpath}, NULL, &second, &d),
                     SW_ETOOBIG);
    assert_non_null(strstr(d.msg, longpath));
}

static void test_listen_failure_names_address(void **state)
{
    fx *f = *state;
    swd_net *a = fx_open(f, &(swd_net_opts){.pub_addr = "tcp://127.0.0.1:0"});
    char url[128];
    snprintf(url, sizeof url, "%s", swd_net_pub_url(a));
    sw_diag d = {{0}};
    swd_net *b = NULL;
    int rc = swd_net_open(&(swd_net_opts){.sync_addr = url}, NULL, &b, &d);
    assert_int_equal(rc, SW_EEXIST);
    assert_null(b);
    char want[200];
    snprintf(want, sizeof want, "%s: address in use", url);
    assert_string_equal(d.msg, want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_pub_sub_delivery_oversize_unsubscribe, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_queue_bound, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_fault_injection, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_request_reply, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_request_to_nobody_times_out, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_reqsock_cache_and_inflight_bound, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_close_with_requests_in_flight, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_request_sync, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_control_socket, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_listen_failure_names_address, fx_setup, fx_teardown),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    /* nng frees a socket's queued messages on its own reaper thread after
     * nng_close returns; nng_fini waits for it, so LeakSanitizer at exit sees
     * only what is really lost. */
    nng_fini();
    return failed;
}
