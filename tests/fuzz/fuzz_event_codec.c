/* Target: the two renderings of an event that consumers write out, given
 * arbitrary struct cbus_event bytes (an event read from a slot is the
 * producer's bytes: nothing in it is trusted, no string need end in NUL).
 *
 *   event_json.c   (cbusctl tail --json, cbus-audit cat): the output must
 *                  be one valid JSON object (cJSON parses it, fully);
 *   event_msgpack.c (audit records, msgpack export): within CBUS_EVMP_MAX,
 *                  decodable, and with every redaction mode.
 * Input: 496 bytes of event (short inputs are zero-padded), then a byte
 * choosing the redaction mode. */
#include "fuzz.h"

#include "event_json.h"
#include "event_msgpack.h"

#include <cjson/cJSON.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fz f = {data, size};
    struct cbus_event ev;
    fz_bytes(&f, &ev, sizeof ev);
    unsigned mode = fz_u8(&f) % 3;

    struct sbuf b;
    sbuf_init(&b);
    cbus_event_json(&b, &ev, NULL);
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
    struct cbus_evmp_opts o = {.preview = mode, .preview_sha256 = digest};
    uint8_t buf[CBUS_EVMP_MAX];
    int n = cbus_evmp_encode(&ev, NULL, &o, buf, sizeof buf);
    FZ_CHECK(n > 0 && n <= CBUS_EVMP_MAX, "encode returned %d", n);
    struct cbus_event back;
    size_t used;
    int r = cbus_evmp_decode(buf, (size_t)n, &back, &used);
    FZ_CHECK(r == 0 && used == (size_t)n, "own encoding does not decode: %d", r);
    /* The fields the schema carries as written come back as written. */
    FZ_CHECK(back.kind == ev.kind && back.pid == ev.pid && back.event_id == ev.event_id &&
             back.flags == ev.flags, "header fields changed in the round trip");
    FZ_CHECK(!strncmp(back.model, ev.model, sizeof ev.model), "model changed");
    if (mode == CBUS_EVMP_PREVIEW_KEEP)
        FZ_CHECK(!strncmp(back.preview, ev.preview, sizeof ev.preview), "preview changed");
    return 0;
}
