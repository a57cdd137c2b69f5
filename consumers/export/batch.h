/* A batch: one HTTP request body and what it holds.  It is built in memory,
 * then sent, queued, or spooled; the ring positions it covers decide what a
 * lossless exporter may acknowledge. */
#ifndef CBUS_EXPORT_BATCH_H
#define CBUS_EXPORT_BATCH_H

#include <stdint.h>

#include <cbus/layout.h>

#include "sbuf.h"

/* What a batch's body is (struct batch .format, the spool header's format
 * byte, the Content-Type): OTLP JSON and msgpack keep the values the spool
 * has always written, so a spool of an older exporter replays as it was. */
enum export_wire { WIRE_OTLP_JSON = 0, WIRE_MSGPACK = 1, WIRE_OTLP_PROTOBUF = 2, WIRE_COUNT = 3 };

struct batch {
    struct batch *next;       /* in whichever list holds it */
    struct batch *prev;
    uint64_t seq;             /* spool sequence (file name) once spooled */
    uint64_t min_pos;         /* lowest ring position whose data it carries; UINT64_MAX = none */
    uint64_t max_pos;
    /* The same per lane of the bus (lane positions; event id = lane position
     * * lanes + lane): what a lossless exporter may not acknowledge while the
     * batch is only in memory.  UINT64_MAX = none in that lane.  Valid for
     * the lanes of the exporter's bus; batch_holds_none() sets them all. */
    uint64_t lane_min[CBUS_MAX_LANES];
    uint32_t items;           /* spans (OTLP) or events (msgpack) */
    uint8_t format;           /* enum export_wire */
    uint8_t gzip;             /* body is gzip-compressed */
    uint8_t in_spool;         /* owned by the spool (removed only when delivered or dropped) */
    uint8_t on_disk;          /* the spool holds it durably in a file */
    uint8_t sending;          /* a request for it is in flight */
    uint64_t body_len;        /* bytes of the body, also while it lives on disk only */
    uint64_t created_ns;      /* monotonic: batch age */
    uint64_t sent_ns;         /* monotonic: last request started (latency in the debug log) */
    struct sbuf body;         /* empty while a spooled batch sits on disk */
};

static inline void batch_holds_none(struct batch *b)
{
    b->min_pos = UINT64_MAX;
    for (unsigned L = 0; L < CBUS_MAX_LANES; L++)
        b->lane_min[L] = UINT64_MAX;
}

#endif
