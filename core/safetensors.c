/*
 * safetensors: validation follows the reference Rust implementation
 * (huggingface/safetensors, SafeTensors::read_metadata / Metadata::validate):
 * the tensors' byte ranges, sorted, must tile the data section exactly, with
 * no hole, no overlap and no trailing byte.  docs/file-formats.md lists every
 * rule and the decisions taken where the reference is silent.
 */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "fileio.h"
#include "half.h"

struct sw_safetensors {
    const unsigned char *base; /* the whole file image */
    size_t len;
    void *map; /* non-NULL when we own an mmap of len bytes */
    size_t n;
    sw_st_tensor *tensors; /* header order */
    size_t *by_name;       /* indices sorted by name, for find */
    char *names;           /* all tensor names, NUL-separated */
    char *metadata;        /* compact JSON text or NULL */
};

/* Longest tensor name quoted in a message; the rest is cut so the file name fits. */
#define ST_NAME_SHOWN 80

size_t sw_dtype_size(sw_dtype dtype)
{
    switch (dtype) {
    case SW_DTYPE_F32:
        return 4;
    case SW_DTYPE_F16:
    case SW_DTYPE_BF16:
        return 2;
    }
    SW_ASSERT(!"unknown sw_dtype");
    return 0;
}

const char *sw_dtype_name(sw_dtype dtype)
{
    switch (dtype) {
    case SW_DTYPE_F32:
        return "F32";
    case SW_DTYPE_F16:
        return "F16";
    case SW_DTYPE_BF16:
        return "BF16";
    }
    SW_ASSERT(!"unknown sw_dtype");
    return "?";
}

int sw_dtype_parse(const char *name, sw_dtype *out)
{
    static const struct {
        const char *file, *typed;
        sw_dtype dtype;
    } table[] = {
        {"F32", "f32", SW_DTYPE_F32},
        {"F16", "f16", SW_DTYPE_F16},
        {"BF16", "bf16", SW_DTYPE_BF16},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        if (strcmp(name, table[i].file) == 0 || strcmp(name, table[i].typed) == 0) {
            *out = table[i].dtype;
            return 0;
        }
    }
    return SW_EINVAL;
}

/* Dtypes of the safetensors specification that we recognise but do not read. */
static bool st_dtype_is_official(const char *name)
{
    static const char *const official[] = {
        "BOOL", "U8",      "I8",      "I16",     "U16",     "I32",     "U32", "I64", "U64",
        "F64",  "F8_E5M2", "F8_E4M3", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4",  "C64",
    };
    for (size_t i = 0; i < sizeof official / sizeof official[0]; i++)
        if (strcmp(name, official[i]) == 0) return true;
    return false;
}

static void st_format_shape(char *buf, size_t size, const int64_t *shape, int ndim)
{
    size_t used = 0;
    int n = snprintf(buf, size, "[");
    used = n > 0 ? (size_t)n : 0;
    for (int i = 0; i < ndim && used < size; i++) {
        n = snprintf(buf + used, size - used, "%s%" PRId64, i ? ", " : "", shape[i]);
        if (n < 0) break;
        used += (size_t)n;
    }
    if (used < size) snprintf(buf + used, size - used, "]");
}

/* (begin, end) pair for sorting; ties by end so that empty tensors come first. */
typedef struct st_range {
    uint64_t begin, end;
    size_t index;
} st_range;

static int st_range_cmp(const void *a, const void *b)
{
    const st_range *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* qsort has no context argument: by_name sorting needs the table, passed via a pair. */
typedef struct st_name_ref {
    const char *name;
    size_t index;
} st_name_ref;

static int st_name_ref_cmp(const void *a, const void *b)
{
    return strcmp(((const st_name_ref *)a)->name, ((const st_name_ref *)b)->name);
}

/* Reads a JSON integer >= 0 that fits in uint64 (jansson integers are signed 64-bit). */
static bool st_json_u64(const json_t *v, uint64_t *out)
{
    if (!json_is_integer(v)) return false;
    json_int_t i = json_integer_value(v);
    if (i < 0) return false;
    *out = (uint64_t)i;
    return true;
}

static int st_parse_metadata(sw_safetensors *st, json_t *meta, const char *name, sw_diag *diag)
{
    if (!json_is_object(meta))
        return sw_diag_set(diag, SW_EFORMAT, "%s: \"__metadata__\" is not a JSON object", name);
    const char *key;
    json_t *value;
    json_object_foreach(meta, key, value)
    {
        if (!json_is_string(value))
            return sw_diag_set(diag, SW_EFORMAT,
                               "%s: \"__metadata__\" value of '%.*s' is not a string", name,
                               ST_NAME_SHOWN, key);
    }
    st->metadata = json_dumps(meta, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (st->metadata == NULL) return sw_diag_set(diag, SW_ENOMEM, "%s: out of memory", name);
    return 0;
}

static int st_parse_tensor(sw_st_tensor *t, const char *key, json_t *entry, uint64_t data_len,
                           const char *name, uint64_t *begin_out, uint64_t *end_out, sw_diag *diag)
{
    if (key[0] == '\0')
        return sw_diag_set(diag, SW_EFORMAT, "%s: a tensor has an empty name", name);
    if (!json_is_object(entry))
        return sw_diag_set(diag, SW_EFORMAT, "%s: tensor '%.*s': entry is not a JSON object", name,
                           ST_NAME_SHOWN, key);
    json_t *jdtype = json_object_get(entry, "dtype");
    json_t *jshape = json_object_get(entry, "shape");
    json_t *joff = json_object_get(entry, "data_offsets");
    if (jdtype == NULL || jshape == NULL || joff == NULL)
        return sw_diag_set(diag, SW_EFORMAT, "%s: tensor '%.*s': missing \"%s\"", name,
                           ST_NAME_SHOWN, key,
                           jdtype == NULL   ? "dtype"
                           : jshape == NULL ? "shape"
                                            : "data_offsets");
    if (json_object_size(entry) != 3) {
        const char *k;
        json_t *v;
        json_object_foreach(entry, k, v)
        {
            if (strcmp(k, "dtype") != 0 && strcmp(k, "shape") != 0 &&
                strcmp(k, "data_offsets") != 0)
                return sw_diag_set(diag, SW_EFORMAT, "%s: tensor '%.*s': unknown key '%.*s'", name,
                                   ST_NAME_SHOWN, key, ST_NAME_SHOWN, k);
        }
    }

    if (!json_is_string(jdtype))
        return sw_diag_set(diag, SW_EFORMAT, "%s: tensor '%.*s': dtype is not a string", name,
                           ST_NAME_SHOWN, key);
    const char *dt = json_string_value(jdtype);
    if (strcmp(dt, "F32") == 0) {
        t->dtype = SW_DTYPE_F32;
    } else if (strcmp(dt, "F16") == 0) {
        t->dtype = SW_DTYPE_F16;
    } else if (strcmp(dt, "BF16") == 0) {
        t->dtype = SW_DTYPE_BF16;
    } else if (st_dtype_is_official(dt)) {
        return sw_diag_set(diag, SW_EUNSUPPORTED,
                           "%s: tensor '%.*s': dtype %s is not supported (F32, F16, BF16)", name,
                           ST_NAME_SHOWN, key, dt);
    } else {
        return sw_diag_set(diag, SW_EFORMAT, "%s: tensor '%.*s': unknown dtype '%.*s'", name,
                           ST_NAME_SHOWN, key, ST_NAME_SHOWN, dt);
    }

    if (!json_is_array(jshape))
        return sw_diag_set(diag, SW_EFORMAT, "%s: tensor '%.*s': shape is not an array", name,
                           ST_NAME_SHOWN, key);
    size_t ndim = json_array_size(jshape);
    if (ndim > SW_ST_MAX_DIMS)
        return sw_diag_set(diag, SW_ETOOBIG,
                           "%s: tensor '%.*s': shape has %zu dimensions, at most %d are supported",
                           name, ST_NAME_SHOWN, key, ndim, SW_ST_MAX_DIMS);
    t->ndim = (int)ndim;
    uint64_t numel = 1;
    bool overflow = false;
    for (size_t i = 0; i < ndim; i++) {
        uint64_t d;
        if (!st_json_u64(json_array_get(jshape, i), &d))
            return sw_diag_set(diag, SW_EFORMAT,
                               "%s: tensor '%.*s': shape[%zu] is not a non-negative integer", name,
                               ST_NAME_SHOWN, key, i);
        t->shape[i] = (int64_t)d;
        if (d != 0 && numel > UINT64_MAX / d)
            overflow = true;
        else
            numel *= d;
    }
    /* A zero dimension makes the product 0 even if other dimensions overflowed. */
    for (size_t i = 0; i < ndim; i++)
        if (t->shape[i] == 0) {
            overflow = false;
            numel = 0;
        }
    char shape_text[8 * 24];
    st_format_shape(shape_text, sizeof shape_text, t->shape, t->ndim);
    size_t esize = sw_dtype_size(t->dtype);
    if (overflow || numel > UINT64_MAX / esize)
        return sw_diag_set(diag, SW_ETOOBIG,
                           "%s: tensor '%.*s': shape %s x %s overflows a 64-bit byte count", name,
                           ST_NAME_SHOWN, key, shape_text, sw_dtype_name(t->dtype));
    t->numel = numel;
    t->nbytes = numel * esize;

    uint64_t begin = 0, end = 0;
    if (!json_is_array(joff) || json_array_size(joff) != 2 ||
        !st_json_u64(json_array_get(joff, 0), &begin) ||
        !st_json_u64(json_array_get(joff, 1), &end))
        return sw_diag_set(
            diag, SW_EFORMAT,
            "%s: tensor '%.*s': data_offsets is not [begin, end] of non-negative integers", name,
            ST_NAME_SHOWN, key);
    if (begin > end)
        return sw_diag_set(diag, SW_EFORMAT,
                           "%s: tensor '%.*s': data_offsets [%" PRIu64 ", %" PRIu64
                           "] begin after end",
                           name, ST_NAME_SHOWN, key, begin, end);
    if (end - begin != t->nbytes)
        return sw_diag_set(
            diag, SW_EFORMAT,
            "%s: tensor '%.*s': shape %s x %s is %" PRIu64 " bytes but data_offsets span %" PRIu64,
            name, ST_NAME_SHOWN, key, shape_text, sw_dtype_name(t->dtype), t->nbytes, end - begin);
    if (end > data_len)
        return sw_diag_set(diag, SW_ETRUNCATED,
                           "%s: tensor '%.*s': data_offsets [%" PRIu64 ", %" PRIu64
                           "] end past the data section of %" PRIu64 " bytes",
                           name, ST_NAME_SHOWN, key, begin, end, data_len);
    *begin_out = begin;
    *end_out = end;
    return 0;
}

/* Everything after the file image is known: parse the header, fill st. */
static int st_parse(sw_safetensors *st, const char *name, sw_diag *diag)
{
    json_t *root = NULL;
    st_range *ranges = NULL;
    st_name_ref *refs = NULL;
    int rc;

    if (st->len < 8)
        return sw_diag_set(diag, SW_ETRUNCATED,
                           "%s: file is %zu bytes, shorter than the 8-byte header length", name,
                           st->len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | st->base[i];
    if (hlen < 2)
        return sw_diag_set(diag, SW_EFORMAT,
                           "%s: header length %" PRIu64 " is too small for a JSON object", name,
                           hlen);
    if (hlen > SW_ST_MAX_HEADER)
        return sw_diag_set(diag, SW_ETOOBIG,
                           "%s: header length %" PRIu64 " exceeds the limit of %u bytes", name,
                           hlen, SW_ST_MAX_HEADER);
    if (hlen > st->len - 8)
        return sw_diag_set(diag, SW_ETRUNCATED,
                           "%s: header length %" PRIu64 " runs past the end of the %zu-byte file",
                           name, hlen, st->len);
    const char *htext = (const char *)st->base + 8;
    uint64_t data_len = st->len - 8 - hlen;
    /* The reference implementation requires the header to start with '{'. */
    if (htext[0] != '{')
        return sw_diag_set(diag, SW_EFORMAT, "%s: header does not start with '{'", name);

    json_error_t jerr;
    root = json_loadb(htext, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        rc = sw_diag_set(diag, SW_EFORMAT, "%s: header JSON, byte %d: %s", name, jerr.position,
                         jerr.text);
        goto fail;
    }
    if (!json_is_object(root)) {
        rc = sw_diag_set(diag, SW_EFORMAT, "%s: header is not a JSON object", name);
        goto fail;
    }

    size_t n = json_object_size(root);
    json_t *meta = json_object_get(root, "__metadata__");
    if (meta != NULL) n--;
    if (n > SW_ST_MAX_TENSORS) {
        rc = sw_diag_set(diag, SW_ETOOBIG, "%s: %zu tensors, the limit is %d", name, n,
                         SW_ST_MAX_TENSORS);
        goto fail;
    }
    if (meta != NULL && (rc = st_parse_metadata(st, meta, name, diag)) != 0) goto fail;

    size_t names_len = 0;
    const char *key;
    json_t *value;
    json_object_foreach(root, key, value)
    {
        if (strcmp(key, "__metadata__") != 0) names_len += strlen(key) + 1;
    }
    st->tensors = calloc(n ? n : 1, sizeof *st->tensors);
    st->by_name = calloc(n ? n : 1, sizeof *st->by_name);
    st->names = malloc(names_len ? names_len : 1);
    ranges = calloc(n ? n : 1, sizeof *ranges);
    refs = calloc(n ? n : 1, sizeof *refs);
    if (st->tensors == NULL || st->by_name == NULL || st->names == NULL || ranges == NULL ||
        refs == NULL) {
        rc = sw_diag_set(diag, SW_ENOMEM, "%s: out of memory for %zu tensors", name, n);
        goto fail;
    }

    size_t i = 0, name_off = 0;
    json_object_foreach(root, key, value)
    {
        if (strcmp(key, "__metadata__") == 0) continue;
        sw_st_tensor *t = &st->tensors[i];
        uint64_t begin = 0, end = 0;
        rc = st_parse_tensor(t, key, value, data_len, name, &begin, &end, diag);
        if (rc != 0) goto fail;
        size_t klen = strlen(key);
        memcpy(st->names + name_off, key, klen + 1);
        t->name = st->names + name_off;
        name_off += klen + 1;
        t->data = st->base + 8 + hlen + begin;
        ranges[i] = (st_range){begin, end, i};
        refs[i] = (st_name_ref){t->name, i};
        i++;
    }
    st->n = n;

    /* The ranges must tile [0, data_len) exactly, as in the reference implementation. */
    qsort(ranges, n, sizeof *ranges, st_range_cmp);
    uint64_t at = 0;
    for (size_t k = 0; k < n; k++) {
        const st_range *r = &ranges[k];
        if (r->begin < at) {
            const st_range *p = &ranges[k - 1];
            rc = sw_diag_set(diag, SW_EFORMAT,
                             "%s: tensors '%.*s' [%" PRIu64 ", %" PRIu64 ") and '%.*s' [%" PRIu64
                             ", %" PRIu64 ") overlap",
                             name, ST_NAME_SHOWN, st->tensors[p->index].name, p->begin, p->end,
                             ST_NAME_SHOWN, st->tensors[r->index].name, r->begin, r->end);
            goto fail;
        }
        if (r->begin > at) {
            rc = sw_diag_set(diag, SW_EFORMAT,
                             "%s: tensor '%.*s' begins at data offset %" PRIu64
                             ", leaving a hole of %" PRIu64 " bytes after offset %" PRIu64,
                             name, ST_NAME_SHOWN, st->tensors[r->index].name, r->begin,
                             r->begin - at, at);
            goto fail;
        }
        at = r->end;
    }
    if (at != data_len) {
        rc = sw_diag_set(diag, SW_EFORMAT,
                         "%s: data section is %" PRIu64 " bytes but the tensors cover %" PRIu64
                         " (%" PRIu64 " trailing bytes)",
                         name, data_len, at, data_len - at);
        goto fail;
    }

    qsort(refs, n, sizeof *refs, st_name_ref_cmp);
    for (size_t k = 0; k < n; k++)
        st->by_name[k] = refs[k].index;

    free(refs);
    free(ranges);
    json_decref(root);
    return 0;

fail:
    free(refs);
    free(ranges);
    json_decref(root);
    return rc;
}

static void st_free(sw_safetensors *st)
{
    if (st == NULL) return;
    if (st->map != NULL) munmap(st->map, st->len);
    free(st->tensors);
    free(st->by_name);
    free(st->names);
    free(st->metadata);
    free(st);
}

int sw_safetensors_open_mem(const void *buf, size_t len, const char *name, sw_safetensors **out,
                            sw_diag *diag)
{
    SW_ASSERT(out != NULL && name != NULL && (buf != NULL || len == 0));
    sw_safetensors *st = calloc(1, sizeof *st);
    if (st == NULL) return sw_diag_set(diag, SW_ENOMEM, "%s: out of memory", name);
    static const unsigned char empty[1];
    st->base = buf != NULL ? buf : empty;
    st->len = len;
    int rc = st_parse(st, name, diag);
    if (rc != 0) {
        st_free(st);
        return rc;
    }
    *out = st;
    return 0;
}

int sw_safetensors_open(const char *path, sw_safetensors **out, sw_diag *diag)
{
    SW_ASSERT(out != NULL && path != NULL);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int err = errno;
        return sw_diag_set(diag, sw_error_from_errno(err), "%s: %s", path, strerror(err));
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int err = errno;
        close(fd);
        return sw_diag_set(diag, sw_error_from_errno(err), "%s: %s", path, strerror(err));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return sw_diag_set(diag, SW_EINVAL, "%s: not a regular file", path);
    }
    if ((uintmax_t)sb.st_size > SIZE_MAX) {
        close(fd);
        return sw_diag_set(diag, SW_ETOOBIG, "%s: file is too large to map", path);
    }
    size_t len = (size_t)sb.st_size;
    if (len < 8) {
        close(fd);
        return sw_diag_set(diag, SW_ETRUNCATED,
                           "%s: file is %zu bytes, shorter than the 8-byte header length", path,
                           len);
    }
    void *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    int err = errno;
    close(fd); /* the mapping keeps the file alive */
    if (map == MAP_FAILED)
        return sw_diag_set(diag, sw_error_from_errno(err), "%s: mmap: %s", path, strerror(err));

    sw_safetensors *st = calloc(1, sizeof *st);
    if (st == NULL) {
        munmap(map, len);
        return sw_diag_set(diag, SW_ENOMEM, "%s: out of memory", path);
    }
    st->map = map;
    st->base = map;
    st->len = len;
    int rc = st_parse(st, path, diag);
    if (rc != 0) {
        st_free(st);
        return rc;
    }
    *out = st;
    return 0;
}

void sw_safetensors_close(sw_safetensors *st)
{
    st_free(st);
}

size_t sw_safetensors_count(const sw_safetensors *st)
{
    return st->n;
}

const sw_st_tensor *sw_safetensors_at(const sw_safetensors *st, size_t i)
{
    SW_ASSERT(i < st->n);
    return &st->tensors[i];
}

const sw_st_tensor *sw_safetensors_find(const sw_safetensors *st, const char *name)
{
    size_t lo = 0, hi = st->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const sw_st_tensor *t = &st->tensors[st->by_name[mid]];
        int c = strcmp(name, t->name);
        if (c == 0) return t;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

const char *sw_safetensors_metadata(const sw_safetensors *st)
{
    return st->metadata;
}

static bool st_host_is_le(void)
{
    const uint16_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

void sw_st_tensor_to_f32(const sw_st_tensor *t, float *out)
{
    size_t n = (size_t)t->numel;
    switch (t->dtype) {
    case SW_DTYPE_F32:
        if (st_host_is_le()) {
            if (n > 0) memcpy(out, t->data, n * sizeof(float));
        } else {
            const unsigned char *p = t->data;
            for (size_t i = 0; i < n; i++) {
                uint32_t x = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 |
                             (uint32_t)p[4 * i + 2] << 16 | (uint32_t)p[4 * i + 3] << 24;
                memcpy(&out[i], &x, sizeof x);
            }
        }
        break;
    case SW_DTYPE_F16:
        sw_f16_to_f32_n(t->data, out, n);
        break;
    case SW_DTYPE_BF16:
        sw_bf16_to_f32_n(t->data, out, n);
        break;
    }
}

/* ---- writer ---- */

typedef struct st_buf {
    char *p;
    size_t len, cap;
} st_buf;

static int st_buf_add(st_buf *b, const char *s, size_t n)
{
    if (n > SIZE_MAX - b->len - 1) return SW_ENOMEM;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap = cap > SIZE_MAX / 2 ? b->len + n + 1 : cap * 2;
        char *q = realloc(b->p, cap);
        if (q == NULL) return SW_ENOMEM;
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

static int st_buf_str(st_buf *b, const char *s)
{
    return st_buf_add(b, s, strlen(s));
}

static int st_write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            return sw_error_from_errno(errno);
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Builds the padded header text; validates the tensors on the way. */
static int st_build_header(const char *path, const sw_st_write_tensor *tensors, size_t n,
                           sw_dtype dtype, st_buf *b, sw_diag *diag)
{
    uint64_t offset = 0;
    char num[64];
    int rc;
    if (n > SW_ST_MAX_TENSORS)
        return sw_diag_set(diag, SW_ETOOBIG, "%s: %zu tensors, the limit is %d", path, n,
                           SW_ST_MAX_TENSORS);
    if ((rc = st_buf_str(b, "{\"__metadata__\":{\"format\":\"pt\"}")) != 0) goto oom;
    for (size_t i = 0; i < n; i++) {
        const sw_st_write_tensor *t = &tensors[i];
        if (t->name == NULL || t->name[0] == '\0' || strcmp(t->name, "__metadata__") == 0)
            return sw_diag_set(diag, SW_EINVAL, "%s: tensor %zu has an empty or reserved name",
                               path, i);
        for (size_t j = 0; j < i; j++)
            if (strcmp(tensors[j].name, t->name) == 0)
                return sw_diag_set(diag, SW_EINVAL, "%s: tensor '%.*s' appears twice", path,
                                   ST_NAME_SHOWN, t->name);
        if (t->ndim < 0 || t->ndim > SW_ST_MAX_DIMS)
            return sw_diag_set(diag, SW_EINVAL, "%s: tensor '%.*s': %d dimensions", path,
                               ST_NAME_SHOWN, t->name, t->ndim);
        uint64_t numel = 1;
        for (int d = 0; d < t->ndim; d++) {
            if (t->shape[d] < 0)
                return sw_diag_set(diag, SW_EINVAL, "%s: tensor '%.*s': negative dimension", path,
                                   ST_NAME_SHOWN, t->name);
            uint64_t dim = (uint64_t)t->shape[d];
            if (dim != 0 && numel > (UINT64_MAX / 8) / dim)
                return sw_diag_set(diag, SW_ETOOBIG, "%s: tensor '%.*s': too many elements", path,
                                   ST_NAME_SHOWN, t->name);
            numel *= dim;
        }
        if (numel > 0 && t->data == NULL)
            return sw_diag_set(diag, SW_EINVAL, "%s: tensor '%.*s': no data", path, ST_NAME_SHOWN,
                               t->name);
        uint64_t nbytes = numel * sw_dtype_size(dtype);
        if (nbytes > UINT64_MAX - offset || numel > SIZE_MAX / sizeof(float))
            return sw_diag_set(diag, SW_ETOOBIG, "%s: tensors are too large", path);

        /* jansson checks the name is UTF-8 and escapes it as JSON. */
        json_t *js = json_string(t->name);
        if (js == NULL)
            return sw_diag_set(diag, SW_EINVAL, "%s: tensor %zu: name is not valid UTF-8", path, i);
        char *quoted = json_dumps(js, JSON_ENCODE_ANY);
        json_decref(js);
        if (quoted == NULL) goto oom;
        rc = st_buf_str(b, ",");
        if (rc == 0) rc = st_buf_str(b, quoted);
        free(quoted);
        if (rc != 0) goto oom;
        snprintf(num, sizeof num, ":{\"dtype\":\"%s\",\"shape\":[", sw_dtype_name(dtype));
        if ((rc = st_buf_str(b, num)) != 0) goto oom;
        for (int d = 0; d < t->ndim; d++) {
            snprintf(num, sizeof num, "%s%" PRId64, d ? "," : "", t->shape[d]);
            if ((rc = st_buf_str(b, num)) != 0) goto oom;
        }
        snprintf(num, sizeof num, "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", offset,
                 offset + nbytes);
        if ((rc = st_buf_str(b, num)) != 0) goto oom;
        offset += nbytes;
    }
    if ((rc = st_buf_str(b, "}")) != 0) goto oom;
    while (b->len % 8 != 0)
        if ((rc = st_buf_str(b, " ")) != 0) goto oom;
    if (b->len > SW_ST_MAX_HEADER)
        return sw_diag_set(diag, SW_ETOOBIG, "%s: header of %zu bytes exceeds the limit", path,
                           b->len);
    return 0;
oom:
    return sw_diag_set(diag, SW_ENOMEM, "%s: out of memory building the header", path);
}

/* Converts and writes one tensor's data in bounded chunks. */
static int st_write_tensor_data(int fd, const sw_st_write_tensor *t, sw_dtype dtype,
                                unsigned char *chunk, size_t chunk_elems)
{
    size_t numel = 1;
    for (int d = 0; d < t->ndim; d++)
        numel *= (size_t)t->shape[d];
    size_t esize = sw_dtype_size(dtype);
    bool le = st_host_is_le();
    for (size_t at = 0; at < numel; at += chunk_elems) {
        size_t k = numel - at < chunk_elems ? numel - at : chunk_elems;
        const float *src = t->data + at;
        for (size_t i = 0; i < k; i++) {
            uint32_t x;
            switch (dtype) {
            case SW_DTYPE_F32:
                memcpy(&x, &src[i], sizeof x);
                break;
            case SW_DTYPE_F16:
                x = sw_f32_to_f16(src[i]);
                break;
            case SW_DTYPE_BF16:
                x = sw_f32_to_bf16(src[i]);
                break;
            default:
                x = 0;
                break;
            }
            if (esize == 4 && le) {
                memcpy(chunk + 4 * i, &x, 4);
            } else {
                for (size_t byte = 0; byte < esize; byte++)
                    chunk[esize * i + byte] = (unsigned char)(x >> (8 * byte));
            }
        }
        int rc = st_write_all(fd, chunk, k * esize);
        if (rc != 0) return rc;
    }
    return 0;
}

int sw_safetensors_write(const char *path, const sw_st_write_tensor *tensors, size_t n,
                         sw_dtype dtype, sw_diag *diag)
{
    SW_ASSERT(path != NULL && (tensors != NULL || n == 0));
    if (dtype != SW_DTYPE_F32 && dtype != SW_DTYPE_F16 && dtype != SW_DTYPE_BF16)
        return sw_diag_set(diag, SW_EINVAL, "%s: unknown dtype %d", path, (int)dtype);

    enum { CHUNK_ELEMS = 16384 };
    st_buf header = {0};
    unsigned char *chunk = NULL;
    char *tmp = NULL;
    int fd = -1;
    int rc = st_build_header(path, tensors, n, dtype, &header, diag);
    if (rc != 0) goto fail;

    size_t tlen = strlen(path) + 32;
    tmp = malloc(tlen);
    chunk = malloc(CHUNK_ELEMS * 4);
    if (tmp == NULL || chunk == NULL) {
        rc = sw_diag_set(diag, SW_ENOMEM, "%s: out of memory", path);
        goto fail;
    }
    snprintf(tmp, tlen, "%s.tmp.%ld", path, (long)getpid());
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        int err = errno;
        rc = sw_diag_set(diag, sw_error_from_errno(err), "%s: %s", tmp, strerror(err));
        goto fail;
    }
    unsigned char lenbytes[8];
    for (int i = 0; i < 8; i++)
        lenbytes[i] = (unsigned char)((uint64_t)header.len >> (8 * i));
    rc = st_write_all(fd, lenbytes, sizeof lenbytes);
    if (rc == 0) rc = st_write_all(fd, header.p, header.len);
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = st_write_tensor_data(fd, &tensors[i], dtype, chunk, CHUNK_ELEMS);
    if (rc == 0 && fsync(fd) != 0) rc = sw_error_from_errno(errno);
    if (close(fd) != 0 && rc == 0) rc = sw_error_from_errno(errno);
    fd = -1;
    if (rc != 0) {
        rc = sw_diag_set(diag, rc, "%s: writing: %s", tmp, sw_strerror(rc));
        goto fail;
    }
    if (rename(tmp, path) != 0) {
        int err = errno;
        rc = sw_diag_set(diag, sw_error_from_errno(err), "%s: rename: %s", path, strerror(err));
        goto fail;
    }
    free(tmp);
    tmp = NULL;
    rc = sw_fsync_parent(path);
    if (rc != 0) {
        rc = sw_diag_set(diag, rc, "%s: fsync of directory: %s", path, sw_strerror(rc));
        goto fail;
    }
    free(chunk);
    free(header.p);
    return 0;

fail:
    if (fd >= 0) close(fd);
    if (tmp != NULL) {
        unlink(tmp);
        free(tmp);
    }
    free(chunk);
    free(header.p);
    return rc;
}
