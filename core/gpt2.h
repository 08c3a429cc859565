/*
 * gpt2: a GPT-2 family language model held in float: parameters in one
 * allocation in the canonical flat order with named views into it; load from
 * and save to a Hugging Face model directory; digest; random initialisation.
 * The forward pass and loss are in gpt2_forward.h.
 *
 * Canonical flat order (the order the perturbation stream and the digest
 * follow; never change it):
 *   wte.weight (V, C), wpe.weight (maxT, C),
 *   per layer l = 0..L-1:
 *     h.l.ln_1.weight (C), h.l.ln_1.bias (C),
 *     h.l.attn.c_attn.weight (C, 3C), h.l.attn.c_attn.bias (3C),
 *     h.l.attn.c_proj.weight (C, C), h.l.attn.c_proj.bias (C),
 *     h.l.ln_2.weight (C), h.l.ln_2.bias (C),
 *     h.l.mlp.c_fc.weight (C, 4C), h.l.mlp.c_fc.bias (4C),
 *     h.l.mlp.c_proj.weight (4C, C), h.l.mlp.c_proj.bias (C),
 *   ln_f.weight (C), ln_f.bias (C),
 *   lm_head.weight (V, C) only when the head is not tied to wte,
 *   with LoRA adapters (cfg.lora_rank > 0), per layer l and per target in the
 *   order attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj (those selected):
 *     h.l.<target>.lora_A.weight (r, in), h.l.<target>.lora_B.weight (out, r)
 *   (PEFT's names and layouts; appended, so the base tensors keep their
 *   offsets and the base's part of the order is the plain model's).
 * Linear weights keep Hugging Face's Conv1D layout [in, out], so y = x W + b
 * is a plain row-major sgemm.
 *
 * Ownership: a sw_gpt2 owns its parameter block.  Thread safety: a model may
 * be read by many threads; writers need exclusive access.
 */
#ifndef SW_GPT2_H
#define SW_GPT2_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gpt2_config.h"
#include "safetensors.h"
#include "sw_error.h"

typedef enum sw_gpt2_kind {
    SW_GPT2_WTE,
    SW_GPT2_WPE,
    SW_GPT2_LN1_W,
    SW_GPT2_LN1_B,
    SW_GPT2_ATTN_W,
    SW_GPT2_ATTN_B,
    SW_GPT2_ATTN_PROJ_W,
    SW_GPT2_ATTN_PROJ_B,
    SW_GPT2_LN2_W,
    SW_GPT2_LN2_B,
    SW_GPT2_FC_W,
    SW_GPT2_FC_B,
    SW_GPT2_FC_PROJ_W,
    SW_GPT2_FC_PROJ_B,
    SW_GPT2_LNF_W,
    SW_GPT2_LNF_B,
    SW_GPT2_LM_HEAD,
    SW_GPT2_LORA_A, /* (r, in) */
    SW_GPT2_LORA_B, /* (out, r) */
} sw_gpt2_kind;

/* One entry of the canonical tensor list. */
typedef struct sw_gpt2_tensor {
    char name[64]; /* Hugging Face name without the "transformer." prefix */
    sw_gpt2_kind kind;
    int layer; /* block index, or -1 */
    int target; /* LoRA tensors: the adapted weight (0..3, SW_LORA_* bit order); else -1 */
    int ndim;  /* 1 or 2 */
    int64_t shape[2];
    size_t offset; /* in floats, into the flat parameter block */
    size_t numel;
} sw_gpt2_tensor;

/* Number of canonical tensors: 4 + 12 * n_layer (+1 for an untied head),
 * + 2 per adapted weight per layer. */
size_t sw_gpt2_tensor_count(const sw_gpt2_config *cfg);
/* Describes canonical tensor i (i < sw_gpt2_tensor_count). */
void sw_gpt2_tensor_at(const sw_gpt2_config *cfg, size_t i, sw_gpt2_tensor *out);
/* Canonical tensors of the base model alone (the first ones): the count
 * without adapters. */
size_t sw_gpt2_base_tensor_count(const sw_gpt2_config *cfg);

/* Read-only views of one block's weights (shapes as in the list above). */
typedef struct sw_gpt2_layer {
    const float *ln_1_w, *ln_1_b; /* (C) */
    const float *attn_w;          /* (C, 3C) */
    const float *attn_b;          /* (3C) */
    const float *attn_proj_w;     /* (C, C) */
    const float *attn_proj_b;     /* (C) */
    const float *ln_2_w, *ln_2_b; /* (C) */
    const float *fc_w;            /* (C, 4C) */
    const float *fc_b;            /* (4C) */
    const float *fc_proj_w;       /* (4C, C) */
    const float *fc_proj_b;       /* (C) */
    /* adapters of attn_w, attn_proj_w, fc_w, fc_proj_w (SW_LORA_* order), or NULL */
    const float *lora_a[SW_LORA_N_TARGETS]; /* (r, in) */
    const float *lora_b[SW_LORA_N_TARGETS]; /* (out, r) */
} sw_gpt2_layer;

typedef struct sw_gpt2_weights {
    const float *wte;             /* (V, C) */
    const float *wpe;             /* (maxT, C) */
    const float *ln_f_w, *ln_f_b; /* (C) */
    const float *lm_head;         /* (V, C); == wte when tied */
    sw_gpt2_layer layers[SW_GPT2_MAX_LAYERS];
} sw_gpt2_weights;

/* Builds named views into any flat block laid out in canonical order. */
void sw_gpt2_weights_view(const sw_gpt2_config *cfg, const float *params, sw_gpt2_weights *out);

typedef struct sw_gpt2 {
    sw_gpt2_config cfg;
    size_t n_params;   /* floats in params */
    float *params;     /* (n_params) canonical flat order, 64-byte aligned */
    sw_gpt2_weights w; /* views into params */
} sw_gpt2;

/* A zero-filled model of the given (validated) architecture. */
int sw_gpt2_alloc(const sw_gpt2_config *cfg, sw_gpt2 **out, sw_diag *diag);
/* Accepts NULL. */
void sw_gpt2_free(sw_gpt2 *m);

/*
 * Loads DIR/config.json and DIR/model.safetensors.  Tensor names may carry the
 * "transformer." prefix; the attention-mask buffers (h.N.attn.bias,
 * h.N.attn.masked_bias) are ignored; any other unknown tensor, a missing
 * tensor or a wrong shape is an error naming the tensor.
 * Also: with a tied head an lm_head.weight in the file is ignored (as
 * Hugging Face does), untied it is required; a tensor given both with and
 * without the prefix, and a non-finite value, are errors.  F32, F16 and BF16
 * files are read (converted to float exactly).  See docs/model.md.
 */
int sw_gpt2_load(const char *dir, sw_gpt2 **out, sw_diag *diag);

/* Fills m from an opened safetensors file (same rules as sw_gpt2_load). */
int sw_gpt2_load_tensors(sw_gpt2 *m, const sw_safetensors *st, const char *name, sw_diag *diag);

/*
 * Writes DIR/config.json and DIR/model.safetensors (canonical names and order,
 * dtype F32 or F16).  DIR must exist.  F32 output is a pure function of the
 * weights.  Tokenizer files are not written here.  A model with adapters is
 * refused (SW_EINVAL): it is written merged or as a PEFT adapter (lora.h).
 */
int sw_gpt2_save(const sw_gpt2 *m, const char *dir, sw_dtype dtype, sw_diag *diag);

/*
 * GPT-2's initialisation: N(0, 0.02) for embeddings and linear weights,
 * N(0, 0.02/sqrt(2L)) for the residual projections (attn.c_proj, mlp.c_proj),
 * zero biases, unit layer-norm gains.  Deterministic for a seed: the
 * normals come from a ChaCha20 stream keyed by BLAKE2b-256 of
 * "swarmtune-gpt2-init-v1" || seed (docs/model.md).
 */
void sw_gpt2_init_random(sw_gpt2 *m, uint64_t seed);

#define SW_GPT2_DIGEST_BYTES 32
/*
 * BLAKE2b-256 over "swarmtune-gpt2-v1", the architecture (the adapter's
 * rank, alpha and targets only when it has one) and, per canonical tensor,
 * its name, shape and float32 little-endian values.  Equal weights
 * give equal digests whatever file dtype they were loaded from.
 */
void sw_gpt2_digest(const sw_gpt2 *m, uint8_t out[SW_GPT2_DIGEST_BYTES]);
/* Lower-case hex of a digest into buf (2*32+1 bytes). */
void sw_digest_hex(const uint8_t digest[SW_GPT2_DIGEST_BYTES],
                   char buf[2 * SW_GPT2_DIGEST_BYTES + 1]);

#endif
