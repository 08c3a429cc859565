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
 *    "train":{"directions":1,"eps":0.001,"lr":0.0001,"max_scale":1,
 *             "perturbation":"rademacher","quantization":"int8",
 *             "scale_window":16,"schedule":"constant","total_steps":1000,
 *             "trainable":"","warmup_steps":0,"weight_decay":0}}
 *
 * Parsing is strict: every key is required, an unknown key is an error, every
 * value is bounded (SW_RUNSPEC_* below); errors name the key ("train.lr").
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

#include "gpt2.h"
#include "gpt2_config.h"
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
    double max_scale;                             /* (0, 1e6], finite */
    double eps;                                   /* (0, 1], finite */
    double weight_decay;                          /* [0, 1), finite (-0 reads as 0) */
    char trainable[SW_RUNSPEC_TRAINABLE_MAX + 1]; /* PCRE2 pattern, "" = every tensor */
    uint64_t scale_window;                        /* 1 .. SW_RUNSPEC_MAX_SCALE_WINDOW */
    sw_quant quant;                               /* "quantization" */
    sw_admission admission;                       /* "admission": {"policy": ...} */
} sw_runspec;

/*
 * Defaults for everything except base_digest and arch (zeroed): rademacher,
 * constant, lr 1e-4, warmup 0, total_steps 1000, directions 1, max_scale 1,
 * eps 1e-3, weight_decay 0, trainable "", scale_window 16, int8, open.
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

#endif
