/* cbus-export benchmark: spans per second from a bus to a loopback
 * collector through the real daemon, and the exporter's CPU per 1k events.
 *
 *   cbus-export-bench [--spans N] [--runs R] [--gzip] [--msgpack] [--tokens K]
 *
 * Each run: a fresh bus; cbus-collector on loopback; cbus-export attached
 * lossless (so nothing is lost and the count is exact); this process emits
 * N LLM calls (chat_model_start, K streamed tokens, llm_end with usage) as
 * fast as the lossless gate allows: an emit the gate refuses (-EAGAIN: the
 * ring is full of events the exporter has not made durable yet) is retried,
 * so every call arrives and the rate is the sustained end-to-end rate.  Time is from the first emit to the
 * collector holding all N spans; CPU is the exporter's user+system time
 * from /proc.  Prints each run and the medians.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cbus/bus.h>
#include <cbus/producer.h>

#include "harness.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char **argv)
{
    long spans = 500000, runs = 3, tokens = 0, batch = 512, inflight = 4, capacity = 65536;
    int gzip = 0, msgpack = 0, ch;
    static const struct option lo[] = {{"spans", 1, 0, 'n'}, {"runs", 1, 0, 'r'}, {"tokens", 1, 0, 't'},
                                       {"gzip", 0, 0, 'g'},  {"msgpack", 0, 0, 'm'}, {"batch", 1, 0, 'b'},
                                       {"in-flight", 1, 0, 'i'}, {"capacity", 1, 0, 'c'}, {0, 0, 0, 0}};
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 'n': spans = atol(optarg); break;
        case 'r': runs = atol(optarg); break;
        case 't': tokens = atol(optarg); break;
        case 'g': gzip = 1; break;
        case 'm': msgpack = 1; break;
        case 'b': batch = atol(optarg); break;
        case 'i': inflight = atol(optarg); break;
        case 'c': capacity = atol(optarg); break;
        default:
            fprintf(stderr, "usage: cbus-export-bench [--spans N] [--runs R] [--tokens K] [--gzip] [--msgpack]\n"
                    "                         [--batch ITEMS] [--in-flight N] [--capacity SLOTS]\n");
            return 2;
        }
    }
    if (spans < 1 || runs < 1 || runs > 31 || tokens < 0)
        return 2;
    double rate[32], cpu_k[32], coll_cpu[32];
    long events_per_call = 2 + tokens;
    for (long run = 0; run < runs; run++) {
        char dir[] = "/tmp/cbus-export-bench-XXXXXX";
        if (!mkdtemp(dir)) {
            perror("mkdtemp");
            return 1;
        }
        char bus[32];
        snprintf(bus, sizeof bus, "xbench%d_%ld", (int)getpid(), run);
        cbus_bus_destroy(bus);
        struct cbus_create_opts co = {.capacity = (uint64_t)capacity};
        int r = cbus_bus_create(bus, &co);
        if (r) {
            fprintf(stderr, "create bus: %s\n", cbus_strerror(r));
            return 1;
        }
        struct collector col;
        const char *cargs[] = {NULL};
        /* no --store: the collector counts; storing would measure the disk */
        if (collector_start(&col, dir, 0, cargs)) {
            fprintf(stderr, "collector did not start\n");
            return 1;
        }
        char cfg[1024];
        snprintf(cfg, sizeof cfg,
                 "[bus]\nmode = lossless\nstart = newest\n[export]\nformat = %s\nendpoint = http://127.0.0.1:%u%s\n"
                 "gzip = %s\nbatch_max_items = %ld\nbatch_max_age = 100ms\nmax_in_flight = %ld\n"
                 "[spool]\ndir = %s/spool\n[status]\ninterval = 100ms\n",
                 msgpack ? "msgpack" : "otlp", col.port, msgpack ? "/ingest" : "", gzip ? "true" : "false", batch,
                 inflight, dir);
        struct exporter_proc ex;
        if (exporter_start(&ex, dir, bus, cfg)) {
            fprintf(stderr, "exporter did not start\n");
            return 1;
        }
        cbus_producer *p;
        if ((r = cbus_producer_open(&p, bus, NULL))) {
            fprintf(stderr, "producer: %s\n", cbus_strerror(r));
            return 1;
        }
        double cpu0 = proc_cpu_seconds(ex.pid), ccpu0 = proc_cpu_seconds(col.pid);
        double t0 = now_s();
        cbus_ctx root, ctx;
        cbus_ctx_init(&root);
        cbus_ctx_set_provider(&root, "openai");
        cbus_ctx_set_model(&root, "gpt-4o-mini");
        cbus_ctx_set_user(&root, "user-17");
        cbus_ctx_set_session(&root, "session-4711");
        struct cbus_usage u = {.input_tokens = 812, .output_tokens = 143, .cache_read_tokens = 512,
                               .finish_reason = CBUS_FINISH_STOP,
                               .usage_present = CBUS_USAGE_INPUT | CBUS_USAGE_OUTPUT | CBUS_USAGE_CACHE_READ};
        long dropped = 0; /* refused and retried */
        /* a refused emit sleeps before retrying: a spinning producer would
         * take the CPU the exporter and the collector need on 2 cores */
#define EMIT(call)                                                                                 \
    while ((call) == -EAGAIN) {                                                                    \
        dropped++;                                                                                 \
        nanosleep(&backoff, NULL);                                                                 \
    }
        struct timespec backoff = {0, 200000};
        for (long i = 0; i < spans; i++) {
            cbus_ctx_child(&ctx, &root);
            EMIT(cbus_chat_model_start(p, &ctx, "What is the capital of France?", NULL));
            for (long k = 0; k < tokens; k++)
                EMIT(cbus_llm_new_token(p, &ctx, "tok", 3));
            EMIT(cbus_llm_end(p, &ctx, &u, "Paris."));
        }
        double t_emit = now_s() - t0;
        long want = msgpack ? spans * events_per_call : spans;
        const char *key = msgpack ? "events" : "spans";
        int64_t got = wait_for(get_collector, &col, key, want, 120000);
        double t1 = now_s();
        double cpu = proc_cpu_seconds(ex.pid) - cpu0, ccpu = proc_cpu_seconds(col.pid) - ccpu0;
        int64_t sent_bytes = exporter_stat(&ex, "export.sent_bytes");
        cbus_producer_close(p);
        exporter_stop(&ex, 10000);
        collector_stop(&col);
        cbus_bus_destroy(bus);
        char rm[128];
        snprintf(rm, sizeof rm, "rm -rf %s", dir);
        if (system(rm)) {
        }
        rate[run] = (double)got / (t1 - t0);
        cpu_k[run] = cpu / ((double)spans * (double)events_per_call / 1000.0) * 1e6;
        coll_cpu[run] = ccpu;
        printf("run %ld: %lld %s in %.3f s (emit %.3f s, %ld emits refused and retried) = %.0f %s/s; exporter CPU %.3f s "
               "= %.1f us per 1k events; collector CPU %.3f s; %.1f bytes/span on the wire\n",
               run + 1, (long long)got, key, t1 - t0, t_emit, dropped, rate[run], key, cpu, cpu_k[run], ccpu,
               got > 0 ? (double)sent_bytes / (double)got : 0.0);
        fflush(stdout);
    }
    printf("median over %ld runs (%ld calls x %ld events, %s%s): %.0f %s/s, exporter %.1f us CPU per 1k events, "
           "collector %.3f s CPU\n",
           runs, spans, events_per_call, msgpack ? "msgpack" : "otlp", gzip ? "+gzip" : "", median(rate, (int)runs),
           msgpack ? "events" : "spans", median(cpu_k, (int)runs), median(coll_cpu, (int)runs));
    return 0;
}
