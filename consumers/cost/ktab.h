/* A hash table from fixed-size keys to fixed-size values, for the hot path.
 *
 * Keys are event string fields copied into a zeroed fixed-size buffer (so
 * NUL padding is canonical), hashed 8 bytes at a time and compared with one
 * memcmp.  Entries (key then value) live in one dense array, so a walk for a
 * report or checkpoint is sequential; the index is open addressing with
 * linear probing over 8-byte slots (32 bits of hash, 32 bits of index + 1).
 * Inserting may move entries: pointers from cost_ktab_get() are valid only
 * until the next insert or removal in the same table.
 */
#ifndef CBUS_COST_KTAB_H
#define CBUS_COST_KTAB_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct cost_ktab {
    size_t key_size;      /* multiple of 8 */
    size_t val_size;
    size_t val_off;       /* key_size rounded up to 16: values hold 128-bit sums */
    size_t stride;        /* val_off + val_size, rounded up to 16 */
    unsigned char *ents;
    size_t n, cap;
    size_t max_entries;   /* inserts beyond it fail */
    uint64_t *slots;
    size_t mask;
};

int cost_ktab_init(struct cost_ktab *t, size_t key_size, size_t val_size, size_t max_entries);
void cost_ktab_free(struct cost_ktab *t);

/* Each word is mixed on its own (the multiplies are independent, so they
 * overlap instead of forming one long dependent chain), then folded and
 * finalised (splitmix64's finaliser). */
static inline uint64_t cost_key_hash(const void *key, size_t n)
{
    const unsigned char *p = key;
    uint64_t a = UINT64_C(0x9E3779B97F4A7C15) ^ n, b = 0;
    for (size_t i = 0; i < n; i += 16) {
        uint64_t w0, w1 = 0;
        memcpy(&w0, p + i, 8);
        if (i + 8 < n)
            memcpy(&w1, p + i + 8, 8);
        a += (w0 ^ UINT64_C(0xa0761d6478bd642f)) * UINT64_C(0xe7037ed1a0b428db) + (uint64_t)i;
        b += (w1 ^ UINT64_C(0x8ebc6af09c88c6e3)) * UINT64_C(0x589965cc75374cc3);
        a = (a << 23) | (a >> 41);
    }
    uint64_t h = a ^ (b + (b >> 31));
    h ^= h >> 30;
    h *= UINT64_C(0xbf58476d1ce4e5b9);
    h ^= h >> 27;
    h *= UINT64_C(0x94d049bb133111eb);
    return h ^ (h >> 31);
}

static inline void *cost_ktab_key_at(const struct cost_ktab *t, size_t i)
{
    return t->ents + i * t->stride;
}
static inline void *cost_ktab_val_at(const struct cost_ktab *t, size_t i)
{
    return t->ents + i * t->stride + t->val_off;
}

/* Key equality over 8-byte words: keys are short and fixed-size, and an
 * inline loop beats a call to memcmp on the hot path. */
static inline int cost_key_eq(const void *a, const void *b, size_t n)
{
    const unsigned char *x = a, *y = b;
    uint64_t diff = 0;
    for (size_t i = 0; i < n; i += 8) {
        uint64_t p, q;
        memcpy(&p, x + i, 8);
        memcpy(&q, y + i, 8);
        diff |= p ^ q;
    }
    return diff == 0;
}

/* Index of key, or -1. */
static inline long cost_ktab_find(const struct cost_ktab *t, const void *key, uint64_t h)
{
    uint32_t tag = (uint32_t)(h >> 32);
    for (size_t i = h & t->mask;; i = (i + 1) & t->mask) {
        uint64_t s = t->slots[i];
        if (!s)
            return -1;
        if ((uint32_t)(s >> 32) == tag) {
            size_t idx = (uint32_t)s - 1;
            if (cost_key_eq(cost_ktab_key_at(t, idx), key, t->key_size))
                return (long)idx;
        }
    }
}

/* Inserts key (value zeroed); returns its index, -ENOSPC (max_entries) or
 * -ENOMEM.  The caller checked that key is absent. */
long cost_ktab_insert(struct cost_ktab *t, const void *key, uint64_t h);

/* Finds or inserts; *created tells which.  Returns index or negative errno. */
static inline long cost_ktab_get(struct cost_ktab *t, const void *key, int *created)
{
    uint64_t h = cost_key_hash(key, t->key_size);
    long i = cost_ktab_find(t, key, h);
    *created = 0;
    if (i >= 0)
        return i;
    *created = 1;
    return cost_ktab_insert(t, key, h);
}

/* Removes every entry for which drop(val, arg) is nonzero; returns how many. */
size_t cost_ktab_remove_if(struct cost_ktab *t, int (*drop)(const void *key, void *val, void *arg),
                           void *arg);

/* Copies a bounded event field into a key buffer, zeroing everything from
 * the first NUL on, so whatever a producer left after the NUL cannot split
 * one key into two.  Event fields are multiples of 8 bytes: the common case
 * goes a word at a time (the lowest zero byte of a word is found with the
 * classic haszero bit trick, which is exact for the lowest one). */
static inline void cost_key_set(char *dst, size_t dst_size, const char *field, size_t field_size)
{
    if (dst_size == field_size && dst_size % 8 == 0) {
        int ended = 0;
        for (size_t i = 0; i < dst_size; i += 8) {
            uint64_t w;
            memcpy(&w, field + i, 8);
            if (ended) {
                w = 0;
            } else {
                uint64_t z = (w - UINT64_C(0x0101010101010101)) & ~w & UINT64_C(0x8080808080808080);
                if (z) {
                    unsigned byte = (unsigned)__builtin_ctzll(z) / 8;
                    w = byte ? w & ((UINT64_C(1) << (8 * byte)) - 1) : 0;
                    ended = 1;
                }
            }
            memcpy(dst + i, &w, 8);
        }
        return;
    }
    memset(dst, 0, dst_size);
    size_t n = strnlen(field, field_size);
    memcpy(dst, field, n < dst_size ? n : dst_size);
}

#endif
