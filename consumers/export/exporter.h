/* The export pipeline, independent of the bus: events in, HTTP requests out.
 *
 *   feed(event) -> spans (OTLP) or raw events (msgpack) -> current batch
 *   batch full or old -> finished batch -> deliver:
 *       endpoint healthy, spool empty:  a free request slot, else the memory
 *                                       queue (reading pauses while it holds
 *                                       queue_batches: back-pressure on the ring)
 *       otherwise:                      the spool (order is kept: the spool
 *                                       drains, one request at a time, before
 *                                       anything newer is sent)
 *   answer 2xx: done (partialSuccess counted); 429/502/503/504/connection
 *   failure: the batch goes (back) to the spool head's place and is retried
 *   after Retry-After or an exponential backoff with jitter; other answers:
 *   dropped and counted.
 *
 * Acknowledgement: exporter_floor() is the lowest ring position whose data
 * is not yet durable (delivered, or fsynced in the disk spool).  A lossless
 * exporter commits its bus cursor there and nowhere further, so a SIGKILL
 * loses nothing it acknowledged: on restart it reads the rest again.
 */
#ifndef CBUS_EXPORT_EXPORTER_H
#define CBUS_EXPORT_EXPORTER_H

#include <stdint.h>

#include <cbus/consumer.h>
#include <cbus/layout.h>

#include "export_config.h"
#include "sbuf.h"

struct exporter_stats {
    uint64_t events;             /* read from the bus */
    uint64_t items;              /* spans / events put in batches */
    uint64_t batches;            /* built */
    uint64_t body_bytes;         /* built, before compression */
    uint64_t requests;           /* HTTP requests made */
    uint64_t sent_batches;       /* acknowledged 2xx */
    uint64_t sent_items;
    uint64_t sent_bytes;         /* bodies as sent (compressed when gzip) */
    uint64_t retried;            /* answers worth retrying (429/5xx/connection) */
    uint64_t rejected_batches;   /* final failures: dropped */
    uint64_t rejected_items;
    uint64_t partial_batches;    /* 2xx with partialSuccess */
    uint64_t partial_rejected;   /* rejectedSpans summed */
    uint64_t spooled;            /* batches put in the spool */
    uint64_t replayed;           /* batches delivered from the spool */
    uint64_t spool_dropped_batches; /* oldest dropped when the spool was full */
    uint64_t spool_dropped_items;
    uint64_t spool_errors;       /* spool writes that failed */
    long last_status;
};

struct exporter;

struct exporter_identity {
    const char *bus_name;
    uint64_t bus_id;
    const char *host_name;
    uint32_t pid;
};

int exporter_new(struct exporter **out, const struct export_config *cfg,
                 const struct exporter_identity *id, char *err, size_t errlen);
void exporter_free(struct exporter *x);

/* One event, at monotonic time now_ns. */
void exporter_feed(struct exporter *x, const struct cbus_event *ev, uint64_t now_ns);
/* The same with its body (cbus_consumer_poll_bodies; NULL: none), which
 * need only live for the call. */
void exporter_feed_body(struct exporter *x, const struct cbus_event *ev, const struct cbus_body *body,
                        uint64_t now_ns);
/* 1 when the exporter uses bodies (content capture, or a profile that sends
 * tags and metadata): poll with cbus_consumer_poll_bodies and feed them. */
int exporter_wants_bodies(const struct exporter *x);
/* Timers and transfers: batch age, run timeout, retries.  hold: open runs
 * holding a lane position below hold->pos[lane] are exported unfinished (a
 * lossless exporter must not hold the ring); NULL = no such limit. */
void exporter_tick(struct exporter *x, uint64_t now_ns, const struct cbus_position *hold);
/* Waits up to timeout_ms on the network when requests are in flight, then
 * handles what finished.  Returns 1 if it waited, 0 if nothing is in flight. */
int exporter_wait(struct exporter *x, int timeout_ms);
/* Monotonic time of the next timer (batch age, retry), or UINT64_MAX. */
uint64_t exporter_next_deadline(const struct exporter *x);
/* Closes the batch being built now, whatever its size or age (a lossless
 * exporter does this when unacknowledged events fill much of the ring:
 * waiting for the batch age would stall the producers). */
void exporter_flush(struct exporter *x);
/* The bus was re-created (consumers/daemon/attach.c): closes the batch
 * being built and stamps later batches with the new bus id (event ids are
 * unique per bus id only). */
void exporter_set_bus_id(struct exporter *x, uint64_t bus_id);
/* The bus's lane count (default 1): how event ids split into lane and lane
 * position (id = lane position * lanes + lane).  Set before feeding. */
void exporter_set_lanes(struct exporter *x, unsigned lanes);
/* Lowest ring position not yet durable, given the next position to read
 * (one-lane bus). */
uint64_t exporter_floor(const struct exporter *x, uint64_t read_pos);
/* The same in every lane: out->pos[L] is the lowest lane position of lane L
 * not yet durable, given the read position read (cbus_consumer_position).
 * A position of another lane count than the exporter's is copied as it is. */
void exporter_floor_position(const struct exporter *x, const struct cbus_position *read,
                             struct cbus_position *out);
/* 1 while the exporter should not read the ring: queue_batches finished
 * batches wait for a request slot, or (lossless) the spool is over its limit. */
int exporter_paused(const struct exporter *x);
/* Shutdown: exports open runs as unfinished, sends what it can until
 * deadline_ns (monotonic), spools the rest.  Returns batches left undelivered
 * in a memory spool (lost). */
size_t exporter_shutdown(struct exporter *x, uint64_t deadline_ns);

const struct exporter_stats *exporter_stats(const struct exporter *x);
/* The counters as one JSON object (the status file). */
void exporter_status_json(const struct exporter *x, struct sbuf *b);
/* 1 when there is nothing in memory, in flight or spooled. */
int exporter_idle(const struct exporter *x);

#endif
