/*
 * generate: the choice of each id is checked against a forward pass and an
 * argmax or cumulative sum written here, independently of sw_generate's loop.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "generate.h"
#include "gpt2.h"
#include "gpt2_forward.h"
#include "sw_error.h"

#define V 64
#define MAXT 16
#define C 32

static sw_gpt2 *test_model(uint64_t seed)
{
    sw_gpt2_config cfg = {
        .n_layer = 2,
        .n_head = 2,
        .n_embd = C,
        .n_positions = MAXT,
        .vocab_size = V,
        .layer_norm_epsilon = 1e-5f,
        .tie_word_embeddings = false,
    };
    sw_gpt2 *m = NULL;
    sw_diag d;
    assert_int_equal(sw_gpt2_alloc(&cfg, &m, &d), 0);
    sw_gpt2_init_random(m, seed);
    /*
     * Untied, so that the model does not just predict its input token (a tied random
     * model repeats one id forever); GPT-2's init gives nearly flat logits, a larger
     * head spreads them.  The head is the last canonical tensor.
     */
    float *head = m->params + (m->n_params - (size_t)V * C);
    assert_ptr_equal(head, m->w.lm_head);
    for (size_t i = 0; i < (size_t)V * C; i++)
        head[i] *= 50.0f;
    return m;
}

/* logits (V) of the position after seq[0..n), using at most the last MAXT ids. */
static void test_next_logits(const sw_gpt2 *m, const int32_t *seq, size_t n, float *logits)
{
    size_t T = n < MAXT ? n : MAXT;
    const int32_t *w = seq + (n - T);
    sw_gpt2_acts *a = NULL;
    sw_diag d;
    assert_int_equal(sw_gpt2_acts_alloc(&m->cfg, 1, MAXT, &a, &d), 0);
    int32_t len[1] = {(int32_t)T};
    assert_int_equal(sw_gpt2_forward(m, a, w, len, 1, (int)T, &d), 0);
    sw_gpt2_logits(&m->cfg, m->w.lm_head, sw_gpt2_acts_hidden(a) + (T - 1) * C, 1, logits);
    sw_gpt2_acts_free(a);
}

static int32_t test_argmax(const float *x)
{
    int32_t best = 0;
    for (int32_t i = 1; i < V; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

static void test_run(const sw_gpt2 *m, const int32_t *prompt, size_t n_prompt, int n, float temp,
                     int top_k, uint64_t seed, int32_t *out, sw_generate_result *res)
{
    sw_generate_opts o;
    sw_generate_opts_default(&o);
    o.max_new_tokens = n;
    o.temperature = temp;
    o.top_k = top_k;
    o.seed = seed;
    sw_diag d;
    assert_int_equal(sw_generate(m, prompt, n_prompt, &o, out, NULL, NULL, res, &d), 0);
}

static void test_greedy_is_argmax_of_forward(void **state)
{
    (void)state;
    sw_gpt2 *m = test_model(1);
    const int32_t prompt[3] = {5, 17, 42};
    int32_t out[10], again[10];
    sw_generate_result r;
    test_run(m, prompt, 3, 10, 0.0f, 0, 0, out, &r);
    assert_int_equal(r.n, 10);
    assert_false(r.hit_stop);
    assert_int_equal(r.forwards, 10);
    test_run(m, prompt, 3, 10, 0.0f, 0, 99, again, &r);
    assert_memory_equal(out, again, sizeof out);

    int32_t seq[13];
    memcpy(seq, prompt, sizeof prompt);
    memcpy(seq + 3, out, sizeof out);
    float logits[V];
    int distinct = 0;
    for (int i = 0; i < 10; i++) {
        test_next_logits(m, seq, 3 + (size_t)i, logits);
        assert_int_equal(out[i], test_argmax(logits));
        assert_int_equal(sw_generate_argmax(logits, V), test_argmax(logits));
        distinct += i > 0 && out[i] != out[i - 1];
    }
    /* A model whose output never changed would make this test vacuous. */
    assert_true(distinct > 0);
    sw_gpt2_free(m);
}

static void test_seed_determines_samples(void **state)
{
    (void)state;
    sw_gpt2 *m = test_model(2);
    const int32_t prompt[2] = {1, 2};
    int32_t a[24], b[24], c[24];
    sw_generate_result r;
    test_run(m, prompt, 2, 24, 3.0f, 0, 7, a, &r);
    test_run(m, prompt, 2, 24, 3.0f, 0, 7, b, &r);
    test_run(m, prompt, 2, 24, 3.0f, 0, 8, c, &r);
    assert_memory_equal(a, b, sizeof a);
    /* Probabilities are spread over 64 ids: 24 equal draws would be a broken stream. */
    assert_memory_not_equal(a, c, sizeof a);
    sw_gpt2_free(m);
}

static void test_sample_follows_cumulative(void **state)
{
    (void)state;
    /* p = (1/4, 3/4) at T = 1; at T = 2, p0 = 1 / (1 + sqrt 3) = 0.366. */
    float l[2] = {0.0f, logf(3.0f)};
    assert_int_equal(sw_generate_sample(l, 2, 1.0f, 0, 0.0, NULL), 0);
    assert_int_equal(sw_generate_sample(l, 2, 1.0f, 0, 0.24, NULL), 0);
    assert_int_equal(sw_generate_sample(l, 2, 1.0f, 0, 0.26, NULL), 1);
    assert_int_equal(sw_generate_sample(l, 2, 1.0f, 0, 0.999999, NULL), 1);
    assert_int_equal(sw_generate_sample(l, 2, 2.0f, 0, 0.35, NULL), 0);
    assert_int_equal(sw_generate_sample(l, 2, 2.0f, 0, 0.38, NULL), 1);

    /* top-k keeps the k largest, ordered by probability: ids 3 (0.5) then 1 (0.5 * e^-1). */
    float x[5] = {-3.0f, 1.0f, -2.0f, 2.0f, 0.5f};
    int32_t scratch[2];
    double p3 = 1.0 / (1.0 + exp(-1.0));
    assert_int_equal(sw_generate_sample(x, 5, 1.0f, 2, p3 - 0.01, scratch), 3);
    assert_int_equal(sw_generate_sample(x, 5, 1.0f, 2, p3 + 0.01, scratch), 1);
    assert_int_equal(sw_generate_sample(x, 5, 1.0f, 1, 0.99, scratch), 3);
    /* Ties in the top-k order by id. */
    float t[4] = {1.0f, 5.0f, 5.0f, 5.0f};
    assert_int_equal(sw_generate_sample(t, 4, 1.0f, 2, 0.0, scratch), 1);
    assert_int_equal(sw_generate_sample(t, 4, 1.0f, 2, 0.6, scratch), 2);
    assert_int_equal(sw_generate_argmax(t, 4), 1);
    /* A very low temperature is greedy in effect. */
    assert_int_equal(sw_generate_sample(x, 5, 1e-3f, 0, 0.999, NULL), 3);
}

static void test_top1_sampling_equals_greedy(void **state)
{
    (void)state;
    sw_gpt2 *m = test_model(3);
    const int32_t prompt[1] = {9};
    int32_t g[12], s[12];
    sw_generate_result r;
    test_run(m, prompt, 1, 12, 0.0f, 0, 0, g, &r);
    test_run(m, prompt, 1, 12, 1.5f, 1, 1234, s, &r);
    assert_memory_equal(g, s, sizeof g);
    sw_gpt2_free(m);
}

static void test_context_window_slides(void **state)
{
    (void)state;
    sw_gpt2 *m = test_model(4);
    /* A prompt longer than the context: only its last MAXT ids matter. */
    int32_t prompt[MAXT + 5];
    for (int i = 0; i < MAXT + 5; i++)
        prompt[i] = (i * 7 + 3) % V;
    enum { N = 2 * MAXT };
    int32_t out[N], tail_out[N];
    sw_generate_result r;
    test_run(m, prompt, MAXT + 5, N, 0.0f, 0, 0, out, &r);
    assert_int_equal(r.n, N);
    test_run(m, prompt + 5, MAXT, N, 0.0f, 0, 0, tail_out, &r);
    assert_memory_equal(out, tail_out, sizeof out);

    int32_t seq[MAXT + 5 + N];
    memcpy(seq, prompt, sizeof prompt);
    memcpy(seq + MAXT + 5, out, sizeof out);
    float logits[V];
    for (int i = 0; i < N; i++) {
        test_next_logits(m, seq, MAXT + 5 + (size_t)i, logits);
        assert_int_equal(out[i], test_argmax(logits));
    }
    sw_gpt2_free(m);
}

static int test_stop_after_three(int32_t id, void *user)
{
    (void)id;
    int *count = user;
    return ++*count >= 3;
}

static void test_stop_id_and_callback(void **state)
{
    (void)state;
    sw_gpt2 *m = test_model(5);
    const int32_t prompt[2] = {4, 8};
    int32_t free_run[12];
    sw_generate_result r;
    test_run(m, prompt, 2, 12, 0.0f, 0, 0, free_run, &r);

    /* Stopping at the id of the k-th greedy token ends just before its first occurrence. */
    size_t first = 0;
    while (first < 12 && free_run[first] != free_run[4])
        first++;
    sw_generate_opts o;
    sw_generate_opts_default(&o);
    o.max_new_tokens = 12;
    o.stop_id = free_run[4];
    int32_t out[12];
    sw_diag d;
    assert_int_equal(sw_generate(m, prompt, 2, &o, out, NULL, NULL, &r, &d), 0);
    assert_true(r.hit_stop);
    assert_int_equal(r.n, first);
    assert_memory_equal(out, free_run, first * sizeof(int32_t));

    int count = 0;
    o.stop_id = -1;
    assert_int_equal(sw_generate(m, prompt, 2, &o, out, test_stop_after_three, &count, &r, &d), 0);
    assert_int_equal(r.n, 3);
    assert_int_equal(count, 3);
    assert_false(r.hit_stop);

    /* An empty prompt starts from the stop id. */
    o.stop_id = 0;
    o.max_new_tokens = 4;
    int32_t empty_out[4], zero_out[4];
    assert_int_equal(sw_generate(m, NULL, 0, &o, empty_out, NULL, NULL, &r, &d), 0);
    size_t n_empty = r.n;
    const int32_t zero[1] = {0};
    assert_int_equal(sw_generate(m, zero, 1, &o, zero_out, NULL, NULL, &r, &d), 0);
    assert_int_equal(r.n, n_empty);
    assert_memory_equal(empty_out, zero_out, n_empty * sizeof(int32_t));
    sw_gpt2_free(m);
}

static void test_bad_arguments(void **state)
{
    (void)state;
    sw_gpt2 *m = test_model(6);
    sw_generate_opts o;
    sw_generate_opts_default(&o);
    sw_diag d;
    sw_generate_result r;
    const int32_t bad[2] = {3, V};
    assert_int_equal(sw_generate(m, bad, 2, &o, NULL, NULL, NULL, &r, &d), SW_EINVAL);
    assert_non_null(strstr(d.msg, "prompt token 1"));
    assert_int_equal(sw_generate(m, NULL, 0, &o, NULL, NULL, NULL, &r, &d), SW_EINVAL);
    const int32_t ok[1] = {3};
    o.temperature = -1.0f;
    assert_int_equal(sw_generate(m, ok, 1, &o, NULL, NULL, NULL, &r, &d), SW_EINVAL);
    assert_non_null(strstr(d.msg, "temperature"));
    o.temperature = 0.0f;
    o.max_new_tokens = -1;
    assert_int_equal(sw_generate(m, ok, 1, &o, NULL, NULL, NULL, &r, &d), SW_EINVAL);
    o.max_new_tokens = 0;
    assert_int_equal(sw_generate(m, ok, 1, &o, NULL, NULL, NULL, &r, &d), 0);
    assert_int_equal(r.n, 0);
    sw_gpt2_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_is_argmax_of_forward),
        cmocka_unit_test(test_seed_determines_samples),
        cmocka_unit_test(test_sample_follows_cumulative),
        cmocka_unit_test(test_top1_sampling_equals_greedy),
        cmocka_unit_test(test_context_window_slides),
        cmocka_unit_test(test_stop_id_and_callback),
        cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
