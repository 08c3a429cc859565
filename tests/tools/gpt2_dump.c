/*
 * gpt2_dump: runs swarmtune's GPT-2 forward over a batch and writes the
 * logits and per-token losses for tests/ref/forward_reference.py.
 *
 *   gpt2_dump MODEL_DIR TOKENS_FILE OUT_FILE
 *       TOKENS_FILE: one sequence per line, space-separated token ids; the
 *       lines form one batch padded to the longest.  OUT_FILE (little-endian):
 *         "SWGPT2D1"                     8 bytes
 *         u32 B, u32 T, u32 V            T = longest sequence
 *         u32 lengths[B]
 *         f32 logits[sum(lengths)][V]    real positions only, b-major then t
 *         f32 nll[sum(lengths)]          same order; 0 at t = 0
 *         f64 nll sum, i64 count         as sw_gpt2_nll returns them
 *   gpt2_dump --digest MODEL_DIR          prints sw_gpt2_digest in hex
 *   gpt2_dump --save MODEL_DIR OUT_DIR f32|f16
 *                                         loads and saves with sw_gpt2_save
 *   gpt2_dump --bench MODEL_DIR B T ITERS [THREADS]
 *                                         forward and forward+loss tokens/s
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fileio.h"
#include "gpt2.h"
#include "gpt2_forward.h"
#include "safetensors.h"
#include "sw_error.h"

#define DUMP_MAX_SEQS 4096
#define DUMP_MAX_FILE (64u << 20)

static int dump_fail(int rc, const sw_diag *d)
{
    fprintf(stderr, "gpt2_dump: %s (%s)\n", d->msg, sw_strerror(rc));
    return 1;
}

/* Parses TOKENS_FILE into a (B, T) padded batch. */
static int dump_read_tokens(const char *path, int max_len, int32_t **tokens, int32_t **lengths,
                            int *B, int *T, sw_diag *d)
{
    char *text = NULL;
    size_t len;
    int rc = sw_file_read(path, DUMP_MAX_FILE, &text, &len, d);
    if (rc < 0) return rc;
    /* every id takes at least two bytes (a digit and a separator) but the last */
    int32_t *flat = malloc(sizeof(int32_t) * (len / 2 + 1));
    int32_t *lens = calloc(DUMP_MAX_SEQS, sizeof(int32_t));
    int nseq = 0, longest = 0, line = 0;
    size_t total = 0;
    if (!flat || !lens) {
        rc = sw_diag_set(d, SW_ENOMEM, "%s: out of memory", path);
        goto fail;
    }
    for (char *p = text; *p;) {
        char *eol = strchr(p, '\n');
        if (eol) *eol = '\0';
        line++;
        int n = 0;
        for (char *q = p;;) {
            while (*q == ' ' || *q == '\t' || *q == '\r')
                q++;
            if (!*q) break;
            if (nseq == DUMP_MAX_SEQS || n == max_len) {
                rc = sw_diag_set(d, SW_ETOOBIG, "%s:%d: more than %d sequences or %d tokens", path,
                                 line, DUMP_MAX_SEQS, max_len);
                goto fail;
            }
            char *end;
            errno = 0;
            long v = strtol(q, &end, 10);
            if (end == q || errno || v < INT32_MIN || v > INT32_MAX) {
                rc = sw_diag_set(d, SW_EFORMAT, "%s:%d: not a token id: '%.20s'", path, line, q);
                goto fail;
            }
            flat[total + (size_t)n++] = (int32_t)v;
            q = end;
        }
        if (n > 0) {
            lens[nseq++] = n;
            total += (size_t)n;
            longest = n > longest ? n : longest;
        }
        p = eol ? eol + 1 : p + strlen(p);
    }
    if (nseq == 0) {
        rc = sw_diag_set(d, SW_EFORMAT, "%s: no sequences", path);
        goto fail;
    }
    *tokens = calloc((size_t)nseq * longest, sizeof(int32_t)); /* (B, T), padding 0 */
    if (!*tokens) {
        rc = sw_diag_set(d, SW_ENOMEM, "%s: out of memory", path);
        goto fail;
    }
    for (int b = 0, at = 0; b < nseq; at += lens[b], b++)
        memcpy(*tokens + (size_t)b * longest, flat + at, sizeof(int32_t) * (size_t)lens[b]);
    *lengths = lens;
    lens = NULL;
    *B = nseq;
    *T = longest;
fail:
    free(text);
    free(flat);
    free(lens);
    return rc;
}

static int dump_write(FILE *f, const void *p, size_t n)
{
    return fwrite(p, 1, n, f) == n ? 0 : -1;
}

static int dump_main(const char *model_dir, const char *tokens_path, const char *out_path)
{
    sw_diag d = {{0}};
    sw_gpt2 *m = NULL;
    sw_gpt2_acts *a = NULL;
    int32_t *tokens = NULL, *lengths = NULL;
    float *logits = NULL, *nll = NULL;
    FILE *f = NULL;
    int B = 0, T = 0, rc, status = 1;

    if ((rc = sw_gpt2_load(model_dir, &m, &d)) < 0 ||
        (rc = dump_read_tokens(tokens_path, m->cfg.n_positions, &tokens, &lengths, &B, &T, &d)) <
            0 ||
        (rc = sw_gpt2_acts_alloc(&m->cfg, B, T, &a, &d)) < 0 ||
        (rc = sw_gpt2_forward(m, a, tokens, lengths, B, T, &d)) < 0) {
        dump_fail(rc, &d);
        goto out;
    }
    const int V = m->cfg.vocab_size, C = m->cfg.n_embd;
    logits = malloc(sizeof(float) * (size_t)T * V);
    nll = malloc(sizeof(float) * (size_t)B * T);
    if (!logits || !nll) {
        fprintf(stderr, "gpt2_dump: out of memory\n");
        goto out;
    }
    double sum;
    int64_t count;
    if ((rc = sw_gpt2_nll(a, &m->cfg, m->w.lm_head, tokens, lengths, NULL, B, T, nll, &sum, &count,
                          &d)) < 0) {
        dump_fail(rc, &d);
        goto out;
    }
    f = fopen(out_path, "wb");
    if (!f) {
        fprintf(stderr, "gpt2_dump: %s: %s\n", out_path, strerror(errno));
        goto out;
    }
    const uint32_t hdr[3] = {(uint32_t)B, (uint32_t)T, (uint32_t)V};
    int w = dump_write(f, "SWGPT2D1", 8) | dump_write(f, hdr, sizeof(hdr));
    for (int b = 0; b < B; b++) {
        const uint32_t l = (uint32_t)lengths[b];
        w |= dump_write(f, &l, sizeof(l));
    }
    const float *hidden = sw_gpt2_acts_hidden(a); /* (B, T, C) */
    for (int b = 0; b < B; b++) {
        sw_gpt2_logits(&m->cfg, m->w.lm_head, hidden + (size_t)b * T * C, lengths[b], logits);
        w |= dump_write(f, logits, sizeof(float) * (size_t)lengths[b] * V);
    }
    for (int b = 0; b < B; b++)
        w |= dump_write(f, nll + (size_t)b * T, sizeof(float) * (size_t)lengths[b]);
    w |= dump_write(f, &sum, sizeof(sum)) | dump_write(f, &count, sizeof(count));
    if (fclose(f) != 0 || w) {
        f = NULL;
        fprintf(stderr, "gpt2_dump: %s: write failed\n", out_path);
        goto out;
    }
    f = NULL;
    status = 0;
out:
    if (f) fclose(f);
    free(logits);
    free(nll);
    free(tokens);
    free(lengths);
    sw_gpt2_acts_free(a);
    sw_gpt2_free(m);
    return status;
}

static int dump_digest(const char *model_dir)
{
    sw_diag d = {{0}};
    sw_gpt2 *m = NULL;
    int rc = sw_gpt2_load(model_dir, &m, &d);
    if (rc < 0) return dump_fail(rc, &d);
    uint8_t dg[SW_GPT2_DIGEST_BYTES];
    char hex[2 * SW_GPT2_DIGEST_BYTES + 1];
    sw_gpt2_digest(m, dg);
    sw_digest_hex(dg, hex);
    printf("%s\n", hex);
    sw_gpt2_free(m);
    return 0;
}

static int dump_save(const char *model_dir, const char *out_dir, const char *dtype_name)
{
    sw_diag d = {{0}};
    sw_gpt2 *m = NULL;
    sw_dtype dt;
    int rc = sw_dtype_parse(dtype_name, &dt);
    if (rc < 0) {
        fprintf(stderr, "gpt2_dump: unknown dtype '%s'\n", dtype_name);
        return 1;
    }
    if ((rc = sw_gpt2_load(model_dir, &m, &d)) < 0 || (rc = sw_gpt2_save(m, out_dir, dt, &d)) < 0)
        dump_fail(rc, &d);
    sw_gpt2_free(m);
    return rc < 0;
}

static double dump_clock(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int dump_bench(const char *model_dir, int B, int T, int iters, int threads)
{
    sw_diag d = {{0}};
    sw_gpt2 *m = NULL;
    sw_gpt2_acts *a = NULL;
    int rc, status = 1;
    int32_t *tokens = malloc(sizeof(int32_t) * (size_t)B * T);
    int32_t *lengths = malloc(sizeof(int32_t) * (size_t)B);
    float *nll = malloc(sizeof(float) * (size_t)B * T);
    if (!tokens || !lengths || !nll) goto out;
    sw_gpt2_set_threads(threads);
    if ((rc = sw_gpt2_load(model_dir, &m, &d)) < 0 ||
        (rc = sw_gpt2_acts_alloc(&m->cfg, B, T, &a, &d)) < 0) {
        dump_fail(rc, &d);
        goto out;
    }
    uint32_t x = 12345;
    for (int i = 0; i < B * T; i++) {
        x = x * 1664525u + 1013904223u;
        tokens[i] = (int32_t)((x >> 8) % (uint32_t)m->cfg.vocab_size);
    }
    for (int b = 0; b < B; b++)
        lengths[b] = T;
    /* wall time, and process CPU time (steadier on a shared machine; with one
     * thread it is the time the work took) */
    double w_fwd = 0, w_nll = 0, c_fwd = 0, c_nll = 0, sum = 0;
    for (int it = -1; it < iters; it++) { /* it = -1 warms up */
        double w0 = dump_clock(CLOCK_MONOTONIC), c0 = dump_clock(CLOCK_PROCESS_CPUTIME_ID);
        if ((rc = sw_gpt2_forward(m, a, tokens, lengths, B, T, &d)) < 0) {
            dump_fail(rc, &d);
            goto out;
        }
        double w1 = dump_clock(CLOCK_MONOTONIC), c1 = dump_clock(CLOCK_PROCESS_CPUTIME_ID);
        sw_gpt2_nll(a, &m->cfg, m->w.lm_head, tokens, lengths, NULL, B, T, nll, &sum, NULL, &d);
        double w2 = dump_clock(CLOCK_MONOTONIC), c2 = dump_clock(CLOCK_PROCESS_CPUTIME_ID);
        if (it >= 0) {
            w_fwd += w1 - w0;
            w_nll += w2 - w1;
            c_fwd += c1 - c0;
            c_nll += c2 - c1;
        }
    }
    const double toks = (double)B * T * iters;
    printf("model %s: batch %d x %d, %d threads, %d iterations\n", model_dir, B, T, threads, iters);
    printf("%-28s %12s %14s %14s\n", "", "tokens/s", "wall ms/batch", "cpu ms/batch");
    printf("%-28s %12.0f %14.2f %14.2f\n", "forward (to final hidden)", toks / w_fwd,
           1e3 * w_fwd / iters, 1e3 * c_fwd / iters);
    printf("%-28s %12.0f %14.2f %14.2f\n", "loss (all positions)", toks / w_nll,
           1e3 * w_nll / iters, 1e3 * c_nll / iters);
    printf("%-28s %12.0f %14.2f %14.2f\n", "forward + loss", toks / (w_fwd + w_nll),
           1e3 * (w_fwd + w_nll) / iters, 1e3 * (c_fwd + c_nll) / iters);
    printf("mean nll %.4f\n", sum / ((double)B * (T - 1)));
    status = 0;
out:
    free(tokens);
    free(lengths);
    free(nll);
    sw_gpt2_acts_free(a);
    sw_gpt2_free(m);
    return status;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--digest") == 0) return dump_digest(argv[2]);
    if (argc == 5 && strcmp(argv[1], "--save") == 0) return dump_save(argv[2], argv[3], argv[4]);
    if ((argc == 6 || argc == 7) && strcmp(argv[1], "--bench") == 0) {
        int B = atoi(argv[3]), T = atoi(argv[4]), iters = atoi(argv[5]);
        int threads = argc == 7 ? atoi(argv[6]) : 1;
        if (B < 1 || T < 2 || iters < 1 || B > 4096 || T > 65536) {
            fprintf(stderr, "gpt2_dump: bad --bench sizes\n");
            return 2;
        }
        return dump_bench(argv[2], B, T, iters, threads);
    }
    if (argc == 4 && argv[1][0] != '-') return dump_main(argv[1], argv[2], argv[3]);
    fprintf(stderr, "usage: gpt2_dump MODEL_DIR TOKENS_FILE OUT_FILE\n"
                    "       gpt2_dump --digest MODEL_DIR\n"
                    "       gpt2_dump --save MODEL_DIR OUT_DIR f32|f16\n"
                    "       gpt2_dump --bench MODEL_DIR B T ITERS [THREADS]\n");
    return 2;
}
