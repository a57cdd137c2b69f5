/* Hostile writes into the live segment (docs/soak.md, "Segment faults").
 *
 * The orchestrator maps the bus read-write like any same-uid process can and
 * writes where a buggy or hostile one would: the header's counters and tail,
 * consumer entries, slot bytes, and forged consumer entries.  Every write is
 * recorded so the final checks can stay exact: injected drops are subtracted,
 * injected positions are counted as uncommitted claims, every event whose
 * proof a verifier rejects must sit at a position written here, and a forged
 * tethered entry must be untethered by the bus within a bound. */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cbus/bus.h>

#include "orch.h"

struct fault_stats FS;

static cbus_bus *bus;
static uint64_t *corrupted; /* positions whose slot bytes were written, sorted at the end */
static size_t ncorrupted, corrupted_cap;
static int corrupted_sorted;

#define MAX_FORGED 8
struct forged {
    int used;
    unsigned idx;
    uint64_t generation;
    uint64_t cursor;
    uint64_t forged_ns, blocked_ns; /* blocked: the tail reached cursor + capacity */
    int future_hb;
    char name[24];
};
static struct forged forged[MAX_FORGED];
static unsigned forged_seq;

void faults_set_bus(cbus_bus *b)
{
    bus = b;
}

static struct cbus_shm_header *hdr_rw(void)
{
    /* The validated header, written through: this is the hostile part. */
    return (struct cbus_shm_header *)cbus_bus_header(bus);
}

/* Faults aim at lane 0 (hdr->tail, the entries' own words, the first
 * lane_capacity slots); an event there has id = lane position * lanes. */
static uint64_t lane_cap(void)
{
    const struct cbus_shm_header *h = cbus_bus_header(bus);
    return h->lane_capacity ? h->lane_capacity : h->capacity;
}

static uint64_t lanes_of(void)
{
    const struct cbus_shm_header *h = cbus_bus_header(bus);
    return h->lane_count ? h->lane_count : 1;
}

static struct cbus_slot *slot_at(uint64_t pos)
{
    struct cbus_shm_header *h = hdr_rw();
    return (struct cbus_slot *)((char *)h + h->slots_off) + (pos & (lane_cap() - 1));
}

static void note_corrupted(uint64_t pos)
{
    if (ncorrupted == corrupted_cap) {
        size_t n = corrupted_cap ? corrupted_cap * 2 : 1024;
        uint64_t *p = realloc(corrupted, n * sizeof *p);
        if (!p)
            return;
        corrupted = p;
        corrupted_cap = n;
    }
    corrupted[ncorrupted++] = pos;
    corrupted_sorted = 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int faults_corrupted(uint64_t pos)
{
    if (!corrupted_sorted && ncorrupted) {
        qsort(corrupted, ncorrupted, sizeof *corrupted, cmp_u64);
        corrupted_sorted = 1;
    }
    return ncorrupted && bsearch(&pos, corrupted, ncorrupted, sizeof pos, cmp_u64) != NULL;
}

/* Header counters: drops and untethers added behind the producers' backs.
 * Added with fetch_add and remembered, so the drop invariant subtracts them
 * exactly.  Producer-table statistics get garbage (nothing trusts them;
 * max_wait_ns is left alone: invariant 6 reads it). */
static void corrupt_counters(void)
{
    struct cbus_shm_header *h = hdr_rw();
    uint64_t d = rnd_range(1, 5000);
    atomic_fetch_add(&h->dropped, d);
    FS.dropped_injected += d;
    FS.dropped_injected_epoch[atomic_load(&ST->epoch) % SOAK_MAX_EPOCH] += d;
    uint64_t u = rnd_range(1, 50);
    atomic_fetch_add(&h->untethered, u);
    FS.untethered_injected += u;
    FS.untethered_injected_epoch[atomic_load(&ST->epoch) % SOAK_MAX_EPOCH] += u;
    atomic_store(&h->producer_overflow_emitted, rnd());
    struct cbus_producer_entry *pe = cbus_bus_producer_entry(bus, (unsigned)(rnd() % CBUS_MAX_PRODUCERS));
    if (pe) {
        atomic_store(&pe->emitted, rnd());
        atomic_store(&pe->dropped, rnd());
        atomic_store(&pe->waited_ns, rnd());
    }
    FS.counters++;
}

/* Slot bytes: garbage into the request_id (the sequence proof) of a
 * committed event that some consumer may not have read yet.  Only that field:
 * it is what the verifiers check, and no daemon's totals depend on it, so the
 * cost check stays exact.  If the slot moved on while we wrote, the garbage
 * may sit in the next lap's event: both positions are recorded. */
static void corrupt_slot(void)
{
    struct cbus_shm_header *h = hdr_rw();
    uint64_t tail = atomic_load(&h->tail);
    if (tail < 2)
        return;
    uint64_t span = lane_cap() / 2 < tail ? lane_cap() / 2 : tail;
    for (int tries = 0; tries < 8; tries++) {
        uint64_t pos = tail - 1 - rnd() % span;
        struct cbus_slot *s = slot_at(pos);
        uint64_t s1 = atomic_load(&s->seq);
        if (s1 != CBUS_SEQ_COMMITTED(pos))
            continue;
        unsigned off = (unsigned)(rnd() % 24), len = 1 + (unsigned)(rnd() % (CBUS_REQUEST_LEN - off));
        uint64_t r = rnd();
        for (unsigned i = 0; i < len; i++) {
            if (i % 8 == 0)
                r = rnd();
            ((volatile char *)s->ev.request_id)[off + i] = (char)(r >> (8 * (i % 8)));
        }
        uint64_t s2 = atomic_load(&s->seq);
        note_corrupted(pos * lanes_of()); /* lane 0's event id */
        if (s2 != s1)
            note_corrupted((pos + lane_cap()) * lanes_of());
        FS.slots++;
        return;
    }
}

static int is_forged(unsigned idx)
{
    for (unsigned i = 0; i < MAX_FORGED; i++)
        if (forged[i].used && forged[i].idx == idx)
            return 1;
    return 0;
}

/* Consumer entries: what a buggy tool would write into a live consumer's
 * entry.  Its counters (the library keeps its own), its read position (a
 * statistic), its cursor moved back (producers only get more careful until
 * the consumer commits again), its heartbeat set to 0 (a producer it blocks
 * untethers it, counted: rule 3 still holds).  Never the cost daemon's
 * entry (invariant 9 needs it tethered) nor anything that would let a
 * lossless consumer lose events uncounted (docs: not covered). */
static void corrupt_entry(void)
{
    unsigned cand[CBUS_MAX_CONSUMERS], n = 0;
    for (unsigned i = 0; i < CBUS_MAX_CONSUMERS; i++) {
        struct cbus_consumer_entry *e = cbus_bus_consumer_entry(bus, i);
        if (e && atomic_load(&e->state) == CBUS_CSTATE_ACTIVE && strncmp(e->name, "cost", sizeof e->name) &&
            !is_forged(i))
            cand[n++] = i;
    }
    if (!n)
        return;
    struct cbus_consumer_entry *e = cbus_bus_consumer_entry(bus, cand[rnd() % n]);
    switch (rnd() % 4) {
    case 0:
        atomic_store(&e->consumed, rnd());
        atomic_store(&e->lost, rnd());
        atomic_store(&e->abandoned, rnd());
        break;
    case 1: {
        uint64_t rp = atomic_load(&e->read_pos);
        atomic_store(&e->read_pos, rp - (rp ? rnd() % rp : 0));
        break;
    }
    case 2: {
        uint64_t c = atomic_load(&e->cursor), k = c ? rnd_range(1, c + 1) : 0;
        /* CAS: never move it forward if the consumer committed meanwhile */
        atomic_compare_exchange_strong(&e->cursor, &c, c - (k > c ? c : k));
        break;
    }
    default:
        atomic_store(&e->heartbeat_ns, 0);
        FS.entry_heartbeats++;
        break;
    }
    FS.entries++;
}

/* The tail moved forward: positions nobody claimed, which consumers must
 * pass as abandoned (or lost) without stalling for each one. */
static void tail_jump(int large)
{
    uint64_t j = large ? rnd_range(1000, 30000) : rnd_range(1, 4);
    atomic_fetch_add(&hdr_rw()->tail, j);
    FS.tail_jumps++;
    FS.last_tail_jump_ns = soak_now_ns();
    FS.tail_positions += j;
    FS.tail_positions_epoch[atomic_load(&ST->epoch) % SOAK_MAX_EPOCH] += j;
}

static uint64_t newest_heartbeat(void)
{
    uint64_t m = 0;
    for (unsigned i = 0; i < CBUS_MAX_CONSUMERS; i++) {
        struct cbus_consumer_entry *e = cbus_bus_consumer_entry(bus, i);
        if (e && atomic_load(&e->state) == CBUS_CSTATE_ACTIVE && !is_forged(i)) {
            uint64_t hb = atomic_load(&e->heartbeat_ns);
            if (hb > m)
                m = hb;
        }
    }
    return m;
}

/* A forged consumer entry: lossless and tethered, claiming a dead process,
 * with a heartbeat an hour in the future or one that is fresh now (and
 * never moves).  The bus must untether it once producers are blocked by it. */
static void forge_entry(uint64_t now)
{
    struct forged *f = NULL;
    for (unsigned i = 0; i < MAX_FORGED && !f; i++)
        if (!forged[i].used)
            f = &forged[i];
    uint64_t hb = newest_heartbeat();
    if (!f || !hb)
        return;
    for (unsigned i = 0; i < CBUS_MAX_CONSUMERS; i++) {
        struct cbus_consumer_entry *e = cbus_bus_consumer_entry(bus, i);
        uint32_t st = CBUS_CSTATE_FREE;
        if (!e || !atomic_compare_exchange_strong(&e->state, &st, CBUS_CSTATE_CLAIMED))
            continue;
        memset(f, 0, sizeof *f);
        f->used = 1;
        f->idx = i;
        f->future_hb = (int)(rnd() % 3 != 0);
        f->forged_ns = now;
        snprintf(f->name, sizeof f->name, "forged-%u", forged_seq++);
        snprintf(e->name, sizeof e->name, "%s", f->name);
        e->pid = (uint32_t)G.dead_pid;     /* a child we killed and reaped */
        e->pid_start_time = rnd();
        e->attach_realtime_ns = 0;
        f->cursor = atomic_load(&hdr_rw()->tail);
        atomic_store(&e->cursor, f->cursor);
        atomic_store(&e->read_pos, f->cursor);
        /* Lanes 1..: a tethered entry gates them too, from their tails now. */
        struct cbus_shm_header *h = hdr_rw();
        for (unsigned L = 1; L < lanes_of(); L++) {
            struct cbus_lane_cursors *lc =
                (struct cbus_lane_cursors *)((char *)h + h->lane_cursors_off) + i;
            uint64_t t = cbus_bus_lane_tail(bus, L);
            atomic_store(&lc->cursor[L], t);
            atomic_store(&lc->read_pos[L], t);
        }
        atomic_store(&e->heartbeat_ns, f->future_hb ? hb + 3600000000000u : hb);
        atomic_store(&e->untethered_count, 0);
        atomic_store(&e->flags, CBUS_CFLAG_LOSSLESS | CBUS_CFLAG_TETHERED);
        f->generation = atomic_fetch_add(&e->generation, 1) + 1;
        atomic_store(&e->state, CBUS_CSTATE_ACTIVE);
        /* what tethering does: count + 1, epoch + 1 (producers recompute) */
        atomic_fetch_add(&hdr_rw()->gate, (UINT64_C(1) << 16) + 1);
        FS.forged++;
        if (G.verbose)
            fprintf(stderr, "soak: forged %s (entry %u, %s heartbeat, dead pid %d) at cursor %" PRIu64 "\n",
                    f->name, i, f->future_hb ? "future" : "frozen", (int)G.dead_pid, f->cursor);
        return;
    }
    f->used = 0;
}

/* Removes a forged entry the way `cbusctl evict` does: untether (exactly
 * once, with the gate count) then free. */
static void evict_forged(struct forged *f)
{
    struct cbus_consumer_entry *e = cbus_bus_consumer_entry(bus, f->idx);
    if (e && atomic_load(&e->generation) == f->generation) {
        uint32_t fl = atomic_load(&e->flags);
        while (fl & CBUS_CFLAG_TETHERED)
            if (atomic_compare_exchange_weak(&e->flags, &fl, fl & ~CBUS_CFLAG_TETHERED)) {
                atomic_fetch_add(&hdr_rw()->gate, (UINT64_C(1) << 16) - 1);
                break;
            }
        atomic_store(&e->state, CBUS_CSTATE_FREE);
    }
    f->used = 0;
}

void faults_tick(uint64_t now, uint64_t sched_delay)
{
    if (!bus)
        return;
    const struct cbus_shm_header *h = cbus_bus_header(bus);
    for (unsigned i = 0; i < MAX_FORGED; i++) {
        struct forged *f = &forged[i];
        if (!f->used)
            continue;
        struct cbus_consumer_entry *e = cbus_bus_consumer_entry(bus, f->idx);
        int gone = !e || atomic_load(&e->generation) != f->generation ||
                   atomic_load(&e->state) != CBUS_CSTATE_ACTIVE;
        if (gone || !(atomic_load(&e->flags) & CBUS_CFLAG_TETHERED)) {
            uint64_t took = now - (f->blocked_ns ? f->blocked_ns : now);
            if (took > FS.forged_max_ns)
                FS.forged_max_ns = took;
            FS.forged_untethered++;
            if (!gone && atomic_load(&e->untethered_count))
                FS.forged_counted++;
            evict_forged(f);
            continue;
        }
        /* Is it what blocks the producers: the lowest tethered cursor, with
         * the tail a capacity ahead of it?  (Behind a slower live consumer
         * it is never looked at, rightly.) */
        int blocker = atomic_load(&h->tail) >= f->cursor + lane_cap();
        for (unsigned j = 0; j < CBUS_MAX_CONSUMERS && blocker; j++) {
            struct cbus_consumer_entry *o = cbus_bus_consumer_entry(bus, j);
            if (j != f->idx && o && atomic_load(&o->state) == CBUS_CSTATE_ACTIVE &&
                (atomic_load(&o->flags) & CBUS_CFLAG_TETHERED) && atomic_load(&o->cursor) <= f->cursor)
                blocker = 0;
        }
        if (!blocker)
            f->blocked_ns = 0;
        else if (!f->blocked_ns)
            f->blocked_ns = now;
        /* Producers look at the blocking entry only once they are blocked;
         * from then on a forged heartbeat or a dead pid must not hold them
         * for longer than the stall timeout (plus a margin and the worst
         * scheduling delay seen: the untether is done by a producer). */
        uint64_t bound = G.stall_timeout_ns + 5000000000u + sched_delay;
        if (f->blocked_ns && now - f->blocked_ns > bound) {
            violation("forged consumer entry %s (%s heartbeat, dead pid %d) still tethered %.1f s "
                      "after it blocked the producers (bound %.1f s): producers held",
                      f->name, f->future_hb ? "future" : "frozen", (int)G.dead_pid,
                      (now - f->blocked_ns) / 1e9, bound / 1e9);
            FS.forged_evicted++;
            evict_forged(f);
        }
    }
}

void faults_heal(void)
{
    for (unsigned i = 0; i < MAX_FORGED; i++)
        if (forged[i].used) {
            FS.forged_evicted_at_end++;
            evict_forged(&forged[i]);
        }
}

void faults_act(uint64_t now)
{
    unsigned kinds[8], n = 0;
    if (G.faults & F_COUNTERS) kinds[n++] = F_COUNTERS;
    if (G.faults & F_SLOT) kinds[n++] = F_SLOT;
    if (G.faults & F_ENTRY) kinds[n++] = F_ENTRY;
    if (G.faults & F_TAIL) kinds[n++] = F_TAIL;
    if (G.faults & F_TAIL_LARGE) kinds[n++] = F_TAIL_LARGE;
    if ((G.faults & F_FORGE) && G.dead_pid) kinds[n++] = F_FORGE;
    if (!n || !bus)
        return;
    switch (kinds[rnd() % n]) {
    case F_COUNTERS: corrupt_counters(); break;
    case F_SLOT: corrupt_slot(); break;
    case F_ENTRY: corrupt_entry(); break;
    case F_TAIL: tail_jump(0); break;
    case F_TAIL_LARGE: tail_jump(1); break;
    case F_FORGE: forge_entry(now); break;
    default: break;
    }
}
