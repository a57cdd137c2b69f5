/* A minimal loopback HTTP/1.0 server for Prometheus scrapes: GET /metrics
 * (text exposition 0.0.4) and GET /snapshot.json.  It serves the documents
 * the consumer loop last rendered (swapped in under a mutex), so a scrape
 * never touches the ledger and never blocks accounting.  One thread
 * multiplexes up to 32 connections (poll), each with a deadline for its
 * whole request and response: slow or idle clients cannot silence it. */
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
