#include "config.h"

#define PCRE2_CODE_UNIT_WIDTH 8

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <pcre2.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ini.h>

#include "fileio.h"
#include "runspec.h"
#include "sw_error.h"

#define CONFIG_PATH_MAX 4096

const char *const swd_log_level_names[] = {"debug", "info", "warn", "error", NULL};
/* In the order of sw_schedule and sw_perturb (update.h). */
const char *const swd_schedule_names[] = {"constant", "linear", "cosine", NULL};
const char *const swd_perturb_names[] = {"rademacher", "gaussian", NULL};
const char *const swd_catch_up_names[] = {"auto", "replay", "snapshot", NULL};

#define F(field) offsetof(swd_config, field)

/* A run-spec key of SW_RUNSPEC_TRAIN_KEYS as a [train] row, by its type.
 * A key that may be 0 to calibrate takes 0 here however its run-spec
 * bound reads; sw_runspec_validate checks the calibrated value. */
#define CONFIG_RS_U64(lo, hi, fl) .type = SWD_CFG_UINT64, .umin = (lo), .umax = (hi)
#define CONFIG_RS_INT(lo, hi, fl) .type = SWD_CFG_INT32, .imin = (lo), .imax = (hi)
#define CONFIG_RS_DOUBLE(lo, hi, fl)                                                               \
    .type = SWD_CFG_DOUBLE, .dmin = (lo), .dmax = (hi),                                            \
    .dmin_exclusive = ((fl)&SW_RSK_LO_OPEN) && !((fl)&SW_RSK_CALIBRATE),                           \
    .dmax_exclusive = ((fl)&SW_RSK_HI_OPEN) != 0
#define CONFIG_RS_SCHEDULE(lo, hi, fl) .type = SWD_CFG_ENUM, .enum_values = swd_schedule_names
#define CONFIG_RS_PERTURB(lo, hi, fl) .type = SWD_CFG_ENUM, .enum_values = swd_perturb_names
#define CONFIG_RS_STRING(lo, hi, fl) .type = SWD_CFG_CHARS, .smax = SW_RUNSPEC_TRAINABLE_MAX
#define CONFIG_RUNSPEC_ROW(field_, path_, name_, type_, def_, lo_, hi_, fl_, doc_)                 \
    {.section = "train",                                                                           \
     .name = name_,                                                                                \
     .offset = F(spec.field_),                                                                     \
     .def = def_,                                                                                  \
     .run_spec = true,                                                                             \
     .doc = doc_,                                                                                  \
     CONFIG_RS_##type_(lo_, hi_, fl_)},

/*
 * The table.  Order is the order of the docs and the example.  Bounds are
 * what the code can honour, not what is sensible: the doc line says that.
 */
const swd_cfg_key swd_config_keys[] = {
    /* [node] */
    {.section = "node",
     .name = "state_dir",
     .type = SWD_CFG_PATH,
     .offset = F(state_dir),
     .required = true,
     .path_kind = SWD_PATH_DIR_CREATE,
     .example = "/var/lib/swarmd",
     .doc = "the node's state: identity key, run spec, ledger, checkpoints (created if missing; "
            "one daemon per directory)"},
    {.section = "node",
     .name = "identity",
     .type = SWD_CFG_PATH,
     .offset = F(identity),
     .def = "",
     .path_kind = SWD_PATH_FILE_CREATE,
     .doc = "the node's Ed25519 identity key file, created (mode 0600) if missing; empty: the "
            "one in `state_dir`"},
    {.section = "node",
     .name = "progress_ms",
     .type = SWD_CFG_INT,
     .offset = F(progress_ms),
     .def = "5000",
     .imin = 0,
     .imax = 86400000,
     .doc = "milliseconds between progress lines (step, loss, steps/s), a multiple of the "
            "100 ms cron (rounded down, at least 100); 0: none"},
    {.section = "node",
     .name = "checkpoint_every",
     .type = SWD_CFG_UINT64,
     .offset = F(checkpoint_every),
     .def = "500",
     .umin = 0,
     .umax = UINT64_MAX,
     .doc = "write a checkpoint every this many training steps; 0: not by step count"},
    {.section = "node",
     .name = "checkpoint_interval_s",
     .type = SWD_CFG_INT,
     .offset = F(checkpoint_interval_s),
     .def = "600",
     .imin = 0,
     .imax = 31536000,
     .doc = "also write one when this many seconds passed since the last and the ledger "
            "moved (checked every second); 0: not by time"},
    {.section = "node",
     .name = "log_level",
     .type = SWD_CFG_ENUM,
     .offset = F(log_level),
     .def = "info",
     .enum_values = swd_log_level_names,
     .doc = "the least severe events logged"},

    {.section = "node",
     .name = "listen",
     .type = SWD_CFG_STRING,
     .offset = F(listen),
     .def = "tcp://0.0.0.0:7701",
     .smax = 256,
     .example = "tcp://0.0.0.0:7701",
     .doc = "nng URL the PUB socket listens on: this node's update batches, announces and "
            "heartbeats"},
    {.section = "node",
     .name = "sync",
     .type = SWD_CFG_STRING,
     .offset = F(sync),
     .def = "tcp://0.0.0.0:7702",
     .smax = 256,
     .example = "tcp://0.0.0.0:7702",
     .doc = "nng URL the sync service (REP) listens on: join, missing updates, snapshots"},
    {.section = "node",
     .name = "advertise",
     .type = SWD_CFG_STRING,
     .offset = F(advertise),
     .def = "",
     .smax = 256,
     .doc = "host name or address peers reach this node at, put in place of a wildcard host "
            "(0.0.0.0, *) in `listen` and `sync`; empty: 127.0.0.1"},
    {.section = "node",
     .name = "bootstrap",
     .type = SWD_CFG_STRING,
     .offset = F(bootstrap),
     .def = "",
     .smax = 4096,
     .example = "tcp://10.0.0.1:7702,tcp://10.0.0.2:7702",
     .doc = "comma-separated sync URLs of swarm members to join through; empty: found a new "
            "swarm"},
    {.section = "node",
     .name = "control",
     .type = SWD_CFG_PATH,
     .offset = F(control),
     .def = "",
     .path_kind = SWD_PATH_FILE_CREATE,
     .doc = "path of the control socket swarmctl talks to (mode 0600); empty: "
            "`control.sock` in `state_dir`"},
    {.section = "node",
     .name = "metrics",
     .type = SWD_CFG_STRING,
     .offset = F(metrics),
     .def = "",
     .smax = 256,
     .example = "127.0.0.1:9464",
     .doc = "HOST:PORT where Prometheus scrapes `/metrics` (text exposition, docs/operations.md); "
            "empty: no endpoint"},
    {.section = "node",
     .name = "heartbeat_ms",
     .type = SWD_CFG_INT,
     .offset = F(heartbeat_ms),
     .def = "1000",
     .imin = 100,
     .imax = 3600000,
     .doc = "a heartbeat is published after this many milliseconds without any other message"},
    {.section = "node",
     .name = "suspect_after",
     .type = SWD_CFG_INT,
     .offset = F(suspect_after),
     .def = "3",
     .imin = 1,
     .imax = 1000,
     .doc = "heartbeats of silence after which a peer is suspect"},
    {.section = "node",
     .name = "dead_after",
     .type = SWD_CFG_INT,
     .offset = F(dead_after),
     .def = "10",
     .imin = 2,
     .imax = 10000,
     .doc = "heartbeats of silence after which a peer is dead (must exceed suspect_after)"},
    {.section = "node",
     .name = "max_staleness",
     .type = SWD_CFG_INT,
     .offset = F(max_staleness),
     .def = "64",
     .imin = 0,
     .imax = 1000000,
     .doc = "training steps this node may run ahead of the slowest alive training peer's "
            "updates it holds (0: lockstep rounds)"},
    {.section = "node",
     .name = "lag_timeout_ms",
     .type = SWD_CFG_INT,
     .offset = F(lag_timeout_ms),
     .def = "10000",
     .imin = 0,
     .imax = 86400000,
     .doc = "a peer that holds this node back for this long is marked lagging and no longer "
            "waited for (its updates are still applied)"},
    {.section = "node",
     .name = "batch_max_steps",
     .type = SWD_CFG_INT,
     .offset = F(batch_max_steps),
     .def = "64",
     .imin = 1,
     .imax = 1024,
     .doc = "an update batch is published when it holds this many updates"},
    {.section = "node",
     .name = "batch_max_ms",
     .type = SWD_CFG_INT,
     .offset = F(batch_max_ms),
     .def = "2000",
     .imin = 0,
     .imax = 3600000,
     .doc = "... or when its oldest update is this many milliseconds old"},
    {.section = "node",
     .name = "catch_up",
     .type = SWD_CFG_ENUM,
     .offset = F(catch_up),
     .def = "auto",
     .enum_values = swd_catch_up_names,
     .doc = "how a joiner with a new state directory catches up: `replay` every update onto the "
            "base model, download a `snapshot` and replay the rest, or `auto`: whichever is "
            "estimated cheaper (docs/swarmd.md)"},
    {.section = "node",
     .name = "test_drop_permille",
     .type = SWD_CFG_INT,
     .offset = F(test_drop_permille),
     .def = "0",
     .imin = 0,
     .imax = 1000,
     .doc = "fault injection for tests: drop this share (per mille) of received published "
            "messages; anti-entropy must repair the gaps"},

    /* [model] */
    {.section = "model",
     .name = "path",
     .type = SWD_CFG_PATH,
     .offset = F(model_path),
     .required = true,
     .path_kind = SWD_PATH_DIR,
     .example = "../models/tiny-gpt2-fortunes",
     .doc = "the base model: a Hugging Face GPT-2 directory (config.json, model.safetensors, "
            "tokenizer files); its digest is pinned in the run spec"},

    /* [data] */
    {.section = "data",
     .name = "train",
     .type = SWD_CFG_PATH,
     .offset = F(train_path),
     .required = true,
     .path_kind = SWD_PATH_FILE,
     .example = "../data/topic-train.jsonl",
     .doc = "this node's training data, JSONL (`text`, or `prompt` + `completion`: loss on the "
            "completion only); it never leaves the node"},
    {.section = "data",
     .name = "valid",
     .type = SWD_CFG_PATH,
     .offset = F(valid_path),
     .path_kind = SWD_PATH_FILE,
     .example = "../data/topic-test.jsonl",
     .doc = "validation data, JSONL as `train`: scored on the trainer thread when training starts, "
            "every `eval_every` own steps and when done (loss, and accuracy for prompt/completion "
            "files), shown in `swarmctl status` and /metrics; empty: no validation"},

    /* [train] */
    {.section = "train",
     .name = "batch_size",
     .type = SWD_CFG_INT,
     .offset = F(batch_size),
     .def = "8",
     .imin = 1,
     .imax = 4096,
     .doc = "records per training step (both SPSA passes use the same minibatch)"},
    {.section = "train",
     .name = "seq_len",
     .type = SWD_CFG_INT,
     .offset = F(seq_len),
     .def = "0",
     .imin = 0,
     .imax = 65536,
     .doc = "records are cut to this many tokens; 0: the model's context (`n_positions`)"},
    {.section = "train",
     .name = "seed",
     .type = SWD_CFG_UINT64,
     .offset = F(seed),
     .def = "0",
     .umin = 0,
     .umax = UINT64_MAX,
     .doc = "seed of this node's minibatch order (the directions' seeds are not chosen: they "
            "derive from the run id, the node and the step)"},
    {.section = "train",
     .name = "threads",
     .type = SWD_CFG_INT,
     .offset = F(threads),
     .def = "0",
     .imin = 0,
     .imax = 1024,
     .doc = "worker threads of the trainer; 0: one per online CPU (results do not depend on it)"},
    {.section = "train",
     .name = "eval_every",
     .type = SWD_CFG_UINT64,
     .offset = F(eval_every),
     .def = "100",
     .umin = 1,
     .umax = UINT64_MAX,
     .doc = "own training steps between two scorings of `[data] valid` (the training pauses "
            "meanwhile)"},
    {.section = "train",
     .name = "keep_best",
     .type = SWD_CFG_BOOL,
     .offset = F(keep_best),
     .def = "false",
     .doc = "export the model to `<state_dir>/best/` (Hugging Face layout, F32, with "
            "`validation.json`) each time `[data] valid` scores better than before: the highest "
            "accuracy (ties: the lower loss), or the lowest loss for text data"},
    /* The run spec's keys: core/runspec.h, SW_RUNSPEC_TRAIN_KEYS. */
    SW_RUNSPEC_TRAIN_KEYS(CONFIG_RUNSPEC_ROW)};

const size_t swd_config_key_count = sizeof swd_config_keys / sizeof swd_config_keys[0];

/* An ENUM row writes an int: the run spec's enums must be one. */
_Static_assert(sizeof(sw_schedule) == sizeof(int) && sizeof(sw_perturb) == sizeof(int),
               "enum members of sw_runspec are ints");

static const char *const config_sections[] = {"node", "model", "data", "train"};
#define CONFIG_N_SECTIONS (sizeof config_sections / sizeof config_sections[0])

const swd_cfg_key *swd_config_find(const char *section, const char *name)
{
    for (size_t i = 0; i < swd_config_key_count; i++)
        if (strcmp(swd_config_keys[i].section, section) == 0 &&
            strcmp(swd_config_keys[i].name, name) == 0)
            return &swd_config_keys[i];
    return NULL;
}

static bool config_known_section(const char *s)
{
    for (size_t i = 0; i < CONFIG_N_SECTIONS; i++)
        if (strcmp(config_sections[i], s) == 0) return true;
    return false;
}

static void *config_field(swd_config *cfg, const swd_cfg_key *k)
{
    return (char *)cfg + k->offset;
}

static const void *config_cfield(const swd_config *cfg, const swd_cfg_key *k)
{
    return (const char *)cfg + k->offset;
}

/* ------------------------------------------------------------ values */

static int config_parse_i64(const char *s, int64_t *out)
{
    if (*s == '\0' || *s == ' ' || *s == '+') return -1;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0') return -1;
    *out = (int64_t)v;
    return 0;
}

static int config_parse_u64(const char *s, uint64_t *out)
{
    if (*s < '0' || *s > '9') return -1; /* strtoull would accept "-1" */
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0') return -1;
    *out = (uint64_t)v;
    return 0;
}

static int config_parse_double(const char *s, double *out)
{
    if (*s == '\0' || *s == ' ') return -1;
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (errno != 0 || *end != '\0' || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

static int config_parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (strcmp(s, yes[i]) == 0) return *out = true, 0;
        if (strcmp(s, no[i]) == 0) return *out = false, 0;
    }
    return -1;
}

static void config_enum_list(const swd_cfg_key *k, char *buf, size_t size)
{
    size_t o = 0;
    buf[0] = '\0';
    for (size_t i = 0; k->enum_values[i]; i++) {
        int n = snprintf(buf + o, size - o, "%s%s", i ? ", " : "", k->enum_values[i]);
        if (n < 0 || (size_t)n >= size - o) break;
        o += (size_t)n;
    }
}

static void config_fmt_double(char *buf, size_t size, double v)
{
    /* %.17g round-trips; the shortest of %g and that reads better. */
    snprintf(buf, size, "%g", v);
    if (strtod(buf, NULL) != v) snprintf(buf, size, "%.17g", v);
}

/* The allowed values of k, for messages and docs. */
static void config_range_text(const swd_cfg_key *k, char *buf, size_t size)
{
    char a[64], b[64];
    switch (k->type) {
    case SWD_CFG_INT:
    case SWD_CFG_INT32:
        snprintf(buf, size, "%" PRId64 "..%" PRId64, k->imin, k->imax);
        break;
    case SWD_CFG_UINT64:
        if (k->umax == UINT64_MAX)
            snprintf(buf, size, "%" PRIu64 "..2^64-1", k->umin);
        else
            snprintf(buf, size, "%" PRIu64 "..%" PRIu64, k->umin, k->umax);
        break;
    case SWD_CFG_DOUBLE:
        config_fmt_double(a, sizeof a, k->dmin);
        config_fmt_double(b, sizeof b, k->dmax);
        snprintf(buf, size, "%s %s, %s %s", k->dmin_exclusive ? ">" : ">=", a,
                 k->dmax_exclusive ? "<" : "<=", b);
        break;
    case SWD_CFG_BOOL:
        snprintf(buf, size, "true, false");
        break;
    case SWD_CFG_ENUM:
        config_enum_list(k, buf, size);
        break;
    case SWD_CFG_PATH:
        switch (k->path_kind) {
        case SWD_PATH_FILE:
            snprintf(buf, size, "an existing file");
            break;
        case SWD_PATH_DIR:
            snprintf(buf, size, "an existing directory");
            break;
        case SWD_PATH_DIR_CREATE:
            snprintf(buf, size, "a directory (created if missing)");
            break;
        case SWD_PATH_FILE_CREATE:
            snprintf(buf, size, "a file (created if missing)");
            break;
        default:
            snprintf(buf, size, "any path");
            break;
        }
        break;
    default:
        if (k->smax)
            snprintf(buf, size, "at most %zu bytes", k->smax);
        else
            snprintf(buf, size, "any text");
        break;
    }
}

static void config_free_field(swd_config *cfg, const swd_cfg_key *k)
{
    if (k->type == SWD_CFG_STRING || k->type == SWD_CFG_PATH) {
        char **p = config_field(cfg, k);
        free(*p);
        *p = NULL;
    }
}

/*
 * Parses text as the value of k into cfg.  On failure writes the problem
 * (without the key's name) into why and returns -1.
 */
static int config_set(swd_config *cfg, const swd_cfg_key *k, const char *text, char *why,
                      size_t why_size)
{
    char range[256];
    switch (k->type) {
    case SWD_CFG_STRING:
    case SWD_CFG_PATH: {
        if (k->smax && strlen(text) > k->smax) {
            snprintf(why, why_size, "longer than %zu bytes", k->smax);
            return -1;
        }
        char *dup = strdup(text);
        if (!dup) {
            snprintf(why, why_size, "out of memory");
            return -1;
        }
        config_free_field(cfg, k);
        *(char **)config_field(cfg, k) = dup;
        return 0;
    }
    case SWD_CFG_CHARS:
        if (strlen(text) > k->smax) {
            snprintf(why, why_size, "longer than %zu bytes", k->smax);
            return -1;
        }
        snprintf(config_field(cfg, k), k->smax + 1, "%s", text);
        return 0;
    case SWD_CFG_INT:
    case SWD_CFG_INT32: {
        int64_t v;
        if (config_parse_i64(text, &v) != 0) {
            snprintf(why, why_size, "'%s' is not an integer", text);
            return -1;
        }
        if (v < k->imin || v > k->imax) {
            config_range_text(k, range, sizeof range);
            snprintf(why, why_size, "%s is out of range (%s)", text, range);
            return -1;
        }
        if (k->type == SWD_CFG_INT32)
            *(int *)config_field(cfg, k) = (int)v; /* the bounds fit an int */
        else
            *(int64_t *)config_field(cfg, k) = v;
        return 0;
    }
    case SWD_CFG_UINT64: {
        uint64_t v;
        if (config_parse_u64(text, &v) != 0) {
            snprintf(why, why_size, "'%s' is not an unsigned integer below 2^64", text);
            return -1;
        }
        if (v < k->umin || v > k->umax) {
            config_range_text(k, range, sizeof range);
            snprintf(why, why_size, "%s is out of range (%s)", text, range);
            return -1;
        }
        *(uint64_t *)config_field(cfg, k) = v;
        return 0;
    }
    case SWD_CFG_DOUBLE: {
        double v;
        if (config_parse_double(text, &v) != 0) {
            snprintf(why, why_size, "'%s' is not a finite number", text);
            return -1;
        }
        if (v < k->dmin || (k->dmin_exclusive && v == k->dmin) || v > k->dmax ||
            (k->dmax_exclusive && v == k->dmax)) {
            config_range_text(k, range, sizeof range);
            snprintf(why, why_size, "%s is out of range (%s)", text, range);
            return -1;
        }
        *(double *)config_field(cfg, k) = v;
        return 0;
    }
    case SWD_CFG_BOOL: {
        bool v;
        if (config_parse_bool(text, &v) != 0) {
            snprintf(why, why_size, "'%s' is not a boolean (true, false, yes, no, on, off, 1, 0)",
                     text);
            return -1;
        }
        *(bool *)config_field(cfg, k) = v;
        return 0;
    }
    case SWD_CFG_ENUM:
        for (int i = 0; k->enum_values[i]; i++) {
            if (strcmp(k->enum_values[i], text) == 0) {
                *(int *)config_field(cfg, k) = i;
                return 0;
            }
        }
        config_enum_list(k, range, sizeof range);
        snprintf(why, why_size, "'%s' is not one of %s", text, range);
        return -1;
    }
    snprintf(why, why_size, "unknown type");
    return -1;
}

const char *swd_config_value_text(const swd_config *cfg, const swd_cfg_key *k, char *buf,
                                  size_t size)
{
    const void *p = config_cfield(cfg, k);
    switch (k->type) {
    case SWD_CFG_STRING:
    case SWD_CFG_PATH:
        snprintf(buf, size, "%s", *(char *const *)p ? *(char *const *)p : "");
        break;
    case SWD_CFG_CHARS:
        snprintf(buf, size, "%s", (const char *)p);
        break;
    case SWD_CFG_INT:
        snprintf(buf, size, "%" PRId64, *(const int64_t *)p);
        break;
    case SWD_CFG_INT32:
        snprintf(buf, size, "%d", *(const int *)p);
        break;
    case SWD_CFG_UINT64:
        snprintf(buf, size, "%" PRIu64, *(const uint64_t *)p);
        break;
    case SWD_CFG_DOUBLE:
        config_fmt_double(buf, size, *(const double *)p);
        break;
    case SWD_CFG_BOOL:
        snprintf(buf, size, "%s", *(const bool *)p ? "true" : "false");
        break;
    case SWD_CFG_ENUM:
        snprintf(buf, size, "%s", k->enum_values[*(const int *)p]);
        break;
    }
    return buf;
}

void swd_config_fini(swd_config *cfg)
{
    if (!cfg) return;
    for (size_t i = 0; i < swd_config_key_count; i++)
        config_free_field(cfg, &swd_config_keys[i]);
    free(cfg->file);
    free(cfg->dir);
    memset(cfg, 0, sizeof *cfg);
}

int swd_config_defaults(swd_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    /* The keys no configuration row sets (format, quantization, ...). */
    sw_runspec_defaults(&cfg->spec);
    for (size_t i = 0; i < swd_config_key_count; i++) {
        const swd_cfg_key *k = &swd_config_keys[i];
        if (!k->def) continue;
        char why[256];
        if (config_set(cfg, k, k->def, why, sizeof why) != 0) {
            /* A bad default in the table is a programmer error, except OOM. */
            SW_ASSERT(strcmp(why, "out of memory") == 0);
            swd_config_fini(cfg);
            return SW_ENOMEM;
        }
    }
    return 0;
}

/* ----------------------------------------------------------- loading */

/* A line too long for inih's buffer travels as this marker plus an index. */
#define CONFIG_LONG_MARK "\x01long:"
#define CONFIG_MAX_LONG 16

typedef struct config_parse {
    swd_config *cfg;
    const char *file;
    /* the file, split into lines by the reader */
    const char *text;
    size_t len, pos;
    int line;
    int n_errors;
    int seen_line[64]; /* per table row: the line that set it, 0 if none */
    char *long_values[CONFIG_MAX_LONG];
    int n_long;
    char section[128]; /* the last section header the reader passed */
    bool section_known;
} config_parse;

#if defined(__GNUC__)
__attribute__((format(printf, 4, 5)))
#endif
static void
config_error(config_parse *p, int line, const swd_cfg_key *k, const char *fmt, ...)
{
    p->n_errors++;
    if (p->n_errors > SWD_CONFIG_MAX_ERRORS) return;
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    char where[CONFIG_PATH_MAX + 32], qf[CONFIG_PATH_MAX + 8];
    if (line > 0)
        snprintf(where, sizeof where, "%s:%d", p->file, line);
    else
        snprintf(where, sizeof where, "%s", p->file);
    char msg[CONFIG_PATH_MAX + 1200], key[300] = "", dotted[300] = "";
    if (k) {
        snprintf(key, sizeof key, "[%s] %s: ", k->section, k->name);
        snprintf(dotted, sizeof dotted, " key=%s.%s", k->section, k->name);
    }
    snprintf(msg, sizeof msg, "%s: %s%s", where, key, what);
    swd_log(SWD_LOG_ERROR, msg, "file=%s line=%d%s", swd_log_quote(qf, sizeof qf, p->file), line,
            dotted);
}

static const char *config_trim(char *s)
{
    while (*s == ' ' || *s == '\t' || *s == '\r')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
        s[--n] = '\0';
    return s;
}

/*
 * Splits a long "name = value" line as inih would (first '=' or ':', inline
 * comment at a ';' after whitespace) and rewrites it to "name = MARKn".
 */
static bool config_shorten(config_parse *p, const char *line, size_t n, char *out, int num)
{
    char *copy = strndup(line, n);
    if (!copy) return false;
    bool ok = false;
    char *eq = strpbrk(copy, "=:");
    if (!eq || p->n_long >= CONFIG_MAX_LONG) goto done;
    *eq = '\0';
    const char *name = config_trim(copy);
    char *value = eq + 1;
    for (char *c = value; *c; c++) {
        if (*c == ';' && c > value && (c[-1] == ' ' || c[-1] == '\t')) {
            *c = '\0';
            break;
        }
    }
    value = (char *)config_trim(value);
    int need = snprintf(out, (size_t)num, "%s = %s%d\n", name, CONFIG_LONG_MARK, p->n_long);
    if (need < 0 || need >= num) goto done;
    p->long_values[p->n_long] = strdup(value);
    if (!p->long_values[p->n_long]) goto done;
    p->n_long++;
    ok = true;
done:
    free(copy);
    return ok;
}

/* inih's fgets-like reader over the file image: counts lines, checks sections. */
static char *config_reader(char *str, int num, void *stream)
{
    config_parse *p = stream;
    if (p->pos >= p->len) return NULL;
    const char *start = p->text + p->pos;
    const char *nl = memchr(start, '\n', p->len - p->pos);
    size_t n = nl ? (size_t)(nl - start) + 1 : p->len - p->pos;
    p->pos += n;
    p->line++;
    size_t body = n - (nl ? 1 : 0);
    if (memchr(start, '\0', body)) {
        config_error(p, p->line, NULL, "a NUL byte in the line");
        str[0] = '\n', str[1] = '\0';
        return str;
    }
    if (body > SWD_CONFIG_MAX_LINE) {
        config_error(p, p->line, NULL, "line longer than %d bytes", SWD_CONFIG_MAX_LINE);
        str[0] = '\n', str[1] = '\0';
        return str;
    }

    /* Section headers are checked here: inih reports only keys, so an empty
     * misspelled section would otherwise pass unnoticed. */
    char head[SWD_CONFIG_MAX_LINE + 1];
    memcpy(head, start, body);
    head[body] = '\0';
    char *t = (char *)config_trim(head);
    if (t[0] == '[') {
        char *close = strchr(t, ']');
        if (close) {
            *close = '\0';
            snprintf(p->section, sizeof p->section, "%s", t + 1);
            p->section_known = config_known_section(p->section);
            if (!p->section_known)
                config_error(p, p->line, NULL,
                             "unknown section [%s] (known: [node], [model], [data], [train])",
                             t + 1);
        }
    }

    /* inih's line buffer is num bytes including the newline and NUL. */
    if (body + 2 <= (size_t)num) {
        memcpy(str, start, body);
        str[body] = '\n';
        str[body + 1] = '\0';
        return str;
    }
    if (t[0] == ';' || t[0] == '#') {
        str[0] = '\n', str[1] = '\0';
        return str;
    }
    if (!config_shorten(p, start, body, str, num)) {
        config_error(p, p->line, NULL, "line too long to parse");
        str[0] = '\n', str[1] = '\0';
    }
    return str;
}

static int config_handler(void *user, const char *section, const char *name, const char *value)
{
    config_parse *p = user;
    int line = p->line;
    if (!p->section_known) {
        /* A key before any section; keys of unknown sections were reported with it. */
        if (section[0] == '\0')
            config_error(p, line, NULL,
                         "%s: key outside any section (put it under [node], [model], [data] or "
                         "[train])",
                         name);
        return 1;
    }
    const swd_cfg_key *k = swd_config_find(section, name);
    if (!k) {
        const swd_cfg_key unknown = {.section = section, .name = name};
        /* Name the section that has it when the key is only misplaced. */
        const char *other = NULL;
        for (size_t i = 0; i < swd_config_key_count; i++)
            if (strcmp(swd_config_keys[i].name, name) == 0) other = swd_config_keys[i].section;
        if (other)
            config_error(p, line, &unknown, "unknown key (it belongs in [%s])", other);
        else
            config_error(p, line, &unknown, "unknown key");
        return 1;
    }
    size_t idx = (size_t)(k - swd_config_keys);
    if (p->seen_line[idx]) {
        config_error(p, line, k, "given twice (first on line %d)", p->seen_line[idx]);
        return 1;
    }
    p->seen_line[idx] = line;

    if (strncmp(value, CONFIG_LONG_MARK, strlen(CONFIG_LONG_MARK)) == 0) {
        int i = atoi(value + strlen(CONFIG_LONG_MARK));
        if (i >= 0 && i < p->n_long) value = p->long_values[i];
    }
    /* One pair of surrounding double quotes is removed (no escapes inside). */
    char unq[SWD_CONFIG_MAX_LINE + 1];
    size_t vn = strlen(value);
    if (vn >= 2 && value[0] == '"' && value[vn - 1] == '"' && vn - 2 < sizeof unq) {
        memcpy(unq, value + 1, vn - 2);
        unq[vn - 2] = '\0';
        value = unq;
    }
    char why[600];
    if (config_set(p->cfg, k, value, why, sizeof why) != 0) config_error(p, line, k, "%s", why);
    return 1;
}

/* Resolves a path value against the configuration's directory and checks it. */
static void config_check_path(config_parse *p, const swd_cfg_key *k, int line)
{
    char **field = config_field(p->cfg, k);
    if (!*field || (*field)[0] == '\0') {
        if (k->required) config_error(p, line, k, "must not be empty");
        free(*field);
        *field = NULL;
        return;
    }
    if ((*field)[0] != '/') {
        char joined[CONFIG_PATH_MAX];
        if (sw_path_join(joined, sizeof joined, p->cfg->dir, *field) != 0) {
            config_error(p, line, k, "path too long");
            return;
        }
        char *dup = strdup(joined);
        if (!dup) {
            config_error(p, line, k, "out of memory");
            return;
        }
        free(*field);
        *field = dup;
    }
    const char *path = *field;
    struct stat st;
    int exists = stat(path, &st) == 0;
    int err = errno;
    switch (k->path_kind) {
    case SWD_PATH_FILE:
        if (!exists)
            config_error(p, line, k, "%s: %s", path, strerror(err));
        else if (!S_ISREG(st.st_mode))
            config_error(p, line, k, "%s: not a regular file", path);
        break;
    case SWD_PATH_DIR:
        if (!exists)
            config_error(p, line, k, "%s: %s", path, strerror(err));
        else if (!S_ISDIR(st.st_mode))
            config_error(p, line, k, "%s: not a directory", path);
        break;
    case SWD_PATH_DIR_CREATE:
    case SWD_PATH_FILE_CREATE: {
        bool want_dir = k->path_kind == SWD_PATH_DIR_CREATE;
        if (exists) {
            if (want_dir && !S_ISDIR(st.st_mode))
                config_error(p, line, k, "%s: not a directory", path);
            if (!want_dir && !S_ISREG(st.st_mode))
                config_error(p, line, k, "%s: not a regular file", path);
            break;
        }
        if (err != ENOENT) {
            config_error(p, line, k, "%s: %s", path, strerror(err));
            break;
        }
        char parent[CONFIG_PATH_MAX];
        snprintf(parent, sizeof parent, "%s", path);
        char *slash = strrchr(parent, '/');
        if (slash == parent)
            slash[1] = '\0';
        else if (slash)
            *slash = '\0';
        if (stat(parent, &st) != 0 || !S_ISDIR(st.st_mode))
            config_error(p, line, k, "%s: parent directory %s does not exist", path, parent);
        break;
    }
    default:
        break;
    }
}

static void config_check_regex(config_parse *p, const swd_cfg_key *k, int line)
{
    const char *pattern = config_field(p->cfg, k); /* SWD_CFG_CHARS */
    int err = 0;
    PCRE2_SIZE off = 0;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, 0, &err, &off, NULL);
    if (re) {
        pcre2_code_free(re);
        return;
    }
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    config_error(p, line, k, "'%s' is not a valid regular expression: %s at offset %zu", pattern,
                 (const char *)msg, (size_t)off);
}

/*
 * The absolute directory of file, without resolving symbolic links (paths
 * stay as the operator wrote them).  NULL when out of memory or the working
 * directory is unknown.
 */
static char *config_dir_of(const char *file)
{
    char buf[CONFIG_PATH_MAX];
    size_t n = strnlen(file, CONFIG_PATH_MAX);
    if (n == CONFIG_PATH_MAX) return NULL;
    const char *slash = strrchr(file, '/');
    if (file[0] == '/') {
        size_t dn = slash == file ? 1 : (size_t)(slash - file);
        return strndup(file, dn);
    }
    if (!getcwd(buf, sizeof buf)) return NULL;
    if (!slash) return strdup(buf);
    size_t cn = strlen(buf);
    int w = snprintf(buf + cn, sizeof buf - cn, "/%.*s", (int)(slash - file), file);
    if (w < 0 || (size_t)w >= sizeof buf - cn) return NULL;
    return strdup(buf);
}

/* adapter is none or lora; the lora_* keys only with lora, and a target list that reads. */
static void config_check_adapter(config_parse *p, const swd_config *cfg)
{
    const swd_cfg_key *ad = swd_config_find("train", "adapter");
    const int ad_line = p->seen_line[ad - swd_config_keys];
    const bool lora = strcmp(cfg->spec.adapter, "lora") == 0;
    if (!lora && strcmp(cfg->spec.adapter, "none") != 0) {
        config_error(p, ad_line, ad, "'%.64s' is not none or lora", cfg->spec.adapter);
        return;
    }
    static const char *const keys[] = {"lora_rank", "lora_alpha", "lora_targets"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const swd_cfg_key *k = swd_config_find("train", keys[i]);
        const int line = p->seen_line[k - swd_config_keys];
        if (!lora && line)
            config_error(p, line, k, "only with adapter = lora (adapter is %s)",
                         cfg->spec.adapter);
    }
    unsigned bits;
    sw_diag d;
    const swd_cfg_key *tk = swd_config_find("train", "lora_targets");
    if (lora && sw_lora_targets_parse(cfg->spec.lora_targets, &bits, &d) != 0)
        config_error(p, p->seen_line[tk - swd_config_keys], tk, "%s", d.msg);
}

int swd_config_load(const char *file, swd_config *out)
{
    config_parse p = {0};
    swd_config cfg;
    char *text = NULL;
    size_t len = 0;
    char qf[CONFIG_PATH_MAX + 8];
    int rc = swd_config_defaults(&cfg);
    if (rc != 0) return rc;
    SW_ASSERT(swd_config_key_count <= sizeof p.seen_line / sizeof p.seen_line[0]);
    p.cfg = &cfg;
    p.file = file;

    sw_diag d = {{0}};
    rc = sw_file_read(file, SWD_CONFIG_MAX_BYTES, &text, &len, &d);
    if (rc != 0) {
        swd_log(SWD_LOG_ERROR, d.msg[0] ? d.msg : sw_strerror(rc), "file=%s",
                swd_log_quote(qf, sizeof qf, file));
        goto fail;
    }
    cfg.file = strdup(file);
    cfg.dir = config_dir_of(file);
    if (!cfg.file || !cfg.dir) {
        rc = SW_ENOMEM;
        swd_log(SWD_LOG_ERROR, "out of memory", NULL);
        goto fail;
    }

    p.text = text;
    p.len = len;
    /* Skip a UTF-8 byte-order mark ourselves: the reader hands inih lines. */
    if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0) p.pos = 3;
    ini_allow_multiline = false;
    int bad_line = ini_parse_stream(config_reader, &p, config_handler, &p);
    if (bad_line > 0)
        config_error(&p, bad_line, NULL,
                     "syntax error (expected '[section]', 'key = value' or a comment)");
    else if (bad_line < 0)
        config_error(&p, 0, NULL, "the parser ran out of memory");

    for (size_t i = 0; i < swd_config_key_count; i++) {
        const swd_cfg_key *k = &swd_config_keys[i];
        if (k->required && !p.seen_line[i]) {
            config_error(&p, 0, k, "required key is missing");
            continue;
        }
        if (k->type == SWD_CFG_PATH && (p.seen_line[i] || k->def))
            config_check_path(&p, k, p.seen_line[i]);
    }
    const swd_cfg_key *trainable = swd_config_find("train", "trainable");
    config_check_regex(&p, trainable, p.seen_line[trainable - swd_config_keys]);
    config_check_adapter(&p, &cfg);
    const swd_cfg_key *warm = swd_config_find("train", "warmup_steps");
    if (cfg.spec.warmup_steps > cfg.spec.total_steps)
        config_error(&p, p.seen_line[warm - swd_config_keys], warm,
                     "%" PRIu64 " exceeds max_steps (%" PRIu64 ")", cfg.spec.warmup_steps,
                     cfg.spec.total_steps);

    if (p.n_errors > SWD_CONFIG_MAX_ERRORS)
        swd_log(SWD_LOG_ERROR, "more configuration errors not shown", "file=%s count=%d",
                swd_log_quote(qf, sizeof qf, file), p.n_errors - SWD_CONFIG_MAX_ERRORS);
    if (p.n_errors > 0) {
        rc = SW_EINVAL;
        goto fail;
    }
    for (size_t i = 0; i < swd_config_key_count; i++)
        cfg.given[i] = p.seen_line[i] != 0;
    for (int i = 0; i < p.n_long; i++)
        free(p.long_values[i]);
    free(text);
    *out = cfg;
    return 0;

fail:
    for (int i = 0; i < p.n_long; i++)
        free(p.long_values[i]);
    free(text);
    swd_config_fini(&cfg);
    return rc;
}

/* ------------------------------------------------- docs and example */

static const char *config_type_name(swd_cfg_type t)
{
    /* INT32 and CHARS read and document as int and string. */
    static const char *const names[] = {"string", "path", "int", "uint64", "double",
                                        "bool",   "enum", "int", "string"};
    return names[t];
}

/* Markdown table cells need the pipe escaped. */
static void config_md_cell(FILE *out, const char *text)
{
    for (const char *c = text; *c; c++) {
        if (*c == '|') fputc('\\', out);
        fputc(*c, out);
    }
}

void swd_config_write_doc(FILE *out)
{
    for (size_t s = 0; s < CONFIG_N_SECTIONS; s++) {
        fprintf(out, "### [%s]\n\n", config_sections[s]);
        fputs("| key | type | default | allowed | run spec | meaning |\n", out);
        fputs("| --- | --- | --- | --- | --- | --- |\n", out);
        for (size_t i = 0; i < swd_config_key_count; i++) {
            const swd_cfg_key *k = &swd_config_keys[i];
            if (strcmp(k->section, config_sections[s]) != 0) continue;
            char range[256], def[300];
            config_range_text(k, range, sizeof range);
            if (k->required)
                snprintf(def, sizeof def, "required");
            else if (k->def && k->def[0])
                snprintf(def, sizeof def, "`%s`", k->def);
            else
                snprintf(def, sizeof def, "empty");
            fprintf(out, "| `%s` | %s | %s | ", k->name, config_type_name(k->type), def);
            config_md_cell(out, range);
            fprintf(out, " | %s | ", k->run_spec ? "yes" : "");
            config_md_cell(out, k->doc);
            fputs(" |\n", out);
        }
        fputc('\n', out);
    }
}

void swd_config_write_example(FILE *out)
{
    fputs("# swarmd configuration: every key, with its meaning and allowed values.\n"
          "# Generated by `swarmd --dump-config-example` from the table in daemon/config.c;\n"
          "# the reference is docs/configuration.md.  Keys commented out show their default.\n"
          "# Relative paths are relative to the directory of this file.\n"
          "# Keys marked \"run spec\" are fixed by the first start of the state directory.\n",
          out);
    for (size_t s = 0; s < CONFIG_N_SECTIONS; s++) {
        fprintf(out, "\n[%s]\n", config_sections[s]);
        for (size_t i = 0; i < swd_config_key_count; i++) {
            const swd_cfg_key *k = &swd_config_keys[i];
            if (strcmp(k->section, config_sections[s]) != 0) continue;
            char range[256];
            config_range_text(k, range, sizeof range);
            /* Markdown backticks read as noise in an INI comment. */
            fputs("\n# ", out);
            for (const char *c = k->doc; *c; c++)
                if (*c != '`') fputc(*c, out);
            fprintf(out, "\n# %s, %s%s%s\n", config_type_name(k->type), range,
                    k->required ? "; required" : "", k->run_spec ? "; run spec" : "");
            if (k->example)
                fprintf(out, "%s = %s\n", k->name, k->example);
            else if (k->def && k->def[0])
                fprintf(out, "# %s = %s\n", k->name, k->def);
            else
                fprintf(out, "# %s =\n", k->name);
        }
    }
}
