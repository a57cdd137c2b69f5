/* The admission table's read side: producers look verdicts up in O(1),
 * without syscalls or locks.  The table's layout, hashing and writer side are
 * bus/admit.c; this half needs the producer (flags, context hashes), so it
 * lives with the producer and bus/ stays free of producer internals. */
#include "producer_internal.h"

#include <time.h>

/* ---- reader side (producers) --------------------------------------------- */

/* A writer updates an entry in a few stores, a few ns apart, so a live one
 * is seen even within a couple of pauses.  An entry still odd (or changing)
 * after that was left half-written by a writer that died or is descheduled
 * mid-update, or was forged: it holds no verdict we can read now.  Spinning
 * longer buys nothing (the old 1000 tries cost ~105 us per entry); the budget
 * is per cbus_admit() call, so a table of odd entries costs a few dozen
 * loads, not 32 probes x 5 scopes x retries. */
#define TORN_RETRIES_PER_ENTRY 4
#define TORN_RETRIES_PER_CALL  16

/* Counts retries on a torn entry in this thread (tests read it: the bound
 * is asserted by count, not by time).  Only the retry path touches it. */
CBUS__TLS uint64_t cbus__admit_torn_retries;

/* lookup()'s answer when our key's entry could not be read consistently. */
#define LOOKUP_TORN 0x100u

/* Verdict for one key hash: CBUS_ALLOW when none, LOOKUP_TORN when our
 * key's entry stayed torn.  Lock-free, bounded by CBUS__ADMIT_MAX_PROBE entries
 * and the caller's retry budget. */
static unsigned lookup(cbus_bus *bus, uint64_t h, uint64_t now, uint64_t *until, unsigned *writer,
                       unsigned *budget)
{
    for (uint32_t probe = 0; probe < CBUS__ADMIT_MAX_PROBE; probe++) {
        struct cbus_admit_entry *e = &bus->aentries[(uint32_t)(h + probe) & bus->amask];
        for (int tries = 0;; tries++) {
            /* ACQUIRE: pairs with entry_write()'s RELEASE. */
            uint32_t s1 = atomic_load_explicit(&e->seq, memory_order_acquire);
            uint64_t eh = atomic_load_explicit(&e->key_hash, memory_order_relaxed);
            uint32_t w = atomic_load_explicit(&e->word, memory_order_relaxed);
            uint64_t u = atomic_load_explicit(&e->until_ns, memory_order_relaxed);
            atomic_thread_fence(memory_order_acquire);
            if (s1 & 1 || atomic_load_explicit(&e->seq, memory_order_relaxed) != s1) {
                if (tries < TORN_RETRIES_PER_ENTRY && *budget) {
                    (*budget)--;
                    cbus__admit_torn_retries++;
                    cbus__cpu_relax();
                    continue;
                }
                /* Unreadable.  key_hash alone is one atomic word and only
                 * goes 0 -> hash (claim) or hash -> hash (recycle), so it
                 * still says whose entry this is: empty ends the probe (a
                 * claim fills the verdict before the key, so an unclaimed
                 * entry holds none); another key's is stepped over, so it
                 * cannot hide ours behind it; ours has no verdict we trust. */
                eh = atomic_load_explicit(&e->key_hash, memory_order_relaxed);
                if (eh == 0)
                    return CBUS_ALLOW;
                if (eh != h)
                    break;
                return LOOKUP_TORN;
            }
            if (eh == 0)
                return CBUS_ALLOW;
            if (eh != h)
                break;
            unsigned v = w & 0xff;
            if (v == CBUS_ALLOW || v > CBUS_BUDGET_EXCEEDED)
                return CBUS_ALLOW;
            if (u && u <= now)
                return CBUS_ALLOW; /* lapsed */
            *until = u;
            *writer = (w >> 16) & 0xff;
            return v;
        }
    }
    return CBUS_ALLOW;
}

static int writer_stale(cbus_bus *bus, unsigned w, uint64_t now)
{
    if (w >= CBUS_ADMIT_MAX_WRITERS)
        return 1;
    const struct cbus_admit_writer *wr = &bus->awriters[w];
    if (!atomic_load_explicit(&wr->in_use, memory_order_acquire))
        return 1;
    uint64_t hb = atomic_load_explicit(&wr->heartbeat_ns, memory_order_acquire);
    return now > hb && now - hb > bus->admit_stale_ns;
}

CBUS_API int cbus_admit(cbus_producer *p, const cbus_ctx *ctx, uint64_t *retry_after_ns)
{
    if (!p || !ctx || ctx->magic != CBUS_CTX_MAGIC)
        return -EINVAL;
    cbus_bus *bus = p->bus;
    uint64_t real;
    uint64_t now = cbus__clock_now(&bus->clock, &real);
    if (p->flags & CBUS_PRODUCER_ADMIT_FAIL_CLOSED) {
        for (unsigned w = 0; w < CBUS_ADMIT_MAX_WRITERS; w++)
            if (atomic_load_explicit(&bus->awriters[w].in_use, memory_order_acquire) &&
                writer_stale(bus, w, now))
                return CBUS_ADMIT_STALE;
    }
    unsigned result = CBUS_ALLOW;
    uint64_t retry = 0;
    unsigned budget = TORN_RETRIES_PER_CALL;
    for (unsigned scope = 0; scope < CBUS_SCOPE__COUNT; scope++) {
        uint64_t h = ctx->admit_hash[scope];
        if (!h)
            continue;
        uint64_t until = 0;
        unsigned writer = 0;
        unsigned v = lookup(bus, h, now, &until, &writer, &budget);
        if (v == CBUS_ALLOW)
            continue;
        if (v == LOOKUP_TORN) {
            /* No verdict we can read: like a dead writer's, it fails open
             * by default and closed when the producer asked for that. */
            if (p->flags & CBUS_PRODUCER_ADMIT_FAIL_CLOSED)
                return CBUS_ADMIT_STALE;
            continue;
        }
        if (writer_stale(bus, writer, now)) {
            /* Its writer died: fail open by default. */
            if (p->flags & CBUS_PRODUCER_ADMIT_FAIL_CLOSED)
                return CBUS_ADMIT_STALE;
            continue;
        }
        if (v == CBUS_BUDGET_EXCEEDED) {
            result = CBUS_BUDGET_EXCEEDED;
            retry = until > now ? until - now : 0;
            break;
        }
        result = CBUS_THROTTLED;
        uint64_t r = until > now ? until - now : 0;
        if (r > retry)
            retry = r;
    }
    if (retry_after_ns)
        *retry_after_ns = retry;
    return (int)result;
}

CBUS_API int cbus_admit_wait(cbus_producer *p, const cbus_ctx *ctx, uint64_t timeout_ns)
{
    if (!p || !ctx)
        return -EINVAL;
    uint64_t start = cbus__mono_ns();
    for (;;) {
        uint64_t retry = 0;
        int v = cbus_admit(p, ctx, &retry);
        if (v == CBUS_ALLOW || v == CBUS_BUDGET_EXCEEDED || v < 0)
            return v;
        uint64_t elapsed = cbus__mono_ns() - start;
        if (elapsed >= timeout_ns)
            return -ETIMEDOUT;
        uint64_t left = timeout_ns - elapsed;
        /* Sleep until the verdict lapses (or 10 ms when it has no end, to see
         * it lifted), never past the deadline. */
        uint64_t sleep = retry ? retry : 10000000u;
        if (sleep > left)
            sleep = left;
        struct timespec ts = {(time_t)(sleep / 1000000000u), (long)(sleep % 1000000000u)};
        nanosleep(&ts, NULL);
    }
}
