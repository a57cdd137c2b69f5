/* Span assembly: pairs *_start with *_end / *_error by run_id, folds streamed
 * tokens and point events (text, retry, custom, agent actions) into the span
 * of their run, and hands finished spans to a callback.
 *
 * Open runs sit in a hash table by run_id and, in arrival order, on a list:
 * the list head is the oldest run (for the timeout sweep).  What a lossless
 * exporter may not acknowledge yet is kept per lane of the bus (event id =
 * lane position * lanes + lane): a run holds the lane position of its first
 * event in every lane it has events in (a run's events normally come from
 * one thread, so one lane; tokens or points folded in from another thread
 * add a hold in theirs).  Holds sit on one list per lane in arrival order,
 * which within a lane is position order, so each lane's head is the lowest
 * lane position held there.  On a one-lane bus that is the old rule: the
 * oldest run's start.
 */
#ifndef CBUS_EXPORT_SPAN_H
#define CBUS_EXPORT_SPAN_H

#include <stddef.h>
#include <stdint.h>

#include <cbus/consumer.h>
#include <cbus/layout.h>

#define SPAN_MAX_EVENTS 16  /* point events kept per span; more are counted */

enum span_end_kind {
    SPAN_ENDED = 0,        /* start and end seen */
    SPAN_UNFINISHED = 1,   /* no end before the timeout, the hold limit or shutdown */
    SPAN_START_MISSING = 2,/* end seen, start not (attached mid-run, or expired) */
    SPAN_POINT = 3,        /* a point event with no open run to attach to */
};

struct span;

/* A span's hold on one lane: the lane position of its first event there. */
struct span_hold {
    struct span_hold *prev, *next;  /* private: the lane's list, arrival order */
    struct span_hold *more;         /* the span's next hold (another lane) */
    struct span *owner;
    uint64_t lp;                    /* lane position */
    unsigned lane;
    int linked;                     /* private: on a lane's list */
};

struct span {
    struct cbus_event start;   /* the start event (for SPAN_START_MISSING / SPAN_POINT: the event) */
    struct cbus_event end;     /* valid when end_kind is SPAN_ENDED or SPAN_START_MISSING */
    unsigned end_kind;         /* enum span_end_kind */
    uint64_t start_pos;        /* ring position of the first event it holds */
    uint64_t arrival_ns;       /* monotonic, when the start was read (timeout sweep) */
    uint64_t unfinished_end_ns;/* realtime end used for SPAN_UNFINISHED */
    uint8_t span_id[8];
    uint8_t parent_span_id[8];
    uint8_t trace_id[16];
    int has_parent;
    int is_agent;              /* saw agent_action / agent_finish */
    uint32_t chunks;           /* llm_new_token events folded in */
    uint64_t first_chunk_mono_ns; /* 0 = none */
    uint32_t n_events;
    uint32_t events_dropped;   /* point events beyond SPAN_MAX_EVENTS */
    struct cbus_event *events; /* n_events point events, in order */
    /* Bodies (content.h).  start_body: what the run kept of its start
     * event's body (content_keep(): tags, metadata, and with content capture
     * text and messages cut to the cap), owned when body_owned, else the
     * event's own body for as long as the span is being emitted.  end_body:
     * the end event's body, only while the span is being emitted (the poll
     * buffer still holds it then).  NULL: none. */
    const void *start_body;
    uint32_t start_body_len;
    uint32_t end_body_len;
    const void *end_body;
    int body_owned;
    int body_dropped;          /* the start had a body the memory bound did not let it keep */
    /* With content: what point event i folded in kept of its body (a
     * score's comment, an agent action's tool input, a custom event's
     * data): content_keep() copies, owned; NULL array or entry: none. */
    struct span_body { void *p; uint32_t len; } *event_body;
    /* Lanes whose positions it holds: hold (its first event's), then
     * hold.more ...  Every finished span handed to the callback has them. */
    struct span_hold hold;
    /* private to the assembler */
    struct span *hnext, *prev, *next;
};

struct span_stats {
    uint64_t spans;             /* handed to the callback */
    uint64_t unfinished;        /* of which SPAN_UNFINISHED */
    uint64_t start_missing;     /* of which SPAN_START_MISSING */
    uint64_t points;            /* of which SPAN_POINT */
    uint64_t chunks_folded;
    uint64_t chunks_orphan;     /* llm_new_token with no open run: counted, not exported */
    uint64_t events_folded;     /* point events attached to an open span */
    uint64_t events_overflow;   /* point events beyond SPAN_MAX_EVENTS */
    uint64_t open;              /* runs open now */
    uint64_t body_bytes;        /* bytes of start bodies open runs hold */
    uint64_t bodies_dropped;    /* start bodies not kept: the body_memory bound */
};

/* Called once per finished span; the span is freed after it returns. */
typedef void (*span_emit_fn)(const struct span *s, void *arg);

struct span_table;

/* max_open bounds memory: beyond it the oldest run is exported unfinished. */
int span_table_new(struct span_table **out, size_t max_open, span_emit_fn emit, void *arg);
void span_table_free(struct span_table *t);

/* The bus's lane count (a power of two, default 1): how event ids split
 * into lane and lane position.  Set it before feeding events of that bus. */
void span_table_set_lanes(struct span_table *t, unsigned lanes);

/* Feeds one event read at ring position ev->event_id, at monotonic time now_ns. */
void span_table_feed(struct span_table *t, const struct cbus_event *ev, uint64_t now_ns);
/* The same with the event's body (NULL or empty: none).  The body need only
 * live for the call: an open run keeps a trimmed copy (span_table_bodies). */
void span_table_feed_body(struct span_table *t, const struct cbus_event *ev,
                          const struct cbus_body *body, uint64_t now_ns);
/* What open runs keep of their start's body: nothing (the default), tags
 * and metadata, and with content also text and messages cut to cap bytes;
 * at most memory bytes over all open runs (beyond it a start's body is not
 * kept, and its span says so). */
void span_table_bodies(struct span_table *t, int keep, int content, size_t cap, uint64_t memory);

/* Exports (SPAN_UNFINISHED) every open run that arrived before older_than_ns
 * (monotonic) or holds a lane position below hold[lane] (hold: one word per
 * lane of the table; NULL = no such limit).  Returns how many. */
size_t span_table_expire(struct span_table *t, uint64_t older_than_ns, const uint64_t *hold);
/* Exports every open run as SPAN_UNFINISHED (shutdown). */
size_t span_table_flush(struct span_table *t);

/* Lowest ring position (event id) an open run holds, or UINT64_MAX when none
 * is open. */
uint64_t span_table_min_pos(const struct span_table *t);
/* Lowest lane position open runs hold in each lane into out[0..lanes)
 * (UINT64_MAX: none). */
void span_table_min_lanes(const struct span_table *t, uint64_t *out);
const struct span_stats *span_table_stats(struct span_table *t);

/* Ids: the 8-byte span id is a 64-bit mix of the 16-byte run id (never all
 * zero), so a child's parentSpanId is computed from its parent_run_id alone. */
void span_id_from_run(uint8_t out[8], const uint8_t run_id[16]);
/* For a point event with no open run: a mix of its run id and event id. */
void span_id_from_event(uint8_t out[8], const uint8_t run_id[16], uint64_t event_id);
/* Deterministic trace id for events that carry none (from the root-most run
 * known: the parent run if any, else the run itself). */
void trace_id_derive(uint8_t out[16], const uint8_t id[16]);

/* Whether an event's parent_run_id / trace_id is meaningful. */
int event_has_parent(const struct cbus_event *ev);
int event_has_trace(const struct cbus_event *ev);

#endif
