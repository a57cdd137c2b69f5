#include "budget.h"

#include <errno.h>
#include <string.h>

#include <cbus/layout.h>

int cost_budget_build(struct cost_budget *b, const uint32_t *pcts, unsigned n_pcts)
{
    static const uint32_t defaults[] = {50, 80, 100};
    if (!pcts) {
        pcts = defaults;
        n_pcts = 3;
    }
    if (n_pcts + 2 > COST_MARKS_MAX)
        return -EINVAL;
    /* Ids match an event's whole value by hash (ledger.c budget_for). */
    b->key_hash = cbus_key_hash(b->key, strnlen(b->key, sizeof b->key));
    b->n_marks = 0;
    int have_limit = 0;
    for (unsigned i = 0; i < n_pcts; i++) {
        unsigned k = pcts[i] == 100 ? COST_MARK_LIMIT : COST_MARK_THRESHOLD;
        have_limit |= k == COST_MARK_LIMIT;
        b->marks[b->n_marks].pico = b->limit_pico * pcts[i] / 100;
        b->marks[b->n_marks].pct = pcts[i];
        b->marks[b->n_marks++].kind = k;
    }
    /* The verdict is what a producer sees: it exists whatever thresholds
     * the operator asked to be told about. */
    if (!have_limit) {
        b->marks[b->n_marks].pico = b->limit_pico;
        b->marks[b->n_marks].pct = 100;
        b->marks[b->n_marks++].kind = COST_MARK_LIMIT;
    }
    if (b->soft_pico) {
        b->marks[b->n_marks].pico = b->soft_pico;
        b->marks[b->n_marks].pct = (uint32_t)(b->soft_pico * 100 / b->limit_pico);
        b->marks[b->n_marks++].kind = COST_MARK_SOFT;
    }
    /* Insertion sort by amount; at equal amounts alert-only marks first so
     * the log reads "80%" before "exceeded". */
    for (unsigned i = 1; i < b->n_marks; i++)
        for (unsigned j = i; j > 0; j--) {
            int swap = b->marks[j - 1].pico > b->marks[j].pico ||
                       (b->marks[j - 1].pico == b->marks[j].pico &&
                        b->marks[j - 1].kind == COST_MARK_LIMIT && b->marks[j].kind != COST_MARK_LIMIT);
            if (!swap)
                break;
            __typeof__(b->marks[0]) t = b->marks[j];
            b->marks[j] = b->marks[j - 1];
            b->marks[j - 1] = t;
        }
    return 0;
}
