/* Repeated identical errors logged once: a full disk makes every snapshot,
 * textfile and checkpoint retry fail the same way, up to hundreds of times a
 * second while the ring is a quarter full.  The first failure is logged at
 * once; identical ones after it are counted and summarised ("repeated N
 * times") when the message changes, when the operation succeeds again, or
 * once per interval while it goes on.  The clock is passed in (tests drive
 * it). */
#ifndef CBUS_COST_ERRLIMIT_H
#define CBUS_COST_ERRLIMIT_H

#include <stddef.h>
#include <stdint.h>

typedef void (*cost_errlimit_emit_fn)(void *arg, int is_error, const char *line);

struct cost_errlimit {
    char last[512];            /* the message last logged; "" = none failing */
    uint64_t repeats;          /* identical failures since, not logged yet */
    uint64_t summary_ns;       /* when last logged or summarised */
    uint64_t interval_ns;      /* longest silence while failing (0 = 60 s) */
    cost_errlimit_emit_fn emit;/* NULL = cbus_log_error / cbus_log_info */
    void *arg;
};

/* A failure with this message (printf format) at now_ns. */
void cost_errlimit_fail(struct cost_errlimit *e, uint64_t now_ns, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The operation succeeded: ends a failing run (summarised if it repeated). */
void cost_errlimit_ok(struct cost_errlimit *e, uint64_t now_ns);
/* At exit: logs the count of failures not reported yet, if any. */
void cost_errlimit_flush(struct cost_errlimit *e);

#endif
