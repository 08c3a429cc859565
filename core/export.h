/*
 * export: writes a model in Hugging Face layout (config.json,
 * model.safetensors and the base model's tokenizer files), the one way
 * both `swarmctl model export` and a running swarmd (`swarmctl export`)
 * write a node's model, so that every `swarmctl model` tool and Hugging
 * Face itself can load it.  F32 output is a pure function of the weights:
 * equal weights give byte-identical files.
 *
 * Thread safety: pure over its arguments; any thread.
 */
#ifndef SW_EXPORT_H
#define SW_EXPORT_H

#include <stddef.h>
#include <stdint.h>

#include "gpt2.h"
#include "safetensors.h"
#include "sw_error.h"

/* Tokenizer files larger than this are refused (a sane tokenizer.json is < 10 MB). */
#define SW_EXPORT_AUX_MAX_BYTES (256u * 1024u * 1024u)

/*
 * Writes m to out (created with its parents, mode 0755) as dtype (F32 or
 * F16), then copies the tokenizer files found in base_dir (vocab.json,
 * merges.txt, tokenizer.json, tokenizer_config.json,
 * special_tokens_map.json).  *copied (may be NULL) counts them; digest (may
 * be NULL) receives the sw_gpt2_digest of what a reader of out loads (F16
 * rounds, so it is computed on the file read back).  A model with adapters
 * is written merged (sw_lora_merge: every tool reads it as a plain GPT-2) and
 * its adapters as a PEFT adapter in out/adapter (sw_lora_write_peft, F32,
 * base_model_name_or_path = base_dir); digest is the merged model's.
 */
int sw_export_model(const sw_gpt2 *m, const char *base_dir, const char *out, sw_dtype dtype,
                    size_t *copied, uint8_t digest[SW_GPT2_DIGEST_BYTES], sw_diag *diag);

/* mkdir -p (mode 0755). */
int sw_mkdir_p(const char *dir, sw_diag *diag);

#endif
