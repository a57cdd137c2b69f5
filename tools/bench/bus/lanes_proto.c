/* cbus-bench-bus-lanes: the producer-claim designs of issue 13 item 1, modelled side by
 * side over 512-byte slots in one shared-memory segment (a memfd mapped
 * MAP_SHARED), with the emit cbus does today around each claim: an rdtsc
 * timestamp, the check load of the slot's commit word, the writer and busy
 * marks, a release fence, the copy of a 496-byte struct cbus_event, the
 * per-event field stores, the release store of the commit word, and the load
 * of a consumer `waiters` word.  Only the claim differs:
 *
 *   shared      today: every thread fetch_adds one tail (the baseline)
 *   lane-rmw    a lane per thread, each an MPMC ring as today (its own tail
 *               on its own 128-byte line, fetch_add); the RMW is uncontended
 *   lane-sw     a lane per thread written by its owner only: the head is a
 *               private counter, published by a plain store after the commit
 *               (Quill, NanoLog, fmtlog); NO store-load fence before the
 *               waiters load, so a consumer going to sleep needs an
 *               asymmetric fence (membarrier) to be woken correctly
 *   lane-sw-mf  the same with a seq_cst fence (mfence) before the waiters
 *               load: the symmetric Dekker pairing the futex wake needs
 *   percpu      LTTng-UST's per-CPU buffers: sched_getcpu() (glibc 2.35+
 *               reads it from the rseq area) picks the CPU's lane, a CAS on
 *               that lane's reserve word takes the position (retried if a
 *               migration let another thread in)
 *
 * each at 1 and 2 threads, pinned (thread i on CPU i) and unpinned; then one
 * consumer draining 1, 2, 4, 8 lanes, sweeping (a batch per lane in turn) and
 * merging (always the lane whose next event has the smallest timestamp).
 *
 * Runs are interleaved (run r of every configuration before run r+1 of any),
 * so drift on a shared machine hits every row alike; a row reports medians
 * over its runs.  Timing is cbus-bench-compare's: BENCH_BATCH events between two
 * clock_gettime calls, the batch time / BENCH_BATCH is one sample.
 *
 * It checks itself and exits 1 on any mismatch:
 *   - before timing, a verify pass per configuration whose events all fit:
 *     one consumer reads every lane and must see every (thread, seq) exactly
 *     once, each thread's events in order within a lane, every commit word
 *     its own position's;
 *   - after each timed run (the rings have wrapped): the claimed positions
 *     add up to threads x events, and the last lap of every lane is committed,
 *     duplicate-free and in per-thread order (lanes: the owner's seq = pos);
 *   - every drain run reads each lane's events exactly once, in order.
 *
 *   cbus-bench-bus-lanes [--events N] [--runs R] [--lane-slots S] [--drain-events N]
 *               [--csv FILE] [--smoke]
 * Exit 0, 1 (a check failed, or setup), 2 (usage). */
#include <cbus/layout.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#define HAVE_RDTSC 1
#endif

#define BENCH_BATCH 32
#define MAX_RUNS 64
#define MAX_LANES 16
#define MAX_THREADS 2
#define LINE 128
#define HDR_BYTES 4096

enum design { D_SHARED, D_LANE_RMW, D_LANE_SW, D_LANE_SW_MF, D_PERCPU, D__COUNT };
static const char *const design_name[D__COUNT] = {"shared", "lane-rmw", "lane-sw", "lane-sw-mf",
                                                  "percpu"};
static const char *const design_what[D__COUNT] = {
    "one tail, fetch_add (today)", "own lane, own tail line, fetch_add",
    "own lane, plain head store, no fence", "own lane, plain head store + mfence",
    "per-CPU lane, sched_getcpu + CAS"};

/* ---- the segment ----------------------------------------------------------- */
struct lane {
    /* The claim word (shared, lane-rmw, percpu) or the owner's published
     * head (lane-sw): alone on its 128-byte line (two lines against the
     * adjacent-line prefetcher, as Aeron pads). */
    alignas(LINE) _Atomic uint64_t tail;
    char pad[LINE - sizeof(uint64_t)];
};

struct seg_hdr {
    /* Read by every emit, written by no one here: the consumer's "someone
     * sleeps" word of today's bus.  Its own line, so reading it costs a hit. */
    alignas(LINE) _Atomic uint32_t waiters;
    char pad[LINE - sizeof(uint32_t)];
    struct lane lanes[MAX_LANES];
};
_Static_assert(sizeof(struct seg_hdr) <= HDR_BYTES, "header fits its page");

/* The slot of today's bus: commit word, writer, the event. */
struct pslot {
    _Atomic uint64_t seq;
    _Atomic uint32_t writer;
    uint32_t _reserved;
    struct cbus_event ev;
};
_Static_assert(sizeof(struct pslot) == CBUS_SLOT_SIZE, "slot size");
_Static_assert(sizeof(struct cbus_event) == 496, "event size");

#define SEQ_BUSY(p) (2 * (uint64_t)(p) + 1)
#define SEQ_COMMITTED(p) (2 * (uint64_t)(p) + 2)

struct seg {
    void *base;
    size_t len;
    struct seg_hdr *hdr;
    unsigned nlanes;
    uint64_t lane_slots, mask;  /* per lane, a power of two */
};

static struct pslot *lane_slots(const struct seg *s, unsigned lane)
{
    return (struct pslot *)((char *)s->base + HDR_BYTES +
                            (size_t)lane * s->lane_slots * sizeof(struct pslot));
}

static int seg_open(struct seg *s, unsigned nlanes, uint64_t lane_slots_n)
{
    s->nlanes = nlanes;
    s->lane_slots = lane_slots_n;
    s->mask = lane_slots_n - 1;
    s->len = HDR_BYTES + (size_t)nlanes * lane_slots_n * sizeof(struct pslot);
    int fd = memfd_create("cbus-bench-bus-lanes", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, (off_t)s->len)) {
        fprintf(stderr, "cbus-bench-bus-lanes: memfd of %zu bytes: %s\n", s->len, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    s->base = mmap(NULL, s->len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (s->base == MAP_FAILED) {
        fprintf(stderr, "cbus-bench-bus-lanes: mmap: %s\n", strerror(errno));
        return -1;
    }
    /* Touch every page now (as bus creation zero-fills): no page faults in
     * the timed loops. */
    memset(s->base, 0, s->len);
    s->hdr = s->base;
    return 0;
}

static void seg_close(struct seg *s)
{
    munmap(s->base, s->len);
}

/* ---- the clock: rdtsc and a mult/shift to ns, as the bus does ------------- */
static uint64_t clk_mult;
static unsigned clk_shift = 24;

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void clock_calibrate(void)
{
#ifdef HAVE_RDTSC
    uint64_t n0 = mono_ns(), t0 = __rdtsc();
    while (mono_ns() - n0 < 20000000)
        ;
    uint64_t n1 = mono_ns(), t1 = __rdtsc();
    clk_mult = (uint64_t)(((double)(n1 - n0) / (double)(t1 - t0)) * (double)(1u << clk_shift));
#endif
}

static inline uint64_t clock_now(void)
{
#ifdef HAVE_RDTSC
    __extension__ typedef unsigned __int128 u128;
    return (uint64_t)(((u128)__rdtsc() * clk_mult) >> clk_shift);
#else
    return mono_ns();
#endif
}

/* ---- producers ---------------------------------------------------------------- */
struct thr {
    alignas(LINE) struct seg *s;
    enum design d;
    unsigned idx;
    int cpu;                    /* -1: unpinned */
    unsigned lane;              /* owned lane (lane-*) */
    uint64_t head;              /* lane-sw: the owner's private head */
    uint64_t events;
    const struct cbus_event *tmpl;
    double *v;                  /* per-batch ns/event samples */
    size_t nb;
    uint64_t anomalies;         /* slot already at this lap: dropped; 0 in a lane or a verify pass */
    uint64_t cas_retries;       /* percpu */
    uint64_t lanes_seen;        /* percpu: bit per lane this thread wrote */
    pthread_barrier_t *start;
};

static void pin(int cpu)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (cpu < 0 || n < 2)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu % (int)n, &set);
    sched_setaffinity(0, sizeof set, &set);
}

/* One emit.  d is a constant at every call site (the loops below are
 * instantiated per design), so each design compiles to its own straight path. */
static inline __attribute__((always_inline)) void emit(struct thr *t, enum design d, uint32_t seq)
{
    struct seg *s = t->s;
    uint64_t now = clock_now();
    unsigned lane;
    uint64_t pos;
    switch (d) {
    case D_SHARED:
        lane = 0;
        pos = atomic_fetch_add_explicit(&s->hdr->lanes[0].tail, 1, memory_order_seq_cst);
        break;
    case D_LANE_RMW:
        lane = t->lane;
        pos = atomic_fetch_add_explicit(&s->hdr->lanes[lane].tail, 1, memory_order_seq_cst);
        break;
    case D_LANE_SW:
    case D_LANE_SW_MF:
        lane = t->lane;
        pos = t->head++;
        break;
    case D_PERCPU:
    default: {
        int cpu = sched_getcpu();
        lane = (unsigned)(cpu < 0 ? 0 : cpu) % s->nlanes;
        _Atomic uint64_t *w = &s->hdr->lanes[lane].tail;
        pos = atomic_load_explicit(w, memory_order_relaxed);
        while (!atomic_compare_exchange_weak_explicit(w, &pos, pos + 1, memory_order_seq_cst,
                                                      memory_order_relaxed))
            t->cas_retries++;
        t->lanes_seen |= 1u << lane;
        break;
    }
    }
    struct pslot *slot = &lane_slots(s, lane)[pos & s->mask];
    /* Today's guard: a slot already at this lap or a later one is never
     * written over (a load of the line written next).  In a shared ring it
     * happens for real when another thread lapped this claim while its writer
     * was preempted: the event is dropped, counted, as the bus does. */
    if (__builtin_expect(atomic_load_explicit(&slot->seq, memory_order_relaxed) >= SEQ_BUSY(pos), 0)) {
        t->anomalies++;
        return;
    }
    atomic_store_explicit(&slot->writer, t->idx + 1, memory_order_relaxed);
    atomic_store_explicit(&slot->seq, SEQ_BUSY(pos), memory_order_relaxed);
    /* RELEASE fence: busy mark before the payload (seqlock writer); pairs
     * with the acquire fence in read_slot(). */
    atomic_thread_fence(memory_order_release);
    struct cbus_event *ev = &slot->ev;
    memcpy(ev, t->tmpl, sizeof *ev);
    ev->kind = CBUS_EV_LLM_END;
    ev->pid = lane;
    ev->tid = t->idx;
    ev->body_len = seq;       /* the thread's own sequence: what the checks follow */
    ev->event_id = pos;
    ev->ts_realtime_ns = now + 1700000000000000000ull;
    ev->ts_mono_ns = now;
    /* RELEASE: publishes the payload.  Pairs with the ACQUIRE load in read_slot(). */
    atomic_store_explicit(&slot->seq, SEQ_COMMITTED(pos), memory_order_release);
    if (d == D_LANE_SW || d == D_LANE_SW_MF)
        /* RELEASE: a reader that sees the head sees the slots below it. */
        atomic_store_explicit(&s->hdr->lanes[lane].tail, pos + 1, memory_order_release);
    if (d == D_LANE_SW_MF)
        /* Store-load: the commit before the waiters load, against a consumer's
         * waiters store before its last look at the lanes (Dekker).  The RMW
         * designs get this from the locked instruction. */
        atomic_thread_fence(memory_order_seq_cst);
    if (__builtin_expect(atomic_load_explicit(&s->hdr->waiters, memory_order_seq_cst) != 0, 0))
        t->anomalies++;         /* nobody sleeps here */
}

#define LOOP(D)                                                              \
    static void loop_##D(struct thr *t)                                      \
    {                                                                        \
        uint32_t seq = 0;                                                    \
        for (size_t b = 0; b < t->nb; b++) {                                 \
            uint64_t t0 = mono_ns();                                         \
            for (int i = 0; i < BENCH_BATCH; i++)                            \
                emit(t, D, seq++);                                           \
            t->v[b] = (double)(mono_ns() - t0) / BENCH_BATCH;                \
        }                                                                    \
    }
LOOP(D_SHARED)
LOOP(D_LANE_RMW)
LOOP(D_LANE_SW)
LOOP(D_LANE_SW_MF)
LOOP(D_PERCPU)

static void *producer_main(void *arg)
{
    struct thr *t = arg;
    pin(t->cpu);
    pthread_barrier_wait(t->start);
    switch (t->d) {
    case D_SHARED: loop_D_SHARED(t); break;
    case D_LANE_RMW: loop_D_LANE_RMW(t); break;
    case D_LANE_SW: loop_D_LANE_SW(t); break;
    case D_LANE_SW_MF: loop_D_LANE_SW_MF(t); break;
    default: loop_D_PERCPU(t); break;
    }
    if (t->d == D_LANE_SW || t->d == D_LANE_SW_MF)
        atomic_store_explicit(&t->s->hdr->lanes[t->lane].tail, t->head, memory_order_release);
    return NULL;
}

/* ---- the consumer side: seqlock read of one slot ----------------------------- */
/* 0 with *out = the event at position p of the lane, -1 if the slot does not
 * hold p committed (or changed while being copied). */
static inline int read_slot(const struct seg *s, unsigned lane, uint64_t p, struct cbus_event *out)
{
    struct pslot *slot = &lane_slots(s, lane)[p & s->mask];
    /* ACQUIRE: pairs with the commit's release store. */
    if (atomic_load_explicit(&slot->seq, memory_order_acquire) != SEQ_COMMITTED(p))
        return -1;
    memcpy(out, &slot->ev, sizeof *out);
    /* ACQUIRE fence: the copy before the re-check (seqlock reader). */
    atomic_thread_fence(memory_order_acquire);
    return atomic_load_explicit(&slot->seq, memory_order_relaxed) == SEQ_COMMITTED(p) ? 0 : -1;
}

/* The timestamp of position p of a lane, UINT64_MAX when p is past end or
 * not committed. */
static inline uint64_t peek_ts(const struct seg *s, unsigned lane, uint64_t p, uint64_t end)
{
    if (p >= end)
        return UINT64_MAX;
    struct pslot *slot = &lane_slots(s, lane)[p & s->mask];
    if (atomic_load_explicit(&slot->seq, memory_order_acquire) != SEQ_COMMITTED(p))
        return UINT64_MAX;
    uint64_t ts = slot->ev.ts_mono_ns;
    atomic_thread_fence(memory_order_acquire);
    return atomic_load_explicit(&slot->seq, memory_order_relaxed) == SEQ_COMMITTED(p) ? ts
                                                                                       : UINT64_MAX;
}

/* What a verifying reader remembers: per (lane, thread) the last seq seen,
 * per thread a bitmap of the seqs seen. */
struct tracker {
    unsigned threads;
    uint64_t events;            /* per thread */
    int64_t last[MAX_LANES][MAX_THREADS];
    uint8_t *seen[MAX_THREADS];
    uint64_t count;
    uint64_t late;              /* positions holding an older lap (shared rings, wrapped) */
};

static int tracker_init(struct tracker *k, unsigned threads, uint64_t events)
{
    memset(k, 0, sizeof *k);
    k->threads = threads;
    k->events = events;
    for (unsigned l = 0; l < MAX_LANES; l++)
        for (unsigned i = 0; i < MAX_THREADS; i++)
            k->last[l][i] = -1;
    for (unsigned i = 0; i < threads; i++)
        if (!(k->seen[i] = calloc((events + 7) / 8, 1)))
            return -1;
    return 0;
}

static void tracker_free(struct tracker *k)
{
    for (unsigned i = 0; i < k->threads; i++)
        free(k->seen[i]);
}

static int fail(const char *what, unsigned lane, uint64_t p, const char *cfg)
{
    fprintf(stderr, "cbus-bench-bus-lanes: CHECK FAILED (%s): %s at lane %u position %llu\n", cfg, what,
            lane, (unsigned long long)p);
    return -1;
}

/* Reads positions [from, to) of a lane and checks each event. */
static int check_range(const struct seg *s, unsigned lane, uint64_t from, uint64_t to,
                       struct tracker *k, int owned, int full, const char *cfg)
{
    struct cbus_event ev;
    for (uint64_t p = from; p < to; p++) {
        if (read_slot(s, lane, p, &ev)) {
            /* A ring several threads write (not a lane, and only once it has
             * wrapped) may hold an older lap here: a writer preempted between
             * its claim and its busy mark wrote over the newer event (the
             * lossy ring's known overwrite; lanes cannot have it). */
            uint64_t w = atomic_load(&lane_slots(s, lane)[p & s->mask].seq);
            if (!owned && !full && (w & 1) == 0 && w >= 2 && (w - 2) / 2 < p &&
                ((w - 2) / 2 & s->mask) == (p & s->mask)) {
                k->late++;
                continue;
            }
            return fail("slot not committed at its own position", lane, p, cfg);
        }
        if (ev.tid >= k->threads || ev.body_len >= k->events || ev.event_id != p ||
            ev.pid != lane)
            return fail("event fields wrong", lane, p, cfg);
        if (owned && (ev.tid != lane || ev.body_len != p))
            return fail("lane holds another thread's event, or seq != position", lane, p, cfg);
        uint32_t th = ev.tid, q = ev.body_len;
        if ((int64_t)q <= k->last[lane][th])
            return fail("a thread's events out of order within the lane", lane, p, cfg);
        k->last[lane][th] = q;
        if (k->seen[th][q / 8] & (1u << (q % 8)))
            return fail("an event seen twice", lane, p, cfg);
        k->seen[th][q / 8] |= (uint8_t)(1u << (q % 8));
        k->count++;
    }
    return 0;
}

/* After a run: every lane's last lap (all of it when full is set: nothing
 * wrapped) is checked; the claims must add up to threads x events. */
static int check_run(const struct seg *s, const struct thr *th, unsigned threads, uint64_t events,
                     int full, const char *cfg, uint64_t *late_out)
{
    struct tracker k;
    if (tracker_init(&k, threads, events))
        return -1;
    int rc = 0;
    uint64_t claimed = 0;
    int owned = th[0].d != D_SHARED && th[0].d != D_PERCPU;
    for (unsigned l = 0; l < s->nlanes && !rc; l++) {
        uint64_t head = atomic_load_explicit(&s->hdr->lanes[l].tail, memory_order_acquire);
        claimed += head;
        uint64_t from = head > s->lane_slots ? head - s->lane_slots : 0;
        if (full && from)
            rc = fail("verify pass wrapped", l, head, cfg);
        else
            rc = check_range(s, l, from, head, &k, owned, full, cfg);
    }
    uint64_t dropped = 0;
    for (unsigned i = 0; i < threads; i++)
        dropped += th[i].anomalies;
    if (!rc && dropped && (owned || full))
        rc = fail("a producer found a slot already at its lap", 0, dropped, cfg);
    if (late_out)
        *late_out = k.late + dropped;
    if (!rc && claimed != (uint64_t)threads * events)
        rc = fail("claimed positions != threads x events", 0, claimed, cfg);
    if (!rc && full && k.count != (uint64_t)threads * events)
        rc = fail("not every event read exactly once", 0, k.count, cfg);
    tracker_free(&k);
    return rc;
}

/* ---- one producer run ---------------------------------------------------------- */
struct cfg {
    enum design d;
    unsigned threads;
    int pinned;
    char label[48];
    /* results, one per run */
    int nruns;
    double med[MAX_RUNS], p99[MAX_RUNS], mev[MAX_RUNS];
    uint64_t retries, migrated;
    uint64_t late;              /* events lost to a lapped slow writer (shared rings) */
};

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double quantile(double *v, size_t n, double p)
{
    if (!n)
        return 0;
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}

static double median(const double *v, int n)
{
    double w[MAX_RUNS];
    memcpy(w, v, (size_t)n * sizeof *w);
    qsort(w, (size_t)n, sizeof *w, cmp_double);
    return w[n / 2];
}

static unsigned ncpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (unsigned)n;
}

static unsigned lanes_for(enum design d, unsigned threads)
{
    if (d == D_SHARED)
        return 1;
    if (d == D_PERCPU) {
        unsigned n = ncpus();
        return n > MAX_LANES ? MAX_LANES : n;
    }
    return threads;
}

/* Runs one configuration once; full: a verify pass (events must fit). */
static int run_once(struct cfg *c, uint64_t events, uint64_t lane_slots_n,
                    const struct cbus_event *tmpl, int full)
{
    struct seg s;
    if (seg_open(&s, lanes_for(c->d, c->threads), lane_slots_n))
        return -1;
    struct thr *th = aligned_alloc(LINE, sizeof(struct thr) * MAX_THREADS);
    pthread_t tid[MAX_THREADS];
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, c->threads + 1);
    for (unsigned i = 0; i < c->threads; i++) {
        th[i] = (struct thr){.s = &s, .d = c->d, .idx = i, .cpu = c->pinned ? (int)i : -1,
                             .lane = i, .events = events, .tmpl = tmpl, .start = &start};
        th[i].nb = events / BENCH_BATCH;
        th[i].v = malloc(th[i].nb * sizeof(double));
        pthread_create(&tid[i], NULL, producer_main, &th[i]);
    }
    uint64_t t0 = mono_ns();
    pthread_barrier_wait(&start);
    for (unsigned i = 0; i < c->threads; i++)
        pthread_join(tid[i], NULL);
    uint64_t elapsed = mono_ns() - t0;
    pthread_barrier_destroy(&start);
    uint64_t late = 0;
    int rc = check_run(&s, th, c->threads, events, full, c->label, &late);
    c->late += late;
    if (!full && !rc && c->nruns < MAX_RUNS) {
        size_t total = 0;
        for (unsigned i = 0; i < c->threads; i++)
            total += th[i].nb;
        double *all = malloc(total * sizeof *all);
        size_t k = 0;
        for (unsigned i = 0; i < c->threads; i++) {
            memcpy(all + k, th[i].v, th[i].nb * sizeof *all);
            k += th[i].nb;
            c->retries += th[i].cas_retries;
            c->migrated += __builtin_popcountll(th[i].lanes_seen) > 1;
        }
        qsort(all, total, sizeof *all, cmp_double);
        c->med[c->nruns] = quantile(all, total, 0.5);
        c->p99[c->nruns] = quantile(all, total, 0.99);
        c->mev[c->nruns] = (double)(events * c->threads) / ((double)elapsed / 1e3);
        c->nruns++;
        free(all);
    }
    for (unsigned i = 0; i < c->threads; i++)
        free(th[i].v);
    free(th);
    seg_close(&s);
    return rc;
}

/* ---- drain: one consumer over N lanes ------------------------------------------ */
struct drain {
    unsigned lanes;
    int merge;
    int nruns;
    double mev[MAX_RUNS];
};

/* Fills each lane with per_lane events, round-robin one event per lane so the
 * timestamps interleave as concurrent producers' would (thread = lane). */
static void fill_lanes(struct seg *s, uint64_t per_lane, const struct cbus_event *tmpl)
{
    struct thr t[MAX_LANES];
    uint32_t seq[MAX_LANES] = {0};
    for (unsigned l = 0; l < s->nlanes; l++) {
        t[l] = (struct thr){.s = s, .d = D_LANE_SW, .idx = l, .lane = l, .tmpl = tmpl};
        atomic_store(&s->hdr->lanes[l].tail, 0);
    }
    for (uint64_t i = 0; i < per_lane; i++)
        for (unsigned l = 0; l < s->nlanes; l++)
            emit(&t[l], D_LANE_SW, seq[l]++);
    /* A new round starts at position 0 again: slots from the last round hold
     * committed words for the same positions, which is what a reader must
     * accept; the fill rewrote every one of them. */
}

static int drain_once(struct drain *dr, uint64_t total, uint64_t lane_slots_n,
                      const struct cbus_event *tmpl, int rounds)
{
    uint64_t per_lane = total / dr->lanes;
    struct seg s;
    if (seg_open(&s, dr->lanes, lane_slots_n))
        return -1;
    static struct cbus_event buf[256];
    uint64_t read = 0, ns = 0;
    int rc = 0;
    char cfg[48];
    snprintf(cfg, sizeof cfg, "drain %u lanes %s", dr->lanes, dr->merge ? "merge" : "sweep");
    for (int r = 0; r < rounds && !rc; r++) {
        fill_lanes(&s, per_lane, tmpl);
        uint64_t cur[MAX_LANES] = {0};
        uint64_t t0 = mono_ns();
        if (!dr->merge) {
            /* sweep: up to a batch from each lane in turn, until all are empty */
            for (int busy = 1; busy && !rc;) {
                busy = 0;
                for (unsigned l = 0; l < dr->lanes; l++) {
                    int n = 0;
                    while (n < 256 && cur[l] < per_lane && !read_slot(&s, l, cur[l], &buf[n])) {
                        if (buf[n].body_len != cur[l] || buf[n].tid != l) {
                            rc = fail("drained event out of order", l, cur[l], cfg);
                            break;
                        }
                        cur[l]++, n++;
                    }
                    read += (uint64_t)n;
                    busy |= n > 0;
                }
            }
        } else {
            /* merge: the lane whose next event is oldest, one event at a time.
             * The next timestamp of each lane is peeked (a seqlock read of one
             * field), the event itself copied once, as a merging poll would. */
            uint64_t next_ts[MAX_LANES];
            for (unsigned l = 0; l < dr->lanes; l++)
                next_ts[l] = peek_ts(&s, l, 0, per_lane);
            for (int n = 0; !rc;) {
                unsigned best = 0;
                for (unsigned l = 1; l < dr->lanes; l++)
                    if (next_ts[l] < next_ts[best])
                        best = l;
                if (next_ts[best] == UINT64_MAX)
                    break;
                if (read_slot(&s, best, cur[best], &buf[n]) || buf[n].body_len != cur[best]) {
                    rc = fail("merged event missing or out of order", best, cur[best], cfg);
                    break;
                }
                cur[best]++;
                read++;
                next_ts[best] = peek_ts(&s, best, cur[best], per_lane);
                n = (n + 1) & 255;
            }
        }
        ns += mono_ns() - t0;
        for (unsigned l = 0; l < dr->lanes && !rc; l++)
            if (cur[l] != per_lane)
                rc = fail("a lane not drained to its end", l, cur[l], cfg);
    }
    if (!rc && read != per_lane * dr->lanes * (uint64_t)rounds)
        rc = fail("drained count != filled", 0, read, cfg);
    if (!rc && dr->nruns < MAX_RUNS)
        dr->mev[dr->nruns++] = (double)read / ((double)ns / 1e3);
    seg_close(&s);
    return rc;
}

/* ---- main ------------------------------------------------------------------------ */
static void fill_template(struct cbus_event *ev)
{
    memset(ev, 0, sizeof *ev);
    ev->kind = CBUS_EV_LLM_END;
    snprintf(ev->provider, sizeof ev->provider, "openai");
    snprintf(ev->model, sizeof ev->model, "gpt-4o-2024-08-06");
    snprintf(ev->user, sizeof ev->user, "user-1234");
    snprintf(ev->session, sizeof ev->session, "sess-0123456789abcdef0123456789");
    snprintf(ev->request_id, sizeof ev->request_id, "req-42");
    snprintf(ev->preview, sizeof ev->preview, "The capital of France is Paris.");
    for (int i = 0; i < 16; i++)
        ev->run_id[i] = ev->trace_id[i] = (uint8_t)(i * 17 + 1);
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *e;
    errno = 0;
    unsigned long long v = strtoull(s, &e, 10);
    if (errno || e == s || *e || s[0] == '-')
        return -1;
    *out = v;
    return 0;
}

static void usage(void)
{
    fprintf(stderr, "usage: cbus-bench-bus-lanes [--events N] [--runs R] [--lane-slots S] "
                    "[--drain-events N] [--csv FILE] [--smoke]\n");
}

int main(int argc, char **argv)
{
    uint64_t events = 1000000, runs = 5, lane_slots_n = 16384, drain_events = 65536;
    uint64_t drain_rounds = 8;
    const char *csv = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t x;
        if (!strcmp(a, "--smoke")) {
            events = 4096, runs = 1, lane_slots_n = 1024, drain_events = 4096, drain_rounds = 2;
            continue;
        }
        if (!v) {
            usage();
            return 2;
        }
        i++;
        if (!strcmp(a, "--csv"))
            csv = v;
        else if (!strcmp(a, "--events") && !parse_u64(v, &x) && x >= 1024 && x <= 100000000)
            events = x;
        else if (!strcmp(a, "--runs") && !parse_u64(v, &x) && x >= 1 && x <= MAX_RUNS)
            runs = x;
        else if (!strcmp(a, "--lane-slots") && !parse_u64(v, &x) && x >= 256 && x <= (1u << 20) &&
                 !(x & (x - 1)))
            lane_slots_n = x;
        else if (!strcmp(a, "--drain-events") && !parse_u64(v, &x) && x >= 1024 && x <= 1u << 20)
            drain_events = x;
        else {
            fprintf(stderr, "cbus-bench-bus-lanes: bad option %s %s (--events 1024..1e8, --runs 1..%d, "
                            "--lane-slots a power of two 256..2^20, --drain-events 1024..2^20)\n",
                    a, v, MAX_RUNS);
            usage();
            return 2;
        }
    }
    events -= events % BENCH_BATCH;
    clock_calibrate();
    struct cbus_event tmpl;
    fill_template(&tmpl);

    static struct cfg cfgs[D__COUNT * 2 * 2];
    int nc = 0;
    for (int pinned = 1; pinned >= 0; pinned--)
        for (unsigned threads = 1; threads <= 2; threads++)
            for (int d = 0; d < D__COUNT; d++) {
                struct cfg *c = &cfgs[nc++];
                *c = (struct cfg){.d = (enum design)d, .threads = threads, .pinned = pinned};
                snprintf(c->label, sizeof c->label, "%s %ut %s", design_name[d], threads,
                         pinned ? "pinned" : "unpinned");
            }

    /* Verify passes: every event fits, every one is read back. */
    for (int i = 0; i < nc; i++) {
        uint64_t fit = cfgs[i].d == D_SHARED ? lane_slots_n / cfgs[i].threads : lane_slots_n;
        if (cfgs[i].d == D_PERCPU)
            fit = lane_slots_n / cfgs[i].threads; /* all may land on one CPU's lane */
        fit -= fit % BENCH_BATCH;
        if (run_once(&cfgs[i], fit, lane_slots_n, &tmpl, 1))
            return 1;
    }
    fprintf(stderr, "cbus-bench-bus-lanes: verify passes ok (%d configurations, every event read once, "
                    "in per-thread order)\n", nc);

    struct drain drains[8];
    int nd = 0;
    for (int merge = 0; merge <= 1; merge++)
        for (unsigned l = 1; l <= 8; l *= 2)
            drains[nd++] = (struct drain){.lanes = l, .merge = merge};
    uint64_t drain_slots = 1;
    while (drain_slots < drain_events)
        drain_slots <<= 1;

    for (uint64_t r = 0; r < runs; r++) {
        for (int i = 0; i < nc; i++)
            if (run_once(&cfgs[i], events, lane_slots_n, &tmpl, 0))
                return 1;
        for (int i = 0; i < nd; i++) {
            pin(0);
            if (drain_once(&drains[i], drain_events, drain_slots / drains[i].lanes, &tmpl,
                           (int)drain_rounds))
                return 1;
        }
        /* back to any CPU for the unpinned rows of the next run */
        cpu_set_t all;
        CPU_ZERO(&all);
        for (unsigned c = 0; c < ncpus(); c++)
            CPU_SET(c, &all);
        sched_setaffinity(0, sizeof all, &all);
        fprintf(stderr, "cbus-bench-bus-lanes: run %llu of %llu done\n", (unsigned long long)r + 1,
                (unsigned long long)runs);
    }

    FILE *cf = csv ? fopen(csv, "w") : NULL;
    if (csv && !cf) {
        fprintf(stderr, "cbus-bench-bus-lanes: %s: %s\n", csv, strerror(errno));
        return 1;
    }
    if (cf)
        fprintf(cf, "design,threads,placement,runs,median_ns,p99_ns,mevents_per_s,"
                    "x_1thread_ns,x_1thread_rate,x_shared_ns\n");
    printf("cbus-bench-bus-lanes: %llu runs, %llu events per thread per run, %llu slots (%llu KiB) per "
           "lane, %u CPUs\n",
           (unsigned long long)runs, (unsigned long long)events, (unsigned long long)lane_slots_n,
           (unsigned long long)(lane_slots_n * CBUS_SLOT_SIZE / 1024), ncpus());
    printf("ns/event: per thread, median of the runs' medians (batches of %d); Mev/s: all "
           "threads' events over the wall time\n\n",
           BENCH_BATCH);
    printf("%-11s %-38s %2s %-8s %8s %8s %8s %7s %7s %7s\n", "design", "claim", "th", "placing",
           "ns/ev", "p99", "Mev/s", "x1t ns", "x1t ev", "xshared");
    for (int i = 0; i < nc; i++) {
        const struct cfg *c = &cfgs[i];
        const struct cfg *one = NULL, *base = NULL;
        for (int j = 0; j < nc; j++) {
            if (cfgs[j].d == c->d && cfgs[j].pinned == c->pinned && cfgs[j].threads == 1)
                one = &cfgs[j];
            if (cfgs[j].d == D_SHARED && cfgs[j].pinned == c->pinned &&
                cfgs[j].threads == c->threads)
                base = &cfgs[j];
        }
        double m = median(c->med, c->nruns), p = median(c->p99, c->nruns),
               e = median(c->mev, c->nruns);
        double m1 = median(one->med, one->nruns), e1 = median(one->mev, one->nruns),
               mb = median(base->med, base->nruns);
        printf("%-11s %-38s %2u %-8s %8.1f %8.1f %8.2f %7.2f %7.2f %7.2f", design_name[c->d],
               design_what[c->d], c->threads, c->pinned ? "pinned" : "unpinned", m, p, e, m / m1,
               e / e1, m / mb);
        if (c->d == D_PERCPU && (c->retries || c->migrated))
            printf("  (CAS retries %llu, threads on >1 lane %llu)",
                   (unsigned long long)c->retries, (unsigned long long)c->migrated);
        if (c->late)
            printf("  (%llu events lost to a lapped slow writer)", (unsigned long long)c->late);
        printf("\n");
        if (cf)
            fprintf(cf, "%s,%u,%s,%d,%.2f,%.2f,%.3f,%.3f,%.3f,%.3f\n", design_name[c->d],
                    c->threads, c->pinned ? "pinned" : "unpinned", c->nruns, m, p, e, m / m1,
                    e / e1, m / mb);
    }
    printf("\nissue 13 targets, 2 threads pinned: each <= 1.25 x its 1-thread ns, >= 1.6 x its "
           "events/s\n");
    for (int i = 0; i < nc; i++) {
        const struct cfg *c = &cfgs[i];
        if (c->threads != 2 || !c->pinned)
            continue;
        const struct cfg *one = c - D__COUNT;
        double xn = median(c->med, c->nruns) / median(one->med, one->nruns);
        double xe = median(c->mev, c->nruns) / median(one->mev, one->nruns);
        printf("  %-11s ns x%.2f %s, events/s x%.2f %s\n", design_name[c->d], xn,
               xn <= 1.25 ? "met" : "MISSED", xe, xe >= 1.6 ? "met" : "MISSED");
    }
    printf("\ndrain: one consumer, %llu events over N lanes, %llu rounds per run, Mevents/s "
           "(median)\n",
           (unsigned long long)drain_events, (unsigned long long)drain_rounds);
    for (int i = 0; i < nd; i++) {
        const struct drain *d = &drains[i];
        double e = median(d->mev, d->nruns), e1 = median(drains[d->merge ? 4 : 0].mev,
                                                         drains[d->merge ? 4 : 0].nruns);
        printf("  %-5s %u lane%s %8.2f  x%.2f of 1 lane\n", d->merge ? "merge" : "sweep",
               d->lanes, d->lanes > 1 ? "s" : " ", e, e / e1);
        if (cf)
            fprintf(cf, "drain-%s,%u,lanes,%d,,,%.3f,,%.3f,\n", d->merge ? "merge" : "sweep",
                    d->lanes, d->nruns, e, e / e1);
    }
    if (cf)
        fclose(cf);
    return 0;
}
