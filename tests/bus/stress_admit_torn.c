/* cbus_admit() against a verdict entry rewritten while it reads: the
 * seqlock's re-check must turn every read that overlapped a write into a
 * retry, never a verdict made of two writes (docs/mutation.md, mutant 01:
 * without the re-check only an odd seq at the start was caught).
 *
 * One writer flips one user's entry between two verdicts, (THROTTLED, until
 * 10 s from now) and (BUDGET_EXCEEDED, until 100 s from now), as fast as it
 * can; a reader calls cbus_admit() for that user meanwhile.  A THROTTLED
 * answer with a retry past the 10 s is the first write's verdict with the
 * second's until: torn.  A plain program (Criterion aborts under TSan),
 * registered as a stress test; the count of torn reads must be 0, which
 * needs no timing: with the re-check removed, two threads on two CPUs tear
 * within a few hundred thousand changes seen.  Exit 0 pass, 1 fail, 77 skip
 * (one CPU, or no /dev/shm: a failure under CBUS_TEST_STRICT=1). */
#include <cbus/admit.h>
#include <cbus/bus.h>
#include <cbus/producer.h>

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "support.h"

/* The reader must see the verdict change this often (each change is a read
 * that raced the writer closely), within at most MAX_FLIPS writes.  Counting
 * changes rather than writes keeps the test's power on a loaded machine,
 * where the two threads overlap less.  The threads are also pinned to two
 * different CPUs: sharing one, they would alternate by time slices and the
 * reader would see a change about once a slice. */
#define CHANGES   200000u
#define MAX_FLIPS 200000000u

static cbus_bus *bus;
static cbus_producer *prod;
static unsigned writer;
static atomic_int done;
static uint64_t until_a, until_b;
static int cpu_w = -1, cpu_r = -1;

static void pin(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

/* Two CPUs this process may run on, or -1. */
static int pick_cpus(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set))
        return -1;
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &set)) {
            if (cpu_w < 0)
                cpu_w = c;
            else if (cpu_r < 0)
                cpu_r = c;
        }
    return cpu_r < 0 ? -1 : 0;
}

static void *flipper(void *arg)
{
    (void)arg;
    pin(cpu_w);
    for (unsigned i = 0; i < MAX_FLIPS && !atomic_load_explicit(&done, memory_order_relaxed); i++) {
        cbus_admit_publish(bus, writer, CBUS_SCOPE_USER, "torn-user", CBUS_THROTTLED, until_a);
        cbus_admit_publish(bus, writer, CBUS_SCOPE_USER, "torn-user", CBUS_BUDGET_EXCEEDED, until_b);
        if (i % 4096 == 0)
            cbus_admit_writer_heartbeat(bus, writer);
    }
    atomic_store(&done, 1);
    return NULL;
}

int main(void)
{
    if (pick_cpus())
        return cbus_test_skip_code("a torn read needs two CPUs running at once");
    char name[64];
    test_bus_name(name, sizeof name);
    struct cbus_create_opts o = {.capacity = 1024, .admission_entries = 64};
    cbus_bus_destroy(name);
    int r = cbus_bus_create(name, &o);
    if (r) {
        fprintf(stderr, "cbus_bus_create: %s\n", cbus_strerror(r));
        return cbus_test_skip_code("no bus can be created here (/dev/shm)");
    }
    if (cbus_bus_open(&bus, name, 0) || cbus_producer_open_bus(&prod, bus, NULL) ||
        cbus_admit_writer_register(bus, "torn", &writer)) {
        fprintf(stderr, "setup failed\n");
        cbus_bus_destroy(name);
        return 1;
    }
    const uint64_t now = cbus_now_ns();
    until_a = now + UINT64_C(10000000000);
    until_b = now + UINT64_C(100000000000);
    cbus_admit_publish(bus, writer, CBUS_SCOPE_USER, "torn-user", CBUS_THROTTLED, until_a);
    cbus_ctx ctx;
    cbus_ctx_init(&ctx);
    cbus_ctx_set_user(&ctx, "torn-user");
    pin(cpu_r);
    pthread_t th;
    pthread_create(&th, NULL, flipper, NULL);
    unsigned long calls = 0, throttled = 0, budget = 0, torn = 0, other = 0, changes = 0;
    int last = -1;
    while (!atomic_load(&done)) {
        uint64_t retry = 0;
        int v = cbus_admit(prod, &ctx, &retry);
        calls++;
        if (v != last && ++changes >= CHANGES)
            atomic_store(&done, 1);
        last = v;
        if (v == CBUS_THROTTLED) {
            throttled++;
            /* until_a is at most 10 s ahead: a longer retry came from until_b */
            if (retry > UINT64_C(20000000000))
                torn++;
        } else if (v == CBUS_BUDGET_EXCEEDED) {
            budget++;
        } else {
            other++; /* a fail-open producer's answer to an entry torn past its retries */
        }
    }
    pthread_join(th, NULL);
    fprintf(stderr, "%lu calls: %lu throttled, %lu budget exceeded, %lu other, %lu changes, %lu torn\n",
            calls, throttled, budget, other, changes, torn);
    cbus_admit_writer_release(bus, writer);
    cbus_producer_close(prod);
    cbus_bus_close(bus);
    cbus_bus_destroy(name);
    if (changes < CHANGES) {
        fprintf(stderr, "FAIL: the reader saw the verdict change only %lu times: the test proved nothing\n",
                changes);
        return 1;
    }
    if (torn) {
        fprintf(stderr, "FAIL: %lu verdicts made of two writes\n", torn);
        return 1;
    }
    fprintf(stderr, "ok\n");
    return 0;
}
