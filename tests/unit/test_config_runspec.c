/*
 * The run-spec table (core/runspec.h) against every place that uses it:
 * swarmd's configuration rows (daemon/config.c), the defaults, the bounds
 * that sw_runspec_validate enforces and the keys of the canonical bytes.
 * Any place that disagrees with the table fails here.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "config.h"
#include "runspec.h"

/* A spec every bound accepts: the defaults, a small model, a set max_scale. */
static void valid_spec(sw_runspec *rs)
{
    sw_runspec_defaults(rs);
    rs->arch = (sw_gpt2_config){.n_layer = 2,
                                .n_head = 2,
                                .n_embd = 64,
                                .n_positions = 128,
                                .vocab_size = 50257,
                                .layer_norm_epsilon = 1e-5f,
                                .tie_word_embeddings = true};
    rs->max_scale = 0.5;
}

static const swd_cfg_key *config_row(const sw_runspec_key *k)
{
    assert_non_null(k->config);
    assert_memory_equal(k->config, "[train] ", 8);
    return swd_config_find("train", k->config + 8);
}

/* Every settable key has one [train] row with its default, bounds and doc;
 * every run-spec row of the configuration is a key of the table. */
static void test_config_rows_follow_the_table(void **state)
{
    (void)state;
    size_t settable = 0;
    for (size_t i = 0; i < sw_runspec_key_count; i++) {
        const sw_runspec_key *k = &sw_runspec_keys[i];
        if (!k->settable) continue;
        settable++;
        const swd_cfg_key *row = config_row(k);
        assert_non_null(row);
        assert_true(row->run_spec);
        assert_string_equal(row->def, k->def);
        assert_string_equal(row->doc, k->doc);
        assert_int_equal(row->offset, offsetof(swd_config, spec) + k->off);
        switch (k->type) {
        case SW_RS_U64:
            assert_int_equal(row->type, SWD_CFG_UINT64);
            assert_true(row->umin == (uint64_t)k->lo && row->umax == (uint64_t)k->hi);
            break;
        case SW_RS_INT:
            assert_int_equal(row->type, SWD_CFG_INT32);
            assert_true(row->imin == (int64_t)k->lo && row->imax == (int64_t)k->hi);
            break;
        case SW_RS_DOUBLE:
            assert_int_equal(row->type, SWD_CFG_DOUBLE);
            assert_true(row->dmin == k->lo && row->dmax == k->hi);
            assert_int_equal(row->dmin_exclusive,
                             (k->flags & SW_RSK_LO_OPEN) && !(k->flags & SW_RSK_CALIBRATE));
            assert_int_equal(row->dmax_exclusive, (k->flags & SW_RSK_HI_OPEN) != 0);
            break;
        case SW_RS_SCHEDULE:
        case SW_RS_PERTURB:
            assert_int_equal(row->type, SWD_CFG_ENUM);
            break;
        case SW_RS_STRING:
            assert_int_equal(row->type, SWD_CFG_CHARS);
            assert_int_equal(row->smax + 1, k->size);
            break;
        default:
            fail_msg("%s: a settable key of a type no configuration row has", k->path);
        }
    }
    size_t rows = 0;
    for (size_t i = 0; i < swd_config_key_count; i++)
        if (swd_config_keys[i].run_spec) rows++;
    assert_int_equal(rows, settable);
    assert_true(settable >= 11);
}

/* The configuration's defaults are the table's, key by key. */
static void test_config_defaults_are_the_tables(void **state)
{
    (void)state;
    swd_config cfg;
    assert_int_equal(swd_config_defaults(&cfg), 0);
    sw_runspec want;
    sw_runspec_defaults(&want);
    assert_null(sw_runspec_diff(&cfg.spec, &want));
    /* and the table's text reads back: what the docs print is what is used */
    for (size_t i = 0; i < sw_runspec_key_count; i++) {
        const sw_runspec_key *k = &sw_runspec_keys[i];
        if (!k->settable) continue;
        char text[64];
        swd_config_value_text(&cfg, config_row(k), text, sizeof text);
        if (k->type == SW_RS_DOUBLE)
            assert_true(strtod(text, NULL) == strtod(k->def, NULL));
        else
            assert_string_equal(text, k->def);
    }
    swd_config_fini(&cfg);
    /* the defaults with a calibrated max_scale form a valid spec */
    sw_runspec rs;
    valid_spec(&rs);
    sw_diag d;
    assert_int_equal(sw_runspec_validate(&rs, "defaults", &d), 0);
    rs.max_scale = 0; /* "calibrate" is not a value a run holds */
    assert_int_equal(sw_runspec_validate(&rs, "defaults", &d), SW_EINVAL);
    assert_non_null(strstr(d.msg, "train.max_scale"));
}

/* Writes v just past a bound of k into rs. */
static void set_number(sw_runspec *rs, const sw_runspec_key *k, double v)
{
    void *f = (char *)rs + k->off;
    if (k->type == SW_RS_DOUBLE) *(double *)f = v;
    if (k->type == SW_RS_U64) *(uint64_t *)f = (uint64_t)v;
    if (k->type == SW_RS_INT) *(int *)f = (int)v;
}

/* sw_runspec_validate enforces exactly the table's bounds, naming the key. */
static void test_validate_enforces_the_tables_bounds(void **state)
{
    (void)state;
    int checked = 0;
    for (size_t i = 0; i < sw_runspec_key_count; i++) {
        const sw_runspec_key *k = &sw_runspec_keys[i];
        if (!k->settable || !(k->type == SW_RS_DOUBLE || k->type == SW_RS_U64 ||
                              k->type == SW_RS_INT))
            continue;
        bool integer = k->type != SW_RS_DOUBLE;
        double step = integer ? 1 : 1e-9 * (k->hi - k->lo);
        struct {
            double v;
            bool ok;
        } cases[] = {
            {k->lo, !(k->flags & SW_RSK_LO_OPEN)},
            {k->hi, !(k->flags & SW_RSK_HI_OPEN)},
            {k->hi + step, false},
            {k->lo - step, false},
        };
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
            if (cases[c].v < 0 && integer) continue; /* an unsigned member cannot hold it */
            sw_runspec rs;
            valid_spec(&rs);
            if (strcmp(k->path, "train.total_steps") == 0) rs.warmup_steps = 0;
            if (strcmp(k->path, "train.warmup_steps") == 0)
                rs.total_steps = SW_RUNSPEC_MAX_STEPS; /* warmup may reach its own bound */
            set_number(&rs, k, cases[c].v);
            sw_diag d = {{0}};
            int rc = sw_runspec_validate(&rs, "t", &d);
            if (cases[c].ok) {
                assert_int_equal(rc, 0);
            } else {
                assert_int_equal(rc, SW_EINVAL);
                assert_non_null(strstr(d.msg, k->path));
            }
            checked++;
        }
    }
    assert_true(checked >= 20);
}

/* The canonical bytes hold exactly the table's keys, each once. */
static void test_canonical_keys_are_the_tables(void **state)
{
    (void)state;
    /* without adapters the SW_RSK_LORA keys are left out, an SW_RSK_OPTIONAL key at its
     * empty default too; with adapters and trained rows, every key is there */
    size_t n_lora = 0, n_optional = 0;
    for (size_t i = 0; i < sw_runspec_key_count; i++) {
        n_lora += (sw_runspec_keys[i].flags & SW_RSK_LORA) != 0;
        n_optional += (sw_runspec_keys[i].flags & SW_RSK_OPTIONAL) != 0;
    }
    assert_int_equal(n_lora, 4);
    assert_int_equal(n_optional, 1);
    /* variant 0: neither; 1: adapters; 2: trained rows (adapters freeze wte: not both) */
    for (int with = 0; with < 3; with++) {
        sw_runspec rs;
        valid_spec(&rs);
        snprintf(rs.trainable, sizeof rs.trainable, ".*");
        if (with == 1) snprintf(rs.adapter, sizeof rs.adapter, "lora");
        if (with == 2) snprintf(rs.trainable_tokens, sizeof rs.trainable_tokens, "5,7");
        char buf[SW_RUNSPEC_MAX_BYTES];
        size_t len;
        sw_diag d;
        assert_int_equal(sw_runspec_canonical(&rs, buf, sizeof buf, &len, &d), 0);
        json_t *root = json_loadb(buf, len, 0, NULL);
        assert_non_null(root);
        size_t n = 0;
        const char *key;
        json_t *v;
        json_object_foreach(root, key, v)
        {
            if (json_is_object(v)) {
                const char *sub;
                json_t *sv;
                json_object_foreach(v, sub, sv)
                {
                    char path[128];
                    snprintf(path, sizeof path, "%s.%s", key, sub);
                    const sw_runspec_key *k = sw_runspec_find(path);
                    assert_non_null(k);
                    assert_true(with == 1 || !(k->flags & SW_RSK_LORA));
                    assert_true(with == 2 || !(k->flags & SW_RSK_OPTIONAL));
                    n++;
                }
            } else {
                assert_non_null(sw_runspec_find(key));
                n++;
            }
        }
        assert_int_equal(n, sw_runspec_key_count - (with == 1 ? 0 : n_lora) -
                                (with == 2 ? 0 : n_optional));
        json_decref(root);
    }
}

/* A joiner adopts every key an operator sets, and no key of the model. */
static void test_adopt_flags(void **state)
{
    (void)state;
    for (size_t i = 0; i < sw_runspec_key_count; i++) {
        const sw_runspec_key *k = &sw_runspec_keys[i];
        assert_int_equal((k->flags & SW_RSK_ADOPT) != 0, k->settable);
        if (!k->settable) assert_true(k->config == NULL || strcmp(k->config, "[model] path") == 0);
    }
    const sw_runspec_key *ms = sw_runspec_find("train.max_scale");
    assert_non_null(ms);
    assert_true(ms->flags & SW_RSK_CALIBRATE);
    assert_string_equal(ms->def, "0");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_rows_follow_the_table),
        cmocka_unit_test(test_config_defaults_are_the_tables),
        cmocka_unit_test(test_validate_enforces_the_tables_bounds),
        cmocka_unit_test(test_canonical_keys_are_the_tables),
        cmocka_unit_test(test_adopt_flags),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
