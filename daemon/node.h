/*
 * node: swarmd's libuv loop on the main thread.  It owns the daemon's
 * handles and its view of progress; the trainer thread (worker.h) owns the
 * weights.  Handles:
 *   - two signal handles (SIGINT, SIGTERM): the first asks the worker to
 *     stop (it finishes the step in flight, writes a final checkpoint and
 *     exits); a second one while stopping exits at once with status 1;
 *   - one async handle the worker signals; its callback drains the whole
 *     report (uv_async_send coalesces);
 *   - one cron timer every SWD_CRON_MS with run_with_period sections:
 *     the progress line every progress_ms, the time-based checkpoint
 *     request every checkpoint_interval_s.
 * When the worker has exited every handle is closed and the loop must close
 * cleanly (uv_loop_close() == 0).
 *
 * Thread safety: swd_node_run runs on the main thread and returns when the
 * daemon is finished.
 */
#ifndef SWD_NODE_H
#define SWD_NODE_H

#include <stdbool.h>

#include "config.h"
#include "setup.h"

#define SWD_CRON_MS 100

typedef struct swd_node_opts {
    const char *version;
    bool until_done; /* exit 0 once max_steps are done and checkpointed */
} swd_node_opts;

/* Sets up, trains until stopped (or done, with until_done); returns the exit code. */
int swd_node_run(const swd_config *cfg, const swd_node_opts *opts);

#endif
