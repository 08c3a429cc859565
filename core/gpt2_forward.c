/*
 * gpt2_forward: the GPT-2 forward pass and the masked negative log-likelihood.
 *
 * Internally the activations are PACKED: the real tokens of all sequences
 * are stored back to back (sequence b's token t is row offsets[b] + t), so
 * padding costs nothing in the matrix products and can never leak into a
 * real position.  Only the final hidden states are laid out padded
 * (B, T, C), as gpt2_forward.h promises; their padding rows are zero.
 *
 * The element-wise kernels are written as a main loop over blocks of
 * GPT2_LANES floats with a fixed-size inner loop plus a scalar tail: GCC's
 * -O2 vectoriser (the "very cheap" cost model) only vectorises loops whose
 * trip count is known, and the fixed inner loop is exactly that.  Keep them
 * branch-free (the exp below clamps with an integer min for that reason).
 */
#include "gpt2_forward.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "gpt2.h"
#include "gpt2_config.h"
#include "sw_error.h"

/* Width of the vectorisable inner loops (floats). */
#define GPT2_LANES 16
/* Query rows per attention score block: bounds the (rows, cols) scratch and
 * skips most of the masked upper triangle. */
#define GPT2_ATT_ROWS 64
/* Loss rows per chunk and vocabulary columns per logits tile.  The tile
 * (512 x 512 floats, 1 MiB) stays in L2 while its log-sum-exp is taken, and
 * each chunk streams lm_head once, so larger chunks pack lm_head less often
 * (measured on the fixture: 64 rows x 2048 columns took 1.9x the time). */
#define GPT2_NLL_ROWS 512
#define GPT2_NLL_VTILE 512

struct sw_gpt2_acts {
    /* architecture the scratch was sized for */
    int C, NH, V, P;
    int max_B, max_T;
    /* the current forward: 0 nothing, 1 embedded (blocks may run), 2 final done */
    int stage;
    int B, T, N;       /* batch, padded length, real tokens (packed rows) */
    int32_t *lengths;  /* (max_B) */
    int *offsets;      /* (max_B + 1) first packed row of each sequence */
    float *residual;   /* (N, C) packed residual stream */
    float *ln;         /* (N, C) layer-norm output, then the attention output */
    float *work;       /* (N, 4C): qkv (N, 3C), later the MLP hidden (N, 4C) */
    float *att;        /* (GPT2_ATT_ROWS, max_T) one block of attention scores */
    float *hidden;     /* (B, T, C) padded final hidden states */
    float *nll_h;      /* (NLL_ROWS, C) gathered hidden rows */
    float *nll_tile;   /* (NLL_ROWS, VTILE) one tile of logits */
    float *nll_max;    /* (NLL_ROWS) running max logit */
    double *nll_sum;   /* (NLL_ROWS) running sum of exp(logit - max) */
    float *nll_tlogit; /* (NLL_ROWS) the target's logit */
    int *nll_pos;      /* (NLL_ROWS) b*T + t of each gathered row */
    int32_t *nll_tgt;  /* (NLL_ROWS) target token */
    uint8_t *nll_bad;  /* (NLL_ROWS) hidden row not finite */
    int R;             /* adapter rank the scratch was sized for (0: none) */
    float *lora;       /* (N, R) x A^T of one adapter */
    void *block;
};

/*
 * The hottest loops (the vocabulary log-sum-exp, the attention softmax, gelu)
 * are also compiled for AVX2 and AVX-512 and picked at load time (GCC's
 * function multi-versioning).  Every version performs the same IEEE
 * operations in the same order (the 16 lanes are independent partial sums),
 * so all give bit-identical results; only the speed differs.
 */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__GLIBC__)
#define GPT2_MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define GPT2_MULTIVERSION
#endif

/* ---------------------------------------------------------------------------
 * Element-wise kernels (vectorisable at -O2, see the top of the file)
 */

/*
 * exp(x) for x <= 0: Cephes' expf (degree-5 polynomial on [-ln2/2, ln2/2],
 * Cody-Waite reduction), max relative error ~1e-7.  Inputs below -87 are
 * clamped to -87 (exp = 1.6e-38, negligible against the terms it is summed
 * with).  The clamp works on the magnitude's bits (an integer min, which the
 * vectoriser accepts, unlike a float compare) and sets the sign, so +0 is
 * read as -0.
 */
static inline float gpt2_exp_neg(float x)
{
    uint32_t xi;
    memcpy(&xi, &x, sizeof(xi));
    uint32_t mag = xi & 0x7fffffffu;
    mag = mag < 0x42ae0000u ? mag : 0x42ae0000u; /* bits of 87.0f */
    xi = mag | 0x80000000u;
    memcpy(&x, &xi, sizeof(x));
    /* round(x / ln2) by the 1.5 * 2^23 trick (|x / ln2| < 2^22) */
    const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    const float y = p * r * r + r + 1.0f;
    const int32_t bits = ((int32_t)n + 127) * (1 << 23); /* 2^n, n in [-126, 0] */
    float s;
    memcpy(&s, &bits, sizeof(s));
    return y * s;
}

/* max of x[0..n), n >= 1 (NaNs are skipped; the loss checks finiteness). */
GPT2_MULTIVERSION
float sw_gpt2_row_max(const float *x, int n)
{
    float acc[GPT2_LANES];
    for (int k = 0; k < GPT2_LANES; k++)
        acc[k] = x[0];
    int i = 0;
    for (; i + GPT2_LANES <= n; i += GPT2_LANES)
        for (int k = 0; k < GPT2_LANES; k++)
            acc[k] = x[i + k] > acc[k] ? x[i + k] : acc[k];
    float m = acc[0];
    for (int k = 1; k < GPT2_LANES; k++)
        m = acc[k] > m ? acc[k] : m;
    for (; i < n; i++)
        m = x[i] > m ? x[i] : m;
    return m;
}

/* sum of exp(x[i] - m) over x[0..n), all x[i] <= m */
GPT2_MULTIVERSION
float sw_gpt2_row_exp_sum(const float *x, int n, float m)
{
    float acc[GPT2_LANES] = {0};
    int i = 0;
    for (; i + GPT2_LANES <= n; i += GPT2_LANES)
        for (int k = 0; k < GPT2_LANES; k++)
            acc[k] += gpt2_exp_neg(x[i + k] - m);
    float s = 0.0f;
    for (int k = 0; k < GPT2_LANES; k++)
        s += acc[k];
    for (; i < n; i++)
        s += gpt2_exp_neg(x[i] - m);
    return s;
}

/* x[i] = exp(x[i] - m) over x[0..n), all x[i] <= m; returns the sum */
GPT2_MULTIVERSION
static float gpt2_exp_inplace(float *x, int n, float m)
{
    float acc[GPT2_LANES] = {0};
    int i = 0;
    for (; i + GPT2_LANES <= n; i += GPT2_LANES)
        for (int k = 0; k < GPT2_LANES; k++) {
            const float e = gpt2_exp_neg(x[i + k] - m);
            x[i + k] = e;
            acc[k] += e;
        }
    float s = 0.0f;
    for (int k = 0; k < GPT2_LANES; k++)
        s += acc[k];
    for (; i < n; i++) {
        x[i] = gpt2_exp_neg(x[i] - m);
        s += x[i];
    }
    return s;
}

static float gpt2_sum(const float *x, int n)
{
    float acc[GPT2_LANES] = {0};
    int i = 0;
    for (; i + GPT2_LANES <= n; i += GPT2_LANES)
        for (int k = 0; k < GPT2_LANES; k++)
            acc[k] += x[i + k];
    float s = 0.0f;
    for (int k = 0; k < GPT2_LANES; k++)
        s += acc[k];
    for (; i < n; i++)
        s += x[i];
    return s;
}

/* sum of (x[i] - mean)^2 */
static float gpt2_sumsq_dev(const float *x, int n, float mean)
{
    float acc[GPT2_LANES] = {0};
    int i = 0;
    for (; i + GPT2_LANES <= n; i += GPT2_LANES)
        for (int k = 0; k < GPT2_LANES; k++) {
            const float d = x[i + k] - mean;
            acc[k] += d * d;
        }
    float s = 0.0f;
    for (int k = 0; k < GPT2_LANES; k++)
        s += acc[k];
    for (; i < n; i++) {
        const float d = x[i] - mean;
        s += d * d;
    }
    return s;
}

static void gpt2_scale(float *x, int n, float s)
{
    int i = 0;
    for (; i + GPT2_LANES <= n; i += GPT2_LANES)
        for (int k = 0; k < GPT2_LANES; k++)
            x[i + k] *= s;
    for (; i < n; i++)
        x[i] *= s;
}

/* y += b */
static void gpt2_add_inplace(float *restrict y, const float *restrict b, int n)
{
    int i = 0;
    for (; i + GPT2_LANES <= n; i += GPT2_LANES)
        for (int k = 0; k < GPT2_LANES; k++)
            y[i + k] += b[i + k];
    for (; i < n; i++)
        y[i] += b[i];
}

/* y = a + b */
static void gpt2_add(float *restrict y, const float *restrict a, const float *restrict b, int n)
{
    int i = 0;
    for (; i + GPT2_LANES <= n; i += GPT2_LANES)
        for (int k = 0; k < GPT2_LANES; k++)
            y[i + k] = a[i + k] + b[i + k];
    for (; i < n; i++)
        y[i] = a[i] + b[i];
}

/*
 * out (N, C) = layernorm(in (N, C)) * w (C) + b (C), biased variance, as
 * torch.nn.LayerNorm.
 */
GPT2_MULTIVERSION
static void gpt2_layernorm(float *restrict out, const float *restrict in, const float *restrict w,
                           const float *restrict b, int N, int C, float eps)
{
    for (int r = 0; r < N; r++) {
        const float *x = in + (size_t)r * C;
        float *y = out + (size_t)r * C;
        const float mean = gpt2_sum(x, C) / (float)C;
        const float var = gpt2_sumsq_dev(x, C, mean) / (float)C;
        const float rstd = 1.0f / sqrtf(var + eps);
        int i = 0;
        for (; i + GPT2_LANES <= C; i += GPT2_LANES)
            for (int k = 0; k < GPT2_LANES; k++)
                y[i + k] = (x[i + k] - mean) * rstd * w[i + k] + b[i + k];
        for (; i < C; i++)
            y[i] = (x[i] - mean) * rstd * w[i] + b[i];
    }
}

/*
 * gelu_new(x) = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3),
 * computed as x * num / (1 + e) with e = exp(-2|u|) and num = 1 for u >= 0,
 * e for u < 0: the same function without tanh's cancellation near -1.
 */
static inline float gpt2_gelu(float x)
{
    const float u = 0.7978845608028654f * (x + 0.044715f * x * x * x);
    const float e = gpt2_exp_neg(-2.0f * fabsf(u));
    uint32_t ub;
    memcpy(&ub, &u, sizeof(ub));
    const float neg = (float)(int32_t)(ub >> 31); /* 1 when u < 0 */
    const float num = neg * e + (1.0f - neg);
    return x * num / (1.0f + e);
}

/* y (N, n) = gelu(y + b (n)) row by row */
GPT2_MULTIVERSION
static void gpt2_bias_gelu(float *restrict y, const float *restrict b, int N, int n)
{
    for (int r = 0; r < N; r++) {
        float *row = y + (size_t)r * n;
        int i = 0;
        for (; i + GPT2_LANES <= n; i += GPT2_LANES)
            for (int k = 0; k < GPT2_LANES; k++)
                row[i + k] = gpt2_gelu(row[i + k] + b[i + k]);
        for (; i < n; i++)
            row[i] = gpt2_gelu(row[i] + b[i]);
    }
}

/* y (N, n) += b (n) row by row */
static void gpt2_bias_rows(float *restrict y, const float *restrict b, int N, int n)
{
    for (int r = 0; r < N; r++)
        gpt2_add_inplace(y + (size_t)r * n, b, n);
}

/* ---------------------------------------------------------------------------
 * Scratch
 */

typedef struct gpt2_layout {
    size_t lengths, offsets, residual, ln, work, att, hidden;
    size_t nll_h, nll_tile, nll_max, nll_sum, nll_tlogit, nll_pos, nll_tgt, nll_bad, lora;
    size_t total;
} gpt2_layout;

/* Reserves count * elem bytes at a 64-byte boundary; false on overflow. */
static bool gpt2_reserve(size_t *total, size_t *at, size_t count, size_t elem)
{
    if (count > (SIZE_MAX - 64) / elem) return false;
    const size_t bytes = (count * elem + 63) & ~(size_t)63;
    if (*total > SIZE_MAX - bytes) return false;
    *at = *total;
    *total += bytes;
    return true;
}

/* false on overflow or a shape that cannot be used */
static bool gpt2_acts_layout(const sw_gpt2_config *cfg, int max_B, int max_T, gpt2_layout *lay)
{
    if (max_B < 1 || max_T < 1 || cfg->n_embd < 1 || cfg->vocab_size < 1) return false;
    const size_t C = (size_t)cfg->n_embd, V = (size_t)cfg->vocab_size;
    const size_t B = (size_t)max_B, T = (size_t)max_T;
    if (B > SIZE_MAX / T || B * T > (size_t)INT_MAX || B * T > SIZE_MAX / (4 * C)) return false;
    const size_t N = B * T;
    const size_t arows = T < GPT2_ATT_ROWS ? T : GPT2_ATT_ROWS;
    const size_t vtile = V < GPT2_NLL_VTILE ? V : GPT2_NLL_VTILE;
    size_t t = 0;
    bool ok = gpt2_reserve(&t, &lay->lengths, B, sizeof(int32_t)) &&
              gpt2_reserve(&t, &lay->offsets, B + 1, sizeof(int)) &&
              gpt2_reserve(&t, &lay->residual, N * C, sizeof(float)) &&
              gpt2_reserve(&t, &lay->ln, N * C, sizeof(float)) &&
              gpt2_reserve(&t, &lay->work, N * 4 * C, sizeof(float)) &&
              gpt2_reserve(&t, &lay->att, arows * T, sizeof(float)) &&
              gpt2_reserve(&t, &lay->hidden, N * C, sizeof(float)) &&
              gpt2_reserve(&t, &lay->nll_h, GPT2_NLL_ROWS * C, sizeof(float)) &&
              gpt2_reserve(&t, &lay->nll_tile, GPT2_NLL_ROWS * vtile, sizeof(float)) &&
              gpt2_reserve(&t, &lay->nll_max, GPT2_NLL_ROWS, sizeof(float)) &&
              gpt2_reserve(&t, &lay->nll_sum, GPT2_NLL_ROWS, sizeof(double)) &&
              gpt2_reserve(&t, &lay->nll_tlogit, GPT2_NLL_ROWS, sizeof(float)) &&
              gpt2_reserve(&t, &lay->nll_pos, GPT2_NLL_ROWS, sizeof(int)) &&
              gpt2_reserve(&t, &lay->nll_tgt, GPT2_NLL_ROWS, sizeof(int32_t)) &&
              gpt2_reserve(&t, &lay->nll_bad, GPT2_NLL_ROWS, 1) &&
              gpt2_reserve(&t, &lay->lora, N * (size_t)(cfg->lora_rank > 0 ? cfg->lora_rank : 1),
                           sizeof(float));
    lay->total = t;
    return ok;
}

size_t sw_gpt2_acts_bytes(const sw_gpt2_config *cfg, int max_B, int max_T)
{
    gpt2_layout lay;
    if (!gpt2_acts_layout(cfg, max_B, max_T, &lay)) return SIZE_MAX;
    return sizeof(sw_gpt2_acts) + lay.total;
}

int sw_gpt2_acts_alloc(const sw_gpt2_config *cfg, int max_B, int max_T, sw_gpt2_acts **out,
                       sw_diag *diag)
{
    int rc = sw_gpt2_config_validate(cfg, "model config", diag);
    if (rc < 0) return rc;
    if (max_B < 1 || max_T < 1 || max_T > cfg->n_positions)
        return sw_diag_set(diag, SW_EINVAL,
                           "activations: batch %d x %d tokens is outside [1, any] x [1, %d]", max_B,
                           max_T, cfg->n_positions);
    gpt2_layout lay;
    if (!gpt2_acts_layout(cfg, max_B, max_T, &lay))
        return sw_diag_set(diag, SW_ETOOBIG, "activations: batch %d x %d tokens is too large",
                           max_B, max_T);
    sw_gpt2_acts *a = calloc(1, sizeof(*a));
    void *blk = NULL;
    if (!a || posix_memalign(&blk, 64, lay.total) != 0) {
        free(a);
        return sw_diag_set(diag, SW_ENOMEM, "activations: cannot allocate %zu MiB",
                           lay.total >> 20);
    }
    char *p = blk;
    a->block = blk;
    a->C = cfg->n_embd;
    a->NH = cfg->n_head;
    a->V = cfg->vocab_size;
    a->P = cfg->n_positions;
    a->max_B = max_B;
    a->max_T = max_T;
    a->lengths = (int32_t *)(void *)(p + lay.lengths);
    a->offsets = (int *)(void *)(p + lay.offsets);
    a->residual = (float *)(void *)(p + lay.residual);
    a->ln = (float *)(void *)(p + lay.ln);
    a->work = (float *)(void *)(p + lay.work);
    a->att = (float *)(void *)(p + lay.att);
    a->hidden = (float *)(void *)(p + lay.hidden);
    a->nll_h = (float *)(void *)(p + lay.nll_h);
    a->nll_tile = (float *)(void *)(p + lay.nll_tile);
    a->nll_max = (float *)(void *)(p + lay.nll_max);
    a->nll_sum = (double *)(void *)(p + lay.nll_sum);
    a->nll_tlogit = (float *)(void *)(p + lay.nll_tlogit);
    a->nll_pos = (int *)(void *)(p + lay.nll_pos);
    a->nll_tgt = (int32_t *)(void *)(p + lay.nll_tgt);
    a->nll_bad = (uint8_t *)(p + lay.nll_bad);
    a->R = cfg->lora_rank;
    a->lora = (float *)(void *)(p + lay.lora);
    *out = a;
    return 0;
}

void sw_gpt2_acts_free(sw_gpt2_acts *a)
{
    if (!a) return;
    free(a->block);
    free(a);
}

const float *sw_gpt2_acts_hidden(const sw_gpt2_acts *a)
{
    return a->hidden;
}

static bool gpt2_acts_match(const sw_gpt2_acts *a, const sw_gpt2_config *cfg)
{
    return a->C == cfg->n_embd && a->NH == cfg->n_head && a->V == cfg->vocab_size &&
           a->P == cfg->n_positions && a->R == cfg->lora_rank;
}

/* ---------------------------------------------------------------------------
 * The pass
 */

int sw_gpt2_embed(sw_gpt2_acts *a, const sw_gpt2_config *cfg, const float *wte, const float *wpe,
                  const int32_t *tokens, const int32_t *lengths, int B, int T, sw_diag *diag)
{
    a->stage = 0;
    if (!gpt2_acts_match(a, cfg))
        return sw_diag_set(diag, SW_EINVAL,
                           "forward: activations were sized for another architecture");
    if (B < 1 || B > a->max_B || T < 1 || T > a->max_T)
        return sw_diag_set(diag, SW_EINVAL,
                           "forward: batch %d x %d tokens does not fit the scratch (%d x %d)", B, T,
                           a->max_B, a->max_T);
    /* max_T <= n_positions was checked at allocation */
    int N = 0;
    for (int b = 0; b < B; b++) {
        const int32_t len = lengths[b];
        if (len < 1 || len > T)
            return sw_diag_set(diag, SW_EINVAL,
                               "forward: batch row %d: length %d is outside [1, %d]", b, (int)len,
                               T);
        for (int t = 0; t < len; t++) {
            const int32_t tok = tokens[(size_t)b * T + t];
            if (tok < 0 || tok >= cfg->vocab_size)
                return sw_diag_set(diag, SW_EINVAL,
                                   "forward: batch row %d, position %d: token id %d is outside "
                                   "[0, %d)",
                                   b, t, (int)tok, cfg->vocab_size);
        }
        a->lengths[b] = len;
        a->offsets[b] = N;
        N += len;
    }
    a->offsets[B] = N;
    a->B = B;
    a->T = T;
    a->N = N;
    const int C = cfg->n_embd;
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < a->lengths[b]; t++) {
            const int32_t tok = tokens[(size_t)b * T + t];
            float *out = a->residual + (size_t)(a->offsets[b] + t) * C; /* (C) */
            gpt2_add(out, wte + (size_t)tok * C, wpe + (size_t)t * C, C);
        }
    }
    a->stage = 1;
    return 0;
}

/*
 * att (rows, cols): scores of queries i0..i0+rows-1 against keys 0..cols-1.
 * Row r becomes the softmax over keys 0..i0+r and zero beyond (causal mask).
 */
static void gpt2_softmax_causal(float *att, int rows, int cols, int i0)
{
    for (int r = 0; r < rows; r++) {
        float *row = att + (size_t)r * cols; /* (cols) */
        const int n = i0 + r + 1;
        const float m = sw_gpt2_row_max(row, n);
        const float s = gpt2_exp_inplace(row, n, m);
        gpt2_scale(row, n, 1.0f / s);
        memset(row + n, 0, (size_t)(cols - n) * sizeof(float));
    }
}

/*
 * Causal self-attention of every sequence and head.
 * qkv (N, 3C) packed rows [q | k | v], head h at columns h*hs.. of each part;
 * out (N, C) packed, head h at columns h*hs..
 */
static void gpt2_attention(sw_gpt2_acts *a, const float *qkv, float *out, int C, int NH)
{
    const int hs = C / NH;
    const int ld = 3 * C;
    const float scale = 1.0f / sqrtf((float)hs);
    for (int b = 0; b < a->B; b++) {
        const int Tb = a->lengths[b];
        const float *base = qkv + (size_t)a->offsets[b] * ld; /* (Tb, 3C) */
        float *ob = out + (size_t)a->offsets[b] * C;          /* (Tb, C) */
        for (int h = 0; h < NH; h++) {
            const float *q = base + h * hs;         /* (Tb, hs) stride 3C */
            const float *k = base + C + h * hs;     /* (Tb, hs) stride 3C */
            const float *v = base + 2 * C + h * hs; /* (Tb, hs) stride 3C */
            for (int i0 = 0; i0 < Tb; i0 += GPT2_ATT_ROWS) {
                const int rows = Tb - i0 < GPT2_ATT_ROWS ? Tb - i0 : GPT2_ATT_ROWS;
                const int cols = i0 + rows; /* keys 0..cols-1 can be seen */
                float *att = a->att;        /* (rows, cols) */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, cols, hs, scale,
                            q + (size_t)i0 * ld, ld, k, ld, 0.0f, att, cols);
                gpt2_softmax_causal(att, rows, cols, i0);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, hs, cols, 1.0f, att,
                            cols, v, ld, 0.0f, ob + (size_t)i0 * C + h * hs, C);
            }
        }
    }
}

/*
 * y (N, out) += (alpha / r) (x A^T) B^T for an adapted weight (x: (N, in),
 * A: (r, in), B: (out, r)); nothing when the weight has no adapter.  Added
 * before the bias, so the block computes x (W + (alpha / r) A^T B^T) + b.
 */
static void gpt2_lora(sw_gpt2_acts *a, const sw_gpt2_config *cfg, const sw_gpt2_layer *lw, int k,
                      const float *x, float *y)
{
    if (lw->lora_a[k] == NULL) return;
    int in, out;
    sw_lora_target_dims(cfg, k, &in, &out);
    const int N = a->N, r = cfg->lora_rank;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, r, in, 1.0f, x, in, lw->lora_a[k], in,
                0.0f, a->lora, r);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, out, r, cfg->lora_alpha / (float)r,
                a->lora, r, lw->lora_b[k], r, 1.0f, y, out);
}

void sw_gpt2_block(sw_gpt2_acts *a, const sw_gpt2_config *cfg, const sw_gpt2_layer *lw)
{
    SW_ASSERT(a->stage >= 1 && gpt2_acts_match(a, cfg));
    const int N = a->N, C = cfg->n_embd;
    float *res = a->residual; /* (N, C) */
    float *ln = a->ln;        /* (N, C) */
    float *qkv = a->work;     /* (N, 3C) */
    float *fc = a->work;      /* (N, 4C), once qkv is spent */

    /* attention */
    gpt2_layernorm(ln, res, lw->ln_1_w, lw->ln_1_b, N, C, cfg->layer_norm_epsilon);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, 3 * C, C, 1.0f, ln, C, lw->attn_w,
                3 * C, 0.0f, qkv, 3 * C);
    gpt2_lora(a, cfg, lw, 0, ln, qkv);
    gpt2_bias_rows(qkv, lw->attn_b, N, 3 * C);
    gpt2_attention(a, qkv, ln, C, cfg->n_head); /* ln now holds the attention output */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, C, C, 1.0f, ln, C, lw->attn_proj_w, C,
                1.0f, res, C);
    gpt2_lora(a, cfg, lw, 1, ln, res);
    gpt2_bias_rows(res, lw->attn_proj_b, N, C);

    /* MLP */
    gpt2_layernorm(ln, res, lw->ln_2_w, lw->ln_2_b, N, C, cfg->layer_norm_epsilon);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, 4 * C, C, 1.0f, ln, C, lw->fc_w,
                4 * C, 0.0f, fc, 4 * C);
    gpt2_lora(a, cfg, lw, 2, ln, fc);
    gpt2_bias_gelu(fc, lw->fc_b, N, 4 * C);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, C, 4 * C, 1.0f, fc, 4 * C,
                lw->fc_proj_w, C, 1.0f, res, C);
    gpt2_lora(a, cfg, lw, 3, fc, res);
    gpt2_bias_rows(res, lw->fc_proj_b, N, C);
    a->stage = 1;
}

void sw_gpt2_final(sw_gpt2_acts *a, const sw_gpt2_config *cfg, const float *ln_f_w,
                   const float *ln_f_b)
{
    SW_ASSERT(a->stage >= 1 && gpt2_acts_match(a, cfg));
    const int C = cfg->n_embd, T = a->T;
    for (int b = 0; b < a->B; b++) {
        const int Tb = a->lengths[b];
        float *hb = a->hidden + (size_t)b * T * C; /* (T, C) */
        gpt2_layernorm(hb, a->residual + (size_t)a->offsets[b] * C, ln_f_w, ln_f_b, Tb, C,
                       cfg->layer_norm_epsilon);
        memset(hb + (size_t)Tb * C, 0, (size_t)(T - Tb) * C * sizeof(float));
    }
    a->stage = 2;
}

int sw_gpt2_forward(const sw_gpt2 *m, sw_gpt2_acts *a, const int32_t *tokens,
                    const int32_t *lengths, int B, int T, sw_diag *diag)
{
    const sw_gpt2_config *cfg = &m->cfg;
    int rc = sw_gpt2_embed(a, cfg, m->w.wte, m->w.wpe, tokens, lengths, B, T, diag);
    if (rc < 0) return rc;
    for (int l = 0; l < cfg->n_layer; l++)
        sw_gpt2_block(a, cfg, &m->w.layers[l]);
    sw_gpt2_final(a, cfg, m->w.ln_f_w, m->w.ln_f_b);
    return 0;
}

void sw_gpt2_logits(const sw_gpt2_config *cfg, const float *lm_head, const float *hidden, int n,
                    float *out)
{
    if (n < 1) return;
    const int C = cfg->n_embd, V = cfg->vocab_size;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, V, C, 1.0f, hidden, C, lm_head, C, 0.0f,
                out, V);
}

/*
 * Folds one tile (n, vn) of logits, vocabulary entries v0..v0+vn-1, into the
 * running max and sum of exp of each row, and picks up target logits.
 */
static void gpt2_lse_update(sw_gpt2_acts *a, const float *tile, int n, int v0, int vn)
{
    for (int r = 0; r < n; r++) {
        const float *row = tile + (size_t)r * vn; /* (vn) */
        const float tmax = sw_gpt2_row_max(row, vn);
        if (tmax > a->nll_max[r]) {
            a->nll_sum[r] *= exp((double)a->nll_max[r] - (double)tmax);
            a->nll_max[r] = tmax;
        }
        a->nll_sum[r] += (double)sw_gpt2_row_exp_sum(row, vn, a->nll_max[r]);
        const int tgt = a->nll_tgt[r];
        if (tgt >= v0 && tgt < v0 + vn) a->nll_tlogit[r] = row[tgt - v0];
    }
}

/*
 * Scores the n gathered rows: for each, log-sum-exp over the vocabulary
 * taken tile by tile with a running max (the sum kept in double), minus the
 * target's logit.
 */
static void gpt2_nll_chunk(sw_gpt2_acts *a, const float *lm_head, int n, float *nll, double *sum,
                           int64_t *count)
{
    const int C = a->C, V = a->V;
    for (int r = 0; r < n; r++) {
        const float *h = a->nll_h + (size_t)r * C;
        float acc = 0.0f;
        for (int i = 0; i < C; i++)
            acc += h[i] * 0.0f; /* NaN or inf anywhere makes acc NaN */
        a->nll_bad[r] = acc != 0.0f;
        a->nll_max[r] = -INFINITY;
        a->nll_sum[r] = 0.0;
        a->nll_tlogit[r] = 0.0f;
    }
    for (int v0 = 0; v0 < V; v0 += GPT2_NLL_VTILE) {
        const int vn = V - v0 < GPT2_NLL_VTILE ? V - v0 : GPT2_NLL_VTILE;
        float *tile = a->nll_tile; /* (n, vn) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, vn, C, 1.0f, a->nll_h, C,
                    lm_head + (size_t)v0 * C, C, 0.0f, tile, vn);
        gpt2_lse_update(a, tile, n, v0, vn);
    }
    for (int r = 0; r < n; r++) {
        double v = log(a->nll_sum[r]) + (double)a->nll_max[r] - (double)a->nll_tlogit[r];
        if (a->nll_bad[r]) v = NAN;
        nll[a->nll_pos[r]] = (float)v;
        *sum += v;
        (*count)++;
    }
}

int sw_gpt2_nll(sw_gpt2_acts *a, const sw_gpt2_config *cfg, const float *lm_head,
                const int32_t *tokens, const int32_t *lengths, const uint8_t *mask, int B, int T,
                float *nll, double *sum, int64_t *count, sw_diag *diag)
{
    if (!gpt2_acts_match(a, cfg))
        return sw_diag_set(diag, SW_EINVAL,
                           "loss: activations were sized for another architecture");
    if (a->stage != 2)
        return sw_diag_set(diag, SW_EINVAL, "loss: no completed forward pass to score");
    if (B != a->B || T != a->T)
        return sw_diag_set(diag, SW_EINVAL,
                           "loss: batch %d x %d differs from the forward's %d x %d", B, T, a->B,
                           a->T);
    for (int b = 0; b < B; b++) {
        if (lengths[b] != a->lengths[b])
            return sw_diag_set(diag, SW_EINVAL,
                               "loss: batch row %d: length %d differs from the forward's %d", b,
                               (int)lengths[b], (int)a->lengths[b]);
        for (int t = 1; t < lengths[b]; t++) {
            const int32_t tok = tokens[(size_t)b * T + t];
            if (tok < 0 || tok >= cfg->vocab_size)
                return sw_diag_set(diag, SW_EINVAL,
                                   "loss: batch row %d, position %d: token id %d is outside "
                                   "[0, %d)",
                                   b, t, (int)tok, cfg->vocab_size);
        }
    }
    const int C = cfg->n_embd;
    double total = 0.0;
    int64_t scored = 0;
    memset(nll, 0, (size_t)B * T * sizeof(float));
    int n = 0;
    for (int b = 0; b < B; b++) {
        for (int t = 1; t < lengths[b]; t++) {
            const size_t pos = (size_t)b * T + t;
            if (mask && !mask[pos]) continue;
            memcpy(a->nll_h + (size_t)n * C, a->hidden + (pos - 1) * C, (size_t)C * sizeof(float));
            a->nll_pos[n] = (int)pos;
            a->nll_tgt[n] = tokens[pos];
            if (++n == GPT2_NLL_ROWS) {
                gpt2_nll_chunk(a, lm_head, n, nll, &total, &scored);
                n = 0;
            }
        }
    }
    if (n > 0) gpt2_nll_chunk(a, lm_head, n, nll, &total, &scored);
    if (sum) *sum = total;
    if (count) *count = scored;
    return 0;
}

void sw_gpt2_set_threads(int n)
{
    openblas_set_num_threads(n < 1 ? 1 : n);
}
