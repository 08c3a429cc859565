/*
 * control: what an operator sees and says.  It keeps the node's progress
 * (loss windows, step durations, counts), builds the status object by the
 * schema of core/status.h (for `swarmctl status` and /metrics), and answers
 * the control verbs: status, pause, resume, leave, join, checkpoint, export,
 * eval.  It reads every other part and changes none of their state except
 * through their own calls (the worker's pause and jobs, a Hello sent through
 * the request table).
 *
 * Thread safety: the loop thread only.
 */
#ifndef SWD_CONTROL_H
#define SWD_CONTROL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "gossip.h"
#include "link.h"
#include "metrics.h"
#include "pipeline.h"
#include "requests.h"
#include "worker.h"
#include "worker_view.h"

#define SWD_CONTROL_MAX 65536        /* bytes of a control request */
#define SWD_CONTROL_LOSS_HISTORY 60  /* loss windows kept for status */
#define SWD_CONTROL_WINDOW_MS 5000   /* one loss window */
#define SWD_CONTROL_SYNCING_GAP 1024 /* updates behind a peer: state syncing */

/* The node's phase as the swarm reports it. */
typedef enum swd_phase {
    SWD_PHASE_TRAINING,
    SWD_PHASE_DONE,
    SWD_PHASE_STOPPING,
} swd_phase;

typedef struct swd_control_params {
    swd_link *link; /* all borrowed */
    swd_gossip *gossip;
    swd_pipeline *pipeline;
    swd_requests *requests;
    const swd_worker_view *view;
    swd_worker *worker;
    swd_metrics *metrics; /* NULL: no [node] metrics */
    const char *version;
    uint64_t max_steps;
    const char *runspec_json;
    size_t runspec_len;
    const char *state_dir;
    uint64_t heartbeat_ms;
    void (*on_leave)(void *ctx); /* `swarmctl leave` */
    void *on_leave_ctx;
} swd_control_params;

typedef struct swd_control {
    swd_control_params p;
    swd_phase phase;
    bool paused; /* `swarmctl pause`: no updates made, everything else goes on */
    uint64_t t_start_ms, metrics_ms;
    /* progress */
    double loss_hist[SWD_CONTROL_LOSS_HISTORY]; /* ring of window means (NaN: no steps) */
    size_t n_loss_hist, loss_head;
    uint64_t step_hist[SWD_STEP_BUCKETS + 1];
    double step_seconds;
    uint64_t steps_total, updates_applied;
    uint64_t win_steps, win_t0_ms;
    double win_loss;
    double loss, steps_per_s; /* of the last closed window (loss NaN: none yet) */
} swd_control;

void swd_control_init(swd_control *c, const swd_control_params *p);

/* A worker report's progress (after each drain). */
void swd_control_on_report(swd_control *c, const swd_worker_report *r);
/* Every cron tick: closes loss windows, refreshes /metrics once a second. */
void swd_control_tick(swd_control *c);

/* Moves the node to phase; false when it was there already. */
bool swd_control_set_phase(swd_control *c, swd_phase phase);
/* The state the node announces and reports. */
swd_node_state swd_control_node_state(const swd_control *c);
/* The mean loss of the latest window (NaN: none). */
double swd_control_loss(const swd_control *c);
/* The status object (every field of core/status.h); NULL when out of memory. */
json_t *swd_control_status(const swd_control *c);

/*
 * A control request (JSON) that arrived as request id: answered now or,
 * for join and the worker's jobs, later (swd_control_answer_join,
 * swd_control_job_done).  True when the node's announced state changed
 * (pause, resume): announce it.
 */
bool swd_control_on_request(swd_control *c, uint64_t id, const uint8_t *data, size_t len);
/* The answer to `swarmctl join`: why is NULL when it was welcomed. */
void swd_control_answer_join(swd_control *c, uint64_t ctl_id, const char *why);
/* Answers the control request a finished worker job belongs to. */
void swd_control_job_done(swd_control *c, const swd_job_result *r);

#endif
