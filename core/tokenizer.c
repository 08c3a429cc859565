#include "tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <jansson.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fileio.h"
#include "strmap.h"

/* Limits: GPT-2's files are 1 MB and 0.5 MB with 50,257 tokens. */
#define TOK_MAX_VOCAB (1 << 20) /* ids must be below this */
#define TOK_MAX_MERGES (1 << 20)
#define TOK_MAX_VOCAB_FILE ((size_t)64 << 20)
#define TOK_MAX_MERGES_FILE ((size_t)64 << 20)
#define TOK_MAX_JSON_FILE ((size_t)128 << 20)
#define TOK_PATH_MAX 4096
#define TOK_EOS "<|endoftext|>"

struct sw_tokenizer {
    int32_t vocab_size; /* one more than the largest id */
    int32_t eos;        /* -1 if none */
    uint32_t *raw_off;  /* (vocab_size + 1) offsets into raw; absent ids have equal ends */
    uint8_t *present;   /* (vocab_size) 1 if the id is in the vocabulary */
    char *raw;          /* every token's bytes after the byte decoder, back to back */
    int32_t byte_id[256];
    sw_u64map merges; /* left id << 32 | right id -> rank << 32 | merged id */
    sw_strmap whole;  /* raw bytes -> id, for tokens that BPE produces whole */
    pcre2_code *re;
    int jit; /* re was JIT-compiled: pcre2_jit_match skips the interpreter's checks */
};

/* ---------------------------------------------------------------- tokens */

void sw_tokens_fini(sw_tokens *t)
{
    if (t == NULL) return;
    free(t->ids);
    t->ids = NULL;
    t->n = 0;
    t->cap = 0;
}

int sw_tokens_push(sw_tokens *t, int32_t id)
{
    if (t->n == t->cap) {
        size_t cap = t->cap < 16 ? 16 : t->cap * 2;
        if (cap > SIZE_MAX / sizeof *t->ids) return SW_ENOMEM;
        int32_t *ids = realloc(t->ids, cap * sizeof *ids);
        if (ids == NULL) return SW_ENOMEM;
        t->ids = ids;
        t->cap = cap;
    }
    t->ids[t->n++] = id;
    return 0;
}

/* ------------------------------------------------------- byte <-> unicode */

/*
 * GPT-2's bytes_to_unicode(): printable Latin-1 bytes map to themselves, the
 * other 68 bytes to U+0100.. in byte order, so every token is printable text.
 */
static uint32_t tok_byte_to_cp(unsigned b)
{
    if ((b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff)) return b;
    unsigned n = 0;
    for (unsigned c = 0; c < b; c++) {
        if (!((c >= 0x21 && c <= 0x7e) || (c >= 0xa1 && c <= 0xac) || (c >= 0xae && c <= 0xff)))
            n++;
    }
    return 256 + n;
}

#define TOK_CP_LIMIT (256 + 68)

static size_t tok_utf8_put(char *out, uint32_t cp)
{
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xc0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xe0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (unsigned char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (unsigned char)(0xf0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
    o[3] = (unsigned char)(0x80 | (cp & 0x3f));
    return 4;
}

/*
 * Length of the UTF-8 sequence at s[0..n).  Returns 1 with *adv set to the
 * character's length if it is well-formed; otherwise 0 with *adv set to the
 * length of the maximal subpart (the bytes that could still have begun a
 * valid character, at least 1): the unit that Python's errors="replace" and
 * the WHATWG decoder replace with one U+FFFD.
 */
static int tok_utf8_next(const unsigned char *s, size_t n, size_t *adv, uint32_t *cp)
{
    unsigned b = s[0];
    if (b < 0x80) {
        *adv = 1;
        *cp = b;
        return 1;
    }
    size_t need;
    unsigned lo = 0x80, hi = 0xbf;
    uint32_t c;
    if (b >= 0xc2 && b <= 0xdf) {
        need = 1;
        c = b & 0x1f;
    } else if (b >= 0xe0 && b <= 0xef) {
        need = 2;
        c = b & 0x0f;
        if (b == 0xe0)
            lo = 0xa0;
        else if (b == 0xed)
            hi = 0x9f;
    } else if (b >= 0xf0 && b <= 0xf4) {
        need = 3;
        c = b & 0x07;
        if (b == 0xf0)
            lo = 0x90;
        else if (b == 0xf4)
            hi = 0x8f;
    } else {
        *adv = 1;
        return 0;
    }
    size_t i = 1;
    for (; i <= need; i++) {
        if (i >= n || s[i] < lo || s[i] > hi) {
            *adv = i;
            return 0;
        }
        c = (c << 6) | (s[i] & 0x3f);
        lo = 0x80;
        hi = 0xbf;
    }
    *adv = i;
    *cp = c;
    return 1;
}

/* -------------------------------------------------------------- the BPE */

/*
 * A candidate merge: key orders the heap (lowest rank first, then leftmost);
 * pair holds the left, right and merged ids (20 bits each) to tell whether
 * the symbols at pos still form this pair when it is popped.
 */
typedef struct tok_cand {
    uint64_t key;  /* rank << 32 | position of the left symbol */
    uint64_t pair; /* left | right << 20 | merged << 40 */
} tok_cand;

/* Per-call working memory of the merge loop (so encode needs no locks). */
typedef struct tok_work {
    int32_t *sym;  /* (n) token id of each live symbol, -1 once merged away */
    int32_t *prev; /* (n) */
    int32_t *next; /* (n) -1 at the end */
    uint32_t *batch;
    tok_cand *heap;
    size_t heap_n;
    size_t cap; /* n capacity of sym/prev/next/batch; heap holds 3 * cap */
} tok_work;

static void tok_work_fini(tok_work *w)
{
    free(w->sym);
    free(w->prev);
    free(w->next);
    free(w->batch);
    free(w->heap);
    memset(w, 0, sizeof *w);
}

static int tok_work_reserve(tok_work *w, size_t n)
{
    if (n <= w->cap) return 0;
    size_t cap = w->cap < 64 ? 64 : w->cap;
    while (cap < n)
        cap *= 2;
    if (cap > (size_t)INT32_MAX) return SW_ETOOBIG;
    int32_t *sym = realloc(w->sym, cap * sizeof *sym);
    if (sym != NULL) w->sym = sym;
    int32_t *prev = realloc(w->prev, cap * sizeof *prev);
    if (prev != NULL) w->prev = prev;
    int32_t *next = realloc(w->next, cap * sizeof *next);
    if (next != NULL) w->next = next;
    uint32_t *batch = realloc(w->batch, cap * sizeof *batch);
    if (batch != NULL) w->batch = batch;
    tok_cand *heap = realloc(w->heap, 3 * cap * sizeof *heap);
    if (heap != NULL) w->heap = heap;
    if (sym == NULL || prev == NULL || next == NULL || batch == NULL || heap == NULL)
        return SW_ENOMEM;
    w->cap = cap;
    return 0;
}

static void tok_heap_push(tok_work *w, tok_cand v)
{
    tok_cand *h = w->heap;
    size_t i = w->heap_n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (h[parent].key <= v.key) break;
        h[i] = h[parent];
        i = parent;
    }
    h[i] = v;
}

static tok_cand tok_heap_pop(tok_work *w)
{
    tok_cand *h = w->heap;
    tok_cand top = h[0];
    tok_cand v = h[--w->heap_n];
    size_t n = w->heap_n, i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && h[c + 1].key < h[c].key) c++;
        if (v.key <= h[c].key) break;
        h[i] = h[c];
        i = c;
    }
    if (n > 0) h[i] = v;
    return top;
}

static int tok_pair(const sw_tokenizer *t, int32_t a, int32_t b, uint64_t *rank_id)
{
    return sw_u64map_get(&t->merges, (uint64_t)(uint32_t)a << 32 | (uint32_t)b, rank_id);
}

static void tok_push_pair(const sw_tokenizer *t, tok_work *w, int32_t left)
{
    int32_t right = w->next[left];
    uint64_t rank_id;
    if (right >= 0 && tok_pair(t, w->sym[left], w->sym[right], &rank_id)) {
        tok_cand c = {(rank_id & 0xffffffff00000000ull) | (uint32_t)left,
                      (uint64_t)(uint32_t)w->sym[left] | (uint64_t)(uint32_t)w->sym[right] << 20 |
                          (uint64_t)(uint32_t)rank_id << 40};
        tok_heap_push(w, c);
    }
}

/*
 * Merges the bytes p[0..n) by rank and appends the ids.  This reproduces
 * OpenAI's encoder.py exactly, including for merge lists whose ranks are not
 * in creation order: it takes the lowest-ranked pair present and merges
 * every occurrence of it that exists at that moment, left to right and
 * without overlap, before looking at pairs those merges created.  The heap
 * makes it O(n log n) where encoder.py is O(n^2), which matters for the long
 * letter or digit runs that GPT-2's pattern leaves unsplit.
 */
static int tok_bpe(const sw_tokenizer *t, tok_work *w, const unsigned char *p, size_t n,
                   sw_tokens *out)
{
    if (n == 1) return sw_tokens_push(out, t->byte_id[p[0]]);
    int rc = tok_work_reserve(w, n);
    if (rc != 0) return rc;
    for (size_t i = 0; i < n; i++) {
        w->sym[i] = t->byte_id[p[i]];
        w->prev[i] = (int32_t)i - 1;
        w->next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    w->heap_n = 0;
    for (size_t i = 0; i + 1 < n; i++)
        tok_push_pair(t, w, (int32_t)i);
    const uint64_t mask20 = (1u << 20) - 1;
    while (w->heap_n > 0) {
        tok_cand top = tok_heap_pop(w);
        uint64_t rank = top.key >> 32;
        size_t nb = 0;
        for (;;) {
            int32_t pos = (int32_t)(uint32_t)top.key;
            int32_t right = w->next[pos];
            /* stale entries: the left symbol was merged away or changed, or its neighbour did */
            if (w->sym[pos] == (int32_t)(top.pair & mask20) && right >= 0 &&
                w->sym[right] == (int32_t)(top.pair >> 20 & mask20)) {
                w->sym[pos] = (int32_t)(top.pair >> 40);
                w->sym[right] = -1;
                w->next[pos] = w->next[right];
                if (w->next[right] >= 0) w->prev[w->next[right]] = pos;
                w->batch[nb++] = (uint32_t)pos;
            }
            if (w->heap_n == 0 || w->heap[0].key >> 32 != rank) break;
            top = tok_heap_pop(w);
        }
        for (size_t k = 0; k < nb; k++) {
            int32_t pos = (int32_t)w->batch[k];
            if (w->prev[pos] >= 0) tok_push_pair(t, w, w->prev[pos]);
            tok_push_pair(t, w, pos);
        }
    }
    for (int32_t i = 0; i >= 0; i = w->next[i]) {
        rc = sw_tokens_push(out, w->sym[i]);
        if (rc != 0) return rc;
    }
    return 0;
}

static int tok_piece(const sw_tokenizer *t, tok_work *w, const unsigned char *p, size_t n,
                     sw_tokens *out)
{
    int32_t id;
    if (n == 1) return sw_tokens_push(out, t->byte_id[p[0]]);
    if (sw_strmap_get(&t->whole, (const char *)p, n, &id)) return sw_tokens_push(out, id);
    return tok_bpe(t, w, p, n, out);
}

/* ----------------------------------------------------------- the pattern */

/*
 * GPT-2's pattern is
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * run by Python's `regex` module.  PCRE2 disagrees with Python on what \s,
 * \p{L} and \p{N} match, so the classes are spelled out to give Python's
 * answers (checked over every code point by tests/ref/tokenizer_reference.py):
 *   - \s: Python's is the Unicode White_Space property.  PCRE2's also matches
 *     U+180E (a format character since Unicode 6.3).
 *   - \p{L}, \p{N}: Debian 12's python3-regex (2022.10.31) has Unicode 15.0,
 *     PCRE2 10.42 has 14.0; the letters and digits 15.0 added are listed.
 *     A newer PCRE2 already knows them, and a character assigned after 15.0
 *     is classified as that PCRE2 says (as a newer Python would).
 */
#define TOK_SPACE                                                                                  \
    "\\x{9}-\\x{D}\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}"    \
    "\\x{205F}\\x{3000}"
#define TOK_LETTER                                                                                 \
    "\\p{L}\\x{1123F}-\\x{11240}\\x{11F02}\\x{11F04}-\\x{11F10}\\x{11F12}-\\x{11F33}\\x{1342F}"    \
    "\\x{13441}-\\x{13446}\\x{1B132}\\x{1B155}\\x{1DF25}-\\x{1DF2A}\\x{1E030}-\\x{1E06D}"          \
    "\\x{1E4D0}-\\x{1E4EB}\\x{2B739}\\x{31350}-\\x{323AF}"
#define TOK_NUMBER "\\p{N}\\x{11F50}-\\x{11F59}\\x{1D2C0}-\\x{1D2D3}\\x{1E4F0}-\\x{1E4F9}"

static const char tok_pattern[] = "'s|'t|'re|'ve|'m|'ll|'d"
                                  "| ?[" TOK_LETTER "]+"
                                  "| ?[" TOK_NUMBER "]+"
                                  "| ?[^" TOK_SPACE TOK_LETTER TOK_NUMBER "]+"
                                  "|[" TOK_SPACE "]+(?![^" TOK_SPACE "])"
                                  "|[" TOK_SPACE "]+";

static int tok_compile(sw_tokenizer *t, sw_diag *diag)
{
    int err;
    PCRE2_SIZE off;
    t->re = pcre2_compile((PCRE2_SPTR)tok_pattern, PCRE2_ZERO_TERMINATED,
                          PCRE2_UTF | PCRE2_UCP | PCRE2_NEVER_BACKSLASH_C, &err, &off, NULL);
    if (t->re == NULL) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(err, msg, sizeof msg);
        return sw_diag_set(diag, SW_EUNSUPPORTED, "tokenizer: PCRE2 rejects the pattern at %zu: %s",
                           (size_t)off, (const char *)msg);
    }
    /* Without JIT support pcre2_match interprets the pattern: slower, same result. */
    t->jit = pcre2_jit_compile(t->re, PCRE2_JIT_COMPLETE) == 0;
    return 0;
}

/* ---------------------------------------------------------------- encode */

/* Replaces each maximal invalid subsequence with U+FFFD; NULL if s is valid. */
static int tok_clean_utf8(const unsigned char *s, size_t n, char **out, size_t *out_n)
{
    size_t i = 0, adv;
    uint32_t cp;
    while (i < n && tok_utf8_next(s + i, n - i, &adv, &cp))
        i += adv;
    *out = NULL;
    *out_n = n;
    if (i == n) return 0;
    /* each replaced unit is at least one byte and becomes three */
    if (n > (SIZE_MAX - 1) / 3) return SW_ENOMEM;
    char *buf = malloc(3 * n + 1);
    if (buf == NULL) return SW_ENOMEM;
    memcpy(buf, s, i);
    size_t o = i;
    while (i < n) {
        if (tok_utf8_next(s + i, n - i, &adv, &cp)) {
            memcpy(buf + o, s + i, adv);
            o += adv;
        } else {
            memcpy(buf + o, "\xef\xbf\xbd", 3);
            o += 3;
        }
        i += adv;
    }
    *out = buf;
    *out_n = o;
    return 0;
}

int sw_tokenizer_split(const sw_tokenizer *tok, const char *text, size_t len,
                       int (*piece)(void *ctx, const char *p, size_t n), void *ctx)
{
    SW_ASSERT(tok != NULL && piece != NULL && (text != NULL || len == 0));
    if (len == 0) return 0;
    char *clean;
    size_t n;
    int rc = tok_clean_utf8((const unsigned char *)text, len, &clean, &n);
    if (rc != 0) return rc;
    const char *s = clean != NULL ? clean : text;
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(tok->re, NULL);
    if (md == NULL) {
        rc = SW_ENOMEM;
        goto done;
    }
    PCRE2_SIZE off = 0;
    while (off < n) {
        /* the text was validated above: no per-call UTF check (it would make the loop O(n^2)) */
        int m = tok->jit
                    ? pcre2_jit_match(tok->re, (PCRE2_SPTR)s, n, off, 0, md, NULL)
                    : pcre2_match(tok->re, (PCRE2_SPTR)s, n, off, PCRE2_NO_UTF_CHECK, md, NULL);
        if (m == PCRE2_ERROR_NOMATCH) break;
        if (m < 0) {
            rc = m == PCRE2_ERROR_NOMEMORY ? SW_ENOMEM : SW_EINVAL;
            goto done;
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        if (ov[1] <= ov[0] || ov[0] < off) {
            rc = SW_EINVAL; /* the pattern cannot match empty: guard the loop anyway */
            goto done;
        }
        rc = piece(ctx, s + ov[0], ov[1] - ov[0]);
        if (rc != 0) goto done;
        off = ov[1];
    }
done:
    pcre2_match_data_free(md);
    free(clean);
    return rc;
}

typedef struct tok_encode_ctx {
    const sw_tokenizer *tok;
    tok_work work;
    sw_tokens *out;
} tok_encode_ctx;

static int tok_encode_piece(void *ctx, const char *p, size_t n)
{
    tok_encode_ctx *c = ctx;
    return tok_piece(c->tok, &c->work, (const unsigned char *)p, n, c->out);
}

int sw_tokenizer_encode(const sw_tokenizer *tok, const char *text, size_t len, sw_tokens *out)
{
    SW_ASSERT(tok != NULL && out != NULL && (text != NULL || len == 0));
    size_t start_n = out->n;
    tok_encode_ctx c = {tok, {0}, out};
    int rc = sw_tokenizer_split(tok, text, len, tok_encode_piece, &c);
    tok_work_fini(&c.work);
    if (rc != 0) out->n = start_n;
    return rc;
}

/* ---------------------------------------------------------------- decode */

int sw_tokenizer_decode(const sw_tokenizer *tok, const int32_t *ids, size_t n, char **out,
                        size_t *len)
{
    SW_ASSERT(tok != NULL && out != NULL && len != NULL && (ids != NULL || n == 0));
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= tok->vocab_size || !tok->present[id]) return SW_EINVAL;
        total += tok->raw_off[id + 1] - tok->raw_off[id];
        if (total > SIZE_MAX / 2) return SW_ENOMEM;
    }
    char *buf = malloc(total + 1);
    if (buf == NULL) return SW_ENOMEM;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t a = tok->raw_off[ids[i]], b = tok->raw_off[ids[i] + 1];
        memcpy(buf + o, tok->raw + a, b - a);
        o += b - a;
    }
    buf[o] = '\0';
    *out = buf;
    *len = o;
    return 0;
}

int32_t sw_tokenizer_vocab_size(const sw_tokenizer *tok)
{
    return tok->vocab_size;
}

int32_t sw_tokenizer_eos(const sw_tokenizer *tok)
{
    return tok->eos;
}

void sw_tokenizer_free(sw_tokenizer *tok)
{
    if (tok == NULL) return;
    free(tok->raw_off);
    free(tok->present);
    free(tok->raw);
    sw_u64map_fini(&tok->merges);
    sw_strmap_fini(&tok->whole);
    pcre2_code_free(tok->re);
    free(tok);
}

/* ------------------------------------------------------------- loading */

/*
 * Load-time state.  Token strings are borrowed from the parsed JSON (which
 * outlives the builder); `verbatim` marks added tokens whose text is their
 * bytes rather than byte-level symbols.
 */
typedef struct tok_builder {
    sw_tokenizer *t;
    const char **str; /* (vocab_size) NULL for absent ids */
    size_t *str_len;
    uint8_t *verbatim;
    sw_strmap str2id;
    char *cat; /* scratch for merged strings */
    size_t cat_cap;
} tok_builder;

/* Writes s[0..n) into buf as a short quoted, escaped form for messages. */
static const char *tok_quote(char *buf, size_t size, const char *s, size_t n)
{
    size_t o = 0;
    buf[o++] = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (o + 8 >= size) {
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        if (c < 0x20 || c == 0x7f || c == '"' || c == '\\')
            o += (size_t)snprintf(buf + o, size - o, "\\x%02x", c);
        else
            buf[o++] = (char)c;
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}

static void tok_builder_fini(tok_builder *b)
{
    free(b->str);
    free(b->str_len);
    free(b->verbatim);
    free(b->cat);
    sw_strmap_fini(&b->str2id);
}

static int tok_builder_init(tok_builder *b, int32_t vocab_size, size_t n_tokens)
{
    memset(b, 0, sizeof *b);
    b->t = calloc(1, sizeof *b->t);
    if (b->t == NULL) return SW_ENOMEM;
    b->t->vocab_size = vocab_size;
    b->t->eos = -1;
    size_t n = (size_t)vocab_size;
    b->str = calloc(n ? n : 1, sizeof *b->str);
    b->str_len = calloc(n ? n : 1, sizeof *b->str_len);
    b->verbatim = calloc(n ? n : 1, 1);
    b->t->present = calloc(n ? n : 1, 1);
    b->t->raw_off = calloc(n + 1, sizeof *b->t->raw_off);
    if (b->str == NULL || b->str_len == NULL || b->verbatim == NULL || b->t->present == NULL ||
        b->t->raw_off == NULL)
        return SW_ENOMEM;
    return sw_strmap_init(&b->str2id, n_tokens);
}

/* Checks a JSON value is an id in range; what names it in messages. */
static int tok_json_id(const json_t *v, const char *what, const char *key, size_t key_len,
                       int32_t *id, sw_diag *diag)
{
    char q[96];
    if (!json_is_integer(v))
        return sw_diag_set(diag, SW_EFORMAT, "%s %s: the id must be an integer", what,
                           tok_quote(q, sizeof q, key, key_len));
    json_int_t i = json_integer_value(v);
    if (i < 0 || i >= TOK_MAX_VOCAB)
        return sw_diag_set(diag, i < 0 ? SW_EFORMAT : SW_ETOOBIG,
                           "%s %s: id %lld is outside [0, %d)", what,
                           tok_quote(q, sizeof q, key, key_len), (long long)i, TOK_MAX_VOCAB);
    *id = (int32_t)i;
    return 0;
}

static int tok_add_token(tok_builder *b, const char *s, size_t n, int32_t id, int verbatim,
                         const char *what, sw_diag *diag)
{
    char q1[96], q2[96];
    if (n == 0)
        return sw_diag_set(diag, SW_EFORMAT, "%s: the empty string is not a valid token (id %d)",
                           what, (int)id);
    if (b->str[id] != NULL)
        return sw_diag_set(diag, SW_EFORMAT, "%s: id %d is used by both %s and %s", what, (int)id,
                           tok_quote(q1, sizeof q1, b->str[id], b->str_len[id]),
                           tok_quote(q2, sizeof q2, s, n));
    int32_t old;
    int rc = sw_strmap_put(&b->str2id, s, n, id, &old);
    if (rc == SW_EEXIST)
        return sw_diag_set(diag, SW_EFORMAT, "%s: token %s has two ids, %d and %d", what,
                           tok_quote(q1, sizeof q1, s, n), (int)old, (int)id);
    if (rc != 0) return sw_diag_set(diag, rc, "%s: %s", what, sw_strerror(rc));
    b->str[id] = s;
    b->str_len[id] = n;
    b->verbatim[id] = (uint8_t)verbatim;
    b->t->present[id] = 1;
    return 0;
}

/* Validates a vocab object and returns its largest id (-1 if empty). */
static int tok_vocab_scan(const json_t *vocab, const char *what, int32_t *max_id, sw_diag *diag)
{
    if (!json_is_object(vocab))
        return sw_diag_set(diag, SW_EFORMAT, "%s: expected a JSON object of token -> id", what);
    if (json_object_size(vocab) > TOK_MAX_VOCAB)
        return sw_diag_set(diag, SW_ETOOBIG, "%s: %zu tokens, the limit is %d", what,
                           json_object_size(vocab), TOK_MAX_VOCAB);
    const char *key;
    json_t *v;
    *max_id = -1;
    json_object_foreach((json_t *)vocab, key, v)
    {
        int32_t id;
        int rc = tok_json_id(v, what, key, strlen(key), &id, diag);
        if (rc != 0) return rc;
        if (id > *max_id) *max_id = id;
    }
    return 0;
}

static int tok_vocab_add(tok_builder *b, const json_t *vocab, const char *what, sw_diag *diag)
{
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)vocab, key, v)
    {
        int rc = tok_add_token(b, key, strlen(key), (int32_t)json_integer_value(v), 0, what, diag);
        if (rc != 0) return rc;
    }
    return 0;
}

/*
 * After the vocabulary is complete: each token's bytes, the byte tokens and
 * the end-of-text id.  Characters outside the byte-level alphabet (only
 * possible in hand-made vocabularies) decode to their own UTF-8 bytes.
 */
static int tok_vocab_finish(tok_builder *b, const char *what, sw_diag *diag)
{
    sw_tokenizer *t = b->t;
    int16_t cp_to_byte[TOK_CP_LIMIT];
    memset(cp_to_byte, 0xff, sizeof cp_to_byte);
    for (unsigned c = 0; c < 256; c++)
        cp_to_byte[tok_byte_to_cp(c)] = (int16_t)c;
    size_t total = 0;
    for (int32_t id = 0; id < t->vocab_size; id++) {
        total += b->str_len[id];
        if (total > UINT32_MAX)
            return sw_diag_set(diag, SW_ETOOBIG, "%s: the tokens total over 4 GiB", what);
    }
    t->raw = malloc(total + 1);
    if (t->raw == NULL) return sw_diag_set(diag, SW_ENOMEM, "%s: out of memory", what);
    size_t o = 0;
    for (int32_t id = 0; id < t->vocab_size; id++) {
        t->raw_off[id] = (uint32_t)o;
        const unsigned char *s = (const unsigned char *)b->str[id];
        size_t n = b->str_len[id];
        if (b->verbatim[id]) {
            memcpy(t->raw + o, s, n);
            o += n;
            continue;
        }
        for (size_t i = 0; i < n;) {
            size_t adv;
            uint32_t cp;
            if (!tok_utf8_next(s + i, n - i, &adv, &cp)) {
                char q[96];
                return sw_diag_set(diag, SW_EFORMAT, "%s: token %s is not valid UTF-8", what,
                                   tok_quote(q, sizeof q, (const char *)s, n));
            }
            if (cp < TOK_CP_LIMIT && cp_to_byte[cp] >= 0) {
                t->raw[o++] = (char)cp_to_byte[cp];
            } else {
                memcpy(t->raw + o, s + i, adv);
                o += adv;
            }
            i += adv;
        }
    }
    t->raw_off[t->vocab_size] = (uint32_t)o;
    for (unsigned c = 0; c < 256; c++) {
        char u[4];
        size_t un = tok_utf8_put(u, tok_byte_to_cp(c));
        int32_t id;
        if (!sw_strmap_get(&b->str2id, u, un, &id) || b->verbatim[id]) {
            char q[16];
            return sw_diag_set(diag, SW_EFORMAT,
                               "%s: no token for byte 0x%02x (%s): a byte-level BPE vocabulary "
                               "needs all 256",
                               what, c, tok_quote(q, sizeof q, u, un));
        }
        t->byte_id[c] = id;
    }
    int32_t eos;
    if (sw_strmap_get(&b->str2id, TOK_EOS, strlen(TOK_EOS), &eos)) t->eos = eos;
    return 0;
}

static int tok_lookup(tok_builder *b, const char *s, size_t n, const char *where, int32_t *id,
                      sw_diag *diag)
{
    if (sw_strmap_get(&b->str2id, s, n, id) && !b->verbatim[*id]) return 0;
    char q[96];
    return sw_diag_set(diag, SW_EFORMAT, "%s: token %s is not in the vocabulary", where,
                       tok_quote(q, sizeof q, s, n));
}

/* Adds merge `rank` (a, b); where names the line or array element. */
static int tok_add_merge(tok_builder *b, const char *a, size_t an, const char *bs, size_t bn,
                         uint32_t rank, const char *where, sw_diag *diag)
{
    if (an == 0 || bn == 0)
        return sw_diag_set(diag, SW_EFORMAT, "%s: a merge needs two non-empty tokens", where);
    if (rank >= TOK_MAX_MERGES)
        return sw_diag_set(diag, SW_ETOOBIG, "%s: more than %d merges", where, TOK_MAX_MERGES);
    int32_t ia, ib, ic;
    int rc = tok_lookup(b, a, an, where, &ia, diag);
    if (rc == 0) rc = tok_lookup(b, bs, bn, where, &ib, diag);
    if (rc != 0) return rc;
    if (an + bn > b->cat_cap) {
        size_t cap = (an + bn) * 2;
        char *cat = realloc(b->cat, cap);
        if (cat == NULL) return sw_diag_set(diag, SW_ENOMEM, "%s: out of memory", where);
        b->cat = cat;
        b->cat_cap = cap;
    }
    memcpy(b->cat, a, an);
    memcpy(b->cat + an, bs, bn);
    if (!sw_strmap_get(&b->str2id, b->cat, an + bn, &ic) || b->verbatim[ic]) {
        char q[96];
        return sw_diag_set(diag, SW_EFORMAT, "%s: the merged token %s is not in the vocabulary",
                           where, tok_quote(q, sizeof q, b->cat, an + bn));
    }
    uint64_t old;
    rc = sw_u64map_put(&b->t->merges, (uint64_t)(uint32_t)ia << 32 | (uint32_t)ib,
                       (uint64_t)rank << 32 | (uint32_t)ic, &old);
    if (rc == SW_EEXIST) {
        char q1[64], q2[64];
        return sw_diag_set(diag, SW_EFORMAT, "%s: the merge %s %s repeats merge %u", where,
                           tok_quote(q1, sizeof q1, a, an), tok_quote(q2, sizeof q2, bs, bn),
                           (unsigned)(old >> 32));
    }
    if (rc != 0) return sw_diag_set(diag, rc, "%s: %s", where, sw_strerror(rc));
    return 0;
}

static int tok_parse_merges_txt(tok_builder *b, const char *path, const char *buf, size_t len,
                                sw_diag *diag)
{
    const char *p = buf, *end = buf + len;
    uint32_t rank = 0;
    int rc = sw_u64map_init(&b->t->merges, 64);
    if (rc != 0) return sw_diag_set(diag, rc, "%s: out of memory", path);
    for (size_t line = 1; p < end; line++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl != NULL ? nl : end;
        size_t n = (size_t)(le - p);
        char where[TOK_PATH_MAX + 32];
        snprintf(where, sizeof where, "%s: line %zu", path, line);
        if (line == 1 && n >= 8 && memcmp(p, "#version", 8) == 0) {
            /* the header GPT-2's file starts with */
        } else if (n == 0) {
            for (const char *q = le; q < end; q++) {
                if (*q != '\n') return sw_diag_set(diag, SW_EFORMAT, "%s: empty line", where);
            }
            break; /* trailing blank lines */
        } else {
            const char *sp = memchr(p, ' ', n);
            if (memchr(p, '\r', n) != NULL)
                return sw_diag_set(diag, SW_EFORMAT,
                                   "%s: carriage return in line (CRLF line ends are not accepted)",
                                   where);
            if (sp == NULL || memchr(sp + 1, ' ', (size_t)(le - sp - 1)) != NULL)
                return sw_diag_set(diag, SW_EFORMAT,
                                   "%s: expected two tokens separated by exactly one space", where);
            rc = tok_add_merge(b, p, (size_t)(sp - p), sp + 1, (size_t)(le - sp - 1), rank, where,
                               diag);
            if (rc != 0) return rc;
            rank++;
        }
        p = nl != NULL ? nl + 1 : end;
    }
    return 0;
}

/* Marks the tokens whose bytes BPE encodes as that one token (a fast path). */
static int tok_find_whole(sw_tokenizer *t, const tok_builder *b, sw_diag *diag)
{
    int rc = sw_strmap_init(&t->whole, (size_t)t->vocab_size);
    if (rc != 0) return sw_diag_set(diag, rc, "tokenizer: out of memory");
    tok_work w = {0};
    sw_tokens ids = {0};
    for (int32_t id = 0; id < t->vocab_size && rc == 0; id++) {
        if (!t->present[id] || b->verbatim[id]) continue;
        const char *s = t->raw + t->raw_off[id];
        size_t n = t->raw_off[id + 1] - t->raw_off[id];
        ids.n = 0;
        rc = tok_bpe(t, &w, (const unsigned char *)s, n, &ids);
        if (rc == 0 && ids.n == 1 && ids.ids[0] == id)
            rc = sw_strmap_put(&t->whole, s, n, id, NULL);
        if (rc == SW_EEXIST)
            rc = 0; /* same bytes as a token with a character outside the alphabet */
    }
    tok_work_fini(&w);
    sw_tokens_fini(&ids);
    if (rc != 0) return sw_diag_set(diag, rc, "tokenizer: %s", sw_strerror(rc));
    return 0;
}

static int tok_finish(tok_builder *b, sw_tokenizer **out, sw_diag *diag)
{
    int rc = tok_find_whole(b->t, b, diag);
    if (rc == 0) rc = tok_compile(b->t, diag);
    if (rc != 0) return rc;
    *out = b->t;
    b->t = NULL;
    return 0;
}

static int tok_json_load(const char *path, size_t max, json_t **out, sw_diag *diag)
{
    char *buf;
    size_t len;
    int rc = sw_file_read(path, max, &buf, &len, diag);
    if (rc != 0) return rc;
    json_error_t err;
    json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &err);
    free(buf);
    if (root == NULL)
        return sw_diag_set(diag, SW_EFORMAT, "%s: line %d column %d: %s", path, err.line,
                           err.column, err.text);
    *out = root;
    return 0;
}

int sw_tokenizer_load_files(const char *vocab_json, const char *merges_txt, sw_tokenizer **out,
                            sw_diag *diag)
{
    SW_ASSERT(vocab_json != NULL && merges_txt != NULL && out != NULL);
    tok_builder b;
    memset(&b, 0, sizeof b);
    json_t *root = NULL;
    char *merges = NULL;
    size_t merges_len;
    int32_t max_id;
    int rc = tok_json_load(vocab_json, TOK_MAX_VOCAB_FILE, &root, diag);
    if (rc != 0) goto fail;
    rc = tok_vocab_scan(root, vocab_json, &max_id, diag);
    if (rc != 0) goto fail;
    rc = tok_builder_init(&b, max_id + 1, json_object_size(root));
    if (rc != 0) {
        rc = sw_diag_set(diag, rc, "%s: out of memory", vocab_json);
        goto fail;
    }
    rc = tok_vocab_add(&b, root, vocab_json, diag);
    if (rc == 0) rc = tok_vocab_finish(&b, vocab_json, diag);
    if (rc != 0) goto fail;
    rc = sw_file_read(merges_txt, TOK_MAX_MERGES_FILE, &merges, &merges_len, diag);
    if (rc == 0) rc = tok_parse_merges_txt(&b, merges_txt, merges, merges_len, diag);
    if (rc == 0) rc = tok_finish(&b, out, diag);
fail:
    free(merges);
    sw_tokenizer_free(b.t);
    tok_builder_fini(&b);
    json_decref(root);
    return rc;
}

/* tokenizer.json's model.merges: "a b" strings (older files) or [a, b] pairs. */
static int tok_parse_merges_json(tok_builder *b, const char *path, const json_t *merges,
                                 sw_diag *diag)
{
    if (!json_is_array(merges))
        return sw_diag_set(diag, SW_EFORMAT, "%s: model.merges: expected an array", path);
    if (json_array_size(merges) > TOK_MAX_MERGES)
        return sw_diag_set(diag, SW_ETOOBIG, "%s: model.merges: %zu merges, the limit is %d", path,
                           json_array_size(merges), TOK_MAX_MERGES);
    int rc = sw_u64map_init(&b->t->merges, json_array_size(merges));
    if (rc != 0) return sw_diag_set(diag, rc, "%s: out of memory", path);
    size_t i;
    json_t *m;
    json_array_foreach(merges, i, m)
    {
        char where[TOK_PATH_MAX + 48];
        snprintf(where, sizeof where, "%s: model.merges[%zu]", path, i);
        const char *a, *bs;
        size_t an, bn;
        if (json_is_string(m)) {
            const char *s = json_string_value(m);
            size_t n = json_string_length(m);
            const char *sp = memchr(s, ' ', n);
            if (sp == NULL || memchr(sp + 1, ' ', (size_t)(s + n - sp - 1)) != NULL)
                return sw_diag_set(diag, SW_EFORMAT,
                                   "%s: expected two tokens separated by exactly one space", where);
            a = s;
            an = (size_t)(sp - s);
            bs = sp + 1;
            bn = (size_t)(s + n - sp - 1);
        } else if (json_is_array(m) && json_array_size(m) == 2 &&
                   json_is_string(json_array_get(m, 0)) && json_is_string(json_array_get(m, 1))) {
            a = json_string_value(json_array_get(m, 0));
            an = json_string_length(json_array_get(m, 0));
            bs = json_string_value(json_array_get(m, 1));
            bn = json_string_length(json_array_get(m, 1));
        } else {
            return sw_diag_set(diag, SW_EFORMAT,
                               "%s: expected a string \"a b\" or an array of two strings", where);
        }
        rc = tok_add_merge(b, a, an, bs, bn, (uint32_t)i, where, diag);
        if (rc != 0) return rc;
    }
    return 0;
}

/* Checks the parts of tokenizer.json that would change GPT-2's behaviour. */
static int tok_check_json_model(const char *path, const json_t *root, const json_t *model,
                                sw_diag *diag)
{
    const json_t *type = json_object_get(model, "type");
    if (type != NULL && (!json_is_string(type) || strcmp(json_string_value(type), "BPE") != 0))
        return sw_diag_set(diag, SW_EUNSUPPORTED, "%s: model.type: only \"BPE\" is supported",
                           path);
    static const char *const must_be_empty[] = {"dropout", "continuing_subword_prefix",
                                                "end_of_word_suffix"};
    for (size_t i = 0; i < sizeof must_be_empty / sizeof must_be_empty[0]; i++) {
        const json_t *v = json_object_get(model, must_be_empty[i]);
        if (v != NULL && !json_is_null(v) && !(json_is_string(v) && json_string_length(v) == 0))
            return sw_diag_set(diag, SW_EUNSUPPORTED, "%s: model.%s is not supported", path,
                               must_be_empty[i]);
    }
    const json_t *norm = json_object_get(root, "normalizer");
    if (norm != NULL && !json_is_null(norm))
        return sw_diag_set(diag, SW_EUNSUPPORTED, "%s: normalizer: only null is supported", path);
    const json_t *pre = json_object_get(root, "pre_tokenizer");
    if (pre != NULL && !json_is_null(pre)) {
        const json_t *pt = json_object_get(pre, "type");
        const json_t *aps = json_object_get(pre, "add_prefix_space");
        if (!json_is_string(pt) || strcmp(json_string_value(pt), "ByteLevel") != 0)
            return sw_diag_set(diag, SW_EUNSUPPORTED,
                               "%s: pre_tokenizer: only \"ByteLevel\" is supported", path);
        if (json_is_true(aps))
            return sw_diag_set(diag, SW_EUNSUPPORTED,
                               "%s: pre_tokenizer.add_prefix_space=true is not supported", path);
    }
    return 0;
}

int sw_tokenizer_load_json(const char *tokenizer_json, sw_tokenizer **out, sw_diag *diag)
{
    SW_ASSERT(tokenizer_json != NULL && out != NULL);
    const char *path = tokenizer_json;
    char what[TOK_PATH_MAX + 48];
    tok_builder b;
    memset(&b, 0, sizeof b);
    json_t *root = NULL;
    int rc = tok_json_load(path, TOK_MAX_JSON_FILE, &root, diag);
    if (rc != 0) goto fail;
    rc = SW_EFORMAT;
    const json_t *model = json_object_get(root, "model");
    if (!json_is_object(model)) {
        sw_diag_set(diag, rc, "%s: no \"model\" object", path);
        goto fail;
    }
    rc = tok_check_json_model(path, root, model, diag);
    if (rc != 0) goto fail;
    const json_t *vocab = json_object_get(model, "vocab");
    snprintf(what, sizeof what, "%s: model.vocab", path);
    int32_t max_id;
    rc = tok_vocab_scan(vocab, what, &max_id, diag);
    if (rc != 0) goto fail;
    const json_t *added = json_object_get(root, "added_tokens");
    if (added != NULL && !json_is_null(added) && !json_is_array(added)) {
        rc = sw_diag_set(diag, SW_EFORMAT, "%s: added_tokens: expected an array", path);
        goto fail;
    }
    size_t i;
    json_t *a;
    json_array_foreach(added, i, a)
    {
        snprintf(what, sizeof what, "%s: added_tokens[%zu]", path, i);
        const json_t *content = json_object_get(a, "content");
        int32_t id;
        if (!json_is_string(content)) {
            rc = sw_diag_set(diag, SW_EFORMAT, "%s: expected an object with string \"content\"",
                             what);
            goto fail;
        }
        rc = tok_json_id(json_object_get(a, "id"), what, json_string_value(content),
                         json_string_length(content), &id, diag);
        if (rc != 0) goto fail;
        if (id > max_id) max_id = id;
    }
    rc = tok_builder_init(&b, max_id + 1, json_object_size(vocab) + json_array_size(added));
    if (rc != 0) {
        rc = sw_diag_set(diag, rc, "%s: out of memory", path);
        goto fail;
    }
    snprintf(what, sizeof what, "%s: model.vocab", path);
    rc = tok_vocab_add(&b, vocab, what, diag);
    if (rc != 0) goto fail;
    /* An added token already in model.vocab (GPT-2's <|endoftext|>) must agree with it. */
    json_array_foreach(added, i, a)
    {
        snprintf(what, sizeof what, "%s: added_tokens[%zu]", path, i);
        const json_t *content = json_object_get(a, "content");
        const char *s = json_string_value(content);
        size_t n = json_string_length(content);
        int32_t id = (int32_t)json_integer_value(json_object_get(a, "id")), old;
        if (sw_strmap_get(&b.str2id, s, n, &old)) {
            if (old != id) {
                char q[96];
                rc = sw_diag_set(diag, SW_EFORMAT, "%s: %s has id %d but model.vocab says %d", what,
                                 tok_quote(q, sizeof q, s, n), (int)id, (int)old);
                goto fail;
            }
            continue;
        }
        rc = tok_add_token(&b, s, n, id, 1, what, diag);
        if (rc != 0) goto fail;
    }
    rc = tok_vocab_finish(&b, path, diag);
    if (rc != 0) goto fail;
    const json_t *merges = json_object_get(model, "merges");
    rc = tok_parse_merges_json(&b, path, merges, diag);
    if (rc == 0) rc = tok_finish(&b, out, diag);
fail:
    sw_tokenizer_free(b.t);
    tok_builder_fini(&b);
    json_decref(root);
    return rc;
}

static int tok_is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int sw_tokenizer_load_dir(const char *dir, sw_tokenizer **out, sw_diag *diag)
{
    SW_ASSERT(dir != NULL && out != NULL);
    char vocab[TOK_PATH_MAX], merges[TOK_PATH_MAX], json[TOK_PATH_MAX];
    if (sw_path_join(vocab, sizeof vocab, dir, "vocab.json") != 0 ||
        sw_path_join(merges, sizeof merges, dir, "merges.txt") != 0 ||
        sw_path_join(json, sizeof json, dir, "tokenizer.json") != 0)
        return sw_diag_set(diag, SW_ETOOBIG, "%s: path too long", dir);
    int have_vocab = tok_is_file(vocab), have_merges = tok_is_file(merges);
    if (have_vocab && have_merges) return sw_tokenizer_load_files(vocab, merges, out, diag);
    if (tok_is_file(json)) return sw_tokenizer_load_json(json, out, diag);
    if (have_vocab || have_merges)
        return sw_diag_set(diag, SW_ENOENT, "%s: has %s but no %s (and no tokenizer.json)", dir,
                           have_vocab ? "vocab.json" : "merges.txt",
                           have_vocab ? "merges.txt" : "vocab.json");
    return sw_diag_set(diag, SW_ENOENT, "%s: no vocab.json + merges.txt or tokenizer.json", dir);
}
