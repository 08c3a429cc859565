/* Scoring [data] valid while training (validation.h). */
#include "validation.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "eval.h"
#include "export.h"
#include "fileio.h"
#include "gpt2.h"
#include "log.h"

static double validation_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The best so far from best/validation.json (false: none usable). */
static bool validation_read_best(swd_validation *v)
{
    char path[SW_STATE_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/%s", v->rep.best_dir, SWD_VALIDATION_BEST_FILE);
    json_error_t err;
    json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &err);
    if (!j) {
        if (err.line != -1 || strstr(err.text, "No such file") == NULL)
            swd_log(SWD_LOG_WARN,
                    "best model's validation.json unreadable: the next scoring replaces it",
                    "path=%s error=%s", SWD_LOG_Q(path), SWD_LOG_Q(err.text));
        return false;
    }
    json_t *step = json_object_get(j, "step"), *loss = json_object_get(j, "loss"),
           *acc = json_object_get(j, "accuracy");
    bool ok = json_is_integer(step) && json_integer_value(step) >= 0 && json_is_number(loss) &&
              isfinite(json_number_value(loss)) && (json_is_null(acc) || json_is_number(acc));
    if (ok) {
        v->rep.has_best = v->rep.best_kept = true;
        v->rep.best_step = (uint64_t)json_integer_value(step);
        v->rep.best_loss = json_number_value(loss);
        v->rep.best_accuracy = json_is_number(acc) ? json_number_value(acc) : NAN;
    } else {
        swd_log(SWD_LOG_WARN,
                "best model's validation.json malformed: the next scoring replaces it", "path=%s",
                SWD_LOG_Q(path));
    }
    json_decref(j);
    return ok;
}

void swd_validation_init(swd_validation *v, sw_dataset *ds, uint64_t every, bool keep_best,
                         const char *state_dir, const char *base_dir, uint64_t first_step)
{
    memset(v, 0, sizeof *v);
    v->ds = ds;
    v->every = every ? every : 1;
    v->next_step = first_step;
    v->keep_best = keep_best;
    v->rep.enabled = ds != NULL;
    v->rep.loss = v->rep.accuracy = v->rep.best_loss = v->rep.best_accuracy = NAN;
    snprintf(v->base_dir, sizeof v->base_dir, "%s", base_dir);
    if (ds && keep_best) {
        snprintf(v->rep.best_dir, sizeof v->rep.best_dir, "%s/%s", state_dir,
                 SWD_VALIDATION_BEST_DIR);
        validation_read_best(v);
    }
}

void swd_validation_fini(swd_validation *v)
{
    sw_dataset_free(v->ds);
    v->ds = NULL;
}

bool swd_validation_due(const swd_validation *v, uint64_t step, bool done)
{
    if (!v->ds) return false;
    if (done) return v->rep.evals == 0 || v->rep.step != step;
    return step >= v->next_step;
}

bool swd_validation_better(const swd_valid_report *r, double loss, double accuracy)
{
    if (!isfinite(loss)) return false; /* a diverged model is never the best */
    if (!r->has_best) return true;
    if (!isnan(accuracy) && !isnan(r->best_accuracy)) {
        if (accuracy != r->best_accuracy) return accuracy > r->best_accuracy;
    }
    return loss < r->best_loss;
}

/* best/ := m, then validation.json (written last: it vouches for the model). */
static int validation_keep(swd_validation *v, const sw_gpt2 *m, uint64_t updates, sw_diag *d)
{
    /* The old model stops being vouched for before it is overwritten, so a
     * crash in between never leaves a validation.json over a torn model. */
    char path[SW_STATE_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/%s", v->rep.best_dir, SWD_VALIDATION_BEST_FILE);
    unlink(path);
    int rc = sw_export_model(m, v->base_dir, v->rep.best_dir, SW_DTYPE_F32, NULL, NULL, d);
    if (rc != 0) return rc;
    json_t *j =
        json_pack("{s:I,s:I,s:f,s:o}", "step", (json_int_t)v->rep.best_step, "updates",
                  (json_int_t)updates, "loss", v->rep.best_loss, "accuracy",
                  isnan(v->rep.best_accuracy) ? json_null() : json_real(v->rep.best_accuracy));
    char *text = j ? json_dumps(j, JSON_INDENT(2)) : NULL;
    json_decref(j);
    if (!text) return sw_diag_set(d, SW_ENOMEM, "validation.json");
    rc = sw_file_write_atomic(path, text, strlen(text), 0644, d);
    free(text);
    return rc;
}

bool swd_validation_run(swd_validation *v, const sw_fixed *w, uint64_t step, uint64_t updates)
{
    if (!v->ds) return false;
    v->next_step = (step / v->every + 1) * v->every;
    double t0 = validation_now();
    sw_diag d = {{0}};
    sw_gpt2 *m = NULL;
    sw_eval_result ev;
    int rc = sw_fixed_to_model(w, &m, &d);
    if (rc == 0) rc = sw_eval_run(m, v->ds, NULL, &ev, &d);
    if (rc != 0) {
        v->rep.failures++;
        swd_log(SWD_LOG_WARN, "validation failed", "step=%" PRIu64 " error=%s", step,
                SWD_LOG_Q(d.msg[0] ? d.msg : sw_strerror(rc)));
        sw_gpt2_free(m);
        return true;
    }
    double acc = ev.has_accuracy ? ev.accuracy : NAN;
    v->rep.evals++;
    v->rep.step = step;
    v->rep.loss = ev.loss;
    v->rep.accuracy = acc;
    bool best = swd_validation_better(&v->rep, ev.loss, acc);
    if (best) {
        v->rep.has_best = true;
        v->rep.best_step = step;
        v->rep.best_loss = ev.loss;
        v->rep.best_accuracy = acc;
        if (v->keep_best) {
            v->rep.best_kept = false; /* until the new one is complete */
            sw_diag kd = {{0}};
            int krc = validation_keep(v, m, updates, &kd);
            if (krc == 0) {
                v->rep.best_kept = true;
            } else {
                v->rep.failures++;
                swd_log(SWD_LOG_WARN, "cannot keep the best model", "dir=%s error=%s",
                        SWD_LOG_Q(v->rep.best_dir),
                        SWD_LOG_Q(kd.msg[0] ? kd.msg : sw_strerror(krc)));
            }
        }
    }
    sw_gpt2_free(m);
    v->rep.seconds = validation_now() - t0;
    char accs[32] = "none";
    if (!isnan(acc)) snprintf(accs, sizeof accs, "%.4f", acc);
    swd_log(SWD_LOG_INFO, "validation",
            "step=%" PRIu64 " loss=%.6f accuracy=%s best=%s best_step=%" PRIu64 " records=%zu "
            "seconds=%.3f",
            step, ev.loss, accs, best ? "true" : "false", v->rep.best_step, ev.records,
            v->rep.seconds);
    return true;
}
