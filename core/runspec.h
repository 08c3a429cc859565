/*
 * runspec: the small document that defines a training run, its canonical
 * bytes, and the run id derived from them.
 *
 *   run_id = BLAKE2b-256(canonical bytes)
 *
 * A run spec pins the base model (sw_gpt2_digest of the float base model)
 * and its architecture, every hyperparameter the swarm must share to apply
 * updates identically or to train compatibly, and the admission policy.  Two
 * nodes in the same run hold byte-identical run specs.
 *
 * Canonical form (docs/state.md): JSON as RFC 8785 (JCS) writes it: keys
 * sorted bytewise, no whitespace, strings ASCII, integers as plain decimals,
 * doubles as the SHORTEST decimal that reads back to the same double, written
 * the way ECMAScript's Number.prototype.toString writes it ("0.0001", "1e-7",
 * "1.5", "3", "1e+21"), so JSON.stringify in any JavaScript engine or any
 * JCS library reproduces the bytes.  The file runspec.json holds exactly the
 * canonical bytes (no trailing newline): `b2sum -l 256 runspec.json` prints
 * the run id.  Example (one line):
 *
 *   {"admission":{"policy":"open"},
 *    "arch":{"layer_norm_epsilon":0.000009999999747378752,"n_embd":64,
 *            "n_head":2,"n_layer":2,"n_positions":128,
 *            "tie_word_embeddings":true,"vocab_size":50257},
 *    "base_model":"<64 hex digits>","format":1,
 *    "train":{"directions":1,"eps":0.001,"lr":0.0001,"max_scale":0.0123,
 *             "perturbation":"rademacher","quantization":"int8",
 *             "scale_window":64,"schedule":"constant","total_steps":1000,
 *             "trainable":".*","warmup_steps":0,"weight_decay":0}}
 *
 * Parsing is strict: every key is required, an unknown key is an error, every
 * value is bounded (the key lists below); errors name the key ("train.lr").
 * Any JSON with the same values parses to the same struct whatever its
 * spacing or key order; the run id is always computed from the re-serialised
 * canonical bytes.
 *
 * Thread safety: pure functions over caller-owned structs.
 */
#ifndef SW_RUNSPEC_H
#define SW_RUNSPEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "gpt2.h"
#include "gpt2_config.h"
#include "lora.h"
#include "sw_error.h"
#include "update.h"

#define SW_RUNSPEC_FORMAT 1
/* Bound on runspec.json and on the canonical bytes. */
#define SW_RUNSPEC_MAX_BYTES 4096
/* trainable: a PCRE2 pattern of at most this many bytes (NUL excluded). */
#define SW_RUNSPEC_TRAINABLE_MAX 255
/* Integer fields of the canonical form stay below 2^53 (JCS numbers are doubles). */
#define SW_RUNSPEC_MAX_STEPS 1000000000000ull /* total_steps, warmup_steps <= 1e12 */
#define SW_RUNSPEC_MAX_SCALE_WINDOW 1000000

typedef enum sw_quant {
    SW_QUANT_INT8 = 0, /* "int8": q in -127..127 */
} sw_quant;

typedef enum sw_admission {
    SW_ADMISSION_OPEN = 0, /* "open": anyone with the run spec may join */
} sw_admission;

typedef struct sw_runspec {
    int format;                                /* SW_RUNSPEC_FORMAT */
    uint8_t base_digest[SW_GPT2_DIGEST_BYTES]; /* "base_model": sw_gpt2_digest, hex */
    sw_gpt2_config arch;                       /* "arch": validated by sw_gpt2_config */
    /* "train": */
    sw_perturb perturb;                           /* "perturbation" */
    sw_schedule schedule;                         /* "schedule" */
    double lr;                                    /* (0, 10], finite */
    uint64_t warmup_steps;                        /* <= total_steps */
    uint64_t total_steps;                         /* 1 .. SW_RUNSPEC_MAX_STEPS */
    int directions;                               /* 1 .. 64 */
    double max_scale;                             /* (0, 1e6], finite; 0 only to calibrate */
    double eps;                                   /* (0, 1], finite */
    double weight_decay;                          /* [0, 1), finite (-0 reads as 0) */
    char trainable[SW_RUNSPEC_TRAINABLE_MAX + 1]; /* PCRE2 pattern, unanchored search */
    char trainable_tokens[SW_RUNSPEC_TRAINABLE_MAX + 1]; /* "" or sorted token ids "a,b,c" */
    char adapter[SW_RUNSPEC_TRAINABLE_MAX + 1];   /* "none" or "lora" */
    int lora_rank;                                /* 1 .. SW_LORA_MAX_RANK */
    double lora_alpha;                            /* (0, SW_LORA_MAX_ALPHA] */
    char lora_targets[SW_RUNSPEC_TRAINABLE_MAX + 1]; /* sw_lora_targets_parse list */
    uint64_t scale_window;                        /* 1 .. SW_RUNSPEC_MAX_SCALE_WINDOW */
    sw_quant quant;                               /* "quantization" */
    sw_admission admission;                       /* "admission": {"policy": ...} */
} sw_runspec;

/* The C type of a run-spec key's member of sw_runspec, and its JSON form. */
typedef enum sw_runspec_type {
    SW_RS_INT,       /* int, a JSON integer */
    SW_RS_U64,       /* uint64_t, a JSON integer below 2^53 */
    SW_RS_DOUBLE,    /* double */
    SW_RS_F32,       /* float, written as the double it converts to */
    SW_RS_BOOL,      /* bool */
    SW_RS_HEX32,     /* 32 bytes as 64 lower-case hex digits */
    SW_RS_STRING,    /* char[SW_RUNSPEC_TRAINABLE_MAX + 1], printable ASCII */
    SW_RS_SCHEDULE,  /* sw_schedule by name */
    SW_RS_PERTURB,   /* sw_perturb by name */
    SW_RS_QUANT,     /* sw_quant by name */
    SW_RS_ADMISSION, /* sw_admission by name */
} sw_runspec_type;

/* Flags of a run-spec key. */
#define SW_RSK_LO_OPEN 1u   /* the lower bound is excluded */
#define SW_RSK_HI_OPEN 2u   /* the upper bound is excluded */
#define SW_RSK_ADOPT 4u     /* a joiner whose configuration leaves it out takes the swarm's */
#define SW_RSK_CALIBRATE 8u /* 0 in the configuration: measured by the founder's first start */
/* Only in a run with train.adapter = lora: the canonical form has the key
 * (and a parser requires it) exactly then, so the run ids of runs without
 * adapters are what they were before adapters existed. */
#define SW_RSK_LORA 16u
/* Left out of the canonical form at its default (the empty string), and read as
 * the default when absent: a key added after format 1 that leaves earlier run ids
 * as they were. */
#define SW_RSK_OPTIONAL 32u

/*
 * The run spec's keys, each once.  Everything else about a key is generated
 * from these lists or walks them: the canonical writer, the parser and the
 * comparison (runspec.c), the defaults and the bounds (sw_runspec_defaults,
 * sw_runspec_validate), swarmd's [train] configuration rows and their
 * reference in docs/configuration.md (daemon/config.c), the messages that
 * name the configuration key, what a joiner adopts (daemon/setup.c) and the
 * run-spec section of `swarmctl status`.  Every key is part of the run
 * identity: the run id hashes them all.  Adding a key is one line here, the
 * member of sw_runspec, and its use.
 *
 * Keys an operator sets, in [train] of swarmd's configuration:
 *   X(field, path, config, type, def, lo, hi, flags, doc)
 *   field   the member of sw_runspec
 *   path    the key as the canonical JSON nests it and errors name it
 *   config  its name in [train]
 *   type    SW_RS_ without the prefix
 *   def     the default, as a configuration file writes it
 *   lo, hi  bounds of a number (inclusive unless flags say otherwise)
 *   flags   SW_RSK_*
 *   doc     one line: what it means
 * In the order of the configuration reference; the canonical writer sorts.
 */
// clang-format off
#define SW_RUNSPEC_TRAIN_KEYS(X) \
    X(total_steps, "train.total_steps", "max_steps", U64, "1000", 1, SW_RUNSPEC_MAX_STEPS, \
      SW_RSK_ADOPT, \
      "training steps this node makes; also the length of the `linear` and `cosine` schedules") \
    X(lr, "train.lr", "lr", DOUBLE, "1e-4", 0, 10, SW_RSK_ADOPT | SW_RSK_LO_OPEN, \
      "peak learning rate; on the bundled model 3e-4 is stable over 3,000 steps and 1e-3 " \
      "diverges on the language task (docs/learning.md)") \
    X(eps, "train.eps", "eps", DOUBLE, "1e-3", 0, 1, SW_RSK_ADOPT | SW_RSK_LO_OPEN, \
      "perturbation size: the loss is measured at W + eps*z and W - eps*z") \
    X(schedule, "train.schedule", "schedule", SCHEDULE, "constant", 0, 0, SW_RSK_ADOPT, \
      "learning-rate schedule after warmup, a function of the origin's step") \
    X(warmup_steps, "train.warmup_steps", "warmup_steps", U64, "0", 0, SW_RUNSPEC_MAX_STEPS, \
      SW_RSK_ADOPT, "training steps of linear warmup (at most `max_steps`)") \
    X(weight_decay, "train.weight_decay", "weight_decay", DOUBLE, "0", 0, 1, \
      SW_RSK_ADOPT | SW_RSK_HI_OPEN, \
      "decoupled weight decay per training step, times the learning rate") \
    X(perturb, "train.perturbation", "perturbation", PERTURB, "rademacher", 0, 0, SW_RSK_ADOPT, \
      "distribution of the direction z: +-1 per parameter, or a committed table of normal " \
      "quantiles") \
    X(directions, "train.directions", "directions", INT, "1", 1, 64, SW_RSK_ADOPT, \
      "n-SPSA: directions (updates) per training step, all on the same minibatch") \
    X(trainable, "train.trainable", "trainable", STRING, ".*", 0, 0, SW_RSK_ADOPT, \
      "PCRE2 regular expression over canonical tensor names (`h.0.attn.c_attn.weight`, " \
      "`wte.weight`, ...): only matching tensors are perturbed and updated; with " \
      "`adapter = lora` it selects among the adapter tensors (`h.0.attn.c_attn.lora_A.weight`)") \
    X(trainable_tokens, "train.trainable_tokens", "trainable_tokens", STRING, "", 0, 0, \
      SW_RSK_ADOPT | SW_RSK_OPTIONAL, \
      "comma-separated token ids (at most 64): of `wte` (and an untied `lm_head`) only " \
      "these rows are trained; `completions`: the tokens of the training file's " \
      "completions, resolved by the founder; empty: every row") \
    X(adapter, "train.adapter", "adapter", STRING, "none", 0, 0, SW_RSK_ADOPT | SW_RSK_LORA, \
      "`none`: train the model's own weights; `lora`: freeze the base model and train " \
      "low-rank adapters on the linear weights of every block (docs/model.md)") \
    X(lora_rank, "train.lora_rank", "lora_rank", INT, "8", 1, SW_LORA_MAX_RANK, \
      SW_RSK_ADOPT | SW_RSK_LORA, "rank r of every adapter (with `adapter = lora`)") \
    X(lora_alpha, "train.lora_alpha", "lora_alpha", DOUBLE, "16", 0, SW_LORA_MAX_ALPHA, \
      SW_RSK_ADOPT | SW_RSK_LO_OPEN | SW_RSK_LORA, \
      "an adapter adds (lora_alpha / lora_rank) x A^T B^T to its weight (with `adapter = lora`)") \
    X(lora_targets, "train.lora_targets", "lora_targets", STRING, SW_LORA_TARGETS_ALL, 0, 0, \
      SW_RSK_ADOPT | SW_RSK_LORA, \
      "comma-separated weights of every block that carry an adapter: `attn.c_attn`, " \
      "`attn.c_proj`, `mlp.c_fc`, `mlp.c_proj` (with `adapter = lora`)") \
    X(max_scale, "train.max_scale", "max_scale", DOUBLE, "0", 0, 1e6, \
      SW_RSK_ADOPT | SW_RSK_LO_OPEN | SW_RSK_CALIBRATE, \
      "cap on every update's quantization scale (bounds one update's influence); 0: " \
      "calibrated from the first steps of the first start, then fixed in the run spec") \
    X(scale_window, "train.scale_window", "scale_window", U64, "64", 1, \
      SW_RUNSPEC_MAX_SCALE_WINDOW, SW_RSK_ADOPT, \
      "training steps of running |g| statistics that set the next batch's scale")

/*
 * Keys that come from the base model or that this version fixes:
 *   X(field, path, source, type, def, doc)
 *   source  what sets it, for messages ("[model] path"), or NULL
 *   def     the value sw_runspec_defaults gives, or NULL (zero: from the model)
 */
#define SW_RUNSPEC_FIXED_KEYS(X) \
    X(format, "format", NULL, INT, "1", "version of the run spec's format") \
    X(base_digest, "base_model", "[model] path", HEX32, NULL, \
      "digest of the base model's float weights (sw_gpt2_digest)") \
    X(arch.layer_norm_epsilon, "arch.layer_norm_epsilon", "[model] path", F32, NULL, \
      "the base model's layer-norm epsilon") \
    X(arch.n_embd, "arch.n_embd", "[model] path", INT, NULL, "the base model's width") \
    X(arch.n_head, "arch.n_head", "[model] path", INT, NULL, "the base model's attention heads") \
    X(arch.n_layer, "arch.n_layer", "[model] path", INT, NULL, "the base model's blocks") \
    X(arch.n_positions, "arch.n_positions", "[model] path", INT, NULL, \
      "the base model's context in tokens") \
    X(arch.tie_word_embeddings, "arch.tie_word_embeddings", "[model] path", BOOL, NULL, \
      "whether the output head is the token embedding") \
    X(arch.vocab_size, "arch.vocab_size", "[model] path", INT, NULL, \
      "the base model's vocabulary") \
    X(quant, "train.quantization", NULL, QUANT, "int8", \
      "how a projected gradient is quantized into an update (int8: q in -127..127)") \
    X(admission, "admission.policy", NULL, ADMISSION, "open", \
      "who may join (open: anyone holding the run spec)")
// clang-format on

/* One run-spec key, as both lists above describe it. */
typedef struct sw_runspec_key {
    const char *path;   /* "train.lr" */
    const char *config; /* what sets it: "[train] lr", "[model] path", or NULL */
    sw_runspec_type type;
    size_t off, size;   /* of the member in sw_runspec */
    const char *def;    /* default as a configuration writes it, or NULL */
    double lo, hi;      /* bounds of a number key of SW_RUNSPEC_TRAIN_KEYS */
    unsigned flags;     /* SW_RSK_* */
    bool settable;      /* from SW_RUNSPEC_TRAIN_KEYS */
    const char *doc;
} sw_runspec_key;

/* Every key: SW_RUNSPEC_TRAIN_KEYS first, in their order, then the fixed ones. */
extern const sw_runspec_key sw_runspec_keys[];
extern const size_t sw_runspec_key_count;

/* The key of a path ("train.lr"), or NULL. */
const sw_runspec_key *sw_runspec_find(const char *path);

/*
 * The value of key k of rs as the canonical JSON writes it (strings quoted),
 * NUL-terminated in buf (truncated to fit).
 */
void sw_runspec_value_text(const sw_runspec *rs, const sw_runspec_key *k, char *buf, size_t size);

/* Copies key k's value from src to dst. */
void sw_runspec_copy_key(sw_runspec *dst, const sw_runspec *src, const sw_runspec_key *k);

/*
 * Every key at its table default; base_digest and arch zero (they come
 * from the model).  max_scale's default is 0, "calibrate": a spec is valid
 * once the founder has calibrated it or the operator set it.
 */
void sw_runspec_defaults(sw_runspec *rs);

/*
 * Checks every bound, the architecture (sw_gpt2_config_validate) and that
 * trainable compiles and selects at least one tensor (sw_trainer_trainable,
 * trainer.h, whose unanchored-search semantics the run uses); name prefixes
 * errors.
 */
int sw_runspec_validate(const sw_runspec *rs, const char *name, sw_diag *diag);

/*
 * Writes the canonical bytes of a valid spec into buf (no NUL needed, one is
 * written after them when it fits) and their count into *len.  SW_EINVAL for
 * an invalid spec, SW_ETOOBIG if size is too small (SW_RUNSPEC_MAX_BYTES always
 * suffices).
 */
int sw_runspec_canonical(const sw_runspec *rs, char *buf, size_t size, size_t *len, sw_diag *diag);

/* BLAKE2b-256 of the canonical bytes.  SW_EINVAL for an invalid spec. */
int sw_runspec_id(const sw_runspec *rs, uint8_t run_id[SW_ID_BYTES], sw_diag *diag);

/*
 * train.trainable_tokens as token ids: *n (at most SW_SPEC_MAX_ROWS) sorted,
 * distinct ids < vocab into rows.  SW_EINVAL naming the problem for anything
 * else ("completions" too: the founder resolves it first).
 */
int sw_runspec_rows(const char *list, int vocab, int32_t *rows, int *n, sw_diag *diag);

/* Whether the run trains adapters (train.adapter = lora). */
bool sw_runspec_has_adapter(const sw_runspec *rs);
/*
 * The architecture the run trains: arch, with the adapter's rank, alpha and
 * targets when it has one.  The spec must be valid (its lora_targets parse).
 */
void sw_runspec_model_config(const sw_runspec *rs, sw_gpt2_config *out);

/* The shared hyperparameters for update.h / fixed.h, run_id included. */
int sw_runspec_train_spec(const sw_runspec *rs, sw_train_spec *out, sw_diag *diag);

/*
 * Parses JSON text of len bytes (need not be canonical); name (a file path)
 * prefixes errors, which name the key: "runspec.json: train.lr: must be > 0
 * and <= 10, got -1".  On failure *out is unspecified.
 */
int sw_runspec_parse(const char *json, size_t len, const char *name, sw_runspec *out,
                     sw_diag *diag);
/* Reads and parses a file (at most SW_RUNSPEC_MAX_BYTES). */
int sw_runspec_load(const char *path, sw_runspec *out, sw_diag *diag);
/* Writes the canonical bytes with sw_file_write_atomic (mode 0644). */
int sw_runspec_write(const char *path, const sw_runspec *rs, sw_diag *diag);

/*
 * Writes the canonical (JCS / ECMAScript) form of a finite double into buf
 * (NUL-terminated; 32 bytes always suffice) and returns its length, or
 * SW_EINVAL for a non-finite x or SW_ETOOBIG for a short buf.
 */
int sw_runspec_number(double x, char *buf, size_t size);

/*
 * Compares two specs field by field in canonical key order and returns the
 * first differing key ("base_model", "arch.n_embd", "train.lr", ...), or NULL
 * when they are equal (equal specs have equal canonical bytes and run ids).
 * Doubles compare by value.  For a joiner checking a run's spec against
 * its own config: build a sw_runspec from the config and compare.
 */
const char *sw_runspec_diff(const sw_runspec *a, const sw_runspec *b);

/* Writes the Markdown reference of every key (the generated part of
 * docs/state.md; `swarmd --dump-runspec-doc`), in canonical order. */
void sw_runspec_write_doc(FILE *out);

#endif
