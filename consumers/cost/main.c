/* cbus-cost: token, cost, latency and budget accounting for a cbus bus.
 * `cbus-cost report ...` prints the live daemon's table. */
#include <string.h>

#include "cost_daemon.h"

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "report"))
        return cost_report_main(argc - 1, argv + 1);
    return cost_daemon_main(argc, argv);
}
