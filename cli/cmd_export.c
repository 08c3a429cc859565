/*
 * `swarmctl model export`: a node's current model, from its state directory,
 * as a Hugging Face directory (config.json, model.safetensors, the base
 * model's tokenizer files) that every `swarmctl model` tool and Hugging Face
 * itself can load.
 *
 * The state directory is opened read-only (sw_state_open with readonly): no
 * lock is taken and nothing is written, so export works while swarmd runs.
 * It rebuilds the weights from the newest valid checkpoint plus the ledger
 * updates after it, as durable at that moment (a torn ledger tail being
 * written is ignored).  The F32 output is a pure function of the fixed-point
 * weights: equal weights give byte-identical files.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "export.h"
#include "fileio.h"
#include "fixed.h"
#include "gpt2.h"
#include "safetensors.h"
#include "state.h"

#define EXPORT_PATH_MAX 4096

static const char export_usage[] =
    "Usage: swarmctl model export --state-dir DIR --out OUT_DIR [--dtype f32|f16]\n"
    "                             [--threads N] [--force]\n"
    "\n"
    "Writes the current model of the node whose state directory is DIR to OUT_DIR\n"
    "(created if needed): config.json, model.safetensors and the base model's tokenizer\n"
    "files.  The weights are rebuilt from the newest valid checkpoint and the ledger\n"
    "updates after it; DIR is only read (no lock), so this works while swarmd runs and\n"
    "exports every update durable at that moment.  F32 output is byte-identical for\n"
    "equal weights.  Prints the training step, the update count and the digest.\n"
    "\n"
    "Options:\n"
    "  --state-dir DIR  the node's state directory ([node] state_dir)\n"
    "  --out OUT_DIR    where to write the model\n"
    "  --dtype T        f32 (default, exact) or f16 (rounded to nearest even)\n"
    "  --threads N      threads replaying the ledger (default: the online CPUs)\n"
    "  --force          replace a model already in OUT_DIR\n"
    "  -h, --help       show this help\n";

static void export_warn(void *ctx, const char *msg)
{
    (void)ctx;
    fprintf(stderr, "swarmctl: warning: %s\n", msg);
}

int swctl_model_export(const char *path, int argc, char **argv)
{
    const char *state_dir = NULL, *out = NULL, *dtype_s = "f32";
    int threads = swctl_default_threads();
    bool force = false;
    swctl_opt opts[] = {
        {"state-dir", 0, SWCTL_OPT_STR, &state_dir, 0, 0, false},
        {"out", 0, SWCTL_OPT_STR, &out, 0, 0, false},
        {"dtype", 0, SWCTL_OPT_STR, &dtype_s, 0, 0, false},
        {"threads", 0, SWCTL_OPT_INT, &threads, 1, 1024, false},
        {"force", 0, SWCTL_OPT_FLAG, &force, 0, 0, false},
    };
    swctl_cmd cmd = {.path = path,
                     .usage = export_usage,
                     .opts = opts,
                     .n_opts = sizeof opts / sizeof opts[0],
                     .min_pos = 0,
                     .max_pos = 0,
                     .pos_names = NULL};
    int rc = swctl_parse(&cmd, argc, argv);
    if (rc >= 0) return rc;
    if ((rc = swctl_require(&cmd, "state-dir")) != 0 || (rc = swctl_require(&cmd, "out")) != 0)
        return rc;
    sw_dtype dtype;
    if (sw_dtype_parse(dtype_s, &dtype) != 0 || (dtype != SW_DTYPE_F32 && dtype != SW_DTYPE_F16))
        return swctl_usage_error(path, "--dtype", "'%s' is not one of f32, f16", dtype_s);

    sw_diag d = {{0}};
    sw_state *s = NULL;
    sw_fixed *w = NULL;
    sw_gpt2 *m = NULL;
    struct stat st;
    if (stat(state_dir, &st) != 0) return swctl_fail("%s: %s", state_dir, strerror(errno));
    if (!S_ISDIR(st.st_mode)) return swctl_fail("%s: not a directory", state_dir);
    if (!force) {
        static const char *const names[] = {"model.safetensors", "config.json"};
        for (size_t i = 0; i < 2; i++) {
            char p[EXPORT_PATH_MAX];
            if (sw_path_join(p, sizeof p, out, names[i]) != 0)
                return swctl_fail("%s: path too long", out);
            if (swctl_exists(p))
                return swctl_fail("%s: a model exists already (use --force to replace it)", p);
        }
    }

    sw_state_options so = {.readonly = true, .warn = export_warn};
    if ((rc = sw_state_open(state_dir, &so, &s, &d)) != 0) {
        rc = swctl_fail_diag(&d, rc);
        goto done;
    }
    uint64_t count = sw_ledger_count(s->ledger);
    uint64_t ckpt = s->has_ckpt ? s->ckpt_meta.ledger_count : 0;
    bool had_ckpt = s->has_ckpt;
    size_t origins = sw_ledger_origin_count(s->ledger);
    if ((rc = sw_state_rebuild(s, threads, &w, &d)) != 0) {
        rc = swctl_fail_diag(&d, rc);
        goto done;
    }
    if ((rc = sw_fixed_to_model(w, &m, &d)) != 0) {
        rc = swctl_fail_diag(&d, rc);
        goto done;
    }
    sw_fixed_free(w);
    w = NULL;
    size_t copied = 0;
    /* The digest of what a reader of OUT sees (F16 rounds). */
    uint8_t dg[SW_GPT2_DIGEST_BYTES];
    char hex[2 * SW_GPT2_DIGEST_BYTES + 1], run[2 * SW_ID_BYTES + 1];
    if ((rc = sw_export_model(m, s->base_model_dir, out, dtype, &copied, dg, &d)) != 0) {
        rc = swctl_fail_diag(&d, rc);
        goto done;
    }
    sw_digest_hex(dg, hex);
    sw_digest_hex(s->train.run_id, run);
    char from[64];
    if (had_ckpt)
        snprintf(from, sizeof from, "checkpoint at %" PRIu64, ckpt);
    else
        snprintf(from, sizeof from, "base model");
    printf("wrote %s: %" PRIu64 " updates from %zu origin%s (%s + %" PRIu64
           " replayed), %s, %zu tokenizer files\n",
           out, count, origins, origins == 1 ? "" : "s", from, count - ckpt, sw_dtype_name(dtype),
           copied);
    printf("run_id %s\n", run);
    printf("digest %s\n", hex);
    rc = 0;
done:
    sw_gpt2_free(m);
    sw_fixed_free(w);
    sw_state_close(s);
    return rc;
}
