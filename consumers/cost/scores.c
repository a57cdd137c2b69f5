#include "scores.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

const double cost_score_bounds[COST_SCORE_BOUNDS] = {0,   0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8,
                                                     0.9, 1,   2,   3,   4,   5,   10,  100};

int cost_scores_init(struct cost_scores *s, size_t max_rows)
{
    memset(s, 0, sizeof *s);
    int r = cost_ktab_init(&s->rows, COST_SCORE_KEY, sizeof(struct cost_score), max_rows);
    if (!r)
        r = cost_ktab_init(&s->cats, COST_SCORE_CAT_KEY, sizeof(uint64_t), max_rows);
    if (r)
        cost_scores_free(s);
    return r;
}

void cost_scores_free(struct cost_scores *s)
{
    cost_ktab_free(&s->rows);
    cost_ktab_free(&s->cats);
}

static void count_in(struct cost_scores *s, const char *key, const struct cbus_event *ev)
{
    int created;
    long i = cost_ktab_get(&s->rows, key, &created);
    if (i < 0) {
        s->overflow++;
        return;
    }
    struct cost_score *sc = cost_ktab_val_at(&s->rows, (size_t)i);
    double v = ev->u.score.value;
    sc->count++;
    if (ev->ts_realtime_ns > sc->last_ts_ns)
        sc->last_ts_ns = ev->ts_realtime_ns;
    switch (ev->u.score.type) {
    case CBUS_SCORE_NUMERIC: {
        sc->numeric++;
        if (!isfinite(v) || fabs(v) >= COST_SCORE_MAX_ABS) {
            sc->out_of_range++;
            break;
        }
        if (sc->numeric - sc->out_of_range == 1 || v < sc->min)
            sc->min = v;
        if (sc->numeric - sc->out_of_range == 1 || v > sc->max)
            sc->max = v;
        sc->sum_nano += (cost_i128)llround(v * COST_SCORE_NANO);
        unsigned b = 0;
        while (b < COST_SCORE_BOUNDS && v > cost_score_bounds[b])
            b++;
        sc->bucket[b]++;
        break;
    }
    case CBUS_SCORE_BOOLEAN:
        sc->boolean++;
        sc->trues += v != 0;
        break;
    case CBUS_SCORE_CATEGORICAL: {
        sc->categorical++;
        char ck[COST_SCORE_CAT_KEY];
        memcpy(ck, key, COST_SCORE_KEY);
        cost_key_set(ck + COST_SCORE_KEY, CBUS_PREVIEW_LEN, ev->preview, sizeof ev->preview);
        long c = cost_ktab_get(&s->cats, ck, &created);
        if (c < 0)
            s->overflow++;
        else
            (*(uint64_t *)cost_ktab_val_at(&s->cats, (size_t)c))++;
        break;
    }
    default:
        break;
    }
}

void cost_scores_apply(struct cost_scores *s, const struct cbus_event *ev, const char *name_key,
                       const char *model_key, const char *agent_key)
{
    unsigned t = ev->u.score.type;
    if (t != CBUS_SCORE_NUMERIC && t != CBUS_SCORE_BOOLEAN && t != CBUS_SCORE_CATEGORICAL) {
        s->bad_type++;
        return;
    }
    char key[COST_SCORE_KEY];
    memset(key, 0, sizeof key);
    memcpy(key + 8, name_key, COST_SCORE_NAME_KEY);
    key[0] = COST_SCORE_BY_NAME;
    count_in(s, key, ev);
    key[0] = COST_SCORE_BY_MODEL;
    memcpy(key + 8 + COST_SCORE_NAME_KEY, model_key, COST_SCORE_WHO_KEY);
    count_in(s, key, ev);
    if (agent_key) {
        key[0] = COST_SCORE_BY_AGENT;
        memset(key + 8 + COST_SCORE_NAME_KEY, 0, COST_SCORE_WHO_KEY);
        memcpy(key + 8 + COST_SCORE_NAME_KEY, agent_key, CBUS_AGENT_LEN + 8);
        count_in(s, key, ev);
    }
}

void cost_score_mean(char *out, size_t outlen, const struct cost_score *sc)
{
    uint64_t n = sc->numeric - sc->out_of_range;
    if (!n) {
        snprintf(out, outlen, "null");
        return;
    }
    /* sum / n to nine decimals, rounded half away from zero: sum is in 1e-9
     * units already, so the quotient is the answer in those units. */
    cost_i128 q = sc->sum_nano / (cost_i128)n, r = sc->sum_nano % (cost_i128)n;
    if ((r < 0 ? -r : r) * 2 >= (cost_i128)n)
        q += sc->sum_nano < 0 ? -1 : 1;
    int neg = q < 0;
    cost_i128 a = neg ? -q : q;
    unsigned long long whole = (unsigned long long)(a / COST_SCORE_NANO);
    unsigned frac = (unsigned)(a % COST_SCORE_NANO);
    snprintf(out, outlen, "%s%llu.%09u", neg ? "-" : "", whole, frac);
}
