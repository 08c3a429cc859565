/*
 * fixed: fixed-point master weights, the perturbation stream and the fused
 * update sweep (fixed.h).  The rules (exponent, stream layout, delta) are
 * documented in docs/engine.md; the comments here say why the code is shaped
 * as it is.
 */
#include "fixed.h"

#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

/*
 * Standard normal quantiles at (i + 0.5) / 256 in units of 2^-13, generated
 * once by tests/ref/gen_gauss_table.py (statistics.NormalDist) and checked
 * against it by tests/ref/stream_reference.py.  Never computed at run time.
 */
const int16_t sw_gauss_table[256] = {
    -23639, -20648, -19130, -18076, -17257, -16581, -16002, -15493, -15038, -14625, -14246, -13895,
    -13569, -13262, -12973, -12699, -12439, -12191, -11953, -11725, -11506, -11295, -11091, -10893,
    -10702, -10517, -10336, -10161, -9990,  -9823,  -9661,  -9502,  -9346,  -9194,  -9045,  -8899,
    -8756,  -8615,  -8477,  -8341,  -8207,  -8076,  -7946,  -7819,  -7693,  -7570,  -7448,  -7327,
    -7208,  -7091,  -6975,  -6860,  -6747,  -6635,  -6524,  -6415,  -6306,  -6199,  -6093,  -5987,
    -5883,  -5780,  -5677,  -5576,  -5475,  -5375,  -5276,  -5178,  -5080,  -4983,  -4887,  -4792,
    -4697,  -4603,  -4509,  -4416,  -4324,  -4232,  -4140,  -4049,  -3959,  -3869,  -3780,  -3691,
    -3602,  -3514,  -3426,  -3339,  -3252,  -3165,  -3079,  -2993,  -2907,  -2822,  -2737,  -2653,
    -2568,  -2484,  -2400,  -2317,  -2233,  -2150,  -2067,  -1984,  -1902,  -1820,  -1737,  -1656,
    -1574,  -1492,  -1411,  -1329,  -1248,  -1167,  -1086,  -1005,  -924,   -844,   -763,   -683,
    -602,   -522,   -441,   -361,   -281,   -201,   -120,   -40,    40,     120,    201,    281,
    361,    441,    522,    602,    683,    763,    844,    924,    1005,   1086,   1167,   1248,
    1329,   1411,   1492,   1574,   1656,   1737,   1820,   1902,   1984,   2067,   2150,   2233,
    2317,   2400,   2484,   2568,   2653,   2737,   2822,   2907,   2993,   3079,   3165,   3252,
    3339,   3426,   3514,   3602,   3691,   3780,   3869,   3959,   4049,   4140,   4232,   4324,
    4416,   4509,   4603,   4697,   4792,   4887,   4983,   5080,   5178,   5276,   5375,   5475,
    5576,   5677,   5780,   5883,   5987,   6093,   6199,   6306,   6415,   6524,   6635,   6747,
    6860,   6975,   7091,   7208,   7327,   7448,   7570,   7693,   7819,   7946,   8076,   8207,
    8341,   8477,   8615,   8756,   8899,   9045,   9194,   9346,   9502,   9661,   9823,   9990,
    10161,  10336,  10517,  10702,  10893,  11091,  11295,  11506,  11725,  11953,  12191,  12439,
    12699,  12973,  13262,  13569,  13895,  14246,  14625,  15038,  15493,  16002,  16581,  17257,
    18076,  19130,  20648,  23639,
};

/* ---- stream ------------------------------------------------------------ */

#define FIXED_CHACHA_BLOCK 64
/* The IETF counter is 32 bits: keystream bytes below 2^38 are addressable. */
#define FIXED_STREAM_MAX_BYTES (UINT64_C(1) << 38)

static void fixed_nonce(int purpose, uint8_t nonce[crypto_stream_chacha20_ietf_NONCEBYTES])
{
    memset(nonce, 0, crypto_stream_chacha20_ietf_NONCEBYTES);
    nonce[0] = (uint8_t)purpose;
}

void sw_stream_bytes(const uint8_t seed[SW_ID_BYTES], int purpose, uint64_t offset, size_t n,
                     uint8_t *out)
{
    SW_ASSERT(purpose >= 0 && purpose <= 255);
    SW_ASSERT(offset <= FIXED_STREAM_MAX_BYTES && n <= FIXED_STREAM_MAX_BYTES - offset);
    if (n == 0) return;
    uint8_t nonce[crypto_stream_chacha20_ietf_NONCEBYTES];
    fixed_nonce(purpose, nonce);
    uint64_t block = offset / FIXED_CHACHA_BLOCK;
    const size_t skip = (size_t)(offset % FIXED_CHACHA_BLOCK);
    if (skip) { /* a partial first block: generate it whole, keep its tail */
        uint8_t tmp[FIXED_CHACHA_BLOCK] = {0};
        crypto_stream_chacha20_ietf_xor_ic(tmp, tmp, sizeof(tmp), nonce, (uint32_t)block, seed);
        const size_t take = n < FIXED_CHACHA_BLOCK - skip ? n : FIXED_CHACHA_BLOCK - skip;
        memcpy(out, tmp + skip, take);
        out += take;
        n -= take;
        block++;
    }
    if (n) {
        memset(out, 0, n); /* keystream = ChaCha20 of a zero message */
        crypto_stream_chacha20_ietf_xor_ic(out, out, n, nonce, (uint32_t)block, seed);
    }
}

#define FIXED_Z_ONE (1 << SW_GAUSS_FRAC_BITS)

void sw_zstream(const uint8_t seed[SW_ID_BYTES], sw_perturb dist, uint64_t first, size_t n,
                int16_t *z)
{
    uint8_t buf[4096];
    SW_ASSERT(sodium_init() >= 0);
    if (dist == SW_PERTURB_GAUSSIAN) {
        /* parameter j is keystream byte j */
        while (n) {
            const size_t len = n < sizeof(buf) ? n : sizeof(buf);
            sw_stream_bytes(seed, SW_STREAM_Z, first, len, buf);
            for (size_t j = 0; j < len; j++)
                z[j] = sw_gauss_table[buf[j]];
            z += len;
            first += len;
            n -= len;
        }
        return;
    }
    /* rademacher: parameter j is bit j % 8 of keystream byte j / 8 */
    while (n) {
        const size_t chunk = n < 8 * (sizeof(buf) - 1) ? n : 8 * (sizeof(buf) - 1);
        const uint64_t b0 = first / 8, b1 = (first + chunk + 7) / 8;
        sw_stream_bytes(seed, SW_STREAM_Z, b0, (size_t)(b1 - b0), buf);
        const unsigned shift = (unsigned)(first % 8);
        for (size_t j = 0; j < chunk; j++) {
            const size_t bit = j + shift;
            z[j] = (buf[bit / 8] >> (bit % 8)) & 1 ? FIXED_Z_ONE : -FIXED_Z_ONE;
        }
        z += chunk;
        first += chunk;
        n -= chunk;
    }
}

/* ---- conversion ---------------------------------------------------------- */

int sw_fixed_exponent(double max_abs)
{
    /* Small or all-zero tensors (biases start at zero) get the exponent of a
     * tensor whose largest magnitude is 1 (headroom up to 16): their values
     * grow during training far beyond their base range, and a saturated add
     * is the one thing that breaks order-independence.  Resolution stays
     * 2^-27, finer than float32's spacing at GPT-2's 0.02 init scale. */
    if (!(max_abs >= SW_FIXED_MIN_MAGNITUDE)) max_abs = SW_FIXED_MIN_MAGNITUDE;
    int x;
    (void)frexp(max_abs, &x); /* max_abs < 2^x */
    /* 8 * max_abs * 2^e < 2^(x + 3 + e) = 2^31 */
    return 31 - 3 - x;
}

static int fixed_alloc(const sw_gpt2_config *cfg, sw_fixed **out, sw_diag *diag)
{
    sw_fixed *f = calloc(1, sizeof(*f));
    if (!f) return sw_diag_set(diag, SW_ENOMEM, "fixed weights: out of memory");
    f->cfg = *cfg;
    f->n_params = (size_t)sw_gpt2_config_param_count(cfg);
    f->n_tensors = sw_gpt2_tensor_count(cfg);
    void *p = NULL;
    if (f->n_params > SIZE_MAX / sizeof(int32_t) ||
        posix_memalign(&p, 64, f->n_params * sizeof(int32_t) + 64) != 0) {
        free(f);
        return sw_diag_set(diag, SW_ENOMEM, "fixed weights: cannot allocate %zu parameters",
                           (size_t)sw_gpt2_config_param_count(cfg));
    }
    f->w = p;
    f->tensors = calloc(f->n_tensors, sizeof(*f->tensors));
    f->exp = calloc(f->n_tensors, sizeof(*f->exp));
    if (!f->tensors || !f->exp) {
        sw_fixed_free(f);
        return sw_diag_set(diag, SW_ENOMEM, "fixed weights: out of memory");
    }
    for (size_t t = 0; t < f->n_tensors; t++)
        sw_gpt2_tensor_at(cfg, t, &f->tensors[t]);
    *out = f;
    return 0;
}

int sw_fixed_from_model(const sw_gpt2 *m, sw_fixed **out, sw_diag *diag)
{
    sw_fixed *f = NULL;
    int rc = fixed_alloc(&m->cfg, &f, diag);
    if (rc < 0) return rc;
    SW_ASSERT(f->n_params == m->n_params);
    for (size_t t = 0; t < f->n_tensors; t++) {
        const sw_gpt2_tensor *ts = &f->tensors[t];
        const float *x = m->params + ts->offset;
        float max_abs = 0.0f;
        for (size_t j = 0; j < ts->numel; j++) {
            const float a = fabsf(x[j]);
            if (!(a < SW_FIXED_MAX_MAGNITUDE)) { /* also NaN */
                rc = sw_diag_set(diag, SW_EFORMAT,
                                 "tensor '%s': value %g at index %zu is not finite or exceeds "
                                 "2^64 (not representable in fixed point)",
                                 ts->name, (double)x[j], j);
                goto fail;
            }
            if (a > max_abs) max_abs = a;
        }
        const int e = sw_fixed_exponent(max_abs);
        f->exp[t] = (int8_t)e;
        /* x * 2^e is exact in double; llrint rounds to nearest (ties to even) */
        const double s = ldexp(1.0, e);
        int32_t *w = f->w + ts->offset;
        for (size_t j = 0; j < ts->numel; j++)
            w[j] = (int32_t)llrint((double)x[j] * s);
    }
    *out = f;
    return 0;
fail:
    sw_fixed_free(f);
    return rc;
}

int sw_fixed_alloc_like(const sw_fixed *f, sw_fixed **out, sw_diag *diag)
{
    sw_fixed *c = NULL;
    int rc = fixed_alloc(&f->cfg, &c, diag);
    if (rc < 0) return rc;
    memcpy(c->exp, f->exp, f->n_tensors * sizeof(*f->exp));
    memset(c->w, 0, c->n_params * sizeof(int32_t));
    *out = c;
    return 0;
}

int sw_fixed_clone(const sw_fixed *f, sw_fixed **out, sw_diag *diag)
{
    sw_fixed *c = NULL;
    int rc = fixed_alloc(&f->cfg, &c, diag);
    if (rc < 0) return rc;
    memcpy(c->exp, f->exp, f->n_tensors * sizeof(*f->exp));
    memcpy(c->w, f->w, f->n_params * sizeof(int32_t));
    c->saturations = f->saturations;
    *out = c;
    return 0;
}

void sw_fixed_free(sw_fixed *f)
{
    if (!f) return;
    free(f->w);
    free(f->tensors);
    free(f->exp);
    free(f);
}

/* First tensor index whose range contains parameter j (j < n_params). */
static size_t fixed_tensor_of(const sw_fixed *f, uint64_t j)
{
    size_t lo = 0, hi = f->n_tensors; /* tensors[lo].offset <= j < tensors[hi].offset */
    while (hi - lo > 1) {
        const size_t mid = lo + (hi - lo) / 2;
        if (f->tensors[mid].offset <= j)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

/* 2^-e as a float: exact, e is in [-36, 31] (docs/engine.md). */
static float fixed_unit(int e)
{
    return (float)ldexp(1.0, -e);
}

/*
 * The kernels below walk their arrays in runs of FIXED_RUN with a constant
 * inner trip count: GCC's -O2 vectoriser (the "very cheap" cost model) only
 * vectorises loops whose trip count is a known multiple of the vector width.
 */
#define FIXED_RUN 16

/*
 * out = W * 2^-e.  (float)W rounds once, the power-of-two scale is exact, so
 * this equals the correctly rounded W * 2^-e: to_float and dequant_pm agree.
 */
// (n) out = w * s
static void fixed_dequant(const int32_t *restrict w, size_t n, float s, float *restrict out)
{
    size_t j = 0;
    for (; j + FIXED_RUN <= n; j += FIXED_RUN)
        for (size_t i = 0; i < FIXED_RUN; i++)
            out[j + i] = (float)w[j + i] * s;
    for (; j < n; j++)
        out[j] = (float)w[j] * s;
}

// (n) plus = w*s + ez*z, minus = w*s - ez*z
static void fixed_dequant_pm_seg(const int32_t *restrict w, const int16_t *restrict z, size_t n,
                                 float s, float ez, float *restrict plus, float *restrict minus)
{
    size_t j = 0;
    for (; j + FIXED_RUN <= n; j += FIXED_RUN)
        for (size_t i = 0; i < FIXED_RUN; i++) {
            const float x = (float)w[j + i] * s;
            const float d = ez * (float)z[j + i];
            plus[j + i] = x + d;
            minus[j + i] = x - d;
        }
    for (; j < n; j++) {
        const float x = (float)w[j] * s;
        const float d = ez * (float)z[j];
        plus[j] = x + d;
        minus[j] = x - d;
    }
}

// (n) plus = w*s + ez*z
static void fixed_dequant_p_seg(const int32_t *restrict w, const int16_t *restrict z, size_t n,
                                float s, float ez, float *restrict plus)
{
    size_t j = 0;
    for (; j + FIXED_RUN <= n; j += FIXED_RUN)
        for (size_t i = 0; i < FIXED_RUN; i++)
            plus[j + i] = (float)w[j + i] * s + ez * (float)z[j + i];
    for (; j < n; j++)
        plus[j] = (float)w[j] * s + ez * (float)z[j];
}

void sw_fixed_dequant_pm(const sw_fixed *f, uint64_t first, size_t n, const int16_t *z, float eps,
                         float *plus, float *minus)
{
    SW_ASSERT(first <= f->n_params && n <= f->n_params - first);
    /* eps * z * 2^-13: the power-of-two factor is exact */
    const float ez = eps / (float)FIXED_Z_ONE;
    size_t t = n ? fixed_tensor_of(f, first) : 0;
    size_t done = 0;
    while (done < n) {
        const sw_gpt2_tensor *ts = &f->tensors[t];
        const uint64_t j = first + done;
        const size_t end = ts->offset + ts->numel;
        if (j >= end) {
            t++;
            continue;
        }
        const size_t len = end - j < n - done ? end - j : n - done;
        const float s = fixed_unit(f->exp[t]);
        const int32_t *w = f->w + j;
        if (!z) {
            fixed_dequant(w, len, s, plus + done);
            if (minus) memcpy(minus + done, plus + done, len * sizeof(float));
        } else if (minus) {
            fixed_dequant_pm_seg(w, z + done, len, s, ez, plus + done, minus + done);
        } else {
            fixed_dequant_p_seg(w, z + done, len, s, ez, plus + done);
        }
        done += len;
        t++;
    }
}

void sw_fixed_to_float(const sw_fixed *f, float *out)
{
    for (size_t t = 0; t < f->n_tensors; t++) {
        const sw_gpt2_tensor *ts = &f->tensors[t];
        fixed_dequant(f->w + ts->offset, ts->numel, fixed_unit(f->exp[t]), out + ts->offset);
    }
}

int sw_fixed_to_model(const sw_fixed *f, sw_gpt2 **out, sw_diag *diag)
{
    sw_gpt2 *m = NULL;
    int rc = sw_gpt2_alloc(&f->cfg, &m, diag);
    if (rc < 0) return rc;
    SW_ASSERT(m->n_params == f->n_params);
    sw_fixed_to_float(f, m->params);
    *out = m;
    return 0;
}

void sw_fixed_digest(const sw_fixed *f, uint8_t out[SW_FIXED_DIGEST_BYTES])
{
    static const char tag[] = "swarmtune-fixed-v1";
    crypto_generichash_state h;
    SW_ASSERT(sodium_init() >= 0);
    crypto_generichash_init(&h, NULL, 0, SW_FIXED_DIGEST_BYTES);
    crypto_generichash_update(&h, (const unsigned char *)tag, sizeof(tag) - 1);
    crypto_generichash_update(&h, (const unsigned char *)f->exp, f->n_tensors);
    const uint16_t probe = 1;
    uint8_t little;
    memcpy(&little, &probe, 1);
    if (little) {
        crypto_generichash_update(&h, (const unsigned char *)f->w, f->n_params * sizeof(int32_t));
    } else {
        uint8_t buf[4096];
        for (size_t i = 0; i < f->n_params;) {
            size_t k = 0;
            for (; k < sizeof(buf) / 4 && i < f->n_params; k++, i++) {
                const uint32_t v = (uint32_t)f->w[i];
                for (int b = 0; b < 4; b++)
                    buf[4 * k + (size_t)b] = (uint8_t)(v >> (8 * b));
            }
            crypto_generichash_update(&h, buf, 4 * k);
        }
    }
    crypto_generichash_final(&h, out, SW_FIXED_DIGEST_BYTES);
}

/* ---- the per-(update, tensor) coefficient --------------------------------- */

int64_t sw_fixed_round_coef(double coef, int e, uint64_t uniform)
{
    const double x = ldexp(coef, e); /* exact (no overflow for e <= 31) */
    if (x != x) return 0;
    if (x >= (double)SW_FIXED_K_MAX) return SW_FIXED_K_MAX;
    if (x <= -(double)SW_FIXED_K_MAX) return -SW_FIXED_K_MAX;
    const double fl = floor(x);
    const double frac = x - fl; /* exact, in [0, 1) */
    /* P(uniform < frac * 2^64) = frac, up to 2^-64: unbiased on average */
    const uint64_t threshold = (uint64_t)(frac * 0x1p64);
    return (int64_t)fl + (uniform < threshold ? 1 : 0);
}

uint64_t sw_fixed_round_uniform(const uint8_t seed[SW_ID_BYTES], size_t tensor)
{
    uint8_t b[8];
    sw_stream_bytes(seed, SW_STREAM_ROUND, 8 * (uint64_t)tensor, 8, b);
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | b[i];
    return v;
}

int64_t sw_fixed_update_k(const sw_fixed *f, const sw_train_spec *spec, const sw_update *u,
                          size_t tensor)
{
    uint8_t seed[SW_ID_BYTES];
    SW_ASSERT(tensor < f->n_tensors);
    sw_update_seed(spec->run_id, u->origin, u->step, seed);
    return sw_fixed_round_coef(sw_update_coef(spec, u), f->exp[tensor],
                               sw_fixed_round_uniform(seed, tensor));
}

int32_t sw_fixed_gauss_delta(int64_t k, int16_t g)
{
    /* |k| <= 2^28, |g| < 2^15: the product fits in int64, the result in int32 */
    const int64_t p = k * (int64_t)g;
    const int64_t half = INT64_C(1) << (SW_GAUSS_FRAC_BITS - 1);
    const int64_t r =
        p >= 0 ? (p + half) >> SW_GAUSS_FRAC_BITS : -((-p + half) >> SW_GAUSS_FRAC_BITS);
    return (int32_t)r;
}

/* ---- the fused sweep ------------------------------------------------------- */

/*
 * Parameters per block: the int32 accumulator (16 KiB) and one update's
 * keystream for the block (512 bytes rademacher, 4 KiB gaussian) stay in L1.
 * Blocks start at global multiples of FIXED_BLOCK, so every block but a
 * tensor's first starts on a ChaCha block boundary.
 */
#define FIXED_BLOCK 4096
/* Updates per chunk: their coefficients and gaussian delta tables (64 KiB)
 * live on the worker's stack; each chunk is one sweep writing W once. */
#define FIXED_CHUNK 64
#define FIXED_MAX_THREADS 64
#define FIXED_STACK_BYTES (1u << 20)

typedef struct fixed_scratch {
    int32_t acc[FIXED_BLOCK];        /* (B) this group's sum */
    int64_t acc64[FIXED_BLOCK];      /* (B) earlier groups' sums */
    uint8_t ks[FIXED_BLOCK + 64];    /* one update's keystream for the block */
    int64_t k[FIXED_CHUNK];          /* per update of the chunk, this tensor */
    bool flush[FIXED_CHUNK];         /* flush the int32 group before this update */
    int32_t table[FIXED_CHUNK][256]; /* gaussian: delta per stream byte */
} fixed_scratch;

typedef struct fixed_job {
    sw_fixed *f;
    const sw_train_spec *spec;
    const bool *trainable;
    const sw_update *u;
    size_t k;
    uint64_t lo, hi; /* parameter slice [lo, hi) */
    uint64_t saturations;
} fixed_job;

/*
 * rademacher, bits b of keystream for parameters [0, n) of the block starting
 * at bit `shift` of ks[0]: acc[j] += b ? 2k : 0.  The true delta is +-k =
 * (b ? 2k : 0) - k; the -k is folded into the group's offset, so the inner
 * loop is one and + one add per parameter, which vectorises.
 */
static void fixed_acc_rademacher(int32_t *restrict acc, const uint8_t *restrict ks, size_t n,
                                 unsigned shift, int32_t k2)
{
    static const int32_t bit[8] = {1, 2, 4, 8, 16, 32, 64, 128};
    size_t j = 0;
    /* head: parameters up to the next byte boundary */
    for (; j < n && (j + shift) % 8 != 0; j++)
        acc[j] += (ks[(j + shift) / 8] >> ((j + shift) % 8)) & 1 ? k2 : 0;
    const uint8_t *restrict p = ks + (j + shift) / 8;
    int32_t *restrict a = acc + j;
    const size_t bytes = (n - j) / 8;
    for (size_t q = 0; q < bytes; q++) {
        const int32_t b = p[q];
        for (int i = 0; i < 8; i++)
            a[8 * q + (size_t)i] += (b & bit[i]) ? k2 : 0;
    }
    j += 8 * bytes;
    for (; j < n; j++)
        acc[j] += (ks[(j + shift) / 8] >> ((j + shift) % 8)) & 1 ? k2 : 0;
}

static void fixed_acc_gauss(int32_t *restrict acc, const uint8_t *restrict ks, size_t n,
                            const int32_t *restrict table)
{
    for (size_t j = 0; j < n; j++)
        acc[j] += table[ks[j]];
}

/* One parameter of W = sat(W + acc - off) in 32-bit arithmetic (the true sum
 * acc - off fits in int32 for a single group; the unsigned wrap recovers it). */
#define FIXED_SAT_ADD(w, acc, off, sat)                                                            \
    do {                                                                                           \
        const uint32_t d_ = (uint32_t)(acc) - (uint32_t)(off);                                     \
        const uint32_t x_ = (uint32_t)(w);                                                         \
        const uint32_t r_ = x_ + d_;                                                               \
        const uint32_t ovf_ = ((x_ ^ r_) & (d_ ^ r_)) >> 31;                                       \
        (w) = (int32_t)(ovf_ ? (x_ >> 31) + 0x7fffffffu : r_);                                     \
        (sat) += ovf_;                                                                             \
    } while (0)

// (n) W = sat(W + acc - off), counting saturations
static uint64_t fixed_write32(int32_t *restrict w, const int32_t *restrict acc, size_t n,
                              int32_t off)
{
    uint32_t sat = 0;
    size_t j = 0;
    for (; j + FIXED_RUN <= n; j += FIXED_RUN)
        for (size_t i = 0; i < FIXED_RUN; i++)
            FIXED_SAT_ADD(w[j + i], acc[j + i], off, sat);
    for (; j < n; j++)
        FIXED_SAT_ADD(w[j], acc[j], off, sat);
    return sat;
}

static uint64_t fixed_write64(int32_t *restrict w, const int64_t *restrict acc64,
                              const int32_t *restrict acc, size_t n, int64_t off)
{
    uint64_t sat = 0;
    for (size_t j = 0; j < n; j++) {
        /* |W| < 2^31, |acc64| < 64 * 2^31 * 3: no int64 overflow */
        int64_t v = (int64_t)w[j] + acc64[j] + (int64_t)acc[j] - off;
        if (v > INT32_MAX) {
            v = INT32_MAX;
            sat++;
        } else if (v < INT32_MIN) {
            v = INT32_MIN;
            sat++;
        }
        w[j] = (int32_t)v;
    }
    return sat;
}

/*
 * Prepares the chunk's coefficients for tensor t, the gaussian tables, and the
 * int32 groups: an update starts a new group when the group's worst-case sum
 * would leave int32.  Returns the number of updates with k != 0.
 */
static size_t fixed_prepare(const fixed_job *job, size_t t, const sw_update *u, size_t nu,
                            const uint8_t (*seeds)[SW_ID_BYTES], fixed_scratch *s)
{
    const sw_fixed *f = job->f;
    const bool gauss = job->spec->perturb == SW_PERTURB_GAUSSIAN;
    int64_t bound = 0;
    size_t live = 0;
    for (size_t i = 0; i < nu; i++) {
        const int64_t k = sw_fixed_round_coef(sw_update_coef(job->spec, &u[i]), f->exp[t],
                                              sw_fixed_round_uniform(seeds[i], t));
        s->k[i] = k;
        s->flush[i] = false;
        if (k == 0) continue;
        live++;
        int64_t worst;
        if (gauss) {
            int32_t mx = 0;
            for (int b = 0; b < 256; b++) {
                const int32_t d = sw_fixed_gauss_delta(k, sw_gauss_table[b]);
                s->table[i][b] = d;
                if (d > mx) mx = d;
                if (-d > mx) mx = -d;
            }
            worst = mx;
        } else {
            worst = 2 * (k < 0 ? -k : k);
        }
        if (bound + worst > INT32_MAX) {
            s->flush[i] = true;
            bound = 0;
        }
        bound += worst;
    }
    return live;
}

/* The chunk's updates over parameters [a, b) of tensor t (prepared). */
static void fixed_sweep_range(fixed_job *job, size_t nu, const uint8_t (*seeds)[SW_ID_BYTES],
                              fixed_scratch *s, uint64_t a, uint64_t b)
{
    sw_fixed *f = job->f;
    const bool gauss = job->spec->perturb == SW_PERTURB_GAUSSIAN;
    for (uint64_t bs = a; bs < b;) {
        uint64_t be = (bs / FIXED_BLOCK + 1) * FIXED_BLOCK;
        if (be > b) be = b;
        const size_t n = (size_t)(be - bs);
        bool wide = false;
        int64_t off = 0; /* rademacher: sum of the group's k */
        memset(s->acc, 0, n * sizeof(int32_t));
        for (size_t i = 0; i < nu; i++) {
            const int64_t k = s->k[i];
            if (k == 0) continue;
            if (s->flush[i]) {
                if (!wide) memset(s->acc64, 0, n * sizeof(int64_t));
                wide = true;
                for (size_t j = 0; j < n; j++)
                    s->acc64[j] += (int64_t)s->acc[j] - off;
                memset(s->acc, 0, n * sizeof(int32_t));
                off = 0;
            }
            if (gauss) {
                sw_stream_bytes(seeds[i], SW_STREAM_Z, bs, n, s->ks);
                fixed_acc_gauss(s->acc, s->ks, n, s->table[i]);
            } else {
                const uint64_t b0 = bs / 8, b1 = (be + 7) / 8;
                sw_stream_bytes(seeds[i], SW_STREAM_Z, b0, (size_t)(b1 - b0), s->ks);
                fixed_acc_rademacher(s->acc, s->ks, n, (unsigned)(bs % 8), (int32_t)(2 * k));
                off += k;
            }
        }
        int32_t *w = f->w + bs;
        /* a single group's true sum fits in int32, so does its offset */
        job->saturations += wide ? fixed_write64(w, s->acc64, s->acc, n, off)
                                 : fixed_write32(w, s->acc, n, (int32_t)off);
        bs = be;
    }
}

/* One chunk of updates over the tensors' intersection with [lo, hi); a vocabulary
 * tensor of a run that trains some rows only gets those rows. */
static void fixed_sweep_chunk(fixed_job *job, const sw_update *u, size_t nu,
                              const uint8_t (*seeds)[SW_ID_BYTES], fixed_scratch *s)
{
    sw_fixed *f = job->f;
    for (size_t t = 0; t < f->n_tensors; t++) {
        const sw_gpt2_tensor *ts = &f->tensors[t];
        const uint64_t a = ts->offset > job->lo ? ts->offset : job->lo;
        const uint64_t b = ts->offset + ts->numel < job->hi ? ts->offset + ts->numel : job->hi;
        if (a >= b || (job->trainable && !job->trainable[t])) continue;
        if (fixed_prepare(job, t, u, nu, seeds, s) == 0) continue;
        if (job->spec->n_rows == 0 || !sw_fixed_row_tensor(ts->kind)) {
            fixed_sweep_range(job, nu, seeds, s, a, b);
            continue;
        }
        const uint64_t C = (uint64_t)ts->shape[1];
        for (int r = 0; r < job->spec->n_rows; r++) {
            const uint64_t r0 = ts->offset + (uint64_t)job->spec->rows[r] * C, r1 = r0 + C;
            const uint64_t x = r0 > a ? r0 : a, y = r1 < b ? r1 : b;
            if (x < y) fixed_sweep_range(job, nu, seeds, s, x, y);
        }
    }
}

static void fixed_sweep(fixed_job *job)
{
    /* ~120 KiB, on the stack of a worker sized for it (or the caller's) */
    fixed_scratch local;
    fixed_scratch *s = &local;
    uint8_t seeds[FIXED_CHUNK][SW_ID_BYTES];
    for (size_t c = 0; c < job->k; c += FIXED_CHUNK) {
        const size_t nu = job->k - c < FIXED_CHUNK ? job->k - c : FIXED_CHUNK;
        for (size_t i = 0; i < nu; i++)
            sw_update_seed(job->spec->run_id, job->u[c + i].origin, job->u[c + i].step, seeds[i]);
        fixed_sweep_chunk(job, job->u + c, nu, (const uint8_t(*)[SW_ID_BYTES])seeds, s);
    }
}

static void *fixed_worker(void *arg)
{
    fixed_sweep(arg);
    return NULL;
}

/* Slice boundary i of n: equal shares of the trainable parameters, rounded up
 * to a block boundary so that slices never share a block. */
static uint64_t fixed_slice_start(const sw_fixed *f, const bool *trainable, uint64_t total, int i,
                                  int n)
{
    if (i == 0) return 0;
    if (i == n) return f->n_params;
    const uint64_t target =
        total / (uint64_t)n * (uint64_t)i + total % (uint64_t)n * (uint64_t)i / (uint64_t)n;
    uint64_t seen = 0;
    for (size_t t = 0; t < f->n_tensors; t++) {
        if (trainable && !trainable[t]) continue;
        const sw_gpt2_tensor *ts = &f->tensors[t];
        if (seen + ts->numel > target) {
            const uint64_t j = ts->offset + (target - seen);
            const uint64_t r = (j + FIXED_BLOCK - 1) / FIXED_BLOCK * FIXED_BLOCK;
            return r < f->n_params ? r : f->n_params;
        }
        seen += ts->numel;
    }
    return f->n_params;
}

void sw_fixed_apply(sw_fixed *f, const sw_train_spec *spec, const bool *trainable,
                    const sw_update *u, size_t k, int threads)
{
    SW_ASSERT(sodium_init() >= 0);
    if (k == 0) return;
    if (threads < 1) threads = 1;
    if (threads > FIXED_MAX_THREADS) threads = FIXED_MAX_THREADS;
    uint64_t total = 0;
    for (size_t t = 0; t < f->n_tensors; t++)
        if (!trainable || trainable[t]) total += f->tensors[t].numel;
    if (total == 0) return;
    if ((uint64_t)threads > total / FIXED_BLOCK + 1) threads = (int)(total / FIXED_BLOCK + 1);

    fixed_job jobs[FIXED_MAX_THREADS];
    pthread_t tid[FIXED_MAX_THREADS];
    bool started[FIXED_MAX_THREADS] = {false};
    for (int i = 0; i < threads; i++) {
        jobs[i] = (fixed_job){.f = f,
                              .spec = spec,
                              .trainable = trainable,
                              .u = u,
                              .k = k,
                              .lo = fixed_slice_start(f, trainable, total, i, threads),
                              .hi = fixed_slice_start(f, trainable, total, i + 1, threads)};
    }
    pthread_attr_t attr;
    const bool attr_ok = threads > 1 && pthread_attr_init(&attr) == 0;
    if (attr_ok) (void)pthread_attr_setstacksize(&attr, FIXED_STACK_BYTES);
    for (int i = 1; i < threads && attr_ok; i++)
        started[i] = pthread_create(&tid[i], &attr, fixed_worker, &jobs[i]) == 0;
    if (attr_ok) pthread_attr_destroy(&attr);
    fixed_sweep(&jobs[0]);
    for (int i = 1; i < threads; i++) {
        /* a slice whose thread could not start runs here: same result */
        if (started[i])
            pthread_join(tid[i], NULL);
        else
            fixed_sweep(&jobs[i]);
    }
    for (int i = 0; i < threads; i++)
        f->saturations += jobs[i].saturations;
}
