/*
 * Unit tests for core/tokenizer.c.  Expected ids come from the reference
 * encoders (the npm gpt-3-encoder 1.1.4 and OpenAI's encoder.py, which agree
 * on every string here); tests/ref/tokenizer_reference.py compares the two
 * with this tokenizer on a large corpus.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <pthread.h>

#include "fileio.h"
#include "tokenizer.h"

#define TT_MODEL SW_MODEL_DIR

static sw_tokenizer *tt_fixture(void)
{
    sw_tokenizer *tok = NULL;
    sw_diag d;
    int rc = sw_tokenizer_load_dir(TT_MODEL, &tok, &d);
    if (rc != 0) fail_msg("loading %s: %s", TT_MODEL, d.msg);
    return tok;
}

static void tt_expect_ids(const sw_tokenizer *tok, const char *text, size_t len,
                          const int32_t *want, size_t n_want)
{
    sw_tokens ids = {0};
    assert_int_equal(sw_tokenizer_encode(tok, text, len, &ids), 0);
    if (ids.n != n_want || memcmp(ids.ids, want, n_want * sizeof *want) != 0) {
        fprintf(stderr, "encode(\"%.*s\") gave", (int)len, text);
        for (size_t i = 0; i < ids.n; i++)
            fprintf(stderr, " %d", (int)ids.ids[i]);
        fprintf(stderr, "\n");
        fail_msg("ids differ");
    }
    sw_tokens_fini(&ids);
}

static void tt_expect_decode(const sw_tokenizer *tok, const int32_t *ids, size_t n,
                             const char *want, size_t want_len)
{
    char *out;
    size_t len;
    assert_int_equal(sw_tokenizer_decode(tok, ids, n, &out, &len), 0);
    assert_int_equal(len, want_len);
    assert_memory_equal(out, want, len);
    assert_int_equal(out[len], '\0');
    free(out);
}

#define TT_IDS(...) ((const int32_t[]){__VA_ARGS__})
#define TT_N(...) (sizeof((const int32_t[]){__VA_ARGS__}) / sizeof(int32_t))
#define TT_CHECK(tok, str, ...)                                                                    \
    do {                                                                                           \
        tt_expect_ids(tok, str, sizeof(str) - 1, TT_IDS(__VA_ARGS__), TT_N(__VA_ARGS__));          \
        tt_expect_decode(tok, TT_IDS(__VA_ARGS__), TT_N(__VA_ARGS__), str, sizeof(str) - 1);       \
    } while (0)

static void test_known_ids(void **state)
{
    (void)state;
    sw_tokenizer *tok = tt_fixture();
    assert_int_equal(sw_tokenizer_vocab_size(tok), 50257);
    assert_int_equal(sw_tokenizer_eos(tok), 50256);
    /* ids from gpt-3-encoder 1.1.4 and encoder.py (identical) */
    TT_CHECK(tok, "Hello world! It's 2024.", 15496, 995, 0, 632, 338, 48609, 13);
    /* GPT-2 has no upper-case contractions: 'S splits as ' + S */
    TT_CHECK(tok, "IT'S", 2043, 6, 50);
    /* a whitespace run gives its last space to the next word */
    TT_CHECK(tok, "  \t\n  x  ", 220, 220, 197, 198, 220, 2124, 220, 220);
    TT_CHECK(tok, "h\xc3\xa9llo \xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd", 71, 2634, 18798, 50169, 235,
             8582, 237, 121);
    TT_CHECK(tok, "\xe4\xbd\xa0\xe5\xa5\xbd", 19526, 254, 25001, 121);
    /* special tokens are not recognised in text */
    TT_CHECK(tok, "<|endoftext|>", 27, 91, 437, 1659, 5239, 91, 29);
    /* NBSP and U+3000 are whitespace to the pattern */
    TT_CHECK(tok, "\xc2\xa0x\xe3\x80\x80y", 1849, 87, 5099, 222, 88);
    tt_expect_decode(tok, TT_IDS(50256), 1, "<|endoftext|>", 13);
    sw_tokenizer_free(tok);
}

static void test_empty_input(void **state)
{
    (void)state;
    sw_tokenizer *tok = tt_fixture();
    sw_tokens ids = {0};
    assert_int_equal(sw_tokenizer_encode(tok, "", 0, &ids), 0);
    assert_int_equal(ids.n, 0);
    assert_int_equal(sw_tokenizer_encode(tok, NULL, 0, &ids), 0);
    assert_int_equal(ids.n, 0);
    /* encode appends */
    assert_int_equal(sw_tokenizer_encode(tok, "a", 1, &ids), 0);
    assert_int_equal(sw_tokenizer_encode(tok, "a", 1, &ids), 0);
    assert_int_equal(ids.n, 2);
    assert_int_equal(ids.ids[0], 64);
    assert_int_equal(ids.ids[1], 64);
    sw_tokens_fini(&ids);
    sw_tokens_fini(&ids);
    sw_tokens_fini(NULL);
    tt_expect_decode(tok, NULL, 0, "", 0);
    sw_tokenizer_free(tok);
    sw_tokenizer_free(NULL);
}

/*
 * Each maximal invalid subsequence becomes one U+FFFD, as in Python's
 * bytes.decode('utf-8', 'replace'): the replaced text is written out by hand.
 */
static void test_invalid_utf8(void **state)
{
    (void)state;
    static const struct {
        const char *bad;
        const char *replaced;
    } cases[] = {
        {"\xff", "\xef\xbf\xbd"},
        {"\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd"},
        {"a\xe2\x82", "a\xef\xbf\xbd"}, /* truncated 3-byte */
        {"\xe2\x82"
         "b",
         "\xef\xbf\xbd"
         "b"},                                                    /* ...in the middle */
        {"\xe0\x80", "\xef\xbf\xbd\xef\xbf\xbd"},                 /* E0 needs A0..BF */
        {"\xf0\x90\x80", "\xef\xbf\xbd"},                         /* truncated 4-byte */
        {"\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* a surrogate */
        {"\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd"},                 /* overlong */
        {"\xf4\x90\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* > U+10FFFF */
        {"\xf0\x9f\x98\x80\xff", "\xf0\x9f\x98\x80\xef\xbf\xbd"},
        {"it\xe2\x80s", "it\xef\xbf\xbds"},
    };
    sw_tokenizer *tok = tt_fixture();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sw_tokens a = {0}, b = {0};
        assert_int_equal(sw_tokenizer_encode(tok, cases[i].bad, strlen(cases[i].bad), &a), 0);
        assert_int_equal(sw_tokenizer_encode(tok, cases[i].replaced, strlen(cases[i].replaced), &b),
                         0);
        assert_int_equal(a.n, b.n);
        assert_memory_equal(a.ids, b.ids, a.n * sizeof *a.ids);
        tt_expect_decode(tok, a.ids, a.n, cases[i].replaced, strlen(cases[i].replaced));
        sw_tokens_fini(&a);
        sw_tokens_fini(&b);
    }
    /* and the ids themselves: "\ufffd\ufffd" is one token in GPT-2's vocabulary */
    tt_expect_ids(tok, "\xe0\x80", 2, TT_IDS(6353), 1);
    tt_expect_ids(tok,
                  "a\xff"
                  "b",
                  3, TT_IDS(64, 4210, 65), 3);
    sw_tokenizer_free(tok);
}

static void test_decode_errors_and_every_id(void **state)
{
    (void)state;
    sw_tokenizer *tok = tt_fixture();
    char *out = NULL;
    size_t len = 0;
    static const int32_t bad[][2] = {{-1, 0}, {50257, 0}, {0, INT32_MAX}, {INT32_MIN, 5}};
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(sw_tokenizer_decode(tok, bad[i], 2, &out, &len), SW_EINVAL);
    assert_null(out);
    /* every id decodes, and a sequence decodes to the concatenation */
    int32_t n = sw_tokenizer_vocab_size(tok);
    int32_t *all = malloc((size_t)n * sizeof *all);
    assert_non_null(all);
    size_t total = 0;
    for (int32_t id = 0; id < n; id++) {
        all[id] = id;
        assert_int_equal(sw_tokenizer_decode(tok, &id, 1, &out, &len), 0);
        assert_true(len > 0);
        total += len;
        free(out);
    }
    assert_int_equal(sw_tokenizer_decode(tok, all, (size_t)n, &out, &len), 0);
    assert_int_equal(len, total);
    free(out);
    free(all);
    sw_tokenizer_free(tok);
}

static void test_round_trip_long_runs(void **state)
{
    (void)state;
    sw_tokenizer *tok = tt_fixture();
    /* one piece each for the pattern: the merge loop must not be quadratic */
    const char *units[] = {"7", "a", " ", "\n", "\xe4\xb8\xad", "!", "\xf0\x9f\x98\x80"};
    size_t n = 400000;
    char *buf = malloc(n * 4 + 1);
    assert_non_null(buf);
    for (size_t u = 0; u < sizeof units / sizeof units[0]; u++) {
        size_t ul = strlen(units[u]), len = 0;
        for (size_t i = 0; i < n / ul; i++, len += ul)
            memcpy(buf + len, units[u], ul);
        sw_tokens ids = {0};
        assert_int_equal(sw_tokenizer_encode(tok, buf, len, &ids), 0);
        assert_true(ids.n > 0 && ids.n <= len);
        char *out;
        size_t out_len;
        assert_int_equal(sw_tokenizer_decode(tok, ids.ids, ids.n, &out, &out_len), 0);
        assert_int_equal(out_len, len);
        assert_memory_equal(out, buf, len);
        free(out);
        sw_tokens_fini(&ids);
    }
    free(buf);
    sw_tokenizer_free(tok);
}

/* ------------------------------------------------ synthetic vocabularies */

/* GPT-2's bytes_to_unicode(), written out again for the test. */
static unsigned tt_byte_cp(unsigned b)
{
    static unsigned table[256];
    static int ready;
    if (!ready) {
        unsigned n = 0;
        for (unsigned c = 0; c < 256; c++) {
            int printable = (c >= '!' && c <= '~') || (c >= 0xa1 && c <= 0xac) || c >= 0xae;
            table[c] = printable ? c : 256 + n++;
        }
        ready = 1;
    }
    return table[b];
}

/* {"<byte 0>": 0, ..., "<byte 255>": 255, extra}: ids equal byte values. */
static char *tt_byte_vocab(const char *extra)
{
    size_t cap = 256 * 16 + strlen(extra) + 8, o = 0;
    char *s = malloc(cap);
    assert_non_null(s);
    s[o++] = '{';
    for (unsigned b = 0; b < 256; b++)
        o += (size_t)snprintf(s + o, cap - o, "%s\"\\u%04x\": %u", b ? ", " : "", tt_byte_cp(b), b);
    snprintf(s + o, cap - o, "%s%s}", *extra ? ", " : "", extra);
    return s;
}

typedef struct tt_dir {
    char path[64];
} tt_dir;

static void tt_dir_make(tt_dir *d)
{
    strcpy(d->path, "/tmp/sw_test_tok_XXXXXX");
    assert_non_null(mkdtemp(d->path));
}

static void tt_write(const tt_dir *d, const char *name, const char *data, size_t len)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s", d->path, name);
    sw_diag diag;
    assert_int_equal(sw_file_write_atomic(path, data, len, 0600, &diag), 0);
}

static void tt_dir_remove(tt_dir *d)
{
    static const char *names[] = {"vocab.json", "merges.txt", "tokenizer.json"};
    for (size_t i = 0; i < 3; i++) {
        char path[128];
        snprintf(path, sizeof path, "%s/%s", d->path, names[i]);
        unlink(path);
    }
    assert_int_equal(rmdir(d->path), 0);
}

/* Loads DIR after writing vocab.json and merges.txt; returns the code. */
static int tt_load_pair(const char *vocab, const char *merges, sw_tokenizer **tok, sw_diag *diag)
{
    tt_dir d;
    tt_dir_make(&d);
    tt_write(&d, "vocab.json", vocab, strlen(vocab));
    tt_write(&d, "merges.txt", merges, strlen(merges));
    *tok = NULL;
    int rc = sw_tokenizer_load_dir(d.path, tok, diag);
    tt_dir_remove(&d);
    return rc;
}

/*
 * encoder.py merges every occurrence of the lowest-ranked pair before it
 * looks at the pairs those merges create.  With merges ["ab a", "a b"]
 * (a later pair ranked first), "abab" is [ab, ab] (encoder.py's answer,
 * checked with tests/ref's transcription): a merge loop that took the new
 * pair (ab, a) at once would give [aba, b].
 */
static void test_merge_order_semantics(void **state)
{
    (void)state;
    char *vocab = tt_byte_vocab("\"ab\": 256, \"aba\": 257");
    sw_tokenizer *tok;
    sw_diag d;
    assert_int_equal(tt_load_pair(vocab, "#version: 0.2\nab a\na b\n", &tok, &d), 0);
    tt_expect_ids(tok, "abab", 4, TT_IDS(256, 256), 2);
    tt_expect_ids(tok, "ababa", 5, TT_IDS(256, 257), 2);
    tt_expect_ids(tok, "aab", 3, TT_IDS(97, 256), 2);
    tt_expect_ids(tok, "aba", 3, TT_IDS(257), 1);
    tt_expect_ids(tok, "b a", 3, TT_IDS(98, 32, 97), 3);
    assert_int_equal(sw_tokenizer_eos(tok), -1);
    assert_int_equal(sw_tokenizer_vocab_size(tok), 258);
    sw_tokenizer_free(tok);
    free(vocab);
}

typedef struct tt_bad {
    const char *content;
    int code;
    const char *needle; /* must appear in the message */
} tt_bad;

static void tt_expect_fail(int rc, const sw_diag *d, const tt_bad *c, const char *file)
{
    if (rc != c->code || strstr(d->msg, c->needle) == NULL || strstr(d->msg, file) == NULL)
        fail_msg("case \"%s\": rc %d (want %d), message \"%s\" (want \"%s\" and \"%s\")",
                 c->content, rc, c->code, d->msg, c->needle, file);
}

static void test_hostile_vocab(void **state)
{
    (void)state;
    static const tt_bad cases[] = {
        {"{\"a\": 1", SW_EFORMAT, "line 1"},
        {"", SW_EFORMAT, "line"},
        {"[1, 2]", SW_EFORMAT, "JSON object"},
        {"{\"a\": 1} x", SW_EFORMAT, "column"},
        {"\"ab\": \"256\"", SW_EFORMAT, "\"ab\": the id must be an integer"},
        {"\"ab\": 256.0", SW_EFORMAT, "integer"},
        {"\"ab\": -1", SW_EFORMAT, "outside"},
        {"\"ab\": 1048576", SW_ETOOBIG, "outside"},
        {"\"ab\": 97", SW_EFORMAT, "id 97 is used by both"},
        {"\"ab\": 256, \"ab\": 257", SW_EFORMAT, "duplicate"},
        {"\"\": 256", SW_EFORMAT, "empty string"},
        {"\"ab\": null", SW_EFORMAT, "integer"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        /* the first four are whole files, the rest entries added to a byte vocabulary */
        char *vocab = i < 4 ? strdup(cases[i].content) : tt_byte_vocab(cases[i].content);
        sw_tokenizer *tok;
        sw_diag d;
        int rc = tt_load_pair(vocab, "#version: 0.2\n", &tok, &d);
        tt_expect_fail(rc, &d, &cases[i], "vocab.json");
        assert_null(tok);
        free(vocab);
    }
    /* a vocabulary without all 256 byte tokens cannot encode every input */
    sw_tokenizer *tok;
    sw_diag d;
    tt_bad missing = {"{\"a\": 0}", SW_EFORMAT, "no token for byte 0x00"};
    tt_expect_fail(tt_load_pair(missing.content, "", &tok, &d), &d, &missing, "vocab.json");
}

static void test_hostile_merges(void **state)
{
    (void)state;
    static const tt_bad cases[] = {
        {"#version: 0.2\nab\n", SW_EFORMAT, "line 2: expected two tokens"},
        {"a b c\n", SW_EFORMAT, "line 1: expected two tokens"},
        {"a  b\n", SW_EFORMAT, "line 1: expected two tokens"},
        {"a b\na zz\n", SW_EFORMAT, "line 2: token \"zz\" is not in the vocabulary"},
        {"b a\n", SW_EFORMAT, "line 1: the merged token \"ba\" is not in the vocabulary"},
        {"a b\na b\n", SW_EFORMAT, "line 2: the merge \"a\" \"b\" repeats merge 0"},
        {"a b\n\nab a\n", SW_EFORMAT, "line 2: empty line"},
        {"a b\r\n", SW_EFORMAT, "carriage return"},
        {" a\n", SW_EFORMAT, "two non-empty tokens"},
        {"#version: 0.2\n#version: 0.2\n", SW_EFORMAT, "line 2"},
    };
    char *vocab = tt_byte_vocab("\"ab\": 256, \"aba\": 257");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sw_tokenizer *tok;
        sw_diag d;
        int rc = tt_load_pair(vocab, cases[i].content, &tok, &d);
        tt_expect_fail(rc, &d, &cases[i], "merges.txt");
        assert_null(tok);
    }
    /* accepted: no header, no final newline, trailing blank lines, no merges */
    static const char *good[] = {"a b\nab a", "a b\n\n\n", "#version: 0.2\n", "", "a b"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        sw_tokenizer *tok;
        sw_diag d;
        int rc = tt_load_pair(vocab, good[i], &tok, &d);
        if (rc != 0) fail_msg("\"%s\": %s", good[i], d.msg);
        tt_expect_ids(tok, "a", 1, TT_IDS(97), 1);
        sw_tokenizer_free(tok);
    }
    free(vocab);
}

static int tt_load_json_text(const char *text, sw_tokenizer **tok, sw_diag *diag)
{
    tt_dir d;
    tt_dir_make(&d);
    tt_write(&d, "tokenizer.json", text, strlen(text));
    *tok = NULL;
    int rc = sw_tokenizer_load_dir(d.path, tok, diag);
    tt_dir_remove(&d);
    return rc;
}

static void test_hostile_tokenizer_json(void **state)
{
    (void)state;
    /* each case's %s is the byte vocabulary plus "ab" and "aba" */
    static const tt_bad cases[] = {
        {"{}", SW_EFORMAT, "no \"model\" object"},
        {"{\"model\": {\"vocab\": [], \"merges\": []}}", SW_EFORMAT, "model.vocab"},
        {"{\"model\": {\"vocab\": %s}}", SW_EFORMAT, "model.merges: expected an array"},
        {"{\"model\": {\"vocab\": %s, \"merges\": [[1, 2]]}}", SW_EFORMAT, "model.merges[0]"},
        {"{\"model\": {\"vocab\": %s, \"merges\": [\"a b\", \"a b c\"]}}", SW_EFORMAT,
         "model.merges[1]: expected two tokens"},
        {"{\"model\": {\"vocab\": %s, \"merges\": [[\"a\", \"q\"]]}}", SW_EFORMAT,
         "model.merges[0]: the merged token \"aq\" is not in the vocabulary"},
        {"{\"model\": {\"type\": \"WordPiece\", \"vocab\": %s, \"merges\": []}}", SW_EUNSUPPORTED,
         "model.type"},
        {"{\"model\": {\"dropout\": 0.1, \"vocab\": %s, \"merges\": []}}", SW_EUNSUPPORTED,
         "dropout"},
        {"{\"model\": {\"vocab\": %s, \"merges\": []}, \"added_tokens\": {}}", SW_EFORMAT,
         "added_tokens: expected an array"},
        {"{\"model\": {\"vocab\": %s, \"merges\": []}, \"added_tokens\": "
         "[{\"id\": 3, \"content\": \"ab\"}]}",
         SW_EFORMAT, "added_tokens[0]: \"ab\" has id 3 but model.vocab says 256"},
        {"{\"model\": {\"vocab\": %s, \"merges\": []}, \"added_tokens\": "
         "[{\"id\": 5, \"content\": \"<|x|>\"}]}",
         SW_EFORMAT, "id 5 is used by both"},
        {"{\"model\": {\"vocab\": %s, \"merges\": []}, \"added_tokens\": "
         "[{\"id\": \"9\", \"content\": \"<|x|>\"}]}",
         SW_EFORMAT, "added_tokens[0] \"<|x|>\": the id must be an integer"},
        {"{\"model\": {\"vocab\": %s, \"merges\": []}, \"normalizer\": {\"type\": \"NFC\"}}",
         SW_EUNSUPPORTED, "normalizer"},
        {"{\"model\": {\"vocab\": %s, \"merges\": [\"a b\"]", SW_EFORMAT, "line 1"},
    };
    char *vocab = tt_byte_vocab("\"ab\": 256, \"aba\": 257");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t cap = strlen(cases[i].content) + strlen(vocab) + 1;
        char *text = malloc(cap);
        assert_non_null(text);
        const char *hole = strstr(cases[i].content, "%s");
        if (hole == NULL) {
            strcpy(text, cases[i].content);
        } else {
            size_t pre = (size_t)(hole - cases[i].content);
            memcpy(text, cases[i].content, pre);
            strcpy(text + pre, vocab);
            strcat(text, hole + 2);
        }
        sw_tokenizer *tok;
        sw_diag d;
        tt_expect_fail(tt_load_json_text(text, &tok, &d), &d, &cases[i], "tokenizer.json");
        assert_null(tok);
        free(text);
    }
    /* an added token outside model.vocab extends it and decodes verbatim */
    const char *fmt = "{\"model\": {\"type\": \"BPE\", \"vocab\": %s, \"merges\": [\"a b\", "
                      "[\"ab\", \"a\"]]}, \"added_tokens\": [{\"id\": 258, \"content\": "
                      "\"<|endoftext|>\", \"special\": true}]}";
    char *text = malloc(strlen(fmt) + strlen(vocab));
    assert_non_null(text);
    sprintf(text, fmt, vocab);
    sw_tokenizer *tok;
    sw_diag d;
    if (tt_load_json_text(text, &tok, &d) != 0) fail_msg("%s", d.msg);
    assert_int_equal(sw_tokenizer_eos(tok), 258);
    assert_int_equal(sw_tokenizer_vocab_size(tok), 259);
    tt_expect_decode(tok, TT_IDS(258, 257), 2, "<|endoftext|>aba", 16);
    tt_expect_ids(tok, "aba", 3, TT_IDS(257), 1);
    tt_expect_ids(tok, "<|", 2, TT_IDS('<', '|'), 2);
    sw_tokenizer_free(tok);
    free(text);
    free(vocab);
}

static void test_files_missing_or_too_big(void **state)
{
    (void)state;
    tt_dir d;
    tt_dir_make(&d);
    sw_tokenizer *tok = NULL;
    sw_diag diag;
    assert_int_equal(sw_tokenizer_load_dir(d.path, &tok, &diag), SW_ENOENT);
    assert_non_null(strstr(diag.msg, d.path));
    tt_write(&d, "vocab.json", "{}", 2);
    assert_int_equal(sw_tokenizer_load_dir(d.path, &tok, &diag), SW_ENOENT);
    assert_non_null(strstr(diag.msg, "no merges.txt"));
    /* a huge (sparse) file is refused before it is read */
    char path[128];
    snprintf(path, sizeof path, "%s/vocab.json", d.path);
    assert_int_equal(truncate(path, (off_t)65 << 20), 0);
    tt_write(&d, "merges.txt", "", 0);
    assert_int_equal(sw_tokenizer_load_dir(d.path, &tok, &diag), SW_ETOOBIG);
    assert_non_null(strstr(diag.msg, "vocab.json"));
    assert_null(tok);
    tt_dir_remove(&d);
}

/* Builds tokenizer.json from the fixture's vocab.json and merges.txt. */
static char *tt_fixture_json(int pairs)
{
    json_error_t err;
    json_t *vocab = json_load_file(TT_MODEL "/vocab.json", 0, &err);
    assert_non_null(vocab);
    char *merges_txt;
    size_t len;
    sw_diag d;
    assert_int_equal(sw_file_read(TT_MODEL "/merges.txt", 1 << 24, &merges_txt, &len, &d), 0);
    json_t *merges = json_array();
    char *save = NULL;
    for (char *line = strtok_r(merges_txt, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        if (strncmp(line, "#version", 8) == 0) continue;
        char *sp = strchr(line, ' ');
        assert_non_null(sp);
        *sp = '\0';
        if (pairs) {
            json_array_append_new(merges, json_pack("[ss]", line, sp + 1));
        } else {
            *sp = ' ';
            json_array_append_new(merges, json_string(line));
        }
    }
    free(merges_txt);
    json_t *root =
        json_pack("{s:[{s:i,s:s,s:b}],s:n,s:{s:s,s:b},s:{s:s,s:o,s:o,s:n}}", "added_tokens", "id",
                  50256, "content", "<|endoftext|>", "special", 1, "normalizer", "pre_tokenizer",
                  "type", "ByteLevel", "add_prefix_space", 0, "model", "type", "BPE", "vocab",
                  vocab, "merges", merges, "dropout");
    assert_non_null(root);
    char *text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    return text;
}

static void test_tokenizer_json_equivalence(void **state)
{
    (void)state;
    static const char *texts[] = {
        "Hello world! It's 2024.",
        "  The quick brown fox\n\njumps over the lazy dog's back  ",
        "h\xc3\xa9llo \xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd \xe4\xbd\xa0\xe5\xa5\xbd <|endoftext|>",
        "12345678901234567890 ...!!! '''s 'S 'll",
    };
    sw_tokenizer *ref = tt_fixture();
    for (int pairs = 0; pairs < 2; pairs++) {
        char *text = tt_fixture_json(pairs);
        sw_tokenizer *tok;
        sw_diag d;
        if (tt_load_json_text(text, &tok, &d) != 0) fail_msg("%s", d.msg);
        free(text);
        assert_int_equal(sw_tokenizer_vocab_size(tok), sw_tokenizer_vocab_size(ref));
        assert_int_equal(sw_tokenizer_eos(tok), sw_tokenizer_eos(ref));
        for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
            sw_tokens a = {0}, b = {0};
            assert_int_equal(sw_tokenizer_encode(ref, texts[i], strlen(texts[i]), &a), 0);
            assert_int_equal(sw_tokenizer_encode(tok, texts[i], strlen(texts[i]), &b), 0);
            assert_int_equal(a.n, b.n);
            assert_memory_equal(a.ids, b.ids, a.n * sizeof *a.ids);
            tt_expect_decode(tok, b.ids, b.n, texts[i], strlen(texts[i]));
            sw_tokens_fini(&a);
            sw_tokens_fini(&b);
        }
        sw_tokenizer_free(tok);
    }
    sw_tokenizer_free(ref);
}

typedef struct tt_thread {
    const sw_tokenizer *tok;
    const char *text;
    size_t len;
    sw_tokens ids;
    int rc;
} tt_thread;

static void *tt_thread_main(void *arg)
{
    tt_thread *t = arg;
    for (int i = 0; i < 20 && t->rc == 0; i++) {
        sw_tokens_fini(&t->ids);
        t->rc = sw_tokenizer_encode(t->tok, t->text, t->len, &t->ids);
    }
    return NULL;
}

static void test_threads_share_a_tokenizer(void **state)
{
    (void)state;
    sw_tokenizer *tok = tt_fixture();
    char *text;
    size_t len;
    sw_diag d;
    assert_int_equal(sw_file_read(SW_DATA_DIR "/task-test.jsonl", 1 << 24, &text, &len, &d),
                     0);
    sw_tokens want = {0};
    assert_int_equal(sw_tokenizer_encode(tok, text, len, &want), 0);
    tt_thread th[4];
    pthread_t pt[4];
    for (int i = 0; i < 4; i++) {
        th[i] = (tt_thread){tok, text, len, {0}, 0};
        assert_int_equal(pthread_create(&pt[i], NULL, tt_thread_main, &th[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pthread_join(pt[i], NULL), 0);
        assert_int_equal(th[i].rc, 0);
        assert_int_equal(th[i].ids.n, want.n);
        assert_memory_equal(th[i].ids.ids, want.ids, want.n * sizeof *want.ids);
        sw_tokens_fini(&th[i].ids);
    }
    sw_tokens_fini(&want);
    free(text);
    sw_tokenizer_free(tok);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_ids),
        cmocka_unit_test(test_empty_input),
        cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_decode_errors_and_every_id),
        cmocka_unit_test(test_round_trip_long_runs),
        cmocka_unit_test(test_merge_order_semantics),
        cmocka_unit_test(test_hostile_vocab),
        cmocka_unit_test(test_hostile_merges),
        cmocka_unit_test(test_hostile_tokenizer_json),
        cmocka_unit_test(test_files_missing_or_too_big),
        cmocka_unit_test(test_tokenizer_json_equivalence),
        cmocka_unit_test(test_threads_share_a_tokenizer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
