/* The cost daemon's HTTP endpoints for Prometheus scrapes: GET /metrics
 * (text exposition 0.0.4) and GET /snapshot.json, on the shared server
 * (consumers/daemon/httpd.h: libmicrohttpd, its connection limits and
 * timeouts).  It serves the documents the consumer loop last rendered. */
#ifndef CBUS_COST_HTTP_H
#define CBUS_COST_HTTP_H

#include <stddef.h>

struct cost_http;

/* Binds host:port (port 0 = any; see cost_http_port).  Returns 0 or -errno. */
int cost_http_start(struct cost_http **out, const char *host, unsigned port);
unsigned cost_http_port(const struct cost_http *h);
/* Replaces the served documents (copied). */
void cost_http_publish(struct cost_http *h, const char *metrics, size_t mlen, const char *json,
                       size_t jlen);
void cost_http_stop(struct cost_http *h);

#endif
