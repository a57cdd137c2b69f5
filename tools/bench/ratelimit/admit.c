/* cbus_admit() cost: median ns per call over batches, for a context with
 * user, session, model and provider set (five table lookups), with the
 * table empty, holding other keys' verdicts, and throttling this user.
 *
 *   cbus-bench-ratelimit-admit [calls_per_batch] [batches]
 */
#include <cbus/admit.h>
#include <cbus/bus.h>
#include <cbus/producer.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static uint64_t mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double run(cbus_producer *p, cbus_ctx *ctx, unsigned calls, unsigned batches, int expect)
{
    double *ns = malloc(batches * sizeof *ns);
    volatile int sink = 0;
    for (unsigned b = 0; b < batches; b++) {
        uint64_t t0 = mono();
        for (unsigned i = 0; i < calls; i++) {
            uint64_t retry;
            sink += cbus_admit(p, ctx, &retry);
        }
        ns[b] = (double)(mono() - t0) / calls;
    }
    uint64_t retry;
    if (cbus_admit(p, ctx, &retry) != expect)
        fprintf(stderr, "unexpected verdict\n");
    qsort(ns, batches, sizeof *ns, cmp);
    double m = ns[batches / 2];
    free(ns);
    (void)sink;
    return m;
}

int main(int argc, char **argv)
{
    unsigned calls = argc > 1 ? (unsigned)atoi(argv[1]) : 10000;
    unsigned batches = argc > 2 ? (unsigned)atoi(argv[2]) : 201;
    char name[32];
    snprintf(name, sizeof name, "rlbench%d", (int)getpid());
    struct cbus_create_opts o = {.capacity = 1024};
    int r = cbus_bus_create(name, &o);
    cbus_bus *bus;
    cbus_producer *p;
    unsigned w;
    if (r || (r = cbus_bus_open(&bus, name, 0)) || (r = cbus_producer_open_bus(&p, bus, NULL)) ||
        (r = cbus_admit_writer_register(bus, "bench", &w))) {
        fprintf(stderr, "setup: %s\n", cbus_strerror(r));
        cbus_bus_destroy(name);
        return 1;
    }
    cbus_ctx ctx;
    cbus_ctx_init(&ctx);
    cbus_ctx_set_user(&ctx, "alice@example.com");
    cbus_ctx_set_session(&ctx, "conv-8c1f3b2e");
    cbus_ctx_set_model(&ctx, "gpt-4o");
    cbus_ctx_set_provider(&ctx, "openai");

    double empty = run(p, &ctx, calls, batches, CBUS_ALLOW);
    /* 2000 other users throttled: about half the default 4096-entry table. */
    uint64_t until = cbus_now_ns() + UINT64_C(600000000000);
    for (unsigned i = 0; i < 2000; i++) {
        char u[32];
        snprintf(u, sizeof u, "user-%u", i);
        cbus_admit_publish(bus, w, CBUS_SCOPE_USER, u, CBUS_THROTTLED, until);
    }
    double busy = run(p, &ctx, calls, batches, CBUS_ALLOW);
    cbus_admit_publish(bus, w, CBUS_SCOPE_USER, "alice@example.com", CBUS_THROTTLED, until);
    double thr = run(p, &ctx, calls, batches, CBUS_THROTTLED);
    printf("cbus_admit median ns/call (%u batches x %u calls, 5 scopes checked):\n", batches, calls);
    printf("  table empty                  %6.1f\n", empty);
    printf("  2000 other keys throttled    %6.1f\n", busy);
    printf("  this user throttled          %6.1f\n", thr);
    cbus_admit_writer_release(bus, w);
    cbus_producer_close(p);
    cbus_bus_close(bus);
    cbus_bus_destroy(name);
    return 0;
}
