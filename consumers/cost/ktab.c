#include "ktab.h"

#include <errno.h>
#include <stdlib.h>

static int build_index(struct cost_ktab *t, size_t nslots)
{
    uint64_t *s = calloc(nslots, sizeof *s);
    if (!s)
        return -ENOMEM;
    free(t->slots);
    t->slots = s;
    t->mask = nslots - 1;
    for (size_t k = 0; k < t->n; k++) {
        uint64_t h = cost_key_hash(cost_ktab_key_at(t, k), t->key_size);
        size_t i = h & t->mask;
        while (s[i])
            i = (i + 1) & t->mask;
        s[i] = (h >> 32) << 32 | (uint64_t)(k + 1);
    }
    return 0;
}

int cost_ktab_init(struct cost_ktab *t, size_t key_size, size_t val_size, size_t max_entries)
{
    memset(t, 0, sizeof *t);
    if (key_size == 0 || key_size % 8 || max_entries == 0 || max_entries > UINT32_MAX - 1)
        return -EINVAL;
    t->key_size = key_size;
    t->val_size = val_size;
    t->val_off = (key_size + 15) & ~(size_t)15;
    t->stride = (t->val_off + val_size + 15) & ~(size_t)15;
    t->max_entries = max_entries;
    return build_index(t, 64);
}

void cost_ktab_free(struct cost_ktab *t)
{
    free(t->ents);
    free(t->slots);
    memset(t, 0, sizeof *t);
}

long cost_ktab_insert(struct cost_ktab *t, const void *key, uint64_t h)
{
    if (t->n >= t->max_entries)
        return -ENOSPC;
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        unsigned char *e = realloc(t->ents, cap * t->stride);
        if (!e)
            return -ENOMEM;
        t->ents = e;
        t->cap = cap;
    }
    size_t idx = t->n++;
    memset(cost_ktab_key_at(t, idx), 0, t->stride);
    memcpy(cost_ktab_key_at(t, idx), key, t->key_size);
    /* Load factor at most 1/2: probes stay short on the hot path. */
    if (2 * t->n > t->mask + 1) {
        int r = build_index(t, (t->mask + 1) * 2);
        if (r) {
            t->n--;
            return r;
        }
        return (long)idx;
    }
    size_t i = h & t->mask;
    while (t->slots[i])
        i = (i + 1) & t->mask;
    t->slots[i] = (h >> 32) << 32 | (uint64_t)(idx + 1);
    return (long)idx;
}

size_t cost_ktab_remove_if(struct cost_ktab *t, int (*drop)(const void *key, void *val, void *arg),
                           void *arg)
{
    size_t w = 0, removed = 0;
    for (size_t r = 0; r < t->n; r++) {
        if (drop(cost_ktab_key_at(t, r), cost_ktab_val_at(t, r), arg)) {
            removed++;
            continue;
        }
        if (w != r)
            memmove(cost_ktab_key_at(t, w), cost_ktab_key_at(t, r), t->stride);
        w++;
    }
    if (removed) {
        t->n = w;
        /* Re-index in place: same size, so no allocation can fail here. */
        memset(t->slots, 0, (t->mask + 1) * sizeof *t->slots);
        for (size_t k = 0; k < t->n; k++) {
            uint64_t h = cost_key_hash(cost_ktab_key_at(t, k), t->key_size);
            size_t i = h & t->mask;
            while (t->slots[i])
                i = (i + 1) & t->mask;
            t->slots[i] = (h >> 32) << 32 | (uint64_t)(k + 1);
        }
    }
    return removed;
}
