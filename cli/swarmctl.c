/*
 * swarmctl: the command-line tool of swarmtune.  Verb groups (`model`) and
 * the commands that drive a running swarmd (cmd_swarm.c) are dispatched from
 * one table; each group lives in its own file (cmd_<group>.c).
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
    {"status", swctl_status, "a running swarmd: node, model, ledger, net, swarm, peers (--watch)"},
    {"peers", swctl_peers, "a running swarmd's peers table"},
    {"pause", swctl_pause, "stop a running swarmd making updates (it keeps syncing)"},
    {"resume", swctl_resume, "restart training on a paused swarmd"},
    {"leave", swctl_leave, "make a running swarmd leave the swarm and exit"},
    {"join", swctl_join, "connect a running swarmd to a swarm member: join ADDR"},
    {"checkpoint", swctl_checkpoint, "make a running swarmd write a checkpoint now"},
    {"export", swctl_ctl_export, "write a running swarmd's live model: export OUT_DIR"},
    {"eval", swctl_ctl_eval, "score a running swarmd's live model: eval --data FILE"},
};

static const char swarmctl_intro[] =
    "Usage: swarmctl COMMAND [ARGS...]\n"
    "       swarmctl --version\n"
    "\n"
    "Drives swarmtune: offline model tools, and a running swarmd.\n"
    "Exit status: 0 success, 1 failure (or no daemon, or an error from it), 2 usage error.\n";

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
