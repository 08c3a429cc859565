/*
 * swarm_int: what daemon/swarm*.c share, and nothing else includes: the
 * swarm's state (struct swd_swarm) and its internal functions.  The swarm
 * is one module in four files, by concern:
 *   swarm.c          life cycle (hello, open, close), membership, announces,
 *                    the loop's entry points (net events, worker reports, cron)
 *   swarm_updates.c  own batches, received batches, archive refill, bans,
 *                    anti-entropy requests and their replies
 *   swarm_sync.c     the sync service: Welcome, Updates, snapshot chunks
 *   swarm_control.c  the status object and the control verbs
 * Thread safety: the loop thread only (swarm.h).
 */
#ifndef SWD_SWARM_INT_H
#define SWD_SWARM_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "archive.h"
#include "members.h"
#include "metrics.h"
#include "net.h"
#include "runspec.h"
#include "swarm.h"

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
    uint64_t sent_ms;
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

uint64_t swarm_now_ms(void);
double swarm_now_s(void);
void swarm_hex(const uint8_t id[SW_ID_BYTES], char out[SWARM_HEX]);
void swarm_drop(swd_swarm *s, swd_drop d, const uint8_t *sender);
void swarm_reply_error(swd_swarm *s, uint64_t id, swd_context ctx, swd_error_code code,
                       const char *text);
uint64_t swarm_vv_prefix(const sw_vv *vv, const uint8_t origin[SW_ID_BYTES]);
uint64_t swarm_have(const swd_swarm *s, const uint8_t origin[SW_ID_BYTES]);
int swarm_vv_entries(const sw_vv *vv, swd_vv_entry **out, size_t *n);
void swarm_flush_own(swd_swarm *s, bool force);
void swarm_take_own(swd_swarm *s);
int swarm_refill_own(swd_swarm *s, sw_state *st);
int swarm_requeue_archived(swd_swarm *s, sw_state *st);
void swarm_ban_updates(swd_swarm *s, const sw_update *held, const sw_update *got,
                       const uint8_t *held_env, size_t held_len, const uint8_t *got_env,
                       size_t got_len);
void swarm_take_batch(swd_swarm *s, const swd_msg *m, const uint8_t *env, size_t env_len);
void swarm_subscribe_all(swd_swarm *s);
bool swarm_req_pending_origin(const swd_swarm *s, const uint8_t origin[SW_ID_BYTES]);
swarm_req *swarm_request(swd_swarm *s, swarm_req_kind kind, const char *addr, const swd_msg *m,
                         const uint8_t origin[SW_ID_BYTES], const uint8_t peer[SW_ID_BYTES]);
void swarm_hello_msg(const swd_swarm *s, swd_msg *m);
void swarm_reply_json(swd_swarm *s, uint64_t id, json_t *reply);
void swarm_repair_from(swd_swarm *s, const swd_peer *p);
swd_peer *swarm_seen(swd_swarm *s, const uint8_t id[SW_ID_BYTES]);
swd_node_state swarm_node_state(const swd_swarm *s);
size_t swarm_member_list(swd_swarm *s, swd_member_info *out, size_t max, bool with_self);
void swarm_announce(swd_swarm *s);
void swarm_on_sync_req(swd_swarm *s, swd_net_event *ev);
void swarm_on_reply(swd_swarm *s, swd_net_event *ev);
json_t *swarm_status(swd_swarm *s);
void swarm_on_control(swd_swarm *s, swd_net_event *ev);
void swarm_job_done(swd_swarm *s, const swd_job_result *r);

#endif
