/* The limiter's status as JSON: counters, rules with their throttle
 * counters, and the hottest keys (the most of their burst in use). */
#include "limiter_int.h"

#include <stdlib.h>
#include <string.h>

#include "sbuf.h"

struct hot {
    double pressure;
    const struct rl_key *k;
};

static double pressure(const rl_limiter *l, const struct rl_key *k, uint64_t now)
{
    const struct rl_rule *r = &l->rules.rule[k->rule];
    double p = 0;
    if (r->req.limit)
        p = (double)rl__used(k->req_tat, &r->req, now) / (double)r->req.burst;
    if (r->tok.limit) {
        double t = (double)rl__used(k->tok_tat, &r->tok, now) / (double)r->tok.burst;
        p = t > p ? t : p;
    }
    return p;
}

static void counters(const struct rl_stats *s, struct sbuf *b)
{
#define F(name) sbuf_printf(b, "\"" #name "\":%llu,", (unsigned long long)s->name)
    F(events);
    F(requests);
    F(input_tokens);
    F(output_tokens);
    F(estimated_tokens);
    F(over_limit);
    F(throttles);
    F(untracked);
    F(keys);
    F(keys_peak);
    F(keys_expired);
    F(pending);
    F(pending_expired);
    F(pending_dropped);
    F(published);
    F(cleared);
    F(publish_failed);
#undef F
}

void rl_status_json(const rl_limiter *l, struct sbuf *b, uint64_t now, unsigned top)
{
    sbuf_puts(b, "{");
    counters(&l->st, b);
    sbuf_printf(b, "\"published_now\":%zu,", l->pubs.count);
    sbuf_puts(b, "\"rules\":[");
    for (size_t i = 0; i < l->rules.count; i++) {
        const struct rl_rule *r = &l->rules.rule[i];
        sbuf_printf(b, "%s{\"line\":%u,\"rule\":", i ? "," : "", r->line);
        sbuf_json_str(b, r->text, strlen(r->text));
        sbuf_printf(b, ",\"published\":%s,\"over_limit\":%llu,\"throttles\":%llu}",
                    r->publish_scope == RL_NO_PUBLISH || l->opts.count_only ? "false" : "true",
                    (unsigned long long)r->over_limit, (unsigned long long)r->throttles);
    }
    sbuf_puts(b, "],\"hot\":[");
    struct hot *h = top ? calloc(top, sizeof *h) : NULL;
    unsigned n = 0;
    for (size_t i = 0; h && i < l->keys.count; i++) {
        const struct rl_key *k = rl_map_at(&l->keys, i);
        double p = pressure(l, k, now);
        if (p <= 0 || (n == top && p <= h[n - 1].pressure))
            continue;
        unsigned j = n < top ? n++ : n - 1;
        while (j > 0 && h[j - 1].pressure < p) {
            h[j] = h[j - 1];
            j--;
        }
        h[j] = (struct hot){p, k};
    }
    for (unsigned i = 0; i < n; i++) {
        const struct rl_key *k = h[i].k;
        const struct rl_rule *r = &l->rules.rule[k->rule];
        char text[512];
        rl__key_text(k, text, sizeof text);
        uint64_t until = k->until_ns;
        sbuf_printf(b, "%s{\"key\":", i ? "," : "");
        sbuf_json_str(b, text, strlen(text));
        sbuf_printf(b, ",\"rule_line\":%u,\"state\":\"%s\",\"retry_after_ms\":%llu", r->line,
                    until > now ? "throttled" : "ok",
                    (unsigned long long)(until > now ? (until - now + 999999) / 1000000 : 0));
        if (r->req.limit)
            sbuf_printf(b, ",\"requests_used\":%llu,\"rpm\":%llu,\"burst\":%llu",
                        (unsigned long long)rl__used(k->req_tat, &r->req, now),
                        (unsigned long long)r->req.limit, (unsigned long long)r->req.burst);
        if (r->tok.limit)
            sbuf_printf(b, ",\"tokens_used\":%llu,\"tpm\":%llu,\"token_burst\":%llu",
                        (unsigned long long)rl__used(k->tok_tat, &r->tok, now),
                        (unsigned long long)r->tok.limit, (unsigned long long)r->tok.burst);
        sbuf_printf(b, ",\"requests\":%llu,\"tokens\":%llu,\"over_limit\":%llu}",
                    (unsigned long long)k->requests, (unsigned long long)k->tokens,
                    (unsigned long long)k->over_limit);
    }
    free(h);
    sbuf_puts(b, "]}");
}
