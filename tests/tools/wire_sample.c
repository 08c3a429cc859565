/*
 * wire_sample: C side of tests/ref/wire_reference.py, the check of
 * daemon/wire.c against Python protobuf and PyNaCl.
 *
 *   wire_sample seal DIR
 *     Makes a fresh Ed25519 key, writes its 32-byte seed to DIR/seed, one
 *     sealed envelope per sample to DIR/<name>.bin, and DIR/manifest.json:
 *       {"pk": hex, "run_id": hex, "samples": [{"file", "type", "context",
 *        "fields": {...}}]}
 *   wire_sample open RUN_ID_HEX|none FILE
 *     Opens an envelope made elsewhere under that run id and prints
 *       {"ok": true, "type", "context", "sender": hex, "fields": {...}}
 *     or {"ok": false, "drop": "<swd_drop name>"} (exit 0 / 1).
 *
 * Field encoding (both commands): bytes as lower-case hex, uint64 as decimal
 * strings (JSON integers stop at 2^53 in many readers), floats as the hex of
 * their IEEE-754 bits (exact), enums as integers, q as a list of ints.
 * Exit 2 on usage or I/O errors.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <sodium.h>

#include "wire.h"

static const char *const sample_type_names[] = {
    "none",    "batch",        "announce",       "hello", "welcome", "get_updates",
    "updates", "get_snapshot", "snapshot_chunk", "leave", "error",
};

static json_t *sample_hex(const uint8_t *b, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    char *s = malloc(2 * n + 1);
    for (size_t i = 0; i < n; i++) {
        s[2 * i] = digits[b[i] >> 4];
        s[2 * i + 1] = digits[b[i] & 15];
    }
    s[2 * n] = '\0';
    json_t *j = json_string(s);
    free(s);
    return j;
}

static json_t *sample_u64(uint64_t v)
{
    char s[32];
    snprintf(s, sizeof s, "%" PRIu64, v);
    return json_string(s);
}

static json_t *sample_f32(float f)
{
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    char s[16];
    snprintf(s, sizeof s, "%08" PRIx32, bits);
    return json_string(s);
}

static json_t *sample_vv(const swd_vv_entry *v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_pack("{s:o,s:o}", "origin", sample_hex(v[i].origin, 32),
                                           "count", sample_u64(v[i].count)));
    return a;
}

static json_t *sample_members(const swd_member_info *v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_pack("{s:o,s:s,s:s,s:b}", "id", sample_hex(v[i].id, 32),
                                           "pub_addr", v[i].pub_addr, "sync_addr", v[i].sync_addr,
                                           "alive", v[i].alive));
    return a;
}

static json_t *sample_fields(const swd_msg *m)
{
    switch (m->type) {
    case SWD_MSG_BATCH: {
        json_t *q = json_array();
        for (size_t i = 0; i < m->u.batch.n; i++)
            json_array_append_new(q, json_integer(m->u.batch.q[i]));
        return json_pack("{s:o,s:o,s:o}", "first_step", sample_u64(m->u.batch.first_step), "scale",
                         sample_f32(m->u.batch.scale), "q", q);
    }
    case SWD_MSG_ANNOUNCE: {
        const swd_announce *a = &m->u.announce;
        return json_pack("{s:o,s:s,s:s,s:i,s:o,s:o,s:o,s:o,s:o,s:o,s:o}", "seq", sample_u64(a->seq),
                         "pub_addr", a->pub_addr, "sync_addr", a->sync_addr, "state", (int)a->state,
                         "step", sample_u64(a->step), "vv", sample_vv(a->vv, a->n_vv),
                         "ledger_updates", sample_u64(a->ledger_updates), "digest",
                         a->has_digest ? sample_hex(a->digest, 32) : json_null(), "digest_vv",
                         sample_vv(a->digest_vv, a->n_digest_vv), "members",
                         sample_members(a->members, a->n_members), "loss", sample_f32(a->loss));
    }
    case SWD_MSG_HELLO:
        return json_pack("{s:s,s:s}", "pub_addr", m->u.hello.pub_addr, "sync_addr",
                         m->u.hello.sync_addr);
    case SWD_MSG_WELCOME: {
        const swd_welcome *w = &m->u.welcome;
        return json_pack("{s:o,s:o,s:o,s:o,s:o,s:o}", "run_spec",
                         sample_hex((const uint8_t *)w->run_spec, w->run_spec_len), "members",
                         sample_members(w->members, w->n_members), "vv", sample_vv(w->vv, w->n_vv),
                         "ledger_updates", sample_u64(w->ledger_updates), "snapshot_updates",
                         sample_u64(w->snapshot_updates), "snapshot_bytes",
                         sample_u64(w->snapshot_bytes));
    }
    case SWD_MSG_GET_UPDATES:
        return json_pack("{s:o,s:o,s:I}", "origin", sample_hex(m->u.get_updates.origin, 32),
                         "first_step", sample_u64(m->u.get_updates.first_step), "max_steps",
                         (json_int_t)m->u.get_updates.max_steps);
    case SWD_MSG_UPDATES: {
        json_t *a = json_array();
        for (size_t i = 0; i < m->u.updates.n; i++)
            json_array_append_new(a, sample_hex(m->u.updates.env[i], m->u.updates.env_len[i]));
        return json_pack("{s:o}", "batches", a);
    }
    case SWD_MSG_GET_SNAPSHOT:
        return json_pack("{s:o,s:I}", "snapshot_updates",
                         sample_u64(m->u.get_snapshot.snapshot_updates), "chunk",
                         (json_int_t)m->u.get_snapshot.chunk);
    case SWD_MSG_SNAPSHOT_CHUNK: {
        const swd_snapshot_chunk *c = &m->u.snapshot_chunk;
        return json_pack("{s:o,s:I,s:I,s:o,s:o}", "snapshot_updates",
                         sample_u64(c->snapshot_updates), "chunk", (json_int_t)c->chunk, "n_chunks",
                         (json_int_t)c->n_chunks, "total_bytes", sample_u64(c->total_bytes), "data",
                         sample_hex(c->data, c->len));
    }
    case SWD_MSG_ERROR:
        return json_pack("{s:i,s:s}", "code", (int)m->u.error.code, "message", m->u.error.message);
    default:
        return json_object();
    }
}

static int sample_write(const char *dir, const char *name, const void *data, size_t len)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
        fprintf(stderr, "wire_sample: %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

typedef struct sample_ctx {
    const char *dir;
    const uint8_t *run_id;
    uint8_t pk[crypto_sign_PUBLICKEYBYTES];
    uint8_t sk[crypto_sign_SECRETKEYBYTES];
    json_t *samples;
    int n;
} sample_ctx;

/* Seals m, writes it, records it in the manifest; *env gets a copy when asked. */
static int sample_add(sample_ctx *c, const char *name, const swd_msg *m, uint8_t **env,
                      size_t *env_len)
{
    uint8_t *buf;
    size_t len;
    int rc =
        swd_wire_seal(m, m->context == SWD_CTX_RUN ? c->run_id : NULL, c->pk, c->sk, &buf, &len);
    if (rc != 0) {
        fprintf(stderr, "wire_sample: sealing %s: %s\n", name, sw_strerror(rc));
        return -1;
    }
    char file[128];
    snprintf(file, sizeof file, "%02d_%s.bin", c->n++, name);
    if (sample_write(c->dir, file, buf, len) != 0) {
        free(buf);
        return -1;
    }
    json_array_append_new(c->samples,
                          json_pack("{s:s,s:s,s:s,s:I,s:o}", "file", file, "type",
                                    sample_type_names[m->type], "context",
                                    m->context == SWD_CTX_JOIN ? "join" : "run", "bytes",
                                    (json_int_t)len, "fields", sample_fields(m)));
    if (env) {
        *env = buf;
        *env_len = len;
    } else {
        free(buf);
    }
    return 0;
}

static void sample_id(uint8_t id[32])
{
    randombytes_buf(id, 32);
}

static int sample_seal(const char *dir)
{
    sample_ctx c = {.dir = dir, .samples = json_array()};
    uint8_t seed[crypto_sign_SEEDBYTES], run_id[32];
    randombytes_buf(seed, sizeof seed);
    crypto_sign_seed_keypair(c.pk, c.sk, seed);
    crypto_generichash(run_id, sizeof run_id, (const uint8_t *)"wire_sample run", 15, NULL, 0);
    c.run_id = run_id;
    if (sample_write(dir, "seed", seed, sizeof seed) != 0) return 2;
    swd_msg m;
    int rc = 0;

    /* batches: a typical one and the largest at the end of the step range */
    uint8_t *env[2] = {NULL, NULL};
    size_t env_len[2];
    memset(&m, 0, sizeof m);
    m.type = SWD_MSG_BATCH;
    m.u.batch.first_step = (UINT64_C(1) << 40) + 64;
    m.u.batch.scale = 0.00731f;
    m.u.batch.n = 64;
    for (size_t i = 0; i < 64; i++)
        m.u.batch.q[i] = (int8_t)((int)(i * 37 % 255) - 127);
    rc |= sample_add(&c, "batch", &m, &env[0], &env_len[0]);
    m.u.batch.first_step = UINT64_MAX - (SWD_WIRE_MAX_BATCH - 1);
    m.u.batch.scale = 3.0e38f;
    m.u.batch.n = SWD_WIRE_MAX_BATCH;
    for (size_t i = 0; i < SWD_WIRE_MAX_BATCH; i++)
        m.u.batch.q[i] = (int8_t)(i % 2 ? -127 : 127);
    rc |= sample_add(&c, "batch_max", &m, &env[1], &env_len[1]);

    swd_vv_entry vv[5];
    swd_member_info members[3];
    memset(members, 0, sizeof members);
    for (size_t i = 0; i < 5; i++) {
        sample_id(vv[i].origin);
        vv[i].count = i == 4 ? UINT64_MAX : i * 1000;
    }
    for (size_t i = 0; i < 3; i++) {
        sample_id(members[i].id);
        snprintf(members[i].pub_addr, sizeof members[i].pub_addr, "tcp://192.168.1.%zu:7701",
                 i + 1);
        snprintf(members[i].sync_addr, sizeof members[i].sync_addr, "tcp://h\xc3\xb4te-%zu:7702",
                 i);
        members[i].alive = i != 1;
    }
    memset(&m, 0, sizeof m);
    m.type = SWD_MSG_ANNOUNCE;
    m.u.announce.seq = 1234567;
    snprintf(m.u.announce.pub_addr, sizeof m.u.announce.pub_addr, "tcp://10.1.2.3:7701");
    snprintf(m.u.announce.sync_addr, sizeof m.u.announce.sync_addr, "tcp://10.1.2.3:7702");
    m.u.announce.state = SWD_STATE_TRAINING;
    m.u.announce.step = 4321;
    m.u.announce.n_vv = 5;
    m.u.announce.vv = vv;
    m.u.announce.ledger_updates = 98765;
    m.u.announce.has_digest = true;
    sample_id(m.u.announce.digest);
    m.u.announce.n_digest_vv = 2;
    m.u.announce.digest_vv = vv + 3;
    m.u.announce.n_members = 3;
    m.u.announce.members = members;
    m.u.announce.loss = 2.71828f;
    rc |= sample_add(&c, "announce", &m, NULL, NULL);
    memset(&m.u.announce, 0, sizeof m.u.announce); /* the arrays are on the stack */
    m.u.announce.seq = 1;
    m.u.announce.state = SWD_STATE_JOINING;
    m.u.announce.loss = NAN;
    rc |= sample_add(&c, "announce_empty", &m, NULL, NULL);

    memset(&m, 0, sizeof m);
    m.type = SWD_MSG_HELLO;
    m.context = SWD_CTX_JOIN;
    snprintf(m.u.hello.pub_addr, sizeof m.u.hello.pub_addr, "tcp://[::1]:7701");
    memset(m.u.hello.sync_addr, 'a', SWD_WIRE_MAX_ADDR); /* the longest address */
    rc |= sample_add(&c, "hello", &m, NULL, NULL);

    char spec[] = "{\"base_model\":\"00ff\",\"format\":1,\"lr\":0.0001}";
    memset(&m, 0, sizeof m);
    m.type = SWD_MSG_WELCOME;
    m.context = SWD_CTX_JOIN;
    m.u.welcome.run_spec = spec;
    m.u.welcome.run_spec_len = strlen(spec);
    m.u.welcome.n_members = 3;
    m.u.welcome.members = members;
    m.u.welcome.n_vv = 2;
    m.u.welcome.vv = vv;
    m.u.welcome.ledger_updates = 1000;
    m.u.welcome.snapshot_updates = 960;
    m.u.welcome.snapshot_bytes = 5u << 20;
    rc |= sample_add(&c, "welcome", &m, NULL, NULL);

    memset(&m, 0, sizeof m);
    m.type = SWD_MSG_GET_UPDATES;
    memcpy(m.u.get_updates.origin, vv[2].origin, 32);
    m.u.get_updates.first_step = 640;
    m.u.get_updates.max_steps = 4096;
    rc |= sample_add(&c, "get_updates", &m, NULL, NULL);

    if (env[0] && env[1]) {
        memset(&m, 0, sizeof m);
        m.type = SWD_MSG_UPDATES;
        m.u.updates.n = 2;
        m.u.updates.env = env;
        m.u.updates.env_len = env_len;
        rc |= sample_add(&c, "updates", &m, NULL, NULL);
    }
    free(env[0]);
    free(env[1]);

    memset(&m, 0, sizeof m);
    m.type = SWD_MSG_GET_SNAPSHOT;
    m.u.get_snapshot.snapshot_updates = 960;
    m.u.get_snapshot.chunk = 3;
    rc |= sample_add(&c, "get_snapshot", &m, NULL, NULL);

    uint8_t data[3000];
    randombytes_buf(data, sizeof data);
    memset(&m, 0, sizeof m);
    m.type = SWD_MSG_SNAPSHOT_CHUNK;
    m.u.snapshot_chunk.snapshot_updates = 960;
    m.u.snapshot_chunk.chunk = 4;
    m.u.snapshot_chunk.n_chunks = 5;
    m.u.snapshot_chunk.total_bytes = 4 * (uint64_t)SWD_WIRE_MAX_CHUNK + sizeof data;
    m.u.snapshot_chunk.data = data;
    m.u.snapshot_chunk.len = sizeof data;
    rc |= sample_add(&c, "snapshot_chunk", &m, NULL, NULL);

    memset(&m, 0, sizeof m);
    m.type = SWD_MSG_LEAVE;
    rc |= sample_add(&c, "leave", &m, NULL, NULL);

    memset(&m, 0, sizeof m);
    m.type = SWD_MSG_ERROR;
    m.context = SWD_CTX_JOIN;
    m.u.error.code = SWD_ERR_REFUSED;
    snprintf(m.u.error.message, sizeof m.u.error.message,
             "not admitted: run \xe2\x80\x9cx\xe2\x80\x9d");
    rc |= sample_add(&c, "error_join", &m, NULL, NULL);
    m.context = SWD_CTX_RUN;
    m.u.error.code = SWD_ERR_NOT_FOUND;
    snprintf(m.u.error.message, sizeof m.u.error.message, "no snapshot 960");
    rc |= sample_add(&c, "error_run", &m, NULL, NULL);

    json_t *manifest = json_pack("{s:o,s:o,s:o}", "pk", sample_hex(c.pk, 32), "run_id",
                                 sample_hex(run_id, 32), "samples", c.samples);
    char *text = json_dumps(manifest, JSON_INDENT(1) | JSON_SORT_KEYS);
    json_decref(manifest);
    if (!text || sample_write(dir, "manifest.json", text, strlen(text)) != 0) rc = -1;
    free(text);
    sodium_memzero(c.sk, sizeof c.sk);
    return rc ? 2 : 0;
}

static int sample_unhex(const char *s, uint8_t out[32])
{
    if (strlen(s) != 64) return -1;
    for (int i = 0; i < 32; i++) {
        unsigned v;
        if (sscanf(s + 2 * i, "%2x", &v) != 1) return -1;
        out[i] = (uint8_t)v;
    }
    return 0;
}

static int sample_open(const char *run_hex, const char *path)
{
    uint8_t run_id[32];
    bool has_run = strcmp(run_hex, "none") != 0;
    if (has_run && sample_unhex(run_hex, run_id) != 0) {
        fprintf(stderr, "wire_sample: %s: not 64 hex digits\n", run_hex);
        return 2;
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "wire_sample: %s: %s\n", path, strerror(errno));
        return 2;
    }
    /* one byte over the bound, so oversize input reaches swd_wire_open */
    size_t cap = SWD_WIRE_MAX_MSG + 1;
    uint8_t *buf = malloc(cap);
    size_t len = fread(buf, 1, cap, f);
    fclose(f);
    swd_msg m;
    swd_drop drop;
    int rc = swd_wire_open(buf, len, has_run ? run_id : NULL, &m, &drop);
    free(buf);
    json_t *out;
    if (rc == 0) {
        out = json_pack("{s:b,s:s,s:s,s:o,s:o}", "ok", 1, "type", sample_type_names[m.type],
                        "context", m.context == SWD_CTX_JOIN ? "join" : "run", "sender",
                        sample_hex(m.sender, 32), "fields", sample_fields(&m));
        swd_msg_fini(&m);
    } else {
        out = json_pack("{s:b,s:s}", "ok", 0, "drop", swd_drop_name(drop));
    }
    char *text = json_dumps(out, JSON_SORT_KEYS);
    json_decref(out);
    puts(text);
    free(text);
    return rc == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (sodium_init() < 0) return 2;
    if (argc == 3 && strcmp(argv[1], "seal") == 0) return sample_seal(argv[2]);
    if (argc == 4 && strcmp(argv[1], "open") == 0) return sample_open(argv[2], argv[3]);
    fputs("usage: wire_sample seal DIR | wire_sample open RUN_ID_HEX|none FILE\n", stderr);
    return 2;
}
