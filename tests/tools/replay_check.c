/*
 * replay_check: the replay guarantee, checked inside one process for
 * tests/ref/node_replay.py.
 *
 *   replay_check STATE_DIR
 *
 * Opens the state directory read-only and, for every checkpoint file in
 * STATE_DIR/checkpoints (newest first), loads it (its checksum and stored
 * sw_fixed digest verified by sw_checkpoint_load), then rebuilds the weights
 * from the BASE MODEL alone (sw_gpt2_load + sw_fixed_from_model, no
 * checkpoint) plus ledger updates [0, ledger_count) read back with
 * sw_ledger_read and applied with sw_fixed_apply, and compares the two
 * digests.  Finally it compares the state as the daemon would rebuild it
 * (sw_state_rebuild: newest checkpoint + ledger suffix) with base + the whole
 * ledger.  Prints one JSON object per comparison:
 *   {"what": "ckpt-...swck", "updates": N, "checkpoint": "<hex>",
 *    "replayed": "<hex>", "equal": true, "seconds": S}
 * and exits 0 when every comparison is equal and at least one checkpoint
 * exists, 1 otherwise (or on any error, the diag on stderr).
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "checkpoint.h"
#include "fileio.h"
#include "fixed.h"
#include "gpt2.h"
#include "ledger.h"
#include "state.h"
#include "sw_error.h"
#include "update.h"

#define REPLAY_CHECK_CHUNK 256

static double replay_check_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void replay_check_hex(const uint8_t *b, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < SW_FIXED_DIGEST_BYTES; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 15];
    }
    out[2 * SW_FIXED_DIGEST_BYTES] = '\0';
}

/* The base model of s as fixed point, with the run spec's digest checked. */
static int replay_check_base(const sw_state *s, sw_fixed **out, sw_diag *diag)
{
    sw_gpt2 *m = NULL;
    int rc = sw_gpt2_load(s->base_model_dir, &m, diag);
    if (rc != 0) return rc;
    uint8_t d[SW_GPT2_DIGEST_BYTES];
    sw_gpt2_digest(m, d);
    if (memcmp(d, s->runspec.base_digest, sizeof d) != 0) {
        sw_gpt2_free(m);
        return sw_diag_set(diag, SW_EMISMATCH, "%s: base model digest differs from the run spec",
                           s->base_model_dir);
    }
    rc = sw_fixed_from_model(m, out, diag);
    sw_gpt2_free(m);
    return rc;
}

/* Applies ledger updates [0, n) to f, checked, in fused batches. */
static int replay_check_apply(const sw_state *s, sw_fixed *f, uint64_t n, sw_diag *diag)
{
    static sw_update buf[REPLAY_CHECK_CHUNK];
    for (uint64_t first = 0; first < n;) {
        size_t want = n - first < REPLAY_CHECK_CHUNK ? (size_t)(n - first) : REPLAY_CHECK_CHUNK;
        size_t got = 0;
        int rc = sw_ledger_read(s->ledger, first, buf, want, &got, diag);
        if (rc != 0) return rc;
        if (got != want)
            return sw_diag_set(diag, SW_EFORMAT, "ledger: read %zu of %zu updates at %" PRIu64, got,
                               want, first);
        for (size_t j = 0; j < got; j++) {
            rc = sw_update_check(&s->train, &buf[j], diag);
            if (rc != 0) return rc;
        }
        sw_fixed_apply(f, &s->train, s->trainable, buf, got, 1);
        first += got;
    }
    return 0;
}

static void replay_check_print(const char *what, uint64_t n, const uint8_t *a, const uint8_t *b,
                               double seconds)
{
    char ha[2 * SW_FIXED_DIGEST_BYTES + 1], hb[2 * SW_FIXED_DIGEST_BYTES + 1];
    replay_check_hex(a, ha);
    replay_check_hex(b, hb);
    printf("{\"what\": \"%s\", \"updates\": %" PRIu64
           ", \"checkpoint\": \"%s\", \"replayed\": \"%s\", \"equal\": %s, \"seconds\": %.3f}\n",
           what, n, ha, hb, memcmp(a, b, SW_FIXED_DIGEST_BYTES) == 0 ? "true" : "false", seconds);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fputs("usage: replay_check STATE_DIR\n", stderr);
        return 2;
    }
    sw_diag diag = {{0}};
    sw_state *s = NULL;
    sw_fixed *ck = NULL, *rep = NULL, *cur = NULL;
    char **paths = NULL;
    size_t n_paths = 0;
    bool all_equal = true;
    sw_checkpoint_meta meta;
    memset(&meta, 0, sizeof meta);
    sw_state_options opt = {0};
    opt.readonly = true;
    int rc = sw_state_open(argv[1], &opt, &s, &diag);
    if (rc != 0) goto fail;
    char ckdir[SW_STATE_PATH_MAX];
    if (sw_path_join(ckdir, sizeof ckdir, argv[1], "checkpoints") != 0) {
        rc = sw_diag_set(&diag, SW_EINVAL, "%s: path too long", argv[1]);
        goto fail;
    }
    rc = sw_checkpoint_list(ckdir, &paths, &n_paths, &diag);
    if (rc != 0) goto fail;
    for (size_t i = 0; i < n_paths; i++) {
        double t0 = replay_check_now();
        rc = sw_checkpoint_load(paths[i], s->train.run_id, &s->runspec.arch, &ck, &meta, &diag);
        if (rc != 0) goto fail;
        uint8_t dck[SW_FIXED_DIGEST_BYTES], drep[SW_FIXED_DIGEST_BYTES];
        sw_fixed_digest(ck, dck);
        if (memcmp(dck, meta.digest, sizeof dck) != 0) all_equal = false;
        if ((rc = replay_check_base(s, &rep, &diag)) != 0) goto fail;
        if ((rc = replay_check_apply(s, rep, meta.ledger_count, &diag)) != 0) goto fail;
        sw_fixed_digest(rep, drep);
        if (memcmp(dck, drep, sizeof dck) != 0) all_equal = false;
        if (ck->saturations != 0 || rep->saturations != 0)
            fprintf(stderr,
                    "replay_check: saturations: checkpoint %" PRIu64 ", replay %" PRIu64 "\n",
                    ck->saturations, rep->saturations);
        const char *base = strrchr(paths[i], '/');
        replay_check_print(base ? base + 1 : paths[i], meta.ledger_count, dck, drep,
                           replay_check_now() - t0);
        sw_fixed_free(ck);
        sw_fixed_free(rep);
        ck = rep = NULL;
        sw_checkpoint_meta_fini(&meta);
    }

    /* The daemon's view (newest checkpoint + suffix) against base + everything. */
    double t0 = replay_check_now();
    uint64_t count = sw_ledger_count(s->ledger);
    rc = sw_state_rebuild(s, 1, &cur, &diag);
    if (rc != 0) goto fail;
    if ((rc = replay_check_base(s, &rep, &diag)) != 0) goto fail;
    if ((rc = replay_check_apply(s, rep, count, &diag)) != 0) goto fail;
    uint8_t dcur[SW_FIXED_DIGEST_BYTES], drep[SW_FIXED_DIGEST_BYTES];
    sw_fixed_digest(cur, dcur);
    sw_fixed_digest(rep, drep);
    if (memcmp(dcur, drep, sizeof dcur) != 0) all_equal = false;
    replay_check_print("state", count, dcur, drep, replay_check_now() - t0);

    sw_fixed_free(cur);
    sw_fixed_free(rep);
    sw_checkpoint_list_free(paths, n_paths);
    sw_state_close(s);
    if (n_paths == 0) fputs("replay_check: no checkpoint in the state directory\n", stderr);
    return all_equal && n_paths > 0 ? 0 : 1;
fail:
    fprintf(stderr, "replay_check: %s (%s)\n", diag.msg, sw_strerror(rc));
    sw_checkpoint_meta_fini(&meta);
    sw_fixed_free(ck);
    sw_fixed_free(rep);
    sw_fixed_free(cur);
    sw_checkpoint_list_free(paths, n_paths);
    sw_state_close(s);
    return 1;
}
