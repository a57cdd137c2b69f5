/* cbus shared-memory layout: the ABI between producers, consumers and tools.
 *
 * This header is self-contained (no library needed) so that a tool can map a
 * segment read-only and decode it, the way LTTng's crash ABI lets tools read
 * buffers of a dead process.  Everything here is plain data at fixed offsets;
 * every offset another process depends on is static_assert'ed below and folded
 * into CBUS_LAYOUT_FINGERPRINT, which the creator writes into the header and
 * every attacher compares.
 *
 * Segment map (all offsets from the start of the mapping):
 *
 *   0                      struct cbus_shm_header      (CBUS_HEADER_SIZE)
 *   consumers_off          struct cbus_consumer_entry  [CBUS_MAX_CONSUMERS]
 *   producers_off          struct cbus_producer_entry  [CBUS_MAX_PRODUCERS]
 *   admission_off          struct cbus_admit_writer    [CBUS_ADMIT_MAX_WRITERS]
 *                          struct cbus_admit_entry     [admission_entries]
 *   slots_off              struct cbus_slot            [capacity]
 *                          (lane L's ring: lane_capacity slots from
 *                          slots_off + L * lane_capacity * CBUS_SLOT_SIZE)
 *   lanes_off              struct cbus_lane            [lane_count]   (lane_count > 1)
 *   lane_cursors_off       struct cbus_lane_cursors    [CBUS_MAX_CONSUMERS] (lane_count > 1)
 *
 * Token convention (stated once, used everywhere): OpenTelemetry's.  The
 * input token count INCLUDES cache_read and cache_creation tokens; the output
 * count INCLUDES reasoning tokens.  Absent is not zero: each count has a bit in
 * usage_present, and a count whose bit is clear must be reported as absent.
 */
#ifndef CBUS_LAYOUT_H
#define CBUS_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

/* The same bytes from C11 and from C++ (any standard from C++11 on): shared
 * words are CBUS_ATOMIC(T), which is C11's _Atomic T and C++'s std::atomic<T>.
 * Both are the plain T's size and alignment for the lock-free types used here
 * (static_assert'ed below), so a C++ tool maps a segment with these structs
 * and touches shared words with std::atomic's explicit-order calls.  (C++23's
 * <stdatomic.h> would spell _Atomic the same way; this works before it.) */
#ifdef __cplusplus
#include <atomic>
#define CBUS_ATOMIC(T)  std::atomic<T>
#define CBUS_ALIGNAS(n) alignas(n)
#define CBUS__ALIGNOF(T) alignof(T)
#define CBUS__LOCK_FREE_LLONG ATOMIC_LLONG_LOCK_FREE
#define CBUS__LOCK_FREE_INT   ATOMIC_INT_LOCK_FREE
extern "C" {
#else
#include <assert.h> /* static_assert */
#include <stdatomic.h>
#define CBUS_ATOMIC(T)  _Atomic T
#define CBUS_ALIGNAS(n) _Alignas(n)
#define CBUS__ALIGNOF(T) _Alignof(T)
#define CBUS__LOCK_FREE_LLONG ATOMIC_LLONG_LOCK_FREE
#define CBUS__LOCK_FREE_INT   ATOMIC_INT_LOCK_FREE
#endif

static_assert(CBUS__LOCK_FREE_LLONG == 2, "cbus needs lock-free 64-bit atomics");
static_assert(CBUS__LOCK_FREE_INT == 2, "cbus needs lock-free 32-bit atomics");

#define CBUS_MAGIC            UINT64_C(0x474E495253554243) /* "CBUSRING" little endian */
#define CBUS_ENDIAN_MARK      UINT32_C(0x01020304)
#define CBUS_LAYOUT_MAJOR     2  /* incompatible change: refuse to attach (2: events v2) */
#define CBUS_LAYOUT_MINOR     1  /* written for old tools, never read: see the features */

/* Feature bits (ext4-style), in cbus_shm_header.required_features and
 * compat_features.  A creator sets the bits of everything the segment relies
 * on.  An attacher refuses a segment with a REQUIRED bit it does not know
 * (-EPROTONOSUPPORT: its writers or readers would break a protocol this
 * library does not follow), and ignores COMPAT bits it does not know (an
 * addition an old reader may safely not use).  A new feature is one bit here
 * plus the code that honours it; layout_major changes only when the bytes
 * already here move. */
#define CBUS_FEATURE_NEED_WAKE   (1u << 0) /* required: a consumer about to sleep
                                              sets need_wake, and a producer
                                              wakes only if it swaps it back */
#define CBUS_FEATURE_LANES       (1u << 1) /* required: the ring is lane_count
                                              lanes (lane_count > 1); a reader
                                              of lane 0 alone would miss events */
#define CBUS_FEATURES_REQUIRED_KNOWN (CBUS_FEATURE_NEED_WAKE | CBUS_FEATURE_LANES)
#define CBUS_FEATURES_COMPAT_KNOWN   0u

#define CBUS_CACHELINE        64
#define CBUS_HOTLINE          128 /* two lines: adjacent-line prefetch (Aeron) */
#define CBUS_HEADER_SIZE      4096
#define CBUS_SLOT_SIZE        512
#define CBUS_MAX_CONSUMERS    64
#define CBUS_MAX_PRODUCERS    128
#define CBUS_MAX_LANES        64
#define CBUS_ADMIT_MAX_WRITERS 8
#define CBUS_NAME_MAX         32  /* bus and consumer names, NUL included */

/* ---- event kinds: one map ------------------------------------------------
 * Every table and switch over kinds in the project is generated from this
 * map or goes through the helpers below, so adding a kind is one line here
 * (plus its payload member, if it needs a new one).  Columns:
 *   XX(ENUM, name, value, family, phase, payload)
 *   ENUM     CBUS_EV_<ENUM>
 *   name     cbus_kind_name(): the name in JSON, msgpack, cbusctl and logs
 *   value    the wire value (never reused); values are dense from 1
 *   family   CBUS_FAMILY_<family>: which kind of run it belongs to
 *   phase    CBUS_PHASE_<phase>: START opens a run, END / ERROR close it,
 *            POINT happens inside one
 *   payload  CBUS_PAYLOAD_<payload>: which member of cbus_event.u it fills
 * LangChain callback names in the comments. */
#define CBUS_KIND_MAP(XX)                                                                  \
    XX(LLM_START,        llm_start,        1,  LLM,       START, LLM_START) /* on_llm_start */ \
    XX(CHAT_MODEL_START, chat_model_start, 2,  LLM,       START, LLM_START) /* on_chat_model_start */ \
    XX(LLM_NEW_TOKEN,    llm_new_token,    3,  LLM,       POINT, TOKEN)     /* chunk in preview */ \
    XX(LLM_END,          llm_end,          4,  LLM,       END,   USAGE)     /* on_llm_end */ \
    XX(LLM_ERROR,        llm_error,        5,  LLM,       ERROR, ERROR)     /* on_llm_error */ \
    XX(CHAIN_START,      chain_start,      6,  CHAIN,     START, NONE)                        \
    XX(CHAIN_END,        chain_end,        7,  CHAIN,     END,   SPAN)                        \
    XX(CHAIN_ERROR,      chain_error,      8,  CHAIN,     ERROR, ERROR)                       \
    XX(TOOL_START,       tool_start,       9,  TOOL,      START, NONE)  /* name = tool, preview = input */ \
    XX(TOOL_END,         tool_end,         10, TOOL,      END,   SPAN)  /* preview = output */ \
    XX(TOOL_ERROR,       tool_error,       11, TOOL,      ERROR, ERROR)                       \
    XX(AGENT_ACTION,     agent_action,     12, AGENT,     POINT, NONE)  /* name = tool chosen */ \
    XX(AGENT_FINISH,     agent_finish,     13, AGENT,     END,   SPAN)  /* preview = final output */ \
    XX(RETRIEVER_START,  retriever_start,  14, RETRIEVER, START, NONE)  /* preview = query */ \
    XX(RETRIEVER_END,    retriever_end,    15, RETRIEVER, END,   RETRIEVER)                   \
    XX(RETRIEVER_ERROR,  retriever_error,  16, RETRIEVER, ERROR, ERROR)                       \
    XX(TEXT,             text,             17, OTHER,     POINT, NONE)  /* on_text */         \
    XX(RETRY,            retry,            18, OTHER,     POINT, RETRY) /* on_retry */        \
    XX(CUSTOM,           custom,           19, OTHER,     POINT, NONE)  /* on_custom_event */ \
    XX(CHAT_MODEL_STREAM, chat_model_stream, 20, LLM,     POINT, TOKEN) /* handleChatModelStreamEvent (LangChain 1.x) */ \
    XX(TOOL_EVENT,       tool_event,       21, TOOL,      POINT, NONE)  /* handleToolEvent (LangChain 1.x) */ \
    XX(SCORE,            score,            22, OTHER,     POINT, SCORE) /* a grade of a run: name, value, comment */ \
    XX(CONVERSATION,     conversation,     23, OTHER,     POINT, NONE)  /* explicit chat history: name = create | rename | state | message */

enum cbus_kind {
    CBUS_EV_NONE = 0,
#define CBUS__KIND_ENUM(E, n, v, f, p, pl) CBUS_EV_##E = v,
    CBUS_KIND_MAP(CBUS__KIND_ENUM)
#undef CBUS__KIND_ENUM
    CBUS_EV__COUNT
};

/* Families: the kind of run an event belongs to (LangChain's run types). */
enum cbus_kind_family {
    CBUS_FAMILY_NONE = 0,  /* CBUS_EV_NONE, or a kind this header does not know */
    CBUS_FAMILY_LLM = 1,
    CBUS_FAMILY_CHAIN = 2,
    CBUS_FAMILY_TOOL = 3,
    CBUS_FAMILY_AGENT = 4, /* agent callbacks have no start: they fall inside a chain run */
    CBUS_FAMILY_RETRIEVER = 5,
    CBUS_FAMILY_OTHER = 6,
};

enum cbus_kind_phase {
    CBUS_PHASE_NONE = 0,
    CBUS_PHASE_START = 1,
    CBUS_PHASE_END = 2,
    CBUS_PHASE_ERROR = 3,
    CBUS_PHASE_POINT = 4,
};

/* Which member of cbus_event.u a kind fills (NONE: u is zero). */
enum cbus_kind_payload {
    CBUS_PAYLOAD_NONE = 0,
    CBUS_PAYLOAD_LLM_START = 1, /* u.llm_start */
    CBUS_PAYLOAD_TOKEN = 2,     /* u.token */
    CBUS_PAYLOAD_USAGE = 3,     /* u.usage */
    CBUS_PAYLOAD_ERROR = 4,     /* u.error */
    CBUS_PAYLOAD_RETRY = 5,     /* u.retry */
    CBUS_PAYLOAD_RETRIEVER = 6, /* u.retriever */
    CBUS_PAYLOAD_SPAN = 7,      /* u.span */
    CBUS_PAYLOAD_SCORE = 8,     /* u.score */
};

/* The map's columns for a kind read from a segment (any value: unknown
 * kinds answer NONE).  Inline so a tool needs no library for them. */
#define CBUS__KIND_FAMILY(E, n, v, f, p, pl) case v: return CBUS_FAMILY_##f;
#define CBUS__KIND_PHASE(E, n, v, f, p, pl) case v: return CBUS_PHASE_##p;
#define CBUS__KIND_PAYLOAD(E, n, v, f, p, pl) case v: return CBUS_PAYLOAD_##pl;
static inline enum cbus_kind_family cbus_kind_family(unsigned kind)
{
    switch (kind) {
    CBUS_KIND_MAP(CBUS__KIND_FAMILY)
    default: return CBUS_FAMILY_NONE;
    }
}
static inline enum cbus_kind_phase cbus_kind_phase(unsigned kind)
{
    switch (kind) {
    CBUS_KIND_MAP(CBUS__KIND_PHASE)
    default: return CBUS_PHASE_NONE;
    }
}
static inline enum cbus_kind_payload cbus_kind_payload(unsigned kind)
{
    switch (kind) {
    CBUS_KIND_MAP(CBUS__KIND_PAYLOAD)
    default: return CBUS_PAYLOAD_NONE;
    }
}
#undef CBUS__KIND_FAMILY
#undef CBUS__KIND_PHASE
#undef CBUS__KIND_PAYLOAD

/* Finish reasons, as OpenTelemetry's gen_ai.response.finish_reasons values. */
enum cbus_finish_reason {
    CBUS_FINISH_UNSET = 0,
    CBUS_FINISH_STOP = 1,
    CBUS_FINISH_LENGTH = 2,
    CBUS_FINISH_TOOL_CALLS = 3,
    CBUS_FINISH_CONTENT_FILTER = 4,
    CBUS_FINISH_ERROR = 5,
    CBUS_FINISH_OTHER = 6,
    CBUS_FINISH__COUNT
};

/* usage_present bits: a count is meaningful only when its bit is set. */
#define CBUS_USAGE_INPUT          (1u << 0)
#define CBUS_USAGE_OUTPUT         (1u << 1)
#define CBUS_USAGE_CACHE_READ     (1u << 2)
#define CBUS_USAGE_CACHE_CREATION (1u << 3)
#define CBUS_USAGE_REASONING      (1u << 4)
#define CBUS_USAGE_DURATION       (1u << 5)
#define CBUS_USAGE_TTFT           (1u << 6)

/* cbus_event.flags: which bounded strings were cut to fit (the key hashes
 * are of the whole value, so a cut key is still told apart), and what else
 * the event carries. */
#define CBUS_TRUNC_PROVIDER   (1u << 0)
#define CBUS_TRUNC_MODEL      (1u << 1)
#define CBUS_TRUNC_USER       (1u << 2)
#define CBUS_TRUNC_SESSION    (1u << 3)
#define CBUS_TRUNC_REQUEST    (1u << 4)
#define CBUS_TRUNC_NAME       (1u << 5)
#define CBUS_TRUNC_PREVIEW    (1u << 6)
#define CBUS_TRUNC_AGENT      (1u << 7)
#define CBUS_FLAG_HAS_PARENT  (1u << 8)  /* parent_run_id is meaningful */
#define CBUS_FLAG_HAS_TRACE   (1u << 9)  /* trace_id is meaningful */
#define CBUS_TRUNC_TENANT     (1u << 10)
#define CBUS_FLAG_BODY        (1u << 11) /* body_len bytes of body follow the event */
#define CBUS_FLAG_BODY_CUT    (1u << 12) /* the body was cut to the bus's body limit */

/* Bounded string fields: NUL-padded; a reader must never rely on the NUL
 * (use strnlen(field, sizeof field)).  Keys longer than their field are cut
 * (CBUS_TRUNC_*) but keep their identity in key_hash[]. */
#define CBUS_PROVIDER_LEN  24
#define CBUS_MODEL_LEN     48
#define CBUS_USER_LEN      40
#define CBUS_SESSION_LEN   40
#define CBUS_AGENT_LEN     24
#define CBUS_TENANT_LEN    24
#define CBUS_REQUEST_LEN   32
#define CBUS_NAME_LEN      32
#define CBUS_PREVIEW_LEN   32

/* The keys consumers count, throttle and budget by.  key_hash[k] is
 * cbus_key_hash() of the key's whole value (0 = empty), so two values that
 * share their first CBUS_*_LEN - 1 bytes are still two keys. */
enum cbus_key {
    CBUS_KEY_PROVIDER = 0,
    CBUS_KEY_MODEL = 1,
    CBUS_KEY_USER = 2,
    CBUS_KEY_SESSION = 3,
    CBUS_KEY_AGENT = 4,
    CBUS_KEY_TENANT = 5,
    CBUS_KEY__COUNT
};

/* 64-bit FNV-1a of len bytes, 0 for an empty value (and never 0 otherwise).
 * Inline so a reader of the segment needs no library for it. */
static inline uint64_t cbus_key_hash(const char *s, size_t len)
{
    if (!len)
        return 0;
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= UINT64_C(0x100000001b3);
    }
    return h ? h : 1;
}

struct cbus_usage {                 /* llm_end */
    uint32_t input_tokens;          /* includes cache_read + cache_creation */
    uint32_t output_tokens;         /* includes reasoning */
    uint32_t cache_read_tokens;
    uint32_t cache_creation_tokens;
    uint32_t reasoning_tokens;
    uint8_t  usage_present;         /* CBUS_USAGE_* */
    uint8_t  finish_reason;         /* enum cbus_finish_reason */
    uint16_t generations;           /* number of choices returned (0 = unknown) */
    uint64_t duration_ns;           /* llm_start .. llm_end */
    uint64_t ttft_ns;               /* llm_start .. first token */
};

struct cbus_llm_start_info {        /* llm_start, chat_model_start */
    uint32_t prompt_count;          /* prompts, or messages for chat */
    uint32_t est_input_tokens;      /* caller's estimate, 0 = none (rate limiter) */
    uint32_t max_tokens;            /* requested limit, 0 = none */
    uint32_t _reserved;
};

struct cbus_token_info {            /* llm_new_token */
    uint32_t index;                 /* 0-based chunk index within the run */
    uint32_t _reserved;
};

struct cbus_error_info {            /* *_error */
    int32_t  http_status;           /* 0 = not an HTTP error */
    uint32_t _reserved;
    uint64_t duration_ns;           /* start .. error, 0 = unknown */
};

struct cbus_retry_info {            /* retry */
    uint32_t attempt;               /* 1 = first retry */
    uint32_t _reserved;
    uint64_t backoff_ns;
};

struct cbus_retriever_info {        /* retriever_end */
    uint32_t document_count;
    uint32_t _reserved;
    uint64_t duration_ns;
};

struct cbus_span_info {             /* chain_end, tool_end, agent_finish */
    uint64_t duration_ns;           /* 0 = unknown */
};

enum cbus_score_type {
    CBUS_SCORE_NUMERIC = 1,         /* value */
    CBUS_SCORE_BOOLEAN = 2,         /* value 0 or 1 */
    CBUS_SCORE_CATEGORICAL = 3,     /* the category in preview (value unused) */
};

struct cbus_score_info {            /* score: name = the score's name */
    double   value;
    uint8_t  type;                  /* enum cbus_score_type */
    uint8_t  _reserved[7];
};

/* An event's per-kind numbers (cbus_event.u; cbus_emit_args.payload points
 * at one of these). */
union cbus_event_payload {
    struct cbus_usage usage;
    struct cbus_llm_start_info llm_start;
    struct cbus_token_info token;
    struct cbus_error_info error;
    struct cbus_retry_info retry;
    struct cbus_retriever_info retriever;
    struct cbus_span_info span;
    struct cbus_score_info score;
    uint8_t raw[64];
};

/* One event: every kind has the same 496-byte layout. */
struct cbus_event {
    uint16_t kind;                  /* enum cbus_kind */
    uint16_t flags;                 /* CBUS_TRUNC_*, CBUS_FLAG_* */
    uint32_t pid;
    uint32_t tid;
    uint32_t body_len;              /* with CBUS_FLAG_BODY: bytes of body (docs/bodies.md) */
    uint64_t event_id;              /* ring position: unique per bus_id, dedupe key */
    uint64_t ts_realtime_ns;        /* CLOCK_REALTIME, ns since the epoch */
    uint64_t ts_mono_ns;            /* CLOCK_MONOTONIC, ns */
    uint8_t  run_id[16];            /* UUID bytes */
    uint8_t  parent_run_id[16];
    uint8_t  trace_id[16];          /* W3C 128-bit trace id */
    union cbus_event_payload u;
    uint64_t key_hash[CBUS_KEY__COUNT]; /* cbus_key_hash() of each whole key */
    char provider[CBUS_PROVIDER_LEN];   /* "openai", "anthropic", "aws.bedrock" */
    char model[CBUS_MODEL_LEN];
    char user[CBUS_USER_LEN];
    char session[CBUS_SESSION_LEN];     /* session / conversation id */
    char agent[CBUS_AGENT_LEN];         /* agent name or slug */
    char tenant[CBUS_TENANT_LEN];       /* team or organisation */
    char request_id[CBUS_REQUEST_LEN];  /* request / correlation id */
    char name[CBUS_NAME_LEN];           /* tool, chain, agent, custom event or error type */
    char preview[CBUS_PREVIEW_LEN];     /* text preview; chunk text for new_token */
};

/* One ring slot: the commit word, who is writing, then the event. */
struct cbus_slot {
    /* Commit protocol for ring position p (slot p & mask):
     *   2p+1  a producer is writing position p (payload unstable)
     *   2p+2  position p is committed (payload stable)
     * Anything else: the slot holds another lap (older: not yet written;
     * newer: the reader was lapped).  0 = never written. */
    CBUS_ATOMIC(uint64_t) seq;
    CBUS_ATOMIC(uint32_t) writer_pid;     /* pid that claimed it (for abandon checks) */
    CBUS_ATOMIC(uint32_t) part;           /* CBUS_PART_*: an event, or bytes of the body
                                             of the event at an earlier position */
    struct cbus_event ev;                 /* CBUS_PART_BODY: CBUS_BODY_PER_SLOT body bytes */
};

/* ---- bodies (docs/bodies.md) ----------------------------------------------
 * An event with CBUS_FLAG_BODY carries body_len bytes of body in the
 * CBUS_BODY_SLOTS(body_len) slots after its own position in its lane
 * (slot.part = CBUS_PART_BODY, CBUS_BODY_PER_SLOT bytes each).  The body is
 * sections, each a struct cbus_body_section and then len bytes, no padding;
 * a reader skips sections of a type it does not know. */
enum cbus_body_type {
    CBUS_BODY_TEXT = 1,      /* the event's text whole: prompt, output, tool input or
                                result, query, error message with stack, custom data */
    CBUS_BODY_MESSAGES = 2,  /* chat messages as JSON, OpenTelemetry's gen_ai.input.messages /
                                gen_ai.output.messages shape */
    CBUS_BODY_TAGS = 3,      /* the run's tags: tag NUL tag NUL ... */
    CBUS_BODY_METADATA = 4,  /* the run's metadata: key NUL value NUL ... */
    CBUS_BODY_SYSTEM = 5,    /* on LLM starts: system instructions given apart from the chat
                                history, OpenTelemetry's gen_ai.system_instructions shape (a JSON
                                array of parts) or plain text */
    CBUS_BODY_RESPONSE_ID = 6, /* on llm_end: the provider's id of the response
                                  (gen_ai.response.id), CBUS_RESPONSE_ID_MAX bytes at most */
};
#define CBUS_RESPONSE_ID_MAX 256
#define CBUS_BODY_SECTION_CUT (1u << 0) /* len < orig_len: cut at the bus's body limit */
struct cbus_body_section {
    uint16_t type;           /* enum cbus_body_type */
    uint16_t flags;          /* CBUS_BODY_SECTION_* */
    uint32_t len;            /* bytes that follow */
    uint32_t orig_len;       /* bytes the producer had */
    uint32_t dropped;        /* TAGS, METADATA: entries the context had no room for */
};

#define CBUS_BODY_LIMIT_DEFAULT (64u * 1024u)
#define CBUS_BODY_LIMIT_MAX     (16u * 1024u * 1024u)
#define CBUS_PART_EVENT   0u
#define CBUS_PART_BODY    1u
#define CBUS_BODY_PER_SLOT ((uint32_t)sizeof(struct cbus_event)) /* 496 */
/* Body slots after an event with body_len bytes of body. */
#define CBUS_BODY_SLOTS(len) (((uint64_t)(len) + CBUS_BODY_PER_SLOT - 1) / CBUS_BODY_PER_SLOT)

#define CBUS_SEQ_BUSY(p)      (2 * (uint64_t)(p) + 1)
#define CBUS_SEQ_COMMITTED(p) (2 * (uint64_t)(p) + 2)

/* ---- consumer table ------------------------------------------------------ */
enum cbus_consumer_state {
    CBUS_CSTATE_FREE = 0,
    CBUS_CSTATE_CLAIMED = 1,   /* being set up by an attacher */
    CBUS_CSTATE_ACTIVE = 2,
    CBUS_CSTATE_PARKED = 3,    /* detached with CBUS_CONSUMER_KEEP: name and cursor
                                  kept for CBUS_START_RESUME; reusable */
};

#define CBUS_CFLAG_LOSSLESS   (1u << 0) /* asked for lossless delivery */
#define CBUS_CFLAG_TETHERED   (1u << 1) /* currently gates producers */
#define CBUS_CFLAG_SLEEPING   (1u << 2) /* in futex wait */
#define CBUS_CFLAG_KINDS      (1u << 3) /* entry.kinds holds the kinds it needs (else: all) */

/* Bit of kind k in a kinds mask (cbus_consumer_opts.kinds, entry.kinds). */
#define CBUS_KIND_BIT(k)      (UINT64_C(1) << (k))

struct cbus_consumer_entry {
    /* line 0: identity, written at attach */
    CBUS_ATOMIC(uint32_t) state;            /* enum cbus_consumer_state */
    CBUS_ATOMIC(uint32_t) flags;            /* CBUS_CFLAG_* */
    CBUS_ATOMIC(uint32_t) pid;              /* atomic: producers read it while a re-attach writes */
    uint32_t _reserved0;
    CBUS_ATOMIC(uint64_t) pid_start_time;   /* /proc/pid/stat starttime, against pid reuse */
    uint64_t attach_realtime_ns;
    CBUS_ATOMIC(uint64_t) generation;       /* bumped at every attach of this entry */
    char name[CBUS_NAME_MAX - 8];
    /* line 1: counters and heartbeat, written by the consumer only */
    CBUS_ATOMIC(uint64_t) heartbeat_ns;     /* monotonic; producers read it only when gated */
    CBUS_ATOMIC(uint64_t) consumed;
    CBUS_ATOMIC(uint64_t) lost;             /* overwritten before this consumer read them */
    CBUS_ATOMIC(uint64_t) abandoned;        /* claimed by a producer that never committed */
    CBUS_ATOMIC(uint64_t) read_pos;         /* next position the consumer will read */
    CBUS_ATOMIC(uint64_t) untethered_count; /* times it was cut loose */
    /* With CBUS_CFLAG_KINDS: the kinds (CBUS_KIND_BIT) a lossless consumer
     * cannot do without.  Producers at its bound drop other kinds at once
     * instead of waiting for it.  Written at attach, before the entry is
     * ACTIVE; producers read it when they recompute the gate. */
    CBUS_ATOMIC(uint64_t) kinds;
    CBUS_ATOMIC(uint64_t) body_slots;       /* positions of bodies of events consumed */
    /* lines 2-3: the committed cursor, the only word producers read on the
     * fast-ish path (recomputing the gate), alone on a 128-byte pair */
    CBUS_ALIGNAS(CBUS_HOTLINE) CBUS_ATOMIC(uint64_t) cursor;
    uint8_t _pad2[CBUS_HOTLINE - 8];
};


/* ---- producer table (statistics only; never on the claim path) ----------- */
struct cbus_producer_entry {
    CBUS_ATOMIC(uint32_t) in_use;
    CBUS_ATOMIC(uint32_t) pid;        /* atomic: consumers scan it while a producer opens */
    CBUS_ATOMIC(uint64_t) pid_start_time;
    CBUS_ATOMIC(uint64_t) emitted;    /* flushed from per-thread counters every 256 emits */
    CBUS_ATOMIC(uint64_t) dropped;    /* exact */
    CBUS_ATOMIC(uint64_t) waited_ns;  /* time spent waiting on lossless consumers */
    CBUS_ATOMIC(uint64_t) max_wait_ns;
    char name[16];
};

/* ---- admission table (control plane) ------------------------------------ */
enum cbus_verdict {
    CBUS_ALLOW = 0,
    CBUS_THROTTLED = 1,        /* retry after until_ns */
    CBUS_BUDGET_EXCEEDED = 2,
};

enum cbus_admit_scope {
    CBUS_SCOPE_GLOBAL = 0,
    CBUS_SCOPE_USER = 1,
    CBUS_SCOPE_SESSION = 2,
    CBUS_SCOPE_MODEL = 3,
    CBUS_SCOPE_PROVIDER = 4,
    CBUS_SCOPE_AGENT = 5,   /* layout 2.0: agent and tenant budgets and limits */
    CBUS_SCOPE_TENANT = 6,
    CBUS_SCOPE__COUNT
};

struct cbus_admit_writer {
    CBUS_ATOMIC(uint32_t) in_use;
    CBUS_ATOMIC(uint32_t) pid;
    CBUS_ATOMIC(uint64_t) pid_start_time;
    CBUS_ATOMIC(uint64_t) heartbeat_ns;     /* monotonic; stale => fail open/closed */
    char name[CBUS_NAME_MAX - 8];
    uint8_t _pad[CBUS_CACHELINE - 24 - (CBUS_NAME_MAX - 8)];
};

#define CBUS_ADMIT_KEY_LEN 40

struct cbus_admit_entry {
    /* Seqlock: odd while its writer updates the entry; readers retry. */
    CBUS_ATOMIC(uint32_t) seq;
    CBUS_ATOMIC(uint32_t) word;             /* verdict | scope << 8 | writer << 16 */
    CBUS_ATOMIC(uint64_t) key_hash;         /* 0 = empty slot; cbus_admit_key_hash() */
    CBUS_ATOMIC(uint64_t) until_ns;         /* monotonic; verdict holds until then, 0 = until cleared */
    char key[CBUS_ADMIT_KEY_LEN];      /* for display only; readers match on key_hash */
};
#define CBUS_ADMIT_WORD(verdict, scope, writer) \
    ((uint32_t)(verdict) | (uint32_t)(scope) << 8 | (uint32_t)(writer) << 16)

/* ---- the header (page 0) --------------------------------------------------- */
#define CBUS_CLOCK_TSC       1  /* timestamps from rdtsc, calibrated below */
#define CBUS_CLOCK_GETTIME   2  /* no usable TSC: clock_gettime */

/* Offsets of the event fields a tool needs, so it can decode without this
 * header (LTTng-style self-description).  Terminated by an entry with size 0. */
struct cbus_field_desc {
    char     name[16];
    uint16_t offset;
    uint16_t size;
};
#define CBUS_FIELD_TABLE_MAX 24

/* ---- lanes ---------------------------------------------------------------
 * A bus of lane_count > 1 is that many rings side by side, each claimed by
 * fetch_add on its own tail line, so producer threads that own different
 * lanes share no written line on the fast path.  Lane 0's tail is
 * hdr->tail and its consumer words are the consumer entry's (a one-lane bus
 * is the layout from before lanes); lanes 1.. keep theirs here.  A lane's
 * position p is the event id p * lane_count + L. */
struct cbus_lane {
    CBUS_ALIGNAS(CBUS_HOTLINE) CBUS_ATOMIC(uint64_t) tail; /* lanes 1..; lane 0 uses hdr->tail */
    uint8_t _pad0[CBUS_HOTLINE - 8];
    /* owner: written when a thread takes or gives the lane back */
    CBUS_ALIGNAS(CBUS_HOTLINE) CBUS_ATOMIC(uint64_t) owner; /* pid << 32 | tid; 0 = free */
    CBUS_ATOMIC(uint64_t) owner_start_time;  /* the pid's start time, against pid reuse */
    CBUS_ATOMIC(uint64_t) taken;             /* times a thread took it (statistics) */
    uint8_t _pad1[CBUS_HOTLINE - 24];
};

/* One per consumer entry: its committed cursor and read position in lanes
 * 1..lane_count-1 (index 0 unused: the entry's own words). */
struct cbus_lane_cursors {
    CBUS_ATOMIC(uint64_t) cursor[CBUS_MAX_LANES];
    CBUS_ATOMIC(uint64_t) read_pos[CBUS_MAX_LANES];
};

struct cbus_shm_header {
    /* identity: written once by the creator, before `ready` */
    uint64_t magic;                    /* CBUS_MAGIC */
    uint32_t endian;                   /* CBUS_ENDIAN_MARK */
    uint16_t layout_major;
    uint16_t layout_minor;
    uint64_t fingerprint;              /* CBUS_LAYOUT_FINGERPRINT */
    uint32_t header_size;
    uint32_t slot_size;
    uint64_t capacity;                 /* slots, power of two */
    uint64_t total_size;               /* bytes of the mapping */
    uint64_t consumers_off;
    uint32_t max_consumers;
    uint32_t max_producers;
    uint64_t producers_off;
    uint64_t admission_off;            /* writer table, then entries */
    uint32_t admission_entries;        /* power of two */
    uint32_t admit_max_writers;
    uint64_t slots_off;
    uint64_t bus_id;                   /* random at create: event ids are unique per bus_id */
    uint32_t creator_pid;
    uint32_t mode;                     /* st_mode bits requested at create */
    uint64_t creator_start_time;
    uint64_t created_realtime_ns;
    /* policy (ns), fixed at create */
    uint64_t lossless_wait_ns;         /* producer's bound on waiting for a lossless consumer */
    uint64_t stall_timeout_ns;         /* heartbeat age after which a consumer is untethered */
    uint64_t abandon_timeout_ns;       /* wait before skipping a claimed, uncommitted slot */
    uint64_t admit_stale_ns;           /* admission writer heartbeat age => stale */
    /* clock: ns = base_ns + ((tsc - base_tsc) * mult) >> shift */
    uint32_t clock_source;             /* CBUS_CLOCK_* */
    uint32_t tsc_shift;
    uint64_t tsc_mult;
    uint64_t tsc_hz;
    char     name[CBUS_NAME_MAX];
    struct cbus_field_desc fields[CBUS_FIELD_TABLE_MAX];
    uint32_t required_features;        /* CBUS_FEATURE_*: unknown bit => refuse */
    uint32_t compat_features;          /* unknown bit => ignore */
    /* `ready` is stored last with RELEASE by the creator; attachers ACQUIRE it
     * before trusting anything above. */
    CBUS_ALIGNAS(CBUS_CACHELINE) CBUS_ATOMIC(uint32_t) ready;

    /* hot words: each on its own 128-byte line */
    CBUS_ALIGNAS(CBUS_HOTLINE) CBUS_ATOMIC(uint64_t) tail;      /* next position to claim */
    CBUS_ALIGNAS(CBUS_HOTLINE) CBUS_ATOMIC(uint32_t) wake_seq;  /* futex word */
    CBUS_ATOMIC(uint32_t) waiters;                          /* consumers in (or entering) futex wait */
    /* 1 once a consumer is about to sleep; the producer that swaps it back
     * to 0 makes the one wake syscall, so a sleeper that is slow to get a
     * CPU costs one syscall, not one per event. */
    CBUS_ATOMIC(uint32_t) need_wake;
    /* gate: n_tethered | epoch << 16.  Producers read it every emit; it
     * changes only when a lossless consumer attaches, detaches, is untethered
     * or re-tethers. */
    CBUS_ALIGNAS(CBUS_HOTLINE) CBUS_ATOMIC(uint64_t) gate;
    /* slow-path counters */
    CBUS_ALIGNAS(CBUS_HOTLINE) CBUS_ATOMIC(uint64_t) dropped;   /* all producers, exact */
    CBUS_ATOMIC(uint64_t) untethered;                       /* consumers cut loose */
    CBUS_ATOMIC(uint64_t) producer_overflow_emitted;        /* producers with no table entry */
    /* lanes (identity, written by the creator before `ready`).  Zero in a
     * segment from before lanes: one lane. */
    CBUS_ALIGNAS(CBUS_HOTLINE) uint32_t lane_count;          /* power of two, 1..CBUS_MAX_LANES */
    uint32_t body_limit;                                     /* bytes of body an event may carry */
    uint64_t lane_capacity;                                  /* slots per lane */
    uint64_t lanes_off;                                      /* struct cbus_lane [lane_count] */
    uint64_t lane_cursors_off;                               /* struct cbus_lane_cursors [CBUS_MAX_CONSUMERS] */
};

#define CBUS_GATE_COUNT(g)  ((uint32_t)((g) & 0xffffu))
#define CBUS_GATE_EPOCH(g)  ((g) >> 16)

/* ---- offsets other processes depend on ------------------------------------ */
static_assert(sizeof(CBUS_ATOMIC(uint64_t)) == 8 && CBUS__ALIGNOF(CBUS_ATOMIC(uint64_t)) == 8,
              "an atomic 64-bit word is a plain one in memory");
static_assert(sizeof(CBUS_ATOMIC(uint32_t)) == 4 && CBUS__ALIGNOF(CBUS_ATOMIC(uint32_t)) == 4,
              "an atomic 32-bit word is a plain one in memory");
/* The map's values are dense from 1 (tables are indexed by kind): unique
 * (a duplicate is a duplicate case in cbus_kind_family()), each in
 * 1..count, and as many as the entries. */
#define CBUS__KIND_ONE(E, n, v, f, p, pl) +1
#define CBUS__KIND_IN_RANGE(E, n, v, f, p, pl) && (v) >= 1 && (v) < CBUS_EV__COUNT
static_assert(CBUS_EV__COUNT == 1 CBUS_KIND_MAP(CBUS__KIND_ONE), "kind values are dense");
static_assert(1 CBUS_KIND_MAP(CBUS__KIND_IN_RANGE), "kind values are 1..count-1");
#undef CBUS__KIND_ONE
#undef CBUS__KIND_IN_RANGE
static_assert(sizeof(struct cbus_event) == 496, "event size");
static_assert(sizeof(struct cbus_slot) == CBUS_SLOT_SIZE, "slot size");
static_assert(offsetof(struct cbus_slot, ev) == 16, "slot.ev");
static_assert(offsetof(struct cbus_event, event_id) == 16, "event_id");
static_assert(offsetof(struct cbus_event, ts_realtime_ns) == 24, "ts_realtime_ns");
static_assert(offsetof(struct cbus_event, ts_mono_ns) == 32, "ts_mono_ns");
static_assert(offsetof(struct cbus_event, run_id) == 40, "run_id");
static_assert(offsetof(struct cbus_event, parent_run_id) == 56, "parent_run_id");
static_assert(offsetof(struct cbus_event, trace_id) == 72, "trace_id");
static_assert(offsetof(struct cbus_event, u) == 88, "u");
static_assert(sizeof(union cbus_event_payload) == 64, "u size");
static_assert(offsetof(struct cbus_event, key_hash) == 152, "key_hash");
static_assert(offsetof(struct cbus_event, provider) == 200, "provider");
static_assert(offsetof(struct cbus_event, model) == 224, "model");
static_assert(offsetof(struct cbus_event, user) == 272, "user");
static_assert(offsetof(struct cbus_event, session) == 312, "session");
static_assert(offsetof(struct cbus_event, agent) == 352, "agent");
static_assert(offsetof(struct cbus_event, tenant) == 376, "tenant");
static_assert(offsetof(struct cbus_event, request_id) == 400, "request_id");
static_assert(offsetof(struct cbus_event, name) == 432, "name");
static_assert(offsetof(struct cbus_event, preview) == 464, "preview");
static_assert(sizeof(struct cbus_score_info) == 16, "score");
static_assert(sizeof(struct cbus_body_section) == 16, "body section");
static_assert(offsetof(struct cbus_slot, part) == 12, "slot.part");
static_assert(offsetof(struct cbus_event, body_len) == 12, "body_len");
static_assert(sizeof(struct cbus_usage) == 40, "usage");
static_assert(sizeof(struct cbus_consumer_entry) == 256, "consumer entry");
static_assert(offsetof(struct cbus_consumer_entry, cursor) == 128, "consumer cursor");
static_assert(sizeof(struct cbus_producer_entry) == 64, "producer entry");
static_assert(sizeof(struct cbus_admit_writer) == 64, "admit writer");
static_assert(sizeof(struct cbus_admit_entry) == 64, "admit entry");
static_assert(sizeof(struct cbus_lane) == 256, "lane");
static_assert(sizeof(struct cbus_lane_cursors) == 16 * CBUS_MAX_LANES, "lane cursors");
static_assert(sizeof(struct cbus_shm_header) <= CBUS_HEADER_SIZE, "header fits page 0");
static_assert(offsetof(struct cbus_shm_header, tail) % CBUS_HOTLINE == 0, "tail line");
static_assert(offsetof(struct cbus_shm_header, required_features) == 696, "required_features");
static_assert(offsetof(struct cbus_shm_header, compat_features) == 700, "compat_features");
static_assert(offsetof(struct cbus_shm_header, ready) == 704, "ready");

/* A layout fingerprint: changes whenever a size or offset that another
 * process depends on changes (LMDB's MDB_LOCK_FORMAT idea).  The offset of
 * required_features is folded in since the feature bits arrived, so a reader
 * from before them (which would ignore them) refuses a segment that has them. */
#define CBUS__FP(acc, v) ((acc) * UINT64_C(1099511628211) ^ (uint64_t)(v))
#define CBUS_LAYOUT_FINGERPRINT                                                        \
    CBUS__FP(CBUS__FP(CBUS__FP(CBUS__FP(CBUS__FP(CBUS__FP(CBUS__FP(CBUS__FP(CBUS__FP(  \
    CBUS__FP(CBUS__FP(CBUS__FP(CBUS__FP(UINT64_C(14695981039346656037),                \
        sizeof(struct cbus_slot)), sizeof(struct cbus_event)),                         \
        offsetof(struct cbus_event, u)), offsetof(struct cbus_event, preview)),         \
        sizeof(struct cbus_usage)), sizeof(struct cbus_consumer_entry)),                \
        offsetof(struct cbus_consumer_entry, cursor)), sizeof(struct cbus_producer_entry)), \
        sizeof(struct cbus_admit_entry)), offsetof(struct cbus_shm_header, tail)),      \
        offsetof(struct cbus_shm_header, gate)), CBUS_LAYOUT_MAJOR),                    \
        offsetof(struct cbus_shm_header, required_features))

#ifdef __cplusplus
}
#endif

#endif
