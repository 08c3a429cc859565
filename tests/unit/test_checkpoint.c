/*
 * checkpoint: round trip, keep-newest-2, fallback past a corrupt or
 * truncated newest file, truncation at every offset and flipped bytes never
 * crash or load, the digest is verified on its own.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>

#include "checkpoint.h"
#include "fileio.h"
#include "fixed.h"
#include "gpt2.h"

typedef struct fixture {
    char dir[64];
    uint8_t run_id[SW_ID_BYTES];
    sw_fixed *f;
    sw_vv vv;
    int warnings;
    char last_warning[1024];
} fixture;

static void on_warn(void *ctx, const char *msg)
{
    fixture *fx = ctx;
    fx->warnings++;
    snprintf(fx->last_warning, sizeof fx->last_warning, "%s", msg);
}

static sw_gpt2_config small_cfg(void)
{
    sw_gpt2_config c = {.n_layer = 1,
                        .n_head = 2,
                        .n_embd = 16,
                        .n_positions = 8,
                        .vocab_size = 32,
                        .layer_norm_epsilon = 1e-5f,
                        .tie_word_embeddings = true};
    return c;
}

static int setup(void **state)
{
    fixture *fx = calloc(1, sizeof *fx);
    snprintf(fx->dir, sizeof fx->dir, "/tmp/sw_test_ckpt_XXXXXX");
    if (mkdtemp(fx->dir) == NULL) return -1;
    for (int i = 0; i < SW_ID_BYTES; i++)
        fx->run_id[i] = (uint8_t)(3 * i + 1);
    sw_gpt2_config c = small_cfg();
    sw_gpt2 *m = NULL;
    sw_diag d;
    if (sw_gpt2_alloc(&c, &m, &d) != 0) return -1;
    sw_gpt2_init_random(m, 7);
    if (sw_fixed_from_model(m, &fx->f, &d) != 0) return -1;
    sw_gpt2_free(m);
    fx->f->saturations = 12345;
    /* A version vector with a gap: origin A 0..9 and 12, origin B 0..2. */
    fx->vv.n = 2;
    fx->vv.o = calloc(2, sizeof *fx->vv.o);
    memset(fx->vv.o[0].origin, 0x11, SW_ID_BYTES);
    fx->vv.o[0].prefix = 10;
    fx->vv.o[0].n_extra = 1;
    fx->vv.o[0].extra = malloc(sizeof(uint64_t));
    fx->vv.o[0].extra[0] = 12;
    memset(fx->vv.o[1].origin, 0x22, SW_ID_BYTES);
    fx->vv.o[1].prefix = 3;
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture *fx = *state;
    char **paths;
    size_t n;
    sw_diag d;
    if (sw_checkpoint_list(fx->dir, &paths, &n, &d) == 0) {
        for (size_t i = 0; i < n; i++)
            unlink(paths[i]);
        sw_checkpoint_list_free(paths, n);
    }
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", fx->dir);
    if (system(cmd) != 0) return -1;
    sw_fixed_free(fx->f);
    sw_vv_fini(&fx->vv);
    free(fx);
    return 0;
}

static void write_ok(fixture *fx, const sw_fixed *f, uint64_t count, char *path)
{
    sw_diag d = {{0}};
    int rc = sw_checkpoint_write(fx->dir, fx->run_id, f, count, &fx->vv, SW_CHECKPOINT_KEEP, path,
                                 on_warn, fx, &d);
    if (rc != 0) fail_msg("write: %s", d.msg);
}

static void assert_same_weights(const sw_fixed *a, const sw_fixed *b)
{
    assert_int_equal(a->n_params, b->n_params);
    assert_int_equal(a->n_tensors, b->n_tensors);
    assert_memory_equal(a->w, b->w, a->n_params * sizeof(int32_t));
    assert_memory_equal(a->exp, b->exp, a->n_tensors);
    uint8_t da[SW_FIXED_DIGEST_BYTES], db[SW_FIXED_DIGEST_BYTES];
    sw_fixed_digest(a, da);
    sw_fixed_digest(b, db);
    assert_memory_equal(da, db, sizeof da);
}

static void test_round_trip(void **state)
{
    fixture *fx = *state;
    char path[SW_CHECKPOINT_PATH_MAX];
    write_ok(fx, fx->f, 14, path);
    char want[256];
    snprintf(want, sizeof want, "%s/ckpt-00000000000000000014.swck", fx->dir);
    assert_string_equal(path, want);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    /* header 160 + exponents padded + vv (48 + 8 + 48) + weights + checksum */
    size_t exp_bytes = (fx->f->n_tensors + 7) / 8 * 8;
    assert_int_equal((size_t)st.st_size, 160 + exp_bytes + 48 + 8 + 48 + 4 * fx->f->n_params + 32);

    sw_fixed *g = NULL;
    sw_checkpoint_meta meta;
    sw_diag d = {{0}};
    sw_gpt2_config c = small_cfg();
    int rc = sw_checkpoint_load(path, fx->run_id, &c, &g, &meta, &d);
    if (rc != 0) fail_msg("load: %s", d.msg);
    assert_same_weights(fx->f, g);
    assert_int_equal(g->saturations, 12345);
    assert_int_equal(meta.ledger_count, 14);
    assert_int_equal(meta.saturations, 12345);
    assert_memory_equal(meta.run_id, fx->run_id, SW_ID_BYTES);
    assert_true(sw_vv_equal(&meta.vv, &fx->vv));
    uint8_t dg[SW_FIXED_DIGEST_BYTES];
    sw_fixed_digest(fx->f, dg);
    assert_memory_equal(meta.digest, dg, sizeof dg);
    assert_int_equal(meta.cfg.n_embd, 16);
    assert_string_equal(meta.path, path);
    sw_checkpoint_meta_fini(&meta);
    sw_fixed_free(g);

    /* Another run, another architecture. */
    uint8_t other[SW_ID_BYTES];
    memcpy(other, fx->run_id, SW_ID_BYTES);
    other[0] ^= 1;
    assert_int_equal(sw_checkpoint_load(path, other, NULL, &g, NULL, &d), SW_EMISMATCH);
    c.n_embd = 32;
    assert_int_equal(sw_checkpoint_load(path, fx->run_id, &c, &g, NULL, &d), SW_EMISMATCH);
    assert_non_null(strstr(d.msg, path));
    /* NULL run id and cfg: not checked. */
    assert_int_equal(sw_checkpoint_load(path, NULL, NULL, &g, NULL, &d), 0);
    sw_fixed_free(g);
    assert_int_equal(fx->warnings, 0);
}

/* vv totals must match the count the checkpoint claims: use a consistent one. */
static void set_vv_total(fixture *fx, uint64_t total)
{
    /* origin A: prefix total - 4 and extra 12 only makes sense above the prefix */
    fx->vv.o[0].prefix = total - 4;
    fx->vv.o[0].extra[0] = total + 100;
}

static void test_keep_two_and_fallback(void **state)
{
    fixture *fx = *state;
    sw_fixed *v[3];
    sw_diag d = {{0}};
    char paths[3][SW_CHECKPOINT_PATH_MAX];
    for (int i = 0; i < 3; i++) {
        assert_int_equal(sw_fixed_clone(fx->f, &v[i], &d), 0);
        v[i]->w[i * 5] += 1000 * (i + 1);
        set_vv_total(fx, (uint64_t)(10 * (i + 1)));
        write_ok(fx, v[i], (uint64_t)(10 * (i + 1)), paths[i]);
    }
    /* A stray temp file from a crash mid-write, then a listing. */
    char tmp[SW_CHECKPOINT_PATH_MAX + 16];
    snprintf(tmp, sizeof tmp, "%s/ckpt-00000000000000000040.swck.tmp.999", fx->dir);
    assert_int_equal(sw_file_write_atomic(tmp, "partial", 7, 0644, &d), 0);
    char **list;
    size_t n;
    assert_int_equal(sw_checkpoint_list(fx->dir, &list, &n, &d), 0);
    assert_int_equal(n, 2);
    assert_string_equal(list[0], paths[2]);
    assert_string_equal(list[1], paths[1]);
    sw_checkpoint_list_free(list, n);
    assert_int_equal(access(paths[0], F_OK), -1);
    assert_int_equal(sw_checkpoint_cleanup(fx->dir, on_warn, fx, &d), 0);
    assert_int_equal(access(tmp, F_OK), -1);
    assert_int_equal(fx->warnings, 1);

    /* Newest valid. */
    sw_fixed *g = NULL;
    sw_checkpoint_meta meta;
    sw_gpt2_config c = small_cfg();
    assert_int_equal(
        sw_checkpoint_load_newest(fx->dir, fx->run_id, &c, 100, &g, &meta, on_warn, fx, &d), 0);
    assert_int_equal(meta.ledger_count, 30);
    assert_same_weights(g, v[2]);
    sw_checkpoint_meta_fini(&meta);
    sw_fixed_free(g);

    /* The ledger holds only 25: the newest cannot describe it. */
    fx->warnings = 0;
    assert_int_equal(
        sw_checkpoint_load_newest(fx->dir, fx->run_id, &c, 25, &g, &meta, on_warn, fx, &d), 0);
    assert_int_equal(meta.ledger_count, 20);
    assert_int_equal(fx->warnings, 1);
    sw_checkpoint_meta_fini(&meta);
    sw_fixed_free(g);

    /* Corrupt newest: a flipped weight byte falls back to the previous. */
    int fd = open(paths[2], O_RDWR);
    assert_true(fd >= 0);
    uint8_t b;
    off_t at = 400;
    assert_int_equal(pread(fd, &b, 1, at), 1);
    b ^= 0x10;
    assert_int_equal(pwrite(fd, &b, 1, at), 1);
    close(fd);
    fx->warnings = 0;
    assert_int_equal(
        sw_checkpoint_load_newest(fx->dir, fx->run_id, &c, 100, &g, &meta, on_warn, fx, &d), 0);
    assert_int_equal(meta.ledger_count, 20);
    assert_same_weights(g, v[1]);
    assert_int_equal(fx->warnings, 1);
    assert_non_null(strstr(fx->last_warning, paths[2]));
    assert_non_null(strstr(fx->last_warning, "checksum"));
    sw_checkpoint_meta_fini(&meta);
    sw_fixed_free(g);

    /* Truncated newest: the same. */
    assert_int_equal(truncate(paths[2], 1000), 0);
    assert_int_equal(
        sw_checkpoint_load_newest(fx->dir, fx->run_id, &c, 100, &g, &meta, NULL, NULL, &d), 0);
    assert_int_equal(meta.ledger_count, 20);
    sw_checkpoint_meta_fini(&meta);
    sw_fixed_free(g);

    /* Both bad: none found, no crash. */
    assert_int_equal(truncate(paths[1], 0), 0);
    assert_int_equal(
        sw_checkpoint_load_newest(fx->dir, fx->run_id, &c, 100, &g, &meta, NULL, NULL, &d),
        SW_ENOTFOUND);
    assert_null(g);
    /* A missing directory counts as empty. */
    assert_int_equal(sw_checkpoint_load_newest("/nonexistent/sw", fx->run_id, &c, 100, &g, &meta,
                                               NULL, NULL, &d),
                     SW_ENOTFOUND);
    for (int i = 0; i < 3; i++)
        sw_fixed_free(v[i]);
}

static void test_truncated_at_every_offset(void **state)
{
    fixture *fx = *state;
    char path[SW_CHECKPOINT_PATH_MAX];
    write_ok(fx, fx->f, 14, path);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    for (off_t len = st.st_size - 1; len >= 0; len--) {
        assert_int_equal(ftruncate(fd, len), 0);
        sw_fixed *g = NULL;
        sw_checkpoint_meta meta;
        sw_diag d = {{0}};
        int rc = sw_checkpoint_load(path, fx->run_id, NULL, &g, &meta, &d);
        if (rc == 0) fail_msg("truncated to %lld bytes: loaded", (long long)len);
        assert_null(g);
        assert_non_null(strstr(d.msg, path));
    }
    close(fd);
}

static void test_flipped_bytes_never_load(void **state)
{
    fixture *fx = *state;
    char path[SW_CHECKPOINT_PATH_MAX];
    write_ok(fx, fx->f, 14, path);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    for (off_t pos = 0; pos < st.st_size; pos += (pos < 400 ? 1 : 37)) {
        uint8_t orig;
        assert_int_equal(pread(fd, &orig, 1, pos), 1);
        for (int bit = 0; bit < 8; bit += 3) {
            uint8_t b = orig ^ (uint8_t)(1 << bit);
            assert_int_equal(pwrite(fd, &b, 1, pos), 1);
            sw_fixed *g = NULL;
            sw_diag d = {{0}};
            int rc = sw_checkpoint_load(path, fx->run_id, NULL, &g, NULL, &d);
            if (rc == 0) fail_msg("byte %lld bit %d flipped: loaded", (long long)pos, bit);
        }
        assert_int_equal(pwrite(fd, &orig, 1, pos), 1);
    }
    close(fd);
    sw_fixed *g = NULL;
    sw_diag d = {{0}};
    assert_int_equal(sw_checkpoint_load(path, fx->run_id, NULL, &g, NULL, &d), 0);
    sw_fixed_free(g);
}

/* A file whose checksum is right but whose weights disagree with the
 * recorded digest is refused by the digest check alone. */
static void test_digest_is_verified(void **state)
{
    fixture *fx = *state;
    char path[SW_CHECKPOINT_PATH_MAX];
    write_ok(fx, fx->f, 14, path);
    char *full;
    size_t len;
    sw_diag d = {{0}};
    assert_int_equal(sw_file_read(path, 1 << 24, &full, &len, &d), 0);
    full[len - 32 - 4] ^= 1; /* the last weight */
    assert_true(sodium_init() >= 0);
    crypto_generichash((unsigned char *)full + len - 32, 32, (const unsigned char *)full, len - 32,
                       NULL, 0);
    assert_int_equal(sw_file_write_atomic(path, full, len, 0644, &d), 0);
    free(full);
    sw_fixed *g = NULL;
    assert_int_equal(sw_checkpoint_load(path, fx->run_id, NULL, &g, NULL, &d), SW_EFORMAT);
    assert_non_null(strstr(d.msg, "digest"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keep_two_and_fallback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncated_at_every_offset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flipped_bytes_never_load, setup, teardown),
        cmocka_unit_test_setup_teardown(test_digest_is_verified, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
