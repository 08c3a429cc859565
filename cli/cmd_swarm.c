/*
 * `swarmctl status` and `swarmctl peers`: what a running swarmd says about
 * itself and its peers, asked over its control socket (ctl_client.h).
 *
 * --json prints the daemon's object as it came (re-serialised on one line),
 * so the schema in docs/cli.md is the daemon's.  The human form is INFO
 * style (`# Section`, then `key:value` lines) plus a peers table.  Fields the
 * daemon omits or sends as null print as "-"; only `node` and `peers` are
 * required, so an older or newer daemon still gets a readable status.
 * Strings that came from other nodes (addresses) are printed with control
 * characters replaced: a peer must not drive our terminal.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli.h"
#include "ctl_client.h"

#define SWARM_SHORT_ID 12 /* hex characters of an id shown in human output */
#define SWARM_CELL 160    /* a table cell is cut to this many bytes */
#define SWARM_COLS 8

static const char swarm_status_usage[] =
    "Usage: swarmctl status [--json] [--control PATH | --state-dir DIR] [--timeout-ms N]\n"
    "\n"
    "Asks a running swarmd over its control socket how it is doing: the node (id, state,\n"
    "run, step, loss, speed, uptime), its model (digest, updates), its ledger, its\n"
    "network counters (bytes, updates, messages, dropped messages by reason) and a\n"
    "table of its peers.  Ids are shown by their first 12 hex characters.\n"
    "\n"
    "Options:\n"
    "  --json          print the daemon's status object on one line (schema in\n"
    "                  docs/cli.md)\n"
    "  --control PATH  the control socket (swarmd's [node] control)\n"
    "  --state-dir DIR the node's state directory: the socket is DIR/control.sock\n"
    "                  (default: " SWCTL_CTL_DEFAULT_STATE_DIR "/" SWCTL_CTL_SOCKET_NAME ")\n"
    "  --timeout-ms N  give up after N ms without a reply (default 5000)\n"
    "  -h, --help      show this help\n"
    "\n"
    "Exit status: 0 success, 1 no daemon, no reply or an error from it, 2 usage error.\n";

static const char swarm_peers_usage[] =
    "Usage: swarmctl peers [--json] [--control PATH | --state-dir DIR] [--timeout-ms N]\n"
    "\n"
    "The peers table of `swarmctl status` alone: id, membership state, the peer's own\n"
    "state, step, ledger updates, when it was last heard from, and its address; flags\n"
    "`lagging` (no longer waited for) and `banned` follow.\n"
    "\n"
    "Options:\n"
    "  --json          print the daemon's peers array on one line\n"
    "  --control PATH  the control socket (swarmd's [node] control)\n"
    "  --state-dir DIR the node's state directory: the socket is DIR/control.sock\n"
    "                  (default: " SWCTL_CTL_DEFAULT_STATE_DIR "/" SWCTL_CTL_SOCKET_NAME ")\n"
    "  --timeout-ms N  give up after N ms without a reply (default 5000)\n"
    "  -h, --help      show this help\n"
    "\n"
    "Exit status: 0 success, 1 no daemon, no reply or an error from it, 2 usage error.\n";

/* ---------------------------------------------------------------- fetching */

typedef struct swarm_args {
    bool json;
    const char *control, *state_dir;
    int timeout_ms;
    char ctl_path[SWCTL_CTL_PATH_MAX + 1];
} swarm_args;

/* Returns -1 to go on, else the exit code (help printed, or a usage error). */
static int swarm_parse(const char *path, const char *usage, int argc, char **argv, swarm_args *a)
{
    a->json = false;
    a->control = a->state_dir = NULL;
    a->timeout_ms = SWCTL_CTL_DEFAULT_TIMEOUT_MS;
    swctl_opt opts[] = {
        {"json", 0, SWCTL_OPT_FLAG, &a->json, 0, 0, false},
        {"control", 0, SWCTL_OPT_STR, &a->control, 0, 0, false},
        {"state-dir", 0, SWCTL_OPT_STR, &a->state_dir, 0, 0, false},
        {"timeout-ms", 0, SWCTL_OPT_INT, &a->timeout_ms, 1, 3600000, false},
    };
    swctl_cmd cmd = {.path = path,
                     .usage = usage,
                     .opts = opts,
                     .n_opts = sizeof opts / sizeof opts[0],
                     .min_pos = 0,
                     .max_pos = 0,
                     .pos_names = NULL};
    int rc = swctl_parse(&cmd, argc, argv);
    if (rc >= 0) return rc;
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

/* 0 when root's `key` has the expected type (or is absent and optional); else 1, printed. */
static int swarm_check_section(const char *ctl, const json_t *root, const char *key, bool required)
{
    const json_t *v = json_object_get(root, key);
    if (v == NULL && !required) return 0;
    if (v == NULL) return swctl_fail("%s: daemon sent an invalid status: no \"%s\"", ctl, key);
    if (strcmp(key, "peers") == 0) {
        if (!json_is_array(v))
            return swctl_fail("%s: daemon sent an invalid status: \"peers\" is not an array", ctl);
        size_t i;
        const json_t *p;
        json_array_foreach(v, i, p)
        {
            if (!json_is_object(p))
                return swctl_fail("%s: daemon sent an invalid status: peers[%zu] is not an object",
                                  ctl, i);
        }
        return 0;
    }
    if (!json_is_object(v))
        return swctl_fail("%s: daemon sent an invalid status: \"%s\" is not an object", ctl, key);
    return 0;
}

/* Asks for the status and checks its shape; prints the failure and returns 1 on error. */
static int swarm_fetch(const swarm_args *a, json_t **out)
{
    sw_diag d = {{0}};
    json_t *root = NULL;
    int rc = swctl_ctl_call(a->ctl_path, "status", a->timeout_ms, &root, &d);
    if (rc != 0) return swctl_fail_diag(&d, rc);
    static const char *const sections[] = {"node", "peers", "model", "train", "ledger", "net"};
    for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++) {
        if (swarm_check_section(a->ctl_path, root, sections[i], i < 2) != 0) {
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

/* A member as text: "-" missing or null, "?" of an unexpected type. */
static const char *swarm_text(const json_t *o, const char *key, char *buf, size_t size)
{
    const json_t *v = o != NULL ? json_object_get(o, key) : NULL;
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

/* An id as its first SWARM_SHORT_ID characters. */
static const char *swarm_short(const json_t *o, const char *key, char *buf, size_t size)
{
    const char *t = swarm_text(o, key, buf, size);
    if (t == buf && o != NULL && json_is_string(json_object_get(o, key)) &&
        strlen(buf) > SWARM_SHORT_ID)
        buf[SWARM_SHORT_ID] = '\0';
    return t;
}

/* A number with printf format fmt (for a double), or "-" / "?". */
static const char *swarm_real(const json_t *o, const char *key, const char *fmt, char *buf,
                              size_t size)
{
    const json_t *v = o != NULL ? json_object_get(o, key) : NULL;
    if (v == NULL || json_is_null(v)) return "-";
    if (!json_is_number(v)) return "?";
    snprintf(buf, size, fmt, json_number_value(v));
    return buf;
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
    const json_t *v = json_object_get(peer, "last_seen_ms");
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
        v[0] = swarm_short(p, "id", tmp, sizeof tmp);
        snprintf(cells[i][0], SWARM_CELL, "%s", v[0]);
        snprintf(cells[i][1], SWARM_CELL, "%s", swarm_text(p, "state", tmp, sizeof tmp));
        snprintf(cells[i][2], SWARM_CELL, "%s", swarm_text(p, "node_state", tmp, sizeof tmp));
        snprintf(cells[i][3], SWARM_CELL, "%s", swarm_text(p, "step", tmp, sizeof tmp));
        snprintf(cells[i][4], SWARM_CELL, "%s", swarm_text(p, "ledger_updates", tmp, sizeof tmp));
        snprintf(cells[i][5], SWARM_CELL, "%s", swarm_last_seen(p, tmp, sizeof tmp));
        snprintf(cells[i][6], SWARM_CELL, "%s", swarm_text(p, "addr", tmp, sizeof tmp));
        bool lagging = json_is_true(json_object_get(p, "lagging"));
        bool banned = json_is_true(json_object_get(p, "banned"));
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

static void swarm_print_status(const json_t *root)
{
    const json_t *node = json_object_get(root, "node");
    const json_t *model = json_object_get(root, "model");
    const json_t *train = json_object_get(root, "train");
    const json_t *ledger = json_object_get(root, "ledger");
    const json_t *net = json_object_get(root, "net");
    char b[SWARM_CELL], b2[SWARM_CELL], line[2 * SWARM_CELL + 2];

    printf("# Node\n");
    swarm_kv("id", swarm_short(node, "id", b, sizeof b));
    swarm_kv("state", swarm_text(node, "state", b, sizeof b));
    swarm_kv("run", swarm_short(node, "run_id", b, sizeof b));
    const json_t *max = json_object_get(node, "max_steps");
    if (max != NULL && !json_is_null(max)) {
        snprintf(line, sizeof line, "%s/%s", swarm_text(node, "step", b, sizeof b),
                 swarm_text(node, "max_steps", b2, sizeof b2));
        swarm_kv("step", line);
    } else {
        swarm_kv("step", swarm_text(node, "step", b, sizeof b));
    }
    swarm_kv("loss", swarm_real(train, "loss", "%.4f", b, sizeof b));
    swarm_kv("steps_per_s", swarm_real(train, "steps_per_s", "%.2f", b, sizeof b));
    swarm_kv("scale", swarm_real(train, "scale", "%.6g", b, sizeof b));
    swarm_kv("saturations", swarm_text(train, "saturations", b, sizeof b));
    const json_t *up = json_object_get(node, "uptime_s");
    swarm_kv("uptime", json_is_number(up) ? swarm_duration(json_number_value(up), b, sizeof b)
                                          : swarm_text(node, "uptime_s", b, sizeof b));
    swarm_kv("version", swarm_text(node, "version", b, sizeof b));
    swarm_kv("pub_addr", swarm_text(node, "pub_addr", b, sizeof b));
    swarm_kv("sync_addr", swarm_text(node, "sync_addr", b, sizeof b));

    printf("\n# Model\n");
    swarm_kv("digest", swarm_short(model, "digest", b, sizeof b));
    swarm_kv("digest_updates", swarm_text(model, "digest_updates", b, sizeof b));
    const json_t *vv = json_object_get(model, "version_vector");
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

    printf("\n# Ledger\n");
    swarm_kv("updates", swarm_text(ledger, "updates", b, sizeof b));
    swarm_kv("checkpoint_updates", swarm_text(ledger, "checkpoint_updates", b, sizeof b));

    printf("\n# Net\n");
    static const char *const counters[] = {"bytes_in",    "bytes_out", "updates_in",
                                           "updates_out", "msgs_in",   "msgs_out"};
    for (size_t i = 0; i < sizeof counters / sizeof counters[0]; i++)
        swarm_kv(counters[i], swarm_text(net, counters[i], b, sizeof b));
    const json_t *dropped = json_object_get(net, "dropped");
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
        swarm_kv("dropped", swarm_text(net, "dropped", b, sizeof b));
    }

    const json_t *peers = json_object_get(root, "peers");
    printf("\n# Peers\n");
    snprintf(b, sizeof b, "%zu", json_array_size(peers));
    swarm_kv("peers", b);
}

/* ------------------------------------------------------------------- verbs */

int swctl_status(const char *path, int argc, char **argv)
{
    swarm_args a;
    int rc = swarm_parse(path, swarm_status_usage, argc, argv, &a);
    if (rc >= 0) return rc;
    json_t *root = NULL;
    if ((rc = swarm_fetch(&a, &root)) != 0) return rc;
    if (a.json) {
        rc = swarm_print_json(root, a.ctl_path);
    } else {
        swarm_print_status(root);
        rc = swarm_print_peers(json_object_get(root, "peers"));
    }
    json_decref(root);
    return rc;
}

int swctl_peers(const char *path, int argc, char **argv)
{
    swarm_args a;
    int rc = swarm_parse(path, swarm_peers_usage, argc, argv, &a);
    if (rc >= 0) return rc;
    json_t *root = NULL;
    if ((rc = swarm_fetch(&a, &root)) != 0) return rc;
    const json_t *peers = json_object_get(root, "peers");
    rc = a.json ? swarm_print_json(peers, a.ctl_path) : swarm_print_peers(peers);
    json_decref(root);
    return rc;
}
