/* The daemons' HTTP server (consumers/daemon/httpd.c, on libmicrohttpd):
 * real sockets on loopback, raw requests, so what a client sees is checked
 * byte for byte (status line, headers, body). */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "httpd.h"

static struct cbus_httpd *srv;

static void stop(void)
{
    cbus_httpd_stop(srv);
    srv = NULL;
}

TestSuite(daemon_httpd, .fini = stop);

/* Routes for the tests: GET /hello[?who=X], PATCH /echo (echoes the body). */
static void routes(void *ctx, const struct cbus_http_request *req, struct cbus_http_response *res)
{
    (void)ctx;
    char buf[256];
    if (!strcmp(req->path, "/hello")) {
        if (strcmp(req->method, "GET") && strcmp(req->method, "HEAD")) {
            cbus_http_reply(res, 405, "text/plain", "no\n", 3);
            res->allow = "GET, HEAD";
            return;
        }
        const char *who = cbus_http_query(req, "who");
        int n = snprintf(buf, sizeof buf, "hello %s\n", who ? who : "world");
        cbus_http_reply(res, 200, "text/plain", buf, (size_t)n);
    } else if (!strcmp(req->path, "/echo") && !strcmp(req->method, "PATCH")) {
        cbus_http_reply(res, 200, "application/octet-stream", req->body, req->body_len);
    } else {
        res->status = 404; /* no body: an empty 404 */
    }
}

static unsigned start(const char *host, const char *token, size_t max_body)
{
    struct cbus_httpd_opts o = {.host = host, .port = 0, .handler = routes,
                                .bearer_token = token, .max_body = max_body};
    cr_assert_eq(cbus_httpd_start(&srv, &o), 0);
    unsigned port = cbus_httpd_port(srv);
    cr_assert_neq(port, 0u);
    return port;
}

/* Sends raw, reads the whole answer (the server closes: Connection: close). */
static char *ask(int family, unsigned port, const char *raw)
{
    int fd = socket(family, SOCK_STREAM, 0);
    cr_assert_geq(fd, 0);
    struct sockaddr_storage ss = {0};
    socklen_t sl;
    if (family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sl = sizeof *a;
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        a->sin6_addr = in6addr_loopback;
        sl = sizeof *a;
    }
    cr_assert_eq(connect(fd, (struct sockaddr *)&ss, sl), 0, "%s", strerror(errno));
    size_t n = strlen(raw);
    cr_assert_eq(send(fd, raw, n, MSG_NOSIGNAL), (ssize_t)n);
    size_t cap = 1 << 16, got = 0;
    char *out = malloc(cap);
    ssize_t r;
    while ((r = recv(fd, out + got, cap - 1 - got, 0)) > 0)
        got += (size_t)r;
    out[got] = '\0';
    close(fd);
    return out;
}

static void expect(const char *answer, const char *status_line, const char *body)
{
    cr_assert(!strncmp(answer, status_line, strlen(status_line)), "want %s, got: %s", status_line, answer);
    const char *b = strstr(answer, "\r\n\r\n");
    cr_assert_not_null(b, "%s", answer);
    if (body)
        cr_assert_str_eq(b + 4, body);
}

Test(daemon_httpd, routes_methods_and_query_arguments)
{
    unsigned port = start("127.0.0.1", NULL, 0);
    char *a = ask(AF_INET, port, "GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    expect(a, "HTTP/1.1 200", "hello world\n");
    cr_assert(strstr(a, "Content-Type: text/plain"), "%s", a);
    free(a);
    a = ask(AF_INET, port, "GET /hello?who=ann%20b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    expect(a, "HTTP/1.1 200", "hello ann b\n");
    free(a);
    a = ask(AF_INET, port, "HEAD /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    expect(a, "HTTP/1.1 200", ""); /* HEAD: the headers, no body */
    free(a);
    a = ask(AF_INET, port, "DELETE /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    expect(a, "HTTP/1.1 405", "no\n");
    cr_assert(strstr(a, "Allow: GET, HEAD"), "%s", a);
    free(a);
    a = ask(AF_INET, port, "GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    expect(a, "HTTP/1.1 404", "");
    free(a);
    a = ask(AF_INET, port, "garbage\r\n\r\n");
    cr_assert(!strncmp(a, "HTTP/1.1 400", 12) || a[0] == '\0', "a malformed request: %s", a);
    free(a);
}

Test(daemon_httpd, request_bodies_arrive_whole_and_oversized_ones_get_413)
{
    unsigned port = start("127.0.0.1", NULL, 64);
    char *a;
    a = ask(AF_INET, port,
            "PATCH /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 10\r\n\r\n{\"t\":\"new\"}");
    expect(a, "HTTP/1.1 200", "{\"t\":\"new\"");
    free(a);
    /* declared too large: refused before the body is read */
    a = ask(AF_INET, port,
            "PATCH /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 100000\r\n\r\n");
    expect(a, "HTTP/1.1 413", NULL);
    free(a);
    /* chunked past the cap: read, dropped, 413 */
    char big[101];
    memset(big, 'x', 100);
    big[100] = '\0';
    char req[600];
    snprintf(req, sizeof req,
             "PATCH /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
             "64\r\n%.100s\r\n0\r\n\r\n", big);
    a = ask(AF_INET, port, req);
    expect(a, "HTTP/1.1 413", NULL);
    free(a);
}

Test(daemon_httpd, a_bearer_token_is_required_when_set)
{
    unsigned port = start("127.0.0.1", "s3cret", 0);
    char *a = ask(AF_INET, port, "GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    expect(a, "HTTP/1.1 401", NULL);
    cr_assert(strstr(a, "WWW-Authenticate: Bearer"), "%s", a);
    free(a);
    a = ask(AF_INET, port,
            "GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer s3cre\r\n\r\n");
    expect(a, "HTTP/1.1 401", NULL);
    free(a);
    a = ask(AF_INET, port,
            "GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer s3cret\r\n\r\n");
    expect(a, "HTTP/1.1 200", "hello world\n");
    free(a);
}

Test(daemon_httpd, ipv6_loopback_and_bad_addresses)
{
    unsigned port = start("::1", NULL, 0);
    char *a = ask(AF_INET6, port, "GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    expect(a, "HTTP/1.1 200", "hello world\n");
    free(a);
    struct cbus_httpd *h = NULL;
    cr_assert_eq(cbus_httpd_start(&h, &(struct cbus_httpd_opts){.host = "localhost", .handler = routes}),
                 -EINVAL, "a name, not an address literal");
    cr_assert_eq(cbus_httpd_start(&h, &(struct cbus_httpd_opts){.host = "127.0.0.1"}), -EINVAL,
                 "no handler");
    cr_assert_eq(cbus_httpd_start(&h, &(struct cbus_httpd_opts){.host = "127.0.0.1", .port = 70000,
                                                                .handler = routes}), -EINVAL);
    cr_assert_eq(cbus_httpd_start(&h, &(struct cbus_httpd_opts){.host = "::1", .port = port,
                                                                .handler = routes}), -EADDRINUSE);
    cr_assert_null(h);
    cbus_httpd_stop(NULL);
}
