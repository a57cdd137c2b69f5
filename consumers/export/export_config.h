/* cbus-export configuration: defaults, the INI file, validation.
 * Every value has a default; the file overrides them; --bus overrides
 * [bus] name.  Errors name FILE:LINE: [section] key. */
#ifndef CBUS_EXPORT_CONFIG_H
#define CBUS_EXPORT_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#define EXPORT_MAX_HEADERS 16

enum export_format { EXPORT_OTLP = 0, EXPORT_MSGPACK = 1 };

struct export_config {
    /* [bus] */
    char bus[32];
    char consumer_name[24];
    int lossless;               /* mode = lossless */
    unsigned start;             /* enum cbus_start: resume (default), newest, oldest */
    /* [export] */
    unsigned format;            /* enum export_format */
    char endpoint[512];         /* OTLP: base URL, /v1/traces is appended; msgpack: full URL */
    char url[600];              /* derived */
    int gzip;
    int gzip_level;
    uint64_t batch_max_items;   /* spans (OTLP) or events (msgpack) per request */
    uint64_t batch_max_bytes;   /* uncompressed body bytes per request */
    uint64_t batch_max_age_ns;  /* a partial batch leaves after this long */
    uint64_t max_in_flight;
    uint64_t queue_batches;     /* finished batches kept in memory while all requests are busy */
    uint64_t request_timeout_ns;
    uint64_t connect_timeout_ns;
    uint64_t retry_initial_ns;
    uint64_t retry_max_ns;
    uint64_t shutdown_timeout_ns;
    char service_name[128];
    char resource_attributes[512];
    int include_previews;
    int capture_content;        /* prompts, messages, outputs, tool and retrieval texts (off: OTel's default) */
    uint64_t content_max_bytes; /* per content attribute; longer values are cut and listed in cbus.content.cut */
    /* [otlp] */
    unsigned otlp_encoding;     /* enum otlp_encoding (otlp.h): protobuf (default) or json */
    /* [langfuse]: a host turns the profile on (export_config_finish) */
    char langfuse_host[512];
    char langfuse_public_key_env[64]; /* default LANGFUSE_PUBLIC_KEY */
    char langfuse_secret_key_env[64]; /* default LANGFUSE_SECRET_KEY */
    int langfuse;               /* derived: the profile is on */
    /* [phoenix]: a host turns the OpenInference profile on (export_config_finish) */
    char phoenix_host[512];
    char phoenix_project[128];  /* resource openinference.project.name; "" = Phoenix's default */
    int phoenix;                /* derived: the profile is on */
    /* [cost]: the price table cbus-cost uses, for gen_ai.usage.cost */
    char prices_file[512];      /* "" = no pricing; default: the installed table (if present) */
    char prices_overrides[512];
    int prices_explicit;        /* set in the file: a table that does not load is an error */
    /* [spans] */
    uint64_t run_timeout_ns;
    uint64_t max_open_runs;
    uint64_t content_memory;    /* bytes of start bodies (content, tags, metadata) open runs may hold */
    /* [spool] */
    char spool_dir[512];        /* "" = memory only (nothing survives a restart) */
    uint64_t spool_limit;       /* bytes */
    /* [headers] Name = value */
    char *headers[EXPORT_MAX_HEADERS]; /* "Name: value" */
    unsigned n_headers;
    /* [auth]: names of environment variables; the secrets never enter the config */
    char auth_header_env[64];   /* whole header line, e.g. "Authorization: Bearer ..." */
    char basic_user_env[64];    /* Basic auth (Langfuse: LANGFUSE_PUBLIC_KEY) */
    char basic_password_env[64];/* (Langfuse: LANGFUSE_SECRET_KEY) */
    /* [tls] */
    char ca_file[512];
    int tls_verify;
    /* [status] */
    char status_file[512];
    uint64_t status_interval_ns;
};

void export_config_defaults(struct export_config *c);
/* Loads path over the defaults.  Returns 0, or -errno with err filled. */
int export_config_load(struct export_config *c, const char *path, char *err, size_t errlen);
/* Checks cross-field rules and derives url.  Returns 0 or -EINVAL. */
int export_config_finish(struct export_config *c, char *err, size_t errlen);
void export_config_free(struct export_config *c);

#endif
