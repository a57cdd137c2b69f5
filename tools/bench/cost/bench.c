/* cbus-bench-cost: throughput of the accounting path.
 *
 *   cbus-bench-cost [--events N] [--users U] [--models M] [--sessions S]
 *                   [--prices FILE] [--bus] [--single]
 *
 * Direct mode (default) feeds pre-built struct cbus_event records into
 * cost_ledger_apply(), the exact code the daemon runs per event, with M
 * models drawn from the real price table (the first M chat entries), U users
 * and S sessions (0 = none), each with a 1d budget so the budget path runs,
 * in batches of 512 through cost_ledger_apply_batch() as the daemon does
 * (--single: one cost_ledger_apply() call per event, no prefetching).
 * --bus also measures the whole consumer path: a forked producer emits
 * llm_end events into a fresh bus while this process polls them losslessly
 * and applies them.  --emit-to BUS only produces (into an existing bus, for
 * measuring the real cbus-cost daemon, see docs/cost.md).  Prints events/s;
 * run it a few times and take the median.
 */
#include <cbus/bus.h>
#include <cbus/consumer.h>
#include <cbus/producer.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "ledger.h"
#include "render.h"
#include "prices.h"

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* CPU time of this process: on a shared machine the wall-clock rate says
 * as much about the neighbours as about the code, so both are printed. */
static uint64_t cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t rng_state = 0x243F6A8885A308D3u;
static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* The first n "chat" entries of the table, with their litellm_provider. */
static int pick_models(const char *path, unsigned n, char (*names)[CBUS_MODEL_LEN],
                       char (*providers)[CBUS_PROVIDER_LEN])
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -errno;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)len + 1);
    if (!buf || fread(buf, 1, (size_t)len, f) != (size_t)len) {
        fclose(f);
        free(buf);
        return -EIO;
    }
    fclose(f);
    buf[len] = '\0';
    cJSON *root = cJSON_Parse(buf);
    free(buf);
    unsigned got = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, root) {
        if (got == n)
            break;
        const cJSON *mode = cJSON_GetObjectItem(c, "mode");
        const cJSON *prov = cJSON_GetObjectItem(c, "litellm_provider");
        if (!cJSON_IsString(mode) || strcmp(mode->valuestring, "chat") || !cJSON_IsString(prov) ||
            strlen(c->string) >= CBUS_MODEL_LEN || !cJSON_GetObjectItem(c, "input_cost_per_token"))
            continue;
        snprintf(names[got], CBUS_MODEL_LEN, "%s", c->string);
        snprintf(providers[got], CBUS_PROVIDER_LEN, "%.15s", prov->valuestring);
        got++;
    }
    cJSON_Delete(root);
    return (int)got;
}

struct setup {
    unsigned users, models, sessions;
    char (*mnames)[CBUS_MODEL_LEN];
    char (*mprov)[CBUS_PROVIDER_LEN];
};

static void make_event(const struct setup *s, struct cbus_event *ev, uint64_t id, uint64_t ts)
{
    memset(ev, 0, sizeof *ev);
    ev->kind = CBUS_EV_LLM_END;
    ev->event_id = id;
    ev->ts_realtime_ns = ts;
    unsigned m = (unsigned)(rnd() % s->models);
    memcpy(ev->model, s->mnames[m], sizeof ev->model);
    memcpy(ev->provider, s->mprov[m], sizeof ev->provider);
    snprintf(ev->user, sizeof ev->user, "user-%u", (unsigned)(rnd() % s->users));
    if (s->sessions)
        snprintf(ev->session, sizeof ev->session, "sess-%u", (unsigned)(rnd() % s->sessions));
    /* As the producer library writes them: the whole values' hashes (the
     * ledger falls back to hashing the fields of a record that has none). */
    ev->key_hash[CBUS_KEY_PROVIDER] = cbus_key_hash(ev->provider, strnlen(ev->provider, sizeof ev->provider));
    ev->key_hash[CBUS_KEY_MODEL] = cbus_key_hash(ev->model, strnlen(ev->model, sizeof ev->model));
    ev->key_hash[CBUS_KEY_USER] = cbus_key_hash(ev->user, strnlen(ev->user, sizeof ev->user));
    ev->key_hash[CBUS_KEY_SESSION] = cbus_key_hash(ev->session, strnlen(ev->session, sizeof ev->session));
    struct cbus_usage *u = &ev->u.usage;
    u->input_tokens = 500 + (uint32_t)(rnd() % 5000);
    u->cache_read_tokens = (uint32_t)(rnd() % 400);
    u->output_tokens = 50 + (uint32_t)(rnd() % 900);
    u->reasoning_tokens = (uint32_t)(rnd() % 40);
    u->duration_ns = 50000000u + rnd() % 5000000000u;
    u->ttft_ns = 1000000u + rnd() % 500000000u;
    u->usage_present = CBUS_USAGE_INPUT | CBUS_USAGE_OUTPUT | CBUS_USAGE_CACHE_READ |
                       CBUS_USAGE_REASONING | CBUS_USAGE_DURATION | CBUS_USAGE_TTFT;
}

/* Emits n llm_end events as fast as the bus takes them; returns dropped. */
static uint64_t produce(const char *bus, const struct setup *s, uint64_t n, double *secs)
{
    cbus_producer *p;
    int rc = cbus_producer_open(&p, bus, NULL);
    if (rc) {
        fprintf(stderr, "producer: %s\n", cbus_strerror(rc));
        exit(1);
    }
    size_t pool = 4096;
    cbus_ctx *ctx = calloc(pool, sizeof *ctx);
    struct cbus_usage *us = calloc(pool, sizeof *us);
    for (size_t i = 0; i < pool; i++) {
        struct cbus_event ev;
        make_event(s, &ev, 0, 0);
        cbus_ctx_init(&ctx[i]);
        cbus_ctx_set_provider(&ctx[i], ev.provider);
        cbus_ctx_set_model(&ctx[i], ev.model);
        cbus_ctx_set_user(&ctx[i], ev.user);
        if (ev.session[0])
            cbus_ctx_set_session(&ctx[i], ev.session);
        us[i] = ev.u.usage;
    }
    uint64_t dropped = 0, t0 = mono_ns();
    for (uint64_t i = 0; i < n;) {
        if (cbus_llm_end(p, &ctx[i & (pool - 1)], &us[i & (pool - 1)], NULL) == 0)
            i++;
        else
            dropped++;
    }
    *secs = (mono_ns() - t0) / 1e9;
    cbus_producer_close(p);
    free(ctx);
    free(us);
    return dropped;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    uint64_t n = 10000000;
    struct setup s = {.users = 1000, .models = 200, .sessions = 0};
    const char *prices_path = CBUS_COST_DIR "/model_prices_and_context_window.json";
    int bus_mode = 0, single = 0;
    const char *emit_to = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--events") && i + 1 < argc)
            n = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--users") && i + 1 < argc)
            s.users = (unsigned)strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--models") && i + 1 < argc)
            s.models = (unsigned)strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--sessions") && i + 1 < argc)
            s.sessions = (unsigned)strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--prices") && i + 1 < argc)
            prices_path = argv[++i];
        else if (!strcmp(argv[i], "--bus"))
            bus_mode = 1;
        else if (!strcmp(argv[i], "--single"))
            single = 1;
        else if (!strcmp(argv[i], "--emit-to") && i + 1 < argc)
            emit_to = argv[++i];
        else {
            fprintf(stderr, "usage: %s [--events N] [--users U] [--models M] [--sessions S] "
                            "[--prices FILE] [--bus] [--single] [--emit-to BUS]\n", argv[0]);
            return 2;
        }
    }
    if (!s.users || !s.models || !n) {
        fprintf(stderr, "users, models and events must be > 0\n");
        return 2;
    }
    char err[512];
    struct cost_price_table *pt;
    if (cost_prices_load(&pt, prices_path, NULL, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    s.mnames = calloc(s.models, sizeof *s.mnames);
    s.mprov = calloc(s.models, sizeof *s.mprov);
    int got = pick_models(prices_path, s.models, s.mnames, s.mprov);
    if (got < (int)s.models) {
        fprintf(stderr, "price table has only %d chat models\n", got);
        return 1;
    }
    struct cost_budget ub = {.key = "*", .scope = COST_SCOPE_USER, .period_days = 1,
                             .limit_pico = (cost_u128)1000000 * COST_PICO_PER_USD};
    struct cost_budget gb = ub;
    gb.scope = COST_SCOPE_GLOBAL;
    cost_budget_build(&ub, NULL, 0);
    cost_budget_build(&gb, NULL, 0);
    struct cost_budget_set bs = {.global = &gb, .user_default = &ub, .session_default = &ub};
    struct cost_ledger l;
    if (cost_ledger_init(&l, pt, &bs, NULL)) {
        fprintf(stderr, "ledger init failed\n");
        return 1;
    }
    uint64_t ts0 = (uint64_t)time(NULL) * 1000000000u;
    if (emit_to) {
        double secs;
        uint64_t dropped = produce(emit_to, &s, n, &secs);
        printf("emitted %llu llm_end in %.3f s = %.2f M/s (%llu emits refused and retried)\n",
               (unsigned long long)n, secs, n / secs / 1e6, (unsigned long long)dropped);
        return 0;
    }

    if (!bus_mode) {
        /* A pool of distinct pre-built events, cycled: building them is not
         * what is measured.  64k events x 496 B = 31 MB: not cache resident. */
        size_t pool = 65536;
        struct cbus_event *evs = malloc(pool * sizeof *evs);
        for (size_t i = 0; i < pool; i++)
            make_event(&s, &evs[i], 0, ts0 + i * 1000);
        enum { RUNS = 5 };
        uint64_t rates[RUNS], cpu_rates[RUNS];
        uint64_t id = 0;
        for (int r = 0; r < RUNS; r++) {
            uint64_t t0 = mono_ns(), c0 = cpu_ns();
            /* Batches of 512, as the daemon applies what one poll returns. */
            for (uint64_t i = 0; i < n;) {
                size_t at = (size_t)(i & (pool - 1)), k = 512;
                if (k > pool - at)
                    k = pool - at;
                if (k > n - i)
                    k = (size_t)(n - i);
                for (size_t j = 0; j < k; j++)
                    evs[at + j].event_id = id++;
                if (single)
                    for (size_t j = 0; j < k; j++)
                        cost_ledger_apply(&l, &evs[at + j]);
                else
                    cost_ledger_apply_batch(&l, &evs[at], k);
                i += k;
            }
            uint64_t dt = mono_ns() - t0, dc = cpu_ns() - c0;
            rates[r] = n * 1000000000u / (dt ? dt : 1);
            cpu_rates[r] = n * 1000000000u / (dc ? dc : 1);
            printf("run %d: %llu events in %.3f s wall, %.3f s cpu = %.2f M events/s wall, "
                   "%.2f M per cpu-second (%.0f ns/event)\n", r + 1, (unsigned long long)n,
                   dt / 1e9, dc / 1e9, rates[r] / 1e6, cpu_rates[r] / 1e6, (double)dc / (double)n);
        }
        qsort(rates, RUNS, sizeof rates[0], cmp_u64);
        qsort(cpu_rates, RUNS, sizeof cpu_rates[0], cmp_u64);
        printf("direct: median %.2f M llm_end/s wall, %.2f M per cpu-second "
               "(%u users, %u models, %u sessions)\n",
               rates[RUNS / 2] / 1e6, cpu_rates[RUNS / 2] / 1e6, s.users, s.models, s.sessions);
        /* What the daemon does every snapshot interval with this state. */
        struct cost_render_info ri = {.bus = "bench", .now_realtime_ns = ts0, .max_sessions = 1000,
                                      .prom_users = 1};
        struct sbuf js, pm;
        sbuf_init(&js);
        sbuf_init(&pm);
        uint64_t r0 = cpu_ns();
        cost_render_json(&js, &l, &ri);
        uint64_t r1 = cpu_ns();
        cost_render_prom(&pm, &l, &ri);
        uint64_t r2 = cpu_ns();
        printf("outputs: JSON snapshot %zu KB in %.1f ms, Prometheus text %zu KB in %.1f ms (cpu)\n",
               js.len / 1024, (r1 - r0) / 1e6, pm.len / 1024, (r2 - r1) / 1e6);
        sbuf_free(&js);
        sbuf_free(&pm);
        char usd[64];
        cost_pico_format_usd(usd, sizeof usd, l.total.cost_pico);
        printf("total cost accounted: %s USD over %llu requests\n", usd,
               (unsigned long long)l.total.requests);
        free(evs);
    } else {
        char bus[64];
        snprintf(bus, sizeof bus, "costbench_%d", (int)getpid());
        struct cbus_create_opts o = {.capacity = 1u << 16};
        int rc = cbus_bus_create(bus, &o);
        if (rc) {
            fprintf(stderr, "cbus_bus_create: %s\n", cbus_strerror(rc));
            return 1;
        }
        cbus_consumer *c;
        struct cbus_consumer_opts co = {.name = "costbench", .mode = CBUS_LOSSLESS,
                                        .start = CBUS_START_OLDEST};
        rc = cbus_consumer_attach(&c, bus, &co);
        if (rc) {
            fprintf(stderr, "attach: %s\n", cbus_strerror(rc));
            cbus_bus_destroy(bus);
            return 1;
        }
        pid_t pid = fork();
        if (pid == 0) {
            double secs;
            produce(bus, &s, n, &secs);
            _exit(0);
        }
        struct cbus_event *buf = malloc(512 * sizeof *buf);
        uint64_t got_n = 0, t0 = 0, c0 = 0;
        while (got_n < n) {
            int k = cbus_consumer_poll(c, buf, 512);
            if (k < 0) {
                fprintf(stderr, "poll: %s\n", cbus_strerror(k));
                break;
            }
            if (k == 0) {
                cbus_consumer_wait(c, 1000000);
                continue;
            }
            if (!t0) {
                t0 = mono_ns();
                c0 = cpu_ns();
            }
            cost_ledger_apply_batch(&l, buf, (size_t)k);
            got_n += (uint64_t)k;
            cbus_consumer_commit(c);
        }
        uint64_t dt = mono_ns() - t0, dc = cpu_ns() - c0;
        int st;
        waitpid(pid, &st, 0);
        struct cbus_consumer_stats cs;
        cbus_consumer_stats(c, &cs);
        printf("bus: %llu events in %.3f s = %.2f M llm_end/s through the ring, consumer "
               "%.2f M per cpu-second (lost %llu)\n",
               (unsigned long long)got_n, dt / 1e9, got_n / (dt / 1e9) / 1e6,
               got_n / (dc / 1e9) / 1e6, (unsigned long long)cs.lost);
        cbus_consumer_detach(c);
        cbus_bus_destroy(bus);
        free(buf);
    }
    cost_ledger_free(&l);
    cost_prices_free(pt);
    free(s.mnames);
    free(s.mprov);
    return 0;
}
