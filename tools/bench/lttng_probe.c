/* cbus-compare-lttng: the LTTng-UST side of cbus-compare, a separate program
 * so that liblttng-ust (its constructor, its listener threads, its
 * registration with the session daemon) stays out of every other row.
 *
 *   cbus-compare-lttng --events N --runs R --expect enabled|disabled [--pause-ms MS]
 *
 * Waits (up to 10 s) for the tracepoint to reach the expected state (the
 * session daemon enables it once this process has registered), then times
 * BENCH_BATCH tracepoint calls per sample exactly as cbus-compare times
 * cbus emits, and prints one "run ..." line per run (bench_run_print).
 * --pause-ms leaves the consumer daemon time to empty the buffers between
 * runs, so that each run starts with room.
 * Exit 0, 2 (usage), 3 (the tracepoint never reached the expected state). */
#include "bench.h"
#include "lttng_tp.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    uint64_t events = 0;
    int runs = 0, want = -1, pause_ms = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--events"))
            events = strtoull(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--runs"))
            runs = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--pause-ms"))
            pause_ms = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--expect"))
            want = !strcmp(argv[i + 1], "enabled") ? 1 : !strcmp(argv[i + 1], "disabled") ? 0 : -1;
    }
    if (events < BENCH_BATCH || runs < 1 || runs > BENCH_MAX_RUNS || want < 0 || pause_ms < 0 ||
        (argc != 7 && argc != 9)) {
        fprintf(stderr, "usage: cbus-compare-lttng --events N --runs R --expect enabled|disabled "
                        "[--pause-ms MS]\n");
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
        fprintf(stderr, "cbus-compare-lttng: tracepoint cbus_bench:llm_end is %s, expected %s\n",
                state ? "enabled" : "disabled", want ? "enabled" : "disabled");
        return 3;
    }
    bench_pin(0);
    struct bench_payload pl;
    bench_payload_init(&pl);
    size_t nb = events / BENCH_BATCH;
    double *v = malloc(nb * sizeof *v);
    for (int r = 0; r < runs; r++) {
        if (r && pause_ms)
            usleep((useconds_t)pause_ms * 1000);
        uint64_t t_start = bench_now_ns();
        for (size_t b = 0; b < nb; b++) {
            uint64_t t0 = bench_now_ns();
            for (int i = 0; i < BENCH_BATCH; i++)
                lttng_ust_tracepoint(cbus_bench, llm_end, &pl.ctx.tmpl, &pl.usage, pl.output);
            v[b] = (double)(bench_now_ns() - t0) / BENCH_BATCH;
        }
        uint64_t elapsed = bench_now_ns() - t_start;
        struct run_stats s = {0};
        bench_summarize(v, nb, &s);
        s.events = nb * BENCH_BATCH;
        s.mevents_s = (double)s.events / ((double)elapsed / 1e3);
        bench_run_print(stdout, &s);
        fflush(stdout);
    }
    free(v);
    return 0;
}
