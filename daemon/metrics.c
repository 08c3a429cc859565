/*
 * metrics: the status object as Prometheus text, and the HTTP server that
 * serves it.  See metrics.h.
 */
#include "metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include <microhttpd.h>

#include "log.h"
#include "members.h"
#include "status.h"
#include "wire.h"

/* ---- rendering ---------------------------------------------------------- */

typedef struct metrics_buf {
    char *p;
    size_t len, cap;
    bool oom;
} metrics_buf;

static void metrics_put(metrics_buf *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (b->len + n + 1 > cap)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void metrics_puts(metrics_buf *b, const char *s)
{
    metrics_put(b, s, strlen(s));
}

/* A label value: backslash, double quote and line feed escaped (format 0.0.4). */
static void metrics_put_label_value(metrics_buf *b, const char *s)
{
    for (const char *run = s;; s++) {
        const char *esc = NULL;
        if (*s == '\\')
            esc = "\\\\";
        else if (*s == '"')
            esc = "\\\"";
        else if (*s == '\n')
            esc = "\\n";
        if (!esc && *s) continue;
        metrics_put(b, run, (size_t)(s - run));
        if (!*s) return;
        metrics_puts(b, esc);
        run = s + 1;
    }
}

#define METRICS_NUM_MAX 40

/* The shortest text that parses back to the same double ("+Inf", "NaN"). */
static const char *metrics_fmt_double(char out[METRICS_NUM_MAX], double v)
{
    if (isnan(v)) return strcpy(out, "NaN");
    if (isinf(v)) return strcpy(out, v > 0 ? "+Inf" : "-Inf");
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(out, METRICS_NUM_MAX, "%.*g", prec, v);
        if (strtod(out, NULL) == v) break;
    }
    /* %g chose an exponent because it exceeds the precision ("3e+01"):
     * write such numbers out in full, as people read them ("30") */
    const char *e = strchr(out, 'e');
    if (e) {
        int exp10 = atoi(e + 1);
        if (exp10 >= 0 && exp10 < 17) snprintf(out, METRICS_NUM_MAX, "%.*g", exp10 + 1, v);
    }
    return out;
}

/* A JSON number or boolean as a sample value; NULL for anything else. */
static const char *metrics_fmt_json(char out[METRICS_NUM_MAX], const json_t *v)
{
    if (json_is_integer(v)) {
        snprintf(out, METRICS_NUM_MAX, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return out;
    }
    if (json_is_real(v)) return metrics_fmt_double(out, json_real_value(v));
    if (json_is_boolean(v)) return strcpy(out, json_is_true(v) ? "1" : "0");
    return NULL;
}

static void metrics_family(metrics_buf *b, const char *name, const char *type, const char *help)
{
    metrics_puts(b, "# HELP ");
    metrics_puts(b, name);
    metrics_puts(b, " ");
    metrics_puts(b, help);
    metrics_puts(b, "\n# TYPE ");
    metrics_puts(b, name);
    metrics_puts(b, " ");
    metrics_puts(b, type);
    metrics_puts(b, "\n");
}

/* One sample line; labels holds name, value pairs ending with NULL (or is NULL). */
static void metrics_sample(metrics_buf *b, const char *name, const char *suffix,
                           const char *const *labels, const char *value)
{
    metrics_puts(b, name);
    if (suffix) metrics_puts(b, suffix);
    if (labels && labels[0]) {
        metrics_puts(b, "{");
        for (size_t i = 0; labels[i]; i += 2) {
            if (i) metrics_puts(b, ",");
            metrics_puts(b, labels[i]);
            metrics_puts(b, "=\"");
            metrics_put_label_value(b, labels[i + 1]);
            metrics_puts(b, "\"");
        }
        metrics_puts(b, "}");
    }
    metrics_puts(b, " ");
    metrics_puts(b, value);
    metrics_puts(b, "\n");
}

/* One sample of v (a number, or a boolean as 0/1); nothing for anything else. */
static void metrics_value(metrics_buf *b, const sw_status_def *d, const char *help, const json_t *v)
{
    if (!json_is_number(v) && !(d->type == SW_STATUS_TYPE_BOOL && json_is_boolean(v))) return;
    char num[METRICS_NUM_MAX];
    metrics_family(b, d->metric, sw_status_kind_text(d->kind), help);
    metrics_sample(b, d->metric, NULL, NULL, metrics_fmt_json(num, v));
}

static void metrics_count(metrics_buf *b, const sw_status_def *d, const char *help, size_t n)
{
    char num[METRICS_NUM_MAX];
    snprintf(num, sizeof num, "%zu", n);
    metrics_family(b, d->metric, sw_status_kind_text(d->kind), help);
    metrics_sample(b, d->metric, NULL, NULL, num);
}

/* One sample per key of obj whose value is a number, labelled label=KEY;
 * nothing when there is none. */
static void metrics_by_label(metrics_buf *b, const sw_status_def *d, const char *help,
                             const json_t *obj)
{
    const char *k;
    const json_t *v;
    bool any = false;
    json_object_foreach((json_t *)obj, k, v)
    {
        if (!json_is_number(v)) continue;
        if (!any) metrics_family(b, d->metric, sw_status_kind_text(d->kind), help);
        any = true;
        char num[METRICS_NUM_MAX];
        const char *labels[] = {d->label, k, NULL};
        metrics_sample(b, d->metric, NULL, labels, metrics_fmt_json(num, v));
    }
}

/* An older status without swarm.peers_by_state: the peers array counted by state. */
static void metrics_peers_counted(metrics_buf *b, const sw_status_def *d, const char *help,
                                  const json_t *peers)
{
    json_t *counted = json_object();
    if (!counted) {
        b->oom = true;
        return;
    }
    for (int s = SWD_PEER_JOINING; s <= SWD_PEER_LEFT; s++)
        json_object_set_new(counted, swd_peer_state_name((swd_peer_state)s), json_integer(0));
    size_t i;
    const json_t *p;
    json_array_foreach(peers, i, p)
    {
        const char *state = json_string_value(sw_status_get(p, SW_STATUS_PEER_STATE));
        if (!state) continue;
        json_int_t n = json_integer_value(json_object_get(counted, state));
        json_object_set_new(counted, state, json_integer(n + 1));
    }
    metrics_by_label(b, d, help, counted);
    json_decref(counted);
}

/* The one sample 1 of an INFO metric, labelled by every string field naming it. */
static void metrics_info(metrics_buf *b, const json_t *st, sw_status_field first, const char *help)
{
    const char *metric = sw_status_def_of(first)->metric;
    const char *labels[2 * SW_STATUS_COUNT + 1];
    size_t n = 0;
    for (int f = first; f < SW_STATUS_COUNT; f++) {
        const sw_status_def *d = sw_status_def_of((sw_status_field)f);
        if (!d->metric || strcmp(d->metric, metric) != 0) continue;
        const char *v = json_string_value(sw_status_get(st, (sw_status_field)f));
        if (!v) continue;
        labels[n++] = d->label;
        labels[n++] = v;
    }
    labels[n] = NULL;
    if (!n) return;
    metrics_family(b, metric, "gauge", help);
    metrics_sample(b, metric, NULL, labels, "1");
}

/* The values a STATESET can take.  node.state is the only one: the
 * daemon's node states. */
static const char *metrics_state_value(sw_status_field f, int i)
{
    SW_ASSERT(f == SW_STATUS_NODE_STATE);
    int s = SWD_STATE_JOINING + i;
    return s <= SWD_STATE_SYNCING ? swd_node_state_name((swd_node_state)s) : NULL;
}

/* One series per value, 1 for the current one: a value absent from the
 * scrape would make "how long was it paused" queries lie. */
static void metrics_stateset(metrics_buf *b, const json_t *st, sw_status_field f, const char *help)
{
    const sw_status_def *d = sw_status_def_of(f);
    const char *cur = json_string_value(sw_status_get(st, f));
    if (!cur) return;
    metrics_family(b, d->metric, "gauge", help);
    bool known = false;
    const char *name;
    for (int i = 0; (name = metrics_state_value(f, i)) != NULL; i++) {
        bool is = strcmp(name, cur) == 0;
        known = known || is;
        const char *labels[] = {d->label, name, NULL};
        metrics_sample(b, d->metric, NULL, labels, is ? "1" : "0");
    }
    if (!known) {
        const char *labels[] = {d->label, cur, NULL};
        metrics_sample(b, d->metric, NULL, labels, "1");
    }
}

/* h as a histogram; left out unless it is consistent (bounds increasing,
 * cumulative counts never decreasing nor above count). */
static void metrics_histogram(metrics_buf *b, const sw_status_def *d, const char *help,
                              const json_t *h)
{
    const json_t *bounds = json_object_get(h, SW_STATUS_HIST_BUCKETS);
    const json_t *counts = json_object_get(h, SW_STATUS_HIST_COUNTS);
    const json_t *count = json_object_get(h, SW_STATUS_HIST_COUNT);
    const json_t *sum = json_object_get(h, SW_STATUS_HIST_SUM);
    if (!json_is_array(bounds) || !json_is_array(counts) || !json_is_integer(count) ||
        !json_is_number(sum) || json_array_size(bounds) != json_array_size(counts))
        return;
    size_t n = json_array_size(bounds);
    json_int_t total = json_integer_value(count);
    if (total < 0) return;
    double prev_bound = -INFINITY;
    json_int_t prev_count = 0;
    for (size_t i = 0; i < n; i++) {
        const json_t *bo = json_array_get(bounds, i);
        const json_t *co = json_array_get(counts, i);
        if (!json_is_number(bo) || !json_is_integer(co)) return;
        double bound = json_number_value(bo);
        json_int_t c = json_integer_value(co);
        if (!(bound > prev_bound) || c < prev_count || c > total) return;
        prev_bound = bound;
        prev_count = c;
    }
    const char *name = d->metric;
    metrics_family(b, name, "histogram", help);
    char le[METRICS_NUM_MAX], num[METRICS_NUM_MAX];
    for (size_t i = 0; i < n; i++) {
        const char *labels[] = {
            d->label, metrics_fmt_double(le, json_number_value(json_array_get(bounds, i))), NULL};
        metrics_sample(b, name, "_bucket", labels,
                       metrics_fmt_json(num, json_array_get(counts, i)));
    }
    const char *inf[] = {d->label, "+Inf", NULL};
    metrics_sample(b, name, "_bucket", inf, metrics_fmt_json(num, count));
    metrics_sample(b, name, "_sum", NULL, metrics_fmt_json(num, sum));
    metrics_sample(b, name, "_count", NULL, metrics_fmt_json(num, count));
}

/* Whether a field before f names f's metric (the later INFO fields). */
static bool metrics_named_before(sw_status_field f)
{
    const char *metric = sw_status_def_of(f)->metric;
    for (int g = 0; g < (int)f; g++) {
        const char *m = sw_status_def_of((sw_status_field)g)->metric;
        if (m && strcmp(m, metric) == 0) return true;
    }
    return false;
}

#define METRICS_HELP_MAX 1024

/* The HELP text of f's metric: its help, said of what the samples count
 * when they are not f's value. */
static const char *metrics_help(char out[METRICS_HELP_MAX], sw_status_field f)
{
    const sw_status_def *d = sw_status_def_of(f);
    if (d->kind == SW_STATUS_KIND_INFO) {
        size_t n = (size_t)snprintf(out, METRICS_HELP_MAX, "Always 1; its labels are");
        const char *sep = " ";
        for (int g = f; g < SW_STATUS_COUNT && n < METRICS_HELP_MAX; g++) {
            const sw_status_def *e = sw_status_def_of((sw_status_field)g);
            if (!e->metric || strcmp(e->metric, d->metric) != 0) continue;
            n += (size_t)snprintf(out + n, METRICS_HELP_MAX - n, "%s%s (`%s`, %s)", sep, e->label,
                                  e->path, e->help);
            sep = ", ";
        }
        if (n < METRICS_HELP_MAX) snprintf(out + n, METRICS_HELP_MAX - n, ".");
    } else if (d->kind == SW_STATUS_KIND_STATESET) {
        snprintf(out, METRICS_HELP_MAX, "One series per `%s`, 1 for the current one: %s.", d->path,
                 d->help);
    } else if (d->type == SW_STATUS_TYPE_BOOL && sw_status_is_peer(f)) {
        snprintf(out, METRICS_HELP_MAX, "Peers whose `%s` is true: %s.", d->path, d->help);
    } else if (d->type == SW_STATUS_TYPE_TEXTS) {
        snprintf(out, METRICS_HELP_MAX, "Entries of `%s`: %s.", d->path, d->help);
    } else {
        snprintf(out, METRICS_HELP_MAX, "%s.", d->help);
        /* a sentence, as Prometheus' own HELP texts are */
        if (out[0] >= 'a' && out[0] <= 'z') out[0] = (char)(out[0] - 'a' + 'A');
    }
    return out;
}

/* The samples of f's metric, from st. */
static void metrics_field(metrics_buf *b, const json_t *st, sw_status_field f)
{
    const sw_status_def *d = sw_status_def_of(f);
    char help[METRICS_HELP_MAX];
    metrics_help(help, f);
    const json_t *v = sw_status_get(st, f);
    if (d->kind == SW_STATUS_KIND_INFO) {
        metrics_info(b, st, f, help);
    } else if (d->kind == SW_STATUS_KIND_STATESET) {
        metrics_stateset(b, st, f, help);
    } else if (d->kind == SW_STATUS_KIND_HISTOGRAM) {
        metrics_histogram(b, d, help, v);
    } else if (sw_status_is_peer(f)) {
        const json_t *peers = sw_status_get(st, SW_STATUS_PEERS);
        if (!json_is_array(peers)) return;
        SW_ASSERT(d->type == SW_STATUS_TYPE_BOOL); /* counted over the peers */
        size_t n = 0, i;
        const json_t *p;
        json_array_foreach(peers, i, p) n += json_is_true(sw_status_get(p, f));
        metrics_count(b, d, help, n);
    } else if (d->type == SW_STATUS_TYPE_COUNTS) {
        const json_t *peers = sw_status_get(st, SW_STATUS_PEERS);
        if (json_is_object(v))
            metrics_by_label(b, d, help, v);
        else if (f == SW_STATUS_SWARM_PEERS_BY_STATE && json_is_array(peers))
            metrics_peers_counted(b, d, help, peers);
    } else if (d->type == SW_STATUS_TYPE_TEXTS) {
        if (json_is_array(v)) metrics_count(b, d, help, json_array_size(v));
    } else {
        metrics_value(b, d, help, v);
    }
}

char *swd_metrics_render(const json_t *st)
{
    metrics_buf b = {0};
    metrics_puts(&b, "");
    if (!json_is_object(st)) goto done;
    for (int f = 0; f < SW_STATUS_COUNT; f++) {
        if (sw_status_def_of((sw_status_field)f)->kind == SW_STATUS_KIND_NONE ||
            metrics_named_before((sw_status_field)f))
            continue;
        metrics_field(&b, st, (sw_status_field)f);
    }
done:
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

void swd_metrics_write_doc(FILE *out)
{
    fputs("| metric | type | labels | status field | meaning |\n", out);
    fputs("| --- | --- | --- | --- | --- |\n", out);
    for (int f = 0; f < SW_STATUS_COUNT; f++) {
        const sw_status_def *d = sw_status_def_of((sw_status_field)f);
        if (d->kind == SW_STATUS_KIND_NONE || metrics_named_before((sw_status_field)f)) continue;
        fprintf(out, "| `%s` | %s | ", d->metric, sw_status_kind_text(d->kind));
        /* the labels, then the fields: every field naming this metric */
        for (int pass = 0; pass < 2; pass++) {
            const char *sep = "";
            for (int g = f; g < SW_STATUS_COUNT; g++) {
                const sw_status_def *e = sw_status_def_of((sw_status_field)g);
                if (!e->metric || strcmp(e->metric, d->metric) != 0) continue;
                if (pass == 0 && !e->label) continue;
                fprintf(out, "%s`%s`", sep, pass == 0 ? e->label : e->path);
                sep = ", ";
            }
            fputs(" | ", out);
        }
        char help[METRICS_HELP_MAX];
        fprintf(out, "%s |\n", metrics_help(help, (sw_status_field)f));
    }
}

/* ---- the HTTP server ---------------------------------------------------- */

#define METRICS_HOST_MAX 256 /* a DNS name is at most 253 characters */
#define METRICS_URL_MAX (METRICS_HOST_MAX + 40)

struct swd_metrics {
    struct MHD_Daemon *daemon;
    pthread_mutex_t lock; /* guards text and len */
    char *text;
    size_t len;
    char url[METRICS_URL_MAX];
};

/* libmicrohttpd's own messages (a refused connection over the limit, an
 * accept error) are debug level: a client can provoke them at will. */
static void metrics_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    if (!swd_log_enabled(SWD_LOG_DEBUG)) return;
    char text[512];
    vsnprintf(text, sizeof text, fmt, ap);
    size_t n = strlen(text);
    while (n && (text[n - 1] == '\n' || text[n - 1] == '\r'))
        text[--n] = '\0';
    swd_log(SWD_LOG_DEBUG, "metrics server", "detail=%s", SWD_LOG_Q(text));
}

static enum MHD_Result metrics_reply(struct MHD_Connection *c, unsigned int code, const char *type,
                                     const char *body, size_t len, enum MHD_ResponseMemoryMode mode)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)body, mode);
    if (!r) return MHD_NO;
    enum MHD_Result ok = MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (ok == MHD_YES && code == MHD_HTTP_METHOD_NOT_ALLOWED)
        ok = MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    if (ok == MHD_YES) ok = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result metrics_reply_text(struct MHD_Connection *c, unsigned int code,
                                          const char *text)
{
    return metrics_reply(c, code, "text/plain; charset=utf-8", text, strlen(text),
                         MHD_RESPMEM_PERSISTENT);
}

static enum MHD_Result metrics_handle(void *cls, struct MHD_Connection *c, const char *url,
                                      const char *method, const char *version,
                                      const char *upload_data, size_t *upload_data_size,
                                      void **con_cls)
{
    (void)version;
    (void)upload_data;
    (void)upload_data_size;
    (void)con_cls;
    swd_metrics *m = cls;
    /* answered on the first call, before any request body is read: MHD then
     * closes the connection instead of reading the body */
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return metrics_reply_text(c, MHD_HTTP_METHOD_NOT_ALLOWED,
                                  "method not allowed: use GET /metrics\n");
    if (strcmp(url, "/metrics") != 0)
        return metrics_reply_text(c, MHD_HTTP_NOT_FOUND,
                                  "not found: the metrics are at /metrics\n");
    pthread_mutex_lock(&m->lock);
    enum MHD_Result ok;
    if (m->text)
        ok = metrics_reply(c, MHD_HTTP_OK, SWD_METRICS_CONTENT_TYPE, m->text, m->len,
                           MHD_RESPMEM_MUST_COPY);
    else
        ok = metrics_reply_text(c, MHD_HTTP_SERVICE_UNAVAILABLE,
                                "no metrics yet: swarmd is starting\n");
    pthread_mutex_unlock(&m->lock);
    return ok;
}

/* Splits "HOST:PORT" / "[V6]:PORT" / ":PORT" into host (maybe "") and port. */
static int metrics_parse(const char *host_port, char *host, size_t host_size, char port[6],
                         sw_diag *diag)
{
    const char *what = "expected HOST:PORT (an IPv6 address in brackets: [::1]:9100)";
    size_t len = strnlen(host_port, host_size);
    if (len >= host_size) return sw_diag_set(diag, SW_EINVAL, "metrics address is too long");
    const char *colon;
    const char *h = host_port;
    size_t hlen;
    if (host_port[0] == '[') {
        const char *close = strchr(host_port, ']');
        if (!close || close[1] != ':')
            return sw_diag_set(diag, SW_EINVAL, "metrics address '%s': %s", host_port, what);
        h = host_port + 1;
        hlen = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(host_port, ':');
        if (!colon || memchr(host_port, ':', (size_t)(colon - host_port)))
            return sw_diag_set(diag, SW_EINVAL, "metrics address '%s': %s", host_port, what);
        hlen = (size_t)(colon - host_port);
    }
    const char *p = colon + 1;
    size_t plen = strlen(p);
    unsigned long v = 0;
    bool digits = plen >= 1 && plen <= 5;
    for (size_t i = 0; digits && i < plen; i++) {
        digits = p[i] >= '0' && p[i] <= '9';
        v = v * 10 + (unsigned long)(p[i] - '0');
    }
    if (!digits || v > 65535)
        return sw_diag_set(diag, SW_EINVAL, "metrics address '%s': port '%s' is not 0..65535",
                           host_port, p);
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    snprintf(port, 6, "%lu", v);
    return 0;
}

/* A listening TCP socket on the first address of host:port that binds. */
static int metrics_listen(const char *host_port, const char *host, const char *port, int *fd_out,
                          int *family_out, unsigned *port_out, sw_diag *diag)
{
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    hints.ai_family = host[0] ? AF_UNSPEC : AF_INET;
    int g = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
    if (g != 0)
        return sw_diag_set(diag, SW_ENOTFOUND, "metrics address '%s': %s", host_port,
                           g == EAI_SYSTEM ? strerror(errno) : gai_strerror(g));
    int err = 0;
    int fd = -1;
    const char *step = "socket";
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0) {
            err = errno;
            step = "socket";
            continue;
        }
        int one = 1;
        (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 64) == 0) {
            *family_out = ai->ai_family;
            break;
        }
        err = errno;
        step = "bind";
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        return sw_diag_set(diag, sw_error_from_errno(err), "metrics address '%s': %s: %s",
                           host_port, step, strerror(err));
    struct sockaddr_storage sa;
    socklen_t salen = sizeof sa;
    if (getsockname(fd, (struct sockaddr *)&sa, &salen) != 0) {
        err = errno;
        close(fd);
        return sw_diag_set(diag, sw_error_from_errno(err), "metrics address '%s': getsockname: %s",
                           host_port, strerror(err));
    }
    *port_out = sa.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&sa)->sin6_port)
                                         : ntohs(((struct sockaddr_in *)&sa)->sin_port);
    *fd_out = fd;
    return 0;
}

int swd_metrics_open(const char *host_port, swd_metrics **out, sw_diag *diag)
{
    SW_ASSERT(host_port && out);
    char host[METRICS_HOST_MAX];
    char port[6];
    int rc = metrics_parse(host_port, host, sizeof host, port, diag);
    if (rc) return rc;
    int fd = -1, family = AF_INET;
    unsigned bound = 0;
    rc = metrics_listen(host_port, host, port, &fd, &family, &bound, diag);
    if (rc) return rc;

    swd_metrics *m = calloc(1, sizeof *m);
    if (!m) {
        close(fd);
        return sw_diag_set(diag, SW_ENOMEM, "metrics: out of memory");
    }
    pthread_mutex_init(&m->lock, NULL);
    const char *url_host = host[0] ? host : "0.0.0.0";
    bool bracket = strchr(url_host, ':') != NULL; /* an IPv6 literal */
    snprintf(m->url, sizeof m->url, "http://%s%s%s:%u/metrics", bracket ? "[" : "", url_host,
             bracket ? "]" : "", bound);

    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ERROR_LOG;
    if (family == AF_INET6) flags |= MHD_USE_IPv6;
    m->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, metrics_handle, m, MHD_OPTION_EXTERNAL_LOGGER, metrics_mhd_log, NULL,
        MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned int)SWD_METRICS_MAX_CONNECTIONS, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned int)SWD_METRICS_TIMEOUT_S, MHD_OPTION_END);
    if (!m->daemon) {
        close(fd);
        pthread_mutex_destroy(&m->lock);
        free(m);
        return sw_diag_set(diag, SW_EIO, "metrics address '%s': libmicrohttpd would not start",
                           host_port);
    }
    *out = m;
    return 0;
}

const char *swd_metrics_url(const swd_metrics *m)
{
    return m->url;
}

void swd_metrics_publish(swd_metrics *m, char *text)
{
    size_t len = text ? strlen(text) : 0;
    pthread_mutex_lock(&m->lock);
    char *old = m->text;
    m->text = text;
    m->len = len;
    pthread_mutex_unlock(&m->lock);
    free(old);
}

void swd_metrics_close(swd_metrics *m)
{
    if (!m) return;
    /* closes the listening socket too, and returns once its thread is gone */
    MHD_stop_daemon(m->daemon);
    free(m->text);
    pthread_mutex_destroy(&m->lock);
    free(m);
}
