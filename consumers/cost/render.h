/* Outputs of the ledger: the JSON snapshot (what `cbus-cost report` reads)
 * and the Prometheus text exposition (textfile collector and /metrics). */
#ifndef CBUS_COST_RENDER_H
#define CBUS_COST_RENDER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ledger.h"
#include "sbuf.h"

struct cost_render_info {
    const char *bus;               /* may be NULL */
    uint64_t bus_id;
    long pid;
    uint64_t now_realtime_ns;
    size_t max_sessions;           /* sessions in the snapshot, highest cost first */
    int prom_users;                /* per-user Prometheus series */
    uint64_t checkpoint_cursor;    /* cursor of the last durable checkpoint */
    uint64_t consumed, lag;        /* from cbus_consumer_stats(): this run */
    uint64_t lost, abandoned;      /* since the first run (checkpointed) */
    int tethered;
    uint64_t alerts, webhook_sent, webhook_failed;
    uint64_t prices_loaded;
};

void cost_render_json(struct sbuf *b, const struct cost_ledger *l, const struct cost_render_info *ri);
void cost_render_prom(struct sbuf *b, const struct cost_ledger *l, const struct cost_render_info *ri);

/* "2026-11-24T03:00:00Z" for a realtime ns value. */
void cost_format_time(char *out, size_t len, uint64_t realtime_ns);

#endif
