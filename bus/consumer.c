/* Consumers: attach, poll (the seqlock read), commit, wait, detach.
 *
 * A bus is lane_count rings (lanes) side by side; a consumer reads each lane
 * in order and sweeps them in turn.  Accounting, per lane and summed: every
 * position from the attach point up to the read position is exactly one of
 * consumed, lost (overwritten before we read it: we were lapped) or
 * abandoned (claimed by a producer that never committed, or never claimed at
 * all: a gap left by a write to tail).
 * Nothing read from a slot is trusted beyond the commit word: the event's
 * own event_id is overwritten with the id of the position we read it at. */
#include "internal.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* Poll spins this long on a slot whose producer is between claim and
 * commit (normally nanoseconds) before returning to the caller. */
#define COMMIT_SPIN_NS 20000u
/* Wait spins this long before sleeping on the futex. */
#define WAIT_SPIN_NS 50000u
/* While spinning, wait looks at the next slot this often. */
#define WAIT_LOOK_NS 10000u
/* An empty poll looks at the producers' tail at most this often. */
#define TAIL_CHECK_NS 5000u

/* What a consumer knows about one lane. */
struct lane_rd {
    unsigned lane;
    _Atomic uint64_t *tail;
    struct cbus_slot *slots;
    _Atomic uint64_t *cursor_word, *read_pos_word;
    uint64_t read_pos;
    uint64_t cursor;
    /* read_pos just after the last event poll handed out: positions from
     * here to read_pos were skipped (lost or abandoned), nothing to process */
    uint64_t delivered_end;
    /* a claimed slot not yet committed at read_pos: since when */
    uint64_t stuck_pos;
    uint64_t stuck_since;
    uint64_t stuck_tail;          /* tail then: every position below it was claimed */
    int stuck;
    uint64_t tail_checked_ns;     /* when an empty poll last read tail */
    uint64_t tail_seen;           /* what it read */
    uint32_t dead_writer;         /* pid of the last writer found dead: the other slots it
                                     claimed (its event's body) are skipped at once */
};

/* Where poll_bodies puts bodies: the caller's buffer. */
struct body_sink {
    struct cbus_body *bodies;
    unsigned char *buf;
    size_t cap, used;
};

struct cbus_consumer {
    cbus_bus *bus;
    int owns_bus;
    int lock_fd;                  /* holds the OFD lock on our entry; -1 on memory buses */
    unsigned idx;
    uint64_t generation;
    struct cbus_consumer_entry *e;
    unsigned mode;
    uint64_t consumed, lost, abandoned;
    uint64_t body_slots;          /* positions of bodies of events handed out */
    int keep;                     /* CBUS_CONSUMER_KEEP: park the entry at detach */
    uint64_t kinds;               /* opts.kinds: what it told producers it needs */
    unsigned nlanes;
    unsigned next_lane;           /* where the next poll starts its sweep */
    struct lane_rd ln[];          /* nlanes */
};

static uint64_t now_ns(cbus_bus *bus)
{
    uint64_t real;
    return cbus__clock_now(&bus->clock, &real);
}

static int take_lock(cbus_consumer *c)
{
    c->lock_fd = -1;
    if (c->bus->fd < 0)
        return 0;
    char path[64];
    if (cbus__shm_path(path, sizeof path, c->bus->name))
        return -EINVAL;
    /* Our own open file description, so the lock is ours alone and another
     * handle in this process (cbusctl-style checks) sees it as held. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -errno;
    struct flock fl = {.l_type = F_RDLCK, .l_whence = SEEK_SET,
                       .l_start = (off_t)(c->bus->hdr->consumers_off +
                                          c->idx * sizeof(struct cbus_consumer_entry)),
                       .l_len = 1};
    if (fcntl(fd, F_OFD_SETLK, &fl) < 0) {
        int e = -errno;
        close(fd);
        return e == -EAGAIN || e == -EACCES ? -EBUSY : e;
    }
    c->lock_fd = fd;
    return 0;
}

/* A lane's tail as a consumer may use it.  Legitimately read_pos <= tail <
 * CBUS__POS_LIMIT; anything else was written by someone else than a
 * producer's claim: repair it (tail.c), and if that fails treat the lane as
 * empty rather than jump to or count positions that never existed. */
static uint64_t load_tail(cbus_consumer *c, struct lane_rd *l)
{
    uint64_t tail = atomic_load_explicit(l->tail, memory_order_acquire);
    if (CBUS__UNLIKELY(tail >= CBUS__POS_LIMIT || tail < l->read_pos)) {
        cbus__tail_repair(c->bus, l->lane, l->read_pos);
        tail = atomic_load_explicit(l->tail, memory_order_acquire);
        if (tail >= CBUS__POS_LIMIT || tail < l->read_pos)
            tail = l->read_pos;
    }
    return tail;
}

static int entry_is_dead(cbus_bus *bus, unsigned i)
{
    return cbus_bus_consumer_alive(bus, i) == 0;
}

static void free_consumer(cbus_consumer *c, int release_entry)
{
    if (release_entry)
        atomic_store_explicit(&c->e->state, CBUS_CSTATE_FREE, memory_order_release);
    if (c->lock_fd >= 0)
        close(c->lock_fd);
    free(c);
}

/* The options, against this bus.  Returns 0, -EINVAL, or -ESTALE (a saved
 * position from another bus). */
static int check_attach_opts(const cbus_bus *bus, const struct cbus_consumer_opts *opts)
{
    if (!bus || bus->readonly || !opts || cbus_name_valid(opts->name) ||
        strlen(opts->name) >= sizeof(bus->consumers[0].name) || opts->mode > CBUS_LOSSLESS ||
        opts->start > CBUS_START_RESUME || (opts->flags & ~CBUS_CONSUMER_KEEP))
        return -EINVAL;
    /* kinds: lossless only (a lossy consumer gates nobody), and only kinds
     * this library knows (bit 0 is CBUS_EV_NONE, never emitted). */
    const uint64_t known_kinds = (CBUS_KIND_BIT(CBUS_EV__COUNT) - 1) & ~CBUS_KIND_BIT(CBUS_EV_NONE);
    if (opts->kinds && (opts->mode != CBUS_LOSSLESS || (opts->kinds & ~known_kinds)))
        return -EINVAL;
    const unsigned nl = bus->lane_count;
    if (opts->start == CBUS_START_CURSOR) {
        /* Another bus first: a position saved on a bus since re-created
         * with another lane count is stale, not malformed, and the caller
         * starts afresh on -ESTALE. */
        if (opts->expect_bus_id && opts->expect_bus_id != bus->hdr->bus_id)
            return -ESTALE;
        /* A saved position is one word per lane; a bare cursor is lane 0's
         * and means nothing on a bus of several lanes. */
        if (opts->position ? opts->position->lanes != nl : nl != 1)
            return -EINVAL;
    }
    return 0;
}

/* Same name: a live owner keeps it; a dead one's entry is ours to take
 * over (and, with RESUME, its cursor).  The dead entry is evicted only
 * once the new one gates producers, so a lossless consumer's events are
 * never unguarded in between.
 * Sets *resume_from (-1: none) and resume_cursor[] from a parked or dead
 * entry of this name, *dead_idx (-1: none) to the dead one.  Returns 0, or
 * -EBUSY: a live consumer has the name. */
static int find_same_name(cbus_bus *bus, const char *name, int *resume_from, uint64_t *resume_cursor,
                          int *dead_idx)
{
    const unsigned nl = bus->lane_count;
    *resume_from = *dead_idx = -1;
    for (unsigned i = 0; i < CBUS_MAX_CONSUMERS; i++) {
        struct cbus_consumer_entry *e = &bus->consumers[i];
        uint32_t st = atomic_load_explicit(&e->state, memory_order_acquire);
        if ((st != CBUS_CSTATE_ACTIVE && st != CBUS_CSTATE_PARKED) ||
            strncmp(e->name, name, sizeof e->name))
            continue;
        if (st == CBUS_CSTATE_PARKED) {
            /* A clean detach of this name: free it; its cursor is ours to resume. */
            uint64_t cur[CBUS_MAX_LANES];
            for (unsigned L = 0; L < nl; L++)
                cur[L] = atomic_load_explicit(cbus__cursor_word(bus, i, L), memory_order_acquire);
            if (atomic_compare_exchange_strong_explicit(&e->state, &st, CBUS_CSTATE_FREE,
                                                        memory_order_acq_rel,
                                                        memory_order_acquire)) {
                memcpy(resume_cursor, cur, nl * sizeof cur[0]);
                *resume_from = (int)i;
            }
            continue;
        }
        if (!entry_is_dead(bus, i))
            return -EBUSY;
        for (unsigned L = 0; L < nl; L++)
            resume_cursor[L] = atomic_load_explicit(cbus__cursor_word(bus, i, L), memory_order_acquire);
        *resume_from = (int)i;
        *dead_idx = (int)i;
    }
    return 0;
}

/* Claims an entry for a new consumer: free entries first, then dead
 * consumers' entries, then parked ones.  Returns its index or -ENOSPC. */
static int claim_entry(cbus_bus *bus)
{
    int claimed = -1;
    for (int pass = 0; pass < 3 && claimed < 0; pass++) {
        for (unsigned i = 0; i < CBUS_MAX_CONSUMERS; i++) {
            struct cbus_consumer_entry *e = &bus->consumers[i];
            uint32_t st = atomic_load_explicit(&e->state, memory_order_acquire);
            if (pass == 1 && st == CBUS_CSTATE_ACTIVE && entry_is_dead(bus, i))
                cbus_bus_evict(bus, i, 0); /* reclaim dead consumers' entries */
            if (pass == 2 && st == CBUS_CSTATE_PARKED)
                atomic_compare_exchange_strong_explicit(&e->state, &st, CBUS_CSTATE_FREE,
                                                        memory_order_acq_rel,
                                                        memory_order_acquire);
            uint32_t expect = CBUS_CSTATE_FREE;
            if (atomic_compare_exchange_strong_explicit(&e->state, &expect, CBUS_CSTATE_CLAIMED,
                                                        memory_order_acq_rel,
                                                        memory_order_acquire)) {
                claimed = (int)i;
                break;
            }
        }
    }
    return claimed < 0 ? -ENOSPC : claimed;
}

/* Lane L's reader at its start: oldest, a saved cursor, the resumed one
 * (resume_cursor NULL: none to resume) or the tail, never past the tail.
 * Returns 0, or -EBADMSG for a lane whose tail is past the ring even after
 * repair. */
static int lane_start(cbus_consumer *c, unsigned L, const struct cbus_consumer_opts *opts,
                      const uint64_t *resume_cursor)
{
    cbus_bus *bus = c->bus;
    struct lane_rd *l = &c->ln[L];
    l->lane = L;
    l->tail = bus->tails[L];
    l->slots = cbus__lane_slots(bus, L);
    l->cursor_word = cbus__cursor_word(bus, c->idx, L);
    l->read_pos_word = cbus__read_pos_word(bus, c->idx, L);
    uint64_t tail = atomic_load_explicit(l->tail, memory_order_acquire);
    if (tail >= CBUS__POS_LIMIT) {
        cbus__tail_repair(bus, L, 0); /* corrupt: do not start beyond the ring */
        tail = atomic_load_explicit(l->tail, memory_order_acquire);
    }
    if (tail >= CBUS__POS_LIMIT)
        return -EBADMSG;
    uint64_t start;
    switch (opts->start) {
    case CBUS_START_OLDEST:
        start = tail > bus->lane_cap ? tail - bus->lane_cap : 0;
        break;
    case CBUS_START_CURSOR:
        start = opts->position ? opts->position->pos[L] : opts->cursor;
        break;
    case CBUS_START_RESUME:
        start = resume_cursor ? resume_cursor[L] : tail;
        break;
    default:
        start = tail;
        break;
    }
    if (start > tail)
        start = tail; /* a cursor from the future (other bus, corrupt file) */
    l->read_pos = l->cursor = l->delivered_end = start;
    atomic_store_explicit(l->read_pos_word, start, memory_order_relaxed);
    /* RELEASE: visible to any producer that sees the entry ACTIVE below. */
    atomic_store_explicit(l->cursor_word, start, memory_order_release);
    return 0;
}

/* The entry's identity and counters, then ACTIVE: from here producers see
 * it (and a lossless one gates them). */
static void publish_entry(cbus_consumer *c, const struct cbus_consumer_opts *opts)
{
    cbus_bus *bus = c->bus;
    struct cbus_consumer_entry *e = c->e;
    c->generation = atomic_fetch_add_explicit(&e->generation, 1, memory_order_acq_rel) + 1;
    atomic_store_explicit(&e->pid, (uint32_t)getpid(), memory_order_relaxed);
    atomic_store_explicit(&e->pid_start_time, cbus__pid_start_time(getpid()), memory_order_relaxed);
    e->attach_realtime_ns = cbus__real_ns();
    memset(e->name, 0, sizeof e->name);
    memcpy(e->name, opts->name, strlen(opts->name));
    atomic_store_explicit(&e->consumed, 0, memory_order_relaxed);
    atomic_store_explicit(&e->lost, 0, memory_order_relaxed);
    atomic_store_explicit(&e->abandoned, 0, memory_order_relaxed);
    atomic_store_explicit(&e->untethered_count, 0, memory_order_relaxed);
    uint64_t now = now_ns(bus);
    atomic_store_explicit(&e->heartbeat_ns, now, memory_order_relaxed);
    atomic_store_explicit(&e->kinds, opts->kinds, memory_order_relaxed);
    atomic_store_explicit(&e->flags,
                          (opts->mode == CBUS_LOSSLESS ? CBUS_CFLAG_LOSSLESS : 0) |
                              (opts->kinds ? CBUS_CFLAG_KINDS : 0),
                          memory_order_relaxed);
    /* RELEASE: the cursors and identity above are visible to any producer
     * that sees the entry ACTIVE (ACQUIRE in gate_min()). */
    atomic_store_explicit(&e->state, CBUS_CSTATE_ACTIVE, memory_order_release);
    if (opts->mode == CBUS_LOSSLESS)
        cbus__consumer_tether(bus, e);
}

CBUS_API int cbus_consumer_attach_bus(cbus_consumer **out, cbus_bus *bus,
                                      const struct cbus_consumer_opts *opts)
{
    if (!out)
        return -EINVAL;
    *out = NULL;
    int r = check_attach_opts(bus, opts);
    if (r)
        return r;
    const unsigned nl = bus->lane_count;
    int resume_from, dead_idx;
    uint64_t resume_cursor[CBUS_MAX_LANES] = {0};
    if ((r = find_same_name(bus, opts->name, &resume_from, resume_cursor, &dead_idx)))
        return r;

    cbus_consumer *c = calloc(1, sizeof *c + nl * sizeof c->ln[0]);
    if (!c)
        return -ENOMEM;
    c->bus = bus;
    c->mode = opts->mode;
    c->keep = !!(opts->flags & CBUS_CONSUMER_KEEP);
    c->kinds = opts->kinds;
    c->lock_fd = -1;
    c->nlanes = nl;
    int claimed = claim_entry(bus);
    if (claimed < 0) {
        free(c);
        return claimed;
    }
    c->idx = (unsigned)claimed;
    c->e = &bus->consumers[claimed];
    if ((r = take_lock(c))) {
        free_consumer(c, 1);
        return r;
    }
    for (unsigned L = 0; L < nl; L++)
        if ((r = lane_start(c, L, opts, resume_from >= 0 ? resume_cursor : NULL))) {
            free_consumer(c, 1);
            return r;
        }
    publish_entry(c, opts);
    if (dead_idx >= 0 && dead_idx != (int)c->idx)
        cbus_bus_evict(bus, (unsigned)dead_idx, 0); /* -EBUSY/-ENOENT: someone else did */
    *out = c;
    return 0;
}

CBUS_API int cbus_consumer_attach(cbus_consumer **out, const char *bus_name,
                                  const struct cbus_consumer_opts *opts)
{
    if (!out)
        return -EINVAL;
    *out = NULL;
    cbus_bus *bus;
    int r = cbus_bus_open(&bus, bus_name, opts ? opts->open_flags : 0);
    if (r)
        return r;
    r = cbus_consumer_attach_bus(out, bus, opts);
    if (r) {
        cbus_bus_close(bus);
        return r;
    }
    (*out)->owns_bus = 1;
    return 0;
}

static int still_owner(const cbus_consumer *c)
{
    /* A truncated segment (bus/guard.c) is zeros now: nothing to own. */
    return !atomic_load_explicit(c->bus->broken, memory_order_relaxed) &&
           atomic_load_explicit(&c->e->generation, memory_order_acquire) == c->generation &&
           atomic_load_explicit(&c->e->state, memory_order_acquire) == CBUS_CSTATE_ACTIVE;
}

CBUS_API void cbus_consumer_detach(cbus_consumer *c)
{
    if (!c)
        return;
    if (still_owner(c)) {
        cbus__consumer_untether(c->bus, c->e);
        atomic_fetch_add_explicit(&c->e->generation, 1, memory_order_acq_rel);
        atomic_store_explicit(&c->e->state, c->keep ? CBUS_CSTATE_PARKED : CBUS_CSTATE_FREE,
                              memory_order_release);
    }
    cbus_bus *bus = c->bus;
    int owns = c->owns_bus;
    free_consumer(c, 0);
    if (owns)
        cbus_bus_close(bus);
}

static void publish_counters(cbus_consumer *c, uint64_t now)
{
    struct cbus_consumer_entry *e = c->e;
    atomic_store_explicit(&e->consumed, c->consumed, memory_order_relaxed);
    atomic_store_explicit(&e->lost, c->lost, memory_order_relaxed);
    atomic_store_explicit(&e->abandoned, c->abandoned, memory_order_relaxed);
    atomic_store_explicit(&e->body_slots, c->body_slots, memory_order_relaxed);
    for (unsigned L = 0; L < c->nlanes; L++)
        atomic_store_explicit(c->ln[L].read_pos_word, c->ln[L].read_pos, memory_order_relaxed);
    atomic_store_explicit(&e->heartbeat_ns, now, memory_order_release);
}

/* A lossless consumer that was cut loose re-tethers once it has caught up
 * to within a quarter lane of the head in every lane. */
static void maybe_retether(cbus_consumer *c)
{
    if (c->mode != CBUS_LOSSLESS ||
        (atomic_load_explicit(&c->e->flags, memory_order_relaxed) & CBUS_CFLAG_TETHERED))
        return;
    for (unsigned L = 0; L < c->nlanes; L++) {
        uint64_t tail = atomic_load_explicit(c->ln[L].tail, memory_order_acquire);
        if (tail - c->ln[L].cursor >= c->bus->lane_cap / 4)
            return;
    }
    cbus__consumer_tether(c->bus, c->e);
}

enum stuck_verdict {
    STUCK_WAIT = 0,      /* keep waiting */
    STUCK_SKIP_ONE,      /* skip read_pos as abandoned: its writer is dead */
    STUCK_SKIP_RUN,      /* stall timeout: skip read_pos and the unclaimed run after it */
};

/* Decides about a claimed but uncommitted slot at read_pos. */
static enum stuck_verdict slot_abandoned(cbus_consumer *c, struct lane_rd *l, struct cbus_slot *s,
                                         uint64_t seq, uint64_t now)
{
    /* The rest of what a writer we found dead had claimed (the body slots
     * of the event it was writing) goes at once, not a timeout each. */
    if (l->dead_writer && seq == CBUS_SEQ_BUSY(l->read_pos) &&
        atomic_load_explicit(&s->writer_pid, memory_order_relaxed) == l->dead_writer)
        return STUCK_SKIP_ONE;
    if (!l->stuck || l->stuck_pos != l->read_pos) {
        l->stuck = 1;
        l->stuck_pos = l->read_pos;
        l->stuck_since = now;
        l->stuck_tail = l->tail_seen;
        return STUCK_WAIT;
    }
    uint64_t waited = now - l->stuck_since;
    if (waited < c->bus->abandon_timeout_ns)
        return STUCK_WAIT;
    /* A writer we can name and that is dead will never commit.  One we
     * cannot name (claimed, not marked yet) gets the stall timeout, as a
     * live slow writer does: nothing in the segment tells a producer killed
     * between its fetch_add and its mark from a live one preempted there,
     * and taking the live one for dead loses its event (it commits after we
     * passed).  A registered producer dying meanwhile proves nothing: it may
     * have held no claim at all.  After the stall timeout the position is
     * skipped all the same, so one stuck thread cannot wedge every consumer. */
    if (seq == CBUS_SEQ_BUSY(l->read_pos)) {
        uint32_t pid = atomic_load_explicit(&s->writer_pid, memory_order_relaxed);
        if (!cbus__pid_alive(pid, 0)) {
            l->dead_writer = pid;
            return STUCK_SKIP_ONE;
        }
    }
    return waited >= c->bus->stall_timeout_ns ? STUCK_SKIP_RUN : STUCK_WAIT;
}

/* After a stall timeout at one position, the positions after it that were
 * already claimed when we got stuck (below stuck_tail) and are still not
 * even marked go with it: they have waited as long, and nobody is writing
 * them (tail was moved forward by a write, or their producers died).
 * Waiting a stall timeout for each would take hours for a ring-sized gap.
 * A marked slot stops the run: its writer can be named and gets its own
 * wait. */
static void skip_unclaimed_run(cbus_consumer *c, struct lane_rd *l)
{
    uint64_t end = l->stuck_tail, cap = c->bus->lane_cap;
    if (end <= l->read_pos)
        return;
    if (end - l->read_pos > cap)
        end = l->read_pos + cap;
    while (l->read_pos < end) {
        struct cbus_slot *s = &l->slots[l->read_pos & c->bus->mask];
        if (atomic_load_explicit(&s->seq, memory_order_acquire) >= CBUS_SEQ_BUSY(l->read_pos))
            break;
        c->abandoned++;
        l->read_pos++;
    }
}

/* tail is more than a lane ahead of read_pos, whose slot holds no commit of
 * read_pos: skips, as lost, the positions from read_pos (below tail -
 * capacity) whose slots do not hold their own event, and stops at the first
 * that does (committed, or marked by its writer: it is read or waited for as
 * usual).  Not simply everything below tail - capacity: tail may have been
 * written forward (a gap nobody claimed, consumer.c's header), and then the
 * ring is not lapped at all.  A lossless consumer stuck at a gap while
 * producers filled the ring up to its cursor saw a jump of 3 push tail past
 * read_pos + capacity and threw away the real, committed events right after
 * the gap as lost (the soak's lossless verifier missed them).  At most a ring
 * per call; returns how many it skipped. */
static uint64_t skip_overrun(cbus_consumer *c, struct lane_rd *l, uint64_t tail)
{
    uint64_t cap = c->bus->lane_cap;
    uint64_t end = tail - cap, start = l->read_pos;
    if (end - start > cap)
        end = start + cap;
    while (l->read_pos < end) {
        struct cbus_slot *s = &l->slots[l->read_pos & c->bus->mask];
        uint64_t seq = atomic_load_explicit(&s->seq, memory_order_acquire);
        if (seq >= CBUS_SEQ_BUSY(l->read_pos) && seq <= CBUS_SEQ_COMMITTED(l->read_pos))
            break;
        c->lost++;
        l->read_pos++;
    }
    return l->read_pos - start;
}

/* Skips positions the producers have lapped: everything older than one lane
 * behind the head is gone, counted as lost.  Used on a slot that shows a
 * later lap (a writer got that far); see skip_overrun() otherwise. */
static void skip_lapped(cbus_consumer *c, struct lane_rd *l, uint64_t tail)
{
    uint64_t cap = c->bus->lane_cap;
    if (tail > l->read_pos + cap) {
        c->lost += tail - cap - l->read_pos;
        l->read_pos = tail - cap;
    } else {
        c->lost++; /* the slot is being rewritten for the next lap right now */
        l->read_pos++;
    }
}

static void commit_lane(struct lane_rd *l, uint64_t pos)
{
    l->cursor = pos;
    /* RELEASE: we are done with every slot below pos; producers ACQUIRE it in
     * gate_min() before reusing those slots. */
    atomic_store_explicit(l->cursor_word, pos, memory_order_release);
}

/* The event at pos (committed, copied into *ev, re-checked) says it has a
 * body: checks that the k slots after it really are its body, committed at
 * their own positions (a head is shared memory: its body_len is a claim), and
 * copies the bytes into the sink if there is one.  Returns k, 0 when the
 * body is not there (lapped while we looked, or a false claim: the event is
 * lost, and its positions are looked at one by one), or -1 when the sink has
 * no room left (the caller stops this poll there). */
static int64_t take_body(cbus_consumer *c, struct lane_rd *l, uint64_t pos,
                         const struct cbus_event *ev, struct body_sink *sink)
{
    cbus_bus *bus = c->bus;
    uint32_t len = ev->body_len;
    if (len == 0 || len > bus->body_limit)
        return 0;
    uint64_t k = CBUS_BODY_SLOTS(len);
    unsigned char *dst = NULL;
    if (sink) {
        if (sink->cap - sink->used < len)
            return -1;
        dst = sink->buf + sink->used;
    }
    for (uint64_t i = 1; i <= k; i++) {
        struct cbus_slot *s = &l->slots[(pos + i) & bus->mask];
        if (atomic_load_explicit(&s->seq, memory_order_acquire) != CBUS_SEQ_COMMITTED(pos + i) ||
            atomic_load_explicit(&s->part, memory_order_relaxed) != CBUS_PART_BODY)
            return 0;
        if (dst) {
            uint32_t off = (uint32_t)(i - 1) * CBUS_BODY_PER_SLOT;
            uint32_t n = len - off < CBUS_BODY_PER_SLOT ? len - off : CBUS_BODY_PER_SLOT;
#ifdef CBUS__TSAN
            struct cbus_event tmp;
            cbus__slot_read(&tmp, &s->ev);
            memcpy(dst + off, &tmp, n);
#else
            memcpy(dst + off, &s->ev, n);
#endif
        }
    }
    /* ACQUIRE fence, then every word again: a body slot rewritten while we
     * copied (a lap) is not delivered torn. */
    atomic_thread_fence(memory_order_acquire);
    for (uint64_t i = 1; i <= k; i++) {
        struct cbus_slot *s = &l->slots[(pos + i) & bus->mask];
        if (atomic_load_explicit(&s->seq, memory_order_relaxed) != CBUS_SEQ_COMMITTED(pos + i))
            return 0;
    }
    return (int64_t)k;
}

/* Reads one lane into out[0..max); returns the count. */
static unsigned poll_lane(cbus_consumer *c, struct lane_rd *l, struct cbus_event *out,
                          unsigned max, uint64_t *nowp, struct body_sink *sink, unsigned base)
{
    cbus_bus *bus = c->bus;
    uint64_t now = *nowp;
    unsigned n = 0;
    /* The slot's commit word alone says whether the next event is there:
     * reading tail (the producers' claim line) on every poll would pull that
     * line away from them on each emit.  Tail is read only to tell an empty
     * lane from a claim in progress, and then at most every few us. */
    while (n < max) {
        uint64_t pos = l->read_pos;
        struct cbus_slot *s = &l->slots[pos & bus->mask];
        /* ACQUIRE: pairs with the RELEASE commit store in emit(). */
        uint64_t seq = atomic_load_explicit(&s->seq, memory_order_acquire);
        if (seq == CBUS_SEQ_COMMITTED(pos)) {
            if (atomic_load_explicit(&s->part, memory_order_relaxed) != CBUS_PART_EVENT) {
                /* Body bytes of an event we did not get (lapped onto the
                 * middle of a body, or its event was abandoned). */
                c->lost++;
                l->read_pos++;
                continue;
            }
            cbus__slot_read(&out[n], &s->ev);
            /* ACQUIRE fence: the re-check below sees any writer that changed
             * the payload during the copy (pairs with emit's release fence). */
            atomic_thread_fence(memory_order_acquire);
            if (atomic_load_explicit(&s->seq, memory_order_relaxed) != seq) {
                c->lost++; /* overwritten while we copied: lapped */
                l->read_pos++;
                continue;
            }
            int64_t k = 0;
            if (out[n].flags & CBUS_FLAG_BODY) {
                k = take_body(c, l, pos, &out[n], sink);
                if (k < 0)
                    break; /* no room for this body: the next poll starts here */
                if (k == 0) {
                    c->lost++; /* its body is not (or no longer) there */
                    l->read_pos++;
                    continue;
                }
                if (sink) {
                    sink->bodies[base + n] = (struct cbus_body){sink->buf + sink->used,
                                                                out[n].body_len};
                    sink->used += out[n].body_len;
                }
            } else {
                out[n].body_len = 0;
                if (sink)
                    sink->bodies[base + n] = (struct cbus_body){NULL, 0};
            }
            out[n].event_id = cbus__event_id(bus, l->lane, pos);
            n++;
            c->consumed++;
            c->body_slots += (uint64_t)k;
            l->read_pos += 1 + (uint64_t)k;
            l->delivered_end = l->read_pos;
            l->stuck = 0;
            continue;
        }
        if (seq > CBUS_SEQ_COMMITTED(pos)) {
            /* A later lap is in (or going into) this slot: we were lapped. */
            skip_lapped(c, l, load_tail(c, l));
            continue;
        }
        /* Not committed at pos.  With events in hand, return them. */
        if (n || (now - l->tail_checked_ns < TAIL_CHECK_NS && !l->stuck))
            break;
        l->tail_checked_ns = now;
        uint64_t tail = load_tail(c, l);
        l->tail_seen = tail;
        if (pos >= tail)
            break; /* empty */
        if (tail - pos > bus->lane_cap && skip_overrun(c, l, tail))
            continue;
        /* Claimed (pos < tail) but not committed yet: spin briefly, the
         * producer is normally a few stores away. */
        uint64_t spin_end = now + COMMIT_SPIN_NS;
        while (atomic_load_explicit(&s->seq, memory_order_acquire) < CBUS_SEQ_COMMITTED(pos)) {
            cbus__cpu_relax();
            now = now_ns(bus);
            if (now > spin_end)
                break;
        }
        seq = atomic_load_explicit(&s->seq, memory_order_acquire);
        if (seq >= CBUS_SEQ_COMMITTED(pos))
            continue;
        enum stuck_verdict v = slot_abandoned(c, l, s, seq, now);
        if (v == STUCK_WAIT)
            break;
        c->abandoned++;
        l->read_pos++;
        l->stuck = 0;
        if (v == STUCK_SKIP_RUN)
            skip_unclaimed_run(c, l);
    }
    /* Every event handed out is committed and positions were skipped after
     * them (lost, abandoned, a gap written into tail): acknowledge those too.
     * They carry nothing to process, and a lossless consumer that waited for
     * its next event to commit them would wait for ever: the producers it
     * gates cannot send it (a tail jump past the ring). */
    if (l->cursor >= l->delivered_end && l->read_pos > l->cursor)
        commit_lane(l, l->read_pos);
    *nowp = now;
    return n;
}

static int poll_any(cbus_consumer *c, struct cbus_event *out, unsigned max,
                    struct body_sink *sink)
{
    if (!still_owner(c))
        return -ESTALE;
    uint64_t now = now_ns(c->bus);
    unsigned n = 0;
    /* Each lane in turn, starting one further on each poll, so a busy lane
     * cannot keep the others waiting longer than one batch. */
    unsigned first = c->next_lane;
    for (unsigned k = 0; k < c->nlanes; k++) {
        unsigned L = (first + k) & (c->nlanes - 1);
        n += poll_lane(c, &c->ln[L], out + n, max - n, &now, sink, n);
    }
    c->next_lane = (first + 1) & (c->nlanes - 1);
    publish_counters(c, now);
    maybe_retether(c);
    return (int)n;
}

CBUS_API int cbus_consumer_poll(cbus_consumer *c, struct cbus_event *out, unsigned max)
{
    if (!c || (!out && max))
        return -EINVAL;
    return poll_any(c, out, max, NULL);
}

CBUS_API int cbus_consumer_poll_bodies(cbus_consumer *c, struct cbus_event *out,
                                       struct cbus_body *bodies, unsigned max, void *buf,
                                       size_t buflen)
{
    if (!c || (max && (!out || !bodies || !buf)))
        return -EINVAL;
    if (buflen < c->bus->body_limit)
        return -ENOBUFS;
    struct body_sink sink = {bodies, buf, buflen, 0};
    return poll_any(c, out, max, &sink);
}

CBUS_API int cbus_consumer_commit_to(cbus_consumer *c, uint64_t pos)
{
    if (!c)
        return -EINVAL;
    if (!still_owner(c))
        return -ESTALE;
    struct lane_rd *l = &c->ln[0];
    if (c->nlanes != 1 || pos > l->read_pos || pos < l->cursor)
        return -EINVAL;
    commit_lane(l, pos);
    return 0;
}

CBUS_API int cbus_consumer_commit(cbus_consumer *c)
{
    if (!c)
        return -EINVAL;
    if (!still_owner(c))
        return -ESTALE;
    for (unsigned L = 0; L < c->nlanes; L++)
        if (c->ln[L].read_pos != c->ln[L].cursor)
            commit_lane(&c->ln[L], c->ln[L].read_pos);
    return 0;
}

CBUS_API int cbus_consumer_position(const cbus_consumer *c, struct cbus_position *out)
{
    if (!c || !out)
        return -EINVAL;
    memset(out, 0, sizeof *out);
    out->lanes = c->nlanes;
    for (unsigned L = 0; L < c->nlanes; L++)
        out->pos[L] = c->ln[L].read_pos;
    return 0;
}

CBUS_API int cbus_consumer_commit_position(cbus_consumer *c, const struct cbus_position *p)
{
    if (!c || !p)
        return -EINVAL;
    if (!still_owner(c))
        return -ESTALE;
    if (p->lanes != c->nlanes)
        return -EINVAL;
    for (unsigned L = 0; L < c->nlanes; L++)
        if (p->pos[L] > c->ln[L].read_pos)
            return -EINVAL; /* checked for every lane before any moves */
    /* A word behind the cursor leaves its lane alone: poll moves a lane's
     * cursor over positions it skipped after the last event it handed out
     * (see poll_lane), so a consumer that saves one word per event it made
     * durable is behind there until that lane's next event.  Refusing the
     * whole vector for it would hold every other lane's producers. */
    for (unsigned L = 0; L < c->nlanes; L++)
        if (p->pos[L] > c->ln[L].cursor)
            commit_lane(&c->ln[L], p->pos[L]);
    return 0;
}

CBUS_API int cbus_consumer_heartbeat(cbus_consumer *c)
{
    if (!c)
        return -EINVAL;
    if (!still_owner(c))
        return -ESTALE;
    atomic_store_explicit(&c->e->heartbeat_ns, now_ns(c->bus), memory_order_release);
    return 0;
}

/* The next event of a lane is committed (or its slot was lapped). */
static int lane_ready(const cbus_consumer *c, const struct lane_rd *l)
{
    const struct cbus_slot *s = &l->slots[l->read_pos & c->bus->mask];
    return atomic_load_explicit(&s->seq, memory_order_acquire) >= CBUS_SEQ_COMMITTED(l->read_pos);
}

/* Poll has work in some lane. */
static int slot_ready(const cbus_consumer *c)
{
    for (unsigned L = 0; L < c->nlanes; L++)
        if (lane_ready(c, &c->ln[L]))
            return 1;
    return 0;
}

CBUS_API int cbus_consumer_wait(cbus_consumer *c, uint64_t timeout_ns)
{
    if (!c)
        return -EINVAL;
    if (!still_owner(c))
        return -ESTALE;
    struct cbus_shm_header *hdr = c->bus->hdr;
    uint64_t start = now_ns(c->bus);
    uint64_t deadline = timeout_ns > UINT64_MAX - start ? UINT64_MAX : start + timeout_ns;
    /* Sleep at most a third of the stall timeout at a time so the heartbeat
     * keeps a lossless consumer tethered while it idles. */
    uint64_t slice = c->bus->stall_timeout_ns / 3;
    for (;;) {
        uint64_t now = now_ns(c->bus);
        atomic_store_explicit(&c->e->heartbeat_ns, now, memory_order_release);
        if (slot_ready(c))
            return 1;
        if (now >= deadline)
            return 0;
        if (now - start < WAIT_SPIN_NS) {
            /* Look again only every couple of us: the slot we watch is the
             * line the producer writes next, and pulling it to this core on
             * every emit would cost the producer a cross-core transfer per
             * event.  Between looks it fills lines we then read in a batch. */
            uint64_t until = now + WAIT_LOOK_NS;
            while (now_ns(c->bus) < until)
                cbus__cpu_relax();
            continue;
        }
        /* Announce, then look again, then sleep.  The seq_cst stores and tail
         * loads pair with the producer's seq_cst claim and its load of waiters
         * / swap of need_wake: either we see its claim here, or it sees us
         * and wakes the futex. */
        atomic_fetch_add_explicit(&hdr->waiters, 1, memory_order_seq_cst);
        atomic_store_explicit(&hdr->need_wake, 1, memory_order_seq_cst);
        uint32_t w = atomic_load_explicit(&hdr->wake_seq, memory_order_acquire);
        int stuck_any = 0, ready = slot_ready(c);
        for (unsigned L = 0; L < c->nlanes; L++) {
            const struct lane_rd *l = &c->ln[L];
            uint64_t tail = atomic_load_explicit(l->tail, memory_order_seq_cst);
            int stuck_here = l->stuck && l->stuck_pos == l->read_pos;
            stuck_any |= stuck_here;
            if (tail > l->read_pos && !stuck_here)
                ready = 1;
        }
        int r = 0;
        if (!ready) {
            uint64_t sleep = deadline - now < slice ? deadline - now : slice;
            if (stuck_any && sleep > 1000000u)
                sleep = 1000000u; /* re-check a stuck slot every ms */
            atomic_fetch_or_explicit(&c->e->flags, CBUS_CFLAG_SLEEPING, memory_order_relaxed);
            r = cbus__futex_wait(&hdr->wake_seq, w, sleep);
            atomic_fetch_and_explicit(&c->e->flags, ~CBUS_CFLAG_SLEEPING, memory_order_relaxed);
        }
        atomic_fetch_sub_explicit(&hdr->waiters, 1, memory_order_seq_cst);
        if (ready)
            return 1; /* data, or a claim in progress that poll will wait out */
        if (r == -EINTR)
            return -EINTR;
        if (!still_owner(c))
            return -ESTALE;
        if (stuck_any)
            return 0; /* let the caller poll: the stuck slot may now be abandoned */
    }
}

CBUS_API int cbus_consumer_stats(cbus_consumer *c, struct cbus_consumer_stats *out)
{
    if (!c || !out)
        return -EINVAL;
    memset(out, 0, sizeof *out);
    out->consumed = c->consumed;
    out->body_slots = c->body_slots;
    out->lost = c->lost;
    out->abandoned = c->abandoned;
    /* Sums over the lanes: positions passed, acknowledged and claimed, so
     * consumed + lost + abandoned still adds up to read_pos minus the start. */
    for (unsigned L = 0; L < c->nlanes; L++) {
        const struct lane_rd *l = &c->ln[L];
        uint64_t tail = atomic_load_explicit(l->tail, memory_order_acquire);
        out->read_pos += l->read_pos;
        out->cursor += l->cursor;
        out->tail += tail;
        out->lag += tail > l->read_pos ? tail - l->read_pos : 0;
    }
    out->lanes = c->nlanes;
    out->kinds = c->kinds;
    out->mode = c->mode;
    out->tethered = !!(atomic_load_explicit(&c->e->flags, memory_order_acquire) & CBUS_CFLAG_TETHERED);
    out->untethered_count = atomic_load_explicit(&c->e->untethered_count, memory_order_relaxed);
    return still_owner(c) ? 0 : -ESTALE;
}

CBUS_API uint64_t cbus_consumer_read_pos(const cbus_consumer *c)
{
    if (!c)
        return 0;
    uint64_t sum = 0;
    for (unsigned L = 0; L < c->nlanes; L++)
        sum += c->ln[L].read_pos;
    return sum;
}

CBUS_API uint64_t cbus_consumer_bus_id(const cbus_consumer *c)
{
    return c ? c->bus->hdr->bus_id : 0;
}

CBUS_API cbus_bus *cbus_consumer_bus(cbus_consumer *c)
{
    return c ? c->bus : NULL;
}

CBUS_API int cbus_consumer_index(const cbus_consumer *c)
{
    return c ? (int)c->idx : -EINVAL;
}
