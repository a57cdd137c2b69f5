/* cbus-bench-audit: throughput of the audit log.
 *
 *   encode mode (--encode-only): msgpack encoding, then encoding + SHA-256
 *     chain, no I/O: the serial stage's cost per event.
 *   writer mode (default): synthetic events straight into the writer:
 *     record encoding + SHA-256 chain + io_uring writes + fdatasync.
 *   bus mode (--bus): end to end: this process emits llm_new_token events
 *     into a fresh bus sized to hold them all, the real daemon loop
 *     (audit_run) consumes them losslessly in a child process; timed from the
 *     first emit until the committed (durable) cursor reaches the last event.
 *
 * Prints one line per run; run it a few times and take the median (the
 * machine is a noisy shared VM).  Figures are in docs/audit.md.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cbus/bus.h>
#include <cbus/consumer.h>
#include <cbus/producer.h>

#include "audit.h"
#include "config.h"
#include "daemon.h"
#include "log.h"
#include "writer.h"

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* A streaming-token event as an OpenAI-style gateway would emit it. */
static void sample_event(struct cbus_event *ev, uint64_t i)
{
    memset(ev, 0, sizeof *ev);
    ev->kind = CBUS_EV_LLM_NEW_TOKEN;
    ev->flags = CBUS_FLAG_HAS_TRACE;
    ev->pid = 4242;
    ev->tid = 4243;
    ev->event_id = i;
    ev->ts_realtime_ns = 1795489948380668061ull + i * 1000;
    ev->ts_mono_ns = 1254823015339ull + i * 1000;
    for (int k = 0; k < 16; k++) {
        ev->run_id[k] = (uint8_t)(0x11 * k + (i >> 6));
        ev->trace_id[k] = (uint8_t)(0x2d * k + 7);
    }
    memcpy(ev->provider, "openai", 6);
    memcpy(ev->model, "gpt-4o-2024-08-06", 17);
    memcpy(ev->user, "user-1234", 9);
    memcpy(ev->session, "conv-5678", 9);
    snprintf(ev->preview, sizeof ev->preview, " token%" PRIu64, i % 1000);
    ev->u.token.index = (uint32_t)(i & 1023);
}

/* CPU seconds (user + system, io_uring workers included) of a rusage. */
static double cpu_s(const struct rusage *ru)
{
    return (double)ru->ru_utime.tv_sec + (double)ru->ru_utime.tv_usec / 1e6 +
           (double)ru->ru_stime.tv_sec + (double)ru->ru_stime.tv_usec / 1e6;
}

static int rm_logs(const char *dir)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd);
}

struct opts {
    uint64_t events;
    unsigned batch_events;
    unsigned qd;
    uint64_t batch_bytes;
    unsigned sync;
    uint64_t interval_ns;
    const char *dir;
    const char *bus;
    unsigned preview;
    uint64_t rate;         /* bus mode: events/s the producer is paced at (0 = flat out) */
    int verbose;           /* bus mode: the daemon's info lines (its final status) */
    int encode_only;       /* no I/O: encoding and hashing cost */
    uint64_t capacity;     /* paced bus mode: ring slots */
};

static int bench_writer(const struct opts *o)
{
    rm_logs(o->dir);
    mkdir(o->dir, 0750);
    struct audit_writer_opts wo = {
        .dir = o->dir, .prefix = "bench", .bus = "bench", .queue_depth = o->qd,
        .batch_bytes = (size_t)o->batch_bytes, .batch_events = o->batch_events, .sync = o->sync,
        .sync_interval_ns = o->interval_ns, .max_file_bytes = 1ull << 30,
        .redact = {.mode = o->preview}, .retry_initial_ns = 100000000u,
        .retry_max_ns = 1000000000u};
    struct audit_resume r;
    struct audit_writer *w;
    char err[256];
    if (audit_writer_open(&w, &wo, &r, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    audit_writer_set_bus(w, 1, &(struct cbus_position){.lanes = 1});
    /* Events made up front: the producer's work is not what is measured. */
    static struct cbus_event tmpl[1024];
    for (unsigned i = 0; i < 1024; i++)
        sample_event(&tmpl[i], i);
    struct cbus_event ev;
    struct timespec c0, c1;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
    uint64_t t0 = mono_ns();
    for (uint64_t i = 0; i < o->events; i++) {
        memcpy(&ev, &tmpl[i & 1023], sizeof ev);
        ev.event_id = i;
        ev.ts_realtime_ns += i;
        ev.ts_mono_ns += i;
        while (audit_writer_append(w, &ev, NULL) == -EAGAIN)
            audit_writer_service(w, 200000);
        if ((i & 255) == 255)
            audit_writer_service(w, 0);
    }
    while (!audit_writer_idle(w)) {
        audit_writer_flush(w);
        audit_writer_service(w, 1000000);
    }
    uint64_t dt = mono_ns() - t0;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
    /* The encoding thread is the pipeline's serial stage (the chain is
     * sequential); the kernel's page-cache copy runs on io-wq workers. */
    double main_us = ((double)(c1.tv_sec - c0.tv_sec) * 1e9 + (double)(c1.tv_nsec - c0.tv_nsec)) /
                     1e3 / (double)o->events;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    struct audit_writer_stats st;
    audit_writer_stats(w, &st);
    struct cbus_position durable = {0};
    int valid = audit_writer_durable_position(w, &durable);
    uint64_t cur = durable.pos[0];
    audit_writer_close(w);
    printf("writer: %" PRIu64 " events in %.3f s = %.2f M events/s, %.1f MB/s, %.0f B/record, "
           "%" PRIu64 " batches (%.0f events/batch), %" PRIu64 " fdatasync, sync %s%s, "
           "queue depth %u, durable cursor %" PRIu64 ", CPU %.2f us/event (encoding thread "
           "%.2f us/event)\n",
           o->events, (double)dt / 1e9, (double)o->events / ((double)dt / 1e9) / 1e6,
           (double)st.bytes / ((double)dt / 1e9) / 1e6, (double)st.bytes / (double)o->events,
           st.batches, (double)o->events / (double)st.batches, st.syncs,
           o->sync == AUDIT_SYNC_BATCH ? "per batch" : "interval",
           o->sync == AUDIT_SYNC_BATCH ? "" : (o->interval_ns >= 10000000 ? " (>=10ms)" : ""),
           o->qd, valid ? cur : 0, cpu_s(&ru) * 1e6 / (double)o->events, main_us);
    rm_logs(o->dir);
    return 0;
}

/* The encoding thread's work alone: msgpack encoding, and the SHA-256 chain
 * on top (audit_record_encode), into one reused buffer; no I/O. */
static uint64_t thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int bench_encode(const struct opts *o)
{
    static struct cbus_event tmpl[1024];
    for (unsigned i = 0; i < 1024; i++)
        sample_event(&tmpl[i], i);
    static uint8_t buf[AUDIT_RECORD_MAX];
    uint64_t sum = 0, bytes = 0;
    uint64_t t0 = thread_cpu_ns();
    for (uint64_t i = 0; i < o->events; i++)
        sum += (uint64_t)cbus_evmp_encode(&tmpl[i & 1023], NULL, NULL, buf, sizeof buf);
    uint64_t t1 = thread_cpu_ns();
    struct audit_chain c;
    audit_chain_init(&c);
    struct audit_redact red = {.mode = o->preview};
    for (uint64_t i = 0; i < o->events; i++)
        bytes += (uint64_t)audit_record_encode(&c, &tmpl[i & 1023], NULL, &red, buf, sizeof buf);
    uint64_t t2 = thread_cpu_ns();
    audit_chain_free(&c);
    /* Thread CPU time, not wall time: on a shared machine preemption would
     * otherwise be counted as encoding. */
    printf("encode: %.0f ns/event msgpack only, %.0f ns/event as a chained record (encode + "
           "SHA-256), %.0f B/event, %.0f B/record\n",
           (double)(t1 - t0) / (double)o->events, (double)(t2 - t1) / (double)o->events,
           (double)sum / (double)o->events, (double)bytes / (double)o->events);
    return 0;
}

static int bench_bus(const struct opts *o)
{
    /* A ring that holds every event: the producer never waits, so what is
     * timed is how fast the daemon makes events durable, not the drop path. */
    uint64_t cap = 1024;
    while (cap < o->events && cap < (1u << 24))
        cap <<= 1;
    if (o->rate) /* paced: a fixed ring, as a deployment would have */
        cap = o->capacity;
    struct cbus_create_opts co = {.capacity = cap};
    cbus_bus_destroy(o->bus);
    int rc = cbus_bus_create(o->bus, &co);
    if (rc) {
        fprintf(stderr, "create %s: %s\n", o->bus, cbus_strerror(rc));
        return 1;
    }
    rm_logs(o->dir);
    pid_t daemon = fork();
    if (daemon == 0) {
        struct audit_config cfg;
        audit_config_defaults(&cfg);
        snprintf(cfg.bus, sizeof cfg.bus, "%s", o->bus);
        snprintf(cfg.dir, sizeof cfg.dir, "%s", o->dir);
        cfg.queue_depth = o->qd;
        cfg.batch_events = o->batch_events;
        cfg.batch_bytes = o->batch_bytes;
        cfg.sync = o->sync;
        cfg.sync_interval_ns = o->interval_ns;
        cfg.max_file_bytes = 1ull << 30;
        cfg.preview = o->preview;
        cbus_log_init("cbus-audit", o->verbose ? CBUS_LOG_INFO : CBUS_LOG_WARN);
        cbus_daemon_signals();
        _exit(audit_run(&cfg));
    }
    cbus_bus *bus;
    if ((rc = cbus_bus_open(&bus, o->bus, 0))) {
        fprintf(stderr, "open: %s\n", cbus_strerror(rc));
        return 1;
    }
    /* Wait for the daemon's consumer entry. */
    int idx = -1;
    for (int tries = 0; tries < 5000 && idx < 0; tries++) {
        for (unsigned i = 0; i < CBUS_MAX_CONSUMERS; i++) {
            struct cbus_consumer_entry *e = cbus_bus_consumer_entry(bus, i);
            if (e && atomic_load(&e->state) == CBUS_CSTATE_ACTIVE && !strcmp(e->name, "audit"))
                idx = (int)i;
        }
        usleep(1000);
    }
    if (idx < 0) {
        fprintf(stderr, "daemon did not attach\n");
        kill(daemon, SIGKILL);
        return 1;
    }
    struct cbus_consumer_entry *ce = cbus_bus_consumer_entry(bus, (unsigned)idx);
    cbus_producer *p;
    if ((rc = cbus_producer_open_bus(&p, bus, NULL))) {
        fprintf(stderr, "producer: %s\n", cbus_strerror(rc));
        return 1;
    }
    cbus_ctx ctx;
    cbus_ctx_init(&ctx);
    cbus_ctx_set_provider(&ctx, "openai");
    cbus_ctx_set_model(&ctx, "gpt-4o-2024-08-06");
    cbus_ctx_set_user(&ctx, "user-1234");
    cbus_ctx_set_session(&ctx, "conv-5678");
    uint64_t t0 = mono_ns(), dropped = 0, max_lag = 0;
    for (uint64_t i = 0; i < o->events; i++) {
        if (cbus_llm_new_token(p, &ctx, " token42", 8) == -EAGAIN)
            dropped++;
        if (o->rate && (i & 1023) == 1023) {
            /* Paced: 1024 events, then sleep until the schedule says so. */
            uint64_t lag = cbus_bus_tail(bus) - atomic_load(&ce->cursor);
            if (lag > max_lag)
                max_lag = lag;
            uint64_t due = t0 + (uint64_t)((double)(i + 1) * 1e9 / (double)o->rate);
            uint64_t now = mono_ns();
            if (due > now) {
                struct timespec ts = {(time_t)((due - now) / 1000000000u),
                                      (long)((due - now) % 1000000000u)};
                nanosleep(&ts, NULL);
            }
        }
    }
    uint64_t t_emit = mono_ns() - t0;
    uint64_t tail = cbus_bus_tail(bus);
    while (atomic_load(&ce->cursor) < tail && mono_ns() - t0 < 120000000000ull)
        usleep(200);
    uint64_t dt = mono_ns() - t0;
    uint64_t durable = atomic_load(&ce->cursor);
    kill(daemon, SIGTERM);
    int status;
    struct rusage ru;
    wait4(daemon, &status, 0, &ru);
    char paced[96] = "";
    if (o->rate)
        snprintf(paced, sizeof paced, ", paced at %.2f M/s, max durable lag %" PRIu64 " events",
                 (double)o->rate / 1e6, max_lag);
    /* The daemon keeps the batches in flight within half the ring (run.c). */
    uint64_t batch = o->batch_events;
    if (batch * o->qd > cap / 2)
        batch = cap / 2 / o->qd;
    printf("bus: %" PRIu64 " events emitted in %.3f s, durable in %.3f s = %.2f M events/s "
           "end to end (%" PRIu64 " dropped by the bounded wait, cursor %" PRIu64 "/%" PRIu64
           "%s), sync %s, batch %" PRIu64 " events, queue depth %u, ring %" PRIu64
           " slots, daemon CPU %.2f us/event\n",
           o->events, (double)t_emit / 1e9, (double)dt / 1e9,
           (double)(o->events - dropped) / ((double)dt / 1e9) / 1e6, dropped, durable, tail,
           paced, o->sync == AUDIT_SYNC_BATCH ? "per batch" : "interval", batch, o->qd, cap,
           cpu_s(&ru) * 1e6 / (double)(durable ? durable : 1));
    cbus_producer_close(p);
    cbus_bus_close(bus);
    cbus_bus_destroy(o->bus);
    rm_logs(o->dir);
    return 0;
}

int main(int argc, char **argv)
{
    struct opts o = {.events = 3000000, .batch_events = 8192, .qd = 16,
                     .batch_bytes = 4u << 20, .sync = AUDIT_SYNC_BATCH,
                     .interval_ns = 10000000, .dir = "audit-bench-log",
                     .capacity = 1u << 17};
    static const struct option longopts[] = {
        {"events", required_argument, NULL, 'n'}, {"batch-events", required_argument, NULL, 'b'},
        {"queue-depth", required_argument, NULL, 'q'}, {"batch-bytes", required_argument, NULL, 'B'},
        {"interval", required_argument, NULL, 'i'}, {"dir", required_argument, NULL, 'd'},
        {"bus", required_argument, NULL, 'u'}, {"preview", required_argument, NULL, 'p'},
        {"rate", required_argument, NULL, 'r'}, {"verbose", no_argument, NULL, 'v'},
        {"encode-only", no_argument, NULL, 'e'}, {"capacity", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'n': o.events = strtoull(optarg, NULL, 10); break;
        case 'b': o.batch_events = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'q': o.qd = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'B':
            if (cbus_parse_size(optarg, &o.batch_bytes)) {
                fprintf(stderr, "bad --batch-bytes\n");
                return 2;
            }
            break;
        case 'i':
            if (cbus_parse_duration_ns(optarg, &o.interval_ns)) {
                fprintf(stderr, "bad --interval\n");
                return 2;
            }
            o.sync = AUDIT_SYNC_INTERVAL;
            break;
        case 'd': o.dir = optarg; break;
        case 'r': o.rate = strtoull(optarg, NULL, 10); break;
        case 'v': o.verbose = 1; break;
        case 'e': o.encode_only = 1; break;
        case 'c': o.capacity = strtoull(optarg, NULL, 10); break;
        case 'u': o.bus = optarg; break;
        case 'p':
            o.preview = !strcmp(optarg, "hash") ? AUDIT_REDACT_HASH
                      : !strcmp(optarg, "drop") ? AUDIT_REDACT_DROP : AUDIT_REDACT_KEEP;
            break;
        default:
            fprintf(stderr,
                    "usage: cbus-bench-audit [--events N] [--batch-events N] [--batch-bytes B]\n"
                    "       [--queue-depth N] [--interval D (sync every D instead of per batch)]\n"
                    "       [--preview keep|hash|drop] [--dir DIR] [--bus NAME (end to end)\n"
                    "       [--rate EVENTS_PER_S [--capacity SLOTS]] (bus mode: pace the producer\n"
                    "       on a ring of that size, default 131072)]\n"
                    "       [--encode-only (no I/O: encoding and hashing cost)]\n");
            return opt == 'h' ? 0 : 2;
        }
    }
    if (o.events == 0 || o.batch_events == 0 || o.qd < 2) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    cbus_log_init("cbus-bench-audit", CBUS_LOG_WARN);
    if (o.encode_only)
        return bench_encode(&o);
    return o.bus ? bench_bus(&o) : bench_writer(&o);
}
