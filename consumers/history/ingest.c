/* Events to messages (docs/history.md, "What is stored").
 *
 * A chat model's start carries the whole conversation each time (every
 * turn sends the history again).  The new turn is told apart from the
 * repeated history by content: each message's key is the hash of its
 * normalised role and its text (hist_msg_hash), and the prompt's k-th
 * message with a given key is new when the conversation holds fewer than k
 * messages with that key.  Counting, not just looking up, keeps a turn that
 * repeats an earlier one ("yes", then later "yes" again) as its own message;
 * the assistant's answers (from llm_end) and tool results (from tool_end)
 * get the keys the same messages have when the next prompt repeats them, so
 * they are not stored twice either.
 *
 * Message ids are derived from the run id (run/in3, run/out, run/call,
 * run/result): a message written twice (it cannot be, with the cursor in
 * the same transaction; but a bug, a replayed bus) is refused and counted
 * as a duplicate, never stored twice. */
#include "ingest.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event_body.h"
#include "prices.h"
#include "json_get.h"

#define PROMPT_MAX 4096 /* messages of one prompt considered */

static void hex(char *out, const uint8_t *b, size_t n)
{
    static const char d[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = d[b[i] >> 4];
        out[2 * i + 1] = d[b[i] & 15];
    }
    out[2 * n] = '\0';
}

static void field(char *out, size_t cap, const char *f, size_t flen)
{
    size_t n = strnlen(f, flen);
    if (n >= cap)
        n = cap - 1;
    memcpy(out, f, n);
    out[n] = '\0';
}

/* LangChain's message types and OpenAI's roles, as the schema's four. */
const char *hist_role_norm(const char *r)
{
    if (!r)
        return "user";
    if (!strcmp(r, "user") || !strcmp(r, "human"))
        return "user";
    if (!strcmp(r, "assistant") || !strcmp(r, "ai") || !strcmp(r, "AIMessageChunk"))
        return "assistant";
    if (!strcmp(r, "system") || !strcmp(r, "developer"))
        return "system";
    if (!strcmp(r, "tool") || !strcmp(r, "function"))
        return "tool";
    return "user";
}

/* A message's text: its text parts (OpenTelemetry's shape), a tool
 * result's response, or an OpenAI-style "content" string. */
static void message_text(const cJSON *m, struct sbuf *out)
{
    const cJSON *parts = cJSON_GetObjectItemCaseSensitive(m, "parts");
    const cJSON *p;
    int n = 0;
    cJSON_ArrayForEach(p, parts)
    {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(p, "type");
        const cJSON *c = NULL;
        if (cJSON_IsString(type) && !strcmp(type->valuestring, "text"))
            c = cJSON_GetObjectItemCaseSensitive(p, "content");
        else if (cJSON_IsString(type) && !strcmp(type->valuestring, "tool_call_response"))
            c = cJSON_GetObjectItemCaseSensitive(p, "response");
        if (cJSON_IsString(c)) {
            if (n++)
                sbuf_puts(out, "\n");
            sbuf_puts(out, c->valuestring);
        }
    }
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(m, "content");
    if (!n && cJSON_IsString(c))
        sbuf_puts(out, c->valuestring);
}

/* The run's metadata section (key NUL value NUL ..., the last of a key
 * wins) as a JSON object of strings; empty when there is none. */
static void metadata_json(const struct cbus_body_part *p, struct sbuf *out)
{
    if (!p->data || !p->len)
        return;
    const char *k[128], *v[128];
    uint32_t kl[128], vl[128];
    unsigned n = 0;
    uint32_t off = 0;
    const char *item;
    uint32_t len;
    while (n < 128 && cbus_body_list_next(p, &off, &item, &len) == 1) {
        k[n] = item;
        kl[n] = len;
        if (cbus_body_list_next(p, &off, &item, &len) != 1)
            break;
        v[n] = item;
        vl[n] = len;
        n++;
    }
    if (!n)
        return;
    sbuf_puts(out, "{");
    int first = 1;
    for (unsigned i = 0; i < n; i++) {
        int later = 0;
        for (unsigned j = i + 1; j < n && !later; j++)
            later = kl[j] == kl[i] && !memcmp(k[j], k[i], kl[i]);
        if (later)
            continue;
        if (!first)
            sbuf_puts(out, ",");
        first = 0;
        sbuf_json_str(out, k[i], kl[i]);
        sbuf_puts(out, ":");
        sbuf_json_str(out, v[i], vl[i]);
    }
    sbuf_puts(out, "}");
}

struct ev_ctx {
    char conv[HIST_ID_MAX];
    char user[CBUS_USER_LEN + 1], tenant[CBUS_TENANT_LEN + 1], agent[CBUS_AGENT_LEN + 1];
    char model[CBUS_MODEL_LEN + 1], name[CBUS_NAME_LEN + 1], provider[CBUS_PROVIDER_LEN + 1];
    char run[33], trace[33];
    const char *text;       /* the event's text: TEXT section, else the preview */
    size_t text_len;
    char preview[CBUS_PREVIEW_LEN + 1];
    struct cbus_body_parts parts;
};

/* The conversation id of an event: its session.  A session cut to its field
 * keeps its identity: "~" and the whole value's hash follow the shown part. */
int hist_conv_id(const struct cbus_event *ev, char *out, size_t cap)
{
    size_t n = strnlen(ev->session, sizeof ev->session);
    if (!n)
        return 0;
    if (ev->flags & CBUS_TRUNC_SESSION)
        snprintf(out, cap, "%.*s~%016llx", (int)n, ev->session,
                 (unsigned long long)ev->key_hash[CBUS_KEY_SESSION]);
    else
        snprintf(out, cap, "%.*s", (int)n, ev->session);
    return 1;
}

static void base_msg(const struct ev_ctx *c, const struct cbus_event *ev, struct hist_msg *m)
{
    memset(m, 0, sizeof *m);
    m->conv = c->conv;
    m->input_tokens = m->output_tokens = -1;
    m->ts_ns = ev->ts_realtime_ns;
    m->run_id = c->run;
    m->trace_id = c->trace[0] ? c->trace : NULL;
    m->user = c->user;
    m->tenant = c->tenant;
    m->agent = c->agent;
    m->model = c->model[0] ? c->model : NULL;
    m->kind = "message";
}

/* A chat model's or LLM's start: the new turn of the prompt. */
static int on_start(struct hist_store *s, const struct ev_ctx *c, const struct cbus_event *ev)
{
    struct sbuf meta, text;
    sbuf_init(&meta);
    sbuf_init(&text);
    metadata_json(&c->parts.part[CBUS_BODY_METADATA], &meta);
    struct hist_msg m;
    base_msg(c, ev, &m);
    m.model = NULL; /* a prompt's messages are not the model's */
    m.metadata = meta.len ? meta.data : NULL;
    char id[HIST_ID_MAX];
    int r = hist_store_conv_touch(s, c->conv, ev->ts_realtime_ns, c->user, c->tenant, c->agent);
    const struct cbus_body_part *mp = &c->parts.part[CBUS_BODY_MESSAGES];
    cJSON *arr = NULL;
    /* A messages section cut at the body limit is not JSON any more: the
     * new turn is then the event's own text. */
    if (!r && mp->data && !(mp->flags & CBUS_BODY_SECTION_CUT))
        arr = cJSON_ParseWithLength(mp->data, mp->len);
    if (!r && cJSON_IsArray(arr)) {
        uint64_t *seen = calloc(PROMPT_MAX, sizeof *seen);
        if (!seen)
            r = -ENOMEM;
        int i = 0;
        const cJSON *msg;
        cJSON_ArrayForEach(msg, arr)
        {
            if (r || i >= PROMPT_MAX)
                break;
            const cJSON *role = cJSON_GetObjectItemCaseSensitive(msg, "role");
            const char *rn = hist_role_norm(cJSON_IsString(role) ? role->valuestring : NULL);
            sbuf_reset(&text);
            message_text(msg, &text);
            if (text.failed) {
                r = -ENOMEM;
                break;
            }
            uint64_t h = hist_msg_hash(rn, text.data ? text.data : "", text.len);
            seen[i] = h;
            uint64_t occ = 1, stored = 0;
            for (int j = 0; j < i; j++)
                occ += seen[j] == h;
            r = hist_store_count_hash(s, c->conv, h, &stored);
            if (!r && occ > stored) {
                snprintf(id, sizeof id, "%s/in%d", c->run, i);
                m.id = id;
                m.role = rn;
                m.text = text.data ? text.data : "";
                m.text_len = text.len;
                m.hash = h;
                r = hist_store_message(s, &m);
            }
            i++;
        }
        free(seen);
    } else if (!r && c->text_len) {
        /* No messages: the text is the new turn, unless it repeats the
         * conversation's last message (the same prompt sent again). */
        uint64_t h = hist_msg_hash("user", c->text, c->text_len), last = 0;
        r = hist_store_last_hash(s, c->conv, &last);
        if (r == -ENOENT || (!r && last != h)) {
            snprintf(id, sizeof id, "%s/in", c->run);
            m.id = id;
            m.role = "user";
            m.text = c->text;
            m.text_len = c->text_len;
            m.hash = h;
            r = hist_store_message(s, &m);
        }
    }
    cJSON_Delete(arr);
    sbuf_free(&meta);
    sbuf_free(&text);
    return r;
}

static int on_llm_end(struct hist_store *s, const struct ev_ctx *c, const struct cbus_event *ev)
{
    struct sbuf text;
    sbuf_init(&text);
    const struct cbus_body_part *mp = &c->parts.part[CBUS_BODY_MESSAGES];
    int from_messages = 0;
    if (mp->data && !(mp->flags & CBUS_BODY_SECTION_CUT)) {
        cJSON *arr = cJSON_ParseWithLength(mp->data, mp->len);
        const cJSON *msg;
        cJSON_ArrayForEach(msg, arr)
        {
            if (text.len)
                sbuf_puts(&text, "\n");
            message_text(msg, &text);
            from_messages = 1;
        }
        cJSON_Delete(arr);
    }
    if (!from_messages && c->text_len)
        sbuf_add(&text, c->text, c->text_len);
    if (text.failed) {
        sbuf_free(&text);
        return -ENOMEM;
    }
    struct hist_msg m;
    base_msg(c, ev, &m);
    char id[HIST_ID_MAX];
    snprintf(id, sizeof id, "%s/out", c->run);
    m.id = id;
    m.role = "assistant";
    m.text = text.data ? text.data : "";
    m.text_len = text.len;
    m.hash = hist_msg_hash("assistant", m.text, m.text_len);
    const struct cbus_usage *u = &ev->u.usage;
    if (u->usage_present & CBUS_USAGE_INPUT)
        m.input_tokens = u->input_tokens;
    if (u->usage_present & CBUS_USAGE_OUTPUT)
        m.output_tokens = u->output_tokens;
    /* Priced as cbus-cost prices it (the same table and function); a model
     * the table does not know is not priced (null), never free. */
    const struct cost_price_table *t = hist_store_prices(s);
    if (t && c->model[0] && (u->usage_present & (CBUS_USAGE_INPUT | CBUS_USAGE_OUTPUT))) {
        const char *why;
        const struct cost_price *pr = cost_prices_lookup(t, c->provider, c->model, &why);
        if (pr) {
            cost_u128 v = cost_usage_price(pr, u, NULL, NULL);
            m.cost_pico = v > (cost_u128)INT64_MAX ? INT64_MAX : (int64_t)v;
            m.priced = 1;
        }
    }
    int r = hist_store_message(s, &m);
    if (!r && (m.input_tokens > 0 || m.output_tokens > 0 || m.priced))
        r = hist_store_add_usage(s, c->conv, m.input_tokens, m.output_tokens,
                                 m.priced ? m.cost_pico : -1);
    sbuf_free(&text);
    return r;
}

static int on_tool(struct hist_store *s, const struct ev_ctx *c, const struct cbus_event *ev)
{
    struct hist_msg m;
    base_msg(c, ev, &m);
    m.model = NULL;
    char id[HIST_ID_MAX], call[HIST_ID_MAX];
    m.role = "tool";
    m.name = c->name[0] ? c->name : NULL;
    m.text = c->text ? c->text : "";
    m.text_len = c->text_len;
    struct sbuf meta;
    sbuf_init(&meta);
    int r = 0;
    if (ev->kind == CBUS_EV_TOOL_START) {
        snprintf(id, sizeof id, "%s/call", c->run);
        m.kind = "tool_call";
        /* never the key of a prompt's message: a call is not repeated as one */
        m.hash = hist_msg_hash("tool_call", m.text, m.text_len);
        metadata_json(&c->parts.part[CBUS_BODY_METADATA], &meta);
        m.metadata = meta.len ? meta.data : NULL;
    } else {
        snprintf(id, sizeof id, "%s/result", c->run);
        snprintf(call, sizeof call, "%s/call", c->run);
        m.kind = "tool_result";
        /* the key a prompt's tool message with this result has */
        m.hash = hist_msg_hash("tool", m.text, m.text_len);
        r = hist_store_has_message(s, c->conv, call);
        if (r == 1)
            m.parent = call;
        if (ev->kind == CBUS_EV_TOOL_ERROR) {
            sbuf_puts(&meta, "{\"error\":");
            sbuf_json_str(&meta, c->name, (size_t)-1);
            sbuf_puts(&meta, "}");
            m.metadata = meta.data;
            m.name = NULL;
        }
    }
    m.id = id;
    if (r >= 0)
        r = meta.failed ? -ENOMEM : hist_store_message(s, &m);
    sbuf_free(&meta);
    return r;
}

/* An explicit conversation event (cbus_conversation_*): the operation is
 * the event's name, its fields the body's JSON object, a message's text
 * (or the title) the body's text, bytes as the producer gave them. */
static int on_conversation(struct hist_store *s, struct ev_ctx *c, const struct cbus_event *ev,
                           uint64_t bus_id)
{
    const struct cbus_body_part *mp = &c->parts.part[CBUS_BODY_MESSAGES];
    cJSON *j = NULL;
    if (mp->data && !(mp->flags & CBUS_BODY_SECTION_CUT))
        j = cJSON_ParseWithLength(mp->data, mp->len);
    const char *conv = cbus_json_str(j, "conversation", NULL);
    if (conv && *conv && strlen(conv) < sizeof c->conv)
        snprintf(c->conv, sizeof c->conv, "%s", conv);
    if (!cJSON_IsObject(j) || !c->conv[0]) {
        /* not ours to guess: counted with the events of no conversation */
        cJSON_Delete(j);
        hist_store_skip(s);
        return 0;
    }
    int r = hist_store_conv_touch(s, c->conv, ev->ts_realtime_ns, c->user, c->tenant, c->agent);
    const char *title = cbus_json_str(j, "title", NULL);
    if (r) {
    } else if (!strcmp(c->name, "create")) {
        if (title && *title)
            r = hist_store_set_title_if_none(s, c->conv, title);
    } else if (!strcmp(c->name, "rename")) {
        /* a rename of a conversation we never saw creates it, titled: an
         * event cannot be answered with an error, and nothing is lost */
        if (title && *title)
            r = hist_store_rename(s, c->conv, title, ev->ts_realtime_ns);
    } else if (!strcmp(c->name, "state")) {
        const char *state = cbus_json_str(j, "state", NULL);
        if (state && *state && strlen(state) <= 32)
            r = hist_store_set_state(s, c->conv, state, ev->ts_realtime_ns);
    } else if (!strcmp(c->name, "message")) {
        struct hist_msg m;
        base_msg(c, ev, &m);
        char id[HIST_ID_MAX];
        const char *mid = cbus_json_str(j, "id", NULL);
        if (mid && *mid && strlen(mid) < sizeof id) {
            snprintf(id, sizeof id, "%s", mid);
        } else {
            /* unique per bus and position */
            snprintf(id, sizeof id, "%016llx-%llu", (unsigned long long)bus_id,
                     (unsigned long long)ev->event_id);
        }
        m.id = id;
        m.role = hist_role_norm(cbus_json_str(j, "role", NULL));
        const char *parent = cbus_json_str(j, "parent", NULL);
        m.parent = parent && *parent && strlen(parent) < HIST_ID_MAX ? parent : NULL;
        m.text = c->text ? c->text : "";
        m.text_len = c->text_len;
        m.hash = hist_msg_hash(m.role, m.text, m.text_len);
        const cJSON *meta = cJSON_GetObjectItemCaseSensitive(j, "metadata");
        char *printed = cJSON_IsObject(meta) ? cJSON_PrintUnformatted(meta) : NULL;
        struct sbuf clean;
        sbuf_init(&clean);
        if (printed) {
            /* shown raw inside JSON later: valid UTF-8 only */
            sbuf_utf8_clean(&clean, printed, strlen(printed));
            m.metadata = clean.data;
        }
        r = clean.failed ? -ENOMEM : hist_store_message(s, &m);
        sbuf_free(&clean);
        cJSON_free(printed);
    } else {
        hist_store_skip(s); /* an operation this version does not know */
    }
    cJSON_Delete(j);
    return r;
}

int hist_store_event(struct hist_store *s, uint64_t bus_id, const struct cbus_event *ev,
                     const struct cbus_body *body)
{
    unsigned k = ev->kind;
    hist_store_count_event(s);
    if (k != CBUS_EV_CHAT_MODEL_START && k != CBUS_EV_LLM_START && k != CBUS_EV_LLM_END &&
        k != CBUS_EV_TOOL_START && k != CBUS_EV_TOOL_END && k != CBUS_EV_TOOL_ERROR &&
        k != CBUS_EV_CONVERSATION)
        return 0;
    struct ev_ctx c;
    memset(&c, 0, sizeof c);
    if (!hist_conv_id(ev, c.conv, sizeof c.conv) && k != CBUS_EV_CONVERSATION) {
        hist_store_skip(s);
        return 0;
    }
    field(c.user, sizeof c.user, ev->user, sizeof ev->user);
    field(c.tenant, sizeof c.tenant, ev->tenant, sizeof ev->tenant);
    field(c.agent, sizeof c.agent, ev->agent, sizeof ev->agent);
    field(c.model, sizeof c.model, ev->model, sizeof ev->model);
    field(c.provider, sizeof c.provider, ev->provider, sizeof ev->provider);
    field(c.name, sizeof c.name, ev->name, sizeof ev->name);
    field(c.preview, sizeof c.preview, ev->preview, sizeof ev->preview);
    hex(c.run, ev->run_id, 16);
    if (ev->flags & CBUS_FLAG_HAS_TRACE)
        hex(c.trace, ev->trace_id, 16);
    cbus_body_parts_of(body, &c.parts);
    const struct cbus_body_part *tp = &c.parts.part[CBUS_BODY_TEXT];
    if (tp->data) {
        c.text = tp->data;
        c.text_len = tp->len;
    } else {
        c.text = c.preview;
        c.text_len = strlen(c.preview);
    }
    switch (k) {
    case CBUS_EV_CONVERSATION: return on_conversation(s, &c, ev, bus_id);
    case CBUS_EV_CHAT_MODEL_START:
    case CBUS_EV_LLM_START: return on_start(s, &c, ev);
    case CBUS_EV_LLM_END: return on_llm_end(s, &c, ev);
    default: return on_tool(s, &c, ev);
    }
}

uint64_t hist_needed_kinds(void)
{
    return CBUS_KIND_BIT(CBUS_EV_CHAT_MODEL_START) | CBUS_KIND_BIT(CBUS_EV_LLM_START) |
           CBUS_KIND_BIT(CBUS_EV_LLM_END) | CBUS_KIND_BIT(CBUS_EV_TOOL_START) |
           CBUS_KIND_BIT(CBUS_EV_TOOL_END) | CBUS_KIND_BIT(CBUS_EV_TOOL_ERROR) |
           CBUS_KIND_BIT(CBUS_EV_CONVERSATION);
}
