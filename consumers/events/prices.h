/* The price table: LiteLLM's model_prices_and_context_window.json format.
 *
 * Each entry is keyed by a model name ("gpt-4o") or a provider-prefixed name
 * ("openrouter/anthropic/claude-sonnet-4").  The fields used are
 *   input_cost_per_token, output_cost_per_token,
 *   cache_read_input_token_cost, cache_creation_input_token_cost,
 *   output_cost_per_reasoning_token
 * and any "<field>_above_<N>k_tokens" tier of those (LiteLLM's rule: when the
 * request's input tokens, cache included, exceed N*1000, every field that has
 * a tier rate uses it).  Rates are USD per token as doubles in the file and
 * pico-dollars per token (integers, rounded to nearest) here.
 */
#ifndef CBUS_COST_PRICES_H
#define CBUS_COST_PRICES_H

#include <stddef.h>
#include <stdint.h>

#include <cbus/layout.h>

#include "money.h"

enum cost_rate_field {
    COST_RATE_INPUT,
    COST_RATE_OUTPUT,
    COST_RATE_CACHE_READ,
    COST_RATE_CACHE_CREATION,
    COST_RATE_REASONING,
    COST_RATE__COUNT
};

#define COST_RATE_SET(f) (1u << (f))

struct cost_rates {
    uint64_t pico[COST_RATE__COUNT]; /* pico-dollars per token */
    unsigned set;                    /* COST_RATE_SET bits given by the file */
};

#define COST_TIERS_MAX 4

/* A priced model, ready for the hot path: every fallback already applied. */
struct cost_price {
    struct cost_rates base;
    unsigned n_tiers;
    struct {
        uint64_t above_tokens;       /* applies when input tokens > this */
        struct cost_rates r;         /* complete (base values filled in) */
    } tier[COST_TIERS_MAX];          /* ascending above_tokens */
    const char *key;                 /* the table key it was found under */
};

struct cost_price_table;

/* Loads a table from path.  overrides (may be NULL) is a second file of the
 * same format whose entries replace the table's entries of the same name.
 * Returns 0 or -errno with "FILE:LINE:COL: ..." or "FILE: entry "x": field:
 * ..." in err. */
int cost_prices_load(struct cost_price_table **out, const char *path, const char *overrides,
                     char *err, size_t errlen);
/* Same from memory (name used in messages); for tests. */
int cost_prices_parse(struct cost_price_table **out, const char *name, const char *json,
                      char *err, size_t errlen);
/* Merges entries parsed from json into t (replacing same-named entries). */
int cost_prices_merge(struct cost_price_table *t, const char *name, const char *json,
                      char *err, size_t errlen);
void cost_prices_free(struct cost_price_table *t);
size_t cost_prices_count(const struct cost_price_table *t);

/* Looks up model, then provider/model.  Returns the price, or NULL when
 * neither key exists or the entry has no per-token price (then *why says
 * which, for the one warning per model). */
const struct cost_price *cost_prices_lookup(const struct cost_price_table *t, const char *provider,
                                            const char *model, const char **why);

/* Rates that apply to a request with input_tokens (cache included). */
static inline const struct cost_rates *cost_price_rates(const struct cost_price *p,
                                                        uint64_t input_tokens)
{
    const struct cost_rates *r = &p->base;
    for (unsigned i = 0; i < p->n_tiers; i++)
        if (input_tokens > p->tier[i].above_tokens)
            r = &p->tier[i].r;
    return r;
}

/* What one call cost, by the token kind it was charged for (pico-dollars):
 * uncached input, cache reads, cache writes, output other than reasoning,
 * reasoning.  One function for cbus-cost's ledger and cbus-export's
 * gen_ai.usage.cost, so the two always agree. */
enum cost_part { COST_PART_INPUT, COST_PART_CACHE_READ, COST_PART_CACHE_CREATION, COST_PART_OUTPUT,
                 COST_PART_REASONING, COST_PART__COUNT };
#define COST_ANOM_CACHE_EXCEEDS_INPUT     1u /* cache_read + cache_creation > input: uncached taken as 0 */
#define COST_ANOM_REASONING_EXCEEDS_OUTPUT 2u /* reasoning > output: output taken as all reasoning */

/* The cost of usage u at price p (NULL: 0, the anomalies still found).
 * parts (may be NULL) gets the breakdown, *anomalies (may be NULL) the
 * COST_ANOM_* bits.  Absent counts (usage_present) are not zero: they are
 * not charged.  The tier is chosen by the whole prompt, cache included
 * (LiteLLM's rule). */
cost_u128 cost_usage_price(const struct cost_price *p, const struct cbus_usage *u,
                           cost_u128 parts[COST_PART__COUNT], unsigned *anomalies);

#endif
