/*
 * swarmd: the swarmtune node daemon.
 *
 * This version establishes the process skeleton: a libuv loop on the main
 * thread that stops cleanly on SIGINT/SIGTERM.  Training, the ledger and the
 * swarm protocol arrive with the node and swarm issues (see docs/).
 */
#include <stdio.h>
#include <string.h>

#include <nng/nng.h>
#include <protobuf-c/protobuf-c.h>
#include <uv.h>

#include "swarm.pb-c.h"

static void swd_on_signal(uv_signal_t *handle, int signum)
{
    fprintf(stderr, "level=info msg=\"stopping\" signal=%d\n", signum);
    uv_stop(handle->loop);
}

static void swd_usage(FILE *out)
{
    fputs("usage: swarmd [--version] [--help]\n"
          "\n"
          "The swarmtune node daemon.  This build has no training or swarm\n"
          "support yet: it only reports its version.\n",
          out);
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--version") == 0) {
        printf("swarmd 0.1.0 (nng %s, libuv %s, protobuf-c %s, envelope %s)\n", nng_version(),
               uv_version_string(), protobuf_c_version(), swarmtune__v1__envelope__descriptor.name);
        return 0;
    }
    if (argc == 2 && strcmp(argv[1], "--help") == 0) {
        swd_usage(stdout);
        return 0;
    }
    if (argc != 2 || strcmp(argv[1], "--foreground-idle") != 0) {
        swd_usage(stderr);
        return 2;
    }
    /* --foreground-idle: run the bare loop until a signal (used by tests of
     * signal handling before the real daemon exists). */
    uv_loop_t *loop = uv_default_loop();
    uv_signal_t sigint, sigterm;
    uv_signal_init(loop, &sigint);
    uv_signal_init(loop, &sigterm);
    uv_signal_start(&sigint, swd_on_signal, SIGINT);
    uv_signal_start(&sigterm, swd_on_signal, SIGTERM);
    fprintf(stderr, "level=info msg=\"idle\"\n");
    uv_run(loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&sigint, NULL);
    uv_close((uv_handle_t *)&sigterm, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    return uv_loop_close(loop) == 0 ? 0 : 1;
}
