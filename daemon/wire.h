/*
 * wire: the swarm's messages as plain C structs, and their signed,
 * protobuf-encoded form (proto/swarm.proto, docs/protocol.md).  This is the
 * only file that touches protobuf-c types or Ed25519 signatures: bytes from
 * the network enter here and leave as checked structs; core/ never sees a
 * protobuf type.
 *
 * Decoding order (swd_wire_open), nothing used before the step that checks
 * it: size bound -> envelope decodes -> sender 32 bytes, signature 64 bytes
 * -> Ed25519 verifies over (context bytes || body) -> body decodes -> exactly
 * one message -> the message type is allowed in that context -> every field
 * bounded (below).  The caller then checks admission (bans) and content
 * against its state (steps, scales, duplicates).  Each failure has a drop
 * reason (swd_drop) the caller counts in net.dropped.
 *
 * Ownership: a decoded swd_msg owns its variable parts (swd_msg_fini frees
 * them); swd_wire_seal allocates the output buffer (the caller frees it).
 * Thread safety: pure functions; any thread.
 */
#ifndef SWD_WIRE_H
#define SWD_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sw_error.h"
#include "update.h"

/* Bounds every receiver enforces (docs/protocol.md). */
#define SWD_WIRE_MAX_MSG (2u << 20)      /* one envelope, bytes */
#define SWD_WIRE_MAX_BATCH 1024          /* steps in one UpdateBatch */
#define SWD_WIRE_MAX_VV 4096             /* entries in a version vector */
#define SWD_WIRE_MAX_MEMBERS 64          /* members in an Announce or Welcome */
#define SWD_WIRE_MAX_ADDR 256            /* bytes of an nng URL */
#define SWD_WIRE_MAX_RUNSPEC 4096        /* bytes of a run spec (SW_RUNSPEC_MAX_BYTES) */
#define SWD_WIRE_MAX_UPDATES_BATCHES 256 /* envelopes in one Updates reply */
#define SWD_WIRE_MAX_CHUNK (1u << 20)    /* bytes of snapshot data in a chunk */
#define SWD_WIRE_MAX_ERROR_TEXT 512
#define SWD_WIRE_SIG_BYTES 64

/* Why a message was dropped; names are the keys of net.dropped. */
#define SWD_DROP_LIST(X)                                                                           \
    X(SWD_DROP_OVERSIZE, "oversize")           /* larger than SWD_WIRE_MAX_MSG */                  \
    X(SWD_DROP_MALFORMED, "malformed")         /* envelope or body does not decode */              \
    X(SWD_DROP_BAD_SIGNATURE, "bad_signature") /* fails to verify (another run's, too) */          \
    X(SWD_DROP_BAD_FIELD, "bad_field")         /* a field out of bounds or of the wrong size */    \
    X(SWD_DROP_WRONG_CONTEXT, "wrong_context") /* a message type not allowed in its context */     \
    X(SWD_DROP_SELF, "self")                   /* our own message echoed back */                   \
    X(SWD_DROP_BANNED, "banned")               /* from a banned origin */                          \
    X(SWD_DROP_RATE_LIMITED, "rate_limited")   /* the sender exceeded its rate */                  \
    X(SWD_DROP_REPLAY, "replay")               /* an Announce seq not above the last one seen */   \
    X(SWD_DROP_DUPLICATE, "duplicate")         /* updates already held */                          \
    X(SWD_DROP_BAD_UPDATE, "bad_update")       /* scale above max_scale, q = -128, ... */          \
    X(SWD_DROP_ABSURD_STEP, "absurd_step")     /* steps far beyond the origin's known ones */      \
    X(SWD_DROP_EQUIVOCATION, "equivocation")   /* a second, different update for a step */         \
    X(SWD_DROP_UNEXPECTED, "unexpected")       /* a valid message that makes no sense here */      \
    X(SWD_DROP_BACKLOG, "backlog")             /* the trainer's inbox is full */

typedef enum swd_drop {
#define SWD_DROP_ENUM(e, name) e,
    SWD_DROP_LIST(SWD_DROP_ENUM)
#undef SWD_DROP_ENUM
        SWD_DROP_COUNT
} swd_drop;

const char *swd_drop_name(swd_drop d);

typedef enum swd_context {
    SWD_CTX_RUN = 0,  /* signed over run_id || body */
    SWD_CTX_JOIN = 1, /* signed over BLAKE2b-256("swarmtune.v1 join") || body */
} swd_context;

typedef enum swd_msg_type {
    SWD_MSG_NONE = 0,
    SWD_MSG_BATCH,
    SWD_MSG_ANNOUNCE,
    SWD_MSG_HELLO,
    SWD_MSG_WELCOME,
    SWD_MSG_GET_UPDATES,
    SWD_MSG_UPDATES,
    SWD_MSG_GET_SNAPSHOT,
    SWD_MSG_SNAPSHOT_CHUNK,
    SWD_MSG_LEAVE,
    SWD_MSG_ERROR,
} swd_msg_type;

/* Node states as announced (proto NodeState). */
typedef enum swd_node_state {
    SWD_STATE_UNSPECIFIED = 0,
    SWD_STATE_JOINING = 1,
    SWD_STATE_TRAINING = 2,
    SWD_STATE_DONE = 3,
    SWD_STATE_PAUSED = 4,
    SWD_STATE_SYNCING = 5,
} swd_node_state;

/* "joining", "training", "done", "paused", "syncing" ("unknown" for 0). */
const char *swd_node_state_name(swd_node_state s);

typedef struct swd_vv_entry {
    uint8_t origin[SW_ID_BYTES];
    uint64_t count; /* holds steps [0, count) */
} swd_vv_entry;

typedef struct swd_member_info {
    uint8_t id[SW_ID_BYTES];
    char pub_addr[SWD_WIRE_MAX_ADDR + 1];
    char sync_addr[SWD_WIRE_MAX_ADDR + 1];
    bool alive;
} swd_member_info;

typedef struct swd_batch {
    uint64_t first_step;
    float scale;
    size_t n;                     /* 1..SWD_WIRE_MAX_BATCH */
    int8_t q[SWD_WIRE_MAX_BATCH]; /* (n) */
} swd_batch;

typedef struct swd_announce {
    uint64_t seq;
    char pub_addr[SWD_WIRE_MAX_ADDR + 1];
    char sync_addr[SWD_WIRE_MAX_ADDR + 1];
    swd_node_state state;
    uint64_t step;
    size_t n_vv;
    swd_vv_entry *vv; /* (n_vv) */
    uint64_t ledger_updates;
    bool has_digest;
    uint8_t digest[SW_ID_BYTES];
    size_t n_digest_vv;
    swd_vv_entry *digest_vv; /* (n_digest_vv) */
    size_t n_members;
    swd_member_info *members; /* (n_members) */
    float loss;               /* NaN when the sender has none */
} swd_announce;

typedef struct swd_hello {
    char pub_addr[SWD_WIRE_MAX_ADDR + 1];
    char sync_addr[SWD_WIRE_MAX_ADDR + 1];
} swd_hello;

typedef struct swd_welcome {
    char *run_spec; /* NUL-terminated copy of the canonical JSON */
    size_t run_spec_len;
    size_t n_members;
    swd_member_info *members;
    size_t n_vv;
    swd_vv_entry *vv;
    uint64_t ledger_updates;
    uint64_t snapshot_updates;
    uint64_t snapshot_bytes;
} swd_welcome;

typedef struct swd_get_updates {
    uint8_t origin[SW_ID_BYTES];
    uint64_t first_step;
    uint32_t max_steps;
} swd_get_updates;

/* The reply's envelopes are opened one by one with swd_wire_open. */
typedef struct swd_updates {
    size_t n;
    uint8_t **env;   /* (n) the verbatim envelopes */
    size_t *env_len; /* (n) */
} swd_updates;

typedef struct swd_get_snapshot {
    uint64_t snapshot_updates;
    uint32_t chunk;
} swd_get_snapshot;

typedef struct swd_snapshot_chunk {
    uint64_t snapshot_updates;
    uint32_t chunk, n_chunks;
    uint64_t total_bytes;
    size_t len;
    uint8_t *data; /* (len), its digest already checked by swd_wire_open */
} swd_snapshot_chunk;

typedef enum swd_error_code {
    SWD_ERR_UNSPECIFIED = 0,
    SWD_ERR_BAD_REQUEST = 1,
    SWD_ERR_NOT_FOUND = 2,
    SWD_ERR_BUSY = 3,
    SWD_ERR_REFUSED = 4,
} swd_error_code;

typedef struct swd_error_msg {
    swd_error_code code;
    char message[SWD_WIRE_MAX_ERROR_TEXT + 1];
} swd_error_msg;

/* A decoded, verified message. */
typedef struct swd_msg {
    swd_msg_type type;
    swd_context context;
    uint8_t sender[SW_ID_BYTES];
    union {
        swd_batch batch;
        swd_announce announce;
        swd_hello hello;
        swd_welcome welcome;
        swd_get_updates get_updates;
        swd_updates updates;
        swd_get_snapshot get_snapshot;
        swd_snapshot_chunk snapshot_chunk;
        swd_error_msg error;
    } u;
} swd_msg;

/* Frees a message's variable parts and zeroes it; accepts a zeroed one. */
void swd_msg_fini(swd_msg *m);

/* The 32 context bytes a message of ctx is signed under. */
void swd_wire_context_bytes(swd_context ctx, const uint8_t run_id[SW_ID_BYTES],
                            uint8_t out[SW_ID_BYTES]);

/*
 * Encodes m (its type's union member, context and nothing else; sender is
 * taken from pk) into a signed Envelope: *out is malloc'd, *out_len its
 * size.  sk is the 64-byte libsodium Ed25519 secret key.  Run-context
 * messages bind run_id; join-context ones do not use it (may be NULL).
 * SW_EINVAL when a field is out of the bounds above (we never send what a
 * receiver would drop).
 */
int swd_wire_seal(const swd_msg *m, const uint8_t run_id[SW_ID_BYTES],
                  const uint8_t pk[SW_ID_BYTES], const unsigned char *sk, uint8_t **out,
                  size_t *out_len);

/*
 * Decodes and verifies buf (len bytes, from the network: anything).  run_id
 * is the receiver's run (NULL for a joiner that has none yet: then only
 * join-context messages verify).  On success *m is filled (swd_msg_fini it).
 * On failure returns SW_EFORMAT (or SW_ENOMEM) and *drop says why; *m is
 * zeroed.  Join context allows only HELLO, WELCOME and ERROR; run context
 * allows everything but HELLO and WELCOME.
 */
int swd_wire_open(const uint8_t *buf, size_t len, const uint8_t run_id[SW_ID_BYTES], swd_msg *m,
                  swd_drop *drop);

/*
 * Sender and context of an envelope without verifying it (for rate limiting
 * and ban checks before the signature costs anything).  SW_EFORMAT when it
 * does not decode.
 */
int swd_wire_peek_sender(const uint8_t *buf, size_t len, uint8_t sender[SW_ID_BYTES]);
/* The same, plus the context the envelope claims (ctx may be NULL): an
 * error reply to a refused request goes out in that context, so a joiner
 * without a run id can read it. */
int swd_wire_peek(const uint8_t *buf, size_t len, uint8_t sender[SW_ID_BYTES], swd_context *ctx);

#endif
