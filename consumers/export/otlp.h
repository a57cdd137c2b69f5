/* OTLP encoding of assembled spans (ExportTraceServiceRequest), as
 * protobuf (application/x-protobuf, the OTLP/HTTP default) or JSON.
 *
 * Both come from one walk over the span (otlp.c): every attribute, event
 * and status is written by a helper that writes either encoding, so the two
 * never differ in what they say (export_units decodes both with Google's
 * parsers and compares them message for message).
 *
 * Protobuf: written by hand against the wire format of opentelemetry-proto
 * (trace.proto, common.proto, resource.proto, trace_service.proto).  Nested
 * messages get minimal length prefixes (two bytes reserved, moved when the
 * length needs one or three); the two outer lengths (ResourceSpans and
 * ScopeSpans, which hold the whole batch) are 4-byte varints padded with
 * continuation bits, as Perfetto's protozero writes them: valid protobuf
 * that every decoder reads, and no move of the whole batch when it closes.
 * Strings are UTF-8: invalid bytes become U+FFFD, as in JSON.
 *
 * JSON rules (OTLP/HTTP JSON mapping): traceId/spanId are lowercase hex strings;
 * enums are integers (kind INTERNAL=1, CLIENT=3; status UNSET=0, OK=1,
 * ERROR=2); 64-bit integers (times, intValue) are decimal strings; keys are
 * lowerCamelCase.  Spans follow OpenTelemetry's GenAI conventions: an LLM
 * call is "{gen_ai.operation.name} {gen_ai.request.model}" of kind CLIENT,
 * a tool "execute_tool {name}", an agent "invoke_agent {name}".
 *
 * A batch is one resourceSpans entry (this exporter's resource) with one
 * scopeSpans entry: otlp_begin(), otlp_span() per span, otlp_end().
 */
#ifndef CBUS_EXPORT_OTLP_H
#define CBUS_EXPORT_OTLP_H

#include <stddef.h>
#include <stdint.h>

#include "prices.h"
#include "sbuf.h"
#include "span.h"

struct otlp_resource {
    const char *service_name;
    const char *host_name;
    uint32_t pid;
    const char *bus_name;
    uint64_t bus_id;
    /* extra resource attributes "k=v,k=v" (config resource_attributes), may be NULL */
    const char *extra;
    /* [phoenix] project: openinference.project.name, may be NULL */
    const char *project;
};

enum otlp_encoding { OTLP_JSON = 0, OTLP_PROTOBUF = 1 };

struct otlp_opts {
    int include_previews;  /* input/output previews as cbus.input.preview / cbus.output.preview */
    unsigned encoding;     /* enum otlp_encoding */
    int langfuse;          /* [langfuse] profile: langfuse.observation.type, langfuse.user.id/.session.id,
                            * tags and metadata, content as langfuse.observation.input/output */
    int phoenix;           /* [phoenix] profile: OpenInference attributes (openinference.span.kind,
                            * llm.*, tag.tags, metadata, content as input.value/output.value) */
    int capture_content;   /* [export] capture_content: prompts, messages, outputs (content.h) */
    size_t content_max;    /* bytes per content attribute (0: 16 KiB) */
    /* cbus-cost's price table (consumers/events/prices.h): gen_ai.usage.cost
     * (and langfuse.observation.cost_details) on priced LLM spans; NULL = none */
    const struct cost_price_table *prices;
};

/* Where otlp_end() patches a protobuf batch's two outer lengths. */
struct otlp_mark {
    size_t rs_len;  /* offset of ResourceSpans' 4-byte length */
    size_t ss_len;  /* offset of ScopeSpans' 4-byte length */
};

/* b must be empty (the request starts at offset 0). */
void otlp_begin(struct sbuf *b, const struct otlp_resource *r, const struct otlp_opts *o,
                struct otlp_mark *m);
/* first: the batch's first span (JSON: no comma before it) */
void otlp_span(struct sbuf *b, const struct span *s, int first, const struct otlp_opts *o);
void otlp_end(struct sbuf *b, const struct otlp_opts *o, const struct otlp_mark *m);

/* Decimal / hex writers used by the encoder (exposed for the tests). */
void otlp_put_u64(struct sbuf *b, uint64_t v);
void otlp_put_hex(struct sbuf *b, const uint8_t *p, size_t n);

#endif
