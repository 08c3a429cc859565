/*
 * lora: the target list, fresh adapters (zero B: the base's exact outputs;
 * seeded A within PEFT's bound), the forward with adapters against the merged
 * plain model, the PEFT files read back, a checkpoint round trip, and
 * training that writes only adapter parameters.  The PEFT layout is checked
 * independently (NumPy, PEFT's merge formula) by tests/ref/lora_reference.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <sodium.h>

#include "checkpoint.h"
#include "fileio.h"
#include "fixed.h"
#include "gpt2.h"
#include "gpt2_config.h"
#include "gpt2_forward.h"
#include "ledger.h"
#include "lora.h"
#include "safetensors.h"
#include "sw_error.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static float rndu(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)(uint32_t)(rng_state >> 16) / 2147483648.0f - 1.0f;
}

static sw_gpt2_config base_cfg(void)
{
    return (sw_gpt2_config){.n_layer = 2,
                            .n_head = 2,
                            .n_embd = 16,
                            .n_positions = 24,
                            .vocab_size = 40,
                            .layer_norm_epsilon = 1e-5f,
                            .tie_word_embeddings = true};
}

static sw_gpt2 *make_base(void)
{
    sw_gpt2_config cfg = base_cfg();
    sw_gpt2 *m;
    sw_diag d;
    assert_int_equal(sw_gpt2_alloc(&cfg, &m, &d), 0);
    for (size_t i = 0; i < sw_gpt2_tensor_count(&cfg); i++) {
        sw_gpt2_tensor t;
        sw_gpt2_tensor_at(&cfg, i, &t);
        float *x = m->params + t.offset;
        for (size_t j = 0; j < t.numel; j++)
            x[j] = t.kind == SW_GPT2_LN1_W || t.kind == SW_GPT2_LN2_W || t.kind == SW_GPT2_LNF_W
                       ? 1.0f + 0.2f * rndu()
                       : 0.4f * rndu();
    }
    return m;
}

static sw_gpt2_config lora_cfg(unsigned targets)
{
    sw_gpt2_config c = base_cfg();
    c.lora_rank = 4;
    c.lora_alpha = 8.0f;
    c.lora_targets = targets;
    return c;
}

/* Mean NLL of a fixed batch (every position scored). */
static double batch_loss(const sw_gpt2 *m)
{
    enum { B = 3, T = 11 };
    int32_t tok[B * T], len[B] = {11, 7, 9};
    for (int i = 0; i < B * T; i++)
        tok[i] = (i * 7 + 3) % m->cfg.vocab_size;
    sw_gpt2_acts *a;
    sw_diag d;
    assert_int_equal(sw_gpt2_acts_alloc(&m->cfg, B, T, &a, &d), 0);
    assert_int_equal(sw_gpt2_forward(m, a, tok, len, B, T, &d), 0);
    float nll[B * T];
    double sum;
    int64_t count;
    assert_int_equal(sw_gpt2_nll(a, &m->cfg, m->w.lm_head, tok, len, NULL, B, T, nll, &sum, &count,
                                 &d),
                     0);
    sw_gpt2_acts_free(a);
    return sum / (double)count;
}

static void test_targets(void **state)
{
    (void)state;
    unsigned b = 0;
    sw_diag d;
    assert_int_equal(sw_lora_targets_parse(SW_LORA_TARGETS_ALL, &b, &d), 0);
    assert_int_equal(b, SW_LORA_ALL);
    assert_int_equal(sw_lora_targets_parse("mlp.c_proj,attn.c_attn", &b, &d), 0);
    assert_int_equal(b, SW_LORA_C_ATTN | SW_LORA_MLP_C_PROJ);
    char buf[128];
    sw_lora_targets_text(b, buf, sizeof buf);
    assert_string_equal(buf, "attn.c_attn,mlp.c_proj");
    sw_lora_targets_text(SW_LORA_ALL, buf, sizeof buf);
    assert_string_equal(buf, SW_LORA_TARGETS_ALL);
    const char *bad[] = {"", "c_attn", "attn.c_attn,", "attn.c_attn,attn.c_attn",
                         "attn.c_attn mlp.c_fc", ",mlp.c_fc"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(sw_lora_targets_parse(bad[i], &b, &d), SW_EINVAL);
        assert_non_null(strstr(d.msg, "lora_targets"));
    }
}

/* Fresh adapters change nothing (B = 0) and are the same for the same seed. */
static void test_attach(void **state)
{
    (void)state;
    sw_gpt2 *base = make_base();
    sw_gpt2_config c = lora_cfg(SW_LORA_ALL);
    uint8_t seed[32] = {1, 2, 3}, other[32] = {4};
    sw_gpt2 *m1, *m2, *m3;
    sw_diag d;
    assert_int_equal(sw_lora_attach(base, &c, seed, &m1, &d), 0);
    assert_int_equal(sw_lora_attach(base, &c, seed, &m2, &d), 0);
    assert_int_equal(sw_lora_attach(base, &c, other, &m3, &d), 0);
    assert_memory_equal(m1->params, base->params, base->n_params * sizeof(float));
    assert_memory_equal(m1->params, m2->params, m1->n_params * sizeof(float));
    assert_memory_not_equal(m1->params, m3->params, m1->n_params * sizeof(float));
    size_t nonzero_a = 0, n_a = 0;
    for (size_t i = sw_gpt2_base_tensor_count(&c); i < sw_gpt2_tensor_count(&c); i++) {
        sw_gpt2_tensor t;
        sw_gpt2_tensor_at(&c, i, &t);
        const float *x = m1->params + t.offset;
        const float bound = 1.0f / sqrtf((float)t.shape[1]);
        for (size_t j = 0; j < t.numel; j++) {
            if (t.kind == SW_GPT2_LORA_B) {
                assert_true(x[j] == 0.0f);
            } else {
                assert_true(fabsf(x[j]) <= bound);
                nonzero_a += x[j] != 0.0f;
                n_a++;
            }
        }
    }
    assert_int_equal(nonzero_a, n_a);
    /* B = 0: the adapted model computes exactly the base's loss */
    assert_true(batch_loss(m1) == batch_loss(base));
    /* an adapter on an adapted model, or of another architecture, is refused */
    assert_int_equal(sw_lora_attach(m1, &c, seed, &m3 /* unchanged on failure */, &d), SW_EINVAL);
    sw_gpt2_config wide = c;
    wide.n_embd = 32;
    sw_gpt2 *dummy = NULL;
    assert_int_equal(sw_lora_attach(base, &wide, seed, &dummy, &d), SW_EINVAL);
    assert_null(dummy);
    sw_gpt2_free(m1);
    sw_gpt2_free(m2);
    sw_gpt2_free(m3);
    sw_gpt2_free(base);
}

/* With trained (non-zero) B the forward with adapters equals the merged
 * plain model's, for every subset of targets. */
static void test_merge_matches_forward(void **state)
{
    (void)state;
    sw_gpt2 *base = make_base();
    const double l0 = batch_loss(base);
    for (unsigned targets = 1; targets <= SW_LORA_ALL; targets++) {
        sw_gpt2_config c = lora_cfg(targets);
        uint8_t seed[32] = {(uint8_t)targets};
        sw_gpt2 *m, *merged;
        sw_diag d;
        assert_int_equal(sw_lora_attach(base, &c, seed, &m, &d), 0);
        for (size_t i = sw_gpt2_base_tensor_count(&c); i < sw_gpt2_tensor_count(&c); i++) {
            sw_gpt2_tensor t;
            sw_gpt2_tensor_at(&c, i, &t);
            if (t.kind != SW_GPT2_LORA_B) continue;
            for (size_t j = 0; j < t.numel; j++)
                m->params[t.offset + j] = 0.5f * rndu();
        }
        assert_int_equal(sw_lora_merge(m, &merged, &d), 0);
        assert_int_equal(merged->cfg.lora_rank, 0);
        assert_int_equal(merged->n_params, base->n_params);
        const double la = batch_loss(m), lm = batch_loss(merged);
        assert_true(fabs(la - lm) <= 1e-5 * fabs(lm));
        assert_true(fabs(la - l0) > 1e-3); /* the adapters do change the model */
        /* only the adapted weights moved */
        for (size_t i = 0; i < sw_gpt2_tensor_count(&base->cfg); i++) {
            sw_gpt2_tensor t;
            sw_gpt2_tensor_at(&base->cfg, i, &t);
            const bool adapted =
                (t.kind == SW_GPT2_ATTN_W && (targets & SW_LORA_C_ATTN)) ||
                (t.kind == SW_GPT2_ATTN_PROJ_W && (targets & SW_LORA_ATTN_C_PROJ)) ||
                (t.kind == SW_GPT2_FC_W && (targets & SW_LORA_C_FC)) ||
                (t.kind == SW_GPT2_FC_PROJ_W && (targets & SW_LORA_MLP_C_PROJ));
            const int same = memcmp(merged->params + t.offset, base->params + t.offset,
                                    t.numel * sizeof(float)) == 0;
            assert_int_equal(same, !adapted);
        }
        sw_gpt2_free(m);
        sw_gpt2_free(merged);
    }
    sw_gpt2_free(base);
}

static char tmpdir[] = "/tmp/sw_lora_XXXXXX";

static void test_peft_files(void **state)
{
    (void)state;
    sw_gpt2 *base = make_base();
    sw_gpt2_config c = lora_cfg(SW_LORA_C_ATTN | SW_LORA_C_FC);
    uint8_t seed[32] = {9};
    sw_gpt2 *m;
    sw_diag d;
    assert_int_equal(sw_lora_attach(base, &c, seed, &m, &d), 0);
    assert_int_equal(sw_lora_write_peft(base, tmpdir, "x", &d), SW_EINVAL);
    assert_int_equal(sw_lora_write_peft(m, tmpdir, "/models/a \"b\"", &d), 0);
    char path[512];
    snprintf(path, sizeof path, "%s/adapter_config.json", tmpdir);
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "peft_type")), "LORA");
    assert_int_equal(json_integer_value(json_object_get(j, "r")), 4);
    assert_true(json_number_value(json_object_get(j, "lora_alpha")) == 8.0);
    assert_true(json_is_true(json_object_get(j, "fan_in_fan_out")));
    assert_string_equal(json_string_value(json_object_get(j, "base_model_name_or_path")),
                        "/models/a \"b\"");
    json_t *tm = json_object_get(j, "target_modules");
    assert_int_equal(json_array_size(tm), 2);
    assert_string_equal(json_string_value(json_array_get(tm, 0)), "attn.c_attn");
    assert_string_equal(json_string_value(json_array_get(tm, 1)), "mlp.c_fc");
    json_decref(j);

    snprintf(path, sizeof path, "%s/adapter_model.safetensors", tmpdir);
    sw_safetensors *st;
    assert_int_equal(sw_safetensors_open(path, &st, &d), 0);
    assert_int_equal(sw_safetensors_count(st), 2 * 2 * (size_t)c.n_layer);
    const sw_st_tensor *t0 = sw_safetensors_at(st, 0);
    assert_string_equal(t0->name, "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight");
    assert_int_equal(t0->shape[0], 4);
    assert_int_equal(t0->shape[1], 16);
    const sw_st_tensor *t1 = sw_safetensors_at(st, 1);
    assert_string_equal(t1->name, "base_model.model.transformer.h.0.attn.c_attn.lora_B.weight");
    assert_int_equal(t1->shape[0], 48);
    assert_int_equal(t1->shape[1], 4);
    float *a = malloc(t0->numel * sizeof(float));
    sw_st_tensor_to_f32(t0, a);
    assert_memory_equal(a, m->w.layers[0].lora_a[0], t0->numel * sizeof(float));
    free(a);
    sw_safetensors_close(st);
    sw_gpt2_free(m);
    sw_gpt2_free(base);
}

/* The adapters survive a checkpoint; a plain reader of it is refused. */
static void test_checkpoint(void **state)
{
    (void)state;
    sw_gpt2 *base = make_base();
    sw_gpt2_config c = lora_cfg(SW_LORA_ATTN_C_PROJ);
    sw_fixed *f, *g;
    sw_diag d;
    assert_int_equal(sw_lora_initial_weights(base, &c, &f, &d), 0);
    assert_int_equal(f->n_params, sw_gpt2_config_param_count(&c));
    uint8_t run_id[SW_ID_BYTES] = {7};
    sw_vv vv = {0};
    char out[SW_CHECKPOINT_PATH_MAX];
    assert_int_equal(sw_checkpoint_write(tmpdir, run_id, f, 0, &vv, 2, out, NULL, NULL, &d), 0);
    sw_checkpoint_meta meta;
    assert_int_equal(sw_checkpoint_load(out, run_id, &c, &g, &meta, &d), 0);
    assert_int_equal(g->cfg.lora_rank, 4);
    assert_int_equal(g->cfg.lora_targets, SW_LORA_ATTN_C_PROJ);
    assert_true(g->cfg.lora_alpha == 8.0f);
    uint8_t d1[SW_FIXED_DIGEST_BYTES], d2[SW_FIXED_DIGEST_BYTES];
    sw_fixed_digest(f, d1);
    sw_fixed_digest(g, d2);
    assert_memory_equal(d1, d2, sizeof d1);
    sw_checkpoint_meta_fini(&meta);
    sw_fixed_free(g);
    sw_gpt2_config plain = base_cfg();
    assert_int_equal(sw_checkpoint_load(out, run_id, &plain, &g, &meta, &d), SW_EMISMATCH);

    /* A self-consistent file (checksum recomputed, as a hostile peer's snapshot
     * would be) with impossible adapter fields is refused, never trusted. */
    char *full;
    size_t len;
    assert_int_equal(sw_file_read(out, 1 << 26, &full, &len, &d), 0);
    static const struct {
        uint32_t w152, w156;
    } bad[] = {
        {4u | (16u << 16), 0x41000000u},                 /* targets beyond the four */
        {65u | (SW_LORA_ATTN_C_PROJ << 16), 0x41000000u}, /* rank above the bound */
        {4u | (SW_LORA_ATTN_C_PROJ << 16), 0x7fc00000u},  /* alpha NaN */
        {4u, 0x41000000u},                               /* rank without targets */
        {0u, 0x41000000u},                               /* alpha without a rank */
        {8u | (SW_LORA_ATTN_C_PROJ << 16), 0x41000000u}, /* another rank: sizes disagree */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *x = malloc(len);
        memcpy(x, full, len);
        for (int b = 0; b < 4; b++) {
            x[152 + b] = (char)(bad[i].w152 >> (8 * b));
            x[156 + b] = (char)(bad[i].w156 >> (8 * b));
        }
        crypto_generichash((unsigned char *)x + len - 32, 32, (const unsigned char *)x, len - 32,
                           NULL, 0);
        char bad_path[600];
        snprintf(bad_path, sizeof bad_path, "%s/bad.swck", tmpdir);
        assert_int_equal(sw_file_write_atomic(bad_path, x, len, 0644, &d), 0);
        free(x);
        g = NULL;
        const int rc = sw_checkpoint_load(bad_path, run_id, NULL, &g, &meta, &d);
        if (rc == 0) fail_msg("case %zu: accepted", i);
        assert_null(g);
        unlink(bad_path);
    }
    free(full);
    unlink(out);
    sw_vv_fini(&vv);
    sw_fixed_free(f);
    sw_gpt2_free(base);
}

static int setup(void **state)
{
    (void)state;
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s/adapter_config.json", tmpdir);
    unlink(path);
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", tmpdir);
    unlink(path);
    return rmdir(tmpdir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_targets),
        cmocka_unit_test(test_attach),
        cmocka_unit_test(test_merge_matches_forward),
        cmocka_unit_test(test_peft_files),
        cmocka_unit_test(test_checkpoint),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
