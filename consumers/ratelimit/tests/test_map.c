/* The hash map against a reference: random inserts, finds and removals,
 * through growth and compaction. */
#include <criterion/criterion.h>

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "map.h"

struct ent {
    struct rl_ent hdr;
    uint32_t value;
    char key[24];
};

Test(ratelimit_map, matches_a_reference_through_churn)
{
    enum { KEYS = 5000 };
    static int present[KEYS];
    static uint32_t value[KEYS];
    struct rl_map m;
    cr_assert_eq(rl_map_init(&m, sizeof(struct ent), offsetof(struct ent, key), 24, KEYS), 0);
    uint64_t x = 99;
    size_t live = 0;
    for (unsigned step = 0; step < 200000; step++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        unsigned k = (unsigned)(x % KEYS);
        char key[24];
        int kl = snprintf(key, sizeof key, "key-%u", k);
        /* a deliberately weak hash for some keys: collisions must still work */
        uint64_t h = k % 7 == 0 ? (uint64_t)(k % 13) + 1 : rl_hash_bytes(key, (size_t)kl, 0);
        struct ent *e = rl_map_find(&m, h, key, (size_t)kl);
        cr_assert_eq(e != NULL, present[k], "step %u key %u", step, k);
        if (e)
            cr_assert_eq(e->value, value[k]);
        if ((x >> 40) % 3 == 0 && e) {
            rl_map_remove(&m, e);
            present[k] = 0;
            live--;
        } else if (!e) {
            int err;
            e = rl_map_insert(&m, h, key, (size_t)kl, &err);
            cr_assert_not_null(e);
            e->value = value[k] = (uint32_t)step;
            present[k] = 1;
            live++;
        }
        cr_assert_eq(m.count, live);
        if (step % 20000 == 0)
            rl_map_compact(&m);
    }
    /* full: refuses with -ENOSPC */
    for (unsigned k = 0; k < KEYS; k++)
        if (!present[k]) {
            char key[24];
            int kl = snprintf(key, sizeof key, "key-%u", k);
            cr_assert_not_null(rl_map_insert(&m, rl_hash_bytes(key, (size_t)kl, 0), key, (size_t)kl, NULL));
        }
    int err = 0;
    cr_assert_null(rl_map_insert(&m, 1, "extra", 5, &err));
    cr_assert_eq(err, -ENOSPC);
    cr_assert_null(rl_map_insert(&m, 1, "a-key-that-is-far-too-long-for-it", 33, &err));
    cr_assert_eq(err, -ENAMETOOLONG);
    rl_map_free(&m);
}
