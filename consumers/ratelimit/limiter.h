/* The limiter: counts requests and tokens from events against the rules with
 * GCRA, and keeps the verdicts it wants published.
 *
 * It has no clock of its own.  Every decision is made at the event's
 * ts_mono_ns; the housekeeping calls (rl_drain, rl_expire, rl_status_json)
 * take `now` from the caller, so tests drive it with an injected clock and
 * the daemon with cbus_now_ns().  Nothing here touches the bus: the daemon
 * hands rl_drain() a function that writes the admission table.
 *
 * GCRA (the virtual scheduling form): each key keeps a theoretical arrival
 * time tat per limit.  A unit costs I = 60 s / limit; charging n units at t
 * sets tat = max(tat, t) + n*I.  The key has room for one more unit while
 * tat - t <= (burst - 1) * I, so it is throttled until tat - (burst-1)*I.
 * That is a token bucket of `burst` units refilled continuously at `limit`
 * per minute: rpm=60 is one request per second sustained, with up to `burst`
 * (default 60) at once.  To stay exact for any limit, tat is kept in units of
 * 1/limit ns (so I is exactly 60e9 of them) in 128-bit integers.
 */
#ifndef CBUS_RATELIMIT_LIMITER_H
#define CBUS_RATELIMIT_LIMITER_H

#include <cbus/layout.h>

#include <stddef.h>
#include <stdint.h>

#include "rules.h"

struct sbuf;

struct rl_opts {
    size_t max_keys;        /* counters kept at once; 0 = 1,000,000 */
    size_t max_pending;     /* llm_start estimates awaiting llm_end; 0 = 1,000,000 */
    size_t max_published;   /* verdicts kept (the table's size); 0 = 4096 */
    uint64_t pending_ttl_ns;/* an estimate with no llm_end is dropped after; 0 = 10 min */
    int count_only;         /* decide but publish nothing (dry run) */
};

struct rl_stats {
    uint64_t events;          /* events fed */
    uint64_t requests;        /* llm_start + chat_model_start */
    uint64_t input_tokens;    /* from llm_end usage (estimate when input absent) */
    uint64_t output_tokens;
    uint64_t estimated_tokens;/* est_input_tokens charged at start */
    uint64_t over_limit;      /* requests that started while a key of theirs was throttled */
    uint64_t throttles;       /* keys going from allowed to throttled */
    uint64_t untracked;       /* events a key could not be created for (max_keys): not limited */
    uint64_t keys;            /* live keys */
    uint64_t keys_peak;
    uint64_t keys_expired;
    uint64_t pending;         /* estimates awaiting llm_end */
    uint64_t pending_expired;
    uint64_t pending_dropped; /* no room to remember an estimate */
    uint64_t published;       /* throttle verdicts written */
    uint64_t cleared;         /* verdicts cleared after they lapsed */
    uint64_t publish_failed;  /* the table was full or refused */
};

typedef struct rl_limiter rl_limiter;

/* Publishes one verdict: CBUS_THROTTLED until until_ns, or CBUS_ALLOW (clear).
 * key_hash is the whole value's cbus_key_hash (what the admission table is
 * keyed by: cbus_admit_publish_hash), key the event's field as shown,
 * NUL-terminated ("*" for the global scope).  Returns 0 or -errno. */
typedef int (*rl_publish_fn)(void *ctx, unsigned scope, uint64_t key_hash, const char *key,
                             unsigned verdict, uint64_t until_ns);

/* Takes ownership of rules (finished with rl_rules_finish).  Returns 0,
 * -ENOMEM, -EINVAL (more than 65535 rules). */
int rl_new(rl_limiter **out, struct rl_rules *rules, const struct rl_opts *opts);
void rl_free(rl_limiter *l);
const struct rl_rules *rl_rules(const rl_limiter *l);

/* Counts one event (llm_start, chat_model_start, llm_end, llm_error; others
 * are ignored) at its ts_mono_ns. */
void rl_feed(rl_limiter *l, const struct cbus_event *ev);
/* The same for n events in order, faster: it hashes a few events ahead and
 * prefetches their keys, so cache misses on a large key set overlap. */
void rl_feed_batch(rl_limiter *l, const struct cbus_event *evs, size_t n);

/* Writes wanted verdicts that changed and clears lapsed ones.  Returns the
 * number of calls made to fn. */
unsigned rl_drain(rl_limiter *l, uint64_t now, rl_publish_fn fn, void *ctx);

/* Drops keys whose buckets are full again at now (lossless: such a key acts
 * exactly like an absent one) and estimates older than the TTL. */
void rl_expire(rl_limiter *l, uint64_t now);

/* What every rule (published or not) says about a request with ev's
 * user/session/model/provider at now: CBUS_ALLOW or CBUS_THROTTLED with
 * *retry_after_ns (may be NULL).  For tests and the status. */
int rl_check(const rl_limiter *l, const struct cbus_event *ev, uint64_t now,
             uint64_t *retry_after_ns);

/* The throttle the limiter wants published for (scope, key), key being the
 * whole value: its until_ns, or 0 when none. */
uint64_t rl_published_until(const rl_limiter *l, unsigned scope, const char *key);

void rl_get_stats(const rl_limiter *l, struct rl_stats *out);

/* Fleet mode (consumers/ratelimit/fleet.h): this node's charges are kept
 * for Redis; local_share in (0, 1] is its lease of the fleet's room after
 * each sync.  Call before feeding events.  The limiter starts away. */
void rl_set_fleet(rl_limiter *l, double local_share);
/* Redis away (1): each unit charged here costs 1/local_share units, so the
 * node holds itself to local_share of every limit; back (0): 1 unit. */
void rl_set_fleet_away(rl_limiter *l, int away);

/* Appends the status JSON object: counters, rules, the `top` hottest keys. */
void rl_status_json(const rl_limiter *l, struct sbuf *b, uint64_t now, unsigned top);

#endif
