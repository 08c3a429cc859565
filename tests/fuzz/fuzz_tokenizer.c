/*
 * libFuzzer target for the tokenizer: encodes arbitrary bytes with GPT-2's
 * vocabulary (loaded once from the fixtures), decodes the ids, and aborts if
 *   - encode or decode fails,
 *   - the input is valid UTF-8 and decode(encode(x)) != x, or
 *   - the input is not valid UTF-8 and decode(encode(x)) is not valid UTF-8
 *     or does not encode to the same ids (the U+FFFD replacement must be
 *     what encode tokenized).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* RFC 3629's table of well-formed sequences, written separately from core/. */
static int fuzz_tok_valid_utf8(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t b = s[i];
        size_t k;
        uint8_t lo = 0x80, hi = 0xbf;
        if (b < 0x80) {
            i++;
            continue;
        } else if (b >= 0xc2 && b <= 0xdf) {
            k = 1;
        } else if (b >= 0xe0 && b <= 0xef) {
            k = 2;
            lo = b == 0xe0 ? 0xa0 : 0x80;
            hi = b == 0xed ? 0x9f : 0xbf;
        } else if (b >= 0xf0 && b <= 0xf4) {
            k = 3;
            lo = b == 0xf0 ? 0x90 : 0x80;
            hi = b == 0xf4 ? 0x8f : 0xbf;
        } else {
            return 0;
        }
        if (n - i <= k || s[i + 1] < lo || s[i + 1] > hi) return 0;
        for (size_t j = 2; j <= k; j++) {
            if (s[i + j] < 0x80 || s[i + j] > 0xbf) return 0;
        }
        i += k + 1;
    }
    return 1;
}

static void fuzz_tok_die(const char *what)
{
    fprintf(stderr, "fuzz_tokenizer: %s\n", what);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static sw_tokenizer *tok;
    if (tok == NULL) {
        sw_diag diag;
        if (sw_tokenizer_load_dir(SW_MODEL_DIR, &tok, &diag) != 0) {
            fprintf(stderr, "fuzz_tokenizer: %s\n", diag.msg);
            abort();
        }
    }
    sw_tokens ids = {0}, again = {0};
    if (sw_tokenizer_encode(tok, (const char *)data, size, &ids) != 0)
        fuzz_tok_die("encode failed");
    if (size > 0 && ids.n == 0) fuzz_tok_die("non-empty input gave no ids");
    char *out;
    size_t len;
    if (sw_tokenizer_decode(tok, ids.ids, ids.n, &out, &len) != 0) fuzz_tok_die("decode failed");
    if (fuzz_tok_valid_utf8(data, size)) {
        if (len != size || memcmp(out, data, size) != 0)
            fuzz_tok_die("decode(encode(x)) != x on valid UTF-8");
    } else {
        if (!fuzz_tok_valid_utf8((const uint8_t *)out, len))
            fuzz_tok_die("the replaced text is not valid UTF-8");
        if (sw_tokenizer_encode(tok, out, len, &again) != 0)
            fuzz_tok_die("encode of the replaced text failed");
        if (again.n != ids.n || memcmp(again.ids, ids.ids, ids.n * sizeof *ids.ids) != 0)
            fuzz_tok_die("the replaced text encodes differently");
    }
    free(out);
    sw_tokens_fini(&ids);
    sw_tokens_fini(&again);
    return 0;
}
