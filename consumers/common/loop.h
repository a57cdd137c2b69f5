/* The consumer daemons' event loop (issue 18): one loop, its timers and
 * hooks, instead of a hand-rolled while() with next_* deadlines in each
 * daemon.  Redis's ae is the model: the loop owns waiting and time, the
 * daemon owns what happens on events and on timers.
 *
 * One turn:
 *   1. poll a batch (with bodies when asked), following the bus: a poll
 *      that says -ESTALE asks attach.c at once (truncated, evicted);
 *   2. on_batch(events, n) -- also with n == 0, so a daemon can acknowledge
 *      positions that were skipped without an event (a tail jump);
 *   3. every hb_every_ns: the consumer's heartbeat, on_heartbeat, and the
 *      bus check of attach.c (removed, re-created, truncated: the policy is
 *      attach.h's, the same for every daemon); a move to a new bus calls
 *      on_arrived, eviction ends the loop with an error;
 *   4. the timers that are due (SIGUSR1 runs the ones marked on_usr1 now);
 *   5. before_sleep, then, when the poll found nothing, a futex wait until
 *      the earliest of: an event, the next timer, the next heartbeat,
 *      max_wait_ns, a wake-up the daemon asked for (cbus_loop_wake_at), a
 *      signal.
 * Runs until SIGTERM/SIGINT (cbus_daemon_stop) or a hook says stop. */
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
    uint64_t every_ns;
    uint64_t next_ns;
    int on_usr1;            /* SIGUSR1 runs it at once (status, snapshot) */
};

struct cbus_loop {
    struct cbus_attach at;  /* the consumer, following its bus (owned) */
    void *arg;
    /* the batch: events (and bodies) of the last poll */
    int (*on_batch)(void *arg, const struct cbus_event *ev, const struct cbus_body *bodies, int n,
                    uint64_t now_ns);
    cbus_loop_fn on_heartbeat;   /* admission writer heartbeat, ...; may be NULL */
    int (*on_arrived)(void *arg); /* at.c / at.bus are a new bus's; may be NULL */
    cbus_loop_fn before_sleep;   /* may be NULL */
    uint64_t hb_every_ns;        /* heartbeat and bus check; 0 = 1 s */
    uint64_t max_wait_ns;        /* longest sleep; 0 = 100 ms */
    /* private */
    unsigned batch_max;
    struct cbus_event *ev;
    struct cbus_body *bodies;
    void *body_buf;
    size_t body_buf_len;
    struct cbus_loop_timer timers[CBUS_LOOP_MAX_TIMERS];
    unsigned ntimers;
    uint64_t next_hb_ns, wake_at_ns;
};

/* Takes ownership of c (attached to bus_name with opts, which re-attaches
 * reuse).  batch_max events a poll; with_bodies: bodies too, into a buffer
 * of the bus's body limit.  Hooks and intervals are set in the struct
 * afterwards.  Returns 0 or -ENOMEM (c is detached then). */
int cbus_loop_init(struct cbus_loop *l, cbus_consumer *c, const char *bus_name,
                   const struct cbus_consumer_opts *opts, unsigned batch_max, int with_bodies,
                   void *arg);

/* A timer every every_ns, first due after first_ns (0 = at the first turn).
 * Returns its index or -ENOSPC. */
int cbus_loop_every(struct cbus_loop *l, uint64_t every_ns, uint64_t first_ns, cbus_loop_fn fn,
                    int on_usr1);
/* Moves timer i's next run to now + every_ns (it ran early, on demand). */
void cbus_loop_timer_reset(struct cbus_loop *l, int i, uint64_t now_ns);
/* The next wait ends by t at the latest (a deadline only the daemon knows). */
void cbus_loop_wake_at(struct cbus_loop *l, uint64_t t_ns);

/* Runs the loop.  Returns 0 (stopped by a signal) or 1 (a hook, an error,
 * eviction: logged). */
int cbus_loop_run(struct cbus_loop *l);

/* Proof of life from inside a slow hook (a long fsync, a big write): a
 * lossless consumer that is silent for the stall timeout is untethered. */
void cbus_loop_busy(struct cbus_loop *l);

/* Detaches the consumer, frees the buffers.  Idempotent. */
void cbus_loop_close(struct cbus_loop *l);

#endif
