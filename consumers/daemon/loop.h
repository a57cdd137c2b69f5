/* The consumer daemons' event loop (issue 18): one loop, its timers and
 * hooks, instead of a hand-rolled while() with next_* deadlines in each
 * daemon.  Redis's ae is the model: the loop owns waiting and time, the
 * daemon owns what happens on events and on timers.
 *
 * One turn:
 *   1. poll a batch (with bodies when asked), following the bus: a poll
 *      that says -ESTALE asks attach.c at once (truncated, evicted).  While
 *      the daemon holds back part of the last batch (cbus_loop_hold), there
 *      is no poll: the held events are offered again; with no_poll set,
 *      there is none either (n == 0);
 *   2. on_batch(events, n) -- also with n == 0, so a daemon can acknowledge
 *      positions that were skipped without an event (a tail jump);
 *   3. every hb_every_ns: the consumer's heartbeat (unless no_heartbeat),
 *      on_heartbeat, and the bus check of attach.c (removed, re-created,
 *      truncated: the policy is attach.h's, the same for every daemon; not
 *      while events are held, which belong to the bus they came from); a
 *      move to a new bus calls on_arrived, eviction ends the loop with an
 *      error; a turn that had events and is not due for that heartbeats
 *      the consumer alone (a busy daemon never idles in the bus wait,
 *      which beats every third of the stall timeout);
 *   4. the timers that are due, earliest deadline first (SIGUSR1 runs the
 *      ones marked on_usr1 now);
 *   5. before_sleep, then, when the poll found nothing or events are held,
 *      a wait until the earliest of: an event, the next timer, the next
 *      heartbeat, max_wait_ns, a wake-up the daemon asked for
 *      (cbus_loop_wake_at), a signal.  The wait is the daemon's io_wait
 *      when it has I/O in flight, else the bus's futex wait.
 * Runs until SIGTERM/SIGINT (cbus_daemon_stop) or a hook says stop.
 *
 * Signals: the flags are looked at again just before the wait, but a signal
 * that lands between that look and the futex call does not cut the wait
 * short (a futex wait cannot unblock signals atomically, as ppoll can): it
 * is seen when the wait ends, at most max_wait_ns later (100 ms by default).
 * That bound is why max_wait_ns exists; a daemon must not set it to hours.
 *
 * Slow calls: a turn that blocks (a checkpoint's fsync on a loaded disk, a
 * database commit) does not heartbeat, and producers untether a lossless
 * consumer that is silent for the bus's stall timeout while they wait on
 * it.  A daemon brackets such a call with cbus_loop_slow_begin/_end: a
 * thread of the loop's heartbeats for it meanwhile (cbus_loop_slow_begin),
 * and _end heartbeats once more, so what follows starts from a fresh beat. */
#ifndef CBUS_COMMON_LOOP_H
#define CBUS_COMMON_LOOP_H

#include <cbus/consumer.h>

#include <stdint.h>

#include "attach.h"

#define CBUS_LOOP_MAX_TIMERS 8

/* Hooks return 0 to go on, nonzero to stop the loop with an error (rc 1). */
typedef int (*cbus_loop_fn)(void *arg, uint64_t now_ns);

struct cbus_loop_timer {
    cbus_loop_fn fn;
    uint64_t every_ns;      /* 0: on SIGUSR1 only */
    uint64_t next_ns;       /* UINT64_MAX: never by time */
    int on_usr1;            /* SIGUSR1 runs it at once (status, snapshot) */
};

struct cbus_loop {
    struct cbus_attach at;  /* the consumer, following its bus (owned) */
    void *arg;
    /* the batch: events (and bodies) of the last poll */
    int (*on_batch)(void *arg, const struct cbus_event *ev, const struct cbus_body *bodies, int n,
                    uint64_t now_ns);
    cbus_loop_fn on_heartbeat;   /* admission writer heartbeat, ...; may be NULL */
    /* Called from the loop's beat thread, at heartbeat cadence, while the
     * loop's thread is inside a slow call (cbus_loop_slow_begin): it may
     * touch only what that call does not (cost: its admission writer's
     * heartbeat, one atomic store in the bus).  May be NULL. */
    void (*on_slow_beat)(void *arg);
    int (*on_arrived)(void *arg); /* at.c / at.bus are a new bus's; may be NULL */
    cbus_loop_fn before_sleep;   /* may be NULL */
    /* The daemon's own wait, for I/O it has in flight (io_uring
     * completions): called instead of the bus wait with the time until the
     * next deadline.  Returns 1 (it waited: no bus wait this turn), 0 (nothing
     * in flight: the loop waits on the bus, or naps while events are held),
     * or negative (stop, rc 1).  May be NULL. */
    int (*io_wait)(void *arg, uint64_t max_ns);
    /* The clock the loop reads and hands to hooks; NULL = cbus_now_ns.  Set
     * before cbus_loop_every (a test's clock: deadlines without sleeping). */
    uint64_t (*clock)(void *arg);
    uint64_t hb_every_ns;        /* heartbeat and bus check; 0 = 1 s */
    uint64_t max_wait_ns;        /* longest sleep; 0 = 100 ms */
    /* Set by the daemon: stop heartbeating (the consumer's), so producers
     * untether it after the bus's stall timeout instead of waiting on a
     * daemon that cannot make progress (audit's untether_after).  The bus
     * check and on_heartbeat still run. */
    int no_heartbeat;
    /* Set by the daemon: do not poll (its queue is full: export's spool
     * over its limit).  on_batch still runs every turn, with n == 0; the
     * wait is io_wait, else a nap of at most 1 ms (the bus wait would return
     * at once for the events left unread). */
    int no_poll;
    /* private */
    unsigned batch_max;
    unsigned cur_off, cur_n;     /* the batch on_batch is looking at, in ev[] */
    unsigned held_off, held_n;   /* held back for the next turn (cbus_loop_hold) */
    struct cbus_event *ev;
    struct cbus_body *bodies;
    void *body_buf;
    size_t body_buf_len;
    struct cbus_loop_timer timers[CBUS_LOOP_MAX_TIMERS];
    unsigned ntimers;
    uint64_t next_hb_ns, wake_at_ns;
    struct cbus_loop_beat *beat; /* the beat thread, made by the first slow call */
    unsigned slow_depth;
};

/* Takes ownership of c (attached to bus_name with opts, which re-attaches
 * reuse).  batch_max events a poll; with_bodies: bodies too, into a buffer
 * of the bus's body limit.  Hooks and intervals are set in the struct
 * afterwards.  Returns 0 or -ENOMEM (c is detached then). */
int cbus_loop_init(struct cbus_loop *l, cbus_consumer *c, const char *bus_name,
                   const struct cbus_consumer_opts *opts, unsigned batch_max, int with_bodies,
                   void *arg);

/* A timer every every_ns, first due after first_ns (0 = at the first turn);
 * every_ns 0: a timer that only SIGUSR1 runs (needs on_usr1).  Returns its
 * index, -ENOSPC or -EINVAL (no fn; every_ns 0 without on_usr1). */
int cbus_loop_every(struct cbus_loop *l, uint64_t every_ns, uint64_t first_ns, cbus_loop_fn fn,
                    int on_usr1);
/* Moves timer i's next run to now + every_ns (it ran early, on demand). */
void cbus_loop_timer_reset(struct cbus_loop *l, int i, uint64_t now_ns);
/* The next wait ends by t at the latest (a deadline only the daemon knows). */
void cbus_loop_wake_at(struct cbus_loop *l, uint64_t t_ns);

/* From on_batch: events [from, n) of the batch it was given were not taken
 * (the daemon's writer is full).  The next turn does not poll or follow the
 * bus: it offers those events again (same pointers, bodies still valid),
 * after a wait (io_wait, else a nap of at most 1 ms).  Not calling it takes
 * the whole batch. */
void cbus_loop_hold(struct cbus_loop *l, unsigned from);
/* The events still held (after cbus_loop_run returned: for a final drain);
 * *ev and *bodies (may be NULL) point at them.  Returns their count. */
unsigned cbus_loop_held(const struct cbus_loop *l, const struct cbus_event **ev,
                        const struct cbus_body **bodies);
/* Marks the held events [0, taken) as taken (the daemon's final drain). */
void cbus_loop_take(struct cbus_loop *l, unsigned taken);

/* How long the next idle wait may last at now: until the earliest of the
 * timers, the heartbeat, a wake_at and max_wait_ns; 0 = a deadline passed. */
uint64_t cbus_loop_wait_ns(const struct cbus_loop *l, uint64_t now_ns);

/* The loop's clock (l->clock, else cbus_now_ns). */
uint64_t cbus_loop_now(const struct cbus_loop *l);

/* Runs the loop.  Returns 0 (stopped by a signal) or 1 (a hook, an error,
 * eviction: logged). */
int cbus_loop_run(struct cbus_loop *l);

/* Proof of life from inside a slow hook (a long fsync, a big write): a
 * lossless consumer that is silent for the stall timeout is untethered.
 * Does nothing with no_heartbeat set. */
void cbus_loop_busy(struct cbus_loop *l);

/* A slow call on the loop's thread follows (a durable write, an fsync, a
 * commit): heartbeat now, then let a thread of the loop heartbeat the
 * consumer (unless no_heartbeat) and call on_slow_beat every
 * min(hb_every_ns, the bus's stall timeout / 4) until cbus_loop_slow_end.
 * The thread starts at the first call and lives until cbus_loop_close;
 * it blocks every signal (they stay the loop thread's).  Nests.  The loop
 * must not be re-attached, polled or closed inside the section (the beat
 * thread holds the consumer).  Returns 0, or -errno when no thread could
 * be started (logged once: the call goes on without heartbeats). */
int cbus_loop_slow_begin(struct cbus_loop *l);
/* Ends the section: once it returns, the beat thread does not touch the
 * consumer or call on_slow_beat. */
void cbus_loop_slow_end(struct cbus_loop *l);
/* Heartbeats the beat thread gave (tests, status). */
uint64_t cbus_loop_slow_beats(const struct cbus_loop *l);

/* Detaches the consumer, frees the buffers, ends the beat thread.  Idempotent. */
void cbus_loop_close(struct cbus_loop *l);

#endif
