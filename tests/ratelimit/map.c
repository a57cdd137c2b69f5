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

struct big_ent {
    struct rl_ent hdr;
    uint32_t value;
    char pad[200];
    char key[16];
};

Test(ratelimit_map, grows_into_huge_page_arrays_and_shrinks_back)
{
    enum { KEYS = 40000 }; /* ~9 MB of entries, a 1 MB+ index: the mmap path */
    struct rl_map m;
    cr_assert_eq(rl_map_init(&m, sizeof(struct big_ent), offsetof(struct big_ent, key), 16, KEYS), 0);
    char key[16];
    for (unsigned k = 0; k < KEYS; k++) {
        int kl = snprintf(key, sizeof key, "k%u", k);
        struct big_ent *e = rl_map_insert(&m, rl_hash_bytes(key, (size_t)kl, 0), key, (size_t)kl, NULL);
        cr_assert_not_null(e);
        e->value = k;
        e->pad[199] = 'x';
    }
    for (unsigned k = 0; k < KEYS; k++) {
        int kl = snprintf(key, sizeof key, "k%u", k);
        struct big_ent *e = rl_map_find(&m, rl_hash_bytes(key, (size_t)kl, 0), key, (size_t)kl);
        cr_assert(e && e->value == k && e->pad[199] == 'x');
        if (k % 16)
            rl_map_remove(&m, e);
    }
    size_t cap = m.cap, slots = m.mask + 1;
    rl_map_compact(&m);
    rl_map_compact(&m);
    cr_assert_lt(m.cap, cap);
    cr_assert_lt(m.mask + 1, slots);
    for (unsigned k = 0; k < KEYS; k++) {
        int kl = snprintf(key, sizeof key, "k%u", k);
        struct big_ent *e = rl_map_find(&m, rl_hash_bytes(key, (size_t)kl, 0), key, (size_t)kl);
        cr_assert_eq(e != NULL, k % 16 == 0, "key %u", k);
        if (e)
            cr_assert(e->value == k && e->pad[199] == 'x');
    }
    rl_map_free(&m);
}

Test(ratelimit_map, hash_reads_every_byte_of_short_and_long_keys)
{
    /* the overlapping tail loads must still depend on every byte */
    char a[40], b[40];
    for (size_t n = 1; n <= sizeof a; n++) {
        memset(a, 'a', sizeof a);
        for (size_t i = 0; i < n; i++) {
            memcpy(b, a, sizeof b);
            b[i] = 'b';
            cr_assert_neq(rl_hash_bytes(a, n, 0), rl_hash_bytes(b, n, 0), "len %zu byte %zu", n, i);
        }
    }
}
