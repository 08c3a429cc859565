/*
 * config: swarmd's configuration file (INI, parsed by inih) and the one table
 * that describes every key.  The table (config.c, swd_config_keys) drives:
 *   - parsing and validation (types, bounds, enum values, required keys,
 *     unknown sections and keys, duplicates, files that must exist), with
 *     errors naming the file, the line, the key and the problem;
 *   - the reference in docs/configuration.md (swd_config_write_doc, printed
 *     by `swarmd --dump-config-doc`; a test compares it with the file);
 *   - the example configuration deploy/swarmd.example.ini
 *     (swd_config_write_example, `swarmd --dump-config-example`).
 * Add a key by adding a field to swd_config and a row to the table; the
 * run-spec keys of [train] are generated from core/runspec.h's
 * SW_RUNSPEC_TRAIN_KEYS and held in swd_config.spec.
 *
 * Relative paths in a configuration file are relative to the directory of
 * that file; the loaded swd_config holds them resolved.
 *
 * Ownership: a swd_config owns its strings (swd_config_fini frees them).
 * Thread safety: loaded once on the loop thread before any other thread
 * starts, read-only afterwards.
 */
#ifndef SWD_CONFIG_H
#define SWD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "log.h"
#include "runspec.h"
#include "update.h"

/* A configuration file larger than this is refused before it is read. */
#define SWD_CONFIG_MAX_BYTES (1u << 20)
/* The longest line (key, '=', value) a configuration file may hold. */
#define SWD_CONFIG_MAX_LINE 4096
/* At most this many errors are reported for one file. */
#define SWD_CONFIG_MAX_ERRORS 20

typedef struct swd_config {
    char *file; /* the configuration file as given */
    char *dir;  /* its directory (absolute): the base of relative paths */

    /* [node] */
    char *state_dir;
    char *identity; /* NULL: the state directory's own */
    int64_t progress_ms;
    uint64_t checkpoint_every;
    int64_t checkpoint_interval_s;
    int log_level;   /* swd_log_level */
    char *listen;    /* PUB listen URL */
    char *sync;      /* sync REP listen URL */
    char *advertise; /* host put in place of a wildcard listen host; "": 127.0.0.1 */
    char *bootstrap; /* comma-separated sync URLs of members; "": found a new swarm */
    char *control;   /* control socket path; "": STATE_DIR/control.sock */
    char *metrics;   /* HOST:PORT of the Prometheus endpoint; "": none */
    int64_t heartbeat_ms;
    int64_t suspect_after;
    int64_t dead_after;
    int64_t max_staleness;
    int64_t lag_timeout_ms;
    int64_t batch_max_steps;
    int64_t batch_max_ms;
    int catch_up;               /* SWD_CATCHUP_* (catchup.h) */
    int64_t test_drop_permille; /* fault injection: drop this share of received messages */

    /* [model] */
    char *model_path;

    /* [data] */
    char *train_path;
    char *valid_path; /* NULL: no validation while training */

    /* [train] */
    int64_t batch_size;
    int64_t seq_len; /* 0: the model's context */
    uint64_t seed;
    int64_t threads; /* 0: every online CPU */
    uint64_t eval_every; /* own training steps between validations */
    bool keep_best;      /* export the best validated model to <state_dir>/best */
    /* The run-spec keys of [train] (SW_RUNSPEC_TRAIN_KEYS; max_scale 0:
     * calibrate on the first start); the model's keys stay zero here. */
    sw_runspec spec;

    /* Which table rows the file set (by index into swd_config_keys): a joiner
     * adopts the swarm's run spec and refuses only values it set itself. */
    bool given[64];
} swd_config;

typedef enum swd_cfg_type {
    SWD_CFG_STRING,
    SWD_CFG_PATH, /* a string resolved against the configuration's directory */
    SWD_CFG_INT,  /* int64_t within [imin, imax] */
    SWD_CFG_UINT64,
    SWD_CFG_DOUBLE,
    SWD_CFG_BOOL,
    SWD_CFG_ENUM,  /* int: index into enum_values */
    SWD_CFG_INT32, /* int within [imin, imax] */
    SWD_CFG_CHARS, /* a string held in a char[smax + 1] */
} swd_cfg_type;

/* What a SWD_CFG_PATH must name when the configuration is loaded. */
typedef enum swd_cfg_path_kind {
    SWD_PATH_ANY,        /* nothing checked */
    SWD_PATH_FILE,       /* an existing regular file */
    SWD_PATH_DIR,        /* an existing directory */
    SWD_PATH_DIR_CREATE, /* a directory, or a name whose parent directory exists */
    SWD_PATH_FILE_CREATE /* a file, or a name whose parent directory exists */
} swd_cfg_path_kind;

typedef struct swd_cfg_key {
    const char *section;
    const char *name;
    swd_cfg_type type;
    size_t offset;                  /* of the field in swd_config */
    const char *def;                /* default as written in a file; NULL: no default */
    bool required;                  /* must be given (def is NULL) */
    int64_t imin, imax;             /* SWD_CFG_INT */
    uint64_t umin, umax;            /* SWD_CFG_UINT64 */
    double dmin, dmax;              /* SWD_CFG_DOUBLE */
    bool dmin_exclusive;            /* SWD_CFG_DOUBLE: value must be > dmin */
    bool dmax_exclusive;            /* SWD_CFG_DOUBLE: value must be < dmax */
    size_t smax;                    /* SWD_CFG_STRING: at most this many bytes (0: any) */
    const char *const *enum_values; /* SWD_CFG_ENUM, NULL-terminated */
    swd_cfg_path_kind path_kind;    /* SWD_CFG_PATH */
    bool run_spec;                  /* part of the run spec: fixed after the first start */
    const char *example;            /* the value the example configuration sets, or NULL */
    const char *doc;                /* one line: what it means */
} swd_cfg_key;

extern const swd_cfg_key swd_config_keys[];
extern const size_t swd_config_key_count;

/*
 * Loads and validates `file`.  On failure every problem found (up to
 * SWD_CONFIG_MAX_ERRORS) has been logged at level error, each naming the
 * file, line and key, and SW_EINVAL (bad content) or another code (the file
 * could not be read) is returned; the caller exits with status 2.  On
 * success *cfg holds every key (defaults filled in, paths resolved).
 */
int swd_config_load(const char *file, swd_config *cfg);
void swd_config_fini(swd_config *cfg);

/* The default configuration (required keys unset); used by tests of the table. */
int swd_config_defaults(swd_config *cfg);

/* Writes the Markdown reference of every key (the generated part of
 * docs/configuration.md, between its markers). */
void swd_config_write_doc(FILE *out);
/* Writes the example configuration: every key, documented, optional ones
 * commented out at their default. */
void swd_config_write_example(FILE *out);

/* The table row of section.name, or NULL. */
const swd_cfg_key *swd_config_find(const char *section, const char *name);
/* The value of a key of cfg as it would be written in a file (into buf). */
const char *swd_config_value_text(const swd_config *cfg, const swd_cfg_key *k, char *buf,
                                  size_t size);

/* Enum value names (shared with the run spec). */
extern const char *const swd_log_level_names[];
extern const char *const swd_schedule_names[];
extern const char *const swd_perturb_names[];
extern const char *const swd_catch_up_names[];

#endif
