/* Helpers for the cbus-audit suites: temp dirs, logs written through the
 * real writer, reading a log back, running the real binary. */
#ifndef CBUS_AUDIT_TESTS_TEST_UTIL_H
#define CBUS_AUDIT_TESTS_TEST_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <cbus/layout.h>

#include "writer.h"

/* mkdtemp under /tmp; returns a static-lifetime copy in buf. */
char *tu_tmpdir(char *buf, size_t len);
/* rm -rf */
void tu_rmrf(const char *path);

/* A varied event for index i (every kind in turn, strings, usage). */
void tu_event(struct cbus_event *ev, uint64_t i);

/* Default writer options for tests (small batches, several in flight). */
void tu_writer_opts(struct audit_writer_opts *o, const char *dir);
/* Writes events [first, first+n) through the writer (opts may be NULL:
 * defaults), draining until durable.  Returns 0 or -errno. */
int tu_write_log(const struct audit_writer_opts *o, uint64_t first, uint64_t n);

/* All log files of dir, in chain order, as "dir/name" paths (malloc'd
 * array of malloc'd strings); returns the count. */
size_t tu_log_files(const char *dir, char ***paths);
void tu_free_paths(char **paths, size_t n);

/* Decodes every record of every file in dir, in chain order, into a
 * malloc'd array (*evs).  Returns the record count, or -1 if a file does
 * not parse to its end. */
long tu_read_events(const char *dir, struct cbus_event **evs);

/* Children a test started: tu_track() records one (tu_start_daemon does it
 * itself), tu_wait() reaps it (test_wait_pid: SIGKILL at the deadline) and
 * forgets it, and tu_kill_all() -- called from every suite's .fini, so a
 * failed assertion never leaves a daemon holding ctest's pipe -- SIGKILLs
 * and reaps whatever is left.  Children also get PR_SET_PDEATHSIG(SIGKILL)
 * in case the test process itself dies. */
void tu_track(pid_t pid);
int tu_wait(pid_t pid, unsigned timeout_ms);
void tu_kill_all(void);
/* In a freshly forked child: die with the test process. */
void tu_child_dies_with_parent(void);

/* Runs argv with stdout+stderr captured into out (NUL-terminated, cut to
 * len).  Returns the exit status, or -1. */
int tu_run(char *const argv[], char *out, size_t len);
/* Starts the daemon: cbus-audit --bus BUS --config INI --dir DIR, output to
 * DIR/../daemon.log.  Returns its pid. */
pid_t tu_start_daemon(const char *bus, const char *ini, const char *dir, const char *logfile);
/* Index of the live consumer called name on bus, waiting up to ms; -1 if none. */
int tu_wait_consumer(const char *bus, const char *name, unsigned ms);
/* Waits until consumer idx's committed cursor reaches target. 0 or -1 (timeout). */
int tu_wait_cursor(const char *bus, int idx, uint64_t target, unsigned ms);

/* Waits until consumer idx's committed cursor reaches the tail in every
 * lane (a bus of several lanes).  0 or -1 (timeout). */
int tu_wait_caught_up(const char *bus, int idx, unsigned ms);

/* Offsets of each value (header first) of one log file; returns the count. */
size_t tu_value_offsets(const uint8_t *buf, size_t len, size_t *offs, size_t max);

/* Whole file into memory / back. */
uint8_t *tu_slurp(const char *path, size_t *len);
void tu_spit(const char *path, const uint8_t *buf, size_t len);

#endif
