#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "dataset.h"
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

/* The tokenizer's own ids for s (independent of the dataset code). */
static sw_tokens enc(const char *s, size_t len)
{
    sw_tokens t = {0};
    assert_int_equal(sw_tokenizer_encode(tok, s, len, &t), 0);
    return t;
}

static sw_dataset *load(const char *img, int max_tokens)
{
    sw_dataset *ds = NULL;
    sw_diag d;
    int rc = sw_dataset_load_mem(img, strlen(img), "t.jsonl", tok, max_tokens, &ds, &d);
    if (rc < 0) fail_msg("load: %s", d.msg);
    return ds;
}

static void assert_ids(const int32_t *got, const int32_t *want, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (got[i] != want[i]) fail_msg("token %zu: %d, want %d", i, got[i], want[i]);
}

static void test_text_record(void **state)
{
    (void)state;
    const char *text = "The quick brown fox jumps over the lazy dog.";
    sw_tokens want = enc(text, strlen(text));
    assert_true(want.n > 5);
    sw_dataset *ds = load("{\"text\": \"The quick brown fox jumps over the lazy dog.\"}\n", 256);
    assert_int_equal(ds->n_records, 1);
    const sw_dataset_record *r = &ds->records[0];
    assert_int_equal(r->kind, SW_JSONL_TEXT);
    assert_int_equal(r->n_tokens, (int32_t)want.n);
    assert_ids(r->tokens, want.ids, want.n);
    assert_int_equal(r->first_scored, 1);
    assert_int_equal(r->completion, -1);
    assert_int_equal(r->line, 1);
    assert_int_equal(sw_dataset_record_scored(r), (int32_t)want.n - 1);
    assert_int_equal(ds->n_scored, (int64_t)want.n - 1);
    assert_int_equal(ds->n_text, 1);
    assert_int_equal(ds->n_completions, 0);
    assert_false(sw_dataset_all_prompt_completion(ds));
    assert_string_equal(ds->name, "t.jsonl");
    sw_dataset_free(ds);
    sw_tokens_fini(&want);
}

static void test_prompt_completion_record(void **state)
{
    (void)state;
    const char *p = "Why did the chicken cross the road?\nTopic:";
    const char *c = " food";
    sw_tokens tp = enc(p, strlen(p)), tc = enc(c, strlen(c));
    sw_dataset *ds = load("\n{\"prompt\": \"Why did the chicken cross the road?\\nTopic:\", "
                          "\"completion\": \" food\"}\n",
                          256);
    assert_int_equal(ds->n_records, 1);
    const sw_dataset_record *r = &ds->records[0];
    assert_int_equal(r->kind, SW_JSONL_PROMPT_COMPLETION);
    assert_int_equal(r->line, 2);
    assert_int_equal(r->n_tokens, (int32_t)(tp.n + tc.n));
    assert_ids(r->tokens, tp.ids, tp.n);
    assert_ids(r->tokens + tp.n, tc.ids, tc.n);
    assert_int_equal(r->n_prompt, (int32_t)tp.n);
    assert_int_equal(r->first_scored, (int32_t)tp.n);
    assert_int_equal(sw_dataset_record_scored(r), (int32_t)tc.n);
    assert_int_equal(r->completion, 0);
    assert_int_equal(ds->n_completions, 1);
    assert_int_equal(ds->completions[0].len, 5);
    assert_string_equal(ds->completions[0].text, " food");
    assert_int_equal(ds->completions[0].n_tokens, (int32_t)tc.n);
    assert_ids(ds->completions[0].tokens, tc.ids, tc.n);
    assert_true(sw_dataset_all_prompt_completion(ds));

    /* fill_batch: the record padded to T = n + 3, mask on the completion only. */
    int T = r->n_tokens + 3;
    int32_t tokens[2 * 64], lengths[2];
    uint8_t mask[2 * 64];
    size_t idx[2] = {0, 0};
    assert_int_equal(sw_dataset_batch_len(ds, idx, 2), r->n_tokens);
    memset(tokens, 0x55, sizeof(tokens));
    memset(mask, 0x55, sizeof(mask));
    assert_int_equal(sw_dataset_fill_batch(ds, idx, 2, T, tokens, lengths, mask),
                     2 * (int64_t)tc.n);
    for (int b = 0; b < 2; b++) {
        assert_int_equal(lengths[b], r->n_tokens);
        for (int t = 0; t < T; t++) {
            int32_t want_tok = t < r->n_tokens ? r->tokens[t] : 0;
            assert_int_equal(tokens[b * T + t], want_tok);
            assert_int_equal(mask[b * T + t], t >= (int)tp.n && t < r->n_tokens);
        }
    }
    sw_dataset_free(ds);
    sw_tokens_fini(&tp);
    sw_tokens_fini(&tc);
}

/* An empty prompt: position 0 has no context, so the completion's first token is not scored. */
static void test_empty_prompt(void **state)
{
    (void)state;
    sw_tokens tc = enc(" science fiction", 16);
    assert_true(tc.n >= 2);
    sw_dataset *ds = load("{\"prompt\": \"\", \"completion\": \" science fiction\"}", 256);
    const sw_dataset_record *r = &ds->records[0];
    assert_int_equal(r->n_prompt, 0);
    assert_int_equal(r->first_scored, 1);
    assert_int_equal(r->n_tokens, (int32_t)tc.n);
    assert_int_equal(sw_dataset_record_scored(r), (int32_t)tc.n - 1);
    sw_dataset_free(ds);
    sw_tokens_fini(&tc);
}

static void test_truncation(void **state)
{
    (void)state;
    const char *text = "one two three four five six seven eight nine ten eleven twelve";
    sw_tokens tt = enc(text, strlen(text));
    const char *p = "alpha beta gamma delta epsilon";
    const char *c = " zeta eta theta iota kappa lambda";
    sw_tokens tp = enc(p, strlen(p)), tc = enc(c, strlen(c));
    assert_true(tt.n > 8);
    assert_true(tp.n < 8 && tp.n + tc.n > 8);
    char img[512];
    snprintf(img, sizeof(img),
             "{\"text\": \"%s\"}\n{\"prompt\": \"%s\", \"completion\": \"%s\"}\n"
             "{\"text\": \"one two\"}\n",
             text, p, c);
    sw_dataset *ds = load(img, 8);
    assert_int_equal(ds->max_tokens, 8);
    assert_int_equal(ds->n_records, 3);
    const sw_dataset_record *r0 = &ds->records[0], *r1 = &ds->records[1];
    assert_int_equal(r0->n_tokens, 8);
    assert_ids(r0->tokens, tt.ids, 8);
    assert_int_equal(sw_dataset_record_scored(r0), 7);
    assert_int_equal(r1->n_tokens, 8);
    assert_ids(r1->tokens, tp.ids, tp.n);
    assert_ids(r1->tokens + tp.n, tc.ids, 8 - tp.n);
    assert_int_equal(r1->first_scored, (int32_t)tp.n);
    assert_int_equal(sw_dataset_record_scored(r1), 8 - (int32_t)tp.n);
    assert_int_equal(r1->n_prompt, (int32_t)tp.n);
    /* The completion itself is kept whole for multiple-choice scoring. */
    assert_int_equal(ds->completions[0].n_tokens, (int32_t)tc.n);
    assert_int_equal(ds->n_truncated, 2);
    assert_int_equal(ds->max_len, 8);
    assert_int_equal(ds->n_scored, 7 + (8 - (int64_t)tp.n) + (ds->records[2].n_tokens - 1));
    sw_dataset_free(ds);
    sw_tokens_fini(&tt);
    sw_tokens_fini(&tp);
    sw_tokens_fini(&tc);
}

/* Records with nothing to score are dropped and counted; their completions still count. */
static void test_dropped_records(void **state)
{
    (void)state;
    sw_tokens one = enc("hello", 5);
    assert_int_equal(one.n, 1);
    sw_tokens_fini(&one);
    const char *p8 = "a b c d e f g h i j";
    sw_tokens tp = enc(p8, strlen(p8));
    assert_true(tp.n >= 8);
    sw_tokens_fini(&tp);
    sw_dataset *ds = load("{\"text\": \"\"}\n"
                          "{\"text\": \"hello\"}\n"
                          "{\"prompt\": \"x\", \"completion\": \"\"}\n"
                          "{\"prompt\": \"a b c d e f g h i j\", \"completion\": \" only\"}\n"
                          "{\"prompt\": \"\", \"completion\": \"hello\"}\n"
                          "{\"text\": \"hello world\"}\n",
                          8);
    assert_int_equal(ds->n_records, 1);
    assert_int_equal(ds->records[0].line, 6);
    assert_int_equal(ds->n_dropped, 5);
    assert_int_equal(ds->n_text, 3);
    assert_int_equal(ds->n_prompt_completion, 3);
    assert_int_equal(ds->n_completions, 3);
    assert_string_equal(ds->completions[1].text, " only");
    sw_dataset_free(ds);

    /* Nothing left at all: an error naming the file. */
    sw_dataset *none = NULL;
    sw_diag d;
    const char *img = "{\"text\": \"hello\"}\n\n";
    assert_int_equal(sw_dataset_load_mem(img, strlen(img), "empty.jsonl", tok, 8, &none, &d),
                     SW_EFORMAT);
    assert_null(none);
    assert_non_null(strstr(d.msg, "empty.jsonl"));
    assert_non_null(strstr(d.msg, "no record"));
    assert_int_equal(sw_dataset_load_mem("", 0, "zero.jsonl", tok, 8, &none, &d), SW_EFORMAT);
}

static void test_distinct_completions(void **state)
{
    (void)state;
    sw_dataset *ds = load("{\"prompt\": \"a\", \"completion\": \" food\"}\n"
                          "{\"prompt\": \"b\", \"completion\": \" love\"}\n"
                          "{\"prompt\": \"c\", \"completion\": \" food\"}\n"
                          "{\"prompt\": \"d\", \"completion\": \" Food\"}\n"
                          "{\"prompt\": \"e\", \"completion\": \" food\\u0000\"}\n"
                          "{\"prompt\": \"f\", \"completion\": \"food\"}\n"
                          "{\"prompt\": \"g\", \"completion\": \" love\"}\n",
                          256);
    assert_int_equal(ds->n_records, 7);
    assert_int_equal(ds->n_completions, 5);
    static const int32_t want_idx[7] = {0, 1, 0, 2, 3, 4, 1};
    for (int i = 0; i < 7; i++)
        assert_int_equal(ds->records[i].completion, want_idx[i]);
    assert_memory_equal(ds->completions[3].text, " food\0", 6);
    assert_int_equal(ds->completions[3].len, 6);
    for (size_t c = 0; c < ds->n_completions; c++) {
        sw_tokens t = enc(ds->completions[c].text, ds->completions[c].len);
        assert_int_equal(ds->completions[c].n_tokens, (int32_t)t.n);
        assert_ids(ds->completions[c].tokens, t.ids, t.n);
        sw_tokens_fini(&t);
    }
    /* Every record's completion tokens are its completion's. */
    for (size_t i = 0; i < ds->n_records; i++) {
        const sw_dataset_record *r = &ds->records[i];
        const sw_dataset_completion *c = &ds->completions[r->completion];
        assert_int_equal(r->n_tokens - r->n_prompt, c->n_tokens);
        assert_ids(r->tokens + r->n_prompt, c->tokens, (size_t)c->n_tokens);
    }
    sw_dataset_free(ds);

    /* Many distinct completions exercise the lookup table's growth. */
    size_t cap = 3000 * 64;
    char *img = malloc(cap);
    assert_non_null(img);
    size_t len = 0;
    for (int i = 0; i < 3000; i++)
        len += (size_t)snprintf(img + len, cap - len,
                                "{\"prompt\": \"q\", \"completion\": \" %d\"}\n", i % 1000);
    ds = load(img, 256);
    assert_int_equal(ds->n_completions, 1000);
    for (size_t i = 0; i < ds->n_records; i++) {
        char want[16];
        snprintf(want, sizeof(want), " %zu", i % 1000);
        assert_int_equal(ds->records[i].completion, (int32_t)(i % 1000));
        assert_string_equal(ds->completions[ds->records[i].completion].text, want);
    }
    sw_dataset_free(ds);
    free(img);
}

static void test_errors(void **state)
{
    (void)state;
    sw_dataset *ds = NULL;
    sw_diag d;
    const char *img = "{\"text\": \"fine\"}\n{\"text\": \"also fine\"}\n{\"prompt\": \"x\"}\n";
    assert_int_equal(sw_dataset_load_mem(img, strlen(img), "bad.jsonl", tok, 64, &ds, &d),
                     SW_EFORMAT);
    assert_null(ds);
    assert_non_null(strstr(d.msg, "bad.jsonl:3: \"prompt\" without \"completion\""));
    assert_int_equal(sw_dataset_load_mem(img, strlen(img), "m", tok, 1, &ds, &d), SW_EINVAL);
    assert_int_equal(
        sw_dataset_load_mem(img, strlen(img), "m", tok, SW_DATASET_MAX_TOKENS + 1, &ds, &d),
        SW_EINVAL);
    assert_int_equal(sw_dataset_load("/nonexistent/d.jsonl", tok, 64, &ds, &d), SW_ENOENT);
    assert_non_null(strstr(d.msg, "/nonexistent/d.jsonl"));
}

static void test_fixture_files(void **state)
{
    (void)state;
    sw_dataset *ds = NULL;
    sw_diag d;
    assert_int_equal(sw_dataset_load(SW_DATA_DIR "/topic-test.jsonl", tok, 256, &ds, &d), 0);
    assert_int_equal(ds->n_records + ds->n_dropped, ds->n_prompt_completion);
    assert_true(ds->n_records > 50);
    assert_true(sw_dataset_all_prompt_completion(ds));
    /* The README's four topics. */
    assert_int_equal(ds->n_completions, 4);
    int32_t max_id = -1;
    for (size_t i = 0; i < ds->n_records; i++) {
        const sw_dataset_record *r = &ds->records[i];
        assert_true(r->n_tokens >= 2 && r->n_tokens <= 256);
        assert_true(r->first_scored >= 1 && r->first_scored < r->n_tokens);
        for (int t = 0; t < r->n_tokens; t++)
            if (r->tokens[t] > max_id) max_id = r->tokens[t];
    }
    assert_true(ds->max_token_id >= max_id);
    assert_true(ds->max_token_id < sw_tokenizer_vocab_size(tok));
    assert_string_equal(ds->name, SW_DATA_DIR "/topic-test.jsonl");
    sw_dataset_free(ds);

    assert_int_equal(sw_dataset_load(SW_DATA_DIR "/task-test.jsonl", tok, 256, &ds, &d), 0);
    assert_int_equal(ds->n_text, ds->n_records + ds->n_dropped);
    assert_int_equal(ds->n_completions, 0);
    int64_t scored = 0;
    for (size_t i = 0; i < ds->n_records; i++)
        scored += ds->records[i].n_tokens - 1;
    assert_int_equal(ds->n_scored, scored);
    sw_dataset_free(ds);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_record),     cmocka_unit_test(test_prompt_completion_record),
        cmocka_unit_test(test_empty_prompt),    cmocka_unit_test(test_truncation),
        cmocka_unit_test(test_dropped_records), cmocka_unit_test(test_distinct_completions),
        cmocka_unit_test(test_errors),          cmocka_unit_test(test_fixture_files),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
