#include "generate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "gpt2_forward.h"

void sw_generate_opts_default(sw_generate_opts *opts)
{
    opts->max_new_tokens = 40;
    opts->temperature = 0.0f;
    opts->top_k = 0;
    opts->seed = 0;
    opts->stop_id = -1;
}

int32_t sw_generate_argmax(const float *logits, int V)
{
    int32_t best = 0;
    for (int32_t i = 1; i < V; i++)
        if (logits[i] > logits[best]) best = i;
    return best;
}

/*
 * ids[0..k) = the k largest logits, by descending value then ascending id.
 * Insertion into a sorted array: O(V) for typical logits, O(V k) at worst,
 * which is cheaper than sorting the vocabulary for the small k people use.
 */
static int generate_top_k(const float *logits, int V, int k, int32_t *ids)
{
    int n = 0;
    for (int32_t i = 0; i < V; i++) {
        float v = logits[i];
        if (n == k && !(v > logits[ids[n - 1]])) continue;
        int j = n < k ? n++ : k - 1;
        while (j > 0 && v > logits[ids[j - 1]]) {
            ids[j] = ids[j - 1];
            j--;
        }
        ids[j] = i;
    }
    return n;
}

int32_t sw_generate_sample(const float *logits, int V, float temperature, int top_k, double u,
                           int32_t *scratch)
{
    SW_ASSERT(V > 0 && temperature > 0.0f);
    const double inv_t = 1.0 / (double)temperature;
    if (top_k > 0 && top_k < V) {
        int n = generate_top_k(logits, V, top_k, scratch);
        const double max = logits[scratch[0]];
        double sum = 0.0;
        for (int j = 0; j < n; j++)
            sum += exp(((double)logits[scratch[j]] - max) * inv_t);
        const double target = u * sum;
        double cum = 0.0;
        for (int j = 0; j < n; j++) {
            cum += exp(((double)logits[scratch[j]] - max) * inv_t);
            if (cum > target) return scratch[j];
        }
        return scratch[n - 1];
    }
    double max = logits[sw_generate_argmax(logits, V)];
    double sum = 0.0;
    for (int32_t i = 0; i < V; i++)
        sum += exp(((double)logits[i] - max) * inv_t);
    const double target = u * sum;
    double cum = 0.0;
    int32_t last = 0;
    for (int32_t i = 0; i < V; i++) {
        double p = exp(((double)logits[i] - max) * inv_t);
        if (p > 0.0) last = i;
        cum += p;
        if (cum > target && p > 0.0) return i;
    }
    /* Rounding left the target just above the total: the last possible id. */
    return last;
}

static int generate_check(const sw_gpt2 *m, const int32_t *prompt, size_t n_prompt,
                          const sw_generate_opts *o, sw_diag *diag)
{
    const int V = m->cfg.vocab_size;
    if (o->max_new_tokens < 0 || o->max_new_tokens > SW_GENERATE_MAX_NEW)
        return sw_diag_set(diag, SW_EINVAL, "generate: max_new_tokens %d is outside [0, %d]",
                           o->max_new_tokens, SW_GENERATE_MAX_NEW);
    if (!isfinite(o->temperature) || o->temperature < 0.0f)
        return sw_diag_set(diag, SW_EINVAL, "generate: temperature %g is not a finite value >= 0",
                           (double)o->temperature);
    if (o->top_k < 0)
        return sw_diag_set(diag, SW_EINVAL, "generate: top_k %d is negative", o->top_k);
    if (o->stop_id < -1 || o->stop_id >= V)
        return sw_diag_set(diag, SW_EINVAL,
                           "generate: stop id %d is outside the vocabulary [0, %d)",
                           (int)o->stop_id, V);
    if (n_prompt == 0 && o->stop_id < 0)
        return sw_diag_set(diag, SW_EINVAL,
                           "generate: the prompt is empty and there is no stop id to start from");
    for (size_t i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= V)
            return sw_diag_set(
                diag, SW_EINVAL,
                "generate: prompt token %zu: id %d is outside the vocabulary [0, %d)", i,
                (int)prompt[i], V);
    return 0;
}

int sw_generate(const sw_gpt2 *m, const int32_t *prompt, size_t n_prompt,
                const sw_generate_opts *opts, int32_t *out, sw_generate_cb cb, void *user,
                sw_generate_result *result, sw_diag *diag)
{
    sw_generate_result res = {0, false, 0};
    int32_t *seq = NULL, *scratch = NULL;
    float *logits = NULL;
    unsigned char *draws = NULL;
    sw_gpt2_acts *acts = NULL;

    int rc = generate_check(m, prompt, n_prompt, opts, diag);
    if (rc != 0) goto fail;
    if (opts->max_new_tokens == 0) goto done;

    const sw_gpt2_config *cfg = &m->cfg;
    const int V = cfg->vocab_size, C = cfg->n_embd, maxT = cfg->n_positions;
    const size_t max_new = (size_t)opts->max_new_tokens;

    /* Only the last maxT prompt ids can ever be seen by the model. */
    size_t start = n_prompt > (size_t)maxT ? n_prompt - (size_t)maxT : 0;
    size_t len = n_prompt - start;
    seq = malloc((len + 1 + max_new) * sizeof *seq);
    logits = malloc((size_t)V * sizeof *logits);
    if (seq == NULL || logits == NULL) {
        rc = sw_diag_set(diag, SW_ENOMEM, "generate: out of memory");
        goto fail;
    }
    if (len > 0)
        memcpy(seq, prompt + start, len * sizeof *seq);
    else
        seq[len++] = opts->stop_id;

    const bool greedy = opts->temperature == 0.0f;
    const bool use_top_k = opts->top_k > 0 && opts->top_k < V;
    if (!greedy) {
        if (sodium_init() < 0) {
            rc = sw_diag_set(diag, SW_EIO, "generate: libsodium failed to initialise");
            goto fail;
        }
        unsigned char key[randombytes_SEEDBYTES] = {0};
        for (int i = 0; i < 8; i++)
            key[i] = (unsigned char)(opts->seed >> (8 * i));
        draws = malloc(max_new * 8);
        if (draws == NULL) {
            rc = sw_diag_set(diag, SW_ENOMEM, "generate: out of memory");
            goto fail;
        }
        randombytes_buf_deterministic(draws, max_new * 8, key);
        if (use_top_k) {
            scratch = malloc((size_t)opts->top_k * sizeof *scratch);
            if (scratch == NULL) {
                rc = sw_diag_set(diag, SW_ENOMEM, "generate: out of memory");
                goto fail;
            }
        }
    }

    size_t need_T = len + max_new - 1;
    int acts_T = need_T < (size_t)maxT ? (int)need_T : maxT;
    rc = sw_gpt2_acts_alloc(cfg, 1, acts_T, &acts, diag);
    if (rc != 0) goto fail;

    for (size_t step = 0; step < max_new; step++) {
        int T = len < (size_t)maxT ? (int)len : maxT;
        const int32_t *window = seq + (len - (size_t)T); // (1, T)
        int32_t lengths[1] = {T};
        rc = sw_gpt2_forward(m, acts, window, lengths, 1, T, diag);
        if (rc != 0) goto fail;
        res.forwards++;
        const float *last = sw_gpt2_acts_hidden(acts) + (size_t)(T - 1) * (size_t)C; // (C)
        sw_gpt2_logits(cfg, m->w.lm_head, last, 1, logits);                          // (V)
        int32_t id;
        if (greedy) {
            id = sw_generate_argmax(logits, V);
        } else {
            uint64_t x = 0;
            for (int i = 0; i < 8; i++)
                x |= (uint64_t)draws[step * 8 + (size_t)i] << (8 * i);
            double u = (double)(x >> 11) * 0x1.0p-53;
            id = sw_generate_sample(logits, V, opts->temperature, opts->top_k, u, scratch);
        }
        if (id == opts->stop_id) {
            res.hit_stop = true;
            break;
        }
        seq[len++] = id;
        if (out != NULL) out[res.n] = id;
        res.n++;
        if (cb != NULL && cb(id, user) != 0) break;
    }

done:
    rc = 0;
fail:
    sw_gpt2_acts_free(acts);
    free(draws);
    free(scratch);
    free(logits);
    free(seq);
    if (result != NULL) *result = res;
    return rc;
}
