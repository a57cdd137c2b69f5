/* The bus clock: rdtsc converted to CLOCK_MONOTONIC nanoseconds.
 *
 * clock_gettime costs ~26 ns under kvm-clock here and rdtsc ~11 ns, and the
 * emit path has room for one timestamp.  The creator measures the TSC rate
 * against CLOCK_MONOTONIC once (50 ms, a few ppm) and stores mult/shift in
 * the header, the way perf's mmap page publishes time_mult/time_shift.  Each
 * thread anchors (tsc, mono, realtime) with clock_gettime (vDSO, no syscall)
 * and re-anchors every second, so frequency error never accumulates past
 * ~1 s x a few ppm; per thread, time never goes backwards.
 * Without a constant, nonstop TSC the header says CBUS_CLOCK_GETTIME and
 * every timestamp is a clock_gettime.
 *
 * The header is shared memory, so its rate is a claim: every process also
 * measures the host's rate once (5 ms, at its first open, never on the emit
 * path) and uses its own when the header's is off by more than 1 %.  A rate
 * 5x too high would otherwise stretch every bound measured on this clock
 * (the 1 ms lossless wait, the stall and abandon timeouts) 5x. */
#include "internal.h"

#include <stdio.h>

#if defined(__x86_64__)
#include <x86intrin.h>
#define HAVE_TSC 1
static inline uint64_t read_tsc(void)
{
    return __rdtsc();
}
#else
static inline uint64_t read_tsc(void)
{
    return 0;
}
#endif

__extension__ typedef unsigned __int128 cbus_u128;

uint64_t cbus__mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t cbus__real_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

CBUS_API uint64_t cbus_now_ns(void)
{
    return cbus__mono_ns();
}

#ifdef HAVE_TSC
static int tsc_is_reliable(void)
{
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return 0;
    char line[4096];
    int ok = 0;
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "flags", 5)) {
            ok = strstr(line, " constant_tsc") && strstr(line, " nonstop_tsc");
            break;
        }
    }
    fclose(f);
    return ok;
}

/* One (tsc, mono) pair with the tightest bracket of a few tries. */
static void sample_pair(uint64_t *tsc, uint64_t *mono)
{
    uint64_t best = UINT64_MAX;
    *tsc = *mono = 0;
    for (int i = 0; i < 16; i++) {
        uint64_t t0 = read_tsc();
        uint64_t m = cbus__mono_ns();
        uint64_t t1 = read_tsc();
        if (t1 - t0 < best) {
            best = t1 - t0;
            *tsc = t0 + (t1 - t0) / 2;
            *mono = m;
        }
    }
}
#endif

#define MIN_HZ UINT64_C(100000000)   /* below 100 MHz: not a TSC we trust */
#define MAX_HZ UINT64_C(10000000000) /* above 10 GHz: not a TSC at all */

#ifdef HAVE_TSC
/* TSC ticks per second against CLOCK_MONOTONIC over interval_ns; 0 if the
 * TSC is not one we trust or the measurement makes no sense.  Each end is the
 * tightest of 16 brackets, so the error is ~100 ns over the interval
 * (20 ppm over 5 ms), and a preemption inside the sleep does not matter. */
static uint64_t measure_hz(long interval_ns)
{
    if (!tsc_is_reliable())
        return 0;
    uint64_t t0 = 0, m0 = 0, t1 = 0, m1 = 0;
    sample_pair(&t0, &m0);
    struct timespec d = {0, interval_ns};
    while (nanosleep(&d, &d) && errno == EINTR) {
    }
    sample_pair(&t1, &m1);
    if (t1 <= t0 || m1 <= m0)
        return 0;
    uint64_t hz = (uint64_t)((cbus_u128)(t1 - t0) * 1000000000u / (m1 - m0));
    return hz >= MIN_HZ && hz <= MAX_HZ ? hz : 0;
}
#endif

/* This host's TSC rate, measured once per process (the first open pays
 * 5 ms; racing threads may both measure, harmlessly).  0: no TSC we trust. */
static uint64_t host_hz(void)
{
#ifdef HAVE_TSC
    static _Atomic uint64_t cached; /* 0 = not yet, 1 = none */
    uint64_t hz = atomic_load_explicit(&cached, memory_order_relaxed);
    if (!hz) {
        hz = measure_hz(5 * 1000 * 1000);
        atomic_store_explicit(&cached, hz ? hz : 1, memory_order_relaxed);
    }
    return hz > 1 ? hz : 0;
#else
    return 0;
#endif
}

static uint64_t mult_for(uint64_t hz)
{
    return (uint64_t)(((cbus_u128)1000000000u << 32) / hz);
}

int cbus__clock_calibrate(struct cbus_shm_header *hdr)
{
    hdr->clock_source = CBUS_CLOCK_GETTIME;
#ifdef HAVE_TSC
    uint64_t hz = measure_hz(50 * 1000 * 1000);
    if (!hz)
        return 0;
    hdr->tsc_hz = hz;
    hdr->tsc_shift = 32;
    hdr->tsc_mult = mult_for(hz);
    hdr->clock_source = CBUS_CLOCK_TSC;
#endif
    return 0;
}

void cbus__clock_load(struct cbus__clock *clk, const struct cbus_shm_header *hdr)
{
    clk->source = hdr->clock_source;
    clk->shift = hdr->tsc_shift;
    clk->mult = hdr->tsc_mult;
    clk->hz = hdr->tsc_hz;
    /* A header could claim TSC with nonsense numbers (a frozen or racing
     * clock would break every timeout): accept only a rate between 100 MHz
     * and 10 GHz whose mult matches it to 0.1 %, else fall back. */
    uint64_t want = clk->hz ? mult_for(clk->hz) : 0;
    if (clk->source != CBUS_CLOCK_TSC || clk->shift != 32 || clk->hz < MIN_HZ ||
        clk->hz > MAX_HZ || clk->mult < want - want / 1000 || clk->mult > want + want / 1000) {
        clk->source = CBUS_CLOCK_GETTIME;
        return;
    }
    /* Plausible is not true: the range alone lets a header make this clock
     * run 100x slow or fast.  Cross-check against our own measurement;
     * beyond 1 % (measurement error is ~20 ppm) use ours.  Each process then
     * runs on its own rate, within ~20 us per second of the others, and
     * re-anchors every second, so they never drift apart. */
    uint64_t host = host_hz();
    if (!host) {
        clk->source = CBUS_CLOCK_GETTIME; /* a TSC claim this host cannot back */
        return;
    }
    if (clk->hz > host + host / 100 || clk->hz < host - host / 100) {
        clk->hz = host;
        clk->mult = mult_for(host);
    }
}

CBUS__TLS struct cbus__anchor cbus__tl_anchor;

static void reanchor(struct cbus__anchor *a, const struct cbus__clock *clk)
{
#ifdef HAVE_TSC
    sample_pair(&a->tsc, &a->mono);
#endif
    a->real_minus_mono = cbus__real_ns() - cbus__mono_ns();
    a->mult = clk->mult;
}

/* Everything but the common case (cbus__clock_now in internal.h): no TSC,
 * a thread's first call, a new clock, or a second since the anchor. */
uint64_t cbus__clock_slow(const struct cbus__clock *clk, uint64_t *real)
{
    if (clk->source != CBUS_CLOCK_TSC) {
        uint64_t m = cbus__mono_ns();
        *real = cbus__real_ns();
        return m;
    }
    struct cbus__anchor *a = &cbus__tl_anchor;
    uint64_t t = read_tsc();
    uint64_t dt = t - a->tsc;
    if (a->mult != clk->mult || dt > clk->hz) {
        reanchor(a, clk);
        t = read_tsc();
        dt = t - a->tsc;
        if (dt > clk->hz) /* TSC went backwards: trust clock_gettime */
            dt = 0;
    }
    uint64_t ns = a->mono + (uint64_t)(((cbus_u128)dt * clk->mult) >> 32);
    if (ns < a->last)
        ns = a->last;
    a->last = ns;
    *real = ns + a->real_minus_mono;
    return ns;
}
