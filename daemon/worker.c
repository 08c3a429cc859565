#include "worker.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

static double worker_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
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
    pthread_mutex_init(&wk->mu, NULL);
    pthread_cond_init(&wk->cv, NULL);

    swd_worker_report *r = &wk->rep;
    r->next_step = sw_trainer_next_step(wk->trainer);
    r->ledger_count = sw_ledger_count(wk->state->ledger);
    r->saturations = wk->w->saturations;
    r->scale = sw_trainer_scale(wk->trainer);
    r->ckpt_count = wk->state->has_ckpt ? wk->state->ckpt_meta.ledger_count : UINT64_MAX;
    r->ckpt_time = worker_now();
    return 0;
}

/* Publishes the report to the loop (with the mutex held). */
static void worker_notify_locked(swd_worker *wk)
{
    uv_async_send(wk->notify);
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

static int worker_checkpoint(swd_worker *wk, const char *why)
{
    uint64_t count = sw_ledger_count(wk->state->ledger);
    sw_diag d = {{0}};
    char path[SW_CHECKPOINT_PATH_MAX];
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

/*
 * Ledgers and applies updates received through the inbox: those already
 * held are dropped (deduplicated by (origin, step)), the rest written ahead
 * in one append and applied in one fused sweep.
 */
static int worker_apply_received(swd_worker *wk, sw_update *u, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (sw_ledger_has(wk->state->ledger, u[i].origin, u[i].step)) continue;
        bool dup = false;
        for (size_t j = 0; j < k && !dup; j++)
            dup = u[j].step == u[i].step && memcmp(u[j].origin, u[i].origin, SW_ID_BYTES) == 0;
        if (!dup) u[k++] = u[i];
    }
    if (k == 0) return 0;
    sw_diag d = {{0}};
    int rc = sw_ledger_append(wk->state->ledger, u, k, &d);
    if (rc != 0) {
        worker_fail(wk, rc, &d, "ledger append");
        return rc;
    }
    sw_fixed_apply(wk->w, &wk->state->train, wk->state->trainable, u, k, wk->threads);
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
    if (swd_log_enabled(SWD_LOG_DEBUG))
        swd_log(SWD_LOG_DEBUG, "step", "step=%" PRIu64 " loss=%.6f q=%d scale=%.6g seconds=%.3f",
                res->step, res->loss, (int)u[0].q, (double)res->scale, res->seconds);
    if (nonfinite)
        swd_log(SWD_LOG_WARN, "loss is not finite: the step's updates carry q=0",
                "step=%" PRIu64 " directions=%" PRIu64, res->step, nonfinite);

    pthread_mutex_lock(&wk->mu);
    swd_worker_report *r = &wk->rep;
    r->next_step = sw_trainer_next_step(wk->trainer);
    r->ledger_count = sw_ledger_count(wk->state->ledger);
    r->saturations = wk->w->saturations;
    r->scale = sw_trainer_scale(wk->trainer);
    r->steps++;
    if (isfinite(res->loss)) r->loss_sum += res->loss;
    r->nonfinite += nonfinite;
    worker_notify_locked(wk);
    pthread_mutex_unlock(&wk->mu);

    uint64_t next = sw_trainer_next_step(wk->trainer);
    if (wk->checkpoint_every && next % wk->checkpoint_every == 0 && next < wk->max_steps)
        return worker_checkpoint(wk, "steps");
    return 0;
}

static bool worker_finished(const swd_worker *wk)
{
    return sw_trainer_next_step(wk->trainer) >= wk->max_steps;
}

static void worker_main(void *arg)
{
    swd_worker *wk = arg;
    bool done_reported = false;
    for (;;) {
        pthread_mutex_lock(&wk->mu);
        while (!wk->stop && !wk->ckpt_request && wk->n_inbox == 0 && done_reported)
            pthread_cond_wait(&wk->cv, &wk->mu);
        bool stop = wk->stop, ckpt = wk->ckpt_request;
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
        if (stop) break;
        if (ckpt && sw_ledger_count(wk->state->ledger) != wk->rep.ckpt_count &&
            worker_checkpoint(wk, "interval") != 0)
            goto out;
        if (!worker_finished(wk)) {
            if (worker_step(wk) != 0) goto out;
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

void swd_worker_drain(swd_worker *wk, swd_worker_report *out)
{
    pthread_mutex_lock(&wk->mu);
    *out = wk->rep;
    swd_worker_report *r = &wk->rep;
    r->steps = 0;
    r->loss_sum = 0;
    r->nonfinite = 0;
    r->received = 0;
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
    sw_tokenizer_free(wk->tok);
    sw_fixed_free(wk->w);
    sw_state_close(wk->state);
    free(wk->inbox);
    free(wk->batch);
    pthread_mutex_destroy(&wk->mu);
    pthread_cond_destroy(&wk->cv);
    memset(wk, 0, sizeof *wk);
}
