#include "node.h"

#include <inttypes.h>
#include <pthread.h>
#include <math.h>
#include <signal.h>
#include <sys/stat.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "catchup.h"
#include "fileio.h"
#include "gpt2.h"
#include "log.h"
#include "notify.h"
#include "swarm.h"
#include "worker.h"

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* Runs a cron section every ms milliseconds (redis's run_with_period). */
#define run_with_period(node, ms)                                                                  \
    ((ms) <= SWD_CRON_MS || (node)->cronloops % (uint64_t)((ms) / SWD_CRON_MS) == 0)

typedef enum node_phase {
    NODE_TRAINING,
    NODE_DONE,     /* max_steps reached; idle until signalled */
    NODE_STOPPING, /* the worker was asked to stop */
    NODE_DRAINING, /* the worker exited; waiting (bounded) for peers to hold our updates */
    NODE_LEAVING,  /* Leave published; closing after a short grace */
} node_phase;

/* A graceful stop waits at most this long for peers to hold our updates. */
#define NODE_DRAIN_S 10.0
/* ... and this long after publishing Leave, so it leaves the socket. */
#define NODE_LEAVE_GRACE_S 0.3

typedef struct swd_node {
    uv_loop_t loop;
    uv_signal_t sigint, sigterm;
    uv_async_t async;
    uv_async_t net_async; /* signalled by net's threads */
    uv_timer_t cron;
    int open_handles;

    swd_worker worker;
    swd_swarm *swarm;
    double phase_deadline; /* DRAINING / LEAVING: when to move on */
    uint64_t watchdog_us;  /* systemd's WatchdogSec (0: none); pinged at half of it */
    double last_watchdog;
    uint64_t max_steps; /* the run spec's */
    bool worker_exited;
    const swd_config *cfg;
    swd_node_opts opts;
    node_phase phase;
    int exit_code;
    uint64_t cronloops;

    swd_worker_report last; /* the latest levels */
    /* the progress window: since the last progress line */
    uint64_t win_steps, win_nonfinite;
    double win_loss_sum, win_t0;
    double last_loss; /* the last window's mean loss (carried over empty windows) */
} swd_node;

static double node_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void node_on_close(uv_handle_t *h)
{
    swd_node *n = h->data;
    n->open_handles--;
}

/*
 * Closing the sockets waits for nng's threads; once a node has stopped
 * (everything durable is on disk, Leave is published) a teardown that does
 * not finish must not keep the process alive: a guard thread exits it with
 * the node's exit code after NODE_TEARDOWN_S.
 */
#define NODE_TEARDOWN_S 10

static void *node_teardown_guard(void *arg)
{
    int code = (int)(intptr_t)arg;
    struct timespec ts = {NODE_TEARDOWN_S, 0};
    while (nanosleep(&ts, &ts) != 0)
        ;
    swd_log(SWD_LOG_WARN, "socket teardown did not finish: exiting without it",
            "waited_s=%d exit=%d", NODE_TEARDOWN_S, code);
    _exit(code);
    return NULL;
}

static void node_close_handles(swd_node *n)
{
    if (n->swarm) {
        pthread_t t;
        pthread_attr_t attr;
        if (pthread_attr_init(&attr) == 0) {
            pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
            pthread_create(&t, &attr, node_teardown_guard, (void *)(intptr_t)n->exit_code);
            pthread_attr_destroy(&attr);
        }
    }
    /* nng's threads signal net_async: stop them first. */
    swd_swarm_close(n->swarm);
    n->swarm = NULL;
    uv_handle_t *hs[] = {(uv_handle_t *)&n->sigint, (uv_handle_t *)&n->sigterm,
                         (uv_handle_t *)&n->async, (uv_handle_t *)&n->net_async,
                         (uv_handle_t *)&n->cron};
    for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++)
        if (!uv_is_closing(hs[i])) uv_close(hs[i], node_on_close);
}

static void node_stop(swd_node *n, const char *why)
{
    if (n->phase >= NODE_STOPPING) return;
    n->phase = NODE_STOPPING;
    swd_notify_stopping();
    if (n->swarm) swd_swarm_set_phase(n->swarm, SWD_PHASE_STOPPING);
    swd_log(SWD_LOG_INFO, "stopping", "reason=%s step=%" PRIu64 " updates=%" PRIu64, why,
            n->last.next_step, n->last.ledger_count);
    swd_worker_request_stop(&n->worker);
}

static void node_progress(swd_node *n)
{
    double now = node_now();
    double dt = now - n->win_t0;
    if (n->win_steps) n->last_loss = n->win_loss_sum / (double)n->win_steps;
    swd_log(SWD_LOG_INFO, "progress",
            "step=%" PRIu64 " max_steps=%" PRIu64 " loss=%.4f steps_per_s=%.3f updates=%" PRIu64
            " saturations=%" PRIu64 " scale=%.6g nonfinite=%" PRIu64,
            n->last.next_step, n->max_steps, n->last_loss, dt > 0 ? (double)n->win_steps / dt : 0.0,
            n->last.ledger_count, n->last.saturations, (double)n->last.scale, n->win_nonfinite);
    char st[160];
    snprintf(st, sizeof st, "training: step %" PRIu64 "/%" PRIu64 ", loss %.4f, %.2f steps/s",
             n->last.next_step, n->max_steps, n->last_loss,
             dt > 0 ? (double)n->win_steps / dt : 0.0);
    swd_notify_status(st);
    n->win_steps = 0;
    n->win_nonfinite = 0;
    n->win_loss_sum = 0;
    n->win_t0 = now;
}

static void node_on_async(uv_async_t *h)
{
    swd_node *n = container_of(h, swd_node, async);
    if (n->worker_exited) return;
    swd_worker_report r;
    swd_worker_drain(&n->worker, &r);
    n->last = r;
    n->win_steps += r.steps;
    n->win_loss_sum += r.loss_sum;
    n->win_nonfinite += r.nonfinite;
    if (n->swarm) swd_swarm_on_report(n->swarm, &r);

    if (r.error && n->exit_code == SWD_EXIT_OK) {
        swd_log(SWD_LOG_ERROR, r.err, "step=%" PRIu64, r.next_step);
        n->exit_code = SWD_EXIT_FAIL;
        node_stop(n, "error");
    }
    if (r.done && n->phase == NODE_TRAINING) {
        n->phase = NODE_DONE;
        if (n->swarm) swd_swarm_set_phase(n->swarm, SWD_PHASE_DONE);
        swd_notify_status("done: max_steps reached; syncing and serving");
        if (n->win_steps) node_progress(n);
        swd_log(SWD_LOG_INFO,
                n->opts.until_done ? "training done"
                                   : "training done; syncing and serving until signalled",
                "step=%" PRIu64 " updates=%" PRIu64 " saturations=%" PRIu64, r.next_step,
                r.ledger_count, r.saturations);
        if (n->opts.until_done) node_stop(n, "done");
    }
    if (r.exited) {
        n->worker_exited = true;
        swd_worker_join(&n->worker);
        if (n->phase != NODE_STOPPING && n->exit_code == SWD_EXIT_OK) {
            /* The worker only exits when asked or on an error. */
            n->exit_code = SWD_EXIT_FAIL;
        }
        swd_log(n->exit_code ? SWD_LOG_ERROR : SWD_LOG_INFO, "stopped",
                "step=%" PRIu64 " updates=%" PRIu64 " exit=%d", r.next_step, r.ledger_count,
                n->exit_code);
        if (n->swarm && n->exit_code == SWD_EXIT_OK) {
            /* Graceful: publish what is pending and let peers take it. */
            swd_swarm_flush(n->swarm);
            n->phase = NODE_DRAINING;
            n->phase_deadline = node_now() + NODE_DRAIN_S;
        } else {
            node_close_handles(n);
        }
    }
}

/* `swarmctl leave`: the same graceful stop as SIGTERM. */
static void node_on_leave(void *ctx)
{
    node_stop(ctx, "leave");
}

static void node_on_net(uv_async_t *h)
{
    swd_node *n = container_of(h, swd_node, net_async);
    if (n->swarm) swd_swarm_on_net(n->swarm);
}

/* DRAINING -> LEAVING -> closed, from the cron. */
static void node_finish_step(swd_node *n)
{
    double now = node_now();
    if (n->phase == NODE_DRAINING) {
        bool held = swd_swarm_peers_hold_own(n->swarm);
        if (!held && now < n->phase_deadline) return;
        if (!held)
            swd_log(SWD_LOG_WARN, "leaving before every peer confirmed holding our updates",
                    "waited_s=%.0f", NODE_DRAIN_S);
        swd_swarm_leave(n->swarm);
        n->phase = NODE_LEAVING;
        n->phase_deadline = now + NODE_LEAVE_GRACE_S;
    } else if (n->phase == NODE_LEAVING && now >= n->phase_deadline) {
        node_close_handles(n);
    }
}

static void node_on_signal(uv_signal_t *h, int signum)
{
    swd_node *n = h->data;
    const char *name = signum == SIGINT ? "SIGINT" : "SIGTERM";
    if (n->phase >= NODE_STOPPING) {
        /* The ledger is written ahead: exiting here loses no update; the
         * next start replays what the missing final checkpoint would hold. */
        swd_log(SWD_LOG_WARN, "second signal while stopping: exiting now", "signal=%s exit=1",
                name);
        _exit(SWD_EXIT_FAIL);
    }
    char why[32];
    snprintf(why, sizeof why, "%s", name);
    node_stop(n, why);
}

static void node_on_cron(uv_timer_t *h)
{
    swd_node *n = h->data;
    n->cronloops++;
    /* systemd's watchdog: the loop itself proves it is alive, at half the interval. */
    if (n->watchdog_us && node_now() - n->last_watchdog >= (double)n->watchdog_us / 2e6) {
        swd_notify_watchdog();
        n->last_watchdog = node_now();
    }
    if (n->phase == NODE_DRAINING || n->phase == NODE_LEAVING) {
        if (n->swarm) swd_swarm_on_cron(n->swarm);
        node_finish_step(n);
        return;
    }
    if (n->swarm) swd_swarm_on_cron(n->swarm);
    if (n->cfg->progress_ms > 0 && n->phase == NODE_TRAINING &&
        run_with_period(n, n->cfg->progress_ms))
        node_progress(n);
    if (n->cfg->checkpoint_interval_s > 0 && n->phase != NODE_STOPPING &&
        run_with_period(n, 1000)) {
        if (n->last.ledger_count != n->last.ckpt_count &&
            node_now() - n->last.ckpt_time >= (double)n->cfg->checkpoint_interval_s)
            swd_worker_request_checkpoint(&n->worker);
    }
}

static void node_log_start(const swd_node *n, const swd_setup *s, const sw_state *st)
{
    char run_id[2 * SW_ID_BYTES + 1], node_id[2 * SW_ID_BYTES + 1];
    sw_digest_hex(st->train.run_id, run_id);
    sw_digest_hex(st->id.pk, node_id);
    char ckpt[32];
    if (s->ckpt_count == UINT64_MAX)
        snprintf(ckpt, sizeof ckpt, "none");
    else
        snprintf(ckpt, sizeof ckpt, "%" PRIu64, s->ckpt_count);
    char qdir[SW_STATE_PATH_MAX + 8];
    swd_log(SWD_LOG_INFO, "swarmd started",
            "version=%s run_id=%s node=%s state_dir=%s new_state=%s params=%" PRIu64
            " trainable_params=%" PRIu64 " max_steps=%" PRIu64 " step=%" PRIu64
            " next_update=%" PRIu64 " ledger_updates=%" PRIu64 " checkpoint=%s replayed=%" PRIu64
            " torn_bytes=%" PRIu64 " max_scale=%.6g threads=%d until_done=%s",
            n->opts.version, run_id, node_id, swd_log_quote(qdir, sizeof qdir, st->dir),
            st->created ? "true" : "false", s->n_params, s->n_trainable_params, n->max_steps,
            sw_trainer_next_step(s->trainer), s->next_update, sw_ledger_count(st->ledger), ckpt,
            s->replayed, st->ledger_info.truncated_bytes, st->runspec.max_scale, s->threads,
            n->opts.until_done ? "true" : "false");
}

int swd_node_run(const swd_config *cfg, const swd_node_opts *opts)
{
    /* A closed stderr pipe must not kill the daemon mid-write. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);

    /* A node with bootstrap members says hello first: a new one adopts the
     * swarm's run spec; a restarted one checks it still matches. */
    swd_msg welcome;
    memset(&welcome, 0, sizeof welcome);
    sw_runspec swarm_rs;
    bool have_welcome = false, existing = false;
    char member[SWD_WIRE_MAX_ADDR + 1] = "";
    if (cfg->bootstrap && cfg->bootstrap[0]) {
        char rs_path[SW_STATE_PATH_MAX];
        struct stat sb;
        existing = sw_path_join(rs_path, sizeof rs_path, cfg->state_dir, "runspec.json") == 0 &&
                   stat(rs_path, &sb) == 0;
        int hx = swd_swarm_hello(cfg, existing ? 0.0 : SWD_SWARM_JOIN_WAIT_S, &welcome, &swarm_rs,
                                 member, sizeof member);
        if (hx == SWD_EXIT_OK)
            have_welcome = true;
        else if (!existing)
            return hx;
        else
            swd_log(SWD_LOG_WARN,
                    "starting from the state directory; will keep trying the "
                    "bootstrap members",
                    NULL);
    }

    /* A new joiner catches up by replay or by snapshot, whichever is cheaper. */
    swd_snapshot snap;
    memset(&snap, 0, sizeof snap);
    if (have_welcome && !existing) {
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        int threads = cfg->threads > 0 ? (int)cfg->threads : (ncpu > 0 ? (int)ncpu : 1);
        swd_catchup_plan plan;
        swd_catchup_plan_for(&welcome.u.welcome, &swarm_rs, threads, cfg->catch_up, &plan);
        if (plan.snapshot &&
            swd_catchup_snapshot(member, &swarm_rs, &welcome.u.welcome, cfg->state_dir, &snap) != 0)
            swd_log(SWD_LOG_WARN, "snapshot catch-up failed: catching up by replay", NULL);
    }

    swd_setup s;
    int ex = swd_setup_open(cfg, have_welcome ? &swarm_rs : NULL, &snap, &s);
    swd_snapshot_fini(&snap);
    if (ex != SWD_EXIT_OK) {
        swd_msg_fini(&welcome);
        return ex;
    }

    swd_node n;
    memset(&n, 0, sizeof n);
    n.cfg = cfg;
    n.opts = *opts;
    n.phase = NODE_TRAINING;
    n.max_steps = s.state->runspec.total_steps;
    int rc = uv_loop_init(&n.loop);
    if (rc != 0) {
        swd_log(SWD_LOG_ERROR, "uv_loop_init failed", "error=%s", uv_strerror(rc));
        swd_setup_fini(&s);
        swd_msg_fini(&welcome);
        return SWD_EXIT_FAIL;
    }
    uv_async_init(&n.loop, &n.async, node_on_async);
    uv_async_init(&n.loop, &n.net_async, node_on_net);
    uv_signal_init(&n.loop, &n.sigint);
    uv_signal_init(&n.loop, &n.sigterm);
    uv_timer_init(&n.loop, &n.cron);
    n.async.data = n.net_async.data = n.sigint.data = n.sigterm.data = n.cron.data = &n;
    n.open_handles = 5;

    swd_worker_parts parts = {.state = s.state,
                              .w = s.w,
                              .trainer = s.trainer,
                              .ds = s.ds,
                              .tok = s.tok,
                              .max_steps = n.max_steps,
                              .checkpoint_every = cfg->checkpoint_every,
                              .threads = s.threads,
                              .valid = s.valid,
                              .eval_every = cfg->eval_every,
                              .keep_best = cfg->keep_best};
    /* From the startup line on, a signal means a graceful stop: libuv holds
     * it until the loop runs (the worker sees the stop when it starts). */
    uv_signal_start(&n.sigint, node_on_signal, SIGINT);
    uv_signal_start(&n.sigterm, node_on_signal, SIGTERM);
    node_log_start(&n, &s, s.state);
    sw_state *state = s.state;
    rc = swd_worker_init(&n.worker, &parts, &n.async);
    swd_setup_release(&s);
    if (rc == 0) {
        swd_swarm_params sp = {.cfg = cfg,
                               .state = state,
                               .worker = &n.worker,
                               .net_notify = &n.net_async,
                               .version = opts->version,
                               .max_steps = n.max_steps,
                               .welcome = have_welcome ? &welcome.u.welcome : NULL,
                               .on_leave = node_on_leave,
                               .on_leave_ctx = &n};
        ex = swd_swarm_open(&sp, &n.swarm);
    } else {
        swd_log(SWD_LOG_ERROR, "cannot start the worker", "error=%s", sw_strerror(rc));
        ex = SWD_EXIT_FAIL;
    }
    swd_msg_fini(&welcome);
    if (ex != SWD_EXIT_OK) {
        n.exit_code = ex;
        n.worker_exited = true;
        node_close_handles(&n);
        uv_run(&n.loop, UV_RUN_DEFAULT);
        swd_worker_fini(&n.worker);
        uv_loop_close(&n.loop);
        return ex;
    }
    swd_worker_drain(&n.worker, &n.last);
    n.win_t0 = node_now();
    n.last_loss = NAN; /* "loss=nan" until the first step */

    uv_timer_start(&n.cron, node_on_cron, SWD_CRON_MS, SWD_CRON_MS);
    if ((rc = swd_worker_start(&n.worker)) != 0) {
        swd_log(SWD_LOG_ERROR, "cannot start the trainer thread", "error=%s", sw_strerror(rc));
        n.exit_code = SWD_EXIT_FAIL;
        n.worker_exited = true;
        node_close_handles(&n);
    }
    if (!n.worker_exited) {
        swd_notify_watchdog_enabled(&n.watchdog_us);
        char st[96];
        snprintf(st, sizeof st, "training: step %" PRIu64 "/%" PRIu64, n.last.next_step,
                 n.max_steps);
        swd_notify_ready(st);
        n.last_watchdog = node_now();
    }
    uv_run(&n.loop, UV_RUN_DEFAULT);

    swd_worker_fini(&n.worker);
    if (n.open_handles != 0 || (rc = uv_loop_close(&n.loop)) != 0) {
        swd_log(SWD_LOG_ERROR, "event loop did not close cleanly", "open_handles=%d",
                n.open_handles);
        return SWD_EXIT_FAIL;
    }
    return n.exit_code;
}
