/* cbus-web: the bus in a browser (issue 20).
 *
 * Two threads.  The consumer loop (consumers/daemon/loop.c) reads the bus
 * as a lossy consumer, renders each event's JSON once (event_json.c) and
 * appends event and JSON to the history, an in-process ring of the newest
 * events; every second it also renders the state document and the metrics.
 * The HTTP thread (consumers/daemon/httpd.c) serves the page, the documents
 * and the streams.  A stream client is nothing but a cursor into the
 * history and a filter: the loop never waits for a client and never copies
 * an event for one, so a slow client cannot slow the consumer.  A client
 * whose cursor falls more than client_queue events behind the history's
 * head (its bounded queue), or out of the history, is cut loose and counted.
 *
 * Locks: hist.mu guards the history (the loop appends a batch, the HTTP
 * thread copies frames out); web.cmu guards the client list and each
 * client's suspended/cut flags (so a resume never races a suspend);
 * web.docmu guards the rendered documents.  Never two at once, except
 * cmu then nothing else. */
#ifndef CBUS_WEB_WEB_H
#define CBUS_WEB_WEB_H

#include <cbus/consumer.h>
#include <cbus/layout.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "sbuf.h"

/* ---- the history ---------------------------------------------------------- */

struct web_hist_ent {
    uint64_t seq;           /* 1, 2, ...: the SSE id's number */
    uint64_t boff;          /* the JSON's first byte, as a count of bytes ever written */
    uint32_t blen;
    struct cbus_event ev;   /* as polled: filters and progress read it */
};

struct web_hist {
    pthread_mutex_t mu;
    struct web_hist_ent *e;
    uint64_t cap;           /* entries, a power of two */
    char *b;                /* the JSON bytes, a ring */
    uint64_t bcap;          /* a power of two */
    uint64_t bhead;         /* bytes ever written */
    _Atomic uint64_t head;  /* the next seq; read without the lock to decide to sleep */
    uint64_t oldest;        /* the oldest seq held (== head: empty) */
};

/* cap entries and bcap bytes of JSON, each rounded up to a power of two.
 * Returns 0, -EINVAL or -ENOMEM. */
int web_hist_init(struct web_hist *h, uint64_t cap, uint64_t bcap);
void web_hist_free(struct web_hist *h);
/* Appends n events; json holds their renderings one after another, lens[i]
 * bytes each.  Evicts the oldest as entries or bytes run out. */
void web_hist_append(struct web_hist *h, const struct cbus_event *ev, int n, const char *json,
                     const uint32_t *lens);
/* Copies entry's JSON (under h->mu) into b. */
void web_hist_json(const struct web_hist *h, const struct web_hist_ent *e, struct sbuf *b);

/* ---- filters (GET /v1/events?run=&trace=&session=&user=&kind=) -------------- */

struct web_filter {
    uint64_t kinds;                 /* CBUS_KIND_BIT set; 0 = every kind */
    int has_run, has_trace, has_session, has_user;
    uint8_t run[16], trace[16];
    uint64_t session_hash, user_hash;
    char session[CBUS_SESSION_LEN + 1], user[CBUS_USER_LEN + 1]; /* shown prefix */
    int start_oldest;               /* start=oldest: replay the history first */
};

/* Parses one query argument into f.  Returns 0, or -EINVAL with a message
 * naming the parameter in err ("unknown filter 'foo'"). */
int web_filter_arg(struct web_filter *f, const char *key, const char *value, char *err,
                   size_t errlen);
int web_filter_match(const struct web_filter *f, const struct cbus_event *ev);

/* ---- progress (GET /v1/runs/{trace}/progress) --------------------------------- */

struct cost_price_table;
struct web_progress;

/* A tracker of one trace's runs: each run a step, numbered by its first
 * event; its action (what it does: "llm gpt-4o", "tool search"), status
 * (in_progress, complete, error), and the trace's tokens and cost so far
 * (cost from prices; NULL: cost_usd is null). */
struct web_progress *web_progress_new(const uint8_t trace[16], const struct cost_price_table *prices);
void web_progress_free(struct web_progress *p);
/* Feeds one event of the trace; appends a progress object (JSON, no newline)
 * to out when the event changed a step, and returns 1 (0: nothing to say).
 * *done is set once the trace's root run (one without a parent) ended. */
int web_progress_feed(struct web_progress *p, const struct cbus_event *ev, struct sbuf *out,
                      int *done);

/* ---- the daemon ------------------------------------------------------------ */

#define WEB_ERRORS_KEPT 32

struct web_client;

struct web_opts {
    const char *bus;
    const char *name;          /* consumer name */
    const char *listen_host;
    unsigned listen_port;
    const char *token;         /* NULL: none (loopback only) */
    uint64_t history;          /* events */
    uint64_t history_bytes;
    uint64_t client_queue;     /* events a client may fall behind before it is cut */
    unsigned max_clients;
    const char *cost_snapshot; /* cbus-cost's snapshot.json */
    const char *ratelimit_status;
    const char *prices;        /* price table for progress cost (NULL: none) */
    uint64_t state_interval_ns;
};

struct web {
    struct web_opts o;
    struct web_hist hist;
    const struct cost_price_table *prices;
    struct cbus_httpd *httpd;
    char epoch[17];            /* hex of the start time: the SSE id's prefix */
    uint64_t start_realtime_ns;

    pthread_mutex_t cmu;       /* clients */
    struct web_client *clients;
    unsigned nclients;
    _Atomic int stopping;
    uint64_t clients_total, clients_cut, clients_refused;
    _Atomic uint64_t frames_sent, bytes_sent;
    uint64_t last_wake_ns;
    int wake_pending;

    /* the loop thread's */
    cbus_consumer *cons;
    struct sbuf render;        /* a batch's JSON */
    uint32_t *lens;
    uint64_t events;           /* appended to the history */
    struct sbuf errors[WEB_ERRORS_KEPT];
    unsigned nerrors, errors_next;
    uint64_t prev_tail, prev_ns;
    uint64_t prev_consumed[CBUS_MAX_CONSUMERS];
    uint64_t prev_gen[CBUS_MAX_CONSUMERS];

    pthread_mutex_t docmu;     /* the documents the HTTP thread serves */
    char *state_doc;
    size_t state_len;
    char *metrics_doc;
    size_t metrics_len;
};

/* sse.c: the HTTP side. */
struct cbus_http_request;
struct cbus_http_response;
void web_handle(void *ctx, const struct cbus_http_request *req, struct cbus_http_response *res);
/* Wakes suspended clients that have something to do, cuts those past their
 * queue bound.  force: every suspended client (pings, stopping). */
void web_wake(struct web *w, uint64_t now_ns, int force);
unsigned web_clients(struct web *w);

/* state.c: the documents. */
void web_render_docs(struct web *w, uint64_t now_ns);
void web_note_error(struct web *w, const struct cbus_event *ev);

/* static.c (generated): the dashboard's files. */
struct web_static_file {
    const char *path;          /* "/", "/app.js" */
    const char *type;
    const unsigned char *data;
    unsigned long len;
};
extern const struct web_static_file web_static_files[];

#endif
