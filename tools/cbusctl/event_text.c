/* tail's human rendering: one line per event, like tail -f.  Scripts use
 * --json (consumers/common/event_json.c); this is for eyes, so it is short
 * and every string is made terminal-safe (sbuf_human_str: controls, C1,
 * invalid UTF-8 and bidi overrides are shown as escapes). */
#include "cbusctl.h"

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
    default:
        break;
    }
}

void event_text(struct sbuf *b, const struct cbus_event *ev)
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
    text_field(b, "provider", ev->provider, sizeof ev->provider);
    text_field(b, "model", ev->model, sizeof ev->model);
    text_field(b, "user", ev->user, sizeof ev->user);
    text_field(b, "session", ev->session, sizeof ev->session);
    text_field(b, "req", ev->request_id, sizeof ev->request_id);
    text_field(b, "name", ev->name, sizeof ev->name);
    text_kind(b, ev);
    if (strnlen(ev->preview, sizeof ev->preview)) {
        sbuf_puts(b, " \"");
        sbuf_human_field(b, ev->preview);
        sbuf_puts(b, ev->flags & CBUS_TRUNC_PREVIEW ? "...\"" : "\"");
    }
}
