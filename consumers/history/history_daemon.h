/* cbus-history's daemon and command line. */
#ifndef CBUS_HISTORY_HDAEMON_H
#define CBUS_HISTORY_HDAEMON_H

int hist_daemon_main(int argc, char **argv);
/* list, show, rename, export, search, expire, forget: argv[0] is the command.
 * Returns the exit status (0, 1 error, 2 usage). */
int hist_cli_main(int argc, char **argv);
int hist_cli_is_command(const char *arg);

#endif
