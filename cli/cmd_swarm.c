/*
 * The commands that drive a running swarmd over its control socket
 * (ctl_client.h): `status` (optionally --watch) and `peers`, which read,
 * and the verbs that act: `pause`, `resume`, `leave`, `join`, `checkpoint`,
 * `export` and `eval`.
 *
 * --json prints the daemon's reply as it came (re-serialised on one line),
 * so the schema in docs/cli.md is the daemon's.  The human form of status
 * is INFO style (`# Section`, then `key:value` lines) plus a peers table,
 * reading every field through the status schema (core/status.h), so a
 * field renamed there cannot be lost here; a verb prints one line saying
 * what happened.  Fields the daemon omits or
 * sends as null print as "-" (or are left out of a sentence); only `node`
 * and `peers` are required, so an older or newer daemon still gets a
 * readable status.  Strings that came from the daemon or from other nodes
 * (addresses, paths, warnings) are printed with control characters
 * replaced: a peer must not drive our terminal.
 *
 * Single-threaded (swarmctl's main thread); `status --watch` installs a
 * SIGINT handler so that Ctrl-C ends it with exit 0.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "cli.h"
#include "ctl_client.h"
#include "runspec.h"
#include "status.h"

#define SWARM_SHORT_ID 12 /* hex characters of an id shown in human output */
#define SWARM_CELL 160    /* a table cell is cut to this many bytes */
#define SWARM_COLS 8
#define SWARM_LONG 4200 /* a path or a warning from the daemon is cut to this many bytes */
#define SWARM_ERR 1024  /* a failure message */
#define SWARM_WATCH_INTERVAL_MS 2000

/* The options every control command takes, for the usage texts. */
#define SWARM_USAGE_CTL                                                                            \
    "  --control PATH  the control socket (swarmd's [node] control)\n"                             \
    "  --state-dir DIR the node's state directory: the socket is DIR/control.sock\n"               \
    "                  (default: " SWCTL_CTL_DEFAULT_STATE_DIR "/" SWCTL_CTL_SOCKET_NAME ")\n"
#define SWARM_USAGE_EXIT                                                                           \
    "\n"                                                                                           \
    "Exit status: 0 success, 1 no daemon, no reply or an error from it, 2 usage error.\n"

static const char swarm_status_usage[] =
    "Usage: swarmctl status [--json] [--control PATH | --state-dir DIR] [--timeout-ms N]\n"
    "                       [--watch [--interval-ms N] [--count N]]\n"
    "\n"
    "Asks a running swarmd over its control socket how it is doing: the node (id, state,\n"
    "run, step, loss and its trend, speed, uptime), its model (digest, updates), its\n"
    "ledger, its network counters (bytes, updates, messages, dropped messages by\n"
    "reason), the swarm (lag, digest agreement, peers by state), warnings, and a table\n"
    "of its peers.  Ids are shown by their first 12 hex characters.\n"
    "\n"
    "Options:\n"
    "  --json          print the daemon's status object on one line (schema in\n"
    "                  docs/cli.md)\n" SWARM_USAGE_CTL
    "  --timeout-ms N  give up after N ms without a reply (default 5000)\n"
    "  --watch         ask again every --interval-ms until Ctrl-C (or --count): on a\n"
    "                  terminal the screen is redrawn; otherwise snapshots follow each\n"
    "                  other, separated by a blank line (with --json: one per line)\n"
    "  --interval-ms N time between two snapshots, 100..3600000 (default 2000)\n"
    "  --count N       stop after N snapshots (default: until Ctrl-C)\n"
    "  -h, --help      show this help\n" SWARM_USAGE_EXIT;

static const char swarm_peers_usage[] =
    "Usage: swarmctl peers [--json] [--control PATH | --state-dir DIR] [--timeout-ms N]\n"
    "\n"
    "The peers table of `swarmctl status` alone: id, membership state, the peer's own\n"
    "state, step, ledger updates, when it was last heard from, and its address; flags\n"
    "`lagging` (no longer waited for) and `banned` follow.\n"
    "\n"
    "Options:\n"
    "  --json          print the daemon's peers array on one line\n" SWARM_USAGE_CTL
    "  --timeout-ms N  give up after N ms without a reply (default 5000)\n"
    "  -h, --help      show this help\n" SWARM_USAGE_EXIT;

static const char swarm_pause_usage[] =
    "Usage: swarmctl pause [--json] [--control PATH | --state-dir DIR] [--timeout-ms N]\n"
    "\n"
    "Stops the node producing updates.  It keeps syncing, applying its peers' updates\n"
    "and serving them; `swarmctl resume` restarts training.  Pausing is not remembered\n"
    "across a restart of swarmd.\n"
    "\n"
    "Options:\n"
    "  --json          print the daemon's reply on one line\n" SWARM_USAGE_CTL
    "  --timeout-ms N  give up after N ms without a reply (default 5000)\n"
    "  -h, --help      show this help\n" SWARM_USAGE_EXIT;

static const char swarm_resume_usage[] =
    "Usage: swarmctl resume [--json] [--control PATH | --state-dir DIR] [--timeout-ms N]\n"
    "\n"
    "Restarts training on a paused node (a node that has reached max_steps stays done).\n"
    "\n"
    "Options:\n"
    "  --json          print the daemon's reply on one line\n" SWARM_USAGE_CTL
    "  --timeout-ms N  give up after N ms without a reply (default 5000)\n"
    "  -h, --help      show this help\n" SWARM_USAGE_EXIT;

static const char swarm_leave_usage[] =
    "Usage: swarmctl leave [--json] [--control PATH | --state-dir DIR] [--timeout-ms N]\n"
    "\n"
    "Makes the node leave the swarm gracefully: it publishes its last updates, waits\n"
    "for its peers to have them, says goodbye, writes a final checkpoint and exits 0.\n"
    "swarmctl returns once the daemon has accepted; the daemon exits shortly after.\n"
    "A node that left stays left when restarted on the same state directory.\n"
    "\n"
    "Options:\n"
    "  --json          print the daemon's reply on one line\n" SWARM_USAGE_CTL
    "  --timeout-ms N  give up after N ms without a reply (default 5000)\n"
    "  -h, --help      show this help\n" SWARM_USAGE_EXIT;

static const char swarm_join_usage[] =
    "Usage: swarmctl join ADDR [--json] [--control PATH | --state-dir DIR] [--timeout-ms N]\n"
    "\n"
    "Connects the running node to the swarm member whose sync address is ADDR (its\n"
    "`sync_addr` in `swarmctl status`, e.g. tcp://10.0.0.1:7702) and returns once that\n"
    "member has welcomed it.  Both must run the same run spec (same base model and\n"
    "training settings); otherwise the daemon refuses and says why.\n"
    "\n"
    "Options:\n"
    "  --json          print the daemon's reply on one line\n" SWARM_USAGE_CTL
    "  --timeout-ms N  give up after N ms without a reply (default 30000)\n"
    "  -h, --help      show this help\n" SWARM_USAGE_EXIT;

static const char swarm_checkpoint_usage[] =
    "Usage: swarmctl checkpoint [--json] [--control PATH | --state-dir DIR] [--timeout-ms N]\n"
    "\n"
    "Makes the node write a checkpoint now and prints its path and the number of updates\n"
    "it holds (when nothing changed since the newest checkpoint, that one's).\n"
    "\n"
    "Options:\n"
    "  --json          print the daemon's reply on one line\n" SWARM_USAGE_CTL
    "  --timeout-ms N  give up after N ms without a reply (default 120000)\n"
    "  -h, --help      show this help\n" SWARM_USAGE_EXIT;

static const char swarm_export_usage[] =
    "Usage: swarmctl export OUT_DIR [--dtype f32|f16] [--json] [--control PATH | --state-dir DIR]\n"
    "                       [--timeout-ms N]\n"
    "\n"
    "Makes the node write its live model to OUT_DIR in Hugging Face layout\n"
    "(config.json, model.safetensors, tokenizer files) while training goes on, and\n"
    "prints the number of updates it holds and its digest (the digest `swarmctl model\n"
    "inspect` prints).  The daemon writes OUT_DIR itself: a relative OUT_DIR is made\n"
    "absolute here, and swarmd's user must be able to create it.\n"
    "(`swarmctl model export` rebuilds a model from a state directory instead.)\n"
    "\n"
    "Options:\n"
    "  --dtype f32|f16 the stored dtype (default f32)\n"
    "  --json          print the daemon's reply on one line\n" SWARM_USAGE_CTL
    "  --timeout-ms N  give up after N ms without a reply (default 600000)\n"
    "  -h, --help      show this help\n" SWARM_USAGE_EXIT;

static const char swarm_eval_usage[] =
    "Usage: swarmctl eval --data FILE [--json] [--control PATH | --state-dir DIR]\n"
    "                     [--timeout-ms N]\n"
    "\n"
    "Makes the node score its live model on a JSONL file (as `swarmctl model eval`\n"
    "does) and prints the loss, perplexity, tokens and records scored, the accuracy\n"
    "when it applies, and how many updates the model held.  The daemon reads FILE\n"
    "itself: a relative FILE is made absolute here, and swarmd's user must be able\n"
    "to read it.\n"
    "\n"
    "Options:\n"
    "  --data FILE     the JSONL file to score (required)\n"
    "  --json          print the daemon's reply on one line\n" SWARM_USAGE_CTL
    "  --timeout-ms N  give up after N ms without a reply (default 600000)\n"
    "  -h, --help      show this help\n" SWARM_USAGE_EXIT;

/* ---------------------------------------------------------------- fetching */

#define SWARM_MAX_OPTS 8

typedef struct swarm_args {
    bool json;
    const char *control, *state_dir;
    int timeout_ms;
    char ctl_path[SWCTL_CTL_PATH_MAX + 1];
    const char *pos[SWCTL_MAX_POSITIONAL];
    int n_pos;
} swarm_args;

/*
 * Parses the options every control command takes, plus `extra` (at most
 * SWARM_MAX_OPTS - 4; their `seen` is set) and min_pos..max_pos positional
 * arguments.  Returns -1
 * to go on, else the exit code (help printed, or a usage error).
 */
static int swarm_parse(const char *path, const char *usage, int default_timeout_ms,
                       swctl_opt *extra, size_t n_extra, int min_pos, int max_pos,
                       const char *pos_names, int argc, char **argv, swarm_args *a)
{
    SW_ASSERT(n_extra + 4 <= SWARM_MAX_OPTS);
    a->json = false;
    a->control = a->state_dir = NULL;
    a->timeout_ms = default_timeout_ms;
    a->n_pos = 0;
    swctl_opt opts[SWARM_MAX_OPTS] = {
        {"json", 0, SWCTL_OPT_FLAG, &a->json, 0, 0, false},
        {"control", 0, SWCTL_OPT_STR, &a->control, 0, 0, false},
        {"state-dir", 0, SWCTL_OPT_STR, &a->state_dir, 0, 0, false},
        {"timeout-ms", 0, SWCTL_OPT_INT, &a->timeout_ms, 1, 3600000, false},
    };
    for (size_t i = 0; i < n_extra; i++)
        opts[4 + i] = extra[i];
    swctl_cmd cmd = {.path = path,
                     .usage = usage,
                     .opts = opts,
                     .n_opts = 4 + n_extra,
                     .min_pos = min_pos,
                     .max_pos = max_pos,
                     .pos_names = pos_names};
    int rc = swctl_parse(&cmd, argc, argv);
    for (size_t i = 0; i < n_extra; i++)
        extra[i].seen = opts[4 + i].seen;
    if (rc >= 0) return rc;
    for (int i = 0; i < cmd.n_pos; i++)
        a->pos[i] = cmd.pos[i];
    a->n_pos = cmd.n_pos;
    if (a->control != NULL && a->state_dir != NULL)
        return swctl_usage_error(path, "--control", "give either --control or --state-dir");
    if (a->control != NULL && a->control[0] == '\0')
        return swctl_usage_error(path, "--control", "empty path");
    if (a->state_dir != NULL && a->state_dir[0] == '\0')
        return swctl_usage_error(path, "--state-dir", "empty path");
    sw_diag d = {{0}};
    if (swctl_ctl_path(a->control, a->state_dir, a->ctl_path, sizeof a->ctl_path, &d) != 0)
        return swctl_usage_error(path, a->control != NULL ? "--control" : "--state-dir", "%s",
                                 d.msg);
    return -1;
}

/* 0 when root's `key` has the expected type (or is absent and optional); else 1, in err. */
static int swarm_check_section(const char *ctl, const json_t *root, const char *key, bool required,
                               char *err, size_t errsize)
{
    const json_t *v = json_object_get(root, key);
    if (v == NULL && !required) return 0;
    if (v == NULL) {
        snprintf(err, errsize, "%s: daemon sent an invalid status: no \"%s\"", ctl, key);
        return 1;
    }
    if (strcmp(key, sw_status_key(SW_STATUS_PEERS)) == 0) {
        if (!json_is_array(v)) {
            snprintf(err, errsize, "%s: daemon sent an invalid status: \"peers\" is not an array",
                     ctl);
            return 1;
        }
        size_t i;
        const json_t *p;
        json_array_foreach(v, i, p)
        {
            if (!json_is_object(p)) {
                snprintf(err, errsize,
                         "%s: daemon sent an invalid status: peers[%zu] is not an object", ctl, i);
                return 1;
            }
        }
        return 0;
    }
    if (!json_is_object(v)) {
        snprintf(err, errsize, "%s: daemon sent an invalid status: \"%s\" is not an object", ctl,
                 key);
        return 1;
    }
    return 0;
}

#define SWARM_SECTION_MAX 32

/* Appends the top-level member of the status holding f ("train" for train.loss), once. */
static void swarm_add_section(char sections[][SWARM_SECTION_MAX], size_t *n, sw_status_field f)
{
    const char *path = sw_status_def_of(f)->path;
    size_t len = strcspn(path, ".[");
    SW_ASSERT(len < SWARM_SECTION_MAX);
    for (size_t i = 0; i < *n; i++)
        if (strncmp(sections[i], path, len) == 0 && sections[i][len] == '\0') return;
    memcpy(sections[*n], path, len);
    sections[(*n)++][len] = '\0';
}

/*
 * Asks for the status and checks its shape.  On failure returns 1 with the
 * message (without the "swarmctl: " prefix) in err, nothing printed.
 */
static int swarm_fetch(const swarm_args *a, json_t **out, char *err, size_t errsize)
{
    sw_diag d = {{0}};
    json_t *root = NULL;
    int rc = swctl_ctl_call(a->ctl_path, "status", a->timeout_ms, &root, &d);
    if (rc != 0) {
        snprintf(err, errsize, "%s", d.msg[0] != '\0' ? d.msg : sw_strerror(rc));
        return SWCTL_EXIT_FAIL;
    }
    /* node and peers first: without them there is nothing to show */
    char sections[SW_STATUS_COUNT][SWARM_SECTION_MAX];
    size_t n = 0;
    swarm_add_section(sections, &n, SW_STATUS_NODE_ID);
    swarm_add_section(sections, &n, SW_STATUS_PEERS);
    for (int f = 0; f < SW_STATUS_COUNT; f++)
        if (!sw_status_is_peer((sw_status_field)f))
            swarm_add_section(sections, &n, (sw_status_field)f);
    for (size_t i = 0; i < n; i++) {
        if (swarm_check_section(a->ctl_path, root, sections[i], i < 2, err, errsize) != 0) {
            json_decref(root);
            return SWCTL_EXIT_FAIL;
        }
    }
    *out = root;
    return 0;
}

static int swarm_print_json(const json_t *v, const char *ctl)
{
    char *text = json_dumps(v, JSON_COMPACT);
    if (text == NULL) return swctl_fail("%s: cannot re-encode the daemon's reply", ctl);
    int rc = swctl_write_stdout(text, strlen(text));
    free(text);
    if (rc == 0) rc = swctl_write_stdout("\n", 1);
    return rc;
}

/* -------------------------------------------------------------- formatting */

/* Copies s into buf (size > 0), control characters replaced, cut to fit. */
static const char *swarm_clean(const char *s, char *buf, size_t size)
{
    size_t n = 0;
    for (; s[n] != '\0' && n + 1 < size; n++)
        buf[n] = (unsigned char)s[n] < 0x20 || s[n] == 0x7f ? '?' : s[n];
    buf[n] = '\0';
    return buf;
}

/* A value as text: "-" missing (NULL) or null, "?" of an unexpected type. */
static const char *swarm_vtext(const json_t *v, char *buf, size_t size)
{
    if (v == NULL || json_is_null(v)) return "-";
    if (json_is_string(v)) return swarm_clean(json_string_value(v), buf, size);
    if (json_is_integer(v)) {
        snprintf(buf, size, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return buf;
    }
    if (json_is_real(v)) {
        snprintf(buf, size, "%g", json_real_value(v));
        return buf;
    }
    if (json_is_boolean(v)) return json_is_true(v) ? "true" : "false";
    return "?";
}

/* o's member key as swarm_vtext writes it (o may be NULL). */
static const char *swarm_text(const json_t *o, const char *key, char *buf, size_t size)
{
    return swarm_vtext(o != NULL ? json_object_get(o, key) : NULL, buf, size);
}

/* An id as its first SWARM_SHORT_ID characters. */
static const char *swarm_vshort(const json_t *v, char *buf, size_t size)
{
    const char *t = swarm_vtext(v, buf, size);
    if (t == buf && json_is_string(v) && strlen(buf) > SWARM_SHORT_ID) buf[SWARM_SHORT_ID] = '\0';
    return t;
}

/* A number with printf format fmt (for a double), or "-" / "?". */
static const char *swarm_vreal(const json_t *v, const char *fmt, char *buf, size_t size)
{
    if (v == NULL || json_is_null(v)) return "-";
    if (!json_is_number(v)) return "?";
    snprintf(buf, size, fmt, json_number_value(v));
    return buf;
}

static const char *swarm_real(const json_t *o, const char *key, const char *fmt, char *buf,
                              size_t size)
{
    return swarm_vreal(o != NULL ? json_object_get(o, key) : NULL, fmt, buf, size);
}

/* Field f of the status (or of a peer) as text, an id shortened, a number formatted. */
static const char *swarm_ftext(const json_t *o, sw_status_field f, char *buf, size_t size)
{
    return swarm_vtext(sw_status_get(o, f), buf, size);
}

static const char *swarm_fshort(const json_t *o, sw_status_field f, char *buf, size_t size)
{
    return swarm_vshort(sw_status_get(o, f), buf, size);
}

static const char *swarm_freal(const json_t *o, sw_status_field f, const char *fmt, char *buf,
                               size_t size)
{
    return swarm_vreal(sw_status_get(o, f), fmt, buf, size);
}

/* 3723.4 s -> "1h02m03s"; under a minute "12.3s". */
static const char *swarm_duration(double s, char *buf, size_t size)
{
    if (!isfinite(s) || s < 0) return "?";
    if (s < 60) {
        snprintf(buf, size, "%.1fs", s);
        return buf;
    }
    uint64_t t = s >= 1e15 ? (uint64_t)1e15 : (uint64_t)s;
    uint64_t d = t / 86400, h = t / 3600 % 24, m = t / 60 % 60, sec = t % 60;
    if (d > 0)
        snprintf(buf, size, "%" PRIu64 "d%02" PRIu64 "h%02" PRIu64 "m", d, h, m);
    else if (h > 0)
        snprintf(buf, size, "%" PRIu64 "h%02" PRIu64 "m%02" PRIu64 "s", h, m, sec);
    else
        snprintf(buf, size, "%" PRIu64 "m%02" PRIu64 "s", m, sec);
    return buf;
}

/* last_seen_ms -> "1.2s ago", "3m12s ago", "2h05m ago"; null "never". */
static const char *swarm_last_seen(const json_t *peer, char *buf, size_t size)
{
    const json_t *v = sw_status_get(peer, SW_STATUS_PEER_LAST_SEEN_MS);
    if (v == NULL) return "-";
    if (json_is_null(v)) return "never";
    if (!json_is_number(v)) return "?";
    char dur[48];
    const char *t = swarm_duration(json_number_value(v) / 1000.0, dur, sizeof dur);
    if (t[0] == '?') return "?";
    /* Hours and days need no seconds. */
    size_t l = strlen(dur);
    if (strchr(dur, 'h') != NULL && l > 0 && dur[l - 1] == 's') dur[l - 3] = '\0';
    snprintf(buf, size, "%s ago", dur);
    return buf;
}

/* ------------------------------------------------------------- peers table */

static int swarm_print_peers(const json_t *peers)
{
    static const char *const heads[SWARM_COLS] = {"ID",      "STATE",     "NODE",    "STEP",
                                                  "UPDATES", "LAST SEEN", "ADDRESS", ""};
    size_t n = json_array_size(peers);
    if (n == 0) {
        printf("(no peers)\n");
        return 0;
    }
    char(*cells)[SWARM_COLS][SWARM_CELL] = calloc(n, sizeof *cells);
    if (cells == NULL) return swctl_fail("out of memory for %zu peers", n);
    size_t width[SWARM_COLS];
    for (int c = 0; c < SWARM_COLS; c++)
        width[c] = strlen(heads[c]);
    for (size_t i = 0; i < n; i++) {
        const json_t *p = json_array_get(peers, i);
        char tmp[SWARM_CELL];
        const char *v[SWARM_COLS];
        v[0] = swarm_fshort(p, SW_STATUS_PEER_ID, tmp, sizeof tmp);
        snprintf(cells[i][0], SWARM_CELL, "%s", v[0]);
        snprintf(cells[i][1], SWARM_CELL, "%s",
                 swarm_ftext(p, SW_STATUS_PEER_STATE, tmp, sizeof tmp));
        snprintf(cells[i][2], SWARM_CELL, "%s",
                 swarm_ftext(p, SW_STATUS_PEER_NODE_STATE, tmp, sizeof tmp));
        snprintf(cells[i][3], SWARM_CELL, "%s",
                 swarm_ftext(p, SW_STATUS_PEER_STEP, tmp, sizeof tmp));
        snprintf(cells[i][4], SWARM_CELL, "%s",
                 swarm_ftext(p, SW_STATUS_PEER_LEDGER_UPDATES, tmp, sizeof tmp));
        snprintf(cells[i][5], SWARM_CELL, "%s", swarm_last_seen(p, tmp, sizeof tmp));
        snprintf(cells[i][6], SWARM_CELL, "%s",
                 swarm_ftext(p, SW_STATUS_PEER_ADDR, tmp, sizeof tmp));
        bool lagging = json_is_true(sw_status_get(p, SW_STATUS_PEER_LAGGING));
        bool banned = json_is_true(sw_status_get(p, SW_STATUS_PEER_BANNED));
        snprintf(cells[i][7], SWARM_CELL, "%s%s%s", lagging ? "lagging" : "",
                 lagging && banned ? "," : "", banned ? "banned" : "");
        for (int c = 0; c < SWARM_COLS; c++) {
            size_t l = strlen(cells[i][c]);
            if (l > width[c]) width[c] = l;
        }
    }
    /* The last column is padded by nobody: no trailing blanks. */
    for (size_t i = 0; i <= n; i++) {
        int last = SWARM_COLS - 1;
        while (last > 0 && (i == 0 ? heads[last] : cells[i - 1][last])[0] == '\0')
            last--;
        for (int c = 0; c <= last; c++) {
            const char *s = i == 0 ? heads[c] : cells[i - 1][c];
            if (c < last)
                printf("%-*s  ", (int)width[c], s);
            else
                printf("%s\n", s);
        }
    }
    free(cells);
    return 0;
}

/* ------------------------------------------------------------------ status */

static void swarm_kv(const char *key, const char *value)
{
    printf("%s:%s\n", key, value);
}

/* An integer, else -1 (absent, null or another type). */
static json_int_t swarm_vint(const json_t *v)
{
    return json_is_integer(v) ? json_integer_value(v) : -1;
}

static json_int_t swarm_int(const json_t *o, const char *key)
{
    return swarm_vint(o != NULL ? json_object_get(o, key) : NULL);
}

/*
 * The loss trend: one block per window of train.loss_history, oldest first,
 * its height in eight levels between the lowest and the highest loss shown
 * (level = floor(7 (v - min) / (max - min) + 0.5)); a window without steps
 * (null) is a space; all values equal: every block at the middle level.
 */
static void swarm_print_trend(const json_t *root)
{
    static const char *const blocks[8] = {"\xe2\x96\x81", "\xe2\x96\x82", "\xe2\x96\x83",
                                          "\xe2\x96\x84", "\xe2\x96\x85", "\xe2\x96\x86",
                                          "\xe2\x96\x87", "\xe2\x96\x88"};
    const json_t *h = sw_status_get(root, SW_STATUS_TRAIN_LOSS_HISTORY);
    if (!json_is_array(h)) {
        swarm_kv("loss_trend", h == NULL || json_is_null(h) ? "-" : "?");
        return;
    }
    double lo = INFINITY, hi = -INFINITY;
    size_t i, n = 0;
    const json_t *v;
    json_array_foreach(h, i, v)
    {
        if (!json_is_number(v)) continue;
        double x = json_number_value(v);
        if (x < lo) lo = x;
        if (x > hi) hi = x;
        n++;
    }
    if (n == 0) {
        swarm_kv("loss_trend", "-");
        return;
    }
    fputs("loss_trend:", stdout);
    json_array_foreach(h, i, v)
    {
        if (!json_is_number(v)) {
            fputc(' ', stdout);
            continue;
        }
        int level = 3;
        if (hi > lo) {
            level = (int)floor(7.0 * (json_number_value(v) - lo) / (hi - lo) + 0.5);
            level = level < 0 ? 0 : level > 7 ? 7 : level;
        }
        fputs(blocks[level], stdout);
    }
    printf(" (min %.4f, max %.4f)\n", lo, hi);
}

/*
 * train.step_seconds (a Prometheus-style histogram) as the mean and the
 * bucket bound under which 90% of the steps fell.
 */
static void swarm_print_step_seconds(const json_t *root)
{
    const json_t *h = sw_status_get(root, SW_STATUS_TRAIN_STEP_SECONDS);
    const json_t *buckets = json_object_get(h, SW_STATUS_HIST_BUCKETS);
    const json_t *counts = json_object_get(h, SW_STATUS_HIST_COUNTS);
    json_int_t count = swarm_int(h, SW_STATUS_HIST_COUNT);
    const json_t *sum = json_object_get(h, SW_STATUS_HIST_SUM);
    if (!json_is_object(h) || count < 0 || !json_is_number(sum)) {
        swarm_kv("step_seconds", h == NULL || json_is_null(h) ? "-" : "?");
        return;
    }
    if (count == 0) {
        swarm_kv("step_seconds", "- (no steps yet)");
        return;
    }
    char line[SWARM_CELL];
    int n = snprintf(line, sizeof line, "%.3f mean over %" JSON_INTEGER_FORMAT " steps",
                     json_number_value(sum) / (double)count, count);
    size_t nb = json_array_size(buckets);
    if (json_is_array(buckets) && json_is_array(counts) && nb > 0 &&
        json_array_size(counts) == nb && n > 0 && (size_t)n < sizeof line) {
        size_t k = 0;
        for (; k < nb; k++) {
            const json_t *c = json_array_get(counts, k);
            if (json_is_integer(c) && (double)json_integer_value(c) >= 0.9 * (double)count) break;
        }
        const json_t *bound = json_array_get(buckets, k < nb ? k : nb - 1);
        if (json_is_number(bound))
            snprintf(line + n, sizeof line - (size_t)n, ", 90%% %s %g s",
                     k < nb ? "within" : "over", json_number_value(bound));
    }
    swarm_kv("step_seconds", line);
}

/* Whether peer p announced a digest at the version vector our digest covers, and another digest. */
static bool swarm_peer_disagrees(const json_t *root, const json_t *p)
{
    const json_t *ours = sw_status_get(root, SW_STATUS_MODEL_DIGEST);
    const json_t *theirs = sw_status_get(p, SW_STATUS_PEER_DIGEST);
    const json_t *vv = sw_status_get(root, SW_STATUS_MODEL_DIGEST_VERSION_VECTOR);
    const json_t *pvv = sw_status_get(p, SW_STATUS_PEER_DIGEST_VERSION_VECTOR);
    return json_is_string(ours) && json_is_string(theirs) && json_is_object(vv) &&
           json_is_object(pvv) && json_equal((json_t *)vv, (json_t *)pvv) &&
           strcmp(json_string_value(ours), json_string_value(theirs)) != 0;
}

/*
 * swarm.agreement in words.  For a disagreement it names the peer when the
 * daemon says which one: a peer whose digest_version_vector equals ours with
 * another digest, else its "digest disagrees with peer ..." warning.
 */
static void swarm_print_agreement(const json_t *root)
{
    const json_t *ag = sw_status_parent(root, SW_STATUS_SWARM_AGREE);
    const json_t *agree = sw_status_get(root, SW_STATUS_SWARM_AGREE);
    json_int_t compared = swarm_vint(sw_status_get(root, SW_STATUS_SWARM_PEERS_COMPARED));
    json_int_t same = swarm_vint(sw_status_get(root, SW_STATUS_SWARM_PEERS_AGREE));
    char line[SWARM_LONG + 64], b[SWARM_LONG], b2[SWARM_CELL];
    if (!json_is_object(ag) || !(json_is_boolean(agree) || json_is_null(agree))) {
        swarm_kv("agreement", ag == NULL || json_is_null(ag) ? "-" : "?");
        return;
    }
    if (json_is_null(agree) || compared == 0) {
        swarm_kv("agreement", "not yet comparable: no peer has announced a digest at the same "
                              "version vector as ours");
        return;
    }
    if (json_is_true(agree)) {
        if (compared > 0 && same >= 0)
            snprintf(line, sizeof line,
                     "yes, %" JSON_INTEGER_FORMAT " of %" JSON_INTEGER_FORMAT
                     " %s at the same version vector %s the same digest",
                     same, compared, compared == 1 ? "peer" : "peers",
                     same == 1 ? "reports" : "report");
        else
            snprintf(line, sizeof line, "yes");
        swarm_kv("agreement", line);
        return;
    }
    size_t i;
    const json_t *p;
    json_array_foreach(sw_status_get(root, SW_STATUS_PEERS), i, p)
    {
        if (!swarm_peer_disagrees(root, p)) continue;
        char id[SWARM_CELL];
        snprintf(line, sizeof line, "NO: peer %s reports digest %s, ours is %s",
                 swarm_fshort(p, SW_STATUS_PEER_ID, id, sizeof id),
                 swarm_fshort(p, SW_STATUS_PEER_DIGEST, b, sizeof b),
                 swarm_fshort(root, SW_STATUS_MODEL_DIGEST, b2, sizeof b2));
        swarm_kv("agreement", line);
        return;
    }
    const json_t *warnings = sw_status_get(root, SW_STATUS_SWARM_WARNINGS);
    const json_t *w;
    json_array_foreach(warnings, i, w)
    {
        static const char prefix[] = "digest disagrees with peer";
        if (!json_is_string(w) || strncmp(json_string_value(w), prefix, sizeof prefix - 1) != 0)
            continue;
        snprintf(line, sizeof line, "NO: %s", swarm_clean(json_string_value(w), b, sizeof b));
        swarm_kv("agreement", line);
        return;
    }
    if (compared > 0 && same >= 0)
        snprintf(line, sizeof line,
                 "NO: %" JSON_INTEGER_FORMAT " of %" JSON_INTEGER_FORMAT
                 " %s at the same version vector %s another digest",
                 compared - same, compared, compared == 1 ? "peer" : "peers",
                 compared - same == 1 ? "reports" : "report");
    else
        snprintf(line, sizeof line, "NO: a peer at the same version vector reports another digest");
    swarm_kv("agreement", line);
}

/* Peers by membership state, from swarm.peers_by_state, else counted in the peers array. */
static void swarm_print_by_state(const json_t *root)
{
    static const char *const states[] = {"joining", "alive", "suspect", "dead", "left"};
    enum { N_STATES = sizeof states / sizeof states[0] };
    json_int_t count[N_STATES] = {0};
    const json_t *by = sw_status_get(root, SW_STATUS_SWARM_PEERS_BY_STATE);
    if (json_is_object(by)) {
        for (size_t k = 0; k < N_STATES; k++)
            count[k] = swarm_int(by, states[k]) > 0 ? swarm_int(by, states[k]) : 0;
    } else {
        size_t i;
        const json_t *p;
        json_array_foreach(sw_status_get(root, SW_STATUS_PEERS), i, p)
        {
            const char *st = json_string_value(sw_status_get(p, SW_STATUS_PEER_STATE));
            for (size_t k = 0; st != NULL && k < N_STATES; k++)
                if (strcmp(st, states[k]) == 0) count[k]++;
        }
    }
    char line[SWARM_CELL];
    size_t n = 0;
    line[0] = '\0';
    for (size_t k = 0; k < N_STATES; k++) {
        if (count[k] == 0) continue;
        int w = snprintf(line + n, sizeof line - n, "%s%s %" JSON_INTEGER_FORMAT, n > 0 ? ", " : "",
                         states[k], count[k]);
        if (w < 0 || (size_t)w >= sizeof line - n) break;
        n += (size_t)w;
    }
    swarm_kv("by_state", n > 0 ? line : "none");
}

static void swarm_print_warnings(const json_t *root)
{
    const json_t *warnings = sw_status_get(root, SW_STATUS_SWARM_WARNINGS);
    printf("\n# Warnings\n");
    if (!json_is_array(warnings)) {
        printf("%s\n", warnings == NULL || json_is_null(warnings) ? "-" : "?");
        return;
    }
    if (json_array_size(warnings) == 0) {
        printf("(none)\n");
        return;
    }
    size_t i;
    const json_t *w;
    char b[SWARM_LONG];
    json_array_foreach(warnings, i, w)
    {
        printf("%s\n", json_is_string(w) ? swarm_clean(json_string_value(w), b, sizeof b) : "?");
    }
}

/* The run spec's operator-set keys, named and ordered by core/runspec.h's
 * table (a daemon without the section shows none). */
static void swarm_print_runspec(const json_t *root)
{
    const json_t *rs = sw_status_get(root, SW_STATUS_RUN_SPEC);
    if (!json_is_object(rs)) return;
    char b[SWARM_CELL];
    printf("\n# Run spec\n");
    for (size_t i = 0; i < sw_runspec_key_count; i++) {
        const sw_runspec_key *k = &sw_runspec_keys[i];
        const char *dot = strchr(k->path, '.');
        if (!k->settable || dot == NULL) continue; /* the settable keys are in "train" */
        const json_t *group = json_object_getn(rs, k->path, (size_t)(dot - k->path));
        swarm_kv(k->path, swarm_vtext(json_object_get(group, dot + 1), b, sizeof b));
    }
}

/* [data] valid's latest and best scoring (a node without it shows none). */
static void swarm_print_valid(const json_t *root)
{
    const json_t *evals = sw_status_get(root, SW_STATUS_VALID_EVALS);
    const json_t *best = sw_status_get(root, SW_STATUS_VALID_BEST_STEP);
    if (!(json_is_integer(evals) && json_integer_value(evals) > 0) &&
        (best == NULL || json_is_null(best)))
        return;
    char b[SWARM_CELL];
    printf("\n# Validation\n");
    swarm_kv("step", swarm_ftext(root, SW_STATUS_VALID_STEP, b, sizeof b));
    swarm_kv("loss", swarm_freal(root, SW_STATUS_VALID_LOSS, "%.4f", b, sizeof b));
    swarm_kv("accuracy", swarm_freal(root, SW_STATUS_VALID_ACCURACY, "%.4f", b, sizeof b));
    swarm_kv("best_step", swarm_ftext(root, SW_STATUS_VALID_BEST_STEP, b, sizeof b));
    swarm_kv("best_loss", swarm_freal(root, SW_STATUS_VALID_BEST_LOSS, "%.4f", b, sizeof b));
    swarm_kv("best_accuracy",
             swarm_freal(root, SW_STATUS_VALID_BEST_ACCURACY, "%.4f", b, sizeof b));
    swarm_kv("best_dir", swarm_ftext(root, SW_STATUS_VALID_BEST_DIR, b, sizeof b));
    swarm_kv("evals", swarm_ftext(root, SW_STATUS_VALID_EVALS, b, sizeof b));
    swarm_kv("failures", swarm_ftext(root, SW_STATUS_VALID_FAILURES, b, sizeof b));
    swarm_kv("seconds", swarm_freal(root, SW_STATUS_VALID_SECONDS, "%.2f", b, sizeof b));
}

static void swarm_print_status(const json_t *root)
{
    char b[SWARM_CELL], b2[SWARM_CELL], line[2 * SWARM_CELL + 2];

    printf("# Node\n");
    swarm_kv("id", swarm_fshort(root, SW_STATUS_NODE_ID, b, sizeof b));
    swarm_kv("state", swarm_ftext(root, SW_STATUS_NODE_STATE, b, sizeof b));
    swarm_kv("run", swarm_fshort(root, SW_STATUS_NODE_RUN_ID, b, sizeof b));
    const json_t *max = sw_status_get(root, SW_STATUS_NODE_MAX_STEPS);
    if (max != NULL && !json_is_null(max)) {
        snprintf(line, sizeof line, "%s/%s", swarm_ftext(root, SW_STATUS_NODE_STEP, b, sizeof b),
                 swarm_vtext(max, b2, sizeof b2));
        swarm_kv("step", line);
    } else {
        swarm_kv("step", swarm_ftext(root, SW_STATUS_NODE_STEP, b, sizeof b));
    }
    swarm_kv("loss", swarm_freal(root, SW_STATUS_TRAIN_LOSS, "%.4f", b, sizeof b));
    swarm_print_trend(root);
    swarm_kv("steps_per_s", swarm_freal(root, SW_STATUS_TRAIN_STEPS_PER_S, "%.2f", b, sizeof b));
    swarm_print_step_seconds(root);
    swarm_kv("steps", swarm_ftext(root, SW_STATUS_TRAIN_STEPS, b, sizeof b));
    swarm_kv("updates_made", swarm_ftext(root, SW_STATUS_TRAIN_UPDATES_MADE, b, sizeof b));
    swarm_kv("scale", swarm_freal(root, SW_STATUS_TRAIN_SCALE, "%.6g", b, sizeof b));
    swarm_kv("saturations", swarm_ftext(root, SW_STATUS_TRAIN_SATURATIONS, b, sizeof b));
    const json_t *up = sw_status_get(root, SW_STATUS_NODE_UPTIME_S);
    swarm_kv("uptime", json_is_number(up) ? swarm_duration(json_number_value(up), b, sizeof b)
                                          : swarm_vtext(up, b, sizeof b));
    swarm_kv("version", swarm_ftext(root, SW_STATUS_NODE_VERSION, b, sizeof b));
    swarm_kv("pub_addr", swarm_ftext(root, SW_STATUS_NODE_PUB_ADDR, b, sizeof b));
    swarm_kv("sync_addr", swarm_ftext(root, SW_STATUS_NODE_SYNC_ADDR, b, sizeof b));

    swarm_print_runspec(root);

    printf("\n# Model\n");
    swarm_kv("digest", swarm_fshort(root, SW_STATUS_MODEL_DIGEST, b, sizeof b));
    swarm_kv("digest_updates", swarm_ftext(root, SW_STATUS_MODEL_DIGEST_UPDATES, b, sizeof b));
    const json_t *vv = sw_status_get(root, SW_STATUS_MODEL_VERSION_VECTOR);
    if (json_is_object(vv)) {
        snprintf(b, sizeof b, "%zu", json_object_size(vv));
        swarm_kv("origins", b);
        const char *origin;
        const json_t *count;
        json_object_foreach((json_t *)vv, origin, count)
        {
            char key[SWARM_SHORT_ID + 8];
            swarm_clean(origin, b2, SWARM_SHORT_ID + 1);
            snprintf(key, sizeof key, "origin_%.*s", SWARM_SHORT_ID, b2);
            if (json_is_integer(count))
                snprintf(b, sizeof b, "%" JSON_INTEGER_FORMAT, json_integer_value(count));
            else
                snprintf(b, sizeof b, "?");
            swarm_kv(key, b);
        }
    }

    swarm_print_valid(root);

    printf("\n# Ledger\n");
    swarm_kv("updates", swarm_ftext(root, SW_STATUS_LEDGER_UPDATES, b, sizeof b));
    swarm_kv("checkpoint_updates",
             swarm_ftext(root, SW_STATUS_LEDGER_CHECKPOINT_UPDATES, b, sizeof b));

    printf("\n# Net\n");
    /* counters shown under their own names */
    static const sw_status_field counters[] = {
        SW_STATUS_NET_BYTES_IN,    SW_STATUS_NET_BYTES_OUT,       SW_STATUS_NET_UPDATES_IN,
        SW_STATUS_NET_UPDATES_OUT, SW_STATUS_NET_UPDATES_APPLIED, SW_STATUS_NET_MSGS_IN,
        SW_STATUS_NET_MSGS_OUT};
    for (size_t i = 0; i < sizeof counters / sizeof counters[0]; i++)
        swarm_kv(sw_status_key(counters[i]), swarm_ftext(root, counters[i], b, sizeof b));
    swarm_kv(sw_status_key(SW_STATUS_NET_BYTES_PER_UPDATE),
             swarm_freal(root, SW_STATUS_NET_BYTES_PER_UPDATE, "%.0f", b, sizeof b));
    const json_t *dropped = sw_status_get(root, SW_STATUS_NET_DROPPED);
    if (json_is_object(dropped)) {
        json_int_t total = 0;
        const char *reason;
        const json_t *count;
        json_object_foreach((json_t *)dropped, reason, count)
        {
            if (json_is_integer(count) && json_integer_value(count) > 0)
                total += json_integer_value(count);
        }
        snprintf(b, sizeof b, "%" JSON_INTEGER_FORMAT, total);
        swarm_kv("dropped", b);
        json_object_foreach((json_t *)dropped, reason, count)
        {
            if (!json_is_integer(count) || json_integer_value(count) == 0) continue;
            char key[SWARM_CELL + 16];
            snprintf(key, sizeof key, "dropped_%s", swarm_clean(reason, b2, sizeof b2));
            snprintf(b, sizeof b, "%" JSON_INTEGER_FORMAT, json_integer_value(count));
            swarm_kv(key, b);
        }
    } else {
        swarm_kv("dropped", swarm_vtext(dropped, b, sizeof b));
    }

    printf("\n# Swarm\n");
    swarm_kv("lag_updates", swarm_ftext(root, SW_STATUS_SWARM_LAG_UPDATES, b, sizeof b));
    swarm_print_agreement(root);
    swarm_print_warnings(root);

    printf("\n# Peers\n");
    snprintf(b, sizeof b, "%zu", json_array_size(sw_status_get(root, SW_STATUS_PEERS)));
    swarm_kv("peers", b);
    swarm_print_by_state(root);
}

/* ------------------------------------------------------------------- watch */

/*
 * Ctrl-C ends a watch with exit 0.  Between snapshots the flag ends the
 * sleep (no SA_RESTART); during a request, which nng would finish first
 * (up to --timeout-ms), nothing is half written (stdout is flushed before
 * each request), so the handler exits at once.
 */
static volatile sig_atomic_t swarm_stop;
static volatile sig_atomic_t swarm_in_request;

static void swarm_on_sigint(int sig)
{
    (void)sig;
    if (swarm_in_request) _exit(SWCTL_EXIT_OK);
    swarm_stop = 1;
}

/* Sleeps ms milliseconds, or until Ctrl-C. */
static void swarm_sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (!swarm_stop && nanosleep(&ts, &ts) != 0) {
    }
}

static int swarm_watch(const swarm_args *a, int interval_ms, int count)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = swarm_on_sigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;
    sigaction(SIGINT, &sa, NULL);
    bool tty = isatty(STDOUT_FILENO) == 1 && !a->json;
    /* One write per snapshot on a terminal: the redraw does not flicker. */
    if (tty) setvbuf(stdout, NULL, _IOFBF, 1u << 16);
    int rc = SWCTL_EXIT_OK;
    for (int i = 0; count == 0 || i < count; i++) {
        if (i > 0) swarm_sleep_ms(interval_ms);
        if (swarm_stop) return SWCTL_EXIT_OK;
        json_t *root = NULL;
        char err[SWARM_ERR];
        if (fflush(stdout) != 0) return swctl_fail("stdout: write error");
        swarm_in_request = 1;
        int frc = swarm_fetch(a, &root, err, sizeof err);
        swarm_in_request = 0;
        if (swarm_stop) {
            json_decref(root);
            return SWCTL_EXIT_OK;
        }
        /* No daemon at the first try: a mistake worth stopping for. */
        if (frc != 0 && i == 0) return swctl_fail("%s", err);
        if (tty) {
            char when[32];
            time_t now = time(NULL);
            struct tm tm;
            if (localtime_r(&now, &tm) == NULL || strftime(when, sizeof when, "%H:%M:%S", &tm) == 0)
                snprintf(when, sizeof when, "?");
            printf("\x1b[H\x1b[2Jswarmctl status %s: every %.1f s, %s (Ctrl-C to stop)\n\n",
                   a->ctl_path, interval_ms / 1000.0, when);
        } else if (i > 0 && !a->json) {
            printf("\n");
        }
        if (frc != 0) {
            rc = SWCTL_EXIT_FAIL;
            if (tty) fflush(stdout);
            swctl_fail("%s (asking again every %d ms)", err, interval_ms);
            continue;
        }
        rc = SWCTL_EXIT_OK;
        if (a->json) {
            if (swarm_print_json(root, a->ctl_path) != 0) rc = SWCTL_EXIT_FAIL;
        } else {
            swarm_print_status(root);
            if (swarm_print_peers(sw_status_get(root, SW_STATUS_PEERS)) != 0) rc = SWCTL_EXIT_FAIL;
        }
        json_decref(root);
        if (fflush(stdout) != 0) return swctl_fail("stdout: write error");
    }
    return rc;
}

int swctl_status(const char *path, int argc, char **argv)
{
    bool watch = false;
    int interval_ms = SWARM_WATCH_INTERVAL_MS, count = 0;
    swctl_opt extra[] = {
        {"watch", 0, SWCTL_OPT_FLAG, &watch, 0, 0, false},
        {"interval-ms", 0, SWCTL_OPT_INT, &interval_ms, 100, 3600000, false},
        {"count", 0, SWCTL_OPT_INT, &count, 1, 1000000000, false},
    };
    swarm_args a;
    int rc = swarm_parse(path, swarm_status_usage, SWCTL_CTL_DEFAULT_TIMEOUT_MS, extra,
                         sizeof extra / sizeof extra[0], 0, 0, NULL, argc, argv, &a);
    if (rc >= 0) return rc;
    if (!watch && (extra[1].seen || extra[2].seen))
        return swctl_usage_error(path, extra[1].seen ? "--interval-ms" : "--count",
                                 "only with --watch");
    if (watch) return swarm_watch(&a, interval_ms, count);
    json_t *root = NULL;
    char err[SWARM_ERR];
    if (swarm_fetch(&a, &root, err, sizeof err) != 0) return swctl_fail("%s", err);
    if (a.json) {
        rc = swarm_print_json(root, a.ctl_path);
    } else {
        swarm_print_status(root);
        rc = swarm_print_peers(sw_status_get(root, SW_STATUS_PEERS));
    }
    json_decref(root);
    return rc;
}

int swctl_peers(const char *path, int argc, char **argv)
{
    swarm_args a;
    int rc = swarm_parse(path, swarm_peers_usage, SWCTL_CTL_DEFAULT_TIMEOUT_MS, NULL, 0, 0, 0, NULL,
                         argc, argv, &a);
    if (rc >= 0) return rc;
    json_t *root = NULL;
    char err[SWARM_ERR];
    if (swarm_fetch(&a, &root, err, sizeof err) != 0) return swctl_fail("%s", err);
    const json_t *peers = sw_status_get(root, SW_STATUS_PEERS);
    rc = a.json ? swarm_print_json(peers, a.ctl_path) : swarm_print_peers(peers);
    json_decref(root);
    return rc;
}

/* ------------------------------------------------------------------- verbs */

/*
 * Sends `req` (consumed) and checks that the reply says {"ok": true}.
 * Returns 0 with the reply, else the exit code after printing what went
 * wrong and what to do.
 */
static int swarm_act(const swarm_args *a, json_t *req, json_t **out)
{
    const char *cmd = json_string_value(json_object_get(req, "cmd"));
    char name[32];
    snprintf(name, sizeof name, "%s", cmd != NULL ? cmd : "?");
    if (req == NULL || cmd == NULL) {
        json_decref(req);
        return swctl_fail("%s: out of memory", a->ctl_path);
    }
    sw_diag d = {{0}};
    json_t *reply = NULL;
    int rc = swctl_ctl_send(a->ctl_path, req, a->timeout_ms, &reply, &d);
    json_decref(req);
    if (rc == SWCTL_CTL_EDAEMON &&
        strstr(d.msg, ": the daemon answered: unknown command: ") != NULL)
        return swctl_fail("%s (this swarmd predates `swarmctl %s`: upgrade swarmd)", d.msg, name);
    if (rc != 0) return swctl_fail_diag(&d, rc);
    if (!json_is_true(json_object_get(reply, "ok"))) {
        json_decref(reply);
        return swctl_fail("%s: daemon sent an invalid reply to %s: no \"ok\": true (is swarmd "
                          "the same version as swarmctl?)",
                          a->ctl_path, name);
    }
    *out = reply;
    return 0;
}

/*
 * Prints the reply as JSON, or the line `human` made of it; frees the reply
 * and returns the exit code.
 */
static int swarm_report(const swarm_args *a, json_t *reply, const char *human)
{
    int rc = SWCTL_EXIT_OK;
    if (a->json)
        rc = swarm_print_json(reply, a->ctl_path);
    else
        printf("%s\n", human);
    json_decref(reply);
    return rc;
}

/*
 * An absolute form of path for the daemon, whose working directory is not
 * ours: cwd + "/" + path when relative (not resolved: the file may not exist
 * yet, and the daemon's user may see more than we do).
 */
static int swarm_absolute(const char *what, const char *path, char **out)
{
    if (path[0] == '/') {
        *out = strdup(path);
        return *out == NULL ? swctl_fail("%s: out of memory", what) : 0;
    }
    size_t size = 4096;
    char *cwd = NULL;
    for (;;) {
        char *grown = realloc(cwd, size);
        if (grown == NULL) {
            free(cwd);
            return swctl_fail("%s: out of memory", what);
        }
        cwd = grown;
        if (getcwd(cwd, size) != NULL) break;
        if (errno != ERANGE || size >= (1u << 20)) {
            int e = errno;
            free(cwd);
            return swctl_fail("%s: %s is relative and the current directory is unknown (%s): "
                              "give an absolute path",
                              what, path, strerror(e));
        }
        size *= 2;
    }
    const char *p = path;
    while (p[0] == '.' && p[1] == '/')
        p += 2;
    size_t cl = strlen(cwd);
    bool slash = cl > 0 && cwd[cl - 1] == '/';
    size_t n = cl + 1 + strlen(p) + 1;
    *out = malloc(n);
    if (*out != NULL) snprintf(*out, n, "%s%s%s", cwd, slash ? "" : "/", p);
    free(cwd);
    return *out == NULL ? swctl_fail("%s: out of memory", what) : 0;
}

/*
 * Parses a verb that takes only the common options and sends {"cmd": cmd}.
 * Returns -1 with the reply in *reply, else the exit code (help, a usage
 * error, or the failure swarm_act printed).
 */
static int swarm_simple(const char *path, const char *usage, int default_timeout_ms,
                        const char *cmd, int argc, char **argv, swarm_args *a, json_t **reply)
{
    int rc = swarm_parse(path, usage, default_timeout_ms, NULL, 0, 0, 0, NULL, argc, argv, a);
    if (rc >= 0) return rc;
    if ((rc = swarm_act(a, json_pack("{s:s}", "cmd", cmd), reply)) != 0) return rc;
    return -1;
}

/* What a verb that changes the node's state says when the node is then in `state`. */
typedef struct swarm_said {
    const char *state; /* NULL: whatever the state */
    const char *line;
} swarm_said;

/*
 * pause, resume, leave: send the verb, then print the line `said` has for
 * the state the daemon reports, or "CMD accepted: the node is now STATE".
 */
static int swarm_state_verb(const char *path, const char *usage, const char *cmd,
                            const swarm_said *said, size_t n_said, int argc, char **argv)
{
    swarm_args a;
    json_t *reply = NULL;
    int rc = swarm_simple(path, usage, SWCTL_CTL_DEFAULT_TIMEOUT_MS, cmd, argc, argv, &a, &reply);
    if (rc >= 0) return rc;
    char b[SWARM_CELL], line[SWARM_CELL + 64];
    const char *st = swarm_text(reply, "state", b, sizeof b);
    snprintf(line, sizeof line, "%s accepted: the node is now %s", cmd, st);
    const char *human = line;
    for (size_t i = 0; i < n_said; i++) {
        if (said[i].state == NULL || strcmp(st, said[i].state) == 0) {
            human = said[i].line;
            break;
        }
    }
    return swarm_report(&a, reply, human);
}

int swctl_pause(const char *path, int argc, char **argv)
{
    static const swarm_said said[] = {
        {"paused", "paused: the node keeps syncing and serving; `swarmctl resume` restarts "
                   "training"},
    };
    return swarm_state_verb(path, swarm_pause_usage, "pause", said, sizeof said / sizeof said[0],
                            argc, argv);
}

int swctl_resume(const char *path, int argc, char **argv)
{
    static const swarm_said said[] = {
        {"training", "training: the node makes updates again"},
        {"done", "done: the run has reached max_steps; the node keeps syncing and serving"},
    };
    return swarm_state_verb(path, swarm_resume_usage, "resume", said, sizeof said / sizeof said[0],
                            argc, argv);
}

int swctl_leave(const char *path, int argc, char **argv)
{
    static const swarm_said said[] = {
        {NULL, "leaving: the node publishes its last updates, says goodbye to its peers, "
               "writes a final checkpoint and exits"},
    };
    return swarm_state_verb(path, swarm_leave_usage, "leave", said, sizeof said / sizeof said[0],
                            argc, argv);
}

int swctl_join(const char *path, int argc, char **argv)
{
    swarm_args a;
    int rc = swarm_parse(path, swarm_join_usage, SWCTL_CTL_JOIN_TIMEOUT_MS, NULL, 0, 1, 1, "ADDR",
                         argc, argv, &a);
    if (rc >= 0) return rc;
    const char *addr = a.pos[0];
    if (strstr(addr, "://") == NULL)
        return swctl_usage_error(path, addr,
                                 "not a sync address: give a URL like tcp://HOST:PORT (a "
                                 "member's sync_addr in `swarmctl status`)");
    json_t *reply = NULL;
    if ((rc = swarm_act(&a, json_pack("{s:s,s:s}", "cmd", "join", "addr", addr), &reply)) != 0)
        return rc;
    char b[SWARM_CELL], line[2 * SWARM_CELL + 64];
    char shown[SWARM_CELL];
    swarm_clean(addr, shown, sizeof shown);
    json_int_t members = swarm_int(reply, "members");
    if (members >= 0)
        snprintf(line, sizeof line, "joined %s: the swarm has %s member%s", shown,
                 swarm_text(reply, "members", b, sizeof b), members == 1 ? "" : "s");
    else
        snprintf(line, sizeof line, "joined %s", shown);
    return swarm_report(&a, reply, line);
}

int swctl_checkpoint(const char *path, int argc, char **argv)
{
    swarm_args a;
    json_t *reply = NULL;
    int rc = swarm_simple(path, swarm_checkpoint_usage, SWCTL_CTL_CHECKPOINT_TIMEOUT_MS,
                          "checkpoint", argc, argv, &a, &reply);
    if (rc >= 0) return rc;
    char b[SWARM_CELL], p[SWARM_LONG], line[SWARM_LONG + SWARM_CELL + 64];
    snprintf(line, sizeof line, "checkpoint of %s updates: %s",
             swarm_text(reply, "updates", b, sizeof b), swarm_text(reply, "path", p, sizeof p));
    return swarm_report(&a, reply, line);
}

int swctl_ctl_export(const char *path, int argc, char **argv)
{
    const char *dtype = "f32";
    swctl_opt extra[] = {{"dtype", 0, SWCTL_OPT_STR, &dtype, 0, 0, false}};
    swarm_args a;
    int rc = swarm_parse(path, swarm_export_usage, SWCTL_CTL_LONG_TIMEOUT_MS, extra, 1, 1, 1,
                         "OUT_DIR", argc, argv, &a);
    if (rc >= 0) return rc;
    if (strcmp(dtype, "f32") != 0 && strcmp(dtype, "f16") != 0)
        return swctl_usage_error(path, "--dtype", "'%s' is not f32 or f16", dtype);
    if (a.pos[0][0] == '\0') return swctl_usage_error(path, "OUT_DIR", "empty path");
    char *out = NULL;
    if ((rc = swarm_absolute("OUT_DIR", a.pos[0], &out)) != 0) return rc;
    json_t *reply = NULL;
    rc = swarm_act(&a, json_pack("{s:s,s:s,s:s}", "cmd", "export", "out", out, "dtype", dtype),
                   &reply);
    if (rc != 0) {
        free(out);
        return rc;
    }
    char b[SWARM_CELL], dig[SWARM_CELL], p[SWARM_LONG], line[SWARM_LONG + 2 * SWARM_CELL + 64];
    const json_t *rout = json_object_get(reply, "out");
    snprintf(line, sizeof line, "exported %s updates to %s (%s), digest %s",
             swarm_text(reply, "updates", b, sizeof b),
             json_is_string(rout) ? swarm_clean(json_string_value(rout), p, sizeof p) : out,
             strcmp(dtype, "f16") == 0 ? "F16" : "F32",
             swarm_text(reply, "digest", dig, sizeof dig));
    rc = swarm_report(&a, reply, line);
    free(out);
    return rc;
}

int swctl_ctl_eval(const char *path, int argc, char **argv)
{
    const char *data = NULL;
    swctl_opt extra[] = {{"data", 0, SWCTL_OPT_STR, &data, 0, 0, false}};
    swarm_args a;
    int rc = swarm_parse(path, swarm_eval_usage, SWCTL_CTL_LONG_TIMEOUT_MS, extra, 1, 0, 0, NULL,
                         argc, argv, &a);
    if (rc >= 0) return rc;
    if (data == NULL) return swctl_usage_error(path, "--data", "missing (required by '%s')", path);
    if (data[0] == '\0') return swctl_usage_error(path, "--data", "empty path");
    char *file = NULL;
    if ((rc = swarm_absolute("--data", data, &file)) != 0) return rc;
    json_t *reply = NULL;
    rc = swarm_act(&a, json_pack("{s:s,s:s}", "cmd", "eval", "data", file), &reply);
    free(file);
    if (rc != 0) return rc;
    char loss[SWARM_CELL], ppl[SWARM_CELL], tok[SWARM_CELL], rec[SWARM_CELL], acc[SWARM_CELL],
        upd[SWARM_CELL];
    char line[8 * SWARM_CELL];
    int n =
        snprintf(line, sizeof line, "loss %s nats/token, perplexity %s on %s tokens in %s records",
                 swarm_real(reply, "loss", "%.6f", loss, sizeof loss),
                 swarm_real(reply, "perplexity", "%.4f", ppl, sizeof ppl),
                 swarm_text(reply, "tokens", tok, sizeof tok),
                 swarm_text(reply, "records", rec, sizeof rec));
    const json_t *accuracy = json_object_get(reply, "accuracy");
    if (json_is_number(accuracy) && n > 0 && (size_t)n < sizeof line)
        n += snprintf(line + n, sizeof line - (size_t)n, ", accuracy %s",
                      swarm_real(reply, "accuracy", "%.4f", acc, sizeof acc));
    if (json_object_get(reply, "updates") != NULL && n > 0 && (size_t)n < sizeof line)
        snprintf(line + n, sizeof line - (size_t)n, "; the model holds %s updates",
                 swarm_text(reply, "updates", upd, sizeof upd));
    return swarm_report(&a, reply, line);
}
