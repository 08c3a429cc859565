/*
 * checkpoint: streaming, checksummed snapshots of sw_fixed (checkpoint.h,
 * layout in docs/state.md).
 *
 * The loader checks the header's claims against each other and against the
 * file size BEFORE allocating, so a hostile or truncated file costs at most
 * the memory its own size implies (and never more than the model the caller
 * expects when cfg is given).
 */
#include "checkpoint.h"
#include "fileio.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CKPT_MAGIC "SWCKPT01"
#define CKPT_HEADER_BYTES 160
#define CKPT_SUM_BYTES 32
#define CKPT_CHUNK (1u << 20)
#define CKPT_NAME_DIGITS 20
/* "ckpt-" + 20 digits + ".swck" */
#define CKPT_NAME_LEN (5 + CKPT_NAME_DIGITS + 5)
#define CKPT_VV_ORIGIN_BYTES (SW_ID_BYTES + 16)
/* Exponents sw_fixed_exponent can produce. */
#define CKPT_EXP_MIN (-36)
#define CKPT_EXP_MAX 31

static void ckpt_put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t ckpt_get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void ckpt_put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t ckpt_get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static void
ckpt_warn(sw_warn_fn warn, void *ctx, const char *fmt, ...)
{
    if (warn == NULL) return;
    char msg[SW_DIAG_MAX + 256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    warn(ctx, msg);
}

void sw_checkpoint_meta_fini(sw_checkpoint_meta *m)
{
    if (m == NULL) return;
    sw_vv_fini(&m->vv);
}

/* Size of the vv section, or UINT64_MAX on overflow. */
static uint64_t ckpt_vv_bytes(const sw_vv *vv)
{
    uint64_t n = 0;
    for (size_t i = 0; i < vv->n; i++) {
        uint64_t add = CKPT_VV_ORIGIN_BYTES + 8 * (uint64_t)vv->o[i].n_extra;
        if (n > UINT64_MAX - add) return UINT64_MAX;
        n += add;
    }
    return n;
}

static size_t ckpt_exp_bytes(size_t n_tensors)
{
    return (n_tensors + 7) / 8 * 8;
}

static void ckpt_header(uint8_t h[CKPT_HEADER_BYTES], const uint8_t run_id[SW_ID_BYTES],
                        const sw_fixed *f, uint64_t ledger_count, const sw_vv *vv,
                        uint64_t vv_bytes, const uint8_t digest[SW_FIXED_DIGEST_BYTES])
{
    memset(h, 0, CKPT_HEADER_BYTES);
    memcpy(h, CKPT_MAGIC, 8);
    ckpt_put32(h + 8, SW_CHECKPOINT_VERSION);
    ckpt_put32(h + 12, CKPT_HEADER_BYTES);
    memcpy(h + 16, run_id, SW_ID_BYTES);
    ckpt_put32(h + 48, (uint32_t)f->cfg.n_layer);
    ckpt_put32(h + 52, (uint32_t)f->cfg.n_head);
    ckpt_put32(h + 56, (uint32_t)f->cfg.n_embd);
    ckpt_put32(h + 60, (uint32_t)f->cfg.n_positions);
    ckpt_put32(h + 64, (uint32_t)f->cfg.vocab_size);
    uint32_t eps_bits;
    memcpy(&eps_bits, &f->cfg.layer_norm_epsilon, 4);
    ckpt_put32(h + 68, eps_bits);
    ckpt_put32(h + 72, f->cfg.tie_word_embeddings ? 1 : 0);
    ckpt_put32(h + 76, (uint32_t)f->n_tensors);
    ckpt_put64(h + 80, (uint64_t)f->n_params);
    ckpt_put64(h + 88, ledger_count);
    ckpt_put64(h + 96, f->saturations);
    ckpt_put64(h + 104, (uint64_t)vv->n);
    ckpt_put64(h + 112, vv_bytes);
    memcpy(h + 120, digest, SW_FIXED_DIGEST_BYTES);
    /* 152..160: the adapters (all zero without: the bytes were reserved, zero,
     * before adapters existed, so older checkpoints read as plain models) */
    if (f->cfg.lora_rank > 0) {
        uint32_t alpha_bits;
        memcpy(&alpha_bits, &f->cfg.lora_alpha, 4);
        ckpt_put32(h + 152, (uint32_t)f->cfg.lora_rank | f->cfg.lora_targets << 16);
        ckpt_put32(h + 156, alpha_bits);
    }
}

/* ---- writing ---- */

typedef struct ckpt_writer {
    int fd;
    crypto_generichash_state hash;
    int err;
} ckpt_writer;

static void ckpt_write(ckpt_writer *w, const void *data, size_t n)
{
    if (w->err) return;
    crypto_generichash_update(&w->hash, data, n);
    const uint8_t *p = data;
    while (n > 0) {
        ssize_t r = write(w->fd, p, n);
        if (r < 0) {
            if (errno == EINTR) continue;
            w->err = sw_error_from_errno(errno);
            return;
        }
        p += r;
        n -= (size_t)r;
    }
}

static int ckpt_prune(const char *dir, int keep, sw_warn_fn warn, void *warn_ctx)
{
    char **paths = NULL;
    size_t n = 0;
    sw_diag d;
    int rc = sw_checkpoint_list(dir, &paths, &n, &d);
    if (rc != 0) {
        ckpt_warn(warn, warn_ctx, "pruning checkpoints: %s", d.msg);
        return rc;
    }
    bool removed = false;
    for (size_t i = (size_t)keep; i < n; i++) {
        if (unlink(paths[i]) != 0)
            ckpt_warn(warn, warn_ctx, "%s: cannot remove old checkpoint: %s", paths[i],
                      strerror(errno));
        else
            removed = true;
    }
    sw_checkpoint_list_free(paths, n);
    if (removed) sw_fsync_dir(dir);
    return 0;
}

int sw_checkpoint_write(const char *dir, const uint8_t run_id[SW_ID_BYTES], const sw_fixed *f,
                        uint64_t ledger_count, const sw_vv *vv, int keep, char *path_out,
                        sw_warn_fn warn, void *warn_ctx, sw_diag *diag)
{
    SW_ASSERT(keep >= 1);
    SW_ASSERT(sodium_init() >= 0);
    char path[SW_CHECKPOINT_PATH_MAX], tmp[SW_CHECKPOINT_PATH_MAX + 32];
    if (snprintf(path, sizeof path, "%s/ckpt-%0*" PRIu64 ".swck", dir, CKPT_NAME_DIGITS,
                 ledger_count) >= (int)sizeof path)
        return sw_diag_set(diag, SW_ETOOBIG, "%s: path too long", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    if (sw_vv_total(vv) != ledger_count)
        return sw_diag_set(diag, SW_EINVAL,
                           "%s: the version vector holds %" PRIu64 " updates, not %" PRIu64, path,
                           sw_vv_total(vv), ledger_count);
    uint64_t vv_bytes = ckpt_vv_bytes(vv);
    if (vv_bytes > (UINT64_C(1) << 40))
        return sw_diag_set(diag, SW_ETOOBIG, "%s: version vector too large", path);

    uint8_t digest[SW_FIXED_DIGEST_BYTES];
    sw_fixed_digest(f, digest);
    uint8_t h[CKPT_HEADER_BYTES];
    ckpt_header(h, run_id, f, ledger_count, vv, vv_bytes, digest);

    uint8_t *buf = malloc(CKPT_CHUNK);
    if (buf == NULL) return sw_diag_set(diag, SW_ENOMEM, "%s: out of memory", path);
    unlink(tmp); /* a leftover of an earlier process with our pid */
    ckpt_writer w = {.fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644)};
    if (w.fd < 0) {
        int err = errno;
        free(buf);
        return sw_diag_set(diag, sw_error_from_errno(err), "%s: %s", tmp, strerror(err));
    }
    crypto_generichash_init(&w.hash, NULL, 0, CKPT_SUM_BYTES);
    ckpt_write(&w, h, sizeof h);

    uint8_t exps[8] = {0};
    size_t exp_bytes = ckpt_exp_bytes(f->n_tensors);
    for (size_t i = 0; i < exp_bytes; i += 8) {
        for (size_t j = 0; j < 8; j++)
            exps[j] = i + j < f->n_tensors ? (uint8_t)f->exp[i + j] : 0;
        ckpt_write(&w, exps, 8);
    }

    for (size_t i = 0; i < vv->n; i++) {
        uint8_t o[CKPT_VV_ORIGIN_BYTES];
        memcpy(o, vv->o[i].origin, SW_ID_BYTES);
        ckpt_put64(o + 32, vv->o[i].prefix);
        ckpt_put64(o + 40, (uint64_t)vv->o[i].n_extra);
        ckpt_write(&w, o, sizeof o);
        for (size_t j = 0; j < vv->o[i].n_extra;) {
            size_t k = 0;
            for (; k < CKPT_CHUNK / 8 && j < vv->o[i].n_extra; k++, j++)
                ckpt_put64(buf + 8 * k, vv->o[i].extra[j]);
            ckpt_write(&w, buf, 8 * k);
        }
    }

    for (size_t i = 0; i < f->n_params;) {
        size_t k = 0;
        for (; k < CKPT_CHUNK / 4 && i < f->n_params; k++, i++)
            ckpt_put32(buf + 4 * k, (uint32_t)f->w[i]);
        ckpt_write(&w, buf, 4 * k);
    }

    uint8_t sum[CKPT_SUM_BYTES];
    crypto_generichash_final(&w.hash, sum, sizeof sum);
    if (!w.err) { /* the trailer is not part of its own checksum */
        const uint8_t *p = sum;
        size_t n = sizeof sum;
        while (n > 0) {
            ssize_t r = write(w.fd, p, n);
            if (r < 0) {
                if (errno == EINTR) continue;
                w.err = sw_error_from_errno(errno);
                break;
            }
            p += r;
            n -= (size_t)r;
        }
    }
    free(buf);
    int rc = w.err;
    if (rc == 0 && fsync(w.fd) != 0) rc = sw_error_from_errno(errno);
    if (close(w.fd) != 0 && rc == 0) rc = sw_error_from_errno(errno);
    if (rc == 0 && rename(tmp, path) != 0) rc = sw_error_from_errno(errno);
    if (rc != 0) {
        unlink(tmp);
        return sw_diag_set(diag, rc, "%s: writing checkpoint: %s", tmp, sw_strerror(rc));
    }
    rc = sw_fsync_dir(dir);
    if (rc != 0)
        return sw_diag_set(diag, rc, "%s: fsync of the directory: %s", dir, sw_strerror(rc));
    /* Durable now: only from here may older checkpoints go. */
    ckpt_prune(dir, keep, warn, warn_ctx);
    if (path_out != NULL) snprintf(path_out, SW_CHECKPOINT_PATH_MAX, "%s", path);
    return 0;
}

/* ---- reading ---- */

typedef struct ckpt_reader {
    int fd;
    const char *path;
    crypto_generichash_state hash;
} ckpt_reader;

static int ckpt_read(ckpt_reader *r, void *data, size_t n, bool hash, sw_diag *diag)
{
    uint8_t *p = data;
    size_t left = n;
    while (left > 0) {
        ssize_t got = read(r->fd, p, left);
        if (got < 0) {
            if (errno == EINTR) continue;
            int err = errno;
            return sw_diag_set(diag, sw_error_from_errno(err), "%s: %s", r->path, strerror(err));
        }
        if (got == 0)
            return sw_diag_set(diag, SW_ETRUNCATED, "%s: file ends early (truncated)", r->path);
        p += got;
        left -= (size_t)got;
    }
    if (hash) crypto_generichash_update(&r->hash, data, n);
    return 0;
}

int sw_checkpoint_load(const char *path, const uint8_t run_id[SW_ID_BYTES],
                       const sw_gpt2_config *cfg, sw_fixed **out, sw_checkpoint_meta *meta,
                       sw_diag *diag)
{
    SW_ASSERT(sodium_init() >= 0);
    int rc;
    sw_fixed *f = NULL;
    uint8_t *buf = NULL;
    sw_vv vv = {0, NULL};
    ckpt_reader r = {.fd = open(path, O_RDONLY | O_CLOEXEC), .path = path};
    if (r.fd < 0) {
        int err = errno;
        return sw_diag_set(diag, sw_error_from_errno(err), "%s: %s", path, strerror(err));
    }
    crypto_generichash_init(&r.hash, NULL, 0, CKPT_SUM_BYTES);
    struct stat st;
    if (fstat(r.fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        rc = sw_diag_set(diag, SW_EINVAL, "%s: not a regular file", path);
        goto fail;
    }
    const uint64_t file_size = (uint64_t)st.st_size;
    uint8_t h[CKPT_HEADER_BYTES];
    if (file_size < CKPT_HEADER_BYTES + CKPT_SUM_BYTES) {
        rc = sw_diag_set(diag, SW_ETRUNCATED, "%s: %" PRIu64 " bytes, too short for a checkpoint",
                         path, file_size);
        goto fail;
    }
    if ((rc = ckpt_read(&r, h, sizeof h, true, diag)) != 0) goto fail;
    if (memcmp(h, CKPT_MAGIC, 8) != 0) {
        rc = sw_diag_set(diag, SW_EFORMAT, "%s: not a swarmtune checkpoint (bad magic)", path);
        goto fail;
    }
    if (ckpt_get32(h + 8) != SW_CHECKPOINT_VERSION || ckpt_get32(h + 12) != CKPT_HEADER_BYTES) {
        rc = sw_diag_set(diag, SW_EUNSUPPORTED, "%s: checkpoint version %" PRIu32 " not supported",
                         path, ckpt_get32(h + 8));
        goto fail;
    }
    if (run_id != NULL && memcmp(h + 16, run_id, SW_ID_BYTES) != 0) {
        rc = sw_diag_set(diag, SW_EMISMATCH, "%s: checkpoint of another run", path);
        goto fail;
    }
    sw_gpt2_config c;
    memset(&c, 0, sizeof c);
    uint32_t v32[5];
    for (int i = 0; i < 5; i++)
        v32[i] = ckpt_get32(h + 48 + 4 * i);
    for (int i = 0; i < 5; i++) {
        if (v32[i] > 0x7fffffff) {
            rc = sw_diag_set(diag, SW_EFORMAT, "%s: architecture field out of range", path);
            goto fail;
        }
    }
    c.n_layer = (int)v32[0];
    c.n_head = (int)v32[1];
    c.n_embd = (int)v32[2];
    c.n_positions = (int)v32[3];
    c.vocab_size = (int)v32[4];
    uint32_t eps_bits = ckpt_get32(h + 68);
    memcpy(&c.layer_norm_epsilon, &eps_bits, 4);
    uint32_t tie = ckpt_get32(h + 72);
    if (tie > 1) {
        rc = sw_diag_set(diag, SW_EFORMAT, "%s: bad tie_word_embeddings flag", path);
        goto fail;
    }
    c.tie_word_embeddings = tie == 1;
    const uint32_t lora = ckpt_get32(h + 152), lora_alpha = ckpt_get32(h + 156);
    c.lora_rank = (int)(lora & 0xffffu);
    c.lora_targets = lora >> 16;
    memcpy(&c.lora_alpha, &lora_alpha, 4);
    if (c.lora_rank == 0 && lora_alpha != 0) {
        rc = sw_diag_set(diag, SW_EFORMAT, "%s: bad adapter fields", path);
        goto fail;
    }
    if ((rc = sw_gpt2_config_validate(&c, path, diag)) != 0) goto fail;
    if (cfg != NULL && !sw_gpt2_config_equal(&c, cfg)) {
        rc = sw_diag_set(diag, SW_EMISMATCH, "%s: checkpoint of another architecture", path);
        goto fail;
    }
    const uint64_t n_tensors = ckpt_get32(h + 76), n_params = ckpt_get64(h + 80);
    const uint64_t ledger_count = ckpt_get64(h + 88), saturations = ckpt_get64(h + 96);
    const uint64_t n_origins = ckpt_get64(h + 104), vv_bytes = ckpt_get64(h + 112);
    if (n_tensors != sw_gpt2_tensor_count(&c) || n_params != sw_gpt2_config_param_count(&c)) {
        rc = sw_diag_set(diag, SW_EFORMAT,
                         "%s: tensor or parameter count disagrees with the "
                         "architecture",
                         path);
        goto fail;
    }
    const uint64_t exp_bytes = ckpt_exp_bytes((size_t)n_tensors);
    /* Everything the header claims must add up to the file size exactly. */
    if (vv_bytes > file_size || n_origins > vv_bytes / CKPT_VV_ORIGIN_BYTES ||
        CKPT_HEADER_BYTES + exp_bytes + vv_bytes + 4 * n_params + CKPT_SUM_BYTES != file_size) {
        rc = sw_diag_set(diag, SW_ETRUNCATED,
                         "%s: %" PRIu64 " bytes, but its header describes %" PRIu64
                         " (truncated or corrupt)",
                         path, file_size,
                         vv_bytes > file_size ? UINT64_MAX
                                              : CKPT_HEADER_BYTES + exp_bytes + vv_bytes +
                                                    4 * n_params + CKPT_SUM_BYTES);
        goto fail;
    }

    /* Exponents, then a template for sw_fixed_alloc_like. */
    int8_t exps[4 + 12 * SW_GPT2_MAX_LAYERS + 1 + 8];
    if ((rc = ckpt_read(&r, exps, (size_t)exp_bytes, true, diag)) != 0) goto fail;
    for (uint64_t t = 0; t < n_tensors; t++) {
        if (exps[t] < CKPT_EXP_MIN || exps[t] > CKPT_EXP_MAX) {
            rc = sw_diag_set(diag, SW_EFORMAT, "%s: tensor %" PRIu64 ": exponent %d out of range",
                             path, t, exps[t]);
            goto fail;
        }
    }

    buf = malloc(CKPT_CHUNK);
    if (buf == NULL) {
        rc = sw_diag_set(diag, SW_ENOMEM, "%s: out of memory", path);
        goto fail;
    }
    /* Version vector: bounded by vv_bytes, which is bounded by the file. */
    if (n_origins > 0) {
        vv.o = calloc((size_t)n_origins, sizeof(*vv.o));
        if (vv.o == NULL) {
            rc = sw_diag_set(diag, SW_ENOMEM, "%s: out of memory", path);
            goto fail;
        }
    }
    uint64_t vv_left = vv_bytes;
    for (uint64_t i = 0; i < n_origins; i++) {
        uint8_t o[CKPT_VV_ORIGIN_BYTES];
        if (vv_left < sizeof o) {
            rc = sw_diag_set(diag, SW_EFORMAT, "%s: version vector overruns its section", path);
            goto fail;
        }
        if ((rc = ckpt_read(&r, o, sizeof o, true, diag)) != 0) goto fail;
        vv_left -= sizeof o;
        sw_vv_origin *e = &vv.o[vv.n++];
        memcpy(e->origin, o, SW_ID_BYTES);
        e->prefix = ckpt_get64(o + 32);
        uint64_t n_extra = ckpt_get64(o + 40);
        if (n_extra > vv_left / 8 ||
            (i > 0 && memcmp(vv.o[i - 1].origin, e->origin, SW_ID_BYTES) >= 0)) {
            rc = sw_diag_set(diag, SW_EFORMAT, "%s: version vector entry %" PRIu64 " is invalid",
                             path, i);
            goto fail;
        }
        if (n_extra > 0) {
            e->extra = malloc((size_t)n_extra * sizeof(uint64_t));
            if (e->extra == NULL) {
                rc = sw_diag_set(diag, SW_ENOMEM, "%s: out of memory", path);
                goto fail;
            }
            e->n_extra = (size_t)n_extra;
            for (uint64_t j = 0; j < n_extra;) {
                size_t k = n_extra - j < CKPT_CHUNK / 8 ? (size_t)(n_extra - j) : CKPT_CHUNK / 8;
                if ((rc = ckpt_read(&r, buf, 8 * k, true, diag)) != 0) goto fail;
                for (size_t q = 0; q < k; q++, j++) {
                    e->extra[j] = ckpt_get64(buf + 8 * q);
                    if (e->extra[j] <= (j ? e->extra[j - 1] : e->prefix)) {
                        rc = sw_diag_set(diag, SW_EFORMAT,
                                         "%s: version vector entry %" PRIu64
                                         ": extra steps not sorted above the prefix",
                                         path, i);
                        goto fail;
                    }
                }
            }
            vv_left -= 8 * n_extra;
        }
    }
    if (vv_left != 0) {
        rc = sw_diag_set(diag, SW_EFORMAT,
                         "%s: version vector section has %" PRIu64 " unused bytes", path, vv_left);
        goto fail;
    }
    if (sw_vv_total(&vv) != ledger_count) {
        rc = sw_diag_set(diag, SW_EFORMAT,
                         "%s: version vector holds %" PRIu64 " updates, the header says %" PRIu64,
                         path, sw_vv_total(&vv), ledger_count);
        goto fail;
    }

    sw_fixed tmpl;
    memset(&tmpl, 0, sizeof tmpl);
    tmpl.cfg = c;
    tmpl.n_tensors = (size_t)n_tensors;
    tmpl.exp = exps;
    if ((rc = sw_fixed_alloc_like(&tmpl, &f, diag)) != 0) goto fail;
    for (size_t i = 0; i < f->n_params;) {
        size_t k = f->n_params - i < CKPT_CHUNK / 4 ? f->n_params - i : CKPT_CHUNK / 4;
        if ((rc = ckpt_read(&r, buf, 4 * k, true, diag)) != 0) goto fail;
        for (size_t q = 0; q < k; q++, i++)
            f->w[i] = (int32_t)ckpt_get32(buf + 4 * q);
    }
    uint8_t want[CKPT_SUM_BYTES], got[CKPT_SUM_BYTES];
    if ((rc = ckpt_read(&r, want, sizeof want, false, diag)) != 0) goto fail;
    crypto_generichash_final(&r.hash, got, sizeof got);
    if (sodium_memcmp(want, got, sizeof got) != 0) {
        rc = sw_diag_set(diag, SW_EFORMAT, "%s: checksum mismatch (corrupt checkpoint)", path);
        goto fail;
    }
    uint8_t digest[SW_FIXED_DIGEST_BYTES];
    sw_fixed_digest(f, digest);
    if (memcmp(digest, h + 120, SW_FIXED_DIGEST_BYTES) != 0) {
        rc = sw_diag_set(diag, SW_EFORMAT, "%s: weights do not match the recorded digest", path);
        goto fail;
    }
    f->saturations = saturations;
    if (meta != NULL) {
        memset(meta, 0, sizeof *meta);
        snprintf(meta->path, sizeof meta->path, "%s", path);
        memcpy(meta->run_id, h + 16, SW_ID_BYTES);
        meta->cfg = c;
        meta->ledger_count = ledger_count;
        meta->saturations = saturations;
        memcpy(meta->digest, digest, sizeof digest);
        meta->vv = vv;
        vv.o = NULL;
        vv.n = 0;
    }
    *out = f;
    f = NULL;
    rc = 0;
fail:
    sw_vv_fini(&vv);
    sw_fixed_free(f);
    free(buf);
    close(r.fd);
    return rc;
}

/* ---- directory ---- */

/* ledger count from a "ckpt-<20 digits>.swck" name, or -1. */
static int ckpt_name_count(const char *name, uint64_t *count)
{
    if (strlen(name) != CKPT_NAME_LEN || strncmp(name, "ckpt-", 5) != 0 ||
        strcmp(name + 5 + CKPT_NAME_DIGITS, ".swck") != 0)
        return -1;
    uint64_t v = 0;
    for (int i = 0; i < CKPT_NAME_DIGITS; i++) {
        char ch = name[5 + i];
        if (ch < '0' || ch > '9') return -1;
        uint64_t d = (uint64_t)(ch - '0');
        if (v > (UINT64_MAX - d) / 10) return -1;
        v = v * 10 + d;
    }
    *count = v;
    return 0;
}

static int ckpt_cmp_desc(const void *a, const void *b)
{
    return -strcmp(*(char *const *)a, *(char *const *)b);
}

void sw_checkpoint_list_free(char **paths, size_t n)
{
    if (paths == NULL) return;
    for (size_t i = 0; i < n; i++)
        free(paths[i]);
    free(paths);
}

int sw_checkpoint_list(const char *dir, char ***paths, size_t *n, sw_diag *diag)
{
    *paths = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (d == NULL) {
        if (errno == ENOENT) return 0;
        int err = errno;
        return sw_diag_set(diag, sw_error_from_errno(err), "%s: %s", dir, strerror(err));
    }
    char **list = NULL;
    size_t len = 0, cap = 0;
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        uint64_t count;
        if (ckpt_name_count(e->d_name, &count) != 0) continue;
        if (len == cap) {
            size_t nc = cap ? 2 * cap : 8;
            char **p = realloc(list, nc * sizeof(*p));
            if (p == NULL) {
                rc = SW_ENOMEM;
                break;
            }
            list = p;
            cap = nc;
        }
        size_t plen = strlen(dir) + 1 + CKPT_NAME_LEN + 1;
        list[len] = malloc(plen);
        if (list[len] == NULL) {
            rc = SW_ENOMEM;
            break;
        }
        snprintf(list[len], plen, "%s/%s", dir, e->d_name);
        len++;
    }
    closedir(d);
    if (rc != 0) {
        sw_checkpoint_list_free(list, len);
        return sw_diag_set(diag, rc, "%s: out of memory listing checkpoints", dir);
    }
    /* Equal-length names with zero-padded counts: string order is age order. */
    if (len > 1) qsort(list, len, sizeof(*list), ckpt_cmp_desc);
    *paths = list;
    *n = len;
    return 0;
}

int sw_checkpoint_cleanup(const char *dir, sw_warn_fn warn, void *warn_ctx, sw_diag *diag)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        if (errno == ENOENT) return 0;
        int err = errno;
        return sw_diag_set(diag, sw_error_from_errno(err), "%s: %s", dir, strerror(err));
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, "ckpt-", 5) != 0 || strstr(e->d_name, ".tmp.") == NULL) continue;
        char p[SW_CHECKPOINT_PATH_MAX];
        if (snprintf(p, sizeof p, "%s/%s", dir, e->d_name) >= (int)sizeof p) continue;
        if (unlink(p) == 0)
            ckpt_warn(warn, warn_ctx,
                      "%s: removed an unfinished checkpoint (a crash during a "
                      "write)",
                      p);
        else
            ckpt_warn(warn, warn_ctx, "%s: cannot remove: %s", p, strerror(errno));
    }
    closedir(d);
    return 0;
}

int sw_checkpoint_load_newest(const char *dir, const uint8_t run_id[SW_ID_BYTES],
                              const sw_gpt2_config *cfg, uint64_t max_ledger_count, sw_fixed **out,
                              sw_checkpoint_meta *meta, sw_warn_fn warn, void *warn_ctx,
                              sw_diag *diag)
{
    *out = NULL;
    char **paths;
    size_t n;
    int rc = sw_checkpoint_list(dir, &paths, &n, diag);
    if (rc != 0) return rc;
    for (size_t i = 0; i < n; i++) {
        const char *name = strrchr(paths[i], '/') + 1;
        uint64_t count = 0;
        ckpt_name_count(name, &count);
        if (count > max_ledger_count) {
            ckpt_warn(warn, warn_ctx,
                      "%s: skipped: includes %" PRIu64
                      " ledger updates but the ledger holds %" PRIu64,
                      paths[i], count, max_ledger_count);
            continue;
        }
        sw_checkpoint_meta m;
        sw_fixed *f = NULL;
        sw_diag d;
        rc = sw_checkpoint_load(paths[i], run_id, cfg, &f, &m, &d);
        if (rc == 0 && m.ledger_count != count) {
            ckpt_warn(warn, warn_ctx, "%s: skipped: its header says %" PRIu64 " ledger updates",
                      paths[i], m.ledger_count);
            sw_fixed_free(f);
            sw_checkpoint_meta_fini(&m);
            continue;
        }
        if (rc != 0) {
            ckpt_warn(warn, warn_ctx, "skipped checkpoint: %s", d.msg);
            continue;
        }
        *out = f;
        if (meta != NULL)
            *meta = m;
        else
            sw_checkpoint_meta_fini(&m);
        sw_checkpoint_list_free(paths, n);
        return 0;
    }
    sw_checkpoint_list_free(paths, n);
    return sw_diag_set(diag, SW_ENOTFOUND, "%s: no valid checkpoint", dir);
}
