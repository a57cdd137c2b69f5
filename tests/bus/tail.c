/* A corrupt tail (issue 12 item 7): written forward by a sane amount, moved
 * back, or moved to near 2^64.  Delivery resumes quickly and every loss is
 * counted: consumed + lost + abandoned == positions passed, producers'
 * emitted + dropped == calls. */
#include <cbus/bus.h>
#include <cbus/consumer.h>
#include <cbus/producer.h>

#include <criterion/criterion.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support.h"

static char name[64];
static cbus_producer *p;
static cbus_ctx ctx;
static pid_t kid = -1; /* a forked producer; teardown kills and reaps it */

static void teardown(void)
{
    if (kid > 0) {
        kill(kid, SIGKILL);
        waitpid(kid, NULL, 0);
        kid = -1;
    }
    cbus_producer_close(p);
    p = NULL;
    cbus_bus_destroy(name);
}

TestSuite(bus_tail, .fini = teardown, .timeout = 120);

static void make_bus(uint64_t stall_ns)
{
    test_bus_name(name, sizeof name);
    struct cbus_create_opts o = {.capacity = 1024, .abandon_timeout_ns = 1000000u,
                                 .stall_timeout_ns = stall_ns};
    cr_assert_eq(cbus_bus_create(name, &o), 0);
    cr_assert_eq(cbus_producer_open(&p, name, NULL), 0);
    cbus_ctx_init(&ctx);
}

/* Where a repair puts tail: this far past the highest position the ring
 * shows (bus/tail.c: claims in flight show in no slot).  An eighth of the
 * 1024-slot ring of make_bus(). */
#define GAP (1024 / 8)

static _Atomic uint64_t *tail_word(void)
{
    return (_Atomic uint64_t *)&cbus_bus_header(cbus_producer_bus(p))->tail;
}

static cbus_consumer *attach(const char *cname, unsigned mode)
{
    cbus_consumer *c;
    struct cbus_consumer_opts o = {.name = cname, .mode = mode};
    int r = cbus_consumer_attach(&c, name, &o);
    cr_assert_eq(r, 0, "attach %s: %s", cname, cbus_strerror(r));
    return c;
}

/* Emits n events tagged with consecutive numbers from *next; returns how
 * many were accepted (the rest were dropped: -EAGAIN). */
static unsigned emit_n(unsigned n, uint32_t *next)
{
    unsigned ok = 0;
    for (unsigned i = 0; i < n; i++) {
        struct cbus_emit_args a = {.kind = CBUS_EV_CUSTOM, .name = "t", .payload = next,
                                   .payload_len = sizeof *next};
        int r = cbus_emit(p, &ctx, &a);
        cr_assert(r == 0 || r == -EAGAIN, "emit: %d", r);
        if (r == 0) {
            ok++;
            (*next)++;
        }
    }
    return ok;
}

/* Reads until c has passed position `until` or deadline_ms passed; checks
 * tags arrive in order from *expect; returns events read. */
static uint64_t drain(cbus_consumer *c, uint64_t until, uint32_t *expect, uint64_t deadline_ms)
{
    struct cbus_event ev[64];
    uint64_t got = 0, t0 = test_now_ms();
    while (cbus_consumer_read_pos(c) < until && test_now_ms() - t0 < deadline_ms) {
        int n = cbus_consumer_poll(c, ev, 64);
        cr_assert_geq(n, 0);
        for (int i = 0; i < n; i++) {
            uint32_t tag;
            memcpy(&tag, &ev[i].u, sizeof tag);
            cr_assert_eq(tag, *expect, "in order, nothing twice");
            (*expect)++;
        }
        got += (uint64_t)n;
        cbus_consumer_commit(c);
        if (!n)
            cbus_consumer_wait(c, 1000000u);
    }
    return got;
}

static void assert_exact(cbus_consumer *c, uint64_t start)
{
    struct cbus_consumer_stats st;
    cbus_consumer_stats(c, &st);
    cr_assert_eq(st.consumed + st.lost + st.abandoned, st.read_pos - start,
                 "consumed %llu + lost %llu + abandoned %llu != passed %llu",
                 (unsigned long long)st.consumed, (unsigned long long)st.lost,
                 (unsigned long long)st.abandoned, (unsigned long long)(st.read_pos - start));
    cr_assert_leq(st.read_pos, st.tail);
}

Test(bus_tail, forward_write_gap_is_skipped_after_one_stall_timeout)
{
    /* Stall timeout 200 ms, deadline 30 s: one timeout per position would
     * take 1024 x 200 ms for the ring-sized rest of the gap. */
    make_bus(200000000u);
    cbus_consumer *ll = attach("lossless", CBUS_LOSSLESS);
    cbus_consumer *ly = attach("lossy", CBUS_LOSSY);
    uint32_t next = 0, e1 = 0, e2 = 0;
    cr_assert_eq(emit_n(10, &next), 10);
    cr_assert_eq(drain(ll, 10, &e1, 10000), 10);
    cr_assert_eq(drain(ly, 10, &e2, 10000), 10);
    atomic_fetch_add(tail_word(), 20000); /* the hostile write */
    uint64_t tail = 20010;
    /* the lossless consumer holds producers at its cursor: they drop */
    cr_assert_eq(emit_n(5, &next), 0);
    cr_assert_eq(drain(ll, tail, &e1, 30000), 0);
    cr_assert_geq(cbus_consumer_read_pos(ll), tail, "the gap was passed in one stall timeout");
    cr_assert_eq(drain(ly, tail, &e2, 30000), 0);
    cr_assert_geq(cbus_consumer_read_pos(ly), tail);
    for (int k = 0; k < 2; k++) {
        cbus_consumer *c = k ? ly : ll;
        struct cbus_consumer_stats st;
        cbus_consumer_stats(c, &st);
        cr_assert_eq(st.consumed, 10);
        cr_assert_eq(st.lost + st.abandoned, 20000, "the gap is counted, position by position");
        cr_assert_geq(st.abandoned, 1000, "the unclaimed run went as abandoned in one go");
        assert_exact(c, 0);
    }
    /* and events flow again */
    cr_assert_eq(emit_n(5, &next), 5);
    cr_assert_eq(drain(ll, tail + 5, &e1, 10000), 5);
    cr_assert_eq(drain(ly, tail + 5, &e2, 10000), 5);
    assert_exact(ll, 0);
    cbus_consumer_detach(ll);
    cbus_consumer_detach(ly);
}

Test(bus_tail, moved_back_producer_drops_once_and_restores_it)
{
    make_bus(200000000u); /* the repair's gap is skipped after one stall timeout */
    cbus_consumer *ll = attach("lossless", CBUS_LOSSLESS);
    cbus_consumer *ly = attach("lossy", CBUS_LOSSY);
    uint32_t next = 0, e1 = 0, e2 = 0;
    cr_assert_eq(emit_n(100, &next), 100);
    cr_assert_eq(drain(ll, 100, &e1, 10000), 100);
    cr_assert_eq(drain(ly, 100, &e2, 10000), 100);
    atomic_store(tail_word(), 40);
    /* the first claim finds position 40 used: dropped, tail put back */
    cr_assert_eq(emit_n(1, &next), 0);
    cr_assert_eq(cbus_bus_tail(cbus_producer_bus(p)), 100 + GAP);
    cr_assert_eq(emit_n(10, &next), 10);
    cr_assert_eq(drain(ll, 110 + GAP, &e1, 10000), 10, "events after the write are delivered");
    cr_assert_eq(drain(ly, 110 + GAP, &e2, 10000), 10);
    struct cbus_producer_stats ps;
    cbus_producer_stats(p, &ps);
    cr_assert_eq(ps.dropped, 1);
    cr_assert_eq(ps.emitted, 110);
    cr_assert_eq(cbus_bus_header(cbus_producer_bus(p))->dropped, 1);
    for (int k = 0; k < 2; k++) {
        struct cbus_consumer_stats st;
        cbus_consumer_stats(k ? ly : ll, &st);
        cr_assert_eq(st.consumed, 110);
        cr_assert_eq(st.lost, 0);
        cr_assert_eq(st.abandoned, GAP, "the repair's gap, nothing more");
        cr_assert_eq(st.lag, 0);
    }
    cbus_consumer_detach(ll);
    cbus_consumer_detach(ly);
}

Test(bus_tail, moved_back_is_seen_and_restored_by_an_idle_consumer)
{
    make_bus(200000000u); /* the repair's gap is skipped after one stall timeout */
    cbus_consumer *ly = attach("lossy", CBUS_LOSSY);
    uint32_t next = 0, e = 0;
    cr_assert_eq(emit_n(100, &next), 100);
    cr_assert_eq(drain(ly, 100, &e, 10000), 100);
    atomic_store(tail_word(), 3);
    /* the consumer's next look at tail finds it behind its read position */
    uint64_t t0 = test_now_ms();
    struct cbus_event ev[4];
    while (cbus_bus_tail(cbus_producer_bus(p)) != 100 + GAP && test_now_ms() - t0 < 10000)
        cr_assert_eq(cbus_consumer_poll(ly, ev, 4), 0);
    cr_assert_eq(cbus_bus_tail(cbus_producer_bus(p)), 100 + GAP, "tail put back by the consumer");
    cr_assert_eq(emit_n(10, &next), 10, "nothing dropped: the producers never saw it");
    cr_assert_eq(drain(ly, 110 + GAP, &e, 10000), 10);
    assert_exact(ly, 0);
    cbus_consumer_detach(ly);
}

Test(bus_tail, near_2_64_producer_drops_once_and_restores_it)
{
    make_bus(200000000u); /* the repair's gap is skipped after one stall timeout */
    cbus_consumer *ly = attach("lossy", CBUS_LOSSY);
    uint32_t next = 0, e = 0;
    cr_assert_eq(emit_n(100, &next), 100);
    cr_assert_eq(drain(ly, 100, &e, 10000), 100);
    atomic_store(tail_word(), UINT64_MAX - 2);
    cr_assert_eq(emit_n(1, &next), 0, "a position past 2^62 is never written");
    cr_assert_eq(cbus_bus_tail(cbus_producer_bus(p)), 100 + GAP);
    cr_assert_eq(emit_n(10, &next), 10);
    cr_assert_eq(drain(ly, 110 + GAP, &e, 10000), 10);
    struct cbus_consumer_stats st;
    cbus_consumer_stats(ly, &st);
    cr_assert_eq(st.consumed, 110);
    cr_assert_eq(st.lost, 0);
    cr_assert_eq(st.abandoned, GAP, "no phantom positions counted: the repair's gap only");
    struct cbus_producer_stats ps;
    cbus_producer_stats(p, &ps);
    cr_assert_eq(ps.dropped, 1);
    cbus_consumer_detach(ly);
}

Test(bus_tail, near_2_64_seen_by_a_lossless_consumer_is_repaired_not_counted)
{
    make_bus(200000000u); /* the repair's gap is skipped after one stall timeout */
    cbus_consumer *ll = attach("lossless", CBUS_LOSSLESS);
    uint32_t next = 0, e = 0;
    cr_assert_eq(emit_n(100, &next), 100);
    cr_assert_eq(drain(ll, 100, &e, 10000), 100);
    atomic_store(tail_word(), UINT64_MAX - 2);
    /* producers are held by the gate (the bound is far below), so the
     * consumer is the one to notice */
    uint64_t t0 = test_now_ms();
    struct cbus_event ev[4];
    while (cbus_bus_tail(cbus_producer_bus(p)) != 100 + GAP && test_now_ms() - t0 < 10000)
        cr_assert_eq(cbus_consumer_poll(ll, ev, 4), 0);
    cr_assert_eq(cbus_bus_tail(cbus_producer_bus(p)), 100 + GAP);
    struct cbus_consumer_stats st;
    cbus_consumer_stats(ll, &st);
    cr_assert_eq(st.lost + st.abandoned, 0, "no phantom positions counted");
    cr_assert_eq(st.read_pos, 100);
    cr_assert_eq(emit_n(10, &next), 10);
    cr_assert_eq(drain(ll, 110 + GAP, &e, 10000), 10);
    cbus_consumer_stats(ll, &st);
    cr_assert_eq(st.lost, 0);
    cr_assert_eq(st.abandoned, GAP);
    assert_exact(ll, 0);
    /* a consumer attaching to a bus in that state starts at the repaired head */
    atomic_store(tail_word(), UINT64_MAX - 2);
    cbus_consumer *late = attach("late", CBUS_LOSSY);
    cr_assert_eq(cbus_consumer_read_pos(late), 110 + 2 * GAP);
    cbus_consumer_detach(late);
    cbus_consumer_detach(ll);
}

Test(bus_tail, stray_slot_word_is_written_over_not_a_tail_jump)
{
    make_bus(0);
    cbus_consumer *ly = attach("lossy", CBUS_LOSSY);
    uint32_t next = 0, e = 0;
    cr_assert_eq(emit_n(100, &next), 100);
    cr_assert_eq(drain(ly, 100, &e, 10000), 100);
    /* One word in slot 200 claims position 200 + 5 laps: nothing else in
     * the ring agrees, so it must neither move tail nor cost an event. */
    const struct cbus_shm_header *h = cbus_bus_header(cbus_producer_bus(p));
    struct cbus_slot *slots = (struct cbus_slot *)((char *)h + h->slots_off);
    atomic_store(&slots[200].seq, CBUS_SEQ_COMMITTED(200 + 5 * 1024));
    cr_assert_eq(emit_n(150, &next), 150, "no event dropped for a stray word");
    cr_assert_eq(cbus_bus_tail(cbus_producer_bus(p)), 250);
    cr_assert_eq(drain(ly, 250, &e, 10000), 150);
    struct cbus_consumer_stats st;
    cbus_consumer_stats(ly, &st);
    cr_assert_eq(st.lost + st.abandoned, 0);
    assert_exact(ly, 0);
    cbus_consumer_detach(ly);
}

/* A lossless consumer waits at a gap (tail written forward by 1) while the
 * producers fill the ring up to its cursor; then tail is written forward by
 * 3 more, so it is more than a ring ahead of the consumer.  Nothing was
 * lapped (the consumer holds the producers): only the gap position may be
 * counted, and every event after it is delivered.  The old lap inference
 * skipped everything below tail - capacity, throwing away the two committed
 * events right after the gap as lost (the soak's lossless verifier's
 * "events missing" under tail-jump faults). */
Test(bus_tail, forward_write_past_a_full_ring_loses_no_committed_event)
{
    make_bus(600000000000ull); /* ten minutes: no stall skip can help */
    cbus_consumer *ll = attach("lossless", CBUS_LOSSLESS);
    uint32_t next = 0, expect = 0;
    cr_assert_eq(emit_n(1, &next), 1);
    cr_assert_eq(drain(ll, 1, &expect, 10000), 1);
    atomic_fetch_add(tail_word(), 1); /* gap at position 1 */
    struct cbus_event ev[4];
    cr_assert_eq(cbus_consumer_poll(ll, ev, 4), 0, "stuck at the gap");
    cbus_consumer_commit(ll);
    /* positions 2 .. 1024: the ring is full up to the cursor (1) */
    cr_assert_eq(emit_n(1023, &next), 1023);
    cr_assert_eq(emit_n(1, &next), 0, "held by the lossless consumer");
    atomic_fetch_add(tail_word(), 3); /* tail 1028: more than a ring ahead of 1 */
    cr_assert_eq(drain(ll, 1025, &expect, 30000), 1023, "every committed event after the gap");
    struct cbus_consumer_stats st;
    cbus_consumer_stats(ll, &st);
    cr_assert_eq(st.consumed, 1024);
    cr_assert_eq(st.lost + st.abandoned, 1, "only the gap position is counted");
    assert_exact(ll, 0);
    cbus_consumer_detach(ll);
}

/* A lossless consumer commits what it processed, as a checkpointing daemon
 * does (up to just past its last event), never past it.  A forward write of
 * tail by more than the ring leaves it only skipped positions and no event:
 * if it had to commit them itself, the producers it gates could never send
 * the event that makes it commit.  The library acknowledges them. */
Test(bus_tail, skipped_positions_after_the_last_commit_release_producers)
{
    make_bus(500000000u);
    cbus_consumer *ll = attach("lossless", CBUS_LOSSLESS);
    uint32_t next = 0;
    cr_assert_eq(emit_n(5, &next), 5);
    struct cbus_event ev[64];
    uint64_t got = 0, end_pos = 0, t0 = test_now_ms();
    while (got < 5 && test_now_ms() - t0 < 10000) {
        int n = cbus_consumer_poll(ll, ev, 64);
        cr_assert_geq(n, 0);
        for (int i = 0; i < n; i++)
            end_pos = ev[i].event_id + 1;
        got += (uint64_t)n;
    }
    cr_assert_eq(got, 5);
    cr_assert_eq(cbus_consumer_commit_to(ll, end_pos), 0);
    atomic_fetch_add(tail_word(), 3 * 1024); /* the hostile write */
    uint64_t tail = 5 + 3 * 1024;

    /* Poll (never commit) until a producer gets a position again. */
    unsigned accepted = 0;
    t0 = test_now_ms();
    while (!accepted && test_now_ms() - t0 < 30000) {
        cbus_consumer_heartbeat(ll);
        cr_assert_eq(cbus_consumer_poll(ll, ev, 64), 0, "nothing was emitted");
        accepted = emit_n(1, &next);
        if (!accepted)
            test_sleep_ms(1);
    }
    struct cbus_consumer_stats st;
    cbus_consumer_stats(ll, &st);
    cr_assert_geq(st.cursor, tail, "cursor %llu: the skipped positions were acknowledged",
                  (unsigned long long)st.cursor);
    cr_assert_eq(accepted, 1, "producers released");
    assert_exact(ll, 0);
    cbus_consumer_detach(ll);
}

/* A live producer preempted between its claim (the fetch_add on tail) and
 * its mark, while another registered producer dies holding no claim.  The
 * consumer must not take the dead one as the holder of the live one's
 * claim: the live writer commits later, and skipping its position as
 * abandoned is a lost event that a lossless consumer never sees (what the
 * soak's lossless verifier reported under load).  Stall timeout ten
 * minutes: nothing may skip the claim here. */
Test(bus_tail, live_unmarked_claim_is_not_excused_by_a_producer_dying_after_it)
{
    test_bus_name(name, sizeof name);
    struct cbus_create_opts o = {.capacity = 1024, .abandon_timeout_ns = 1000000u,
                                 .stall_timeout_ns = 600000000000ull};
    cr_assert_eq(cbus_bus_create(name, &o), 0);
    cr_assert_eq(cbus_producer_open(&p, name, NULL), 0);
    cbus_ctx_init(&ctx);
    cbus_consumer *c = attach("lossless", CBUS_LOSSLESS);
    uint32_t next = 0, expect = 0;
    cr_assert_eq(emit_n(1, &next), 1);
    cr_assert_eq(drain(c, 1, &expect, 10000), 1);
    /* the live writer's claim, not marked yet (as if preempted) */
    uint64_t pos = atomic_fetch_add(tail_word(), 1);
    cr_assert_eq(pos, 1);
    /* a producer registers and dies holding no claim, after that claim */
    int go[2];
    cr_assert_eq(pipe(go), 0);
    kid = fork();
    cr_assert_geq(kid, 0);
    if (kid == 0) {
        cbus_producer *kp;
        if (cbus_producer_open(&kp, name, NULL))
            _exit(3);
        char b = 1;
        if (write(go[1], &b, 1) != 1)
            _exit(4);
        for (;;)
            pause(); /* killed by the parent */
    }
    close(go[1]);
    char b;
    cr_assert_eq(read(go[0], &b, 1), 1, "the child registered");
    close(go[0]);
    kill(kid, SIGKILL);
    cr_assert_eq(test_wait_pid(kid, 5000) >= 0, 1);
    kid = -1;
    /* the consumer polls at the held claim for 100 abandon timeouts (and
     * scans the producer table every ms meanwhile): every chance to give
     * it up wrongly */
    struct cbus_event ev[4];
    uint64_t t0 = test_now_ms();
    while (test_now_ms() - t0 < 100) {
        cr_assert_eq(cbus_consumer_poll(c, ev, 4), 0);
        cbus_consumer_wait(c, 1000000u);
    }
    struct cbus_consumer_stats st;
    cbus_consumer_stats(c, &st);
    cr_assert_eq(st.abandoned, 0, "a live writer's claim was excused by a producer that died after it");
    cr_assert_eq(st.read_pos, pos);
    /* the writer completes: its event arrives */
    struct cbus_shm_header *h = (struct cbus_shm_header *)cbus_bus_header(cbus_producer_bus(p));
    struct cbus_slot *s = (struct cbus_slot *)((char *)h + h->slots_off) + (pos & (h->capacity - 1));
    atomic_store(&s->writer_pid, (uint32_t)getpid());
    atomic_store(&s->seq, CBUS_SEQ_BUSY(pos));
    memset(&s->ev, 0, sizeof s->ev);
    s->ev.kind = CBUS_EV_CUSTOM;
    memcpy(&s->ev.u, &next, sizeof next);
    next++;
    atomic_store_explicit(&s->seq, CBUS_SEQ_COMMITTED(pos), memory_order_release);
    cr_assert_eq(drain(c, pos + 1, &expect, 10000), 1, "the late writer's event is delivered");
    cbus_consumer_stats(c, &st);
    cr_assert_eq(st.consumed, 2);
    cr_assert_eq(st.abandoned + st.lost, 0);
    cbus_consumer_detach(c);
}

/* A claim in flight (taken by fetch_add, not marked yet: the producer is
 * preempted there) shows in no slot, so when tail is then written back the
 * repair cannot see it.  Putting tail back at one past the highest marked
 * position would hand the in-flight position to the next producer: two
 * writers in one slot, each storing the same commit words, so a reader
 * takes whichever bytes it finds (a torn mix, or one event lost without a
 * count).  The repair leaves a gap past what it sees, and consumers skip
 * the unclaimed part of it as abandoned after one stall timeout. */
Test(bus_tail, repair_after_a_backward_write_skips_a_claim_in_flight)
{
    make_bus(200000000u);
    cbus_consumer *ll = attach("lossless", CBUS_LOSSLESS);
    cbus_consumer *ly = attach("lossy", CBUS_LOSSY);
    uint32_t next = 0, e1 = 0, e2 = 0;
    cr_assert_eq(emit_n(100, &next), 100);
    cr_assert_eq(drain(ll, 100, &e1, 10000), 100);
    cr_assert_eq(drain(ly, 100, &e2, 10000), 100);
    /* the live writer's claim, not marked yet (as if preempted) */
    uint64_t pos = atomic_fetch_add(tail_word(), 1);
    cr_assert_eq(pos, 100);
    uint32_t late_tag = next++;
    atomic_store(tail_word(), 40); /* the hostile write */
    /* the first claim finds position 40 used: dropped, tail repaired */
    cr_assert_eq(emit_n(1, &next), 0);
    uint64_t tail = cbus_bus_tail(cbus_producer_bus(p));
    cr_assert_gt(tail, pos, "tail %llu: the claim in flight at %llu would be handed out again",
                 (unsigned long long)tail, (unsigned long long)pos);
    cr_assert_eq(emit_n(10, &next), 10);
    const struct cbus_shm_header *h = cbus_bus_header(cbus_producer_bus(p));
    struct cbus_slot *s = (struct cbus_slot *)((char *)h + h->slots_off) + (pos & (h->capacity - 1));
    cr_assert_lt(atomic_load(&s->seq), CBUS_SEQ_BUSY(pos),
                 "another producer wrote the position in flight");
    /* the preempted writer completes: its event and the ten after it arrive */
    atomic_store(&s->writer_pid, (uint32_t)getpid());
    atomic_store(&s->seq, CBUS_SEQ_BUSY(pos));
    memset(&s->ev, 0, sizeof s->ev);
    s->ev.kind = CBUS_EV_CUSTOM;
    memcpy(&s->ev.u, &late_tag, sizeof late_tag);
    atomic_store_explicit(&s->seq, CBUS_SEQ_COMMITTED(pos), memory_order_release);
    uint64_t end = tail + 10;
    cr_assert_eq(drain(ll, end, &e1, 30000), 11, "the late event, then the ten after the gap");
    cr_assert_eq(drain(ly, end, &e2, 30000), 11);
    for (int k = 0; k < 2; k++) {
        struct cbus_consumer_stats st;
        cbus_consumer_stats(k ? ly : ll, &st);
        cr_assert_eq(st.consumed, 111);
        cr_assert_eq(st.lost, 0);
        cr_assert_eq(st.abandoned, tail - pos - 1, "the gap is counted as abandoned");
        assert_exact(k ? ly : ll, 0);
    }
    struct cbus_producer_stats ps;
    cbus_producer_stats(p, &ps);
    cr_assert_eq(ps.dropped, 1);
    cbus_consumer_detach(ll);
    cbus_consumer_detach(ly);
}

/* The event committed just above a claim in flight is not corroborated by
 * the slot before it (that one shows an older lap, as a stray word's would),
 * so the repair did not count it: a producer claiming it again from a tail
 * written back by one wrote over it, and the event was gone uncounted. */
Test(bus_tail, event_committed_above_a_claim_in_flight_is_not_written_over)
{
    make_bus(200000000u);
    cbus_consumer *ly = attach("lossy", CBUS_LOSSY);
    uint32_t next = 0, e = 0;
    cr_assert_eq(emit_n(100, &next), 100);
    cr_assert_eq(drain(ly, 100, &e, 10000), 100);
    uint64_t pos = atomic_fetch_add(tail_word(), 1); /* in flight, not marked */
    cr_assert_eq(pos, 100);
    uint32_t late_tag = next++;
    cr_assert_eq(emit_n(1, &next), 1); /* position 101 */
    atomic_store(tail_word(), 101);    /* the hostile write: back by one */
    cr_assert_eq(emit_n(1, &next), 0, "position 101 is taken: dropped, counted");
    cr_assert_eq(emit_n(10, &next), 10);
    const struct cbus_shm_header *h = cbus_bus_header(cbus_producer_bus(p));
    struct cbus_slot *slots = (struct cbus_slot *)((char *)h + h->slots_off);
    uint32_t tag;
    memcpy(&tag, &slots[101].ev.u, sizeof tag);
    cr_assert_eq(tag, late_tag + 1, "the event at 101 was written over");
    struct cbus_slot *s = &slots[pos];
    atomic_store(&s->writer_pid, (uint32_t)getpid());
    atomic_store(&s->seq, CBUS_SEQ_BUSY(pos));
    memset(&s->ev, 0, sizeof s->ev);
    s->ev.kind = CBUS_EV_CUSTOM;
    memcpy(&s->ev.u, &late_tag, sizeof late_tag);
    atomic_store_explicit(&s->seq, CBUS_SEQ_COMMITTED(pos), memory_order_release);
    uint64_t tail = cbus_bus_tail(cbus_producer_bus(p));
    cr_assert_eq(drain(ly, tail, &e, 30000), 12, "the late event, the one at 101, the ten after");
    struct cbus_consumer_stats st;
    cbus_consumer_stats(ly, &st);
    cr_assert_eq(st.consumed, 112);
    cr_assert_eq(st.lost, 0);
    assert_exact(ly, 0);
    struct cbus_producer_stats ps;
    cbus_producer_stats(p, &ps);
    cr_assert_eq(ps.dropped, 1);
    cbus_consumer_detach(ly);
}
