#include "http.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "httpd.h"

/* The cost daemon's routes on the shared HTTP server (consumers/daemon/httpd.c):
 * the documents the consumer loop last rendered, swapped in under a mutex, so
 * a scrape never touches the ledger and never blocks accounting. */
struct cost_http {
    struct cbus_httpd *srv;
    pthread_mutex_t mu;
    char *metrics, *json;
    size_t mlen, jlen;
};

static void serve(void *ctx, const struct cbus_http_request *req, struct cbus_http_response *res)
{
    struct cost_http *h = ctx;
    if (strcmp(req->method, "GET") && strcmp(req->method, "HEAD")) {
        cbus_http_reply(res, 405, "text/plain", "GET only\n", 9);
        res->allow = "GET, HEAD";
        return;
    }
    int metrics = !strcmp(req->path, "/metrics"), json = !strcmp(req->path, "/snapshot.json");
    if (!metrics && !json) {
        cbus_http_reply(res, 404, "text/plain", "try /metrics or /snapshot.json\n", 31);
        return;
    }
    pthread_mutex_lock(&h->mu);
    cbus_http_reply(res, 200, metrics ? "text/plain; version=0.0.4; charset=utf-8" : "application/json",
                    metrics ? h->metrics : h->json, metrics ? h->mlen : h->jlen);
    pthread_mutex_unlock(&h->mu);
}

int cost_http_start(struct cost_http **out, const char *host, unsigned port)
{
    struct cost_http *h = calloc(1, sizeof *h);
    if (!h)
        return -ENOMEM;
    pthread_mutex_init(&h->mu, NULL);
    h->metrics = strdup("");
    h->json = strdup("{}\n");
    h->jlen = 3;
    int r = h->metrics && h->json ? 0 : -ENOMEM;
    if (!r)
        r = cbus_httpd_start(&h->srv, &(struct cbus_httpd_opts){.host = host, .port = port,
                                                                 .handler = serve, .ctx = h});
    if (r) {
        free(h->metrics);
        free(h->json);
        pthread_mutex_destroy(&h->mu);
        free(h);
        return r;
    }
    *out = h;
    return 0;
}

unsigned cost_http_port(const struct cost_http *h)
{
    return h ? cbus_httpd_port(h->srv) : 0;
}

void cost_http_publish(struct cost_http *h, const char *metrics, size_t mlen, const char *json,
                       size_t jlen)
{
    if (!h)
        return;
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
    cbus_httpd_stop(h->srv); /* joins the server thread: no request is in serve() after this */
    free(h->metrics);
    free(h->json);
    pthread_mutex_destroy(&h->mu);
    free(h);
}
