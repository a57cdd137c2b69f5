/* One status document for every daemon (issue 18): the same envelope,
 * written the same way, read by one `cbusctl status` (tools/cbusctl/status.c).
 *
 *   {"daemon":"cbus-export",            which daemon
 *    "bus":"NAME","bus_id":"016x hex",  the bus it reads (now: it follows
 *                                       a re-created bus, attach.h)
 *    "pid":1234,
 *    "updated":"2026-12-03T12:00:00.123Z","updated_realtime_ns":N,
 *    "running":true,                    false in the last write at a clean stop
 *    "consumer":{"name":..,"mode":"lossless"|"lossy","consumed":N,"lost":N,
 *                "lag":N,"read_pos":N,"cursor":N,"tethered":bool,"reattached":N},
 *                                       read_pos: the next position to read;
 *                                       cursor: the committed (acknowledged)
 *                                       one, which lossless producers wait on
 *    "<own>":{...}}                     the daemon's own object ("export",
 *                                       "limiter", "audit", "cost"), and any
 *                                       further objects of its own
 *
 * consumer{} is this run's consumer as the bus counts it (cbus_consumer_stats);
 * a daemon that keeps totals across runs (cost) puts those in its own object.
 * Numbers are JSON integers; readers must ignore members they do not know. */
#ifndef CBUS_COMMON_STATUS_H
#define CBUS_COMMON_STATUS_H

#include "attach.h"
#include "sbuf.h"

/* Starts the document in b (reset first): the envelope up to and including
 * the comma before the daemon's own member.  at may be NULL (no consumer
 * yet: bus and consumer members are left out). */
void cbus_status_begin(struct sbuf *b, const char *daemon, const struct cbus_attach *at,
                       int running);
/* Closes the document ("}\n"). */
void cbus_status_end(struct sbuf *b);
/* Replaces path with b atomically (rename; not fsynced: rewritten every
 * interval).  Returns 0, -ENOMEM (b failed) or -errno. */
int cbus_status_write(const char *path, const struct sbuf *b);

#endif
