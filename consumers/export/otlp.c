#include "otlp.h"

#include <string.h>

#include <cbus/cbus.h>

/* Appends without sbuf_add's per-call NUL store: this runs ~40 times per
 * span.  otlp_span() restores the NUL terminator sbuf promises at its end. */
static inline void put(struct sbuf *b, const void *p, size_t n)
{
    if (b->len + n + 1 > b->cap && sbuf_reserve(b, n))
        return;
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

static inline void terminate(struct sbuf *b)
{
    if (b->data && !b->failed)
        b->data[b->len] = '\0';
}

#define LIT(b, s) put((b), (s), sizeof(s) - 1)
#define FLEN(f) strnlen((f), sizeof(f))

/* SpanKind and Status.code values of the OTLP protobuf enums */
enum { KIND_INTERNAL = 1, KIND_CLIENT = 3 };

static void put_u64(struct sbuf *b, uint64_t v)
{
    char tmp[20];
    size_t i = sizeof tmp;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    put(b, tmp + i, sizeof tmp - i);
}

void otlp_put_u64(struct sbuf *b, uint64_t v)
{
    put_u64(b, v);
    terminate(b);
}

void otlp_put_hex(struct sbuf *b, const uint8_t *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    if (sbuf_reserve(b, 2 * n))
        return;
    char *o = b->data + b->len;
    for (size_t i = 0; i < n; i++) {
        o[2 * i] = hex[p[i] >> 4];
        o[2 * i + 1] = hex[p[i] & 15];
    }
    b->len += 2 * n;
    b->data[b->len] = '\0';
}

/* 8-4-4-4-12 form of a run id (cbus_id_uuid() goes through snprintf). */
static void uuid_text(char out[36], const uint8_t id[16])
{
    static const char hex[] = "0123456789abcdef";
    char *o = out;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *o++ = '-';
        *o++ = hex[id[i] >> 4];
        *o++ = hex[id[i] & 15];
    }
}


static void put_key(struct sbuf *b, const char *key, size_t klen)
{
    LIT(b, ",{\"key\":\"");
    put(b, key, klen);
    LIT(b, "\",\"value\":{");
}

static void a_str(struct sbuf *b, const char *key, size_t klen, const char *s, size_t n)
{
    if (!n)
        return;
    put_key(b, key, klen);
    LIT(b, "\"stringValue\":");
    sbuf_json_str(b, s, n);
    LIT(b, "}}");
}

/* The value of an integer attribute.  AnyValue.intValue is a SIGNED int64:
 * a receiver's protobuf-JSON parser (Google's, the OTel Collector's) rejects
 * the whole request with 400 for a value above INT64_MAX, and a 400 is never
 * retried, so the batch would be lost.  Every integer cbus sends is a u64 from
 * shared memory or a counter; one above INT64_MAX (a corrupt ring position, a
 * hostile producer's backoff) goes as its decimal stringValue instead: the
 * value survives and the request stays valid. */
static void put_int_value(struct sbuf *b, uint64_t v)
{
    if (v > (uint64_t)INT64_MAX)
        LIT(b, "\"stringValue\":\"");
    else
        LIT(b, "\"intValue\":\"");
    put_u64(b, v);
    LIT(b, "\"}}");
}

static void a_int(struct sbuf *b, const char *key, size_t klen, uint64_t v)
{
    put_key(b, key, klen);
    put_int_value(b, v);
}

/* A duration in seconds as a doubleValue, written from integer nanoseconds
 * ("0.25", "1.000000123"): exact, and no printf on the per-span path. */
static void a_seconds(struct sbuf *b, const char *key, size_t klen, uint64_t ns)
{
    put_key(b, key, klen);
    LIT(b, "\"doubleValue\":");
    put_u64(b, ns / 1000000000u);
    uint32_t frac = (uint32_t)(ns % 1000000000u);
    if (frac) {
        char d[10];
        d[0] = '.';
        for (int i = 9; i >= 1; i--) {
            d[i] = (char)('0' + frac % 10);
            frac /= 10;
        }
        size_t n = 10;
        while (d[n - 1] == '0')
            n--;
        put(b, d, n);
    }
    LIT(b, "}}");
}

static void a_bool(struct sbuf *b, const char *key, size_t klen, int v)
{
    put_key(b, key, klen);
    if (v)
        LIT(b, "\"boolValue\":true}}");
    else
        LIT(b, "\"boolValue\":false}}");
}

static void a_str_array1(struct sbuf *b, const char *key, size_t klen, const char *s)
{
    put_key(b, key, klen);
    LIT(b, "\"arrayValue\":{\"values\":[{\"stringValue\":");
    sbuf_json_str(b, s, strlen(s));
    LIT(b, "}]}}}");
}

#define A_STR(b, k, s, n) a_str((b), k, sizeof(k) - 1, (s), (n))
#define A_FIELD(b, k, f) a_str((b), k, sizeof(k) - 1, (f), FLEN(f))
#define A_INT(b, k, v) a_int((b), k, sizeof(k) - 1, (v))
#define A_SECONDS(b, k, ns) a_seconds((b), k, sizeof(k) - 1, (ns))
#define A_BOOL(b, k, v) a_bool((b), k, sizeof(k) - 1, (v))

static void put_time(struct sbuf *b, const char *key, size_t klen, uint64_t ns)
{
    put(b, key, klen);
    put_u64(b, ns);
    LIT(b, "\"");
}

void otlp_begin(struct sbuf *b, const struct otlp_resource *r)
{
    LIT(b, "{\"resourceSpans\":[{\"resource\":{\"attributes\":[");
    LIT(b, "{\"key\":\"service.name\",\"value\":{\"stringValue\":");
    sbuf_json_str(b, r->service_name, strlen(r->service_name));
    LIT(b, "}}");
    if (r->host_name)
        A_STR(b, "host.name", r->host_name, strlen(r->host_name));
    A_INT(b, "process.pid", r->pid);
    if (r->bus_name)
        A_STR(b, "cbus.bus.name", r->bus_name, strlen(r->bus_name));
    /* A random u64: half of all buses have one above INT64_MAX, which an
     * intValue cannot carry (see put_int_value), and an id is not a number
     * anyway.  16 hex digits, the form cbusctl and the logs show. */
    uint8_t idb[8];
    for (int i = 0; i < 8; i++)
        idb[i] = (uint8_t)(r->bus_id >> (56 - 8 * i));
    LIT(b, ",{\"key\":\"cbus.bus.id\",\"value\":{\"stringValue\":\"");
    otlp_put_hex(b, idb, 8);
    LIT(b, "\"}}");
    /* extra "k=v,k=v" pairs, already validated by the config parser */
    for (const char *p = r->extra; p && *p;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        if (eq && eq > p) {
            LIT(b, ",{\"key\":");
            sbuf_json_str(b, p, (size_t)(eq - p));
            LIT(b, ",\"value\":{\"stringValue\":");
            sbuf_json_str(b, eq + 1, len - (size_t)(eq - p) - 1);
            LIT(b, "}}");
        }
        p = comma ? comma + 1 : p + len;
    }
    LIT(b, "]},\"scopeSpans\":[{\"scope\":{\"name\":\"cbus-export\",\"version\":\"" CBUS_VERSION_STRING
           "\"},\"spans\":[");    terminate(b);
}

void otlp_end(struct sbuf *b)
{
    LIT(b, "]}]}]}");
    terminate(b);
}

/* A run's kind: its family for the start/end/error kinds of a family that
 * has runs (chat_model for chat_model_start), else the kind's own name. */
static const char *run_kind(unsigned kind)
{
    if (kind == CBUS_EV_CHAT_MODEL_START)
        return "chat_model";
    if (cbus_kind_phase(kind) != CBUS_PHASE_POINT) {
        switch (cbus_kind_family(kind)) {
        case CBUS_FAMILY_LLM:
            return "llm";
        case CBUS_FAMILY_CHAIN:
            return "chain";
        case CBUS_FAMILY_TOOL:
            return "tool";
        case CBUS_FAMILY_RETRIEVER:
            return "retriever";
        default:
            break;
        }
    }
    const char *n = cbus_kind_name(kind);
    return n ? n : "unknown";
}

static int is_error_kind(unsigned kind)
{
    return cbus_kind_phase(kind) == CBUS_PHASE_ERROR;
}

/* The LLM run's own kinds (start, end, error), not its token points. */
static int is_llm(unsigned kind)
{
    return cbus_kind_family(kind) == CBUS_FAMILY_LLM && cbus_kind_phase(kind) != CBUS_PHASE_POINT;
}

/* Duration an end event reports by itself (for a span whose start is missing). */
static uint64_t end_duration(const struct cbus_event *e)
{
    if (cbus_kind_family(e->kind) == CBUS_FAMILY_AGENT)
        return 0; /* agent_finish is a point (span.c), never a span's end */
    switch (cbus_kind_payload(e->kind)) {
    case CBUS_PAYLOAD_USAGE:
        return (e->u.usage.usage_present & CBUS_USAGE_DURATION) ? e->u.usage.duration_ns : 0;
    case CBUS_PAYLOAD_ERROR:
        return e->u.error.duration_ns;
    case CBUS_PAYLOAD_RETRIEVER:
        return e->u.retriever.duration_ns;
    case CBUS_PAYLOAD_SPAN:
        return e->u.span.duration_ns;
    default:
        return 0;
    }
}

/* "{prefix} {name}" (or just the prefix when name is empty), no printf:
 * this runs once per span. */
static void put_name(struct sbuf *b, const struct span *s, const char *op)
{
    const struct cbus_event *st = &s->start;
    char name[CBUS_MODEL_LEN + CBUS_NAME_LEN + 32];
    const char *prefix, *field;
    size_t fl;
    if (is_llm(st->kind)) {
        prefix = op;
        field = st->model;
        fl = FLEN(st->model);
    } else {
        prefix = op ? op : run_kind(st->kind);
        field = st->name;
        fl = FLEN(st->name);
    }
    size_t pl = strlen(prefix);
    if (pl > 31)
        pl = 31;
    memcpy(name, prefix, pl);
    size_t n = pl;
    if (fl) {
        name[n++] = ' ';
        memcpy(name + n, field, fl); /* fl <= CBUS_MODEL_LEN: fits */
        n += fl;
    }
    LIT(b, ",\"name\":");
    sbuf_json_str(b, name, n);
}

static void put_point_event(struct sbuf *b, const struct cbus_event *ev, int first,
                            const struct otlp_opts *o)
{
    if (!first)
        LIT(b, ",");
    put_time(b, "{\"timeUnixNano\":\"", 17, ev->ts_realtime_ns);
    LIT(b, ",\"name\":");
    const char *kn = run_kind(ev->kind);
    sbuf_json_str(b, kn, strlen(kn));
    LIT(b, ",\"attributes\":[{\"key\":\"cbus.event.id\",\"value\":{");
    put_int_value(b, ev->event_id);
    switch (ev->kind) {
    case CBUS_EV_AGENT_ACTION:
        A_FIELD(b, "gen_ai.tool.name", ev->name);
        break;
    case CBUS_EV_RETRY:
        A_INT(b, "cbus.retry.attempt", ev->u.retry.attempt);
        A_INT(b, "cbus.retry.backoff_ns", ev->u.retry.backoff_ns);
        break;
    case CBUS_EV_CUSTOM:
        A_FIELD(b, "cbus.custom.name", ev->name);
        break;
    default:
        A_FIELD(b, "cbus.name", ev->name);
        break;
    }
    if (o->include_previews)
        A_FIELD(b, "cbus.preview", ev->preview);
    LIT(b, "]}");
}

void otlp_span(struct sbuf *b, const struct span *s, int first, const struct otlp_opts *o)
{
    const struct cbus_event *st = &s->start;
    const struct cbus_event *en = (s->end_kind == SPAN_ENDED || s->end_kind == SPAN_START_MISSING)
                                      ? &s->end
                                      : NULL;
    /* ---- times ---- */
    uint64_t t0 = st->ts_realtime_ns, t1 = t0;
    if (s->end_kind == SPAN_ENDED) {
        /* monotonic difference: immune to a realtime step between the events */
        t1 = en->ts_mono_ns >= st->ts_mono_ns ? t0 + (en->ts_mono_ns - st->ts_mono_ns)
                                              : en->ts_realtime_ns;
    } else if (s->end_kind == SPAN_START_MISSING) {
        t1 = en->ts_realtime_ns;
        uint64_t d = end_duration(en);
        t0 = d && d < t1 ? t1 - d : t1;
    } else if (s->end_kind == SPAN_UNFINISHED) {
        t1 = s->unfinished_end_ns;
    }
    /* ---- what it is ---- */
    unsigned k = st->kind;
    const char *op = NULL;
    int kind = KIND_INTERNAL;
    if (k == CBUS_EV_CHAT_MODEL_START) {
        op = "chat";
        kind = KIND_CLIENT;
    } else if (k == CBUS_EV_LLM_START || (s->end_kind == SPAN_START_MISSING && is_llm(k))) {
        op = s->end_kind == SPAN_START_MISSING ? "chat" : "text_completion";
        kind = KIND_CLIENT;
    } else if (cbus_kind_family(k) == CBUS_FAMILY_TOOL) {
        op = "execute_tool";
    } else if (s->is_agent) {
        op = "invoke_agent";
    }

    if (!first)
        LIT(b, ",");
    LIT(b, "{\"traceId\":\"");
    otlp_put_hex(b, s->trace_id, 16);
    LIT(b, "\",\"spanId\":\"");
    otlp_put_hex(b, s->span_id, 8);
    if (s->has_parent) {
        LIT(b, "\",\"parentSpanId\":\"");
        otlp_put_hex(b, s->parent_span_id, 8);
    }
    LIT(b, "\"");
    put_name(b, s, op);
    if (kind == KIND_CLIENT)
        LIT(b, ",\"kind\":3");
    else
        LIT(b, ",\"kind\":1");
    put_time(b, ",\"startTimeUnixNano\":\"", 22, t0);
    put_time(b, ",\"endTimeUnixNano\":\"", 20, t1);

    /* ---- attributes ---- */
    LIT(b, ",\"attributes\":[{\"key\":\"cbus.run.kind\",\"value\":{\"stringValue\":\"");
    const char *rk = run_kind(k);
    put(b, rk, strlen(rk));
    LIT(b, "\"}}");
    if (op)
        A_STR(b, "gen_ai.operation.name", op, strlen(op));
    char uuid[36];
    uuid_text(uuid, st->run_id);
    A_STR(b, "cbus.run.id", uuid, 36);
    A_INT(b, "cbus.event.id", st->event_id);
    if (en && s->end_kind == SPAN_ENDED)
        A_INT(b, "cbus.end_event.id", en->event_id);
    A_FIELD(b, "gen_ai.provider.name", st->provider);
    A_FIELD(b, "user.id", st->user);
    if (FLEN(st->session)) {
        A_FIELD(b, "session.id", st->session);
        A_FIELD(b, "gen_ai.conversation.id", st->session);
    }
    A_FIELD(b, "cbus.request.id", st->request_id);
    A_INT(b, "cbus.producer.pid", st->pid);
    A_INT(b, "thread.id", st->tid);

    if (is_llm(k)) {
        A_FIELD(b, "gen_ai.request.model", st->model);
        if (s->end_kind == SPAN_ENDED && st->u.llm_start.max_tokens)
            A_INT(b, "gen_ai.request.max_tokens", st->u.llm_start.max_tokens);
        if (en && cbus_kind_payload(en->kind) == CBUS_PAYLOAD_USAGE) {
            const struct cbus_usage *u = &en->u.usage;
            A_FIELD(b, "gen_ai.response.model", en->model);
            if (u->usage_present & CBUS_USAGE_INPUT)
                A_INT(b, "gen_ai.usage.input_tokens", u->input_tokens);
            if (u->usage_present & CBUS_USAGE_OUTPUT)
                A_INT(b, "gen_ai.usage.output_tokens", u->output_tokens);
            if (u->usage_present & CBUS_USAGE_CACHE_READ)
                A_INT(b, "gen_ai.usage.cache_read.input_tokens", u->cache_read_tokens);
            if (u->usage_present & CBUS_USAGE_CACHE_CREATION)
                A_INT(b, "gen_ai.usage.cache_creation.input_tokens", u->cache_creation_tokens);
            if (u->usage_present & CBUS_USAGE_REASONING)
                A_INT(b, "gen_ai.usage.reasoning.output_tokens", u->reasoning_tokens);
            const char *fr = u->finish_reason ? cbus_finish_reason_name(u->finish_reason) : NULL;
            if (fr)
                a_str_array1(b, "gen_ai.response.finish_reasons", sizeof "gen_ai.response.finish_reasons" - 1, fr);
            if (u->usage_present & CBUS_USAGE_TTFT)
                A_SECONDS(b, "gen_ai.response.time_to_first_chunk", u->ttft_ns);
            else if (s->chunks && s->first_chunk_mono_ns >= st->ts_mono_ns && s->end_kind == SPAN_ENDED)
                A_SECONDS(b, "gen_ai.response.time_to_first_chunk", s->first_chunk_mono_ns - st->ts_mono_ns);
        } else if (s->chunks && s->first_chunk_mono_ns >= st->ts_mono_ns) {
            A_SECONDS(b, "gen_ai.response.time_to_first_chunk", s->first_chunk_mono_ns - st->ts_mono_ns);
        }
        if (s->chunks)
            A_INT(b, "cbus.stream.chunks", s->chunks);
    } else if (op && !strcmp(op, "execute_tool")) {
        A_FIELD(b, "gen_ai.tool.name", st->name);
    } else if (s->is_agent) {
        A_FIELD(b, "gen_ai.agent.name", st->name);
    } else {
        A_FIELD(b, "cbus.name", st->name);
    }
    if (en && cbus_kind_payload(en->kind) == CBUS_PAYLOAD_RETRIEVER)
        A_INT(b, "cbus.retriever.document_count", en->u.retriever.document_count);
    if (en && is_error_kind(en->kind)) {
        size_t tl = FLEN(en->name);
        A_STR(b, "error.type", tl ? en->name : "_OTHER", tl ? tl : 6);
        if (en->u.error.http_status > 0)
            A_INT(b, "http.response.status_code", (uint64_t)en->u.error.http_status);
    }
    if (s->end_kind == SPAN_UNFINISHED)
        A_BOOL(b, "cbus.run.unfinished", 1);
    else if (s->end_kind == SPAN_START_MISSING)
        A_BOOL(b, "cbus.run.start_missing", 1);
    if (o->include_previews) {
        if (s->end_kind == SPAN_POINT)
            A_FIELD(b, "cbus.preview", st->preview);
        else if (s->end_kind != SPAN_START_MISSING)
            A_FIELD(b, "cbus.input.preview", st->preview);
        if (en && !is_error_kind(en->kind))
            A_FIELD(b, "cbus.output.preview", en->preview);
    }
    if ((st->flags | (en ? en->flags : 0)) & 0x7f)
        A_BOOL(b, "cbus.truncated", 1);
    LIT(b, "]");

    /* ---- point events folded into the span ---- */
    if (s->n_events) {
        LIT(b, ",\"events\":[");
        for (uint32_t i = 0; i < s->n_events; i++)
            put_point_event(b, &s->events[i], i == 0, o);
        LIT(b, "]");
    }
    if (s->events_dropped) {
        LIT(b, ",\"droppedEventsCount\":");
        put_u64(b, s->events_dropped);
    }

    /* ---- status ---- */
    if (en && is_error_kind(en->kind)) {
        LIT(b, ",\"status\":{\"code\":2");
        size_t ml = FLEN(en->preview);
        if (ml) {
            LIT(b, ",\"message\":");
            sbuf_json_str(b, en->preview, ml);
        }
        LIT(b, "}}");
    } else if (en) {
        LIT(b, ",\"status\":{\"code\":1}}");
    } else {
        LIT(b, ",\"status\":{\"code\":0}}");
    }
    terminate(b);
}
