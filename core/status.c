/* status: the status object's schema (status.h). */
#include "status.h"

#include <string.h>

#include "sw_error.h"

#define STATUS_PEER_PREFIX "peers[]."
#define STATUS_DEPTH_MAX 4 /* components of a path: "swarm.agreement.agree" has 3 */
#define STATUS_KEY_MAX 64

static const sw_status_def status_defs[SW_STATUS_COUNT] = {
#define STATUS_DEF_(id, path, type, null, unit, kind, metric, label, help)                         \
    {path, SW_STATUS_TYPE_##type, SW_STATUS_##null, unit, SW_STATUS_KIND_##kind, metric, label,    \
     help},
#define SW_STATUS_ORNULL true
#define SW_STATUS_NOTNULL false
    SW_STATUS_FIELDS(STATUS_DEF_)
#undef SW_STATUS_NOTNULL
#undef SW_STATUS_ORNULL
#undef STATUS_DEF_
};

const sw_status_def *sw_status_def_of(sw_status_field f)
{
    SW_ASSERT((unsigned)f < SW_STATUS_COUNT);
    return &status_defs[f];
}

bool sw_status_is_peer(sw_status_field f)
{
    return strncmp(sw_status_def_of(f)->path, STATUS_PEER_PREFIX, sizeof STATUS_PEER_PREFIX - 1) ==
           0;
}

/* f's path below its scope: "loss_history", "agreement.agree", "id" for peers[].id. */
static const char *status_rel(sw_status_field f)
{
    const char *p = sw_status_def_of(f)->path;
    return sw_status_is_peer(f) ? p + sizeof STATUS_PEER_PREFIX - 1 : p;
}

const char *sw_status_key(sw_status_field f)
{
    const char *p = status_rel(f), *dot = strrchr(p, '.');
    return dot ? dot + 1 : p;
}

/*
 * Splits f's relative path into its components (copied into keys[i], at
 * most STATUS_DEPTH_MAX of STATUS_KEY_MAX bytes: the list is ours, so more
 * is a programmer's error).  Returns how many.
 */
static size_t status_split(sw_status_field f, char keys[STATUS_DEPTH_MAX][STATUS_KEY_MAX])
{
    const char *p = status_rel(f);
    size_t n = 0;
    for (;;) {
        size_t len = strcspn(p, ".");
        SW_ASSERT(n < STATUS_DEPTH_MAX && len > 0 && len < STATUS_KEY_MAX);
        memcpy(keys[n], p, len);
        keys[n++][len] = '\0';
        if (!p[len]) return n;
        p += len + 1;
    }
}

json_t *sw_status_parent(const json_t *obj, sw_status_field f)
{
    char keys[STATUS_DEPTH_MAX][STATUS_KEY_MAX];
    size_t n = status_split(f, keys);
    json_t *o = (json_t *)obj;
    for (size_t i = 0; i + 1 < n && o; i++)
        o = json_object_get(o, keys[i]);
    return o;
}

json_t *sw_status_get(const json_t *obj, sw_status_field f)
{
    return json_object_get(sw_status_parent(obj, f), sw_status_key(f));
}

json_t *sw_status_build(json_t *values[SW_STATUS_COUNT], bool peer)
{
    json_t *root = json_object();
    bool oom = !root;
    for (int f = 0; f < SW_STATUS_COUNT; f++) {
        if (sw_status_is_peer((sw_status_field)f) != peer || !values[f]) continue;
        char keys[STATUS_DEPTH_MAX][STATUS_KEY_MAX];
        size_t n = status_split((sw_status_field)f, keys);
        json_t *o = root;
        for (size_t i = 0; i + 1 < n && o; i++) {
            json_t *sub = json_object_get(o, keys[i]);
            if (!sub) {
                sub = json_object();
                if (json_object_set_new(o, keys[i], sub) != 0) sub = NULL;
            }
            SW_ASSERT(!sub || json_is_object(sub)); /* a section is never a field */
            o = sub;
        }
        if (!o || json_object_set_new(o, keys[n - 1], values[f]) != 0) oom = true;
        values[f] = NULL;
    }
    if (oom) {
        json_decref(root);
        return NULL;
    }
    return root;
}

const char *sw_status_type_text(sw_status_type t)
{
    switch (t) {
    case SW_STATUS_TYPE_STRING:
        return "string";
    case SW_STATUS_TYPE_HEX:
        return "hex";
    case SW_STATUS_TYPE_INT:
        return "integer";
    case SW_STATUS_TYPE_REAL:
        return "number";
    case SW_STATUS_TYPE_BOOL:
        return "boolean";
    case SW_STATUS_TYPE_COUNTS:
        return "{name: integer}";
    case SW_STATUS_TYPE_REALS:
        return "[number or null]";
    case SW_STATUS_TYPE_TEXTS:
        return "[string]";
    case SW_STATUS_TYPE_HISTOGRAM:
        return "histogram";
    case SW_STATUS_TYPE_PEERS:
        return "[peer]";
    case SW_STATUS_TYPE_RUNSPEC:
        return "run spec";
    }
    return "?";
}

const char *sw_status_kind_text(sw_status_kind k)
{
    switch (k) {
    case SW_STATUS_KIND_NONE:
        return NULL;
    case SW_STATUS_KIND_COUNTER:
        return "counter";
    case SW_STATUS_KIND_HISTOGRAM:
        return "histogram";
    case SW_STATUS_KIND_GAUGE:
    case SW_STATUS_KIND_INFO:
    case SW_STATUS_KIND_STATESET:
        return "gauge";
    }
    return NULL;
}

void sw_status_write_doc(FILE *out)
{
    fputs("| field | type | unit | metric | meaning |\n", out);
    fputs("| --- | --- | --- | --- | --- |\n", out);
    for (int f = 0; f < SW_STATUS_COUNT; f++) {
        const sw_status_def *d = sw_status_def_of((sw_status_field)f);
        fprintf(out, "| `%s` | %s%s | %s | ", d->path, sw_status_type_text(d->type),
                d->nullable ? " or null" : "", d->unit);
        if (d->metric) fprintf(out, "`%s`", d->metric);
        fprintf(out, " | %s |\n", d->help);
    }
}
