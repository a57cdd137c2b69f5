/* Many threads calling cbus_admit() while the limiter publishes and clears
 * verdicts: a plain program (Criterion aborts under TSan), registered with
 * ctest as a stress test.  Exit 0 pass, 1 fail, 77 skip (no /dev/shm; a failure
 * under CBUS_TEST_STRICT=1). */
#include <cbus/admit.h>
#include <cbus/bus.h>
#include <cbus/producer.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "limiter.h"
#include "ratelimit_config.h"
#include "support.h"

#define READERS 4
#define USERS 8
#define CHURN_NS UINT64_C(1000000000)

static cbus_bus *bus;
static cbus_producer *prod;
static unsigned writer;
static atomic_int phase;          /* 0 churn, 1 final verdicts published */
static atomic_int failures;

static int publish(void *ctx, unsigned scope, uint64_t key_hash, const char *key,
                   unsigned verdict, uint64_t until)
{
    (void)ctx;
    return cbus_admit_publish_hash(bus, writer, scope, key_hash, key, verdict, until);
}

static void *reader(void *arg)
{
    unsigned id = (unsigned)(uintptr_t)arg;
    cbus_ctx ctx[USERS];
    for (unsigned u = 0; u < USERS; u++) {
        char name[16];
        snprintf(name, sizeof name, "user%u", u);
        cbus_ctx_init(&ctx[u]);
        cbus_ctx_set_user(&ctx[u], name);
        cbus_ctx_set_model(&ctx[u], "gpt-4o");
    }
    unsigned long calls = 0, throttled = 0;
    for (unsigned i = 0; atomic_load_explicit(&phase, memory_order_acquire) == 0; i++) {
        uint64_t retry = UINT64_MAX;
        int v = cbus_admit(prod, &ctx[(i + id) % USERS], &retry);
        calls++;
        if (v == CBUS_THROTTLED) {
            throttled++;
            /* a throttle is never longer than the limiter could ask for */
            if (retry == 0 || retry > UINT64_C(60000000000)) {
                fprintf(stderr, "reader %u: throttled with retry %llu\n", id, (unsigned long long)retry);
                atomic_fetch_add(&failures, 1);
            }
        } else if (v != CBUS_ALLOW) {
            fprintf(stderr, "reader %u: cbus_admit returned %d\n", id, v);
            atomic_fetch_add(&failures, 1);
        }
    }
    /* The writer published a long throttle for every user before phase 1
     * (RELEASE on phase; our ACQUIRE above): every user reads throttled. */
    for (unsigned u = 0; u < USERS; u++)
        if (cbus_admit(prod, &ctx[u], NULL) != CBUS_THROTTLED) {
            fprintf(stderr, "reader %u: user%u not throttled after the final verdict\n", id, u);
            atomic_fetch_add(&failures, 1);
        }
    fprintf(stderr, "reader %u: %lu calls, %lu throttled\n", id, calls, throttled);
    return NULL;
}

int main(void)
{
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
        cbus_admit_writer_register(bus, "ratelimit", &writer)) {
        fprintf(stderr, "setup failed\n");
        cbus_bus_destroy(name);
        return 1;
    }
    struct rl_config cfg;
    char err[256];
    /* rpm=600 burst=3: a few requests throttle a user for ~100 ms. */
    if (rl_config_parse(&cfg, "stress", "[rules]\nrule = user=* rpm=600 burst=3\n"
                                        "rule = model=* rpm=100000 burst=50\n", err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    rl_limiter *l;
    if (rl_new(&l, &cfg.rules, &cfg.opts))
        return 1;
    rl_config_free(&cfg);

    pthread_t th[READERS];
    for (unsigned i = 0; i < READERS; i++)
        pthread_create(&th[i], NULL, reader, (void *)(uintptr_t)i);

    struct cbus_event ev;
    memset(&ev, 0, sizeof ev);
    ev.kind = CBUS_EV_LLM_START;
    strcpy(ev.model, "gpt-4o");
    /* A second of traffic from well-behaved producers: a request is sent
     * (and counted) only when the limiter allows it, so each user cycles
     * through burst, throttle (~100 ms), lapse and clear. */
    uint64_t start = cbus_now_ns();
    for (unsigned i = 0;; i++) {
        uint64_t now = cbus_now_ns();
        if (now - start > CHURN_NS)
            break;
        snprintf(ev.user, sizeof ev.user, "user%u", i % USERS);
        ev.ts_mono_ns = now;
        if (rl_check(l, &ev, now, NULL) == CBUS_ALLOW)
            rl_feed(l, &ev);
        rl_drain(l, now, publish, NULL);
        if (i % 64 == 0)
            cbus_admit_writer_heartbeat(bus, writer);
        struct timespec ts = {0, 100000};
        nanosleep(&ts, NULL);
    }
    /* Final verdicts, then phase 1. */
    uint64_t until = cbus_now_ns() + UINT64_C(30000000000);
    for (unsigned u = 0; u < USERS; u++) {
        snprintf(ev.user, sizeof ev.user, "user%u", u);
        if (cbus_admit_publish(bus, writer, CBUS_SCOPE_USER, ev.user, CBUS_THROTTLED, until)) {
            fprintf(stderr, "final publish failed\n");
            atomic_fetch_add(&failures, 1);
        }
    }
    cbus_admit_writer_heartbeat(bus, writer);
    atomic_store_explicit(&phase, 1, memory_order_release);
    for (unsigned i = 0; i < READERS; i++)
        pthread_join(th[i], NULL);

    struct rl_stats st;
    rl_get_stats(l, &st);
    fprintf(stderr, "writer: %llu throttles, %llu published, %llu cleared, %llu failed\n",
            (unsigned long long)st.throttles, (unsigned long long)st.published,
            (unsigned long long)st.cleared, (unsigned long long)st.publish_failed);
    if (!st.published || !st.cleared) {
        fprintf(stderr, "the churn published or cleared nothing\n");
        atomic_fetch_add(&failures, 1);
    }
    rl_free(l);
    cbus_admit_writer_release(bus, writer);
    cbus_producer_close(prod);
    cbus_bus_close(bus);
    cbus_bus_destroy(name);
    int f = atomic_load(&failures);
    fprintf(stderr, "%s: %d failures\n", f ? "FAIL" : "ok", f);
    return f ? 1 : 0;
}
