/* Explicit conversation events (producer.h, "explicit conversations"):
 * validated arguments, the operation's fields as a JSON object, one emit. */
#include "producer_internal.h"

#include <stdint.h>

struct jbuf {
    char *p;
    size_t len, cap;
    int over;
};

static void jput(struct jbuf *b, const char *s, size_t n)
{
    if (b->over || n > b->cap - b->len) {
        b->over = 1;
        return;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

/* A JSON string: quotes, backslashes and control bytes escaped; other
 * bytes as given (the consumer makes text valid UTF-8 where it shows it). */
static void jstr(struct jbuf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    jput(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            jput(b, e, 2);
        } else if (c < 0x20) {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            jput(b, e, 6);
        } else {
            jput(b, (const char *)&c, 1);
        }
    }
    jput(b, "\"", 1);
}

static void jkey(struct jbuf *b, const char *k, const char *v)
{
    jput(b, ",", 1);
    jstr(b, k);
    jput(b, ":", 1);
    jstr(b, v);
}

/* 1..max bytes, no control characters. */
static int valid_id(const char *s, size_t max)
{
    size_t n = 0;
    for (; s[n]; n++)
        if ((unsigned char)s[n] < 0x20 || (unsigned char)s[n] == 0x7f || n >= max)
            return 0;
    return n > 0;
}

static int valid_state(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (n >= 32 || !((s[n] >= 'a' && s[n] <= 'z') || (s[n] >= '0' && s[n] <= '9') ||
                         s[n] == '_' || s[n] == '-'))
            return 0;
    return n > 0;
}

static int valid_role(const char *r)
{
    return r && (!strcmp(r, "user") || !strcmp(r, "assistant") || !strcmp(r, "tool") ||
                 !strcmp(r, "system"));
}

/* Emits op for conv: the fields in b (an object opened with the
 * conversation id), text (or NULL) as the body's text and the preview. */
static int send(cbus_producer *p, cbus_ctx *ctx, const char *op, const char *conv,
                struct jbuf *b, const char *text, size_t text_len)
{
    jput(b, "}", 1);
    if (b->over)
        return -E2BIG;
    /* The conversation is the event's session: the context's, or a copy of
     * the context with it set (the caller's context is left alone). */
    size_t sl = strnlen(ctx->tmpl.session, sizeof ctx->tmpl.session);
    if (strlen(conv) != sl || memcmp(conv, ctx->tmpl.session, sl) ||
        (ctx->tmpl.flags & CBUS_TRUNC_SESSION)) {
        cbus_ctx local;
        memcpy(&local, ctx, sizeof local);
        int r = cbus_ctx_set_session(&local, conv);
        if (r)
            return r;
        return cbus__emit_body(p, &local, CBUS_EV_CONVERSATION, op, text, text_len, b->p, b->len,
                               text, text_len);
    }
    return cbus__emit_body(p, ctx, CBUS_EV_CONVERSATION, op, text, text_len, b->p, b->len, text,
                           text_len);
}

/* Checks the common arguments, opens the object.  Returns 0 or -EINVAL. */
static int begin(cbus_producer *p, cbus_ctx *ctx, const char **conv, char *sess, size_t slen,
                 struct jbuf *b)
{
    if (!p || !ctx || ctx->magic != CBUS_CTX_MAGIC)
        return -EINVAL;
    if (!*conv) {
        /* the context's session (whole: a cut one is not the id) */
        if (ctx->tmpl.flags & CBUS_TRUNC_SESSION)
            return -EINVAL;
        size_t n = strnlen(ctx->tmpl.session, sizeof ctx->tmpl.session);
        if (!n || n >= slen)
            return -EINVAL;
        memcpy(sess, ctx->tmpl.session, n);
        sess[n] = '\0';
        *conv = sess;
    }
    if (!valid_id(*conv, CBUS_CONV_ID_MAX))
        return -EINVAL;
    jput(b, "{", 1);
    jstr(b, "conversation");
    jput(b, ":", 1);
    jstr(b, *conv);
    return 0;
}

#define JBUF(name)                                                                          \
    char name##_mem[CBUS_CONV_FIELDS_MAX];                                                  \
    struct jbuf name = {name##_mem, 0, sizeof name##_mem, 0}

static int title_op(cbus_producer *p, cbus_ctx *ctx, const char *conv, const char *title,
                    const char *op, int need_title)
{
    JBUF(b);
    char sess[CBUS_SESSION_LEN + 1];
    int r = begin(p, ctx, &conv, sess, sizeof sess, &b);
    if (r)
        return r;
    if (title && (!*title || strlen(title) > CBUS_CONV_TITLE_MAX))
        return -EINVAL;
    if (need_title && !title)
        return -EINVAL;
    if (title)
        jkey(&b, "title", title);
    return send(p, ctx, op, conv, &b, title, title ? strlen(title) : 0);
}

CBUS_API int cbus_conversation_create(cbus_producer *p, cbus_ctx *ctx, const char *conversation_id,
                                      const char *title)
{
    return title_op(p, ctx, conversation_id, title, "create", 0);
}

CBUS_API int cbus_conversation_rename(cbus_producer *p, cbus_ctx *ctx, const char *conversation_id,
                                      const char *title)
{
    return title_op(p, ctx, conversation_id, title, "rename", 1);
}

CBUS_API int cbus_conversation_set_state(cbus_producer *p, cbus_ctx *ctx,
                                         const char *conversation_id, const char *state)
{
    JBUF(b);
    char sess[CBUS_SESSION_LEN + 1];
    int r = begin(p, ctx, &conversation_id, sess, sizeof sess, &b);
    if (r)
        return r;
    if (!state || !valid_state(state))
        return -EINVAL;
    jkey(&b, "state", state);
    return send(p, ctx, "state", conversation_id, &b, NULL, 0);
}

CBUS_API int cbus_conversation_message(cbus_producer *p, cbus_ctx *ctx,
                                       const char *conversation_id,
                                       const struct cbus_conv_message *m)
{
    JBUF(b);
    char sess[CBUS_SESSION_LEN + 1];
    int r = begin(p, ctx, &conversation_id, sess, sizeof sess, &b);
    if (r)
        return r;
    if (!m || !valid_role(m->role) || (m->id && !valid_id(m->id, CBUS_CONV_ID_MAX)) ||
        (m->parent_id && !valid_id(m->parent_id, CBUS_CONV_ID_MAX)))
        return -EINVAL;
    size_t tl = 0;
    if (m->text)
        tl = m->text_len == SIZE_MAX ? strlen(m->text) : m->text_len;
    else if (m->text_len && m->text_len != SIZE_MAX)
        return -EINVAL;
    if (m->id)
        jkey(&b, "id", m->id);
    jkey(&b, "role", m->role);
    if (m->parent_id)
        jkey(&b, "parent", m->parent_id);
    if (m->metadata) {
        jput(&b, ",\"metadata\":{", 13);
        for (size_t i = 0; m->metadata[i]; i += 2) {
            if (!m->metadata[i][0] || !m->metadata[i + 1])
                return -EINVAL; /* an empty key, or a key without its value */
            if (i)
                jput(&b, ",", 1);
            jstr(&b, m->metadata[i]);
            jput(&b, ":", 1);
            jstr(&b, m->metadata[i + 1]);
        }
        jput(&b, "}", 1);
    }
    return send(p, ctx, "message", conversation_id, &b, m->text ? m->text : NULL, tl);
}
