#include "event_body.h"

#include <assert.h>
#include <limits.h>
#include <string.h>

/* A section type added to layout.h is a row here, a name below and a look
 * at every renderer (JSON, msgpack, cbusctl's text, the audit record). */
static_assert(CBUS_BODY_TYPES == CBUS_BODY_RESPONSE_ID + 1, "a body section type is not rendered");

int cbus_body_parts_of(const struct cbus_body *body, struct cbus_body_parts *out)
{
    memset(out, 0, sizeof *out);
    if (!body || !body->data || !body->len)
        return 0;
    size_t off = 0;
    struct cbus_body_section s;
    const char *data;
    int r;
    while ((r = cbus_body_next(body->data, body->len, &off, &s, &data)) == 1) {
        if (s.type == 0 && s.len == 0 && s.orig_len) {
            /* the marker a msgpack decoder leaves for orig_len sections its
             * encoder skipped (cbus_evmp_decode_body); no producer writes
             * type 0 */
            out->unknown = s.orig_len > (uint32_t)(INT_MAX - out->unknown) ? INT_MAX
                                                                           : out->unknown + (int)s.orig_len;
            continue;
        }
        if (s.type == 0 || s.type >= CBUS_BODY_TYPES || out->part[s.type].data) {
            if (out->unknown < INT_MAX)
                out->unknown++; /* unknown type, or a second section of one: the first counts */
            continue;
        }
        struct cbus_body_part *p = &out->part[s.type];
        p->data = data;
        p->len = s.len;
        p->orig_len = s.orig_len;
        p->dropped = s.dropped;
        p->flags = s.flags;
        out->count++;
        if (s.flags & CBUS_BODY_SECTION_CUT)
            out->cut = 1;
    }
    if (r < 0)
        out->malformed = 1;
    return out->count;
}

const char *cbus_body_type_name(unsigned type)
{
    switch (type) {
    case CBUS_BODY_TEXT: return "text";
    case CBUS_BODY_MESSAGES: return "messages";
    case CBUS_BODY_TAGS: return "tags";
    case CBUS_BODY_METADATA: return "metadata";
    case CBUS_BODY_SYSTEM: return "system";
    case CBUS_BODY_RESPONSE_ID: return "response_id";
    default: return NULL;
    }
}

int cbus_body_list_next(const struct cbus_body_part *p, uint32_t *off, const char **item,
                        uint32_t *n)
{
    if (!p->data || *off >= p->len)
        return 0;
    const char *s = p->data + *off;
    const char *nul = memchr(s, '\0', p->len - *off);
    uint32_t len = nul ? (uint32_t)(nul - s) : p->len - *off;
    *item = s;
    *n = len;
    *off += len + (nul ? 1 : 0);
    return 1;
}

static const char *const score_types[] = {
    [CBUS_SCORE_NUMERIC] = "numeric",
    [CBUS_SCORE_BOOLEAN] = "boolean",
    [CBUS_SCORE_CATEGORICAL] = "categorical",
};

const char *cbus_score_type_name(unsigned type)
{
    return type < sizeof score_types / sizeof score_types[0] ? score_types[type] : NULL;
}

int cbus_score_type_from_name(const char *s, size_t n)
{
    for (unsigned t = 1; t < sizeof score_types / sizeof score_types[0]; t++)
        if (strlen(score_types[t]) == n && memcmp(score_types[t], s, n) == 0)
            return (int)t;
    return -1;
}

const struct cbus_cut_key cbus_cut_keys[CBUS_KEY__COUNT] = {
    {CBUS_TRUNC_PROVIDER, CBUS_KEY_PROVIDER, "provider_hash"},
    {CBUS_TRUNC_MODEL, CBUS_KEY_MODEL, "model_hash"},
    {CBUS_TRUNC_USER, CBUS_KEY_USER, "user_hash"},
    {CBUS_TRUNC_SESSION, CBUS_KEY_SESSION, "session_hash"},
    {CBUS_TRUNC_AGENT, CBUS_KEY_AGENT, "agent_hash"},
    {CBUS_TRUNC_TENANT, CBUS_KEY_TENANT, "tenant_hash"},
};
