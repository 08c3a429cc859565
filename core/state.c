/*
 * state: the node's state directory (state.h, docs/state.md).
 *
 * Opening is idempotent and ordered so that a crash at any point of a first
 * start leaves a directory the next start completes: lock, identity, run
 * spec, base model path, ledger, checkpoints/.  Nothing here is ever
 * rewritten in place except by an atomic rename.
 */
#include "state.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"
#include "gpt2.h"
#include "lora.h"
#include "trainer.h"

#define IDENTITY_MAGIC "SWIDKEY1"
#define STATE_BASE_PATH_FILE "base_model.path"

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void
state_warn(const sw_state *s, const char *fmt, ...)
{
    if (s->warn == NULL) return;
    char msg[SW_DIAG_MAX + 256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    s->warn(s->warn_ctx, msg);
}

static int state_path(char *buf, const char *dir, const char *name, sw_diag *diag)
{
    if (sw_path_join(buf, SW_STATE_PATH_MAX, dir, name) != 0)
        return sw_diag_set(diag, SW_ETOOBIG, "%s: path too long", dir);
    return 0;
}

/* ---- identity ---- */

void sw_identity_fini(sw_identity *id)
{
    if (id == NULL) return;
    if (id->sk != NULL) sodium_free(id->sk);
    id->sk = NULL;
}

static int identity_load(const char *path, sw_identity *out, sw_diag *diag)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int err = errno;
        return sw_diag_set(diag, sw_error_from_errno(err), "%s: %s", path, strerror(err));
    }
    int rc = 0;
    unsigned char *file = NULL, *sk = NULL;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        rc = sw_diag_set(diag, SW_EINVAL, "%s: not a regular file", path);
        goto fail;
    }
    if ((st.st_mode & 077) != 0) {
        rc = sw_diag_set(diag, SW_EACCES,
                         "%s: identity key has mode %04o: group and others must have no access "
                         "(chmod 600 %s)",
                         path, (unsigned)(st.st_mode & 07777), path);
        goto fail;
    }
    if (st.st_size != SW_IDENTITY_FILE_BYTES) {
        rc = sw_diag_set(diag, SW_EFORMAT, "%s: identity key is %lld bytes, expected %d", path,
                         (long long)st.st_size, SW_IDENTITY_FILE_BYTES);
        goto fail;
    }
    file = sodium_malloc(SW_IDENTITY_FILE_BYTES);
    sk = sodium_malloc(crypto_sign_SECRETKEYBYTES);
    if (file == NULL || sk == NULL) {
        rc = sw_diag_set(diag, SW_ENOMEM, "%s: out of secure memory", path);
        goto fail;
    }
    size_t got = 0;
    while (got < SW_IDENTITY_FILE_BYTES) {
        ssize_t n = read(fd, file + got, SW_IDENTITY_FILE_BYTES - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            rc = sw_diag_set(diag, SW_ETRUNCATED, "%s: identity key is truncated", path);
            goto fail;
        }
        got += (size_t)n;
    }
    uint8_t pk[crypto_sign_PUBLICKEYBYTES];
    if (memcmp(file, IDENTITY_MAGIC, 8) != 0) {
        rc = sw_diag_set(diag, SW_EFORMAT, "%s: not a swarmtune identity key (bad magic)", path);
        goto fail;
    }
    crypto_sign_seed_keypair(pk, sk, file + 8);
    if (memcmp(pk, file + 40, SW_ID_BYTES) != 0) {
        rc = sw_diag_set(diag, SW_EFORMAT,
                         "%s: identity key is corrupt (the public key does not match the seed)",
                         path);
        goto fail;
    }
    memcpy(out->pk, pk, SW_ID_BYTES);
    out->sk = sk;
    sk = NULL;
fail:
    if (file) sodium_free(file);
    if (sk) sodium_free(sk);
    close(fd);
    return rc;
}

/* Only the public key (bytes 40..72), for read-only opens; false if unreadable. */
static bool identity_read_pk(const char *path, uint8_t pk[SW_ID_BYTES])
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    uint8_t head[8];
    bool ok = pread(fd, head, 8, 0) == 8 && memcmp(head, IDENTITY_MAGIC, 8) == 0 &&
              pread(fd, pk, SW_ID_BYTES, 40) == SW_ID_BYTES;
    close(fd);
    if (!ok) memset(pk, 0, SW_ID_BYTES);
    return ok;
}

/* Writes a new key to a temp file created 0600 and links it into place. */
static int identity_create(const char *path, bool *lost_race, sw_diag *diag)
{
    /* The seed lives in secure memory only (sodium_malloc: locked, wiped). */
    unsigned char *file = sodium_malloc(SW_IDENTITY_FILE_BYTES);
    unsigned char *sk = sodium_malloc(crypto_sign_SECRETKEYBYTES);
    int rc;
    if (file == NULL || sk == NULL) {
        rc = sw_diag_set(diag, SW_ENOMEM, "%s: out of secure memory", path);
    } else {
        memcpy(file, IDENTITY_MAGIC, 8);
        randombytes_buf(file + 8, 32);
        crypto_sign_seed_keypair(file + 40, sk, file + 8);
        /* link, not rename: never replace a key another process created first. */
        rc = sw_file_create_once(path, file, SW_IDENTITY_FILE_BYTES, 0600, lost_race, diag);
    }
    if (file) sodium_free(file);
    if (sk) sodium_free(sk);
    return rc;
}

int sw_identity_load_or_create(const char *path, bool create, sw_identity *out, bool *created,
                               sw_diag *diag)
{
    if (sodium_init() < 0) return sw_diag_set(diag, SW_EIO, "libsodium failed to initialise");
    memset(out, 0, sizeof *out);
    if (created) *created = false;
    struct stat st;
    if (stat(path, &st) != 0 && errno == ENOENT && create) {
        bool lost = false;
        int rc = identity_create(path, &lost, diag);
        if (rc != 0) return rc;
        if (created) *created = !lost;
    }
    return identity_load(path, out, diag);
}

/* ---- lock ---- */

static int state_lock(sw_state *s, sw_diag *diag)
{
    char path[SW_STATE_PATH_MAX];
    int rc = state_path(path, s->dir, "LOCK", diag);
    if (rc != 0) return rc;
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        int err = errno;
        return sw_diag_set(diag, sw_error_from_errno(err), "%s: %s", path, strerror(err));
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int err = errno;
        char pid[32] = "";
        ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
        if (n > 0) {
            pid[n] = '\0';
            pid[strcspn(pid, "\n")] = '\0';
        }
        close(fd);
        if (err == EWOULDBLOCK)
            return sw_diag_set(diag, SW_EEXIST,
                               "%s: state directory is in use by another process%s%s%s (lock "
                               "%s held)",
                               s->dir, pid[0] ? " (pid " : "", pid, pid[0] ? ")" : "", path);
        return sw_diag_set(diag, sw_error_from_errno(err), "%s: flock: %s", path, strerror(err));
    }
    /* The pid is informational (error messages); the flock is the lock. */
    char pid[32];
    int len = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)len, 0) != len) {
        /* not fatal: the lock is held */
    }
    s->lock_fd = fd;
    return 0;
}

/* ---- base model path ---- */

static int state_absolute(const char *path, char *out, sw_diag *diag)
{
    if (path[0] == '/') {
        if (snprintf(out, SW_STATE_PATH_MAX, "%s", path) >= SW_STATE_PATH_MAX)
            return sw_diag_set(diag, SW_ETOOBIG, "%s: path too long", path);
    } else {
        char cwd[SW_STATE_PATH_MAX];
        if (getcwd(cwd, sizeof cwd) == NULL)
            return sw_diag_set(diag, sw_error_from_errno(errno), "getcwd: %s", strerror(errno));
        const char *p = path;
        while (p[0] == '.' && p[1] == '/')
            p += 2;
        if (snprintf(out, SW_STATE_PATH_MAX, "%s/%s", cwd, p) >= SW_STATE_PATH_MAX)
            return sw_diag_set(diag, SW_ETOOBIG, "%s: path too long", path);
    }
    size_t n = strlen(out);
    while (n > 1 && out[n - 1] == '/')
        out[--n] = '\0';
    return 0;
}

static int state_base_path(sw_state *s, const char *given, sw_diag *diag)
{
    char file[SW_STATE_PATH_MAX];
    int rc = state_path(file, s->dir, STATE_BASE_PATH_FILE, diag);
    if (rc != 0) return rc;
    char stored[SW_STATE_PATH_MAX] = "";
    char *buf = NULL;
    size_t len = 0;
    sw_diag sub;
    rc = sw_file_read(file, SW_STATE_PATH_MAX, &buf, &len, &sub);
    if (rc == 0) {
        if (len == 0 || buf[len - 1] != '\n' || memchr(buf, '\0', len) != NULL ||
            memchr(buf, '\n', len) != buf + len - 1 || buf[0] != '/') {
            free(buf);
            return sw_diag_set(diag, SW_EFORMAT,
                               "%s: expected one absolute path followed by a newline", file);
        }
        memcpy(stored, buf, len - 1);
        stored[len - 1] = '\0';
        free(buf);
    } else if (rc != SW_ENOENT) {
        return sw_diag_set(diag, rc, "%s", sub.msg);
    }
    if (given == NULL) {
        snprintf(s->base_model_dir, sizeof s->base_model_dir, "%s", stored);
        return 0;
    }
    if ((rc = state_absolute(given, s->base_model_dir, diag)) != 0) return rc;
    if (s->readonly || strcmp(stored, s->base_model_dir) == 0) return 0;
    if (stored[0] != '\0')
        state_warn(s, "%s: base model path changes from %s to %s", file, stored, s->base_model_dir);
    char line[SW_STATE_PATH_MAX + 1];
    int n = snprintf(line, sizeof line, "%s\n", s->base_model_dir);
    if (n < 0 || n >= (int)sizeof line)
        return sw_diag_set(diag, SW_ETOOBIG, "%s: path too long", s->base_model_dir);
    return sw_file_write_atomic(file, line, (size_t)n, 0644, diag);
}

/* ---- run spec ---- */

static int state_runspec(sw_state *s, const sw_runspec *given, sw_diag *diag)
{
    char path[SW_STATE_PATH_MAX];
    int rc = state_path(path, s->dir, "runspec.json", diag);
    if (rc != 0) return rc;
    struct stat st;
    if (stat(path, &st) != 0 && errno == ENOENT) {
        if (given == NULL)
            return sw_diag_set(diag, SW_ENOENT,
                               "%s: no runspec.json: not an initialised state directory", s->dir);
        if (s->readonly)
            return sw_diag_set(diag, SW_ENOENT, "%s: no runspec.json (read-only open)", s->dir);
        if ((rc = sw_runspec_write(path, given, diag)) != 0) return rc;
        s->created = true;
        s->runspec = *given;
        return 0;
    }
    if ((rc = sw_runspec_load(path, &s->runspec, diag)) != 0) return rc;
    if (given != NULL) {
        const char *key = sw_runspec_diff(&s->runspec, given);
        if (key != NULL)
            return sw_diag_set(diag, SW_EMISMATCH,
                               "%s: %s differs from the configuration's (a state directory "
                               "belongs to one run: use a new state directory for a new run)",
                               path, key);
    }
    return 0;
}

/* ---- checkpoints ---- */

/*
 * The newest checkpoint that is valid AND describes this ledger: its
 * ledger_count is within the ledger and its version vector equals the
 * ledger's at that position.
 */
static int state_load_checkpoint(sw_state *s, const char *dir, sw_diag *diag)
{
    char **paths = NULL;
    size_t n = 0;
    int rc = sw_checkpoint_list(dir, &paths, &n, diag);
    if (rc != 0) return rc;
    const uint64_t count = sw_ledger_count(s->ledger);
    for (size_t i = 0; i < n && !s->has_ckpt; i++) {
        sw_fixed *f = NULL;
        sw_checkpoint_meta m;
        sw_diag sub;
        rc = sw_checkpoint_load(paths[i], s->train.run_id, &s->model, &f, &m, &sub);
        if (rc != 0) {
            state_warn(s, "skipped checkpoint: %s", sub.msg);
            continue;
        }
        bool ok = m.ledger_count <= count;
        if (!ok) {
            state_warn(s, "%s: skipped: includes %" PRIu64 " updates but the ledger holds %" PRIu64,
                       paths[i], m.ledger_count, count);
        } else {
            sw_vv at;
            rc = sw_ledger_vv_at(s->ledger, m.ledger_count, &at);
            if (rc != 0) {
                sw_fixed_free(f);
                sw_checkpoint_meta_fini(&m);
                sw_checkpoint_list_free(paths, n);
                return sw_diag_set(diag, rc, "%s: out of memory", s->dir);
            }
            ok = sw_vv_equal(&at, &m.vv);
            sw_vv_fini(&at);
            if (!ok)
                state_warn(s,
                           "%s: skipped: its version vector differs from the ledger's first "
                           "%" PRIu64 " updates",
                           paths[i], m.ledger_count);
        }
        if (!ok) {
            sw_fixed_free(f);
            sw_checkpoint_meta_fini(&m);
            continue;
        }
        s->ckpt = f;
        s->ckpt_meta = m;
        s->has_ckpt = true;
    }
    sw_checkpoint_list_free(paths, n);
    return 0;
}

/*
 * Removes NAME.tmp.* leftovers of the state files (a crash between a
 * temporary file's creation and its rename or link); called under the lock.
 */
static void state_cleanup_tmp(sw_state *s)
{
    static const char *const names[] = {"identity.key", "runspec.json", STATE_BASE_PATH_FILE,
                                        "ledger", "archive"};
    DIR *d = opendir(s->dir);
    if (d == NULL) return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
            size_t n = strlen(names[i]);
            if (strncmp(e->d_name, names[i], n) != 0 || strncmp(e->d_name + n, ".tmp.", 5) != 0)
                continue;
            char p[SW_STATE_PATH_MAX];
            if (sw_path_join(p, sizeof p, s->dir, e->d_name) != 0) continue;
            if (unlink(p) == 0) state_warn(s, "%s: removed a temporary file left by a crash", p);
        }
    }
    closedir(d);
}

/* ---- open / close ---- */

int sw_state_open(const char *dir, const sw_state_options *opt, sw_state **out, sw_diag *diag)
{
    static const sw_state_options none = {0};
    if (opt == NULL) opt = &none;
    if (sodium_init() < 0) return sw_diag_set(diag, SW_EIO, "libsodium failed to initialise");
    int rc;
    char path[SW_STATE_PATH_MAX];
    sw_state *s = calloc(1, sizeof(*s));
    if (s == NULL) return sw_diag_set(diag, SW_ENOMEM, "%s: out of memory", dir);
    s->lock_fd = -1;
    s->readonly = opt->readonly;
    s->warn = opt->warn;
    s->warn_ctx = opt->warn_ctx;
    if (snprintf(s->dir, sizeof s->dir, "%s", dir) >= (int)sizeof s->dir) {
        rc = sw_diag_set(diag, SW_ETOOBIG, "%s: path too long", dir);
        goto fail;
    }
    if (opt->readonly) {
        struct stat st;
        if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
            rc = sw_diag_set(diag, SW_ENOENT, "%s: no such state directory", dir);
            goto fail;
        }
    } else {
        /* 0700: the directory may hold the node's secret key. */
        if ((rc = sw_mkdir(dir, 0700, diag)) != 0) goto fail;
        if ((rc = state_lock(s, diag)) != 0) goto fail;
        state_cleanup_tmp(s);
        char idpath[SW_STATE_PATH_MAX];
        if (opt->identity_path != NULL) {
            if (snprintf(idpath, sizeof idpath, "%s", opt->identity_path) >= (int)sizeof idpath) {
                rc = sw_diag_set(diag, SW_ETOOBIG, "%s: path too long", opt->identity_path);
                goto fail;
            }
        } else if ((rc = state_path(idpath, dir, "identity.key", diag)) != 0) {
            goto fail;
        }
        rc = sw_identity_load_or_create(idpath, true, &s->id, &s->identity_created, diag);
        if (rc != 0) goto fail;
        s->has_pk = true;
    }
    if (opt->readonly) {
        char idpath[SW_STATE_PATH_MAX];
        if (opt->identity_path != NULL)
            snprintf(idpath, sizeof idpath, "%s", opt->identity_path);
        else if ((rc = state_path(idpath, dir, "identity.key", diag)) != 0)
            goto fail;
        s->has_pk = identity_read_pk(idpath, s->id.pk);
    }
    if ((rc = state_runspec(s, opt->runspec, diag)) != 0) goto fail;
    if ((rc = sw_runspec_train_spec(&s->runspec, &s->train, diag)) != 0) goto fail;
    sw_runspec_model_config(&s->runspec, &s->model);
    size_t n_tensors = sw_gpt2_tensor_count(&s->model);
    s->trainable = calloc(n_tensors, sizeof(bool));
    if (s->trainable == NULL) {
        rc = sw_diag_set(diag, SW_ENOMEM, "%s: out of memory", dir);
        goto fail;
    }
    rc = sw_trainer_trainable(&s->model, s->runspec.trainable, s->trainable, NULL, diag);
    if (rc != 0) goto fail;
    for (size_t t = 0; t < n_tensors; t++)
        s->n_trainable += s->trainable[t];
    if ((rc = state_base_path(s, opt->base_model_dir, diag)) != 0) goto fail;

    if ((rc = state_path(path, dir, "ledger", diag)) != 0) goto fail;
    rc = sw_ledger_open(path, s->train.run_id, opt->readonly, &s->ledger, &s->ledger_info, diag);
    if (rc != 0) goto fail;
    if (s->ledger_info.truncated_bytes > 0)
        state_warn(s,
                   "%s: %s a torn tail of %" PRIu64 " bytes at offset %" PRIu64
                   " (an append cut short by a crash; it never counted)",
                   path, opt->readonly ? "ignored" : "removed", s->ledger_info.truncated_bytes,
                   s->ledger_info.size);

    if ((rc = state_path(path, dir, "checkpoints", diag)) != 0) goto fail;
    if (!opt->readonly) {
        if ((rc = sw_mkdir(path, 0755, diag)) != 0) goto fail;
        if ((rc = sw_checkpoint_cleanup(path, s->warn, s->warn_ctx, diag)) != 0) goto fail;
    }
    if ((rc = state_load_checkpoint(s, path, diag)) != 0) goto fail;
    *out = s;
    return 0;
fail:
    sw_state_close(s);
    return rc;
}

void sw_state_close(sw_state *s)
{
    if (s == NULL) return;
    sw_fixed_free(s->ckpt);
    sw_checkpoint_meta_fini(&s->ckpt_meta);
    sw_ledger_close(s->ledger);
    sw_identity_fini(&s->id);
    free(s->trainable);
    if (s->lock_fd >= 0) close(s->lock_fd); /* releases the flock */
    free(s);
}

/* ---- rebuild / replay / checkpoint ---- */

int sw_state_replay(sw_state *s, sw_fixed *f, uint64_t first, int threads, sw_diag *diag)
{
    sw_update *batch = malloc(SW_STATE_REPLAY_BATCH * sizeof(*batch));
    if (batch == NULL) return sw_diag_set(diag, SW_ENOMEM, "%s: out of memory", s->dir);
    int rc = 0;
    const uint64_t count = sw_ledger_count(s->ledger);
    for (uint64_t i = first; i < count;) {
        size_t got = 0;
        rc = sw_ledger_read(s->ledger, i, batch, SW_STATE_REPLAY_BATCH, &got, diag);
        if (rc != 0) break;
        if (got == 0) {
            rc = sw_diag_set(diag, SW_EIO, "%s: ledger read returned nothing at %" PRIu64,
                             sw_ledger_path(s->ledger), i);
            break;
        }
        for (size_t j = 0; j < got; j++) {
            sw_diag sub;
            if (sw_update_check(&s->train, &batch[j], &sub) != 0) {
                rc = sw_diag_set(diag, SW_EFORMAT, "%s: ledger update %" PRIu64 ": %s",
                                 sw_ledger_path(s->ledger), i + j, sub.msg);
                goto done;
            }
        }
        sw_fixed_apply(f, &s->train, s->trainable, batch, got, threads);
        i += got;
    }
done:
    free(batch);
    return rc;
}

/* The base model must be the run's: its digest against the run spec's. */
static int state_check_base(const sw_state *s, const sw_gpt2 *m, sw_diag *diag)
{
    uint8_t digest[SW_GPT2_DIGEST_BYTES];
    sw_gpt2_digest(m, digest);
    if (memcmp(digest, s->runspec.base_digest, sizeof digest) == 0) return 0;
    char have[2 * SW_GPT2_DIGEST_BYTES + 1], want[2 * SW_GPT2_DIGEST_BYTES + 1];
    sw_digest_hex(digest, have);
    sw_digest_hex(s->runspec.base_digest, want);
    return sw_diag_set(diag, SW_EMISMATCH,
                       "%s: model digest %s does not match the run spec's base_model %s",
                       s->base_model_dir, have, want);
}

static int state_from_base(sw_state *s, const sw_gpt2 *base, sw_fixed **out, sw_diag *diag)
{
    if (base != NULL) {
        int rc = state_check_base(s, base, diag);
        return rc != 0 ? rc : sw_lora_initial_weights(base, &s->model, out, diag);
    }
    if (s->base_model_dir[0] == '\0')
        return sw_diag_set(diag, SW_ENOENT,
                           "%s: no checkpoint and no base model path recorded (%s)", s->dir,
                           STATE_BASE_PATH_FILE);
    sw_gpt2 *m = NULL;
    int rc = sw_gpt2_load(s->base_model_dir, &m, diag);
    if (rc != 0) return rc;
    rc = state_from_base(s, m, out, diag);
    sw_gpt2_free(m);
    return rc;
}

int sw_state_rebuild_from(sw_state *s, const sw_gpt2 *base, int threads, sw_fixed **out,
                          sw_diag *diag)
{
    sw_fixed *f = NULL;
    uint64_t first = 0;
    int rc;
    if (s->ckpt != NULL) {
        f = s->ckpt;
        s->ckpt = NULL;
        first = s->ckpt_meta.ledger_count;
    } else if ((rc = state_from_base(s, base, &f, diag)) != 0) {
        return rc;
    }
    rc = sw_state_replay(s, f, first, threads, diag);
    if (rc != 0) {
        sw_fixed_free(f);
        return rc;
    }
    *out = f;
    return 0;
}

int sw_state_rebuild(sw_state *s, int threads, sw_fixed **out, sw_diag *diag)
{
    return sw_state_rebuild_from(s, NULL, threads, out, diag);
}

int sw_state_checkpoint(sw_state *s, const sw_fixed *f, char *path_out, sw_diag *diag)
{
    if (s->readonly) return sw_diag_set(diag, SW_EACCES, "%s: opened read-only", s->dir);
    char dir[SW_STATE_PATH_MAX];
    int rc = state_path(dir, s->dir, "checkpoints", diag);
    if (rc != 0) return rc;
    sw_checkpoint_meta m;
    memset(&m, 0, sizeof m);
    if (sw_ledger_vv(s->ledger, &m.vv) != 0)
        return sw_diag_set(diag, SW_ENOMEM, "%s: out of memory", s->dir);
    m.ledger_count = sw_ledger_count(s->ledger);
    rc = sw_checkpoint_write(dir, s->train.run_id, f, m.ledger_count, &m.vv, SW_CHECKPOINT_KEEP,
                             m.path, s->warn, s->warn_ctx, diag);
    if (rc != 0) {
        sw_checkpoint_meta_fini(&m);
        return rc;
    }
    memcpy(m.run_id, s->train.run_id, SW_ID_BYTES);
    m.cfg = f->cfg;
    m.saturations = f->saturations;
    sw_fixed_digest(f, m.digest);
    if (path_out != NULL) snprintf(path_out, SW_CHECKPOINT_PATH_MAX, "%s", m.path);
    /* A checkpoint loaded at open and not yet taken is now stale. */
    sw_fixed_free(s->ckpt);
    s->ckpt = NULL;
    sw_checkpoint_meta_fini(&s->ckpt_meta);
    s->ckpt_meta = m;
    s->has_ckpt = true;
    return 0;
}

uint64_t sw_state_next_step(const sw_state *s)
{
    return sw_ledger_next_step(s->ledger, s->id.pk);
}
