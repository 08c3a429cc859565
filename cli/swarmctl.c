/*
 * swarmctl: the command-line tool of swarmtune.  Verb groups (`model`, and
 * later the daemon's verbs) are dispatched from one table; each group lives
 * in its own file (cmd_<group>.c) with its own table of verbs.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

#ifndef SWCTL_VERSION
#define SWCTL_VERSION "unknown"
#endif

static const swctl_verb swarmctl_groups[] = {
    {"model", swctl_model_main,
     "model tools: init, inspect, tokenize, eval, generate, "
     "convert, export"},
    {"status", swctl_status, "a running swarmd: node, model, ledger, network, peers"},
    {"peers", swctl_peers, "a running swarmd's peers table"},
};

static const char swarmctl_intro[] =
    "Usage: swarmctl COMMAND [ARGS...]\n"
    "       swarmctl --version\n"
    "\n"
    "Drives swarmtune: offline model tools, and a running swarmd.\n"
    "Exit status: 0 success, 1 failure, 2 usage error.\n";

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--version") == 0) {
        printf("swarmctl %s\n", SWCTL_VERSION);
        return SWCTL_EXIT_OK;
    }
    int rc = swctl_group_run("", swarmctl_intro, swarmctl_groups,
                             sizeof swarmctl_groups / sizeof swarmctl_groups[0], argc, argv);
    /* Output is buffered: a full disk or a closed pipe shows up here. */
    if (fflush(stdout) != 0 || ferror(stdout)) {
        perror("swarmctl: stdout");
        if (rc == SWCTL_EXIT_OK) rc = SWCTL_EXIT_FAIL;
    }
    return rc;
}
