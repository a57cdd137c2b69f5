/* Target: the exporter's encoders (consumers/export/span.c, otlp.c) given
 * arbitrary event records, as a consumer reads them from the ring: span
 * assembly pairs starts with ends by run_id, folds tokens and point events,
 * and the OTLP/JSON encoder renders the spans.  The body it builds is what
 * a collector receives: it must be valid JSON, every span must carry a
 * 32-hex traceId and 16-hex spanId, and the span count must match.  The
 * msgpack batch format (event_msgpack) is fuzzed by fuzz_event_codec.
 *
 * Input: a flags byte (previews on, expiry sweeps), then records of one
 * link byte + 496 event bytes.  The link byte helps the fuzzer build runs:
 * it may copy the previous event's run_id (same run) or make it the parent
 * (child run), and may force a kind, so starts meet their ends.
 *
 * With flags bit 3, a profile byte follows (1 Langfuse, 2 Phoenix, 4
 * protobuf, 8 a price table, bits 4-5 the content cap 256 << n), content
 * capture is on, and every record is a link byte, a u16 body length (mod
 * 2048), that many body bytes, then the event: bodies as a consumer copies
 * them out of the ring, sections and lengths untrusted.  A protobuf batch is
 * walked field by field against the OTLP messages (every length inside its
 * container, ids of their size, every string UTF-8, as a protobuf runtime
 * demands), and the same spans encoded as JSON must hold as many spans,
 * attributes and events. */
#include "fuzz.h"

#include "otlp.h"
#include "prices.h"
#include "span.h"

#include <cjson/cJSON.h>

struct out {
    struct sbuf b;
    unsigned spans;
    struct otlp_opts o;
    struct sbuf pb;    /* the same spans as protobuf, when the profile asks */
    struct otlp_opts po;
    int with_pb;
};

static void on_span(const struct span *s, void *arg)
{
    struct out *o = arg;
    otlp_span(&o->b, s, o->spans == 0, &o->o);
    if (o->with_pb)
        otlp_span(&o->pb, s, o->spans == 0, &o->po);
    o->spans++;
}

/* ---- a protobuf walker over the OTLP trace messages --------------------------
 * Counts what it finds; FZ_CHECKs every rule a protobuf runtime enforces on
 * what cbus-export writes. */

struct pbc {
    unsigned spans, attrs, events;
};

static int pb_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    *v = 0;
    for (int sh = 0; sh < 64 && *p < end; sh += 7) {
        uint8_t c = *(*p)++;
        *v |= (uint64_t)(c & 0x7f) << sh;
        if (!(c & 0x80))
            return 1;
    }
    return 0;
}

/* One field: its number, wire type, and for length-delimited ones the
 * payload [*d, *d + *n) inside end. */
static int pb_field(const uint8_t **p, const uint8_t *end, unsigned *field, unsigned *wt,
                    const uint8_t **d, size_t *n, uint64_t *v)
{
    uint64_t tag;
    FZ_CHECK(pb_varint(p, end, &tag), "bad tag varint");
    *field = (unsigned)(tag >> 3);
    *wt = (unsigned)(tag & 7);
    FZ_CHECK(*field > 0, "field number 0");
    switch (*wt) {
    case 0:
        FZ_CHECK(pb_varint(p, end, v), "bad varint");
        return 1;
    case 1:
        FZ_CHECK(end - *p >= 8, "short fixed64");
        *p += 8;
        return 1;
    case 2: {
        uint64_t len;
        FZ_CHECK(pb_varint(p, end, &len), "bad length");
        FZ_CHECK(len <= (uint64_t)(end - *p), "length %llu past its container", (unsigned long long)len);
        *d = *p;
        *n = (size_t)len;
        *p += len;
        return 1;
    }
    default:
        FZ_CHECK(0, "wire type %u", *wt);
        return 0;
    }
}

static void pb_utf8(const uint8_t *d, size_t n, const char *what)
{
    int valid;
    size_t c = cbus_utf8_clean_len((const char *)d, n, &valid);
    FZ_CHECK(valid && c == n && !memchr(d, 0, n), "%s is not clean UTF-8", what);
}

static void pb_anyvalue(const uint8_t *p, const uint8_t *end, int depth)
{
    FZ_CHECK(depth < 4, "arrays nested too deep");
    while (p < end) {
        unsigned f, wt;
        const uint8_t *d = NULL;
        size_t n = 0;
        uint64_t v;
        pb_field(&p, end, &f, &wt, &d, &n, &v);
        if (f == 1) {
            FZ_CHECK(wt == 2, "string_value wire type");
            pb_utf8(d, n, "string_value");
        } else if (f == 5) {
            FZ_CHECK(wt == 2, "array_value wire type");
            const uint8_t *q = d, *qe = d + n;
            while (q < qe) {
                unsigned g, gw;
                const uint8_t *e = NULL;
                size_t m = 0;
                pb_field(&q, qe, &g, &gw, &e, &m, &v);
                FZ_CHECK(g == 1 && gw == 2, "ArrayValue.values");
                pb_anyvalue(e, e + m, depth + 1);
            }
        } else {
            FZ_CHECK((f == 2 || f == 3) ? wt == 0 : f == 4 ? wt == 1 : 0, "AnyValue field %u/%u", f, wt);
        }
    }
}

static void pb_keyvalue(const uint8_t *p, const uint8_t *end, struct pbc *c)
{
    int key = 0;
    c->attrs++;
    while (p < end) {
        unsigned f, wt;
        const uint8_t *d = NULL;
        size_t n = 0;
        uint64_t v;
        pb_field(&p, end, &f, &wt, &d, &n, &v);
        FZ_CHECK(wt == 2 && (f == 1 || f == 2), "KeyValue field %u", f);
        if (f == 1) {
            FZ_CHECK(n > 0, "empty attribute key");
            pb_utf8(d, n, "attribute key");
            key = 1;
        } else {
            pb_anyvalue(d, d + n, 0);
        }
    }
    FZ_CHECK(key, "attribute without a key");
}

static void pb_span(const uint8_t *p, const uint8_t *end, struct pbc *c)
{
    c->spans++;
    int tid = 0, sid = 0;
    while (p < end) {
        unsigned f, wt;
        const uint8_t *d = NULL;
        size_t n = 0;
        uint64_t v;
        pb_field(&p, end, &f, &wt, &d, &n, &v);
        switch (f) {
        case 1: FZ_CHECK(wt == 2 && n == 16, "trace_id"); tid = 1; break;
        case 2: FZ_CHECK(wt == 2 && n == 8, "span_id"); sid = 1; break;
        case 4: FZ_CHECK(wt == 2 && n == 8, "parent_span_id"); break;
        case 5: FZ_CHECK(wt == 2, "name"); pb_utf8(d, n, "span name"); break;
        case 6: FZ_CHECK(wt == 0 && (v == 1 || v == 3), "kind %llu", (unsigned long long)v); break;
        case 7: case 8: FZ_CHECK(wt == 1, "times are fixed64"); break;
        case 9: FZ_CHECK(wt == 2, "attributes"); pb_keyvalue(d, d + n, c); break;
        case 11: {
            FZ_CHECK(wt == 2, "events");
            c->events++;
            const uint8_t *q = d, *qe = d + n;
            while (q < qe) {
                unsigned g, gw;
                const uint8_t *e = NULL;
                size_t m = 0;
                pb_field(&q, qe, &g, &gw, &e, &m, &v);
                if (g == 2)
                    pb_utf8(e, m, "event name");
                else if (g == 3)
                    pb_keyvalue(e, e + m, c);
                else
                    FZ_CHECK(g == 1 && gw == 1, "Event field %u", g);
            }
            break;
        }
        case 12: FZ_CHECK(wt == 0, "dropped_events_count"); break;
        case 15: {
            FZ_CHECK(wt == 2, "status");
            const uint8_t *q = d, *qe = d + n;
            while (q < qe) {
                unsigned g, gw;
                const uint8_t *e = NULL;
                size_t m = 0;
                pb_field(&q, qe, &g, &gw, &e, &m, &v);
                if (g == 2)
                    pb_utf8(e, m, "status message");
                else
                    FZ_CHECK(g == 3 && gw == 0 && v <= 2, "Status field %u", g);
            }
            break;
        }
        default: FZ_CHECK(0, "unexpected Span field %u", f);
        }
    }
    FZ_CHECK(tid && sid, "span without its ids");
}

static void pb_request(const struct sbuf *b, struct pbc *c)
{
    const uint8_t *p = (const uint8_t *)b->data, *end = p + b->len;
    unsigned f, wt;
    const uint8_t *d = NULL, *e = NULL, *q, *qe;
    size_t n = 0, m = 0;
    uint64_t v;
    pb_field(&p, end, &f, &wt, &d, &n, &v);
    FZ_CHECK(f == 1 && wt == 2 && p == end, "one resource_spans");
    for (q = d, qe = d + n; q < qe;) {
        pb_field(&q, qe, &f, &wt, &e, &m, &v);
        FZ_CHECK(wt == 2 && (f == 1 || f == 2), "ResourceSpans field %u", f);
        if (f == 1) {
            for (const uint8_t *r = e, *re = e + m; r < re;) {
                unsigned g, gw;
                const uint8_t *a = NULL;
                size_t an = 0;
                pb_field(&r, re, &g, &gw, &a, &an, &v);
                FZ_CHECK(g == 1 && gw == 2, "Resource.attributes");
                struct pbc ignore = {0, 0, 0};
                pb_keyvalue(a, a + an, &ignore);
            }
            continue;
        }
        for (const uint8_t *r = e, *re = e + m; r < re;) {
            unsigned g, gw;
            const uint8_t *a = NULL;
            size_t an = 0;
            pb_field(&r, re, &g, &gw, &a, &an, &v);
            FZ_CHECK(gw == 2 && (g == 1 || g == 2), "ScopeSpans field %u", g);
            if (g == 2)
                pb_span(a, a + an, c);
        }
    }
}

static int is_hex(const cJSON *j, size_t n)
{
    if (!cJSON_IsString(j) || strlen(j->valuestring) != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!strchr("0123456789abcdef", j->valuestring[i]))
            return 0;
    return 1;
}

static void check_body(const struct out *o, struct pbc *jc)
{
    cJSON *j = cJSON_ParseWithLength(o->b.data, o->b.len);
    FZ_CHECK(j, "OTLP body is not JSON: %.300s", o->b.data);
    const cJSON *rs = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "resourceSpans"), 0);
    const cJSON *ss = cJSON_GetArrayItem(cJSON_GetObjectItem(rs, "scopeSpans"), 0);
    const cJSON *spans = cJSON_GetObjectItem(ss, "spans");
    FZ_CHECK(cJSON_IsArray(spans) && (unsigned)cJSON_GetArraySize(spans) == o->spans,
             "%d spans in the body, %u emitted", cJSON_GetArraySize(spans), o->spans);
    const cJSON *sp;
    cJSON_ArrayForEach(sp, spans) {
        FZ_CHECK(is_hex(cJSON_GetObjectItem(sp, "traceId"), 32), "bad traceId");
        FZ_CHECK(is_hex(cJSON_GetObjectItem(sp, "spanId"), 16), "bad spanId");
        FZ_CHECK(cJSON_IsString(cJSON_GetObjectItem(sp, "name")), "span without a name");
        FZ_CHECK(cJSON_IsString(cJSON_GetObjectItem(sp, "startTimeUnixNano")),
                 "startTimeUnixNano not a decimal string");
        jc->spans++;
        jc->attrs += (unsigned)cJSON_GetArraySize(cJSON_GetObjectItem(sp, "attributes"));
        const cJSON *ev;
        cJSON_ArrayForEach(ev, cJSON_GetObjectItem(sp, "events")) {
            jc->events++;
            jc->attrs += (unsigned)cJSON_GetArraySize(cJSON_GetObjectItem(ev, "attributes"));
        }
    }
    cJSON_Delete(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fz f = {data, size};
    uint8_t flags = fz_u8(&f);
    uint8_t prof = (flags & 8) ? fz_u8(&f) : 0;
    int bodies = !!(flags & 8);
    struct out o;
    memset(&o, 0, sizeof o);
    sbuf_init(&o.b);
    sbuf_init(&o.pb);
    o.o.include_previews = flags & 1;
    struct cost_price_table *prices = NULL;
    if (bodies) {
        o.o.capture_content = 1;
        o.o.content_max = (size_t)256 << ((prof >> 4) & 3);
        o.o.langfuse = prof & 1;
        o.o.phoenix = !!(prof & 2) && !(prof & 1);
        if (prof & 8) {
            char err[128];
            if (cost_prices_parse(&prices, "fuzz",
                                  "{\"m\":{\"input_cost_per_token\":2.5e-06,\"output_cost_per_token\":1e-05,"
                                  "\"input_cost_per_token_above_1k_tokens\":5e-06}}",
                                  err, sizeof err) == 0)
                o.o.prices = prices;
        }
        o.with_pb = !!(prof & 4);
    }
    o.po = o.o;
    o.po.encoding = OTLP_PROTOBUF;
    struct otlp_resource res = {.service_name = "fuzz", .host_name = "h\"ost", .pid = 7,
                                .bus_name = "bus", .bus_id = 0xabcdef,
                                .extra = (flags & 2) ? "deployment.environment=fuzz,k=v" : NULL};
    if (bodies && (prof & 2))
        res.project = "fuzz-\xff";
    struct otlp_mark mark, pmark;
    otlp_begin(&o.b, &res, &o.o, &mark);
    if (o.with_pb)
        otlp_begin(&o.pb, &res, &o.po, &pmark);
    struct span_table *t;
    if (span_table_new(&t, 1 + (flags >> 4), on_span, &o)) {
        sbuf_free(&o.b);
        sbuf_free(&o.pb);
        cost_prices_free(prices);
        return 0;
    }
    /* a small memory bound, so that some start bodies are not kept */
    if (bodies)
        span_table_bodies(t, 1, 1, o.o.content_max, (uint64_t)1 << 20);
    static uint8_t body[2048];
    struct cbus_event prev, ev;
    memset(&prev, 0, sizeof prev);
    uint64_t pos = 0, now = 1000;
    while (f.n) {
        uint8_t link = fz_u8(&f);
        struct cbus_body bd = {NULL, 0};
        if (bodies) {
            uint32_t bl = fz_u16(&f) % sizeof body;
            if (bl > f.n)
                bl = (uint32_t)f.n;
            fz_bytes(&f, body, bl);
            bd.data = body;
            bd.len = bl;
        }
        fz_bytes(&f, &ev, sizeof ev);
        if ((link & 3) == 1)
            memcpy(ev.run_id, prev.run_id, sizeof ev.run_id);
        else if ((link & 3) == 2)
            memcpy(ev.parent_run_id, prev.run_id, sizeof ev.parent_run_id);
        if (link & 4)
            ev.kind = (uint16_t)((link >> 3) % CBUS_EV__COUNT);
        ev.event_id = pos++; /* the consumer overwrites it with the ring position */
        now += 1000000;
        span_table_feed_body(t, &ev, bd.len ? &bd : NULL, now);
        if ((flags & 4) && (pos & 3) == 0)
            span_table_expire(t, now - 2000000, &(uint64_t){span_table_min_pos(t)});
        prev = ev;
    }
    span_table_stats(t);
    span_table_flush(t);
    FZ_CHECK(span_table_min_pos(t) == UINT64_MAX, "runs open after a flush");
    FZ_CHECK(span_table_stats(t)->body_bytes == 0, "a kept body was not freed");
    span_table_free(t);
    otlp_end(&o.b, &o.o, &mark);
    struct pbc jc = {0, 0, 0};
    if (!o.b.failed)
        check_body(&o, &jc);
    if (o.with_pb) {
        otlp_end(&o.pb, &o.po, &pmark);
        if (!o.pb.failed && !o.b.failed) {
            struct pbc pc = {0, 0, 0};
            pb_request(&o.pb, &pc);
            FZ_CHECK(pc.spans == jc.spans && pc.attrs == jc.attrs && pc.events == jc.events,
                     "protobuf (%u spans, %u attributes, %u events) and JSON (%u, %u, %u) differ", pc.spans,
                     pc.attrs, pc.events, jc.spans, jc.attrs, jc.events);
        }
    }
    sbuf_free(&o.b);
    sbuf_free(&o.pb);
    cost_prices_free(prices);
    return 0;
}
