/* The cbus-cost daemon and its report subcommand, as functions main()
 * dispatches to (tests run the real binary). */
#ifndef CBUS_COST_DAEMON_LOOP_H
#define CBUS_COST_DAEMON_LOOP_H

/* cbus-cost [--bus NAME] [--config PATH] [--state-dir DIR] [--listen HOST:PORT]
 *           [--verbose]
 * Exit: 0 after SIGTERM/SIGINT, 2 bad flags/config/prices, 1 runtime error. */
int cost_daemon_main(int argc, char **argv);

/* cbus-cost report --state-dir DIR | --config PATH [--bus NAME] [--json]
 *                  [--sessions N] [--no-refresh] */
int cost_report_main(int argc, char **argv);

#endif
