/* Latency histograms, log-bucketed in the HDR style.
 *
 * A value v ns is recorded as x = ceil(v / unit) - 1 units, then bucketed:
 * exact below 16 units, then 16 sub-buckets per power of two (bucket width
 * <= 1/16 of its value; a reported percentile, the bucket's midpoint, is
 * within about 3%).  The units are chosen so that the Prometheus bucket
 * bounds are powers of two in units, i.e. exact HDR bucket boundaries:
 *   durations: unit 78,125 ns = 10 ms / 128, so le = 0.01 s * 2^i
 *              (gen_ai.client.operation.duration's 0.01 .. 81.92 s)
 *   TTFT:      unit 15,625 ns = 1 ms / 64,  so le = 0.001 s * 2^i (1 ms .. 16.384 s)
 * The Prometheus counts are therefore derived, exact, from the same buckets;
 * recording is one division by a constant, a count-leading-zeros and one
 * increment (plus count/sum/min/max on the same cache line).
 */
#ifndef CBUS_COST_HIST_H
#define CBUS_COST_HIST_H

#include <stdint.h>

#include "money.h"

#define COST_HIST_SUB_BITS 4
#define COST_HIST_SUB      (1u << COST_HIST_SUB_BITS)
#define COST_HIST_MAX_MSB  24 /* 2^24 units: 1310 s for durations, 262 s for TTFT */
#define COST_HIST_BUCKETS  ((COST_HIST_MAX_MSB - COST_HIST_SUB_BITS + 2) * COST_HIST_SUB)

enum cost_hist_kind { COST_HIST_DURATION, COST_HIST_TTFT };

#define COST_DUR_UNIT_NS      UINT64_C(78125)
#define COST_DUR_BASE_SHIFT   7  /* 10 ms = 2^7 units */
#define COST_DUR_PROM_BOUNDS  14 /* 0.01 .. 81.92 s */
#define COST_TTFT_UNIT_NS     UINT64_C(15625)
#define COST_TTFT_BASE_SHIFT  6  /* 1 ms = 2^6 units */
#define COST_TTFT_PROM_BOUNDS 15 /* 0.001 .. 16.384 s */

struct cost_hist {
    uint64_t count;
    uint64_t min_ns, max_ns;         /* valid when count > 0 */
    cost_u128 sum_ns;
    uint64_t b[COST_HIST_BUCKETS];
};

static inline unsigned cost_hist_index(uint64_t x)
{
    if (x < COST_HIST_SUB)
        return (unsigned)x;
    unsigned msb = 63u - (unsigned)__builtin_clzll(x);
    if (msb > COST_HIST_MAX_MSB)
        return COST_HIST_BUCKETS - 1;
    return (msb - COST_HIST_SUB_BITS + 1) * COST_HIST_SUB +
           (unsigned)((x >> (msb - COST_HIST_SUB_BITS)) & (COST_HIST_SUB - 1));
}

static inline uint64_t cost_hist_unit(enum cost_hist_kind kind)
{
    return kind == COST_HIST_DURATION ? COST_DUR_UNIT_NS : COST_TTFT_UNIT_NS;
}

/* kind is a constant at every call site, so the division is a multiply. */
static inline void cost_hist_record(struct cost_hist *h, uint64_t ns, enum cost_hist_kind kind)
{
    if (h->count == 0 || ns < h->min_ns)
        h->min_ns = ns;
    if (ns > h->max_ns)
        h->max_ns = ns;
    h->count++;
    h->sum_ns += ns;
    uint64_t x = ns ? (ns - 1) / cost_hist_unit(kind) : 0; /* ceil(ns / unit) - 1 */
    h->b[cost_hist_index(x)]++;
}

/* Lower bound and width, in units, of bucket idx. */
void cost_hist_bucket_range(unsigned idx, uint64_t *low, uint64_t *width);
/* The q-quantile (0 < q <= 1) in ns: midpoint of the bucket holding the
 * ceil(q * count)-th sample, clamped to [min, max].  0 when empty. */
uint64_t cost_hist_quantile(const struct cost_hist *h, double q, enum cost_hist_kind kind);
/* Prometheus: number of Prometheus bounds, bound i in seconds, and the
 * cumulative count of samples <= bound i (exact). */
unsigned cost_hist_prom_bounds(enum cost_hist_kind kind);
double cost_hist_prom_bound_s(enum cost_hist_kind kind, unsigned i);
uint64_t cost_hist_prom_cumulative(const struct cost_hist *h, enum cost_hist_kind kind, unsigned i);

#endif
