/* cbus-loadgen: an inference server's callback traffic, simulated.
 *
 * N worker threads (optionally in P processes) start requests at a target
 * rate (Poisson arrivals) or as fast as they can, each a realistic run:
 *   ~70% chat: chat_model_start, a stream of llm_new_token, llm_end with usage
 *        (lognormal token counts, cache reads on some, reasoning on
 *        reasoning models, finish reasons);
 *   ~20% agent: chain_start, agent_action, tool_start/tool_end (child runs),
 *        an inner LLM call, agent_finish, chain_end;
 *   ~10% retrieval: a RetrievalQA chain around retriever_start/end and a chat;
 *   ~1% of LLM calls fail first (llm_error 429/500, retry, then succeed).
 * Every child's parent run emits its start first, so an exporter sees no
 * parent that never arrives.
 *
 * Latency is not simulated: a request's events are emitted back to back, and
 * each duration and time to first token is the producer's own measurement
 * between its events (cbus_llm_end fills them from the context), so span
 * times, time_to_first_chunk and the cost daemon's histograms agree.  A
 * simulated latency reported beside back-to-back timestamps gave every chat
 * span a time to first chunk longer than the span.
 * Models come from the LiteLLM price table (chat models with prices);
 * users and sessions follow a Zipf-like skew.  --admit asks cbus_admit()
 * before each request and honours its verdict as a server would: a throttled
 * or over-budget request is refused (429) and counted, not sent to the model.
 *
 * Exact totals of what was emitted successfully (events, llm_end tokens) go
 * to stdout at the end and, with --summary-json, to a file: the demo checks
 * the cost tracker against them. */
#include <cbus/admit.h>
#include <cbus/bus.h>
#include <cbus/producer.h>

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "units.h"
#include "sbuf.h"

#ifndef CBUS_DEFAULT_PRICES
#define CBUS_DEFAULT_PRICES "model_prices_and_context_window.json"
#endif

#define MAX_MODELS 200

struct model {
    char name[CBUS_MODEL_LEN];
    char provider[CBUS_PROVIDER_LEN];
    int reasoning;
};

struct options {
    const char *bus;
    const char *prices;
    const char *summary_json;
    unsigned threads;
    unsigned processes;
    double rate;          /* requests/s over all workers; 0 = as fast as possible */
    double duration_s;
    uint64_t requests;    /* stop after this many requests per process (0 = by time) */
    unsigned users;
    unsigned sessions_per_user;
    int admit;
    int no_bus;           /* do all the work, emit nowhere: the baseline rate */
    int quiet;
    uint64_t seed;
};

/* What one worker did; summed per process and across processes. */
struct totals {
    uint64_t requests, events, dropped, errors, throttled, budget_refused;
    uint64_t llm_calls, input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens,
        reasoning_tokens;
};

static struct options opt = {.threads = 2, .processes = 1, .duration_s = 10, .users = 1000,
                             .sessions_per_user = 4, .seed = 0};
static struct model models[MAX_MODELS];
static unsigned nmodels;
static double *user_cdf, *model_cdf;
static volatile sig_atomic_t stop_requested;
static atomic_uint_fast64_t live_events, live_dropped, live_requests;

/* ---- randomness ------------------------------------------------------------ */
struct rng {
    uint64_t s;
};

static uint64_t rng_u64(struct rng *r)
{
    uint64_t z = (r->s += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

static double rng_unit(struct rng *r)
{
    return (double)(rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
}

static double rng_normal(struct rng *r)
{
    double u1 = rng_unit(r), u2 = rng_unit(r);
    if (u1 < 1e-300)
        u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(2 * M_PI * u2);
}

/* Lognormal with the given median and spread (sigma of the log). */
static uint32_t rng_lognormal(struct rng *r, double median, double sigma, uint32_t max)
{
    double v = median * exp(sigma * rng_normal(r));
    if (v < 1)
        v = 1;
    return v > max ? max : (uint32_t)v;
}

static double *zipf_cdf(unsigned n, double s)
{
    double *cdf = malloc(n * sizeof *cdf);
    if (!cdf)
        return NULL;
    double sum = 0;
    for (unsigned i = 0; i < n; i++)
        sum += 1.0 / pow(i + 1, s);
    double acc = 0;
    for (unsigned i = 0; i < n; i++) {
        acc += 1.0 / pow(i + 1, s) / sum;
        cdf[i] = acc;
    }
    cdf[n - 1] = 1.0;
    return cdf;
}

static unsigned zipf_pick(struct rng *r, const double *cdf, unsigned n)
{
    double u = rng_unit(r);
    unsigned lo = 0, hi = n - 1;
    while (lo < hi) {
        unsigned mid = (lo + hi) / 2;
        if (cdf[mid] < u)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* ---- models from the price table ------------------------------------------ */

/* LiteLLM provider names to OpenTelemetry gen_ai.provider.name values. */
static const char *otel_provider(const char *litellm)
{
    static const struct {
        const char *prefix, *otel;
    } map[] = {{"openai", "openai"},          {"azure", "azure.ai.openai"},
               {"anthropic", "anthropic"},    {"bedrock", "aws.bedrock"},
               {"vertex_ai", "gcp.vertex_ai"}, {"gemini", "gcp.gemini"},
               {"mistral", "mistral_ai"},     {"groq", "groq"},
               {"deepseek", "deepseek"},      {"cohere", "cohere"},
               {"xai", "x_ai"},               {"perplexity", "perplexity"}};
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (!strncmp(litellm, map[i].prefix, strlen(map[i].prefix)))
            return map[i].otel;
    return litellm;
}

static int add_model(const char *name, const cJSON *entry)
{
    if (nmodels >= MAX_MODELS || strlen(name) >= CBUS_MODEL_LEN)
        return 0;
    for (unsigned i = 0; i < nmodels; i++)
        if (!strcmp(models[i].name, name))
            return 0;
    const cJSON *mode = cJSON_GetObjectItemCaseSensitive(entry, "mode");
    const cJSON *in = cJSON_GetObjectItemCaseSensitive(entry, "input_cost_per_token");
    const cJSON *out = cJSON_GetObjectItemCaseSensitive(entry, "output_cost_per_token");
    const cJSON *prov = cJSON_GetObjectItemCaseSensitive(entry, "litellm_provider");
    if (!cJSON_IsString(mode) || strcmp(mode->valuestring, "chat") || !cJSON_IsNumber(in) ||
        !cJSON_IsNumber(out) || in->valuedouble <= 0 || !cJSON_IsString(prov))
        return 0;
    struct model *m = &models[nmodels++];
    snprintf(m->name, sizeof m->name, "%s", name);
    snprintf(m->provider, sizeof m->provider, "%s", otel_provider(prov->valuestring));
    const cJSON *reason = cJSON_GetObjectItemCaseSensitive(entry, "supports_reasoning");
    m->reasoning = cJSON_IsTrue(reason);
    return 1;
}

static int load_models(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cbus-loadgen: %s: %s (pass --prices FILE)\n", path, strerror(errno));
        return -1;
    }
    struct sbuf b;
    sbuf_init(&b);
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        sbuf_add(&b, chunk, n);
    fclose(f);
    cJSON *root = b.failed ? NULL : cJSON_ParseWithLength(b.data, b.len);
    sbuf_free(&b);
    if (!cJSON_IsObject(root)) {
        fprintf(stderr, "cbus-loadgen: %s: not a JSON object (LiteLLM price table expected)\n", path);
        cJSON_Delete(root);
        return -1;
    }
    /* The popular models first: with a Zipf pick they carry most traffic. */
    static const char *const popular[] = {
        "gpt-4o", "gpt-4o-mini", "claude-sonnet-4-20250514", "gpt-4.1", "gpt-4.1-mini",
        "claude-3-5-haiku-20241022", "o3-mini", "gemini/gemini-2.0-flash", "o4-mini",
        "claude-opus-4-20250514", "gpt-5", "gpt-5-mini", "deepseek/deepseek-chat",
        "mistral/mistral-large-latest"};
    for (size_t i = 0; i < sizeof popular / sizeof popular[0]; i++) {
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(root, popular[i]);
        if (e)
            add_model(popular[i], e);
    }
    const cJSON *e;
    cJSON_ArrayForEach(e, root)
    {
        if (nmodels >= MAX_MODELS)
            break;
        if (e->string && strcmp(e->string, "sample_spec"))
            add_model(e->string, e);
    }
    cJSON_Delete(root);
    if (!nmodels) {
        fprintf(stderr, "cbus-loadgen: %s: no priced chat models\n", path);
        return -1;
    }
    return 0;
}

/* ---- one request ------------------------------------------------------------ */

struct worker {
    cbus_producer *p;
    struct rng rng;
    struct totals t;
    unsigned id;
    unsigned pid_index;
};

static void count(struct worker *w, int r)
{
    if (opt.no_bus)
        r = 0; /* the emit had no producer to go to; count what would have gone */
    if (r == 0)
        w->t.events++;
    else if (r == -EAGAIN)
        w->t.dropped++;
}

static const char *const phrases[] = {
    "Sure, here is", " the answer", " to your", " question:", " the capital", " of France",
    " is Paris.", " Let me", " check the", " documentation", " first.", " In summary,",
    " the function", " returns", " a list", " of tokens."};

/* Whole prompts and answers, as an application sends them (issue 14): a
 * system prompt and a question of a few hundred bytes, the chat messages in
 * OpenTelemetry's gen_ai.input.messages shape, and an answer made of the
 * streamed chunks. */
static const char system_prompt[] =
    "You are a concise assistant for a travel company. Answer in one or two sentences, cite "
    "the source document when you use one, and never invent prices or opening hours. If the "
    "question is ambiguous, ask one clarifying question instead of guessing.";
static const char *const questions[] = {
    "What is the capital of France, and which of our partner hotels there has a late check-out "
    "policy for guests arriving on the overnight train from Berlin?",
    "Summarise the weather outlook for Paris this weekend and say whether the Seine river "
    "cruise we booked for Saturday afternoon is likely to run.",
    "A customer asks whether the Louvre is open on Tuesdays and whether the museum pass they "
    "bought last month still covers the temporary exhibition.",
};

/* The messages JSON of a chat start (plain ASCII: no escaping needed). */
static size_t chat_messages(char *out, size_t cap, const char *question)
{
    int n = snprintf(out, cap,
                     "[{\"role\":\"system\",\"parts\":[{\"type\":\"text\",\"content\":\"%s\"}]},"
                     "{\"role\":\"user\",\"parts\":[{\"type\":\"text\",\"content\":\"%s\"}]}]",
                     system_prompt, question);
    return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
}

static void llm_call(struct worker *w, cbus_ctx *ctx, const struct model *m, int allow_error)
{
    struct rng *r = &w->rng;
    cbus_ctx_set_model(ctx, m->name);
    cbus_ctx_set_provider(ctx, m->provider);
    uint32_t input = rng_lognormal(r, 800, 1.0, 150000);
    struct cbus_llm_start_info info = {.prompt_count = 1 + (uint32_t)(rng_u64(r) % 6),
                                       .est_input_tokens = input, .max_tokens = 4096};
    const char *question = questions[rng_u64(r) % (sizeof questions / sizeof questions[0])];
    char msgs[1024];
    size_t msgs_len = chat_messages(msgs, sizeof msgs, question);
    if (allow_error && rng_unit(r) < 0.01) {
        /* a failed attempt, then a retry that succeeds */
        count(w, cbus_chat_model_start_messages(w->p, ctx, msgs, msgs_len, question, &info));
        int status = rng_unit(r) < 0.7 ? 429 : 500;
        count(w, cbus_llm_error(w->p, ctx, status == 429 ? "RateLimitError" : "InternalServerError",
                                status == 429 ? "Rate limit reached for requests" : "upstream error",
                                status));
        w->t.errors++;
        count(w, cbus_retry(w->p, ctx, 1, 500000000u, status == 429 ? "429" : "500"));
        uint8_t id[16];
        cbus_run_id_new(id);
        cbus_ctx_set_run_id(ctx, id);
    }
    count(w, cbus_chat_model_start_messages(w->p, ctx, msgs, msgs_len, question, &info));
    uint32_t output = rng_lognormal(r, 150, 0.8, 4096);
    char answer[512];
    size_t answer_len = 0;
    /* tokens stream in chunks of a few tokens each */
    uint32_t chunks = output / 3 + 1;
    if (chunks > 400)
        chunks = 400;
    for (uint32_t i = 0; i < chunks; i++) {
        const char *ph = phrases[rng_u64(r) % (sizeof phrases / sizeof phrases[0])];
        count(w, cbus_llm_new_token(w->p, ctx, ph, strlen(ph)));
        size_t pl = strlen(ph);
        if (answer_len + pl < sizeof answer) { /* the answer is what was streamed */
            memcpy(answer + answer_len, ph, pl);
            answer_len += pl;
        }
    }
    answer[answer_len] = '\0';
    struct cbus_usage u = {.input_tokens = input, .output_tokens = output,
                           .usage_present = CBUS_USAGE_INPUT | CBUS_USAGE_OUTPUT,
                           .finish_reason = CBUS_FINISH_STOP, .generations = 1};
    if (rng_unit(r) < 0.35) { /* prompt cache hit on a long shared prefix */
        u.cache_read_tokens = (uint32_t)(input * (0.5 + 0.4 * rng_unit(r)));
        u.usage_present |= CBUS_USAGE_CACHE_READ;
    } else if (rng_unit(r) < 0.05 && !strncmp(m->provider, "anthropic", 9)) {
        u.cache_creation_tokens = input / 2;
        u.usage_present |= CBUS_USAGE_CACHE_CREATION;
    }
    if (m->reasoning) {
        u.reasoning_tokens = (uint32_t)(output * (0.2 + 0.5 * rng_unit(r)));
        u.usage_present |= CBUS_USAGE_REASONING;
    }
    /* No CBUS_USAGE_TTFT / CBUS_USAGE_DURATION: the producer measures both
     * on the clock that stamps the events (see the top of the file). */
    double fr = rng_unit(r);
    u.finish_reason = fr < 0.9 ? CBUS_FINISH_STOP : fr < 0.95 ? CBUS_FINISH_LENGTH : CBUS_FINISH_TOOL_CALLS;
    int rc = cbus_llm_end(w->p, ctx, &u, answer);
    count(w, rc);
    if (opt.no_bus)
        rc = 0;
    if (rc == 0) {
        w->t.llm_calls++;
        w->t.input_tokens += u.input_tokens;
        w->t.output_tokens += u.output_tokens;
        w->t.cache_read_tokens += u.cache_read_tokens;
        w->t.cache_creation_tokens += u.cache_creation_tokens;
        w->t.reasoning_tokens += u.reasoning_tokens;
    }
}

static void one_request(struct worker *w)
{
    struct rng *r = &w->rng;
    unsigned user = zipf_pick(r, user_cdf, opt.users);
    unsigned session = (unsigned)(rng_u64(r) % opt.sessions_per_user);
    const struct model *m = &models[zipf_pick(r, model_cdf, nmodels)];
    char user_s[32], session_s[48], req_s[40];
    snprintf(user_s, sizeof user_s, "user-%05u", user);
    snprintf(session_s, sizeof session_s, "sess-%05u-%u", user, session);
    snprintf(req_s, sizeof req_s, "req-%u-%u-%llu", w->pid_index, w->id,
             (unsigned long long)w->t.requests);
    cbus_ctx root;
    cbus_ctx_init(&root);
    cbus_ctx_set_user(&root, user_s);
    cbus_ctx_set_session(&root, session_s);
    cbus_ctx_set_request_id(&root, req_s);
    cbus_ctx_set_model(&root, m->name);
    cbus_ctx_set_provider(&root, m->provider);
    /* Agent and tenant on every context, tags and metadata on the runs'
     * start events (a child context inherits them). */
    char tenant_s[24];
    snprintf(tenant_s, sizeof tenant_s, "team-%u", user % 7);
    cbus_ctx_set_tenant(&root, tenant_s);
    cbus_ctx_add_tag(&root, "loadgen");
    cbus_ctx_set_metadata(&root, "env", "demo");
    cbus_ctx_set_metadata(&root, "ls_provider", m->provider);

    if (opt.admit && !opt.no_bus) {
        uint64_t retry = 0;
        int v = cbus_admit(w->p, &root, &retry);
        if (v == CBUS_BUDGET_EXCEEDED) {
            w->t.budget_refused++;
            return;
        }
        if (v == CBUS_THROTTLED || v == CBUS_ADMIT_STALE) {
            /* Honour the limiter the way a server does: answer this client
             * 429 with Retry-After instead of calling the model. */
            w->t.throttled++;
            return;
        }
    }
    w->t.requests++;
    double kind = rng_unit(r);
    if (kind < 0.70) {
        cbus_ctx_set_agent(&root, "chat-assistant");
        llm_call(w, &root, m, 1);
    } else if (kind < 0.90) {
        cbus_ctx_set_agent(&root, "travel-agent");
        count(w, cbus_chain_start(w->p, &root, "AgentExecutor", "{\"input\":\"weather in Paris?\"}"));
        cbus_ctx llm;
        cbus_ctx_child(&llm, &root);
        llm_call(w, &llm, m, 1);
        unsigned tools = 1 + (unsigned)(rng_u64(r) % 3);
        for (unsigned i = 0; i < tools; i++) {
            static const char *const names[] = {"web_search", "calculator", "get_weather", "sql_query"};
            const char *tool = names[rng_u64(r) % 4];
            count(w, cbus_agent_action(w->p, &root, tool, "{\"q\":\"Paris\"}"));
            cbus_ctx tc;
            cbus_ctx_child(&tc, &root);
            count(w, cbus_tool_start(w->p, &tc, tool, "{\"q\":\"Paris\"}"));
            if (rng_unit(r) < 0.01) {
                count(w, cbus_tool_error(w->p, &tc, "TimeoutError", "tool timed out"));
                w->t.errors++;
            } else {
                count(w, cbus_tool_end(w->p, &tc, "{\"temp_c\":18}"));
            }
        }
        cbus_ctx final;
        cbus_ctx_child(&final, &root);
        llm_call(w, &final, m, 1);
        count(w, cbus_agent_finish(w->p, &root, "It is 18C in Paris."));
        count(w, cbus_chain_end(w->p, &root, "{\"output\":\"It is 18C in Paris.\"}"));
    } else {
        cbus_ctx_set_agent(&root, "retrieval-qa");
        /* the root run starts before its children: their parent arrives */
        count(w, cbus_chain_start(w->p, &root, "RetrievalQA", "{\"query\":\"capital of France\"}"));
        cbus_ctx rc;
        cbus_ctx_child(&rc, &root);
        count(w, cbus_retriever_start(w->p, &rc, "VectorStoreRetriever", "capital of France"));
        count(w, cbus_retriever_end(w->p, &rc, 1 + (uint32_t)(rng_u64(r) % 8)));
        cbus_ctx llm;
        cbus_ctx_child(&llm, &root);
        llm_call(w, &llm, m, 1);
        count(w, cbus_chain_end(w->p, &root, "{\"result\":\"Paris\"}"));
    }
    /* A grade of the run, as an evaluation pipeline posts one (Langfuse scores). */
    double grade = rng_unit(r);
    count(w, cbus_score(w->p, &root, "helpfulness", CBUS_SCORE_NUMERIC, grade, NULL,
                        grade < 0.2 ? "the answer missed the question" : "answered the question"));
}

/* ---- workers ----------------------------------------------------------------- */

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t run_start_ns, run_end_ns;

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    uint64_t per_worker_limit = opt.requests ? (opt.requests + opt.threads - 1) / opt.threads : 0;
    double rate = opt.rate > 0 ? opt.rate / (opt.threads * opt.processes) : 0;
    uint64_t next = mono_ns();
    uint64_t last_events = 0, last_dropped = 0, last_req = 0;
    while (!stop_requested) {
        uint64_t now = mono_ns();
        if (!opt.requests && now >= run_end_ns)
            break;
        if (per_worker_limit && w->t.requests >= per_worker_limit)
            break;
        if (rate > 0) {
            /* Poisson arrivals: exponential gaps, slept off (never spun). */
            if (now < next) {
                uint64_t d = next - now;
                struct timespec ts = {(time_t)(d / 1000000000u), (long)(d % 1000000000u)};
                nanosleep(&ts, NULL);
            }
            next += (uint64_t)(-log(1.0 - rng_unit(&w->rng)) / rate * 1e9);
        }
        one_request(w);
        if ((w->t.requests & 63) == 0) {
            atomic_fetch_add(&live_events, w->t.events - last_events);
            atomic_fetch_add(&live_dropped, w->t.dropped - last_dropped);
            atomic_fetch_add(&live_requests, w->t.requests - last_req);
            last_events = w->t.events;
            last_dropped = w->t.dropped;
            last_req = w->t.requests;
        }
    }
    atomic_fetch_add(&live_events, w->t.events - last_events);
    atomic_fetch_add(&live_dropped, w->t.dropped - last_dropped);
    atomic_fetch_add(&live_requests, w->t.requests - last_req);
    return NULL;
}

static void add_totals(struct totals *a, const struct totals *b)
{
    const uint64_t *s = (const uint64_t *)b;
    uint64_t *d = (uint64_t *)a;
    for (size_t i = 0; i < sizeof *a / sizeof(uint64_t); i++)
        d[i] += s[i];
}

static int run_process(unsigned index, struct totals *out)
{
    cbus_producer *p = NULL;
    char pname[32];
    snprintf(pname, sizeof pname, "loadgen%u", index);
    struct cbus_producer_opts po = {.name = pname};
    int r = opt.no_bus ? 0 : cbus_producer_open(&p, opt.bus, &po);
    if (r) {
        fprintf(stderr, "cbus-loadgen: cannot open bus '%s': %s\n", opt.bus, cbus_strerror(r));
        return 1;
    }
    struct worker *ws = calloc(opt.threads, sizeof *ws);
    pthread_t *th = calloc(opt.threads, sizeof *th);
    if (!ws || !th)
        return 1;
    for (unsigned i = 0; i < opt.threads; i++) {
        ws[i] = (struct worker){.p = p, .id = i, .pid_index = index,
                                .rng = {opt.seed * 1000003u + index * 7919u + i * 104729u + 1}};
        pthread_create(&th[i], NULL, worker_main, &ws[i]);
    }
    uint64_t last_print = mono_ns(), last_ev = 0;
    unsigned running = opt.threads;
    char *joined = calloc(opt.threads, 1);
    while (running) {
        struct timespec ts = {0, 100000000};
        nanosleep(&ts, NULL);
        for (unsigned i = 0; i < opt.threads; i++)
            if (!joined[i] && pthread_tryjoin_np(th[i], NULL) == 0) {
                joined[i] = 1;
                running--;
            }
        uint64_t now = mono_ns();
        if (index == 0 && opt.processes == 1 && !opt.quiet && now - last_print >= 1000000000u) {
            uint64_t ev = atomic_load(&live_events);
            fprintf(stderr, "cbus-loadgen: %6.1fs  %10llu events  %8.0f ev/s  %8llu requests  %llu dropped\n",
                    (double)(now - run_start_ns) / 1e9, (unsigned long long)ev,
                    (double)(ev - last_ev) / ((double)(now - last_print) / 1e9),
                    (unsigned long long)atomic_load(&live_requests),
                    (unsigned long long)atomic_load(&live_dropped));
            last_print = now;
            last_ev = ev;
        }
    }
    free(joined);
    memset(out, 0, sizeof *out);
    for (unsigned i = 0; i < opt.threads; i++)
        add_totals(out, &ws[i].t);
    free(ws);
    free(th);
    cbus_producer_close(p);
    return 0;
}

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: cbus-loadgen --bus NAME [options]   (or --no-bus)\n"
            "  --threads N          worker threads per process (default 2)\n"
            "  --processes N        producer processes (default 1)\n"
            "  --rate R             requests/s over all workers, Poisson (default: as fast as possible)\n"
            "  --duration D         run time: 15s, 2m (default 10s)\n"
            "  --requests N         stop after N requests instead of a duration\n"
            "  --users N            distinct users, Zipf-skewed (default 1000)\n"
            "  --prices FILE        LiteLLM price table for model names (default %s)\n"
            "  --admit              ask cbus_admit() before each request and honour throttling\n"
            "  --no-bus             build every event but emit nowhere (the baseline rate)\n"
            "  --seed N             random seed (default 0)\n"
            "  --summary-json FILE  write the totals as JSON\n"
            "  --quiet              no progress line\n",
            CBUS_DEFAULT_PRICES);
}

int main(int argc, char **argv)
{
    opt.prices = getenv("CBUS_PRICES") ? getenv("CBUS_PRICES") : CBUS_DEFAULT_PRICES;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t n;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--admit")) {
            opt.admit = 1;
        } else if (!strcmp(a, "--no-bus")) {
            opt.no_bus = 1;
        } else if (!strcmp(a, "--quiet")) {
            opt.quiet = 1;
        } else if (!v) {
            fprintf(stderr, "cbus-loadgen: %s needs a value\n", a);
            return 2;
        } else if (!strcmp(a, "--bus")) {
            opt.bus = v, i++;
        } else if (!strcmp(a, "--prices")) {
            opt.prices = v, i++;
        } else if (!strcmp(a, "--summary-json")) {
            opt.summary_json = v, i++;
        } else if (!strcmp(a, "--duration")) {
            if (cbus_parse_duration_ns(v, &n) || n == 0) {
                fprintf(stderr, "cbus-loadgen: --duration '%s': not a duration (15s, 2m)\n", v);
                return 2;
            }
            opt.duration_s = (double)n / 1e9, i++;
        } else if (!strcmp(a, "--rate")) {
            char *end;
            opt.rate = strtod(v, &end);
            if (*end || opt.rate < 0 || !isfinite(opt.rate)) {
                fprintf(stderr, "cbus-loadgen: --rate '%s': not a rate\n", v);
                return 2;
            }
            i++;
        } else if (!strcmp(a, "--threads") || !strcmp(a, "--processes") || !strcmp(a, "--users") ||
                   !strcmp(a, "--requests") || !strcmp(a, "--seed")) {
            char *end;
            errno = 0;
            unsigned long long x = strtoull(v, &end, 10);
            if (errno || *end || *v == '-') {
                fprintf(stderr, "cbus-loadgen: %s '%s': not a whole number\n", a, v);
                return 2;
            }
            if (!strcmp(a, "--threads"))
                opt.threads = (unsigned)x;
            else if (!strcmp(a, "--processes"))
                opt.processes = (unsigned)x;
            else if (!strcmp(a, "--users"))
                opt.users = (unsigned)x;
            else if (!strcmp(a, "--requests"))
                opt.requests = x;
            else
                opt.seed = x;
            i++;
        } else {
            fprintf(stderr, "cbus-loadgen: unknown option %s\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!opt.bus && !opt.no_bus) {
        usage(stderr);
        return 2;
    }
    if (opt.threads < 1 || opt.threads > 256 || opt.processes < 1 || opt.processes > 64 ||
        opt.users < 1 || opt.users > 10000000) {
        fprintf(stderr, "cbus-loadgen: --threads 1..256, --processes 1..64, --users 1..10000000\n");
        return 2;
    }
    if (load_models(opt.prices))
        return 2;
    user_cdf = zipf_cdf(opt.users, 1.1);
    model_cdf = zipf_cdf(nmodels, 1.2);
    if (!user_cdf || !model_cdf)
        return 1;
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    run_start_ns = mono_ns();
    run_end_ns = run_start_ns + (uint64_t)(opt.duration_s * 1e9);
    struct totals total = {0};
    int status = 0;
    if (opt.processes == 1) {
        status = run_process(0, &total);
    } else {
        int fds[64][2];
        pid_t kids[64];
        for (unsigned i = 0; i < opt.processes; i++) {
            if (pipe(fds[i]))
                return 1;
            kids[i] = fork();
            if (kids[i] == 0) {
                struct totals t;
                int rc = run_process(i, &t);
                if (write(fds[i][1], &t, sizeof t) != sizeof t)
                    rc = 1;
                _exit(rc);
            }
            close(fds[i][1]);
        }
        for (unsigned i = 0; i < opt.processes; i++) {
            struct totals t;
            if (read(fds[i][0], &t, sizeof t) == sizeof t)
                add_totals(&total, &t);
            else
                status = 1;
            int st;
            waitpid(kids[i], &st, 0);
            if (!WIFEXITED(st) || WEXITSTATUS(st))
                status = 1;
        }
    }
    double secs = (double)(mono_ns() - run_start_ns) / 1e9;
    printf("cbus-loadgen: %.1f s, %u process(es) x %u thread(s)\n", secs, opt.processes, opt.threads);
    printf("  requests %llu (errors %llu, throttled %llu, refused for budget %llu)\n",
           (unsigned long long)total.requests, (unsigned long long)total.errors,
           (unsigned long long)total.throttled, (unsigned long long)total.budget_refused);
    printf("  events emitted %llu, dropped %llu, %.0f events/s\n", (unsigned long long)total.events,
           (unsigned long long)total.dropped, (double)total.events / secs);
    printf("  llm calls %llu: input %llu (cache read %llu, cache creation %llu), output %llu "
           "(reasoning %llu) tokens\n",
           (unsigned long long)total.llm_calls, (unsigned long long)total.input_tokens,
           (unsigned long long)total.cache_read_tokens,
           (unsigned long long)total.cache_creation_tokens, (unsigned long long)total.output_tokens,
           (unsigned long long)total.reasoning_tokens);
    if (opt.summary_json) {
        FILE *f = fopen(opt.summary_json, "w");
        if (!f) {
            fprintf(stderr, "cbus-loadgen: %s: %s\n", opt.summary_json, strerror(errno));
            return 1;
        }
        fprintf(f,
                "{\"seconds\":%.3f,\"requests\":%llu,\"errors\":%llu,\"throttled\":%llu,"
                "\"budget_refused\":%llu,\"events\":%llu,\"dropped\":%llu,\"llm_calls\":%llu,"
                "\"input_tokens\":%llu,\"output_tokens\":%llu,\"cache_read_tokens\":%llu,"
                "\"cache_creation_tokens\":%llu,\"reasoning_tokens\":%llu}\n",
                secs, (unsigned long long)total.requests, (unsigned long long)total.errors,
                (unsigned long long)total.throttled, (unsigned long long)total.budget_refused,
                (unsigned long long)total.events, (unsigned long long)total.dropped,
                (unsigned long long)total.llm_calls, (unsigned long long)total.input_tokens,
                (unsigned long long)total.output_tokens, (unsigned long long)total.cache_read_tokens,
                (unsigned long long)total.cache_creation_tokens,
                (unsigned long long)total.reasoning_tokens);
        fclose(f);
    }
    return status;
}
