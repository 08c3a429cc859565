#include "catchup.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "archive.h"
#include "fileio.h"
#include "gpt2_config.h"
#include "ledger.h"
#include "log.h"
#include "net.h"

void swd_catchup_plan_for(const swd_welcome *w, const sw_runspec *rs, int threads, int mode,
                          swd_catchup_plan *out)
{
    /* an update sweeps the trained parameters: with adapters, only theirs */
    sw_gpt2_config model;
    sw_runspec_model_config(rs, &model);
    double params = model.lora_rank > 0
                        ? (double)model.n_layer * (double)sw_lora_layer_params(&model)
                        : (double)sw_gpt2_config_param_count(&model);
    double rate = (rs->perturb == SW_PERTURB_GAUSSIAN ? SWD_CATCHUP_APPLY_RATE_GAUSSIAN
                                                      : SWD_CATCHUP_APPLY_RATE_RADEMACHER) *
                  (threads > 0 ? threads : 1);
    double all = (double)w->ledger_updates;
    double rest = w->ledger_updates > w->snapshot_updates
                      ? (double)(w->ledger_updates - w->snapshot_updates)
                      : 0.0;
    bool have_snapshot = w->snapshot_updates > 0 && w->snapshot_bytes > 0;
    out->replay_s = all * params / rate;
    out->snapshot_s = have_snapshot
                          ? (double)w->snapshot_bytes / SWD_CATCHUP_LINK_RATE + rest * params / rate
                          : -1.0;
    if (mode == SWD_CATCHUP_REPLAY || !have_snapshot)
        out->snapshot = false;
    else if (mode == SWD_CATCHUP_SNAPSHOT)
        out->snapshot = true;
    else
        out->snapshot = out->snapshot_s < out->replay_s;
    swd_log(SWD_LOG_INFO, "catch-up plan",
            "choice=%s replay_s=%.3g snapshot_s=%.3g ledger_updates=%" PRIu64
            " snapshot_updates=%" PRIu64 " snapshot_bytes=%" PRIu64 " params=%.0f mode=%s",
            out->snapshot ? "snapshot" : "replay", out->replay_s, out->snapshot_s,
            w->ledger_updates, w->snapshot_updates, w->snapshot_bytes, params,
            mode == SWD_CATCHUP_AUTO     ? "auto"
            : mode == SWD_CATCHUP_REPLAY ? "replay"
                                         : "snapshot");
}

void swd_snapshot_fini(swd_snapshot *s)
{
    sw_fixed_free(s->w);
    sw_checkpoint_meta_fini(&s->meta);
    free(s->updates);
    memset(s, 0, sizeof *s);
}

typedef struct catchup_ctx {
    const char *addr;
    uint8_t run_id[SW_ID_BYTES];
    unsigned char pk[crypto_sign_PUBLICKEYBYTES];
    unsigned char sk[crypto_sign_SECRETKEYBYTES];
} catchup_ctx;

static int catchup_ask_once(catchup_ctx *c, const swd_msg *req, swd_msg_type want, swd_msg *reply,
                            bool *busy);

/* One request and its verified reply of the expected type; a member that
 * says busy (rate limits) is asked again after a pause, a bounded number of
 * times. */
static int catchup_ask(catchup_ctx *c, const swd_msg *req, swd_msg_type want, swd_msg *reply)
{
    for (int attempt = 0;; attempt++) {
        bool busy = false;
        int rc = catchup_ask_once(c, req, want, reply, &busy);
        if (!busy || attempt >= 100) return rc;
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

/* One request and its verified reply of the expected type (or an Error, logged). */
static int catchup_ask_once(catchup_ctx *c, const swd_msg *req, swd_msg_type want, swd_msg *reply,
                            bool *busy)
{
    uint8_t *buf = NULL, *rbuf = NULL;
    size_t len = 0, rlen = 0;
    int rc = swd_wire_seal(req, c->run_id, c->pk, c->sk, &buf, &len);
    if (rc != 0) return rc;
    sw_diag d = {{0}};
    rc = swd_net_request_sync(c->addr, buf, len, SWD_CATCHUP_TIMEOUT_MS, &rbuf, &rlen, &d);
    free(buf);
    if (rc != 0) {
        swd_log(SWD_LOG_WARN, "snapshot: request failed", "addr=%s error=%s", c->addr,
                SWD_LOG_Q(d.msg[0] ? d.msg : sw_strerror(rc)));
        return rc;
    }
    swd_drop drop;
    rc = swd_wire_open(rbuf, rlen, c->run_id, reply, &drop);
    free(rbuf);
    if (rc != 0) {
        swd_log(SWD_LOG_WARN, "snapshot: reply dropped", "addr=%s reason=%s", c->addr,
                swd_drop_name(drop));
        return rc;
    }
    if (reply->type == want) return 0;
    if (reply->type == SWD_MSG_ERROR && reply->u.error.code == SWD_ERR_BUSY)
        *busy = true;
    else if (reply->type == SWD_MSG_ERROR)
        swd_log(SWD_LOG_WARN, "snapshot: the member refused", "addr=%s code=%d message=%s", c->addr,
                (int)reply->u.error.code, SWD_LOG_Q(reply->u.error.message));
    swd_msg_fini(reply);
    return SW_EFORMAT;
}

static int catchup_download(catchup_ctx *c, const swd_welcome *w, const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return sw_error_from_errno(errno);
    uint64_t got = 0, total = w->snapshot_bytes;
    uint32_t n_chunks = 1;
    int rc = 0;
    for (uint32_t i = 0; i < n_chunks; i++) {
        swd_msg req, rep;
        memset(&req, 0, sizeof req);
        req.type = SWD_MSG_GET_SNAPSHOT;
        req.u.get_snapshot.snapshot_updates = w->snapshot_updates;
        req.u.get_snapshot.chunk = i;
        if ((rc = catchup_ask(c, &req, SWD_MSG_SNAPSHOT_CHUNK, &rep)) != 0) break;
        const swd_snapshot_chunk *ch = &rep.u.snapshot_chunk;
        if (i == 0) {
            n_chunks = ch->n_chunks;
            total = ch->total_bytes;
        }
        /* The chunk's own digest was checked by swd_wire_open; its place is checked here. */
        bool ok = ch->snapshot_updates == w->snapshot_updates && ch->chunk == i &&
                  ch->n_chunks == n_chunks && ch->total_bytes == total &&
                  total <= SWD_CATCHUP_MAX_SNAPSHOT && got + ch->len <= total &&
                  (ch->len > 0 || total == 0) && (uint64_t)n_chunks * SWD_WIRE_MAX_CHUNK >= total;
        if (ok && pwrite(fd, ch->data, ch->len, (off_t)got) != (ssize_t)ch->len) ok = false;
        got += ch->len;
        swd_msg_fini(&rep);
        if (!ok) {
            swd_log(SWD_LOG_WARN, "snapshot: inconsistent chunk", "addr=%s chunk=%" PRIu32, c->addr,
                    i);
            rc = SW_EFORMAT;
            break;
        }
    }
    if (rc == 0 && got != total) rc = SW_ETRUNCATED;
    close(fd);
    return rc;
}

/* Is (step) one of the updates vo describes? */
static bool catchup_in_vv(const sw_vv_origin *vo, uint64_t step)
{
    if (step < vo->prefix) return true;
    size_t lo = 0, hi = vo->n_extra;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (vo->extra[mid] == step) return true;
        if (vo->extra[mid] < step)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

/* Fetches every update of one origin that the snapshot holds. */
static int catchup_origin(catchup_ctx *c, const sw_vv_origin *vo, sw_archive *ar, sw_update *out,
                          size_t *n_out, size_t cap)
{
    uint64_t end = vo->n_extra ? vo->extra[vo->n_extra - 1] + 1 : vo->prefix;
    uint64_t next = 0;
    while (next < end) {
        swd_msg req, rep;
        memset(&req, 0, sizeof req);
        req.type = SWD_MSG_GET_UPDATES;
        memcpy(req.u.get_updates.origin, vo->origin, SW_ID_BYTES);
        req.u.get_updates.first_step = next;
        req.u.get_updates.max_steps = 8192;
        int rc = catchup_ask(c, &req, SWD_MSG_UPDATES, &rep);
        if (rc != 0) return rc;
        uint64_t advanced = next;
        for (size_t i = 0; i < rep.u.updates.n; i++) {
            swd_msg b;
            swd_drop drop;
            if (swd_wire_open(rep.u.updates.env[i], rep.u.updates.env_len[i], c->run_id, &b,
                              &drop) != 0)
                continue;
            if (b.type == SWD_MSG_BATCH && memcmp(b.sender, vo->origin, SW_ID_BYTES) == 0) {
                const swd_batch *bt = &b.u.batch;
                bool useful = false;
                for (size_t k = 0; k < bt->n; k++) {
                    uint64_t step = bt->first_step + k;
                    if (step < next || !catchup_in_vv(vo, step)) continue;
                    if (step >= end || *n_out >= cap) continue;
                    sw_update *u = &out[(*n_out)++];
                    memcpy(u->origin, vo->origin, SW_ID_BYTES);
                    u->step = step;
                    u->q = bt->q[k];
                    u->scale = bt->scale;
                    useful = true;
                    if (step + 1 > advanced) advanced = step + 1;
                }
                sw_diag d = {{0}};
                if (useful && !sw_archive_covered(ar, vo->origin, bt->first_step, (uint32_t)bt->n))
                    sw_archive_append(ar, vo->origin, bt->first_step, (uint32_t)bt->n,
                                      rep.u.updates.env[i], rep.u.updates.env_len[i], &d);
            }
            swd_msg_fini(&b);
        }
        swd_msg_fini(&rep);
        if (advanced == next) return SW_ENOTFOUND; /* the member cannot serve the rest */
        next = advanced;
        /* skip the gap up to the next held extra step */
        if (next >= vo->prefix && next < end && !catchup_in_vv(vo, next)) {
            size_t lo = 0, hi = vo->n_extra;
            while (lo < hi) {
                size_t mid = (lo + hi) / 2;
                if (vo->extra[mid] < next)
                    lo = mid + 1;
                else
                    hi = mid;
            }
            next = lo < vo->n_extra ? vo->extra[lo] : end;
        }
    }
    return 0;
}

static int catchup_cmp(const void *a, const void *b)
{
    const sw_update *x = a, *y = b;
    int c = memcmp(x->origin, y->origin, SW_ID_BYTES);
    if (c) return c;
    return x->step < y->step ? -1 : x->step > y->step;
}

int swd_catchup_snapshot(const char *sync_addr, const sw_runspec *rs, const swd_welcome *w,
                         const char *state_dir, swd_snapshot *out)
{
    memset(out, 0, sizeof *out);
    catchup_ctx c;
    memset(&c, 0, sizeof c);
    c.addr = sync_addr;
    sw_diag d = {{0}};
    int rc = sw_runspec_id(rs, c.run_id, &d);
    if (rc != 0) return rc;
    /* Admission is open: requests are signed with a throwaway key. */
    crypto_sign_keypair(c.pk, c.sk);
    char part[4096], arpath[4096];
    sw_archive *ar = NULL;
    if ((rc = sw_mkdir(state_dir, 0755, &d)) != 0 ||
        sw_path_join(part, sizeof part, state_dir, "snapshot.part") != 0 ||
        sw_path_join(arpath, sizeof arpath, state_dir, "archive") != 0) {
        if (!rc) rc = SW_ETOOBIG;
        swd_log(SWD_LOG_WARN, "snapshot: cannot prepare the state directory", "error=%s",
                SWD_LOG_Q(d.msg[0] ? d.msg : sw_strerror(rc)));
        goto out;
    }
    swd_log(SWD_LOG_INFO, "snapshot: downloading", "addr=%s updates=%" PRIu64 " bytes=%" PRIu64,
            sync_addr, w->snapshot_updates, w->snapshot_bytes);
    if ((rc = catchup_download(&c, w, part)) != 0) goto out;
    sw_gpt2_config model;
    sw_runspec_model_config(rs, &model);
    if ((rc = sw_checkpoint_load(part, c.run_id, &model, &out->w, &out->meta, &d)) != 0) {
        swd_log(SWD_LOG_WARN, "snapshot: the downloaded checkpoint does not load", "error=%s",
                SWD_LOG_Q(d.msg[0] ? d.msg : sw_strerror(rc)));
        goto out;
    }
    uint64_t total = sw_vv_total(&out->meta.vv);
    if (total != out->meta.ledger_count || total > SW_LEDGER_MAX_UPDATES) {
        rc = SW_EFORMAT;
        goto out;
    }
    out->updates = malloc((size_t)(total ? total : 1) * sizeof *out->updates);
    if (!out->updates) {
        rc = SW_ENOMEM;
        goto out;
    }
    if ((rc = sw_archive_open(arpath, c.run_id, &ar, NULL, &d)) != 0) goto out;
    for (size_t i = 0; i < out->meta.vv.n; i++) {
        rc = catchup_origin(&c, &out->meta.vv.o[i], ar, out->updates, &out->n, (size_t)total);
        if (rc != 0) {
            swd_log(SWD_LOG_WARN, "snapshot: the member could not serve every update it holds",
                    "addr=%s", sync_addr);
            goto out;
        }
    }
    qsort(out->updates, out->n, sizeof *out->updates, catchup_cmp);
    size_t k = 0;
    for (size_t i = 0; i < out->n; i++)
        if (k == 0 || catchup_cmp(&out->updates[k - 1], &out->updates[i]) != 0)
            out->updates[k++] = out->updates[i];
    out->n = k;
    if (out->n != total) {
        rc = SW_ENOTFOUND;
        goto out;
    }
    swd_log(SWD_LOG_INFO, "snapshot: downloaded and verified", "updates=%zu bytes=%" PRIu64, out->n,
            w->snapshot_bytes);
out:
    sodium_memzero(c.sk, sizeof c.sk);
    sw_archive_close(ar);
    unlink(part);
    if (rc != 0) swd_snapshot_fini(out);
    return rc;
}
