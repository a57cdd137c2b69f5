/* Aggregation, budgets and checkpoints of the ledger, fed struct cbus_event
 * records directly (the daemon feeds it the same records from the bus). */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint.h"
#include "ledger.h"
#include "prices.h"

#define DAY  COST_DAY_NS
#define T0   (UINT64_C(20000) * DAY + UINT64_C(3600) * 1000000000u) /* 1:00 UTC on day 20000 */

/* A tiny price table with round numbers: 1 USD per 1M input tokens... */
static const char *PRICES =
    "{\"m1\": {\"input_cost_per_token\": 1e-6, \"output_cost_per_token\": 2e-6,"
    "          \"cache_read_input_token_cost\": 1e-7},"
    " \"m2\": {\"input_cost_per_token\": 1e-5, \"output_cost_per_token\": 1e-5}}";

static struct cost_price_table *tab;
static struct cost_ledger led;
static uint64_t next_id;

struct rec {
    struct cost_alert a;
    char key[64];
};
static struct rec alerts[64];
static unsigned n_alerts;
static unsigned n_unpriced;

static void on_alert(void *arg, const struct cost_alert *a)
{
    (void)arg;
    if (n_alerts < 64) { /* tests that look at alerts raise fewer than 64 */
        alerts[n_alerts].a = *a;
        snprintf(alerts[n_alerts].key, sizeof alerts[n_alerts].key, "%s", a->key);
        alerts[n_alerts].a.key = alerts[n_alerts].key;
    }
    n_alerts++;
}

static void on_unpriced(void *arg, const char *p, const char *m, const char *why)
{
    (void)arg;
    (void)p;
    (void)m;
    (void)why;
    n_unpriced++;
}

static struct cost_budget user_b, global_b, sess_b, alice_b;

static void init_ledger(struct cost_ledger *l)
{
    struct cost_budget_set bs = {.global = &global_b, .user_default = &user_b,
                                 .session_default = &sess_b, .list = &alice_b, .n = 1};
    cr_assert_eq(cost_ledger_init(l, tab, &bs, NULL), 0);
    l->on_alert = on_alert;
    l->on_unpriced = on_unpriced;
}

static void setup(void)
{
    char err[256];
    cr_assert_eq(cost_prices_parse(&tab, "t.json", PRICES, err, sizeof err), 0, "%s", err);
    memset(&user_b, 0, sizeof user_b);
    snprintf(user_b.key, sizeof user_b.key, "*");
    user_b.scope = COST_SCOPE_USER;
    user_b.limit_pico = 1 * COST_PICO_PER_USD;
    user_b.period_days = 1;
    cost_budget_build(&user_b, NULL, 0);
    global_b = user_b;
    global_b.scope = COST_SCOPE_GLOBAL;
    global_b.limit_pico = 100 * COST_PICO_PER_USD;
    cost_budget_build(&global_b, NULL, 0);
    sess_b = user_b;
    sess_b.scope = COST_SCOPE_SESSION;
    sess_b.limit_pico = COST_PICO_PER_USD / 2;
    cost_budget_build(&sess_b, (const uint32_t[]){100}, 1);
    alice_b = user_b;
    snprintf(alice_b.key, sizeof alice_b.key, "alice");
    alice_b.limit_pico = 10 * COST_PICO_PER_USD;
    alice_b.soft_pico = 5 * COST_PICO_PER_USD;
    alice_b.period_days = 7;
    cost_budget_build(&alice_b, (const uint32_t[]){90}, 1);
    init_ledger(&led);
    next_id = 0;
    n_alerts = 0;
    n_unpriced = 0;
}

static void teardown(void)
{
    cost_ledger_free(&led);
    cost_prices_free(tab);
}

static struct cbus_event ev_end(const char *model, const char *user, const char *session,
                                uint32_t in, uint32_t out, uint64_t ts)
{
    struct cbus_event ev;
    memset(&ev, 0, sizeof ev);
    ev.kind = CBUS_EV_LLM_END;
    ev.event_id = next_id++;
    ev.ts_realtime_ns = ts;
    snprintf(ev.provider, sizeof ev.provider, "acme");
    snprintf(ev.model, sizeof ev.model, "%s", model);
    snprintf(ev.user, sizeof ev.user, "%s", user);
    if (session)
        snprintf(ev.session, sizeof ev.session, "%s", session);
    ev.u.usage.input_tokens = in;
    ev.u.usage.output_tokens = out;
    ev.u.usage.usage_present = CBUS_USAGE_INPUT | CBUS_USAGE_OUTPUT;
    return ev;
}

static void feed(struct cbus_event ev)
{
    cost_ledger_apply(&led, &ev);
}

static struct cost_user *user(const char *name)
{
    char k[COST_USER_KEY];
    cost_key_make(k, CBUS_USER_LEN, name);
    long i = cost_ktab_find(&led.users, k, cost_key_hash(k, sizeof k));
    cr_assert_geq(i, 0, "user %s", name);
    return cost_ktab_val_at(&led.users, (size_t)i);
}

static struct cost_model *model(const char *name)
{
    char k[COST_MODEL_KEY], pk[CBUS_PROVIDER_LEN + 8], mk[CBUS_MODEL_LEN + 8];
    cost_key_make(pk, CBUS_PROVIDER_LEN, "acme");
    cost_key_make(mk, CBUS_MODEL_LEN, name);
    memcpy(k, pk, CBUS_PROVIDER_LEN);
    memcpy(k + CBUS_PROVIDER_LEN, mk, CBUS_MODEL_LEN);
    memcpy(k + COST_MODEL_PH, pk + CBUS_PROVIDER_LEN, 8);
    memcpy(k + COST_MODEL_MH, mk + CBUS_MODEL_LEN, 8);
    long i = cost_ktab_find(&led.models, k, cost_key_hash(k, sizeof k));
    cr_assert_geq(i, 0, "model %s", name);
    return cost_ktab_val_at(&led.models, (size_t)i);
}

TestSuite(cost_ledger, .init = setup, .fini = teardown);

Test(cost_ledger, totals_per_model_user_session)
{
    feed(ev_end("m1", "bob", "s1", 1000, 100, T0));   /* 0.001 + 0.0002 */
    feed(ev_end("m2", "bob", "s2", 1000, 100, T0));   /* 0.01 + 0.001 */
    feed(ev_end("m1", "carol", "s1", 2000, 0, T0));   /* 0.002 */
    cr_assert_eq(led.total.requests, 3);
    cr_assert(led.total.cost_pico == (cost_u128)14200000000ull);
    cr_assert(model("m1")->c.cost_pico == (cost_u128)3200000000ull);
    cr_assert_eq(model("m1")->c.tokens[COST_TOK_INPUT], 3000);
    cr_assert(user("bob")->c.cost_pico == (cost_u128)12200000000ull);
    cr_assert_eq(user("carol")->c.requests, 1);
    cr_assert_eq(led.sessions.n, 2);
    cr_assert_eq(led.events, 3);
    cr_assert_eq(led.cursor, 3);
}

Test(cost_ledger, absent_usage_is_not_reported_as_zero)
{
    struct cbus_event ev = ev_end("m1", "bob", NULL, 0, 0, T0);
    ev.u.usage.usage_present = 0; /* streaming call without usage */
    feed(ev);
    ev = ev_end("m1", "bob", NULL, 10, 5, T0);
    ev.u.usage.usage_present = CBUS_USAGE_OUTPUT;
    feed(ev);
    struct cost_model *m = model("m1");
    cr_assert_eq(m->c.requests, 2);
    cr_assert_eq(m->c.usage_missing, 1);
    cr_assert_eq(m->c.reported[COST_TOK_INPUT], 0, "input never reported");
    cr_assert_eq(m->c.reported[COST_TOK_OUTPUT], 1);
    cr_assert_eq(m->c.tokens[COST_TOK_OUTPUT], 5);
    cr_assert_eq(m->c.reported[COST_TOK_CACHE_READ], 0);
}

Test(cost_ledger, errors_and_unpriced_models)
{
    struct cbus_event ev = ev_end("mystery", "bob", NULL, 1000, 1000, T0);
    feed(ev);
    feed(ev_end("mystery", "bob", NULL, 1000, 1000, T0));
    ev.kind = CBUS_EV_LLM_ERROR;
    ev.event_id = next_id++;
    feed(ev);
    cr_assert_eq(n_unpriced, 1, "one warning per model");
    struct cost_model *m = model("mystery");
    cr_assert_null(m->price);
    cr_assert_eq(m->c.unpriced, 2);
    cr_assert_eq(m->c.errors, 1);
    cr_assert_eq(m->c.tokens[COST_TOK_INPUT], 2000, "tokens still tracked");
    cr_assert(m->c.cost_pico == 0);
}

Test(cost_ledger, duplicates_below_cursor_are_skipped)
{
    struct cbus_event ev = ev_end("m1", "bob", NULL, 1000, 0, T0);
    feed(ev);
    feed(ev); /* same event_id again */
    cr_assert_eq(led.total.requests, 1);
    cr_assert_eq(led.an.duplicate_events, 1);
}

Test(cost_ledger, thresholds_alert_once_per_period_then_reset)
{
    /* bob: 1 USD/day, 50/80/100%.  Each call costs 0.3 USD (300k input on m1). */
    for (int i = 0; i < 3; i++)
        feed(ev_end("m1", "bob", NULL, 300000, 0, T0 + (uint64_t)i));
    /* 0.9 USD: 50% and 80% fired, once each */
    cr_assert_eq(n_alerts, 2);
    cr_assert_eq(alerts[0].a.kind, COST_ALERT_THRESHOLD);
    cr_assert_eq(alerts[0].a.pct, 50);
    cr_assert_eq(alerts[1].a.pct, 80);
    cr_assert_str_eq(alerts[1].key, "bob");
    feed(ev_end("m1", "bob", NULL, 300000, 0, T0 + 10));
    cr_assert_eq(n_alerts, 3);
    cr_assert_eq(alerts[2].a.kind, COST_ALERT_EXCEEDED);
    cr_assert_eq(alerts[2].a.scope, COST_SCOPE_USER);
    cr_assert(alerts[2].a.spent_pico == (cost_u128)1200000000000ull);
    cr_assert(user("bob")->b.exceeded);
    for (int i = 0; i < 5; i++)
        feed(ev_end("m1", "bob", NULL, 300000, 0, T0 + 20));
    cr_assert_eq(n_alerts, 3, "no repeat within the period");

    /* Next UTC day: the verdict is cleared by the wall clock tick. */
    cost_ledger_tick(&led, T0 + DAY - 3600 * UINT64_C(1000000000) - 1);
    cr_assert_eq(n_alerts, 3, "still the same day");
    cost_ledger_tick(&led, (T0 / DAY + 1) * DAY);
    cr_assert_eq(n_alerts, 4);
    cr_assert_eq(alerts[3].a.kind, COST_ALERT_RESET);
    cr_assert_not(user("bob")->b.exceeded);
    cr_assert(user("bob")->b.spent_pico == 0);
    /* and the thresholds fire again in the new period */
    feed(ev_end("m1", "bob", NULL, 600000, 0, T0 + DAY));
    cr_assert_eq(n_alerts, 5);
    cr_assert_eq(alerts[4].a.pct, 50);
}

Test(cost_ledger, event_in_next_period_resets_and_counts_there)
{
    for (int i = 0; i < 4; i++)
        feed(ev_end("m1", "bob", NULL, 300000, 0, T0));
    cr_assert(user("bob")->b.exceeded);
    n_alerts = 0;
    feed(ev_end("m1", "bob", NULL, 100000, 0, T0 + DAY));
    cr_assert_eq(n_alerts, 1);
    cr_assert_eq(alerts[0].a.kind, COST_ALERT_RESET);
    cr_assert(alerts[0].a.spent_pico == (cost_u128)1200000000000ull, "reports the old period's spend");
    cr_assert(user("bob")->b.spent_pico == (cost_u128)100000000000ull);
}

Test(cost_ledger, specific_budget_soft_limit_and_week_period)
{
    /* alice: 10 USD per 7d, soft 5, thresholds 90 (+ the limit itself). */
    feed(ev_end("m2", "alice", NULL, 500000, 0, T0)); /* 5 USD */
    cr_assert_eq(n_alerts, 1);
    cr_assert_eq(alerts[0].a.kind, COST_ALERT_SOFT);
    feed(ev_end("m2", "alice", NULL, 400000, 0, T0)); /* 9 */
    cr_assert_eq(n_alerts, 2);
    cr_assert_eq(alerts[1].a.pct, 90);
    feed(ev_end("m2", "alice", NULL, 100000, 0, T0)); /* 10: exactly the limit */
    cr_assert_eq(n_alerts, 3);
    cr_assert_eq(alerts[2].a.kind, COST_ALERT_EXCEEDED);
    cr_assert_eq(alerts[2].a.period_end_day - alerts[2].a.period_start_day, 7);
    cr_assert_eq(alerts[2].a.period_start_day % 7, 0);
    /* the next day is the same 7d period (unless it is the boundary) */
    uint64_t day = T0 / DAY;
    if ((day + 1) % 7 != 0) {
        cost_ledger_tick(&led, (day + 1) * DAY);
        cr_assert(user("alice")->b.exceeded);
    }
    cost_ledger_tick(&led, alerts[2].a.period_end_day * DAY);
    cr_assert_not(user("alice")->b.exceeded);
}

Test(cost_ledger, global_and_session_budgets)
{
    /* session limit 0.5 USD (threshold list {100}); global 100 USD */
    feed(ev_end("m1", "bob", "sx", 300000, 0, T0));
    feed(ev_end("m1", "carol", "sx", 300000, 0, T0));
    int got_session = 0;
    for (unsigned i = 0; i < n_alerts; i++)
        if (alerts[i].a.scope == COST_SCOPE_SESSION) {
            cr_assert_eq(alerts[i].a.kind, COST_ALERT_EXCEEDED);
            cr_assert_str_eq(alerts[i].key, "sx");
            got_session++;
        }
    cr_assert_eq(got_session, 1);
    n_alerts = 0;
    for (int i = 0; i < 100; i++)
        feed(ev_end("m2", "u", NULL, 100000, 0, T0)); /* 1 USD each */
    int got_global = 0;
    for (unsigned i = 0; i < n_alerts; i++)
        if (alerts[i].a.scope == COST_SCOPE_GLOBAL && alerts[i].a.kind == COST_ALERT_EXCEEDED) {
            got_global++;
            cr_assert_str_eq(alerts[i].key, "*");
        }
    cr_assert_eq(got_global, 1);
    cr_assert(led.global_b.exceeded);
}

Test(cost_ledger, latency_percentiles_within_bucket_precision)
{
    for (uint32_t i = 1; i <= 1000; i++) {
        struct cbus_event ev = ev_end("m1", "bob", NULL, 1, 1, T0);
        ev.u.usage.usage_present |= CBUS_USAGE_DURATION | CBUS_USAGE_TTFT;
        ev.u.usage.duration_ns = (uint64_t)i * 1000000u; /* 1..1000 ms */
        ev.u.usage.ttft_ns = 50000000u;
        feed(ev);
    }
    const struct cost_hist *h = &model("m1")->lat.duration;
    cr_assert_eq(h->count, 1000);
    double p50 = cost_hist_quantile(h, 0.5, COST_HIST_DURATION) / 1e6;
    double p99 = cost_hist_quantile(h, 0.99, COST_HIST_DURATION) / 1e6;
    cr_assert(p50 > 500 * 0.96 && p50 < 500 * 1.04, "p50 %f", p50);
    cr_assert(p99 > 990 * 0.96 && p99 < 990 * 1.04, "p99 %f", p99);
    cr_assert_eq(cost_hist_quantile(&model("m1")->lat.ttft, 0.5, COST_HIST_TTFT), 50000000u,
                 "clamped to min/max");
    /* Prometheus buckets, exact: le=0.01 s holds 1..10 ms, le=0.64 s 1..640 ms */
    cr_assert_eq(cost_hist_prom_cumulative(h, COST_HIST_DURATION, 0), 10);
    cr_assert_eq(cost_hist_prom_cumulative(h, COST_HIST_DURATION, 6), 640);
    cr_assert_eq(cost_hist_prom_cumulative(h, COST_HIST_DURATION, 13), 1000);
    cr_assert_eq(cost_hist_prom_cumulative(&model("m1")->lat.ttft, COST_HIST_TTFT, 5), 0, "le 32 ms");
    cr_assert_eq(cost_hist_prom_cumulative(&model("m1")->lat.ttft, COST_HIST_TTFT, 6), 1000, "le 64 ms");
}

Test(cost_ledger, prometheus_bounds_are_inclusive_and_exact)
{
    static struct cost_hist h;
    struct {
        uint64_t ns;
        enum cost_hist_kind k;
        unsigned i;
        uint64_t want;
    } cases[] = {
        {10000000, COST_HIST_DURATION, 0, 1},  /* exactly 0.01 s: le="0.01" */
        {10000001, COST_HIST_DURATION, 0, 0},
        {10000001, COST_HIST_DURATION, 1, 1},
        {81920000000ull, COST_HIST_DURATION, 13, 1},
        {81920000001ull, COST_HIST_DURATION, 13, 0},
        {0, COST_HIST_DURATION, 0, 1},
        {1000000, COST_HIST_TTFT, 0, 1},
        {1000001, COST_HIST_TTFT, 0, 0},
        {16384000000ull, COST_HIST_TTFT, 14, 1},
    };
    for (unsigned c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        memset(&h, 0, sizeof h);
        cost_hist_record(&h, cases[c].ns, cases[c].k);
        cr_assert_eq(cost_hist_prom_cumulative(&h, cases[c].k, cases[c].i), cases[c].want,
                     "case %u", c);
    }
}

Test(cost_ledger, histogram_index_is_monotonic_and_covers_range)
{
    unsigned prev = 0;
    for (uint64_t v = 0; v < (UINT64_C(1) << 44); v = v * 9 / 8 + 1) {
        unsigned i = cost_hist_index(v);
        cr_assert_geq(i, prev);
        cr_assert_lt(i, COST_HIST_BUCKETS);
        uint64_t lo, w;
        cost_hist_bucket_range(i, &lo, &w);
        if (i < COST_HIST_BUCKETS - 1)
            cr_assert(v >= lo && v < lo + w, "v %llu in [%llu,+%llu)", (unsigned long long)v,
                      (unsigned long long)lo, (unsigned long long)w);
        prev = i;
    }
}

Test(cost_ledger, requests_and_tokens_per_minute)
{
    uint64_t m0 = (T0 / COST_MINUTE_NS) * COST_MINUTE_NS;
    feed(ev_end("m1", "bob", NULL, 10, 5, m0));
    feed(ev_end("m1", "bob", NULL, 10, 5, m0 + 1));
    feed(ev_end("m1", "bob", NULL, 10, 5, m0 + COST_MINUTE_NS));
    cr_assert_eq(led.total.prev_req, 2);
    cr_assert_eq(led.total.prev_tok, 30);
    cr_assert_eq(led.total.cur_req, 1);
}

Test(cost_ledger, checkpoint_round_trip_and_corruption)
{
    char dir[] = "/tmp/cost_ledger_XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof path, "%s/checkpoint.bin", dir);
    for (int i = 0; i < 50; i++) {
        struct cbus_event ev = ev_end(i % 2 ? "m1" : "m2", i % 3 ? "bob" : "carol", "s1",
                                      (uint32_t)(30000 * i), 10, T0);
        ev.u.usage.usage_present |= CBUS_USAGE_DURATION;
        ev.u.usage.duration_ns = 1000000u * (uint64_t)i;
        feed(ev);
    }
    cr_assert(user("bob")->b.exceeded);
    struct sbuf b;
    sbuf_init(&b);
    cr_assert_eq(cost_checkpoint_save(&led, 0xabcdef, T0, path, &b, 1), 0);
    struct cost_ledger l2;
    init_ledger(&l2);
    uint64_t bus_id = 0;
    char err[256];
    cr_assert_eq(cost_checkpoint_load(&l2, &bus_id, path, err, sizeof err), 0, "%s", err);
    cr_assert_eq(bus_id, 0xabcdef);
    cr_assert_eq(l2.cursor, led.cursor);
    cr_assert(l2.total.cost_pico == led.total.cost_pico);
    cr_assert_eq(l2.total.requests, 50);
    cr_assert_eq(l2.users.n, 2);
    cr_assert_eq(l2.total_lat.duration.count, 50);
    cr_assert_eq(memcmp(&l2.total_lat, &led.total_lat, sizeof l2.total_lat), 0);
    /* budget state survives: no second "exceeded" alert for bob after restart */
    unsigned before = n_alerts;
    struct cbus_event ev = ev_end("m1", "bob", NULL, 300000, 0, T0);
    ev.event_id = l2.cursor;
    cost_ledger_apply(&l2, &ev);
    for (unsigned i = before; i < n_alerts; i++)
        cr_assert_neq(alerts[i].a.scope, COST_SCOPE_USER, "bob alerted again");
    cost_ledger_free(&l2);

    /* flip one byte: refused */
    FILE *f = fopen(path, "r+b");
    fseek(f, 100, SEEK_SET);
    int c = fgetc(f);
    fseek(f, 100, SEEK_SET);
    fputc(c ^ 0x40, f);
    fclose(f);
    init_ledger(&l2);
    cr_assert_eq(cost_checkpoint_load(&l2, &bus_id, path, err, sizeof err), -EBADMSG);
    cr_assert(strstr(err, "checksum"), "%s", err);
    cost_ledger_free(&l2);
    init_ledger(&l2);
    char missing[160];
    snprintf(missing, sizeof missing, "%s/none.bin", dir);
    cr_assert_eq(cost_checkpoint_load(&l2, &bus_id, missing, err, sizeof err), -ENOENT);
    cost_ledger_free(&l2);
    sbuf_free(&b);
    unlink(path);
    rmdir(dir);
}

Test(cost_ledger, idle_sessions_expire_unless_blocked)
{
    feed(ev_end("m1", "bob", "old", 10, 0, T0));
    feed(ev_end("m1", "bob", "blocked", 600000, 0, T0)); /* 0.6 > 0.5 session limit */
    feed(ev_end("m1", "bob", "new", 10, 0, T0 + 100 * 1000000000ull));
    cr_assert_eq(led.sessions.n, 3);
    cr_assert_eq(cost_ledger_expire_sessions(&led, T0 + 1), 1);
    cr_assert_eq(led.sessions.n, 2);
    feed(ev_end("m1", "bob", "new", 10, 0, T0 + 101 * 1000000000ull));
    cr_assert_eq(led.sessions.n, 2, "index rebuilt: 'new' is found, not re-added");
}

Test(cost_ledger, full_user_table_overflows_into_one_row)
{
    struct cost_ledger l2;
    struct cost_ledger_opts o = {.max_users = 2};
    cr_assert_eq(cost_ledger_init(&l2, tab, NULL, &o), 0);
    for (int i = 0; i < 5; i++) {
        char u[16];
        snprintf(u, sizeof u, "u%d", i);
        struct cbus_event ev = ev_end("m1", u, NULL, 1000, 0, T0);
        cost_ledger_apply(&l2, &ev);
    }
    cr_assert_eq(l2.users.n, 2);
    cr_assert_eq(l2.user_overflow.c.requests, 3);
    cr_assert_eq(l2.an.users_overflow, 3);
    cr_assert_eq(l2.total.requests, 5);
    cost_ledger_free(&l2);
}

Test(cost_ledger, batch_path_matches_one_by_one)
{
    enum { N = 3000 };
    static struct cbus_event evs[N];
    uint64_t r = 88172645463325252ull;
    for (int i = 0; i < N; i++) {
        r ^= r << 13;
        r ^= r >> 7;
        r ^= r << 17;
        char u[16], s[16];
        snprintf(u, sizeof u, "u%u", (unsigned)(r % 97));
        snprintf(s, sizeof s, "s%u", (unsigned)(r % 1009));
        evs[i] = ev_end(r % 3 ? "m1" : "m2", u, r % 5 ? s : NULL, (uint32_t)(r % 50000),
                        (uint32_t)(r % 700), T0 + (uint64_t)i * 1000000000u);
        if (r % 11 == 0)
            evs[i].kind = CBUS_EV_LLM_ERROR;
        if (r % 13 == 0)
            evs[i].kind = CBUS_EV_TOOL_START; /* not accounted, still advances the cursor */
    }
    struct cost_ledger a, b;
    init_ledger(&a);
    init_ledger(&b);
    for (int i = 0; i < N; i++)
        cost_ledger_apply(&a, &evs[i]);
    for (int i = 0; i < N; i += 512)
        cost_ledger_apply_batch(&b, &evs[i], N - i < 512 ? (size_t)(N - i) : 512);
    cr_assert_eq(memcmp(&a.total, &b.total, sizeof a.total), 0);
    cr_assert_eq(a.users.n, b.users.n);
    cr_assert_eq(a.sessions.n, b.sessions.n);
    cr_assert_eq(a.cursor, b.cursor);
    cr_assert_eq(a.events, N);
    cr_assert_eq(memcmp(&a.global_b, &b.global_b, sizeof a.global_b), 0);
    for (size_t i = 0; i < a.users.n; i++) {
        const struct cost_user *ua = cost_ktab_val_at(&a.users, i);
        const struct cost_user *ub = cost_ktab_val_at(&b.users, i);
        cr_assert_eq(memcmp(&ua->c, &ub->c, sizeof ua->c), 0);
        cr_assert_eq(memcmp(&ua->b, &ub->b, sizeof ua->b), 0);
    }
    cost_ledger_free(&a);
    cost_ledger_free(&b);
}

/* ---- issue 12 item 25: bugs the suite used to let through --------------- */

static struct cost_session *session_in(struct cost_ledger *l, const char *name)
{
    char k[COST_SESSION_KEY];
    cost_key_make(k, CBUS_SESSION_LEN, name);
    long i = cost_ktab_find(&l->sessions, k, cost_key_hash(k, sizeof k));
    cr_assert_geq(i, 0, "session %s", name);
    return cost_ktab_val_at(&l->sessions, (size_t)i);
}

static unsigned alerts_of(unsigned from, unsigned scope, unsigned kind, uint32_t pct)
{
    unsigned n = 0;
    for (unsigned i = from; i < n_alerts && i < 64; i++)
        n += alerts[i].a.scope == scope && alerts[i].a.kind == kind && alerts[i].a.pct == pct;
    return n;
}

Test(cost_ledger, session_budget_marks_survive_a_checkpoint)
{
    /* Sessions budgeted 1 USD a day, alerts at 50 and 80 %. */
    struct cost_budget sb;
    memset(&sb, 0, sizeof sb);
    snprintf(sb.key, sizeof sb.key, "*");
    sb.scope = COST_SCOPE_SESSION;
    sb.limit_pico = COST_PICO_PER_USD;
    sb.period_days = 1;
    cr_assert_eq(cost_budget_build(&sb, (const uint32_t[]){50, 80}, 2), 0);
    struct cost_budget_set bs = {.session_default = &sb};
    struct cost_ledger l1, l2;
    cr_assert_eq(cost_ledger_init(&l1, tab, &bs, NULL), 0);
    l1.on_alert = on_alert;
    struct cbus_event ev = ev_end("m1", "u", "chat-9", 600000, 0, T0); /* 0.60 USD */
    cost_ledger_apply(&l1, &ev);
    cr_assert_eq(alerts_of(0, COST_SCOPE_SESSION, COST_ALERT_THRESHOLD, 50), 1);
    const struct cost_budget_state *st1 = &session_in(&l1, "chat-9")->b;
    cr_assert(st1->spent_pico == (cost_u128)COST_PICO_PER_USD * 6 / 10);

    char dir[] = "/tmp/cost_ledger_XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof path, "%s/checkpoint.bin", dir);
    struct sbuf b;
    sbuf_init(&b);
    cr_assert_eq(cost_checkpoint_save(&l1, 1, T0, path, &b, 0), 0);
    sbuf_free(&b);
    cr_assert_eq(cost_ledger_init(&l2, tab, &bs, NULL), 0);
    l2.on_alert = on_alert;
    uint64_t bus_id;
    char err[256];
    cr_assert_eq(cost_checkpoint_load(&l2, &bus_id, path, err, sizeof err), 0, "%s", err);
    unlink(path);
    rmdir(dir);

    /* The restarted ledger holds the session's spend and fired marks... */
    const struct cost_budget_state *st2 = &session_in(&l2, "chat-9")->b;
    cr_assert(st2->spent_pico == st1->spent_pico, "session spend lost in the checkpoint");
    cr_assert_eq(st2->fired, st1->fired, "session alert marks lost in the checkpoint");
    cr_assert_eq(st2->period_end_day, st1->period_end_day);
    /* ...so 50 % does not fire again, and 80 % fires at 0.85 USD. */
    unsigned before = n_alerts;
    ev = ev_end("m1", "u", "chat-9", 250000, 0, T0); /* +0.25 USD */
    ev.event_id = l2.cursor;
    cost_ledger_apply(&l2, &ev);
    cr_assert_eq(alerts_of(before, COST_SCOPE_SESSION, COST_ALERT_THRESHOLD, 50), 0,
                 "50%% alerted twice");
    cr_assert_eq(alerts_of(before, COST_SCOPE_SESSION, COST_ALERT_THRESHOLD, 80), 1,
                 "80%% not alerted at 0.85 of 1 USD");
    cost_ledger_free(&l1);
    cost_ledger_free(&l2);
}

Test(cost_ledger, threshold_above_100_percent_is_an_alert_not_the_limit)
{
    struct cost_budget ub;
    memset(&ub, 0, sizeof ub);
    snprintf(ub.key, sizeof ub.key, "*");
    ub.scope = COST_SCOPE_USER;
    ub.limit_pico = COST_PICO_PER_USD;
    ub.period_days = 1;
    cr_assert_eq(cost_budget_build(&ub, (const uint32_t[]){50, 120}, 2), 0);
    /* marks: 50 % alert, the limit at 100 %, 120 % alert */
    cr_assert_eq(ub.n_marks, 3);
    cr_assert_eq(ub.marks[1].kind, COST_MARK_LIMIT);
    cr_assert(ub.marks[1].pico == (cost_u128)COST_PICO_PER_USD);
    cr_assert_eq(ub.marks[2].kind, COST_MARK_THRESHOLD);
    cr_assert_eq(ub.marks[2].pct, 120);
    struct cost_budget_set bs = {.user_default = &ub};
    struct cost_ledger l;
    cr_assert_eq(cost_ledger_init(&l, tab, &bs, NULL), 0);
    l.on_alert = on_alert;
    struct cbus_event ev = ev_end("m1", "zed", NULL, 1050000, 0, T0); /* 1.05 USD */
    cost_ledger_apply(&l, &ev);
    const struct cost_user *u = NULL;
    {
        char k[COST_USER_KEY];
        cost_key_make(k, CBUS_USER_LEN, "zed");
        long i = cost_ktab_find(&l.users, k, cost_key_hash(k, sizeof k));
        cr_assert_geq(i, 0);
        u = cost_ktab_val_at(&l.users, (size_t)i);
    }
    cr_assert(u->b.exceeded, "over the 1 USD limit but no verdict (120%% taken as the limit?)");
    cr_assert_eq(alerts_of(0, COST_SCOPE_USER, COST_ALERT_EXCEEDED, 100), 1);
    cr_assert_eq(alerts_of(0, COST_SCOPE_USER, COST_ALERT_THRESHOLD, 120), 0);
    ev = ev_end("m1", "zed", NULL, 200000, 0, T0); /* 1.25 USD */
    cost_ledger_apply(&l, &ev);
    cr_assert_eq(alerts_of(0, COST_SCOPE_USER, COST_ALERT_THRESHOLD, 120), 1);
    cr_assert_eq(alerts_of(0, COST_SCOPE_USER, COST_ALERT_EXCEEDED, 100), 1, "one verdict");
    cost_ledger_free(&l);
}

/* ---- events v2: keys that never merge, agents and tenants (issue 14) ---- */

#include <zlib.h>

/* Sets a key field as the producer library does: the value cut to the
 * field (NUL kept), the whole value's hash in key_hash[]. */
static void set_whole(struct cbus_event *ev, char *field, size_t cap, unsigned key,
                      const char *value)
{
    size_t n = strlen(value);
    memset(field, 0, cap);
    memcpy(field, value, n < cap - 1 ? n : cap - 1);
    ev->key_hash[key] = cbus_key_hash(value, n);
}

static void long_name(char *out, size_t size, char last)
{
    memset(out, 'x', size - 1);
    memcpy(out, "user:default/team-platform/", 27);
    out[size - 2] = last;
    out[size - 1] = '\0';
}

static struct cost_user *row(struct cost_ledger *l, struct cost_ktab *t, size_t field_len,
                             const char *name)
{
    char k[COST_KEY_MAX];
    cost_key_make(k, field_len, name);
    long i = cost_ktab_find(t, k, cost_key_hash(k, t->key_size));
    (void)l;
    cr_assert_geq(i, 0, "row %s", name);
    return cost_ktab_val_at(t, (size_t)i);
}

Test(cost_ledger, two_long_users_sharing_the_shown_prefix_are_two_rows)
{
    char a[201], b[201];
    long_name(a, sizeof a, 'a');
    long_name(b, sizeof b, 'b');
    /* a budget for a's whole id (longer than the field); b has the default */
    struct cost_budget ab = user_b;
    snprintf(ab.key, sizeof ab.key, "%s", a);
    ab.limit_pico = COST_PICO_PER_USD / 1000; /* 0.001 USD */
    cost_budget_build(&ab, (const uint32_t[]){100}, 1);
    struct cost_budget_set bs = {.user_default = &user_b, .list = &ab, .n = 1};
    struct cost_ledger l;
    cr_assert_eq(cost_ledger_init(&l, tab, &bs, NULL), 0);
    l.on_alert = on_alert;
    struct cbus_event ea = ev_end("m1", "", NULL, 1000, 0, T0); /* 0.001 USD */
    set_whole(&ea, ea.user, sizeof ea.user, CBUS_KEY_USER, a);
    struct cbus_event eb = ev_end("m1", "", NULL, 2000, 0, T0); /* 0.002 USD */
    eb.event_id = ea.event_id + 1;
    set_whole(&eb, eb.user, sizeof eb.user, CBUS_KEY_USER, b);
    cr_assert_eq(memcmp(ea.user, eb.user, sizeof ea.user), 0, "same shown prefix");
    cost_ledger_apply(&l, &ea);
    cost_ledger_apply(&l, &eb);
    cr_assert_eq(l.users.n, 2);
    cr_assert(row(&l, &l.users, CBUS_USER_LEN, a)->c.cost_pico == COST_PICO_PER_USD / 1000);
    cr_assert(row(&l, &l.users, CBUS_USER_LEN, b)->c.cost_pico == 2 * COST_PICO_PER_USD / 1000);
    /* only a's budget was reached: one alert, shown with a's hash, and
     * its admission key is the shown field */
    cr_assert_eq(n_alerts, 1);
    cr_assert_eq(alerts[0].a.kind, COST_ALERT_EXCEEDED);
    char want[80];
    snprintf(want, sizeof want, "%.39s\u2026#%08x", a, (unsigned)(cbus_key_hash(a, 200) >> 32));
    cr_assert_str_eq(alerts[0].key, want);
    cr_assert(row(&l, &l.users, CBUS_USER_LEN, a)->b.exceeded);
    cr_assert(!row(&l, &l.users, CBUS_USER_LEN, b)->b.exceeded);
    cost_ledger_free(&l);
}

static struct cbus_event ev_group(const char *agent, const char *tenant, uint32_t in, uint64_t ts)
{
    struct cbus_event ev = ev_end("m1", "bob", NULL, in, 0, ts);
    if (agent)
        set_whole(&ev, ev.agent, sizeof ev.agent, CBUS_KEY_AGENT, agent);
    if (tenant)
        set_whole(&ev, ev.tenant, sizeof ev.tenant, CBUS_KEY_TENANT, tenant);
    return ev;
}

Test(cost_ledger, totals_and_budgets_per_agent_and_tenant)
{
    /* every tenant: 0.005 USD a day; the agent "planner": 0.002 USD */
    struct cost_budget tb = user_b, pb = user_b;
    tb.scope = COST_SCOPE_TENANT;
    tb.limit_pico = 5 * COST_PICO_PER_USD / 1000;
    cost_budget_build(&tb, NULL, 0);
    pb.scope = COST_SCOPE_AGENT;
    snprintf(pb.key, sizeof pb.key, "planner");
    pb.limit_pico = 2 * COST_PICO_PER_USD / 1000;
    cost_budget_build(&pb, (const uint32_t[]){100}, 1);
    struct cost_budget_set bs = {.tenant_default = &tb, .list = &pb, .n = 1};
    struct cost_ledger l;
    cr_assert_eq(cost_ledger_init(&l, tab, &bs, NULL), 0);
    l.on_alert = on_alert;
    const struct cbus_event evs[] = {
        ev_group("planner", "team-a", 1000, T0), /* 0.001 each */
        ev_group("planner", "team-a", 1000, T0), /* planner reaches 0.002 */
        ev_group("coder", "team-a", 3000, T0),   /* team-a reaches 0.005 */
        ev_group("coder", "team-b", 1000, T0),
        ev_group(NULL, NULL, 7000, T0),          /* no agent, no tenant: no row */
    };
    for (unsigned i = 0; i < 5; i++) {
        struct cbus_event e = evs[i];
        e.event_id = i;
        cost_ledger_apply(&l, &e);
    }
    cr_assert_eq(l.agents.n, 2);
    cr_assert_eq(l.tenants.n, 2);
    cr_assert(row(&l, &l.agents, CBUS_AGENT_LEN, "planner")->c.cost_pico ==
              2 * COST_PICO_PER_USD / 1000);
    cr_assert(row(&l, &l.agents, CBUS_AGENT_LEN, "coder")->c.cost_pico ==
              4 * COST_PICO_PER_USD / 1000);
    cr_assert_eq(row(&l, &l.tenants, CBUS_TENANT_LEN, "team-a")->c.requests, 3);
    cr_assert(row(&l, &l.tenants, CBUS_TENANT_LEN, "team-b")->c.cost_pico ==
              COST_PICO_PER_USD / 1000);
    cr_assert_null(row(&l, &l.agents, CBUS_AGENT_LEN, "coder")->budget);
    unsigned agent_x = 0, tenant_x = 0;
    for (unsigned i = 0; i < n_alerts; i++) {
        if (alerts[i].a.kind != COST_ALERT_EXCEEDED)
            continue;
        if (alerts[i].a.scope == COST_SCOPE_AGENT) {
            cr_assert_str_eq(alerts[i].key, "planner");
            agent_x++;
        }
        if (alerts[i].a.scope == COST_SCOPE_TENANT) {
            cr_assert_str_eq(alerts[i].key, "team-a");
            tenant_x++;
        }
    }
    cr_assert_eq(agent_x, 1);
    cr_assert_eq(tenant_x, 1);

    /* checkpointed: rows, spend and verdict state survive a restart */
    char dir[] = "/tmp/cost_ledger_XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof path, "%s/checkpoint.bin", dir);
    struct sbuf sb;
    sbuf_init(&sb);
    cr_assert_eq(cost_checkpoint_save(&l, 7, T0, path, &sb, 0), 0);
    struct cost_ledger l2;
    cr_assert_eq(cost_ledger_init(&l2, tab, &bs, NULL), 0);
    uint64_t bus_id;
    char err[256];
    cr_assert_eq(cost_checkpoint_load(&l2, &bus_id, path, err, sizeof err), 0, "%s", err);
    cr_assert_eq(l2.agents.n, 2);
    cr_assert_eq(l2.tenants.n, 2);
    cr_assert(row(&l2, &l2.agents, CBUS_AGENT_LEN, "coder")->c.cost_pico ==
              4 * COST_PICO_PER_USD / 1000);
    cr_assert(row(&l2, &l2.tenants, CBUS_TENANT_LEN, "team-a")->b.exceeded);
    cr_assert_eq(row(&l2, &l2.tenants, CBUS_TENANT_LEN, "team-a")->budget, &tb);
    cr_assert(row(&l2, &l2.agents, CBUS_AGENT_LEN, "planner")->b.exceeded);
    unsigned verdicts = 0;
    cost_ledger_free(&l2);
    (void)verdicts;
    sbuf_free(&sb);
    unlink(path);
    rmdir(dir);
    cost_ledger_free(&l);
}

/* A version 3 checkpoint as the layout 1.x builds wrote it: model keys of
 * 16 + 64 bytes, user keys of 48, and no agents or tenants. */
Test(cost_ledger, version_3_checkpoint_of_layout_1_keys_still_loads)
{
    struct sbuf b;
    sbuf_init(&b);
    uint32_t ver = 3, stamp;
    {
        /* the stamp of this build's raw structs (unchanged since version 3) */
        char dir0[] = "/tmp/cost_ledger_XXXXXX";
        cr_assert_not_null(mkdtemp(dir0));
        char p0[128];
        snprintf(p0, sizeof p0, "%s/c.bin", dir0);
        cr_assert_eq(cost_checkpoint_save(&led, 1, T0, p0, &b, 0), 0);
        memcpy(&stamp, b.data + 12, 4);
        unlink(p0);
        rmdir(dir0);
        sbuf_reset(&b);
    }
    struct cost_counters tot = {0}, uc = {0};
    tot.requests = uc.requests = 3;
    tot.cost_pico = uc.cost_pico = 42;
    struct cost_budget_state gb = {0};
    struct cost_anomalies an = {0};
    struct cost_counters zero = {0};
    uint64_t u64;
    uint32_t lanes = 1;
#define PUT(p, n) sbuf_add(&b, (p), (n))
#define PUT64(v) (u64 = (v), PUT(&u64, 8))
    PUT("CBUSCOST", 8);
    PUT(&ver, 4);
    PUT(&stamp, 4);
    PUT64(0x77);                  /* bus id */
    PUT64(3);                     /* cursor */
    PUT(&lanes, 4);
    PUT64(3);
    PUT64(T0);                    /* saved at */
    PUT64(3);                     /* events */
    PUT64(0);
    PUT64(0);                     /* lost, abandoned */
    PUT64(1);
    PUT64(1);
    PUT64(0);                     /* models, users, sessions */
    PUT(&tot, sizeof tot);
    const uint32_t nz = 0;
    for (unsigned h = 0; h < 4; h++) { /* total's and the model overflow's histograms */
        if (h == 2) {
            PUT(&gb, sizeof gb);
            PUT(&an, sizeof an);
            PUT(&zero, sizeof zero);
        }
        cost_u128 sum = 0;
        PUT64(0);
        PUT64(0);
        PUT64(0);
        PUT(&sum, sizeof sum);
        PUT(&nz, 4);
    }
    PUT(&zero, sizeof zero);      /* user overflow */
    char mkey[80] = {0}, ukey[48];
    memcpy(mkey, "acme", 4);
    memcpy(mkey + 16, "m1", 2);
    PUT(mkey, 80);
    PUT(&uc, sizeof uc);
    for (unsigned h = 0; h < 2; h++) {
        cost_u128 sum = 0;
        PUT64(0);
        PUT64(0);
        PUT64(0);
        PUT(&sum, sizeof sum);
        PUT(&nz, 4);
    }
    /* a 47-byte user id: longer than today's 40-byte field */
    memset(ukey, 'q', 47);
    ukey[47] = '\0';
    PUT(ukey, 48);
    PUT(&uc, sizeof uc);
    PUT(&gb, sizeof gb);
    uint32_t crc = (uint32_t)crc32(0L, (const Bytef *)b.data, (uInt)b.len);
    PUT(&crc, 4);
#undef PUT
#undef PUT64
    char dir[] = "/tmp/cost_ledger_XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof path, "%s/checkpoint.bin", dir);
    FILE *f = fopen(path, "wb");
    cr_assert_eq(fwrite(b.data, 1, b.len, f), b.len);
    fclose(f);
    struct cost_ledger l;
    init_ledger(&l);
    uint64_t bus_id;
    char err[256];
    cr_assert_eq(cost_checkpoint_load(&l, &bus_id, path, err, sizeof err), 0, "%s", err);
    cr_assert_eq(bus_id, 0x77);
    cr_assert_eq(l.total.requests, 3);
    cr_assert_eq(l.agents.n, 0);
    struct cost_model *m = NULL;
    {
        struct cost_ledger *keep = &l;
        char k[COST_MODEL_KEY], pk[CBUS_PROVIDER_LEN + 8], mk[CBUS_MODEL_LEN + 8];
        cost_key_make(pk, CBUS_PROVIDER_LEN, "acme");
        cost_key_make(mk, CBUS_MODEL_LEN, "m1");
        memcpy(k, pk, CBUS_PROVIDER_LEN);
        memcpy(k + CBUS_PROVIDER_LEN, mk, CBUS_MODEL_LEN);
        memcpy(k + COST_MODEL_PH, pk + CBUS_PROVIDER_LEN, 8);
        memcpy(k + COST_MODEL_MH, mk + CBUS_MODEL_LEN, 8);
        long i = cost_ktab_find(&keep->models, k, cost_key_hash(k, sizeof k));
        cr_assert_geq(i, 0, "the old model row keeps its identity");
        m = cost_ktab_val_at(&keep->models, (size_t)i);
    }
    cr_assert_eq(m->c.requests, 3);
    /* the old user is the 47-byte value it was counted as */
    cr_assert(row(&l, &l.users, CBUS_USER_LEN, ukey)->c.cost_pico == 42);
    cost_ledger_free(&l);
    sbuf_free(&b);
    unlink(path);
    rmdir(dir);
}
