/* Internals shared by bus/ and producer/ (never installed). */
#ifndef CBUS_BUS_INTERNAL_H
#define CBUS_BUS_INTERNAL_H

#include <cbus/admit.h>
#include <cbus/bus.h>
#include <cbus/consumer.h>
#include <cbus/producer.h>

#include <errno.h>
#include <string.h>
#include <time.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cbus__cpu_relax() _mm_pause()
#else
#define cbus__cpu_relax() ((void)0)
#endif

/* Thread-locals on the emit path use the initial-exec model: one
 * %fs-relative load instead of a __tls_get_addr call in libcbus.so.  They
 * total under 128 bytes, well inside glibc's surplus for dlopen'ed
 * libraries (Python ctypes, Node FFI). */
#ifdef CBUS_TLS_DEFAULT_MODEL
/* UBSan builds (set by CMakeLists.txt): GCC 12 tests -fsanitize=null's
 * "&tls_var == NULL" on the flags of the initial-exec
 * `addq x@gottpoff(%rip), %reg`, but when a program links the library
 * statically the linker must rewrite that add as `leaq x@tpoff(%reg), %reg`
 * (IE->LE relaxation), which sets no flags: the check reads stale flags and
 * reports a null pointer on every emit.  The default model's sequence ends in
 * a call, after which GCC tests the pointer itself. */
#define CBUS__TLS _Thread_local
#else
#define CBUS__TLS _Thread_local __attribute__((tls_model("initial-exec")))
#endif

#define CBUS__LIKELY(x)   __builtin_expect(!!(x), 1)
#define CBUS__UNLIKELY(x) __builtin_expect(!!(x), 0)

static inline int cbus__sys(int r)
{
    return r < 0 ? -errno : r;
}

/* TSC -> ns conversion, anchored per thread (see clock.c). */
struct cbus__clock {
    uint32_t source;   /* CBUS_CLOCK_* */
    uint32_t shift;
    uint64_t mult;
    uint64_t hz;
};

struct cbus_bus {
    void *base;
    size_t len;
    int fd;                     /* -1 for caller-provided memory */
    int owns_mapping;
    int readonly;
    char name[CBUS_NAME_MAX];
    struct cbus_shm_header *hdr;
    struct cbus_slot *slots;
    uint64_t capacity;          /* all lanes' slots */
    /* lanes: lane L is lane_cap slots from slots + L * lane_cap, claimed on
     * *tails[L]; mask is lane_cap - 1.  One lane: the whole ring, hdr->tail. */
    uint64_t mask;
    uint64_t lane_cap;
    uint32_t body_limit;          /* hdr->body_limit, validated */
    uint32_t lane_count;
    unsigned lane_shift;        /* log2(lane_count) */
    struct cbus_lane *lanes;    /* NULL with one lane */
    struct cbus_lane_cursors *lane_cursors;
    _Atomic uint64_t *tails[CBUS_MAX_LANES];
    struct cbus_consumer_entry *consumers;
    struct cbus_producer_entry *producers;
    struct cbus_admit_writer *awriters;
    struct cbus_admit_entry *aentries;
    uint32_t amask;
    struct cbus__clock clock;
    /* policy copied out of the header once validated */
    uint64_t lossless_wait_ns;
    uint64_t stall_timeout_ns;
    uint64_t abandon_timeout_ns;
    uint64_t admit_stale_ns;
    /* guard.c: set (process-local) when the segment was truncated under us
     * and its pages were replaced by zeros; never NULL once validated. */
    const _Atomic uint32_t *broken;
    int guard_slot;             /* -1: not guarded */
    /* what cbus_bus_check() compares the name against */
    uint64_t bus_id;
    dev_t dev;
    ino_t ino;
};

/* Lane positions stay below this: 2^56 claims is 2.2 years at 10^9 a second
 * in one lane (about 100 years at the 20 M/s a thread emits), 2p + 2 (the
 * commit word of position p) cannot wrap, and neither can the event id
 * p * lane_count + lane with 64 lanes.  A tail at or past it is corrupt (see
 * tail.c). */
#define CBUS__POS_LIMIT (UINT64_C(1) << 56)

/* Linear probes of the admission table: the writer (bus/admit.c) never
 * places a key further than this, so the reader (producer/admit.c) stops. */
#define CBUS__ADMIT_MAX_PROBE 32

/* ---- lanes ---- */
static inline struct cbus_slot *cbus__lane_slots(const cbus_bus *bus, unsigned lane)
{
    return bus->slots + (uint64_t)lane * bus->lane_cap;
}

/* Consumer i's committed cursor and read position words in a lane. */
static inline _Atomic uint64_t *cbus__cursor_word(const cbus_bus *bus, unsigned i, unsigned lane)
{
    return lane == 0 ? &bus->consumers[i].cursor : &bus->lane_cursors[i].cursor[lane];
}

static inline _Atomic uint64_t *cbus__read_pos_word(const cbus_bus *bus, unsigned i, unsigned lane)
{
    return lane == 0 ? &bus->consumers[i].read_pos : &bus->lane_cursors[i].read_pos[lane];
}

/* Event ids are unique per bus: lane position * lane_count + lane. */
static inline uint64_t cbus__event_id(const cbus_bus *bus, unsigned lane, uint64_t pos)
{
    return (pos << bus->lane_shift) | lane;
}

/* ---- shm.c ---- */
uint32_t cbus__body_limit_for(uint32_t asked, uint64_t lane_cap);

/* ---- tail.c ---- */
/* Puts a lane's corrupt tail (moved back, or >= CBUS__POS_LIMIT) back to one past
 * the highest position the ring shows was reached (slots, consumers' read
 * positions, floor) and returns that position.  Slow: one pass over the
 * slots; for the corruption path only. */
uint64_t cbus__tail_repair(cbus_bus *bus, unsigned lane, uint64_t floor);

/* ---- clock.c ---- */
int cbus__clock_calibrate(struct cbus_shm_header *hdr);
void cbus__clock_load(struct cbus__clock *clk, const struct cbus_shm_header *hdr);
/* Per-thread clock anchor: (tsc, mono) sampled together, valid for one
 * clock (mult) for up to a second of ticks; last keeps a thread's time from
 * going backwards. */
struct cbus__anchor {
    uint64_t mult;
    uint64_t tsc;
    uint64_t mono;
    uint64_t real_minus_mono;
    uint64_t last;
};
extern CBUS__TLS struct cbus__anchor cbus__tl_anchor;
uint64_t cbus__clock_slow(const struct cbus__clock *clk, uint64_t *real);

/* Monotonic ns on the bus clock (TSC when calibrated); *real gets realtime.
 * Inline: on the emit path this is an rdtsc, a multiply and a few loads of
 * the thread's anchor; anything else (clock_gettime clocks, the first call,
 * re-anchoring every second) is cbus__clock_slow in clock.c. */
static inline uint64_t cbus__clock_now(const struct cbus__clock *clk, uint64_t *real)
{
#if defined(__x86_64__)
    struct cbus__anchor *a = &cbus__tl_anchor;
    if (CBUS__LIKELY(clk->source == CBUS_CLOCK_TSC && a->mult == clk->mult)) {
        uint64_t dt = __builtin_ia32_rdtsc() - a->tsc;
        if (CBUS__LIKELY(dt <= clk->hz)) {
            __extension__ typedef unsigned __int128 u128;
            uint64_t ns = a->mono + (uint64_t)(((u128)dt * clk->mult) >> 32);
            if (CBUS__UNLIKELY(ns < a->last))
                ns = a->last;
            a->last = ns;
            *real = ns + a->real_minus_mono;
            return ns;
        }
    }
#endif
    return cbus__clock_slow(clk, real);
}
uint64_t cbus__mono_ns(void);
uint64_t cbus__real_ns(void);

/* ---- proc.c ---- */
uint64_t cbus__pid_start_time(int pid);  /* 0 if unknown/dead */
int cbus__pid_alive(uint32_t pid, uint64_t start_time); /* 1 alive, 0 dead */
uint32_t cbus__gettid(void);   /* cached per thread */
void cbus__proc_after_fork(void); /* in a fork child: forget the parent thread's tid */
int cbus__futex_wait(_Atomic uint32_t *addr, uint32_t val, uint64_t timeout_ns);
int cbus__futex_wake(_Atomic uint32_t *addr);

/* ---- guard.c ---- */
/* Registers a segment mapping with the SIGBUS guard (installing it on first
 * use).  *broken gets the mapping's broken word (a never-set word when the
 * mapping cannot be guarded).  Returns the slot, or -1 (unguarded). */
int cbus__guard_register(void *base, size_t len, const _Atomic uint32_t **broken);
void cbus__guard_unregister(int slot);
uint64_t cbus__guard_fired(void);

/* ---- shm.c ---- */
int cbus__bus_validate(cbus_bus *bus, size_t file_len);
int cbus__shm_path(char *out, size_t len, const char *name);

/* ---- gate.c: the gate (tethered lossless consumers) ---- */
void cbus__consumer_untether(cbus_bus *bus, struct cbus_consumer_entry *e);
int cbus__consumer_tether(cbus_bus *bus, struct cbus_consumer_entry *e);

/* Copy an event out of a slot.  Under ThreadSanitizer the copy is done with
 * relaxed atomic word loads: a lapped seqlock read races with the writer by
 * design (the re-check of seq discards it), and C11 only makes that race
 * defined when both sides are atomic (Boehm, "Can seqlocks get along with
 * programming language memory models?").  Elsewhere memcpy, which compiles to
 * the same loads without the per-word overhead. */
#if defined(__SANITIZE_THREAD__)
#define CBUS__TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CBUS__TSAN 1
#endif
#endif

static inline void cbus__slot_read(struct cbus_event *dst, const struct cbus_event *src)
{
#ifdef CBUS__TSAN
    _Static_assert(sizeof *dst % 8 == 0, "event size multiple of 8");
    uint64_t *d = (uint64_t *)dst;
    _Atomic uint64_t *s = (_Atomic uint64_t *)(uintptr_t)src;
    for (size_t i = 0; i < sizeof *dst / 8; i++)
        d[i] = atomic_load_explicit(&s[i], memory_order_relaxed);
#else
    memcpy(dst, src, sizeof *dst);
#endif
}

static inline void cbus__slot_write(struct cbus_event *dst, const struct cbus_event *src)
{
#ifdef CBUS__TSAN
    const uint64_t *s = (const uint64_t *)src;
    _Atomic uint64_t *d = (_Atomic uint64_t *)(uintptr_t)dst;
    for (size_t i = 0; i < sizeof *dst / 8; i++)
        atomic_store_explicit(&d[i], s[i], memory_order_relaxed);
#else
    memcpy(dst, src, sizeof *dst);
#endif
}

#endif
