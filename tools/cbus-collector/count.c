#include "count.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <msgpack.h>
#include <stddef.h>
#include <string.h>
#include <zlib.h>

int count_gunzip(const void *in, size_t len, struct sbuf *out)
{
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    /* 15 + 32: accept a gzip or a zlib header. */
    if (inflateInit2(&zs, 15 + 32) != Z_OK)
        return -EINVAL;
    zs.next_in = (Bytef *)(uintptr_t)in;
    zs.avail_in = (uInt)len;
    int r;
    do {
        if (sbuf_reserve(out, len * 4 + 65536)) {
            inflateEnd(&zs);
            return -ENOMEM;
        }
        zs.next_out = (Bytef *)out->data + out->len;
        zs.avail_out = (uInt)(out->cap - out->len - 1);
        size_t before = zs.avail_out;
        r = inflate(&zs, Z_NO_FLUSH);
        out->len += before - zs.avail_out;
        out->data[out->len] = '\0';
    } while (r == Z_OK);
    inflateEnd(&zs);
    return r == Z_STREAM_END ? 0 : -EINVAL;
}

/* A collector's protobuf-JSON parser takes an AnyValue.intValue only as an
 * int64 (a decimal string or a number) and refuses the whole request
 * otherwise: the full parse does the same, so the loopback collector answers
 * 400 where a real one would.  1 when every intValue under o is valid. */
static int int_values_ok(const cJSON *o, int depth)
{
    if (depth > 64)
        return 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, o) {
        if (c->string && !strcmp(c->string, "intValue")) {
            const char *t = cJSON_IsString(c) ? c->valuestring : NULL;
            if (t) {
                /* -9223372036854775808 .. 9223372036854775807, decimal */
                const char *d = t + (*t == '-');
                size_t n = strlen(d);
                if (!n || n > 19 || strspn(d, "0123456789") != n)
                    return 0;
                if (n == 19 && strcmp(d, *t == '-' ? "9223372036854775808" : "9223372036854775807") > 0)
                    return 0;
            } else if (!cJSON_IsNumber(c) || !(c->valuedouble < 9223372036854775807.0) ||
                       c->valuedouble < -9223372036854775808.0 ||
                       (double)(int64_t)c->valuedouble != c->valuedouble) {
                return 0; /* not a number, NaN, out of range or not whole */
            }
        } else if ((cJSON_IsObject(c) || cJSON_IsArray(c)) && !int_values_ok(c, depth + 1)) {
            return 0;
        }
    }
    return 1;
}

int count_otlp_json(const char *json, size_t len, int full, struct count_result *out)
{
    memset(out, 0, sizeof *out);
    if (!full) {
        /* find "spanId" by its rare capital I (memchr is vectorised; memmem
         * with this needle was the collector's top cost in the benchmark) */
        const char *p = json, *end = json + len;
        while ((p = memchr(p, 'I', (size_t)(end - p)))) {
            if (p - json >= 5 && end - p >= 3 && !memcmp(p - 5, "\"span", 5) && p[1] == 'd' && p[2] == '"')
                out->spans++;
            p++;
        }
        return 0;
    }
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root)
        return -EINVAL;
    cJSON *rs = cJSON_GetObjectItemCaseSensitive(root, "resourceSpans");
    if (!cJSON_IsArray(rs) || !int_values_ok(root, 0)) {
        cJSON_Delete(root);
        return -EINVAL;
    }
    cJSON *r, *s, *sp;
    cJSON_ArrayForEach(r, rs) {
        cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(r, "scopeSpans")) {
            cJSON_ArrayForEach(sp, cJSON_GetObjectItemCaseSensitive(s, "spans")) {
                out->spans++;
                out->span_events += (uint64_t)cJSON_GetArraySize(
                    cJSON_GetObjectItemCaseSensitive(sp, "events"));
            }
        }
    }
    cJSON_Delete(root);
    return 0;
}

/* Reads a msgpack array/map header (any width) at *p.  Returns its element
 * count, or -1 when the value is not of that kind or is cut short. */
static int64_t mp_header(const uint8_t **p, const uint8_t *end, int want_map)
{
    if (*p >= end)
        return -1;
    uint8_t b = *(*p)++;
    if (want_map && (b & 0xf0) == 0x80)
        return b & 0x0f;
    if (!want_map && (b & 0xf0) == 0x90)
        return b & 0x0f;
    size_t w = 0;
    if (b == (want_map ? 0xde : 0xdc))
        w = 2;
    else if (b == (want_map ? 0xdf : 0xdd))
        w = 4;
    if (!w || end - *p < (ptrdiff_t)w)
        return -1;
    int64_t n = 0;
    for (size_t i = 0; i < w; i++)
        n = n << 8 | *(*p)++;
    return n;
}

/* Skips one scalar (nil, bool, int, float, str, bin); -1 for anything else. */
static int mp_skip_scalar(const uint8_t **p, const uint8_t *end)
{
    if (*p >= end)
        return -1;
    uint8_t b = *(*p)++;
    size_t skip = 0, lenw = 0;
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3)
        return 0;
    if ((b & 0xe0) == 0xa0)
        skip = b & 0x1f;
    else if (b == 0xcc || b == 0xd0)
        skip = 1;
    else if (b == 0xcd || b == 0xd1)
        skip = 2;
    else if (b == 0xce || b == 0xd2 || b == 0xca)
        skip = 4;
    else if (b == 0xcf || b == 0xd3 || b == 0xcb)
        skip = 8;
    else if (b == 0xd9 || b == 0xc4)
        lenw = 1;
    else if (b == 0xda || b == 0xc5)
        lenw = 2;
    else if (b == 0xdb || b == 0xc6)
        lenw = 4;
    else
        return -1;
    if (lenw) {
        if (end - *p < (ptrdiff_t)lenw)
            return -1;
        for (size_t i = 0; i < lenw; i++)
            skip = skip << 8 | *(*p)++;
    }
    if ((size_t)(end - *p) < skip)
        return -1;
    *p += skip;
    return 0;
}

/* The top level only: {"...": scalar, ..., "events": [N items]} or [N items]. */
static int count_msgpack_fast(const uint8_t *p, const uint8_t *end, struct count_result *out)
{
    if (p < end && ((*p & 0xf0) == 0x90 || *p == 0xdc || *p == 0xdd)) {
        int64_t n = mp_header(&p, end, 0);
        if (n < 0)
            return -EINVAL;
        out->events = (uint64_t)n;
        return 0;
    }
    int64_t keys = mp_header(&p, end, 1);
    for (int64_t i = 0; i < keys; i++) {
        const uint8_t *k = p;
        if (k < end && *k == 0xa6 && end - k >= 7 && !memcmp(k + 1, "events", 6)) {
            p += 7;
            int64_t n = mp_header(&p, end, 0);
            if (n < 0)
                return -EINVAL;
            out->events = (uint64_t)n;
            return 0;
        }
        if (mp_skip_scalar(&p, end) || mp_skip_scalar(&p, end))
            return -EINVAL;
    }
    return -EINVAL;
}

int count_msgpack(const void *data, size_t len, int full, struct count_result *out)
{
    memset(out, 0, sizeof *out);
    if (!full)
        return count_msgpack_fast(data, (const uint8_t *)data + len, out);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    int ret = -EINVAL;
    if (msgpack_unpack_next(&u, data, len, &off) != MSGPACK_UNPACK_SUCCESS)
        goto out;
    msgpack_object o = u.data;
    if (o.type == MSGPACK_OBJECT_ARRAY) {
        out->events = o.via.array.size;
        ret = 0;
    } else if (o.type == MSGPACK_OBJECT_MAP) {
        for (uint32_t i = 0; i < o.via.map.size; i++) {
            msgpack_object_kv *kv = &o.via.map.ptr[i];
            if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == 6 &&
                !memcmp(kv->key.via.str.ptr, "events", 6) && kv->val.type == MSGPACK_OBJECT_ARRAY) {
                out->events = kv->val.via.array.size;
                ret = 0;
            }
        }
    }
out:
    msgpack_unpacked_destroy(&u);
    return ret;
}
