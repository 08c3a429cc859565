/*
 * state: identity (0600, reused), the lock, the run spec check, and the
 * replay guarantee: base model + ledger replayed from scratch gives the same
 * sw_fixed digest as a checkpoint taken at the end, with real updates on a
 * small random model applied by sw_fixed_apply.
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
#include <sodium.h>

#include "checkpoint.h"
#include "fileio.h"
#include "fixed.h"
#include "gpt2.h"
#include "ledger.h"
#include "runspec.h"
#include "state.h"

typedef struct fixture {
    char root[64];
    char base[128];  /* the base model directory */
    char state[128]; /* the state directory */
    sw_runspec rs;
    int warnings;
    char last_warning[1024];
} fixture;

static void on_warn(void *ctx, const char *msg)
{
    fixture *fx = ctx;
    fx->warnings++;
    snprintf(fx->last_warning, sizeof fx->last_warning, "%s", msg);
}

static int setup(void **state)
{
    fixture *fx = calloc(1, sizeof *fx);
    snprintf(fx->root, sizeof fx->root, "/tmp/sw_test_state_XXXXXX");
    if (mkdtemp(fx->root) == NULL) return -1;
    snprintf(fx->base, sizeof fx->base, "%s/base", fx->root);
    snprintf(fx->state, sizeof fx->state, "%s/node", fx->root);
    sw_gpt2_config c = {.n_layer = 2,
                        .n_head = 2,
                        .n_embd = 16,
                        .n_positions = 8,
                        .vocab_size = 40,
                        .layer_norm_epsilon = 1e-5f,
                        .tie_word_embeddings = true};
    sw_gpt2 *m = NULL;
    sw_diag d;
    if (sw_gpt2_alloc(&c, &m, &d) != 0) return -1;
    sw_gpt2_init_random(m, 11);
    if (sw_mkdir(fx->base, 0755, &d) != 0 || sw_gpt2_save(m, fx->base, SW_DTYPE_F32, &d) != 0)
        return -1;
    sw_runspec_defaults(&fx->rs);
    sw_gpt2_digest(m, fx->rs.base_digest);
    fx->rs.arch = c;
    fx->rs.lr = 2e-4; /* small enough that no weight saturates (see below) */
    fx->rs.max_scale = 0.5;
    fx->rs.directions = 2;
    fx->rs.schedule = SW_SCHEDULE_COSINE;
    fx->rs.total_steps = 200;
    fx->rs.warmup_steps = 10;
    sw_gpt2_free(m);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture *fx = *state;
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf %s", fx->root);
    int rc = system(cmd);
    free(fx);
    return rc == 0 ? 0 : -1;
}

static sw_state *open_ok(fixture *fx, const char *identity, bool readonly)
{
    sw_state_options o = {.identity_path = identity,
                          .runspec = readonly ? NULL : &fx->rs,
                          .base_model_dir = readonly ? NULL : fx->base,
                          .readonly = readonly,
                          .warn = on_warn,
                          .warn_ctx = fx};
    sw_state *s = NULL;
    sw_diag d = {{0}};
    int rc = sw_state_open(fx->state, &o, &s, &d);
    if (rc != 0) fail_msg("state open: %s", d.msg);
    return s;
}

static void test_identity_and_lock(void **state)
{
    fixture *fx = *state;
    mode_t old = umask(0); /* the file must be 0600 whatever the umask */
    sw_state *s = open_ok(fx, NULL, false);
    umask(old);
    assert_true(s->created);
    assert_true(s->identity_created);
    assert_true(s->has_pk);
    char idpath[256];
    snprintf(idpath, sizeof idpath, "%s/identity.key", fx->state);
    struct stat st;
    assert_int_equal(stat(idpath, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    assert_int_equal(st.st_size, SW_IDENTITY_FILE_BYTES);
    /* The secret key signs for the public key. */
    unsigned char sig[crypto_sign_BYTES];
    crypto_sign_detached(sig, NULL, (const unsigned char *)"hi", 2, s->id.sk);
    assert_int_equal(crypto_sign_verify_detached(sig, (const unsigned char *)"hi", 2, s->id.pk), 0);
    uint8_t pk[SW_ID_BYTES];
    memcpy(pk, s->id.pk, SW_ID_BYTES);
    /* The base model path is recorded absolute. */
    assert_string_equal(s->base_model_dir, fx->base);

    /* A second opener is refused while the first holds the lock. */
    sw_state *t = NULL;
    sw_diag d = {{0}};
    sw_state_options o = {.runspec = &fx->rs, .base_model_dir = fx->base};
    assert_int_equal(sw_state_open(fx->state, &o, &t, &d), SW_EEXIST);
    assert_non_null(strstr(d.msg, fx->state));
    assert_non_null(strstr(d.msg, "in use"));
    char pid[32];
    snprintf(pid, sizeof pid, "pid %ld", (long)getpid());
    assert_non_null(strstr(d.msg, pid));
    /* A read-only opener (export) is not. */
    sw_state *r = open_ok(fx, NULL, true);
    assert_true(r->has_pk);
    assert_memory_equal(r->id.pk, pk, SW_ID_BYTES);
    assert_null(r->id.sk);
    sw_state_close(r);
    sw_state_close(s);

    /* Reopened: the same key, not recreated. */
    s = open_ok(fx, NULL, false);
    assert_false(s->created);
    assert_false(s->identity_created);
    assert_memory_equal(s->id.pk, pk, SW_ID_BYTES);
    sw_state_close(s);

    /* An explicit identity shared by two state directories. */
    char shared[256];
    snprintf(shared, sizeof shared, "%s/shared.key", fx->root);
    s = open_ok(fx, shared, false);
    assert_true(s->identity_created);
    memcpy(pk, s->id.pk, SW_ID_BYTES);
    sw_state_close(s);
    snprintf(fx->state, sizeof fx->state, "%s/node2", fx->root);
    s = open_ok(fx, shared, false);
    assert_false(s->identity_created);
    assert_memory_equal(s->id.pk, pk, SW_ID_BYTES);
    sw_state_close(s);

    /* A key others can read is refused, naming the file. */
    assert_int_equal(chmod(shared, 0640), 0);
    o.identity_path = shared;
    assert_int_equal(sw_state_open(fx->state, &o, &t, &d), SW_EACCES);
    assert_non_null(strstr(d.msg, shared));
    assert_int_equal(chmod(shared, 0600), 0);
    /* A corrupt key is refused. */
    char buf[SW_IDENTITY_FILE_BYTES];
    FILE *fp = fopen(shared, "r+b");
    assert_non_null(fp);
    assert_int_equal(fread(buf, 1, sizeof buf, fp), sizeof buf);
    buf[50] ^= 1;
    rewind(fp);
    assert_int_equal(fwrite(buf, 1, sizeof buf, fp), sizeof buf);
    fclose(fp);
    assert_int_equal(sw_state_open(fx->state, &o, &t, &d), SW_EFORMAT);
    assert_non_null(strstr(d.msg, "corrupt"));
}

static void test_runspec_is_checked(void **state)
{
    fixture *fx = *state;
    sw_state *s = open_ok(fx, NULL, false);
    uint8_t id[SW_ID_BYTES];
    sw_diag d = {{0}};
    assert_int_equal(sw_runspec_id(&fx->rs, id, &d), 0);
    assert_memory_equal(s->train.run_id, id, SW_ID_BYTES);
    assert_true(s->train.lr == 2e-4 && s->train.directions == 2);
    sw_state_close(s);
    sw_runspec other = fx->rs;
    other.eps = 2e-3;
    sw_state_options o = {.runspec = &other, .base_model_dir = fx->base};
    sw_state *t = NULL;
    assert_int_equal(sw_state_open(fx->state, &o, &t, &d), SW_EMISMATCH);
    assert_non_null(strstr(d.msg, "train.eps"));
    assert_non_null(strstr(d.msg, "runspec.json"));
    /* No spec given: the stored one. */
    o.runspec = NULL;
    assert_int_equal(sw_state_open(fx->state, &o, &t, &d), 0);
    assert_null(sw_runspec_diff(&t->runspec, &fx->rs));
    sw_state_close(t);
    /* A directory that was never initialised cannot be opened without a spec. */
    snprintf(fx->state, sizeof fx->state, "%s/empty", fx->root);
    assert_int_equal(sw_state_open(fx->state, &o, &t, &d), SW_ENOENT);
    assert_non_null(strstr(d.msg, "runspec.json"));
    o.readonly = true;
    snprintf(fx->state, sizeof fx->state, "%s/missing", fx->root);
    assert_int_equal(sw_state_open(fx->state, &o, &t, &d), SW_ENOENT);
    assert_int_equal(access(fx->state, F_OK), -1);
}

static uint64_t rng(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    uint64_t x = *s ^ (*s >> 29);
    return x * 0xbf58476d1ce4e5b9ull;
}

static void digest_of(const sw_fixed *f, uint8_t out[SW_FIXED_DIGEST_BYTES])
{
    sw_fixed_digest(f, out);
}

/* Real updates from three origins, steps interleaved and partly out of
 * order, with random q and scale <= max_scale. */
static void make_updates(const sw_state *s, sw_update *u, size_t n, uint64_t seed)
{
    uint64_t next[3] = {0, 0, 0};
    for (size_t i = 0; i < n; i++) {
        int o = (int)(rng(&seed) % 3);
        memset(&u[i], 0, sizeof u[i]);
        if (o == 0)
            memcpy(u[i].origin, s->id.pk, SW_ID_BYTES);
        else
            memset(u[i].origin, 0x40 + o, SW_ID_BYTES);
        u[i].step = next[o]++;
        int q = (int)(rng(&seed) % 255) - 127;
        u[i].q = (int8_t)q;
        u[i].scale = (float)(0.5 * (double)(rng(&seed) % 1000 + 1) / 1000.0);
    }
    /* Swap some neighbours so steps arrive out of order. */
    for (size_t i = 0; i + 1 < n; i += 7) {
        sw_update t = u[i];
        u[i] = u[i + 1];
        u[i + 1] = t;
    }
}

static void test_replay_equals_checkpoint(void **state)
{
    fixture *fx = *state;
    for (int dist = 0; dist < 2; dist++) {
        snprintf(fx->state, sizeof fx->state, "%s/replay%d", fx->root, dist);
        fx->rs.perturb = dist ? SW_PERTURB_GAUSSIAN : SW_PERTURB_RADEMACHER;
        snprintf(fx->rs.trainable, sizeof fx->rs.trainable, "%s", dist ? "attn|ln_f" : "");
        sw_state *s = open_ok(fx, NULL, false);
        assert_false(s->has_ckpt);
        sw_fixed *w = NULL;
        sw_diag d = {{0}};
        int rc = sw_state_rebuild(s, 1, &w, &d);
        if (rc != 0) fail_msg("rebuild from base: %s", d.msg);
        if (dist) assert_true(s->n_trainable < w->n_tensors);

        enum { N = 600, MID = 333 };
        sw_update *u = malloc(N * sizeof *u);
        make_updates(s, u, N, 99 + (uint64_t)dist);
        /* Train: append (written ahead), then apply, in uneven batches. */
        char mid_path[SW_CHECKPOINT_PATH_MAX], end_path[SW_CHECKPOINT_PATH_MAX];
        size_t i = 0;
        uint64_t seed = 5;
        while (i < N) {
            size_t k = 1 + (size_t)(rng(&seed) % 40);
            if (i < MID && i + k > MID) k = MID - i;
            if (i + k > N) k = N - i;
            for (size_t j = 0; j < k; j++)
                assert_int_equal(sw_update_check(&s->train, &u[i + j], &d), 0);
            assert_int_equal(sw_ledger_append(s->ledger, u + i, k, &d), 0);
            sw_fixed_apply(w, &s->train, s->trainable, u + i, k, 1);
            i += k;
            if (i == MID) assert_int_equal(sw_state_checkpoint(s, w, mid_path, &d), 0);
        }
        assert_int_equal(sw_state_checkpoint(s, w, end_path, &d), 0);
        /* A saturated add does not commute (fixed.h): keep clear of the clamp. */
        assert_int_equal(w->saturations, 0);
        uint8_t live[SW_FIXED_DIGEST_BYTES];
        digest_of(w, live);
        assert_memory_equal(s->ckpt_meta.digest, live, sizeof live);
        /* Own steps: the next one follows the highest held. */
        uint64_t own = 0;
        for (size_t j = 0; j < N; j++)
            own += memcmp(u[j].origin, s->id.pk, SW_ID_BYTES) == 0;
        assert_int_equal(sw_state_next_step(s), own);
        sw_state_close(s);
        sw_fixed_free(w);

        /* 1. Reopen: the end checkpoint, nothing to replay. */
        s = open_ok(fx, NULL, false);
        assert_true(s->has_ckpt);
        assert_int_equal(s->ckpt_meta.ledger_count, N);
        assert_int_equal(sw_state_rebuild(s, 1, &w, &d), 0);
        uint8_t got[SW_FIXED_DIGEST_BYTES];
        digest_of(w, got);
        assert_memory_equal(got, live, sizeof got);
        sw_fixed_free(w);
        sw_state_close(s);

        /* 2. Only the middle checkpoint: checkpoint + ledger suffix. */
        assert_int_equal(unlink(end_path), 0);
        s = open_ok(fx, NULL, false);
        assert_int_equal(s->ckpt_meta.ledger_count, MID);
        assert_int_equal(sw_state_rebuild(s, 2, &w, &d), 0);
        digest_of(w, got);
        assert_memory_equal(got, live, sizeof got);
        sw_fixed_free(w);
        sw_state_close(s);

        /* 3. No checkpoint: the base model and the whole ledger from scratch. */
        assert_int_equal(unlink(mid_path), 0);
        s = open_ok(fx, NULL, false);
        assert_false(s->has_ckpt);
        rc = sw_state_rebuild(s, 1, &w, &d);
        if (rc != 0) fail_msg("replay from scratch: %s", d.msg);
        digest_of(w, got);
        assert_memory_equal(got, live, sizeof got);
        assert_int_equal(w->saturations, 0);
        /* And as the daemon would continue: a checkpoint of the replayed state. */
        assert_int_equal(sw_state_checkpoint(s, w, end_path, &d), 0);
        sw_fixed_free(w);
        sw_state_close(s);

        /* 4. Read-only (export): the same weights, nothing written. */
        s = open_ok(fx, NULL, true);
        assert_int_equal(sw_state_rebuild(s, 1, &w, &d), 0);
        digest_of(w, got);
        assert_memory_equal(got, live, sizeof got);
        assert_int_equal(sw_state_checkpoint(s, w, NULL, &d), SW_EACCES);
        sw_fixed_free(w);
        sw_state_close(s);
        free(u);
    }
}

/* A torn ledger tail is truncated with a warning; a checkpoint that
 * includes more updates than the ledger now holds is skipped. */
static void test_torn_tail_and_stale_checkpoint(void **state)
{
    fixture *fx = *state;
    sw_state *s = open_ok(fx, NULL, false);
    sw_fixed *w = NULL;
    sw_diag d = {{0}};
    assert_int_equal(sw_state_rebuild(s, 1, &w, &d), 0);
    sw_update u[40];
    make_updates(s, u, 40, 3);
    assert_int_equal(sw_ledger_append(s->ledger, u, 20, &d), 0); /* two records */
    assert_int_equal(sw_ledger_append(s->ledger, u + 20, 10, &d), 0);
    sw_fixed_apply(w, &s->train, s->trainable, u, 30, 1);
    assert_int_equal(sw_state_checkpoint(s, w, NULL, &d), 0);
    uint8_t at30[SW_FIXED_DIGEST_BYTES];
    digest_of(w, at30);
    assert_int_equal(sw_ledger_append(s->ledger, u + 30, 10, &d), 0);
    sw_fixed_apply(w, &s->train, s->trainable, u + 30, 10, 1);
    assert_int_equal(sw_state_checkpoint(s, w, NULL, &d), 0);
    sw_fixed_free(w);
    sw_state_close(s);

    /* Lose part of the last record (a crash before its fsync returned, as
     * if the newest checkpoint had somehow been written after it). */
    char lpath[256];
    snprintf(lpath, sizeof lpath, "%s/ledger", fx->state);
    struct stat st;
    assert_int_equal(stat(lpath, &st), 0);
    assert_int_equal(truncate(lpath, st.st_size - 20), 0);
    fx->warnings = 0;
    s = open_ok(fx, NULL, false);
    assert_int_equal(s->ledger_info.truncated_bytes, 8 + 10 * SW_LEDGER_UPDATE_BYTES + 16 - 20);
    assert_int_equal(sw_ledger_count(s->ledger), 30);
    assert_true(fx->warnings >= 2); /* the torn tail, the skipped checkpoint */
    assert_true(s->has_ckpt);
    assert_int_equal(s->ckpt_meta.ledger_count, 30);
    assert_int_equal(sw_state_rebuild(s, 1, &w, &d), 0);
    uint8_t got[SW_FIXED_DIGEST_BYTES];
    digest_of(w, got);
    assert_memory_equal(got, at30, sizeof got);
    sw_fixed_free(w);
    sw_state_close(s);

    /* A ledger corrupt in the middle refuses to open, naming file and offset. */
    FILE *fp = fopen(lpath, "r+b");
    assert_non_null(fp);
    assert_int_equal(fseek(fp, SW_LEDGER_HEADER_BYTES + 10, SEEK_SET), 0);
    fputc(0x77, fp);
    fclose(fp);
    sw_state_options o = {.runspec = &fx->rs, .base_model_dir = fx->base};
    sw_state *t = NULL;
    assert_int_equal(sw_state_open(fx->state, &o, &t, &d), SW_EFORMAT);
    assert_non_null(strstr(d.msg, lpath));
    assert_non_null(strstr(d.msg, "offset 64"));
}

/* A base model that is not the run's is refused when replaying from it. */
static void test_base_digest_checked(void **state)
{
    fixture *fx = *state;
    sw_state *s = open_ok(fx, NULL, false);
    sw_state_close(s);
    sw_gpt2 *m = NULL;
    sw_diag d = {{0}};
    assert_int_equal(sw_gpt2_load(fx->base, &m, &d), 0);
    m->params[3] += 0.25f;
    assert_int_equal(sw_gpt2_save(m, fx->base, SW_DTYPE_F32, &d), 0);
    sw_gpt2_free(m);
    s = open_ok(fx, NULL, false);
    sw_fixed *w = NULL;
    assert_int_equal(sw_state_rebuild(s, 1, &w, &d), SW_EMISMATCH);
    assert_non_null(strstr(d.msg, "base_model"));
    assert_non_null(strstr(d.msg, fx->base));
    assert_null(w);
    sw_state_close(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_identity_and_lock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_runspec_is_checked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replay_equals_checkpoint, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_tail_and_stale_checkpoint, setup, teardown),
        cmocka_unit_test_setup_teardown(test_base_digest_checked, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
