/*
 * trainer: the SPSA step (trainer.h), run as a fixed plan of jobs over two
 * logical workers.
 *
 * Every probe is the same sequence of jobs whatever the thread count: a
 * "weights" job dequantizes and perturbs a canonical range into the + and -
 * scratch (worker k takes half k of the range), then a "sign" job runs the
 * + pass on worker 0 and the - pass on worker 1.  With threads >= 2 the two
 * workers run at once (OpenBLAS is then called from both, single-threaded
 * in each); with one thread they run one after the other.
 * Each worker's arithmetic is the same either way, so the result does not
 * depend on the thread count.  More than two threads do not speed up a
 * step (they serve sw_fixed_apply).
 *
 * The tied LM head (V x C, most of a small model) is never materialised
 * whole: it is dequantized a super-tile of vocabulary rows at a time into
 * the layer scratch, and the + and - logits are folded into a running
 * log-sum-exp per scored row.  The loss kernels (tile width, row chunks, the
 * exp polynomial, the summation order) are those of gpt2_forward.c's
 * sw_gpt2_nll, so a probe's L+ equals the loss of the materialised model
 * W + eps z computed by sw_gpt2_forward + sw_gpt2_nll, bit for bit.
 */
#include "trainer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <cblas.h>
#include <math.h>
#include <pcre2.h>
#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gpt2.h"
#include "gpt2_forward.h"

/* gpt2_forward.c's loss geometry: keep equal (bit-identical losses). */
#define TRAINER_NLL_ROWS 512
#define TRAINER_VTILE 512
/* Vocabulary rows per head super-tile: at least this many. */
#define TRAINER_MIN_SUPER_ROWS 4096
/* Parameters per chunk of the weight-decay sweep (int64 sums stay exact). */
#define TRAINER_WZ_CHUNK 4096

/* ---------------------------------------------------------------------------
 * The trainer
 */

typedef struct trainer_sign {
    sw_gpt2_acts *acts;
    float *wbuf; /* (wbuf_n) one layer, or one head super-tile, of perturbed weights */
    float *wte;  /* (U_max, C) the batch's token rows */
    float *wpe;  /* (T_max, C) */
    /* the scored rows of the batch */
    float *h;      /* (N_max, C) */
    float *tile;   /* (TRAINER_NLL_ROWS, TRAINER_VTILE) */
    float *rmax;   /* (N_max) */
    double *rsum;  /* (N_max) */
    float *tlogit; /* (N_max) */
    uint8_t *bad;  /* (N_max) */
    double loss_sum;
    int rc;
    sw_diag diag;
} trainer_sign;

typedef struct sw_trainer sw_trainer;
typedef void (*trainer_job_fn)(sw_trainer *tr, int worker, void *arg);

struct sw_trainer {
    sw_trainer_config cfg;
    sw_gpt2_config model;
    const sw_dataset *ds;
    size_t n_tensors;
    sw_gpt2_tensor *tensors; /* (n_tensors) */
    bool *trainable;         /* (n_tensors) */
    bool any_decay;          /* some trainable tensor is decayed */
    int C, V, B, T_max, N_max, U_max;
    size_t layer_n;   /* parameters of one block */
    size_t lora_n;    /* parameters of one block's adapters (0: none) */
    size_t n_base;    /* tensors of the base model (the adapters follow) */
    size_t lora_per_layer; /* adapter tensors per block */
    int super_rows;   /* vocabulary rows per head super-tile */
    size_t wbuf_n;    /* floats per sign's wbuf */
    int16_t *z;       /* (wbuf_n) */
    int16_t *zrow[2]; /* (max(C, TRAINER_WZ_CHUNK)) per worker */
    trainer_sign sign[2];
    /* the loaded minibatch */
    int64_t batch_step; /* -1: none */
    int bB, bT, n_rows, n_uniq;
    size_t *idx;      /* (B) */
    int32_t *tokens;  /* (B, T_max) */
    int32_t *remap;   /* (B, T_max) compact token ids for the embedding */
    int32_t *lengths; /* (B) */
    uint8_t *mask;    /* (B, T_max) */
    int32_t *uniq;    /* (U_max) */
    int32_t *tokmap;  /* (V) -1 or compact id */
    int *row_pos;     /* (N_max) b*T + t of each scored row */
    int32_t *row_tgt; /* (N_max) */
    int64_t tokens_scored;
    /* data order cache */
    size_t *perm; /* (n_records) */
    uint64_t perm_epoch;
    bool perm_valid;
    /* the probe in progress */
    const sw_fixed *w;
    const uint8_t *seed; /* NULL: unperturbed */
    float eps;
    int nsigns;
    double wz_part[2];
    /* scale policy */
    uint64_t next_step;
    uint64_t window;
    float scale;
    float initial;
    double acc_sum; /* sum of |q| * scale over own updates of `window` */
    uint64_t acc_n;
    /* workers */
    int nthreads; /* 1 or 2 logical workers running at once */
    bool helper_started;
    pthread_t helper;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    trainer_job_fn job;
    void *job_arg;
    uint64_t job_gen, job_done;
    bool quit;
};

static double trainer_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void *trainer_helper_main(void *arg)
{
    sw_trainer *tr = arg;
    uint64_t seen = 0;
    pthread_mutex_lock(&tr->mu);
    for (;;) {
        while (!tr->quit && tr->job_gen == seen)
            pthread_cond_wait(&tr->cv, &tr->mu);
        if (tr->quit) break;
        seen = tr->job_gen;
        trainer_job_fn fn = tr->job;
        void *a = tr->job_arg;
        pthread_mutex_unlock(&tr->mu);
        fn(tr, 1, a);
        pthread_mutex_lock(&tr->mu);
        tr->job_done = seen;
        pthread_cond_broadcast(&tr->cv);
    }
    pthread_mutex_unlock(&tr->mu);
    return NULL;
}

/* Runs fn on workers 0 and 1: at once with a helper thread, else in turn. */
static void trainer_run(sw_trainer *tr, trainer_job_fn fn, void *arg)
{
    if (!tr->helper_started) {
        fn(tr, 0, arg);
        fn(tr, 1, arg);
        return;
    }
    pthread_mutex_lock(&tr->mu);
    tr->job = fn;
    tr->job_arg = arg;
    const uint64_t gen = ++tr->job_gen;
    pthread_cond_broadcast(&tr->cv);
    pthread_mutex_unlock(&tr->mu);
    fn(tr, 0, arg);
    pthread_mutex_lock(&tr->mu);
    while (tr->job_done != gen)
        pthread_cond_wait(&tr->cv, &tr->mu);
    pthread_mutex_unlock(&tr->mu);
}

static bool trainer_decayed(sw_gpt2_kind k)
{
    return k == SW_GPT2_WTE || k == SW_GPT2_WPE || k == SW_GPT2_ATTN_W ||
           k == SW_GPT2_ATTN_PROJ_W || k == SW_GPT2_FC_W || k == SW_GPT2_FC_PROJ_W ||
           k == SW_GPT2_LM_HEAD || k == SW_GPT2_LORA_A || k == SW_GPT2_LORA_B;
}

/* ---------------------------------------------------------------------------
 * Weights jobs
 */

/*
 * Dequantizes canonical parameters [first, first + n) into plus/minus (both
 * indexed from first), perturbing trainable tensors along the probe's z.
 * z is scratch for the same range.
 */
static void trainer_dequant(sw_trainer *tr, uint64_t first, size_t n, int16_t *z, float *plus,
                            float *minus)
{
    const uint64_t end = first + n;
    for (size_t i = 0; i < tr->n_tensors && first < end; i++) {
        const sw_gpt2_tensor *t = &tr->tensors[i];
        const uint64_t t0 = t->offset, t1 = t->offset + t->numel;
        if (t1 <= first || t0 >= end) continue;
        const uint64_t a = first > t0 ? first : t0;
        const uint64_t b = end < t1 ? end : t1;
        const size_t off = (size_t)(a - first);
        if (tr->seed && tr->trainable[i] && tr->cfg.spec.n_rows > 0 &&
            sw_fixed_row_tensor(t->kind)) {
            /* a run that trains some rows: the range unperturbed, then those rows again
             * with their z (as the sweep writes them, fixed.c) */
            sw_fixed_dequant_pm(tr->w, a, (size_t)(b - a), NULL, 0.0f, plus + off,
                                minus ? minus + off : NULL);
            const uint64_t C = (uint64_t)t->shape[1];
            for (int r = 0; r < tr->cfg.spec.n_rows; r++) {
                const uint64_t r0 = t0 + (uint64_t)tr->cfg.spec.rows[r] * C, r1 = r0 + C;
                const uint64_t x = r0 > a ? r0 : a, y = r1 < b ? r1 : b;
                if (x >= y) continue;
                const size_t o = (size_t)(x - first), m = (size_t)(y - x);
                sw_zstream(tr->seed, tr->cfg.spec.perturb, x, m, z + o);
                sw_fixed_dequant_pm(tr->w, x, m, z + o, tr->eps, plus + o, minus ? minus + o : NULL);
            }
        } else if (tr->seed && tr->trainable[i]) {
            sw_zstream(tr->seed, tr->cfg.spec.perturb, a, (size_t)(b - a), z + off);
            sw_fixed_dequant_pm(tr->w, a, (size_t)(b - a), z + off, tr->eps, plus + off,
                                minus ? minus + off : NULL);
        } else {
            sw_fixed_dequant_pm(tr->w, a, (size_t)(b - a), NULL, 0.0f, plus + off,
                                minus ? minus + off : NULL);
        }
    }
}

typedef struct trainer_range {
    uint64_t first;
    size_t n;
    size_t at; /* where in wbuf the range goes */
} trainer_range;

/* Worker k dequantizes half k of the range into sign buffers (wbuf). */
static void trainer_job_range(sw_trainer *tr, int worker, void *arg)
{
    const trainer_range *r = arg;
    /* split at a multiple of 512 parameters: whole stream blocks per worker */
    size_t half = (r->n / 2 + 511) & ~(size_t)511;
    if (half > r->n) half = r->n;
    const size_t a = worker == 0 ? 0 : half;
    const size_t b = worker == 0 ? half : r->n;
    if (b <= a) return;
    const size_t at = r->at + a;
    float *minus = tr->nsigns > 1 ? tr->sign[1].wbuf + at : NULL;
    trainer_dequant(tr, r->first + a, b - a, tr->z + at, tr->sign[0].wbuf + at, minus);
}

/* Index of layer l's first adapter tensor. */
static size_t trainer_lora_first(const sw_trainer *tr, int l)
{
    return tr->n_base + (size_t)l * tr->lora_per_layer;
}

/* Worker k dequantizes half of the batch's wte rows and wpe rows 0..T-1. */
static void trainer_job_embed_weights(sw_trainer *tr, int worker, void *arg)
{
    (void)arg;
    const int C = tr->C;
    const sw_gpt2_tensor *wte = &tr->tensors[0], *wpe = &tr->tensors[1];
    float *minus_wte = tr->nsigns > 1 ? tr->sign[1].wte : NULL;
    float *minus_wpe = tr->nsigns > 1 ? tr->sign[1].wpe : NULL;
    const int nu = tr->n_uniq, hu = (nu + 1) / 2;
    for (int u = worker == 0 ? 0 : hu; u < (worker == 0 ? hu : nu); u++) {
        const uint64_t first = wte->offset + (uint64_t)tr->uniq[u] * C;
        trainer_dequant(tr, first, (size_t)C, tr->zrow[worker], tr->sign[0].wte + (size_t)u * C,
                        minus_wte ? minus_wte + (size_t)u * C : NULL);
    }
    const int T = tr->bT, ht = (T + 1) / 2;
    for (int t = worker == 0 ? 0 : ht; t < (worker == 0 ? ht : T); t++) {
        const uint64_t first = wpe->offset + (uint64_t)t * C;
        trainer_dequant(tr, first, (size_t)C, tr->zrow[worker], tr->sign[0].wpe + (size_t)t * C,
                        minus_wpe ? minus_wpe + (size_t)t * C : NULL);
    }
}

/* ---------------------------------------------------------------------------
 * Sign jobs: worker s runs the pass of sign s (+ is 0, - is 1).
 */

static void trainer_job_embed(sw_trainer *tr, int s, void *arg)
{
    (void)arg;
    if (s >= tr->nsigns) return;
    trainer_sign *sg = &tr->sign[s];
    sg->rc = sw_gpt2_embed(sg->acts, &tr->model, sg->wte, sg->wpe, tr->remap, tr->lengths, tr->bB,
                           tr->bT, &sg->diag);
}

static void trainer_layer_view(const sw_trainer *tr, const float *buf, int l, sw_gpt2_layer *lw)
{
    const sw_gpt2_tensor *t = &tr->tensors[2 + 12 * (size_t)l];
    const size_t base = t[0].offset;
    const float *p[12];
    for (int i = 0; i < 12; i++)
        p[i] = buf + (t[i].offset - base);
    lw->ln_1_w = p[0];
    lw->ln_1_b = p[1];
    lw->attn_w = p[2];
    lw->attn_b = p[3];
    lw->attn_proj_w = p[4];
    lw->attn_proj_b = p[5];
    lw->ln_2_w = p[6];
    lw->ln_2_b = p[7];
    lw->fc_w = p[8];
    lw->fc_b = p[9];
    lw->fc_proj_w = p[10];
    lw->fc_proj_b = p[11];
    for (int k = 0; k < SW_LORA_N_TARGETS; k++)
        lw->lora_a[k] = lw->lora_b[k] = NULL;
    if (tr->lora_n == 0) return;
    const sw_gpt2_tensor *a = &tr->tensors[trainer_lora_first(tr, l)];
    for (size_t i = 0; i < tr->lora_per_layer; i++) {
        const float *q = buf + tr->layer_n + (a[i].offset - a[0].offset);
        if (a[i].kind == SW_GPT2_LORA_A)
            lw->lora_a[a[i].target] = q;
        else
            lw->lora_b[a[i].target] = q;
    }
}

static void trainer_job_block(sw_trainer *tr, int s, void *arg)
{
    if (s >= tr->nsigns) return;
    const int l = *(const int *)arg;
    sw_gpt2_layer lw;
    trainer_layer_view(tr, tr->sign[s].wbuf, l, &lw);
    sw_gpt2_block(tr->sign[s].acts, &tr->model, &lw);
}

/* ln_f sits in wbuf[0..2C); then the scored rows are gathered. */
static void trainer_job_final(sw_trainer *tr, int s, void *arg)
{
    (void)arg;
    if (s >= tr->nsigns) return;
    trainer_sign *sg = &tr->sign[s];
    const int C = tr->C;
    sw_gpt2_final(sg->acts, &tr->model, sg->wbuf, sg->wbuf + C);
    const float *hidden = sw_gpt2_acts_hidden(sg->acts); /* (B, T, C) */
    for (int r = 0; r < tr->n_rows; r++) {
        const float *h = hidden + (size_t)(tr->row_pos[r] - 1) * C;
        memcpy(sg->h + (size_t)r * C, h, (size_t)C * sizeof(float));
        float acc = 0.0f;
        for (int i = 0; i < C; i++)
            acc += h[i] * 0.0f; /* NaN or inf anywhere makes acc NaN */
        sg->bad[r] = acc != 0.0f;
        sg->rmax[r] = -INFINITY;
        sg->rsum[r] = 0.0;
        sg->tlogit[r] = 0.0f;
    }
}

typedef struct trainer_head {
    int v0, vn; /* the super-tile's vocabulary rows, in wbuf */
} trainer_head;

/* Folds the super-tile's logits into every scored row's log-sum-exp. */
static void trainer_job_head(sw_trainer *tr, int s, void *arg)
{
    if (s >= tr->nsigns) return;
    const trainer_head *hd = arg;
    trainer_sign *sg = &tr->sign[s];
    const int C = tr->C;
    for (int t0 = 0; t0 < hd->vn; t0 += TRAINER_VTILE) {
        const int vn = hd->vn - t0 < TRAINER_VTILE ? hd->vn - t0 : TRAINER_VTILE;
        const int v0 = hd->v0 + t0;
        const float *wt = sg->wbuf + (size_t)t0 * C; /* (vn, C) */
        for (int r0 = 0; r0 < tr->n_rows; r0 += TRAINER_NLL_ROWS) {
            const int n = tr->n_rows - r0 < TRAINER_NLL_ROWS ? tr->n_rows - r0 : TRAINER_NLL_ROWS;
            float *tile = sg->tile; /* (n, vn) */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, vn, C, 1.0f,
                        sg->h + (size_t)r0 * C, C, wt, C, 0.0f, tile, vn);
            for (int i = 0; i < n; i++) {
                const int r = r0 + i;
                const float *row = tile + (size_t)i * vn; /* (vn) */
                const float tmax = sw_gpt2_row_max(row, vn);
                if (tmax > sg->rmax[r]) {
                    sg->rsum[r] *= exp((double)sg->rmax[r] - (double)tmax);
                    sg->rmax[r] = tmax;
                }
                sg->rsum[r] += (double)sw_gpt2_row_exp_sum(row, vn, sg->rmax[r]);
                const int tgt = tr->row_tgt[r];
                if (tgt >= v0 && tgt < v0 + vn) sg->tlogit[r] = row[tgt - v0];
            }
        }
    }
}

/* The chunking of sw_gpt2_nll: rows in chunks of 512, summed in order. */
static void trainer_job_loss(sw_trainer *tr, int s, void *arg)
{
    (void)arg;
    if (s >= tr->nsigns) return;
    trainer_sign *sg = &tr->sign[s];
    double total = 0.0;
    for (int r = 0; r < tr->n_rows; r++) {
        double v = log(sg->rsum[r]) + (double)sg->rmax[r] - (double)sg->tlogit[r];
        if (sg->bad[r]) v = NAN;
        total += v;
    }
    sg->loss_sum = total;
}

/* <w, z> over canonical parameters [first, first + n) of tensor i; z is scratch. */
static double trainer_wz_range(const sw_trainer *tr, size_t i, uint64_t first, size_t n,
                               int16_t *z)
{
    /* 2^-(e_t + 13): an exact power of two */
    const double unit = ldexp(1.0, -(int)tr->w->exp[i] - SW_GAUSS_FRAC_BITS);
    double acc = 0.0;
    for (size_t j = 0; j < n; j += TRAINER_WZ_CHUNK) {
        const size_t m = n - j < TRAINER_WZ_CHUNK ? n - j : TRAINER_WZ_CHUNK;
        sw_zstream(tr->seed, tr->cfg.spec.perturb, first + j, m, z);
        const int32_t *wi = tr->w->w + first + j;
        int64_t s = 0; /* |w z| < 2^46, 4096 terms: exact */
        for (size_t k = 0; k < m; k++)
            s += (int64_t)wi[k] * z[k];
        acc += (double)s * unit;
    }
    return acc;
}

/* <w, z> over the decayed trainable tensors, worker k taking half of each. */
static void trainer_job_wz(sw_trainer *tr, int worker, void *arg)
{
    (void)arg;
    double acc = 0.0;
    int16_t *z = tr->zrow[worker];
    for (size_t i = 0; i < tr->n_tensors; i++) {
        const sw_gpt2_tensor *t = &tr->tensors[i];
        if (!tr->trainable[i] || !trainer_decayed(t->kind)) continue;
        if (tr->cfg.spec.n_rows > 0 && sw_fixed_row_tensor(t->kind)) {
            /* only the trained rows: worker k takes every other one */
            const size_t C = (size_t)t->shape[1];
            for (int r = worker; r < tr->cfg.spec.n_rows; r += 2)
                acc += trainer_wz_range(tr, i, t->offset + (size_t)tr->cfg.spec.rows[r] * C, C, z);
            continue;
        }
        size_t half = (t->numel / 2 + 511) & ~(size_t)511;
        if (half > t->numel) half = t->numel;
        const size_t a = worker == 0 ? 0 : half, b = worker == 0 ? half : t->numel;
        acc += trainer_wz_range(tr, i, t->offset + a, b - a, z);
    }
    tr->wz_part[worker] = acc;
}

/* ---------------------------------------------------------------------------
 * Data
 */

typedef struct trainer_rng {
    uint8_t key[crypto_stream_chacha20_ietf_KEYBYTES];
    uint8_t nonce[crypto_stream_chacha20_ietf_NONCEBYTES];
    uint32_t block;
    uint8_t buf[64];
    int pos;
} trainer_rng;

static uint64_t trainer_rng_u64(trainer_rng *g)
{
    if (g->pos + 8 > 64) {
        memset(g->buf, 0, sizeof(g->buf));
        crypto_stream_chacha20_ietf_xor_ic(g->buf, g->buf, sizeof(g->buf), g->nonce, g->block++,
                                           g->key);
        g->pos = 0;
    }
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)g->buf[g->pos + i] << (8 * i);
    g->pos += 8;
    return v;
}

/* Uniform in [0, n) by rejection (no modulo bias). */
static uint64_t trainer_rng_below(trainer_rng *g, uint64_t n)
{
    const uint64_t lim = UINT64_MAX - UINT64_MAX % n; /* multiple of n */
    for (;;) {
        const uint64_t x = trainer_rng_u64(g);
        if (x < lim) return x % n;
    }
}

static void trainer_permutation(uint64_t seed, uint64_t epoch, size_t n, size_t *perm)
{
    static const char tag[] = "swarmtune-data-v1";
    uint8_t in[sizeof(tag) - 1 + 16];
    memcpy(in, tag, sizeof(tag) - 1);
    for (int i = 0; i < 8; i++) {
        in[sizeof(tag) - 1 + i] = (uint8_t)(seed >> (8 * i));
        in[sizeof(tag) - 1 + 8 + i] = (uint8_t)(epoch >> (8 * i));
    }
    trainer_rng g;
    memset(&g, 0, sizeof(g));
    g.pos = 64;
    SW_ASSERT(sodium_init() >= 0);
    crypto_generichash(g.key, sizeof(g.key), in, sizeof(in), NULL, 0);
    for (size_t i = 0; i < n; i++)
        perm[i] = i;
    for (size_t i = n - 1; i >= 1 && n > 1; i--) {
        const size_t j = (size_t)trainer_rng_below(&g, (uint64_t)i + 1);
        const size_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

/* idx of step with a permutation cache (perm may be regenerated). */
static void trainer_indices(uint64_t seed, size_t n, uint64_t step, int B, size_t *idx,
                            size_t *perm, uint64_t *perm_epoch, bool *perm_valid)
{
    for (int i = 0; i < B; i++) {
        /* position step*B + i of the concatenated epochs, in 128-bit-free form */
        const uint64_t pos_lo = step * (uint64_t)B + (uint64_t)i; /* wraps only past 2^64 */
        const uint64_t epoch = pos_lo / n;
        if (!*perm_valid || *perm_epoch != epoch) {
            trainer_permutation(seed, epoch, n, perm);
            *perm_epoch = epoch;
            *perm_valid = true;
        }
        idx[i] = perm[pos_lo % n];
    }
}

int sw_trainer_batch_indices(uint64_t data_seed, size_t n_records, uint64_t step, int batch_size,
                             size_t *idx)
{
    SW_ASSERT(n_records >= 1 && batch_size >= 1);
    size_t *perm = malloc(n_records * sizeof(*perm));
    if (!perm) return SW_ENOMEM;
    uint64_t e = 0;
    bool valid = false;
    trainer_indices(data_seed, n_records, step, batch_size, idx, perm, &e, &valid);
    free(perm);
    return 0;
}

/* Loads the minibatch of training step `step` (cached). */
static void trainer_load_batch(sw_trainer *tr, uint64_t step)
{
    if (tr->batch_step >= 0 && (uint64_t)tr->batch_step == step) return;
    const sw_dataset *ds = tr->ds;
    const int B = tr->B;
    trainer_indices(tr->cfg.data_seed, ds->n_records, step, B, tr->idx, tr->perm, &tr->perm_epoch,
                    &tr->perm_valid);
    const int T = sw_dataset_batch_len(ds, tr->idx, B);
    tr->tokens_scored = sw_dataset_fill_batch(ds, tr->idx, B, T, tr->tokens, tr->lengths, tr->mask);
    tr->bB = B;
    tr->bT = T;
    int nu = 0, nr = 0;
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            const size_t pos = (size_t)b * T + t;
            if (t >= tr->lengths[b]) {
                tr->remap[pos] = 0;
                continue;
            }
            const int32_t tok = tr->tokens[pos];
            if (tr->tokmap[tok] < 0) {
                tr->tokmap[tok] = nu;
                tr->uniq[nu++] = tok;
            }
            tr->remap[pos] = tr->tokmap[tok];
            if (t >= 1 && tr->mask[pos]) {
                tr->row_pos[nr] = (int)pos;
                tr->row_tgt[nr] = tok;
                nr++;
            }
        }
    }
    for (int u = 0; u < nu; u++)
        tr->tokmap[tr->uniq[u]] = -1;
    tr->n_uniq = nu;
    tr->n_rows = nr;
    tr->batch_step = (int64_t)step;
}

/* ---------------------------------------------------------------------------
 * The probe
 */

/*
 * Losses of the loaded batch at W + eps z (sign 0) and W - eps z (sign 1);
 * seed NULL or nsigns 1: only the first.  wz (may be NULL) needs a seed.
 */
static int trainer_forward(sw_trainer *tr, const sw_fixed *w, const uint8_t *seed, float eps,
                           int nsigns, double loss[2], double *wz, sw_diag *diag)
{
    if (!sw_gpt2_config_equal(&w->cfg, &tr->model) ||
        w->n_params != tr->tensors[tr->n_tensors - 1].offset + tr->tensors[tr->n_tensors - 1].numel)
        return sw_diag_set(diag, SW_EMISMATCH,
                           "trainer: the weights' architecture differs from the trainer's");
    tr->w = w;
    tr->seed = seed;
    tr->eps = eps;
    tr->nsigns = nsigns;
    const int C = tr->C;
    const int L = tr->model.n_layer;
    for (int s = 0; s < 2; s++) {
        tr->sign[s].rc = 0;
        tr->sign[s].diag.msg[0] = '\0';
    }

    trainer_run(tr, trainer_job_embed_weights, NULL);
    trainer_run(tr, trainer_job_embed, NULL);
    for (int s = 0; s < nsigns; s++)
        if (tr->sign[s].rc < 0) {
            if (diag) *diag = tr->sign[s].diag;
            return tr->sign[s].rc;
        }
    for (int l = 0; l < L; l++) {
        const sw_gpt2_tensor *t = &tr->tensors[2 + 12 * (size_t)l];
        trainer_range r = {t->offset, tr->layer_n, 0};
        trainer_run(tr, trainer_job_range, &r);
        if (tr->lora_n > 0) {
            /* the layer's adapters, contiguous, after its base weights in wbuf */
            trainer_range ra = {tr->tensors[trainer_lora_first(tr, l)].offset, tr->lora_n,
                                tr->layer_n};
            trainer_run(tr, trainer_job_range, &ra);
        }
        trainer_run(tr, trainer_job_block, &l);
    }
    const sw_gpt2_tensor *lnf = &tr->tensors[2 + 12 * (size_t)L];
    trainer_range r = {lnf->offset, 2 * (size_t)C, 0};
    trainer_run(tr, trainer_job_range, &r);
    trainer_run(tr, trainer_job_final, NULL);

    /* the head: wte when tied, else lm_head */
    const sw_gpt2_tensor *head = tr->model.tie_word_embeddings
                                     ? &tr->tensors[0]
                                     : &tr->tensors[sw_gpt2_base_tensor_count(&tr->model) - 1];
    if (tr->n_rows > 0) {
        for (int v0 = 0; v0 < tr->V; v0 += tr->super_rows) {
            const int vn = tr->V - v0 < tr->super_rows ? tr->V - v0 : tr->super_rows;
            trainer_range hr = {head->offset + (uint64_t)v0 * C, (size_t)vn * C, 0};
            trainer_run(tr, trainer_job_range, &hr);
            trainer_head hd = {v0, vn};
            trainer_run(tr, trainer_job_head, &hd);
        }
    }
    trainer_run(tr, trainer_job_loss, NULL);
    for (int s = 0; s < nsigns; s++)
        loss[s] = tr->n_rows > 0 ? tr->sign[s].loss_sum / (double)tr->n_rows : 0.0;
    if (wz) {
        *wz = 0.0;
        if (seed && tr->any_decay) {
            trainer_run(tr, trainer_job_wz, NULL);
            *wz = tr->wz_part[0] + tr->wz_part[1];
        }
    }
    tr->w = NULL;
    tr->seed = NULL;
    return 0;
}

/* With two workers each runs OpenBLAS single-threaded in its own thread
 * (concurrent multi-threaded OpenBLAS calls would serialise on its server). */
static void trainer_set_blas_threads(const sw_trainer *tr)
{
    sw_gpt2_set_threads(tr->helper_started ? 1 : tr->cfg.threads);
}

/* ---------------------------------------------------------------------------
 * Quantization and scale (pure functions)
 */

int8_t sw_trainer_quantize(double g, float scale, const uint8_t seed[SW_ID_BYTES])
{
    if (!isfinite(g) || !(scale > 0.0f)) return 0;
    uint8_t b[8];
    sw_stream_bytes(seed, SW_STREAM_QROUND, 0, sizeof(b), b);
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)b[i] << (8 * i);
    const double u = (double)(v >> 11) * 0x1p-53; /* [0, 1), exact */
    const double x = g / (double)scale + u;
    if (x >= (double)SW_Q_MAX) return SW_Q_MAX;
    if (x <= -(double)SW_Q_MAX) return -SW_Q_MAX;
    return (int8_t)floor(x);
}

/* s as a float in [max_scale * 2^-20, max_scale], never above max_scale. */
static float trainer_clamp_scale(double s, double max_scale)
{
    const double lo = max_scale * 0x1p-20;
    if (!(s >= lo)) s = lo; /* also NaN */
    if (s > max_scale) s = max_scale;
    float f = (float)s;
    while ((double)f > max_scale)
        f = nextafterf(f, 0.0f);
    if (!(f > 0.0f)) f = nextafterf(0.0f, 1.0f);
    return f;
}

float sw_trainer_initial_scale(double max_scale, double init_scale)
{
    const double s = init_scale > 0.0 ? init_scale : max_scale * 3.0 / 16.0;
    return trainer_clamp_scale(s, max_scale);
}

static float trainer_scale_from(double max_scale, float initial, double sum, uint64_t n)
{
    if (n == 0) return initial;
    return trainer_clamp_scale(sum / (double)n / (double)SW_TRAINER_TARGET_Q, max_scale);
}

static void trainer_acc(double *sum, uint64_t *n, const sw_update *u)
{
    *sum += (double)(u->q < 0 ? -u->q : u->q) * (double)u->scale;
    (*n)++;
}

float sw_trainer_next_scale(double max_scale, float initial, const sw_update *prev, size_t n)
{
    double sum = 0.0;
    uint64_t k = 0;
    for (size_t i = 0; i < n; i++)
        trainer_acc(&sum, &k, &prev[i]);
    return trainer_scale_from(max_scale, initial, sum, k);
}

/* ---------------------------------------------------------------------------
 * Trainable selection
 */

int sw_trainer_trainable(const sw_gpt2_config *cfg, const char *regex, bool *mask,
                         uint64_t *n_params, sw_diag *diag)
{
    const size_t nt = sw_gpt2_tensor_count(cfg);
    /* with adapters the base is frozen: only adapter tensors can be selected */
    const size_t first = cfg->lora_rank > 0 ? sw_gpt2_base_tensor_count(cfg) : 0;
    uint64_t total = 0;
    for (size_t i = 0; i < first; i++)
        mask[i] = false;
    if (!regex || !regex[0]) {
        for (size_t i = first; i < nt; i++) {
            sw_gpt2_tensor t;
            sw_gpt2_tensor_at(cfg, i, &t);
            mask[i] = true;
            total += t.numel;
        }
        if (n_params) *n_params = total;
        return 0;
    }
    int err = 0;
    PCRE2_SIZE erroff = 0;
    pcre2_code *re =
        pcre2_compile((PCRE2_SPTR)regex, PCRE2_ZERO_TERMINATED, 0, &err, &erroff, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return sw_diag_set(diag, SW_EINVAL, "trainable '%s': at offset %zu: %s", regex,
                           (size_t)erroff, (const char *)msg);
    }
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    if (!md) {
        pcre2_code_free(re);
        return sw_diag_set(diag, SW_ENOMEM, "trainable '%s': out of memory", regex);
    }
    int rc = 0;
    size_t selected = 0;
    for (size_t i = first; i < nt; i++) {
        sw_gpt2_tensor t;
        sw_gpt2_tensor_at(cfg, i, &t);
        const int m = pcre2_match(re, (PCRE2_SPTR)t.name, strlen(t.name), 0, 0, md, NULL);
        if (m < 0 && m != PCRE2_ERROR_NOMATCH) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(m, msg, sizeof msg);
            rc = sw_diag_set(diag, SW_EINVAL, "trainable '%s': matching '%s': %s", regex, t.name,
                             (const char *)msg);
            goto done;
        }
        mask[i] = m >= 0;
        if (mask[i]) {
            selected++;
            total += t.numel;
        }
    }
    if (selected == 0)
        rc = sw_diag_set(diag, SW_EINVAL, "trainable '%s': selects no %stensor", regex,
                         first ? "adapter " : "");
    else if (n_params)
        *n_params = total;
done:
    pcre2_match_data_free(md);
    pcre2_code_free(re);
    return rc;
}

/* ---------------------------------------------------------------------------
 * Lifecycle
 */

static int trainer_check_spec(const sw_train_spec *spec, bool allow_zero_scale, sw_diag *diag)
{
    if (spec->directions < 1 || spec->directions > SW_TRAINER_MAX_DIRECTIONS)
        return sw_diag_set(diag, SW_EINVAL, "trainer: directions %d is outside [1, %d]",
                           spec->directions, SW_TRAINER_MAX_DIRECTIONS);
    if (spec->perturb != SW_PERTURB_RADEMACHER && spec->perturb != SW_PERTURB_GAUSSIAN)
        return sw_diag_set(diag, SW_EINVAL, "trainer: unknown perturbation %d", (int)spec->perturb);
    const double m = spec->max_scale;
    if (!(isfinite(m) && (m > 0.0 || (allow_zero_scale && m == 0.0))))
        return sw_diag_set(diag, SW_EINVAL, "trainer: max_scale %g must be finite and > 0", m);
    return 0;
}

static void trainer_reset_policy(sw_trainer *tr)
{
    tr->next_step = 0;
    tr->window = 0;
    tr->initial = tr->cfg.spec.max_scale > 0.0
                      ? sw_trainer_initial_scale(tr->cfg.spec.max_scale, tr->cfg.init_scale)
                      : 0.0f;
    tr->scale = tr->initial;
    tr->acc_sum = 0.0;
    tr->acc_n = 0;
}

static void *trainer_calloc(size_t n, size_t size, bool *ok)
{
    if (!*ok) return NULL;
    void *p = NULL;
    if (n == 0) n = 1;
    if (n > SIZE_MAX / size || posix_memalign(&p, 64, n * size) != 0) {
        *ok = false;
        return NULL;
    }
    memset(p, 0, n * size);
    return p;
}

int sw_trainer_alloc(const sw_trainer_config *cfg, const sw_gpt2_config *model,
                     const sw_dataset *ds, sw_trainer **out, sw_diag *diag)
{
    int rc = sw_gpt2_config_validate(model, "trainer: model", diag);
    if (rc < 0) return rc;
    rc = trainer_check_spec(&cfg->spec, true, diag);
    if (rc < 0) return rc;
    if (!(cfg->eps > 0.0f) || !isfinite(cfg->eps))
        return sw_diag_set(diag, SW_EINVAL, "trainer: eps %g must be finite and > 0",
                           (double)cfg->eps);
    if (!(cfg->weight_decay >= 0.0) || !isfinite(cfg->weight_decay))
        return sw_diag_set(diag, SW_EINVAL, "trainer: weight_decay %g must be finite and >= 0",
                           cfg->weight_decay);
    if (cfg->batch_size < 1 || cfg->batch_size > SW_TRAINER_MAX_BATCH)
        return sw_diag_set(diag, SW_EINVAL, "trainer: batch_size %d is outside [1, %d]",
                           cfg->batch_size, SW_TRAINER_MAX_BATCH);
    if (cfg->scale_window < 1)
        return sw_diag_set(diag, SW_EINVAL, "trainer: scale_window %d must be >= 1",
                           cfg->scale_window);
    if (!(cfg->init_scale >= 0.0) || !isfinite(cfg->init_scale))
        return sw_diag_set(diag, SW_EINVAL, "trainer: init_scale %g must be finite and >= 0",
                           cfg->init_scale);
    if (cfg->threads < 1)
        return sw_diag_set(diag, SW_EINVAL, "trainer: threads %d must be >= 1", cfg->threads);
    if (!ds || ds->n_records < 1)
        return sw_diag_set(diag, SW_EINVAL, "trainer: the dataset has no record");
    if (ds->max_len > model->n_positions || ds->max_tokens > model->n_positions)
        return sw_diag_set(
            diag, SW_EINVAL,
            "trainer: %s: records of up to %d tokens exceed the model's %d positions "
            "(load it with max_tokens = seq_len <= n_positions)",
            ds->name ? ds->name : "dataset", (int)ds->max_len, model->n_positions);
    if (ds->max_token_id >= model->vocab_size)
        return sw_diag_set(
            diag, SW_EINVAL, "trainer: %s: token id %d is outside the model's vocabulary of %d",
            ds->name ? ds->name : "dataset", (int)ds->max_token_id, model->vocab_size);
    const int C = model->n_embd, V = model->vocab_size, B = cfg->batch_size;
    const int T = ds->max_len;
    if ((int64_t)B * T > (int64_t)1 << 28)
        return sw_diag_set(diag, SW_ETOOBIG, "trainer: batch %d x %d tokens is too large", B, T);

    sw_trainer *tr = calloc(1, sizeof(*tr));
    if (!tr) return sw_diag_set(diag, SW_ENOMEM, "trainer: out of memory");
    tr->cfg = *cfg;
    tr->cfg.trainable = NULL;
    tr->model = *model;
    tr->ds = ds;
    tr->batch_step = -1;
    tr->C = C;
    tr->V = V;
    tr->B = B;
    tr->T_max = T;
    tr->N_max = B * T;
    tr->U_max = B * T < V ? B * T : V;
    tr->n_tensors = sw_gpt2_tensor_count(model);
    pthread_mutex_init(&tr->mu, NULL);
    pthread_cond_init(&tr->cv, NULL);
    bool ok = true;
    tr->tensors = trainer_calloc(tr->n_tensors, sizeof(*tr->tensors), &ok);
    tr->trainable = trainer_calloc(tr->n_tensors, sizeof(bool), &ok);
    if (!ok) goto nomem;
    for (size_t i = 0; i < tr->n_tensors; i++) {
        sw_gpt2_tensor_at(model, i, &tr->tensors[i]);
        tr->trainable[i] = cfg->trainable ? cfg->trainable[i] : true;
        if (tr->trainable[i] && trainer_decayed(tr->tensors[i].kind)) tr->any_decay = true;
    }
    tr->layer_n = 12 * (size_t)C * C + 13 * (size_t)C;
    tr->lora_n = (size_t)sw_lora_layer_params(model);
    tr->n_base = sw_gpt2_base_tensor_count(model);
    tr->lora_per_layer = (tr->n_tensors - tr->n_base) / (size_t)model->n_layer;
    {
        size_t rows = tr->layer_n / (size_t)C / TRAINER_VTILE * TRAINER_VTILE;
        if (rows < TRAINER_MIN_SUPER_ROWS) rows = TRAINER_MIN_SUPER_ROWS;
        const size_t vr = ((size_t)V + TRAINER_VTILE - 1) / TRAINER_VTILE * TRAINER_VTILE;
        if (rows > vr) rows = vr;
        tr->super_rows = (int)rows;
        const size_t block = tr->layer_n + tr->lora_n;
        tr->wbuf_n = block > rows * C ? block : rows * C;
    }
    tr->z = trainer_calloc(tr->wbuf_n, sizeof(int16_t), &ok);
    for (int k = 0; k < 2; k++)
        tr->zrow[k] =
            trainer_calloc(C > TRAINER_WZ_CHUNK ? C : TRAINER_WZ_CHUNK, sizeof(int16_t), &ok);
    tr->idx = trainer_calloc(B, sizeof(size_t), &ok);
    tr->tokens = trainer_calloc((size_t)B * T, sizeof(int32_t), &ok);
    tr->remap = trainer_calloc((size_t)B * T, sizeof(int32_t), &ok);
    tr->lengths = trainer_calloc(B, sizeof(int32_t), &ok);
    tr->mask = trainer_calloc((size_t)B * T, 1, &ok);
    tr->uniq = trainer_calloc(tr->U_max, sizeof(int32_t), &ok);
    tr->tokmap = trainer_calloc(V, sizeof(int32_t), &ok);
    tr->row_pos = trainer_calloc(tr->N_max, sizeof(int), &ok);
    tr->row_tgt = trainer_calloc(tr->N_max, sizeof(int32_t), &ok);
    tr->perm = trainer_calloc(ds->n_records, sizeof(size_t), &ok);
    for (int s = 0; s < 2; s++) {
        trainer_sign *sg = &tr->sign[s];
        sg->wbuf = trainer_calloc(tr->wbuf_n, sizeof(float), &ok);
        sg->wte = trainer_calloc((size_t)tr->U_max * C, sizeof(float), &ok);
        sg->wpe = trainer_calloc((size_t)T * C, sizeof(float), &ok);
        sg->h = trainer_calloc((size_t)tr->N_max * C, sizeof(float), &ok);
        sg->tile = trainer_calloc((size_t)TRAINER_NLL_ROWS * TRAINER_VTILE, sizeof(float), &ok);
        sg->rmax = trainer_calloc(tr->N_max, sizeof(float), &ok);
        sg->rsum = trainer_calloc(tr->N_max, sizeof(double), &ok);
        sg->tlogit = trainer_calloc(tr->N_max, sizeof(float), &ok);
        sg->bad = trainer_calloc(tr->N_max, 1, &ok);
    }
    if (!ok) goto nomem;
    for (int v = 0; v < V; v++)
        tr->tokmap[v] = -1;
    for (int s = 0; s < 2; s++) {
        rc = sw_gpt2_acts_alloc(model, B, T, &tr->sign[s].acts, diag);
        if (rc < 0) goto fail;
    }
    if (cfg->threads >= 2) {
        if (pthread_create(&tr->helper, NULL, trainer_helper_main, tr) != 0) {
            rc = sw_diag_set(diag, SW_ENOMEM, "trainer: cannot start a worker thread");
            goto fail;
        }
        tr->helper_started = true;
    }
    trainer_reset_policy(tr);
    *out = tr;
    return 0;
nomem:
    rc = sw_diag_set(diag, SW_ENOMEM, "trainer: cannot allocate the scratch");
fail:
    sw_trainer_free(tr);
    return rc;
}

void sw_trainer_free(sw_trainer *tr)
{
    if (!tr) return;
    if (tr->helper_started) {
        pthread_mutex_lock(&tr->mu);
        tr->quit = true;
        pthread_cond_broadcast(&tr->cv);
        pthread_mutex_unlock(&tr->mu);
        pthread_join(tr->helper, NULL);
    }
    pthread_mutex_destroy(&tr->mu);
    pthread_cond_destroy(&tr->cv);
    for (int s = 0; s < 2; s++) {
        trainer_sign *sg = &tr->sign[s];
        sw_gpt2_acts_free(sg->acts);
        free(sg->wbuf);
        free(sg->wte);
        free(sg->wpe);
        free(sg->h);
        free(sg->tile);
        free(sg->rmax);
        free(sg->rsum);
        free(sg->tlogit);
        free(sg->bad);
    }
    free(tr->tensors);
    free(tr->trainable);
    free(tr->z);
    free(tr->zrow[0]);
    free(tr->zrow[1]);
    free(tr->idx);
    free(tr->tokens);
    free(tr->remap);
    free(tr->lengths);
    free(tr->mask);
    free(tr->uniq);
    free(tr->tokmap);
    free(tr->row_pos);
    free(tr->row_tgt);
    free(tr->perm);
    free(tr);
}

/* ---------------------------------------------------------------------------
 * Steps
 */

uint64_t sw_trainer_next_step(const sw_trainer *tr)
{
    return tr->next_step;
}

float sw_trainer_scale(const sw_trainer *tr)
{
    return tr->scale;
}

/* Makes tr->scale the scale of the window holding training step t. */
static void trainer_enter_window(sw_trainer *tr, uint64_t t)
{
    const uint64_t w = t / (uint64_t)tr->cfg.scale_window;
    if (w == tr->window) return;
    const double m = tr->cfg.spec.max_scale;
    tr->scale = w == tr->window + 1 ? trainer_scale_from(m, tr->initial, tr->acc_sum, tr->acc_n)
                                    : tr->initial;
    tr->window = w;
    tr->acc_sum = 0.0;
    tr->acc_n = 0;
}

int sw_trainer_step(sw_trainer *tr, const sw_fixed *w, sw_trainer_result *res, sw_diag *diag)
{
    const sw_train_spec *spec = &tr->cfg.spec;
    if (!(spec->max_scale > 0.0))
        return sw_diag_set(diag, SW_EINVAL, "trainer: max_scale is 0: calibrate first");
    const double t0 = trainer_now();
    trainer_set_blas_threads(tr);
    const uint64_t t = tr->next_step;
    const int n = spec->directions;
    trainer_enter_window(tr, t);
    trainer_load_batch(tr, t);
    memset(res, 0, sizeof(*res));
    res->step = t;
    res->first_update = t * (uint64_t)n;
    res->n = n;
    res->tokens = tr->tokens_scored;
    res->batch_len = tr->bT;
    res->scale = tr->scale;
    double fwd = 0.0, lsum = 0.0;
    for (int d = 0; d < n; d++) {
        sw_trainer_dir *dir = &res->dirs[d];
        sw_update *u = &dir->update;
        memcpy(u->origin, tr->cfg.origin, SW_ID_BYTES);
        u->step = res->first_update + (uint64_t)d;
        u->scale = tr->scale;
        uint8_t seed[SW_ID_BYTES];
        sw_update_seed(spec->run_id, tr->cfg.origin, u->step, seed);
        double loss[2] = {0.0, 0.0};
        const double f0 = trainer_now();
        int rc = trainer_forward(tr, w, seed, tr->cfg.eps, 2, loss,
                                 tr->cfg.weight_decay > 0.0 ? &dir->wz : NULL, diag);
        fwd += trainer_now() - f0;
        if (rc < 0) return rc;
        dir->loss_plus = loss[0];
        dir->loss_minus = loss[1];
        dir->g = (loss[0] - loss[1]) / (2.0 * (double)tr->cfg.eps) + tr->cfg.weight_decay * dir->wz;
        dir->nonfinite = !isfinite(dir->g);
        u->q = sw_trainer_quantize(dir->g, u->scale, seed);
        lsum += 0.5 * (loss[0] + loss[1]);
    }
    for (int d = 0; d < n; d++)
        trainer_acc(&tr->acc_sum, &tr->acc_n, &res->dirs[d].update);
    tr->next_step = t + 1;
    res->loss = lsum / (double)n;
    res->seconds_forward = fwd;
    res->seconds = trainer_now() - t0;
    return 0;
}

uint64_t sw_trainer_resume_from(const sw_trainer *tr, uint64_t next_update)
{
    const uint64_t n = (uint64_t)tr->cfg.spec.directions;
    const uint64_t W = (uint64_t)tr->cfg.scale_window;
    const uint64_t t = next_update / n + (next_update % n != 0);
    const uint64_t w = t / W;
    return w == 0 ? 0 : (w - 1) * W * n;
}

static int trainer_cmp_update(const void *a, const void *b)
{
    const sw_update *x = *(const sw_update *const *)a, *y = *(const sw_update *const *)b;
    return x->step < y->step ? -1 : x->step > y->step;
}

int sw_trainer_resume(sw_trainer *tr, uint64_t next_update, const sw_update *own, size_t n_own,
                      sw_diag *diag)
{
    const sw_train_spec *spec = &tr->cfg.spec;
    if (!(spec->max_scale > 0.0))
        return sw_diag_set(diag, SW_EINVAL, "trainer: max_scale is 0: calibrate first");
    const uint64_t n = (uint64_t)spec->directions;
    const uint64_t W = (uint64_t)tr->cfg.scale_window;
    const uint64_t t = next_update / n + (next_update % n != 0);
    const uint64_t w = t / W;
    const uint64_t from = sw_trainer_resume_from(tr, next_update);
    const uint64_t cur0 = w * W * n; /* first update of window w */
    const sw_update **sel = malloc((n_own ? n_own : 1) * sizeof(*sel));
    if (!sel) return sw_diag_set(diag, SW_ENOMEM, "trainer: resume: out of memory");
    size_t k = 0;
    for (size_t i = 0; i < n_own; i++) {
        const sw_update *u = &own[i];
        if (u->step < from || u->step >= next_update) continue;
        if (memcmp(u->origin, tr->cfg.origin, SW_ID_BYTES) != 0) {
            free(sel);
            return sw_diag_set(diag, SW_EINVAL, "trainer: resume: update %llu is not this node's",
                               (unsigned long long)u->step);
        }
        if (sw_update_check(spec, u, diag) < 0) {
            free(sel);
            sw_diag_prefix(diag, "trainer: resume");
            return SW_EINVAL;
        }
        sel[k++] = u;
    }
    qsort(sel, k, sizeof(*sel), trainer_cmp_update);
    for (size_t i = 1; i < k; i++)
        if (sel[i]->step == sel[i - 1]->step) {
            const unsigned long long dup = (unsigned long long)sel[i]->step;
            free(sel);
            return sw_diag_set(diag, SW_EINVAL, "trainer: resume: update %llu given twice", dup);
        }
    trainer_reset_policy(tr);
    /* window w-1 gives window w's scale; window w's own updates so far are
     * accumulated for window w+1's */
    double psum = 0.0;
    uint64_t pn = 0;
    size_t i = 0;
    for (; i < k && sel[i]->step < cur0; i++)
        trainer_acc(&psum, &pn, sel[i]);
    tr->window = w;
    tr->scale = w == 0 ? tr->initial : trainer_scale_from(spec->max_scale, tr->initial, psum, pn);
    for (; i < k; i++)
        trainer_acc(&tr->acc_sum, &tr->acc_n, sel[i]);
    tr->next_step = t;
    free(sel);
    return 0;
}

int sw_trainer_set_spec(sw_trainer *tr, const sw_train_spec *spec, sw_diag *diag)
{
    int rc = trainer_check_spec(spec, false, diag);
    if (rc < 0) return rc;
    tr->cfg.spec = *spec;
    trainer_reset_policy(tr);
    return 0;
}

static int trainer_cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int sw_trainer_calibrate(sw_trainer *tr, const sw_fixed *w, int n_probes,
                         sw_trainer_calibration *out, sw_diag *diag)
{
    if (n_probes < 1 || n_probes > SW_TRAINER_CALIBRATE_MAX)
        return sw_diag_set(diag, SW_EINVAL, "calibration: %d probes is outside [1, %d]", n_probes,
                           SW_TRAINER_CALIBRATE_MAX);
    trainer_set_blas_threads(tr);
    memset(out, 0, sizeof(*out));
    double sorted[SW_TRAINER_CALIBRATE_MAX];
    for (int i = 0; i < n_probes; i++) {
        static const char tag[] = "swarmtune-calibrate-v1";
        uint8_t in[sizeof(tag) - 1 + SW_ID_BYTES + 8];
        memcpy(in, tag, sizeof(tag) - 1);
        memcpy(in + sizeof(tag) - 1, tr->cfg.origin, SW_ID_BYTES);
        for (int b = 0; b < 8; b++)
            in[sizeof(tag) - 1 + SW_ID_BYTES + b] = (uint8_t)((uint64_t)i >> (8 * b));
        uint8_t seed[SW_ID_BYTES];
        SW_ASSERT(sodium_init() >= 0);
        crypto_generichash(seed, sizeof(seed), in, sizeof(in), NULL, 0);
        trainer_load_batch(tr, (uint64_t)i);
        double loss[2], wz = 0.0;
        int rc = trainer_forward(tr, w, seed, tr->cfg.eps, 2, loss,
                                 tr->cfg.weight_decay > 0.0 ? &wz : NULL, diag);
        if (rc < 0) return rc;
        const double g =
            (loss[0] - loss[1]) / (2.0 * (double)tr->cfg.eps) + tr->cfg.weight_decay * wz;
        if (!isfinite(g))
            return sw_diag_set(diag, SW_EINVAL,
                               "calibration: probe %d: the loss is not finite (L+ %g, L- %g)", i,
                               loss[0], loss[1]);
        out->abs_g[i] = fabs(g);
        sorted[i] = fabs(g);
    }
    qsort(sorted, (size_t)n_probes, sizeof(double), trainer_cmp_double);
    const int h = n_probes / 2;
    out->n = n_probes;
    out->median_abs_g = n_probes % 2 ? sorted[h] : 0.5 * (sorted[h - 1] + sorted[h]);
    out->max_scale = out->median_abs_g / SW_TRAINER_CALIBRATE_DIV;
    if (!(out->max_scale > 0.0))
        return sw_diag_set(diag, SW_EINVAL,
                           "calibration: the median |g| of %d probes is 0 (eps %g too small for "
                           "float32 losses?)",
                           n_probes, (double)tr->cfg.eps);
    return 0;
}

int sw_trainer_probe(sw_trainer *tr, const sw_fixed *w, const uint8_t seed[SW_ID_BYTES],
                     uint64_t data_step, double *loss_plus, double *loss_minus, double *wz,
                     sw_diag *diag)
{
    trainer_set_blas_threads(tr);
    trainer_load_batch(tr, data_step);
    double loss[2] = {0.0, 0.0};
    int rc = trainer_forward(tr, w, seed, tr->cfg.eps, loss_minus ? 2 : 1, loss, wz, diag);
    if (rc < 0) return rc;
    *loss_plus = loss[0];
    if (loss_minus) *loss_minus = loss[1];
    return 0;
}

int sw_trainer_loss(sw_trainer *tr, const sw_fixed *w, uint64_t data_step, double *loss,
                    sw_diag *diag)
{
    trainer_set_blas_threads(tr);
    trainer_load_batch(tr, data_step);
    double l[2] = {0.0, 0.0};
    int rc = trainer_forward(tr, w, NULL, 0.0f, 1, l, NULL, diag);
    if (rc < 0) return rc;
    *loss = l[0];
    return 0;
}
