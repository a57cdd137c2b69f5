/* HTTP transport over libcurl's multi interface: several requests in
 * flight, connections kept alive and reused (the multi handle owns the
 * connection cache), timeouts, TLS as libcurl provides.  One easy handle per
 * in-flight slot, created once.
 *
 * Secrets: an extra header taken whole from an environment variable, and/or
 * Basic auth user and password from two environment variables (Langfuse's
 * public and secret keys).  They go to libcurl and nowhere else: never
 * logged, never in the status output.
 */
#ifndef CBUS_EXPORT_TRANSPORT_H
#define CBUS_EXPORT_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#include "batch.h"
#include "export_config.h"
#include "retry.h"

struct send_result {
    enum send_outcome outcome;
    long status;               /* HTTP status, 0 when none */
    int curl_code;             /* CURLcode, 0 = none */
    int has_retry_after;
    uint64_t retry_after_ns;
    uint64_t rejected;         /* partialSuccess.rejectedSpans */
    int partial;               /* a 2xx with partialSuccess */
    char message[256];         /* curl error, partialSuccess message or start of the body */
};

typedef void (*transport_done_fn)(void *arg, struct batch *b, const struct send_result *r);

struct transport;

/* Returns 0 or -errno with err filled (e.g. an auth variable named in the
 * config but not set). */
int transport_new(struct transport **out, const struct export_config *cfg, char *err, size_t errlen);
void transport_free(struct transport *t);

/* Starts a request for b (its body must stay alive until done is called).
 * Returns 0, -EBUSY (every slot in flight), -ENOMEM. */
int transport_send(struct transport *t, struct batch *b);
unsigned transport_in_flight(const struct transport *t);
unsigned transport_slots(const struct transport *t);

/* Drives transfers; with timeout_ms > 0 first waits up to that long for
 * socket activity.  Calls done for each finished request. */
void transport_run(struct transport *t, int timeout_ms, transport_done_fn done, void *arg);

/* Connections opened so far (keep-alive reuse makes this small). */
uint64_t transport_connects(const struct transport *t);

#endif
