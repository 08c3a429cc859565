/*
 * ledger: the append-only update file and its in-memory index (ledger.h,
 * docs/state.md).
 *
 * Torn tail versus corruption: every record is written and fsynced on its
 * own, and the next one is written only after that fsync returned, so a
 * crash can damage only the bytes after the last complete record, at most
 * one record's worth.  The scan therefore calls a bad record a torn tail
 * only when it starts within SW_LEDGER_RECORD_MAX_BYTES of the end of the
 * file and no valid record starts anywhere after it; anything else is
 * corruption, reported with its offset and never repaired silently.
 */
#include "ledger.h"
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

#define LEDGER_MAGIC "SWLEDGR1"
#define LEDGER_SUM_BYTES 16
#define LEDGER_REC_HEAD 8
#define SW_LEDGER_RECORD_MAX_BYTES                                                                 \
    (LEDGER_REC_HEAD + SW_LEDGER_RECORD_MAX * SW_LEDGER_UPDATE_BYTES + LEDGER_SUM_BYTES)
#define LEDGER_RECORD_MIN_BYTES (LEDGER_REC_HEAD + SW_LEDGER_UPDATE_BYTES + LEDGER_SUM_BYTES)
#define LEDGER_BUF_BYTES (1u << 20)

typedef struct ledger_origin {
    uint8_t origin[SW_ID_BYTES];
    uint64_t prefix;
    uint64_t *pidx; /* (prefix) ledger index of steps 0..prefix-1 */
    size_t pcap;
    size_t n_extra, xcap;
    uint64_t *xstep; /* (n_extra) sorted steps > prefix */
    uint64_t *xidx;  /* (n_extra) their ledger indices */
} ledger_origin;

struct sw_ledger {
    char *path;
    int fd;
    bool readonly;
    bool broken; /* an append failed in a way that left the file uncertain */
    uint8_t run_id[SW_ID_BYTES];
    uint64_t size; /* bytes of valid content (header + whole records) */
    uint64_t count;
    size_t n_records, rcap;
    uint64_t *rec_off;   /* (n_records) file offset of each record */
    uint64_t *rec_first; /* (n_records) ledger index of its first update */
    size_t n_origins, ocap;
    ledger_origin *origins; /* sorted by origin bytes */
    uint8_t *buf;           /* LEDGER_BUF_BYTES scratch for reads and appends */
};

/* ---- little-endian helpers ---- */

static void ledger_put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t ledger_get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void ledger_put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t ledger_get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static void ledger_encode(const sw_update *u, uint8_t *p)
{
    memcpy(p, u->origin, SW_ID_BYTES);
    ledger_put64(p + 32, u->step);
    p[40] = (uint8_t)u->q;
    uint32_t bits;
    memcpy(&bits, &u->scale, 4);
    ledger_put32(p + 41, bits);
}

static void ledger_decode(const uint8_t *p, sw_update *u)
{
    memcpy(u->origin, p, SW_ID_BYTES);
    u->step = ledger_get64(p + 32);
    u->q = (int8_t)p[40];
    uint32_t bits = ledger_get32(p + 41);
    memcpy(&u->scale, &bits, 4);
}

static void ledger_sum(const uint8_t *p, size_t n, uint8_t out[LEDGER_SUM_BYTES])
{
    crypto_generichash(out, LEDGER_SUM_BYTES, p, n, NULL, 0);
}

/* ---- I/O helpers ---- */

/* ---- the index ---- */

static ledger_origin *ledger_find(const sw_ledger *l, const uint8_t origin[SW_ID_BYTES],
                                  size_t *pos)
{
    size_t lo = 0, hi = l->n_origins;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = memcmp(l->origins[mid].origin, origin, SW_ID_BYTES);
        if (c == 0) return &l->origins[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (pos) *pos = lo;
    return NULL;
}

/* Position in o's extras of the first step >= step. */
static size_t ledger_extra_pos(const ledger_origin *o, uint64_t step)
{
    size_t lo = 0, hi = o->n_extra;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (o->xstep[mid] < step)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static bool ledger_origin_has(const ledger_origin *o, uint64_t step, uint64_t *index)
{
    if (step < o->prefix) {
        if (index) *index = o->pidx[step];
        return true;
    }
    size_t p = ledger_extra_pos(o, step);
    if (p < o->n_extra && o->xstep[p] == step) {
        if (index) *index = o->xidx[p];
        return true;
    }
    return false;
}

static int ledger_grow(void **arr, size_t *cap, size_t need, size_t elem)
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

/* Indexes (origin, step) at ledger index idx.  SW_EEXIST if already held. */
static int ledger_index_add(sw_ledger *l, const sw_update *u, uint64_t idx)
{
    size_t pos = 0;
    ledger_origin *o = ledger_find(l, u->origin, &pos);
    if (o == NULL) {
        if (ledger_grow((void **)&l->origins, &l->ocap, l->n_origins + 1, sizeof(ledger_origin)))
            return SW_ENOMEM;
        memmove(&l->origins[pos + 1], &l->origins[pos],
                (l->n_origins - pos) * sizeof(ledger_origin));
        o = &l->origins[pos];
        memset(o, 0, sizeof(*o));
        memcpy(o->origin, u->origin, SW_ID_BYTES);
        l->n_origins++;
    }
    if (ledger_origin_has(o, u->step, NULL)) return SW_EEXIST;
    if (u->step == o->prefix) {
        /* Absorb the extras that now continue the prefix, with one memmove. */
        size_t absorb = 0;
        while (absorb < o->n_extra && o->xstep[absorb] == o->prefix + 1 + absorb)
            absorb++;
        if (ledger_grow((void **)&o->pidx, &o->pcap, (size_t)o->prefix + 1 + absorb,
                        sizeof(uint64_t)))
            return SW_ENOMEM;
        o->pidx[o->prefix++] = idx;
        for (size_t i = 0; i < absorb; i++)
            o->pidx[o->prefix++] = o->xidx[i];
        if (absorb > 0) {
            memmove(o->xstep, o->xstep + absorb, (o->n_extra - absorb) * sizeof(uint64_t));
            memmove(o->xidx, o->xidx + absorb, (o->n_extra - absorb) * sizeof(uint64_t));
            o->n_extra -= absorb;
        }
        return 0;
    }
    size_t p = ledger_extra_pos(o, u->step);
    size_t cap = o->xcap;
    if (ledger_grow((void **)&o->xstep, &cap, o->n_extra + 1, sizeof(uint64_t))) return SW_ENOMEM;
    cap = o->xcap;
    if (ledger_grow((void **)&o->xidx, &cap, o->n_extra + 1, sizeof(uint64_t))) return SW_ENOMEM;
    o->xcap = cap;
    memmove(o->xstep + p + 1, o->xstep + p, (o->n_extra - p) * sizeof(uint64_t));
    memmove(o->xidx + p + 1, o->xidx + p, (o->n_extra - p) * sizeof(uint64_t));
    o->xstep[p] = u->step;
    o->xidx[p] = idx;
    o->n_extra++;
    return 0;
}

static int ledger_add_record(sw_ledger *l, uint64_t off, uint64_t first)
{
    size_t cap = l->rcap;
    if (ledger_grow((void **)&l->rec_off, &cap, l->n_records + 1, sizeof(uint64_t)))
        return SW_ENOMEM;
    cap = l->rcap;
    if (ledger_grow((void **)&l->rec_first, &cap, l->n_records + 1, sizeof(uint64_t)))
        return SW_ENOMEM;
    l->rcap = cap;
    l->rec_off[l->n_records] = off;
    l->rec_first[l->n_records] = first;
    l->n_records++;
    return 0;
}

/* ---- scanning ---- */

/* A window of the file held in l->buf. */
typedef struct ledger_reader {
    sw_ledger *l;
    uint64_t file_size;
    uint64_t start; /* file offset of buf[0] */
    size_t len;
} ledger_reader;

/* Points *p at file bytes [off, off + n) (n <= LEDGER_BUF_BYTES, within the file). */
static int ledger_reader_get(ledger_reader *r, uint64_t off, size_t n, const uint8_t **p)
{
    if (off >= r->start && off + n <= r->start + r->len) {
        *p = r->l->buf + (off - r->start);
        return 0;
    }
    uint64_t avail = r->file_size - off;
    size_t want = avail < LEDGER_BUF_BYTES ? (size_t)avail : LEDGER_BUF_BYTES;
    SW_ASSERT(n <= want);
    int rc = sw_pread_all(r->l->fd, r->l->buf, want, off);
    if (rc != 0) return rc;
    r->start = off;
    r->len = want;
    *p = r->l->buf;
    return 0;
}

/*
 * Checks the record at off: 1 = valid (*len its size), 0 = not a valid
 * record, < 0 = I/O error.
 */
static int ledger_check_record(ledger_reader *r, uint64_t off, size_t *len)
{
    if (r->file_size - off < LEDGER_RECORD_MIN_BYTES) return 0;
    const uint8_t *p;
    int rc = ledger_reader_get(r, off, LEDGER_REC_HEAD, &p);
    if (rc != 0) return rc;
    uint32_t count = ledger_get32(p), type = ledger_get32(p + 4);
    if (count < 1 || count > SW_LEDGER_RECORD_MAX || type != SW_LEDGER_REC_UPDATES) return 0;
    size_t n = LEDGER_REC_HEAD + (size_t)count * SW_LEDGER_UPDATE_BYTES + LEDGER_SUM_BYTES;
    if (r->file_size - off < n) return 0;
    rc = ledger_reader_get(r, off, n, &p);
    if (rc != 0) return rc;
    uint8_t sum[LEDGER_SUM_BYTES];
    ledger_sum(p, n - LEDGER_SUM_BYTES, sum);
    if (sodium_memcmp(sum, p + n - LEDGER_SUM_BYTES, LEDGER_SUM_BYTES) != 0) return 0;
    *len = n;
    return 1;
}

static int ledger_scan(sw_ledger *l, uint64_t file_size, uint64_t *torn, sw_diag *diag)
{
    ledger_reader r = {l, file_size, 0, 0};
    uint64_t off = SW_LEDGER_HEADER_BYTES;
    *torn = 0;
    while (off < file_size) {
        size_t len = 0;
        int v = ledger_check_record(&r, off, &len);
        if (v < 0)
            return sw_diag_set(diag, v, "%s: reading offset %" PRIu64 ": %s", l->path, off,
                               sw_strerror(v));
        if (v == 0) {
            /* Torn only if it could be the one record a crash interrupted. */
            bool corrupt = file_size - off > SW_LEDGER_RECORD_MAX_BYTES;
            uint64_t later = 0;
            for (uint64_t o2 = off + 1; !corrupt && o2 + LEDGER_RECORD_MIN_BYTES <= file_size;
                 o2++) {
                size_t len2;
                int v2 = ledger_check_record(&r, o2, &len2);
                if (v2 < 0)
                    return sw_diag_set(diag, v2, "%s: reading offset %" PRIu64 ": %s", l->path, o2,
                                       sw_strerror(v2));
                if (v2 == 1) {
                    corrupt = true;
                    later = o2;
                }
            }
            if (corrupt) {
                if (later)
                    return sw_diag_set(diag, SW_EFORMAT,
                                       "%s: corrupt record at offset %" PRIu64
                                       " followed by a valid record at offset %" PRIu64
                                       " (not a torn tail; see docs/state.md, recovery)",
                                       l->path, off, later);
                return sw_diag_set(diag, SW_EFORMAT,
                                   "%s: corrupt record at offset %" PRIu64 " with %" PRIu64
                                   " bytes after it (more than one record: not a torn tail; "
                                   "see docs/state.md, recovery)",
                                   l->path, off, file_size - off);
            }
            *torn = file_size - off;
            break;
        }
        const uint8_t *p;
        int rc = ledger_reader_get(&r, off, len, &p);
        if (rc != 0) return sw_diag_set(diag, rc, "%s: %s", l->path, sw_strerror(rc));
        uint32_t count = ledger_get32(p);
        if (l->count + count > SW_LEDGER_MAX_UPDATES)
            return sw_diag_set(diag, SW_ETOOBIG, "%s: more than %" PRIu64 " updates", l->path,
                               (uint64_t)SW_LEDGER_MAX_UPDATES);
        if (ledger_add_record(l, off, l->count) != 0)
            return sw_diag_set(diag, SW_ENOMEM, "%s: out of memory indexing", l->path);
        for (uint32_t i = 0; i < count; i++) {
            sw_update u;
            ledger_decode(p + LEDGER_REC_HEAD + (size_t)i * SW_LEDGER_UPDATE_BYTES, &u);
            rc = ledger_index_add(l, &u, l->count);
            if (rc == SW_EEXIST) {
                char who[17];
                sodium_bin2hex(who, sizeof who, u.origin, 8);
                return sw_diag_set(diag, SW_EFORMAT,
                                   "%s: record at offset %" PRIu64 " repeats update %s/%" PRIu64
                                   " held earlier",
                                   l->path, off, who, u.step);
            }
            if (rc != 0) return sw_diag_set(diag, rc, "%s: out of memory indexing", l->path);
            l->count++;
        }
        off += len;
    }
    l->size = off;
    return 0;
}

/* ---- open / close ---- */

static void ledger_header(const uint8_t run_id[SW_ID_BYTES], uint8_t h[SW_LEDGER_HEADER_BYTES])
{
    memset(h, 0, SW_LEDGER_HEADER_BYTES);
    memcpy(h, LEDGER_MAGIC, 8);
    ledger_put32(h + 8, SW_LEDGER_VERSION);
    ledger_put32(h + 12, SW_LEDGER_HEADER_BYTES);
    memcpy(h + 16, run_id, SW_ID_BYTES);
    ledger_sum(h, 48, h + 48);
}

/* Creates path holding just a header, atomically: no crash leaves a torn
 * header (an existing file, created meanwhile by another process, wins). */
static int ledger_create(const char *path, const uint8_t run_id[SW_ID_BYTES], sw_diag *diag)
{
    uint8_t h[SW_LEDGER_HEADER_BYTES];
    ledger_header(run_id, h);
    return sw_file_create_once(path, h, sizeof h, 0644, NULL, diag);
}

int sw_ledger_open(const char *path, const uint8_t run_id[SW_ID_BYTES], bool readonly,
                   sw_ledger **out, sw_ledger_open_info *info, sw_diag *diag)
{
    int rc;
    bool created = false;
    SW_ASSERT(sodium_init() >= 0);
    sw_ledger *l = calloc(1, sizeof(*l));
    if (l == NULL) return sw_diag_set(diag, SW_ENOMEM, "%s: out of memory", path);
    l->fd = -1;
    l->readonly = readonly;
    memcpy(l->run_id, run_id, SW_ID_BYTES);
    l->path = strdup(path);
    l->buf = malloc(LEDGER_BUF_BYTES);
    if (l->path == NULL || l->buf == NULL) {
        rc = sw_diag_set(diag, SW_ENOMEM, "%s: out of memory", path);
        goto fail;
    }
    l->fd = open(path, (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    if (l->fd < 0 && errno == ENOENT && !readonly) {
        rc = ledger_create(path, run_id, diag);
        if (rc != 0) goto fail;
        created = true;
        l->fd = open(path, O_RDWR | O_CLOEXEC);
    }
    if (l->fd < 0) {
        int err = errno;
        rc = sw_diag_set(diag, sw_error_from_errno(err), "%s: %s", path, strerror(err));
        goto fail;
    }
    struct stat st;
    if (fstat(l->fd, &st) != 0) {
        int err = errno;
        rc = sw_diag_set(diag, sw_error_from_errno(err), "%s: %s", path, strerror(err));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = sw_diag_set(diag, SW_EINVAL, "%s: not a regular file", path);
        goto fail;
    }
    uint64_t file_size = (uint64_t)st.st_size;
    uint8_t h[SW_LEDGER_HEADER_BYTES];
    if (file_size < SW_LEDGER_HEADER_BYTES) {
        rc = sw_diag_set(diag, SW_ETRUNCATED,
                         "%s: %" PRIu64 " bytes, shorter than the %d-byte ledger header", path,
                         file_size, SW_LEDGER_HEADER_BYTES);
        goto fail;
    }
    rc = sw_pread_all(l->fd, h, sizeof h, 0);
    if (rc != 0) {
        rc = sw_diag_set(diag, rc, "%s: reading the header: %s", path, sw_strerror(rc));
        goto fail;
    }
    uint8_t sum[LEDGER_SUM_BYTES];
    ledger_sum(h, 48, sum);
    if (memcmp(h, LEDGER_MAGIC, 8) != 0) {
        rc = sw_diag_set(diag, SW_EFORMAT, "%s: not a swarmtune ledger (bad magic)", path);
        goto fail;
    }
    if (memcmp(sum, h + 48, LEDGER_SUM_BYTES) != 0) {
        rc = sw_diag_set(diag, SW_EFORMAT, "%s: ledger header checksum mismatch", path);
        goto fail;
    }
    if (ledger_get32(h + 8) != SW_LEDGER_VERSION ||
        ledger_get32(h + 12) != SW_LEDGER_HEADER_BYTES) {
        rc = sw_diag_set(diag, SW_EUNSUPPORTED, "%s: ledger version %" PRIu32 " not supported",
                         path, ledger_get32(h + 8));
        goto fail;
    }
    if (memcmp(h + 16, run_id, SW_ID_BYTES) != 0) {
        char have[17], want[17];
        sodium_bin2hex(have, sizeof have, h + 16, 8);
        sodium_bin2hex(want, sizeof want, run_id, 8);
        rc =
            sw_diag_set(diag, SW_EMISMATCH,
                        "%s: ledger belongs to run %s..., not to this run %s...", path, have, want);
        goto fail;
    }
    uint64_t torn = 0;
    rc = ledger_scan(l, file_size, &torn, diag);
    if (rc != 0) goto fail;
    /* fsync even without a tail to cut: records a killed process wrote but
     * never synced are about to count, so they must be durable first. */
    if (!readonly) {
        if ((torn > 0 && ftruncate(l->fd, (off_t)l->size) != 0) || fsync(l->fd) != 0) {
            int err = errno;
            rc = sw_diag_set(diag, sw_error_from_errno(err), "%s: %s at offset %" PRIu64 ": %s",
                             path, torn > 0 ? "truncating the torn tail" : "fsync", l->size,
                             strerror(err));
            goto fail;
        }
    }
    if (info != NULL) {
        info->n_updates = l->count;
        info->n_records = l->n_records;
        info->size = l->size;
        info->truncated_bytes = torn;
        info->created = created;
    }
    *out = l;
    return 0;
fail:
    sw_ledger_close(l);
    return rc;
}

void sw_ledger_close(sw_ledger *l)
{
    if (l == NULL) return;
    if (l->fd >= 0) close(l->fd);
    for (size_t i = 0; i < l->n_origins; i++) {
        free(l->origins[i].pidx);
        free(l->origins[i].xstep);
        free(l->origins[i].xidx);
    }
    free(l->origins);
    free(l->rec_off);
    free(l->rec_first);
    free(l->buf);
    free(l->path);
    free(l);
}

/* ---- append ---- */

static int ledger_cmp_key(const void *a, const void *b)
{
    return sw_update_key_cmp(*(const sw_update *const *)a, *(const sw_update *const *)b);
}

static int ledger_dup_error(const sw_ledger *l, const sw_update *u, const char *why, sw_diag *diag)
{
    char who[17];
    sodium_bin2hex(who, sizeof who, u->origin, 8);
    return sw_diag_set(diag, SW_EEXIST, "%s: update %s/%" PRIu64 " %s", l->path, who, u->step, why);
}

int sw_ledger_append(sw_ledger *l, const sw_update *u, size_t k, sw_diag *diag)
{
    if (l->readonly) return sw_diag_set(diag, SW_EACCES, "%s: opened read-only", l->path);
    if (l->broken)
        return sw_diag_set(diag, SW_EIO, "%s: an earlier append failed; reopen the ledger",
                           l->path);
    if (k == 0) return 0;
    if (l->count + k > SW_LEDGER_MAX_UPDATES)
        return sw_diag_set(diag, SW_ETOOBIG, "%s: more than %" PRIu64 " updates", l->path,
                           (uint64_t)SW_LEDGER_MAX_UPDATES);
    for (size_t i = 0; i < k; i++) {
        const ledger_origin *o = ledger_find(l, u[i].origin, NULL);
        if (o != NULL && ledger_origin_has(o, u[i].step, NULL))
            return ledger_dup_error(l, &u[i], "is already held", diag);
    }
    if (k > 1) {
        const sw_update **sorted = malloc(k * sizeof(*sorted));
        if (sorted == NULL) return sw_diag_set(diag, SW_ENOMEM, "%s: out of memory", l->path);
        for (size_t i = 0; i < k; i++)
            sorted[i] = &u[i];
        qsort(sorted, k, sizeof(*sorted), ledger_cmp_key);
        for (size_t i = 1; i < k; i++) {
            if (ledger_cmp_key(&sorted[i - 1], &sorted[i]) == 0) {
                int rc = ledger_dup_error(l, sorted[i], "appears twice in the batch", diag);
                free(sorted);
                return rc;
            }
        }
        free(sorted);
    }
    size_t done = 0;
    while (done < k) {
        size_t n = k - done < SW_LEDGER_RECORD_MAX ? k - done : SW_LEDGER_RECORD_MAX;
        size_t len = LEDGER_REC_HEAD + n * SW_LEDGER_UPDATE_BYTES + LEDGER_SUM_BYTES;
        uint8_t *p = l->buf;
        ledger_put32(p, (uint32_t)n);
        ledger_put32(p + 4, SW_LEDGER_REC_UPDATES);
        for (size_t i = 0; i < n; i++)
            ledger_encode(&u[done + i], p + LEDGER_REC_HEAD + i * SW_LEDGER_UPDATE_BYTES);
        ledger_sum(p, len - LEDGER_SUM_BYTES, p + len - LEDGER_SUM_BYTES);
        int rc = sw_pwrite_all(l->fd, p, len, l->size);
        if (rc == 0 && fsync(l->fd) != 0) rc = sw_error_from_errno(errno);
        if (rc != 0) {
            /* Put the file back to the last durable record; if even that
             * fails the file's tail is unknown until the next open's scan. */
            if (ftruncate(l->fd, (off_t)l->size) != 0 || fsync(l->fd) != 0) l->broken = true;
            return sw_diag_set(diag, rc == SW_ETRUNCATED ? SW_EIO : rc,
                               "%s: appending at offset %" PRIu64 ": %s", l->path, l->size,
                               sw_strerror(rc));
        }
        if (ledger_add_record(l, l->size, l->count) != 0) {
            l->broken = true;
            return sw_diag_set(diag, SW_ENOMEM, "%s: out of memory indexing", l->path);
        }
        for (size_t i = 0; i < n; i++) {
            rc = ledger_index_add(l, &u[done + i], l->count);
            if (rc != 0) {
                l->broken = true; /* the file holds updates the index lacks */
                return sw_diag_set(diag, rc, "%s: indexing: %s", l->path, sw_strerror(rc));
            }
            l->count++;
        }
        l->size += len;
        done += n;
    }
    return 0;
}

/* ---- queries ---- */

uint64_t sw_ledger_count(const sw_ledger *l)
{
    return l->count;
}

const char *sw_ledger_path(const sw_ledger *l)
{
    return l->path;
}

/* The record holding ledger index i (i < count). */
static size_t ledger_record_of(const sw_ledger *l, uint64_t i)
{
    size_t lo = 0, hi = l->n_records;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (l->rec_first[mid] <= i)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

int sw_ledger_read(const sw_ledger *l, uint64_t first, sw_update *out, size_t max, size_t *got,
                   sw_diag *diag)
{
    *got = 0;
    if (first >= l->count || max == 0) return 0;
    const uint64_t end = l->count - first < max ? l->count : first + max;
    size_t r = ledger_record_of(l, first);
    uint64_t i = first;
    size_t n_out = 0;
    while (i < end) {
        /* Records [r, r2) in one pread: as many as the buffer holds and the
         * range needs (one record always fits). */
        const uint64_t off = l->rec_off[r];
        uint64_t span_end = off;
        size_t r2 = r;
        while (r2 < l->n_records) {
            uint64_t rend = r2 + 1 < l->n_records ? l->rec_off[r2 + 1] : l->size;
            if (r2 > r && rend - off > LEDGER_BUF_BYTES) break;
            span_end = rend;
            r2++;
            if (r2 < l->n_records && l->rec_first[r2] >= end) break;
        }
        int rc = sw_pread_all(l->fd, l->buf, (size_t)(span_end - off), off);
        if (rc != 0)
            return sw_diag_set(diag, rc, "%s: reading offset %" PRIu64 ": %s", l->path, off,
                               sw_strerror(rc));
        size_t pos = 0;
        for (; r < r2; r++) {
            const uint8_t *p = l->buf + pos;
            uint64_t len = (r + 1 < l->n_records ? l->rec_off[r + 1] : l->size) - l->rec_off[r];
            uint32_t count = ledger_get32(p);
            uint8_t sum[LEDGER_SUM_BYTES];
            if (len !=
                LEDGER_REC_HEAD + (uint64_t)count * SW_LEDGER_UPDATE_BYTES + LEDGER_SUM_BYTES)
                return sw_diag_set(diag, SW_EFORMAT,
                                   "%s: record at offset %" PRIu64 " changed since open", l->path,
                                   l->rec_off[r]);
            ledger_sum(p, (size_t)len - LEDGER_SUM_BYTES, sum);
            if (memcmp(sum, p + len - LEDGER_SUM_BYTES, LEDGER_SUM_BYTES) != 0)
                return sw_diag_set(diag, SW_EFORMAT,
                                   "%s: record at offset %" PRIu64
                                   " fails its checksum (changed since open)",
                                   l->path, l->rec_off[r]);
            for (uint64_t j = i - l->rec_first[r]; j < count && i < end; j++, i++)
                ledger_decode(p + LEDGER_REC_HEAD + j * SW_LEDGER_UPDATE_BYTES, &out[n_out++]);
            pos += (size_t)len;
        }
    }
    *got = n_out;
    return 0;
}

bool sw_ledger_has(const sw_ledger *l, const uint8_t origin[SW_ID_BYTES], uint64_t step)
{
    const ledger_origin *o = ledger_find(l, origin, NULL);
    return o != NULL && ledger_origin_has(o, step, NULL);
}

int sw_ledger_get(const sw_ledger *l, const uint8_t origin[SW_ID_BYTES], uint64_t step,
                  sw_update *out, uint64_t *index, sw_diag *diag)
{
    const ledger_origin *o = ledger_find(l, origin, NULL);
    uint64_t idx;
    if (o == NULL || !ledger_origin_has(o, step, &idx)) {
        char who[17];
        sodium_bin2hex(who, sizeof who, origin, 8);
        return sw_diag_set(diag, SW_ENOTFOUND, "%s: update %s/%" PRIu64 " is not held", l->path,
                           who, step);
    }
    size_t got;
    int rc = sw_ledger_read(l, idx, out, 1, &got, diag);
    if (rc != 0) return rc;
    if (index) *index = idx;
    return 0;
}

uint64_t sw_ledger_prefix(const sw_ledger *l, const uint8_t origin[SW_ID_BYTES])
{
    const ledger_origin *o = ledger_find(l, origin, NULL);
    return o ? o->prefix : 0;
}

uint64_t sw_ledger_next_step(const sw_ledger *l, const uint8_t origin[SW_ID_BYTES])
{
    const ledger_origin *o = ledger_find(l, origin, NULL);
    if (o == NULL) return 0;
    return o->n_extra ? o->xstep[o->n_extra - 1] + 1 : o->prefix;
}

size_t sw_ledger_origin_count(const sw_ledger *l)
{
    return l->n_origins;
}

int sw_ledger_vv(const sw_ledger *l, sw_vv *out)
{
    sw_vv v = {0, NULL};
    if (l->n_origins > 0) {
        v.o = calloc(l->n_origins, sizeof(*v.o));
        if (v.o == NULL) return SW_ENOMEM;
    }
    for (size_t i = 0; i < l->n_origins; i++) {
        const ledger_origin *o = &l->origins[i];
        sw_vv_origin *d = &v.o[v.n++];
        memcpy(d->origin, o->origin, SW_ID_BYTES);
        d->prefix = o->prefix;
        if (o->n_extra > 0) {
            d->extra = malloc(o->n_extra * sizeof(uint64_t));
            if (d->extra == NULL) {
                sw_vv_fini(&v);
                return SW_ENOMEM;
            }
            memcpy(d->extra, o->xstep, o->n_extra * sizeof(uint64_t));
            d->n_extra = o->n_extra;
        }
    }
    *out = v;
    return 0;
}

int sw_ledger_vv_at(const sw_ledger *l, uint64_t count, sw_vv *out)
{
    if (count >= l->count) return sw_ledger_vv(l, out);
    sw_vv v = {0, NULL};
    if (l->n_origins > 0) {
        v.o = calloc(l->n_origins, sizeof(*v.o));
        if (v.o == NULL) return SW_ENOMEM;
    }
    for (size_t i = 0; i < l->n_origins; i++) {
        const ledger_origin *o = &l->origins[i];
        uint64_t prefix = 0;
        while (prefix < o->prefix && o->pidx[prefix] < count)
            prefix++;
        /* Extras: steps above the new prefix whose index is below count. */
        size_t n_extra = 0;
        for (uint64_t s = prefix; s < o->prefix; s++)
            n_extra += o->pidx[s] < count;
        for (size_t j = 0; j < o->n_extra; j++)
            n_extra += o->xidx[j] < count;
        if (prefix == 0 && n_extra == 0) continue;
        sw_vv_origin *d = &v.o[v.n++];
        memcpy(d->origin, o->origin, SW_ID_BYTES);
        d->prefix = prefix;
        if (n_extra > 0) {
            d->extra = malloc(n_extra * sizeof(uint64_t));
            if (d->extra == NULL) {
                sw_vv_fini(&v);
                return SW_ENOMEM;
            }
            for (uint64_t s = prefix; s < o->prefix; s++)
                if (o->pidx[s] < count) d->extra[d->n_extra++] = s;
            for (size_t j = 0; j < o->n_extra; j++)
                if (o->xidx[j] < count) d->extra[d->n_extra++] = o->xstep[j];
        }
    }
    *out = v;
    return 0;
}

/* ---- version vectors ---- */

void sw_vv_fini(sw_vv *vv)
{
    if (vv == NULL) return;
    for (size_t i = 0; i < vv->n; i++)
        free(vv->o[i].extra);
    free(vv->o);
    vv->o = NULL;
    vv->n = 0;
}

int sw_vv_copy(const sw_vv *src, sw_vv *dst)
{
    sw_vv v = {0, NULL};
    if (src->n > 0) {
        v.o = calloc(src->n, sizeof(*v.o));
        if (v.o == NULL) return SW_ENOMEM;
    }
    for (size_t i = 0; i < src->n; i++) {
        v.o[i] = src->o[i];
        v.o[i].extra = NULL;
        v.o[i].n_extra = 0;
        v.n++;
        if (src->o[i].n_extra > 0) {
            v.o[i].extra = malloc(src->o[i].n_extra * sizeof(uint64_t));
            if (v.o[i].extra == NULL) {
                sw_vv_fini(&v);
                return SW_ENOMEM;
            }
            memcpy(v.o[i].extra, src->o[i].extra, src->o[i].n_extra * sizeof(uint64_t));
            v.o[i].n_extra = src->o[i].n_extra;
        }
    }
    *dst = v;
    return 0;
}

uint64_t sw_vv_total(const sw_vv *vv)
{
    uint64_t t = 0;
    for (size_t i = 0; i < vv->n; i++)
        t += vv->o[i].prefix + vv->o[i].n_extra;
    return t;
}

bool sw_vv_equal(const sw_vv *a, const sw_vv *b)
{
    if (a->n != b->n) return false;
    for (size_t i = 0; i < a->n; i++) {
        const sw_vv_origin *x = &a->o[i], *y = &b->o[i];
        if (memcmp(x->origin, y->origin, SW_ID_BYTES) != 0 || x->prefix != y->prefix ||
            x->n_extra != y->n_extra)
            return false;
        if (x->n_extra && memcmp(x->extra, y->extra, x->n_extra * sizeof(uint64_t)) != 0)
            return false;
    }
    return true;
}
