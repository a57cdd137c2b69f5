/* cbus-soak: shared definitions.
 *
 * The soak's processes (the orchestrator with its producer threads, the
 * producer processes, the verifying consumers) share one state file mapped
 * MAP_SHARED.  Every record a process may be SIGKILLed in the middle of
 * writing is laid out so that a kill at any instruction leaves it
 * consistent: producers publish a count after each committed event, and a
 * verifier commits each batch through a double-buffered global record plus a
 * redo journal (see verifier.c).
 */
#ifndef CBUS_SOAK_H
#define CBUS_SOAK_H

#include <stdatomic.h>
#include <stdint.h>

#include <cbus/cbus.h>

#define SOAK_MAGIC     UINT64_C(0x31534b414f534243) /* "CBSOAKS1" */
#define SOAK_MAX_PROD  4096 /* producer instances over a run (each restart is a new one) */
#define SOAK_MAX_VER   4    /* verifying consumers */
#define SOAK_BATCH     64   /* events per verifier batch (and journal entries) */
#define SOAK_MAX_BAD   4096 /* bad-proof positions a verifier records */
#define SOAK_MAX_EPOCH 256  /* bus incarnations over a run (re-creations, truncations) */

/* Token fields summed for the cost check, in this order. */
enum { SOAK_TOK_INPUT, SOAK_TOK_OUTPUT, SOAK_TOK_CACHE_READ, SOAK_TOK_CACHE_CREATION,
       SOAK_TOK_REASONING, SOAK_TOK__COUNT };

/* How many emits held past bound + margin a producer keeps with their
 * windows (held.h). */
#define SOAK_HELD_LONG_MAX 8

/* One producer instance (a thread, or one life of a producer process). */
struct soak_prod {
    /* Sequence numbers 0..committed-1 were committed (emit returned 0).  A
     * process killed inside an emit may have committed `committed` as well;
     * the verifiers' observations settle it (main.c). */
    _Atomic uint64_t committed;
    _Atomic uint64_t dropped;      /* emits refused with -EAGAIN */
    _Atomic uint64_t max_wait_ns;  /* cbus_producer_stats().max_wait_ns, published */
    /* Emits slower than the bound on the wall clock, as the held meter saw
     * them (held.c): the longest wall time, the longest time held (run-queue
     * waits excluded), the summed overrun past bound + slack, and how many
     * had no schedstat reading.  Published after each such emit. */
    _Atomic uint64_t slow_emits, max_emit_wall_ns, max_held_ns, held_overrun_ns, held_unmeasured;
    /* The first emits held past bound + margin, with their windows (held.h;
     * max_held_ns is the longest of the others).  An entry is written before
     * n_long counts it, and before max_held_ns. */
    struct {
        _Atomic uint64_t start_ns, end_ns, held_ns, host_ns;
    } longs[SOAK_HELD_LONG_MAX];
    _Atomic uint32_t n_long;
    _Atomic uint64_t llm_ends;     /* committed llm_end events (threads only) */
    _Atomic uint64_t tok[SOAK_TOK__COUNT];
    _Atomic uint32_t used;
    _Atomic uint32_t is_process;
    _Atomic uint32_t exited;       /* finished cleanly */
    _Atomic uint32_t epoch;        /* the bus incarnation it emitted into */
};

/* A verifier's view of one producer: next sequence it expects, how many
 * distinct sequences it saw, and 1 + the ring position of the last one (to
 * recognise a redelivery after a restart). */
struct soak_vrec {
    uint64_t next_seq;
    uint64_t seen;
    uint64_t last_pos1;
};

/* A verifier's totals, valid as a whole (double-buffered). */
struct soak_vglobal {
    uint64_t batch_id;
    uint64_t applied_pos;  /* every position below was accounted for (summed over lanes) */
    uint64_t consumed;     /* library counters, summed over lifetimes */
    uint64_t lost;
    uint64_t abandoned;
    uint64_t untethered;   /* times the bus cut it loose (>= exact: may double count) */
    uint64_t redelivered;  /* events seen again after a restart and skipped */
    uint64_t lifetimes;
    uint64_t bad;          /* consumed events whose proof did not check (bad_pos[0..bad)),
                              over all epochs */
    uint64_t epoch;        /* the bus incarnation these totals are for */
    uint64_t lane_pos[CBUS_MAX_LANES]; /* applied_pos per lane (what it resumes from) */
};

struct soak_journal_entry {
    uint32_t prod;
    uint32_t target;       /* which[prod] after the batch */
};

struct soak_verifier {
    _Atomic uint32_t gw;                  /* which g[] is current */
    _Atomic uint32_t jstate;              /* 1: batch jbatch is committing */
    uint32_t lossless;
    uint32_t jn;
    uint64_t jbatch;
    struct soak_vglobal g[2];
    struct soak_journal_entry je[SOAK_BATCH];
    _Atomic uint64_t bad_proof;           /* events whose proof did not check (all lives) */
    _Atomic uint64_t dup;                 /* sequence at or below one already seen */
    _Atomic uint64_t progress_ns;         /* monotonic time of the last batch */
    _Atomic uint32_t attached;            /* this lifetime is attached */
    _Atomic uint32_t attached_epoch;      /* 1 + the epoch it is attached in, 0: none */
    /* Totals of each finished epoch (copied from g before g moves on). */
    struct soak_vglobal hist[SOAK_MAX_EPOCH];
    /* Until then the verifier reads slowly (but heartbeats): the ring fills
     * and producers meet the lossless wait bound on a live consumer. */
    _Atomic uint64_t slow_until_ns;
    char first_violation[192];
    /* Positions of the events counted in g.bad: each must be one whose slot
     * bytes the soak itself wrote (faults.c). */
    uint64_t bad_pos[SOAK_MAX_BAD];
    _Atomic uint8_t which[SOAK_MAX_PROD]; /* current rec[p][] */
    struct soak_vrec rec[SOAK_MAX_PROD][2];
};

/* Bus incarnations: the orchestrator re-creates (or truncates and
 * re-creates) the bus; epoch counts incarnations.  Before it bumps epoch it
 * sets epoch_state[old] (1: re-created, epoch_tail[old] is the final tail;
 * 2: truncated, the final tail died with the segment). */
struct soak_shared {
    uint64_t magic;
    _Atomic uint32_t stop;                /* producers: finish and exit */
    uint32_t nver;
    _Atomic uint32_t epoch;
    _Atomic uint32_t next_instance;       /* next free prod[] index */
    _Atomic uint32_t pause_threads, pause_procs; /* producers: park between events */
    _Atomic uint32_t parked_threads, parked_procs;
    _Atomic uint32_t epoch_state[SOAK_MAX_EPOCH];
    _Atomic uint64_t epoch_tail[SOAK_MAX_EPOCH];
    uint64_t wait_bound_ns;               /* the lossless wait bound invariant 6 checks */
    uint64_t held_slack_ns;               /* held past bound + this is an overrun */
    uint64_t held_long_ns;                /* held past this (bound + margin): kept with its window */
    uint32_t lanes;                       /* every incarnation of the bus has this many */
    struct soak_prod prod[SOAK_MAX_PROD];
    struct soak_verifier ver[SOAK_MAX_VER];
};

/* state.c */
int soak_state_create(const char *path, struct soak_shared **out);
int soak_state_open(const char *path, struct soak_shared **out);
void soak_state_close(struct soak_shared *s);
uint64_t soak_now_ns(void);
void soak_sleep_ns(uint64_t ns);

/* proof.c: the sequence proof carried in request_id. */
#define SOAK_PROOF_PREFIX "soak:"
void soak_proof_format(char *out, size_t len, uint32_t prod, uint64_t seq, unsigned kind,
                       const struct cbus_usage *usage);
/* Returns 0 and fills prod/seq when ev carries a proof that checks, -EBADMSG otherwise. */
int soak_proof_check(const struct cbus_event *ev, uint32_t *prod, uint64_t *seq);
/* Deterministic usage for an llm_end (so a torn copy is caught by the check). */
void soak_usage_make(struct cbus_usage *u, uint64_t rnd);

/* producer.c */
struct soak_producer_args {
    const char *bus;
    struct soak_shared *st;
    uint32_t index;        /* st->prod[index] */
    double rate;           /* events per second, 0 = unpaced */
    int process;           /* a producer process: no llm_end (see producer.c) */
};
int soak_produce(const struct soak_producer_args *a);
int soak_producer_main(int argc, char **argv);

/* verifier.c */
int soak_verifier_main(int argc, char **argv);
/* Applies a half-finished batch commit left by a killed verifier (idempotent). */
void soak_verifier_recover(struct soak_verifier *v);

#endif
