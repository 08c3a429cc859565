/*
 * gpt2_config: config.json <-> sw_gpt2_config.  Keys we do not use are
 * ignored (Hugging Face configs carry many), except those that would change
 * the architecture we implement (n_inner other than 4 * n_embd).
 */
#include "gpt2_config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "fileio.h"

uint64_t sw_gpt2_config_param_count(const sw_gpt2_config *cfg)
{
    uint64_t V = (uint64_t)cfg->vocab_size, T = (uint64_t)cfg->n_positions;
    uint64_t C = (uint64_t)cfg->n_embd, L = (uint64_t)cfg->n_layer;
    /* Per block: ln_1, ln_2 (4C); c_attn (3C^2 + 3C); attn c_proj (C^2 + C);
     * c_fc (4C^2 + 4C); mlp c_proj (4C^2 + C) = 12C^2 + 13C. */
    uint64_t n = V * C + T * C + L * (12 * C * C + 13 * C) + 2 * C;
    if (!cfg->tie_word_embeddings) n += V * C;
    return n + L * sw_lora_layer_params(cfg);
}

void sw_lora_target_dims(const sw_gpt2_config *cfg, int k, int *in, int *out)
{
    static const int in_x[SW_LORA_N_TARGETS] = {1, 1, 1, 4};
    static const int out_x[SW_LORA_N_TARGETS] = {3, 1, 4, 1};
    *in = in_x[k] * cfg->n_embd;
    *out = out_x[k] * cfg->n_embd;
}

const char *sw_lora_target_name(int k)
{
    static const char *const names[SW_LORA_N_TARGETS] = {"attn.c_attn", "attn.c_proj",
                                                         "mlp.c_fc", "mlp.c_proj"};
    return names[k];
}

bool sw_gpt2_config_same_base(const sw_gpt2_config *a, const sw_gpt2_config *b)
{
    return a->n_layer == b->n_layer && a->n_head == b->n_head && a->n_embd == b->n_embd &&
           a->n_positions == b->n_positions && a->vocab_size == b->vocab_size &&
           a->layer_norm_epsilon == b->layer_norm_epsilon &&
           a->tie_word_embeddings == b->tie_word_embeddings;
}

bool sw_gpt2_config_equal(const sw_gpt2_config *a, const sw_gpt2_config *b)
{
    return sw_gpt2_config_same_base(a, b) && a->lora_rank == b->lora_rank &&
           a->lora_alpha == b->lora_alpha && a->lora_targets == b->lora_targets;
}

uint64_t sw_lora_layer_params(const sw_gpt2_config *cfg)
{
    if (cfg->lora_rank <= 0) return 0;
    uint64_t n = 0;
    for (int k = 0; k < SW_LORA_N_TARGETS; k++) {
        if (!(cfg->lora_targets & (1u << k))) continue;
        int in, out;
        sw_lora_target_dims(cfg, k, &in, &out);
        n += (uint64_t)cfg->lora_rank * ((uint64_t)in + (uint64_t)out);
    }
    return n;
}

static int config_check_range(const char *name, const char *key, long long v, long long lo,
                              long long hi, sw_diag *diag)
{
    if (v < lo || v > hi)
        return sw_diag_set(diag, v > hi ? SW_ETOOBIG : SW_EFORMAT,
                           "%s: %s = %lld is out of bounds [%lld, %lld]", name, key, v, lo, hi);
    return 0;
}

int sw_gpt2_config_validate(const sw_gpt2_config *cfg, const char *name, sw_diag *diag)
{
    int rc;
    if ((rc = config_check_range(name, "n_layer", cfg->n_layer, 1, SW_GPT2_MAX_LAYERS, diag)) ||
        (rc = config_check_range(name, "n_head", cfg->n_head, 1, SW_GPT2_MAX_HEADS, diag)) ||
        (rc = config_check_range(name, "n_embd", cfg->n_embd, 1, SW_GPT2_MAX_EMBD, diag)) ||
        (rc = config_check_range(name, "n_positions", cfg->n_positions, 1, SW_GPT2_MAX_POSITIONS,
                                 diag)) ||
        (rc = config_check_range(name, "vocab_size", cfg->vocab_size, 1, SW_GPT2_MAX_VOCAB, diag)))
        return rc;
    if (cfg->n_embd % cfg->n_head != 0)
        return sw_diag_set(diag, SW_EFORMAT, "%s: n_embd = %d is not a multiple of n_head = %d",
                           name, cfg->n_embd, cfg->n_head);
    /* Written as !(x > 0 && x <= 1) so that NaN fails too. */
    if (!(cfg->layer_norm_epsilon > 0.0f && cfg->layer_norm_epsilon <= 1.0f))
        return sw_diag_set(diag, SW_EFORMAT, "%s: layer_norm_epsilon = %g is out of bounds (0, 1]",
                           name, (double)cfg->layer_norm_epsilon);
    if (cfg->lora_rank == 0 ? cfg->lora_targets != 0
                            : cfg->lora_rank < 0 || cfg->lora_rank > SW_LORA_MAX_RANK ||
                                  cfg->lora_targets == 0 || (cfg->lora_targets & ~SW_LORA_ALL) ||
                                  !(cfg->lora_alpha > 0.0f && cfg->lora_alpha <= SW_LORA_MAX_ALPHA))
        return sw_diag_set(diag, SW_EFORMAT,
                           "%s: adapter rank %d, alpha %g, targets 0x%x: the rank must be in "
                           "[1, %d] with some targets and alpha in (0, %g], or 0 with none",
                           name, cfg->lora_rank, (double)cfg->lora_alpha, cfg->lora_targets,
                           SW_LORA_MAX_RANK, SW_LORA_MAX_ALPHA);
    uint64_t params = sw_gpt2_config_param_count(cfg);
    if (params > SW_GPT2_MAX_PARAMS)
        return sw_diag_set(diag, SW_ETOOBIG,
                           "%s: the model has %" PRIu64 " parameters, the limit is %" PRIu64, name,
                           params, SW_GPT2_MAX_PARAMS);
    return 0;
}

/* A required or optional integer key; *found tells which. */
static int config_get_int(json_t *root, const char *key, bool required, const char *name,
                          long long *out, bool *found, sw_diag *diag)
{
    json_t *v = json_object_get(root, key);
    *found = v != NULL;
    if (v == NULL) {
        if (required) return sw_diag_set(diag, SW_EFORMAT, "%s: missing key '%s'", name, key);
        return 0;
    }
    if (!json_is_integer(v))
        return sw_diag_set(diag, SW_EFORMAT, "%s: key '%s' must be an integer", name, key);
    *out = (long long)json_integer_value(v);
    return 0;
}

int sw_gpt2_config_parse(const char *json, size_t len, const char *name, sw_gpt2_config *out,
                         sw_diag *diag)
{
    SW_ASSERT(json != NULL || len == 0);
    SW_ASSERT(name != NULL && out != NULL);
    if (len > SW_GPT2_CONFIG_MAX_BYTES)
        return sw_diag_set(diag, SW_ETOOBIG, "%s: %zu bytes, the limit is %u", name, len,
                           SW_GPT2_CONFIG_MAX_BYTES);
    json_error_t jerr;
    json_t *root = json_loadb(json != NULL ? json : "", len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL)
        return sw_diag_set(diag, SW_EFORMAT, "%s: line %d column %d: %s", name, jerr.line,
                           jerr.column, jerr.text);
    int rc;
    sw_gpt2_config cfg = {0};
    if (!json_is_object(root)) {
        rc = sw_diag_set(diag, SW_EFORMAT, "%s: not a JSON object", name);
        goto fail;
    }

    static const struct {
        const char *key;
        size_t offset;
        long long lo, hi;
    } ints[] = {
        {"n_embd", offsetof(sw_gpt2_config, n_embd), 1, SW_GPT2_MAX_EMBD},
        {"n_layer", offsetof(sw_gpt2_config, n_layer), 1, SW_GPT2_MAX_LAYERS},
        {"n_head", offsetof(sw_gpt2_config, n_head), 1, SW_GPT2_MAX_HEADS},
        {"vocab_size", offsetof(sw_gpt2_config, vocab_size), 1, SW_GPT2_MAX_VOCAB},
    };
    bool found;
    long long v = 0;
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        if ((rc = config_get_int(root, ints[i].key, true, name, &v, &found, diag)) != 0) goto fail;
        if ((rc = config_check_range(name, ints[i].key, v, ints[i].lo, ints[i].hi, diag)) != 0)
            goto fail;
        int iv = (int)v;
        memcpy((char *)&cfg + ints[i].offset, &iv, sizeof iv);
    }

    /* Hugging Face sizes wpe by n_positions; n_ctx is its older name. */
    const char *pos_key = json_object_get(root, "n_positions") != NULL ? "n_positions" : "n_ctx";
    if ((rc = config_get_int(root, pos_key, false, name, &v, &found, diag)) != 0) goto fail;
    if (!found) {
        rc = sw_diag_set(diag, SW_EFORMAT, "%s: missing key 'n_positions' (or 'n_ctx')", name);
        goto fail;
    }
    if ((rc = config_check_range(name, pos_key, v, 1, SW_GPT2_MAX_POSITIONS, diag)) != 0) goto fail;
    cfg.n_positions = (int)v;

    json_t *jv = json_object_get(root, "n_inner");
    if (jv != NULL && !json_is_null(jv)) {
        if (!json_is_integer(jv)) {
            rc =
                sw_diag_set(diag, SW_EFORMAT, "%s: key 'n_inner' must be an integer or null", name);
            goto fail;
        }
        if (json_integer_value(jv) != 4 * (json_int_t)cfg.n_embd) {
            rc = sw_diag_set(diag, SW_EUNSUPPORTED,
                             "%s: n_inner = %lld is not supported (only 4 * n_embd = %d)", name,
                             (long long)json_integer_value(jv), 4 * cfg.n_embd);
            goto fail;
        }
    }

    cfg.layer_norm_epsilon = 1e-5f;
    jv = json_object_get(root, "layer_norm_epsilon");
    if (jv != NULL) {
        if (!json_is_number(jv)) {
            rc = sw_diag_set(diag, SW_EFORMAT, "%s: key 'layer_norm_epsilon' must be a number",
                             name);
            goto fail;
        }
        double eps = json_number_value(jv);
        if (!(eps > 0.0 && eps <= 1.0)) {
            rc = sw_diag_set(diag, SW_EFORMAT,
                             "%s: layer_norm_epsilon = %g is out of bounds (0, 1]", name, eps);
            goto fail;
        }
        cfg.layer_norm_epsilon = (float)eps;
        if (!(cfg.layer_norm_epsilon > 0.0f)) {
            rc = sw_diag_set(diag, SW_EFORMAT, "%s: layer_norm_epsilon = %g underflows a float",
                             name, eps);
            goto fail;
        }
    }

    jv = json_object_get(root, "activation_function");
    if (jv != NULL) {
        if (!json_is_string(jv)) {
            rc = sw_diag_set(diag, SW_EFORMAT, "%s: key 'activation_function' must be a string",
                             name);
            goto fail;
        }
        const char *act = json_string_value(jv);
        /* gelu_pytorch_tanh is the same tanh approximation under another name. */
        if (strcmp(act, "gelu_new") != 0 && strcmp(act, "gelu_pytorch_tanh") != 0) {
            rc = sw_diag_set(diag, SW_EUNSUPPORTED,
                             "%s: activation_function '%.64s' is not supported (gelu_new, "
                             "gelu_pytorch_tanh)",
                             name, act);
            goto fail;
        }
    }

    cfg.tie_word_embeddings = true;
    jv = json_object_get(root, "tie_word_embeddings");
    if (jv != NULL) {
        if (!json_is_boolean(jv)) {
            rc = sw_diag_set(diag, SW_EFORMAT,
                             "%s: key 'tie_word_embeddings' must be true or false", name);
            goto fail;
        }
        cfg.tie_word_embeddings = json_is_true(jv);
    }

    if ((rc = sw_gpt2_config_validate(&cfg, name, diag)) != 0) goto fail;
    json_decref(root);
    *out = cfg;
    return 0;

fail:
    json_decref(root);
    return rc;
}

int sw_gpt2_config_load(const char *path, sw_gpt2_config *out, sw_diag *diag)
{
    char *buf;
    size_t len;
    int rc = sw_file_read(path, SW_GPT2_CONFIG_MAX_BYTES, &buf, &len, diag);
    if (rc != 0) return rc;
    rc = sw_gpt2_config_parse(buf, len, path, out, diag);
    free(buf);
    return rc;
}

/* Shortest %g text that reads back as the same float, so 1e-5f is written "1e-05". */
static void config_format_float(char *buf, size_t size, float f)
{
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(buf, size, "%.*g", prec, (double)f);
        if (strtof(buf, NULL) == f) return;
    }
}

int sw_gpt2_config_write(const char *path, const sw_gpt2_config *cfg, sw_diag *diag)
{
    int rc = sw_gpt2_config_validate(cfg, path, diag);
    if (rc != 0) return rc;
    char eps[32];
    config_format_float(eps, sizeof eps, cfg->layer_norm_epsilon);
    char special[96] = "";
    if (cfg->vocab_size > 50256)
        snprintf(special, sizeof special,
                 ",\n  \"bos_token_id\": 50256,\n  \"eos_token_id\": 50256");
    char text[1024];
    int n = snprintf(text, sizeof text,
                     "{\n"
                     "  \"model_type\": \"gpt2\",\n"
                     "  \"architectures\": [\n    \"GPT2LMHeadModel\"\n  ],\n"
                     "  \"vocab_size\": %d,\n"
                     "  \"n_embd\": %d,\n"
                     "  \"n_layer\": %d,\n"
                     "  \"n_head\": %d,\n"
                     "  \"n_positions\": %d,\n"
                     "  \"n_ctx\": %d,\n"
                     "  \"layer_norm_epsilon\": %s,\n"
                     "  \"activation_function\": \"gelu_new\",\n"
                     "  \"tie_word_embeddings\": %s%s\n"
                     "}\n",
                     cfg->vocab_size, cfg->n_embd, cfg->n_layer, cfg->n_head, cfg->n_positions,
                     cfg->n_positions, eps, cfg->tie_word_embeddings ? "true" : "false", special);
    SW_ASSERT(n > 0 && (size_t)n < sizeof text);
    return sw_file_write_atomic(path, text, (size_t)n, 0644, diag);
}
