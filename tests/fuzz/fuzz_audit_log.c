/* Target: the audit log reader and verifier (consumers/audit/scan.c,
 * format.c), what `cbus-audit verify` and `cbus-audit cat` and the daemon's
 * start-up recovery run over a log file, on arbitrary bytes.  A log file is
 * exactly what an attacker who got write access would tamper with, so the
 * verifier must report, never crash.
 *
 * Input: a mode byte, then the file.  Modes:
 *   bit 0  verify hashes (verify) or only parse (cat --body, with its
 *          callback decoding each event with its body and rendering both
 *          as JSON);
 *   bit 1  first rewrite every parsable value's stored hash to the one the
 *          chain expects, so the fuzzer reaches the checks behind the hash
 *          (sequence numbers, file continuity, torn tails);
 *   bit 2  scan the file a second time as the chain's next file.
 * Oracles: offsets and counts stay within the file; a result that is not bad
 * covers the whole file. */
#include "fuzz.h"

#include "event_json.h"
#include "event_msgpack.h"
#include "format.h"
#include "scan.h"

#include <stdlib.h>

static int on_record(void *arg, const struct audit_item *it)
{
    size_t len = *(size_t *)arg;
    FZ_CHECK(it->len <= len && it->event_len <= it->len, "item %zu/%zu of %zu", it->event_len,
             it->len, len);
    struct cbus_event ev;
    /* as cat --body: the sections rebuilt into a buffer of the bound the
     * header promises, then rendered */
    size_t cap = CBUS_EVMP_REBUILD_MAX(it->event_len);
    uint8_t *rebuilt = malloc(cap);
    FZ_CHECK(rebuilt, "out of memory");
    struct cbus_body body;
    int r = cbus_evmp_decode_body(it->event, it->event_len, &ev, NULL, rebuilt, cap, &body);
    FZ_CHECK(r != -ENOSPC, "CBUS_EVMP_REBUILD_MAX(%zu) is too small", it->event_len);
    if (r == 0) {
        FZ_CHECK(body.len <= cap, "body %u of %zu", body.len, cap);
        struct sbuf b;
        sbuf_init(&b);
        cbus_event_json(&b, &ev, body.len ? &body : NULL);
        sbuf_free(&b);
    }
    free(rebuilt);
    return 0;
}

/* Walks the values and stores the expected hash in each (bit 1). */
static void fix_hashes(struct audit_chain *c, uint8_t *buf, size_t len)
{
    uint8_t prev[AUDIT_HASH_LEN] = {0};
    size_t off = 0;
    while (off < len) {
        struct audit_item it;
        const char *why = NULL;
        if (audit_parse(buf + off, len - off, &it, &why))
            break;
        FZ_CHECK(it.len > 0 && it.len <= len - off, "parse length %zu at %zu of %zu", it.len,
                 off, len);
        FZ_CHECK(it.hash >= buf + off && it.hash + AUDIT_HASH_LEN <= buf + off + it.len,
                 "hash outside its value");
        uint8_t want[AUDIT_HASH_LEN];
        audit_item_expected_hash(c, prev, buf + off, &it, want);
        memcpy((uint8_t *)it.hash, want, AUDIT_HASH_LEN);
        memcpy(prev, want, AUDIT_HASH_LEN);
        off += it.len;
    }
}

static void check_result(const struct audit_scan_result *res, size_t len)
{
    FZ_CHECK(res->good_end <= len, "good_end %zu of %zu", res->good_end, len);
    if (res->bad)
        FZ_CHECK(res->bad_offset <= len && memchr(res->why, '\0', sizeof res->why),
                 "bad_offset %zu of %zu", res->bad_offset, len);
    else
        FZ_CHECK(res->good_end == len, "good result ends at %zu of %zu", res->good_end, len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned mode = data[0];
    size_t len = size - 1;
    /* An exact-size copy: a read past the file's end is an ASan report. */
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return 0;
    memcpy(buf, data + 1, len);

    struct audit_chain c;
    if (audit_chain_init(&c)) {
        free(buf);
        return 0;
    }
    if (mode & 2)
        fix_hashes(&c, buf, len);
    struct audit_verify_state st;
    memset(&st, 0, sizeof st);
    struct audit_scan_result res;
    int check = mode & 1;
    audit_scan(&c, &st, "fuzz.cbaudit", buf, len, check, check ? NULL : on_record, &len, &res);
    check_result(&res, len);
    if (mode & 4) {
        audit_scan(&c, &st, "fuzz2.cbaudit", buf, len, check, check ? NULL : on_record, &len,
                   &res);
        check_result(&res, len);
    }
    audit_chain_free(&c);
    free(buf);
    return 0;
}
