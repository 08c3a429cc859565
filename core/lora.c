/*
 * lora: adapter targets, initialisation, merging and PEFT files (lora.h).
 */
#include "lora.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "fileio.h"
#include "safetensors.h"

int sw_lora_targets_parse(const char *list, unsigned *bits, sw_diag *diag)
{
    unsigned b = 0;
    const char *p = list;
    if (*p == '\0') return sw_diag_set(diag, SW_EINVAL, "lora_targets: empty (name at least one of %s)",
                                       SW_LORA_TARGETS_ALL);
    while (*p) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        int k = -1;
        for (int i = 0; i < SW_LORA_N_TARGETS; i++)
            if (strlen(sw_lora_target_name(i)) == n && memcmp(sw_lora_target_name(i), p, n) == 0)
                k = i;
        if (k < 0)
            return sw_diag_set(diag, SW_EINVAL, "lora_targets: '%.*s' is not one of %s", (int)n, p,
                               SW_LORA_TARGETS_ALL);
        if (b & (1u << k))
            return sw_diag_set(diag, SW_EINVAL, "lora_targets: '%s' given twice",
                               sw_lora_target_name(k));
        b |= 1u << k;
        if (!end) break;
        p = end + 1;
        if (*p == '\0')
            return sw_diag_set(diag, SW_EINVAL, "lora_targets: ends with a comma");
    }
    *bits = b;
    return 0;
}

void sw_lora_targets_text(unsigned bits, char *buf, size_t size)
{
    size_t n = 0;
    if (size == 0) return;
    buf[0] = '\0';
    for (int k = 0; k < SW_LORA_N_TARGETS; k++) {
        if (!(bits & (1u << k))) continue;
        int w = snprintf(buf + n, size - n, "%s%s", n ? "," : "", sw_lora_target_name(k));
        if (w < 0 || (size_t)w >= size - n) return;
        n += (size_t)w;
    }
}

int sw_lora_attach(const sw_gpt2 *base, const sw_gpt2_config *cfg_lora, const uint8_t seed[32],
                   sw_gpt2 **out, sw_diag *diag)
{
    if (base->cfg.lora_rank != 0 || cfg_lora->lora_rank <= 0 ||
        !sw_gpt2_config_same_base(&base->cfg, cfg_lora))
        return sw_diag_set(diag, SW_EINVAL,
                           "adapters: a plain base model and an adapter of its architecture "
                           "are needed");
    sw_gpt2 *m = NULL;
    int rc = sw_gpt2_alloc(cfg_lora, &m, diag);
    if (rc != 0) return rc;
    /* the base's part of the canonical order is the plain model's */
    memcpy(m->params, base->params, base->n_params * sizeof(float));

    static const char tag[] = "swarmtune-lora-init-v1";
    uint8_t key[crypto_stream_chacha20_ietf_KEYBYTES];
    crypto_generichash_state h;
    SW_ASSERT(sodium_init() >= 0);
    crypto_generichash_init(&h, NULL, 0, sizeof key);
    crypto_generichash_update(&h, (const unsigned char *)tag, sizeof tag - 1);
    crypto_generichash_update(&h, seed, 32);
    crypto_generichash_final(&h, key, sizeof key);
    const uint8_t nonce[crypto_stream_chacha20_ietf_NONCEBYTES] = {0};
    uint64_t drawn = 0; /* 32-bit words of the stream used so far */
    const size_t nb = sw_gpt2_base_tensor_count(cfg_lora), n = sw_gpt2_tensor_count(cfg_lora);
    for (size_t i = nb; i < n; i++) {
        sw_gpt2_tensor t;
        sw_gpt2_tensor_at(cfg_lora, i, &t);
        if (t.kind != SW_GPT2_LORA_A) continue; /* B stays zero */
        const double bound = 1.0 / sqrt((double)t.shape[1]);
        float *a = m->params + t.offset;
        for (size_t j = 0; j < t.numel;) {
            /* one ChaCha20 block (16 words) at a time, at its position in the stream */
            uint8_t blk[64];
            const uint64_t word = drawn + j;
            memset(blk, 0, sizeof blk);
            crypto_stream_chacha20_ietf_xor_ic(blk, blk, sizeof blk, nonce, (uint32_t)(word / 16),
                                               key);
            for (size_t w = word % 16; w < 16 && j < t.numel; w++, j++) {
                const uint32_t v = (uint32_t)blk[4 * w] | (uint32_t)blk[4 * w + 1] << 8 |
                                   (uint32_t)blk[4 * w + 2] << 16 | (uint32_t)blk[4 * w + 3] << 24;
                /* (v + 0.5) / 2^32 in (0, 1), exact in double; then [-bound, bound] */
                const double u = ((double)v + 0.5) * 0x1p-32;
                a[j] = (float)((2.0 * u - 1.0) * bound);
            }
        }
        drawn += t.numel;
    }
    sodium_memzero(key, sizeof key);
    *out = m;
    return 0;
}

int sw_lora_initial_weights(const sw_gpt2 *base, const sw_gpt2_config *model, sw_fixed **out,
                            sw_diag *diag)
{
    if (model->lora_rank == 0) return sw_fixed_from_model(base, out, diag);
    uint8_t seed[SW_GPT2_DIGEST_BYTES];
    sw_gpt2_digest(base, seed);
    sw_gpt2 *m = NULL;
    int rc = sw_lora_attach(base, model, seed, &m, diag);
    if (rc == 0) rc = sw_fixed_from_model(m, out, diag);
    sw_gpt2_free(m);
    return rc;
}

int sw_lora_merge(const sw_gpt2 *m, sw_gpt2 **out, sw_diag *diag)
{
    sw_gpt2_config plain = m->cfg;
    plain.lora_rank = 0;
    plain.lora_alpha = 0.0f;
    plain.lora_targets = 0;
    sw_gpt2 *p = NULL;
    int rc = sw_gpt2_alloc(&plain, &p, diag);
    if (rc != 0) return rc;
    memcpy(p->params, m->params, p->n_params * sizeof(float));
    const sw_gpt2_config *cfg = &m->cfg;
    const int r = cfg->lora_rank;
    const double s = r > 0 ? (double)cfg->lora_alpha / (double)r : 0.0;
    for (int l = 0; r > 0 && l < cfg->n_layer; l++) {
        const sw_gpt2_layer *lw = &m->w.layers[l];
        float *w[SW_LORA_N_TARGETS] = {
            (float *)p->w.layers[l].attn_w, (float *)p->w.layers[l].attn_proj_w,
            (float *)p->w.layers[l].fc_w, (float *)p->w.layers[l].fc_proj_w};
        for (int k = 0; k < SW_LORA_N_TARGETS; k++) {
            if (lw->lora_a[k] == NULL) continue;
            int in, o;
            sw_lora_target_dims(cfg, k, &in, &o);
            const float *A = lw->lora_a[k], *B = lw->lora_b[k];
            /* W is [in, out] (Conv1D): W[i][j] += s * sum_q A[q][i] * B[j][q] */
            for (int i = 0; i < in; i++) {
                for (int j = 0; j < o; j++) {
                    double acc = 0.0;
                    for (int q = 0; q < r; q++)
                        acc += (double)A[(size_t)q * in + i] * (double)B[(size_t)j * r + q];
                    float *x = &w[k][(size_t)i * o + j];
                    *x = (float)((double)*x + s * acc);
                }
            }
        }
    }
    *out = p;
    return 0;
}

int sw_lora_write_peft(const sw_gpt2 *m, const char *dir, const char *base_name, sw_diag *diag)
{
    const sw_gpt2_config *cfg = &m->cfg;
    if (cfg->lora_rank <= 0)
        return sw_diag_set(diag, SW_EINVAL, "%s: the model has no adapters to write", dir);
    const size_t nb = sw_gpt2_base_tensor_count(cfg), n = sw_gpt2_tensor_count(cfg);
    sw_st_write_tensor *wt = calloc(n - nb, sizeof *wt);
    char(*names)[128] = calloc(n - nb, sizeof *names);
    char path[4096];
    char *json = NULL, *esc = NULL;
    int rc = 0;
    if (!wt || !names) {
        rc = sw_diag_set(diag, SW_ENOMEM, "%s: out of memory", dir);
        goto out;
    }
    for (size_t i = nb; i < n; i++) {
        sw_gpt2_tensor t;
        sw_gpt2_tensor_at(cfg, i, &t);
        snprintf(names[i - nb], sizeof names[0], "base_model.model.transformer.%s", t.name);
        wt[i - nb] = (sw_st_write_tensor){.name = names[i - nb],
                                          .ndim = 2,
                                          .shape = {t.shape[0], t.shape[1]},
                                          .data = m->params + t.offset};
    }
    if (snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir) >= (int)sizeof path) {
        rc = sw_diag_set(diag, SW_ETOOBIG, "%s: path too long", dir);
        goto out;
    }
    if ((rc = sw_safetensors_write(path, wt, n - nb, SW_DTYPE_F32, diag)) != 0) goto out;

    char list[160] = "";
    size_t len = 0;
    for (int k = 0; k < SW_LORA_N_TARGETS; k++) {
        if (!(cfg->lora_targets & (1u << k))) continue;
        len += (size_t)snprintf(list + len, sizeof list - len, "%s\"%s\"", len ? ", " : "",
                                sw_lora_target_name(k));
    }
    {
        /* base_name is the operator's path: JSON-escape it */
        size_t bl = strlen(base_name);
        esc = malloc(bl * 6 + 1);
        if (!esc) {
            rc = sw_diag_set(diag, SW_ENOMEM, "%s: out of memory", dir);
            goto out;
        }
        size_t e = 0;
        for (size_t i = 0; i < bl; i++) {
            const unsigned char c = (unsigned char)base_name[i];
            if (c == '"' || c == '\\') {
                esc[e++] = '\\';
                esc[e++] = (char)c;
            } else if (c < 0x20) {
                e += (size_t)sprintf(esc + e, "\\u%04x", c);
            } else {
                esc[e++] = (char)c;
            }
        }
        esc[e] = '\0';
    }
    static const char fmt[] = "{\n"
                      "  \"peft_type\": \"LORA\",\n"
                      "  \"task_type\": \"CAUSAL_LM\",\n"
                      "  \"base_model_name_or_path\": \"%s\",\n"
                      "  \"r\": %d,\n"
                      "  \"lora_alpha\": %.9g,\n"
                      "  \"lora_dropout\": 0.0,\n"
                      "  \"target_modules\": [%s],\n"
                      "  \"fan_in_fan_out\": true,\n"
                      "  \"bias\": \"none\",\n"
                      "  \"inference_mode\": true\n"
                      "}\n";
    const int jl = snprintf(NULL, 0, fmt, esc, cfg->lora_rank, (double)cfg->lora_alpha, list);
    if (jl < 0 || !(json = malloc((size_t)jl + 1))) {
        free(esc);
        rc = sw_diag_set(diag, SW_ENOMEM, "%s: out of memory", dir);
        goto out;
    }
    snprintf(json, (size_t)jl + 1, fmt, esc, cfg->lora_rank, (double)cfg->lora_alpha, list);
    free(esc);
    if (snprintf(path, sizeof path, "%s/adapter_config.json", dir) >= (int)sizeof path) {
        rc = sw_diag_set(diag, SW_ETOOBIG, "%s: path too long", dir);
        goto out;
    }
    rc = sw_file_write_atomic(path, json, (size_t)jl, 0644, diag);
out:
    free(json);
    free(wt);
    free(names);
    return rc;
}
