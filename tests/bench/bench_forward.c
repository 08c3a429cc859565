/*
 * bench_forward: forward-pass throughput of one model at one batch shape and
 * thread count, with the process's peak RSS.  One configuration per process,
 * so that peak RSS belongs to that configuration alone; the driver
 * (bench_forward.py) runs the grid and prints the ratios.
 *
 *   bench_forward MODEL_DIR --threads N --batch B --seq T [--seconds S]
 *
 * Prints one JSON object: tokens_per_s, seconds, iterations, peak_rss_mb,
 * params, and the mean loss of the last batch (a check that the work is real).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "gpt2.h"
#include "gpt2_forward.h"
#include "sw_error.h"

static double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int bench_int_arg(const char *s, int lo, int hi, int *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

int main(int argc, char **argv)
{
    const char *dir = NULL;
    int threads = 1, B = 8, T = 128, seconds = 3;
    for (int i = 1; i < argc; i++) {
        int *slot = NULL;
        int lo = 1, hi = 1 << 16;
        if (strcmp(argv[i], "--threads") == 0)
            slot = &threads;
        else if (strcmp(argv[i], "--batch") == 0)
            slot = &B;
        else if (strcmp(argv[i], "--seq") == 0)
            slot = &T;
        else if (strcmp(argv[i], "--seconds") == 0)
            slot = &seconds;
        else if (dir == NULL && argv[i][0] != '-') {
            dir = argv[i];
            continue;
        }
        if (slot == NULL || i + 1 >= argc || bench_int_arg(argv[i + 1], lo, hi, slot) != 0) {
            fprintf(stderr, "usage: bench_forward MODEL_DIR --threads N --batch B --seq T "
                            "[--seconds S]\n");
            return 2;
        }
        i++;
    }
    if (dir == NULL) {
        fprintf(stderr, "bench_forward: no model directory given\n");
        return 2;
    }

    sw_diag diag = {{0}};
    sw_gpt2 *m = NULL;
    int rc = sw_gpt2_load(dir, &m, &diag);
    if (rc != 0) {
        fprintf(stderr, "bench_forward: %s\n", diag.msg);
        return 1;
    }
    if (T > m->cfg.n_positions) T = m->cfg.n_positions;
    sw_gpt2_set_threads(threads);

    sw_gpt2_acts *acts = NULL;
    int32_t *tokens = malloc(sizeof(int32_t) * (size_t)B * (size_t)T); // (B, T)
    int32_t *lengths = malloc(sizeof(int32_t) * (size_t)B);            // (B)
    uint8_t *mask = malloc((size_t)B * (size_t)T);                     // (B, T)
    float *nll = malloc(sizeof(float) * (size_t)B * (size_t)T);        // (B, T)
    if (tokens == NULL || lengths == NULL || mask == NULL || nll == NULL ||
        sw_gpt2_acts_alloc(&m->cfg, B, T, &acts, &diag) != 0) {
        fprintf(stderr, "bench_forward: out of memory: %s\n", diag.msg);
        return 1;
    }
    /* Token ids from a fixed LCG: the same input for every configuration. */
    uint32_t x = 12345;
    for (int i = 0; i < B * T; i++) {
        x = x * 1664525u + 1013904223u;
        tokens[i] = (int32_t)((x >> 8) % (uint32_t)m->cfg.vocab_size);
        mask[i] = 1;
    }
    for (int b = 0; b < B; b++)
        lengths[b] = T;

    double sum = 0;
    int64_t count = 0;
    /* One untimed pass warms caches and OpenBLAS's thread pool. */
    if (sw_gpt2_forward(m, acts, tokens, lengths, B, T, &diag) != 0 ||
        sw_gpt2_nll(acts, &m->cfg, m->w.lm_head, tokens, lengths, mask, B, T, nll, &sum, &count,
                    &diag) != 0) {
        fprintf(stderr, "bench_forward: %s\n", diag.msg);
        return 1;
    }
    int iters = 0;
    double t0 = bench_now(), t1 = t0;
    while (t1 - t0 < seconds || iters < 2) {
        sw_gpt2_forward(m, acts, tokens, lengths, B, T, &diag);
        sw_gpt2_nll(acts, &m->cfg, m->w.lm_head, tokens, lengths, mask, B, T, nll, &sum, &count,
                    &diag);
        iters++;
        t1 = bench_now();
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\"tokens_per_s\": %.1f, \"seconds\": %.3f, \"iterations\": %d, "
           "\"peak_rss_mb\": %.1f, \"params\": %zu, \"threads\": %d, \"batch\": %d, "
           "\"seq\": %d, \"loss\": %.4f}\n",
           (double)iters * B * T / (t1 - t0), t1 - t0, iters, (double)ru.ru_maxrss / 1024.0,
           m->n_params, threads, B, T, count > 0 ? sum / (double)count : 0.0);
    sw_gpt2_acts_free(acts);
    sw_gpt2_free(m);
    free(tokens);
    free(lengths);
    free(mask);
    free(nll);
    return 0;
}
