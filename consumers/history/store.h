/* cbus-history's store: conversations and messages in one SQLite file (WAL).
 *
 * The daemon is the one writer of events: it applies a poll batch inside one
 * transaction whose last statement writes the bus position just past that
 * batch (the cursor row), so the file holds every message of a committed
 * batch and the position to resume from, or neither.  After a SIGKILL the
 * daemon resumes from the file's position, never from the bus's cursor
 * (which is committed after the file and may trail it): every message is
 * stored exactly once.  Readers (the CLI, the HTTP API's thread) open their
 * own connections; WAL lets them read while the daemon writes.
 *
 * Text is stored as valid UTF-8 (bytes that are not are replaced by U+FFFD,
 * so search and JSON see text); the original bytes of such a text are kept
 * beside it in `raw`, and the human views show them escaped (\xNN). */
#ifndef CBUS_HISTORY_STORE_H
#define CBUS_HISTORY_STORE_H

#include <cbus/consumer.h>
#include <cbus/layout.h>

#include <stddef.h>
#include <stdint.h>

#include "sbuf.h"

#define HIST_STORE_RDONLY (1u << 0) /* a reader: no schema changes, no writes */
#define HIST_STORE_FSYNC  (1u << 1) /* synchronous=FULL: every commit survives power loss */

#define HIST_ID_MAX 128     /* conversation and message ids, bytes */
#define HIST_TITLE_MAX 512  /* titles, bytes */

struct hist_store;

/* Opens (creating the schema unless RDONLY) the store at path.  Returns 0 or
 * -errno with one line in err. */
int hist_store_open(struct hist_store **out, const char *path, unsigned flags, char *err,
                    size_t errlen);
void hist_store_close(struct hist_store *s);
/* The last SQLite error, for the daemon's log line. */
const char *hist_store_errmsg(const struct hist_store *s);

/* The committed position: 0 (found), -ENOENT (a new store), -EIO. */
int hist_store_cursor(struct hist_store *s, uint64_t *bus_id, struct cbus_position *pos);

/* Counters kept with the cursor (same transaction). */
struct hist_counts {
    uint64_t events;      /* events applied */
    uint64_t messages;    /* message rows written */
    uint64_t duplicates;  /* messages refused because their id was already stored */
    uint64_t skipped;     /* events of no conversation (no session, no id) */
};
int hist_store_counts(struct hist_store *s, struct hist_counts *out);

/* A batch: begin, apply events, commit with the position past them.
 * Each returns 0, -ENOSPC (disk full), -EBUSY (locked), -EBADMSG (corrupt
 * file) or -EIO; after a failure, rollback (the batch is applied again). */
int hist_store_begin(struct hist_store *s);
int hist_store_commit(struct hist_store *s, uint64_t bus_id, const struct cbus_position *pos);
void hist_store_rollback(struct hist_store *s);

/* Applies one event (inside a batch): the messages it carries, the
 * conversation it touches.  Returns 0 or the codes above. */
int hist_store_event(struct hist_store *s, uint64_t bus_id, const struct cbus_event *ev,
                     const struct cbus_body *body);

/* ---- explicit conversation operations (events, the CLI and the API) ---- */

struct hist_msg {
    const char *conv;       /* conversation id (required) */
    const char *id;         /* message id (required) */
    const char *role;       /* user | assistant | tool | system */
    const char *kind;       /* message | tool_call | tool_result */
    const char *name;       /* tool name; may be NULL */
    const char *text;
    size_t text_len;
    const char *parent;     /* parent message id; NULL = the conversation's last */
    const char *model;
    int64_t input_tokens, output_tokens; /* -1 = not reported */
    uint64_t ts_ns;
    const char *run_id, *trace_id;       /* hex; may be NULL */
    const char *metadata;   /* a JSON object; may be NULL */
    uint64_t hash;          /* of role and text: how a prompt's history is recognised */
    int priced;             /* cost_pico is what the call cost (llm_end); 0 = not priced */
    int64_t cost_pico;      /* pico-dollars */
    /* the conversation's keys, taken when it has none yet */
    const char *user, *tenant, *agent;
};
/* Stores a message, creating its conversation if unknown.  A message whose
 * id is already stored is counted as a duplicate, not stored again. */
int hist_store_message(struct hist_store *s, const struct hist_msg *m);

/* Creates conv if unknown (title, keys: may be NULL); updates the keys it
 * has none of.  Returns 0 or the codes above. */
int hist_store_conv_touch(struct hist_store *s, const char *conv, uint64_t ts_ns, const char *user,
                          const char *tenant, const char *agent);
/* Returns 0, -ENOENT (no such conversation) or the codes above. */
int hist_store_rename(struct hist_store *s, const char *conv, const char *title, uint64_t ts_ns);
int hist_store_set_state(struct hist_store *s, const char *conv, const char *state, uint64_t ts_ns);

/* Retention: deletes conversations not updated since before_ns, with their
 * messages.  *convs and *msgs get the counts.  forget: every conversation
 * of user.  Both run their own transaction. */
int hist_store_expire(struct hist_store *s, uint64_t before_ns, uint64_t *convs, uint64_t *msgs);
int hist_store_forget(struct hist_store *s, const char *user, uint64_t *convs, uint64_t *msgs);

/* ---- reading: JSON or a human view into b ------------------------------ */

struct hist_list_q {
    const char *user;       /* NULL = any */
    uint64_t since_ns;      /* updated at or after; 0 = any */
    unsigned limit;         /* 0 = 100 */
};
/* Each returns 0, -ENOENT (no such conversation) or -EIO / -ENOMEM. */
int hist_render_list(struct hist_store *s, const struct hist_list_q *q, int json, struct sbuf *b);
/* The conversation (json: its object); with_messages: and its thread. */
int hist_render_conv(struct hist_store *s, const char *conv, int json, int with_messages,
                     struct sbuf *b);
/* Only the messages, as a JSON array. */
int hist_render_messages(struct hist_store *s, const char *conv, struct sbuf *b);
/* Adds up to max_rows stored messages to the search index (FTS5), in a
 * transaction of its own (not inside a batch: -EBUSY).  *indexed gets how
 * many, *left at most how many are still to do.  The daemon runs it when
 * the bus is drained and at least every second under load; every search
 * runs it first, so search sees every committed message. */
int hist_store_index(struct hist_store *s, unsigned max_rows, uint64_t *indexed, uint64_t *left);
/* What the store holds as of its last commit (the cursor row's counters):
 * {"events", "messages_written", "duplicates", "skipped", "bus_id",
 * "conversations", "not_yet_indexed"}. */
int hist_render_stats(struct hist_store *s, struct sbuf *b);
/* FTS5 over message text: messages with every word of text (words are
 * quoted: the text is never FTS5 query syntax). */
int hist_render_search(struct hist_store *s, const char *text, unsigned limit, int json,
                       struct sbuf *b);

/* For ingest.c: how many messages of conv have this hash (0 if conv is
 * unknown); adds an llm_end's usage to the conversation's totals. */
int hist_store_count_hash(struct hist_store *s, const char *conv, uint64_t hash, uint64_t *n);
/* cost_pico < 0: not priced. */
int hist_store_add_usage(struct hist_store *s, const char *conv, int64_t in, int64_t out,
                         int64_t cost_pico);
/* The price table llm_end messages are priced with (consumers/events/prices.h,
 * cbus-cost's, so the two agree); NULL = no cost.  Borrowed. */
struct cost_price_table;
void hist_store_set_prices(struct hist_store *s, const struct cost_price_table *t);
const struct cost_price_table *hist_store_prices(const struct hist_store *s);
/* The hash of conv's last message: 0, -ENOENT (none), or the codes. */
int hist_store_last_hash(struct hist_store *s, const char *conv, uint64_t *hash);
/* 1 (conv has message id), 0 (not), or the codes. */
int hist_store_has_message(struct hist_store *s, const char *conv, const char *id);
/* Sets conv's title when it has none (a create of one that exists). */
int hist_store_set_title_if_none(struct hist_store *s, const char *conv, const char *title);
void hist_store_count_event(struct hist_store *s);
/* Counts an event of no conversation (no session) in the cursor row. */
void hist_store_skip(struct hist_store *s);

/* FNV-1a of role NUL text: the key that tells a prompt's repeated history
 * from its new turn (store.c: hist_store_seen). */
uint64_t hist_msg_hash(const char *role, const char *text, size_t len);

#endif
