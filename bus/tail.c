/* Repairing a corrupt tail.
 *
 * A lane's tail (hdr->tail for lane 0) is one shared word that any process with the segment mapped can
 * write.  Legitimately it only grows, by one per claim, and it stays far
 * below CBUS__POS_LIMIT (2^56 claims per lane), so
 * that 2p + 2, the commit word of position p, cannot wrap.  Two corruptions
 * would otherwise lose events without counting them:
 *
 *  - tail moved back: producers claim positions the ring already used and
 *    write over events consumers already passed (never seen, never counted),
 *    while a consumer waits at its read position with "lag 0";
 *  - tail moved to near 2^64: positions wrap, commit words overflow, and a
 *    consumer would count 2^64 positions as lost.
 *
 * Producers check each claimed slot's commit word (emit.c: a slot already
 * at this lap or a later one was claimed before); consumers check the tail
 * they read (consumer.c).  Whoever notices calls cbus__tail_repair(), which
 * puts tail back a gap past the highest position the ring shows was reached
 * (claims in flight show nowhere, see below); a producer whose position is
 * below that highest one drops its event, counted (a position past the
 * limit is always dropped).  A slot word more than a ring above what the
 * ring corroborates (slots holding consecutive positions) is a stray write:
 * it moves nothing and the producer writes over it.  Moving tail forward by
 * a sane amount is not detectable this way: consumers skip such a gap as
 * abandoned (consumer.c). */
#include "internal.h"

/* The position whose claim last wrote slot `i`, or UINT64_MAX when the slot
 * was never written or its word names a position that is out of range or
 * does not map to this slot (a forged word proves nothing). */
static uint64_t slot_position(const struct cbus_slot *slots, uint64_t mask, uint64_t i)
{
    uint64_t s = atomic_load_explicit(&slots[i].seq, memory_order_acquire);
    if (s == 0 || s > CBUS_SEQ_COMMITTED(CBUS__POS_LIMIT - 1))
        return UINT64_MAX;
    uint64_t p = (s - 1) / 2; /* BUSY(p) = 2p+1 and COMMITTED(p) = 2p+2 both give p */
    return (p & mask) == i ? p : UINT64_MAX;
}

uint64_t cbus__tail_repair(cbus_bus *bus, unsigned lane, uint64_t floor)
{
    if (lane >= bus->lane_count)
        return floor;
    const struct cbus_slot *slots = cbus__lane_slots(bus, lane);
    const uint64_t cap = bus->lane_cap;
    /* Every position below these was claimed, so the true tail is at least
     * one past the highest slot position and at least every consumer's read
     * position (those cover positions skipped as never claimed, which no
     * slot shows).  A full pass over the slots: this runs once per
     * corruption, never on a healthy bus. */
    uint64_t hi = floor < CBUS__POS_LIMIT ? floor : 0;
    for (uint64_t i = 0; i < cap; i++) {
        uint64_t p = slot_position(slots, bus->mask, i);
        /* Counted only if the slot before holds the position before: one
         * stray word must not throw tail to wherever it says. */
        if (p != UINT64_MAX && p + 1 > hi &&
            (p == 0 || slot_position(slots, bus->mask, (i - 1) & bus->mask) == p - 1))
            hi = p + 1;
    }
    /* But an event committed just above a claim in flight, or just past a
     * gap (one this function left, or a forward write), has no such
     * neighbour either, and a producer handed its position again would
     * write over it: lost, uncounted.  So a position within a ring of the
     * corroborated ones counts too; a stray word can then move tail forward
     * by at most a ring, a gap consumers skip in one stall timeout, as a
     * forward write of tail is. */
    const uint64_t sane = hi + cap;
    for (uint64_t i = 0; i < cap; i++) {
        uint64_t p = slot_position(slots, bus->mask, i);
        if (p != UINT64_MAX && p + 1 > hi && p < sane)
            hi = p + 1;
    }
    for (unsigned i = 0; i < CBUS_MAX_CONSUMERS; i++) {
        struct cbus_consumer_entry *e = &bus->consumers[i];
        if (atomic_load_explicit(&e->state, memory_order_acquire) != CBUS_CSTATE_ACTIVE)
            continue;
        uint64_t r = atomic_load_explicit(cbus__read_pos_word(bus, i, lane), memory_order_relaxed);
        if (r < CBUS__POS_LIMIT && r > hi)
            hi = r;
    }
    /* Only ever from a bad value: a legitimate tail is already >= hi (every
     * position counted above was claimed from it), so a producer that moved
     * it on meanwhile is never pulled back.
     *
     * Not to hi itself but REPAIR_GAP past it: a position claimed (the
     * fetch_add) but not marked yet shows in no slot, and those sit just at
     * hi (the claims taken from the good tail before the bad write, by
     * producers preempted before their mark).  Handing hi out again would
     * put two writers in one slot, storing the same commit words, so
     * readers would take a torn mix or lose one event uncounted.  Past the
     * gap the late writers commit their own positions, and consumers skip
     * the rest of it as abandoned (one stall timeout for the whole run of
     * unmarked positions).  An eighth of the ring: more claims in flight at
     * once than any host has threads, and it leaves a lossless consumer
     * that had caught up 7/8 of the ring before producers wait on it. */
    const uint64_t gap = cap / 8;
    _Atomic uint64_t *tail = bus->tails[lane];
    uint64_t cur = atomic_load_explicit(tail, memory_order_seq_cst);
    while (cur >= CBUS__POS_LIMIT || cur < hi) {
        if (atomic_compare_exchange_weak_explicit(tail, &cur, hi + gap,
                                                  memory_order_seq_cst, memory_order_seq_cst))
            break;
    }
    return hi;
}
