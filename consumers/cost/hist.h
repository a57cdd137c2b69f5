/* Latency histograms.
 *
 * Two views of the same samples:
 *  - a log-bucketed histogram in the HDR style for p50/p95/p99: values in
 *    1.024 us units, exact below 16 units, then 16 sub-buckets per power of
 *    two (bucket width <= 1/16 of its value, so a reported percentile, the
 *    bucket's midpoint, is within about 3%).  Range up to 2^40 ns (~18 min);
 *    anything longer lands in the last bucket (max is kept exactly).
 *  - fixed Prometheus buckets: gen_ai.client.operation.duration's boundaries
 *    (0.01 s doubling to 81.92 s) for durations, and the OpenTelemetry GenAI
 *    time-to-first-token boundaries (0.001 .. 10 s) for TTFT.
 * Recording is a count-leading-zeros and two increments: no float, no loop
 * for durations, a 5-step binary search for TTFT.
 */
#ifndef CBUS_COST_HIST_H
#define CBUS_COST_HIST_H

#include <stdint.h>

#include "money.h"

#define COST_HIST_SUB_BITS   4
#define COST_HIST_SUB        (1u << COST_HIST_SUB_BITS)
#define COST_HIST_UNIT_SHIFT 10 /* 1 unit = 1024 ns */
#define COST_HIST_MAX_MSB    30 /* 2^30 units = 2^40 ns */
#define COST_HIST_BUCKETS    ((COST_HIST_MAX_MSB - COST_HIST_SUB_BITS + 2) * COST_HIST_SUB)

#define COST_DUR_PROM_BOUNDS  14 /* 0.01 * 2^i s, i = 0..13 */
#define COST_TTFT_PROM_BOUNDS 16

enum cost_hist_kind { COST_HIST_DURATION, COST_HIST_TTFT };

struct cost_hist {
    uint64_t count;
    uint64_t min_ns, max_ns;         /* valid when count > 0 */
    cost_u128 sum_ns;
    uint64_t prom[COST_TTFT_PROM_BOUNDS + 1]; /* per bucket (not cumulative); last is +Inf */
    uint64_t b[COST_HIST_BUCKETS];
};

extern const double cost_dur_prom_bounds_s[COST_DUR_PROM_BOUNDS];
extern const double cost_ttft_prom_bounds_s[COST_TTFT_PROM_BOUNDS];
extern const uint64_t cost_ttft_prom_bounds_ns[COST_TTFT_PROM_BOUNDS];

static inline unsigned cost_hist_index(uint64_t ns)
{
    uint64_t u = ns >> COST_HIST_UNIT_SHIFT;
    if (u < COST_HIST_SUB)
        return (unsigned)u;
    unsigned msb = 63u - (unsigned)__builtin_clzll(u);
    if (msb > COST_HIST_MAX_MSB)
        return COST_HIST_BUCKETS - 1;
    return (msb - COST_HIST_SUB_BITS + 1) * COST_HIST_SUB +
           (unsigned)((u >> (msb - COST_HIST_SUB_BITS)) & (COST_HIST_SUB - 1));
}

/* Prometheus bucket of a duration: smallest i with ns <= 1e7 * 2^i. */
static inline unsigned cost_dur_prom_index(uint64_t ns)
{
    if (ns <= 10000000u)
        return 0;
    uint64_t q = (ns + 9999999u) / 10000000u; /* ceil(ns / 10 ms) >= 2 */
    unsigned i = 64u - (unsigned)__builtin_clzll(q - 1);
    return i < COST_DUR_PROM_BOUNDS ? i : COST_DUR_PROM_BOUNDS;
}

static inline unsigned cost_ttft_prom_index(uint64_t ns)
{
    unsigned lo = 0, hi = COST_TTFT_PROM_BOUNDS; /* first bound >= ns */
    while (lo < hi) {
        unsigned mid = (lo + hi) / 2;
        if (cost_ttft_prom_bounds_ns[mid] >= ns)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

static inline void cost_hist_record(struct cost_hist *h, uint64_t ns, enum cost_hist_kind kind)
{
    if (h->count == 0 || ns < h->min_ns)
        h->min_ns = ns;
    if (ns > h->max_ns)
        h->max_ns = ns;
    h->count++;
    h->sum_ns += ns;
    h->b[cost_hist_index(ns)]++;
    h->prom[kind == COST_HIST_DURATION ? cost_dur_prom_index(ns) : cost_ttft_prom_index(ns)]++;
}

/* Lower bound and width in ns of bucket idx. */
void cost_hist_bucket_range(unsigned idx, uint64_t *low_ns, uint64_t *width_ns);
/* The q-quantile (0 < q <= 1) in ns: midpoint of the bucket holding the
 * ceil(q * count)-th sample, clamped to [min, max].  0 when empty. */
uint64_t cost_hist_quantile(const struct cost_hist *h, double q);
void cost_hist_merge(struct cost_hist *into, const struct cost_hist *from);

#endif
