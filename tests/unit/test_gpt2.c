/*
 * gpt2: tensor table, parameter block, save/load round trips, the loader's
 * error cases, digest and random initialisation.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "fileio.h"
#include "gpt2.h"
#include "gpt2_config.h"
#include "half.h"
#include "safetensors.h"
#include "sw_error.h"

static sw_gpt2_config small_cfg(bool tied)
{
    sw_gpt2_config c = {.n_layer = 2,
                        .n_head = 2,
                        .n_embd = 16,
                        .n_positions = 24,
                        .vocab_size = 37,
                        .layer_norm_epsilon = 1e-5f,
                        .tie_word_embeddings = tied};
    return c;
}

static sw_gpt2_config gpt2_small_cfg(void)
{
    sw_gpt2_config c = {.n_layer = 12,
                        .n_head = 12,
                        .n_embd = 768,
                        .n_positions = 1024,
                        .vocab_size = 50257,
                        .layer_norm_epsilon = 1e-5f,
                        .tie_word_embeddings = true};
    return c;
}

/* A temporary directory, removed (with the files tests put there) by rmtree. */
static void make_tmpdir(char *buf, size_t size)
{
    snprintf(buf, size, "/tmp/sw_test_gpt2_XXXXXX");
    assert_non_null(mkdtemp(buf));
}

static void rmtree(const char *dir)
{
    const char *names[] = {"config.json", "model.safetensors"};
    char path[4200];
    for (size_t i = 0; i < 2; i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        unlink(path);
    }
    rmdir(dir);
}

static void read_all(const char *path, char **buf, size_t *len)
{
    sw_diag d;
    assert_int_equal(sw_file_read(path, 1u << 30, buf, len, &d), 0);
}

/* ------------------------------------------------------------------ table */

static void test_tensor_table_gpt2_small(void **state)
{
    (void)state;
    sw_gpt2_config cfg = gpt2_small_cfg();
    assert_int_equal(sw_gpt2_tensor_count(&cfg), 4 + 12 * 12);
    size_t next = 0;
    for (size_t i = 0; i < sw_gpt2_tensor_count(&cfg); i++) {
        sw_gpt2_tensor t;
        sw_gpt2_tensor_at(&cfg, i, &t);
        assert_int_equal(t.offset, next); /* contiguous, in order */
        size_t numel = (size_t)t.shape[0] * (t.ndim == 2 ? (size_t)t.shape[1] : 1);
        assert_int_equal(t.numel, numel);
        next += t.numel;
    }
    /* GPT-2 small's published parameter count */
    assert_int_equal(next, 124439808);
    assert_int_equal(sw_gpt2_config_param_count(&cfg), 124439808);

    sw_gpt2_tensor t;
    sw_gpt2_tensor_at(&cfg, 0, &t);
    assert_string_equal(t.name, "wte.weight");
    assert_int_equal(t.kind, SW_GPT2_WTE);
    assert_int_equal(t.shape[0], 50257);
    sw_gpt2_tensor_at(&cfg, 1, &t);
    assert_string_equal(t.name, "wpe.weight");
    assert_int_equal(t.shape[0], 1024);
    sw_gpt2_tensor_at(&cfg, 2 + 12 * 5 + 2, &t);
    assert_string_equal(t.name, "h.5.attn.c_attn.weight");
    assert_int_equal(t.kind, SW_GPT2_ATTN_W);
    assert_int_equal(t.layer, 5);
    assert_int_equal(t.shape[0], 768);
    assert_int_equal(t.shape[1], 3 * 768);
    sw_gpt2_tensor_at(&cfg, 2 + 12 * 11 + 10, &t);
    assert_string_equal(t.name, "h.11.mlp.c_proj.weight");
    assert_int_equal(t.shape[0], 4 * 768);
    assert_int_equal(t.shape[1], 768);
    sw_gpt2_tensor_at(&cfg, 147, &t);
    assert_string_equal(t.name, "ln_f.bias");
    assert_int_equal(t.layer, -1);
}

static void test_tensor_table_untied_and_views(void **state)
{
    (void)state;
    sw_gpt2_config cfg = small_cfg(false);
    const size_t n = sw_gpt2_tensor_count(&cfg);
    assert_int_equal(n, 4 + 12 * 2 + 1);
    sw_gpt2_tensor t;
    sw_gpt2_tensor_at(&cfg, n - 1, &t);
    assert_string_equal(t.name, "lm_head.weight");
    assert_int_equal(t.kind, SW_GPT2_LM_HEAD);
    assert_int_equal(t.offset + t.numel, sw_gpt2_config_param_count(&cfg));

    sw_gpt2 *m;
    sw_diag d;
    assert_int_equal(sw_gpt2_alloc(&cfg, &m, &d), 0);
    assert_int_equal(((uintptr_t)m->params) % 64, 0);
    assert_int_equal(m->n_params, sw_gpt2_config_param_count(&cfg));
    /* every view points where the table says */
    for (size_t i = 0; i < n; i++) {
        sw_gpt2_tensor_at(&cfg, i, &t);
        const float *want = m->params + t.offset;
        const sw_gpt2_layer *lw = t.layer >= 0 ? &m->w.layers[t.layer] : NULL;
        const float *got = NULL;
        switch (t.kind) {
        case SW_GPT2_WTE:
            got = m->w.wte;
            break;
        case SW_GPT2_WPE:
            got = m->w.wpe;
            break;
        case SW_GPT2_LN1_W:
            got = lw->ln_1_w;
            break;
        case SW_GPT2_LN1_B:
            got = lw->ln_1_b;
            break;
        case SW_GPT2_ATTN_W:
            got = lw->attn_w;
            break;
        case SW_GPT2_ATTN_B:
            got = lw->attn_b;
            break;
        case SW_GPT2_ATTN_PROJ_W:
            got = lw->attn_proj_w;
            break;
        case SW_GPT2_ATTN_PROJ_B:
            got = lw->attn_proj_b;
            break;
        case SW_GPT2_LN2_W:
            got = lw->ln_2_w;
            break;
        case SW_GPT2_LN2_B:
            got = lw->ln_2_b;
            break;
        case SW_GPT2_FC_W:
            got = lw->fc_w;
            break;
        case SW_GPT2_FC_B:
            got = lw->fc_b;
            break;
        case SW_GPT2_FC_PROJ_W:
            got = lw->fc_proj_w;
            break;
        case SW_GPT2_FC_PROJ_B:
            got = lw->fc_proj_b;
            break;
        case SW_GPT2_LNF_W:
            got = m->w.ln_f_w;
            break;
        case SW_GPT2_LNF_B:
            got = m->w.ln_f_b;
            break;
        case SW_GPT2_LM_HEAD:
            got = m->w.lm_head;
            break;
        case SW_GPT2_LORA_A:
            got = lw->lora_a[t.target];
            break;
        case SW_GPT2_LORA_B:
            got = lw->lora_b[t.target];
            break;
        }
        assert_ptr_equal(got, want);
    }
    sw_gpt2_free(m);

    cfg.tie_word_embeddings = true;
    assert_int_equal(sw_gpt2_alloc(&cfg, &m, &d), 0);
    assert_ptr_equal(m->w.lm_head, m->w.wte);
    sw_gpt2_free(m);
    sw_gpt2_free(NULL);
}

/* Adapters are appended: the base keeps its table, each adapted weight gets
 * lora_A (r, in) and lora_B (out, r) per layer, contiguous, and the views
 * point at them; an unadapted weight has none. */
static void test_tensor_table_lora(void **state)
{
    (void)state;
    for (int tied = 0; tied < 2; tied++) {
        sw_gpt2_config base = small_cfg(tied);
        sw_gpt2_config cfg = base;
        cfg.lora_rank = 3;
        cfg.lora_alpha = 6.0f;
        cfg.lora_targets = SW_LORA_C_ATTN | SW_LORA_MLP_C_PROJ;
        sw_diag d;
        assert_int_equal(sw_gpt2_config_validate(&cfg, "lora", &d), 0);
        const size_t nb = sw_gpt2_tensor_count(&base), n = sw_gpt2_tensor_count(&cfg);
        assert_int_equal(sw_gpt2_base_tensor_count(&cfg), nb);
        assert_int_equal(n, nb + 2 * 2 * (size_t)cfg.n_layer);
        const uint64_t C = (uint64_t)cfg.n_embd;
        assert_int_equal(sw_gpt2_config_param_count(&cfg),
                         sw_gpt2_config_param_count(&base) +
                             (uint64_t)cfg.n_layer * 3 * ((C + 3 * C) + (4 * C + C)));
        size_t next = 0;
        for (size_t i = 0; i < n; i++) {
            sw_gpt2_tensor t, b;
            sw_gpt2_tensor_at(&cfg, i, &t);
            assert_int_equal(t.offset, next);
            next += t.numel;
            if (i < nb) {
                sw_gpt2_tensor_at(&base, i, &b);
                assert_string_equal(t.name, b.name);
                assert_int_equal(t.offset, b.offset);
                assert_int_equal(t.target, -1);
            }
        }
        assert_int_equal(next, sw_gpt2_config_param_count(&cfg));
        sw_gpt2_tensor t;
        sw_gpt2_tensor_at(&cfg, nb, &t);
        assert_string_equal(t.name, "h.0.attn.c_attn.lora_A.weight");
        assert_int_equal(t.kind, SW_GPT2_LORA_A);
        assert_int_equal(t.shape[0], 3);
        assert_int_equal(t.shape[1], cfg.n_embd);
        sw_gpt2_tensor_at(&cfg, nb + 3, &t);
        assert_string_equal(t.name, "h.0.mlp.c_proj.lora_B.weight");
        assert_int_equal(t.kind, SW_GPT2_LORA_B);
        assert_int_equal(t.target, 3);
        assert_int_equal(t.shape[0], cfg.n_embd);
        assert_int_equal(t.shape[1], 3);
        sw_gpt2_tensor_at(&cfg, n - 4, &t);
        assert_string_equal(t.name, "h.1.attn.c_attn.lora_A.weight");
        assert_int_equal(t.layer, 1);

        sw_gpt2 *m;
        assert_int_equal(sw_gpt2_alloc(&cfg, &m, &d), 0);
        for (size_t i = nb; i < n; i++) {
            sw_gpt2_tensor_at(&cfg, i, &t);
            const sw_gpt2_layer *lw = &m->w.layers[t.layer];
            assert_ptr_equal(t.kind == SW_GPT2_LORA_A ? lw->lora_a[t.target] : lw->lora_b[t.target],
                             m->params + t.offset);
        }
        assert_null(m->w.layers[0].lora_a[1]);
        assert_null(m->w.layers[1].lora_b[2]);
        /* a model with adapters is never saved as a plain model */
        assert_int_equal(sw_gpt2_save(m, "/nonexistent", SW_DTYPE_F32, &d), SW_EINVAL);
        sw_gpt2_free(m);

        /* bad adapter fields */
        sw_gpt2_config bad = cfg;
        bad.lora_targets = 0;
        assert_int_equal(sw_gpt2_config_validate(&bad, "x", &d), SW_EFORMAT);
        bad = cfg;
        bad.lora_rank = SW_LORA_MAX_RANK + 1;
        assert_int_equal(sw_gpt2_config_validate(&bad, "x", &d), SW_EFORMAT);
        bad = cfg;
        bad.lora_alpha = 0.0f;
        assert_int_equal(sw_gpt2_config_validate(&bad, "x", &d), SW_EFORMAT);
        bad = base;
        bad.lora_targets = SW_LORA_C_FC;
        assert_int_equal(sw_gpt2_config_validate(&bad, "x", &d), SW_EFORMAT);
        bad = cfg;
        bad.lora_targets = 16;
        assert_int_equal(sw_gpt2_config_validate(&bad, "x", &d), SW_EFORMAT);
    }
}

static void test_alloc_rejects_bad_config(void **state)
{
    (void)state;
    sw_gpt2_config cfg = small_cfg(true);
    cfg.n_head = 3; /* 16 % 3 != 0 */
    sw_gpt2 *m = NULL;
    sw_diag d = {{0}};
    assert_true(sw_gpt2_alloc(&cfg, &m, &d) < 0);
    assert_null(m);
    assert_true(strlen(d.msg) > 0);
}

/* ------------------------------------------------------- init and digest */

static void test_init_deterministic_and_gpt2_like(void **state)
{
    (void)state;
    sw_gpt2_config cfg = small_cfg(true);
    cfg.n_embd = 64;
    cfg.vocab_size = 500;
    sw_gpt2 *a, *b, *c;
    sw_diag d;
    assert_int_equal(sw_gpt2_alloc(&cfg, &a, &d), 0);
    assert_int_equal(sw_gpt2_alloc(&cfg, &b, &d), 0);
    assert_int_equal(sw_gpt2_alloc(&cfg, &c, &d), 0);
    sw_gpt2_init_random(a, 42);
    sw_gpt2_init_random(b, 42);
    sw_gpt2_init_random(c, 43);
    uint8_t da[32], db[32], dc[32];
    sw_gpt2_digest(a, da);
    sw_gpt2_digest(b, db);
    sw_gpt2_digest(c, dc);
    assert_memory_equal(da, db, 32);
    assert_memory_not_equal(da, dc, 32);
    assert_memory_equal(a->params, b->params, a->n_params * sizeof(float));

    /* GPT-2's scheme: std 0.02, residual projections 0.02/sqrt(2L), zero
     * biases, unit gains.  With 32000 draws the std is within 2%. */
    const size_t V = 500, C = 64;
    double s2 = 0, mean = 0;
    for (size_t i = 0; i < V * C; i++) {
        s2 += (double)a->w.wte[i] * a->w.wte[i];
        mean += a->w.wte[i];
    }
    assert_true(fabs(sqrt(s2 / (double)(V * C)) - 0.02) < 0.02 * 0.02);
    assert_true(fabs(mean / (double)(V * C)) < 0.001);
    s2 = 0;
    for (size_t i = 0; i < 4 * C * C; i++)
        s2 += (double)a->w.layers[1].fc_proj_w[i] * a->w.layers[1].fc_proj_w[i];
    assert_true(fabs(sqrt(s2 / (double)(4 * C * C)) - 0.01) < 0.01 * 0.02); /* 0.02/sqrt(4) */
    for (size_t i = 0; i < C; i++) {
        assert_true(a->w.layers[0].ln_1_w[i] == 1.0f);
        assert_true(a->w.layers[0].ln_1_b[i] == 0.0f);
        assert_true(a->w.ln_f_w[i] == 1.0f);
        assert_true(a->w.layers[1].attn_proj_b[i] == 0.0f);
    }
    for (size_t i = 0; i < 3 * C; i++)
        assert_true(a->w.layers[1].attn_b[i] == 0.0f);
    sw_gpt2_free(a);
    sw_gpt2_free(b);
    sw_gpt2_free(c);
}

static void test_digest_sensitivity(void **state)
{
    (void)state;
    sw_gpt2_config cfg = small_cfg(true);
    sw_gpt2 *m;
    sw_diag d;
    assert_int_equal(sw_gpt2_alloc(&cfg, &m, &d), 0);
    sw_gpt2_init_random(m, 7);
    uint8_t d0[32], d1[32];
    sw_gpt2_digest(m, d0);
    char hex[65];
    sw_digest_hex(d0, hex);
    assert_int_equal(strlen(hex), 64);
    assert_int_equal(strspn(hex, "0123456789abcdef"), 64);

    float *last = &m->params[m->n_params - 1];
    const float keep = *last;
    *last = nextafterf(keep, 1.0f); /* one ulp of the last parameter */
    sw_gpt2_digest(m, d1);
    assert_memory_not_equal(d0, d1, 32);
    *last = keep;
    m->cfg.layer_norm_epsilon = 1e-6f; /* the architecture is hashed too */
    sw_gpt2_digest(m, d1);
    assert_memory_not_equal(d0, d1, 32);
    m->cfg.layer_norm_epsilon = 1e-5f;
    sw_gpt2_digest(m, d1);
    assert_memory_equal(d0, d1, 32);
    sw_gpt2_free(m);
}

/* ------------------------------------------------------------ round trips */

static void test_save_load_f32_roundtrip(void **state)
{
    (void)state;
    char d1[64], d2[64], path1[128], path2[128];
    make_tmpdir(d1, sizeof(d1));
    make_tmpdir(d2, sizeof(d2));
    for (int tied = 0; tied < 2; tied++) {
        sw_gpt2_config cfg = small_cfg(tied);
        sw_gpt2 *m, *r;
        sw_diag d;
        assert_int_equal(sw_gpt2_alloc(&cfg, &m, &d), 0);
        sw_gpt2_init_random(m, 100 + (uint64_t)tied);
        assert_int_equal(sw_gpt2_save(m, d1, SW_DTYPE_F32, &d), 0);
        assert_int_equal(sw_gpt2_save(m, d2, SW_DTYPE_F32, &d), 0);
        /* byte-identical files */
        snprintf(path1, sizeof(path1), "%s/model.safetensors", d1);
        snprintf(path2, sizeof(path2), "%s/model.safetensors", d2);
        char *b1, *b2;
        size_t l1, l2;
        read_all(path1, &b1, &l1);
        read_all(path2, &b2, &l2);
        assert_int_equal(l1, l2);
        assert_memory_equal(b1, b2, l1);
        free(b1);
        free(b2);

        int rc = sw_gpt2_load(d1, &r, &d);
        if (rc < 0) fail_msg("load: %s", d.msg);
        assert_int_equal(r->cfg.tie_word_embeddings, tied);
        assert_int_equal(r->n_params, m->n_params);
        assert_memory_equal(r->params, m->params, m->n_params * sizeof(float));
        uint8_t dm[32], dr[32];
        sw_gpt2_digest(m, dm);
        sw_gpt2_digest(r, dr);
        assert_memory_equal(dm, dr, 32);
        sw_gpt2_free(m);
        sw_gpt2_free(r);
    }
    rmtree(d1);
    rmtree(d2);
}

static void test_save_load_f16(void **state)
{
    (void)state;
    char dir[64];
    make_tmpdir(dir, sizeof(dir));
    sw_gpt2_config cfg = small_cfg(false);
    sw_gpt2 *m, *r;
    sw_diag d;
    assert_int_equal(sw_gpt2_alloc(&cfg, &m, &d), 0);
    sw_gpt2_init_random(m, 5);
    assert_int_equal(sw_gpt2_save(m, dir, SW_DTYPE_F16, &d), 0);
    assert_int_equal(sw_gpt2_load(dir, &r, &d), 0);
    uint8_t d_orig[32], d_loaded[32], d_rounded[32];
    sw_gpt2_digest(m, d_orig);
    for (size_t i = 0; i < m->n_params; i++)
        m->params[i] = sw_f16_to_f32(sw_f32_to_f16(m->params[i]));
    sw_gpt2_digest(m, d_rounded);
    sw_gpt2_digest(r, d_loaded);
    assert_memory_equal(d_loaded, d_rounded, 32);
    assert_memory_not_equal(d_loaded, d_orig, 32); /* F16 did round something */

    /* F16 cannot hold 1e5: refused, naming the tensor */
    m->params[0] = 1e5f;
    assert_int_equal(sw_gpt2_save(m, dir, SW_DTYPE_F16, &d), SW_ETOOBIG);
    assert_non_null(strstr(d.msg, "wte.weight"));
    assert_int_equal(sw_gpt2_save(m, dir, SW_DTYPE_BF16, &d), SW_EUNSUPPORTED);
    sw_gpt2_free(m);
    sw_gpt2_free(r);
    rmtree(dir);
}

/* ------------------------------------------------------------ loader errors */

/*
 * Writes DIR/config.json for cfg and DIR/model.safetensors holding the
 * canonical tensors of m, edited: `drop` is left out, `rename` (if set)
 * replaces the name of the tensor `renamed`, `extra` tensors are appended.
 */
typedef struct edit {
    const char *drop;
    const char *renamed, *rename;
    const char *reshape; /* first dimension minus one */
    const char *extra[3];
    int64_t extra_shape[3][2];
    int extra_ndim[3];
} edit;

static void write_edited(const sw_gpt2 *m, const char *dir, const edit *e)
{
    char path[256];
    sw_diag d;
    snprintf(path, sizeof(path), "%s/config.json", dir);
    assert_int_equal(sw_gpt2_config_write(path, &m->cfg, &d), 0);
    const size_t n = sw_gpt2_tensor_count(&m->cfg);
    sw_gpt2_tensor *ct = calloc(n, sizeof(*ct));
    sw_st_write_tensor *wt = calloc(n + 3, sizeof(*wt));
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        sw_gpt2_tensor_at(&m->cfg, i, &ct[i]);
        if (e->drop && strcmp(ct[i].name, e->drop) == 0) continue;
        wt[k].name = ct[i].name;
        if (e->renamed && strcmp(ct[i].name, e->renamed) == 0) wt[k].name = e->rename;
        wt[k].ndim = ct[i].ndim;
        wt[k].shape[0] = ct[i].shape[0];
        wt[k].shape[1] = ct[i].shape[1];
        if (e->reshape && strcmp(ct[i].name, e->reshape) == 0) wt[k].shape[0]--;
        wt[k].data = m->params + ct[i].offset;
        k++;
    }
    for (int x = 0; x < 3 && e->extra[x]; x++) {
        wt[k].name = e->extra[x];
        wt[k].ndim = e->extra_ndim[x];
        wt[k].shape[0] = e->extra_shape[x][0];
        wt[k].shape[1] = e->extra_shape[x][1];
        wt[k].data = m->params; /* any data of the right size */
        k++;
    }
    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    int rc = sw_safetensors_write(path, wt, k, SW_DTYPE_F32, &d);
    if (rc < 0) fail_msg("write: %s", d.msg);
    free(ct);
    free(wt);
}

/* Loads dir; expects rc and a diag containing both needles. */
static void expect_load(const char *dir, int want_rc, const char *needle1, const char *needle2)
{
    sw_gpt2 *r = NULL;
    sw_diag d = {{0}};
    int rc = sw_gpt2_load(dir, &r, &d);
    if (rc != want_rc) fail_msg("load %s: rc %d, want %d (%s)", dir, rc, want_rc, d.msg);
    if (want_rc == 0) {
        assert_non_null(r);
        sw_gpt2_free(r);
        return;
    }
    assert_null(r);
    if (needle1 && !strstr(d.msg, needle1))
        fail_msg("diag '%s' does not name '%s'", d.msg, needle1);
    if (needle2 && !strstr(d.msg, needle2))
        fail_msg("diag '%s' does not name '%s'", d.msg, needle2);
}

static void test_loader_errors(void **state)
{
    (void)state;
    char dir[64];
    make_tmpdir(dir, sizeof(dir));
    sw_gpt2_config cfg = small_cfg(true);
    sw_gpt2 *m;
    sw_diag d;
    assert_int_equal(sw_gpt2_alloc(&cfg, &m, &d), 0);
    sw_gpt2_init_random(m, 9);

    edit e = {0};
    write_edited(m, dir, &e);
    expect_load(dir, 0, NULL, NULL);

    e = (edit){.drop = "h.1.ln_2.bias"};
    write_edited(m, dir, &e);
    expect_load(dir, SW_EFORMAT, "missing tensor 'h.1.ln_2.bias'", "model.safetensors");

    e = (edit){.reshape = "wpe.weight"};
    write_edited(m, dir, &e);
    expect_load(dir, SW_EFORMAT, "'wpe.weight' has shape [23, 16], expected [24, 16]",
                "model.safetensors");

    e = (edit){.extra = {"h.0.mlp.c_gate.weight"}, .extra_ndim = {1}, .extra_shape = {{16}}};
    write_edited(m, dir, &e);
    expect_load(dir, SW_EFORMAT, "unknown tensor 'h.0.mlp.c_gate.weight'", "model.safetensors");

    /* a layer the config does not have */
    e = (edit){.extra = {"h.2.ln_1.weight"}, .extra_ndim = {1}, .extra_shape = {{16}}};
    write_edited(m, dir, &e);
    expect_load(dir, SW_EFORMAT, "unknown tensor 'h.2.ln_1.weight'", NULL);

    /* the same tensor with and without the prefix */
    e = (edit){.extra = {"transformer.wte.weight"}, .extra_ndim = {2}, .extra_shape = {{37, 16}}};
    write_edited(m, dir, &e);
    expect_load(dir, SW_EFORMAT, "transformer.wte.weight", "given twice");

    /* prefixed names, mask buffers and a tied head's copy are accepted */
    e = (edit){.renamed = "h.0.attn.c_proj.bias",
               .rename = "transformer.h.0.attn.c_proj.bias",
               .extra = {"h.0.attn.bias", "transformer.h.1.attn.masked_bias", "lm_head.weight"},
               .extra_ndim = {2, 1, 2},
               .extra_shape = {{24, 24}, {1}, {37, 16}}};
    write_edited(m, dir, &e);
    expect_load(dir, 0, NULL, NULL);

    /* untied: the head is required */
    sw_gpt2_config ucfg = small_cfg(false);
    sw_gpt2 *u;
    assert_int_equal(sw_gpt2_alloc(&ucfg, &u, &d), 0);
    sw_gpt2_init_random(u, 10);
    e = (edit){.drop = "lm_head.weight"};
    write_edited(u, dir, &e);
    expect_load(dir, SW_EFORMAT, "missing tensor 'lm_head.weight'", NULL);

    /* a non-finite weight */
    u->params[5] = NAN;
    e = (edit){0};
    write_edited(u, dir, &e);
    expect_load(dir, SW_EFORMAT, "'wte.weight' holds a non-finite value", NULL);

    /* no model file */
    char path[128];
    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    unlink(path);
    expect_load(dir, SW_ENOENT, "model.safetensors", NULL);

    sw_gpt2_free(u);
    sw_gpt2_free(m);
    rmtree(dir);
}

static void test_load_fixture(void **state)
{
    (void)state;
    sw_gpt2 *m;
    sw_diag d;
    int rc = sw_gpt2_load(SW_MODEL_DIR, &m, &d);
    if (rc < 0) fail_msg("%s", d.msg);
    /* the fixture's README: 4 layers, 4 heads, C 128, 256 positions, tied, 7.26 M */
    assert_int_equal(m->cfg.n_layer, 4);
    assert_int_equal(m->cfg.n_head, 4);
    assert_int_equal(m->cfg.n_embd, 128);
    assert_int_equal(m->cfg.n_positions, 256);
    assert_int_equal(m->cfg.vocab_size, 50257);
    assert_true(m->cfg.tie_word_embeddings);
    assert_int_equal(m->n_params,
                     50257 * 128 + 256 * 128 + 4 * (12 * 128 * 128 + 13 * 128) + 2 * 128);
    assert_ptr_equal(m->w.lm_head, m->w.wte);
    sw_gpt2_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tensor_table_gpt2_small),
        cmocka_unit_test(test_tensor_table_untied_and_views),
        cmocka_unit_test(test_tensor_table_lora),
        cmocka_unit_test(test_alloc_rejects_bad_config),
        cmocka_unit_test(test_init_deterministic_and_gpt2_like),
        cmocka_unit_test(test_digest_sensitivity),
        cmocka_unit_test(test_save_load_f32_roundtrip),
        cmocka_unit_test(test_save_load_f16),
        cmocka_unit_test(test_loader_errors),
        cmocka_unit_test(test_load_fixture),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
