/*
 * swarmd: the swarmtune node daemon.  This file parses the command line and
 * hands over to node.c; docs/swarmd.md describes the behaviour.
 *
 * Exit status: 0 success, 1 runtime failure, 2 configuration or usage error.
 */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <nng/nng.h>
#include <protobuf-c/protobuf-c.h>
#include <uv.h>

#include "config.h"
#include "log.h"
#include "metrics.h"
#include "node.h"
#include "runspec.h"
#include "status.h"
#include "swarm.pb-c.h"

#ifndef SWD_VERSION
#define SWD_VERSION "unknown"
#endif

static const char main_usage[] =
    "Usage: swarmd --config FILE [--until-done]\n"
    "       swarmd --config FILE --check-config\n"
    "       swarmd --dump-config-doc | --dump-config-example\n"
    "       swarmd --dump-runspec-doc | --dump-status-doc | --dump-metrics-doc\n"
    "       swarmd --help | --version\n"
    "\n"
    "The swarmtune node daemon: fine-tunes the configured GPT-2 with zeroth-order\n"
    "SPSA steps, writing every update ahead to its ledger.  Logs go to stderr, one\n"
    "logfmt line per event.  SIGINT or SIGTERM stops it after the current step with a\n"
    "final checkpoint; a second one while stopping exits at once (status 1; nothing\n"
    "is lost: the next start replays the ledger).\n"
    "\n"
    "Options:\n"
    "  --config FILE          the configuration (INI; docs/configuration.md)\n"
    "  --until-done           exit 0 after max_steps and a final checkpoint, instead of\n"
    "                         staying up, done, until signalled\n"
    "  --check-config         validate FILE and exit (0 valid, 2 not)\n"
    "  --dump-config-doc      print the generated reference of every configuration key\n"
    "                         (the generated part of docs/configuration.md)\n"
    "  --dump-config-example  print an example configuration with every key\n"
    "  --dump-runspec-doc     print the table of every run-spec key (the generated\n"
    "                         part of docs/state.md)\n"
    "  --dump-status-doc      print the table of every status field (the generated\n"
    "                         part of docs/cli.md)\n"
    "  --dump-metrics-doc     print the table of every metric (the generated part of\n"
    "                         docs/operations.md)\n"
    "  -h, --help             show this help\n"
    "  --version              show the version\n"
    "\n"
    "Exit status: 0 success, 1 runtime failure, 2 configuration or usage error.\n";

static int main_usage_error(const char *fmt, const char *arg)
{
    fputs("swarmd: ", stderr);
    fprintf(stderr, fmt, arg);
    fputs("\nTry 'swarmd --help'.\n", stderr);
    return SWD_EXIT_USAGE;
}

int main(int argc, char **argv)
{
    const char *config = NULL;
    bool until_done = false, check_only = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(main_usage, stdout);
            return SWD_EXIT_OK;
        } else if (strcmp(a, "--version") == 0) {
            printf("swarmd %s (nng %s, libuv %s, protobuf-c %s, envelope %s)\n", SWD_VERSION,
                   nng_version(), uv_version_string(), protobuf_c_version(),
                   swarmtune__v1__envelope__descriptor.name);
            return SWD_EXIT_OK;
        } else if (strcmp(a, "--dump-config-doc") == 0) {
            swd_config_write_doc(stdout);
            return fflush(stdout) == 0 ? SWD_EXIT_OK : SWD_EXIT_FAIL;
        } else if (strcmp(a, "--dump-config-example") == 0) {
            swd_config_write_example(stdout);
            return fflush(stdout) == 0 ? SWD_EXIT_OK : SWD_EXIT_FAIL;
        } else if (strcmp(a, "--dump-runspec-doc") == 0) {
            sw_runspec_write_doc(stdout);
            return fflush(stdout) == 0 ? SWD_EXIT_OK : SWD_EXIT_FAIL;
        } else if (strcmp(a, "--dump-status-doc") == 0) {
            sw_status_write_doc(stdout);
            return fflush(stdout) == 0 ? SWD_EXIT_OK : SWD_EXIT_FAIL;
        } else if (strcmp(a, "--dump-metrics-doc") == 0) {
            swd_metrics_write_doc(stdout);
            return fflush(stdout) == 0 ? SWD_EXIT_OK : SWD_EXIT_FAIL;
        } else if (strcmp(a, "--until-done") == 0) {
            until_done = true;
        } else if (strcmp(a, "--check-config") == 0) {
            check_only = true;
        } else if (strcmp(a, "--config") == 0) {
            if (i + 1 >= argc) return main_usage_error("%s: missing value", a);
            config = argv[++i];
        } else if (strncmp(a, "--config=", 9) == 0) {
            config = a + 9;
        } else if (a[0] == '-') {
            return main_usage_error("%s: unknown option", a);
        } else {
            return main_usage_error("%s: unexpected argument", a);
        }
    }
    if (!config || !config[0]) return main_usage_error("%s: required", "--config");

    swd_log_init();
    swd_config cfg;
    if (swd_config_load(config, &cfg) != 0) return SWD_EXIT_USAGE;
    swd_log_set_level((swd_log_level)cfg.log_level);
    if (check_only) {
        char q[4200];
        swd_log(SWD_LOG_INFO, "configuration is valid", "file=%s",
                swd_log_quote(q, sizeof q, config));
        swd_config_fini(&cfg);
        return SWD_EXIT_OK;
    }
    swd_node_opts opts = {.version = SWD_VERSION, .until_done = until_done};
    int rc = swd_node_run(&cfg, &opts);
    swd_config_fini(&cfg);
    return rc;
}
