/*
 * ledger_dump: prints a node's ledger for tests/ref/node_crash.py and friends.
 *
 *   ledger_dump STATE_DIR
 *
 * Opens the state directory read-only (state.h: no lock, nothing written, a
 * torn tail ignored rather than truncated) and prints one JSON object per
 * update in ledger order:
 *   {"i": 0, "origin": "<64 hex>", "step": 0, "q": -3, "scale": "3f000000"}
 * (scale as its IEEE-754 bits, so comparisons are exact), then one summary:
 *   {"summary": true, "updates": N, "records": R, "bytes": B,
 *    "truncated_bytes": T, "origins": O}
 * Exit 0, or 1 with the diag on stderr.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "ledger.h"
#include "state.h"
#include "sw_error.h"
#include "update.h"

#define LEDGER_DUMP_CHUNK 1024

static void ledger_dump_hex(const uint8_t *b, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 15];
    }
    out[2 * n] = '\0';
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fputs("usage: ledger_dump STATE_DIR\n", stderr);
        return 2;
    }
    sw_diag diag = {{0}};
    sw_state *s = NULL;
    sw_state_options opt = {0};
    opt.readonly = true;
    static sw_update buf[LEDGER_DUMP_CHUNK];
    int rc = sw_state_open(argv[1], &opt, &s, &diag);
    if (rc != 0) goto fail;
    uint64_t count = sw_ledger_count(s->ledger);
    for (uint64_t first = 0; first < count;) {
        size_t got = 0;
        rc = sw_ledger_read(s->ledger, first, buf, LEDGER_DUMP_CHUNK, &got, &diag);
        if (rc != 0) goto fail;
        if (got == 0) {
            rc =
                sw_diag_set(&diag, SW_EFORMAT, "%s: ledger read stopped at %" PRIu64 " of %" PRIu64,
                            argv[1], first, count);
            goto fail;
        }
        for (size_t j = 0; j < got; j++) {
            char origin[2 * SW_ID_BYTES + 1];
            uint32_t bits;
            memcpy(&bits, &buf[j].scale, sizeof bits);
            ledger_dump_hex(buf[j].origin, SW_ID_BYTES, origin);
            printf("{\"i\": %" PRIu64 ", \"origin\": \"%s\", \"step\": %" PRIu64
                   ", \"q\": %d, \"scale\": \"%08" PRIx32 "\"}\n",
                   first + j, origin, buf[j].step, (int)buf[j].q, bits);
        }
        first += got;
    }
    printf("{\"summary\": true, \"updates\": %" PRIu64 ", \"records\": %" PRIu64
           ", \"bytes\": %" PRIu64 ", \"truncated_bytes\": %" PRIu64 ", \"origins\": %zu}\n",
           count, s->ledger_info.n_records, s->ledger_info.size, s->ledger_info.truncated_bytes,
           sw_ledger_origin_count(s->ledger));
    sw_state_close(s);
    return fflush(stdout) == 0 ? 0 : 1;
fail:
    fprintf(stderr, "ledger_dump: %s (%s)\n", diag.msg, sw_strerror(rc));
    sw_state_close(s);
    return 1;
}
