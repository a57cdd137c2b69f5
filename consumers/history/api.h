/* cbus-history's HTTP JSON API on the daemons' server (consumers/daemon/httpd.h),
 * loopback only:
 *   GET   /v1/conversations[?user=U&since=T&limit=N]
 *   GET   /v1/conversations/{id}             the conversation, with its thread
 *   GET   /v1/conversations/{id}/messages    the messages only
 *   PATCH /v1/conversations/{id}             {"title": "..."} renames (404 if missing)
 *   GET   /v1/search?q=TEXT[&limit=N]        full-text search (FTS5)
 *   GET   /v1/stats                          counters as of the last commit
 * The handler reads through its own SQLite connection (WAL: the daemon's
 * writes never wait for it, nor it for them beyond a commit). */
#ifndef CBUS_HISTORY_API_H
#define CBUS_HISTORY_API_H

#include <stddef.h>

#include "httpd.h"
#include "store.h"

struct hist_api;

/* Opens db and serves on host:port (port 0: any).  0 or -errno (err set). */
/* token: non-NULL, every request needs "Authorization: Bearer <token>" (401). */
int hist_api_start(struct hist_api **out, const char *db, const char *host, unsigned port,
                   const char *token, char *err, size_t errlen);
unsigned hist_api_port(const struct hist_api *a);
void hist_api_stop(struct hist_api *a);

/* The handler itself, over an open store (tests call it without a socket). */
void hist_api_handle(struct hist_store *st, const struct cbus_http_request *req,
                     struct cbus_http_response *res);

/* "7d" (that long ago), "2026-12-01", "2026-12-01T10:00:00Z" or epoch
 * seconds, as ns since the epoch.  0 or -EINVAL. */
int hist_parse_since(const char *text, unsigned long long now_ns, unsigned long long *out);

#endif
