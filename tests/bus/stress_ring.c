/* In-process lock-free stress for ThreadSanitizer (a plain program: Criterion
 * aborts under TSan).  Producers, a lossless and a lossy consumer and an
 * attach/detach churner share one ring on an anonymous mapping; at the end
 * the accounting must be exact.  Run on a one-lane bus (both producer threads
 * claim on one tail) and on a two-lane bus (each thread owns a lane), and a
 * burst run (issue 13 item 2): producers stream tokens with an llm_end every
 * 50th event to a lossless consumer that needs only ends, under a 10 s bound
 * no preemption reaches: every end arrives, in order, tokens may be dropped
 * at the bound but never reordered.  Exit 0 pass, 1 fail. */
#include <cbus/bus.h>
#include <cbus/consumer.h>
#include <cbus/producer.h>

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define PRODUCERS 2
#define PER_PRODUCER 100000u

static cbus_bus *bus;
static atomic_int producers_done;
static atomic_int failures;
static atomic_int attached;
static int burst;        /* the burst run: tokens and ends, see the top */
static int bodies;       /* the body run: every third event has a 600-byte body */
static char long_text[601];
#define END_EVERY 50
#define ENDS_ONLY (CBUS_KIND_BIT(CBUS_EV_LLM_END) | CBUS_KIND_BIT(CBUS_EV_LLM_ERROR))

#define CHECK(cond, ...)                                      \
    do {                                                      \
        if (!(cond)) {                                        \
            fprintf(stderr, "stress_ring: " __VA_ARGS__);     \
            fputc('\n', stderr);                              \
            atomic_fetch_add(&failures, 1);                   \
        }                                                     \
    } while (0)

struct tag {
    uint32_t producer, seq;
};

static void *producer(void *arg)
{
    uint32_t id = (uint32_t)(uintptr_t)arg;
    cbus_producer *p;
    if (cbus_producer_open_bus(&p, bus, NULL)) {
        atomic_fetch_add(&failures, 1);
        return NULL;
    }
    cbus_ctx ctx;
    cbus_ctx_init(&ctx);
    cbus_ctx_set_model(&ctx, "gpt-4o");
    uint32_t seq = 0, end_seq = 0;
    for (uint32_t i = 0; i < PER_PRODUCER; i++) {
        unsigned kind = CBUS_EV_CUSTOM;
        if (burst)
            kind = i % END_EVERY == END_EVERY - 1 ? CBUS_EV_LLM_END : CBUS_EV_LLM_NEW_TOKEN;
        int is_end = kind == CBUS_EV_LLM_END;
        struct tag t = {id, is_end ? end_seq : seq};
        struct cbus_emit_args a = {.kind = kind, .payload = &t, .payload_len = sizeof t};
        if (bodies && i % 3 == 0) {
            a.preview = long_text;
            a.preview_len = sizeof long_text - 1;
        }
        int r = cbus_emit(p, &ctx, &a);
        CHECK(r == 0 || r == -EAGAIN, "emit returned %d", r);
        CHECK(!(burst && is_end && r != 0), "an llm_end was refused in a burst: %d", r);
        if (r == 0)
            *(is_end ? &end_seq : &seq) += 1;
    }
    cbus_producer_close(p);
    atomic_fetch_add(&producers_done, 1);
    return NULL;
}

struct consumer_result {
    unsigned mode;
    uint64_t consumed, lost, abandoned, read_pos, ends, body_slots;
};

static void *consumer(void *arg)
{
    struct consumer_result *res = arg;
    cbus_consumer *c;
    struct cbus_consumer_opts o = {.name = res->mode ? "lossless" : "lossy", .mode = res->mode,
                                   .start = CBUS_START_OLDEST,
                                   .kinds = burst && res->mode == CBUS_LOSSLESS ? ENDS_ONLY : 0};
    if (cbus_consumer_attach_bus(&c, bus, &o)) {
        atomic_fetch_add(&failures, 1);
        atomic_fetch_add(&attached, 1);
        return NULL;
    }
    atomic_fetch_add(&attached, 1);
    uint32_t next[PRODUCERS] = {0}, next_end[PRODUCERS] = {0};
    uint64_t ends = 0;
    struct cbus_event ev[64];
    static _Thread_local unsigned char bbuf[1 << 16];
    struct cbus_body bb[64];
    for (;;) {
        int n = bodies ? cbus_consumer_poll_bodies(c, ev, bb, 64, bbuf, sizeof bbuf)
                       : cbus_consumer_poll(c, ev, 64);
        CHECK(n >= 0, "poll %d", n);
        for (int i = 0; bodies && i < n; i++) {
            if (!(ev[i].flags & CBUS_FLAG_BODY))
                continue;
            struct cbus_body_section sec;
            const char *d;
            CHECK(cbus_body_find(bb[i].data, bb[i].len, CBUS_BODY_TEXT, &sec, &d) == 1 &&
                      sec.len == sizeof long_text - 1 && !memcmp(d, long_text, sec.len),
                  "torn or wrong body");
        }
        for (int i = 0; i < n; i++) {
            struct tag t;
            memcpy(&t, &ev[i].u, sizeof t);
            CHECK(t.producer < PRODUCERS, "bad producer %u", t.producer);
            if (t.producer < PRODUCERS && ev[i].kind == CBUS_EV_LLM_END) {
                if (res->mode == CBUS_LOSSLESS)
                    CHECK(t.seq == next_end[t.producer], "burst: llm_end gap: got %u want %u",
                          t.seq, next_end[t.producer]);
                else
                    CHECK(t.seq >= next_end[t.producer], "lossy end disorder");
                next_end[t.producer] = t.seq + 1;
                ends++;
            } else if (t.producer < PRODUCERS && burst) {
                CHECK(t.seq >= next[t.producer], "burst: token disorder");
                next[t.producer] = t.seq + 1;
            } else if (t.producer < PRODUCERS) {
                if (res->mode == CBUS_LOSSLESS)
                    CHECK(t.seq == next[t.producer], "lossless gap: got %u want %u", t.seq,
                          next[t.producer]);
                else
                    CHECK(t.seq >= next[t.producer], "lossy disorder");
                next[t.producer] = t.seq + 1;
            }
            CHECK(!strcmp(ev[i].model, "gpt-4o"), "torn event");
        }
        cbus_consumer_commit(c);
        if (n == 0) {
            if (atomic_load(&producers_done) == PRODUCERS &&
                cbus_consumer_read_pos(c) == cbus_bus_tail(bus))
                break;
            cbus_consumer_wait(c, 1000000u);
        }
    }
    struct cbus_consumer_stats st;
    cbus_consumer_stats(c, &st);
    res->consumed = st.consumed;
    res->lost = st.lost;
    res->abandoned = st.abandoned;
    res->body_slots = st.body_slots;
    res->read_pos = st.read_pos;
    res->ends = ends;
    cbus_consumer_detach(c);
    return NULL;
}

static void *churner(void *arg)
{
    (void)arg;
    while (atomic_load(&producers_done) < PRODUCERS) {
        cbus_consumer *c;
        struct cbus_consumer_opts o = {.name = "churn", .mode = CBUS_LOSSLESS};
        if (cbus_consumer_attach_bus(&c, bus, &o))
            continue;
        struct cbus_event ev[16];
        uint64_t start = cbus_consumer_read_pos(c);
        for (int i = 0; i < 10; i++) {
            cbus_consumer_poll(c, ev, 16);
            cbus_consumer_commit(c);
        }
        struct cbus_consumer_stats st;
        cbus_consumer_stats(c, &st);
        CHECK(st.consumed + st.body_slots + st.lost + st.abandoned == st.read_pos - start,
              "churn accounting");
        cbus_consumer_detach(c);
    }
    return NULL;
}

static void run(uint32_t lanes, int burst_run, int body_run)
{
    burst = burst_run;
    bodies = body_run;
    atomic_store(&producers_done, 0);
    atomic_store(&attached, 0);
    struct cbus_create_opts o = {.capacity = 1024, .lanes = lanes,
                                 .lossless_wait_ns = burst ? UINT64_C(10000000000) : 0};
    size_t len = cbus_bus_size(&o);
    void *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED || cbus_bus_format(mem, len, "stress", &o) ||
        cbus_bus_open_mem(&bus, mem, len)) {
        fprintf(stderr, "stress_ring: setup failed\n");
        atomic_fetch_add(&failures, 1);
        return;
    }
    struct consumer_result lossless = {.mode = CBUS_LOSSLESS}, lossy = {.mode = CBUS_LOSSY};
    pthread_t tc[2], tp[PRODUCERS], tch;
    pthread_create(&tc[0], NULL, consumer, &lossless);
    pthread_create(&tc[1], NULL, consumer, &lossy);
    while (atomic_load(&attached) < 2) /* producers start on a watched ring */
        sched_yield();
    pthread_create(&tch, NULL, churner, NULL);
    for (uintptr_t i = 0; i < PRODUCERS; i++)
        pthread_create(&tp[i], NULL, producer, (void *)i);
    for (int i = 0; i < PRODUCERS; i++)
        pthread_join(tp[i], NULL);
    pthread_join(tch, NULL);
    pthread_join(tc[0], NULL);
    pthread_join(tc[1], NULL);
    uint64_t tail = cbus_bus_tail(bus);
    uint64_t dropped = cbus_bus_header(bus)->dropped;
    CHECK(tail - lossless.body_slots + dropped == (uint64_t)PRODUCERS * PER_PRODUCER,
          "tail %llu + dropped %llu",
          (unsigned long long)tail, (unsigned long long)dropped);
    CHECK(lossless.consumed + lossless.body_slots == tail && lossless.lost == 0 &&
              lossless.abandoned == 0,
          "lossless consumed %llu of %llu (lost %llu)", (unsigned long long)lossless.consumed,
          (unsigned long long)tail, (unsigned long long)lossless.lost);
    CHECK(lossy.consumed + lossy.body_slots + lossy.lost + lossy.abandoned == tail,
          "lossy accounting");
    if (burst)
        CHECK(lossless.ends == (uint64_t)PRODUCERS * (PER_PRODUCER / END_EVERY),
              "burst: %llu llm_ends reached the lossless consumer",
              (unsigned long long)lossless.ends);
    printf("stress_ring: %u lane(s)%s%s: produced %llu, dropped %llu, lossless consumed %llu, lossy consumed %llu lost %llu\n",
           lanes, burst ? ", burst" : "", bodies ? ", bodies" : "", (unsigned long long)tail, (unsigned long long)dropped,
           (unsigned long long)lossless.consumed, (unsigned long long)lossy.consumed,
           (unsigned long long)lossy.lost);
    cbus_bus_close(bus);
    munmap(mem, len);
}

int main(void)
{
    memset(long_text, 'b', sizeof long_text - 1);
    run(1, 0, 0);
    run(2, 0, 0);
    run(2, 1, 0);
    run(2, 0, 1);
    int f = atomic_load(&failures);
    printf("%d passed, %d failed\n", f ? 0 : 1, f ? 1 : 0);
    return f ? 1 : 0;
}
