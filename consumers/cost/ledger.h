/* The ledger: exact usage and cost accounting from llm_end / llm_error
 * events, per provider/model, per user, per session, per agent, per tenant
 * and in total, with the budgets.
 *
 * Keys never merge (issue 14): a table key is the event field's shown bytes
 * followed by the whole value's 8-byte hash (the event's key_hash[]), so two
 * values that share the first CBUS_*_LEN - 1 bytes are two rows.  A row
 * whose shown bytes do not hash to its stored hash was cut by its producer:
 * outputs show it as the prefix, an ellipsis and the hash (cost_key_show).  Single-threaded: the daemon's consumer loop owns it.
 *
 * Token convention (layout.h, OpenTelemetry): input includes cache_read and
 * cache_creation; output includes reasoning.  So
 *   cost = (input - cache_read - cache_creation) * input_rate
 *        + cache_read * cache_read_rate + cache_creation * cache_creation_rate
 *        + (output - reasoning) * output_rate + reasoning * reasoning_rate
 * in pico-dollars.  Each cache token is charged once, at its own rate.
 * A count whose usage_present bit is clear is absent: it adds nothing and is
 * not counted as reported, so a report can say "absent" instead of 0.
 */
#ifndef CBUS_COST_LEDGER_H
#define CBUS_COST_LEDGER_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cbus/consumer.h>

#include "budget.h"
#include "hist.h"
#include "ktab.h"
#include "money.h"
#include "prices.h"
#include "scores.h"

enum cost_tok {
    COST_TOK_INPUT,
    COST_TOK_OUTPUT,
    COST_TOK_CACHE_READ,
    COST_TOK_CACHE_CREATION,
    COST_TOK_REASONING,
    COST_TOK__COUNT
};
extern const char *const cost_tok_names[COST_TOK__COUNT];

/* provider, model, then the provider's and the model's whole-value hashes */
#define COST_MODEL_KEY   (CBUS_PROVIDER_LEN + CBUS_MODEL_LEN + 16)
#define COST_MODEL_PH    (CBUS_PROVIDER_LEN + CBUS_MODEL_LEN)  /* offset of the provider hash */
#define COST_MODEL_MH    (COST_MODEL_PH + 8)                   /* offset of the model hash */
/* the field, then its whole-value hash at offset CBUS_*_LEN */
#define COST_USER_KEY    (CBUS_USER_LEN + 8)
#define COST_SESSION_KEY (CBUS_SESSION_LEN + 8)
#define COST_AGENT_KEY   (CBUS_AGENT_LEN + 8)
#define COST_TENANT_KEY  (CBUS_TENANT_LEN + 8)
#define COST_KEY_MAX     COST_MODEL_KEY
/* Room for cost_key_show() of any one field: bytes, ellipsis, '#', 8 hex. */
#define COST_SHOW_MAX    (CBUS_MODEL_LEN + 16)
#define COST_MINUTE_NS   UINT64_C(60000000000)

struct cost_counters {
    uint64_t requests;                 /* llm_end events */
    uint64_t errors;                   /* llm_error events */
    uint64_t usage_missing;            /* llm_end with no token count at all */
    uint64_t unpriced;                 /* llm_end whose model has no price */
    uint64_t tokens[COST_TOK__COUNT];  /* sums over the events that reported each */
    uint64_t reported[COST_TOK__COUNT];/* events that reported each count */
    cost_u128 cost_pico;
    uint64_t last_ts_ns;               /* realtime of the newest event */
    /* requests (end + error) and tokens (input + output) in the current and
     * the previous UTC minute of event time */
    uint64_t minute;
    uint64_t cur_req, cur_tok, prev_req, prev_tok;
};

struct cost_latency {
    struct cost_hist duration;         /* llm_start .. llm_end */
    struct cost_hist ttft;             /* llm_start .. first token */
};

struct cost_model {
    struct cost_counters c;
    struct cost_latency lat;
    const struct cost_price *price;    /* NULL: unpriced (not checkpointed) */
    uint32_t resolved;                 /* price looked up (not checkpointed) */
};

/* Users, agents, tenants and sessions keep counters but no latency
 * histograms: at 5.6 KB a pair, 1,000 users' histograms miss the cache on
 * every event and halve the throughput; latency is a property of the model
 * and the service (total).  Agents and tenants are rows of this type too. */
struct cost_user {
    struct cost_counters c;
    struct cost_budget_state b;
    const struct cost_budget *budget;  /* not checkpointed: resolved from config */
};

struct cost_session {
    struct cost_counters c;
    struct cost_budget_state b;
    const struct cost_budget *budget;
};

struct cost_anomalies {
    uint64_t cache_exceeds_input;      /* cache_read + cache_creation > input: uncached taken as 0 */
    uint64_t reasoning_exceeds_output; /* reasoning > output: output taken as all reasoning */
    uint64_t truncated_keys;           /* provider/model/user/session cut by the producer */
    uint64_t duplicate_events;         /* event_id below the cursor: already counted */
    uint64_t models_overflow, users_overflow, sessions_overflow; /* table full */
    uint64_t late_events;              /* event older than its entity's budget period */
};
/* Kept apart from cost_anomalies, whose raw layout older checkpoints hold. */
struct cost_anomalies2 {
    uint64_t agents_overflow, tenants_overflow;
};

enum cost_alert_kind {
    COST_ALERT_THRESHOLD,  /* a percentage of the limit was reached */
    COST_ALERT_SOFT,       /* the soft budget was reached */
    COST_ALERT_EXCEEDED,   /* the hard limit was reached: verdict */
    COST_ALERT_RESET,      /* a new period began for an exceeded budget: clear verdict */
};

struct cost_alert {
    enum cost_alert_kind kind;
    unsigned scope;                    /* enum cost_scope */
    const char *key;                   /* as shown (cost_key_show); "*" for global */
    const char *admit_key;             /* the shown field bytes ("*" for global) */
    uint64_t admit_hash;               /* the whole value's cbus_key_hash: the table key */
    uint32_t pct;
    cost_u128 spent_pico, limit_pico, mark_pico;
    const struct cost_budget *budget;
    uint64_t period_start_day, period_end_day;
};

typedef void (*cost_alert_fn)(void *arg, const struct cost_alert *a);
typedef void (*cost_unpriced_fn)(void *arg, const char *provider, const char *model,
                                 const char *why);

struct cost_budget_set {
    const struct cost_budget *global;          /* NULL = none */
    const struct cost_budget *user_default;    /* NULL = none */
    const struct cost_budget *session_default;
    const struct cost_budget *agent_default;
    const struct cost_budget *tenant_default;
    const struct cost_budget *list;            /* specific users, sessions, agents, tenants */
    size_t n;
};

struct cost_ledger_opts {
    size_t max_models, max_users, max_sessions;   /* 0 = 10000, 100000, 100000 */
    size_t max_agents, max_tenants;               /* 0 = 10000, 10000 */
    size_t max_scores;                            /* score rows; 0 = 100000 */
};

struct cost_ledger {
    const struct cost_price_table *prices;
    struct cost_budget_set budgets;
    struct cost_ktab models, users, sessions, agents, tenants;
    struct cost_scores scores;         /* score events (scores.h) */
    struct cost_counters total;
    struct cost_latency total_lat;
    struct cost_budget_state global_b;
    /* Aggregates for events that found their table full. */
    struct cost_model model_overflow;
    struct cost_user user_overflow;
    struct cost_user agent_overflow, tenant_overflow;
    struct cost_anomalies an;
    struct cost_anomalies2 an2;
    uint64_t events;                   /* every event accounted (any kind) */
    /* Next position in each lane of the bus: every event below is counted.
     * cursor is their sum (positions passed, for display and pacing). */
    struct cbus_position pos;
    uint64_t cursor;
    /* Events below cursor that were never accounted, over every run (the
     * daemon sets them before each checkpoint; the checkpoint keeps them):
     * overwritten before read, and claimed but never committed. */
    uint64_t lost, abandoned;
    cost_alert_fn on_alert;
    void *alert_arg;
    cost_unpriced_fn on_unpriced;
    void *unpriced_arg;
    /* Fleet mode (fleet_cost.h): told of every amount added to a budget,
     * after it is added (key, field_len: as budget_add has them). */
    void (*on_spend)(void *arg, unsigned scope, const char *key, size_t field_len,
                     const struct cost_budget *b, const struct cost_budget_state *st,
                     cost_u128 cost);
    void *spend_arg;
};

/* Sets the ledger's position (from the consumer: where it reads or resumed). */
void cost_ledger_set_position(struct cost_ledger *l, const struct cbus_position *p);

int cost_ledger_init(struct cost_ledger *l, const struct cost_price_table *prices,
                     const struct cost_budget_set *budgets, const struct cost_ledger_opts *opts);
void cost_ledger_free(struct cost_ledger *l);

/* Accounts one event (any kind; only llm_end and llm_error change totals).
 * Events below the cursor were counted already and are skipped. */
void cost_ledger_apply(struct cost_ledger *l, const struct cbus_event *ev);
/* The kinds the ledger counts (CBUS_KIND_BIT mask: LLM ends and errors,
 * and scores):
 * what the daemon tells producers it cannot do without
 * (cbus_consumer_opts.kinds), so a token flood is dropped, not waited for. */
uint64_t cost_ledger_needed_kinds(void);

/* Same for n consecutive events (what one poll returned). */
void cost_ledger_apply_batch(struct cost_ledger *l, const struct cbus_event *evs, size_t n);

/* Moves budget periods forward to now_realtime_ns (UTC) for entities that
 * have not seen an event since their period ended: clears their verdicts. */
void cost_ledger_tick(struct cost_ledger *l, uint64_t now_realtime_ns);

/* Drops sessions with no event since before cutoff_realtime_ns that hold
 * no published verdict.  Returns how many. */
size_t cost_ledger_expire_sessions(struct cost_ledger *l, uint64_t cutoff_realtime_ns);

/* The cost of one llm_end's usage at price p (NULL = 0), in pico-dollars;
 * counts anomalies into an (may be NULL).  Exposed for tests. */
cost_u128 cost_usage_cost(const struct cost_price *p, const struct cbus_usage *u,
                          struct cost_anomalies *an);

/* Re-resolves budgets and prices after a checkpoint load or config change
 * and recomputes each entity's next mark. */
void cost_ledger_rebind(struct cost_ledger *l);

/* Calls fn for every published verdict in the state (after a restart);
 * key is the shown field bytes, key_hash the whole value's hash (the
 * admission-table key, cbus_admit_publish_hash). */
void cost_ledger_each_exceeded(struct cost_ledger *l,
                               void (*fn)(void *arg, unsigned scope, const char *key,
                                          uint64_t key_hash,
                                          const struct cost_budget_state *st,
                                          const struct cost_budget *b),
                               void *arg);

/* A key buffer's shown bytes as a C string (NUL-padded, may fill field_len). */
void cost_key_str(char *out, size_t outlen, const char *key, size_t field_len);

/* A key as outputs show it: the shown bytes, and for a value its producer
 * cut (hash is not the shown bytes' cbus_key_hash) an ellipsis and the top
 * 32 bits of the whole value's hash, "…#1a2b3c4d", so two rows that share
 * a prefix are visibly two.  hash 0: shown as is. */
void cost_key_show(char *out, size_t outlen, const char *field, size_t field_len, uint64_t hash);
/* The table key of a whole value as a producer's event makes it: the value
 * cut to field_len - 1 bytes and NUL-padded, then cbus_key_hash of all of
 * it.  key has field_len + 8 bytes.  For tests and tools. */
void cost_key_make(char *key, size_t field_len, const char *value);
/* The hash stored after a field of field_len bytes in a key buffer. */
static inline uint64_t cost_key_whole_hash(const char *key, size_t field_len)
{
    uint64_t h;
    memcpy(&h, key + field_len, 8);
    return h;
}

#endif
