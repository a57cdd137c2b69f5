#include "map.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define MIN_SLOTS 64
#define BIG ((size_t)1 << 21)

/* Arrays of 2 MiB and more are mapped and marked for transparent huge
 * pages: 100k keys are ~30 MB of entries touched at random, and with 4 KiB
 * pages nearly every lookup would also miss the TLB. */
static void *big_alloc(size_t len)
{
    if (len < BIG)
        return calloc(1, len);
    len = (len + BIG - 1) & ~(BIG - 1);
    /* Map one huge page more and trim to a 2 MiB boundary: a huge page
     * needs an aligned range, and the index is often exactly 2 MiB. */
    char *raw = mmap(NULL, len + BIG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED)
        return NULL;
    char *p = (char *)(((uintptr_t)raw + BIG - 1) & ~(uintptr_t)(BIG - 1));
    if (p > raw)
        munmap(raw, (size_t)(p - raw));
    if (raw + len + BIG > p + len)
        munmap(p + len, (size_t)(raw + len + BIG - (p + len)));
    madvise(p, len, MADV_HUGEPAGE);
    return p;
}

static void big_free(void *p, size_t len)
{
    if (!p)
        return;
    if (len < BIG)
        free(p);
    else
        munmap(p, (len + BIG - 1) & ~(BIG - 1));
}

/* Contents up to min(old, len) are kept; the rest is zero. */
static void *big_realloc(void *p, size_t old, size_t len)
{
    if (!p)
        return big_alloc(len);
    if (old < BIG && len < BIG) {
        void *n = realloc(p, len);
        if (n && len > old)
            memset((char *)n + old, 0, len - old);
        return n;
    }
    void *n = big_alloc(len);
    if (!n)
        return NULL;
    memcpy(n, p, old < len ? old : len);
    big_free(p, old);
    return n;
}

static inline uint64_t rd64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static inline uint64_t rd32(const unsigned char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

uint64_t rl_hash_bytes(const void *p, size_t n, uint64_t seed)
{
    /* Eight bytes per multiply, then murmur3's finaliser: cheap on the short
     * user/model strings the limiter hashes several times per event.  The
     * last 1..8 bytes are read with whole (overlapping) loads, as wyhash
     * does: assembling them byte by byte in memory would stall on store
     * forwarding. */
    const unsigned char *b = p;
    const size_t len = n;
    uint64_t h = seed ^ (n * UINT64_C(0x9E3779B97F4A7C15));
    while (n > 8) {
        h = (h ^ rd64(b)) * UINT64_C(0xff51afd7ed558ccd);
        h ^= h >> 32;
        b += 8;
        n -= 8;
    }
    uint64_t w;
    if (len >= 8)
        w = rd64((const unsigned char *)p + len - 8);
    else if (n >= 4)
        w = rd32(b) | rd32(b + n - 4) << 32;
    else if (n)
        w = (uint64_t)b[0] << 16 | (uint64_t)b[n >> 1] << 8 | b[n - 1];
    else
        w = 0;
    h = (h ^ w) * UINT64_C(0xc4ceb9fe1a85ec53);
    h ^= h >> 29;
    h ^= h >> 33;
    h *= UINT64_C(0xff51afd7ed558ccd);
    h ^= h >> 33;
    h *= UINT64_C(0xc4ceb9fe1a85ec53);
    h ^= h >> 33;
    return h ? h : 1;
}

static size_t slots_for(size_t entries)
{
    size_t s = MIN_SLOTS;
    while (s < entries * 2)
        s *= 2;
    return s;
}

static int rebuild(struct rl_map *m, size_t slots)
{
    uint64_t *idx = big_alloc(slots * sizeof *idx);
    if (!idx)
        return -ENOMEM;
    size_t mask = slots - 1;
    for (size_t i = 0; i < m->count; i++) {
        const struct rl_ent *e = rl_map_at(m, i);
        size_t s = e->hash & mask;
        while (idx[s])
            s = (s + 1) & mask;
        idx[s] = (e->hash >> 32) << 32 | (i + 1);
    }
    big_free(m->index, m->index ? (m->mask + 1) * sizeof *m->index : 0);
    m->index = idx;
    m->mask = mask;
    return 0;
}

int rl_map_init(struct rl_map *m, size_t esize, size_t key_off, size_t key_max, size_t max)
{
    memset(m, 0, sizeof *m);
    if (esize < sizeof(struct rl_ent) || key_off + key_max > esize || max == 0 ||
        max >= UINT32_MAX)
        return -EINVAL;
    m->esize = esize;
    m->key_off = key_off;
    m->key_max = key_max;
    m->max = max;
    return rebuild(m, MIN_SLOTS);
}

void rl_map_free(struct rl_map *m)
{
    if (m->index)
        big_free(m->index, (m->mask + 1) * sizeof *m->index);
    big_free(m->ents, m->cap * m->esize);
    memset(m, 0, sizeof *m);
}

void *rl_map_find(const struct rl_map *m, uint64_t hash, const void *key, size_t klen)
{
    uint64_t tag = (hash >> 32) << 32;
    for (size_t s = hash & m->mask;; s = (s + 1) & m->mask) {
        uint64_t v = m->index[s];
        if (!v)
            return NULL;
        if ((v & ~UINT64_C(0xffffffff)) != tag)
            continue;
        struct rl_ent *e = rl_map_at(m, (size_t)(v & 0xffffffffu) - 1);
        if (e->hash == hash && e->klen == klen &&
            !memcmp((char *)e + m->key_off, key, klen))
            return e;
    }
}

void *rl_map_insert(struct rl_map *m, uint64_t hash, const void *key, size_t klen, int *err)
{
    int dummy;
    if (!err)
        err = &dummy;
    if (klen > m->key_max) {
        *err = -ENAMETOOLONG;
        return NULL;
    }
    if (m->count >= m->max) {
        *err = -ENOSPC;
        return NULL;
    }
    if (m->count == m->cap) {
        size_t ncap = m->cap ? m->cap * 2 : 64;
        if (ncap > m->max)
            ncap = m->max;
        unsigned char *n = big_realloc(m->ents, m->cap * m->esize, ncap * m->esize);
        if (!n) {
            *err = -ENOMEM;
            return NULL;
        }
        m->ents = n;
        m->cap = ncap;
    }
    /* Keep the load factor at or below one half. */
    if ((m->count + 1) * 2 > m->mask + 1) {
        int r = rebuild(m, (m->mask + 1) * 2);
        if (r) {
            *err = r;
            return NULL;
        }
    }
    size_t i = m->count++;
    struct rl_ent *e = rl_map_at(m, i);
    memset(e, 0, m->esize);
    e->hash = hash;
    e->klen = (uint32_t)klen;
    memcpy((char *)e + m->key_off, key, klen);
    size_t s = hash & m->mask;
    while (m->index[s])
        s = (s + 1) & m->mask;
    m->index[s] = (hash >> 32) << 32 | (i + 1);
    return e;
}

static size_t slot_of(const struct rl_map *m, uint64_t hash, size_t entry)
{
    for (size_t s = hash & m->mask;; s = (s + 1) & m->mask)
        if ((m->index[s] & 0xffffffffu) == entry + 1)
            return s;
}

void rl_map_remove(struct rl_map *m, void *ent)
{
    struct rl_ent *e = ent;
    size_t i = (size_t)((unsigned char *)ent - m->ents) / m->esize;
    size_t hole = slot_of(m, e->hash, i);
    /* Backward-shift deletion: pull later members of the probe run into the
     * hole when their home slot does not lie cyclically in (hole, j]. */
    for (size_t j = (hole + 1) & m->mask; m->index[j]; j = (j + 1) & m->mask) {
        const struct rl_ent *o = rl_map_at(m, (size_t)(m->index[j] & 0xffffffffu) - 1);
        size_t home = o->hash & m->mask;
        if (((j - home) & m->mask) >= ((j - hole) & m->mask)) {
            m->index[hole] = m->index[j];
            hole = j;
        }
    }
    m->index[hole] = 0;
    size_t last = m->count - 1;
    if (i != last) {
        struct rl_ent *l = rl_map_at(m, last);
        size_t s = slot_of(m, l->hash, last);
        m->index[s] = (m->index[s] & ~UINT64_C(0xffffffff)) | (i + 1);
        memcpy(e, l, m->esize);
    }
    m->count--;
}

void rl_map_compact(struct rl_map *m)
{
    size_t want = slots_for(m->count);
    if (want * 4 <= m->mask + 1)
        rebuild(m, want * 2); /* failure keeps the bigger, still valid index */
    if (m->cap > 64 && m->count * 4 < m->cap) {
        size_t ncap = m->cap / 2;
        unsigned char *n = big_realloc(m->ents, m->cap * m->esize, ncap * m->esize);
        if (n) {
            m->ents = n;
            m->cap = ncap;
        }
    }
}
