/*
 * zstream_dump: prints the perturbation stream and its rules for
 * tests/ref/stream_reference.py, which checks them against independent
 * implementations (OpenSSL's ChaCha20, hashlib.blake2b, statistics.NormalDist).
 *
 *   zstream_dump z SEED_HEX rademacher|gaussian FIRST N   z[FIRST..FIRST+N), space-separated
 *   zstream_dump bytes SEED_HEX PURPOSE OFFSET N          raw keystream bytes, hex
 *   zstream_dump seed RUN_ID_HEX ORIGIN_HEX STEP          the update seed, hex
 *   zstream_dump table                                    sw_gauss_table, space-separated
 *   zstream_dump k SEED_HEX TENSOR COEF EXP               sw_fixed_round_coef of COEF (a
 *                                                         %a or decimal double) at exponent
 *                                                         EXP with the uniform of TENSOR
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixed.h"
#include "update.h"

static int zdump_unhex(const char *s, uint8_t out[SW_ID_BYTES])
{
    if (strlen(s) != 2 * SW_ID_BYTES) return -1;
    for (int i = 0; i < SW_ID_BYTES; i++) {
        char pair[3] = {s[2 * i], s[2 * i + 1], 0};
        char *end;
        out[i] = (uint8_t)strtoul(pair, &end, 16);
        if (*end != '\0') return -1;
    }
    return 0;
}

static void zdump_hex(const uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        printf("%02x", b[i]);
    printf("\n");
}

static int zdump_usage(void)
{
    fprintf(stderr, "usage: zstream_dump z|bytes|seed|table|k ... (see the source)\n");
    return 2;
}

int main(int argc, char **argv)
{
    if (argc < 2) return zdump_usage();
    const char *cmd = argv[1];
    uint8_t seed[SW_ID_BYTES];
    if (strcmp(cmd, "z") == 0 && argc == 6) {
        sw_perturb dist;
        if (zdump_unhex(argv[2], seed) < 0 || sw_perturb_parse(argv[3], &dist) < 0)
            return zdump_usage();
        const uint64_t first = strtoull(argv[4], NULL, 10);
        const size_t n = (size_t)strtoull(argv[5], NULL, 10);
        int16_t *z = malloc((n ? n : 1) * sizeof(*z));
        if (!z) return 1;
        sw_zstream(seed, dist, first, n, z);
        for (size_t j = 0; j < n; j++)
            printf(j + 1 < n ? "%d " : "%d", z[j]);
        printf("\n");
        free(z);
        return 0;
    }
    if (strcmp(cmd, "bytes") == 0 && argc == 6) {
        if (zdump_unhex(argv[2], seed) < 0) return zdump_usage();
        const int purpose = atoi(argv[3]);
        const uint64_t off = strtoull(argv[4], NULL, 10);
        const size_t n = (size_t)strtoull(argv[5], NULL, 10);
        uint8_t *b = malloc(n ? n : 1);
        if (!b) return 1;
        sw_stream_bytes(seed, purpose, off, n, b);
        zdump_hex(b, n);
        free(b);
        return 0;
    }
    if (strcmp(cmd, "seed") == 0 && argc == 5) {
        uint8_t run[SW_ID_BYTES], origin[SW_ID_BYTES];
        if (zdump_unhex(argv[2], run) < 0 || zdump_unhex(argv[3], origin) < 0) return zdump_usage();
        sw_update_seed(run, origin, strtoull(argv[4], NULL, 10), seed);
        zdump_hex(seed, SW_ID_BYTES);
        return 0;
    }
    if (strcmp(cmd, "table") == 0 && argc == 2) {
        for (int i = 0; i < 256; i++)
            printf(i < 255 ? "%d " : "%d\n", sw_gauss_table[i]);
        return 0;
    }
    if (strcmp(cmd, "k") == 0 && argc == 6) {
        if (zdump_unhex(argv[2], seed) < 0) return zdump_usage();
        const size_t tensor = (size_t)strtoull(argv[3], NULL, 10);
        const double coef = strtod(argv[4], NULL);
        const int e = atoi(argv[5]);
        printf("%" PRId64 "\n", sw_fixed_round_coef(coef, e, sw_fixed_round_uniform(seed, tensor)));
        return 0;
    }
    return zdump_usage();
}
