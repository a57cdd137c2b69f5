/* Scores (issue 14 item 4): the grades a pipeline gives its own runs
 * (cbus_score: kind CBUS_EV_SCORE, name = the score's name, u.score.value
 * and type, preview = the category), aggregated per score name, per name and
 * model, and per name and agent.
 *
 * Exact, like the money: a numeric value is counted in units of 1e-9 into a
 * 128-bit sum, so the mean of values with up to nine decimals is exact (a
 * value that is not finite or beyond +-9e9 is counted as out of range and
 * not summed); booleans count trues, so the success rate is trues / count;
 * categories are counted per (row, category).  Histograms use the fixed
 * bounds below, chosen for 0..1, 1..5 and 0..10 scales.
 */
#ifndef CBUS_COST_SCORES_H
#define CBUS_COST_SCORES_H

#include <stdint.h>

#include <cbus/layout.h>

#include "ktab.h"

enum cost_score_by { COST_SCORE_BY_NAME, COST_SCORE_BY_MODEL, COST_SCORE_BY_AGENT };

#define COST_SCORE_NAME_KEY (CBUS_NAME_LEN + 8) /* the name, its whole-value hash */
#define COST_SCORE_WHO_KEY  (CBUS_PROVIDER_LEN + CBUS_MODEL_LEN + 16) /* a model or agent key */
/* by (8 bytes, for alignment), name key, who key */
#define COST_SCORE_KEY      (8 + COST_SCORE_NAME_KEY + COST_SCORE_WHO_KEY)
#define COST_SCORE_CAT_KEY  (COST_SCORE_KEY + CBUS_PREVIEW_LEN)
#define COST_SCORE_BOUNDS   17
#define COST_SCORE_NANO     1000000000
#define COST_SCORE_MAX_ABS  9e9

extern const double cost_score_bounds[COST_SCORE_BOUNDS];

__extension__ typedef __int128 cost_i128;

struct cost_score {
    uint64_t count;                          /* score events of any type */
    uint64_t numeric, boolean, categorical;  /* by type */
    uint64_t out_of_range;                   /* numeric values not summed */
    uint64_t trues;                          /* booleans with value 1 */
    cost_i128 sum_nano;                      /* numeric values in 1e-9 units */
    double min, max;                         /* numeric, valid when numeric > out_of_range */
    uint64_t bucket[COST_SCORE_BOUNDS + 1];  /* numeric: (bound[i-1], bound[i]]; last: > all */
    uint64_t last_ts_ns;
};

struct cost_scores {
    struct cost_ktab rows;   /* key COST_SCORE_KEY -> struct cost_score */
    struct cost_ktab cats;   /* key COST_SCORE_CAT_KEY -> uint64_t count */
    uint64_t overflow;       /* a score that found a table full */
    uint64_t bad_type;       /* a score of a type this build does not know */
};

int cost_scores_init(struct cost_scores *s, size_t max_rows);
void cost_scores_free(struct cost_scores *s);

/* Counts one score event.  model_key: the event's model table key
 * (COST_SCORE_WHO_KEY bytes); agent_key: its agent key (CBUS_AGENT_LEN + 8
 * bytes) or NULL when the event has no agent. */
void cost_scores_apply(struct cost_scores *s, const struct cbus_event *ev, const char *name_key,
                       const char *model_key, const char *agent_key);

/* A row key's parts. */
static inline unsigned cost_score_key_by(const char *k)
{
    return (unsigned char)k[0];
}
static inline const char *cost_score_key_name(const char *k)
{
    return k + 8;
}
static inline const char *cost_score_key_who(const char *k)
{
    return k + 8 + COST_SCORE_NAME_KEY;
}

/* The mean of a row's summed numeric values as a decimal string with nine
 * decimals (exact), or "null" when none. */
void cost_score_mean(char *out, size_t outlen, const struct cost_score *sc);

#endif
