#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "metrics.h"
#include "sw_error.h"

/* A status as the contract (docs/cli.md + issue 5) describes it. */
static json_t *full_status(void)
{
    json_t *st = json_pack(
        "{s:{s:s,s:s,s:I,s:I,s:s,s:s,s:f,s:s,s:s},"
        " s:{s:s,s:I,s:{}},"
        " s:{s:f,s:f,s:f,s:I,s:I,s:I,s:[f,f,f],"
        "    s:{s:[f,f,f,f,f,f,f,f,f],s:[I,I,I,I,I,I,I,I,I],s:I,s:f}},"
        " s:{s:I,s:I},"
        " s:[{s:s,s:s,s:b,s:b},{s:s,s:s,s:b,s:b},{s:s,s:s,s:b,s:b}],"
        " s:{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:{s:I,s:I,s:I}},"
        " s:{s:I,s:{s:I,s:I,s:b},s:{s:I,s:I,s:I,s:I,s:I},s:[s,s]}}",
        /* node */
        "node", "id", "aa11", "state", "training", "step", (json_int_t)1234, "max_steps",
        (json_int_t)5000, "run_id", "bb22", "version", "0.1.0", "uptime_s", 3723.5, "pub_addr",
        "tcp://127.0.0.1:7701", "sync_addr", "tcp://127.0.0.1:7702",
        /* model */
        "model", "digest", "cc33", "digest_updates", (json_int_t)3690, "version_vector",
        /* train */
        "train", "loss", 3.25, "steps_per_s", 2.5, "scale", 0.0009765625, "saturations",
        (json_int_t)7, "steps", (json_int_t)1200, "updates_made", (json_int_t)1190, "loss_history",
        3.5, 3.4, 3.25, "step_seconds", "buckets", 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        "counts", (json_int_t)0, (json_int_t)3, (json_int_t)900, (json_int_t)1150, (json_int_t)1190,
        (json_int_t)1199, (json_int_t)1200, (json_int_t)1200, (json_int_t)1200, "count",
        (json_int_t)1200, "sum", 301.25,
        /* ledger */
        "ledger", "updates", (json_int_t)3690, "checkpoint_updates", (json_int_t)3000,
        /* peers */
        "peers", "id", "p1", "state", "alive", "lagging", 0, "banned", 0, "id", "p2", "state",
        "suspect", "lagging", 1, "banned", 0, "id", "p3", "state", "joining", "lagging", 0,
        "banned", 1,
        /* net */
        "net", "bytes_out", (json_int_t)123456789, "bytes_in", (json_int_t)98765432, "updates_out",
        (json_int_t)1234, "updates_in", (json_int_t)2456, "updates_applied", (json_int_t)2450,
        "msgs_out", (json_int_t)400, "msgs_in", (json_int_t)812, "batches_out", (json_int_t)120,
        "requests_failed", (json_int_t)2, "dropped", "bad_signature", (json_int_t)3, "replay",
        (json_int_t)0, "queue_full", (json_int_t)9,
        /* swarm */
        "swarm", "lag_updates", (json_int_t)42, "agreement", "peers_compared", (json_int_t)2,
        "peers_agree", (json_int_t)2, "agree", 1, "peers_by_state", "joining", (json_int_t)1,
        "alive", (json_int_t)1, "suspect", (json_int_t)1, "dead", (json_int_t)0, "left",
        (json_int_t)0, "warnings", "peer p2 is suspect", "9 messages dropped");
    assert_non_null(st);
    return st;
}

/* Whether text holds exactly this line. */
static int has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)) != NULL; p++)
        if ((p == text || p[-1] == '\n') && p[n] == '\n') return 1;
    return 0;
}

static size_t count_prefix(const char *text, const char *prefix)
{
    size_t n = 0, k = strlen(prefix);
    for (const char *p = text; *p;) {
        if (strncmp(p, prefix, k) == 0) n++;
        const char *nl = strchr(p, '\n');
        if (!nl) break;
        p = nl + 1;
    }
    return n;
}

#define LINE(text, line)                                                                           \
    do {                                                                                           \
        if (!has_line((text), (line))) fail_msg("missing line: %s\n--- got:\n%s", (line), (text)); \
    } while (0)
#define NO_PREFIX(text, prefix)                                                                    \
    do {                                                                                           \
        if (count_prefix((text), (prefix))) fail_msg("unexpected %s in:\n%s", (prefix), (text));   \
    } while (0)

/* Every sample's family was declared (HELP then TYPE) before it, once. */
static void check_structure(const char *text)
{
    char declared[64][64];
    size_t n_declared = 0;
    const char *p = text;
    while (*p) {
        const char *nl = strchr(p, '\n');
        assert_non_null(nl); /* every line ends with a newline */
        char line[1024];
        size_t len = (size_t)(nl - p);
        assert_true(len < sizeof line);
        memcpy(line, p, len);
        line[len] = '\0';
        p = nl + 1;
        char name[64];
        if (strncmp(line, "# HELP ", 7) == 0) {
            assert_int_equal(sscanf(line + 7, "%63s", name), 1);
            for (size_t i = 0; i < n_declared; i++)
                if (strcmp(declared[i], name) == 0) fail_msg("family %s declared twice", name);
            assert_true(n_declared < 64);
            strcpy(declared[n_declared++], name);
            /* the TYPE line follows */
            char want[128];
            snprintf(want, sizeof want, "# TYPE %s ", name);
            assert_int_equal(strncmp(p, want, strlen(want)), 0);
            continue;
        }
        if (strncmp(line, "# TYPE ", 7) == 0) continue;
        assert_true(line[0] != '#' && line[0] != '\0');
        size_t k = strcspn(line, "{ ");
        assert_true(k < sizeof name);
        memcpy(name, line, k);
        name[k] = '\0';
        int found = 0;
        for (size_t i = 0; i < n_declared && !found; i++) {
            size_t d = strlen(declared[i]);
            found = strncmp(name, declared[i], d) == 0 &&
                    (name[d] == '\0' || strcmp(name + d, "_bucket") == 0 ||
                     strcmp(name + d, "_sum") == 0 || strcmp(name + d, "_count") == 0);
        }
        if (!found) fail_msg("sample of an undeclared family: %s", line);
    }
}

static void test_render_full(void **state)
{
    (void)state;
    json_t *st = full_status();
    char *t = swd_metrics_render(st);
    assert_non_null(t);
    check_structure(t);

    LINE(t, "# TYPE swarmd_info gauge");
    LINE(t, "swarmd_info{node_id=\"aa11\",run_id=\"bb22\",version=\"0.1.0\"} 1");
    LINE(t, "swarmd_node_state{state=\"training\"} 1");
    LINE(t, "swarmd_node_state{state=\"paused\"} 0");
    LINE(t, "swarmd_node_state{state=\"joining\"} 0");
    LINE(t, "swarmd_node_state{state=\"done\"} 0");
    LINE(t, "swarmd_node_state{state=\"syncing\"} 0");
    assert_int_equal(count_prefix(t, "swarmd_node_state{"), 5);
    LINE(t, "swarmd_step 1234");
    LINE(t, "swarmd_max_steps 5000");
    LINE(t, "swarmd_uptime_seconds 3723.5");

    LINE(t, "# TYPE swarmd_steps_total counter");
    LINE(t, "swarmd_steps_total 1200");
    LINE(t, "swarmd_updates_made_total 1190");
    LINE(t, "# TYPE swarmd_loss gauge");
    LINE(t, "swarmd_loss 3.25");
    LINE(t, "swarmd_steps_per_second 2.5");
    LINE(t, "swarmd_update_scale 0.0009765625");
    LINE(t, "swarmd_saturations_total 7");

    LINE(t, "# TYPE swarmd_step_duration_seconds histogram");
    LINE(t, "swarmd_step_duration_seconds_bucket{le=\"0.05\"} 0");
    LINE(t, "swarmd_step_duration_seconds_bucket{le=\"0.1\"} 3");
    LINE(t, "swarmd_step_duration_seconds_bucket{le=\"0.25\"} 900");
    LINE(t, "swarmd_step_duration_seconds_bucket{le=\"1\"} 1190");
    LINE(t, "swarmd_step_duration_seconds_bucket{le=\"2.5\"} 1199");
    LINE(t, "swarmd_step_duration_seconds_bucket{le=\"30\"} 1200");
    LINE(t, "swarmd_step_duration_seconds_bucket{le=\"+Inf\"} 1200");
    LINE(t, "swarmd_step_duration_seconds_sum 301.25");
    LINE(t, "swarmd_step_duration_seconds_count 1200");
    assert_int_equal(count_prefix(t, "swarmd_step_duration_seconds_bucket{"), 10);
    /* +Inf comes last among the buckets */
    assert_true(strstr(t, "le=\"30\"") < strstr(t, "le=\"+Inf\""));

    LINE(t, "swarmd_ledger_updates 3690");
    LINE(t, "swarmd_checkpoint_updates 3000");
    LINE(t, "swarmd_digest_updates 3690");

    LINE(t, "swarmd_updates_received_total 2456");
    LINE(t, "swarmd_updates_applied_total 2450");
    LINE(t, "swarmd_updates_sent_total 1234");
    LINE(t, "swarmd_batches_sent_total 120");
    LINE(t, "swarmd_messages_received_total 812");
    LINE(t, "swarmd_messages_sent_total 400");
    LINE(t, "# TYPE swarmd_messages_dropped_total counter");
    LINE(t, "swarmd_messages_dropped_total{reason=\"bad_signature\"} 3");
    LINE(t, "swarmd_messages_dropped_total{reason=\"replay\"} 0");
    LINE(t, "swarmd_messages_dropped_total{reason=\"queue_full\"} 9");
    LINE(t, "swarmd_bytes_received_total 98765432");
    LINE(t, "swarmd_bytes_sent_total 123456789");
    LINE(t, "swarmd_sync_requests_failed_total 2");

    LINE(t, "swarmd_peers{state=\"joining\"} 1");
    LINE(t, "swarmd_peers{state=\"alive\"} 1");
    LINE(t, "swarmd_peers{state=\"suspect\"} 1");
    LINE(t, "swarmd_peers{state=\"dead\"} 0");
    LINE(t, "swarmd_peers{state=\"left\"} 0");
    LINE(t, "swarmd_peers_lagging 1");
    LINE(t, "swarmd_peers_banned 1");
    LINE(t, "swarmd_sync_lag_updates 42");
    LINE(t, "swarmd_digest_agreement 1");
    LINE(t, "swarmd_digest_peers_compared 2");
    LINE(t, "swarmd_digest_peers_agreeing 2");
    LINE(t, "swarmd_warnings 2");

    /* every counter ends in _total, and nothing else does */
    for (const char *p = t; (p = strstr(p, "# TYPE ")) != NULL; p++) {
        char name[64], type[16];
        assert_int_equal(sscanf(p, "# TYPE %63s %15s", name, type), 2);
        size_t n = strlen(name);
        int total = n > 6 && strcmp(name + n - 6, "_total") == 0;
        assert_int_equal(total, strcmp(type, "counter") == 0);
        assert_int_equal(strncmp(name, "swarmd_", 7), 0);
    }
    free(t);

    /* disagreement is 0, and a "done" node says so */
    json_object_set_new(json_object_get(json_object_get(st, "swarm"), "agreement"), "agree",
                        json_false());
    json_object_set_new(json_object_get(st, "node"), "state", json_string("done"));
    t = swd_metrics_render(st);
    LINE(t, "swarmd_digest_agreement 0");
    LINE(t, "swarmd_node_state{state=\"done\"} 1");
    LINE(t, "swarmd_node_state{state=\"training\"} 0");
    free(t);
    json_decref(st);
}

static void test_render_partial(void **state)
{
    (void)state;
    /* not an object, empty object: no metrics, no crash */
    json_t *values[] = {json_null(), json_array(), json_integer(3), json_object()};
    for (size_t i = 0; i < 4; i++) {
        char *t = swd_metrics_render(values[i]);
        assert_non_null(t);
        assert_string_equal(t, "");
        free(t);
        json_decref(values[i]);
    }
    char *t = swd_metrics_render(NULL);
    assert_non_null(t);
    assert_string_equal(t, "");
    free(t);

    /* an issue-4 status: no steps, histogram, swarm object; loss still null */
    json_t *st = json_pack("{s:{s:s,s:I},s:{s:n,s:f,s:I},s:[{s:s},{s:s},{s:i},{s:s}],"
                           "s:{s:I,s:{s:I}}}",
                           "node", "state", "joining", "step", (json_int_t)0, "train", "loss",
                           "steps_per_s", 0.0, "saturations", (json_int_t)0, "peers", "state",
                           "alive", "state", "alive", "state", 5, "state", "dead", "net",
                           "bytes_in", (json_int_t)10, "dropped", "malformed", (json_int_t)1);
    t = swd_metrics_render(st);
    assert_non_null(t);
    check_structure(t);
    NO_PREFIX(t, "swarmd_loss");
    NO_PREFIX(t, "# HELP swarmd_loss ");
    NO_PREFIX(t, "swarmd_steps_total");
    NO_PREFIX(t, "swarmd_step_duration_seconds");
    NO_PREFIX(t, "swarmd_sync_lag_updates");
    NO_PREFIX(t, "swarmd_digest_agreement");
    NO_PREFIX(t, "swarmd_info");
    NO_PREFIX(t, "swarmd_warnings");
    LINE(t, "swarmd_node_state{state=\"joining\"} 1");
    LINE(t, "swarmd_steps_per_second 0");
    LINE(t, "swarmd_bytes_received_total 10");
    LINE(t, "swarmd_messages_dropped_total{reason=\"malformed\"} 1");
    /* peers_by_state absent: counted from the peers table, every state present */
    LINE(t, "swarmd_peers{state=\"alive\"} 2");
    LINE(t, "swarmd_peers{state=\"dead\"} 1");
    LINE(t, "swarmd_peers{state=\"suspect\"} 0");
    LINE(t, "swarmd_peers_banned 0");
    free(t);
    json_decref(st);

    /* wrong types everywhere and an inconsistent histogram: left out */
    st = json_pack("{s:{s:i,s:s,s:s},s:{s:s,s:{s:[f,f],s:[I,I],s:I,s:f}},s:[],s:{s:s,s:{s:n}}}",
                   "node", "state", 3, "step", "12", "max_steps", "x", "train", "steps", "many",
                   "step_seconds", "buckets", 0.5, 0.1, "counts", (json_int_t)1, (json_int_t)2,
                   "count", (json_int_t)2, "sum", 1.0, "peers", "swarm", "lag_updates", "none",
                   "agreement", "agree");
    t = swd_metrics_render(st);
    assert_non_null(t);
    check_structure(t);
    NO_PREFIX(t, "swarmd_node_state");
    NO_PREFIX(t, "swarmd_step");
    NO_PREFIX(t, "swarmd_max_steps");
    NO_PREFIX(t, "swarmd_sync_lag_updates");
    NO_PREFIX(t, "swarmd_digest_agreement");
    LINE(t, "swarmd_peers{state=\"alive\"} 0");
    free(t);
    /* counts above count, then decreasing counts: left out too */
    json_t *h = json_object_get(json_object_get(st, "train"), "step_seconds");
    json_object_set_new(h, "buckets", json_pack("[f,f]", 0.1, 0.5));
    json_object_set_new(h, "counts", json_pack("[I,I]", (json_int_t)1, (json_int_t)3));
    t = swd_metrics_render(st);
    NO_PREFIX(t, "swarmd_step_duration_seconds");
    free(t);
    json_object_set_new(h, "counts", json_pack("[I,I]", (json_int_t)2, (json_int_t)1));
    t = swd_metrics_render(st);
    NO_PREFIX(t, "swarmd_step_duration_seconds");
    free(t);
    /* once consistent, it appears (so the cases above were refused for their flaw) */
    json_object_set_new(h, "counts", json_pack("[I,I]", (json_int_t)1, (json_int_t)2));
    t = swd_metrics_render(st);
    LINE(t, "swarmd_step_duration_seconds_bucket{le=\"0.5\"} 2");
    LINE(t, "swarmd_step_duration_seconds_bucket{le=\"+Inf\"} 2");
    free(t);
    json_decref(st);
}

static void test_escaping_and_numbers(void **state)
{
    (void)state;
    json_t *st = json_pack("{s:{s:s,s:s,s:s},s:{s:f,s:f,s:I},s:{s:{s:I,s:I}}}", "node", "id",
                           "a\"b", "version", "x\\y\nz", "state", "odd\"state", "train", "loss",
                           0.1, "steps_per_s", 1e-5, "steps", (json_int_t)9007199254740993LL, "net",
                           "dropped", "we\"ird\\reason\n", (json_int_t)1, "plain", (json_int_t)2);
    char *t = swd_metrics_render(st);
    assert_non_null(t);
    check_structure(t);
    LINE(t, "swarmd_info{node_id=\"a\\\"b\",version=\"x\\\\y\\nz\"} 1");
    /* an unknown current state still gets its series */
    LINE(t, "swarmd_node_state{state=\"odd\\\"state\"} 1");
    LINE(t, "swarmd_node_state{state=\"training\"} 0");
    LINE(t, "swarmd_messages_dropped_total{reason=\"we\\\"ird\\\\reason\\n\"} 1");
    LINE(t, "swarmd_messages_dropped_total{reason=\"plain\"} 2");
    /* shortest round-trip reals, exact integers beyond 2^53 */
    LINE(t, "swarmd_loss 0.1");
    LINE(t, "swarmd_steps_per_second 1e-05");
    LINE(t, "swarmd_steps_total 9007199254740993");
    free(t);
    json_decref(st);
}

/* ---- the server ---- */

static int url_port(const char *url)
{
    const char *c = strrchr(url, ':');
    assert_non_null(c);
    return atoi(c + 1);
}

static int connect_port(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Reads everything until EOF; returns the length (-1 on a read error). */
static long read_all(int fd, char *buf, size_t size)
{
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, buf + len, size - 1 - len);
        if (n < 0) return -1;
        if (n == 0) break;
        len += (size_t)n;
        if (len == size - 1) break;
    }
    buf[len] = '\0';
    return (long)len;
}

typedef struct reply {
    int status;
    char raw[8192];
    const char *body;
} reply;

static void http(int port, const char *method, const char *path, reply *r)
{
    int fd = connect_port(port);
    assert_true(fd >= 0);
    char req[256];
    int n = snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                     method, path);
    assert_int_equal(send(fd, req, (size_t)n, MSG_NOSIGNAL), n);
    assert_true(read_all(fd, r->raw, sizeof r->raw) > 0);
    close(fd);
    assert_int_equal(sscanf(r->raw, "HTTP/1.1 %d", &r->status), 1);
    const char *b = strstr(r->raw, "\r\n\r\n");
    assert_non_null(b);
    r->body = b + 4;
}

static int has_header(const reply *r, const char *line)
{
    char want[256];
    snprintf(want, sizeof want, "\r\n%s\r\n", line);
    const char *end = strstr(r->raw, "\r\n\r\n");
    const char *p = strstr(r->raw, want);
    /* header names are case-insensitive, but libmicrohttpd keeps ours as given */
    return p && p < end + 2;
}

static void test_server(void **state)
{
    (void)state;
    swd_metrics *m = NULL;
    sw_diag diag = {{0}};
    int rc = swd_metrics_open("127.0.0.1:0", &m, &diag);
    if (rc) fail_msg("open: %s", diag.msg);
    const char *url = swd_metrics_url(m);
    assert_int_equal(strncmp(url, "http://127.0.0.1:", 17), 0);
    assert_non_null(strstr(url, "/metrics"));
    int port = url_port(url);
    assert_true(port > 0 && port < 65536);

    reply r;
    http(port, "GET", "/metrics", &r);
    assert_int_equal(r.status, 503); /* nothing published yet */

    swd_metrics_publish(m, strdup("# HELP a x\n# TYPE a gauge\na 1\n"));
    http(port, "GET", "/metrics", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "# HELP a x\n# TYPE a gauge\na 1\n");
    assert_true(has_header(&r, "Content-Type: " SWD_METRICS_CONTENT_TYPE));

    /* publish swaps: the next scrape sees the new text only */
    swd_metrics_publish(m, strdup("b 2\n"));
    http(port, "GET", "/metrics", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "b 2\n");

    /* a rendered status, through the server unchanged */
    json_t *st = full_status();
    char *text = swd_metrics_render(st);
    char *copy = strdup(text);
    swd_metrics_publish(m, text);
    http(port, "GET", "/metrics", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, copy);
    free(copy);
    json_decref(st);

    http(port, "HEAD", "/metrics", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "");

    http(port, "GET", "/", &r);
    assert_int_equal(r.status, 404);
    http(port, "GET", "/metricsx", &r);
    assert_int_equal(r.status, 404);
    http(port, "POST", "/metrics", &r);
    assert_int_equal(r.status, 405);
    assert_true(has_header(&r, "Allow: GET, HEAD"));
    http(port, "DELETE", "/metrics", &r);
    assert_int_equal(r.status, 405);

    /* the query string is not part of the path */
    http(port, "GET", "/metrics?x=1", &r);
    assert_int_equal(r.status, 200);

    swd_metrics_publish(m, NULL);
    http(port, "GET", "/metrics", &r);
    assert_int_equal(r.status, 503);

    swd_metrics_close(m);
    /* closed: the port no longer accepts connections */
    int fd = connect_port(port);
    assert_int_equal(fd, -1);
    swd_metrics_close(NULL);
}

static void test_connection_limit(void **state)
{
    (void)state;
    swd_metrics *m = NULL;
    sw_diag diag = {{0}};
    assert_int_equal(swd_metrics_open("127.0.0.1:0", &m, &diag), 0);
    int port = url_port(swd_metrics_url(m));
    swd_metrics_publish(m, strdup("a 1\n"));

    int idle[SWD_METRICS_MAX_CONNECTIONS];
    for (size_t i = 0; i < SWD_METRICS_MAX_CONNECTIONS; i++) {
        idle[i] = connect_port(port);
        assert_true(idle[i] >= 0);
    }
    /* one more waits in the kernel's backlog, unanswered, while the limit holds */
    int fd = connect_port(port);
    assert_true(fd >= 0);
    const char req[] = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    assert_int_equal(send(fd, req, sizeof req - 1, MSG_NOSIGNAL), (ssize_t)(sizeof req - 1));
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    assert_int_equal(poll(&pfd, 1, 500), 0);

    /* a slot frees: it is served */
    close(idle[0]);
    reply r;
    assert_true(read_all(fd, r.raw, sizeof r.raw) > 0);
    close(fd);
    assert_int_equal(strncmp(r.raw, "HTTP/1.1 200", 12), 0);
    assert_string_equal(strstr(r.raw, "\r\n\r\n") + 4, "a 1\n");

    for (size_t i = 1; i < SWD_METRICS_MAX_CONNECTIONS; i++)
        close(idle[i]);
    http(port, "GET", "/metrics", &r);
    assert_int_equal(r.status, 200);
    swd_metrics_close(m);
}

static void test_open_errors(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "127.0.0.1",        "127.0.0.1:",    "127.0.0.1:70000",
        "127.0.0.1:-1",     "127.0.0.1:12x", "::1:9100",
        "[::1]9100",        "[::1",          "",
        "127.0.0.1:123456",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        swd_metrics *const before = (swd_metrics *)(uintptr_t)0x10; /* must stay untouched */
        swd_metrics *m = before;
        sw_diag diag = {{0}};
        int rc = swd_metrics_open(bad[i], &m, &diag);
        if (rc != SW_EINVAL) fail_msg("'%s': rc %d (%s)", bad[i], rc, diag.msg);
        assert_ptr_equal(m, before);
        if (bad[i][0]) assert_non_null(strstr(diag.msg, bad[i]));
    }
    char longname[400];
    memset(longname, 'a', sizeof longname - 3);
    strcpy(longname + sizeof longname - 3, ":1");
    swd_metrics *m = NULL;
    sw_diag diag = {{0}};
    assert_int_equal(swd_metrics_open(longname, &m, &diag), SW_EINVAL);
    assert_null(m);

    /* a port in use: the error says bind and why */
    swd_metrics *a = NULL;
    assert_int_equal(swd_metrics_open("127.0.0.1:0", &a, &diag), 0);
    char again[64];
    snprintf(again, sizeof again, "127.0.0.1:%d", url_port(swd_metrics_url(a)));
    int rc = swd_metrics_open(again, &m, &diag);
    assert_int_equal(rc, -EADDRINUSE);
    assert_null(m);
    assert_non_null(strstr(diag.msg, again));
    assert_non_null(strstr(diag.msg, "bind"));
    swd_metrics_close(a);

    /* a host name resolves (localhost), and the URL keeps the name */
    rc = swd_metrics_open("localhost:0", &m, &diag);
    if (rc) fail_msg("localhost:0: %s", diag.msg);
    assert_int_equal(strncmp(swd_metrics_url(m), "http://localhost:", 17), 0);
    swd_metrics_close(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render_full),          cmocka_unit_test(test_render_partial),
        cmocka_unit_test(test_escaping_and_numbers), cmocka_unit_test(test_server),
        cmocka_unit_test(test_connection_limit),     cmocka_unit_test(test_open_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
