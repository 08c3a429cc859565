#include "sw_error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *sw_strerror(int code)
{
    switch (code) {
#define SW_ERROR_CASE(name, value, text)                                                           \
    case name:                                                                                     \
        return text;
        SW_ERROR_LIST(SW_ERROR_CASE)
#undef SW_ERROR_CASE
    default:
        break;
    }
    if (code < 0 && code > -1000) return strerror(-code);
    return "unknown error";
}

int sw_error_from_errno(int errnum)
{
    if (errnum <= 0) return SW_EIO;
    return -errnum;
}

int sw_diag_set(sw_diag *diag, int code, const char *fmt, ...)
{
    if (diag != NULL) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(diag->msg, sizeof diag->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

void sw_diag_prefix(sw_diag *diag, const char *prefix)
{
    if (diag == NULL) return;
    char tmp[SW_DIAG_MAX];
    size_t plen = strlen(prefix);
    if (plen + 2 >= sizeof tmp) plen = sizeof tmp - 3;
    memcpy(tmp, prefix, plen);
    tmp[plen] = ':';
    tmp[plen + 1] = ' ';
    size_t room = sizeof tmp - plen - 3;
    size_t mlen = strnlen(diag->msg, sizeof diag->msg);
    if (mlen > room) mlen = room;
    memcpy(tmp + plen + 2, diag->msg, mlen);
    tmp[plen + 2 + mlen] = '\0';
    memcpy(diag->msg, tmp, sizeof tmp);
}

void sw_assert_fail(const char *expr, const char *file, int line)
{
    fprintf(stderr, "swarmtune: assertion failed: %s (%s:%d)\n", expr, file, line);
    abort();
}
