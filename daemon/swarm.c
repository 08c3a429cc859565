/* The swarm: life cycle, membership, announces, the loop entry points (swarm_int.h). */
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

uint64_t swarm_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

double swarm_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void swarm_hex(const uint8_t id[SW_ID_BYTES], char out[SWARM_HEX])
{
    sw_digest_hex(id, out);
}

void swarm_drop(swd_swarm *s, swd_drop d, const uint8_t *sender)
{
    s->dropped[d]++;
    if (swd_log_enabled(SWD_LOG_DEBUG)) {
        char hex[SWARM_HEX] = "unknown";
        if (sender) swarm_hex(sender, hex);
        swd_log(SWD_LOG_DEBUG, "message dropped", "reason=%s sender=%.12s", swd_drop_name(d), hex);
    }
}

/* ------------------------------------------------------------ addresses */

/* url with a wildcard host (0.0.0.0, *, [::]) replaced by advertise. */
static void swarm_advertised(const char *url, const char *advertise, char *out, size_t size)
{
    const char *host = strstr(url, "://");
    const char *port = host ? strrchr(host + 3, ':') : NULL;
    if (!host || !port) {
        snprintf(out, size, "%s", url);
        return;
    }
    size_t hl = (size_t)(port - (host + 3));
    const char *h = host + 3;
    bool wild = (hl == 7 && strncmp(h, "0.0.0.0", 7) == 0) || (hl == 1 && h[0] == '*') ||
                (hl == 4 && strncmp(h, "[::]", 4) == 0) || hl == 0;
    if (!wild) {
        snprintf(out, size, "%s", url);
        return;
    }
    snprintf(out, size, "%.*s%s%s", (int)(host + 3 - url), url,
             advertise && advertise[0] ? advertise : "127.0.0.1", port);
}

/* ------------------------------------------------------------ sealing */

/* Seals and publishes m; counts nothing else. */
static int swarm_publish(swd_swarm *s, const swd_msg *m)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = swd_wire_seal(m, s->run_id, s->self, s->sk, &buf, &len);
    if (rc != 0) return rc;
    rc = swd_net_publish(s->net, buf, len);
    free(buf);
    s->last_pub_ms = swarm_now_ms();
    return rc;
}

void swarm_reply_error(swd_swarm *s, uint64_t id, swd_context ctx, swd_error_code code,
                       const char *text)
{
    swd_msg m;
    memset(&m, 0, sizeof m);
    m.type = SWD_MSG_ERROR;
    m.context = ctx;
    m.u.error.code = code;
    snprintf(m.u.error.message, sizeof m.u.error.message, "%s", text);
    uint8_t *buf = NULL;
    size_t len = 0;
    if (swd_wire_seal(&m, s->run_id, s->self, s->sk, &buf, &len) == 0) {
        swd_net_reply(s->net, id, buf, len);
        free(buf);
    } else {
        swd_net_reply(s->net, id, NULL, 0);
    }
}

/* ------------------------------------------------------------ version vectors */

uint64_t swarm_vv_prefix(const sw_vv *vv, const uint8_t origin[SW_ID_BYTES])
{
    size_t lo = 0, hi = vv->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = memcmp(vv->o[mid].origin, origin, SW_ID_BYTES);
        if (c == 0) return vv->o[mid].prefix;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

/* What we hold of origin, or have queued to the worker (archived). */
uint64_t swarm_have(const swd_swarm *s, const uint8_t origin[SW_ID_BYTES])
{
    uint64_t a = swarm_vv_prefix(&s->vv, origin);
    uint64_t b = sw_archive_prefix(s->archive, origin);
    return a > b ? a : b;
}

/* vv as wire entries (prefix counts), at most SWD_WIRE_MAX_VV; *out malloc'd. */
int swarm_vv_entries(const sw_vv *vv, swd_vv_entry **out, size_t *n)
{
    size_t k = 0, cap = vv->n < SWD_WIRE_MAX_VV ? vv->n : SWD_WIRE_MAX_VV;
    swd_vv_entry *e = cap ? calloc(cap, sizeof *e) : NULL;
    if (cap && !e) return SW_ENOMEM;
    for (size_t i = 0; i < vv->n && k < cap; i++) {
        if (vv->o[i].prefix == 0) continue;
        memcpy(e[k].origin, vv->o[i].origin, SW_ID_BYTES);
        e[k].count = vv->o[i].prefix;
        k++;
    }
    *out = e;
    *n = k;
    return 0;
}

/* ------------------------------------------------------------ own batches */

void swarm_subscribe_all(swd_swarm *s)
{
    size_t n = swd_members_count(s->members);
    for (size_t i = 0; i < n; i++) {
        swd_peer *p = swd_members_at(s->members, i);
        if (p->subscribed || p->banned || !p->pub_addr[0]) continue;
        sw_diag d = {{0}};
        if (swd_net_subscribe(s->net, p->pub_addr, &d) == 0)
            p->subscribed = true;
        else
            swd_log(SWD_LOG_WARN, "cannot subscribe to a peer", "addr=%s error=%s", p->pub_addr,
                    SWD_LOG_Q(d.msg[0] ? d.msg : "?"));
    }
}

static swarm_req *swarm_req_slot(swd_swarm *s)
{
    for (size_t i = 0; i < SWD_SWARM_MAX_PENDING; i++)
        if (s->reqs[i].kind == REQ_NONE) return &s->reqs[i];
    return NULL;
}

bool swarm_req_pending_origin(const swd_swarm *s, const uint8_t origin[SW_ID_BYTES])
{
    for (size_t i = 0; i < SWD_SWARM_MAX_PENDING; i++)
        if (s->reqs[i].kind == REQ_GET_UPDATES &&
            memcmp(s->reqs[i].origin, origin, SW_ID_BYTES) == 0)
            return true;
    return false;
}

/* Sends m to addr; the reply comes back as a REPLY event.  Returns the
 * slot (NULL when none is free or the request could not be sent). */
swarm_req *swarm_request(swd_swarm *s, swarm_req_kind kind, const char *addr, const swd_msg *m,
                         const uint8_t origin[SW_ID_BYTES], const uint8_t peer[SW_ID_BYTES])
{
    swarm_req *r = swarm_req_slot(s);
    if (!r) return NULL;
    uint8_t *buf = NULL;
    size_t len = 0;
    if (swd_wire_seal(m, s->run_id, s->self, s->sk, &buf, &len) != 0) return NULL;
    uint64_t id;
    uint32_t timeout = kind == REQ_HELLO ? SWD_SWARM_HELLO_TIMEOUT_MS : SWD_SWARM_AE_TIMEOUT_MS;
    int rc = swd_net_request(s->net, addr, buf, len, timeout, &id);
    free(buf);
    if (rc != 0) return NULL;
    memset(r, 0, sizeof *r);
    r->kind = kind;
    r->id = id;
    r->sent_ms = swarm_now_ms();
    if (origin) memcpy(r->origin, origin, SW_ID_BYTES);
    if (peer) memcpy(r->peer, peer, SW_ID_BYTES);
    return r;
}

void swarm_hello_msg(const swd_swarm *s, swd_msg *m)
{
    memset(m, 0, sizeof *m);
    m->type = SWD_MSG_HELLO;
    m->context = SWD_CTX_JOIN;
    snprintf(m->u.hello.pub_addr, sizeof m->u.hello.pub_addr, "%s", s->pub_url);
    snprintf(m->u.hello.sync_addr, sizeof m->u.hello.sync_addr, "%s", s->sync_url);
}

void swarm_reply_json(swd_swarm *s, uint64_t id, json_t *reply)
{
    char *text = reply ? json_dumps(reply, JSON_COMPACT) : NULL;
    json_decref(reply);
    if (text)
        swd_net_reply(s->net, id, (const uint8_t *)text, strlen(text));
    else
        swd_net_reply(s->net, id, NULL, 0);
    free(text);
}

static void swarm_on_change(void *ctx, const swd_peer *p, swd_peer_state from)
{
    (void)ctx;
    char hex[SWARM_HEX];
    swarm_hex(p->id, hex);
    swd_log(p->state == SWD_PEER_DEAD || p->state == SWD_PEER_SUSPECT ? SWD_LOG_WARN : SWD_LOG_INFO,
            "peer state changed", "peer=%.12s from=%s to=%s addr=%s", hex,
            swd_peer_state_name(from), swd_peer_state_name(p->state),
            p->pub_addr[0] ? p->pub_addr : "?");
}

/* A verified message from a peer: it is alive. */
swd_peer *swarm_seen(swd_swarm *s, const uint8_t id[SW_ID_BYTES])
{
    swd_peer *p = swd_members_find(s->members, id);
    swd_peer_state from = p ? p->state : SWD_PEER_JOINING;
    bool known = p != NULL;
    p = swd_members_seen(s->members, id, swarm_now_ms());
    if (p && (!known || from != SWD_PEER_ALIVE)) swarm_on_change(s, p, from);
    return p;
}

/* ------------------------------------------------------------ announces */

/*
 * syncing: far behind what an alive peer announces AND anti-entropy brought
 * updates recently.  A version vector is a claim; one that nobody can serve
 * (a lying or broken peer) must not keep the node "syncing", which peers'
 * pacing reads as "do not wait for it".
 */
swd_node_state swarm_node_state(const swd_swarm *s)
{
    if (s->phase == SWD_PHASE_DONE) return SWD_STATE_DONE;
    if (s->paused) return SWD_STATE_PAUSED;
    if (s->ae_progress_ms == 0 ||
        swarm_now_ms() - s->ae_progress_ms > 3 * (uint64_t)s->cfg->heartbeat_ms)
        return SWD_STATE_TRAINING;
    size_t n = swd_members_count(s->members);
    for (size_t i = 0; i < n; i++) {
        const swd_peer *p = swd_members_at_const(s->members, i);
        if (p->state != SWD_PEER_ALIVE || !p->has_announce) continue;
        for (size_t j = 0; j < p->n_vv; j++)
            if (p->vv[j].count > swarm_have(s, p->vv[j].origin) + SWARM_SYNCING_GAP)
                return SWD_STATE_SYNCING;
    }
    return SWD_STATE_TRAINING;
}

size_t swarm_member_list(swd_swarm *s, swd_member_info *out, size_t max, bool with_self)
{
    size_t k = 0;
    if (with_self && k < max) {
        memcpy(out[k].id, s->self, SW_ID_BYTES);
        snprintf(out[k].pub_addr, sizeof out[k].pub_addr, "%s", s->pub_url);
        snprintf(out[k].sync_addr, sizeof out[k].sync_addr, "%s", s->sync_url);
        out[k].alive = true;
        k++;
    }
    size_t n = swd_members_count(s->members);
    for (size_t i = 0; i < n && k < max; i++) {
        const swd_peer *p = swd_members_at_const(s->members, i);
        if (p->banned || !p->pub_addr[0] || !p->sync_addr[0]) continue;
        if (p->state != SWD_PEER_ALIVE && p->state != SWD_PEER_SUSPECT) continue;
        memcpy(out[k].id, p->id, SW_ID_BYTES);
        snprintf(out[k].pub_addr, sizeof out[k].pub_addr, "%s", p->pub_addr);
        snprintf(out[k].sync_addr, sizeof out[k].sync_addr, "%s", p->sync_addr);
        out[k].alive = true;
        k++;
    }
    return k;
}

void swarm_announce(swd_swarm *s)
{
    swd_msg m;
    memset(&m, 0, sizeof m);
    m.type = SWD_MSG_ANNOUNCE;
    swd_announce *a = &m.u.announce;
    a->seq = ++s->announce_seq;
    snprintf(a->pub_addr, sizeof a->pub_addr, "%s", s->pub_url);
    snprintf(a->sync_addr, sizeof a->sync_addr, "%s", s->sync_url);
    a->state = swarm_node_state(s);
    a->step = s->last.next_step;
    a->ledger_updates = s->last.ledger_count;
    a->loss = (float)s->loss;
    swd_member_info members[SWD_WIRE_MAX_MEMBERS];
    a->members = members;
    a->n_members = swarm_member_list(s, members, SWD_WIRE_MAX_MEMBERS, false);
    if (swarm_vv_entries(&s->vv, &a->vv, &a->n_vv) != 0) return;
    /* Our own updates count only once published (archived): peers would ask
     * for the rest and get nothing. */
    uint64_t published = sw_archive_prefix(s->archive, s->self);
    for (size_t i = 0; i < a->n_vv; i++)
        if (memcmp(a->vv[i].origin, s->self, SW_ID_BYTES) == 0 && a->vv[i].count > published)
            a->vv[i].count = published;
    bool digest_exact = true; /* the wire carries prefixes only */
    for (size_t i = 0; i < s->digest_vv.n; i++)
        digest_exact &= s->digest_vv.o[i].n_extra == 0;
    if (s->digest_gen && digest_exact) {
        a->has_digest = true;
        memcpy(a->digest, s->digest, SW_ID_BYTES);
        if (swarm_vv_entries(&s->digest_vv, &a->digest_vv, &a->n_digest_vv) != 0) {
            free(a->vv);
            return;
        }
    }
    if (swarm_publish(s, &m) != 0) swd_log(SWD_LOG_WARN, "cannot publish an announce", NULL);
    s->last_announce_ms = s->last_pub_ms;
    free(a->vv);
    free(a->digest_vv);
}

static void swarm_on_announce(swd_swarm *s, const swd_msg *m)
{
    swd_drop drop;
    if (!swd_members_announce(s->members, m->sender, &m->u.announce, swarm_now_ms(), &drop)) {
        swarm_drop(s, drop, m->sender);
        return;
    }
    swarm_subscribe_all(s); /* its address, and members it gossiped */
    const swd_peer *p = swd_members_find(s->members, m->sender);
    if (p) swarm_repair_from(s, p);
}

/* ------------------------------------------------------------ sync service */

static void swarm_on_sub_msg(swd_swarm *s, swd_net_event *ev)
{
    uint8_t sender[SW_ID_BYTES];
    uint64_t now = swarm_now_ms();
    if (ev->len > SWD_WIRE_MAX_MSG) {
        swarm_drop(s, SWD_DROP_OVERSIZE, NULL);
        return;
    }
    bool peeked = swd_wire_peek_sender(ev->data, ev->len, sender) == 0;
    if (peeked && swd_members_banned(s->members, sender)) {
        swarm_drop(s, SWD_DROP_BANNED, sender);
        return;
    }
    if (peeked && !swd_members_rate_ok(s->members, sender, now)) {
        swarm_drop(s, SWD_DROP_RATE_LIMITED, sender);
        return;
    }
    swd_msg m;
    swd_drop drop;
    if (swd_wire_open(ev->data, ev->len, s->run_id, &m, &drop) != 0) {
        swarm_drop(s, drop, peeked ? sender : NULL);
        return;
    }
    if (memcmp(m.sender, s->self, SW_ID_BYTES) == 0) {
        swarm_drop(s, SWD_DROP_SELF, m.sender);
        swd_msg_fini(&m);
        return;
    }
    switch (m.type) {
    case SWD_MSG_BATCH:
        swarm_seen(s, m.sender);
        swarm_take_batch(s, &m, ev->data, ev->len);
        break;
    case SWD_MSG_ANNOUNCE:
        swarm_seen(s, m.sender);
        swarm_on_announce(s, &m);
        break;
    case SWD_MSG_LEAVE: {
        swd_peer *p = swd_members_find(s->members, m.sender);
        swd_peer_state from = p ? p->state : SWD_PEER_JOINING;
        swd_members_leave(s->members, m.sender, now);
        p = swd_members_find(s->members, m.sender);
        if (p) swarm_on_change(s, p, from);
        break;
    }
    default:
        swarm_drop(s, SWD_DROP_UNEXPECTED, m.sender);
        break;
    }
    swd_msg_fini(&m);
}

/* ------------------------------------------------------------ status */

void swd_swarm_on_net(swd_swarm *s)
{
    swd_net_event *ev = swd_net_drain(s->net);
    while (ev) {
        swd_net_event *next = ev->next;
        switch (ev->kind) {
        case SWD_NET_SUB_MSG:
            swarm_on_sub_msg(s, ev);
            break;
        case SWD_NET_SYNC_REQ:
            swarm_on_sync_req(s, ev);
            break;
        case SWD_NET_CONTROL_REQ:
            swarm_on_control(s, ev);
            break;
        case SWD_NET_REPLY:
            swarm_on_reply(s, ev);
            break;
        }
        swd_net_event_free(ev);
        ev = next;
    }
}

void swd_swarm_on_report(swd_swarm *s, const swd_worker_report *r)
{
    s->last = *r;
    s->win_steps += r->steps;
    s->win_loss += r->loss_sum;
    s->steps_total += r->steps;
    s->updates_applied += r->received;
    for (size_t i = 0; i <= SWD_STEP_BUCKETS; i++)
        s->step_hist[i] += r->step_hist[i];
    s->step_seconds += r->step_seconds;
    swd_job_result jr;
    while (swd_worker_take_result(s->wk, &jr))
        swarm_job_done(s, &jr);
    for (size_t i = 0; i < r->n_equiv; i++) {
        s->dropped[SWD_DROP_EQUIVOCATION]++;
        swarm_ban_updates(s, &r->equiv[i].held, &r->equiv[i].got, NULL, 0, NULL, 0);
    }
    swd_worker_copy_vv(s->wk, &s->vv_gen, &s->vv);
    swd_worker_copy_digest(s->wk, &s->digest_gen, s->digest, &s->digest_count, &s->digest_vv);
    swarm_take_own(s);
}

static uint64_t swarm_held_steps(void *ctx, const uint8_t id[SW_ID_BYTES])
{
    const swd_swarm *s = ctx;
    return swarm_vv_prefix(&s->vv, id) / (uint64_t)s->train.directions;
}

void swd_swarm_on_cron(swd_swarm *s)
{
    uint64_t now = swarm_now_ms();
    if (s->left) return;
    s->cronloops++;
    swarm_flush_own(s, false);
    swd_members_tick(s->members, now, swarm_on_change, s);

    /* progress window for status and announces */
    double t = swarm_now_s();
    if (t - s->win_t0 >= 5.0) {
        s->steps_per_s = (double)s->win_steps / (t - s->win_t0);
        if (s->win_steps) s->loss = s->win_loss / (double)s->win_steps;
        s->loss_hist[s->loss_head] = s->win_steps ? s->win_loss / (double)s->win_steps : NAN;
        s->loss_head = (s->loss_head + 1) % SWD_SWARM_LOSS_HISTORY;
        if (s->n_loss_hist < SWD_SWARM_LOSS_HISTORY) s->n_loss_hist++;
        s->win_steps = 0;
        s->win_loss = 0;
        s->win_t0 = t;
    }

    /* Prometheus reads what status says, refreshed every second. */
    if (s->metrics && s->cronloops % 10 == 0) {
        json_t *st = swarm_status(s);
        char *text = st ? swd_metrics_render(st) : NULL;
        json_decref(st);
        if (text) swd_metrics_publish(s->metrics, text);
    }

    uint64_t hb = (uint64_t)s->cfg->heartbeat_ms;
    if (now - s->last_pub_ms >= hb || now - s->last_announce_ms >= SWD_SWARM_ANNOUNCE_EVERY * hb)
        swarm_announce(s);

    /* anti-entropy every heartbeat, against every alive peer */
    if (s->cronloops % (hb / 100 ? hb / 100 : 1) == 0) {
        size_t n = swd_members_count(s->members);
        for (size_t i = 0; i < n; i++)
            swarm_repair_from(s, swd_members_at_const(s->members, i));
        swarm_subscribe_all(s);
    }

    /* A request whose reply never came (net promises one, this is the
     * backstop) must not hold its origin's slot forever. */
    for (size_t i = 0; i < SWD_SWARM_MAX_PENDING; i++)
        if (s->reqs[i].kind != REQ_NONE &&
            now - s->reqs[i].sent_ms > 2 * (uint64_t)SWD_SWARM_AE_TIMEOUT_MS + 1000) {
            swd_log(SWD_LOG_WARN, "a request got no reply event: slot reclaimed", NULL);
            s->reqs[i].kind = REQ_NONE;
        }

    /* Hello with our identity and addresses to a bootstrap member (so it
     * subscribes to us at once), again until one welcomes us. */
    if (s->cfg->bootstrap[0] && !s->welcomed &&
        (s->last_hello_ms == 0 || now - s->last_hello_ms >= SWARM_HELLO_RETRY_MS)) {
        s->last_hello_ms = now;
        char list[4096 + 1];
        snprintf(list, sizeof list, "%s", s->cfg->bootstrap);
        size_t idx = 0, want = s->bootstrap_next++;
        char *save = NULL, *chosen = NULL, *first = NULL;
        for (char *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            while (*tok == ' ')
                tok++;
            if (!first) first = tok;
            if (idx++ == want) chosen = tok;
        }
        if (!chosen) {
            chosen = first;
            s->bootstrap_next = 1;
        }
        if (chosen) {
            swd_msg m;
            swarm_hello_msg(s, &m);
            swarm_request(s, REQ_HELLO, chosen, &m, NULL, NULL);
        }
    }

    /* pacing */
    if (s->phase == SWD_PHASE_TRAINING) {
        uint64_t my_step = s->last.next_step;
        uint64_t limit =
            swd_members_pace(s->members, my_step, (uint64_t)s->cfg->max_staleness,
                             (uint64_t)s->cfg->lag_timeout_ms, swarm_held_steps, s, now);
        uint64_t excl = limit == UINT64_MAX ? UINT64_MAX : limit + 1;
        swd_worker_set_step_limit(s->wk, excl);
        /* Held back: the peers we wait for may be waiting for our pending
         * updates as well; publish them now rather than at batch_max_ms. */
        if (my_step >= excl && s->n_pend) swarm_flush_own(s, true);
    }
}

void swd_swarm_set_phase(swd_swarm *s, swd_swarm_phase phase)
{
    if (s->phase == phase) return;
    s->phase = phase;
    if (phase == SWD_PHASE_STOPPING) swd_worker_set_step_limit(s->wk, UINT64_MAX);
    swarm_announce(s);
}

bool swd_swarm_peers_hold_own(swd_swarm *s)
{
    uint64_t mine = swarm_vv_prefix(&s->vv, s->self);
    size_t n = swd_members_count(s->members);
    for (size_t i = 0; i < n; i++) {
        const swd_peer *p = swd_members_at_const(s->members, i);
        if (p->state != SWD_PEER_ALIVE || p->banned || !p->has_announce) continue;
        uint64_t theirs = 0;
        for (size_t j = 0; j < p->n_vv; j++)
            if (memcmp(p->vv[j].origin, s->self, SW_ID_BYTES) == 0) theirs = p->vv[j].count;
        if (theirs < mine) return false;
    }
    return true;
}

void swd_swarm_flush(swd_swarm *s)
{
    swarm_take_own(s);
    swarm_flush_own(s, true);
    swarm_announce(s);
}

void swd_swarm_leave(swd_swarm *s)
{
    swarm_take_own(s);
    swarm_flush_own(s, true);
    swd_msg m;
    memset(&m, 0, sizeof m);
    m.type = SWD_MSG_LEAVE;
    swarm_publish(s, &m);
    s->left = true;
    swd_log(SWD_LOG_INFO, "left the swarm", "updates_out=%" PRIu64 " updates_in=%" PRIu64,
            s->updates_out, s->updates_in);
}

/* ------------------------------------------------------------ join handshake */

int swd_swarm_hello(const swd_config *cfg, double wait_s, swd_msg *welcome, sw_runspec *rs,
                    char *addr, size_t addr_size)
{
    memset(welcome, 0, sizeof *welcome);
    unsigned char pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
    crypto_sign_keypair(pk, sk);
    swd_msg m;
    memset(&m, 0, sizeof m);
    m.type = SWD_MSG_HELLO;
    m.context = SWD_CTX_JOIN;
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = swd_wire_seal(&m, NULL, pk, sk, &buf, &len);
    sodium_memzero(sk, sizeof sk);
    if (rc != 0) return SWD_EXIT_FAIL;
    int ex = SWD_EXIT_FAIL;
    double deadline = swarm_now_s() + wait_s;
    for (int round = 0; ex != SWD_EXIT_OK; round++) {
        if (round > 0) {
            if (swarm_now_s() >= deadline) break;
            if (round == 1)
                swd_log(SWD_LOG_INFO, "waiting for a bootstrap member to answer", "wait_s=%.0f",
                        wait_s);
            struct timespec ts = {1, 0};
            nanosleep(&ts, NULL);
        }
        char list[4096 + 1];
        snprintf(list, sizeof list, "%s", cfg->bootstrap);
        char *save = NULL;
        for (char *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            while (*tok == ' ')
                tok++;
            if (!*tok) continue;
            uint8_t *reply = NULL;
            size_t rlen = 0;
            sw_diag d = {{0}};
            rc = swd_net_request_sync(tok, buf, len, SWD_SWARM_HELLO_TIMEOUT_MS, &reply, &rlen, &d);
            if (rc != 0) {
                if (round == 0)
                    swd_log(SWD_LOG_WARN, "bootstrap member did not answer", "addr=%s error=%s",
                            tok, SWD_LOG_Q(d.msg[0] ? d.msg : sw_strerror(rc)));
                continue;
            }
            swd_drop drop;
            rc = swd_wire_open(reply, rlen, NULL, welcome, &drop);
            free(reply);
            if (rc == 0 && welcome->type == SWD_MSG_ERROR) {
                swd_log(SWD_LOG_WARN, "bootstrap member refused the Hello",
                        "addr=%s code=%d message=%s", tok, (int)welcome->u.error.code,
                        SWD_LOG_Q(welcome->u.error.message));
                swd_msg_fini(welcome);
                continue;
            }
            if (rc != 0 || welcome->type != SWD_MSG_WELCOME) {
                swd_log(SWD_LOG_WARN, "bootstrap member sent no valid Welcome", "addr=%s reason=%s",
                        tok, rc != 0 ? swd_drop_name(drop) : "not a welcome");
                swd_msg_fini(welcome);
                continue;
            }
            char name[300];
            snprintf(name, sizeof name, "run spec from %s", tok);
            rc = sw_runspec_parse(welcome->u.welcome.run_spec, welcome->u.welcome.run_spec_len,
                                  name, rs, &d);
            if (rc != 0) {
                swd_log(SWD_LOG_WARN, d.msg[0] ? d.msg : "bad run spec", "addr=%s", tok);
                swd_msg_fini(welcome);
                continue;
            }
            char hex[SWARM_HEX];
            uint8_t run_id[SW_ID_BYTES];
            sw_runspec_id(rs, run_id, &d);
            sw_digest_hex(run_id, hex);
            swd_log(SWD_LOG_INFO, "welcomed by a swarm member",
                    "addr=%s run_id=%s members=%zu ledger_updates=%" PRIu64, tok, hex,
                    welcome->u.welcome.n_members, welcome->u.welcome.ledger_updates);
            snprintf(addr, addr_size, "%s", tok);
            ex = SWD_EXIT_OK;
            break;
        }
    }
    free(buf);
    if (ex != SWD_EXIT_OK)
        swd_log(SWD_LOG_ERROR, "no bootstrap member answered: cannot join",
                "bootstrap=%s waited_s=%.0f", SWD_LOG_Q(cfg->bootstrap), wait_s);
    return ex;
}

/* ------------------------------------------------------------ open / close */

int swd_swarm_open(const swd_swarm_params *p, swd_swarm **out)
{
    swd_swarm *s = calloc(1, sizeof *s);
    if (!s) return SWD_EXIT_FAIL;
    const swd_config *cfg = p->cfg;
    sw_state *st = p->state;
    s->cfg = cfg;
    s->wk = p->worker;
    s->version = p->version;
    s->on_leave = p->on_leave;
    s->on_leave_ctx = p->on_leave_ctx;
    s->max_steps = p->max_steps;
    memcpy(s->self, st->id.pk, SW_ID_BYTES);
    s->sk = st->id.sk;
    memcpy(s->run_id, st->train.run_id, SW_ID_BYTES);
    s->train = st->train;
    snprintf(s->state_dir, sizeof s->state_dir, "%s", st->dir);
    s->t_start = s->win_t0 = swarm_now_s();
    s->loss = NAN;
    /* Announce sequence numbers must grow across restarts: start from the clock. */
    struct timespec rt;
    clock_gettime(CLOCK_REALTIME, &rt);
    s->announce_seq = (uint64_t)rt.tv_sec * 1000000u + (uint64_t)rt.tv_nsec / 1000u;

    sw_diag d = {{0}};
    int rc = sw_runspec_canonical(&st->runspec, s->runspec_json, sizeof s->runspec_json,
                                  &s->runspec_len, &d);
    if (rc != 0) goto fail_diag;
    swd_members_opts mo = {.heartbeat_ms = (uint64_t)cfg->heartbeat_ms,
                           .suspect_after = (uint32_t)cfg->suspect_after,
                           .dead_after = (uint32_t)cfg->dead_after,
                           .rate_per_s = SWARM_RATE_PER_S,
                           .rate_burst = SWARM_RATE_BURST};
    if (cfg->dead_after <= cfg->suspect_after) {
        swd_log(SWD_LOG_ERROR, "[node] dead_after must exceed suspect_after", "file=%s",
                SWD_LOG_Q(cfg->file));
        free(s);
        return SWD_EXIT_USAGE;
    }
    if ((rc = swd_members_alloc(&mo, s->self, &s->members)) != 0) goto fail_diag;

    char path[SW_STATE_PATH_MAX];
    if (sw_path_join(path, sizeof path, st->dir, "archive") != 0) {
        rc = SW_ETOOBIG;
        goto fail_diag;
    }
    sw_archive_open_info ai;
    if ((rc = sw_archive_open(path, s->run_id, &s->archive, &ai, &d)) != 0) goto fail_diag;
    if (ai.truncated_bytes)
        swd_log(SWD_LOG_WARN, "archive: torn tail truncated", "bytes=%" PRIu64, ai.truncated_bytes);
    if ((rc = swarm_refill_own(s, st)) != 0) goto fail_diag;
    if ((rc = swarm_requeue_archived(s, st)) != 0) goto fail_diag;

    char control[SW_STATE_PATH_MAX];
    if (cfg->control && cfg->control[0])
        snprintf(control, sizeof control, "%s", cfg->control);
    else if (sw_path_join(control, sizeof control, st->dir, "control.sock") != 0) {
        rc = SW_ETOOBIG;
        goto fail_diag;
    }
    swd_net_opts no = {.pub_addr = cfg->listen,
                       .sync_addr = cfg->sync,
                       .control_path = control,
                       .drop_in_permille = (uint32_t)cfg->test_drop_permille,
                       .drop_seed = s->announce_seq};
    if ((rc = swd_net_open(&no, p->net_notify, &s->net, &d)) != 0) goto fail_diag;
    if (cfg->metrics && cfg->metrics[0]) {
        if ((rc = swd_metrics_open(cfg->metrics, &s->metrics, &d)) != 0) goto fail_diag;
        swd_log(SWD_LOG_INFO, "metrics listening", "url=%s", swd_metrics_url(s->metrics));
    }
    swarm_advertised(swd_net_pub_url(s->net), cfg->advertise, s->pub_url, sizeof s->pub_url);
    swarm_advertised(swd_net_sync_url(s->net), cfg->advertise, s->sync_url, sizeof s->sync_url);

    if (p->welcome) {
        swd_members_gossip(s->members, p->welcome->members, p->welcome->n_members, swarm_now_ms());
        swarm_subscribe_all(s);
    }
    swd_worker_drain(s->wk, &s->last);
    swd_worker_copy_vv(s->wk, &s->vv_gen, &s->vv);
    swd_log(SWD_LOG_INFO, "swarm sockets open",
            "pub=%s sync=%s control=%s bootstrap=%s members=%zu archive_entries=%" PRIu64,
            s->pub_url, s->sync_url, SWD_LOG_Q(control),
            SWD_LOG_Q(cfg->bootstrap[0] ? cfg->bootstrap : "none"), swd_members_count(s->members),
            ai.entries);
    *out = s;
    return SWD_EXIT_OK;

fail_diag:
    swd_log(SWD_LOG_ERROR, d.msg[0] ? d.msg : sw_strerror(rc), "what=swarm");
    swd_swarm_close(s);
    return SWD_EXIT_FAIL;
}

void swd_swarm_close(swd_swarm *s)
{
    if (!s) return;
    swd_metrics_close(s->metrics);
    swd_net_close(s->net);
    swd_members_free(s->members);
    sw_archive_close(s->archive);
    sw_vv_fini(&s->vv);
    sw_vv_fini(&s->digest_vv);
    free(s->pend);
    free(s);
}
