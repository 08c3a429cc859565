/*
 * notify: swarmd's side of systemd's service protocol (sd_notify(3)): READY=1
 * once the node serves, STATUS= lines for `systemctl status`, WATCHDOG=1 keep-
 * alives, STOPPING=1 when a graceful stop begins.  deploy/swarmd.service runs
 * swarmd as Type=notify with WatchdogSec=; docs/operations.md explains it.
 *
 * Every call is a no-op when NOTIFY_SOCKET is unset (not started by systemd,
 * or started as Type=simple) and when swarmd was built without libsystemd
 * (meson -Dsystemd=disabled; then the first call under a NOTIFY_SOCKET logs a
 * warning, since systemd would wait for a READY=1 that never comes).  A
 * notification that cannot be sent is logged once and otherwise ignored: it
 * never fails the daemon.  The messages are datagrams on a local socket that
 * systemd drains at once; nothing here waits for an answer.
 *
 * Thread safety: call from the loop thread (the once-only warnings are not
 * synchronised).  Nothing is allocated; there is no init or fini.
 */
#ifndef SWD_NOTIFY_H
#define SWD_NOTIFY_H

#include <stdbool.h>
#include <stdint.h>

/* Longest status text sent; a longer one is cut.  Newlines become spaces (the
 * protocol is one assignment per line). */
#define SWD_NOTIFY_STATUS_MAX 256

/* READY=1, with STATUS=status when status is non-NULL: startup is over. */
void swd_notify_ready(const char *status);
/* STATUS=status: one line of progress shown by `systemctl status swarmd`. */
void swd_notify_status(const char *status);
/* STOPPING=1: a graceful stop began (systemd now allows TimeoutStopSec=). */
void swd_notify_stopping(void);
/*
 * Whether systemd expects WATCHDOG=1 keep-alives (sd_watchdog_enabled(3):
 * WATCHDOG_USEC set, and WATCHDOG_PID unset or this process).  On true,
 * *interval_us is the watchdog timeout in microseconds (send at least twice
 * per interval); on false it is left alone.
 */
bool swd_notify_watchdog_enabled(uint64_t *interval_us);
/* WATCHDOG=1: the loop is alive. */
void swd_notify_watchdog(void);

#endif
