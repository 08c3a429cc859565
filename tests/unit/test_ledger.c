/*
 * ledger: append and reopen, torn tails at every byte offset, corruption in
 * the middle, another run's ledger, version vectors with gaps, duplicates.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "fileio.h"
#include "ledger.h"

typedef struct fixture {
    char dir[64];
    char path[128];
    uint8_t run_id[SW_ID_BYTES];
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/sw_test_ledger_XXXXXX");
    if (mkdtemp(f->dir) == NULL) return -1;
    snprintf(f->path, sizeof f->path, "%s/ledger", f->dir);
    for (int i = 0; i < SW_ID_BYTES; i++)
        f->run_id[i] = (uint8_t)(0xa0 + i);
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

static sw_update mk(int origin, uint64_t step)
{
    sw_update u;
    memset(&u, 0, sizeof u);
    for (int i = 0; i < SW_ID_BYTES; i++)
        u.origin[i] = (uint8_t)(origin * 31 + i);
    u.step = step;
    u.q = (int8_t)((int)(step * 7 + (uint64_t)origin) % 255 - 127);
    u.scale = 0.001f * (float)(1 + (step % 13));
    return u;
}

static void assert_update_equal(const sw_update *a, const sw_update *b)
{
    assert_memory_equal(a->origin, b->origin, SW_ID_BYTES);
    assert_true(a->step == b->step);
    assert_int_equal(a->q, b->q);
    assert_memory_equal(&a->scale, &b->scale, sizeof(float));
}

static sw_ledger *open_ok(fixture *f, bool readonly, sw_ledger_open_info *info)
{
    sw_ledger *l = NULL;
    sw_diag d = {{0}};
    int rc = sw_ledger_open(f->path, f->run_id, readonly, &l, info, &d);
    if (rc != 0) fail_msg("open: %s", d.msg);
    return l;
}

static off_t file_size(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_size;
}

static void read_file(const char *path, char **buf, size_t *len)
{
    sw_diag d;
    assert_int_equal(sw_file_read(path, 1 << 26, buf, len, &d), 0);
}

static void write_file(const char *path, const char *buf, size_t len)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(buf, 1, len, fp), len);
    fclose(fp);
}

static void test_append_and_reopen(void **state)
{
    fixture *f = *state;
    sw_ledger_open_info info;
    sw_ledger *l = open_ok(f, false, &info);
    assert_true(info.created);
    assert_int_equal(info.n_updates, 0);
    assert_int_equal(file_size(f->path), SW_LEDGER_HEADER_BYTES);
    sw_update u[5] = {mk(1, 0), mk(1, 1), mk(2, 0), mk(1, 2), mk(2, 1)};
    sw_diag d;
    assert_int_equal(sw_ledger_append(l, u, 2, &d), 0);
    assert_int_equal(sw_ledger_append(l, u + 2, 3, &d), 0);
    assert_int_equal(sw_ledger_count(l), 5);
    sw_ledger_close(l);

    l = open_ok(f, false, &info);
    assert_false(info.created);
    assert_int_equal(info.n_updates, 5);
    assert_int_equal(info.n_records, 2);
    assert_int_equal(info.truncated_bytes, 0);
    sw_update back[8];
    size_t got;
    assert_int_equal(sw_ledger_read(l, 0, back, 8, &got, &d), 0);
    assert_int_equal(got, 5);
    for (int i = 0; i < 5; i++)
        assert_update_equal(&back[i], &u[i]);
    assert_int_equal(sw_ledger_read(l, 3, back, 8, &got, &d), 0);
    assert_int_equal(got, 2);
    assert_update_equal(&back[0], &u[3]);
    assert_int_equal(sw_ledger_read(l, 5, back, 8, &got, &d), 0);
    assert_int_equal(got, 0);
    assert_true(sw_ledger_has(l, u[3].origin, 2));
    assert_false(sw_ledger_has(l, u[3].origin, 3));
    assert_int_equal(sw_ledger_next_step(l, u[0].origin), 3);
    assert_int_equal(sw_ledger_next_step(l, u[2].origin), 2);
    sw_update other = mk(9, 0);
    assert_int_equal(sw_ledger_next_step(l, other.origin), 0);
    assert_int_equal(sw_ledger_prefix(l, other.origin), 0);
    assert_int_equal(sw_ledger_origin_count(l), 2);
    sw_update g;
    uint64_t idx;
    assert_int_equal(sw_ledger_get(l, u[4].origin, 1, &g, &idx, &d), 0);
    assert_update_equal(&g, &u[4]);
    assert_int_equal(idx, 4);
    assert_int_equal(sw_ledger_get(l, u[4].origin, 7, &g, &idx, &d), SW_ENOTFOUND);

    /* Duplicates: already held, or twice in one batch; nothing is written. */
    off_t size = file_size(f->path);
    assert_int_equal(sw_ledger_append(l, &u[1], 1, &d), SW_EEXIST);
    assert_non_null(strstr(d.msg, "already held"));
    sw_update twice[2] = {mk(3, 0), mk(3, 0)};
    assert_int_equal(sw_ledger_append(l, twice, 2, &d), SW_EEXIST);
    assert_non_null(strstr(d.msg, "twice"));
    assert_int_equal(file_size(f->path), size);
    assert_int_equal(sw_ledger_count(l), 5);
    sw_ledger_close(l);
}

/* Three records: 1 update, 3 updates, 2 updates.  Returns record offsets. */
static void build_three(fixture *f, size_t off[4])
{
    unlink(f->path);
    sw_ledger *l = open_ok(f, false, NULL);
    sw_update a[1] = {mk(1, 0)};
    sw_update b[3] = {mk(1, 1), mk(2, 0), mk(1, 2)};
    sw_update c[2] = {mk(2, 1), mk(3, 5)};
    sw_diag d;
    off[0] = (size_t)file_size(f->path);
    assert_int_equal(sw_ledger_append(l, a, 1, &d), 0);
    off[1] = (size_t)file_size(f->path);
    assert_int_equal(sw_ledger_append(l, b, 3, &d), 0);
    off[2] = (size_t)file_size(f->path);
    assert_int_equal(sw_ledger_append(l, c, 2, &d), 0);
    off[3] = (size_t)file_size(f->path);
    sw_ledger_close(l);
}

static void test_torn_tail_every_offset(void **state)
{
    fixture *f = *state;
    size_t off[4];
    build_three(f, off);
    char *full;
    size_t len;
    read_file(f->path, &full, &len);
    assert_int_equal(len, off[3]);
    for (size_t cut = off[2] + 1; cut < off[3]; cut++) {
        write_file(f->path, full, cut);
        sw_ledger_open_info info;
        sw_ledger *l = open_ok(f, false, &info);
        assert_int_equal(info.truncated_bytes, cut - off[2]);
        assert_int_equal(info.n_updates, 4);
        assert_int_equal(sw_ledger_count(l), 4);
        assert_int_equal(file_size(f->path), off[2]);
        /* Appending resumes at the boundary, and the update survives. */
        sw_update again = mk(2, 1);
        sw_diag d;
        assert_int_equal(sw_ledger_append(l, &again, 1, &d), 0);
        sw_ledger_close(l);
        l = open_ok(f, false, &info);
        assert_int_equal(info.truncated_bytes, 0);
        assert_int_equal(sw_ledger_count(l), 5);
        sw_update back;
        size_t got;
        assert_int_equal(sw_ledger_read(l, 4, &back, 1, &got, &d), 0);
        assert_update_equal(&back, &again);
        sw_ledger_close(l);
    }
    /* A complete-length last record whose bytes did not all reach the disk
     * (garbage or zeros anywhere in it) is a torn tail too. */
    for (size_t pos = off[2]; pos < off[3]; pos += 7) {
        char *copy = malloc(len);
        memcpy(copy, full, len);
        copy[pos] ^= 0x5a;
        write_file(f->path, copy, len);
        free(copy);
        sw_ledger_open_info info;
        sw_ledger *l = open_ok(f, false, &info);
        assert_int_equal(info.truncated_bytes, off[3] - off[2]);
        assert_int_equal(sw_ledger_count(l), 4);
        sw_ledger_close(l);
    }
    /* The file grew by zeros past the last record (size updated, data not). */
    char *zeros = calloc(1, len + 300);
    memcpy(zeros, full, len);
    write_file(f->path, zeros, len + 300);
    free(zeros);
    sw_ledger_open_info info;
    sw_ledger *l = open_ok(f, false, &info);
    assert_int_equal(info.truncated_bytes, 300);
    assert_int_equal(sw_ledger_count(l), 6);
    sw_ledger_close(l);
    free(full);
}

static void test_readonly_ignores_torn_tail(void **state)
{
    fixture *f = *state;
    size_t off[4];
    build_three(f, off);
    assert_int_equal(truncate(f->path, (off_t)off[3] - 3), 0);
    sw_ledger_open_info info;
    sw_ledger *l = open_ok(f, true, &info);
    assert_int_equal(info.truncated_bytes, off[3] - 3 - off[2]);
    assert_int_equal(sw_ledger_count(l), 4);
    assert_int_equal(file_size(f->path), off[3] - 3); /* untouched */
    sw_update u = mk(7, 0);
    sw_diag d;
    assert_int_equal(sw_ledger_append(l, &u, 1, &d), SW_EACCES);
    sw_ledger_close(l);
    /* A read-only open of a missing ledger does not create it. */
    unlink(f->path);
    sw_ledger *l2 = NULL;
    assert_int_equal(sw_ledger_open(f->path, f->run_id, true, &l2, NULL, &d), SW_ENOENT);
    assert_int_equal(access(f->path, F_OK), -1);
}

static void test_corruption_in_the_middle(void **state)
{
    fixture *f = *state;
    size_t off[4];
    build_three(f, off);
    char *full;
    size_t len;
    read_file(f->path, &full, &len);
    /* Every byte of the first two records, flipped, is an error naming the
     * record's offset; the file is left as it was. */
    for (int r = 0; r < 2; r++) {
        for (size_t pos = off[r]; pos < off[r + 1]; pos++) {
            char *copy = malloc(len);
            memcpy(copy, full, len);
            copy[pos] ^= 0x01;
            write_file(f->path, copy, len);
            free(copy);
            sw_ledger *l = NULL;
            sw_diag d = {{0}};
            int rc = sw_ledger_open(f->path, f->run_id, false, &l, NULL, &d);
            if (rc == 0) fail_msg("flipped byte %zu (record %d) was accepted", pos, r);
            assert_int_equal(rc, SW_EFORMAT);
            char want[64];
            snprintf(want, sizeof want, "corrupt record at offset %zu ", off[r]);
            if (strstr(d.msg, want) == NULL || strstr(d.msg, f->path) == NULL)
                fail_msg("byte %zu: diag '%s'", pos, d.msg);
            assert_int_equal(file_size(f->path), len);
        }
    }
    /* Header damage. */
    char *copy = malloc(len);
    memcpy(copy, full, len);
    copy[20] ^= 1;
    write_file(f->path, copy, len);
    sw_ledger *l = NULL;
    sw_diag d;
    assert_int_equal(sw_ledger_open(f->path, f->run_id, false, &l, NULL, &d), SW_EFORMAT);
    assert_non_null(strstr(d.msg, "header checksum"));
    write_file(f->path, full, 40);
    assert_int_equal(sw_ledger_open(f->path, f->run_id, false, &l, NULL, &d), SW_ETRUNCATED);
    memcpy(copy, "NOTALEDG", 8);
    write_file(f->path, copy, len);
    assert_int_equal(sw_ledger_open(f->path, f->run_id, false, &l, NULL, &d), SW_EFORMAT);
    assert_non_null(strstr(d.msg, "magic"));
    free(copy);
    free(full);
}

/* Damage more than one record's length before the end cannot be a torn
 * tail, even when nothing valid can be found after it. */
static void test_corruption_far_from_the_end(void **state)
{
    fixture *f = *state;
    unlink(f->path);
    sw_ledger *l = open_ok(f, false, NULL);
    sw_update *u = malloc(3000 * sizeof *u);
    for (int i = 0; i < 3000; i++)
        u[i] = mk(1, (uint64_t)i);
    sw_diag d;
    assert_int_equal(sw_ledger_append(l, u, 3000, &d), 0); /* 3 records: 1024, 1024, 952 */
    sw_ledger_close(l);
    free(u);
    char *full;
    size_t len;
    read_file(f->path, &full, &len);
    /* Zero the rest of the file from inside the first record. */
    memset(full + SW_LEDGER_HEADER_BYTES + 100, 0, len - SW_LEDGER_HEADER_BYTES - 100);
    write_file(f->path, full, len);
    free(full);
    assert_int_equal(sw_ledger_open(f->path, f->run_id, false, &l, NULL, &d), SW_EFORMAT);
    assert_non_null(strstr(d.msg, "offset 64 "));
    assert_non_null(strstr(d.msg, "not a torn tail"));
}

static void test_other_run_refused(void **state)
{
    fixture *f = *state;
    size_t off[4];
    build_three(f, off);
    uint8_t other[SW_ID_BYTES];
    memcpy(other, f->run_id, SW_ID_BYTES);
    other[5] ^= 0x80;
    sw_ledger *l = NULL;
    sw_diag d;
    assert_int_equal(sw_ledger_open(f->path, other, false, &l, NULL, &d), SW_EMISMATCH);
    assert_non_null(strstr(d.msg, f->path));
    assert_non_null(strstr(d.msg, "another run") ? strstr(d.msg, "another run")
                                                 : strstr(d.msg, "belongs to run"));
    assert_int_equal(file_size(f->path), off[3]);
}

static const sw_vv_origin *vv_find(const sw_vv *vv, const uint8_t *origin)
{
    for (size_t i = 0; i < vv->n; i++)
        if (memcmp(vv->o[i].origin, origin, SW_ID_BYTES) == 0) return &vv->o[i];
    return NULL;
}

static void test_version_vector_with_gaps(void **state)
{
    fixture *f = *state;
    unlink(f->path);
    sw_ledger *l = open_ok(f, false, NULL);
    sw_diag d;
    /* origin 1 arrives as 0 1 2 5 7 (then 4, then 3, then 6); origin 2 holds only 3. */
    sw_update first[6] = {mk(1, 0), mk(1, 1), mk(1, 2), mk(1, 5), mk(1, 7), mk(2, 3)};
    assert_int_equal(sw_ledger_append(l, first, 6, &d), 0);
    sw_update a = mk(1, 0), b = mk(2, 0);
    assert_int_equal(sw_ledger_prefix(l, a.origin), 3);
    assert_int_equal(sw_ledger_prefix(l, b.origin), 0);
    assert_false(sw_ledger_has(l, a.origin, 3));
    assert_true(sw_ledger_has(l, a.origin, 5));
    assert_false(sw_ledger_has(l, a.origin, 6));
    assert_int_equal(sw_ledger_next_step(l, a.origin), 8);
    assert_int_equal(sw_ledger_next_step(l, b.origin), 4);
    sw_vv vv;
    assert_int_equal(sw_ledger_vv(l, &vv), 0);
    assert_int_equal(vv.n, 2);
    const sw_vv_origin *o1 = vv_find(&vv, a.origin), *o2 = vv_find(&vv, b.origin);
    assert_non_null(o1);
    assert_non_null(o2);
    assert_int_equal(o1->prefix, 3);
    assert_int_equal(o1->n_extra, 2);
    assert_int_equal(o1->extra[0], 5);
    assert_int_equal(o1->extra[1], 7);
    assert_int_equal(o2->prefix, 0);
    assert_int_equal(o2->n_extra, 1);
    assert_int_equal(o2->extra[0], 3);
    assert_true(memcmp(vv.o[0].origin, vv.o[1].origin, SW_ID_BYTES) < 0);
    assert_int_equal(sw_vv_total(&vv), 6);
    sw_vv_fini(&vv);

    sw_update u4 = mk(1, 4), u3 = mk(1, 3), u6 = mk(1, 6);
    assert_int_equal(sw_ledger_append(l, &u4, 1, &d), 0);
    assert_int_equal(sw_ledger_prefix(l, a.origin), 3);
    assert_int_equal(sw_ledger_append(l, &u3, 1, &d), 0);
    assert_int_equal(sw_ledger_prefix(l, a.origin), 6); /* 3 fills the gap up to 5 */
    assert_int_equal(sw_ledger_append(l, &u6, 1, &d), 0);
    assert_int_equal(sw_ledger_prefix(l, a.origin), 8);
    sw_vv now;
    assert_int_equal(sw_ledger_vv(l, &now), 0);

    /* The vv at earlier positions: what a checkpoint there would hold. */
    sw_vv at;
    assert_int_equal(sw_ledger_vv_at(l, 7, &at), 0); /* 0 1 2 5 7 | 2:3 | 4 */
    o1 = vv_find(&at, a.origin);
    assert_int_equal(o1->prefix, 3);
    assert_int_equal(o1->n_extra, 3);
    assert_int_equal(o1->extra[0], 4);
    assert_int_equal(o1->extra[1], 5);
    assert_int_equal(o1->extra[2], 7);
    assert_int_equal(sw_vv_total(&at), 7);
    sw_vv_fini(&at);
    assert_int_equal(sw_ledger_vv_at(l, 3, &at), 0);
    assert_int_equal(at.n, 1); /* origin 2 not yet there */
    assert_int_equal(at.o[0].prefix, 3);
    assert_int_equal(at.o[0].n_extra, 0);
    sw_vv_fini(&at);
    assert_int_equal(sw_ledger_vv_at(l, 0, &at), 0);
    assert_int_equal(at.n, 0);
    sw_vv_fini(&at);
    assert_int_equal(sw_ledger_vv_at(l, 9, &at), 0);
    assert_true(sw_vv_equal(&at, &now));
    sw_vv_fini(&at);
    sw_ledger_close(l);

    /* The index is rebuilt identically from the file, and copies compare equal. */
    l = open_ok(f, false, NULL);
    sw_vv again, copy;
    assert_int_equal(sw_ledger_vv(l, &again), 0);
    assert_true(sw_vv_equal(&again, &now));
    assert_int_equal(sw_vv_copy(&again, &copy), 0);
    assert_true(sw_vv_equal(&copy, &now));
    copy.o[1].extra[0]++;
    assert_false(sw_vv_equal(&copy, &now));
    sw_vv_fini(&copy);
    sw_vv_fini(&again);
    sw_vv_fini(&now);
    sw_ledger_close(l);
}

static void test_large_batches_and_reads(void **state)
{
    fixture *f = *state;
    unlink(f->path);
    sw_ledger *l = open_ok(f, false, NULL);
    enum { N = 2600 };
    sw_update *u = malloc(N * sizeof *u);
    for (int i = 0; i < N; i++)
        u[i] = mk(i % 5, (uint64_t)(i / 5));
    sw_diag d;
    assert_int_equal(sw_ledger_append(l, u, 1000, &d), 0);
    for (int i = 1000; i < 1100; i++) /* many one-update records */
        assert_int_equal(sw_ledger_append(l, &u[i], 1, &d), 0);
    assert_int_equal(sw_ledger_append(l, u + 1100, N - 1100, &d), 0);
    sw_ledger_close(l);
    sw_ledger_open_info info;
    l = open_ok(f, false, &info);
    assert_int_equal(info.n_updates, N);
    assert_int_equal(info.n_records, 1 + 100 + 2); /* 1500 = 1024 + 476 */
    sw_update *back = malloc(N * sizeof *back);
    static const size_t chunks[] = {1, 3, 256, 1024, 5000};
    for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
        for (uint64_t first = 0; first < N;) {
            size_t got;
            assert_int_equal(sw_ledger_read(l, first, back, chunks[c], &got, &d), 0);
            assert_true(got > 0 && got <= chunks[c]);
            for (size_t j = 0; j < got; j++)
                assert_update_equal(&back[j], &u[first + j]);
            first += got;
        }
    }
    for (int i = 0; i < 5; i++)
        assert_int_equal(sw_ledger_prefix(l, u[i].origin), N / 5);
    sw_ledger_close(l);
    free(back);
    free(u);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_append_and_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_tail_every_offset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_readonly_ignores_torn_tail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corruption_in_the_middle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corruption_far_from_the_end, setup, teardown),
        cmocka_unit_test_setup_teardown(test_other_run_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_version_vector_with_gaps, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_batches_and_reads, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
