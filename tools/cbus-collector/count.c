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

/* ---- OTLP/protobuf ----------------------------------------------------------- */

struct pbr {
    const uint8_t *p, *end;
};

static int pb_varint(struct pbr *r, uint64_t *v)
{
    uint64_t x = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (r->p >= r->end)
            return -1;
        uint8_t c = *r->p++;
        x |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return -1;
}

/* Next field: its number, wire type and, for length-delimited fields, the
 * sub-reader over its bytes.  0, 1 at the end, -1 when malformed. */
static int pb_next(struct pbr *r, unsigned *field, unsigned *wt, struct pbr *sub)
{
    if (r->p >= r->end)
        return 1;
    uint64_t key, v;
    if (pb_varint(r, &key) || (key >> 3) == 0 || (key >> 3) > 536870911u)
        return -1;
    *field = (unsigned)(key >> 3);
    *wt = (unsigned)(key & 7);
    switch (*wt) {
    case 0:
        return pb_varint(r, &v);
    case 1:
        if (r->end - r->p < 8)
            return -1;
        r->p += 8;
        return 0;
    case 2:
        if (pb_varint(r, &v) || v > (uint64_t)(r->end - r->p))
            return -1;
        sub->p = r->p;
        sub->end = r->p + v;
        r->p += v;
        return 0;
    case 5:
        if (r->end - r->p < 4)
            return -1;
        r->p += 4;
        return 0;
    default:
        return -1; /* groups: not in OTLP */
    }
}

static int utf8_ok(const struct pbr *s)
{
    const uint8_t *p = s->p, *e = s->end;
    while (p < e) {
        uint8_t c = *p;
        if (c < 0x80) {
            p++;
            continue;
        }
        size_t n = (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
        if (!n || (size_t)(e - p) < n)
            return 0;
        uint32_t cp = c & (0x7f >> n);
        for (size_t i = 1; i < n; i++) {
            if ((p[i] & 0xc0) != 0x80)
                return 0;
            cp = cp << 6 | (p[i] & 0x3f);
        }
        static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        p += n;
    }
    return 1;
}

static int any_value_ok(struct pbr r, int depth);

/* KeyValue {key = 1, value = 2} */
static int key_value_ok(struct pbr r, int depth)
{
    unsigned f, wt;
    struct pbr sub;
    int k;
    while ((k = pb_next(&r, &f, &wt, &sub)) == 0) {
        if (f == 1 && (wt != 2 || !utf8_ok(&sub)))
            return 0;
        if (f == 2 && (wt != 2 || !any_value_ok(sub, depth + 1)))
            return 0;
    }
    return k == 1;
}

/* AnyValue {string_value = 1, ..., array_value = 5 {values = 1},
 * kvlist_value = 6 {values = 1 (KeyValue)}} */
static int any_value_ok(struct pbr r, int depth)
{
    if (depth > 32)
        return 0;
    unsigned f, wt, f2, wt2;
    struct pbr sub, item;
    int k, k2;
    while ((k = pb_next(&r, &f, &wt, &sub)) == 0) {
        if (f == 1 && (wt != 2 || !utf8_ok(&sub)))
            return 0;
        if ((f == 5 || f == 6) && wt == 2) {
            while ((k2 = pb_next(&sub, &f2, &wt2, &item)) == 0)
                if (f2 == 1 && (wt2 != 2 || !(f == 5 ? any_value_ok(item, depth + 1) : key_value_ok(item, depth + 1))))
                    return 0;
            if (k2 != 1)
                return 0;
        }
    }
    return k == 1;
}

/* Span {trace_id = 1, span_id = 2, parent_span_id = 4, name = 5,
 * attributes = 9, events = 11 {name = 2, attributes = 3}, status = 15
 * {message = 2}} */
static int span_ok(struct pbr r, uint64_t *events)
{
    unsigned f, wt, f2, wt2;
    struct pbr sub, item;
    int k, k2, have_trace = 0, have_span = 0;
    while ((k = pb_next(&r, &f, &wt, &sub)) == 0) {
        size_t n = (size_t)(sub.end - sub.p);
        switch (f) {
        case 1:
            if (wt != 2 || n != 16)
                return 0;
            have_trace = 1;
            break;
        case 2:
            if (wt != 2 || n != 8)
                return 0;
            have_span = 1;
            break;
        case 4:
            if (wt != 2 || (n != 0 && n != 8))
                return 0;
            break;
        case 5:
            if (wt != 2 || !utf8_ok(&sub))
                return 0;
            break;
        case 9:
            if (wt != 2 || !key_value_ok(sub, 0))
                return 0;
            break;
        case 11:
        case 15:
            if (wt != 2)
                return 0;
            if (f == 11)
                (*events)++;
            while ((k2 = pb_next(&sub, &f2, &wt2, &item)) == 0) {
                if (f2 == 2 && (wt2 != 2 || !utf8_ok(&item)))
                    return 0;
                if (f == 11 && f2 == 3 && (wt2 != 2 || !key_value_ok(item, 0)))
                    return 0;
            }
            if (k2 != 1)
                return 0;
            break;
        default:
            break;
        }
    }
    return k == 1 && have_trace && have_span;
}

int count_otlp_protobuf(const void *data, size_t len, int full, struct count_result *out)
{
    memset(out, 0, sizeof *out);
    struct pbr req = {data, (const uint8_t *)data + len}, rs, ss, sp;
    unsigned f, wt;
    int k;
    while ((k = pb_next(&req, &f, &wt, &rs)) == 0) {
        if (f != 1)
            continue;
        if (wt != 2)
            return -EINVAL;
        int k2;
        while ((k2 = pb_next(&rs, &f, &wt, &ss)) == 0) {
            if (f == 1 && wt == 2 && full) { /* Resource {attributes = 1} */
                struct pbr a;
                int k4;
                while ((k4 = pb_next(&ss, &f, &wt, &a)) == 0)
                    if (f == 1 && (wt != 2 || !key_value_ok(a, 0)))
                        return -EINVAL;
                if (k4 != 1)
                    return -EINVAL;
                continue;
            }
            if (f != 2)
                continue;
            if (wt != 2)
                return -EINVAL;
            int k3;
            while ((k3 = pb_next(&ss, &f, &wt, &sp)) == 0) {
                if (f != 2)
                    continue;
                if (wt != 2 || (full && !span_ok(sp, &out->span_events)))
                    return -EINVAL;
                out->spans++;
            }
            if (k3 != 1)
                return -EINVAL;
        }
        if (k2 != 1)
            return -EINVAL;
    }
    return k == 1 ? 0 : -EINVAL;
}
