/* The project's one msgpack encoding of a struct cbus_event, and a small
 * dependency-free msgpack writer/reader it is built on.
 *
 * Used by cbus-audit (one record per event in the audit log) and by
 * cbus-export (its msgpack batch format), so an event looks the same in
 * every msgpack the project writes.  No libmsgpack dependency: every
 * consumer links cbus_events, and an encoder on the audit hot path has to be
 * a few hundred nanoseconds.
 *
 * ---- Schema (format 2: format 1 plus agent, tenant, the *_hash keys,
 * body_len, score and body; a format-1 reader skips them) -------------------
 * An event is one msgpack map.  Keys are str; they appear in this order,
 * and a key whose condition is false is absent (absent is not zero):
 *
 *   key               type   when / meaning
 *   kind              str    always: cbus_kind_name() ("llm_end"); kind 0
 *                            and kinds with no name are written as a uint
 *   event_id          uint   always: ring position, unique per bus_id
 *   ts_realtime_ns    uint   always: CLOCK_REALTIME ns since the epoch
 *   ts_mono_ns        uint   always: CLOCK_MONOTONIC ns
 *   pid, tid          uint   always
 *   flags             uint   always: CBUS_TRUNC_* | CBUS_FLAG_* (layout.h);
 *                            bit 6 = the preview was truncated
 *   run_id            str    32 lowercase hex chars; absent when all zero
 *   parent_run_id     str    same; absent when all zero
 *   trace_id          str    same; absent when all zero
 *   provider, model, user, session, agent, tenant, request_id, name
 *                     str    the field's bytes up to strnlen(field, size);
 *                            absent when empty
 *   preview           str    redaction "keep": the preview bytes; absent
 *                            when empty or under "drop"/"hash"
 *   preview_sha256    str    redaction "hash": 64 lowercase hex chars of
 *                            SHA-256 over the preview bytes (the caller
 *                            computes it); absent when the preview is empty
 *   provider_hash, model_hash, user_hash, session_hash, agent_hash,
 *   tenant_hash       uint   key_hash[] of a key whose CBUS_TRUNC_* bit is
 *                            set (its whole value's hash); absent for keys
 *                            not cut, whose hash decode recomputes from the
 *                            field
 *   body_len          uint   absent when 0
 *   -- per kind --
 *   llm_start, chat_model_start:
 *     prompt_count, est_input_tokens, max_tokens      uint (0 = none)
 *   llm_new_token:
 *     index                                           uint (chunk index)
 *   llm_end:
 *     usage           map   only the counts whose usage_present bit is set:
 *                           input_tokens, output_tokens, cache_read_tokens,
 *                           cache_creation_tokens, reasoning_tokens (uint).
 *                           Absent when no count is present.  OpenTelemetry
 *                           convention: input includes cached, output
 *                           includes reasoning.
 *     duration_ns     uint  only with CBUS_USAGE_DURATION
 *     ttft_ns         uint  only with CBUS_USAGE_TTFT
 *     finish_reason   str   cbus_finish_reason_name(); absent when unset
 *     generations     uint  absent when 0 (unknown)
 *   llm_error, chain_error, tool_error, retriever_error:
 *     http_status     int   0 = not an HTTP error
 *     duration_ns     uint  0 = unknown
 *   retry:            attempt uint, backoff_ns uint
 *   retriever_end:    document_count uint, duration_ns uint
 *   chain_end, tool_end, agent_finish:  duration_ns uint (0 = unknown)
 *   score:            score map {type: str "numeric"|"boolean"|"categorical"
 *                     (uint when unknown), value: float64}; the category is
 *                     the preview
 *   -- last --
 *   body              map   only when a body is given: "text", "messages"
 *                           (text), "tags" (array of text), "metadata" (map
 *                           of text to text), format 3: "system" (text: system
 *                           instructions), "response_id" (text: the provider's
 *                           id of the response), each when the body has that
 *                           section; "<section>_orig_len" uint for a cut
 *                           section, "<section>_dropped" uint when entries
 *                           were dropped; format 3: "skipped_sections" uint,
 *                           sections not kept (a type this encoder does not
 *                           know, or a type's second section)
 *
 * Text fields are msgpack str when their bytes are valid UTF-8 and bin
 * (the raw bytes) when not, e.g. a preview cut in the middle of a
 * character: nothing is lost and a strict decoder (python msgpack with
 * raw=False) never fails.  Integers use the smallest msgpack form.
 * Readers must ignore keys they do not know (later minor formats add keys).
 * Key names and placement follow event_json.h where both carry a value;
 * the differences: ids here are 32-char hex (JSON: run ids as UUIDs), all
 * non-zero ids are written (JSON: parent/trace only with their flag), the
 * raw flags word replaces JSON's "truncated" list, and llm_start always
 * carries its three numbers.
 */
#ifndef CBUS_COMMON_EVENT_MSGPACK_H
#define CBUS_COMMON_EVENT_MSGPACK_H

#include <stddef.h>
#include <stdint.h>

#include <cbus/consumer.h>
#include <cbus/layout.h>

#define CBUS_EVMP_FORMAT 3 /* 2: agent, tenant, cut keys' hashes, score, body_len, body;
                              3: body sections system, response_id; skipped_sections */

/* An encoded event never exceeds this many bytes (checked by the tests with
 * every field full). */
#define CBUS_EVMP_MAX 1024

enum cbus_evmp_preview {
    CBUS_EVMP_PREVIEW_KEEP = 0,  /* "preview": the text */
    CBUS_EVMP_PREVIEW_HASH = 1,  /* "preview_sha256": opts->preview_sha256 as hex */
    CBUS_EVMP_PREVIEW_DROP = 2,  /* nothing */
};

#define CBUS_EVMP_BODY_TYPES 7 /* body_sha256 rows: index = enum cbus_body_type (1..6) */

struct cbus_evmp_opts {
    unsigned preview;                  /* enum cbus_evmp_preview */
    const uint8_t *preview_sha256;     /* 32 bytes, with CBUS_EVMP_PREVIEW_HASH */
    /* The body, with the same three modes: KEEP the sections; HASH:
     * {"redacted":"hash", "<section>_sha256": 64 hex of body_sha256[type],
     * "<section>_len": uint} for each section (and its orig_len, dropped);
     * DROP: {"redacted":"drop"}. */
    unsigned body;
    const uint8_t (*body_sha256)[32];  /* [CBUS_EVMP_BODY_TYPES], with HASH */
};

/* Bytes the "body" entry of a body of len bytes can take (tags of one
 * byte double; everything else is its bytes and a few of header). */
#define CBUS_EVMP_BODY_MAX(len) (2 * (size_t)(len) + 256)
/* Bytes decode may need to rebuild the sections of a record of len bytes
 * (a section's header is 16 bytes, its msgpack key and header at least 6;
 * plus the skipped-sections marker, see cbus_body_parts_of). */
#define CBUS_EVMP_REBUILD_MAX(len) ((size_t)(len) + 16 * (CBUS_BODY_TYPES_MAX + 1))
#define CBUS_BODY_TYPES_MAX 6 /* section types a rebuilt body can hold (one each) */

/* Encodes ev and its body (NULL or empty: none) into out (cap >=
 * CBUS_EVMP_MAX, plus CBUS_EVMP_BODY_MAX(body->len) with a body).  opts may
 * be NULL (keep).  Returns the byte count, -ENOSPC (cap too small), -EINVAL
 * (NULL ev/out, or HASH without a digest). */
int cbus_evmp_encode(const struct cbus_event *ev, const struct cbus_body *body,
                     const struct cbus_evmp_opts *opts, uint8_t *out, size_t cap);

/* Decodes one event map from buf into *ev (zeroed first; unknown keys are
 * skipped, preview_sha256 cannot restore a preview and is skipped too).
 * *used (may be NULL) gets the bytes consumed.
 * Returns 0, -ENODATA (buf ends inside the map: a torn record), -EBADMSG
 * (not an event map: wrong type, unknown kind name, string longer than its
 * field, bad hex). */
int cbus_evmp_decode(const uint8_t *buf, size_t len, struct cbus_event *ev, size_t *used);
/* The same, and the "body" entry rebuilt as sections (the form
 * cbus_consumer_poll_bodies gives, in type order) into bodybuf; *body gets
 * them (data NULL, len 0: no body).  body NULL: the body is skipped.
 * bodycap >= CBUS_EVMP_REBUILD_MAX(len) always suffices.  Returns as
 * cbus_evmp_decode, and -ENOSPC (bodybuf too small).  A tag or metadata
 * entry that holds a NUL is -EBADMSG (the section form could not carry it).
 * A kept body's "skipped_sections" N comes back as a last section of type
 * 0 with no bytes and orig_len N, which cbus_body_parts_of() counts as N
 * skipped (so renderers say it, and it encodes back the same). */
int cbus_evmp_decode_body(const uint8_t *buf, size_t len, struct cbus_event *ev, size_t *used,
                          void *bodybuf, size_t bodycap, struct cbus_body *body);

/* ---- msgpack primitives ------------------------------------------------------
 * Writer: the caller guarantees room (the event encoder sizes its output
 * with CBUS_EVMP_MAX), so puts are unchecked stores. */
struct cbus_mp_writer {
    uint8_t *p;
};

void cbus_mp_put_map(struct cbus_mp_writer *w, uint32_t n);
void cbus_mp_put_array(struct cbus_mp_writer *w, uint32_t n);
void cbus_mp_put_uint(struct cbus_mp_writer *w, uint64_t v);
void cbus_mp_put_int(struct cbus_mp_writer *w, int64_t v);
void cbus_mp_put_bool(struct cbus_mp_writer *w, int v);
void cbus_mp_put_nil(struct cbus_mp_writer *w);
void cbus_mp_put_str(struct cbus_mp_writer *w, const char *s, uint32_t n);
void cbus_mp_put_bin(struct cbus_mp_writer *w, const void *p, uint32_t n);
/* str when valid UTF-8, else bin (see the schema above). */
void cbus_mp_put_text(struct cbus_mp_writer *w, const char *s, uint32_t n);
/* n bytes as 2n lowercase hex characters, as a str. */
void cbus_mp_put_hex(struct cbus_mp_writer *w, const uint8_t *p, uint32_t n);
/* Bytes a str/bin/map/array header of length n takes. */
size_t cbus_mp_str_header_size(uint32_t n);

/* Reader: every call checks bounds.  Each returns 0, -ENODATA (input ends
 * inside the value), or -EBADMSG (a different type or malformed). */
struct cbus_mp_reader {
    const uint8_t *p;
    const uint8_t *end;
};

enum cbus_mp_type {
    CBUS_MP_NIL, CBUS_MP_BOOL, CBUS_MP_UINT, CBUS_MP_INT, CBUS_MP_FLOAT, CBUS_MP_STR,
    CBUS_MP_BIN, CBUS_MP_ARRAY, CBUS_MP_MAP, CBUS_MP_EXT, CBUS_MP_INVALID
};

/* Type of the next value (CBUS_MP_UINT for non-negative ints of any width,
 * CBUS_MP_INT for negative ones), or CBUS_MP_INVALID at the end / on 0xc1. */
enum cbus_mp_type cbus_mp_peek(const struct cbus_mp_reader *r);
int cbus_mp_read_map(struct cbus_mp_reader *r, uint32_t *n);
int cbus_mp_read_array(struct cbus_mp_reader *r, uint32_t *n);
int cbus_mp_read_uint(struct cbus_mp_reader *r, uint64_t *v);  /* any non-negative int */
int cbus_mp_read_int(struct cbus_mp_reader *r, int64_t *v);    /* any int fitting int64 */
int cbus_mp_read_bool(struct cbus_mp_reader *r, int *v);
int cbus_mp_read_float(struct cbus_mp_reader *r, double *v);
int cbus_mp_read_str(struct cbus_mp_reader *r, const char **s, uint32_t *n);
int cbus_mp_read_bin(struct cbus_mp_reader *r, const uint8_t **p, uint32_t *n);
/* str or bin: the text fields of the schema. */
int cbus_mp_read_text(struct cbus_mp_reader *r, const char **s, uint32_t *n);
/* Skips one value of any type (nesting limited to 32 levels: -EBADMSG). */
int cbus_mp_skip(struct cbus_mp_reader *r);

/* 1 when s[0..n) is valid UTF-8 (no overlongs, no surrogates). */
int cbus_utf8_valid(const char *s, size_t n);

#endif
