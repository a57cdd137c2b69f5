/* cbus-web's HTTP side: routes, the token and origin rules, and the
 * Server-Sent Events streams (web.h).  Everything here runs on the HTTP
 * server's one thread, except web_wake(), which the consumer loop calls. */
#include <cbus/cbus.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "httpd.h"
#include "log.h"
#include "web.h"

#define SEC UINT64_C(1000000000)
#define PING_NS (2 * SEC)       /* a comment line on a quiet stream: under HTTPD_IDLE_S */
#define SCAN_MAX 4096           /* entries looked at per call: other clients get their turn */

struct web_client {
    struct web *w;
    void *conn;
    struct web_client *prev, *next;
    /* under w->cmu */
    int suspended;
    int cut;                  /* past its queue bound or lapped: the stream ends */
    /* the HTTP thread's */
    int ended;                /* the closing frame is queued */
    _Atomic uint64_t cursor;  /* the next seq to look at (web_wake reads it) */
    struct web_filter f;
    struct web_progress *pg;  /* a progress stream */
    _Atomic uint64_t last_send_ns;
    uint64_t missed;          /* start: events the resume point had lost */
    int announce;             /* 1: say "lost" first, 2: say "reset" first */
    struct sbuf out;          /* frames not yet handed to the server */
    size_t out_off;
};

/* ---- wake-ups (the consumer loop's side) ------------------------------------ */

void web_wake(struct web *w, uint64_t now, int force)
{
    uint64_t head = atomic_load_explicit(&w->hist.head, memory_order_acquire);
    int stopping = atomic_load_explicit(&w->stopping, memory_order_relaxed);
    pthread_mutex_lock(&w->cmu);
    for (struct web_client *c = w->clients; c; c = c->next) {
        /* c->cursor is the HTTP thread's: a stale read only delays a cut
         * by one wake-up (it only grows). */
        uint64_t cur = atomic_load_explicit(&c->cursor, memory_order_relaxed);
        if (!c->cut && head - cur > w->o.client_queue) {
            c->cut = 1;
            w->clients_cut++;
        }
        if (c->suspended && (force || stopping || c->cut || cur < head ||
                             now - atomic_load_explicit(&c->last_send_ns, memory_order_relaxed) >=
                                 PING_NS)) {
            c->suspended = 0;
            cbus_http_resume(c->conn);
        }
    }
    w->last_wake_ns = now;
    w->wake_pending = 0;
    pthread_mutex_unlock(&w->cmu);
}

unsigned web_clients(struct web *w)
{
    pthread_mutex_lock(&w->cmu);
    unsigned n = w->nclients;
    pthread_mutex_unlock(&w->cmu);
    return n;
}

/* ---- streams ----------------------------------------------------------------- */

/* "id: EPOCH-SEQ\n" without printf: it is written once per frame, and
 * vfprintf was the daemon's top symbol under 100 streams. */
static void frame_id(struct web *w, struct sbuf *b, uint64_t seq)
{
    char digits[24];
    size_t n = 0;
    do {
        digits[sizeof digits - 1 - n++] = (char)('0' + seq % 10);
        seq /= 10;
    } while (seq);
    sbuf_add(b, "id: ", 4);
    sbuf_add(b, w->epoch, strlen(w->epoch));
    sbuf_add(b, "-", 1);
    sbuf_add(b, digits + sizeof digits - n, n);
    sbuf_add(b, "\n", 1);
}

/* Frames for what the history has past c->cursor, into c->out. */
static void fill(struct web_client *c)
{
    struct web *w = c->w;
    struct web_hist *h = &w->hist;
    pthread_mutex_lock(&h->mu);
    uint64_t head = atomic_load_explicit(&h->head, memory_order_relaxed);
    uint64_t cur = atomic_load_explicit(&c->cursor, memory_order_relaxed);
    if (cur < h->oldest) { /* lapped by the history */
        pthread_mutex_unlock(&h->mu);
        pthread_mutex_lock(&w->cmu);
        if (!c->cut) {
            c->cut = 1;
            w->clients_cut++;
        }
        pthread_mutex_unlock(&w->cmu);
        return;
    }
    unsigned scanned = 0;
    uint64_t frames = 0;
    while (cur < head && scanned < SCAN_MAX && c->out.len < 64 * 1024 && !c->out.failed) {
        const struct web_hist_ent *e = &h->e[cur & (h->cap - 1)];
        cur++;
        scanned++;
        if (c->pg) {
            size_t mark = c->out.len;
            frame_id(w, &c->out, e->seq);
            sbuf_puts(&c->out, "event: progress\ndata: ");
            int done = 0;
            if (web_progress_feed(c->pg, &e->ev, &c->out, &done)) {
                sbuf_puts(&c->out, "\n\n");
                frames++;
            } else {
                c->out.len = mark;
            }
            if (done) {
                sbuf_puts(&c->out, "event: done\ndata: {}\n\n");
                c->ended = 1;
                break;
            }
            continue;
        }
        if (!web_filter_match(&c->f, &e->ev))
            continue;
        frame_id(w, &c->out, e->seq);
        sbuf_puts(&c->out, "data: ");
        web_hist_json(h, e, &c->out);
        sbuf_puts(&c->out, "\n\n");
        frames++;
    }
    atomic_store_explicit(&c->cursor, cur, memory_order_relaxed);
    pthread_mutex_unlock(&h->mu);
    if (frames)
        atomic_fetch_add_explicit(&w->frames_sent, frames, memory_order_relaxed);
}

static long stream_read(void *cls, char *buf, size_t max)
{
    struct web_client *c = cls;
    struct web *w = c->w;
    for (;;) {
        if (c->out_off < c->out.len) {
            size_t n = c->out.len - c->out_off;
            if (n > max)
                n = max;
            memcpy(buf, c->out.data + c->out_off, n);
            c->out_off += n;
            if (c->out_off == c->out.len) {
                sbuf_reset(&c->out);
                c->out_off = 0;
            }
            atomic_store_explicit(&c->last_send_ns, cbus_now_ns(), memory_order_relaxed);
            atomic_fetch_add_explicit(&w->bytes_sent, n, memory_order_relaxed);
            return (long)n;
        }
        if (c->ended)
            return -1;
        if (c->out.failed)
            return -1; /* out of memory: drop this client, not the daemon */
        if (c->announce == 1) {
            sbuf_printf(&c->out, "event: lost\ndata: {\"missed\":%" PRIu64 "}\n\n", c->missed);
            c->announce = 0;
            continue;
        }
        if (c->announce == 2) {
            sbuf_puts(&c->out, "event: reset\ndata: {\"reason\":\"unknown Last-Event-ID\"}\n\n");
            c->announce = 0;
            continue;
        }
        pthread_mutex_lock(&w->cmu);
        int cut = c->cut, stopping = atomic_load_explicit(&w->stopping, memory_order_relaxed);
        pthread_mutex_unlock(&w->cmu);
        if (cut || stopping) {
            sbuf_printf(&c->out, "event: %s\ndata: {\"queue\":%" PRIu64 "}\n\n",
                        cut ? "cut" : "bye", w->o.client_queue);
            c->ended = 1;
            continue;
        }
        fill(c);
        if (c->out.len)
            continue;
        uint64_t now = cbus_now_ns();
        if (now - atomic_load_explicit(&c->last_send_ns, memory_order_relaxed) >= PING_NS) {
            sbuf_puts(&c->out, ": ping\n\n");
            continue;
        }
        /* Nothing to send: sleep, unless the loop appended meanwhile.  The
         * check and the suspend are under cmu, and web_wake() resumes under
         * cmu after every append: no wake-up is lost. */
        pthread_mutex_lock(&w->cmu);
        uint64_t head = atomic_load_explicit(&w->hist.head, memory_order_acquire);
        if (atomic_load_explicit(&c->cursor, memory_order_relaxed) >= head && !c->cut && !atomic_load_explicit(&w->stopping, memory_order_relaxed)) {
            c->suspended = 1;
            cbus_http_suspend(c->conn);
            pthread_mutex_unlock(&w->cmu);
            return 0;
        }
        pthread_mutex_unlock(&w->cmu);
    }
}

static void stream_free(void *cls)
{
    struct web_client *c = cls;
    struct web *w = c->w;
    pthread_mutex_lock(&w->cmu);
    if (c->prev)
        c->prev->next = c->next;
    else
        w->clients = c->next;
    if (c->next)
        c->next->prev = c->prev;
    w->nclients--;
    pthread_mutex_unlock(&w->cmu);
    web_progress_free(c->pg);
    sbuf_free(&c->out);
    free(c);
}

/* ---- answers ------------------------------------------------------------------ */

static void json_error(struct cbus_http_response *res, int status, const char *msg, const char *param)
{
    struct sbuf b;
    sbuf_init(&b);
    sbuf_puts(&b, "{\"error\":");
    sbuf_json_str(&b, msg, strlen(msg));
    if (param) {
        sbuf_puts(&b, ",\"param\":");
        sbuf_json_str(&b, param, strlen(param));
    }
    sbuf_puts(&b, "}\n");
    if (b.failed)
        res->status = 500;
    else
        cbus_http_reply(res, status, "application/json", b.data, b.len);
    sbuf_free(&b);
}

struct args {
    struct web_filter *f;
    char err[256];
    char param[64];
};

static int one_arg(void *ctx, const char *key, const char *value)
{
    struct args *a = ctx;
    if (web_filter_arg(a->f, key, value, a->err, sizeof a->err)) {
        snprintf(a->param, sizeof a->param, "%s", key ? key : "");
        return 1;
    }
    return 0;
}

/* "<epoch>-<seq>": the seq to resume after, or 0 (unknown: another run of
 * the daemon, or not ours). */
static uint64_t parse_last_id(const struct web *w, const char *id)
{
    size_t n = strlen(w->epoch);
    if (!id || strncmp(id, w->epoch, n) || id[n] != '-')
        return 0;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(id + n + 1, &end, 10);
    if (errno || *end || end == id + n + 1)
        return 0;
    return (uint64_t)v;
}

static void start_stream(struct web *w, const struct cbus_http_request *req,
                         struct cbus_http_response *res, const struct web_filter *f,
                         const uint8_t *trace)
{
    pthread_mutex_lock(&w->cmu);
    int full = w->nclients >= w->o.max_clients;
    if (full)
        w->clients_refused++;
    pthread_mutex_unlock(&w->cmu);
    if (full) {
        json_error(res, 503, "too many streams", NULL);
        return;
    }
    struct web_client *c = calloc(1, sizeof *c);
    if (!c) {
        res->status = 500;
        return;
    }
    c->w = w;
    c->conn = req->conn;
    c->f = *f;
    sbuf_init(&c->out);
    if (trace) {
        c->pg = web_progress_new(trace, w->prices);
        if (!c->pg) {
            free(c);
            res->status = 500;
            return;
        }
    }
    pthread_mutex_lock(&w->hist.mu);
    uint64_t head = atomic_load_explicit(&w->hist.head, memory_order_relaxed);
    uint64_t oldest = w->hist.oldest;
    pthread_mutex_unlock(&w->hist.mu);
    const char *last = cbus_http_header(req, "Last-Event-ID");
    if (trace || f->start_oldest) {
        c->cursor = oldest; /* a trace's progress is rebuilt from what the history has */
    } else if (last && *last) {
        uint64_t seq = parse_last_id(w, last);
        if (!seq || seq >= head) {
            c->cursor = head;
            c->announce = 2;
        } else if (seq + 1 < oldest) {
            c->cursor = oldest;
            c->missed = oldest - (seq + 1);
            c->announce = 1;
        } else {
            c->cursor = seq + 1;
        }
    } else {
        c->cursor = head;
    }
    /* A first comment at once: the client sees its headers and knows it
     * is connected before the first event. */
    sbuf_puts(&c->out, ": cbus-web\nretry: 2000\n\n");
    atomic_store_explicit(&c->last_send_ns, cbus_now_ns(), memory_order_relaxed);
    pthread_mutex_lock(&w->cmu);
    c->next = w->clients;
    if (w->clients)
        w->clients->prev = c;
    w->clients = c;
    w->nclients++;
    w->clients_total++;
    pthread_mutex_unlock(&w->cmu);
    res->status = 200;
    res->content_type = "text/event-stream";
    res->stream = stream_read;
    res->stream_free = stream_free;
    res->stream_cls = c;
}

static void serve_doc(struct web *w, struct cbus_http_response *res, int metrics)
{
    pthread_mutex_lock(&w->docmu);
    const char *d = metrics ? w->metrics_doc : w->state_doc;
    size_t n = metrics ? w->metrics_len : w->state_len;
    if (d)
        cbus_http_reply(res, 200,
                        metrics ? "text/plain; version=0.0.4; charset=utf-8" : "application/json",
                        d, n);
    else
        json_error(res, 503, "not ready", NULL);
    pthread_mutex_unlock(&w->docmu);
}

/* Constant time in the expected token's length. */
static int token_ok(const char *want, const char *auth)
{
    if (!auth || strncmp(auth, "Bearer ", 7))
        return 0;
    const char *got = auth + 7;
    size_t n = strlen(want), m = strlen(got);
    unsigned char diff = (unsigned char)(n != m);
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)(want[i] ^ (i < m ? got[i] : 0));
    return diff == 0;
}

/* Host names a loopback listener answers to: anything else is a page that
 * made a browser resolve its own name to 127.0.0.1 (DNS rebinding). */
static int loopback_host(const char *host)
{
    if (!host)
        return 1; /* HTTP/1.0 without Host: not a browser */
    size_t n = strlen(host);
    const char *colon = host[0] == '[' ? strchr(host, ']') : strrchr(host, ':');
    if (host[0] == '[')
        n = colon ? (size_t)(colon - host) + 1 : n;
    else if (colon)
        n = (size_t)(colon - host);
    if ((n == 9 && !strncasecmp(host, "localhost", 9)) || (n == 5 && !strncmp(host, "[::1]", 5)))
        return 1;
    if (n >= 9 && !strncmp(host, "127.", 4)) {
        for (size_t i = 4; i < n; i++)
            if (!(host[i] == '.' || (host[i] >= '0' && host[i] <= '9')))
                return 0;
        return 1;
    }
    return 0;
}

/* Origin "http://HOST" against our Host header: the page we served. */
static int same_origin(const char *origin, const char *host)
{
    if (!host)
        return 0;
    return !strncmp(origin, "http://", 7) && !strcasecmp(origin + 7, host);
}

static int is_loopback_listener(const struct web *w)
{
    return !strncmp(w->o.listen_host, "127.", 4) || !strcmp(w->o.listen_host, "::1");
}

/* Who may ask: the Host check against DNS rebinding, CORS preflights and
 * the cross-origin token rule.  Returns 1 when the request was answered
 * here (refused, or a preflight), 0 to go on. */
static int access_gate(struct web *w, const struct cbus_http_request *req, struct cbus_http_response *res,
                       int authed)
{
    const char *origin = cbus_http_header(req, "Origin");
    const char *host = cbus_http_header(req, "Host");
    if (origin && !strcmp(origin, "null"))
        origin = "null"; /* a sandboxed or file: page: another origin like any */
    int cross = origin && !same_origin(origin, host);

    if (!w->o.token && is_loopback_listener(w) && !loopback_host(host)) {
        json_error(res, 403, "Host is not a loopback name (DNS rebinding?)", NULL);
        return 1;
    }
    if (!strcmp(req->method, "OPTIONS")) {
        /* A preflight carries no token: answer it only where a token can
         * then be checked; without one, other origins get nothing. */
        if (!cross || !w->o.token) {
            json_error(res, 403, "cross-origin requests need the bearer token", NULL);
            return 1;
        }
        res->status = 204;
        res->headers[0] = "Access-Control-Allow-Origin";
        res->headers[1] = origin;
        res->headers[2] = "Access-Control-Allow-Headers";
        res->headers[3] = "Authorization, Last-Event-ID";
        res->headers[4] = "Access-Control-Allow-Methods";
        res->headers[5] = "GET";
        res->headers[6] = "Vary";
        res->headers[7] = "Origin";
        return 1;
    }
    if (cross && !authed) {
        json_error(res, 403, "cross-origin request without the bearer token", NULL);
        return 1;
    }
    if (cross) {
        res->headers[0] = "Access-Control-Allow-Origin";
        res->headers[1] = origin;
        res->headers[2] = "Vary";
        res->headers[3] = "Origin";
    }
    return 0;
}

/* The page and its scripts hold no data: served without the token, so a
 * browser can load them and then send the token itself.  1: served. */
static int serve_static(const struct cbus_http_request *req, struct cbus_http_response *res)
{
    for (const struct web_static_file *s = web_static_files; s->path; s++) {
        if (!strcmp(req->path, s->path)) {
            cbus_http_reply(res, 200, s->type, (const char *)s->data, s->len);
            res->headers[4] = "Content-Security-Policy";
            res->headers[5] = "default-src 'self'; img-src 'self' data:; style-src 'self'";
            res->headers[6] = "X-Content-Type-Options";
            res->headers[7] = "nosniff";
            return 1;
        }
    }
    return 0;
}

/* GET /v1/runs/TRACE/progress: one trace's progress, as a stream. */
static void serve_progress(struct web *w, const struct cbus_http_request *req, struct cbus_http_response *res,
                           const char *id)
{
    const char *slash = strchr(id, '/');
    char text[48];
    uint8_t trace[16];
    if (!slash || strcmp(slash, "/progress") || (size_t)(slash - id) >= sizeof text) {
        json_error(res, 404, "no such resource (GET /v1/runs/TRACE/progress)", NULL);
        return;
    }
    memcpy(text, id, (size_t)(slash - id));
    text[slash - id] = '\0';
    if (cbus_id_parse(trace, text)) {
        json_error(res, 400, "the trace id is not 32 hex characters or a UUID", "trace");
        return;
    }
    struct web_filter f;
    memset(&f, 0, sizeof f);
    struct args a = {.f = &f};
    if (cbus_http_query_each(req, one_arg, &a) || f.kinds || f.has_run || f.has_trace || f.has_session ||
        f.has_user) {
        json_error(res, 400, a.err[0] ? a.err : "progress takes no filters", a.param[0] ? a.param : NULL);
        return;
    }
    start_stream(w, req, res, &f, trace);
}

void web_handle(void *ctx, const struct cbus_http_request *req, struct cbus_http_response *res)
{
    struct web *w = ctx;
    int authed = w->o.token && token_ok(w->o.token, cbus_http_header(req, "Authorization"));
    if (access_gate(w, req, res, authed))
        return;
    if (strcmp(req->method, "GET") && strcmp(req->method, "HEAD")) {
        json_error(res, 405, "only GET", NULL);
        res->allow = "GET, HEAD, OPTIONS";
        return;
    }
    if (serve_static(req, res))
        return;
    if (w->o.token && !authed) {
        json_error(res, 401, "a bearer token is required", NULL); /* httpd adds WWW-Authenticate */
        return;
    }
    static const char runs[] = "/v1/runs/";
    if (!strcmp(req->path, "/v1/health")) {
        cbus_http_reply(res, 200, "text/plain; charset=utf-8", "ok\n", 3);
    } else if (!strcmp(req->path, "/v1/state")) {
        serve_doc(w, res, 0);
    } else if (!strcmp(req->path, "/metrics")) {
        serve_doc(w, res, 1);
    } else if (!strcmp(req->path, "/v1/events")) {
        struct web_filter f;
        memset(&f, 0, sizeof f);
        struct args a = {.f = &f};
        if (cbus_http_query_each(req, one_arg, &a))
            json_error(res, 400, a.err, a.param);
        else
            start_stream(w, req, res, &f, NULL);
    } else if (!strncmp(req->path, runs, sizeof runs - 1)) {
        serve_progress(w, req, res, req->path + sizeof runs - 1);
    } else {
        json_error(res, 404, "no such resource", NULL);
    }
}
