#include "otlp.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include <cbus/cbus.h>
#include <cjson/cJSON.h>

#include "content.h"
#include "event_body.h"
#include "json_get.h"

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


/* ---- one writer for both encodings ---------------------------------------
 *
 * The span walk below calls these for every attribute; each writes JSON or
 * protobuf.  Protobuf tags are one byte here (field < 16): (field << 3) |
 * wire type, wire type 0 varint, 1 fixed64, 2 length-delimited. */

struct enc {
    struct sbuf *b;
    int pb;           /* protobuf, else JSON */
    uint8_t attr_tag; /* pb: tag of the attributes field of the message being written */
    int first;        /* JSON: no comma before the next attribute */
};

/* field numbers (opentelemetry-proto) as tags */
#define PB_LEN(f) ((uint8_t)((f) << 3 | 2))
#define PB_VARINT(f) ((uint8_t)((f) << 3))
#define PB_FIXED64(f) ((uint8_t)((f) << 3 | 1))

static inline size_t vlen(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static inline void pb_varint(struct sbuf *b, uint64_t v)
{
    uint8_t t[10];
    size_t n = 0;
    while (v >= 0x80) {
        t[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    t[n++] = (uint8_t)v;
    put(b, t, n);
}

static inline void pb_byte(struct sbuf *b, uint8_t c)
{
    put(b, &c, 1);
}

static void pb_fixed64(struct sbuf *b, uint8_t tag, uint64_t v)
{
    uint8_t t[9];
    t[0] = tag;
    for (int i = 0; i < 8; i++)
        t[1 + i] = (uint8_t)(v >> (8 * i)); /* little endian on the wire */
    put(b, t, 9);
}

static void pb_bytes(struct sbuf *b, uint8_t tag, const void *p, size_t n)
{
    pb_byte(b, tag);
    pb_varint(b, n);
    put(b, p, n);
}

/* A string as its UTF-8-clean bytes (no prefix): n = cbus_utf8_clean_len(). */
static void put_clean(struct sbuf *b, const char *s, size_t n, size_t clean, int valid)
{
    if (valid)
        put(b, s, clean);
    else
        sbuf_utf8_clean(b, s, n);
}

/* A length-delimited string field whose clean length c and validity the
 * caller has (cbus_utf8_clean_len: it sized the messages around it). */
static void pb_clean(struct sbuf *b, uint8_t tag, const char *s, size_t n, size_t c, int valid)
{
    pb_byte(b, tag);
    pb_varint(b, c);
    put_clean(b, s, n, c, valid);
}

/* A length-delimited string field: invalid UTF-8 becomes U+FFFD (a
 * protobuf parser refuses a string field that is not UTF-8, and with it
 * the whole request), a NUL ends it, as in JSON. */
static void pb_str(struct sbuf *b, uint8_t tag, const char *s, size_t n)
{
    int valid;
    size_t c = cbus_utf8_clean_len(s, n, &valid);
    pb_clean(b, tag, s, n, c, valid);
}

/* A nested message of unknown length: its tag and two bytes for the length
 * (most spans are 128..16383 bytes).  Returns where the content starts. */
static size_t pb_open(struct sbuf *b, uint8_t tag)
{
    uint8_t t[3] = {tag, 0, 0};
    put(b, t, 3);
    return b->len;
}

/* Writes the minimal length before the content that started at off,
 * moving the content when the length needs other than two bytes. */
static void pb_close(struct sbuf *b, size_t off)
{
    if (b->failed || !b->data)
        return;
    size_t len = b->len - off, k = vlen(len);
    if (k != 2) {
        if (k > 2 && sbuf_reserve(b, k - 2))
            return;
        memmove(b->data + off - 2 + k, b->data + off, len);
        b->len = off - 2 + k + len;
    }
    uint8_t *o = (uint8_t *)b->data + off - 2;
    while (len >= 0x80) {
        *o++ = (uint8_t)(len | 0x80);
        len >>= 7;
    }
    *o = (uint8_t)len;
}

/* The outer messages, whose length is the whole batch: four bytes, padded
 * with continuation bits (lengths below 2^28; batches are at most 64 MiB
 * plus one span). */
static size_t pb_open4(struct sbuf *b, uint8_t tag)
{
    uint8_t t[5] = {tag, 0x80, 0x80, 0x80, 0};
    put(b, t, 5);
    return b->len - 4;
}

static void pb_close4(struct sbuf *b, size_t at)
{
    if (b->failed || !b->data)
        return;
    size_t len = b->len - (at + 4);
    uint8_t *o = (uint8_t *)b->data + at;
    o[0] = (uint8_t)(len | 0x80);
    o[1] = (uint8_t)(len >> 7 | 0x80);
    o[2] = (uint8_t)(len >> 14 | 0x80);
    o[3] = (uint8_t)(len >> 21 & 0x7f);
}

/* KeyValue{key = 1, value = 2 (AnyValue of any_len bytes)} under the
 * current message's attributes field; the caller writes the AnyValue. */
static void pb_kv_head(struct enc *e, const char *key, size_t klen, size_t any_len)
{
    size_t kv = 1 + vlen(klen) + klen + 1 + vlen(any_len) + any_len;
    pb_byte(e->b, e->attr_tag);
    pb_varint(e->b, kv);
    pb_byte(e->b, PB_LEN(1));
    pb_varint(e->b, klen);
    put(e->b, key, klen);
    pb_byte(e->b, PB_LEN(2));
    pb_varint(e->b, any_len);
}

static void put_key(struct enc *e, const char *key, size_t klen)
{
    if (e->first) {
        LIT(e->b, "{\"key\":\"");
        e->first = 0;
    } else {
        LIT(e->b, ",{\"key\":\"");
    }
    put(e->b, key, klen);
    LIT(e->b, "\",\"value\":{");
}

/* AnyValue.string_value = 1.  Empty strings are not sent. */
static void a_str(struct enc *e, const char *key, size_t klen, const char *s, size_t n)
{
    if (!n || !*s)
        return;
    if (e->pb) {
        int valid;
        size_t c = cbus_utf8_clean_len(s, n, &valid);
        pb_kv_head(e, key, klen, 1 + vlen(c) + c);
        pb_clean(e->b, PB_LEN(1), s, n, c, valid);
        return;
    }
    put_key(e, key, klen);
    LIT(e->b, "\"stringValue\":");
    sbuf_json_str(e->b, s, n);
    LIT(e->b, "}}");
}

/* The value of an integer attribute.  AnyValue.intValue is a SIGNED int64:
 * a receiver's protobuf-JSON parser (Google's, the OTel Collector's) rejects
 * the whole request with 400 for a value above INT64_MAX, and a 400 is never
 * retried, so the batch would be lost.  Every integer cbus sends is a u64 from
 * shared memory or a counter; one above INT64_MAX (a corrupt ring position, a
 * hostile producer's backoff) goes as its decimal stringValue instead: the
 * value survives and the request stays valid.  Protobuf does the same, so
 * both encodings say the same thing (it could carry the bits as a negative
 * int64, which would be a lie). */
static void a_int(struct enc *e, const char *key, size_t klen, uint64_t v)
{
    if (e->pb) {
        if (v > (uint64_t)INT64_MAX) {
            char tmp[20];
            size_t i = sizeof tmp;
            do {
                tmp[--i] = (char)('0' + v % 10);
                v /= 10;
            } while (v);
            size_t n = sizeof tmp - i;
            pb_kv_head(e, key, klen, 1 + vlen(n) + n);
            pb_bytes(e->b, PB_LEN(1), tmp + i, n);
            return;
        }
        pb_kv_head(e, key, klen, 1 + vlen(v));
        pb_byte(e->b, PB_VARINT(3));
        pb_varint(e->b, v);
        return;
    }
    put_key(e, key, klen);
    if (v > (uint64_t)INT64_MAX)
        LIT(e->b, "\"stringValue\":\"");
    else
        LIT(e->b, "\"intValue\":\"");
    put_u64(e->b, v);
    LIT(e->b, "\"}}");
}

/* A duration in seconds as a doubleValue.  JSON: written from integer
 * nanoseconds ("0.25", "1.000000123"): exact, and no printf on the per-span
 * path.  Protobuf: ns / 1e9, the correctly rounded double of that same
 * decimal (both operands are exact below 2^53 ns), so both agree. */
static void a_seconds(struct enc *e, const char *key, size_t klen, uint64_t ns)
{
    if (e->pb) {
        double d = (double)ns / 1e9;
        uint64_t bits;
        memcpy(&bits, &d, 8);
        pb_kv_head(e, key, klen, 9);
        pb_fixed64(e->b, PB_FIXED64(4), bits);
        return;
    }
    struct sbuf *b = e->b;
    put_key(e, key, klen);
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

/* A double (a score) as doubleValue: JSON "%.17g" reads back as the same
 * double, so both encodings agree.  NaN and infinities are not sent (JSON
 * has no number for them). */
static void a_double(struct enc *e, const char *key, size_t klen, double v)
{
    if (!isfinite(v))
        return;
    if (e->pb) {
        uint64_t bits;
        memcpy(&bits, &v, 8);
        pb_kv_head(e, key, klen, 9);
        pb_fixed64(e->b, PB_FIXED64(4), bits);
        return;
    }
    char t[32];
    int n = snprintf(t, sizeof t, "%.17g", v);
    put_key(e, key, klen);
    LIT(e->b, "\"doubleValue\":");
    put(e->b, t, (size_t)n);
    LIT(e->b, "}}");
}

static void a_bool(struct enc *e, const char *key, size_t klen, int v)
{
    if (e->pb) {
        pb_kv_head(e, key, klen, 2);
        uint8_t t[2] = {PB_VARINT(2), (uint8_t)(v ? 1 : 0)};
        put(e->b, t, 2);
        return;
    }
    put_key(e, key, klen);
    if (v)
        LIT(e->b, "\"boolValue\":true}}");
    else
        LIT(e->b, "\"boolValue\":false}}");
}

/* An array of one string: AnyValue.array_value = 5 {values = 1}. */
static void a_str_array1(struct enc *e, const char *key, size_t klen, const char *s)
{
    size_t n = strlen(s);
    if (e->pb) {
        int valid;
        size_t c = cbus_utf8_clean_len(s, n, &valid);
        size_t inner = 1 + vlen(c) + c;          /* AnyValue{string_value} */
        size_t arr = 1 + vlen(inner) + inner;    /* ArrayValue{values} */
        pb_kv_head(e, key, klen, 1 + vlen(arr) + arr);
        pb_byte(e->b, PB_LEN(5));
        pb_varint(e->b, arr);
        pb_byte(e->b, PB_LEN(1));
        pb_varint(e->b, inner);
        pb_clean(e->b, PB_LEN(1), s, n, c, valid);
        return;
    }
    put_key(e, key, klen);
    LIT(e->b, "\"arrayValue\":{\"values\":[{\"stringValue\":");
    sbuf_json_str(e->b, s, n);
    LIT(e->b, "}]}}}");
}

#define A_STR(e, k, s, n) a_str((e), k, sizeof(k) - 1, (s), (n))
#define A_FIELD(e, k, f) a_str((e), k, sizeof(k) - 1, (f), FLEN(f))
#define A_INT(e, k, v) a_int((e), k, sizeof(k) - 1, (v))
#define A_SECONDS(e, k, ns) a_seconds((e), k, sizeof(k) - 1, (ns))
#define A_BOOL(e, k, v) a_bool((e), k, sizeof(k) - 1, (v))

static void put_time(struct sbuf *b, const char *key, size_t klen, uint64_t ns)
{
    put(b, key, klen);
    put_u64(b, ns);
    LIT(b, "\"");
}

/* Extra resource attributes "k=v,k=v" (validated by the config parser). */
static void resource_extra(struct enc *e, const char *p)
{
    while (p && *p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        if (eq && eq > p) {
            size_t kl = (size_t)(eq - p), vl = len - kl - 1;
            if (e->pb) {
                /* config text: cleaned like any string */
                int kvalid, vvalid;
                size_t kc = cbus_utf8_clean_len(p, kl, &kvalid), vc = cbus_utf8_clean_len(eq + 1, vl, &vvalid);
                size_t any = 1 + vlen(vc) + vc;
                pb_byte(e->b, e->attr_tag);
                pb_varint(e->b, 1 + vlen(kc) + kc + 1 + vlen(any) + any);
                pb_clean(e->b, PB_LEN(1), p, kl, kc, kvalid);
                pb_byte(e->b, PB_LEN(2));
                pb_varint(e->b, any);
                pb_clean(e->b, PB_LEN(1), eq + 1, vl, vc, vvalid);
            } else {
                LIT(e->b, ",{\"key\":");
                sbuf_json_str(e->b, p, kl);
                LIT(e->b, ",\"value\":{\"stringValue\":");
                sbuf_json_str(e->b, eq + 1, vl);
                LIT(e->b, "}}");
            }
        }
        p = comma ? comma + 1 : p + len;
    }
}

void otlp_begin(struct sbuf *b, const struct otlp_resource *r, const struct otlp_opts *o,
                struct otlp_mark *m)
{
    /* A random u64: half of all buses have one above INT64_MAX, which an
     * intValue cannot carry (see a_int), and an id is not a number anyway.
     * 16 hex digits, the form cbusctl and the logs show. */
    char idhex[16];
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 8; i++) {
        uint8_t c = (uint8_t)(r->bus_id >> (56 - 8 * i));
        idhex[2 * i] = hex[c >> 4];
        idhex[2 * i + 1] = hex[c & 15];
    }
    struct enc e = {.b = b, .pb = o->encoding == OTLP_PROTOBUF, .attr_tag = PB_LEN(1), .first = 0};
    size_t res = 0;
    if (e.pb) {
        /* ExportTraceServiceRequest.resource_spans = 1 {resource = 1
         * {attributes = 1}, scope_spans = 2 {scope = 1 {name = 1,
         * version = 2}, spans = 2}} */
        m->rs_len = pb_open4(b, PB_LEN(1));
        res = pb_open(b, PB_LEN(1));
        /* service.name always leads, even empty */
        int valid;
        size_t n = strlen(r->service_name), c = cbus_utf8_clean_len(r->service_name, n, &valid);
        pb_kv_head(&e, "service.name", 12, 1 + vlen(c) + c);
        pb_clean(b, PB_LEN(1), r->service_name, n, c, valid);
    } else {
        m->rs_len = m->ss_len = 0;
        LIT(b, "{\"resourceSpans\":[{\"resource\":{\"attributes\":[");
        LIT(b, "{\"key\":\"service.name\",\"value\":{\"stringValue\":");
        sbuf_json_str(b, r->service_name, strlen(r->service_name));
        LIT(b, "}}");
    }
    if (r->host_name)
        A_STR(&e, "host.name", r->host_name, strlen(r->host_name));
    A_INT(&e, "process.pid", r->pid);
    if (r->bus_name)
        A_STR(&e, "cbus.bus.name", r->bus_name, strlen(r->bus_name));
    A_STR(&e, "cbus.bus.id", idhex, 16);
    if (r->project)
        A_STR(&e, "openinference.project.name", r->project, strlen(r->project));
    resource_extra(&e, r->extra);
    if (e.pb) {
        pb_close(b, res);
        m->ss_len = pb_open4(b, PB_LEN(2));
        size_t sc = pb_open(b, PB_LEN(1));
        pb_str(b, PB_LEN(1), "cbus-export", 11);
        pb_str(b, PB_LEN(2), CBUS_VERSION_STRING, sizeof CBUS_VERSION_STRING - 1);
        pb_close(b, sc);
    } else {
        LIT(b, "]},\"scopeSpans\":[{\"scope\":{\"name\":\"cbus-export\",\"version\":\"" CBUS_VERSION_STRING
               "\"},\"spans\":[");
    }
    terminate(b);
}

void otlp_end(struct sbuf *b, const struct otlp_opts *o, const struct otlp_mark *m)
{
    if (o->encoding == OTLP_PROTOBUF) {
        pb_close4(b, m->ss_len);
        pb_close4(b, m->rs_len);
    } else {
        LIT(b, "]}]}]}");
    }
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
static void put_name(struct enc *e, const struct span *s, const char *op)
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
    if (e->pb) {
        pb_str(e->b, PB_LEN(5), name, n); /* Span.name = 5 */
        return;
    }
    LIT(e->b, ",\"name\":");
    sbuf_json_str(e->b, name, n);
}

/* A score as OpenTelemetry's gen_ai.evaluation.result says it: the name,
 * the value (numeric and boolean scores), the label (boolean: "true" /
 * "false"; categorical: the category, which the producer puts in preview). */
static void score_attrs(struct enc *e, const struct cbus_event *ev)
{
    A_FIELD(e, "gen_ai.evaluation.name", ev->name);
    const struct cbus_score_info *sc = &ev->u.score;
    switch (sc->type) {
    case CBUS_SCORE_NUMERIC:
        a_double(e, "gen_ai.evaluation.score.value", sizeof "gen_ai.evaluation.score.value" - 1, sc->value);
        break;
    case CBUS_SCORE_BOOLEAN:
        a_double(e, "gen_ai.evaluation.score.value", sizeof "gen_ai.evaluation.score.value" - 1,
                 sc->value != 0 ? 1.0 : 0.0);
        A_STR(e, "gen_ai.evaluation.score.label", sc->value != 0 ? "true" : "false", sc->value != 0 ? 4 : 5);
        break;
    case CBUS_SCORE_CATEGORICAL:
        A_FIELD(e, "gen_ai.evaluation.score.label", ev->preview);
        break;
    default:
        break;
    }
}

/* ---- content, tags and metadata (content.h) -------------------------------- */

/* Wrapped values are built here: the exporter runs on one thread.
 * scratch2: a message list with the system instructions put first. */
static struct sbuf scratch, scratch2;

/* An array of the strings of a NUL-separated list (tags). */
static void a_str_list(struct enc *e, const char *key, size_t klen, const struct cbus_body_part *p)
{
    uint32_t off = 0, n;
    const char *item;
    if (e->pb) {
        size_t arr = 0;
        while (cbus_body_list_next(p, &off, &item, &n)) {
            int valid;
            size_t c = cbus_utf8_clean_len(item, n, &valid);
            size_t inner = 1 + vlen(c) + c;
            arr += 1 + vlen(inner) + inner;
        }
        pb_kv_head(e, key, klen, 1 + vlen(arr) + arr);
        pb_byte(e->b, PB_LEN(5));
        pb_varint(e->b, arr);
        for (off = 0; cbus_body_list_next(p, &off, &item, &n);) {
            int valid;
            size_t c = cbus_utf8_clean_len(item, n, &valid);
            pb_byte(e->b, PB_LEN(1));
            pb_varint(e->b, 1 + vlen(c) + c);
            pb_clean(e->b, PB_LEN(1), item, n, c, valid);
        }
        return;
    }
    put_key(e, key, klen);
    LIT(e->b, "\"arrayValue\":{\"values\":[");
    for (int first = 1; cbus_body_list_next(p, &off, &item, &n); first = 0) {
        if (!first)
            LIT(e->b, ",");
        LIT(e->b, "{\"stringValue\":");
        /* sbuf_json_str stops at a NUL as cbus_utf8_clean_len does */
        sbuf_json_str(e->b, item, n);
        LIT(e->b, "}");
    }
    LIT(e->b, "]}}}");
}

/* A producer's metadata key inside an attribute key: printable ASCII but
 * quote and backslash (both encodings then take it as it is), the rest
 * becomes '_'.  Returns the length written (at most cap). */
static size_t safe_key(char *out, size_t cap, const char *prefix, const char *k, size_t n)
{
    size_t pl = strlen(prefix), o = 0;
    if (pl >= cap)
        return 0;
    memcpy(out, prefix, pl);
    o = pl;
    for (size_t i = 0; i < n && o < cap; i++) {
        unsigned char c = (unsigned char)k[i];
        out[o++] = c > 0x20 && c < 0x7f && c != '"' && c != '\\' ? (char)c : '_';
    }
    return o;
}

/* The last value of key k in a metadata list ("a key set twice: the last
 * wins", docs/bodies.md): 1 when the entry at off is that last one. */
static int meta_last(const struct cbus_body_part *p, uint32_t after, const char *k, uint32_t kn)
{
    uint32_t off = after, n, vn;
    const char *item, *v;
    while (cbus_body_list_next(p, &off, &item, &n)) {
        if (!cbus_body_list_next(p, &off, &v, &vn))
            break;
        if (n == kn && !memcmp(item, k, n))
            return 0;
    }
    return 1;
}

/* Attributes the conventions define that a producer can only give as
 * metadata (the event has no field for them), lifted to their own names. */
static void meta_known(struct enc *e, const char *k, uint32_t kn, const char *v, uint32_t vn,
                       int have_response_id)
{
    static const char *const known[] = {"gen_ai.response.id", "gen_ai.tool.call.id", "server.address"};
    /* the end's own response id (cbus_llm_end_response) wins: one key once */
    for (unsigned i = have_response_id ? 1 : 0; i < sizeof known / sizeof known[0]; i++)
        if (strlen(known[i]) == kn && !memcmp(known[i], k, kn)) {
            a_str(e, k, kn, v, vn);
            return;
        }
    if (kn == 11 && !memcmp(k, "server.port", 11)) {
        uint64_t port = 0;
        uint32_t i = 0;
        while (i < vn && i < 6 && v[i] >= '0' && v[i] <= '9')
            port = port * 10 + (uint64_t)(v[i++] - '0');
        if (i == vn && vn && port <= 65535)
            a_int(e, "server.port", 11, port);
    }
}

/* Tags and metadata of the run (its start's body). */
static void label_attrs(struct enc *e, const struct span *s, const struct cbus_body_parts *sp,
                        const struct otlp_opts *o, int have_response_id)
{
    const struct cbus_body_part *tags = &sp->part[CBUS_BODY_TAGS];
    const struct cbus_body_part *meta = &sp->part[CBUS_BODY_METADATA];
    int plain = !o->langfuse && !o->phoenix; /* no receiver profile: cbus's own names */
    if (plain && tags->data && tags->len)
        a_str_list(e, "cbus.tags", sizeof "cbus.tags" - 1, tags);
    if (o->langfuse && tags->data && tags->len)
        a_str_list(e, "langfuse.trace.tags", sizeof "langfuse.trace.tags" - 1, tags);
    if (o->phoenix && tags->data && tags->len)
        a_str_list(e, "tag.tags", sizeof "tag.tags" - 1, tags);
    if (!meta->data)
        return;
    if (o->phoenix)
        sbuf_reset(&scratch);
    uint32_t off = 0, kn, vn;
    const char *k, *v;
    while (cbus_body_list_next(meta, &off, &k, &kn)) {
        if (!cbus_body_list_next(meta, &off, &v, &vn))
            break; /* a key without its value: a cut section */
        if (!kn || !meta_last(meta, off, k, kn))
            continue;
        meta_known(e, k, kn, v, vn, have_response_id);
        if (o->phoenix) {
            /* OpenInference's metadata: one JSON object as a string */
            sbuf_add(&scratch, scratch.len ? "," : "{", 1);
            sbuf_json_bytes(&scratch, k, kn);
            sbuf_add(&scratch, ":", 1);
            sbuf_json_bytes(&scratch, v, vn);
        }
        char key[256];
        if (plain) {
            size_t n = safe_key(key, sizeof key, "cbus.metadata.", k, kn);
            a_str(e, key, n, v, vn);
        }
        if (!o->langfuse)
            continue;
        size_t n = safe_key(key, sizeof key, "langfuse.observation.metadata.", k, kn);
        a_str(e, key, n, v, vn);
        if (!s->has_parent) {
            /* Langfuse takes trace metadata from the trace's root span */
            n = safe_key(key, sizeof key, "langfuse.trace.metadata.", k, kn);
            a_str(e, key, n, v, vn);
        }
    }
    if (o->phoenix && scratch.len && !scratch.failed) {
        sbuf_add(&scratch, "}", 1);
        a_str(e, "metadata", 8, scratch.data, scratch.len);
    }
}

struct ctext {
    const char *p;
    size_t n;
    int cut;       /* incomplete: the bus's body limit, the preview, our cap */
    int messages;  /* from a messages section */
};

static int ctext_bound(struct ctext *t, size_t cap);

/* The text of one event: its messages, else its text section, else its
 * preview (which is the whole text when it was not cut). */
static int event_text(const void *body, uint32_t blen, const struct cbus_event *ev, size_t cap,
                      struct ctext *t)
{
    struct cbus_body b = {body, blen};
    struct cbus_body_parts parts;
    cbus_body_parts_of(&b, &parts);
    const struct cbus_body_part *p = parts.part[CBUS_BODY_MESSAGES].data ? &parts.part[CBUS_BODY_MESSAGES]
                                     : parts.part[CBUS_BODY_TEXT].data  ? &parts.part[CBUS_BODY_TEXT]
                                                                        : NULL;
    memset(t, 0, sizeof *t);
    if (p) {
        t->p = p->data;
        t->n = p->len;
        t->cut = (p->flags & CBUS_BODY_SECTION_CUT) || p->orig_len > p->len;
        t->messages = p == &parts.part[CBUS_BODY_MESSAGES];
    } else {
        t->p = ev->preview;
        t->n = FLEN(ev->preview);
        t->cut = !!(ev->flags & CBUS_TRUNC_PREVIEW);
    }
    return ctext_bound(t, cap);
}

/* A section the common renderers do not know (event_body.h stops at
 * metadata): the system instructions of a start, the response id of an
 * end.  Checked like every section (cbus_body_find). */
static int body_section(const void *body, uint32_t blen, unsigned type, const char **data, uint32_t *len,
                        int *cut)
{
    struct cbus_body_section sec;
    if (!body || !blen || cbus_body_find(body, blen, type, &sec, data) != 1)
        return 0;
    *len = sec.len;
    *cut = (sec.flags & CBUS_BODY_SECTION_CUT) || sec.orig_len > sec.len;
    return 1;
}

/* The run's system instructions (cbus_chat_model_start_system), as kept
 * by the open run: cut to the cap like every text. */
static int system_text(const struct span *s, size_t cap, struct ctext *t)
{
    uint32_t n;
    memset(t, 0, sizeof *t);
    if (s->end_kind == SPAN_START_MISSING ||
        !body_section(s->start_body, s->start_body_len, CBUS_BODY_SYSTEM, &t->p, &n, &t->cut))
        return 0;
    t->n = n;
    t->messages = 1; /* JSON when it is a valid array, else text */
    return ctext_bound(t, cap);
}

/* The provider's response id from the end's body (cbus_llm_end_response):
 * 1..CBUS_RESPONSE_ID_MAX printable ASCII bytes, as the producer checks
 * them; anything else (it came from shared memory) is not sent. */
static size_t response_id(const struct span *s, const char **id)
{
    uint32_t n;
    int cut;
    if (!body_section(s->end_body, s->end_body_len, CBUS_BODY_RESPONSE_ID, id, &n, &cut) || cut || !n ||
        n > CBUS_RESPONSE_ID_MAX)
        return 0;
    for (uint32_t i = 0; i < n; i++)
        if ((unsigned char)(*id)[i] <= 0x20 || (unsigned char)(*id)[i] >= 0x7f)
            return 0;
    return n;
}

static int ctext_bound(struct ctext *t, size_t cap)
{
    /* a NUL would end the string in either encoding: say it ends there */
    const char *nul = t->n ? memchr(t->p, '\0', t->n) : NULL;
    if (nul) {
        t->n = (size_t)(nul - t->p);
        t->cut = 1;
    }
    if (t->n > cap) {
        t->n = content_cut_len(t->p, t->n, cap);
        t->cut = 1;
    }
    return t->n > 0;
}

/* Keys of attributes whose value is not whole: cbus.content.cut. */
struct cutlist {
    const char *key[8];
    unsigned n;
};

/* the first 8 cut attributes are named; a span has fewer content keys */
static void note_cut(struct cutlist *cl, const char *key)
{
    if (cl->n < 8)
        cl->key[cl->n++] = key;
}

static void content_one(struct enc *e, const char *key, const struct ctext *t, int as_messages,
                        const char *role, const char *fr, struct cutlist *cl)
{
    int arr = 0;
    if (as_messages && !(t->messages && content_json_valid(t->p, t->n, &arr) && arr)) {
        /* not a JSON message list (a prompt, an output, a cut or broken
         * messages body): sent as the text of one message, never dropped */
        sbuf_reset(&scratch);
        content_wrap_text(&scratch, role, t->p, t->n, fr);
        if (!scratch.failed)
            a_str(e, key, strlen(key), scratch.data, scratch.len);
    } else {
        a_str(e, key, strlen(key), t->p, t->n);
    }
    if (t->cut)
        note_cut(cl, key);
}

/* An output message's finish_reason in the conventions' words. */
static const char *otel_finish(const struct cbus_event *en)
{
    if (cbus_kind_payload(en->kind) != CBUS_PAYLOAD_USAGE)
        return NULL;
    unsigned r = en->u.usage.finish_reason;
    if (r == CBUS_FINISH_TOOL_CALLS)
        return "tool_call";
    return r == CBUS_FINISH_UNSET ? NULL : cbus_finish_reason_name(r);
}

/* The system instructions' parts: the producer's JSON array as it came,
 * else its text as one text part (gen_ai.system_instructions' shape). */
static void system_parts(struct sbuf *b, const struct ctext *sys)
{
    int arr = 0;
    if (!sys->cut && content_json_valid(sys->p, sys->n, &arr) && arr)
        sbuf_add(b, sys->p, sys->n);
    else
        content_wrap_part(b, sys->p, sys->n);
}

/* The elements of a JSON array (valid, checked by the caller) without its
 * brackets: [p, p + *n).  Returns 0 for an empty array. */
static int array_inner(const char *j, size_t n, const char **p, size_t *in)
{
    size_t a = 0, z = n;
    while (a < z && j[a] != '[')
        a++;
    while (z > a && j[z - 1] != ']')
        z--;
    if (z <= a + 1)
        return 0;
    a++;
    z--;
    while (a < z && (j[a] == ' ' || j[a] == '\t' || j[a] == '\n' || j[a] == '\r'))
        a++;
    *p = j + a;
    *in = z - a;
    return z > a;
}

/* For receivers that read one input (Langfuse's observation input,
 * Phoenix's message list): the input as a message list with the system
 * instructions first, {"role":"system","parts":...}, then the history
 * (a message list as it came) or the prompt as one user message. */
static void input_with_system(struct sbuf *b, const struct ctext *sys, const struct ctext *in, int hin)
{
    sbuf_reset(b);
    sbuf_puts(b, "[{\"role\":\"system\",\"parts\":");
    system_parts(b, sys);
    sbuf_puts(b, "}");
    int arr = 0;
    const char *ip;
    size_t il;
    if (hin && !in->cut && in->messages && content_json_valid(in->p, in->n, &arr) && arr) {
        if (array_inner(in->p, in->n, &ip, &il)) {
            sbuf_puts(b, ",");
            sbuf_add(b, ip, il);
        }
    } else if (hin) {
        /* content_wrap_text's one message, without its brackets */
        size_t at = b->len;
        content_wrap_text(b, "user", in->p, in->n, NULL);
        if (!b->failed && b->len > at + 2) {
            b->data[at] = ',';  /* its '[' becomes the separator */
            b->len--;           /* and its ']' goes */
        }
    }
    sbuf_puts(b, "]");
}

/* ---- OpenInference's flattened lists (the phoenix profile) -----------------
 * Phoenix's LLM pane reads llm.input_messages.N.message.*, its retriever
 * pane retrieval.documents.N.document.*: lists of objects flattened into
 * one attribute per leaf.  They are built from the message lists and
 * documents the producer sent when those are whole JSON (a text cut at the
 * cap is not parsed: its input.value / output.value still carry it), so
 * every attribute is within the cap.  cJSON parses them, after
 * content_json_valid() bounded their nesting. */
#define OI_MAX 128 /* entries of one list; more are left out and listed in cbus.content.cut */

static cJSON *oi_parse(const char *j, size_t n)
{
    int arr = 0;
    if (!content_json_valid(j, n, &arr) || !arr)
        return NULL;
    return cJSON_ParseWithLength(j, n);
}

static void oi_str(struct enc *e, const char *key, int kn, const char *v)
{
    if (kn > 0 && v)
        a_str(e, key, (size_t)kn, v, strlen(v));
}

/* A JSON value as an attribute: strings as they are, anything else as its JSON. */
static void oi_json(struct enc *e, const char *key, int kn, const cJSON *v)
{
    if (!v || kn <= 0)
        return;
    if (cJSON_IsString(v)) {
        oi_str(e, key, kn, v->valuestring);
        return;
    }
    char *j = cJSON_PrintUnformatted(v);
    if (j) {
        a_str(e, key, (size_t)kn, j, strlen(j));
        cJSON_free(j);
    }
}

/* One gen_ai message ({"role","parts":[...],"name"}) as message.*: a lone
 * text (or tool result) as message.content, several as message.contents,
 * tool calls as message.tool_calls, a tool result's id as
 * message.tool_call_id. */
static void oi_message(struct enc *e, const char *pre, unsigned i, const cJSON *m)
{
    char k[160];
    int kn;
    kn = snprintf(k, sizeof k, "%s.%u.message.role", pre, i);
    oi_str(e, k, kn, cbus_json_str(m, "role", NULL));
    kn = snprintf(k, sizeof k, "%s.%u.message.name", pre, i);
    oi_str(e, k, kn, cbus_json_str(m, "name", NULL));
    const cJSON *parts = cJSON_GetObjectItemCaseSensitive(m, "parts"), *pt;
    unsigned texts = 0;
    cJSON_ArrayForEach(pt, parts) {
        const char *t = cbus_json_str(pt, "type", NULL);
        if (t && (!strcmp(t, "text") || !strcmp(t, "reasoning") || !strcmp(t, "tool_call_response")))
            texts++;
    }
    unsigned c = 0, tc = 0;
    cJSON_ArrayForEach(pt, parts) {
        const char *t = cbus_json_str(pt, "type", NULL);
        if (!t)
            continue;
        if (!strcmp(t, "tool_call")) {
            kn = snprintf(k, sizeof k, "%s.%u.message.tool_calls.%u.tool_call.id", pre, i, tc);
            oi_str(e, k, kn, cbus_json_str(pt, "id", NULL));
            kn = snprintf(k, sizeof k, "%s.%u.message.tool_calls.%u.tool_call.function.name", pre, i, tc);
            oi_str(e, k, kn, cbus_json_str(pt, "name", NULL));
            kn = snprintf(k, sizeof k, "%s.%u.message.tool_calls.%u.tool_call.function.arguments", pre, i, tc);
            oi_json(e, k, kn, cJSON_GetObjectItemCaseSensitive(pt, "arguments"));
            tc++;
            continue;
        }
        int resp = !strcmp(t, "tool_call_response");
        if (!resp && strcmp(t, "text") && strcmp(t, "reasoning"))
            continue; /* blobs, files, URIs: not text Phoenix can show */
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(pt, resp ? "response" : "content");
        if (resp) {
            kn = snprintf(k, sizeof k, "%s.%u.message.tool_call_id", pre, i);
            oi_str(e, k, kn, cbus_json_str(pt, "id", NULL));
        }
        if (texts == 1 && strcmp(t, "reasoning")) {
            kn = snprintf(k, sizeof k, "%s.%u.message.content", pre, i);
            oi_json(e, k, kn, v);
            continue;
        }
        kn = snprintf(k, sizeof k, "%s.%u.message.contents.%u.message_content.type", pre, i, c);
        oi_str(e, k, kn, !strcmp(t, "reasoning") ? "reasoning" : "text");
        kn = snprintf(k, sizeof k, "%s.%u.message.contents.%u.message_content.text", pre, i, c);
        oi_json(e, k, kn, v);
        c++;
    }
}

/* llm.input_messages / llm.output_messages from a message list (JSON
 * text).  Returns 1 when built, 0 when j is not a whole list; *more: some
 * entries were left out (OI_MAX). */
static int oi_messages(struct enc *e, const char *pre, const char *j, size_t n, int *more)
{
    cJSON *arr = oi_parse(j, n), *m;
    if (!arr)
        return 0;
    unsigned i = 0;
    cJSON_ArrayForEach(m, arr) {
        if (!cJSON_IsObject(m))
            continue;
        if (i == OI_MAX) {
            *more = 1;
            break;
        }
        oi_message(e, pre, i++, m);
    }
    cJSON_Delete(arr);
    return 1;
}

/* One message of one text part: a prompt, an output text. */
static void oi_text_message(struct enc *e, const char *pre, const char *role, const struct ctext *t)
{
    char k[160];
    int kn = snprintf(k, sizeof k, "%s.0.message.role", pre);
    a_str(e, k, (size_t)kn, role, strlen(role));
    kn = snprintf(k, sizeof k, "%s.0.message.content", pre);
    a_str(e, k, (size_t)kn, t->p, t->n);
}

/* retrieval.documents.N.document.{id,content,metadata,score} from the
 * documents the producer sent ([{"id","content","metadata","score"}], as
 * the LangChain handlers send Documents). */
static int oi_documents(struct enc *e, const char *j, size_t n, int *more)
{
    cJSON *arr = oi_parse(j, n), *d;
    if (!arr)
        return 0;
    unsigned i = 0;
    char k[128];
    int kn;
    cJSON_ArrayForEach(d, arr) {
        if (!cJSON_IsObject(d))
            continue;
        if (i == OI_MAX) {
            *more = 1;
            break;
        }
        kn = snprintf(k, sizeof k, "retrieval.documents.%u.document.id", i);
        oi_json(e, k, kn, cJSON_GetObjectItemCaseSensitive(d, "id"));
        kn = snprintf(k, sizeof k, "retrieval.documents.%u.document.content", i);
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(d, "content");
        oi_json(e, k, kn, c ? c : cJSON_GetObjectItemCaseSensitive(d, "page_content"));
        const cJSON *md = cJSON_GetObjectItemCaseSensitive(d, "metadata");
        if (md && !cJSON_IsNull(md)) {
            kn = snprintf(k, sizeof k, "retrieval.documents.%u.document.metadata", i);
            oi_json(e, k, kn, md);
        }
        const cJSON *sc = cJSON_GetObjectItemCaseSensitive(d, "score");
        if (cJSON_IsNumber(sc) && isfinite(sc->valuedouble)) {
            kn = snprintf(k, sizeof k, "retrieval.documents.%u.document.score", i);
            a_double(e, k, (size_t)kn, sc->valuedouble);
        }
        i++;
    }
    cJSON_Delete(arr);
    return 1;
}

/* A run's texts, read once from its bodies for content_attrs. */
struct run_texts {
    struct ctext in, out, sys;
    int hin, hout, hsys; /* which of them the bodies held */
};

/* The attributes a run's input and output go under: the profile's, else
 * the conventions' for the operation.  Returns 1 for message lists. */
static int content_keys(const char *op, const struct otlp_opts *o, const char **ki, const char **ko)
{
    if (o->langfuse) {
        *ki = "langfuse.observation.input";
        *ko = "langfuse.observation.output";
    } else if (o->phoenix) {
        *ki = "input.value";
        *ko = "output.value";
    } else if (op && !strcmp(op, "execute_tool")) {
        *ki = "gen_ai.tool.call.arguments";
        *ko = "gen_ai.tool.call.result";
    } else if (op && !strcmp(op, "retrieval")) {
        *ki = "gen_ai.retrieval.query.text";
        *ko = "gen_ai.retrieval.documents";
    } else {
        /* LLM calls, agents and workflows: message lists */
        *ki = "gen_ai.input.messages";
        *ko = "gen_ai.output.messages";
        return 1;
    }
    return 0;
}

/* The phoenix profile's OpenInference content: an LLM call's messages
 * flattened (instructions first), a retriever's documents, and how to show
 * input and output (JSON as JSON, else as text). */
static void phoenix_content(struct enc *e, const char *op, struct run_texts *t, struct cutlist *cl)
{
    if (op && (!strcmp(op, "chat") || !strcmp(op, "text_completion"))) {
        int more = 0, hsys = t->hsys;
        if (hsys) {
            input_with_system(&scratch2, &t->sys, &t->in, t->hin);
            if (!scratch2.failed && !oi_messages(e, "llm.input_messages", scratch2.data, scratch2.len, &more))
                hsys = 0;
        }
        if (!hsys && t->hin && !(t->in.messages && oi_messages(e, "llm.input_messages", t->in.p, t->in.n, &more)) &&
            !t->in.messages)
            oi_text_message(e, "llm.input_messages", "user", &t->in);
        if (more)
            note_cut(cl, "llm.input_messages");
        more = 0;
        if (t->hout &&
            !(t->out.messages && oi_messages(e, "llm.output_messages", t->out.p, t->out.n, &more)) &&
            !t->out.messages)
            oi_text_message(e, "llm.output_messages", "assistant", &t->out);
        if (more)
            note_cut(cl, "llm.output_messages");
    } else if (t->hout && op && !strcmp(op, "retrieval")) {
        int more = 0;
        oi_documents(e, t->out.p, t->out.n, &more);
        if (more)
            note_cut(cl, "retrieval.documents");
    }
    if (t->hin) {
        int j = content_json_valid(t->in.p, t->in.n, NULL);
        A_STR(e, "input.mime_type", j ? "application/json" : "text/plain", j ? 16 : 10);
    }
    if (t->hout) {
        int j = content_json_valid(t->out.p, t->out.n, NULL);
        A_STR(e, "output.mime_type", j ? "application/json" : "text/plain", j ? 16 : 10);
    }
}

/* cbus.content.cut: the attributes cut to the cap, as a string array. */
static void put_cut_list(struct enc *e, const struct cutlist *cl)
{
    if (e->pb) {
        size_t arr = 0;
        for (unsigned i = 0; i < cl->n; i++) {
            size_t c = strlen(cl->key[i]), inner = 1 + vlen(c) + c;
            arr += 1 + vlen(inner) + inner;
        }
        pb_kv_head(e, "cbus.content.cut", 16, 1 + vlen(arr) + arr);
        pb_byte(e->b, PB_LEN(5));
        pb_varint(e->b, arr);
        for (unsigned i = 0; i < cl->n; i++) {
            size_t c = strlen(cl->key[i]);
            pb_byte(e->b, PB_LEN(1));
            pb_varint(e->b, 1 + vlen(c) + c);
            pb_bytes(e->b, PB_LEN(1), cl->key[i], c);
        }
        return;
    }
    put_key(e, "cbus.content.cut", 16);
    LIT(e->b, "\"arrayValue\":{\"values\":[");
    for (unsigned i = 0; i < cl->n; i++) {
        if (i)
            LIT(e->b, ",");
        LIT(e->b, "{\"stringValue\":\"");
        put(e->b, cl->key[i], strlen(cl->key[i]));
        LIT(e->b, "\"}");
    }
    LIT(e->b, "]}}}");
}

/* The run's input and output (capture_content): under the conventions'
 * names by default, as langfuse.observation.input/output under the
 * Langfuse profile (which reads those first: no need to send both). */
static void content_attrs(struct enc *e, const struct span *s, const char *op, const struct otlp_opts *o)
{
    if (s->end_kind == SPAN_POINT)
        return; /* a point's text is its cbus.preview; points have no input and output */
    size_t cap = o->content_max ? o->content_max : 16384;
    const struct cbus_event *st = &s->start;
    const struct cbus_event *en = s->end_kind == SPAN_ENDED || s->end_kind == SPAN_START_MISSING ? &s->end : NULL;
    struct run_texts t;
    t.hin = s->end_kind != SPAN_START_MISSING && event_text(s->start_body, s->start_body_len, st, cap, &t.in);
    t.hout = en && !is_error_kind(en->kind) && event_text(s->end_body, s->end_body_len, en, cap, &t.out);
    t.hsys = system_text(s, cap, &t.sys);
    struct cutlist cl = {{0}, 0};
    const char *ki, *ko;
    int msgs = content_keys(op, o, &ki, &ko);
    if (t.hsys && o->langfuse) {
        /* Langfuse shows one input: the instructions go first in it */
        input_with_system(&scratch2, &t.sys, &t.in, t.hin);
        if (!scratch2.failed)
            a_str(e, ki, strlen(ki), scratch2.data, scratch2.len);
        if (t.sys.cut || (t.hin && t.in.cut))
            note_cut(&cl, ki);
    } else if (t.hin) {
        content_one(e, ki, &t.in, msgs, "user", NULL, &cl);
    }
    if (t.hsys && !o->langfuse && !o->phoenix) {
        /* the conventions' own attribute, apart from the history */
        sbuf_reset(&scratch);
        system_parts(&scratch, &t.sys);
        if (!scratch.failed)
            a_str(e, "gen_ai.system_instructions", 26, scratch.data, scratch.len);
        if (t.sys.cut)
            note_cut(&cl, "gen_ai.system_instructions");
    }
    if (t.hout)
        content_one(e, ko, &t.out, msgs, "assistant", en ? otel_finish(en) : NULL, &cl);
    if (o->phoenix)
        phoenix_content(e, op, &t, &cl);
    if (cl.n)
        put_cut_list(e, &cl);
    if (s->body_dropped)
        A_BOOL(e, "cbus.content.dropped", 1);
}

/* OpenInference's LLM attributes (the phoenix profile): the model, the
 * provider and the token counts Phoenix shows and sums.  prompt is the
 * whole input (cache included) and completion the whole output (reasoning
 * included), as OpenInference counts them, the same as gen_ai.usage.*. */
static void phoenix_llm(struct enc *e, const struct cbus_event *st, const struct cbus_event *en)
{
    const struct cbus_usage *u = &en->u.usage;
    if (FLEN(en->model))
        A_FIELD(e, "llm.model_name", en->model);
    else
        A_FIELD(e, "llm.model_name", st->model);
    A_FIELD(e, "llm.provider", st->provider);
    unsigned pr = u->usage_present;
    if (pr & CBUS_USAGE_INPUT)
        A_INT(e, "llm.token_count.prompt", u->input_tokens);
    if (pr & CBUS_USAGE_OUTPUT)
        A_INT(e, "llm.token_count.completion", u->output_tokens);
    if ((pr & CBUS_USAGE_INPUT) && (pr & CBUS_USAGE_OUTPUT))
        A_INT(e, "llm.token_count.total", (uint64_t)u->input_tokens + u->output_tokens);
    if (pr & CBUS_USAGE_CACHE_READ)
        A_INT(e, "llm.token_count.prompt_details.cache_read", u->cache_read_tokens);
    if (pr & CBUS_USAGE_CACHE_CREATION)
        A_INT(e, "llm.token_count.prompt_details.cache_write", u->cache_creation_tokens);
    if (pr & CBUS_USAGE_REASONING)
        A_INT(e, "llm.token_count.completion_details.reasoning", u->reasoning_tokens);
}

/* gen_ai.usage.cost in USD, priced as cbus-cost prices the same end event
 * (its provider and model, the same table, cost_usage_price()), so the two
 * always agree; with the Langfuse profile also langfuse.observation.cost_details,
 * the same total by token kind.  An unpriced model gets neither. */
static void cost_attrs(struct enc *e, const struct cbus_event *en, const struct otlp_opts *o)
{
    char provider[CBUS_PROVIDER_LEN + 1], model[CBUS_MODEL_LEN + 1];
    size_t pl = FLEN(en->provider), ml = FLEN(en->model);
    memcpy(provider, en->provider, pl);
    provider[pl] = '\0';
    memcpy(model, en->model, ml);
    model[ml] = '\0';
    const char *why;
    const struct cost_price *p = cost_prices_lookup(o->prices, provider, model, &why);
    if (!p || !(en->u.usage.usage_present & (CBUS_USAGE_INPUT | CBUS_USAGE_OUTPUT | CBUS_USAGE_CACHE_READ |
                                              CBUS_USAGE_CACHE_CREATION | CBUS_USAGE_REASONING)))
        return;
    cost_u128 parts[COST_PART__COUNT];
    cost_u128 total = cost_usage_price(p, &en->u.usage, parts, NULL);
    a_double(e, "gen_ai.usage.cost", sizeof "gen_ai.usage.cost" - 1, cost_pico_to_usd(total));
    if (o->phoenix) {
        cost_u128 prompt = parts[COST_PART_INPUT] + parts[COST_PART_CACHE_READ] + parts[COST_PART_CACHE_CREATION];
        a_double(e, "llm.cost.prompt", sizeof "llm.cost.prompt" - 1, cost_pico_to_usd(prompt));
        a_double(e, "llm.cost.completion", sizeof "llm.cost.completion" - 1, cost_pico_to_usd(total - prompt));
        a_double(e, "llm.cost.total", sizeof "llm.cost.total" - 1, cost_pico_to_usd(total));
    }
    if (!o->langfuse)
        return;
    /* {"input":..,"input_cache_read":..,...,"total":..}: Langfuse's cost
     * details are USD by cost kind, "total" their sum; exact decimals */
    static const char *const names[COST_PART__COUNT] = {
        [COST_PART_INPUT] = "input",
        [COST_PART_CACHE_READ] = "input_cache_read",
        [COST_PART_CACHE_CREATION] = "input_cache_creation",
        [COST_PART_OUTPUT] = "output",
        [COST_PART_REASONING] = "output_reasoning",
    };
    static const unsigned bits[COST_PART__COUNT] = {
        [COST_PART_INPUT] = CBUS_USAGE_INPUT,
        [COST_PART_CACHE_READ] = CBUS_USAGE_CACHE_READ,
        [COST_PART_CACHE_CREATION] = CBUS_USAGE_CACHE_CREATION,
        [COST_PART_OUTPUT] = CBUS_USAGE_OUTPUT,
        [COST_PART_REASONING] = CBUS_USAGE_REASONING,
    };
    char json[512], usd[64];
    size_t n = 0;
    json[n++] = '{';
    for (unsigned i = 0; i < COST_PART__COUNT; i++) {
        if (!(en->u.usage.usage_present & bits[i]))
            continue;
        size_t k = cost_pico_format_usd(usd, sizeof usd, parts[i]);
        n += (size_t)snprintf(json + n, sizeof json - n, "\"%s\":%.*s,", names[i], (int)k, usd);
    }
    size_t k = cost_pico_format_usd(usd, sizeof usd, total);
    n += (size_t)snprintf(json + n, sizeof json - n, "\"total\":%.*s}", (int)k, usd);
    if (n < sizeof json)
        a_str(e, "langfuse.observation.cost_details", sizeof "langfuse.observation.cost_details" - 1, json, n);
}

/* The text a point event carried (capture_content): a score's comment as
 * gen_ai.evaluation.explanation, an agent action's tool input as
 * gen_ai.tool.call.arguments, a custom event's data as cbus.custom.data,
 * any other point's text as cbus.text.  A score's comment is only ever in
 * its body (its preview is the category); the others fall back to the
 * preview, the whole text when it fit.  A cut text sets cbus.content.cut
 * on the event. */
static void point_content(struct enc *e, const struct cbus_event *ev, const void *body, uint32_t blen,
                          const struct otlp_opts *o)
{
    size_t cap = o->content_max ? o->content_max : 16384;
    struct ctext t;
    if (ev->kind == CBUS_EV_SCORE) {
        struct cbus_body b = {body, blen};
        struct cbus_body_parts parts;
        if (!body || !cbus_body_parts_of(&b, &parts) || !parts.part[CBUS_BODY_TEXT].data)
            return;
    }
    if (!event_text(body, blen, ev, cap, &t))
        return;
    const char *key = ev->kind == CBUS_EV_SCORE          ? "gen_ai.evaluation.explanation"
                      : ev->kind == CBUS_EV_AGENT_ACTION ? "gen_ai.tool.call.arguments"
                      : ev->kind == CBUS_EV_CUSTOM       ? "cbus.custom.data"
                                                         : "cbus.text";
    a_str(e, key, strlen(key), t.p, t.n);
    if (t.cut) {
        struct cbus_body_part one = {key, (uint32_t)strlen(key), 0, 0, 0};
        a_str_list(e, "cbus.content.cut", 16, &one);
    }
}

/* Span.Event {time_unix_nano = 1, name = 2, attributes = 3}. */
static void put_point_event(struct enc *e, const struct cbus_event *ev, const struct span_body *eb,
                            int first, const struct otlp_opts *o)
{
    struct sbuf *b = e->b;
    const char *kn = ev->kind == CBUS_EV_SCORE ? "gen_ai.evaluation.result" : run_kind(ev->kind);
    size_t at = 0;
    if (e->pb) {
        at = pb_open(b, PB_LEN(11)); /* Span.events = 11 */
        pb_fixed64(b, PB_FIXED64(1), ev->ts_realtime_ns);
        pb_str(b, PB_LEN(2), kn, strlen(kn));
        e->attr_tag = PB_LEN(3);
    } else {
        if (!first)
            LIT(b, ",");
        put_time(b, "{\"timeUnixNano\":\"", 17, ev->ts_realtime_ns);
        LIT(b, ",\"name\":");
        sbuf_json_str(b, kn, strlen(kn));
        LIT(b, ",\"attributes\":[");
        e->first = 1;
    }
    A_INT(e, "cbus.event.id", ev->event_id);
    switch (ev->kind) {
    case CBUS_EV_AGENT_ACTION:
        A_FIELD(e, "gen_ai.tool.name", ev->name);
        break;
    case CBUS_EV_RETRY:
        A_INT(e, "cbus.retry.attempt", ev->u.retry.attempt);
        A_INT(e, "cbus.retry.backoff_ns", ev->u.retry.backoff_ns);
        break;
    case CBUS_EV_CUSTOM:
        A_FIELD(e, "cbus.custom.name", ev->name);
        break;
    case CBUS_EV_SCORE:
        score_attrs(e, ev);
        break;
    default:
        A_FIELD(e, "cbus.name", ev->name);
        break;
    }
    if (o->include_previews && ev->kind != CBUS_EV_SCORE)
        A_FIELD(e, "cbus.preview", ev->preview);
    if (o->capture_content)
        point_content(e, ev, eb ? eb->p : NULL, eb ? eb->len : 0, o);
    if (e->pb) {
        pb_close(b, at);
        e->attr_tag = PB_LEN(9);
    } else {
        LIT(b, "]}");
    }
}

/* Every gen_ai.operation.name a span gets (otlp_span), and what the
 * profiles call it: Langfuse's observation type, OpenInference's span kind
 * (what Phoenix's views are built on). */
static const struct span_op {
    const char *op, *langfuse, *phoenix;
} span_ops[] = {
    {"chat", "generation", "LLM"},          {"text_completion", "generation", "LLM"},
    {"execute_tool", "tool", "TOOL"},       {"retrieval", "retriever", "RETRIEVER"},
    {"invoke_agent", "agent", "AGENT"},     {"invoke_workflow", "chain", "CHAIN"},
};

/* op's row, or NULL (no operation, or one without a row) */
static const struct span_op *span_op_of(const char *op)
{
    for (size_t i = 0; op && i < sizeof span_ops / sizeof span_ops[0]; i++)
        if (!strcmp(op, span_ops[i].op))
            return &span_ops[i];
    return NULL;
}

/* The span's start and end times.  An ended span's length is the monotonic
 * difference, immune to a realtime step between its events. */
static void span_times(const struct span *s, const struct cbus_event *en, uint64_t *t0, uint64_t *t1)
{
    const struct cbus_event *st = &s->start;
    *t0 = *t1 = st->ts_realtime_ns;
    if (s->end_kind == SPAN_ENDED) {
        *t1 = en->ts_mono_ns >= st->ts_mono_ns ? *t0 + (en->ts_mono_ns - st->ts_mono_ns)
                                               : en->ts_realtime_ns;
    } else if (s->end_kind == SPAN_START_MISSING) {
        *t1 = en->ts_realtime_ns;
        uint64_t d = end_duration(en);
        *t0 = d && d < *t1 ? *t1 - d : *t1;
    } else if (s->end_kind == SPAN_UNFINISHED) {
        *t1 = s->unfinished_end_ns;
    }
}

/* The span's gen_ai.operation.name (NULL: none) and its SpanKind. */
static const char *span_operation(const struct span *s, int *kind)
{
    unsigned k = s->start.kind;
    *kind = KIND_INTERNAL;
    if (k == CBUS_EV_CHAT_MODEL_START) {
        *kind = KIND_CLIENT;
        return "chat";
    }
    if (k == CBUS_EV_LLM_START || (s->end_kind == SPAN_START_MISSING && is_llm(k))) {
        *kind = KIND_CLIENT;
        return s->end_kind == SPAN_START_MISSING ? "chat" : "text_completion";
    }
    if (cbus_kind_family(k) == CBUS_FAMILY_TOOL)
        return "execute_tool";
    if (cbus_kind_phase(k) != CBUS_PHASE_POINT && cbus_kind_family(k) == CBUS_FAMILY_RETRIEVER) {
        /* GenAI conventions: "retrieval {gen_ai.data_source.id}", CLIENT */
        *kind = KIND_CLIENT;
        return "retrieval";
    }
    if (s->is_agent)
        return "invoke_agent";
    if (cbus_kind_phase(k) != CBUS_PHASE_POINT && cbus_kind_family(k) == CBUS_FAMILY_CHAIN)
        /* a chain that showed no agent events: "invoke_workflow {gen_ai.workflow.name}" */
        return "invoke_workflow";
    return NULL;
}

/* Opens the span and writes everything before its attributes; returns the
 * protobuf length slot to close (0 in JSON). */
static size_t span_open(struct enc *e, const struct span *s, const char *op, int kind, uint64_t t0,
                        uint64_t t1, int first)
{
    struct sbuf *b = e->b;
    if (e->pb) {
        /* ScopeSpans.spans = 2: Span {trace_id = 1, span_id = 2,
         * parent_span_id = 4, name = 5, kind = 6, start_time_unix_nano = 7,
         * end_time_unix_nano = 8, attributes = 9, events = 11,
         * dropped_events_count = 12, status = 15} */
        size_t span_at = pb_open(b, PB_LEN(2));
        pb_bytes(b, PB_LEN(1), s->trace_id, 16);
        pb_bytes(b, PB_LEN(2), s->span_id, 8);
        if (s->has_parent)
            pb_bytes(b, PB_LEN(4), s->parent_span_id, 8);
        put_name(e, s, op);
        uint8_t kt[2] = {PB_VARINT(6), (uint8_t)kind};
        put(b, kt, 2);
        pb_fixed64(b, PB_FIXED64(7), t0);
        pb_fixed64(b, PB_FIXED64(8), t1);
        return span_at;
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
    put_name(e, s, op);
    if (kind == KIND_CLIENT)
        LIT(b, ",\"kind\":3");
    else
        LIT(b, ",\"kind\":1");
    put_time(b, ",\"startTimeUnixNano\":\"", 22, t0);
    put_time(b, ",\"endTimeUnixNano\":\"", 20, t1);
    LIT(b, ",\"attributes\":[");
    return 0;
}

/* What every span says about the run: its ids, who and where it ran for,
 * and the profiles' names for its operation. */
static void identity_attrs(struct enc *e, const struct span *s, const struct cbus_event *en,
                           const char *op, const struct otlp_opts *o)
{
    const struct cbus_event *st = &s->start;
    const char *rk = run_kind(st->kind);
    A_STR(e, "cbus.run.kind", rk, strlen(rk));
    if (op)
        A_STR(e, "gen_ai.operation.name", op, strlen(op));
    char uuid[36];
    uuid_text(uuid, st->run_id);
    A_STR(e, "cbus.run.id", uuid, 36);
    A_INT(e, "cbus.event.id", st->event_id);
    if (en && s->end_kind == SPAN_ENDED)
        A_INT(e, "cbus.end_event.id", en->event_id);
    A_FIELD(e, "gen_ai.provider.name", st->provider);
    A_FIELD(e, "user.id", st->user);
    if (FLEN(st->session)) {
        A_FIELD(e, "session.id", st->session);
        A_FIELD(e, "gen_ai.conversation.id", st->session);
    }
    /* events v2: the agent a call ran under (an agent's own span names it
     * from its name below) and the tenant, which no convention names */
    if (FLEN(st->agent) && !s->is_agent)
        A_FIELD(e, "gen_ai.agent.name", st->agent);
    A_FIELD(e, "cbus.tenant", st->tenant);
    if (o->langfuse) {
        /* Set on every span rather than left to Langfuse's inference from
         * gen_ai.operation.name, which does not map retrieval or
         * invoke_workflow (they would show as plain spans). */
        const struct span_op *so = span_op_of(op);
        const char *lt = s->end_kind == SPAN_POINT ? "event" : so ? so->langfuse : "span";
        A_STR(e, "langfuse.observation.type", lt, strlen(lt));
        A_FIELD(e, "langfuse.user.id", st->user);
        A_FIELD(e, "langfuse.session.id", st->session);
    }
    if (o->phoenix) {
        /* OpenInference's span kinds: what Phoenix's views are built on */
        const struct span_op *so = span_op_of(op);
        const char *pk = s->end_kind != SPAN_POINT && so ? so->phoenix : "CHAIN";
        A_STR(e, "openinference.span.kind", pk, strlen(pk));
    }
    A_FIELD(e, "cbus.request.id", st->request_id);
    A_INT(e, "cbus.producer.pid", st->pid);
    A_INT(e, "thread.id", st->tid);
}

/* An LLM call's request, usage, cost and streaming. */
static void llm_attrs(struct enc *e, const struct span *s, const struct cbus_event *en,
                      const struct otlp_opts *o)
{
    const struct cbus_event *st = &s->start;
    A_FIELD(e, "gen_ai.request.model", st->model);
    if (s->end_kind == SPAN_ENDED && st->u.llm_start.max_tokens)
        A_INT(e, "gen_ai.request.max_tokens", st->u.llm_start.max_tokens);
    if (en && cbus_kind_payload(en->kind) == CBUS_PAYLOAD_USAGE) {
        const struct cbus_usage *u = &en->u.usage;
        A_FIELD(e, "gen_ai.response.model", en->model);
        if (u->usage_present & CBUS_USAGE_INPUT)
            A_INT(e, "gen_ai.usage.input_tokens", u->input_tokens);
        if (u->usage_present & CBUS_USAGE_OUTPUT)
            A_INT(e, "gen_ai.usage.output_tokens", u->output_tokens);
        if (u->usage_present & CBUS_USAGE_CACHE_READ)
            A_INT(e, "gen_ai.usage.cache_read.input_tokens", u->cache_read_tokens);
        if (u->usage_present & CBUS_USAGE_CACHE_CREATION)
            A_INT(e, "gen_ai.usage.cache_creation.input_tokens", u->cache_creation_tokens);
        if (u->usage_present & CBUS_USAGE_REASONING)
            A_INT(e, "gen_ai.usage.reasoning.output_tokens", u->reasoning_tokens);
        if (o->phoenix)
            phoenix_llm(e, st, en);
        const char *fr = u->finish_reason ? cbus_finish_reason_name(u->finish_reason) : NULL;
        if (fr)
            a_str_array1(e, "gen_ai.response.finish_reasons", sizeof "gen_ai.response.finish_reasons" - 1, fr);
        if (o->prices)
            cost_attrs(e, en, o);
        if (u->usage_present & CBUS_USAGE_TTFT)
            A_SECONDS(e, "gen_ai.response.time_to_first_chunk", u->ttft_ns);
        else if (s->chunks && s->first_chunk_mono_ns >= st->ts_mono_ns && s->end_kind == SPAN_ENDED)
            A_SECONDS(e, "gen_ai.response.time_to_first_chunk", s->first_chunk_mono_ns - st->ts_mono_ns);
    } else if (s->chunks && s->first_chunk_mono_ns >= st->ts_mono_ns) {
        A_SECONDS(e, "gen_ai.response.time_to_first_chunk", s->first_chunk_mono_ns - st->ts_mono_ns);
    }
    if (s->chunks) {
        A_INT(e, "cbus.stream.chunks", s->chunks);
        /* streamed tokens arrived: it was a streaming call (without
         * them the exporter does not know, and says nothing) */
        A_BOOL(e, "gen_ai.request.stream", 1);
    }
}

/* What the run was: the model call, or the tool, data source, agent or
 * workflow it names. */
static void what_attrs(struct enc *e, const struct span *s, const struct cbus_event *en, const char *op,
                       const struct otlp_opts *o)
{
    const struct cbus_event *st = &s->start;
    if (is_llm(st->kind)) {
        llm_attrs(e, s, en, o);
    } else if (op && !strcmp(op, "execute_tool")) {
        A_FIELD(e, "gen_ai.tool.name", st->name);
        if (o->phoenix)
            A_FIELD(e, "tool.name", st->name);
    } else if (op && !strcmp(op, "retrieval")) {
        A_FIELD(e, "gen_ai.data_source.id", st->name);
    } else if (s->is_agent) {
        A_FIELD(e, "gen_ai.agent.name", st->name);
    } else if (op) {
        A_FIELD(e, "gen_ai.workflow.name", st->name);
    } else if (st->kind == CBUS_EV_SCORE) {
        score_attrs(e, st);
    } else {
        A_FIELD(e, "cbus.name", st->name);
    }
}

/* How the run ended, its previews, labels and (capture_content) content. */
static void outcome_attrs(struct enc *e, const struct span *s, const struct cbus_event *en, const char *op,
                          const struct otlp_opts *o)
{
    const struct cbus_event *st = &s->start;
    if (en && cbus_kind_payload(en->kind) == CBUS_PAYLOAD_RETRIEVER)
        A_INT(e, "cbus.retriever.document_count", en->u.retriever.document_count);
    if (en && is_error_kind(en->kind)) {
        size_t tl = FLEN(en->name);
        A_STR(e, "error.type", tl ? en->name : "_OTHER", tl ? tl : 6);
        if (en->u.error.http_status > 0)
            A_INT(e, "http.response.status_code", (uint64_t)en->u.error.http_status);
    }
    if (s->end_kind == SPAN_UNFINISHED)
        A_BOOL(e, "cbus.run.unfinished", 1);
    else if (s->end_kind == SPAN_START_MISSING)
        A_BOOL(e, "cbus.run.start_missing", 1);
    if (o->include_previews) {
        if (s->end_kind == SPAN_POINT)
            A_FIELD(e, "cbus.preview", st->preview);
        else if (s->end_kind != SPAN_START_MISSING)
            A_FIELD(e, "cbus.input.preview", st->preview);
        if (en && !is_error_kind(en->kind))
            A_FIELD(e, "cbus.output.preview", en->preview);
    }
    /* the end's response id (not content: an id), whenever bodies are read */
    const char *rid = NULL;
    size_t ridn = en && en->kind == CBUS_EV_LLM_END ? response_id(s, &rid) : 0;
    if (ridn)
        A_STR(e, "gen_ai.response.id", rid, ridn);
    if (s->start_body && s->end_kind != SPAN_START_MISSING) {
        struct cbus_body sb = {s->start_body, s->start_body_len};
        struct cbus_body_parts sp;
        if (cbus_body_parts_of(&sb, &sp))
            label_attrs(e, s, &sp, o, ridn > 0);
    }
    if (o->capture_content && s->end_kind == SPAN_POINT)
        point_content(e, st, s->start_body, s->start_body_len, o);
    else if (o->capture_content)
        content_attrs(e, s, op, o);
    if ((st->flags | (en ? en->flags : 0)) & (0x7f | CBUS_TRUNC_AGENT | CBUS_TRUNC_TENANT))
        A_BOOL(e, "cbus.truncated", 1);
}

/* The point events folded into the span, and how many did not fit. */
static void span_events(struct enc *e, const struct span *s, const struct otlp_opts *o)
{
    struct sbuf *b = e->b;
    if (s->n_events) {
        if (!e->pb)
            LIT(b, ",\"events\":[");
        for (uint32_t i = 0; i < s->n_events; i++)
            put_point_event(e, &s->events[i], s->event_body ? &s->event_body[i] : NULL, i == 0, o);
        if (!e->pb)
            LIT(b, "]");
    }
    if (s->events_dropped) {
        if (e->pb) {
            pb_byte(b, PB_VARINT(12));
            pb_varint(b, s->events_dropped);
        } else {
            LIT(b, ",\"droppedEventsCount\":");
            put_u64(b, s->events_dropped);
        }
    }
}

/* Status {message = 2, code = 3}, then the span's close. */
static void span_status_close(struct enc *e, const struct span *s, const struct cbus_event *en,
                              const struct otlp_opts *o, size_t span_at)
{
    struct sbuf *b = e->b;
    int code = en && is_error_kind(en->kind) ? 2 : en ? 1 : 0;
    const char *msg = code == 2 ? en->preview : NULL;
    size_t ml = code == 2 ? FLEN(en->preview) : 0;
    struct ctext et;
    if (code == 2 && o->capture_content &&
        event_text(s->end_body, s->end_body_len, en, o->content_max ? o->content_max : 16384, &et)) {
        /* the whole message (and stack) the error event carried */
        msg = et.p;
        ml = et.n;
    }
    if (e->pb) {
        /* always there, as in JSON (an empty Status for UNSET) */
        size_t at = pb_open(b, PB_LEN(15));
        if (ml)
            pb_str(b, PB_LEN(2), msg, ml);
        if (code) {
            uint8_t ct[2] = {PB_VARINT(3), (uint8_t)code};
            put(b, ct, 2);
        }
        pb_close(b, at);
        pb_close(b, span_at);
    } else if (code == 2) {
        LIT(b, ",\"status\":{\"code\":2");
        if (ml) {
            LIT(b, ",\"message\":");
            sbuf_json_str(b, msg, ml);
        }
        LIT(b, "}}");
    } else if (code == 1) {
        LIT(b, ",\"status\":{\"code\":1}}");
    } else {
        LIT(b, ",\"status\":{\"code\":0}}");
    }
}

void otlp_span(struct sbuf *b, const struct span *s, int first, const struct otlp_opts *o)
{
    const struct cbus_event *en = (s->end_kind == SPAN_ENDED || s->end_kind == SPAN_START_MISSING)
                                      ? &s->end
                                      : NULL;
    uint64_t t0, t1;
    span_times(s, en, &t0, &t1);
    int kind;
    const char *op = span_operation(s, &kind);

    struct enc e = {.b = b, .pb = o->encoding == OTLP_PROTOBUF, .attr_tag = PB_LEN(9), .first = 1};
    size_t span_at = span_open(&e, s, op, kind, t0, t1, first);
    identity_attrs(&e, s, en, op, o);
    what_attrs(&e, s, en, op, o);
    outcome_attrs(&e, s, en, op, o);
    if (!e.pb)
        LIT(b, "]");
    span_events(&e, s, o);
    span_status_close(&e, s, en, o, span_at);
    terminate(b);
}
