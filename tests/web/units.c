/* cbus-web's pieces without a daemon: filters, the history ring, progress. */
#include <criterion/criterion.h>

#include <cbus/cbus.h>
#include <cbus/layout.h>
#include <cbus/producer.h>

#include <stdio.h>
#include <string.h>

#include "prices.h"
#include "web.h"

static struct cbus_event ev_of(unsigned kind, const char *user, const char *session)
{
    struct cbus_event e;
    memset(&e, 0, sizeof e);
    e.kind = (uint16_t)kind;
    snprintf(e.user, sizeof e.user, "%s", user);
    snprintf(e.session, sizeof e.session, "%s", session);
    e.key_hash[CBUS_KEY_USER] = cbus_key_hash(user, strlen(user));
    e.key_hash[CBUS_KEY_SESSION] = cbus_key_hash(session, strlen(session));
    return e;
}

Test(web_filter, unknown_parameter_is_named)
{
    struct web_filter f;
    memset(&f, 0, sizeof f);
    char err[256];
    cr_assert_eq(web_filter_arg(&f, "colour", "red", err, sizeof err), -EINVAL);
    cr_assert(strstr(err, "unknown filter 'colour'"), "%s", err);
    cr_assert_eq(web_filter_arg(&f, "kind", "llm_end,bogus", err, sizeof err), -EINVAL);
    cr_assert(strstr(err, "unknown kind 'bogus'"), "%s", err);
    cr_assert_eq(web_filter_arg(&f, "trace", "xyz", err, sizeof err), -EINVAL);
    cr_assert(strstr(err, "'trace'"), "%s", err);
    cr_assert_eq(web_filter_arg(&f, "user", "", err, sizeof err), -EINVAL);
    cr_assert_eq(web_filter_arg(&f, "user", "ann", err, sizeof err), 0);
    cr_assert_eq(web_filter_arg(&f, "user", "bob", err, sizeof err), -EINVAL);
    cr_assert(strstr(err, "twice"), "%s", err);
    cr_assert_eq(web_filter_arg(&f, "start", "middle", err, sizeof err), -EINVAL);
}

Test(web_filter, kinds_users_sessions_runs_traces_match)
{
    struct web_filter f;
    memset(&f, 0, sizeof f);
    char err[256];
    cr_assert_eq(web_filter_arg(&f, "kind", "llm_end,llm_new_token", err, sizeof err), 0);
    cr_assert_eq(web_filter_arg(&f, "user", "ann", err, sizeof err), 0);
    cr_assert_eq(web_filter_arg(&f, "session", "s1", err, sizeof err), 0);
    struct cbus_event e = ev_of(CBUS_EV_LLM_END, "ann", "s1");
    cr_assert(web_filter_match(&f, &e));
    e.kind = CBUS_EV_LLM_START;
    cr_assert_not(web_filter_match(&f, &e));
    e = ev_of(CBUS_EV_LLM_NEW_TOKEN, "anne", "s1"); /* a prefix is another user */
    cr_assert_not(web_filter_match(&f, &e));
    e = ev_of(CBUS_EV_LLM_NEW_TOKEN, "ann", "s2");
    cr_assert_not(web_filter_match(&f, &e));
    e = ev_of(CBUS_EV_LLM_NEW_TOKEN, "ann", "s1");
    e.kind = 63; /* out of range, from a hostile segment */
    cr_assert_not(web_filter_match(&f, &e));
    e.kind = 900;
    cr_assert_not(web_filter_match(&f, &e));

    memset(&f, 0, sizeof f);
    uint8_t tr[16], run[16];
    cbus_trace_id_new(tr);
    cbus_run_id_new(run);
    char hex[33], uuid[37];
    cbus_id_hex(hex, tr);
    cbus_id_uuid(uuid, run);
    cr_assert_eq(web_filter_arg(&f, "trace", hex, err, sizeof err), 0);
    cr_assert_eq(web_filter_arg(&f, "run", uuid, err, sizeof err), 0);
    e = ev_of(CBUS_EV_TOOL_START, "x", "y");
    memcpy(e.trace_id, tr, 16);
    memcpy(e.run_id, run, 16);
    cr_assert_not(web_filter_match(&f, &e), "trace bytes without the flag do not count");
    e.flags |= CBUS_FLAG_HAS_TRACE;
    cr_assert(web_filter_match(&f, &e));
    e.run_id[3] ^= 1;
    cr_assert_not(web_filter_match(&f, &e));
}

Test(web_filter, cut_user_matches_by_whole_value_hash)
{
    char longname[200];
    memset(longname, 'u', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    struct web_filter f;
    memset(&f, 0, sizeof f);
    char err[256];
    cr_assert_eq(web_filter_arg(&f, "user", longname, err, sizeof err), 0);
    struct cbus_event e = ev_of(CBUS_EV_LLM_END, "", "");
    memcpy(e.user, longname, sizeof e.user); /* cut, no NUL */
    e.flags |= CBUS_TRUNC_USER;
    e.key_hash[CBUS_KEY_USER] = cbus_key_hash(longname, strlen(longname));
    cr_assert(web_filter_match(&f, &e));
    longname[150] = 'v'; /* same shown prefix, another user */
    e.key_hash[CBUS_KEY_USER] = cbus_key_hash(longname, strlen(longname));
    cr_assert_not(web_filter_match(&f, &e));
}

Test(web_hist, evicts_by_entries_and_bytes_in_order)
{
    struct web_hist h;
    cr_assert_eq(web_hist_init(&h, 16, 65536), 0);
    char json[4096];
    uint32_t lens[40];
    struct cbus_event evs[40];
    memset(evs, 0, sizeof evs);
    size_t off = 0;
    for (int i = 0; i < 40; i++) {
        evs[i].event_id = (uint64_t)i;
        int n = snprintf(json + off, sizeof json - off, "{\"i\":%d}", i);
        lens[i] = (uint32_t)n;
        off += (size_t)n;
    }
    web_hist_append(&h, evs, 40, json, lens);
    cr_assert_eq(atomic_load(&h.head), 41u);
    cr_assert_eq(h.oldest, 41u - 16u, "16 entries kept: oldest %llu", (unsigned long long)h.oldest);
    for (uint64_t s = h.oldest; s < 41; s++) {
        const struct web_hist_ent *e = &h.e[s & (h.cap - 1)];
        cr_assert_eq(e->seq, s);
        struct sbuf b;
        sbuf_init(&b);
        web_hist_json(&h, e, &b);
        char want[32];
        snprintf(want, sizeof want, "{\"i\":%d}", (int)(s - 1));
        cr_assert_str_eq(b.data, want);
        sbuf_free(&b);
    }
    web_hist_free(&h);

    /* Bytes run out first: 64 KiB of 1000-byte entries keeps 65 at most,
     * and every kept entry's bytes are intact across the wrap. */
    cr_assert_eq(web_hist_init(&h, 1024, 65536), 0);
    static char big[1000 * 8];
    uint32_t blens[8];
    struct cbus_event bev[8];
    memset(bev, 0, sizeof bev);
    for (int round = 0; round < 30; round++) {
        for (int i = 0; i < 8; i++) {
            memset(big + i * 1000, 'a' + (round * 8 + i) % 26, 1000);
            blens[i] = 1000;
        }
        web_hist_append(&h, bev, 8, big, blens);
    }
    uint64_t head = atomic_load(&h.head);
    cr_assert_leq(head - h.oldest, 65u);
    cr_assert_geq(head - h.oldest, 60u);
    for (uint64_t s = h.oldest; s < head; s++) {
        struct sbuf b;
        sbuf_init(&b);
        web_hist_json(&h, &h.e[s & (h.cap - 1)], &b);
        cr_assert_eq(b.len, 1000u);
        char c = (char)('a' + (s - 1) % 26);
        for (size_t k = 0; k < b.len; k++)
            cr_assert_eq(b.data[k], c, "seq %llu byte %zu", (unsigned long long)s, k);
        sbuf_free(&b);
    }
    web_hist_free(&h);
    cr_assert_eq(web_hist_init(&h, 4, 65536), -EINVAL);
}

static struct cbus_event tev(unsigned kind, const uint8_t tr[16], const uint8_t run[16],
                             const uint8_t *parent, const char *name)
{
    struct cbus_event e;
    memset(&e, 0, sizeof e);
    e.kind = (uint16_t)kind;
    e.flags = CBUS_FLAG_HAS_TRACE | (parent ? CBUS_FLAG_HAS_PARENT : 0);
    memcpy(e.trace_id, tr, 16);
    memcpy(e.run_id, run, 16);
    if (parent)
        memcpy(e.parent_run_id, parent, 16);
    if (cbus_kind_family(kind) == CBUS_FAMILY_LLM) {
        snprintf(e.model, sizeof e.model, "%s", name);
        snprintf(e.provider, sizeof e.provider, "openai");
    } else {
        snprintf(e.name, sizeof e.name, "%s", name);
    }
    return e;
}

Test(web_progress, steps_statuses_tokens_and_cost)
{
    char err[512];
    struct cost_price_table *t = NULL;
    cr_assert_eq(cost_prices_parse(&t, "test",
                                   "{\"gpt-4o\":{\"input_cost_per_token\":0.0000025,"
                                   "\"output_cost_per_token\":0.00001}}",
                                   err, sizeof err),
                 0, "%s", err);
    uint8_t tr[16], root[16], llm[16], tool[16], other[16];
    cbus_trace_id_new(tr);
    cbus_trace_id_new(other);
    cbus_run_id_new(root);
    cbus_run_id_new(llm);
    cbus_run_id_new(tool);
    struct web_progress *p = web_progress_new(tr, t);
    cr_assert_not_null(p);
    struct sbuf b;
    sbuf_init(&b);
    int done = 0;
    struct cbus_event e = tev(CBUS_EV_CHAIN_START, tr, root, NULL, "agent");
    cr_assert_eq(web_progress_feed(p, &e, &b, &done), 1);
    cr_assert(strstr(b.data, "\"step\":1,\"action\":\"chain agent\",\"status\":\"in_progress\""), "%s", b.data);
    e = tev(CBUS_EV_CHAIN_START, other, root, NULL, "x"); /* another trace */
    sbuf_reset(&b);
    cr_assert_eq(web_progress_feed(p, &e, &b, &done), 0);
    e = tev(CBUS_EV_LLM_START, tr, llm, root, "gpt-4o");
    sbuf_reset(&b);
    cr_assert_eq(web_progress_feed(p, &e, &b, &done), 1);
    cr_assert(strstr(b.data, "\"step\":2,\"action\":\"llm gpt-4o\""), "%s", b.data);
    e = tev(CBUS_EV_LLM_NEW_TOKEN, tr, llm, root, "gpt-4o");
    snprintf(e.preview, sizeof e.preview, "Hel");
    sbuf_reset(&b);
    web_progress_feed(p, &e, &b, &done);
    cr_assert(strstr(b.data, "\"chunk\":\"Hel\""), "%s", b.data);
    cr_assert(strstr(b.data, "\"streamed\":1"), "%s", b.data);
    e = tev(CBUS_EV_LLM_END, tr, llm, root, "gpt-4o");
    e.u.usage.input_tokens = 1000;
    e.u.usage.output_tokens = 100;
    e.u.usage.usage_present = CBUS_USAGE_INPUT | CBUS_USAGE_OUTPUT;
    sbuf_reset(&b);
    web_progress_feed(p, &e, &b, &done);
    /* 1000 * 2.5e-6 + 100 * 1e-5 = 0.0035 USD */
    cr_assert(strstr(b.data, "\"status\":\"complete\""), "%s", b.data);
    cr_assert(strstr(b.data, "\"cost_usd\":\"0.003500000000\""), "%s", b.data);
    cr_assert(strstr(b.data, "\"input\":1000,\"output\":100"), "%s", b.data);
    e = tev(CBUS_EV_AGENT_ACTION, tr, root, NULL, "search");
    sbuf_reset(&b);
    web_progress_feed(p, &e, &b, &done);
    cr_assert(strstr(b.data, "\"step\":1,\"action\":\"agent_action search\""), "%s", b.data);
    e = tev(CBUS_EV_TOOL_START, tr, tool, root, "search");
    sbuf_reset(&b);
    web_progress_feed(p, &e, &b, &done);
    e = tev(CBUS_EV_TOOL_ERROR, tr, tool, root, "Timeout");
    sbuf_reset(&b);
    web_progress_feed(p, &e, &b, &done);
    cr_assert(strstr(b.data, "\"step\":3,\"action\":\"tool search\",\"status\":\"error\""), "%s", b.data);
    cr_assert(strstr(b.data, "\"error\":\"Timeout\""), "%s", b.data);
    cr_assert_eq(done, 0);
    e = tev(CBUS_EV_CHAIN_END, tr, root, NULL, "agent");
    sbuf_reset(&b);
    web_progress_feed(p, &e, &b, &done);
    cr_assert_eq(done, 1);
    cr_assert(strstr(b.data, "\"done\":true"), "%s", b.data);
    cr_assert(strstr(b.data, "\"steps\":3"), "%s", b.data);
    /* an unknown kind from a hostile segment says nothing */
    e.kind = 999;
    sbuf_reset(&b);
    cr_assert_eq(web_progress_feed(p, &e, &b, &done), 0);
    sbuf_free(&b);
    web_progress_free(p);
    cost_prices_free(t);
}
