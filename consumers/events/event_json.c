#include "event_json.h"

#include "event_body.h"

#include <cbus/cbus.h>

#include <inttypes.h>
#include <math.h>
#include <string.h>

static void key(struct sbuf *b, const char *k)
{
    sbuf_printf(b, ",\"%s\":", k);
}

static void key_u64(struct sbuf *b, const char *k, uint64_t v)
{
    sbuf_printf(b, ",\"%s\":%" PRIu64, k, v);
}

static void key_u64_nonzero(struct sbuf *b, const char *k, uint64_t v)
{
    if (v)
        key_u64(b, k, v);
}

/* A bounded string field, only when non-empty. */
static void key_field(struct sbuf *b, const char *k, const char *field, size_t size)
{
    size_t n = strnlen(field, size);
    if (!n)
        return;
    key(b, k);
    sbuf_json_str(b, field, n);
}

static void truncated(struct sbuf *b, unsigned flags)
{
    static const struct {
        unsigned bit;
        const char *name;
    } names[] = {
        {CBUS_TRUNC_PROVIDER, "provider"}, {CBUS_TRUNC_MODEL, "model"},
        {CBUS_TRUNC_USER, "user"},         {CBUS_TRUNC_SESSION, "session"},
        {CBUS_TRUNC_REQUEST, "request_id"}, {CBUS_TRUNC_NAME, "name"},
        {CBUS_TRUNC_PREVIEW, "preview"},  {CBUS_TRUNC_AGENT, "agent"},
        {CBUS_TRUNC_TENANT, "tenant"},
    };
    const char *sep = "";
    int any = 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (!(flags & names[i].bit))
            continue;
        if (!any)
            sbuf_puts(b, ",\"truncated\":[");
        any = 1;
        sbuf_printf(b, "%s\"%s\"", sep, names[i].name);
        sep = ",";
    }
    if (any)
        sbuf_puts(b, "]");
}

static void usage(struct sbuf *b, const struct cbus_usage *u)
{
    static const struct {
        unsigned bit;
        const char *name;
        size_t off;
    } counts[] = {
        {CBUS_USAGE_INPUT, "input_tokens", offsetof(struct cbus_usage, input_tokens)},
        {CBUS_USAGE_OUTPUT, "output_tokens", offsetof(struct cbus_usage, output_tokens)},
        {CBUS_USAGE_CACHE_READ, "cache_read_tokens", offsetof(struct cbus_usage, cache_read_tokens)},
        {CBUS_USAGE_CACHE_CREATION, "cache_creation_tokens",
         offsetof(struct cbus_usage, cache_creation_tokens)},
        {CBUS_USAGE_REASONING, "reasoning_tokens", offsetof(struct cbus_usage, reasoning_tokens)},
    };
    const char *sep = "";
    int any = 0;
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
        if (!(u->usage_present & counts[i].bit))
            continue;
        uint32_t v;
        memcpy(&v, (const char *)u + counts[i].off, sizeof v);
        if (!any)
            sbuf_puts(b, ",\"usage\":{");
        any = 1;
        sbuf_printf(b, "%s\"%s\":%" PRIu32, sep, counts[i].name, v);
        sep = ",";
    }
    if (any)
        sbuf_puts(b, "}");
    if (u->usage_present & CBUS_USAGE_DURATION)
        key_u64(b, "duration_ns", u->duration_ns);
    if (u->usage_present & CBUS_USAGE_TTFT)
        key_u64(b, "ttft_ns", u->ttft_ns);
    if (u->finish_reason != CBUS_FINISH_UNSET) {
        const char *fr = cbus_finish_reason_name(u->finish_reason);
        key(b, "finish_reason");
        if (fr)
            sbuf_json_str(b, fr, strlen(fr));
        else
            sbuf_printf(b, "%u", (unsigned)u->finish_reason);
    }
    key_u64_nonzero(b, "generations", u->generations);
}

/* A cut key is shown as its prefix; its whole-value hash tells two cut
 * keys apart (two 200-byte user names that differ in the last byte). */
static void key_hashes(struct sbuf *b, const struct cbus_event *ev)
{
    for (size_t i = 0; i < CBUS_KEY__COUNT; i++)
        if (ev->flags & cbus_cut_keys[i].bit)
            sbuf_printf(b, ",\"%s\":\"%016" PRIx64 "\"", cbus_cut_keys[i].name,
                        ev->key_hash[cbus_cut_keys[i].key]);
}

static void score(struct sbuf *b, const struct cbus_event *ev)
{
    const struct cbus_score_info *sc = &ev->u.score;
    const char *type = cbus_score_type_name(sc->type);
    sbuf_puts(b, ",\"score\":{\"type\":");
    if (type)
        sbuf_json_str(b, type, strlen(type));
    else
        sbuf_printf(b, "%u", (unsigned)sc->type);
    if (sc->type == CBUS_SCORE_CATEGORICAL) {
        sbuf_puts(b, ",\"category\":");
        sbuf_json_field(b, ev->preview);
    } else if (isfinite(sc->value)) {
        sbuf_printf(b, ",\"value\":%.17g", sc->value);
    } else {
        sbuf_puts(b, ",\"value\":null"); /* JSON has no NaN or infinity */
    }
    sbuf_puts(b, "}");
}

static void body_list(struct sbuf *b, const struct cbus_body_part *p, int pairs)
{
    uint32_t off = 0, n, vn;
    const char *item, *val;
    const char *sep = "";
    sbuf_puts(b, pairs ? "{" : "[");
    while (cbus_body_list_next(p, &off, &item, &n)) {
        sbuf_puts(b, sep);
        sep = ",";
        sbuf_json_bytes(b, item, n);
        if (!pairs)
            continue;
        if (!cbus_body_list_next(p, &off, &val, &vn)) { /* a key cut from its value */
            val = "";
            vn = 0;
        }
        sbuf_puts(b, ":");
        sbuf_json_bytes(b, val, vn);
    }
    sbuf_puts(b, pairs ? "}" : "]");
}

static void body_json(struct sbuf *b, const struct cbus_event *ev, const struct cbus_body *body)
{
    if (!body)
        return; /* not asked for (the tail without --body, cat without --body) */
    struct cbus_body_parts bp;
    cbus_body_parts_of(body, &bp);
    if (!bp.count && !bp.unknown && !bp.malformed && !(ev->flags & CBUS_FLAG_BODY_CUT))
        return;
    sbuf_puts(b, ",\"body\":{");
    const char *sep = "";
    for (unsigned t = 1; t < CBUS_BODY_TYPES; t++) {
        const struct cbus_body_part *p = &bp.part[t];
        if (!p->data)
            continue;
        sbuf_printf(b, "%s\"%s\":", sep, cbus_body_type_name(t));
        sep = ",";
        if (t == CBUS_BODY_TAGS || t == CBUS_BODY_METADATA)
            body_list(b, p, t == CBUS_BODY_METADATA);
        else
            sbuf_json_bytes(b, p->data, p->len);
    }
    if (bp.cut || (ev->flags & CBUS_FLAG_BODY_CUT)) {
        sbuf_printf(b, "%s\"cut\":true,\"orig_len\":{", sep);
        const char *s2 = "";
        for (unsigned t = 1; t < CBUS_BODY_TYPES; t++)
            if (bp.part[t].data && (bp.part[t].flags & CBUS_BODY_SECTION_CUT)) {
                sbuf_printf(b, "%s\"%s\":%" PRIu32, s2, cbus_body_type_name(t),
                            bp.part[t].orig_len);
                s2 = ",";
            }
        sbuf_puts(b, "}");
        sep = ",";
    }
    int any_dropped = 0;
    for (unsigned t = 1; t < CBUS_BODY_TYPES; t++)
        if (bp.part[t].data && bp.part[t].dropped) {
            sbuf_printf(b, "%s%s\"%s\":%" PRIu32, any_dropped ? "" : sep,
                        any_dropped ? "," : "\"dropped\":{", cbus_body_type_name(t),
                        bp.part[t].dropped);
            any_dropped = 1;
        }
    if (any_dropped) {
        sbuf_puts(b, "}");
        sep = ",";
    }
    if (bp.unknown) { /* a newer producer's types: said, not shown */
        sbuf_printf(b, "%s\"skipped_sections\":%d", sep, bp.unknown);
        sep = ",";
    }
    if (bp.malformed)
        sbuf_printf(b, "%s\"malformed\":true", sep);
    sbuf_puts(b, "}");
}

static void per_kind(struct sbuf *b, const struct cbus_event *ev)
{
    switch (cbus_kind_payload(ev->kind)) {
    case CBUS_PAYLOAD_LLM_START:
        key_u64(b, "prompt_count", ev->u.llm_start.prompt_count);
        key_u64_nonzero(b, "est_input_tokens", ev->u.llm_start.est_input_tokens);
        key_u64_nonzero(b, "max_tokens", ev->u.llm_start.max_tokens);
        break;
    case CBUS_PAYLOAD_TOKEN:
        key_u64(b, "index", ev->u.token.index);
        break;
    case CBUS_PAYLOAD_USAGE:
        usage(b, &ev->u.usage);
        break;
    case CBUS_PAYLOAD_ERROR:
        if (ev->u.error.http_status)
            sbuf_printf(b, ",\"http_status\":%" PRId32, ev->u.error.http_status);
        key_u64_nonzero(b, "duration_ns", ev->u.error.duration_ns);
        break;
    case CBUS_PAYLOAD_RETRY:
        key_u64(b, "attempt", ev->u.retry.attempt);
        key_u64(b, "backoff_ns", ev->u.retry.backoff_ns);
        break;
    case CBUS_PAYLOAD_RETRIEVER:
        key_u64(b, "document_count", ev->u.retriever.document_count);
        key_u64_nonzero(b, "duration_ns", ev->u.retriever.duration_ns);
        break;
    case CBUS_PAYLOAD_SPAN:
        key_u64_nonzero(b, "duration_ns", ev->u.span.duration_ns);
        break;
    case CBUS_PAYLOAD_SCORE:
        score(b, ev);
        break;
    default:
        break;
    }
}

void cbus_event_json(struct sbuf *b, const struct cbus_event *ev, const struct cbus_body *body)
{
    const char *kind = cbus_kind_name(ev->kind);
    if (kind) {
        sbuf_puts(b, "{\"kind\":");
        sbuf_json_str(b, kind, strlen(kind));
    } else {
        sbuf_printf(b, "{\"kind\":\"unknown\",\"kind_code\":%u", (unsigned)ev->kind);
    }
    key_u64(b, "event_id", ev->event_id);
    key_u64(b, "ts_realtime_ns", ev->ts_realtime_ns);
    key_u64(b, "ts_mono_ns", ev->ts_mono_ns);
    key_u64(b, "pid", ev->pid);
    key_u64(b, "tid", ev->tid);

    char id[37];
    cbus_id_uuid(id, ev->run_id);
    sbuf_printf(b, ",\"run_id\":\"%s\"", id);
    if (ev->flags & CBUS_FLAG_HAS_PARENT) {
        cbus_id_uuid(id, ev->parent_run_id);
        sbuf_printf(b, ",\"parent_run_id\":\"%s\"", id);
    }
    if (ev->flags & CBUS_FLAG_HAS_TRACE) {
        cbus_id_hex(id, ev->trace_id);
        sbuf_printf(b, ",\"trace_id\":\"%s\"", id);
    }

    key_field(b, "provider", ev->provider, sizeof ev->provider);
    key_field(b, "model", ev->model, sizeof ev->model);
    key_field(b, "user", ev->user, sizeof ev->user);
    key_field(b, "session", ev->session, sizeof ev->session);
    key_field(b, "agent", ev->agent, sizeof ev->agent);
    key_field(b, "tenant", ev->tenant, sizeof ev->tenant);
    key_field(b, "request_id", ev->request_id, sizeof ev->request_id);
    key_field(b, "name", ev->name, sizeof ev->name);
    key_field(b, "preview", ev->preview, sizeof ev->preview);
    truncated(b, ev->flags);
    key_hashes(b, ev);
    if (ev->flags & CBUS_FLAG_BODY)
        key_u64(b, "body_len", ev->body_len);
    per_kind(b, ev);
    body_json(b, ev, body);
    sbuf_puts(b, "}");
}
