/* Rate-limit rules: what is counted, per which key, against which limit.
 *
 * One rule per line (the value of a `rule =` line in [rules]):
 *
 *   rule = user=* rpm=60 tpm=100000
 *   rule = user=vip-* rpm=600 burst=100
 *   rule = model=gpt-4o* tpm=2000000 tokens=input
 *   rule = user=* model=gpt-4o rpm=10 enforce=user
 *   rule = global rpm=5000
 *
 * Selector: `global`, or one or more of user=, session=, model=, provider=,
 * agent=, tenant= with a glob pattern (`*` matches any run of characters,
 * everything else is literal).  A pattern without `*` matches the whole
 * value (by its cbus_key_hash, so it may be longer than the event field a
 * producer cuts it to); a glob matches the shown prefix of a cut value.
 * Keys are told apart by the whole value's hash (the event's key_hash), so
 * two values that share the shown prefix are never counted as one.  The set of dimensions a rule names is its group; each distinct
 * value tuple in a group gets its own counters (user=* is "each user", not
 * "all users together").
 *
 * Precedence: within a group the most specific matching rule wins (the one
 * with the most literal characters in its patterns; on a tie the earlier
 * line) and replaces the others entirely for that key.  Rules of different
 * groups all apply: a request is within limits only when it is within every
 * group's winning rule.
 */
#ifndef CBUS_RATELIMIT_RULES_H
#define CBUS_RATELIMIT_RULES_H

#include <stddef.h>
#include <stdint.h>

enum rl_dim {
    RL_DIM_USER, RL_DIM_SESSION, RL_DIM_MODEL, RL_DIM_PROVIDER, RL_DIM_AGENT, RL_DIM_TENANT,
    RL_DIM__COUNT
};
#define RL_GROUPS (1u << RL_DIM__COUNT) /* a group is a bitmask of dims; 0 = global */
/* Distinct groups a configuration may use at once: bounds the per-event key
 * scratch (each event builds one key per group in use). */
#define RL_GROUPS_USED_MAX 16

enum rl_tokens { RL_TOKENS_TOTAL = 0, RL_TOKENS_INPUT = 1, RL_TOKENS_OUTPUT = 2 };

#define RL_PERIOD_NS UINT64_C(60000000000) /* rpm / tpm: per minute */
#define RL_NO_PUBLISH (-1)

struct rl_limit {
    uint64_t limit;      /* units per period; 0 = no limit */
    uint64_t burst;      /* units that may be spent at once (default: limit) */
};

struct rl_rule {
    unsigned line;                    /* config line, for messages and status */
    unsigned group;                   /* bitmask of (1 << enum rl_dim); 0 = global */
    char *pattern[RL_DIM__COUNT];     /* NULL where the group lacks the dim */
    uint64_t literal_hash[RL_DIM__COUNT]; /* cbus_key_hash of a pattern with no `*`, else 0 */
    unsigned specificity;             /* literal characters in the patterns */
    struct rl_limit req;              /* requests (rpm, burst) */
    struct rl_limit tok;              /* tokens (tpm, token_burst) */
    unsigned tokens;                  /* enum rl_tokens: what tpm counts */
    int publish_scope;                /* CBUS_SCOPE_* verdicts go to, or RL_NO_PUBLISH */
    char *text;                       /* canonical form, for status */
    /* counters, kept by the limiter */
    uint64_t over_limit;              /* requests that started while their key was throttled */
    uint64_t throttles;               /* keys going from allowed to throttled */
};

struct rl_rules {
    struct rl_rule *rule;
    size_t count, cap;
    /* Per group: rule indexes, most specific first (line order on ties). */
    unsigned *order[RL_GROUPS];
    unsigned order_count[RL_GROUPS];
    unsigned groups[RL_GROUPS_USED_MAX]; /* groups that have rules, ascending */
    unsigned n_groups;
};

/* The event's values for each dim (not NUL-terminated): the shown prefix,
 * and the whole value's hash (the event's key_hash; 0 = empty). */
struct rl_dims {
    const char *s[RL_DIM__COUNT];
    size_t len[RL_DIM__COUNT];
    uint64_t hash[RL_DIM__COUNT];
};

const char *rl_dim_name(unsigned dim);

void rl_rules_init(struct rl_rules *rs);
void rl_rules_free(struct rl_rules *rs);
/* Parses one rule.  On error returns -EINVAL with the problem (no location)
 * in err; the caller adds file and line. */
int rl_rules_add(struct rl_rules *rs, const char *text, unsigned line, char *err, size_t errlen);
/* Orders each group and refuses duplicates ("same selector as line N") and
 * more than RL_GROUPS_USED_MAX groups.  On error *bad_line is the offending
 * line. */
int rl_rules_finish(struct rl_rules *rs, unsigned *bad_line, char *err, size_t errlen);

/* Index of the winning rule of group for these values, or -1 (none matches,
 * or the event lacks a value the group needs: an empty field is no value). */
int rl_rules_match(const struct rl_rules *rs, unsigned group, const struct rl_dims *d);

/* Glob match: `*` is any run of characters; everything else literal. */
int rl_glob(const char *pat, const char *s, size_t n);

#endif
