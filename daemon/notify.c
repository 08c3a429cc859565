#include "notify.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#if SWD_HAVE_LIBSYSTEMD
#include <systemd/sd-daemon.h>
#endif

/* A warning once per process: the watchdog would repeat it every few seconds. */
static bool notify_warned;

static bool notify_wanted(void)
{
    const char *s = getenv("NOTIFY_SOCKET");
    if (!s || !s[0]) return false;
#if SWD_HAVE_LIBSYSTEMD
    return true;
#else
    if (!notify_warned) {
        notify_warned = true;
        swd_log(SWD_LOG_WARN,
                "NOTIFY_SOCKET is set but swarmd was built without libsystemd: no "
                "READY=1 or watchdog keep-alives will be sent (rebuild with -Dsystemd=enabled, "
                "or run it as Type=simple without WatchdogSec=)",
                NULL);
    }
    return false;
#endif
}

static void notify_send(const char *msg)
{
#if SWD_HAVE_LIBSYSTEMD
    /* unset_environment=0: the watchdog and later messages still need it. */
    int rc = sd_notify(0, msg);
    if (rc < 0 && !notify_warned) {
        notify_warned = true;
        const char *nl = strchr(msg, '\n');
        char first[64];
        snprintf(first, sizeof first, "%.*s", nl ? (int)(nl - msg) : (int)strlen(msg), msg);
        swd_log(SWD_LOG_WARN, "sd_notify failed: systemd may not see this node's state",
                "message=%s error=%s", SWD_LOG_Q(first), SWD_LOG_Q(strerror(-rc)));
    }
#else
    (void)msg;
#endif
}

/* "prefix" followed by "STATUS=status" with newlines flattened and the text cut. */
static void notify_with_status(const char *prefix, const char *status)
{
    char msg[32 + SWD_NOTIFY_STATUS_MAX];
    size_t o = (size_t)snprintf(msg, sizeof msg, "%s", prefix);
    if (status) {
        o += (size_t)snprintf(msg + o, sizeof msg - o, "STATUS=");
        size_t n = strnlen(status, SWD_NOTIFY_STATUS_MAX);
        for (size_t i = 0; i < n; i++)
            msg[o++] = status[i] == '\n' || status[i] == '\r' ? ' ' : status[i];
        msg[o] = '\0';
    }
    notify_send(msg);
}

void swd_notify_ready(const char *status)
{
    if (!notify_wanted()) return;
    notify_with_status(status ? "READY=1\n" : "READY=1", status);
}

void swd_notify_status(const char *status)
{
    if (!status || !notify_wanted()) return;
    notify_with_status("", status);
}

void swd_notify_stopping(void)
{
    if (!notify_wanted()) return;
    notify_send("STOPPING=1");
}

bool swd_notify_watchdog_enabled(uint64_t *interval_us)
{
    if (!notify_wanted()) return false;
#if SWD_HAVE_LIBSYSTEMD
    uint64_t usec = 0;
    /* > 0: enabled for this process; 0: not asked for; < 0: a malformed
     * WATCHDOG_USEC or WATCHDOG_PID, which systemd never sets. */
    int rc = sd_watchdog_enabled(0, &usec);
    if (rc < 0 && !notify_warned) {
        notify_warned = true;
        swd_log(SWD_LOG_WARN, "ignoring a malformed WATCHDOG_USEC or WATCHDOG_PID", "error=%s",
                SWD_LOG_Q(strerror(-rc)));
    }
    if (rc <= 0 || usec == 0) return false;
    if (interval_us) *interval_us = usec;
    return true;
#else
    (void)interval_us;
    return false;
#endif
}

void swd_notify_watchdog(void)
{
    if (!notify_wanted()) return;
    notify_send("WATCHDOG=1");
}
