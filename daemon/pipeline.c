/* The update path between the network and the worker (pipeline.h). */
#include "pipeline.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bans.h"
#include "log.h"

void swd_pipeline_init(swd_pipeline *pl, const swd_pipeline_params *p)
{
    memset(pl, 0, sizeof *pl);
    pl->p = *p;
}

void swd_pipeline_fini(swd_pipeline *pl)
{
    free(pl->pend);
    pl->pend = NULL;
    pl->n_pend = pl->pend_cap = 0;
}

void swd_pipeline_quiet(swd_pipeline *pl)
{
    pl->quiet = true;
}

uint64_t swd_pipeline_have(const swd_pipeline *pl, const uint8_t origin[SW_ID_BYTES])
{
    uint64_t a = swd_vv_prefix(&pl->p.view->vv, origin);
    uint64_t b = sw_archive_prefix(pl->p.archive, origin);
    return a > b ? a : b;
}

uint64_t swd_pipeline_published(const swd_pipeline *pl)
{
    return sw_archive_prefix(pl->p.archive, pl->p.link->self);
}

/* ------------------------------------------------------------ own batches */

static int pipeline_archive_and_publish(swd_pipeline *pl, uint64_t first, float scale,
                                        const int8_t *q, size_t n, bool publish)
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
    int rc = swd_link_seal(pl->p.link, &m, &buf, &len);
    if (rc != 0) return rc;
    sw_diag d = {{0}};
    const uint8_t *self = pl->p.link->self;
    if (!sw_archive_covered(pl->p.archive, self, first, (uint32_t)n) &&
        (rc = sw_archive_append(pl->p.archive, self, first, (uint32_t)n, buf, len, &d)) != 0)
        swd_log(SWD_LOG_WARN, "archive append failed", "error=%s",
                SWD_LOG_Q(d.msg[0] ? d.msg : sw_strerror(rc)));
    if (publish) {
        swd_link_publish_sealed(pl->p.link, buf, len);
        pl->updates_out += n;
        pl->batches_out++;
    }
    free(buf);
    return 0;
}

/* Length of the run of pending updates from index 0 with one scale and
 * consecutive steps, at most batch_max_steps. */
static size_t pipeline_run_len(const swd_pipeline *pl)
{
    size_t max = pl->p.batch_max_steps, k = 1;
    while (k < pl->n_pend && k < max && pl->pend[k].step == pl->pend[0].step + k &&
           memcmp(&pl->pend[k].scale, &pl->pend[0].scale, sizeof(float)) == 0)
        k++;
    return k;
}

void swd_pipeline_flush(swd_pipeline *pl, bool force)
{
    uint64_t now = swd_link_now_ms(pl->p.link);
    while (pl->n_pend > 0) {
        size_t k = pipeline_run_len(pl);
        bool complete = k == pl->p.batch_max_steps || k < pl->n_pend;
        bool old = now - pl->pend_since_ms >= pl->p.batch_max_ms;
        if (!complete && !old && !force) break;
        int8_t q[SWD_WIRE_MAX_BATCH];
        for (size_t i = 0; i < k; i++)
            q[i] = pl->pend[i].q;
        if (pipeline_archive_and_publish(pl, pl->pend[0].step, pl->pend[0].scale, q, k, true) != 0)
            swd_log(SWD_LOG_ERROR, "cannot seal an update batch", "first_step=%" PRIu64,
                    pl->pend[0].step);
        memmove(pl->pend, pl->pend + k, (pl->n_pend - k) * sizeof *pl->pend);
        pl->n_pend -= k;
        pl->pend_since_ms = now;
    }
}

void swd_pipeline_add_own(swd_pipeline *pl, const sw_update *u, size_t n)
{
    if (n == 0) return;
    if (pl->n_pend + n > pl->pend_cap) {
        size_t cap = pl->pend_cap ? pl->pend_cap : 256;
        while (cap < pl->n_pend + n)
            cap *= 2;
        sw_update *p = realloc(pl->pend, cap * sizeof *p);
        if (!p) {
            /* They are in the ledger and archive refill covers them after a restart. */
            swd_log(SWD_LOG_ERROR, "out of memory queueing own updates", "dropped=%zu", n);
            return;
        }
        pl->pend = p;
        pl->pend_cap = cap;
    }
    if (pl->n_pend == 0) pl->pend_since_ms = swd_link_now_ms(pl->p.link);
    memcpy(pl->pend + pl->n_pend, u, n * sizeof *u);
    pl->n_pend += n;
    pl->updates_made += n;
    swd_pipeline_flush(pl, false);
}

/*
 * After a crash the archive (not fsynced) may lack own updates the ledger
 * holds: sign them again (same bytes per update; the grouping may differ,
 * which is not an equivocation).
 */
int swd_pipeline_refill_own(swd_pipeline *pl, sw_ledger *ledger)
{
    const uint8_t *self = pl->p.link->self;
    uint64_t next = sw_ledger_next_step(ledger, self);
    uint64_t from = sw_archive_prefix(pl->p.archive, self);
    uint64_t refilled = 0;
    int8_t q[SWD_WIRE_MAX_BATCH];
    uint64_t first = 0;
    float scale = 0;
    size_t k = 0;
    for (uint64_t step = from; step <= next; step++) {
        sw_update u;
        sw_diag d = {{0}};
        bool have = step < next && sw_ledger_get(ledger, self, step, &u, NULL, &d) == 0;
        bool fits = have && k > 0 && k < pl->p.batch_max_steps &&
                    memcmp(&u.scale, &scale, sizeof scale) == 0 && step == first + k;
        if (k > 0 && !fits) {
            if (!sw_archive_covered(pl->p.archive, self, first, (uint32_t)k)) {
                int rc = pipeline_archive_and_publish(pl, first, scale, q, k, false);
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
static bool pipeline_batch_updates(const swd_pipeline *pl, const uint8_t origin[SW_ID_BYTES],
                                   const swd_batch *b, sw_update *u)
{
    for (size_t i = 0; i < b->n; i++) {
        memcpy(u[i].origin, origin, SW_ID_BYTES);
        u[i].step = b->first_step + i;
        u[i].q = b->q[i];
        u[i].scale = b->scale;
        sw_diag d = {{0}};
        if (sw_update_check(pl->p.train, &u[i], &d) != 0) return false;
    }
    return true;
}

typedef struct pipeline_requeue {
    swd_pipeline *pl;
    sw_ledger *ledger;
    uint64_t next;   /* one past the highest step seen in the entries given */
    uint64_t queued; /* updates pushed to the worker */
    int rc;
} pipeline_requeue;

static int pipeline_requeue_entry(void *ctx, const uint8_t *bytes, size_t len)
{
    pipeline_requeue *r = ctx;
    swd_msg m;
    swd_drop drop;
    if (swd_wire_open(bytes, len, r->pl->p.link->run_id, &m, &drop) != 0) return 0;
    sw_update u[SWD_WIRE_MAX_BATCH];
    if (m.type == SWD_MSG_BATCH && pipeline_batch_updates(r->pl, m.sender, &m.u.batch, u)) {
        const swd_batch *b = &m.u.batch;
        size_t k = 0;
        for (size_t i = 0; i < b->n; i++) {
            if (u[i].step + 1 > r->next) r->next = u[i].step + 1;
            if (!sw_ledger_has(r->ledger, m.sender, u[i].step)) u[k++] = u[i];
        }
        if (k && (r->rc = swd_worker_push_updates(r->pl->p.worker, u, k)) == 0) r->queued += k;
    }
    swd_msg_fini(&m);
    return r->rc;
}

/*
 * Batches the archive holds but the ledger does not (received, then a crash
 * or a stop before the worker wrote them) go back to the worker: otherwise
 * the archive would claim them and anti-entropy would never fetch them.
 */
int swd_pipeline_requeue_archived(swd_pipeline *pl, sw_ledger *ledger)
{
    pipeline_requeue r = {.pl = pl, .ledger = ledger};
    size_t n = sw_archive_origin_count(pl->p.archive);
    for (size_t i = 0; i < n && r.rc == 0; i++) {
        uint8_t origin[SW_ID_BYTES];
        sw_archive_origin_at(pl->p.archive, i, origin);
        if (memcmp(origin, pl->p.link->self, SW_ID_BYTES) == 0) continue;
        uint64_t from = sw_ledger_prefix(ledger, origin);
        while (r.rc == 0) {
            size_t got = 0;
            sw_diag d = {{0}};
            r.next = from;
            int rc = sw_archive_fetch(pl->p.archive, origin, from, SWD_PIPELINE_AE_MAX_STEPS,
                                      SWD_WIRE_MAX_UPDATES_BATCHES, SIZE_MAX,
                                      pipeline_requeue_entry, &r, &got, &d);
            if (rc != 0 || got == 0 || r.next <= from) break;
            from = r.next;
        }
    }
    if (r.queued)
        swd_log(SWD_LOG_INFO, "archived updates the ledger lacked queued again", "updates=%" PRIu64,
                r.queued);
    return r.rc;
}

void swd_pipeline_ban(swd_pipeline *pl, const sw_update *held, const sw_update *got)
{
    pl->p.link->dropped[SWD_DROP_EQUIVOCATION]++;
    swd_bans_record(pl->p.gossip, pl->p.state_dir, held, got, NULL, 0, NULL, 0);
}

/* ------------------------------------------------------------ batches in */

typedef struct pipeline_cmp {
    const swd_pipeline *pl;
    const swd_batch *b;
    const uint8_t *origin;
    bool conflict;
    sw_update held, got;
    uint8_t *held_env; /* a copy of the archived envelope that conflicts */
    size_t held_len;
    uint64_t end; /* one past the last step of the archived entries compared */
} pipeline_cmp;

/* Compares an archived batch with the one received, step by step. */
static int pipeline_cmp_entry(void *ctx, const uint8_t *bytes, size_t len)
{
    pipeline_cmp *c = ctx;
    swd_msg m;
    swd_drop drop;
    if (swd_wire_open(bytes, len, c->pl->p.link->run_id, &m, &drop) != 0) return 0;
    if (m.type == SWD_MSG_BATCH) {
        const swd_batch *a = &m.u.batch, *b = c->b;
        if (a->first_step + a->n > c->end) c->end = a->first_step + a->n;
        for (size_t i = 0; i < b->n && !c->conflict; i++) {
            uint64_t step = b->first_step + i;
            if (step < a->first_step || step >= a->first_step + a->n) continue;
            int8_t qa = a->q[step - a->first_step];
            if (qa != b->q[i] || memcmp(&a->scale, &b->scale, sizeof(float)) != 0) {
                c->conflict = true;
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

void swd_pipeline_take_batch(swd_pipeline *pl, const swd_msg *m, const uint8_t *env, size_t env_len)
{
    swd_link *l = pl->p.link;
    const uint8_t *origin = m->sender;
    const swd_batch *b = &m->u.batch;
    if (memcmp(origin, l->self, SW_ID_BYTES) == 0) {
        swd_link_drop(l, SWD_DROP_SELF, origin);
        return;
    }
    if (b->first_step > UINT64_MAX - b->n ||
        b->first_step + b->n > swd_pipeline_have(pl, origin) + SWD_PIPELINE_MAX_AHEAD) {
        swd_link_drop(l, SWD_DROP_ABSURD_STEP, origin);
        return;
    }
    sw_update u[SWD_WIRE_MAX_BATCH];
    if (!pipeline_batch_updates(pl, origin, b, u)) {
        swd_link_drop(l, SWD_DROP_BAD_UPDATE, origin);
        return;
    }
    /* Every archived step the batch overlaps is compared, not only a batch
     * the archive covers whole: a batch that straddles an archived one with
     * other bytes is an equivocation too, and must not reach the archive
     * (which would then serve both). */
    pipeline_cmp c = {.pl = pl, .b = b, .origin = origin};
    const uint64_t end = b->first_step + b->n;
    for (uint64_t s = b->first_step; s < end && !c.conflict;) {
        size_t given = 0;
        sw_diag d = {{0}};
        sw_archive_fetch(pl->p.archive, origin, s, end - s, SWD_WIRE_MAX_BATCH, SIZE_MAX,
                         pipeline_cmp_entry, &c, &given, &d);
        s = given && c.end > s ? c.end : s + 1; /* past what was compared, or the gap's step */
    }
    if (c.conflict) {
        swd_link_drop(l, SWD_DROP_EQUIVOCATION, origin);
        swd_bans_record(pl->p.gossip, pl->p.state_dir, &c.held, &c.got, c.held_env, c.held_len, env,
                        env_len);
        free(c.held_env);
        return;
    }
    bool archived = sw_archive_covered(pl->p.archive, origin, b->first_step, (uint32_t)b->n);
    /* Only what the worker holds is a duplicate: archived is not ledgered (a
     * crash or a stop can come between the two), and the worker
     * de-duplicates against the ledger. */
    if (b->first_step + b->n <= swd_vv_prefix(&pl->p.view->vv, origin)) {
        swd_link_drop(l, SWD_DROP_DUPLICATE, origin);
        return;
    }
    if (swd_worker_push_updates(pl->p.worker, u, b->n) != 0) {
        swd_link_drop(l, SWD_DROP_BACKLOG, origin);
        return;
    }
    if (archived) return;
    sw_diag d = {{0}};
    int rc =
        sw_archive_append(pl->p.archive, origin, b->first_step, (uint32_t)b->n, env, env_len, &d);
    if (rc != 0)
        swd_log(SWD_LOG_WARN, "archive append failed", "error=%s",
                SWD_LOG_Q(d.msg[0] ? d.msg : sw_strerror(rc)));
    pl->updates_in += b->n;
}

/* ------------------------------------------------------------ anti-entropy */

void swd_pipeline_repair_from(swd_pipeline *pl, const swd_peer *p)
{
    if (pl->quiet) return;
    if (!p->has_announce || !p->sync_addr[0] || p->banned) return;
    if (p->state != SWD_PEER_ALIVE) return;
    if (swd_link_now_ms(pl->p.link) < p->ae_quiet_until_ms) return; /* nothing for us lately */
    for (size_t i = 0; i < p->n_vv; i++) {
        const swd_vv_entry *e = &p->vv[i];
        if (memcmp(e->origin, pl->p.link->self, SW_ID_BYTES) == 0) continue;
        if (swd_gossip_banned(pl->p.gossip, e->origin)) continue;
        uint64_t have = swd_pipeline_have(pl, e->origin);
        if (e->count <= have || swd_requests_pending_origin(pl->p.requests, e->origin)) continue;
        swd_msg m;
        memset(&m, 0, sizeof m);
        m.type = SWD_MSG_GET_UPDATES;
        memcpy(m.u.get_updates.origin, e->origin, SW_ID_BYTES);
        m.u.get_updates.first_step = have;
        uint64_t want = e->count - have;
        m.u.get_updates.max_steps =
            (uint32_t)(want < SWD_PIPELINE_AE_MAX_STEPS ? want : SWD_PIPELINE_AE_MAX_STEPS);
        swd_requests_send(pl->p.requests, pl->p.link, SWD_REQ_GET_UPDATES, p->sync_addr, &m,
                          e->origin, p->id);
    }
}

/* The batches of an Updates reply, each verified as if published. */
static void pipeline_take_updates(swd_pipeline *pl, const swd_updates *u)
{
    swd_link *l = pl->p.link;
    for (size_t i = 0; i < u->n; i++) {
        uint8_t sender[SW_ID_BYTES];
        if (swd_wire_peek_sender(u->env[i], u->env_len[i], sender) == 0 &&
            swd_gossip_banned(pl->p.gossip, sender)) {
            swd_link_drop(l, SWD_DROP_BANNED, sender);
            continue;
        }
        swd_msg b;
        swd_drop drop;
        if (swd_wire_open(u->env[i], u->env_len[i], l->run_id, &b, &drop) != 0) {
            swd_link_drop(l, drop, NULL);
            continue;
        }
        if (b.type == SWD_MSG_BATCH)
            swd_pipeline_take_batch(pl, &b, u->env[i], u->env_len[i]);
        else
            swd_link_drop(l, SWD_DROP_UNEXPECTED, b.sender);
        swd_msg_fini(&b);
    }
}

void swd_pipeline_on_updates(swd_pipeline *pl, const swd_req *req, const swd_msg *m)
{
    swd_gossip_heard(pl->p.gossip, m->sender);
    uint64_t before = swd_pipeline_have(pl, req->origin);
    pipeline_take_updates(pl, &m->u.updates);
    swd_peer *p = swd_members_find(pl->p.gossip->table, req->peer);
    if (swd_pipeline_have(pl, req->origin) > before) {
        /* More to fetch from the same peer: ask again at once. */
        pl->ae_progress_ms = swd_link_now_ms(pl->p.link);
        if (p) swd_pipeline_repair_from(pl, p);
    } else if (p) {
        /* It claimed more than it could serve (not yet archived, or lost in
         * a crash): ask others, and it again only after a while. */
        p->ae_quiet_until_ms =
            swd_link_now_ms(pl->p.link) + SWD_GOSSIP_ANNOUNCE_EVERY * pl->p.heartbeat_ms;
    }
}
