#include "setup.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "catchup.h"
#include "fileio.h"
#include "gpt2.h"
#include "ledger.h"
#include "log.h"
#include "runspec.h"

#define SETUP_PATH_MAX 4096

void swd_setup_warn(void *ctx, const char *msg)
{
    (void)ctx;
    swd_log(SWD_LOG_WARN, msg, NULL);
}

static int setup_fail(int exit_code, const char *what, const sw_diag *d, int rc)
{
    char msg[SETUP_PATH_MAX + SW_DIAG_MAX + 64];
    snprintf(msg, sizeof msg, "%.*s: %s", SETUP_PATH_MAX + 32, what,
             d && d->msg[0] ? d->msg : sw_strerror(rc));
    swd_log(SWD_LOG_ERROR, msg, NULL);
    return exit_code;
}

/*
 * "the run spec fixes X but the configuration gives Y" for key, naming what
 * sets the key (core/runspec.h's table: "[train] lr", "[model] path").
 */
static void setup_log_conflict(const char *file, const char *key, const sw_runspec *fixed,
                               const sw_runspec *given, const char *fixer, const char *hint)
{
    const sw_runspec_key *k = sw_runspec_find(key);
    char was[600], now[600], msg[SETUP_PATH_MAX + 1600];
    const char *what = k->type == SW_RS_HEX32 ? "digest " : "";
    sw_runspec_value_text(fixed, k, was, sizeof was);
    sw_runspec_value_text(given, k, now, sizeof now);
    if (k->config && strcmp(k->config, "[model] path") == 0)
        snprintf(msg, sizeof msg,
                 "%s: %s: %s fixes %s %s%s but this node's model has %s%s (every member "
                 "trains the same base model)",
                 file, k->config, fixer, key, what, was, what, now);
    else if (k->config)
        snprintf(msg, sizeof msg, "%s: %s: %s fixes %s but this node's configuration gives %s (%s)",
                 file, k->config, fixer, was, now, hint);
    else
        snprintf(msg, sizeof msg, "%s: %s: %s fixes %s but this swarmd would write %s (%s)", file,
                 key, fixer, was, now, hint);
    swd_log(SWD_LOG_ERROR, msg, "key=%s", key);
}

/* The run spec the configuration describes (a calibrated key may still be 0). */
static void setup_runspec(const swd_config *cfg, const sw_gpt2 *base, sw_runspec *rs)
{
    *rs = cfg->spec;
    sw_gpt2_digest(base, rs->base_digest);
    rs->arch = base->cfg;
}

/*
 * trainable_tokens = completions: the distinct tokens of the training file's
 * completions, ascending, written into the run spec as ids (so that every member
 * trains the same rows whatever its shard holds).
 */
static int setup_resolve_tokens(const swd_config *cfg, const sw_dataset *ds, sw_runspec *rs)
{
    if (strcmp(rs->trainable_tokens, "completions") != 0) return SWD_EXIT_OK;
    int32_t ids[SW_SPEC_MAX_ROWS + 1];
    int n = 0;
    for (size_t c = 0; c < ds->n_completions; c++) {
        for (int32_t j = 0; j < ds->completions[c].n_tokens; j++) {
            const int32_t t = ds->completions[c].tokens[j];
            int at = 0;
            while (at < n && ids[at] < t)
                at++;
            if (at < n && ids[at] == t) continue;
            if (n == SW_SPEC_MAX_ROWS) {
                char msg[SETUP_PATH_MAX + 160];
                snprintf(msg, sizeof msg,
                         "%s: [train] trainable_tokens = completions: the completions of %s "
                         "hold more than %d distinct tokens",
                         cfg->file, cfg->train_path, SW_SPEC_MAX_ROWS);
                swd_log(SWD_LOG_ERROR, msg, "key=train.trainable_tokens");
                return SWD_EXIT_USAGE;
            }
            memmove(ids + at + 1, ids + at, (size_t)(n - at) * sizeof ids[0]);
            ids[at] = t;
            n++;
        }
    }
    if (n == 0) {
        char msg[SETUP_PATH_MAX + 160];
        snprintf(msg, sizeof msg,
                 "%s: [train] trainable_tokens = completions: %s has no prompt/completion "
                 "record",
                 cfg->file, cfg->train_path);
        swd_log(SWD_LOG_ERROR, msg, "key=train.trainable_tokens");
        return SWD_EXIT_USAGE;
    }
    char list[SW_SPEC_MAX_ROWS * 12];
    size_t len = 0;
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(list + len, sizeof list - len, "%s%d", i ? "," : "", (int)ids[i]);
    if (len >= sizeof rs->trainable_tokens) {
        char msg[SETUP_PATH_MAX + 160];
        snprintf(msg, sizeof msg,
                 "%s: [train] trainable_tokens = completions: %d tokens need %zu bytes, more "
                 "than the run spec's %d",
                 cfg->file, n, len, SW_RUNSPEC_TRAINABLE_MAX);
        swd_log(SWD_LOG_ERROR, msg, "key=train.trainable_tokens");
        return SWD_EXIT_USAGE;
    }
    memcpy(rs->trainable_tokens, list, len + 1);
    swd_log(SWD_LOG_INFO, "trainable tokens: the completions' tokens", "tokens=%s",
            rs->trainable_tokens);
    return SWD_EXIT_OK;
}

/* A key the configuration leaves to calibration (0 in a SW_RSK_CALIBRATE key;
 * such keys are doubles: only max_scale is one). */
static bool setup_to_calibrate(const sw_runspec *rs, const sw_runspec_key *k)
{
    return (k->flags & SW_RSK_CALIBRATE) && *(const double *)((const char *)rs + k->off) == 0;
}

static void setup_trainer_config(const swd_config *cfg, const sw_runspec *rs,
                                 const sw_train_spec *spec, const uint8_t origin[SW_ID_BYTES],
                                 const bool *trainable, int threads, sw_trainer_config *tc)
{
    memset(tc, 0, sizeof *tc);
    tc->spec = *spec;
    memcpy(tc->origin, origin, SW_ID_BYTES);
    tc->eps = (float)rs->eps;
    tc->weight_decay = rs->weight_decay;
    tc->batch_size = (int)cfg->batch_size;
    tc->data_seed = cfg->seed;
    tc->scale_window = (int)rs->scale_window;
    tc->init_scale = 0;
    tc->trainable = trainable;
    tc->threads = threads;
}

/*
 * Founding node with max_scale = 0: the median |g| of a few probes on the
 * base model, divided by SW_TRAINER_CALIBRATE_DIV (sw_trainer_calibrate: 127, so the int8 clamp
 * sits at the typical |g|), becomes the run's cap. The trainer built for it is kept (its spec is
 * replaced once the run id exists).
 */
static int setup_calibrate(const swd_config *cfg, swd_setup *s, const sw_gpt2 *base, sw_runspec *rs)
{
    sw_diag d = {{0}};
    sw_identity id;
    memset(&id, 0, sizeof id);
    sw_fixed *f = NULL;
    bool *mask = NULL;
    char idpath[SETUP_PATH_MAX];
    int ex = SWD_EXIT_FAIL;
    int rc;
    /* The pattern first: a bad one must not leave a half-made state directory. */
    sw_gpt2_config model;
    sw_runspec_model_config(rs, &model);
    size_t nt = sw_gpt2_tensor_count(&model);
    mask = calloc(nt, sizeof *mask);
    if (!mask) return setup_fail(SWD_EXIT_FAIL, "calibration", NULL, SW_ENOMEM);
    if ((rc = sw_trainer_trainable(&model, rs->trainable, mask, NULL, &d)) != 0) {
        char what[SETUP_PATH_MAX + 32];
        snprintf(what, sizeof what, "%s: [train] trainable", cfg->file);
        ex = setup_fail(SWD_EXIT_USAGE, what, &d, rc);
        goto out;
    }
    if ((rc = sw_mkdir(cfg->state_dir, 0755, &d)) != 0) {
        setup_fail(SWD_EXIT_FAIL, "state directory", &d, rc);
        goto out;
    }
    if (cfg->identity)
        snprintf(idpath, sizeof idpath, "%s", cfg->identity);
    else if (sw_path_join(idpath, sizeof idpath, cfg->state_dir, "identity.key") != 0) {
        ex = setup_fail(SWD_EXIT_USAGE, "[node] state_dir: path too long", NULL, SW_ETOOBIG);
        goto out;
    }
    if ((rc = sw_identity_load_or_create(idpath, true, &id, NULL, &d)) != 0) {
        setup_fail(SWD_EXIT_FAIL, "identity", &d, rc);
        goto out;
    }
    if ((rc = sw_lora_initial_weights(base, &model, &f, &d)) != 0) {
        setup_fail(SWD_EXIT_FAIL, "calibration", &d, rc);
        goto out;
    }
    sw_train_spec spec = {0};
    spec.perturb = rs->perturb;
    spec.schedule = rs->schedule;
    spec.lr = rs->lr;
    spec.warmup_steps = rs->warmup_steps;
    spec.total_steps = rs->total_steps;
    spec.directions = rs->directions;
    spec.max_scale = 0; /* allowed only to calibrate */
    sw_trainer_config tc;
    setup_trainer_config(cfg, rs, &spec, id.pk, mask, s->threads, &tc);
    if ((rc = sw_trainer_alloc(&tc, &model, s->ds, &s->trainer, &d)) != 0) {
        setup_fail(SWD_EXIT_FAIL, "trainer", &d, rc);
        goto out;
    }
    swd_log(SWD_LOG_INFO, "calibrating max_scale", "probes=%d", SWD_CALIBRATE_PROBES);
    sw_trainer_calibration cal;
    if ((rc = sw_trainer_calibrate(s->trainer, f, SWD_CALIBRATE_PROBES, &cal, &d)) != 0) {
        setup_fail(SWD_EXIT_FAIL, "calibration", &d, rc);
        goto out;
    }
    if (!(cal.max_scale > 0) || cal.max_scale > 1e6) {
        char msg[256];
        snprintf(msg, sizeof msg,
                 "calibration gave max_scale %g (median |g| %g): set [train] max_scale by hand",
                 cal.max_scale, cal.median_abs_g);
        swd_log(SWD_LOG_ERROR, msg, NULL);
        goto out;
    }
    rs->max_scale = cal.max_scale;
    s->calibrated = true;
    s->calib_median_abs_g = cal.median_abs_g;
    swd_log(SWD_LOG_INFO, "calibrated max_scale", "max_scale=%.6g median_abs_g=%.6g probes=%d",
            cal.max_scale, cal.median_abs_g, cal.n);
    ex = SWD_EXIT_OK;
out:
    sw_fixed_free(f);
    free(mask);
    sw_identity_fini(&id);
    return ex;
}

/*
 * Existing run: the configuration must agree with the stored run spec on
 * every value it sets.  max_scale = 0 in the configuration means "whatever
 * the run fixed".
 */
static int setup_check_existing(const char *path, sw_runspec *rs)
{
    sw_diag d = {{0}};
    sw_runspec stored;
    int rc = sw_runspec_load(path, &stored, &d);
    if (rc != 0) return setup_fail(SWD_EXIT_FAIL, "run spec", &d, rc);
    for (size_t i = 0; i < sw_runspec_key_count; i++)
        if (setup_to_calibrate(rs, &sw_runspec_keys[i]))
            sw_runspec_copy_key(rs, &stored, &sw_runspec_keys[i]);
    const char *key = sw_runspec_diff(&stored, rs);
    if (!key) return SWD_EXIT_OK;
    setup_log_conflict(path, key, &stored, rs, "the run spec",
                       "a run's swarm-wide values cannot change; use a new state_dir for a new "
                       "run");
    return SWD_EXIT_USAGE;
}

/* Whether the configuration file set the [train] key of run-spec key k. */
static bool setup_given(const swd_config *cfg, const sw_runspec_key *k)
{
    const char *name = strchr(k->config, ' ') + 1; /* "[train] lr" */
    const swd_cfg_key *row = swd_config_find("train", name);
    return row && cfg->given[row - swd_config_keys];
}

/*
 * A joiner adopts the swarm's run spec.  It refuses (exit 2, naming the key)
 * when its base model differs or when its configuration SETS a swarm-wide
 * value to something else; keys it leaves out (SW_RSK_ADOPT) take the
 * swarm's values, and so does a key it leaves to calibration.
 */
static int setup_adopt(const swd_config *cfg, const sw_runspec *mine_full, const sw_runspec *swarm,
                       sw_runspec *rs)
{
    sw_runspec mine = *mine_full;
    for (size_t i = 0; i < sw_runspec_key_count; i++) {
        const sw_runspec_key *k = &sw_runspec_keys[i];
        if (!(k->flags & SW_RSK_ADOPT)) continue;
        if (!setup_given(cfg, k) || setup_to_calibrate(mine_full, k))
            sw_runspec_copy_key(&mine, swarm, k);
    }
    const char *key = sw_runspec_diff(swarm, &mine);
    if (key) {
        setup_log_conflict(cfg->file, key, swarm, &mine, "the swarm's run spec",
                           "a joiner adopts the swarm-wide values: remove the key or match it");
        return SWD_EXIT_USAGE;
    }
    *rs = *swarm;
    return SWD_EXIT_OK;
}

/* Feeds the trainer the own updates its scale policy needs after a restart. */
static int setup_resume(swd_setup *s)
{
    sw_diag d = {{0}};
    sw_state *st = s->state;
    uint64_t next = sw_state_next_step(st);
    uint64_t from = sw_trainer_resume_from(s->trainer, next);
    s->next_update = next;
    sw_update *own = NULL;
    size_t n = 0;
    if (next > from) {
        own = malloc((size_t)(next - from) * sizeof *own);
        if (!own) return setup_fail(SWD_EXIT_FAIL, "resume", NULL, SW_ENOMEM);
        for (uint64_t step = from; step < next; step++) {
            int rc = sw_ledger_get(st->ledger, st->id.pk, step, &own[n], NULL, &d);
            if (rc == 0)
                n++;
            else if (rc != SW_ENOTFOUND) {
                free(own);
                return setup_fail(SWD_EXIT_FAIL, "resume", &d, rc);
            }
        }
    }
    int rc = sw_trainer_resume(s->trainer, next, own, n, &d);
    free(own);
    if (rc != 0) return setup_fail(SWD_EXIT_FAIL, "resume", &d, rc);
    return SWD_EXIT_OK;
}

/* Installs a downloaded snapshot into a new state directory: ledger first
 * (written ahead), then the checkpoint that holds exactly those updates. */
static int setup_install_snapshot(swd_setup *s, swd_snapshot *snap)
{
    sw_diag d = {{0}};
    sw_state *st = s->state;
    if (sw_ledger_count(st->ledger) != 0) {
        swd_log(SWD_LOG_WARN, "state directory already holds updates: snapshot not used", NULL);
        return SWD_EXIT_OK;
    }
    for (size_t i = 0; i < snap->n; i++) {
        int rc = sw_update_check(&st->train, &snap->updates[i], &d);
        if (rc != 0) return setup_fail(SWD_EXIT_FAIL, "snapshot update", &d, rc);
    }
    int rc = sw_ledger_append(st->ledger, snap->updates, snap->n, &d);
    if (rc != 0) return setup_fail(SWD_EXIT_FAIL, "snapshot ledger", &d, rc);
    if ((rc = sw_state_checkpoint(st, snap->w, NULL, &d)) != 0)
        return setup_fail(SWD_EXIT_FAIL, "snapshot checkpoint", &d, rc);
    s->w = snap->w;
    snap->w = NULL;
    s->ckpt_count = snap->n;
    s->replayed = 0;
    return SWD_EXIT_OK;
}

int swd_setup_open(const swd_config *cfg, const sw_runspec *adopt, swd_snapshot *snap, swd_setup *s)
{
    memset(s, 0, sizeof *s);
    s->ckpt_count = UINT64_MAX;
    sw_diag d = {{0}};
    sw_gpt2 *base = NULL;
    int ex = SWD_EXIT_FAIL, rc;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    s->threads = cfg->threads > 0 ? (int)cfg->threads : (ncpu > 0 ? (int)ncpu : 1);

    /* 1. the base model, tokenizer and data */
    if ((rc = sw_gpt2_load(cfg->model_path, &base, &d)) != 0) {
        ex = setup_fail(SWD_EXIT_FAIL, "[model] path", &d, rc);
        goto fail;
    }
    s->n_params = base->n_params;
    if (cfg->seq_len > base->cfg.n_positions) {
        char msg[256];
        snprintf(msg, sizeof msg,
                 "%s: [train] seq_len: %" PRId64 " exceeds the model's context (%d positions)",
                 cfg->file, cfg->seq_len, base->cfg.n_positions);
        swd_log(SWD_LOG_ERROR, msg, "key=train.seq_len");
        ex = SWD_EXIT_USAGE;
        goto fail;
    }
    s->seq_len = cfg->seq_len > 0 ? (int)cfg->seq_len : base->cfg.n_positions;
    if ((rc = sw_tokenizer_load_dir(cfg->model_path, &s->tok, &d)) != 0) {
        ex = setup_fail(SWD_EXIT_FAIL, "tokenizer", &d, rc);
        goto fail;
    }
    if ((rc = sw_dataset_load(cfg->train_path, s->tok, s->seq_len, &s->ds, &d)) != 0) {
        ex = setup_fail(SWD_EXIT_FAIL, "[data] train", &d, rc);
        goto fail;
    }
    swd_log(SWD_LOG_INFO, "data loaded",
            "records=%zu dropped=%zu truncated=%zu scored_tokens=%" PRId64 " seq_len=%d",
            s->ds->n_records, s->ds->n_dropped, s->ds->n_truncated, s->ds->n_scored, s->seq_len);
    /* Validation is scored at the model's whole context, as `swarmctl model
     * eval` scores a file, so that the two report the same figures. */
    if (cfg->valid_path) {
        if ((rc = sw_dataset_load(cfg->valid_path, s->tok, base->cfg.n_positions, &s->valid, &d)) !=
            0) {
            ex = setup_fail(SWD_EXIT_FAIL, "[data] valid", &d, rc);
            goto fail;
        }
        swd_log(SWD_LOG_INFO, "validation data loaded",
                "records=%zu dropped=%zu truncated=%zu eval_every=%" PRIu64 " keep_best=%s",
                s->valid->n_records, s->valid->n_dropped, s->valid->n_truncated, cfg->eval_every,
                cfg->keep_best ? "true" : "false");
    }

    /* 2. the run spec */
    sw_runspec rs;
    setup_runspec(cfg, base, &rs);
    if ((ex = setup_resolve_tokens(cfg, s->ds, &rs)) != SWD_EXIT_OK) goto fail;
    if (adopt) {
        sw_runspec mine = rs;
        if ((ex = setup_adopt(cfg, &mine, adopt, &rs)) != SWD_EXIT_OK) goto fail;
    }
    char rs_path[SETUP_PATH_MAX];
    if (sw_path_join(rs_path, sizeof rs_path, cfg->state_dir, "runspec.json") != 0) {
        ex = setup_fail(SWD_EXIT_USAGE, "[node] state_dir: path too long", NULL, SW_ETOOBIG);
        goto fail;
    }
    struct stat st;
    if (stat(rs_path, &st) == 0) {
        if ((ex = setup_check_existing(rs_path, &rs)) != SWD_EXIT_OK) goto fail;
    } else if (errno != ENOENT) {
        char msg[SETUP_PATH_MAX + 64];
        snprintf(msg, sizeof msg, "%s: %s", rs_path, strerror(errno));
        swd_log(SWD_LOG_ERROR, msg, NULL);
        ex = SWD_EXIT_FAIL;
        goto fail;
    } else if (rs.max_scale == 0 && !adopt) {
        if ((ex = setup_calibrate(cfg, s, base, &rs)) != SWD_EXIT_OK) goto fail;
    }
    if ((rc = sw_runspec_validate(&rs, cfg->file, &d)) != 0) {
        /* The diag names the file and the run-spec key (train.trainable). */
        swd_log(SWD_LOG_ERROR, d.msg[0] ? d.msg : sw_strerror(rc), NULL);
        ex = SWD_EXIT_USAGE;
        goto fail;
    }
    /* 3. the state directory and the weights */
    sw_state_options so = {.identity_path = cfg->identity,
                           .runspec = &rs,
                           .base_model_dir = cfg->model_path,
                           .warn = swd_setup_warn};
    if ((rc = sw_state_open(cfg->state_dir, &so, &s->state, &d)) != 0) {
        ex = setup_fail(rc == SW_EMISMATCH ? SWD_EXIT_USAGE : SWD_EXIT_FAIL, "state", &d, rc);
        goto fail;
    }
    if (snap && snap->w) {
        if ((ex = setup_install_snapshot(s, snap)) != SWD_EXIT_OK) goto fail;
        if (s->w) {
            sw_gpt2_free(base);
            base = NULL;
        }
    }
    if (s->state->has_ckpt) s->ckpt_count = s->state->ckpt_meta.ledger_count;
    uint64_t count = sw_ledger_count(s->state->ledger);
    s->replayed = s->state->has_ckpt ? count - s->ckpt_count : count;
    /* With a checkpoint the weights come from it: free the float copy first so
     * peak memory stays one model.  Without one, the rebuild converts the
     * base already in memory rather than loading it again. */
    if (s->state->has_ckpt) {
        sw_gpt2_free(base);
        base = NULL;
    }
    rc = s->w ? 0 : sw_state_rebuild_from(s->state, base, s->threads, &s->w, &d);
    sw_gpt2_free(base);
    base = NULL;
    if (rc != 0) {
        ex = setup_fail(SWD_EXIT_FAIL, "rebuild", &d, rc);
        goto fail;
    }
    for (size_t i = 0; i < s->w->n_tensors; i++) {
        const sw_gpt2_tensor *t = &s->w->tensors[i];
        if (s->state->trainable && !s->state->trainable[i]) continue;
        /* a run that trains some rows of the vocabulary tensors counts only them */
        const bool rows = s->state->train.n_rows > 0 && sw_fixed_row_tensor(t->kind);
        s->n_trainable_params += rows ? (uint64_t)s->state->train.n_rows * (uint64_t)t->shape[1]
                                      : t->numel;
    }

    /* 4. the trainer, positioned after the last own update */
    if (s->trainer) {
        if ((rc = sw_trainer_set_spec(s->trainer, &s->state->train, &d)) != 0) {
            ex = setup_fail(SWD_EXIT_FAIL, "trainer", &d, rc);
            goto fail;
        }
    } else {
        sw_trainer_config tc;
        setup_trainer_config(cfg, &s->state->runspec, &s->state->train, s->state->id.pk,
                             s->state->trainable, s->threads, &tc);
        if ((rc = sw_trainer_alloc(&tc, &s->w->cfg, s->ds, &s->trainer, &d)) != 0) {
            ex = setup_fail(SWD_EXIT_FAIL, "trainer", &d, rc);
            goto fail;
        }
    }
    if ((ex = setup_resume(s)) != SWD_EXIT_OK) goto fail;
    return SWD_EXIT_OK;

fail:
    sw_gpt2_free(base);
    swd_setup_fini(s);
    return ex;
}

void swd_setup_release(swd_setup *s)
{
    s->state = NULL;
    s->w = NULL;
    s->trainer = NULL;
    s->ds = NULL;
    s->valid = NULL;
    s->tok = NULL;
}

void swd_setup_fini(swd_setup *s)
{
    sw_trainer_free(s->trainer);
    sw_dataset_free(s->ds);
    sw_dataset_free(s->valid);
    sw_tokenizer_free(s->tok);
    sw_fixed_free(s->w);
    sw_state_close(s->state);
    swd_setup_release(s);
}
