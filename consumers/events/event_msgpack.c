#include "event_msgpack.h"

#include "event_body.h"

#include <cbus/cbus.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* ---- writer ------------------------------------------------------------------ */

static inline void put8(struct cbus_mp_writer *w, uint8_t v)
{
    *w->p++ = v;
}

static inline void put16(struct cbus_mp_writer *w, uint16_t v)
{
    w->p[0] = (uint8_t)(v >> 8);
    w->p[1] = (uint8_t)v;
    w->p += 2;
}

static inline void put32(struct cbus_mp_writer *w, uint32_t v)
{
    w->p[0] = (uint8_t)(v >> 24);
    w->p[1] = (uint8_t)(v >> 16);
    w->p[2] = (uint8_t)(v >> 8);
    w->p[3] = (uint8_t)v;
    w->p += 4;
}

static inline void put64(struct cbus_mp_writer *w, uint64_t v)
{
    put32(w, (uint32_t)(v >> 32));
    put32(w, (uint32_t)v);
}

static inline void mp_map(struct cbus_mp_writer *w, uint32_t n)
{
    if (n < 16) {
        put8(w, (uint8_t)(0x80 | n));
    } else if (n <= UINT16_MAX) {
        put8(w, 0xde);
        put16(w, (uint16_t)n);
    } else {
        put8(w, 0xdf);
        put32(w, n);
    }
}

static inline void mp_array(struct cbus_mp_writer *w, uint32_t n)
{
    if (n < 16) {
        put8(w, (uint8_t)(0x90 | n));
    } else if (n <= UINT16_MAX) {
        put8(w, 0xdc);
        put16(w, (uint16_t)n);
    } else {
        put8(w, 0xdd);
        put32(w, n);
    }
}

static inline void mp_uint(struct cbus_mp_writer *w, uint64_t v)
{
    if (v < 128) {
        put8(w, (uint8_t)v);
    } else if (v <= UINT8_MAX) {
        put8(w, 0xcc);
        put8(w, (uint8_t)v);
    } else if (v <= UINT16_MAX) {
        put8(w, 0xcd);
        put16(w, (uint16_t)v);
    } else if (v <= UINT32_MAX) {
        put8(w, 0xce);
        put32(w, (uint32_t)v);
    } else {
        put8(w, 0xcf);
        put64(w, v);
    }
}

static inline void mp_int(struct cbus_mp_writer *w, int64_t v)
{
    if (v >= 0) {
        mp_uint(w, (uint64_t)v);
    } else if (v >= -32) {
        put8(w, (uint8_t)(int8_t)v); /* negative fixint 0xe0..0xff */
    } else if (v >= INT8_MIN) {
        put8(w, 0xd0);
        put8(w, (uint8_t)(int8_t)v);
    } else if (v >= INT16_MIN) {
        put8(w, 0xd1);
        put16(w, (uint16_t)(int16_t)v);
    } else if (v >= INT32_MIN) {
        put8(w, 0xd2);
        put32(w, (uint32_t)(int32_t)v);
    } else {
        put8(w, 0xd3);
        put64(w, (uint64_t)v);
    }
}

static inline void mp_f64(struct cbus_mp_writer *w, double v)
{
    uint64_t bits;
    memcpy(&bits, &v, 8);
    put8(w, 0xcb);
    put64(w, bits);
}

static inline void mp_bool(struct cbus_mp_writer *w, int v)
{
    put8(w, v ? 0xc3 : 0xc2);
}

static inline void mp_nil(struct cbus_mp_writer *w)
{
    put8(w, 0xc0);
}

static void put_str_header(struct cbus_mp_writer *w, uint32_t n)
{
    if (n < 32) {
        put8(w, (uint8_t)(0xa0 | n));
    } else if (n <= UINT8_MAX) {
        put8(w, 0xd9);
        put8(w, (uint8_t)n);
    } else if (n <= UINT16_MAX) {
        put8(w, 0xda);
        put16(w, (uint16_t)n);
    } else {
        put8(w, 0xdb);
        put32(w, n);
    }
}

size_t cbus_mp_str_header_size(uint32_t n)
{
    return n < 32 ? 1 : n <= UINT8_MAX ? 2 : n <= UINT16_MAX ? 3 : 5;
}

static inline void mp_str(struct cbus_mp_writer *w, const char *s, uint32_t n)
{
    put_str_header(w, n);
    memcpy(w->p, s, n);
    w->p += n;
}

static inline void mp_bin(struct cbus_mp_writer *w, const void *p, uint32_t n)
{
    if (n <= UINT8_MAX) {
        put8(w, 0xc4);
        put8(w, (uint8_t)n);
    } else if (n <= UINT16_MAX) {
        put8(w, 0xc5);
        put16(w, (uint16_t)n);
    } else {
        put8(w, 0xc6);
        put32(w, n);
    }
    memcpy(w->p, p, n);
    w->p += n;
}

/* All bytes below 0x80, eight at a time: the common case for model names,
 * ids and English previews, checked before the full UTF-8 validation. */
static inline int all_ascii(const char *s, size_t n)
{
    uint64_t acc = 0, word;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        memcpy(&word, s + i, 8);
        acc |= word;
    }
    for (; i < n; i++)
        acc |= (uint8_t)s[i];
    return (acc & UINT64_C(0x8080808080808080)) == 0;
}

static inline void mp_text(struct cbus_mp_writer *w, const char *s, uint32_t n)
{
    if (all_ascii(s, n) || cbus_utf8_valid(s, n))
        mp_str(w, s, n);
    else
        mp_bin(w, s, n);
}

static inline void mp_hex(struct cbus_mp_writer *w, const uint8_t *p, uint32_t n)
{
    static const char digits[] = "0123456789abcdef";
    put_str_header(w, 2 * n);
    for (uint32_t i = 0; i < n; i++) {
        w->p[2 * i] = (uint8_t)digits[p[i] >> 4];
        w->p[2 * i + 1] = (uint8_t)digits[p[i] & 15];
    }
    w->p += 2 * n;
}


/* Public entry points over the inline writers the event encoder uses. */
void cbus_mp_put_map(struct cbus_mp_writer *w, uint32_t n) { mp_map(w, n); }
void cbus_mp_put_array(struct cbus_mp_writer *w, uint32_t n) { mp_array(w, n); }
void cbus_mp_put_uint(struct cbus_mp_writer *w, uint64_t v) { mp_uint(w, v); }
void cbus_mp_put_int(struct cbus_mp_writer *w, int64_t v) { mp_int(w, v); }
void cbus_mp_put_bool(struct cbus_mp_writer *w, int v) { mp_bool(w, v); }
void cbus_mp_put_nil(struct cbus_mp_writer *w) { mp_nil(w); }
void cbus_mp_put_str(struct cbus_mp_writer *w, const char *s, uint32_t n) { mp_str(w, s, n); }
void cbus_mp_put_bin(struct cbus_mp_writer *w, const void *p, uint32_t n) { mp_bin(w, p, n); }
void cbus_mp_put_text(struct cbus_mp_writer *w, const char *s, uint32_t n) { mp_text(w, s, n); }
void cbus_mp_put_hex(struct cbus_mp_writer *w, const uint8_t *p, uint32_t n) { mp_hex(w, p, n); }

int cbus_utf8_valid(const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        unsigned cp;
        if (c >= 0xc2 && c <= 0xdf) {
            len = 2;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            len = 3;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            len = 4;
            cp = c & 0x07;
        } else {
            return 0; /* continuation byte, 0xc0/0xc1 overlong lead, or > U+10FFFF lead */
        }
        if (i + len > n)
            return 0;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return 0;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += len;
    }
    return 1;
}

/* ---- event encoder ----------------------------------------------------------- */

/* Keys are string literals; sizeof - 1 is their length, known at compile time. */
/* Keys are string literals shorter than 32 bytes: a fixstr header and a
 * copy whose length the compiler knows. */
#define KEY(w, lit)                                              \
    do {                                                         \
        static_assert(sizeof(lit) - 1 < 32, "fixstr key");      \
        *(w)->p++ = (uint8_t)(0xa0 | (sizeof(lit) - 1));         \
        memcpy((w)->p, (lit), sizeof(lit) - 1);                  \
        (w)->p += sizeof(lit) - 1;                               \
    } while (0)

static int id_zero(const uint8_t id[16])
{
    static const uint8_t zero[16];
    return memcmp(id, zero, 16) == 0;
}

static uint32_t field_len(const char *f, size_t size)
{
    return (uint32_t)strnlen(f, size);
}

/* Per-kind entries: how many, then the writer.  Kept side by side so the map
 * count and the entries cannot drift apart. */
static unsigned usage_count(const struct cbus_usage *u)
{
    return (unsigned)__builtin_popcount(u->usage_present & 0x1fu); /* the five counts */
}

static unsigned kind_entries(const struct cbus_event *ev)
{
    switch (cbus_kind_payload(ev->kind)) {
    case CBUS_PAYLOAD_LLM_START:
        return 3;
    case CBUS_PAYLOAD_TOKEN:
        return 1;
    case CBUS_PAYLOAD_USAGE:
        return (usage_count(&ev->u.usage) ? 1u : 0u) +
               (ev->u.usage.usage_present & CBUS_USAGE_DURATION ? 1u : 0u) +
               (ev->u.usage.usage_present & CBUS_USAGE_TTFT ? 1u : 0u) +
               (ev->u.usage.finish_reason != CBUS_FINISH_UNSET ? 1u : 0u) +
               (ev->u.usage.generations ? 1u : 0u);
    case CBUS_PAYLOAD_ERROR:
        return 2;
    case CBUS_PAYLOAD_RETRY:
        return 2;
    case CBUS_PAYLOAD_RETRIEVER:
        return 2;
    case CBUS_PAYLOAD_SPAN:
        return 1;
    case CBUS_PAYLOAD_SCORE:
        return 1;
    default:
        return 0;
    }
}

static void put_finish_reason(struct cbus_mp_writer *w, unsigned reason)
{
    const char *name = cbus_finish_reason_name(reason);
    if (name)
        mp_str(w, name, (uint32_t)strlen(name));
    else
        mp_uint(w, reason);
}

/* Kept whole (about 100 lines): one case per payload, each the list of its
 * wire keys in schema order, to be read beside kind_entries() and
 * read_kind_key(); split, the schema would be spread over functions. */
static void put_kind_entries(struct cbus_mp_writer *w, const struct cbus_event *ev)
{
    switch (cbus_kind_payload(ev->kind)) {
    case CBUS_PAYLOAD_LLM_START:
        KEY(w, "prompt_count");
        mp_uint(w, ev->u.llm_start.prompt_count);
        KEY(w, "est_input_tokens");
        mp_uint(w, ev->u.llm_start.est_input_tokens);
        KEY(w, "max_tokens");
        mp_uint(w, ev->u.llm_start.max_tokens);
        break;
    case CBUS_PAYLOAD_TOKEN:
        KEY(w, "index");
        mp_uint(w, ev->u.token.index);
        break;
    case CBUS_PAYLOAD_USAGE: {
        const struct cbus_usage *u = &ev->u.usage;
        unsigned n = usage_count(u);
        if (n) {
            KEY(w, "usage");
            mp_map(w, n);
            if (u->usage_present & CBUS_USAGE_INPUT) {
                KEY(w, "input_tokens");
                mp_uint(w, u->input_tokens);
            }
            if (u->usage_present & CBUS_USAGE_OUTPUT) {
                KEY(w, "output_tokens");
                mp_uint(w, u->output_tokens);
            }
            if (u->usage_present & CBUS_USAGE_CACHE_READ) {
                KEY(w, "cache_read_tokens");
                mp_uint(w, u->cache_read_tokens);
            }
            if (u->usage_present & CBUS_USAGE_CACHE_CREATION) {
                KEY(w, "cache_creation_tokens");
                mp_uint(w, u->cache_creation_tokens);
            }
            if (u->usage_present & CBUS_USAGE_REASONING) {
                KEY(w, "reasoning_tokens");
                mp_uint(w, u->reasoning_tokens);
            }
        }
        if (u->usage_present & CBUS_USAGE_DURATION) {
            KEY(w, "duration_ns");
            mp_uint(w, u->duration_ns);
        }
        if (u->usage_present & CBUS_USAGE_TTFT) {
            KEY(w, "ttft_ns");
            mp_uint(w, u->ttft_ns);
        }
        if (u->finish_reason != CBUS_FINISH_UNSET) {
            KEY(w, "finish_reason");
            put_finish_reason(w, u->finish_reason);
        }
        if (u->generations) {
            KEY(w, "generations");
            mp_uint(w, u->generations);
        }
        break;
    }
    case CBUS_PAYLOAD_ERROR:
        KEY(w, "http_status");
        mp_int(w, ev->u.error.http_status);
        KEY(w, "duration_ns");
        mp_uint(w, ev->u.error.duration_ns);
        break;
    case CBUS_PAYLOAD_RETRY:
        KEY(w, "attempt");
        mp_uint(w, ev->u.retry.attempt);
        KEY(w, "backoff_ns");
        mp_uint(w, ev->u.retry.backoff_ns);
        break;
    case CBUS_PAYLOAD_RETRIEVER:
        KEY(w, "document_count");
        mp_uint(w, ev->u.retriever.document_count);
        KEY(w, "duration_ns");
        mp_uint(w, ev->u.retriever.duration_ns);
        break;
    case CBUS_PAYLOAD_SPAN:
        KEY(w, "duration_ns");
        mp_uint(w, ev->u.span.duration_ns);
        break;
    case CBUS_PAYLOAD_SCORE: {
        const char *type = cbus_score_type_name(ev->u.score.type);
        KEY(w, "score");
        mp_map(w, 2);
        KEY(w, "type");
        if (type)
            mp_str(w, type, (uint32_t)strlen(type));
        else
            mp_uint(w, ev->u.score.type);
        KEY(w, "value");
        mp_f64(w, ev->u.score.value);
        break;
    }
    default:
        break;
    }
}


/* ---- body ----------------------------------------------------------------------
 * "body": a map of the sections the body has, in type order: text and
 * messages as text, tags as an array of text, metadata as a map of text to
 * text; then "<section>_orig_len" (uint) for each cut section and
 * "<section>_dropped" (uint) for each with entries dropped. */
static_assert(CBUS_EVMP_BODY_TYPES == CBUS_BODY_TYPES, "body_sha256 has a row per section type");
static_assert(CBUS_BODY_TYPES_MAX == CBUS_BODY_TYPES - 1, "a rebuilt body holds one section per type");

static uint32_t list_count(const struct cbus_body_part *p)
{
    uint32_t off = 0, n, count = 0;
    const char *item;
    while (cbus_body_list_next(p, &off, &item, &n))
        count++;
    return count;
}

static void put_body_key(struct cbus_mp_writer *w, unsigned t, const char *suffix)
{
    char k[32];
    int n = snprintf(k, sizeof k, "%s%s", cbus_body_type_name(t), suffix);
    mp_str(w, k, (uint32_t)n);
}

static unsigned body_entries(const struct cbus_body_parts *bp, unsigned mode)
{
    if (mode == CBUS_EVMP_PREVIEW_DROP)
        return 1;
    unsigned n = mode == CBUS_EVMP_PREVIEW_HASH ? 1u : 0u; /* "redacted" */
    n += bp->unknown ? 1u : 0u;                             /* "skipped_sections" */
    for (unsigned t = 1; t < CBUS_BODY_TYPES; t++) {
        const struct cbus_body_part *p = &bp->part[t];
        if (!p->data)
            continue;
        n += (mode == CBUS_EVMP_PREVIEW_HASH ? 2u : 1u) +
             ((p->flags & CBUS_BODY_SECTION_CUT) ? 1u : 0u) + (p->dropped ? 1u : 0u);
    }
    return n;
}

static void put_body(struct cbus_mp_writer *w, const struct cbus_body_parts *bp,
                     const struct cbus_evmp_opts *opts)
{
    unsigned mode = opts ? opts->body : CBUS_EVMP_PREVIEW_KEEP;
    mp_map(w, body_entries(bp, mode));
    if (mode != CBUS_EVMP_PREVIEW_KEEP) {
        KEY(w, "redacted");
        if (mode == CBUS_EVMP_PREVIEW_DROP) {
            mp_str(w, "drop", 4);
            return;
        }
        mp_str(w, "hash", 4);
    }
    for (unsigned t = 1; t < CBUS_BODY_TYPES; t++) {
        const struct cbus_body_part *p = &bp->part[t];
        if (!p->data)
            continue;
        if (mode == CBUS_EVMP_PREVIEW_HASH) {
            put_body_key(w, t, "_sha256");
            mp_hex(w, opts->body_sha256[t], 32);
            put_body_key(w, t, "_len");
            mp_uint(w, p->len);
        } else if (t == CBUS_BODY_TAGS || t == CBUS_BODY_METADATA) {
            put_body_key(w, t, "");
            uint32_t count = list_count(p);
            uint32_t off = 0, n;
            const char *item;
            if (t == CBUS_BODY_TAGS) {
                mp_array(w, count);
            } else {
                mp_map(w, (count + 1) / 2);
                if (count % 2) /* a key cut from its value: given an empty one */
                    count++;
            }
            for (uint32_t i = 0; i < count; i++) {
                if (cbus_body_list_next(p, &off, &item, &n))
                    mp_text(w, item, n);
                else
                    mp_str(w, "", 0);
            }
        } else {
            put_body_key(w, t, "");
            mp_text(w, p->data, p->len);
        }
        if (p->flags & CBUS_BODY_SECTION_CUT) {
            put_body_key(w, t, "_orig_len");
            mp_uint(w, p->orig_len);
        }
        if (p->dropped) {
            put_body_key(w, t, "_dropped");
            mp_uint(w, p->dropped);
        }
    }
    if (bp->unknown) { /* a newer producer's sections: said, not kept */
        KEY(w, "skipped_sections");
        mp_uint(w, (uint64_t)bp->unknown);
    }
}

/* The bounded strings in schema order, with their key. */
#define EV_TEXT_FIELDS(X) \
    X(provider) X(model) X(user) X(session) X(agent) X(tenant) X(request_id) X(name)

/* Kept whole (about 100 lines): the entry count in the map header must
 * match the entries written after it, and in one function the two lists
 * can be checked against each other line by line. */
int cbus_evmp_encode(const struct cbus_event *ev, const struct cbus_body *body,
                     const struct cbus_evmp_opts *opts, uint8_t *out, size_t cap)
{
    if (!ev || !out)
        return -EINVAL;
    struct cbus_body_parts bp;
    cbus_body_parts_of(body, &bp);
    int has_body = bp.count || bp.unknown;
    if (cap < CBUS_EVMP_MAX + (has_body ? CBUS_EVMP_BODY_MAX(body->len) : 0))
        return -ENOSPC;
    if (opts && (opts->body > CBUS_EVMP_PREVIEW_DROP ||
                 (opts->body == CBUS_EVMP_PREVIEW_HASH && !opts->body_sha256)))
        return -EINVAL;
    unsigned pmode = opts ? opts->preview : CBUS_EVMP_PREVIEW_KEEP;
    if (pmode > CBUS_EVMP_PREVIEW_DROP ||
        (pmode == CBUS_EVMP_PREVIEW_HASH && !opts->preview_sha256))
        return -EINVAL;

    /* Lengths first: the map header carries the entry count. */
    unsigned n = 7; /* kind, event_id, ts_realtime_ns, ts_mono_ns, pid, tid, flags */
    int has_run = !id_zero(ev->run_id), has_parent = !id_zero(ev->parent_run_id),
        has_trace = !id_zero(ev->trace_id);
    n += (unsigned)(has_run + has_parent + has_trace);
#define LEN(f) uint32_t len_##f = field_len(ev->f, sizeof ev->f); n += len_##f != 0;
    EV_TEXT_FIELDS(LEN)
#undef LEN
    uint32_t len_preview = field_len(ev->preview, sizeof ev->preview);
    if (len_preview && pmode != CBUS_EVMP_PREVIEW_DROP)
        n++;
    n += kind_entries(ev);
    for (size_t i = 0; i < CBUS_KEY__COUNT; i++)
        n += (ev->flags & cbus_cut_keys[i].bit) != 0;
    n += ev->body_len != 0;
    n += has_body;

    struct cbus_mp_writer w = {out};
    mp_map(&w, n);
    KEY(&w, "kind");
    /* Kind 0 ("none") is no event and cbus_kind_from_name() does not map
     * its name back: it goes out as a number, like unknown kinds. */
    const char *kname = ev->kind ? cbus_kind_name(ev->kind) : NULL;
    if (kname)
        mp_str(&w, kname, (uint32_t)strlen(kname));
    else
        mp_uint(&w, ev->kind);
    KEY(&w, "event_id");
    mp_uint(&w, ev->event_id);
    KEY(&w, "ts_realtime_ns");
    mp_uint(&w, ev->ts_realtime_ns);
    KEY(&w, "ts_mono_ns");
    mp_uint(&w, ev->ts_mono_ns);
    KEY(&w, "pid");
    mp_uint(&w, ev->pid);
    KEY(&w, "tid");
    mp_uint(&w, ev->tid);
    KEY(&w, "flags");
    mp_uint(&w, ev->flags);
    if (has_run) {
        KEY(&w, "run_id");
        mp_hex(&w, ev->run_id, 16);
    }
    if (has_parent) {
        KEY(&w, "parent_run_id");
        mp_hex(&w, ev->parent_run_id, 16);
    }
    if (has_trace) {
        KEY(&w, "trace_id");
        mp_hex(&w, ev->trace_id, 16);
    }
#define PUT(f)                                  \
    if (len_##f) {                              \
        KEY(&w, #f);                            \
        mp_text(&w, ev->f, len_##f);   \
    }
    EV_TEXT_FIELDS(PUT)
#undef PUT
    if (len_preview) {
        if (pmode == CBUS_EVMP_PREVIEW_KEEP) {
            KEY(&w, "preview");
            mp_text(&w, ev->preview, len_preview);
        } else if (pmode == CBUS_EVMP_PREVIEW_HASH) {
            KEY(&w, "preview_sha256");
            mp_hex(&w, opts->preview_sha256, 32);
        }
    }
    for (size_t i = 0; i < CBUS_KEY__COUNT; i++)
        if (ev->flags & cbus_cut_keys[i].bit) {
            mp_str(&w, cbus_cut_keys[i].name, (uint32_t)strlen(cbus_cut_keys[i].name));
            mp_uint(&w, ev->key_hash[cbus_cut_keys[i].key]);
        }
    if (ev->body_len) {
        KEY(&w, "body_len");
        mp_uint(&w, ev->body_len);
    }
    put_kind_entries(&w, ev);
    if (has_body) {
        KEY(&w, "body");
        put_body(&w, &bp, opts);
    }
    return (int)(w.p - out);
}

/* ---- reader ------------------------------------------------------------------ */

static inline uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static inline uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) << 32 | get32(p + 4);
}

static inline size_t avail(const struct cbus_mp_reader *r)
{
    return (size_t)(r->end - r->p);
}

enum cbus_mp_type cbus_mp_peek(const struct cbus_mp_reader *r)
{
    if (r->p >= r->end)
        return CBUS_MP_INVALID;
    uint8_t c = *r->p;
    if (c <= 0x7f)
        return CBUS_MP_UINT;
    if (c <= 0x8f || c == 0xde || c == 0xdf)
        return CBUS_MP_MAP;
    if (c <= 0x9f || c == 0xdc || c == 0xdd)
        return CBUS_MP_ARRAY;
    if (c <= 0xbf || (c >= 0xd9 && c <= 0xdb))
        return CBUS_MP_STR;
    if (c >= 0xe0)
        return CBUS_MP_INT;
    switch (c) {
    case 0xc0:
        return CBUS_MP_NIL;
    case 0xc2:
    case 0xc3:
        return CBUS_MP_BOOL;
    case 0xc4:
    case 0xc5:
    case 0xc6:
        return CBUS_MP_BIN;
    case 0xc7:
    case 0xc8:
    case 0xc9:
    case 0xd4:
    case 0xd5:
    case 0xd6:
    case 0xd7:
    case 0xd8:
        return CBUS_MP_EXT;
    case 0xca:
    case 0xcb:
        return CBUS_MP_FLOAT;
    case 0xcc:
    case 0xcd:
    case 0xce:
    case 0xcf:
        return CBUS_MP_UINT;
    case 0xd0:
    case 0xd1:
    case 0xd2:
    case 0xd3: {
        /* A signed encoding holding a non-negative value still reads as uint. */
        if (avail(r) < 2)
            return CBUS_MP_INT;
        return (r->p[1] & 0x80) ? CBUS_MP_INT : CBUS_MP_UINT;
    }
    default:
        return CBUS_MP_INVALID; /* 0xc1 is never used */
    }
}

/* Reads a container/str/bin length: fix form (mask), 8/16/32-bit forms at
 * codes c8/c16/c32 (0 when that width does not exist). */
static int read_len(struct cbus_mp_reader *r, uint8_t fixlo, uint8_t fixhi, uint8_t fixmask,
                    uint8_t c8, uint8_t c16, uint8_t c32, uint32_t *n)
{
    if (r->p >= r->end)
        return -ENODATA;
    uint8_t c = *r->p;
    size_t hdr;
    if (c >= fixlo && c <= fixhi && fixmask) {
        *n = c & fixmask;
        hdr = 1;
    } else if (c8 && c == c8) {
        if (avail(r) < 2)
            return -ENODATA;
        *n = r->p[1];
        hdr = 2;
    } else if (c == c16) {
        if (avail(r) < 3)
            return -ENODATA;
        *n = get16(r->p + 1);
        hdr = 3;
    } else if (c == c32) {
        if (avail(r) < 5)
            return -ENODATA;
        *n = get32(r->p + 1);
        hdr = 5;
    } else {
        return -EBADMSG;
    }
    r->p += hdr;
    return 0;
}

int cbus_mp_read_map(struct cbus_mp_reader *r, uint32_t *n)
{
    return read_len(r, 0x80, 0x8f, 0x0f, 0, 0xde, 0xdf, n);
}

int cbus_mp_read_array(struct cbus_mp_reader *r, uint32_t *n)
{
    return read_len(r, 0x90, 0x9f, 0x0f, 0, 0xdc, 0xdd, n);
}

static int read_payload(struct cbus_mp_reader *r, uint32_t n, const uint8_t **p)
{
    if (avail(r) < n)
        return -ENODATA;
    *p = r->p;
    r->p += n;
    return 0;
}

int cbus_mp_read_str(struct cbus_mp_reader *r, const char **s, uint32_t *n)
{
    const uint8_t *save = r->p, *p = NULL;
    int rc = read_len(r, 0xa0, 0xbf, 0x1f, 0xd9, 0xda, 0xdb, n);
    if (rc == 0)
        rc = read_payload(r, *n, &p);
    if (rc)
        r->p = save;
    else
        *s = (const char *)p;
    return rc;
}

int cbus_mp_read_bin(struct cbus_mp_reader *r, const uint8_t **p, uint32_t *n)
{
    const uint8_t *save = r->p;
    /* No fix form for bin: fixlo > fixhi disables it. */
    int rc = read_len(r, 1, 0, 0, 0xc4, 0xc5, 0xc6, n);
    if (rc == 0)
        rc = read_payload(r, *n, p);
    if (rc)
        r->p = save;
    return rc;
}

int cbus_mp_read_text(struct cbus_mp_reader *r, const char **s, uint32_t *n)
{
    if (cbus_mp_peek(r) == CBUS_MP_BIN) {
        const uint8_t *p = NULL;
        int rc = cbus_mp_read_bin(r, &p, n);
        if (rc == 0)
            *s = (const char *)p;
        return rc;
    }
    return cbus_mp_read_str(r, s, n);
}

/* Any integer as (negative?, magnitude bits). */
static int read_integer(struct cbus_mp_reader *r, int *neg, uint64_t *bits)
{
    if (r->p >= r->end)
        return -ENODATA;
    uint8_t c = *r->p;
    size_t need;
    if (c <= 0x7f) {
        *neg = 0;
        *bits = c;
        r->p++;
        return 0;
    }
    if (c >= 0xe0) {
        *neg = 1;
        *bits = (uint64_t)(int64_t)(int8_t)c;
        r->p++;
        return 0;
    }
    switch (c) {
    case 0xcc: case 0xd0: need = 1; break;
    case 0xcd: case 0xd1: need = 2; break;
    case 0xce: case 0xd2: need = 4; break;
    case 0xcf: case 0xd3: need = 8; break;
    default: return -EBADMSG;
    }
    if (avail(r) < 1 + need)
        return -ENODATA;
    const uint8_t *p = r->p + 1;
    uint64_t v = need == 1 ? p[0] : need == 2 ? get16(p) : need == 4 ? get32(p) : get64(p);
    if (c >= 0xd0) { /* signed: sign-extend */
        int64_t s = need == 1 ? (int8_t)v : need == 2 ? (int16_t)v : need == 4 ? (int32_t)v
                                                                               : (int64_t)v;
        *neg = s < 0;
        v = (uint64_t)s;
    } else {
        *neg = 0;
    }
    *bits = v;
    r->p += 1 + need;
    return 0;
}

int cbus_mp_read_uint(struct cbus_mp_reader *r, uint64_t *v)
{
    const uint8_t *save = r->p;
    int neg;
    int rc = read_integer(r, &neg, v);
    if (rc == 0 && neg) {
        r->p = save;
        return -EBADMSG;
    }
    return rc;
}

int cbus_mp_read_int(struct cbus_mp_reader *r, int64_t *v)
{
    const uint8_t *save = r->p;
    int neg;
    uint64_t bits;
    int rc = read_integer(r, &neg, &bits);
    if (rc)
        return rc;
    if (!neg && bits > INT64_MAX) {
        r->p = save;
        return -EBADMSG;
    }
    *v = (int64_t)bits;
    return 0;
}

int cbus_mp_read_bool(struct cbus_mp_reader *r, int *v)
{
    if (r->p >= r->end)
        return -ENODATA;
    if (*r->p != 0xc2 && *r->p != 0xc3)
        return -EBADMSG;
    *v = *r->p++ == 0xc3;
    return 0;
}

int cbus_mp_read_float(struct cbus_mp_reader *r, double *v)
{
    if (r->p >= r->end)
        return -ENODATA;
    uint8_t c = *r->p;
    if (c == 0xca) {
        if (avail(r) < 5)
            return -ENODATA;
        uint32_t b = get32(r->p + 1);
        float f;
        memcpy(&f, &b, 4);
        *v = f;
        r->p += 5;
        return 0;
    }
    if (c == 0xcb) {
        if (avail(r) < 9)
            return -ENODATA;
        uint64_t b = get64(r->p + 1);
        memcpy(v, &b, 8);
        r->p += 9;
        return 0;
    }
    return -EBADMSG;
}

static int skip_depth(struct cbus_mp_reader *r, unsigned depth)
{
    if (depth > 32)
        return -EBADMSG;
    if (r->p >= r->end)
        return -ENODATA;
    uint8_t c = *r->p;
    uint32_t n = 0;
    const uint8_t *payload;
    int rc;
    switch (cbus_mp_peek(r)) {
    case CBUS_MP_NIL:
    case CBUS_MP_BOOL:
        r->p++;
        return 0;
    case CBUS_MP_UINT:
    case CBUS_MP_INT: {
        int neg;
        uint64_t bits;
        return read_integer(r, &neg, &bits);
    }
    case CBUS_MP_FLOAT: {
        double d;
        return cbus_mp_read_float(r, &d);
    }
    case CBUS_MP_STR: {
        const char *s = "";
        return cbus_mp_read_str(r, &s, &n);
    }
    case CBUS_MP_BIN:
        return cbus_mp_read_bin(r, &payload, &n);
    case CBUS_MP_EXT: {
        size_t hdr;
        if (c >= 0xd4 && c <= 0xd8) {
            n = 1u << (c - 0xd4);
            hdr = 2;
        } else {
            size_t w = c == 0xc7 ? 1 : c == 0xc8 ? 2 : 4;
            if (avail(r) < 1 + w)
                return -ENODATA;
            n = w == 1 ? r->p[1] : w == 2 ? get16(r->p + 1) : get32(r->p + 1);
            hdr = 2 + w;
        }
        if (avail(r) < hdr || avail(r) - hdr < n)
            return -ENODATA;
        r->p += hdr + n;
        return 0;
    }
    case CBUS_MP_ARRAY:
        rc = cbus_mp_read_array(r, &n);
        if (rc)
            return rc;
        for (uint32_t i = 0; i < n; i++)
            if ((rc = skip_depth(r, depth + 1)))
                return rc;
        return 0;
    case CBUS_MP_MAP:
        rc = cbus_mp_read_map(r, &n);
        if (rc)
            return rc;
        for (uint32_t i = 0; i < n; i++)
            if ((rc = skip_depth(r, depth + 1)) || (rc = skip_depth(r, depth + 1)))
                return rc;
        return 0;
    default:
        return -EBADMSG;
    }
}

int cbus_mp_skip(struct cbus_mp_reader *r)
{
    return skip_depth(r, 0);
}

/* ---- event decoder ----------------------------------------------------------- */

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int read_id(struct cbus_mp_reader *r, uint8_t id[16])
{
    const char *s = NULL;
    uint32_t n = 0;
    int rc = cbus_mp_read_str(r, &s, &n);
    if (rc)
        return rc;
    if (n != 32 || !s)
        return -EBADMSG;
    for (unsigned i = 0; i < 16; i++) {
        int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -EBADMSG;
        id[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

static int read_field(struct cbus_mp_reader *r, char *field, size_t size)
{
    const char *s = "";
    uint32_t n = 0;
    int rc = cbus_mp_read_text(r, &s, &n);
    if (rc)
        return rc;
    if (n > size)
        return -EBADMSG;
    /* A field is a C string: it ends at its first NUL, and a key seen twice
     * leaves nothing of its first value (decode(encode(x)) == x). */
    memset(field, 0, size);
    memcpy(field, s, strnlen(s, n));
    return 0;
}

static int read_u32(struct cbus_mp_reader *r, uint32_t *out)
{
    uint64_t v = 0;
    int rc = cbus_mp_read_uint(r, &v);
    if (rc)
        return rc;
    if (v > UINT32_MAX)
        return -EBADMSG;
    *out = (uint32_t)v;
    return 0;
}

static int read_u16(struct cbus_mp_reader *r, uint16_t *out)
{
    uint64_t v = 0;
    int rc = cbus_mp_read_uint(r, &v);
    if (rc)
        return rc;
    if (v > UINT16_MAX)
        return -EBADMSG;
    *out = (uint16_t)v;
    return 0;
}

static int key_is(const char *k, uint32_t n, const char *lit)
{
    return strlen(lit) == n && memcmp(k, lit, n) == 0;
}

static int read_usage(struct cbus_mp_reader *r, struct cbus_usage *u)
{
    static const struct {
        const char *key;
        unsigned bit;
    } keys[] = {
        {"input_tokens", CBUS_USAGE_INPUT},       {"output_tokens", CBUS_USAGE_OUTPUT},
        {"cache_read_tokens", CBUS_USAGE_CACHE_READ},
        {"cache_creation_tokens", CBUS_USAGE_CACHE_CREATION},
        {"reasoning_tokens", CBUS_USAGE_REASONING},
    };
    uint32_t n = 0;
    int rc = cbus_mp_read_map(r, &n);
    if (rc)
        return rc;
    for (uint32_t i = 0; i < n; i++) {
        const char *k = "";
        uint32_t kl = 0;
        if ((rc = cbus_mp_read_str(r, &k, &kl)))
            return rc;
        unsigned bit = 0;
        for (size_t j = 0; j < sizeof keys / sizeof keys[0]; j++)
            if (key_is(k, kl, keys[j].key))
                bit = keys[j].bit;
        if (!bit) {
            if ((rc = cbus_mp_skip(r)))
                return rc;
            continue;
        }
        uint64_t v = 0;
        if ((rc = cbus_mp_read_uint(r, &v)))
            return rc;
        if (v > UINT32_MAX)
            return -EBADMSG;
        if (bit == CBUS_USAGE_INPUT)
            u->input_tokens = (uint32_t)v;
        else if (bit == CBUS_USAGE_OUTPUT)
            u->output_tokens = (uint32_t)v;
        else if (bit == CBUS_USAGE_CACHE_READ)
            u->cache_read_tokens = (uint32_t)v;
        else if (bit == CBUS_USAGE_CACHE_CREATION)
            u->cache_creation_tokens = (uint32_t)v;
        else
            u->reasoning_tokens = (uint32_t)v;
        u->usage_present |= (uint8_t)bit;
    }
    return 0;
}

static int read_score(struct cbus_mp_reader *r, struct cbus_score_info *sc)
{
    uint32_t n = 0;
    int rc = cbus_mp_read_map(r, &n);
    for (uint32_t i = 0; !rc && i < n; i++) {
        const char *k = "";
        uint32_t kl = 0;
        if ((rc = cbus_mp_read_str(r, &k, &kl)))
            break;
        if (key_is(k, kl, "type")) {
            if (cbus_mp_peek(r) == CBUS_MP_UINT) {
                uint16_t v = 0;
                rc = read_u16(r, &v);
                if (!rc && v > UINT8_MAX)
                    rc = -EBADMSG;
                sc->type = (uint8_t)v;
            } else {
                const char *t = "";
                uint32_t tl = 0;
                if (!(rc = cbus_mp_read_str(r, &t, &tl))) {
                    int type = cbus_score_type_from_name(t, tl);
                    if (type < 0)
                        rc = -EBADMSG;
                    sc->type = (uint8_t)type;
                }
            }
        } else if (key_is(k, kl, "value")) {
            rc = cbus_mp_read_float(r, &sc->value);
        } else {
            rc = cbus_mp_skip(r);
        }
    }
    return rc;
}

/* A key that names a per-kind number lands in the union member of the
 * event's kind; "kind" comes first in the schema, so it is known by then.
 * A decoder still accepts any order: per-kind keys seen before "kind" are
 * resolved by a second pass over the map (rare: foreign writers only).
 * Kept whole (about 90 lines) for the reason put_kind_entries() is: one
 * case per payload, mirroring the writer's. */
static int read_kind_key(struct cbus_mp_reader *r, struct cbus_event *ev, const char *k,
                         uint32_t kl, int *handled)
{
    *handled = 1;
    switch (cbus_kind_payload(ev->kind)) {
    case CBUS_PAYLOAD_LLM_START:
        if (key_is(k, kl, "prompt_count"))
            return read_u32(r, &ev->u.llm_start.prompt_count);
        if (key_is(k, kl, "est_input_tokens"))
            return read_u32(r, &ev->u.llm_start.est_input_tokens);
        if (key_is(k, kl, "max_tokens"))
            return read_u32(r, &ev->u.llm_start.max_tokens);
        break;
    case CBUS_PAYLOAD_TOKEN:
        if (key_is(k, kl, "index"))
            return read_u32(r, &ev->u.token.index);
        break;
    case CBUS_PAYLOAD_USAGE:
        if (key_is(k, kl, "usage"))
            return read_usage(r, &ev->u.usage);
        if (key_is(k, kl, "duration_ns")) {
            ev->u.usage.usage_present |= CBUS_USAGE_DURATION;
            return cbus_mp_read_uint(r, &ev->u.usage.duration_ns);
        }
        if (key_is(k, kl, "ttft_ns")) {
            ev->u.usage.usage_present |= CBUS_USAGE_TTFT;
            return cbus_mp_read_uint(r, &ev->u.usage.ttft_ns);
        }
        if (key_is(k, kl, "finish_reason")) {
            if (cbus_mp_peek(r) == CBUS_MP_UINT) {
                uint16_t v = 0;
                int rc = read_u16(r, &v);
                if (rc == 0 && v > UINT8_MAX)
                    return -EBADMSG;
                ev->u.usage.finish_reason = (uint8_t)v;
                return rc;
            }
            const char *s = "";
            uint32_t n = 0;
            char name[32];
            int rc = cbus_mp_read_str(r, &s, &n);
            if (rc)
                return rc;
            if (n >= sizeof name)
                return -EBADMSG;
            memcpy(name, s, n);
            name[n] = '\0';
            int fr = cbus_finish_reason_from_name(name);
            if (fr < 0)
                return -EBADMSG;
            ev->u.usage.finish_reason = (uint8_t)fr;
            return 0;
        }
        if (key_is(k, kl, "generations"))
            return read_u16(r, &ev->u.usage.generations);
        break;
    case CBUS_PAYLOAD_ERROR:
        if (key_is(k, kl, "http_status")) {
            int64_t v = 0;
            int rc = cbus_mp_read_int(r, &v);
            if (rc == 0 && (v < INT32_MIN || v > INT32_MAX))
                return -EBADMSG;
            ev->u.error.http_status = (int32_t)v;
            return rc;
        }
        if (key_is(k, kl, "duration_ns"))
            return cbus_mp_read_uint(r, &ev->u.error.duration_ns);
        break;
    case CBUS_PAYLOAD_RETRY:
        if (key_is(k, kl, "attempt"))
            return read_u32(r, &ev->u.retry.attempt);
        if (key_is(k, kl, "backoff_ns"))
            return cbus_mp_read_uint(r, &ev->u.retry.backoff_ns);
        break;
    case CBUS_PAYLOAD_RETRIEVER:
        if (key_is(k, kl, "document_count"))
            return read_u32(r, &ev->u.retriever.document_count);
        if (key_is(k, kl, "duration_ns"))
            return cbus_mp_read_uint(r, &ev->u.retriever.duration_ns);
        break;
    case CBUS_PAYLOAD_SPAN:
        if (key_is(k, kl, "duration_ns"))
            return cbus_mp_read_uint(r, &ev->u.span.duration_ns);
        break;
    case CBUS_PAYLOAD_SCORE:
        if (key_is(k, kl, "score"))
            return read_score(r, &ev->u.score);
        break;
    default:
        break;
    }
    *handled = 0;
    return 0;
}

/* What a pass finds besides the event's own fields: the cut keys' hashes
 * (applied once the flags are known) and where the body map is. */
struct decode_state {
    uint64_t hash[CBUS_KEY__COUNT];
    unsigned have_hash;            /* bit per enum cbus_key */
    const uint8_t *body;           /* the body map's first byte, NULL = none */
    const uint8_t *body_end;
};

/* enum cbus_key of "<key>_hash", or -1. */
static int hash_key(const char *k, uint32_t kl)
{
    for (size_t i = 0; i < CBUS_KEY__COUNT; i++)
        if (key_is(k, kl, cbus_cut_keys[i].name))
            return (int)cbus_cut_keys[i].key;
    return -1;
}

static uint64_t key_field_hash(const struct cbus_event *ev, unsigned key)
{
    const char *f;
    size_t size;
    switch (key) {
    case CBUS_KEY_PROVIDER: f = ev->provider; size = sizeof ev->provider; break;
    case CBUS_KEY_MODEL: f = ev->model; size = sizeof ev->model; break;
    case CBUS_KEY_USER: f = ev->user; size = sizeof ev->user; break;
    case CBUS_KEY_SESSION: f = ev->session; size = sizeof ev->session; break;
    case CBUS_KEY_AGENT: f = ev->agent; size = sizeof ev->agent; break;
    default: f = ev->tenant; size = sizeof ev->tenant; break;
    }
    return cbus_key_hash(f, strnlen(f, size));
}

/* pass 0: everything but per-kind keys; pass 1: per-kind keys only.
 * Kept whole (about 90 lines): one branch per common wire key, in the
 * order cbus_evmp_encode() writes them. */
static int decode_pass(struct cbus_mp_reader *r, struct cbus_event *ev, int pass,
                       int *deferred, struct decode_state *st)
{
    uint32_t n = 0;
    int rc = cbus_mp_read_map(r, &n);
    if (rc)
        return rc;
    int seen_kind = 0;
    for (uint32_t i = 0; i < n; i++) {
        const char *k = "";
        uint32_t kl = 0;
        if ((rc = cbus_mp_read_str(r, &k, &kl)))
            return rc == -ENODATA ? rc : -EBADMSG;
        if (pass == 1) {
            int handled;
            if ((rc = read_kind_key(r, ev, k, kl, &handled)))
                return rc;
            if (!handled && (rc = cbus_mp_skip(r)))
                return rc;
            continue;
        }
        if (key_is(k, kl, "kind")) {
            /* Per-kind keys are read under the kind already seen: a second
             * kind would leave them describing another kind of event. */
            if (seen_kind)
                return -EBADMSG;
            if (cbus_mp_peek(r) == CBUS_MP_UINT) {
                rc = read_u16(r, &ev->kind);
            } else {
                const char *s = "";
                uint32_t sl = 0;
                char name[32];
                if ((rc = cbus_mp_read_str(r, &s, &sl)))
                    return rc;
                if (sl >= sizeof name)
                    return -EBADMSG;
                memcpy(name, s, sl);
                name[sl] = '\0';
                int kind = cbus_kind_from_name(name);
                if (kind < 0)
                    return -EBADMSG;
                ev->kind = (uint16_t)kind;
            }
            seen_kind = 1;
        } else if (key_is(k, kl, "event_id")) {
            rc = cbus_mp_read_uint(r, &ev->event_id);
        } else if (key_is(k, kl, "ts_realtime_ns")) {
            rc = cbus_mp_read_uint(r, &ev->ts_realtime_ns);
        } else if (key_is(k, kl, "ts_mono_ns")) {
            rc = cbus_mp_read_uint(r, &ev->ts_mono_ns);
        } else if (key_is(k, kl, "pid")) {
            rc = read_u32(r, &ev->pid);
        } else if (key_is(k, kl, "tid")) {
            rc = read_u32(r, &ev->tid);
        } else if (key_is(k, kl, "flags")) {
            rc = read_u16(r, &ev->flags);
        } else if (key_is(k, kl, "run_id")) {
            rc = read_id(r, ev->run_id);
        } else if (key_is(k, kl, "parent_run_id")) {
            rc = read_id(r, ev->parent_run_id);
        } else if (key_is(k, kl, "trace_id")) {
            rc = read_id(r, ev->trace_id);
        }
#define GET(f) else if (key_is(k, kl, #f)) { rc = read_field(r, ev->f, sizeof ev->f); }
        EV_TEXT_FIELDS(GET)
#undef GET
        else if (key_is(k, kl, "preview")) {
            rc = read_field(r, ev->preview, sizeof ev->preview);
        } else if (key_is(k, kl, "body_len")) {
            rc = read_u32(r, &ev->body_len);
        } else if (key_is(k, kl, "body")) {
            if (cbus_mp_peek(r) != CBUS_MP_MAP)
                return -EBADMSG;
            st->body = r->p;
            rc = cbus_mp_skip(r);
            st->body_end = r->p;
        } else if (kl > 5 && memcmp(k + kl - 5, "_hash", 5) == 0 && hash_key(k, kl) >= 0) {
            int key = hash_key(k, kl);
            rc = cbus_mp_read_uint(r, &st->hash[key]);
            st->have_hash |= 1u << key;
        } else {
            int handled = 0;
            if (seen_kind) {
                if ((rc = read_kind_key(r, ev, k, kl, &handled)))
                    return rc;
            } else {
                *deferred = 1; /* maybe a per-kind key before "kind": pass 1 */
            }
            if (!handled)
                rc = cbus_mp_skip(r);
        }
        if (rc)
            return rc;
    }
    return 0;
}

/* One body section into the rebuild buffer. */
struct rebuild {
    uint8_t *p, *end;
};

static int put_section(struct rebuild *o, unsigned type, uint16_t flags, uint32_t len,
                       uint32_t orig_len, uint32_t dropped, uint8_t **data)
{
    if ((size_t)(o->end - o->p) < sizeof(struct cbus_body_section) ||
        (size_t)(o->end - o->p) - sizeof(struct cbus_body_section) < len)
        return -ENOSPC;
    struct cbus_body_section s = {(uint16_t)type, flags, len, orig_len, dropped};
    memcpy(o->p, &s, sizeof s);
    *data = o->p + sizeof s;
    o->p += sizeof s + len;
    return 0;
}

/* A list section's entries: each text, no NUL inside (the section form
 * could not say where it ends), NUL after each.  pairs: a map's keys and
 * values alternate.  Measures (out NULL) or writes. */
static int read_list(const uint8_t *at, const uint8_t *end, int pairs, uint8_t *out,
                     uint32_t *len)
{
    struct cbus_mp_reader r = {at, end};
    uint32_t n = 0, total = 0;
    int rc = pairs ? cbus_mp_read_map(&r, &n) : cbus_mp_read_array(&r, &n);
    if (rc)
        return rc;
    uint64_t items = pairs ? 2 * (uint64_t)n : n;
    for (uint64_t i = 0; i < items; i++) {
        const char *s = "";
        uint32_t sl = 0;
        if ((rc = cbus_mp_read_text(&r, &s, &sl)))
            return rc;
        if (memchr(s, '\0', sl) || sl > UINT32_MAX - 1 - total)
            return -EBADMSG;
        if (out) {
            memcpy(out + total, s, sl);
            out[total + sl] = '\0';
        }
        total += sl + 1;
    }
    *len = total;
    return 0;
}

static int body_suffix(const char *k, uint32_t kl, const char *suffix, unsigned *type)
{
    size_t sl = strlen(suffix);
    for (unsigned t = 1; t < CBUS_BODY_TYPES; t++) {
        const char *name = cbus_body_type_name(t);
        size_t nl = strlen(name);
        if (kl == nl + sl && memcmp(k, name, nl) == 0 && memcmp(k + nl, suffix, sl) == 0) {
            *type = t;
            return 1;
        }
    }
    return 0;
}

/* The body map back into sections, in type order (the encoder's order, so
 * decode(encode(decode(x))) gives the same bytes).  About 80 lines: the
 * bounds checks on a foreign map and the rebuild stay in one place. */
static int rebuild_body(const uint8_t *at, const uint8_t *end, void *bodybuf, size_t cap,
                        struct cbus_body *body)
{
    struct {
        const uint8_t *at;       /* the value's first byte */
        const uint8_t *end;
        uint32_t orig_len, dropped;
        int cut;
    } sec[CBUS_BODY_TYPES] = {{0}};
    struct cbus_mp_reader r = {at, end};
    uint32_t n = 0, skipped = 0;
    int redacted = 0;
    int rc = cbus_mp_read_map(&r, &n);
    for (uint32_t i = 0; !rc && i < n; i++) {
        const char *k = "";
        uint32_t kl = 0;
        unsigned t;
        if ((rc = cbus_mp_read_str(&r, &k, &kl)))
            break;
        if (kl == 16 && memcmp(k, "skipped_sections", 16) == 0) {
            rc = read_u32(&r, &skipped);
        } else if (kl == 8 && memcmp(k, "redacted", 8) == 0) {
            redacted = 1;
            rc = cbus_mp_skip(&r);
        } else if (body_suffix(k, kl, "", &t)) {
            sec[t].at = r.p;
            rc = cbus_mp_skip(&r);
            sec[t].end = r.p;
        } else if (body_suffix(k, kl, "_orig_len", &t)) {
            rc = read_u32(&r, &sec[t].orig_len);
            sec[t].cut = 1;
        } else if (body_suffix(k, kl, "_dropped", &t)) {
            rc = read_u32(&r, &sec[t].dropped);
        } else {
            rc = cbus_mp_skip(&r);
        }
    }
    if (rc)
        return rc;
    struct rebuild o = {bodybuf, (uint8_t *)bodybuf + cap};
    for (unsigned t = 1; t < CBUS_BODY_TYPES; t++) {
        if (!sec[t].at)
            continue;
        uint32_t len = 0;
        const char *text = NULL;
        int list = t == CBUS_BODY_TAGS || t == CBUS_BODY_METADATA;
        if (list) {
            rc = read_list(sec[t].at, sec[t].end, t == CBUS_BODY_METADATA, NULL, &len);
        } else {
            struct cbus_mp_reader tr = {sec[t].at, sec[t].end};
            rc = cbus_mp_read_text(&tr, &text, &len);
        }
        if (rc)
            return rc;
        uint32_t orig = sec[t].cut ? sec[t].orig_len : len;
        /* A list cut mid-entry gets that entry's NUL back here, one byte
         * more than the producer kept: still not more than it had. */
        if (list && orig < len)
            orig = len;
        if (orig < len)
            return -EBADMSG; /* a cut section is shorter than it was */
        uint8_t *data;
        if ((rc = put_section(&o, t, sec[t].cut ? CBUS_BODY_SECTION_CUT : 0, len, orig,
                              sec[t].dropped, &data)))
            return rc;
        if (list)
            rc = read_list(sec[t].at, sec[t].end, t == CBUS_BODY_METADATA, data, &len);
        else if (len)
            memcpy(data, text, len);
        if (rc)
            return rc;
    }
    /* What the encoder skipped, said again: the marker section (type 0,
     * no bytes, orig_len = the count) cbus_body_parts_of() counts as that
     * many skipped, so a rebuilt body renders "skipped_sections" and
     * encodes back to the same map.  Not on a redacted body: that one is
     * shown from the record as stored. */
    uint8_t *none;
    if (skipped && !redacted && (rc = put_section(&o, 0, 0, 0, skipped, 0, &none)))
        return rc;
    body->data = o.p > (uint8_t *)bodybuf ? bodybuf : NULL;
    body->len = (uint32_t)(o.p - (uint8_t *)bodybuf);
    return 0;
}

int cbus_evmp_decode_body(const uint8_t *buf, size_t len, struct cbus_event *ev, size_t *used,
                          void *bodybuf, size_t bodycap, struct cbus_body *body)
{
    if (!buf || !ev || (body && !bodybuf && bodycap))
        return -EINVAL;
    memset(ev, 0, sizeof *ev);
    if (body)
        *body = (struct cbus_body){NULL, 0};
    struct cbus_mp_reader r = {buf, buf + len};
    struct decode_state st = {{0}, 0, NULL, NULL};
    int deferred = 0;
    int rc = decode_pass(&r, ev, 0, &deferred, &st);
    if (rc)
        return rc;
    if (deferred) {
        struct cbus_mp_reader r2 = {buf, buf + len};
        struct decode_state st2 = {{0}, 0, NULL, NULL};
        if ((rc = decode_pass(&r2, ev, 1, &deferred, &st2)))
            return rc;
    }
    /* key_hash[]: a cut key's from its "<key>_hash" entry, every other one
     * from the field (which holds the whole value). */
    for (size_t i = 0; i < CBUS_KEY__COUNT; i++) {
        unsigned k = cbus_cut_keys[i].key;
        if ((ev->flags & cbus_cut_keys[i].bit) && (st.have_hash & (1u << k)))
            ev->key_hash[k] = st.hash[k];
        else
            ev->key_hash[k] = key_field_hash(ev, k);
    }
    if (body && st.body) {
        if (!bodybuf)
            return -ENOSPC;
        if ((rc = rebuild_body(st.body, st.body_end, bodybuf, bodycap, body)))
            return rc;
    }
    if (used)
        *used = (size_t)(r.p - buf);
    return 0;
}

int cbus_evmp_decode(const uint8_t *buf, size_t len, struct cbus_event *ev, size_t *used)
{
    return cbus_evmp_decode_body(buf, len, ev, used, NULL, 0, NULL);
}
