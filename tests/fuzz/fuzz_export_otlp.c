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
 * (child run), and may force a kind, so starts meet their ends. */
#include "fuzz.h"

#include "otlp.h"
#include "span.h"

#include <cjson/cJSON.h>

struct out {
    struct sbuf b;
    unsigned spans;
    struct otlp_opts o;
};

static void on_span(const struct span *s, void *arg)
{
    struct out *o = arg;
    otlp_span(&o->b, s, o->spans == 0, &o->o);
    o->spans++;
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

static void check_body(const struct out *o)
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
    }
    cJSON_Delete(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fz f = {data, size};
    uint8_t flags = fz_u8(&f);
    struct out o;
    memset(&o, 0, sizeof o);
    sbuf_init(&o.b);
    o.o.include_previews = flags & 1;
    struct otlp_resource res = {.service_name = "fuzz", .host_name = "h\"ost", .pid = 7,
                                .bus_name = "bus", .bus_id = 0xabcdef,
                                .extra = (flags & 2) ? "deployment.environment=fuzz,k=v" : NULL};
    struct otlp_mark mark;
    otlp_begin(&o.b, &res, &o.o, &mark);
    struct span_table *t;
    if (span_table_new(&t, 1 + (flags >> 4), on_span, &o)) {
        sbuf_free(&o.b);
        return 0;
    }
    struct cbus_event prev, ev;
    memset(&prev, 0, sizeof prev);
    uint64_t pos = 0, now = 1000;
    while (f.n) {
        uint8_t link = fz_u8(&f);
        fz_bytes(&f, &ev, sizeof ev);
        if ((link & 3) == 1)
            memcpy(ev.run_id, prev.run_id, sizeof ev.run_id);
        else if ((link & 3) == 2)
            memcpy(ev.parent_run_id, prev.run_id, sizeof ev.parent_run_id);
        if (link & 4)
            ev.kind = (uint16_t)((link >> 3) % CBUS_EV__COUNT);
        ev.event_id = pos++; /* the consumer overwrites it with the ring position */
        now += 1000000;
        span_table_feed(t, &ev, now);
        if ((flags & 4) && (pos & 3) == 0)
            span_table_expire(t, now - 2000000, &(uint64_t){span_table_min_pos(t)});
        prev = ev;
    }
    span_table_stats(t);
    span_table_flush(t);
    FZ_CHECK(span_table_min_pos(t) == UINT64_MAX, "runs open after a flush");
    span_table_free(t);
    otlp_end(&o.b, &o.o, &mark);
    if (!o.b.failed)
        check_body(&o);
    sbuf_free(&o.b);
    return 0;
}
