/* Content capture (issue 15 item 1): what an event's body becomes on a span.
 *
 * The texts of a run (prompt, chat messages, output, tool arguments and
 * result, retrieval query and documents) come from the bodies of its start
 * and end events (docs/bodies.md), or from the preview when the text fit in
 * it.  They leave only when [export] capture_content is on, as OpenTelemetry's
 * GenAI instrumentations do: they hold user data.  Tags and metadata are the
 * labels a producer chose to show, and go under the profiles that read them
 * whatever capture_content says.
 *
 * Every body came from shared memory: it is walked with cbus_body_next()
 * (event_body.c), never trusted, and a messages body that is not a JSON
 * array is sent as text, never dropped. */
#ifndef CBUS_EXPORT_CONTENT_H
#define CBUS_EXPORT_CONTENT_H

#include <stddef.h>
#include <stdint.h>

#include <cbus/consumer.h>

#include "sbuf.h"

/* 1 when s[0..n) is one JSON value (RFC 8259) and nothing else but white
 * space; *is_array: it is an array.  No allocation; nesting deeper than 256
 * is refused (a producer's body must not be able to exhaust the stack). */
int content_json_valid(const char *s, size_t n, int *is_array);

/* n cut to at most cap bytes without splitting a UTF-8 sequence. */
size_t content_cut_len(const char *s, size_t n, size_t cap);

/* A copy of body keeping only the sections a span needs later: tags and
 * metadata always, text, messages and system instructions when content is
 * on, each of those cut to cap bytes (flag CBUS_BODY_SECTION_CUT, orig_len
 * kept), so an open run holds at most about 3 * cap + 2.5 KiB.  Returns a
 * malloc'd buffer (*len its size) or NULL when nothing is worth keeping or
 * memory is short. */
void *content_keep(const struct cbus_body *body, int content, size_t cap, uint32_t *len);

/* One message list with one text part, in the shape of OpenTelemetry's
 * gen_ai.input.messages / gen_ai.output.messages:
 *   [{"role":ROLE,"parts":[{"type":"text","content":TEXT}]}]
 * with ,"finish_reason":FR after parts when fr is not NULL.  TEXT is
 * JSON-escaped (invalid UTF-8 becomes U+FFFD). */
void content_wrap_text(struct sbuf *b, const char *role, const char *text, size_t n, const char *fr);

/* One text part, in the shape of OpenTelemetry's gen_ai.system_instructions:
 *   [{"type":"text","content":TEXT}]   (TEXT escaped as above) */
void content_wrap_part(struct sbuf *b, const char *text, size_t n);

#endif
