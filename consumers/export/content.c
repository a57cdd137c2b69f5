#include "content.h"

#include <stdlib.h>
#include <string.h>

#include <cbus/layout.h>

#include "event_body.h"

/* ---- a JSON validator: RFC 8259 grammar, no values built -------------------
 *
 * It only answers "is this a JSON array?", so that a messages body can be
 * passed through as the attribute's JSON string, and anything else be sent
 * as text.  cJSON would build the whole tree (an allocation per value) for
 * the same answer. */

#define JSON_MAX_DEPTH 256

struct jp {
    const char *p, *end;
    int depth;
};

static void ws(struct jp *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static int hexd(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static int jstring(struct jp *j)
{
    /* local pointers: j->p is a char pointer, which may alias anything,
     * so working through it would reload it for every byte */
    const unsigned char *p = (const unsigned char *)j->p + 1, *end = (const unsigned char *)j->end;
    for (;;) {
        /* the common case: a run of plain bytes, eight at a time while no
         * byte of the word is a control byte, a quote or a backslash (the
         * classic SWAR tests: nonzero exactly when some byte matches) */
        while (end - p >= 8) {
            uint64_t w;
            memcpy(&w, p, 8);
            const uint64_t ones = UINT64_C(0x0101010101010101), high = UINT64_C(0x8080808080808080);
            uint64_t q = w ^ (ones * '"'), bs = w ^ (ones * '\\');
            uint64_t hit = ((w - ones * 0x20) & ~w) | ((q - ones) & ~q) | ((bs - ones) & ~bs);
            if (hit & high)
                break;
            p += 8;
        }
        while (p < end && *p >= 0x20 && *p != '"' && *p != '\\')
            p++;
        if (p >= end || *p < 0x20)
            return 0;
        if (*p++ == '"') {
            j->p = (const char *)p;
            return 1;
        }
        /* an escape */
        if (p >= end)
            return 0;
        unsigned char e = *p++;
        if (e == 'u') {
            if (end - p < 4 || !hexd((char)p[0]) || !hexd((char)p[1]) || !hexd((char)p[2]) || !hexd((char)p[3]))
                return 0;
            p += 4;
        } else if (!e || !strchr("\"\\/bfnrt", e)) {
            return 0;
        }
        /* bytes >= 0x80: UTF-8 is the encoder's business (it cleans every
         * string it writes), not a reason to call the text not JSON */
    }
}

static int digits(struct jp *j)
{
    const char *s = j->p;
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
        j->p++;
    return j->p > s;
}

static int jnumber(struct jp *j)
{
    if (*j->p == '-')
        j->p++;
    if (j->p >= j->end)
        return 0;
    if (*j->p == '0')
        j->p++;
    else if (!digits(j))
        return 0;
    if (j->p < j->end && *j->p == '.') {
        j->p++;
        if (!digits(j))
            return 0;
    }
    if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
        j->p++;
        if (j->p < j->end && (*j->p == '+' || *j->p == '-'))
            j->p++;
        if (!digits(j))
            return 0;
    }
    return 1;
}

static int word(struct jp *j, const char *w, size_t n)
{
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, w, n))
        return 0;
    j->p += n;
    return 1;
}

static int jvalue(struct jp *j)
{
    ws(j);
    if (j->p >= j->end)
        return 0;
    switch (*j->p) {
    case '"':
        return jstring(j);
    case 't':
        return word(j, "true", 4);
    case 'f':
        return word(j, "false", 5);
    case 'n':
        return word(j, "null", 4);
    case '[':
    case '{': {
        char close = *j->p == '[' ? ']' : '}';
        int obj = close == '}';
        if (++j->depth > JSON_MAX_DEPTH)
            return 0;
        j->p++;
        ws(j);
        if (j->p < j->end && *j->p == close) {
            j->p++;
            j->depth--;
            return 1;
        }
        for (;;) {
            if (obj) {
                ws(j);
                if (j->p >= j->end || *j->p != '"' || !jstring(j))
                    return 0;
                ws(j);
                if (j->p >= j->end || *j->p++ != ':')
                    return 0;
            }
            if (!jvalue(j))
                return 0;
            ws(j);
            if (j->p >= j->end)
                return 0;
            char c = *j->p++;
            if (c == close)
                break;
            if (c != ',')
                return 0;
        }
        j->depth--;
        return 1;
    }
    default:
        return (*j->p == '-' || (*j->p >= '0' && *j->p <= '9')) && jnumber(j);
    }
}

int content_json_valid(const char *s, size_t n, int *is_array)
{
    struct jp j = {s, s + n, 0};
    ws(&j);
    int arr = j.p < j.end && *j.p == '[';
    if (!jvalue(&j))
        return 0;
    ws(&j);
    if (j.p != j.end)
        return 0;
    if (is_array)
        *is_array = arr;
    return 1;
}

size_t content_cut_len(const char *s, size_t n, size_t cap)
{
    if (n <= cap)
        return n;
    size_t k = cap;
    /* back off continuation bytes, then the lead byte of the cut sequence */
    size_t back = 0;
    while (k > 0 && back < 4 && ((unsigned char)s[k] & 0xc0) == 0x80) {
        k--;
        back++;
    }
    return back < 4 ? k : cap; /* not UTF-8 there anyway: cut at the cap */
}

/* ---- what an open run keeps of its start's body ---------------------------- */

static unsigned char *put_section(unsigned char *o, unsigned type, uint16_t flags, const char *data,
                                  uint32_t len, uint32_t orig_len, uint32_t dropped)
{
    struct cbus_body_section s;
    memset(&s, 0, sizeof s);
    s.type = (uint16_t)type;
    s.flags = flags;
    s.len = len;
    s.orig_len = orig_len;
    s.dropped = dropped;
    memcpy(o, &s, sizeof s);
    memcpy(o + sizeof s, data, len);
    return o + sizeof s + len;
}

void *content_keep(const struct cbus_body *body, int content, size_t cap, uint32_t *len)
{
    struct cbus_body_parts parts;
    cbus_body_parts_of(body, &parts);
    /* the system instructions (CBUS_BODY_SYSTEM) are not among the parts
     * every renderer knows: found here, checked the same way */
    struct cbus_body_part sys = {0};
    struct cbus_body_section ss;
    const char *sd;
    if (body && body->data && cbus_body_find(body->data, body->len, CBUS_BODY_SYSTEM, &ss, &sd) == 1)
        sys = (struct cbus_body_part){sd, ss.len, ss.orig_len, ss.dropped, ss.flags};
    if (!parts.count && !sys.data)
        return NULL;
    enum { NKEEP = 5 };
    static const unsigned types[NKEEP] = {CBUS_BODY_TAGS, CBUS_BODY_METADATA, CBUS_BODY_MESSAGES,
                                          CBUS_BODY_TEXT, CBUS_BODY_SYSTEM};
    const struct cbus_body_part *src[NKEEP] = {&parts.part[CBUS_BODY_TAGS], &parts.part[CBUS_BODY_METADATA],
                                               &parts.part[CBUS_BODY_MESSAGES], &parts.part[CBUS_BODY_TEXT],
                                               &sys};
    uint32_t keep[NKEEP];
    size_t total = 0;
    for (unsigned i = 0; i < NKEEP; i++) {
        const struct cbus_body_part *p = src[i];
        int text = types[i] != CBUS_BODY_TAGS && types[i] != CBUS_BODY_METADATA;
        keep[i] = 0;
        if (!p->data || (text && !content))
            continue;
        keep[i] = text ? (uint32_t)content_cut_len(p->data, p->len, cap) : p->len;
        total += sizeof(struct cbus_body_section) + keep[i];
    }
    if (!total || total > UINT32_MAX)
        return NULL;
    unsigned char *buf = malloc(total), *o = buf;
    if (!buf)
        return NULL;
    for (unsigned i = 0; i < NKEEP; i++) {
        const struct cbus_body_part *p = src[i];
        if (!p->data || (!keep[i] && p->len))
            continue;
        uint16_t flags = p->flags;
        if (keep[i] < p->len)
            flags |= CBUS_BODY_SECTION_CUT;
        uint32_t orig = p->orig_len > p->len ? p->orig_len : p->len;
        o = put_section(o, types[i], flags, p->data, keep[i], orig, p->dropped);
    }
    *len = (uint32_t)(o - buf);
    if (!*len) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* text as the inside of a JSON string, as sbuf_json_bytes() writes it (a
 * NUL is data, \u0000; invalid UTF-8 becomes U+FFFD) but by runs: plain
 * ASCII is copied in one piece, a run of bytes >= 0x80 (which is where
 * every multibyte sequence lies whole) is cleaned in one piece, and only
 * quotes, backslashes and control bytes are escaped one by one.  Prompts
 * are mostly plain text: this is the per-byte cost of wrapping them. */
static void json_escape(struct sbuf *b, const char *text, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)text, *end = p + n;
    while (p < end) {
        const unsigned char *r = p;
        if (*p >= 0x80) {
            while (r < end && *r >= 0x80)
                r++;
            sbuf_utf8_clean(b, (const char *)p, (size_t)(r - p));
        } else if (*p < 0x20 || *p == '"' || *p == '\\') {
            char esc[6] = {'\\', 'u', '0', '0', hex[*p >> 4], hex[*p & 15]};
            if (*p == '"' || *p == '\\') {
                esc[1] = (char)*p;
                sbuf_add(b, esc, 2);
            } else {
                sbuf_add(b, esc, 6);
            }
            r++;
        } else {
            while (r < end && *r >= 0x20 && *r < 0x80 && *r != '"' && *r != '\\')
                r++;
            sbuf_add(b, p, (size_t)(r - p));
        }
        p = r;
    }
}

void content_wrap_text(struct sbuf *b, const char *role, const char *text, size_t n, const char *fr)
{
    sbuf_puts(b, "[{\"role\":\"");
    sbuf_puts(b, role);
    sbuf_puts(b, "\",\"parts\":[{\"type\":\"text\",\"content\":\"");
    json_escape(b, text, n);
    sbuf_puts(b, "\"}]");
    if (fr) {
        sbuf_puts(b, ",\"finish_reason\":\"");
        sbuf_puts(b, fr);
        sbuf_puts(b, "\"");
    }
    sbuf_puts(b, "}]");
}

void content_wrap_part(struct sbuf *b, const char *text, size_t n)
{
    sbuf_puts(b, "[{\"type\":\"text\",\"content\":\"");
    json_escape(b, text, n);
    sbuf_puts(b, "\"}]");
}
