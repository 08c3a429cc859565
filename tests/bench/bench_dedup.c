/*
 * bench_dedup: de-duplicating one inbox of received updates by (origin, step)
 * with sw_update_dedup (sort, O(n log n)) against the pairwise scan the worker
 * used before (O(n^2)), both measured in the same run.
 *
 *   bench_dedup [--n N] [--reps R]
 *
 * The inbox holds N updates (default 10^6) from 64 origins, one in eight a
 * copy of an earlier one (what two relaying peers or an anti-entropy race
 * produce).  Each figure is the best of R runs (default 3).  The pairwise
 * scan is measured on inboxes of 2^12 and 2^14 updates and its time at N
 * extrapolated by n^2 (running it at 10^6 would take many minutes).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "update.h"

static double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void fill(sw_update *u, size_t n)
{
    uint64_t x = 0x2545f4914f6cdd1du;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        if (i > 0 && x % 8 == 0) {
            u[i] = u[(x >> 3) % i];
            continue;
        }
        memset(&u[i], 0, sizeof u[i]);
        memset(u[i].origin, (int)(x % 64), SW_ID_BYTES);
        u[i].step = i;
        u[i].q = (int8_t)(x >> 32);
        u[i].scale = 1.0f;
    }
}

static size_t dedup_pairwise(sw_update *u, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        bool dup = false;
        for (size_t j = 0; j < k && !dup; j++)
            dup = u[j].step == u[i].step && memcmp(u[j].origin, u[i].origin, SW_ID_BYTES) == 0;
        if (!dup) u[k++] = u[i];
    }
    return k;
}

/* Best of reps: seconds to de-duplicate a fresh copy of src[0..n). */
static double time_dedup(const sw_update *src, sw_update *work, size_t n, int reps, bool sorted,
                         size_t *kept)
{
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        memcpy(work, src, n * sizeof *src);
        double t0 = bench_now();
        if (sorted) {
            if (sw_update_dedup(work, n, kept) != 0) {
                fprintf(stderr, "bench_dedup: out of memory\n");
                exit(1);
            }
        } else {
            *kept = dedup_pairwise(work, n);
        }
        double t = bench_now() - t0;
        if (t < best) best = t;
    }
    return best;
}

int main(int argc, char **argv)
{
    size_t n = 1000000;
    int reps = 3;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--n") == 0) n = strtoull(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--reps") == 0) reps = atoi(argv[i + 1]);
    }
    if (n < 16384 || reps < 1) {
        fprintf(stderr, "usage: bench_dedup [--n N >= 16384] [--reps R >= 1]\n");
        return 2;
    }
    sw_update *src = malloc(n * sizeof *src), *work = malloc(n * sizeof *work);
    if (!src || !work) {
        fprintf(stderr, "bench_dedup: out of memory\n");
        return 1;
    }
    fill(src, n);
    printf("bench_dedup: one inbox, 64 origins, 1 in 8 a copy; best of %d\n", reps);
    printf("%-10s %10s %10s %12s\n", "method", "updates", "kept", "seconds");
    double t_pair = 0, t_sort_small = 0;
    size_t small = 16384;
    for (size_t m = 4096; m <= small; m *= 4) {
        size_t kp, ks;
        double tp = time_dedup(src, work, m, reps, false, &kp);
        double ts = time_dedup(src, work, m, reps, true, &ks);
        if (kp != ks) {
            fprintf(stderr, "bench_dedup: the methods disagree at %zu (%zu, %zu)\n", m, kp, ks);
            return 1;
        }
        printf("%-10s %10zu %10zu %12.6f\n%-10s %10zu %10zu %12.6f\n", "pairwise", m, kp, tp,
               "sort", m, ks, ts);
        t_pair = tp;
        t_sort_small = ts;
    }
    size_t kept;
    double t_sort = time_dedup(src, work, n, reps, true, &kept);
    double t_pair_n = t_pair * ((double)n / (double)small) * ((double)n / (double)small);
    printf("%-10s %10zu %10zu %12.6f\n", "sort", n, kept, t_sort);
    printf("pairwise at %zu (extrapolated by n^2 from %zu): %.0f s\n", n, small, t_pair_n);
    printf("speed ratio sort / pairwise: %.0fx at %zu, about %.0fx at %zu\n", t_pair / t_sort_small,
           small, t_pair_n / t_sort, n);
    free(src);
    free(work);
    return 0;
}
