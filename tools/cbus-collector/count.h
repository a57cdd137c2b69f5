/* What the collector does with a body: gunzip it and count what is in it. */
#ifndef CBUS_COLLECTOR_COUNT_H
#define CBUS_COLLECTOR_COUNT_H

#include <stddef.h>
#include <stdint.h>

#include "sbuf.h"

/* Inflates a gzip (or zlib) body into out.  Returns 0 or -EINVAL. */
int count_gunzip(const void *in, size_t len, struct sbuf *out);

struct count_result {
    uint64_t spans;
    uint64_t span_events;  /* entries of spans[].events (full parse only) */
    uint64_t events;       /* msgpack: raw events in the batch */
};

/* OTLP/JSON ExportTraceServiceRequest.  With full, parses the document (cJSON)
 * and walks resourceSpans[].scopeSpans[].spans[]; else counts "spanId" keys,
 * which no other OTLP trace field is named (parentSpanId differs in case).
 * Returns 0 or -EINVAL (not JSON / not a trace request / an intValue that is
 * not an int64, as a collector's protobuf-JSON parser refuses: full mode only). */
int count_otlp_json(const char *json, size_t len, int full, struct count_result *out);

/* OTLP/protobuf ExportTraceServiceRequest (application/x-protobuf).  Walks
 * resource_spans = 1 / scope_spans = 2 / spans = 2 with every length
 * checked against its container; with full, also checks each span (trace_id
 * 16 bytes, span_id 8, parent_span_id 0 or 8), counts its events = 11, and
 * checks that its name, every attribute key and string value (spans, events,
 * resource, arrays) is UTF-8, as a protobuf runtime refuses a request whose
 * strings are not.  Returns 0 or -EINVAL. */
int count_otlp_protobuf(const void *data, size_t len, int full, struct count_result *out);

/* msgpack batch: a map with an "events" array, or a bare array of events.
 * With full, unpacks the whole document (libmsgpack, validates every event);
 * else reads the top level only and takes the array's length.
 * Returns 0 or -EINVAL. */
int count_msgpack(const void *data, size_t len, int full, struct count_result *out);

#endif
