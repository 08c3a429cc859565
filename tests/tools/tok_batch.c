/*
 * tok_batch: runs the tokenizer over many inputs for tests/ref/tokenizer_reference.py.
 *
 *   tok_batch [--hex] [--time] MODEL_DIR < in     encode: one input per line, a JSON
 *                                                 string (or, with --hex, the raw bytes
 *                                                 in hex); prints the ids space-separated
 *                                                 (an empty line for an empty input)
 *   tok_batch --split [--hex] MODEL_DIR < in      pre-tokenize only: prints the byte
 *                                                 lengths of the pieces, space-separated
 *   tok_batch --decode MODEL_DIR < in             decode: lines of space-separated ids;
 *                                                 prints the bytes in hex
 *
 * --time prints the encoder's throughput to stderr: bytes over the CPU time spent in the
 * encode calls (not I/O or loading), so other load on the machine matters less.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tokenizer.h"

static int tok_batch_unhex(const char *s, size_t n, char *out, size_t *out_n)
{
    if (n % 2 != 0) return -1;
    for (size_t i = 0; i < n; i += 2) {
        unsigned v;
        char pair[3] = {s[i], s[i + 1], 0};
        char *end;
        v = (unsigned)strtoul(pair, &end, 16);
        if (*end != '\0') return -1;
        out[i / 2] = (char)v;
    }
    *out_n = n / 2;
    return 0;
}

static double tok_batch_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int tok_batch_print_piece(void *ctx, const char *p, size_t n)
{
    int *first = ctx;
    (void)p;
    printf(*first ? "%zu" : " %zu", n);
    *first = 0;
    return 0;
}

static int tok_batch_encode_line(const sw_tokenizer *tok, const char *line, size_t n, int hex,
                                 int split, double *secs, size_t *bytes)
{
    char *text = NULL;
    size_t len = 0;
    json_t *js = NULL;
    if (hex) {
        text = malloc(n / 2 + 1);
        if (text == NULL || tok_batch_unhex(line, n, text, &len) != 0) {
            free(text);
            fprintf(stderr, "tok_batch: bad hex line\n");
            return 1;
        }
    } else {
        json_error_t err;
        js = json_loadb(line, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
        if (!json_is_string(js)) {
            fprintf(stderr, "tok_batch: input line is not a JSON string: %s\n", err.text);
            json_decref(js);
            return 1;
        }
        text = (char *)json_string_value(js);
        len = json_string_length(js);
    }
    sw_tokens ids = {0};
    double t0 = tok_batch_now();
    int first = 1;
    int rc = split ? sw_tokenizer_split(tok, text, len, tok_batch_print_piece, &first)
                   : sw_tokenizer_encode(tok, text, len, &ids);
    *secs += tok_batch_now() - t0;
    *bytes += len;
    if (rc != 0) {
        fprintf(stderr, "tok_batch: encode: %s\n", sw_strerror(rc));
    } else if (split) {
        putchar('\n');
    } else {
        for (size_t i = 0; i < ids.n; i++)
            printf(i ? " %d" : "%d", (int)ids.ids[i]);
        putchar('\n');
    }
    sw_tokens_fini(&ids);
    if (hex) free(text);
    json_decref(js);
    return rc != 0;
}

static int tok_batch_decode_line(const sw_tokenizer *tok, char *line)
{
    sw_tokens ids = {0};
    char *p = line;
    for (;;) {
        while (*p == ' ')
            p++;
        if (*p == '\0') break;
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || sw_tokens_push(&ids, (int32_t)v) != 0) {
            fprintf(stderr, "tok_batch: bad id list\n");
            sw_tokens_fini(&ids);
            return 1;
        }
        p = end;
    }
    char *out;
    size_t len;
    int rc = sw_tokenizer_decode(tok, ids.ids, ids.n, &out, &len);
    sw_tokens_fini(&ids);
    if (rc != 0) {
        fprintf(stderr, "tok_batch: decode: %s\n", sw_strerror(rc));
        return 1;
    }
    for (size_t i = 0; i < len; i++)
        printf("%02x", (unsigned char)out[i]);
    putchar('\n');
    free(out);
    return 0;
}

int main(int argc, char **argv)
{
    int hex = 0, decode = 0, timing = 0, split = 0;
    const char *dir = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--hex") == 0)
            hex = 1;
        else if (strcmp(argv[i], "--decode") == 0)
            decode = 1;
        else if (strcmp(argv[i], "--split") == 0)
            split = 1;
        else if (strcmp(argv[i], "--time") == 0)
            timing = 1;
        else
            dir = argv[i];
    }
    if (dir == NULL) {
        fprintf(stderr, "usage: tok_batch [--hex] [--split|--decode] [--time] MODEL_DIR < input\n");
        return 2;
    }
    sw_tokenizer *tok;
    sw_diag diag;
    int rc = sw_tokenizer_load_dir(dir, &tok, &diag);
    if (rc != 0) {
        fprintf(stderr, "tok_batch: %s\n", diag.msg);
        return 1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    int failed = 0;
    double secs = 0;
    size_t bytes = 0;
    while ((got = getline(&line, &cap, stdin)) >= 0) {
        size_t n = (size_t)got;
        if (n > 0 && line[n - 1] == '\n') line[--n] = '\0';
        if (decode)
            failed |= tok_batch_decode_line(tok, line);
        else
            failed |= tok_batch_encode_line(tok, line, n, hex, split, &secs, &bytes);
    }
    free(line);
    sw_tokenizer_free(tok);
    if (timing && !decode)
        fprintf(stderr, "tok_batch: encoded %zu bytes in %.3f s: %.2f MB/s\n", bytes, secs,
                secs > 0 ? (double)bytes / secs / 1e6 : 0.0);
    if (fflush(stdout) != 0) failed = 1;
    return failed;
}
