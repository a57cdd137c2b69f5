/* cbus-export benchmark: spans per second from a bus to a loopback
 * collector through the real daemon, and the exporter's CPU per 1k events.
 *
 *   cbus-bench-export [--spans N] [--runs R] [--gzip] [--msgpack] [--tokens K]
 *
 * Each run: a fresh bus; cbus-collector on loopback; cbus-export attached
 * lossless (so nothing is lost and the count is exact); this process emits
 * N LLM calls (chat_model_start, K streamed tokens, llm_end with usage) as
 * fast as the lossless gate allows: an emit the gate refuses (-EAGAIN: the
 * ring is full of events the exporter has not made durable yet) is retried,
 * so every call arrives and the rate is the sustained end-to-end rate.  Time is from the first emit to the
 * collector holding all N spans; CPU is the exporter's user+system time
 * from /proc.  Prints each run and the medians.  With --content BYTES each
 * chat start carries a messages body of about BYTES and each end an output
 * text of BYTES / 4, which the exporter captures (capture_content = true)
 * unless --no-capture: the same traffic on the bus, its bodies skipped.
 *
 *   cbus-bench-export --encode-only [--spans N] [--tokens K]
 *
 *   [--encoding protobuf|json] (protobuf, the exporter's default)
 *   [--content BYTES]  capture_content on: each start carries a messages body
 *                      of about BYTES (one user message), each end a text of
 *                      BYTES / 4 (content.c: kept, validated, encoded)
 * measures span assembly + OTLP encoding alone, in this thread (thread
 * CPU time): what the exporter's CPU would be without the bus copy, libcurl
 * and the kernel.
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
#include "otlp.h"
#include "span.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct enc_state {
    struct sbuf buf;
    struct otlp_opts o;
    struct otlp_resource r;
    struct otlp_mark m;
    unsigned in_batch;
    uint64_t bytes;
};

static void enc_span(const struct span *sp, void *arg)
{
    struct enc_state *e = arg;
    if (e->in_batch == 0)
        otlp_begin(&e->buf, &e->r, &e->o, &e->m);
    otlp_span(&e->buf, sp, e->in_batch == 0, &e->o);
    if (++e->in_batch == 2048) {
        otlp_end(&e->buf, &e->o, &e->m);
        e->bytes += e->buf.len;
        sbuf_reset(&e->buf);
        e->in_batch = 0;
    }
}

static double thread_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Assembly + encoding only: synthetic chat calls like the end-to-end run. */
/* One body section into buf at *len. */
static void bench_section(unsigned char *buf, uint32_t *len, unsigned type, const char *data, uint32_t n)
{
    struct cbus_body_section h = {(uint16_t)type, 0, n, n, 0};
    memcpy(buf + *len, &h, sizeof h);
    memcpy(buf + *len + sizeof h, data, n);
    *len += (uint32_t)sizeof h + n;
}

static int encode_only(long spans, long tokens, unsigned encoding, long content)
{
    struct enc_state e = {.r = {.service_name = "cbus", .host_name = "vm", .pid = 1, .bus_name = "bench"},
                          .o = {.encoding = encoding, .capture_content = content > 0,
                                .content_max = content > 16384 ? (size_t)content + 1024 : 16384}};
    sbuf_init(&e.buf);
    struct span_table *t;
    if (span_table_new(&t, 100000, enc_span, &e))
        return 1;
    /* the bodies a consumer would copy out of the ring for each call */
    unsigned char *sb = NULL, *eb = NULL;
    uint32_t sbl = 0, ebl = 0;
    if (content > 0) {
        span_table_bodies(t, 1, 1, e.o.content_max, (uint64_t)1 << 30);
        char *text = malloc((size_t)content + 1);
        sb = malloc((size_t)content + 256);
        eb = malloc((size_t)content / 4 + 64);
        if (!text || !sb || !eb)
            return 1;
        for (long i = 0; i < content; i++)
            text[i] = "abcdefghij klmnopqrstuvwxyz, ABCDEFGHIJ. "[i % 41];
        static const char pre[] = "[{\"role\":\"user\",\"parts\":[{\"type\":\"text\",\"content\":\"";
        static const char post[] = "\"}]}]";
        char *msgs = malloc((size_t)content + sizeof pre + sizeof post);
        if (!msgs)
            return 1;
        memcpy(msgs, pre, sizeof pre - 1);
        memcpy(msgs + sizeof pre - 1, text, (size_t)content);
        memcpy(msgs + sizeof pre - 1 + content, post, sizeof post - 1);
        bench_section(sb, &sbl, CBUS_BODY_MESSAGES, msgs, (uint32_t)(content + sizeof pre + sizeof post - 2));
        bench_section(eb, &ebl, CBUS_BODY_TEXT, text, (uint32_t)(content / 4));
        free(msgs);
        free(text);
    }
    struct cbus_body sbody = {sb, sbl}, ebody = {eb, ebl};
    struct cbus_event st, tok, en;
    memset(&st, 0, sizeof st);
    st.kind = CBUS_EV_CHAT_MODEL_START;
    st.flags = CBUS_FLAG_HAS_PARENT | CBUS_FLAG_HAS_TRACE;
    st.pid = st.tid = 4242;
    memset(st.parent_run_id, 7, 16);
    memset(st.trace_id, 9, 16);
    strcpy(st.provider, "openai");
    strcpy(st.model, "gpt-4o-mini");
    strcpy(st.user, "user-17");
    strcpy(st.session, "session-4711");
    tok = st;
    tok.kind = CBUS_EV_LLM_NEW_TOKEN;
    en = st;
    en.kind = CBUS_EV_LLM_END;
    en.u.usage = (struct cbus_usage){.input_tokens = 812, .output_tokens = 143, .cache_read_tokens = 512,
                                     .finish_reason = CBUS_FINISH_STOP,
                                     .usage_present = CBUS_USAGE_INPUT | CBUS_USAGE_OUTPUT | CBUS_USAGE_CACHE_READ};
    uint64_t pos = 0, ts = 1700000000000000000ull;
    double c0 = thread_cpu_s();
    for (long i = 0; i < spans; i++) {
        memcpy(st.run_id, &i, sizeof i);
        st.event_id = pos++;
        st.ts_realtime_ns = ts;
        st.ts_mono_ns = ts;
        span_table_feed_body(t, &st, content > 0 ? &sbody : NULL, ts);
        for (long k = 0; k < tokens; k++) {
            memcpy(tok.run_id, &i, sizeof i);
            tok.event_id = pos++;
            tok.ts_mono_ns = ts + 1000 * (uint64_t)(k + 1);
            span_table_feed(t, &tok, ts);
        }
        memcpy(en.run_id, &i, sizeof i);
        en.event_id = pos++;
        en.ts_realtime_ns = en.ts_mono_ns = ts + 500000;
        span_table_feed_body(t, &en, content > 0 ? &ebody : NULL, ts);
        ts += 1000000;
    }
    double cpu = thread_cpu_s() - c0;
    printf("encode-only (%s%s%ld): %ld spans (%ld events each) in %.3f s CPU = %.0f ns per span, %.0f ns per event, "
           "%.0f bytes per span; one core: %.0f spans/s\n",
           encoding == OTLP_PROTOBUF ? "protobuf" : "json", content > 0 ? ", content " : "", content > 0 ? content : 0,
           spans, 2 + tokens, cpu, cpu / (double)spans * 1e9, cpu / (double)pos * 1e9,
           (double)(e.bytes + e.buf.len) / (double)spans, (double)spans / cpu);
    span_table_free(t);
    sbuf_free(&e.buf);
    free(sb);
    free(eb);
    return 0;
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
    long spans = 500000, runs = 3, tokens = 0, batch = 512, inflight = 4, capacity = 65536, content = 0;
    int gzip = 0, msgpack = 0, encode = 0, capture = 1, ch;
    unsigned encoding = OTLP_PROTOBUF;
    static const struct option lo[] = {{"spans", 1, 0, 'n'}, {"runs", 1, 0, 'r'}, {"tokens", 1, 0, 't'},
                                       {"gzip", 0, 0, 'g'},  {"msgpack", 0, 0, 'm'}, {"batch", 1, 0, 'b'},
                                       {"in-flight", 1, 0, 'i'}, {"capacity", 1, 0, 'c'}, {"encode-only", 0, 0, 'e'},
                                       {"encoding", 1, 0, 'E'}, {"content", 1, 0, 'C'},
                                       {"no-capture", 0, 0, 'N'}, {0, 0, 0, 0}};
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
        case 'e': encode = 1; break;
        case 'C': content = atol(optarg); break;
        case 'N': capture = 0; break;
        case 'E':
            if (!strcmp(optarg, "json"))
                encoding = OTLP_JSON;
            else if (!strcmp(optarg, "protobuf"))
                encoding = OTLP_PROTOBUF;
            else
                return 2;
            break;
        default:
            fprintf(stderr, "usage: cbus-bench-export [--spans N] [--runs R] [--tokens K] [--gzip] [--msgpack]\n"
                    "                         [--batch ITEMS] [--in-flight N] [--capacity SLOTS] [--encode-only]\n"
                    "                         [--encoding protobuf|json] [--content BYTES] [--no-capture]\n");
            return 2;
        }
    }
    if (spans < 1 || runs < 1 || runs > 31 || tokens < 0 || content < 0 || content > 60000)
        return 2;
    if (encode)
        return encode_only(spans, tokens, encoding, content);
    double rate[32], cpu_k[32], coll_cpu[32], wire[32];
    long events_per_call = 2 + tokens;
    /* --content BYTES end to end: each chat start carries a messages body
     * of about BYTES and each end an output text of BYTES / 4, as in
     * --encode-only; the exporter captures them unless --no-capture (then
     * the same traffic, its bodies skipped by the poll) */
    char *msgs = NULL, *outtext = NULL;
    size_t msgs_len = 0;
    if (content > 0) {
        static const char pre[] = "[{\"role\":\"user\",\"parts\":[{\"type\":\"text\",\"content\":\"";
        static const char post[] = "\"}]}]";
        msgs = malloc((size_t)content + sizeof pre + sizeof post);
        outtext = malloc((size_t)content / 4 + 1);
        if (!msgs || !outtext)
            return 1;
        memcpy(msgs, pre, sizeof pre - 1);
        for (long i = 0; i < content; i++)
            msgs[sizeof pre - 1 + (size_t)i] = (char)(i % 61 == 60 ? ' ' : 'a' + i % 26);
        memcpy(msgs + sizeof pre - 1 + content, post, sizeof post);
        msgs_len = strlen(msgs);
        for (long i = 0; i < content / 4; i++)
            outtext[i] = (char)(i % 53 == 52 ? ' ' : 'A' + i % 26);
        outtext[content / 4] = '\0';
    }
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
                 "capture_content = %s\ncontent_max_bytes = 64k\n"
                 "[otlp]\nencoding = %s\n[spool]\ndir = %s/spool\n[status]\ninterval = 100ms\n",
                 msgpack ? "msgpack" : "otlp", col.port, msgpack ? "/ingest" : "", gzip ? "true" : "false", batch,
                 inflight, content > 0 && capture ? "true" : "false",
                 encoding == OTLP_PROTOBUF ? "protobuf" : "json", dir);
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
            if (msgs)
                EMIT(cbus_chat_model_start_messages(p, &ctx, msgs, msgs_len, "What is the capital?", NULL))
            else
                EMIT(cbus_chat_model_start(p, &ctx, "What is the capital of France?", NULL))
            for (long k = 0; k < tokens; k++)
                EMIT(cbus_llm_new_token(p, &ctx, "tok", 3));
            EMIT(cbus_llm_end(p, &ctx, &u, outtext ? outtext : "Paris."));
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
        wire[run] = got > 0 ? (double)sent_bytes / (double)got : 0.0;
        printf("run %ld: %lld %s in %.3f s (emit %.3f s, %ld emits refused and retried) = %.0f %s/s; exporter CPU %.3f s "
               "= %.1f us per 1k events; collector CPU %.3f s; %.1f bytes/span on the wire\n",
               run + 1, (long long)got, key, t1 - t0, t_emit, dropped, rate[run], key, cpu, cpu_k[run], ccpu,
               got > 0 ? (double)sent_bytes / (double)got : 0.0);
        fflush(stdout);
    }
    printf("median over %ld runs (%ld calls x %ld events, %s%s%s, content %ld B%s): %.0f %s/s, exporter %.1f us CPU "
           "per 1k events, collector %.3f s CPU, %.0f bytes/span\n",
           runs, spans, events_per_call, msgpack ? "msgpack" : "otlp",
           msgpack ? "" : encoding == OTLP_PROTOBUF ? " protobuf" : " json", gzip ? "+gzip" : "", content,
           content > 0 ? (capture ? " captured" : " not captured") : "", median(rate, (int)runs),
           msgpack ? "events" : "spans", median(cpu_k, (int)runs), median(coll_cpu, (int)runs),
           median(wire, (int)runs));
    free(msgs);
    free(outtext);
    return 0;
}
