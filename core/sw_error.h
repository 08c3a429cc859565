/*
 * sw_error: the one list of error codes used by every part of swarmtune, and
 * sw_diag, the human-readable detail that travels with an error.
 *
 * Every fallible function returns int: 0 on success, a negative SW_E* code on
 * failure.  Codes are negative errno values where one fits, project codes
 * (below -1000) for the rest.  Functions that read external input (files,
 * network-decoded structs) also take an `sw_diag *` that receives one line
 * naming the input and the problem ("model.safetensors: tensor 'wte.weight':
 * byte range ends past the end of the file").  The diag may be NULL.
 *
 * Thread safety: everything here is reentrant; a sw_diag belongs to its caller.
 */
#ifndef SW_ERROR_H
#define SW_ERROR_H

#include <errno.h>
#include <stddef.h>

/* X(name, value, text) */
#define SW_ERROR_LIST(X)                                                                           \
    X(SW_OK, 0, "success")                                                                         \
    X(SW_ENOMEM, -ENOMEM, "out of memory")                                                         \
    X(SW_EINVAL, -EINVAL, "invalid argument")                                                      \
    X(SW_EIO, -EIO, "input/output error")                                                          \
    X(SW_ENOENT, -ENOENT, "no such file or directory")                                             \
    X(SW_EACCES, -EACCES, "permission denied")                                                     \
    X(SW_EEXIST, -EEXIST, "already exists")                                                        \
    X(SW_ETIMEDOUT, -ETIMEDOUT, "timed out")                                                       \
    X(SW_EFORMAT, -1001, "malformed input")                                                        \
    X(SW_ETRUNCATED, -1002, "input is truncated")                                                  \
    X(SW_EUNSUPPORTED, -1003, "unsupported feature")                                               \
    X(SW_ETOOBIG, -1004, "input exceeds a limit")                                                  \
    X(SW_EMISMATCH, -1005, "inputs do not match")                                                  \
    X(SW_ENOTFOUND, -1006, "not found")

enum sw_error {
#define SW_ERROR_ENUM(name, value, text) name = (value),
    SW_ERROR_LIST(SW_ERROR_ENUM)
#undef SW_ERROR_ENUM
};

/* Text for a code; unknown negative values are treated as -errno. Never NULL. */
const char *sw_strerror(int code);

/* Converts the current errno (after a failed libc call) to a SW_E code. */
int sw_error_from_errno(int errnum);

#define SW_DIAG_MAX 512

typedef struct sw_diag {
    char msg[SW_DIAG_MAX];
} sw_diag;

/*
 * Records a message in diag (if diag is not NULL) and returns code, so that
 * callers can write `return sw_diag_set(diag, SW_EFORMAT, "%s: ...", path);`.
 */
#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
int sw_diag_set(sw_diag *diag, int code, const char *fmt, ...);

/* Prefixes the existing message with "prefix: " (keeps the code path simple). */
void sw_diag_prefix(sw_diag *diag, const char *prefix);

/* Aborts with a message: for programmer errors only, on in release builds. */
#define SW_ASSERT(cond)                                                                            \
    do {                                                                                           \
        if (!(cond)) sw_assert_fail(#cond, __FILE__, __LINE__);                                    \
    } while (0)

#if defined(__GNUC__)
__attribute__((noreturn))
#endif
void sw_assert_fail(const char *expr, const char *file, int line);

#endif
