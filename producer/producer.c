/* Producers: open/close, statistics, and the claim.
 *
 * The claim is the one contended step.  With no tethered (lossless)
 * consumer it is a wait-free fetch_add on hdr->tail.  With one, a producer
 * must never take a position that would overwrite an event that consumer
 * has not committed, and a fetch_add claim cannot be given back (the
 * position is taken for good: docs/architecture.md, "Emitting", Claim), so it claims with CAS strictly below min(tethered cursors) +
 * capacity.  When that bound is reached it waits at most the bus's
 * lossless_wait_ns, then drops and counts; after one such timeout it drops
 * at once until the blocking consumer moves, so a stuck consumer costs each
 * thread one bounded wait, not one per event.  A consumer whose heartbeat is
 * older than stall_timeout_ns is untethered by the producer that notices.
 *
 * Kinds under a burst (issue 13 item 2).  A token flood fills the ring up to
 * a slow lossless consumer long before the llm_end that carries the run's
 * usage arrives, and that llm_end is what the money depends on.  So, at the
 * bound:
 *   - a kind that no tethered consumer needs (cbus_consumer_opts.kinds: the
 *     cost daemon needs only LLM ends and errors) is dropped at once, never
 *     waited for;
 *   - bulk kinds (the kind map's TOKEN payload) may fill the ring only to
 *     7/8 of a lane: the last eighth is kept for every other kind, so an end
 *     finds room while tokens are being dropped;
 *   - ends and errors always get their bounded wait: the "drop at once
 *     after a timeout" memory is for the other kinds, so one stuck moment
 *     does not cost every later llm_end.
 * Slots are shared by every kind, so the bound itself is the same for all
 * (min over every tethered cursor); only whether and how long to wait at it
 * depends on the kind. */
#include "producer_internal.h"

#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <unistd.h>

CBUS__TLS struct cbus__producer_tls cbus__ptls;
static _Atomic uint64_t next_generation = 1;

/* ---- flushing a thread's counts when it exits ------------------------------
 * A thread holds up to 255 unflushed "emitted" counts; a pool thread or a
 * Node worker that exits would take them along.  A pthread key destructor
 * runs at thread exit (static TLS is still there) and flushes them into the
 * producer the thread last used -- if it is still open: the producers open
 * in this process are listed under a mutex (open, close and thread exit
 * take it; the emit path never does), so the destructor never touches a
 * closed producer.  The key costs the emit path nothing: it is set on a
 * thread's first emit, once per thread.  libcbus.so is linked -z nodelete so
 * a dlclose cannot unload the destructor while threads still hold the key. */
static pthread_once_t exit_once = PTHREAD_ONCE_INIT;
static pthread_key_t exit_key;
static int exit_key_ok;
static pthread_mutex_t live_mu = PTHREAD_MUTEX_INITIALIZER;
static cbus_producer *live_list;

static void lane_give_back(cbus_producer *p, struct cbus__producer_tls *t);

static void thread_exit_flush(void *arg)
{
    (void)arg;
    struct cbus__producer_tls *t = &cbus__ptls;
    if ((!t->pending && !t->lane_owned) || !t->generation)
        return;
    pthread_mutex_lock(&live_mu);
    for (cbus_producer *p = live_list; p; p = p->live_next) {
        if (p->generation == t->generation) {
            cbus__producer_flush(p, t);
            lane_give_back(p, t);
            break;
        }
    }
    pthread_mutex_unlock(&live_mu);
}

/* ---- lanes -----------------------------------------------------------------
 * On a bus of several lanes a thread takes a free lane at its first emit
 * (out of line, once) and claims only there, so threads that own lanes share
 * no written line on the fast path.  A lane is given back when the thread
 * exits (the key destructor above) or its producer closes; a process that
 * dies holding lanes leaves its pid in them, and the next thread that finds
 * no free lane takes one whose owner is dead.  With more threads than lanes
 * a thread shares one (tid-hashed): every lane is a multi-writer ring, so
 * sharing costs contention, never correctness. */
static uint64_t lane_owner_word(const struct cbus__producer_tls *t)
{
    return (uint64_t)t->pid << 32 | t->tid;
}

static void lane_take(cbus_producer *p, struct cbus__producer_tls *t)
{
    cbus_bus *bus = p->bus;
    const unsigned n = bus->lane_count;
    t->lane = 0;
    t->lane_owned = 0;
    if (n > 1) {
        uint32_t tid = t->tid;
        uint64_t me = lane_owner_word(t);
        /* A process forked from the one that opened p has its own start time. */
        uint64_t start = t->pid == p->pid ? p->start_time : cbus__pid_start_time((int)t->pid);
        t->lane = tid & (n - 1); /* shared, unless one is free below */
        for (int pass = 0; pass < 2 && !t->lane_owned; pass++) {
            for (unsigned i = 0; i < n; i++) {
                unsigned L = (tid + i) & (n - 1);
                struct cbus_lane *ln = &bus->lanes[L];
                uint64_t owner = atomic_load_explicit(&ln->owner, memory_order_acquire);
                if (owner) {
                    /* second pass: a lane whose owning process is gone
                     * (start time 0 = being taken right now: pid only) */
                    uint64_t st = atomic_load_explicit(&ln->owner_start_time, memory_order_relaxed);
                    if (pass == 0 || cbus__pid_alive((uint32_t)(owner >> 32), st))
                        continue;
                }
                if (!atomic_compare_exchange_strong_explicit(&ln->owner, &owner, me,
                                                             memory_order_acq_rel,
                                                             memory_order_relaxed))
                    continue;
                atomic_store_explicit(&ln->owner_start_time, start, memory_order_relaxed);
                atomic_fetch_add_explicit(&ln->taken, 1, memory_order_relaxed);
                atomic_fetch_or_explicit(&p->lanes_held, UINT64_C(1) << L, memory_order_relaxed);
                t->lane = L;
                t->lane_owned = 1;
                break;
            }
        }
    }
    t->tail = bus->tails[t->lane];
    t->slots = cbus__lane_slots(bus, t->lane);
}

/* Gives lane L back if this thread (owner word `me`) still holds it. */
static void lane_release(cbus_producer *p, unsigned L, uint64_t me, int any_thread)
{
    struct cbus_lane *ln = &p->bus->lanes[L];
    uint64_t owner = atomic_load_explicit(&ln->owner, memory_order_acquire);
    if (owner == 0 || (any_thread ? owner >> 32 != me >> 32 : owner != me))
        return;
    atomic_store_explicit(&ln->owner_start_time, 0, memory_order_relaxed);
    atomic_compare_exchange_strong_explicit(&ln->owner, &owner, 0, memory_order_acq_rel,
                                            memory_order_relaxed);
}

static void lane_give_back(cbus_producer *p, struct cbus__producer_tls *t)
{
    if (!t->lane_owned)
        return;
    lane_release(p, t->lane, lane_owner_word(t), 0);
    t->lane_owned = 0;
}

/* A child forked while another thread held live_mu inherits it locked.
 * The forking thread's state is the child's only thread's: its next emit
 * must start over (its own pid and tid in events, slots and lane owner
 * words, no lane of the parent's thread, no count the parent will flush). */
static void atfork_child(void)
{
    pthread_mutex_init(&live_mu, NULL);
    cbus__ptls.generation = 0;
    cbus__ptls.lane_owned = 0;
    cbus__proc_after_fork();
}

static void exit_init(void)
{
    exit_key_ok = pthread_key_create(&exit_key, thread_exit_flush) == 0;
    pthread_atfork(NULL, NULL, atfork_child);
}

void cbus__producer_thread_start(cbus_producer *p, struct cbus__producer_tls *t)
{
    int armed = t->exit_armed;
    *t = (struct cbus__producer_tls){.generation = p->generation, .exit_armed = armed,
                                     .pid = (uint32_t)getpid(), .tid = cbus__gettid()};
    lane_take(p, t);
    /* Once per thread.  Any non-NULL value makes the destructor run; glibc
     * stores the first 32 keys in the thread descriptor (no allocation). */
    if (!armed && exit_key_ok && pthread_setspecific(exit_key, t) == 0)
        t->exit_armed = 1;
}

static void entry_acquire(cbus_producer *p, const char *name)
{
    cbus_bus *bus = p->bus;
    uint64_t start = cbus__pid_start_time(getpid());
    for (int pass = 0; pass < 2; pass++) {
        for (unsigned i = 0; i < CBUS_MAX_PRODUCERS; i++) {
            struct cbus_producer_entry *e = &bus->producers[i];
            uint32_t in_use = atomic_load_explicit(&e->in_use, memory_order_acquire);
            /* second pass: take over entries of dead producers */
            if (in_use && (pass == 0 || cbus__pid_alive(atomic_load_explicit(&e->pid, memory_order_relaxed),
                                                       atomic_load_explicit(&e->pid_start_time, memory_order_relaxed))))
                continue;
            /* 2 while the identity below is written; 1 (RELEASE) once it is
             * whole, for consumers that read it (ACQUIRE in scan_producers()). */
            if (!atomic_compare_exchange_strong_explicit(&e->in_use, &in_use, 2,
                                                         memory_order_acq_rel,
                                                         memory_order_acquire))
                continue;
            atomic_store_explicit(&e->pid, p->pid, memory_order_relaxed);
            atomic_store_explicit(&e->pid_start_time, start, memory_order_relaxed);
            atomic_store_explicit(&e->emitted, 0, memory_order_relaxed);
            atomic_store_explicit(&e->dropped, 0, memory_order_relaxed);
            atomic_store_explicit(&e->waited_ns, 0, memory_order_relaxed);
            atomic_store_explicit(&e->max_wait_ns, 0, memory_order_relaxed);
            memset(e->name, 0, sizeof e->name);
            memcpy(e->name, name, strnlen(name, sizeof e->name - 1));
            atomic_store_explicit(&e->in_use, 1, memory_order_release);
            p->entry = e;
            return;
        }
    }
    p->entry = NULL; /* table full: counted in hdr->producer_overflow_emitted */
}

CBUS_API int cbus_producer_open_bus(cbus_producer **out, cbus_bus *bus,
                                    const struct cbus_producer_opts *opts)
{
    if (!out)
        return -EINVAL;
    *out = NULL;
    if (!bus || bus->readonly)
        return -EINVAL;
    if (opts && opts->flags & ~CBUS_PRODUCER_ADMIT_FAIL_CLOSED)
        return -EINVAL;
    if (opts && opts->name && cbus_name_valid(opts->name))
        return -EINVAL;
    cbus_producer *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    p->bus = bus;
    p->hdr = bus->hdr;
    p->slots = bus->slots;
    p->mask = bus->mask;
    p->capacity = bus->lane_cap;
    p->broken = bus->broken;
    p->pid = (uint32_t)getpid();
    p->start_time = cbus__pid_start_time(getpid());
    p->flags = opts ? opts->flags : 0;
    p->generation = atomic_fetch_add_explicit(&next_generation, 1, memory_order_relaxed);
    pthread_once(&exit_once, exit_init);
    pthread_mutex_lock(&live_mu);
    p->live_next = live_list;
    live_list = p;
    pthread_mutex_unlock(&live_mu);
    char name[32];
    if (opts && opts->name)
        snprintf(name, sizeof name, "%s", opts->name);
    else
        snprintf(name, sizeof name, "pid%u", p->pid);
    entry_acquire(p, name);
    *out = p;
    return 0;
}

CBUS_API int cbus_producer_open(cbus_producer **out, const char *bus_name,
                                const struct cbus_producer_opts *opts)
{
    if (!out)
        return -EINVAL;
    *out = NULL;
    cbus_bus *bus;
    int r = cbus_bus_open(&bus, bus_name, opts ? opts->open_flags : 0);
    if (r)
        return r;
    r = cbus_producer_open_bus(out, bus, opts);
    if (r) {
        cbus_bus_close(bus);
        return r;
    }
    (*out)->owns_bus = 1;
    return 0;
}

void cbus__producer_flush(cbus_producer *p, struct cbus__producer_tls *t)
{
    if (!t->pending)
        return;
    atomic_fetch_add_explicit(&p->emitted, t->pending, memory_order_relaxed);
    if (p->entry)
        atomic_fetch_add_explicit(&p->entry->emitted, t->pending, memory_order_relaxed);
    else
        atomic_fetch_add_explicit(&p->hdr->producer_overflow_emitted, t->pending,
                                  memory_order_relaxed);
    t->pending = 0;
}

CBUS_API void cbus_producer_close(cbus_producer *p)
{
    if (!p)
        return;
    struct cbus__producer_tls *t = &cbus__ptls;
    if (t->generation == p->generation) {
        cbus__producer_flush(p, t);
        t->generation = 0;
    }
    /* Off the list first: a thread exiting from now on finds nothing to
     * flush into (its counts for a closed producer have nowhere to go). */
    pthread_mutex_lock(&live_mu);
    for (cbus_producer **q = &live_list; *q; q = &(*q)->live_next) {
        if (*q == p) {
            *q = p->live_next;
            break;
        }
    }
    pthread_mutex_unlock(&live_mu);
    /* Lanes our threads still hold (threads that have not exited). */
    uint64_t held = atomic_load_explicit(&p->lanes_held, memory_order_relaxed);
    for (unsigned L = 0; held && L < p->bus->lane_count; L++)
        if (held & (UINT64_C(1) << L))
            lane_release(p, L, (uint64_t)getpid() << 32, 1);
    if (t->generation == 0)
        t->lane_owned = 0;
    /* The table entry belongs to the process that opened p: a forked child
     * (a pre-fork server's worker) that closes its inherited copy gives back
     * its own lanes and mapping, never the entry its parent still emits under
     * (the parent's counts would vanish from cbusctl stat and the next open
     * would take the entry from under it). */
    if (p->entry && p->pid == (uint32_t)getpid())
        atomic_store_explicit(&p->entry->in_use, 0, memory_order_release);
    if (p->owns_bus)
        cbus_bus_close(p->bus);
    free(p);
}

CBUS_API int cbus_producer_stats(cbus_producer *p, struct cbus_producer_stats *out)
{
    if (!p || !out)
        return -EINVAL;
    const struct cbus__producer_tls *t = &cbus__ptls;
    out->emitted = atomic_load_explicit(&p->emitted, memory_order_relaxed) +
                   (t->generation == p->generation ? t->pending : 0);
    out->dropped = atomic_load_explicit(&p->dropped, memory_order_relaxed);
    out->waited_ns = atomic_load_explicit(&p->waited_ns, memory_order_relaxed);
    out->max_wait_ns = atomic_load_explicit(&p->max_wait_ns, memory_order_relaxed);
    return 0;
}

CBUS_API cbus_bus *cbus_producer_bus(cbus_producer *p)
{
    return p ? p->bus : NULL;
}

/* ---- the gated claim ------------------------------------------------------ */

/* min(cursor in lane) over tethered consumers; *blocker gets the entry
 * holding it, *kinds the union of the kinds they need (all bits when one of
 * them did not say). */
static uint64_t gate_min(cbus_bus *bus, unsigned lane, struct cbus_consumer_entry **blocker,
                         uint64_t *kinds)
{
    uint64_t min = UINT64_MAX, need = 0;
    *blocker = NULL;
    for (unsigned i = 0; i < CBUS_MAX_CONSUMERS; i++) {
        struct cbus_consumer_entry *e = &bus->consumers[i];
        if (atomic_load_explicit(&e->state, memory_order_acquire) != CBUS_CSTATE_ACTIVE)
            continue;
        uint32_t f = atomic_load_explicit(&e->flags, memory_order_acquire);
        if (!(f & CBUS_CFLAG_TETHERED))
            continue;
        need |= f & CBUS_CFLAG_KINDS ? atomic_load_explicit(&e->kinds, memory_order_relaxed)
                                     : UINT64_MAX;
        /* ACQUIRE: pairs with the RELEASE store of cursor in
         * cbus_consumer_commit_to(): the consumer is done with every slot
         * below it. */
        uint64_t c = atomic_load_explicit(cbus__cursor_word(bus, i, lane), memory_order_acquire);
        if (c < min) {
            min = c;
            *blocker = e;
        }
    }
    *kinds = need;
    return min;
}

/* Bulk kinds stop an eighth of a lane short of the bound (see the top). */
static inline int kind_is_bulk(unsigned kind)
{
    return cbus_kind_payload(kind) == CBUS_PAYLOAD_TOKEN;
}

/* Ends and errors: what accounting counts.  Never dropped without a wait. */
static inline int kind_is_accountable(unsigned kind)
{
    enum cbus_kind_phase ph = cbus_kind_phase(kind);
    return ph == CBUS_PHASE_END || ph == CBUS_PHASE_ERROR;
}

static void record_wait(cbus_producer *p, uint64_t waited)
{
    atomic_fetch_add_explicit(&p->waited_ns, waited, memory_order_relaxed);
    uint64_t m = atomic_load_explicit(&p->max_wait_ns, memory_order_relaxed);
    while (waited > m &&
           !atomic_compare_exchange_weak_explicit(&p->max_wait_ns, &m, waited,
                                                  memory_order_relaxed, memory_order_relaxed)) {
    }
    if (p->entry) {
        atomic_fetch_add_explicit(&p->entry->waited_ns, waited, memory_order_relaxed);
        m = atomic_load_explicit(&p->entry->max_wait_ns, memory_order_relaxed);
        while (waited > m && !atomic_compare_exchange_weak_explicit(
                                 &p->entry->max_wait_ns, &m, waited, memory_order_relaxed,
                                 memory_order_relaxed)) {
        }
    }
}

int cbus__producer_drop(cbus_producer *p)
{
    atomic_fetch_add_explicit(&p->dropped, 1, memory_order_relaxed);
    if (p->entry)
        atomic_fetch_add_explicit(&p->entry->dropped, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&p->hdr->dropped, 1, memory_order_relaxed);
    return -EAGAIN;
}

/* A heartbeat at most this far ahead of the producer's clock is a live
 * consumer's: each thread anchors the bus clock to CLOCK_MONOTONIC on its own
 * (clock.c), within microseconds of the others, and the heartbeat is loaded
 * before the clock is read.  One further ahead was forged (or written on
 * another clock) and must not count as fresh: `now <= hb` kept it fresh for
 * as long as the forger liked. */
#define HB_FUTURE_SLACK_NS UINT64_C(100000000)
/* More than the threads' clock skew (microseconds): a heartbeat this far
 * ahead from a process that is gone was never written by it on our clock. */
#define HB_SKEW_NS UINT64_C(1000000)

/* Untethers the blocking consumer when its entry cannot be a live or
 * restarting consumer's, or its heartbeat is stale.  Returns 1 if it did (the
 * caller recomputes the gate).
 *
 * A dead pid alone does not untether: for the stall timeout after its last
 * heartbeat, a lossless consumer that crashed keeps producers gated, so its
 * restart takes over the entry and cursor without losing an event (the
 * audit daemon's restart depends on it).  What no consumer writes does:
 * a heartbeat far ahead of the clock, a pid no process can have, or a
 * heartbeat ahead of the clock beyond the skew from a process that is gone. */
static int untether_if_stalled(cbus_producer *p, struct cbus_consumer_entry *blocker)
{
    if (!blocker)
        return 0;
    uint64_t hb = atomic_load_explicit(&blocker->heartbeat_ns, memory_order_acquire);
    uint32_t pid = atomic_load_explicit(&blocker->pid, memory_order_relaxed);
    /* Read after hb: a live consumer's heartbeat is then never ahead of us
     * by more than the clocks' skew, however long this thread was preempted. */
    uint64_t now = cbus__clock_now(&p->bus->clock, &(uint64_t){0});
    int stale;
    if (pid == 0 || pid > (uint32_t)INT_MAX)
        stale = 1; /* forged: attach writes getpid() */
    else if (hb > now)
        /* Only here (rare: within the skew, or forged) is the process looked
         * up: kill(0) and a /proc read, on the slow path. */
        stale = hb - now > HB_FUTURE_SLACK_NS ||
                (hb - now > HB_SKEW_NS && !cbus__pid_alive(pid, atomic_load_explicit(&blocker->pid_start_time, memory_order_relaxed)));
    else
        stale = now - hb >= p->bus->stall_timeout_ns;
    if (!stale)
        return 0;
    uint32_t before = atomic_load_explicit(&blocker->flags, memory_order_acquire);
    cbus__consumer_untether(p->bus, blocker);
    if (before & CBUS_CFLAG_TETHERED) {
        atomic_fetch_add_explicit(&blocker->untethered_count, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&p->hdr->untethered, 1, memory_order_relaxed);
    }
    return 1;
}

int cbus__claim_gated(cbus_producer *p, struct cbus__producer_tls *t, uint64_t gate,
                      uint64_t now, unsigned kind, uint64_t n, uint64_t *pos)
{
    struct cbus_shm_header *hdr = p->hdr;
    const uint64_t cap = p->capacity; /* of a lane */
    /* n positions (an event and its body) must all fit below the bound */
    const uint64_t room = (kind_is_bulk(kind) ? cap - cap / 8 : cap) - (n - 1);
    const int accountable = kind_is_accountable(kind);
    _Atomic uint64_t *tail = t->tail;
    struct cbus_consumer_entry *blocker = NULL;
    if (!t->gate_valid || t->gate_epoch != CBUS_GATE_EPOCH(gate)) {
        t->gate_min = gate_min(p->bus, t->lane, &blocker, &t->gate_kinds);
        t->gate_epoch = CBUS_GATE_EPOCH(gate);
        t->gate_valid = 1;
    }
    uint64_t wait_start = 0;
    uint64_t cur = atomic_load_explicit(tail, memory_order_relaxed);
    for (;;) {
        if (t->gate_min == UINT64_MAX || cur < t->gate_min + room) {
            if (atomic_compare_exchange_weak_explicit(tail, &cur, cur + n,
                                                      memory_order_seq_cst,
                                                      memory_order_relaxed)) {
                if (wait_start)
                    record_wait(p, cbus__clock_now(&p->bus->clock, &(uint64_t){0}) - wait_start);
                *pos = cur;
                return 0;
            }
            continue;
        }
        /* The cached bound is reached: look at the cursors again. */
        gate = atomic_load_explicit(&hdr->gate, memory_order_seq_cst);
        t->gate_epoch = CBUS_GATE_EPOCH(gate);
        t->gate_min = gate_min(p->bus, t->lane, &blocker, &t->gate_kinds);
        if (t->gate_min == UINT64_MAX || cur < t->gate_min + room)
            continue;
        if (wait_start)
            now = cbus__clock_now(&p->bus->clock, &(uint64_t){0});
        if (untether_if_stalled(p, blocker))
            continue;
        /* No tethered consumer needs this kind: waiting would only stall the
         * host for an event nobody lossless asked for. */
        if (!(t->gate_kinds & CBUS_KIND_BIT(kind)))
            return cbus__producer_drop(p);
        if (!wait_start) {
            /* Timed out before at this very cursor: the consumer has not
             * moved, so waiting again would only stall the host again --
             * except for an end or error, which always gets its wait. */
            if (!accountable && t->stuck_valid && t->stuck_min == t->gate_min)
                return cbus__producer_drop(p);
            wait_start = now;
        } else if (now - wait_start >= p->bus->lossless_wait_ns) {
            record_wait(p, now - wait_start);
            t->stuck_min = t->gate_min;
            t->stuck_valid = 1;
            return cbus__producer_drop(p);
        }
        cbus__cpu_relax();
        cur = atomic_load_explicit(tail, memory_order_relaxed);
    }
}
