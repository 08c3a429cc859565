#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "export.h"
#include "fileio.h"

int swctl_usage_error(const char *path, const char *what, const char *fmt, ...)
{
    fprintf(stderr, "swarmctl: %s: ", what);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry 'swarmctl%s%s --help'.\n", path[0] ? " " : "", path);
    return SWCTL_EXIT_USAGE;
}

int swctl_fail(const char *fmt, ...)
{
    fputs("swarmctl: ", stderr);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return SWCTL_EXIT_FAIL;
}

int swctl_fail_diag(const sw_diag *diag, int rc)
{
    if (diag->msg[0] != '\0') return swctl_fail("%s", diag->msg);
    return swctl_fail("%s", sw_strerror(rc));
}

int swctl_group_run(const char *path, const char *intro, const swctl_verb *verbs, size_t n,
                    int argc, char **argv)
{
    const char *verb = argc > 1 ? argv[1] : NULL;
    if (verb == NULL || strcmp(verb, "--help") == 0 || strcmp(verb, "-h") == 0 ||
        strcmp(verb, "help") == 0) {
        FILE *f = verb == NULL ? stderr : stdout;
        fputs(intro, f);
        fputs("\nCommands:\n", f);
        for (size_t i = 0; i < n; i++)
            fprintf(f, "  %-10s %s\n", verbs[i].name, verbs[i].summary);
        fprintf(f, "\nRun 'swarmctl%s%s COMMAND --help' for a command's options.\n",
                path[0] ? " " : "", path);
        return verb == NULL ? SWCTL_EXIT_USAGE : SWCTL_EXIT_OK;
    }
    for (size_t i = 0; i < n; i++) {
        if (strcmp(verbs[i].name, verb) == 0) {
            char sub[128];
            snprintf(sub, sizeof sub, "%s%s%s", path, path[0] ? " " : "", verb);
            return verbs[i].fn(sub, argc - 1, argv + 1);
        }
    }
    if (verb[0] == '-') return swctl_usage_error(path, verb, "unknown option");
    return swctl_usage_error(path, verb, "unknown command");
}

const swctl_opt *swctl_find_opt(const swctl_cmd *cmd, const char *name)
{
    for (size_t i = 0; i < cmd->n_opts; i++)
        if (strcmp(cmd->opts[i].name, name) == 0) return &cmd->opts[i];
    return NULL;
}

int swctl_require(const swctl_cmd *cmd, const char *name)
{
    const swctl_opt *o = swctl_find_opt(cmd, name);
    SW_ASSERT(o != NULL);
    if (o->seen) return 0;
    char what[80];
    snprintf(what, sizeof what, "--%s", name);
    return swctl_usage_error(cmd->path, what, "missing (required by '%s')", cmd->path);
}

int swctl_parse_int(const char *path, const char *what, const char *text, long long min,
                    long long max, long long *out)
{
    if (text[0] == '\0' || isspace((unsigned char)text[0]))
        return swctl_usage_error(path, what, "'%s' is not an integer", text);
    errno = 0;
    char *end;
    long long v = strtoll(text, &end, 10);
    if (*end != '\0') return swctl_usage_error(path, what, "'%s' is not an integer", text);
    if (errno == ERANGE || v < min || v > max)
        return swctl_usage_error(path, what, "%s is out of range [%lld, %lld]", text, min, max);
    *out = v;
    return 0;
}

int swctl_parse_u64(const char *path, const char *what, const char *text, uint64_t *out)
{
    /* strtoull accepts "-1" and wraps it around: refuse any sign. */
    if (!isdigit((unsigned char)text[0]))
        return swctl_usage_error(path, what, "'%s' is not a non-negative integer", text);
    errno = 0;
    char *end;
    unsigned long long v = strtoull(text, &end, 10);
    if (*end != '\0')
        return swctl_usage_error(path, what, "'%s' is not a non-negative integer", text);
    if (errno == ERANGE || v > UINT64_MAX)
        return swctl_usage_error(path, what, "%s is out of range [0, %llu]", text,
                                 (unsigned long long)UINT64_MAX);
    *out = (uint64_t)v;
    return 0;
}

int swctl_parse_double(const char *path, const char *what, const char *text, double min, double max,
                       double *out)
{
    if (text[0] == '\0' || isspace((unsigned char)text[0]))
        return swctl_usage_error(path, what, "'%s' is not a number", text);
    errno = 0;
    char *end;
    double v = strtod(text, &end);
    if (*end != '\0' || !isfinite(v))
        return swctl_usage_error(path, what, "'%s' is not a finite number", text);
    if (errno == ERANGE || v < min || v > max)
        return swctl_usage_error(path, what, "%s is out of range [%g, %g]", text, min, max);
    *out = v;
    return 0;
}

static int cli_set(swctl_cmd *cmd, swctl_opt *o, const char *what, const char *value)
{
    int rc = 0;
    switch (o->type) {
    case SWCTL_OPT_FLAG:
        *(bool *)o->dest = true;
        break;
    case SWCTL_OPT_STR:
        *(const char **)o->dest = value;
        break;
    case SWCTL_OPT_INT: {
        long long v;
        rc = swctl_parse_int(cmd->path, what, value, (long long)o->min, (long long)o->max, &v);
        if (rc == 0) *(int *)o->dest = (int)v;
        break;
    }
    case SWCTL_OPT_U64:
        rc = swctl_parse_u64(cmd->path, what, value, (uint64_t *)o->dest);
        break;
    case SWCTL_OPT_DOUBLE:
        rc = swctl_parse_double(cmd->path, what, value, o->min, o->max, (double *)o->dest);
        break;
    }
    if (rc == 0) o->seen = true;
    return rc;
}

int swctl_parse(swctl_cmd *cmd, int argc, char **argv)
{
    bool only_pos = false;
    cmd->n_pos = 0;
    SW_ASSERT(cmd->max_pos <= SWCTL_MAX_POSITIONAL);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (only_pos || a[0] != '-' || a[1] == '\0') {
            if (cmd->n_pos >= cmd->max_pos)
                return swctl_usage_error(cmd->path, a, "unexpected argument");
            cmd->pos[cmd->n_pos++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_pos = true;
            continue;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(cmd->usage, stdout);
            return SWCTL_EXIT_OK;
        }
        swctl_opt *o = NULL;
        const char *inline_value = NULL;
        char what[96];
        if (a[1] == '-') {
            const char *name = a + 2;
            const char *eq = strchr(name, '=');
            size_t nlen = eq != NULL ? (size_t)(eq - name) : strlen(name);
            for (size_t k = 0; k < cmd->n_opts; k++) {
                if (strlen(cmd->opts[k].name) == nlen &&
                    strncmp(cmd->opts[k].name, name, nlen) == 0) {
                    o = &cmd->opts[k];
                    break;
                }
            }
            if (o == NULL) {
                snprintf(what, sizeof what, "%.*s", (int)(nlen + 2 < 90 ? nlen + 2 : 90), a);
                return swctl_usage_error(cmd->path, what, "unknown option for '%s'", cmd->path);
            }
            snprintf(what, sizeof what, "--%s", o->name);
            if (eq != NULL) inline_value = eq + 1;
        } else {
            for (size_t k = 0; k < cmd->n_opts; k++) {
                if (cmd->opts[k].short_name != 0 && cmd->opts[k].short_name == a[1]) {
                    o = &cmd->opts[k];
                    break;
                }
            }
            if (o == NULL || (o->type == SWCTL_OPT_FLAG && a[2] != '\0'))
                return swctl_usage_error(cmd->path, a, "unknown option for '%s'", cmd->path);
            snprintf(what, sizeof what, "-%c", o->short_name);
            if (a[2] != '\0') inline_value = a + 2;
        }
        if (o->type == SWCTL_OPT_FLAG) {
            if (inline_value != NULL) return swctl_usage_error(cmd->path, what, "takes no value");
            cli_set(cmd, o, what, NULL);
            continue;
        }
        const char *value = inline_value;
        if (value == NULL) {
            if (i + 1 >= argc) return swctl_usage_error(cmd->path, what, "missing value");
            value = argv[++i];
        }
        int rc = cli_set(cmd, o, what, value);
        if (rc != 0) return rc;
    }
    if (cmd->n_pos < cmd->min_pos)
        return swctl_usage_error(cmd->path, cmd->path, "missing %s",
                                 cmd->pos_names != NULL ? cmd->pos_names : "arguments");
    return -1;
}

int swctl_read_stdin(char **out, size_t *len, sw_diag *diag)
{
    /* Grows up to one byte past the limit, so that "too big" is seen without reading on. */
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    if (buf == NULL) return sw_diag_set(diag, SW_ENOMEM, "stdin: out of memory");
    for (;;) {
        if (n == cap) {
            size_t ncap = cap * 2 > SWCTL_STDIN_MAX + 1u ? SWCTL_STDIN_MAX + 1u : cap * 2;
            char *nbuf = realloc(buf, ncap + 1);
            if (nbuf == NULL) {
                free(buf);
                return sw_diag_set(diag, SW_ENOMEM, "stdin: out of memory");
            }
            buf = nbuf;
            cap = ncap;
        }
        size_t want = cap - n;
        size_t got = fread(buf + n, 1, want, stdin);
        n += got;
        if (n > SWCTL_STDIN_MAX) {
            free(buf);
            return sw_diag_set(diag, SW_ETOOBIG, "stdin: input exceeds the limit of %u bytes",
                               SWCTL_STDIN_MAX);
        }
        if (got < want) {
            if (ferror(stdin)) {
                int err = errno;
                free(buf);
                return sw_diag_set(diag, sw_error_from_errno(err), "stdin: %s", strerror(err));
            }
            break;
        }
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

int swctl_mkdir_p(const char *dir, sw_diag *diag)
{
    return sw_mkdir_p(dir, diag);
}

bool swctl_exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

int swctl_default_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) return 1;
    return n > 1024 ? 1024 : (int)n;
}

int swctl_write_stdout(const void *buf, size_t len)
{
    if (len > 0 && fwrite(buf, 1, len, stdout) != len)
        return swctl_fail("stdout: %s", strerror(errno));
    return 0;
}
