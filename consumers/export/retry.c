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
