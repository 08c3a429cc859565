/*
 * status_schema: C side of tests/ref/status_schema.py.
 *
 *   status_schema
 *     Prints the status schema (core/status.h) as one JSON array, one
 *     object per field: path, type, nullable, unit, kind, metric, label.
 *
 * Exit 1 when out of memory or stdout fails.
 */
#include <stdio.h>
#include <stdlib.h>

#include <jansson.h>

#include "status.h"

static const char *const type_names[] = {"string", "hex",   "int",   "real",      "bool",
                                         "counts", "reals", "texts", "histogram", "peers",
                                         "runspec"};
static const char *const kind_names[] = {"none",      "gauge", "counter",
                                         "histogram", "info",  "stateset"};

int main(void)
{
    json_t *all = json_array();
    for (int f = 0; f < SW_STATUS_COUNT; f++) {
        const sw_status_def *d = sw_status_def_of((sw_status_field)f);
        json_array_append_new(all, json_pack("{s:s,s:s,s:b,s:s,s:s,s:s?,s:s?,s:s}", "path", d->path,
                                             "type", type_names[d->type], "nullable", d->nullable,
                                             "unit", d->unit, "kind", kind_names[d->kind], "metric",
                                             d->metric, "label", d->label, "exposed_as",
                                             d->kind ? sw_status_kind_text(d->kind) : ""));
    }
    char *text = all ? json_dumps(all, JSON_INDENT(1)) : NULL;
    json_decref(all);
    if (!text) return 1;
    int rc = puts(text) < 0 || fflush(stdout) != 0;
    free(text);
    return rc;
}
