#include "history_config.h"

#include <cbus/cbus.h>
#include <cbus/consumer.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "daemon.h"

#define SEC UINT64_C(1000000000)

static void defaults(struct hist_config *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->consumer, sizeof c->consumer, "history");
    /* The private state dir (daemon.h), never /tmp; empty if there is no home. */
    char dir[HIST_PATH_MAX - 16];
    if (cbus_state_dir_default(dir, sizeof dir, "history") == 0)
        snprintf(c->db, sizeof c->db, "%s/%%b.db", dir);
    c->start = CBUS_START_OLDEST;
    c->status_interval_ns = SEC;
    c->fsync = 1;
    c->batch = 1024;
    c->retention_every_ns = 3600 * SEC;
}

int hist_parse_listen(const char *v, char *host, size_t hostlen, unsigned *port, const char **why)
{
    /* conversations are private: never on a routable address */
    int r = cbus_parse_loopback_listen(v, host, hostlen, port, why);
    if (r && !strncmp(*why, "served", 6))
        *why = "the history API is served on loopback only (127.0.0.0/8, ::1)";
    return r;
}

int hist_config_parse(struct hist_config *c, const char *name, const char *text,
                      const char *base_dir, char *err, size_t errlen)
{
    defaults(c);
    struct cbus_cfg cfg;
    int r = cbus_cfg_parse(&cfg, name, text, err, errlen);
    if (r)
        return r;
    /* [bus] and [status]: the sections every daemon shares (config.h). */
    const struct cbus_cfg_common cc = {
        .bus = c->bus, .consumer = c->consumer, .consumer_size = sizeof c->consumer,
        .status_file = c->status_file, .status_file_size = sizeof c->status_file,
        .status_off = &c->status_off, .status_interval_ns = &c->status_interval_ns,
        .start = &c->start};
    for (size_t i = 0; i < cfg.count && !r; i++) {
        const struct cbus_cfg_entry *e = &cfg.entries[i];
        const char *s = e->section, *k = e->key;
        int taken = cbus_cfg_common_entry(&cc, &cfg, e, err, errlen);
        if (taken) {
            r = taken < 0 ? taken : 0;
        } else if (!strcmp(s, "store") && !strcmp(k, "path")) {
            if (!e->value[0])
                r = cbus_cfg_error(&cfg, e, err, errlen, "empty path");
            else if (cbus_cfg_path(c->db, sizeof c->db, base_dir, e->value))
                r = cbus_cfg_error(&cfg, e, err, errlen, "path too long");
        } else if (!strcmp(s, "store") && !strcmp(k, "fsync")) {
            r = cbus_cfg_bool(&cfg, e, &c->fsync, err, errlen);
        } else if (!strcmp(s, "store") && !strcmp(k, "batch")) {
            r = cbus_cfg_u64(&cfg, e, 1, 65536, &c->batch, err, errlen);
        } else if (!strcmp(s, "retention") && !strcmp(k, "max_age")) {
            r = cbus_cfg_duration_ns(&cfg, e, &c->max_age_ns, err, errlen);
        } else if (!strcmp(s, "retention") && !strcmp(k, "check_every")) {
            r = cbus_cfg_duration_ns(&cfg, e, &c->retention_every_ns, err, errlen);
            if (!r && (c->retention_every_ns < SEC / 10 || c->retention_every_ns > 86400 * SEC))
                r = cbus_cfg_error(&cfg, e, err, errlen, "must be between 100ms and 1d");
        } else if (!strcmp(s, "prices") && !strcmp(k, "file")) {
            if (e->value[0] && cbus_cfg_path(c->prices, sizeof c->prices, base_dir, e->value))
                r = cbus_cfg_error(&cfg, e, err, errlen, "path too long");
            else if (!e->value[0])
                c->prices[0] = '\0';
        } else if (!strcmp(s, "prices") && !strcmp(k, "overrides")) {
            if (e->value[0] &&
                cbus_cfg_path(c->prices_overrides, sizeof c->prices_overrides, base_dir, e->value))
                r = cbus_cfg_error(&cfg, e, err, errlen, "path too long");
        } else if (!strcmp(s, "http") && !strcmp(k, "listen")) {
            const char *why;
            if (!e->value[0])
                c->http_host[0] = '\0';
            else if (hist_parse_listen(e->value, c->http_host, sizeof c->http_host, &c->http_port,
                                       &why))
                r = cbus_cfg_error(&cfg, e, err, errlen, "'%s': %s", e->value, why);
        } else {
            static const char *const known[] = {"bus", "status", "store", "retention", "prices",
                                                "http", NULL};
            r = cbus_cfg_unknown(&cfg, e, known, err, errlen);
        }
    }
    cbus_cfg_free(&cfg);
    if (!r && !c->db[0]) {
        snprintf(err, errlen, "%s: no [store] path and no home directory for the default", name);
        r = -EINVAL;
    }
    return r;
}

static int parse_conf(void *c, const char *name, const char *text, const char *base_dir,
                      char *err, size_t errlen)
{
    return hist_config_parse(c, name, text, base_dir, err, errlen);
}

int hist_config_load(struct hist_config *c, const char *path, char *err, size_t errlen)
{
    if (!path) {
        defaults(c);
        if (!c->db[0]) {
            snprintf(err, errlen, "no home directory for the default store: give --db PATH");
            return -EINVAL;
        }
        return 0;
    }
    return cbus_cfg_load_with(path, parse_conf, c, err, errlen);
}

int hist_config_finish(struct hist_config *c)
{
    return cbus_cfg_expand_bus(c->db, sizeof c->db, c->bus);
}
