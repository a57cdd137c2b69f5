#include "sbuf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sbuf_init(struct sbuf *b)
{
    memset(b, 0, sizeof *b);
}

void sbuf_free(struct sbuf *b)
{
    free(b->data);
    sbuf_init(b);
}

void sbuf_reset(struct sbuf *b)
{
    b->len = 0;
    b->failed = 0;
    if (b->data)
        b->data[0] = '\0';
}

int sbuf_reserve(struct sbuf *b, size_t extra)
{
    if (b->failed)
        return -ENOMEM;
    if (b->len + extra + 1 <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d) {
        b->failed = 1;
        return -ENOMEM;
    }
    b->data = d;
    b->cap = cap;
    return 0;
}

void sbuf_add(struct sbuf *b, const void *p, size_t n)
{
    if (sbuf_reserve(b, n))
        return;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void sbuf_puts(struct sbuf *b, const char *s)
{
    sbuf_add(b, s, strlen(s));
}

void sbuf_printf(struct sbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || sbuf_reserve(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), 0 if invalid. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len;
    unsigned min;
    if (c < 0x80)
        return 1;
    if ((c & 0xe0) == 0xc0) {
        len = 2;
        min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
        len = 3;
        min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
        len = 4;
        min = 0x10000;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    unsigned cp = c & (0x7f >> len);
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

/* Copies the valid UTF-8 sequence at u[*i] (n bytes in all) to o, or
 * U+FFFD for a byte that starts none (a cut multibyte char or a bad byte),
 * and moves *i past what it read.  Returns the end of what it wrote (at
 * most 4 bytes): the step sbuf_utf8_clean() and sbuf_json_bytes() share. */
static inline char *utf8_put(char *o, const unsigned char *u, size_t n, size_t *i)
{
    size_t len = utf8_seq(u + *i, n - *i);
    if (!len) {
        memcpy(o, "\xef\xbf\xbd", 3);
        (*i)++;
        return o + 3;
    }
    memcpy(o, u + *i, len);
    *i += len;
    return o + len;
}

size_t cbus_utf8_clean_len(const char *s, size_t n, int *valid)
{
    n = strnlen(s, n);
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, out = 0;
    *valid = 1;
    while (i < n) {
        if (u[i] < 0x80) {
            i++;
            out++;
            continue;
        }
        size_t len = utf8_seq(u + i, n - i);
        if (!len) {
            *valid = 0;
            out += 3;
            i++;
        } else {
            out += len;
            i += len;
        }
    }
    return out;
}

void sbuf_utf8_clean(struct sbuf *b, const char *s, size_t n)
{
    n = strnlen(s, n);
    if (n > (SIZE_MAX - 1) / 3) {
        b->failed = 1;
        return;
    }
    if (sbuf_reserve(b, n * 3))
        return;
    char *o = b->data + b->len;
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;)
        o = utf8_put(o, u, n, &i);
    b->len = (size_t)(o - b->data);
    b->data[b->len] = '\0';
}

/* Written straight into the buffer (one reserve for the worst case, six
 * bytes per input byte): the exporter calls this for every attribute of
 * every span. */
void sbuf_json_str(struct sbuf *b, const char *s, size_t n)
{
    sbuf_json_bytes(b, s, strnlen(s, n)); /* n may be (size_t)-1: "up to the NUL" */
}

void sbuf_json_bytes(struct sbuf *b, const char *s, size_t n)
{
    if (n > (SIZE_MAX - 2) / 6) {
        b->failed = 1;
        return;
    }
    if (sbuf_reserve(b, n * 6 + 2))
        return;
    char *o = b->data + b->len;
    const unsigned char *u = (const unsigned char *)s;
    *o++ = '"';
    for (size_t i = 0; i < n;) {
        unsigned c = u[i];
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            *o++ = (char)c;
            i++;
        } else if (c == '"' || c == '\\') {
            *o++ = '\\';
            *o++ = (char)c;
            i++;
        } else if (c < 0x20) {
            static const char hex[] = "0123456789abcdef";
            memcpy(o, "\\u00", 4);
            o[4] = hex[c >> 4];
            o[5] = hex[c & 15];
            o += 6;
            i++;
        } else {
            o = utf8_put(o, u, n, &i);
        }
    }
    *o++ = '"';
    b->len = (size_t)(o - b->data);
    b->data[b->len] = '\0';
}

/* Code point of a valid sequence of len bytes (from utf8_seq). */
static unsigned utf8_cp(const unsigned char *s, size_t len)
{
    unsigned cp = s[0] & (0x7f >> len);
    for (size_t i = 1; i < len; i++)
        cp = cp << 6 | (s[i] & 0x3f);
    return cp;
}

/* Format characters a terminal renders as nothing or uses to reorder the
 * line: shown as escapes so a name cannot pose as another. */
static int invisible_cp(unsigned cp)
{
    return (cp >= 0x200b && cp <= 0x200f) || (cp >= 0x202a && cp <= 0x202e) ||
           (cp >= 0x2060 && cp <= 0x2069) || cp == 0xfeff || cp == 0x061c;
}

/* One escaped unit of s at *i into e (at most 6 bytes + NUL); returns its
 * length and advances *i. */
static size_t human_unit(const unsigned char *u, size_t n, size_t *i, char e[8])
{
    static const char hex[] = "0123456789abcdef";
    unsigned c = u[*i];
    if (c >= 0x20 && c < 0x7f && c != '\\') {
        e[0] = (char)c;
        (*i)++;
        return 1;
    }
    if (c == '\\' || c == '\n' || c == '\t' || c == '\r') {
        e[0] = '\\';
        e[1] = c == '\n' ? 'n' : c == '\t' ? 't' : c == '\r' ? 'r' : '\\';
        (*i)++;
        return 2;
    }
    size_t len = c < 0x80 ? 0 : utf8_seq(u + *i, n - *i);
    if (!len) { /* C0 control, DEL, or a byte that is not valid UTF-8 */
        e[0] = '\\';
        e[1] = 'x';
        e[2] = hex[c >> 4];
        e[3] = hex[c & 15];
        (*i)++;
        return 4;
    }
    unsigned cp = utf8_cp(u + *i, len);
    if (cp <= 0x9f || invisible_cp(cp)) {
        e[0] = '\\';
        e[1] = 'u';
        e[2] = hex[cp >> 12 & 15];
        e[3] = hex[cp >> 8 & 15];
        e[4] = hex[cp >> 4 & 15];
        e[5] = hex[cp & 15];
        *i += len;
        return 6;
    }
    memcpy(e, u + *i, len);
    *i += len;
    return len;
}

void sbuf_human_str(struct sbuf *b, const char *s, size_t n)
{
    sbuf_human_bytes(b, s, strnlen(s, n));
}

void sbuf_human_bytes(struct sbuf *b, const char *s, size_t n)
{
    if (n > (SIZE_MAX - 1) / 4) {
        b->failed = 1;
        return;
    }
    if (sbuf_reserve(b, n * 4)) /* worst case: \xNN per byte */
        return;
    const unsigned char *u = (const unsigned char *)s;
    char *o = b->data + b->len;
    for (size_t i = 0; i < n;)
        o += human_unit(u, n, &i, o);
    b->len = (size_t)(o - b->data);
    b->data[b->len] = '\0';
}

size_t cbus_human_str(char *out, size_t cap, const char *s, size_t n)
{
    if (!cap)
        return 0;
    n = strnlen(s, n);
    const unsigned char *u = (const unsigned char *)s;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        char e[8];
        size_t k = human_unit(u, n, &i, e);
        if (o + k >= cap)
            break;
        memcpy(out + o, e, k);
        o += k;
    }
    out[o] = '\0';
    return o;
}

/* The exposition format is UTF-8 with \\, \" and \n escaped; a scraper
 * rejects the whole page for one invalid byte, so invalid UTF-8 becomes
 * U+FFFD exactly as sbuf_json_str() does (the label then names the same
 * string as snapshot.json). */
void sbuf_prom_label(struct sbuf *b, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    n = strnlen(s, n);
    for (size_t i = 0; i < n;) {
        if (u[i] == '\\') {
            sbuf_add(b, "\\\\", 2);
        } else if (u[i] == '"') {
            sbuf_add(b, "\\\"", 2);
        } else if (u[i] == '\n') {
            sbuf_add(b, "\\n", 2);
        } else if (u[i] >= 0x80) {
            size_t len = utf8_seq(u + i, n - i);
            if (len) {
                sbuf_add(b, s + i, len);
                i += len;
            } else {
                sbuf_add(b, "\xef\xbf\xbd", 3);
                i++;
            }
            continue;
        } else {
            sbuf_add(b, s + i, 1);
        }
        i++;
    }
}
