/* The admission table: verdicts written by deciding consumers, read by
 * producers in O(1) without syscalls or locks.
 *
 * Open addressing with linear probing over admission_entries slots.  An
 * entry's key_hash never goes back to 0 once set (a cleared verdict stays as
 * ALLOW and can be reused for another key), so a reader may stop probing at
 * the first empty slot.  Each entry is a seqlock written by one writer at a
 * time (the writer that owns it; writers only take empty or own/ALLOW
 * entries with CAS on key_hash).
 *
 * This file is the writer side and the table's layout; the producers' read
 * side (cbus_admit, cbus_admit_wait) is producer/admit.c, so bus/ never needs
 * the producer's internals. */
#include "internal.h"

#include <stdio.h>
#include <unistd.h>


/* The table hash of a key: the whole value's cbus_key_hash() mixed with the
 * scope (a splitmix64 finalizer, so the low bits the table indexes by depend
 * on every bit).  Hashing the whole value, not the field it is shown in, keeps
 * two users that share a cut prefix apart (issue 14). */
CBUS_API uint64_t cbus_admit_hash(unsigned scope, uint64_t key_hash)
{
    uint64_t z = key_hash ^ ((uint64_t)(scope + 1) * UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    z ^= z >> 31;
    return z ? z : 1;
}

CBUS_API uint64_t cbus_admit_key_hash(unsigned scope, const char *key)
{
    return cbus_admit_hash(scope, key ? cbus_key_hash(key, strlen(key)) : 0);
}

/* What cbusctl shows for an entry: the value if it fits whole, else its
 * shown prefix (cut at a UTF-8 boundary) and the whole value's hash, as the
 * daemons show cut keys ("prefix\u2026#1a2b3c4d"). */
static void entry_display(char out[CBUS_ADMIT_KEY_LEN], const char *display, uint64_t key_hash)
{
    memset(out, 0, CBUS_ADMIT_KEY_LEN);
    size_t n = display ? strnlen(display, 4096) : 0;
    if (n && n < CBUS_ADMIT_KEY_LEN && cbus_key_hash(display, n) == key_hash) {
        memcpy(out, display, n);
        return;
    }
    size_t keep = n < CBUS_ADMIT_KEY_LEN - 13 ? n : CBUS_ADMIT_KEY_LEN - 13;
    while (keep && ((unsigned char)display[keep] & 0xc0) == 0x80)
        keep--;
    snprintf(out, CBUS_ADMIT_KEY_LEN, "%.*s\u2026#%08x", (int)keep, keep ? display : "",
             (unsigned)(key_hash >> 32));
}

static uint64_t bus_now(cbus_bus *bus)
{
    uint64_t real;
    return cbus__clock_now(&bus->clock, &real);
}

/* ---- writer side -------------------------------------------------------- */

CBUS_API int cbus_admit_writer_register(cbus_bus *bus, const char *name, unsigned *writer)
{
    if (!bus || bus->readonly || !writer || cbus_name_valid(name) ||
        strlen(name) >= sizeof bus->awriters[0].name)
        return -EINVAL;
    uint64_t start = cbus__pid_start_time(getpid());
    int free_idx = -1;
    for (unsigned i = 0; i < CBUS_ADMIT_MAX_WRITERS; i++) {
        struct cbus_admit_writer *w = &bus->awriters[i];
        uint32_t in_use = atomic_load_explicit(&w->in_use, memory_order_acquire);
        if (!in_use) {
            if (free_idx < 0)
                free_idx = (int)i;
            continue;
        }
        if (strncmp(w->name, name, sizeof w->name))
            continue;
        if (cbus__pid_alive(atomic_load_explicit(&w->pid, memory_order_relaxed),
                            atomic_load_explicit(&w->pid_start_time, memory_order_relaxed)))
            return -EBUSY;
        /* A dead writer of the same name: take over its slot and verdicts
         * (a restarted rate limiter republishes what still holds). */
        atomic_store_explicit(&w->pid, (uint32_t)getpid(), memory_order_relaxed);
        atomic_store_explicit(&w->pid_start_time, start, memory_order_relaxed);
        atomic_store_explicit(&w->heartbeat_ns, bus_now(bus), memory_order_release);
        *writer = i;
        return 0;
    }
    for (unsigned i = free_idx < 0 ? 0 : (unsigned)free_idx; i < CBUS_ADMIT_MAX_WRITERS; i++) {
        struct cbus_admit_writer *w = &bus->awriters[i];
        uint32_t expect = 0;
        if (!atomic_compare_exchange_strong_explicit(&w->in_use, &expect, 1, memory_order_acq_rel,
                                                     memory_order_acquire))
            continue;
        atomic_store_explicit(&w->pid, (uint32_t)getpid(), memory_order_relaxed);
        atomic_store_explicit(&w->pid_start_time, start, memory_order_relaxed);
        memset(w->name, 0, sizeof w->name);
        memcpy(w->name, name, strlen(name));
        atomic_store_explicit(&w->heartbeat_ns, bus_now(bus), memory_order_release);
        *writer = i;
        return 0;
    }
    return -ENOSPC;
}

CBUS_API int cbus_admit_writer_heartbeat(cbus_bus *bus, unsigned writer)
{
    if (!bus || writer >= CBUS_ADMIT_MAX_WRITERS ||
        !atomic_load_explicit(&bus->awriters[writer].in_use, memory_order_acquire))
        return -EINVAL;
    atomic_store_explicit(&bus->awriters[writer].heartbeat_ns, bus_now(bus), memory_order_release);
    return 0;
}

static void entry_write(struct cbus_admit_entry *e, uint32_t word, uint64_t until_ns)
{
    /* Round up to even: a writer killed mid-update (or a forged segment)
     * leaves an odd seq, and odd + 2 would stay odd for ever. */
    uint32_t s = (atomic_load_explicit(&e->seq, memory_order_relaxed) + 1) & ~1u;
    atomic_store_explicit(&e->seq, s + 1, memory_order_relaxed); /* odd: writing */
    atomic_thread_fence(memory_order_release);
    atomic_store_explicit(&e->word, word, memory_order_relaxed);
    atomic_store_explicit(&e->until_ns, until_ns, memory_order_relaxed);
    /* RELEASE: publishes word/until.  Pairs with the ACQUIRE seq load in lookup(). */
    atomic_store_explicit(&e->seq, s + 2, memory_order_release);
}

CBUS_API void cbus_admit_writer_release(cbus_bus *bus, unsigned writer)
{
    if (!bus || writer >= CBUS_ADMIT_MAX_WRITERS)
        return;
    for (uint32_t i = 0; i <= bus->amask; i++) {
        struct cbus_admit_entry *e = &bus->aentries[i];
        uint32_t w = atomic_load_explicit(&e->word, memory_order_relaxed);
        if (atomic_load_explicit(&e->key_hash, memory_order_relaxed) && (w >> 16) == writer &&
            (w & 0xff) != CBUS_ALLOW)
            entry_write(e, CBUS_ADMIT_WORD(CBUS_ALLOW, (w >> 8) & 0xff, writer), 0);
    }
    atomic_store_explicit(&bus->awriters[writer].in_use, 0, memory_order_release);
}

CBUS_API int cbus_admit_publish(cbus_bus *bus, unsigned writer, unsigned scope, const char *key,
                                unsigned verdict, uint64_t until_ns)
{
    if (!key || !*key)
        return -EINVAL;
    return cbus_admit_publish_hash(bus, writer, scope, cbus_key_hash(key, strlen(key)), key,
                                   verdict, until_ns);
}

CBUS_API int cbus_admit_publish_hash(cbus_bus *bus, unsigned writer, unsigned scope,
                                     uint64_t key_hash, const char *display, unsigned verdict,
                                     uint64_t until_ns)
{
    if (!bus || bus->readonly || writer >= CBUS_ADMIT_MAX_WRITERS || scope >= CBUS_SCOPE__COUNT ||
        !key_hash || verdict > CBUS_BUDGET_EXCEEDED ||
        !atomic_load_explicit(&bus->awriters[writer].in_use, memory_order_acquire))
        return -EINVAL;
    uint64_t h = cbus_admit_hash(scope, key_hash);
    uint32_t word = CBUS_ADMIT_WORD(verdict, scope, writer);
    int64_t reusable = -1;
    for (uint32_t probe = 0; probe < CBUS__ADMIT_MAX_PROBE; probe++) {
        uint32_t i = (uint32_t)(h + probe) & bus->amask;
        struct cbus_admit_entry *e = &bus->aentries[i];
        uint64_t eh = atomic_load_explicit(&e->key_hash, memory_order_acquire);
        if (eh == h) {
            uint32_t w = atomic_load_explicit(&e->word, memory_order_relaxed);
            /* Another writer's live verdict on the same key: the stricter
             * stays (a budget stop is not lifted by a rate limiter's allow). */
            if ((w >> 16) != writer && (w & 0xff) > verdict)
                return 0;
            entry_write(e, word, until_ns);
            return 0;
        }
        if (eh == 0) {
            if (verdict == CBUS_ALLOW)
                return 0; /* nothing to clear */
            if (reusable >= 0)
                break;
            uint64_t expect = 0;
            /* Claim: fill in the verdict before the key becomes visible, so
             * a reader that matches the hash never sees a stale verdict. */
            entry_write(e, word, until_ns);
            entry_display(e->key, display, key_hash);
            if (atomic_compare_exchange_strong_explicit(&e->key_hash, &expect, h,
                                                        memory_order_acq_rel,
                                                        memory_order_acquire))
                return 0;
            continue; /* another writer took it: probe on */
        }
        if (reusable < 0 && (atomic_load_explicit(&e->word, memory_order_relaxed) & 0xff) ==
                                CBUS_ALLOW && (atomic_load(&e->word) >> 16) == writer)
            reusable = i;
    }
    if (verdict == CBUS_ALLOW)
        return 0;
    if (reusable < 0)
        return -ENOSPC;
    /* Recycle one of our cleared entries for this key.  Readers probing for
     * the old key simply find no match: allowed, which it was. */
    struct cbus_admit_entry *e = &bus->aentries[reusable];
    uint32_t s = (atomic_load_explicit(&e->seq, memory_order_relaxed) + 1) & ~1u;
    atomic_store_explicit(&e->seq, s + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    atomic_store_explicit(&e->key_hash, h, memory_order_relaxed);
    atomic_store_explicit(&e->word, word, memory_order_relaxed);
    atomic_store_explicit(&e->until_ns, until_ns, memory_order_relaxed);
    entry_display(e->key, display, key_hash);
    atomic_store_explicit(&e->seq, s + 2, memory_order_release);
    return 0;
}

CBUS_API int cbus_admit_clear_at(cbus_bus *bus, unsigned writer, unsigned i)
{
    if (!bus || bus->readonly || writer >= CBUS_ADMIT_MAX_WRITERS || i > bus->amask ||
        !atomic_load_explicit(&bus->awriters[writer].in_use, memory_order_acquire))
        return -EINVAL;
    struct cbus_admit_entry *e = &bus->aentries[i];
    uint32_t w = atomic_load_explicit(&e->word, memory_order_relaxed);
    if (!atomic_load_explicit(&e->key_hash, memory_order_relaxed) || (w >> 16) != writer)
        return -ENOENT;
    if ((w & 0xff) != CBUS_ALLOW)
        entry_write(e, CBUS_ADMIT_WORD(CBUS_ALLOW, (w >> 8) & 0xff, writer), 0);
    return 0;
}

CBUS_API const struct cbus_admit_entry *cbus_admit_entry_at(cbus_bus *bus, unsigned i)
{
    return bus && i <= bus->amask ? &bus->aentries[i] : NULL;
}

CBUS_API const struct cbus_admit_writer *cbus_admit_writer_at(cbus_bus *bus, unsigned i)
{
    return bus && i < CBUS_ADMIT_MAX_WRITERS ? &bus->awriters[i] : NULL;
}
