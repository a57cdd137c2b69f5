#include "http.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *find_crlf(const char *p, const char *end)
{
    for (; p + 1 < end; p++)
        if (p[0] == '\r' && p[1] == '\n')
            return p;
    return NULL;
}

static void copy_trimmed(char *dst, size_t cap, const char *s, size_t n)
{
    while (n && (*s == ' ' || *s == '\t')) {
        s++;
        n--;
    }
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, s, n);
    dst[n] = '\0';
}

/* Whether a comma-separated header value contains token (case-insensitive). */
static int has_token(const char *value, const char *token)
{
    size_t tl = strlen(token);
    for (const char *p = value; *p;) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *e = p;
        while (*e && *e != ',')
            e++;
        const char *t = e;
        while (t > p && t[-1] == ' ')
            t--;
        if ((size_t)(t - p) == tl && !strncasecmp(p, token, tl))
            return 1;
        p = e;
    }
    return 0;
}

static int parse_headers(const char *buf, const char *hend, struct http_request *req)
{
    const char *p = buf;
    const char *eol = find_crlf(p, hend + 2);
    if (!eol)
        return -1;
    /* request line: METHOD SP TARGET SP HTTP/1.x */
    const char *sp1 = memchr(p, ' ', (size_t)(eol - p));
    if (!sp1 || sp1 == p || (size_t)(sp1 - p) >= sizeof req->method)
        return -1;
    const char *sp2 = memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1));
    if (!sp2 || (size_t)(sp2 - sp1 - 1) >= sizeof req->target)
        return -1;
    memcpy(req->method, p, (size_t)(sp1 - p));
    req->method[sp1 - p] = '\0';
    memcpy(req->target, sp1 + 1, (size_t)(sp2 - sp1 - 1));
    req->target[sp2 - sp1 - 1] = '\0';
    size_t vlen = (size_t)(eol - sp2 - 1);
    if (vlen != 8 || memcmp(sp2 + 1, "HTTP/1.", 7))
        return -1;
    int http10 = sp2[8] == '0';
    req->keep_alive = !http10;
    int have_length = 0;
    for (p = eol + 2; p < hend + 2;) {
        eol = find_crlf(p, hend + 2);
        if (!eol || eol == p)
            break;
        const char *colon = memchr(p, ':', (size_t)(eol - p));
        if (!colon)
            return -1;
        size_t nlen = (size_t)(colon - p);
        char value[256];
        copy_trimmed(value, sizeof value, colon + 1, (size_t)(eol - colon - 1));
        if (nlen == 14 && !strncasecmp(p, "Content-Length", 14)) {
            char *end;
            if (!isdigit((unsigned char)value[0]))
                return -1;
            unsigned long long cl = strtoull(value, &end, 10);
            if (*end || cl > HTTP_MAX_BODY)
                return -1;
            req->content_length = (size_t)cl;
            have_length = 1;
        } else if (nlen == 17 && !strncasecmp(p, "Transfer-Encoding", 17)) {
            if (has_token(value, "chunked"))
                req->chunked = 1;
            else
                return -1; /* no other transfer coding is accepted */
        } else if (nlen == 16 && !strncasecmp(p, "Content-Encoding", 16)) {
            if (has_token(value, "gzip"))
                req->gzip = 1;
            else if (value[0] && strcasecmp(value, "identity"))
                return -1;
        } else if (nlen == 12 && !strncasecmp(p, "Content-Type", 12)) {
            copy_trimmed(req->content_type, sizeof req->content_type, value, strlen(value));
        } else if (nlen == 13 && !strncasecmp(p, "Authorization", 13)) {
            copy_trimmed(req->authorization, sizeof req->authorization, value, strlen(value));
        } else if (nlen == 28 && !strncasecmp(p, "x-langfuse-ingestion-version", 28)) {
            copy_trimmed(req->langfuse_version, sizeof req->langfuse_version, value, strlen(value));
        } else if (nlen == 10 && !strncasecmp(p, "Connection", 10)) {
            if (has_token(value, "close"))
                req->keep_alive = 0;
            else if (has_token(value, "keep-alive"))
                req->keep_alive = 1;
        } else if (nlen == 6 && !strncasecmp(p, "Expect", 6)) {
            if (!strcasecmp(value, "100-continue"))
                req->expect_continue = 1;
        }
        p = eol + 2;
    }
    if (req->chunked && have_length)
        return -1; /* RFC 9112 6.3: ambiguous framing, refuse it */
    return 0;
}

/* Walks chunked framing from p.  Returns 1 with *end set past the last
 * chunk's trailer (appending data to body when body is non-NULL), 0 if
 * incomplete, -1 if malformed. */
static int walk_chunks(const char *p, const char *end, struct sbuf *body, const char **out_end)
{
    size_t total = 0;
    for (;;) {
        const char *eol = find_crlf(p, end);
        if (!eol)
            return 0;
        char *hex_end;
        if (!isxdigit((unsigned char)*p))
            return -1;
        unsigned long long n = strtoull(p, &hex_end, 16);
        if (hex_end > eol || (*hex_end != '\r' && *hex_end != ';'))
            return -1;
        total += n;
        if (n > HTTP_MAX_BODY || total > HTTP_MAX_BODY)
            return -1;
        p = eol + 2;
        if (n == 0) {
            /* trailers, then an empty line */
            for (;;) {
                eol = find_crlf(p, end);
                if (!eol)
                    return 0;
                if (eol == p) {
                    *out_end = eol + 2;
                    return 1;
                }
                p = eol + 2;
            }
        }
        if ((size_t)(end - p) < n + 2)
            return 0;
        if (p[n] != '\r' || p[n + 1] != '\n')
            return -1;
        if (body)
            sbuf_add(body, p, (size_t)n);
        p += n + 2;
    }
}

int http_parse(const char *buf, size_t len, struct http_request *req, struct sbuf *chunk_buf,
               const char **body, size_t *body_len, size_t *consumed)
{
    memset(req, 0, sizeof *req);
    const char *hend = NULL;
    size_t scan = len < HTTP_MAX_HEADER ? len : HTTP_MAX_HEADER;
    for (size_t i = 3; i < scan; i++) {
        if (buf[i] == '\n' && buf[i - 1] == '\r' && buf[i - 2] == '\n' && buf[i - 3] == '\r') {
            hend = buf + i - 3;
            break;
        }
    }
    if (!hend)
        return len >= HTTP_MAX_HEADER ? -1 : 0;
    if (parse_headers(buf, hend, req))
        return -1;
    req->header_len = (size_t)(hend + 4 - buf);
    const char *b = hend + 4, *end = buf + len;
    if (req->chunked) {
        const char *bend;
        int r = walk_chunks(b, end, NULL, &bend);
        if (r <= 0)
            return r;
        sbuf_reset(chunk_buf);
        walk_chunks(b, end, chunk_buf, &bend);
        *body = chunk_buf->data ? chunk_buf->data : "";
        *body_len = chunk_buf->len;
        *consumed = (size_t)(bend - buf);
        return 1;
    }
    if ((size_t)(end - b) < req->content_length)
        return 0;
    *body = b;
    *body_len = req->content_length;
    *consumed = req->header_len + req->content_length;
    return 1;
}

const char *http_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Status";
    }
}
