/*
 * metrics_render: C side of tests/ref/metrics_promtool.py.
 *
 *   metrics_render STATUS.json
 *     Prints swd_metrics_render of the JSON object in the file (the output
 *     of `swarmctl status --json`): the text swarmd serves at /metrics.
 *
 * Exit 1 when the file cannot be read or is not JSON, 2 on usage errors.
 */
#include <stdio.h>
#include <stdlib.h>

#include <jansson.h>

#include "metrics.h"

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: metrics_render STATUS.json\n");
        return 2;
    }
    json_error_t err;
    json_t *st = json_load_file(argv[1], 0, &err);
    if (!st) {
        fprintf(stderr, "%s:%d: %s\n", argv[1], err.line, err.text);
        return 1;
    }
    char *text = swd_metrics_render(st);
    json_decref(st);
    if (!text) {
        fprintf(stderr, "metrics_render: out of memory\n");
        return 1;
    }
    int rc = fputs(text, stdout) < 0 || fflush(stdout) != 0;
    free(text);
    return rc;
}
