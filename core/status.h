/*
 * status: the schema of swarmd's status object, declared once.
 *
 * The status object is what `swarmctl status --json` prints, what swarmd's
 * /metrics is rendered from and what the human `swarmctl status` lays out.
 * SW_STATUS_FIELDS lists every field it has, one line each; the writer
 * (daemon/control.c) fills values by field and sw_status_build places
 * them, the metrics renderer (daemon/metrics.c) walks the list, and swarmctl
 * (cli/cmd_swarm.c) reads fields with sw_status_get.  A field is therefore
 * named in one place: adding one is a line here plus the code computing its
 * value, and it reaches --json, /metrics (when it names a metric) and the
 * generated tables of docs/cli.md and docs/operations.md (`swarmd
 * --dump-status-doc`, `--dump-metrics-doc`) by itself; the human form of
 * `swarmctl status` shows it once cmd_swarm.c gives it a line.
 * tests/ref/status_schema.py checks a real node's status against the list.
 *
 * Ownership: sw_status_build takes the values it is given; sw_status_get
 * and sw_status_parent return borrowed references into the caller's object.
 *
 * Paths: "section.key" or "section.sub.key" from the root object; fields of
 * each element of the peers array are "peers[].key".  Every object on the
 * way to a field (a section) exists only because a field lies under it.
 *
 * Thread safety: constant data and pure functions.
 */
#ifndef SW_STATUS_H
#define SW_STATUS_H

#include <stdbool.h>
#include <stdio.h>

#include <jansson.h>

/* JSON shape of a field. */
typedef enum sw_status_type {
    SW_STATUS_TYPE_STRING, /* text */
    SW_STATUS_TYPE_HEX,    /* 64 hex digits: a key, an id or a digest */
    SW_STATUS_TYPE_INT,    /* integer >= 0 */
    SW_STATUS_TYPE_REAL,   /* number */
    SW_STATUS_TYPE_BOOL,
    SW_STATUS_TYPE_COUNTS,    /* object of name: integer >= 0 */
    SW_STATUS_TYPE_REALS,     /* array of number or null */
    SW_STATUS_TYPE_TEXTS,     /* array of strings */
    SW_STATUS_TYPE_HISTOGRAM, /* the SW_STATUS_HIST_* members below */
    SW_STATUS_TYPE_PEERS,     /* array of objects holding the "peers[]." fields */
    SW_STATUS_TYPE_RUNSPEC,   /* the run spec as runspec.json holds it (core/runspec.h) */
} sw_status_type;

/*
 * The members of a HISTOGRAM, as Prometheus has them: BUCKETS the upper
 * bounds (increasing), COUNTS how many observations were at most each bound
 * (cumulative), COUNT all observations, SUM their total.
 */
#define SW_STATUS_HIST_BUCKETS "buckets"
#define SW_STATUS_HIST_COUNTS "counts"
#define SW_STATUS_HIST_COUNT "count"
#define SW_STATUS_HIST_SUM "sum"

/*
 * What a field is on /metrics (OpenMetrics' types; the 0.0.4 text format
 * writes INFO and STATESET as gauges).  GAUGE and COUNTER are one sample
 * of a number (a boolean as 0/1), one sample per member of a COUNTS field
 * (labelled), the length of a TEXTS field, or, for a BOOL of the peers,
 * how many peers have it true.  INFO fields sharing a metric are the labels
 * of its one sample 1; a STATESET is one sample per value the field can
 * take, 1 for the current one.
 */
typedef enum sw_status_kind {
    SW_STATUS_KIND_NONE,
    SW_STATUS_KIND_GAUGE,
    SW_STATUS_KIND_COUNTER,
    SW_STATUS_KIND_HISTOGRAM,
    SW_STATUS_KIND_INFO,
    SW_STATUS_KIND_STATESET,
} sw_status_kind;

/*
 * X(ID, path, type, null, unit, kind, metric, label, help)
 *   null   ORNULL when the value may be null (not known yet), else NOTNULL
 *   unit   "" when none
 *   metric NULL for kind NONE; label: the label name (NULL when none)
 *   help   what it means, for docs/cli.md and the metric's HELP
 * The order is the object's: sections appear where their first field does.
 */
// clang-format off
#define SW_STATUS_FIELDS(X) \
    X(NODE_ID, "node.id", HEX, NOTNULL, "", INFO, "swarmd_info", "node_id", \
      "the node's Ed25519 public key") \
    X(NODE_STATE, "node.state", STRING, NOTNULL, "", STATESET, "swarmd_node_state", "state", \
      "`joining` (catching up to be admitted), `training`, `done` (reached `max_steps`, still " \
      "syncing and serving), `paused` (`swarmctl pause`: no updates made, still syncing and " \
      "serving), `syncing`") \
    X(NODE_STEP, "node.step", INT, NOTNULL, "steps", GAUGE, "swarmd_step", NULL, \
      "this node's own training step") \
    X(NODE_MAX_STEPS, "node.max_steps", INT, NOTNULL, "steps", GAUGE, "swarmd_max_steps", NULL, \
      "the run's last step") \
    X(NODE_RUN_ID, "node.run_id", HEX, NOTNULL, "", INFO, "swarmd_info", "run_id", \
      "the run's id (from the run spec)") \
    X(NODE_VERSION, "node.version", STRING, NOTNULL, "", INFO, "swarmd_info", "version", \
      "the swarmd version") \
    X(NODE_UPTIME_S, "node.uptime_s", REAL, NOTNULL, "s", GAUGE, "swarmd_uptime_seconds", NULL, \
      "seconds since swarmd started") \
    X(NODE_PUB_ADDR, "node.pub_addr", STRING, NOTNULL, "", NONE, NULL, NULL, \
      "the PUB URL actually bound (a port 0 resolved)") \
    X(NODE_SYNC_ADDR, "node.sync_addr", STRING, NOTNULL, "", NONE, NULL, NULL, \
      "the sync URL actually bound (a port 0 resolved)") \
    X(RUN_SPEC, "run_spec", RUNSPEC, NOTNULL, "", NONE, NULL, NULL, \
      "the run's spec, as `runspec.json` holds it: every key of docs/state.md's table") \
    X(MODEL_DIGEST, "model.digest", HEX, ORNULL, "", NONE, NULL, NULL, \
      "digest of the node's fixed-point weights (`sw_fixed_digest`: BLAKE2b-256 over the " \
      "exponents and the int32 weights); equal on every replica holding the same updates " \
      "(`null` while not computed yet). Not the digest `swarmctl model inspect` prints for an " \
      "export (that one is over the float weights; `swarmctl export` reports it)") \
    X(MODEL_DIGEST_UPDATES, "model.digest_updates", INT, NOTNULL, "updates", GAUGE, \
      "swarmd_digest_updates", NULL, \
      "updates the current model digest covers (it may lag the newest updates by a moment)") \
    X(MODEL_DIGEST_VERSION_VECTOR, "model.digest_version_vector", COUNTS, NOTNULL, "updates", \
      NONE, NULL, NULL, "the version vector the digest covers: origin id to its updates") \
    X(MODEL_VERSION_VECTOR, "model.version_vector", COUNTS, NOTNULL, "updates", NONE, NULL, NULL, \
      "origin id to the number of its updates applied: equal vectors mean equal models") \
    X(TRAIN_LOSS, "train.loss", REAL, ORNULL, "nats/token", GAUGE, "swarmd_loss", NULL, \
      "the latest training loss (`null` before the first step)") \
    X(TRAIN_STEPS_PER_S, "train.steps_per_s", REAL, NOTNULL, "steps/s", GAUGE, \
      "swarmd_steps_per_second", NULL, "recent training speed of this node") \
    X(TRAIN_SCALE, "train.scale", REAL, NOTNULL, "", GAUGE, "swarmd_update_scale", NULL, \
      "the scale of this node's latest update (an update is `q * scale`, docs/engine.md)") \
    X(TRAIN_SATURATIONS, "train.saturations", INT, NOTNULL, "adds", COUNTER, \
      "swarmd_saturations_total", NULL, \
      "parameter adds clamped to the fixed-point range (nonzero: replicas may differ, " \
      "docs/engine.md \"Saturation\")") \
    X(TRAIN_LOSS_HISTORY, "train.loss_history", REALS, NOTNULL, "nats/token", NONE, NULL, NULL, \
      "at most 60 numbers, oldest first: the mean training loss of each 5-second window " \
      "(`null` for a window without steps)") \
    X(TRAIN_STEP_SECONDS, "train.step_seconds", HISTOGRAM, NOTNULL, "s", HISTOGRAM, \
      "swarmd_step_duration_seconds", "le", \
      "wall time of this node's training steps: `counts[i]` steps took at most `buckets[i]` " \
      "seconds (cumulative); `count` all steps, `sum` their seconds") \
    X(TRAIN_STEPS, "train.steps", INT, NOTNULL, "steps", COUNTER, "swarmd_steps_total", NULL, \
      "training steps taken by this process") \
    X(TRAIN_UPDATES_MADE, "train.updates_made", INT, NOTNULL, "updates", COUNTER, \
      "swarmd_updates_made_total", NULL, "own updates made by this process") \
    X(VALID_STEP, "valid.step", INT, ORNULL, "steps", GAUGE, "swarmd_valid_step", NULL, \
      "the own training step of the latest scoring of `[data] valid` (`null`: none yet, or no " \
      "`[data] valid`)") \
    X(VALID_LOSS, "valid.loss", REAL, ORNULL, "nats/token", GAUGE, "swarmd_valid_loss", NULL, \
      "the latest validation loss (as `swarmctl model eval` computes it)") \
    X(VALID_ACCURACY, "valid.accuracy", REAL, ORNULL, "", GAUGE, "swarmd_valid_accuracy", NULL, \
      "the latest validation accuracy (`null` unless the file is multiple choice, " \
      "docs/datasets.md)") \
    X(VALID_SECONDS, "valid.seconds", REAL, ORNULL, "s", GAUGE, "swarmd_valid_seconds", NULL, \
      "how long the latest scoring took (training waits meanwhile)") \
    X(VALID_EVALS, "valid.evals", INT, NOTNULL, "scorings", COUNTER, "swarmd_valid_evals_total", \
      NULL, "scorings of `[data] valid` done by this process") \
    X(VALID_FAILURES, "valid.failures", INT, NOTNULL, "scorings", COUNTER, \
      "swarmd_valid_failures_total", NULL, \
      "scorings or best-model exports that failed (logged; training goes on)") \
    X(VALID_BEST_STEP, "valid.best_step", INT, ORNULL, "steps", GAUGE, "swarmd_valid_best_step", \
      NULL, "the step of the best scoring so far: the highest accuracy (ties: the lower loss), or " \
      "the lowest loss for text data") \
    X(VALID_BEST_LOSS, "valid.best_loss", REAL, ORNULL, "nats/token", GAUGE, \
      "swarmd_valid_best_loss", NULL, "the best scoring's loss") \
    X(VALID_BEST_ACCURACY, "valid.best_accuracy", REAL, ORNULL, "", GAUGE, \
      "swarmd_valid_best_accuracy", NULL, "the best scoring's accuracy") \
    X(VALID_BEST_DIR, "valid.best_dir", STRING, ORNULL, "", NONE, NULL, NULL, \
      "where the best model is kept (`[train] keep_best`; `null` when not kept)") \
    X(LEDGER_UPDATES, "ledger.updates", INT, NOTNULL, "updates", GAUGE, "swarmd_ledger_updates", \
      NULL, "updates in the ledger") \
    X(LEDGER_CHECKPOINT_UPDATES, "ledger.checkpoint_updates", INT, NOTNULL, "updates", GAUGE, \
      "swarmd_checkpoint_updates", NULL, "updates the newest checkpoint holds") \
    X(PEERS, "peers", PEERS, NOTNULL, "", NONE, NULL, NULL, \
      "the peers this node knows, one object each") \
    X(PEER_ID, "peers[].id", HEX, NOTNULL, "", NONE, NULL, NULL, "its public key") \
    X(PEER_STATE, "peers[].state", STRING, NOTNULL, "", NONE, NULL, NULL, \
      "membership as this node sees it: `joining`, `alive`, `suspect`, `dead` or `left`") \
    X(PEER_NODE_STATE, "peers[].node_state", STRING, NOTNULL, "", NONE, NULL, NULL, \
      "the state the peer announced (as `node.state`; `unknown` before its first announce)") \
    X(PEER_STEP, "peers[].step", INT, NOTNULL, "steps", NONE, NULL, NULL, \
      "its own training step, from its last announce") \
    X(PEER_LAST_SEEN_MS, "peers[].last_seen_ms", INT, ORNULL, "ms", NONE, NULL, NULL, \
      "milliseconds since the peer was last heard from; `null`: never") \
    X(PEER_ADDR, "peers[].addr", STRING, NOTNULL, "", NONE, NULL, NULL, "its PUB URL") \
    X(PEER_SYNC_ADDR, "peers[].sync_addr", STRING, NOTNULL, "", NONE, NULL, NULL, \
      "its sync URL") \
    X(PEER_LEDGER_UPDATES, "peers[].ledger_updates", INT, NOTNULL, "updates", NONE, NULL, NULL, \
      "updates in its ledger, from its last announce") \
    X(PEER_DIGEST, "peers[].digest", HEX, ORNULL, "", NONE, NULL, NULL, \
      "its model digest, from its last announce (`null` before one)") \
    X(PEER_DIGEST_VERSION_VECTOR, "peers[].digest_version_vector", COUNTS, ORNULL, "updates", \
      NONE, NULL, NULL, "the version vector that digest covers") \
    X(PEER_LAGGING, "peers[].lagging", BOOL, NOTNULL, "", GAUGE, "swarmd_peers_lagging", NULL, \
      "no longer waited for (`max_staleness`)") \
    X(PEER_BANNED, "peers[].banned", BOOL, NOTNULL, "", GAUGE, "swarmd_peers_banned", NULL, \
      "caught equivocating") \
    X(NET_BYTES_OUT, "net.bytes_out", INT, NOTNULL, "bytes", COUNTER, "swarmd_bytes_sent_total", \
      NULL, "payload bytes sent on the swarm sockets") \
    X(NET_BYTES_IN, "net.bytes_in", INT, NOTNULL, "bytes", COUNTER, \
      "swarmd_bytes_received_total", NULL, "payload bytes received on the swarm sockets") \
    X(NET_MSGS_OUT, "net.msgs_out", INT, NOTNULL, "messages", COUNTER, \
      "swarmd_messages_sent_total", NULL, "messages sent on the swarm sockets") \
    X(NET_MSGS_IN, "net.msgs_in", INT, NOTNULL, "messages", COUNTER, \
      "swarmd_messages_received_total", NULL, "messages received on the swarm sockets") \
    X(NET_UPDATES_OUT, "net.updates_out", INT, NOTNULL, "updates", COUNTER, \
      "swarmd_updates_sent_total", NULL, "updates sent to peers") \
    X(NET_BATCHES_OUT, "net.batches_out", INT, NOTNULL, "batches", COUNTER, \
      "swarmd_batches_sent_total", NULL, "update batches published") \
    X(NET_UPDATES_IN, "net.updates_in", INT, NOTNULL, "updates", COUNTER, \
      "swarmd_updates_received_total", NULL, "updates received from peers") \
    X(NET_UPDATES_APPLIED, "net.updates_applied", INT, NOTNULL, "updates", COUNTER, \
      "swarmd_updates_applied_total", NULL, "updates from peers ledgered and applied") \
    X(NET_BYTES_PER_UPDATE, "net.bytes_per_update", REAL, ORNULL, "bytes", NONE, NULL, NULL, \
      "`bytes_in / updates_in`, `null` before any update came in") \
    X(NET_REQUESTS_FAILED, "net.requests_failed", INT, NOTNULL, "requests", COUNTER, \
      "swarmd_sync_requests_failed_total", NULL, \
      "sync requests to peers that failed or timed out") \
    X(NET_INJECTED_DROPS, "net.injected_drops", INT, NOTNULL, "messages", NONE, NULL, NULL, \
      "messages the fault injection (`drop_in_permille`) discarded on purpose") \
    X(NET_DROPPED, "net.dropped", COUNTS, NOTNULL, "messages", COUNTER, \
      "swarmd_messages_dropped_total", "reason", \
      "messages dropped, by reason (`bad_signature`, `rate_limited`, `replay`, `duplicate`, " \
      "`queue_full`, ...; docs/protocol.md)") \
    X(SWARM_LAG_UPDATES, "swarm.lag_updates", INT, NOTNULL, "updates", GAUGE, \
      "swarmd_sync_lag_updates", NULL, \
      "how many updates the most advanced alive peer holds beyond this node (the largest " \
      "`ledger_updates` an alive peer announced minus ours, at least 0)") \
    X(SWARM_PEERS_COMPARED, "swarm.agreement.peers_compared", INT, NOTNULL, "peers", GAUGE, \
      "swarmd_digest_peers_compared", NULL, \
      "alive peers whose announced digest is for our `model.digest_version_vector`") \
    X(SWARM_PEERS_AGREE, "swarm.agreement.peers_agree", INT, NOTNULL, "peers", GAUGE, \
      "swarmd_digest_peers_agreeing", NULL, "of the peers compared, those whose digest equals ours") \
    X(SWARM_AGREE, "swarm.agreement.agree", BOOL, ORNULL, "", GAUGE, "swarmd_digest_agreement", \
      NULL, "whether every peer compared has our digest (`null` when none was)") \
    X(SWARM_PEERS_BY_STATE, "swarm.peers_by_state", COUNTS, NOTNULL, "peers", GAUGE, \
      "swarmd_peers", "state", "peers this node knows, by membership state") \
    X(SWARM_WARNINGS, "swarm.warnings", TEXTS, NOTNULL, "", GAUGE, "swarmd_warnings", NULL, \
      "sentences for an operator: suspect and lagging peers, banned origins (with the proof's " \
      "path), drops by reason, digest disagreements")
// clang-format on

typedef enum sw_status_field {
#define SW_STATUS_ENUM_(id, path, type, null, unit, kind, metric, label, help) SW_STATUS_##id,
    SW_STATUS_FIELDS(SW_STATUS_ENUM_)
#undef SW_STATUS_ENUM_
        SW_STATUS_COUNT
} sw_status_field;

/* One line of SW_STATUS_FIELDS. */
typedef struct sw_status_def {
    const char *path;
    sw_status_type type;
    bool nullable;
    const char *unit;
    sw_status_kind kind;
    const char *metric;
    const char *label;
    const char *help;
} sw_status_def;

/* The line of field f (f < SW_STATUS_COUNT). */
const sw_status_def *sw_status_def_of(sw_status_field f);

/* Whether f is a field of each peer ("peers[].key"). */
bool sw_status_is_peer(sw_status_field f);

/* The last component of f's path ("loss" for "train.loss"). */
const char *sw_status_key(sw_status_field f);

/*
 * The object made of values[f] for every f of the root (peer false) or of
 * a peer (peer true), each at its path, in the list's order.  Each non-NULL
 * values[f] of that scope is a new reference the object takes (a NULL one
 * leaves f out; values of the other scope are not looked at).  NULL only
 * when out of memory; the values are released either way.
 */
json_t *sw_status_build(json_t *values[SW_STATUS_COUNT], bool peer);

/*
 * The value of f in obj (the status object, or one element of its peers
 * array for a peer field), borrowed; NULL when it or an object on its path
 * is missing or not an object.  Any JSON value may be passed.
 */
json_t *sw_status_get(const json_t *obj, sw_status_field f);

/*
 * The member of obj holding f (swarm.agreement for swarm.agreement.agree;
 * obj itself for a section's field) as it came, of whatever type, or NULL.
 */
json_t *sw_status_parent(const json_t *obj, sw_status_field f);

/* "integer", "hex or null", ...: f's type in words, as docs/cli.md writes it. */
const char *sw_status_type_text(sw_status_type t);

/* The Prometheus type a kind is exposed as ("gauge"; NULL for NONE). */
const char *sw_status_kind_text(sw_status_kind k);

/* The generated field table of docs/cli.md (`swarmd --dump-status-doc`). */
void sw_status_write_doc(FILE *out);

#endif
