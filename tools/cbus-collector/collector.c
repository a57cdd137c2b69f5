/* cbus-collector: a small loopback HTTP/1.1 collector for tests, benchmarks
 * and the demo.  It accepts what cbus-export sends:
 *
 *   POST /v1/traces (or any path ending in it)   OTLP/protobuf or OTLP/JSON, optionally gzip
 *   POST <any path> with Content-Type application/msgpack   msgpack batches
 *   GET  /stats                                  the counters as JSON
 *
 * counts spans and events, optionally stores every accepted body (inflated)
 * in a directory, and answers with failures on request (--fail-first,
 * --fail-rate, --status, --retry-after, --drop-first, --delay-ms, --partial)
 * so that tests can drive an exporter through its retry paths.
 *
 * One thread, epoll, non-blocking sockets, keep-alive; bodies framed by
 * Content-Length or chunked.  Counters go to --stats FILE (atomically, at
 * most every 100 ms while they change, and at exit) and to stderr on SIGTERM;
 * with them "post_ms", the monotonic arrival time (ms) of the first 32 POSTs.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "count.h"
#include "daemon.h"
#include "http.h"
#include "log.h"
#include "sbuf.h"

struct opts {
    const char *listen_host;
    unsigned port;
    const char *port_file;
    const char *store_dir;
    const char *stats_file;
    double fail_rate;
    unsigned fail_first;
    unsigned drop_first;
    int fail_status;
    const char *retry_after;
    unsigned delay_ms;
    unsigned partial;
    const char *langfuse;   /* --langfuse PUBLIC:SECRET: act as Langfuse's OTLP endpoint */
    int phoenix;            /* --phoenix: act as Arize Phoenix (415 to anything but protobuf) */
    int full_parse;
};

struct stats {
    uint64_t connections;
    uint64_t requests;      /* POSTs with a complete body */
    uint64_t accepted;      /* answered 2xx */
    uint64_t failed;        /* answered with an injected failure status */
    uint64_t dropped;       /* connections closed on purpose without an answer */
    uint64_t bad;           /* malformed: 400/404/415 */
    uint64_t spans;         /* in accepted OTLP bodies */
    uint64_t span_events;
    uint64_t events;        /* in accepted msgpack bodies */
    uint64_t bytes;         /* accepted bodies as received (maybe gzip) */
    uint64_t bytes_inflated;
    uint64_t gzip;
    uint64_t protobuf;      /* accepted OTLP bodies that were protobuf */
    uint64_t chunked;
    uint64_t partial;       /* answers carrying partialSuccess */
    uint64_t stored;
    uint64_t unauthorized;  /* --langfuse: refused for auth, path or ingestion version */
    /* CLOCK_MONOTONIC ms at which the first POSTS_KEPT POSTs arrived (complete):
     * a test proves a retry waited by the gap between two of them, instead
     * of sleeping and looking that nothing came. */
    uint64_t post_ms[32];
};
#define POSTS_KEPT (sizeof S.post_ms / sizeof S.post_ms[0])

struct conn {
    int fd;
    struct sbuf in;
    struct sbuf out;
    struct sbuf chunks;      /* a chunked body, reassembled */
    size_t out_off;
    int sent_continue;
    int close_after;
    uint64_t respond_at_ms;  /* a delayed answer is pending until then */
    struct conn *next;       /* in the delayed list */
    struct conn *all_prev, *all_next; /* every open connection, freed at exit */
};

static struct opts O = {.listen_host = "127.0.0.1", .port = 4318, .fail_status = 503};
static struct stats S;
static int stats_dirty;
static uint64_t store_seq;
static struct conn *delayed;
static struct conn *all_conns;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void stats_json(struct sbuf *b)
{
    sbuf_printf(b,
                "{\"connections\":%" PRIu64 ",\"requests\":%" PRIu64 ",\"accepted\":%" PRIu64
                ",\"failed\":%" PRIu64 ",\"dropped\":%" PRIu64 ",\"bad\":%" PRIu64
                ",\"spans\":%" PRIu64 ",\"span_events\":%" PRIu64 ",\"events\":%" PRIu64
                ",\"bytes\":%" PRIu64 ",\"bytes_inflated\":%" PRIu64 ",\"gzip\":%" PRIu64
                ",\"protobuf\":%" PRIu64 ",\"chunked\":%" PRIu64 ",\"partial\":%" PRIu64
                ",\"stored\":%" PRIu64 ",\"unauthorized\":%" PRIu64 "}\n",
                S.connections, S.requests, S.accepted, S.failed, S.dropped, S.bad, S.spans,
                S.span_events, S.events, S.bytes, S.bytes_inflated, S.gzip, S.protobuf, S.chunked,
                S.partial, S.stored, S.unauthorized);
    /* the line above ends in "}\n": reopen it for the arrival times */
    if (!b->failed && b->len >= 2) {
        b->len -= 2;
        sbuf_puts(b, ",\"post_ms\":[");
        for (uint64_t i = 0; i < S.requests && i < POSTS_KEPT; i++)
            sbuf_printf(b, "%s%" PRIu64, i ? "," : "", S.post_ms[i]);
        sbuf_puts(b, "]}\n");
    }
}

static void write_stats(void)
{
    if (!O.stats_file)
        return;
    struct sbuf b;
    sbuf_init(&b);
    stats_json(&b);
    int r = b.failed ? -ENOMEM : cbus_replace_file(O.stats_file, b.data, b.len, 0);
    if (r)
        cbus_log_warn("writing %s: %s", O.stats_file, strerror(-r));
    sbuf_free(&b);
    stats_dirty = 0;
}

static void store_body(const char *ext, const void *data, size_t len)
{
    char path[4096], tmp[4200];
    snprintf(path, sizeof path, "%s/%08" PRIu64 ".%s", O.store_dir, store_seq++, ext);
    snprintf(tmp, sizeof tmp, "%s.part", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        cbus_log_warn("store %s: %s", tmp, strerror(errno));
        return;
    }
    const char *p = data;
    while (len) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            cbus_log_warn("store %s: %s", tmp, strerror(errno));
            close(fd);
            unlink(tmp);
            return;
        }
        p += w;
        len -= (size_t)w;
    }
    close(fd);
    /* rename: a reader of the directory never sees a partial body */
    if (rename(tmp, path) == 0)
        S.stored++;
}

static void respond(struct conn *c, int status, const char *ctype, const char *body,
                    const char *extra_header)
{
    size_t blen = body ? strlen(body) : 0;
    sbuf_printf(&c->out, "HTTP/1.1 %d %s\r\nContent-Length: %zu\r\n", status, http_reason(status),
                blen);
    if (ctype)
        sbuf_printf(&c->out, "Content-Type: %s\r\n", ctype);
    if (extra_header)
        sbuf_puts(&c->out, extra_header);
    if (c->close_after)
        sbuf_puts(&c->out, "Connection: close\r\n");
    sbuf_puts(&c->out, "\r\n");
    if (blen)
        sbuf_add(&c->out, body, blen);
}

/* google.rpc.Status {code = 1: 14 (UNAVAILABLE), message = 2} */
#define PB_UNAVAILABLE "\x08\x0e\x12\x10injected failure"

/* respond() for a body that may hold NUL bytes (protobuf). */
static void respond_bytes(struct conn *c, int status, const char *ctype, const void *body, size_t blen,
                          const char *extra_header)
{
    sbuf_printf(&c->out, "HTTP/1.1 %d %s\r\nContent-Length: %zu\r\n", status, http_reason(status), blen);
    if (ctype)
        sbuf_printf(&c->out, "Content-Type: %s\r\n", ctype);
    if (extra_header)
        sbuf_puts(&c->out, extra_header);
    if (c->close_after)
        sbuf_puts(&c->out, "Connection: close\r\n");
    sbuf_puts(&c->out, "\r\n");
    if (blen)
        sbuf_add(&c->out, body, blen);
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

/* "Basic " + base64(cred) (RFC 7617). */
static void basic_auth(char *out, size_t cap, const char *cred)
{
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n = strlen(cred), o = 0;
    const unsigned char *u = (const unsigned char *)cred;
    if (cap < 7 + 4 * ((n + 2) / 3)) {
        out[0] = '\0';
        return;
    }
    memcpy(out, "Basic ", 6);
    o = 6;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)u[i] << 16 | (i + 1 < n ? (unsigned)u[i + 1] << 8 : 0) | (i + 2 < n ? u[i + 2] : 0);
        out[o++] = b64[v >> 18 & 63];
        out[o++] = b64[v >> 12 & 63];
        out[o++] = i + 1 < n ? b64[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? b64[v & 63] : '=';
    }
    out[o] = '\0';
}

/* Decides the answer to a complete request.  Returns 0, or -1 to close the
 * connection at once without answering (--drop-first). */
static int handle(struct conn *c, const struct http_request *req, const char *body, size_t body_len)
{
    if (!strcmp(req->method, "GET") && !strcmp(req->target, "/stats")) {
        struct sbuf b;
        sbuf_init(&b);
        stats_json(&b);
        respond(c, 200, "application/json", b.failed ? "{}" : b.data, NULL);
        sbuf_free(&b);
        return 0;
    }
    if (strcmp(req->method, "POST")) {
        S.bad++;
        respond(c, 405, "text/plain", "POST only\n", "Allow: POST\r\n");
        return 0;
    }
    int is_msgpack = !strncasecmp(req->content_type, "application/msgpack", 19) ||
                     !strncasecmp(req->content_type, "application/x-msgpack", 21);
    int is_json = !strncasecmp(req->content_type, "application/json", 16);
    int is_pb = !strncasecmp(req->content_type, "application/x-protobuf", 22) ||
                !strncasecmp(req->content_type, "application/protobuf", 20);
    char *q = strchr(req->target, '?');
    if (q)
        *q = '\0';
    if (!is_msgpack && !((is_json || is_pb) && ends_with(req->target, "/v1/traces"))) {
        S.bad++;
        respond(c, is_json || is_pb ? 404 : 415, "text/plain",
                "want OTLP (protobuf or JSON) at /v1/traces or application/msgpack\n", NULL);
        return 0;
    }
    if (O.phoenix && !is_pb) {
        /* Phoenix's OTLP/HTTP receiver takes protobuf only */
        S.unauthorized++;
        respond(c, 415, "text/plain", "Phoenix takes application/x-protobuf only\n", NULL);
        return 0;
    }
    if (O.langfuse && !is_msgpack) {
        /* What Langfuse's OTLP endpoint asks of a direct exporter: its path,
         * Basic auth with the project's public and secret key, and the
         * ingestion version header. */
        char want[512];
        basic_auth(want, sizeof want, O.langfuse);
        if (!ends_with(req->target, "/api/public/otel/v1/traces")) {
            S.unauthorized++;
            respond(c, 404, "text/plain", "Langfuse takes OTLP at /api/public/otel/v1/traces\n", NULL);
            return 0;
        }
        if (strcmp(req->authorization, want)) {
            S.unauthorized++;
            respond(c, 401, "text/plain", "bad Basic auth\n", NULL);
            return 0;
        }
        if (strcmp(req->langfuse_version, "4")) {
            S.unauthorized++;
            respond(c, 400, "text/plain", "x-langfuse-ingestion-version: 4 expected\n", NULL);
            return 0;
        }
    }
    if (S.requests < POSTS_KEPT)
        S.post_ms[S.requests] = now_ms();
    S.requests++;
    stats_dirty = 1;
    if (S.requests <= O.drop_first) {
        S.dropped++;
        return -1;
    }
    int fail = S.requests <= O.drop_first + O.fail_first;
    if (!fail && O.fail_rate > 0)
        fail = (double)random() / RAND_MAX < O.fail_rate;
    if (fail) {
        S.failed++;
        char hdr[128] = "";
        if (O.retry_after)
            snprintf(hdr, sizeof hdr, "Retry-After: %s\r\n", O.retry_after);
        /* OTLP/HTTP: a failure carries a google.rpc.Status in the request's
         * encoding; protobuf Status {code = 1: 14, message = 2} */
        if (is_pb)
            respond_bytes(c, O.fail_status, "application/x-protobuf", PB_UNAVAILABLE, sizeof PB_UNAVAILABLE - 1,
                          hdr[0] ? hdr : NULL);
        else
            respond(c, O.fail_status, "application/json", "{\"code\":14,\"message\":\"injected failure\"}",
                    hdr[0] ? hdr : NULL);
        return 0;
    }
    struct sbuf inflated;
    sbuf_init(&inflated);
    const char *data = body;
    size_t len = body_len;
    if (req->gzip) {
        if (count_gunzip(body, body_len, &inflated)) {
            sbuf_free(&inflated);
            S.bad++;
            respond(c, 400, "text/plain", "bad gzip body\n", NULL);
            return 0;
        }
        data = inflated.data;
        len = inflated.len;
        S.gzip++;
    }
    struct count_result cr;
    int r = is_msgpack ? count_msgpack(data, len, O.full_parse, &cr)
            : is_pb    ? count_otlp_protobuf(data, len, O.full_parse, &cr)
                       : count_otlp_json(data, len, O.full_parse, &cr);
    if (r) {
        sbuf_free(&inflated);
        S.bad++;
        respond(c, 400, "text/plain", is_msgpack ? "not a msgpack batch\n" : "not an OTLP trace request\n",
                NULL);
        return 0;
    }
    if (is_pb)
        S.protobuf++;
    S.accepted++;
    S.spans += cr.spans;
    S.span_events += cr.span_events;
    S.events += cr.events;
    S.bytes += body_len;
    S.bytes_inflated += len;
    if (req->chunked)
        S.chunked++;
    if (O.store_dir)
        store_body(is_msgpack ? "msgpack" : is_pb ? "pb" : "json", data, len);
    sbuf_free(&inflated);
    if (is_pb) {
        /* ExportTraceServiceResponse: empty for full success, else
         * partial_success = 1 {rejected_spans = 1, error_message = 2} */
        uint8_t pb[64];
        size_t n = 0;
        if (O.partial) {
            static const char m[] = "injected partial success";
            uint8_t v[10];
            size_t vl = 0;
            for (uint64_t x = O.partial; ; x >>= 7) {
                v[vl++] = (uint8_t)(x >= 0x80 ? (x & 0x7f) | 0x80 : x);
                if (x < 0x80)
                    break;
            }
            pb[n++] = 0x0a;
            pb[n++] = (uint8_t)(1 + vl + 2 + sizeof m - 1);
            pb[n++] = 0x08;
            memcpy(pb + n, v, vl);
            n += vl;
            pb[n++] = 0x12;
            pb[n++] = (uint8_t)(sizeof m - 1);
            memcpy(pb + n, m, sizeof m - 1);
            n += sizeof m - 1;
            S.partial++;
        }
        respond_bytes(c, 200, "application/x-protobuf", pb, n, NULL);
    } else if (!is_msgpack && O.partial) {
        char pb[160];
        snprintf(pb, sizeof pb,
                 "{\"partialSuccess\":{\"rejectedSpans\":\"%u\",\"errorMessage\":\"injected partial success\"}}",
                 O.partial);
        S.partial++;
        respond(c, 200, "application/json", pb, NULL);
    } else {
        respond(c, 200, "application/json", "{}", NULL);
    }
    return 0;
}

static void conn_close(int ep, struct conn *c)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    for (struct conn **pp = &delayed; *pp; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
    if (c->all_prev)
        c->all_prev->all_next = c->all_next;
    else
        all_conns = c->all_next;
    if (c->all_next)
        c->all_next->all_prev = c->all_prev;
    sbuf_free(&c->in);
    sbuf_free(&c->out);
    sbuf_free(&c->chunks);
    free(c);
}

/* Writes what is pending.  Returns 0 (all written or would block), -1 (close). */
static int flush_out(int ep, struct conn *c)
{
    while (c->out_off < c->out.len) {
        ssize_t w = send(c->fd, c->out.data + c->out_off, c->out.len - c->out_off, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
            epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
            return 0;
        }
        if (w < 0)
            return -1;
        c->out_off += (size_t)w;
    }
    sbuf_reset(&c->out);
    c->out_off = 0;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    return c->close_after ? -1 : 0;
}

/* Parses and answers whole requests in c->in.  Returns -1 to close. */
static int process(int ep, struct conn *c)
{
    while (!c->respond_at_ms && c->in.len) {
        struct http_request req;
        const char *body = NULL;
        size_t body_len = 0, used = 0;
        int r = http_parse(c->in.data, c->in.len, &req, &c->chunks, &body, &body_len, &used);
        if (r < 0) {
            S.bad++;
            c->close_after = 1;
            respond(c, 400, "text/plain", "malformed request\n", NULL);
            return flush_out(ep, c);
        }
        if (r == 0) {
            if (req.header_len && req.expect_continue && !c->sent_continue) {
                sbuf_puts(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
                c->sent_continue = 1;
                return flush_out(ep, c);
            }
            return 0;
        }
        c->sent_continue = 0;
        c->close_after = !req.keep_alive;
        int h = handle(c, &req, body, body_len);
        memmove(c->in.data, c->in.data + used, c->in.len - used);
        c->in.len -= used;
        if (h < 0)
            return -1;
        if (O.delay_ms && !strcmp(req.method, "POST")) {
            /* answer later; read nothing more from this connection meanwhile */
            c->respond_at_ms = now_ms() + O.delay_ms;
            c->next = delayed;
            delayed = c;
            return 0;
        }
        if (flush_out(ep, c))
            return -1;
    }
    return 0;
}

static int on_readable(int ep, struct conn *c)
{
    for (;;) {
        if (sbuf_reserve(&c->in, 65536))
            return -1;
        ssize_t n = recv(c->fd, c->in.data + c->in.len, c->in.cap - c->in.len - 1, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n <= 0)
            return -1;
        c->in.len += (size_t)n;
        c->in.data[c->in.len] = '\0';
        if (c->in.len > HTTP_MAX_BODY + HTTP_MAX_HEADER)
            return -1;
    }
    return process(ep, c);
}

static int run_delayed(int ep)
{
    uint64_t now = now_ms();
    int next = -1;
    for (struct conn **pp = &delayed; *pp;) {
        struct conn *c = *pp;
        if (c->respond_at_ms <= now) {
            *pp = c->next;
            c->respond_at_ms = 0;
            if (flush_out(ep, c) || process(ep, c))
                conn_close(ep, c);
            continue;
        }
        int wait = (int)(c->respond_at_ms - now);
        if (next < 0 || wait < next)
            next = wait;
        pp = &c->next;
    }
    return next;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: cbus-collector [options]\n"
            "  --listen HOST:PORT   address (default 127.0.0.1:4318; port 0 = any free port)\n"
            "  --port-file FILE     write the bound port here once listening\n"
            "  --store DIR          store every accepted body (inflated) as DIR/NNNNNNNN.pb|json|msgpack\n"
            "  --stats FILE         write the counters as JSON (every 100 ms while they change, and at exit)\n"
            "  --parse              parse bodies fully (validates; counts span events) instead of scanning\n"
            "  --fail-first N       answer the first N requests with --status\n"
            "  --fail-rate P        answer a fraction P (0..1) of requests with --status\n"
            "  --status CODE        failure status (default 503)\n"
            "  --retry-after VALUE  add 'Retry-After: VALUE' to failure answers\n"
            "  --drop-first N       close the connection on the first N requests without answering\n"
            "  --delay-ms N         answer every POST N ms late (a slow endpoint)\n"
            "  --partial N          answer OTLP requests 200 with partialSuccess.rejectedSpans = N\n"
            "  --langfuse PK:SK     act as Langfuse: OTLP only at /api/public/otel/v1/traces, Basic auth PK:SK,\n"
            "                       x-langfuse-ingestion-version: 4 (else 404/401/400, counted as unauthorized)\n"
            "  --phoenix            act as Arize Phoenix: OTLP/protobuf only (else 415, counted as unauthorized)\n");
}

static int parse_args(int argc, char **argv)
{
    static const struct option lo[] = {
        {"listen", 1, 0, 'l'},     {"port-file", 1, 0, 'P'}, {"store", 1, 0, 's'},
        {"stats", 1, 0, 'S'},      {"parse", 0, 0, 'p'},     {"fail-first", 1, 0, 'f'},
        {"fail-rate", 1, 0, 'r'},  {"status", 1, 0, 'c'},    {"retry-after", 1, 0, 'a'},
        {"drop-first", 1, 0, 'd'}, {"delay-ms", 1, 0, 'D'},  {"partial", 1, 0, 'x'}, {"langfuse", 1, 0, 'L'}, {"phoenix", 0, 0, 'X'},
        {"help", 0, 0, 'h'},       {0, 0, 0, 0}};
    static char host[256];
    int ch;
    while ((ch = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        char *end = NULL;
        switch (ch) {
        case 'l': {
            const char *colon = strrchr(optarg, ':');
            if (!colon || (size_t)(colon - optarg) >= sizeof host)
                return -1;
            memcpy(host, optarg, (size_t)(colon - optarg));
            host[colon - optarg] = '\0';
            O.listen_host = host;
            O.port = (unsigned)strtoul(colon + 1, &end, 10);
            if (*end || O.port > 65535)
                return -1;
            break;
        }
        case 'P': O.port_file = optarg; break;
        case 's': O.store_dir = optarg; break;
        case 'S': O.stats_file = optarg; break;
        case 'p': O.full_parse = 1; break;
        case 'f': O.fail_first = (unsigned)strtoul(optarg, &end, 10); break;
        case 'r':
            O.fail_rate = strtod(optarg, &end);
            if (O.fail_rate < 0 || O.fail_rate > 1)
                return -1;
            break;
        case 'c':
            O.fail_status = (int)strtol(optarg, &end, 10);
            if (O.fail_status < 200 || O.fail_status > 599)
                return -1;
            break;
        case 'a': O.retry_after = optarg; break;
        case 'd': O.drop_first = (unsigned)strtoul(optarg, &end, 10); break;
        case 'D': O.delay_ms = (unsigned)strtoul(optarg, &end, 10); break;
        case 'x': O.partial = (unsigned)strtoul(optarg, &end, 10); break;
        case 'L': O.langfuse = optarg; break;
        case 'X': O.phoenix = 1; break;
        case 'h': usage(stdout); exit(0);
        default: return -1;
        }
        if (end && *end)
            return -1;
    }
    return optind == argc ? 0 : -1;
}

int main(int argc, char **argv)
{
    cbus_log_init("cbus-collector", CBUS_LOG_INFO);
    if (parse_args(argc, argv)) {
        usage(stderr);
        return 2;
    }
    if (O.store_dir && mkdir(O.store_dir, 0755) && errno != EEXIST) {
        cbus_log_error("mkdir %s: %s", O.store_dir, strerror(errno));
        return 1;
    }
    cbus_daemon_signals();
    srandom((unsigned)getpid());
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)O.port)};
    if (inet_pton(AF_INET, O.listen_host, &sa.sin_addr) != 1) {
        cbus_log_error("--listen: '%s' is not an IPv4 address", O.listen_host);
        return 2;
    }
    if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) || listen(lfd, 128)) {
        cbus_log_error("listen %s:%u: %s", O.listen_host, O.port, strerror(errno));
        return 1;
    }
    socklen_t sl = sizeof sa;
    getsockname(lfd, (struct sockaddr *)&sa, &sl);
    unsigned port = ntohs(sa.sin_port);
    if (O.port_file) {
        char pb[16];
        int n = snprintf(pb, sizeof pb, "%u\n", port);
        int r = cbus_write_file_atomic(O.port_file, pb, (size_t)n);
        if (r) {
            cbus_log_error("writing %s: %s", O.port_file, strerror(-r));
            return 1;
        }
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);
    cbus_log_info("listening on %s:%u%s%s", O.listen_host, port, O.store_dir ? ", storing in " : "",
                  O.store_dir ? O.store_dir : "");
    write_stats();
    uint64_t last_stats = now_ms();
    while (!cbus_daemon_stop) {
        int timeout = run_delayed(ep);
        if (O.stats_file && stats_dirty && (timeout < 0 || timeout > 100))
            timeout = 100;
        struct epoll_event evs[64];
        int n = epoll_wait(ep, evs, 64, timeout);
        if (n < 0 && errno != EINTR) {
            cbus_log_error("epoll_wait: %s", strerror(errno));
            break;
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    c = calloc(1, sizeof *c);
                    if (!c) {
                        close(fd);
                        continue;
                    }
                    c->fd = fd;
                    sbuf_init(&c->in);
                    sbuf_init(&c->out);
                    sbuf_init(&c->chunks);
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
                    c->all_next = all_conns;
                    if (all_conns)
                        all_conns->all_prev = c;
                    all_conns = c;
                    S.connections++;
                }
                continue;
            }
            int r = 0;
            if (evs[i].events & EPOLLOUT)
                r = flush_out(ep, c);
            if (!r && (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && !c->respond_at_ms)
                r = on_readable(ep, c);
            if (r)
                conn_close(ep, c);
        }
        if (stats_dirty && now_ms() - last_stats >= 100) {
            write_stats();
            last_stats = now_ms();
        }
    }
    write_stats();
    struct sbuf b;
    sbuf_init(&b);
    stats_json(&b);
    if (b.len && b.data[b.len - 1] == '\n')
        b.data[--b.len] = '\0';
    cbus_log_info("stopping: %s", b.failed ? "" : b.data);
    sbuf_free(&b);
    while (all_conns)
        conn_close(ep, all_conns);
    close(ep);
    close(lfd);
    return 0;
}
