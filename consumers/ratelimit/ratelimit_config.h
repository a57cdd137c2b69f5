/* cbus-ratelimit's configuration file (ratelimit.ini):
 *
 *   [ratelimit]
 *   name = ratelimit            # consumer and admission-writer name
 *   status_file = %S/ratelimit/status.json
 *   status_interval = 1s
 *   status_top = 20
 *   max_keys = 1000000
 *   pending_ttl = 10m
 *   count_only = false
 *
 *   [rules]
 *   rule = user=* rpm=60 tpm=100000
 *
 * Errors name the file, line, section and key: "ratelimit.ini:14: [rules]
 * rule: unknown option 'rpn'".
 */
#ifndef CBUS_RATELIMIT_RLCONFIG_H
#define CBUS_RATELIMIT_RLCONFIG_H

#include <cbus/layout.h>

#include "cluster.h"
#include "limiter.h"
#include "rules.h"

struct rl_config {
    char bus[CBUS_NAME_MAX];  /* [bus] name ("" = --bus only) */
    char name[CBUS_NAME_MAX]; /* [bus] consumer ([ratelimit] name still taken) */
    char status_file[1024];   /* "" = the default path (statuscmd.h) */
    uint64_t status_interval_ns;
    unsigned status_top;
    struct rl_opts opts;
    struct rl_rules rules;    /* finished */
    struct cbus_cluster_conf cluster; /* [cluster]: fleet limits through Redis (fleet.h) */
};

/* Returns 0, or -errno with "FILE:LINE: [section] key: problem" in err. */
int rl_config_load(struct rl_config *c, const char *path, char *err, size_t errlen);
/* Same on text in memory (tests); name is used in messages. */
int rl_config_parse(struct rl_config *c, const char *name, const char *text, char *err,
                    size_t errlen);
void rl_config_free(struct rl_config *c);

#endif
