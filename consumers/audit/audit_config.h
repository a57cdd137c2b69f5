/* cbus-audit configuration (audit.ini): see docs/audit.md for the reference. */
#ifndef CBUS_AUDIT_AUDIT_CONFIG_H
#define CBUS_AUDIT_AUDIT_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include <cbus/layout.h>

#include "writer.h"

struct audit_config {
    /* [bus] (config.h's shared section; [audit] bus and name still taken) */
    char bus[CBUS_NAME_MAX];        /* [bus] name; --bus overrides */
    char name[CBUS_NAME_MAX];       /* [bus] consumer: the consumer name on the bus */
    /* [audit] */
    char dir[4096];                 /* log directory (--dir overrides) */
    char prefix[64];                /* file name prefix */
    unsigned start;                 /* [bus] start, with no log yet: enum cbus_start (oldest) */
    /* [io] */
    unsigned queue_depth;
    uint64_t batch_bytes;
    unsigned batch_events;
    unsigned sync;                  /* enum audit_sync */
    uint64_t sync_interval_ns;
    /* [rotate] */
    uint64_t max_file_bytes;
    uint64_t max_file_age_ns;
    unsigned retain_files;
    /* [redact] */
    unsigned preview;               /* enum audit_redaction */
    unsigned body;                  /* enum audit_redaction: bodies of kinds not named */
    unsigned body_kind[CBUS_EV__COUNT]; /* body.<kind> = ..., where body_kind_set has the kind */
    uint64_t body_kind_set;         /* CBUS_KIND_BIT */
    char hash_salt[256];
    /* [disk] */
    uint64_t retry_initial_ns;
    uint64_t retry_max_ns;
    uint64_t untether_after_ns;     /* stop heartbeating after failing this long (0 = never) */
    /* [status] */
    char status_file[4096];         /* the status envelope (status.h); "" = DIR/status.json */
    uint64_t status_interval_ns;    /* rewritten this often (and on SIGUSR1) */
    int status_off;                 /* file = off */
};

void audit_config_defaults(struct audit_config *c);
/* Loads path over the defaults.  Returns 0, or -EINVAL/-errno with err as
 * "FILE:LINE: [section] key: problem". */
int audit_config_load(struct audit_config *c, const char *path, char *err, size_t errlen);
/* Checks cross-field rules after flags are applied.  0 or -EINVAL with err. */
int audit_config_check(const struct audit_config *c, char *err, size_t errlen);
/* Fills writer options from the config (pointers into c). */
void audit_config_writer_opts(const struct audit_config *c, struct audit_writer_opts *o);

#endif
