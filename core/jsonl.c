/*
 * jsonl: streaming JSON Lines reader.  Files are read in chunks into a line
 * buffer that grows only up to SW_JSONL_MAX_LINE, so a hostile file costs at
 * most about 1 MiB of buffer whatever its size; memory images are scanned in
 * place.
 */
#include "jsonl.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#define JSONL_CHUNK ((size_t)64 << 10)

struct sw_jsonl_reader {
    char *name;
    FILE *f;         /* file input, or NULL */
    const char *mem; /* memory input */
    size_t mem_len;
    size_t mem_pos;
    char *buf; /* file input: bytes read but not consumed are buf[start..end) */
    size_t cap;
    size_t start;
    size_t end;
    bool eof; /* file input: no more bytes to read */
    bool failed;
    uint64_t line;     /* lines consumed so far */
    uint64_t consumed; /* bytes consumed so far, newlines included */
};

void sw_jsonl_record_fini(sw_jsonl_record *rec)
{
    if (!rec) return;
    free(rec->text);
    free(rec->completion);
    memset(rec, 0, sizeof(*rec));
}

static bool jsonl_blank(const char *line, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (line[i] != ' ' && line[i] != '\t' && line[i] != '\r') return false;
    return true;
}

static const char *jsonl_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "a value";
}

/* jansson's message may quote bytes of the line; keep the diag one printable line. */
static void jsonl_printable(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f) *s = '?';
}

static int jsonl_copy_string(const json_t *v, char **out, size_t *len)
{
    size_t n = json_string_length(v);
    char *s = malloc(n + 1);
    if (!s) return SW_ENOMEM;
    memcpy(s, json_string_value(v), n);
    s[n] = '\0';
    *out = s;
    *len = n;
    return 0;
}

/* A present key must hold a string. */
static int jsonl_check_string(const json_t *v, const char *key, const char *name, uint64_t lineno,
                              sw_diag *diag)
{
    if (v && !json_is_string(v))
        return sw_diag_set(diag, SW_EFORMAT, "%s:%llu: \"%s\" is %s, expected a string", name,
                           (unsigned long long)lineno, key, jsonl_type_name(v));
    return 0;
}

int sw_jsonl_parse_line(const char *line, size_t len, const char *name, uint64_t lineno,
                        sw_jsonl_record *out, sw_diag *diag)
{
    SW_ASSERT(line || len == 0);
    SW_ASSERT(out);
    if (!name) name = "<jsonl>";
    unsigned long long ln = (unsigned long long)lineno;
    if (len > SW_JSONL_MAX_LINE)
        return sw_diag_set(diag, SW_ETOOBIG, "%s:%llu: line of %zu bytes exceeds the limit of %zu",
                           name, ln, len, SW_JSONL_MAX_LINE);
    if (jsonl_blank(line, len)) return 1;

    json_error_t jerr;
    /* DECODE_ANY so that a non-object line gets our clearer message below. */
    json_t *root =
        json_loadb(line, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (!root) {
        if (json_error_code(&jerr) == json_error_out_of_memory)
            return sw_diag_set(diag, SW_ENOMEM, "%s:%llu: out of memory parsing JSON", name, ln);
        jsonl_printable(jerr.text);
        /* jansson sees one line as its whole input. */
        char *eof = strstr(jerr.text, "end of file");
        if (eof) memcpy(eof, "end of line", 11);
        return sw_diag_set(diag, SW_EFORMAT, "%s:%llu: invalid JSON at column %d: %s", name, ln,
                           jerr.column, jerr.text);
    }

    sw_jsonl_record rec = {0};
    int rc;
    if (!json_is_object(root)) {
        rc = sw_diag_set(diag, SW_EFORMAT, "%s:%llu: expected a JSON object, found %s", name, ln,
                         jsonl_type_name(root));
        goto fail;
    }
    const json_t *text = json_object_get(root, "text");
    const json_t *prompt = json_object_get(root, "prompt");
    const json_t *completion = json_object_get(root, "completion");
    if (text && (prompt || completion)) {
        rc = sw_diag_set(diag, SW_EFORMAT,
                         "%s:%llu: both \"text\" and \"%s\": a record is either "
                         "{\"text\"} or {\"prompt\", \"completion\"}",
                         name, ln, prompt ? "prompt" : "completion");
        goto fail;
    }
    if (!text && !prompt && !completion) {
        rc = sw_diag_set(diag, SW_EFORMAT,
                         "%s:%llu: no \"text\" or \"prompt\"/\"completion\" key in the object",
                         name, ln);
        goto fail;
    }
    if (!text && (!prompt || !completion)) {
        rc = sw_diag_set(diag, SW_EFORMAT, "%s:%llu: \"%s\" without \"%s\"", name, ln,
                         prompt ? "prompt" : "completion", prompt ? "completion" : "prompt");
        goto fail;
    }
    if ((rc = jsonl_check_string(text, "text", name, lineno, diag)) < 0 ||
        (rc = jsonl_check_string(prompt, "prompt", name, lineno, diag)) < 0 ||
        (rc = jsonl_check_string(completion, "completion", name, lineno, diag)) < 0)
        goto fail;

    rec.line = lineno;
    if (text) {
        rec.kind = SW_JSONL_TEXT;
        rc = jsonl_copy_string(text, &rec.text, &rec.text_len);
    } else {
        rec.kind = SW_JSONL_PROMPT_COMPLETION;
        rc = jsonl_copy_string(prompt, &rec.text, &rec.text_len);
        if (rc == 0) rc = jsonl_copy_string(completion, &rec.completion, &rec.completion_len);
    }
    if (rc < 0) {
        sw_diag_set(diag, rc, "%s:%llu: out of memory", name, ln);
        goto fail;
    }
    json_decref(root);
    *out = rec;
    return 0;

fail:
    sw_jsonl_record_fini(&rec);
    json_decref(root);
    return rc;
}

static int jsonl_reader_new(const char *name, sw_jsonl_reader **out, sw_diag *diag)
{
    sw_jsonl_reader *r = calloc(1, sizeof(*r));
    if (!r || !(r->name = strdup(name))) {
        free(r);
        return sw_diag_set(diag, SW_ENOMEM, "%s: out of memory", name);
    }
    *out = r;
    return 0;
}

int sw_jsonl_open(const char *path, sw_jsonl_reader **out, sw_diag *diag)
{
    SW_ASSERT(path && out);
    sw_jsonl_reader *r = NULL;
    int rc = jsonl_reader_new(path, &r, diag);
    if (rc < 0) return rc;
    r->f = fopen(path, "rb");
    if (!r->f) {
        int e = errno;
        rc = sw_diag_set(diag, sw_error_from_errno(e), "%s: cannot open: %s", path, strerror(e));
        goto fail;
    }
    r->cap = JSONL_CHUNK;
    r->buf = malloc(r->cap);
    if (!r->buf) {
        rc = sw_diag_set(diag, SW_ENOMEM, "%s: out of memory", path);
        goto fail;
    }
    *out = r;
    return 0;

fail:
    sw_jsonl_close(r);
    return rc;
}

int sw_jsonl_open_mem(const void *data, size_t len, const char *name, sw_jsonl_reader **out,
                      sw_diag *diag)
{
    SW_ASSERT((data || len == 0) && out);
    if (!name) name = "<memory>";
    if ((uint64_t)len > SW_JSONL_MAX_BYTES)
        return sw_diag_set(diag, SW_ETOOBIG, "%s: %zu bytes exceeds the limit of %llu bytes", name,
                           len, (unsigned long long)SW_JSONL_MAX_BYTES);
    sw_jsonl_reader *r = NULL;
    int rc = jsonl_reader_new(name, &r, diag);
    if (rc < 0) return rc;
    r->mem = data ? data : "";
    r->mem_len = len;
    *out = r;
    return 0;
}

void sw_jsonl_close(sw_jsonl_reader *r)
{
    if (!r) return;
    if (r->f) fclose(r->f);
    free(r->buf);
    free(r->name);
    free(r);
}

const char *sw_jsonl_name(const sw_jsonl_reader *r)
{
    return r->name;
}

static int jsonl_too_long(sw_jsonl_reader *r, sw_diag *diag)
{
    return sw_diag_set(diag, SW_ETOOBIG, "%s:%llu: line longer than the limit of %zu bytes",
                       r->name, (unsigned long long)(r->line + 1), SW_JSONL_MAX_LINE);
}

/*
 * Sets line and len to the next line (newline excluded).  Returns 1 with a
 * line, 0 at the end of the input, or a negative code.
 */
static int jsonl_next_line(sw_jsonl_reader *r, const char **line, size_t *len, sw_diag *diag)
{
    if (!r->f) {
        if (r->mem_pos >= r->mem_len) return 0;
        const char *p = r->mem + r->mem_pos;
        size_t avail = r->mem_len - r->mem_pos;
        const char *nl = memchr(p, '\n', avail);
        size_t n = nl ? (size_t)(nl - p) : avail;
        if (n > SW_JSONL_MAX_LINE) return jsonl_too_long(r, diag);
        r->mem_pos += nl ? n + 1 : n;
        *line = p;
        *len = n;
        return 1;
    }

    size_t scanned = 0; /* bytes of buf[start..end) known to hold no newline */
    for (;;) {
        char *p = r->buf + r->start;
        size_t avail = r->end - r->start;
        char *nl = memchr(p + scanned, '\n', avail - scanned);
        if (nl || (r->eof && avail > 0)) {
            size_t n = nl ? (size_t)(nl - p) : avail;
            if (n > SW_JSONL_MAX_LINE) return jsonl_too_long(r, diag);
            r->start += nl ? n + 1 : n;
            *line = p;
            *len = n;
            return 1;
        }
        if (r->eof) return 0;
        scanned = avail;
        if (avail > SW_JSONL_MAX_LINE) return jsonl_too_long(r, diag);
        if (r->start > 0) {
            memmove(r->buf, p, avail);
            r->start = 0;
            r->end = avail;
        }
        if (r->cap - r->end < JSONL_CHUNK / 2) {
            /* Grow only as far as a longest line plus its newline and one chunk. */
            size_t ncap = r->cap * 2;
            if (ncap > SW_JSONL_MAX_LINE + 1 + JSONL_CHUNK)
                ncap = SW_JSONL_MAX_LINE + 1 + JSONL_CHUNK;
            if (ncap > r->cap) {
                char *nb = realloc(r->buf, ncap);
                if (!nb) return sw_diag_set(diag, SW_ENOMEM, "%s: out of memory", r->name);
                r->buf = nb;
                r->cap = ncap;
            }
        }
        size_t got = fread(r->buf + r->end, 1, r->cap - r->end, r->f);
        if (got == 0) {
            if (ferror(r->f))
                return sw_diag_set(diag, SW_EIO, "%s:%llu: read error", r->name,
                                   (unsigned long long)(r->line + 1));
            r->eof = true;
        }
        r->end += got;
    }
}

int sw_jsonl_next(sw_jsonl_reader *r, sw_jsonl_record *out, sw_diag *diag)
{
    SW_ASSERT(r && out);
    if (r->failed) return sw_diag_set(diag, SW_EINVAL, "%s: reader used after an error", r->name);
    for (;;) {
        const char *line = NULL;
        size_t len = 0;
        int rc = jsonl_next_line(r, &line, &len, diag);
        if (rc <= 0) {
            r->failed = rc < 0;
            return rc;
        }
        if (r->consumed + len > SW_JSONL_MAX_BYTES) {
            r->failed = true;
            return sw_diag_set(diag, SW_ETOOBIG, "%s:%llu: input exceeds the limit of %llu bytes",
                               r->name, (unsigned long long)(r->line + 1),
                               (unsigned long long)SW_JSONL_MAX_BYTES);
        }
        r->consumed += len + 1;
        r->line++;
        if (r->line == 1 && len >= 3 && memcmp(line, "\xEF\xBB\xBF", 3) == 0) {
            line += 3;
            len -= 3;
        }
        rc = sw_jsonl_parse_line(line, len, r->name, r->line, out, diag);
        if (rc == 1) continue;
        if (rc < 0) r->failed = true;
        return rc == 0 ? 1 : rc;
    }
}
