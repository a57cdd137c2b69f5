/* Prices and per-call cost against real entries of LiteLLM's table. */
#include <criterion/criterion.h>

#include <errno.h>
#include <string.h>

#include "ledger.h"
#include "prices.h"

#define TABLE CBUS_SOURCE_DIR "/consumers/cost/model_prices_and_context_window.json"
#define USD(x) ((cost_u128)((x) * 1e12 + 0.5)) /* exact for the values used below */

static struct cost_price_table *tab;

static void setup(void)
{
    char err[512];
    int r = cost_prices_load(&tab, TABLE, NULL, err, sizeof err);
    cr_assert_eq(r, 0, "%s", err);
}

static void teardown(void)
{
    cost_prices_free(tab);
}

static const struct cost_price *find(const char *provider, const char *model)
{
    const char *why;
    return cost_prices_lookup(tab, provider, model, &why);
}

static struct cbus_usage usage(uint32_t in, uint32_t out, uint32_t cr, uint32_t cc, uint32_t rs,
                               unsigned pres)
{
    struct cbus_usage u = {.input_tokens = in, .output_tokens = out, .cache_read_tokens = cr,
                           .cache_creation_tokens = cc, .reasoning_tokens = rs,
                           .usage_present = (uint8_t)pres};
    return u;
}

#define ALL (CBUS_USAGE_INPUT | CBUS_USAGE_OUTPUT | CBUS_USAGE_CACHE_READ | CBUS_USAGE_CACHE_CREATION | CBUS_USAGE_REASONING)

TestSuite(cost_prices, .init = setup, .fini = teardown);

Test(cost_prices, table_loads_every_entry)
{
    /* 2,985 entries, one of which ("last_updated") is metadata. */
    cr_assert_eq(cost_prices_count(tab), 2984);
}

Test(cost_prices, gpt4o_cache_reads_charged_once_at_their_rate)
{
    const struct cost_price *p = find("openai", "gpt-4o");
    cr_assert_not_null(p);
    /* 10,000 input of which 4,000 cache reads; 500 output:
     * 6000 * 2.5e-6 + 4000 * 1.25e-6 + 500 * 1e-5 = 0.015 + 0.005 + 0.005 */
    struct cbus_usage u = usage(10000, 500, 4000, 0, 0, ALL);
    cr_assert(cost_usage_cost(p, &u, NULL) == (cost_u128)25000000000ull);
}

Test(cost_prices, claude_sonnet_4_cache_creation_below_and_above_200k)
{
    const struct cost_price *p = find("anthropic", "claude-sonnet-4-20250514");
    cr_assert_not_null(p);
    /* 150,000 input incl. 50,000 cache writes; 1,000 output:
     * 100000 * 3e-6 + 50000 * 3.75e-6 + 1000 * 1.5e-5 = 0.3 + 0.1875 + 0.015 */
    struct cbus_usage u = usage(150000, 1000, 0, 50000, 0, ALL);
    cr_assert(cost_usage_cost(p, &u, NULL) == USD(0.5025));
    /* 250,000 input (> 200k: every rate takes its tier) incl. 100,000 reads
     * and 50,000 writes: 100000*6e-6 + 100000*6e-7 + 50000*7.5e-6 + 1000*2.25e-5 */
    u = usage(250000, 1000, 100000, 50000, 0, ALL);
    cr_assert(cost_usage_cost(p, &u, NULL) == USD(1.0575));
    /* Exactly 200,000 is not above 200k. */
    u = usage(200000, 0, 0, 0, 0, ALL);
    cr_assert(cost_usage_cost(p, &u, NULL) == USD(0.6));
    u = usage(200001, 0, 0, 0, 0, ALL);
    cr_assert(cost_usage_cost(p, &u, NULL) == (cost_u128)200001 * 6000000);
}

Test(cost_prices, reasoning_at_its_own_rate_when_the_table_gives_one)
{
    /* dashscope/qwen-plus-2025-04-28: input 4e-7, output 1.2e-6, reasoning 4e-6.
     * 1000 in; 1000 out of which 600 reasoning:
     * 1000*4e-7 + 400*1.2e-6 + 600*4e-6 = 0.0004 + 0.00048 + 0.0024 */
    const struct cost_price *p = find("dashscope", "qwen-plus-2025-04-28");
    cr_assert_not_null(p, "provider-prefixed lookup");
    cr_assert_str_eq(p->key, "dashscope/qwen-plus-2025-04-28");
    struct cbus_usage u = usage(1000, 1000, 0, 0, 600, ALL);
    cr_assert(cost_usage_cost(p, &u, NULL) == USD(0.00328));
}

Test(cost_prices, reasoning_priced_as_output_without_its_own_rate)
{
    /* o3-mini: input 1.1e-6, output 4.4e-6, no reasoning rate: reasoning is
     * part of the output and is not charged a second time. */
    const struct cost_price *p = find("openai", "o3-mini");
    cr_assert_not_null(p);
    struct cbus_usage u = usage(2000, 3000, 0, 0, 2500, ALL);
    cr_assert(cost_usage_cost(p, &u, NULL) == USD(2000 * 1.1e-6 + 3000 * 4.4e-6));
}

Test(cost_prices, model_name_found_before_provider_prefix)
{
    const struct cost_price *p = find("anthropic", "claude-sonnet-4-5");
    cr_assert_not_null(p);
    cr_assert_str_eq(p->key, "claude-sonnet-4-5");
    p = find("openrouter", "anthropic/claude-sonnet-4");
    cr_assert_not_null(p);
    cr_assert_str_eq(p->key, "openrouter/anthropic/claude-sonnet-4");
}

Test(cost_prices, unknown_model_is_not_priced)
{
    const char *why = NULL;
    cr_assert_null(cost_prices_lookup(tab, "acme", "my-private-model", &why));
    cr_assert_not_null(why);
    cr_assert_null(cost_prices_lookup(tab, "", "", &why));
}

Test(cost_prices, absent_counts_add_nothing)
{
    const struct cost_price *p = find("openai", "gpt-4o");
    /* Only output reported (streaming without prompt usage). */
    struct cbus_usage u = usage(99999, 100, 99999, 0, 0, CBUS_USAGE_OUTPUT);
    cr_assert(cost_usage_cost(p, &u, NULL) == USD(0.001));
    u = usage(1, 1, 1, 1, 1, 0);
    cr_assert(cost_usage_cost(p, &u, NULL) == 0);
}

Test(cost_prices, cache_above_input_clamps_and_counts_anomaly)
{
    const struct cost_price *p = find("openai", "gpt-4o");
    struct cost_anomalies an = {0};
    /* A producer passing Anthropic's raw counts (input without cache). */
    struct cbus_usage u = usage(100, 0, 4000, 0, 0, ALL);
    cr_assert(cost_usage_cost(p, &u, &an) == USD(4000 * 1.25e-6));
    cr_assert_eq(an.cache_exceeds_input, 1);
    u = usage(0, 10, 0, 0, 20, ALL);
    cost_usage_cost(p, &u, &an);
    cr_assert_eq(an.reasoning_exceeds_output, 1);
}

Test(cost_prices, overrides_replace_and_add_entries)
{
    char err[512];
    const char *local = "{\"gpt-4o\": {\"input_cost_per_token\": 1e-6, \"output_cost_per_token\": 2e-6},\n"
                        " \"ft:my-model\": {\"input_cost_per_token\": 3e-6, \"output_cost_per_token\": 4e-6}}";
    cr_assert_eq(cost_prices_merge(tab, "local.json", local, err, sizeof err), 0, "%s", err);
    const struct cost_price *p = find("openai", "gpt-4o");
    /* Replaced whole: no cache-read rate left, so reads are charged as input. */
    struct cbus_usage u = usage(1000, 1000, 500, 0, 0, ALL);
    cr_assert(cost_usage_cost(p, &u, NULL) == USD(1000 * 1e-6 + 1000 * 2e-6));
    p = find("", "ft:my-model");
    cr_assert_not_null(p);
    u = usage(10, 10, 0, 0, 0, ALL);
    cr_assert(cost_usage_cost(p, &u, NULL) == USD(10 * 3e-6 + 10 * 4e-6));
}

Test(cost_prices, entry_without_token_prices_is_unpriced)
{
    char err[512];
    cr_assert_eq(cost_prices_merge(tab, "x.json", "{\"img\": {\"output_cost_per_image\": 0.04}}",
                                   err, sizeof err), 0);
    const char *why = NULL;
    cr_assert_null(cost_prices_lookup(tab, "", "img", &why));
    cr_assert(strstr(why, "no per-token"));
}

Test(cost_prices, syntax_error_names_line_and_column)
{
    struct cost_price_table *t = NULL;
    char err[512];
    const char *bad = "{\n  \"a\": {\"input_cost_per_token\": 1e-6,},\n}";
    cr_assert_eq(cost_prices_parse(&t, "bad.json", bad, err, sizeof err), -EINVAL);
    cr_assert(strstr(err, "bad.json:2:"), "%s", err);
}

Test(cost_prices, wrong_field_type_names_entry_and_field)
{
    struct cost_price_table *t = NULL;
    char err[512];
    cr_assert_eq(cost_prices_parse(&t, "p.json", "{\"m\": {\"input_cost_per_token\": \"cheap\"}}",
                                   err, sizeof err), -EINVAL);
    cr_assert(strstr(err, "\"m\"") && strstr(err, "input_cost_per_token"), "%s", err);
    cr_assert_eq(cost_prices_parse(&t, "p.json", "{\"m\": {\"output_cost_per_token\": -1}}", err,
                                   sizeof err), -EINVAL);
    cr_assert(strstr(err, "output_cost_per_token"), "%s", err);
    cr_assert_eq(cost_prices_parse(&t, "p.json", "[1,2]", err, sizeof err), -EINVAL);
    cr_assert_eq(cost_prices_parse(&t, "p.json", "{\"m\": 5}", err, sizeof err), -EINVAL);
    cr_assert(strstr(err, "\"m\""), "%s", err);
}

Test(cost_prices, missing_file_is_an_error)
{
    struct cost_price_table *t = NULL;
    char err[512];
    cr_assert_eq(cost_prices_load(&t, "/nonexistent/prices.json", NULL, err, sizeof err), -ENOENT);
    cr_assert(strstr(err, "/nonexistent/prices.json"));
}

Test(cost_prices, money_formats_exactly)
{
    char s[64];
    cost_pico_format_usd(s, sizeof s, (cost_u128)12 * COST_PICO_PER_USD + 345);
    cr_assert_str_eq(s, "12.000000000345");
    cost_u128 big = (cost_u128)UINT64_MAX * 1000 + 7, back;
    cost_u128_format(s, sizeof s, big);
    cr_assert_eq(cost_u128_parse(s, &back), 0);
    cr_assert(back == big);
}
