/* An open-addressing hash map with dense entries: the limiter's per-key
 * state, its pending llm_start estimates and its published verdicts.
 *
 * Entries are fixed-size records kept contiguous (iteration and expiry sweep
 * a plain array); the index is an array of 64-bit slots, each the upper half
 * of the key's hash beside the entry number, so a probe that misses rarely
 * touches an entry.  Linear probing with backward-shift deletion (no
 * tombstones), so a map that churns keys never degrades.  The index grows and
 * shrinks with the entry count: memory follows the number of live keys.
 */
#ifndef CBUS_RATELIMIT_MAP_H
#define CBUS_RATELIMIT_MAP_H

#include <stddef.h>
#include <stdint.h>

/* Every entry starts with this header; the key bytes live at key_off. */
struct rl_ent {
    uint64_t hash;
    uint32_t klen;
    uint32_t _reserved;
};

struct rl_map {
    uint64_t *index;      /* (hash >> 32) << 32 | (entry + 1); 0 = empty */
    size_t mask;          /* index slots - 1 */
    unsigned char *ents;  /* dense entries */
    size_t esize;         /* bytes per entry */
    size_t key_off;       /* offset of the key bytes in an entry */
    size_t key_max;       /* room for key bytes */
    size_t count;         /* live entries */
    size_t cap;           /* entries allocated */
    size_t max;           /* refuse inserts beyond this many entries */
};

/* Returns 0 or -ENOMEM / -EINVAL. */
int rl_map_init(struct rl_map *m, size_t esize, size_t key_off, size_t key_max, size_t max);
void rl_map_free(struct rl_map *m);

/* 64-bit hash of bytes (fast, not cryptographic); never 0. */
uint64_t rl_hash_bytes(const void *p, size_t n, uint64_t seed);

void *rl_map_find(const struct rl_map *m, uint64_t hash, const void *key, size_t klen);
/* Inserts a zeroed entry with the key set.  Returns NULL when the map holds
 * max entries, the key is too long, or memory runs out (*err says which:
 * -ENOSPC, -ENAMETOOLONG, -ENOMEM).  The caller checked that it is absent. */
void *rl_map_insert(struct rl_map *m, uint64_t hash, const void *key, size_t klen, int *err);
/* Removes an entry.  The last entry moves into its place, so iterate from
 * the end when removing during a walk. */
void rl_map_remove(struct rl_map *m, void *ent);

static inline void *rl_map_at(const struct rl_map *m, size_t i)
{
    return m->ents + i * m->esize;
}
static inline const char *rl_map_key(const struct rl_map *m, const void *ent)
{
    return (const char *)ent + m->key_off;
}

/* Shrinks the index after many removals (call from a periodic sweep). */
void rl_map_compact(struct rl_map *m);

#endif
