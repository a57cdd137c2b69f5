/* Target: the msgpack event decoder (consumers/events/event_msgpack.c) on
 * arbitrary bytes: what cbus-audit reads back from a log file and what a
 * msgpack collector would get.
 *
 * Oracles beyond "no crash":
 *   - *used never exceeds the input;
 *   - a decoded event re-encodes within CBUS_EVMP_MAX (plus
 *     CBUS_EVMP_BODY_MAX of its body), and that encoding decodes to the same
 *     event as readers see it (strings up to their first NUL: see
 *     normalise()) and to the same body sections, byte for byte;
 *   - the generic reader's skip() consumes the same bytes as a decode. */
#include "fuzz.h"

#include "event_msgpack.h"

#include <stdlib.h>

/* A msgpack str may hold a NUL; the decoder copies it and what follows into
 * the field, while every reader (and the encoder) stops at the first NUL.
 * Compare what readers see: the field up to its first NUL. */
#define CUT(f) memset((f) + strnlen((f), sizeof(f)), 0, sizeof(f) - strnlen((f), sizeof(f)))
static void normalise(struct cbus_event *e)
{
    CUT(e->provider);
    CUT(e->model);
    CUT(e->user);
    CUT(e->session);
    CUT(e->agent);
    CUT(e->tenant);
    CUT(e->request_id);
    CUT(e->name);
    CUT(e->preview);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cbus_event ev, ev2;
    size_t used = 0;
    size_t bcap = CBUS_EVMP_REBUILD_MAX(size);
    uint8_t *body1 = malloc(bcap), *body2 = malloc(bcap);
    FZ_CHECK(body1 && body2, "out of memory");
    struct cbus_body b1, b2;
    int r = cbus_evmp_decode_body(data, size, &ev, &used, body1, bcap, &b1);
    FZ_CHECK(r == 0 || r == -ENODATA || r == -EBADMSG, "decode returned %d", r);

    struct cbus_mp_reader rd = {data, data + size};
    int sk = cbus_mp_skip(&rd);
    FZ_CHECK(rd.p <= data + size, "skip ran past the input");

    if (r == 0) {
        FZ_CHECK(used <= size && used > 0, "used %zu of %zu", used, size);
        if (sk == 0)
            FZ_CHECK((size_t)(rd.p - data) == used, "skip took %zu, decode %zu",
                     (size_t)(rd.p - data), used);
        size_t cap = CBUS_EVMP_MAX + CBUS_EVMP_BODY_MAX(b1.len);
        uint8_t *buf = malloc(cap);
        FZ_CHECK(buf, "out of memory");
        int n = cbus_evmp_encode(&ev, &b1, NULL, buf, cap);
        FZ_CHECK(n > 0 && (size_t)n <= cap, "re-encode returned %d", n);
        size_t used2 = 0;
        r = cbus_evmp_decode_body(buf, (size_t)n, &ev2, &used2, body2, bcap, &b2);
        FZ_CHECK(r == 0 && used2 == (size_t)n, "re-decode returned %d (used %zu of %d)", r,
                 used2, n);
        normalise(&ev);
        FZ_CHECK(!memcmp(&ev, &ev2, sizeof ev), "decode(encode(ev)) != ev");
        FZ_CHECK(b1.len == b2.len && (!b1.len || !memcmp(b1.data, b2.data, b1.len)),
                 "decode(encode(body)) != body (%u vs %u bytes)", b1.len, b2.len);
        free(buf);
    }
    free(body1);
    free(body2);

    /* The primitives on their own: walk values until the input runs out. */
    rd = (struct cbus_mp_reader){data, data + size};
    for (int i = 0; i < 64 && rd.p < rd.end; i++) {
        const uint8_t *before = rd.p;
        uint64_t u;
        int64_t s;
        double d;
        const char *str;
        uint32_t n;
        int rc;
        switch (cbus_mp_peek(&rd)) {
        case CBUS_MP_UINT:
            rc = cbus_mp_read_uint(&rd, &u);
            break;
        case CBUS_MP_INT:
            rc = cbus_mp_read_int(&rd, &s);
            break;
        case CBUS_MP_FLOAT:
            rc = cbus_mp_read_float(&rd, &d);
            break;
        case CBUS_MP_STR:
        case CBUS_MP_BIN:
            rc = cbus_mp_read_text(&rd, &str, &n);
            if (!rc)
                FZ_CHECK(str >= (const char *)data && str + n <= (const char *)rd.end,
                         "text outside the input");
            break;
        case CBUS_MP_MAP:
            rc = cbus_mp_read_map(&rd, &n);
            break;
        case CBUS_MP_ARRAY:
            rc = cbus_mp_read_array(&rd, &n);
            break;
        default:
            rc = cbus_mp_skip(&rd);
            break;
        }
        FZ_CHECK(rd.p <= rd.end, "reader ran past the input");
        if (rc || rd.p == before)
            break;
    }
    return 0;
}
