#include "retry.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum send_outcome retry_classify(long http_status, int curl_code)
{
    if (curl_code) {
        switch ((CURLcode)curl_code) {
        case CURLE_COULDNT_CONNECT:
        case CURLE_COULDNT_RESOLVE_HOST:
        case CURLE_COULDNT_RESOLVE_PROXY:
        case CURLE_OPERATION_TIMEDOUT:
        case CURLE_SEND_ERROR:
        case CURLE_RECV_ERROR:
        case CURLE_GOT_NOTHING:
        case CURLE_PARTIAL_FILE:
        case CURLE_HTTP2:
        case CURLE_HTTP2_STREAM:
            return SEND_RETRY; /* the request may never have arrived */
        default:
            return SEND_REJECT; /* TLS, URL, option errors: retrying will not help */
        }
    }
    if (http_status >= 200 && http_status < 300)
        return SEND_OK;
    if (http_status == 429 || http_status == 502 || http_status == 503 || http_status == 504)
        return SEND_RETRY;
    return SEND_REJECT;
}

int retry_after_parse(const char *value, time_t now, uint64_t *out_ns)
{
    if (!value)
        return -EINVAL;
    while (*value == ' ' || *value == '\t')
        value++;
    if (isdigit((unsigned char)*value)) {
        char *end;
        errno = 0;
        unsigned long long s = strtoull(value, &end, 10);
        while (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n')
            end++;
        if (errno || *end)
            return -EINVAL;
        if (s > 86400ull * 365)
            s = 86400ull * 365;
        *out_ns = s * 1000000000ull;
        return 0;
    }
    /* curl_getdate parses the three HTTP date forms (IMF-fixdate, RFC 850, asctime) */
    time_t t = curl_getdate(value, NULL);
    if (t == (time_t)-1)
        return -EINVAL;
    *out_ns = t > now ? (uint64_t)(t - now) * 1000000000ull : 0;
    return 0;
}

uint64_t retry_backoff_ns(unsigned attempt, uint64_t initial_ns, uint64_t max_ns, uint64_t rnd)
{
    uint64_t d = initial_ns ? initial_ns : 1;
    for (unsigned i = 0; i < attempt && d < max_ns; i++)
        d *= 2;
    if (d > max_ns)
        d = max_ns;
    uint64_t half = d / 2;
    return half + rnd % (d - half + 1);
}

int retry_partial_success(const char *body, size_t len, uint64_t *rejected, char *msg, size_t msglen)
{
    *rejected = 0;
    if (msglen)
        msg[0] = '\0';
    if (!body || !len || !memmem(body, len, "partialSuccess", 14))
        return 0;
    cJSON *root = cJSON_ParseWithLength(body, len);
    if (!root)
        return 0;
    int found = 0;
    cJSON *ps = cJSON_GetObjectItemCaseSensitive(root, "partialSuccess");
    if (cJSON_IsObject(ps)) {
        cJSON *r = cJSON_GetObjectItemCaseSensitive(ps, "rejectedSpans");
        /* int64 is a decimal string in OTLP/JSON; accept a number too */
        if (cJSON_IsString(r) && r->valuestring)
            *rejected = strtoull(r->valuestring, NULL, 10);
        else if (cJSON_IsNumber(r) && r->valuedouble > 0)
            *rejected = (uint64_t)r->valuedouble;
        cJSON *m = cJSON_GetObjectItemCaseSensitive(ps, "errorMessage");
        if (cJSON_IsString(m) && m->valuestring && m->valuestring[0] && msglen)
            snprintf(msg, msglen, "%s", m->valuestring);
        found = *rejected > 0 || (msglen && msg[0]);
    }
    cJSON_Delete(root);
    return found;
}

/* Protobuf reading, bounds-checked: each returns 0 or -1 (past the end). */
static int pb_get_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    uint64_t r = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (*p >= end)
            return -1;
        uint8_t c = *(*p)++;
        r |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) {
            *v = r;
            return 0;
        }
    }
    return -1; /* more than 10 bytes */
}

/* Skips a field of wire type wt; groups (3, 4) and unknown types fail. */
static int pb_skip(const uint8_t **p, const uint8_t *end, unsigned wt)
{
    uint64_t v;
    switch (wt) {
    case 0:
        return pb_get_varint(p, end, &v);
    case 1:
        if (end - *p < 8)
            return -1;
        *p += 8;
        return 0;
    case 2:
        if (pb_get_varint(p, end, &v) || v > (uint64_t)(end - *p))
            return -1;
        *p += v;
        return 0;
    case 5:
        if (end - *p < 4)
            return -1;
        *p += 4;
        return 0;
    default:
        return -1;
    }
}

int retry_partial_success_pb(const void *body, size_t len, uint64_t *rejected, char *msg, size_t msglen)
{
    *rejected = 0;
    if (msglen)
        msg[0] = '\0';
    if (!body || !len)
        return 0;
    const uint8_t *p = body, *end = p + len;
    const uint8_t *ps = NULL, *ps_end = NULL;
    while (p < end) {
        uint64_t key;
        if (pb_get_varint(&p, end, &key))
            return 0;
        if (key == (1 << 3 | 2)) { /* partial_success; the last one wins, as in protobuf */
            uint64_t n;
            if (pb_get_varint(&p, end, &n) || n > (uint64_t)(end - p))
                return 0;
            ps = p;
            ps_end = p + n;
            p += n;
        } else if ((key >> 3) == 0 || pb_skip(&p, end, (unsigned)(key & 7))) {
            return 0;
        }
    }
    if (!ps)
        return 0;
    int64_t count = 0;
    const uint8_t *m = NULL;
    size_t ml = 0;
    for (p = ps; p < ps_end;) {
        uint64_t key, v;
        if (pb_get_varint(&p, ps_end, &key))
            return 0;
        if (key == (1 << 3 | 0)) {
            if (pb_get_varint(&p, ps_end, &v))
                return 0;
            count = (int64_t)v;
        } else if (key == (2 << 3 | 2)) {
            if (pb_get_varint(&p, ps_end, &v) || v > (uint64_t)(ps_end - p))
                return 0;
            m = p;
            ml = (size_t)v;
            p += v;
        } else if ((key >> 3) == 0 || pb_skip(&p, ps_end, (unsigned)(key & 7))) {
            return 0;
        }
    }
    if (count > 0)
        *rejected = (uint64_t)count;
    if (m && ml && msglen) {
        size_t n = ml < msglen - 1 ? ml : msglen - 1;
        for (size_t i = 0; i < n; i++)
            msg[i] = m[i] < 0x20 || m[i] == 0x7f ? ' ' : (char)m[i];
        msg[n] = '\0';
    }
    return *rejected > 0 || (msglen && msg[0]);
}
