#include "httpd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

struct cbus_httpd {
    struct MHD_Daemon *d;
    cbus_http_handler handler;
    void *ctx;
    size_t max_body;
    char *token;          /* "Bearer <token>", or NULL */
    unsigned port;
};

/* One request's upload, across the access handler's calls. */
struct upload {
    char *buf;
    size_t len, cap;
    int too_big;
};

void cbus_http_reply(struct cbus_http_response *res, int status, const char *content_type,
                     const char *text, size_t len)
{
    free(res->body);
    res->body = malloc(len + 1);
    res->len = 0;
    res->content_type = content_type;
    if (!res->body) {
        res->status = 500;
        return;
    }
    memcpy(res->body, text, len);
    res->body[len] = '\0';
    res->len = len;
    res->status = status;
}

const char *cbus_http_query(const struct cbus_http_request *req, const char *key)
{
    if (!req || !req->conn || !key)
        return NULL;
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, key);
}

const char *cbus_http_header(const struct cbus_http_request *req, const char *name)
{
    if (!req || !req->conn || !name)
        return NULL;
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

struct each_ctx {
    int (*fn)(void *ctx, const char *key, const char *value);
    void *ctx;
    int rc;
};

static enum MHD_Result each_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                const char *value)
{
    (void)kind;
    struct each_ctx *e = cls;
    e->rc = e->fn(e->ctx, key, value);
    return e->rc ? MHD_NO : MHD_YES;
}

int cbus_http_query_each(const struct cbus_http_request *req,
                         int (*fn)(void *ctx, const char *key, const char *value), void *ctx)
{
    if (!req || !req->conn || !fn)
        return 0;
    struct each_ctx e = {fn, ctx, 0};
    MHD_get_connection_values(req->conn, MHD_GET_ARGUMENT_KIND, each_arg, &e);
    return e.rc;
}

void cbus_http_suspend(void *conn)
{
    if (conn)
        MHD_suspend_connection(conn);
}

void cbus_http_resume(void *conn)
{
    if (conn)
        MHD_resume_connection(conn);
}

/* A streamed body: MHD's content reader over the handler's callback. */
struct stream {
    long (*fn)(void *cls, char *buf, size_t max);
    void (*free_fn)(void *cls);
    void *cls;
};

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    struct stream *s = cls;
    long n = s->fn(s->cls, buf, max);
    if (n < 0)
        return MHD_CONTENT_READER_END_OF_STREAM;
    return (ssize_t)(n > (long)max ? (long)max : n);
}

static void stream_free(void *cls)
{
    struct stream *s = cls;
    if (s->free_fn)
        s->free_fn(s->cls);
    free(s);
}

static enum MHD_Result queue(struct MHD_Connection *conn, struct cbus_http_response *res)
{
    struct MHD_Response *r;
    if (res->stream) {
        free(res->body);
        res->body = NULL;
        struct stream *s = malloc(sizeof *s);
        if (!s) {
            if (res->stream_free)
                res->stream_free(res->stream_cls);
            return MHD_NO;
        }
        *s = (struct stream){res->stream, res->stream_free, res->stream_cls};
        r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, stream_read, s,
                                              stream_free);
        if (!r) {
            stream_free(s);
            return MHD_NO;
        }
    } else {
        r = MHD_create_response_from_buffer(res->len, res->body ? res->body : (void *)"",
                                            res->body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
        if (!r) {
            free(res->body);
            return MHD_NO;
        }
    }
    res->body = NULL; /* the response owns it now */
    for (unsigned i = 0; i + 1 < sizeof res->headers / sizeof res->headers[0]; i += 2)
        if (res->headers[i] && res->headers[i + 1])
            MHD_add_response_header(r, res->headers[i], res->headers[i + 1]);
    if (res->content_type)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, res->content_type);
    if (res->allow)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, res->allow);
    if (res->status == 401)
        MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    MHD_add_response_header(r, "Cache-Control", "no-store");
    enum MHD_Result q = MHD_queue_response(conn, (unsigned)res->status, r);
    MHD_destroy_response(r);
    return q;
}

static enum MHD_Result plain(struct MHD_Connection *conn, int status, const char *text)
{
    struct cbus_http_response res = {0};
    cbus_http_reply(&res, status, "text/plain; charset=utf-8", text, strlen(text));
    return queue(conn, &res);
}

/* Constant time in the length of the expected value: the token is a secret. */
static int token_ok(const char *want, const char *got)
{
    if (!got)
        return 0;
    size_t n = strlen(want), m = strlen(got);
    unsigned char diff = (unsigned char)(n != m);
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)(want[i] ^ (i < m ? got[i] : 0));
    return diff == 0;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    (void)version;
    struct cbus_httpd *h = cls;
    struct upload *up = *con_cls;
    if (!up) { /* the head is in: decide what can be decided without the body */
        up = calloc(1, sizeof *up);
        if (!up)
            return MHD_NO;
        *con_cls = up;
        if (h->token &&
            !token_ok(h->token, MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION)))
            return plain(conn, 401, "a bearer token is required\n");
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > h->max_body)
            return plain(conn, 413, "request body too large\n");
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (up->too_big || up->len + n > h->max_body) {
            up->too_big = 1; /* chunked past the cap: read and drop, answer 413 */
            return MHD_YES;
        }
        if (up->len + n + 1 > up->cap) {
            size_t cap = up->cap ? up->cap : 1024;
            while (cap < up->len + n + 1)
                cap *= 2;
            char *nb = realloc(up->buf, cap);
            if (!nb)
                return MHD_NO;
            up->buf = nb;
            up->cap = cap;
        }
        memcpy(up->buf + up->len, upload_data, n);
        up->len += n;
        up->buf[up->len] = '\0';
        return MHD_YES;
    }
    if (up->too_big)
        return plain(conn, 413, "request body too large\n");
    struct cbus_http_request req = {.method = method, .path = url,
                                    .body = up->buf ? up->buf : "", .body_len = up->len, .conn = conn};
    struct cbus_http_response res = {.status = 200};
    h->handler(h->ctx, &req, &res);
    if (res.status < 100 || res.status > 599)
        res.status = 500;
    return queue(conn, &res);
}

static void on_done(void *cls, struct MHD_Connection *conn, void **con_cls,
                    enum MHD_RequestTerminationCode toe)
{
    (void)cls, (void)conn, (void)toe;
    struct upload *up = *con_cls;
    if (up) {
        free(up->buf);
        free(up);
        *con_cls = NULL;
    }
}

int cbus_httpd_start(struct cbus_httpd **out, const struct cbus_httpd_opts *o)
{
    if (!out || !o || !o->host || !o->handler || o->port > 65535)
        return -EINVAL;
    *out = NULL;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    /* Suspend/resume (streamed bodies) brings an inter-thread channel that
     * wakes the thread on a resume. */
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME;
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, o->host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)o->port);
    } else if (inet_pton(AF_INET6, o->host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)o->port);
        flags |= MHD_USE_IPv6;
    } else {
        return -EINVAL;
    }
    struct cbus_httpd *h = calloc(1, sizeof *h);
    if (!h)
        return -ENOMEM;
    h->handler = o->handler;
    h->ctx = o->ctx;
    h->max_body = o->max_body ? o->max_body : 64 * 1024;
    if (o->bearer_token) {
        size_t n = strlen(o->bearer_token) + sizeof "Bearer ";
        h->token = malloc(n);
        if (!h->token) {
            free(h);
            return -ENOMEM;
        }
        memcpy(h->token, "Bearer ", 7);
        memcpy(h->token + 7, o->bearer_token, n - 7);
    }
    errno = 0;
    h->d = MHD_start_daemon(flags, (uint16_t)o->port, NULL, NULL, on_request, h,
                            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)HTTPD_MAX_CONN,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)HTTPD_IDLE_S,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(32 * 1024),
                            MHD_OPTION_NOTIFY_COMPLETED, on_done, h,
                            MHD_OPTION_END);
    if (!h->d) {
        int e = errno ? errno : EADDRINUSE;
        free(h->token);
        free(h);
        return -e;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    h->port = di ? di->port : o->port;
    *out = h;
    return 0;
}

unsigned cbus_httpd_port(const struct cbus_httpd *h)
{
    return h ? h->port : 0;
}

void cbus_httpd_stop(struct cbus_httpd *h)
{
    if (!h)
        return;
    MHD_stop_daemon(h->d);
    free(h->token);
    free(h);
}
