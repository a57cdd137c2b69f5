/* A minimal HTTP/1.1 request parser for the loopback collector: request line,
 * the few headers it acts on, Content-Length or chunked bodies.  Stateless:
 * it re-parses the buffered bytes until a whole request is there, which is
 * cheap next to what the collector does with a body. */
#ifndef CBUS_COLLECTOR_HTTP_H
#define CBUS_COLLECTOR_HTTP_H

#include <stddef.h>

#include "sbuf.h"

#define HTTP_MAX_HEADER (64u * 1024u)
#define HTTP_MAX_BODY   (256u * 1024u * 1024u)

struct http_request {
    char method[16];
    char target[256];
    char content_type[96];
    char authorization[256];      /* "Authorization" (checked by --langfuse) */
    char langfuse_version[16];    /* "x-langfuse-ingestion-version" */
    int keep_alive;        /* 1.1 default, or "Connection: keep-alive" on 1.0 */
    int expect_continue;   /* "Expect: 100-continue" */
    int gzip;              /* "Content-Encoding: gzip" */
    int chunked;           /* "Transfer-Encoding: chunked" */
    size_t content_length;
    size_t header_len;     /* bytes of the request line and headers */
};

/* Parses buf[0..len).  Returns 1 with *req filled, *consumed set and the
 * body in (*body, *body_len) when a whole request is present: a pointer into
 * buf for Content-Length framing (no copy: bodies are megabytes), or into
 * chunk_buf, where chunked framing is reassembled.  Returns 0 when more bytes
 * are needed (req->header_len is nonzero once the headers are complete, so
 * the caller can answer Expect: 100-continue), -1 on a malformed request. */
int http_parse(const char *buf, size_t len, struct http_request *req, struct sbuf *chunk_buf,
               const char **body, size_t *body_len, size_t *consumed);

/* Reason phrase for a status code. */
const char *http_reason(int status);

#endif
