/*
 * runspec: canonical serialisation (RFC 8785 / JCS), strict parsing and
 * comparison of run specs (runspec.h, docs/state.md).
 *
 * The key lists of runspec.h expand into one table (sw_runspec_keys) of
 * where each value lives, its type, default and bounds; serialising,
 * parsing, comparing, the defaults and the bounds all walk it, so they
 * cannot disagree about the set of keys.
 */
#include "runspec.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fileio.h"
#include "fixed.h"
#include "trainer.h"

#define RS_MEMBER(field) offsetof(sw_runspec, field), sizeof(((sw_runspec *)0)->field)
#define RS_TRAIN_ROW(field, path, config, type, def, lo, hi, flags, doc)                           \
    {path, "[train] " config, SW_RS_##type, RS_MEMBER(field), def, lo, hi, flags, true, doc},
#define RS_FIXED_ROW(field, path, source, type, def, doc)                                          \
    {path, source, SW_RS_##type, RS_MEMBER(field), def, 0, 0, 0, false, doc},

const sw_runspec_key sw_runspec_keys[] = {SW_RUNSPEC_TRAIN_KEYS(RS_TRAIN_ROW)
                                              SW_RUNSPEC_FIXED_KEYS(RS_FIXED_ROW)};
const size_t sw_runspec_key_count = sizeof sw_runspec_keys / sizeof sw_runspec_keys[0];
#define RS_NKEYS (sizeof sw_runspec_keys / sizeof sw_runspec_keys[0])

static const char *const runspec_groups[] = {"admission", "arch", "train"};

/* The group of a path ("train" of "train.lr"; NULL at the top level) and its key. */
static size_t runspec_group_len(const char *path)
{
    const char *dot = strchr(path, '.');
    return dot ? (size_t)(dot - path) : 0;
}

static const char *runspec_leaf(const char *path)
{
    const char *dot = strchr(path, '.');
    return dot ? dot + 1 : path;
}

/* JCS order of two paths: by top-level member (the group, or the key
 * itself at the top level), then by key within the group. */
static int runspec_path_cmp(const char *a, const char *b)
{
    size_t la = runspec_group_len(a), lb = runspec_group_len(b);
    size_t ta = la ? la : strlen(a), tb = lb ? lb : strlen(b);
    int c = memcmp(a, b, ta < tb ? ta : tb);
    if (c != 0) return c;
    if (ta != tb) return ta < tb ? -1 : 1;
    return strcmp(runspec_leaf(a), runspec_leaf(b));
}

/* The keys in canonical order (the lists are in the order of the docs). */
static void runspec_sorted(const sw_runspec_key *out[RS_NKEYS])
{
    for (size_t i = 0; i < RS_NKEYS; i++) {
        const sw_runspec_key *k = &sw_runspec_keys[i];
        size_t j = i;
        for (; j > 0 && runspec_path_cmp(out[j - 1]->path, k->path) > 0; j--)
            out[j] = out[j - 1];
        out[j] = k;
    }
}

const sw_runspec_key *sw_runspec_find(const char *path)
{
    for (size_t i = 0; i < RS_NKEYS; i++)
        if (strcmp(sw_runspec_keys[i].path, path) == 0) return &sw_runspec_keys[i];
    return NULL;
}

void sw_runspec_copy_key(sw_runspec *dst, const sw_runspec *src, const sw_runspec_key *k)
{
    memcpy((char *)dst + k->off, (const char *)src + k->off, k->size);
}

static int runspec_parse_text(const sw_runspec_key *k, const char *text, sw_runspec *rs);

void sw_runspec_defaults(sw_runspec *rs)
{
    memset(rs, 0, sizeof(*rs));
    for (size_t i = 0; i < RS_NKEYS; i++) {
        const sw_runspec_key *k = &sw_runspec_keys[i];
        if (k->def == NULL) continue;
        int rc = runspec_parse_text(k, k->def, rs);
        SW_ASSERT(rc == 0 && "a default of the table reads as its type");
    }
}

static const char *runspec_quant_name(sw_quant q)
{
    return q == SW_QUANT_INT8 ? "int8" : NULL;
}

static const char *runspec_admission_name(sw_admission a)
{
    return a == SW_ADMISSION_OPEN ? "open" : NULL;
}

/* ---- validation ---- */

#define RS_BAD(key, ...) sw_diag_set(diag, SW_EINVAL, "%s: " key ": " __VA_ARGS__)

static int runspec_check_double(const char *name, const char *key, double v, double lo,
                                bool lo_open, double hi, bool hi_open, sw_diag *diag)
{
    bool ok = isfinite(v) && (lo_open ? v > lo : v >= lo) && (hi_open ? v < hi : v <= hi);
    if (ok) return 0;
    return sw_diag_set(diag, SW_EINVAL, "%s: %s: must be %s %.17g and %s %.17g, got %.17g", name,
                       key, lo_open ? ">" : ">=", lo, hi_open ? "<" : "<=", hi, v);
}

/* A number key of SW_RUNSPEC_TRAIN_KEYS within its bounds (others pass). */
static int runspec_check_bounds(const sw_runspec *rs, const sw_runspec_key *k, const char *name,
                                sw_diag *diag)
{
    const void *f = (const char *)rs + k->off;
    bool lo_open = k->flags & SW_RSK_LO_OPEN, hi_open = k->flags & SW_RSK_HI_OPEN;
    char got[32];
    double v;
    switch (k->type) {
    case SW_RS_DOUBLE:
        return runspec_check_double(name, k->path, *(const double *)f, k->lo, lo_open, k->hi,
                                    hi_open, diag);
    case SW_RS_U64:
        v = (double)*(const uint64_t *)f;
        snprintf(got, sizeof got, "%" PRIu64, *(const uint64_t *)f);
        break;
    case SW_RS_INT:
        v = (double)*(const int *)f;
        snprintf(got, sizeof got, "%d", *(const int *)f);
        break;
    default:
        return 0;
    }
    /* Integer bounds are below 2^53: exact as doubles, and a value past them
     * stays past them when rounded to a double. */
    if ((lo_open ? v > k->lo : v >= k->lo) && (hi_open ? v < k->hi : v <= k->hi)) return 0;
    return sw_diag_set(diag, SW_EINVAL, "%s: %s: must be %.0f..%.0f, got %s", name, k->path,
                       k->lo, k->hi, got);
}

int sw_runspec_validate(const sw_runspec *rs, const char *name, sw_diag *diag)
{
    int rc;
    if (name == NULL) name = "run spec";
    if (rs->format != SW_RUNSPEC_FORMAT)
        return sw_diag_set(diag, SW_EUNSUPPORTED, "%s: format: version %d is not supported (%d is)",
                           name, rs->format, SW_RUNSPEC_FORMAT);
    if (runspec_admission_name(rs->admission) == NULL)
        return RS_BAD("admission.policy", "unknown policy %d", name, (int)rs->admission);
    char arch_name[256];
    snprintf(arch_name, sizeof arch_name, "%s: arch", name);
    if (!isfinite(rs->arch.layer_norm_epsilon) || !(rs->arch.layer_norm_epsilon > 0.0f) ||
        rs->arch.layer_norm_epsilon > 1.0f)
        return RS_BAD("arch.layer_norm_epsilon", "must be > 0 and <= 1, got %.9g", name,
                      (double)rs->arch.layer_norm_epsilon);
    rc = sw_gpt2_config_validate(&rs->arch, arch_name, diag);
    if (rc != 0) return rc;
    if (sw_schedule_name(rs->schedule) == NULL ||
        sw_schedule_parse(sw_schedule_name(rs->schedule), &(sw_schedule){0}) != 0)
        return RS_BAD("train.schedule", "unknown schedule %d", name, (int)rs->schedule);
    if (sw_perturb_name(rs->perturb) == NULL ||
        sw_perturb_parse(sw_perturb_name(rs->perturb), &(sw_perturb){0}) != 0)
        return RS_BAD("train.perturbation", "unknown distribution %d", name, (int)rs->perturb);
    if (runspec_quant_name(rs->quant) == NULL)
        return RS_BAD("train.quantization", "unknown quantization %d", name, (int)rs->quant);
    for (size_t i = 0; i < RS_NKEYS; i++) {
        const sw_runspec_key *k = &sw_runspec_keys[i];
        if (!k->settable) continue;
        if ((rc = runspec_check_bounds(rs, k, name, diag)) != 0) return rc;
    }
    if (rs->warmup_steps > rs->total_steps)
        return RS_BAD("train.warmup_steps",
                      "must be <= train.total_steps (%" PRIu64 "), got %" PRIu64, name,
                      rs->total_steps, rs->warmup_steps);
    size_t tlen = strnlen(rs->trainable, sizeof rs->trainable);
    if (tlen > SW_RUNSPEC_TRAINABLE_MAX)
        return RS_BAD("train.trainable", "longer than %d bytes", name, SW_RUNSPEC_TRAINABLE_MAX);
    for (size_t i = 0; i < tlen; i++) {
        unsigned char c = (unsigned char)rs->trainable[i];
        if (c < 0x20 || c > 0x7e)
            return RS_BAD("train.trainable", "byte %zu is not printable ASCII", name, i);
    }
    int32_t rows[SW_SPEC_MAX_ROWS];
    int n_rows = 0;
    sw_diag rsub;
    if (rs->trainable_tokens[0] &&
        (rc = sw_runspec_rows(rs->trainable_tokens, rs->arch.vocab_size, rows, &n_rows, &rsub)))
        return sw_diag_set(diag, rc, "%s: train.%s", name, rsub.msg);
    const bool lora = sw_runspec_has_adapter(rs);
    if (!lora && strcmp(rs->adapter, "none") != 0)
        return RS_BAD("train.adapter", "must be none or lora, got '%.64s'", name, rs->adapter);
    sw_diag sub;
    unsigned targets;
    if (lora && (rc = sw_lora_targets_parse(rs->lora_targets, &targets, &sub)) != 0)
        return sw_diag_set(diag, rc, "%s: train.%s", name, sub.msg);
    sw_gpt2_config model;
    sw_runspec_model_config(rs, &model);
    if ((rc = sw_gpt2_config_validate(&model, arch_name, diag)) != 0) return rc;
    bool *mask = calloc(sw_gpt2_tensor_count(&model), sizeof *mask);
    if (mask == NULL) return sw_diag_set(diag, SW_ENOMEM, "%s: out of memory", name);
    rc = sw_trainer_trainable(&model, rs->trainable, mask, NULL, &sub);
    bool rows_trained = false;
    for (size_t i = 0; rc == 0 && i < sw_gpt2_tensor_count(&model); i++) {
        sw_gpt2_tensor t;
        sw_gpt2_tensor_at(&model, i, &t);
        rows_trained = rows_trained || (mask[i] && sw_fixed_row_tensor(t.kind));
    }
    free(mask);
    if (rc != 0) return sw_diag_set(diag, rc, "%s: train.trainable: %s", name, sub.msg);
    if (n_rows > 0 && !rows_trained)
        return RS_BAD("train.trainable_tokens",
                      "names rows of wte, but train.trainable ('%.64s') does not select wte "
                      "(or lm_head)",
                      name, rs->trainable);
    return 0;
}

int sw_runspec_rows(const char *list, int vocab, int32_t *rows, int *n, sw_diag *diag)
{
    int k = 0;
    const char *p = list;
    if (*p == '\0') return sw_diag_set(diag, SW_EINVAL, "trainable_tokens: empty list");
    while (*p) {
        if (*p < '0' || *p > '9')
            return sw_diag_set(diag, SW_EINVAL,
                               "trainable_tokens: '%.32s' is not a list of token ids "
                               "(decimal, comma-separated, ascending)",
                               p);
        long v = 0;
        while (*p >= '0' && *p <= '9') {
            v = v * 10 + (*p - '0');
            if (v >= vocab)
                return sw_diag_set(diag, SW_EINVAL,
                                   "trainable_tokens: token id %ld... is outside the vocabulary "
                                   "(%d)",
                                   v, vocab);
            p++;
        }
        if (k == SW_SPEC_MAX_ROWS)
            return sw_diag_set(diag, SW_EINVAL, "trainable_tokens: more than %d ids",
                               SW_SPEC_MAX_ROWS);
        if (k > 0 && v <= rows[k - 1])
            return sw_diag_set(diag, SW_EINVAL,
                               "trainable_tokens: %ld after %d: the ids must ascend, each once",
                               v, (int)rows[k - 1]);
        rows[k++] = (int32_t)v;
        if (*p == ',') {
            p++;
            if (*p == '\0')
                return sw_diag_set(diag, SW_EINVAL, "trainable_tokens: ends with a comma");
        } else if (*p != '\0') {
            return sw_diag_set(diag, SW_EINVAL,
                               "trainable_tokens: '%.32s' is not a list of token ids "
                               "(decimal, comma-separated, ascending)",
                               p);
        }
    }
    *n = k;
    return 0;
}

bool sw_runspec_has_adapter(const sw_runspec *rs)
{
    return strcmp(rs->adapter, "lora") == 0;
}

void sw_runspec_model_config(const sw_runspec *rs, sw_gpt2_config *out)
{
    *out = rs->arch;
    out->lora_rank = 0;
    out->lora_alpha = 0.0f;
    out->lora_targets = 0;
    unsigned targets = 0;
    if (!sw_runspec_has_adapter(rs) || sw_lora_targets_parse(rs->lora_targets, &targets, NULL) != 0)
        return;
    out->lora_rank = rs->lora_rank;
    out->lora_alpha = (float)rs->lora_alpha;
    out->lora_targets = targets;
}

/* ---- canonical serialisation ---- */

typedef struct runspec_buf {
    char *p;
    size_t size, len;
    bool overflow;
} runspec_buf;

static void runspec_put(runspec_buf *b, const char *s, size_t n)
{
    if (b->overflow || n > b->size - b->len) {
        b->overflow = true;
        return;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void runspec_puts(runspec_buf *b, const char *s)
{
    runspec_put(b, s, strlen(s));
}

/*
 * The shortest decimal digits that read back as x (x finite, > 0): *s holds
 * them as an integer of *k digits and x ~ s * 10^(n - k), as ECMAScript's
 * Number::toString defines n, k and s.  For each precision p = 1..17, the
 * correctly rounded p-digit decimal is tried, then its neighbours one unit
 * away (at a power of two the interval of decimals that round to x is
 * asymmetric, so the nearest p-digit decimal may miss while the next one
 * up or down hits); at most one neighbour can hit, and it is the closest
 * p-digit decimal that does.
 */
static void runspec_shortest(double x, uint64_t *s_out, int *k_out, int *n_out)
{
    char tmp[64];
    for (int p = 1; p <= 17; p++) {
        snprintf(tmp, sizeof tmp, "%.*e", p - 1, x);
        /* tmp = d[.ddd]e[+-]XX */
        uint64_t s = 0;
        int exp10 = 0;
        const char *c = tmp;
        for (; *c && *c != 'e'; c++)
            if (*c >= '0' && *c <= '9') s = s * 10 + (uint64_t)(*c - '0');
        if (*c == 'e') exp10 = atoi(c + 1);
        /* x ~ s * 10^(exp10 - (p - 1)) */
        int e = exp10 - (p - 1);
        uint64_t lo = 1;
        for (int i = 1; i < p; i++)
            lo *= 10;
        const uint64_t hi = lo * 10; /* s in [lo, hi) */
        const uint64_t cand[3] = {s, s - 1, s + 1};
        for (int j = 0; j < 3; j++) {
            uint64_t c2 = cand[j];
            if (c2 < lo || c2 >= hi) continue;
            snprintf(tmp, sizeof tmp, "%" PRIu64 "e%d", c2, e);
            if (strtod(tmp, NULL) == x) {
                *s_out = c2;
                *k_out = p;
                *n_out = e + p;
                return;
            }
        }
    }
    SW_ASSERT(!"17 digits always round-trip a double");
}

/* ECMAScript Number::toString for a finite double (JCS number form). */
static void runspec_put_double(runspec_buf *b, double x)
{
    if (x == 0.0) { /* also -0 */
        runspec_puts(b, "0");
        return;
    }
    if (x < 0) {
        runspec_puts(b, "-");
        x = -x;
    }
    uint64_t s;
    int k, n;
    runspec_shortest(x, &s, &k, &n);
    char d[24];
    snprintf(d, sizeof d, "%" PRIu64, s); /* k digits */
    char out[64];
    if (k <= n && n <= 21) {
        memcpy(out, d, (size_t)k);
        memset(out + k, '0', (size_t)(n - k));
        out[n] = '\0';
    } else if (0 < n && n <= 21) {
        memcpy(out, d, (size_t)n);
        out[n] = '.';
        memcpy(out + n + 1, d + n, (size_t)(k - n));
        out[k + 1] = '\0';
    } else if (-6 < n && n <= 0) {
        out[0] = '0';
        out[1] = '.';
        memset(out + 2, '0', (size_t)(-n));
        memcpy(out + 2 - n, d, (size_t)k);
        out[2 - n + k] = '\0';
    } else {
        int e = n - 1;
        if (k == 1)
            snprintf(out, sizeof out, "%ce%c%d", d[0], e < 0 ? '-' : '+', e < 0 ? -e : e);
        else
            snprintf(out, sizeof out, "%c.%se%c%d", d[0], d + 1, e < 0 ? '-' : '+', e < 0 ? -e : e);
    }
    runspec_puts(b, out);
}

int sw_runspec_number(double x, char *buf, size_t size)
{
    if (!isfinite(x)) return SW_EINVAL;
    runspec_buf b = {buf, size, 0, false};
    runspec_put_double(&b, x);
    if (b.overflow || b.len >= size) return SW_ETOOBIG;
    buf[b.len] = '\0';
    return (int)b.len;
}

static void runspec_put_string(runspec_buf *b, const char *s)
{
    runspec_puts(b, "\"");
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') runspec_puts(b, "\\");
        runspec_put(b, s, 1);
    }
    runspec_puts(b, "\"");
}

static const void *runspec_field(const sw_runspec *rs, const sw_runspec_key *k)
{
    return (const char *)rs + k->off;
}

static void runspec_put_value(runspec_buf *b, const sw_runspec *rs, const sw_runspec_key *k)
{
    const void *f = runspec_field(rs, k);
    char tmp[72];
    switch (k->type) {
    case SW_RS_ADMISSION:
        runspec_put_string(b, runspec_admission_name(*(const sw_admission *)f));
        break;
    case SW_RS_F32:
        runspec_put_double(b, (double)*(const float *)f);
        break;
    case SW_RS_INT:
        snprintf(tmp, sizeof tmp, "%d", *(const int *)f);
        runspec_puts(b, tmp);
        break;
    case SW_RS_BOOL:
        runspec_puts(b, *(const bool *)f ? "true" : "false");
        break;
    case SW_RS_HEX32:
        sodium_bin2hex(tmp, sizeof tmp, f, 32);
        runspec_put_string(b, tmp);
        break;
    case SW_RS_PERTURB:
        runspec_put_string(b, sw_perturb_name(*(const sw_perturb *)f));
        break;
    case SW_RS_QUANT:
        runspec_put_string(b, runspec_quant_name(*(const sw_quant *)f));
        break;
    case SW_RS_SCHEDULE:
        runspec_put_string(b, sw_schedule_name(*(const sw_schedule *)f));
        break;
    case SW_RS_STRING:
        runspec_put_string(b, (const char *)f);
        break;
    case SW_RS_DOUBLE:
        runspec_put_double(b, *(const double *)f);
        break;
    case SW_RS_U64:
        snprintf(tmp, sizeof tmp, "%" PRIu64, *(const uint64_t *)f);
        runspec_puts(b, tmp);
        break;
    }
}

void sw_runspec_value_text(const sw_runspec *rs, const sw_runspec_key *k, char *buf, size_t size)
{
    if (size == 0) return;
    char tmp[2 * SW_RUNSPEC_TRAINABLE_MAX + 16]; /* every byte escaped, and the quotes */
    runspec_buf b = {tmp, sizeof tmp, 0, false};
    runspec_put_value(&b, rs, k);
    snprintf(buf, size, "%.*s", (int)b.len, tmp);
}

int sw_runspec_canonical(const sw_runspec *rs, char *buf, size_t size, size_t *len, sw_diag *diag)
{
    int rc = sw_runspec_validate(rs, NULL, diag);
    if (rc != 0) return rc;
    runspec_buf b = {buf, size, 0, false};
    const sw_runspec_key *keys[RS_NKEYS];
    runspec_sorted(keys);
    size_t open_len = 0; /* length of the open group's name, 0: none */
    const char *open_group = NULL;
    runspec_puts(&b, "{");
    const bool lora = sw_runspec_has_adapter(rs);
    bool first = true;
    for (size_t i = 0; i < RS_NKEYS; i++) {
        const sw_runspec_key *k = keys[i];
        if ((k->flags & SW_RSK_LORA) && !lora) continue;
        if ((k->flags & SW_RSK_OPTIONAL) && *(const char *)runspec_field(rs, k) == '\0') continue;
        size_t glen = runspec_group_len(k->path);
        bool same_group = open_len != 0 && glen == open_len &&
                          memcmp(open_group, k->path, glen) == 0;
        if (open_len != 0 && !same_group) {
            runspec_puts(&b, "}");
            open_len = 0;
        }
        if (!first) runspec_puts(&b, ",");
        first = false;
        if (glen != 0 && !same_group) {
            runspec_puts(&b, "\"");
            runspec_put(&b, k->path, glen);
            runspec_puts(&b, "\":{");
            open_group = k->path;
            open_len = glen;
        }
        runspec_put_string(&b, runspec_leaf(k->path));
        runspec_puts(&b, ":");
        runspec_put_value(&b, rs, k);
    }
    if (open_len != 0) runspec_puts(&b, "}");
    runspec_puts(&b, "}");
    if (b.overflow)
        return sw_diag_set(diag, SW_ETOOBIG, "run spec: canonical form needs more than %zu bytes",
                           size);
    if (b.len < size) buf[b.len] = '\0';
    *len = b.len;
    return 0;
}

int sw_runspec_id(const sw_runspec *rs, uint8_t run_id[SW_ID_BYTES], sw_diag *diag)
{
    char buf[SW_RUNSPEC_MAX_BYTES];
    size_t len;
    int rc = sw_runspec_canonical(rs, buf, sizeof buf, &len, diag);
    if (rc != 0) return rc;
    SW_ASSERT(sodium_init() >= 0);
    crypto_generichash(run_id, SW_ID_BYTES, (const unsigned char *)buf, len, NULL, 0);
    return 0;
}

int sw_runspec_train_spec(const sw_runspec *rs, sw_train_spec *out, sw_diag *diag)
{
    sw_train_spec ts;
    memset(&ts, 0, sizeof ts);
    int rc = sw_runspec_id(rs, ts.run_id, diag);
    if (rc != 0) return rc;
    ts.perturb = rs->perturb;
    ts.schedule = rs->schedule;
    ts.lr = rs->lr;
    ts.warmup_steps = rs->warmup_steps;
    ts.total_steps = rs->total_steps;
    ts.directions = rs->directions;
    ts.max_scale = rs->max_scale;
    if (rs->trainable_tokens[0] &&
        (rc = sw_runspec_rows(rs->trainable_tokens, rs->arch.vocab_size, ts.rows, &ts.n_rows,
                              diag)) != 0)
        return rc;
    *out = ts;
    return 0;
}

/* ---- parsing ---- */

/* A default of the table (as a configuration writes it) into rs; -1 if it does not read. */
static int runspec_parse_text(const sw_runspec_key *k, const char *text, sw_runspec *rs)
{
    void *f = (char *)rs + k->off;
    char *end = NULL;
    errno = 0;
    switch (k->type) {
    case SW_RS_INT:
        *(int *)f = (int)strtol(text, &end, 10);
        break;
    case SW_RS_U64:
        *(uint64_t *)f = strtoull(text, &end, 10);
        break;
    case SW_RS_DOUBLE:
        *(double *)f = strtod(text, &end);
        break;
    case SW_RS_F32:
        *(float *)f = strtof(text, &end);
        break;
    case SW_RS_BOOL:
        *(bool *)f = strcmp(text, "true") == 0;
        return *(bool *)f || strcmp(text, "false") == 0 ? 0 : -1;
    case SW_RS_STRING:
        return snprintf((char *)f, k->size, "%s", text) < (int)k->size ? 0 : -1;
    case SW_RS_SCHEDULE:
        return sw_schedule_parse(text, (sw_schedule *)f) == 0 ? 0 : -1;
    case SW_RS_PERTURB:
        return sw_perturb_parse(text, (sw_perturb *)f) == 0 ? 0 : -1;
    case SW_RS_QUANT:
        *(sw_quant *)f = SW_QUANT_INT8;
        return strcmp(text, runspec_quant_name(SW_QUANT_INT8)) == 0 ? 0 : -1;
    case SW_RS_ADMISSION:
        *(sw_admission *)f = SW_ADMISSION_OPEN;
        return strcmp(text, runspec_admission_name(SW_ADMISSION_OPEN)) == 0 ? 0 : -1;
    case SW_RS_HEX32:
        return -1;
    }
    return end != text && *end == '\0' && errno == 0 ? 0 : -1;
}

static int runspec_parse_value(const sw_runspec_key *k, json_t *v, const char *name, sw_runspec *rs,
                               sw_diag *diag)
{
    void *f = (char *)rs + k->off;
    const char *str = NULL;
    if (k->type == SW_RS_ADMISSION || k->type == SW_RS_HEX32 || k->type == SW_RS_PERTURB ||
        k->type == SW_RS_QUANT || k->type == SW_RS_SCHEDULE || k->type == SW_RS_STRING) {
        if (!json_is_string(v))
            return sw_diag_set(diag, SW_EFORMAT, "%s: %s: expected a string", name, k->path);
        str = json_string_value(v);
        if (strlen(str) != json_string_length(v))
            return sw_diag_set(diag, SW_EFORMAT, "%s: %s: contains a NUL character", name, k->path);
    }
    switch (k->type) {
    case SW_RS_ADMISSION:
        if (strcmp(str, "open") != 0)
            return sw_diag_set(diag, SW_EUNSUPPORTED,
                               "%s: %s: unknown admission policy \"%.40s\" (supported: open)", name,
                               k->path, str);
        *(sw_admission *)f = SW_ADMISSION_OPEN;
        return 0;
    case SW_RS_PERTURB:
        if (sw_perturb_parse(str, (sw_perturb *)f) != 0)
            return sw_diag_set(diag, SW_EINVAL,
                               "%s: %s: unknown distribution \"%.40s\" (rademacher, gaussian)",
                               name, k->path, str);
        return 0;
    case SW_RS_SCHEDULE:
        if (sw_schedule_parse(str, (sw_schedule *)f) != 0)
            return sw_diag_set(diag, SW_EINVAL,
                               "%s: %s: unknown schedule \"%.40s\" (constant, linear, cosine)",
                               name, k->path, str);
        return 0;
    case SW_RS_QUANT:
        if (strcmp(str, "int8") != 0)
            return sw_diag_set(diag, SW_EUNSUPPORTED,
                               "%s: %s: unknown quantization \"%.40s\" (supported: int8)", name,
                               k->path, str);
        *(sw_quant *)f = SW_QUANT_INT8;
        return 0;
    case SW_RS_HEX32: {
        size_t hl = strlen(str);
        bool ok = hl == 64;
        for (size_t i = 0; ok && i < hl; i++)
            ok = (str[i] >= '0' && str[i] <= '9') || (str[i] >= 'a' && str[i] <= 'f');
        if (!ok)
            return sw_diag_set(diag, SW_EINVAL, "%s: %s: expected 64 lower-case hex digits", name,
                               k->path);
        size_t got = 0;
        if (sodium_hex2bin(f, 32, str, hl, NULL, &got, NULL) != 0 || got != 32)
            return sw_diag_set(diag, SW_EINVAL, "%s: %s: expected 64 lower-case hex digits", name,
                               k->path);
        return 0;
    }
    case SW_RS_STRING:
        if (strlen(str) > SW_RUNSPEC_TRAINABLE_MAX)
            return sw_diag_set(diag, SW_ETOOBIG, "%s: %s: longer than %d bytes", name, k->path,
                               SW_RUNSPEC_TRAINABLE_MAX);
        strcpy((char *)f, str);
        return 0;
    case SW_RS_BOOL:
        if (!json_is_boolean(v))
            return sw_diag_set(diag, SW_EFORMAT, "%s: %s: expected true or false", name, k->path);
        *(bool *)f = json_is_true(v);
        return 0;
    case SW_RS_INT:
    case SW_RS_U64: {
        if (!json_is_integer(v))
            return sw_diag_set(diag, SW_EFORMAT, "%s: %s: expected an integer", name, k->path);
        json_int_t i = json_integer_value(v);
        /* Past 2^53 a JCS reader could not hold the value exactly. */
        if (i < 0 || i > ((json_int_t)1 << 53))
            return sw_diag_set(diag, SW_EINVAL, "%s: %s: %lld is out of range", name, k->path,
                               (long long)i);
        if (k->type == SW_RS_INT) {
            if (i > 0x7fffffff)
                return sw_diag_set(diag, SW_EINVAL, "%s: %s: %lld is out of range", name, k->path,
                                   (long long)i);
            *(int *)f = (int)i;
        } else {
            *(uint64_t *)f = (uint64_t)i;
        }
        return 0;
    }
    case SW_RS_F32:
    case SW_RS_DOUBLE: {
        if (!json_is_number(v))
            return sw_diag_set(diag, SW_EFORMAT, "%s: %s: expected a number", name, k->path);
        double d = json_number_value(v);
        if (!isfinite(d))
            return sw_diag_set(diag, SW_EINVAL, "%s: %s: not a finite number", name, k->path);
        if (k->type == SW_RS_DOUBLE) {
            *(double *)f = d;
            return 0;
        }
        /* Only the exact value of a float32 is canonical. */
        if (!(fabs(d) <= 3.4028234663852886e38) || (double)(float)d != d)
            return sw_diag_set(diag, SW_EINVAL, "%s: %s: %.17g is not exactly a float32 value",
                               name, k->path, d);
        *(float *)f = (float)d;
        return 0;
    }
    }
    return SW_EINVAL;
}

static bool runspec_in_group(const sw_runspec_key *k, const char *group)
{
    size_t glen = runspec_group_len(k->path);
    if (group == NULL) return glen == 0;
    return glen == strlen(group) && memcmp(k->path, group, glen) == 0;
}

/* Every key of obj must be one of group's; every one of group's must be present. */
static int runspec_parse_object(json_t *obj, const char *group, const char *name, sw_runspec *rs,
                                sw_diag *diag)
{
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v)
    {
        bool known = false;
        if (group == NULL) {
            for (size_t g = 0; g < sizeof runspec_groups / sizeof runspec_groups[0]; g++)
                known = known || strcmp(key, runspec_groups[g]) == 0;
        }
        for (size_t i = 0; !known && i < RS_NKEYS; i++) {
            const sw_runspec_key *k = &sw_runspec_keys[i];
            known = runspec_in_group(k, group) && strcmp(runspec_leaf(k->path), key) == 0;
        }
        if (!known) {
            if (group == NULL)
                return sw_diag_set(diag, SW_EFORMAT, "%s: %.64s: unknown key", name, key);
            return sw_diag_set(diag, SW_EFORMAT, "%s: %s.%.64s: unknown key", name, group, key);
        }
    }
    const sw_runspec_key *keys[RS_NKEYS];
    runspec_sorted(keys);
    for (size_t i = 0; i < RS_NKEYS; i++) {
        const sw_runspec_key *k = keys[i];
        if (!runspec_in_group(k, group)) continue;
        json_t *val = json_object_get(obj, runspec_leaf(k->path));
        if (val == NULL && (k->flags & (SW_RSK_LORA | SW_RSK_OPTIONAL))) continue; /* below */
        if (val == NULL) return sw_diag_set(diag, SW_EFORMAT, "%s: %s: missing", name, k->path);
        int rc = runspec_parse_value(k, val, name, rs, diag);
        if (rc != 0) return rc;
    }
    /* train.adapter came first (sorted): the adapter keys are there exactly with lora */
    const bool lora = sw_runspec_has_adapter(rs);
    for (size_t i = 0; i < RS_NKEYS; i++) {
        const sw_runspec_key *k = keys[i];
        if (!runspec_in_group(k, group) || !(k->flags & SW_RSK_LORA)) continue;
        const bool present = json_object_get(obj, runspec_leaf(k->path)) != NULL;
        if (lora && !present)
            return sw_diag_set(diag, SW_EFORMAT, "%s: %s: missing (train.adapter is lora)", name,
                               k->path);
        if (!lora && present && strcmp(k->path, "train.adapter") != 0)
            return sw_diag_set(diag, SW_EFORMAT,
                               "%s: %s: only in a run with train.adapter = lora", name, k->path);
    }
    return 0;
}

int sw_runspec_parse(const char *json, size_t len, const char *name, sw_runspec *out, sw_diag *diag)
{
    if (name == NULL) name = "run spec";
    if (len > SW_RUNSPEC_MAX_BYTES)
        return sw_diag_set(diag, SW_ETOOBIG, "%s: %zu bytes, the limit is %d", name, len,
                           SW_RUNSPEC_MAX_BYTES);
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL)
        return sw_diag_set(diag, SW_EFORMAT, "%s: line %d: %s", name, jerr.line, jerr.text);
    int rc;
    sw_runspec rs;
    sw_runspec_defaults(&rs);
    if (!json_is_object(root)) {
        rc = sw_diag_set(diag, SW_EFORMAT, "%s: expected a JSON object", name);
        goto fail;
    }
    /* format first: a newer version's other keys are not ours to judge. */
    json_t *fmt = json_object_get(root, "format");
    if (fmt == NULL) {
        rc = sw_diag_set(diag, SW_EFORMAT, "%s: format: missing", name);
        goto fail;
    }
    if (!json_is_integer(fmt) || json_integer_value(fmt) != SW_RUNSPEC_FORMAT) {
        rc = sw_diag_set(diag, SW_EUNSUPPORTED,
                         "%s: format: expected %d (this version of "
                         "swarmtune reads run spec format %d only)",
                         name, SW_RUNSPEC_FORMAT, SW_RUNSPEC_FORMAT);
        goto fail;
    }
    rc = runspec_parse_object(root, NULL, name, &rs, diag);
    if (rc != 0) goto fail;
    for (size_t g = 0; g < sizeof runspec_groups / sizeof runspec_groups[0]; g++) {
        json_t *obj = json_object_get(root, runspec_groups[g]);
        if (obj == NULL) {
            rc = sw_diag_set(diag, SW_EFORMAT, "%s: %s: missing", name, runspec_groups[g]);
            goto fail;
        }
        if (!json_is_object(obj)) {
            rc = sw_diag_set(diag, SW_EFORMAT, "%s: %s: expected an object", name,
                             runspec_groups[g]);
            goto fail;
        }
        rc = runspec_parse_object(obj, runspec_groups[g], name, &rs, diag);
        if (rc != 0) goto fail;
    }
    rc = sw_runspec_validate(&rs, name, diag);
    if (rc != 0) goto fail;
    if (rs.weight_decay == 0.0) rs.weight_decay = 0.0; /* -0 reads as 0 */
    *out = rs;
fail:
    json_decref(root);
    return rc;
}

int sw_runspec_load(const char *path, sw_runspec *out, sw_diag *diag)
{
    char *buf;
    size_t len;
    int rc = sw_file_read(path, SW_RUNSPEC_MAX_BYTES, &buf, &len, diag);
    if (rc != 0) return rc;
    rc = sw_runspec_parse(buf, len, path, out, diag);
    free(buf);
    return rc;
}

int sw_runspec_write(const char *path, const sw_runspec *rs, sw_diag *diag)
{
    char buf[SW_RUNSPEC_MAX_BYTES];
    size_t len;
    int rc = sw_runspec_canonical(rs, buf, sizeof buf, &len, diag);
    if (rc != 0) {
        sw_diag_prefix(diag, path);
        return rc;
    }
    return sw_file_write_atomic(path, buf, len, 0644, diag);
}

const char *sw_runspec_diff(const sw_runspec *a, const sw_runspec *b)
{
    const sw_runspec_key *keys[RS_NKEYS];
    runspec_sorted(keys);
    const bool lora = sw_runspec_has_adapter(a) || sw_runspec_has_adapter(b);
    for (size_t i = 0; i < RS_NKEYS; i++) {
        const sw_runspec_key *k = keys[i];
        /* without adapters on either side the adapter keys are not part of the run */
        if ((k->flags & SW_RSK_LORA) && !lora) continue;
        const void *fa = runspec_field(a, k), *fb = runspec_field(b, k);
        bool eq = true;
        switch (k->type) {
        case SW_RS_ADMISSION:
            eq = *(const sw_admission *)fa == *(const sw_admission *)fb;
            break;
        case SW_RS_F32:
            eq = *(const float *)fa == *(const float *)fb;
            break;
        case SW_RS_INT:
            eq = *(const int *)fa == *(const int *)fb;
            break;
        case SW_RS_BOOL:
            eq = *(const bool *)fa == *(const bool *)fb;
            break;
        case SW_RS_HEX32:
            eq = memcmp(fa, fb, 32) == 0;
            break;
        case SW_RS_PERTURB:
            eq = *(const sw_perturb *)fa == *(const sw_perturb *)fb;
            break;
        case SW_RS_QUANT:
            eq = *(const sw_quant *)fa == *(const sw_quant *)fb;
            break;
        case SW_RS_SCHEDULE:
            eq = *(const sw_schedule *)fa == *(const sw_schedule *)fb;
            break;
        case SW_RS_STRING:
            eq = strncmp(fa, fb, SW_RUNSPEC_TRAINABLE_MAX + 1) == 0;
            break;
        case SW_RS_DOUBLE:
            eq = *(const double *)fa == *(const double *)fb;
            break;
        case SW_RS_U64:
            eq = *(const uint64_t *)fa == *(const uint64_t *)fb;
            break;
        }
        if (!eq) return k->path;
    }
    return NULL;
}

/* ---- the reference of every key (docs/state.md) ---- */

static const char *runspec_type_text(sw_runspec_type t)
{
    switch (t) {
    case SW_RS_INT:
    case SW_RS_U64:
        return "integer";
    case SW_RS_DOUBLE:
    case SW_RS_F32:
        return "number";
    case SW_RS_BOOL:
        return "boolean";
    default:
        return "string";
    }
}

/* The values k may hold, as Markdown. */
static void runspec_allowed_text(const sw_runspec_key *k, char *buf, size_t size)
{
    bool lo_open = k->flags & SW_RSK_LO_OPEN, hi_open = k->flags & SW_RSK_HI_OPEN;
    char lo[32], hi[32];
    switch (k->type) {
    case SW_RS_INT:
    case SW_RS_U64:
        if (!k->settable) break;
        snprintf(buf, size, "%.0f .. %.0f", k->lo, k->hi);
        return;
    case SW_RS_DOUBLE:
        sw_runspec_number(k->lo, lo, sizeof lo);
        sw_runspec_number(k->hi, hi, sizeof hi);
        snprintf(buf, size, "%s%s, %s%s", lo_open ? "(" : "[", lo, hi, hi_open ? ")" : "]");
        return;
    case SW_RS_F32:
        snprintf(buf, size, "exactly a float32 value (`Math.fround`)");
        return;
    case SW_RS_HEX32:
        snprintf(buf, size, "64 lower-case hex digits");
        return;
    case SW_RS_STRING:
        snprintf(buf, size, "printable ASCII, at most %zu bytes", k->size - 1);
        return;
    case SW_RS_SCHEDULE:
        snprintf(buf, size, "`%s`, `%s`, `%s`", sw_schedule_name(SW_SCHEDULE_CONSTANT),
                 sw_schedule_name(SW_SCHEDULE_LINEAR), sw_schedule_name(SW_SCHEDULE_COSINE));
        return;
    case SW_RS_PERTURB:
        snprintf(buf, size, "`%s`, `%s`", sw_perturb_name(SW_PERTURB_RADEMACHER),
                 sw_perturb_name(SW_PERTURB_GAUSSIAN));
        return;
    case SW_RS_QUANT:
        snprintf(buf, size, "`%s`", runspec_quant_name(SW_QUANT_INT8));
        return;
    case SW_RS_ADMISSION:
        snprintf(buf, size, "`%s`", runspec_admission_name(SW_ADMISSION_OPEN));
        return;
    default:
        break;
    }
    snprintf(buf, size, "%s", k->def ? k->def : "as the model's `config.json`");
}

void sw_runspec_write_doc(FILE *out)
{
    fputs("| key | type | default | allowed | set by | a joiner | meaning |\n", out);
    fputs("| --- | --- | --- | --- | --- | --- | --- |\n", out);
    const sw_runspec_key *keys[RS_NKEYS];
    runspec_sorted(keys);
    for (size_t i = 0; i < RS_NKEYS; i++) {
        const sw_runspec_key *k = keys[i];
        char allowed[128];
        runspec_allowed_text(k, allowed, sizeof allowed);
        fprintf(out, "| `%s` | %s | ", k->path, runspec_type_text(k->type));
        if (k->def)
            fprintf(out, "`%s`%s", k->def,
                    k->flags & SW_RSK_CALIBRATE ? " (calibrate)" : "");
        else
            fputs("from the model", out);
        fprintf(out, " | %s | %s | %s | ", allowed, k->config ? k->config : "this version",
                k->flags & SW_RSK_ADOPT ? "adopts" : "must match");
        for (const char *c = k->doc; *c; c++) {
            if (*c == '|') fputc('\\', out);
            fputc(*c, out);
        }
        fputs(" |\n", out);
    }
}
