/* pipeline.c: own and received batches, restart, bans and anti-entropy, on a fake link. */
#include "swarm_fakes.h"

#include <jansson.h>

#include "archive.h"
#include "gossip.h"
#include "ledger.h"
#include "pipeline.h"
#include "requests.h"
#include "worker_view.h"

#define BATCH_MAX 4
#define BATCH_MS 200
#define HEARTBEAT_MS 1000
#define PEER_SYNC "tcp://peer:7002"

static fake_net net;
static swd_link link_;
static fake_id self, peer, other;
static char dir[256];
static sw_archive *ar;
static sw_ledger *led;
static swd_gossip gossip;
static swd_requests reqs;
static swd_worker_view view;
static swd_worker wk;
static sw_train_spec train;
static swd_pipeline pl;

/* The same wiring as swarm.c's open, with files in a fresh state dir. */
static int setup(void **state)
{
    (void)state;
    fake_id_make(&self);
    fake_id_make(&peer);
    fake_id_make(&other);
    fake_link(&link_, &net, &self);
    fake_tmpdir(dir, sizeof dir);
    char path[512];
    sw_diag d = {{0}};
    snprintf(path, sizeof path, "%s/archive", dir);
    assert_int_equal(sw_archive_open(path, link_.run_id, &ar, NULL, &d), 0);
    snprintf(path, sizeof path, "%s/ledger", dir);
    assert_int_equal(sw_ledger_open(path, link_.run_id, false, &led, NULL, &d), 0);
    swd_gossip_opts go = {
        .heartbeat_ms = HEARTBEAT_MS, .suspect_after = 3, .dead_after = 10, .announce_seq = 1};
    assert_int_equal(swd_gossip_init(&gossip, &link_, &go, "tcp://self:7001", "tcp://self:7002"),
                     0);
    memset(&reqs, 0, sizeof reqs);
    memset(&view, 0, sizeof view);
    fake_worker(&wk);
    memset(&train, 0, sizeof train);
    memcpy(train.run_id, fake_run_id, SW_ID_BYTES);
    train.lr = 1e-4;
    train.total_steps = 1000;
    train.directions = 1;
    train.max_scale = 1.0;
    swd_pipeline_params pp = {.link = &link_,
                              .gossip = &gossip,
                              .requests = &reqs,
                              .view = &view,
                              .worker = &wk,
                              .archive = ar,
                              .train = &train,
                              .state_dir = dir,
                              .batch_max_steps = BATCH_MAX,
                              .batch_max_ms = BATCH_MS,
                              .heartbeat_ms = HEARTBEAT_MS};
    swd_pipeline_init(&pl, &pp);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    swd_pipeline_fini(&pl);
    swd_gossip_fini(&gossip);
    sw_archive_close(ar);
    sw_ledger_close(led);
    swd_worker_view_fini(&view);
    fake_worker_fini(&wk);
    fake_net_clear(&net);
    fake_rmdir(dir);
    return 0;
}

/* Own updates [first, first + n), q = first + i, one scale. */
static void own(sw_update *u, uint64_t first, size_t n, float scale)
{
    for (size_t i = 0; i < n; i++) {
        memcpy(u[i].origin, self.pk, SW_ID_BYTES);
        u[i].step = first + i;
        u[i].q = (int8_t)(first + i);
        u[i].scale = scale;
    }
}

static void ledger_add(const fake_id *origin, uint64_t first, size_t n, int8_t q, float scale)
{
    sw_update u[16];
    assert_true(n <= 16);
    for (size_t i = 0; i < n; i++) {
        memcpy(u[i].origin, origin->pk, SW_ID_BYTES);
        u[i].step = first + i;
        u[i].q = (int8_t)(q + (int8_t)i);
        u[i].scale = scale;
    }
    sw_diag d = {{0}};
    assert_int_equal(sw_ledger_append(led, u, n, &d), 0);
}

/* The worker ledgered what it was given: the loop's view follows. */
static void view_from_ledger(void)
{
    sw_vv_fini(&view.vv);
    assert_int_equal(sw_ledger_vv(led, &view.vv), 0);
}

/* The i-th publish is an UpdateBatch signed by self of [first, first + n). */
static void assert_published(size_t i, uint64_t first, size_t n, float scale)
{
    size_t seen = 0;
    const fake_sent *s = NULL;
    for (size_t k = 0; k < net.n_sent && !s; k++)
        if (net.sent[k].kind == FAKE_PUBLISH && seen++ == i) s = &net.sent[k];
    assert_non_null(s);
    swd_msg m;
    fake_open(s, &m);
    assert_int_equal(m.type, SWD_MSG_BATCH);
    assert_memory_equal(m.sender, self.pk, SW_ID_BYTES);
    assert_int_equal(m.u.batch.first_step, first);
    assert_int_equal(m.u.batch.n, n);
    assert_memory_equal(&m.u.batch.scale, &scale, sizeof scale);
    for (size_t k = 0; k < n; k++)
        assert_int_equal(m.u.batch.q[k], (int8_t)(first + k));
    swd_msg_fini(&m);
}

/* A peer's batch as it arrives: take_batch with its verified message and envelope. */
static void take(const fake_id *from, uint64_t first, size_t n, int8_t q, float scale)
{
    swd_msg m, got;
    fake_batch(&m, first, n, q, scale);
    size_t len;
    uint8_t *env = fake_receive(from, &m, &got, &len);
    swd_pipeline_take_batch(&pl, &got, env, len);
    swd_msg_fini(&got);
    free(env);
}

typedef struct collect {
    size_t n;
    uint8_t *env[8];
    size_t len[8];
} collect;

static int collect_entry(void *ctx, const uint8_t *bytes, size_t len)
{
    collect *c = ctx;
    assert_true(c->n < 8);
    c->env[c->n] = malloc(len);
    assert_non_null(c->env[c->n]);
    memcpy(c->env[c->n], bytes, len);
    c->len[c->n++] = len;
    return 0;
}

static void collect_free(collect *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->env[i]);
    c->n = 0;
}

/* A batch reaches the net only when it is full, and goes out signed, with
 * the very bytes the archive keeps for peers that missed it. */
static void test_own_full_batch(void **state)
{
    (void)state;
    sw_update u[BATCH_MAX];
    own(u, 0, BATCH_MAX, 0.5f);
    swd_pipeline_add_own(&pl, u, BATCH_MAX - 1);
    assert_int_equal(fake_count(&net, FAKE_PUBLISH), 0);
    assert_int_equal(swd_pipeline_published(&pl), 0);
    assert_int_equal(pl.updates_made, BATCH_MAX - 1);

    swd_pipeline_add_own(&pl, u + BATCH_MAX - 1, 1);
    assert_int_equal(fake_count(&net, FAKE_PUBLISH), 1);
    assert_published(0, 0, BATCH_MAX, 0.5f);
    assert_int_equal(pl.updates_made, BATCH_MAX);
    assert_int_equal(pl.updates_out, BATCH_MAX);
    assert_int_equal(pl.batches_out, 1);
    assert_int_equal(pl.n_pend, 0);
    assert_int_equal(swd_pipeline_published(&pl), BATCH_MAX);
    assert_int_equal(sw_archive_count(ar), 1);

    collect c = {0};
    sw_diag d = {{0}};
    assert_int_equal(
        sw_archive_fetch(ar, self.pk, 0, BATCH_MAX, 8, SIZE_MAX, collect_entry, &c, NULL, &d), 0);
    assert_int_equal(c.n, 1);
    const fake_sent *s = fake_last(&net, FAKE_PUBLISH);
    assert_int_equal(c.len[0], s->len);
    assert_memory_equal(c.env[0], s->buf, s->len);
    collect_free(&c);
}

/* One batch holds one scale: a new scale cuts the batch before it, even
 * when it is short; and a batch never spans more than batch_max_steps. */
static void test_own_scale_cuts(void **state)
{
    (void)state;
    sw_update u[2 * BATCH_MAX + 3];
    own(u, 0, 2, 0.5f);
    own(u + 2, 2, 2 * BATCH_MAX + 1, 0.25f);
    swd_pipeline_add_own(&pl, u, 2 * BATCH_MAX + 3);
    assert_int_equal(fake_count(&net, FAKE_PUBLISH), 3);
    assert_published(0, 0, 2, 0.5f);
    assert_published(1, 2, BATCH_MAX, 0.25f);
    assert_published(2, 2 + BATCH_MAX, BATCH_MAX, 0.25f);
    assert_int_equal(pl.n_pend, 1);
    assert_int_equal(pl.updates_out, 2 + 2 * BATCH_MAX);
    assert_int_equal(pl.batches_out, 3);
    assert_int_equal(swd_pipeline_published(&pl), 2 + 2 * BATCH_MAX);
}

/* A partial batch waits batch_max_ms, not a millisecond less; force sends
 * whatever is pending at once (stop, pacing). */
static void test_own_flush(void **state)
{
    (void)state;
    sw_update u[3];
    own(u, 0, 2, 0.5f);
    swd_pipeline_add_own(&pl, u, 2);
    net.now_ms += BATCH_MS - 1;
    swd_pipeline_flush(&pl, false);
    assert_int_equal(fake_count(&net, FAKE_PUBLISH), 0);
    net.now_ms += 1;
    swd_pipeline_flush(&pl, false);
    assert_int_equal(fake_count(&net, FAKE_PUBLISH), 1);
    assert_published(0, 0, 2, 0.5f);
    assert_int_equal(pl.n_pend, 0);

    own(u, 2, 1, 0.5f);
    swd_pipeline_add_own(&pl, u, 1);
    swd_pipeline_flush(&pl, false);
    assert_int_equal(fake_count(&net, FAKE_PUBLISH), 1);
    swd_pipeline_flush(&pl, true);
    assert_int_equal(fake_count(&net, FAKE_PUBLISH), 2);
    assert_published(1, 2, 1, 0.5f);
    assert_int_equal(pl.n_pend, 0);
    assert_int_equal(pl.updates_made, 3);
    assert_int_equal(pl.updates_out, 3);
    assert_int_equal(pl.batches_out, 2);
    assert_int_equal(swd_pipeline_published(&pl), 3);
    assert_int_equal(sw_archive_count(ar), 2);

    swd_pipeline_flush(&pl, true); /* nothing pending: nothing sent */
    assert_int_equal(fake_count(&net, FAKE_PUBLISH), 2);
}

/* A peer's valid batch reaches the worker and the archive; our own echo does not. */
static void test_received_valid(void **state)
{
    (void)state;
    take(&peer, 0, 3, 10, 0.5f);
    assert_int_equal(wk.n_inbox, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_memory_equal(wk.inbox[i].origin, peer.pk, SW_ID_BYTES);
        assert_int_equal(wk.inbox[i].step, i);
        assert_int_equal(wk.inbox[i].q, 10 + (int)i);
        assert_true(wk.inbox[i].scale == 0.5f);
    }
    assert_true(sw_archive_covered(ar, peer.pk, 0, 3));
    assert_int_equal(swd_pipeline_have(&pl, peer.pk), 3);
    assert_int_equal(pl.updates_in, 3);

    /* exactly max_scale is allowed */
    take(&peer, 3, 1, 0, 1.0f);
    assert_int_equal(wk.n_inbox, 4);

    take(&self, 0, 2, 1, 0.5f);
    assert_int_equal(link_.dropped[SWD_DROP_SELF], 1);
    assert_int_equal(wk.n_inbox, 4);
    assert_int_equal(swd_pipeline_published(&pl), 0);
    assert_int_equal(fake_count(&net, FAKE_PUBLISH), 0);
}

/* Once the worker holds a batch a second copy is dropped; before that it
 * goes to the worker again (the worker de-duplicates against the ledger)
 * but is neither archived nor counted twice. */
static void test_received_duplicate(void **state)
{
    (void)state;
    take(&peer, 0, 3, 10, 0.5f);
    take(&peer, 0, 3, 10, 0.5f);
    assert_int_equal(sw_archive_count(ar), 1);
    assert_int_equal(pl.updates_in, 3);
    assert_int_equal(link_.dropped[SWD_DROP_DUPLICATE], 0);
    assert_int_equal(wk.n_inbox, 6);

    ledger_add(&peer, 0, 3, 10, 0.5f);
    view_from_ledger();
    wk.n_inbox = 0;
    take(&peer, 0, 3, 10, 0.5f);
    assert_int_equal(link_.dropped[SWD_DROP_DUPLICATE], 1);
    assert_int_equal(wk.n_inbox, 0);
    take(&peer, 1, 2, 11, 0.5f); /* a part of it, too */
    assert_int_equal(link_.dropped[SWD_DROP_DUPLICATE], 2);
    assert_int_equal(wk.n_inbox, 0);

    take(&peer, 2, 2, 12, 0.5f); /* reaches past what the worker holds */
    assert_int_equal(link_.dropped[SWD_DROP_DUPLICATE], 2);
    assert_int_equal(wk.n_inbox, 2);
    assert_int_equal(pl.updates_in, 5);
}

/* A scale above the run's max_scale spoils the whole batch: nothing queued,
 * nothing archived.  (q = -128 and steps past 2^64 never pass the wire.) */
static void test_received_bad_update(void **state)
{
    (void)state;
    take(&peer, 0, 3, 10, 1.5f);
    assert_int_equal(link_.dropped[SWD_DROP_BAD_UPDATE], 1);
    take(&peer, 0, 3, 10, 0x1.000002p0f); /* the least float above max_scale */
    assert_int_equal(link_.dropped[SWD_DROP_BAD_UPDATE], 2);
    assert_int_equal(wk.n_inbox, 0);
    assert_int_equal(sw_archive_count(ar), 0);
    assert_int_equal(pl.updates_in, 0);
}

/* Steps more than SWD_PIPELINE_MAX_AHEAD beyond what we hold are absurd
 * (they would pin memory in the ledger's extra set); the limit itself is not. */
static void test_received_far_ahead(void **state)
{
    (void)state;
    take(&peer, SWD_PIPELINE_MAX_AHEAD, 1, 0, 0.5f);
    assert_int_equal(link_.dropped[SWD_DROP_ABSURD_STEP], 1);
    assert_int_equal(wk.n_inbox, 0);
    assert_int_equal(sw_archive_count(ar), 0);

    take(&peer, SWD_PIPELINE_MAX_AHEAD - 1, 1, 0, 0.5f);
    assert_int_equal(link_.dropped[SWD_DROP_ABSURD_STEP], 1);
    assert_int_equal(wk.n_inbox, 1);

    /* what we hold moves the limit */
    take(&peer, 0, 2, 0, 0.5f);
    take(&peer, SWD_PIPELINE_MAX_AHEAD + 1, 1, 0, 0.5f);
    assert_int_equal(link_.dropped[SWD_DROP_ABSURD_STEP], 1);
    assert_int_equal(wk.n_inbox, 4);
}

/* A second, different batch for archived steps bans its origin for good,
 * with both signed envelopes kept as proof. */
static void test_received_equivocation(void **state)
{
    (void)state;
    take(&peer, 0, 4, 10, 0.5f);
    swd_msg m, got;
    fake_batch(&m, 2, 2, 50, 0.5f);
    size_t len;
    uint8_t *env = fake_receive(&peer, &m, &got, &len);
    swd_pipeline_take_batch(&pl, &got, env, len);
    swd_msg_fini(&got);

    assert_int_equal(link_.dropped[SWD_DROP_EQUIVOCATION], 1);
    assert_true(swd_gossip_banned(&gossip, peer.pk));
    assert_false(swd_gossip_banned(&gossip, other.pk));
    assert_int_equal(wk.n_inbox, 4);
    assert_int_equal(sw_archive_count(ar), 1);
    assert_int_equal(pl.updates_in, 4);

    char hex[SWD_HEX], path[512];
    swd_hex(peer.pk, hex);
    snprintf(path, sizeof path, "%s/bans/%s.json", dir, hex);
    json_error_t je;
    json_t *proof = json_load_file(path, 0, &je);
    assert_non_null(proof);
    assert_string_equal(json_string_value(json_object_get(proof, "origin")), hex);
    assert_int_equal(json_integer_value(json_object_get(proof, "step")), 2);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(proof, "held"), "q")), 12);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(proof, "got"), "q")), 50);
    char *want = malloc(2 * len + 1);
    assert_non_null(want);
    sodium_bin2hex(want, 2 * len + 1, env, len);
    assert_string_equal(json_string_value(json_object_get(proof, "got_envelope")), want);
    assert_non_null(json_string_value(json_object_get(proof, "held_envelope")));
    free(want);
    json_decref(proof);
    free(env);

    /* the same batch as held is not an equivocation */
    take(&other, 0, 2, 1, 0.5f);
    take(&other, 0, 2, 1, 0.5f);
    assert_int_equal(link_.dropped[SWD_DROP_EQUIVOCATION], 1);
    assert_false(swd_gossip_banned(&gossip, other.pk));

    /* the same q under another scale is a different update: banned too */
    take(&other, 1, 1, 2, 0.25f);
    assert_int_equal(link_.dropped[SWD_DROP_EQUIVOCATION], 2);
    assert_true(swd_gossip_banned(&gossip, other.pk));
}

/* A batch that only partly overlaps archived steps is compared too: one
 * straddling an archived batch with other bytes is banned and never
 * archived (the archive would serve both); one that agrees where it
 * overlaps, or lies across a gap between archived batches, is taken. */
static void test_received_equivocation_straddling(void **state)
{
    (void)state;
    take(&peer, 0, 4, 10, 0.5f); /* archived [0,4): q 10..13 */
    take(&peer, 8, 4, 18, 0.5f); /* archived [8,12): q 18..21 */
    take(&peer, 2, 4, 12, 0.5f); /* [2,6) agrees on 2,3 */
    take(&peer, 6, 4, 16, 0.5f); /* [6,10) agrees on 8,9 */
    assert_int_equal(link_.dropped[SWD_DROP_EQUIVOCATION], 0);
    assert_int_equal(sw_archive_count(ar), 4);
    assert_false(swd_gossip_banned(&gossip, peer.pk));

    take(&other, 0, 4, 10, 0.5f); /* archived [0,4) */
    take(&other, 6, 2, 30, 0.5f); /* archived [6,8): a gap at 4,5 */
    take(&other, 3, 6, 13, 0.5f); /* [3,9): agrees at 3, differs at 6 (q 16 vs 30) */
    assert_int_equal(link_.dropped[SWD_DROP_EQUIVOCATION], 1);
    assert_true(swd_gossip_banned(&gossip, other.pk));
    assert_int_equal(sw_archive_count(ar), 6);
}

/* The GetUpdates request the i-th request carries. */
static void assert_get_updates(size_t i, const uint8_t *origin, uint64_t first, uint32_t max)
{
    assert_true(i < net.n_sent);
    const fake_sent *s = &net.sent[i];
    assert_int_equal(s->kind, FAKE_REQUEST);
    assert_string_equal(s->addr, PEER_SYNC);
    swd_msg m;
    fake_open(s, &m);
    assert_int_equal(m.type, SWD_MSG_GET_UPDATES);
    assert_memory_equal(m.u.get_updates.origin, origin, SW_ID_BYTES);
    assert_int_equal(m.u.get_updates.first_step, first);
    assert_int_equal(m.u.get_updates.max_steps, max);
    swd_msg_fini(&m);
}

/* A peer announcing more than we hold is asked for the rest, one request
 * per origin at most in flight, never for our own origin. */
static void test_repair_from(void **state)
{
    (void)state;
    take(&peer, 0, 3, 0, 0.5f);
    swd_vv_entry vv[3];
    memset(vv, 0, sizeof vv);
    memcpy(vv[0].origin, peer.pk, SW_ID_BYTES);
    vv[0].count = 10;
    memcpy(vv[1].origin, self.pk, SW_ID_BYTES);
    vv[1].count = 50;
    memcpy(vv[2].origin, other.pk, SW_ID_BYTES);
    vv[2].count = 3 * (uint64_t)SWD_PIPELINE_AE_MAX_STEPS;
    const swd_peer *p = fake_announced(gossip.table, &peer, PEER_SYNC, vv, 3, 1, net.now_ms);

    swd_pipeline_repair_from(&pl, p);
    assert_int_equal(fake_count(&net, FAKE_REQUEST), 2);
    assert_get_updates(0, peer.pk, 3, 7);
    assert_get_updates(1, other.pk, 0, SWD_PIPELINE_AE_MAX_STEPS);
    assert_true(swd_requests_pending_origin(&reqs, peer.pk));
    assert_int_equal(swd_requests_in_flight(&reqs), 2);

    swd_pipeline_repair_from(&pl, p);
    assert_int_equal(fake_count(&net, FAKE_REQUEST), 2);
}

/* Nothing is asked of a peer that holds no more than we do, or while we leave. */
static void test_repair_quiet(void **state)
{
    (void)state;
    take(&peer, 0, 3, 0, 0.5f);
    swd_vv_entry vv[1];
    memset(vv, 0, sizeof vv);
    memcpy(vv[0].origin, peer.pk, SW_ID_BYTES);
    vv[0].count = 3;
    swd_peer *p = fake_announced(gossip.table, &peer, PEER_SYNC, vv, 1, 1, net.now_ms);
    swd_pipeline_repair_from(&pl, p);
    assert_int_equal(net.n_sent, 0);

    p->vv[0].count = 4;
    pl.quiet = true;
    swd_pipeline_repair_from(&pl, p);
    assert_int_equal(net.n_sent, 0);
    pl.quiet = false;
    swd_pipeline_repair_from(&pl, p);
    assert_int_equal(fake_count(&net, FAKE_REQUEST), 1);
}

/* Updates reply m from peer carrying envelopes env[0..n). */
static void updates_reply(swd_msg *m, uint8_t **env, size_t *len, size_t n)
{
    memset(m, 0, sizeof *m);
    m->type = SWD_MSG_UPDATES;
    memcpy(m->sender, peer.pk, SW_ID_BYTES);
    m->u.updates.n = n;
    m->u.updates.env = env;
    m->u.updates.env_len = len;
}

/* A reply that brings updates queues them and marks progress; one that
 * brings nothing makes the peer wait before it is asked again. */
static void test_on_updates(void **state)
{
    (void)state;
    swd_vv_entry vv[1];
    memset(vv, 0, sizeof vv);
    memcpy(vv[0].origin, peer.pk, SW_ID_BYTES);
    vv[0].count = 10;
    swd_peer *p = fake_announced(gossip.table, &peer, PEER_SYNC, vv, 1, 1, net.now_ms);
    swd_pipeline_repair_from(&pl, p);
    assert_int_equal(fake_count(&net, FAKE_REQUEST), 1);
    assert_get_updates(0, peer.pk, 0, 10);

    swd_msg b[3], tmp;
    uint8_t *env[3];
    size_t len[3];
    fake_batch(&b[0], 0, 4, 0, 0.5f);
    fake_batch(&b[1], 4, 2, 4, 0.5f);
    fake_batch(&b[2], 0, 1, 6, 0.5f);
    for (size_t i = 0; i < 2; i++) {
        env[i] = fake_receive(&peer, &b[i], &tmp, &len[i]);
        swd_msg_fini(&tmp);
    }
    env[2] = fake_receive(&other, &b[2], &tmp, &len[2]); /* served for another origin */
    swd_msg_fini(&tmp);
    swd_req r;
    assert_true(swd_requests_take(&reqs, net.sent[0].id, &r));
    swd_msg m;
    updates_reply(&m, env, len, 3);
    net.now_ms += 50;
    swd_pipeline_on_updates(&pl, &r, &m);
    assert_int_equal(wk.n_inbox, 7);
    assert_int_equal(swd_pipeline_have(&pl, peer.pk), 6);
    assert_int_equal(swd_pipeline_have(&pl, other.pk), 1);
    assert_int_equal(pl.updates_in, 7);
    assert_int_equal(pl.ae_progress_ms, net.now_ms);
    /* progress: the rest is asked for at once */
    assert_int_equal(fake_count(&net, FAKE_REQUEST), 2);
    assert_get_updates(1, peer.pk, 6, 4);

    assert_true(swd_requests_take(&reqs, net.sent[1].id, &r));
    updates_reply(&m, NULL, NULL, 0);
    uint64_t progress = pl.ae_progress_ms;
    net.now_ms += 50;
    swd_pipeline_on_updates(&pl, &r, &m);
    assert_int_equal(pl.ae_progress_ms, progress);
    assert_int_equal(fake_count(&net, FAKE_REQUEST), 2);
    uint64_t quiet = (uint64_t)SWD_GOSSIP_ANNOUNCE_EVERY * HEARTBEAT_MS;
    assert_int_equal(p->ae_quiet_until_ms, net.now_ms + quiet);
    net.now_ms += quiet - 1;
    swd_pipeline_repair_from(&pl, p);
    assert_int_equal(fake_count(&net, FAKE_REQUEST), 2);
    net.now_ms += 1;
    swd_pipeline_repair_from(&pl, p);
    assert_int_equal(fake_count(&net, FAKE_REQUEST), 3);
    assert_get_updates(2, peer.pk, 6, 4);

    /* a banned origin's envelopes are not taken from a reply */
    swd_gossip_ban(&gossip, other.pk);
    fake_batch(&b[2], 1, 1, 7, 0.5f);
    free(env[2]);
    env[2] = fake_receive(&other, &b[2], &tmp, &len[2]);
    swd_msg_fini(&tmp);
    assert_true(swd_requests_take(&reqs, net.sent[2].id, &r));
    updates_reply(&m, env + 2, len + 2, 1);
    swd_pipeline_on_updates(&pl, &r, &m);
    assert_int_equal(link_.dropped[SWD_DROP_BANNED], 1);
    assert_int_equal(wk.n_inbox, 7);
    for (size_t i = 0; i < 3; i++)
        free(env[i]);
}

/* At a restart the archive may have lost own updates the ledger holds: they
 * are signed again, archived, not published (peers fetch them). */
static void test_refill_own(void **state)
{
    (void)state;
    ledger_add(&self, 0, 6, 0, 0.5f);
    ledger_add(&self, 6, 1, 6, 0.25f);
    sw_update u[BATCH_MAX];
    own(u, 0, BATCH_MAX, 0.5f);
    swd_pipeline_add_own(&pl, u, BATCH_MAX); /* [0, 4) was archived before the crash */
    fake_net_clear(&net);
    assert_int_equal(swd_pipeline_published(&pl), BATCH_MAX);

    assert_int_equal(swd_pipeline_refill_own(&pl, led), 0);
    assert_int_equal(net.n_sent, 0);
    assert_int_equal(swd_pipeline_published(&pl), 7);
    assert_int_equal(sw_archive_count(ar), 3);

    collect c = {0};
    sw_diag d = {{0}};
    assert_int_equal(sw_archive_fetch(ar, self.pk, 4, 3, 8, SIZE_MAX, collect_entry, &c, NULL, &d),
                     0);
    assert_int_equal(c.n, 2);
    const uint64_t first[2] = {4, 6};
    const size_t n[2] = {2, 1};
    const float scale[2] = {0.5f, 0.25f};
    for (size_t i = 0; i < 2; i++) {
        swd_msg m;
        swd_drop drop;
        assert_int_equal(swd_wire_open(c.env[i], c.len[i], fake_run_id, &m, &drop), 0);
        assert_memory_equal(m.sender, self.pk, SW_ID_BYTES);
        assert_int_equal(m.u.batch.first_step, first[i]);
        assert_int_equal(m.u.batch.n, n[i]);
        assert_true(m.u.batch.scale == scale[i]);
        for (size_t k = 0; k < n[i]; k++)
            assert_int_equal(m.u.batch.q[k], (int8_t)(first[i] + k));
        swd_msg_fini(&m);
    }
    collect_free(&c);

    assert_int_equal(swd_pipeline_refill_own(&pl, led), 0); /* nothing left to do */
    assert_int_equal(sw_archive_count(ar), 3);
}

/* Archived batches the ledger lacks (a stop between archive and ledger) go
 * back to the worker, only the steps missing; our own are not. */
static void test_requeue_archived(void **state)
{
    (void)state;
    swd_msg m;
    size_t len;
    sw_diag d = {{0}};
    fake_batch(&m, 0, 4, 20, 0.5f);
    uint8_t *env = fake_seal(&peer, &m, &len);
    assert_int_equal(sw_archive_append(ar, peer.pk, 0, 4, env, len, &d), 0);
    free(env);
    fake_batch(&m, 4, 3, 24, 0.5f);
    env = fake_seal(&peer, &m, &len);
    assert_int_equal(sw_archive_append(ar, peer.pk, 4, 3, env, len, &d), 0);
    free(env);
    fake_batch(&m, 0, 2, 0, 0.5f);
    env = fake_seal(&self, &m, &len);
    assert_int_equal(sw_archive_append(ar, self.pk, 0, 2, env, len, &d), 0);
    free(env);
    ledger_add(&peer, 0, 2, 20, 0.5f);
    ledger_add(&peer, 5, 1, 25, 0.5f);

    assert_int_equal(swd_pipeline_requeue_archived(&pl, led), 0);
    assert_int_equal(wk.n_inbox, 4);
    const uint64_t want[4] = {2, 3, 4, 6};
    for (size_t i = 0; i < 4; i++) {
        assert_memory_equal(wk.inbox[i].origin, peer.pk, SW_ID_BYTES);
        assert_int_equal(wk.inbox[i].step, want[i]);
        assert_int_equal(wk.inbox[i].q, (int8_t)(20 + want[i]));
    }
    assert_int_equal(net.n_sent, 0);
}

int main(void)
{
    if (sodium_init() < 0) return 1;
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_own_full_batch),
        T(test_own_scale_cuts),
        T(test_own_flush),
        T(test_received_valid),
        T(test_received_duplicate),
        T(test_received_bad_update),
        T(test_received_far_ahead),
        T(test_received_equivocation),
        T(test_received_equivocation_straddling),
        T(test_repair_from),
        T(test_repair_quiet),
        T(test_on_updates),
        T(test_refill_own),
        T(test_requeue_archived),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
