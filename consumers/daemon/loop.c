#include "loop.h"

#include <cbus/bus.h>
#include <cbus/cbus.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon.h"
#include "log.h"

#define MS UINT64_C(1000000)
#define HELD_NAP_NS MS /* a wait while events are held and no I/O is in flight */

static uint64_t add_sat(uint64_t a, uint64_t b)
{
    return b > UINT64_MAX - a ? UINT64_MAX : a + b;
}

static void free_buffers(struct cbus_loop *l)
{
    free(l->ev);
    free(l->bodies);
    free(l->body_buf);
    l->ev = NULL;
    l->bodies = NULL;
    l->body_buf = NULL;
}

/* Bodies need a buffer of at least the bus's body limit, which a
 * re-created bus may change: sized per bus.  Four limits (and a page): a
 * poll stops at the first body that does not fit, so one limit would make
 * a batch of large bodies one event long (export's sizing, kept for all). */
static int size_body_buf(struct cbus_loop *l)
{
    if (!l->bodies)
        return 0;
    size_t want = 4 * (size_t)cbus_bus_body_limit(l->at.bus) + 4096;
    if (want <= l->body_buf_len)
        return 0;
    void *nb = realloc(l->body_buf, want);
    if (!nb)
        return -ENOMEM;
    l->body_buf = nb;
    l->body_buf_len = want;
    return 0;
}

int cbus_loop_init(struct cbus_loop *l, cbus_consumer *c, const char *bus_name,
                   const struct cbus_consumer_opts *opts, unsigned batch_max, int with_bodies,
                   void *arg)
{
    memset(l, 0, sizeof *l);
    l->arg = arg;
    l->batch_max = batch_max ? batch_max : 256;
    l->ev = calloc(l->batch_max, sizeof *l->ev);
    if (with_bodies)
        l->bodies = calloc(l->batch_max, sizeof *l->bodies);
    cbus_attach_init(&l->at, c, bus_name, opts, 0);
    if (!l->ev || (with_bodies && (!l->bodies || size_body_buf(l)))) {
        free_buffers(l);
        cbus_attach_close(&l->at);
        return -ENOMEM;
    }
    return 0;
}

uint64_t cbus_loop_now(const struct cbus_loop *l)
{
    return l->clock ? l->clock(l->arg) : cbus_now_ns();
}

int cbus_loop_every(struct cbus_loop *l, uint64_t every_ns, uint64_t first_ns, cbus_loop_fn fn,
                    int on_usr1)
{
    if (!fn || (!every_ns && !on_usr1))
        return -EINVAL;
    if (l->ntimers >= CBUS_LOOP_MAX_TIMERS)
        return -ENOSPC;
    uint64_t now = cbus_loop_now(l);
    l->timers[l->ntimers] = (struct cbus_loop_timer){
        .fn = fn, .every_ns = every_ns,
        .next_ns = every_ns ? add_sat(now, first_ns) : UINT64_MAX, .on_usr1 = on_usr1};
    return (int)l->ntimers++;
}

void cbus_loop_timer_reset(struct cbus_loop *l, int i, uint64_t now_ns)
{
    if (i >= 0 && (unsigned)i < l->ntimers && l->timers[i].every_ns)
        l->timers[i].next_ns = add_sat(now_ns, l->timers[i].every_ns);
}

void cbus_loop_wake_at(struct cbus_loop *l, uint64_t t_ns)
{
    if (!l->wake_at_ns || t_ns < l->wake_at_ns)
        l->wake_at_ns = t_ns;
}

void cbus_loop_hold(struct cbus_loop *l, unsigned from)
{
    if (from >= l->cur_n) {
        l->held_n = 0;
        return;
    }
    l->held_off = l->cur_off + from;
    l->held_n = l->cur_n - from;
}

unsigned cbus_loop_held(const struct cbus_loop *l, const struct cbus_event **ev,
                        const struct cbus_body **bodies)
{
    if (ev)
        *ev = l->ev ? l->ev + l->held_off : NULL;
    if (bodies)
        *bodies = l->bodies ? l->bodies + l->held_off : NULL;
    return l->held_n;
}

void cbus_loop_take(struct cbus_loop *l, unsigned taken)
{
    if (taken >= l->held_n) {
        l->held_n = 0;
        return;
    }
    l->held_off += taken;
    l->held_n -= taken;
}

void cbus_loop_busy(struct cbus_loop *l)
{
    if (l->at.c && !l->at.dead && !l->no_heartbeat)
        cbus_consumer_heartbeat(l->at.c);
}

/* attach.c moved us to a new bus: the daemon refreshes what it keeps per
 * bus.  Returns 0 or 1 (stop). */
static int arrived(struct cbus_loop *l)
{
    if (size_body_buf(l)) {
        cbus_log_error("out of memory for the new bus's bodies");
        return 1;
    }
    return l->on_arrived ? (l->on_arrived(l->arg) != 0) : 0;
}

/* Polls one batch.  Returns the count: 0 also when the bus is dead or was
 * just left for a new one; *stop is set on a fatal error (logged). */
static int poll_batch(struct cbus_loop *l, int *stop)
{
    int n = l->bodies ? cbus_consumer_poll_bodies(l->at.c, l->ev, l->bodies, l->batch_max, l->body_buf,
                                                  l->body_buf_len)
                      : cbus_consumer_poll(l->at.c, l->ev, l->batch_max);
    if (n == -ESTALE) {
        /* Evicted, or the bus truncated under us: attach.c tells. */
        int a = cbus_attach_check(&l->at, 1);
        if (a == 1 && arrived(l)) {
            *stop = 1;
            return 0;
        }
        if (a == 1 || (a == 0 && l->at.dead))
            n = 0;
    }
    if (n < 0) {
        cbus_log_error("poll: %s%s", cbus_strerror(n),
                       n == -ESTALE ? " (evicted from the bus)" : "");
        *stop = 1;
        return 0;
    }
    return n;
}

static int heartbeat(struct cbus_loop *l, uint64_t now)
{
    if (!l->at.dead && !l->no_heartbeat)
        cbus_consumer_heartbeat(l->at.c);
    if (l->on_heartbeat && l->on_heartbeat(l->arg, now))
        return 1;
    /* Held events belong to this bus: follow it once they are taken. */
    if (l->held_n)
        return 0;
    /* Removed or re-created under us: follow it (attach.c). */
    int a = cbus_attach_check(&l->at, 0);
    if (a == 1)
        return arrived(l);
    if (a < 0) {
        cbus_log_error("evicted from the bus");
        return 1;
    }
    return 0;
}

/* The due timers, earliest deadline first (a turn that comes late runs
 * them in the order they fell due, not in the order they were added); a
 * SIGUSR1 makes the on_usr1 ones due now. */
static int run_timers(struct cbus_loop *l, uint64_t now)
{
    int usr1 = cbus_daemon_usr1;
    if (usr1)
        cbus_daemon_usr1 = 0;
    unsigned ran = 0; /* bit i: timer i ran this turn */
    for (;;) {
        struct cbus_loop_timer *t = NULL;
        unsigned ti = 0;
        for (unsigned i = 0; i < l->ntimers; i++) {
            struct cbus_loop_timer *c = &l->timers[i];
            int due = now >= c->next_ns || (usr1 && c->on_usr1);
            if (!due || (ran & (1u << i)) || (t && c->next_ns >= t->next_ns))
                continue;
            t = c;
            ti = i;
        }
        if (!t)
            return 0;
        ran |= 1u << ti;
        t->next_ns = t->every_ns ? add_sat(now, t->every_ns) : UINT64_MAX;
        if (t->fn(l->arg, now))
            return 1;
    }
}

uint64_t cbus_loop_wait_ns(const struct cbus_loop *l, uint64_t now)
{
    uint64_t until = add_sat(now, l->max_wait_ns ? l->max_wait_ns : 100 * MS);
    if (l->next_hb_ns < until)
        until = l->next_hb_ns;
    for (unsigned i = 0; i < l->ntimers; i++)
        if (l->timers[i].next_ns < until)
            until = l->timers[i].next_ns;
    if (l->wake_at_ns && l->wake_at_ns < until)
        until = l->wake_at_ns;
    return until > now ? until - now : 0;
}

/* The batch of this turn: the held events, else a poll. */
static int next_batch(struct cbus_loop *l, int *stop)
{
    if (l->held_n) {
        l->cur_off = l->held_off;
        l->cur_n = l->held_n;
        l->held_n = 0;
        return (int)l->cur_n;
    }
    int n = l->no_poll ? 0 : poll_batch(l, stop);
    l->cur_off = 0;
    l->cur_n = n > 0 ? (unsigned)n : 0;
    return n;
}

/* The idle wait (or the wait for the daemon's I/O).  Returns 0 or 1 (stop). */
static int idle_wait(struct cbus_loop *l, uint64_t wait)
{
    if (l->io_wait) {
        int r = l->io_wait(l->arg, wait);
        if (r < 0)
            return 1;
        if (r > 0)
            return 0;
    }
    if (l->held_n || l->no_poll) {
        uint64_t nap = wait < HELD_NAP_NS ? wait : HELD_NAP_NS;
        struct timespec ts = {0, (long)nap};
        nanosleep(&ts, NULL);
        return 0;
    }
    cbus_consumer *before = l->at.c;
    int w = cbus_attach_wait(&l->at, wait);
    if (l->at.c != before && arrived(l))
        return 1;
    if (w < 0 && w != -EINTR) {
        cbus_log_error("wait: %s", cbus_strerror(w));
        return 1;
    }
    return 0;
}

/* One turn (loop.h).  Returns 0 or 1 (stop). */
static int turn(struct cbus_loop *l, uint64_t hb_every)
{
    int stop = 0;
    int n = next_batch(l, &stop);
    if (stop)
        return 1;
    uint64_t now = cbus_loop_now(l);
    l->wake_at_ns = 0;
    if (l->on_batch(l->arg, l->ev + l->cur_off, l->bodies ? l->bodies + l->cur_off : NULL, n,
                    now))
        return 1;
    now = cbus_loop_now(l);
    if (now >= l->next_hb_ns) {
        l->next_hb_ns = add_sat(now, hb_every);
        if (heartbeat(l, now))
            return 1;
    } else if (n > 0) {
        /* A busy daemon does not idle in the bus wait, which heartbeats
         * every third of the stall timeout: without this its consumer
         * would beat once a heartbeat period (1 s), as long as a short
         * stall timeout, and a loaded machine would get it untethered
         * between two batches.  One store per batch. */
        cbus_loop_busy(l);
    }
    if (run_timers(l, now))
        return 1;
    if (l->before_sleep && l->before_sleep(l->arg, now))
        return 1;
    if (n > 0 && !l->held_n)
        return 0;
    uint64_t wait = cbus_loop_wait_ns(l, now);
    /* A stop or SIGUSR1 that came during this turn: act on it before
     * sleeping (see loop.h on the gap that is left). */
    if (!wait || cbus_daemon_stop || cbus_daemon_usr1)
        return 0;
    return idle_wait(l, wait);
}

int cbus_loop_run(struct cbus_loop *l)
{
    const uint64_t hb_every = l->hb_every_ns ? l->hb_every_ns : 1000 * MS;
    l->next_hb_ns = cbus_loop_now(l);
    while (!cbus_daemon_stop)
        if (turn(l, hb_every))
            return 1;
    return 0;
}

/* ---- slow calls: the beat thread (loop.h) -------------------------------- */

struct cbus_loop_beat {
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* CLOCK_MONOTONIC: a wall-clock step does not stretch a beat */
    int busy, quit;         /* under mu */
    uint64_t every_ns;      /* set at each begin */
    cbus_consumer *c;       /* beat this one (NULL: no_heartbeat, or dead) */
    void (*fn)(void *);
    void *arg;
    uint64_t beats;
};

static void *beat_main(void *p)
{
    struct cbus_loop_beat *b = p;
    pthread_mutex_lock(&b->mu);
    while (!b->quit) {
        if (!b->busy) {
            pthread_cond_wait(&b->cv, &b->mu);
            continue;
        }
        /* One beat period, cut short by the end of the section. */
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t t = (uint64_t)ts.tv_nsec + b->every_ns;
        ts.tv_sec += (time_t)(t / 1000000000u);
        ts.tv_nsec = (long)(t % 1000000000u);
        int r = 0;
        while (b->busy && !b->quit && r != ETIMEDOUT)
            r = pthread_cond_timedwait(&b->cv, &b->mu, &ts);
        /* Still inside the section, and under mu: the loop's thread is
         * blocked in its slow call or in cbus_loop_slow_end, so the
         * consumer cannot be detached under us. */
        if (r == ETIMEDOUT && b->busy && !b->quit) {
            if (b->c)
                cbus_consumer_heartbeat(b->c);
            if (b->fn)
                b->fn(b->arg);
            b->beats++;
        }
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

static int beat_start(struct cbus_loop *l)
{
    struct cbus_loop_beat *b = calloc(1, sizeof *b);
    if (!b)
        return -ENOMEM;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, &ca);
    pthread_condattr_destroy(&ca);
    /* Signals stay the loop thread's: its waits end on them (daemon.h). */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int r = pthread_create(&b->th, NULL, beat_main, b);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r) {
        pthread_cond_destroy(&b->cv);
        pthread_mutex_destroy(&b->mu);
        free(b);
        return -r;
    }
    l->beat = b;
    return 0;
}

static void beat_stop(struct cbus_loop *l)
{
    struct cbus_loop_beat *b = l->beat;
    if (!b)
        return;
    pthread_mutex_lock(&b->mu);
    b->quit = 1;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
    pthread_join(b->th, NULL);
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
    free(b);
    l->beat = NULL;
}

int cbus_loop_slow_begin(struct cbus_loop *l)
{
    if (l->slow_depth++)
        return 0;
    cbus_loop_busy(l);
    if (l->on_slow_beat)
        l->on_slow_beat(l->arg);
    static int start_err; /* logged once a process */
    if (!l->beat) {
        int r = beat_start(l);
        if (r) {
            if (!start_err)
                cbus_log_error("no heartbeat thread for slow calls (%s): a long fsync may get "
                               "this consumer untethered", cbus_strerror(r));
            start_err = r;
            return r;
        }
    }
    /* The bus's stall timeout was checked when the bus was opened (shm.c);
     * a beat every quarter of it leaves room for a preempted thread. */
    uint64_t every = l->hb_every_ns ? l->hb_every_ns : 1000 * MS;
    const struct cbus_shm_header *h = l->at.bus && !l->at.dead ? cbus_bus_header(l->at.bus) : NULL;
    if (h && h->stall_timeout_ns / 4 < every)
        every = h->stall_timeout_ns / 4;
    if (every < MS)
        every = MS;
    struct cbus_loop_beat *b = l->beat;
    pthread_mutex_lock(&b->mu);
    b->every_ns = every;
    b->c = l->at.c && !l->at.dead && !l->no_heartbeat ? l->at.c : NULL;
    b->fn = l->on_slow_beat;
    b->arg = l->arg;
    b->busy = 1;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
    return 0;
}

void cbus_loop_slow_end(struct cbus_loop *l)
{
    if (!l->slow_depth || --l->slow_depth)
        return;
    struct cbus_loop_beat *b = l->beat;
    if (!b)
        return;
    /* Taking mu waits for a beat in progress: none starts after this. */
    pthread_mutex_lock(&b->mu);
    b->busy = 0;
    b->c = NULL;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
    /* The section's last beat may be a quarter of the stall timeout old:
     * what follows starts from a fresh one. */
    cbus_loop_busy(l);
}

uint64_t cbus_loop_slow_beats(const struct cbus_loop *l)
{
    struct cbus_loop_beat *b = l->beat;
    if (!b)
        return 0;
    pthread_mutex_lock(&b->mu);
    uint64_t n = b->beats;
    pthread_mutex_unlock(&b->mu);
    return n;
}

void cbus_loop_close(struct cbus_loop *l)
{
    beat_stop(l);
    l->slow_depth = 0;
    cbus_attach_close(&l->at);
    free_buffers(l);
    l->body_buf_len = 0;
}
