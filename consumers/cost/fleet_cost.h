/* cbus-cost budgets across a fleet (issue 21): every amount a node adds to
 * a budget also goes to Redis (consumers/daemon/cluster.h), one counter per
 * (scope, whole-value hash, period start) for the whole fleet, and the
 * script that adds it also marks which of the budget's thresholds the
 * fleet's spend has reached.  A mark is claimed by exactly one node (the
 * one whose batch crossed it), which alerts (log, webhook): once for the
 * fleet.  Every node that holds the entity publishes "budget exceeded"
 * into its own admission table once the fleet's spend reaches the limit.
 * Between two syncs a node spends at most local_share of what the fleet
 * had left (its lease; then it holds the entity until a sync shows room),
 * which is also all it spends on its own while Redis is away; the alerts
 * wait for the counts to reach Redis.  docs/fleet.md. */
#ifndef CBUS_COST_FLEET_COST_H
#define CBUS_COST_FLEET_COST_H

#include <stdint.h>

#include "cluster.h"
#include "ledger.h"

struct sbuf;

struct cost_fleet_hooks {
    /* A mark this node claimed for the fleet: log and webhook it. */
    void (*alert)(void *arg, const struct cost_alert *a);
    /* Publish (CBUS_BUDGET_EXCEEDED until until_ns, 0 = no end) or clear (CBUS_ALLOW). */
    void (*verdict)(void *arg, unsigned scope, const char *key, uint64_t key_hash, unsigned verdict,
                    uint64_t until_ns);
    void *arg;
};

typedef struct cost_fleet cost_fleet;

/* Hooks the ledger (on_spend) and opens the cluster connection (made at
 * the first sync).  Returns 0, -EINVAL, -ENOMEM. */
int cost_fleet_open(cost_fleet **out, struct cost_ledger *l, const struct cbus_cluster_conf *conf,
                    const struct cost_fleet_hooks *hooks);
void cost_fleet_close(cost_fleet *f);
/* One sync (the daemon's timer).  now: monotonic; real_now: UTC ns (for
 * periods).  Returns what cbus_cluster_sync() does. */
int cost_fleet_sync(cost_fleet *f, uint64_t now, uint64_t real_now);
/* Appends ,"cluster":{...} inside a JSON object that ends in '}' (the
 * snapshot), and the Prometheus lines. */
void cost_fleet_json(const cost_fleet *f, struct sbuf *b, uint64_t now);
void cost_fleet_prom(const cost_fleet *f, struct sbuf *b, uint64_t now);

#endif
