/* The daemons' status envelope: see status.h. */
#include "status.h"

#include <cbus/consumer.h>

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"

void cbus_status_begin(struct sbuf *b, const char *daemon, const struct cbus_attach *at,
                       int running)
{
    sbuf_reset(b);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[40];
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    sbuf_puts(b, "{\"daemon\":");
    sbuf_json_str(b, daemon, (size_t)-1);
    if (at && at->c) {
        sbuf_puts(b, ",\"bus\":");
        sbuf_json_str(b, at->bus_name, (size_t)-1);
        sbuf_printf(b, ",\"bus_id\":\"%016" PRIx64 "\"", at->bus_id);
    }
    sbuf_printf(b, ",\"pid\":%ld,\"updated\":\"%s.%03ldZ\",\"updated_realtime_ns\":%" PRIu64
                   ",\"running\":%s,",
                (long)getpid(), when, ts.tv_nsec / 1000000L,
                (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec,
                running ? "true" : "false");
    if (!at || !at->c)
        return;
    struct cbus_consumer_stats cs;
    memset(&cs, 0, sizeof cs);
    if (!at->dead)
        cbus_consumer_stats(at->c, &cs);
    sbuf_puts(b, "\"consumer\":{\"name\":");
    sbuf_json_str(b, at->name, (size_t)-1);
    sbuf_printf(b, ",\"mode\":\"%s\",\"consumed\":%" PRIu64 ",\"lost\":%" PRIu64
                   ",\"lag\":%" PRIu64 ",\"read_pos\":%" PRIu64 ",\"cursor\":%" PRIu64
                   ",\"tethered\":%s"
                   ",\"reattached\":%" PRIu64 "},",
                at->mode == CBUS_LOSSLESS ? "lossless" : "lossy", cs.consumed, cs.lost, cs.lag,
                cs.read_pos, cs.cursor, cs.tethered ? "true" : "false", at->reattached);
}

void cbus_status_end(struct sbuf *b)
{
    sbuf_puts(b, "}\n");
}

int cbus_status_write(const char *path, const struct sbuf *b)
{
    if (b->failed)
        return -ENOMEM;
    return cbus_replace_file(path, b->data, b->len, 0);
}
