/*
 * dataset: JSONL records tokenized into one token pool.  Pointers into the
 * pools are set once loading is done, since the pools move while they grow.
 * Distinct completions are found with an open-addressing hash table of
 * their bytes.
 */
#include "dataset.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

struct sw_dataset_store {
    int32_t *pool; /* record tokens, back to back */
    size_t pool_len, pool_cap;
    size_t *rec_off; /* (n_records) offsets into pool */
    size_t rec_cap;
    int32_t *cpool; /* completion tokens, back to back */
    size_t cpool_len, cpool_cap;
    size_t *comp_off;    /* (n_completions) offsets into cpool */
    char **comp_text;    /* (n_completions) owned strings */
    uint64_t *comp_hash; /* (n_completions) */
    size_t comp_cap;
    uint32_t *table;  /* completion index + 1, 0 when empty */
    size_t table_cap; /* a power of two */
};

/* Makes room for need elements of size elem in *p (capacity *cap). */
static int dataset_reserve(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return 0;
    size_t ncap = *cap ? *cap : 16;
    while (ncap < need) {
        if (ncap > SIZE_MAX / 2) return SW_ENOMEM;
        ncap *= 2;
    }
    if (ncap > SIZE_MAX / elem) return SW_ENOMEM;
    void *np = realloc(*p, ncap * elem);
    if (!np) return SW_ENOMEM;
    *p = np;
    *cap = ncap;
    return 0;
}

#define DATASET_RESERVE(ptr, cap, need)                                                            \
    dataset_reserve((void **)&(ptr), &(cap), (need), sizeof(*(ptr)))

void sw_dataset_free(sw_dataset *ds)
{
    if (!ds) return;
    struct sw_dataset_store *st = ds->store;
    if (st) {
        for (size_t i = 0; i < ds->n_completions; i++)
            free(st->comp_text[i]);
        free(st->pool);
        free(st->rec_off);
        free(st->cpool);
        free(st->comp_off);
        free(st->comp_text);
        free(st->comp_hash);
        free(st->table);
        free(st);
    }
    free(ds->records);
    free(ds->completions);
    free(ds->name);
    free(ds);
}

static uint64_t dataset_hash(const char *s, size_t n)
{
    uint64_t h = UINT64_C(14695981039346656037);
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= UINT64_C(1099511628211);
    }
    return h;
}

static int dataset_table_grow(sw_dataset *ds)
{
    struct sw_dataset_store *st = ds->store;
    size_t ncap = st->table_cap ? st->table_cap * 2 : 64;
    uint32_t *nt = calloc(ncap, sizeof(*nt));
    if (!nt) return SW_ENOMEM;
    for (size_t c = 0; c < ds->n_completions; c++) {
        size_t i = (size_t)st->comp_hash[c] & (ncap - 1);
        while (nt[i])
            i = (i + 1) & (ncap - 1);
        nt[i] = (uint32_t)(c + 1);
    }
    free(st->table);
    st->table = nt;
    st->table_cap = ncap;
    return 0;
}

/*
 * Finds completion s[0..n) or adds it (tokenized).  *index receives its
 * position in the completion list.
 */
static int dataset_completion(sw_dataset *ds, const sw_tokenizer *tok, const char *s, size_t n,
                              sw_tokens *scratch, int32_t *index)
{
    struct sw_dataset_store *st = ds->store;
    uint64_t h = dataset_hash(s, n);
    if (st->table_cap) {
        size_t i = (size_t)h & (st->table_cap - 1);
        while (st->table[i]) {
            size_t c = st->table[i] - 1;
            const sw_dataset_completion *dc = &ds->completions[c];
            if (st->comp_hash[c] == h && dc->len == n && memcmp(st->comp_text[c], s, n) == 0) {
                *index = (int32_t)c;
                return 0;
            }
            i = (i + 1) & (st->table_cap - 1);
        }
    }
    size_t c = ds->n_completions;
    if (c >= INT32_MAX - 1) return SW_ETOOBIG;
    if ((c + 1) * 2 > st->table_cap) {
        int rc = dataset_table_grow(ds);
        if (rc < 0) return rc;
    }
    size_t cap = st->comp_cap;
    if (DATASET_RESERVE(st->comp_off, cap, c + 1) < 0) return SW_ENOMEM;
    cap = st->comp_cap;
    if (DATASET_RESERVE(st->comp_text, cap, c + 1) < 0) return SW_ENOMEM;
    cap = st->comp_cap;
    if (DATASET_RESERVE(st->comp_hash, cap, c + 1) < 0) return SW_ENOMEM;
    cap = st->comp_cap;
    if (DATASET_RESERVE(ds->completions, cap, c + 1) < 0) return SW_ENOMEM;
    st->comp_cap = cap;

    scratch->n = 0;
    int rc = sw_tokenizer_encode(tok, s, n, scratch);
    if (rc < 0) return rc;
    if (scratch->n > INT32_MAX) return SW_ETOOBIG;
    if (DATASET_RESERVE(st->cpool, st->cpool_cap, st->cpool_len + scratch->n) < 0) return SW_ENOMEM;
    char *text = malloc(n + 1);
    if (!text) return SW_ENOMEM;
    memcpy(text, s, n);
    text[n] = '\0';

    st->comp_off[c] = st->cpool_len;
    if (scratch->n) memcpy(st->cpool + st->cpool_len, scratch->ids, scratch->n * sizeof(int32_t));
    st->cpool_len += scratch->n;
    st->comp_text[c] = text;
    st->comp_hash[c] = h;
    ds->completions[c] = (sw_dataset_completion){
        .text = text, .len = n, .tokens = NULL, .n_tokens = (int32_t)scratch->n};
    for (size_t i = 0; i < scratch->n; i++)
        if (scratch->ids[i] > ds->max_token_id) ds->max_token_id = scratch->ids[i];
    ds->n_completions = c + 1;

    size_t i = (size_t)h & (st->table_cap - 1);
    while (st->table[i])
        i = (i + 1) & (st->table_cap - 1);
    st->table[i] = (uint32_t)(c + 1);
    *index = (int32_t)c;
    return 0;
}

/* Appends a kept record whose tokens are a[0..na) ++ b[0..nb). */
static int dataset_append(sw_dataset *ds, const int32_t *a, size_t na, const int32_t *b, size_t nb,
                          const sw_dataset_record *rec)
{
    struct sw_dataset_store *st = ds->store;
    size_t i = ds->n_records;
    size_t cap = st->rec_cap;
    if (DATASET_RESERVE(st->rec_off, cap, i + 1) < 0) return SW_ENOMEM;
    cap = st->rec_cap;
    if (DATASET_RESERVE(ds->records, cap, i + 1) < 0) return SW_ENOMEM;
    st->rec_cap = cap;
    if (DATASET_RESERVE(st->pool, st->pool_cap, st->pool_len + na + nb) < 0) return SW_ENOMEM;
    st->rec_off[i] = st->pool_len;
    if (na) memcpy(st->pool + st->pool_len, a, na * sizeof(int32_t));
    if (nb) memcpy(st->pool + st->pool_len + na, b, nb * sizeof(int32_t));
    for (size_t k = 0; k < na + nb; k++)
        if (st->pool[st->pool_len + k] > ds->max_token_id)
            ds->max_token_id = st->pool[st->pool_len + k];
    st->pool_len += na + nb;
    ds->records[i] = *rec;
    ds->n_records = i + 1;
    if (rec->n_tokens > ds->max_len) ds->max_len = rec->n_tokens;
    ds->n_scored += sw_dataset_record_scored(rec);
    return 0;
}

static int dataset_add(sw_dataset *ds, const sw_tokenizer *tok, const sw_jsonl_record *jr,
                       sw_tokens *scratch, sw_tokens *scratch2)
{
    const size_t max = (size_t)ds->max_tokens;
    sw_dataset_record rec = {.kind = jr->kind, .line = jr->line, .completion = -1};
    scratch->n = 0;
    int rc = sw_tokenizer_encode(tok, jr->text, jr->text_len, scratch);
    if (rc < 0) return rc;
    if (scratch->n > INT32_MAX / 2) return SW_ETOOBIG;

    if (jr->kind == SW_JSONL_TEXT) {
        ds->n_text++;
        size_t n = scratch->n < max ? scratch->n : max;
        if (n < 2) {
            ds->n_dropped++;
            return 0;
        }
        rec.n_tokens = (int32_t)n;
        rec.first_scored = 1;
        if (scratch->n > max) ds->n_truncated++;
        return dataset_append(ds, scratch->ids, n, NULL, 0, &rec);
    }

    ds->n_prompt_completion++;
    rc = dataset_completion(ds, tok, jr->completion, jr->completion_len, scratch2, &rec.completion);
    if (rc < 0) return rc;
    const sw_dataset_completion *c = &ds->completions[rec.completion];
    const int32_t *ctok = ds->store->cpool + ds->store->comp_off[rec.completion];
    size_t np = scratch->n;
    size_t total = np + (size_t)c->n_tokens;
    size_t n = total < max ? total : max;
    size_t first = np > 1 ? np : 1;
    if (n <= first) {
        ds->n_dropped++;
        return 0;
    }
    rec.n_tokens = (int32_t)n;
    rec.first_scored = (int32_t)first;
    rec.n_prompt = (int32_t)np;
    if (total > max) ds->n_truncated++;
    /* n > first >= np here, so the whole prompt fits. */
    return dataset_append(ds, scratch->ids, np, ctok, n - np, &rec);
}

static int dataset_read(sw_jsonl_reader *rd, const sw_tokenizer *tok, int max_tokens,
                        sw_dataset **out, sw_diag *diag)
{
    const char *name = sw_jsonl_name(rd);
    sw_tokens scratch = {0}, scratch2 = {0};
    sw_jsonl_record jr = {0};
    int rc;
    sw_dataset *ds = calloc(1, sizeof(*ds));
    if (!ds || !(ds->store = calloc(1, sizeof(*ds->store))) || !(ds->name = strdup(name))) {
        rc = sw_diag_set(diag, SW_ENOMEM, "%s: out of memory", name);
        goto fail;
    }
    ds->max_tokens = max_tokens;
    ds->max_token_id = -1;

    while ((rc = sw_jsonl_next(rd, &jr, diag)) > 0) {
        rc = dataset_add(ds, tok, &jr, &scratch, &scratch2);
        if (rc < 0) {
            if (rc == SW_ENOMEM)
                sw_diag_set(diag, rc, "%s:%llu: out of memory", name, (unsigned long long)jr.line);
            else
                sw_diag_set(diag, rc, "%s:%llu: cannot tokenize the record: %s", name,
                            (unsigned long long)jr.line, sw_strerror(rc));
            goto fail;
        }
        sw_jsonl_record_fini(&jr);
    }
    if (rc < 0) goto fail;
    if (ds->n_records == 0) {
        rc = sw_diag_set(diag, SW_EFORMAT,
                         "%s: no record with a token to score (%zu records read, %zu with "
                         "nothing to score)",
                         name, ds->n_text + ds->n_prompt_completion, ds->n_dropped);
        goto fail;
    }

    struct sw_dataset_store *st = ds->store;
    for (size_t i = 0; i < ds->n_records; i++)
        ds->records[i].tokens = st->pool + st->rec_off[i];
    for (size_t c = 0; c < ds->n_completions; c++)
        ds->completions[c].tokens = st->cpool + st->comp_off[c];
    /* The lookup table is needed only while loading. */
    free(st->table);
    st->table = NULL;
    st->table_cap = 0;
    sw_tokens_fini(&scratch);
    sw_tokens_fini(&scratch2);
    *out = ds;
    return 0;

fail:
    sw_jsonl_record_fini(&jr);
    sw_tokens_fini(&scratch);
    sw_tokens_fini(&scratch2);
    sw_dataset_free(ds);
    return rc;
}

static int dataset_check_max(const char *name, int max_tokens, sw_diag *diag)
{
    if (max_tokens < 2 || max_tokens > SW_DATASET_MAX_TOKENS)
        return sw_diag_set(diag, SW_EINVAL, "%s: max_tokens %d outside [2, %d]", name, max_tokens,
                           SW_DATASET_MAX_TOKENS);
    return 0;
}

int sw_dataset_load(const char *path, const sw_tokenizer *tok, int max_tokens, sw_dataset **out,
                    sw_diag *diag)
{
    SW_ASSERT(path && tok && out);
    int rc = dataset_check_max(path, max_tokens, diag);
    if (rc < 0) return rc;
    sw_jsonl_reader *rd;
    if ((rc = sw_jsonl_open(path, &rd, diag)) < 0) return rc;
    rc = dataset_read(rd, tok, max_tokens, out, diag);
    sw_jsonl_close(rd);
    return rc;
}

int sw_dataset_load_mem(const void *data, size_t len, const char *name, const sw_tokenizer *tok,
                        int max_tokens, sw_dataset **out, sw_diag *diag)
{
    SW_ASSERT(tok && out);
    if (!name) name = "<memory>";
    int rc = dataset_check_max(name, max_tokens, diag);
    if (rc < 0) return rc;
    sw_jsonl_reader *rd;
    if ((rc = sw_jsonl_open_mem(data, len, name, &rd, diag)) < 0) return rc;
    rc = dataset_read(rd, tok, max_tokens, out, diag);
    sw_jsonl_close(rd);
    return rc;
}

int32_t sw_dataset_batch_len(const sw_dataset *ds, const size_t *idx, int B)
{
    int32_t T = 0;
    for (int b = 0; b < B; b++) {
        SW_ASSERT(idx[b] < ds->n_records);
        if (ds->records[idx[b]].n_tokens > T) T = ds->records[idx[b]].n_tokens;
    }
    return T;
}

int64_t sw_dataset_fill_batch(const sw_dataset *ds, const size_t *idx, int B, int T,
                              int32_t *tokens, int32_t *lengths, uint8_t *mask)
{
    int64_t scored = 0;
    for (int b = 0; b < B; b++) {
        SW_ASSERT(idx[b] < ds->n_records);
        const sw_dataset_record *r = &ds->records[idx[b]];
        SW_ASSERT(r->n_tokens <= T);
        int32_t *row = tokens + (size_t)b * (size_t)T; // (T)
        uint8_t *mrow = mask + (size_t)b * (size_t)T;  // (T)
        memcpy(row, r->tokens, (size_t)r->n_tokens * sizeof(int32_t));
        memset(row + r->n_tokens, 0, (size_t)(T - r->n_tokens) * sizeof(int32_t));
        memset(mrow, 0, (size_t)T);
        memset(mrow + r->first_scored, 1, (size_t)(r->n_tokens - r->first_scored));
        lengths[b] = r->n_tokens;
        scored += sw_dataset_record_scored(r);
    }
    return scored;
}

bool sw_dataset_all_prompt_completion(const sw_dataset *ds)
{
    return ds->n_text == 0 && ds->n_prompt_completion > 0;
}
