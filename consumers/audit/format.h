/* The cbus-audit log file format: a plain msgpack stream, hash-chained.
 *
 * A log file is a sequence of msgpack maps: one file header, then one
 * record per event.  Any msgpack decoder reads it with a streaming unpacker
 * (python: `for v in msgpack.Unpacker(open(f, "rb"), raw=False): ...`).
 *
 * File header (keys in this order):
 *   cbus_audit   uint   format version (AUDIT_FORMAT)
 *   file_seq     uint   0 for the first file of a chain, +1 per rotation
 *   created_ns   uint   CLOCK_REALTIME ns at creation
 *   first_seq    uint   seq of the first record in this file
 *   bus_cursor   uint   bus cursor at creation (event_id + 1 of the last
 *                       record before this file; where the consumer resumes)
 *                       on a one-lane bus; on a bus of several lanes the sum
 *                       of bus_position (positions passed), for display only
 *   lanes        uint   format 3: the bus's lane count (a power of two);
 *                       absent in formats 1 and 2: one lane
 *   bus_position array  format 3: `lanes` uints, the consumer's position in
 *                       each lane at creation (lane L's next lane position;
 *                       on one lane, [bus_cursor])
 *   bus          str    bus name
 *   bus_id       str    16 lowercase hex chars: the bus instance; event ids
 *                       are unique per bus_id
 *   prev_file    str    name of the previous file in the chain ("" for the first)
 *   prev_hash    bin32  hash of the last record (or header) of the previous
 *                       file; 32 zero bytes for the first file of a chain
 *   redaction    str    "keep" | "hash" | "drop": what happened to previews
 *                       (bodies: per kind, as each record's body says)
 *   hash         bin32  SHA-256(prev_hash || header bytes before the "hash" key)
 *
 * Record (exactly these three keys, in this order):
 *   seq          uint   position in the chain: 0, 1, 2, ... across files
 *   event        map    the event, as consumers/events/event_msgpack.h encodes it;
 *                       format 4: with its body under "body" by the policy
 *                       for its kind: keep = the sections; hash = {"redacted":
 *                       "hash", "<section>_sha256": 64 hex, "<section>_len":
 *                       uint, ...}; drop = {"redacted": "drop"}.  Format 5:
 *                       the body's "system" and "response_id" sections too
 *                       (format 4 left them out, unsaid), and
 *                       "skipped_sections" for sections of a type the
 *                       writer did not know
 *   hash         bin32  SHA-256(previous hash || record bytes before the "hash" key)
 *
 * Gap record (format 2; same shape, "gap" in place of "event"):
 *   seq          uint
 *   gap          map    {"from": uint, "to": uint}: bus positions [from, to)
 *                       the daemon never received (overwritten before it read
 *                       them, or abandoned by a dead producer), recorded where
 *                       they would have been.  Format 3 on a bus of several
 *                       lanes: {"lane": uint, "from": uint, "to": uint}, lane
 *                       positions [from, to) of that lane (event ids
 *                       from * lanes + lane ...); without "lane", lane 0
 *   hash         bin32
 *
 * A bus of N lanes is N rings: event id = lane position * N + lane, so lane
 * = id % N and lane position = id / N (on one lane, the id is the bus
 * position).  Within one bus id, in every lane, the records' lane positions
 * and that lane's gap records tile the lane positions without holes: a
 * file's first record in a lane follows its header's bus_position there
 * (when the previous file is of another bus id, or there is none), every
 * later one follows the one before in its lane.  Lanes interleave in any
 * order.  `verify` checks it; a hole with no gap record is a failure.
 *
 * "previous hash" is the hash of the record before, or of the file header
 * for a file's first record; the header's own input is the previous file's
 * last hash, so one chain runs from the first file's header to the last
 * record of the last file.  The "hash" key and its value are always the last
 * AUDIT_TRAILER bytes of a header or record.
 */
#ifndef CBUS_AUDIT_FORMAT_H
#define CBUS_AUDIT_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#include <cbus/consumer.h>
#include <cbus/layout.h>

#include "event_msgpack.h"

#define AUDIT_FORMAT 5                      /* written; 4 (bodies without the system and
                                               response_id sections), 3 (no bodies), 2 (one
                                               lane) and 1 (no gap records either) are
                                               still read */
#define AUDIT_HASH_LEN 32
#define AUDIT_TRAILER 39                    /* fixstr "hash" (5) + bin8 header (2) + 32 */
#define AUDIT_RECORD_MAX (CBUS_EVMP_MAX + 64) /* map + seq + "event" + trailer */
#define AUDIT_HEADER_MAX 2048                /* bus_position: up to 64 lanes */
#define AUDIT_FILE_NAME_MAX 128

enum audit_redaction { AUDIT_REDACT_KEEP = 0, AUDIT_REDACT_HASH = 1, AUDIT_REDACT_DROP = 2 };
const char *audit_redaction_name(unsigned r);

/* The running end of the chain.  hash starts as 32 zero bytes. */
struct audit_chain {
    uint8_t hash[AUDIT_HASH_LEN];
    uint64_t next_seq;
};

/* Returns 0 (kept as a call so a digest backend with state can be swapped in). */
int audit_chain_init(struct audit_chain *c);
void audit_chain_free(struct audit_chain *c);
/* SHA-256(a || b). */
void audit_sha256(struct audit_chain *c, const void *a, size_t alen, const void *b, size_t blen,
                  uint8_t out[AUDIT_HASH_LEN]);

struct audit_header {
    uint64_t format;
    uint64_t file_seq;
    uint64_t created_ns;
    uint64_t first_seq;
    uint64_t bus_cursor;        /* encode: ignored when pos.lanes is set (derived) */
    struct cbus_position pos;   /* lanes + bus_position; parse: {1, {bus_cursor}}
                                   for formats 1 and 2.  encode: lanes 0 = one lane at
                                   bus_cursor */
    char bus[CBUS_NAME_MAX];
    uint64_t bus_id;
    char prev_file[AUDIT_FILE_NAME_MAX];
    uint8_t prev_hash[AUDIT_HASH_LEN];
    unsigned redaction;
    uint8_t hash[AUDIT_HASH_LEN];
};

/* Encodes h into out (cap >= AUDIT_HEADER_MAX): prev_hash is taken from the
 * chain, h->hash and the chain's hash are set to the header's hash.
 * Returns the byte count or -ENOSPC/-EINVAL. */
int audit_header_encode(struct audit_chain *c, struct audit_header *h, uint8_t *out, size_t cap);

/* Redaction of previews and bodies for record encoding. */
struct audit_redact {
    unsigned mode;          /* enum audit_redaction: previews */
    const uint8_t *salt;    /* hashed before the preview (and each body section) with HASH */
    size_t salt_len;
    /* Bodies, per kind (index: enum cbus_kind; kinds beyond: body_default).
     * keep: the sections; hash: each section's SHA-256 (salted) and length;
     * drop: only that there was one ("redacted":"drop"; body_len stays). */
    unsigned body[CBUS_EV__COUNT];
    unsigned body_default;
};

/* Bytes a record of ev with body may take. */
#define AUDIT_RECORD_BODY_MAX(body) \
    (AUDIT_RECORD_MAX + ((body) && (body)->len ? CBUS_EVMP_BODY_MAX((body)->len) : 0))

/* Encodes ev and its body (NULL = none) as the chain's next record into out
 * (cap >= AUDIT_RECORD_BODY_MAX(body)) and advances the chain.  Returns the
 * byte count or -ENOSPC/-EINVAL. */
int audit_record_encode(struct audit_chain *c, const struct cbus_event *ev,
                        const struct cbus_body *body, const struct audit_redact *red,
                        uint8_t *out, size_t cap);

/* Encodes a gap record for bus positions [from, to) as the chain's next
 * record into out (cap >= AUDIT_RECORD_MAX) and advances the chain.
 * Returns the byte count or -ENOSPC/-EINVAL (from >= to). */
int audit_gap_encode(struct audit_chain *c, uint64_t from, uint64_t to, uint8_t *out, size_t cap);
/* The same for lane positions [from, to) of lane on a bus of several lanes
 * (the record carries "lane").  Returns as audit_gap_encode. */
int audit_gap_encode_lane(struct audit_chain *c, unsigned lane, uint64_t from, uint64_t to,
                          uint8_t *out, size_t cap);

/* One parsed value of a log file.  Pointers point into the input. */
struct audit_item {
    int is_header;
    int is_gap;                 /* a gap record: gap_from..gap_to, event is NULL */
    uint64_t gap_from, gap_to;  /* lane positions of gap_lane (one lane: bus positions) */
    unsigned gap_lane;          /* 0 when the record names no lane */
    size_t len;                 /* bytes of the whole value */
    struct audit_header hdr;    /* is_header */
    uint64_t seq;               /* record */
    const uint8_t *event;       /* record: the event map */
    size_t event_len;
    const uint8_t *hash;        /* the stored hash (last 32 bytes) */
};

/* Parses the value at buf.  Returns 0, -ENODATA (buf ends inside it: a torn
 * tail), -EBADMSG (not a header or record of this format; *why says what). */
int audit_parse(const uint8_t *buf, size_t len, struct audit_item *it, const char **why);

/* Hash a parsed item must carry, given the hash before it. */
void audit_item_expected_hash(struct audit_chain *c, const uint8_t prev[AUDIT_HASH_LEN],
                              const uint8_t *buf, const struct audit_item *it,
                              uint8_t out[AUDIT_HASH_LEN]);

/* The event_id of an encoded event map (a record's `event`), without
 * decoding the rest.  Returns 0 or -EBADMSG. */
int audit_event_id(const uint8_t *event, size_t len, uint64_t *id);

/* The same, and the lane positions the event took on the bus: 1, plus its
 * body's slots (CBUS_BODY_SLOTS(body_len)) with CBUS_FLAG_BODY, whatever
 * the record kept of the body.  Returns 0 or -EBADMSG. */
int audit_event_span(const uint8_t *event, size_t len, uint64_t *id, uint64_t *positions);

/* A position vector's lane count is valid: a power of two, 1..CBUS_MAX_LANES. */
int audit_lanes_valid(uint64_t lanes);

/* Lowercase hex of n bytes into out (2n + 1 bytes). */
void audit_hex(char *out, const uint8_t *p, size_t n);

#endif
