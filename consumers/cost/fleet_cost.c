#include "fleet_cost.h"

#include <cbus/admit.h>
#include <cbus/cbus.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "money.h"
#include "sbuf.h"

/* One fleet counter per (scope, entity, period): 's' the spend in
 * pico-dollars (HINCRBY: exact int64, up to 9.2 million USD), 'f' the marks
 * the fleet has reached (bit i = marks[i] of the budget, ascending).  The
 * node whose batch sets a bit claims it (returned in `claim`, and kept in
 * 'c:NODE' with the batch's run:seq, so a batch resent after a lost reply
 * gets its claim back instead of losing the alert).  Arguments: the spend
 * to add, the marks as a comma-separated list, the key's time to live in
 * seconds (to the end of the period, and a day).  Lua compares the spend
 * as a double: exact to a few pico-dollars at 10,000 USD. */
static const char cost_item_lua[] =
    "local function item(k, a, apply, now, at)\n"
    "  if apply and a[1] ~= '0' then redis.call('HINCRBY', k, 's', a[1]) end\n"
    "  local s = redis.call('HGET', k, 's') or '0'\n"
    "  local f = tonumber(redis.call('HGET', k, 'f') or '0') or 0\n"
    "  local sn = tonumber(s) or 0\n"
    "  local nf, i = f, 0\n"
    "  for m in string.gmatch(a[2], '[^,]+') do\n"
    "    if i < 30 and sn >= (tonumber(m) or math.huge) then nf = bit.bor(nf, bit.lshift(1, i)) end\n"
    "    i = i + 1\n"
    "  end\n"
    "  local claim = bit.band(nf, bit.bnot(f))\n"
    "  local cf = 'c:' .. ARGV[1]\n"
    "  local tag = ARGV[2] .. ':' .. ARGV[3]\n"
    "  if claim ~= 0 then\n"
    "    redis.call('HSET', k, 'f', nf, cf, tag .. ':' .. claim)\n"
    "  elseif not apply then\n"
    "    local c = redis.call('HGET', k, cf)\n"
    "    if c then\n"
    "      local r, q, m = string.match(c, '^(%d+):(%d+):(%d+)$')\n"
    "      if r and (r .. ':' .. q) == tag then claim = tonumber(m) end\n"
    "    end\n"
    "  end\n"
    "  if apply then redis.call('EXPIRE', k, tonumber(a[3]) or 86400) end\n"
    "  return {s, claim, nf}\n"
    "end\n";

#define SEC UINT64_C(1000000000)
#define IDLE_NS (60 * SEC)   /* an entity not spent on for this long is not read back */

struct fc_ent {
    uint64_t id;              /* 0 = empty slot */
    unsigned scope;
    uint64_t admit_hash;
    uint64_t period_start_day, period_end_day;
    const struct cost_budget *b;
    char admit[CBUS_MODEL_LEN + 1];   /* the table key's shown bytes */
    char shown[COST_SHOW_MAX];        /* for alerts */
    cost_u128 unsent;         /* spent here, not yet in a batch */
    cost_u128 fleet_spent;    /* as of the last reply */
    uint32_t fired;           /* the fleet's marks reached, as of the last reply */
    uint32_t published;       /* our "budget exceeded" verdict (the fleet's) is in the table */
    uint32_t held;            /* a hold is: this node spent its lease (check_lease) */
    uint32_t synced;
    uint32_t logged_away;
    uint64_t held_until;
    uint64_t last_spend_ns;
};

struct cost_fleet {
    struct cost_ledger *led;
    cbus_cluster *cl;
    struct cost_fleet_hooks hooks;
    double share;
    uint64_t interval_ns;
    int up;                   /* the last sync was answered */
    uint64_t holds;
    struct fc_ent *tab;
    size_t cap, count;        /* cap: power of two */
    size_t cursor;
    uint64_t now;             /* of the event being applied (monotonic) */
    uint64_t real_now;        /* of the sync (UTC) */
    uint64_t alerts, untracked;
};

static uint64_t mix(uint64_t h)
{
    h ^= h >> 33;
    h *= UINT64_C(0xff51afd7ed558ccd);
    h ^= h >> 33;
    return h ? h : 1;
}

static int grow(cost_fleet *f)
{
    size_t cap = f->cap ? f->cap * 2 : 1024;
    struct fc_ent *t = calloc(cap, sizeof *t);
    if (!t)
        return -ENOMEM;
    for (size_t i = 0; i < f->cap; i++) {
        if (!f->tab[i].id)
            continue;
        size_t j = f->tab[i].id & (cap - 1);
        while (t[j].id)
            j = (j + 1) & (cap - 1);
        t[j] = f->tab[i];
    }
    free(f->tab);
    f->tab = t;
    f->cap = cap;
    return 0;
}

static struct fc_ent *find(cost_fleet *f, uint64_t id, int create)
{
    if (create && (f->count + 1) * 2 > f->cap && (f->count > 4000000 || grow(f)))
        return NULL;
    if (!f->cap)
        return NULL;
    size_t j = id & (f->cap - 1);
    while (f->tab[j].id && f->tab[j].id != id)
        j = (j + 1) & (f->cap - 1);
    if (f->tab[j].id == id)
        return &f->tab[j];
    if (!create)
        return NULL;
    f->tab[j].id = id;
    f->count++;
    return &f->tab[j];
}

/* The lease: after a sync a node may spend local_share of what the fleet
 * had left of the budget; once it has, it holds the entity (a "budget
 * exceeded" verdict that lapses after a few intervals unless renewed)
 * until a sync shows the fleet has room again.  While Redis is away the
 * counts stay unsent, so the hold stands until it answers: the node alone
 * spends local_share of the rest.  With the shares summing to <= 1 the
 * fleet goes over by at most one call per node (a call's cost is known
 * only at its llm_end) plus what its producers start while the verdict
 * is on its way. */
static void check_lease(cost_fleet *f, struct fc_ent *e, uint64_t now)
{
    if (e->published)
        return;
    cost_u128 room = e->b->limit_pico > e->fleet_spent ? e->b->limit_pico - e->fleet_spent : 0;
    cost_u128 lease = (cost_u128)((double)room * f->share);
    if (e->unsent && e->unsent >= lease) {
        if (e->held && e->held_until > now + f->interval_ns)
            return;
        e->held_until = now + 3 * f->interval_ns;
        f->hooks.verdict(f->hooks.arg, e->scope, e->admit, e->admit_hash, CBUS_BUDGET_EXCEEDED,
                         e->held_until);
        if (!e->held)
            f->holds++;
        e->held = 1;
        if (!f->up && !e->logged_away) {
            char key[CBUS_HUMAN_MAX(64)];
            cbus_human_str(key, sizeof key, e->shown, 64);
            cbus_log_warn("budget %s %s: this node spent its local_share of what the fleet had "
                          "left while redis is away: held here until redis answers",
                          cost_scope_name(e->scope), key);
            e->logged_away = 1;
        }
    } else if (e->held) {
        f->hooks.verdict(f->hooks.arg, e->scope, e->admit, e->admit_hash, CBUS_ALLOW, 0);
        e->held = 0;
    }
}

/* The end of the entity's period on the bus clock (0: never ends). */
static uint64_t period_until(const struct fc_ent *e, uint64_t real_now)
{
    if (!e->b->period_days || !e->period_end_day || e->period_end_day == UINT64_MAX)
        return 0;
    uint64_t end = e->period_end_day * COST_DAY_NS;
    return cbus_now_ns() + (end > real_now ? end - real_now : SEC);
}

static void on_spend(void *arg, unsigned scope, const char *key, size_t field_len,
                     const struct cost_budget *b, const struct cost_budget_state *st, cost_u128 cost)
{
    cost_fleet *f = arg;
    uint64_t ah = field_len ? cost_key_whole_hash(key, field_len) : cbus_key_hash("*", 1);
    uint64_t id = mix(mix(ah ^ ((uint64_t)scope << 56)) ^ st->period_start_day);
    struct fc_ent *e = find(f, id, 1);
    if (!e) {
        f->untracked++;
        return;
    }
    if (!e->b) {
        e->scope = scope;
        e->admit_hash = ah;
        e->b = b;
        e->period_start_day = st->period_start_day;
        e->period_end_day = st->period_end_day;
        if (field_len) {
            cost_key_str(e->admit, sizeof e->admit, key, field_len);
            cost_key_show(e->shown, sizeof e->shown, key, field_len, ah);
        } else {
            snprintf(e->admit, sizeof e->admit, "*");
            snprintf(e->shown, sizeof e->shown, "*");
        }
    }
    e->b = b; /* the ledger's own, as it resolves it now */
    e->unsent += cost;
    e->last_spend_ns = f->now ? f->now : cbus_now_ns();
    check_lease(f, e, e->last_spend_ns);
}

int cost_fleet_open(cost_fleet **out, struct cost_ledger *l, const struct cbus_cluster_conf *conf,
                    const struct cost_fleet_hooks *hooks)
{
    if (!out || !l || !conf || !conf->enabled || !hooks || !hooks->alert || !hooks->verdict)
        return -EINVAL;
    cost_fleet *f = calloc(1, sizeof *f);
    if (!f)
        return -ENOMEM;
    static const struct cbus_cluster_script sc = {"cost", cost_item_lua, 3, 3};
    int r = cbus_cluster_open(&f->cl, conf, &sc);
    if (!r)
        r = grow(f);
    if (r) {
        cbus_cluster_close(f->cl);
        free(f);
        return r;
    }
    f->led = l;
    f->hooks = *hooks;
    f->share = conf->local_share;
    f->interval_ns = conf->interval_ns + conf->timeout_ns;
    l->on_spend = on_spend;
    l->spend_arg = f;
    *out = f;
    return 0;
}

void cost_fleet_close(cost_fleet *f)
{
    if (!f)
        return;
    if (f->led) {
        f->led->on_spend = NULL;
        f->led->spend_arg = NULL;
    }
    cbus_cluster_close(f->cl);
    free(f->tab);
    free(f);
}

static void u128_str(char *out, size_t n, cost_u128 v)
{
    if (v > (cost_u128)INT64_MAX)
        v = (cost_u128)INT64_MAX; /* 9.2 million USD: past any budget */
    cost_u128_format(out, n, v);
}

static void fill(void *arg, cbus_cluster *cl, uint64_t now)
{
    cost_fleet *f = arg;
    if (!f->cap)
        return;
    for (size_t n = 0; n < f->cap; n++) {
        size_t i = (f->cursor + n) & (f->cap - 1);
        struct fc_ent *e = &f->tab[i];
        if (!e->id || !e->b)
            continue;
        /* Spend to send, or an entity in use whose fleet spend may have
         * moved (others spend on it too) and that is not over yet. */
        int fresh = now - e->last_spend_ns < IDLE_NS && !e->published;
        if (!e->unsent && !(fresh && e->synced))
            continue;
        char suffix[96], delta[48], marks[16 * 44 + 1], ttl[24];
        snprintf(suffix, sizeof suffix, "cost:%s:%016" PRIx64 ":%" PRIu64,
                 cost_scope_name(e->scope), e->admit_hash, e->period_start_day);
        u128_str(delta, sizeof delta, e->unsent);
        size_t mlen = 0;
        marks[0] = '\0';
        for (unsigned m = 0; m < e->b->n_marks && m < 30; m++) {
            char v[48];
            u128_str(v, sizeof v, e->b->marks[m].pico);
            mlen += (size_t)snprintf(marks + mlen, sizeof marks - mlen, "%s%s", m ? "," : "", v);
        }
        if (!marks[0])
            snprintf(marks, sizeof marks, "0");
        uint64_t ttl_s = 400 * 86400;
        if (e->b->period_days && e->period_end_day != UINT64_MAX)
            ttl_s = (uint64_t)e->b->period_days * 86400 + 86400;
        snprintf(ttl, sizeof ttl, "%" PRIu64, ttl_s);
        const char *args[3] = {delta, marks, ttl};
        if (cbus_cluster_add(cl, suffix, args, &e->id, sizeof e->id)) {
            f->cursor = i;
            return;
        }
        e->unsent = 0;
    }
}

static void emit_alert(cost_fleet *f, struct fc_ent *e, unsigned mark)
{
    static const enum cost_alert_kind kinds[] = {
        [COST_MARK_THRESHOLD] = COST_ALERT_THRESHOLD, [COST_MARK_SOFT] = COST_ALERT_SOFT,
        [COST_MARK_LIMIT] = COST_ALERT_EXCEEDED};
    const struct cost_budget *b = e->b;
    struct cost_alert a = {
        .kind = kinds[b->marks[mark].kind],
        .scope = e->scope,
        .key = e->shown,
        .admit_key = e->admit,
        .admit_hash = e->admit_hash,
        .pct = b->marks[mark].pct,
        .spent_pico = e->fleet_spent,
        .limit_pico = b->limit_pico,
        .mark_pico = b->marks[mark].pico,
        .budget = b,
        .period_start_day = e->period_start_day,
        .period_end_day = e->period_end_day,
    };
    f->alerts++;
    f->hooks.alert(f->hooks.arg, &a);
}

static int limit_mark(const struct cost_budget *b, uint32_t fired)
{
    for (unsigned m = 0; m < b->n_marks && m < 30; m++)
        if (b->marks[m].kind == COST_MARK_LIMIT && (fired & (1u << m)))
            return 1;
    return 0;
}

static void apply(void *arg, const void *cookie, size_t len, const int64_t *res, unsigned nres,
                  uint64_t now)
{
    cost_fleet *f = arg;
    (void)now;
    uint64_t id;
    if (nres != 3 || len != sizeof id)
        return;
    memcpy(&id, cookie, sizeof id);
    struct fc_ent *e = find(f, id, 0);
    if (!e || !e->b)
        return;
    e->fleet_spent = res[0] > 0 ? (cost_u128)res[0] : 0;
    uint32_t fired = res[2] > 0 ? (uint32_t)res[2] : 0;
    uint32_t claim = res[1] > 0 ? (uint32_t)res[1] & fired : 0;
    e->fired = fired;
    e->synced = 1;
    /* Claimed marks alert here, in ascending order: once for the fleet. */
    for (unsigned m = 0; m < e->b->n_marks && m < 30; m++)
        if (claim & (1u << m))
            emit_alert(f, e, m);
    if (limit_mark(e->b, fired) && !e->published) {
        f->hooks.verdict(f->hooks.arg, e->scope, e->admit, e->admit_hash, CBUS_BUDGET_EXCEEDED,
                         period_until(e, f->real_now));
        e->published = 1;
        e->held = 0;
    }
}

/* Entities of periods that ended: their verdicts go, and so do they (once
 * their spend has reached Redis). */
static void sweep(cost_fleet *f, uint64_t real_now)
{
    uint64_t day = real_now / COST_DAY_NS;
    int dropped = 0;
    for (size_t i = 0; i < f->cap; i++) {
        struct fc_ent *e = &f->tab[i];
        if (!e->id || !e->b || day < e->period_end_day)
            continue;
        if (e->published) {
            f->hooks.verdict(f->hooks.arg, e->scope, e->admit, e->admit_hash, CBUS_ALLOW, 0);
            e->published = 0;
        }
        if (!e->unsent) {
            memset(e, 0, sizeof *e);
            f->count--;
            dropped = 1;
        }
    }
    if (dropped) { /* linear probing: rebuild the runs the holes cut */
        struct fc_ent *t = calloc(f->cap, sizeof *t);
        if (!t)
            return; /* holes only make lookups miss: entities come back on their next spend */
        for (size_t i = 0; i < f->cap; i++)
            if (f->tab[i].id) {
                size_t j = f->tab[i].id & (f->cap - 1);
                while (t[j].id)
                    j = (j + 1) & (f->cap - 1);
                t[j] = f->tab[i];
            }
        free(f->tab);
        f->tab = t;
    }
}

int cost_fleet_sync(cost_fleet *f, uint64_t now, uint64_t real_now)
{
    f->now = now;
    f->real_now = real_now;
    int r = cbus_cluster_sync(f->cl, now, fill, apply, f);
    struct cbus_cluster_stats st;
    cbus_cluster_get_stats(f->cl, now, &st);
    f->up = st.up;
    if (r == -EINPROGRESS)
        return r; /* nothing new: holds stand as they are */
    /* Holds follow the new state: lifted where the fleet has room again,
     * renewed where this node is still past its lease (Redis away). */
    for (size_t i = 0; i < f->cap; i++) {
        struct fc_ent *e = &f->tab[i];
        if (e->id && e->b && e->held)
            check_lease(f, e, now);
        if (f->up)
            e->logged_away = 0;
    }
    sweep(f, real_now);
    f->now = 0;
    return r;
}

void cost_fleet_json(const cost_fleet *f, struct sbuf *b, uint64_t now)
{
    if (!b->len || b->failed)
        return;
    size_t end = b->len;
    while (end > 0 && (b->data[end - 1] == '\n' || b->data[end - 1] == ' '))
        end--;
    if (!end || b->data[end - 1] != '}')
        return;
    b->len = end - 1;
    sbuf_puts(b, ",");
    cbus_cluster_status_json(f->cl, b, now);
    if (b->len && b->data[b->len - 1] == '}') {
        b->len--;
        sbuf_printf(b, ",\"entities\":%zu,\"alerts\":%llu,\"holds\":%llu,\"untracked\":%llu}}\n",
                    f->count, (unsigned long long)f->alerts, (unsigned long long)f->holds,
                    (unsigned long long)f->untracked);
    }
}

void cost_fleet_prom(const cost_fleet *f, struct sbuf *b, uint64_t now)
{
    cbus_cluster_prom(f->cl, b, "cost", now);
}
