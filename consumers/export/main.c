/* cbus-export: ships bus events to OTLP/HTTP collectors (OpenTelemetry
 * Collector, Langfuse, Jaeger, Tempo: OTLP/JSON) or any HTTP endpoint that
 * takes msgpack.  See docs/export.md. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cbus/bus.h>
#include <cbus/consumer.h>

#include "attach.h"
#include "daemon.h"
#include "export_config.h"
#include "exporter.h"
#include "log.h"
#include "redact.h"
#include "sbuf.h"

#define POLL_MAX 256

static struct cbus_event evbuf[POLL_MAX];
static struct cbus_body bodies[POLL_MAX];

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
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

static void write_status(const struct export_config *cfg, struct exporter *x, cbus_consumer *c,
                         int final)
{
    struct sbuf b;
    sbuf_init(&b);
    struct cbus_consumer_stats cs;
    memset(&cs, 0, sizeof cs);
    if (c)
        cbus_consumer_stats(c, &cs);
    sbuf_printf(&b,
                "{\"daemon\":\"cbus-export\",\"pid\":%d,\"running\":%s,\"bus\":{\"consumed\":%" PRIu64
                ",\"lost\":%" PRIu64 ",\"lag\":%" PRIu64 ",\"cursor\":%" PRIu64 ",\"tethered\":%d},\"export\":",
                (int)getpid(), final ? "false" : "true", cs.consumed, cs.lost, cs.lag, cs.cursor, cs.tethered);
    exporter_status_json(x, &b);
    sbuf_puts(&b, "}\n");
    if (cfg->status_file[0] && !b.failed) {
        int r = cbus_replace_file(cfg->status_file, b.data, b.len, 0);
        if (r)
            cbus_log_warn("status file %s: %s", cfg->status_file, strerror(-r));
    }
    sbuf_free(&b);
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
 * on later batches, its positions (nothing committed there yet). */
static void follow(const struct cbus_attach *at, struct exporter *x, cbus_consumer **c,
                   uint64_t *capacity, struct exporter_identity *id,
                   struct cbus_position *committed)
{
    *c = at->c;
    *capacity = cbus_bus_lane_capacity(cbus_consumer_bus(*c));
    id->bus_id = at->bus_id;
    exporter_set_bus_id(x, id->bus_id);
    exporter_set_lanes(x, cbus_bus_lanes(cbus_consumer_bus(*c)));
    cbus_consumer_position(*c, committed); /* where it starts: nothing to commit below */
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

int main(int argc, char **argv)
{
    static const struct option lo[] = {{"bus", 1, 0, 'b'},         {"config", 1, 0, 'c'},
                                       {"endpoint", 1, 0, 'e'},    {"status-file", 1, 0, 's'},
                                       {"check", 0, 0, 'k'},       {"verbose", 0, 0, 'v'},
                                       {"help", 0, 0, 'h'},        {0, 0, 0, 0}};
    const char *bus = NULL, *config = NULL, *endpoint = NULL, *status = NULL;
    int check = 0, verbose = 0, ch;
    while ((ch = getopt_long(argc, argv, "b:c:h", lo, NULL)) != -1) {
        switch (ch) {
        case 'b': bus = optarg; break;
        case 'c': config = optarg; break;
        case 'e': endpoint = optarg; break;
        case 's': status = optarg; break;
        case 'k': check = 1; break;
        case 'v': verbose = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }
    cbus_log_init("cbus-export", verbose ? CBUS_LOG_DEBUG : CBUS_LOG_INFO);

    struct export_config cfg;
    char err[512] = "";
    export_config_defaults(&cfg);
    if (config && export_config_load(&cfg, config, err, sizeof err)) {
        cbus_log_error("%s", err);
        export_config_free(&cfg);
        return 2;
    }
    if (bus) {
        if (cbus_name_valid(bus) || strlen(bus) >= sizeof cfg.bus) {
            cbus_log_error("--bus: '%s' is not a bus name", bus);
            return 2;
        }
        snprintf(cfg.bus, sizeof cfg.bus, "%s", bus);
    }
    if (endpoint) {
        if (strncmp(endpoint, "http://", 7) && strncmp(endpoint, "https://", 8)) {
            char shown[CBUS_REDACT_SIZE(256)];
            cbus_log_error("--endpoint: '%s' is not an http:// or https:// URL",
                           cbus_redact_url(shown, sizeof shown, endpoint));
            return 2;
        }
        snprintf(cfg.endpoint, sizeof cfg.endpoint, "%s", endpoint);
    }
    if (status)
        snprintf(cfg.status_file, sizeof cfg.status_file, "%s", status);
    if (export_config_finish(&cfg, err, sizeof err)) {
        cbus_log_error("%s%s%s", config ? config : "", config ? ": " : "", err);
        export_config_free(&cfg);
        return 2;
    }
    if (check) {
        char shown[CBUS_REDACT_SIZE(sizeof cfg.url)];
        printf("%s: valid (endpoint %s, format %s)\n", config ? config : "defaults",
               cbus_redact_url(shown, sizeof shown, cfg.url),
               cfg.format == EXPORT_MSGPACK ? "msgpack" : cfg.otlp_encoding ? "otlp protobuf" : "otlp json");
        export_config_free(&cfg);
        return 0;
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
    uint64_t saved_bus = 0;
    struct cbus_position saved;
    if (cfg.start == CBUS_START_RESUME && cursor_load(&cfg, &saved_bus, &saved) == 0) {
        /* a clean stop left its position: continue there if the bus is the same */
        co.start = CBUS_START_CURSOR;
        co.position = &saved;
        co.expect_bus_id = saved_bus;
    }
    cbus_consumer *c = NULL;
    int r = cbus_consumer_attach(&c, cfg.bus, &co);
    if (r == -ESTALE) {
        cbus_log_info("bus '%s' was recreated since the saved cursor: starting at its newest event", cfg.bus);
        co.start = CBUS_START_NEWEST;
        r = cbus_consumer_attach(&c, cfg.bus, &co);
    }
    if (r == -EINVAL && co.start == CBUS_START_CURSOR) {
        /* the same bus id with another lane count: a damaged file */
        cbus_log_warn("the saved cursor has %u lanes, bus '%s' another count: starting at its "
                      "newest event", saved.lanes, cfg.bus);
        co.start = CBUS_START_NEWEST;
        r = cbus_consumer_attach(&c, cfg.bus, &co);
    }
    if (r) {
        cbus_log_error("attach to bus '%s' as '%s': %s", cfg.bus, cfg.consumer_name, cbus_strerror(r));
        export_config_free(&cfg);
        return 1;
    }
    cursor_forget(&cfg);
    /* Positions are per lane (issue 13): the acknowledgement floor, the hold
     * limit and the saved cursor are one word per lane, each against one
     * lane's ring. */
    uint64_t capacity = cbus_bus_lane_capacity(cbus_consumer_bus(c));
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    struct exporter_identity id = {.bus_name = cfg.bus,
                                   .bus_id = cbus_consumer_bus_id(c),
                                   .host_name = host,
                                   .pid = (uint32_t)getpid()};
    struct exporter *x = NULL;
    r = exporter_new(&x, &cfg, &id, err, sizeof err);
    if (r) {
        cbus_log_error("%s", err);
        cbus_consumer_detach(c);
        export_config_free(&cfg);
        return r == -EINVAL ? 2 : 1;
    }
    exporter_set_lanes(x, cbus_bus_lanes(cbus_consumer_bus(c)));
    char shown_url[CBUS_REDACT_SIZE(sizeof cfg.url)]; /* credentials stay out of logs */
    cbus_redact_url(shown_url, sizeof shown_url, cfg.url);
    cbus_log_info("started: bus %s (%u lane%s) as %s (%s, from %s), %s to %s%s, batches of %" PRIu64
                  " / %" PRIu64 " ms, %" PRIu64 " in flight, spool %s (%" PRIu64 " bytes)",
                  cfg.bus, cbus_bus_lanes(cbus_consumer_bus(c)),
                  cbus_bus_lanes(cbus_consumer_bus(c)) == 1 ? "" : "s", cfg.consumer_name,
                  cfg.lossless ? "lossless" : "lossy",
                  co.start == CBUS_START_CURSOR ? "the saved cursor"
                  : co.start == CBUS_START_RESUME ? "its last cursor or the newest event"
                  : co.start == CBUS_START_OLDEST ? "the oldest event" : "the newest event",
                  cfg.format == EXPORT_MSGPACK ? "msgpack" : cfg.otlp_encoding ? "OTLP/protobuf" : "OTLP/JSON", shown_url, cfg.gzip ? " gzip" : "",
                  cfg.batch_max_items, cfg.batch_max_age_ns / 1000000, cfg.max_in_flight,
                  cfg.spool_dir[0] ? cfg.spool_dir : "in memory", cfg.spool_limit);

    uint64_t next_status = 0;
    struct cbus_position committed;
    cbus_consumer_position(c, &committed); /* nothing below the start to commit */
    int exit_code = 0;
    void *body_buf = NULL;
    size_t body_cap = 0;
    struct cbus_attach at = {0};
    cbus_attach_init(&at, c, cfg.bus, &co, 0);
    while (!cbus_daemon_stop) {
        uint64_t now = mono_ns();
        int paused = exporter_paused(x);
        int n = 0;
        /* Removed, re-created or truncated under us: follow it (attach.c).
         * Open runs and batches of the old bus go on; later batches carry
         * the new bus id. */
        int a = cbus_attach_check(&at, 0);
        if (at.c != c)
            follow(&at, x, &c, &capacity, &id, &committed);
        if (!paused) {
            if (a < 0) {
                n = a;
            } else if (exporter_wants_bodies(x)) {
                /* content capture, tags, metadata: bodies too, into a
                 * buffer of a few body limits (never less than one) */
                size_t need = 4 * (size_t)cbus_bus_body_limit(cbus_consumer_bus(c)) + 4096;
                if (need > body_cap) {
                    void *nb = realloc(body_buf, need);
                    if (nb) {
                        body_buf = nb;
                        body_cap = need;
                    }
                }
                n = cbus_consumer_poll_bodies(c, evbuf, bodies, POLL_MAX, body_buf, body_cap);
            } else {
                n = cbus_consumer_poll(c, evbuf, POLL_MAX);
            }
            if (n == -ESTALE && a == 0) {
                a = cbus_attach_check(&at, 1);
                if (at.c != c)
                    follow(&at, x, &c, &capacity, &id, &committed);
                if (a == 1 || (a == 0 && at.dead))
                    n = 0;
            }
            if (n < 0) {
                cbus_log_error("poll: %s (evicted or bus removed)", cbus_strerror(n));
                exit_code = 1;
                break;
            }
            for (int i = 0; i < n; i++)
                exporter_feed_body(x, &evbuf[i], exporter_wants_bodies(x) ? &bodies[i] : NULL, now);
        } else {
            cbus_consumer_heartbeat(c);
        }
        struct cbus_position read, hold, floor;
        cbus_consumer_position(c, &read);
        /* a lossless consumer must not hold more than half a lane's ring in
         * open runs (each lane is gated on its own) */
        hold = read;
        for (unsigned L = 0; L < read.lanes; L++)
            hold.pos[L] = cfg.lossless && read.pos[L] > capacity / 2 ? read.pos[L] - capacity / 2 : 0;
        exporter_tick(x, now, &hold);
        exporter_floor_position(x, &read, &floor);
        int pressed = 0;
        for (unsigned L = 0; L < read.lanes; L++)
            pressed |= read.pos[L] - floor.pos[L] >= capacity / 4;
        if (cfg.lossless && n < POLL_MAX && pressed) {
            /* caught up with a quarter of a lane unacknowledged: producers
             * are about to wait on us, so ship the partial batch now */
            exporter_flush(x);
            exporter_floor_position(x, &read, &floor);
        }
        /* Lossy: the floor is the read position (nothing waits on it).
         * Words behind the cursor (positions poll skipped) stay as they are. */
        if (!position_covers(&committed, &floor) &&
            cbus_consumer_commit_position(c, &floor) == 0)
            for (unsigned L = 0; L < floor.lanes; L++)
                if (floor.pos[L] > committed.pos[L] || committed.lanes != floor.lanes)
                    committed.pos[L] = floor.pos[L];
        committed.lanes = floor.lanes;
        if (cfg.status_file[0] && now >= next_status) {
            write_status(&cfg, x, c, 0);
            next_status = now + cfg.status_interval_ns;
        }
        if (cbus_daemon_usr1) {
            cbus_daemon_usr1 = 0;
            log_counters(x, "counters");
        }
        if (n == POLL_MAX)
            continue;
        /* idle: sleep until data, a timer, or network activity */
        uint64_t deadline = exporter_next_deadline(x);
        uint64_t wait_ns = 100000000ull;
        if (deadline != UINT64_MAX)
            wait_ns = deadline > now ? deadline - now : 0;
        if (wait_ns > 100000000ull)
            wait_ns = 100000000ull;
        if (n > 0 && wait_ns > 1000000ull)
            wait_ns = 1000000ull; /* a trickle: look again soon, batch by age */
        int ms = (int)(wait_ns / 1000000);
        if (exporter_wait(x, ms < 5 ? (ms ? ms : 1) : 5))
            continue;
        if (paused) {
            struct timespec nap = {0, 5000000};
            nanosleep(&nap, NULL);
        } else if (n == 0 && wait_ns) {
            r = cbus_attach_wait(&at, wait_ns);
            if (r == -ESTALE) {
                cbus_log_error("evicted from the bus");
                exit_code = 1;
                break;
            }
        }
    }

    cbus_log_info("stopping: flushing (up to %" PRIu64 " ms)", cfg.shutdown_timeout_ns / 1000000);
    size_t lost = exporter_shutdown(x, mono_ns() + cfg.shutdown_timeout_ns);
    if (lost)
        cbus_log_warn("%zu undelivered batches were in the memory spool and are lost (set [spool] dir)", lost);
    struct cbus_position read, floor;
    cbus_consumer_position(c, &read);
    exporter_floor_position(x, &read, &floor);
    cbus_consumer_commit_position(c, &floor);
    /* The saved position: the floor, but never below what was committed
     * (a lane's cursor never moves back). */
    for (unsigned L = 0; L < floor.lanes && committed.lanes == floor.lanes; L++)
        if (committed.pos[L] > floor.pos[L])
            floor.pos[L] = committed.pos[L];
    cursor_save(&cfg, id.bus_id, &floor);
    write_status(&cfg, x, c, 1);
    log_counters(x, "stopped");
    exporter_free(x);
    cbus_consumer_detach(c);
    export_config_free(&cfg);
    free(body_buf);
    return exit_code;
}
