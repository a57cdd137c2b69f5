/* Producer internals shared by producer.c, emit.c, ctx.c, ids.c and admit.c. */
#ifndef CBUS_PRODUCER_INTERNAL_H
#define CBUS_PRODUCER_INTERNAL_H

#include "../bus/internal.h"

struct cbus_producer {
    cbus_bus *bus;
    cbus_producer *live_next;        /* the open producers (producer.c), for thread exit */
    int owns_bus;
    unsigned flags;                  /* CBUS_PRODUCER_* */
    uint32_t pid;
    uint64_t start_time;             /* our process's, for lane ownership */
    uint64_t generation;             /* process-unique: keys the thread-local state */
    /* copies of bus fields the emit path reads, to stay on one line */
    struct cbus_shm_header *hdr;
    struct cbus_slot *slots;
    uint64_t mask;
    uint64_t capacity;
    const _Atomic uint32_t *broken;  /* the bus's guard word (bus/guard.c) */
    struct cbus_producer_entry *entry; /* NULL when the table was full */
    _Atomic uint64_t lanes_held;     /* bit L: a thread of ours took lane L (close gives them back) */
    _Alignas(64) _Atomic uint64_t emitted;  /* flushed from threads every 256 */
    _Atomic uint64_t dropped;
    _Atomic uint64_t waited_ns;
    _Atomic uint64_t max_wait_ns;
};

/* Per-thread state for the producer a thread last used: counters are kept
 * here and flushed every 256 emits so the emit path does no shared RMW
 * besides the claim itself.  A thread that alternates between producers
 * loses at most 255 unflushed counts of "emitted" per switch (never of
 * "dropped", which is exact).  A thread that exits flushes what it holds
 * (a pthread key destructor), so pool threads and workers count exactly. */
struct cbus__producer_tls {
    uint64_t generation;
    uint64_t pending;
    /* this thread's ids, read once at its first emit (and again after a
     * fork: the child's thread starts over), so the emit path makes no call */
    uint32_t pid, tid;
    /* the lane this thread claims in: owned (nobody else's threads claim
     * there) or, with more threads than lanes, shared */
    _Atomic uint64_t *tail;
    struct cbus_slot *slots;
    uint32_t lane;
    int lane_owned;
    uint64_t gate_epoch;
    uint64_t gate_min;
    uint64_t gate_kinds;  /* union of the tethered consumers' kinds, with gate_min */
    uint64_t stuck_min;
    int gate_valid;
    int stuck_valid;
    int exit_armed;   /* the thread-exit flush is registered (kept across producers) */
};
extern CBUS__TLS struct cbus__producer_tls cbus__ptls;

/* admit.c: retries spent on torn admission entries by this thread (tests). */
extern CBUS__TLS uint64_t cbus__admit_torn_retries;

/* A thread's first emit with p: resets t for p, takes a lane and, once per
 * thread, arms the thread-exit flush (which gives the lane back). */
/* An emit with a body of messages (JSON) and text, for calls outside emit.c
 * (conversation.c).  The codes of every emit. */
int cbus__emit_body(cbus_producer *p, cbus_ctx *ctx, unsigned kind, const char *name,
                    const char *preview, size_t preview_len, const char *messages,
                    size_t messages_len, const char *text, size_t text_len);
void cbus__producer_thread_start(cbus_producer *p, struct cbus__producer_tls *t);
void cbus__producer_flush(cbus_producer *p, struct cbus__producer_tls *t);
int cbus__producer_drop(cbus_producer *p);
int cbus__claim_gated(cbus_producer *p, struct cbus__producer_tls *t, uint64_t gate,
                      uint64_t now, unsigned kind, uint64_t n, uint64_t *pos);

/* emit.c and ctx.c: bounded copy into a zero-filled field (the template's): never reads past
 * len, always leaves a NUL, flags the cut. */
static inline void cbus__put_str(char *dst, size_t cap, const char *src, size_t len,
                                 uint16_t *flags, uint16_t trunc_flag)
{
    if (len >= cap) {
        len = cap - 1;
        *flags |= trunc_flag;
        /* do not leave half a UTF-8 sequence at the cut */
        while (len > 0 && ((unsigned char)src[len] & 0xc0) == 0x80)
            len--;
    }
    memcpy(dst, src, len);
    dst[len] = '\0';
}

static inline size_t cbus__bounded_strlen(const char *s, size_t cap)
{
    /* One past the field is enough to know it must be cut. */
    return strnlen(s, cap);
}

#endif
