/* A trace's progress, the shape of ai_infra's ProgressReporter
 * ({step, action, status} on every agent step) plus tokens and cost so far,
 * derived from the event tree: each run of the trace is a step, numbered by
 * the first event seen of it.  Every event comes from shared memory: kinds
 * out of range and unterminated strings are handled as everywhere else. */
#include <cbus/cbus.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "money.h"
#include "prices.h"
#include "web.h"

#define RUNS_MAX 1024 /* runs of one trace given a step number; a power of two */

enum { ST_IN_PROGRESS, ST_COMPLETE, ST_ERROR };
static const char *const status_name[] = {"in_progress", "complete", "error"};

struct run {
    uint8_t id[16];
    unsigned step;          /* 0: free slot */
    unsigned status;
    uint64_t streamed;      /* chunks */
    char action[CBUS_NAME_LEN + CBUS_MODEL_LEN + 24];
};

struct web_progress {
    uint8_t trace[16];
    const struct cost_price_table *prices;
    struct run runs[RUNS_MAX];
    unsigned steps;         /* runs numbered so far */
    uint64_t untracked;     /* events of runs past RUNS_MAX */
    uint64_t input, output, streamed, unpriced;
    cost_u128 cost;
    int done;
};

struct web_progress *web_progress_new(const uint8_t trace[16], const struct cost_price_table *prices)
{
    struct web_progress *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    memcpy(p->trace, trace, 16);
    p->prices = prices;
    return p;
}

void web_progress_free(struct web_progress *p)
{
    free(p);
}

static struct run *run_get(struct web_progress *p, const uint8_t id[16], int *fresh)
{
    uint64_t h = cbus_key_hash((const char *)id, 16);
    for (unsigned i = 0; i < RUNS_MAX; i++) {
        struct run *r = &p->runs[(h + i) & (RUNS_MAX - 1)];
        if (!r->step) {
            if (p->steps >= RUNS_MAX * 3 / 4)
                return NULL; /* keep probes short: later runs go untracked */
            memcpy(r->id, id, 16);
            r->step = ++p->steps;
            *fresh = 1;
            return r;
        }
        if (!memcmp(r->id, id, 16))
            return r;
    }
    return NULL;
}

static const char *family_word(unsigned kind)
{
    switch (cbus_kind_family(kind)) {
    case CBUS_FAMILY_LLM: return "llm";
    case CBUS_FAMILY_CHAIN: return "chain";
    case CBUS_FAMILY_TOOL: return "tool";
    case CBUS_FAMILY_AGENT: return "agent";
    case CBUS_FAMILY_RETRIEVER: return "retriever";
    default: return "event";
    }
}

/* "llm gpt-4o", "tool search", "agent_action search": what the step does. */
static void set_action(struct run *r, const struct cbus_event *ev)
{
    char what[CBUS_MODEL_LEN + 1];
    if (cbus_kind_family(ev->kind) == CBUS_FAMILY_LLM)
        CBUS_FIELD(what, ev->model);
    else
        CBUS_FIELD(what, ev->name);
    const char *word = ev->kind == CBUS_EV_AGENT_ACTION ? "agent_action" : family_word(ev->kind);
    struct sbuf b;
    sbuf_init(&b);
    sbuf_puts(&b, word);
    if (what[0]) {
        sbuf_puts(&b, " ");
        sbuf_utf8_clean(&b, what, strlen(what));
    }
    if (!b.failed)
        snprintf(r->action, sizeof r->action, "%s", b.data);
    sbuf_free(&b);
}

static void usd(struct sbuf *out, cost_u128 v)
{
    char buf[64];
    size_t n = cost_pico_format_usd(buf, sizeof buf, v);
    sbuf_json_str(out, buf, n);
}

int web_progress_feed(struct web_progress *p, const struct cbus_event *ev, struct sbuf *out,
                      int *done)
{
    *done = p->done;
    if (!(ev->flags & CBUS_FLAG_HAS_TRACE) || memcmp(ev->trace_id, p->trace, 16))
        return 0;
    unsigned phase = cbus_kind_phase(ev->kind);
    if (phase == CBUS_PHASE_NONE)
        return 0; /* a kind this build does not know */
    int fresh = 0;
    struct run *r = run_get(p, ev->run_id, &fresh);
    if (!r) {
        p->untracked++;
        return 0;
    }
    if (fresh || phase == CBUS_PHASE_START || ev->kind == CBUS_EV_AGENT_ACTION)
        set_action(r, ev); /* an agent's action renames its chain's step */
    int is_token = cbus_kind_payload(ev->kind) == CBUS_PAYLOAD_TOKEN;
    if (phase == CBUS_PHASE_START)
        r->status = ST_IN_PROGRESS;
    else if (phase == CBUS_PHASE_END)
        r->status = ST_COMPLETE;
    else if (phase == CBUS_PHASE_ERROR)
        r->status = ST_ERROR;
    if (is_token) {
        r->streamed++;
        p->streamed++;
    }
    if (ev->kind == CBUS_EV_LLM_END) {
        const struct cbus_usage *u = &ev->u.usage;
        if (u->usage_present & CBUS_USAGE_INPUT)
            p->input += u->input_tokens;
        if (u->usage_present & CBUS_USAGE_OUTPUT)
            p->output += u->output_tokens;
        if (p->prices) {
            char prov[CBUS_PROVIDER_LEN + 1], model[CBUS_MODEL_LEN + 1];
            CBUS_FIELD(prov, ev->provider);
            CBUS_FIELD(model, ev->model);
            const char *why;
            const struct cost_price *pr = cost_prices_lookup(p->prices, prov, model, &why);
            if (pr)
                p->cost += cost_usage_price(pr, u, NULL, NULL);
            else
                p->unpriced++;
        }
    }
    if ((phase == CBUS_PHASE_END || phase == CBUS_PHASE_ERROR) && !(ev->flags & CBUS_FLAG_HAS_PARENT))
        p->done = 1;
    *done = p->done;

    char id[37];
    const char *kn = cbus_kind_name(ev->kind);
    sbuf_printf(out, "{\"step\":%u,\"action\":", r->step);
    sbuf_json_str(out, r->action, strlen(r->action));
    sbuf_printf(out, ",\"status\":\"%s\",\"kind\":\"%s\",\"run_id\":", status_name[r->status],
                kn ? kn : "unknown");
    cbus_id_uuid(id, ev->run_id);
    sbuf_json_str(out, id, strlen(id));
    if (ev->flags & CBUS_FLAG_HAS_PARENT) {
        cbus_id_uuid(id, ev->parent_run_id);
        sbuf_puts(out, ",\"parent_run_id\":");
        sbuf_json_str(out, id, strlen(id));
    }
    if (is_token) {
        sbuf_puts(out, ",\"chunk\":");
        sbuf_json_field(out, ev->preview);
    }
    if (phase == CBUS_PHASE_ERROR) {
        sbuf_puts(out, ",\"error\":");
        sbuf_json_field(out, ev->name);
    }
    sbuf_printf(out,
                ",\"tokens\":{\"input\":%llu,\"output\":%llu,\"streamed\":%llu,\"step_streamed\":%llu},"
                "\"cost_usd\":",
                (unsigned long long)p->input, (unsigned long long)p->output,
                (unsigned long long)p->streamed, (unsigned long long)r->streamed);
    if (p->prices)
        usd(out, p->cost);
    else
        sbuf_puts(out, "null");
    sbuf_printf(out, ",\"unpriced\":%llu,\"steps\":%u,\"done\":%s}", (unsigned long long)p->unpriced,
                p->steps, p->done ? "true" : "false");
    return 1;
}
