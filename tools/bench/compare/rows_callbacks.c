/* Row 2: in-process callbacks, the pattern of LangChain's callback handlers.
 * The producer thread builds the event and calls each registered handler in
 * turn; the handlers do in-thread what cbus's consumers do out of it:
 *   cost   look the model up in a hash map of 200 model prices (integer
 *          nano-dollars per token, as cbus-cost keeps money) and add the cost
 *          and tokens to the user's totals in a second hash map;
 *   audit  format one line (time, ids, user, model, tokens, cost, preview)
 *          and fwrite it to a log file (stdio-buffered, so a write(2) every
 *          few kilobytes: kinder to callbacks than Python's per-record flush).
 */
#include "bench.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NPRICES 200
#define PRICE_SLOTS 512   /* power of two, load < 0.5 */
#define USER_SLOTS 1024

struct price {
    char model[CBUS_MODEL_LEN];
    int64_t in_nusd, out_nusd, cache_read_nusd, reasoning_nusd; /* per token */
};

struct user_total {
    char user[CBUS_USER_LEN];
    int64_t cost_nusd;
    uint64_t input_tokens, output_tokens, requests;
};

struct cost_handler {
    struct price *prices[PRICE_SLOTS];
    struct price table[NPRICES];
    struct user_total users[USER_SLOTS];
};

static uint64_t fnv1a(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603u;
    for (size_t i = 0; i < n && s[i]; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211u;
    return h;
}

static void cost_init(struct cost_handler *h)
{
    memset(h, 0, sizeof *h);
    /* 200 names in the shapes LiteLLM's table has; the one the payload uses
     * among them.  Prices are made up but of the right magnitude. */
    static const char *const families[] = {"gpt-4o", "gpt-4.1", "o3", "claude-3-5-sonnet",
                                           "claude-sonnet-4", "gemini-1.5-pro", "gemini-2.5-flash",
                                           "mistral-large", "llama-3.1-70b", "command-r"};
    for (int i = 0; i < NPRICES; i++) {
        struct price *p = &h->table[i];
        if (i == 0)
            snprintf(p->model, sizeof p->model, "gpt-4o-2024-08-06");
        else
            snprintf(p->model, sizeof p->model, "%s%s-%04d", i % 3 ? "" : "openrouter/",
                     families[i % 10], i);
        p->in_nusd = 150 + 25 * (i % 40);
        p->out_nusd = 4 * p->in_nusd;
        p->cache_read_nusd = p->in_nusd / 10;
        p->reasoning_nusd = p->out_nusd;
        uint64_t s = fnv1a(p->model, sizeof p->model);
        while (h->prices[s & (PRICE_SLOTS - 1)])
            s++;
        h->prices[s & (PRICE_SLOTS - 1)] = p;
    }
}

static const struct price *price_lookup(const struct cost_handler *h, const char *model)
{
    for (uint64_t s = fnv1a(model, CBUS_MODEL_LEN);; s++) {
        const struct price *p = h->prices[s & (PRICE_SLOTS - 1)];
        if (!p || !strncmp(p->model, model, CBUS_MODEL_LEN))
            return p;
    }
}

static void cost_on_event(void *self, const struct cbus_event *ev)
{
    struct cost_handler *h = self;
    if (ev->kind != CBUS_EV_LLM_END)
        return;
    const struct price *p = price_lookup(h, ev->model);
    const struct cbus_usage *u = &ev->u.usage;
    int64_t cost = 0;
    if (p) {
        uint32_t cached = u->usage_present & CBUS_USAGE_CACHE_READ ? u->cache_read_tokens : 0;
        uint32_t input = u->usage_present & CBUS_USAGE_INPUT ? u->input_tokens : 0;
        uint32_t output = u->usage_present & CBUS_USAGE_OUTPUT ? u->output_tokens : 0;
        uint32_t reasoning = u->usage_present & CBUS_USAGE_REASONING ? u->reasoning_tokens : 0;
        cost = (int64_t)(input - cached) * p->in_nusd + (int64_t)cached * p->cache_read_nusd +
               (int64_t)(output - reasoning) * p->out_nusd + (int64_t)reasoning * p->reasoning_nusd;
    }
    uint64_t s = fnv1a(ev->user, sizeof ev->user);
    for (;; s++) {
        struct user_total *t = &h->users[s & (USER_SLOTS - 1)];
        if (!t->user[0])
            memcpy(t->user, ev->user, sizeof t->user);
        else if (strncmp(t->user, ev->user, sizeof t->user))
            continue;
        t->cost_nusd += cost;
        t->input_tokens += u->input_tokens;
        t->output_tokens += u->output_tokens;
        t->requests++;
        break;
    }
}

struct audit_handler {
    FILE *f;
    const struct cost_handler *cost;
    uint64_t bytes;
};

static void hex16(char *out, const uint8_t id[16])
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        out[2 * i] = digits[id[i] >> 4];
        out[2 * i + 1] = digits[id[i] & 15];
    }
    out[32] = '\0';
}

static void audit_on_event(void *self, const struct cbus_event *ev)
{
    struct audit_handler *h = self;
    char run[33], trace[33], line[512];
    hex16(run, ev->run_id);
    hex16(trace, ev->trace_id);
    const struct price *p = price_lookup(h->cost, ev->model);
    const struct cbus_usage *u = &ev->u.usage;
    int n = snprintf(line, sizeof line,
                     "%" PRIu64 " llm_end id=%" PRIu64 " pid=%u tid=%u run=%s trace=%s "
                     "provider=%.*s model=%.*s user=%.*s session=%.*s request=%.*s "
                     "in=%u out=%u cache_read=%u reasoning=%u duration_ns=%" PRIu64
                     " known_price=%d preview=\"%.*s\"\n",
                     ev->ts_realtime_ns, ev->event_id, ev->pid, ev->tid, run, trace,
                     (int)strnlen(ev->provider, sizeof ev->provider), ev->provider,
                     (int)strnlen(ev->model, sizeof ev->model), ev->model,
                     (int)strnlen(ev->user, sizeof ev->user), ev->user,
                     (int)strnlen(ev->session, sizeof ev->session), ev->session,
                     (int)strnlen(ev->request_id, sizeof ev->request_id), ev->request_id,
                     u->input_tokens, u->output_tokens, u->cache_read_tokens, u->reasoning_tokens,
                     u->duration_ns, p != NULL, (int)strnlen(ev->preview, sizeof ev->preview),
                     ev->preview);
    if (n > 0) {
        size_t len = (size_t)n < sizeof line ? (size_t)n : sizeof line - 1;
        h->bytes += fwrite(line, 1, len, h->f);
    }
}

struct handler {
    void (*on_llm_end)(void *self, const struct cbus_event *ev);
    void *self;
};

static int run_callbacks(const struct bench_payload *pl, const char *dir, uint64_t events,
                         struct run_stats *rs, uint64_t *bytes_out)
{
    static struct cost_handler cost;
    cost_init(&cost);
    char path[512];
    snprintf(path, sizeof path, "%s/audit.log", dir);
    struct audit_handler audit = {.f = fopen(path, "w"), .cost = &cost};
    if (!audit.f)
        return -errno;
    struct handler handlers[] = {{cost_on_event, &cost}, {audit_on_event, &audit}};
    size_t nh = sizeof handlers / sizeof handlers[0];
    size_t nb = events / BENCH_BATCH;
    double *v = malloc(nb * sizeof *v);
    struct cbus_event ev;
    uint64_t seq = 0;
    uint64_t t_start = bench_now_ns();
    for (size_t b = 0; b < nb; b++) {
        uint64_t t0 = bench_now_ns();
        for (int i = 0; i < BENCH_BATCH; i++) {
            bench_payload_fill(pl, &ev, seq++);
            for (size_t k = 0; k < nh; k++)
                handlers[k].on_llm_end(handlers[k].self, &ev);
        }
        v[b] = (double)(bench_now_ns() - t0) / BENCH_BATCH;
    }
    uint64_t elapsed = bench_now_ns() - t_start;
    fclose(audit.f);
    unlink(path);
    memset(rs, 0, sizeof *rs);
    bench_summarize(v, nb, rs);
    free(v);
    rs->events = nb * BENCH_BATCH;
    rs->mevents_s = (double)rs->events / ((double)elapsed / 1e3);
    *bytes_out = audit.bytes;
    /* Read the totals, so the accumulation cannot be optimised away. */
    static volatile int64_t sink;
    for (int i = 0; i < USER_SLOTS; i++)
        sink += cost.users[i].cost_nusd;
    return 0;
}

void bench_rows_callbacks(const struct bench_opts *o, struct row *rows, int *n)
{
    struct row *r = bench_row_new(rows, n, "callbacks", "in-process callbacks",
                                  "1 thread; cost + audit handlers in the emitting thread",
                                  ROW_LATENCY);
    r->chart = 1;
    char dir[] = "/tmp/cbus-compare-cb.XXXXXX";
    if (!mkdtemp(dir)) {
        bench_row_skip(r, "mkdtemp: %s", strerror(errno));
        return;
    }
    struct bench_payload pl;
    bench_payload_init(&pl);
    bench_pin(0);
    uint64_t bytes = 0;
    int rc = 0;
    for (int i = 0; i < o->runs && !rc; i++) {
        rc = run_callbacks(&pl, dir, o->slow_events, &r->run[i], &bytes);
        if (!rc)
            r->nruns++;
    }
    rmdir(dir);
    if (rc) {
        bench_row_skip(r, "audit file: %s", strerror(-rc));
        return;
    }
    bench_aggregate(r);
    snprintf(r->note, sizeof r->note,
             "200-model price map, per-user totals, fwrite of a %llu-byte audit line",
             (unsigned long long)(bytes / (r->run[0].events ? r->run[0].events : 1)));
    bench_progress(o, r);
}
