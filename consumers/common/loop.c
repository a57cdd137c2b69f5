#include "loop.h"

#include <cbus/bus.h>
#include <cbus/cbus.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "daemon.h"
#include "log.h"

#define MS UINT64_C(1000000)

static void free_buffers(struct cbus_loop *l)
{
    free(l->ev);
    free(l->bodies);
    free(l->body_buf);
    l->ev = NULL;
    l->bodies = NULL;
    l->body_buf = NULL;
}

/* Bodies need a buffer of the bus's body limit, which a re-created bus may
 * change: sized per bus. */
static int size_body_buf(struct cbus_loop *l)
{
    if (!l->bodies)
        return 0;
    size_t want = cbus_bus_body_limit(l->at.bus);
    if (want < 4096)
        want = 4096;
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

int cbus_loop_every(struct cbus_loop *l, uint64_t every_ns, uint64_t first_ns, cbus_loop_fn fn,
                    int on_usr1)
{
    if (l->ntimers >= CBUS_LOOP_MAX_TIMERS)
        return -ENOSPC;
    l->timers[l->ntimers] = (struct cbus_loop_timer){.fn = fn, .every_ns = every_ns,
                                                     .next_ns = cbus_now_ns() + first_ns,
                                                     .on_usr1 = on_usr1};
    return (int)l->ntimers++;
}

void cbus_loop_timer_reset(struct cbus_loop *l, int i, uint64_t now_ns)
{
    if (i >= 0 && (unsigned)i < l->ntimers)
        l->timers[i].next_ns = now_ns + l->timers[i].every_ns;
}

void cbus_loop_wake_at(struct cbus_loop *l, uint64_t t_ns)
{
    if (!l->wake_at_ns || t_ns < l->wake_at_ns)
        l->wake_at_ns = t_ns;
}

void cbus_loop_busy(struct cbus_loop *l)
{
    if (l->at.c && !l->at.dead)
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
        cbus_log_error("poll: %s", cbus_strerror(n));
        *stop = 1;
        return 0;
    }
    return n;
}

static int heartbeat(struct cbus_loop *l, uint64_t now)
{
    if (!l->at.dead)
        cbus_consumer_heartbeat(l->at.c);
    if (l->on_heartbeat && l->on_heartbeat(l->arg, now))
        return 1;
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

static int run_timers(struct cbus_loop *l, uint64_t now)
{
    int usr1 = cbus_daemon_usr1;
    if (usr1)
        cbus_daemon_usr1 = 0;
    for (unsigned i = 0; i < l->ntimers; i++) {
        struct cbus_loop_timer *t = &l->timers[i];
        if (now < t->next_ns && !(usr1 && t->on_usr1))
            continue;
        t->next_ns = now + t->every_ns;
        if (t->fn(l->arg, now))
            return 1;
    }
    return 0;
}

/* How long the idle wait may sleep: until the first deadline. */
static uint64_t wait_for(const struct cbus_loop *l, uint64_t now)
{
    uint64_t until = now + (l->max_wait_ns ? l->max_wait_ns : 100 * MS);
    if (l->next_hb_ns < until)
        until = l->next_hb_ns;
    for (unsigned i = 0; i < l->ntimers; i++)
        if (l->timers[i].next_ns < until)
            until = l->timers[i].next_ns;
    if (l->wake_at_ns && l->wake_at_ns < until)
        until = l->wake_at_ns;
    return until > now ? until - now : 0;
}

int cbus_loop_run(struct cbus_loop *l)
{
    const uint64_t hb_every = l->hb_every_ns ? l->hb_every_ns : 1000 * MS;
    l->next_hb_ns = cbus_now_ns();
    while (!cbus_daemon_stop) {
        int stop = 0;
        int n = poll_batch(l, &stop);
        if (stop)
            return 1;
        uint64_t now = cbus_now_ns();
        l->wake_at_ns = 0;
        if (l->on_batch(l->arg, l->ev, l->bodies, n, now))
            return 1;
        now = cbus_now_ns();
        if (now >= l->next_hb_ns) {
            l->next_hb_ns = now + hb_every;
            if (heartbeat(l, now))
                return 1;
        }
        if (run_timers(l, now))
            return 1;
        if (l->before_sleep && l->before_sleep(l->arg, now))
            return 1;
        if (n > 0)
            continue;
        uint64_t wait = wait_for(l, now);
        if (!wait)
            continue;
        cbus_consumer *before = l->at.c;
        int w = cbus_attach_wait(&l->at, wait);
        if (l->at.c != before && arrived(l))
            return 1;
        if (w < 0 && w != -EINTR) {
            cbus_log_error("wait: %s", cbus_strerror(w));
            return 1;
        }
    }
    return 0;
}

void cbus_loop_close(struct cbus_loop *l)
{
    cbus_attach_close(&l->at);
    free_buffers(l);
    l->body_buf_len = 0;
}
