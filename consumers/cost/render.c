#include "render.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void cost_format_time(char *out, size_t len, uint64_t realtime_ns)
{
    time_t t = (time_t)(realtime_ns / 1000000000u);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* A key's field as JSON: shown bytes, with "…#hash" when its producer cut
 * it (cost_key_show), so two rows of one prefix are told apart. */
static void json_key(struct sbuf *b, const char *key, size_t field_len, uint64_t hash)
{
    char s[COST_SHOW_MAX];
    cost_key_show(s, sizeof s, key, field_len, hash);
    sbuf_json_str(b, s, (size_t)-1);
}

static void prom_key(struct sbuf *b, const char *key, size_t field_len, uint64_t hash)
{
    char s[COST_SHOW_MAX];
    cost_key_show(s, sizeof s, key, field_len, hash);
    sbuf_prom_label(b, s, strlen(s));
}

static void usd_exact(struct sbuf *b, cost_u128 pico)
{
    char s[64];
    cost_pico_format_usd(s, sizeof s, pico);
    sbuf_puts(b, s);
}

/* Requests / tokens per minute over the sliding minute ending now,
 * estimated from the current and the previous UTC minute of event time
 * (the previous minute weighted by the part of it still in the window). */
static void per_minute(const struct cost_counters *c, uint64_t now_ns, uint64_t *rpm, uint64_t *tpm)
{
    uint64_t now_min = now_ns / COST_MINUTE_NS;
    double left = 1.0 - (double)(now_ns % COST_MINUTE_NS) / (double)COST_MINUTE_NS;
    *rpm = *tpm = 0;
    if (c->minute == now_min) {
        *rpm = c->cur_req + (uint64_t)((double)c->prev_req * left + 0.5);
        *tpm = c->cur_tok + (uint64_t)((double)c->prev_tok * left + 0.5);
    } else if (c->minute + 1 == now_min) {
        *rpm = (uint64_t)((double)c->cur_req * left + 0.5);
        *tpm = (uint64_t)((double)c->cur_tok * left + 0.5);
    }
}

static void json_hist(struct sbuf *b, const char *name, const struct cost_hist *h,
                      enum cost_hist_kind k)
{
    sbuf_printf(b, "\"%s\":", name);
    if (!h->count) {
        sbuf_puts(b, "null");
        return;
    }
    sbuf_printf(b,
                "{\"count\":%llu,\"p50\":%.3f,\"p95\":%.3f,\"p99\":%.3f,\"mean\":%.3f,"
                "\"min\":%.3f,\"max\":%.3f}",
                (unsigned long long)h->count, cost_hist_quantile(h, 0.50, k) / 1e6,
                cost_hist_quantile(h, 0.95, k) / 1e6, cost_hist_quantile(h, 0.99, k) / 1e6,
                (double)(h->sum_ns / h->count) / 1e6, h->min_ns / 1e6, h->max_ns / 1e6);
}

static void json_counters(struct sbuf *b, const struct cost_counters *c, uint64_t now)
{
    sbuf_printf(b, "\"requests\":%llu,\"errors\":%llu,\"usage_missing\":%llu,\"unpriced\":%llu,",
                (unsigned long long)c->requests, (unsigned long long)c->errors,
                (unsigned long long)c->usage_missing, (unsigned long long)c->unpriced);
    /* Absent is not zero: a count nobody reported is null. */
    sbuf_puts(b, "\"tokens\":{");
    for (unsigned f = 0; f < COST_TOK__COUNT; f++) {
        sbuf_printf(b, "%s\"%s\":", f ? "," : "", cost_tok_names[f]);
        if (c->reported[f])
            sbuf_printf(b, "%llu", (unsigned long long)c->tokens[f]);
        else
            sbuf_puts(b, "null");
    }
    sbuf_puts(b, "},\"reported\":{");
    for (unsigned f = 0; f < COST_TOK__COUNT; f++)
        sbuf_printf(b, "%s\"%s\":%llu", f ? "," : "", cost_tok_names[f],
                    (unsigned long long)c->reported[f]);
    sbuf_puts(b, "},\"cost_usd\":\"");
    usd_exact(b, c->cost_pico);
    uint64_t rpm, tpm;
    per_minute(c, now, &rpm, &tpm);
    sbuf_printf(b, "\",\"rpm\":%llu,\"tpm\":%llu", (unsigned long long)rpm,
                (unsigned long long)tpm);
    if (c->last_ts_ns) {
        char t[32];
        cost_format_time(t, sizeof t, c->last_ts_ns);
        sbuf_printf(b, ",\"last_seen\":\"%s\"", t);
    }
}

static void json_latency(struct sbuf *b, const struct cost_latency *lat)
{
    sbuf_puts(b, ",");
    json_hist(b, "duration_ms", &lat->duration, COST_HIST_DURATION);
    sbuf_puts(b, ",");
    json_hist(b, "ttft_ms", &lat->ttft, COST_HIST_TTFT);
}

static void json_budget(struct sbuf *b, const struct cost_budget *bu,
                        const struct cost_budget_state *st)
{
    if (!bu)
        return;
    sbuf_puts(b, ",\"budget\":{\"limit_usd\":\"");
    usd_exact(b, bu->limit_pico);
    sbuf_puts(b, "\",\"spent_usd\":\"");
    usd_exact(b, st->period_end_day ? st->spent_pico : 0);
    sbuf_puts(b, "\"");
    if (bu->soft_pico) {
        sbuf_puts(b, ",\"soft_usd\":\"");
        usd_exact(b, bu->soft_pico);
        sbuf_puts(b, "\"");
    }
    if (bu->period_days)
        sbuf_printf(b, ",\"period\":\"%ud\"", bu->period_days);
    else
        sbuf_puts(b, ",\"period\":\"none\"");
    if (st->period_end_day && bu->period_days) {
        char t[32];
        cost_format_time(t, sizeof t, st->period_start_day * COST_DAY_NS);
        sbuf_printf(b, ",\"period_start\":\"%s\"", t);
        cost_format_time(t, sizeof t, st->period_end_day * COST_DAY_NS);
        sbuf_printf(b, ",\"resets_at\":\"%s\"", t);
    }
    sbuf_printf(b, ",\"exceeded\":%s,\"alerted_pct\":[", st->exceeded ? "true" : "false");
    int first = 1;
    for (unsigned i = 0; i < bu->n_marks; i++)
        if (st->fired & (1u << i)) {
            sbuf_printf(b, "%s%u", first ? "" : ",", bu->marks[i].pct);
            first = 0;
        }
    sbuf_puts(b, "]}");
}

static const cost_u128 *sort_cost_base;
static size_t sort_stride;
static int by_cost_desc(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    const cost_u128 *cx = (const cost_u128 *)((const char *)sort_cost_base + x * sort_stride);
    const cost_u128 *cy = (const cost_u128 *)((const char *)sort_cost_base + y * sort_stride);
    return *cx < *cy ? 1 : *cx > *cy ? -1 : 0;
}

static void model_labels(struct sbuf *b, const char *k);
static void prom_head(struct sbuf *b, const char *name, const char *type, const char *help);

/* ---- scores ------------------------------------------------------------------ */

static const char *const score_by_name[] = {"name", "model", "agent"};

/* The row's labels or JSON fields after the name: provider/model or agent. */
static void score_who_json(struct sbuf *b, const char *k)
{
    const char *who = cost_score_key_who(k);
    if (cost_score_key_by(k) == COST_SCORE_BY_MODEL) {
        sbuf_puts(b, ",\"provider\":");
        json_key(b, who, CBUS_PROVIDER_LEN, cost_key_whole_hash(who, COST_MODEL_PH));
        sbuf_puts(b, ",\"model\":");
        json_key(b, who + CBUS_PROVIDER_LEN, CBUS_MODEL_LEN,
                 cost_key_whole_hash(who, COST_MODEL_MH));
    } else if (cost_score_key_by(k) == COST_SCORE_BY_AGENT) {
        sbuf_puts(b, ",\"agent\":");
        json_key(b, who, CBUS_AGENT_LEN, cost_key_whole_hash(who, CBUS_AGENT_LEN));
    }
}

static void score_labels(struct sbuf *b, const char *k)
{
    sbuf_puts(b, "name=\"");
    prom_key(b, cost_score_key_name(k), CBUS_NAME_LEN,
             cost_key_whole_hash(cost_score_key_name(k), CBUS_NAME_LEN));
    sbuf_puts(b, "\"");
    const char *who = cost_score_key_who(k);
    if (cost_score_key_by(k) == COST_SCORE_BY_MODEL) {
        sbuf_puts(b, ",");
        model_labels(b, who);
    } else if (cost_score_key_by(k) == COST_SCORE_BY_AGENT) {
        sbuf_puts(b, ",agent=\"");
        prom_key(b, who, CBUS_AGENT_LEN, cost_key_whole_hash(who, CBUS_AGENT_LEN));
        sbuf_puts(b, "\"");
    }
}

static void json_scores(struct sbuf *b, const struct cost_scores *sc)
{
    sbuf_printf(b, "\"scores_overflow\":%llu,\"scores_bad_type\":%llu,\"scores\":[",
                (unsigned long long)sc->overflow, (unsigned long long)sc->bad_type);
    for (size_t i = 0; i < sc->rows.n; i++) {
        const char *k = cost_ktab_key_at(&sc->rows, i);
        const struct cost_score *r = cost_ktab_val_at(&sc->rows, i);
        sbuf_printf(b, "%s{\"name\":", i ? "," : "");
        json_key(b, cost_score_key_name(k), CBUS_NAME_LEN,
                 cost_key_whole_hash(cost_score_key_name(k), CBUS_NAME_LEN));
        sbuf_printf(b, ",\"by\":\"%s\"", score_by_name[cost_score_key_by(k) % 3]);
        score_who_json(b, k);
        sbuf_printf(b, ",\"count\":%llu", (unsigned long long)r->count);
        if (r->numeric) {
            char mean[64];
            cost_score_mean(mean, sizeof mean, r);
            /* The mean as an exact decimal string, like the money. */
            sbuf_printf(b, ",\"numeric\":{\"count\":%llu,\"out_of_range\":%llu,\"mean\":",
                        (unsigned long long)r->numeric, (unsigned long long)r->out_of_range);
            if (strcmp(mean, "null"))
                sbuf_printf(b, "\"%s\",\"min\":%.17g,\"max\":%.17g", mean, r->min, r->max);
            else
                sbuf_puts(b, "null");
            sbuf_puts(b, ",\"histogram\":[");
            uint64_t cum = 0;
            for (unsigned j = 0; j < COST_SCORE_BOUNDS; j++) {
                cum += r->bucket[j];
                sbuf_printf(b, "%s{\"le\":%g,\"count\":%llu}", j ? "," : "",
                            cost_score_bounds[j], (unsigned long long)cum);
            }
            sbuf_printf(b, ",{\"le\":\"+Inf\",\"count\":%llu}]}",
                        (unsigned long long)(cum + r->bucket[COST_SCORE_BOUNDS]));
        }
        if (r->boolean)
            sbuf_printf(b, ",\"boolean\":{\"count\":%llu,\"true\":%llu,\"success_rate\":%.17g}",
                        (unsigned long long)r->boolean, (unsigned long long)r->trues,
                        (double)r->trues / (double)r->boolean);
        if (r->categorical) {
            sbuf_printf(b, ",\"categorical\":{\"count\":%llu,\"categories\":{",
                        (unsigned long long)r->categorical);
            unsigned n = 0;
            for (size_t c = 0; c < sc->cats.n; c++) {
                const char *ck = cost_ktab_key_at(&sc->cats, c);
                if (memcmp(ck, k, COST_SCORE_KEY))
                    continue;
                const char *cat = ck + COST_SCORE_KEY;
                sbuf_puts(b, n++ ? "," : "");
                sbuf_json_str(b, cat, strnlen(cat, CBUS_PREVIEW_LEN));
                sbuf_printf(b, ":%llu",
                            (unsigned long long)*(const uint64_t *)cost_ktab_val_at(&sc->cats, c));
            }
            sbuf_puts(b, "}}");
        }
        sbuf_puts(b, "}");
    }
    sbuf_puts(b, "],");
}

/* Three families per kind of row (by name, by name and model, by name and
 * agent), so a sum over one family never counts a score twice. */
static void prom_scores(struct sbuf *b, const struct cost_scores *sc)
{
    static const char *const pre[] = {"cbus_cost_score", "cbus_cost_model_score",
                                      "cbus_cost_agent_score"};
    static const char *const per[] = {"", " per model", " per agent"};
    char name[96], help[160];
    for (unsigned by = 0; by < 3; by++) {
        snprintf(name, sizeof name, "%s_value", pre[by]);
        snprintf(help, sizeof help, "Numeric scores by name%s (exact sum of 1e-9 units).", per[by]);
        prom_head(b, name, "histogram", help);
        for (size_t i = 0; i < sc->rows.n; i++) {
            const char *k = cost_ktab_key_at(&sc->rows, i);
            const struct cost_score *r = cost_ktab_val_at(&sc->rows, i);
            if (cost_score_key_by(k) != by || r->numeric == r->out_of_range)
                continue;
            struct sbuf lb;
            sbuf_init(&lb);
            score_labels(&lb, k);
            uint64_t cum = 0;
            for (unsigned j = 0; j < COST_SCORE_BOUNDS; j++) {
                cum += r->bucket[j];
                sbuf_printf(b, "%s_bucket{%s,le=\"%g\"} %llu\n", name, lb.data,
                            cost_score_bounds[j], (unsigned long long)cum);
            }
            cum += r->bucket[COST_SCORE_BOUNDS];
            sbuf_printf(b, "%s_bucket{%s,le=\"+Inf\"} %llu\n", name, lb.data,
                        (unsigned long long)cum);
            sbuf_printf(b, "%s_sum{%s} %.9f\n", name, lb.data, (double)r->sum_nano / 1e9);
            sbuf_printf(b, "%s_count{%s} %llu\n", name, lb.data, (unsigned long long)cum);
            sbuf_free(&lb);
        }
        snprintf(name, sizeof name, "%s_boolean_total", pre[by]);
        snprintf(help, sizeof help, "Boolean scores by name%s and value.", per[by]);
        prom_head(b, name, "counter", help);
        for (size_t i = 0; i < sc->rows.n; i++) {
            const char *k = cost_ktab_key_at(&sc->rows, i);
            const struct cost_score *r = cost_ktab_val_at(&sc->rows, i);
            if (cost_score_key_by(k) != by || !r->boolean)
                continue;
            for (unsigned v = 0; v < 2; v++) {
                sbuf_printf(b, "%s{", name);
                score_labels(b, k);
                sbuf_printf(b, ",value=\"%s\"} %llu\n", v ? "true" : "false",
                            (unsigned long long)(v ? r->trues : r->boolean - r->trues));
            }
        }
        snprintf(name, sizeof name, "%s_success_ratio", pre[by]);
        snprintf(help, sizeof help, "Boolean scores by name%s: the share that are true.", per[by]);
        prom_head(b, name, "gauge", help);
        for (size_t i = 0; i < sc->rows.n; i++) {
            const char *k = cost_ktab_key_at(&sc->rows, i);
            const struct cost_score *r = cost_ktab_val_at(&sc->rows, i);
            if (cost_score_key_by(k) != by || !r->boolean)
                continue;
            sbuf_printf(b, "%s{", name);
            score_labels(b, k);
            sbuf_printf(b, "} %.17g\n", (double)r->trues / (double)r->boolean);
        }
        snprintf(name, sizeof name, "%s_category_total", pre[by]);
        snprintf(help, sizeof help, "Categorical scores by name%s and category.", per[by]);
        prom_head(b, name, "counter", help);
        for (size_t c = 0; c < sc->cats.n; c++) {
            const char *ck = cost_ktab_key_at(&sc->cats, c);
            if (cost_score_key_by(ck) != by)
                continue;
            const char *cat = ck + COST_SCORE_KEY;
            sbuf_printf(b, "%s{", name);
            score_labels(b, ck);
            sbuf_puts(b, ",category=\"");
            sbuf_prom_label(b, cat, strnlen(cat, CBUS_PREVIEW_LEN));
            sbuf_printf(b, "\"} %llu\n",
                        (unsigned long long)*(const uint64_t *)cost_ktab_val_at(&sc->cats, c));
        }
    }
}

/* The agents' or tenants' rows: ],"agents":[{"agent":...}, ... */
static void json_groups(struct sbuf *b, const char *list, const char *field,
                        const struct cost_ktab *t, size_t field_len, uint64_t now)
{
    sbuf_printf(b, "],\"%s\":[", list);
    for (size_t i = 0; i < t->n; i++) {
        const char *k = cost_ktab_key_at(t, i);
        const struct cost_user *g = cost_ktab_val_at(t, i);
        sbuf_printf(b, "%s{\"%s\":", i ? "," : "", field);
        json_key(b, k, field_len, cost_key_whole_hash(k, field_len));
        sbuf_puts(b, ",");
        json_counters(b, &g->c, now);
        json_budget(b, g->budget, &g->b);
        sbuf_puts(b, "}");
    }
}

/* The snapshot's first fields: who wrote it, the bus, the position and
 * what the daemon counted, and the anomalies. */
static void json_daemon(struct sbuf *b, const struct cost_ledger *l, const struct cost_render_info *ri)
{
    char t[32];
    uint64_t now = ri->now_realtime_ns;
    cost_format_time(t, sizeof t, now);
    sbuf_printf(b, "{\"version\":1,\"generated_at\":\"%s\",\"generated_at_ns\":%llu,\"pid\":%ld,",
                t, (unsigned long long)now, ri->pid);
    sbuf_puts(b, "\"bus\":");
    sbuf_json_str(b, ri->bus ? ri->bus : "", (size_t)-1);
    sbuf_printf(b,
                ",\"bus_id\":\"%016llx\",\"cursor\":%llu,\"checkpoint_cursor\":%llu,"
                "\"events\":%llu,\"consumed\":%llu,\"lost\":%llu,\"abandoned\":%llu,\"lag\":%llu,"
                "\"tethered\":%s,"
                "\"alerts\":%llu,\"webhook_sent\":%llu,\"webhook_failed\":%llu,\"prices\":%llu,",
                (unsigned long long)ri->bus_id, (unsigned long long)l->cursor,
                (unsigned long long)ri->checkpoint_cursor, (unsigned long long)l->events,
                (unsigned long long)ri->consumed, (unsigned long long)ri->lost,
                (unsigned long long)ri->abandoned, (unsigned long long)ri->lag, ri->tethered ? "true" : "false",
                (unsigned long long)ri->alerts, (unsigned long long)ri->webhook_sent,
                (unsigned long long)ri->webhook_failed, (unsigned long long)ri->prices_loaded);
    const struct cost_anomalies *a = &l->an;
    sbuf_printf(b,
                "\"anomalies\":{\"cache_exceeds_input\":%llu,\"reasoning_exceeds_output\":%llu,"
                "\"truncated_keys\":%llu,\"duplicate_events\":%llu,\"models_overflow\":%llu,"
                "\"users_overflow\":%llu,\"sessions_overflow\":%llu,\"agents_overflow\":%llu,"
                "\"tenants_overflow\":%llu,\"late_events\":%llu},",
                (unsigned long long)a->cache_exceeds_input,
                (unsigned long long)a->reasoning_exceeds_output,
                (unsigned long long)a->truncated_keys, (unsigned long long)a->duplicate_events,
                (unsigned long long)a->models_overflow, (unsigned long long)a->users_overflow,
                (unsigned long long)a->sessions_overflow,
                (unsigned long long)l->an2.agents_overflow,
                (unsigned long long)l->an2.tenants_overflow, (unsigned long long)a->late_events);
}

static void json_models(struct sbuf *b, const struct cost_ledger *l, uint64_t now)
{
    for (size_t i = 0; i < l->models.n; i++) {
        const char *k = cost_ktab_key_at(&l->models, i);
        const struct cost_model *m = cost_ktab_val_at(&l->models, i);
        sbuf_puts(b, i ? ",{\"provider\":" : "{\"provider\":");
        json_key(b, k, CBUS_PROVIDER_LEN, cost_key_whole_hash(k, COST_MODEL_PH));
        sbuf_puts(b, ",\"model\":");
        json_key(b, k + CBUS_PROVIDER_LEN, CBUS_MODEL_LEN, cost_key_whole_hash(k, COST_MODEL_MH));
        sbuf_puts(b, ",\"price_key\":");
        if (m->price)
            sbuf_json_str(b, m->price->key, (size_t)-1);
        else
            sbuf_puts(b, "null");
        sbuf_puts(b, ",");
        json_counters(b, &m->c, now);
        json_latency(b, &m->lat);
        sbuf_puts(b, "}");
    }
}

static void json_users(struct sbuf *b, const struct cost_ledger *l, uint64_t now)
{
    for (size_t i = 0; i < l->users.n; i++) {
        const char *k = cost_ktab_key_at(&l->users, i);
        const struct cost_user *u = cost_ktab_val_at(&l->users, i);
        sbuf_puts(b, i ? ",{\"user\":" : "{\"user\":");
        json_key(b, k, CBUS_USER_LEN, cost_key_whole_hash(k, CBUS_USER_LEN));
        sbuf_puts(b, ",");
        json_counters(b, &u->c, now);
        json_budget(b, u->budget, &u->b);
        sbuf_puts(b, "}");
    }
}

/* The max_sessions costliest sessions, highest first. */
static void json_sessions(struct sbuf *b, const struct cost_ledger *l, const struct cost_render_info *ri,
                          uint64_t now)
{
    size_t ns = l->sessions.n;
    size_t *idx = ns ? malloc(ns * sizeof *idx) : NULL;
    if (idx) {
        for (size_t i = 0; i < ns; i++)
            idx[i] = i;
        const struct cost_session *s0 = cost_ktab_val_at(&l->sessions, 0);
        sort_cost_base = &s0->c.cost_pico;
        sort_stride = l->sessions.stride;
        qsort(idx, ns, sizeof *idx, by_cost_desc);
        size_t shown = ns < ri->max_sessions ? ns : ri->max_sessions;
        for (size_t j = 0; j < shown; j++) {
            const char *k = cost_ktab_key_at(&l->sessions, idx[j]);
            const struct cost_session *s = cost_ktab_val_at(&l->sessions, idx[j]);
            sbuf_puts(b, j ? ",{\"session\":" : "{\"session\":");
            json_key(b, k, CBUS_SESSION_LEN, cost_key_whole_hash(k, CBUS_SESSION_LEN));
            sbuf_puts(b, ",");
            json_counters(b, &s->c, now);
            json_budget(b, s->budget, &s->b);
            sbuf_puts(b, "}");
        }
        free(idx);
    }
}

void cost_render_json(struct sbuf *b, const struct cost_ledger *l, const struct cost_render_info *ri)
{
    uint64_t now = ri->now_realtime_ns;
    json_daemon(b, l, ri);
    sbuf_puts(b, "\"total\":{");
    json_counters(b, &l->total, now);
    json_latency(b, &l->total_lat);
    json_budget(b, l->budgets.global, &l->global_b);
    sbuf_puts(b, "},\"models\":[");
    json_models(b, l, now);
    sbuf_puts(b, "],\"users\":[");
    json_users(b, l, now);
    json_groups(b, "agents", "agent", &l->agents, CBUS_AGENT_LEN, now);
    json_groups(b, "tenants", "tenant", &l->tenants, CBUS_TENANT_LEN, now);
    sbuf_puts(b, "],");
    json_scores(b, &l->scores);
    sbuf_printf(b, "\"sessions_total\":%zu,\"sessions\":[", l->sessions.n);
    json_sessions(b, l, ri, now);
    sbuf_puts(b, "]}\n");
}

/* ---- Prometheus text exposition ------------------------------------------------ */

static void prom_head(struct sbuf *b, const char *name, const char *type, const char *help)
{
    sbuf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void prom_usd(struct sbuf *b, cost_u128 pico)
{
    /* Exact decimal: Prometheus parses it as a float64 anyway, but the text
     * is the integer total, not a float sum. */
    char s[64];
    cost_pico_format_usd(s, sizeof s, pico);
    sbuf_puts(b, s);
}

static void model_labels(struct sbuf *b, const char *k)
{
    sbuf_puts(b, "provider=\"");
    prom_key(b, k, CBUS_PROVIDER_LEN, cost_key_whole_hash(k, COST_MODEL_PH));
    sbuf_puts(b, "\",model=\"");
    prom_key(b, k + CBUS_PROVIDER_LEN, CBUS_MODEL_LEN, cost_key_whole_hash(k, COST_MODEL_MH));
    sbuf_puts(b, "\"");
}

static void prom_hist(struct sbuf *b, const char *name, const char *labels,
                      const struct cost_hist *h, enum cost_hist_kind k)
{
    unsigned nb = cost_hist_prom_bounds(k);
    for (unsigned i = 0; i < nb; i++)
        sbuf_printf(b, "%s_bucket{%s,le=\"%g\"} %llu\n", name, labels,
                    cost_hist_prom_bound_s(k, i),
                    (unsigned long long)cost_hist_prom_cumulative(h, k, i));
    sbuf_printf(b, "%s_bucket{%s,le=\"+Inf\"} %llu\n", name, labels, (unsigned long long)h->count);
    sbuf_printf(b, "%s_sum{%s} %.9f\n", name, labels, (double)h->sum_ns / 1e9);
    sbuf_printf(b, "%s_count{%s} %llu\n", name, labels, (unsigned long long)h->count);
}

/* key: a table key of field_len shown bytes and the hash; field_len 0: "*". */
static void prom_budget(struct sbuf *b, const char *scope, const char *key, size_t field_len,
                        const struct cost_budget *bu, const struct cost_budget_state *st,
                        const char *metric)
{
    sbuf_printf(b, "%s{scope=\"%s\",key=\"", metric, scope);
    if (field_len)
        prom_key(b, key, field_len, cost_key_whole_hash(key, field_len));
    else
        sbuf_puts(b, key);
    sbuf_puts(b, "\"} ");
    if (!strcmp(metric, "cbus_cost_budget_spent_usd"))
        prom_usd(b, st->period_end_day ? st->spent_pico : 0);
    else if (!strcmp(metric, "cbus_cost_budget_limit_usd"))
        prom_usd(b, bu->limit_pico);
    else
        sbuf_puts(b, st->exceeded ? "1" : "0");
    sbuf_puts(b, "\n");
}

/* cbus_cost_agent_usd_total{agent=...} and the like for agents or tenants:
 * few rows (agents and teams, not end users), so always exported. */
static void prom_groups(struct sbuf *b, const char *what, const struct cost_ktab *t,
                        size_t field_len)
{
    char name[64], help[96];
    static const char *const metric[] = {"usd_total", "requests_total", "errors_total"};
    static const char *const helps[] = {"Cost per %s in USD.", "Completed calls per %s.",
                                        "Failed calls per %s."};
    for (unsigned m = 0; m < 3; m++) {
        snprintf(name, sizeof name, "cbus_cost_%s_%s", what, metric[m]);
        snprintf(help, sizeof help, helps[m], what);
        prom_head(b, name, "counter", help);
        for (size_t i = 0; i < t->n; i++) {
            const char *k = cost_ktab_key_at(t, i);
            const struct cost_user *g = cost_ktab_val_at(t, i);
            sbuf_printf(b, "%s{%s=\"", name, what);
            prom_key(b, k, field_len, cost_key_whole_hash(k, field_len));
            sbuf_puts(b, "\"} ");
            if (m == 0)
                prom_usd(b, g->c.cost_pico);
            else
                sbuf_printf(b, "%llu", (unsigned long long)(m == 1 ? g->c.requests : g->c.errors));
            sbuf_puts(b, "\n");
        }
    }
}

/* One latency histogram per model that has samples: durations (ttft 0)
 * or times to first token (ttft 1). */
static void prom_model_hist(struct sbuf *b, const struct cost_ktab *mt, int ttft, const char *name,
                            const char *help)
{
    prom_head(b, name, "histogram", help);
    for (size_t i = 0; i < mt->n; i++) {
        const struct cost_model *m = cost_ktab_val_at(mt, i);
        const struct cost_hist *h = ttft ? &m->lat.ttft : &m->lat.duration;
        if (!h->count)
            continue;
        struct sbuf lb;
        sbuf_init(&lb);
        model_labels(&lb, cost_ktab_key_at(mt, i));
        prom_hist(b, name, lb.data, h, ttft ? COST_HIST_TTFT : COST_HIST_DURATION);
        sbuf_free(&lb);
    }
}

/* Per model: cost, call counts, tokens and the two latency histograms. */
static void prom_models(struct sbuf *b, const struct cost_ledger *l)
{
    const struct cost_ktab *mt = &l->models;
    prom_head(b, "cbus_cost_usd_total", "counter",
              "Cost of LLM calls in USD (exact sum of integer pico-dollars).");
    for (size_t i = 0; i < mt->n; i++) {
        const struct cost_model *m = cost_ktab_val_at(mt, i);
        sbuf_puts(b, "cbus_cost_usd_total{");
        model_labels(b, cost_ktab_key_at(mt, i));
        sbuf_puts(b, "} ");
        prom_usd(b, m->c.cost_pico);
        sbuf_puts(b, "\n");
    }
    static const struct {
        const char *name, *help;
        size_t off;
    } counts[] = {
        {"cbus_cost_requests_total", "Completed LLM calls (llm_end events).",
         offsetof(struct cost_counters, requests)},
        {"cbus_cost_errors_total", "Failed LLM calls (llm_error events).",
         offsetof(struct cost_counters, errors)},
        {"cbus_cost_unpriced_requests_total", "Calls to a model with no price (cost not counted).",
         offsetof(struct cost_counters, unpriced)},
        {"cbus_cost_usage_missing_total", "Calls that reported no token usage at all.",
         offsetof(struct cost_counters, usage_missing)},
    };
    for (unsigned c = 0; c < sizeof counts / sizeof counts[0]; c++) {
        prom_head(b, counts[c].name, "counter", counts[c].help);
        for (size_t i = 0; i < mt->n; i++) {
            const struct cost_model *m = cost_ktab_val_at(mt, i);
            sbuf_printf(b, "%s{", counts[c].name);
            model_labels(b, cost_ktab_key_at(mt, i));
            sbuf_printf(b, "} %llu\n",
                        (unsigned long long)*(const uint64_t *)((const char *)&m->c + counts[c].off));
        }
    }
    prom_head(b, "cbus_cost_tokens_total", "counter",
              "Tokens by type (OpenTelemetry convention: input includes cache, output includes "
              "reasoning); a type nobody reported has no series.");
    for (size_t i = 0; i < mt->n; i++) {
        const struct cost_model *m = cost_ktab_val_at(mt, i);
        for (unsigned f = 0; f < COST_TOK__COUNT; f++) {
            if (!m->c.reported[f])
                continue;
            sbuf_puts(b, "cbus_cost_tokens_total{");
            model_labels(b, cost_ktab_key_at(mt, i));
            sbuf_printf(b, ",type=\"%s\"} %llu\n", cost_tok_names[f],
                        (unsigned long long)m->c.tokens[f]);
        }
    }
    prom_model_hist(b, mt, 0, "cbus_cost_request_duration_seconds",
                    "LLM call duration (gen_ai.client.operation.duration buckets).");
    prom_model_hist(b, mt, 1, "cbus_cost_time_to_first_token_seconds",
                    "Time to first token (exponential buckets 1 ms .. 16.384 s).");
}

/* Per user (prom_users: a label per user can be many series). */
static void prom_users(struct sbuf *b, const struct cost_ledger *l)
{
    const struct cost_ktab *ut = &l->users;
    prom_head(b, "cbus_cost_user_usd_total", "counter", "Cost per user in USD.");
    for (size_t i = 0; i < ut->n; i++) {
        const char *k = cost_ktab_key_at(ut, i);
        const struct cost_user *u = cost_ktab_val_at(ut, i);
        sbuf_puts(b, "cbus_cost_user_usd_total{user=\"");
        prom_key(b, k, CBUS_USER_LEN, cost_key_whole_hash(k, CBUS_USER_LEN));
        sbuf_puts(b, "\"} ");
        prom_usd(b, u->c.cost_pico);
        sbuf_puts(b, "\n");
    }
    prom_head(b, "cbus_cost_user_requests_total", "counter", "Completed calls per user.");
    for (size_t i = 0; i < ut->n; i++) {
        const char *k = cost_ktab_key_at(ut, i);
        const struct cost_user *u = cost_ktab_val_at(ut, i);
        sbuf_puts(b, "cbus_cost_user_requests_total{user=\"");
        prom_key(b, k, CBUS_USER_LEN, cost_key_whole_hash(k, CBUS_USER_LEN));
        sbuf_printf(b, "\"} %llu\n", (unsigned long long)u->c.requests);
    }
    prom_head(b, "cbus_cost_user_tokens_total", "counter", "Tokens per user by type.");
    for (size_t i = 0; i < ut->n; i++) {
        const char *k = cost_ktab_key_at(ut, i);
        const struct cost_user *u = cost_ktab_val_at(ut, i);
        for (unsigned f = 0; f < COST_TOK__COUNT; f++) {
            if (!u->c.reported[f])
                continue;
            sbuf_puts(b, "cbus_cost_user_tokens_total{user=\"");
            prom_key(b, k, CBUS_USER_LEN, cost_key_whole_hash(k, CBUS_USER_LEN));
            sbuf_printf(b, "\",type=\"%s\"} %llu\n", cost_tok_names[f],
                        (unsigned long long)u->c.tokens[f]);
        }
    }
}

/* Every budget's spend, limit and verdict, global then by scope. */
static void prom_budgets(struct sbuf *b, const struct cost_ledger *l)
{
    const struct cost_ktab *ut = &l->users;
    static const char *const bm[] = {"cbus_cost_budget_spent_usd", "cbus_cost_budget_limit_usd",
                                     "cbus_cost_budget_exceeded"};
    static const char *const bh[] = {"Spend in the current budget period, USD.",
                                     "Hard budget limit, USD.",
                                     "1 while a budget-exceeded verdict is published."};
    for (unsigned m = 0; m < 3; m++) {
        prom_head(b, bm[m], "gauge", bh[m]);
        if (l->budgets.global)
            prom_budget(b, "global", "*", 0, l->budgets.global, &l->global_b, bm[m]);
        const struct {
            const char *scope;
            const struct cost_ktab *t;
            size_t field_len;
        } bt[] = {{"user", ut, CBUS_USER_LEN},
                  {"agent", &l->agents, CBUS_AGENT_LEN},
                  {"tenant", &l->tenants, CBUS_TENANT_LEN}};
        for (unsigned t = 0; t < 3; t++)
            for (size_t i = 0; i < bt[t].t->n; i++) {
                const struct cost_user *u = cost_ktab_val_at(bt[t].t, i);
                if (!u->budget)
                    continue;
                prom_budget(b, bt[t].scope, cost_ktab_key_at(bt[t].t, i), bt[t].field_len,
                            u->budget, &u->b, bm[m]);
            }
    }
}

/* What the daemon itself saw: anomalies, events read, lost, lag, alerts. */
static void prom_daemon(struct sbuf *b, const struct cost_ledger *l, const struct cost_render_info *ri)
{
    const struct cost_anomalies *a = &l->an;
    prom_head(b, "cbus_cost_anomalies_total", "counter",
              "Inconsistent or unaccountable input, by kind.");
    sbuf_printf(b,
                "cbus_cost_anomalies_total{kind=\"cache_exceeds_input\"} %llu\n"
                "cbus_cost_anomalies_total{kind=\"reasoning_exceeds_output\"} %llu\n"
                "cbus_cost_anomalies_total{kind=\"truncated_keys\"} %llu\n"
                "cbus_cost_anomalies_total{kind=\"duplicate_events\"} %llu\n"
                "cbus_cost_anomalies_total{kind=\"table_overflow\"} %llu\n"
                "cbus_cost_anomalies_total{kind=\"late_events\"} %llu\n",
                (unsigned long long)a->cache_exceeds_input,
                (unsigned long long)a->reasoning_exceeds_output,
                (unsigned long long)a->truncated_keys, (unsigned long long)a->duplicate_events,
                (unsigned long long)(a->models_overflow + a->users_overflow + a->sessions_overflow +
                                     l->an2.agents_overflow + l->an2.tenants_overflow),
                (unsigned long long)a->late_events);
    prom_head(b, "cbus_cost_events_total", "counter", "Events read from the bus (any kind).");
    sbuf_printf(b, "cbus_cost_events_total %llu\n", (unsigned long long)l->events);
    prom_head(b, "cbus_cost_events_lost_total", "counter",
              "Events overwritten before cbus-cost read them (all runs: kept in the checkpoint).");
    sbuf_printf(b, "cbus_cost_events_lost_total %llu\n", (unsigned long long)ri->lost);
    prom_head(b, "cbus_cost_events_abandoned_total", "counter",
              "Positions claimed by a producer that never committed them (all runs).");
    sbuf_printf(b, "cbus_cost_events_abandoned_total %llu\n", (unsigned long long)ri->abandoned);
    prom_head(b, "cbus_cost_consumer_lag", "gauge", "Events claimed but not yet read.");
    sbuf_printf(b, "cbus_cost_consumer_lag %llu\n", (unsigned long long)ri->lag);
    prom_head(b, "cbus_cost_alerts_total", "counter", "Budget alerts raised.");
    sbuf_printf(b, "cbus_cost_alerts_total %llu\n", (unsigned long long)ri->alerts);
    prom_head(b, "cbus_cost_webhook_failures_total", "counter", "Alert webhooks that failed.");
    sbuf_printf(b, "cbus_cost_webhook_failures_total %llu\n", (unsigned long long)ri->webhook_failed);
}

void cost_render_prom(struct sbuf *b, const struct cost_ledger *l, const struct cost_render_info *ri)
{
    prom_models(b, l);
    prom_scores(b, &l->scores);
    prom_groups(b, "agent", &l->agents, CBUS_AGENT_LEN);
    prom_groups(b, "tenant", &l->tenants, CBUS_TENANT_LEN);
    if (ri->prom_users)
        prom_users(b, l);
    prom_budgets(b, l);
    prom_daemon(b, l, ri);
}
