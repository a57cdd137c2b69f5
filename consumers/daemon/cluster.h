/* Fleet state in Redis for the consumer daemons (issue 21): the [cluster]
 * section, the connection, and one pipelined round trip per sync interval.
 *
 * A daemon keeps deciding locally from its ring; every interval it hands
 * this module a batch of items (its local counts since the last batch),
 * which go to Redis in ONE EVALSHA of a Lua script that applies them
 * atomically and reads the fleet state back.  The daemon then turns the
 * fleet state into verdicts in its own node's admission table.  No producer
 * ever waits for this: only the daemon talks to Redis.
 *
 * Exactly once, through idempotent per-node batch keys: every batch carries
 * (node/role, run, seq).  The script keeps, per node/role, the last
 * (run, seq) it applied in the hash PREFIX"seq"; a batch whose seq is not
 * newer than that is not applied again, only read.  A batch whose reply is
 * lost (a timeout, a dropped connection, a Redis that was stopped) stays
 * sealed and is sent again, unchanged, until a reply comes: a batch the
 * server had applied before the connection broke is then skipped, one it
 * never saw is applied.  New counts wait in the daemon until then.
 *
 * The loop never waits for Redis: the socket is non-blocking; a sync call
 * writes what the socket takes, reads what has come and returns, so the
 * daemon calls it every tick (cbus_cluster_tick_ns: interval / 20) and
 * keeps reading its ring in between.  A reply later than `timeout`
 * (default 50 ms) is a failure; the next connect waits for a backoff (the
 * interval, doubling to 2 s).  Name resolution of a host name is the one
 * blocking step (getaddrinfo, at connect): give an IP address.  Every key the script touches is PREFIX + something; keys of
 * other prefixes are never named.  Replies are checked for shape and
 * range before use: a Redis (or something else on the port) that answers
 * errors or garbage is a failed sync, logged once per change, never a crash.
 *
 * hiredis 0.14 (Debian 12's libhiredis-dev) has no TLS: `tls = true` is a
 * configuration error saying so.  AUTH (password, or ACL user + password)
 * and SELECT are supported. */
#ifndef CBUS_COMMON_CLUSTER_H
#define CBUS_COMMON_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

struct sbuf;

#define CBUS_CLUSTER_NODE_MAX   64
#define CBUS_CLUSTER_PREFIX_MAX 64

struct cbus_cluster_conf {
    int enabled;                      /* a [cluster] section with an address */
    char host[256];                   /* address = HOST:PORT ... */
    unsigned port;
    char unix_path[108];              /* ... or address = unix:/path */
    char prefix[CBUS_CLUSTER_PREFIX_MAX]; /* key prefix, default "cbus:" */
    char node[CBUS_CLUSTER_NODE_MAX]; /* node id, default the host name */
    uint64_t interval_ns;             /* sync interval, default 100 ms (10 ms .. 10 s) */
    uint64_t timeout_ns;              /* connect and command timeout, default 50 ms */
    double local_share;               /* share of a fleet limit a node may use on its own:
                                         per interval (the lease) and while Redis is away */
    unsigned db;                      /* SELECT, default 0 */
    char user[64];                    /* ACL user (Redis 6+), "" = default user */
    char password[256];               /* from password_env (never written in the file) */
    unsigned max_items;               /* items per batch, default 10000 */
};

/* Defaults (not enabled). */
void cbus_cluster_conf_init(struct cbus_cluster_conf *c);
/* One entry of the [cluster] section; errors name file, line and key.
 * Returns 0 or -EINVAL. */
int cbus_cluster_conf_entry(struct cbus_cluster_conf *c, const struct cbus_cfg *cfg,
                            const struct cbus_cfg_entry *e, char *err, size_t errlen);
/* After the last entry: checks the section as a whole (an address is
 * needed once the section exists) and fills the node id.  Returns 0 or
 * -EINVAL ("FILE: [cluster]: ..."). */
int cbus_cluster_conf_finish(struct cbus_cluster_conf *c, const struct cbus_cfg *cfg,
                             int section_seen, char *err, size_t errlen);

typedef struct cbus_cluster cbus_cluster;

/* What the daemon's script does with one item.  item_lua is the body of
 *   local function item(k, a, apply, now, at) ... end
 * k: the item's key (PREFIX + suffix); a: its nargs arguments (strings);
 * apply: true unless this batch was applied before (then only read);
 * now: Redis time in microseconds; at: the batch's time (when the node
 * sealed it, on Redis's clock as far as the node knows it; <= now).  It
 * returns a table of nres values (integers or decimal strings). */
struct cbus_cluster_script {
    const char *role;      /* "ratelimit", "cost": the batch key is node/role */
    const char *item_lua;
    unsigned nargs, nres;  /* 1..8 each */
};

/* Connects later (the first sync); never fails for an unreachable Redis.
 * Returns 0, -EINVAL (bad script shape), -ENOMEM. */
int cbus_cluster_open(cbus_cluster **out, const struct cbus_cluster_conf *conf,
                      const struct cbus_cluster_script *script);
void cbus_cluster_close(cbus_cluster *cl);

/* Adds an item to the batch being filled (inside fill, below).  suffix:
 * appended to the prefix (printable, 1..200 bytes); args: nargs strings;
 * cookie: bytes the daemon gets back with the item's result.  Returns 0,
 * -ENOSPC (max_items reached: the daemon keeps the rest for later),
 * -EINVAL, -ENOMEM. */
int cbus_cluster_add(cbus_cluster *cl, const char *suffix, const char *const *args,
                     const void *cookie, size_t cookie_len);

/* Fills a new batch (when none is awaiting its reply): the daemon adds its
 * items and takes them out of its own pending counts. */
typedef void (*cbus_cluster_fill_fn)(void *arg, cbus_cluster *cl, uint64_t now_ns);
/* One item's fleet state, from the reply (res: nres values). */
typedef void (*cbus_cluster_apply_fn)(void *arg, const void *cookie, size_t cookie_len,
                                      const int64_t *res, unsigned nres, uint64_t now_ns);

/* One turn, never waiting: connects when the backoff allows (AUTH, SELECT,
 * SCRIPT LOAD queued behind), seals and queues a batch once per interval
 * (fill), writes, reads, applies a complete reply (apply).  Returns 0 (a
 * reply applied: apply ran for every item), -EINPROGRESS (waiting for a
 * reply or the next interval), -EAGAIN (away, backoff running; the batch
 * is kept), or another -errno (this turn failed; the batch is kept). */
int cbus_cluster_sync(cbus_cluster *cl, uint64_t now_ns, cbus_cluster_fill_fn fill,
                      cbus_cluster_apply_fn apply, void *arg);
/* How often a daemon should call cbus_cluster_sync: interval / 20, 1..10 ms. */
uint64_t cbus_cluster_tick_ns(const struct cbus_cluster_conf *c);

struct cbus_cluster_stats {
    int up;                   /* the last round trip worked */
    uint64_t syncs;           /* batches whose reply came */
    uint64_t failures;        /* rounds that failed (connect, timeout, error, garbage) */
    uint64_t connects;        /* connections made (the first, then reconnects) */
    uint64_t items;           /* items sent in replied batches */
    uint64_t resent;          /* sends of a batch sent before (reply lost) */
    uint64_t replays_skipped; /* of those, batches Redis had applied already */
    uint64_t cutoffs;         /* times the daemon went from up (or start) to away */
    uint64_t cut_off_ns;      /* time away, in total, up to now (start counts until
                                 the first sync) */
    uint64_t rtt_last_ns, rtt_max_ns;
    uint64_t pending_items;   /* items of a batch awaiting its reply */
    char last_error[160];
};
void cbus_cluster_get_stats(const cbus_cluster *cl, uint64_t now_ns, struct cbus_cluster_stats *out);
/* Appends "\"cluster\":{...}" (state, node, address, counters). */
void cbus_cluster_status_json(const cbus_cluster *cl, struct sbuf *b, uint64_t now_ns);
/* Prometheus lines (cbus_<daemon>_cluster_*), for daemons with /metrics. */
void cbus_cluster_prom(const cbus_cluster *cl, struct sbuf *b, const char *daemon, uint64_t now_ns);
const struct cbus_cluster_conf *cbus_cluster_conf(const cbus_cluster *cl);
/* Redis time minus the node's monotonic clock, in ns, as of the last reply
 * (0 = no reply yet). */
int64_t cbus_cluster_clock_offset_ns(const cbus_cluster *cl);

#endif
