/* Budgets: a limit per period for the whole bus, a user or a session, with
 * alerts at thresholds, each alert once per period (LiteLLM's model: max
 * budget, soft budget, budget_duration 1d/7d/30d resetting at UTC midnight).
 *
 * Periods are whole UTC days counted from the epoch: a "7d" budget's period
 * is days [7k, 7k+7), so it resets at a UTC midnight every 7 days.  An event
 * belongs to the period of its own realtime stamp (so replay after a restart
 * lands in the same period); periods only move forward, and the daemon also
 * moves them by the wall clock so a blocked user is released at midnight even
 * when it sends nothing (it cannot: it is blocked).
 */
#ifndef CBUS_COST_BUDGET_H
#define CBUS_COST_BUDGET_H

#include <stdint.h>

#include "money.h"

enum cost_scope {
    COST_SCOPE_GLOBAL,
    COST_SCOPE_USER,
    COST_SCOPE_SESSION,
    COST_SCOPE_AGENT,   /* no admission scope: alerts only (docs/cost.md) */
    COST_SCOPE_TENANT,  /* no admission scope: alerts only */
    COST_SCOPE__COUNT
};

enum cost_mark_kind {
    COST_MARK_THRESHOLD, /* pct of the limit: alert only */
    COST_MARK_SOFT,      /* the soft budget: alert only */
    COST_MARK_LIMIT,     /* the hard limit: alert and "budget exceeded" verdict */
};

#define COST_MARKS_MAX 16
#define COST_DAY_NS    UINT64_C(86400000000000)

struct cost_budget {
    char key[256];               /* user, session, agent or tenant id; "*" = default / global */
    uint64_t key_hash;           /* cbus_key_hash(key): matched against an event's whole value */
    unsigned scope;              /* enum cost_scope */
    cost_u128 limit_pico;        /* hard limit (> 0) */
    cost_u128 soft_pico;         /* 0 = none */
    uint32_t period_days;        /* 0 = never resets */
    unsigned line;               /* config line, for messages */
    unsigned n_marks;
    struct {
        cost_u128 pico;          /* alert when spent >= pico */
        uint32_t pct;            /* of the limit (rounded for soft marks) */
        unsigned kind;           /* enum cost_mark_kind */
    } marks[COST_MARKS_MAX];     /* ascending pico */
};

/* Per-entity budget state: the only part that is checkpointed. */
struct cost_budget_state {
    cost_u128 spent_pico;        /* in the current period */
    cost_u128 next_pico;         /* first unfired mark; COST_U128_MAX = none */
    uint64_t period_start_day;
    uint64_t period_end_day;     /* first day of the next period; 0 = not started */
    uint32_t fired;              /* bit i: marks[i] alerted this period */
    uint32_t exceeded;           /* a "budget exceeded" verdict is published */
};

/* Builds marks from the limit, soft limit and threshold percentages, and
 * key_hash from key
 * (thresholds may be NULL for the default 50/80/100).  Returns 0 or -EINVAL
 * (too many thresholds). */
int cost_budget_build(struct cost_budget *b, const uint32_t *pcts, unsigned n_pcts);

static inline const char *cost_scope_name(unsigned scope)
{
    static const char *const names[COST_SCOPE__COUNT] = {"global", "user", "session", "agent",
                                                         "tenant"};
    return scope < COST_SCOPE__COUNT ? names[scope] : "?";
}

#endif
