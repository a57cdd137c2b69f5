#include "audit_config.h"

#include <cbus/consumer.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <cbus/cbus.h>

#include "config.h"

void audit_config_defaults(struct audit_config *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->name, sizeof c->name, "audit");
    snprintf(c->dir, sizeof c->dir, "audit-log");
    snprintf(c->prefix, sizeof c->prefix, "audit");
    c->start = CBUS_START_OLDEST;
    c->queue_depth = 16;
    c->batch_bytes = 4u << 20;
    c->batch_events = 8192;
    c->sync = AUDIT_SYNC_BATCH;
    c->sync_interval_ns = 10000000u;
    c->max_file_bytes = 256u << 20;
    c->max_file_age_ns = 3600ull * 1000000000u;
    c->retain_files = 0;
    c->preview = AUDIT_REDACT_KEEP;
    c->retry_initial_ns = 100000000u;
    c->retry_max_ns = 5000000000u;
    c->status_interval_ns = 1000000000u;
}

static int copy_str(const struct cbus_cfg *cfg, const struct cbus_cfg_entry *e, char *dst,
                    size_t size, char *err, size_t errlen)
{
    size_t n = strlen(e->value);
    if (n == 0 || n >= size)
        return cbus_cfg_error(cfg, e, err, errlen, "must be 1..%zu characters", size - 1);
    memcpy(dst, e->value, n + 1);
    return 0;
}

#define IS(sec, key) (!strcmp(s, sec) && !strcmp(k, key))
enum { NOT_MINE = 1 }; /* a setting the function does not own */

/* [io] and [rotate]: how the log is written, synced and rotated. */
static int io_entry(struct audit_config *c, const struct cbus_cfg *cfg, const struct cbus_cfg_entry *e,
                    char *err, size_t errlen)
{
    const char *s = e->section, *k = e->key;
    uint64_t u;
    int rc;
    if (IS("io", "queue_depth")) {
        if ((rc = cbus_cfg_u64(cfg, e, 8, 1024, &u, err, errlen)))
            return rc;
        c->queue_depth = (unsigned)u;
        return 0;
    }
    if (IS("io", "batch_bytes")) {
        if ((rc = cbus_cfg_size(cfg, e, &c->batch_bytes, err, errlen)))
            return rc;
        if (c->batch_bytes < (64u << 10) || c->batch_bytes > (256u << 20))
            return cbus_cfg_error(cfg, e, err, errlen, "must be between 64k and 256M");
        return 0;
    }
    if (IS("io", "batch_events")) {
        if ((rc = cbus_cfg_u64(cfg, e, 1, 1u << 20, &u, err, errlen)))
            return rc;
        c->batch_events = (unsigned)u;
        return 0;
    }
    if (IS("io", "sync")) {
        static const char *const choices[] = {"batch", "interval", NULL};
        return cbus_cfg_choice(cfg, e, choices, &c->sync, err, errlen);
    }
    if (IS("io", "sync_interval")) {
        if ((rc = cbus_cfg_duration_ns(cfg, e, &c->sync_interval_ns, err, errlen)))
            return rc;
        if (c->sync_interval_ns < 100000u || c->sync_interval_ns > 60000000000ull)
            return cbus_cfg_error(cfg, e, err, errlen, "must be between 100us and 60s");
        return 0;
    }
    if (IS("rotate", "max_bytes")) {
        if ((rc = cbus_cfg_size(cfg, e, &c->max_file_bytes, err, errlen)))
            return rc;
        if (c->max_file_bytes && c->max_file_bytes < 4096)
            return cbus_cfg_error(cfg, e, err, errlen, "must be 0 (never) or at least 4k");
        return 0;
    }
    if (IS("rotate", "max_age"))
        return cbus_cfg_duration_ns(cfg, e, &c->max_file_age_ns, err, errlen);
    if (IS("rotate", "retain_files")) {
        if ((rc = cbus_cfg_u64(cfg, e, 0, 1000000, &u, err, errlen)))
            return rc;
        c->retain_files = (unsigned)u;
        return 0;
    }
    return NOT_MINE;
}

/* [redact]: what of each event's preview and body the log keeps. */
static int redact_entry(struct audit_config *c, const struct cbus_cfg *cfg, const struct cbus_cfg_entry *e,
                        char *err, size_t errlen)
{
    const char *s = e->section, *k = e->key;
    if (IS("redact", "preview")) {
        static const char *const choices[] = {"keep", "hash", "drop", NULL};
        return cbus_cfg_choice(cfg, e, choices, &c->preview, err, errlen);
    }
    if (IS("redact", "body")) {
        static const char *const choices[] = {"keep", "hash", "drop", NULL};
        return cbus_cfg_choice(cfg, e, choices, &c->body, err, errlen);
    }
    if (!strcmp(s, "redact") && !strncmp(k, "body.", 5)) {
        /* Per kind, whatever order the lines come in: body = X is the
         * default for the kinds not named. */
        static const char *const choices[] = {"keep", "hash", "drop", NULL};
        int kind = cbus_kind_from_name(k + 5);
        if (kind <= 0 || kind >= CBUS_EV__COUNT)
            return cbus_cfg_error(cfg, e, err, errlen,
                                  "unknown kind '%s' (llm_start, chat_model_start, llm_end, "
                                  "tool_start, tool_end, ...)", k + 5);
        c->body_kind_set |= CBUS_KIND_BIT(kind);
        return cbus_cfg_choice(cfg, e, choices, &c->body_kind[kind], err, errlen);
    }
    if (IS("redact", "hash_salt")) {
        size_t n = strlen(e->value);
        if (n >= sizeof c->hash_salt)
            return cbus_cfg_error(cfg, e, err, errlen, "longer than %zu characters",
                                  sizeof c->hash_salt - 1);
        memcpy(c->hash_salt, e->value, n + 1);
        return 0;
    }
    return NOT_MINE;
}

static int set_entry(struct audit_config *c, const struct cbus_cfg *cfg,
                     const struct cbus_cfg_entry *e, char *err, size_t errlen)
{
    const char *s = e->section, *k = e->key;
    int rc;
    /* [bus] and [status]: the sections every daemon shares (config.h). */
    const struct cbus_cfg_common cc = {
        .daemon_section = "audit", .bus = c->bus, .consumer = c->name,
        .consumer_size = sizeof c->name, .status_file = c->status_file,
        .status_file_size = sizeof c->status_file, .status_off = &c->status_off,
        .status_interval_ns = &c->status_interval_ns, .start = &c->start};
    if ((rc = cbus_cfg_common_entry(&cc, cfg, e, err, errlen)))
        return rc < 0 ? rc : 0;
    if (IS("audit", "dir"))
        return copy_str(cfg, e, c->dir, sizeof c->dir, err, errlen);
    if (IS("audit", "prefix")) {
        if ((rc = copy_str(cfg, e, c->prefix, sizeof c->prefix, err, errlen)))
            return rc;
        for (const char *p = c->prefix; *p; p++)
            if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                  (*p >= '0' && *p <= '9') || *p == '_' || *p == '.' || *p == '-'))
                return cbus_cfg_error(cfg, e, err, errlen,
                                      "'%s': use only letters, digits, '_', '.', '-'", e->value);
        return 0;
    }
    if ((rc = io_entry(c, cfg, e, err, errlen)) != NOT_MINE ||
        (rc = redact_entry(c, cfg, e, err, errlen)) != NOT_MINE)
        return rc;
    if (IS("disk", "retry_initial"))
        return cbus_cfg_duration_ns(cfg, e, &c->retry_initial_ns, err, errlen);
    if (IS("disk", "retry_max"))
        return cbus_cfg_duration_ns(cfg, e, &c->retry_max_ns, err, errlen);
    if (IS("disk", "untether_after"))
        return cbus_cfg_duration_ns(cfg, e, &c->untether_after_ns, err, errlen);
    if (strcmp(s, "audit") && strcmp(s, "io") && strcmp(s, "rotate") && strcmp(s, "redact") &&
        strcmp(s, "disk") && strcmp(s, "status") && strcmp(s, "bus"))
        return cbus_cfg_error(cfg, e, err, errlen,
                              "unknown section [%s] (bus, audit, io, rotate, redact, disk, status)",
                              s);
    return cbus_cfg_error(cfg, e, err, errlen, "unknown key");
}
#undef IS

int audit_config_load(struct audit_config *c, const char *path, char *err, size_t errlen)
{
    struct cbus_cfg cfg;
    int rc = cbus_cfg_load(&cfg, path, err, errlen);
    if (rc)
        return rc;
    for (size_t i = 0; i < cfg.count && !rc; i++)
        rc = set_entry(c, &cfg, &cfg.entries[i], err, errlen);
    cbus_cfg_free(&cfg);
    return rc;
}

int audit_config_check(const struct audit_config *c, char *err, size_t errlen)
{
    if (!c->bus[0]) {
        snprintf(err, errlen, "no bus: give --bus NAME or [bus] name = NAME");
        return -EINVAL;
    }
    if (c->retry_initial_ns == 0 || c->retry_max_ns < c->retry_initial_ns) {
        snprintf(err, errlen, "[disk] retry_initial must be > 0 and <= retry_max");
        return -EINVAL;
    }
    if (c->batch_bytes < (uint64_t)AUDIT_HEADER_MAX + AUDIT_RECORD_MAX) {
        snprintf(err, errlen, "[io] batch_bytes too small");
        return -EINVAL;
    }
    return 0;
}

void audit_config_writer_opts(const struct audit_config *c, struct audit_writer_opts *o)
{
    memset(o, 0, sizeof *o);
    o->dir = c->dir;
    o->prefix = c->prefix;
    o->bus = c->bus;
    o->queue_depth = c->queue_depth;
    o->batch_bytes = (size_t)c->batch_bytes;
    o->batch_events = c->batch_events;
    o->sync = c->sync;
    o->sync_interval_ns = c->sync_interval_ns;
    o->max_file_bytes = c->max_file_bytes;
    o->max_file_age_ns = c->max_file_age_ns;
    o->retain_files = c->retain_files;
    o->redact.mode = c->preview;
    o->redact.body_default = c->body;
    for (unsigned k = 0; k < CBUS_EV__COUNT; k++)
        o->redact.body[k] = (c->body_kind_set & CBUS_KIND_BIT(k)) ? c->body_kind[k] : c->body;
    o->redact.salt = (const uint8_t *)c->hash_salt;
    o->redact.salt_len = strlen(c->hash_salt);
    o->retry_initial_ns = c->retry_initial_ns;
    o->retry_max_ns = c->retry_max_ns;
}
