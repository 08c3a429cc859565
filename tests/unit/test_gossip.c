/* gossip.c: the swarm's membership, on a fake link and a fake clock. */
#include "swarm_fakes.h"

#include "gossip.h"

#define HB_MS 1000
#define SUSPECT_AFTER 3
#define DEAD_AFTER 6
#define SEQ0 100

static fake_net net;
static swd_link link_;
static fake_id self, peer, other;
static swd_gossip g;

static int setup(void **state)
{
    (void)state;
    fake_id_make(&self);
    fake_id_make(&peer);
    fake_id_make(&other);
    fake_link(&link_, &net, &self);
    swd_gossip_opts o = {.heartbeat_ms = HB_MS,
                         .suspect_after = SUSPECT_AFTER,
                         .dead_after = DEAD_AFTER,
                         .announce_seq = SEQ0};
    assert_int_equal(swd_gossip_init(&g, &link_, &o, "tcp://self:1", "tcp://self:2"), 0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    swd_gossip_fini(&g);
    fake_net_clear(&net);
    return 0;
}

static uint64_t total_dropped(void)
{
    uint64_t n = 0;
    for (size_t i = 0; i < SWD_DROP_COUNT; i++)
        n += link_.dropped[i];
    return n;
}

/* A batch whose q bytes (0x30..0x37) are easy to find in the envelope, so a
 * test can corrupt the signed body without breaking its encoding. */
static uint8_t *sealed_batch(const fake_id *id, size_t *len)
{
    swd_msg m;
    fake_batch(&m, 0, 8, 0x30, 0.5f);
    return fake_seal(id, &m, len);
}

static uint8_t *find_bytes(uint8_t *buf, size_t len, const uint8_t *pat, size_t n)
{
    for (size_t i = 0; i + n <= len; i++)
        if (memcmp(buf + i, pat, n) == 0) return buf + i;
    return NULL;
}

static void flip_body(uint8_t *buf, size_t len)
{
    static const uint8_t pat[] = {0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37};
    uint8_t *p = find_bytes(buf, len, pat, sizeof pat);
    assert_non_null(p);
    p[3] ^= 0x01;
}

static swd_msg announce_msg(uint64_t seq, const char *pub, const char *sync,
                            swd_member_info *members, size_t n_members, swd_vv_entry *vv,
                            size_t n_vv)
{
    swd_msg m;
    memset(&m, 0, sizeof m);
    m.type = SWD_MSG_ANNOUNCE;
    swd_announce *a = &m.u.announce;
    a->seq = seq;
    snprintf(a->pub_addr, sizeof a->pub_addr, "%s", pub);
    snprintf(a->sync_addr, sizeof a->sync_addr, "%s", sync);
    a->state = SWD_STATE_TRAINING;
    a->step = 3;
    a->members = members;
    a->n_members = n_members;
    a->vv = vv;
    a->n_vv = n_vv;
    a->loss = 1.5f;
    return m;
}

/* Seals m as id, admits it as published and feeds it to on_announce. */
static const swd_peer *announce_from(const fake_id *id, const swd_msg *m)
{
    size_t len;
    uint8_t *buf = fake_seal(id, m, &len);
    swd_msg got;
    assert_true(swd_gossip_admit(&g, buf, len, &got));
    free(buf);
    const swd_peer *p = swd_gossip_on_announce(&g, &got);
    swd_msg_fini(&got);
    return p;
}

static const swd_peer *announce_simple(const fake_id *id, uint64_t seq, const char *pub,
                                       const char *sync, swd_vv_entry *vv, size_t n_vv)
{
    swd_msg m = announce_msg(seq, pub, sync, NULL, 0, vv, n_vv);
    return announce_from(id, &m);
}

static bool subscribed_to(const char *addr)
{
    for (size_t i = 0; i < net.n_sent; i++)
        if (net.sent[i].kind == FAKE_SUBSCRIBE && strcmp(net.sent[i].addr, addr) == 0) return true;
    return false;
}

/* ------------------------------------------------------------ admit */

static void test_admit_valid(void **state)
{
    (void)state;
    size_t len;
    uint8_t *buf = sealed_batch(&peer, &len);
    swd_msg m;
    assert_true(swd_gossip_admit(&g, buf, len, &m));
    assert_int_equal(m.type, SWD_MSG_BATCH);
    assert_memory_equal(m.sender, peer.pk, SW_ID_BYTES);
    assert_int_equal(m.u.batch.n, 8);
    assert_int_equal(m.u.batch.q[7], 0x37);
    assert_int_equal(total_dropped(), 0);
    swd_msg_fini(&m);
    free(buf);
}

static void test_admit_drops(void **state)
{
    (void)state;
    swd_msg m;

    /* oversize: refused before a byte of it is decoded */
    size_t big_len = SWD_WIRE_MAX_MSG + 1;
    uint8_t *big = calloc(1, big_len);
    assert_non_null(big);
    assert_false(swd_gossip_admit(&g, big, big_len, &m));
    free(big);
    assert_int_equal(link_.dropped[SWD_DROP_OVERSIZE], 1);

    uint8_t garbage[64];
    memset(garbage, 0xff, sizeof garbage);
    assert_false(swd_gossip_admit(&g, garbage, sizeof garbage, &m));
    assert_int_equal(link_.dropped[SWD_DROP_MALFORMED], 1);

    size_t len;
    uint8_t *buf = sealed_batch(&peer, &len);
    flip_body(buf, len);
    assert_false(swd_gossip_admit(&g, buf, len, &m));
    assert_int_equal(link_.dropped[SWD_DROP_BAD_SIGNATURE], 1);
    free(buf);

    /* another run's message is signed over another run id */
    uint8_t other_run[SW_ID_BYTES] = {0xee};
    swd_msg b;
    fake_batch(&b, 0, 2, 1, 0.5f);
    assert_int_equal(swd_wire_seal(&b, other_run, peer.pk, peer.sk, &buf, &len), 0);
    assert_false(swd_gossip_admit(&g, buf, len, &m));
    assert_int_equal(link_.dropped[SWD_DROP_BAD_SIGNATURE], 2);
    free(buf);

    /* our own publication echoed back by a peer's relay */
    buf = sealed_batch(&self, &len);
    assert_false(swd_gossip_admit(&g, buf, len, &m));
    assert_int_equal(link_.dropped[SWD_DROP_SELF], 1);
    free(buf);

    assert_int_equal(total_dropped(), 5);
}

/* The size bound comes before the ban: a banned sender's valid envelope,
 * padded past the bound with an unknown field protobuf would skip, counts as
 * oversize (nothing of it is decoded). */
static void test_admit_oversize_first(void **state)
{
    (void)state;
    swd_gossip_ban(&g, peer.pk);
    size_t len;
    uint8_t *buf = sealed_batch(&peer, &len);
    size_t pad = SWD_WIRE_MAX_MSG;
    size_t big_len = len + 1 + 4 + pad;
    uint8_t *big = calloc(1, big_len);
    assert_non_null(big);
    memcpy(big, buf, len);
    uint8_t *q = big + len;
    *q++ = (15u << 3) | 2u; /* field 15, length-delimited */
    size_t v = pad;
    for (; v >= 0x80; v >>= 7)
        *q++ = (uint8_t)(v | 0x80);
    *q++ = (uint8_t)v;
    big_len = (size_t)(q - big) + pad;
    swd_msg m;
    assert_false(swd_gossip_admit(&g, big, big_len, &m));
    assert_int_equal(link_.dropped[SWD_DROP_OVERSIZE], 1);
    assert_int_equal(link_.dropped[SWD_DROP_BANNED], 0);
    free(big);
    free(buf);
}

/* A banned sender costs no signature check: even its forged messages count
 * as banned, not as bad signatures. */
static void test_admit_banned(void **state)
{
    (void)state;
    swd_gossip_ban(&g, peer.pk);
    assert_true(swd_gossip_banned(&g, peer.pk));
    assert_false(swd_gossip_banned(&g, other.pk));
    size_t len;
    uint8_t *buf = sealed_batch(&peer, &len);
    swd_msg m;
    assert_false(swd_gossip_admit(&g, buf, len, &m));
    flip_body(buf, len);
    assert_false(swd_gossip_admit(&g, buf, len, &m));
    assert_int_equal(link_.dropped[SWD_DROP_BANNED], 2);
    assert_int_equal(link_.dropped[SWD_DROP_BAD_SIGNATURE], 0);
    free(buf);

    buf = sealed_batch(&other, &len);
    assert_true(swd_gossip_admit(&g, buf, len, &m));
    swd_msg_fini(&m);
    free(buf);
}

static size_t flood(const uint8_t *buf, size_t len, size_t n)
{
    size_t admitted = 0;
    for (size_t i = 0; i < n; i++) {
        swd_msg m;
        if (swd_gossip_admit(&g, buf, len, &m)) {
            admitted++;
            swd_msg_fini(&m);
        }
    }
    return admitted;
}

static void test_admit_rate_limit(void **state)
{
    (void)state;
    /* a known peer has a bucket of its own */
    assert_non_null(swd_gossip_seen(&g, peer.pk));
    size_t len, olen;
    uint8_t *buf = sealed_batch(&peer, &len);
    uint8_t *obuf = sealed_batch(&other, &olen);

    size_t admitted = flood(buf, len, 1000);
    assert_true(admitted >= (size_t)SWD_GOSSIP_RATE_BURST);
    assert_true(admitted <= (size_t)SWD_GOSSIP_RATE_BURST + 1);
    assert_int_equal(link_.dropped[SWD_DROP_RATE_LIMITED], 1000 - admitted);

    /* the flood does not silence anyone else */
    swd_msg m;
    assert_true(swd_gossip_admit(&g, obuf, olen, &m));
    swd_msg_fini(&m);

    /* a second refills 200 tokens */
    net.now_ms += 1000;
    admitted = flood(buf, len, 1000);
    assert_true(admitted >= (size_t)SWD_GOSSIP_RATE_PER_S);
    assert_true(admitted <= (size_t)SWD_GOSSIP_RATE_PER_S + 1);
    free(buf);
    free(obuf);
}

/* ------------------------------------------------------------ announce */

static void test_on_announce(void **state)
{
    (void)state;
    swd_member_info third;
    memset(&third, 0, sizeof third);
    memcpy(third.id, other.pk, SW_ID_BYTES);
    snprintf(third.pub_addr, sizeof third.pub_addr, "tcp://third:1");
    snprintf(third.sync_addr, sizeof third.sync_addr, "tcp://third:2");
    third.alive = true;
    swd_vv_entry vv = {.count = 42};
    memcpy(vv.origin, peer.pk, SW_ID_BYTES);
    swd_msg m = announce_msg(5, "tcp://peer:1", "tcp://peer:2", &third, 1, &vv, 1);

    const swd_peer *p = announce_from(&peer, &m);
    assert_non_null(p);
    assert_memory_equal(p->id, peer.pk, SW_ID_BYTES);
    assert_int_equal(p->state, SWD_PEER_ALIVE);
    assert_true(p->has_announce);
    assert_int_equal(p->seq, 5);
    assert_string_equal(p->pub_addr, "tcp://peer:1");
    assert_string_equal(p->sync_addr, "tcp://peer:2");
    assert_int_equal(p->n_vv, 1);
    assert_int_equal(p->vv[0].count, 42);
    assert_true(p->subscribed);
    assert_true(subscribed_to("tcp://peer:1"));
    /* the member it gossiped is hearsay: subscribed to, but not alive */
    assert_true(subscribed_to("tcp://third:1"));
    assert_int_equal(fake_count(&net, FAKE_SUBSCRIBE), 2);
    const swd_peer *t = swd_members_find(g.table, other.pk);
    assert_non_null(t);
    assert_int_equal(t->state, SWD_PEER_JOINING);

    /* replays: same seq, lower seq */
    size_t before = net.n_sent;
    assert_null(announce_from(&peer, &m));
    m.u.announce.seq = 4;
    m.u.announce.vv[0].count = 1;
    assert_null(announce_from(&peer, &m));
    assert_int_equal(link_.dropped[SWD_DROP_REPLAY], 2);
    p = swd_members_find(g.table, peer.pk);
    assert_int_equal(p->seq, 5);
    assert_int_equal(p->vv[0].count, 42);
    /* no second subscription to what is already subscribed */
    assert_int_equal(net.n_sent, before);

    m.u.announce.seq = 6;
    assert_non_null(announce_from(&peer, &m));
    assert_int_equal(swd_members_find(g.table, peer.pk)->vv[0].count, 1);
}

static void test_announce_publishes(void **state)
{
    (void)state;
    assert_non_null(announce_simple(&peer, 1, "tcp://peer:1", "tcp://peer:2", NULL, 0));
    swd_gossip_on_hello(&g, other.pk, "tcp://other:1", "tcp://other:2"); /* joining: not listed */
    fake_net_clear(&net);

    swd_vv_entry vv = {.count = 9};
    memcpy(vv.origin, self.pk, SW_ID_BYTES);
    for (uint64_t k = 1; k <= 2; k++) {
        swd_announce a;
        memset(&a, 0, sizeof a);
        a.state = SWD_STATE_TRAINING;
        a.step = 9;
        a.vv = &vv;
        a.n_vv = 1;
        a.loss = 2.0f;
        net.now_ms += 10;
        swd_gossip_announce(&g, &a);
        assert_int_equal(a.seq, SEQ0 + k);
        /* the caller's struct holds no pointer to gossip's stack */
        assert_null(a.members);
        assert_int_equal(a.n_members, 0);
        assert_int_equal(g.last_announce_ms, net.now_ms);

        assert_int_equal(fake_count(&net, FAKE_PUBLISH), k);
        swd_msg got;
        fake_open(fake_last(&net, FAKE_PUBLISH), &got);
        assert_int_equal(got.type, SWD_MSG_ANNOUNCE);
        assert_memory_equal(got.sender, self.pk, SW_ID_BYTES);
        const swd_announce *ga = &got.u.announce;
        assert_int_equal(ga->seq, SEQ0 + k);
        assert_string_equal(ga->pub_addr, "tcp://self:1");
        assert_string_equal(ga->sync_addr, "tcp://self:2");
        assert_int_equal(ga->state, SWD_STATE_TRAINING);
        assert_int_equal(ga->n_vv, 1);
        assert_int_equal(ga->vv[0].count, 9);
        assert_int_equal(ga->n_members, 1);
        assert_memory_equal(ga->members[0].id, peer.pk, SW_ID_BYTES);
        assert_string_equal(ga->members[0].pub_addr, "tcp://peer:1");
        assert_string_equal(ga->members[0].sync_addr, "tcp://peer:2");
        swd_msg_fini(&got);
    }
}

/* ------------------------------------------------------------ leave */

static void test_leave(void **state)
{
    (void)state;
    assert_non_null(announce_simple(&peer, 1, "tcp://peer:1", "tcp://peer:2", NULL, 0));
    swd_msg lv;
    memset(&lv, 0, sizeof lv);
    lv.type = SWD_MSG_LEAVE;
    size_t len;
    uint8_t *buf = fake_seal(&peer, &lv, &len);
    swd_msg got;
    assert_true(swd_gossip_admit(&g, buf, len, &got));
    free(buf);
    assert_int_equal(got.type, SWD_MSG_LEAVE);
    swd_gossip_on_leave(&g, got.sender);
    swd_msg_fini(&got);
    const swd_peer *p = swd_members_find(g.table, peer.pk);
    assert_int_equal(p->state, SWD_PEER_LEFT);

    /* its last sync requests arrive after the Leave */
    net.now_ms += 10;
    swd_gossip_heard(&g, peer.pk);
    assert_int_equal(p->state, SWD_PEER_LEFT);
    /* left peers are not gossiped nor timed out */
    swd_member_info list[4];
    assert_int_equal(swd_gossip_list(&g, list, 4, false), 0);
    net.now_ms += 100 * HB_MS;
    swd_gossip_tick(&g);
    assert_int_equal(p->state, SWD_PEER_LEFT);

    /* a Leave from a stranger records nothing */
    swd_gossip_on_leave(&g, other.pk);
    assert_null(swd_members_find(g.table, other.pk));

    /* it speaks again (restarted): a new announce makes it alive */
    assert_non_null(announce_simple(&peer, 2, "tcp://peer:1", "tcp://peer:2", NULL, 0));
    assert_int_equal(p->state, SWD_PEER_ALIVE);
    /* and any verified published message does too (seen, unlike heard) */
    swd_gossip_on_leave(&g, peer.pk);
    assert_int_equal(p->state, SWD_PEER_LEFT);
    assert_non_null(swd_gossip_seen(&g, peer.pk));
    assert_int_equal(p->state, SWD_PEER_ALIVE);
}

/* ------------------------------------------------------------ failure detection */

static void test_failure_detection(void **state)
{
    (void)state;
    const swd_peer *p = announce_simple(&peer, 1, "tcp://peer:1", "tcp://peer:2", NULL, 0);
    assert_non_null(p);
    swd_member_info hearsay = {.alive = true};
    memcpy(hearsay.id, other.pk, SW_ID_BYTES);
    snprintf(hearsay.pub_addr, sizeof hearsay.pub_addr, "tcp://o:1");
    snprintf(hearsay.sync_addr, sizeof hearsay.sync_addr, "tcp://o:2");
    swd_gossip_welcomed(&g, &hearsay, 1);
    const swd_peer *o = swd_members_find(g.table, other.pk);
    assert_non_null(o);
    assert_int_equal(o->state, SWD_PEER_JOINING);
    uint64_t t0 = net.now_ms;

    net.now_ms = t0 + SUSPECT_AFTER * HB_MS - 1;
    swd_gossip_tick(&g);
    assert_int_equal(p->state, SWD_PEER_ALIVE);
    net.now_ms = t0 + SUSPECT_AFTER * HB_MS;
    swd_gossip_tick(&g);
    assert_int_equal(p->state, SWD_PEER_SUSPECT);
    /* a joining peer never heard from is not suspected, only given up on */
    assert_int_equal(o->state, SWD_PEER_JOINING);
    /* suspect peers are still worth gossiping */
    swd_member_info list[4];
    assert_int_equal(swd_gossip_list(&g, list, 4, false), 1);

    net.now_ms = t0 + DEAD_AFTER * HB_MS - 1;
    swd_gossip_tick(&g);
    assert_int_equal(p->state, SWD_PEER_SUSPECT);
    net.now_ms = t0 + DEAD_AFTER * HB_MS;
    swd_gossip_tick(&g);
    assert_int_equal(p->state, SWD_PEER_DEAD);
    assert_int_equal(o->state, SWD_PEER_DEAD);
    assert_int_equal(swd_gossip_list(&g, list, 4, false), 0);

    /* a sync request from the dead is proof of life */
    swd_gossip_heard(&g, peer.pk);
    assert_int_equal(p->state, SWD_PEER_ALIVE);
    swd_gossip_tick(&g);
    assert_int_equal(p->state, SWD_PEER_ALIVE);
}

/* ------------------------------------------------------------ subscriptions */

static void test_hello_subscribes(void **state)
{
    (void)state;
    swd_gossip_on_hello(&g, peer.pk, "tcp://h:1", "tcp://h:2");
    assert_int_equal(fake_count(&net, FAKE_SUBSCRIBE), 1);
    assert_string_equal(fake_last(&net, FAKE_SUBSCRIBE)->addr, "tcp://h:1");
    const swd_peer *p = swd_members_find(g.table, peer.pk);
    assert_non_null(p);
    assert_true(p->subscribed);
    assert_string_equal(p->sync_addr, "tcp://h:2");

    /* a dial that fails is retried by the next subscribe_all, once */
    net.fail_subscribe = SW_EIO;
    swd_gossip_on_hello(&g, other.pk, "tcp://o:1", "tcp://o:2");
    const swd_peer *o = swd_members_find(g.table, other.pk);
    assert_non_null(o);
    assert_false(o->subscribed);
    assert_int_equal(fake_count(&net, FAKE_SUBSCRIBE), 1);
    net.fail_subscribe = 0;
    swd_gossip_subscribe_all(&g);
    assert_true(o->subscribed);
    assert_int_equal(fake_count(&net, FAKE_SUBSCRIBE), 2);
    assert_string_equal(fake_last(&net, FAKE_SUBSCRIBE)->addr, "tcp://o:1");
    swd_gossip_subscribe_all(&g);
    assert_int_equal(fake_count(&net, FAKE_SUBSCRIBE), 2);

    /* a banned peer is not listened to */
    fake_id banned;
    fake_id_make(&banned);
    swd_gossip_ban(&g, banned.pk);
    swd_gossip_on_hello(&g, banned.pk, "tcp://b:1", "tcp://b:2");
    assert_int_equal(fake_count(&net, FAKE_SUBSCRIBE), 2);
}

/* ------------------------------------------------------------ version vectors */

static uint64_t have_3(void *ctx, const uint8_t *origin)
{
    (void)ctx;
    (void)origin;
    return 3;
}

static void test_all_hold_any_ahead(void **state)
{
    (void)state;
    uint8_t x[SW_ID_BYTES] = {0x42};
    /* nobody announced: nobody to wait for, nobody ahead */
    assert_true(swd_gossip_all_hold(&g, x, 1000));
    assert_false(swd_gossip_any_ahead(&g, have_3, NULL, 0));

    swd_vv_entry va = {.count = 10}, vb = {.count = 5};
    memcpy(va.origin, x, SW_ID_BYTES);
    memcpy(vb.origin, x, SW_ID_BYTES);
    assert_non_null(announce_simple(&peer, 1, "tcp://a:1", "tcp://a:2", &va, 1));
    assert_non_null(announce_simple(&other, 1, "tcp://b:1", "tcp://b:2", &vb, 1));
    /* heard of but never announced: has no say */
    fake_id mute;
    fake_id_make(&mute);
    assert_non_null(swd_gossip_seen(&g, mute.pk));

    assert_true(swd_gossip_all_hold(&g, x, 5));
    assert_false(swd_gossip_all_hold(&g, x, 6));
    uint8_t y[SW_ID_BYTES] = {0x43};
    assert_true(swd_gossip_all_hold(&g, y, 0));
    assert_false(swd_gossip_all_hold(&g, y, 1)); /* absent from their vectors: 0 held */

    assert_true(swd_gossip_any_ahead(&g, have_3, NULL, 0));
    assert_true(swd_gossip_any_ahead(&g, have_3, NULL, 6));  /* 10 > 3 + 6 */
    assert_false(swd_gossip_any_ahead(&g, have_3, NULL, 7)); /* 10 = 3 + 7 */

    /* a banned peer is not waited for */
    swd_gossip_ban(&g, other.pk);
    assert_true(swd_gossip_all_hold(&g, x, 10));
    assert_false(swd_gossip_all_hold(&g, x, 11));

    /* nor a dead one */
    net.now_ms += DEAD_AFTER * HB_MS;
    swd_gossip_tick(&g);
    assert_true(swd_gossip_all_hold(&g, x, 11));
    assert_false(swd_gossip_any_ahead(&g, have_3, NULL, 0));
}

/* ------------------------------------------------------------ list */

static void test_list(void **state)
{
    (void)state;
    swd_member_info out[8];
    assert_int_equal(swd_gossip_list(&g, out, 8, false), 0);
    assert_int_equal(swd_gossip_list(&g, out, 0, true), 0);
    assert_int_equal(swd_gossip_list(&g, out, 8, true), 1);
    assert_memory_equal(out[0].id, self.pk, SW_ID_BYTES);
    assert_string_equal(out[0].pub_addr, "tcp://self:1");
    assert_string_equal(out[0].sync_addr, "tcp://self:2");
    assert_true(out[0].alive);

    assert_non_null(announce_simple(&peer, 1, "tcp://p:1", "tcp://p:2", NULL, 0));
    assert_non_null(announce_simple(&other, 1, "tcp://o:1", "tcp://o:2", NULL, 0));
    /* alive, but no address to give anyone */
    fake_id anon;
    fake_id_make(&anon);
    assert_non_null(swd_gossip_seen(&g, anon.pk));
    fake_id bad;
    fake_id_make(&bad);
    assert_non_null(announce_simple(&bad, 1, "tcp://x:1", "tcp://x:2", NULL, 0));
    swd_gossip_ban(&g, bad.pk);

    memset(out, 0, sizeof out);
    assert_int_equal(swd_gossip_list(&g, out, 8, true), 3);
    assert_memory_equal(out[0].id, self.pk, SW_ID_BYTES);
    for (size_t i = 1; i < 3; i++) {
        assert_true(memcmp(out[i].id, peer.pk, SW_ID_BYTES) == 0 ||
                    memcmp(out[i].id, other.pk, SW_ID_BYTES) == 0);
        assert_true(out[i].alive);
    }
    assert_memory_not_equal(out[1].id, out[2].id, SW_ID_BYTES);
    assert_int_equal(swd_gossip_list(&g, out, 8, false), 2);
    assert_int_equal(swd_gossip_list(&g, out, 2, true), 2);
    assert_memory_equal(out[0].id, self.pk, SW_ID_BYTES);
    assert_int_equal(swd_gossip_list(&g, out, 1, true), 1);
    assert_memory_equal(out[0].id, self.pk, SW_ID_BYTES);
}

static void test_hello_msg(void **state)
{
    (void)state;
    swd_msg m;
    swd_gossip_hello_msg(&g, &m);
    assert_int_equal(m.type, SWD_MSG_HELLO);
    assert_int_equal(m.context, SWD_CTX_JOIN);
    assert_string_equal(m.u.hello.pub_addr, "tcp://self:1");
    assert_string_equal(m.u.hello.sync_addr, "tcp://self:2");
}

int main(void)
{
    if (sodium_init() < 0) return 1;
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_admit_valid),
        T(test_admit_drops),
        T(test_admit_oversize_first),
        T(test_admit_banned),
        T(test_admit_rate_limit),
        T(test_on_announce),
        T(test_announce_publishes),
        T(test_leave),
        T(test_failure_detection),
        T(test_hello_subscribes),
        T(test_all_hold_any_ahead),
        T(test_list),
        T(test_hello_msg),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
