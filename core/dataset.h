/*
 * dataset: a JSONL file (see jsonl.h) tokenized for a model with a context
 * of max_tokens positions, as the evaluator and the training engine use it.
 *
 * Each record is tokenized on its own, with no special tokens:
 *   text:               tokens = enc(text); scored positions 1..n-1
 *   prompt/completion:  tokens = enc(prompt) ++ enc(completion) (each part
 *                       encoded separately); scored positions are those of
 *                       the completion's tokens, never position 0
 * then cut to its first max_tokens tokens.  "Position t is scored" means the
 * loss counts -log p(tokens[t] | tokens[0..t)), so a record's scored
 * positions are first_scored..n_tokens-1 (first_scored >= 1).
 *
 * Records with nothing left to score (an empty or one-token text, an empty
 * completion, a prompt that fills the whole context) are dropped at load and
 * counted in n_dropped; every kept record has at least one scored position.
 * A file with no kept record is an error.
 *
 * The distinct completions of the file (byte-exact, including those of
 * dropped records), in order of first appearance, are kept with their
 * tokens: they are the candidates of multiple-choice scoring (eval.h).
 *
 * Ownership: a sw_dataset owns everything it points to; it is immutable
 * after loading and may be read by many threads.  The fields are read-only
 * for users.
 */
#ifndef SW_DATASET_H
#define SW_DATASET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "jsonl.h"
#include "sw_error.h"
#include "tokenizer.h"

/* The largest context a dataset is tokenized for (GPT-2's position limit). */
#define SW_DATASET_MAX_TOKENS 65536

typedef struct sw_dataset_record {
    const int32_t *tokens; /* (n_tokens) into the dataset's token pool */
    int32_t n_tokens;      /* after truncation: 2 <= n_tokens <= max_tokens */
    int32_t first_scored;  /* 1 <= first_scored < n_tokens */
    int32_t n_prompt;      /* prompt tokens, all kept (n_prompt < n_tokens); 0 for text */
    int32_t completion;    /* index into completions, or -1 for a text record */
    sw_jsonl_kind kind;
    uint64_t line; /* 1-based line in the file */
} sw_dataset_record;

/* Scored positions of a record: n_tokens - first_scored (>= 1). */
static inline int32_t sw_dataset_record_scored(const sw_dataset_record *r)
{
    return r->n_tokens - r->first_scored;
}

typedef struct sw_dataset_completion {
    const char *text; /* NUL-terminated; may hold NULs: use len */
    size_t len;
    const int32_t *tokens; /* (n_tokens) enc(text), not truncated */
    int32_t n_tokens;
} sw_dataset_completion;

typedef struct sw_dataset {
    char *name; /* the path (or name) it was loaded from */
    int max_tokens;
    size_t n_records;           /* kept records */
    sw_dataset_record *records; /* (n_records) in file order */
    size_t n_completions;
    sw_dataset_completion *completions; /* (n_completions) in order of first appearance */
    /* Over every record of the file, kept or dropped: */
    size_t n_text;
    size_t n_prompt_completion;
    size_t n_dropped;               /* nothing left to score */
    size_t n_truncated;             /* kept records cut to max_tokens */
    int64_t n_scored;               /* scored positions over kept records */
    int32_t max_len;                /* longest kept record, in tokens */
    int32_t max_token_id;           /* largest id in any record or completion */
    struct sw_dataset_store *store; /* private */
} sw_dataset;

/*
 * Loads and tokenizes a JSONL file.  max_tokens is the model's context
 * (n_positions), 2 <= max_tokens <= SW_DATASET_MAX_TOKENS.  Errors name the
 * file and, for a bad record, its line.
 */
int sw_dataset_load(const char *path, const sw_tokenizer *tok, int max_tokens, sw_dataset **out,
                    sw_diag *diag);
/* The same from a JSONL image in memory; name labels errors. */
int sw_dataset_load_mem(const void *data, size_t len, const char *name, const sw_tokenizer *tok,
                        int max_tokens, sw_dataset **out, sw_diag *diag);
/* Accepts NULL. */
void sw_dataset_free(sw_dataset *ds);

/*
 * Fills one padded batch for sw_gpt2_forward / sw_gpt2_nll from records
 * idx[0..B): tokens (B, T) padded with id 0, lengths (B), mask (B, T) with 1
 * at each scored position.  T must be >= every chosen record's n_tokens
 * (programmer error otherwise).  Returns the number of scored positions.
 */
int64_t sw_dataset_fill_batch(const sw_dataset *ds, const size_t *idx, int B, int T,
                              int32_t *tokens, int32_t *lengths, uint8_t *mask);

/* The longest n_tokens among records idx[0..B). */
int32_t sw_dataset_batch_len(const sw_dataset *ds, const size_t *idx, int B);

/* true when every record of the file was prompt/completion (and there was one). */
bool sw_dataset_all_prompt_completion(const sw_dataset *ds);

#endif
