#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct cost_http {
    int fd;
    unsigned port;
    pthread_t thread;
    atomic_int stop;
    pthread_mutex_t mu;
    char *metrics, *json;
    size_t mlen, jlen;
};

static void send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

static void respond(struct cost_http *h, int fd, const char *status, const char *type,
                    const char *doc, size_t len)
{
    char head[256];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.0 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n", status, type, len);
    (void)h;
    send_all(fd, head, (size_t)n);
    if (doc)
        send_all(fd, doc, len);
}

static void serve(struct cost_http *h, int fd)
{
    /* One bounded read with a deadline: a client that sends nothing cannot
     * hold the (single) server thread. */
    struct timeval tv = {2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    char req[2048];
    size_t got = 0;
    while (got < sizeof req - 1) {
        ssize_t r = recv(fd, req + got, sizeof req - 1 - got, 0);
        if (r <= 0)
            break;
        got += (size_t)r;
        req[got] = '\0';
        if (strstr(req, "\r\n\r\n") || strstr(req, "\n\n"))
            break;
    }
    req[got] = '\0';
    char method[8], path[256];
    if (sscanf(req, "%7s %255s", method, path) != 2) {
        respond(h, fd, "400 Bad Request", "text/plain", "bad request\n", 12);
        return;
    }
    if (strcmp(method, "GET") && strcmp(method, "HEAD")) {
        respond(h, fd, "405 Method Not Allowed", "text/plain", "GET only\n", 9);
        return;
    }
    int head_only = !strcmp(method, "HEAD");
    int metrics = !strcmp(path, "/metrics"), json = !strcmp(path, "/snapshot.json");
    if (!metrics && !json) {
        respond(h, fd, "404 Not Found", "text/plain", "try /metrics or /snapshot.json\n", 31);
        return;
    }
    /* Copy under the lock, send without it: a slow client must not block
     * the consumer loop's next cost_http_publish(). */
    pthread_mutex_lock(&h->mu);
    size_t len = metrics ? h->mlen : h->jlen;
    char *doc = malloc(len + 1);
    if (doc)
        memcpy(doc, metrics ? h->metrics : h->json, len);
    pthread_mutex_unlock(&h->mu);
    if (!doc) {
        respond(h, fd, "503 Service Unavailable", "text/plain", "out of memory\n", 14);
        return;
    }
    respond(h, fd, "200 OK", metrics ? "text/plain; version=0.0.4; charset=utf-8" : "application/json",
            head_only ? NULL : doc, len);
    free(doc);
}

static void *loop(void *arg)
{
    struct cost_http *h = arg;
    while (!atomic_load(&h->stop)) {
        struct pollfd p = {.fd = h->fd, .events = POLLIN};
        int r = poll(&p, 1, 200);
        if (r <= 0)
            continue;
        int c = accept4(h->fd, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0)
            continue;
        serve(h, c);
        close(c);
    }
    return NULL;
}

int cost_http_start(struct cost_http **out, const char *host, unsigned port)
{
    struct cost_http *h = calloc(1, sizeof *h);
    if (!h)
        return -ENOMEM;
    h->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (h->fd < 0) {
        int e = -errno;
        free(h);
        return e;
    }
    int one = 1;
    setsockopt(h->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1 ||
        bind(h->fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(h->fd, 16) < 0) {
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
    int r = pthread_create(&h->thread, NULL, loop, h);
    if (r) {
        close(h->fd);
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
