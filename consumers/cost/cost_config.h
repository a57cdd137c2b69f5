/* cbus-cost configuration: the INI file (consumers/daemon/config.h syntax)
 * plus command-line overrides.  Every error names FILE:LINE: [section] key.
 * See docs/cost.md for the reference and consumers/cost/cost.ini.in. */
#ifndef CBUS_COST_CONFIG_H
#define CBUS_COST_CONFIG_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include "budget.h"
#include "cluster.h"

#define COST_PATH_MAX 1024

struct cost_config {
    char bus[32];                  /* [bus] name, or --bus */
    char consumer[24];             /* [bus] consumer: our name on the bus */
    unsigned start;                /* [bus] start: enum cbus_start with no checkpoint (oldest) */
    char prices_file[COST_PATH_MAX];
    char overrides_file[COST_PATH_MAX];   /* "" = none */
    char state_dir[COST_PATH_MAX];
    uint64_t checkpoint_interval_ns;
    int fsync;                            /* checkpoints durable across power loss */
    uint64_t snapshot_interval_ns;
    uint64_t session_ttl_ns;              /* 0 = keep sessions forever */
    uint64_t max_users, max_sessions, max_models, max_agents, max_tenants;
    uint64_t snapshot_max_sessions;
    char prom_textfile[COST_PATH_MAX];    /* "" = none */
    char status_file[COST_PATH_MAX];      /* [status] file; "" = STATE/status.json */
    int status_off;                       /* [status] file = off */
    uint64_t status_interval_ns;          /* [status] interval; 0 = with the outputs */
    int prom_users;                       /* per-user series in Prometheus output */
    char http_host[64];                   /* "" = no HTTP endpoint */
    unsigned http_port;
    char webhook_url[1024];               /* "" = none */
    uint64_t webhook_timeout_ns;
    struct cost_budget *budgets;          /* all budgets */
    size_t n_budgets;
    long global_idx, user_default_idx, session_default_idx; /* -1 = none */
    long agent_default_idx, tenant_default_idx;              /* -1 = none */
    struct cbus_cluster_conf cluster;     /* [cluster]: budgets fleet-wide (fleet_cost.h) */
};

/* Defaults, then the file at path (NULL = defaults only).  Relative paths
 * in the file are taken relative to the file's directory; "%b" in
 * state_dir and textfile becomes the bus name.  Returns 0 or -errno with a
 * message in err. */
int cost_config_load(struct cost_config *c, const char *path, char *err, size_t errlen);
int cost_config_parse(struct cost_config *c, const char *name, const char *text,
                      const char *base_dir, char *err, size_t errlen);
/* Expands "%b" once the bus name is final (after --bus). */
void cost_config_finish(struct cost_config *c);
void cost_config_free(struct cost_config *c);

/* "1d", "7d", "30d", "none" => days (0 = none).  Returns 0 or -EINVAL. */
int cost_parse_period(const char *s, uint32_t *days);

#endif
