/* Durations and sizes written as text, the one parser of both for configs
 * (consumers/daemon/config.c: cbus_cfg_duration_ns, cbus_cfg_size) and for
 * command-line flags (cbusctl, cbus-loadgen, cbus-soak, cbus-history).  Here
 * in consumers/events/ so that a tool parses its flags without linking the
 * daemon skeleton. */
#ifndef CBUS_EVENTS_UNITS_H
#define CBUS_EVENTS_UNITS_H

#include <stdint.h>

/* "250ms", "2s", "1.5h": a number (a decimal fraction allowed) and one of
 * ns, us, ms, s (the default, no suffix), m, h, d.  Returns 0 and *out in
 * nanoseconds, -EINVAL (not a duration) or -ERANGE (past 2^64 ns). */
int cbus_parse_duration_ns(const char *text, uint64_t *out);

/* "4096", "4k", "256M", "1GiB": a whole number of bytes with an optional
 * k/M/G (powers of 1024; "i" and "B" allowed after it).  Returns 0 and *out
 * in bytes, -EINVAL (not a size) or -ERANGE (past 2^64). */
int cbus_parse_size(const char *text, uint64_t *out);

#endif
