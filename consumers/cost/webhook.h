/* Budget alert webhooks: JSON POSTs via libcurl from a worker thread, so a
 * slow or dead endpoint never stalls event accounting.  Queue bounded
 * (alerts beyond it are counted as failed); each POST is tried up to 3 times
 * (connection errors, 429 and 5xx) within the configured timeout each. */
#ifndef CBUS_COST_WEBHOOK_H
#define CBUS_COST_WEBHOOK_H

#include <stdint.h>

struct cost_webhook;

/* Returns 0 or -errno (-ENOMEM, thread creation). */
int cost_webhook_start(struct cost_webhook **out, const char *url, uint64_t timeout_ns);
/* Queues body (copied).  Never blocks on the network. */
void cost_webhook_post(struct cost_webhook *w, const char *body);
/* Delivers what is queued (each bounded by the timeout), stops the thread,
 * frees.  NULL is a no-op. */
void cost_webhook_stop(struct cost_webhook *w);
void cost_webhook_counts(struct cost_webhook *w, uint64_t *sent, uint64_t *failed);

#endif
