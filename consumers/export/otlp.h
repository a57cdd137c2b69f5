/* OTLP/JSON encoding of assembled spans (ExportTraceServiceRequest).
 *
 * Rules (OTLP/HTTP JSON mapping): traceId/spanId are lowercase hex strings;
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
};

struct otlp_opts {
    int include_previews;  /* input/output previews as cbus.input.preview / cbus.output.preview */
};

void otlp_begin(struct sbuf *b, const struct otlp_resource *r);
/* first: no comma before it */
void otlp_span(struct sbuf *b, const struct span *s, int first, const struct otlp_opts *o);
void otlp_end(struct sbuf *b);

/* Decimal / hex writers used by the encoder (exposed for the tests). */
void otlp_put_u64(struct sbuf *b, uint64_t v);
void otlp_put_hex(struct sbuf *b, const uint8_t *p, size_t n);

#endif
