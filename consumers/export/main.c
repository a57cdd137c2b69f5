/* cbus-export: ships bus events to OTLP/HTTP collectors (OpenTelemetry
 * Collector, Langfuse, Jaeger, Tempo: OTLP/JSON) or any HTTP endpoint that
 * takes msgpack.  See docs/export.md. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cbus/bus.h>
#include <cbus/consumer.h>

#include <cbus/cbus.h>

#include "attach.h"
#include "loop.h"
#include "daemon.h"
#include "export_config.h"
#include "exporter.h"
#include "log.h"
#include "redact.h"
#include "sbuf.h"
#include "status.h"

#define POLL_MAX 256
#define NET_WAIT_MAX_MS 5   /* longest network wait before looking at the bus again */
#define PAUSED_NAP_NS 5000000u

/* The daemon's state beside the loop (consumers/daemon/loop.h): the loop
 * polls, waits and follows the bus; the exporter builds, sends and spools. */
struct export_daemon {
    const struct export_config *cfg;
    struct exporter *x;
    struct cbus_loop loop;          /* owns the consumer (loop.at.c) */
    uint64_t capacity;              /* one lane's ring, of the bus we are on */
    struct exporter_identity id;
    struct cbus_position committed; /* what the bus has as our cursor */
    int last_n;                     /* events in the last batch */
};

/* The status file: the common envelope (status.h), then "export". */
static void write_status(struct export_daemon *d, int final)
{
    if (!d->cfg->status_file[0])
        return;
    struct sbuf b;
    sbuf_init(&b);
    cbus_status_begin(&b, "cbus-export", &d->loop.at, !final);
    sbuf_puts(&b, "\"export\":");
    exporter_status_json(d->x, &b);
    cbus_status_end(&b);
    int r = cbus_status_write(d->cfg->status_file, &b);
    if (r)
        cbus_log_warn("status file %s: %s", d->cfg->status_file, strerror(-r));
    sbuf_free(&b);
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: cbus-export --bus NAME [--config PATH] [options]\n"
            "  --bus NAME          bus to read (overrides [bus] name)\n"
            "  --config PATH       INI config (default: built-in defaults; see export.ini)\n"
            "  --endpoint URL      overrides [export] endpoint\n"
            "  --status-file PATH  overrides [status] file (counters as JSON, rewritten every interval)\n"
            "  --check             validate the config and exit (0 = valid, 2 = not)\n"
            "  --verbose           debug logging\n"
            "Signals: SIGTERM/SIGINT stop (flushing what it can), SIGUSR1 logs the counters.\n");
}

/* The position saved at a clean stop (DIR/cursor), so that a restart
 * continues where the last run stopped.  After a crash there is no file and
 * CBUS_START_RESUME takes the dead consumer's cursor instead.  One line:
 * "BUS_ID CURSOR" on a one-lane bus (as before lanes); on N lanes
 * "BUS_ID SUM N P0 ... P(N-1)", the lane positions and their sum. */
static int cursor_path(const struct export_config *cfg, char *out, size_t cap)
{
    if (!cfg->spool_dir[0])
        return -ENOENT;
    int n = snprintf(out, cap, "%s/cursor", cfg->spool_dir);
    return n > 0 && (size_t)n < cap ? 0 : -ENAMETOOLONG;
}

static int cursor_load(const struct export_config *cfg, uint64_t *bus_id, struct cbus_position *pos)
{
    char path[600];
    if (cursor_path(cfg, path, sizeof path))
        return -ENOENT;
    FILE *f = fopen(path, "r");
    if (!f)
        return -errno;
    unsigned long long b, c, n, w;
    int ok = fscanf(f, "%llu %llu", &b, &c) == 2;
    memset(pos, 0, sizeof *pos);
    pos->lanes = 1;
    pos->pos[0] = c;
    if (ok && fscanf(f, "%llu", &n) == 1) {
        /* several lanes: the words must be a lane count's worth and add up */
        ok = n >= 1 && n <= CBUS_MAX_LANES && !(n & (n - 1));
        unsigned long long sum = 0;
        for (unsigned L = 0; ok && L < n; L++) {
            ok = fscanf(f, "%llu", &w) == 1;
            pos->pos[L] = w;
            sum += w;
        }
        ok = ok && sum == c;
        pos->lanes = (uint32_t)n;
    }
    fclose(f);
    if (!ok)
        return -EBADMSG;
    *bus_id = b;
    return 0;
}

/* The saved cursor is used once: a later crash must not rewind to it. */
static void cursor_forget(const struct export_config *cfg)
{
    char path[600];
    if (cursor_path(cfg, path, sizeof path) == 0)
        unlink(path);
}

static void cursor_save(const struct export_config *cfg, uint64_t bus_id,
                        const struct cbus_position *pos)
{
    char path[600], text[64 + 21 * CBUS_MAX_LANES];
    if (cursor_path(cfg, path, sizeof path))
        return;
    unsigned long long sum = 0;
    for (unsigned L = 0; L < pos->lanes; L++)
        sum += pos->pos[L];
    int n = snprintf(text, sizeof text, "%llu %llu", (unsigned long long)bus_id, sum);
    if (pos->lanes > 1) {
        n += snprintf(text + n, sizeof text - (size_t)n, " %u", pos->lanes);
        for (unsigned L = 0; L < pos->lanes; L++)
            n += snprintf(text + n, sizeof text - (size_t)n, " %llu",
                          (unsigned long long)pos->pos[L]);
    }
    n += snprintf(text + n, sizeof text - (size_t)n, "\n");
    int r = cbus_write_file_atomic(path, text, (size_t)n);
    if (r)
        cbus_log_warn("saving the cursor in %s: %s", path, strerror(-r));
}

static void log_counters(struct exporter *x, const char *what)
{
    const struct exporter_stats *s = exporter_stats(x);
    cbus_log_info("%s: events %" PRIu64 ", items %" PRIu64 ", sent %" PRIu64 " items in %" PRIu64
                  " batches (%" PRIu64 " bytes), retried %" PRIu64 ", spooled %" PRIu64 ", replayed %" PRIu64
                  ", rejected %" PRIu64 " batches, spool dropped %" PRIu64 " batches",
                  what, s->events, s->items, s->sent_items, s->sent_batches, s->sent_bytes, s->retried,
                  s->spooled, s->replayed, s->rejected_batches, s->spool_dropped_batches);
}

/* attach.c moved us to a new bus: its lane capacity and lane count, its id
 * on later batches, its positions (nothing committed there yet).  Open runs
 * and batches of the old bus go on. */
static int arrived_bus(void *arg)
{
    struct export_daemon *d = arg;
    cbus_consumer *c = d->loop.at.c;
    d->capacity = cbus_bus_lane_capacity(cbus_consumer_bus(c));
    d->id.bus_id = d->loop.at.bus_id;
    exporter_set_bus_id(d->x, d->id.bus_id);
    exporter_set_lanes(d->x, cbus_bus_lanes(cbus_consumer_bus(c)));
    cbus_consumer_position(c, &d->committed); /* where it starts: nothing to commit below */
    return 0;
}

/* Every lane of a behind b or equal. */
static int position_covers(const struct cbus_position *a, const struct cbus_position *b)
{
    if (a->lanes != b->lanes)
        return 0;
    for (unsigned L = 0; L < a->lanes; L++)
        if (a->pos[L] < b->pos[L])
            return 0;
    return 1;
}

/* Moves the bus cursor up to what the exporter has made durable: every
 * lane to its floor (lossy: the read position; nothing waits on it).  A
 * lossless exporter caught up with a quarter of a lane unacknowledged ships
 * its partial batch now: producers are about to wait on us. */
static void acknowledge(struct export_daemon *d, int n, uint64_t now)
{
    cbus_consumer *c = d->loop.at.c;
    struct cbus_position read, hold, floor;
    cbus_consumer_position(c, &read);
    /* a lossless consumer must not hold more than half a lane's ring in
     * open runs (each lane is gated on its own) */
    hold = read;
    for (unsigned L = 0; L < read.lanes; L++)
        hold.pos[L] = d->cfg->lossless && read.pos[L] > d->capacity / 2
                          ? read.pos[L] - d->capacity / 2 : 0;
    exporter_tick(d->x, now, &hold);
    exporter_floor_position(d->x, &read, &floor);
    int pressed = 0;
    for (unsigned L = 0; L < read.lanes; L++)
        pressed |= read.pos[L] - floor.pos[L] >= d->capacity / 4;
    if (d->cfg->lossless && n < POLL_MAX && pressed) {
        exporter_flush(d->x);
        exporter_floor_position(d->x, &read, &floor);
    }
    /* Words behind the cursor (positions poll skipped) stay as they are. */
    struct cbus_position *cm = &d->committed;
    if (!position_covers(cm, &floor) && cbus_consumer_commit_position(c, &floor) == 0)
        for (unsigned L = 0; L < floor.lanes; L++)
            if (floor.pos[L] > cm->pos[L] || cm->lanes != floor.lanes)
                cm->pos[L] = floor.pos[L];
    cm->lanes = floor.lanes;
}

/* ---- the loop's hooks ------------------------------------------------------ */

static int on_batch(void *arg, const struct cbus_event *ev, const struct cbus_body *bodies, int n,
                    uint64_t now)
{
    struct export_daemon *d = arg;
    for (int i = 0; i < n; i++)
        exporter_feed_body(d->x, &ev[i], bodies ? &bodies[i] : NULL, now);
    acknowledge(d, n, now);
    uint64_t deadline = exporter_next_deadline(d->x);
    if (deadline != UINT64_MAX)
        cbus_loop_wake_at(&d->loop, deadline); /* batch age, retry */
    d->last_n = n;
    /* Queue or spool full: stop reading, stay alive on the bus. */
    d->loop.no_poll = exporter_paused(d->x);
    if (d->loop.no_poll)
        cbus_loop_busy(&d->loop);
    return 0;
}

/* A trickle of events (a batch, not a full one): give the network a
 * moment before polling again, as batches close by age. */
static int before_sleep(void *arg, uint64_t now)
{
    struct export_daemon *d = arg;
    (void)now;
    if (d->last_n > 0 && d->last_n < POLL_MAX)
        exporter_wait(d->x, 1);
    return 0;
}

/* Idle: the network while requests are in flight (a few ms at a time, so
 * the bus is looked at again soon), a nap while paused, else the bus wait. */
static int io_wait(void *arg, uint64_t max_ns)
{
    struct export_daemon *d = arg;
    int ms = (int)(max_ns / 1000000);
    if (exporter_wait(d->x, ms < NET_WAIT_MAX_MS ? (ms ? ms : 1) : NET_WAIT_MAX_MS))
        return 1;
    if (d->loop.no_poll) {
        struct timespec nap = {0, PAUSED_NAP_NS};
        nanosleep(&nap, NULL);
        return 1;
    }
    return 0;
}

static int status_timer(void *arg, uint64_t now)
{
    struct export_daemon *d = arg;
    (void)now;
    write_status(d, 0);
    return 0;
}

static int counters_timer(void *arg, uint64_t now)
{
    struct export_daemon *d = arg;
    (void)now;
    log_counters(d->x, "counters");
    return 0;
}

/* ---- start and stop --------------------------------------------------------- */

/* Parses the command line into cfg.  Returns -1 to go on, else the exit
 * status (--help, --check, an error: logged). */
static int configure(int argc, char **argv, struct export_config *cfg)
{
    const char *endpoint = NULL, *status = NULL;
    int check = 0;
    const struct cbus_daemon_opt own[] = {
        {"endpoint", 0, &endpoint, NULL},
        {"status-file", 0, &status, NULL},
        {"check", 0, NULL, &check},
        {NULL, 0, NULL, NULL},
    };
    struct cbus_daemon_args args = {.prog = "cbus-export", .usage = usage, .opts = own};
    int r = cbus_daemon_args(&args, argc, argv);
    if (r >= 0)
        return r;
    const char *bus = args.bus, *config = args.config;
    char err[512] = "";
    export_config_defaults(cfg);
    if (config && export_config_load(cfg, config, err, sizeof err)) {
        cbus_log_error("%s", err);
        return 2;
    }
    if (bus) {
        if (cbus_name_valid(bus) || strlen(bus) >= sizeof cfg->bus) {
            cbus_log_error("--bus: '%s' is not a bus name", bus);
            return 2;
        }
        snprintf(cfg->bus, sizeof cfg->bus, "%s", bus);
    }
    if (endpoint) {
        if (strncmp(endpoint, "http://", 7) && strncmp(endpoint, "https://", 8)) {
            char shown[CBUS_REDACT_SIZE(256)];
            cbus_log_error("--endpoint: '%s' is not an http:// or https:// URL",
                           cbus_redact_url(shown, sizeof shown, endpoint));
            return 2;
        }
        snprintf(cfg->endpoint, sizeof cfg->endpoint, "%s", endpoint);
    }
    if (status)
        snprintf(cfg->status_file, sizeof cfg->status_file, "%s", status);
    if (export_config_finish(cfg, err, sizeof err)) {
        cbus_log_error("%s%s%s", config ? config : "", config ? ": " : "", err);
        return 2;
    }
    if (check) {
        char shown[CBUS_REDACT_SIZE(sizeof cfg->url)];
        printf("%s: valid (endpoint %s, format %s)\n", config ? config : "defaults",
               cbus_redact_url(shown, sizeof shown, cfg->url),
               cfg->format == EXPORT_MSGPACK ? "msgpack"
               : cfg->otlp_encoding          ? "otlp protobuf"
                                             : "otlp json");
        return 0;
    }
    return -1;
}

/* Attaches by the daemons' resume policy (consumers/daemon/attach.h):
 * where the last clean stop left off (DIR/cursor) if it is this bus's; from
 * the oldest event of a bus re-created since (or of another lane count); else
 * [bus] start.  co->start says where it started.  Returns 0 or -errno
 * (logged). */
static int attach_start(const struct export_config *cfg, struct cbus_consumer_opts *co,
                        cbus_consumer **c)
{
    static struct cbus_position saved;
    struct cbus_attach_start as = {.bus = cfg->bus, .opts = *co};
    /* a clean stop left its position (only read when [bus] start = resume) */
    if (cfg->start == CBUS_START_RESUME && cursor_load(cfg, &as.saved_bus_id, &saved) == 0)
        as.saved = &saved;
    int r = cbus_attach_start(c, &as);
    if (r) {
        cbus_log_error("attach to bus '%s' as '%s': %s", cfg->bus, cfg->consumer_name,
                       cbus_strerror(r));
        return r;
    }
    co->start = as.started;
    cursor_forget(cfg);
    return 0;
}

static void log_started(const struct export_config *cfg, cbus_consumer *c, unsigned start)
{
    char shown_url[CBUS_REDACT_SIZE(sizeof cfg->url)]; /* credentials stay out of logs */
    cbus_redact_url(shown_url, sizeof shown_url, cfg->url);
    unsigned lanes = cbus_bus_lanes(cbus_consumer_bus(c));
    cbus_log_info("started: bus %s (%u lane%s) as %s (%s, from %s), %s to %s%s, batches of %" PRIu64
                  " / %" PRIu64 " ms, %" PRIu64 " in flight, spool %s (%" PRIu64 " bytes)",
                  cfg->bus, lanes, lanes == 1 ? "" : "s", cfg->consumer_name,
                  cfg->lossless ? "lossless" : "lossy",
                  start == CBUS_START_CURSOR ? "the saved cursor"
                  : start == CBUS_START_RESUME ? "its last cursor or the newest event"
                  : start == CBUS_START_OLDEST ? "the oldest event" : "the newest event",
                  cfg->format == EXPORT_MSGPACK ? "msgpack"
                  : cfg->otlp_encoding          ? "OTLP/protobuf"
                                                : "OTLP/JSON",
                  shown_url, cfg->gzip ? " gzip" : "", cfg->batch_max_items,
                  cfg->batch_max_age_ns / 1000000, cfg->max_in_flight,
                  cfg->spool_dir[0] ? cfg->spool_dir : "in memory", cfg->spool_limit);
}

/* Flushes what it can in the shutdown time, commits the floor and saves it
 * as the cursor the next start continues from. */
static void shut_down(struct export_daemon *d)
{
    const struct export_config *cfg = d->cfg;
    cbus_consumer *c = d->loop.at.c;
    cbus_log_info("stopping: flushing (up to %" PRIu64 " ms)", cfg->shutdown_timeout_ns / 1000000);
    size_t lost = exporter_shutdown(d->x, cbus_now_ns() + cfg->shutdown_timeout_ns);
    if (lost)
        cbus_log_warn("%zu undelivered batches were in the memory spool and are lost (set [spool] "
                      "dir)", lost);
    struct cbus_position read, floor;
    cbus_consumer_position(c, &read);
    exporter_floor_position(d->x, &read, &floor);
    cbus_consumer_commit_position(c, &floor);
    /* The saved position: the floor, but never below what was committed
     * (a lane's cursor never moves back). */
    for (unsigned L = 0; L < floor.lanes && d->committed.lanes == floor.lanes; L++)
        if (d->committed.pos[L] > floor.pos[L])
            floor.pos[L] = d->committed.pos[L];
    cursor_save(cfg, d->id.bus_id, &floor);
    write_status(d, 1);
    log_counters(d->x, "stopped");
}

/* The exporter and the loop on consumer c (taken), until a signal.
 * Returns the exit status. */
static int run(const struct export_config *cfg, cbus_consumer *c,
               const struct cbus_consumer_opts *co)
{
    static struct export_daemon d;
    char host[256] = "", err[512] = "";
    gethostname(host, sizeof host - 1);
    d = (struct export_daemon){.cfg = cfg,
                               .capacity = cbus_bus_lane_capacity(cbus_consumer_bus(c)),
                               .id = {.bus_name = cfg->bus, .bus_id = cbus_consumer_bus_id(c),
                                      .host_name = host, .pid = (uint32_t)getpid()}};
    int r = exporter_new(&d.x, cfg, &d.id, err, sizeof err);
    if (r) {
        cbus_log_error("%s", err);
        cbus_consumer_detach(c);
        return r == -EINVAL ? 2 : 1;
    }
    exporter_set_lanes(d.x, cbus_bus_lanes(cbus_consumer_bus(c)));
    log_started(cfg, c, co->start);
    cbus_consumer_position(c, &d.committed); /* nothing below the start to commit */
    if (cbus_loop_init(&d.loop, c, cfg->bus, co, POLL_MAX, exporter_wants_bodies(d.x), &d)) {
        cbus_log_error("out of memory");
        exporter_free(d.x);
        return 1;
    }
    struct cbus_loop *l = &d.loop;
    l->on_batch = on_batch;
    l->on_arrived = arrived_bus;
    l->before_sleep = before_sleep;
    l->io_wait = io_wait;
    l->no_poll = exporter_paused(d.x);
    if (cfg->status_file[0])
        cbus_loop_every(l, cfg->status_interval_ns, 0, status_timer, 0);
    cbus_loop_every(l, 0, 0, counters_timer, 1);
    int exit_code = cbus_loop_run(l);
    shut_down(&d);
    exporter_free(d.x);
    cbus_loop_close(l);
    return exit_code;
}

int main(int argc, char **argv)
{
    static struct export_config cfg;
    int rc = configure(argc, argv, &cfg);
    if (rc >= 0) {
        export_config_free(&cfg);
        return rc;
    }
    /* The spool and the status file live in private directories or not at
     * all: the exporter often runs as root (issue 12 item 16). */
    char why[8192];
    if ((cfg.spool_dir[0] && cbus_state_dir_prepare(cfg.spool_dir, 0700, why, sizeof why)) ||
        (cfg.status_file[0] && cbus_state_file_dir_prepare(cfg.status_file, 0700, why, sizeof why))) {
        cbus_log_error("%s", why);
        export_config_free(&cfg);
        return 1;
    }
    cbus_daemon_signals();
    struct cbus_consumer_opts co = {.name = cfg.consumer_name,
                                    .mode = cfg.lossless ? CBUS_LOSSLESS : CBUS_LOSSY,
                                    .start = cfg.start};
    cbus_consumer *c = NULL;
    if (attach_start(&cfg, &co, &c)) {
        export_config_free(&cfg);
        return 1;
    }
    rc = run(&cfg, c, &co);
    export_config_free(&cfg);
    return rc;
}
