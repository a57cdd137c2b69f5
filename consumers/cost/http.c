#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* One thread multiplexes every connection with poll(): a client that sends
 * nothing, or one byte a second (slowloris), holds one slot and its buffer
 * until its deadline, never the thread.  When every slot is taken, the
 * connection that has waited longest without completing a request is
 * dropped for the newcomer, so a flood of idle connections cannot keep a
 * real scrape out either. */
#define MAX_CONN      32
#define REQ_MAX       2048                     /* request line + headers */
#define READ_NS       (5 * UINT64_C(1000000000)) /* whole request, from accept */
#define WRITE_NS      (10 * UINT64_C(1000000000)) /* whole response */
#define DRAIN_NS      (1 * UINT64_C(1000000000))  /* lingering after the response */

enum conn_state { C_FREE, C_READ, C_WRITE, C_DRAIN };

struct conn {
    int fd;
    enum conn_state st;
    uint64_t accepted_ns, deadline_ns;
    size_t got;
    char req[REQ_MAX];
    char *out;          /* response: head + body, owned */
    size_t out_len, out_off;
};

struct cost_http {
    int fd;
    unsigned port;
    pthread_t thread;
    atomic_int stop;
    pthread_mutex_t mu;
    char *metrics, *json;
    size_t mlen, jlen;
    struct conn conns[MAX_CONN];
};

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * UINT64_C(1000000000) + (uint64_t)ts.tv_nsec;
}

static void conn_close(struct conn *c)
{
    if (c->st == C_FREE)
        return;
    close(c->fd);
    free(c->out);
    c->out = NULL;
    c->st = C_FREE;
}

/* Builds the response into c->out (doc copied: a slow reader must not hold
 * the mutex the consumer loop publishes under) and switches to writing. */
static void respond(struct conn *c, uint64_t now, const char *status, const char *type,
                    const char *doc, size_t len, int head_only)
{
    char head[256];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.0 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n", status, type, len);
    size_t body = head_only || !doc ? 0 : len;
    c->out = malloc((size_t)n + body);
    if (!c->out) {
        conn_close(c);
        return;
    }
    memcpy(c->out, head, (size_t)n);
    if (body)
        memcpy(c->out + n, doc, body);
    c->out_len = (size_t)n + body;
    c->out_off = 0;
    c->st = C_WRITE;
    c->deadline_ns = now + WRITE_NS;
}

static void route(struct cost_http *h, struct conn *c, uint64_t now)
{
    char method[8], path[256];
    if (sscanf(c->req, "%7s %255s", method, path) != 2) {
        respond(c, now, "400 Bad Request", "text/plain", "bad request\n", 12, 0);
        return;
    }
    if (strcmp(method, "GET") && strcmp(method, "HEAD")) {
        respond(c, now, "405 Method Not Allowed", "text/plain", "GET only\n", 9, 0);
        return;
    }
    int head_only = !strcmp(method, "HEAD");
    int metrics = !strcmp(path, "/metrics"), json = !strcmp(path, "/snapshot.json");
    if (!metrics && !json) {
        respond(c, now, "404 Not Found", "text/plain", "try /metrics or /snapshot.json\n", 31,
                head_only);
        return;
    }
    pthread_mutex_lock(&h->mu);
    respond(c, now, "200 OK",
            metrics ? "text/plain; version=0.0.4; charset=utf-8" : "application/json",
            metrics ? h->metrics : h->json, metrics ? h->mlen : h->jlen, head_only);
    pthread_mutex_unlock(&h->mu);
}

static void on_readable(struct cost_http *h, struct conn *c, uint64_t now)
{
    for (;;) {
        if (c->st == C_DRAIN) {
            char sink[512];
            ssize_t r = recv(c->fd, sink, sizeof sink, 0);
            if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
                conn_close(c);
            if (r <= 0)
                return;
            continue;
        }
        ssize_t r = recv(c->fd, c->req + c->got, sizeof c->req - 1 - c->got, 0);
        if (r < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        if (r <= 0) {
            conn_close(c); /* closed or reset before a whole request */
            return;
        }
        c->got += (size_t)r;
        c->req[c->got] = '\0';
        if (strstr(c->req, "\r\n\r\n") || strstr(c->req, "\n\n")) {
            route(h, c, now);
            return;
        }
        if (c->got == sizeof c->req - 1) {
            respond(c, now, "431 Request Header Fields Too Large", "text/plain", "too large\n",
                    10, 0);
            return;
        }
    }
}

static void on_writable(struct conn *c, uint64_t now)
{
    while (c->out_off < c->out_len) {
        ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (w < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        if (w <= 0) {
            conn_close(c);
            return;
        }
        c->out_off += (size_t)w;
    }
    /* Sent: half-close and read what the client still sends until it
     * closes, so unread request bytes do not turn our close into a reset
     * that discards the response in flight. */
    free(c->out);
    c->out = NULL;
    shutdown(c->fd, SHUT_WR);
    c->st = C_DRAIN;
    c->deadline_ns = now + DRAIN_NS;
}

/* A free slot, or the one held longest by a client still sending its
 * request (an idle or slowloris connection), closed for the newcomer. */
static struct conn *take_slot(struct cost_http *h)
{
    struct conn *oldest = NULL;
    for (unsigned i = 0; i < MAX_CONN; i++) {
        struct conn *c = &h->conns[i];
        if (c->st == C_FREE)
            return c;
        if ((c->st == C_READ || c->st == C_DRAIN) &&
            (!oldest || c->accepted_ns < oldest->accepted_ns))
            oldest = c;
    }
    if (oldest)
        conn_close(oldest);
    return oldest;
}

static void accept_all(struct cost_http *h, uint64_t now)
{
    for (;;) {
        int fd = accept4(h->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0)
            return; /* EAGAIN, or EMFILE and friends: retried at the next poll */
        struct conn *c = take_slot(h);
        if (!c) { /* every slot is sending a response: refuse this one */
            close(fd);
            continue;
        }
        c->fd = fd;
        c->st = C_READ;
        c->got = 0;
        c->req[0] = '\0';
        c->accepted_ns = now;
        c->deadline_ns = now + READ_NS;
    }
}

static void *loop(void *arg)
{
    struct cost_http *h = arg;
    struct pollfd p[MAX_CONN + 1];
    struct conn *of[MAX_CONN + 1];
    while (!atomic_load(&h->stop)) {
        uint64_t now = mono_ns();
        uint64_t next = now + 200000000u; /* the stop flag is seen within 200 ms */
        nfds_t n = 0;
        p[n++] = (struct pollfd){.fd = h->fd, .events = POLLIN};
        for (unsigned i = 0; i < MAX_CONN; i++) {
            struct conn *c = &h->conns[i];
            if (c->st == C_FREE)
                continue;
            if (now >= c->deadline_ns) {
                conn_close(c); /* the whole request (or response) took too long */
                continue;
            }
            if (c->deadline_ns < next)
                next = c->deadline_ns;
            of[n] = c;
            p[n++] = (struct pollfd){.fd = c->fd, .events = c->st == C_WRITE ? POLLOUT : POLLIN};
        }
        int ms = (int)((next - now + 999999) / 1000000);
        int r = poll(p, n, ms);
        if (r <= 0)
            continue;
        now = mono_ns();
        for (nfds_t i = 1; i < n; i++) {
            struct conn *c = of[i];
            if (!p[i].revents || c->st == C_FREE)
                continue;
            if (c->st == C_WRITE)
                on_writable(c, now); /* POLLERR/POLLHUP: send fails and closes */
            else
                on_readable(h, c, now);
        }
        if (p[0].revents & POLLIN)
            accept_all(h, now);
    }
    for (unsigned i = 0; i < MAX_CONN; i++)
        conn_close(&h->conns[i]);
    return NULL;
}

int cost_http_start(struct cost_http **out, const char *host, unsigned port)
{
    struct cost_http *h = calloc(1, sizeof *h);
    if (!h)
        return -ENOMEM;
    h->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (h->fd < 0) {
        int e = -errno;
        free(h);
        return e;
    }
    int one = 1;
    setsockopt(h->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    errno = 0;
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1 ||
        bind(h->fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(h->fd, 128) < 0) {
        int e = errno ? -errno : -EINVAL;
        close(h->fd);
        free(h);
        return e;
    }
    socklen_t al = sizeof a;
    getsockname(h->fd, (struct sockaddr *)&a, &al);
    h->port = ntohs(a.sin_port);
    pthread_mutex_init(&h->mu, NULL);
    h->metrics = strdup("");
    h->json = strdup("{}\n");
    h->jlen = 3;
    int r = h->metrics && h->json ? pthread_create(&h->thread, NULL, loop, h) : ENOMEM;
    if (r) {
        close(h->fd);
        pthread_mutex_destroy(&h->mu);
        free(h->metrics);
        free(h->json);
        free(h);
        return -r;
    }
    *out = h;
    return 0;
}

unsigned cost_http_port(const struct cost_http *h)
{
    return h->port;
}

void cost_http_publish(struct cost_http *h, const char *metrics, size_t mlen, const char *json,
                       size_t jlen)
{
    char *m = malloc(mlen + 1), *j = malloc(jlen + 1);
    if (!m || !j) {
        free(m);
        free(j);
        return; /* keep serving the previous documents */
    }
    memcpy(m, metrics, mlen);
    m[mlen] = '\0';
    memcpy(j, json, jlen);
    j[jlen] = '\0';
    pthread_mutex_lock(&h->mu);
    char *om = h->metrics, *oj = h->json;
    h->metrics = m;
    h->mlen = mlen;
    h->json = j;
    h->jlen = jlen;
    pthread_mutex_unlock(&h->mu);
    free(om);
    free(oj);
}

void cost_http_stop(struct cost_http *h)
{
    if (!h)
        return;
    atomic_store(&h->stop, 1);
    pthread_join(h->thread, NULL);
    close(h->fd);
    pthread_mutex_destroy(&h->mu);
    free(h->metrics);
    free(h->json);
    free(h);
}
