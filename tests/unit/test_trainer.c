/*
 * trainer: the SPSA training step as the daemon drives it: update numbering
 * (n-SPSA), the scale windows and their reconstruction on resume,
 * calibration, determinism across thread counts, and a learning smoke test
 * on the bundled model (probe, then sw_fixed_apply, as a solo node does).
 * The probe's agreement with the materialised model is in test_spsa.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "dataset.h"
#include "fixed.h"
#include "gpt2.h"
#include "sw_error.h"
#include "tokenizer.h"
#include "trainer.h"
#include "update.h"

#define FIXTURE_MODEL SW_MODEL_DIR
#define TOPIC_TRAIN SW_DATA_DIR "/topic-train.jsonl"

static sw_dataset *load_data(const char *path, int max_tokens)
{
    sw_diag d;
    sw_tokenizer *tok;
    assert_int_equal(sw_tokenizer_load_dir(FIXTURE_MODEL, &tok, &d), 0);
    sw_dataset *ds;
    assert_int_equal(sw_dataset_load(path, tok, max_tokens, &ds, &d), 0);
    sw_tokenizer_free(tok);
    return ds;
}

/* A small random GPT-2 (GPT-2's vocabulary, so real data fits). */
static sw_fixed *make_fixed(void)
{
    sw_gpt2_config cfg = {.n_layer = 2,
                          .n_head = 2,
                          .n_embd = 32,
                          .n_positions = 64,
                          .vocab_size = 50257,
                          .layer_norm_epsilon = 1e-5f,
                          .tie_word_embeddings = true};
    sw_gpt2 *m;
    sw_diag d;
    assert_int_equal(sw_gpt2_alloc(&cfg, &m, &d), 0);
    sw_gpt2_init_random(m, 7);
    sw_fixed *f;
    assert_int_equal(sw_fixed_from_model(m, &f, &d), 0);
    sw_gpt2_free(m);
    return f;
}

static void base_config(sw_trainer_config *tc, int threads)
{
    memset(tc, 0, sizeof(*tc));
    for (int i = 0; i < SW_ID_BYTES; i++) {
        tc->spec.run_id[i] = (uint8_t)(3 * i + 5);
        tc->origin[i] = (uint8_t)(100 + i);
    }
    tc->spec.perturb = SW_PERTURB_RADEMACHER;
    tc->spec.schedule = SW_SCHEDULE_CONSTANT;
    tc->spec.lr = 1e-3;
    tc->spec.total_steps = 1000;
    tc->spec.directions = 1;
    tc->spec.max_scale = 0.5;
    tc->eps = 1e-3f;
    tc->batch_size = 4;
    tc->data_seed = 9;
    tc->scale_window = 2;
    tc->threads = threads;
}

/* Training step t with n directions makes updates t*n .. t*n+n-1, each the
 * probe of its own seed on step t's minibatch, quantized with the window's
 * scale. */
static void test_nspsa_numbering(void **state)
{
    (void)state;
    sw_dataset *ds = load_data(TOPIC_TRAIN, 64);
    sw_fixed *f = make_fixed();
    sw_trainer_config tc;
    base_config(&tc, 1);
    tc.spec.directions = 3;
    sw_trainer *tr, *pr;
    sw_diag d;
    assert_int_equal(sw_trainer_alloc(&tc, &f->cfg, ds, &tr, &d), 0);
    assert_int_equal(sw_trainer_alloc(&tc, &f->cfg, ds, &pr, &d), 0);
    const float s0 = sw_trainer_initial_scale(0.5, 0.0);
    assert_true(sw_trainer_scale(tr) == s0);
    sw_trainer_result res;
    for (uint64_t t = 0; t < 2; t++) {
        assert_int_equal(sw_trainer_next_step(tr), t);
        assert_int_equal(sw_trainer_step(tr, f, &res, &d), 0);
        assert_int_equal(res.step, t);
        assert_int_equal(res.n, 3);
        assert_int_equal(res.first_update, 3 * t);
        assert_true(res.scale == s0);
        assert_true(res.tokens > 0);
        double mean = 0.0;
        for (int k = 0; k < 3; k++) {
            const sw_trainer_dir *dir = &res.dirs[k];
            assert_int_equal(dir->update.step, 3 * t + (uint64_t)k);
            assert_memory_equal(dir->update.origin, tc.origin, SW_ID_BYTES);
            assert_true(dir->update.scale == s0);
            uint8_t seed[SW_ID_BYTES];
            sw_update_seed(tc.spec.run_id, tc.origin, dir->update.step, seed);
            double lp, lm;
            assert_int_equal(sw_trainer_probe(pr, f, seed, t, &lp, &lm, NULL, &d), 0);
            assert_true(lp == dir->loss_plus && lm == dir->loss_minus);
            const double g = (lp - lm) / (2.0 * (double)1e-3f);
            assert_true(g == dir->g);
            assert_int_equal(dir->update.q, sw_trainer_quantize(g, s0, seed));
            assert_int_equal(sw_update_check(&tc.spec, &dir->update, &d), 0);
            mean += 0.5 * (lp + lm) / 3.0;
        }
        assert_true(fabs(mean - res.loss) < 1e-12);
        /* directions differ */
        assert_true(res.dirs[0].loss_plus != res.dirs[1].loss_plus);
    }
    sw_trainer_free(tr);
    sw_trainer_free(pr);
    sw_fixed_free(f);
    sw_dataset_free(ds);
}

typedef struct run_log {
    sw_update u[64];
    sw_trainer_result res[16];
    sw_fixed *before[16]; /* weights before step t */
} run_log;

static void run_steps(const sw_trainer_config *tc, const sw_dataset *ds, sw_fixed *f, int steps,
                      run_log *log)
{
    sw_trainer *tr;
    sw_diag d;
    assert_int_equal(sw_trainer_alloc(tc, &f->cfg, ds, &tr, &d), 0);
    for (int t = 0; t < steps; t++) {
        assert_int_equal(sw_fixed_clone(f, &log->before[t], &d), 0);
        assert_int_equal(sw_trainer_step(tr, f, &log->res[t], &d), 0);
        const int n = log->res[t].n;
        for (int k = 0; k < n; k++)
            log->u[t * n + k] = log->res[t].dirs[k].update;
        sw_fixed_apply(f, &tc->spec, NULL, &log->u[t * n], (size_t)n, tc->threads);
    }
    sw_trainer_free(tr);
}

static void same_result(const sw_trainer_result *a, const sw_trainer_result *b)
{
    assert_int_equal(a->step, b->step);
    assert_int_equal(a->n, b->n);
    assert_true(a->scale == b->scale);
    for (int k = 0; k < a->n; k++) {
        assert_memory_equal(&a->dirs[k].update, &b->dirs[k].update, sizeof(sw_update));
        assert_true(a->dirs[k].loss_plus == b->dirs[k].loss_plus);
        assert_true(a->dirs[k].loss_minus == b->dirs[k].loss_minus);
    }
}

/* Scale windows follow the policy, and a restarted trainer fed its own
 * updates continues bit for bit (including after a torn step). */
static void test_windows_and_resume(void **state)
{
    (void)state;
    sw_dataset *ds = load_data(TOPIC_TRAIN, 64);
    sw_fixed *f = make_fixed();
    sw_trainer_config tc;
    base_config(&tc, 1);
    tc.spec.directions = 2;
    tc.spec.max_scale = 2.0; /* scale moves within its bounds */
    const int steps = 8, n = 2, W = 2;
    run_log *log = calloc(1, sizeof(*log));
    run_steps(&tc, ds, f, steps, log);
    const float s0 = sw_trainer_initial_scale(2.0, 0.0);
    for (int t = 0; t < steps; t++) {
        const int w = t / W;
        const float expect =
            w == 0 ? s0 : sw_trainer_next_scale(2.0, s0, &log->u[(w - 1) * W * n], (size_t)W * n);
        printf("step %d scale %.6g q %d %d\n", t, (double)log->res[t].scale,
               log->res[t].dirs[0].update.q, log->res[t].dirs[1].update.q);
        assert_true(log->res[t].scale == expect);
    }
    assert_true(log->res[2].scale != log->res[0].scale);

    /* resume at the start of step 3 (update 6), then at a torn step 3
     * (update 7 written, 6 and 7 known): the next step is 4 */
    const uint64_t points[2] = {6, 7};
    for (int p = 0; p < 2; p++) {
        const uint64_t next = points[p];
        const uint64_t t = (next + n - 1) / n;
        sw_trainer *tr;
        sw_diag d;
        assert_int_equal(sw_trainer_alloc(&tc, &f->cfg, ds, &tr, &d), 0);
        assert_int_equal(sw_trainer_resume_from(tr, next), (t / W - 1) * W * n);
        /* give every update before `next` plus later ones (ignored) */
        assert_int_equal(sw_trainer_resume(tr, next, log->u, (size_t)steps * n, &d), 0);
        assert_int_equal(sw_trainer_next_step(tr), t);
        sw_trainer_result res;
        if (next % n == 0) {
            for (uint64_t k = t; k < (uint64_t)steps; k++) {
                assert_int_equal(sw_trainer_step(tr, log->before[k], &res, &d), 0);
                same_result(&res, &log->res[k]);
            }
        } else {
            /* torn: window 1 holds only updates 4, 5, 6 of this ledger */
            const float expect = sw_trainer_next_scale(2.0, s0, &log->u[4], 3);
            assert_true(sw_trainer_scale(tr) == expect);
            assert_int_equal(sw_trainer_step(tr, log->before[t], &res, &d), 0);
            assert_true(res.scale == expect);
            assert_int_equal(res.first_update, 8);
            assert_true(res.dirs[0].loss_plus == log->res[t].dirs[0].loss_plus);
        }
        sw_trainer_free(tr);
    }

    /* bad resume input */
    sw_trainer *tr;
    sw_diag d;
    assert_int_equal(sw_trainer_alloc(&tc, &f->cfg, ds, &tr, &d), 0);
    sw_update bad[3] = {log->u[4], log->u[5], log->u[5]};
    assert_int_equal(sw_trainer_resume(tr, 6, bad, 3, &d), SW_EINVAL);
    assert_non_null(strstr(d.msg, "twice"));
    bad[2] = log->u[4];
    bad[2].step = 3;
    bad[2].origin[0] ^= 1;
    assert_int_equal(sw_trainer_resume(tr, 6, bad, 3, &d), SW_EINVAL);
    assert_non_null(strstr(d.msg, "not this node"));
    bad[2] = log->u[4];
    bad[2].step = 3;
    bad[2].scale = 3.0f; /* above max_scale */
    assert_int_equal(sw_trainer_resume(tr, 6, bad, 3, &d), SW_EINVAL);
    sw_trainer_free(tr);

    for (int t = 0; t < steps; t++)
        sw_fixed_free(log->before[t]);
    free(log);
    sw_fixed_free(f);
    sw_dataset_free(ds);
}

/* Two threads give the same updates and weights as one. */
static void test_threads_deterministic(void **state)
{
    (void)state;
    sw_dataset *ds = load_data(TOPIC_TRAIN, 64);
    uint8_t dg[2][SW_FIXED_DIGEST_BYTES];
    run_log *log[2];
    for (int th = 1; th <= 2; th++) {
        sw_fixed *f = make_fixed();
        sw_trainer_config tc;
        base_config(&tc, th);
        tc.spec.perturb = SW_PERTURB_GAUSSIAN;
        tc.weight_decay = 0.01;
        log[th - 1] = calloc(1, sizeof(run_log));
        run_steps(&tc, ds, f, 5, log[th - 1]);
        sw_fixed_digest(f, dg[th - 1]);
        sw_fixed_free(f);
    }
    for (int t = 0; t < 5; t++) {
        same_result(&log[0]->res[t], &log[1]->res[t]);
        assert_true(log[0]->res[t].dirs[0].wz != 0.0);
        assert_true(log[0]->res[t].dirs[0].wz == log[1]->res[t].dirs[0].wz);
    }
    assert_memory_equal(dg[0], dg[1], SW_FIXED_DIGEST_BYTES);
    for (int k = 0; k < 2; k++) {
        for (int t = 0; t < 5; t++)
            sw_fixed_free(log[k]->before[t]);
        free(log[k]);
    }
    sw_dataset_free(ds);
}

/* Calibration: probe i on step i's minibatch with the documented seed;
 * max_scale = median |g| / SW_TRAINER_CALIBRATE_DIV; position unchanged. */
static void test_calibration(void **state)
{
    (void)state;
    sw_dataset *ds = load_data(TOPIC_TRAIN, 64);
    sw_fixed *f = make_fixed();
    sw_trainer_config tc;
    base_config(&tc, 1);
    tc.spec.max_scale = 0.0;
    sw_trainer *tr;
    sw_diag d;
    assert_int_equal(sw_trainer_alloc(&tc, &f->cfg, ds, &tr, &d), 0);
    sw_trainer_calibration cal, again;
    assert_int_equal(sw_trainer_calibrate(tr, f, 5, &cal, &d), 0);
    assert_int_equal(sw_trainer_calibrate(tr, f, 5, &again, &d), 0);
    assert_memory_equal(&cal, &again, sizeof(cal));
    assert_int_equal(cal.n, 5);
    double sorted[5];
    for (int i = 0; i < 5; i++) {
        uint8_t in[22 + SW_ID_BYTES + 8];
        memcpy(in, "swarmtune-calibrate-v1", 22);
        memcpy(in + 22, tc.origin, SW_ID_BYTES);
        for (int b = 0; b < 8; b++)
            in[22 + SW_ID_BYTES + b] = (uint8_t)((uint64_t)i >> (8 * b));
        uint8_t seed[SW_ID_BYTES];
        crypto_generichash(seed, sizeof(seed), in, sizeof(in), NULL, 0);
        double lp, lm;
        assert_int_equal(sw_trainer_probe(tr, f, seed, (uint64_t)i, &lp, &lm, NULL, &d), 0);
        const double g = fabs((lp - lm) / (2.0 * (double)1e-3f));
        assert_true(g == cal.abs_g[i]);
        sorted[i] = g;
    }
    for (int i = 0; i < 5; i++) /* insertion sort */
        for (int j = i; j > 0 && sorted[j] < sorted[j - 1]; j--) {
            const double x = sorted[j];
            sorted[j] = sorted[j - 1];
            sorted[j - 1] = x;
        }
    assert_true(cal.median_abs_g == sorted[2]);
    assert_true(cal.max_scale == sorted[2] / SW_TRAINER_CALIBRATE_DIV);
    printf("calibration: median |g| %.6g, max_scale %.6g\n", cal.median_abs_g, cal.max_scale);
    assert_int_equal(sw_trainer_next_step(tr), 0);
    assert_int_equal(sw_trainer_calibrate(tr, f, 0, &cal, &d), SW_EINVAL);
    /* after calibration the spec is set and steps run */
    tc.spec.max_scale = again.max_scale;
    assert_int_equal(sw_trainer_set_spec(tr, &tc.spec, &d), 0);
    sw_trainer_result res;
    assert_int_equal(sw_trainer_step(tr, f, &res, &d), 0);
    assert_true((double)res.scale <= again.max_scale);
    sw_trainer_free(tr);
    sw_fixed_free(f);
    sw_dataset_free(ds);
}

/* Solo training on the bundled model lowers the loss of held-out-size
 * batches of the training data (completion tokens only). */
static void test_learning_smoke(void **state)
{
    (void)state;
    sw_diag d;
    sw_gpt2 *m;
    assert_int_equal(sw_gpt2_load(FIXTURE_MODEL, &m, &d), 0);
    sw_fixed *f;
    assert_int_equal(sw_fixed_from_model(m, &f, &d), 0);
    sw_dataset *ds = load_data(TOPIC_TRAIN, m->cfg.n_positions);
    sw_gpt2_free(m);
    sw_trainer_config tc;
    base_config(&tc, 1);
    tc.batch_size = 8;
    tc.scale_window = 16;
    tc.spec.lr = 3e-4;
    tc.spec.max_scale = 0.0;
    sw_trainer *tr, *ev;
    assert_int_equal(sw_trainer_alloc(&tc, &f->cfg, ds, &tr, &d), 0);
    sw_trainer_calibration cal;
    assert_int_equal(sw_trainer_calibrate(tr, f, 8, &cal, &d), 0);
    tc.spec.max_scale = cal.max_scale;
    assert_int_equal(sw_trainer_set_spec(tr, &tc.spec, &d), 0);
    sw_trainer_config ec = tc;
    ec.batch_size = 64;
    assert_int_equal(sw_trainer_alloc(&ec, &f->cfg, ds, &ev, &d), 0);
    double before, after;
    assert_int_equal(sw_trainer_loss(ev, f, 0, &before, &d), 0);
    const int steps = 120;
    sw_trainer_result res;
    double first = 0.0, last = 0.0;
    for (int t = 0; t < steps; t++) {
        assert_int_equal(sw_trainer_step(tr, f, &res, &d), 0);
        sw_update u = res.dirs[0].update;
        sw_fixed_apply(f, &tc.spec, NULL, &u, 1, 1);
        if (t < 10) first += res.loss / 10.0;
        if (t >= steps - 10) last += res.loss / 10.0;
    }
    assert_int_equal(sw_trainer_loss(ev, f, 0, &after, &d), 0);
    printf("learning: max_scale %.4g; %d steps (batch 8, lr 3e-4): minibatch loss %.3f -> %.3f, "
           "64-record loss %.3f -> %.3f, saturations %llu\n",
           cal.max_scale, steps, first, last, before, after, (unsigned long long)f->saturations);
    assert_true(after < before - 1.0);
    assert_true(last < first - 1.0);
    sw_trainer_free(tr);
    sw_trainer_free(ev);
    sw_fixed_free(f);
    sw_dataset_free(ds);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nspsa_numbering),       cmocka_unit_test(test_windows_and_resume),
        cmocka_unit_test(test_threads_deterministic), cmocka_unit_test(test_calibration),
        cmocka_unit_test(test_learning_smoke),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
