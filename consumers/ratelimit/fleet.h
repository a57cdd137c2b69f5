/* cbus-ratelimit across a fleet (issue 21): the limiter's per-key counts go
 * to Redis every [cluster] interval (consumers/daemon/cluster.h), where a
 * Lua script keeps one GCRA bucket per (rule, key) for the whole fleet on
 * Redis's clock; the fleet's bucket comes back and replaces the node's own
 * view of the key, so the verdicts this node publishes into its admission
 * table are fleet-wide.  Between two syncs a node spends at most
 * local_share of the room the fleet had left (its lease; the rest is
 * reserved for the others), and while Redis is away (or not reached yet)
 * it holds itself to local_share of each limit.  docs/fleet.md. */
#ifndef CBUS_RATELIMIT_FLEET_H
#define CBUS_RATELIMIT_FLEET_H

#include <stdint.h>

#include "cluster.h"
#include "limiter.h"

struct sbuf;

typedef struct rl_fleet rl_fleet;

/* Puts the limiter in fleet mode (rl_set_fleet) and opens the cluster
 * connection (made at the first sync).  Returns 0, -EINVAL, -ENOMEM. */
int rl_fleet_open(rl_fleet **out, rl_limiter *l, const struct cbus_cluster_conf *conf);
void rl_fleet_close(rl_fleet *f);
/* One turn (the daemon's timer, every cbus_cluster_tick_ns()): once an
 * interval sends the counts since the last batch, and applies the fleet's
 * buckets when the reply has come, never waiting.  Verdicts that change are
 * left for rl_drain().  Returns what cbus_cluster_sync() does (0: applied). */
int rl_fleet_sync(rl_fleet *f, uint64_t now);
/* "\"cluster\":{...}" for the status file. */
void rl_fleet_status_json(const rl_fleet *f, struct sbuf *b, uint64_t now);
const cbus_cluster *rl_fleet_cluster(const rl_fleet *f);

#endif
