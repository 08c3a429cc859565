#include "worker.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "eval.h"
#include "export.h"
#include "log.h"

const double swd_step_bucket_bounds[SWD_STEP_BUCKETS] = {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};

static double worker_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Publishes the report to the loop (with the mutex held). */
static void worker_notify_locked(swd_worker *wk)
{
    uv_async_send(wk->notify);
}

int swd_worker_init(swd_worker *wk, const swd_worker_parts *parts, uv_async_t *notify)
{
    memset(wk, 0, sizeof *wk);
    wk->state = parts->state;
    wk->w = parts->w;
    wk->trainer = parts->trainer;
    wk->ds = parts->ds;
    wk->tok = parts->tok;
    wk->max_steps = parts->max_steps;
    wk->checkpoint_every = parts->checkpoint_every;
    wk->threads = parts->threads > 0 ? parts->threads : 1;
    wk->notify = notify;
    swd_validation_init(&wk->val, parts->valid, parts->eval_every, parts->keep_best,
                        parts->state->dir, parts->state->base_model_dir,
                        sw_trainer_next_step(parts->trainer));
    pthread_mutex_init(&wk->mu, NULL);
    pthread_cond_init(&wk->cv, NULL);

    swd_worker_report *r = &wk->rep;
    r->next_step = sw_trainer_next_step(wk->trainer);
    r->ledger_count = sw_ledger_count(wk->state->ledger);
    r->saturations = wk->w->saturations;
    r->scale = sw_trainer_scale(wk->trainer);
    r->ckpt_count = wk->state->has_ckpt ? wk->state->ckpt_meta.ledger_count : UINT64_MAX;
    r->ckpt_time = worker_now();
    r->valid = wk->val.rep;
    wk->step_limit = UINT64_MAX;
    int rc = sw_ledger_vv(wk->state->ledger, &wk->vv);
    if (rc != 0) return rc;
    wk->vv_gen = 1;
    return 0;
}

/* Publishes the ledger's new version vector to the loop. */
static int worker_refresh_vv(swd_worker *wk)
{
    sw_vv vv = {0};
    int rc = sw_ledger_vv(wk->state->ledger, &vv);
    if (rc != 0) return rc;
    pthread_mutex_lock(&wk->mu);
    sw_vv_fini(&wk->vv);
    wk->vv = vv;
    wk->vv_gen++;
    pthread_mutex_unlock(&wk->mu);
    return 0;
}

/* Digest of the weights, tagged with the ledger's version vector: both are
 * the worker's, so they always describe the same update set. */
static int worker_digest(swd_worker *wk)
{
    uint8_t dg[SW_FIXED_DIGEST_BYTES];
    sw_vv vv = {0};
    int rc = sw_ledger_vv(wk->state->ledger, &vv);
    if (rc != 0) return rc;
    uint64_t gen_now;
    pthread_mutex_lock(&wk->mu);
    gen_now = wk->vv_gen;
    pthread_mutex_unlock(&wk->mu);
    sw_fixed_digest(wk->w, dg);
    pthread_mutex_lock(&wk->mu);
    sw_vv_fini(&wk->digest_vv);
    wk->digest_vv = vv;
    memcpy(wk->digest, dg, sizeof dg);
    wk->digest_count = sw_ledger_count(wk->state->ledger);
    wk->digest_gen++;
    worker_notify_locked(wk);
    pthread_mutex_unlock(&wk->mu);
    wk->digest_of_gen = gen_now;
    wk->digest_time = worker_now();
    return 0;
}

static void worker_fail(swd_worker *wk, int rc, const sw_diag *d, const char *what)
{
    pthread_mutex_lock(&wk->mu);
    wk->rep.error = rc ? rc : SW_EIO;
    /* The diag already names the input; cut what does not fit. */
    int n = snprintf(wk->rep.err, sizeof wk->rep.err, "%s: ", what);
    if (n > 0 && (size_t)n < sizeof wk->rep.err)
        snprintf(wk->rep.err + n, sizeof wk->rep.err - (size_t)n, "%.*s",
                 (int)(sizeof wk->rep.err - (size_t)n - 1),
                 d && d->msg[0] ? d->msg : sw_strerror(rc));
    worker_notify_locked(wk);
    pthread_mutex_unlock(&wk->mu);
}

static int worker_checkpoint_to(swd_worker *wk, const char *why, char path[SW_CHECKPOINT_PATH_MAX])
{
    uint64_t count = sw_ledger_count(wk->state->ledger);
    sw_diag d = {{0}};
    double t0 = worker_now();
    int rc = sw_state_checkpoint(wk->state, wk->w, path, &d);
    if (rc != 0) {
        worker_fail(wk, rc, &d, "checkpoint");
        return rc;
    }
    double t1 = worker_now();
    char q[SW_CHECKPOINT_PATH_MAX + 8];
    swd_log(SWD_LOG_INFO, "checkpoint written",
            "reason=%s step=%" PRIu64 " updates=%" PRIu64 " seconds=%.3f path=%s", why,
            sw_trainer_next_step(wk->trainer), count, t1 - t0, swd_log_quote(q, sizeof q, path));
    pthread_mutex_lock(&wk->mu);
    wk->rep.ckpt_count = count;
    wk->rep.ckpt_time = t1;
    worker_notify_locked(wk);
    pthread_mutex_unlock(&wk->mu);
    return 0;
}

static int worker_checkpoint(swd_worker *wk, const char *why)
{
    char path[SW_CHECKPOINT_PATH_MAX];
    return worker_checkpoint_to(wk, why, path);
}

/*
 * Ledgers and applies updates received through the inbox: those already
 * held are dropped (deduplicated by (origin, step)), the rest written ahead
 * in one append and applied in one fused sweep.
 */
static int worker_apply_received(swd_worker *wk, sw_update *u, size_t n)
{
    size_t k = 0;
    uint64_t dups = 0;
    for (size_t i = 0; i < n; i++) {
        if (sw_ledger_has(wk->state->ledger, u[i].origin, u[i].step)) {
            sw_update held;
            sw_diag gd = {{0}};
            dups++;
            if (sw_ledger_get(wk->state->ledger, u[i].origin, u[i].step, &held, NULL, &gd) == 0 &&
                (held.q != u[i].q || memcmp(&held.scale, &u[i].scale, sizeof held.scale) != 0)) {
                pthread_mutex_lock(&wk->mu);
                if (wk->rep.n_equiv < SWD_WORKER_EQUIV_MAX)
                    wk->rep.equiv[wk->rep.n_equiv++] = (swd_worker_equivocation){held, u[i]};
                pthread_mutex_unlock(&wk->mu);
            }
            continue;
        }
        u[k++] = u[i];
    }
    /* Twice in this batch (two peers relayed it, or anti-entropy raced the
     * stream): the first copy counts.  O(n log n), so a flooded inbox costs
     * seconds, not minutes. */
    size_t unique = k;
    if (sw_update_dedup(u, k, &unique) != 0) {
        worker_fail(wk, SW_ENOMEM, NULL, "received updates");
        return SW_ENOMEM;
    }
    dups += k - unique;
    k = unique;
    if (dups) {
        pthread_mutex_lock(&wk->mu);
        wk->rep.duplicates += dups;
        worker_notify_locked(wk);
        pthread_mutex_unlock(&wk->mu);
    }
    if (k == 0) return 0;
    sw_diag d = {{0}};
    int rc = sw_ledger_append(wk->state->ledger, u, k, &d);
    if (rc != 0) {
        worker_fail(wk, rc, &d, "ledger append");
        return rc;
    }
    sw_fixed_apply(wk->w, &wk->state->train, wk->state->trainable, u, k, wk->threads);
    rc = worker_refresh_vv(wk);
    if (rc != 0) {
        worker_fail(wk, rc, NULL, "version vector");
        return rc;
    }
    pthread_mutex_lock(&wk->mu);
    wk->rep.received += k;
    wk->rep.ledger_count = sw_ledger_count(wk->state->ledger);
    wk->rep.saturations = wk->w->saturations;
    worker_notify_locked(wk);
    pthread_mutex_unlock(&wk->mu);
    return 0;
}

static int worker_step(swd_worker *wk)
{
    sw_diag d = {{0}};
    sw_trainer_result *res = &wk->res;
    int rc = sw_trainer_step(wk->trainer, wk->w, res, &d);
    if (rc != 0) {
        worker_fail(wk, rc, &d, "training step");
        return rc;
    }
    sw_update u[SW_TRAINER_MAX_DIRECTIONS];
    uint64_t nonfinite = 0;
    for (int i = 0; i < res->n; i++) {
        u[i] = res->dirs[i].update;
        nonfinite += res->dirs[i].nonfinite;
    }
    /* Written ahead: the step counts only once its updates are durable. */
    rc = sw_ledger_append(wk->state->ledger, u, (size_t)res->n, &d);
    if (rc != 0) {
        worker_fail(wk, rc, &d, "ledger append");
        return rc;
    }
    sw_fixed_apply(wk->w, &wk->state->train, wk->state->trainable, u, (size_t)res->n, wk->threads);
    rc = worker_refresh_vv(wk);
    if (rc != 0) {
        worker_fail(wk, rc, NULL, "version vector");
        return rc;
    }
    if (swd_log_enabled(SWD_LOG_DEBUG))
        swd_log(SWD_LOG_DEBUG, "step", "step=%" PRIu64 " loss=%.6f q=%d scale=%.6g seconds=%.3f",
                res->step, res->loss, (int)u[0].q, (double)res->scale, res->seconds);
    if (nonfinite)
        swd_log(SWD_LOG_WARN, "loss is not finite: the step's updates carry q=0",
                "step=%" PRIu64 " directions=%" PRIu64, res->step, nonfinite);

    pthread_mutex_lock(&wk->mu);
    if (wk->n_own + (size_t)res->n > wk->own_cap) {
        size_t cap = wk->own_cap ? wk->own_cap * 2 : 256;
        while (cap < wk->n_own + (size_t)res->n)
            cap *= 2;
        sw_update *p = realloc(wk->own, cap * sizeof *p);
        if (!p) {
            pthread_mutex_unlock(&wk->mu);
            worker_fail(wk, SW_ENOMEM, NULL, "own updates");
            return SW_ENOMEM;
        }
        wk->own = p;
        wk->own_cap = cap;
    }
    memcpy(wk->own + wk->n_own, u, (size_t)res->n * sizeof *u);
    wk->n_own += (size_t)res->n;
    swd_worker_report *r = &wk->rep;
    r->next_step = sw_trainer_next_step(wk->trainer);
    r->ledger_count = sw_ledger_count(wk->state->ledger);
    r->saturations = wk->w->saturations;
    r->scale = sw_trainer_scale(wk->trainer);
    r->steps++;
    if (isfinite(res->loss)) r->loss_sum += res->loss;
    size_t bucket = 0;
    while (bucket < SWD_STEP_BUCKETS && res->seconds > swd_step_bucket_bounds[bucket])
        bucket++;
    r->step_hist[bucket]++;
    r->step_seconds += res->seconds;
    r->nonfinite += nonfinite;
    worker_notify_locked(wk);
    pthread_mutex_unlock(&wk->mu);

    uint64_t next = sw_trainer_next_step(wk->trainer);
    if (wk->checkpoint_every && next % wk->checkpoint_every == 0 && next < wk->max_steps)
        return worker_checkpoint(wk, "steps");
    return 0;
}

/* Runs one job (the weights are ours between steps) and queues its result. */
static int worker_run_job(swd_worker *wk, const swd_job *job)
{
    swd_job_result *res = calloc(1, sizeof *res);
    if (!res) return SW_ENOMEM;
    res->kind = job->kind;
    res->tag = job->tag;
    res->updates = sw_ledger_count(wk->state->ledger);
    snprintf(res->path, sizeof res->path, "%s", job->path);
    sw_diag d = {{0}};
    sw_gpt2 *m = NULL;
    sw_dataset *ds = NULL;
    int rc = 0;
    if (job->kind == SWD_JOB_CHECKPOINT) {
        if (res->updates == wk->rep.ckpt_count && wk->state->has_ckpt) {
            snprintf(res->path, sizeof res->path, "%s", wk->state->ckpt_meta.path);
        } else {
            char path[SW_CHECKPOINT_PATH_MAX];
            /* A failed checkpoint is fatal for the worker (it reported why). */
            if ((rc = worker_checkpoint_to(wk, "requested", path)) != 0) {
                free(res);
                return rc;
            }
            snprintf(res->path, sizeof res->path, "%s", path);
        }
    } else if ((rc = sw_fixed_to_model(wk->w, &m, &d)) == 0) {
        if (job->kind == SWD_JOB_EXPORT) {
            rc = sw_export_model(m, wk->state->base_model_dir, job->path, (sw_dtype)job->dtype,
                                 NULL, res->digest, &d);
        } else if ((rc = sw_dataset_load(job->path, wk->tok, m->cfg.n_positions, &ds, &d)) == 0) {
            sw_eval_result ev;
            if ((rc = sw_eval_run(m, ds, NULL, &ev, &d)) == 0) {
                res->loss = ev.loss;
                res->perplexity = ev.perplexity;
                res->tokens = ev.tokens;
                res->records = ev.records;
                res->has_accuracy = ev.has_accuracy;
                res->accuracy = ev.accuracy;
            }
        }
    }
    sw_dataset_free(ds);
    sw_gpt2_free(m);
    /* Export and eval failures are the request's, not the node's. */
    res->rc = rc;
    if (rc != 0) snprintf(res->err, sizeof res->err, "%s", d.msg[0] ? d.msg : sw_strerror(rc));
    pthread_mutex_lock(&wk->mu);
    if (wk->n_results < SWD_WORKER_JOBS_MAX) wk->results[wk->n_results++] = *res;
    worker_notify_locked(wk);
    pthread_mutex_unlock(&wk->mu);
    free(res);
    return 0;
}

static bool worker_finished(const swd_worker *wk)
{
    return sw_trainer_next_step(wk->trainer) >= wk->max_steps;
}

/* Scores [data] valid when due (between steps: the weights are ours). */
static void worker_validate(swd_worker *wk)
{
    uint64_t step = sw_trainer_next_step(wk->trainer);
    if (!swd_validation_due(&wk->val, step, worker_finished(wk))) return;
    if (!swd_validation_run(&wk->val, wk->w, step, sw_ledger_count(wk->state->ledger))) return;
    pthread_mutex_lock(&wk->mu);
    wk->rep.valid = wk->val.rep;
    worker_notify_locked(wk);
    pthread_mutex_unlock(&wk->mu);
}

static void worker_main(void *arg)
{
    swd_worker *wk = arg;
    bool done_reported = false;
    for (;;) {
        pthread_mutex_lock(&wk->mu);
        for (;;) {
            bool can_step = !worker_finished(wk) && !wk->paused &&
                            sw_trainer_next_step(wk->trainer) < wk->step_limit;
            bool want_digest = wk->digest_of_gen != wk->vv_gen;
            if (wk->stop || wk->ckpt_request || wk->n_inbox || wk->n_jobs || can_step ||
                want_digest || (worker_finished(wk) && !done_reported))
                break;
            pthread_cond_wait(&wk->cv, &wk->mu);
        }
        bool stop = wk->stop, ckpt = wk->ckpt_request;
        bool limited = wk->paused || sw_trainer_next_step(wk->trainer) >= wk->step_limit;
        swd_job jobs[SWD_WORKER_JOBS_MAX];
        size_t n_jobs = wk->n_jobs;
        memcpy(jobs, wk->jobs, n_jobs * sizeof *jobs);
        wk->n_jobs = 0;
        wk->ckpt_request = false;
        /* Swap the inbox out so the loop can keep filling it meanwhile. */
        sw_update *in = wk->inbox;
        size_t n_in = wk->n_inbox, in_cap = wk->inbox_cap;
        wk->inbox = wk->batch;
        wk->inbox_cap = wk->batch_cap;
        wk->n_inbox = 0;
        wk->batch = in;
        wk->batch_cap = in_cap;
        pthread_mutex_unlock(&wk->mu);

        if (n_in && worker_apply_received(wk, wk->batch, n_in) != 0) goto out;
        for (size_t j = 0; j < n_jobs; j++)
            if (worker_run_job(wk, &jobs[j]) != 0) goto out;
        if (stop) break;
        if (ckpt && sw_ledger_count(wk->state->ledger) != wk->rep.ckpt_count &&
            worker_checkpoint(wk, "interval") != 0)
            goto out;
        /* The digest: when idle, as soon as the ledger moved; while
         * training, at most every SWD_WORKER_DIGEST_PERIOD_S. */
        bool idle = n_in == 0 && (worker_finished(wk) || limited);
        if (wk->digest_of_gen != wk->vv_gen &&
            (idle || worker_now() - wk->digest_time >= SWD_WORKER_DIGEST_PERIOD_S)) {
            int drc = worker_digest(wk);
            if (drc != 0) {
                worker_fail(wk, drc, NULL, "digest");
                goto out;
            }
        }
        worker_validate(wk);
        if (!worker_finished(wk)) {
            if (!limited && worker_step(wk) != 0) goto out;
        } else if (!done_reported) {
            if (sw_ledger_count(wk->state->ledger) != wk->rep.ckpt_count &&
                worker_checkpoint(wk, "done") != 0)
                goto out;
            pthread_mutex_lock(&wk->mu);
            wk->rep.done = true;
            worker_notify_locked(wk);
            pthread_mutex_unlock(&wk->mu);
            done_reported = true;
        }
    }
    /* Stopping: the last step is in the ledger; make the restart cheap. */
    if (sw_ledger_count(wk->state->ledger) != wk->rep.ckpt_count) worker_checkpoint(wk, "stop");
out:
    pthread_mutex_lock(&wk->mu);
    wk->rep.exited = true;
    worker_notify_locked(wk);
    pthread_mutex_unlock(&wk->mu);
}

int swd_worker_start(swd_worker *wk)
{
    int rc = uv_thread_create(&wk->thread, worker_main, wk);
    if (rc != 0) return sw_error_from_errno(-rc);
    wk->started = true;
    return 0;
}

void swd_worker_request_stop(swd_worker *wk)
{
    pthread_mutex_lock(&wk->mu);
    wk->stop = true;
    pthread_cond_signal(&wk->cv);
    pthread_mutex_unlock(&wk->mu);
}

void swd_worker_request_checkpoint(swd_worker *wk)
{
    pthread_mutex_lock(&wk->mu);
    wk->ckpt_request = true;
    pthread_cond_signal(&wk->cv);
    pthread_mutex_unlock(&wk->mu);
}

int swd_worker_push_updates(swd_worker *wk, const sw_update *u, size_t n)
{
    int rc = 0;
    pthread_mutex_lock(&wk->mu);
    if (n > SWD_WORKER_INBOX_MAX - wk->n_inbox) {
        rc = SW_ETOOBIG;
        goto out;
    }
    if (wk->n_inbox + n > wk->inbox_cap) {
        size_t cap = wk->inbox_cap ? wk->inbox_cap : 256;
        while (cap < wk->n_inbox + n)
            cap *= 2;
        sw_update *p = realloc(wk->inbox, cap * sizeof *p);
        if (!p) {
            rc = SW_ENOMEM;
            goto out;
        }
        wk->inbox = p;
        wk->inbox_cap = cap;
    }
    memcpy(wk->inbox + wk->n_inbox, u, n * sizeof *u);
    wk->n_inbox += n;
    pthread_cond_signal(&wk->cv);
out:
    pthread_mutex_unlock(&wk->mu);
    return rc;
}

void swd_worker_set_step_limit(swd_worker *wk, uint64_t limit)
{
    pthread_mutex_lock(&wk->mu);
    if (limit != wk->step_limit) {
        wk->step_limit = limit;
        pthread_cond_signal(&wk->cv);
    }
    pthread_mutex_unlock(&wk->mu);
}

void swd_worker_set_paused(swd_worker *wk, bool paused)
{
    pthread_mutex_lock(&wk->mu);
    wk->paused = paused;
    pthread_cond_signal(&wk->cv);
    pthread_mutex_unlock(&wk->mu);
}

int swd_worker_submit(swd_worker *wk, const swd_job *job)
{
    int rc = 0;
    pthread_mutex_lock(&wk->mu);
    if (wk->n_jobs + wk->n_results >= SWD_WORKER_JOBS_MAX)
        rc = SW_ETOOBIG;
    else {
        wk->jobs[wk->n_jobs++] = *job;
        pthread_cond_signal(&wk->cv);
    }
    pthread_mutex_unlock(&wk->mu);
    return rc;
}

bool swd_worker_take_result(swd_worker *wk, swd_job_result *out)
{
    bool got = false;
    pthread_mutex_lock(&wk->mu);
    if (wk->n_results) {
        *out = wk->results[0];
        memmove(wk->results, wk->results + 1, (wk->n_results - 1) * sizeof *wk->results);
        wk->n_results--;
        got = true;
    }
    pthread_mutex_unlock(&wk->mu);
    return got;
}

void swd_worker_take_own(swd_worker *wk, sw_update **out, size_t *n)
{
    pthread_mutex_lock(&wk->mu);
    *out = wk->own;
    *n = wk->n_own;
    wk->own = NULL;
    wk->n_own = wk->own_cap = 0;
    pthread_mutex_unlock(&wk->mu);
}

bool swd_worker_copy_vv(swd_worker *wk, uint64_t *gen, sw_vv *dst)
{
    bool changed = false;
    pthread_mutex_lock(&wk->mu);
    if (wk->vv_gen != *gen) {
        sw_vv tmp = {0};
        if (sw_vv_copy(&wk->vv, &tmp) == 0) {
            sw_vv_fini(dst);
            *dst = tmp;
            *gen = wk->vv_gen;
            changed = true;
        }
    }
    pthread_mutex_unlock(&wk->mu);
    return changed;
}

bool swd_worker_copy_digest(swd_worker *wk, uint64_t *gen, uint8_t digest[SW_FIXED_DIGEST_BYTES],
                            uint64_t *count, sw_vv *vv)
{
    bool changed = false;
    pthread_mutex_lock(&wk->mu);
    if (wk->digest_gen != *gen) {
        sw_vv tmp = {0};
        if (sw_vv_copy(&wk->digest_vv, &tmp) == 0) {
            sw_vv_fini(vv);
            *vv = tmp;
            memcpy(digest, wk->digest, SW_FIXED_DIGEST_BYTES);
            *count = wk->digest_count;
            *gen = wk->digest_gen;
            changed = true;
        }
    }
    pthread_mutex_unlock(&wk->mu);
    return changed;
}

void swd_worker_drain(swd_worker *wk, swd_worker_report *out)
{
    pthread_mutex_lock(&wk->mu);
    *out = wk->rep;
    swd_worker_report *r = &wk->rep;
    r->steps = 0;
    r->loss_sum = 0;
    r->nonfinite = 0;
    r->received = 0;
    r->duplicates = 0;
    r->n_equiv = 0;
    memset(r->step_hist, 0, sizeof r->step_hist);
    r->step_seconds = 0;
    r->done = false;
    /* exited and error stay set: they are states, not events */
    pthread_mutex_unlock(&wk->mu);
}

void swd_worker_join(swd_worker *wk)
{
    if (!wk->started) return;
    uv_thread_join(&wk->thread);
    wk->started = false;
}

void swd_worker_fini(swd_worker *wk)
{
    swd_worker_join(wk);
    sw_trainer_free(wk->trainer);
    sw_dataset_free(wk->ds);
    swd_validation_fini(&wk->val);
    sw_tokenizer_free(wk->tok);
    sw_fixed_free(wk->w);
    sw_state_close(wk->state);
    free(wk->inbox);
    free(wk->batch);
    free(wk->own);
    sw_vv_fini(&wk->vv);
    sw_vv_fini(&wk->digest_vv);
    pthread_mutex_destroy(&wk->mu);
    pthread_cond_destroy(&wk->cv);
    memset(wk, 0, sizeof *wk);
}
