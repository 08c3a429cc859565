/*
 * cli: what every swarmctl command shares: the verb tables, the option
 * parser, strict number parsing, error reporting and exit codes.
 *
 * Conventions (docs/cli.md):
 *   - help (--help, -h) goes to stdout with exit 0;
 *   - errors go to stderr as "swarmctl: <what>: <why>", naming the input;
 *   - exit 0 on success, 1 on a runtime failure (a file missing, a corrupt
 *     model), 2 on a usage error (unknown option, missing or bad value).
 *
 * Verb groups live one per file (cmd_model.c for `swarmctl model ...`); each
 * exports a table of swctl_verb.  Single-threaded: the process's main thread.
 */
#ifndef SWCTL_CLI_H
#define SWCTL_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sw_error.h"

#define SWCTL_EXIT_OK 0
#define SWCTL_EXIT_FAIL 1
#define SWCTL_EXIT_USAGE 2

/* Input read from stdin is refused beyond this many bytes. */
#define SWCTL_STDIN_MAX (64u * 1024u * 1024u)

/*
 * A command: argv[0] is the verb's own name; returns the process exit code.
 * `path` is the command as the user typed it ("model init"), for messages.
 */
typedef int (*swctl_verb_fn)(const char *path, int argc, char **argv);

typedef struct swctl_verb {
    const char *name;
    swctl_verb_fn fn;
    const char *summary; /* one line for the group's help */
} swctl_verb;

/* The `model` group (cmd_model.c). */
extern const swctl_verb swctl_model_verbs[];
extern const size_t swctl_model_verb_count;
int swctl_model_main(const char *path, int argc, char **argv);
/* `model export` (cmd_export.c): a node's current model from its state directory. */
int swctl_model_export(const char *path, int argc, char **argv);

/* `status` and `peers` (cmd_swarm.c): a running swarmd, over its control socket. */
int swctl_status(const char *path, int argc, char **argv);
int swctl_peers(const char *path, int argc, char **argv);
/* The verbs that act on a running swarmd (cmd_swarm.c, docs/cli.md). */
int swctl_pause(const char *path, int argc, char **argv);
int swctl_resume(const char *path, int argc, char **argv);
int swctl_leave(const char *path, int argc, char **argv);
int swctl_join(const char *path, int argc, char **argv);
int swctl_checkpoint(const char *path, int argc, char **argv);
int swctl_ctl_export(const char *path, int argc, char **argv); /* `swarmctl export` */
int swctl_ctl_eval(const char *path, int argc, char **argv);   /* `swarmctl eval` */

/*
 * Runs a verb group: argv[0] is the group's name, argv[1] the verb.  Prints
 * the group's help (intro plus the table) for -h/--help or no verb.
 */
int swctl_group_run(const char *path, const char *intro, const swctl_verb *verbs, size_t n,
                    int argc, char **argv);

typedef enum swctl_opt_type {
    SWCTL_OPT_FLAG,   /* bool */
    SWCTL_OPT_STR,    /* const char * (points into argv) */
    SWCTL_OPT_INT,    /* int, within [min, max] */
    SWCTL_OPT_U64,    /* uint64_t, any value */
    SWCTL_OPT_DOUBLE, /* double, finite, within [min, max] */
} swctl_opt_type;

typedef struct swctl_opt {
    const char *name; /* long name without "--" */
    char short_name;  /* 0 if none */
    swctl_opt_type type;
    void *dest;
    double min, max; /* bounds for INT and DOUBLE */
    bool seen;       /* set by the parser */
} swctl_opt;

#define SWCTL_MAX_POSITIONAL 8

typedef struct swctl_cmd {
    const char *path;  /* "model init" */
    const char *usage; /* full help text, printed for --help */
    swctl_opt *opts;
    size_t n_opts;
    int min_pos, max_pos;
    const char *pos_names;                 /* "SRC_DIR OUT_DIR", named when missing */
    const char *pos[SWCTL_MAX_POSITIONAL]; /* filled by the parser */
    int n_pos;
} swctl_cmd;

/*
 * Parses argv[1..argc) (argv[0] is the verb): "--name value", "--name=value",
 * "-x value", "-xvalue", flags, "--" ending the options, and -h/--help.
 * Returns -1 when the command should run, otherwise the exit code to return
 * at once: 0 after printing help, 2 after a usage error (already printed).
 */
int swctl_parse(swctl_cmd *cmd, int argc, char **argv);

/* Prints a usage error naming `what`, plus a hint to --help; returns 2. */
#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
int swctl_usage_error(const char *path, const char *what, const char *fmt, ...);

/* Prints "swarmctl: <message>" to stderr; returns 1. */
#if defined(__GNUC__)
__attribute__((format(printf, 1, 2)))
#endif
int swctl_fail(const char *fmt, ...);

/* Prints the diag of a failed core call; returns 1. */
int swctl_fail_diag(const sw_diag *diag, int rc);

/* Returns 2 (after printing) unless the option was given. */
int swctl_require(const swctl_cmd *cmd, const char *name);
const swctl_opt *swctl_find_opt(const swctl_cmd *cmd, const char *name);

/*
 * Strict number parsing: the whole text, base 10, no leading space, within
 * bounds.  On failure a message naming `what` and the text is printed and 2
 * is returned.
 */
int swctl_parse_int(const char *path, const char *what, const char *text, long long min,
                    long long max, long long *out);
int swctl_parse_u64(const char *path, const char *what, const char *text, uint64_t *out);
int swctl_parse_double(const char *path, const char *what, const char *text, double min, double max,
                       double *out);

/* Reads all of stdin (at most SWCTL_STDIN_MAX bytes) into a NUL-terminated buffer. */
int swctl_read_stdin(char **out, size_t *len, sw_diag *diag);

/* Creates dir and any missing parents (mode 0755). */
int swctl_mkdir_p(const char *dir, sw_diag *diag);

/* Whether path names an existing file (of any type). */
bool swctl_exists(const char *path);

/* The number of online CPUs (at least 1): the default of --threads. */
int swctl_default_threads(void);

/* Writes all of buf to stdout; 1 (after a message) on a write error. */
int swctl_write_stdout(const void *buf, size_t len);

#endif
