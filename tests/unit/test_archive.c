/*
 * archive: round trip across reopen, overlapping entries, coverage and
 * fetch checked against a brute-force step bitmap, fetch limits, every
 * truncation and every corrupt byte of a small file, hostile lengths with
 * valid checksums, another run, damage after open, short writes.
 */
#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>

#include "archive.h"
#include "fileio.h"

#define ENTRY_OVERHEAD 64 /* 48-byte head + 16-byte checksum (docs/state.md) */

typedef struct fixture {
    char dir[64];
    char path[128];
    uint8_t run_id[SW_ID_BYTES];
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/sw_test_archive_XXXXXX");
    if (mkdtemp(f->dir) == NULL) return -1;
    snprintf(f->path, sizeof f->path, "%s/archive", f->dir);
    for (int i = 0; i < SW_ID_BYTES; i++)
        f->run_id[i] = (uint8_t)(0x50 + i);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    unlink(f->path);
    rmdir(f->dir);
    free(f);
    return 0;
}

static void mkorigin(int k, uint8_t o[SW_ID_BYTES])
{
    for (int i = 0; i < SW_ID_BYTES; i++)
        o[i] = (uint8_t)(k * 37 + i * 3);
}

/* Payload naming its origin and steps, then a pattern: fetch results can be
 * identified and checked byte for byte. */
static void payload(int k, uint64_t fs, uint32_t n, size_t len, uint8_t *p)
{
    assert_true(len >= 13);
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(fs >> (8 * i));
    for (int i = 0; i < 4; i++)
        p[8 + i] = (uint8_t)(n >> (8 * i));
    p[12] = (uint8_t)k;
    for (size_t i = 13; i < len; i++)
        p[i] = (uint8_t)(fs * 131 + n * 7 + (uint64_t)k * 11 + i * 29);
}

static void add(sw_archive *a, int k, uint64_t fs, uint32_t n, size_t len)
{
    uint8_t o[SW_ID_BYTES], p[4096];
    assert_true(len <= sizeof p);
    mkorigin(k, o);
    payload(k, fs, n, len, p);
    sw_diag d = {{0}};
    int rc = sw_archive_append(a, o, fs, n, p, len, &d);
    if (rc != 0) fail_msg("append: %s", d.msg);
}

static sw_archive *open_ok(fixture *f, sw_archive_open_info *info)
{
    sw_archive *a = NULL;
    sw_diag d = {{0}};
    int rc = sw_archive_open(f->path, f->run_id, &a, info, &d);
    if (rc != 0) fail_msg("open: %s", d.msg);
    return a;
}

static off_t file_size(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_size;
}

static void read_all(const char *path, char **buf, size_t *len)
{
    sw_diag d;
    assert_int_equal(sw_file_read(path, 1 << 26, buf, len, &d), 0);
}

static void write_all(const char *path, const void *buf, size_t len)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(buf, 1, len, fp), len);
    fclose(fp);
}

/* ---- fetch collection ---- */

#define MAX_GOT 512

typedef struct got {
    size_t n;
    int k[MAX_GOT];
    uint64_t fs[MAX_GOT];
    uint32_t ns[MAX_GOT];
    size_t len[MAX_GOT];
    int fail_at; /* return SW_EIO on this call (-1: never) */
} got;

static int collect(void *ctx, const uint8_t *bytes, size_t len)
{
    got *g = ctx;
    if ((int)g->n == g->fail_at) return SW_EIO;
    assert_true(g->n < MAX_GOT);
    assert_true(len >= 13);
    uint64_t fs = 0;
    for (int i = 7; i >= 0; i--)
        fs = fs << 8 | bytes[i];
    uint32_t n = (uint32_t)bytes[8] | (uint32_t)bytes[9] << 8 | (uint32_t)bytes[10] << 16 |
                 (uint32_t)bytes[11] << 24;
    uint8_t want[4096];
    assert_true(len <= sizeof want);
    payload(bytes[12], fs, n, len, want);
    assert_memory_equal(bytes, want, len);
    g->k[g->n] = bytes[12];
    g->fs[g->n] = fs;
    g->ns[g->n] = n;
    g->len[g->n] = len;
    g->n++;
    return 0;
}

static size_t fetch(const sw_archive *a, int k, uint64_t fs, uint64_t max_steps, size_t max_entries,
                    size_t max_bytes, got *g)
{
    uint8_t o[SW_ID_BYTES];
    mkorigin(k, o);
    memset(g, 0, sizeof *g);
    g->fail_at = -1;
    size_t n = 999;
    sw_diag d = {{0}};
    int rc = sw_archive_fetch(a, o, fs, max_steps, max_entries, max_bytes, collect, g, &n, &d);
    if (rc != 0) fail_msg("fetch: %s", d.msg);
    assert_int_equal(n, g->n);
    for (size_t i = 0; i < g->n; i++)
        assert_int_equal(g->k[i], k);
    return n;
}

static bool covered(const sw_archive *a, int k, uint64_t fs, uint32_t n)
{
    uint8_t o[SW_ID_BYTES];
    mkorigin(k, o);
    return sw_archive_covered(a, o, fs, n);
}

static uint64_t prefix(const sw_archive *a, int k)
{
    uint8_t o[SW_ID_BYTES];
    mkorigin(k, o);
    return sw_archive_prefix(a, o);
}

/* ---- tests ---- */

static void test_round_trip(void **state)
{
    fixture *f = *state;
    sw_archive_open_info info;
    sw_archive *a = open_ok(f, &info);
    assert_true(info.created);
    assert_int_equal(info.entries, 0);
    assert_int_equal(info.size, SW_ARCHIVE_HEADER_BYTES);
    assert_int_equal(file_size(f->path), SW_ARCHIVE_HEADER_BYTES);
    add(a, 1, 0, 64, 100);
    add(a, 2, 0, 10, 20);
    add(a, 1, 64, 64, 200);
    add(a, 2, 30, 5, 17);
    assert_int_equal(sw_archive_count(a), 4);
    uint64_t want_size = SW_ARCHIVE_HEADER_BYTES + 4 * ENTRY_OVERHEAD + 100 + 20 + 200 + 17;
    assert_int_equal(file_size(f->path), want_size);
    sw_archive_close(a);

    a = open_ok(f, &info);
    assert_false(info.created);
    assert_int_equal(info.entries, 4);
    assert_int_equal(info.size, want_size);
    assert_int_equal(info.truncated_bytes, 0);
    assert_int_equal(sw_archive_count(a), 4);
    assert_int_equal(prefix(a, 1), 128);
    assert_int_equal(prefix(a, 2), 10);
    assert_int_equal(prefix(a, 3), 0);
    got g;
    assert_int_equal(fetch(a, 1, 0, 1000, 100, 1 << 20, &g), 2);
    assert_true(g.fs[0] == 0 && g.ns[0] == 64 && g.len[0] == 100);
    assert_true(g.fs[1] == 64 && g.ns[1] == 64 && g.len[1] == 200);
    assert_int_equal(fetch(a, 2, 0, 1000, 100, 1 << 20, &g), 1);
    assert_int_equal(fetch(a, 2, 32, 1000, 100, 1 << 20, &g), 1);
    assert_true(g.fs[0] == 30 && g.ns[0] == 5 && g.len[0] == 17);
    assert_int_equal(fetch(a, 3, 0, 1000, 100, 1 << 20, &g), 0);
    /* Appends after a reopen land after the old entries. */
    add(a, 2, 10, 20, 30);
    assert_int_equal(prefix(a, 2), 35);
    sw_archive_close(a);
    a = open_ok(f, &info);
    assert_int_equal(info.entries, 5);
    assert_int_equal(info.truncated_bytes, 0);
    assert_int_equal(prefix(a, 2), 35);
    assert_int_equal(fetch(a, 2, 0, 1000, 100, 1 << 20, &g), 3);
    assert_true(g.fs[0] == 0 && g.fs[1] == 10 && g.fs[2] == 30);
    sw_archive_close(a);
}

static void test_overlap(void **state)
{
    fixture *f = *state;
    sw_archive *a = open_ok(f, NULL);
    add(a, 1, 0, 64, 40);  /* A */
    add(a, 1, 32, 64, 41); /* B */
    add(a, 1, 64, 64, 42); /* C */
    add(a, 1, 0, 64, 43);  /* A again (re-signed after a crash) */
    assert_int_equal(sw_archive_count(a), 4);
    assert_int_equal(prefix(a, 1), 128);
    assert_true(covered(a, 1, 0, 128));
    assert_true(covered(a, 1, 40, 60));
    assert_false(covered(a, 1, 100, 29));
    got g;
    /* From 0: A (or its copy) reaches 64, then C reaches 128. */
    assert_int_equal(fetch(a, 1, 0, 1000, 100, 1 << 20, &g), 2);
    assert_true(g.fs[0] == 0 && g.fs[1] == 64);
    /* From 40: B (end 96) beats A (end 64); then C. */
    assert_int_equal(fetch(a, 1, 40, 1000, 100, 1 << 20, &g), 2);
    assert_true(g.fs[0] == 32 && g.fs[1] == 64);
    /* From 40 for 20 steps: B alone covers it. */
    assert_int_equal(fetch(a, 1, 40, 20, 100, 1 << 20, &g), 1);
    assert_true(g.fs[0] == 32);
    assert_int_equal(fetch(a, 1, 127, 1000, 100, 1 << 20, &g), 1);
    assert_int_equal(fetch(a, 1, 128, 1000, 100, 1 << 20, &g), 0);
    /* A big entry over everything: it alone is chosen. */
    add(a, 1, 0, SW_ARCHIVE_MAX_STEPS, 44);
    assert_int_equal(prefix(a, 1), SW_ARCHIVE_MAX_STEPS);
    assert_int_equal(fetch(a, 1, 5, 2000, 100, 1 << 20, &g), 1);
    assert_true(g.fs[0] == 0 && g.ns[0] == SW_ARCHIVE_MAX_STEPS);
    /* Window edge: an entry starting at the last step the big one holds. */
    add(a, 1, SW_ARCHIVE_MAX_STEPS - 1, 2, 45);
    assert_int_equal(prefix(a, 1), SW_ARCHIVE_MAX_STEPS + 1);
    assert_true(covered(a, 1, SW_ARCHIVE_MAX_STEPS, 1));
    assert_int_equal(fetch(a, 1, SW_ARCHIVE_MAX_STEPS, 10, 100, 1 << 20, &g), 1);
    assert_true(g.fs[0] == SW_ARCHIVE_MAX_STEPS - 1);
    sw_archive_close(a);
}

static void test_coverage(void **state)
{
    fixture *f = *state;
    sw_archive *a = open_ok(f, NULL);
    add(a, 1, 20, 10, 20);
    assert_int_equal(prefix(a, 1), 0);
    add(a, 1, 0, 10, 20);
    assert_int_equal(prefix(a, 1), 10);
    assert_true(covered(a, 1, 0, 10));
    assert_true(covered(a, 1, 5, 5));
    assert_false(covered(a, 1, 5, 6));
    assert_false(covered(a, 1, 10, 10));
    assert_true(covered(a, 1, 25, 5));
    assert_false(covered(a, 1, 25, 6));
    assert_false(covered(a, 1, 0, 30));
    assert_false(covered(a, 2, 0, 1));
    assert_false(covered(a, 1, UINT64_MAX - 3, 10));
    /* Filling the gap joins the prefix to the later entry. */
    add(a, 1, 10, 10, 20);
    assert_int_equal(prefix(a, 1), 30);
    assert_true(covered(a, 1, 0, 30));
    assert_false(covered(a, 1, 0, 31));
    assert_int_equal(prefix(a, 2), 0);
    /* Steps near the top of the range. */
    add(a, 2, UINT64_MAX - 10, 10, 20);
    assert_true(covered(a, 2, UINT64_MAX - 10, 10));
    assert_false(covered(a, 2, UINT64_MAX - 10, 11));
    assert_int_equal(prefix(a, 2), 0);
    sw_archive_close(a);
}

static void test_fetch_gap(void **state)
{
    fixture *f = *state;
    sw_archive *a = open_ok(f, NULL);
    add(a, 1, 0, 10, 20);
    add(a, 1, 20, 10, 20);
    got g;
    assert_int_equal(fetch(a, 1, 10, 1000, 100, 1 << 20, &g), 0);
    assert_int_equal(fetch(a, 1, 12, 1000, 100, 1 << 20, &g), 0);
    assert_int_equal(fetch(a, 1, 19, 1000, 100, 1 << 20, &g), 0);
    assert_int_equal(fetch(a, 1, 30, 1000, 100, 1 << 20, &g), 0);
    assert_int_equal(fetch(a, 1, 25, 1000, 100, 1 << 20, &g), 1);
    /* Stops at the gap. */
    assert_int_equal(fetch(a, 1, 3, 1000, 100, 1 << 20, &g), 1);
    assert_true(g.fs[0] == 0);
    /* n_out may be NULL. */
    uint8_t o[SW_ID_BYTES];
    mkorigin(1, o);
    memset(&g, 0, sizeof g);
    g.fail_at = -1;
    sw_diag d;
    assert_int_equal(sw_archive_fetch(a, o, 0, 100, 10, 1 << 20, collect, &g, NULL, &d), 0);
    assert_int_equal(g.n, 1);
    sw_archive_close(a);
}

static void test_fetch_limits(void **state)
{
    fixture *f = *state;
    sw_archive *a = open_ok(f, NULL);
    for (uint64_t s = 0; s < 100; s += 10)
        add(a, 1, s, 10, 100);
    got g;
    assert_int_equal(fetch(a, 1, 0, 1000, 100, 1 << 20, &g), 10);
    for (size_t i = 0; i < 10; i++)
        assert_true(g.fs[i] == 10 * i);
    assert_int_equal(fetch(a, 1, 0, 1000, 3, 1 << 20, &g), 3);
    assert_int_equal(fetch(a, 1, 0, 1000, 0, 1 << 20, &g), 0);
    assert_int_equal(fetch(a, 1, 0, 1000, 100, 250, &g), 2);
    assert_int_equal(fetch(a, 1, 0, 1000, 100, 300, &g), 3);
    assert_int_equal(fetch(a, 1, 0, 1000, 100, 99, &g), 0);
    assert_int_equal(fetch(a, 1, 0, 25, 100, 1 << 20, &g), 3);
    assert_int_equal(fetch(a, 1, 0, 20, 100, 1 << 20, &g), 2);
    assert_int_equal(fetch(a, 1, 0, 1, 100, 1 << 20, &g), 1);
    assert_int_equal(fetch(a, 1, 0, 0, 100, 1 << 20, &g), 0);
    assert_int_equal(fetch(a, 1, 15, 10, 100, 1 << 20, &g), 2);
    assert_true(g.fs[0] == 10 && g.fs[1] == 20);
    assert_int_equal(fetch(a, 1, 95, UINT64_MAX, SIZE_MAX, SIZE_MAX, &g), 1);
    assert_true(g.fs[0] == 90);
    /* A callback's error stops the fetch and is returned. */
    uint8_t o[SW_ID_BYTES];
    mkorigin(1, o);
    memset(&g, 0, sizeof g);
    g.fail_at = 2;
    size_t n = 999;
    sw_diag d = {{0}};
    assert_int_equal(sw_archive_fetch(a, o, 0, 1000, 100, 1 << 20, collect, &g, &n, &d), SW_EIO);
    assert_int_equal(n, 2);
    assert_non_null(strstr(d.msg, f->path));
    sw_archive_close(a);
}

/* Three entries; off[i] = offset of entry i, off[3] = end. */
static void build_three(fixture *f, size_t off[4])
{
    unlink(f->path);
    sw_archive *a = open_ok(f, NULL);
    off[0] = (size_t)file_size(f->path);
    add(a, 1, 0, 4, 13);
    off[1] = (size_t)file_size(f->path);
    add(a, 2, 7, 3, 20);
    off[2] = (size_t)file_size(f->path);
    add(a, 1, 4, 4, 14);
    off[3] = (size_t)file_size(f->path);
    sw_archive_close(a);
    assert_int_equal(off[0], SW_ARCHIVE_HEADER_BYTES);
    assert_int_equal(off[1] - off[0], ENTRY_OVERHEAD + 13);
    assert_int_equal(off[2] - off[1], ENTRY_OVERHEAD + 20);
    assert_int_equal(off[3] - off[2], ENTRY_OVERHEAD + 14);
}

/* The archive holds exactly the first k entries of build_three. */
static void check_first(const sw_archive *a, size_t k)
{
    got g;
    assert_int_equal(sw_archive_count(a), k);
    assert_int_equal(fetch(a, 1, 0, 100, 100, 1 << 20, &g), k == 0 ? 0 : k < 3 ? 1 : 2);
    assert_int_equal(fetch(a, 2, 7, 100, 100, 1 << 20, &g), k >= 2);
    assert_int_equal(prefix(a, 1), k == 0 ? 0 : k < 3 ? 4 : 8);
}

static void test_every_truncation(void **state)
{
    fixture *f = *state;
    size_t off[4];
    build_three(f, off);
    char *full;
    size_t len;
    read_all(f->path, &full, &len);
    assert_int_equal(len, off[3]);
    for (size_t cut = 0; cut <= len; cut++) {
        write_all(f->path, full, cut);
        sw_archive *a = NULL;
        sw_archive_open_info info;
        sw_diag d = {{0}};
        int rc = sw_archive_open(f->path, f->run_id, &a, &info, &d);
        if (cut < SW_ARCHIVE_HEADER_BYTES) {
            assert_int_equal(rc, SW_ETRUNCATED);
            assert_non_null(strstr(d.msg, f->path));
            assert_null(a);
            continue;
        }
        if (rc != 0) fail_msg("cut %zu: %s", cut, d.msg);
        size_t k = 0;
        while (k < 3 && off[k + 1] <= cut)
            k++;
        assert_int_equal(info.entries, k);
        assert_int_equal(info.size, off[k]);
        assert_int_equal(info.truncated_bytes, cut - off[k]);
        assert_int_equal(file_size(f->path), off[k]);
        check_first(a, k);
        sw_archive_close(a);
    }
    /* After a cut, appends continue at the boundary and survive a reopen. */
    write_all(f->path, full, off[2] + 30);
    sw_archive *a = open_ok(f, NULL);
    add(a, 1, 4, 4, 14);
    sw_archive_close(a);
    sw_archive_open_info info;
    a = open_ok(f, &info);
    assert_int_equal(info.truncated_bytes, 0);
    check_first(a, 3);
    sw_archive_close(a);
    free(full);
}

static void test_corrupt_byte(void **state)
{
    fixture *f = *state;
    size_t off[4];
    build_three(f, off);
    char *full;
    size_t len;
    read_all(f->path, &full, &len);
    for (size_t at = off[0]; at < len; at++) {
        for (int flip = 1; flip <= 0x80; flip <<= 3) {
            full[at] ^= (char)flip;
            write_all(f->path, full, len);
            full[at] ^= (char)flip;
            size_t k = 0;
            while (off[k + 1] <= at)
                k++;
            sw_archive_open_info info;
            sw_archive *a = open_ok(f, &info);
            assert_int_equal(info.entries, k);
            assert_int_equal(info.truncated_bytes, len - off[k]);
            assert_int_equal(file_size(f->path), off[k]);
            check_first(a, k);
            sw_archive_close(a);
        }
    }
    /* A bad header is an error, not a truncation. */
    for (size_t at = 0; at < SW_ARCHIVE_HEADER_BYTES; at += 7) {
        full[at] ^= 0x10;
        write_all(f->path, full, len);
        full[at] ^= 0x10;
        sw_archive *a = NULL;
        sw_diag d = {{0}};
        int rc = sw_archive_open(f->path, f->run_id, &a, NULL, &d);
        assert_true(rc == SW_EFORMAT || rc == SW_EMISMATCH);
        assert_null(a);
        assert_int_equal(file_size(f->path), len);
    }
    free(full);
}

static void test_other_run(void **state)
{
    fixture *f = *state;
    sw_archive *a = open_ok(f, NULL);
    add(a, 1, 0, 4, 20);
    sw_archive_close(a);
    off_t size = file_size(f->path);
    uint8_t other[SW_ID_BYTES];
    memcpy(other, f->run_id, SW_ID_BYTES);
    other[31] ^= 1;
    sw_diag d = {{0}};
    a = NULL;
    assert_int_equal(sw_archive_open(f->path, other, &a, NULL, &d), SW_EMISMATCH);
    assert_null(a);
    assert_non_null(strstr(d.msg, f->path));
    assert_non_null(strstr(d.msg, "run"));
    assert_int_equal(file_size(f->path), size);
    /* Not an archive at all. */
    char junk[SW_ARCHIVE_HEADER_BYTES + 10];
    memset(junk, 'x', sizeof junk);
    write_all(f->path, junk, sizeof junk);
    assert_int_equal(sw_archive_open(f->path, f->run_id, &a, NULL, &d), SW_EFORMAT);
    assert_non_null(strstr(d.msg, f->path));
}

/* An entry with arbitrary header fields and a correct checksum. */
static size_t raw_entry(uint8_t *out, uint32_t len_field, int k, uint64_t fs, uint32_t n,
                        size_t payload_len)
{
    uint8_t o[SW_ID_BYTES];
    mkorigin(k, o);
    for (int i = 0; i < 4; i++)
        out[i] = (uint8_t)(len_field >> (8 * i));
    memcpy(out + 4, o, SW_ID_BYTES);
    for (int i = 0; i < 8; i++)
        out[36 + i] = (uint8_t)(fs >> (8 * i));
    for (int i = 0; i < 4; i++)
        out[44 + i] = (uint8_t)(n >> (8 * i));
    if (payload_len >= 13)
        payload(k, fs, n, payload_len, out + 48);
    else
        memset(out + 48, 0x5a, payload_len);
    crypto_generichash(out + 48 + payload_len, 16, out, 48 + payload_len, NULL, 0);
    return 48 + payload_len + 16;
}

static void test_hostile_lengths(void **state)
{
    fixture *f = *state;
    assert_true(sodium_init() >= 0);
    size_t off[4];
    build_three(f, off);
    char *full;
    size_t len;
    read_all(f->path, &full, &len);
    /* header + entry 0, then the crafted entry, then entry 1 again. */
    const size_t good = off[1];
    const size_t big = SW_ARCHIVE_MAX_ENTRY + 1 + 64;
    uint8_t *buf = malloc(good + big + 200);
    assert_non_null(buf);
    struct {
        uint32_t len_field;
        uint64_t fs;
        uint32_t n;
        size_t payload_len;
        bool valid;
    } cases[] = {
        {20, 100, 5, 20, true}, /* control: the builder makes valid entries */
        {SW_ARCHIVE_MAX_ENTRY, 100, 5, SW_ARCHIVE_MAX_ENTRY, true},
        {SW_ARCHIVE_MAX_ENTRY + 1, 100, 5, SW_ARCHIVE_MAX_ENTRY + 1, false},
        {UINT32_MAX, 100, 5, 40, false},
        {0, 100, 5, 0, false},
        {20, 100, 0, 20, false},
        {20, 100, SW_ARCHIVE_MAX_STEPS + 1, 20, false},
        {20, 100, SW_ARCHIVE_MAX_STEPS, 20, true},
        {20, UINT64_MAX - 1, 2, 20, false},
        {20, UINT64_MAX - 2, 2, 20, true},
        {30, 100, 5, 20, false}, /* len says more than there is before the checksum */
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        memcpy(buf, full, good);
        size_t n = good;
        n += raw_entry(buf + n, cases[c].len_field, 3, cases[c].fs, cases[c].n,
                       cases[c].payload_len);
        memcpy(buf + n, full + off[1], off[2] - off[1]);
        n += off[2] - off[1];
        write_all(f->path, buf, n);
        sw_archive_open_info info;
        sw_archive *a = open_ok(f, &info);
        if (cases[c].valid) {
            assert_int_equal(info.entries, 3);
            assert_int_equal(info.truncated_bytes, 0);
            assert_true(covered(a, 3, cases[c].fs, cases[c].n));
        } else {
            assert_int_equal(info.entries, 1);
            assert_int_equal(info.truncated_bytes, n - good);
            assert_int_equal(file_size(f->path), good);
            assert_false(covered(a, 3, cases[c].fs, 1));
        }
        sw_archive_close(a);
    }
    free(buf);
    free(full);

    /* The same bounds refuse an append, writing nothing. */
    unlink(f->path);
    sw_archive *a = open_ok(f, NULL);
    off_t size = file_size(f->path);
    uint8_t o[SW_ID_BYTES];
    mkorigin(1, o);
    uint8_t *p = calloc(1, SW_ARCHIVE_MAX_ENTRY + 1);
    assert_non_null(p);
    sw_diag d = {{0}};
    assert_int_equal(sw_archive_append(a, o, 0, 1, p, SW_ARCHIVE_MAX_ENTRY + 1, &d), SW_EINVAL);
    assert_non_null(strstr(d.msg, f->path));
    assert_int_equal(sw_archive_append(a, o, 0, 1, p, 0, &d), SW_EINVAL);
    assert_int_equal(sw_archive_append(a, o, 0, 0, p, 10, &d), SW_EINVAL);
    assert_int_equal(sw_archive_append(a, o, 0, SW_ARCHIVE_MAX_STEPS + 1, p, 10, &d), SW_EINVAL);
    assert_int_equal(sw_archive_append(a, o, UINT64_MAX, 1, p, 10, &d), SW_EINVAL);
    assert_int_equal(file_size(f->path), size);
    assert_int_equal(sw_archive_count(a), 0);
    assert_int_equal(sw_archive_append(a, o, 0, SW_ARCHIVE_MAX_STEPS, p, SW_ARCHIVE_MAX_ENTRY, &d),
                     0);
    assert_int_equal(file_size(f->path), size + ENTRY_OVERHEAD + SW_ARCHIVE_MAX_ENTRY);
    free(p);
    sw_archive_close(a);
}

static void test_damaged_since_open(void **state)
{
    fixture *f = *state;
    size_t off[4];
    build_three(f, off);
    sw_archive *a = open_ok(f, NULL);
    FILE *fp = fopen(f->path, "r+b");
    assert_non_null(fp);
    assert_int_equal(fseek(fp, (long)off[1] + 50, SEEK_SET), 0);
    assert_int_equal(fputc('!', fp), '!');
    fclose(fp);
    uint8_t o[SW_ID_BYTES];
    mkorigin(2, o);
    got g;
    memset(&g, 0, sizeof g);
    g.fail_at = -1;
    size_t n = 999;
    sw_diag d = {{0}};
    assert_int_equal(sw_archive_fetch(a, o, 7, 10, 10, 1 << 20, collect, &g, &n, &d), SW_EFORMAT);
    assert_int_equal(n, 0);
    assert_int_equal(g.n, 0);
    char where[64];
    snprintf(where, sizeof where, "offset %zu", off[1]);
    assert_non_null(strstr(d.msg, where));
    assert_non_null(strstr(d.msg, f->path));
    /* The other entries still read. */
    assert_int_equal(fetch(a, 1, 0, 100, 100, 1 << 20, &g), 2);
    /* Cut short behind the archive's back. */
    assert_int_equal(truncate(f->path, (off_t)off[2] + 10), 0);
    mkorigin(1, o);
    assert_int_equal(sw_archive_fetch(a, o, 0, 10, 10, 1 << 20, collect, &g, &n, &d), SW_EFORMAT);
    assert_int_equal(n, 1);
    snprintf(where, sizeof where, "offset %zu", off[2]);
    assert_non_null(strstr(d.msg, where));
    sw_archive_close(a);
}

static void test_short_write(void **state)
{
    fixture *f = *state;
    sw_archive *a = open_ok(f, NULL);
    add(a, 1, 0, 4, 20);
    off_t size = file_size(f->path);
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    struct rlimit old, lim;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    /* Room for 30 of the entry's bytes: a short write. */
    lim.rlim_cur = (rlim_t)size + 30;
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    uint8_t o[SW_ID_BYTES], p[100];
    mkorigin(1, o);
    payload(1, 4, 4, sizeof p, p);
    sw_diag d = {{0}};
    int rc = sw_archive_append(a, o, 4, 4, p, sizeof p, &d);
    /* No room at all: the write fails outright. */
    lim.rlim_cur = (rlim_t)size;
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    sw_diag d2 = {{0}};
    int rc2 = sw_archive_append(a, o, 4, 4, p, sizeof p, &d2);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, old_handler);
    assert_int_equal(rc, SW_EIO);
    assert_non_null(strstr(d.msg, f->path));
    assert_true(rc2 < 0);
    assert_int_equal(file_size(f->path), size);
    assert_int_equal(sw_archive_count(a), 1);
    assert_false(covered(a, 1, 4, 1));
    /* The archive goes on from where it was. */
    add(a, 1, 4, 4, 100);
    assert_int_equal(prefix(a, 1), 8);
    sw_archive_close(a);
    sw_archive_open_info info;
    a = open_ok(f, &info);
    assert_int_equal(info.entries, 2);
    assert_int_equal(info.truncated_bytes, 0);
    sw_archive_close(a);
}

/* ---- random entries against a brute-force bitmap ---- */

#define SPAN 3000

typedef struct interval {
    uint64_t fs;
    uint32_t n;
} interval;

static uint64_t rng_state;
static uint32_t rnd(uint32_t n)
{
    rng_state = rng_state * 6364136223846793005u + 1442695040888963407u;
    return (uint32_t)(rng_state >> 33) % n;
}

/* Fewest intervals covering [fs, r) when starting at fs, by rounds over all
 * intervals (no sorting, no window). */
static size_t min_cover(const interval *iv, size_t m, uint64_t fs, uint64_t r)
{
    uint64_t reach = fs;
    for (size_t k = 1; k <= m; k++) {
        uint64_t next = reach;
        for (size_t i = 0; i < m; i++) {
            bool ok = k == 1 ? iv[i].fs <= fs && fs < iv[i].fs + iv[i].n : iv[i].fs <= reach;
            if (ok && iv[i].fs + iv[i].n > next) next = iv[i].fs + iv[i].n;
        }
        if (next >= r) return k;
        if (next == reach) break;
        reach = next;
    }
    fail_msg("min_cover: %" PRIu64 " not reachable", r);
    return 0;
}

static void check_against_bitmap(const sw_archive *a, const interval *iv, size_t m, const bool *bit)
{
    uint64_t pre = 0;
    while (pre < SPAN && bit[pre])
        pre++;
    assert_int_equal(prefix(a, 1), pre);
    for (int q = 0; q < 300; q++) {
        uint64_t fs = rnd(SPAN - 400);
        uint32_t n = 1 + rnd(q < 150 ? 40 : 400);
        bool want = true;
        for (uint64_t s = fs; s < fs + n; s++)
            want = want && bit[s];
        assert_int_equal(covered(a, 1, fs, n), want);
    }
    for (int q = 0; q < 100; q++) {
        uint64_t fs = rnd(SPAN - 1200);
        uint64_t max_steps = 1 + rnd(600);
        uint64_t target = fs + max_steps;
        got g;
        size_t n = fetch(a, 1, fs, max_steps, SIZE_MAX, SIZE_MAX, &g);
        if (!bit[fs]) {
            assert_int_equal(n, 0);
            continue;
        }
        uint64_t run_end = fs;
        while (bit[run_end])
            run_end++;
        uint64_t r = run_end < target ? run_end : target;
        assert_true(n >= 1);
        assert_true(g.fs[0] <= fs && fs < g.fs[0] + g.ns[0]);
        uint64_t end = g.fs[0] + g.ns[0];
        for (size_t i = 1; i < n; i++) {
            assert_true(end < target);
            assert_true(g.fs[i] <= end);
            assert_true(g.fs[i] + g.ns[i] > end);
            end = g.fs[i] + g.ns[i];
        }
        assert_true(end >= r);
        assert_true(end <= run_end);
        assert_int_equal(n, min_cover(iv, m, fs, r));
    }
}

static void test_random_against_bitmap(void **state)
{
    fixture *f = *state;
    for (uint64_t seed = 1; seed <= 3; seed++) {
        rng_state = seed;
        unlink(f->path);
        sw_archive *a = open_ok(f, NULL);
        static interval iv[400];
        static bool bit[SPAN + 1];
        memset(bit, 0, sizeof bit);
        size_t m = 0;
        for (int i = 0; i < 300; i++) {
            uint32_t n = rnd(20) == 0 ? 1 + rnd(SW_ARCHIVE_MAX_STEPS) : 1 + rnd(48);
            uint64_t fs = rnd(SPAN - SW_ARCHIVE_MAX_STEPS - 1);
            /* Mostly in order from 0, as a swarm fills the archive. */
            if (rnd(3) != 0) fs = (uint64_t)i * 2400 / 300;
            iv[m++] = (interval){fs, n};
            for (uint64_t s = fs; s < fs + n; s++)
                bit[s] = true;
            add(a, 1, fs, n, 13 + rnd(50));
            add(a, 2, fs + 1, n, 13); /* another origin, shifted */
            if (i % 60 == 59) check_against_bitmap(a, iv, m, bit);
        }
        sw_archive_close(a);
        /* The index rebuilt by the scan answers the same. */
        sw_archive_open_info info;
        a = open_ok(f, &info);
        assert_int_equal(info.entries, 2 * m);
        assert_int_equal(info.truncated_bytes, 0);
        check_against_bitmap(a, iv, m, bit);
        sw_archive_close(a);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_overlap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_coverage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fetch_gap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fetch_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_every_truncation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_byte, setup, teardown),
        cmocka_unit_test_setup_teardown(test_other_run, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hostile_lengths, setup, teardown),
        cmocka_unit_test_setup_teardown(test_damaged_since_open, setup, teardown),
        cmocka_unit_test_setup_teardown(test_short_write, setup, teardown),
        cmocka_unit_test_setup_teardown(test_random_against_bitmap, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
