/* What an operator sees and says (control.h). */
#include "control.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "state.h"
#include "status.h"

void swd_control_init(swd_control *c, const swd_control_params *p)
{
    memset(c, 0, sizeof *c);
    c->p = *p;
    c->t_start_ms = c->win_t0_ms = swd_link_now_ms(p->link);
    c->loss = NAN;
}

void swd_control_on_report(swd_control *c, const swd_worker_report *r)
{
    c->win_steps += r->steps;
    c->win_loss += r->loss_sum;
    c->steps_total += r->steps;
    c->updates_applied += r->received;
    for (size_t i = 0; i <= SWD_STEP_BUCKETS; i++)
        c->step_hist[i] += r->step_hist[i];
    c->step_seconds += r->step_seconds;
}

void swd_control_tick(swd_control *c)
{
    uint64_t now = swd_link_now_ms(c->p.link);
    if (now - c->win_t0_ms >= SWD_CONTROL_WINDOW_MS) {
        double mean = c->win_steps ? c->win_loss / (double)c->win_steps : NAN;
        c->steps_per_s = (double)c->win_steps * 1000.0 / (double)(now - c->win_t0_ms);
        if (c->win_steps) c->loss = mean;
        c->loss_hist[c->loss_head] = mean;
        c->loss_head = (c->loss_head + 1) % SWD_CONTROL_LOSS_HISTORY;
        if (c->n_loss_hist < SWD_CONTROL_LOSS_HISTORY) c->n_loss_hist++;
        c->win_steps = 0;
        c->win_loss = 0;
        c->win_t0_ms = now;
    }
    /* Prometheus reads what status says, refreshed every second. */
    if (c->p.metrics && now - c->metrics_ms >= 1000) {
        c->metrics_ms = now;
        json_t *st = swd_control_status(c);
        char *text = st ? swd_metrics_render(st) : NULL;
        json_decref(st);
        if (text) swd_metrics_publish(c->p.metrics, text);
    }
}

bool swd_control_set_phase(swd_control *c, swd_phase phase)
{
    if (c->phase == phase) return false;
    c->phase = phase;
    return true;
}

static uint64_t control_have(void *ctx, const uint8_t *origin)
{
    return swd_pipeline_have(ctx, origin);
}

/*
 * syncing: far behind what an alive peer announces AND anti-entropy brought
 * updates recently.  A version vector is a claim; one that nobody can serve
 * (a lying or broken peer) must not keep the node "syncing", which peers'
 * pacing reads as "do not wait for it".
 */
swd_node_state swd_control_node_state(const swd_control *c)
{
    if (c->phase == SWD_PHASE_DONE) return SWD_STATE_DONE;
    if (c->paused) return SWD_STATE_PAUSED;
    uint64_t progress = c->p.pipeline->ae_progress_ms;
    if (progress == 0 || swd_link_now_ms(c->p.link) - progress > 3 * c->p.heartbeat_ms)
        return SWD_STATE_TRAINING;
    if (swd_gossip_any_ahead(c->p.gossip, control_have, c->p.pipeline, SWD_CONTROL_SYNCING_GAP))
        return SWD_STATE_SYNCING;
    return SWD_STATE_TRAINING;
}

double swd_control_loss(const swd_control *c)
{
    return c->loss;
}

void swd_control_answer_join(swd_control *c, uint64_t ctl_id, const char *why)
{
    if (why)
        swd_link_reply_json(c->p.link, ctl_id,
                            json_pack("{s:s+}", "error", "join refused or failed: ", why));
    else
        swd_link_reply_json(c->p.link, ctl_id,
                            json_pack("{s:b,s:I}", "ok", 1, "members",
                                      (json_int_t)swd_members_count(c->p.gossip->table)));
}

static json_t *control_vv_json(const sw_vv *vv)
{
    json_t *o = json_object();
    for (size_t i = 0; i < vv->n; i++) {
        char hex[SWD_HEX];
        swd_hex(vv->o[i].origin, hex);
        json_object_set_new(o, hex, json_integer((json_int_t)vv->o[i].prefix));
    }
    return o;
}

static json_t *control_hex_json(const uint8_t id[SW_ID_BYTES])
{
    char hex[SWD_HEX];
    swd_hex(id, hex);
    return json_string(hex);
}

/* Does a peer's announced version vector (prefixes) describe exactly ours? */
static bool control_vv_matches(const sw_vv *ours, const swd_vv_entry *e, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < ours->n; i++) {
        if (ours->o[i].n_extra) return false;
        if (ours->o[i].prefix == 0) continue;
        bool found = false;
        for (size_t j = 0; j < n && !found; j++)
            found = memcmp(e[j].origin, ours->o[i].origin, SW_ID_BYTES) == 0 &&
                    e[j].count == ours->o[i].prefix;
        if (!found) return false;
        k++;
    }
    size_t theirs = 0;
    for (size_t j = 0; j < n; j++)
        theirs += e[j].count > 0;
    return theirs == k;
}

/* An announced version vector as origin id -> count. */
static json_t *control_vv_entries_json(const swd_vv_entry *e, size_t n)
{
    json_t *o = json_object();
    for (size_t i = 0; i < n; i++) {
        char hex[SWD_HEX];
        swd_hex(e[i].origin, hex);
        json_object_set_new(o, hex, json_integer((json_int_t)e[i].count));
    }
    return o;
}

/* The swarm section of the status: lag, agreement, peers by state, warnings. */
static void control_status_swarm(const swd_control *c, uint64_t now, json_t *v[SW_STATUS_COUNT])
{
    json_t *warn = json_array();
    size_t n = swd_members_count(c->p.gossip->table), by_state[5] = {0};
    swd_members_count_states(c->p.gossip->table, by_state);
    uint64_t lag = 0;
    size_t compared = 0, agree = 0;
    for (size_t i = 0; i < n; i++) {
        const swd_peer *p = swd_members_at_const(c->p.gossip->table, i);
        char hex[SWD_HEX], line[SW_STATE_PATH_MAX + 256];
        swd_hex(p->id, hex);
        if (p->state == SWD_PEER_ALIVE && p->has_announce &&
            p->ledger_updates > c->p.view->last.ledger_count &&
            p->ledger_updates - c->p.view->last.ledger_count > lag)
            lag = p->ledger_updates - c->p.view->last.ledger_count;
        if (p->banned) {
            snprintf(line, sizeof line, "origin %.12s is banned (proof: %s/bans/%s.json)", hex,
                     c->p.state_dir, hex);
            json_array_append_new(warn, json_string(line));
            continue;
        }
        if (p->state == SWD_PEER_SUSPECT) {
            snprintf(line, sizeof line, "peer %.12s is suspect (last seen %.1f s ago)", hex,
                     (double)(now - p->last_seen_ms) / 1000.0);
            json_array_append_new(warn, json_string(line));
        }
        if (p->lagging) {
            snprintf(line, sizeof line, "peer %.12s is lagging (no longer waited for)", hex);
            json_array_append_new(warn, json_string(line));
        }
        if (p->state != SWD_PEER_ALIVE || !p->has_digest || !c->p.view->digest_gen) continue;
        if (!control_vv_matches(&c->p.view->digest_vv, p->digest_vv, p->n_digest_vv)) continue;
        compared++;
        if (memcmp(p->digest, c->p.view->digest, SW_ID_BYTES) == 0) {
            agree++;
        } else {
            char dh[SWD_HEX];
            swd_hex(p->digest, dh);
            snprintf(line, sizeof line,
                     "digest disagrees with peer %.12s (theirs %.12s) at the same version vector",
                     hex, dh);
            json_array_append_new(warn, json_string(line));
        }
    }
    /* Drops worth an operator's eye (duplicates and our own echo are normal). */
    uint64_t total = 0;
    char detail[1024] = "";
    size_t dl = 0;
    for (int d = 0; d < SWD_DROP_COUNT; d++) {
        if (d == SWD_DROP_DUPLICATE || d == SWD_DROP_SELF || !c->p.link->dropped[d]) continue;
        total += c->p.link->dropped[d];
        int w = snprintf(detail + dl, sizeof detail - dl, "%s%s %" PRIu64, dl ? ", " : "",
                         swd_drop_name((swd_drop)d), c->p.link->dropped[d]);
        if (w > 0 && (size_t)w < sizeof detail - dl) dl += (size_t)w;
    }
    if (total) {
        char line[1200];
        snprintf(line, sizeof line, "%" PRIu64 " messages dropped: %s", total, detail);
        json_array_append_new(warn, json_string(line));
    }
    v[SW_STATUS_SWARM_LAG_UPDATES] = json_integer((json_int_t)lag);
    v[SW_STATUS_SWARM_PEERS_COMPARED] = json_integer((json_int_t)compared);
    v[SW_STATUS_SWARM_PEERS_AGREE] = json_integer((json_int_t)agree);
    v[SW_STATUS_SWARM_AGREE] = compared ? json_boolean(agree == compared) : json_null();
    json_t *ps = json_object();
    for (int st = 0; st < 5; st++)
        json_object_set_new(ps, swd_peer_state_name((swd_peer_state)st),
                            json_integer((json_int_t)by_state[st]));
    v[SW_STATUS_SWARM_PEERS_BY_STATE] = ps;
    v[SW_STATUS_SWARM_WARNINGS] = warn;
}

static void control_status_train(const swd_control *c, json_t *v[SW_STATUS_COUNT])
{
    /* The latest window's mean; before the first window closes, the open one's. */
    double loss = isfinite(c->loss) ? c->loss
                  : c->win_steps    ? c->win_loss / (double)c->win_steps
                                    : NAN;
    v[SW_STATUS_TRAIN_LOSS] = isfinite(loss) ? json_real(loss) : json_null();
    v[SW_STATUS_TRAIN_STEPS_PER_S] = json_real(c->steps_per_s);
    v[SW_STATUS_TRAIN_SCALE] = json_real((double)c->p.view->last.scale);
    v[SW_STATUS_TRAIN_SATURATIONS] = json_integer((json_int_t)c->p.view->last.saturations);
    json_t *hist = json_array();
    for (size_t i = 0; i < c->n_loss_hist; i++) {
        size_t k = (c->loss_head + SWD_CONTROL_LOSS_HISTORY - c->n_loss_hist + i) %
                   SWD_CONTROL_LOSS_HISTORY;
        json_array_append_new(hist,
                              isfinite(c->loss_hist[k]) ? json_real(c->loss_hist[k]) : json_null());
    }
    v[SW_STATUS_TRAIN_LOSS_HISTORY] = hist;
    json_t *bounds = json_array(), *counts = json_array();
    uint64_t cum = 0;
    for (size_t i = 0; i < SWD_STEP_BUCKETS; i++) {
        cum += c->step_hist[i];
        json_array_append_new(bounds, json_real(swd_step_bucket_bounds[i]));
        json_array_append_new(counts, json_integer((json_int_t)cum));
    }
    v[SW_STATUS_TRAIN_STEP_SECONDS] =
        json_pack("{s:o,s:o,s:I,s:f}", SW_STATUS_HIST_BUCKETS, bounds, SW_STATUS_HIST_COUNTS,
                  counts, SW_STATUS_HIST_COUNT, (json_int_t)(cum + c->step_hist[SWD_STEP_BUCKETS]),
                  SW_STATUS_HIST_SUM, c->step_seconds);
    v[SW_STATUS_TRAIN_STEPS] = json_integer((json_int_t)c->steps_total);
    v[SW_STATUS_TRAIN_UPDATES_MADE] = json_integer((json_int_t)c->p.pipeline->updates_made);
}

static json_t *control_real_or_null(double x)
{
    return isfinite(x) ? json_real(x) : json_null();
}

static void control_status_valid(const swd_valid_report *r, json_t *v[SW_STATUS_COUNT])
{
    bool any = r->enabled && r->evals > 0;
    v[SW_STATUS_VALID_STEP] = any ? json_integer((json_int_t)r->step) : json_null();
    v[SW_STATUS_VALID_LOSS] = any ? control_real_or_null(r->loss) : json_null();
    v[SW_STATUS_VALID_ACCURACY] = any ? control_real_or_null(r->accuracy) : json_null();
    v[SW_STATUS_VALID_SECONDS] = any ? json_real(r->seconds) : json_null();
    v[SW_STATUS_VALID_EVALS] = json_integer((json_int_t)r->evals);
    v[SW_STATUS_VALID_FAILURES] = json_integer((json_int_t)r->failures);
    v[SW_STATUS_VALID_BEST_STEP] =
        r->has_best ? json_integer((json_int_t)r->best_step) : json_null();
    v[SW_STATUS_VALID_BEST_LOSS] = r->has_best ? control_real_or_null(r->best_loss) : json_null();
    v[SW_STATUS_VALID_BEST_ACCURACY] =
        r->has_best ? control_real_or_null(r->best_accuracy) : json_null();
    v[SW_STATUS_VALID_BEST_DIR] = r->best_kept ? json_string(r->best_dir) : json_null();
}

static json_t *control_status_peer(const swd_peer *p, uint64_t now)
{
    json_t *v[SW_STATUS_COUNT] = {0};
    v[SW_STATUS_PEER_ID] = control_hex_json(p->id);
    v[SW_STATUS_PEER_STATE] = json_string(swd_peer_state_name(p->state));
    v[SW_STATUS_PEER_NODE_STATE] =
        json_string(p->has_announce ? swd_node_state_name(p->node_state) : "unknown");
    v[SW_STATUS_PEER_STEP] = json_integer((json_int_t)p->step);
    v[SW_STATUS_PEER_LAST_SEEN_MS] =
        p->last_seen_ms ? json_integer((json_int_t)(now - p->last_seen_ms)) : json_null();
    v[SW_STATUS_PEER_ADDR] = json_string(p->pub_addr);
    v[SW_STATUS_PEER_SYNC_ADDR] = json_string(p->sync_addr);
    v[SW_STATUS_PEER_LEDGER_UPDATES] = json_integer((json_int_t)p->ledger_updates);
    v[SW_STATUS_PEER_DIGEST] = p->has_digest ? control_hex_json(p->digest) : json_null();
    v[SW_STATUS_PEER_DIGEST_VERSION_VECTOR] =
        p->has_digest ? control_vv_entries_json(p->digest_vv, p->n_digest_vv) : json_null();
    v[SW_STATUS_PEER_LAGGING] = json_boolean(p->lagging);
    v[SW_STATUS_PEER_BANNED] = json_boolean(p->banned);
    return sw_status_build(v, true);
}

/* The status object: every field of core/status.h's schema, by field. */
json_t *swd_control_status(const swd_control *c)
{
    uint64_t now = swd_link_now_ms(c->p.link);
    json_t *v[SW_STATUS_COUNT] = {0};
    v[SW_STATUS_NODE_ID] = control_hex_json(c->p.link->self);
    v[SW_STATUS_NODE_STATE] = json_string(swd_node_state_name(swd_control_node_state(c)));
    v[SW_STATUS_NODE_STEP] = json_integer((json_int_t)c->p.view->last.next_step);
    v[SW_STATUS_NODE_MAX_STEPS] = json_integer((json_int_t)c->p.max_steps);
    v[SW_STATUS_NODE_RUN_ID] = control_hex_json(c->p.link->run_id);
    v[SW_STATUS_RUN_SPEC] = json_loadb(c->p.runspec_json, c->p.runspec_len, 0, NULL);
    v[SW_STATUS_NODE_VERSION] = json_string(c->p.version);
    v[SW_STATUS_NODE_UPTIME_S] = json_real((double)(now - c->t_start_ms) / 1000.0);
    v[SW_STATUS_NODE_PUB_ADDR] = json_string(c->p.gossip->pub_url);
    v[SW_STATUS_NODE_SYNC_ADDR] = json_string(c->p.gossip->sync_url);

    v[SW_STATUS_MODEL_DIGEST] =
        c->p.view->digest_gen ? control_hex_json(c->p.view->digest) : json_null();
    v[SW_STATUS_MODEL_DIGEST_UPDATES] = json_integer((json_int_t)c->p.view->digest_count);
    v[SW_STATUS_MODEL_DIGEST_VERSION_VECTOR] = control_vv_json(&c->p.view->digest_vv);
    v[SW_STATUS_MODEL_VERSION_VECTOR] = control_vv_json(&c->p.view->vv);

    control_status_train(c, v);

    control_status_valid(&c->p.view->last.valid, v);

    v[SW_STATUS_LEDGER_UPDATES] = json_integer((json_int_t)c->p.view->last.ledger_count);
    v[SW_STATUS_LEDGER_CHECKPOINT_UPDATES] = json_integer(
        c->p.view->last.ckpt_count == UINT64_MAX ? 0 : (json_int_t)c->p.view->last.ckpt_count);

    json_t *peers = json_array();
    size_t n = swd_members_count(c->p.gossip->table);
    for (size_t i = 0; i < n; i++)
        json_array_append_new(
            peers, control_status_peer(swd_members_at_const(c->p.gossip->table, i), now));
    v[SW_STATUS_PEERS] = peers;

    swd_net_stats ns;
    swd_link_stats(c->p.link, &ns);
    v[SW_STATUS_NET_BYTES_OUT] = json_integer((json_int_t)ns.bytes_out);
    v[SW_STATUS_NET_BYTES_IN] = json_integer((json_int_t)ns.bytes_in);
    v[SW_STATUS_NET_MSGS_OUT] = json_integer((json_int_t)ns.msgs_out);
    v[SW_STATUS_NET_MSGS_IN] = json_integer((json_int_t)ns.msgs_in);
    v[SW_STATUS_NET_UPDATES_OUT] = json_integer((json_int_t)c->p.pipeline->updates_out);
    v[SW_STATUS_NET_BATCHES_OUT] = json_integer((json_int_t)c->p.pipeline->batches_out);
    v[SW_STATUS_NET_UPDATES_IN] = json_integer((json_int_t)c->p.pipeline->updates_in);
    v[SW_STATUS_NET_UPDATES_APPLIED] = json_integer((json_int_t)c->updates_applied);
    v[SW_STATUS_NET_BYTES_PER_UPDATE] =
        c->p.pipeline->updates_in
            ? json_real((double)ns.bytes_in / (double)c->p.pipeline->updates_in)
            : json_null();
    v[SW_STATUS_NET_REQUESTS_FAILED] = json_integer((json_int_t)ns.requests_failed);
    v[SW_STATUS_NET_INJECTED_DROPS] = json_integer((json_int_t)ns.injected_drops);
    json_t *dropped = json_object();
    for (int d = 0; d < SWD_DROP_COUNT; d++)
        json_object_set_new(dropped, swd_drop_name((swd_drop)d),
                            json_integer((json_int_t)c->p.link->dropped[d]));
    json_object_set_new(dropped, "queue_full", json_integer((json_int_t)ns.queue_dropped));
    v[SW_STATUS_NET_DROPPED] = dropped;

    control_status_swarm(c, now, v);
    return sw_status_build(v, false);
}

/* A path argument of a control request: absolute, bounded. */
static const char *control_path_arg(json_t *req, const char *key, const char **why)
{
    const char *v = json_string_value(json_object_get(req, key));
    if (!v) {
        *why = "missing";
        return NULL;
    }
    if (v[0] != '/' || strlen(v) >= SWD_JOB_PATH_MAX) {
        *why = "must be an absolute path (the daemon resolves it, not the caller's directory)";
        return NULL;
    }
    return v;
}

static json_t *control_job(swd_control *c, uint64_t id, const char *cmd, json_t *req)
{
    swd_job job;
    memset(&job, 0, sizeof job);
    job.tag = id;
    const char *why = NULL;
    if (strcmp(cmd, "checkpoint") == 0) {
        job.kind = SWD_JOB_CHECKPOINT;
    } else if (strcmp(cmd, "export") == 0) {
        job.kind = SWD_JOB_EXPORT;
        const char *out = control_path_arg(req, "out", &why);
        if (!out) return json_pack("{s:s+}", "error", "export: \"out\": ", why);
        snprintf(job.path, sizeof job.path, "%s", out);
        const char *dt = json_string_value(json_object_get(req, "dtype"));
        sw_dtype dtype = SW_DTYPE_F32;
        if (dt &&
            (sw_dtype_parse(dt, &dtype) != 0 || (dtype != SW_DTYPE_F32 && dtype != SW_DTYPE_F16)))
            return json_pack("{s:s}", "error", "export: \"dtype\" must be f32 or f16");
        job.dtype = (int)dtype;
    } else {
        job.kind = SWD_JOB_EVAL;
        const char *data = control_path_arg(req, "data", &why);
        if (!data) return json_pack("{s:s+}", "error", "eval: \"data\": ", why);
        snprintf(job.path, sizeof job.path, "%s", data);
    }
    if (swd_worker_submit(c->p.worker, &job) != 0)
        return json_pack("{s:s}", "error",
                         "busy: too many checkpoint/export/eval requests pending; try again");
    return NULL; /* answered when the worker is done */
}

static json_t *control_join(swd_control *c, uint64_t id, json_t *req)
{
    const char *addr = json_string_value(json_object_get(req, "addr"));
    if (!addr || !addr[0] || strlen(addr) > SWD_WIRE_MAX_ADDR)
        return json_pack("{s:s}", "error", "join: \"addr\" must be a member's sync URL");
    swd_msg m;
    swd_gossip_hello_msg(c->p.gossip, &m);
    swd_req *r = swd_requests_send(c->p.requests, c->p.link, SWD_REQ_HELLO, addr, &m, NULL, NULL);
    if (!r) return json_pack("{s:s+}", "error", "join: cannot send a Hello to ", addr);
    r->has_ctl = true;
    r->ctl_id = id;
    swd_log(SWD_LOG_INFO, "joining on request", "addr=%s", SWD_LOG_Q(addr));
    return NULL; /* answered when the Welcome (or the timeout) comes */
}

static json_t *control_pause(swd_control *c, bool pause, bool *changed)
{
    if (c->paused != pause) {
        c->paused = pause;
        swd_worker_set_paused(c->p.worker, pause);
        swd_log(SWD_LOG_INFO,
                pause ? "paused: making no updates, still syncing and serving" : "resumed",
                "step=%" PRIu64, c->p.view->last.next_step);
        *changed = true;
    }
    return json_pack("{s:b,s:s}", "ok", 1, "state", swd_node_state_name(swd_control_node_state(c)));
}

bool swd_control_on_request(swd_control *c, uint64_t id, const uint8_t *data, size_t len)
{
    json_t *reply = NULL, *req = NULL;
    bool deferred = false, changed = false;
    if (len > SWD_CONTROL_MAX) {
        reply = json_pack("{s:s}", "error", "request too large");
    } else {
        json_error_t err;
        req = json_loadb((const char *)data, len, JSON_REJECT_DUPLICATES, &err);
        const char *cmd = req ? json_string_value(json_object_get(req, "cmd")) : NULL;
        if (!req || !json_is_object(req))
            reply = json_pack("{s:s}", "error", "request is not a JSON object");
        else if (!cmd)
            reply = json_pack("{s:s}", "error", "request has no \"cmd\" string");
        else if (strcmp(cmd, "status") == 0)
            reply = swd_control_status(c);
        else if (strcmp(cmd, "pause") == 0 || strcmp(cmd, "resume") == 0)
            reply = control_pause(c, cmd[0] == 'p', &changed);
        else if (strcmp(cmd, "leave") == 0) {
            reply = json_pack("{s:b}", "ok", 1);
            if (c->p.on_leave) c->p.on_leave(c->p.on_leave_ctx);
        } else if (strcmp(cmd, "join") == 0)
            deferred = (reply = control_join(c, id, req)) == NULL;
        else if (strcmp(cmd, "checkpoint") == 0 || strcmp(cmd, "export") == 0 ||
                 strcmp(cmd, "eval") == 0)
            deferred = (reply = control_job(c, id, cmd, req)) == NULL;
        else
            reply = json_pack("{s:s+}", "error", "unknown command: ", cmd);
    }
    json_decref(req);
    if (!deferred) swd_link_reply_json(c->p.link, id, reply);
    return changed;
}

/* Answers the control request a finished worker job belongs to. */
void swd_control_job_done(swd_control *c, const swd_job_result *r)
{
    json_t *reply;
    if (r->rc != 0) {
        reply = json_pack("{s:s}", "error", r->err);
    } else if (r->kind == SWD_JOB_CHECKPOINT) {
        reply =
            json_pack("{s:b,s:I,s:s}", "ok", 1, "updates", (json_int_t)r->updates, "path", r->path);
    } else if (r->kind == SWD_JOB_EXPORT) {
        reply = json_pack("{s:b,s:s,s:I,s:o}", "ok", 1, "out", r->path, "updates",
                          (json_int_t)r->updates, "digest", control_hex_json(r->digest));
        swd_log(SWD_LOG_INFO, "exported on request", "out=%s updates=%" PRIu64, SWD_LOG_Q(r->path),
                r->updates);
    } else {
        reply = json_pack("{s:b,s:f,s:f,s:I,s:I,s:o,s:I,s:s}", "ok", 1, "loss", r->loss,
                          "perplexity", r->perplexity, "tokens", (json_int_t)r->tokens, "records",
                          (json_int_t)r->records, "accuracy",
                          r->has_accuracy ? json_real(r->accuracy) : json_null(), "updates",
                          (json_int_t)r->updates, "data", r->path);
    }
    swd_link_reply_json(c->p.link, r->tag, reply);
}
