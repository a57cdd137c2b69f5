/* Target: a segment whose header, tables and slots hold arbitrary bytes.
 *
 * A process that can write the segment (same uid, or the group with 0660)
 * may write anything into it.  Consumers, producers and the admission-table
 * code must then fail cleanly (-EPROTO/-EBADMSG at open) or keep working:
 * never crash, never touch memory outside the mapping, never loop.
 *
 * Each input is a small program over one formatted bus (capacity 1024, the
 * minimum): a mode byte, then ops that patch the header, a table, the tail
 * or slots (with and without a matching commit word, since a random seq
 * would almost never equal 2p+2 and the fuzzer would never get past the
 * seqlock check).  Then cbus_bus_open_mem(); if it opens: attach a consumer
 * (mode and start position from the input), emit a few events as a
 * producer, consult and publish admission verdicts, and poll until empty.
 *
 * The mapping has PROT_NONE guard pages on both sides, so a read or write
 * just outside the segment faults even though ASan does not track mmap.
 *
 * Built with FUZZ_LANES > 1 (fuzz_segment_lanes.c) the bus has that many
 * lanes, and the program can also aim its tail and slot ops at any lane and
 * scribble the lane table, lane owner words and per-lane consumer cursors;
 * CBUS_START_CURSOR attaches with a position vector read from the input.
 * Beyond the one-lane checks: ids delivered in a lane increase and name that
 * lane, and a producer's close leaves no lane it took still owned.  With one
 * lane an input means what it always did (the lane ops and bytes do not
 * exist), so corpus/segment keeps its coverage. */
#include "fuzz.h"

#include <cbus/admit.h>
#include <cbus/bus.h>
#include <cbus/consumer.h>
#include <cbus/layout.h>
#include <cbus/producer.h>

#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef FUZZ_LANES
#define FUZZ_LANES 1
#endif
static_assert((FUZZ_LANES & (FUZZ_LANES - 1)) == 0 && FUZZ_LANES <= CBUS_MAX_LANES,
              "a bus's lane count is a power of two up to CBUS_MAX_LANES");

#define PAGE 4096u
#define MAX_POLLS 24          /* poll calls per input: enough to drain 1024 slots */
#define POLL_BATCH 64
/* An emit may wait for a lossless consumer at most the header's bound; this
 * harness caps the bound at PRODUCER_WAIT_CAP_NS (else a patched header
 * legitimately makes each emit wait up to 10 s) and fails past it plus slack. */
#define PRODUCER_WAIT_CAP_NS 2000000u
#define EMIT_SLACK_NS UINT64_C(1000000000)

static uint8_t *g_seg;        /* the mapping the bus lives in (between guards) */
static uint8_t *g_template;   /* a freshly formatted bus, copied in per input */
static size_t g_len;
/* FUZZ_SEGMENT_SKIP_KNOWN=1 steers around the open bugs listed in
 * docs/fuzz.md (their regression inputs still fail), so a fuzzing session can
 * explore the rest instead of rediscovering them.  scripts/fuzz.sh does not
 * set it. */
static int g_skip_known;
/* FUZZ_SEGMENT_VERBOSE=1: say what each input did (open result, counts). */
static int g_verbose;

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    struct cbus_create_opts o = {.capacity = 1024, .admission_entries = 64, .lanes = FUZZ_LANES,
                                 .lossless_wait_ns = 200000, .abandon_timeout_ns = 1000000,
                                 .stall_timeout_ns = 5000000, .admit_stale_ns = 1000000};
    g_skip_known = getenv("FUZZ_SEGMENT_SKIP_KNOWN") != NULL;
    g_verbose = getenv("FUZZ_SEGMENT_VERBOSE") != NULL;
    g_len = cbus_bus_size(&o);
    if (!g_len)
        abort();
    size_t maplen = (g_len + PAGE - 1) / PAGE * PAGE + 2 * PAGE;
    uint8_t *m = mmap(NULL, maplen, PROT_NONE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        abort();
    /* The segment ends exactly at the trailing guard page (g_len is a page
     * multiple), so the first byte past it faults. */
    g_seg = m + PAGE;
    if (mprotect(g_seg, g_len, PROT_READ | PROT_WRITE))
        abort();
    g_template = malloc(g_len);
    if (!g_template)
        abort();
    /* Formatting calibrates the TSC (50 ms): once, then copied per input. */
    if (cbus_bus_format(g_template, g_len, "fuzz", &o))
        abort();
    return 0;
}

static struct cbus_shm_header *hdr(void)
{
    return (struct cbus_shm_header *)g_seg;
}

static const struct cbus_shm_header *tmpl(void)
{
    return (const struct cbus_shm_header *)g_template;
}

/* Which lane an op aims at: an input byte on a bus of several lanes, none
 * consumed on one (so one-lane inputs keep their meaning). */
static unsigned fz_lane(struct fz *f)
{
    return FUZZ_LANES > 1 ? fz_u8(f) % FUZZ_LANES : 0;
}

/* Where the template put things: patched header words must not steer the
 * harness itself out of the mapping. */
static struct cbus_slot *slot_at(unsigned lane, uint64_t pos)
{
    const struct cbus_shm_header *h = tmpl();
    uint64_t lane_cap = h->capacity / FUZZ_LANES;
    return (struct cbus_slot *)(g_seg + h->slots_off) + lane * lane_cap + (pos & (lane_cap - 1));
}

static _Atomic uint64_t *tail_word(unsigned lane)
{
    if (lane == 0)
        return &hdr()->tail;
    return &((struct cbus_lane *)(g_seg + tmpl()->lanes_off))[lane].tail;
}

static void patch(uint8_t *base, size_t region, struct fz *f)
{
    size_t off = fz_u32(f) % region;
    size_t len = fz_u8(f);
    if (len > region - off)
        len = region - off;
    fz_bytes(f, base + off, len);
}

enum op {
    OP_HEADER,        /* bytes into page 0 */
    OP_ANYWHERE,      /* bytes anywhere in the segment */
    OP_TAIL,          /* tail = any u64 */
    OP_TAIL_NEAR,     /* tail = small value */
    OP_COMMIT,        /* a committed slot at pos: seq 2p+2, event bytes from input */
    OP_SEQ,           /* a slot's seq = any u64 */
    OP_BUSY,          /* a slot claimed, never committed: seq 2p+1 and a writer pid */
    OP_CONSUMER,      /* bytes into one consumer entry */
    OP_ADMIT,         /* bytes into the admission table */
    OP_GATE,          /* gate word = any u64 */
    OP__COUNT_ONE_LANE,
    /* lanes only */
    OP_LANE_TABLE = OP__COUNT_ONE_LANE, /* bytes into the lane table */
    OP_LANE_OWNER,    /* a lane's owner: free, this thread, a dead pid, or any; any start time */
    OP_LANE_CURSORS,  /* bytes into one consumer's per-lane cursors */
    OP_LANE_CURSOR,   /* one consumer's cursor or read_pos word in a lane = small or any u64 */
    OP__COUNT_LANES
};
#define OP__COUNT (FUZZ_LANES > 1 ? OP__COUNT_LANES : OP__COUNT_ONE_LANE)

static void apply(struct fz *f)
{
    const struct cbus_shm_header *t = tmpl();
    while (f->n) {
        switch (fz_u8(f) % OP__COUNT) {
        case OP_HEADER:
            patch(g_seg, CBUS_HEADER_SIZE, f);
            break;
        case OP_ANYWHERE:
            patch(g_seg, g_len, f);
            break;
        case OP_TAIL: {
            unsigned lane = fz_lane(f);
            atomic_store(tail_word(lane), fz_u64(f));
            break;
        }
        case OP_TAIL_NEAR: {
            unsigned lane = fz_lane(f);
            atomic_store(tail_word(lane), fz_u16(f));
            break;
        }
        case OP_COMMIT: {
            unsigned lane = fz_lane(f);
            uint64_t pos = fz_u16(f);
            struct cbus_slot *s = slot_at(lane, pos);
            size_t n = fz_u16(f) % (sizeof s->ev + 1);
            fz_bytes(f, &s->ev, n);
            atomic_store(&s->seq, CBUS_SEQ_COMMITTED(pos));
            break;
        }
        case OP_SEQ: {
            unsigned lane = fz_lane(f);
            struct cbus_slot *s = slot_at(lane, fz_u16(f));
            atomic_store(&s->seq, fz_u64(f));
            break;
        }
        case OP_BUSY: {
            unsigned lane = fz_lane(f);
            uint64_t pos = fz_u16(f);
            struct cbus_slot *s = slot_at(lane, pos);
            uint8_t who = fz_u8(f);
            /* dead (0), this process (alive: the stall timeout applies), or any */
            uint32_t pid = who < 85 ? 0 : who < 170 ? (uint32_t)getpid() : fz_u32(f);
            atomic_store(&s->writer_pid, pid);
            atomic_store(&s->seq, CBUS_SEQ_BUSY(pos));
            break;
        }
        case OP_CONSUMER: {
            unsigned idx = fz_u8(f) % CBUS_MAX_CONSUMERS;
            patch(g_seg + t->consumers_off + idx * sizeof(struct cbus_consumer_entry),
                  sizeof(struct cbus_consumer_entry), f);
            break;
        }
        case OP_ADMIT:
            patch(g_seg + t->admission_off, t->slots_off - t->admission_off, f);
            break;
        case OP_GATE:
            atomic_store(&hdr()->gate, fz_u64(f));
            break;
        case OP_LANE_TABLE:
            patch(g_seg + t->lanes_off, FUZZ_LANES * sizeof(struct cbus_lane), f);
            break;
        case OP_LANE_OWNER: {
            struct cbus_lane *ln = (struct cbus_lane *)(g_seg + t->lanes_off) + fz_lane(f);
            uint8_t who = fz_u8(f);
            /* free; held by this thread (alive: our producer must not take
             * it, and must not give it back either); a pid that cannot be
             * alive (taken over on the second pass); or any word */
            uint64_t owner = 0;
            if (who >= 64 && who < 128) {
                owner = (uint64_t)getpid() << 32 | (uint32_t)syscall(SYS_gettid);
            } else if (who >= 128 && who < 192) {
                uint64_t pid = UINT64_C(0x80000000) | fz_u16(f); /* > INT_MAX: never alive */
                owner = pid << 32 | fz_u16(f);
            } else if (who >= 192) {
                owner = fz_u64(f);
            }
            atomic_store(&ln->owner, owner);
            atomic_store(&ln->owner_start_time, fz_u8(f) & 1 ? fz_u64(f) : 0);
            break;
        }
        case OP_LANE_CURSORS: {
            unsigned idx = fz_u8(f) % CBUS_MAX_CONSUMERS;
            patch(g_seg + t->lane_cursors_off + idx * sizeof(struct cbus_lane_cursors),
                  sizeof(struct cbus_lane_cursors), f);
            break;
        }
        case OP_LANE_CURSOR: {
            unsigned idx = fz_u8(f) % CBUS_MAX_CONSUMERS;
            unsigned lane = fz_lane(f);
            uint8_t how = fz_u8(f);
            uint64_t v = how & 2 ? fz_u64(f) : fz_u16(f);
            struct cbus_lane_cursors *lc =
                (struct cbus_lane_cursors *)(g_seg + t->lane_cursors_off) + idx;
            atomic_store(how & 1 ? &lc->read_pos[lane] : &lc->cursor[lane], v);
            break;
        }
        }
    }
}

static void drain(cbus_consumer *c, uint64_t start)
{
    static struct cbus_event out[POLL_BATCH];
    /* consumer.h: an id is lane position * lanes + lane, each lane delivered
     * in order, so the ids of one lane increase (whatever the slots held:
     * poll writes the id of the position it read at). */
    uint64_t next_id[FUZZ_LANES] = {0};
    for (int i = 0; i < MAX_POLLS; i++) {
        int n = cbus_consumer_poll(c, out, POLL_BATCH);
        FZ_CHECK(n >= -ESTALE && n <= POLL_BATCH, "poll returned %d", n);
        if (n < 0)
            return;
        for (int k = 0; k < n; k++) {
            unsigned lane = (unsigned)(out[k].event_id % FUZZ_LANES);
            FZ_CHECK(out[k].event_id >= next_id[lane], "lane %u: id %llu after %llu", lane,
                     (unsigned long long)out[k].event_id,
                     (unsigned long long)(next_id[lane] - FUZZ_LANES));
            next_id[lane] = out[k].event_id + FUZZ_LANES;
            /* What a consumer does with an event: reads its bounded fields. */
            volatile size_t l = strnlen(out[k].model, sizeof out[k].model) +
                                strnlen(out[k].preview, sizeof out[k].preview);
            (void)l;
        }
        cbus_consumer_commit(c);
        if (n == 0) {
            /* Nothing new: done, unless a claimed slot holds us up; then
             * wait (futex path) past the abandon/stall timeout the harness
             * capped at 5 ms, so skipping and counting it is exercised. */
            if (cbus_consumer_read_pos(c) >= cbus_bus_tail(cbus_consumer_bus(c)))
                break;
            int w = cbus_consumer_wait(c, 3000000);
            FZ_CHECK(w >= -ESTALE && w <= 1, "wait returned %d", w);
            if (w < 0)
                return;
        }
    }
    struct cbus_consumer_stats st;
    /* consumer.h: every position passed is exactly one of these, whatever
     * the slots held. */
    int sr = cbus_consumer_stats(c, &st);
    if (g_verbose)
        fprintf(stderr, "segment: stats %d: consumed %llu lost %llu abandoned %llu read_pos %llu tail %llu\n",
                sr, (unsigned long long)st.consumed, (unsigned long long)st.lost,
                (unsigned long long)st.abandoned, (unsigned long long)st.read_pos,
                (unsigned long long)st.tail);
    if (sr == 0)
        FZ_CHECK(st.consumed + st.lost + st.abandoned == st.read_pos - start,
                 "consumed %llu + lost %llu + abandoned %llu != passed %llu",
                 (unsigned long long)st.consumed, (unsigned long long)st.lost,
                 (unsigned long long)st.abandoned, (unsigned long long)(st.read_pos - start));
}

/* Lane owner words now (pid << 32 | tid; 0 free). */
static void lane_owners(cbus_bus *bus, uint64_t owner[FUZZ_LANES])
{
    for (unsigned L = 0; L < FUZZ_LANES; L++) {
        uint32_t pid = 0, tid = 0;
        cbus_bus_lane_owner(bus, L, &pid, &tid);
        owner[L] = (uint64_t)pid << 32 | tid;
    }
}

static void produce(cbus_bus *bus, unsigned nemit, int admit)
{
    cbus_producer *p;
    uint64_t before[FUZZ_LANES];
    lane_owners(bus, before);
    if (cbus_producer_open_bus(&p, bus, &(struct cbus_producer_opts){.name = "fz"}))
        return;
    cbus_ctx ctx;
    cbus_ctx_init(&ctx);
    cbus_ctx_set_user(&ctx, "u1");
    cbus_ctx_set_model(&ctx, "gpt-4o");
    cbus_ctx_set_provider(&ctx, "openai");
    uint64_t bound = cbus_bus_header(bus)->lossless_wait_ns + EMIT_SLACK_NS;
    for (unsigned i = 0; i < nemit; i++) {
        uint64_t t0 = mono_ns();
        int r = cbus_llm_start(p, &ctx, "hello", NULL);
        uint64_t took = mono_ns() - t0;
        FZ_CHECK(r == 0 || r == -EAGAIN, "emit returned %d", r);
        FZ_CHECK(took <= bound, "emit held the producer %llu ns (bound %llu)",
                 (unsigned long long)took, (unsigned long long)bound);
    }
    if (admit) {
        uint64_t retry = 0;
        int v = cbus_admit(p, &ctx, &retry);
        FZ_CHECK(v >= 0 && v <= CBUS_ADMIT_STALE, "admit returned %d", v);
    }
    cbus_producer_close(p);
    /* producer.c: close gives back every lane this process's threads took,
     * so a lane names us now only if it did before (the input put us there). */
    uint64_t after[FUZZ_LANES];
    lane_owners(bus, after);
    for (unsigned L = 0; L < FUZZ_LANES; L++)
        FZ_CHECK(after[L] >> 32 != (uint32_t)getpid() || after[L] == before[L],
                 "lane %u still owned (%#llx, was %#llx) after close", L,
                 (unsigned long long)after[L], (unsigned long long)before[L]);
}

static void decide(cbus_bus *bus, const uint8_t dk[8])
{
    /* The rate limiter's side of the admission table. */
    unsigned w;
    if (cbus_admit_writer_register(bus, "fzw", &w))
        return;
    char key[8];
    for (unsigned i = 0; i < 4; i++) {
        snprintf(key, sizeof key, "k%u", dk[2 * i] % 16u);
        cbus_admit_publish(bus, w, 1 + i % (CBUS_SCOPE__COUNT - 1), key, dk[2 * i + 1] % 3, 0);
    }
    for (unsigned i = 0; i < 64; i++)
        cbus_admit_entry_at(bus, i);
    cbus_admit_writer_heartbeat(bus, w);
    cbus_admit_writer_release(bus, w);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fz f = {data, size};
    uint8_t mode = fz_u8(&f);
    uint64_t cursor = fz_u64(&f);
    uint8_t dk[8];
    fz_bytes(&f, dk, sizeof dk);
    /* CBUS_START_CURSOR's place in every lane: lane 0 is `cursor`; lanes
     * 1.. near it or anywhere; one input bit in eight names a wrong lane
     * count (refused with -EINVAL).  None of this on a one-lane bus. */
    struct cbus_position position = {.lanes = FUZZ_LANES, .pos = {cursor}};
    if (FUZZ_LANES > 1) {
        uint8_t pm = fz_u8(&f);
        if ((pm & 7) == 7)
            position.lanes = pm >> 3;
        for (unsigned L = 1; L < FUZZ_LANES; L++)
            position.pos[L] = pm & 8 ? fz_u64(&f) : fz_u16(&f);
    }
    memcpy(g_seg, g_template, g_len);
    apply(&f);

    /* Keep the harness fast: the header's waits are the creator's policy and
     * honoured as written, except that this harness caps them. */
    struct cbus_shm_header *h = hdr();
    if (h->lossless_wait_ns > PRODUCER_WAIT_CAP_NS)
        h->lossless_wait_ns = PRODUCER_WAIT_CAP_NS;
    if (h->abandon_timeout_ns > 5000000u)
        h->abandon_timeout_ns = 5000000u;
    if (h->stall_timeout_ns > 5000000u)
        h->stall_timeout_ns = 5000000u;

    if (g_skip_known) {
        /* Known open bugs (docs/fuzz.md): a header's TSC calibration is
         * trusted, so a bogus mult/hz freezes the clock that bounds waits. */
        memcpy(&h->clock_source, &((const struct cbus_shm_header *)g_template)->clock_source,
               offsetof(struct cbus_shm_header, name) - offsetof(struct cbus_shm_header, clock_source));
    }

    cbus_bus *bus;
    int r = cbus_bus_open_mem(&bus, g_seg, g_len);
    FZ_CHECK(r == 0 || r == -EPROTO || r == -EBADMSG || r == -CBUS_EFEATURE, "open_mem returned %d", r);
    if (g_verbose)
        fprintf(stderr, "segment: open %d\n", r);
    if (r)
        return 0;
    const struct cbus_shm_header *vh = cbus_bus_header(bus);
    FZ_CHECK(vh->capacity >= 1024 && vh->total_size == g_len, "validated header inconsistent");

    /* Tools' view: every consumer entry's liveness, a peek at a few slots. */
    for (unsigned i = 0; i < CBUS_MAX_CONSUMERS; i++)
        cbus_bus_consumer_alive(bus, i);
    struct cbus_event ev;
    uint64_t tail = cbus_bus_tail(bus);
    for (uint64_t k = 0; k < 4; k++)
        cbus_bus_peek(bus, tail - k - 1, &ev);
    FZ_CHECK(cbus_bus_lanes(bus) == FUZZ_LANES, "validated bus has %u lanes", cbus_bus_lanes(bus));
    for (unsigned L = 0; FUZZ_LANES > 1 && L < FUZZ_LANES; L++) {
        /* cbusctl stat's view of a lane: its owner, tail, last events and
         * every consumer's words in it */
        uint32_t pid, tid;
        uint64_t cur, rp, lt = cbus_bus_lane_tail(bus, L);
        cbus_bus_lane_owner(bus, L, &pid, &tid);
        for (uint64_t k = 0; k < 2; k++)
            cbus_bus_peek(bus, (lt - k - 1) * FUZZ_LANES + L, &ev);
        for (unsigned i = 0; i < CBUS_MAX_CONSUMERS; i++)
            cbus_bus_consumer_lane(bus, i, L, &cur, &rp);
    }

    struct cbus_consumer_opts co = {.name = "fzc", .mode = mode & 1, .start = (mode >> 1) % 4,
                                    .cursor = cursor,
                                    .position = FUZZ_LANES > 1 ? &position : NULL};
    cbus_consumer *c = NULL;
    r = cbus_consumer_attach_bus(&c, bus, &co);
    FZ_CHECK(r == 0 || r == -EBUSY || r == -ENOSPC ||
             (r == -EINVAL && co.start == CBUS_START_CURSOR && position.lanes != FUZZ_LANES),
             "attach returned %d", r);
    uint64_t start = c ? cbus_consumer_read_pos(c) : 0;
    produce(bus, (mode >> 3) & 7, (mode & 0x40) && !g_skip_known);
    if (mode & 0x80)
        decide(bus, dk);
    if (c) {
        drain(c, start);
        cbus_consumer_detach(c);
    }
    cbus_bus_close(bus);
    return 0;
}
