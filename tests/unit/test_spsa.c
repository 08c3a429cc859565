/*
 * spsa: the probe of trainer.c against the materialised model, and the pure
 * functions of the SPSA step (quantization, scale policy, data order,
 * trainable selection).  The step itself (numbering, resume, calibration,
 * learning) is in test_trainer.c.
 *
 * The reference for a probe is the whole perturbed model W + eps z built
 * in float (sw_fixed_dequant_pm over every tensor, z = 0 outside the
 * trainable mask) and scored by sw_gpt2_forward + sw_gpt2_nll: the lockstep
 * probe must give the same losses bit for bit.
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

#include "dataset.h"
#include "fixed.h"
#include "gpt2.h"
#include "gpt2_forward.h"
#include "sw_error.h"
#include "tokenizer.h"
#include "trainer.h"
#include "update.h"

#define FIXTURE_MODEL SW_MODEL_DIR
#define TOPIC_TRAIN SW_DATA_DIR "/topic-train.jsonl"
#define TASK_TRAIN SW_DATA_DIR "/task-train.jsonl"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

static float rndu(void)
{
    return (float)rnd() / 2147483648.0f - 1.0f;
}

/* A small random GPT-2 with GPT-2's vocabulary (so real data fits). */
static sw_fixed *make_fixed(bool tied, int P)
{
    sw_gpt2_config cfg = {.n_layer = 2,
                          .n_head = 2,
                          .n_embd = 32,
                          .n_positions = P,
                          .vocab_size = 50257,
                          .layer_norm_epsilon = 1e-5f,
                          .tie_word_embeddings = tied};
    sw_gpt2 *m;
    sw_diag d;
    assert_int_equal(sw_gpt2_alloc(&cfg, &m, &d), 0);
    for (size_t i = 0; i < sw_gpt2_tensor_count(&cfg); i++) {
        sw_gpt2_tensor t;
        sw_gpt2_tensor_at(&cfg, i, &t);
        float *x = m->params + t.offset;
        for (size_t j = 0; j < t.numel; j++) {
            if (t.kind == SW_GPT2_LN1_W || t.kind == SW_GPT2_LN2_W || t.kind == SW_GPT2_LNF_W)
                x[j] = 1.0f + 0.2f * rndu();
            else if (t.ndim == 1)
                x[j] = 0.1f * rndu();
            else
                x[j] = 2.0f * rndu() / sqrtf((float)t.shape[0]);
        }
    }
    sw_fixed *f;
    assert_int_equal(sw_fixed_from_model(m, &f, &d), 0);
    sw_gpt2_free(m);
    return f;
}

static sw_dataset *load_data(const char *path, int max_tokens)
{
    sw_diag d;
    sw_tokenizer *tok;
    assert_int_equal(sw_tokenizer_load_dir(FIXTURE_MODEL, &tok, &d), 0);
    sw_dataset *ds;
    int rc = sw_dataset_load(path, tok, max_tokens, &ds, &d);
    if (rc != 0) fprintf(stderr, "%s\n", d.msg);
    assert_int_equal(rc, 0);
    sw_tokenizer_free(tok);
    return ds;
}

static void base_config(sw_trainer_config *tc, sw_perturb dist, int threads, const bool *mask)
{
    memset(tc, 0, sizeof(*tc));
    for (int i = 0; i < SW_ID_BYTES; i++) {
        tc->spec.run_id[i] = (uint8_t)(i * 7 + 1);
        tc->origin[i] = (uint8_t)(200 - i);
    }
    tc->spec.perturb = dist;
    tc->spec.schedule = SW_SCHEDULE_CONSTANT;
    tc->spec.lr = 1e-4;
    tc->spec.total_steps = 1000;
    tc->spec.directions = 1;
    tc->spec.max_scale = 1.0;
    tc->eps = 1e-3f;
    tc->batch_size = 4;
    tc->data_seed = 42;
    tc->scale_window = 4;
    tc->trainable = mask;
    tc->threads = threads;
}

/* When set, ref_loss perturbs only these rows of the vocabulary tensors. */
static const sw_train_spec *ref_rows;

/*
 * Loss of W + sign * eps z on the minibatch of data_step, through the whole
 * float model and the public forward pass.
 */
static double ref_loss(const sw_fixed *f, const uint8_t *seed, sw_perturb dist, float eps, int sign,
                       const bool *mask, const sw_dataset *ds, uint64_t data_seed, uint64_t step,
                       int B)
{
    sw_diag d;
    sw_gpt2 *m;
    assert_int_equal(sw_gpt2_alloc(&f->cfg, &m, &d), 0);
    int16_t *z = malloc(f->n_params * sizeof(int16_t));
    float *minus = malloc(f->n_params * sizeof(float));
    assert_non_null(z);
    assert_non_null(minus);
    for (size_t i = 0; i < f->n_tensors; i++) {
        const sw_gpt2_tensor *t = &f->tensors[i];
        if (seed && (!mask || mask[i])) {
            sw_zstream(seed, dist, t->offset, t->numel, z + t->offset);
            if (ref_rows && ref_rows->n_rows > 0 && sw_fixed_row_tensor(t->kind))
                for (int64_t r = 0; r < t->shape[0]; r++)
                    if (!sw_train_spec_row(ref_rows, r))
                        memset(z + t->offset + (size_t)r * (size_t)t->shape[1], 0,
                               (size_t)t->shape[1] * sizeof(int16_t));
            sw_fixed_dequant_pm(f, t->offset, t->numel, z + t->offset, eps, m->params + t->offset,
                                minus + t->offset);
            if (sign < 0)
                memcpy(m->params + t->offset, minus + t->offset, t->numel * sizeof(float));
        } else {
            sw_fixed_dequant_pm(f, t->offset, t->numel, NULL, 0.0f, m->params + t->offset, NULL);
        }
    }
    free(z);
    free(minus);
    size_t idx[64];
    assert_int_equal(sw_trainer_batch_indices(data_seed, ds->n_records, step, B, idx), 0);
    const int T = sw_dataset_batch_len(ds, idx, B);
    int32_t *tokens = malloc((size_t)B * T * sizeof(int32_t));
    int32_t lengths[64];
    uint8_t *msk = malloc((size_t)B * T);
    float *nll = malloc((size_t)B * T * sizeof(float));
    sw_dataset_fill_batch(ds, idx, B, T, tokens, lengths, msk);
    sw_gpt2_acts *a;
    assert_int_equal(sw_gpt2_acts_alloc(&m->cfg, B, T, &a, &d), 0);
    assert_int_equal(sw_gpt2_forward(m, a, tokens, lengths, B, T, &d), 0);
    double sum;
    int64_t count;
    assert_int_equal(
        sw_gpt2_nll(a, &m->cfg, m->w.lm_head, tokens, lengths, msk, B, T, nll, &sum, &count, &d),
        0);
    assert_true(count > 0);
    sw_gpt2_acts_free(a);
    free(tokens);
    free(msk);
    free(nll);
    sw_gpt2_free(m);
    return sum / (double)count;
}

static void seed_of(int k, uint8_t seed[SW_ID_BYTES])
{
    uint8_t run[SW_ID_BYTES] = {1}, origin[SW_ID_BYTES] = {2};
    sw_update_seed(run, origin, (uint64_t)k, seed);
}

/* The lockstep probe equals the materialised model bit for bit, in every
 * combination of head tying, distribution and thread count. */
static void test_probe_matches_materialised(void **state)
{
    (void)state;
    sw_dataset *ds = load_data(TOPIC_TRAIN, 64);
    for (int tied = 0; tied < 2; tied++) {
        sw_fixed *f = make_fixed(tied, 64);
        for (int dist = 0; dist < 2; dist++) {
            double lp[2], lm[2];
            uint8_t seed[SW_ID_BYTES];
            seed_of(tied * 2 + dist, seed);
            for (int threads = 1; threads <= 2; threads++) {
                sw_trainer_config tc;
                base_config(&tc, (sw_perturb)dist, threads, NULL);
                tc.eps = 1e-2f;
                sw_trainer *tr;
                sw_diag d;
                assert_int_equal(sw_trainer_alloc(&tc, &f->cfg, ds, &tr, &d), 0);
                assert_int_equal(
                    sw_trainer_probe(tr, f, seed, 3, &lp[threads - 1], &lm[threads - 1], NULL, &d),
                    0);
                sw_trainer_free(tr);
            }
            const double rp = ref_loss(f, seed, (sw_perturb)dist, 1e-2f, 1, NULL, ds, 42, 3, 4);
            const double rm = ref_loss(f, seed, (sw_perturb)dist, 1e-2f, -1, NULL, ds, 42, 3, 4);
            printf("tied %d %s: L+ %.9f (ref %.9f) L- %.9f (ref %.9f)\n", tied,
                   sw_perturb_name((sw_perturb)dist), lp[0], rp, lm[0], rm);
            assert_true(lp[0] == rp && lm[0] == rm);
            assert_true(lp[1] == rp && lm[1] == rm); /* threads 2 */
            assert_true(lp[0] != lm[0]);             /* the perturbation is real */
        }
        sw_fixed_free(f);
    }
    sw_dataset_free(ds);
}

/* trainable_tokens: only the listed rows of wte are perturbed (the probe equals the
 * reference with z = 0 on every other row, for one and two threads) and written
 * by the sweep (every other parameter keeps its bits). */
static void test_trainable_rows(void **state)
{
    (void)state;
    sw_dataset *ds = load_data(TOPIC_TRAIN, 64);
    sw_fixed *f = make_fixed(true, 64);
    bool *mask = calloc(f->n_tensors, sizeof(bool));
    sw_diag d;
    assert_int_equal(sw_trainer_trainable(&f->cfg, "^wte|ln_f", mask, NULL, &d), 0);
    uint8_t seed[SW_ID_BYTES];
    seed_of(11, seed);
    sw_trainer_config tc;
    base_config(&tc, SW_PERTURB_RADEMACHER, 1, mask);
    /* rows the batch uses and rows it does not, the last row of the vocabulary too */
    size_t idx[4];
    assert_int_equal(sw_trainer_batch_indices(42, ds->n_records, 0, 4, idx), 0);
    const int32_t used = ds->records[idx[0]].tokens[1];
    const int32_t cand[] = {3, used, 7000, f->cfg.vocab_size - 1};
    for (int i = 0; i < 4; i++)
        if (tc.spec.n_rows == 0 || cand[i] > tc.spec.rows[tc.spec.n_rows - 1])
            tc.spec.rows[tc.spec.n_rows++] = cand[i];
    double got[2][2];
    for (int threads = 1; threads <= 2; threads++) {
        tc.threads = threads;
        sw_trainer *tr;
        assert_int_equal(sw_trainer_alloc(&tc, &f->cfg, ds, &tr, &d), 0);
        assert_int_equal(
            sw_trainer_probe(tr, f, seed, 0, &got[threads - 1][0], &got[threads - 1][1], NULL, &d),
            0);
        sw_trainer_free(tr);
    }
    ref_rows = &tc.spec;
    const double rp = ref_loss(f, seed, SW_PERTURB_RADEMACHER, 1e-3f, 1, mask, ds, 42, 0, 4);
    const double rm = ref_loss(f, seed, SW_PERTURB_RADEMACHER, 1e-3f, -1, mask, ds, 42, 0, 4);
    ref_rows = NULL;
    const double all_rows = ref_loss(f, seed, SW_PERTURB_RADEMACHER, 1e-3f, 1, mask, ds, 42, 0, 4);
    for (int k = 0; k < 2; k++)
        assert_true(got[k][0] == rp && got[k][1] == rm);
    assert_true(all_rows != rp);

    /* the sweep: only the listed rows of wte (and ln_f) change */
    sw_fixed *g;
    assert_int_equal(sw_fixed_clone(f, &g, &d), 0);
    sw_update u[3];
    for (int i = 0; i < 3; i++) {
        memset(&u[i], 0, sizeof u[i]);
        memcpy(u[i].origin, tc.origin, SW_ID_BYTES);
        u[i].step = (uint64_t)i;
        u[i].q = (int8_t)(40 - 30 * i);
        u[i].scale = 0.5f;
    }
    for (int threads = 1; threads <= 2; threads++) {
        sw_fixed *h;
        assert_int_equal(sw_fixed_clone(f, &h, &d), 0);
        sw_fixed_apply(h, &tc.spec, mask, u, 3, threads);
        if (threads == 1) {
            memcpy(g->w, h->w, f->n_params * sizeof(int32_t));
        } else {
            assert_memory_equal(g->w, h->w, f->n_params * sizeof(int32_t));
        }
        sw_fixed_free(h);
    }
    const sw_gpt2_tensor *wte = &f->tensors[0];
    const size_t C = (size_t)wte->shape[1];
    for (int64_t r = 0; r < wte->shape[0]; r++) {
        const size_t o = wte->offset + (size_t)r * C;
        const int same = memcmp(g->w + o, f->w + o, C * sizeof(int32_t)) == 0;
        assert_int_equal(same, !sw_train_spec_row(&tc.spec, r));
    }
    for (size_t i = 1; i < f->n_tensors; i++) {
        const sw_gpt2_tensor *t = &f->tensors[i];
        const int same = memcmp(g->w + t->offset, f->w + t->offset, t->numel * sizeof(int32_t)) == 0;
        assert_int_equal(same, !mask[i]);
    }
    sw_fixed_free(g);
    free(mask);
    sw_fixed_free(f);
    sw_dataset_free(ds);
}

/* Only trainable tensors move: the probe equals the reference with z = 0
 * outside the mask (and differs from the unmasked one); the regex selects
 * by canonical name. */
static void test_trainable_mask(void **state)
{
    (void)state;
    sw_dataset *ds = load_data(TOPIC_TRAIN, 64);
    sw_fixed *f = make_fixed(true, 64);
    bool *mask = calloc(f->n_tensors, sizeof(bool));
    sw_diag d;
    uint64_t np = 0;
    assert_int_equal(sw_trainer_trainable(&f->cfg, "^h\\.1\\.|ln_f", mask, &np, &d), 0);
    uint64_t expect = 0;
    for (size_t i = 0; i < f->n_tensors; i++) {
        const bool sel = f->tensors[i].layer == 1 || f->tensors[i].kind == SW_GPT2_LNF_W ||
                         f->tensors[i].kind == SW_GPT2_LNF_B;
        assert_int_equal(mask[i], sel);
        if (sel) expect += f->tensors[i].numel;
    }
    assert_int_equal(np, expect);
    uint8_t seed[SW_ID_BYTES];
    seed_of(9, seed);
    sw_trainer_config tc;
    base_config(&tc, SW_PERTURB_RADEMACHER, 1, mask);
    sw_trainer *tr;
    assert_int_equal(sw_trainer_alloc(&tc, &f->cfg, ds, &tr, &d), 0);
    double lp, lm, l0;
    assert_int_equal(sw_trainer_probe(tr, f, seed, 0, &lp, &lm, NULL, &d), 0);
    assert_int_equal(sw_trainer_loss(tr, f, 0, &l0, &d), 0);
    sw_trainer_free(tr);
    const double rp = ref_loss(f, seed, SW_PERTURB_RADEMACHER, 1e-3f, 1, mask, ds, 42, 0, 4);
    const double rm = ref_loss(f, seed, SW_PERTURB_RADEMACHER, 1e-3f, -1, mask, ds, 42, 0, 4);
    const double r0 = ref_loss(f, NULL, SW_PERTURB_RADEMACHER, 0.0f, 1, NULL, ds, 42, 0, 4);
    assert_true(lp == rp && lm == rm && l0 == r0);
    /* the unmasked reference is another function */
    const double full = ref_loss(f, seed, SW_PERTURB_RADEMACHER, 1e-3f, 1, NULL, ds, 42, 0, 4);
    assert_true(full != rp);

    /* a mask that selects only ln_f.bias: the + and - passes share every layer */
    assert_int_equal(sw_trainer_trainable(&f->cfg, "^ln_f\\.bias$", mask, &np, &d), 0);
    assert_int_equal(np, 32);
    assert_int_equal(sw_trainer_trainable(&f->cfg, "(", mask, &np, &d), SW_EINVAL);
    assert_non_null(strstr(d.msg, "("));
    assert_int_equal(sw_trainer_trainable(&f->cfg, "^nothing$", mask, &np, &d), SW_EINVAL);
    assert_non_null(strstr(d.msg, "selects no tensor"));
    assert_int_equal(sw_trainer_trainable(&f->cfg, "", mask, &np, &d), 0);
    assert_int_equal(np, f->n_params);
    free(mask);
    sw_fixed_free(f);
    sw_dataset_free(ds);
}

/* Probes and steps only read W: its digest is unchanged. */
static void test_weights_untouched(void **state)
{
    (void)state;
    sw_dataset *ds = load_data(TOPIC_TRAIN, 64);
    sw_fixed *f = make_fixed(true, 64);
    uint8_t before[SW_FIXED_DIGEST_BYTES], after[SW_FIXED_DIGEST_BYTES];
    sw_fixed_digest(f, before);
    sw_trainer_config tc;
    base_config(&tc, SW_PERTURB_GAUSSIAN, 2, NULL);
    tc.spec.directions = 2;
    tc.weight_decay = 0.1;
    sw_trainer *tr;
    sw_diag d;
    assert_int_equal(sw_trainer_alloc(&tc, &f->cfg, ds, &tr, &d), 0);
    sw_trainer_result res;
    for (int i = 0; i < 3; i++)
        assert_int_equal(sw_trainer_step(tr, f, &res, &d), 0);
    sw_trainer_free(tr);
    sw_fixed_digest(f, after);
    assert_memory_equal(before, after, sizeof(before));
    assert_int_equal(f->saturations, 0);
    sw_fixed_free(f);
    sw_dataset_free(ds);
}

/* <w, z> of the weight-decay term: exact integer sums against a double sum
 * over the float weights, over the 2-D trainable tensors only. */
static void test_weight_decay_projection(void **state)
{
    (void)state;
    sw_dataset *ds = load_data(TOPIC_TRAIN, 64);
    sw_fixed *f = make_fixed(false, 64);
    float *wf = malloc(f->n_params * sizeof(float));
    int16_t *z = malloc(f->n_params * sizeof(int16_t));
    sw_fixed_to_float(f, wf);
    uint8_t seed[SW_ID_BYTES];
    seed_of(5, seed);
    for (int dist = 0; dist < 2; dist++) {
        sw_zstream(seed, (sw_perturb)dist, 0, f->n_params, z);
        double expect = 0.0, all = 0.0;
        for (size_t i = 0; i < f->n_tensors; i++) {
            const sw_gpt2_tensor *t = &f->tensors[i];
            for (size_t j = t->offset; j < t->offset + t->numel; j++) {
                const double v = (double)wf[j] * (double)z[j] / 8192.0;
                all += v;
                if (t->ndim == 2) expect += v;
            }
        }
        sw_trainer_config tc;
        base_config(&tc, (sw_perturb)dist, 1, NULL);
        tc.weight_decay = 0.5;
        sw_trainer *tr;
        sw_diag d;
        assert_int_equal(sw_trainer_alloc(&tc, &f->cfg, ds, &tr, &d), 0);
        double lp, lm, wz;
        assert_int_equal(sw_trainer_probe(tr, f, seed, 0, &lp, &lm, &wz, &d), 0);
        sw_trainer_free(tr);
        printf("%s: <w,z> %.9g expected %.9g (all tensors %.9g)\n",
               sw_perturb_name((sw_perturb)dist), wz, expect, all);
        assert_true(fabs(wz - expect) <= 1e-6 * (fabs(expect) + 1.0));
        assert_true(fabs(wz - all) > 1e-3);
    }
    free(wf);
    free(z);
    sw_fixed_free(f);
    sw_dataset_free(ds);
}

/* q = clamp(floor(g / scale + u)): u from the QROUND stream; unbiased. */
static void test_quantize(void **state)
{
    (void)state;
    const float scale = 0.25f;
    double sum = 0.0;
    const int n = 20000;
    for (int k = 0; k < n; k++) {
        uint8_t seed[SW_ID_BYTES];
        seed_of(k, seed);
        const double g = 0.8; /* g / scale = 3.2 */
        const int8_t q = sw_trainer_quantize(g, scale, seed);
        assert_true(q == 3 || q == 4);
        assert_int_equal(q, sw_trainer_quantize(g, scale, seed)); /* reproducible */
        uint8_t b[8];
        sw_stream_bytes(seed, SW_STREAM_QROUND, 0, 8, b);
        uint64_t v = 0;
        for (int i = 0; i < 8; i++)
            v |= (uint64_t)b[i] << (8 * i);
        const double u = (double)(v >> 11) / 9007199254740992.0;
        assert_int_equal(q, u >= 0.8 ? 4 : 3); /* floor(3.2 + u) */
        sum += q;
        assert_int_equal(sw_trainer_quantize(-g, scale, seed), u >= 0.2 ? -3 : -4);
    }
    const double mean = sum / n;
    printf("mean q %.5f for g/scale 3.2 over %d seeds\n", mean, n);
    assert_true(fabs(mean - 3.2) < 0.015); /* sd of the mean 0.0028 */
    uint8_t seed[SW_ID_BYTES];
    seed_of(1, seed);
    assert_int_equal(sw_trainer_quantize(1e9, scale, seed), 127);
    assert_int_equal(sw_trainer_quantize(-1e9, scale, seed), -127);
    assert_int_equal(sw_trainer_quantize(127.0 * 0.25, scale, seed), 127);
    assert_int_equal(sw_trainer_quantize(NAN, scale, seed), 0);
    assert_int_equal(sw_trainer_quantize(INFINITY, scale, seed), 0);
    assert_int_equal(sw_trainer_quantize(0.0, scale, seed), 0); /* floor(u) */
}

static void test_scale_policy(void **state)
{
    (void)state;
    /* 0.1 is not a float: the result must round down, never above */
    assert_true((double)sw_trainer_initial_scale(0.1, 0.0) <= 0.1);
    assert_true(fabs((double)sw_trainer_initial_scale(0.1, 0.0) - 0.01875) < 1e-8);
    assert_true((double)sw_trainer_initial_scale(0.1, 1.0) <= 0.1);
    assert_true(sw_trainer_initial_scale(0.1, 1.0) > 0.0999999f);
    assert_true(fabs((double)sw_trainer_initial_scale(0.1, 0.003) - 0.003) < 1e-9);
    assert_true((double)sw_trainer_initial_scale(0.1, 1e-12) >= 0.1 / 1048576.0);

    sw_update u[4];
    memset(u, 0, sizeof(u));
    const int qs[4] = {16, -16, 32, 0};
    for (int i = 0; i < 4; i++) {
        u[i].q = (int8_t)qs[i];
        u[i].scale = 0.01f;
    }
    /* mean |q| * scale = 16 * 0.01 -> / 16 = 0.01 */
    assert_true(fabs((double)sw_trainer_next_scale(1.0, 0.5f, u, 4) - 0.01) < 1e-8);
    assert_true(sw_trainer_next_scale(1.0, 0.5f, u, 0) == 0.5f);
    for (int i = 0; i < 4; i++)
        u[i].q = 127, u[i].scale = 0.1f;
    assert_true((double)sw_trainer_next_scale(0.3, 0.5f, u, 4) <= 0.3);
    assert_true(sw_trainer_next_scale(0.3, 0.5f, u, 4) > 0.29999f);
    for (int i = 0; i < 4; i++)
        u[i].q = 0;
    assert_true(fabs((double)sw_trainer_next_scale(0.3, 0.5f, u, 4) - 0.3 / 1048576.0) < 1e-12);
}

/* Data order: each epoch a permutation, batches consecutive, a pure
 * function of (seed, step). */
static void test_data_order(void **state)
{
    (void)state;
    const size_t N = 37;
    const int B = 5;
    size_t seq[3 * 37 + 5], idx[5];
    for (size_t p = 0; p < 3 * N + 5; p++) {
        assert_int_equal(sw_trainer_batch_indices(11, N, p, 1, idx), 0);
        seq[p] = idx[0];
    }
    for (int e = 0; e < 3; e++) {
        bool seen[37] = {false};
        for (size_t i = 0; i < N; i++) {
            assert_true(seq[e * N + i] < N);
            assert_false(seen[seq[e * N + i]]);
            seen[seq[e * N + i]] = true;
        }
    }
    /* epochs differ from each other and from the identity */
    assert_true(memcmp(seq, seq + N, N * sizeof(size_t)) != 0);
    size_t ident = 0;
    for (size_t i = 0; i < N; i++)
        ident += seq[i] == i;
    assert_true(ident < N / 2);
    /* step t with batch B = positions t*B .. t*B+B-1, in any call order */
    for (int t = 20; t >= 0; t--) {
        assert_int_equal(sw_trainer_batch_indices(11, N, (uint64_t)t, B, idx), 0);
        for (int i = 0; i < B; i++)
            assert_int_equal(idx[i], seq[t * B + i]);
    }
    assert_int_equal(sw_trainer_batch_indices(12, N, 0, 1, idx), 0);
    size_t other[37];
    for (size_t p = 0; p < N; p++) {
        sw_trainer_batch_indices(12, N, p, 1, idx);
        other[p] = idx[0];
    }
    assert_true(memcmp(other, seq, sizeof(other)) != 0);
    /* one record */
    assert_int_equal(sw_trainer_batch_indices(1, 1, 99, 3, idx), 0);
    assert_true(idx[0] == 0 && idx[1] == 0 && idx[2] == 0);
}

static void test_alloc_validation(void **state)
{
    (void)state;
    sw_dataset *ds = load_data(TOPIC_TRAIN, 256);
    sw_fixed *f = make_fixed(true, 64);
    sw_trainer_config tc;
    base_config(&tc, SW_PERTURB_RADEMACHER, 1, NULL);
    sw_trainer *tr = NULL;
    sw_diag d;
    /* records longer than the model's 64 positions */
    assert_int_equal(sw_trainer_alloc(&tc, &f->cfg, ds, &tr, &d), SW_EINVAL);
    assert_non_null(strstr(d.msg, "topic-train.jsonl"));
    sw_dataset_free(ds);
    ds = load_data(TOPIC_TRAIN, 64);
    tc.eps = 0.0f;
    assert_int_equal(sw_trainer_alloc(&tc, &f->cfg, ds, &tr, &d), SW_EINVAL);
    assert_non_null(strstr(d.msg, "eps"));
    base_config(&tc, SW_PERTURB_RADEMACHER, 1, NULL);
    tc.spec.directions = 65;
    assert_int_equal(sw_trainer_alloc(&tc, &f->cfg, ds, &tr, &d), SW_EINVAL);
    base_config(&tc, SW_PERTURB_RADEMACHER, 1, NULL);
    tc.scale_window = 0;
    assert_int_equal(sw_trainer_alloc(&tc, &f->cfg, ds, &tr, &d), SW_EINVAL);
    base_config(&tc, SW_PERTURB_RADEMACHER, 1, NULL);
    tc.spec.max_scale = 0.0; /* allowed: calibration */
    assert_int_equal(sw_trainer_alloc(&tc, &f->cfg, ds, &tr, &d), 0);
    sw_trainer_result res;
    assert_int_equal(sw_trainer_step(tr, f, &res, &d), SW_EINVAL);
    assert_non_null(strstr(d.msg, "calibrate"));
    sw_trainer_free(tr);
    sw_trainer_free(NULL);
    /* weights of another architecture */
    base_config(&tc, SW_PERTURB_RADEMACHER, 1, NULL);
    sw_fixed *g = make_fixed(false, 64);
    assert_int_equal(sw_trainer_alloc(&tc, &f->cfg, ds, &tr, &d), 0);
    double l;
    assert_int_equal(sw_trainer_loss(tr, g, 0, &l, &d), SW_EMISMATCH);
    sw_trainer_free(tr);
    sw_fixed_free(g);
    sw_fixed_free(f);
    sw_dataset_free(ds);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_probe_matches_materialised),
        cmocka_unit_test(test_trainable_mask),
        cmocka_unit_test(test_trainable_rows),
        cmocka_unit_test(test_weights_untouched),
        cmocka_unit_test(test_weight_decay_projection),
        cmocka_unit_test(test_quantize),
        cmocka_unit_test(test_scale_policy),
        cmocka_unit_test(test_data_order),
        cmocka_unit_test(test_alloc_validation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
