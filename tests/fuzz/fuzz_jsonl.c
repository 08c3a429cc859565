/*
 * Fuzzes the JSONL reader, the record parser and the dataset builder (with
 * the fixture's real GPT-2 tokenizer, loaded once) on arbitrary file images,
 * and checks the invariants every loaded dataset must keep.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dataset.h"
#include "jsonl.h"
#include "tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static sw_tokenizer *fuzz_tok;

static void fuzz_check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "fuzz_jsonl: invariant broken: %s\n", what);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sw_diag d;
    if (!fuzz_tok && sw_tokenizer_load_dir(SW_MODEL_DIR, &fuzz_tok, &d) < 0) {
        fprintf(stderr, "fuzz_jsonl: %s\n", d.msg);
        abort();
    }

    /* The input as one line, through the parser alone. */
    sw_jsonl_record rec = {0};
    if (sw_jsonl_parse_line((const char *)data, size, "fuzz", 1, &rec, &d) == 0) {
        fuzz_check(rec.text != NULL && rec.text[rec.text_len] == '\0', "text terminated");
        fuzz_check((rec.kind == SW_JSONL_PROMPT_COMPLETION) == (rec.completion != NULL),
                   "completion present iff prompt/completion");
        sw_jsonl_record_fini(&rec);
    }

    /* The input as a file image, through the tokenizer, with a small context. */
    const int max_tokens = 16;
    sw_dataset *ds = NULL;
    if (sw_dataset_load_mem(data, size, "fuzz.jsonl", fuzz_tok, max_tokens, &ds, &d) < 0) {
        fuzz_check(d.msg[0] != '\0', "an error has a message");
        return 0;
    }
    fuzz_check(ds->n_records > 0, "a loaded dataset has records");
    int64_t scored = 0;
    int32_t vocab = sw_tokenizer_vocab_size(fuzz_tok);
    for (size_t i = 0; i < ds->n_records; i++) {
        const sw_dataset_record *r = &ds->records[i];
        fuzz_check(r->n_tokens >= 2 && r->n_tokens <= max_tokens, "record length");
        fuzz_check(r->first_scored >= 1 && r->first_scored < r->n_tokens, "first scored");
        fuzz_check(r->n_tokens <= ds->max_len, "max_len");
        for (int32_t t = 0; t < r->n_tokens; t++)
            fuzz_check(r->tokens[t] >= 0 && r->tokens[t] < vocab &&
                           r->tokens[t] <= ds->max_token_id,
                       "token ids");
        if (r->kind == SW_JSONL_PROMPT_COMPLETION) {
            fuzz_check(r->completion >= 0 && (size_t)r->completion < ds->n_completions,
                       "completion index");
            const sw_dataset_completion *c = &ds->completions[r->completion];
            fuzz_check(memcmp(r->tokens + r->n_prompt, c->tokens,
                              (size_t)(r->n_tokens - r->n_prompt) * sizeof(int32_t)) == 0,
                       "completion tokens");
        } else {
            fuzz_check(r->completion == -1 && r->first_scored == 1, "text record");
        }
        scored += sw_dataset_record_scored(r);
    }
    fuzz_check(scored == ds->n_scored, "n_scored");

    /* One batch of up to 4 records through fill_batch. */
    size_t idx[4];
    int B = ds->n_records < 4 ? (int)ds->n_records : 4;
    for (int b = 0; b < B; b++)
        idx[b] = ds->n_records - 1 - (size_t)b;
    int T = sw_dataset_batch_len(ds, idx, B);
    int32_t tokens[4 * 16], lengths[4];
    uint8_t mask[4 * 16];
    int64_t got = sw_dataset_fill_batch(ds, idx, B, T, tokens, lengths, mask);
    int64_t ones = 0;
    for (int i = 0; i < B * T; i++)
        ones += mask[i];
    fuzz_check(got == ones, "fill_batch mask count");
    sw_dataset_free(ds);
    return 0;
}
