#include "hist.h"

#include <math.h>

void cost_hist_bucket_range(unsigned idx, uint64_t *low, uint64_t *width)
{
    if (idx < COST_HIST_SUB) {
        *low = idx;
        *width = 1;
        return;
    }
    unsigned g = idx / COST_HIST_SUB, s = idx % COST_HIST_SUB;
    *low = (uint64_t)(COST_HIST_SUB + s) << (g - 1);
    *width = UINT64_C(1) << (g - 1);
}

uint64_t cost_hist_quantile(const struct cost_hist *h, double q, enum cost_hist_kind kind)
{
    if (h->count == 0)
        return 0;
    uint64_t rank = (uint64_t)ceil(q * (double)h->count);
    if (rank < 1)
        rank = 1;
    if (rank > h->count)
        rank = h->count;
    uint64_t seen = 0, unit = cost_hist_unit(kind);
    for (unsigned i = 0; i < COST_HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen < rank)
            continue;
        uint64_t low, width;
        cost_hist_bucket_range(i, &low, &width);
        /* x in [low, low + width) means ns in (low * unit, (low + width) * unit] */
        uint64_t v = low * unit + width * unit / 2;
        if (v < h->min_ns)
            v = h->min_ns;
        if (v > h->max_ns)
            v = h->max_ns;
        return v;
    }
    return h->max_ns;
}

unsigned cost_hist_prom_bounds(enum cost_hist_kind kind)
{
    return kind == COST_HIST_DURATION ? COST_DUR_PROM_BOUNDS : COST_TTFT_PROM_BOUNDS;
}

double cost_hist_prom_bound_s(enum cost_hist_kind kind, unsigned i)
{
    return (kind == COST_HIST_DURATION ? 0.01 : 0.001) * (double)(UINT64_C(1) << i);
}

uint64_t cost_hist_prom_cumulative(const struct cost_hist *h, enum cost_hist_kind kind, unsigned i)
{
    /* v <= bound  <=>  x < 2^(shift + i)  <=>  bucket below the first of
     * the group whose top bit is shift + i. */
    unsigned msb = (kind == COST_HIST_DURATION ? COST_DUR_BASE_SHIFT : COST_TTFT_BASE_SHIFT) + i;
    unsigned end = (msb - COST_HIST_SUB_BITS + 1) * COST_HIST_SUB;
    if (end > COST_HIST_BUCKETS)
        end = COST_HIST_BUCKETS;
    uint64_t n = 0;
    for (unsigned b = 0; b < end; b++)
        n += h->b[b];
    return n;
}
