/* cbus-bench-compare-lttng: the LTTng-UST side of cbus-bench-compare, a separate program
 * so that liblttng-ust (its constructor, its listener threads, its
 * registration with the session daemon) stays out of every other row.
 *
 *   cbus-bench-compare-lttng --events N --runs R --expect enabled|disabled [--pause-ms MS]
 *                      [--threads T]
 *
 * Waits (up to 10 s) for the tracepoint to reach the expected state (the
 * session daemon enables it once this process has registered), then times
 * BENCH_BATCH tracepoint calls per sample exactly as cbus-bench-compare times
 * cbus emits, and prints one "run ..." line per run (bench_run_print).
 * --pause-ms leaves the consumer daemon time to empty the buffers between
 * runs, so that each run starts with room.  --threads 2: two tracing threads,
 * thread i pinned to CPU i as cbus-bench-compare's two producer threads are, each
 * making --events calls; the samples are per thread (ns per call in each
 * thread), Mevents/s all threads' events over the wall time.
 * Exit 0, 2 (usage), 3 (the tracepoint never reached the expected state). */
#include "bench.h"
#include "lttng_tp.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_THREADS 2

struct tracer {
    int cpu;
    size_t nb;
    double *v;
    const struct bench_payload *pl;
    pthread_barrier_t *start, *done;
    int runs;
};

/* One tracing thread: per run, wait at the start barrier, time nb batches,
 * meet the others at the done barrier (main prints the run between them). */
static void *tracer_main(void *arg)
{
    struct tracer *t = arg;
    bench_pin(t->cpu);
    for (int r = 0; r < t->runs; r++) {
        pthread_barrier_wait(t->start);
        for (size_t b = 0; b < t->nb; b++) {
            uint64_t t0 = bench_now_ns();
            for (int i = 0; i < BENCH_BATCH; i++)
                lttng_ust_tracepoint(cbus_bench, llm_end, &t->pl->ctx.tmpl, &t->pl->usage,
                                     t->pl->output);
            t->v[b] = (double)(bench_now_ns() - t0) / BENCH_BATCH;
        }
        pthread_barrier_wait(t->done);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    uint64_t events = 0;
    int runs = 0, want = -1, pause_ms = 0, threads = 1, bad = argc % 2 == 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--events"))
            events = strtoull(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--runs"))
            runs = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--pause-ms"))
            pause_ms = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--expect"))
            want = !strcmp(argv[i + 1], "enabled") ? 1 : !strcmp(argv[i + 1], "disabled") ? 0 : -1;
        else if (!strcmp(argv[i], "--threads"))
            threads = atoi(argv[i + 1]);
        else
            bad = 1;
    }
    if (events < BENCH_BATCH || runs < 1 || runs > BENCH_MAX_RUNS || want < 0 || pause_ms < 0 ||
        threads < 1 || threads > MAX_THREADS || bad) {
        fprintf(stderr, "usage: cbus-bench-compare-lttng --events N --runs R --expect enabled|disabled "
                        "[--pause-ms MS] [--threads 1|2]\n");
        return 2;
    }
    int state = 0;
    for (int tries = 0; tries < 1000; tries++) {
        state = lttng_ust_tracepoint_enabled(cbus_bench, llm_end) ? 1 : 0;
        if (state == want)
            break;
        usleep(10000);
    }
    if (state != want) {
        fprintf(stderr, "cbus-bench-compare-lttng: tracepoint cbus_bench:llm_end is %s, expected %s\n",
                state ? "enabled" : "disabled", want ? "enabled" : "disabled");
        return 3;
    }
    struct bench_payload pl;
    bench_payload_init(&pl);
    size_t nb = events / BENCH_BATCH;
    pthread_barrier_t start, done;
    pthread_barrier_init(&start, NULL, (unsigned)threads + 1);
    pthread_barrier_init(&done, NULL, (unsigned)threads + 1);
    struct tracer tr[MAX_THREADS];
    pthread_t th[MAX_THREADS];
    for (int i = 0; i < threads; i++) {
        tr[i] = (struct tracer){.cpu = i, .nb = nb, .pl = &pl, .start = &start, .done = &done,
                                .runs = runs};
        tr[i].v = malloc(nb * sizeof(double));
        pthread_create(&th[i], NULL, tracer_main, &tr[i]);
    }
    double *all = malloc(nb * (size_t)threads * sizeof *all);
    for (int r = 0; r < runs; r++) {
        if (r && pause_ms)
            usleep((useconds_t)pause_ms * 1000);
        uint64_t t_start = bench_now_ns();
        pthread_barrier_wait(&start);
        pthread_barrier_wait(&done);
        uint64_t elapsed = bench_now_ns() - t_start;
        for (int i = 0; i < threads; i++)
            memcpy(all + (size_t)i * nb, tr[i].v, nb * sizeof *all);
        struct run_stats s = {0};
        bench_summarize(all, nb * (size_t)threads, &s);
        s.events = nb * BENCH_BATCH * (uint64_t)threads;
        s.mevents_s = (double)s.events / ((double)elapsed / 1e3);
        bench_run_print(stdout, &s);
        fflush(stdout);
    }
    for (int i = 0; i < threads; i++) {
        pthread_join(th[i], NULL);
        free(tr[i].v);
    }
    free(all);
    return 0;
}
