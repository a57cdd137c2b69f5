/* The producer-held meter (held.c): an emit's time less its run-queue waits. */
#ifndef CBUS_SOAK_HELD_H
#define CBUS_SOAK_HELD_H

#include <stdint.h>

#include "soak.h"

/* An emit held past the report threshold, kept with its window so that the
 * orchestrator can take out the machine's stalls inside it (main.c). */
struct held_long {
    uint64_t start_ns, end_ns; /* the emit, soak_now_ns() */
    uint64_t held_ns;          /* run-queue waits excluded */
    uint64_t host_ns;          /* the host's steal + irq in its window */
};

struct held_meter {
    int fd;                   /* /proc/thread-self/schedstat of the owning thread */
    int stat_fd;              /* /proc/stat: the host's steal and irq, all CPUs */
    int base_ok, base_host_ok;
    uint64_t bound_ns;        /* the bus's lossless wait bound as the soak checks it */
    uint64_t slack_ns;        /* held beyond bound + slack counts as overrun */
    uint64_t base_ns, base_delay_ns, base_host_ns;
    unsigned since_base;
    /* results */
    uint64_t slow;            /* emits slower than the bound on the wall clock */
    uint64_t unmeasured;      /* of those, with no schedstat reading (wall time used) */
    uint64_t max_held_ns;     /* longest held, less the host's steal + irq in its window,
                                 of the emits not kept in longs[] */
    uint64_t max_wall_ns;
    uint64_t overrun_ns;      /* sum over slow emits of held - bound - slack, if positive */
    uint64_t long_ns;         /* emits held (less host time) past this are kept in longs[] */
    struct held_long longs[SOAK_HELD_LONG_MAX]; /* the first such; the rest count in max_held_ns */
    unsigned n_long;
};

/* Opens the calling thread's schedstat.  Returns 0 or -errno (the meter then
 * uses wall time: every slow emit counts as unmeasured). */
int held_open(struct held_meter *m, uint64_t bound_ns, uint64_t slack_ns);
void held_close(struct held_meter *m);
/* Takes a new base reading: after every voluntary sleep of the thread. */
void held_rebase(struct held_meter *m);
/* Accounts one emit that ran over [start_ns, end_ns] (soak_now_ns());
 * returns the time it held the thread (an upper bound, see held.c). */
uint64_t held_after_emit(struct held_meter *m, uint64_t start_ns, uint64_t end_ns);
/* Steal time, and interrupt plus softirq time, of all CPUs so far
 * (/proc/stat), ns. */
int held_host_time(uint64_t *steal_ns, uint64_t *irq_ns);
uint64_t held_host_tick_ns(void);

#endif
