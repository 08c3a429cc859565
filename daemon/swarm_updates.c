/* The swarm: own and received update batches, archive refill, bans, anti-entropy (swarm_int.h). */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <time.h>

#include <jansson.h>
#include <sodium.h>

#include "fileio.h"
#include "gpt2.h"
#include "ledger.h"
#include "log.h"
#include "setup.h"
#include "swarm_int.h"

static int swarm_archive_and_publish(swd_swarm *s, uint64_t first, float scale, const int8_t *q,
                                     size_t n, bool publish)
{
    swd_msg m;
    memset(&m, 0, sizeof m);
    m.type = SWD_MSG_BATCH;
    m.u.batch.first_step = first;
    m.u.batch.scale = scale;
    m.u.batch.n = n;
    memcpy(m.u.batch.q, q, n);
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = swd_wire_seal(&m, s->run_id, s->self, s->sk, &buf, &len);
    if (rc != 0) return rc;
    sw_diag d = {{0}};
    if (!sw_archive_covered(s->archive, s->self, first, (uint32_t)n) &&
        (rc = sw_archive_append(s->archive, s->self, first, (uint32_t)n, buf, len, &d)) != 0)
        swd_log(SWD_LOG_WARN, "archive append failed", "error=%s",
                SWD_LOG_Q(d.msg[0] ? d.msg : sw_strerror(rc)));
    if (publish) {
        swd_net_publish(s->net, buf, len);
        s->last_pub_ms = swarm_now_ms();
        s->updates_out += n;
        s->batches_out++;
    }
    free(buf);
    return 0;
}

/* Length of the run of pending updates from index 0 with one scale and
 * consecutive steps, at most batch_max_steps. */
static size_t swarm_run_len(const swd_swarm *s)
{
    size_t max = (size_t)s->cfg->batch_max_steps, k = 1;
    while (k < s->n_pend && k < max && s->pend[k].step == s->pend[0].step + k &&
           memcmp(&s->pend[k].scale, &s->pend[0].scale, sizeof(float)) == 0)
        k++;
    return k;
}

/* Publishes complete runs; with force, everything pending. */
void swarm_flush_own(swd_swarm *s, bool force)
{
    uint64_t now = swarm_now_ms();
    while (s->n_pend > 0) {
        size_t k = swarm_run_len(s);
        bool complete = k == (size_t)s->cfg->batch_max_steps || k < s->n_pend;
        bool old = now - s->pend_since_ms >= (uint64_t)s->cfg->batch_max_ms;
        if (!complete && !old && !force) break;
        int8_t q[SWD_WIRE_MAX_BATCH];
        for (size_t i = 0; i < k; i++)
            q[i] = s->pend[i].q;
        if (swarm_archive_and_publish(s, s->pend[0].step, s->pend[0].scale, q, k, true) != 0)
            swd_log(SWD_LOG_ERROR, "cannot seal an update batch", "first_step=%" PRIu64,
                    s->pend[0].step);
        memmove(s->pend, s->pend + k, (s->n_pend - k) * sizeof *s->pend);
        s->n_pend -= k;
        s->pend_since_ms = now;
    }
}

void swarm_take_own(swd_swarm *s)
{
    sw_update *u = NULL;
    size_t n = 0;
    swd_worker_take_own(s->wk, &u, &n);
    if (n == 0) {
        free(u);
        return;
    }
    if (s->n_pend + n > s->pend_cap) {
        size_t cap = s->pend_cap ? s->pend_cap : 256;
        while (cap < s->n_pend + n)
            cap *= 2;
        sw_update *p = realloc(s->pend, cap * sizeof *p);
        if (!p) {
            /* They are in the ledger and archive refill covers them after a restart. */
            swd_log(SWD_LOG_ERROR, "out of memory queueing own updates", "dropped=%zu", n);
            free(u);
            return;
        }
        s->pend = p;
        s->pend_cap = cap;
    }
    if (s->n_pend == 0) s->pend_since_ms = swarm_now_ms();
    memcpy(s->pend + s->n_pend, u, n * sizeof *u);
    s->n_pend += n;
    s->updates_made += n;
    free(u);
    swarm_flush_own(s, false);
}

/*
 * After a crash the archive (not fsynced) may lack own updates the ledger
 * holds: sign them again (same bytes per update; the grouping may differ,
 * which is not an equivocation).
 */
int swarm_refill_own(swd_swarm *s, sw_state *st)
{
    uint64_t next = sw_ledger_next_step(st->ledger, s->self);
    uint64_t from = sw_archive_prefix(s->archive, s->self);
    uint64_t refilled = 0;
    int8_t q[SWD_WIRE_MAX_BATCH];
    uint64_t first = 0;
    float scale = 0;
    size_t k = 0;
    for (uint64_t step = from; step <= next; step++) {
        sw_update u;
        sw_diag d = {{0}};
        bool have = step < next && sw_ledger_get(st->ledger, s->self, step, &u, NULL, &d) == 0;
        bool fits = have && k > 0 && k < (size_t)s->cfg->batch_max_steps &&
                    memcmp(&u.scale, &scale, sizeof scale) == 0 && step == first + k;
        if (k > 0 && !fits) {
            if (!sw_archive_covered(s->archive, s->self, first, (uint32_t)k)) {
                int rc = swarm_archive_and_publish(s, first, scale, q, k, false);
                if (rc != 0) return rc;
                refilled += k;
            }
            k = 0;
        }
        if (!have) continue;
        if (k == 0) {
            first = step;
            scale = u.scale;
        }
        q[k++] = u.q;
    }
    if (refilled)
        swd_log(SWD_LOG_INFO, "archive refilled with own updates", "updates=%" PRIu64, refilled);
    return 0;
}

/* The updates of a verified batch from origin, each checked against the
 * run (scale <= max_scale, ...); false when one is not valid. */
static bool swarm_batch_updates(const swd_swarm *s, const uint8_t origin[SW_ID_BYTES],
                                const swd_batch *b, sw_update *u)
{
    for (size_t i = 0; i < b->n; i++) {
        memcpy(u[i].origin, origin, SW_ID_BYTES);
        u[i].step = b->first_step + i;
        u[i].q = b->q[i];
        u[i].scale = b->scale;
        sw_diag d = {{0}};
        if (sw_update_check(&s->train, &u[i], &d) != 0) return false;
    }
    return true;
}

typedef struct swarm_requeue {
    swd_swarm *s;
    sw_state *st;
    uint64_t next;   /* one past the highest step seen in the entries given */
    uint64_t queued; /* updates pushed to the worker */
    int rc;
} swarm_requeue;

static int swarm_requeue_entry(void *ctx, const uint8_t *bytes, size_t len)
{
    swarm_requeue *r = ctx;
    swd_msg m;
    swd_drop drop;
    if (swd_wire_open(bytes, len, r->s->run_id, &m, &drop) != 0) return 0;
    sw_update u[SWD_WIRE_MAX_BATCH];
    if (m.type == SWD_MSG_BATCH && swarm_batch_updates(r->s, m.sender, &m.u.batch, u)) {
        const swd_batch *b = &m.u.batch;
        size_t k = 0;
        for (size_t i = 0; i < b->n; i++) {
            if (u[i].step + 1 > r->next) r->next = u[i].step + 1;
            if (!sw_ledger_has(r->st->ledger, m.sender, u[i].step)) u[k++] = u[i];
        }
        if (k && (r->rc = swd_worker_push_updates(r->s->wk, u, k)) == 0) r->queued += k;
    }
    swd_msg_fini(&m);
    return r->rc;
}

/*
 * Batches the archive holds but the ledger does not (received, then a crash
 * or a stop before the worker wrote them) go back to the worker: otherwise
 * the archive would claim them and anti-entropy would never fetch them.
 */
int swarm_requeue_archived(swd_swarm *s, sw_state *st)
{
    swarm_requeue r = {.s = s, .st = st};
    size_t n = sw_archive_origin_count(s->archive);
    for (size_t i = 0; i < n && r.rc == 0; i++) {
        uint8_t origin[SW_ID_BYTES];
        sw_archive_origin_at(s->archive, i, origin);
        if (memcmp(origin, s->self, SW_ID_BYTES) == 0) continue;
        uint64_t from = sw_ledger_prefix(st->ledger, origin);
        while (r.rc == 0) {
            size_t got = 0;
            sw_diag d = {{0}};
            r.next = from;
            int rc = sw_archive_fetch(s->archive, origin, from, SWD_SWARM_AE_MAX_STEPS,
                                      SWD_WIRE_MAX_UPDATES_BATCHES, SIZE_MAX, swarm_requeue_entry,
                                      &r, &got, &d);
            if (rc != 0 || got == 0 || r.next <= from) break;
            from = r.next;
        }
    }
    if (r.queued)
        swd_log(SWD_LOG_INFO, "archived updates the ledger lacked queued again", "updates=%" PRIu64,
                r.queued);
    return r.rc;
}

/* ------------------------------------------------------------ bans */

static void swarm_ban(swd_swarm *s, const uint8_t origin[SW_ID_BYTES], uint64_t step,
                      const char *proof_json)
{
    if (swd_members_banned(s->members, origin)) return;
    swd_members_ban(s->members, origin, swarm_now_ms());
    char hex[SWARM_HEX], dir[SW_STATE_PATH_MAX], name[SWARM_HEX + 16], path[SW_STATE_PATH_MAX];
    swarm_hex(origin, hex);
    sw_diag d = {{0}};
    if (sw_path_join(dir, sizeof dir, s->state_dir, "bans") == 0 && sw_mkdir(dir, 0700, &d) == 0) {
        snprintf(name, sizeof name, "%s.json", hex);
        if (sw_path_join(path, sizeof path, dir, name) == 0)
            sw_file_write_atomic(path, proof_json, strlen(proof_json), 0644, &d);
    }
    swd_log(SWD_LOG_WARN, "origin banned: two different signed updates for one step",
            "origin=%s step=%" PRIu64 " proof=%s", hex, step, path);
}

/*
 * The proof: both updates and, when at hand, both signed envelopes (hex):
 * anyone can check them with the origin's key and the run id.
 */
void swarm_ban_updates(swd_swarm *s, const sw_update *held, const sw_update *got,
                       const uint8_t *held_env, size_t held_len, const uint8_t *got_env,
                       size_t got_len)
{
    char hex[SWARM_HEX];
    swarm_hex(held->origin, hex);
    json_t *o = json_pack("{s:s,s:I,s:{s:i,s:f},s:{s:i,s:f}}", "origin", hex, "step",
                          (json_int_t)held->step, "held", "q", held->q, "scale",
                          (double)held->scale, "got", "q", got->q, "scale", (double)got->scale);
    const uint8_t *envs[2] = {held_env, got_env};
    size_t lens[2] = {held_len, got_len};
    const char *keys[2] = {"held_envelope", "got_envelope"};
    for (int i = 0; i < 2 && o; i++) {
        if (!envs[i]) continue;
        char *h = malloc(2 * lens[i] + 1);
        if (!h) continue;
        sodium_bin2hex(h, 2 * lens[i] + 1, envs[i], lens[i]);
        json_object_set_new(o, keys[i], json_string(h));
        free(h);
    }
    char *text = o ? json_dumps(o, JSON_INDENT(1)) : NULL;
    json_decref(o);
    swarm_ban(s, held->origin, held->step, text ? text : "{}");
    free(text);
}

/* ------------------------------------------------------------ batches in */

typedef struct swarm_cmp {
    swd_swarm *s;
    const swd_batch *b;
    const uint8_t *origin;
    bool conflict;
    uint64_t step;
    sw_update held, got;
    uint8_t *held_env; /* a copy of the archived envelope that conflicts */
    size_t held_len;
} swarm_cmp;

/* Compares an archived batch with the one received, step by step. */
static int swarm_cmp_entry(void *ctx, const uint8_t *bytes, size_t len)
{
    swarm_cmp *c = ctx;
    swd_msg m;
    swd_drop drop;
    if (swd_wire_open(bytes, len, c->s->run_id, &m, &drop) != 0) return 0;
    if (m.type == SWD_MSG_BATCH) {
        const swd_batch *a = &m.u.batch, *b = c->b;
        for (size_t i = 0; i < b->n && !c->conflict; i++) {
            uint64_t step = b->first_step + i;
            if (step < a->first_step || step >= a->first_step + a->n) continue;
            int8_t qa = a->q[step - a->first_step];
            if (qa != b->q[i] || memcmp(&a->scale, &b->scale, sizeof(float)) != 0) {
                c->conflict = true;
                c->step = step;
                memcpy(c->held.origin, c->origin, SW_ID_BYTES);
                c->held.step = c->got.step = step;
                c->held.q = qa;
                c->held.scale = a->scale;
                memcpy(c->got.origin, c->origin, SW_ID_BYTES);
                c->got.q = b->q[i];
                c->got.scale = b->scale;
                c->held_env = malloc(len);
                if (c->held_env) {
                    memcpy(c->held_env, bytes, len);
                    c->held_len = len;
                }
            }
        }
    }
    swd_msg_fini(&m);
    return 0;
}

/* A verified UpdateBatch (env: its envelope, to archive). */
void swarm_take_batch(swd_swarm *s, const swd_msg *m, const uint8_t *env, size_t env_len)
{
    const uint8_t *origin = m->sender;
    const swd_batch *b = &m->u.batch;
    if (memcmp(origin, s->self, SW_ID_BYTES) == 0) {
        swarm_drop(s, SWD_DROP_SELF, origin);
        return;
    }
    if (b->first_step > UINT64_MAX - b->n ||
        b->first_step + b->n > swarm_have(s, origin) + SWD_SWARM_MAX_AHEAD) {
        swarm_drop(s, SWD_DROP_ABSURD_STEP, origin);
        return;
    }
    sw_update u[SWD_WIRE_MAX_BATCH];
    if (!swarm_batch_updates(s, origin, b, u)) {
        swarm_drop(s, SWD_DROP_BAD_UPDATE, origin);
        return;
    }
    if (sw_archive_covered(s->archive, origin, b->first_step, (uint32_t)b->n)) {
        swarm_cmp c = {.s = s, .b = b, .origin = origin};
        sw_diag d = {{0}};
        sw_archive_fetch(s->archive, origin, b->first_step, b->n, SWD_WIRE_MAX_BATCH, SIZE_MAX,
                         swarm_cmp_entry, &c, NULL, &d);
        if (c.conflict) {
            swarm_drop(s, SWD_DROP_EQUIVOCATION, origin);
            swarm_ban_updates(s, &c.held, &c.got, c.held_env, c.held_len, env, env_len);
            free(c.held_env);
            return;
        }
        /* Archived is not ledgered: a crash or a stop can come between the
         * two.  Only what the worker holds is a duplicate; the rest goes to
         * the worker again (it deduplicates against the ledger). */
        if (b->first_step + b->n <= swarm_vv_prefix(&s->vv, origin)) {
            swarm_drop(s, SWD_DROP_DUPLICATE, origin);
            return;
        }
        if (swd_worker_push_updates(s->wk, u, b->n) != 0) swarm_drop(s, SWD_DROP_BACKLOG, origin);
        return;
    }
    /* Nothing new below what the worker holds: a duplicate too. */
    if (b->first_step + b->n <= swarm_vv_prefix(&s->vv, origin)) {
        swarm_drop(s, SWD_DROP_DUPLICATE, origin);
        return;
    }
    if (swd_worker_push_updates(s->wk, u, b->n) != 0) {
        swarm_drop(s, SWD_DROP_BACKLOG, origin);
        return;
    }
    sw_diag d = {{0}};
    int rc = sw_archive_append(s->archive, origin, b->first_step, (uint32_t)b->n, env, env_len, &d);
    if (rc != 0)
        swd_log(SWD_LOG_WARN, "archive append failed", "error=%s",
                SWD_LOG_Q(d.msg[0] ? d.msg : sw_strerror(rc)));
    s->updates_in += b->n;
}

/* ------------------------------------------------------------ membership */

/* Anti-entropy: asks p for the origins it holds more of than we do. */
void swarm_repair_from(swd_swarm *s, const swd_peer *p)
{
    if (s->left) return; /* leaving: ask for nothing more */
    if (!p->has_announce || !p->sync_addr[0] || p->banned) return;
    if (p->state != SWD_PEER_ALIVE) return;
    if (swarm_now_ms() < p->ae_quiet_until_ms) return; /* it had nothing for us lately */
    for (size_t i = 0; i < p->n_vv; i++) {
        const swd_vv_entry *e = &p->vv[i];
        if (memcmp(e->origin, s->self, SW_ID_BYTES) == 0) continue;
        if (swd_members_banned(s->members, e->origin)) continue;
        uint64_t have = swarm_have(s, e->origin);
        if (e->count <= have || swarm_req_pending_origin(s, e->origin)) continue;
        swd_msg m;
        memset(&m, 0, sizeof m);
        m.type = SWD_MSG_GET_UPDATES;
        memcpy(m.u.get_updates.origin, e->origin, SW_ID_BYTES);
        m.u.get_updates.first_step = have;
        uint64_t want = e->count - have;
        m.u.get_updates.max_steps =
            (uint32_t)(want < SWD_SWARM_AE_MAX_STEPS ? want : SWD_SWARM_AE_MAX_STEPS);
        swarm_request(s, REQ_GET_UPDATES, p->sync_addr, &m, e->origin, p->id);
    }
}

static void swarm_on_updates_reply(swd_swarm *s, const swd_msg *m)
{
    const swd_updates *u = &m->u.updates;
    for (size_t i = 0; i < u->n; i++) {
        uint8_t sender[SW_ID_BYTES];
        if (swd_wire_peek_sender(u->env[i], u->env_len[i], sender) == 0 &&
            swd_members_banned(s->members, sender)) {
            swarm_drop(s, SWD_DROP_BANNED, sender);
            continue;
        }
        swd_msg b;
        swd_drop drop;
        if (swd_wire_open(u->env[i], u->env_len[i], s->run_id, &b, &drop) != 0) {
            swarm_drop(s, drop, NULL);
            continue;
        }
        if (b.type == SWD_MSG_BATCH)
            swarm_take_batch(s, &b, u->env[i], u->env_len[i]);
        else
            swarm_drop(s, SWD_DROP_UNEXPECTED, b.sender);
        swd_msg_fini(&b);
    }
}

/* A Welcome to our running Hello: NULL when taken, else why not. */
static const char *swarm_on_hello_reply(swd_swarm *s, const swd_msg *m)
{
    if (m->type == SWD_MSG_ERROR) return m->u.error.message[0] ? m->u.error.message : "refused";
    if (m->type != SWD_MSG_WELCOME) return "the member sent no Welcome";
    uint8_t id[SW_ID_BYTES];
    crypto_generichash(id, SW_ID_BYTES, (const unsigned char *)m->u.welcome.run_spec,
                       m->u.welcome.run_spec_len, NULL, 0);
    if (memcmp(id, s->run_id, SW_ID_BYTES) != 0) {
        char hex[SWARM_HEX];
        swarm_hex(id, hex);
        swd_log(SWD_LOG_ERROR, "a bootstrap member belongs to another run: ignored",
                "their_run_id=%s", hex);
        return "that member belongs to another run (its run spec differs from this node's)";
    }
    swd_members_gossip(s->members, m->u.welcome.members, m->u.welcome.n_members, swarm_now_ms());
    swarm_subscribe_all(s);
    s->welcomed = true;
    return NULL;
}

void swarm_on_reply(swd_swarm *s, swd_net_event *ev)
{
    swarm_req *r = NULL;
    for (size_t i = 0; i < SWD_SWARM_MAX_PENDING; i++)
        if (s->reqs[i].kind != REQ_NONE && s->reqs[i].id == ev->id) r = &s->reqs[i];
    if (!r) return;
    swarm_req req = *r;
    r->kind = REQ_NONE;
    swd_msg m;
    memset(&m, 0, sizeof m);
    swd_drop drop;
    const char *why = NULL;
    if (ev->error != 0 || !ev->data) {
        why = ev->error == SW_ETIMEDOUT ? "no answer (timed out)" : "the request failed";
    } else if (swd_wire_open(ev->data, ev->len, s->run_id, &m, &drop) != 0) {
        swarm_drop(s, drop, NULL);
        why = swd_drop_name(drop);
    } else if (req.kind == REQ_GET_UPDATES && m.type == SWD_MSG_UPDATES) {
        const swd_peer *q = swd_members_find(s->members, m.sender);
        if (!q || q->state != SWD_PEER_LEFT) swarm_seen(s, m.sender);
        uint64_t before = swarm_have(s, req.origin);
        swarm_on_updates_reply(s, &m);
        /* More to fetch from the same peer: ask again at once. */
        const swd_peer *p = swd_members_find(s->members, req.peer);
        if (swarm_have(s, req.origin) > before) {
            s->ae_progress_ms = swarm_now_ms();
            if (p) swarm_repair_from(s, p);
        } else if (p) {
            /* It claimed more than it could serve (not yet archived, or lost
             * in a crash): ask others, and it again only after a while. */
            swd_peer *q2 = swd_members_find(s->members, req.peer);
            if (q2)
                q2->ae_quiet_until_ms =
                    swarm_now_ms() + SWD_SWARM_ANNOUNCE_EVERY * (uint64_t)s->cfg->heartbeat_ms;
        }
    } else if (req.kind == REQ_HELLO) {
        why = swarm_on_hello_reply(s, &m);
    } else if (m.type != SWD_MSG_ERROR) {
        swarm_drop(s, SWD_DROP_UNEXPECTED, m.sender);
    }
    if (req.has_ctl) {
        if (why)
            swarm_reply_json(s, req.ctl_id,
                             json_pack("{s:s+}", "error", "join refused or failed: ", why));
        else
            swarm_reply_json(s, req.ctl_id,
                             json_pack("{s:b,s:I}", "ok", 1, "members",
                                       (json_int_t)swd_members_count(s->members)));
    }
    swd_msg_fini(&m);
}

/* ------------------------------------------------------------ published messages */
