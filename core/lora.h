/*
 * lora: low-rank adapters on a GPT-2's linear weights (LoRA, Hu et al. 2021):
 * a frozen base W and, per adapted weight, A (r, in) and B (out, r) with
 *
 *   y = x W + (alpha / r) (x A^T) B^T + b
 *
 * The adapters are extra canonical tensors (gpt2.h) of a model whose config
 * carries lora_rank, lora_alpha and lora_targets; a run with train.adapter =
 * lora trains only them (trainer.h's mask) and the base is never written.
 * Here: the target list as the run spec writes it, attaching fresh adapters to
 * a base model, merging them into a plain model, and the PEFT adapter files
 * that Hugging Face's peft library loads (docs/model.md).
 *
 * Thread safety: pure functions over caller-owned objects.
 */
#ifndef SW_LORA_H
#define SW_LORA_H

#include <stddef.h>
#include <stdint.h>

#include "fixed.h"
#include "gpt2.h"
#include "gpt2_config.h"
#include "sw_error.h"

/* The default of train.lora_targets: every linear weight of a block. */
#define SW_LORA_TARGETS_ALL "attn.c_attn,attn.c_proj,mlp.c_fc,mlp.c_proj"

/*
 * A comma-separated list of target names (attn.c_attn, attn.c_proj, mlp.c_fc,
 * mlp.c_proj; each at most once, no spaces) into SW_LORA_* bits.  SW_EINVAL
 * naming the offending name; the list must not be empty.
 */
int sw_lora_targets_parse(const char *list, unsigned *bits, sw_diag *diag);
/* The canonical list of bits (the order above) into buf; "" for 0. */
void sw_lora_targets_text(unsigned bits, char *buf, size_t size);

/*
 * A copy of base (which must have no adapters) with adapters of cfg_lora's
 * rank, alpha and targets (cfg_lora's other fields must equal base's):
 * every B zero, so the model computes exactly what base does, and every A
 * uniform in [-1/sqrt(in), 1/sqrt(in)] (PEFT's default) from a ChaCha20
 * stream keyed by BLAKE2b-256("swarmtune-lora-init-v1" || seed): equal seeds
 * give bit-identical adapters on every machine.
 */
int sw_lora_attach(const sw_gpt2 *base, const sw_gpt2_config *cfg_lora,
                   const uint8_t seed[32], sw_gpt2 **out, sw_diag *diag);

/*
 * The fixed-point weights a run starts from: base converted as it is when
 * model (the run's architecture, sw_runspec_model_config) has no adapters;
 * else base with adapters attached, seeded by the base's sw_gpt2_digest, so
 * that every member starts from the same adapters.
 */
int sw_lora_initial_weights(const sw_gpt2 *base, const sw_gpt2_config *model, sw_fixed **out,
                            sw_diag *diag);

/* The plain model W + (alpha / r) A^T B^T per adapted weight (summed in
 * double, rounded once), without adapter tensors.  A model without adapters
 * is copied. */
int sw_lora_merge(const sw_gpt2 *m, sw_gpt2 **out, sw_diag *diag);

/*
 * Writes DIR/adapter_config.json (peft_type LORA, r, lora_alpha,
 * target_modules, fan_in_fan_out true as GPT-2's Conv1D needs) and
 * DIR/adapter_model.safetensors (F32, base_model.model.transformer.<name>)
 * for a model with adapters; base_name goes to base_model_name_or_path.
 * DIR must exist.
 */
int sw_lora_write_peft(const sw_gpt2 *m, const char *dir, const char *base_name, sw_diag *diag);

#endif
