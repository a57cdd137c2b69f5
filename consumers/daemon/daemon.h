/* What every consumer daemon does the same way: stop on SIGTERM/SIGINT,
 * keep state in a private directory, write files atomically. */
#ifndef CBUS_COMMON_DAEMON_H
#define CBUS_COMMON_DAEMON_H

#include <signal.h>
#include <stddef.h>
#include <stdio.h>

/* Set to 1 by SIGTERM or SIGINT after cbus_daemon_signals(). */
extern volatile sig_atomic_t cbus_daemon_stop;
/* Set to 1 by SIGUSR1 (dump status / snapshot on request). */
extern volatile sig_atomic_t cbus_daemon_usr1;

/* Installs the handlers without SA_RESTART, so a blocking wait returns -EINTR
 * and the loop sees the flag.  Ignores SIGPIPE (a closed HTTP peer). */
void cbus_daemon_signals(void);

/* A daemon's own command-line option beside the shared ones. */
struct cbus_daemon_opt {
    const char *name;       /* "state-dir": --state-dir */
    char short_name;        /* 's' for -s, or 0 */
    const char **value;     /* --name VALUE: where the value goes (NULL: a flag) */
    int *flag;              /* a flag: set to 1 */
};

/* The command line of a daemon (the shared part of every main). */
struct cbus_daemon_args {
    const char *prog;                    /* "cbus-cost": the log's name, messages */
    void (*usage)(FILE *f);
    const struct cbus_daemon_opt *opts;  /* the daemon's own, ended by {NULL}; may be NULL */
    /* out: what every daemon takes: --bus NAME (-b), --config PATH (-c),
     * --verbose (-v); --help (-h) prints usage */
    const char *bus, *config;
    int verbose;
};

/* Parses argv (getopt_long; no positional arguments), then starts logging
 * (cbus_log_init: debug with --verbose) and installs the signal handlers
 * (cbus_daemon_signals: from here a SIGTERM during start-up is a clean
 * stop).  Returns -1 to go on, or the exit status to return: 0 after
 * --help, 2 after a bad or stray argument (usage on stderr). */
int cbus_daemon_args(struct cbus_daemon_args *a, int argc, char **argv);

/* The bus a daemon reads, in cfg_bus (cap bytes, the config's [bus] name or
 * empty): a --bus argument (arg, may be NULL) replaces it once validated.
 * Returns 0, or logs why (cbus_log_error: call cbus_log_init first) and
 * returns 2, the daemons' exit code for a bad command line or config. */
int cbus_daemon_pick_bus(char *cfg_bus, size_t cap, const char *arg);

/* The private state dir and whole files (cbus_state_dir_*, cbus_read_file,
 * cbus_replace_file): consumers/events/files.h, shared with the tools. */
#include "files.h"

#endif
