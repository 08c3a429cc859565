/*
 * `swarmctl model ...`: offline tools over a model directory in Hugging Face
 * layout (config.json, model.safetensors, tokenizer files).  None of them
 * talks to a daemon.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "cli.h"
#include "dataset.h"
#include "eval.h"
#include "fileio.h"
#include "generate.h"
#include "gpt2.h"
#include "gpt2_config.h"
#include "gpt2_forward.h"
#include "safetensors.h"
#include "tokenizer.h"

#define MODEL_PATH_MAX 4096
/* Tokenizer, licence and readme files copied alongside a model are at most this big. */
#define MODEL_AUX_MAX_BYTES (256u * 1024u * 1024u)

#define MODEL_OPT_END(opts) (sizeof(opts) / sizeof((opts)[0]))

static double model_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int model_join(char *buf, const char *dir, const char *name)
{
    if (sw_path_join(buf, MODEL_PATH_MAX, dir, name) != 0)
        return swctl_fail("%s: path too long", dir);
    return 0;
}

static bool model_is_file(const char *dir, const char *name)
{
    char p[MODEL_PATH_MAX];
    struct stat st;
    return sw_path_join(p, sizeof p, dir, name) == 0 && stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* Names a missing model directory itself rather than the first file looked for in it. */
static int model_check_dir(const char *dir)
{
    struct stat st;
    if (stat(dir, &st) != 0) return swctl_fail("%s: %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode)) return swctl_fail("%s: not a directory", dir);
    return 0;
}

/* Refuses to replace a model in dir unless force; 0 when dir is free to use. */
static int model_check_overwrite(const char *dir, bool force)
{
    static const char *const names[] = {"model.safetensors", "config.json"};
    if (force) return 0;
    for (size_t i = 0; i < 2; i++) {
        char p[MODEL_PATH_MAX];
        if (model_join(p, dir, names[i]) != 0) return SWCTL_EXIT_FAIL;
        if (swctl_exists(p))
            return swctl_fail("%s: a model exists already (use --force to replace it)", p);
    }
    return 0;
}

/* Parses --dtype for the writers (F32 or F16). */
static int model_parse_dtype(const char *path, const char *text, sw_dtype *out)
{
    sw_dtype d;
    if (sw_dtype_parse(text, &d) != 0 || (d != SW_DTYPE_F32 && d != SW_DTYPE_F16))
        return swctl_usage_error(path, "--dtype", "'%s' is not one of f32, f16", text);
    *out = d;
    return 0;
}

/* Loads dir and writes its digest as hex: the digest of what a reader of dir sees. */
static int model_digest_dir(const char *dir, char hex[2 * SW_GPT2_DIGEST_BYTES + 1])
{
    sw_diag d = {{0}};
    sw_gpt2 *m = NULL;
    int rc = sw_gpt2_load(dir, &m, &d);
    if (rc != 0) return swctl_fail_diag(&d, rc);
    uint8_t dg[SW_GPT2_DIGEST_BYTES];
    sw_gpt2_digest(m, dg);
    sw_digest_hex(dg, hex);
    sw_gpt2_free(m);
    return 0;
}

/*
 * Copies the tokenizer files that sw_tokenizer_load_dir would read from src:
 * vocab.json + merges.txt when both exist, else tokenizer.json.
 */
static int model_copy_tokenizer(const char *src, const char *dst)
{
    static const char *const pair[] = {"vocab.json", "merges.txt"};
    static const char *const single[] = {"tokenizer.json"};
    const char *const *names = pair;
    size_t n = 2;
    if (!model_is_file(src, "vocab.json") || !model_is_file(src, "merges.txt")) {
        names = single;
        n = 1;
    }
    for (size_t i = 0; i < n; i++) {
        char from[MODEL_PATH_MAX], to[MODEL_PATH_MAX];
        if (model_join(from, src, names[i]) != 0 || model_join(to, dst, names[i]) != 0)
            return SWCTL_EXIT_FAIL;
        sw_diag d = {{0}};
        int rc = sw_file_copy(from, to, MODEL_AUX_MAX_BYTES, &d);
        if (rc != 0) return swctl_fail_diag(&d, rc);
    }
    return 0;
}

static const char *model_fmt_count(uint64_t v, char *buf, size_t size)
{
    /* Thousands separators make parameter counts readable. */
    char digits[32];
    int n = snprintf(digits, sizeof digits, "%" PRIu64, v);
    size_t o = 0;
    for (int i = 0; i < n && o + 2 < size; i++) {
        if (i > 0 && (n - i) % 3 == 0) buf[o++] = ',';
        buf[o++] = digits[i];
    }
    buf[o] = '\0';
    return buf;
}

/* ------------------------------------------------------------------ init */

static const char model_init_usage[] =
    "Usage: swarmctl model init OUT_DIR --layers N --heads N --embd N --ctx N --vocab N\n"
    "                           [--tokenizer DIR] [--seed S] [--dtype f32|f16] [--force]\n"
    "\n"
    "Writes a randomly initialised GPT-2 (config.json, model.safetensors) to OUT_DIR,\n"
    "creating it if needed.  Initialisation is GPT-2's: N(0, 0.02) weights,\n"
    "N(0, 0.02/sqrt(2*layers)) residual projections, zero biases, unit layer-norm gains;\n"
    "the LM head is tied to the token embedding.  The same options and seed give the\n"
    "same model.\n"
    "\n"
    "Options:\n"
    "  --layers N       transformer blocks (1..256)\n"
    "  --heads N        attention heads per block (1..256); must divide --embd\n"
    "  --embd N         embedding width (1..16384)\n"
    "  --ctx N          context length, n_positions (1..65536)\n"
    "  --vocab N        vocabulary size (1..1048576)\n"
    "  --tokenizer DIR  copy DIR's vocab.json + merges.txt (or tokenizer.json) into\n"
    "                   OUT_DIR; refused if that vocabulary is larger than --vocab\n"
    "  --seed S         random seed, an unsigned 64-bit integer (default 0)\n"
    "  --dtype T        stored dtype: f32 (default) or f16\n"
    "  --force          replace a model already in OUT_DIR\n"
    "  -h, --help       show this help\n";

static int model_init(const char *path, int argc, char **argv)
{
    int layers = 0, heads = 0, embd = 0, ctx = 0, vocab = 0;
    const char *tok_dir = NULL, *dtype_s = "f32";
    uint64_t seed = 0;
    bool force = false;
    swctl_opt opts[] = {
        {"layers", 0, SWCTL_OPT_INT, &layers, 1, SW_GPT2_MAX_LAYERS, false},
        {"heads", 0, SWCTL_OPT_INT, &heads, 1, SW_GPT2_MAX_HEADS, false},
        {"embd", 0, SWCTL_OPT_INT, &embd, 1, SW_GPT2_MAX_EMBD, false},
        {"ctx", 0, SWCTL_OPT_INT, &ctx, 1, SW_GPT2_MAX_POSITIONS, false},
        {"vocab", 0, SWCTL_OPT_INT, &vocab, 1, SW_GPT2_MAX_VOCAB, false},
        {"tokenizer", 0, SWCTL_OPT_STR, &tok_dir, 0, 0, false},
        {"seed", 0, SWCTL_OPT_U64, &seed, 0, 0, false},
        {"dtype", 0, SWCTL_OPT_STR, &dtype_s, 0, 0, false},
        {"force", 0, SWCTL_OPT_FLAG, &force, 0, 0, false},
    };
    swctl_cmd cmd = {.path = path,
                     .usage = model_init_usage,
                     .opts = opts,
                     .n_opts = MODEL_OPT_END(opts),
                     .min_pos = 1,
                     .max_pos = 1,
                     .pos_names = "OUT_DIR"};
    int rc = swctl_parse(&cmd, argc, argv);
    if (rc >= 0) return rc;
    static const char *const required[] = {"layers", "heads", "embd", "ctx", "vocab"};
    for (size_t i = 0; i < 5; i++)
        if ((rc = swctl_require(&cmd, required[i])) != 0) return rc;
    sw_dtype dtype = SW_DTYPE_F32;
    if ((rc = model_parse_dtype(path, dtype_s, &dtype)) != 0) return rc;
    const char *out_dir = cmd.pos[0];

    sw_gpt2_config cfg = {
        .n_layer = layers,
        .n_head = heads,
        .n_embd = embd,
        .n_positions = ctx,
        .vocab_size = vocab,
        .layer_norm_epsilon = 1e-5f,
        .tie_word_embeddings = true,
    };
    if (embd % heads != 0)
        return swctl_usage_error(path, "--heads", "%d does not divide --embd %d", heads, embd);
    sw_diag d = {{0}};
    if (sw_gpt2_config_validate(&cfg, "architecture", &d) != 0)
        return swctl_usage_error(path, path, "%s", d.msg);

    sw_tokenizer *tok = NULL;
    sw_gpt2 *m = NULL;
    if (tok_dir != NULL) {
        if ((rc = model_check_dir(tok_dir)) != 0) goto done;
        rc = sw_tokenizer_load_dir(tok_dir, &tok, &d);
        if (rc != 0) {
            rc = swctl_fail_diag(&d, rc);
            goto done;
        }
        int32_t tv = sw_tokenizer_vocab_size(tok);
        if (tv > vocab) {
            rc = swctl_fail("%s: the tokenizer has %d ids, more than --vocab %d", tok_dir, (int)tv,
                            vocab);
            goto done;
        }
    }
    if ((rc = model_check_overwrite(out_dir, force)) != 0) goto done;
    if ((rc = swctl_mkdir_p(out_dir, &d)) != 0) {
        rc = swctl_fail_diag(&d, rc);
        goto done;
    }
    if ((rc = sw_gpt2_alloc(&cfg, &m, &d)) != 0) {
        rc = swctl_fail_diag(&d, rc);
        goto done;
    }
    sw_gpt2_init_random(m, seed);
    if ((rc = sw_gpt2_save(m, out_dir, dtype, &d)) != 0) {
        rc = swctl_fail_diag(&d, rc);
        goto done;
    }
    sw_gpt2_free(m);
    m = NULL;
    if (tok_dir != NULL && (rc = model_copy_tokenizer(tok_dir, out_dir)) != 0) goto done;
    char hex[2 * SW_GPT2_DIGEST_BYTES + 1];
    if ((rc = model_digest_dir(out_dir, hex)) != 0) goto done;
    char nbuf[40];
    printf("wrote %s: %d layers, %d heads, embd %d, ctx %d, vocab %d, %s parameters (%s)\n",
           out_dir, layers, heads, embd, ctx, vocab,
           model_fmt_count(sw_gpt2_config_param_count(&cfg), nbuf, sizeof nbuf),
           sw_dtype_name(dtype));
    printf("digest %s\n", hex);
    rc = 0;
done:
    sw_gpt2_free(m);
    sw_tokenizer_free(tok);
    return rc;
}

/* --------------------------------------------------------------- inspect */

static const char model_inspect_usage[] =
    "Usage: swarmctl model inspect DIR [--json]\n"
    "\n"
    "Describes the model in DIR: architecture, parameter count, digest, tensors as\n"
    "stored in model.safetensors (name, dtype, shape) and the tokenizer files present.\n"
    "The digest (BLAKE2b-256 over the architecture and the float32 weights) is equal\n"
    "for equal weights whatever dtype they are stored in.\n"
    "\n"
    "Options:\n"
    "  --json      print one JSON object (keys in docs/cli.md)\n"
    "  -h, --help  show this help\n";

static int model_inspect(const char *path, int argc, char **argv)
{
    bool as_json = false;
    swctl_opt opts[] = {
        {"json", 0, SWCTL_OPT_FLAG, &as_json, 0, 0, false},
    };
    swctl_cmd cmd = {.path = path,
                     .usage = model_inspect_usage,
                     .opts = opts,
                     .n_opts = MODEL_OPT_END(opts),
                     .min_pos = 1,
                     .max_pos = 1,
                     .pos_names = "DIR"};
    int rc = swctl_parse(&cmd, argc, argv);
    if (rc >= 0) return rc;
    const char *dir = cmd.pos[0];

    sw_diag d = {{0}};
    sw_gpt2 *m = NULL;
    sw_safetensors *st = NULL;
    sw_tokenizer *tok = NULL;
    json_t *root = NULL;
    char st_path[MODEL_PATH_MAX];
    if ((rc = model_join(st_path, dir, "model.safetensors")) != 0) goto done;
    if ((rc = model_check_dir(dir)) != 0) goto done;
    if ((rc = sw_gpt2_load(dir, &m, &d)) != 0 ||
        (rc = sw_safetensors_open(st_path, &st, &d)) != 0) {
        rc = swctl_fail_diag(&d, rc);
        goto done;
    }
    const sw_gpt2_config *cfg = &m->cfg;
    uint8_t dg[SW_GPT2_DIGEST_BYTES];
    char hex[2 * SW_GPT2_DIGEST_BYTES + 1];
    sw_gpt2_digest(m, dg);
    sw_digest_hex(dg, hex);
    struct stat sb;
    long long file_bytes = stat(st_path, &sb) == 0 ? (long long)sb.st_size : -1;
    uint64_t n_params = sw_gpt2_config_param_count(cfg);

    static const char *const tok_names[] = {"vocab.json", "merges.txt", "tokenizer.json"};
    bool tok_present[3];
    bool any_tok = false;
    for (size_t i = 0; i < 3; i++)
        any_tok |= tok_present[i] = model_is_file(dir, tok_names[i]);
    sw_diag tok_diag = {{0}};
    if (any_tok && sw_tokenizer_load_dir(dir, &tok, &tok_diag) != 0) tok = NULL;

    /* The file's dtypes, in order of first appearance ("F32" or e.g. "F16, F32"). */
    char dtypes[32] = "";
    bool dt_seen[3] = {false, false, false};
    size_t nt = sw_safetensors_count(st);
    for (size_t i = 0; i < nt; i++) {
        const sw_st_tensor *t = sw_safetensors_at(st, i);
        if (dt_seen[t->dtype]) continue;
        dt_seen[t->dtype] = true;
        size_t l = strlen(dtypes);
        snprintf(dtypes + l, sizeof dtypes - l, "%s%s", l ? ", " : "", sw_dtype_name(t->dtype));
    }

    if (as_json) {
        json_t *tensors = json_array();
        for (size_t i = 0; i < nt; i++) {
            const sw_st_tensor *t = sw_safetensors_at(st, i);
            json_t *shape = json_array();
            for (int k = 0; k < t->ndim; k++)
                json_array_append_new(shape, json_integer(t->shape[k]));
            json_array_append_new(tensors, json_pack("{s:s, s:s, s:o}", "name", t->name, "dtype",
                                                     sw_dtype_name(t->dtype), "shape", shape));
        }
        json_t *files = json_array();
        for (size_t i = 0; i < 3; i++)
            if (tok_present[i]) json_array_append_new(files, json_string(tok_names[i]));
        json_t *tj = json_pack("{s:o}", "files", files);
        if (tok != NULL) {
            json_object_set_new(tj, "vocab_size", json_integer(sw_tokenizer_vocab_size(tok)));
            int32_t eos = sw_tokenizer_eos(tok);
            json_object_set_new(tj, "eos_id", eos >= 0 ? json_integer(eos) : json_null());
        } else if (any_tok) {
            json_object_set_new(tj, "error", json_string(tok_diag.msg));
        }
        root = json_pack("{s:s, s:i, s:i, s:i, s:i, s:i, s:b, s:f, s:I, s:s, s:s, s:I, s:o, s:o}",
                         "dir", dir, "layers", cfg->n_layer, "heads", cfg->n_head, "embd",
                         cfg->n_embd, "ctx", cfg->n_positions, "vocab", cfg->vocab_size, "tied",
                         (int)cfg->tie_word_embeddings, "layer_norm_epsilon",
                         (double)cfg->layer_norm_epsilon, "params", (json_int_t)n_params, "digest",
                         hex, "dtype", dtypes, "file_bytes", (json_int_t)file_bytes, "tensors",
                         tensors, "tokenizer", tj);
        if (root == NULL) {
            rc = swctl_fail("%s: cannot build the JSON output", dir);
            goto done;
        }
        char *text = json_dumps(root, JSON_INDENT(2) | JSON_REAL_PRECISION(9));
        if (text == NULL) {
            rc = swctl_fail("%s: cannot build the JSON output", dir);
            goto done;
        }
        printf("%s\n", text);
        free(text);
        rc = 0;
        goto done;
    }

    char nbuf[40], bbuf[40];
    printf("model       %s\n", dir);
    printf("layers      %d\n", cfg->n_layer);
    printf("heads       %d\n", cfg->n_head);
    printf("embd        %d\n", cfg->n_embd);
    printf("ctx         %d\n", cfg->n_positions);
    printf("vocab       %d\n", cfg->vocab_size);
    printf("tied        %s\n", cfg->tie_word_embeddings ? "yes" : "no");
    printf("ln epsilon  %g\n", (double)cfg->layer_norm_epsilon);
    printf("parameters  %s\n", model_fmt_count(n_params, nbuf, sizeof nbuf));
    printf("dtype       %s\n", dtypes);
    printf("file bytes  %s\n", model_fmt_count((uint64_t)file_bytes, bbuf, sizeof bbuf));
    printf("digest      %s\n", hex);
    printf("tokenizer   ");
    if (!any_tok) {
        printf("none\n");
    } else {
        for (size_t i = 0; i < 3; i++)
            if (tok_present[i]) printf("%s ", tok_names[i]);
        if (tok != NULL) {
            int32_t eos = sw_tokenizer_eos(tok);
            printf("(%d ids", (int)sw_tokenizer_vocab_size(tok));
            if (eos >= 0) printf(", <|endoftext|> = %d", (int)eos);
            printf(")\n");
        } else {
            printf("(does not load: %s)\n", tok_diag.msg);
        }
    }
    printf("tensors     %zu\n", nt);
    for (size_t i = 0; i < nt; i++) {
        const sw_st_tensor *t = sw_safetensors_at(st, i);
        char shape[128] = "[";
        for (int k = 0; k < t->ndim; k++) {
            size_t l = strlen(shape);
            snprintf(shape + l, sizeof shape - l, "%s%" PRId64, k ? ", " : "", t->shape[k]);
        }
        size_t l = strlen(shape);
        snprintf(shape + l, sizeof shape - l, "]");
        printf("  %-36s %-4s %s\n", t->name, sw_dtype_name(t->dtype), shape);
    }
    rc = 0;
done:
    json_decref(root);
    sw_tokenizer_free(tok);
    sw_safetensors_close(st);
    sw_gpt2_free(m);
    return rc;
}

/* -------------------------------------------------------------- tokenize */

static const char model_tokenize_usage[] =
    "Usage: swarmctl model tokenize --model DIR [--decode]\n"
    "\n"
    "Reads all of standard input (at most 64 MiB) and tokenizes it with DIR's\n"
    "tokenizer (vocab.json + merges.txt, or tokenizer.json; the model itself is not\n"
    "needed).  Prints the ids on one line, separated by spaces, ending with a newline.\n"
    "\n"
    "With --decode, reads whitespace-separated ids instead and prints their text\n"
    "exactly, adding nothing (no newline), so that\n"
    "  printf 'x' | swarmctl model tokenize --model D | swarmctl model tokenize --model D "
    "--decode\n"
    "prints exactly 'x'.  \"<|endoftext|>\" in text is encoded as ordinary characters.\n"
    "\n"
    "Options:\n"
    "  --model DIR  the directory holding the tokenizer files\n"
    "  --decode     ids in, text out\n"
    "  -h, --help   show this help\n";

static bool model_is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static int model_decode_ids(const sw_tokenizer *tok, const char *model_dir, char *in, size_t len)
{
    sw_tokens ids = {0};
    char *text = NULL;
    size_t tlen = 0;
    int rc = 0;
    size_t i = 0, index = 0;
    while (i < len) {
        while (i < len && model_is_space(in[i]))
            i++;
        if (i >= len) break;
        size_t start = i;
        while (i < len && !model_is_space(in[i]))
            i++;
        index++;
        /* Each word is checked whole: "12abc" and "-1" are not ids. */
        char word[24];
        size_t wlen = i - start;
        bool ok = wlen > 0 && wlen < 11;
        long long v = 0;
        for (size_t k = start; ok && k < i; k++) {
            if (in[k] < '0' || in[k] > '9')
                ok = false;
            else
                v = v * 10 + (in[k] - '0');
        }
        if (!ok || v > INT32_MAX) {
            snprintf(word, sizeof word, "%.*s%s", (int)(wlen > 16 ? 16 : wlen), in + start,
                     wlen > 16 ? "..." : "");
            rc = swctl_fail("stdin: word %zu: '%s' is not a token id", index, word);
            goto done;
        }
        if (v >= sw_tokenizer_vocab_size(tok)) {
            rc = swctl_fail("stdin: word %zu: id %lld is outside the vocabulary of %s (0..%d)",
                            index, v, model_dir, (int)sw_tokenizer_vocab_size(tok) - 1);
            goto done;
        }
        if (sw_tokens_push(&ids, (int32_t)v) != 0) {
            rc = swctl_fail("stdin: out of memory");
            goto done;
        }
    }
    int drc = sw_tokenizer_decode(tok, ids.ids, ids.n, &text, &tlen);
    if (drc != 0) {
        /* Find the id the vocabulary does not hold (it may have holes below its size). */
        for (size_t k = 0; k < ids.n; k++) {
            char *one = NULL;
            size_t olen;
            if (sw_tokenizer_decode(tok, &ids.ids[k], 1, &one, &olen) != 0) {
                rc = swctl_fail("stdin: word %zu: id %d is not in the vocabulary of %s", k + 1,
                                (int)ids.ids[k], model_dir);
                goto done;
            }
            free(one);
        }
        rc = swctl_fail("stdin: decoding failed: %s", sw_strerror(drc));
        goto done;
    }
    rc = swctl_write_stdout(text, tlen);
done:
    free(text);
    sw_tokens_fini(&ids);
    return rc;
}

static int model_tokenize(const char *path, int argc, char **argv)
{
    const char *model_dir = NULL;
    bool decode = false;
    swctl_opt opts[] = {
        {"model", 0, SWCTL_OPT_STR, &model_dir, 0, 0, false},
        {"decode", 0, SWCTL_OPT_FLAG, &decode, 0, 0, false},
    };
    swctl_cmd cmd = {.path = path,
                     .usage = model_tokenize_usage,
                     .opts = opts,
                     .n_opts = MODEL_OPT_END(opts),
                     .min_pos = 0,
                     .max_pos = 0,
                     .pos_names = NULL};
    int rc = swctl_parse(&cmd, argc, argv);
    if (rc >= 0) return rc;
    if ((rc = swctl_require(&cmd, "model")) != 0) return rc;

    sw_diag d = {{0}};
    sw_tokenizer *tok = NULL;
    char *in = NULL;
    size_t len = 0;
    sw_tokens ids = {0};
    if ((rc = model_check_dir(model_dir)) != 0) goto done;
    if ((rc = sw_tokenizer_load_dir(model_dir, &tok, &d)) != 0 ||
        (rc = swctl_read_stdin(&in, &len, &d)) != 0) {
        rc = swctl_fail_diag(&d, rc);
        goto done;
    }
    if (decode) {
        rc = model_decode_ids(tok, model_dir, in, len);
        goto done;
    }
    if ((rc = sw_tokenizer_encode(tok, in, len, &ids)) != 0) {
        rc = swctl_fail("stdin: tokenizing failed: %s", sw_strerror(rc));
        goto done;
    }
    for (size_t i = 0; i < ids.n; i++)
        printf(i ? " %d" : "%d", (int)ids.ids[i]);
    printf("\n");
    rc = 0;
done:
    sw_tokens_fini(&ids);
    free(in);
    sw_tokenizer_free(tok);
    return rc;
}

/* ------------------------------------------------------------------ eval */

static const char model_eval_usage[] =
    "Usage: swarmctl model eval --model DIR --data FILE [--json] [--batch N] [--threads N]\n"
    "                           [--no-accuracy]\n"
    "\n"
    "Scores the model in DIR on a JSONL file of {\"text\": ...} or\n"
    "{\"prompt\": ..., \"completion\": ...} records (tokenized with DIR's tokenizer and\n"
    "cut to the model's context).  Prints the loss in nats per scored token, the\n"
    "perplexity, the number of scored tokens and records, and, when every record is\n"
    "prompt/completion with 2 to 64 distinct completions, the multiple-choice accuracy\n"
    "(a record is correct when its own completion scores strictly best).\n"
    "\n"
    "Options:\n"
    "  --model DIR    the model directory\n"
    "  --data FILE    the JSONL file\n"
    "  --json         print one JSON object (keys in docs/cli.md)\n"
    "  --batch N      sequences per forward pass (1..4096, default 8)\n"
    "  --threads N    OpenBLAS threads (default: the number of online CPUs)\n"
    "  --no-accuracy  skip the multiple-choice pass\n"
    "  -h, --help     show this help\n";

static void model_eval_progress(void *ctx, uint64_t done, uint64_t total)
{
    (void)ctx;
    fprintf(stderr, "\reval: %" PRIu64 "/%" PRIu64 " sequences", done, total);
    if (done == total) fputc('\n', stderr);
    fflush(stderr);
}

static int model_eval(const char *path, int argc, char **argv)
{
    const char *model_dir = NULL, *data = NULL;
    bool as_json = false, no_acc = false;
    int batch = 8, threads = swctl_default_threads();
    swctl_opt opts[] = {
        {"model", 0, SWCTL_OPT_STR, &model_dir, 0, 0, false},
        {"data", 0, SWCTL_OPT_STR, &data, 0, 0, false},
        {"json", 0, SWCTL_OPT_FLAG, &as_json, 0, 0, false},
        {"batch", 0, SWCTL_OPT_INT, &batch, 1, SW_EVAL_MAX_BATCH, false},
        {"threads", 0, SWCTL_OPT_INT, &threads, 1, 1024, false},
        {"no-accuracy", 0, SWCTL_OPT_FLAG, &no_acc, 0, 0, false},
    };
    swctl_cmd cmd = {.path = path,
                     .usage = model_eval_usage,
                     .opts = opts,
                     .n_opts = MODEL_OPT_END(opts),
                     .min_pos = 0,
                     .max_pos = 0,
                     .pos_names = NULL};
    int rc = swctl_parse(&cmd, argc, argv);
    if (rc >= 0) return rc;
    if ((rc = swctl_require(&cmd, "model")) != 0 || (rc = swctl_require(&cmd, "data")) != 0)
        return rc;
    sw_gpt2_set_threads(threads);

    sw_diag d = {{0}};
    sw_gpt2 *m = NULL;
    sw_tokenizer *tok = NULL;
    sw_dataset *ds = NULL;
    json_t *root = NULL;
    double t0 = model_now();
    if ((rc = model_check_dir(model_dir)) != 0) goto done;
    if ((rc = sw_gpt2_load(model_dir, &m, &d)) != 0 ||
        (rc = sw_tokenizer_load_dir(model_dir, &tok, &d)) != 0 ||
        (rc = sw_dataset_load(data, tok, m->cfg.n_positions, &ds, &d)) != 0) {
        rc = swctl_fail_diag(&d, rc);
        goto done;
    }
    sw_eval_opts eo;
    sw_eval_opts_init(&eo);
    eo.batch_size = batch;
    eo.accuracy = !no_acc;
    if (isatty(STDERR_FILENO)) {
        eo.progress = model_eval_progress;
        eo.progress_ctx = NULL;
    }
    sw_eval_result r;
    double t1 = model_now();
    if ((rc = sw_eval_run(m, ds, &eo, &r, &d)) != 0) {
        rc = swctl_fail_diag(&d, rc);
        goto done;
    }
    double t2 = model_now();

    if (as_json) {
        root =
            json_pack("{s:s, s:s, s:f, s:f, s:I, s:I, s:I, s:I, s:f, s:f, s:i}", "model", model_dir,
                      "data", data, "loss", r.loss, "perplexity", r.perplexity, "tokens",
                      (json_int_t)r.tokens, "records", (json_int_t)r.records, "dropped",
                      (json_int_t)ds->n_dropped, "truncated", (json_int_t)ds->n_truncated,
                      "seconds", t2 - t1, "load_seconds", t1 - t0, "threads", threads);
        if (root == NULL) {
            rc = swctl_fail("%s: cannot build the JSON output", data);
            goto done;
        }
        if (r.has_accuracy) {
            json_object_set_new(root, "accuracy", json_real(r.accuracy));
            json_object_set_new(root, "correct", json_integer((json_int_t)r.correct));
            json_object_set_new(root, "choices", json_integer((json_int_t)r.choices));
        }
        char *text = json_dumps(root, JSON_INDENT(2) | JSON_REAL_PRECISION(17));
        if (text == NULL) {
            rc = swctl_fail("%s: cannot build the JSON output", data);
            goto done;
        }
        printf("%s\n", text);
        free(text);
    } else {
        printf("loss        %.6f nats/token\n", r.loss);
        printf("perplexity  %.4f\n", r.perplexity);
        printf("tokens      %" PRId64 "\n", r.tokens);
        printf("records     %zu", r.records);
        if (ds->n_dropped > 0 || ds->n_truncated > 0)
            printf(" (%zu dropped with nothing to score, %zu truncated)", ds->n_dropped,
                   ds->n_truncated);
        printf("\n");
        if (r.has_accuracy)
            printf("accuracy    %.4f (%zu/%zu, %zu choices)\n", r.accuracy, r.correct, r.records,
                   r.choices);
        printf("seconds     %.3f (+%.3f loading)\n", t2 - t1, t1 - t0);
    }
    rc = 0;
done:
    json_decref(root);
    sw_dataset_free(ds);
    sw_tokenizer_free(tok);
    sw_gpt2_free(m);
    return rc;
}

/* -------------------------------------------------------------- generate */

static const char model_generate_usage[] =
    "Usage: swarmctl model generate --model DIR --prompt TEXT [-n N] [--temperature T]\n"
    "                               [--top-k K] [--seed S] [--threads N] [--stats]\n"
    "\n"
    "Prints a continuation of TEXT (not TEXT itself), token by token as it is chosen,\n"
    "then a newline.  Stops after N tokens or at <|endoftext|> (not printed).  An empty\n"
    "prompt starts from <|endoftext|>.  When the text outgrows the model's context, the\n"
    "last ctx tokens are kept.\n"
    "\n"
    "Temperature 0 is greedy (the most likely token each step).  Otherwise tokens are\n"
    "drawn from the softmax of logits/T over the K most likely, with a random stream\n"
    "keyed by the seed: the same options always print the same text.\n"
    "\n"
    "Options:\n"
    "  --model DIR        the model directory (with its tokenizer)\n"
    "  --prompt TEXT      the text to continue\n"
    "  -n, --tokens N     tokens to generate at most (0..1048576, default 40)\n"
    "  --temperature T    0..100 (default 0.8)\n"
    "  --top-k K          sample among the K most likely tokens; 0: all (default 40)\n"
    "  --seed S           sampling seed, an unsigned 64-bit integer (default 0)\n"
    "  --threads N        OpenBLAS threads (default: the number of online CPUs)\n"
    "  --stats            print token counts and speed to stderr\n"
    "  -h, --help         show this help\n";

typedef struct model_gen_ctx {
    const sw_tokenizer *tok;
    int rc;
} model_gen_ctx;

static int model_gen_emit(int32_t id, void *user)
{
    model_gen_ctx *g = user;
    char *text = NULL;
    size_t len = 0;
    /* Byte-level BPE: each id's bytes stand alone, so ids can be printed one by one. */
    int rc = sw_tokenizer_decode(g->tok, &id, 1, &text, &len);
    if (rc != 0) {
        g->rc = swctl_fail("generate: id %d has no text in the tokenizer", (int)id);
        return 1;
    }
    if (swctl_write_stdout(text, len) != 0 || fflush(stdout) != 0) {
        g->rc = SWCTL_EXIT_FAIL;
        free(text);
        return 1;
    }
    free(text);
    return 0;
}

static int model_generate(const char *path, int argc, char **argv)
{
    const char *model_dir = NULL, *prompt = NULL;
    int n_tokens = 40, top_k = 40, threads = swctl_default_threads();
    double temperature = 0.8;
    uint64_t seed = 0;
    bool stats = false;
    swctl_opt opts[] = {
        {"model", 0, SWCTL_OPT_STR, &model_dir, 0, 0, false},
        {"prompt", 0, SWCTL_OPT_STR, &prompt, 0, 0, false},
        {"tokens", 'n', SWCTL_OPT_INT, &n_tokens, 0, SW_GENERATE_MAX_NEW, false},
        {"temperature", 0, SWCTL_OPT_DOUBLE, &temperature, 0, 100, false},
        {"top-k", 0, SWCTL_OPT_INT, &top_k, 0, SW_GPT2_MAX_VOCAB, false},
        {"seed", 0, SWCTL_OPT_U64, &seed, 0, 0, false},
        {"threads", 0, SWCTL_OPT_INT, &threads, 1, 1024, false},
        {"stats", 0, SWCTL_OPT_FLAG, &stats, 0, 0, false},
    };
    swctl_cmd cmd = {.path = path,
                     .usage = model_generate_usage,
                     .opts = opts,
                     .n_opts = MODEL_OPT_END(opts),
                     .min_pos = 0,
                     .max_pos = 0,
                     .pos_names = NULL};
    int rc = swctl_parse(&cmd, argc, argv);
    if (rc >= 0) return rc;
    if ((rc = swctl_require(&cmd, "model")) != 0 || (rc = swctl_require(&cmd, "prompt")) != 0)
        return rc;
    sw_gpt2_set_threads(threads);

    sw_diag d = {{0}};
    sw_gpt2 *m = NULL;
    sw_tokenizer *tok = NULL;
    sw_tokens ids = {0};
    if ((rc = model_check_dir(model_dir)) != 0) goto done;
    if ((rc = sw_gpt2_load(model_dir, &m, &d)) != 0 ||
        (rc = sw_tokenizer_load_dir(model_dir, &tok, &d)) != 0) {
        rc = swctl_fail_diag(&d, rc);
        goto done;
    }
    if (sw_tokenizer_vocab_size(tok) > m->cfg.vocab_size) {
        rc = swctl_fail("%s: the tokenizer has %d ids but the model only %d", model_dir,
                        (int)sw_tokenizer_vocab_size(tok), m->cfg.vocab_size);
        goto done;
    }
    if ((rc = sw_tokenizer_encode(tok, prompt, strlen(prompt), &ids)) != 0) {
        rc = swctl_fail("--prompt: tokenizing failed: %s", sw_strerror(rc));
        goto done;
    }
    sw_generate_opts go;
    sw_generate_opts_default(&go);
    go.max_new_tokens = n_tokens;
    go.temperature = (float)temperature;
    go.top_k = top_k;
    go.seed = seed;
    go.stop_id = sw_tokenizer_eos(tok);
    if (ids.n == 0 && go.stop_id < 0) {
        rc = swctl_fail("--prompt: empty, and %s's tokenizer has no <|endoftext|> to start from",
                        model_dir);
        goto done;
    }
    model_gen_ctx g = {tok, 0};
    sw_generate_result res;
    double t0 = model_now();
    rc = sw_generate(m, ids.ids, ids.n, &go, NULL, model_gen_emit, &g, &res, &d);
    double t1 = model_now();
    if (rc != 0) {
        rc = swctl_fail_diag(&d, rc);
        goto done;
    }
    if (g.rc != 0) {
        rc = g.rc;
        goto done;
    }
    printf("\n");
    if (stats) {
        double s = t1 - t0;
        fprintf(stderr,
                "generate: prompt %zu tokens, generated %zu%s in %.3f s (%.1f tokens/s, "
                "%.2f ms per forward)\n",
                ids.n, res.n, res.hit_stop ? " (stopped at <|endoftext|>)" : "", s,
                s > 0 ? (double)res.n / s : 0.0,
                res.forwards > 0 ? 1e3 * s / (double)res.forwards : 0.0);
    }
    rc = 0;
done:
    sw_tokens_fini(&ids);
    sw_tokenizer_free(tok);
    sw_gpt2_free(m);
    return rc;
}

/* --------------------------------------------------------------- convert */

static const char model_convert_usage[] =
    "Usage: swarmctl model convert SRC_DIR OUT_DIR [--dtype f32|f16] [--force]\n"
    "\n"
    "Loads any supported Hugging Face GPT-2 directory (F32, F16 or BF16 tensors, with\n"
    "or without the \"transformer.\" prefix) and writes it to OUT_DIR in canonical form:\n"
    "config.json, and model.safetensors with canonical names and order in the chosen\n"
    "dtype.  Copies the tokenizer files (vocab.json, merges.txt, tokenizer.json,\n"
    "tokenizer_config.json, special_tokens_map.json) and LICENSE* and README* files.\n"
    "Prints the digest of the written model.\n"
    "\n"
    "Options:\n"
    "  --dtype T   f32 (default, lossless) or f16 (rounded to nearest even)\n"
    "  --force     replace a model already in OUT_DIR\n"
    "  -h, --help  show this help\n";

static bool model_aux_name(const char *name)
{
    static const char *const exact[] = {"vocab.json", "merges.txt", "tokenizer.json",
                                        "tokenizer_config.json", "special_tokens_map.json"};
    for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++)
        if (strcmp(name, exact[i]) == 0) return true;
    return strncmp(name, "LICENSE", 7) == 0 || strncmp(name, "README", 6) == 0;
}

static bool model_same_dir(const char *a, const char *b)
{
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

static int model_convert(const char *path, int argc, char **argv)
{
    const char *dtype_s = "f32";
    bool force = false;
    swctl_opt opts[] = {
        {"dtype", 0, SWCTL_OPT_STR, &dtype_s, 0, 0, false},
        {"force", 0, SWCTL_OPT_FLAG, &force, 0, 0, false},
    };
    swctl_cmd cmd = {.path = path,
                     .usage = model_convert_usage,
                     .opts = opts,
                     .n_opts = MODEL_OPT_END(opts),
                     .min_pos = 2,
                     .max_pos = 2,
                     .pos_names = "SRC_DIR OUT_DIR"};
    int rc = swctl_parse(&cmd, argc, argv);
    if (rc >= 0) return rc;
    sw_dtype dtype = SW_DTYPE_F32;
    if ((rc = model_parse_dtype(path, dtype_s, &dtype)) != 0) return rc;
    const char *src = cmd.pos[0], *out = cmd.pos[1];

    sw_diag d = {{0}};
    sw_gpt2 *m = NULL;
    DIR *dh = NULL;
    if ((rc = model_check_dir(src)) != 0) goto done;
    if ((rc = sw_gpt2_load(src, &m, &d)) != 0) {
        rc = swctl_fail_diag(&d, rc);
        goto done;
    }
    if ((rc = model_check_overwrite(out, force)) != 0) goto done;
    if ((rc = swctl_mkdir_p(out, &d)) != 0 || (rc = sw_gpt2_save(m, out, dtype, &d)) != 0) {
        rc = swctl_fail_diag(&d, rc);
        goto done;
    }
    sw_gpt2_config cfg = m->cfg;
    sw_gpt2_free(m);
    m = NULL;

    size_t copied = 0;
    if (!model_same_dir(src, out)) {
        dh = opendir(src);
        if (dh == NULL) {
            rc = swctl_fail("%s: %s", src, strerror(errno));
            goto done;
        }
        struct dirent *e;
        while ((e = readdir(dh)) != NULL) {
            if (!model_aux_name(e->d_name) || !model_is_file(src, e->d_name)) continue;
            char from[MODEL_PATH_MAX], to[MODEL_PATH_MAX];
            if ((rc = model_join(from, src, e->d_name)) != 0 ||
                (rc = model_join(to, out, e->d_name)) != 0)
                goto done;
            if ((rc = sw_file_copy(from, to, MODEL_AUX_MAX_BYTES, &d)) != 0) {
                rc = swctl_fail_diag(&d, rc);
                goto done;
            }
            copied++;
        }
    }
    char hex[2 * SW_GPT2_DIGEST_BYTES + 1];
    if ((rc = model_digest_dir(out, hex)) != 0) goto done;
    char nbuf[40];
    printf("wrote %s: %d layers, %d heads, embd %d, ctx %d, vocab %d, %s parameters (%s), "
           "%zu other files copied\n",
           out, cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.n_positions, cfg.vocab_size,
           model_fmt_count(sw_gpt2_config_param_count(&cfg), nbuf, sizeof nbuf),
           sw_dtype_name(dtype), copied);
    printf("digest %s\n", hex);
    rc = 0;
done:
    if (dh != NULL) closedir(dh);
    sw_gpt2_free(m);
    return rc;
}

/* ----------------------------------------------------------------- group */

const swctl_verb swctl_model_verbs[] = {
    {"init", model_init, "write a randomly initialised GPT-2 to a directory"},
    {"inspect", model_inspect, "show a model's architecture, tensors and digest"},
    {"tokenize", model_tokenize, "text on stdin to token ids, or back with --decode"},
    {"eval", model_eval, "loss, perplexity and accuracy on a JSONL file"},
    {"generate", model_generate, "continue a prompt"},
    {"convert", model_convert, "rewrite a model in canonical layout and a chosen dtype"},
    {"export", swctl_model_export, "write a node's current model from its state directory"},
};
const size_t swctl_model_verb_count = sizeof swctl_model_verbs / sizeof swctl_model_verbs[0];

static const char model_intro[] = "Usage: swarmctl model COMMAND [OPTIONS]\n"
                                  "\n"
                                  "Offline tools over a model directory in Hugging Face layout\n"
                                  "(config.json, model.safetensors, vocab.json + merges.txt).\n";

int swctl_model_main(const char *path, int argc, char **argv)
{
    return swctl_group_run(path, model_intro, swctl_model_verbs, swctl_model_verb_count, argc,
                           argv);
}
