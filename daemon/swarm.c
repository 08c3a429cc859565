#include "swarm.h"

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

#include "archive.h"
#include "fileio.h"
#include "gpt2.h"
#include "ledger.h"
#include "log.h"
#include "members.h"
#include "metrics.h"
#include "net.h"
#include "runspec.h"
#include "setup.h"

#define SWARM_HEX (2 * SW_ID_BYTES + 1)
#define SWARM_CONTROL_MAX 65536 /* bytes of a control request */
#define SWARM_RATE_PER_S 200.0  /* messages per second per sender */
#define SWARM_RATE_BURST 400.0
#define SWARM_SYNCING_GAP 1024 /* updates behind a peer: state syncing */
#define SWARM_HELLO_RETRY_MS 5000

typedef enum swarm_req_kind { REQ_NONE, REQ_GET_UPDATES, REQ_HELLO } swarm_req_kind;

typedef struct swarm_req {
    swarm_req_kind kind;
    uint64_t id;
    uint8_t origin[SW_ID_BYTES]; /* GET_UPDATES: whose updates */
    uint8_t peer[SW_ID_BYTES];   /* asked */
    uint64_t ctl_id;             /* HELLO from `swarmctl join`: the control request to answer */
    bool has_ctl;
} swarm_req;

struct swd_swarm {
    const swd_config *cfg;
    swd_worker *wk;
    const char *version;
    uint64_t max_steps;
    uint8_t self[SW_ID_BYTES];
    unsigned char *sk; /* borrowed from the state's identity (sodium memory) */
    uint8_t run_id[SW_ID_BYTES];
    sw_train_spec train;
    char runspec_json[SW_RUNSPEC_MAX_BYTES + 1];
    size_t runspec_len;
    char state_dir[SW_STATE_PATH_MAX];

    swd_net *net;
    swd_metrics *metrics; /* NULL: no [node] metrics */
    swd_members *members;
    sw_archive *archive;
    char pub_url[SWD_WIRE_MAX_ADDR + 1], sync_url[SWD_WIRE_MAX_ADDR + 1];

    swd_swarm_phase phase;
    double t_start;
    uint64_t cronloops;
    uint64_t last_pub_ms, last_announce_ms, last_hello_ms;
    bool welcomed;           /* a bootstrap member answered our running Hello */
    bool left;               /* Leave published: publish nothing more */
    uint64_t ae_progress_ms; /* when anti-entropy last brought updates */
    bool paused;             /* `swarmctl pause`: no updates made, everything else goes on */
    void (*on_leave)(void *ctx);
    void *on_leave_ctx;

    /* for status and metrics */
    double loss_hist[SWD_SWARM_LOSS_HISTORY]; /* ring of window means (NaN: no steps) */
    size_t n_loss_hist, loss_head;
    uint64_t step_hist[SWD_STEP_BUCKETS + 1];
    double step_seconds;
    uint64_t steps_total, updates_made, updates_applied;
    uint64_t announce_seq;
    size_t bootstrap_next;

    /* the worker's view, copied on change */
    swd_worker_report last;
    sw_vv vv;
    uint64_t vv_gen;
    sw_vv digest_vv;
    uint8_t digest[SW_ID_BYTES];
    uint64_t digest_gen, digest_count;

    /* own updates not yet published */
    sw_update *pend;
    size_t n_pend, pend_cap;
    uint64_t pend_since_ms;

    swarm_req reqs[SWD_SWARM_MAX_PENDING];

    /* progress over a sliding window */
    uint64_t win_steps;
    double win_loss, win_t0;
    double loss, steps_per_s;

    /* counters */
    uint64_t updates_out, updates_in, batches_out;
    uint64_t dropped[SWD_DROP_COUNT];
};

static uint64_t swarm_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static double swarm_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void swarm_hex(const uint8_t id[SW_ID_BYTES], char out[SWARM_HEX])
{
    sw_digest_hex(id, out);
}

static void swarm_drop(swd_swarm *s, swd_drop d, const uint8_t *sender)
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

static void swarm_reply_error(swd_swarm *s, uint64_t id, swd_context ctx, swd_error_code code,
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

static uint64_t swarm_vv_prefix(const sw_vv *vv, const uint8_t origin[SW_ID_BYTES])
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
static uint64_t swarm_have(const swd_swarm *s, const uint8_t origin[SW_ID_BYTES])
{
    uint64_t a = swarm_vv_prefix(&s->vv, origin);
    uint64_t b = sw_archive_prefix(s->archive, origin);
    return a > b ? a : b;
}

/* vv as wire entries (prefix counts), at most SWD_WIRE_MAX_VV; *out malloc'd. */
static int swarm_vv_entries(const sw_vv *vv, swd_vv_entry **out, size_t *n)
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
static void swarm_flush_own(swd_swarm *s, bool force)
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

static void swarm_take_own(swd_swarm *s)
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
static int swarm_refill_own(swd_swarm *s, sw_state *st)
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
static int swarm_requeue_archived(swd_swarm *s, sw_state *st)
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
static void swarm_ban_updates(swd_swarm *s, const sw_update *held, const sw_update *got,
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
static void swarm_take_batch(swd_swarm *s, const swd_msg *m, const uint8_t *env, size_t env_len)
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

static void swarm_subscribe_all(swd_swarm *s)
{
    size_t n = swd_members_count(s->members);
    for (size_t i = 0; i < n; i++) {
        swd_peer *p = swd_members_at(s->members, i);
        if (p->subscribed || p->banned || !p->pub_addr[0]) continue;
        if (p->state == SWD_PEER_DEAD && p->last_seen_ms == 0) continue; /* never answered */
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

static bool swarm_req_pending_origin(const swd_swarm *s, const uint8_t origin[SW_ID_BYTES])
{
    for (size_t i = 0; i < SWD_SWARM_MAX_PENDING; i++)
        if (s->reqs[i].kind == REQ_GET_UPDATES &&
            memcmp(s->reqs[i].origin, origin, SW_ID_BYTES) == 0)
            return true;
    return false;
}

/* Sends m to addr; the reply comes back as a REPLY event.  Returns the
 * slot (NULL when none is free or the request could not be sent). */
static swarm_req *swarm_request(swd_swarm *s, swarm_req_kind kind, const char *addr,
                                const swd_msg *m, const uint8_t origin[SW_ID_BYTES],
                                const uint8_t peer[SW_ID_BYTES])
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
    if (origin) memcpy(r->origin, origin, SW_ID_BYTES);
    if (peer) memcpy(r->peer, peer, SW_ID_BYTES);
    return r;
}

static void swarm_hello_msg(const swd_swarm *s, swd_msg *m)
{
    memset(m, 0, sizeof *m);
    m->type = SWD_MSG_HELLO;
    m->context = SWD_CTX_JOIN;
    snprintf(m->u.hello.pub_addr, sizeof m->u.hello.pub_addr, "%s", s->pub_url);
    snprintf(m->u.hello.sync_addr, sizeof m->u.hello.sync_addr, "%s", s->sync_url);
}

static void swarm_reply_json(swd_swarm *s, uint64_t id, json_t *reply)
{
    char *text = reply ? json_dumps(reply, JSON_COMPACT) : NULL;
    json_decref(reply);
    if (text)
        swd_net_reply(s->net, id, (const uint8_t *)text, strlen(text));
    else
        swd_net_reply(s->net, id, NULL, 0);
    free(text);
}

/* Anti-entropy: asks p for the origins it holds more of than we do. */
static void swarm_repair_from(swd_swarm *s, const swd_peer *p)
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

static void swarm_on_change(void *ctx, const swd_peer *p, swd_peer_state from)
{
    swd_swarm *s = ctx;
    /* A gossiped address nobody ever answered from: stop dialling it (a
     * hostile member could otherwise make us dial many bogus addresses). */
    if (p->state == SWD_PEER_DEAD && p->last_seen_ms == 0 && p->subscribed) {
        swd_peer *q = swd_members_find(s->members, p->id);
        swd_net_unsubscribe(s->net, p->pub_addr);
        if (q) q->subscribed = false;
    }
    char hex[SWARM_HEX];
    swarm_hex(p->id, hex);
    swd_log(p->state == SWD_PEER_DEAD || p->state == SWD_PEER_SUSPECT ? SWD_LOG_WARN : SWD_LOG_INFO,
            "peer state changed", "peer=%.12s from=%s to=%s addr=%s", hex,
            swd_peer_state_name(from), swd_peer_state_name(p->state),
            p->pub_addr[0] ? p->pub_addr : "?");
}

/* A verified message from a peer: it is alive. */
static swd_peer *swarm_seen(swd_swarm *s, const uint8_t id[SW_ID_BYTES])
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
static swd_node_state swarm_node_state(const swd_swarm *s)
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

static size_t swarm_member_list(swd_swarm *s, swd_member_info *out, size_t max, bool with_self)
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

static void swarm_announce(swd_swarm *s)
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

typedef struct swarm_collect {
    swd_updates *u;
    size_t bytes;
} swarm_collect;

static int swarm_collect_entry(void *ctx, const uint8_t *bytes, size_t len)
{
    swarm_collect *c = ctx;
    swd_updates *u = c->u;
    uint8_t *copy = malloc(len);
    if (!copy) return SW_ENOMEM;
    memcpy(copy, bytes, len);
    u->env[u->n] = copy;
    u->env_len[u->n] = len;
    u->n++;
    c->bytes += len;
    return 0;
}

static void swarm_serve_get_updates(swd_swarm *s, uint64_t id, const swd_get_updates *g)
{
    swd_msg m;
    memset(&m, 0, sizeof m);
    m.type = SWD_MSG_UPDATES;
    uint8_t *env[SWD_WIRE_MAX_UPDATES_BATCHES];
    size_t env_len[SWD_WIRE_MAX_UPDATES_BATCHES];
    m.u.updates.env = env;
    m.u.updates.env_len = env_len;
    swarm_collect c = {.u = &m.u.updates};
    sw_diag d = {{0}};
    uint64_t max = g->max_steps ? g->max_steps : SWD_SWARM_AE_MAX_STEPS;
    int rc =
        sw_archive_fetch(s->archive, g->origin, g->first_step, max, SWD_WIRE_MAX_UPDATES_BATCHES,
                         SWD_WIRE_MAX_MSG - (64u << 10), swarm_collect_entry, &c, NULL, &d);
    uint8_t *buf = NULL;
    size_t len = 0;
    if (rc == 0) rc = swd_wire_seal(&m, s->run_id, s->self, s->sk, &buf, &len);
    for (size_t i = 0; i < m.u.updates.n; i++)
        free(env[i]);
    if (rc != 0) {
        swarm_reply_error(s, id, SWD_CTX_RUN, SWD_ERR_BUSY, "cannot read the archive");
        return;
    }
    swd_net_reply(s->net, id, buf, len);
    free(buf);
}

/* The newest checkpoint is the snapshot a member offers; its file is
 * immutable once renamed into place (a newer one may replace it). */
static int swarm_snapshot_path(const swd_swarm *s, uint64_t count, char *path, size_t size)
{
    char name[64];
    snprintf(name, sizeof name, "checkpoints/ckpt-%020" PRIu64 ".swck", count);
    return sw_path_join(path, size, s->state_dir, name);
}

static uint64_t swarm_snapshot_bytes(const swd_swarm *s, uint64_t count)
{
    char path[SW_STATE_PATH_MAX];
    struct stat sb;
    if (swarm_snapshot_path(s, count, path, sizeof path) != 0 || stat(path, &sb) != 0) return 0;
    return (uint64_t)sb.st_size;
}

static void swarm_serve_snapshot(swd_swarm *s, uint64_t id, const swd_get_snapshot *g)
{
    char path[SW_STATE_PATH_MAX];
    int fd = -1;
    struct stat sb;
    if (g->snapshot_updates == 0 ||
        swarm_snapshot_path(s, g->snapshot_updates, path, sizeof path) != 0 ||
        (fd = open(path, O_RDONLY | O_CLOEXEC)) < 0 || fstat(fd, &sb) != 0) {
        if (fd >= 0) close(fd);
        swarm_reply_error(s, id, SWD_CTX_RUN, SWD_ERR_NOT_FOUND,
                          "no such snapshot (a newer checkpoint replaced it): hello again");
        return;
    }
    uint64_t total = (uint64_t)sb.st_size;
    uint64_t n_chunks = (total + SWD_WIRE_MAX_CHUNK - 1) / SWD_WIRE_MAX_CHUNK;
    if (n_chunks == 0) n_chunks = 1;
    if (g->chunk >= n_chunks || n_chunks > UINT32_MAX) {
        close(fd);
        swarm_reply_error(s, id, SWD_CTX_RUN, SWD_ERR_BAD_REQUEST, "no such chunk");
        return;
    }
    uint64_t off = (uint64_t)g->chunk * SWD_WIRE_MAX_CHUNK;
    size_t len = (size_t)(total - off < SWD_WIRE_MAX_CHUNK ? total - off : SWD_WIRE_MAX_CHUNK);
    uint8_t *data = malloc(len ? len : 1);
    ssize_t got = data ? pread(fd, data, len, (off_t)off) : -1;
    close(fd);
    if (got != (ssize_t)len) {
        free(data);
        swarm_reply_error(s, id, SWD_CTX_RUN, SWD_ERR_BUSY, "cannot read the snapshot");
        return;
    }
    swd_msg m;
    memset(&m, 0, sizeof m);
    m.type = SWD_MSG_SNAPSHOT_CHUNK;
    m.u.snapshot_chunk.snapshot_updates = g->snapshot_updates;
    m.u.snapshot_chunk.chunk = g->chunk;
    m.u.snapshot_chunk.n_chunks = (uint32_t)n_chunks;
    m.u.snapshot_chunk.total_bytes = total;
    m.u.snapshot_chunk.len = len;
    m.u.snapshot_chunk.data = data;
    uint8_t *buf = NULL;
    size_t blen = 0;
    int rc = swd_wire_seal(&m, s->run_id, s->self, s->sk, &buf, &blen);
    free(data);
    if (rc != 0) {
        swarm_reply_error(s, id, SWD_CTX_RUN, SWD_ERR_BUSY, "cannot seal the chunk");
        return;
    }
    swd_net_reply(s->net, id, buf, blen);
    free(buf);
}

static void swarm_serve_hello(swd_swarm *s, uint64_t id, const swd_msg *req)
{
    (void)req;
    swd_msg m;
    memset(&m, 0, sizeof m);
    m.type = SWD_MSG_WELCOME;
    m.context = SWD_CTX_JOIN;
    swd_welcome *w = &m.u.welcome;
    w->run_spec = s->runspec_json;
    w->run_spec_len = s->runspec_len;
    swd_member_info members[SWD_WIRE_MAX_MEMBERS];
    w->members = members;
    w->n_members = swarm_member_list(s, members, SWD_WIRE_MAX_MEMBERS, true);
    if (swarm_vv_entries(&s->vv, &w->vv, &w->n_vv) != 0) {
        swd_net_reply(s->net, id, NULL, 0);
        return;
    }
    w->ledger_updates = s->last.ledger_count;
    if (s->last.ckpt_count != UINT64_MAX && s->last.ckpt_count > 0) {
        w->snapshot_bytes = swarm_snapshot_bytes(s, s->last.ckpt_count);
        if (w->snapshot_bytes) w->snapshot_updates = s->last.ckpt_count;
    }
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = swd_wire_seal(&m, s->run_id, s->self, s->sk, &buf, &len);
    free(w->vv);
    if (rc != 0) {
        swd_net_reply(s->net, id, NULL, 0);
        return;
    }
    swd_net_reply(s->net, id, buf, len);
    free(buf);
}

static void swarm_on_sync_req(swd_swarm *s, swd_net_event *ev)
{
    uint8_t sender[SW_ID_BYTES];
    uint64_t now = swarm_now_ms();
    /* A refusal goes out in the context the request claims: a joiner has no
     * run id yet and could not read a run-context Error. */
    swd_context ctx = SWD_CTX_RUN;
    bool peeked = swd_wire_peek(ev->data, ev->len, sender, &ctx) == 0;
    if (peeked && swd_members_banned(s->members, sender)) {
        swarm_drop(s, SWD_DROP_BANNED, sender);
        swarm_reply_error(s, ev->id, ctx, SWD_ERR_REFUSED, "banned");
        return;
    }
    if (peeked && !swd_members_rate_ok(s->members, sender, now)) {
        swarm_drop(s, SWD_DROP_RATE_LIMITED, sender);
        swarm_reply_error(s, ev->id, ctx, SWD_ERR_BUSY, "rate limited");
        return;
    }
    swd_msg m;
    swd_drop drop;
    if (swd_wire_open(ev->data, ev->len, s->run_id, &m, &drop) != 0) {
        swarm_drop(s, drop, peeked ? sender : NULL);
        swarm_reply_error(s, ev->id, ctx, SWD_ERR_BAD_REQUEST, swd_drop_name(drop));
        return;
    }
    switch (m.type) {
    case SWD_MSG_HELLO:
        swarm_serve_hello(s, ev->id, &m);
        /* A running node's Hello carries its identity and addresses: listen
         * to it at once.  (The startup Hello, before the joiner's sockets
         * exist, is signed with a throwaway key and carries none.) */
        if (m.u.hello.pub_addr[0] && m.u.hello.sync_addr[0]) {
            swd_members_add(s->members, m.sender, m.u.hello.pub_addr, m.u.hello.sync_addr, false,
                            now);
            swarm_subscribe_all(s);
        }
        break;
    case SWD_MSG_GET_UPDATES: {
        /* A request proves liveness, but a peer that left stays left (its
         * last requests may still arrive after its Leave). */
        const swd_peer *q = swd_members_find(s->members, m.sender);
        if (!q || q->state != SWD_PEER_LEFT) swarm_seen(s, m.sender);
        swarm_serve_get_updates(s, ev->id, &m.u.get_updates);
        break;
    }
    case SWD_MSG_GET_SNAPSHOT:
        swarm_serve_snapshot(s, ev->id, &m.u.get_snapshot);
        break;
    default:
        swarm_drop(s, SWD_DROP_UNEXPECTED, m.sender);
        swarm_reply_error(s, ev->id, SWD_CTX_RUN, SWD_ERR_BAD_REQUEST, "not a request");
        break;
    }
    swd_msg_fini(&m);
}

/* ------------------------------------------------------------ replies */

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

static void swarm_on_reply(swd_swarm *s, swd_net_event *ev)
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

static json_t *swarm_vv_json(const sw_vv *vv)
{
    json_t *o = json_object();
    for (size_t i = 0; i < vv->n; i++) {
        char hex[SWARM_HEX];
        swarm_hex(vv->o[i].origin, hex);
        json_object_set_new(o, hex, json_integer((json_int_t)vv->o[i].prefix));
    }
    return o;
}

static json_t *swarm_hex_json(const uint8_t id[SW_ID_BYTES])
{
    char hex[SWARM_HEX];
    swarm_hex(id, hex);
    return json_string(hex);
}

static const char *swarm_node_state_text(swd_node_state st)
{
    return swd_node_state_name(st);
}

/* Does a peer's announced version vector (prefixes) describe exactly ours? */
static bool swarm_vv_matches(const sw_vv *ours, const swd_vv_entry *e, size_t n)
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

/* The swarm section of the status: lag, agreement, peers by state, warnings. */
static json_t *swarm_status_swarm(swd_swarm *s, uint64_t now)
{
    json_t *o = json_object(), *warn = json_array();
    size_t n = swd_members_count(s->members), by_state[5] = {0};
    swd_members_count_states(s->members, by_state);
    uint64_t lag = 0;
    size_t compared = 0, agree = 0;
    for (size_t i = 0; i < n; i++) {
        const swd_peer *p = swd_members_at_const(s->members, i);
        char hex[SWARM_HEX], line[SW_STATE_PATH_MAX + 256];
        swarm_hex(p->id, hex);
        if (p->state == SWD_PEER_ALIVE && p->has_announce &&
            p->ledger_updates > s->last.ledger_count &&
            p->ledger_updates - s->last.ledger_count > lag)
            lag = p->ledger_updates - s->last.ledger_count;
        if (p->banned) {
            snprintf(line, sizeof line, "origin %.12s is banned (proof: %s/bans/%s.json)", hex,
                     s->state_dir, hex);
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
        if (p->state != SWD_PEER_ALIVE || !p->has_digest || !s->digest_gen) continue;
        if (!swarm_vv_matches(&s->digest_vv, p->digest_vv, p->n_digest_vv)) continue;
        compared++;
        if (memcmp(p->digest, s->digest, SW_ID_BYTES) == 0) {
            agree++;
        } else {
            char dh[SWARM_HEX];
            swarm_hex(p->digest, dh);
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
        if (d == SWD_DROP_DUPLICATE || d == SWD_DROP_SELF || !s->dropped[d]) continue;
        total += s->dropped[d];
        int w = snprintf(detail + dl, sizeof detail - dl, "%s%s %" PRIu64, dl ? ", " : "",
                         swd_drop_name((swd_drop)d), s->dropped[d]);
        if (w > 0 && (size_t)w < sizeof detail - dl) dl += (size_t)w;
    }
    if (total) {
        char line[1200];
        snprintf(line, sizeof line, "%" PRIu64 " messages dropped: %s", total, detail);
        json_array_append_new(warn, json_string(line));
    }
    json_object_set_new(o, "lag_updates", json_integer((json_int_t)lag));
    json_object_set_new(o, "agreement",
                        json_pack("{s:I,s:I,s:o}", "peers_compared", (json_int_t)compared,
                                  "peers_agree", (json_int_t)agree, "agree",
                                  compared ? json_boolean(agree == compared) : json_null()));
    json_t *ps = json_object();
    for (int st = 0; st < 5; st++)
        json_object_set_new(ps, swd_peer_state_name((swd_peer_state)st),
                            json_integer((json_int_t)by_state[st]));
    json_object_set_new(o, "peers_by_state", ps);
    json_object_set_new(o, "warnings", warn);
    return o;
}

static json_t *swarm_status_train_extra(const swd_swarm *s, json_t *train)
{
    json_t *hist = json_array();
    for (size_t i = 0; i < s->n_loss_hist; i++) {
        size_t k =
            (s->loss_head + SWD_SWARM_LOSS_HISTORY - s->n_loss_hist + i) % SWD_SWARM_LOSS_HISTORY;
        json_array_append_new(hist,
                              isfinite(s->loss_hist[k]) ? json_real(s->loss_hist[k]) : json_null());
    }
    json_object_set_new(train, "loss_history", hist);
    json_t *b = json_array(), *c = json_array();
    uint64_t cum = 0;
    for (size_t i = 0; i < SWD_STEP_BUCKETS; i++) {
        cum += s->step_hist[i];
        json_array_append_new(b, json_real(swd_step_bucket_bounds[i]));
        json_array_append_new(c, json_integer((json_int_t)cum));
    }
    json_object_set_new(train, "step_seconds",
                        json_pack("{s:o,s:o,s:I,s:f}", "buckets", b, "counts", c, "count",
                                  (json_int_t)(cum + s->step_hist[SWD_STEP_BUCKETS]), "sum",
                                  s->step_seconds));
    json_object_set_new(train, "steps", json_integer((json_int_t)s->steps_total));
    json_object_set_new(train, "updates_made", json_integer((json_int_t)s->updates_made));
    return train;
}

static json_t *swarm_status(swd_swarm *s)
{
    uint64_t now = swarm_now_ms();
    json_t *root = json_object();
    json_t *node = json_object();
    json_object_set_new(node, "id", swarm_hex_json(s->self));
    json_object_set_new(node, "state", json_string(swarm_node_state_text(swarm_node_state(s))));
    json_object_set_new(node, "step", json_integer((json_int_t)s->last.next_step));
    json_object_set_new(node, "max_steps", json_integer((json_int_t)s->max_steps));
    json_object_set_new(node, "run_id", swarm_hex_json(s->run_id));
    json_object_set_new(node, "version", json_string(s->version));
    json_object_set_new(node, "uptime_s", json_real(swarm_now_s() - s->t_start));
    json_object_set_new(node, "pub_addr", json_string(s->pub_url));
    json_object_set_new(node, "sync_addr", json_string(s->sync_url));
    json_object_set_new(root, "node", node);

    json_t *model = json_object();
    json_object_set_new(model, "digest", s->digest_gen ? swarm_hex_json(s->digest) : json_null());
    json_object_set_new(model, "digest_updates", json_integer((json_int_t)s->digest_count));
    json_object_set_new(model, "digest_version_vector", swarm_vv_json(&s->digest_vv));
    json_object_set_new(model, "version_vector", swarm_vv_json(&s->vv));
    json_object_set_new(root, "model", model);

    json_t *train = json_object();
    /* The latest window's mean; before the first window closes, the open one's. */
    double loss = isfinite(s->loss) ? s->loss
                  : s->win_steps    ? s->win_loss / (double)s->win_steps
                                    : NAN;
    json_object_set_new(train, "loss", isfinite(loss) ? json_real(loss) : json_null());
    json_object_set_new(train, "steps_per_s", json_real(s->steps_per_s));
    json_object_set_new(train, "scale", json_real((double)s->last.scale));
    json_object_set_new(train, "saturations", json_integer((json_int_t)s->last.saturations));
    json_object_set_new(root, "train", swarm_status_train_extra(s, train));

    json_t *ledger = json_object();
    json_object_set_new(ledger, "updates", json_integer((json_int_t)s->last.ledger_count));
    json_object_set_new(ledger, "checkpoint_updates",
                        s->last.ckpt_count == UINT64_MAX
                            ? json_integer(0)
                            : json_integer((json_int_t)s->last.ckpt_count));
    json_object_set_new(root, "ledger", ledger);

    json_t *peers = json_array();
    size_t n = swd_members_count(s->members);
    for (size_t i = 0; i < n; i++) {
        const swd_peer *p = swd_members_at_const(s->members, i);
        json_t *o = json_object();
        json_object_set_new(o, "id", swarm_hex_json(p->id));
        json_object_set_new(o, "state", json_string(swd_peer_state_name(p->state)));
        json_object_set_new(
            o, "node_state",
            json_string(p->has_announce ? swarm_node_state_text(p->node_state) : "unknown"));
        json_object_set_new(o, "step", json_integer((json_int_t)p->step));
        json_object_set_new(o, "last_seen_ms",
                            p->last_seen_ms ? json_integer((json_int_t)(now - p->last_seen_ms))
                                            : json_null());
        json_object_set_new(o, "addr", json_string(p->pub_addr));
        json_object_set_new(o, "sync_addr", json_string(p->sync_addr));
        json_object_set_new(o, "ledger_updates", json_integer((json_int_t)p->ledger_updates));
        json_object_set_new(o, "digest", p->has_digest ? swarm_hex_json(p->digest) : json_null());
        json_object_set_new(o, "lagging", json_boolean(p->lagging));
        json_object_set_new(o, "banned", json_boolean(p->banned));
        json_array_append_new(peers, o);
    }
    json_object_set_new(root, "peers", peers);

    swd_net_stats ns;
    swd_net_get_stats(s->net, &ns);
    json_t *net = json_object();
    json_object_set_new(net, "bytes_out", json_integer((json_int_t)ns.bytes_out));
    json_object_set_new(net, "bytes_in", json_integer((json_int_t)ns.bytes_in));
    json_object_set_new(net, "msgs_out", json_integer((json_int_t)ns.msgs_out));
    json_object_set_new(net, "msgs_in", json_integer((json_int_t)ns.msgs_in));
    json_object_set_new(net, "updates_out", json_integer((json_int_t)s->updates_out));
    json_object_set_new(net, "batches_out", json_integer((json_int_t)s->batches_out));
    json_object_set_new(net, "updates_in", json_integer((json_int_t)s->updates_in));
    json_object_set_new(net, "updates_applied", json_integer((json_int_t)s->updates_applied));
    json_object_set_new(net, "bytes_per_update",
                        s->updates_in ? json_real((double)ns.bytes_in / (double)s->updates_in)
                                      : json_null());
    json_object_set_new(net, "requests_failed", json_integer((json_int_t)ns.requests_failed));
    json_object_set_new(net, "injected_drops", json_integer((json_int_t)ns.injected_drops));
    json_t *dropped = json_object();
    for (int d = 0; d < SWD_DROP_COUNT; d++)
        json_object_set_new(dropped, swd_drop_name((swd_drop)d),
                            json_integer((json_int_t)s->dropped[d]));
    json_object_set_new(dropped, "queue_full", json_integer((json_int_t)ns.queue_dropped));
    json_object_set_new(net, "dropped", dropped);
    json_object_set_new(root, "net", net);
    json_object_set_new(root, "swarm", swarm_status_swarm(s, now));
    return root;
}

/* A path argument of a control request: absolute, bounded. */
static const char *swarm_ctl_path(json_t *req, const char *key, const char **why)
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

static json_t *swarm_ctl_job(swd_swarm *s, uint64_t id, const char *cmd, json_t *req)
{
    swd_job job;
    memset(&job, 0, sizeof job);
    job.tag = id;
    const char *why = NULL;
    if (strcmp(cmd, "checkpoint") == 0) {
        job.kind = SWD_JOB_CHECKPOINT;
    } else if (strcmp(cmd, "export") == 0) {
        job.kind = SWD_JOB_EXPORT;
        const char *out = swarm_ctl_path(req, "out", &why);
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
        const char *data = swarm_ctl_path(req, "data", &why);
        if (!data) return json_pack("{s:s+}", "error", "eval: \"data\": ", why);
        snprintf(job.path, sizeof job.path, "%s", data);
    }
    if (swd_worker_submit(s->wk, &job) != 0)
        return json_pack("{s:s}", "error",
                         "busy: too many checkpoint/export/eval requests pending; try again");
    return NULL; /* answered when the worker is done */
}

static json_t *swarm_ctl_join(swd_swarm *s, uint64_t id, json_t *req)
{
    const char *addr = json_string_value(json_object_get(req, "addr"));
    if (!addr || !addr[0] || strlen(addr) > SWD_WIRE_MAX_ADDR)
        return json_pack("{s:s}", "error", "join: \"addr\" must be a member's sync URL");
    swd_msg m;
    swarm_hello_msg(s, &m);
    swarm_req *r = swarm_request(s, REQ_HELLO, addr, &m, NULL, NULL);
    if (!r) return json_pack("{s:s+}", "error", "join: cannot send a Hello to ", addr);
    r->has_ctl = true;
    r->ctl_id = id;
    swd_log(SWD_LOG_INFO, "joining on request", "addr=%s", SWD_LOG_Q(addr));
    return NULL; /* answered when the Welcome (or the timeout) comes */
}

static json_t *swarm_ctl_pause(swd_swarm *s, bool pause)
{
    if (s->paused != pause) {
        s->paused = pause;
        swd_worker_set_paused(s->wk, pause);
        swd_log(SWD_LOG_INFO,
                pause ? "paused: making no updates, still syncing and serving" : "resumed",
                "step=%" PRIu64, s->last.next_step);
        swarm_announce(s);
    }
    return json_pack("{s:b,s:s}", "ok", 1, "state", swd_node_state_name(swarm_node_state(s)));
}

static void swarm_on_control(swd_swarm *s, swd_net_event *ev)
{
    json_t *reply = NULL, *req = NULL;
    bool deferred = false;
    if (ev->len > SWARM_CONTROL_MAX) {
        reply = json_pack("{s:s}", "error", "request too large");
    } else {
        json_error_t err;
        req = json_loadb((const char *)ev->data, ev->len, JSON_REJECT_DUPLICATES, &err);
        const char *cmd = req ? json_string_value(json_object_get(req, "cmd")) : NULL;
        if (!req || !json_is_object(req))
            reply = json_pack("{s:s}", "error", "request is not a JSON object");
        else if (!cmd)
            reply = json_pack("{s:s}", "error", "request has no \"cmd\" string");
        else if (strcmp(cmd, "status") == 0)
            reply = swarm_status(s);
        else if (strcmp(cmd, "pause") == 0 || strcmp(cmd, "resume") == 0)
            reply = swarm_ctl_pause(s, cmd[0] == 'p');
        else if (strcmp(cmd, "leave") == 0) {
            reply = json_pack("{s:b}", "ok", 1);
            if (s->on_leave) s->on_leave(s->on_leave_ctx);
        } else if (strcmp(cmd, "join") == 0)
            deferred = (reply = swarm_ctl_join(s, ev->id, req)) == NULL;
        else if (strcmp(cmd, "checkpoint") == 0 || strcmp(cmd, "export") == 0 ||
                 strcmp(cmd, "eval") == 0)
            deferred = (reply = swarm_ctl_job(s, ev->id, cmd, req)) == NULL;
        else
            reply = json_pack("{s:s+}", "error", "unknown command: ", cmd);
    }
    json_decref(req);
    if (!deferred) swarm_reply_json(s, ev->id, reply);
}

/* Answers the control request a finished worker job belongs to. */
static void swarm_job_done(swd_swarm *s, const swd_job_result *r)
{
    json_t *reply;
    if (r->rc != 0) {
        reply = json_pack("{s:s}", "error", r->err);
    } else if (r->kind == SWD_JOB_CHECKPOINT) {
        reply =
            json_pack("{s:b,s:I,s:s}", "ok", 1, "updates", (json_int_t)r->updates, "path", r->path);
    } else if (r->kind == SWD_JOB_EXPORT) {
        reply = json_pack("{s:b,s:s,s:I,s:o}", "ok", 1, "out", r->path, "updates",
                          (json_int_t)r->updates, "digest", swarm_hex_json(r->digest));
        swd_log(SWD_LOG_INFO, "exported on request", "out=%s updates=%" PRIu64, SWD_LOG_Q(r->path),
                r->updates);
    } else {
        reply = json_pack("{s:b,s:f,s:f,s:I,s:I,s:o,s:I,s:s}", "ok", 1, "loss", r->loss,
                          "perplexity", r->perplexity, "tokens", (json_int_t)r->tokens, "records",
                          (json_int_t)r->records, "accuracy",
                          r->has_accuracy ? json_real(r->accuracy) : json_null(), "updates",
                          (json_int_t)r->updates, "data", r->path);
    }
    swarm_reply_json(s, r->tag, reply);
}

/* ------------------------------------------------------------ loop entry points */

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
