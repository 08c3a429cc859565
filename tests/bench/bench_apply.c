/*
 * bench_apply: the fused update sweep (sw_fixed_apply) on a GPT-2-shaped
 * model, against K separate single-update sweeps and against a plain memory
 * copy of the int32 weights, all measured in the same run.
 *
 *   bench_apply [--model small|fixture] [--k LIST] [--threads LIST] [--reps N]
 *
 * small = GPT-2 124M (12 layers, 768 wide, 50257 tokens), the default;
 * fixture = the tiny fixture's shape (7.26 M).  The weights are synthetic
 * (uniform in +-0.1, exponents from them): the sweep's cost does not depend
 * on their values.  Each figure is the best of --reps runs (default 3).
 *
 * Figures: parameter-updates per second (K * n_params / seconds) for the
 * fused sweep of K updates and for separate sweeps (one sw_fixed_apply call
 * per update; its rate does not depend on K, measured once per
 * distribution and thread count over min(8, max K) calls), and the time of
 * one sweep per update relative to one memcpy of the weights.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fixed.h"
#include "gpt2.h"
#include "update.h"

static double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int bench_list(const char *s, int *out, int max)
{
    int n = 0;
    while (*s && n < max) {
        char *end;
        const long v = strtol(s, &end, 10);
        if (end == s || v < 1 || v > 4096) return -1;
        out[n++] = (int)v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return -1;
    }
    return n;
}

static void bench_updates(sw_update *u, int k, uint64_t first_step)
{
    for (int i = 0; i < k; i++) {
        memset(&u[i], 0, sizeof(u[i]));
        u[i].origin[0] = (uint8_t)(i % 7);
        u[i].step = first_step + (uint64_t)i;
        u[i].q = (int8_t)((i * 37) % 255 - 127);
        u[i].scale = 0.5f;
    }
}

int main(int argc, char **argv)
{
    const char *shape = "small";
    int ks[16] = {1, 8, 64}, nk = 3;
    int ts[8] = {1, 2}, nt = 2;
    int reps = 3;
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int ok = v != NULL;
        if (ok && strcmp(a, "--model") == 0)
            shape = v;
        else if (ok && strcmp(a, "--k") == 0)
            ok = (nk = bench_list(v, ks, 16)) > 0;
        else if (ok && strcmp(a, "--threads") == 0)
            ok = (nt = bench_list(v, ts, 8)) > 0;
        else if (ok && strcmp(a, "--reps") == 0)
            ok = (reps = atoi(v)) >= 1;
        else
            ok = 0;
        if (!ok || (strcmp(shape, "small") != 0 && strcmp(shape, "fixture") != 0)) {
            fprintf(stderr, "usage: bench_apply [--model small|fixture] [--k 1,8,64] "
                            "[--threads 1,2] [--reps N]\n");
            return 2;
        }
    }
    sw_gpt2_config cfg = {.n_layer = 12,
                          .n_head = 12,
                          .n_embd = 768,
                          .n_positions = 1024,
                          .vocab_size = 50257,
                          .layer_norm_epsilon = 1e-5f,
                          .tie_word_embeddings = true};
    if (strcmp(shape, "fixture") == 0) {
        cfg.n_layer = 4;
        cfg.n_head = 4;
        cfg.n_embd = 128;
        cfg.n_positions = 256;
    }
    sw_diag d;
    sw_gpt2 *m = NULL;
    sw_fixed *f = NULL;
    if (sw_gpt2_alloc(&cfg, &m, &d) < 0) {
        fprintf(stderr, "bench_apply: %s\n", d.msg);
        return 1;
    }
    uint64_t x = 88172645463325252u;
    for (size_t j = 0; j < m->n_params; j++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        m->params[j] = (float)((double)(x >> 11) * 0x1p-53 * 0.2 - 0.1);
    }
    if (sw_fixed_from_model(m, &f, &d) < 0) {
        fprintf(stderr, "bench_apply: %s\n", d.msg);
        return 1;
    }
    sw_gpt2_free(m);
    const size_t n = f->n_params;
    int32_t *copy = malloc(n * sizeof(int32_t));
    if (!copy) return 1;

    /* memcpy of the weights: read n int32, write n int32 */
    double t_copy = 1e30;
    for (int r = 0; r < reps + 1; r++) {
        const double t0 = bench_now();
        memcpy(copy, f->w, n * sizeof(int32_t));
        const double dt = bench_now() - t0;
        if (r > 0 && dt < t_copy) t_copy = dt;  /* the first run faults the pages in */
        f->w[r] ^= copy[n - 1 - (size_t)r] & 1; /* keep the copy observable */
    }
    printf("bench_apply: %s shape, %zu parameters, %zu tensors\n", shape, n, f->n_tensors);
    printf("memcpy of the int32 weights: %.1f ms (%.2f G parameters/s)\n\n", t_copy * 1e3,
           (double)n / t_copy * 1e-9);
    printf("%-10s %3s %3s %12s %14s %14s %10s %14s\n", "dist", "thr", "K", "fused s",
           "fused Gupd/s", "separate Gupd/s", "fused/sep", "per-upd/memcpy");

    int kmax = 1;
    for (int i = 0; i < nk; i++)
        if (ks[i] > kmax) kmax = ks[i];
    sw_update *u = malloc((size_t)kmax * sizeof(sw_update));
    if (!u) return 1;
    uint64_t step = 0;
    for (int dist = 0; dist < 2; dist++) {
        sw_train_spec spec;
        memset(&spec, 0, sizeof(spec));
        spec.perturb = dist ? SW_PERTURB_GAUSSIAN : SW_PERTURB_RADEMACHER;
        spec.schedule = SW_SCHEDULE_CONSTANT;
        spec.lr = 1e-4;
        spec.total_steps = 1;
        spec.directions = 1;
        spec.max_scale = 1.0;
        for (int ti = 0; ti < nt; ti++) {
            const int threads = ts[ti];
            /* separate sweeps: one call per update */
            const int nsep = kmax < 8 ? kmax : 8;
            double t_sep = 1e30;
            for (int r = 0; r < reps; r++) {
                bench_updates(u, nsep, step);
                step += (uint64_t)nsep;
                const double t0 = bench_now();
                for (int i = 0; i < nsep; i++)
                    sw_fixed_apply(f, &spec, NULL, &u[i], 1, threads);
                const double dt = (bench_now() - t0) / nsep;
                if (dt < t_sep) t_sep = dt;
            }
            const double sep_rate = (double)n / t_sep;
            for (int ki = 0; ki < nk; ki++) {
                const int k = ks[ki];
                double t_fused = 1e30;
                for (int r = 0; r < reps; r++) {
                    bench_updates(u, k, step);
                    step += (uint64_t)k;
                    const double t0 = bench_now();
                    sw_fixed_apply(f, &spec, NULL, u, (size_t)k, threads);
                    const double dt = bench_now() - t0;
                    if (dt < t_fused) t_fused = dt;
                }
                const double rate = (double)n * k / t_fused;
                printf("%-10s %3d %3d %12.3f %14.3f %14.3f %9.2fx %13.2fx\n",
                       sw_perturb_name(spec.perturb), threads, k, t_fused, rate * 1e-9,
                       sep_rate * 1e-9, rate / sep_rate, t_fused / k / t_copy);
                fflush(stdout);
            }
        }
    }
    printf("\nsaturations during the run: %llu\n", (unsigned long long)f->saturations);
    free(u);
    free(copy);
    sw_fixed_free(f);
    return 0;
}
