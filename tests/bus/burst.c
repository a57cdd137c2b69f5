/* Kinds under a burst (issue 13 item 2): a token flood that fills the ring up
 * to a slow lossless consumer must not cost the llm_end that carries the
 * run's usage, nor hold the host past the bound per call.
 *
 * No test here reads a clock: "waited" is the producer's recorded wait,
 * which is nonzero exactly when a call waited at the bound, and the bounds
 * are either far beyond anything scheduling can cause (a consumer that
 * must not be untethered: a 60 s stall timeout) or the point of the test
 * (a 2 ms wait that must, or must not, be spent). */
#include <cbus/bus.h>
#include <cbus/consumer.h>
#include <cbus/producer.h>

#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support.h"

static char name[64];

static void setup(void)
{
    test_bus_name(name, sizeof name);
}

static void teardown(void)
{
    cbus_bus_destroy(name);
}

TestSuite(bus_burst, .init = setup, .fini = teardown, .timeout = 240);

#define STALL_NS UINT64_C(60000000000) /* no consumer here is ever cut loose */
#define WAIT_NS  UINT64_C(2000000)     /* the per-call bound, when a call may wait */
#define ENDS     (CBUS_KIND_BIT(CBUS_EV_LLM_END) | CBUS_KIND_BIT(CBUS_EV_LLM_ERROR))

static void make_bus(uint32_t lanes, uint64_t capacity)
{
    struct cbus_create_opts o = {.capacity = capacity, .lanes = lanes,
                                 .lossless_wait_ns = WAIT_NS, .stall_timeout_ns = STALL_NS};
    cr_assert_eq(cbus_bus_create(name, &o), 0);
}

static cbus_consumer *attach_lossless(const char *cname, uint64_t kinds)
{
    cbus_consumer *c;
    struct cbus_consumer_opts o = {.name = cname, .mode = CBUS_LOSSLESS, .kinds = kinds};
    cr_assert_eq(cbus_consumer_attach(&c, name, &o), 0);
    return c;
}

static struct cbus_producer_stats pstats(cbus_producer *p)
{
    struct cbus_producer_stats s;
    cr_assert_eq(cbus_producer_stats(p, &s), 0);
    return s;
}

/* Drains c; counts events of kind k (all kinds if k is 0). */
static uint64_t drain(cbus_consumer *c, unsigned k, uint64_t *total)
{
    struct cbus_event ev[256];
    uint64_t n_k = 0;
    for (int n; (n = cbus_consumer_poll(c, ev, 256)) > 0;) {
        for (int i = 0; i < n; i++)
            n_k += !k || ev[i].kind == k;
        if (total)
            *total += (uint64_t)n;
        cr_assert_eq(cbus_consumer_commit(c), 0);
    }
    return n_k;
}

Test(bus_burst, kinds_are_validated_and_reported)
{
    make_bus(1, 1024);
    cbus_consumer *c;
    struct cbus_consumer_opts o = {.name = "k", .mode = CBUS_LOSSY, .kinds = ENDS};
    cr_assert_eq(cbus_consumer_attach(&c, name, &o), -EINVAL, "a lossy consumer gates nobody");
    o.mode = CBUS_LOSSLESS;
    o.kinds = CBUS_KIND_BIT(CBUS_EV_NONE);
    cr_assert_eq(cbus_consumer_attach(&c, name, &o), -EINVAL, "CBUS_EV_NONE is never emitted");
    o.kinds = CBUS_KIND_BIT(CBUS_EV__COUNT);
    cr_assert_eq(cbus_consumer_attach(&c, name, &o), -EINVAL, "a kind this library does not know");
    o.kinds = ENDS;
    cr_assert_eq(cbus_consumer_attach(&c, name, &o), 0);
    struct cbus_consumer_stats st;
    cr_assert_eq(cbus_consumer_stats(c, &st), 0);
    cr_assert_eq(st.kinds, ENDS);
    cbus_consumer_detach(c);
}

/* A consumer that needs only ends, not reading: custom events past the bound
 * are dropped without a single wait. */
Test(bus_burst, kinds_no_consumer_needs_are_dropped_at_the_bound_without_waiting)
{
    make_bus(1, 1024);
    cbus_consumer *c = attach_lossless("cost", ENDS);
    cbus_producer *p;
    cr_assert_eq(cbus_producer_open(&p, name, NULL), 0);
    cbus_ctx ctx;
    cbus_ctx_init(&ctx);
    unsigned ok = 0, dropped = 0;
    for (unsigned i = 0; i < 3000; i++) {
        int r = cbus_custom(p, &ctx, "c", NULL);
        ok += r == 0;
        dropped += r == -EAGAIN;
    }
    cr_assert_eq(ok, 1024, "the ring holds exactly one lap for the consumer");
    cr_assert_eq(dropped, 3000 - 1024);
    cr_assert_eq(pstats(p).dropped, 3000 - 1024, "every drop counted");
    cr_assert_eq(pstats(p).waited_ns, 0, "no call waited for a kind nobody lossless needs");
    uint64_t total = 0;
    cr_assert_eq(drain(c, CBUS_EV_CUSTOM, &total), 1024);
    cbus_producer_close(p);
    cbus_consumer_detach(c);
}

/* The burst: a consumer (cost) that does not read while runs of many tokens
 * stream.  Tokens stop at 7/8 of the ring and are dropped (counted); every
 * llm_start and llm_end still gets a slot, and no call waits. */
Test(bus_burst, every_llm_end_survives_a_token_flood_into_a_stalled_consumer)
{
    make_bus(1, 1024);
    cbus_consumer *c = attach_lossless("cost", ENDS);
    cbus_producer *p;
    cr_assert_eq(cbus_producer_open(&p, name, NULL), 0);
    const unsigned runs = 5, tokens = 40000;
    unsigned ends_ok = 0, tokens_ok = 0;
    for (unsigned r = 0; r < runs; r++) {
        cbus_ctx ctx;
        cbus_ctx_init(&ctx);
        cr_assert_eq(cbus_llm_start(p, &ctx, "q", NULL), 0);
        for (unsigned i = 0; i < tokens; i++)
            tokens_ok += cbus_llm_new_token(p, &ctx, "tok", 3) == 0;
        struct cbus_usage u = {.output_tokens = tokens, .usage_present = CBUS_USAGE_OUTPUT};
        ends_ok += cbus_llm_end(p, &ctx, &u, NULL) == 0;
    }
    cr_assert_eq(ends_ok, runs, "every llm_end was taken");
    cr_assert_eq(tokens_ok, 1024 - 1024 / 8 - 1, "tokens fill the ring to 7/8 (one start before)");
    cr_assert_eq(pstats(p).dropped, (uint64_t)runs * tokens - tokens_ok);
    cr_assert_eq(pstats(p).waited_ns, 0);
    uint64_t total = 0;
    cr_assert_eq(drain(c, CBUS_EV_LLM_END, &total), runs);
    cr_assert_eq(total, tokens_ok + 2 * runs);
    struct cbus_consumer_stats st;
    cbus_consumer_detach((cbus_consumer_stats(c, &st), c));
    cr_assert_eq(st.lost + st.abandoned, 0);
    cbus_producer_close(p);
}

/* A consumer that needs every kind (an audit log): tokens wait at 7/8 and
 * are dropped after the bound; ends still find the last eighth free. */
Test(bus_burst, a_consumer_of_every_kind_keeps_the_last_eighth_for_ends)
{
    make_bus(1, 1024);
    cbus_consumer *c = attach_lossless("audit", 0);
    cbus_producer *p;
    cr_assert_eq(cbus_producer_open(&p, name, NULL), 0);
    cbus_ctx ctx;
    cbus_ctx_init(&ctx);
    unsigned ok = 0;
    for (unsigned i = 0; i < 2000; i++)
        ok += cbus_llm_new_token(p, &ctx, "t", 1) == 0;
    cr_assert_eq(ok, 1024 - 1024 / 8);
    cr_assert_gt(pstats(p).waited_ns, 0, "a kind the consumer needs waits its bound");
    for (unsigned i = 0; i < 1024 / 8; i++)
        cr_assert_eq(cbus_llm_end(p, &ctx, NULL, NULL), 0, "end %u", i);
    cr_assert_eq(drain(c, CBUS_EV_LLM_END, NULL), 1024 / 8);
    cbus_producer_close(p);
    cbus_consumer_detach(c);
}

/* After one timeout, other kinds drop at once until the consumer moves;
 * an end or error keeps its bounded wait every time. */
Test(bus_burst, ends_and_errors_always_get_their_wait_after_a_timeout)
{
    make_bus(1, 1024);
    cbus_consumer *c = attach_lossless("audit", 0);
    cbus_producer *p;
    cr_assert_eq(cbus_producer_open(&p, name, NULL), 0);
    cbus_ctx ctx;
    cbus_ctx_init(&ctx);
    for (unsigned i = 0; i < 1024; i++)
        cr_assert_eq(cbus_custom(p, &ctx, "c", NULL), 0);
    cr_assert_eq(cbus_custom(p, &ctx, "c", NULL), -EAGAIN);
    uint64_t w1 = pstats(p).waited_ns;
    cr_assert_gt(w1, 0, "the first call at the bound waits");
    cr_assert_eq(cbus_custom(p, &ctx, "c", NULL), -EAGAIN);
    cr_assert_eq(pstats(p).waited_ns, w1, "then the same kind drops at once");
    cr_assert_eq(cbus_llm_end(p, &ctx, NULL, NULL), -EAGAIN);
    uint64_t w2 = pstats(p).waited_ns;
    cr_assert_gt(w2, w1, "an llm_end waits again");
    cr_assert_eq(cbus_llm_error(p, &ctx, "E", "m", 500), -EAGAIN);
    cr_assert_gt(pstats(p).waited_ns, w2, "so does an llm_error");
    cbus_producer_close(p);
    cbus_consumer_detach(c);
}

/* Two lossless consumers: the kinds they need add up, and the bound is the
 * slower one's (slots are shared by every kind). */
Test(bus_burst, the_kinds_of_every_tethered_consumer_count)
{
    make_bus(1, 1024);
    cbus_consumer *cost = attach_lossless("cost", ENDS);
    cbus_consumer *tools = attach_lossless("tools", CBUS_KIND_BIT(CBUS_EV_TOOL_END));
    cbus_producer *p;
    cr_assert_eq(cbus_producer_open(&p, name, NULL), 0);
    cbus_ctx ctx;
    cbus_ctx_init(&ctx);
    for (unsigned i = 0; i < 1024; i++)
        cr_assert_eq(cbus_custom(p, &ctx, "c", NULL), 0);
    drain(tools, 0, NULL); /* one consumer moves; the other still holds the ring */
    cr_assert_eq(cbus_custom(p, &ctx, "c", NULL), -EAGAIN);
    cr_assert_eq(pstats(p).waited_ns, 0, "nobody needs custom");
    cr_assert_eq(cbus_tool_end(p, &ctx, "out"), -EAGAIN);
    cr_assert_gt(pstats(p).waited_ns, 0, "tools needs tool_end: it waited");
    cbus_consumer_detach(tools);
    cbus_consumer_detach(cost);
    cbus_producer_close(p);
}

/* Several threads in two processes on a bus of two lanes stream runs into a
 * consumer that reads nothing until they are done: every llm_end of every
 * thread arrives, each thread's in order, tokens dropped and counted. */
struct runner {
    cbus_producer *p;
    unsigned runs, tokens;
    unsigned ends_ok, tokens_ok;
};

static void *run_thread(void *arg)
{
    struct runner *r = arg;
    for (unsigned i = 0; i < r->runs; i++) {
        cbus_ctx ctx;
        cbus_ctx_init(&ctx);
        cbus_llm_start(r->p, &ctx, "q", NULL);
        for (unsigned t = 0; t < r->tokens; t++)
            r->tokens_ok += cbus_llm_new_token(r->p, &ctx, "t", 1) == 0;
        struct cbus_usage u = {.output_tokens = i + 1, .usage_present = CBUS_USAGE_OUTPUT};
        r->ends_ok += cbus_llm_end(r->p, &ctx, &u, NULL) == 0;
    }
    return NULL;
}

/* Returns the ends that were refused. */
static unsigned run_threads(unsigned n, unsigned runs, unsigned tokens, uint64_t *waited)
{
    cbus_producer *p;
    cr_assert_eq(cbus_producer_open(&p, name, NULL), 0);
    pthread_t th[4];
    struct runner r[4];
    for (unsigned i = 0; i < n; i++) {
        r[i] = (struct runner){.p = p, .runs = runs, .tokens = tokens};
        cr_assert_eq(pthread_create(&th[i], NULL, run_thread, &r[i]), 0);
    }
    unsigned refused = 0;
    for (unsigned i = 0; i < n; i++) {
        pthread_join(th[i], NULL);
        refused += runs - r[i].ends_ok;
    }
    *waited = pstats(p).waited_ns;
    cbus_producer_close(p);
    return refused;
}

Test(bus_burst, streams_from_threads_and_a_process_keep_every_llm_end)
{
    make_bus(2, 4096);
    cbus_consumer *c = attach_lossless("cost", ENDS);
    const unsigned threads = 3, runs = 5, tokens = 40000;
    pid_t kid = fork();
    cr_assert_geq(kid, 0);
    if (kid == 0) {
        uint64_t w;
        _exit(run_threads(threads, runs, tokens, &w) == 0 && w == 0 ? 0 : 1);
    }
    uint64_t waited;
    unsigned refused = run_threads(threads, runs, tokens, &waited);
    int ws = test_wait_pid(kid, 120000);
    cr_assert_eq(refused, 0, "every llm_end of this process was taken");
    cr_assert_eq(waited, 0, "and no call waited");
    cr_assert(WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "the other process's too");
    /* Each thread's ends arrive in order: output_tokens counts 1..runs. */
    struct cbus_event ev[256];
    unsigned ends = 0, out_of_order = 0;
    struct { uint32_t pid, tid, next; } seen[8] = {{0}};
    for (int n; (n = cbus_consumer_poll(c, ev, 256)) > 0;) {
        for (int i = 0; i < n; i++) {
            if (ev[i].kind != CBUS_EV_LLM_END)
                continue;
            ends++;
            unsigned j = 0;
            while (j < 8 && seen[j].pid && (seen[j].pid != ev[i].pid || seen[j].tid != ev[i].tid))
                j++;
            cr_assert_lt(j, 8);
            seen[j].pid = ev[i].pid;
            seen[j].tid = ev[i].tid;
            out_of_order += ev[i].u.usage.output_tokens != ++seen[j].next;
        }
        cr_assert_eq(cbus_consumer_commit(c), 0);
    }
    cr_assert_eq(ends, 2 * threads * runs);
    cr_assert_eq(out_of_order, 0);
    struct cbus_consumer_stats st;
    cr_assert_eq(cbus_consumer_stats(c, &st), 0);
    cr_assert_eq(st.lost + st.abandoned, 0);
    cbus_consumer_detach(c);
}
