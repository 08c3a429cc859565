/*
 * The swarm: wires its parts together and runs their loop entry points
 * (swarm.h).  Each part owns its state (docs/architecture.md):
 *   link          the signed voice on the sockets, drop counters
 *   gossip        membership: the peer table, announces, failure detection
 *   pipeline      own and received batches, archive, bans, anti-entropy
 *   sync_service  the answers on the sync socket
 *   control       progress, the status object, the control verbs
 *   requests      outgoing requests in flight; worker_view the worker's state
 * This file routes each network event to its part, turns the worker's
 * reports into the parts' inputs, and owns the node's join state.
 */
#include "swarm.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <sodium.h>

#include "archive.h"
#include "control.h"
#include "fileio.h"
#include "gossip.h"
#include "link.h"
#include "log.h"
#include "metrics.h"
#include "pipeline.h"
#include "requests.h"
#include "setup.h"
#include "sync_service.h"
#include "worker_view.h"

#define SWARM_HELLO_RETRY_MS 5000

struct swd_swarm {
    const swd_config *cfg;
    swd_worker *wk;
    sw_train_spec train;
    char runspec_json[SW_RUNSPEC_MAX_BYTES + 1];
    size_t runspec_len;
    char state_dir[SW_STATE_PATH_MAX];

    swd_net *net;
    swd_metrics *metrics; /* NULL: no [node] metrics */
    sw_archive *archive;

    swd_link link;
    swd_worker_view view;
    swd_requests requests;
    swd_gossip gossip;
    swd_pipeline pipeline;
    swd_sync_service sync;
    swd_control control;

    uint64_t cronloops;
    uint64_t last_hello_ms;
    bool welcomed; /* a bootstrap member answered our running Hello */
    bool left;     /* Leave published: publish nothing more */
    size_t bootstrap_next;
};

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

/* ------------------------------------------------------------ announces */

static void swarm_announce(swd_swarm *s)
{
    swd_announce a;
    memset(&a, 0, sizeof a);
    a.state = swd_control_node_state(&s->control);
    a.step = s->view.last.next_step;
    a.ledger_updates = s->view.last.ledger_count;
    a.loss = (float)swd_control_loss(&s->control);
    if (swd_vv_entries(&s->view.vv, &a.vv, &a.n_vv) != 0) return;
    /* Our own updates count only once published (archived): peers would ask
     * for the rest and get nothing. */
    uint64_t published = swd_pipeline_published(&s->pipeline);
    for (size_t i = 0; i < a.n_vv; i++)
        if (memcmp(a.vv[i].origin, s->link.self, SW_ID_BYTES) == 0 && a.vv[i].count > published)
            a.vv[i].count = published;
    /* The wire carries prefixes only: no digest of a vector with gaps. */
    if (s->view.digest_gen && swd_vv_exact(&s->view.digest_vv)) {
        a.has_digest = true;
        memcpy(a.digest, s->view.digest, SW_ID_BYTES);
        if (swd_vv_entries(&s->view.digest_vv, &a.digest_vv, &a.n_digest_vv) != 0) {
            free(a.vv);
            return;
        }
    }
    swd_gossip_announce(&s->gossip, &a);
    free(a.vv);
    free(a.digest_vv);
}

/* ------------------------------------------------------------ network events */

/* A message a peer published (SUB). */
static void swarm_on_published(swd_swarm *s, const swd_net_event *ev)
{
    swd_msg m;
    if (!swd_gossip_admit(&s->gossip, ev->data, ev->len, &m)) return;
    switch (m.type) {
    case SWD_MSG_BATCH:
        swd_gossip_seen(&s->gossip, m.sender);
        swd_pipeline_take_batch(&s->pipeline, &m, ev->data, ev->len);
        break;
    case SWD_MSG_ANNOUNCE: {
        const swd_peer *p = swd_gossip_on_announce(&s->gossip, &m);
        if (p) swd_pipeline_repair_from(&s->pipeline, p);
        break;
    }
    case SWD_MSG_LEAVE:
        swd_gossip_on_leave(&s->gossip, m.sender);
        break;
    default:
        swd_link_drop(&s->link, SWD_DROP_UNEXPECTED, m.sender);
        break;
    }
    swd_msg_fini(&m);
}

/* A Welcome to our running Hello: NULL when taken, else why not. */
static const char *swarm_on_welcome(swd_swarm *s, const swd_msg *m)
{
    if (m->type == SWD_MSG_ERROR) return m->u.error.message[0] ? m->u.error.message : "refused";
    if (m->type != SWD_MSG_WELCOME) return "the member sent no Welcome";
    uint8_t id[SW_ID_BYTES];
    crypto_generichash(id, SW_ID_BYTES, (const unsigned char *)m->u.welcome.run_spec,
                       m->u.welcome.run_spec_len, NULL, 0);
    if (memcmp(id, s->link.run_id, SW_ID_BYTES) != 0) {
        char hex[SWD_HEX];
        swd_hex(id, hex);
        swd_log(SWD_LOG_ERROR, "a bootstrap member belongs to another run: ignored",
                "their_run_id=%s", hex);
        return "that member belongs to another run (its run spec differs from this node's)";
    }
    swd_gossip_welcomed(&s->gossip, m->u.welcome.members, m->u.welcome.n_members);
    s->welcomed = true;
    return NULL;
}

/* The reply to one of our requests (or its failure). */
static void swarm_on_reply(swd_swarm *s, const swd_net_event *ev)
{
    swd_req req;
    if (!swd_requests_take(&s->requests, ev->id, &req)) return;
    swd_msg m;
    memset(&m, 0, sizeof m);
    swd_drop drop;
    const char *why = NULL;
    if (ev->error != 0 || !ev->data) {
        why = ev->error == SW_ETIMEDOUT ? "no answer (timed out)" : "the request failed";
    } else if (swd_wire_open(ev->data, ev->len, s->link.run_id, &m, &drop) != 0) {
        swd_link_drop(&s->link, drop, NULL);
        why = swd_drop_name(drop);
    } else if (req.kind == SWD_REQ_GET_UPDATES && m.type == SWD_MSG_UPDATES) {
        swd_pipeline_on_updates(&s->pipeline, &req, &m);
    } else if (req.kind == SWD_REQ_HELLO) {
        why = swarm_on_welcome(s, &m);
    } else if (m.type != SWD_MSG_ERROR) {
        swd_link_drop(&s->link, SWD_DROP_UNEXPECTED, m.sender);
    }
    if (req.has_ctl) swd_control_answer_join(&s->control, req.ctl_id, why);
    swd_msg_fini(&m);
}

void swd_swarm_on_net(swd_swarm *s)
{
    swd_net_event *ev = swd_net_drain(s->net);
    while (ev) {
        swd_net_event *next = ev->next;
        switch (ev->kind) {
        case SWD_NET_SUB_MSG:
            swarm_on_published(s, ev);
            break;
        case SWD_NET_SYNC_REQ:
            swd_sync_serve(&s->sync, ev->id, ev->data, ev->len);
            break;
        case SWD_NET_CONTROL_REQ:
            if (swd_control_on_request(&s->control, ev->id, ev->data, ev->len)) swarm_announce(s);
            break;
        case SWD_NET_REPLY:
            swarm_on_reply(s, ev);
            break;
        }
        swd_net_event_free(ev);
        ev = next;
    }
}

/* ------------------------------------------------------------ worker reports */

static void swarm_take_own(swd_swarm *s)
{
    sw_update *u = NULL;
    size_t n = 0;
    swd_worker_take_own(s->wk, &u, &n);
    swd_pipeline_add_own(&s->pipeline, u, n);
    free(u);
}

void swd_swarm_on_report(swd_swarm *s, const swd_worker_report *r)
{
    s->view.last = *r;
    swd_control_on_report(&s->control, r);
    swd_job_result jr;
    while (swd_worker_take_result(s->wk, &jr))
        swd_control_job_done(&s->control, &jr);
    for (size_t i = 0; i < r->n_equiv; i++)
        swd_pipeline_ban(&s->pipeline, &r->equiv[i].held, &r->equiv[i].got);
    swd_worker_view_refresh(&s->view, s->wk);
    swarm_take_own(s);
}

/* ------------------------------------------------------------ cron */

static uint64_t swarm_held_steps(void *ctx, const uint8_t id[SW_ID_BYTES])
{
    const swd_swarm *s = ctx;
    return swd_vv_prefix(&s->view.vv, id) / (uint64_t)s->train.directions;
}

/* Hello with our identity and addresses to a bootstrap member (so it
 * subscribes to us at once), round the list, until one welcomes us. */
static void swarm_hello_bootstrap(swd_swarm *s, uint64_t now)
{
    if (!s->cfg->bootstrap[0] || s->welcomed) return;
    if (s->last_hello_ms != 0 && now - s->last_hello_ms < SWARM_HELLO_RETRY_MS) return;
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
        swd_gossip_hello_msg(&s->gossip, &m);
        swd_requests_send(&s->requests, &s->link, SWD_REQ_HELLO, chosen, &m, NULL, NULL);
    }
}

/* The worker may start steps below the limit the slowest peer allows. */
static void swarm_pace(swd_swarm *s, uint64_t now)
{
    if (s->control.phase != SWD_PHASE_TRAINING) return;
    uint64_t my_step = s->view.last.next_step;
    uint64_t limit = swd_members_pace(s->gossip.table, my_step, (uint64_t)s->cfg->max_staleness,
                                      (uint64_t)s->cfg->lag_timeout_ms, swarm_held_steps, s, now);
    uint64_t excl = limit == UINT64_MAX ? UINT64_MAX : limit + 1;
    swd_worker_set_step_limit(s->wk, excl);
    /* Held back: the peers we wait for may be waiting for our pending
     * updates as well; publish them now rather than at batch_max_ms. */
    if (my_step >= excl && s->pipeline.n_pend) swd_pipeline_flush(&s->pipeline, true);
}

void swd_swarm_on_cron(swd_swarm *s)
{
    if (s->left) return;
    uint64_t now = swd_link_now_ms(&s->link);
    s->cronloops++;
    swd_pipeline_flush(&s->pipeline, false);
    swd_gossip_tick(&s->gossip);
    swd_control_tick(&s->control);

    uint64_t hb = (uint64_t)s->cfg->heartbeat_ms;
    if (now - s->link.last_pub_ms >= hb ||
        now - s->gossip.last_announce_ms >= SWD_GOSSIP_ANNOUNCE_EVERY * hb)
        swarm_announce(s);

    /* anti-entropy every heartbeat, against every alive peer */
    if (s->cronloops % (hb / 100 ? hb / 100 : 1) == 0) {
        size_t n = swd_members_count(s->gossip.table);
        for (size_t i = 0; i < n; i++)
            swd_pipeline_repair_from(&s->pipeline, swd_members_at_const(s->gossip.table, i));
        swd_gossip_subscribe_all(&s->gossip);
    }
    swd_requests_expire(&s->requests, now);
    swarm_hello_bootstrap(s, now);
    swarm_pace(s, now);
}

void swd_swarm_set_phase(swd_swarm *s, swd_swarm_phase phase)
{
    if (!swd_control_set_phase(&s->control, phase)) return;
    if (phase == SWD_PHASE_STOPPING) swd_worker_set_step_limit(s->wk, UINT64_MAX);
    swarm_announce(s);
}

bool swd_swarm_peers_hold_own(swd_swarm *s)
{
    return swd_gossip_all_hold(&s->gossip, s->link.self, swd_vv_prefix(&s->view.vv, s->link.self));
}

void swd_swarm_flush(swd_swarm *s)
{
    swarm_take_own(s);
    swd_pipeline_flush(&s->pipeline, true);
    swarm_announce(s);
}

void swd_swarm_leave(swd_swarm *s)
{
    swarm_take_own(s);
    swd_pipeline_flush(&s->pipeline, true);
    swd_msg m;
    memset(&m, 0, sizeof m);
    m.type = SWD_MSG_LEAVE;
    swd_link_publish(&s->link, &m);
    s->left = true;
    swd_pipeline_quiet(&s->pipeline);
    swd_log(SWD_LOG_INFO, "left the swarm", "updates_out=%" PRIu64 " updates_in=%" PRIu64,
            s->pipeline.updates_out, s->pipeline.updates_in);
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
    double deadline = swd_clock_s() + wait_s;
    for (int round = 0; ex != SWD_EXIT_OK; round++) {
        if (round > 0) {
            if (swd_clock_s() >= deadline) break;
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
            rc = swd_net_request_sync(tok, buf, len, SWD_REQUESTS_HELLO_TIMEOUT_MS, &reply, &rlen,
                                      &d);
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
            char hex[SWD_HEX];
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
    const swd_config *cfg = p->cfg;
    sw_state *st = p->state;
    if (cfg->dead_after <= cfg->suspect_after) {
        swd_log(SWD_LOG_ERROR, "[node] dead_after must exceed suspect_after", "file=%s",
                SWD_LOG_Q(cfg->file));
        return SWD_EXIT_USAGE;
    }
    swd_swarm *s = calloc(1, sizeof *s);
    if (!s) return SWD_EXIT_FAIL;
    s->cfg = cfg;
    s->wk = p->worker;
    s->train = st->train;
    snprintf(s->state_dir, sizeof s->state_dir, "%s", st->dir);
    /* The sockets come later: until then the link seals, and sends nothing. */
    swd_link_init(&s->link, NULL, st->id.pk, st->id.sk, st->train.run_id);

    sw_diag d = {{0}};
    int rc = sw_runspec_canonical(&st->runspec, s->runspec_json, sizeof s->runspec_json,
                                  &s->runspec_len, &d);
    if (rc != 0) goto fail_diag;
    char path[SW_STATE_PATH_MAX];
    if (sw_path_join(path, sizeof path, st->dir, "archive") != 0) {
        rc = SW_ETOOBIG;
        goto fail_diag;
    }
    sw_archive_open_info ai;
    if ((rc = sw_archive_open(path, s->link.run_id, &s->archive, &ai, &d)) != 0) goto fail_diag;
    if (ai.truncated_bytes)
        swd_log(SWD_LOG_WARN, "archive: torn tail truncated", "bytes=%" PRIu64, ai.truncated_bytes);
    swd_pipeline_params pp = {.link = &s->link,
                              .gossip = &s->gossip,
                              .requests = &s->requests,
                              .view = &s->view,
                              .worker = s->wk,
                              .archive = s->archive,
                              .train = &s->train,
                              .state_dir = s->state_dir,
                              .batch_max_steps = (size_t)cfg->batch_max_steps,
                              .batch_max_ms = (uint64_t)cfg->batch_max_ms,
                              .heartbeat_ms = (uint64_t)cfg->heartbeat_ms};
    swd_pipeline_init(&s->pipeline, &pp);
    if ((rc = swd_pipeline_refill_own(&s->pipeline, st->ledger)) != 0) goto fail_diag;
    if ((rc = swd_pipeline_requeue_archived(&s->pipeline, st->ledger)) != 0) goto fail_diag;

    /* Announce sequence numbers must grow across restarts: start from the clock. */
    struct timespec rt;
    clock_gettime(CLOCK_REALTIME, &rt);
    uint64_t seq0 = (uint64_t)rt.tv_sec * 1000000u + (uint64_t)rt.tv_nsec / 1000u;
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
                       .drop_seed = seq0};
    if ((rc = swd_net_open(&no, p->net_notify, &s->net, &d)) != 0) goto fail_diag;
    s->link.ctx = s->net;
    if (cfg->metrics && cfg->metrics[0]) {
        if ((rc = swd_metrics_open(cfg->metrics, &s->metrics, &d)) != 0) goto fail_diag;
        swd_log(SWD_LOG_INFO, "metrics listening", "url=%s", swd_metrics_url(s->metrics));
    }
    char pub_url[SWD_WIRE_MAX_ADDR + 1], sync_url[SWD_WIRE_MAX_ADDR + 1];
    swarm_advertised(swd_net_pub_url(s->net), cfg->advertise, pub_url, sizeof pub_url);
    swarm_advertised(swd_net_sync_url(s->net), cfg->advertise, sync_url, sizeof sync_url);
    swd_gossip_opts go = {.heartbeat_ms = (uint64_t)cfg->heartbeat_ms,
                          .suspect_after = (uint32_t)cfg->suspect_after,
                          .dead_after = (uint32_t)cfg->dead_after,
                          .announce_seq = seq0};
    if ((rc = swd_gossip_init(&s->gossip, &s->link, &go, pub_url, sync_url)) != 0) goto fail_diag;
    s->sync = (swd_sync_service){.link = &s->link,
                                 .gossip = &s->gossip,
                                 .archive = s->archive,
                                 .view = &s->view,
                                 .runspec_json = s->runspec_json,
                                 .runspec_len = s->runspec_len,
                                 .state_dir = s->state_dir,
                                 .ae_max_steps = SWD_PIPELINE_AE_MAX_STEPS};
    swd_control_params cp = {.link = &s->link,
                             .gossip = &s->gossip,
                             .pipeline = &s->pipeline,
                             .requests = &s->requests,
                             .view = &s->view,
                             .worker = s->wk,
                             .metrics = s->metrics,
                             .version = p->version,
                             .max_steps = p->max_steps,
                             .runspec_json = s->runspec_json,
                             .runspec_len = s->runspec_len,
                             .state_dir = s->state_dir,
                             .heartbeat_ms = (uint64_t)cfg->heartbeat_ms,
                             .on_leave = p->on_leave,
                             .on_leave_ctx = p->on_leave_ctx};
    swd_control_init(&s->control, &cp);

    if (p->welcome) swd_gossip_welcomed(&s->gossip, p->welcome->members, p->welcome->n_members);
    swd_worker_drain(s->wk, &s->view.last);
    swd_worker_view_refresh(&s->view, s->wk);
    swd_log(SWD_LOG_INFO, "swarm sockets open",
            "pub=%s sync=%s control=%s bootstrap=%s members=%zu archive_entries=%" PRIu64,
            s->gossip.pub_url, s->gossip.sync_url, SWD_LOG_Q(control),
            SWD_LOG_Q(cfg->bootstrap[0] ? cfg->bootstrap : "none"),
            swd_members_count(s->gossip.table), ai.entries);
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
    swd_gossip_fini(&s->gossip);
    swd_pipeline_fini(&s->pipeline);
    sw_archive_close(s->archive);
    swd_worker_view_fini(&s->view);
    free(s);
}
