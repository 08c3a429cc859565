/*
 * gpt2_forward: invariants of the forward pass (causality, padding, batching),
 * the masked loss against logits + an independent log-softmax in double, the
 * layer-by-layer API, and input validation.  Agreement with an independent
 * float64 GPT-2 is checked by tests/ref/forward_reference.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gpt2.h"
#include "gpt2_config.h"
#include "gpt2_forward.h"
#include "sw_error.h"

static uint64_t rng_state = 88172645463325252ull;

static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

/* uniform in [-1, 1) */
static float rndu(void)
{
    return (float)rnd() / 2147483648.0f - 1.0f;
}

/* Weights large enough that attention, gelu and layer norm all matter. */
static sw_gpt2 *make_model(int L, int NH, int C, int V, int P)
{
    sw_gpt2_config cfg = {.n_layer = L,
                          .n_head = NH,
                          .n_embd = C,
                          .n_positions = P,
                          .vocab_size = V,
                          .layer_norm_epsilon = 1e-5f,
                          .tie_word_embeddings = true};
    sw_gpt2 *m;
    sw_diag d;
    assert_int_equal(sw_gpt2_alloc(&cfg, &m, &d), 0);
    for (size_t i = 0; i < sw_gpt2_tensor_count(&cfg); i++) {
        sw_gpt2_tensor t;
        sw_gpt2_tensor_at(&cfg, i, &t);
        float *x = m->params + t.offset;
        for (size_t j = 0; j < t.numel; j++) {
            switch (t.kind) {
            case SW_GPT2_LN1_W:
            case SW_GPT2_LN2_W:
            case SW_GPT2_LNF_W:
                x[j] = 1.0f + 0.2f * rndu();
                break;
            case SW_GPT2_WTE:
            case SW_GPT2_WPE:
                x[j] = 0.5f * rndu();
                break;
            default:
                if (t.ndim == 1)
                    x[j] = 0.1f * rndu();
                else
                    x[j] = 2.0f * rndu() / sqrtf((float)t.shape[0]);
            }
        }
    }
    return m;
}

/* max |a - b| / max |b| over n values */
static double rel_diff(const float *a, const float *b, size_t n)
{
    double dmax = 0, bmax = 1e-30;
    for (size_t i = 0; i < n; i++) {
        dmax = fmax(dmax, fabs((double)a[i] - b[i]));
        bmax = fmax(bmax, fabs((double)b[i]));
    }
    return dmax / bmax;
}

/* Runs one forward and copies the hidden states (B, T, C) out. */
static float *run(sw_gpt2 *m, const int32_t *tokens, const int32_t *lengths, int B, int T)
{
    sw_gpt2_acts *a;
    sw_diag d;
    assert_int_equal(sw_gpt2_acts_alloc(&m->cfg, B, T, &a, &d), 0);
    int rc = sw_gpt2_forward(m, a, tokens, lengths, B, T, &d);
    if (rc < 0) fail_msg("forward: %s", d.msg);
    const size_t n = (size_t)B * T * m->cfg.n_embd;
    float *h = malloc(n * sizeof(float));
    memcpy(h, sw_gpt2_acts_hidden(a), n * sizeof(float));
    sw_gpt2_acts_free(a);
    return h;
}

#define TOL 1e-5

static void test_causal_padding_batching(void **state)
{
    (void)state;
    const int C = 32, V = 101, P = 80, S = 70;
    sw_gpt2 *m = make_model(2, 2, C, V, P);
    int32_t seq[80], other[80];
    for (int i = 0; i < P; i++) {
        seq[i] = (int32_t)(rnd() % V);
        other[i] = (int32_t)(rnd() % V);
    }
    int32_t len = S;
    float *full = run(m, seq, &len, 1, S); /* (1, S, C) */

    /* a prefix's states do not depend on what follows it (S > 64 also
     * crosses an attention row block) */
    const int prefixes[] = {1, 7, 64, 65};
    for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) {
        int32_t k = prefixes[i];
        float *h = run(m, seq, &k, 1, k);
        double e = rel_diff(h, full, (size_t)k * C);
        if (e > TOL) fail_msg("prefix %d: relative difference %g", k, e);
        free(h);
    }

    /* padding with arbitrary valid ids changes nothing, and padded rows are 0 */
    int32_t padded[80];
    memcpy(padded, seq, sizeof(padded));
    for (int t = 30; t < P; t++)
        padded[t] = (int32_t)(rnd() % V);
    int32_t k = 30;
    float *h = run(m, padded, &k, 1, P);
    assert_true(rel_diff(h, full, (size_t)k * C) <= TOL);
    for (size_t i = (size_t)k * C; i < (size_t)P * C; i++)
        assert_true(h[i] == 0.0f);
    free(h);

    /* a batch of two equals two single runs */
    int32_t batch[2 * 70], lens[2] = {S, 25};
    memcpy(batch, seq, sizeof(int32_t) * S);
    memcpy(batch + S, other, sizeof(int32_t) * S);
    float *hb = run(m, batch, lens, 2, S);
    float *h2 = run(m, other, &lens[1], 1, 25);
    double e1 = rel_diff(hb, full, (size_t)S * C);
    double e2 = rel_diff(hb + (size_t)S * C, h2, (size_t)25 * C);
    if (e1 > TOL || e2 > TOL) fail_msg("batch vs singles: %g %g", e1, e2);
    free(hb);
    free(h2);
    free(full);
    sw_gpt2_free(m);
}

/* The layer-by-layer API over a copy of the weights gives the same result
 * as sw_gpt2_forward over the model's own (the training engine's path). */
static void test_layer_api_matches_forward(void **state)
{
    (void)state;
    sw_gpt2 *m = make_model(3, 4, 32, 64, 16);
    const int B = 3, T = 16;
    int32_t tokens[3 * 16], lengths[3] = {16, 5, 11};
    for (int i = 0; i < B * T; i++)
        tokens[i] = (int32_t)(rnd() % 64);
    float *want = run(m, tokens, lengths, B, T);

    float *copy = malloc(m->n_params * sizeof(float));
    memcpy(copy, m->params, m->n_params * sizeof(float));
    sw_gpt2_weights w;
    sw_gpt2_weights_view(&m->cfg, copy, &w);
    sw_gpt2_acts *a;
    sw_diag d;
    assert_int_equal(sw_gpt2_acts_alloc(&m->cfg, B, T, &a, &d), 0);
    assert_int_equal(sw_gpt2_embed(a, &m->cfg, w.wte, w.wpe, tokens, lengths, B, T, &d), 0);
    for (int l = 0; l < m->cfg.n_layer; l++)
        sw_gpt2_block(a, &m->cfg, &w.layers[l]);
    sw_gpt2_final(a, &m->cfg, w.ln_f_w, w.ln_f_b);
    assert_memory_equal(sw_gpt2_acts_hidden(a), want, sizeof(float) * B * T * 32);

    /* changing one weight of the last block changes the output */
    copy[m->n_params - 2 * 32 - 1] += 0.5f; /* h.2.mlp.c_proj.bias, last entry */
    assert_int_equal(sw_gpt2_embed(a, &m->cfg, w.wte, w.wpe, tokens, lengths, B, T, &d), 0);
    for (int l = 0; l < m->cfg.n_layer; l++)
        sw_gpt2_block(a, &m->cfg, &w.layers[l]);
    sw_gpt2_final(a, &m->cfg, w.ln_f_w, w.ln_f_b);
    assert_memory_not_equal(sw_gpt2_acts_hidden(a), want, sizeof(float) * B * T * 32);

    sw_gpt2_acts_free(a);
    free(copy);
    free(want);
    sw_gpt2_free(m);
}

/* -log softmax(hidden_row x lm_head^T)[target] in double */
static double ref_nll(const sw_gpt2 *m, const float *hrow, int target, float *logits)
{
    const int V = m->cfg.vocab_size;
    sw_gpt2_logits(&m->cfg, m->w.lm_head, hrow, 1, logits);
    double mx = -INFINITY, s = 0;
    for (int v = 0; v < V; v++)
        mx = fmax(mx, logits[v]);
    for (int v = 0; v < V; v++)
        s += exp((double)logits[v] - mx);
    return log(s) + mx - logits[target];
}

static void test_nll_and_mask(void **state)
{
    (void)state;
    /* 547 scored rows: more than one chunk; V = 1000: two vocabulary tiles */
    const int C = 32, V = 1000, B = 3, T = 200;
    sw_gpt2 *m = make_model(1, 2, C, V, T);
    int32_t *tokens = malloc(sizeof(int32_t) * B * T);
    int32_t lengths[3] = {200, 200, 150};
    for (int i = 0; i < B * T; i++)
        tokens[i] = (int32_t)(rnd() % V);
    sw_gpt2_acts *a;
    sw_diag d;
    assert_int_equal(sw_gpt2_acts_alloc(&m->cfg, B, T, &a, &d), 0);
    assert_int_equal(sw_gpt2_forward(m, a, tokens, lengths, B, T, &d), 0);

    float *nll = malloc(sizeof(float) * B * T), *nll_m = malloc(sizeof(float) * B * T);
    float *logits = malloc(sizeof(float) * V);
    double sum;
    int64_t count;
    assert_int_equal(
        sw_gpt2_nll(a, &m->cfg, m->w.lm_head, tokens, lengths, NULL, B, T, nll, &sum, &count, &d),
        0);
    assert_int_equal(count, 199 + 199 + 149);
    const float *hidden = sw_gpt2_acts_hidden(a);
    double ref_sum = 0, worst = 0;
    for (int b = 0; b < B; b++) {
        assert_true(nll[b * T] == 0.0f);
        for (int t = 1; t < T; t++) {
            const size_t p = (size_t)b * T + t;
            if (t >= lengths[b]) {
                assert_true(nll[p] == 0.0f);
                continue;
            }
            double r = ref_nll(m, hidden + (p - 1) * C, tokens[p], logits);
            ref_sum += r;
            worst = fmax(worst, fabs(nll[p] - r) / fmax(1.0, fabs(r)));
        }
    }
    if (worst > TOL || fabs(sum - ref_sum) > TOL * fabs(ref_sum))
        fail_msg("nll: worst relative error %g, sum %f vs %f", worst, sum, ref_sum);

    /* a mask selects positions; bits at t = 0 and in the padding are ignored */
    uint8_t *mask = calloc((size_t)B * T, 1);
    int64_t want_count = 0;
    double want_sum = 0;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const size_t p = (size_t)b * T + t;
            mask[p] = (rnd() & 3) == 0 || t == 0 || t >= lengths[b];
            if (mask[p] && t > 0 && t < lengths[b]) {
                want_count++;
                want_sum += nll[p];
            }
        }
    assert_int_equal(
        sw_gpt2_nll(a, &m->cfg, m->w.lm_head, tokens, lengths, mask, B, T, nll_m, &sum, &count, &d),
        0);
    assert_int_equal(count, want_count);
    assert_true(fabs(sum - want_sum) <= TOL * fabs(want_sum));
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const size_t p = (size_t)b * T + t;
            if (mask[p] && t > 0 && t < lengths[b])
                assert_true(fabs(nll_m[p] - nll[p]) <= TOL * fmax(1.0, fabs(nll[p])));
            else
                assert_true(nll_m[p] == 0.0f);
        }
    /* sum and count are optional */
    assert_int_equal(
        sw_gpt2_nll(a, &m->cfg, m->w.lm_head, tokens, lengths, mask, B, T, nll_m, NULL, NULL, &d),
        0);
    free(mask);
    free(nll);
    free(nll_m);
    free(logits);
    free(tokens);
    sw_gpt2_acts_free(a);
    sw_gpt2_free(m);
}

static void expect_einval(int rc, const sw_diag *d, const char *needle)
{
    assert_int_equal(rc, SW_EINVAL);
    if (!strstr(d->msg, needle)) fail_msg("diag '%s' lacks '%s'", d->msg, needle);
}

static void test_input_validation(void **state)
{
    (void)state;
    sw_gpt2 *m = make_model(1, 1, 16, 50, 20);
    sw_gpt2_acts *a;
    sw_diag d;
    float nll[2 * 8];
    assert_int_equal(sw_gpt2_acts_alloc(&m->cfg, 2, 8, &a, &d), 0);
    int32_t tokens[2 * 8] = {0}, lengths[2] = {8, 3};

    /* nothing to score before a forward */
    expect_einval(
        sw_gpt2_nll(a, &m->cfg, m->w.lm_head, tokens, lengths, NULL, 2, 8, nll, NULL, NULL, &d), &d,
        "no completed forward");

    tokens[8 + 2] = 50;
    expect_einval(sw_gpt2_forward(m, a, tokens, lengths, 2, 8, &d), &d,
                  "batch row 1, position 2: token id 50");
    tokens[8 + 2] = -1;
    expect_einval(sw_gpt2_forward(m, a, tokens, lengths, 2, 8, &d), &d, "token id -1");
    tokens[8 + 2] = 0;
    tokens[8 + 5] = 999; /* padding of row 1 is never read */
    assert_int_equal(sw_gpt2_forward(m, a, tokens, lengths, 2, 8, &d), 0);
    tokens[8 + 5] = 0;

    lengths[1] = 0;
    expect_einval(sw_gpt2_forward(m, a, tokens, lengths, 2, 8, &d), &d, "batch row 1: length 0");
    lengths[1] = 9;
    expect_einval(sw_gpt2_forward(m, a, tokens, lengths, 2, 8, &d), &d, "length 9");
    lengths[1] = 3;
    expect_einval(sw_gpt2_forward(m, a, tokens, lengths, 3, 8, &d), &d, "batch 3 x 8");
    expect_einval(sw_gpt2_forward(m, a, tokens, lengths, 1, 9, &d), &d, "batch 1 x 9");
    expect_einval(sw_gpt2_forward(m, a, tokens, lengths, 0, 8, &d), &d, "batch 0 x 8");

    /* scratch longer than the model's context is refused */
    sw_gpt2_acts *big = NULL;
    assert_int_equal(sw_gpt2_acts_alloc(&m->cfg, 1, 21, &big, &d), SW_EINVAL);
    assert_null(big);
    assert_true(sw_gpt2_acts_bytes(&m->cfg, 1, 1) < sw_gpt2_acts_bytes(&m->cfg, 2, 8));
    assert_int_equal(sw_gpt2_acts_bytes(&m->cfg, 1 << 30, 1 << 30), SIZE_MAX);

    /* the loss must see the forward's batch */
    assert_int_equal(sw_gpt2_forward(m, a, tokens, lengths, 2, 8, &d), 0);
    expect_einval(
        sw_gpt2_nll(a, &m->cfg, m->w.lm_head, tokens, lengths, NULL, 2, 7, nll, NULL, NULL, &d), &d,
        "differs from the forward");
    int32_t other[2] = {8, 4};
    expect_einval(
        sw_gpt2_nll(a, &m->cfg, m->w.lm_head, tokens, other, NULL, 2, 8, nll, NULL, NULL, &d), &d,
        "batch row 1: length 4 differs");
    tokens[3] = 77;
    expect_einval(
        sw_gpt2_nll(a, &m->cfg, m->w.lm_head, tokens, lengths, NULL, 2, 8, nll, NULL, NULL, &d), &d,
        "position 3: token id 77");
    /* a failed embed leaves nothing to score */
    assert_int_equal(sw_gpt2_forward(m, a, tokens, lengths, 2, 8, &d), SW_EINVAL);
    tokens[3] = 0;
    expect_einval(
        sw_gpt2_nll(a, &m->cfg, m->w.lm_head, tokens, lengths, NULL, 2, 8, nll, NULL, NULL, &d), &d,
        "no completed forward");

    /* scratch of another architecture */
    sw_gpt2 *m2 = make_model(1, 2, 16, 50, 20);
    expect_einval(sw_gpt2_forward(m2, a, tokens, lengths, 2, 8, &d), &d, "another architecture");
    sw_gpt2_free(m2);
    sw_gpt2_acts_free(a);
    sw_gpt2_acts_free(NULL);
    sw_gpt2_free(m);
}

/* Two OpenBLAS threads compute the same function (to rounding). */
static void test_threads(void **state)
{
    (void)state;
    sw_gpt2 *m = make_model(2, 4, 64, 200, 64);
    int32_t tokens[4 * 64], lengths[4] = {64, 64, 17, 40};
    for (int i = 0; i < 4 * 64; i++)
        tokens[i] = (int32_t)(rnd() % 200);
    sw_gpt2_set_threads(1);
    float *h1 = run(m, tokens, lengths, 4, 64);
    sw_gpt2_set_threads(2);
    float *h2 = run(m, tokens, lengths, 4, 64);
    sw_gpt2_set_threads(1);
    assert_true(rel_diff(h2, h1, (size_t)4 * 64 * 64) <= TOL);
    free(h1);
    free(h2);
    sw_gpt2_free(m);
}

/* Two threads, each with its own scratch, may run forwards over one model at
 * once (as a training engine running its + and - passes side by side would),
 * and get exactly what one thread gets. */
typedef struct job {
    sw_gpt2 *m;
    int32_t tokens[4 * 48], lengths[4];
    float nll[4 * 48];
    double sum;
    int rc;
} job;

static void *job_run(void *arg)
{
    job *j = arg;
    sw_gpt2_acts *a;
    sw_diag d;
    j->rc = sw_gpt2_acts_alloc(&j->m->cfg, 4, 48, &a, &d);
    for (int rep = 0; rep < 3 && j->rc == 0; rep++) {
        j->rc = sw_gpt2_forward(j->m, a, j->tokens, j->lengths, 4, 48, &d);
        if (j->rc == 0)
            j->rc = sw_gpt2_nll(a, &j->m->cfg, j->m->w.lm_head, j->tokens, j->lengths, NULL, 4, 48,
                                j->nll, &j->sum, NULL, &d);
    }
    sw_gpt2_acts_free(a);
    return NULL;
}

static void test_concurrent_forwards(void **state)
{
    (void)state;
    sw_gpt2 *m = make_model(2, 4, 64, 300, 48);
    sw_gpt2_set_threads(1);
    job *jobs = calloc(4, sizeof(job)); /* 0, 1 concurrent; 2, 3 alone */
    for (int k = 0; k < 2; k++) {
        jobs[k].m = jobs[k + 2].m = m;
        for (int i = 0; i < 4 * 48; i++)
            jobs[k].tokens[i] = (int32_t)(rnd() % 300);
        for (int b = 0; b < 4; b++)
            jobs[k].lengths[b] = (int32_t)(1 + rnd() % 48);
        memcpy(jobs[k + 2].tokens, jobs[k].tokens, sizeof(jobs[k].tokens));
        memcpy(jobs[k + 2].lengths, jobs[k].lengths, sizeof(jobs[k].lengths));
    }
    pthread_t th[2];
    for (int k = 0; k < 2; k++)
        assert_int_equal(pthread_create(&th[k], NULL, job_run, &jobs[k]), 0);
    for (int k = 0; k < 2; k++)
        assert_int_equal(pthread_join(th[k], NULL), 0);
    for (int k = 2; k < 4; k++)
        job_run(&jobs[k]);
    for (int k = 0; k < 2; k++) {
        assert_int_equal(jobs[k].rc, 0);
        assert_int_equal(jobs[k + 2].rc, 0);
        assert_memory_equal(jobs[k].nll, jobs[k + 2].nll, sizeof(jobs[k].nll));
        assert_true(jobs[k].sum == jobs[k + 2].sum && jobs[k].sum > 0);
    }
    free(jobs);
    sw_gpt2_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_causal_padding_batching),
        cmocka_unit_test(test_layer_api_matches_forward),
        cmocka_unit_test(test_nll_and_mask),
        cmocka_unit_test(test_input_validation),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_concurrent_forwards),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
