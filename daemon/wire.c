#include "wire.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "swarm.pb-c.h"

typedef Swarmtune__V1__Envelope wire_envelope;
typedef Swarmtune__V1__Body wire_body;
typedef Swarmtune__V1__VersionEntry wire_vv_entry;
typedef Swarmtune__V1__Member wire_member;

#define WIRE_JOIN_LABEL "swarmtune.v1 join"

/*
 * Unpacking allocates more than the input (structs, pointer arrays, the
 * parser's scratch), about 3-4x for a maximal Announce of 8192 version
 * entries; a hostile body of empty repeated entries would need ~30x.  The
 * budget is cumulative (frees do not refill it) so it bounds the total.
 */
#define WIRE_BUDGET_FACTOR 6u
#define WIRE_BUDGET_SLACK (64u << 10)

/* Body -> Announce -> Member is as deep as the schema goes. */
#define WIRE_SCAN_MAX_DEPTH 4

/* What wire_scan found in the string fields of a body. */
#define WIRE_SCAN_BAD_UTF8 1u /* proto3 strings must be UTF-8: "does not decode" */
#define WIRE_SCAN_NUL 2u      /* a NUL inside a string: C would silently cut it */

static const char *const wire_drop_names[] = {
#define WIRE_DROP_NAME(e, name) name,
    SWD_DROP_LIST(WIRE_DROP_NAME)
#undef WIRE_DROP_NAME
};

const char *swd_drop_name(swd_drop d)
{
    if ((int)d < 0 || d >= SWD_DROP_COUNT) return "unknown";
    return wire_drop_names[d];
}

const char *swd_node_state_name(swd_node_state s)
{
    switch (s) {
    case SWD_STATE_JOINING:
        return "joining";
    case SWD_STATE_TRAINING:
        return "training";
    case SWD_STATE_DONE:
        return "done";
    case SWD_STATE_PAUSED:
        return "paused";
    case SWD_STATE_SYNCING:
        return "syncing";
    case SWD_STATE_UNSPECIFIED:
        break;
    }
    return "unknown";
}

void swd_wire_context_bytes(swd_context ctx, const uint8_t run_id[SW_ID_BYTES],
                            uint8_t out[SW_ID_BYTES])
{
    if (ctx == SWD_CTX_JOIN) {
        SW_ASSERT(sodium_init() >= 0);
        crypto_generichash(out, SW_ID_BYTES, (const unsigned char *)WIRE_JOIN_LABEL,
                           strlen(WIRE_JOIN_LABEL), NULL, 0);
        return;
    }
    SW_ASSERT(run_id != NULL);
    memcpy(out, run_id, SW_ID_BYTES);
}

/* ---- bounded allocator -------------------------------------------------- */

typedef struct wire_budget {
    size_t left;
} wire_budget;

static void *wire_budget_alloc(void *data, size_t size)
{
    wire_budget *b = data;
    if (size > b->left) return NULL;
    b->left -= size;
    return malloc(size ? size : 1);
}

static void wire_budget_free(void *data, void *p)
{
    (void)data;
    free(p);
}

static ProtobufCAllocator wire_allocator(wire_budget *b, size_t input_len)
{
    /* callers bound input_len by SWD_WIRE_MAX_MSG first; saturate anyway */
    b->left = input_len > SWD_WIRE_MAX_MSG ? WIRE_BUDGET_SLACK
                                           : WIRE_BUDGET_FACTOR * input_len + WIRE_BUDGET_SLACK;
    ProtobufCAllocator a = {
        .alloc = wire_budget_alloc, .free = wire_budget_free, .allocator_data = b};
    return a;
}

/* ---- string scan -------------------------------------------------------- */

/* Strict UTF-8 (no overlongs, surrogates or code points above U+10FFFF). */
static bool wire_utf8_ok(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        uint32_t cp, min;
        if ((c & 0xe0) == 0xc0) {
            len = 2, cp = c & 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            len = 3, cp = c & 0x0f, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            len = 4, cp = c & 0x07, min = 0x10000;
        } else {
            return false;
        }
        if (n - i < len) return false;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return false;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
        i += len;
    }
    return true;
}

static bool wire_varint(const uint8_t **pp, const uint8_t *end, uint64_t *v)
{
    uint64_t x = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (*pp >= end) return false;
        uint8_t b = *(*pp)++;
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return true;
        }
    }
    return false;
}

/*
 * protobuf-c 1.4 neither checks that strings are UTF-8 nor keeps their
 * length (a NUL inside ends the C string early), so the string fields are
 * checked on the wire bytes.  false: the bytes do not parse at all.
 */
static bool wire_scan(const uint8_t *p, size_t len, const ProtobufCMessageDescriptor *d,
                      unsigned depth, unsigned *flags)
{
    if (depth > WIRE_SCAN_MAX_DEPTH) return false;
    const uint8_t *end = p + len;
    while (p < end) {
        uint64_t key, n;
        if (!wire_varint(&p, end, &key)) return false;
        switch (key & 7) {
        case 0:
            if (!wire_varint(&p, end, &n)) return false;
            break;
        case 1:
            if (end - p < 8) return false;
            p += 8;
            break;
        case 5:
            if (end - p < 4) return false;
            p += 4;
            break;
        case 2: {
            if (!wire_varint(&p, end, &n) || n > (uint64_t)(end - p)) return false;
            uint64_t number = key >> 3;
            const ProtobufCFieldDescriptor *f =
                number <= UINT32_MAX ? protobuf_c_message_descriptor_get_field(d, (unsigned)number)
                                     : NULL;
            if (f && f->type == PROTOBUF_C_TYPE_STRING) {
                if (memchr(p, 0, n)) *flags |= WIRE_SCAN_NUL;
                if (!wire_utf8_ok(p, n)) *flags |= WIRE_SCAN_BAD_UTF8;
            } else if (f && f->type == PROTOBUF_C_TYPE_MESSAGE) {
                if (!wire_scan(p, n, f->descriptor, depth + 1, flags)) return false;
            }
            p += n;
            break;
        }
        default:
            return false;
        }
    }
    return true;
}

/* ---- bounds, shared by seal and open ------------------------------------ */

static bool wire_allowed(swd_msg_type t, swd_context ctx)
{
    bool join_only = t == SWD_MSG_HELLO || t == SWD_MSG_WELCOME;
    if (ctx == SWD_CTX_JOIN) return join_only || t == SWD_MSG_ERROR;
    return !join_only;
}

static swd_msg_type wire_type_of(Swarmtune__V1__Body__MsgCase c)
{
    switch (c) {
    case SWARMTUNE__V1__BODY__MSG_BATCH:
        return SWD_MSG_BATCH;
    case SWARMTUNE__V1__BODY__MSG_ANNOUNCE:
        return SWD_MSG_ANNOUNCE;
    case SWARMTUNE__V1__BODY__MSG_HELLO:
        return SWD_MSG_HELLO;
    case SWARMTUNE__V1__BODY__MSG_WELCOME:
        return SWD_MSG_WELCOME;
    case SWARMTUNE__V1__BODY__MSG_GET_UPDATES:
        return SWD_MSG_GET_UPDATES;
    case SWARMTUNE__V1__BODY__MSG_UPDATES:
        return SWD_MSG_UPDATES;
    case SWARMTUNE__V1__BODY__MSG_GET_SNAPSHOT:
        return SWD_MSG_GET_SNAPSHOT;
    case SWARMTUNE__V1__BODY__MSG_SNAPSHOT_CHUNK:
        return SWD_MSG_SNAPSHOT_CHUNK;
    case SWARMTUNE__V1__BODY__MSG_LEAVE:
        return SWD_MSG_LEAVE;
    case SWARMTUNE__V1__BODY__MSG_ERROR:
        return SWD_MSG_ERROR;
    default:
        return SWD_MSG_NONE;
    }
}

/* The string bytes themselves were checked by wire_scan (no NUL inside). */
static bool wire_addr_ok(const char *s)
{
    return s && strnlen(s, SWD_WIRE_MAX_ADDR + 1) <= SWD_WIRE_MAX_ADDR;
}

static bool wire_vv_ok(wire_vv_entry *const *v, size_t n)
{
    if (n > SWD_WIRE_MAX_VV) return false;
    for (size_t i = 0; i < n; i++)
        if (v[i]->origin.len != SW_ID_BYTES) return false;
    return true;
}

static bool wire_members_ok(wire_member *const *v, size_t n)
{
    if (n > SWD_WIRE_MAX_MEMBERS) return false;
    for (size_t i = 0; i < n; i++) {
        if (v[i]->id.len != SW_ID_BYTES) return false;
        if (!wire_addr_ok(v[i]->pub_addr) || !wire_addr_ok(v[i]->sync_addr)) return false;
    }
    return true;
}

static bool wire_batch_ok(const Swarmtune__V1__UpdateBatch *b)
{
    if (b->q.len < 1 || b->q.len > SWD_WIRE_MAX_BATCH) return false;
    if (memchr(b->q.data, 0x80, b->q.len)) return false; /* int8 -128 */
    if (!isfinite(b->scale) || !(b->scale > 0.0f)) return false;
    return b->first_step <= UINT64_MAX - (b->q.len - 1); /* the last step exists */
}

static bool wire_chunk_ok(const Swarmtune__V1__SnapshotChunk *c)
{
    if (c->data.len > SWD_WIRE_MAX_CHUNK || c->chunk >= c->n_chunks) return false;
    if (c->digest.len != SW_ID_BYTES) return false;
    uint8_t d[SW_ID_BYTES];
    crypto_generichash(d, sizeof d, c->data.data, c->data.len, NULL, 0);
    return sodium_memcmp(d, c->digest.data, sizeof d) == 0;
}

/* Every field bounded (wire.h); scan_flags from wire_scan of the body. */
static bool wire_body_ok(const wire_body *b, unsigned scan_flags)
{
    if (scan_flags & WIRE_SCAN_NUL) return false;
    switch (b->msg_case) {
    case SWARMTUNE__V1__BODY__MSG_BATCH:
        return wire_batch_ok(b->batch);
    case SWARMTUNE__V1__BODY__MSG_ANNOUNCE: {
        const Swarmtune__V1__Announce *a = b->announce;
        return wire_addr_ok(a->pub_addr) && wire_addr_ok(a->sync_addr) &&
               (int)a->state >= SWARMTUNE__V1__NODE_STATE__NODE_STATE_UNSPECIFIED &&
               (int)a->state <= SWARMTUNE__V1__NODE_STATE__NODE_STATE_SYNCING &&
               wire_vv_ok(a->vv, a->n_vv) && wire_vv_ok(a->digest_vv, a->n_digest_vv) &&
               (a->digest.len == 0 || a->digest.len == SW_ID_BYTES) &&
               wire_members_ok(a->members, a->n_members);
    }
    case SWARMTUNE__V1__BODY__MSG_HELLO:
        return wire_addr_ok(b->hello->pub_addr) && wire_addr_ok(b->hello->sync_addr);
    case SWARMTUNE__V1__BODY__MSG_WELCOME: {
        const Swarmtune__V1__Welcome *w = b->welcome;
        return w->run_spec.len >= 1 && w->run_spec.len <= SWD_WIRE_MAX_RUNSPEC &&
               wire_members_ok(w->members, w->n_members) && wire_vv_ok(w->vv, w->n_vv);
    }
    case SWARMTUNE__V1__BODY__MSG_GET_UPDATES:
        return b->get_updates->origin.len == SW_ID_BYTES;
    case SWARMTUNE__V1__BODY__MSG_UPDATES: {
        const Swarmtune__V1__Updates *u = b->updates;
        if (u->n_batches > SWD_WIRE_MAX_UPDATES_BATCHES) return false;
        for (size_t i = 0; i < u->n_batches; i++)
            if (u->batches[i].len < 1 || u->batches[i].len > SWD_WIRE_MAX_MSG) return false;
        return true;
    }
    case SWARMTUNE__V1__BODY__MSG_GET_SNAPSHOT:
        return true;
    case SWARMTUNE__V1__BODY__MSG_SNAPSHOT_CHUNK:
        return wire_chunk_ok(b->snapshot_chunk);
    case SWARMTUNE__V1__BODY__MSG_LEAVE:
        return true;
    case SWARMTUNE__V1__BODY__MSG_ERROR:
        return (int)b->error->code >= SWARMTUNE__V1__ERROR_CODE__ERROR_UNSPECIFIED &&
               (int)b->error->code <= SWARMTUNE__V1__ERROR_CODE__ERROR_REFUSED &&
               b->error->message && strlen(b->error->message) <= SWD_WIRE_MAX_ERROR_TEXT;
    default:
        return false;
    }
}

/* ---- swd_msg ------------------------------------------------------------ */

void swd_msg_fini(swd_msg *m)
{
    if (!m) return;
    switch (m->type) {
    case SWD_MSG_ANNOUNCE:
        free(m->u.announce.vv);
        free(m->u.announce.digest_vv);
        free(m->u.announce.members);
        break;
    case SWD_MSG_WELCOME:
        free(m->u.welcome.run_spec);
        free(m->u.welcome.members);
        free(m->u.welcome.vv);
        break;
    case SWD_MSG_UPDATES:
        for (size_t i = 0; m->u.updates.env && i < m->u.updates.n; i++)
            free(m->u.updates.env[i]);
        free(m->u.updates.env);
        free(m->u.updates.env_len);
        break;
    case SWD_MSG_SNAPSHOT_CHUNK:
        free(m->u.snapshot_chunk.data);
        break;
    default:
        break;
    }
    memset(m, 0, sizeof *m);
}

/* ---- open --------------------------------------------------------------- */

/* Copies of checked protobuf fields into the plain structs. */
static int wire_copy_vv(wire_vv_entry *const *v, size_t n, swd_vv_entry **out)
{
    *out = NULL;
    if (n == 0) return 0;
    swd_vv_entry *e = calloc(n, sizeof *e);
    if (!e) return SW_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        memcpy(e[i].origin, v[i]->origin.data, SW_ID_BYTES);
        e[i].count = v[i]->count;
    }
    *out = e;
    return 0;
}

static int wire_copy_members(wire_member *const *v, size_t n, swd_member_info **out)
{
    *out = NULL;
    if (n == 0) return 0;
    swd_member_info *e = calloc(n, sizeof *e);
    if (!e) return SW_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        memcpy(e[i].id, v[i]->id.data, SW_ID_BYTES);
        strcpy(e[i].pub_addr, v[i]->pub_addr);
        strcpy(e[i].sync_addr, v[i]->sync_addr);
        e[i].alive = v[i]->alive != 0;
    }
    *out = e;
    return 0;
}

/* Fills m from a body wire_body_ok accepted; on SW_ENOMEM the caller finis m. */
static int wire_copy_body(const wire_body *b, swd_msg *m)
{
    switch (m->type) {
    case SWD_MSG_BATCH: {
        swd_batch *o = &m->u.batch;
        o->first_step = b->batch->first_step;
        o->scale = b->batch->scale;
        o->n = b->batch->q.len;
        memcpy(o->q, b->batch->q.data, o->n);
        return 0;
    }
    case SWD_MSG_ANNOUNCE: {
        const Swarmtune__V1__Announce *a = b->announce;
        swd_announce *o = &m->u.announce;
        o->seq = a->seq;
        strcpy(o->pub_addr, a->pub_addr);
        strcpy(o->sync_addr, a->sync_addr);
        o->state = (swd_node_state)a->state;
        o->step = a->step;
        o->ledger_updates = a->ledger_updates;
        o->has_digest = a->digest.len == SW_ID_BYTES;
        if (o->has_digest) memcpy(o->digest, a->digest.data, SW_ID_BYTES);
        o->loss = a->loss;
        o->n_vv = a->n_vv;
        o->n_digest_vv = a->n_digest_vv;
        o->n_members = a->n_members;
        if (wire_copy_vv(a->vv, a->n_vv, &o->vv) ||
            wire_copy_vv(a->digest_vv, a->n_digest_vv, &o->digest_vv) ||
            wire_copy_members(a->members, a->n_members, &o->members))
            return SW_ENOMEM;
        return 0;
    }
    case SWD_MSG_HELLO:
        strcpy(m->u.hello.pub_addr, b->hello->pub_addr);
        strcpy(m->u.hello.sync_addr, b->hello->sync_addr);
        return 0;
    case SWD_MSG_WELCOME: {
        const Swarmtune__V1__Welcome *w = b->welcome;
        swd_welcome *o = &m->u.welcome;
        o->ledger_updates = w->ledger_updates;
        o->snapshot_updates = w->snapshot_updates;
        o->snapshot_bytes = w->snapshot_bytes;
        o->n_members = w->n_members;
        o->n_vv = w->n_vv;
        o->run_spec = malloc(w->run_spec.len + 1);
        if (!o->run_spec) return SW_ENOMEM;
        memcpy(o->run_spec, w->run_spec.data, w->run_spec.len);
        o->run_spec[w->run_spec.len] = '\0';
        o->run_spec_len = w->run_spec.len;
        if (wire_copy_members(w->members, w->n_members, &o->members) ||
            wire_copy_vv(w->vv, w->n_vv, &o->vv))
            return SW_ENOMEM;
        return 0;
    }
    case SWD_MSG_GET_UPDATES:
        memcpy(m->u.get_updates.origin, b->get_updates->origin.data, SW_ID_BYTES);
        m->u.get_updates.first_step = b->get_updates->first_step;
        m->u.get_updates.max_steps = b->get_updates->max_steps;
        return 0;
    case SWD_MSG_UPDATES: {
        const Swarmtune__V1__Updates *u = b->updates;
        swd_updates *o = &m->u.updates;
        if (u->n_batches == 0) return 0;
        o->env = calloc(u->n_batches, sizeof *o->env);
        o->env_len = calloc(u->n_batches, sizeof *o->env_len);
        if (!o->env || !o->env_len) return SW_ENOMEM;
        o->n = u->n_batches;
        for (size_t i = 0; i < u->n_batches; i++) {
            o->env[i] = malloc(u->batches[i].len);
            if (!o->env[i]) return SW_ENOMEM;
            memcpy(o->env[i], u->batches[i].data, u->batches[i].len);
            o->env_len[i] = u->batches[i].len;
        }
        return 0;
    }
    case SWD_MSG_GET_SNAPSHOT:
        m->u.get_snapshot.snapshot_updates = b->get_snapshot->snapshot_updates;
        m->u.get_snapshot.chunk = b->get_snapshot->chunk;
        return 0;
    case SWD_MSG_SNAPSHOT_CHUNK: {
        const Swarmtune__V1__SnapshotChunk *c = b->snapshot_chunk;
        swd_snapshot_chunk *o = &m->u.snapshot_chunk;
        o->snapshot_updates = c->snapshot_updates;
        o->chunk = c->chunk;
        o->n_chunks = c->n_chunks;
        o->total_bytes = c->total_bytes;
        if (c->data.len > 0) {
            o->data = malloc(c->data.len);
            if (!o->data) return SW_ENOMEM;
            memcpy(o->data, c->data.data, c->data.len);
        }
        o->len = c->data.len;
        return 0;
    }
    case SWD_MSG_ERROR:
        m->u.error.code = (swd_error_code)b->error->code;
        strcpy(m->u.error.message, b->error->message);
        return 0;
    default:
        return 0; /* LEAVE: nothing */
    }
}

/* Context bytes || body under the signature (a copy: libsodium has no
 * streaming plain Ed25519). */
static uint8_t *wire_signed_bytes(const uint8_t ctx[SW_ID_BYTES], const uint8_t *body,
                                  size_t body_len)
{
    uint8_t *s = malloc(SW_ID_BYTES + body_len);
    if (!s) return NULL;
    memcpy(s, ctx, SW_ID_BYTES);
    if (body_len) memcpy(s + SW_ID_BYTES, body, body_len);
    return s;
}

int swd_wire_open(const uint8_t *buf, size_t len, const uint8_t run_id[SW_ID_BYTES], swd_msg *m,
                  swd_drop *drop)
{
    SW_ASSERT(m && drop);
    SW_ASSERT(sodium_init() >= 0);
    memset(m, 0, sizeof *m);
    wire_envelope *env = NULL;
    wire_body *body = NULL;
    uint8_t *signed_bytes = NULL;
    wire_budget env_budget, body_budget;
    ProtobufCAllocator env_alloc = wire_allocator(&env_budget, len);
    ProtobufCAllocator body_alloc = wire_allocator(&body_budget, 0);
    int rc = SW_EFORMAT;
    *drop = SWD_DROP_MALFORMED;

    if (len > SWD_WIRE_MAX_MSG) {
        *drop = SWD_DROP_OVERSIZE;
        goto fail;
    }
    if (!buf && len) goto fail;
    env = swarmtune__v1__envelope__unpack(&env_alloc, len, buf);
    if (!env) goto fail;

    *drop = SWD_DROP_BAD_FIELD;
    if (env->sender.len != SW_ID_BYTES || env->signature.len != SWD_WIRE_SIG_BYTES) goto fail;
    swd_context ctx;
    if (env->context == SWARMTUNE__V1__CONTEXT__CONTEXT_RUN)
        ctx = SWD_CTX_RUN;
    else if (env->context == SWARMTUNE__V1__CONTEXT__CONTEXT_JOIN)
        ctx = SWD_CTX_JOIN;
    else
        goto fail;

    *drop = SWD_DROP_BAD_SIGNATURE;
    if (ctx == SWD_CTX_RUN && !run_id) goto fail;
    uint8_t ctx_bytes[SW_ID_BYTES];
    swd_wire_context_bytes(ctx, run_id, ctx_bytes);
    signed_bytes = wire_signed_bytes(ctx_bytes, env->body.data, env->body.len);
    if (!signed_bytes) {
        rc = SW_ENOMEM;
        goto fail;
    }
    if (crypto_sign_verify_detached(env->signature.data, signed_bytes, SW_ID_BYTES + env->body.len,
                                    env->sender.data) != 0)
        goto fail;

    *drop = SWD_DROP_MALFORMED;
    body_alloc = wire_allocator(&body_budget, env->body.len);
    body = swarmtune__v1__body__unpack(&body_alloc, env->body.len, env->body.data);
    if (!body) goto fail;
    unsigned scan_flags = 0;
    if (!wire_scan(env->body.data, env->body.len, &swarmtune__v1__body__descriptor, 0,
                   &scan_flags) ||
        (scan_flags & WIRE_SCAN_BAD_UTF8))
        goto fail;
    swd_msg_type type = wire_type_of(body->msg_case);
    if (type == SWD_MSG_NONE) goto fail;

    *drop = SWD_DROP_WRONG_CONTEXT;
    if (!wire_allowed(type, ctx)) goto fail;

    *drop = SWD_DROP_BAD_FIELD;
    if (!wire_body_ok(body, scan_flags)) goto fail;

    m->type = type;
    m->context = ctx;
    memcpy(m->sender, env->sender.data, SW_ID_BYTES);
    rc = wire_copy_body(body, m);
    if (rc != 0) {
        *drop = SWD_DROP_MALFORMED;
        goto fail;
    }
    free(signed_bytes);
    swarmtune__v1__body__free_unpacked(body, &body_alloc);
    swarmtune__v1__envelope__free_unpacked(env, &env_alloc);
    return 0;

fail:
    swd_msg_fini(m);
    free(signed_bytes);
    if (body) swarmtune__v1__body__free_unpacked(body, &body_alloc);
    if (env) swarmtune__v1__envelope__free_unpacked(env, &env_alloc);
    return rc;
}

int swd_wire_peek_sender(const uint8_t *buf, size_t len, uint8_t sender[SW_ID_BYTES])
{
    return swd_wire_peek(buf, len, sender, NULL);
}

int swd_wire_peek(const uint8_t *buf, size_t len, uint8_t sender[SW_ID_BYTES], swd_context *ctx)
{
    if (len > SWD_WIRE_MAX_MSG || (!buf && len)) return SW_EFORMAT;
    wire_budget budget;
    ProtobufCAllocator alloc = wire_allocator(&budget, len);
    wire_envelope *env = swarmtune__v1__envelope__unpack(&alloc, len, buf);
    if (!env) return SW_EFORMAT;
    int rc = SW_EFORMAT;
    if (env->sender.len == SW_ID_BYTES) {
        memcpy(sender, env->sender.data, SW_ID_BYTES);
        if (ctx)
            *ctx =
                env->context == SWARMTUNE__V1__CONTEXT__CONTEXT_JOIN ? SWD_CTX_JOIN : SWD_CTX_RUN;
        rc = 0;
    }
    swarmtune__v1__envelope__free_unpacked(env, &alloc);
    return rc;
}

/* ---- seal --------------------------------------------------------------- */

/* The protobuf structs a seal builds, and the arrays it allocates for them. */
typedef struct wire_build {
    wire_body body;
    Swarmtune__V1__UpdateBatch batch;
    Swarmtune__V1__Announce announce;
    Swarmtune__V1__Hello hello;
    Swarmtune__V1__Welcome welcome;
    Swarmtune__V1__GetUpdates get_updates;
    Swarmtune__V1__Updates updates;
    Swarmtune__V1__GetSnapshot get_snapshot;
    Swarmtune__V1__SnapshotChunk snapshot_chunk;
    Swarmtune__V1__Leave leave;
    Swarmtune__V1__Error error;
    uint8_t chunk_digest[SW_ID_BYTES];
    /* every array below is freed by wire_build_fini */
    wire_vv_entry *vv_store[2];
    wire_vv_entry **vv_ptrs[2];
    wire_member *member_store;
    wire_member **member_ptrs;
    ProtobufCBinaryData *batches;
} wire_build;

static void wire_build_fini(wire_build *w)
{
    for (int i = 0; i < 2; i++) {
        free(w->vv_store[i]);
        free(w->vv_ptrs[i]);
    }
    free(w->member_store);
    free(w->member_ptrs);
    free(w->batches);
}

/* Binary fields point into the caller's struct: pack only reads them. */
static ProtobufCBinaryData wire_bin(const void *p, size_t n)
{
    ProtobufCBinaryData b = {.len = n, .data = (uint8_t *)p};
    return b;
}

static int wire_build_vv(wire_build *w, int slot, const swd_vv_entry *v, size_t n, size_t *n_out,
                         wire_vv_entry ***out)
{
    *n_out = 0;
    *out = NULL;
    if (n > SWD_WIRE_MAX_VV || (n && !v)) return SW_EINVAL;
    if (n == 0) return 0;
    w->vv_store[slot] = calloc(n, sizeof(wire_vv_entry));
    w->vv_ptrs[slot] = calloc(n, sizeof(wire_vv_entry *));
    if (!w->vv_store[slot] || !w->vv_ptrs[slot]) return SW_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        wire_vv_entry *e = &w->vv_store[slot][i];
        swarmtune__v1__version_entry__init(e);
        e->origin = wire_bin(v[i].origin, SW_ID_BYTES);
        e->count = v[i].count;
        w->vv_ptrs[slot][i] = e;
    }
    *n_out = n;
    *out = w->vv_ptrs[slot];
    return 0;
}

static bool wire_cstr_ok(const char *s, size_t cap)
{
    size_t n = strnlen(s, cap + 1);
    return n <= cap && wire_utf8_ok((const uint8_t *)s, n);
}

static int wire_build_members(wire_build *w, const swd_member_info *v, size_t n, size_t *n_out,
                              wire_member ***out)
{
    *n_out = 0;
    *out = NULL;
    if (n > SWD_WIRE_MAX_MEMBERS || (n && !v)) return SW_EINVAL;
    if (n == 0) return 0;
    for (size_t i = 0; i < n; i++)
        if (!wire_cstr_ok(v[i].pub_addr, SWD_WIRE_MAX_ADDR) ||
            !wire_cstr_ok(v[i].sync_addr, SWD_WIRE_MAX_ADDR))
            return SW_EINVAL;
    w->member_store = calloc(n, sizeof(wire_member));
    w->member_ptrs = calloc(n, sizeof(wire_member *));
    if (!w->member_store || !w->member_ptrs) return SW_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        wire_member *e = &w->member_store[i];
        swarmtune__v1__member__init(e);
        e->id = wire_bin(v[i].id, SW_ID_BYTES);
        e->pub_addr = (char *)v[i].pub_addr;
        e->sync_addr = (char *)v[i].sync_addr;
        e->alive = v[i].alive;
        w->member_ptrs[i] = e;
    }
    *n_out = n;
    *out = w->member_ptrs;
    return 0;
}

/* Fills w->body from m.  Checks what must hold before the struct is read
 * (C strings terminated, counts within the arrays); wire_body_ok does the rest. */
static int wire_build_body(const swd_msg *m, wire_build *w)
{
    wire_body *b = &w->body;
    swarmtune__v1__body__init(b);
    switch (m->type) {
    case SWD_MSG_BATCH: {
        const swd_batch *s = &m->u.batch;
        if (s->n < 1 || s->n > SWD_WIRE_MAX_BATCH) return SW_EINVAL;
        swarmtune__v1__update_batch__init(&w->batch);
        w->batch.first_step = s->first_step;
        w->batch.scale = s->scale;
        w->batch.q = wire_bin(s->q, s->n);
        b->msg_case = SWARMTUNE__V1__BODY__MSG_BATCH;
        b->batch = &w->batch;
        return 0;
    }
    case SWD_MSG_ANNOUNCE: {
        const swd_announce *s = &m->u.announce;
        Swarmtune__V1__Announce *a = &w->announce;
        swarmtune__v1__announce__init(a);
        if (!wire_cstr_ok(s->pub_addr, SWD_WIRE_MAX_ADDR) ||
            !wire_cstr_ok(s->sync_addr, SWD_WIRE_MAX_ADDR))
            return SW_EINVAL;
        a->seq = s->seq;
        a->pub_addr = (char *)s->pub_addr;
        a->sync_addr = (char *)s->sync_addr;
        a->state = (Swarmtune__V1__NodeState)s->state;
        a->step = s->step;
        a->ledger_updates = s->ledger_updates;
        if (s->has_digest) a->digest = wire_bin(s->digest, SW_ID_BYTES);
        a->loss = s->loss;
        int rc = wire_build_vv(w, 0, s->vv, s->n_vv, &a->n_vv, &a->vv);
        if (!rc)
            rc = wire_build_vv(w, 1, s->digest_vv, s->n_digest_vv, &a->n_digest_vv, &a->digest_vv);
        if (!rc) rc = wire_build_members(w, s->members, s->n_members, &a->n_members, &a->members);
        if (rc) return rc;
        b->msg_case = SWARMTUNE__V1__BODY__MSG_ANNOUNCE;
        b->announce = a;
        return 0;
    }
    case SWD_MSG_HELLO: {
        const swd_hello *s = &m->u.hello;
        if (!wire_cstr_ok(s->pub_addr, SWD_WIRE_MAX_ADDR) ||
            !wire_cstr_ok(s->sync_addr, SWD_WIRE_MAX_ADDR))
            return SW_EINVAL;
        swarmtune__v1__hello__init(&w->hello);
        w->hello.pub_addr = (char *)s->pub_addr;
        w->hello.sync_addr = (char *)s->sync_addr;
        b->msg_case = SWARMTUNE__V1__BODY__MSG_HELLO;
        b->hello = &w->hello;
        return 0;
    }
    case SWD_MSG_WELCOME: {
        const swd_welcome *s = &m->u.welcome;
        Swarmtune__V1__Welcome *o = &w->welcome;
        swarmtune__v1__welcome__init(o);
        if (!s->run_spec || s->run_spec_len < 1 || s->run_spec_len > SWD_WIRE_MAX_RUNSPEC)
            return SW_EINVAL;
        o->run_spec = wire_bin(s->run_spec, s->run_spec_len);
        o->ledger_updates = s->ledger_updates;
        o->snapshot_updates = s->snapshot_updates;
        o->snapshot_bytes = s->snapshot_bytes;
        int rc = wire_build_members(w, s->members, s->n_members, &o->n_members, &o->members);
        if (!rc) rc = wire_build_vv(w, 0, s->vv, s->n_vv, &o->n_vv, &o->vv);
        if (rc) return rc;
        b->msg_case = SWARMTUNE__V1__BODY__MSG_WELCOME;
        b->welcome = o;
        return 0;
    }
    case SWD_MSG_GET_UPDATES:
        swarmtune__v1__get_updates__init(&w->get_updates);
        w->get_updates.origin = wire_bin(m->u.get_updates.origin, SW_ID_BYTES);
        w->get_updates.first_step = m->u.get_updates.first_step;
        w->get_updates.max_steps = m->u.get_updates.max_steps;
        b->msg_case = SWARMTUNE__V1__BODY__MSG_GET_UPDATES;
        b->get_updates = &w->get_updates;
        return 0;
    case SWD_MSG_UPDATES: {
        const swd_updates *s = &m->u.updates;
        swarmtune__v1__updates__init(&w->updates);
        if (s->n > SWD_WIRE_MAX_UPDATES_BATCHES || (s->n && (!s->env || !s->env_len)))
            return SW_EINVAL;
        if (s->n) {
            w->batches = calloc(s->n, sizeof *w->batches);
            if (!w->batches) return SW_ENOMEM;
            for (size_t i = 0; i < s->n; i++) {
                if (!s->env[i] || s->env_len[i] < 1 || s->env_len[i] > SWD_WIRE_MAX_MSG)
                    return SW_EINVAL;
                w->batches[i] = wire_bin(s->env[i], s->env_len[i]);
            }
        }
        w->updates.n_batches = s->n;
        w->updates.batches = w->batches;
        b->msg_case = SWARMTUNE__V1__BODY__MSG_UPDATES;
        b->updates = &w->updates;
        return 0;
    }
    case SWD_MSG_GET_SNAPSHOT:
        swarmtune__v1__get_snapshot__init(&w->get_snapshot);
        w->get_snapshot.snapshot_updates = m->u.get_snapshot.snapshot_updates;
        w->get_snapshot.chunk = m->u.get_snapshot.chunk;
        b->msg_case = SWARMTUNE__V1__BODY__MSG_GET_SNAPSHOT;
        b->get_snapshot = &w->get_snapshot;
        return 0;
    case SWD_MSG_SNAPSHOT_CHUNK: {
        const swd_snapshot_chunk *s = &m->u.snapshot_chunk;
        Swarmtune__V1__SnapshotChunk *c = &w->snapshot_chunk;
        swarmtune__v1__snapshot_chunk__init(c);
        if (s->len > SWD_WIRE_MAX_CHUNK || (s->len && !s->data)) return SW_EINVAL;
        c->snapshot_updates = s->snapshot_updates;
        c->chunk = s->chunk;
        c->n_chunks = s->n_chunks;
        c->total_bytes = s->total_bytes;
        c->data = wire_bin(s->data, s->len);
        crypto_generichash(w->chunk_digest, SW_ID_BYTES, s->data, s->len, NULL, 0);
        c->digest = wire_bin(w->chunk_digest, SW_ID_BYTES);
        b->msg_case = SWARMTUNE__V1__BODY__MSG_SNAPSHOT_CHUNK;
        b->snapshot_chunk = c;
        return 0;
    }
    case SWD_MSG_LEAVE:
        swarmtune__v1__leave__init(&w->leave);
        b->msg_case = SWARMTUNE__V1__BODY__MSG_LEAVE;
        b->leave = &w->leave;
        return 0;
    case SWD_MSG_ERROR:
        if (!wire_cstr_ok(m->u.error.message, SWD_WIRE_MAX_ERROR_TEXT)) return SW_EINVAL;
        swarmtune__v1__error__init(&w->error);
        w->error.code = (Swarmtune__V1__ErrorCode)m->u.error.code;
        w->error.message = (char *)m->u.error.message;
        b->msg_case = SWARMTUNE__V1__BODY__MSG_ERROR;
        b->error = &w->error;
        return 0;
    default:
        return SW_EINVAL;
    }
}

int swd_wire_seal(const swd_msg *m, const uint8_t run_id[SW_ID_BYTES],
                  const uint8_t pk[SW_ID_BYTES], const unsigned char *sk, uint8_t **out,
                  size_t *out_len)
{
    SW_ASSERT(m && pk && sk && out && out_len);
    SW_ASSERT(sodium_init() >= 0);
    *out = NULL;
    *out_len = 0;
    wire_build w;
    memset(&w, 0, sizeof w);
    uint8_t *body_buf = NULL, *signed_bytes = NULL, *env_buf = NULL;
    int rc = SW_EINVAL;

    if (m->context != SWD_CTX_RUN && m->context != SWD_CTX_JOIN) goto fail;
    if (!wire_allowed(m->type, m->context) || (m->context == SWD_CTX_RUN && !run_id)) goto fail;
    /* libsodium's secret key ends with its public key */
    if (sodium_memcmp(sk + crypto_sign_SECRETKEYBYTES - crypto_sign_PUBLICKEYBYTES, pk,
                      SW_ID_BYTES) != 0)
        goto fail;
    rc = wire_build_body(m, &w);
    if (rc) goto fail;

    rc = SW_EINVAL;
    size_t body_len = protobuf_c_message_get_packed_size(&w.body.base);
    if (body_len > SWD_WIRE_MAX_MSG) goto fail;
    body_buf = malloc(body_len ? body_len : 1);
    if (!body_buf) {
        rc = SW_ENOMEM;
        goto fail;
    }
    SW_ASSERT(protobuf_c_message_pack(&w.body.base, body_buf) == body_len);
    /* the receiver's checks, on exactly what it will receive */
    unsigned scan_flags = 0;
    if (!wire_scan(body_buf, body_len, &swarmtune__v1__body__descriptor, 0, &scan_flags) ||
        (scan_flags & WIRE_SCAN_BAD_UTF8) || !wire_body_ok(&w.body, scan_flags))
        goto fail;

    uint8_t ctx_bytes[SW_ID_BYTES];
    swd_wire_context_bytes(m->context, run_id, ctx_bytes);
    signed_bytes = wire_signed_bytes(ctx_bytes, body_buf, body_len);
    if (!signed_bytes) {
        rc = SW_ENOMEM;
        goto fail;
    }
    uint8_t sig[SWD_WIRE_SIG_BYTES];
    crypto_sign_detached(sig, NULL, signed_bytes, SW_ID_BYTES + body_len, sk);

    wire_envelope env = SWARMTUNE__V1__ENVELOPE__INIT;
    env.sender = wire_bin(pk, SW_ID_BYTES);
    env.body = wire_bin(body_buf, body_len);
    env.signature = wire_bin(sig, sizeof sig);
    env.context = m->context == SWD_CTX_JOIN ? SWARMTUNE__V1__CONTEXT__CONTEXT_JOIN
                                             : SWARMTUNE__V1__CONTEXT__CONTEXT_RUN;
    size_t env_len = protobuf_c_message_get_packed_size(&env.base);
    if (env_len > SWD_WIRE_MAX_MSG) goto fail;
    env_buf = malloc(env_len);
    if (!env_buf) {
        rc = SW_ENOMEM;
        goto fail;
    }
    SW_ASSERT(protobuf_c_message_pack(&env.base, env_buf) == env_len);
    *out = env_buf;
    *out_len = env_len;
    free(signed_bytes);
    free(body_buf);
    wire_build_fini(&w);
    return 0;

fail:
    free(env_buf);
    free(signed_bytes);
    free(body_buf);
    wire_build_fini(&w);
    return rc;
}
