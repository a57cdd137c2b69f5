#include "hist.h"

#include <math.h>

const double cost_dur_prom_bounds_s[COST_DUR_PROM_BOUNDS] = {
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
};

/* OpenTelemetry GenAI semantic conventions, gen_ai.server.time_to_first_token. */
const double cost_ttft_prom_bounds_s[COST_TTFT_PROM_BOUNDS] = {
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
};
const uint64_t cost_ttft_prom_bounds_ns[COST_TTFT_PROM_BOUNDS] = {
    1000000,   5000000,   10000000,   20000000,   40000000,   60000000,
    80000000,  100000000, 250000000,  500000000,  750000000,  1000000000,
    2500000000, 5000000000, 7500000000, 10000000000,
};

void cost_hist_bucket_range(unsigned idx, uint64_t *low_ns, uint64_t *width_ns)
{
    uint64_t low, width;
    if (idx < COST_HIST_SUB) {
        low = idx;
        width = 1;
    } else {
        unsigned g = idx / COST_HIST_SUB, s = idx % COST_HIST_SUB;
        low = (uint64_t)(COST_HIST_SUB + s) << (g - 1);
        width = UINT64_C(1) << (g - 1);
    }
    *low_ns = low << COST_HIST_UNIT_SHIFT;
    *width_ns = width << COST_HIST_UNIT_SHIFT;
}

uint64_t cost_hist_quantile(const struct cost_hist *h, double q)
{
    if (h->count == 0)
        return 0;
    uint64_t rank = (uint64_t)ceil(q * (double)h->count);
    if (rank < 1)
        rank = 1;
    if (rank > h->count)
        rank = h->count;
    uint64_t seen = 0;
    for (unsigned i = 0; i < COST_HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= rank) {
            uint64_t low, width;
            cost_hist_bucket_range(i, &low, &width);
            uint64_t v = low + width / 2;
            if (v < h->min_ns)
                v = h->min_ns;
            if (v > h->max_ns)
                v = h->max_ns;
            return v;
        }
    }
    return h->max_ns;
}

void cost_hist_merge(struct cost_hist *into, const struct cost_hist *from)
{
    if (from->count == 0)
        return;
    if (into->count == 0 || from->min_ns < into->min_ns)
        into->min_ns = from->min_ns;
    if (from->max_ns > into->max_ns)
        into->max_ns = from->max_ns;
    into->count += from->count;
    into->sum_ns += from->sum_ns;
    for (unsigned i = 0; i <= COST_TTFT_PROM_BOUNDS; i++)
        into->prom[i] += from->prom[i];
    for (unsigned i = 0; i < COST_HIST_BUCKETS; i++)
        into->b[i] += from->b[i];
}
