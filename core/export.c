#include "export.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "fileio.h"
#include "lora.h"

#define EXPORT_PATH_MAX 4096

int sw_mkdir_p(const char *dir, sw_diag *diag)
{
    char buf[EXPORT_PATH_MAX];
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof buf)
        return sw_diag_set(diag, SW_EINVAL, "'%s': not a usable directory name", dir);
    memcpy(buf, dir, n + 1);
    for (size_t i = 1; i < n; i++) {
        if (buf[i] != '/') continue;
        buf[i] = '\0';
        int rc = sw_mkdir(buf, 0755, diag);
        buf[i] = '/';
        if (rc != 0) return rc;
    }
    return sw_mkdir(buf, 0755, diag);
}

/* Tokenizer files of the base model worth carrying along (those that exist). */
static bool export_aux_name(const char *name)
{
    static const char *const names[] = {"vocab.json", "merges.txt", "tokenizer.json",
                                        "tokenizer_config.json", "special_tokens_map.json"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(name, names[i]) == 0) return true;
    return false;
}

static int export_copy_tokenizer(const char *src, const char *dst, size_t *copied, sw_diag *diag)
{
    DIR *dh = opendir(src);
    if (!dh)
        return sw_diag_set(diag, sw_error_from_errno(errno), "%s (the run's base model): %s", src,
                           strerror(errno));
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(dh)) != NULL) {
        if (!export_aux_name(e->d_name)) continue;
        char from[EXPORT_PATH_MAX], to[EXPORT_PATH_MAX];
        struct stat st;
        if (sw_path_join(from, sizeof from, src, e->d_name) != 0 ||
            sw_path_join(to, sizeof to, dst, e->d_name) != 0) {
            rc = sw_diag_set(diag, SW_ETOOBIG, "%s: path too long", dst);
            break;
        }
        if (stat(from, &st) != 0 || !S_ISREG(st.st_mode)) continue;
        if ((rc = sw_file_copy(from, to, SW_EXPORT_AUX_MAX_BYTES, diag)) != 0) break;
        (*copied)++;
    }
    closedir(dh);
    return rc;
}

/* A model with adapters: the merged model in out, the PEFT adapter in out/adapter. */
static int export_lora(const sw_gpt2 *m, const char *base_dir, const char *out, sw_dtype dtype,
                       size_t *copied, uint8_t digest[SW_GPT2_DIGEST_BYTES], sw_diag *diag)
{
    sw_gpt2 *merged = NULL;
    char dir[4096];
    int rc = sw_lora_merge(m, &merged, diag);
    if (rc == 0) rc = sw_export_model(merged, base_dir, out, dtype, copied, digest, diag);
    sw_gpt2_free(merged);
    if (rc != 0) return rc;
    if (snprintf(dir, sizeof dir, "%s/adapter", out) >= (int)sizeof dir)
        return sw_diag_set(diag, SW_ETOOBIG, "%s: path too long", out);
    if ((rc = sw_mkdir_p(dir, diag)) != 0) return rc;
    return sw_lora_write_peft(m, dir, base_dir, diag);
}

int sw_export_model(const sw_gpt2 *m, const char *base_dir, const char *out, sw_dtype dtype,
                    size_t *copied, uint8_t digest[SW_GPT2_DIGEST_BYTES], sw_diag *diag)
{
    if (dtype != SW_DTYPE_F32 && dtype != SW_DTYPE_F16)
        return sw_diag_set(diag, SW_EINVAL, "%s: export writes f32 or f16", out);
    if (m->cfg.lora_rank > 0) return export_lora(m, base_dir, out, dtype, copied, digest, diag);
    size_t n = 0;
    int rc = sw_mkdir_p(out, diag);
    if (rc == 0) rc = sw_gpt2_save(m, out, dtype, diag);
    if (rc == 0) rc = export_copy_tokenizer(base_dir, out, &n, diag);
    if (rc != 0) return rc;
    if (copied) *copied = n;
    if (!digest) return 0;
    if (dtype == SW_DTYPE_F32) {
        sw_gpt2_digest(m, digest);
        return 0;
    }
    sw_gpt2 *back = NULL;
    if ((rc = sw_gpt2_load(out, &back, diag)) != 0) return rc;
    sw_gpt2_digest(back, digest);
    sw_gpt2_free(back);
    return 0;
}
