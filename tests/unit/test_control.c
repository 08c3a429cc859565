/* control.c: the status object by its schema and the control verbs, on a fake link. */
#include "swarm_fakes.h"

#include <math.h>

#include "control.h"
#include "status.h"

typedef struct control_rig {
    fake_net net;
    fake_id self;
    swd_link link;
    swd_gossip gossip;
    swd_requests requests;
    swd_worker_view view;
    swd_worker wk;
    sw_archive *archive;
    sw_train_spec train;
    swd_pipeline pipeline;
    swd_control control;
    char dir[64];
    int leaves;
} control_rig;

static const char rig_runspec[] = "{\"train\":{\"lr\":0.0003}}";

static void rig_on_leave(void *ctx)
{
    ((control_rig *)ctx)->leaves++;
}

static control_rig *rig_new(void)
{
    control_rig *r = calloc(1, sizeof *r);
    assert_non_null(r);
    fake_id_make(&r->self);
    fake_link(&r->link, &r->net, &r->self);
    swd_gossip_opts go = {.heartbeat_ms = 500, .suspect_after = 3, .dead_after = 10};
    assert_int_equal(
        swd_gossip_init(&r->gossip, &r->link, &go, "tcp://127.0.0.1:1", "tcp://127.0.0.1:2"), 0);
    fake_worker(&r->wk);
    fake_tmpdir(r->dir, sizeof r->dir);
    char path[128];
    snprintf(path, sizeof path, "%s/archive", r->dir);
    sw_diag d = {{0}};
    assert_int_equal(sw_archive_open(path, fake_run_id, &r->archive, NULL, &d), 0);
    r->train.max_scale = 1.0f;
    swd_pipeline_params pp = {.link = &r->link,
                              .gossip = &r->gossip,
                              .requests = &r->requests,
                              .view = &r->view,
                              .worker = &r->wk,
                              .archive = r->archive,
                              .train = &r->train,
                              .state_dir = r->dir,
                              .batch_max_steps = 64,
                              .batch_max_ms = 1000,
                              .heartbeat_ms = 500};
    swd_pipeline_init(&r->pipeline, &pp);
    swd_control_params cp = {.link = &r->link,
                             .gossip = &r->gossip,
                             .pipeline = &r->pipeline,
                             .requests = &r->requests,
                             .view = &r->view,
                             .worker = &r->wk,
                             .version = "test",
                             .max_steps = 100,
                             .runspec_json = rig_runspec,
                             .runspec_len = sizeof rig_runspec - 1,
                             .state_dir = r->dir,
                             .heartbeat_ms = 500,
                             .on_leave = rig_on_leave,
                             .on_leave_ctx = r};
    swd_control_init(&r->control, &cp);
    return r;
}

static void rig_free(control_rig *r)
{
    fake_net_clear(&r->net);
    swd_pipeline_fini(&r->pipeline);
    sw_archive_close(r->archive);
    swd_gossip_fini(&r->gossip);
    swd_worker_view_fini(&r->view);
    fake_worker_fini(&r->wk);
    fake_rmdir(r->dir);
    free(r);
}

/* Sends a control request; returns the parsed reply (NULL when deferred). */
static json_t *rig_say(control_rig *r, const char *text, uint64_t id, bool *changed)
{
    size_t before = fake_count(&r->net, FAKE_REPLY);
    bool ch = swd_control_on_request(&r->control, id, (const uint8_t *)text, strlen(text));
    if (changed) *changed = ch;
    if (fake_count(&r->net, FAKE_REPLY) == before) return NULL;
    const fake_sent *s = fake_last(&r->net, FAKE_REPLY);
    assert_int_equal(s->id, id);
    assert_non_null(s->buf);
    json_error_t err;
    json_t *j = json_loadb((const char *)s->buf, s->len, 0, &err);
    assert_non_null(j);
    return j;
}

static const char *reply_error(const json_t *j)
{
    return json_string_value(json_object_get(j, "error"));
}

/* ------------------------------------------------------- status by schema */

static bool type_ok(const json_t *v, const sw_status_def *d)
{
    if (json_is_null(v)) return d->nullable;
    switch (d->type) {
    case SW_STATUS_TYPE_STRING:
        return json_is_string(v);
    case SW_STATUS_TYPE_HEX:
        return json_is_string(v) && strlen(json_string_value(v)) == 2 * SW_ID_BYTES;
    case SW_STATUS_TYPE_INT:
        return json_is_integer(v) && json_integer_value(v) >= 0;
    case SW_STATUS_TYPE_REAL:
        return json_is_number(v);
    case SW_STATUS_TYPE_BOOL:
        return json_is_boolean(v);
    case SW_STATUS_TYPE_COUNTS: {
        if (!json_is_object(v)) return false;
        const char *k;
        json_t *x;
        json_object_foreach((json_t *)v, k, x)
        {
            if (!json_is_integer(x) || json_integer_value(x) < 0) return false;
        }
        return true;
    }
    case SW_STATUS_TYPE_REALS:
    case SW_STATUS_TYPE_TEXTS: {
        if (!json_is_array(v)) return false;
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x)
        {
            if (d->type == SW_STATUS_TYPE_REALS ? !(json_is_number(x) || json_is_null(x))
                                                : !json_is_string(x))
                return false;
        }
        return true;
    }
    case SW_STATUS_TYPE_HISTOGRAM:
        return json_is_array(json_object_get(v, SW_STATUS_HIST_BUCKETS)) &&
               json_is_array(json_object_get(v, SW_STATUS_HIST_COUNTS)) &&
               json_is_integer(json_object_get(v, SW_STATUS_HIST_COUNT)) &&
               json_is_number(json_object_get(v, SW_STATUS_HIST_SUM));
    case SW_STATUS_TYPE_PEERS:
        return json_is_array(v);
    case SW_STATUS_TYPE_RUNSPEC:
        return json_is_object(v);
    }
    return false;
}

/* The path of f relative to its scope ("state" for "peers[].state"). */
static const char *scoped_path(sw_status_field f)
{
    const char *p = sw_status_def_of((sw_status_field)f)->path;
    return sw_status_is_peer(f) ? p + strlen("peers[].") : p;
}

/* Every key of obj (at prefix, in the peer scope or the root's) is a field
 * or a section some field lies under: nothing undeclared is written. */
static void assert_declared(json_t *obj, const char *prefix, bool peer)
{
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v)
    {
        char path[256];
        snprintf(path, sizeof path, "%s%s", prefix, k);
        bool field = false, section = false;
        for (int f = 0; f < SW_STATUS_COUNT; f++) {
            if (sw_status_is_peer((sw_status_field)f) != peer) continue;
            const char *fp = scoped_path((sw_status_field)f);
            field |= strcmp(fp, path) == 0;
            section |= strncmp(fp, path, strlen(path)) == 0 && fp[strlen(path)] == '.';
        }
        if (field) continue;
        if (!section || !json_is_object(v)) fail_msg("undeclared status member %s", path);
        char sub[260];
        snprintf(sub, sizeof sub, "%s.", path);
        assert_declared(v, sub, peer);
    }
}

static void assert_status_complete(json_t *st)
{
    for (int f = 0; f < SW_STATUS_COUNT; f++) {
        const sw_status_def *d = sw_status_def_of((sw_status_field)f);
        if (sw_status_is_peer((sw_status_field)f)) continue;
        json_t *v = sw_status_get(st, (sw_status_field)f);
        if (!v) fail_msg("status lacks %s", d->path);
        if (!type_ok(v, d)) fail_msg("status field %s has the wrong type", d->path);
    }
    assert_declared(st, "", false);
    json_t *peers = sw_status_get(st, SW_STATUS_PEERS);
    size_t i;
    json_t *p;
    json_array_foreach(peers, i, p)
    {
        for (int f = 0; f < SW_STATUS_COUNT; f++) {
            if (!sw_status_is_peer((sw_status_field)f)) continue;
            const sw_status_def *d = sw_status_def_of((sw_status_field)f);
            json_t *v = sw_status_get(p, (sw_status_field)f);
            if (!v) fail_msg("peer %zu lacks %s", i, d->path);
            if (!type_ok(v, d)) fail_msg("peer field %s has the wrong type", d->path);
        }
        assert_declared(p, "", true);
    }
}

/* A fresh node and a node with a peer, progress and drops: every declared
 * field is there with its declared type, and nothing else is. */
static void test_status_has_every_field(void **state)
{
    (void)state;
    control_rig *r = rig_new();
    json_t *st = swd_control_status(&r->control);
    assert_non_null(st);
    assert_status_complete(st);
    assert_true(json_is_null(sw_status_get(st, SW_STATUS_TRAIN_LOSS))); /* no steps yet */
    assert_int_equal(json_array_size(sw_status_get(st, SW_STATUS_PEERS)), 0);
    json_decref(st);

    fake_id peer;
    fake_id_make(&peer);
    assert_non_null(swd_gossip_seen(&r->gossip, peer.pk));
    swd_worker_report rep;
    memset(&rep, 0, sizeof rep);
    rep.steps = 4;
    rep.loss_sum = 10.0;
    rep.step_hist[0] = 4;
    rep.step_seconds = 0.4;
    swd_control_on_report(&r->control, &rep);
    r->link.dropped[SWD_DROP_BAD_SIGNATURE] = 3;
    st = swd_control_status(&r->control);
    assert_status_complete(st);
    assert_int_equal(json_array_size(sw_status_get(st, SW_STATUS_PEERS)), 1);
    /* Before the first window closes, the loss is the open window's mean. */
    assert_true(fabs(json_real_value(sw_status_get(st, SW_STATUS_TRAIN_LOSS)) - 2.5) < 1e-12);
    assert_int_equal(json_integer_value(sw_status_get(st, SW_STATUS_TRAIN_STEPS)), 4);
    json_t *warn = sw_status_get(st, SW_STATUS_SWARM_WARNINGS);
    assert_int_equal(json_array_size(warn), 1);
    assert_non_null(strstr(json_string_value(json_array_get(warn, 0)), "3 messages dropped"));
    json_t *spec = sw_status_get(st, SW_STATUS_RUN_SPEC);
    assert_true(json_is_number(json_object_get(json_object_get(spec, "train"), "lr")));
    json_decref(st);
    rig_free(r);
}

/* A loss window closes after SWD_CONTROL_WINDOW_MS: loss and speed are the
 * closed window's; a window without steps keeps the loss and records null. */
static void test_loss_windows(void **state)
{
    (void)state;
    control_rig *r = rig_new();
    swd_worker_report rep;
    memset(&rep, 0, sizeof rep);
    rep.steps = 10;
    rep.loss_sum = 30.0;
    swd_control_on_report(&r->control, &rep);
    swd_control_tick(&r->control);
    assert_true(isnan(swd_control_loss(&r->control))); /* window still open */
    r->net.now_ms += SWD_CONTROL_WINDOW_MS;
    swd_control_tick(&r->control);
    assert_true(fabs(swd_control_loss(&r->control) - 3.0) < 1e-12);
    assert_true(fabs(r->control.steps_per_s - 2.0) < 1e-12);
    r->net.now_ms += SWD_CONTROL_WINDOW_MS;
    swd_control_tick(&r->control);
    assert_true(fabs(swd_control_loss(&r->control) - 3.0) < 1e-12);
    json_t *st = swd_control_status(&r->control);
    json_t *hist = sw_status_get(st, SW_STATUS_TRAIN_LOSS_HISTORY);
    assert_int_equal(json_array_size(hist), 2);
    assert_true(fabs(json_real_value(json_array_get(hist, 0)) - 3.0) < 1e-12);
    assert_true(json_is_null(json_array_get(hist, 1)));
    json_decref(st);
    /* The history is bounded. */
    for (int i = 0; i < 3 * SWD_CONTROL_LOSS_HISTORY; i++) {
        r->net.now_ms += SWD_CONTROL_WINDOW_MS;
        swd_control_tick(&r->control);
    }
    st = swd_control_status(&r->control);
    assert_int_equal(json_array_size(sw_status_get(st, SW_STATUS_TRAIN_LOSS_HISTORY)),
                     SWD_CONTROL_LOSS_HISTORY);
    json_decref(st);
    rig_free(r);
}

/* ---------------------------------------------------------------- verbs */

/* Malformed requests get an error naming the problem, each exactly once. */
static void test_bad_requests(void **state)
{
    (void)state;
    control_rig *r = rig_new();
    static const struct {
        const char *text, *error;
    } bad[] = {
        {"not json", "request is not a JSON object"},
        {"[1,2]", "request is not a JSON object"},
        {"{\"cmd\":7}", "request has no \"cmd\" string"},
        {"{}", "request has no \"cmd\" string"},
        {"{\"cmd\":\"status\",\"cmd\":\"pause\"}", "request is not a JSON object"},
        {"{\"cmd\":\"reboot\"}", "unknown command: reboot"},
        {"{\"cmd\":\"join\"}", "join: \"addr\" must be a member's sync URL"},
        {"{\"cmd\":\"join\",\"addr\":\"\"}", "join: \"addr\" must be a member's sync URL"},
        {"{\"cmd\":\"export\"}", "export: \"out\": missing"},
        {"{\"cmd\":\"export\",\"out\":\"rel/x\"}", "export: \"out\": must be an absolute path"},
        {"{\"cmd\":\"export\",\"out\":\"/x\",\"dtype\":\"bf16\"}",
         "export: \"dtype\" must be f32 or f16"},
        {"{\"cmd\":\"eval\"}", "eval: \"data\": missing"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *j = rig_say(r, bad[i].text, 100 + i, NULL);
        assert_non_null(j);
        assert_non_null(reply_error(j));
        if (strncmp(reply_error(j), bad[i].error, strlen(bad[i].error)) != 0)
            fail_msg("%s: got \"%s\"", bad[i].text, reply_error(j));
        json_decref(j);
    }
    assert_int_equal(fake_count(&r->net, FAKE_REPLY), sizeof bad / sizeof bad[0]);
    assert_int_equal(r->wk.n_jobs, 0);
    assert_int_equal(fake_count(&r->net, FAKE_REQUEST), 0);

    /* One byte over the bound is refused before it is parsed. */
    char *big = malloc(SWD_CONTROL_MAX + 2);
    assert_non_null(big);
    memset(big, ' ', SWD_CONTROL_MAX + 1);
    big[SWD_CONTROL_MAX + 1] = 0;
    memcpy(big, "{\"cmd\":\"status\"}", 16);
    json_t *j = rig_say(r, big, 900, NULL);
    assert_string_equal(reply_error(j), "request too large");
    json_decref(j);
    big[SWD_CONTROL_MAX] = 0; /* at the bound: answered */
    j = rig_say(r, big, 901, NULL);
    assert_null(reply_error(j));
    assert_non_null(sw_status_get(j, SW_STATUS_NODE_ID));
    json_decref(j);
    free(big);
    rig_free(r);
}

/* Pause and resume change the state (and say so, once); the worker is told. */
static void test_pause_resume(void **state)
{
    (void)state;
    control_rig *r = rig_new();
    bool changed;
    json_t *j = rig_say(r, "{\"cmd\":\"pause\"}", 1, &changed);
    assert_true(changed);
    assert_string_equal(json_string_value(json_object_get(j, "state")), "paused");
    assert_true(r->wk.paused);
    assert_int_equal(swd_control_node_state(&r->control), SWD_STATE_PAUSED);
    json_decref(j);
    j = rig_say(r, "{\"cmd\":\"pause\"}", 2, &changed);
    assert_false(changed); /* already paused: nothing to announce */
    json_decref(j);
    j = rig_say(r, "{\"cmd\":\"resume\"}", 3, &changed);
    assert_true(changed);
    assert_false(r->wk.paused);
    assert_string_equal(json_string_value(json_object_get(j, "state")), "training");
    json_decref(j);
    /* done outranks paused */
    assert_true(swd_control_set_phase(&r->control, SWD_PHASE_DONE));
    assert_false(swd_control_set_phase(&r->control, SWD_PHASE_DONE));
    r->control.paused = true;
    assert_int_equal(swd_control_node_state(&r->control), SWD_STATE_DONE);
    rig_free(r);
}

/* Jobs wait for the worker (no reply yet) until the queue is full; the
 * worker's result answers the request it belongs to. */
static void test_jobs(void **state)
{
    (void)state;
    control_rig *r = rig_new();
    for (size_t i = 0; i < SWD_WORKER_JOBS_MAX; i++)
        assert_null(rig_say(r, "{\"cmd\":\"checkpoint\"}", 10 + i, NULL));
    assert_int_equal(r->wk.n_jobs, SWD_WORKER_JOBS_MAX);
    assert_int_equal(r->wk.jobs[0].tag, 10);
    json_t *j = rig_say(r, "{\"cmd\":\"eval\",\"data\":\"/d.jsonl\"}", 50, NULL);
    assert_non_null(strstr(reply_error(j), "busy"));
    json_decref(j);

    swd_job_result res;
    memset(&res, 0, sizeof res);
    res.tag = 12;
    res.kind = SWD_JOB_CHECKPOINT;
    res.updates = 77;
    snprintf(res.path, sizeof res.path, "/ck");
    swd_control_job_done(&r->control, &res);
    const fake_sent *s = fake_last(&r->net, FAKE_REPLY);
    assert_int_equal(s->id, 12);
    j = json_loadb((const char *)s->buf, s->len, 0, NULL);
    assert_int_equal(json_integer_value(json_object_get(j, "updates")), 77);
    json_decref(j);
    res.rc = SW_EIO;
    snprintf(res.err, sizeof res.err, "disk full");
    res.tag = 13;
    swd_control_job_done(&r->control, &res);
    s = fake_last(&r->net, FAKE_REPLY);
    j = json_loadb((const char *)s->buf, s->len, 0, NULL);
    assert_int_equal(s->id, 13);
    assert_string_equal(reply_error(j), "disk full");
    json_decref(j);
    rig_free(r);
}

/* join sends a Hello to the address and answers when the Welcome (or its
 * refusal) comes; leave calls back the owner. */
static void test_join_and_leave(void **state)
{
    (void)state;
    control_rig *r = rig_new();
    assert_null(rig_say(r, "{\"cmd\":\"join\",\"addr\":\"tcp://10.0.0.9:7000\"}", 5, NULL));
    const fake_sent *q = fake_last(&r->net, FAKE_REQUEST);
    assert_non_null(q);
    assert_string_equal(q->addr, "tcp://10.0.0.9:7000");
    swd_msg m;
    fake_open(q, &m);
    assert_int_equal(m.type, SWD_MSG_HELLO);
    assert_string_equal(m.u.hello.pub_addr, "tcp://127.0.0.1:1");
    swd_msg_fini(&m);
    swd_req got;
    assert_true(swd_requests_take(&r->requests, q->id, &got));
    assert_true(got.has_ctl);
    assert_int_equal(got.ctl_id, 5);
    swd_control_answer_join(&r->control, got.ctl_id, "run id differs");
    json_t *j = json_loadb((const char *)fake_last(&r->net, FAKE_REPLY)->buf,
                           fake_last(&r->net, FAKE_REPLY)->len, 0, NULL);
    assert_string_equal(reply_error(j), "join refused or failed: run id differs");
    json_decref(j);

    r->net.fail_requests = SW_EIO; /* the Hello cannot go out: said at once */
    j = rig_say(r, "{\"cmd\":\"join\",\"addr\":\"tcp://10.0.0.9:7000\"}", 6, NULL);
    assert_non_null(strstr(reply_error(j), "cannot send a Hello"));
    json_decref(j);

    j = rig_say(r, "{\"cmd\":\"leave\"}", 7, NULL);
    assert_true(json_is_true(json_object_get(j, "ok")));
    assert_int_equal(r->leaves, 1);
    json_decref(j);
    rig_free(r);
}

/* A stream of hostile requests: each is answered exactly once, none crashes. */
static void test_bulk_garbage(void **state)
{
    (void)state;
    control_rig *r = rig_new();
    uint8_t buf[512];
    uint32_t x = 12345;
    for (size_t i = 0; i < 2000; i++) {
        size_t len = (x = x * 1103515245u + 12345u) % sizeof buf;
        for (size_t k = 0; k < len; k++)
            buf[k] = (uint8_t)((x = x * 1103515245u + 12345u) >> 16);
        if (i % 3 == 0 && len > 10) memcpy(buf, "{\"cmd\":\"", 8);
        if (r->net.n_sent > FAKE_MAX_SENT - 8) fake_net_clear(&r->net);
        size_t before = fake_count(&r->net, FAKE_REPLY);
        swd_control_on_request(&r->control, i, buf, len);
        assert_int_equal(fake_count(&r->net, FAKE_REPLY), before + 1);
        assert_int_equal(fake_last(&r->net, FAKE_REPLY)->id, i);
    }
    assert_int_equal(r->wk.n_jobs, 0);
    rig_free(r);
}

int main(void)
{
    if (sodium_init() < 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_has_every_field),
        cmocka_unit_test(test_loss_windows),
        cmocka_unit_test(test_bad_requests),
        cmocka_unit_test(test_pause_resume),
        cmocka_unit_test(test_jobs),
        cmocka_unit_test(test_join_and_leave),
        cmocka_unit_test(test_bulk_garbage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
