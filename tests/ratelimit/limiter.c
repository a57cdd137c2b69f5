/* The limiter driven with an injected clock: every event carries the
 * timestamp the test chooses, and housekeeping gets `now` explicitly. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <string.h>

#include "limiter.h"
#include "ratelimit_config.h"
#include "sbuf.h"

#define SEC UINT64_C(1000000000)
#define MS UINT64_C(1000000)
#define T0 (1000 * SEC) /* an arbitrary monotonic origin */

static rl_limiter *make(const char *rules_text, int count_only)
{
    char text[4096], err[512];
    snprintf(text, sizeof text, "[ratelimit]\ncount_only = %s\n[rules]\n%s",
             count_only ? "true" : "false", rules_text);
    struct rl_config c;
    cr_assert_eq(rl_config_parse(&c, "test.ini", text, err, sizeof err), 0, "%s", err);
    rl_limiter *l;
    cr_assert_eq(rl_new(&l, &c.rules, &c.opts), 0);
    rl_config_free(&c);
    return l;
}

static struct cbus_event ev(unsigned kind, uint64_t ts, const char *user, const char *model)
{
    struct cbus_event e;
    memset(&e, 0, sizeof e);
    e.kind = (uint16_t)kind;
    e.ts_mono_ns = ts;
    /* bounded fields need no NUL when full: copy at most their size */
    if (user)
        memcpy(e.user, user, strnlen(user, sizeof e.user));
    if (model)
        memcpy(e.model, model, strnlen(model, sizeof e.model));
    memcpy(e.provider, "openai", 6);
    return e;
}

static void start(rl_limiter *l, uint64_t ts, const char *user, const char *model)
{
    struct cbus_event e = ev(CBUS_EV_LLM_START, ts, user, model);
    rl_feed(l, &e);
}

static void end_usage(rl_limiter *l, uint64_t ts, const char *user, uint8_t run, uint32_t in,
                      uint32_t out, uint8_t present)
{
    struct cbus_event e = ev(CBUS_EV_LLM_END, ts, user, "gpt-4o");
    e.run_id[0] = run;
    e.u.usage.input_tokens = in;
    e.u.usage.output_tokens = out;
    e.u.usage.usage_present = present;
    rl_feed(l, &e);
}

/* A publish sink that records the last call per test. */
struct sink {
    unsigned calls, scope, verdict;
    char key[64];
    uint64_t until, key_hash;
};
static int record(void *ctx, unsigned scope, uint64_t key_hash, const char *key,
                  unsigned verdict, uint64_t until)
{
    struct sink *s = ctx;
    s->key_hash = key_hash;
    s->calls++;
    s->scope = scope;
    s->verdict = verdict;
    s->until = until;
    snprintf(s->key, sizeof s->key, "%s", key);
    return 0;
}

Test(ratelimit_limiter, request_61_under_rpm_60_is_throttled_with_retry_after)
{
    rl_limiter *l = make("rule = user=* rpm=60\n", 0);
    struct cbus_event probe = ev(CBUS_EV_LLM_START, 0, "alice", "gpt-4o");
    uint64_t retry = 0;
    /* 60 requests 100 ms apart: all within the minute's allowance. */
    for (unsigned i = 0; i < 60; i++) {
        cr_assert_eq(rl_check(l, &probe, T0 + i * 100 * MS, &retry), CBUS_ALLOW, "request %u", i + 1);
        start(l, T0 + i * 100 * MS, "alice", "gpt-4o");
    }
    /* The 61st, at 6.0 s: one request refills every second since T0, and
     * six have (at 1..6 s)... but they were spent as they came, so the
     * bucket holds 60 - 6 = 54 after 6 s: 60 sent, 6 refilled, room for 6. */
    uint64_t now = T0 + 6000 * MS;
    cr_assert_eq(rl_check(l, &probe, now, &retry), CBUS_ALLOW);

    rl_free(l);
    l = make("rule = user=* rpm=60\n", 0);
    /* 60 requests at once: the 61st, 500 ms later, waits for the first
     * refill at T0 + 1 s. */
    for (unsigned i = 0; i < 60; i++)
        start(l, T0, "alice", "gpt-4o");
    cr_assert_eq(rl_check(l, &probe, T0 + 500 * MS, &retry), CBUS_THROTTLED);
    cr_assert_eq(retry, 500 * MS, "retry-after %llu ns", (unsigned long long)retry);
    cr_assert_eq(rl_published_until(l, CBUS_SCOPE_USER, "alice"), T0 + SEC);
    /* bob is another key */
    struct cbus_event bob = ev(CBUS_EV_LLM_START, 0, "bob", "gpt-4o");
    cr_assert_eq(rl_check(l, &bob, T0 + 500 * MS, &retry), CBUS_ALLOW);
    /* The 61st arrives anyway (a producer ignored the verdict): counted as
     * over the limit, and it pushes alice's next slot to T0 + 2 s. */
    start(l, T0 + 500 * MS, "alice", "gpt-4o");
    struct rl_stats st;
    rl_get_stats(l, &st);
    cr_assert_eq(st.over_limit, 1);
    cr_assert_eq(st.throttles, 1);
    cr_assert_eq(rl_published_until(l, CBUS_SCOPE_USER, "alice"), T0 + 2 * SEC);
    cr_assert_eq(rl_check(l, &probe, T0 + 2 * SEC, &retry), CBUS_ALLOW);

    struct sink s = {0};
    cr_assert_eq(rl_drain(l, T0 + 600 * MS, record, &s), 1);
    cr_assert_eq(s.verdict, CBUS_THROTTLED);
    cr_assert_eq(s.scope, CBUS_SCOPE_USER);
    cr_assert_str_eq(s.key, "alice");
    cr_assert_eq(s.until, T0 + 2 * SEC);
    /* nothing changed: nothing written */
    cr_assert_eq(rl_drain(l, T0 + 700 * MS, record, &s), 0);
    /* once lapsed, the verdict is cleared from the table */
    cr_assert_eq(rl_drain(l, T0 + 2 * SEC, record, &s), 1);
    cr_assert_eq(s.verdict, CBUS_ALLOW);
    cr_assert_eq(rl_published_until(l, CBUS_SCOPE_USER, "alice"), 0);
    rl_free(l);
}

Test(ratelimit_limiter, window_slides_continuously)
{
    rl_limiter *l = make("rule = user=* rpm=60\n", 0);
    struct cbus_event probe = ev(CBUS_EV_LLM_START, 0, "alice", NULL);
    uint64_t retry;
    for (unsigned i = 0; i < 60; i++)
        start(l, T0, "alice", NULL);
    /* 30 s later half the minute's allowance is back: 30 more fit, not 31. */
    uint64_t t = T0 + 30 * SEC;
    for (unsigned i = 0; i < 30; i++) {
        cr_assert_eq(rl_check(l, &probe, t, &retry), CBUS_ALLOW, "request %u", i);
        start(l, t, "alice", NULL);
    }
    cr_assert_eq(rl_check(l, &probe, t, &retry), CBUS_THROTTLED);
    cr_assert_eq(retry, SEC);
    /* a full minute of quiet refills everything */
    t += 60 * SEC;
    for (unsigned i = 0; i < 60; i++) {
        cr_assert_eq(rl_check(l, &probe, t, &retry), CBUS_ALLOW);
        start(l, t, "alice", NULL);
    }
    cr_assert_eq(rl_check(l, &probe, t, &retry), CBUS_THROTTLED);
    rl_free(l);
}

Test(ratelimit_limiter, burst_caps_back_to_back_requests)
{
    rl_limiter *l = make("rule = model=* rpm=600 burst=5\n", 0);
    struct cbus_event probe = ev(CBUS_EV_LLM_START, 0, NULL, "m");
    uint64_t retry;
    for (unsigned i = 0; i < 5; i++)
        start(l, T0, NULL, "m");
    cr_assert_eq(rl_check(l, &probe, T0, &retry), CBUS_THROTTLED);
    cr_assert_eq(retry, 100 * MS); /* 600/min: one every 100 ms */
    cr_assert_eq(rl_published_until(l, CBUS_SCOPE_MODEL, "m"), T0 + 100 * MS);
    rl_free(l);
}

Test(ratelimit_limiter, tokens_per_minute_from_llm_end_usage)
{
    rl_limiter *l = make("rule = user=* tpm=1000\n", 0);
    struct cbus_event probe = ev(CBUS_EV_LLM_START, 0, "alice", NULL);
    uint64_t retry;
    /* 600 in + 300 out = 900 of 1000: still room */
    end_usage(l, T0, "alice", 1, 600, 300, CBUS_USAGE_INPUT | CBUS_USAGE_OUTPUT);
    cr_assert_eq(rl_check(l, &probe, T0, &retry), CBUS_ALLOW);
    /* 200 more: 1100, 101 over a 1000 burst; room for one token again once
     * 101 tokens have refilled at 1000/min = 60 ms each: 6.06 s. */
    end_usage(l, T0, "alice", 2, 150, 50, CBUS_USAGE_INPUT | CBUS_USAGE_OUTPUT);
    cr_assert_eq(rl_check(l, &probe, T0, &retry), CBUS_THROTTLED);
    cr_assert_eq(retry, 6060 * MS, "retry %llu", (unsigned long long)retry);
    cr_assert_eq(rl_published_until(l, CBUS_SCOPE_USER, "alice"), T0 + 6060 * MS);
    /* absent counts are not zero and not counted */
    rl_free(l);
    l = make("rule = user=* tpm=1000 tokens=input\n", 0);
    end_usage(l, T0, "alice", 1, 5000, 5000, 0);
    cr_assert_eq(rl_check(l, &probe, T0, &retry), CBUS_ALLOW);
    end_usage(l, T0, "alice", 2, 5000, 0, CBUS_USAGE_OUTPUT);
    cr_assert_eq(rl_check(l, &probe, T0, &retry), CBUS_ALLOW);
    /* tokens=input counts input only */
    end_usage(l, T0, "alice", 3, 1001, 0, CBUS_USAGE_INPUT);
    cr_assert_eq(rl_check(l, &probe, T0, &retry), CBUS_THROTTLED);
    cr_assert_eq(retry, 120 * MS);
    struct rl_stats st;
    rl_get_stats(l, &st);
    cr_assert_eq(st.input_tokens, 1001);
    cr_assert_eq(st.output_tokens, 0);
    rl_free(l);
}

Test(ratelimit_limiter, start_estimate_is_charged_then_corrected_at_end)
{
    rl_limiter *l = make("rule = user=* tpm=1000\n", 0);
    struct cbus_event probe = ev(CBUS_EV_LLM_START, 0, "alice", NULL);
    uint64_t retry;
    struct cbus_event s = ev(CBUS_EV_LLM_START, T0, "alice", NULL);
    s.run_id[0] = 7;
    s.u.llm_start.est_input_tokens = 1200;
    rl_feed(l, &s);
    /* the estimate alone throttles: 1200 > 1000 */
    cr_assert_eq(rl_check(l, &probe, T0, &retry), CBUS_THROTTLED);
    cr_assert_eq(retry, 201 * 60 * MS);
    /* the real count was 400 + 100: the estimate's excess comes back */
    end_usage(l, T0 + SEC, "alice", 7, 400, 100, CBUS_USAGE_INPUT | CBUS_USAGE_OUTPUT);
    cr_assert_eq(rl_check(l, &probe, T0 + SEC, &retry), CBUS_ALLOW);
    struct rl_stats st;
    rl_get_stats(l, &st);
    cr_assert_eq(st.pending, 0);
    cr_assert_eq(st.estimated_tokens, 1200);
    /* an estimate that was too low: the end charges the difference */
    s.run_id[0] = 8;
    s.ts_mono_ns = T0 + 2 * SEC;
    s.u.llm_start.est_input_tokens = 10;
    rl_feed(l, &s);
    end_usage(l, T0 + 2 * SEC, "alice", 8, 900, 0, CBUS_USAGE_INPUT | CBUS_USAGE_OUTPUT);
    cr_assert_eq(rl_check(l, &probe, T0 + 2 * SEC, &retry), CBUS_THROTTLED);
    /* an error returns the estimate */
    rl_free(l);
    l = make("rule = user=* tpm=1000\n", 0);
    s.run_id[0] = 9;
    s.ts_mono_ns = T0;
    s.u.llm_start.est_input_tokens = 1500;
    rl_feed(l, &s);
    cr_assert_eq(rl_check(l, &probe, T0, &retry), CBUS_THROTTLED);
    struct cbus_event e = ev(CBUS_EV_LLM_ERROR, T0 + MS, "alice", NULL);
    e.run_id[0] = 9;
    rl_feed(l, &e);
    cr_assert_eq(rl_check(l, &probe, T0 + MS, &retry), CBUS_ALLOW);
    rl_free(l);
}

Test(ratelimit_limiter, specific_rule_replaces_the_wildcard_for_its_key)
{
    rl_limiter *l = make("rule = user=* rpm=2\n"
                         "rule = user=vip-* rpm=100\n"
                         "rule = global rpm=1000\n", 0);
    uint64_t retry;
    for (unsigned i = 0; i < 3; i++) {
        start(l, T0, "alice", NULL);
        start(l, T0, "vip-bob", NULL);
    }
    struct cbus_event a = ev(CBUS_EV_LLM_START, 0, "alice", NULL);
    struct cbus_event b = ev(CBUS_EV_LLM_START, 0, "vip-bob", NULL);
    cr_assert_eq(rl_check(l, &a, T0, &retry), CBUS_THROTTLED);
    cr_assert_eq(rl_check(l, &b, T0, &retry), CBUS_ALLOW);
    cr_assert_eq(rl_published_until(l, CBUS_SCOPE_GLOBAL, "*"), 0);
    rl_free(l);
}

Test(ratelimit_limiter, combination_rule_counts_but_publishes_only_when_told)
{
    rl_limiter *l = make("rule = user=* model=gpt-4o rpm=2\n", 0);
    uint64_t retry;
    for (unsigned i = 0; i < 2; i++)
        start(l, T0, "alice", "gpt-4o");
    struct cbus_event a4o = ev(CBUS_EV_LLM_START, 0, "alice", "gpt-4o");
    struct cbus_event amini = ev(CBUS_EV_LLM_START, 0, "alice", "gpt-4o-mini");
    cr_assert_eq(rl_check(l, &a4o, T0, &retry), CBUS_THROTTLED);
    cr_assert_eq(rl_check(l, &amini, T0, &retry), CBUS_ALLOW);
    /* neither alice (she may use other models) nor gpt-4o (others may use
     * it) may be throttled in the table on this rule's account */
    cr_assert_eq(rl_published_until(l, CBUS_SCOPE_USER, "alice"), 0);
    cr_assert_eq(rl_published_until(l, CBUS_SCOPE_MODEL, "gpt-4o"), 0);
    struct rl_stats st;
    rl_get_stats(l, &st);
    cr_assert_eq(st.throttles, 1);
    rl_free(l);

    l = make("rule = user=* model=gpt-4o rpm=2 enforce=user\n", 0);
    for (unsigned i = 0; i < 2; i++)
        start(l, T0, "alice", "gpt-4o");
    cr_assert_eq(rl_published_until(l, CBUS_SCOPE_USER, "alice"), T0 + 30 * SEC);
    rl_free(l);
}

Test(ratelimit_limiter, count_only_publishes_nothing)
{
    rl_limiter *l = make("rule = user=* rpm=1\n", 1);
    start(l, T0, "alice", NULL);
    start(l, T0, "alice", NULL);
    struct rl_stats st;
    rl_get_stats(l, &st);
    cr_assert_eq(st.over_limit, 1);
    cr_assert_eq(rl_published_until(l, CBUS_SCOPE_USER, "alice"), 0);
    rl_free(l);
}

Test(ratelimit_limiter, idle_keys_expire_and_memory_follows_active_keys)
{
    rl_limiter *l = make("rule = user=* rpm=60\n", 0);
    char user[32];
    for (unsigned i = 0; i < 10000; i++) {
        snprintf(user, sizeof user, "u%u", i);
        start(l, T0, user, NULL);
    }
    struct rl_stats st;
    rl_get_stats(l, &st);
    cr_assert_eq(st.keys, 10000);
    /* one request costs 1 s of a 60-per-minute bucket: still held at 0.5 s */
    rl_expire(l, T0 + 500 * MS);
    rl_get_stats(l, &st);
    cr_assert_eq(st.keys, 10000);
    start(l, T0 + SEC, "u1", NULL);
    start(l, T0 + SEC, "u1", NULL);
    rl_expire(l, T0 + SEC);
    rl_get_stats(l, &st);
    cr_assert_eq(st.keys, 1, "keys %llu", (unsigned long long)st.keys);
    cr_assert_eq(st.keys_expired, 9999);
    cr_assert_eq(st.keys_peak, 10000);
    /* expiry is lossless: an expired key behaves as a fresh one */
    struct cbus_event probe = ev(CBUS_EV_LLM_START, 0, "u5", NULL);
    uint64_t retry;
    cr_assert_eq(rl_check(l, &probe, T0 + SEC, &retry), CBUS_ALLOW);
    rl_expire(l, T0 + 10 * SEC);
    rl_get_stats(l, &st);
    cr_assert_eq(st.keys, 0);
    rl_free(l);
}

Test(ratelimit_limiter, max_keys_bounds_memory_and_counts_untracked)
{
    char text[256], err[256];
    snprintf(text, sizeof text, "[ratelimit]\nmax_keys = 16\n[rules]\nrule = user=* rpm=60\n");
    struct rl_config c;
    cr_assert_eq(rl_config_parse(&c, "t.ini", text, err, sizeof err), 0, "%s", err);
    rl_limiter *l;
    cr_assert_eq(rl_new(&l, &c.rules, &c.opts), 0);
    rl_config_free(&c);
    char user[32];
    for (unsigned i = 0; i < 20; i++) {
        snprintf(user, sizeof user, "u%u", i);
        start(l, T0, user, NULL);
    }
    struct rl_stats st;
    rl_get_stats(l, &st);
    cr_assert_eq(st.keys, 16);
    cr_assert_eq(st.untracked, 4);
    rl_free(l);
}

Test(ratelimit_limiter, status_lists_hottest_keys_first)
{
    rl_limiter *l = make("rule = user=* rpm=10 tpm=100000\n", 0);
    for (unsigned i = 0; i < 9; i++)
        start(l, T0, "hot", NULL);
    start(l, T0, "cold", NULL);
    for (unsigned i = 0; i < 11; i++)
        start(l, T0, "hottest", NULL);
    struct sbuf b;
    sbuf_init(&b);
    rl_status_json(l, &b, T0, 2);
    cr_assert(!b.failed);
    const char *a = strstr(b.data, "\"key\":\"user=hottest\"");
    const char *h = strstr(b.data, "\"key\":\"user=hot\"");
    cr_assert(a && h && a < h, "%s", b.data);
    cr_assert_null(strstr(b.data, "user=cold"), "%s", b.data);
    cr_assert(strstr(b.data, "\"state\":\"throttled\""), "%s", b.data);
    cr_assert(strstr(b.data, "\"requests_used\":11,\"rpm\":10"), "%s", b.data);
    cr_assert(strstr(b.data, "\"over_limit\":1"), "%s", b.data);
    sbuf_free(&b);
    rl_free(l);
}

Test(ratelimit_limiter, batch_feed_decides_exactly_as_single_feed)
{
    const char *rules = "rule = user=* rpm=30 burst=5 tpm=5000\n"
                        "rule = user=u1* rpm=100\n"
                        "rule = model=* tpm=20000 tokens=output\n"
                        "rule = user=* model=m1 rpm=10 enforce=user\n"
                        "rule = global rpm=600\n";
    rl_limiter *a = make(rules, 0), *b = make(rules, 0);
    enum { N = 20000 };
    struct cbus_event *evs = calloc(N, sizeof *evs);
    uint64_t x = 12345, t = T0;
    for (unsigned i = 0; i < N; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        unsigned u = (unsigned)(x % 64), kinds[] = {CBUS_EV_LLM_START, CBUS_EV_LLM_END,
                                                    CBUS_EV_LLM_ERROR, CBUS_EV_TOOL_START};
        char user[16], model[8];
        snprintf(user, sizeof user, "u%u", u);
        snprintf(model, sizeof model, "m%u", u % 3);
        t += (x >> 20) % (20 * MS);
        evs[i] = ev(kinds[(x >> 8) % 4], t, user, model);
        evs[i].run_id[0] = (uint8_t)u;
        evs[i].u.llm_start.est_input_tokens = (x >> 30) % 2 ? (uint32_t)((x >> 40) % 3000) : 0;
        if (evs[i].kind == CBUS_EV_LLM_END) {
            memset(&evs[i].u, 0, sizeof evs[i].u);
            evs[i].u.usage.input_tokens = (uint32_t)((x >> 24) % 4000);
            evs[i].u.usage.output_tokens = (uint32_t)((x >> 36) % 1000);
            evs[i].u.usage.usage_present = (uint8_t)((x >> 50) % 4);
        }
    }
    struct sink sa = {0}, sb = {0};
    for (unsigned i = 0; i < N;) {
        unsigned m = 1 + (unsigned)((i * 2654435761u) % 97); /* uneven chunks */
        if (m > N - i)
            m = N - i;
        for (unsigned j = 0; j < m; j++)
            rl_feed(a, &evs[i + j]);
        rl_feed_batch(b, &evs[i], m);
        i += m;
        uint64_t now = evs[i - 1].ts_mono_ns;
        rl_drain(a, now, record, &sa);
        rl_drain(b, now, record, &sb);
        if (i % 1000 < m)
            rl_expire(a, now), rl_expire(b, now);
        cr_assert_eq(sa.calls, sb.calls, "after %u events", i);
        cr_assert_eq(sa.until, sb.until, "after %u events", i);
    }
    struct rl_stats st_a, st_b;
    rl_get_stats(a, &st_a);
    rl_get_stats(b, &st_b);
    cr_assert_eq(memcmp(&st_a, &st_b, sizeof st_a), 0);
    cr_assert_gt(st_a.throttles, 10);
    cr_assert_gt(st_a.published, 10);
    struct sbuf ja, jb;
    sbuf_init(&ja);
    sbuf_init(&jb);
    rl_status_json(a, &ja, t, 50);
    rl_status_json(b, &jb, t, 50);
    cr_assert_str_eq(ja.data, jb.data);
    sbuf_free(&ja);
    sbuf_free(&jb);
    free(evs);
    rl_free(a);
    rl_free(b);
}

/* ---- keys that never merge; agent and tenant (issue 14) ------------------ */

/* An llm_start as the producer library writes it for a context whose user
 * (and agent, tenant) may be longer than their fields: the shown prefix cut
 * to the field, the whole value's hash in key_hash[]. */
static struct cbus_event ev_whole(uint64_t ts, const char *user, const char *agent,
                                  const char *tenant)
{
    struct cbus_event e = ev(CBUS_EV_LLM_START, ts, NULL, "gpt-4o");
    struct {
        const char *v;
        char *field;
        size_t cap;
        unsigned key;
    } f[] = {{user, e.user, sizeof e.user, CBUS_KEY_USER},
             {agent, e.agent, sizeof e.agent, CBUS_KEY_AGENT},
             {tenant, e.tenant, sizeof e.tenant, CBUS_KEY_TENANT}};
    for (unsigned i = 0; i < 3; i++) {
        if (!f[i].v)
            continue;
        size_t n = strlen(f[i].v);
        memcpy(f[i].field, f[i].v, n < f[i].cap - 1 ? n : f[i].cap - 1);
        e.key_hash[f[i].key] = cbus_key_hash(f[i].v, n);
    }
    return e;
}

static void long_name(char *out, size_t len, char last)
{
    memset(out, 'u', len - 1);
    memcpy(out, "user:default/", 13);
    out[len - 2] = last;
    out[len - 1] = '\0';
}

Test(ratelimit_limiter, two_long_users_sharing_the_shown_prefix_are_two_keys)
{
    char a[201], b[201];
    long_name(a, sizeof a, 'a');
    long_name(b, sizeof b, 'b');
    rl_limiter *l = make("rule = user=* rpm=2\n", 0);
    struct cbus_event ea = ev_whole(T0, a, NULL, NULL), eb = ev_whole(T0, b, NULL, NULL);
    cr_assert_eq(memcmp(ea.user, eb.user, sizeof ea.user), 0, "the shown prefixes are equal");
    rl_feed(l, &ea);
    rl_feed(l, &ea);
    rl_feed(l, &eb);
    uint64_t retry;
    cr_assert_eq(rl_check(l, &ea, T0, &retry), CBUS_THROTTLED);
    cr_assert_eq(rl_check(l, &eb, T0, &retry), CBUS_ALLOW, "b made one request of two");
    struct rl_stats st;
    rl_get_stats(l, &st);
    cr_assert_eq(st.keys, 2);
    /* The status shows them as two rows: prefix, ellipsis, hash. */
    struct sbuf s;
    sbuf_init(&s);
    rl_status_json(l, &s, T0, 10);
    char want[64];
    snprintf(want, sizeof want, "\u2026#%08x", (unsigned)(cbus_key_hash(a, 200) >> 32));
    const char *pa = strstr(s.data, want);
    snprintf(want, sizeof want, "\u2026#%08x", (unsigned)(cbus_key_hash(b, 200) >> 32));
    cr_assert(pa && strstr(s.data, want), "%s", s.data);
    sbuf_free(&s);
    rl_free(l);
}

Test(ratelimit_limiter, literal_pattern_matches_the_whole_value_not_its_prefix)
{
    char a[201], b[201], rules[512];
    long_name(a, sizeof a, 'a');
    long_name(b, sizeof b, 'b');
    /* a has its own, larger allowance; b falls under the wildcard. */
    snprintf(rules, sizeof rules, "rule = user=* rpm=1\nrule = user=%s rpm=100\n", a);
    rl_limiter *l = make(rules, 0);
    struct cbus_event ea = ev_whole(T0, a, NULL, NULL), eb = ev_whole(T0, b, NULL, NULL);
    for (unsigned i = 0; i < 5; i++)
        rl_feed(l, &ea);
    rl_feed(l, &eb);
    uint64_t retry;
    cr_assert_eq(rl_check(l, &ea, T0, &retry), CBUS_ALLOW);
    cr_assert_eq(rl_check(l, &eb, T0, &retry), CBUS_THROTTLED);
    rl_free(l);
}

/* Collects every verdict a drain writes. */
struct sinks {
    unsigned n;
    struct {
        unsigned scope, verdict;
        uint64_t key_hash;
        char key[64];
    } v[8];
};
static int record_all(void *ctx, unsigned scope, uint64_t key_hash, const char *key,
                      unsigned verdict, uint64_t until)
{
    (void)until;
    struct sinks *s = ctx;
    if (s->n < 8) {
        s->v[s->n].scope = scope;
        s->v[s->n].verdict = verdict;
        s->v[s->n].key_hash = key_hash;
        snprintf(s->v[s->n].key, sizeof s->v[s->n].key, "%s", key);
    }
    s->n++;
    return 0;
}

Test(ratelimit_limiter, agent_and_tenant_rules_publish_and_status_shows_them)
{
    rl_limiter *l = make("rule = agent=planner rpm=2\n"
                         "rule = tenant=* rpm=3\n"
                         "rule = tenant=team-a agent=* rpm=100 enforce=none\n", 0);
    struct cbus_event plan_a = ev_whole(T0, "alice", "planner", "team-a");
    struct cbus_event coder_a = ev_whole(T0, "alice", "coder", "team-a");
    struct cbus_event coder_b = ev_whole(T0, "bob", "coder", "team-b");
    rl_feed(l, &plan_a);
    rl_feed(l, &plan_a);
    uint64_t retry;
    /* the planner agent is at its 2 per minute; the coder is not limited
     * per agent but team-a (2 of 3) still has room */
    cr_assert_eq(rl_check(l, &plan_a, T0, &retry), CBUS_THROTTLED);
    cr_assert_eq(rl_check(l, &coder_a, T0, &retry), CBUS_ALLOW);
    rl_feed(l, &coder_a);
    cr_assert_eq(rl_check(l, &coder_a, T0, &retry), CBUS_THROTTLED, "team-a used its 3");
    cr_assert_eq(rl_check(l, &coder_b, T0, &retry), CBUS_ALLOW, "team-b is another tenant");
    /* agents and tenants have admission scopes: the planner and team-a are
     * published, keyed by their whole values */
    struct sinks s = {0};
    cr_assert_eq(rl_drain(l, T0, record_all, &s), 2);
    unsigned seen = 0;
    for (unsigned i = 0; i < 2; i++) {
        cr_assert_eq(s.v[i].verdict, CBUS_THROTTLED);
        if (s.v[i].scope == CBUS_SCOPE_AGENT) {
            cr_assert_str_eq(s.v[i].key, "planner");
            cr_assert_eq(s.v[i].key_hash, cbus_key_hash("planner", 7));
            seen |= 1;
        } else if (s.v[i].scope == CBUS_SCOPE_TENANT) {
            cr_assert_str_eq(s.v[i].key, "team-a");
            cr_assert_eq(s.v[i].key_hash, cbus_key_hash("team-a", 6));
            seen |= 2;
        }
    }
    cr_assert_eq(seen, 3);
    struct sbuf b;
    sbuf_init(&b);
    rl_status_json(l, &b, T0, 10);
    cr_assert(strstr(b.data, "\"rule\":\"agent=planner rpm=2\""), "%s", b.data);
    cr_assert(strstr(b.data, "\"key\":\"agent=planner\""), "%s", b.data);
    cr_assert(strstr(b.data, "\"key\":\"tenant=team-a\""), "%s", b.data);
    cr_assert(strstr(b.data, "\"key\":\"agent=planner tenant=team-a\""), "%s", b.data);
    sbuf_free(&b);
    rl_free(l);
}

Test(ratelimit_limiter, a_combination_can_be_enforced_on_agent_or_tenant)
{
    char text[256], err[512];
    snprintf(text, sizeof text, "[rules]\nrule = user=* agent=* rpm=2 enforce=agent\n");
    struct rl_config c;
    cr_assert_eq(rl_config_parse(&c, "test.ini", text, err, sizeof err), 0, "%s", err);
    cr_assert_eq(c.rules.rule[0].publish_scope, CBUS_SCOPE_AGENT);
    rl_config_free(&c);
}

Test(ratelimit_limiter, two_long_users_get_their_own_verdicts)
{
    char a[201], b[201];
    long_name(a, sizeof a, 'a');
    long_name(b, sizeof b, 'b');
    rl_limiter *l = make("rule = user=* rpm=1\n", 0);
    struct cbus_event ea = ev_whole(T0, a, NULL, NULL);
    rl_feed(l, &ea);
    rl_feed(l, &ea);
    struct sinks s = {0};
    cr_assert_eq(rl_drain(l, T0, record_all, &s), 1);
    cr_assert_eq(s.v[0].key_hash, cbus_key_hash(a, 200), "the whole value's hash, not the field's");
    cr_assert_gt(rl_published_until(l, CBUS_SCOPE_USER, a), T0);
    cr_assert_eq(rl_published_until(l, CBUS_SCOPE_USER, b), 0);
    rl_free(l);
}
