/*
 * metrics: Prometheus metrics for swarmd.  Two halves:
 *
 *  - swd_metrics_render turns a status object (the one `swarmctl status
 *    --json` prints, docs/cli.md) into the Prometheus text exposition format
 *    0.0.4.  The status is the one source of truth, so a scrape and a status
 *    taken at the same moment always agree.  The metrics are the fields of
 *    the status schema (core/status.h) that name one, in its order; the
 *    table in docs/operations.md ("Metrics") is swd_metrics_write_doc's.  A
 *    field missing from the status (an older or partial one) or of the
 *    wrong JSON type leaves its metric out; nothing in the object can make
 *    it fail.
 *
 *  - swd_metrics: a small HTTP server (libmicrohttpd, its own thread) that
 *    answers GET /metrics with the latest text handed to swd_metrics_publish.
 *    HEAD works as GET without a body; other methods get 405, other paths
 *    404, and a scrape before the first publish 503.  At most
 *    SWD_METRICS_MAX_CONNECTIONS connections at once; an idle connection is
 *    closed after SWD_METRICS_TIMEOUT_S seconds.
 *
 * Ownership: swd_metrics_render returns a malloc'd string the caller frees.
 * swd_metrics_publish takes ownership of its text.
 *
 * Thread safety: swd_metrics_render is reentrant.  open, publish, url and
 * close are called by one thread (the loop thread); the server's own thread
 * only reads the published text, under a mutex.
 */
#ifndef SWD_METRICS_H
#define SWD_METRICS_H

#include <stdio.h>

#include <jansson.h>

#include "sw_error.h"

#define SWD_METRICS_MAX_CONNECTIONS 32
#define SWD_METRICS_TIMEOUT_S 10
/* "text/plain; version=0.0.4; charset=utf-8": the exposition format's type. */
#define SWD_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/*
 * The exposition of `status` (a JSON object; anything else gives a text
 * with no metrics).  NULL only when out of memory.
 */
char *swd_metrics_render(const json_t *status);

/* The metrics table of docs/operations.md (`swarmd --dump-metrics-doc`). */
void swd_metrics_write_doc(FILE *out);

typedef struct swd_metrics swd_metrics;

/*
 * Starts serving on host_port: "HOST:PORT" where HOST is an IPv4 literal, a
 * bracketed IPv6 literal ("[::1]:9100") or a name resolved with getaddrinfo
 * (the first address that binds is used), or empty for every IPv4 interface
 * (":9100"); PORT is 0..65535, 0 letting the kernel pick.  On failure *out
 * is untouched and diag names host_port and the problem (SW_EINVAL for a
 * malformed address, SW_ENOTFOUND for a name that does not resolve, the
 * errno code of a failed bind).
 */
int swd_metrics_open(const char *host_port, swd_metrics **out, sw_diag *diag);

/* "http://HOST:PORT/metrics" with the port actually bound. */
const char *swd_metrics_url(const swd_metrics *m);

/* Replaces the text served (takes ownership of text; NULL serves 503 again). */
void swd_metrics_publish(swd_metrics *m, char *text);

/* Stops the server (waits for its thread) and frees m.  NULL is fine. */
void swd_metrics_close(swd_metrics *m);

#endif
