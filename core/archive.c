/*
 * archive: the cache of origin-signed update batches (archive.h,
 * docs/state.md).
 *
 * Unlike the ledger, nothing here is fsynced after creation and nothing
 * depends on an entry once written, so the scan at open does not tell a torn
 * tail from corruption in the middle: the first entry that is not valid, and
 * everything after it, is cut off, and the daemon refills what is missing.
 *
 * Index: per origin, its entries sorted by first_step (24 bytes each).  An
 * entry never spans more than SW_ARCHIVE_MAX_STEPS steps, so the entries
 * that can hold step s all start in (s - SW_ARCHIVE_MAX_STEPS, s]: every
 * coverage query looks back over that window only, and needs no extra
 * per-entry state.
 */
#include "archive.h"
#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ARCHIVE_MAGIC "SWARCHV1"
#define ARCHIVE_VERSION 1
#define ARCHIVE_SUM_BYTES 16
#define ARCHIVE_ENTRY_HEAD 48 /* len u32 | origin 32 | first_step u64 | n_steps u32 */
#define ARCHIVE_ENTRY_MIN_BYTES (ARCHIVE_ENTRY_HEAD + 1 + ARCHIVE_SUM_BYTES)
#define ARCHIVE_ENTRY_MAX_BYTES (ARCHIVE_ENTRY_HEAD + SW_ARCHIVE_MAX_ENTRY + ARCHIVE_SUM_BYTES)
#define ARCHIVE_SCAN_BYTES (1u << 20)

typedef struct archive_entry {
    uint64_t first_step;
    uint64_t offset; /* file offset of the entry's len field */
    uint32_t len;    /* bytes of the signed batch */
    uint32_t n_steps;
} archive_entry;

typedef struct archive_origin {
    uint8_t origin[SW_ID_BYTES];
    uint64_t prefix; /* steps [0, prefix) are covered */
    size_t n, cap;
    archive_entry *e; /* (n) sorted by first_step; equal ones in file order */
} archive_origin;

struct sw_archive {
    char *path;
    int fd;
    bool broken;    /* a failed append could not be undone: the tail is unknown */
    uint64_t size;  /* bytes of valid content (header + whole entries) */
    uint64_t count; /* entries */
    size_t n_origins, ocap;
    archive_origin *origins; /* sorted by origin bytes */
    uint8_t *buf;            /* ARCHIVE_ENTRY_MAX_BYTES, one entry for append and fetch */
};

/* ---- little-endian helpers ---- */

static void archive_put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t archive_get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void archive_put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t archive_get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static void archive_sum(const uint8_t *p, size_t n, uint8_t out[ARCHIVE_SUM_BYTES])
{
    crypto_generichash(out, ARCHIVE_SUM_BYTES, p, n, NULL, 0);
}

/* The bounds of archive.h; a step range must not wrap around 2^64 either. */
static bool archive_fields_ok(uint64_t first_step, uint32_t n_steps, uint64_t len)
{
    return len >= 1 && len <= SW_ARCHIVE_MAX_ENTRY && n_steps >= 1 &&
           n_steps <= SW_ARCHIVE_MAX_STEPS && first_step <= UINT64_MAX - n_steps;
}

/* ---- I/O helpers ---- */

/* ---- the index ---- */

static archive_origin *archive_find(const sw_archive *a, const uint8_t origin[SW_ID_BYTES],
                                    size_t *pos)
{
    size_t lo = 0, hi = a->n_origins;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = memcmp(a->origins[mid].origin, origin, SW_ID_BYTES);
        if (c == 0) return &a->origins[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (pos) *pos = lo;
    return NULL;
}

static int archive_grow(void **arr, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return 0;
    size_t nc = *cap ? *cap : 16;
    while (nc < need)
        nc *= 2;
    void *p = realloc(*arr, nc * elem);
    if (p == NULL) return SW_ENOMEM;
    *arr = p;
    *cap = nc;
    return 0;
}

/* Number of o's entries with first_step <= step. */
static size_t archive_upper(const archive_origin *o, uint64_t step)
{
    size_t lo = 0, hi = o->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (o->e[mid].first_step <= step)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/*
 * The entry holding step with the largest end, or NULL.  Equivalently: among entries starting at or
 * before step, the one reaching furthest past it.
 */
static const archive_entry *archive_best_at(const archive_origin *o, uint64_t step)
{
    const archive_entry *best = NULL;
    uint64_t best_end = step;
    for (size_t i = archive_upper(o, step); i > 0; i--) {
        const archive_entry *e = &o->e[i - 1];
        /* Earlier entries end at or before step (n_steps is bounded). */
        if (step - e->first_step >= SW_ARCHIVE_MAX_STEPS) break;
        uint64_t end = e->first_step + e->n_steps;
        if (end > best_end) {
            best = e;
            best_end = end;
        }
    }
    return best;
}

/*
 * Makes room for one more entry of origin (creating the origin, empty,
 * if new) so that archive_insert cannot fail.
 */
static int archive_reserve(sw_archive *a, const uint8_t origin[SW_ID_BYTES], archive_origin **out)
{
    size_t pos = 0;
    archive_origin *o = archive_find(a, origin, &pos);
    if (o == NULL) {
        if (archive_grow((void **)&a->origins, &a->ocap, a->n_origins + 1, sizeof(archive_origin)))
            return SW_ENOMEM;
        memmove(&a->origins[pos + 1], &a->origins[pos],
                (a->n_origins - pos) * sizeof(archive_origin));
        o = &a->origins[pos];
        memset(o, 0, sizeof(*o));
        memcpy(o->origin, origin, SW_ID_BYTES);
        a->n_origins++;
    }
    if (archive_grow((void **)&o->e, &o->cap, o->n + 1, sizeof(archive_entry))) return SW_ENOMEM;
    *out = o;
    return 0;
}

/* Indexes e in o (room reserved) and extends o's contiguous prefix. */
static void archive_insert(sw_archive *a, archive_origin *o, const archive_entry *e)
{
    size_t p = archive_upper(o, e->first_step);
    memmove(&o->e[p + 1], &o->e[p], (o->n - p) * sizeof(archive_entry));
    o->e[p] = *e;
    o->n++;
    a->count++;
    /* Before e, no entry held step prefix; so only e can move it. */
    if (e->first_step > o->prefix || e->first_step + e->n_steps <= o->prefix) return;
    const archive_entry *b;
    while ((b = archive_best_at(o, o->prefix)) != NULL)
        o->prefix = b->first_step + b->n_steps;
}

/* ---- scanning ---- */

/* A window of the file held in buf. */
typedef struct archive_reader {
    int fd;
    uint8_t *buf; /* ARCHIVE_SCAN_BYTES */
    uint64_t file_size;
    uint64_t start; /* file offset of buf[0] */
    size_t len;
} archive_reader;

/* Points *p at file bytes [off, off + n) (n <= ARCHIVE_SCAN_BYTES, within the file). */
static int archive_reader_get(archive_reader *r, uint64_t off, size_t n, const uint8_t **p)
{
    if (off >= r->start && off + n <= r->start + r->len) {
        *p = r->buf + (off - r->start);
        return 0;
    }
    uint64_t avail = r->file_size - off;
    size_t want = avail < ARCHIVE_SCAN_BYTES ? (size_t)avail : ARCHIVE_SCAN_BYTES;
    SW_ASSERT(n <= want);
    int rc = sw_pread_all(r->fd, r->buf, want, off);
    if (rc != 0) return rc;
    r->start = off;
    r->len = want;
    *p = r->buf;
    return 0;
}

/*
 * Checks the entry at off: 1 = valid (*e filled, *p its bytes), 0 = not a
 * valid entry, < 0 = I/O error.  Lengths are bounded before anything is read.
 */
static int archive_check_entry(archive_reader *r, uint64_t off, archive_entry *e, const uint8_t **p)
{
    if (r->file_size - off < ARCHIVE_ENTRY_MIN_BYTES) return 0;
    const uint8_t *h;
    int rc = archive_reader_get(r, off, ARCHIVE_ENTRY_HEAD, &h);
    if (rc != 0) return rc;
    uint32_t len = archive_get32(h), n_steps = archive_get32(h + 44);
    uint64_t first_step = archive_get64(h + 36);
    if (!archive_fields_ok(first_step, n_steps, len)) return 0;
    size_t n = ARCHIVE_ENTRY_HEAD + (size_t)len + ARCHIVE_SUM_BYTES;
    if (r->file_size - off < n) return 0;
    rc = archive_reader_get(r, off, n, &h);
    if (rc != 0) return rc;
    uint8_t sum[ARCHIVE_SUM_BYTES];
    archive_sum(h, n - ARCHIVE_SUM_BYTES, sum);
    if (sodium_memcmp(sum, h + n - ARCHIVE_SUM_BYTES, ARCHIVE_SUM_BYTES) != 0) return 0;
    e->first_step = first_step;
    e->offset = off;
    e->len = len;
    e->n_steps = n_steps;
    *p = h;
    return 1;
}

/* Indexes every valid entry; *end receives the offset of the first invalid one. */
static int archive_scan(sw_archive *a, uint64_t file_size, uint64_t *end, sw_diag *diag)
{
    archive_reader r = {a->fd, malloc(ARCHIVE_SCAN_BYTES), file_size, 0, 0};
    if (r.buf == NULL) return sw_diag_set(diag, SW_ENOMEM, "%s: out of memory", a->path);
    uint64_t off = SW_ARCHIVE_HEADER_BYTES;
    int rc = 0;
    while (off < file_size) {
        archive_entry e;
        const uint8_t *p = NULL;
        int v = archive_check_entry(&r, off, &e, &p);
        if (v < 0) {
            rc = sw_diag_set(diag, v, "%s: reading offset %" PRIu64 ": %s", a->path, off,
                             sw_strerror(v));
            break;
        }
        if (v == 0) break;
        archive_origin *o;
        if (archive_reserve(a, p + 4, &o) != 0) {
            rc = sw_diag_set(diag, SW_ENOMEM, "%s: out of memory indexing offset %" PRIu64, a->path,
                             off);
            break;
        }
        archive_insert(a, o, &e);
        off += ARCHIVE_ENTRY_HEAD + (uint64_t)e.len + ARCHIVE_SUM_BYTES;
    }
    free(r.buf);
    *end = off;
    return rc;
}

/* ---- open / close ---- */

static void archive_header(const uint8_t run_id[SW_ID_BYTES], uint8_t h[SW_ARCHIVE_HEADER_BYTES])
{
    memset(h, 0, SW_ARCHIVE_HEADER_BYTES);
    memcpy(h, ARCHIVE_MAGIC, 8);
    archive_put32(h + 8, ARCHIVE_VERSION);
    archive_put32(h + 12, 0);
    memcpy(h + 16, run_id, SW_ID_BYTES);
    archive_sum(h, 48, h + 48);
}

/* Creates path holding just a header, atomically: no crash leaves a torn
 * header (an existing file, created meanwhile by another process, wins). */
static int archive_create(const char *path, const uint8_t run_id[SW_ID_BYTES], sw_diag *diag)
{
    uint8_t h[SW_ARCHIVE_HEADER_BYTES];
    archive_header(run_id, h);
    return sw_file_create_once(path, h, sizeof h, 0644, NULL, diag);
}

static int archive_check_header(const sw_archive *a, const uint8_t run_id[SW_ID_BYTES],
                                uint64_t file_size, sw_diag *diag)
{
    const char *path = a->path;
    uint8_t h[SW_ARCHIVE_HEADER_BYTES];
    if (file_size < SW_ARCHIVE_HEADER_BYTES)
        return sw_diag_set(diag, SW_ETRUNCATED,
                           "%s: %" PRIu64 " bytes, shorter than the %d-byte archive header", path,
                           file_size, SW_ARCHIVE_HEADER_BYTES);
    int rc = sw_pread_all(a->fd, h, sizeof h, 0);
    if (rc != 0) return sw_diag_set(diag, rc, "%s: reading the header: %s", path, sw_strerror(rc));
    if (memcmp(h, ARCHIVE_MAGIC, 8) != 0)
        return sw_diag_set(diag, SW_EFORMAT, "%s: not a swarmtune archive (bad magic)", path);
    uint8_t sum[ARCHIVE_SUM_BYTES];
    archive_sum(h, 48, sum);
    if (memcmp(sum, h + 48, ARCHIVE_SUM_BYTES) != 0)
        return sw_diag_set(diag, SW_EFORMAT, "%s: archive header checksum mismatch", path);
    if (archive_get32(h + 8) != ARCHIVE_VERSION || archive_get32(h + 12) != 0)
        return sw_diag_set(diag, SW_EUNSUPPORTED, "%s: archive version %" PRIu32 " not supported",
                           path, archive_get32(h + 8));
    if (memcmp(h + 16, run_id, SW_ID_BYTES) != 0) {
        char have[17], want[17];
        sodium_bin2hex(have, sizeof have, h + 16, 8);
        sodium_bin2hex(want, sizeof want, run_id, 8);
        return sw_diag_set(diag, SW_EMISMATCH,
                           "%s: archive belongs to run %s..., not to this run %s...", path, have,
                           want);
    }
    return 0;
}

int sw_archive_open(const char *path, const uint8_t run_id[SW_ID_BYTES], sw_archive **out,
                    sw_archive_open_info *info, sw_diag *diag)
{
    int rc;
    bool created = false;
    SW_ASSERT(sodium_init() >= 0);
    sw_archive *a = calloc(1, sizeof(*a));
    if (a == NULL) return sw_diag_set(diag, SW_ENOMEM, "%s: out of memory", path);
    a->fd = -1;
    a->path = strdup(path);
    a->buf = malloc(ARCHIVE_ENTRY_MAX_BYTES);
    if (a->path == NULL || a->buf == NULL) {
        rc = sw_diag_set(diag, SW_ENOMEM, "%s: out of memory", path);
        goto fail;
    }
    a->fd = open(path, O_RDWR | O_CLOEXEC);
    if (a->fd < 0 && errno == ENOENT) {
        rc = archive_create(path, run_id, diag);
        if (rc != 0) goto fail;
        created = true;
        a->fd = open(path, O_RDWR | O_CLOEXEC);
    }
    if (a->fd < 0) {
        int err = errno;
        rc = sw_diag_set(diag, sw_error_from_errno(err), "%s: %s", path, strerror(err));
        goto fail;
    }
    struct stat st;
    if (fstat(a->fd, &st) != 0) {
        int err = errno;
        rc = sw_diag_set(diag, sw_error_from_errno(err), "%s: %s", path, strerror(err));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = sw_diag_set(diag, SW_EINVAL, "%s: not a regular file", path);
        goto fail;
    }
    uint64_t file_size = (uint64_t)st.st_size;
    rc = archive_check_header(a, run_id, file_size, diag);
    if (rc != 0) goto fail;
    rc = archive_scan(a, file_size, &a->size, diag);
    if (rc != 0) goto fail;
    /* No fsync: the archive is a cache (archive.h). */
    if (a->size < file_size && ftruncate(a->fd, (off_t)a->size) != 0) {
        int err = errno;
        rc = sw_diag_set(diag, sw_error_from_errno(err),
                         "%s: truncating the bad tail at offset %" PRIu64 ": %s", path, a->size,
                         strerror(err));
        goto fail;
    }
    if (info != NULL) {
        info->entries = a->count;
        info->size = a->size;
        info->truncated_bytes = file_size - a->size;
        info->created = created;
    }
    *out = a;
    return 0;
fail:
    sw_archive_close(a);
    return rc;
}

void sw_archive_close(sw_archive *a)
{
    if (a == NULL) return;
    if (a->fd >= 0) close(a->fd);
    for (size_t i = 0; i < a->n_origins; i++)
        free(a->origins[i].e);
    free(a->origins);
    free(a->buf);
    free(a->path);
    free(a);
}

/* ---- append ---- */

int sw_archive_append(sw_archive *a, const uint8_t origin[SW_ID_BYTES], uint64_t first_step,
                      uint32_t n_steps, const uint8_t *bytes, size_t len, sw_diag *diag)
{
    if (!archive_fields_ok(first_step, n_steps, len))
        return sw_diag_set(diag, SW_EINVAL,
                           "%s: entry of %zu bytes for steps %" PRIu64 " + %" PRIu32
                           " is out of bounds (1..%u bytes, 1..%d steps)",
                           a->path, len, first_step, n_steps, SW_ARCHIVE_MAX_ENTRY,
                           SW_ARCHIVE_MAX_STEPS);
    if (a->broken)
        return sw_diag_set(diag, SW_EIO, "%s: an earlier append failed; reopen the archive",
                           a->path);
    archive_origin *o;
    if (archive_reserve(a, origin, &o) != 0)
        return sw_diag_set(diag, SW_ENOMEM, "%s: out of memory indexing", a->path);
    const size_t total = ARCHIVE_ENTRY_HEAD + len + ARCHIVE_SUM_BYTES;
    uint8_t *p = a->buf;
    archive_put32(p, (uint32_t)len);
    memcpy(p + 4, origin, SW_ID_BYTES);
    archive_put64(p + 36, first_step);
    archive_put32(p + 44, n_steps);
    memcpy(p + ARCHIVE_ENTRY_HEAD, bytes, len);
    archive_sum(p, total - ARCHIVE_SUM_BYTES, p + total - ARCHIVE_SUM_BYTES);
    /* One write, so that a reader of the file (or a crash) sees the entry
     * whole or not at all in the common case; a partial one is undone. */
    ssize_t r;
    do {
        r = pwrite(a->fd, p, total, (off_t)a->size);
    } while (r < 0 && errno == EINTR);
    if (r != (ssize_t)total) {
        int rc = r < 0 ? sw_error_from_errno(errno) : SW_EIO;
        if (ftruncate(a->fd, (off_t)a->size) != 0) a->broken = true;
        return sw_diag_set(diag, rc, "%s: appending %zu bytes at offset %" PRIu64 ": %s%s", a->path,
                           total, a->size, r < 0 ? sw_strerror(rc) : "short write",
                           a->broken ? " (and truncating back failed)" : "");
    }
    archive_entry e = {first_step, a->size, (uint32_t)len, n_steps};
    archive_insert(a, o, &e);
    a->size += total;
    return 0;
}

/* ---- queries ---- */

bool sw_archive_covered(const sw_archive *a, const uint8_t origin[SW_ID_BYTES], uint64_t first_step,
                        uint32_t n_steps)
{
    const archive_origin *o = archive_find(a, origin, NULL);
    if (n_steps == 0) return true;
    if (o == NULL || first_step > UINT64_MAX - n_steps) return false;
    const uint64_t target = first_step + n_steps;
    if (target <= o->prefix) return true;
    uint64_t cur = first_step;
    while (cur < target) {
        const archive_entry *e = archive_best_at(o, cur);
        if (e == NULL) return false;
        cur = e->first_step + e->n_steps;
    }
    return true;
}

uint64_t sw_archive_prefix(const sw_archive *a, const uint8_t origin[SW_ID_BYTES])
{
    const archive_origin *o = archive_find(a, origin, NULL);
    return o ? o->prefix : 0;
}

/* Reads entry e back into a->buf and checks it is still what the index says. */
static int archive_read_entry(const sw_archive *a, const uint8_t origin[SW_ID_BYTES],
                              const archive_entry *e, sw_diag *diag)
{
    const size_t total = ARCHIVE_ENTRY_HEAD + (size_t)e->len + ARCHIVE_SUM_BYTES;
    uint8_t *p = a->buf;
    int rc = sw_pread_all(a->fd, p, total, e->offset);
    if (rc == SW_ETRUNCATED)
        return sw_diag_set(diag, SW_EFORMAT,
                           "%s: entry at offset %" PRIu64 " is cut short (changed since open)",
                           a->path, e->offset);
    if (rc != 0)
        return sw_diag_set(diag, rc, "%s: reading offset %" PRIu64 ": %s", a->path, e->offset,
                           sw_strerror(rc));
    uint8_t sum[ARCHIVE_SUM_BYTES];
    archive_sum(p, total - ARCHIVE_SUM_BYTES, sum);
    if (archive_get32(p) != e->len || memcmp(p + 4, origin, SW_ID_BYTES) != 0 ||
        archive_get64(p + 36) != e->first_step || archive_get32(p + 44) != e->n_steps ||
        sodium_memcmp(sum, p + total - ARCHIVE_SUM_BYTES, ARCHIVE_SUM_BYTES) != 0)
        return sw_diag_set(diag, SW_EFORMAT,
                           "%s: entry at offset %" PRIu64
                           " fails its checksum (changed since open)",
                           a->path, e->offset);
    return 0;
}

/*
 * fn receives bytes inside a->buf, so it must not call into this archive
 * (a single-threaded owner never needs to during a fetch).
 */
int sw_archive_fetch(const sw_archive *a, const uint8_t origin[SW_ID_BYTES], uint64_t first_step,
                     uint64_t max_steps, size_t max_entries, size_t max_bytes,
                     sw_archive_entry_fn fn, void *ctx, size_t *n_out, sw_diag *diag)
{
    size_t given = 0, bytes = 0;
    int rc = 0;
    const archive_origin *o = archive_find(a, origin, NULL);
    const uint64_t target =
        first_step > UINT64_MAX - max_steps ? UINT64_MAX : first_step + max_steps;
    uint64_t cur = first_step;
    while (o != NULL && cur < target && given < max_entries) {
        const archive_entry *e = archive_best_at(o, cur);
        if (e == NULL || e->len > max_bytes - bytes) break;
        rc = archive_read_entry(a, origin, e, diag);
        if (rc != 0) break;
        rc = fn(ctx, a->buf + ARCHIVE_ENTRY_HEAD, e->len);
        if (rc != 0) {
            rc = sw_diag_set(diag, rc, "%s: fetch: the entry at offset %" PRIu64 " was refused: %s",
                             a->path, e->offset, sw_strerror(rc));
            break;
        }
        given++;
        bytes += e->len;
        cur = e->first_step + e->n_steps;
    }
    if (n_out) *n_out = given;
    return rc;
}

uint64_t sw_archive_count(const sw_archive *a)
{
    return a->count;
}

size_t sw_archive_origin_count(const sw_archive *a)
{
    return a->n_origins;
}

void sw_archive_origin_at(const sw_archive *a, size_t i, uint8_t origin[SW_ID_BYTES])
{
    memcpy(origin, a->origins[i].origin, SW_ID_BYTES);
}
