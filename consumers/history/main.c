/* cbus-history: conversations and messages from the bus, stored exactly
 * once in SQLite (docs/history.md).  With a command (list, show, ...) it
 * reads or edits the store instead of running the daemon. */
#include "history_daemon.h"

int main(int argc, char **argv)
{
    if (argc > 1 && hist_cli_is_command(argv[1]))
        return hist_cli_main(argc - 1, argv + 1);
    return hist_daemon_main(argc, argv);
}
