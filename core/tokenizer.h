/*
 * tokenizer: GPT-2's byte-level BPE.  Loads vocab.json + merges.txt, or a
 * Hugging Face tokenizer.json, from a model directory.  Text is pre-split
 * with GPT-2's pattern (PCRE2, Unicode properties), each piece's UTF-8 bytes
 * are mapped through GPT-2's byte-to-unicode table and merged by rank.
 *
 * Invalid UTF-8 in the input: each maximal invalid subsequence is replaced by
 * U+FFFD before tokenizing (the WHATWG / Python errors="replace" rule), so the
 * ids equal those of the reference encoder run on the text as Node or Python
 * decode it.  Decoding is the exact inverse on valid UTF-8 input: it yields
 * the original bytes; ids whose bytes do not form whole UTF-8 characters
 * (a generated prefix of a multi-byte character) decode to those raw bytes.
 *
 * Ownership: a sw_tokenizer is immutable after loading; encode and decode may
 * be called from many threads at once.
 */
#ifndef SW_TOKENIZER_H
#define SW_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "sw_error.h"

typedef struct sw_tokenizer sw_tokenizer;

/* A growable array of token ids; zero-initialise, release with sw_tokens_fini. */
typedef struct sw_tokens {
    int32_t *ids;
    size_t n;
    size_t cap;
} sw_tokens;

void sw_tokens_fini(sw_tokens *t);
int sw_tokens_push(sw_tokens *t, int32_t id);

/* DIR/vocab.json + DIR/merges.txt if present, else DIR/tokenizer.json. */
int sw_tokenizer_load_dir(const char *dir, sw_tokenizer **out, sw_diag *diag);
int sw_tokenizer_load_files(const char *vocab_json, const char *merges_txt, sw_tokenizer **out,
                            sw_diag *diag);
int sw_tokenizer_load_json(const char *tokenizer_json, sw_tokenizer **out, sw_diag *diag);
/* Accepts NULL. */
void sw_tokenizer_free(sw_tokenizer *tok);

/* One more than the largest id in the vocabulary. */
int32_t sw_tokenizer_vocab_size(const sw_tokenizer *tok);
/* The id of "<|endoftext|>", or -1 if the vocabulary has none. */
int32_t sw_tokenizer_eos(const sw_tokenizer *tok);

/*
 * Appends the ids of text[0..len) to out.  Special tokens are not recognised
 * in text ("<|endoftext|>" is encoded as ordinary characters, as the
 * reference encoder does).
 */
int sw_tokenizer_encode(const sw_tokenizer *tok, const char *text, size_t len, sw_tokens *out);

/*
 * The pre-tokenizer alone, for tests and diagnostics: calls piece(ctx, p, n)
 * for each piece GPT-2's pattern splits text[0..len) into, in order, after
 * the invalid-UTF-8 replacement above (so p may point into a private copy,
 * valid only during the call).  A non-zero return from piece stops the split
 * and is returned.
 */
int sw_tokenizer_split(const sw_tokenizer *tok, const char *text, size_t len,
                       int (*piece)(void *ctx, const char *p, size_t n), void *ctx);

/*
 * Decodes ids into a malloc'd byte string (NUL-terminated, *len excludes the
 * NUL).  An id outside the vocabulary is SW_EINVAL.
 */
int sw_tokenizer_decode(const sw_tokenizer *tok, const int32_t *ids, size_t n, char **out,
                        size_t *len);

#endif
