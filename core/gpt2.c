/*
 * gpt2: the canonical tensor table, the parameter block, loading from and
 * saving to Hugging Face model directories, the weight digest and GPT-2's
 * random initialisation.  See gpt2.h for the contract and docs/model.md for
 * the byte layouts.
 */
#include "gpt2.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "fileio.h"
#include "gpt2_config.h"
#include "safetensors.h"
#include "sw_error.h"

#define GPT2_PREFIX "transformer."
#define GPT2_PATH_MAX 4096
/* Tensors per block, in canonical order. */
#define GPT2_PER_LAYER 12

static const char *const gpt2_layer_suffix[GPT2_PER_LAYER] = {
    "ln_1.weight",        "ln_1.bias",        "attn.c_attn.weight", "attn.c_attn.bias",
    "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight",        "ln_2.bias",
    "mlp.c_fc.weight",    "mlp.c_fc.bias",    "mlp.c_proj.weight",  "mlp.c_proj.bias",
};

/* Floats in one block: 12 C^2 + 13 C. */
static size_t gpt2_layer_numel(size_t C)
{
    return 12 * C * C + 13 * C;
}

/* Shape of block tensor k (0..11) and its offset inside the block. */
static void gpt2_layer_entry(size_t C, int k, int *ndim, int64_t shape[2], size_t *within)
{
    /* (rows, cols) per entry; cols == 0 marks a vector */
    const size_t rows[GPT2_PER_LAYER] = {C, C, C, 3 * C, C, C, C, C, C, 4 * C, 4 * C, C};
    const size_t cols[GPT2_PER_LAYER] = {0, 0, 3 * C, 0, C, 0, 0, 0, 4 * C, 0, C, 0};
    size_t off = 0;
    for (int j = 0; j < k; j++)
        off += rows[j] * (cols[j] ? cols[j] : 1);
    *within = off;
    shape[0] = (int64_t)rows[k];
    shape[1] = (int64_t)cols[k];
    *ndim = cols[k] ? 2 : 1;
}

size_t sw_gpt2_base_tensor_count(const sw_gpt2_config *cfg)
{
    return 4 + GPT2_PER_LAYER * (size_t)cfg->n_layer + (cfg->tie_word_embeddings ? 0 : 1);
}

/* Adapted weights per layer. */
static size_t gpt2_lora_targets(const sw_gpt2_config *cfg)
{
    if (cfg->lora_rank <= 0) return 0;
    size_t n = 0;
    for (int k = 0; k < SW_LORA_N_TARGETS; k++)
        n += (cfg->lora_targets >> k) & 1u;
    return n;
}

size_t sw_gpt2_tensor_count(const sw_gpt2_config *cfg)
{
    return sw_gpt2_base_tensor_count(cfg) + 2 * gpt2_lora_targets(cfg) * (size_t)cfg->n_layer;
}

/* Adapter tensor j (0-based after the base tensors). */
static void gpt2_lora_entry(const sw_gpt2_config *cfg, size_t j, sw_gpt2_tensor *out)
{
    const size_t per = 2 * gpt2_lora_targets(cfg);
    const size_t l = j / per, e = j % per, r = (size_t)cfg->lora_rank;
    size_t off = (size_t)sw_gpt2_config_param_count(cfg) -
                 (size_t)cfg->n_layer * (size_t)sw_lora_layer_params(cfg) +
                 l * (size_t)sw_lora_layer_params(cfg);
    size_t seen = 0;
    for (int k = 0; k < SW_LORA_N_TARGETS; k++) {
        if (!(cfg->lora_targets & (1u << k))) continue;
        int in, o;
        sw_lora_target_dims(cfg, k, &in, &o);
        for (int ab = 0; ab < 2; ab++, seen++) {
            const int64_t rows = ab == 0 ? (int64_t)r : o, cols = ab == 0 ? in : (int64_t)r;
            if (seen == e) {
                snprintf(out->name, sizeof(out->name), "h.%zu.%s.lora_%c.weight", l,
                         sw_lora_target_name(k), ab == 0 ? 'A' : 'B');
                out->kind = ab == 0 ? SW_GPT2_LORA_A : SW_GPT2_LORA_B;
                out->layer = (int)l;
                out->target = k;
                out->ndim = 2;
                out->shape[0] = rows;
                out->shape[1] = cols;
                out->offset = off;
                return;
            }
            off += (size_t)(rows * cols);
        }
    }
    SW_ASSERT(0);
}

void sw_gpt2_tensor_at(const sw_gpt2_config *cfg, size_t i, sw_gpt2_tensor *out)
{
    SW_ASSERT(i < sw_gpt2_tensor_count(cfg));
    const size_t C = (size_t)cfg->n_embd, V = (size_t)cfg->vocab_size;
    const size_t P = (size_t)cfg->n_positions, L = (size_t)cfg->n_layer;
    const size_t blocks = V * C + P * C;                  /* first float of block 0 */
    const size_t tail = blocks + L * gpt2_layer_numel(C); /* first float of ln_f */
    memset(out, 0, sizeof(*out));
    out->layer = -1;
    out->target = -1;
    if (i >= sw_gpt2_base_tensor_count(cfg)) {
        gpt2_lora_entry(cfg, i - sw_gpt2_base_tensor_count(cfg), out);
    } else if (i == 0) {
        snprintf(out->name, sizeof(out->name), "wte.weight");
        out->kind = SW_GPT2_WTE;
        out->ndim = 2;
        out->shape[0] = (int64_t)V;
        out->shape[1] = (int64_t)C;
        out->offset = 0;
    } else if (i == 1) {
        snprintf(out->name, sizeof(out->name), "wpe.weight");
        out->kind = SW_GPT2_WPE;
        out->ndim = 2;
        out->shape[0] = (int64_t)P;
        out->shape[1] = (int64_t)C;
        out->offset = V * C;
    } else if (i < 2 + GPT2_PER_LAYER * L) {
        const size_t l = (i - 2) / GPT2_PER_LAYER;
        const int k = (int)((i - 2) % GPT2_PER_LAYER);
        size_t within;
        gpt2_layer_entry(C, k, &out->ndim, out->shape, &within);
        snprintf(out->name, sizeof(out->name), "h.%zu.%s", l, gpt2_layer_suffix[k]);
        out->kind = (sw_gpt2_kind)(SW_GPT2_LN1_W + k);
        out->layer = (int)l;
        out->offset = blocks + l * gpt2_layer_numel(C) + within;
    } else {
        const size_t j = i - (2 + GPT2_PER_LAYER * L);
        if (j == 2) {
            snprintf(out->name, sizeof(out->name), "lm_head.weight");
            out->kind = SW_GPT2_LM_HEAD;
            out->ndim = 2;
            out->shape[0] = (int64_t)V;
            out->shape[1] = (int64_t)C;
            out->offset = tail + 2 * C;
        } else {
            snprintf(out->name, sizeof(out->name), j == 0 ? "ln_f.weight" : "ln_f.bias");
            out->kind = j == 0 ? SW_GPT2_LNF_W : SW_GPT2_LNF_B;
            out->ndim = 1;
            out->shape[0] = (int64_t)C;
            out->offset = tail + j * C;
        }
    }
    out->numel = (size_t)out->shape[0] * (out->ndim == 2 ? (size_t)out->shape[1] : 1);
}

/* Floats in the canonical block: the end of the last tensor. */
static size_t gpt2_numel(const sw_gpt2_config *cfg)
{
    sw_gpt2_tensor t;
    sw_gpt2_tensor_at(cfg, sw_gpt2_tensor_count(cfg) - 1, &t);
    return t.offset + t.numel;
}

void sw_gpt2_weights_view(const sw_gpt2_config *cfg, const float *params, sw_gpt2_weights *out)
{
    SW_ASSERT(cfg->n_layer >= 0 && cfg->n_layer <= SW_GPT2_MAX_LAYERS);
    const size_t C = (size_t)cfg->n_embd, V = (size_t)cfg->vocab_size;
    const size_t P = (size_t)cfg->n_positions, L = (size_t)cfg->n_layer;
    memset(out, 0, sizeof(*out));
    out->wte = params;
    out->wpe = params + V * C;
    const float *p = params + V * C + P * C;
    for (size_t l = 0; l < L; l++) {
        sw_gpt2_layer *lw = &out->layers[l];
        lw->ln_1_w = p;
        p += C;
        lw->ln_1_b = p;
        p += C;
        lw->attn_w = p;
        p += 3 * C * C;
        lw->attn_b = p;
        p += 3 * C;
        lw->attn_proj_w = p;
        p += C * C;
        lw->attn_proj_b = p;
        p += C;
        lw->ln_2_w = p;
        p += C;
        lw->ln_2_b = p;
        p += C;
        lw->fc_w = p;
        p += 4 * C * C;
        lw->fc_b = p;
        p += 4 * C;
        lw->fc_proj_w = p;
        p += 4 * C * C;
        lw->fc_proj_b = p;
        p += C;
    }
    out->ln_f_w = p;
    out->ln_f_b = p + C;
    out->lm_head = cfg->tie_word_embeddings ? params : p + 2 * C;
    const size_t base = sw_gpt2_base_tensor_count(cfg), count = sw_gpt2_tensor_count(cfg);
    for (size_t i = base; i < count; i++) {
        sw_gpt2_tensor t;
        sw_gpt2_tensor_at(cfg, i, &t);
        sw_gpt2_layer *lw = &out->layers[t.layer];
        if (t.kind == SW_GPT2_LORA_A)
            lw->lora_a[t.target] = params + t.offset;
        else
            lw->lora_b[t.target] = params + t.offset;
    }
}

int sw_gpt2_alloc(const sw_gpt2_config *cfg, sw_gpt2 **out, sw_diag *diag)
{
    int rc = sw_gpt2_config_validate(cfg, "model config", diag);
    if (rc < 0) return rc;
    /* validation bounds the parameter count to SW_GPT2_MAX_PARAMS */
    const size_t n = gpt2_numel(cfg);
    if ((uint64_t)n != sw_gpt2_config_param_count(cfg) || n > SIZE_MAX / sizeof(float))
        return sw_diag_set(diag, SW_ETOOBIG, "model config: %zu parameters cannot be allocated", n);
    sw_gpt2 *m = calloc(1, sizeof(*m));
    if (!m) return sw_diag_set(diag, SW_ENOMEM, "model: out of memory");
    void *p = NULL;
    if (posix_memalign(&p, 64, n * sizeof(float)) != 0) {
        free(m);
        return sw_diag_set(diag, SW_ENOMEM, "model: cannot allocate %zu parameters (%zu MiB)", n,
                           n * sizeof(float) >> 20);
    }
    memset(p, 0, n * sizeof(float));
    m->cfg = *cfg;
    m->n_params = n;
    m->params = p;
    sw_gpt2_weights_view(&m->cfg, m->params, &m->w);
    *out = m;
    return 0;
}

void sw_gpt2_free(sw_gpt2 *m)
{
    if (!m) return;
    free(m->params);
    free(m);
}

/* A decimal layer index with no sign and no leading zero; -1 if none. */
static long gpt2_parse_layer(const char *s, const char **end)
{
    if (s[0] < '0' || s[0] > '9' || (s[0] == '0' && s[1] >= '0' && s[1] <= '9')) return -1;
    long v = 0;
    while (*s >= '0' && *s <= '9') {
        if (v > 100000) return -1;
        v = v * 10 + (*s - '0');
        s++;
    }
    *end = s;
    return v;
}

enum {
    GPT2_NAME_UNKNOWN = -1,
    GPT2_NAME_IGNORED = -2, /* attention-mask buffers, or a head tied to wte */
};

/* Canonical index of a name (prefix already removed), or GPT2_NAME_*. */
static long gpt2_name_index(const sw_gpt2_config *cfg, const char *name)
{
    const long L = cfg->n_layer;
    if (strcmp(name, "wte.weight") == 0) return 0;
    if (strcmp(name, "wpe.weight") == 0) return 1;
    if (strcmp(name, "ln_f.weight") == 0) return 2 + GPT2_PER_LAYER * L;
    if (strcmp(name, "ln_f.bias") == 0) return 3 + GPT2_PER_LAYER * L;
    if (strcmp(name, "lm_head.weight") == 0)
        return cfg->tie_word_embeddings ? GPT2_NAME_IGNORED : 4 + GPT2_PER_LAYER * L;
    if (strncmp(name, "h.", 2) != 0) return GPT2_NAME_UNKNOWN;
    const char *rest;
    const long l = gpt2_parse_layer(name + 2, &rest);
    if (l < 0 || l >= L || *rest != '.') return GPT2_NAME_UNKNOWN;
    rest++;
    for (int k = 0; k < GPT2_PER_LAYER; k++)
        if (strcmp(rest, gpt2_layer_suffix[k]) == 0) return 2 + GPT2_PER_LAYER * l + k;
    if (strcmp(rest, "attn.bias") == 0 || strcmp(rest, "attn.masked_bias") == 0)
        return GPT2_NAME_IGNORED;
    return GPT2_NAME_UNKNOWN;
}

static void gpt2_shape_str(char *buf, size_t size, int ndim, const int64_t *shape)
{
    size_t n = (size_t)snprintf(buf, size, "[");
    for (int d = 0; d < ndim && n < size; d++)
        n += (size_t)snprintf(buf + n, size - n, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (n < size) snprintf(buf + n, size - n, "]");
}

int sw_gpt2_load_tensors(sw_gpt2 *m, const sw_safetensors *st, const char *name, sw_diag *diag)
{
    const sw_gpt2_config *cfg = &m->cfg;
    const size_t count = sw_gpt2_tensor_count(cfg);
    int rc = 0;
    /* seen[i]: the file tensor that provided canonical tensor i */
    const sw_st_tensor **seen = calloc(count, sizeof(*seen));
    if (!seen) return sw_diag_set(diag, SW_ENOMEM, "%s: out of memory", name);

    const size_t nfile = sw_safetensors_count(st);
    for (size_t f = 0; f < nfile; f++) {
        const sw_st_tensor *ft = sw_safetensors_at(st, f);
        const char *base = ft->name;
        if (strncmp(base, GPT2_PREFIX, strlen(GPT2_PREFIX)) == 0) base += strlen(GPT2_PREFIX);
        const long idx = gpt2_name_index(cfg, base);
        if (idx == GPT2_NAME_IGNORED) continue;
        if (idx == GPT2_NAME_UNKNOWN) {
            rc = sw_diag_set(diag, SW_EFORMAT,
                             "%s: unknown tensor '%s' (not part of a GPT-2 with %d layers, %s "
                             "head)",
                             name, ft->name, cfg->n_layer,
                             cfg->tie_word_embeddings ? "tied" : "untied");
            goto fail;
        }
        if (seen[idx]) {
            rc = sw_diag_set(diag, SW_EFORMAT, "%s: tensor '%s' given twice ('%s' and '%s')", name,
                             base, seen[idx]->name, ft->name);
            goto fail;
        }
        sw_gpt2_tensor ct;
        sw_gpt2_tensor_at(cfg, (size_t)idx, &ct);
        bool shape_ok = ft->ndim == ct.ndim;
        for (int d = 0; shape_ok && d < ct.ndim; d++)
            shape_ok = ft->shape[d] == ct.shape[d];
        if (!shape_ok) {
            char got[160], want[64];
            gpt2_shape_str(got, sizeof(got), ft->ndim, ft->shape);
            gpt2_shape_str(want, sizeof(want), ct.ndim, ct.shape);
            rc = sw_diag_set(diag, SW_EFORMAT, "%s: tensor '%s' has shape %s, expected %s", name,
                             ft->name, got, want);
            goto fail;
        }
        float *dst = m->params + ct.offset;
        sw_st_tensor_to_f32(ft, dst);
        for (size_t j = 0; j < ct.numel; j++) {
            if (!isfinite(dst[j])) {
                rc = sw_diag_set(diag, SW_EFORMAT,
                                 "%s: tensor '%s' holds a non-finite value at element %zu", name,
                                 ft->name, j);
                goto fail;
            }
        }
        seen[idx] = ft;
    }
    for (size_t i = 0; i < count; i++) {
        if (!seen[i]) {
            sw_gpt2_tensor ct;
            sw_gpt2_tensor_at(cfg, i, &ct);
            rc = sw_diag_set(diag, SW_EFORMAT, "%s: missing tensor '%s'", name, ct.name);
            goto fail;
        }
    }
fail:
    free(seen);
    return rc;
}

int sw_gpt2_load(const char *dir, sw_gpt2 **out, sw_diag *diag)
{
    char path[GPT2_PATH_MAX];
    sw_gpt2_config cfg;
    sw_gpt2 *m = NULL;
    sw_safetensors *st = NULL;
    int rc;

    if (sw_path_join(path, sizeof(path), dir, "config.json") < 0)
        return sw_diag_set(diag, SW_ETOOBIG, "%s: path too long", dir);
    rc = sw_gpt2_config_load(path, &cfg, diag);
    if (rc < 0) goto fail;
    rc = sw_gpt2_alloc(&cfg, &m, diag);
    if (rc < 0) {
        sw_diag_prefix(diag, path);
        goto fail;
    }
    if (sw_path_join(path, sizeof(path), dir, "model.safetensors") < 0) {
        rc = sw_diag_set(diag, SW_ETOOBIG, "%s: path too long", dir);
        goto fail;
    }
    rc = sw_safetensors_open(path, &st, diag);
    if (rc < 0) goto fail;
    rc = sw_gpt2_load_tensors(m, st, path, diag);
    if (rc < 0) goto fail;
    sw_safetensors_close(st);
    *out = m;
    return 0;
fail:
    sw_safetensors_close(st);
    sw_gpt2_free(m);
    return rc;
}

int sw_gpt2_save(const sw_gpt2 *m, const char *dir, sw_dtype dtype, sw_diag *diag)
{
    char path[GPT2_PATH_MAX];
    const sw_gpt2_config *cfg = &m->cfg;
    const size_t count = sw_gpt2_tensor_count(cfg);
    sw_gpt2_tensor *ct = NULL;
    sw_st_write_tensor *wt = NULL;
    int rc;

    if (dtype != SW_DTYPE_F32 && dtype != SW_DTYPE_F16)
        return sw_diag_set(diag, SW_EUNSUPPORTED, "%s: models are saved as F32 or F16, not %s", dir,
                           sw_dtype_name(dtype));
    if (cfg->lora_rank > 0)
        return sw_diag_set(diag, SW_EINVAL,
                           "%s: a model with adapters is written merged or as a PEFT adapter", dir);
    ct = calloc(count, sizeof(*ct));
    wt = calloc(count, sizeof(*wt));
    if (!ct || !wt) {
        rc = sw_diag_set(diag, SW_ENOMEM, "%s: out of memory", dir);
        goto fail;
    }
    for (size_t i = 0; i < count; i++) {
        sw_gpt2_tensor_at(cfg, i, &ct[i]);
        wt[i].name = ct[i].name;
        wt[i].ndim = ct[i].ndim;
        wt[i].shape[0] = ct[i].shape[0];
        wt[i].shape[1] = ct[i].shape[1];
        wt[i].data = m->params + ct[i].offset;
        if (dtype != SW_DTYPE_F16) continue;
        /* 65520 and above round to infinity in binary16 */
        for (size_t j = 0; j < ct[i].numel; j++) {
            if (!(fabsf(wt[i].data[j]) < 65520.0f)) {
                rc = sw_diag_set(diag, SW_ETOOBIG,
                                 "%s: tensor '%s' element %zu (%g) does not fit in F16", dir,
                                 ct[i].name, j, (double)wt[i].data[j]);
                goto fail;
            }
        }
    }
    if (sw_path_join(path, sizeof(path), dir, "model.safetensors") < 0) {
        rc = sw_diag_set(diag, SW_ETOOBIG, "%s: path too long", dir);
        goto fail;
    }
    rc = sw_safetensors_write(path, wt, count, dtype, diag);
    if (rc < 0) goto fail;
    if (sw_path_join(path, sizeof(path), dir, "config.json") < 0) {
        rc = sw_diag_set(diag, SW_ETOOBIG, "%s: path too long", dir);
        goto fail;
    }
    rc = sw_gpt2_config_write(path, cfg, diag);
fail:
    free(ct);
    free(wt);
    return rc;
}

/*
 * Gaussian source for the initialisation: the ChaCha20 keystream (key from the
 * seed, zero nonce) read as little-endian uint32 pairs, Box-Muller in double.
 */
typedef struct gpt2_rng {
    uint8_t key[crypto_stream_chacha20_KEYBYTES];
    uint64_t block; /* next 64-byte keystream block */
    uint8_t buf[4096];
    size_t pos;
} gpt2_rng;

static void gpt2_rng_init(gpt2_rng *r, uint64_t seed)
{
    static const char tag[] = "swarmtune-gpt2-init-v1";
    uint8_t in[sizeof(tag) - 1 + 8];
    memcpy(in, tag, sizeof(tag) - 1);
    for (int i = 0; i < 8; i++)
        in[sizeof(tag) - 1 + i] = (uint8_t)(seed >> (8 * i));
    crypto_generichash(r->key, sizeof(r->key), in, sizeof(in), NULL, 0);
    r->block = 0;
    r->pos = sizeof(r->buf);
}

static uint32_t gpt2_rng_u32(gpt2_rng *r)
{
    if (r->pos == sizeof(r->buf)) {
        static const uint8_t nonce[crypto_stream_chacha20_NONCEBYTES] = {0};
        memset(r->buf, 0, sizeof(r->buf));
        crypto_stream_chacha20_xor_ic(r->buf, r->buf, sizeof(r->buf), nonce, r->block, r->key);
        r->block += sizeof(r->buf) / 64;
        r->pos = 0;
    }
    const uint8_t *b = r->buf + r->pos;
    r->pos += 4;
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static void gpt2_fill_normal(gpt2_rng *r, float *x, size_t n, double std)
{
    const double two_pi = 6.283185307179586476925286766559;
    for (size_t i = 0; i < n; i += 2) {
        const double u1 = ((double)gpt2_rng_u32(r) + 0.5) * 0x1p-32; /* (0, 1) */
        const double u2 = (double)gpt2_rng_u32(r) * 0x1p-32;         /* [0, 1) */
        const double rad = sqrt(-2.0 * log(u1));
        x[i] = (float)(std * rad * cos(two_pi * u2));
        if (i + 1 < n) x[i + 1] = (float)(std * rad * sin(two_pi * u2));
    }
}

void sw_gpt2_init_random(sw_gpt2 *m, uint64_t seed)
{
    const sw_gpt2_config *cfg = &m->cfg;
    const double std = 0.02, proj_std = 0.02 / sqrt(2.0 * cfg->n_layer);
    gpt2_rng r;
    SW_ASSERT(sodium_init() >= 0);
    gpt2_rng_init(&r, seed);
    const size_t count = sw_gpt2_tensor_count(cfg);
    for (size_t i = 0; i < count; i++) {
        sw_gpt2_tensor t;
        sw_gpt2_tensor_at(cfg, i, &t);
        float *x = m->params + t.offset;
        switch (t.kind) {
        case SW_GPT2_LN1_W:
        case SW_GPT2_LN2_W:
        case SW_GPT2_LNF_W:
            for (size_t j = 0; j < t.numel; j++)
                x[j] = 1.0f;
            break;
        case SW_GPT2_ATTN_PROJ_W:
        case SW_GPT2_FC_PROJ_W:
            gpt2_fill_normal(&r, x, t.numel, proj_std);
            break;
        case SW_GPT2_WTE:
        case SW_GPT2_WPE:
        case SW_GPT2_ATTN_W:
        case SW_GPT2_FC_W:
        case SW_GPT2_LM_HEAD:
            gpt2_fill_normal(&r, x, t.numel, std);
            break;
        default: /* biases */
            memset(x, 0, t.numel * sizeof(float));
            break;
        }
    }
}

static void gpt2_put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void gpt2_hash_u32(crypto_generichash_state *h, uint32_t v)
{
    uint8_t b[4];
    gpt2_put_u32(b, v);
    crypto_generichash_update(h, b, sizeof(b));
}

static void gpt2_hash_floats(crypto_generichash_state *h, const float *x, size_t n)
{
    const uint16_t probe = 1;
    uint8_t little;
    memcpy(&little, &probe, 1);
    if (little) {
        crypto_generichash_update(h, (const unsigned char *)x, n * sizeof(float));
        return;
    }
    uint8_t buf[4096];
    for (size_t i = 0; i < n;) {
        size_t k = 0;
        for (; k < sizeof(buf) / 4 && i < n; k++, i++) {
            uint32_t bits;
            memcpy(&bits, &x[i], 4);
            gpt2_put_u32(buf + 4 * k, bits);
        }
        crypto_generichash_update(h, buf, 4 * k);
    }
}

void sw_gpt2_digest(const sw_gpt2 *m, uint8_t out[SW_GPT2_DIGEST_BYTES])
{
    static const char tag[] = "swarmtune-gpt2-v1";
    const sw_gpt2_config *cfg = &m->cfg;
    crypto_generichash_state h;
    SW_ASSERT(sodium_init() >= 0);
    crypto_generichash_init(&h, NULL, 0, SW_GPT2_DIGEST_BYTES);
    crypto_generichash_update(&h, (const unsigned char *)tag, sizeof(tag) - 1);
    uint32_t eps_bits;
    memcpy(&eps_bits, &cfg->layer_norm_epsilon, 4);
    gpt2_hash_u32(&h, (uint32_t)cfg->n_layer);
    gpt2_hash_u32(&h, (uint32_t)cfg->n_head);
    gpt2_hash_u32(&h, (uint32_t)cfg->n_embd);
    gpt2_hash_u32(&h, (uint32_t)cfg->n_positions);
    gpt2_hash_u32(&h, (uint32_t)cfg->vocab_size);
    gpt2_hash_u32(&h, cfg->tie_word_embeddings ? 1u : 0u);
    gpt2_hash_u32(&h, eps_bits);
    if (cfg->lora_rank > 0) {
        uint32_t alpha_bits;
        memcpy(&alpha_bits, &cfg->lora_alpha, 4);
        gpt2_hash_u32(&h, (uint32_t)cfg->lora_rank);
        gpt2_hash_u32(&h, alpha_bits);
        gpt2_hash_u32(&h, cfg->lora_targets);
    }
    const size_t count = sw_gpt2_tensor_count(cfg);
    gpt2_hash_u32(&h, (uint32_t)count);
    for (size_t i = 0; i < count; i++) {
        sw_gpt2_tensor t;
        sw_gpt2_tensor_at(cfg, i, &t);
        const size_t len = strlen(t.name);
        gpt2_hash_u32(&h, (uint32_t)len);
        crypto_generichash_update(&h, (const unsigned char *)t.name, len);
        gpt2_hash_u32(&h, (uint32_t)t.ndim);
        for (int d = 0; d < t.ndim; d++) {
            uint8_t b[8];
            gpt2_put_u32(b, (uint32_t)((uint64_t)t.shape[d] & 0xffffffffu));
            gpt2_put_u32(b + 4, (uint32_t)((uint64_t)t.shape[d] >> 32));
            crypto_generichash_update(&h, b, sizeof(b));
        }
        gpt2_hash_floats(&h, m->params + t.offset, t.numel);
    }
    crypto_generichash_final(&h, out, SW_GPT2_DIGEST_BYTES);
}

void sw_digest_hex(const uint8_t digest[SW_GPT2_DIGEST_BYTES],
                   char buf[2 * SW_GPT2_DIGEST_BYTES + 1])
{
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < SW_GPT2_DIGEST_BYTES; i++) {
        buf[2 * i] = hex[digest[i] >> 4];
        buf[2 * i + 1] = hex[digest[i] & 15];
    }
    buf[2 * SW_GPT2_DIGEST_BYTES] = '\0';
}
