/* sync_service.c: the answers on the sync socket, on a fake link, a real
 * archive and a hand-made worker view. */
#include "swarm_fakes.h"

#include <inttypes.h>
#include <sys/stat.h>

#include "archive.h"
#include "gossip.h"
#include "sync_service.h"
#include "worker_view.h"

#define AE_MAX_STEPS 12
#define BATCH_STEPS 4
#define N_BATCHES 5

static const char runspec[] = "{\"model\":\"gpt2-tiny\",\"seed\":7}";

static fake_net net;
static swd_link link_;
static fake_id self, peer, origin, stranger;
static swd_gossip g;
static sw_archive *archive;
static swd_worker_view view;
static sw_vv_origin view_origins[1];
static swd_sync_service svc;
static char dir[64];
/* the archived envelopes, as origin signed them */
static uint8_t *archived[N_BATCHES];
static size_t archived_len[N_BATCHES];
static uint64_t next_id;

static int setup(void **state)
{
    (void)state;
    fake_id_make(&self);
    fake_id_make(&peer);
    fake_id_make(&origin);
    fake_id_make(&stranger);
    fake_link(&link_, &net, &self);
    swd_gossip_opts o = {.heartbeat_ms = 1000, .suspect_after = 3, .dead_after = 6};
    assert_int_equal(swd_gossip_init(&g, &link_, &o, "tcp://self:1", "tcp://self:2"), 0);

    fake_tmpdir(dir, sizeof dir);
    char path[128];
    snprintf(path, sizeof path, "%s/archive", dir);
    sw_diag d = {{0}};
    assert_int_equal(sw_archive_open(path, fake_run_id, &archive, NULL, &d), 0);
    for (size_t i = 0; i < N_BATCHES; i++) {
        swd_msg b;
        fake_batch(&b, i * BATCH_STEPS, BATCH_STEPS, (int8_t)(10 * i), 0.25f);
        archived[i] = fake_seal(&origin, &b, &archived_len[i]);
        assert_int_equal(sw_archive_append(archive, origin.pk, i * BATCH_STEPS, BATCH_STEPS,
                                           archived[i], archived_len[i], &d),
                         0);
    }

    memset(&view, 0, sizeof view);
    memset(view_origins, 0, sizeof view_origins);
    memcpy(view_origins[0].origin, origin.pk, SW_ID_BYTES);
    view_origins[0].prefix = N_BATCHES * BATCH_STEPS;
    view.vv.n = 1;
    view.vv.o = view_origins;
    view.last.ledger_count = N_BATCHES * BATCH_STEPS;
    view.last.ckpt_count = UINT64_MAX;

    svc = (swd_sync_service){.link = &link_,
                             .gossip = &g,
                             .archive = archive,
                             .view = &view,
                             .runspec_json = runspec,
                             .runspec_len = strlen(runspec),
                             .state_dir = dir,
                             .ae_max_steps = AE_MAX_STEPS};
    next_id = 1000;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_BATCHES; i++)
        free(archived[i]);
    sw_archive_close(archive);
    swd_gossip_fini(&g);
    fake_net_clear(&net);
    fake_rmdir(dir);
    return 0;
}

/* Serves the request (buf, len) and opens the one reply it got, checking
 * that it answers this request; false when the reply is empty. */
static bool serve(const uint8_t *buf, size_t len, swd_msg *reply)
{
    size_t before = fake_count(&net, FAKE_REPLY);
    uint64_t id = ++next_id;
    swd_sync_serve(&svc, id, buf, len);
    assert_int_equal(fake_count(&net, FAKE_REPLY), before + 1);
    const fake_sent *s = fake_last(&net, FAKE_REPLY);
    assert_int_equal(s->id, id);
    if (!s->buf) return false;
    fake_open(s, reply);
    assert_memory_equal(reply->sender, self.pk, SW_ID_BYTES);
    return true;
}

static void serve_msg(const fake_id *from, const swd_msg *m, swd_msg *reply)
{
    size_t len;
    uint8_t *buf = fake_seal(from, m, &len);
    assert_true(serve(buf, len, reply));
    free(buf);
}

static void assert_error(const swd_msg *r, swd_context ctx, swd_error_code code)
{
    assert_int_equal(r->type, SWD_MSG_ERROR);
    assert_int_equal(r->context, ctx);
    assert_int_equal(r->u.error.code, code);
}

static swd_msg hello(const char *pub, const char *sync)
{
    swd_msg m;
    memset(&m, 0, sizeof m);
    m.type = SWD_MSG_HELLO;
    m.context = SWD_CTX_JOIN;
    snprintf(m.u.hello.pub_addr, sizeof m.u.hello.pub_addr, "%s", pub);
    snprintf(m.u.hello.sync_addr, sizeof m.u.hello.sync_addr, "%s", sync);
    return m;
}

static swd_msg get_updates(const uint8_t who[SW_ID_BYTES], uint64_t first, uint32_t max)
{
    swd_msg m;
    memset(&m, 0, sizeof m);
    m.type = SWD_MSG_GET_UPDATES;
    memcpy(m.u.get_updates.origin, who, SW_ID_BYTES);
    m.u.get_updates.first_step = first;
    m.u.get_updates.max_steps = max;
    return m;
}

static swd_msg get_snapshot(uint64_t count, uint32_t chunk)
{
    swd_msg m;
    memset(&m, 0, sizeof m);
    m.type = SWD_MSG_GET_SNAPSHOT;
    m.u.get_snapshot.snapshot_updates = count;
    m.u.get_snapshot.chunk = chunk;
    return m;
}

/* ------------------------------------------------------------ Hello */

static void test_hello_welcome(void **state)
{
    (void)state;
    /* a member the Welcome passes on */
    swd_gossip_on_hello(&g, peer.pk, "tcp://peer:1", "tcp://peer:2");
    swd_gossip_seen(&g, peer.pk);
    fake_net_clear(&net);

    /* the startup Hello: a throwaway key, no addresses */
    swd_msg m = hello("", ""), r;
    serve_msg(&stranger, &m, &r);
    assert_int_equal(r.type, SWD_MSG_WELCOME);
    assert_int_equal(r.context, SWD_CTX_JOIN);
    const swd_welcome *w = &r.u.welcome;
    assert_int_equal(w->run_spec_len, strlen(runspec));
    assert_string_equal(w->run_spec, runspec);
    assert_int_equal(w->n_vv, 1);
    assert_memory_equal(w->vv[0].origin, origin.pk, SW_ID_BYTES);
    assert_int_equal(w->vv[0].count, N_BATCHES * BATCH_STEPS);
    assert_int_equal(w->ledger_updates, N_BATCHES * BATCH_STEPS);
    assert_int_equal(w->snapshot_updates, 0);
    assert_int_equal(w->n_members, 2);
    assert_memory_equal(w->members[0].id, self.pk, SW_ID_BYTES);
    assert_string_equal(w->members[0].sync_addr, "tcp://self:2");
    assert_memory_equal(w->members[1].id, peer.pk, SW_ID_BYTES);
    assert_string_equal(w->members[1].pub_addr, "tcp://peer:1");
    swd_msg_fini(&r);
    /* a joiner without sockets is nobody to subscribe to, nor a member */
    assert_int_equal(fake_count(&net, FAKE_SUBSCRIBE), 0);
    assert_null(swd_members_find(g.table, stranger.pk));

    /* a running node's Hello: subscribed to at once, after the reply */
    fake_net_clear(&net);
    fake_id running;
    fake_id_make(&running);
    m = hello("tcp://run:1", "tcp://run:2");
    serve_msg(&running, &m, &r);
    assert_int_equal(r.type, SWD_MSG_WELCOME);
    swd_msg_fini(&r);
    assert_int_equal(net.n_sent, 2);
    assert_int_equal(net.sent[1].kind, FAKE_SUBSCRIBE);
    assert_string_equal(net.sent[1].addr, "tcp://run:1");
    const swd_peer *p = swd_members_find(g.table, running.pk);
    assert_non_null(p);
    assert_string_equal(p->sync_addr, "tcp://run:2");
}

/* ------------------------------------------------------------ GetUpdates */

static void assert_updates(const swd_msg *r, size_t first_batch, size_t n)
{
    assert_int_equal(r->type, SWD_MSG_UPDATES);
    assert_int_equal(r->u.updates.n, n);
    for (size_t i = 0; i < n; i++) {
        size_t k = first_batch + i;
        /* verbatim: the receiver checks the origin's own signature */
        assert_int_equal(r->u.updates.env_len[i], archived_len[k]);
        assert_memory_equal(r->u.updates.env[i], archived[k], archived_len[k]);
        swd_msg b;
        swd_drop drop;
        assert_int_equal(
            swd_wire_open(r->u.updates.env[i], r->u.updates.env_len[i], fake_run_id, &b, &drop), 0);
        assert_int_equal(b.type, SWD_MSG_BATCH);
        assert_memory_equal(b.sender, origin.pk, SW_ID_BYTES);
        assert_int_equal(b.u.batch.first_step, k * BATCH_STEPS);
        swd_msg_fini(&b);
    }
}

static void test_get_updates(void **state)
{
    (void)state;
    swd_msg m = get_updates(origin.pk, 4, 8), r;
    serve_msg(&peer, &m, &r);
    assert_updates(&r, 1, 2);
    swd_msg_fini(&r);
    /* asking proves the asker alive */
    const swd_peer *p = swd_members_find(g.table, peer.pk);
    assert_non_null(p);
    assert_int_equal(p->state, SWD_PEER_ALIVE);

    /* from the middle of a batch: the batch that holds it comes first */
    m = get_updates(origin.pk, 6, 4);
    serve_msg(&peer, &m, &r);
    assert_updates(&r, 1, 2);
    swd_msg_fini(&r);

    /* max_steps 0: the service's own bound */
    m = get_updates(origin.pk, 0, 0);
    serve_msg(&peer, &m, &r);
    assert_updates(&r, 0, AE_MAX_STEPS / BATCH_STEPS);
    swd_msg_fini(&r);

    /* beyond what is archived, and an origin never heard of: empty, not an error */
    m = get_updates(origin.pk, N_BATCHES * BATCH_STEPS, 100);
    serve_msg(&peer, &m, &r);
    assert_updates(&r, 0, 0);
    swd_msg_fini(&r);
    m = get_updates(stranger.pk, 0, 100);
    serve_msg(&peer, &m, &r);
    assert_updates(&r, 0, 0);
    swd_msg_fini(&r);
    assert_int_equal(fake_count(&net, FAKE_REPLY), 5);
}

/* ------------------------------------------------------------ GetSnapshot */

#define CKPT_COUNT 16
#define CKPT_TAIL 1000

static void write_checkpoint(size_t bytes)
{
    char path[256];
    snprintf(path, sizeof path, "%s/checkpoints", dir);
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(path, sizeof path, "%s/checkpoints/ckpt-%020" PRIu64 ".swck", dir,
             (uint64_t)CKPT_COUNT);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    for (size_t i = 0; i < bytes; i++)
        fputc((int)(i % 251), f);
    assert_int_equal(fclose(f), 0);
}

static void test_snapshot_none(void **state)
{
    (void)state;
    swd_msg m = get_snapshot(CKPT_COUNT, 0), r;
    serve_msg(&peer, &m, &r);
    assert_error(&r, SWD_CTX_RUN, SWD_ERR_NOT_FOUND);
    swd_msg_fini(&r);
    /* the Welcome offers nothing either */
    view.last.ckpt_count = CKPT_COUNT;
    m = hello("", "");
    serve_msg(&stranger, &m, &r);
    assert_int_equal(r.u.welcome.snapshot_updates, 0);
    assert_int_equal(r.u.welcome.snapshot_bytes, 0);
    swd_msg_fini(&r);
}

static void test_snapshot_chunks(void **state)
{
    (void)state;
    size_t total = SWD_WIRE_MAX_CHUNK + CKPT_TAIL;
    write_checkpoint(total);
    view.last.ckpt_count = CKPT_COUNT;

    swd_msg m = hello("", ""), r;
    serve_msg(&stranger, &m, &r);
    assert_int_equal(r.u.welcome.snapshot_updates, CKPT_COUNT);
    assert_int_equal(r.u.welcome.snapshot_bytes, total);
    swd_msg_fini(&r);

    for (uint32_t c = 0; c < 2; c++) {
        m = get_snapshot(CKPT_COUNT, c);
        serve_msg(&peer, &m, &r);
        assert_int_equal(r.type, SWD_MSG_SNAPSHOT_CHUNK);
        const swd_snapshot_chunk *ch = &r.u.snapshot_chunk;
        assert_int_equal(ch->snapshot_updates, CKPT_COUNT);
        assert_int_equal(ch->chunk, c);
        assert_int_equal(ch->n_chunks, 2);
        assert_int_equal(ch->total_bytes, total);
        size_t off = (size_t)c * SWD_WIRE_MAX_CHUNK;
        assert_int_equal(ch->len, c == 0 ? SWD_WIRE_MAX_CHUNK : CKPT_TAIL);
        for (size_t i = 0; i < ch->len; i += 4099)
            assert_int_equal(ch->data[i], (off + i) % 251);
        assert_int_equal(ch->data[ch->len - 1], (off + ch->len - 1) % 251);
        swd_msg_fini(&r);
    }
    m = get_snapshot(CKPT_COUNT, 2);
    serve_msg(&peer, &m, &r);
    assert_error(&r, SWD_CTX_RUN, SWD_ERR_BAD_REQUEST);
    swd_msg_fini(&r);
    /* an older (replaced) snapshot, and none at all */
    m = get_snapshot(CKPT_COUNT - 1, 0);
    serve_msg(&peer, &m, &r);
    assert_error(&r, SWD_CTX_RUN, SWD_ERR_NOT_FOUND);
    swd_msg_fini(&r);
    m = get_snapshot(0, 0);
    serve_msg(&peer, &m, &r);
    assert_error(&r, SWD_CTX_RUN, SWD_ERR_NOT_FOUND);
    swd_msg_fini(&r);
}

/* ------------------------------------------------------------ refusals */

static void test_refuse_malformed(void **state)
{
    (void)state;
    swd_msg r;
    uint8_t garbage[48];
    memset(garbage, 0xff, sizeof garbage);
    assert_true(serve(garbage, sizeof garbage, &r));
    assert_error(&r, SWD_CTX_RUN, SWD_ERR_BAD_REQUEST);
    assert_string_equal(r.u.error.message, "malformed");
    swd_msg_fini(&r);
    assert_int_equal(link_.dropped[SWD_DROP_MALFORMED], 1);

    /* a forged request: the signature fails over a changed body */
    swd_msg m = get_updates(origin.pk, 0, 4);
    size_t len;
    uint8_t *buf = fake_seal(&peer, &m, &len);
    uint8_t *o = NULL;
    for (size_t i = 0; i + SW_ID_BYTES <= len && !o; i++)
        if (memcmp(buf + i, origin.pk, SW_ID_BYTES) == 0) o = buf + i;
    assert_non_null(o);
    o[0] ^= 0x80;
    assert_true(serve(buf, len, &r));
    assert_error(&r, SWD_CTX_RUN, SWD_ERR_BAD_REQUEST);
    assert_string_equal(r.u.error.message, "bad_signature");
    swd_msg_fini(&r);
    assert_int_equal(link_.dropped[SWD_DROP_BAD_SIGNATURE], 1);
    /* a forged request proves nothing about its claimed sender */
    assert_null(swd_members_find(g.table, peer.pk));
    free(buf);

    /* valid, but not a request */
    fake_batch(&m, 0, 2, 1, 0.5f);
    serve_msg(&peer, &m, &r);
    assert_error(&r, SWD_CTX_RUN, SWD_ERR_BAD_REQUEST);
    swd_msg_fini(&r);
    assert_int_equal(link_.dropped[SWD_DROP_UNEXPECTED], 1);

    /* too large to be looked at, let alone verified */
    size_t big_len = SWD_WIRE_MAX_MSG + 1;
    uint8_t *big = calloc(1, big_len);
    assert_non_null(big);
    assert_true(serve(big, big_len, &r));
    assert_error(&r, SWD_CTX_RUN, SWD_ERR_BAD_REQUEST);
    assert_string_equal(r.u.error.message, "oversize");
    swd_msg_fini(&r);
    free(big);
    assert_int_equal(link_.dropped[SWD_DROP_OVERSIZE], 1);

    /* another run's request */
    uint8_t other_run[SW_ID_BYTES] = {0xee};
    m = get_updates(origin.pk, 0, 4);
    assert_int_equal(swd_wire_seal(&m, other_run, peer.pk, peer.sk, &buf, &len), 0);
    assert_true(serve(buf, len, &r));
    assert_error(&r, SWD_CTX_RUN, SWD_ERR_BAD_REQUEST);
    swd_msg_fini(&r);
    free(buf);
    assert_int_equal(link_.dropped[SWD_DROP_BAD_SIGNATURE], 2);
}

static void test_refuse_banned(void **state)
{
    (void)state;
    swd_gossip_ban(&g, peer.pk);
    swd_msg m = get_updates(origin.pk, 0, 4), r;
    serve_msg(&peer, &m, &r);
    assert_error(&r, SWD_CTX_RUN, SWD_ERR_REFUSED);
    swd_msg_fini(&r);

    /* a banned joiner's refusal is in the join context: it has no run id */
    m = hello("tcp://b:1", "tcp://b:2");
    size_t len;
    uint8_t *buf = fake_seal(&peer, &m, &len);
    swd_sync_serve(&svc, 7, buf, len);
    free(buf);
    const fake_sent *s = fake_last(&net, FAKE_REPLY);
    assert_int_equal(s->id, 7);
    swd_drop drop;
    assert_int_equal(swd_wire_open(s->buf, s->len, NULL, &r, &drop), 0);
    assert_error(&r, SWD_CTX_JOIN, SWD_ERR_REFUSED);
    swd_msg_fini(&r);
    /* and it is not subscribed to */
    assert_int_equal(fake_count(&net, FAKE_SUBSCRIBE), 0);
    assert_int_equal(link_.dropped[SWD_DROP_BANNED], 2);
    assert_int_equal(link_.dropped[SWD_DROP_BAD_SIGNATURE], 0);
}

static void test_refuse_rate_limited(void **state)
{
    (void)state;
    assert_non_null(swd_gossip_seen(&g, peer.pk));
    swd_msg m = get_updates(stranger.pk, 0, 4);
    size_t len;
    uint8_t *buf = fake_seal(&peer, &m, &len);
    size_t served = 0, busy = 0, n = 1000;
    for (size_t i = 0; i < n; i++) {
        swd_msg r;
        assert_true(serve(buf, len, &r));
        if (r.type == SWD_MSG_UPDATES)
            served++;
        else {
            assert_error(&r, SWD_CTX_RUN, SWD_ERR_BUSY);
            busy++;
        }
        swd_msg_fini(&r);
        if (net.n_sent > FAKE_MAX_SENT / 2) fake_net_clear(&net);
    }
    assert_true(served >= (size_t)SWD_GOSSIP_RATE_BURST);
    assert_true(served <= (size_t)SWD_GOSSIP_RATE_BURST + 1);
    assert_int_equal(served + busy, n);
    assert_int_equal(link_.dropped[SWD_DROP_RATE_LIMITED], busy);

    /* others are still served, and the flooder again after a pause */
    swd_msg r;
    m = get_updates(origin.pk, 0, 4);
    serve_msg(&origin, &m, &r);
    assert_int_equal(r.type, SWD_MSG_UPDATES);
    swd_msg_fini(&r);
    net.now_ms += 1000;
    assert_true(serve(buf, len, &r));
    assert_int_equal(r.type, SWD_MSG_UPDATES);
    swd_msg_fini(&r);
    free(buf);
}

/* Whatever arrives gets exactly one answer, an Error it can read. */
static void test_bulk_malformed(void **state)
{
    (void)state;
    swd_msg m = get_updates(origin.pk, 0, 4);
    size_t vlen;
    uint8_t *valid = fake_seal(&peer, &m, &vlen);
    uint8_t buf[512];
    size_t n = 1000, replies = 0;
    uint32_t seed = 12345;
    for (size_t i = 0; i < n; i++) {
        size_t len;
        switch (i % 4) {
        case 0: /* noise */
            len = i % 300;
            for (size_t k = 0; k < len; k++) {
                seed = seed * 1103515245u + 12345u;
                buf[k] = (uint8_t)(seed >> 16);
            }
            break;
        case 1: /* a truncated envelope */
            len = i % vlen;
            memcpy(buf, valid, len);
            break;
        default: /* one byte changed */
            assert_true(vlen <= sizeof buf);
            memcpy(buf, valid, vlen);
            len = vlen;
            seed = seed * 1103515245u + 12345u;
            buf[(seed >> 8) % vlen] ^= (uint8_t)(1u + (seed >> 24) % 255u);
            break;
        }
        size_t before = link_.dropped[SWD_DROP_UNEXPECTED];
        swd_msg r;
        assert_true(serve(buf, len, &r));
        replies++;
        /* a changed byte may still be a valid request (an unsigned varint
         * field re-encoded the same): then an answer, not an error */
        if (r.type != SWD_MSG_ERROR) assert_int_equal(r.type, SWD_MSG_UPDATES);
        assert_int_equal(link_.dropped[SWD_DROP_UNEXPECTED], before);
        swd_msg_fini(&r);
        if (net.n_sent > FAKE_MAX_SENT / 2) fake_net_clear(&net);
    }
    assert_int_equal(replies, n);
    free(valid);
}

int main(void)
{
    if (sodium_init() < 0) return 1;
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_hello_welcome),       T(test_get_updates),      T(test_snapshot_none),
        T(test_snapshot_chunks),     T(test_refuse_malformed), T(test_refuse_banned),
        T(test_refuse_rate_limited), T(test_bulk_malformed),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
