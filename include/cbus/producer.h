/* Producer API: emit LLM callback events into a bus.
 *
 * Cost model: one timestamp (rdtsc), one atomic claim, one copy of a 496-byte
 * record from the context's template, one release store.  No syscall, lock,
 * allocation or print, except one futex wake when a consumer sleeps.  Every
 * emit call is thread-safe; a cbus_ctx is owned by one thread at a time (it is
 * per run, like a LangChain callback manager's child).
 *
 * Every emit returns 0, or:
 *   -EINVAL  NULL producer/context, or a kind out of range
 *   -EAGAIN  dropped: a lossless consumer kept the ring full past the wait
 *            bound, or the claim landed on a slot already used because
 *            someone wrote the segment's tail (the tail is then put back);
 *            counted in the producer's and the bus's dropped counters
 *   -ESTALE  the producer was closed, or its segment was truncated under it
 *            (the SIGBUS guard replaced its pages with zeros: see bus.h);
 *            the event is counted in the producer's dropped counter.  The
 *            check is one load of a process-local word.  Open the bus again
 *            (cbus_producer_check() says -EIO) once it is re-created.
 */
#ifndef CBUS_PRODUCER_H
#define CBUS_PRODUCER_H

#include <cbus/cbus.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CBUS_PRODUCER_ADMIT_FAIL_CLOSED (1u << 0) /* stale admission table refuses */

struct cbus_producer_opts {
    const char *name;      /* shown by cbusctl stat; NULL = "pid<N>" */
    unsigned flags;        /* CBUS_PRODUCER_* */
    uint32_t open_flags;   /* CBUS_OPEN_* for cbus_producer_open */
};

/* Opens bus NAME for producing.  opts may be NULL.
 * Returns 0 or the codes of cbus_bus_open(), -ENOMEM. */
CBUS_API int cbus_producer_open(cbus_producer **out, const char *bus_name,
                                const struct cbus_producer_opts *opts);
/* Same on an already open bus (borrowed: must outlive the producer). */
CBUS_API int cbus_producer_open_bus(cbus_producer **out, cbus_bus *bus,
                                    const struct cbus_producer_opts *opts);
/* Flushes counters and frees.  NULL is a no-op.  In a process forked after
 * the open, it frees that process's copy only: the producer-table entry stays
 * with the process that opened it. */
CBUS_API void cbus_producer_close(cbus_producer *p);

struct cbus_producer_stats {
    uint64_t emitted;      /* committed events (this thread's pending counts included) */
    uint64_t dropped;      /* exact */
    uint64_t waited_ns;    /* total time waiting on lossless consumers */
    uint64_t max_wait_ns;  /* the longest single wait: never above the bus's bound */
};
CBUS_API int cbus_producer_stats(cbus_producer *p, struct cbus_producer_stats *out);
CBUS_API cbus_bus *cbus_producer_bus(cbus_producer *p);

/* Is this producer still emitting into the bus its name refers to?  Emits
 * never look (that would be a syscall per event): a producer that keeps
 * emitting into a segment whose name was removed or re-created emits into
 * a segment no new consumer will read.  A host that may see its bus
 * re-created calls this from a timer or its own slow path (every second or
 * so), and on -EIDRM closes the producer and opens the bus again.
 * Returns the codes of cbus_bus_check(): 0, -EIO (truncated), -ENOENT
 * (removed), -EIDRM (re-created), -EINVAL. */
CBUS_API int cbus_producer_check(cbus_producer *p);

/* ---- context: who and what an event is about ------------------------------
 * A context carries the run ids and the bounded strings, pre-laid-out as an
 * event template, so an emit copies it in one go.  Setters truncate to the
 * field size and set the matching CBUS_TRUNC_* flag; NULL clears a field.
 *
 * Two ways to hold one.  C callers may declare a cbus_ctx (on the stack, per
 * run) and cbus_ctx_init() it: the struct is visible so that costs nothing.
 * Callers that must not depend on its size or layout (FFI, other languages,
 * a library built against another cbus version) use cbus_ctx_new() and
 * cbus_ctx_free(), or cbus_ctx_size() bytes of their own memory (8-byte
 * aligned) passed to cbus_ctx_init().  Its fields are not part of the API:
 * use the setters. */
#define CBUS_CTX_TAGS_MAX 512
#define CBUS_CTX_META_MAX 2048

struct cbus_ctx {
    struct cbus_event tmpl;         /* kind/timestamps/event_id are set per emit */
    uint64_t admit_hash[CBUS_SCOPE__COUNT]; /* cached cbus_admit_key_hash() values */
    uint64_t run_start_ns;          /* set by *_start calls, for durations */
    uint64_t first_token_ns;        /* set by the first llm_new_token */
    uint32_t token_index;           /* next llm_new_token index */
    uint32_t magic;                 /* CBUS_CTX_MAGIC once initialised */
    /* the run's tags and metadata, carried in the body of the events that
     * open a run and of scores (cbus_ctx_add_tag, cbus_ctx_set_metadata) */
    uint32_t tags_len, meta_len;    /* bytes used */
    uint32_t tags_dropped, meta_dropped; /* entries that did not fit */
    char tags[CBUS_CTX_TAGS_MAX];   /* tag NUL tag NUL ... */
    char meta[CBUS_CTX_META_MAX];   /* key NUL value NUL ... */
};
#define CBUS_CTX_MAGIC 0x43545843u

/* Fresh context with a new run id and a new trace id. */
CBUS_API void cbus_ctx_init(cbus_ctx *ctx);
/* sizeof(struct cbus_ctx) of the library actually loaded. */
CBUS_API size_t cbus_ctx_size(void);
/* A cbus_ctx_init()'ed context from malloc, or NULL (out of memory); free it
 * with cbus_ctx_free() (NULL is a no-op).  Never on the emit path. */
CBUS_API cbus_ctx *cbus_ctx_new(void);
CBUS_API void cbus_ctx_free(cbus_ctx *ctx);
/* Child run: copies parent's strings and trace id, parent_run_id = parent's
 * run id, new run id.  Returns 0 or -EINVAL. */
CBUS_API int cbus_ctx_child(cbus_ctx *child, const cbus_ctx *parent);
CBUS_API int cbus_ctx_set_provider(cbus_ctx *ctx, const char *provider);
CBUS_API int cbus_ctx_set_model(cbus_ctx *ctx, const char *model);
CBUS_API int cbus_ctx_set_user(cbus_ctx *ctx, const char *user);
CBUS_API int cbus_ctx_set_session(cbus_ctx *ctx, const char *session);
CBUS_API int cbus_ctx_set_request_id(cbus_ctx *ctx, const char *request_id);
/* The agent (name or slug) and tenant (team or organisation) the run
 * belongs to: keys that cbus-cost and cbus-ratelimit count by.  Each key is
 * shown cut to its field and told apart by the hash of its whole value. */
CBUS_API int cbus_ctx_set_agent(cbus_ctx *ctx, const char *agent);
CBUS_API int cbus_ctx_set_tenant(cbus_ctx *ctx, const char *tenant);
/* Tags and metadata (as LangChain passes them), inherited by child
 * contexts and carried in the body of every start event and score.
 * Returns 0, -EINVAL, -E2BIG (no room left in the context: not added, and
 * counted in the body section's `dropped`).  Setting a metadata key again
 * adds the new value after the old: readers take the last. */
CBUS_API int cbus_ctx_add_tag(cbus_ctx *ctx, const char *tag);
CBUS_API int cbus_ctx_set_metadata(cbus_ctx *ctx, const char *key, const char *value);
CBUS_API void cbus_ctx_clear_tags(cbus_ctx *ctx);
CBUS_API void cbus_ctx_clear_metadata(cbus_ctx *ctx);
CBUS_API int cbus_ctx_set_run_id(cbus_ctx *ctx, const uint8_t run_id[16]);
CBUS_API int cbus_ctx_set_parent_run_id(cbus_ctx *ctx, const uint8_t parent_run_id[16]);
CBUS_API int cbus_ctx_set_trace_id(cbus_ctx *ctx, const uint8_t trace_id[16]);

/* Random v4 UUID (run ids) and random 128-bit trace ids from a per-thread
 * generator (no syscall after the thread's first call). */
CBUS_API void cbus_run_id_new(uint8_t out[16]);
CBUS_API void cbus_trace_id_new(uint8_t out[16]);

/* ---- typed calls, one per event kind ---------------------------------------
 * Text arguments may be NULL.  A text's start is the event's preview (cut to
 * CBUS_PREVIEW_LEN with CBUS_TRUNC_PREVIEW set); a text longer than that is
 * carried whole in the event's body, up to the bus's body limit (cut there,
 * and flagged, never an error).  Messages are JSON in the shape of
 * OpenTelemetry's gen_ai.input.messages / gen_ai.output.messages. */
CBUS_API int cbus_llm_start(cbus_producer *p, cbus_ctx *ctx, const char *prompt,
                            const struct cbus_llm_start_info *info);
CBUS_API int cbus_chat_model_start(cbus_producer *p, cbus_ctx *ctx, const char *last_message,
                                   const struct cbus_llm_start_info *info);
/* chunk need not be NUL-terminated; len bytes are used.  The chunk index and
 * the time to first token are tracked in ctx. */
CBUS_API int cbus_llm_new_token(cbus_producer *p, cbus_ctx *ctx, const char *chunk, size_t len);
/* usage may be NULL (no usage reported).  When usage has no DURATION/TTFT bit,
 * they are filled from the ctx's start and first-token times. */
/* A chat model's start with the whole conversation (messages_len bytes of
 * JSON); last_message (may be NULL) is the new turn, shown in the preview. */
CBUS_API int cbus_chat_model_start_messages(cbus_producer *p, cbus_ctx *ctx,
                                            const char *messages_json, size_t messages_len,
                                            const char *last_message,
                                            const struct cbus_llm_start_info *info);
/* An llm_end whose output is chat messages (gen_ai.output.messages). */
CBUS_API int cbus_llm_end_messages(cbus_producer *p, cbus_ctx *ctx, const struct cbus_usage *usage,
                                   const char *messages_json, size_t messages_len);
/* An LLM call's start with system instructions given to the model apart
 * from the chat history (Anthropic's `system`, OpenAI Responses'
 * `instructions`, Gemini's `system_instruction`): system_len bytes, JSON in
 * the shape of OpenTelemetry's gen_ai.system_instructions
 * ([{"type":"text","content":"..."}]) or plain text, carried whole in the
 * start's body (CBUS_BODY_SYSTEM).  A system message that is part of the
 * history stays in messages_json.  messages_json may be NULL (a chat start
 * without the history); system NULL is the call without instructions.
 * Returns the emit codes; -EINVAL for a NULL text with a length. */
CBUS_API int cbus_chat_model_start_system(cbus_producer *p, cbus_ctx *ctx,
                                          const char *messages_json, size_t messages_len,
                                          const char *system, size_t system_len,
                                          const char *last_message,
                                          const struct cbus_llm_start_info *info);
CBUS_API int cbus_llm_start_system(cbus_producer *p, cbus_ctx *ctx, const char *prompt,
                                   const char *system, size_t system_len,
                                   const struct cbus_llm_start_info *info);
/* An llm_end with the provider's id of the response (gen_ai.response.id:
 * OpenAI's "chatcmpl-...", Anthropic's "msg_..."), known only once the call
 * returned, in the end's body (CBUS_BODY_RESPONSE_ID).  The output is a text
 * (output: preview and body text, as cbus_llm_end), messages
 * (messages_json, as cbus_llm_end_messages), both, or neither.
 * response_id: NULL (none) or 1..CBUS_RESPONSE_ID_MAX bytes of printable
 * ASCII (no space or control byte: an id, not a text).
 * Returns the emit codes; -EINVAL for a response id that is empty, longer
 * or holds other bytes (nothing is emitted), a NULL messages_json with a
 * length. */
CBUS_API int cbus_llm_end_response(cbus_producer *p, cbus_ctx *ctx, const struct cbus_usage *usage,
                                   const char *output, const char *messages_json,
                                   size_t messages_len, const char *response_id);
/* LangChain 1.x handleChatModelStreamEvent: a streamed chunk (like a token). */
CBUS_API int cbus_chat_model_stream(cbus_producer *p, cbus_ctx *ctx, const char *chunk, size_t len);
/* LangChain 1.x handleToolEvent: something a running tool reports. */
CBUS_API int cbus_tool_event(cbus_producer *p, cbus_ctx *ctx, const char *event_name,
                             const char *data);
/* A grade of the run (Langfuse's scores): name, a numeric or boolean
 * (0 or 1) value, or a category (CBUS_SCORE_CATEGORICAL; value unused);
 * comment may be NULL.  Returns the emit codes, and -EINVAL for no name, an
 * unknown type, a boolean other than 0 or 1, a value that is not finite, or
 * a category missing. */
CBUS_API int cbus_score(cbus_producer *p, cbus_ctx *ctx, const char *name, unsigned type,
                        double value, const char *category, const char *comment);
CBUS_API int cbus_llm_end(cbus_producer *p, cbus_ctx *ctx, const struct cbus_usage *usage,
                          const char *output);
CBUS_API int cbus_llm_error(cbus_producer *p, cbus_ctx *ctx, const char *error_type,
                            const char *message, int http_status);
CBUS_API int cbus_chain_start(cbus_producer *p, cbus_ctx *ctx, const char *chain_name,
                              const char *inputs);
CBUS_API int cbus_chain_end(cbus_producer *p, cbus_ctx *ctx, const char *outputs);
CBUS_API int cbus_chain_error(cbus_producer *p, cbus_ctx *ctx, const char *error_type,
                              const char *message);
CBUS_API int cbus_tool_start(cbus_producer *p, cbus_ctx *ctx, const char *tool_name,
                             const char *input);
CBUS_API int cbus_tool_end(cbus_producer *p, cbus_ctx *ctx, const char *output);
CBUS_API int cbus_tool_error(cbus_producer *p, cbus_ctx *ctx, const char *error_type,
                             const char *message);
CBUS_API int cbus_agent_action(cbus_producer *p, cbus_ctx *ctx, const char *tool_name,
                               const char *tool_input);
CBUS_API int cbus_agent_finish(cbus_producer *p, cbus_ctx *ctx, const char *output);
CBUS_API int cbus_retriever_start(cbus_producer *p, cbus_ctx *ctx, const char *retriever_name,
                                  const char *query);
CBUS_API int cbus_retriever_end(cbus_producer *p, cbus_ctx *ctx, uint32_t document_count);
/* The same, with the retrieved documents as text (a JSON array such as
 * [{"id":"doc-1","content":"...","metadata":{...}}], or plain text): its start
 * in the preview, all of it in the body, as for every other text.  NULL is
 * cbus_retriever_end(). */
CBUS_API int cbus_retriever_end_documents(cbus_producer *p, cbus_ctx *ctx, uint32_t document_count,
                                          const char *documents);
CBUS_API int cbus_retriever_error(cbus_producer *p, cbus_ctx *ctx, const char *error_type,
                                  const char *message);
CBUS_API int cbus_text(cbus_producer *p, cbus_ctx *ctx, const char *text);
CBUS_API int cbus_retry(cbus_producer *p, cbus_ctx *ctx, uint32_t attempt, uint64_t backoff_ns,
                        const char *reason);
CBUS_API int cbus_custom(cbus_producer *p, cbus_ctx *ctx, const char *event_name,
                         const char *data);

/* ---- explicit conversations ------------------------------------------------
 * For frameworks that keep the chat history themselves (Arshai's chat-history
 * callbacks, a server's own store): one CBUS_EV_CONVERSATION event per
 * operation, name = "create" | "rename" | "state" | "message", the
 * conversation id in the session field (and whole in the body), the
 * operation's fields as a JSON object in the body's CBUS_BODY_MESSAGES
 * section, and the message's text (or the title) as its CBUS_BODY_TEXT,
 * bytes as given.  cbus-history stores them (docs/history.md).
 * conversation_id NULL = the context's session.  Ids (conversation, message,
 * parent) are 1..CBUS_CONV_ID_MAX bytes without control characters; a title
 * 1..CBUS_CONV_TITLE_MAX bytes; a state 1..32 of [a-z0-9_-] ("active",
 * "archived", ...).  Not the emit hot path: each call builds its JSON in a
 * stack buffer (no allocation) and copies the context when the conversation
 * is not the context's session.
 * Returns the emit codes; -EINVAL for a missing or malformed argument (no
 * conversation id and no session, an unknown role, a bad id, title or
 * state), -E2BIG (the fields do not fit CBUS_CONV_FIELDS_MAX bytes of JSON). */
#define CBUS_CONV_ID_MAX     128
#define CBUS_CONV_TITLE_MAX  512
#define CBUS_CONV_FIELDS_MAX 8192

struct cbus_conv_message {
    const char *id;            /* message id; NULL = one derived from the event */
    const char *role;          /* "user", "assistant", "tool" or "system" (required) */
    const char *text;          /* may be NULL; any bytes */
    size_t text_len;           /* SIZE_MAX = strlen(text) */
    const char *parent_id;     /* NULL = the conversation's last message */
    const char *const *metadata; /* key, value, key, value, ..., NULL; may be NULL */
};
/* Creates the conversation (title may be NULL); for one that exists it
 * sets the title if it has none. */
CBUS_API int cbus_conversation_create(cbus_producer *p, cbus_ctx *ctx, const char *conversation_id,
                                      const char *title);
CBUS_API int cbus_conversation_rename(cbus_producer *p, cbus_ctx *ctx, const char *conversation_id,
                                      const char *title);
CBUS_API int cbus_conversation_set_state(cbus_producer *p, cbus_ctx *ctx,
                                         const char *conversation_id, const char *state);
/* A message of the conversation (which it creates when unknown). */
CBUS_API int cbus_conversation_message(cbus_producer *p, cbus_ctx *ctx,
                                       const char *conversation_id,
                                       const struct cbus_conv_message *m);

/* Generic emit: any kind, explicit per-kind numbers. */
struct cbus_emit_args {
    unsigned kind;             /* enum cbus_kind */
    const char *name;          /* tool / chain / custom name or error type; NULL = none */
    const char *preview;       /* NULL = none */
    size_t preview_len;        /* bytes of preview; SIZE_MAX = strlen */
    const void *payload;       /* per-kind union bytes (e.g. struct cbus_usage); NULL = zero */
    size_t payload_len;        /* at most 64 */
    const char *messages;      /* chat messages JSON for the body; NULL = none */
    size_t messages_len;
};
CBUS_API int cbus_emit(cbus_producer *p, cbus_ctx *ctx, const struct cbus_emit_args *args);

#ifdef __cplusplus
}
#endif

#endif
