/* How long an emit held its producer thread, run-queue waits excluded.
 *
 * Invariant 6 (docs/soak.md) is about what the library does: a producer waits
 * in the gate at most lossless_wait_ns.  On a loaded machine a thread can be
 * preempted inside any emit, so the wall time of an emit says as much about
 * the scheduler as about the bus.  The kernel counts the time a thread spent
 * runnable but waiting for a CPU (the second field of
 * /proc/thread-self/schedstat, run_delay, complete for a thread that is
 * running when it reads it); wall time less that is the time the emit kept
 * the thread on the CPU or blocked, which is what the library answers for.
 *
 * The schedstat read is a syscall (about 1 us), so it is never taken around
 * every emit: the meter keeps one reading (the "base"), refreshed after every
 * voluntary sleep of the producer and at least every REBASE_EVERY emits, and
 * reads again only after an emit whose wall time already exceeded the bound.
 * Over [base, end] wall − run_delay is the emit's own figure plus what the
 * producer did since the base (a few emits' worth of its own work,
 * microseconds, never a sleep): an upper bound, so a real overrun is never
 * missed.  The emit's wall time is an upper bound too; the smaller is used.
 *
 * What neither excludes is time the hypervisor took from the VM's CPU while
 * the thread ran (steal) and interrupt time charged to it: the guest kernel
 * sees that as running.  For the longest single emit (max_held_ns) the meter
 * subtracts the steal + irq of all CPUs over the same [base, end] window, read
 * from /proc/stat with the base: the thread runs on one CPU at a time, so
 * that is at least what the host took from it (a 61 ms hypervisor stall
 * inside one emit failed the 50 ms margin otherwise).  /proc/stat does not
 * always see such a stall (CI held one emit 73 ms while a 1 ms sleeper was
 * 73.8 ms late, and /proc/stat showed 20 ms), so an emit held past long_ns
 * is also kept with its window: the orchestrator, whose 1 ms sleeper
 * records when the machine ran no ready thread, takes the larger of the two
 * out (main.c, check_held).  The summed overrun is
 * left as measured; the orchestrator accounts for it against the whole run's
 * host figures (held_host_time()). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "held.h"

/* Emits between two base readings at most: bounds the producer work the
 * upper bound above may include (64 soak emits: well under 0.1 ms). */
#define REBASE_EVERY 64

static int read_run_delay(int fd, uint64_t *run_delay)
{
    char b[96];
    ssize_t n = pread(fd, b, sizeof b - 1, 0);
    if (n <= 0)
        return -EIO;
    b[n] = '\0';
    char *end;
    const char *p = b;
    strtoull(p, &end, 10); /* on-CPU ns: updated only at ticks for a running thread */
    if (end == p)
        return -EPROTO;
    p = end;
    *run_delay = strtoull(p, &end, 10);
    return end == p ? -EPROTO : 0;
}

/* Steal + irq + softirq of all CPUs so far, ns, from an open /proc/stat. */
static int read_host_ns(int fd, uint64_t *ns)
{
    char b[256];
    ssize_t n = fd >= 0 ? pread(fd, b, sizeof b - 1, 0) : -1;
    if (n <= 0)
        return -EIO;
    b[n] = '\0';
    unsigned long long v[8];
    if (sscanf(b, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4],
               &v[5], &v[6], &v[7]) != 8)
        return -EPROTO;
    *ns = (uint64_t)(v[5] + v[6] + v[7]) * held_host_tick_ns();
    return 0;
}

int held_open(struct held_meter *m, uint64_t bound_ns, uint64_t slack_ns)
{
    memset(m, 0, sizeof *m);
    m->bound_ns = bound_ns;
    m->slack_ns = slack_ns;
    m->stat_fd = open("/proc/stat", O_RDONLY | O_CLOEXEC); /* -1: nothing subtracted */
    /* thread-self: this meter belongs to the thread that opens it. */
    m->fd = open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
    if (m->fd < 0)
        return -errno;
    held_rebase(m);
    return 0;
}

void held_close(struct held_meter *m)
{
    if (m->fd >= 0)
        close(m->fd);
    if (m->stat_fd >= 0)
        close(m->stat_fd);
    m->fd = m->stat_fd = -1;
}

void held_rebase(struct held_meter *m)
{
    if (m->fd < 0)
        return;
    /* The clock before the read: the interval [base_ns, end] then covers
     * every run-queue wait the two readings count. */
    m->base_host_ok = read_host_ns(m->stat_fd, &m->base_host_ns) == 0;
    uint64_t t = soak_now_ns();
    if (read_run_delay(m->fd, &m->base_delay_ns) == 0) {
        m->base_ns = t;
        m->since_base = 0;
        m->base_ok = 1;
    } else {
        m->base_ok = 0;
    }
}

uint64_t held_after_emit(struct held_meter *m, uint64_t start_ns, uint64_t end_ns)
{
    const uint64_t wall = end_ns - start_ns;
    if (wall <= m->bound_ns) {
        /* the fast case: no syscall */
        if (++m->since_base >= REBASE_EVERY)
            held_rebase(m);
        return wall;
    }
    uint64_t held = wall, host = 0;
    uint64_t delay, host_ns;
    if (m->base_ok && read_run_delay(m->fd, &delay) == 0) {
        uint64_t t = soak_now_ns();
        uint64_t span = t - m->base_ns, rq = delay - m->base_delay_ns;
        uint64_t bound = span > rq ? span - rq : 0;
        if (bound < held)
            held = bound;
        /* read after the clock: the window's host time is not understated */
        int host_ok = read_host_ns(m->stat_fd, &host_ns) == 0;
        if (host_ok && m->base_host_ok && host_ns > m->base_host_ns)
            host = host_ns - m->base_host_ns;
        m->base_ns = t;
        m->base_delay_ns = delay;
        m->base_host_ns = host_ns;
        m->base_host_ok = host_ok;
        m->since_base = 0;
    } else {
        m->unmeasured++;
        held_rebase(m);
    }
    m->slow++;
    const uint64_t held_cpu = held > host ? held - host : 0;
    if (m->long_ns && held_cpu > m->long_ns && m->n_long < SOAK_HELD_LONG_MAX)
        m->longs[m->n_long++] = (struct held_long){start_ns, end_ns, held, host};
    else if (held_cpu > m->max_held_ns)
        m->max_held_ns = held_cpu;
    if (wall > m->max_wall_ns)
        m->max_wall_ns = wall;
    if (held > m->bound_ns + m->slack_ns)
        m->overrun_ns += held - m->bound_ns - m->slack_ns;
    return held;
}

int held_host_time(uint64_t *steal_ns, uint64_t *irq_ns)
{
    /* Aggregate "cpu" line: user nice system idle iowait irq softirq steal,
     * in clock ticks. */
    FILE *f = fopen("/proc/stat", "re");
    if (!f)
        return -errno;
    unsigned long long v[8];
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
                   &v[3], &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (n != 8)
        return -EPROTO;
    long hz = sysconf(_SC_CLK_TCK);
    if (hz <= 0)
        return -EPROTO;
    const uint64_t tick = 1000000000u / (uint64_t)hz;
    *steal_ns = (uint64_t)v[7] * tick;
    *irq_ns = (uint64_t)(v[5] + v[6]) * tick;
    return 0;
}

uint64_t held_host_tick_ns(void)
{
    long hz = sysconf(_SC_CLK_TCK);
    return hz > 0 ? 1000000000u / (uint64_t)hz : 10000000u;
}
