#include "cost_config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cbus/cbus.h>
#include <cbus/consumer.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "daemon.h"
#include "redact.h"

static void defaults(struct cost_config *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->consumer, sizeof c->consumer, "cost");
    c->start = CBUS_START_OLDEST;
    /* Without a config: the installed table, as cbus-export, cbus-web and
     * cbus-loadgen default to (CMakeLists.txt); with one, beside it (below). */
    snprintf(c->prices_file, sizeof c->prices_file, "%s", CBUS_COST_PRICES_DEFAULT);
    /* The private state dir (daemon.h), never /tmp; empty if there is no home. */
    if (cbus_state_dir_default(c->state_dir, sizeof c->state_dir, "cost/%b"))
        c->state_dir[0] = '\0';
    c->checkpoint_interval_ns = UINT64_C(2000000000);
    c->fsync = 1;
    c->snapshot_interval_ns = UINT64_C(1000000000);
    c->session_ttl_ns = 7 * COST_DAY_NS;
    c->max_users = 100000;
    c->max_sessions = 100000;
    c->max_models = 10000;
    c->max_agents = 10000;
    c->max_tenants = 10000;
    c->snapshot_max_sessions = 1000;
    c->prom_users = 1;
    c->webhook_timeout_ns = UINT64_C(5000000000);
    c->global_idx = c->user_default_idx = c->session_default_idx = -1;
    c->agent_default_idx = c->tenant_default_idx = -1;
}

int cost_parse_period(const char *s, uint32_t *days)
{
    if (!strcmp(s, "none") || !strcmp(s, "0")) {
        *days = 0;
        return 0;
    }
    char *end;
    unsigned long d = strtoul(s, &end, 10);
    if (end == s || strcmp(end, "d") || d == 0 || d > 3660)
        return -EINVAL;
    *days = (uint32_t)d;
    return 0;
}

/* thresholds = 50,80,100: percentages of the limit at which an alert
 * fires. */
static int parse_thresholds(const struct cbus_cfg *cfg, const struct cbus_cfg_entry *e,
                            uint32_t *pcts, unsigned *n, char *err, size_t errlen)
{
    *n = 0;
    const char *p = e->value;
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        if (!*p)
            break;
        char *end;
        unsigned long v = strtoul(p, &end, 10);
        if (end == p || v == 0 || v > 1000 || (*end && *end != ',' && *end != ' ' && *end != '%'))
            return cbus_cfg_error(cfg, e, err, errlen,
                                  "'%s' is not a list of percentages 1..1000 (e.g. 50,80,100)",
                                  e->value);
        if (*n == COST_MARKS_MAX - 2)
            return cbus_cfg_error(cfg, e, err, errlen, "at most %d thresholds", COST_MARKS_MAX - 2);
        pcts[(*n)++] = (uint32_t)v;
        p = end;
        if (*p == '%')
            p++;
    }
    if (*n == 0)
        return cbus_cfg_error(cfg, e, err, errlen, "empty threshold list");
    return 0;
}

/* The scope a [budget.*] section names, and the id after its prefix
 * ("*" for budget.global). */
static int budget_scope(const struct cbus_cfg *cfg, const struct cbus_cfg_entry *e0,
                        struct cost_budget *b, char *err, size_t errlen)
{
    static const struct {
        const char *prefix;
        enum cost_scope scope;
    } scopes[] = {
        {"budget.user.", COST_SCOPE_USER},
        {"budget.session.", COST_SCOPE_SESSION},
        {"budget.agent.", COST_SCOPE_AGENT},
        {"budget.tenant.", COST_SCOPE_TENANT},
    };
    const char *sec = e0->section, *who = NULL;
    if (!strcmp(sec, "budget.global")) {
        b->scope = COST_SCOPE_GLOBAL;
        who = "*";
    }
    for (size_t i = 0; !who && i < sizeof scopes / sizeof scopes[0]; i++) {
        size_t n = strlen(scopes[i].prefix);
        if (!strncmp(sec, scopes[i].prefix, n)) {
            b->scope = scopes[i].scope;
            who = sec + n;
        }
    }
    if (!who)
        return cbus_cfg_error(cfg, e0, err, errlen,
                              "unknown section [%s] (want budget.global, budget.user.NAME, "
                              "budget.session.NAME, budget.agent.NAME or budget.tenant.NAME; "
                              "NAME * is the default)", sec);
    /* An id is matched by the hash of its whole value, so it may be longer
     * than the event field producers cut it to. */
    size_t maxkey = sizeof b->key - 1;
    if (!*who || strlen(who) > maxkey)
        return cbus_cfg_error(cfg, e0, err, errlen, "[%s]: id must be 1..%zu characters", sec,
                              maxkey);
    snprintf(b->key, sizeof b->key, "%s", who); /* hashed by cost_budget_build() */
    return 0;
}

/* The keys of one budget section: limit and soft limit in pico-dollars,
 * period, and the alert thresholds (cost_budget_build's defaults when
 * none are given). */
static int budget_entries(const struct cbus_cfg *cfg, size_t first, struct cost_budget *b,
                          char *err, size_t errlen)
{
    const struct cbus_cfg_entry *e0 = &cfg->entries[first];
    const char *sec = e0->section;
    uint32_t pcts[COST_MARKS_MAX];
    unsigned n_pcts = 0;
    int have_pcts = 0, have_limit = 0;
    double soft = 0, limit = 0;
    const struct cbus_cfg_entry *soft_e = NULL;
    for (size_t i = first; i < cfg->count; i++) {
        const struct cbus_cfg_entry *e = &cfg->entries[i];
        if (strcmp(e->section, sec))
            continue;
        int r = 0;
        if (!strcmp(e->key, "limit_usd")) {
            r = cbus_cfg_double(cfg, e, 1e-9, 1e12, &limit, err, errlen);
            have_limit = 1;
        } else if (!strcmp(e->key, "soft_usd")) {
            r = cbus_cfg_double(cfg, e, 1e-9, 1e12, &soft, err, errlen);
            soft_e = e;
        } else if (!strcmp(e->key, "period")) {
            if (cost_parse_period(e->value, &b->period_days))
                r = cbus_cfg_error(cfg, e, err, errlen,
                                   "'%s' is not a period (1d, 7d, 30d, Nd or none)", e->value);
        } else if (!strcmp(e->key, "thresholds")) {
            r = parse_thresholds(cfg, e, pcts, &n_pcts, err, errlen);
            have_pcts = 1;
        } else {
            r = cbus_cfg_error(cfg, e, err, errlen,
                               "unknown key (want limit_usd, soft_usd, period, thresholds)");
        }
        if (r)
            return r;
    }
    if (!have_limit)
        return cbus_cfg_error(cfg, e0, err, errlen, "[%s] needs limit_usd", sec);
    cost_usd_to_pico(limit, 1e12, &b->limit_pico);
    if (soft_e) {
        cost_usd_to_pico(soft, 1e12, &b->soft_pico);
        if (b->soft_pico >= b->limit_pico)
            return cbus_cfg_error(cfg, soft_e, err, errlen, "soft_usd must be below limit_usd");
    }
    if (cost_budget_build(b, have_pcts ? pcts : NULL, n_pcts))
        return cbus_cfg_error(cfg, e0, err, errlen, "too many thresholds");
    return 0;
}

/* Appends a parsed budget, refusing a second section for the same scope
 * and id, and remembers the global and per-scope default ("*") budgets. */
static int budget_add(struct cost_config *c, const struct cbus_cfg *cfg,
                      const struct cbus_cfg_entry *e0, const struct cost_budget *b, char *err,
                      size_t errlen)
{
    for (size_t i = 0; i < c->n_budgets; i++)
        if (c->budgets[i].scope == b->scope && !strcmp(c->budgets[i].key, b->key))
            return cbus_cfg_error(cfg, e0, err, errlen, "[%s] given twice", e0->section);
    struct cost_budget *nb = realloc(c->budgets, (c->n_budgets + 1) * sizeof *nb);
    if (!nb) {
        snprintf(err, errlen, "%s: out of memory", cfg->path);
        return -ENOMEM;
    }
    c->budgets = nb;
    long idx = (long)c->n_budgets;
    c->budgets[c->n_budgets++] = *b;
    if (b->scope == COST_SCOPE_GLOBAL)
        c->global_idx = idx;
    else if (!strcmp(b->key, "*")) {
        long *def[COST_SCOPE__COUNT] = {NULL, &c->user_default_idx, &c->session_default_idx,
                                        &c->agent_default_idx, &c->tenant_default_idx};
        *def[b->scope] = idx;
    }
    return 0;
}

/* One [budget.global] / [budget.user.NAME] / [budget.session.NAME] /
 * [budget.agent.NAME] / [budget.tenant.NAME] section:
 * the entries from index first on that share its section name. */
static int parse_budget(struct cost_config *c, const struct cbus_cfg *cfg, size_t first,
                        char *err, size_t errlen)
{
    const struct cbus_cfg_entry *e0 = &cfg->entries[first];
    struct cost_budget b;
    memset(&b, 0, sizeof b);
    b.line = e0->line;
    b.period_days = 1;
    int r = budget_scope(cfg, e0, &b, err, errlen);
    if (!r)
        r = budget_entries(cfg, first, &b, err, errlen);
    if (!r)
        r = budget_add(c, cfg, e0, &b, err, errlen);
    return r;
}

static int parse_listen(const struct cbus_cfg *cfg, const struct cbus_cfg_entry *e,
                        struct cost_config *c, char *err, size_t errlen)
{
    const char *why;
    if (cbus_parse_loopback_listen(e->value, c->http_host, sizeof c->http_host, &c->http_port,
                                   &why))
        return cbus_cfg_error(cfg, e, err, errlen, "'%s': %s%s", e->value,
                              strncmp(why, "served", 6) ? "" : "metrics are ", why);
    return 0;
}

enum { NOT_MINE = 1 }; /* a setting the function does not own */

/* A path setting, relative to the config file's directory. */
static int path_entry(char *dst, size_t cap, const struct cbus_cfg *cfg, const struct cbus_cfg_entry *e,
                      const char *base_dir, char *err, size_t errlen)
{
    if (cbus_cfg_path(dst, cap, base_dir, e->value))
        return cbus_cfg_error(cfg, e, err, errlen, "path too long");
    return 0;
}

/* A duration setting that must lie in [lo, hi]; what says so names them. */
static int bounded_duration(const struct cbus_cfg *cfg, const struct cbus_cfg_entry *e, uint64_t *ns,
                            uint64_t lo, uint64_t hi, const char *range, char *err, size_t errlen)
{
    int r = cbus_cfg_duration_ns(cfg, e, ns, err, errlen);
    if (!r && (*ns < lo || *ns > hi))
        r = cbus_cfg_error(cfg, e, err, errlen, "must be between %s", range);
    return r;
}

#define IS(sec, name) (!strcmp(e->section, sec) && !strcmp(e->key, name))

/* [prices] and [state]: the price table, the checkpoint and the table
 * sizes.  NOT_MINE for any other setting. */
static int prices_state_entry(struct cost_config *c, const struct cbus_cfg *cfg, const struct cbus_cfg_entry *e,
                              const char *base_dir, char *err, size_t errlen)
{
    const uint64_t S = UINT64_C(1000000000);
    if (IS("prices", "file"))
        return path_entry(c->prices_file, sizeof c->prices_file, cfg, e, base_dir, err, errlen);
    if (IS("prices", "overrides"))
        return path_entry(c->overrides_file, sizeof c->overrides_file, cfg, e, base_dir, err, errlen);
    if (IS("state", "dir"))
        return path_entry(c->state_dir, sizeof c->state_dir, cfg, e, base_dir, err, errlen);
    if (IS("state", "checkpoint_interval"))
        return bounded_duration(cfg, e, &c->checkpoint_interval_ns, 10000000, 3600 * S, "10ms and 1h", err,
                                errlen);
    if (IS("state", "fsync"))
        return cbus_cfg_bool(cfg, e, &c->fsync, err, errlen);
    if (IS("state", "snapshot_interval"))
        return bounded_duration(cfg, e, &c->snapshot_interval_ns, 10000000, 3600 * S, "10ms and 1h", err,
                                errlen);
    if (IS("state", "session_ttl"))
        return cbus_cfg_duration_ns(cfg, e, &c->session_ttl_ns, err, errlen);
    if (IS("state", "max_users"))
        return cbus_cfg_u64(cfg, e, 1, 10000000, &c->max_users, err, errlen);
    if (IS("state", "max_sessions"))
        return cbus_cfg_u64(cfg, e, 1, 10000000, &c->max_sessions, err, errlen);
    if (IS("state", "max_agents"))
        return cbus_cfg_u64(cfg, e, 1, 10000000, &c->max_agents, err, errlen);
    if (IS("state", "max_tenants"))
        return cbus_cfg_u64(cfg, e, 1, 10000000, &c->max_tenants, err, errlen);
    if (IS("state", "max_models"))
        return cbus_cfg_u64(cfg, e, 1, 1000000, &c->max_models, err, errlen);
    if (IS("state", "snapshot_max_sessions"))
        return cbus_cfg_u64(cfg, e, 0, 10000000, &c->snapshot_max_sessions, err, errlen);
    return NOT_MINE;
}

/* [prometheus] and [webhook]: where totals and alerts go.  NOT_MINE for
 * any other setting. */
static int outputs_entry(struct cost_config *c, const struct cbus_cfg *cfg, const struct cbus_cfg_entry *e,
                         const char *base_dir, char *err, size_t errlen)
{
    if (IS("prometheus", "textfile"))
        return path_entry(c->prom_textfile, sizeof c->prom_textfile, cfg, e, base_dir, err, errlen);
    if (IS("prometheus", "users"))
        return cbus_cfg_bool(cfg, e, &c->prom_users, err, errlen);
    if (IS("prometheus", "listen"))
        return parse_listen(cfg, e, c, err, errlen);
    if (IS("webhook", "url")) {
        if (strncmp(e->value, "http://", 7) && strncmp(e->value, "https://", 8)) {
            /* Even a mistyped URL may carry the credentials. */
            char shown[CBUS_REDACT_SIZE(256)];
            return cbus_cfg_error(cfg, e, err, errlen, "'%s' is not an http:// or https:// URL",
                                  cbus_redact_url(shown, sizeof shown, e->value));
        }
        if (strlen(e->value) >= sizeof c->webhook_url)
            return cbus_cfg_error(cfg, e, err, errlen, "URL too long");
        snprintf(c->webhook_url, sizeof c->webhook_url, "%s", e->value);
        return 0;
    }
    if (IS("webhook", "timeout"))
        return bounded_duration(cfg, e, &c->webhook_timeout_ns, 1000000, 600 * UINT64_C(1000000000),
                                "1ms and 10m", err, errlen);
    return NOT_MINE;
}
#undef IS

int cost_config_parse(struct cost_config *c, const char *name, const char *text,
                      const char *base_dir, char *err, size_t errlen)
{
    defaults(c);
    struct cbus_cfg cfg;
    int r = cbus_cfg_parse(&cfg, name, text, err, errlen);
    if (r)
        return r;
    int cluster_seen = 0;
    cbus_cluster_conf_init(&c->cluster);
    for (size_t i = 0; i < cfg.count && !r; i++) {
        const struct cbus_cfg_entry *e = &cfg.entries[i];
        const char *s = e->section;
        /* [bus] name and consumer: the section every daemon shares (config.h). */
        const struct cbus_cfg_common cc = {
            .bus = c->bus, .consumer = c->consumer, .consumer_size = sizeof c->consumer,
            .status_file = c->status_file, .status_file_size = sizeof c->status_file,
            .status_off = &c->status_off, .status_interval_ns = &c->status_interval_ns,
            .start = &c->start};
        int taken = cbus_cfg_common_entry(&cc, &cfg, e, err, errlen);
        if (taken) {
            r = taken < 0 ? taken : 0;
        } else if (!strcmp(s, "cluster")) {
            cluster_seen = 1;
            r = cbus_cluster_conf_entry(&c->cluster, &cfg, e, err, errlen);
        } else if (!strncmp(s, "budget.", 7)) {
            /* Parse each budget section once, at its first entry. */
            int seen = 0;
            for (size_t j = 0; j < i && !seen; j++)
                seen = !strcmp(cfg.entries[j].section, s);
            if (!seen)
                r = parse_budget(c, &cfg, i, err, errlen);
        } else if ((r = prices_state_entry(c, &cfg, e, base_dir, err, errlen)) == NOT_MINE &&
                   (r = outputs_entry(c, &cfg, e, base_dir, err, errlen)) == NOT_MINE) {
            static const char *const known[] = {"bus", "prices", "state", "prometheus", "webhook", NULL};
            r = cbus_cfg_unknown(&cfg, e, known, err, errlen);
        }
    }
    if (!r)
        r = cbus_cluster_conf_finish(&c->cluster, &cfg, cluster_seen, err, errlen);
    /* The default price table sits beside the config file. */
    int prices_given = 0;
    for (size_t i = 0; i < cfg.count; i++)
        prices_given |= !strcmp(cfg.entries[i].section, "prices") && !strcmp(cfg.entries[i].key, "file");
    if (!r && !prices_given)
        cbus_cfg_path(c->prices_file, sizeof c->prices_file, base_dir, "model_prices_and_context_window.json");
    cbus_cfg_free(&cfg);
    if (r)
        cost_config_free(c);
    return r;
}

static int parse_conf(void *c, const char *name, const char *text, const char *base_dir,
                      char *err, size_t errlen)
{
    return cost_config_parse(c, name, text, base_dir, err, errlen);
}

int cost_config_load(struct cost_config *c, const char *path, char *err, size_t errlen)
{
    if (!path) {
        defaults(c);
        return 0;
    }
    return cbus_cfg_load_with(path, parse_conf, c, err, errlen);
}

void cost_config_finish(struct cost_config *c)
{
    /* A path too long once the bus name is in stays as written (it named
     * a cut path before): the state dir then fails to open, by its name. */
    cbus_cfg_expand_bus(c->state_dir, sizeof c->state_dir, c->bus);
    cbus_cfg_expand_bus(c->prom_textfile, sizeof c->prom_textfile, c->bus);
}

void cost_config_free(struct cost_config *c)
{
    free(c->budgets);
    c->budgets = NULL;
    c->n_budgets = 0;
}
