/* cbusctl: create, inspect, tail and repair cbus buses from the shell.
 * One subcommand per file; this file only dispatches. */
#include "cbusctl.h"

#include <string.h>

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} commands[] = {
    {"create", cmd_create, "create NAME [--capacity N | --size BYTES] [--group G] ...: make a bus"},
    {"destroy", cmd_destroy, "destroy NAME: remove a bus (mapped users keep theirs until they exit)"},
    {"stat", cmd_stat, "stat NAME [--json] [--watch SECONDS]: producers, consumers, lag, loss, rates"},
    {"tail", cmd_tail, "tail NAME [--kind K] [--user U] [--model M] [--json] [--count N]: live events"},
    {"emit", cmd_emit, "emit NAME --kind K [--model M] [--user U] ...: inject one event"},
    {"evict", cmd_evict, "evict NAME INDEX|CONSUMER [--force]: free a dead consumer's entry"},
    {"status", cmd_status, "status [FILE|DIR]... [--json]: the daemons' status files, one view"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: cbusctl COMMAND [ARGS]   (cbusctl COMMAND --help for details)\n\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %s\n", commands[i].summary);
    fprintf(f, "\nexit status: 0 ok, 1 runtime error (no bus, corrupt, busy, permission), "
               "2 usage error\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        usage(stdout);
        return EXIT_OK;
    }
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "version")) {
        printf("cbusctl %s (layout %d.%d)\n", CBUS_VERSION_STRING, CBUS_LAYOUT_MAJOR,
               CBUS_LAYOUT_MINOR);
        return EXIT_OK;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (!strcmp(cmd, commands[i].name))
            return commands[i].run(argc - 1, argv + 1);
    }
    fprintf(stderr, "cbusctl: unknown command '%s'\n", cmd);
    usage(stderr);
    return EXIT_USAGE;
}
