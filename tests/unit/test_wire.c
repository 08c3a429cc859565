/*
 * wire: round trips of every message, contexts and run binding, truncated,
 * corrupted and oversize input, out-of-bounds fields signed correctly (so
 * the bound check, not the signature, must reject them), the unpack budget,
 * and the bytes an UpdateBatch of 64 steps costs on the wire.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "swarm.pb-c.h"
#include "wire.h"

/* nng's TCP transport prefixes every message with an 8-byte length. */
#define NNG_TCP_FRAME_BYTES 8

static uint8_t pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
static uint8_t run_a[SW_ID_BYTES], run_b[SW_ID_BYTES];

static uint64_t rng_state = 0x9e3779b97f4a7c15u;
static uint64_t rng_next(void)
{
    /* xorshift64*: reproducible across runs */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1du;
}

static int setup(void **state)
{
    (void)state;
    if (sodium_init() < 0) return -1;
    uint8_t seed[crypto_sign_SEEDBYTES];
    for (size_t i = 0; i < sizeof seed; i++)
        seed[i] = (uint8_t)(7 * i + 1);
    crypto_sign_seed_keypair(pk, sk, seed);
    for (int i = 0; i < SW_ID_BYTES; i++) {
        run_a[i] = (uint8_t)(0x10 + i);
        run_b[i] = (uint8_t)(0x10 + i);
    }
    run_b[31] ^= 1;
    return 0;
}

static void fill_id(uint8_t id[SW_ID_BYTES], uint8_t tag)
{
    for (int i = 0; i < SW_ID_BYTES; i++)
        id[i] = (uint8_t)(tag * 31 + i);
}

static void fill_members(swd_member_info **out, size_t n, size_t addr_len)
{
    swd_member_info *v = n ? calloc(n, sizeof *v) : NULL;
    for (size_t i = 0; i < n; i++) {
        fill_id(v[i].id, (uint8_t)(100 + i));
        if (addr_len == 0) {
            snprintf(v[i].pub_addr, sizeof v[i].pub_addr, "tcp://10.0.0.%zu:7701", i);
            snprintf(v[i].sync_addr, sizeof v[i].sync_addr, "tcp://10.0.0.%zu:7702", i);
        } else {
            memset(v[i].pub_addr, 'p', addr_len);
            memset(v[i].sync_addr, 's', addr_len);
        }
        v[i].alive = i % 2 == 0;
    }
    *out = v;
}

static void fill_vv(swd_vv_entry **out, size_t n, uint64_t base)
{
    swd_vv_entry *v = n ? calloc(n, sizeof *v) : NULL;
    for (size_t i = 0; i < n; i++) {
        fill_id(v[i].origin, (uint8_t)(i + base));
        v[i].origin[0] = (uint8_t)(i >> 8);
        v[i].count = base + i * 1000003u;
    }
    *out = v;
}

static void make_batch(swd_msg *m, uint64_t first_step, size_t n)
{
    memset(m, 0, sizeof *m);
    m->type = SWD_MSG_BATCH;
    m->u.batch.first_step = first_step;
    m->u.batch.scale = 0.0123f;
    m->u.batch.n = n;
    for (size_t i = 0; i < n; i++)
        m->u.batch.q[i] = (int8_t)((int)(rng_next() % 255) - 127);
}

static void make_announce(swd_msg *m, size_t n_vv, size_t n_dvv, size_t n_members, size_t addr_len)
{
    memset(m, 0, sizeof *m);
    m->type = SWD_MSG_ANNOUNCE;
    swd_announce *a = &m->u.announce;
    a->seq = 77;
    snprintf(a->pub_addr, sizeof a->pub_addr, "tcp://127.0.0.1:7701");
    snprintf(a->sync_addr, sizeof a->sync_addr, "tcp://127.0.0.1:7702");
    a->state = SWD_STATE_TRAINING;
    a->step = 123456789012u;
    a->ledger_updates = 4242;
    a->has_digest = true;
    fill_id(a->digest, 9);
    a->loss = 3.25f;
    a->n_vv = n_vv;
    fill_vv(&a->vv, n_vv, 1);
    a->n_digest_vv = n_dvv;
    fill_vv(&a->digest_vv, n_dvv, 5);
    a->n_members = n_members;
    fill_members(&a->members, n_members, addr_len);
}

static void make_welcome(swd_msg *m)
{
    memset(m, 0, sizeof *m);
    m->type = SWD_MSG_WELCOME;
    m->context = SWD_CTX_JOIN;
    const char *spec = "{\"base_model\":\"ab\",\"format\":1}";
    m->u.welcome.run_spec = strdup(spec);
    m->u.welcome.run_spec_len = strlen(spec);
    m->u.welcome.n_members = 3;
    fill_members(&m->u.welcome.members, 3, 0);
    m->u.welcome.n_vv = 2;
    fill_vv(&m->u.welcome.vv, 2, 3);
    m->u.welcome.ledger_updates = 99;
    m->u.welcome.snapshot_updates = 64;
    m->u.welcome.snapshot_bytes = 1u << 30;
}

/* Seals m (which must be accepted) and returns the envelope. */
static uint8_t *seal_ok(const swd_msg *m, const uint8_t *run, size_t *len)
{
    uint8_t *buf = NULL;
    assert_int_equal(swd_wire_seal(m, run, pk, sk, &buf, len), 0);
    assert_non_null(buf);
    return buf;
}

/* The drop reason of opening buf, or SWD_DROP_COUNT when it opens. */
static swd_drop open_drop(const uint8_t *buf, size_t len, const uint8_t *run)
{
    swd_msg m;
    swd_drop d = SWD_DROP_COUNT;
    int rc = swd_wire_open(buf, len, run, &m, &d);
    if (rc == 0) {
        swd_msg_fini(&m);
        return SWD_DROP_COUNT;
    }
    assert_int_equal(rc, SW_EFORMAT);
    assert_int_equal(m.type, SWD_MSG_NONE);
    assert_true(d < SWD_DROP_COUNT);
    return d;
}

static void assert_members_equal(const swd_member_info *a, const swd_member_info *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        assert_memory_equal(a[i].id, b[i].id, SW_ID_BYTES);
        assert_string_equal(a[i].pub_addr, b[i].pub_addr);
        assert_string_equal(a[i].sync_addr, b[i].sync_addr);
        assert_int_equal(a[i].alive, b[i].alive);
    }
}

static void assert_vv_equal(const swd_vv_entry *a, const swd_vv_entry *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        assert_memory_equal(a[i].origin, b[i].origin, SW_ID_BYTES);
        assert_true(a[i].count == b[i].count);
    }
}

static void assert_msg_equal(const swd_msg *a, const swd_msg *b)
{
    assert_int_equal(a->type, b->type);
    assert_int_equal(a->context, b->context);
    switch (a->type) {
    case SWD_MSG_BATCH:
        assert_true(a->u.batch.first_step == b->u.batch.first_step);
        assert_true(a->u.batch.scale == b->u.batch.scale);
        assert_int_equal(a->u.batch.n, b->u.batch.n);
        assert_memory_equal(a->u.batch.q, b->u.batch.q, a->u.batch.n);
        break;
    case SWD_MSG_ANNOUNCE: {
        const swd_announce *x = &a->u.announce, *y = &b->u.announce;
        assert_true(x->seq == y->seq);
        assert_string_equal(x->pub_addr, y->pub_addr);
        assert_string_equal(x->sync_addr, y->sync_addr);
        assert_int_equal(x->state, y->state);
        assert_true(x->step == y->step);
        assert_true(x->ledger_updates == y->ledger_updates);
        assert_int_equal(x->has_digest, y->has_digest);
        if (x->has_digest) assert_memory_equal(x->digest, y->digest, SW_ID_BYTES);
        assert_true((isnan(x->loss) && isnan(y->loss)) || x->loss == y->loss);
        assert_int_equal(x->n_vv, y->n_vv);
        assert_vv_equal(x->vv, y->vv, x->n_vv);
        assert_int_equal(x->n_digest_vv, y->n_digest_vv);
        assert_vv_equal(x->digest_vv, y->digest_vv, x->n_digest_vv);
        assert_int_equal(x->n_members, y->n_members);
        assert_members_equal(x->members, y->members, x->n_members);
        break;
    }
    case SWD_MSG_HELLO:
        assert_string_equal(a->u.hello.pub_addr, b->u.hello.pub_addr);
        assert_string_equal(a->u.hello.sync_addr, b->u.hello.sync_addr);
        break;
    case SWD_MSG_WELCOME: {
        const swd_welcome *x = &a->u.welcome, *y = &b->u.welcome;
        assert_int_equal(x->run_spec_len, y->run_spec_len);
        assert_memory_equal(x->run_spec, y->run_spec, x->run_spec_len);
        assert_int_equal(y->run_spec[y->run_spec_len], 0);
        assert_int_equal(x->n_members, y->n_members);
        assert_members_equal(x->members, y->members, x->n_members);
        assert_int_equal(x->n_vv, y->n_vv);
        assert_vv_equal(x->vv, y->vv, x->n_vv);
        assert_true(x->ledger_updates == y->ledger_updates);
        assert_true(x->snapshot_updates == y->snapshot_updates);
        assert_true(x->snapshot_bytes == y->snapshot_bytes);
        break;
    }
    case SWD_MSG_GET_UPDATES:
        assert_memory_equal(a->u.get_updates.origin, b->u.get_updates.origin, SW_ID_BYTES);
        assert_true(a->u.get_updates.first_step == b->u.get_updates.first_step);
        assert_int_equal(a->u.get_updates.max_steps, b->u.get_updates.max_steps);
        break;
    case SWD_MSG_UPDATES:
        assert_int_equal(a->u.updates.n, b->u.updates.n);
        for (size_t i = 0; i < a->u.updates.n; i++) {
            assert_int_equal(a->u.updates.env_len[i], b->u.updates.env_len[i]);
            assert_memory_equal(a->u.updates.env[i], b->u.updates.env[i], a->u.updates.env_len[i]);
        }
        break;
    case SWD_MSG_GET_SNAPSHOT:
        assert_true(a->u.get_snapshot.snapshot_updates == b->u.get_snapshot.snapshot_updates);
        assert_int_equal(a->u.get_snapshot.chunk, b->u.get_snapshot.chunk);
        break;
    case SWD_MSG_SNAPSHOT_CHUNK: {
        const swd_snapshot_chunk *x = &a->u.snapshot_chunk, *y = &b->u.snapshot_chunk;
        assert_true(x->snapshot_updates == y->snapshot_updates);
        assert_int_equal(x->chunk, y->chunk);
        assert_int_equal(x->n_chunks, y->n_chunks);
        assert_true(x->total_bytes == y->total_bytes);
        assert_int_equal(x->len, y->len);
        if (x->len) assert_memory_equal(x->data, y->data, x->len);
        break;
    }
    case SWD_MSG_ERROR:
        assert_int_equal(a->u.error.code, b->u.error.code);
        assert_string_equal(a->u.error.message, b->u.error.message);
        break;
    default:
        break;
    }
}

/* Seals, opens under the same run, compares; peek agrees on the sender. */
static void roundtrip(swd_msg *m, const uint8_t *run)
{
    size_t len;
    uint8_t *buf = seal_ok(m, run, &len);
    swd_msg got;
    swd_drop d = SWD_DROP_COUNT;
    assert_int_equal(swd_wire_open(buf, len, run, &got, &d), 0);
    assert_memory_equal(got.sender, pk, SW_ID_BYTES);
    assert_msg_equal(m, &got);
    uint8_t sender[SW_ID_BYTES];
    assert_int_equal(swd_wire_peek_sender(buf, len, sender), 0);
    assert_memory_equal(sender, pk, SW_ID_BYTES);
    swd_msg_fini(&got);
    assert_int_equal(got.type, SWD_MSG_NONE);
    free(buf);
}

static void test_roundtrip_every_type(void **state)
{
    (void)state;
    swd_msg m;

    make_batch(&m, 640, 64);
    roundtrip(&m, run_a);
    make_batch(&m, UINT64_MAX - 1023, SWD_WIRE_MAX_BATCH); /* the last step is UINT64_MAX */
    roundtrip(&m, run_a);

    make_announce(&m, 5, 3, 4, 0);
    roundtrip(&m, run_a);
    m.u.announce.loss = NAN;
    m.u.announce.has_digest = false;
    m.u.announce.state = SWD_STATE_SYNCING;
    roundtrip(&m, run_a);
    swd_msg_fini(&m);
    make_announce(&m, 0, 0, 0, 0); /* nothing to gossip */
    roundtrip(&m, run_a);
    swd_msg_fini(&m);

    memset(&m, 0, sizeof m);
    m.type = SWD_MSG_HELLO;
    m.context = SWD_CTX_JOIN;
    snprintf(m.u.hello.pub_addr, sizeof m.u.hello.pub_addr, "tcp://[::1]:7701");
    snprintf(m.u.hello.sync_addr, sizeof m.u.hello.sync_addr, "tcp://h\xc3\xa9te:7702");
    roundtrip(&m, NULL);  /* a joiner has no run yet */
    roundtrip(&m, run_a); /* a member opening it has one; join context ignores it */

    make_welcome(&m);
    roundtrip(&m, NULL);
    swd_msg_fini(&m);

    memset(&m, 0, sizeof m);
    m.type = SWD_MSG_GET_UPDATES;
    fill_id(m.u.get_updates.origin, 3);
    m.u.get_updates.first_step = 1u << 20;
    m.u.get_updates.max_steps = 4096;
    roundtrip(&m, run_a);

    /* Updates: two real batch envelopes, then each opens by itself */
    swd_msg b1, b2;
    make_batch(&b1, 0, 64);
    make_batch(&b2, 64, 10);
    memset(&m, 0, sizeof m);
    m.type = SWD_MSG_UPDATES;
    m.u.updates.n = 2;
    m.u.updates.env = calloc(2, sizeof(uint8_t *));
    m.u.updates.env_len = calloc(2, sizeof(size_t));
    m.u.updates.env[0] = seal_ok(&b1, run_a, &m.u.updates.env_len[0]);
    m.u.updates.env[1] = seal_ok(&b2, run_a, &m.u.updates.env_len[1]);
    roundtrip(&m, run_a);
    swd_msg inner;
    swd_drop d;
    assert_int_equal(swd_wire_open(m.u.updates.env[1], m.u.updates.env_len[1], run_a, &inner, &d),
                     0);
    assert_msg_equal(&b2, &inner);
    swd_msg_fini(&inner);
    swd_msg_fini(&m);
    memset(&m, 0, sizeof m);
    m.type = SWD_MSG_UPDATES; /* an empty reply: nothing held from there */
    roundtrip(&m, run_a);

    memset(&m, 0, sizeof m);
    m.type = SWD_MSG_GET_SNAPSHOT;
    m.u.get_snapshot.snapshot_updates = 12345;
    m.u.get_snapshot.chunk = 7;
    roundtrip(&m, run_a);

    memset(&m, 0, sizeof m);
    m.type = SWD_MSG_SNAPSHOT_CHUNK;
    m.u.snapshot_chunk.snapshot_updates = 12345;
    m.u.snapshot_chunk.chunk = 2;
    m.u.snapshot_chunk.n_chunks = 3;
    m.u.snapshot_chunk.total_bytes = 2 * SWD_WIRE_MAX_CHUNK + 5;
    m.u.snapshot_chunk.len = SWD_WIRE_MAX_CHUNK; /* a full chunk, just under the bound */
    m.u.snapshot_chunk.data = malloc(SWD_WIRE_MAX_CHUNK);
    for (size_t i = 0; i < SWD_WIRE_MAX_CHUNK; i++)
        m.u.snapshot_chunk.data[i] = (uint8_t)(i * 13);
    roundtrip(&m, run_a);
    swd_msg_fini(&m);

    memset(&m, 0, sizeof m);
    m.type = SWD_MSG_LEAVE;
    roundtrip(&m, run_a);

    memset(&m, 0, sizeof m);
    m.type = SWD_MSG_ERROR;
    m.context = SWD_CTX_JOIN;
    m.u.error.code = SWD_ERR_REFUSED;
    memset(m.u.error.message, 'e', SWD_WIRE_MAX_ERROR_TEXT);
    roundtrip(&m, NULL);
    m.context = SWD_CTX_RUN;
    m.u.error.code = SWD_ERR_NOT_FOUND;
    snprintf(m.u.error.message, sizeof m.u.error.message, "no snapshot 64");
    roundtrip(&m, run_a);
}

/* The largest Announce a receiver takes opens within the unpack budget. */
static void test_maximal_announce_opens(void **state)
{
    (void)state;
    swd_msg m;
    make_announce(&m, SWD_WIRE_MAX_VV, SWD_WIRE_MAX_VV, SWD_WIRE_MAX_MEMBERS, SWD_WIRE_MAX_ADDR);
    for (size_t i = 0; i < SWD_WIRE_MAX_VV; i++) {
        m.u.announce.vv[i].count = UINT64_MAX - i; /* 10-byte varints */
        m.u.announce.digest_vv[i].count = 0;       /* omitted: the cheapest entry on the wire */
    }
    roundtrip(&m, run_a);
    swd_msg_fini(&m);
    /* and the smallest entries everywhere */
    make_announce(&m, SWD_WIRE_MAX_VV, SWD_WIRE_MAX_VV, SWD_WIRE_MAX_MEMBERS, 0);
    for (size_t i = 0; i < SWD_WIRE_MAX_VV; i++)
        m.u.announce.vv[i].count = m.u.announce.digest_vv[i].count = 0;
    for (size_t i = 0; i < SWD_WIRE_MAX_MEMBERS; i++) {
        m.u.announce.members[i].pub_addr[0] = m.u.announce.members[i].sync_addr[0] = '\0';
        m.u.announce.members[i].alive = false;
    }
    roundtrip(&m, run_a);
    swd_msg_fini(&m);
}

static void test_another_run_is_bad_signature(void **state)
{
    (void)state;
    swd_msg m;
    make_batch(&m, 0, 64);
    size_t len;
    uint8_t *buf = seal_ok(&m, run_a, &len);
    assert_int_equal(open_drop(buf, len, run_a), SWD_DROP_COUNT);
    assert_int_equal(open_drop(buf, len, run_b), SWD_DROP_BAD_SIGNATURE);
    assert_int_equal(open_drop(buf, len, NULL), SWD_DROP_BAD_SIGNATURE);
    free(buf);
    /* every run-context type is bound */
    make_announce(&m, 2, 1, 1, 0);
    buf = seal_ok(&m, run_a, &len);
    assert_int_equal(open_drop(buf, len, run_b), SWD_DROP_BAD_SIGNATURE);
    free(buf);
    swd_msg_fini(&m);
    /* another signer's key under the same sender: bad signature too */
    uint8_t pk2[crypto_sign_PUBLICKEYBYTES], sk2[crypto_sign_SECRETKEYBYTES];
    crypto_sign_keypair(pk2, sk2);
    memset(&m, 0, sizeof m);
    m.type = SWD_MSG_LEAVE;
    assert_int_equal(swd_wire_seal(&m, run_a, pk2, sk2, &buf, &len), 0);
    size_t at = 0;
    while (at + sizeof pk2 <= len && memcmp(buf + at, pk2, sizeof pk2) != 0)
        at++;
    assert_true(at + sizeof pk2 <= len);
    memcpy(buf + at, pk, sizeof pk);
    assert_int_equal(open_drop(buf, len, run_a), SWD_DROP_BAD_SIGNATURE);
    free(buf);
}

/* Signs body under ctx_value's bytes (context 0 uses run) with our key. */
static uint8_t *craft_raw(const uint8_t *body, size_t body_len, int ctx_value, const uint8_t *run,
                          size_t sender_len, size_t sig_len, size_t *out_len)
{
    uint8_t ctx[SW_ID_BYTES];
    swd_wire_context_bytes(ctx_value == 1 ? SWD_CTX_JOIN : SWD_CTX_RUN, run, ctx);
    uint8_t *signed_bytes = malloc(SW_ID_BYTES + body_len + 1);
    memcpy(signed_bytes, ctx, SW_ID_BYTES);
    if (body_len) memcpy(signed_bytes + SW_ID_BYTES, body, body_len);
    uint8_t sig[80] = {0}, sender[40] = {0};
    crypto_sign_detached(sig, NULL, signed_bytes, SW_ID_BYTES + body_len, sk);
    memcpy(sender, pk, sizeof pk);
    free(signed_bytes);
    Swarmtune__V1__Envelope env = SWARMTUNE__V1__ENVELOPE__INIT;
    env.sender.data = sender;
    env.sender.len = sender_len;
    env.body.data = (uint8_t *)body;
    env.body.len = body_len;
    env.signature.data = sig;
    env.signature.len = sig_len;
    env.context = (Swarmtune__V1__Context)ctx_value;
    *out_len = protobuf_c_message_get_packed_size(&env.base);
    uint8_t *out = malloc(*out_len);
    assert_int_equal(protobuf_c_message_pack(&env.base, out), *out_len);
    return out;
}

static uint8_t *pack_body(const Swarmtune__V1__Body *b, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(&b->base);
    uint8_t *out = malloc(*len ? *len : 1);
    assert_int_equal(protobuf_c_message_pack(&b->base, out), *len);
    return out;
}

/* The drop reason of a correctly signed envelope of body b in context ctx_value. */
static swd_drop crafted_drop(const Swarmtune__V1__Body *b, int ctx_value)
{
    size_t body_len, len;
    uint8_t *body = pack_body(b, &body_len);
    uint8_t *env = craft_raw(body, body_len, ctx_value, run_a, 32, 64, &len);
    swd_drop d = open_drop(env, len, run_a);
    free(env);
    free(body);
    return d;
}

/* Same, after replacing the first byte equal to `from` in the packed body. */
static swd_drop crafted_patched_drop(const Swarmtune__V1__Body *b, uint8_t from, uint8_t to)
{
    size_t body_len, len;
    uint8_t *body = pack_body(b, &body_len);
    uint8_t *hit = memchr(body, from, body_len);
    assert_non_null(hit);
    *hit = to;
    uint8_t *env = craft_raw(body, body_len, 0, run_a, 32, 64, &len);
    swd_drop d = open_drop(env, len, run_a);
    free(env);
    free(body);
    return d;
}

static void test_contexts(void **state)
{
    (void)state;
    uint8_t *buf;
    size_t len;
    swd_msg m;
    /* seal refuses what a receiver would drop */
    make_batch(&m, 0, 4);
    m.context = SWD_CTX_JOIN;
    assert_int_equal(swd_wire_seal(&m, run_a, pk, sk, &buf, &len), SW_EINVAL);
    assert_null(buf);
    memset(&m, 0, sizeof m);
    m.type = SWD_MSG_HELLO;
    m.context = SWD_CTX_RUN;
    assert_int_equal(swd_wire_seal(&m, run_a, pk, sk, &buf, &len), SW_EINVAL);
    make_welcome(&m);
    m.context = SWD_CTX_RUN;
    assert_int_equal(swd_wire_seal(&m, run_a, pk, sk, &buf, &len), SW_EINVAL);
    swd_msg_fini(&m);
    memset(&m, 0, sizeof m);
    m.type = SWD_MSG_LEAVE; /* a run message needs the run */
    assert_int_equal(swd_wire_seal(&m, NULL, pk, sk, &buf, &len), SW_EINVAL);

    /* and the receiver refuses them when signed anyway */
    Swarmtune__V1__Body b = SWARMTUNE__V1__BODY__INIT;
    Swarmtune__V1__Hello hello = SWARMTUNE__V1__HELLO__INIT;
    b.msg_case = SWARMTUNE__V1__BODY__MSG_HELLO;
    b.hello = &hello;
    assert_int_equal(crafted_drop(&b, 1), SWD_DROP_COUNT);
    assert_int_equal(crafted_drop(&b, 0), SWD_DROP_WRONG_CONTEXT);
    Swarmtune__V1__Welcome welcome = SWARMTUNE__V1__WELCOME__INIT;
    welcome.run_spec.data = (uint8_t *)"{}";
    welcome.run_spec.len = 2;
    b.msg_case = SWARMTUNE__V1__BODY__MSG_WELCOME;
    b.welcome = &welcome;
    assert_int_equal(crafted_drop(&b, 1), SWD_DROP_COUNT);
    assert_int_equal(crafted_drop(&b, 0), SWD_DROP_WRONG_CONTEXT);
    Swarmtune__V1__Error err = SWARMTUNE__V1__ERROR__INIT;
    b.msg_case = SWARMTUNE__V1__BODY__MSG_ERROR;
    b.error = &err;
    assert_int_equal(crafted_drop(&b, 1), SWD_DROP_COUNT);
    assert_int_equal(crafted_drop(&b, 0), SWD_DROP_COUNT);
    /* everything else is run-only */
    Swarmtune__V1__Leave leave = SWARMTUNE__V1__LEAVE__INIT;
    b.msg_case = SWARMTUNE__V1__BODY__MSG_LEAVE;
    b.leave = &leave;
    assert_int_equal(crafted_drop(&b, 0), SWD_DROP_COUNT);
    assert_int_equal(crafted_drop(&b, 1), SWD_DROP_WRONG_CONTEXT);
    Swarmtune__V1__GetSnapshot gs = SWARMTUNE__V1__GET_SNAPSHOT__INIT;
    b.msg_case = SWARMTUNE__V1__BODY__MSG_GET_SNAPSHOT;
    b.get_snapshot = &gs;
    assert_int_equal(crafted_drop(&b, 1), SWD_DROP_WRONG_CONTEXT);
    uint8_t q[3] = {1, 2, 3};
    Swarmtune__V1__UpdateBatch ub = SWARMTUNE__V1__UPDATE_BATCH__INIT;
    ub.scale = 1.0f;
    ub.q.data = q;
    ub.q.len = sizeof q;
    b.msg_case = SWARMTUNE__V1__BODY__MSG_BATCH;
    b.batch = &ub;
    assert_int_equal(crafted_drop(&b, 0), SWD_DROP_COUNT);
    assert_int_equal(crafted_drop(&b, 1), SWD_DROP_WRONG_CONTEXT);
    /* an unknown context value names no bytes to verify under */
    assert_int_equal(crafted_drop(&b, 2), SWD_DROP_BAD_FIELD);
}

static void test_truncations_are_dropped(void **state)
{
    (void)state;
    swd_msg ms[3];
    make_batch(&ms[0], 1u << 20, 64);
    make_announce(&ms[1], 3, 2, 2, 0);
    make_welcome(&ms[2]); /* join context: the envelope ends with the context field */
    const uint8_t *runs[3] = {run_a, run_a, NULL};
    for (int k = 0; k < 3; k++) {
        size_t len;
        uint8_t *buf = seal_ok(&ms[k], runs[k], &len);
        size_t counts[SWD_DROP_COUNT + 1] = {0};
        for (size_t cut = 0; cut < len; cut++) {
            /* a copy of exactly cut bytes, so a sanitizer sees any over-read */
            uint8_t *t = malloc(cut ? cut : 1);
            memcpy(t, buf, cut);
            swd_drop d = open_drop(t, cut, runs[k]);
            assert_int_not_equal(d, SWD_DROP_COUNT);
            counts[d]++;
            free(t);
        }
        assert_int_equal(open_drop(buf, len, runs[k]), SWD_DROP_COUNT);
        printf(
            "truncations of a %zu-byte %s: malformed %zu, bad_field %zu, bad_signature %zu\n", len,
            k == 0   ? "batch"
            : k == 1 ? "announce"
                     : "welcome",
            counts[SWD_DROP_MALFORMED], counts[SWD_DROP_BAD_FIELD], counts[SWD_DROP_BAD_SIGNATURE]);
        assert_int_equal(counts[SWD_DROP_MALFORMED] + counts[SWD_DROP_BAD_FIELD] +
                             counts[SWD_DROP_BAD_SIGNATURE],
                         len);
        free(buf);
    }
    swd_msg_fini(&ms[1]);
    swd_msg_fini(&ms[2]);
}

static void test_random_corruptions_are_dropped(void **state)
{
    (void)state;
    swd_msg ms[2];
    make_batch(&ms[0], 4096, 64);
    make_announce(&ms[1], 4, 4, 3, 0);
    size_t dropped = 0;
    for (int k = 0; k < 2; k++) {
        size_t len;
        uint8_t *buf = seal_ok(&ms[k], run_a, &len);
        uint8_t *t = malloc(len);
        for (int i = 0; i < 1000; i++) {
            memcpy(t, buf, len);
            size_t pos = rng_next() % len;
            uint8_t delta = (uint8_t)(1 + rng_next() % 255); /* never 0: the byte changes */
            t[pos] ^= delta;
            swd_drop d = open_drop(t, len, run_a);
            assert_int_not_equal(d, SWD_DROP_COUNT);
            dropped++;
        }
        free(t);
        free(buf);
    }
    assert_int_equal(dropped, 2000);
    swd_msg_fini(&ms[1]);
    /* and plain garbage of every small size */
    for (size_t n = 0; n < 300; n++) {
        uint8_t g[300];
        for (size_t i = 0; i < n; i++)
            g[i] = (uint8_t)rng_next();
        assert_int_not_equal(open_drop(g, n, run_a), SWD_DROP_COUNT);
        uint8_t sender[SW_ID_BYTES];
        (void)swd_wire_peek_sender(g, n, sender);
    }
}

static void test_envelope_fields_bounded(void **state)
{
    (void)state;
    Swarmtune__V1__Body b = SWARMTUNE__V1__BODY__INIT;
    Swarmtune__V1__Leave leave = SWARMTUNE__V1__LEAVE__INIT;
    b.msg_case = SWARMTUNE__V1__BODY__MSG_LEAVE;
    b.leave = &leave;
    size_t body_len, len;
    uint8_t *body = pack_body(&b, &body_len);
    const size_t sizes[][2] = {{32, 64}, {31, 64}, {33, 64}, {0, 64}, {32, 63}, {32, 65}, {32, 0}};
    const swd_drop want[] = {SWD_DROP_COUNT,     SWD_DROP_BAD_FIELD, SWD_DROP_BAD_FIELD,
                             SWD_DROP_BAD_FIELD, SWD_DROP_BAD_FIELD, SWD_DROP_BAD_FIELD,
                             SWD_DROP_BAD_FIELD};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        uint8_t *env = craft_raw(body, body_len, 0, run_a, sizes[i][0], sizes[i][1], &len);
        assert_int_equal(open_drop(env, len, run_a), want[i]);
        uint8_t sender[SW_ID_BYTES];
        assert_int_equal(swd_wire_peek_sender(env, len, sender),
                         sizes[i][0] == 32 ? 0 : SW_EFORMAT);
        free(env);
    }
    free(body);

    /* a body with no message set, and one that is not a Body at all */
    Swarmtune__V1__Body empty = SWARMTUNE__V1__BODY__INIT;
    assert_int_equal(crafted_drop(&empty, 0), SWD_DROP_MALFORMED);
    const uint8_t junk[] = {0x0a, 0x05, 0x01};
    uint8_t *env = craft_raw(junk, sizeof junk, 0, run_a, 32, 64, &len);
    assert_int_equal(open_drop(env, len, run_a), SWD_DROP_MALFORMED);
    free(env);
    /* an unknown field in the body is skipped (forward compatible) */
    const uint8_t future[] = {0x4a, 0x00, 0xa8, 0x06, 0x01}; /* leave {}, field 101 = 1 */
    env = craft_raw(future, sizeof future, 0, run_a, 32, 64, &len);
    assert_int_equal(open_drop(env, len, run_a), SWD_DROP_COUNT);
    free(env);
}

static void test_batch_fields_bounded(void **state)
{
    (void)state;
    static uint8_t q[SWD_WIRE_MAX_BATCH + 1];
    memset(q, 5, sizeof q);
    Swarmtune__V1__UpdateBatch ub = SWARMTUNE__V1__UPDATE_BATCH__INIT;
    Swarmtune__V1__Body b = SWARMTUNE__V1__BODY__INIT;
    b.msg_case = SWARMTUNE__V1__BODY__MSG_BATCH;
    b.batch = &ub;
    ub.q.data = q;
    ub.scale = 0.5f;
    ub.q.len = SWD_WIRE_MAX_BATCH;
    assert_int_equal(crafted_drop(&b, 0), SWD_DROP_COUNT);
    ub.q.len = SWD_WIRE_MAX_BATCH + 1;
    assert_int_equal(crafted_drop(&b, 0), SWD_DROP_BAD_FIELD);
    ub.q.len = 0;
    assert_int_equal(crafted_drop(&b, 0), SWD_DROP_BAD_FIELD);
    ub.q.len = 64;
    q[40] = 0x80; /* -128 */
    assert_int_equal(crafted_drop(&b, 0), SWD_DROP_BAD_FIELD);
    q[40] = 0x81; /* -127 is fine */
    assert_int_equal(crafted_drop(&b, 0), SWD_DROP_COUNT);
    const float bad_scales[] = {0.0f, -0.0f, -1.0f, NAN, INFINITY, -INFINITY};
    for (size_t i = 0; i < sizeof bad_scales / sizeof bad_scales[0]; i++) {
        ub.scale = bad_scales[i];
        assert_int_equal(crafted_drop(&b, 0), SWD_DROP_BAD_FIELD);
    }
    ub.scale = 1e-30f;
    assert_int_equal(crafted_drop(&b, 0), SWD_DROP_COUNT);
    ub.first_step = UINT64_MAX - 62; /* steps up to UINT64_MAX + 1: none such */
    assert_int_equal(crafted_drop(&b, 0), SWD_DROP_BAD_FIELD);
    ub.first_step = UINT64_MAX - 63;
    assert_int_equal(crafted_drop(&b, 0), SWD_DROP_COUNT);

    /* seal refuses the same */
    swd_msg m;
    uint8_t *buf;
    size_t len;
    make_batch(&m, 0, 8);
    m.u.batch.q[3] = -128;
    assert_int_equal(swd_wire_seal(&m, run_a, pk, sk, &buf, &len), SW_EINVAL);
    make_batch(&m, 0, 0);
    assert_int_equal(swd_wire_seal(&m, run_a, pk, sk, &buf, &len), SW_EINVAL);
    make_batch(&m, 0, 8);
    m.u.batch.n = SWD_WIRE_MAX_BATCH + 1;
    assert_int_equal(swd_wire_seal(&m, run_a, pk, sk, &buf, &len), SW_EINVAL);
    make_batch(&m, UINT64_MAX, 2);
    assert_int_equal(swd_wire_seal(&m, run_a, pk, sk, &buf, &len), SW_EINVAL);
    for (size_t i = 0; i < sizeof bad_scales / sizeof bad_scales[0]; i++) {
        make_batch(&m, 0, 8);
        m.u.batch.scale = bad_scales[i];
        assert_int_equal(swd_wire_seal(&m, run_a, pk, sk, &buf, &len), SW_EINVAL);
    }
    /* a secret key that is not pk's */
    uint8_t pk2[crypto_sign_PUBLICKEYBYTES], sk2[crypto_sign_SECRETKEYBYTES];
    crypto_sign_keypair(pk2, sk2);
    make_batch(&m, 0, 8);
    assert_int_equal(swd_wire_seal(&m, run_a, pk, sk2, &buf, &len), SW_EINVAL);
}

static char long_addr[SWD_WIRE_MAX_ADDR + 2];

static void test_announce_fields_bounded(void **state)
{
    (void)state;
    static uint8_t ids[SWD_WIRE_MAX_VV + 1][40];
    static Swarmtune__V1__VersionEntry ve[SWD_WIRE_MAX_VV + 1];
    static Swarmtune__V1__VersionEntry *vp[SWD_WIRE_MAX_VV + 1];
    static Swarmtune__V1__Member me[SWD_WIRE_MAX_MEMBERS + 1];
    static Swarmtune__V1__Member *mp[SWD_WIRE_MAX_MEMBERS + 1];
    for (size_t i = 0; i <= SWD_WIRE_MAX_VV; i++) {
        fill_id(ids[i], (uint8_t)i);
        swarmtune__v1__version_entry__init(&ve[i]);
        ve[i].origin.data = ids[i];
        ve[i].origin.len = SW_ID_BYTES;
        ve[i].count = i;
        vp[i] = &ve[i];
    }
    for (size_t i = 0; i <= SWD_WIRE_MAX_MEMBERS; i++) {
        swarmtune__v1__member__init(&me[i]);
        me[i].id.data = ids[i];
        me[i].id.len = SW_ID_BYTES;
        me[i].pub_addr = "tcp://a:1";
        me[i].sync_addr = "tcp://a:2";
        mp[i] = &me[i];
    }
    memset(long_addr, 'x', SWD_WIRE_MAX_ADDR + 1);
    uint8_t digest[40] = {0};

    Swarmtune__V1__Announce a = SWARMTUNE__V1__ANNOUNCE__INIT;
    Swarmtune__V1__Body b = SWARMTUNE__V1__BODY__INIT;
    b.msg_case = SWARMTUNE__V1__BODY__MSG_ANNOUNCE;
    b.announce = &a;
    a.pub_addr = "tcp://XXX:1";
    a.sync_addr = "tcp://y:2";
    a.state = SWARMTUNE__V1__NODE_STATE__NODE_STATE_SYNCING;
    a.n_vv = SWD_WIRE_MAX_VV;
    a.vv = vp;
    a.n_digest_vv = SWD_WIRE_MAX_VV;
    a.digest_vv = vp;
    a.n_members = SWD_WIRE_MAX_MEMBERS;
    a.members = mp;
    a.digest.data = digest;
    a.digest.len = SW_ID_BYTES;
    a.loss = -INFINITY; /* any float */
    assert_int_equal(crafted_drop(&b, 0), SWD_DROP_COUNT);

    /* one field out of bounds at a time */
    a.n_vv = SWD_WIRE_MAX_VV + 1;
    assert_int_equal(crafted_drop(&b, 0), SWD_DROP_BAD_FIELD);
    a.n_vv = SWD_WIRE_MAX_VV;
    a.n_digest_vv = SWD_WIRE_MAX_VV + 1;
    assert_int_equal(crafted_drop(&b, 0), SWD_DROP_BAD_FIELD);
    a.n_digest_vv = 3;
    a.n_members = SWD_WIRE_MAX_MEMBERS + 1;
    assert_int_equal(crafted_drop(&b, 0), SWD_DROP_BAD_FIELD);
    a.n_members = 2;
    ve[1].origin.len = 31;
    assert_int_equal(crafted_drop(&b, 0), SWD_DROP_BAD_FIELD);
    ve[1].origin.len = 33;
    assert_int_equal(crafted_drop(&b, 0), SWD_DROP_BAD_FIELD);
    ve[1].origin.len = 32;
    me[1].id.len = 0;
    assert_int_equal(crafted_drop(&b, 0), SWD_DROP_BAD_FIELD);
    me[1].id.len = 32;
    me[1].sync_addr = long_addr;
    assert_int_equal(crafted_drop(&b, 0), SWD_DROP_BAD_FIELD);
    me[1].sync_addr = "tcp://a:2";
    a.digest.len = 31;
    assert_int_equal(crafted_drop(&b, 0), SWD_DROP_BAD_FIELD);
    a.digest.len = 0; /* no digest yet: fine */
    assert_int_equal(crafted_drop(&b, 0), SWD_DROP_COUNT);
    a.state = 6;
    assert_int_equal(crafted_drop(&b, 0), SWD_DROP_BAD_FIELD);
    a.state = -1;
    assert_int_equal(crafted_drop(&b, 0), SWD_DROP_BAD_FIELD);
    a.state = SWARMTUNE__V1__NODE_STATE__NODE_STATE_JOINING;
    a.loss = NAN;
    assert_int_equal(crafted_drop(&b, 0), SWD_DROP_COUNT);
    a.pub_addr = long_addr;
    assert_int_equal(crafted_drop(&b, 0), SWD_DROP_BAD_FIELD);
    long_addr[SWD_WIRE_MAX_ADDR] = '\0'; /* exactly the bound */
    assert_int_equal(crafted_drop(&b, 0), SWD_DROP_COUNT);
    long_addr[SWD_WIRE_MAX_ADDR] = 'x';
    a.pub_addr = "tcp://XXX:1";
    /* a NUL inside an address, and bytes that are not UTF-8 */
    assert_int_equal(crafted_patched_drop(&b, 'X', 0x00), SWD_DROP_BAD_FIELD);
    assert_int_equal(crafted_patched_drop(&b, 'X', 0xff), SWD_DROP_MALFORMED);

    /* seal refuses them too */
    swd_msg m;
    uint8_t *buf;
    size_t len;
    make_announce(&m, SWD_WIRE_MAX_VV + 1, 0, 0, 0);
    assert_int_equal(swd_wire_seal(&m, run_a, pk, sk, &buf, &len), SW_EINVAL);
    swd_msg_fini(&m);
    make_announce(&m, 1, 0, SWD_WIRE_MAX_MEMBERS + 1, 0);
    assert_int_equal(swd_wire_seal(&m, run_a, pk, sk, &buf, &len), SW_EINVAL);
    swd_msg_fini(&m);
    make_announce(&m, 1, 0, 1, 0);
    m.u.announce.state = (swd_node_state)6;
    assert_int_equal(swd_wire_seal(&m, run_a, pk, sk, &buf, &len), SW_EINVAL);
    m.u.announce.state = SWD_STATE_DONE;
    memset(m.u.announce.sync_addr, 'a', sizeof m.u.announce.sync_addr); /* unterminated */
    assert_int_equal(swd_wire_seal(&m, run_a, pk, sk, &buf, &len), SW_EINVAL);
    snprintf(m.u.announce.sync_addr, sizeof m.u.announce.sync_addr, "tcp://\xff:1");
    assert_int_equal(swd_wire_seal(&m, run_a, pk, sk, &buf, &len), SW_EINVAL);
    snprintf(m.u.announce.sync_addr, sizeof m.u.announce.sync_addr, "tcp://b:1");
    memset(m.u.announce.members[0].pub_addr, 'a', sizeof m.u.announce.members[0].pub_addr);
    assert_int_equal(swd_wire_seal(&m, run_a, pk, sk, &buf, &len), SW_EINVAL);
    swd_msg_fini(&m);
}

static void test_other_fields_bounded(void **state)
{
    (void)state;
    Swarmtune__V1__Body b = SWARMTUNE__V1__BODY__INIT;
    uint8_t id[40] = {1};

    /* Hello */
    Swarmtune__V1__Hello hello = SWARMTUNE__V1__HELLO__INIT;
    b.msg_case = SWARMTUNE__V1__BODY__MSG_HELLO;
    b.hello = &hello;
    memset(long_addr, 'x', SWD_WIRE_MAX_ADDR + 1);
    hello.sync_addr = long_addr;
    assert_int_equal(crafted_drop(&b, 1), SWD_DROP_BAD_FIELD);

    /* Welcome */
    static uint8_t spec[SWD_WIRE_MAX_RUNSPEC + 1];
    memset(spec, ' ', sizeof spec);
    Swarmtune__V1__Welcome w = SWARMTUNE__V1__WELCOME__INIT;
    b.msg_case = SWARMTUNE__V1__BODY__MSG_WELCOME;
    b.welcome = &w;
    w.run_spec.data = spec;
    w.run_spec.len = SWD_WIRE_MAX_RUNSPEC;
    assert_int_equal(crafted_drop(&b, 1), SWD_DROP_COUNT);
    w.run_spec.len = SWD_WIRE_MAX_RUNSPEC + 1;
    assert_int_equal(crafted_drop(&b, 1), SWD_DROP_BAD_FIELD);
    w.run_spec.len = 0;
    assert_int_equal(crafted_drop(&b, 1), SWD_DROP_BAD_FIELD);
    w.run_spec.len = 10;
    Swarmtune__V1__VersionEntry ve = SWARMTUNE__V1__VERSION_ENTRY__INIT;
    Swarmtune__V1__VersionEntry *vp = &ve;
    ve.origin.data = id;
    ve.origin.len = 16;
    w.n_vv = 1;
    w.vv = &vp;
    assert_int_equal(crafted_drop(&b, 1), SWD_DROP_BAD_FIELD);

    /* GetUpdates */
    Swarmtune__V1__GetUpdates gu = SWARMTUNE__V1__GET_UPDATES__INIT;
    b.msg_case = SWARMTUNE__V1__BODY__MSG_GET_UPDATES;
    b.get_updates = &gu;
    gu.origin.data = id;
    gu.origin.len = 32;
    assert_int_equal(crafted_drop(&b, 0), SWD_DROP_COUNT);
    gu.origin.len = 0;
    assert_int_equal(crafted_drop(&b, 0), SWD_DROP_BAD_FIELD);

    /* Updates */
    static ProtobufCBinaryData batches[SWD_WIRE_MAX_UPDATES_BATCHES + 1];
    for (size_t i = 0; i <= SWD_WIRE_MAX_UPDATES_BATCHES; i++) {
        batches[i].data = id;
        batches[i].len = 8;
    }
    Swarmtune__V1__Updates up = SWARMTUNE__V1__UPDATES__INIT;
    b.msg_case = SWARMTUNE__V1__BODY__MSG_UPDATES;
    b.updates = &up;
    up.batches = batches;
    up.n_batches = SWD_WIRE_MAX_UPDATES_BATCHES;
    assert_int_equal(crafted_drop(&b, 0), SWD_DROP_COUNT);
    up.n_batches = SWD_WIRE_MAX_UPDATES_BATCHES + 1;
    assert_int_equal(crafted_drop(&b, 0), SWD_DROP_BAD_FIELD);
    up.n_batches = 3;
    batches[1].len = 0;
    assert_int_equal(crafted_drop(&b, 0), SWD_DROP_BAD_FIELD);

    /* SnapshotChunk */
    uint8_t *data = calloc(SWD_WIRE_MAX_CHUNK + 1, 1);
    uint8_t dg[SW_ID_BYTES];
    Swarmtune__V1__SnapshotChunk c = SWARMTUNE__V1__SNAPSHOT_CHUNK__INIT;
    b.msg_case = SWARMTUNE__V1__BODY__MSG_SNAPSHOT_CHUNK;
    b.snapshot_chunk = &c;
    c.chunk = 0;
    c.n_chunks = 1;
    c.data.data = data;
    c.data.len = 100;
    c.digest.data = dg;
    c.digest.len = SW_ID_BYTES;
    crypto_generichash(dg, sizeof dg, data, 100, NULL, 0);
    assert_int_equal(crafted_drop(&b, 0), SWD_DROP_COUNT);
    c.chunk = 1; /* chunk == n_chunks */
    assert_int_equal(crafted_drop(&b, 0), SWD_DROP_BAD_FIELD);
    c.chunk = 0;
    c.n_chunks = 0;
    assert_int_equal(crafted_drop(&b, 0), SWD_DROP_BAD_FIELD);
    c.n_chunks = 4;
    dg[5] ^= 1; /* the digest does not match the data */
    assert_int_equal(crafted_drop(&b, 0), SWD_DROP_BAD_FIELD);
    dg[5] ^= 1;
    c.digest.len = 31;
    assert_int_equal(crafted_drop(&b, 0), SWD_DROP_BAD_FIELD);
    c.digest.len = SW_ID_BYTES;
    c.data.len = SWD_WIRE_MAX_CHUNK + 1;
    crypto_generichash(dg, sizeof dg, data, c.data.len, NULL, 0);
    assert_int_equal(crafted_drop(&b, 0), SWD_DROP_BAD_FIELD);
    free(data);

    /* Error */
    static char text[SWD_WIRE_MAX_ERROR_TEXT + 2];
    memset(text, 't', SWD_WIRE_MAX_ERROR_TEXT + 1);
    Swarmtune__V1__Error e = SWARMTUNE__V1__ERROR__INIT;
    b.msg_case = SWARMTUNE__V1__BODY__MSG_ERROR;
    b.error = &e;
    e.message = text;
    assert_int_equal(crafted_drop(&b, 0), SWD_DROP_BAD_FIELD);
    text[SWD_WIRE_MAX_ERROR_TEXT] = '\0';
    assert_int_equal(crafted_drop(&b, 0), SWD_DROP_COUNT);
    e.code = 5;
    assert_int_equal(crafted_drop(&b, 0), SWD_DROP_BAD_FIELD);
    e.code = SWARMTUNE__V1__ERROR_CODE__ERROR_BUSY;
    text[3] = 'X';
    assert_int_equal(crafted_patched_drop(&b, 'X', 0), SWD_DROP_BAD_FIELD);

    /* seal refuses the same */
    swd_msg m;
    uint8_t *buf;
    size_t len;
    memset(&m, 0, sizeof m);
    m.type = SWD_MSG_ERROR;
    m.u.error.code = (swd_error_code)5;
    assert_int_equal(swd_wire_seal(&m, run_a, pk, sk, &buf, &len), SW_EINVAL);
    m.u.error.code = SWD_ERR_BUSY;
    memset(m.u.error.message, 'm', sizeof m.u.error.message);
    assert_int_equal(swd_wire_seal(&m, run_a, pk, sk, &buf, &len), SW_EINVAL);
    memset(&m, 0, sizeof m);
    m.type = SWD_MSG_SNAPSHOT_CHUNK;
    m.u.snapshot_chunk.n_chunks = 1;
    m.u.snapshot_chunk.len = SWD_WIRE_MAX_CHUNK + 1;
    m.u.snapshot_chunk.data = calloc(SWD_WIRE_MAX_CHUNK + 1, 1);
    assert_int_equal(swd_wire_seal(&m, run_a, pk, sk, &buf, &len), SW_EINVAL);
    m.u.snapshot_chunk.len = 10;
    m.u.snapshot_chunk.chunk = 1;
    assert_int_equal(swd_wire_seal(&m, run_a, pk, sk, &buf, &len), SW_EINVAL);
    swd_msg_fini(&m);
    memset(&m, 0, sizeof m);
    m.type = SWD_MSG_WELCOME;
    m.context = SWD_CTX_JOIN;
    m.u.welcome.run_spec = malloc(SWD_WIRE_MAX_RUNSPEC + 1);
    memset(m.u.welcome.run_spec, '{', SWD_WIRE_MAX_RUNSPEC + 1);
    m.u.welcome.run_spec_len = SWD_WIRE_MAX_RUNSPEC + 1;
    assert_int_equal(swd_wire_seal(&m, NULL, pk, sk, &buf, &len), SW_EINVAL);
    swd_msg_fini(&m);
    memset(&m, 0, sizeof m);
    m.type = SWD_MSG_UPDATES;
    m.u.updates.n = SWD_WIRE_MAX_UPDATES_BATCHES + 1;
    assert_int_equal(swd_wire_seal(&m, run_a, pk, sk, &buf, &len), SW_EINVAL);
}

/* Body{announce{members: n empty entries}}, 2 bytes per entry. */
static uint8_t *empty_members_body(size_t n, size_t *len)
{
    size_t inner = 2 * n, k = 0;
    uint8_t *body = malloc(inner + 16);
    body[k++] = 0x12; /* Body.announce */
    for (size_t v = inner;; v >>= 7) {
        body[k++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        if (v <= 0x7f) break;
    }
    for (size_t i = 0; i < n; i++) {
        body[k++] = 0x52; /* Announce.members, length 0 */
        body[k++] = 0x00;
    }
    *len = k;
    return body;
}

static void test_oversize_and_budget(void **state)
{
    (void)state;
    uint8_t *big = calloc(SWD_WIRE_MAX_MSG + 1, 1);
    assert_int_equal(open_drop(big, SWD_WIRE_MAX_MSG + 1, run_a), SWD_DROP_OVERSIZE);
    uint8_t sender[SW_ID_BYTES];
    assert_int_equal(swd_wire_peek_sender(big, SWD_WIRE_MAX_MSG + 1, sender), SW_EFORMAT);

    /*
     * A signed Announce of ~1M empty Member entries (2 bytes each): protobuf-c
     * would need ~100 bytes of structs and scratch per entry.  The unpack
     * budget refuses it as malformed; without the budget it would decode and
     * then be a bad_field (more than 64 members).
     */
    size_t body_len, len;
    uint8_t *body = empty_members_body((SWD_WIRE_MAX_MSG - 200) / 2, &body_len);
    uint8_t *env = craft_raw(body, body_len, 0, run_a, 32, 64, &len);
    assert_true(len <= SWD_WIRE_MAX_MSG);
    assert_int_equal(open_drop(env, len, run_a), SWD_DROP_MALFORMED);
    free(env);
    free(body);
    /* the same shape within the bounds decodes, and fails on the empty ids */
    body = empty_members_body(SWD_WIRE_MAX_MEMBERS, &body_len);
    env = craft_raw(body, body_len, 0, run_a, 32, 64, &len);
    assert_int_equal(open_drop(env, len, run_a), SWD_DROP_BAD_FIELD);
    free(env);
    free(body);

    /* seal never produces an envelope over the bound */
    swd_msg m;
    memset(&m, 0, sizeof m);
    m.type = SWD_MSG_UPDATES;
    m.u.updates.n = 2;
    m.u.updates.env = calloc(2, sizeof(uint8_t *));
    m.u.updates.env_len = calloc(2, sizeof(size_t));
    for (int i = 0; i < 2; i++) {
        m.u.updates.env[i] = big;
        m.u.updates.env_len[i] = SWD_WIRE_MAX_MSG / 2 + 1;
    }
    uint8_t *buf;
    assert_int_equal(swd_wire_seal(&m, run_a, pk, sk, &buf, &len), SW_EINVAL);
    free(m.u.updates.env);
    free(m.u.updates.env_len);
    free(big);
}

/*
 * DESIGN section 7: under 3 bytes per update on the wire at
 * batch_max_steps = 64, nng's TCP framing included.  Protobuf varints make
 * the size depend on first_step: measured at 0, at a typical step and at
 * 2^35 (34 billion updates from one origin, beyond any run).
 */
static void test_batch_of_64_costs_under_3_bytes_per_update(void **state)
{
    (void)state;
    const uint64_t steps[] = {0, 64, 64 * 1000, UINT64_C(1) << 35};
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        swd_msg m;
        make_batch(&m, steps[i], 64);
        size_t len;
        uint8_t *buf = seal_ok(&m, run_a, &len);
        printf("UpdateBatch envelope of 64 steps at first_step %llu: %zu bytes, %.3f bytes per "
               "update with the 8-byte nng TCP header\n",
               (unsigned long long)steps[i], len, (double)(len + NNG_TCP_FRAME_BYTES) / 64.0);
        assert_true(len < 3 * 64 - NNG_TCP_FRAME_BYTES);
        free(buf);
    }
}

static void test_names(void **state)
{
    (void)state;
    assert_string_equal(swd_drop_name(SWD_DROP_OVERSIZE), "oversize");
    assert_string_equal(swd_drop_name(SWD_DROP_BACKLOG), "backlog");
    assert_string_equal(swd_drop_name(SWD_DROP_BAD_SIGNATURE), "bad_signature");
    assert_string_equal(swd_drop_name(SWD_DROP_COUNT), "unknown");
    assert_string_equal(swd_node_state_name(SWD_STATE_SYNCING), "syncing");
    assert_string_equal(swd_node_state_name(SWD_STATE_UNSPECIFIED), "unknown");
    /* the join context is BLAKE2b-256 of the label, independent of the run */
    uint8_t a[SW_ID_BYTES], b[SW_ID_BYTES], want[SW_ID_BYTES];
    crypto_generichash(want, sizeof want, (const uint8_t *)"swarmtune.v1 join", 17, NULL, 0);
    swd_wire_context_bytes(SWD_CTX_JOIN, NULL, a);
    swd_wire_context_bytes(SWD_CTX_JOIN, run_a, b);
    assert_memory_equal(a, want, SW_ID_BYTES);
    assert_memory_equal(b, want, SW_ID_BYTES);
    swd_wire_context_bytes(SWD_CTX_RUN, run_a, a);
    assert_memory_equal(a, run_a, SW_ID_BYTES);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_every_type),
        cmocka_unit_test(test_maximal_announce_opens),
        cmocka_unit_test(test_another_run_is_bad_signature),
        cmocka_unit_test(test_contexts),
        cmocka_unit_test(test_truncations_are_dropped),
        cmocka_unit_test(test_random_corruptions_are_dropped),
        cmocka_unit_test(test_envelope_fields_bounded),
        cmocka_unit_test(test_batch_fields_bounded),
        cmocka_unit_test(test_announce_fields_bounded),
        cmocka_unit_test(test_other_fields_bounded),
        cmocka_unit_test(test_oversize_and_budget),
        cmocka_unit_test(test_batch_of_64_costs_under_3_bytes_per_update),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
