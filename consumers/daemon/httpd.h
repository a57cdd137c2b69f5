/* The daemons' HTTP server: libmicrohttpd (Debian's libmicrohttpd-dev)
 * behind a small interface, so no daemon parses HTTP itself.
 *
 * One internal thread multiplexes every connection (epoll).  Limits that a
 * careless or hostile client meets: at most HTTPD_MAX_CONN connections, each
 * closed after HTTPD_IDLE_S seconds without progress (an idle or slowloris
 * client holds one slot for that long, never the thread), a request body cap
 * (413 past it), and a per-connection memory cap for the request head.  The
 * handler runs on that thread: it must answer from what it has (a document
 * the daemon rendered, a quick read), never wait on the daemon's loop. */
#ifndef CBUS_COMMON_HTTPD_H
#define CBUS_COMMON_HTTPD_H

#include <stddef.h>

#define HTTPD_MAX_CONN 256
#define HTTPD_IDLE_S   5

struct cbus_http_request {
    const char *method;   /* "GET", "HEAD", "PATCH", ... */
    const char *path;     /* "/v1/conversations/abc" (no query string) */
    const char *body;     /* NUL-terminated copy, body_len bytes; "" when none */
    size_t body_len;
    void *conn;           /* for cbus_http_query() */
};

struct cbus_http_response {
    int status;           /* 200 unless the handler says otherwise */
    const char *content_type;
    char *body;           /* malloc'd: the server frees it; NULL = empty */
    size_t len;
    const char *allow;    /* with 405: the Allow header */
    /* More headers: up to 4 name, value pairs; a pair with a NULL name or
     * value is skipped.  Copied when the response is queued, so request
     * strings may be used. */
    const char *headers[8];
    /* A streamed body instead of body (Server-Sent Events): the server calls
     * stream(stream_cls, buf, max) on its thread whenever the socket can
     * take more.  It returns the bytes it wrote (> 0), -1 to end the body,
     * or 0 after cbus_http_suspend(conn): nothing to send now, and the
     * connection sleeps until another thread calls cbus_http_resume(conn).
     * stream_free(stream_cls) is called once when the connection is gone
     * (also when queueing failed).  A suspended connection neither times
     * out nor sees its client leave: resume it every few seconds. */
    long (*stream)(void *cls, char *buf, size_t max);
    void (*stream_free)(void *cls);
    void *stream_cls;
};

/* Fills res (status, type, body) for req.  Called on the server's thread. */
typedef void (*cbus_http_handler)(void *ctx, const struct cbus_http_request *req,
                                  struct cbus_http_response *res);

struct cbus_httpd_opts {
    const char *host;          /* an IPv4 or IPv6 literal ("127.0.0.1", "::1") */
    unsigned port;             /* 0 = any free port (see cbus_httpd_port) */
    cbus_http_handler handler;
    void *ctx;
    size_t max_body;           /* request bodies above this get 413; 0 = 64 KiB */
    const char *bearer_token;  /* non-NULL: every request needs "Authorization: Bearer <it>" (401) */
};

struct cbus_httpd;

/* Binds and starts serving.  Returns 0, -EINVAL (bad host, port or handler)
 * or -errno (EADDRINUSE, EACCES, ...). */
int cbus_httpd_start(struct cbus_httpd **out, const struct cbus_httpd_opts *o);
unsigned cbus_httpd_port(const struct cbus_httpd *h);
/* Stops the thread and closes every connection.  NULL is a no-op. */
void cbus_httpd_stop(struct cbus_httpd *h);

/* The value of query argument key ("?user=ann"), or NULL. */
const char *cbus_http_query(const struct cbus_http_request *req, const char *key);

/* The value of request header name (case-insensitive), or NULL. */
const char *cbus_http_header(const struct cbus_http_request *req, const char *name);
/* Calls fn for every query argument in order (value NULL for "?a"), until
 * fn returns nonzero; returns that value or 0. */
int cbus_http_query_each(const struct cbus_http_request *req,
                         int (*fn)(void *ctx, const char *key, const char *value), void *ctx);
/* Streamed bodies: suspend only inside res->stream (then return 0); resume
 * from any thread, only a connection that is suspended (the caller keeps
 * that state under its own lock: resuming one that is not is undefined). */
void cbus_http_suspend(void *conn);
void cbus_http_resume(void *conn);

/* res gets a copy of text with this status and type (no copy on failure:
 * then 500 with an empty body). */
void cbus_http_reply(struct cbus_http_response *res, int status, const char *content_type,
                     const char *text, size_t len);

#endif
