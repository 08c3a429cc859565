#include "ctl_client.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/util/platform.h>

static const char ctl_no_daemon_hint[] =
    "is swarmd running? (see `systemctl status swarmd`, or pass --control PATH / "
    "--state-dir DIR)";

int swctl_ctl_path(const char *control, const char *state_dir, char *buf, size_t size,
                   sw_diag *diag)
{
    int n;
    if (control != NULL) {
        n = snprintf(buf, size, "%s", control);
    } else {
        const char *dir = state_dir != NULL ? state_dir : SWCTL_CTL_DEFAULT_STATE_DIR;
        size_t dl = strlen(dir);
        /* "DIR/" and "DIR" both give DIR/control.sock. */
        bool slash = dl > 0 && dir[dl - 1] == '/';
        n = snprintf(buf, size, "%s%s%s", dir, slash ? "" : "/", SWCTL_CTL_SOCKET_NAME);
    }
    if (n < 0 || (size_t)n >= size || (size_t)n > SWCTL_CTL_PATH_MAX)
        return sw_diag_set(diag, SW_ETOOBIG,
                           "%.200s%s: control socket path longer than the %d bytes a unix "
                           "socket allows",
                           control != NULL ? control : state_dir, control != NULL ? "" : "/...",
                           SWCTL_CTL_PATH_MAX);
    return 0;
}

/* The daemon's text goes to a terminal: no escape sequences from it. */
static void ctl_scrub(char *s)
{
    for (; *s != '\0'; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f) *s = '?';
}

/* Turns an nng failure at `stage` into a typed code and a message naming the path. */
static int ctl_error(const char *path, const char *stage, int nrc, int timeout_ms, sw_diag *diag)
{
    switch (nrc) {
    case NNG_ENOENT:
    case NNG_ECONNREFUSED:
        return sw_diag_set(diag, SWCTL_CTL_ENODAEMON, "no daemon at %s: %s", path,
                           ctl_no_daemon_hint);
    case NNG_EPERM:
        return sw_diag_set(diag, SWCTL_CTL_EDENIED,
                           "%s: permission denied (the control socket is mode 0600: run "
                           "swarmctl as the user swarmd runs as)",
                           path);
    case NNG_ETIMEDOUT:
        return sw_diag_set(diag, SWCTL_CTL_ETIMEDOUT,
                           "%s: no reply from the daemon within %d ms while %s (is it stuck? "
                           "try a larger --timeout-ms)",
                           path, timeout_ms, stage);
    case NNG_ENOMEM:
        return sw_diag_set(diag, SW_ENOMEM, "%s: out of memory while %s", path, stage);
    case NNG_EADDRINVAL:
        return sw_diag_set(diag, SWCTL_CTL_EFAIL, "%s: not a usable unix socket path", path);
    default:
        return sw_diag_set(diag, SWCTL_CTL_EFAIL, "%s: %s failed: %s", path, stage,
                           nng_strerror(nrc));
    }
}

/*
 * nng_dial, bounded by a deadline.  A synchronous dial is what tells "no
 * daemon" (ENOENT, ECONNREFUSED) from the rest, but after the connect it
 * waits for the SP handshake, which nng bounds only by its own 10 s: a
 * stopped daemon would outlast --timeout-ms.  So the dial runs on a thread
 * of its own, and at the deadline the socket is closed, which aborts it.
 * (A bare connect as a probe is no way out: after one, nngcat's REP stops
 * answering the connections that follow.)
 */
typedef struct ctl_dial {
    nng_socket sock;
    const char *url;
    nng_mtx *mtx;
    nng_cv *cv;
    bool done; /* under mtx */
    int rc;    /* under mtx */
} ctl_dial;

static void ctl_dial_main(void *arg)
{
    ctl_dial *d = arg;
    int rc = nng_dial(d->sock, d->url, NULL, 0);
    nng_mtx_lock(d->mtx);
    d->rc = rc;
    d->done = true;
    nng_cv_wake(d->cv);
    nng_mtx_unlock(d->mtx);
}

/* 0 or an nng error; NNG_ETIMEDOUT with *closed set when the deadline passed. */
static int ctl_dial_until(nng_socket sock, const char *url, nng_time deadline, bool *closed)
{
    ctl_dial d = {.sock = sock, .url = url, .mtx = NULL, .cv = NULL, .done = false, .rc = 0};
    nng_thread *thr = NULL;
    int nrc = nng_mtx_alloc(&d.mtx);
    if (nrc == 0) nrc = nng_cv_alloc(&d.cv, d.mtx);
    if (nrc == 0) nrc = nng_thread_create(&thr, ctl_dial_main, &d);
    if (nrc == 0) {
        nng_mtx_lock(d.mtx);
        while (!d.done && nng_cv_until(d.cv, deadline) != NNG_ETIMEDOUT) {
        }
        bool done = d.done;
        nng_mtx_unlock(d.mtx);
        if (!done) {
            nng_close(sock);
            *closed = true;
        }
        nng_thread_destroy(thr); /* joins */
        nrc = done ? d.rc : NNG_ETIMEDOUT;
    }
    if (d.cv != NULL) nng_cv_free(d.cv);
    if (d.mtx != NULL) nng_mtx_free(d.mtx);
    return nrc;
}

/* Milliseconds left until deadline, at least 1 while any remain, 0 after. */
static int ctl_left(nng_time deadline)
{
    nng_time now = nng_clock();
    return now >= deadline ? 0 : (int)(deadline - now);
}

int swctl_ctl_request(const char *path, const char *request, size_t request_len, int timeout_ms,
                      char **reply, size_t *len, sw_diag *diag)
{
    SW_ASSERT(path != NULL && request != NULL && reply != NULL && len != NULL && timeout_ms > 0);
    if (strlen(path) > SWCTL_CTL_PATH_MAX)
        return sw_diag_set(diag, SW_ETOOBIG,
                           "%s: control socket path longer than the %d bytes a unix socket "
                           "allows",
                           path, SWCTL_CTL_PATH_MAX);
    char url[SWCTL_CTL_PATH_MAX + 16];
    snprintf(url, sizeof url, "ipc://%s", path);
    nng_time deadline = nng_clock() + (nng_time)timeout_ms;

    nng_socket sock = NNG_SOCKET_INITIALIZER;
    bool opened = false;
    char *buf = NULL;
    size_t sz = 0;
    int rc, nrc, left;
    if ((nrc = nng_req0_open(&sock)) != 0) {
        rc = ctl_error(path, "opening a socket", nrc, timeout_ms, diag);
        goto fail;
    }
    opened = true;
    /*
     * A status is idempotent, but a resent request would queue behind the
     * first in a stuck daemon: one request, one deadline.  The size bound
     * keeps a broken daemon from making us allocate without limit.
     */
    if ((nrc = nng_socket_set_ms(sock, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE)) != 0 ||
        (nrc = nng_socket_set_size(sock, NNG_OPT_RECVMAXSZ, SWCTL_CTL_REPLY_MAX)) != 0) {
        rc = ctl_error(path, "setting socket options", nrc, timeout_ms, diag);
        goto fail;
    }
    bool closed = false;
    if ((nrc = ctl_dial_until(sock, url, deadline, &closed)) != 0) {
        if (closed) opened = false;
        rc = ctl_error(path, "connecting", nrc, timeout_ms, diag);
        goto fail;
    }
    /* nng_send with flags 0 copies the buffer and does not keep it. */
    nrc = (left = ctl_left(deadline)) == 0 ? NNG_ETIMEDOUT
                                           : nng_socket_set_ms(sock, NNG_OPT_SENDTIMEO, left);
    if (nrc == 0) nrc = nng_send(sock, (void *)request, request_len, 0);
    if (nrc != 0) {
        rc = ctl_error(path, "sending the request", nrc, timeout_ms, diag);
        goto fail;
    }
    nrc = (left = ctl_left(deadline)) == 0 ? NNG_ETIMEDOUT
                                           : nng_socket_set_ms(sock, NNG_OPT_RECVTIMEO, left);
    if (nrc == 0) nrc = nng_recv(sock, &buf, &sz, NNG_FLAG_ALLOC);
    if (nrc != 0) {
        buf = NULL;
        rc = ctl_error(path, "waiting for the reply", nrc, timeout_ms, diag);
        goto fail;
    }
    char *out = malloc(sz + 1);
    if (out == NULL) {
        rc = sw_diag_set(diag, SW_ENOMEM, "%s: out of memory for a reply of %zu bytes", path, sz);
        goto fail;
    }
    memcpy(out, buf, sz);
    out[sz] = '\0';
    nng_free(buf, sz);
    nng_close(sock);
    *reply = out;
    *len = sz;
    return 0;
fail:
    if (buf != NULL) nng_free(buf, sz);
    if (opened) nng_close(sock);
    return rc;
}

int swctl_ctl_call(const char *path, const char *cmd, int timeout_ms, json_t **out, sw_diag *diag)
{
    json_t *req = json_pack("{s:s}", "cmd", cmd);
    if (req == NULL) return sw_diag_set(diag, SW_ENOMEM, "%s: out of memory", path);
    int rc = swctl_ctl_send(path, req, timeout_ms, out, diag);
    json_decref(req);
    return rc;
}

int swctl_ctl_send(const char *path, const json_t *request, int timeout_ms, json_t **out,
                   sw_diag *diag)
{
    const char *cmd = json_string_value(json_object_get(request, "cmd"));
    SW_ASSERT(cmd != NULL);
    char *text = json_dumps(request, JSON_COMPACT);
    if (text == NULL) return sw_diag_set(diag, SW_ENOMEM, "%s: out of memory", path);
    char *reply = NULL;
    size_t len = 0;
    int rc = swctl_ctl_request(path, text, strlen(text), timeout_ms, &reply, &len, diag);
    free(text);
    if (rc != 0) return rc;

    /* A C server may count the terminating NUL in the message: tolerate exactly one. */
    size_t n = len > 0 && reply[len - 1] == '\0' ? len - 1 : len;
    json_error_t jerr;
    json_t *root = json_loadb(reply, n, JSON_REJECT_DUPLICATES, &jerr);
    free(reply);
    if (root == NULL)
        return sw_diag_set(diag, SWCTL_CTL_EBADREPLY,
                           "%s: daemon sent an invalid %s: not JSON (byte %d: %s)", path, cmd,
                           jerr.position, jerr.text);
    if (!json_is_object(root)) {
        json_decref(root);
        return sw_diag_set(diag, SWCTL_CTL_EBADREPLY,
                           "%s: daemon sent an invalid %s: not a JSON object", path, cmd);
    }
    json_t *err = json_object_get(root, "error");
    if (err != NULL) {
        rc = json_is_string(err)
                 ? sw_diag_set(diag, SWCTL_CTL_EDAEMON, "%s: the daemon answered: %s", path,
                               json_string_value(err))
                 : sw_diag_set(diag, SWCTL_CTL_EBADREPLY,
                               "%s: daemon sent an invalid %s: \"error\" is not a string", path,
                               cmd);
        if (diag != NULL) ctl_scrub(diag->msg);
        json_decref(root);
        return rc;
    }
    *out = root;
    return 0;
}
