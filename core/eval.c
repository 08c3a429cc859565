/*
 * eval: loss, perplexity and multiple-choice accuracy over a dataset.
 *
 * Every sequence's nll values are summed in double in position order into a
 * per-sequence total, and totals are added in record order, so the result
 * does not depend on how records were grouped into batches beyond what the
 * forward pass itself computes.
 */
#include "eval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gpt2_forward.h"

/* Records whose candidates are scored together (sorted by length). */
#define EVAL_CHUNK_RECORDS 256

void sw_eval_opts_init(sw_eval_opts *opts)
{
    memset(opts, 0, sizeof(*opts));
    opts->batch_size = 8;
    opts->accuracy = true;
}

/* One sequence to score: record r's prompt followed by candidate c (or its own tokens). */
typedef struct eval_seq {
    size_t record;
    size_t slot;   /* accuracy: row of the record within its chunk */
    int32_t cand;  /* completion index, or -1: the record as stored */
    int32_t len;   /* tokens after truncation */
    int32_t first; /* first scored position */
    double score;  /* sum of nll over the scored positions */
} eval_seq;

typedef struct eval_ctx {
    const sw_gpt2 *m;
    const sw_dataset *ds;
    const sw_eval_opts *opts;
    sw_gpt2_acts *acts;
    int max_B, max_T;
    int32_t *tokens;  /* (B, T) */
    int32_t *lengths; /* (B) */
    uint8_t *mask;    /* (B, T) */
    float *nll;       /* (B, T) */
    uint64_t done, total;
} eval_ctx;

static int eval_cmp_seq(const void *pa, const void *pb)
{
    const eval_seq *a = pa, *b = pb;
    if (a->len != b->len) return a->len < b->len ? -1 : 1;
    if (a->record != b->record) return a->record < b->record ? -1 : 1;
    return (a->cand > b->cand) - (a->cand < b->cand);
}

/* A record index with its sort key (qsort has no context argument). */
typedef struct eval_key {
    int32_t key;
    size_t record;
} eval_key;

static int eval_cmp_key(const void *pa, const void *pb)
{
    const eval_key *a = pa, *b = pb;
    if (a->key != b->key) return a->key < b->key ? -1 : 1;
    return (a->record > b->record) - (a->record < b->record);
}

/* Writes sequence s into row (T) and its mask row (T). */
static void eval_fill_row(const sw_dataset *ds, const eval_seq *s, int T, int32_t *row,
                          uint8_t *mrow)
{
    const sw_dataset_record *r = &ds->records[s->record];
    if (s->cand < 0) {
        memcpy(row, r->tokens, (size_t)s->len * sizeof(int32_t));
    } else {
        /* A kept record's tokens begin with its whole prompt (see dataset.c). */
        const sw_dataset_completion *c = &ds->completions[s->cand];
        memcpy(row, r->tokens, (size_t)r->n_prompt * sizeof(int32_t));
        memcpy(row + r->n_prompt, c->tokens, (size_t)(s->len - r->n_prompt) * sizeof(int32_t));
    }
    memset(row + s->len, 0, (size_t)(T - s->len) * sizeof(int32_t));
    memset(mrow, 0, (size_t)T);
    memset(mrow + s->first, 1, (size_t)(s->len - s->first));
}

/* Scores seqs[0..n) (sorted by length, each with a scored position) in batches. */
static int eval_score(eval_ctx *e, eval_seq *seqs, size_t n, sw_diag *diag)
{
    const sw_gpt2 *m = e->m;
    for (size_t i = 0; i < n; i += (size_t)e->max_B) {
        int B = (int)(n - i < (size_t)e->max_B ? n - i : (size_t)e->max_B);
        int T = 0;
        for (int b = 0; b < B; b++)
            if (seqs[i + b].len > T) T = seqs[i + b].len;
        SW_ASSERT(T <= e->max_T);
        for (int b = 0; b < B; b++) {
            eval_fill_row(e->ds, &seqs[i + b], T, e->tokens + (size_t)b * T,
                          e->mask + (size_t)b * T);
            e->lengths[b] = seqs[i + b].len;
        }
        int rc = sw_gpt2_forward(m, e->acts, e->tokens, e->lengths, B, T, diag);
        if (rc == 0)
            rc = sw_gpt2_nll(e->acts, &m->cfg, m->w.lm_head, e->tokens, e->lengths, e->mask, B, T,
                             e->nll, NULL, NULL, diag);
        if (rc < 0) {
            sw_diag_prefix(diag, e->ds->name);
            return rc;
        }
        for (int b = 0; b < B; b++) {
            eval_seq *s = &seqs[i + b];
            const float *row = e->nll + (size_t)b * T; // (T)
            double sum = 0.0;
            for (int t = s->first; t < s->len; t++)
                sum += (double)row[t];
            s->score = sum;
        }
        e->done += (uint64_t)B;
        if (e->opts->progress) e->opts->progress(e->opts->progress_ctx, e->done, e->total);
    }
    return 0;
}

/* Candidate sequence of record r with completion c. */
static eval_seq eval_candidate(const sw_dataset *ds, size_t r, int32_t c)
{
    const sw_dataset_record *rec = &ds->records[r];
    int64_t total = (int64_t)rec->n_prompt + ds->completions[c].n_tokens;
    eval_seq s = {.record = r, .cand = c, .first = rec->first_scored};
    s.len = (int32_t)(total < ds->max_tokens ? total : ds->max_tokens);
    return s;
}

/*
 * Scores every candidate for every record, EVAL_CHUNK_RECORDS records at a
 * time (records ordered by prompt length, so that a chunk's sequences have
 * similar lengths), and counts the records whose own completion wins.
 */
static int eval_accuracy(eval_ctx *e, size_t *correct, sw_diag *diag)
{
    const sw_dataset *ds = e->ds;
    const size_t K = ds->n_completions;
    const size_t chunk = EVAL_CHUNK_RECORDS;
    eval_key *order = malloc(ds->n_records * sizeof(*order));
    eval_seq *seqs = malloc(chunk * K * sizeof(*seqs));
    double *scores = malloc(chunk * K * sizeof(*scores)); // (chunk, K) log-probabilities
    int rc = 0;
    if (!order || !seqs || !scores) {
        rc = sw_diag_set(diag, SW_ENOMEM, "%s: out of memory", ds->name);
        goto done;
    }
    for (size_t r = 0; r < ds->n_records; r++)
        order[r] = (eval_key){.key = ds->records[r].n_prompt, .record = r};
    qsort(order, ds->n_records, sizeof(*order), eval_cmp_key);

    size_t right = 0;
    for (size_t i0 = 0; i0 < ds->n_records; i0 += chunk) {
        size_t nr = ds->n_records - i0 < chunk ? ds->n_records - i0 : chunk;
        size_t n = 0;
        for (size_t j = 0; j < nr; j++)
            for (size_t c = 0; c < K; c++) {
                eval_seq s = eval_candidate(ds, order[i0 + j].record, (int32_t)c);
                s.slot = j;
                /* A candidate with no scored position has log-probability 0. */
                scores[j * K + c] = 0.0;
                if (s.len > s.first) seqs[n++] = s;
            }
        qsort(seqs, n, sizeof(*seqs), eval_cmp_seq);
        if ((rc = eval_score(e, seqs, n, diag)) < 0) goto done;
        for (size_t k = 0; k < n; k++)
            scores[seqs[k].slot * K + (size_t)seqs[k].cand] = -seqs[k].score;
        for (size_t j = 0; j < nr; j++) {
            const double *row = scores + j * K; // (K)
            size_t own = (size_t)ds->records[order[i0 + j].record].completion;
            bool wins = true;
            /* Strictly greater than every other candidate: a tie (or a NaN) is wrong. */
            for (size_t c = 0; c < K; c++)
                if (c != own && !(row[own] > row[c])) wins = false;
            right += wins;
        }
        if (nr * K > n) {
            e->done += (uint64_t)(nr * K - n);
            if (e->opts->progress) e->opts->progress(e->opts->progress_ctx, e->done, e->total);
        }
    }
    *correct = right;
done:
    free(order);
    free(seqs);
    free(scores);
    return rc;
}

int sw_eval_run(const sw_gpt2 *m, const sw_dataset *ds, const sw_eval_opts *opts,
                sw_eval_result *out, sw_diag *diag)
{
    SW_ASSERT(m && ds && out);
    sw_eval_opts defaults;
    if (!opts) {
        sw_eval_opts_init(&defaults);
        opts = &defaults;
    }
    if (opts->batch_size < 1 || opts->batch_size > SW_EVAL_MAX_BATCH)
        return sw_diag_set(diag, SW_EINVAL, "%s: batch size %d outside [1, %d]", ds->name,
                           opts->batch_size, SW_EVAL_MAX_BATCH);
    if (ds->n_records == 0)
        return sw_diag_set(diag, SW_EINVAL, "%s: no records to evaluate", ds->name);
    if (ds->max_token_id >= m->cfg.vocab_size)
        return sw_diag_set(diag, SW_EMISMATCH,
                           "%s: token id %d is outside the model's vocabulary of %d (tokenizer "
                           "and model do not match)",
                           ds->name, ds->max_token_id, m->cfg.vocab_size);

    bool acc = opts->accuracy && sw_dataset_all_prompt_completion(ds) && ds->n_completions >= 2 &&
               ds->n_completions <= SW_EVAL_MAX_CHOICES;
    int max_T = ds->max_len;
    if (acc)
        for (size_t r = 0; r < ds->n_records; r++)
            for (size_t c = 0; c < ds->n_completions; c++) {
                eval_seq s = eval_candidate(ds, r, (int32_t)c);
                if (s.len > max_T) max_T = s.len;
            }
    if (max_T > m->cfg.n_positions)
        return sw_diag_set(diag, SW_EMISMATCH,
                           "%s: sequences of %d tokens but the model's context is %d positions "
                           "(dataset loaded for max_tokens %d)",
                           ds->name, max_T, m->cfg.n_positions, ds->max_tokens);

    int max_B = opts->batch_size;
    if ((size_t)max_B > ds->n_records * (acc ? ds->n_completions : 1))
        max_B = (int)(ds->n_records * (acc ? ds->n_completions : 1));
    eval_ctx e = {.m = m, .ds = ds, .opts = opts, .max_B = max_B, .max_T = max_T};
    e.total = (uint64_t)ds->n_records * (acc ? 1 + ds->n_completions : 1);
    size_t bt = (size_t)max_B * (size_t)max_T;
    double *per_record = malloc(ds->n_records * sizeof(*per_record));
    eval_seq *seqs = malloc(ds->n_records * sizeof(*seqs));
    e.tokens = malloc(bt * sizeof(*e.tokens));
    e.lengths = malloc((size_t)max_B * sizeof(*e.lengths));
    e.mask = malloc(bt);
    e.nll = malloc(bt * sizeof(*e.nll));
    int rc;
    if (!per_record || !seqs || !e.tokens || !e.lengths || !e.mask || !e.nll) {
        rc = sw_diag_set(diag, SW_ENOMEM, "%s: out of memory", ds->name);
        goto done;
    }
    if ((rc = sw_gpt2_acts_alloc(&m->cfg, max_B, max_T, &e.acts, diag)) < 0) {
        sw_diag_prefix(diag, ds->name);
        goto done;
    }

    /* Loss: records sorted by length, each scored as stored. */
    for (size_t r = 0; r < ds->n_records; r++) {
        const sw_dataset_record *rec = &ds->records[r];
        seqs[r] =
            (eval_seq){.record = r, .cand = -1, .len = rec->n_tokens, .first = rec->first_scored};
    }
    qsort(seqs, ds->n_records, sizeof(*seqs), eval_cmp_seq);
    if ((rc = eval_score(&e, seqs, ds->n_records, diag)) < 0) goto done;
    /* Added in record order, so that the sum does not depend on the batching. */
    for (size_t k = 0; k < ds->n_records; k++)
        per_record[seqs[k].record] = seqs[k].score;
    double sum = 0.0;
    for (size_t r = 0; r < ds->n_records; r++)
        sum += per_record[r];

    sw_eval_result res = {0};
    res.records = ds->n_records;
    res.tokens = ds->n_scored;
    res.loss = sum / (double)ds->n_scored;
    res.perplexity = exp(res.loss);
    if (acc) {
        size_t correct = 0;
        if ((rc = eval_accuracy(&e, &correct, diag)) < 0) goto done;
        res.has_accuracy = true;
        res.correct = correct;
        res.choices = ds->n_completions;
        res.accuracy = (double)correct / (double)ds->n_records;
    }
    *out = res;
    rc = 0;

done:
    sw_gpt2_acts_free(e.acts);
    free(per_record);
    free(seqs);
    free(e.tokens);
    free(e.lengths);
    free(e.mask);
    free(e.nll);
    return rc;
}
