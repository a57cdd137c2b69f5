/* cbus-bench-bus: what an emit costs, and how fast a consumer drains.
 *
 *   cbus-bench-bus [--runs N] [--events N] [--csv FILE]
 *
 * Emit latency is measured per batch of 32 emits (clock_gettime costs about
 * as much as an emit) and reported per event: the median and p99 over all
 * batches of a run, then the median of those over --runs runs.  Consumers
 * are separate processes pinned to the other core running the daemons' loop
 * (poll 256, commit when lossless, cbus_consumer_wait when empty); the
 * busy-polling row never sleeps.  The drain rate
 * is a consumer reading a full ring of llm_end-sized events.
 * The machine is shared and noisy: compare rows of one run, not runs. */
#include <cbus/bus.h>
#include <cbus/consumer.h>
#include <cbus/producer.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BATCH 32

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void pin(int cpu)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 2)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu % n, &set);
    sched_setaffinity(0, sizeof set, &set);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double percentile(double *v, size_t n, double p)
{
    qsort(v, n, sizeof *v, cmp_double);
    size_t i = (size_t)(p * (double)(n - 1));
    return v[i];
}

struct prod {
    cbus_producer *p;
    int cpu;
    uint64_t events;
    double *batch_ns; /* per-event ns of each batch */
    size_t nbatches;
    uint64_t dropped;
};

static pthread_barrier_t start_barrier;
/* With a body: each llm_end carries an output of this many bytes (its first
 * bytes are the preview, all of it the body). */
static size_t body_bytes;
static char body_text[8192];

static void *producer_main(void *arg)
{
    struct prod *pr = arg;
    pin(pr->cpu);
    cbus_ctx ctx;
    cbus_ctx_init(&ctx);
    cbus_ctx_set_provider(&ctx, "openai");
    cbus_ctx_set_model(&ctx, "gpt-4o-2024-08-06");
    cbus_ctx_set_user(&ctx, "user-000123");
    cbus_ctx_set_session(&ctx, "session-8f2a");
    cbus_ctx_set_request_id(&ctx, "req-5d1c9e");
    struct cbus_usage u = {.input_tokens = 1200, .output_tokens = 350, .cache_read_tokens = 1024,
                           .usage_present = CBUS_USAGE_INPUT | CBUS_USAGE_OUTPUT |
                                            CBUS_USAGE_CACHE_READ | CBUS_USAGE_DURATION |
                                            CBUS_USAGE_TTFT,
                           .finish_reason = CBUS_FINISH_STOP, .duration_ns = 1500000000u,
                           .ttft_ns = 200000000u};
    pr->nbatches = pr->events / BATCH;
    pr->batch_ns = malloc(pr->nbatches * sizeof *pr->batch_ns);
    const char *output = body_bytes ? body_text : "The answer is 42.";
    pthread_barrier_wait(&start_barrier);
    for (size_t b = 0; b < pr->nbatches; b++) {
        uint64_t t0 = now_ns();
        for (int i = 0; i < BATCH; i++)
            if (cbus_llm_end(pr->p, &ctx, &u, output) == -EAGAIN)
                pr->dropped++;
        pr->batch_ns[b] = (double)(now_ns() - t0) / BATCH;
    }
    return NULL;
}

/* Consumers run the loop every cbus daemon runs (poll, commit, wait when
 * empty); with spin they busy-poll instead and never sleep. */
static int consumer_spin;

static pid_t spawn_consumer(const char *bus, int idx, unsigned mode, int cpu)
{
    pid_t pid = fork();
    if (pid)
        return pid;
    pin(cpu);
    char name[32];
    snprintf(name, sizeof name, "bench%d", idx);
    cbus_consumer *c;
    struct cbus_consumer_opts o = {.name = name, .mode = mode};
    if (cbus_consumer_attach(&c, bus, &o))
        _exit(1);
    static struct cbus_event ev[256];
    for (;;) {
        int n = cbus_consumer_poll(c, ev, 256);
        if (n > 0 && mode == CBUS_LOSSLESS)
            cbus_consumer_commit(c);
        if (n < 0)
            _exit(2);
        if (n == 0 && !consumer_spin)
            cbus_consumer_wait(c, 100000000u);
    }
}

static void wait_attached(const char *bus_name, int n)
{
    cbus_bus *bus;
    if (cbus_bus_open(&bus, bus_name, 0))
        return;
    for (int tries = 0; tries < 5000; tries++) {
        int active = 0;
        for (unsigned i = 0; i < CBUS_MAX_CONSUMERS; i++)
            if (cbus_bus_consumer_entry(bus, i)->state == CBUS_CSTATE_ACTIVE)
                active++;
        if (active >= n)
            break;
        usleep(1000);
    }
    cbus_bus_close(bus);
}

struct result {
    double median, p99, p999, mevents_s;
    uint64_t dropped;
};

static struct result run_emit(const char *bus_name, int threads, int consumers, unsigned mode,
                              uint64_t events, uint32_t lanes)
{
    struct cbus_create_opts co = {.lanes = lanes};
    cbus_bus_destroy(bus_name);
    if (cbus_bus_create(bus_name, &co)) {
        fprintf(stderr, "cbus-bench-bus: cannot create bus %s\n", bus_name);
        exit(1);
    }
    pid_t kids[8];
    for (int i = 0; i < consumers; i++)
        kids[i] = spawn_consumer(bus_name, i, mode, 1 + i);
    wait_attached(bus_name, consumers);
    cbus_producer *p;
    if (cbus_producer_open(&p, bus_name, NULL))
        exit(1);
    struct prod pr[2];
    pthread_t th[2];
    pthread_barrier_init(&start_barrier, NULL, (unsigned)threads + 1);
    for (int i = 0; i < threads; i++) {
        pr[i] = (struct prod){.p = p, .cpu = i, .events = events};
        pthread_create(&th[i], NULL, producer_main, &pr[i]);
    }
    uint64_t t0 = now_ns();
    pthread_barrier_wait(&start_barrier);
    for (int i = 0; i < threads; i++)
        pthread_join(th[i], NULL);
    uint64_t elapsed = now_ns() - t0;
    pthread_barrier_destroy(&start_barrier);
    size_t total = 0;
    for (int i = 0; i < threads; i++)
        total += pr[i].nbatches;
    double *all = malloc(total * sizeof *all);
    size_t k = 0;
    struct result r = {0};
    for (int i = 0; i < threads; i++) {
        memcpy(all + k, pr[i].batch_ns, pr[i].nbatches * sizeof *all);
        k += pr[i].nbatches;
        r.dropped += pr[i].dropped;
        free(pr[i].batch_ns);
    }
    r.median = percentile(all, total, 0.5);
    r.p99 = percentile(all, total, 0.99);
    r.p999 = percentile(all, total, 0.999);
    r.mevents_s = (double)events * threads / ((double)elapsed / 1e9) / 1e6;
    free(all);
    for (int i = 0; i < consumers; i++) {
        kill(kids[i], SIGKILL);
        waitpid(kids[i], NULL, 0);
    }
    cbus_producer_close(p);
    cbus_bus_destroy(bus_name);
    return r;
}

/* Drain: fill a 65536-slot ring, then time one consumer reading it all. */
static double run_drain(const char *bus_name, int rounds)
{
    struct cbus_create_opts co = {.capacity = 65536};
    cbus_bus_destroy(bus_name);
    if (cbus_bus_create(bus_name, &co))
        exit(1);
    cbus_producer *p;
    cbus_producer_open(&p, bus_name, NULL);
    cbus_consumer *c;
    struct cbus_consumer_opts o = {.name = "drain"};
    cbus_consumer_attach(&c, bus_name, &o);
    cbus_ctx ctx;
    cbus_ctx_init(&ctx);
    cbus_ctx_set_model(&ctx, "gpt-4o");
    struct cbus_usage u = {.input_tokens = 10, .usage_present = CBUS_USAGE_INPUT};
    static struct cbus_event ev[256];
    uint64_t drained = 0, ns = 0;
    for (int r = 0; r < rounds; r++) {
        for (int i = 0; i < 65536; i++)
            cbus_llm_end(p, &ctx, &u, NULL);
        uint64_t t0 = now_ns();
        int n;
        while ((n = cbus_consumer_poll(c, ev, 256)) > 0)
            drained += (uint64_t)n;
        ns += now_ns() - t0;
    }
    cbus_consumer_detach(c);
    cbus_producer_close(p);
    cbus_bus_destroy(bus_name);
    return (double)drained / ((double)ns / 1e9) / 1e6;
}

/* The floor: copying an event of a given size into a ring-sized buffer. */
static double run_floor(size_t size, uint64_t events)
{
    size_t ring = 16384 * 512;
    char *buf = aligned_alloc(64, ring);
    memset(buf, 0, ring);
    static char src[4096];
    memset(src, 'x', sizeof src);
    size_t slots = ring / size;
    double *v = malloc((events / BATCH) * sizeof *v);
    size_t pos = 0;
    for (size_t b = 0; b < events / BATCH; b++) {
        uint64_t t0 = now_ns();
        for (int i = 0; i < BATCH; i++) {
            memcpy(buf + (pos % slots) * size, src, size);
            pos++;
            __asm__ volatile("" ::: "memory");
        }
        v[b] = (double)(now_ns() - t0) / BATCH;
    }
    double m = percentile(v, events / BATCH, 0.5);
    free(v);
    free(buf);
    return m;
}

static int cmp_res(const void *a, const void *b)
{
    const struct result *x = a, *y = b;
    return x->median < y->median ? -1 : x->median > y->median;
}

int main(int argc, char **argv)
{
    int runs = 5;
    uint64_t events = 2000000;
    const char *csv = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--runs") && i + 1 < argc)
            runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--events") && i + 1 < argc)
            events = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--csv") && i + 1 < argc)
            csv = argv[++i];
        else {
            fprintf(stderr, "usage: cbus-bench-bus [--runs N] [--events N] [--csv FILE]\n");
            return 2;
        }
    }
    if (runs < 1 || runs > 100 || events < 1000) {
        fprintf(stderr, "cbus-bench-bus: --runs 1..100, --events >= 1000\n");
        return 2;
    }
    char bus_name[32];
    snprintf(bus_name, sizeof bus_name, "bench%d", (int)getpid());
    struct {
        int threads, consumers;
        unsigned mode;
        const char *label;
        int spin;
        uint32_t lanes;
        size_t body;
    } cfg[] = {
        {1, 0, CBUS_LOSSY, "1 producer, no consumer"},
        {1, 1, CBUS_LOSSY, "1 producer, 1 lossy consumer"},
        {1, 1, CBUS_LOSSY, "1 producer, 1 lossy busy-polling", 1},
        {1, 1, CBUS_LOSSLESS, "1 producer, 1 lossless consumer"},
        {1, 4, CBUS_LOSSY, "1 producer, 4 lossy consumers"},
        {1, 4, CBUS_LOSSLESS, "1 producer, 4 lossless consumers"},
        {2, 0, CBUS_LOSSY, "2 producers, no consumer"},
        {2, 1, CBUS_LOSSY, "2 producers, 1 lossy consumer"},
        {2, 4, CBUS_LOSSY, "2 producers, 4 lossy consumers"},
        {1, 0, CBUS_LOSSY, "1 producer, no consumer, 2 lanes", 0, 2},
        {2, 0, CBUS_LOSSY, "2 producers, no consumer, 2 lanes", 0, 2},
        {2, 1, CBUS_LOSSY, "2 producers, 1 lossy consumer, 2 lanes", 0, 2},
        {2, 1, CBUS_LOSSLESS, "2 producers, 1 lossless consumer, 2 lanes", 0, 2},
        {1, 0, CBUS_LOSSY, "1 producer, no consumer, 4 KiB body", 0, 1, 4096},
    };
    FILE *out = csv ? fopen(csv, "w") : NULL;
    if (out)
        fprintf(out, "config,median_ns,p99_ns,p999_ns,mevents_per_s,dropped\n");
    printf("cbus-bench-bus: %d runs of %llu llm_end emits per producer thread; ns per emit "
           "(median of per-run values)\n\n", runs, (unsigned long long)events);
    printf("%-36s %9s %9s %9s %12s %10s\n", "configuration", "median", "p99", "p99.9", "Mevents/s",
           "dropped");
    for (size_t c = 0; c < sizeof cfg / sizeof cfg[0]; c++) {
        struct result r[100];
        consumer_spin = cfg[c].spin;
        body_bytes = cfg[c].body;
        memset(body_text, 'w', body_bytes);
        body_text[body_bytes] = '\0';
        for (int i = 0; i < runs; i++)
            r[i] = run_emit(bus_name, cfg[c].threads, cfg[c].consumers, cfg[c].mode, events,
                            cfg[c].lanes);
        qsort(r, (size_t)runs, sizeof r[0], cmp_res);
        struct result m = r[runs / 2];
        printf("%-36s %9.1f %9.1f %9.1f %12.1f %10llu\n", cfg[c].label, m.median, m.p99, m.p999,
               m.mevents_s, (unsigned long long)m.dropped);
        if (out)
            fprintf(out, "%s,%.1f,%.1f,%.1f,%.2f,%llu\n", cfg[c].label, m.median, m.p99, m.p999,
                    m.mevents_s, (unsigned long long)m.dropped);
        fflush(stdout);
    }
    double d[100];
    for (int i = 0; i < runs; i++)
        d[i] = run_drain(bus_name, 8);
    double drain = percentile(d, (size_t)runs, 0.5);
    printf("\n%-36s %9.1f Mevents/s\n", "consumer drain (1 consumer, full ring)", drain);
    double f256[100], f512[100], f4k[100];
    for (int i = 0; i < runs; i++) {
        f256[i] = run_floor(256, events);
        f512[i] = run_floor(512, events);
        f4k[i] = run_floor(4096, events / 4);
    }
    printf("%-36s %9.1f ns\n", "floor: copy 256 B into a ring", percentile(f256, (size_t)runs, 0.5));
    printf("%-36s %9.1f ns\n", "floor: copy 512 B into a ring", percentile(f512, (size_t)runs, 0.5));
    printf("%-36s %9.1f ns\n", "floor: copy 4 KiB into a ring", percentile(f4k, (size_t)runs, 0.5));
    if (out) {
        fprintf(out, "consumer drain,,,,%.2f,\n", drain);
        fclose(out);
    }
    return 0;
}
