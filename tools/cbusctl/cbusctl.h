/* cbusctl internals: one file per subcommand, shared helpers in util.c. */
#ifndef CBUSCTL_H
#define CBUSCTL_H

#include <cbus/bus.h>
#include <cbus/consumer.h>

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Exit codes: documented in docs/cbusctl.md and relied on by scripts. */
#define EXIT_OK      0
#define EXIT_RUNTIME 1 /* the bus said no: missing, corrupt, busy, permission */
#define EXIT_USAGE   2 /* the command line is wrong */

/* Name arrays of the shm tables (NUL included): the longest name each takes. */
#define CONSUMER_NAME_SIZE sizeof(((struct cbus_consumer_entry *)0)->name)
#define PRODUCER_NAME_SIZE sizeof(((struct cbus_producer_entry *)0)->name)

/* Each subcommand gets argv with argv[0] == its own name. */
int cmd_create(int argc, char **argv);
int cmd_destroy(int argc, char **argv);
int cmd_stat(int argc, char **argv);
int cmd_tail(int argc, char **argv);
int cmd_emit(int argc, char **argv);
int cmd_evict(int argc, char **argv);
int cmd_status(int argc, char **argv);

/* ---- messages ------------------------------------------------------------
 * Every error is one line on stderr, "cbusctl: ...". */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prints the message plus "(see cbusctl CMD --help)" and returns EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- argument parsing -------------------------------------------------------
 * Each returns 0, or prints a usage error naming the flag and returns EXIT_USAGE. */
int cli_bus_name(const char *cmd, const char *name);
int cli_u64(const char *cmd, const char *flag, const char *text, uint64_t min, uint64_t max,
            uint64_t *out);
int cli_u32(const char *cmd, const char *flag, const char *text, uint32_t *out);
int cli_duration(const char *cmd, const char *flag, const char *text, uint64_t *out);
int cli_seconds(const char *cmd, const char *flag, const char *text, double min, double *out);

/* "/dev/shm/cbus.NAME" */
void cli_shm_path(char *out, size_t len, const char *name);

/* Opens a bus; on failure prints the clear one-line reason (missing bus,
 * wrong layout version, corrupt header, permission) and returns EXIT_RUNTIME. */
int cli_open_bus(cbus_bus **out, const char *name, unsigned flags);
/* Explains an error from opening or attaching to bus NAME on stderr. */
void cli_explain_open_error(const char *name, int err);

/* ---- formatting ------------------------------------------------------------ */
/* "850ns", "12.3us", "1.20ms", "3.40s" */
const char *fmt_ns(char *buf, size_t len, uint64_t ns);
/* "512B", "8.0MiB" */
const char *fmt_bytes(char *buf, size_t len, uint64_t bytes);
/* Copies a bounded field for display: control bytes become \n, \t or \xNN
 * so a hostile event cannot drive the terminal. */
void fmt_safe(char *out, size_t len, const char *field, size_t field_size);

/* Monotonic ns for measuring intervals (independent of the bus clock). */
uint64_t cli_mono_ns(void);
/* Sleeps, returning early (nonzero) when SIGINT/SIGTERM arrived. */
int cli_sleep_ns(uint64_t ns);

/* ---- tail's human line --------------------------------------------------- */
struct sbuf;
/* body NULL: the event line only; else the body's sections follow it,
 * one indented line each, terminal-safe. */
void event_text(struct sbuf *b, const struct cbus_event *ev, const struct cbus_body *body);

#endif
