#include "ratelimit_config.h"

#include <cbus/cbus.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

static void defaults(struct rl_config *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->name, sizeof c->name, "ratelimit");
    c->status_interval_ns = UINT64_C(1000000000);
    c->status_top = 20;
    rl_rules_init(&c->rules);
    cbus_cluster_conf_init(&c->cluster);
}

static int apply(struct rl_config *c, struct cbus_cfg *cfg, char *err, size_t errlen)
{
    int r = 0, cluster_seen = 0;
    for (size_t i = 0; i < cfg->count && !r; i++) {
        const struct cbus_cfg_entry *e = &cfg->entries[i];
        if (!strcmp(e->section, "cluster")) {
            cluster_seen = 1;
            r = cbus_cluster_conf_entry(&c->cluster, cfg, e, err, errlen);
            continue;
        }
        if (!strcmp(e->section, "rules")) {
            if (strcmp(e->key, "rule"))
                return cbus_cfg_error(cfg, e, err, errlen, "unknown key (each line is 'rule = ...')");
            char why[256];
            r = rl_rules_add(&c->rules, e->value, e->line, why, sizeof why);
            if (r)
                return cbus_cfg_error(cfg, e, err, errlen, "%s", why);
            continue;
        }
        /* [bus] and [status]: the sections every daemon shares (config.h);
         * [ratelimit] name, status_file and status_interval still taken. */
        const struct cbus_cfg_common cc = {
            .daemon_section = "ratelimit", .bus = c->bus, .consumer = c->name,
            .consumer_size = CBUS_NAME_MAX - 8, .status_file = c->status_file,
            .status_file_size = sizeof c->status_file, .status_required = 1,
            .status_interval_ns = &c->status_interval_ns};
        if ((r = cbus_cfg_common_entry(&cc, cfg, e, err, errlen))) {
            r = r < 0 ? r : 0;
            continue;
        }
        if (strcmp(e->section, "ratelimit"))
            return cbus_cfg_error(cfg, e, err, errlen,
                                  "unknown section (want [bus], [status], [ratelimit], [rules] or "
                                  "[cluster])");
        uint64_t v;
        if (!strcmp(e->key, "status_top")) {
            r = cbus_cfg_u64(cfg, e, 0, 10000, &v, err, errlen);
            c->status_top = (unsigned)v;
        } else if (!strcmp(e->key, "max_keys")) {
            r = cbus_cfg_u64(cfg, e, 16, 100000000, &v, err, errlen);
            c->opts.max_keys = (size_t)v;
        } else if (!strcmp(e->key, "max_pending")) {
            r = cbus_cfg_u64(cfg, e, 16, 100000000, &v, err, errlen);
            c->opts.max_pending = (size_t)v;
        } else if (!strcmp(e->key, "pending_ttl")) {
            r = cbus_cfg_duration_ns(cfg, e, &c->opts.pending_ttl_ns, err, errlen);
            if (!r && c->opts.pending_ttl_ns < UINT64_C(1000000000))
                return cbus_cfg_error(cfg, e, err, errlen, "at least 1s");
        } else if (!strcmp(e->key, "count_only")) {
            r = cbus_cfg_bool(cfg, e, &c->opts.count_only, err, errlen);
        } else {
            return cbus_cfg_error(cfg, e, err, errlen,
                                  "unknown key (want status_top, "
                                  "max_keys, max_pending, pending_ttl, count_only)");
        }
    }
    if (!r)
        r = cbus_cluster_conf_finish(&c->cluster, cfg, cluster_seen, err, errlen);
    if (r)
        return r;
    unsigned bad = 0;
    char why[256];
    r = rl_rules_finish(&c->rules, &bad, why, sizeof why);
    if (r) {
        snprintf(err, errlen, "%s:%u: [rules] rule: %s", cfg->path, bad, why);
        return r;
    }
    if (!c->rules.count) {
        snprintf(err, errlen, "%s: no rules: add 'rule = ...' lines under [rules]", cfg->path);
        return -EINVAL;
    }
    return 0;
}

int rl_config_parse(struct rl_config *c, const char *name, const char *text, char *err,
                    size_t errlen)
{
    defaults(c);
    struct cbus_cfg cfg;
    int r = cbus_cfg_parse(&cfg, name, text, err, errlen);
    if (r)
        return r;
    r = apply(c, &cfg, err, errlen);
    cbus_cfg_free(&cfg);
    if (r)
        rl_config_free(c);
    return r;
}

int rl_config_load(struct rl_config *c, const char *path, char *err, size_t errlen)
{
    defaults(c); /* a file that cannot be read leaves the defaults, as before */
    char *text;
    int r = cbus_cfg_read_text(path, &text, err, errlen);
    if (r)
        return r;
    r = rl_config_parse(c, path, text, err, errlen);
    free(text);
    return r;
}

void rl_config_free(struct rl_config *c)
{
    rl_rules_free(&c->rules);
}
