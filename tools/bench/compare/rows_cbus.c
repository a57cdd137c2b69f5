/* Rows 1: cbus emit with 1 and 2 producer threads and 0, 1 or 4 consumer
 * processes (lossy and lossless), 2 threads on a bus of 2 lanes (issue 13:
 * each thread claims on its own tail line), and the rate at which one
 * consumer drains a full ring.  Consumers are forked processes pinned to the other core,
 * running the loop every cbus daemon runs: poll a batch, commit when
 * lossless, sleep in cbus_consumer_wait() when the ring is empty.  The -spin
 * rows busy-poll instead, as tools/bench/bus/emit.c does: the difference is what
 * the producer pays for waking sleeping consumers. */
#include "bench.h"

#include <cbus/bus.h>
#include <cbus/consumer.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

struct prod {
    cbus_producer *p;
    const struct bench_payload *pl;
    int cpu;
    uint64_t events;
    double *v;
    size_t nbatches;
    uint64_t dropped;
    pthread_barrier_t *start;
};

static void *producer_main(void *arg)
{
    struct prod *pr = arg;
    bench_pin(pr->cpu);
    /* Each thread its own context, as each request has its own run. */
    cbus_ctx ctx = pr->pl->ctx;
    const struct cbus_usage *u = &pr->pl->usage;
    const char *out = pr->pl->output;
    pr->nbatches = pr->events / BENCH_BATCH;
    pthread_barrier_wait(pr->start);
    for (size_t b = 0; b < pr->nbatches; b++) {
        uint64_t t0 = bench_now_ns();
        for (int i = 0; i < BENCH_BATCH; i++)
            if (cbus_llm_end(pr->p, &ctx, u, out) == -EAGAIN)
                pr->dropped++;
        pr->v[b] = (double)(bench_now_ns() - t0) / BENCH_BATCH;
    }
    return NULL;
}

static pid_t spawn_consumer(const char *bus, int idx, unsigned mode, int spin)
{
    pid_t pid = fork();
    if (pid)
        return pid;
    bench_pin(1);
    char name[32];
    snprintf(name, sizeof name, "compare%d", idx);
    cbus_consumer *c;
    struct cbus_consumer_opts o = {.name = name, .mode = mode};
    if (cbus_consumer_attach(&c, bus, &o))
        _exit(1);
    static struct cbus_event ev[256];
    for (;;) {
        int n = cbus_consumer_poll(c, ev, 256);
        if (n < 0)
            _exit(2);
        if (n > 0 && mode == CBUS_LOSSLESS)
            cbus_consumer_commit(c);
        if (n == 0 && !spin)
            cbus_consumer_wait(c, 10000000);
    }
}

static int count_active(cbus_bus *bus)
{
    int active = 0;
    for (unsigned i = 0; i < CBUS_MAX_CONSUMERS; i++)
        if (atomic_load(&cbus_bus_consumer_entry(bus, i)->state) == CBUS_CSTATE_ACTIVE)
            active++;
    return active;
}

/* *own_lanes (with lanes > 1): set when every thread's events landed in a
 * lane of its own, i.e. each lane's tail is one thread's events. */
static int run_emit(const char *bus_name, const struct bench_payload *pl, int threads,
                    int consumers, unsigned mode, int spin, uint32_t lanes, uint64_t events,
                    struct run_stats *rs, int *own_lanes)
{
    cbus_bus_destroy(bus_name);
    struct cbus_create_opts co = {.lanes = lanes};
    int rc = cbus_bus_create(bus_name, &co);
    if (rc)
        return rc;
    cbus_bus *bus;
    if ((rc = cbus_bus_open(&bus, bus_name, 0))) {
        cbus_bus_destroy(bus_name);
        return rc;
    }
    pid_t kids[8];
    for (int i = 0; i < consumers; i++)
        kids[i] = spawn_consumer(bus_name, i, mode, spin);
    for (int tries = 0; tries < 5000 && count_active(bus) < consumers; tries++)
        usleep(1000);
    cbus_producer *p = NULL;
    rc = cbus_producer_open_bus(&p, bus, NULL);
    struct prod pr[2];
    pthread_t th[2];
    pthread_barrier_t start;
    if (!rc) {
        pthread_barrier_init(&start, NULL, (unsigned)threads + 1);
        for (int i = 0; i < threads; i++) {
            pr[i] = (struct prod){.p = p, .pl = pl, .cpu = i, .events = events, .start = &start};
            pr[i].v = malloc((events / BENCH_BATCH) * sizeof(double));
            pthread_create(&th[i], NULL, producer_main, &pr[i]);
        }
        uint64_t t0 = bench_now_ns();
        pthread_barrier_wait(&start);
        for (int i = 0; i < threads; i++)
            pthread_join(th[i], NULL);
        uint64_t elapsed = bench_now_ns() - t0;
        pthread_barrier_destroy(&start);
        size_t total = 0;
        for (int i = 0; i < threads; i++)
            total += pr[i].nbatches;
        double *all = malloc(total * sizeof *all);
        size_t k = 0;
        memset(rs, 0, sizeof *rs);
        for (int i = 0; i < threads; i++) {
            memcpy(all + k, pr[i].v, pr[i].nbatches * sizeof *all);
            k += pr[i].nbatches;
            rs->dropped += pr[i].dropped;
            free(pr[i].v);
        }
        bench_summarize(all, total, rs);
        free(all);
        rs->events = events * (uint64_t)threads;
        rs->mevents_s = (double)rs->events / ((double)elapsed / 1e3);
        /* Let the consumers finish what is in the ring, then read how many
         * events lossy consumers lost (lapped: the ring holds 16384). */
        usleep(20000);
        for (unsigned i = 0; i < CBUS_MAX_CONSUMERS; i++) {
            struct cbus_consumer_entry *e = cbus_bus_consumer_entry(bus, i);
            if (atomic_load(&e->state) == CBUS_CSTATE_ACTIVE)
                rs->lost += atomic_load(&e->lost);
        }
        if (own_lanes) {
            /* The producer's threads each took a free lane at their first
             * emit (threads == lanes here), so every lane holds one thread's
             * run: the same positions (events and their body slots), none
             * empty.  Had two shared a lane, another would be empty. */
            uint64_t first = cbus_bus_lane_tail(bus, 0);
            int own = cbus_bus_lanes(bus) == lanes && (unsigned)threads == lanes && first > 0;
            for (unsigned L = 1; L < cbus_bus_lanes(bus); L++)
                if (cbus_bus_lane_tail(bus, L) != first)
                    own = 0;
            *own_lanes = own;
        }
        cbus_producer_close(p);
    }
    for (int i = 0; i < consumers; i++) {
        kill(kids[i], SIGKILL);
        waitpid(kids[i], NULL, 0);
    }
    cbus_bus_close(bus);
    cbus_bus_destroy(bus_name);
    return rc;
}

/* Drain: fill a 65536-slot ring with the payload, then time one consumer
 * reading it all (Mevents/s). */
static int run_drain(const char *bus_name, const struct bench_payload *pl, int rounds,
                     struct run_stats *rs)
{
    struct cbus_create_opts co = {.capacity = 65536};
    cbus_bus_destroy(bus_name);
    int rc = cbus_bus_create(bus_name, &co);
    if (rc)
        return rc;
    cbus_producer *p = NULL;
    cbus_consumer *c = NULL;
    struct cbus_consumer_opts o = {.name = "drain"};
    if ((rc = cbus_producer_open(&p, bus_name, NULL)) ||
        (rc = cbus_consumer_attach(&c, bus_name, &o))) {
        cbus_producer_close(p);
        cbus_bus_destroy(bus_name);
        return rc;
    }
    cbus_ctx ctx = pl->ctx;
    static struct cbus_event ev[256];
    uint64_t drained = 0, ns = 0;
    for (int r = 0; r < rounds; r++) {
        for (int i = 0; i < 65536; i++)
            cbus_llm_end(p, &ctx, &pl->usage, pl->output);
        uint64_t t0 = bench_now_ns();
        int n;
        while ((n = cbus_consumer_poll(c, ev, 256)) > 0)
            drained += (uint64_t)n;
        ns += bench_now_ns() - t0;
    }
    memset(rs, 0, sizeof *rs);
    rs->events = drained;
    rs->mevents_s = (double)drained / ((double)ns / 1e3);
    cbus_consumer_detach(c);
    cbus_producer_close(p);
    cbus_bus_destroy(bus_name);
    return 0;
}

void bench_rows_cbus(const struct bench_opts *o, struct row *rows, int *n)
{
    static const struct {
        const char *id;
        int threads, consumers;
        unsigned mode;
        int spin;
        uint32_t lanes;   /* 0: the default, one lane */
        const char *config;
        int chart;
    } cfg[] = {
        {"cbus-1p-0c", 1, 0, CBUS_LOSSY, 0, 0, "1 producer thread, no consumer", 1},
        {"cbus-1p-1l", 1, 1, CBUS_LOSSY, 0, 0, "1 producer thread, 1 lossy consumer", 1},
        {"cbus-1p-1l-spin", 1, 1, CBUS_LOSSY, 1, 0,
         "1 producer thread, 1 lossy consumer busy-polling (never sleeps)", 0},
        {"cbus-1p-1ll", 1, 1, CBUS_LOSSLESS, 0, 0, "1 producer thread, 1 lossless consumer", 0},
        {"cbus-1p-4l", 1, 4, CBUS_LOSSY, 0, 0, "1 producer thread, 4 lossy consumers", 0},
        {"cbus-1p-4l-spin", 1, 4, CBUS_LOSSY, 1, 0,
         "1 producer thread, 4 lossy consumers busy-polling (never sleep)", 0},
        {"cbus-1p-4ll", 1, 4, CBUS_LOSSLESS, 0, 0, "1 producer thread, 4 lossless consumers", 1},
        {"cbus-2p-0c", 2, 0, CBUS_LOSSY, 0, 0, "2 producer threads, no consumer, 1 lane", 0},
        /* issue 13's row: the same two threads, each on a lane of its own */
        {"cbus-2p-0c-2lanes", 2, 0, CBUS_LOSSY, 0, 2,
         "2 producer threads, no consumer, 2-lane bus", 0},
        {"cbus-2p-1l", 2, 1, CBUS_LOSSY, 0, 0, "2 producer threads, 1 lossy consumer", 1},
        {"cbus-2p-1ll", 2, 1, CBUS_LOSSLESS, 0, 0, "2 producer threads, 1 lossless consumer", 0},
        {"cbus-2p-4l", 2, 4, CBUS_LOSSY, 0, 0, "2 producer threads, 4 lossy consumers", 0},
        {"cbus-2p-4ll", 2, 4, CBUS_LOSSLESS, 0, 0, "2 producer threads, 4 lossless consumers", 0},
    };
    char bus_name[32];
    snprintf(bus_name, sizeof bus_name, "compare%d", (int)getpid());
    struct bench_payload pl;
    bench_payload_init(&pl);
    for (size_t c = 0; c < sizeof cfg / sizeof cfg[0]; c++) {
        struct row *r = bench_row_new(rows, n, cfg[c].id, "cbus emit", cfg[c].config, ROW_LATENCY);
        r->chart = cfg[c].chart;
        int rc = 0, own_lanes = 1;
        for (int i = 0; i < o->runs && !rc; i++) {
            /* Four sleeping consumers make every emit pay for wake-ups
             * (microseconds): those rows get the slow rows' event count. */
            uint64_t events = cfg[c].consumers == 4 && !cfg[c].spin ? o->slow_events : o->events;
            int own = 1;
            rc = run_emit(bus_name, &pl, cfg[c].threads, cfg[c].consumers, cfg[c].mode,
                          cfg[c].spin, cfg[c].lanes, events, &r->run[i],
                          cfg[c].lanes > 1 ? &own : NULL);
            if (!rc)
                r->nruns++;
            own_lanes &= own;
        }
        if (rc) {
            bench_row_skip(r, "bus setup failed: %s", cbus_strerror(rc));
            continue;
        }
        bench_aggregate(r);
        if (r->agg.dropped || r->agg.lost)
            snprintf(r->note, sizeof r->note, "producers dropped %.3f%%, consumers lost %.3f%%",
                     100.0 * (double)r->agg.dropped / (double)r->agg.events,
                     100.0 * (double)r->agg.lost /
                         ((double)r->agg.events * (cfg[c].consumers ? cfg[c].consumers : 1)));
        else
            snprintf(r->note, sizeof r->note, "nothing dropped or lost");
        if (cfg[c].lanes > 1) {
            size_t l = strlen(r->note);
            snprintf(r->note + l, sizeof r->note - l, "; %s",
                     own_lanes ? "each thread had a lane of its own in every run"
                               : "THREADS SHARED A LANE in some run (not the design measured)");
        }
        bench_progress(o, r);
    }
    struct row *r = bench_row_new(rows, n, "cbus-drain", "cbus drain",
                                  "1 consumer reading a full 65536-slot ring", ROW_RATE);
    int rc = 0;
    for (int i = 0; i < o->runs && !rc; i++) {
        rc = run_drain(bus_name, &pl, 8, &r->run[i]);
        if (!rc)
            r->nruns++;
    }
    if (rc) {
        bench_row_skip(r, "bus setup failed: %s", cbus_strerror(rc));
        return;
    }
    bench_aggregate(r);
    snprintf(r->note, sizeof r->note, "consumer side: events read per second");
    bench_progress(o, r);
}
