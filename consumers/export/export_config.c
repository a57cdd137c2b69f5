#include "export_config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cbus/cbus.h>
#include <cbus/consumer.h>

#include "config.h"

void export_config_defaults(struct export_config *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->bus, sizeof c->bus, "demo");
    snprintf(c->consumer_name, sizeof c->consumer_name, "export");
    c->lossless = 0;
    c->start = CBUS_START_RESUME;
    c->format = EXPORT_OTLP;
    c->otlp_encoding = 1; /* OTLP_PROTOBUF: what every OpenTelemetry SDK sends by default */
    snprintf(c->endpoint, sizeof c->endpoint, "http://127.0.0.1:4318");
    c->gzip = 0;
    c->gzip_level = 1;
    c->batch_max_items = 2048;
    c->batch_max_bytes = 4u << 20;
    c->batch_max_age_ns = 1000000000ull;
    c->max_in_flight = 4;
    c->queue_batches = 8;
    c->request_timeout_ns = 10000000000ull;
    c->connect_timeout_ns = 3000000000ull;
    c->retry_initial_ns = 500000000ull;
    c->retry_max_ns = 30000000000ull;
    c->shutdown_timeout_ns = 5000000000ull;
    snprintf(c->service_name, sizeof c->service_name, "cbus");
    c->include_previews = 0;
    c->capture_content = 0;
    c->content_max_bytes = 16384;
    c->content_memory = 64u << 20;
    c->run_timeout_ns = 600000000000ull;
    c->max_open_runs = 200000;
    c->spool_limit = 256u << 20;
    snprintf(c->auth_header_env, sizeof c->auth_header_env, "CBUS_EXPORT_AUTH_HEADER");
    snprintf(c->langfuse_public_key_env, sizeof c->langfuse_public_key_env, "LANGFUSE_PUBLIC_KEY");
    snprintf(c->langfuse_secret_key_env, sizeof c->langfuse_secret_key_env, "LANGFUSE_SECRET_KEY");
#ifdef CBUS_EXPORT_PRICES_DEFAULT
    snprintf(c->prices_file, sizeof c->prices_file, "%s", CBUS_EXPORT_PRICES_DEFAULT);
#endif
    c->tls_verify = 1;
    c->status_interval_ns = 1000000000ull;
}

void export_config_free(struct export_config *c)
{
    for (unsigned i = 0; i < c->n_headers; i++)
        free(c->headers[i]);
    c->n_headers = 0;
}

static int copy_str(const struct cbus_cfg *cfg, const struct cbus_cfg_entry *e, char *dst,
                    size_t cap, char *err, size_t errlen)
{
    size_t n = strlen(e->value);
    if (n >= cap)
        return cbus_cfg_error(cfg, e, err, errlen, "longer than %zu characters", cap - 1);
    memcpy(dst, e->value, n + 1);
    return 0;
}

static int env_name(const struct cbus_cfg *cfg, const struct cbus_cfg_entry *e, char *dst,
                    size_t cap, char *err, size_t errlen)
{
    for (const char *p = e->value; *p; p++)
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
            return cbus_cfg_error(cfg, e, err, errlen,
                                  "'%s' is not an environment variable name (secrets go in the environment, not here)",
                                  e->value);
    return copy_str(cfg, e, dst, cap, err, errlen);
}

static int header_ok(const char *name, const char *value)
{
    if (!*name)
        return 0;
    for (const char *p = name; *p; p++)
        if (*p <= ' ' || *p == ':' || *p >= 127)
            return 0;
    for (const char *p = value; *p; p++)
        if (*p == '\r' || *p == '\n')
            return 0;
    return 1;
}

#define IS(sec, key) (!strcmp(s, sec) && !strcmp(k, key))
enum { NOT_MINE = 1 }; /* a setting the function does not own */

/* [export] and [otlp]: what is sent, how it is batched and retried.  NOT_MINE for any other. */
static int export_entry(struct export_config *c, const struct cbus_cfg *cfg, const struct cbus_cfg_entry *e,
                        char *err, size_t errlen)
{
    const char *s = e->section, *k = e->key;
    uint64_t u;
    int r;
    if (IS("export", "format")) {
        static const char *const formats[] = {"otlp", "msgpack", NULL};
        return cbus_cfg_choice(cfg, e, formats, &c->format, err, errlen);
    }
    if (IS("otlp", "encoding")) {
        /* index = enum otlp_encoding */
        static const char *const encodings[] = {"json", "protobuf", NULL};
        return cbus_cfg_choice(cfg, e, encodings, &c->otlp_encoding, err, errlen);
    }
    if (IS("export", "endpoint")) {
        if (strncmp(e->value, "http://", 7) && strncmp(e->value, "https://", 8))
            return cbus_cfg_error(cfg, e, err, errlen, "'%s' is not an http:// or https:// URL", e->value);
        return copy_str(cfg, e, c->endpoint, sizeof c->endpoint, err, errlen);
    }
    if (IS("export", "gzip"))
        return cbus_cfg_bool(cfg, e, &c->gzip, err, errlen);
    if (IS("export", "gzip_level")) {
        if ((r = cbus_cfg_u64(cfg, e, 1, 9, &u, err, errlen)))
            return r;
        c->gzip_level = (int)u;
        return 0;
    }
    if (IS("export", "batch_max_items"))
        return cbus_cfg_u64(cfg, e, 1, 1000000, &c->batch_max_items, err, errlen);
    if (IS("export", "batch_max_bytes")) {
        if ((r = cbus_cfg_size(cfg, e, &c->batch_max_bytes, err, errlen)))
            return r;
        if (c->batch_max_bytes < 4096 || c->batch_max_bytes > (64u << 20))
            return cbus_cfg_error(cfg, e, err, errlen, "must be between 4k and 64M");
        return 0;
    }
    if (IS("export", "batch_max_age"))
        return cbus_cfg_duration_ns(cfg, e, &c->batch_max_age_ns, err, errlen);
    if (IS("export", "max_in_flight"))
        return cbus_cfg_u64(cfg, e, 1, 64, &c->max_in_flight, err, errlen);
    if (IS("export", "queue_batches"))
        return cbus_cfg_u64(cfg, e, 1, 1024, &c->queue_batches, err, errlen);
    if (IS("export", "request_timeout"))
        return cbus_cfg_duration_ns(cfg, e, &c->request_timeout_ns, err, errlen);
    if (IS("export", "connect_timeout"))
        return cbus_cfg_duration_ns(cfg, e, &c->connect_timeout_ns, err, errlen);
    if (IS("export", "retry_initial"))
        return cbus_cfg_duration_ns(cfg, e, &c->retry_initial_ns, err, errlen);
    if (IS("export", "retry_max"))
        return cbus_cfg_duration_ns(cfg, e, &c->retry_max_ns, err, errlen);
    if (IS("export", "shutdown_timeout"))
        return cbus_cfg_duration_ns(cfg, e, &c->shutdown_timeout_ns, err, errlen);
    if (IS("export", "service_name")) {
        if (!e->value[0])
            return cbus_cfg_error(cfg, e, err, errlen, "must not be empty");
        return copy_str(cfg, e, c->service_name, sizeof c->service_name, err, errlen);
    }
    if (IS("export", "resource_attributes")) {
        /* k=v,k=v */
        for (const char *p = e->value; *p;) {
            const char *comma = strchr(p, ',');
            size_t len = comma ? (size_t)(comma - p) : strlen(p);
            const char *eq = memchr(p, '=', len);
            if (!eq || eq == p)
                return cbus_cfg_error(cfg, e, err, errlen, "want key=value pairs separated by commas");
            p = comma ? comma + 1 : p + len;
        }
        return copy_str(cfg, e, c->resource_attributes, sizeof c->resource_attributes, err, errlen);
    }
    if (IS("export", "include_previews"))
        return cbus_cfg_bool(cfg, e, &c->include_previews, err, errlen);
    if (IS("export", "capture_content"))
        return cbus_cfg_bool(cfg, e, &c->capture_content, err, errlen);
    if (IS("export", "content_max_bytes")) {
        if ((r = cbus_cfg_size(cfg, e, &c->content_max_bytes, err, errlen)))
            return r;
        if (c->content_max_bytes < 256 || c->content_max_bytes > (16u << 20))
            return cbus_cfg_error(cfg, e, err, errlen, "must be between 256 and 16M");
        return 0;
    }
    return NOT_MINE;
}

/* [spans], [cost] and [spool]: span assembly, prices and the disk spool.  NOT_MINE for any other. */
static int spans_entry(struct export_config *c, const struct cbus_cfg *cfg, const struct cbus_cfg_entry *e,
                       char *err, size_t errlen)
{
    const char *s = e->section, *k = e->key;
    int r;
    if (IS("spans", "run_timeout")) {
        if ((r = cbus_cfg_duration_ns(cfg, e, &c->run_timeout_ns, err, errlen)))
            return r;
        if (c->run_timeout_ns < 1000000ull)
            return cbus_cfg_error(cfg, e, err, errlen, "must be at least 1ms");
        return 0;
    }
    if (IS("spans", "max_open_runs"))
        return cbus_cfg_u64(cfg, e, 16, 100000000, &c->max_open_runs, err, errlen);
    if (IS("spans", "content_memory")) {
        if ((r = cbus_cfg_size(cfg, e, &c->content_memory, err, errlen)))
            return r;
        if (c->content_memory < (1u << 20))
            return cbus_cfg_error(cfg, e, err, errlen, "must be at least 1M");
        return 0;
    }
    if (IS("cost", "prices") || IS("cost", "overrides")) {
        /* relative to the config file's directory, as cbus-cost reads [prices] file */
        char *dst = IS("cost", "prices") ? c->prices_file : c->prices_overrides;
        size_t cap = sizeof c->prices_file;
        const char *slash = strrchr(cfg->path, '/');
        int n;
        if (e->value[0] == '/' || !e->value[0] || !slash)
            n = snprintf(dst, cap, "%s", e->value);
        else
            n = snprintf(dst, cap, "%.*s/%s", (int)(slash - cfg->path), cfg->path, e->value);
        if (n < 0 || (size_t)n >= cap)
            return cbus_cfg_error(cfg, e, err, errlen, "path longer than %zu characters", cap - 1);
        if (IS("cost", "prices"))
            c->prices_explicit = 1;
        return 0;
    }
    if (IS("spool", "dir"))
        return copy_str(cfg, e, c->spool_dir, sizeof c->spool_dir, err, errlen);
    if (IS("spool", "limit")) {
        if ((r = cbus_cfg_size(cfg, e, &c->spool_limit, err, errlen)))
            return r;
        if (c->spool_limit < 65536)
            return cbus_cfg_error(cfg, e, err, errlen, "must be at least 64k");
        return 0;
    }
    return NOT_MINE;
}

/* [headers], [auth], [tls] and the [langfuse] and [phoenix] profiles.  NOT_MINE for any other. */
static int transport_entry(struct export_config *c, const struct cbus_cfg *cfg, const struct cbus_cfg_entry *e,
                           char *err, size_t errlen)
{
    const char *s = e->section, *k = e->key;
    if (!strcmp(s, "headers")) {
        if (c->n_headers >= EXPORT_MAX_HEADERS)
            return cbus_cfg_error(cfg, e, err, errlen, "at most %d headers", EXPORT_MAX_HEADERS);
        if (!header_ok(k, e->value))
            return cbus_cfg_error(cfg, e, err, errlen, "not a valid HTTP header");
        if (!strcasecmp(k, "Authorization"))
            return cbus_cfg_error(cfg, e, err, errlen,
                                  "secrets do not belong in the config: set [auth] header_env or basic_*_env");
        char *h = malloc(strlen(k) + strlen(e->value) + 3);
        if (!h)
            return -ENOMEM;
        sprintf(h, "%s: %s", k, e->value);
        c->headers[c->n_headers++] = h;
        return 0;
    }
    if (IS("langfuse", "host")) {
        if (strncmp(e->value, "http://", 7) && strncmp(e->value, "https://", 8))
            return cbus_cfg_error(cfg, e, err, errlen, "'%s' is not an http:// or https:// URL", e->value);
        return copy_str(cfg, e, c->langfuse_host, sizeof c->langfuse_host, err, errlen);
    }
    if (IS("phoenix", "host")) {
        if (strncmp(e->value, "http://", 7) && strncmp(e->value, "https://", 8))
            return cbus_cfg_error(cfg, e, err, errlen, "'%s' is not an http:// or https:// URL", e->value);
        return copy_str(cfg, e, c->phoenix_host, sizeof c->phoenix_host, err, errlen);
    }
    if (IS("phoenix", "project"))
        return copy_str(cfg, e, c->phoenix_project, sizeof c->phoenix_project, err, errlen);
    if (IS("langfuse", "public_key_env"))
        return env_name(cfg, e, c->langfuse_public_key_env, sizeof c->langfuse_public_key_env, err, errlen);
    if (IS("langfuse", "secret_key_env"))
        return env_name(cfg, e, c->langfuse_secret_key_env, sizeof c->langfuse_secret_key_env, err, errlen);
    if (IS("auth", "header_env"))
        return env_name(cfg, e, c->auth_header_env, sizeof c->auth_header_env, err, errlen);
    if (IS("auth", "basic_user_env"))
        return env_name(cfg, e, c->basic_user_env, sizeof c->basic_user_env, err, errlen);
    if (IS("auth", "basic_password_env"))
        return env_name(cfg, e, c->basic_password_env, sizeof c->basic_password_env, err, errlen);
    if (IS("tls", "ca_file"))
        return copy_str(cfg, e, c->ca_file, sizeof c->ca_file, err, errlen);
    if (IS("tls", "verify"))
        return cbus_cfg_bool(cfg, e, &c->tls_verify, err, errlen);
    return NOT_MINE;
}

static int set_entry(struct export_config *c, const struct cbus_cfg *cfg,
                     const struct cbus_cfg_entry *e, char *err, size_t errlen)
{
    const char *s = e->section, *k = e->key;
    int r;
    /* [bus] name, consumer and [status]: shared by every daemon (config.h);
     * [bus] consumer_name is still taken. */
    const struct cbus_cfg_common cc = {
        .bus = c->bus, .consumer = c->consumer_name, .consumer_size = sizeof c->consumer_name,
        .status_file = c->status_file, .status_file_size = sizeof c->status_file,
        .status_interval_ns = &c->status_interval_ns};
    if ((r = cbus_cfg_common_entry(&cc, cfg, e, err, errlen)))
        return r < 0 ? r : 0;
    if (IS("bus", "mode")) {
        static const char *const modes[] = {"lossy", "lossless", NULL};
        unsigned m;
        if ((r = cbus_cfg_choice(cfg, e, modes, &m, err, errlen)))
            return r;
        c->lossless = m == 1;
        return 0;
    }
    if (IS("bus", "start")) {
        static const char *const starts[] = {"newest", "oldest", "resume", NULL};
        static const unsigned map[] = {CBUS_START_NEWEST, CBUS_START_OLDEST, CBUS_START_RESUME};
        unsigned m;
        if ((r = cbus_cfg_choice(cfg, e, starts, &m, err, errlen)))
            return r;
        c->start = map[m];
        return 0;
    }
    if ((r = export_entry(c, cfg, e, err, errlen)) != NOT_MINE ||
        (r = spans_entry(c, cfg, e, err, errlen)) != NOT_MINE ||
        (r = transport_entry(c, cfg, e, err, errlen)) != NOT_MINE)
        return r;
    return cbus_cfg_error(cfg, e, err, errlen, "unknown setting");
}
#undef IS

int export_config_load(struct export_config *c, const char *path, char *err, size_t errlen)
{
    struct cbus_cfg cfg;
    int r = cbus_cfg_load(&cfg, path, err, errlen);
    if (r)
        return r;
    for (size_t i = 0; i < cfg.count && !r; i++)
        r = set_entry(c, &cfg, &cfg.entries[i], err, errlen);
    cbus_cfg_free(&cfg);
    return r;
}

/* The [langfuse] profile: Langfuse's OTLP endpoint on that host, Basic auth
 * with the project keys from the environment, and the ingestion version
 * header its docs ask direct exporters to send. */
static int langfuse_profile(struct export_config *c, char *err, size_t errlen)
{
    if (c->format != EXPORT_OTLP) {
        snprintf(err, errlen, "[langfuse] needs [export] format = otlp");
        return -EINVAL;
    }
    if (c->basic_user_env[0]) {
        snprintf(err, errlen, "[langfuse] sets the Basic auth itself: drop [auth] basic_user_env/basic_password_env "
                              "(name the variables with [langfuse] public_key_env/secret_key_env)");
        return -EINVAL;
    }
    size_t n = strlen(c->langfuse_host);
    while (n && c->langfuse_host[n - 1] == '/')
        c->langfuse_host[--n] = '\0';
    snprintf(c->endpoint, sizeof c->endpoint, "%s/api/public/otel", c->langfuse_host);
    snprintf(c->basic_user_env, sizeof c->basic_user_env, "%s", c->langfuse_public_key_env);
    snprintf(c->basic_password_env, sizeof c->basic_password_env, "%s", c->langfuse_secret_key_env);
    for (unsigned i = 0; i < c->n_headers; i++)
        if (!strncasecmp(c->headers[i], "x-langfuse-ingestion-version:", 29))
            goto have_header;
    if (c->n_headers >= EXPORT_MAX_HEADERS) {
        snprintf(err, errlen, "[langfuse] needs one header slot: at most %d [headers]", EXPORT_MAX_HEADERS - 1);
        return -EINVAL;
    }
    if (!(c->headers[c->n_headers] = strdup("x-langfuse-ingestion-version: 4"))) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    c->n_headers++;
have_header:
    c->langfuse = 1;
    return 0;
}

/* The [phoenix] profile: Arize Phoenix's OTLP/HTTP receiver on that host
 * (it answers 415 to anything but protobuf) and OpenInference attributes. */
static int phoenix_profile(struct export_config *c, char *err, size_t errlen)
{
    if (c->format != EXPORT_OTLP || c->otlp_encoding != 1 /* OTLP_PROTOBUF */) {
        snprintf(err, errlen, "[phoenix] needs [export] format = otlp with [otlp] encoding = protobuf "
                              "(Phoenix answers 415 to JSON)");
        return -EINVAL;
    }
    if (c->langfuse_host[0]) {
        snprintf(err, errlen, "[phoenix] and [langfuse] are two receivers: one exporter sends to one");
        return -EINVAL;
    }
    size_t n = strlen(c->phoenix_host);
    while (n && c->phoenix_host[n - 1] == '/')
        c->phoenix_host[--n] = '\0';
    snprintf(c->endpoint, sizeof c->endpoint, "%s", c->phoenix_host);
    c->phoenix = 1;
    return 0;
}

int export_config_finish(struct export_config *c, char *err, size_t errlen)
{
    int lr;
    if (c->phoenix_host[0] && !c->phoenix && (lr = phoenix_profile(c, err, errlen)))
        return lr;
    if (c->langfuse_host[0] && !c->langfuse && (lr = langfuse_profile(c, err, errlen)))
        return lr;
    if (c->format == EXPORT_OTLP) {
        size_t n = strlen(c->endpoint);
        while (n && c->endpoint[n - 1] == '/')
            c->endpoint[--n] = '\0';
        /* an endpoint already naming the traces path is taken as is */
        const char *suffix = "/v1/traces";
        int has = n >= 10 && !strcmp(c->endpoint + n - 10, suffix);
        snprintf(c->url, sizeof c->url, "%s%s", c->endpoint, has ? "" : suffix);
    } else {
        snprintf(c->url, sizeof c->url, "%s", c->endpoint);
    }
    if (c->retry_initial_ns == 0 || c->retry_max_ns < c->retry_initial_ns) {
        snprintf(err, errlen, "[export] retry_max must be at least retry_initial (> 0)");
        return -EINVAL;
    }
    if (!!c->basic_user_env[0] != !!c->basic_password_env[0]) {
        snprintf(err, errlen, "[auth] basic_user_env and basic_password_env go together");
        return -EINVAL;
    }
    if (c->batch_max_age_ns == 0) {
        snprintf(err, errlen, "[export] batch_max_age must be > 0");
        return -EINVAL;
    }
    return 0;
}
