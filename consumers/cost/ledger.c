#include "ledger.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const cost_tok_names[COST_TOK__COUNT] = {
    "input", "output", "cache_read", "cache_creation", "reasoning",
};

/* usage_present bits line up with enum cost_tok, so a bit test is a shift. */
static_assert(CBUS_USAGE_INPUT == 1u << COST_TOK_INPUT, "usage bits");
static_assert(CBUS_USAGE_OUTPUT == 1u << COST_TOK_OUTPUT, "usage bits");
static_assert(CBUS_USAGE_CACHE_READ == 1u << COST_TOK_CACHE_READ, "usage bits");
static_assert(CBUS_USAGE_CACHE_CREATION == 1u << COST_TOK_CACHE_CREATION, "usage bits");
static_assert(CBUS_USAGE_REASONING == 1u << COST_TOK_REASONING, "usage bits");
#define TOKEN_BITS 0x1fu

void cost_key_str(char *out, size_t outlen, const char *key, size_t field_len)
{
    size_t n = strnlen(key, field_len);
    if (n >= outlen)
        n = outlen - 1;
    memcpy(out, key, n);
    out[n] = '\0';
}

void cost_key_make(char *key, size_t field_len, const char *value)
{
    size_t n = strlen(value);
    memset(key, 0, field_len);
    memcpy(key, value, n < field_len - 1 ? n : field_len - 1);
    uint64_t h = cbus_key_hash(value, n);
    memcpy(key + field_len, &h, 8);
}

void cost_key_show(char *out, size_t outlen, const char *field, size_t field_len, uint64_t hash)
{
    size_t n = strnlen(field, field_len);
    if (hash && hash != cbus_key_hash(field, n))
        snprintf(out, outlen, "%.*s\u2026#%08x", (int)n, field, (unsigned)(hash >> 32));
    else
        snprintf(out, outlen, "%.*s", (int)n, field);
}

int cost_ledger_init(struct cost_ledger *l, const struct cost_price_table *prices,
                     const struct cost_budget_set *budgets, const struct cost_ledger_opts *opts)
{
    memset(l, 0, sizeof *l);
    l->prices = prices;
    if (budgets)
        l->budgets = *budgets;
    size_t mm = opts && opts->max_models ? opts->max_models : 10000;
    size_t mu = opts && opts->max_users ? opts->max_users : 100000;
    size_t ms = opts && opts->max_sessions ? opts->max_sessions : 100000;
    size_t ma = opts && opts->max_agents ? opts->max_agents : 10000;
    size_t mt = opts && opts->max_tenants ? opts->max_tenants : 10000;
    int r = cost_ktab_init(&l->models, COST_MODEL_KEY, sizeof(struct cost_model), mm);
    if (!r)
        r = cost_ktab_init(&l->users, COST_USER_KEY, sizeof(struct cost_user), mu);
    if (!r)
        r = cost_ktab_init(&l->sessions, COST_SESSION_KEY, sizeof(struct cost_session), ms);
    if (!r)
        r = cost_ktab_init(&l->agents, COST_AGENT_KEY, sizeof(struct cost_user), ma);
    if (!r)
        r = cost_ktab_init(&l->tenants, COST_TENANT_KEY, sizeof(struct cost_user), mt);
    if (!r)
        r = cost_scores_init(&l->scores, opts && opts->max_scores ? opts->max_scores : 100000);
    if (r) {
        cost_ledger_free(l);
        return r;
    }
    l->global_b.next_pico = 0; /* the first priced event starts the period */
    return 0;
}

void cost_ledger_free(struct cost_ledger *l)
{
    cost_ktab_free(&l->models);
    cost_ktab_free(&l->users);
    cost_ktab_free(&l->sessions);
    cost_ktab_free(&l->agents);
    cost_ktab_free(&l->tenants);
    cost_scores_free(&l->scores);
}

/* ---- budgets --------------------------------------------------------------- */

/* The budget of the entity whose whole value hashes to whole (0: no id,
 * nobody to hold to a budget).  Configured ids match by cbus_key_hash of the
 * whole id, so an id longer than the event field has its own budget. */
static const struct cost_budget *budget_for(const struct cost_budget_set *s, unsigned scope,
                                            uint64_t whole)
{
    if (!whole)
        return NULL;
    for (size_t i = 0; i < s->n; i++)
        if (s->list[i].scope == scope && strcmp(s->list[i].key, "*") &&
            s->list[i].key_hash == whole)
            return &s->list[i];
    switch (scope) {
    case COST_SCOPE_USER: return s->user_default;
    case COST_SCOPE_SESSION: return s->session_default;
    case COST_SCOPE_AGENT: return s->agent_default;
    case COST_SCOPE_TENANT: return s->tenant_default;
    default: return NULL;
    }
}

static void budget_next(const struct cost_budget *b, struct cost_budget_state *st)
{
    st->next_pico = COST_U128_MAX;
    if (!b)
        return;
    for (unsigned i = 0; i < b->n_marks; i++)
        if (!(st->fired & (1u << i))) {
            st->next_pico = b->marks[i].pico;
            return;
        }
}

/* An entity's names for alerts: as shown, and its admission-table key (the
 * field's bytes for display, the whole value's hash to match on). */
struct who {
    char shown[COST_SHOW_MAX];
    char admit[CBUS_MODEL_LEN + 1];
    uint64_t admit_hash;
};

static void who_of(struct who *w, const char *key, size_t field_len)
{
    if (field_len == 0) { /* global */
        snprintf(w->shown, sizeof w->shown, "*");
        snprintf(w->admit, sizeof w->admit, "*");
        w->admit_hash = cbus_key_hash("*", 1);
        return;
    }
    w->admit_hash = cost_key_whole_hash(key, field_len);
    cost_key_show(w->shown, sizeof w->shown, key, field_len, w->admit_hash);
    cost_key_str(w->admit, sizeof w->admit, key, field_len);
}

static void emit(struct cost_ledger *l, enum cost_alert_kind kind, unsigned scope,
                 const struct who *w, const struct cost_budget *b,
                 const struct cost_budget_state *st, unsigned mark)
{
    if (!l->on_alert)
        return;
    struct cost_alert a = {
        .kind = kind,
        .scope = scope,
        .key = w->shown,
        .admit_key = w->admit,
        .admit_hash = w->admit_hash,
        .pct = kind == COST_ALERT_RESET ? 0 : b->marks[mark].pct,
        .spent_pico = st->spent_pico,
        .limit_pico = b->limit_pico,
        .mark_pico = kind == COST_ALERT_RESET ? 0 : b->marks[mark].pico,
        .budget = b,
        .period_start_day = st->period_start_day,
        .period_end_day = st->period_end_day,
    };
    l->on_alert(l->alert_arg, &a);
}

/* Starts the period containing day.  An exceeded budget is reported as
 * reset (with the spend of the period that ended) so its verdict is cleared. */
static void budget_roll(struct cost_ledger *l, const struct cost_budget *b,
                        struct cost_budget_state *st, uint64_t day, unsigned scope,
                        const struct who *w)
{
    if (st->period_end_day != 0 && st->exceeded)
        emit(l, COST_ALERT_RESET, scope, w, b, st, 0);
    st->spent_pico = 0;
    st->fired = 0;
    st->exceeded = 0;
    if (b->period_days) {
        st->period_start_day = day - day % b->period_days;
        st->period_end_day = st->period_start_day + b->period_days;
    } else {
        st->period_start_day = 0;
        st->period_end_day = UINT64_MAX;
    }
    budget_next(b, st);
}

static void budget_cross(struct cost_ledger *l, const struct cost_budget *b,
                         struct cost_budget_state *st, unsigned scope, const struct who *w)
{
    for (unsigned i = 0; i < b->n_marks; i++) {
        if (st->fired & (1u << i))
            continue;
        if (st->spent_pico < b->marks[i].pico)
            break; /* ascending: nothing further is reached either */
        st->fired |= 1u << i;
        enum cost_alert_kind k = COST_ALERT_THRESHOLD;
        if (b->marks[i].kind == COST_MARK_SOFT)
            k = COST_ALERT_SOFT;
        if (b->marks[i].kind == COST_MARK_LIMIT) {
            k = COST_ALERT_EXCEEDED;
            st->exceeded = 1;
        }
        emit(l, k, scope, w, b, st, i);
    }
    budget_next(b, st);
}

/* key: a table key of field_len shown bytes and the hash (field_len 0:
 * the global budget). */
static inline void budget_add(struct cost_ledger *l, const struct cost_budget *b,
                              struct cost_budget_state *st, cost_u128 cost, uint64_t day,
                              unsigned scope, const char *key, size_t field_len)
{
    struct who w;
    if (day >= st->period_end_day) {
        who_of(&w, key, field_len);
        budget_roll(l, b, st, day, scope, &w);
    } else if (day < st->period_start_day) {
        l->an.late_events++; /* counted in the current period: periods only move forward */
    }
    st->spent_pico += cost;
    if (l->on_spend && cost)
        l->on_spend(l->spend_arg, scope, key, field_len, b, st, cost);
    if (st->spent_pico >= st->next_pico) {
        who_of(&w, key, field_len);
        budget_cross(l, b, st, scope, &w);
    }
}

/* ---- accounting -------------------------------------------------------------- */

cost_u128 cost_usage_cost(const struct cost_price *p, const struct cbus_usage *u,
                          struct cost_anomalies *an)
{
    /* the arithmetic is shared with cbus-export (consumers/events/prices.c) */
    unsigned anom = 0;
    cost_u128 v = cost_usage_price(p, u, NULL, &anom);
    if (an) {
        an->cache_exceeds_input += !!(anom & COST_ANOM_CACHE_EXCEEDS_INPUT);
        an->reasoning_exceeds_output += !!(anom & COST_ANOM_REASONING_EXCEEDS_OUTPUT);
    }
    return v;
}

static inline void minute_add(struct cost_counters *c, uint64_t minute, uint64_t tokens)
{
    if (minute > c->minute) {
        int adjacent = minute == c->minute + 1;
        c->prev_req = adjacent ? c->cur_req : 0;
        c->prev_tok = adjacent ? c->cur_tok : 0;
        c->cur_req = c->cur_tok = 0;
        c->minute = minute;
    }
    /* An older minute (late event) is counted in the current one. */
    c->cur_req++;
    c->cur_tok += tokens;
}

struct end_usage {
    uint64_t tok[COST_TOK__COUNT];
    unsigned pres;
    cost_u128 cost;
    int priced;
    uint64_t ts, minute, rate_tokens;
};

static inline void counters_end(struct cost_counters *c, const struct end_usage *e)
{
    c->requests++;
    c->usage_missing += (e->pres & TOKEN_BITS) == 0;
    for (unsigned f = 0; f < COST_TOK__COUNT; f++) {
        c->tokens[f] += e->tok[f];
        c->reported[f] += (e->pres >> f) & 1u;
    }
    c->cost_pico += e->cost;
    c->unpriced += !e->priced;
    if (e->ts > c->last_ts_ns)
        c->last_ts_ns = e->ts;
    minute_add(c, e->minute, e->rate_tokens);
}

static inline void counters_error(struct cost_counters *c, uint64_t ts, uint64_t minute)
{
    c->errors++;
    if (ts > c->last_ts_ns)
        c->last_ts_ns = ts;
    minute_add(c, minute, 0);
}

static inline void latency_add(struct cost_latency *lat, const struct cbus_usage *u)
{
    if (u->usage_present & CBUS_USAGE_DURATION)
        cost_hist_record(&lat->duration, u->duration_ns, COST_HIST_DURATION);
    if (u->usage_present & CBUS_USAGE_TTFT)
        cost_hist_record(&lat->ttft, u->ttft_ns, COST_HIST_TTFT);
}

static void resolve_price(struct cost_ledger *l, struct cost_model *m, const char *mkey)
{
    char provider[CBUS_PROVIDER_LEN + 1], model[CBUS_MODEL_LEN + 1];
    cost_key_str(provider, sizeof provider, mkey, CBUS_PROVIDER_LEN);
    cost_key_str(model, sizeof model, mkey + CBUS_PROVIDER_LEN, CBUS_MODEL_LEN);
    const char *why = NULL;
    m->price = cost_prices_lookup(l->prices, provider, model, &why);
    m->resolved = 1;
    if (!m->price && l->on_unpriced)
        l->on_unpriced(l->unpriced_arg, provider, model, why);
}

/* An event's table keys and their hashes, computed once per event. */
struct prep {
    char mkey[COST_MODEL_KEY];
    char ukey[COST_USER_KEY];
    char skey[COST_SESSION_KEY];
    char akey[COST_AGENT_KEY];
    char tkey[COST_TENANT_KEY];
    uint64_t mh, uh, sh, ah, th;
    int has_session, has_agent, has_tenant;
};

/* The whole value's hash of key k: the producer's, or for a record with
 * none (written by hand, not by the producer library) the shown bytes',
 * taking them to be the whole value. */
static inline uint64_t whole_hash(const struct cbus_event *ev, unsigned k, const char *shown,
                                  size_t field_len)
{
    uint64_t h = ev->key_hash[k];
    if (!h && shown[0])
        h = cbus_key_hash(shown, strnlen(shown, field_len));
    return h;
}

/* field (field_len bytes) and its whole hash into key; returns the hash. */
static inline void key_with_hash(char *key, const char *field, size_t field_len,
                                 const struct cbus_event *ev, unsigned k)
{
    cost_key_set(key, field_len, field, field_len);
    uint64_t h = whole_hash(ev, k, key, field_len);
    memcpy(key + field_len, &h, 8);
}

static inline void prep_keys(struct prep *p, const struct cbus_event *ev)
{
    cost_key_set(p->mkey, CBUS_PROVIDER_LEN, ev->provider, sizeof ev->provider);
    cost_key_set(p->mkey + CBUS_PROVIDER_LEN, CBUS_MODEL_LEN, ev->model, sizeof ev->model);
    uint64_t ph = whole_hash(ev, CBUS_KEY_PROVIDER, p->mkey, CBUS_PROVIDER_LEN);
    uint64_t mh = whole_hash(ev, CBUS_KEY_MODEL, p->mkey + CBUS_PROVIDER_LEN, CBUS_MODEL_LEN);
    memcpy(p->mkey + COST_MODEL_PH, &ph, 8);
    memcpy(p->mkey + COST_MODEL_MH, &mh, 8);
    key_with_hash(p->ukey, ev->user, CBUS_USER_LEN, ev, CBUS_KEY_USER);
    p->mh = cost_key_hash(p->mkey, sizeof p->mkey);
    p->uh = cost_key_hash(p->ukey, sizeof p->ukey);
    p->has_session = ev->session[0] != 0;
    if (p->has_session) {
        key_with_hash(p->skey, ev->session, CBUS_SESSION_LEN, ev, CBUS_KEY_SESSION);
        p->sh = cost_key_hash(p->skey, sizeof p->skey);
    }
    p->has_agent = ev->agent[0] != 0;
    if (p->has_agent) {
        key_with_hash(p->akey, ev->agent, CBUS_AGENT_LEN, ev, CBUS_KEY_AGENT);
        p->ah = cost_key_hash(p->akey, sizeof p->akey);
    }
    p->has_tenant = ev->tenant[0] != 0;
    if (p->has_tenant) {
        key_with_hash(p->tkey, ev->tenant, CBUS_TENANT_LEN, ev, CBUS_KEY_TENANT);
        p->th = cost_key_hash(p->tkey, sizeof p->tkey);
    }
}

static struct cost_model *model_get(struct cost_ledger *l, const struct prep *p)
{
    long i = cost_ktab_find(&l->models, p->mkey, p->mh);
    if (i < 0)
        i = cost_ktab_insert(&l->models, p->mkey, p->mh);
    if (i < 0) {
        l->an.models_overflow++;
        return &l->model_overflow; /* never resolved: its events are unpriced */
    }
    struct cost_model *m = cost_ktab_val_at(&l->models, (size_t)i);
    if (!m->resolved)
        resolve_price(l, m, p->mkey);
    return m;
}

static struct cost_user *user_get(struct cost_ledger *l, const struct prep *p, const char **key)
{
    long i = cost_ktab_find(&l->users, p->ukey, p->uh);
    int created = 0;
    if (i < 0) {
        i = cost_ktab_insert(&l->users, p->ukey, p->uh);
        created = 1;
    }
    if (i < 0) {
        l->an.users_overflow++;
        *key = NULL;
        return &l->user_overflow;
    }
    struct cost_user *u = cost_ktab_val_at(&l->users, (size_t)i);
    *key = cost_ktab_key_at(&l->users, (size_t)i);
    if (created)
        u->budget = budget_for(&l->budgets, COST_SCOPE_USER,
                               p->ukey[0] ? cost_key_whole_hash(p->ukey, CBUS_USER_LEN) : 0);
    return u;
}

/* An agent's or tenant's row (NULL: the event has none). */
static struct cost_user *group_get(struct cost_ledger *l, struct cost_ktab *t, const char *k,
                                   uint64_t h, size_t field_len, unsigned scope,
                                   uint64_t *overflow, struct cost_user *overflow_row,
                                   const char **key)
{
    *key = NULL;
    long i = cost_ktab_find(t, k, h);
    int created = 0;
    if (i < 0) {
        i = cost_ktab_insert(t, k, h);
        created = 1;
    }
    if (i < 0) {
        (*overflow)++;
        return overflow_row;
    }
    struct cost_user *g = cost_ktab_val_at(t, (size_t)i);
    *key = cost_ktab_key_at(t, (size_t)i);
    if (created)
        g->budget = budget_for(&l->budgets, scope, cost_key_whole_hash(k, field_len));
    return g;
}

static struct cost_session *session_get(struct cost_ledger *l, const struct prep *p,
                                        const char **key)
{
    *key = NULL;
    if (!p->has_session)
        return NULL; /* sessions are optional: no row for "none" */
    long i = cost_ktab_find(&l->sessions, p->skey, p->sh);
    int created = 0;
    if (i < 0) {
        i = cost_ktab_insert(&l->sessions, p->skey, p->sh);
        created = 1;
    }
    if (i < 0) {
        l->an.sessions_overflow++;
        return NULL;
    }
    struct cost_session *s = cost_ktab_val_at(&l->sessions, (size_t)i);
    *key = cost_ktab_key_at(&l->sessions, (size_t)i);
    if (created)
        s->budget = budget_for(&l->budgets, COST_SCOPE_SESSION,
                               cost_key_whole_hash(p->skey, CBUS_SESSION_LEN));
    return s;
}

#define KEY_FLAGS (CBUS_TRUNC_PROVIDER | CBUS_TRUNC_MODEL | CBUS_TRUNC_USER | CBUS_TRUNC_SESSION | \
                   CBUS_TRUNC_AGENT | CBUS_TRUNC_TENANT)

/* An LLM run's end (usage) or error: the kind map's family and phase. */
static inline int accountable_kind(unsigned kind)
{
    enum cbus_kind_phase ph = cbus_kind_phase(kind);
    return cbus_kind_family(kind) == CBUS_FAMILY_LLM &&
           (ph == CBUS_PHASE_END || ph == CBUS_PHASE_ERROR);
}

static inline int accountable(const struct cbus_event *ev)
{
    return accountable_kind(ev->kind);
}

uint64_t cost_ledger_needed_kinds(void)
{
    uint64_t m = CBUS_KIND_BIT(CBUS_EV_SCORE);
    for (unsigned k = 1; k < CBUS_EV__COUNT; k++)
        if (accountable_kind(k))
            m |= CBUS_KIND_BIT(k);
    return m;
}

void cost_ledger_set_position(struct cost_ledger *l, const struct cbus_position *p)
{
    l->pos = *p;
    if (l->pos.lanes == 0 || l->pos.lanes > CBUS_MAX_LANES ||
        (l->pos.lanes & (l->pos.lanes - 1)))
        l->pos = (struct cbus_position){.lanes = 1};
    l->cursor = 0;
    for (unsigned i = 0; i < l->pos.lanes; i++)
        l->cursor += l->pos.pos[i];
}

/* Moves the ledger's position past ev; 0 when ev was applied before (its
 * lane position is behind the saved one). */
static int advance_position(struct cost_ledger *l, const struct cbus_event *ev)
{
    /* The event id names its lane (id = lane position * lanes + lane). */
    unsigned lanes = l->pos.lanes ? l->pos.lanes : 1;
    unsigned lane = (unsigned)(ev->event_id & (lanes - 1));
    uint64_t lp = ev->event_id / lanes;
    if (lp < l->pos.pos[lane]) {
        l->an.duplicate_events++;
        return 0;
    }
    l->cursor += lp + 1 - l->pos.pos[lane];
    l->pos.pos[lane] = lp + 1;
    l->events++;
    return 1;
}

static void apply_score(struct cost_ledger *l, const struct cbus_event *ev, const struct prep *p)
{
    /* The name is not a key the producer hashes: its shown bytes are it. */
    char nk[COST_SCORE_NAME_KEY];
    cost_key_set(nk, CBUS_NAME_LEN, ev->name, sizeof ev->name);
    uint64_t nh = cbus_key_hash(nk, strnlen(nk, CBUS_NAME_LEN));
    memcpy(nk + CBUS_NAME_LEN, &nh, 8);
    cost_scores_apply(&l->scores, ev, nk, p->mkey, p->has_agent ? p->akey : NULL);
}

/* The entries one accountable event counts in, and their keys (NULL: an
 * overflow entry, which has no budget).  Each table is touched once per
 * event, so a pointer into one table stays valid while the next inserts. */
struct targets {
    struct cost_model *m;
    struct cost_user *u, *ag, *tn; /* ag, tn: NULL without an agent, tenant */
    struct cost_session *s;        /* NULL without a session */
    const char *ukey, *skey, *akey, *tkey;
};

static void get_targets(struct cost_ledger *l, const struct prep *p, struct targets *t)
{
    t->m = model_get(l, p);
    t->u = user_get(l, p, &t->ukey);
    t->s = session_get(l, p, &t->skey);
    t->akey = t->tkey = NULL;
    t->ag = p->has_agent ? group_get(l, &l->agents, p->akey, p->ah, CBUS_AGENT_LEN, COST_SCOPE_AGENT,
                                     &l->an2.agents_overflow, &l->agent_overflow, &t->akey)
                         : NULL;
    t->tn = p->has_tenant ? group_get(l, &l->tenants, p->tkey, p->th, CBUS_TENANT_LEN, COST_SCOPE_TENANT,
                                      &l->an2.tenants_overflow, &l->tenant_overflow, &t->tkey)
                          : NULL;
}

static void end_usage_of(struct end_usage *e, const struct cbus_usage *us, const struct cost_model *m,
                         struct cost_ledger *l, uint64_t ts, uint64_t minute)
{
    e->pres = us->usage_present;
    e->tok[COST_TOK_INPUT] = e->pres & CBUS_USAGE_INPUT ? us->input_tokens : 0;
    e->tok[COST_TOK_OUTPUT] = e->pres & CBUS_USAGE_OUTPUT ? us->output_tokens : 0;
    e->tok[COST_TOK_CACHE_READ] = e->pres & CBUS_USAGE_CACHE_READ ? us->cache_read_tokens : 0;
    e->tok[COST_TOK_CACHE_CREATION] = e->pres & CBUS_USAGE_CACHE_CREATION ? us->cache_creation_tokens : 0;
    e->tok[COST_TOK_REASONING] = e->pres & CBUS_USAGE_REASONING ? us->reasoning_tokens : 0;
    e->cost = cost_usage_cost(m->price, us, &l->an);
    e->priced = m->price != NULL;
    e->ts = ts;
    e->minute = minute;
    e->rate_tokens = e->tok[COST_TOK_INPUT] + e->tok[COST_TOK_OUTPUT];
}

/* An end's cost into every budget that covers it. */
static void add_budgets(struct cost_ledger *l, const struct targets *t, uint64_t cost, uint64_t ts)
{
    uint64_t day = ts / COST_DAY_NS;
    if (l->budgets.global)
        budget_add(l, l->budgets.global, &l->global_b, cost, day, COST_SCOPE_GLOBAL, "*", 0);
    if (t->u->budget && t->ukey)
        budget_add(l, t->u->budget, &t->u->b, cost, day, COST_SCOPE_USER, t->ukey, CBUS_USER_LEN);
    if (t->s && t->s->budget)
        budget_add(l, t->s->budget, &t->s->b, cost, day, COST_SCOPE_SESSION, t->skey, CBUS_SESSION_LEN);
    if (t->ag && t->ag->budget && t->akey)
        budget_add(l, t->ag->budget, &t->ag->b, cost, day, COST_SCOPE_AGENT, t->akey, CBUS_AGENT_LEN);
    if (t->tn && t->tn->budget && t->tkey)
        budget_add(l, t->tn->budget, &t->tn->b, cost, day, COST_SCOPE_TENANT, t->tkey, CBUS_TENANT_LEN);
}

/* p holds ev's keys when ev is accountable. */
static void apply_one(struct cost_ledger *l, const struct cbus_event *ev, const struct prep *p)
{
    if (!advance_position(l, ev))
        return;
    if (ev->kind == CBUS_EV_SCORE) {
        apply_score(l, ev, p);
        return;
    }
    if (!accountable(ev))
        return;

    uint64_t ts = ev->ts_realtime_ns;
    uint64_t minute = ts / COST_MINUTE_NS;
    l->an.truncated_keys += (ev->flags & KEY_FLAGS) != 0;
    struct targets t;
    get_targets(l, p, &t);
    struct cost_counters *opt[3] = {t.s ? &t.s->c : NULL, t.ag ? &t.ag->c : NULL, t.tn ? &t.tn->c : NULL};

    if (cbus_kind_phase(ev->kind) == CBUS_PHASE_ERROR) {
        counters_error(&l->total, ts, minute);
        counters_error(&t.m->c, ts, minute);
        counters_error(&t.u->c, ts, minute);
        for (int i = 0; i < 3; i++)
            if (opt[i])
                counters_error(opt[i], ts, minute);
        return;
    }

    const struct cbus_usage *us = &ev->u.usage;
    struct end_usage e;
    end_usage_of(&e, us, t.m, l, ts, minute);
    counters_end(&l->total, &e);
    counters_end(&t.m->c, &e);
    counters_end(&t.u->c, &e);
    latency_add(&l->total_lat, us);
    latency_add(&t.m->lat, us);
    for (int i = 0; i < 3; i++)
        if (opt[i])
            counters_end(opt[i], &e);
    if (e.cost)
        add_budgets(l, &t, e.cost, ts); /* budgets only move on money; periods also move in tick() */
}

void cost_ledger_apply(struct cost_ledger *l, const struct cbus_event *ev)
{
    struct prep p;
    if (accountable(ev) || ev->kind == CBUS_EV_SCORE)
        prep_keys(&p, ev);
    apply_one(l, ev, &p);
}

/* A software pipeline that prefetched table slots, entries and histogram
 * buckets two events ahead was measured here and was no faster (the 1,000
 * users and 200 models mostly stay in L2/L3): the batch is a plain loop. */
void cost_ledger_apply_batch(struct cost_ledger *l, const struct cbus_event *evs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        cost_ledger_apply(l, &evs[i]);
}

static void tick_state(struct cost_ledger *l, const struct cost_budget *b,
                       struct cost_budget_state *st, uint64_t day, unsigned scope, const char *key,
                       size_t field_len)
{
    if (!b || st->period_end_day == 0 || day < st->period_end_day)
        return;
    struct who w;
    who_of(&w, key, field_len);
    budget_roll(l, b, st, day, scope, &w);
}

void cost_ledger_tick(struct cost_ledger *l, uint64_t now_realtime_ns)
{
    uint64_t day = now_realtime_ns / COST_DAY_NS;
    tick_state(l, l->budgets.global, &l->global_b, day, COST_SCOPE_GLOBAL, "*", 0);
    for (size_t i = 0; i < l->users.n; i++) {
        struct cost_user *u = cost_ktab_val_at(&l->users, i);
        tick_state(l, u->budget, &u->b, day, COST_SCOPE_USER, cost_ktab_key_at(&l->users, i),
                   CBUS_USER_LEN);
    }
    for (size_t i = 0; i < l->sessions.n; i++) {
        struct cost_session *s = cost_ktab_val_at(&l->sessions, i);
        tick_state(l, s->budget, &s->b, day, COST_SCOPE_SESSION,
                   cost_ktab_key_at(&l->sessions, i), CBUS_SESSION_LEN);
    }
    for (size_t i = 0; i < l->agents.n; i++) {
        struct cost_user *a = cost_ktab_val_at(&l->agents, i);
        tick_state(l, a->budget, &a->b, day, COST_SCOPE_AGENT, cost_ktab_key_at(&l->agents, i),
                   CBUS_AGENT_LEN);
    }
    for (size_t i = 0; i < l->tenants.n; i++) {
        struct cost_user *t = cost_ktab_val_at(&l->tenants, i);
        tick_state(l, t->budget, &t->b, day, COST_SCOPE_TENANT, cost_ktab_key_at(&l->tenants, i),
                   CBUS_TENANT_LEN);
    }
}

static int session_expired(const void *key, void *val, void *arg)
{
    (void)key;
    const struct cost_session *s = val;
    return !s->b.exceeded && s->c.last_ts_ns < *(const uint64_t *)arg;
}

size_t cost_ledger_expire_sessions(struct cost_ledger *l, uint64_t cutoff_realtime_ns)
{
    return cost_ktab_remove_if(&l->sessions, session_expired, &cutoff_realtime_ns);
}

static void rebind_state(const struct cost_budget *b, struct cost_budget_state *st)
{
    if (!b) {
        st->exceeded = 0;
        st->next_pico = COST_U128_MAX;
        return;
    }
    /* A verdict stands only while the (possibly new) limit is still reached. */
    if (st->exceeded && st->spent_pico < b->limit_pico)
        st->exceeded = 0;
    budget_next(b, st);
    if (st->period_end_day == 0)
        st->next_pico = 0; /* not started: the first priced event starts it */
}

void cost_ledger_rebind(struct cost_ledger *l)
{
    rebind_state(l->budgets.global, &l->global_b);
    for (size_t i = 0; i < l->models.n; i++) {
        struct cost_model *m = cost_ktab_val_at(&l->models, i);
        resolve_price(l, m, cost_ktab_key_at(&l->models, i));
    }
    for (size_t i = 0; i < l->users.n; i++) {
        struct cost_user *u = cost_ktab_val_at(&l->users, i);
        const char *k = cost_ktab_key_at(&l->users, i);
        u->budget = budget_for(&l->budgets, COST_SCOPE_USER,
                               k[0] ? cost_key_whole_hash(k, CBUS_USER_LEN) : 0);
        rebind_state(u->budget, &u->b);
    }
    for (size_t i = 0; i < l->sessions.n; i++) {
        struct cost_session *se = cost_ktab_val_at(&l->sessions, i);
        se->budget = budget_for(&l->budgets, COST_SCOPE_SESSION,
                                cost_key_whole_hash(cost_ktab_key_at(&l->sessions, i),
                                                    CBUS_SESSION_LEN));
        rebind_state(se->budget, &se->b);
    }
    for (size_t i = 0; i < l->agents.n; i++) {
        struct cost_user *a = cost_ktab_val_at(&l->agents, i);
        a->budget = budget_for(&l->budgets, COST_SCOPE_AGENT,
                               cost_key_whole_hash(cost_ktab_key_at(&l->agents, i),
                                                   CBUS_AGENT_LEN));
        rebind_state(a->budget, &a->b);
    }
    for (size_t i = 0; i < l->tenants.n; i++) {
        struct cost_user *t = cost_ktab_val_at(&l->tenants, i);
        t->budget = budget_for(&l->budgets, COST_SCOPE_TENANT,
                               cost_key_whole_hash(cost_ktab_key_at(&l->tenants, i),
                                                   CBUS_TENANT_LEN));
        rebind_state(t->budget, &t->b);
    }
}

void cost_ledger_each_exceeded(struct cost_ledger *l,
                               void (*fn)(void *arg, unsigned scope, const char *key,
                                          uint64_t key_hash,
                                          const struct cost_budget_state *st,
                                          const struct cost_budget *b),
                               void *arg)
{
    if (l->budgets.global && l->global_b.exceeded)
        fn(arg, COST_SCOPE_GLOBAL, "*", cbus_key_hash("*", 1), &l->global_b, l->budgets.global);
    char k[CBUS_MODEL_LEN + 1];
    for (size_t i = 0; i < l->users.n; i++) {
        struct cost_user *u = cost_ktab_val_at(&l->users, i);
        if (!u->b.exceeded || !u->budget)
            continue;
        const char *key = cost_ktab_key_at(&l->users, i);
        cost_key_str(k, sizeof k, key, CBUS_USER_LEN);
        fn(arg, COST_SCOPE_USER, k, cost_key_whole_hash(key, CBUS_USER_LEN), &u->b, u->budget);
    }
    for (size_t i = 0; i < l->sessions.n; i++) {
        struct cost_session *s = cost_ktab_val_at(&l->sessions, i);
        if (!s->b.exceeded || !s->budget)
            continue;
        const char *key = cost_ktab_key_at(&l->sessions, i);
        cost_key_str(k, sizeof k, key, CBUS_SESSION_LEN);
        fn(arg, COST_SCOPE_SESSION, k, cost_key_whole_hash(key, CBUS_SESSION_LEN), &s->b,
           s->budget);
    }
    struct {
        const struct cost_ktab *t;
        unsigned scope;
        size_t field_len;
    } groups[] = {{&l->agents, COST_SCOPE_AGENT, CBUS_AGENT_LEN},
                  {&l->tenants, COST_SCOPE_TENANT, CBUS_TENANT_LEN}};
    for (unsigned g = 0; g < 2; g++)
        for (size_t i = 0; i < groups[g].t->n; i++) {
            struct cost_user *e = cost_ktab_val_at(groups[g].t, i);
            if (!e->b.exceeded || !e->budget)
                continue;
            const char *key = cost_ktab_key_at(groups[g].t, i);
            cost_key_str(k, sizeof k, key, groups[g].field_len);
            fn(arg, groups[g].scope, k, cost_key_whole_hash(key, groups[g].field_len), &e->b,
               e->budget);
        }
}
