/*
 * log: swarmd's event log.  One line per event on stderr, in logfmt:
 *
 *   ts=2024-11-27T01:50:00.123Z level=info msg="checkpoint written" step=200 ...
 *
 * `ts` is UTC with milliseconds.  When stderr is connected to journald
 * (JOURNAL_STREAM names it), each line also starts with the syslog priority
 * prefix "<N>" so the journal records the level; `ts` stays in the line.
 *
 * Every line is formatted into one buffer and written with one write(2) under
 * a mutex, so lines from the loop thread and the trainer thread never
 * interleave.  Thread safety: any thread may log; swd_log_init and
 * swd_log_set_level are called once at startup before other threads exist.
 */
#ifndef SWD_LOG_H
#define SWD_LOG_H

#include <stddef.h>

typedef enum swd_log_level {
    SWD_LOG_DEBUG = 0,
    SWD_LOG_INFO = 1,
    SWD_LOG_WARN = 2,
    SWD_LOG_ERROR = 3,
} swd_log_level;

/* Detects journald on stderr. */
void swd_log_init(void);
/* Events below `level` are dropped. */
void swd_log_set_level(swd_log_level level);
/* Whether an event of `level` would be written (skip expensive formatting). */
int swd_log_enabled(swd_log_level level);

/*
 * Logs msg (quoted as needed) followed by " " and the key=value pairs that
 * kv_fmt formats (may be NULL).  Values that may hold spaces, quotes or '='
 * must go through swd_log_quote.  A line longer than SWD_LOG_LINE_MAX is cut.
 */
#define SWD_LOG_LINE_MAX 4096
#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
void swd_log(swd_log_level level, const char *msg, const char *kv_fmt, ...);

/*
 * Writes s into buf as a logfmt value: as is when it is non-empty and holds
 * no space, quote, '=' or control character, else in double quotes with \"
 * \\ \n \t and \xNN escapes.  Cut to fit size.  Returns buf.
 */
const char *swd_log_quote(char *buf, size_t size, const char *s);

/* swd_log_quote into a temporary that lives until the end of the enclosing
 * full statement's block: for arguments of swd_log. */
#define SWD_LOG_QUOTE_MAX 1024
#define SWD_LOG_Q(s) swd_log_quote((char[SWD_LOG_QUOTE_MAX]){0}, SWD_LOG_QUOTE_MAX, (s))

#endif
