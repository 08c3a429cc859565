/*
 * bench_spsa: SPSA training steps in-process (sw_trainer_step, then
 * sw_fixed_apply of the step's own updates, as a solo node does), with the
 * process's peak RSS.  One configuration per process; bench_spsa.py runs the
 * grid against PyTorch MeZO and prints the ratios.  Also a small training
 * tool for choosing defaults (--eval: loss and accuracy before and after).
 *
 *   bench_spsa MODEL_DIR DATA.jsonl [--threads N] [--batch B] [--seq T]
 *              [--steps S] [--warmup W] [--lr X] [--eps X] [--max-scale X]
 *              [--directions N] [--window N] [--trainable RE] [--gaussian]
 *              [--seed N] [--eval TEST.jsonl] [--log N] [--dump-batches FILE]
 *              [--tokenizer DIR] [--seconds S]
 *
 * --max-scale 0 calibrates it (8 probes).  --dump-batches writes the first
 * S + W minibatches (tokens, lengths, scored mask) as JSON lines and exits, so
 * that the PyTorch side runs on exactly the same data.
 *
 * Prints one JSON object: steps_per_s, seconds, steps, peak_rss_mb (whole
 * run), step_rss_mb (peak while stepping), loss_first/loss_last (the mean of
 * L+ and L- over the first and last 10 timed steps), forward_share.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "dataset.h"
#include "eval.h"
#include "fixed.h"
#include "gpt2.h"
#include "sw_error.h"
#include "tokenizer.h"
#include "trainer.h"

static double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* VmHWM of this process in MB, after optionally resetting it. */
static double bench_hwm_mb(int reset)
{
    if (reset) {
        FILE *f = fopen("/proc/self/clear_refs", "w");
        if (f) {
            fputs("5", f);
            fclose(f);
        }
        return 0.0;
    }
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1.0;
    char line[256];
    double mb = -1.0;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmHWM:", 6) == 0) mb = strtod(line + 6, NULL) / 1024.0;
    fclose(f);
    return mb;
}

static int bench_eval(const sw_fixed *w, const sw_dataset *test, sw_eval_result *r)
{
    sw_gpt2 *m = NULL;
    sw_diag diag = {{0}};
    int rc = sw_fixed_to_model(w, &m, &diag);
    if (rc == 0) {
        sw_eval_opts o;
        sw_eval_opts_init(&o);
        o.batch_size = 16;
        rc = sw_eval_run(m, test, &o, r, &diag);
    }
    if (rc != 0) fprintf(stderr, "bench_spsa: eval: %s\n", diag.msg);
    sw_gpt2_free(m);
    return rc;
}

static int bench_dump(const sw_dataset *ds, uint64_t seed, int B, int n, const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    size_t idx[SW_TRAINER_MAX_BATCH];
    for (int s = 0; s < n; s++) {
        if (sw_trainer_batch_indices(seed, ds->n_records, (uint64_t)s, B, idx) != 0) return -1;
        const int T = sw_dataset_batch_len(ds, idx, B);
        int32_t *tok = malloc((size_t)B * T * sizeof(int32_t));
        int32_t *len = malloc((size_t)B * sizeof(int32_t));
        uint8_t *mask = malloc((size_t)B * T);
        if (!tok || !len || !mask) return -1;
        sw_dataset_fill_batch(ds, idx, B, T, tok, len, mask);
        fprintf(f, "{\"T\":%d,\"tokens\":[", T);
        for (int i = 0; i < B * T; i++)
            fprintf(f, "%s%d", i ? "," : "", (int)tok[i]);
        fprintf(f, "],\"lengths\":[");
        for (int i = 0; i < B; i++)
            fprintf(f, "%s%d", i ? "," : "", (int)len[i]);
        fprintf(f, "],\"mask\":[");
        for (int i = 0; i < B * T; i++)
            fprintf(f, "%s%d", i ? "," : "", (int)mask[i]);
        fprintf(f, "]}\n");
        free(tok);
        free(len);
        free(mask);
    }
    return fclose(f);
}

int main(int argc, char **argv)
{
    const char *dir = NULL, *data = NULL, *test_path = NULL, *dump = NULL, *trainable_re = NULL;
    const char *tok_dir = NULL;
    int threads = 1, B = 8, T = 0, steps = 10, warmup = 1, dirs = 1, window = 16, log_every = 0;
    double lr = 1e-4, eps = 1e-3, max_scale = 0.0, wd = 0.0, min_seconds = 0.0;
    uint64_t seed = 1;
    sw_perturb dist = SW_PERTURB_RADEMACHER;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int used = 1;
        if (strcmp(a, "--threads") == 0 && v)
            threads = atoi(v);
        else if (strcmp(a, "--batch") == 0 && v)
            B = atoi(v);
        else if (strcmp(a, "--seq") == 0 && v)
            T = atoi(v);
        else if (strcmp(a, "--steps") == 0 && v)
            steps = atoi(v);
        else if (strcmp(a, "--warmup") == 0 && v)
            warmup = atoi(v);
        else if (strcmp(a, "--directions") == 0 && v)
            dirs = atoi(v);
        else if (strcmp(a, "--window") == 0 && v)
            window = atoi(v);
        else if (strcmp(a, "--log") == 0 && v)
            log_every = atoi(v);
        else if (strcmp(a, "--lr") == 0 && v)
            lr = strtod(v, NULL);
        else if (strcmp(a, "--eps") == 0 && v)
            eps = strtod(v, NULL);
        else if (strcmp(a, "--seconds") == 0 && v)
            min_seconds = strtod(v, NULL);
        else if (strcmp(a, "--max-scale") == 0 && v)
            max_scale = strtod(v, NULL);
        else if (strcmp(a, "--weight-decay") == 0 && v)
            wd = strtod(v, NULL);
        else if (strcmp(a, "--seed") == 0 && v)
            seed = strtoull(v, NULL, 10);
        else if (strcmp(a, "--eval") == 0 && v)
            test_path = v;
        else if (strcmp(a, "--tokenizer") == 0 && v)
            tok_dir = v;
        else if (strcmp(a, "--trainable") == 0 && v)
            trainable_re = v;
        else if (strcmp(a, "--dump-batches") == 0 && v)
            dump = v;
        else if (strcmp(a, "--gaussian") == 0) {
            dist = SW_PERTURB_GAUSSIAN;
            used = 0;
        } else if (a[0] != '-' && !dir) {
            dir = a;
            used = 0;
        } else if (a[0] != '-' && !data) {
            data = a;
            used = 0;
        } else {
            fprintf(stderr, "bench_spsa: bad argument '%s' (see the source's header)\n", a);
            return 2;
        }
        i += used;
    }
    if (!dir || !data || threads < 1 || B < 1 || B > SW_TRAINER_MAX_BATCH || steps < 1 ||
        warmup < 0) {
        fprintf(stderr, "usage: bench_spsa MODEL_DIR DATA.jsonl [options]\n");
        return 2;
    }
    sw_diag diag = {{0}};
    sw_gpt2 *m = NULL;
    sw_tokenizer *tok = NULL;
    sw_dataset *ds = NULL, *test = NULL;
    sw_fixed *w = NULL;
    sw_trainer *tr = NULL;
    bool *mask = NULL;
    int rc = sw_gpt2_load(dir, &m, &diag);
    if (rc == 0) rc = sw_tokenizer_load_dir(tok_dir ? tok_dir : dir, &tok, &diag);
    const int P = m ? m->cfg.n_positions : 0;
    if (T <= 0 || T > P) T = P;
    if (rc == 0) rc = sw_dataset_load(data, tok, T, &ds, &diag);
    if (rc == 0 && test_path) rc = sw_dataset_load(test_path, tok, P, &test, &diag);
    if (rc != 0) goto fail;
    if (dump) {
        rc = bench_dump(ds, seed, B, steps + warmup, dump);
        goto done;
    }
    const sw_gpt2_config cfg = m->cfg;
    rc = sw_fixed_from_model(m, &w, &diag);
    if (rc != 0) goto fail;
    sw_gpt2_free(m);
    m = NULL;
    mask = calloc(sw_gpt2_tensor_count(&cfg), sizeof(bool));
    if (!mask) goto fail;
    uint64_t n_train = 0;
    rc = sw_trainer_trainable(&cfg, trainable_re, mask, &n_train, &diag);
    if (rc != 0) goto fail;

    sw_trainer_config tc;
    memset(&tc, 0, sizeof(tc));
    memset(tc.spec.run_id, 0x5a, SW_ID_BYTES);
    tc.spec.perturb = dist;
    tc.spec.schedule = SW_SCHEDULE_CONSTANT;
    tc.spec.lr = lr;
    tc.spec.total_steps = (uint64_t)(steps + warmup);
    tc.spec.directions = dirs;
    tc.spec.max_scale = max_scale;
    memset(tc.origin, 0xa5, SW_ID_BYTES);
    tc.eps = (float)eps;
    tc.weight_decay = wd;
    tc.batch_size = B;
    tc.data_seed = seed;
    tc.scale_window = window;
    tc.trainable = mask;
    tc.threads = threads;
    rc = sw_trainer_alloc(&tc, &cfg, ds, &tr, &diag);
    if (rc != 0) goto fail;
    if (max_scale <= 0.0) {
        sw_trainer_calibration cal;
        rc = sw_trainer_calibrate(tr, w, 8, &cal, &diag);
        if (rc != 0) goto fail;
        fprintf(stderr, "calibration: median |g| %.4g -> max_scale %.4g\n", cal.median_abs_g,
                cal.max_scale);
        tc.spec.max_scale = cal.max_scale;
        rc = sw_trainer_set_spec(tr, &tc.spec, &diag);
        if (rc != 0) goto fail;
    }
    sw_eval_result ev0 = {0}, ev1 = {0};
    if (test && bench_eval(w, test, &ev0) != 0) goto fail;

    double t0 = 0.0, fwd = 0.0, load_rss = 0.0;
    int clipped = 0, total_q = 0, done = 0;
    double *losses = NULL;
    size_t cap = 0;
    for (int s = 0;; s++) {
        if (s == warmup) {
            load_rss = bench_hwm_mb(0); /* clear_refs resets ru_maxrss too */
            bench_hwm_mb(1);
            t0 = bench_now();
        }
        if (s >= warmup + steps && bench_now() - t0 >= min_seconds) break;
        sw_trainer_result res;
        rc = sw_trainer_step(tr, w, &res, &diag);
        if (rc != 0) goto fail;
        sw_update u[SW_TRAINER_MAX_DIRECTIONS];
        for (int d = 0; d < res.n; d++) {
            u[d] = res.dirs[d].update;
            clipped += u[d].q == 127 || u[d].q == -127;
            total_q++;
        }
        sw_fixed_apply(w, &tc.spec, mask, u, (size_t)res.n, threads);
        if (s >= warmup) {
            fwd += res.seconds_forward;
            if ((size_t)done == cap) {
                cap = cap ? 2 * cap : 64;
                double *nl = realloc(losses, cap * sizeof(double));
                if (!nl) goto fail;
                losses = nl;
            }
            losses[done++] = res.loss;
        }
        if (log_every > 0 && s % log_every == 0)
            fprintf(stderr,
                    "step %d loss %.4f L+ %.4f L- %.4f g %.4g q %d scale %.4g tokens %lld %.3fs\n",
                    s, res.loss, res.dirs[0].loss_plus, res.dirs[0].loss_minus, res.dirs[0].g,
                    res.dirs[0].update.q, (double)res.scale, (long long)res.tokens, res.seconds);
    }
    double first = 0.0, last = 0.0;
    const int k10 = done < 10 ? done : 10;
    for (int i = 0; i < k10; i++) {
        first += losses[i] / k10;
        last += losses[done - k10 + i] / k10;
    }
    free(losses);
    const double secs = bench_now() - t0;
    const double step_rss = bench_hwm_mb(0);
    if (test && bench_eval(w, test, &ev1) != 0) goto fail;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double peak = (double)ru.ru_maxrss / 1024.0;
    if (load_rss > peak) peak = load_rss;
    printf("{\"steps_per_s\": %.6g, \"seconds\": %.4f, \"steps\": %d, \"peak_rss_mb\": %.1f, "
           "\"step_rss_mb\": %.1f, \"loss_first\": %.6g, \"loss_last\": %.6g, "
           "\"forward_share\": %.4f, \"clipped\": %.4f, \"trainable_params\": %llu, "
           "\"saturations\": %llu",
           done / secs, secs, done, peak, step_rss, first, last, fwd / secs,
           (double)clipped / (total_q ? total_q : 1), (unsigned long long)n_train,
           (unsigned long long)w->saturations);
    if (test)
        printf(
            ", \"test_loss_before\": %.6g, \"test_loss_after\": %.6g, \"test_acc_before\": %.4f, "
            "\"test_acc_after\": %.4f",
            ev0.loss, ev1.loss, ev0.accuracy, ev1.accuracy);
    printf("}\n");
    goto done;
fail:
    if (rc == 0) rc = SW_ENOMEM;
    fprintf(stderr, "bench_spsa: %s\n", diag.msg[0] ? diag.msg : sw_strerror(rc));
done:
    sw_trainer_free(tr);
    free(mask);
    sw_fixed_free(w);
    sw_dataset_free(test);
    sw_dataset_free(ds);
    sw_tokenizer_free(tok);
    sw_gpt2_free(m);
    return rc == 0 ? 0 : 1;
}
