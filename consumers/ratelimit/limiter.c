#include "limiter_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- GCRA on 128-bit scaled time ---------------------------------------- */


/* n units charged to k here, in bucket units: in fleet mode each costs
 * 1/local_share while Redis is away, and also on a key Redis has not
 * answered for yet (its first appearance on this node: without a fleet
 * view the node takes only its lease of a full bucket). */
static inline rl_u128 scaled(const rl_limiter *l, const struct rl_key *k, uint64_t n)
{
    uint64_t m = l->scale_milli;
    if (l->fleet && !k->fleet_synced && l->lease_scale_milli > m)
        m = l->lease_scale_milli;
    if (m == 1000)
        return (rl_u128)n * RL_PERIOD_NS;
    return ((rl_u128)n * RL_PERIOD_NS * m + 999) / 1000;
}

/* Charges an amount (n * I in bucket units) at now: tat = max(tat, now) + n * I. */
static void gcra_charge_u(rl_u128 *tat, rl_u128 amount, const struct rl_limit *lim, uint64_t now)
{
    rl_u128 now_s = (rl_u128)now * lim->limit;
    rl_u128 base = *tat > now_s ? *tat : now_s;
    *tat = base + amount;
}

/* Gives an amount back (an estimate that was too high); a bucket never
 * holds more room than it would had it never been charged, nor is it
 * credited beyond full. */
static void gcra_refund_u(rl_u128 *tat, rl_u128 d, const struct rl_limit *lim, uint64_t now)
{
    rl_u128 now_s = (rl_u128)now * lim->limit;
    if (*tat <= now_s)
        return;
    *tat = *tat - now_s > d ? *tat - d : now_s;
}


uint64_t rl__until(rl_u128 tat, const struct rl_limit *lim)
{
    if (!lim->limit)
        return 0;
    rl_u128 slack = (rl_u128)(lim->burst - 1) * RL_PERIOD_NS;
    if (tat <= slack)
        return 0;
    rl_u128 u = tat - slack;
    /* Round up: at until_ns the unit fits. */
    return (uint64_t)((u + lim->limit - 1) / lim->limit);
}

uint64_t rl__used(rl_u128 tat, const struct rl_limit *lim, uint64_t now)
{
    rl_u128 now_s = (rl_u128)now * lim->limit;
    if (!lim->limit || tat <= now_s)
        return 0;
    return (uint64_t)((tat - now_s + RL_PERIOD_NS - 1) / RL_PERIOD_NS);
}

uint64_t rl__key_until(const rl_limiter *l, const struct rl_key *k)
{
    const struct rl_rule *r = &l->rules.rule[k->rule];
    uint64_t a = rl__until(k->req_tat, &r->req), b = rl__until(k->tok_tat, &r->tok);
    return a > b ? a : b;
}

/* ---- construction ---------------------------------------------------------- */

int rl_new(rl_limiter **out, struct rl_rules *rules, const struct rl_opts *opts)
{
    if (rules->count > 65535)
        return -EINVAL;
    rl_limiter *l = calloc(1, sizeof *l);
    if (!l)
        return -ENOMEM;
    if (opts)
        l->opts = *opts;
    if (!l->opts.max_keys)
        l->opts.max_keys = 1000000;
    if (!l->opts.max_pending)
        l->opts.max_pending = 1000000;
    if (!l->opts.max_published)
        l->opts.max_published = 4096;
    if (!l->opts.pending_ttl_ns)
        l->opts.pending_ttl_ns = UINT64_C(600000000000);
    l->scale_milli = 1000;
    int r = -ENOMEM;
    l->scratch = malloc(3 * RL_BATCH * sizeof *l->scratch);
    if (!l->scratch)
        goto err_keys;
    r = rl_map_init(&l->keys, sizeof(struct rl_key), offsetof(struct rl_key, key), RL_KEY_MAX,
                        l->opts.max_keys);
    if (r)
        goto err_keys;
    r = rl_map_init(&l->pending, sizeof(struct rl_pending), offsetof(struct rl_pending, run_id), 16,
                    l->opts.max_pending);
    if (r)
        goto err_pending;
    r = rl_map_init(&l->pubs, sizeof(struct rl_pub), offsetof(struct rl_pub, key), RL_PUB_KEY_LEN,
                    l->opts.max_published);
    if (r)
        goto err_pubs;
    l->rules = *rules;
    memset(rules, 0, sizeof *rules);
    for (size_t i = 0; i < l->rules.count; i++) {
        l->has_tpm |= l->rules.rule[i].tok.limit != 0;
        l->dims_used |= l->rules.rule[i].group;
    }
    *out = l;
    return 0;
err_pubs:
    rl_map_free(&l->pending);
err_pending:
    rl_map_free(&l->keys);
err_keys:
    free(l->scratch);
    free(l);
    return r;
}

void rl_free(rl_limiter *l)
{
    if (!l)
        return;
    rl_map_free(&l->keys);
    rl_map_free(&l->pending);
    rl_map_free(&l->pubs);
    rl_rules_free(&l->rules);
    free(l->scratch);
    free(l);
}

const struct rl_rules *rl_rules(const rl_limiter *l)
{
    return &l->rules;
}

/* ---- keys ----------------------------------------------------------------- */

/* The event's values of the dims some rule uses (others stay empty). */
static void event_dims(const struct cbus_event *ev, unsigned used, struct rl_dims *d)
{
    static const size_t off[RL_DIM__COUNT] = {
        offsetof(struct cbus_event, user),     offsetof(struct cbus_event, session),
        offsetof(struct cbus_event, model),    offsetof(struct cbus_event, provider),
        offsetof(struct cbus_event, agent),    offsetof(struct cbus_event, tenant)};
    static const size_t cap[RL_DIM__COUNT] = {CBUS_USER_LEN,     CBUS_SESSION_LEN,
                                              CBUS_MODEL_LEN,    CBUS_PROVIDER_LEN,
                                              CBUS_AGENT_LEN,    CBUS_TENANT_LEN};
    static const unsigned key[RL_DIM__COUNT] = {CBUS_KEY_USER,     CBUS_KEY_SESSION,
                                                CBUS_KEY_MODEL,    CBUS_KEY_PROVIDER,
                                                CBUS_KEY_AGENT,    CBUS_KEY_TENANT};
    for (unsigned k = 0; k < RL_DIM__COUNT; k++) {
        d->s[k] = (const char *)ev + off[k];
        d->len[k] = used & (1u << k) ? strnlen(d->s[k], cap[k]) : 0;
        d->hash[k] = 0;
        if (d->len[k]) {
            /* The whole value's hash; a record with none (written by hand,
             * not by the producer library) is taken to hold its value whole. */
            d->hash[k] = ev->key_hash[key[k]];
            if (!d->hash[k])
                d->hash[k] = cbus_key_hash(d->s[k], d->len[k]);
        }
    }
}

static size_t build_key(unsigned group, const struct rl_dims *d, char *out)
{
    size_t n = 0;
    out[n++] = (char)group;
    for (unsigned k = 0; k < RL_DIM__COUNT; k++)
        if (group & (1u << k)) {
            out[n++] = (char)d->len[k];
            memcpy(out + n, d->s[k], d->len[k]);
            n += d->len[k];
            memcpy(out + n, &d->hash[k], 8);
            n += 8;
        }
    return n;
}

int rl_value_text(const char *s, size_t len, uint64_t hash, char *out, size_t outlen)
{
    /* A value cut by its producer shows its prefix and a short hash, so two
     * rows of the same prefix are visibly two keys. */
    if (hash && hash != cbus_key_hash(s, len))
        return snprintf(out, outlen, "%.*s\u2026#%08x", (int)len, s, (unsigned)(hash >> 32));
    return snprintf(out, outlen, "%.*s", (int)len, s);
}

void rl__key_text(const struct rl_key *k, char *out, size_t outlen)
{
    unsigned group = (unsigned char)k->key[0];
    size_t n = 0, pos = 1;
    out[0] = '\0';
    if (!group) {
        snprintf(out, outlen, "global");
        return;
    }
    for (unsigned d = 0; d < RL_DIM__COUNT; d++) {
        if (!(group & (1u << d)))
            continue;
        unsigned len = (unsigned char)k->key[pos++];
        uint64_t h;
        memcpy(&h, k->key + pos + len, 8);
        char v[CBUS_MODEL_LEN + 32];
        rl_value_text(k->key + pos, len, h, v, sizeof v);
        int w = snprintf(out + n, outlen - n, "%s%s=%s", n ? " " : "", rl_dim_name(d), v);
        pos += len + 8;
        if (w < 0 || (size_t)w >= outlen - n)
            return;
        n += (size_t)w;
    }
}

/* An LLM run's start, end or error (the kind map's family and phase);
 * its token points carry nothing a rate counts. */
static int relevant(unsigned kind)
{
    return cbus_kind_family(kind) == CBUS_FAMILY_LLM && cbus_kind_phase(kind) != CBUS_PHASE_POINT;
}

static void prepare(const rl_limiter *l, const struct cbus_event *ev, struct rl_evkeys *ek)
{
    event_dims(ev, l->dims_used, &ek->d);
    for (unsigned gi = 0; gi < l->rules.n_groups; gi++) {
        unsigned g = l->rules.groups[gi];
        size_t kl = build_key(g, &ek->d, ek->kb[gi]);
        ek->klen[gi] = (uint32_t)kl;
        ek->hash[gi] = rl_hash_bytes(ek->kb[gi], kl, g);
    }
}

enum { FIND_ONLY, CREATE_FOR_REQ, CREATE_FOR_TOK };

/* The key of the gi-th active group for these values.  Creates it when
 * `create` says what the caller is about to charge and the winning rule
 * limits it. */
static struct rl_key *get_key(rl_limiter *l, unsigned gi, const struct rl_evkeys *ek, int create)
{
    unsigned group = l->rules.groups[gi];
    const struct rl_dims *d = &ek->d;
    const char *kb = ek->kb[gi];
    size_t kl = ek->klen[gi];
    uint64_t h = ek->hash[gi];
    struct rl_key *k = rl_map_find(&l->keys, h, kb, kl);
    if (k || create == FIND_ONLY)
        return k;
    int ri = rl_rules_match(&l->rules, group, d);
    if (ri < 0)
        return NULL;
    const struct rl_rule *r = &l->rules.rule[ri];
    if (create == CREATE_FOR_TOK ? !r->tok.limit : !r->req.limit && !r->tok.limit)
        return NULL;
    int err;
    k = rl_map_insert(&l->keys, h, kb, kl, &err);
    if (!k) {
        l->st.untracked++;
        return NULL;
    }
    k->rule = (uint32_t)ri;
    l->st.keys = l->keys.count;
    if (l->st.keys > l->st.keys_peak)
        l->st.keys_peak = l->st.keys;
    return k;
}

/* rl__until() when the key is throttled at now, else 0: the common case
 * needs one multiply and no 128-bit division. */
static uint64_t until_at(rl_u128 tat, const struct rl_limit *lim, uint64_t now)
{
    if (!lim->limit)
        return 0;
    rl_u128 slack = (rl_u128)(lim->burst - 1) * RL_PERIOD_NS;
    /* ceil((tat - slack) / L) > now  <=>  tat - slack > now * L */
    if (tat <= slack || tat - slack <= (rl_u128)now * lim->limit)
        return 0;
    return rl__until(tat, lim);
}

/* After a charge: count a new throttle and ask for its verdict.  until_ns
 * is kept only while it lies ahead (0 otherwise), which every reader of it
 * treats alike: "not throttled at or after now". */
static void settle(rl_limiter *l, struct rl_key *k, const struct rl_dims *d, uint64_t now)
{
    struct rl_rule *r = &l->rules.rule[k->rule];
    uint64_t was = k->until_ns;
    uint64_t u = until_at(k->req_tat, &r->req, now), t = until_at(k->tok_tat, &r->tok, now);
    if (t > u)
        u = t;
    k->until_ns = u;
    if (u <= now)
        return;
    if (was <= now) {
        r->throttles++;
        l->st.throttles++;
    }
    if (r->publish_scope == RL_NO_PUBLISH || l->opts.count_only)
        return;
    if (r->publish_scope == CBUS_SCOPE_GLOBAL) {
        rl__want(l, CBUS_SCOPE_GLOBAL, "*", 1, cbus_key_hash("*", 1), u);
        return;
    }
    /* The admission table is keyed by the whole value's hash (as producers
     * look it up), so two values that share a cut prefix stay apart. */
    static const unsigned dim_of_scope[CBUS_SCOPE__COUNT] = {
        [CBUS_SCOPE_USER] = RL_DIM_USER, [CBUS_SCOPE_SESSION] = RL_DIM_SESSION,
        [CBUS_SCOPE_MODEL] = RL_DIM_MODEL, [CBUS_SCOPE_PROVIDER] = RL_DIM_PROVIDER,
        [CBUS_SCOPE_AGENT] = RL_DIM_AGENT, [CBUS_SCOPE_TENANT] = RL_DIM_TENANT};
    unsigned dim = dim_of_scope[r->publish_scope];
    rl__want(l, (unsigned)r->publish_scope, d->s[dim], d->len[dim], d->hash[dim], u);
}

/* ---- events ----------------------------------------------------------------- */

static uint64_t count_tokens(unsigned kind, uint64_t in, uint64_t out)
{
    return kind == RL_TOKENS_INPUT ? in : kind == RL_TOKENS_OUTPUT ? out : in + out;
}

static void on_start(rl_limiter *l, const struct cbus_event *ev, const struct rl_evkeys *ek)
{
    uint64_t now = ev->ts_mono_ns;
    uint32_t est = l->has_tpm ? ev->u.llm_start.est_input_tokens : 0;
    const struct rl_dims *d = &ek->d;
    l->st.requests++;
    if (est) {
        int err;
        struct rl_pending *p = rl_map_find(&l->pending, rl_hash_bytes(ev->run_id, 16, 0),
                                           ev->run_id, 16);
        if (!p)
            p = rl_map_insert(&l->pending, rl_hash_bytes(ev->run_id, 16, 0), ev->run_id, 16, &err);
        if (p) {
            p->est = est;
            p->ts_ns = now;
            l->st.estimated_tokens += est;
        } else {
            /* Without a record the llm_end cannot subtract the estimate:
             * do not charge it, count the request only. */
            l->st.pending_dropped++;
            est = 0;
        }
        l->st.pending = l->pending.count;
    }
    int over = 0;
    for (unsigned gi = 0; gi < l->rules.n_groups; gi++) {
        struct rl_key *k = get_key(l, gi, ek, CREATE_FOR_REQ);
        if (!k)
            continue;
        struct rl_rule *r = &l->rules.rule[k->rule];
        if (k->until_ns > now) {
            /* The event happened (the producer raced the verdict or ignored
             * it): count it against the key like any other, and note it. */
            r->over_limit++;
            k->over_limit++;
            over = 1;
        }
        if (r->req.limit) {
            gcra_charge_u(&k->req_tat, scaled(l, k, 1), &r->req, now);
            k->fleet_req += l->fleet;
        }
        if (r->tok.limit && est && r->tokens != RL_TOKENS_OUTPUT) {
            gcra_charge_u(&k->tok_tat, scaled(l, k, est), &r->tok, now);
            k->tokens += est;
            if (l->fleet)
                k->fleet_tok += est;
        }
        k->requests++;
        settle(l, k, d, now);
    }
    l->st.over_limit += (uint64_t)over;
}

/* The estimate recorded for ev's run, removed; 0 when none. */
static uint32_t take_estimate(rl_limiter *l, const struct cbus_event *ev)
{
    if (!l->pending.count)
        return 0;
    struct rl_pending *p = rl_map_find(&l->pending, rl_hash_bytes(ev->run_id, 16, 0), ev->run_id, 16);
    if (!p)
        return 0;
    uint32_t est = p->est;
    rl_map_remove(&l->pending, p);
    l->st.pending = l->pending.count;
    return est;
}

static void on_end(rl_limiter *l, const struct cbus_event *ev, const struct rl_evkeys *ek)
{
    if (!l->has_tpm)
        return;
    uint64_t now = ev->ts_mono_ns;
    uint32_t est = take_estimate(l, ev);
    const struct cbus_usage *u = &ev->u.usage;
    /* Absent is not zero: an absent input count leaves the estimate standing. */
    uint64_t in = (u->usage_present & CBUS_USAGE_INPUT) ? u->input_tokens : est;
    uint64_t out = (u->usage_present & CBUS_USAGE_OUTPUT) ? u->output_tokens : 0;
    l->st.input_tokens += in;
    l->st.output_tokens += out;
    if (in == est && out == 0)
        return; /* nothing beyond what start charged */
    for (unsigned gi = 0; gi < l->rules.n_groups; gi++) {
        struct rl_key *k = get_key(l, gi, ek, CREATE_FOR_TOK);
        if (!k)
            continue;
        const struct rl_rule *r = &l->rules.rule[k->rule];
        if (!r->tok.limit)
            continue;
        uint64_t want = count_tokens(r->tokens, in, out);
        uint64_t had = r->tokens == RL_TOKENS_OUTPUT ? 0 : est;
        if (want >= had)
            gcra_charge_u(&k->tok_tat, scaled(l, k, want - had), &r->tok, now);
        else
            gcra_refund_u(&k->tok_tat, scaled(l, k, had - want), &r->tok, now);
        if (l->fleet)
            k->fleet_tok += (int64_t)want - (int64_t)had;
        if (want >= had)
            k->tokens += want - had;
        else
            k->tokens -= had - want < k->tokens ? had - want : k->tokens;
        settle(l, k, &ek->d, now);
    }
}

static void on_error(rl_limiter *l, const struct cbus_event *ev, const struct rl_evkeys *ek)
{
    uint32_t est = take_estimate(l, ev);
    if (!est)
        return;
    /* A failed call is taken to have used no tokens: the estimate returns. */
    for (unsigned gi = 0; gi < l->rules.n_groups; gi++) {
        struct rl_key *k = get_key(l, gi, ek, FIND_ONLY);
        if (!k)
            continue;
        const struct rl_rule *r = &l->rules.rule[k->rule];
        if (!r->tok.limit || r->tokens == RL_TOKENS_OUTPUT)
            continue;
        gcra_refund_u(&k->tok_tat, scaled(l, k, est), &r->tok, ev->ts_mono_ns);
        if (l->fleet)
            k->fleet_tok -= est;
        k->tokens -= est < k->tokens ? est : k->tokens;
        k->until_ns = rl__key_until(l, k);
    }
}

static void feed_prepared(rl_limiter *l, const struct cbus_event *ev, const struct rl_evkeys *ek)
{
    if (cbus_kind_family(ev->kind) != CBUS_FAMILY_LLM)
        return;
    switch (cbus_kind_phase(ev->kind)) {
    case CBUS_PHASE_START:
        on_start(l, ev, ek);
        break;
    case CBUS_PHASE_END:
        on_end(l, ev, ek);
        break;
    case CBUS_PHASE_ERROR:
        on_error(l, ev, ek);
        break;
    default:
        break;
    }
}

void rl_feed(rl_limiter *l, const struct cbus_event *ev)
{
    l->st.events++;
    if (!relevant(ev->kind))
        return;
    prepare(l, ev, &l->scratch[0]);
    feed_prepared(l, ev, &l->scratch[0]);
}

/* Prefetches the lines of an event record the limiter reads: the header,
 * the usage, and provider through session. */
static void prefetch_event(const struct cbus_event *ev)
{
    const char *e = (const char *)ev;
    __builtin_prefetch(e);
    __builtin_prefetch(e + 128);
    __builtin_prefetch(e + 192);
    __builtin_prefetch(e + 256);
    __builtin_prefetch(e + 320);
}

void rl_feed_batch(rl_limiter *l, const struct cbus_event *evs, size_t n)
{
    /* A software pipeline over groups of RL_BATCH events.  At step b:
     *   group b+2: prefetch the event records;
     *   group b:   compute keys and hashes, prefetch their index slots;
     *   group b-1: read those slots, prefetch the entries they name;
     *   group b-2: count, in event order.
     * With 100k keys the entries live in DRAM; each prefetch gets a whole
     * group's worth of work to land, so the misses of many events overlap
     * instead of stalling one after another.  Prefetches are hints only: the
     * counting step looks everything up again (an insert may have moved
     * entries or regrown the index meanwhile). */
    const struct rl_map *m = &l->keys;
    size_t groups = (n + RL_BATCH - 1) / RL_BATCH;
    for (size_t b = 0; b < groups + 2; b++) {
        for (size_t i = (b + 2) * RL_BATCH; i < (b + 3) * RL_BATCH && i < n; i++)
            prefetch_event(&evs[i]);
        if (b < groups) {
            struct rl_evkeys *sc = &l->scratch[(b % 3) * RL_BATCH];
            for (size_t i = 0, j = b * RL_BATCH; i < RL_BATCH && j < n; i++, j++) {
                sc[i].relevant = relevant(evs[j].kind);
                if (!sc[i].relevant)
                    continue;
                prepare(l, &evs[j], &sc[i]);
                for (unsigned gi = 0; gi < l->rules.n_groups; gi++)
                    __builtin_prefetch(&m->index[sc[i].hash[gi] & m->mask]);
            }
        }
        if (b >= 1 && b - 1 < groups) {
            const struct rl_evkeys *sc = &l->scratch[((b - 1) % 3) * RL_BATCH];
            for (size_t i = 0, j = (b - 1) * RL_BATCH; i < RL_BATCH && j < n; i++, j++) {
                if (!sc[i].relevant)
                    continue;
                for (unsigned gi = 0; gi < l->rules.n_groups; gi++) {
                    /* Walk the probe run to the slot whose tag matches: the
                     * home slot often holds another key. */
                    uint64_t h = sc[i].hash[gi], v;
                    for (size_t s = h & m->mask; (v = m->index[s]) != 0; s = (s + 1) & m->mask) {
                        size_t e = (size_t)(v & 0xffffffffu);
                        if ((v >> 32) == (h >> 32) && e <= m->count) {
                            const char *ent = rl_map_at(m, e - 1);
                            /* Entries are not line-aligned (352 bytes), so
                             * the state and a user key with its 8-byte hash
                             * (key_off 96..128) may span three lines: without
                             * the third, the key compare took the DRAM miss
                             * (7.1 -> 3.2 M events/s at 100k keys). */
                            __builtin_prefetch(ent);
                            __builtin_prefetch(ent + 64);
                            __builtin_prefetch(ent + 128);
                            break;
                        }
                    }
                }
            }
        }
        if (b >= 2) {
            const struct rl_evkeys *sc = &l->scratch[((b - 2) % 3) * RL_BATCH];
            for (size_t i = 0, j = (b - 2) * RL_BATCH; i < RL_BATCH && j < n; i++, j++) {
                l->st.events++;
                if (sc[i].relevant)
                    feed_prepared(l, &evs[j], &sc[i]);
            }
        }
    }
}

/* ---- housekeeping ---------------------------------------------------------- */

void rl_expire(rl_limiter *l, uint64_t now)
{
    for (size_t i = l->keys.count; i-- > 0;) {
        struct rl_key *k = rl_map_at(&l->keys, i);
        const struct rl_rule *r = &l->rules.rule[k->rule];
        if (k->until_ns > now)
            continue;
        if (k->fleet_req || k->fleet_tok)
            continue; /* counts not yet in a batch for Redis */
        if (r->req.limit && k->req_tat > (rl_u128)now * r->req.limit)
            continue;
        if (r->tok.limit && k->tok_tat > (rl_u128)now * r->tok.limit)
            continue;
        rl_map_remove(&l->keys, k);
        l->st.keys_expired++;
    }
    for (size_t i = l->pending.count; i-- > 0;) {
        struct rl_pending *p = rl_map_at(&l->pending, i);
        if (now > p->ts_ns && now - p->ts_ns > l->opts.pending_ttl_ns) {
            rl_map_remove(&l->pending, p);
            l->st.pending_expired++;
        }
    }
    rl_map_compact(&l->keys);
    rl_map_compact(&l->pending);
    l->st.keys = l->keys.count;
    l->st.pending = l->pending.count;
}

int rl_check(const rl_limiter *l, const struct cbus_event *ev, uint64_t now,
             uint64_t *retry_after_ns)
{
    struct rl_evkeys eks, *ek = &eks; /* 4 KB of stack */
    prepare(l, ev, ek);
    uint64_t worst = 0;
    for (unsigned gi = 0; gi < l->rules.n_groups; gi++) {
        struct rl_key *k = get_key((rl_limiter *)l, gi, ek, FIND_ONLY);
        if (k && k->until_ns > now && k->until_ns - now > worst)
            worst = k->until_ns - now;
    }
    if (retry_after_ns)
        *retry_after_ns = worst;
    return worst ? CBUS_THROTTLED : CBUS_ALLOW;
}

void rl_get_stats(const rl_limiter *l, struct rl_stats *out)
{
    *out = l->st;
}

/* ---- fleet mode ----------------------------------------------------------------- */

void rl_set_fleet(rl_limiter *l, double local_share)
{
    if (!(local_share > 0.0) || local_share > 1.0)
        local_share = 1.0;
    l->fleet = 1;
    l->share_milli = (uint64_t)(local_share * 1000.0 + 0.5);
    if (l->share_milli < 1)
        l->share_milli = 1;
    l->lease_scale_milli = (1000000 + l->share_milli / 2) / l->share_milli;
    if (l->lease_scale_milli < 1000)
        l->lease_scale_milli = 1000;
    rl_set_fleet_away(l, 1);
}

void rl_set_fleet_away(rl_limiter *l, int away)
{
    if (!l->fleet)
        return;
    l->scale_milli = away ? l->lease_scale_milli : 1000;
}

/* The key's values back from its bytes (build_key's layout). */
static void key_dims(const struct rl_key *k, struct rl_dims *d)
{
    unsigned group = (unsigned char)k->key[0];
    size_t pos = 1;
    memset(d, 0, sizeof *d);
    for (unsigned i = 0; i < RL_DIM__COUNT; i++) {
        if (!(group & (1u << i)))
            continue;
        size_t len = (unsigned char)k->key[pos++];
        d->s[i] = k->key + pos;
        d->len[i] = len;
        memcpy(&d->hash[i], k->key + pos + len, 8);
        pos += len + 8;
    }
}

static rl_u128 fleet_tat(uint64_t debt_ns, int64_t unsent, const rl_limiter *l,
                         const struct rl_limit *lim, uint64_t now)
{
    rl_u128 now_s = (rl_u128)now * lim->limit;
    rl_u128 debt = (rl_u128)debt_ns * lim->limit;
    rl_u128 slack = (rl_u128)(lim->burst - 1) * RL_PERIOD_NS;
    /* The room the fleet has left; this node may use share of it until
     * the next sync, the rest is the others' (a lease).  Room for one
     * unit is always left while the fleet is within its burst, so a lease
     * rounds up to a whole unit: N nodes can go N - 1 units over. */
    rl_u128 room = slack > debt ? slack - debt : 0;
    rl_u128 reserve = room / 1000 * (1000 - l->share_milli) + room % 1000 * (1000 - l->share_milli) / 1000;
    rl_u128 t = now_s + debt + reserve;
    if (unsent > 0) /* counted here after the batch the reply answers */
        t += (rl_u128)unsent * RL_PERIOD_NS;
    return t;
}

void rl__fleet_set(rl_limiter *l, struct rl_key *k, uint64_t req_debt_ns, uint64_t tok_debt_ns,
                   uint64_t now)
{
    const struct rl_rule *r = &l->rules.rule[k->rule];
    /* A debt longer than a day is nonsense from the wire (or a key so far
     * over that a day is as good): cap it, so the arithmetic stays small. */
    if (req_debt_ns > RL_PERIOD_NS * 1440)
        req_debt_ns = RL_PERIOD_NS * 1440;
    if (tok_debt_ns > RL_PERIOD_NS * 1440)
        tok_debt_ns = RL_PERIOD_NS * 1440;
    if (r->req.limit)
        k->req_tat = fleet_tat(req_debt_ns, k->fleet_req, l, &r->req, now);
    if (r->tok.limit)
        k->tok_tat = fleet_tat(tok_debt_ns, k->fleet_tok, l, &r->tok, now);
    k->fleet_synced = 1;
    struct rl_dims d;
    key_dims(k, &d);
    settle(l, k, &d, now);
}
