/* Producer bookkeeping across threads (issue 12, item 20): a thread's
 * "emitted" counts are kept per thread and flushed every 256 emits; a
 * thread that exits with fewer pending (a pool thread, a Node worker) must
 * flush them, so the producer's and the bus's counts stay exact. */
#include <criterion/criterion.h>

#include <cbus/bus.h>
#include <cbus/layout.h>
#include <cbus/producer.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

static void *mem;
static size_t len;
static cbus_bus *bus;

static void setup(void)
{
    struct cbus_create_opts o = {.capacity = 1u << 14};
    len = cbus_bus_size(&o);
    mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(mem, MAP_FAILED);
    cr_assert_eq(cbus_bus_format(mem, len, "prod", &o), 0);
    cr_assert_eq(cbus_bus_open_mem(&bus, mem, len), 0);
}

static void teardown(void)
{
    cbus_bus_close(bus);
    munmap(mem, len);
}

TestSuite(bus_producer, .init = setup, .fini = teardown, .timeout = 60);

struct job {
    cbus_producer *p;
    unsigned n;
    pthread_barrier_t *hold; /* if set: meet here twice after emitting, then exit */
};

static void *emitter(void *arg)
{
    struct job *j = arg;
    cbus_ctx ctx;
    cbus_ctx_init(&ctx);
    for (unsigned i = 0; i < j->n; i++)
        cr_assert_eq(cbus_text(j->p, &ctx, "x"), 0);
    if (j->hold) {
        pthread_barrier_wait(j->hold); /* emitted */
        pthread_barrier_wait(j->hold); /* the producer is closed: now exit */
    }
    return NULL;
}

/* The producer table entry with this name (the per-producer counts cbusctl
 * stat shows). */
static struct cbus_producer_entry *entry_named(const char *nm)
{
    for (unsigned i = 0; i < CBUS_MAX_PRODUCERS; i++) {
        struct cbus_producer_entry *e = cbus_bus_producer_entry(bus, i);
        if (e && atomic_load(&e->in_use) && !strncmp(e->name, nm, sizeof e->name))
            return e;
    }
    cr_assert_fail("no producer entry %s", nm);
    return NULL;
}

Test(bus_producer, threads_that_exit_flush_their_emitted_counts)
{
    cbus_producer *p;
    cr_assert_eq(cbus_producer_open_bus(&p, bus, &(struct cbus_producer_opts){.name = "pool"}), 0);
    /* Below, at, and past the 256 flush: 1, 100, 255, 256, 257, 300, 511, 1000. */
    static const unsigned counts[] = {1, 100, 255, 256, 257, 300, 511, 1000};
    enum { T = sizeof counts / sizeof counts[0] };
    pthread_t th[T];
    struct job jobs[T];
    uint64_t want = 0;
    for (unsigned i = 0; i < T; i++) {
        jobs[i] = (struct job){.p = p, .n = counts[i]};
        want += counts[i];
        cr_assert_eq(pthread_create(&th[i], NULL, emitter, &jobs[i]), 0);
    }
    for (unsigned i = 0; i < T; i++)
        cr_assert_eq(pthread_join(th[i], NULL), 0);
    struct cbus_producer_stats st;
    cr_assert_eq(cbus_producer_stats(p, &st), 0);
    cr_expect_eq(st.emitted, want, "producer emitted %llu, threads emitted %llu",
                 (unsigned long long)st.emitted, (unsigned long long)want);
    struct cbus_producer_entry *e = entry_named("pool");
    cr_expect_eq(atomic_load(&e->emitted), want, "the bus's entry says %llu of %llu",
                 (unsigned long long)atomic_load(&e->emitted), (unsigned long long)want);
    cr_expect_eq(cbus_bus_tail(bus), want, "every emit took a position");
    cbus_producer_close(p);
}

Test(bus_producer, thread_exit_flushes_into_the_producer_it_last_used)
{
    /* A pool thread serves two producers in turn; at exit its pending
     * counts go to the one it used last (the switch itself may drop the
     * other's < 256, as documented), never to a wrong one. */
    cbus_producer *a, *b;
    cr_assert_eq(cbus_producer_open_bus(&a, bus, &(struct cbus_producer_opts){.name = "a"}), 0);
    cr_assert_eq(cbus_producer_open_bus(&b, bus, &(struct cbus_producer_opts){.name = "b"}), 0);
    struct job ja = {.p = a, .n = 512}, jb = {.p = b, .n = 77};
    pthread_t th;
    /* one thread: 512 on a (flushed at 256 and 512), then 77 on b, then exit */
    struct job *seq[2] = {&ja, &jb};
    cr_assert_eq(pthread_create(&th, NULL, emitter, seq[0]), 0);
    cr_assert_eq(pthread_join(th, NULL), 0);
    cr_assert_eq(pthread_create(&th, NULL, emitter, seq[1]), 0);
    cr_assert_eq(pthread_join(th, NULL), 0);
    struct cbus_producer_stats sa, sb;
    cr_assert_eq(cbus_producer_stats(a, &sa), 0);
    cr_assert_eq(cbus_producer_stats(b, &sb), 0);
    cr_expect_eq(sa.emitted, 512);
    cr_expect_eq(sb.emitted, 77);
    cr_expect_eq(atomic_load(&entry_named("b")->emitted), 77);
    cbus_producer_close(a);
    cbus_producer_close(b);
}

Test(bus_producer, thread_exiting_after_close_touches_nothing)
{
    /* The producer is closed (and freed) while a thread that emitted with
     * it is still alive: its exit must not flush into freed memory (ASan
     * builds catch a use after free here). */
    cbus_producer *p;
    cr_assert_eq(cbus_producer_open_bus(&p, bus, &(struct cbus_producer_opts){.name = "gone"}), 0);
    pthread_barrier_t hold;
    cr_assert_eq(pthread_barrier_init(&hold, NULL, 2), 0);
    struct job j = {.p = p, .n = 10, .hold = &hold};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, emitter, &j), 0);
    cbus_producer *other;
    cr_assert_eq(cbus_producer_open_bus(&other, bus, &(struct cbus_producer_opts){.name = "other"}), 0);
    pthread_barrier_wait(&hold); /* it has emitted its 10 */
    cbus_producer_close(p);
    pthread_barrier_wait(&hold); /* let it exit, after the close */
    cr_assert_eq(pthread_join(th, NULL), 0);
    pthread_barrier_destroy(&hold);
    struct cbus_producer_stats so;
    cr_assert_eq(cbus_producer_stats(other, &so), 0);
    cr_expect_eq(so.emitted, 0, "a closed producer's counts went to another one");
    cbus_producer_close(other);
}

/* ---- who emitted: pid and tid (issue 13 item 5) ----------------------------
 * The emit path reads the thread's pid and tid from the producer's
 * thread-local state, filled at a thread's first emit.  A pre-fork server
 * opens its producer in the parent and emits from forked workers: after a
 * fork the child's thread must start over, or its events (and the slots it
 * claims, which consumers check for a dead writer) carry the parent's ids. */
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cbus/consumer.h>

static uint32_t my_tid(void)
{
    return (uint32_t)syscall(SYS_gettid);
}

struct who {
    cbus_producer *p;
    uint32_t tid;
};

static void *emit_as_thread(void *arg)
{
    struct who *w = arg;
    cbus_ctx ctx;
    cbus_ctx_init(&ctx);
    w->tid = my_tid();
    cr_assert_eq(cbus_custom(w->p, &ctx, "thread", NULL), 0);
    return NULL;
}

/* Emits "parent", then "thread" from a thread, then "child" from a forked
 * child (which exits without closing); returns the child's pid. */
static pid_t emit_parent_thread_child(cbus_bus *b, cbus_producer **pp, struct who *w)
{
    cr_assert_eq(cbus_producer_open_bus(pp, b, NULL), 0);
    cbus_ctx ctx;
    cbus_ctx_init(&ctx);
    cr_assert_eq(cbus_custom(*pp, &ctx, "parent", NULL), 0);
    *w = (struct who){.p = *pp};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, emit_as_thread, w), 0);
    pthread_join(th, NULL);
    pid_t kid = fork();
    cr_assert_geq(kid, 0);
    if (kid == 0)
        _exit(cbus_custom(*pp, &ctx, "child", NULL) == 0 ? 0 : 1);
    int ws;
    cr_assert_eq(waitpid(kid, &ws, 0), kid);
    cr_assert(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
    return kid;
}

static void check_ids(cbus_bus *b, pid_t kid, const struct who *w, uint64_t *child_event_id)
{
    cbus_consumer *c;
    struct cbus_consumer_opts o = {.name = "who", .start = CBUS_START_OLDEST};
    cr_assert_eq(cbus_consumer_attach_bus(&c, b, &o), 0);
    struct cbus_event ev[8];
    int n = cbus_consumer_poll(c, ev, 8);
    cr_assert_eq(n, 3);
    unsigned seen = 0;
    for (int i = 0; i < n; i++) {
        if (!strcmp(ev[i].name, "parent")) {
            cr_assert_eq(ev[i].pid, (uint32_t)getpid());
            cr_assert_eq(ev[i].tid, my_tid());
        } else if (!strcmp(ev[i].name, "thread")) {
            cr_assert_eq(ev[i].pid, (uint32_t)getpid());
            cr_assert_eq(ev[i].tid, w->tid, "the emitting thread's tid");
        } else {
            cr_assert_str_eq(ev[i].name, "child");
            cr_assert_eq(ev[i].pid, (uint32_t)kid, "a forked child's events carry its pid");
            cr_assert_eq(ev[i].tid, (uint32_t)kid, "and its thread's tid");
            *child_event_id = ev[i].event_id;
        }
        seen++;
    }
    cr_assert_eq(seen, 3);
    cbus_consumer_detach(c);
}

Test(bus_producer, events_carry_the_emitting_thread_and_process_also_after_fork)
{
    cbus_producer *p;
    struct who w;
    pid_t kid = emit_parent_thread_child(bus, &p, &w);
    uint64_t id;
    check_ids(bus, kid, &w, &id);
    cbus_producer_close(p);
}

/* On a bus of lanes the child takes a lane of its own (owned by its pid),
 * not the lane of the parent's thread it was forked from. */
Test(bus_producer, a_forked_child_takes_its_own_lane)
{
    struct cbus_create_opts o = {.capacity = 1024, .lanes = 4};
    size_t l2 = cbus_bus_size(&o);
    void *m2 = mmap(NULL, l2, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(m2, MAP_FAILED);
    cbus_bus *b2;
    cr_assert_eq(cbus_bus_format(m2, l2, "lanes", &o), 0);
    cr_assert_eq(cbus_bus_open_mem(&b2, m2, l2), 0);
    cbus_producer *p;
    struct who w;
    pid_t kid = emit_parent_thread_child(b2, &p, &w);
    uint64_t id = 0;
    check_ids(b2, kid, &w, &id);
    unsigned lane = (unsigned)(id % 4);
    uint32_t pid = 0, tid = 0;
    cr_assert_eq(cbus_bus_lane_owner(b2, lane, &pid, &tid), 0);
    cr_assert_eq(pid, (uint32_t)kid, "the child's lane is owned by the child (lane %u)", lane);
    cr_assert_eq(tid, (uint32_t)kid);
    cbus_producer_close(p);
    cbus_bus_close(b2);
    munmap(m2, l2);
}

/* A pre-fork server's worker that closes the producer it inherited (Python's
 * multiprocessing, gunicorn) must leave the parent's table entry alone: the
 * parent still emits under it. */
Test(bus_producer, a_forked_child_closing_its_copy_keeps_the_parents_entry)
{
    cbus_producer *p;
    cr_assert_eq(cbus_producer_open_bus(&p, bus, &(struct cbus_producer_opts){.name = "forker"}), 0);
    cbus_ctx ctx;
    cbus_ctx_init(&ctx);
    cr_assert_eq(cbus_text(p, &ctx, "before"), 0);
    pid_t kid = fork();
    cr_assert_geq(kid, 0);
    if (kid == 0) {
        int rc = cbus_text(p, &ctx, "child");
        cbus_producer_close(p);
        _exit(rc == 0 ? 0 : 1);
    }
    int ws;
    cr_assert_eq(waitpid(kid, &ws, 0), kid);
    cr_assert(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
    struct cbus_producer_entry *e = entry_named("forker");
    cr_assert_eq(atomic_load(&e->pid), (uint32_t)getpid(), "still the parent's entry");
    /* a second producer opened now must not be handed the parent's entry */
    cbus_producer *q;
    cr_assert_eq(cbus_producer_open_bus(&q, bus, &(struct cbus_producer_opts){.name = "other"}), 0);
    cr_assert_neq(entry_named("other"), e);
    cr_assert_eq(cbus_text(p, &ctx, "after"), 0);
    cbus_producer_close(q);
    cbus_producer_close(p);
}

/* ---- the clock on the emit path (issue 13 item 5) ---------------------------
 * The common case is inline (rdtsc against the thread's anchor); a thread's
 * first emit, a re-anchor after a second of ticks and a bus without a TSC
 * clock take the out-of-line path.  Each must give CLOCK_MONOTONIC and
 * CLOCK_REALTIME: within a millisecond of a bracket of clock_gettime calls
 * (the TSC rate is calibrated to ppm; preemption only widens the bracket). */
#include <time.h>

static uint64_t ts_ns(clockid_t id)
{
    struct timespec t;
    clock_gettime(id, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void emit_in_bracket(cbus_producer *pr, cbus_consumer *c, const char *what)
{
    cbus_ctx cx;
    cbus_ctx_init(&cx);
    uint64_t m0 = ts_ns(CLOCK_MONOTONIC), r0 = ts_ns(CLOCK_REALTIME);
    cr_assert_eq(cbus_text(pr, &cx, what), 0);
    uint64_t m1 = ts_ns(CLOCK_MONOTONIC), r1 = ts_ns(CLOCK_REALTIME);
    struct cbus_event ev;
    cr_assert_eq(cbus_consumer_poll(c, &ev, 1), 1);
    const uint64_t ms = 1000000u;
    cr_assert(ev.ts_mono_ns + ms >= m0 && ev.ts_mono_ns <= m1 + ms, "%s: mono %llu not in [%llu, %llu]",
              what, (unsigned long long)ev.ts_mono_ns, (unsigned long long)m0, (unsigned long long)m1);
    cr_assert(ev.ts_realtime_ns + ms >= r0 && ev.ts_realtime_ns <= r1 + ms, "%s: realtime off", what);
}

struct bracket_job {
    cbus_producer *p;
    cbus_consumer *c;
};

static void *bracket_thread(void *arg)
{
    struct bracket_job *j = arg;
    emit_in_bracket(j->p, j->c, "a new thread's first emit");
    emit_in_bracket(j->p, j->c, "its second");
    return NULL;
}

static void clock_case(cbus_bus *b)
{
    cbus_producer *pr;
    cr_assert_eq(cbus_producer_open_bus(&pr, b, NULL), 0);
    cbus_consumer *c;
    struct cbus_consumer_opts o = {.name = "clock", .start = CBUS_START_NEWEST};
    cr_assert_eq(cbus_consumer_attach_bus(&c, b, &o), 0);
    emit_in_bracket(pr, c, "first emit");
    for (int i = 0; i < 1000; i++)
        emit_in_bracket(pr, c, "inline path");
    /* Half a second of ticks from the anchor, still the inline path: a rate
     * off by any factor shows here. */
    struct timespec half = {0, 500 * 1000 * 1000};
    while (nanosleep(&half, &half))
        ;
    emit_in_bracket(pr, c, "inline path, half a second on");
    struct timespec d = {1, 100 * 1000 * 1000}; /* past the one-second re-anchor */
    while (nanosleep(&d, &d))
        ;
    emit_in_bracket(pr, c, "after a re-anchor");
    struct bracket_job j = {pr, c};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, bracket_thread, &j), 0);
    pthread_join(th, NULL);
    cbus_consumer_detach(c);
    cbus_producer_close(pr);
}

Test(bus_producer, emit_timestamps_follow_the_system_clocks_on_every_clock_path)
{
    clock_case(bus);
}

Test(bus_producer, a_bus_without_a_tsc_clock_stamps_with_clock_gettime)
{
    struct cbus_create_opts o = {.capacity = 1024};
    size_t l2 = cbus_bus_size(&o);
    void *m2 = mmap(NULL, l2, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(m2, MAP_FAILED);
    cr_assert_eq(cbus_bus_format(m2, l2, "gettime", &o), 0);
    ((struct cbus_shm_header *)m2)->clock_source = CBUS_CLOCK_GETTIME;
    cbus_bus *b2;
    cr_assert_eq(cbus_bus_open_mem(&b2, m2, l2), 0);
    clock_case(b2);
    cbus_bus_close(b2);
    munmap(m2, l2);
}
