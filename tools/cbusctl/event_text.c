/* tail's human rendering: one line per event, like tail -f.  Scripts use
 * --json (consumers/events/event_json.c); this is for eyes, so it is short
 * and every string is made terminal-safe (sbuf_human_str: controls, C1,
 * invalid UTF-8 and bidi overrides are shown as escapes). */
#include "cbusctl.h"

#include "event_body.h"
#include "sbuf.h"

#include <inttypes.h>
#include <string.h>
#include <time.h>

static void text_field(struct sbuf *b, const char *key, const char *field, size_t size)
{
    if (!strnlen(field, size))
        return;
    sbuf_printf(b, " %s=", key);
    sbuf_human_str(b, field, size);
}

/* A key cut to its field: the prefix, "...", and the whole value's hash,
 * so two long keys sharing the prefix read differently. */
static void text_key(struct sbuf *b, const char *key, const char *field, size_t size,
                     const struct cbus_event *ev, unsigned trunc, unsigned k)
{
    text_field(b, key, field, size);
    if (ev->flags & trunc)
        sbuf_printf(b, "...#%016" PRIx64, ev->key_hash[k]);
}

static void text_ns(struct sbuf *b, const char *key, uint64_t ns)
{
    char t[32];
    sbuf_printf(b, " %s=%s", key, fmt_ns(t, sizeof t, ns));
}

static void text_usage(struct sbuf *b, const struct cbus_usage *u)
{
    unsigned p = u->usage_present;
    if (p & CBUS_USAGE_INPUT)
        sbuf_printf(b, " in=%" PRIu32, u->input_tokens);
    if (p & CBUS_USAGE_OUTPUT)
        sbuf_printf(b, " out=%" PRIu32, u->output_tokens);
    if (p & CBUS_USAGE_CACHE_READ)
        sbuf_printf(b, " cache_read=%" PRIu32, u->cache_read_tokens);
    if (p & CBUS_USAGE_CACHE_CREATION)
        sbuf_printf(b, " cache_write=%" PRIu32, u->cache_creation_tokens);
    if (p & CBUS_USAGE_REASONING)
        sbuf_printf(b, " reasoning=%" PRIu32, u->reasoning_tokens);
    if (!(p & (CBUS_USAGE_INPUT | CBUS_USAGE_OUTPUT)))
        sbuf_puts(b, " usage=none");
    if (p & CBUS_USAGE_DURATION)
        text_ns(b, "dur", u->duration_ns);
    if (p & CBUS_USAGE_TTFT)
        text_ns(b, "ttft", u->ttft_ns);
    if (u->finish_reason != CBUS_FINISH_UNSET) {
        const char *fr = cbus_finish_reason_name(u->finish_reason);
        if (fr)
            sbuf_printf(b, " finish=%s", fr);
        else
            sbuf_printf(b, " finish=%u", (unsigned)u->finish_reason);
    }
}

static void text_kind(struct sbuf *b, const struct cbus_event *ev)
{
    switch (cbus_kind_payload(ev->kind)) {
    case CBUS_PAYLOAD_LLM_START:
        sbuf_printf(b, " prompts=%" PRIu32, ev->u.llm_start.prompt_count);
        if (ev->u.llm_start.est_input_tokens)
            sbuf_printf(b, " est_in=%" PRIu32, ev->u.llm_start.est_input_tokens);
        if (ev->u.llm_start.max_tokens)
            sbuf_printf(b, " max_tokens=%" PRIu32, ev->u.llm_start.max_tokens);
        break;
    case CBUS_PAYLOAD_TOKEN:
        sbuf_printf(b, " index=%" PRIu32, ev->u.token.index);
        break;
    case CBUS_PAYLOAD_USAGE:
        text_usage(b, &ev->u.usage);
        break;
    case CBUS_PAYLOAD_ERROR:
        if (ev->u.error.http_status)
            sbuf_printf(b, " http=%" PRId32, ev->u.error.http_status);
        if (ev->u.error.duration_ns)
            text_ns(b, "dur", ev->u.error.duration_ns);
        break;
    case CBUS_PAYLOAD_RETRY:
        sbuf_printf(b, " attempt=%" PRIu32, ev->u.retry.attempt);
        text_ns(b, "backoff", ev->u.retry.backoff_ns);
        break;
    case CBUS_PAYLOAD_RETRIEVER:
        sbuf_printf(b, " docs=%" PRIu32, ev->u.retriever.document_count);
        if (ev->u.retriever.duration_ns)
            text_ns(b, "dur", ev->u.retriever.duration_ns);
        break;
    case CBUS_PAYLOAD_SPAN:
        if (ev->u.span.duration_ns)
            text_ns(b, "dur", ev->u.span.duration_ns);
        break;
    case CBUS_PAYLOAD_SCORE: {
        const char *type = cbus_score_type_name(ev->u.score.type);
        if (type)
            sbuf_printf(b, " score_type=%s", type);
        else
            sbuf_printf(b, " score_type=%u", (unsigned)ev->u.score.type);
        if (ev->u.score.type != CBUS_SCORE_CATEGORICAL)
            sbuf_printf(b, " value=%g", ev->u.score.value); /* the category is the preview */
        break;
    }
    default:
        break;
    }
}

static void text_list(struct sbuf *b, const struct cbus_body_part *p, int pairs)
{
    uint32_t off = 0, n;
    const char *item;
    int i = 0;
    while (cbus_body_list_next(p, &off, &item, &n)) {
        sbuf_puts(b, i == 0 ? "" : pairs ? (i % 2 ? "=" : " ") : ", ");
        sbuf_human_bytes(b, item, n);
        i++;
    }
}

/* The body under its event line, one section per line, indented. */
static void text_body(struct sbuf *b, const struct cbus_event *ev, const struct cbus_body *body)
{
    struct cbus_body_parts bp;
    cbus_body_parts_of(body, &bp);
    for (unsigned t = 1; t < CBUS_BODY_TYPES; t++) {
        const struct cbus_body_part *p = &bp.part[t];
        if (!p->data)
            continue;
        sbuf_printf(b, "\n    %s: ", cbus_body_type_name(t));
        if (t == CBUS_BODY_TAGS || t == CBUS_BODY_METADATA)
            text_list(b, p, t == CBUS_BODY_METADATA);
        else
            sbuf_human_bytes(b, p->data, p->len);
        if (p->flags & CBUS_BODY_SECTION_CUT)
            sbuf_printf(b, " [cut: %" PRIu32 " of %" PRIu32 " bytes]", p->len, p->orig_len);
        if (p->dropped)
            sbuf_printf(b, " [%" PRIu32 " dropped]", p->dropped);
    }
    if (bp.unknown) /* a newer producer's sections */
        sbuf_printf(b, "\n    [%d section%s not shown: of an unknown type, or repeated]", bp.unknown,
                    bp.unknown == 1 ? "" : "s");
    if (bp.malformed)
        sbuf_puts(b, "\n    [malformed body]");
    else if ((ev->flags & CBUS_FLAG_BODY_CUT) && !bp.cut)
        sbuf_puts(b, "\n    [body cut]");
}

void event_text(struct sbuf *b, const struct cbus_event *ev, const struct cbus_body *body)
{
    char when[32] = "--:--:--";
    time_t secs = (time_t)(ev->ts_realtime_ns / 1000000000u);
    struct tm tm;
    if (localtime_r(&secs, &tm)) {
        size_t n = strftime(when, sizeof when, "%H:%M:%S", &tm);
        snprintf(when + n, sizeof when - n, ".%03u",
                 (unsigned)(ev->ts_realtime_ns % 1000000000u / 1000000u));
    }
    const char *kind = cbus_kind_name(ev->kind);
    if (kind)
        sbuf_printf(b, "%s %-16s #%" PRIu64 " pid=%" PRIu32, when, kind, ev->event_id, ev->pid);
    else
        sbuf_printf(b, "%s kind?%-11u #%" PRIu64 " pid=%" PRIu32, when, (unsigned)ev->kind,
                    ev->event_id, ev->pid);

    char id[37];
    cbus_id_hex(id, ev->run_id);
    id[8] = '\0'; /* a prefix is enough to tell runs apart on screen */
    sbuf_printf(b, " run=%s", id);
    if (ev->flags & CBUS_FLAG_HAS_PARENT) {
        cbus_id_hex(id, ev->parent_run_id);
        id[8] = '\0';
        sbuf_printf(b, " parent=%s", id);
    }
    text_key(b, "provider", ev->provider, sizeof ev->provider, ev, CBUS_TRUNC_PROVIDER,
             CBUS_KEY_PROVIDER);
    text_key(b, "model", ev->model, sizeof ev->model, ev, CBUS_TRUNC_MODEL, CBUS_KEY_MODEL);
    text_key(b, "user", ev->user, sizeof ev->user, ev, CBUS_TRUNC_USER, CBUS_KEY_USER);
    text_key(b, "session", ev->session, sizeof ev->session, ev, CBUS_TRUNC_SESSION,
             CBUS_KEY_SESSION);
    text_key(b, "agent", ev->agent, sizeof ev->agent, ev, CBUS_TRUNC_AGENT, CBUS_KEY_AGENT);
    text_key(b, "tenant", ev->tenant, sizeof ev->tenant, ev, CBUS_TRUNC_TENANT,
             CBUS_KEY_TENANT);
    text_field(b, "req", ev->request_id, sizeof ev->request_id);
    text_field(b, "name", ev->name, sizeof ev->name);
    text_kind(b, ev);
    if (strnlen(ev->preview, sizeof ev->preview)) {
        sbuf_puts(b, " \"");
        sbuf_human_field(b, ev->preview);
        sbuf_puts(b, ev->flags & CBUS_TRUNC_PREVIEW ? "...\"" : "\"");
    }
    if (body)
        text_body(b, ev, body);
}
