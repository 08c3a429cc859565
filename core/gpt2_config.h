/*
 * gpt2_config: the architecture of a GPT-2 family model, read from and
 * written to a Hugging Face config.json.
 *
 * Keys read: n_embd, n_layer, n_head, n_positions (or n_ctx), vocab_size,
 * layer_norm_epsilon, activation_function (must be "gelu_new" or its alias
 * "gelu_pytorch_tanh" when present), tie_word_embeddings (default true), n_inner
 * (null or 4 * n_embd).  Values are bounded so that a hostile file cannot
 * make the loader allocate absurd amounts of memory (docs/file-formats.md).
 * Thread safety: reentrant.
 */
#ifndef SW_GPT2_CONFIG_H
#define SW_GPT2_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sw_error.h"

#define SW_GPT2_MAX_LAYERS 256
#define SW_GPT2_MAX_EMBD 16384
#define SW_GPT2_MAX_HEADS 256
#define SW_GPT2_MAX_POSITIONS 65536
#define SW_GPT2_MAX_VOCAB (1 << 20)
/* Refuse models above 2^34 parameters (64 GiB of float). */
#define SW_GPT2_MAX_PARAMS (UINT64_C(1) << 34)
#define SW_GPT2_CONFIG_MAX_BYTES (1u << 20)

/* LoRA adapters on a block's linear weights (core/lora.h, docs/model.md). */
#define SW_LORA_MAX_RANK 64
#define SW_LORA_MAX_ALPHA 1e4
enum {
    SW_LORA_C_ATTN = 1u,      /* attn.c_attn (C -> 3C) */
    SW_LORA_ATTN_C_PROJ = 2u, /* attn.c_proj (C -> C) */
    SW_LORA_C_FC = 4u,        /* mlp.c_fc (C -> 4C) */
    SW_LORA_MLP_C_PROJ = 8u,  /* mlp.c_proj (4C -> C) */
    SW_LORA_ALL = 15u,
};
#define SW_LORA_N_TARGETS 4

typedef struct sw_gpt2_config {
    int n_layer;
    int n_head;
    int n_embd;      /* C; a multiple of n_head */
    int n_positions; /* maxT */
    int vocab_size;  /* V */
    float layer_norm_epsilon;
    bool tie_word_embeddings;
    /* LoRA adapters (core/lora.h): not part of config.json; a run with
     * train.adapter = lora adds them to the base model's architecture. */
    int lora_rank;         /* 0: none; else 1..SW_LORA_MAX_RANK */
    float lora_alpha;      /* the adapter's output is scaled by lora_alpha / lora_rank */
    unsigned lora_targets; /* SW_LORA_* bits; 0 exactly when lora_rank is 0 */
} sw_gpt2_config;

/* Checks bounds and consistency (n_embd % n_head == 0, the adapter fields,
 * parameter count). */
int sw_gpt2_config_validate(const sw_gpt2_config *cfg, const char *name, sw_diag *diag);

/* Parses a config.json text of len bytes; name appears in error messages. */
int sw_gpt2_config_parse(const char *json, size_t len, const char *name, sw_gpt2_config *out,
                         sw_diag *diag);
int sw_gpt2_config_load(const char *path, sw_gpt2_config *out, sw_diag *diag);

/* The same base architecture (every field but the adapter's). */
bool sw_gpt2_config_same_base(const sw_gpt2_config *a, const sw_gpt2_config *b);
/* The same architecture, adapters included. */
bool sw_gpt2_config_equal(const sw_gpt2_config *a, const sw_gpt2_config *b);

/* Writes a Hugging Face compatible config.json (model_type gpt2, n_ctx too). */
int sw_gpt2_config_write(const char *path, const sw_gpt2_config *cfg, sw_diag *diag);

/* Number of parameters, counting a tied LM head once, adapters included. */
uint64_t sw_gpt2_config_param_count(const sw_gpt2_config *cfg);

/* Input and output width of adapter target k (0..SW_LORA_N_TARGETS-1, the bit
 * order of SW_LORA_*): c_attn C -> 3C, attn.c_proj C -> C, c_fc C -> 4C,
 * mlp.c_proj 4C -> C. */
void sw_lora_target_dims(const sw_gpt2_config *cfg, int k, int *in, int *out);
/* The name of adapter target k: "attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj". */
const char *sw_lora_target_name(int k);
/* Parameters of one block's adapters: sum over targets of rank * (in + out). */
uint64_t sw_lora_layer_params(const sw_gpt2_config *cfg);

#endif
