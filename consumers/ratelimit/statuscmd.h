/* `cbus-ratelimit status`: the hottest keys from the daemon's status file
 * and the verdicts now in the bus's admission table. */
#ifndef CBUS_RATELIMIT_STATUSCMD_H
#define CBUS_RATELIMIT_STATUSCMD_H

#include <stddef.h>

/* Where the daemon writes its status when the config names no file:
 * <state dir>/ratelimit/status-<bus>.json.  Returns 0, -ENOENT (no home
 * directory) or -ENAMETOOLONG. */
int rl_default_status_path(char *out, size_t outlen, const char *bus_name);
/* argv[0] is "status".  Returns the exit code. */
int rl_status_main(int argc, char **argv);

#endif
