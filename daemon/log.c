#include "log.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static swd_log_level log_min = SWD_LOG_INFO;
static bool log_journal;
static pthread_mutex_t log_mutex = PTHREAD_MUTEX_INITIALIZER;

static const char *const log_names[] = {"debug", "info", "warn", "error"};
/* syslog priorities: debug 7, info 6, warning 4, err 3 */
static const int log_prio[] = {7, 6, 4, 3};

void swd_log_init(void)
{
    /* systemd sets JOURNAL_STREAM=dev:ino of the stream it connected. */
    const char *js = getenv("JOURNAL_STREAM");
    struct stat st;
    if (!js || fstat(STDERR_FILENO, &st) != 0) return;
    uintmax_t dev = 0, ino = 0;
    if (sscanf(js, "%ju:%ju", &dev, &ino) == 2 && dev == (uintmax_t)st.st_dev &&
        ino == (uintmax_t)st.st_ino)
        log_journal = true;
}

void swd_log_set_level(swd_log_level level)
{
    log_min = level;
}

int swd_log_enabled(swd_log_level level)
{
    return level >= log_min;
}

static bool log_plain(const char *s)
{
    if (!*s) return false;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p <= ' ' || *p == '"' || *p == '=' || *p == '\\' || *p == 0x7f) return false;
    return true;
}

const char *swd_log_quote(char *buf, size_t size, const char *s)
{
    if (size == 0) return buf;
    if (!s) s = "";
    if (log_plain(s)) {
        snprintf(buf, size, "%s", s);
        return buf;
    }
    size_t o = 0;
    /* Room for the closing quote and the NUL is kept back at every step. */
    if (o + 3 > size) {
        buf[0] = '\0';
        return buf;
    }
    buf[o++] = '"';
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[5];
        size_t n;
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            n = 2;
        } else if (*p == '\n') {
            memcpy(esc, "\\n", 2);
            n = 2;
        } else if (*p == '\t') {
            memcpy(esc, "\\t", 2);
            n = 2;
        } else if (*p < ' ' || *p == 0x7f) {
            snprintf(esc, sizeof esc, "\\x%02x", *p);
            n = 4;
        } else {
            esc[0] = (char)*p;
            n = 1;
        }
        if (o + n + 2 > size) break;
        memcpy(buf + o, esc, n);
        o += n;
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}

void swd_log(swd_log_level level, const char *msg, const char *kv_fmt, ...)
{
    if (level < log_min) return;
    int saved_errno = errno;
    char line[SWD_LOG_LINE_MAX];
    size_t o = 0;
    if (log_journal) o += (size_t)snprintf(line, sizeof line, "<%d>", log_prio[level]);

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    o += strftime(line + o, sizeof line - o, "ts=%Y-%m-%dT%H:%M:%S", &tm);
    char qmsg[1024];
    int n = snprintf(line + o, sizeof line - o, ".%03ldZ level=%s msg=%s", ts.tv_nsec / 1000000L,
                     log_names[level], swd_log_quote(qmsg, sizeof qmsg, msg));
    o = n > 0 && (size_t)n < sizeof line - o ? o + (size_t)n : sizeof line - 1;
    if (kv_fmt && *kv_fmt && o + 2 < sizeof line) {
        line[o++] = ' ';
        va_list ap;
        va_start(ap, kv_fmt);
        n = vsnprintf(line + o, sizeof line - o, kv_fmt, ap);
        va_end(ap);
        o = n > 0 && (size_t)n < sizeof line - o ? o + (size_t)n : sizeof line - 1;
    }
    /* The newline always fits: the cut above leaves the last byte. */
    if (o >= sizeof line - 1) o = sizeof line - 2;
    line[o++] = '\n';

    pthread_mutex_lock(&log_mutex);
    for (size_t w = 0; w < o;) {
        ssize_t r = write(STDERR_FILENO, line + w, o - w);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break; /* nowhere left to report it */
        w += (size_t)r;
    }
    pthread_mutex_unlock(&log_mutex);
    errno = saved_errno;
}
