/*
 * ctl_client: swarmctl's side of swarmd's control socket, and the only file
 * of cli/ that calls nng.
 *
 * The daemon serves an nng REP socket over IPC (file mode 0600; by default
 * STATE_DIR/control.sock).  One call is one REQ round trip: the request is
 * one JSON object {"cmd":"<name>", ...arguments} (UTF-8, no NUL), the reply
 * one JSON object; a daemon that cannot serve the command answers
 * {"error":"<text>"} (docs/cli.md has the commands).  Every
 * failure names the control socket path, and "nothing listens there" has its
 * own code and message (SWCTL_CTL_ENODAEMON) because it is the common case:
 * the daemon is not running, or runs with another state directory.
 *
 * Ownership: a json_t returned is the caller's (json_decref).  Each call
 * opens and closes its own socket.  Called from swarmctl's main thread; a
 * call runs its connect on a short-lived thread of its own (ctl_client.c).
 */
#ifndef SWCTL_CTL_CLIENT_H
#define SWCTL_CTL_CLIENT_H

#include <errno.h>
#include <stddef.h>

#include <jansson.h>

#include "sw_error.h"

/* The state directory of the packaged deployment, used when neither option is given. */
#define SWCTL_CTL_DEFAULT_STATE_DIR "/var/lib/swarmd"
#define SWCTL_CTL_SOCKET_NAME "control.sock"
#define SWCTL_CTL_DEFAULT_TIMEOUT_MS 5000
/* Replies beyond this are refused (a status with a thousand peers is well under 1 MiB). */
#define SWCTL_CTL_REPLY_MAX (16u << 20)
/* sockaddr_un's sun_path holds 108 bytes, NUL included. */
#define SWCTL_CTL_PATH_MAX 107

/*
 * Failures of a control call, beyond out-of-memory; errno values where one
 * fits, as sw_error.h does, so sw_strerror gives a sensible text.
 */
#define SWCTL_CTL_ENODAEMON (-ECONNREFUSED) /* no socket file, or nobody listens on it */
#define SWCTL_CTL_EDENIED SW_EACCES         /* the socket's mode or owner keeps us out */
#define SWCTL_CTL_ETIMEDOUT (-ETIMEDOUT)    /* no reply within the timeout */
#define SWCTL_CTL_EBADREPLY SW_EFORMAT      /* the reply is not one JSON object */
#define SWCTL_CTL_EDAEMON (-EREMOTEIO)      /* the daemon answered {"error": ...} */
#define SWCTL_CTL_EFAIL SW_EIO              /* any other transport failure */

/*
 * Resolves the socket path: `control` if given, else STATE_DIR/control.sock
 * with `state_dir` (or SWCTL_CTL_DEFAULT_STATE_DIR when NULL).  SW_ETOOBIG
 * when the result does not fit a unix socket address.
 */
int swctl_ctl_path(const char *control, const char *state_dir, char *buf, size_t size,
                   sw_diag *diag);

/*
 * Sends `request` (bytes, no NUL) to the daemon at `path` and returns its
 * reply (malloc'd, NUL-terminated; *len excludes the NUL).  timeout_ms
 * bounds the whole exchange: connect, send and receive.
 */
int swctl_ctl_request(const char *path, const char *request, size_t request_len, int timeout_ms,
                      char **reply, size_t *len, sw_diag *diag);

/*
 * Sends {"cmd":cmd} and returns the reply as a JSON object.  A reply that is
 * not a JSON object is SWCTL_CTL_EBADREPLY ("PATH: daemon sent an invalid
 * <cmd>: <why>"); {"error": TEXT} is SWCTL_CTL_EDAEMON with "PATH: the
 * daemon answered: TEXT" (control characters replaced).
 */
int swctl_ctl_call(const char *path, const char *cmd, int timeout_ms, json_t **out, sw_diag *diag);

/*
 * swctl_ctl_call with arguments: `request` is the whole request object (its
 * "cmd" string names the command in messages); it is only read.  Replies
 * are checked as by swctl_ctl_call.
 */
int swctl_ctl_send(const char *path, const json_t *request, int timeout_ms, json_t **out,
                   sw_diag *diag);

/* Default timeouts of the verbs whose reply comes when the work is done (docs/cli.md). */
#define SWCTL_CTL_JOIN_TIMEOUT_MS 30000
#define SWCTL_CTL_CHECKPOINT_TIMEOUT_MS 120000
#define SWCTL_CTL_LONG_TIMEOUT_MS 600000 /* export, eval */

#endif
