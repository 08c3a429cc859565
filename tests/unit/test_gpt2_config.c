/*
 * gpt2_config: the fixture's config.json, defaults, every rejection naming
 * its key, parameter counts checked against independent figures (the
 * fixture's own tensors, GPT-2 small's published 124,439,808), and a
 * write/parse round trip read back through jansson.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "gpt2_config.h"
#include "safetensors.h"

#define FIXTURE_DIR SW_MODEL_DIR

static const char *base_keys =
    "\"n_embd\": 128, \"n_layer\": 4, \"n_head\": 4, \"n_positions\": 256, \"vocab_size\": 50257";

static int parse(const char *json, sw_gpt2_config *cfg, sw_diag *d)
{
    return sw_gpt2_config_parse(json, strlen(json), "cfg.json", cfg, d);
}

/* Parses {base_keys, extra} and returns the code. */
static int parse_with(const char *extra, sw_gpt2_config *cfg, sw_diag *d)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "{%s%s%s}", base_keys, extra[0] ? ", " : "", extra);
    return parse(buf, cfg, d);
}

static void expect_fail(const char *json, int code, const char *msg)
{
    sw_gpt2_config cfg;
    sw_diag d = {{0}};
    int rc = parse(json, &cfg, &d);
    if (rc != code) fail_msg("%s: expected %d, got %d (%s)", json, code, rc, d.msg);
    if (strncmp(d.msg, "cfg.json: ", 10) != 0 || strstr(d.msg, msg) == NULL)
        fail_msg("%s: message '%s' lacks '%s'", json, d.msg, msg);
}

static void test_fixture(void **state)
{
    (void)state;
    sw_gpt2_config cfg;
    sw_diag d;
    if (sw_gpt2_config_load(FIXTURE_DIR "/config.json", &cfg, &d) != 0) fail_msg("%s", d.msg);
    assert_int_equal(cfg.n_embd, 128);
    assert_int_equal(cfg.n_layer, 4);
    assert_int_equal(cfg.n_head, 4);
    assert_int_equal(cfg.n_positions, 256);
    assert_int_equal(cfg.vocab_size, 50257);
    assert_true(cfg.layer_norm_epsilon == 1e-5f);
    assert_true(cfg.tie_word_embeddings);

    /* The parameter count equals the number of values stored in the fixture. */
    sw_safetensors *st;
    if (sw_safetensors_open(FIXTURE_DIR "/model.safetensors", &st, &d) != 0) fail_msg("%s", d.msg);
    uint64_t stored = 0;
    for (size_t i = 0; i < sw_safetensors_count(st); i++)
        stored += sw_safetensors_at(st, i)->numel;
    sw_safetensors_close(st);
    assert_int_equal(sw_gpt2_config_param_count(&cfg), stored);
    assert_int_equal(stored, 7259008);
}

static void test_param_count_gpt2_small(void **state)
{
    (void)state;
    sw_gpt2_config cfg = {.n_layer = 12,
                          .n_head = 12,
                          .n_embd = 768,
                          .n_positions = 1024,
                          .vocab_size = 50257,
                          .layer_norm_epsilon = 1e-5f,
                          .tie_word_embeddings = true};
    assert_int_equal(sw_gpt2_config_param_count(&cfg), 124439808);
    cfg.tie_word_embeddings = false;
    assert_int_equal(sw_gpt2_config_param_count(&cfg), 124439808 + 50257 * 768);
    sw_diag d;
    assert_int_equal(sw_gpt2_config_validate(&cfg, "small", &d), 0);
}

static void test_defaults_and_alternatives(void **state)
{
    (void)state;
    sw_gpt2_config cfg;
    sw_diag d;
    assert_int_equal(parse_with("", &cfg, &d), 0);
    assert_true(cfg.layer_norm_epsilon == 1e-5f);
    assert_true(cfg.tie_word_embeddings);

    assert_int_equal(parse_with("\"activation_function\": \"gelu_pytorch_tanh\", "
                                "\"tie_word_embeddings\": false, \"layer_norm_epsilon\": 1e-6",
                                &cfg, &d),
                     0);
    assert_false(cfg.tie_word_embeddings);
    assert_true(cfg.layer_norm_epsilon == 1e-6f);
    /* Integer epsilon, n_inner null or 4C, unknown keys: all accepted. */
    assert_int_equal(parse_with("\"layer_norm_epsilon\": 1, \"n_inner\": null, "
                                "\"resid_pdrop\": 0.1, \"task_specific_params\": {}",
                                &cfg, &d),
                     0);
    assert_true(cfg.layer_norm_epsilon == 1.0f);
    assert_int_equal(parse_with("\"n_inner\": 512", &cfg, &d), 0);

    /* n_ctx stands in for a missing n_positions; n_positions wins when both exist. */
    assert_int_equal(parse("{\"n_embd\": 64, \"n_layer\": 2, \"n_head\": 2, \"n_ctx\": 128, "
                           "\"vocab_size\": 100}",
                           &cfg, &d),
                     0);
    assert_int_equal(cfg.n_positions, 128);
    assert_int_equal(parse("{\"n_embd\": 64, \"n_layer\": 2, \"n_head\": 2, \"n_ctx\": 128, "
                           "\"n_positions\": 512, \"vocab_size\": 100}",
                           &cfg, &d),
                     0);
    assert_int_equal(cfg.n_positions, 512);
}

static void test_rejections_name_the_key(void **state)
{
    (void)state;
    static const struct {
        const char *json;
        int code;
        const char *msg;
    } cases[] = {
        {"", SW_EFORMAT, "line 1"},
        {"{", SW_EFORMAT, "line 1"},
        {"[1]", SW_EFORMAT, "not a JSON object"},
        {"{\"n_embd\": 1, \"n_embd\": 2}", SW_EFORMAT, "duplicate"},
        {"{\"n_layer\": 4, \"n_head\": 4, \"n_positions\": 256, \"vocab_size\": 50257}", SW_EFORMAT,
         "missing key 'n_embd'"},
        {"{\"n_embd\": 128, \"n_head\": 4, \"n_positions\": 256, \"vocab_size\": 50257}",
         SW_EFORMAT, "missing key 'n_layer'"},
        {"{\"n_embd\": 128, \"n_layer\": 4, \"n_positions\": 256, \"vocab_size\": 50257}",
         SW_EFORMAT, "missing key 'n_head'"},
        {"{\"n_embd\": 128, \"n_layer\": 4, \"n_head\": 4, \"vocab_size\": 50257}", SW_EFORMAT,
         "missing key 'n_positions' (or 'n_ctx')"},
        {"{\"n_embd\": 128, \"n_layer\": 4, \"n_head\": 4, \"n_positions\": 256}", SW_EFORMAT,
         "missing key 'vocab_size'"},
        {"{\"n_embd\": \"128\", \"n_layer\": 4}", SW_EFORMAT, "key 'n_embd' must be an integer"},
        {"{\"n_embd\": 128.0, \"n_layer\": 4}", SW_EFORMAT, "key 'n_embd' must be an integer"},
        {"{\"n_embd\": 128, \"n_layer\": true}", SW_EFORMAT, "key 'n_layer' must be an integer"},
        {"{\"n_embd\": 128, \"n_layer\": 4, \"n_head\": 4, \"n_positions\": null, "
         "\"vocab_size\": 50257}",
         SW_EFORMAT, "key 'n_positions' must be an integer"},
        {"{\"n_embd\": 128, \"n_layer\": 4, \"n_head\": 4, \"n_ctx\": [256], "
         "\"vocab_size\": 50257}",
         SW_EFORMAT, "key 'n_ctx' must be an integer"},
        {"{\"n_embd\": 0, \"n_layer\": 4}", SW_EFORMAT, "n_embd = 0 is out of bounds [1, 16384]"},
        {"{\"n_embd\": 16385, \"n_layer\": 4}", SW_ETOOBIG, "n_embd = 16385 is out of bounds"},
        {"{\"n_embd\": 128, \"n_layer\": -1}", SW_EFORMAT, "n_layer = -1 is out of bounds"},
        {"{\"n_embd\": 128, \"n_layer\": 257}", SW_ETOOBIG, "n_layer = 257 is out of bounds"},
        {"{\"n_embd\": 128, \"n_layer\": 4, \"n_head\": 257}", SW_ETOOBIG,
         "n_head = 257 is out of bounds"},
        {"{\"n_embd\": 128, \"n_layer\": 4, \"n_head\": 4, \"vocab_size\": 1048577}", SW_ETOOBIG,
         "vocab_size = 1048577 is out of bounds"},
        {"{\"n_embd\": 128, \"n_layer\": 4, \"n_head\": 4, \"vocab_size\": 9223372036854775807}",
         SW_ETOOBIG, "vocab_size = 9223372036854775807 is out of bounds"},
        {"{\"n_embd\": 128, \"n_layer\": 4, \"n_head\": 4, \"vocab_size\": 50257, "
         "\"n_positions\": 65537}",
         SW_ETOOBIG, "n_positions = 65537 is out of bounds"},
        {"{\"n_embd\": 128, \"n_layer\": 4, \"n_head\": 4, \"vocab_size\": 50257, "
         "\"n_ctx\": 0}",
         SW_EFORMAT, "n_ctx = 0 is out of bounds"},
        {"{\"n_embd\": 130, \"n_layer\": 4, \"n_head\": 4, \"vocab_size\": 50257, "
         "\"n_positions\": 256}",
         SW_EFORMAT, "n_embd = 130 is not a multiple of n_head = 4"},
        /* 256 layers of width 16384: about 8.2e11 parameters */
        {"{\"n_embd\": 16384, \"n_layer\": 256, \"n_head\": 256, \"vocab_size\": 50257, "
         "\"n_positions\": 1024}",
         SW_ETOOBIG, "the limit is 17179869184"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        expect_fail(cases[i].json, cases[i].code, cases[i].msg);

    /* Optional keys, each with the base keys present. */
    static const struct {
        const char *extra;
        int code;
        const char *msg;
    } opt[] = {
        {"\"activation_function\": \"relu\"", SW_EUNSUPPORTED,
         "activation_function 'relu' is not supported"},
        {"\"activation_function\": \"gelu\"", SW_EUNSUPPORTED, "'gelu' is not supported"},
        {"\"activation_function\": 1", SW_EFORMAT, "key 'activation_function' must be a string"},
        {"\"tie_word_embeddings\": 1", SW_EFORMAT, "key 'tie_word_embeddings' must be true"},
        {"\"tie_word_embeddings\": \"true\"", SW_EFORMAT, "tie_word_embeddings"},
        {"\"layer_norm_epsilon\": \"1e-5\"", SW_EFORMAT,
         "key 'layer_norm_epsilon' must be a number"},
        {"\"layer_norm_epsilon\": 0", SW_EFORMAT, "layer_norm_epsilon = 0 is out of bounds"},
        {"\"layer_norm_epsilon\": -1e-5", SW_EFORMAT, "layer_norm_epsilon = -1e-05 is out"},
        {"\"layer_norm_epsilon\": 2.5", SW_EFORMAT, "layer_norm_epsilon = 2.5 is out"},
        {"\"layer_norm_epsilon\": 1e-300", SW_EFORMAT, "layer_norm_epsilon = 1e-300 underflows"},
        {"\"n_inner\": 1024", SW_EUNSUPPORTED, "n_inner = 1024 is not supported"},
        {"\"n_inner\": \"x\"", SW_EFORMAT, "key 'n_inner' must be an integer or null"},
    };
    for (size_t i = 0; i < sizeof opt / sizeof opt[0]; i++) {
        sw_gpt2_config cfg;
        sw_diag d = {{0}};
        int rc = parse_with(opt[i].extra, &cfg, &d);
        if (rc != opt[i].code || strstr(d.msg, opt[i].msg) == NULL ||
            strncmp(d.msg, "cfg.json: ", 10) != 0)
            fail_msg("%s: got %d '%s', expected %d '%s'", opt[i].extra, rc, d.msg, opt[i].code,
                     opt[i].msg);
    }
}

static void test_size_limit_and_load_errors(void **state)
{
    (void)state;
    size_t n = SW_GPT2_CONFIG_MAX_BYTES + 1;
    char *big = malloc(n);
    assert_non_null(big);
    memset(big, ' ', n);
    big[0] = '{';
    big[n - 1] = '}';
    sw_gpt2_config cfg;
    sw_diag d;
    assert_int_equal(sw_gpt2_config_parse(big, n, "big.json", &cfg, &d), SW_ETOOBIG);
    assert_non_null(strstr(d.msg, "big.json"));
    free(big);
    assert_int_equal(sw_gpt2_config_load("/nonexistent/config.json", &cfg, &d), SW_ENOENT);
    assert_non_null(strstr(d.msg, "/nonexistent/config.json"));
    /* Embedded NUL: the length, not the terminator, bounds the text. */
    assert_int_equal(sw_gpt2_config_parse("{}\0{", 4, "nul.json", &cfg, &d), SW_EFORMAT);
}

static void slurp(const char *path, char *buf, size_t size)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    size_t n = fread(buf, 1, size - 1, f);
    buf[n] = '\0';
    fclose(f);
}

static void test_write_roundtrip(void **state)
{
    (void)state;
    char dir[] = "/tmp/sw_test_cfg_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[64];
    snprintf(path, sizeof path, "%s/config.json", dir);
    static const float eps[] = {1e-5f, 1e-6f, 0.1f, 3e-7f, 1.0f, 1.17549435e-38f};
    for (size_t i = 0; i < sizeof eps / sizeof eps[0]; i++) {
        sw_gpt2_config cfg = {.n_layer = 3,
                              .n_head = 2,
                              .n_embd = 64,
                              .n_positions = 96,
                              .vocab_size = i % 2 ? 50257 : 1000,
                              .layer_norm_epsilon = eps[i],
                              .tie_word_embeddings = i % 3 != 0};
        sw_diag d;
        assert_int_equal(sw_gpt2_config_write(path, &cfg, &d), 0);
        sw_gpt2_config back;
        if (sw_gpt2_config_load(path, &back, &d) != 0) fail_msg("%s", d.msg);
        /* Field by field: the struct has padding bytes. */
        assert_int_equal(back.n_layer, cfg.n_layer);
        assert_int_equal(back.n_head, cfg.n_head);
        assert_int_equal(back.n_embd, cfg.n_embd);
        assert_int_equal(back.n_positions, cfg.n_positions);
        assert_int_equal(back.vocab_size, cfg.vocab_size);
        assert_true(back.layer_norm_epsilon == cfg.layer_norm_epsilon);
        assert_int_equal(back.tie_word_embeddings, cfg.tie_word_embeddings);

        /* What Hugging Face reads: model_type, architectures, n_ctx, token ids. */
        json_error_t err;
        json_t *root = json_load_file(path, 0, &err);
        assert_non_null(root);
        assert_string_equal(json_string_value(json_object_get(root, "model_type")), "gpt2");
        json_t *arch = json_object_get(root, "architectures");
        assert_int_equal(json_array_size(arch), 1);
        assert_string_equal(json_string_value(json_array_get(arch, 0)), "GPT2LMHeadModel");
        assert_int_equal(json_integer_value(json_object_get(root, "n_ctx")), 96);
        assert_int_equal(json_integer_value(json_object_get(root, "n_positions")), 96);
        assert_string_equal(json_string_value(json_object_get(root, "activation_function")),
                            "gelu_new");
        assert_int_equal(json_is_true(json_object_get(root, "tie_word_embeddings")),
                         cfg.tie_word_embeddings);
        if (cfg.vocab_size > 50256) {
            assert_int_equal(json_integer_value(json_object_get(root, "bos_token_id")), 50256);
            assert_int_equal(json_integer_value(json_object_get(root, "eos_token_id")), 50256);
        } else {
            assert_null(json_object_get(root, "bos_token_id"));
            assert_null(json_object_get(root, "eos_token_id"));
        }
        json_decref(root);
    }
    /* The shortest decimal that reads back as the float: 1e-5f is "1e-05". */
    char text[2048];
    slurp(path, text, sizeof text);
    assert_non_null(strstr(text, "\"layer_norm_epsilon\": 1.1754944e-38,"));
    sw_gpt2_config cfg = {.n_layer = 1,
                          .n_head = 1,
                          .n_embd = 8,
                          .n_positions = 8,
                          .vocab_size = 8,
                          .layer_norm_epsilon = 1e-5f,
                          .tie_word_embeddings = true};
    sw_diag d;
    assert_int_equal(sw_gpt2_config_write(path, &cfg, &d), 0);
    slurp(path, text, sizeof text);
    assert_non_null(strstr(text, "\"layer_norm_epsilon\": 1e-05,"));

    /* An invalid struct is refused before anything is written. */
    unlink(path);
    cfg.n_head = 3;
    assert_int_equal(sw_gpt2_config_write(path, &cfg, &d), SW_EFORMAT);
    assert_non_null(strstr(d.msg, "not a multiple of n_head"));
    assert_int_equal(access(path, F_OK), -1);
    assert_int_equal(rmdir(dir), 0);
}

/* The fuzz seeds (tests/fuzz/make_seeds.py): bad_* must fail, the rest load. */
static void test_fuzz_seeds(void **state)
{
    (void)state;
    const char *dir = SW_SOURCE_ROOT "/tests/fuzz/corpus/config";
    DIR *dp = opendir(dir);
    assert_non_null(dp);
    int good = 0, bad = 0;
    struct dirent *e;
    while ((e = readdir(dp)) != NULL) {
        if (e->d_name[0] == '.') continue;
        char path[512];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        sw_gpt2_config cfg;
        sw_diag d;
        int rc = sw_gpt2_config_load(path, &cfg, &d);
        int want_bad = strncmp(e->d_name, "bad_", 4) == 0;
        if (want_bad != (rc != 0))
            fail_msg("%s: rc %d (%s)", e->d_name, rc, rc ? d.msg : "accepted");
        if (want_bad)
            bad++;
        else
            good++;
    }
    closedir(dp);
    assert_true(good >= 3 && bad >= 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixture),
        cmocka_unit_test(test_param_count_gpt2_small),
        cmocka_unit_test(test_defaults_and_alternatives),
        cmocka_unit_test(test_rejections_name_the_key),
        cmocka_unit_test(test_size_limit_and_load_errors),
        cmocka_unit_test(test_write_roundtrip),
        cmocka_unit_test(test_fuzz_seeds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
