/* Limiter throughput fed directly with event records: no ring, the cost of
 * counting (plus copying each batch of 256 records into a buffer, as
 * cbus_consumer_poll() does).  100k users over 50 models, half llm_start and half llm_end
 * with usage, 5M events/s of event time; rules per user, per model and
 * global, verdicts drained every 256 events into a real admission table
 * (an anonymous mapping laid out by cbus_bus_format).
 *
 *   cbus-bench-ratelimit-limiter [keys] [events] [runs] [batch|single]
 */
#include <cbus/admit.h>
#include <cbus/bus.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "limiter.h"
#include "ratelimit_config.h"

static uint64_t mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* CPU time of this thread: on a shared VM, wall time counts other tenants. */
static uint64_t cpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static cbus_bus *bus;
static unsigned writer;

static int publish(void *ctx, unsigned scope, uint64_t key_hash, const char *key,
                   unsigned verdict, uint64_t until)
{
    (void)ctx;
    return cbus_admit_publish_hash(bus, writer, scope, key_hash, key, verdict, until);
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    unsigned keys = argc > 1 ? (unsigned)atoi(argv[1]) : 100000;
    unsigned n = argc > 2 ? (unsigned)atoi(argv[2]) : 1000000;
    unsigned runs = argc > 3 ? (unsigned)atoi(argv[3]) : 5;
    int batch = argc > 4 ? strcmp(argv[4], "single") != 0 : 1;
    struct cbus_create_opts o = {.capacity = 1024};
    size_t len = cbus_bus_size(&o);
    void *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    int r;
    if (mem == MAP_FAILED || (r = cbus_bus_format(mem, len, "bench", &o)) ||
        (r = cbus_bus_open_mem(&bus, mem, len)) ||
        (r = cbus_admit_writer_register(bus, "ratelimit", &writer))) {
        fprintf(stderr, "setup failed\n");
        return 1;
    }
    /* Twice n events: the first n warm the limiter up (every key created,
     * memory faulted in), the next n are timed: the steady state. */
    struct cbus_event *all = calloc(2 * (size_t)n, sizeof *all), *evs = all + n;
    if (!all)
        return 1;
    /* Each user sends about 5M/100k/2 = 25 requests/s of event time, under
     * its rpm=6000: the limiter counts everything and throttles rarely, as
     * in production, where throttled producers stop sending. */
    uint64_t x = 88172645463325252u, t = UINT64_C(1000000000000);
    for (unsigned i = 0; i < 2 * n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        struct cbus_event *e = &all[i];
        unsigned u = (unsigned)(x % keys);
        e->kind = i & 1 ? CBUS_EV_LLM_END : CBUS_EV_LLM_START;
        e->ts_mono_ns = t;
        t += 200; /* 5M events per second of event time */
        snprintf(e->user, sizeof e->user, "user-%06u@example.com", u);
        snprintf(e->model, sizeof e->model, "model-%02u", u % 50);
        memcpy(e->provider, "openai", 6);
        /* The whole values' hashes, as the producer library writes them. */
        e->key_hash[CBUS_KEY_USER] = cbus_key_hash(e->user, strnlen(e->user, sizeof e->user));
        e->key_hash[CBUS_KEY_MODEL] = cbus_key_hash(e->model, strnlen(e->model, sizeof e->model));
        e->key_hash[CBUS_KEY_PROVIDER] = cbus_key_hash("openai", 6);
        e->run_id[0] = (uint8_t)u;
        e->run_id[1] = (uint8_t)(u >> 8);
        e->run_id[2] = (uint8_t)(u >> 16);
        if (e->kind == CBUS_EV_LLM_END) {
            e->u.usage.input_tokens = 500;
            e->u.usage.output_tokens = 200;
            e->u.usage.usage_present = CBUS_USAGE_INPUT | CBUS_USAGE_OUTPUT;
        }
    }
    double *rate = calloc(runs, sizeof *rate), *crate = calloc(runs, sizeof *crate);
    static struct cbus_event buf[256];
    struct rl_stats st;
    for (unsigned run = 0; run < runs; run++) {
        struct rl_config cfg;
        char err[256];
        if (rl_config_parse(&cfg, "bench",
                            "[rules]\n"
                            "rule = user=* rpm=6000 tpm=10000000\n"
                            "rule = model=* rpm=1000000 tpm=1000000000\n"
                            "rule = global rpm=100000000\n",
                            err, sizeof err)) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        rl_limiter *l;
        if (rl_new(&l, &cfg.rules, &cfg.opts))
            return 1;
        rl_config_free(&cfg);
        for (unsigned i = 0; i < n; i += 256) {
            unsigned m = n - i < 256 ? n - i : 256;
            rl_feed_batch(l, &all[i], m);
            rl_drain(l, all[i + m - 1].ts_mono_ns, publish, NULL);
        }
        uint64_t t0 = mono(), c0 = cpu();
        /* As the daemon does: copy 256 records (its poll size; poll copies
         * them out of the ring) into a buffer, feed, drain. */
        for (unsigned i = 0; i < n; i += 256) {
            unsigned m = n - i < 256 ? n - i : 256;
            memcpy(buf, &evs[i], m * sizeof *buf);
            if (batch)
                rl_feed_batch(l, buf, m);
            else
                for (unsigned j = 0; j < m; j++)
                    rl_feed(l, &buf[j]);
            rl_drain(l, buf[m - 1].ts_mono_ns, publish, NULL);
        }
        rl_expire(l, evs[n - 1].ts_mono_ns);
        uint64_t el = mono() - t0, cel = cpu() - c0;
        rate[run] = (double)n / ((double)el / 1e9);
        crate[run] = (double)n / ((double)cel / 1e9);
        rl_get_stats(l, &st);
        rl_free(l);
    }
    qsort(rate, runs, sizeof *rate, cmp);
    qsort(crate, runs, sizeof *crate, cmp);
    printf("limiter (%s): %u events over %u users, 3 rules (user, model, global), median of %u runs:\n",
           batch ? "rl_feed_batch" : "rl_feed", n, keys, runs);
    printf("  wall time: %.2f M events/s (min %.2f, max %.2f)\n", rate[runs / 2] / 1e6,
           rate[0] / 1e6, rate[runs - 1] / 1e6);
    printf("  CPU time:  %.2f M events/s (min %.2f, max %.2f)\n", crate[runs / 2] / 1e6,
           crate[0] / 1e6, crate[runs - 1] / 1e6);
    printf("  keys live %llu (peak %llu), throttles %llu, published %llu\n",
           (unsigned long long)st.keys, (unsigned long long)st.keys_peak,
           (unsigned long long)st.throttles, (unsigned long long)st.published);
    free(rate);
    free(crate);
    free(all);
    cbus_admit_writer_release(bus, writer);
    cbus_bus_close(bus);
    munmap(mem, len);
    return 0;
}
