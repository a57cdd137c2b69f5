/* Target: the price table parser (consumers/events/prices.c), LiteLLM's
 * model_prices_and_context_window.json format, on arbitrary text.  The table
 * is a file the operator downloads from the internet; a bad one must be
 * refused with a message, never crash the cost daemon or price a request
 * absurdly.
 *
 * Input: the table text; a second table (the overrides file) may follow
 * after a NUL byte.  When it parses, every key named in the text is looked
 * up and priced for a few token counts, and the price's invariants are
 * checked: tiers ascending, tier rates complete, lookups stable. */
#include "fuzz.h"

#include "ledger.h"
#include "prices.h"

#include <stdlib.h>

static void price_some(const struct cost_price_table *t, const char *text)
{
    /* Candidate model names: every quoted string in the text (bounded). */
    const char *p = text;
    for (int n = 0; n < 32 && (p = strchr(p, '"')); n++) {
        const char *q = strchr(p + 1, '"');
        if (!q)
            break;
        char model[CBUS_MODEL_LEN + 1];
        size_t len = (size_t)(q - p - 1);
        if (len < sizeof model) {
            memcpy(model, p + 1, len);
            model[len] = '\0';
            const char *why = NULL;
            const struct cost_price *pr = cost_prices_lookup(t, "openai", model, &why);
            if (pr) {
                FZ_CHECK(pr->n_tiers <= COST_TIERS_MAX, "%u tiers", pr->n_tiers);
                for (unsigned i = 1; i < pr->n_tiers; i++)
                    FZ_CHECK(pr->tier[i - 1].above_tokens < pr->tier[i].above_tokens,
                             "tiers not ascending");
                struct cbus_usage u = {.input_tokens = 250000, .output_tokens = 1000,
                                       .cache_read_tokens = 200000, .cache_creation_tokens = 100,
                                       .reasoning_tokens = 500, .usage_present = 0x1f};
                struct cost_anomalies an;
                memset(&an, 0, sizeof an);
                cost_usage_cost(pr, &u, &an);
                u.input_tokens = 10;
                cost_usage_cost(pr, &u, &an);
                cost_price_rates(pr, UINT64_MAX);
                FZ_CHECK(cost_prices_lookup(t, "openai", model, &why) == pr, "lookup unstable");
            }
        }
        p = q + 1;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 2);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = text[size + 1] = '\0';
    const char *over = text + strlen(text) + 1; /* "" when there is no NUL */

    struct cost_price_table *t = NULL;
    char err[512];
    err[0] = '\0';
    int r = cost_prices_parse(&t, "fuzz.json", text, err, sizeof err);
    if (r) {
        FZ_CHECK(r < 0 && memchr(err, '\0', sizeof err) && err[0], "refused without a message");
        FZ_CHECK(!t, "a refused table was returned");
        free(text);
        return 0;
    }
    FZ_CHECK(t, "parse returned 0 and no table");
    if (*over && cost_prices_merge(t, "over.json", over, err, sizeof err) == 0)
        price_some(t, over);
    price_some(t, text);
    cost_prices_count(t);
    cost_prices_free(t);
    free(text);
    return 0;
}
