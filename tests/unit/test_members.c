#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#include <cmocka.h>

#include "members.h"
#include "sw_error.h"

/* heartbeat 100 ms: suspect after 300 ms of silence, dead after 1000 ms */
static const swd_members_opts opts = {
    .heartbeat_ms = 100,
    .suspect_after = 3,
    .dead_after = 10,
    .rate_per_s = 10.0,
    .rate_burst = 3.0,
};

/* Distinct, well-spread ids: splitmix64 of n. */
static void make_id(uint8_t id[SW_ID_BYTES], uint64_t n)
{
    uint64_t x = n * 4 + 1;
    for (size_t i = 0; i < SW_ID_BYTES; i += 8) {
        uint64_t z = (x += UINT64_C(0x9E3779B97F4A7C15));
        z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
        z ^= z >> 31;
        memcpy(id + i, &z, 8);
    }
}

static uint8_t self_id[SW_ID_BYTES];

static swd_members *new_table(void)
{
    make_id(self_id, 999999);
    swd_members *m;
    assert_int_equal(swd_members_alloc(&opts, self_id, &m), 0);
    return m;
}

typedef struct change_log {
    size_t n;
    const swd_peer *peer[16];
    swd_peer_state from[16], to[16];
} change_log;

static void log_change(void *ctx, const swd_peer *p, swd_peer_state from)
{
    change_log *l = ctx;
    assert_true(l->n < 16);
    l->peer[l->n] = p;
    l->from[l->n] = from;
    l->to[l->n] = p->state;
    l->n++;
}

static void test_alloc_rejects_bad_opts(void **state)
{
    (void)state;
    uint8_t self[SW_ID_BYTES] = {0};
    swd_members *m = (swd_members *)&m;
    swd_members_opts o = opts;
    o.heartbeat_ms = 0;
    assert_int_equal(swd_members_alloc(&o, self, &m), SW_EINVAL);
    assert_null(m);
    o = opts;
    o.dead_after = o.suspect_after;
    assert_int_equal(swd_members_alloc(&o, self, &m), SW_EINVAL);
    o = opts;
    o.rate_burst = 0.5;
    assert_int_equal(swd_members_alloc(&o, self, &m), SW_EINVAL);
    o = opts;
    o.rate_per_s = NAN;
    assert_int_equal(swd_members_alloc(&o, self, &m), SW_EINVAL);
    swd_members_free(NULL);
}

static void test_state_names(void **state)
{
    (void)state;
    assert_string_equal(swd_peer_state_name(SWD_PEER_JOINING), "joining");
    assert_string_equal(swd_peer_state_name(SWD_PEER_ALIVE), "alive");
    assert_string_equal(swd_peer_state_name(SWD_PEER_SUSPECT), "suspect");
    assert_string_equal(swd_peer_state_name(SWD_PEER_DEAD), "dead");
    assert_string_equal(swd_peer_state_name(SWD_PEER_LEFT), "left");
}

static void test_alive_suspect_dead_alive(void **state)
{
    (void)state;
    swd_members *m = new_table();
    uint8_t a[SW_ID_BYTES];
    make_id(a, 1);
    swd_peer *p = swd_members_add(m, a, "tcp://a:1", "tcp://a:2", false, 0);
    assert_non_null(p);
    assert_int_equal(p->state, SWD_PEER_JOINING);
    assert_string_equal(p->pub_addr, "tcp://a:1");
    assert_ptr_equal(swd_members_seen(m, a, 50), p);
    assert_int_equal(p->state, SWD_PEER_ALIVE);
    assert_int_equal(p->last_seen_ms, 50);
    assert_int_equal(p->state_since_ms, 50);

    change_log l = {0};
    swd_members_tick(m, 349, log_change, &l); /* 299 ms silent */
    assert_int_equal(l.n, 0);
    assert_int_equal(p->state, SWD_PEER_ALIVE);
    swd_members_tick(m, 350, log_change, &l);
    assert_int_equal(l.n, 1);
    assert_ptr_equal(l.peer[0], p);
    assert_int_equal(l.from[0], SWD_PEER_ALIVE);
    assert_int_equal(l.to[0], SWD_PEER_SUSPECT);
    assert_int_equal(p->state_since_ms, 350);
    swd_members_tick(m, 1049, log_change, &l);
    assert_int_equal(l.n, 1);
    swd_members_tick(m, 1050, log_change, &l);
    assert_int_equal(l.n, 2);
    assert_int_equal(l.from[1], SWD_PEER_SUSPECT);
    assert_int_equal(l.to[1], SWD_PEER_DEAD);
    swd_members_tick(m, 5000, log_change, &l); /* dead stays dead, no repeat */
    assert_int_equal(l.n, 2);

    /* Any verified message brings it back. */
    swd_members_seen(m, a, 6000);
    assert_int_equal(p->state, SWD_PEER_ALIVE);
    assert_int_equal(p->state_since_ms, 6000);
    swd_members_seen(m, a, 6100); /* no change: state_since kept */
    assert_int_equal(p->state_since_ms, 6000);
    assert_int_equal(p->last_seen_ms, 6100);

    /* A long silence goes straight from alive to dead in one change. */
    swd_members_tick(m, 7100, log_change, &l);
    assert_int_equal(l.n, 3);
    assert_int_equal(l.from[2], SWD_PEER_ALIVE);
    assert_int_equal(l.to[2], SWD_PEER_DEAD);

    /* fn may be NULL. */
    swd_members_seen(m, a, 8000);
    swd_members_tick(m, 8300, NULL, NULL);
    assert_int_equal(p->state, SWD_PEER_SUSPECT);
    swd_members_free(m);
}

static void test_leave_and_joining_timeout(void **state)
{
    (void)state;
    swd_members *m = new_table();
    uint8_t a[SW_ID_BYTES], b[SW_ID_BYTES], c[SW_ID_BYTES];
    make_id(a, 1);
    make_id(b, 2);
    make_id(c, 3);
    swd_peer *pa = swd_members_seen(m, a, 0);
    swd_peer *pb = swd_members_add(m, b, NULL, NULL, false, 100);
    assert_non_null(pa);
    assert_non_null(pb);
    swd_members_leave(m, a, 10);
    assert_int_equal(pa->state, SWD_PEER_LEFT);
    assert_int_equal(pa->state_since_ms, 10);
    swd_members_leave(m, c, 10); /* unknown: not added */
    assert_null(swd_members_find(m, c));
    swd_members_leave(m, self_id, 10);
    assert_int_equal(swd_members_count(m), 2);

    change_log l = {0};
    swd_members_tick(m, 1099, log_change, &l);
    assert_int_equal(l.n, 0);
    assert_int_equal(pb->state, SWD_PEER_JOINING); /* never suspect */
    swd_members_tick(m, 1100, log_change, &l);
    assert_int_equal(l.n, 1);
    assert_ptr_equal(l.peer[0], pb);
    assert_int_equal(l.from[0], SWD_PEER_JOINING);
    assert_int_equal(l.to[0], SWD_PEER_DEAD);
    assert_int_equal(pa->state, SWD_PEER_LEFT); /* left stays left */

    /* Left until it speaks again. */
    swd_members_seen(m, a, 20000);
    assert_int_equal(pa->state, SWD_PEER_ALIVE);

    size_t counts[5];
    swd_members_add(m, c, NULL, NULL, false, 20000);
    swd_members_count_states(m, counts);
    assert_int_equal(counts[SWD_PEER_JOINING], 1);
    assert_int_equal(counts[SWD_PEER_ALIVE], 1);
    assert_int_equal(counts[SWD_PEER_SUSPECT], 0);
    assert_int_equal(counts[SWD_PEER_DEAD], 1);
    assert_int_equal(counts[SWD_PEER_LEFT], 0);
    swd_members_free(m);
}

static void test_self_never_added(void **state)
{
    (void)state;
    swd_members *m = new_table();
    assert_null(swd_members_add(m, self_id, "tcp://me:1", "", false, 0));
    assert_null(swd_members_seen(m, self_id, 0));
    assert_null(swd_members_find(m, self_id));
    swd_announce a = {.seq = 1, .state = SWD_STATE_TRAINING};
    swd_drop drop = SWD_DROP_COUNT;
    assert_false(swd_members_announce(m, self_id, &a, 0, &drop));
    assert_int_equal(drop, SWD_DROP_SELF);
    assert_int_equal(swd_members_count(m), 0);
    swd_members_free(m);
}

static void test_addresses(void **state)
{
    (void)state;
    swd_members *m = new_table();
    uint8_t a[SW_ID_BYTES];
    make_id(a, 1);
    swd_peer *p = swd_members_add(m, a, "", NULL, false, 0);
    assert_string_equal(p->pub_addr, "");
    assert_string_equal(p->sync_addr, "");
    /* empty ones are filled, known ones kept unless replace_addrs */
    swd_members_add(m, a, "tcp://x:1", "tcp://x:2", false, 0);
    assert_string_equal(p->pub_addr, "tcp://x:1");
    swd_members_add(m, a, "tcp://y:1", "", false, 0);
    assert_string_equal(p->pub_addr, "tcp://x:1");
    swd_members_add(m, a, "tcp://y:1", "", true, 0);
    assert_string_equal(p->pub_addr, "tcp://y:1");
    assert_string_equal(p->sync_addr, "tcp://x:2"); /* empty never replaces */
    /* an address over the bound is not stored, not truncated */
    char long_addr[SWD_WIRE_MAX_ADDR + 2];
    memset(long_addr, 'a', sizeof long_addr - 1);
    long_addr[sizeof long_addr - 1] = '\0';
    swd_members_add(m, a, long_addr, NULL, true, 0);
    assert_string_equal(p->pub_addr, "tcp://y:1");
    long_addr[SWD_WIRE_MAX_ADDR] = '\0'; /* exactly the bound: fine */
    swd_members_add(m, a, long_addr, NULL, true, 0);
    assert_int_equal(strlen(p->pub_addr), SWD_WIRE_MAX_ADDR);
    swd_members_free(m);
}

static void test_announce_copies_and_replay(void **state)
{
    (void)state;
    swd_members *m = new_table();
    uint8_t a[SW_ID_BYTES];
    make_id(a, 1);
    swd_vv_entry vv[3], dvv[2];
    for (size_t i = 0; i < 3; i++) {
        make_id(vv[i].origin, 100 + i);
        vv[i].count = 10 * (i + 1);
    }
    for (size_t i = 0; i < 2; i++) {
        make_id(dvv[i].origin, 200 + i);
        dvv[i].count = 7 + i;
    }
    swd_announce an = {
        .seq = 5,
        .pub_addr = "tcp://a:1",
        .sync_addr = "tcp://a:2",
        .state = SWD_STATE_TRAINING,
        .step = 42,
        .n_vv = 3,
        .vv = vv,
        .ledger_updates = 60,
        .has_digest = true,
        .n_digest_vv = 2,
        .digest_vv = dvv,
        .loss = 3.5f,
    };
    memset(an.digest, 0xab, SW_ID_BYTES);
    swd_peer *p = swd_members_seen(m, a, 0);
    swd_drop drop = SWD_DROP_COUNT;
    assert_true(swd_members_announce(m, a, &an, 0, &drop));
    assert_int_equal(drop, SWD_DROP_COUNT); /* untouched on success */
    assert_true(p->has_announce);
    assert_int_equal(p->seq, 5);
    assert_int_equal(p->node_state, SWD_STATE_TRAINING);
    assert_int_equal(p->step, 42);
    assert_int_equal(p->ledger_updates, 60);
    assert_true(p->loss == 3.5f);
    assert_true(p->has_digest);
    assert_int_equal(p->digest[31], 0xab);
    assert_string_equal(p->pub_addr, "tcp://a:1");
    assert_string_equal(p->sync_addr, "tcp://a:2");
    assert_int_equal(p->n_vv, 3);
    assert_int_equal(p->n_digest_vv, 2);
    /* deep copies: the message's arrays can go away */
    assert_ptr_not_equal(p->vv, vv);
    assert_ptr_not_equal(p->digest_vv, dvv);
    vv[1].count = 999;
    dvv[0].count = 999;
    assert_int_equal(p->vv[1].count, 20);
    assert_memory_equal(p->vv[2].origin, vv[2].origin, SW_ID_BYTES);
    assert_int_equal(p->digest_vv[0].count, 7);

    /* replays: equal and lower seq change nothing */
    swd_announce old = an;
    old.step = 1;
    old.pub_addr[0] = '\0';
    assert_false(swd_members_announce(m, a, &old, 10, &drop));
    assert_int_equal(drop, SWD_DROP_REPLAY);
    old.seq = 4;
    drop = SWD_DROP_COUNT;
    assert_false(swd_members_announce(m, a, &old, 10, &drop));
    assert_int_equal(drop, SWD_DROP_REPLAY);
    assert_int_equal(p->step, 42);
    assert_int_equal(p->seq, 5);

    /* a newer one replaces the arrays (old ones freed: ASan checks), keeps
     * addresses it leaves empty */
    swd_announce next = {
        .seq = 6, .state = SWD_STATE_DONE, .step = 50, .n_vv = 1, .vv = vv, .loss = NAN};
    assert_true(swd_members_announce(m, a, &next, 20, NULL));
    assert_int_equal(p->n_vv, 1);
    assert_int_equal(p->vv[0].count, 10);
    assert_int_equal(p->n_digest_vv, 0);
    assert_null(p->digest_vv);
    assert_false(p->has_digest);
    assert_int_equal(p->node_state, SWD_STATE_DONE);
    assert_true(isnan(p->loss));
    assert_string_equal(p->pub_addr, "tcp://a:1");
    next.seq = 7;
    next.n_vv = 0;
    next.vv = NULL;
    assert_true(swd_members_announce(m, a, &next, 30, NULL));
    assert_null(p->vv);
    assert_int_equal(p->n_vv, 0);

    /* over the wire bound: refused */
    next.seq = 8;
    next.n_vv = SWD_WIRE_MAX_VV + 1;
    next.vv = vv; /* never read */
    assert_false(swd_members_announce(m, a, &next, 40, &drop));
    assert_int_equal(drop, SWD_DROP_BAD_FIELD);
    assert_int_equal(p->seq, 7);

    /* leave the last arrays in place: swd_members_free must free them */
    next.seq = 9;
    next.n_vv = 3;
    next.digest_vv = dvv;
    next.n_digest_vv = 2;
    assert_true(swd_members_announce(m, a, &next, 50, NULL));
    swd_members_free(m);
}

static void test_gossip_adds_unknown_only(void **state)
{
    (void)state;
    swd_members *m = new_table();
    uint8_t a[SW_ID_BYTES], b[SW_ID_BYTES];
    make_id(a, 1);
    make_id(b, 2);
    swd_peer *pa = swd_members_seen(m, a, 0);
    swd_members_add(m, a, "tcp://a:1", "tcp://a:2", false, 0);

    swd_member_info list[3];
    memset(list, 0, sizeof list);
    memcpy(list[0].id, self_id, SW_ID_BYTES);
    strcpy(list[0].pub_addr, "tcp://me:1");
    list[0].alive = true;
    memcpy(list[1].id, a, SW_ID_BYTES);
    strcpy(list[1].pub_addr, "tcp://evil:1");
    strcpy(list[1].sync_addr, "tcp://evil:2");
    list[1].alive = false;
    memcpy(list[2].id, b, SW_ID_BYTES);
    strcpy(list[2].pub_addr, "tcp://b:1");
    strcpy(list[2].sync_addr, "tcp://b:2");
    list[2].alive = true;

    /* through an announce from a third peer */
    uint8_t c[SW_ID_BYTES];
    make_id(c, 3);
    swd_members_seen(m, c, 10);
    swd_announce an = {.seq = 1, .state = SWD_STATE_TRAINING, .n_members = 3, .members = list};
    assert_true(swd_members_announce(m, c, &an, 10, NULL));

    assert_int_equal(swd_members_count(m), 3); /* a, c, b; never self */
    assert_null(swd_members_find(m, self_id));
    assert_int_equal(pa->state, SWD_PEER_ALIVE); /* hearsay changes nothing */
    assert_string_equal(pa->pub_addr, "tcp://a:1");
    assert_string_equal(pa->sync_addr, "tcp://a:2");
    swd_peer *pb = swd_members_find(m, b);
    assert_non_null(pb);
    assert_int_equal(pb->state, SWD_PEER_JOINING); /* "alive" is hearsay */
    assert_int_equal(pb->added_ms, 10);
    assert_int_equal(pb->last_seen_ms, 0);
    assert_string_equal(pb->pub_addr, "tcp://b:1");
    assert_string_equal(pb->sync_addr, "tcp://b:2");

    /* directly (a Welcome); known ones untouched */
    swd_members_gossip(m, list, 3, 20);
    assert_int_equal(swd_members_count(m), 3);
    assert_int_equal(pb->added_ms, 10);
    swd_members_free(m);
}

static void test_ban(void **state)
{
    (void)state;
    swd_members *m = new_table();
    uint8_t a[SW_ID_BYTES], b[SW_ID_BYTES];
    make_id(a, 1);
    make_id(b, 2);
    assert_false(swd_members_banned(m, a));
    swd_members_ban(m, a, 0); /* unknown: added, banned */
    assert_true(swd_members_banned(m, a));
    assert_false(swd_members_banned(m, b));
    swd_peer *pa = swd_members_find(m, a);
    assert_non_null(pa);
    assert_true(pa->banned);

    swd_members_seen(m, a, 5);
    assert_true(pa->banned);
    swd_member_info info = {.alive = true};
    memcpy(info.id, a, SW_ID_BYTES);
    swd_members_gossip(m, &info, 1, 6);
    assert_true(swd_members_banned(m, a));
    swd_announce an = {.seq = 1, .state = SWD_STATE_TRAINING, .step = 3};
    swd_drop drop = SWD_DROP_COUNT;
    assert_false(swd_members_announce(m, a, &an, 7, &drop));
    assert_int_equal(drop, SWD_DROP_BANNED);
    assert_false(pa->has_announce);

    /* a known peer can be banned too */
    swd_members_seen(m, b, 0);
    swd_members_ban(m, b, 1);
    assert_true(swd_members_banned(m, b));
    swd_members_free(m);
}

static void test_rate_limit(void **state)
{
    (void)state;
    swd_members *m = new_table();
    uint8_t a[SW_ID_BYTES], b[SW_ID_BYTES], u1[SW_ID_BYTES], u2[SW_ID_BYTES];
    make_id(a, 1);
    make_id(b, 2);
    make_id(u1, 3);
    make_id(u2, 4);
    swd_members_seen(m, a, 1000);
    swd_members_seen(m, b, 1000);
    /* burst of 3, then empty */
    for (int i = 0; i < 3; i++)
        assert_true(swd_members_rate_ok(m, a, 1000));
    assert_false(swd_members_rate_ok(m, a, 1000));
    /* per peer: b has its own bucket */
    assert_true(swd_members_rate_ok(m, b, 1000));
    /* 10/s: one token per 100 ms */
    assert_false(swd_members_rate_ok(m, a, 1050));
    assert_true(swd_members_rate_ok(m, a, 1100));
    assert_false(swd_members_rate_ok(m, a, 1100));
    /* refill caps at the burst */
    for (int i = 0; i < 3; i++)
        assert_true(swd_members_rate_ok(m, a, 60000));
    assert_false(swd_members_rate_ok(m, a, 60000));

    /* unknown senders share one bucket, full at start */
    assert_true(swd_members_rate_ok(m, u1, 500));
    assert_true(swd_members_rate_ok(m, u2, 500));
    assert_true(swd_members_rate_ok(m, u1, 500));
    assert_false(swd_members_rate_ok(m, u2, 500));
    assert_false(swd_members_rate_ok(m, u1, 500));
    assert_true(swd_members_rate_ok(m, u2, 600));
    assert_null(swd_members_find(m, u1)); /* rate checks add nobody */
    swd_members_free(m);
}

static void test_forget_when_full(void **state)
{
    (void)state;
    swd_members *m = new_table();
    uint8_t id[SW_ID_BYTES];
    /* all added at 0; peer 5 last heard at 1, peer 6 at 2, the rest at 1500 */
    for (uint64_t i = 0; i < SWD_MEMBERS_MAX; i++) {
        make_id(id, i);
        assert_non_null(swd_members_add(m, id, NULL, NULL, false, 0));
    }
    assert_int_equal(swd_members_count(m), SWD_MEMBERS_MAX);
    uint8_t x[SW_ID_BYTES];
    make_id(x, 100000);
    assert_null(swd_members_add(m, x, NULL, NULL, false, 0)); /* all joining */
    assert_null(swd_members_seen(m, x, 0));

    make_id(id, 5);
    swd_members_seen(m, id, 1);
    make_id(id, 6);
    swd_members_seen(m, id, 2);
    for (uint64_t i = 0; i < SWD_MEMBERS_MAX; i++) {
        if (i == 5 || i == 6) continue;
        make_id(id, i);
        swd_members_seen(m, id, 1500);
    }
    make_id(id, 7);
    swd_peer *p7 = swd_members_find(m, id);
    swd_members_tick(m, 1500, NULL, NULL);
    size_t counts[5];
    swd_members_count_states(m, counts);
    assert_int_equal(counts[SWD_PEER_DEAD], 2);
    assert_int_equal(counts[SWD_PEER_ALIVE], SWD_MEMBERS_MAX - 2);

    /* the longest silent dead one goes first */
    assert_non_null(swd_members_add(m, x, NULL, NULL, false, 1600));
    make_id(id, 5);
    assert_null(swd_members_find(m, id));
    make_id(id, 6);
    assert_non_null(swd_members_find(m, id));
    assert_int_equal(swd_members_count(m), SWD_MEMBERS_MAX);

    /* a banned dead one is kept (forgetting it would lift the ban) */
    swd_members_ban(m, id, 1600);
    uint8_t y[SW_ID_BYTES];
    make_id(y, 100001);
    assert_null(swd_members_add(m, y, NULL, NULL, false, 1600));
    assert_true(swd_members_banned(m, id));

    /* left ones can go */
    make_id(id, 9);
    swd_members_leave(m, id, 1700);
    assert_non_null(swd_members_seen(m, y, 1700));
    assert_null(swd_members_find(m, id));
    assert_int_equal(swd_members_count(m), SWD_MEMBERS_MAX);

    /* pointers stay valid across forgets, and every remaining id is found */
    make_id(id, 7);
    assert_ptr_equal(swd_members_find(m, id), p7);
    size_t found = 0;
    for (uint64_t i = 0; i < SWD_MEMBERS_MAX; i++) {
        make_id(id, i);
        swd_peer *p = swd_members_find(m, id);
        if (i == 5 || i == 9) {
            assert_null(p);
        } else {
            assert_non_null(p);
            assert_memory_equal(p->id, id, SW_ID_BYTES);
            found++;
        }
    }
    assert_int_equal(found, SWD_MEMBERS_MAX - 2);
    /* swd_members_at covers each peer exactly once */
    size_t banned = 0;
    for (size_t i = 0; i < swd_members_count(m); i++) {
        const swd_peer *p = swd_members_at_const(m, i);
        assert_ptr_equal(swd_members_find(m, p->id), swd_members_at(m, i));
        banned += p->banned;
    }
    assert_int_equal(banned, 1);
    swd_members_free(m);
}

/* Thousands of forgets: the id index must still find every peer. */
static void test_churn_keeps_index(void **state)
{
    (void)state;
    swd_members *m = new_table();
    uint8_t id[SW_ID_BYTES];
    for (uint64_t i = 0; i < SWD_MEMBERS_MAX; i++) {
        make_id(id, i);
        assert_non_null(swd_members_add(m, id, NULL, NULL, false, 0));
    }
    swd_members_tick(m, 1000, NULL, NULL); /* all joining ones dead */
    for (uint64_t i = 0; i < SWD_MEMBERS_MAX; i++) {
        make_id(id, SWD_MEMBERS_MAX + i);
        assert_non_null(swd_members_seen(m, id, 1000 + i));
        assert_int_equal(swd_members_count(m), SWD_MEMBERS_MAX);
        if (i % 512 != 511) continue;
        for (size_t k = 0; k < swd_members_count(m); k++) {
            swd_peer *p = swd_members_at(m, k);
            assert_ptr_equal(swd_members_find(m, p->id), p);
        }
    }
    for (uint64_t i = 0; i < 2 * SWD_MEMBERS_MAX; i++) {
        make_id(id, i);
        if (i < SWD_MEMBERS_MAX)
            assert_null(swd_members_find(m, id));
        else
            assert_non_null(swd_members_find(m, id));
    }
    swd_members_free(m);
}

/* held_steps for the pacing tests: held[i] for peer make_id(i), i < 8 */
typedef struct held_ctx {
    uint64_t held[8];
    unsigned calls;
} held_ctx;

static uint64_t held_fn(void *ctx, const uint8_t id[SW_ID_BYTES])
{
    held_ctx *h = ctx;
    h->calls++;
    uint8_t want[SW_ID_BYTES];
    for (uint64_t i = 0; i < 8; i++) {
        make_id(want, i);
        if (memcmp(want, id, SW_ID_BYTES) == 0) return h->held[i];
    }
    fail_msg("held_steps asked about an unknown peer");
    return 0;
}

static swd_peer *pace_peer(swd_members *m, uint64_t i, swd_node_state ns, uint64_t now)
{
    uint8_t id[SW_ID_BYTES];
    make_id(id, i);
    swd_peer *p = swd_members_seen(m, id, now);
    swd_announce an = {.seq = now + 1, .state = ns};
    assert_true(swd_members_announce(m, id, &an, now, NULL));
    return p;
}

static void test_pace_lockstep_and_lagging(void **state)
{
    (void)state;
    swd_members *m = new_table();
    held_ctx h = {.held = {3, 5}};
    /* no peers: nothing constrains */
    assert_int_equal(swd_members_pace(m, 0, 0, 1000, held_fn, &h, 0), UINT64_MAX);
    swd_peer *p0 = pace_peer(m, 0, SWD_STATE_TRAINING, 0);
    swd_peer *p1 = pace_peer(m, 1, SWD_STATE_TRAINING, 0);

    /* lockstep: step s needs every peer's steps below s */
    assert_int_equal(swd_members_pace(m, 3, 0, 1000, held_fn, &h, 100), 3);
    assert_int_equal(p0->behind_since_ms, 0);
    assert_false(p0->lagging);
    /* max_staleness 2 allows two more */
    assert_int_equal(swd_members_pace(m, 3, 2, 1000, held_fn, &h, 100), 5);

    /* at step 4 peer 0 (holds 3) is behind; after lag_timeout it is lagging */
    assert_int_equal(swd_members_pace(m, 4, 0, 1000, held_fn, &h, 100), 3);
    assert_int_equal(p0->behind_since_ms, 100);
    assert_false(p1->behind_since_ms);
    assert_int_equal(swd_members_pace(m, 4, 0, 1000, held_fn, &h, 1099), 3);
    assert_false(p0->lagging);
    assert_int_equal(swd_members_pace(m, 4, 0, 1000, held_fn, &h, 1100), 5);
    assert_true(p0->lagging);
    assert_int_equal(swd_members_pace(m, 5, 0, 1000, held_fn, &h, 1200), 5);
    assert_true(p0->lagging);

    /* caught up: waited for again */
    h.held[0] = 5;
    assert_int_equal(swd_members_pace(m, 5, 0, 1000, held_fn, &h, 1300), 5);
    assert_false(p0->lagging);
    assert_int_equal(p0->behind_since_ms, 0);
    /* behind again: a fresh timer */
    assert_int_equal(swd_members_pace(m, 6, 0, 1000, held_fn, &h, 1400), 5);
    assert_int_equal(p0->behind_since_ms, 1400);
    assert_false(p0->lagging);

    /* lag_timeout 0: a peer behind is not waited for at all */
    assert_int_equal(swd_members_pace(m, 6, 0, 0, held_fn, &h, 1500), UINT64_MAX);
    assert_true(p0->lagging);
    assert_true(p1->lagging);
    swd_members_free(m);
}

static void test_pace_only_alive_training_constrain(void **state)
{
    (void)state;
    swd_members *m = new_table();
    held_ctx h = {.held = {0, 0, 0, 0, 0, 0, 10, 0}};
    pace_peer(m, 0, SWD_STATE_DONE, 0);
    pace_peer(m, 1, SWD_STATE_PAUSED, 0);
    pace_peer(m, 2, SWD_STATE_SYNCING, 0);
    swd_peer *p3 = pace_peer(m, 3, SWD_STATE_TRAINING, 0);
    pace_peer(m, 4, SWD_STATE_TRAINING, 0);
    uint8_t id[SW_ID_BYTES];
    make_id(id, 4);
    swd_members_ban(m, id, 0);
    make_id(id, 5);
    swd_members_add(m, id, NULL, NULL, false, 0); /* joining, no announce */
    make_id(id, 7);
    swd_members_seen(m, id, 0); /* alive, no announce */
    swd_peer *p6 = pace_peer(m, 6, SWD_STATE_TRAINING, 0);

    /* only peer 3 (holds 0) and peer 6 (holds 10) constrain */
    h.calls = 0;
    assert_int_equal(swd_members_pace(m, 0, 1, 1000, held_fn, &h, 10), 1);
    assert_int_equal(h.calls, 2);

    /* peer 3 suspect: no longer waited for */
    swd_members_seen(m, p6->id, 350);
    swd_members_tick(m, 350, NULL, NULL);
    assert_int_equal(p3->state, SWD_PEER_SUSPECT);
    assert_int_equal(p6->state, SWD_PEER_ALIVE);
    assert_int_equal(swd_members_pace(m, 0, 1, 1000, held_fn, &h, 360), 11);

    /* peer 6 leaves: none constrain */
    swd_members_leave(m, p6->id, 400);
    assert_int_equal(swd_members_pace(m, 0, 1, 1000, held_fn, &h, 410), UINT64_MAX);

    /* a huge staleness saturates instead of wrapping */
    swd_members_seen(m, p6->id, 500);
    assert_int_equal(swd_members_pace(m, 0, UINT64_MAX - 1, 1000, held_fn, &h, 510), UINT64_MAX);
    swd_members_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alloc_rejects_bad_opts),
        cmocka_unit_test(test_state_names),
        cmocka_unit_test(test_alive_suspect_dead_alive),
        cmocka_unit_test(test_leave_and_joining_timeout),
        cmocka_unit_test(test_self_never_added),
        cmocka_unit_test(test_addresses),
        cmocka_unit_test(test_announce_copies_and_replay),
        cmocka_unit_test(test_gossip_adds_unknown_only),
        cmocka_unit_test(test_ban),
        cmocka_unit_test(test_rate_limit),
        cmocka_unit_test(test_forget_when_full),
        cmocka_unit_test(test_churn_keeps_index),
        cmocka_unit_test(test_pace_lockstep_and_lagging),
        cmocka_unit_test(test_pace_only_alive_training_constrain),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
