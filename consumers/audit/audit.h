/* cbus-audit entry points: the daemon and the two file commands. */
#ifndef CBUS_AUDIT_AUDIT_H
#define CBUS_AUDIT_AUDIT_H

#include <stdio.h>

#include "audit_config.h"

/* Runs the daemon until SIGTERM/SIGINT.  Returns the exit status. */
int audit_run(const struct audit_config *cfg);

/* `cbus-audit verify [-q] FILE|DIR...`: 0 all good, 1 a bad record (named on
 * stdout), 2 usage or unreadable input. */
int audit_verify_main(int argc, char **argv);

/* `cbus-audit cat [filters] FILE|DIR...`: JSON lines on stdout. */
int audit_cat_main(int argc, char **argv);

/* Expands FILE|DIR arguments into log file paths in chain order (a
 * directory gives its *.cbaudit files).  Returns 0 or -errno (message on
 * stderr).  Free with audit_paths_free. */
int audit_collect_paths(int argc, char **argv, char ***paths, size_t *n);
/* The same for the operands a subcommand's getopt left (argv[optind] on):
 * none given is a usage error (usage(stderr)).  Returns 0, or 2: the exit
 * status, the reason printed. */
int audit_operand_paths(int argc, char **argv, void (*usage)(FILE *), char ***paths, size_t *n);
void audit_paths_free(char **paths, size_t n);

#endif
