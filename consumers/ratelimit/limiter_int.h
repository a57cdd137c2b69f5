/* Limiter internals shared by limiter.c (counting), verdicts.c (what to
 * publish) and status.c (what to show). */
#ifndef CBUS_RATELIMIT_LIMITER_INT_H
#define CBUS_RATELIMIT_LIMITER_INT_H

#include "limiter.h"
#include "map.h"

__extension__ typedef unsigned __int128 rl_u128;

/* Key bytes: the group, then per dim of the group its length, the shown
 * bytes and the whole value's 8-byte hash (two values that share the shown
 * prefix are two keys). */
#define RL_KEY_MAX (1 + RL_DIM__COUNT * (1 + 8) + CBUS_USER_LEN + CBUS_SESSION_LEN + \
                    CBUS_MODEL_LEN + CBUS_PROVIDER_LEN + CBUS_AGENT_LEN + CBUS_TENANT_LEN)

/* One counter set: a (group, values) tuple under its winning rule.  What an
 * event touches comes first: the decision state (64 bytes), the counters,
 * then the key (a user id with its hash is 32 bytes at offset 96), so an
 * event touches the entry's first 128 bytes, which span up to three lines
 * of an entry that is not line-aligned; rl_feed_batch() prefetches them. */
struct rl_key {
    struct rl_ent hdr;
    uint32_t rule;        /* index of the winning rule */
    uint32_t _reserved;
    rl_u128 req_tat;      /* GCRA tat in 1/limit ns; 0 = never charged */
    rl_u128 tok_tat;
    uint64_t until_ns;    /* throttled until (as of the last event), 0 = never */
    /* second line: the counters every event bumps, then the key */
    uint64_t requests;    /* totals while the key has been live */
    uint64_t tokens;
    uint64_t over_limit;
    char key[RL_KEY_MAX];
    /* Fleet mode (fleet.c), after the key so the lines an event touches
     * stay where they were: units charged here since they were last taken
     * into a batch for Redis (signed: a refund can outweigh the charges). */
    int64_t fleet_req, fleet_tok;
    uint32_t fleet_synced;  /* Redis's view has replaced ours at least once */
    uint32_t _reserved2;
};

/* An event's values and, per active group, its key bytes and hash:
 * computed once per event (ahead of time in a batch, to prefetch). */
struct rl_evkeys {
    int relevant;          /* a kind the limiter counts */
    struct rl_dims d;
    uint64_t hash[RL_GROUPS_USED_MAX];
    uint32_t klen[RL_GROUPS_USED_MAX];
    char kb[RL_GROUPS_USED_MAX][RL_KEY_MAX];
};
#define RL_BATCH 16

/* An estimate at llm_start awaiting its llm_end, by run id. */
struct rl_pending {
    struct rl_ent hdr;
    uint32_t est;
    uint32_t _reserved;
    uint64_t ts_ns;
    uint8_t run_id[16];
};

/* A verdict for one admission-table key.  Map key: the scope byte, then the
 * whole value's cbus_key_hash (the table's key, so values that share a cut
 * prefix are two verdicts); shown is the event's field, for display. */
#define RL_PUB_KEY_LEN (1 + 8)
#define RL_PUB_SHOWN_MAX (CBUS_MODEL_LEN + 1)
struct rl_pub {
    struct rl_ent hdr;
    uint64_t want_until;  /* the longest throttle any key asked for */
    uint64_t pub_until;   /* what the table holds now, 0 = nothing */
    uint32_t dirty;
    uint32_t _reserved;
    char key[RL_PUB_KEY_LEN];
    char shown[RL_PUB_SHOWN_MAX];
};

struct rl_limiter {
    struct rl_rules rules;
    struct rl_opts opts;
    struct rl_map keys;
    struct rl_map pending;
    struct rl_map pubs;
    uint64_t dirty;         /* pubs with dirty set */
    int has_tpm;            /* some rule limits tokens */
    unsigned dims_used;     /* dims some rule names */
    struct rl_evkeys *scratch; /* [3 * RL_BATCH]: rl_feed_batch's pipeline */
    struct rl_stats st;
    /* Fleet mode (fleet.h).  share_milli: local_share; after a sync this
     * node may spend that share of the room the fleet has left (its lease:
     * the rest is reserved for the other nodes until the next sync).
     * scale_milli: what one unit charged here costs the local bucket; 1000,
     * or 1000/local_share while Redis is away, which holds the node to
     * local_share of each limit. */
    uint64_t share_milli, scale_milli, lease_scale_milli; /* lease: 1000000 / share_milli */
    int fleet;
};

/* limiter.c, for fleet.c: Redis's view of a key replaces ours: tat = now +
 * debt (ns ahead of now, per limit), plus the other nodes' reserve (the
 * room left less this node's lease), plus this node's charges not yet in
 * a batch; then the verdict follows as after a charge. */
void rl__fleet_set(rl_limiter *l, struct rl_key *k, uint64_t req_debt_ns, uint64_t tok_debt_ns,
                   uint64_t now);

/* verdicts.c: ask for (scope, value) to be throttled until until_ns. */
void rl__want(rl_limiter *l, unsigned scope, const char *value, size_t len, uint64_t hash,
              uint64_t until_ns);

/* limiter.c: GCRA helpers for status.c. */
uint64_t rl__until(rl_u128 tat, const struct rl_limit *lim);
uint64_t rl__used(rl_u128 tat, const struct rl_limit *lim, uint64_t now);
uint64_t rl__key_until(const rl_limiter *l, const struct rl_key *k);
/* Human form of a key ("user=alice model=gpt-4o", "global"). */
void rl__key_text(const struct rl_key *k, char *out, size_t outlen);
/* One value as shown: its bytes, or for a value its producer cut (hash is
 * not the shown bytes' cbus_key_hash) the bytes, an ellipsis and the top
 * 32 bits of the whole value's hash in hex.  Returns what snprintf does. */
int rl_value_text(const char *s, size_t len, uint64_t hash, char *out, size_t outlen);

#endif
