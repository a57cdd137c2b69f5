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
