/* The project's one JSON rendering of a struct cbus_event: what `cbusctl tail
 * --json` prints and what `cbus-audit cat` shows, so scripts parse one shape.
 *
 * One object, keys in this order, absent values left out rather than zeroed:
 *
 *   kind            "llm_end" (an unknown kind: "unknown" plus "kind_code": N)
 *   event_id        integer (ring position; unique per bus id)
 *   ts_realtime_ns  integer, ns since the epoch
 *   ts_mono_ns      integer, CLOCK_MONOTONIC ns
 *   pid, tid        integers
 *   run_id          UUID string "8-4-4-4-12"
 *   parent_run_id   UUID string, only with CBUS_FLAG_HAS_PARENT
 *   trace_id        32 lowercase hex characters, only with CBUS_FLAG_HAS_TRACE
 *   provider, model, user, session, agent, tenant, request_id, name, preview
 *                   strings, only when non-empty (read with strnlen: a field
 *                   filling its whole array has no NUL); invalid UTF-8 becomes
 *                   U+FFFD, so a preview cut mid-character stays valid JSON
 *   truncated       ["model", "preview", ...] only when a string was cut
 *   provider_hash, model_hash, user_hash, session_hash, agent_hash, tenant_hash
 *                   16 lowercase hex characters: key_hash[] (the whole value's
 *                   cbus_key_hash), only for a key that was cut, so two cut
 *                   keys with the same shown prefix render differently
 *   body_len        integer, only with CBUS_FLAG_BODY
 *   per-kind numbers:
 *     llm_start, chat_model_start  prompt_count; est_input_tokens, max_tokens when nonzero
 *     llm_new_token                index
 *     llm_end                      usage {input_tokens, output_tokens, cache_read_tokens,
 *                                  cache_creation_tokens, reasoning_tokens}: only the counts
 *                                  whose present bit is set, and no object when none is
 *                                  (absent is not zero); duration_ns, ttft_ns when present;
 *                                  finish_reason (string) when set; generations when nonzero
 *     *_error                      http_status, duration_ns when nonzero
 *     retry                        attempt, backoff_ns
 *     retriever_end                document_count; duration_ns when nonzero
 *     chain_end, tool_end, agent_finish  duration_ns when nonzero
 *     score                        score {type: "numeric"|"boolean"|"categorical" (unknown:
 *                                  a number), value (numeric, boolean; null when not
 *                                  finite) or category (categorical: the preview)}
 *   body            with a body given: {"text": str, "messages": str (the JSON as a
 *                   string), "tags": [str...], "metadata": {key: value...}, "system":
 *                   str (system instructions, gen_ai.system_instructions JSON or
 *                   text), "response_id": str (the provider's gen_ai.response.id),
 *                   each only when the body has that section; "cut": true and
 *                   "orig_len": {section: bytes the producer had} when a section was
 *                   cut; "dropped": {section: entries} when tags or metadata did not
 *                   fit; "skipped_sections": N for sections not shown (a type this
 *                   reader does not know, from a newer producer, or a type's second
 *                   section); "malformed": true when a section's length did not fit}.
 *                   Section bytes are rendered whole (a NUL is \u0000).
 *
 * Token convention is the layout's (OpenTelemetry): input_tokens includes the
 * cache tokens, output_tokens includes reasoning.
 *
 * The event may come straight from a shared segment or a file: nothing in it
 * is trusted (kinds and finish reasons out of range are rendered as numbers,
 * strings are bounded by their arrays). */
#ifndef CBUS_COMMON_EVENT_JSON_H
#define CBUS_COMMON_EVENT_JSON_H

#include <cbus/consumer.h>
#include <cbus/layout.h>

#include "sbuf.h"

/* Appends the object (no trailing newline) to b; body (NULL = none) is the
 * event's body as cbus_consumer_poll_bodies returned it.  On allocation
 * failure b->failed is set. */
void cbus_event_json(struct sbuf *b, const struct cbus_event *ev, const struct cbus_body *body);

#endif
