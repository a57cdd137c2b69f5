/* Target: the two renderings of an event that consumers write out, given
 * arbitrary struct cbus_event bytes (an event read from a slot is the
 * producer's bytes: nothing in it is trusted, no string need end in NUL).
 *
 *   event_json.c   (cbusctl tail --json, cbus-audit cat): the output must
 *                  be one valid JSON object (cJSON parses it, fully);
 *   event_msgpack.c (audit records, msgpack export): within CBUS_EVMP_MAX
 *                  (plus CBUS_EVMP_BODY_MAX of the body), decodable, and
 *                  with every redaction mode; a kept body's text-like
 *                  sections (text, messages, system, response_id) come
 *                  back byte for byte, and what the encoder skipped
 *                  (unknown types, repeats) comes back as its count only.
 * Input: 496 bytes of event (short inputs are zero-padded), a byte choosing
 * the redaction mode (previews and bodies alike), then the body: arbitrary
 * bytes, as poll_bodies could hand a consumer from a hostile producer. */
#include "fuzz.h"

#include "event_body.h"
#include "event_json.h"
#include "event_msgpack.h"

#include <stdlib.h>

#include <cjson/cJSON.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fz f = {data, size};
    struct cbus_event ev;
    fz_bytes(&f, &ev, sizeof ev);
    unsigned mode = fz_u8(&f) % 3;
    struct cbus_body body = {f.p, (uint32_t)(f.n < 65536 ? f.n : 65536)};
    const struct cbus_body *bp = body.len ? &body : NULL;

    struct sbuf b;
    sbuf_init(&b);
    cbus_event_json(&b, &ev, bp);
    if (!b.failed) {
        FZ_CHECK(strlen(b.data) == b.len, "JSON has a NUL inside (%zu vs %zu)", strlen(b.data),
                 b.len);
        cJSON *j = cJSON_ParseWithLength(b.data, b.len);
        FZ_CHECK(j && cJSON_IsObject(j), "event_json is not a JSON object: %s", b.data);
        cJSON *kind = cJSON_GetObjectItemCaseSensitive(j, "kind");
        FZ_CHECK(cJSON_IsString(kind), "no kind: %s", b.data);
        cJSON_Delete(j);
    }
    sbuf_free(&b);

    static const uint8_t digest[32] = {1, 2, 3};
    static const uint8_t body_digests[CBUS_EVMP_BODY_TYPES][32] = {{4}, {5}, {6}, {7}, {8}, {9}, {10}};
    struct cbus_evmp_opts o = {.preview = mode, .preview_sha256 = digest, .body = mode,
                               .body_sha256 = body_digests};
    size_t cap = CBUS_EVMP_MAX + CBUS_EVMP_BODY_MAX(body.len);
    uint8_t *buf = malloc(cap);
    FZ_CHECK(buf, "out of memory");
    int n = cbus_evmp_encode(&ev, bp, &o, buf, cap);
    FZ_CHECK(n > 0 && (size_t)n <= cap, "encode returned %d", n);
    struct cbus_event back;
    size_t used;
    size_t rcap = CBUS_EVMP_REBUILD_MAX((size_t)n);
    uint8_t *rebuilt = malloc(rcap);
    FZ_CHECK(rebuilt, "out of memory");
    struct cbus_body rb;
    int r = cbus_evmp_decode_body(buf, (size_t)n, &back, &used, rebuilt, rcap, &rb);
    FZ_CHECK(r == 0 && used == (size_t)n, "own encoding does not decode: %d", r);
    /* The fields the schema carries as written come back as written. */
    FZ_CHECK(back.kind == ev.kind && back.pid == ev.pid && back.event_id == ev.event_id &&
             back.flags == ev.flags && back.body_len == ev.body_len,
             "header fields changed in the round trip");
    FZ_CHECK(!strncmp(back.model, ev.model, sizeof ev.model), "model changed");
    FZ_CHECK(!strncmp(back.agent, ev.agent, sizeof ev.agent), "agent changed");
    if (mode == CBUS_EVMP_PREVIEW_KEEP)
        FZ_CHECK(!strncmp(back.preview, ev.preview, sizeof ev.preview), "preview changed");
    struct cbus_body_parts in, out;
    cbus_body_parts_of(bp, &in);
    cbus_body_parts_of(&rb, &out);
    FZ_CHECK(!out.malformed, "a rebuilt body is malformed");
    /* what the encoder skipped comes back as a count, never as sections */
    FZ_CHECK(out.unknown == (mode == CBUS_EVMP_PREVIEW_KEEP ? in.unknown : 0),
             "skipped %d, rebuilt saying %d", in.unknown, out.unknown);
    if (mode == CBUS_EVMP_PREVIEW_KEEP) {
        static const unsigned texts[] = {CBUS_BODY_TEXT, CBUS_BODY_MESSAGES, CBUS_BODY_SYSTEM,
                                         CBUS_BODY_RESPONSE_ID};
        for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
            const struct cbus_body_part *t0 = &in.part[texts[i]], *t1 = &out.part[texts[i]];
            FZ_CHECK(!t0->data == !t1->data && t0->len == t1->len &&
                         (!t0->len || !memcmp(t0->data, t1->data, t0->len)),
                     "section %u changed", texts[i]);
        }
        FZ_CHECK(out.count == in.count, "%d sections kept of %d", out.count, in.count);
    } else {
        FZ_CHECK(!out.count, "a redacted body was rebuilt");
    }
    free(rebuilt);
    free(buf);
    return 0;
}
