/* The ring across real processes: fork, SIGKILL, restart. */
#include <cbus/bus.h>
#include <cbus/consumer.h>
#include <cbus/producer.h>

#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support.h"

static char name[64];
/* Children a test started: teardown kills and reaps any still running, so a
 * failed assertion never leaves one behind holding ctest's pipe. */
static pid_t kids_started[8];
static unsigned n_kids;

static void track_kid(pid_t pid)
{
    if (pid > 0 && n_kids < sizeof kids_started / sizeof kids_started[0])
        kids_started[n_kids++] = pid;
}

static void setup(void)
{
    test_bus_name(name, sizeof name);
    n_kids = 0;
}

static void teardown(void)
{
    for (unsigned i = 0; i < n_kids; i++) {
        /* 0: still our unreaped child (its pid cannot have been reused);
         * -1/ECHILD: the test reaped it already. */
        if (waitpid(kids_started[i], NULL, WNOHANG) == 0) {
            kill(kids_started[i], SIGKILL);
            waitpid(kids_started[i], NULL, 0);
        }
    }
    cbus_bus_destroy(name);
}

TestSuite(bus_procs, .init = setup, .fini = teardown, .timeout = 120);

/* Each test event carries (producer index, per-producer sequence). */
struct tag {
    uint32_t producer;
    uint32_t seq;
};

static int emit_tagged(cbus_producer *p, cbus_ctx *ctx, uint32_t producer, uint32_t seq)
{
    struct tag t = {producer, seq};
    struct cbus_emit_args a = {.kind = CBUS_EV_CUSTOM, .name = "t", .payload = &t,
                               .payload_len = sizeof t};
    return cbus_emit(p, ctx, &a);
}

/* ONCPU_SLACK_NS is CPU time, so no preemption can cross it: a thousand
 * times what one pass of the producer's wait loop costs, ten times the
 * default 1 ms bound.  A producer that keeps waiting past the bound spins on
 * a CPU for part of that time even on a loaded machine. */
#define ONCPU_SLACK_NS UINT64_C(10000000)

/* emit_tagged(), keeping in *max_oncpu the longest wait of one call that the
 * producer recorded, less the time this thread was off a CPU during the call
 * (support.h, test_cpu_mark()): the recorded wait itself counts preemption,
 * and a loaded machine deschedules a thread for hundreds of ms. */
static int emit_tagged_oncpu(cbus_producer *p, cbus_ctx *ctx, uint32_t seq, uint64_t *max_oncpu)
{
    struct cbus_producer_stats s0, s1;
    cbus_producer_stats(p, &s0);
    struct test_cpu_mark m;
    test_cpu_mark(&m);
    int r = emit_tagged(p, ctx, 0, seq);
    uint64_t off = test_offcpu_ns(&m);
    cbus_producer_stats(p, &s1);
    uint64_t waited = s1.waited_ns - s0.waited_ns; /* one call waits at most once */
    uint64_t on = waited > off ? waited - off : 0;
    if (on > *max_oncpu)
        *max_oncpu = on;
    return r;
}

static void wait_for_consumers(const char *bus_name, int n)
{
    cbus_bus *bus;
    cr_assert_eq(cbus_bus_open(&bus, bus_name, 0), 0);
    uint64_t t0 = test_now_ms();
    for (;;) {
        int active = 0;
        for (unsigned i = 0; i < CBUS_MAX_CONSUMERS; i++)
            if (cbus_bus_consumer_entry(bus, i)->state == CBUS_CSTATE_ACTIVE)
                active++;
        if (active >= n)
            break;
        cr_assert_lt(test_now_ms() - t0, 10000, "consumers did not attach");
        test_sleep_ms(1);
    }
    cbus_bus_close(bus);
}

/* Child: reads until it has passed `total` positions (read from the pipe
 * once the producers are done), checks order and uniqueness, and reports
 * consumed/lost/abandoned through a result pipe. */
struct result {
    uint64_t consumed, lost, abandoned, dup_or_disorder;
};

#define MAX_PRODUCERS 4
static void consumer_child(const char *bus_name, const char *cname, unsigned mode, int total_fd,
                           int result_fd)
{
    cbus_consumer *c;
    struct cbus_consumer_opts o = {.name = cname, .mode = mode};
    if (cbus_consumer_attach(&c, bus_name, &o))
        _exit(3);
    uint32_t next[MAX_PRODUCERS] = {0};
    struct result res = {0};
    uint64_t total = UINT64_MAX;
    struct cbus_event ev[256];
    for (;;) {
        int n = cbus_consumer_poll(c, ev, 256);
        if (n < 0)
            _exit(4);
        for (int i = 0; i < n; i++) {
            struct tag t;
            memcpy(&t, &ev[i].u, sizeof t);
            if (t.producer >= MAX_PRODUCERS || t.seq < next[t.producer])
                res.dup_or_disorder++;
            else
                next[t.producer] = t.seq + 1;
        }
        cbus_consumer_commit(c);
        if (total == UINT64_MAX) {
            uint64_t v;
            if (read(total_fd, &v, sizeof v) == sizeof v)
                total = v;
        }
        if (cbus_consumer_read_pos(c) >= total)
            break;
        if (n == 0)
            cbus_consumer_wait(c, 10000000u);
    }
    struct cbus_consumer_stats st;
    cbus_consumer_stats(c, &st);
    res.consumed = st.consumed;
    res.lost = st.lost;
    res.abandoned = st.abandoned;
    if (write(result_fd, &res, sizeof res) != sizeof res)
        _exit(5);
    cbus_consumer_detach(c);
    _exit(0);
}

struct prod_arg {
    cbus_producer *p;
    uint32_t index;
    uint32_t count;
    uint32_t ok;
};

static void *producer_thread(void *arg)
{
    struct prod_arg *a = arg;
    cbus_ctx ctx;
    cbus_ctx_init(&ctx);
    uint32_t seq = 0;
    for (uint32_t i = 0; i < a->count; i++) {
        if (emit_tagged(a->p, &ctx, a->index, seq) == 0) {
            a->ok++;
            seq++; /* only committed events get a sequence number */
        }
    }
    return NULL;
}

static void run_mix(int nthreads, uint32_t per_thread)
{
    struct cbus_create_opts co = {.capacity = 4096};
    cr_assert_eq(cbus_bus_create(name, &co), 0);
    int total_pipe[2][2], result_pipe[2][2];
    pid_t kids[2];
    const char *names[2] = {"lossless", "lossy"};
    for (int k = 0; k < 2; k++) {
        cr_assert_eq(pipe(total_pipe[k]), 0);
        cr_assert_eq(pipe(result_pipe[k]), 0);
        fcntl(total_pipe[k][0], F_SETFL, O_NONBLOCK);
        kids[k] = fork();
        track_kid(kids[k]);
        if (kids[k] == 0)
            consumer_child(name, names[k], k == 0 ? CBUS_LOSSLESS : CBUS_LOSSY, total_pipe[k][0],
                           result_pipe[k][1]);
    }
    wait_for_consumers(name, 2);
    cbus_producer *p;
    cr_assert_eq(cbus_producer_open(&p, name, NULL), 0);
    pthread_t th[MAX_PRODUCERS];
    struct prod_arg args[MAX_PRODUCERS];
    for (int i = 0; i < nthreads; i++) {
        args[i] = (struct prod_arg){.p = p, .index = (uint32_t)i, .count = per_thread};
        pthread_create(&th[i], NULL, producer_thread, &args[i]);
    }
    uint64_t ok = 0;
    for (int i = 0; i < nthreads; i++) {
        pthread_join(th[i], NULL);
        ok += args[i].ok;
    }
    uint64_t tail = cbus_bus_tail(cbus_producer_bus(p));
    cr_assert_eq(tail, ok, "every claim was committed");
    struct cbus_producer_stats ps;
    cbus_producer_stats(p, &ps);
    cr_assert_eq(ps.dropped + ok, (uint64_t)nthreads * per_thread, "every drop is counted");
    for (int k = 0; k < 2; k++)
        cr_assert_eq(write(total_pipe[k][1], &tail, sizeof tail), (ssize_t)sizeof tail);
    struct result r[2];
    for (int k = 0; k < 2; k++) {
        cr_assert_eq(read(result_pipe[k][0], &r[k], sizeof r[k]), (ssize_t)sizeof r[k]);
        int st = test_wait_pid(kids[k], 30000);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "consumer %d exit status %d", k, st);
    }
    /* lossless: every committed event exactly once, in per-producer order */
    cr_assert_eq(r[0].dup_or_disorder, 0);
    cr_assert_eq(r[0].lost, 0);
    cr_assert_eq(r[0].abandoned, 0);
    cr_assert_eq(r[0].consumed, tail);
    /* lossy: exact accounting, order kept among what it saw */
    cr_assert_eq(r[1].dup_or_disorder, 0);
    cr_assert_eq(r[1].consumed + r[1].lost + r[1].abandoned, tail);
    cbus_producer_close(p);
}

Test(bus_procs, one_thread_lossless_and_lossy_consumer_processes)
{
    run_mix(1, 300000);
}

Test(bus_procs, two_threads_lossless_and_lossy_consumer_processes)
{
    run_mix(2, 200000);
}

Test(bus_procs, sigkilled_lossless_consumer_does_not_hold_producers)
{
    struct cbus_create_opts co = {.capacity = 1024, .stall_timeout_ns = 200000000u};
    cr_assert_eq(cbus_bus_create(name, &co), 0);
    pid_t kid = fork();
    track_kid(kid);
    if (kid == 0) {
        cbus_consumer *c;
        struct cbus_consumer_opts o = {.name = "victim", .mode = CBUS_LOSSLESS};
        if (cbus_consumer_attach(&c, name, &o))
            _exit(3);
        struct cbus_event ev[64];
        for (;;) { /* a slow reader */
            cbus_consumer_poll(c, ev, 64);
            cbus_consumer_commit(c);
            test_sleep_ms(1);
        }
    }
    wait_for_consumers(name, 1);
    cbus_producer *p;
    cr_assert_eq(cbus_producer_open(&p, name, NULL), 0);
    cbus_ctx ctx;
    cbus_ctx_init(&ctx);
    uint64_t max_oncpu = 0;
    for (int i = 0; i < 20000; i++)
        emit_tagged_oncpu(p, &ctx, (uint32_t)i, &max_oncpu);
    kill(kid, SIGKILL);
    test_wait_pid(kid, 5000);
    /* Keep emitting well past the stall timeout: every call returns, the
     * dead consumer is untethered, and then nothing is dropped any more. */
    uint64_t t0 = test_now_ms();
    uint64_t calls = 0;
    while (test_now_ms() - t0 < 600) {
        emit_tagged_oncpu(p, &ctx, 0, &max_oncpu);
        calls++;
    }
    struct cbus_producer_stats before;
    cbus_producer_stats(p, &before);
    for (int i = 0; i < 50000; i++)
        cr_assert_eq(emit_tagged(p, &ctx, 0, 0), 0, "no drops once the dead consumer is cut loose");
    const struct cbus_shm_header *h = cbus_bus_header(cbus_producer_bus(p));
    cr_assert_eq(CBUS_GATE_COUNT(h->gate), 0);
    cr_assert_geq(h->untethered, 1);
    cr_assert_gt(before.dropped, 0, "while it was tethered and dead, events were dropped and counted");
    /* The bound: no single wait went past lossless_wait_ns (the producer
     * stops waiting at the first check past it) by more than CPU slack.  Not
     * before.max_wait_ns against a wall-clock margin: under load it was
     * crossed by preemption alone. */
    cr_assert_lt(max_oncpu, h->lossless_wait_ns + ONCPU_SLACK_NS,
                 "a wait spent %llu ns on a CPU (recorded max %llu ns)",
                 (unsigned long long)max_oncpu, (unsigned long long)before.max_wait_ns);
    cr_assert_gt(calls, 1000, "the producer kept running");
    cbus_producer_close(p);
}

/* Ten minutes: a test that passes only through the abandon shortcut cannot
 * pass by waiting this out, however loaded the machine. */
#define HUGE_STALL_NS 600000000000ull

static struct cbus_slot *slot_at(cbus_bus *bus, uint64_t pos)
{
    struct cbus_shm_header *h = (struct cbus_shm_header *)cbus_bus_header(bus);
    return (struct cbus_slot *)((char *)h + h->slots_off) + (pos & (h->capacity - 1));
}

/* Polls c until it has returned `want` events or deadline_ms passed; checks
 * that per-producer sequence numbers arrive as 0, 1, 2, ... */
static uint64_t poll_until(cbus_consumer *c, uint64_t want, uint64_t deadline_ms)
{
    uint64_t got = 0;
    uint64_t t0 = test_now_ms();
    struct cbus_event ev[32];
    while (got < want && test_now_ms() - t0 < deadline_ms) {
        int n = cbus_consumer_poll(c, ev, 32);
        cr_assert_geq(n, 0);
        for (int i = 0; i < n; i++) {
            struct tag t;
            memcpy(&t, &ev[i].u, sizeof t);
            cr_assert_eq(t.seq, got, "no half-written event is ever delivered");
            got++;
        }
        if (!n)
            cbus_consumer_wait(c, 2000000u);
    }
    return got;
}

Test(bus_procs, producer_killed_mid_write_is_skipped_and_counted)
{
    /* The stall timeout is ten minutes and the deadline 30 s: the events
     * behind the dead claim arrive only if the dead-writer shortcut (after
     * abandon_timeout, 5 ms) is taken. */
    struct cbus_create_opts co = {.capacity = 1024, .abandon_timeout_ns = 5000000u,
                                  .stall_timeout_ns = HUGE_STALL_NS};
    cr_assert_eq(cbus_bus_create(name, &co), 0);
    cbus_producer *p;
    cr_assert_eq(cbus_producer_open(&p, name, NULL), 0);
    cbus_consumer *c;
    struct cbus_consumer_opts o = {.name = "reader", .mode = CBUS_LOSSLESS};
    cr_assert_eq(cbus_consumer_attach(&c, name, &o), 0);
    cbus_ctx ctx;
    cbus_ctx_init(&ctx);
    emit_tagged(p, &ctx, 0, 0);
    /* A producer process claims a slot, marks it, and is SIGKILLed before
     * it commits: exactly the state a crash mid-write leaves. */
    pid_t kid = fork();
    track_kid(kid);
    if (kid == 0) {
        cbus_bus *bus;
        if (cbus_bus_open(&bus, name, 0))
            _exit(3);
        struct cbus_shm_header *h = (struct cbus_shm_header *)cbus_bus_header(bus);
        uint64_t pos = atomic_fetch_add(&h->tail, 1);
        struct cbus_slot *s = slot_at(bus, pos);
        atomic_store(&s->writer_pid, (uint32_t)getpid());
        atomic_store(&s->seq, CBUS_SEQ_BUSY(pos));
        memset(&s->ev, 0xab, 100); /* half-written payload */
        raise(SIGKILL);
    }
    int st = test_wait_pid(kid, 5000);
    cr_assert(WIFSIGNALED(st));
    for (uint32_t i = 1; i <= 10; i++)
        cr_assert_eq(emit_tagged(p, &ctx, 0, i), 0);
    uint64_t got = poll_until(c, 11, 30000);
    cr_assert_eq(got, 11, "events after the dead claim are delivered long before the stall timeout");
    struct cbus_consumer_stats cs;
    cbus_consumer_stats(c, &cs);
    cr_assert_eq(cs.abandoned, 1);
    cr_assert_eq(cs.consumed + cs.abandoned + cs.lost, 12);
    cbus_consumer_detach(c);
    cbus_producer_close(p);
}

/* Issue 12 item 24 (a): a writer that is alive but slow (it holds its claim,
 * marked, far longer than abandon_timeout) must not be skipped: skipping it
 * would lose an event that is then committed. */
Test(bus_procs, live_slow_writer_is_waited_for_not_abandoned)
{
    struct cbus_create_opts co = {.capacity = 1024, .abandon_timeout_ns = 1000000u,
                                  .stall_timeout_ns = HUGE_STALL_NS};
    cr_assert_eq(cbus_bus_create(name, &co), 0);
    cbus_producer *p;
    cr_assert_eq(cbus_producer_open(&p, name, NULL), 0);
    cbus_consumer *c;
    struct cbus_consumer_opts o = {.name = "reader", .mode = CBUS_LOSSLESS};
    cr_assert_eq(cbus_consumer_attach(&c, name, &o), 0);
    cbus_ctx ctx;
    cbus_ctx_init(&ctx);
    cr_assert_eq(emit_tagged(p, &ctx, 0, 0), 0);
    int claimed[2], go[2];
    cr_assert_eq(pipe(claimed), 0);
    cr_assert_eq(pipe(go), 0);
    pid_t kid = fork();
    track_kid(kid);
    if (kid == 0) {
        /* The slow writer: claim and mark as emit does, then hold the claim
         * until told to finish, then commit a complete event. */
        cbus_bus *bus;
        if (cbus_bus_open(&bus, name, 0))
            _exit(3);
        struct cbus_shm_header *h = (struct cbus_shm_header *)cbus_bus_header(bus);
        uint64_t pos = atomic_fetch_add(&h->tail, 1);
        struct cbus_slot *s = slot_at(bus, pos);
        atomic_store(&s->writer_pid, (uint32_t)getpid());
        atomic_store(&s->seq, CBUS_SEQ_BUSY(pos));
        memset(&s->ev, 0xab, 100);
        char b = 1;
        if (write(claimed[1], &b, 1) != 1 || read(go[0], &b, 1) != 1)
            _exit(4);
        struct cbus_event ev;
        memset(&ev, 0, sizeof ev);
        ev.kind = CBUS_EV_CUSTOM;
        ev.event_id = pos;
        struct tag t = {0, 1};
        memcpy(&ev.u, &t, sizeof t);
        memcpy(&s->ev, &ev, sizeof ev);
        atomic_store_explicit(&s->seq, CBUS_SEQ_COMMITTED(pos), memory_order_release);
        _exit(0);
    }
    char b;
    cr_assert_eq(read(claimed[0], &b, 1), 1);
    cr_assert_eq(emit_tagged(p, &ctx, 0, 2), 0); /* behind the held claim */
    cr_assert_eq(poll_until(c, 1, 10000), 1);
    /* Keep polling the held slot for 100 abandon timeouts (the consumer's
     * own clock decides when it is stuck: this only makes sure it had every
     * chance to give up on a live writer), then a last poll. */
    struct cbus_event ev[4];
    uint64_t t0 = test_now_ms();
    while (test_now_ms() - t0 < 100) {
        cr_assert_eq(cbus_consumer_poll(c, ev, 4), 0, "nothing is delivered past a held claim");
        cbus_consumer_wait(c, 1000000u);
    }
    cr_assert_eq(cbus_consumer_poll(c, ev, 4), 0);
    struct cbus_consumer_stats cs;
    cbus_consumer_stats(c, &cs);
    cr_assert_eq(cs.abandoned, 0, "a live writer's claim was skipped as abandoned");
    cr_assert_eq(cs.read_pos, 1);
    /* the writer finishes: its event and the one behind it arrive */
    cr_assert_eq(write(go[1], &b, 1), 1);
    int st = test_wait_pid(kid, 10000);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "writer status %d", st);
    uint64_t got = 0;
    t0 = test_now_ms();
    while (got < 2 && test_now_ms() - t0 < 10000) {
        int n = cbus_consumer_poll(c, ev, 4);
        cr_assert_geq(n, 0);
        for (int i = 0; i < n; i++) {
            struct tag t;
            memcpy(&t, &ev[i].u, sizeof t);
            cr_assert_eq(t.seq, got + 1, "the slow writer's event, then the one behind it");
            got++;
        }
        if (!n)
            cbus_consumer_wait(c, 2000000u);
    }
    cr_assert_eq(got, 2);
    cbus_consumer_stats(c, &cs);
    cr_assert_eq(cs.consumed, 3);
    cr_assert_eq(cs.abandoned + cs.lost, 0);
    cbus_consumer_detach(c);
    cbus_producer_close(p);
}

/* A registered producer SIGKILLed between its claim (the fetch_add on tail)
 * and marking the slot leaves a position no writer can be named for.  It is
 * skipped, counted as abandoned, after the stall timeout (200 ms here), and
 * not sooner: the same shared memory is what a live writer preempted there
 * leaves (bus_tail::live_unmarked_claim_is_not_excused_by_a_producer_dying_
 * after_it), and taking that one for dead loses its event.  An earlier rule
 * (a registered producer died, so skip after the abandon timeout) lost it. */
Test(bus_procs, producer_killed_between_claim_and_mark_is_skipped_after_the_stall_timeout)
{
    struct cbus_create_opts co = {.capacity = 1024, .abandon_timeout_ns = 5000000u,
                                  .stall_timeout_ns = 200000000u};
    cr_assert_eq(cbus_bus_create(name, &co), 0);
    cbus_producer *p;
    cr_assert_eq(cbus_producer_open(&p, name, NULL), 0);
    cbus_consumer *c;
    struct cbus_consumer_opts o = {.name = "reader", .mode = CBUS_LOSSLESS};
    cr_assert_eq(cbus_consumer_attach(&c, name, &o), 0);
    cbus_ctx ctx;
    cbus_ctx_init(&ctx);
    cr_assert_eq(emit_tagged(p, &ctx, 0, 0), 0);
    pid_t kid = fork();
    track_kid(kid);
    if (kid == 0) {
        cbus_producer *kp;
        struct cbus_producer_opts po = {.name = "victim"};
        if (cbus_producer_open(&kp, name, &po))
            _exit(3);
        struct cbus_shm_header *h =
            (struct cbus_shm_header *)cbus_bus_header(cbus_producer_bus(kp));
        atomic_fetch_add(&h->tail, 1); /* emit's claim, then death before the mark */
        raise(SIGKILL);
    }
    int st = test_wait_pid(kid, 5000);
    cr_assert(WIFSIGNALED(st));
    for (uint32_t i = 1; i <= 10; i++)
        cr_assert_eq(emit_tagged(p, &ctx, 0, i), 0);
    cr_assert_eq(poll_until(c, 11, 30000), 11, "the dead claim is skipped after the stall timeout");
    struct cbus_consumer_stats cs;
    cbus_consumer_stats(c, &cs);
    cr_assert_eq(cs.abandoned, 1);
    cr_assert_eq(cs.consumed + cs.abandoned + cs.lost, 12);
    cbus_consumer_detach(c);
    cbus_producer_close(p);
}

/* ...but a producer that was already dead when the claim was made cannot
 * have made it: a live writer's unmarked claim is still waited for. */
Test(bus_procs, unmarked_claim_is_not_excused_by_a_producer_dead_before_it)
{
    struct cbus_create_opts co = {.capacity = 1024, .abandon_timeout_ns = 1000000u,
                                  .stall_timeout_ns = HUGE_STALL_NS};
    cr_assert_eq(cbus_bus_create(name, &co), 0);
    pid_t kid = fork();
    track_kid(kid);
    if (kid == 0) {
        cbus_producer *kp;
        if (cbus_producer_open(&kp, name, NULL))
            _exit(3);
        raise(SIGKILL); /* dies registered, holding no claim */
    }
    int st = test_wait_pid(kid, 5000);
    cr_assert(WIFSIGNALED(st));
    cbus_producer *p;
    cr_assert_eq(cbus_producer_open(&p, name, NULL), 0);
    cbus_consumer *c;
    struct cbus_consumer_opts o = {.name = "reader", .mode = CBUS_LOSSLESS};
    cr_assert_eq(cbus_consumer_attach(&c, name, &o), 0);
    cbus_ctx ctx;
    cbus_ctx_init(&ctx);
    cr_assert_eq(emit_tagged(p, &ctx, 0, 0), 0);
    /* A live writer's claim, not yet marked (as if preempted right after
     * the fetch_add), then an event behind it. */
    cbus_bus *bus = cbus_producer_bus(p);
    struct cbus_shm_header *h = (struct cbus_shm_header *)cbus_bus_header(bus);
    uint64_t pos = atomic_fetch_add(&h->tail, 1);
    cr_assert_eq(emit_tagged(p, &ctx, 0, 2), 0);
    cr_assert_eq(poll_until(c, 1, 10000), 1);
    /* 100 abandon timeouts of polling: every chance to give up wrongly */
    struct cbus_event ev[4];
    uint64_t t0 = test_now_ms();
    while (test_now_ms() - t0 < 100) {
        cr_assert_eq(cbus_consumer_poll(c, ev, 4), 0, "nothing is delivered past a held claim");
        cbus_consumer_wait(c, 1000000u);
    }
    cr_assert_eq(cbus_consumer_poll(c, ev, 4), 0);
    struct cbus_consumer_stats cs;
    cbus_consumer_stats(c, &cs);
    cr_assert_eq(cs.abandoned, 0, "a live claim was excused by a producer dead before it");
    /* the writer completes its claim: both events arrive */
    struct cbus_slot *s = slot_at(bus, pos);
    atomic_store(&s->writer_pid, (uint32_t)getpid());
    atomic_store(&s->seq, CBUS_SEQ_BUSY(pos));
    struct cbus_event e;
    memset(&e, 0, sizeof e);
    e.kind = CBUS_EV_CUSTOM;
    struct tag t = {0, 1};
    memcpy(&e.u, &t, sizeof t);
    memcpy(&s->ev, &e, sizeof e);
    atomic_store_explicit(&s->seq, CBUS_SEQ_COMMITTED(pos), memory_order_release);
    uint64_t got = 0;
    t0 = test_now_ms();
    while (got < 2 && test_now_ms() - t0 < 10000) {
        int n = cbus_consumer_poll(c, ev, 4);
        cr_assert_geq(n, 0);
        for (int i = 0; i < n; i++) {
            memcpy(&t, &ev[i].u, sizeof t);
            cr_assert_eq(t.seq, got + 1);
            got++;
        }
        if (!n)
            cbus_consumer_wait(c, 2000000u);
    }
    cr_assert_eq(got, 2);
    cbus_consumer_stats(c, &cs);
    cr_assert_eq(cs.consumed, 3);
    cr_assert_eq(cs.abandoned + cs.lost, 0);
    cbus_consumer_detach(c);
    cbus_producer_close(p);
}

Test(bus_procs, claim_without_mark_is_skipped_after_stall_timeout)
{
    struct cbus_create_opts co = {.capacity = 1024, .abandon_timeout_ns = 5000000u,
                                  .stall_timeout_ns = 100000000u};
    cr_assert_eq(cbus_bus_create(name, &co), 0);
    cbus_producer *p;
    cr_assert_eq(cbus_producer_open(&p, name, NULL), 0);
    cbus_consumer *c;
    struct cbus_consumer_opts o = {.name = "reader", .mode = CBUS_LOSSY};
    cr_assert_eq(cbus_consumer_attach(&c, name, &o), 0);
    cbus_bus *bus = cbus_producer_bus(p);
    struct cbus_shm_header *h = (struct cbus_shm_header *)cbus_bus_header(bus);
    atomic_fetch_add(&h->tail, 1); /* died right after fetch_add */
    cbus_ctx ctx;
    cbus_ctx_init(&ctx);
    emit_tagged(p, &ctx, 0, 1);
    struct cbus_event ev[4];
    int got = 0;
    uint64_t t0 = test_now_ms();
    while (!got && test_now_ms() - t0 < 5000) {
        got = cbus_consumer_poll(c, ev, 4);
        if (!got)
            cbus_consumer_wait(c, 2000000u);
    }
    cr_assert_eq(got, 1);
    struct cbus_consumer_stats cs;
    cbus_consumer_stats(c, &cs);
    cr_assert_eq(cs.abandoned, 1);
    cbus_consumer_detach(c);
    cbus_producer_close(p);
}

Test(bus_procs, restarted_consumer_resumes_its_cursor)
{
    test_bus_create(name, 1024);
    cbus_producer *p;
    cr_assert_eq(cbus_producer_open(&p, name, NULL), 0);
    cbus_ctx ctx;
    cbus_ctx_init(&ctx);
    int ready[2];
    cr_assert_eq(pipe(ready), 0);
    pid_t kid = fork();
    track_kid(kid);
    if (kid == 0) {
        cbus_consumer *c;
        struct cbus_consumer_opts o = {.name = "durable", .mode = CBUS_LOSSLESS};
        if (cbus_consumer_attach(&c, name, &o))
            _exit(3);
        char b = 1;
        if (write(ready[1], &b, 1) != 1)
            _exit(4);
        struct cbus_event ev[8];
        uint64_t done = 0;
        while (done < 5) {
            int n = cbus_consumer_poll(c, ev, 1);
            if (n > 0) {
                done++;
                cbus_consumer_commit(c);
            } else {
                cbus_consumer_wait(c, 1000000u);
            }
        }
        for (;;)
            pause(); /* hold the entry until killed */
    }
    char b;
    cr_assert_eq(read(ready[0], &b, 1), 1);
    for (uint32_t i = 0; i < 20; i++)
        emit_tagged(p, &ctx, 0, i);
    /* wait until the child committed 5 */
    cbus_bus *bus = cbus_producer_bus(p);
    uint64_t t0 = test_now_ms();
    int idx = -1;
    while (test_now_ms() - t0 < 5000) {
        for (unsigned i = 0; i < CBUS_MAX_CONSUMERS; i++)
            if (cbus_bus_consumer_entry(bus, i)->state == CBUS_CSTATE_ACTIVE &&
                cbus_bus_consumer_entry(bus, i)->cursor == 5)
                idx = (int)i;
        if (idx >= 0)
            break;
        test_sleep_ms(1);
    }
    cr_assert_geq(idx, 0);
    cr_assert_eq(cbus_bus_consumer_alive(bus, (unsigned)idx), 1);
    cbus_consumer *dup;
    struct cbus_consumer_opts o = {.name = "durable", .mode = CBUS_LOSSLESS, .start = CBUS_START_RESUME};
    cr_assert_eq(cbus_consumer_attach(&dup, name, &o), -EBUSY, "the live owner keeps its name");
    kill(kid, SIGKILL);
    test_wait_pid(kid, 5000);
    cr_assert_eq(cbus_bus_consumer_alive(bus, (unsigned)idx), 0, "death is seen");
    cbus_consumer *c;
    cr_assert_eq(cbus_consumer_attach(&c, name, &o), 0);
    /* the dead entry was evicted once the new one gated producers */
    cr_assert_eq(CBUS_GATE_COUNT(cbus_bus_header(bus)->gate), 1);
    if (cbus_consumer_index(c) != idx)
        cr_assert_eq(cbus_bus_consumer_entry(bus, (unsigned)idx)->state, CBUS_CSTATE_FREE);
    struct cbus_event ev[32];
    int n = cbus_consumer_poll(c, ev, 32);
    cr_assert_eq(n, 15, "resumes after the 5 committed events");
    struct tag t;
    memcpy(&t, &ev[0].u, sizeof t);
    cr_assert_eq(t.seq, 5);
    cbus_consumer_detach(c);
    cbus_producer_close(p);
}

static atomic_int stop_flag;

static void *busy_producer(void *arg)
{
    cbus_producer *p = arg;
    cbus_ctx ctx;
    cbus_ctx_init(&ctx);
    uint32_t i = 0;
    while (!atomic_load(&stop_flag))
        emit_tagged(p, &ctx, 0, i++);
    return NULL;
}

Test(bus_procs, attach_and_detach_under_load)
{
    test_bus_create(name, 1024);
    cbus_producer *p;
    cr_assert_eq(cbus_producer_open(&p, name, NULL), 0);
    atomic_store(&stop_flag, 0);
    pthread_t th;
    pthread_create(&th, NULL, busy_producer, p);
    for (int round = 0; round < 200; round++) {
        cbus_consumer *c;
        struct cbus_consumer_opts o = {.name = "flip", .mode = round % 2 ? CBUS_LOSSLESS : CBUS_LOSSY};
        cr_assert_eq(cbus_consumer_attach(&c, name, &o), 0);
        struct cbus_event ev[64];
        uint64_t start = cbus_consumer_read_pos(c);
        for (int k = 0; k < 20; k++) {
            cr_assert_geq(cbus_consumer_poll(c, ev, 64), 0);
            cbus_consumer_commit(c);
        }
        struct cbus_consumer_stats st;
        cbus_consumer_stats(c, &st);
        cr_assert_eq(st.consumed + st.lost + st.abandoned, st.read_pos - start);
        cbus_consumer_detach(c);
    }
    atomic_store(&stop_flag, 1);
    pthread_join(th, NULL);
    const struct cbus_shm_header *h = cbus_bus_header(cbus_producer_bus(p));
    cr_assert_eq(CBUS_GATE_COUNT(h->gate), 0, "every detach released the gate");
    cbus_producer_close(p);
}

/* State letter of /proc/pid/stat ('S' = interruptible sleep), or 0. */
static char proc_state(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *r = strrchr(buf, ')');
    return r && r[1] == ' ' ? r[2] : 0;
}

Test(bus_procs, idle_consumer_sleeps_without_cpu_and_wakes_on_emit)
{
    /* A stall timeout of ten minutes makes the consumer sleep in one futex
     * wait for its whole 60 s timeout: it can return within the 20 s below
     * only if the emit's futex wake ends that sleep. */
    struct cbus_create_opts co = {.capacity = 1024, .stall_timeout_ns = HUGE_STALL_NS};
    cr_assert_eq(cbus_bus_create(name, &co), 0);
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    pid_t kid = fork();
    track_kid(kid);
    if (kid == 0) {
        cbus_consumer *c;
        struct cbus_consumer_opts o = {.name = "idle"};
        if (cbus_consumer_attach(&c, name, &o))
            _exit(3);
        /* 1 s of waiting on an empty ring */
        if (cbus_consumer_wait(c, 1000000000u) != 0)
            _exit(4);
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        uint64_t cpu_us = (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000u +
                          (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
        if (write(fds[1], &cpu_us, sizeof cpu_us) != sizeof cpu_us)
            _exit(5);
        /* now wait for a real event: the producer's futex wake ends it */
        int r = cbus_consumer_wait(c, 60000000000ull);
        _exit(r == 1 ? 0 : 6);
    }
    uint64_t cpu_us;
    cr_assert_eq(read(fds[0], &cpu_us, sizeof cpu_us), (ssize_t)sizeof cpu_us);
    cr_assert_lt(cpu_us, 200000, "an idle second cost %llu us of CPU", (unsigned long long)cpu_us);
    /* Prove it is asleep in the futex before emitting: its entry says
     * SLEEPING (set just before futex_wait, cleared right after), it has
     * announced itself (waiters, need_wake), and the kernel has it in an
     * interruptible sleep. */
    cbus_producer *p;
    cr_assert_eq(cbus_producer_open(&p, name, NULL), 0);
    cbus_bus *bus = cbus_producer_bus(p);
    const struct cbus_shm_header *h = cbus_bus_header(bus);
    struct cbus_consumer_entry *e = NULL;
    for (unsigned i = 0; i < CBUS_MAX_CONSUMERS && !e; i++)
        if (cbus_bus_consumer_entry(bus, i)->state == CBUS_CSTATE_ACTIVE)
            e = cbus_bus_consumer_entry(bus, i);
    cr_assert_not_null(e);
    uint64_t t0 = test_now_ms();
    int asleep = 0;
    while (!asleep && test_now_ms() - t0 < 20000) {
        asleep = (atomic_load(&e->flags) & CBUS_CFLAG_SLEEPING) && atomic_load(&h->waiters) >= 1 &&
                 atomic_load(&h->need_wake) == 1 && proc_state(kid) == 'S';
        if (!asleep)
            test_sleep_ms(1);
    }
    cr_assert(asleep, "the consumer never went to sleep on the futex");
    uint32_t wake_before = atomic_load(&h->wake_seq);
    cbus_ctx ctx;
    cbus_ctx_init(&ctx);
    cr_assert_eq(cbus_text(p, &ctx, "wake"), 0);
    cr_assert_neq(atomic_load(&h->wake_seq), wake_before, "the emit took the wake path");
    int st = test_wait_pid(kid, 20000);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "woken by the emit (status %d)", st);
    cbus_producer_close(p);
}
