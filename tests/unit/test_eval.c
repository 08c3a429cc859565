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
#include "eval.h"
#include "gpt2.h"
#include "gpt2_forward.h"
#include "tokenizer.h"

static sw_tokenizer *tok;

static int setup(void **state)
{
    (void)state;
    sw_diag d;
    if (sw_tokenizer_load_dir(SW_MODEL_DIR, &tok, &d) < 0) {
        fprintf(stderr, "tokenizer: %s\n", d.msg);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    sw_tokenizer_free(tok);
    return 0;
}

static sw_gpt2 *tiny_model(int n_positions, int vocab)
{
    sw_gpt2_config cfg = {.n_layer = 2,
                          .n_head = 2,
                          .n_embd = 16,
                          .n_positions = n_positions,
                          .vocab_size = vocab,
                          .layer_norm_epsilon = 1e-5f,
                          .tie_word_embeddings = true};
    sw_gpt2 *m = NULL;
    sw_diag d;
    if (sw_gpt2_alloc(&cfg, &m, &d) < 0) fail_msg("alloc: %s", d.msg);
    return m;
}

static sw_dataset *load(const char *img, int max_tokens)
{
    sw_dataset *ds = NULL;
    sw_diag d;
    if (sw_dataset_load_mem(img, strlen(img), "e.jsonl", tok, max_tokens, &ds, &d) < 0)
        fail_msg("load: %s", d.msg);
    return ds;
}

static sw_eval_result run(const sw_gpt2 *m, const sw_dataset *ds, int batch)
{
    sw_eval_opts o;
    sw_eval_opts_init(&o);
    o.batch_size = batch;
    sw_eval_result res;
    sw_diag d;
    if (sw_eval_run(m, ds, &o, &res, &d) < 0) fail_msg("eval: %s", d.msg);
    return res;
}

/* Sum and count of the nll over every record's scored positions, one record per forward. */
static void direct_loss(const sw_gpt2 *m, const sw_dataset *ds, double *sum, int64_t *count)
{
    sw_gpt2_acts *a;
    sw_diag d;
    int T = m->cfg.n_positions;
    assert_int_equal(sw_gpt2_acts_alloc(&m->cfg, 1, T, &a, &d), 0);
    float *nll = calloc((size_t)T, sizeof(float));
    uint8_t *mask = calloc((size_t)T, 1);
    *sum = 0;
    *count = 0;
    for (size_t i = 0; i < ds->n_records; i++) {
        const sw_dataset_record *r = &ds->records[i];
        int32_t len = r->n_tokens;
        memset(mask, 0, (size_t)T);
        for (int t = r->first_scored; t < len; t++)
            mask[t] = 1;
        assert_int_equal(sw_gpt2_forward(m, a, r->tokens, &len, 1, len, &d), 0);
        double s;
        int64_t c;
        assert_int_equal(
            sw_gpt2_nll(a, &m->cfg, m->w.lm_head, r->tokens, &len, mask, 1, len, nll, &s, &c, &d),
            0);
        *sum += s;
        *count += c;
    }
    free(nll);
    free(mask);
    sw_gpt2_acts_free(a);
}

static const char mixed_img[] =
    "{\"text\": \"It was the best of times, it was the worst of times, it was the age of "
    "wisdom, it was the age of foolishness\"}\n"
    "{\"text\": \"Short one.\"}\n"
    "{\"prompt\": \"Q: what is two and two?\\nA:\", \"completion\": \" four, of course\"}\n"
    "{\"text\": \"A medium length line of text for the model.\"}\n"
    "{\"prompt\": \"\", \"completion\": \" empty prompt here\"}\n"
    "{\"prompt\": \"Long prompt that will not leave much room at all for the completion, "
    "because the context is tiny\", \"completion\": \" cut off completion tokens\"}\n"
    "{\"text\": \"x y\"}\n";

static void test_loss_matches_direct(void **state)
{
    (void)state;
    sw_gpt2 *m = tiny_model(20, 50257);
    sw_gpt2_init_random(m, 42);
    /* The first record (28 tokens) and the long prompt (19 + 4) are cut to 20. */
    sw_dataset *ds = load(mixed_img, 20);
    assert_true(ds->n_truncated >= 2);
    double sum;
    int64_t count;
    direct_loss(m, ds, &sum, &count);
    assert_int_equal(count, ds->n_scored);
    double want = sum / (double)count;
    /* Batching and padding only change the forward's rounding. */
    for (int batch = 1; batch <= 9; batch += 4) {
        sw_eval_result r = run(m, ds, batch);
        assert_int_equal(r.tokens, count);
        assert_int_equal(r.records, ds->n_records);
        assert_true(fabs(r.loss - want) <= 1e-5 * want);
        assert_true(fabs(r.perplexity - exp(r.loss)) <= 1e-12 * r.perplexity);
        /* A text record is present: no accuracy. */
        assert_false(r.has_accuracy);
        assert_int_equal(r.correct, 0);
    }
    /* Near log(V) for a random model: the loss is in nats per token. */
    assert_true(want > 9.0 && want < 12.0);
    sw_dataset_free(ds);
    sw_gpt2_free(m);
}

/* Sets up a model whose next-token distribution ignores the context: logits = wte[:, 0]. */
static sw_gpt2 *unigram_model(float **wte0)
{
    sw_gpt2 *m = tiny_model(64, 50257);
    /* Blocks with zero weights leave the residual alone; ln_f with zero gain outputs its bias. */
    size_t n = sw_gpt2_tensor_count(&m->cfg);
    float *wte = NULL, *lnf_b = NULL;
    for (size_t i = 0; i < n; i++) {
        sw_gpt2_tensor t;
        sw_gpt2_tensor_at(&m->cfg, i, &t);
        if (t.kind == SW_GPT2_WTE) wte = m->params + t.offset;
        if (t.kind == SW_GPT2_LNF_B) lnf_b = m->params + t.offset;
    }
    assert_non_null(wte);
    assert_non_null(lnf_b);
    lnf_b[0] = 1.0f;
    *wte0 = wte;
    return m;
}

static int32_t one_token(const char *s)
{
    sw_tokens t = {0};
    assert_int_equal(sw_tokenizer_encode(tok, s, strlen(s), &t), 0);
    assert_int_equal(t.n, 1);
    int32_t id = t.ids[0];
    sw_tokens_fini(&t);
    return id;
}

static void test_accuracy_crafted(void **state)
{
    (void)state;
    float *wte;
    sw_gpt2 *m = unigram_model(&wte);
    const int C = m->cfg.n_embd;
    int32_t food = one_token(" food"), love = one_token(" love"), sports = one_token(" sports");
    const char *img = "{\"prompt\": \"apple pie\\nTopic:\", \"completion\": \" food\"}\n"
                      "{\"prompt\": \"my heart\\nTopic:\", \"completion\": \" love\"}\n"
                      "{\"prompt\": \"bread\\nTopic:\", \"completion\": \" food\"}\n"
                      "{\"prompt\": \"goal!\\nTopic:\", \"completion\": \" sports\"}\n"
                      "{\"prompt\": \"soup\\nTopic:\", \"completion\": \" food\"}\n"
                      "{\"prompt\": \"roses\\nTopic:\", \"completion\": \" love\"}\n";
    sw_dataset *ds = load(img, 64);
    assert_int_equal(ds->n_completions, 3);

    /* food is the most likely token everywhere: exactly the 3 food records are right. */
    wte[(size_t)food * C] = 3.0f;
    wte[(size_t)love * C] = 2.0f;
    wte[(size_t)sports * C] = 1.0f;
    sw_eval_result r = run(m, ds, 4);
    assert_true(r.has_accuracy);
    assert_int_equal(r.choices, 3);
    assert_int_equal(r.records, 6);
    assert_int_equal(r.correct, 3);
    assert_true(r.accuracy == 0.5);

    /* love first: the 2 love records. */
    wte[(size_t)love * C] = 4.0f;
    r = run(m, ds, 1);
    assert_int_equal(r.correct, 2);

    /* A tie between love and food at the top is wrong for both. */
    wte[(size_t)food * C] = 4.0f;
    r = run(m, ds, 3);
    assert_int_equal(r.correct, 0);
    assert_true(r.accuracy == 0.0);

    /* sports alone on top. */
    wte[(size_t)sports * C] = 5.0f;
    r = run(m, ds, 8);
    assert_int_equal(r.correct, 1);

    /* Accuracy off by option. */
    sw_eval_opts o;
    sw_eval_opts_init(&o);
    o.accuracy = false;
    sw_diag d;
    assert_int_equal(sw_eval_run(m, ds, &o, &r, &d), 0);
    assert_false(r.has_accuracy);
    sw_dataset_free(ds);
    sw_gpt2_free(m);
}

/*
 * Scores are total log-probabilities, not per-token means: with equal logits
 * for every candidate token, a two-token candidate loses to a one-token one.
 */
static void test_accuracy_total_logprob(void **state)
{
    (void)state;
    float *wte;
    sw_gpt2 *m = unigram_model(&wte);
    const int C = m->cfg.n_embd;
    sw_tokens two = {0};
    assert_int_equal(sw_tokenizer_encode(tok, " sports food", 12, &two), 0);
    assert_int_equal(two.n, 2);
    int32_t love = one_token(" love");
    wte[(size_t)two.ids[0] * C] = 2.0f;
    wte[(size_t)two.ids[1] * C] = 2.0f;
    wte[(size_t)love * C] = 2.0f;
    const char *img = "{\"prompt\": \"a\", \"completion\": \" sports food\"}\n"
                      "{\"prompt\": \"b\", \"completion\": \" love\"}\n"
                      "{\"prompt\": \"c\", \"completion\": \" love\"}\n";
    sw_dataset *ds = load(img, 64);
    sw_eval_result r = run(m, ds, 2);
    assert_true(r.has_accuracy);
    assert_int_equal(r.correct, 2);
    /* The loss counts the two-token completion's both positions. */
    assert_int_equal(r.tokens, 4);
    sw_tokens_fini(&two);
    sw_dataset_free(ds);
    sw_gpt2_free(m);
}

static void test_accuracy_applicability(void **state)
{
    (void)state;
    sw_gpt2 *m = tiny_model(64, 50257);
    sw_gpt2_init_random(m, 7);
    /* One distinct completion: nothing to choose between. */
    sw_dataset *ds = load("{\"prompt\": \"a\", \"completion\": \" b\"}\n"
                          "{\"prompt\": \"c\", \"completion\": \" b\"}\n",
                          64);
    assert_false(run(m, ds, 2).has_accuracy);
    sw_dataset_free(ds);
    /* More than SW_EVAL_MAX_CHOICES distinct completions: generation data. */
    size_t cap = (SW_EVAL_MAX_CHOICES + 1) * 64;
    char *img = malloc(cap);
    size_t len = 0;
    for (int i = 0; i <= SW_EVAL_MAX_CHOICES; i++)
        len += (size_t)snprintf(img + len, cap - len,
                                "{\"prompt\": \"q\", \"completion\": \" %d\"}\n", i);
    ds = load(img, 64);
    assert_int_equal(ds->n_completions, SW_EVAL_MAX_CHOICES + 1);
    assert_false(run(m, ds, 16).has_accuracy);
    sw_dataset_free(ds);
    free(img);
    sw_gpt2_free(m);
}

/*
 * Accuracy by brute force: every candidate of every record scored one
 * sequence at a time with sw_gpt2_nll, compared with the batched evaluator.
 */
static void test_accuracy_matches_direct(void **state)
{
    (void)state;
    sw_gpt2 *m = tiny_model(20, 50257);
    sw_gpt2_init_random(m, 3);
    const char *img = "{\"prompt\": \"The cat sat\", \"completion\": \" on the mat\"}\n"
                      "{\"prompt\": \"Dogs like\", \"completion\": \" bones\"}\n"
                      "{\"prompt\": \"\", \"completion\": \" bones\"}\n"
                      "{\"prompt\": \"Birds\", \"completion\": \" fly south for the winter, "
                      "every single year without fail\"}\n"
                      "{\"prompt\": \"A much longer prompt that fills most of\", "
                      "\"completion\": \" on the mat\"}\n"
                      "{\"prompt\": \"Fish\", \"completion\": \" swim\"}\n";
    sw_dataset *ds = load(img, 20);
    sw_gpt2_acts *a;
    sw_diag d;
    assert_int_equal(sw_gpt2_acts_alloc(&m->cfg, 1, 20, &a, &d), 0);
    size_t right = 0;
    for (size_t i = 0; i < ds->n_records; i++) {
        const sw_dataset_record *r = &ds->records[i];
        double best_other = -INFINITY, own = 0;
        for (size_t c = 0; c < ds->n_completions; c++) {
            int32_t seq[64];
            uint8_t mask[64] = {0};
            int32_t len = 0;
            for (int t = 0; t < r->n_prompt && len < 20; t++)
                seq[len++] = r->tokens[t];
            for (int t = 0; t < ds->completions[c].n_tokens && len < 20; t++)
                seq[len++] = ds->completions[c].tokens[t];
            int first = r->n_prompt > 1 ? r->n_prompt : 1;
            double logp = 0;
            if (len > first) {
                for (int t = first; t < len; t++)
                    mask[t] = 1;
                float nll[64];
                double s;
                assert_int_equal(sw_gpt2_forward(m, a, seq, &len, 1, len, &d), 0);
                assert_int_equal(sw_gpt2_nll(a, &m->cfg, m->w.lm_head, seq, &len, mask, 1, len, nll,
                                             &s, NULL, &d),
                                 0);
                logp = -s;
            }
            if ((int32_t)c == r->completion)
                own = logp;
            else if (logp > best_other)
                best_other = logp;
        }
        right += own > best_other;
    }
    sw_gpt2_acts_free(a);
    for (int batch = 1; batch <= 7; batch += 3) {
        sw_eval_result res = run(m, ds, batch);
        assert_true(res.has_accuracy);
        assert_int_equal(res.choices, ds->n_completions);
        assert_int_equal(res.correct, right);
    }
    sw_dataset_free(ds);
    sw_gpt2_free(m);
}

typedef struct progress_log {
    uint64_t calls, last_done, total;
    bool monotonic;
} progress_log;

static void on_progress(void *ctx, uint64_t done, uint64_t total)
{
    progress_log *p = ctx;
    if (done < p->last_done || done > total) p->monotonic = false;
    p->calls++;
    p->last_done = done;
    p->total = total;
}

static void test_progress_and_errors(void **state)
{
    (void)state;
    sw_gpt2 *m = tiny_model(24, 50257);
    sw_gpt2_init_random(m, 5);
    sw_dataset *ds = load("{\"prompt\": \"a b\", \"completion\": \" c\"}\n"
                          "{\"prompt\": \"d e\", \"completion\": \" f\"}\n"
                          "{\"prompt\": \"g h\", \"completion\": \" c\"}\n",
                          24);
    progress_log p = {.monotonic = true};
    sw_eval_opts o;
    sw_eval_opts_init(&o);
    o.batch_size = 2;
    o.progress = on_progress;
    o.progress_ctx = &p;
    sw_eval_result r;
    sw_diag d;
    assert_int_equal(sw_eval_run(m, ds, &o, &r, &d), 0);
    assert_true(p.monotonic);
    assert_true(p.calls >= 3);
    /* 3 records for the loss, then 3 x 2 candidates. */
    assert_int_equal(p.total, 3 + 3 * 2);
    assert_int_equal(p.last_done, p.total);

    o.batch_size = 0;
    assert_int_equal(sw_eval_run(m, ds, &o, &r, &d), SW_EINVAL);
    o.batch_size = SW_EVAL_MAX_BATCH + 1;
    assert_int_equal(sw_eval_run(m, ds, &o, &r, &d), SW_EINVAL);
    sw_dataset_free(ds);

    /* Records longer than the model's context. */
    ds = load(mixed_img, 64);
    assert_true(ds->max_len > 24);
    assert_int_equal(sw_eval_run(m, ds, NULL, &r, &d), SW_EMISMATCH);
    assert_non_null(strstr(d.msg, "e.jsonl"));
    sw_dataset_free(ds);
    sw_gpt2_free(m);

    /* Token ids beyond the model's vocabulary. */
    m = tiny_model(24, 1000);
    ds = load(mixed_img, 24);
    assert_true(ds->max_token_id >= 1000);
    assert_int_equal(sw_eval_run(m, ds, NULL, &r, &d), SW_EMISMATCH);
    assert_non_null(strstr(d.msg, "vocabulary"));
    sw_dataset_free(ds);
    sw_gpt2_free(m);
}

static void test_fixture_model(void **state)
{
    (void)state;
    sw_gpt2 *m = NULL;
    sw_diag d;
    assert_int_equal(sw_gpt2_load(SW_MODEL_DIR, &m, &d), 0);
    sw_dataset *ds = NULL;
    assert_int_equal(
        sw_dataset_load(SW_DATA_DIR "/topic-test.jsonl", tok, m->cfg.n_positions, &ds, &d), 0);
    sw_eval_result r = run(m, ds, 8);
    assert_true(isfinite(r.loss) && r.loss > 0);
    assert_int_equal(r.tokens, ds->n_scored);
    assert_int_equal(r.records, ds->n_records);
    assert_true(r.has_accuracy);
    assert_int_equal(r.choices, 4);
    assert_true(r.accuracy >= 0.0 && r.accuracy <= 1.0);
    assert_true(r.accuracy == (double)r.correct / (double)r.records);
    sw_dataset_free(ds);

    sw_gpt2_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loss_matches_direct),
        cmocka_unit_test(test_accuracy_crafted),
        cmocka_unit_test(test_accuracy_total_logprob),
        cmocka_unit_test(test_accuracy_applicability),
        cmocka_unit_test(test_accuracy_matches_direct),
        cmocka_unit_test(test_progress_and_errors),
        cmocka_unit_test(test_fixture_model),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
