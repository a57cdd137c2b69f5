/* cbus-history, the daemon: a lossless consumer on the common loop
 * (consumers/daemon/loop.h) that stores each poll batch in one SQLite
 * transaction together with the position past it (store.h). */
#include "history_daemon.h"

#include <cbus/bus.h>
#include <cbus/consumer.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "api.h"
#include "attach.h"
#include "daemon.h"
#include "history_config.h"
#include "ingest.h"
#include "log.h"
#include "loop.h"
#include "prices.h"
#include "status.h"
#include "store.h"

#define SEC UINT64_C(1000000000)
#define MS  UINT64_C(1000000)

struct hd {
    struct hist_config cfg;
    struct hist_store *st;
    struct cost_price_table *prices;
    struct cbus_loop loop;
    struct hist_api *api;
    uint64_t bus_id;
    uint64_t batches;
    /* a paused store: since when, and the error we said it for */
    uint64_t paused_since;
    uint64_t last_index_ns;   /* the search index's last catch-up step */
    int index_err;
    int to_index;             /* messages stored since the index last caught up */
    char status_path[HIST_PATH_MAX + 16];
    char api_url[160];
    const char *paused_why;   /* while paused: the reason, for the status file */
    char paused_msg[256];
    int paused_err;
    int stopping;
    const char *started_from;  /* where the first attach started (attach.h) */
};

static uint64_t real_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * SEC + (uint64_t)ts.tv_nsec;
}

static const char *why_of(int r)
{
    switch (r) {
    case -ENOSPC: return "disk full";
    case -EBUSY: return "store locked by another writer";
    case -EROFS: return "store read-only";
    case -ENOMEM: return "out of memory";
    case -EACCES: return "cannot open the store's files";
    default: return "I/O error";
    }
}

/* The status file (consumers/daemon/status.h): the common envelope, then
 * what the store holds and whether it is paused, and why. */
static void write_status(struct hd *d, int running)
{
    if (!d->status_path[0])
        return; /* [status] file = off */
    struct sbuf b;
    sbuf_init(&b);
    cbus_status_begin(&b, "cbus-history", d->loop.ev ? &d->loop.at : NULL, running);
    struct hist_counts hc;
    hist_store_counts(d->st, &hc);
    sbuf_puts(&b, "\"history\":{\"store\":");
    sbuf_json_str(&b, d->cfg.db, (size_t)-1);
    sbuf_printf(&b, ",\"events\":%llu,\"messages\":%llu,\"duplicates\":%llu,\"skipped\":%llu,"
                    "\"batches\":%llu,\"paused\":%s", (unsigned long long)hc.events,
                (unsigned long long)hc.messages, (unsigned long long)hc.duplicates,
                (unsigned long long)hc.skipped, (unsigned long long)d->batches,
                d->paused_since ? "true" : "false");
    if (d->paused_since) {
        sbuf_printf(&b, ",\"paused_s\":%.1f,\"paused_reason\":",
                    (double)(cbus_now_ns() - d->paused_since) / 1e9);
        sbuf_json_str(&b, d->paused_msg, (size_t)-1);
    }
    sbuf_puts(&b, ",\"api\":");
    if (d->api_url[0])
        sbuf_json_str(&b, d->api_url, (size_t)-1);
    else
        sbuf_puts(&b, "null");
    sbuf_puts(&b, "}");
    cbus_status_end(&b);
    int r = cbus_status_write(d->status_path, &b);
    if (r)
        cbus_log_warn("status file %s: %s", d->status_path, strerror(-r));
    sbuf_free(&b);
}

static int status_timer(void *arg, uint64_t now)
{
    (void)now;
    write_status(arg, 1);
    return 0;
}

/* Applies a batch and commits it with the position past it.  0 or -errno
 * (rolled back: nothing of the batch is stored). */
static int store_batch(struct hd *d, const struct cbus_event *ev, const struct cbus_body *bodies,
                       int n, const struct cbus_position *pos)
{
    int r = hist_store_begin(d->st);
    for (int i = 0; i < n && !r; i++) {
        r = hist_store_event(d->st, d->bus_id, &ev[i], bodies ? &bodies[i] : NULL);
        /* A batch of new conversations is CPU work (JSON, lookups) that a
         * loaded machine can stretch past a short stall timeout. */
        if ((i & 63) == 63)
            cbus_loop_busy(&d->loop);
    }
    /* The commit syncs the store (synchronous=FULL): seconds on a loaded
     * disk, during which the beat thread keeps us tethered (loop.h). */
    cbus_loop_slow_begin(&d->loop);
    if (!r)
        r = hist_store_commit(d->st, d->bus_id, pos);
    if (r)
        hist_store_rollback(d->st);
    cbus_loop_slow_end(&d->loop);
    return r;
}

/* The store refused the batch: pause.  We keep the batch (the loop polls
 * nothing more until this returns), keep heartbeating so the bus keeps us
 * tethered (producers wait their bound, then drop and count, as the bus's
 * rules say), and try again every second.  Nothing is lost: the batch is
 * stored whole once the disk has room, and a stop while paused leaves the
 * file's position before it, so the next start reads it again. */
static int pause_and_retry(struct hd *d, const struct cbus_event *ev,
                           const struct cbus_body *bodies, int n,
                           const struct cbus_position *pos, int r)
{
    uint64_t t0 = cbus_now_ns();
    for (;;) {
        if (r == -EBADMSG) {
            cbus_log_error("store %s is corrupt (%s): stopping", d->cfg.db,
                           hist_store_errmsg(d->st));
            return 1;
        }
        if (r != d->paused_err) {
            snprintf(d->paused_msg, sizeof d->paused_msg, "%s (%s)", why_of(r),
                     hist_store_errmsg(d->st));
            cbus_log_error("store %s: %s (%s): paused; a batch of %d events and all after it "
                           "wait on the bus (lossless, tethered); retrying every second", d->cfg.db, why_of(r),
                           hist_store_errmsg(d->st), n);
            d->paused_err = r;
        }
        if (!d->paused_since)
            d->paused_since = t0;
        write_status(d, 1); /* the loop's timers do not run while we hold the batch */
        for (int i = 0; i < 10; i++) {
            cbus_loop_busy(&d->loop);
            if (cbus_daemon_stop) {
                cbus_log_warn("stopping while paused: %d events not stored, read again at the "
                              "next start", n);
                d->stopping = 1;
                return 1;
            }
            struct timespec ts = {0, 100 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        r = store_batch(d, ev, bodies, n, pos);
        if (!r)
            break;
    }
    cbus_log_info("store %s: resumed after %.1f s paused; %d events stored", d->cfg.db,
                  (double)(cbus_now_ns() - d->paused_since) / 1e9, n);
    d->paused_since = 0;
    d->paused_err = 0;
    write_status(d, 1);
    return 0;
}

/* The search index catches up in steps of its own (store.h): when the bus
 * is drained, and at least every second while it is not. */
static void index_step(struct hd *d, uint64_t now, unsigned rows)
{
    uint64_t n = 0, left = 0;
    d->last_index_ns = now;
    if (!d->to_index)
        return;
    /* Its own transaction: a commit that syncs, kept tethered as a
     * batch's is (store_batch). */
    cbus_loop_slow_begin(&d->loop);
    int r = hist_store_index(d->st, rows, &n, &left);
    cbus_loop_slow_end(&d->loop);
    if (r && r != d->index_err)
        cbus_log_warn("search index: %s (%s); trying again later", why_of(r),
                      hist_store_errmsg(d->st));
    d->index_err = r;
    if (!r && left)
        cbus_loop_wake_at(&d->loop, now); /* more to do: come back at once if idle */
    else if (!r)
        d->to_index = 0;
}

static int on_batch(void *arg, const struct cbus_event *ev, const struct cbus_body *bodies, int n,
                    uint64_t now)
{
    struct hd *d = arg;
    if (n <= 0) {
        index_step(d, now, 4096);
        return 0;
    }
    if (now - d->last_index_ns > SEC)
        index_step(d, now, 2048);
    struct cbus_position pos;
    int r = cbus_consumer_position(d->loop.at.c, &pos);
    if (r) {
        cbus_log_error("consumer position: %s", cbus_strerror(r));
        return 1;
    }
    r = store_batch(d, ev, bodies, n, &pos);
    if (r && pause_and_retry(d, ev, bodies, n, &pos, r))
        return 1;
    d->batches++;
    d->to_index = 1;
    /* Durable first, then let producers overwrite. */
    r = cbus_consumer_commit_position(d->loop.at.c, &pos);
    if (r)
        cbus_log_warn("commit cursor: %s", cbus_strerror(r));
    return 0;
}

static int on_arrived(void *arg)
{
    struct hd *d = arg;
    d->bus_id = d->loop.at.bus_id;
    return 0;
}

static int retention_timer(void *arg, uint64_t now)
{
    struct hd *d = arg;
    (void)now;
    if (!d->cfg.max_age_ns)
        return 0;
    uint64_t rn = real_ns(), c = 0, m = 0;
    /* A delete that syncs, then a WAL checkpoint: slow on a loaded disk. */
    cbus_loop_slow_begin(&d->loop);
    int r = hist_store_expire(d->st, rn > d->cfg.max_age_ns ? rn - d->cfg.max_age_ns : 0, &c, &m);
    cbus_loop_slow_end(&d->loop);
    if (r)
        cbus_log_warn("retention: %s (%s); trying again later", why_of(r),
                      hist_store_errmsg(d->st));
    else if (c)
        cbus_log_info("retention: %llu conversations (%llu messages) idle longer than the "
                      "max_age removed", (unsigned long long)c, (unsigned long long)m);
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: cbus-history [--bus NAME] [--config PATH] [--db PATH] [--listen HOST:PORT]\n"
            "                    [--status-file PATH] [--verbose] the daemon (status: DB.status.json)\n"
            "       cbus-history COMMAND [--db PATH | --config PATH [--bus NAME]] ...\n"
            "  list [--user U] [--since T] [--limit N] [--json]\n"
            "  show CONV [--json]          the thread, with parent links\n"
            "  rename CONV TITLE\n"
            "  export CONV --json\n"
            "  search TEXT [--limit N] [--json]\n"
            "  expire --older-than DURATION\n"
            "  forget USER                 deletes every conversation of USER\n");
}

/* Attaches by the daemons' resume policy (attach.h): after the store's
 * position if it is this bus's, else from the new bus's oldest event
 * (the store keeps what it has), else [bus] start; waits for the bus.
 * Returns 0, 1 (stopped) or -errno. */
static int attach(struct hd *d, cbus_consumer **c)
{
    struct cbus_position saved;
    uint64_t saved_bus = 0;
    int have = hist_store_cursor(d->st, &saved_bus, &saved);
    if (have < 0 && have != -ENOENT) {
        cbus_log_error("store %s: cursor: %s", d->cfg.db, hist_store_errmsg(d->st));
        return have;
    }
    struct cbus_attach_start as = {
        .bus = d->cfg.bus,
        .opts = {.name = d->cfg.consumer, .mode = CBUS_LOSSLESS, .start = d->cfg.start,
                 .kinds = hist_needed_kinds()},
        .saved = have == 0 ? &saved : NULL,
        .saved_bus_id = saved_bus,
        .wait_for_bus = 1,
    };
    int r = cbus_attach_start(c, &as);
    if (r == 0)
        d->started_from = cbus_attach_start_name(&as);
    return r;
}

/* The command line and the config: 0, or the exit status (logged). */
static int configure(struct hd *d, int argc, char **argv)
{
    const char *db = NULL, *listen_at = NULL, *status = NULL;
    const struct cbus_daemon_opt own[] = {
        {"db", 'd', &db, NULL},
        {"listen", 'l', &listen_at, NULL},
        {"status-file", 's', &status, NULL},
        {NULL, 0, NULL, NULL},
    };
    struct cbus_daemon_args args = {.prog = "cbus-history", .usage = usage, .opts = own};
    int r = cbus_daemon_args(&args, argc, argv);
    if (r >= 0)
        return r == 0 ? -1 : r;
    char err[1024];
    if (hist_config_load(&d->cfg, args.config, err, sizeof err)) {
        cbus_log_error("%s", err);
        return 2;
    }
    if (cbus_daemon_pick_bus(d->cfg.bus, sizeof d->cfg.bus, args.bus))
        return 2;
    if (db && snprintf(d->cfg.db, sizeof d->cfg.db, "%s", db) >= (int)sizeof d->cfg.db) {
        cbus_log_error("--db: path too long");
        return 2;
    }
    if (listen_at) {
        const char *why;
        if (hist_parse_listen(listen_at, d->cfg.http_host, sizeof d->cfg.http_host,
                              &d->cfg.http_port, &why)) {
            cbus_log_error("--listen %s: %s", listen_at, why);
            return 2;
        }
    }
    if (hist_config_finish(&d->cfg)) {
        cbus_log_error("[store] path: too long once the bus name is in");
        return 2;
    }
    /* The status file: --status-file, else [status] file, else beside the
     * store; "off" in either place: none. */
    if (status)
        d->cfg.status_off = !strcmp(status, "off");
    const char *sf = status ? status : d->cfg.status_file;
    int n = d->cfg.status_off ? 0
            : sf[0]           ? snprintf(d->status_path, sizeof d->status_path, "%s", sf)
                              : snprintf(d->status_path, sizeof d->status_path, "%s.status.json",
                                         d->cfg.db);
    if (n < 0 || (size_t)n >= sizeof d->status_path) {
        cbus_log_error("status file: path too long");
        return 2;
    }
    return 0;
}

/* The store's directory (and the status file's), the prices, the store.
 * Returns 0 or the exit status (logged). */
static int open_files(struct hd *d)
{
    /* Private or refused: the store holds people's conversations.  Its
     * files (and SQLite's -wal and -shm beside it) are ours alone. */
    umask(077);
    char why[8192], err[1024];
    if (cbus_state_file_dir_prepare(d->cfg.db, 0700, why, sizeof why)) {
        cbus_log_error("%s", why);
        return 1;
    }
    if (d->status_path[0] &&
        cbus_state_file_dir_prepare(d->status_path, 0700, why, sizeof why)) {
        cbus_log_error("status file %s: %s", d->status_path, why);
        return 1;
    }
    if (d->cfg.prices[0] &&
        cost_prices_load(&d->prices, d->cfg.prices,
                         d->cfg.prices_overrides[0] ? d->cfg.prices_overrides : NULL, err,
                         sizeof err)) {
        cbus_log_error("%s", err);
        return 2;
    }
    int r = hist_store_open(&d->st, d->cfg.db, d->cfg.fsync ? HIST_STORE_FSYNC : 0, err, sizeof err);
    if (r) {
        cbus_log_error("store %s", err);
        return 1;
    }
    hist_store_set_prices(d->st, d->prices);
    return 0;
}

/* The HTTP API, when [http] listen says so.  Returns 0 or the exit status. */
static int start_api(struct hd *d)
{
    if (!d->cfg.http_host[0])
        return 0;
    /* Loopback only, but conversations are private: another local user
     * can reach loopback, so a token is the way to keep them out. */
    const char *token = getenv("CBUS_HISTORY_TOKEN");
    if (token && !*token)
        token = NULL;
    if (token && (strlen(token) < 16 || strlen(token) > 255)) {
        cbus_log_error("CBUS_HISTORY_TOKEN: want 16 to 255 characters");
        return 2;
    }
    if (!token)
        cbus_log_warn("HTTP API without a token: every local user can read the "
                      "conversations (set CBUS_HISTORY_TOKEN)");
    char err[1024];
    int r = hist_api_start(&d->api, d->cfg.db, d->cfg.http_host, d->cfg.http_port, token, err,
                           sizeof err);
    if (r) {
        cbus_log_error("HTTP API %s:%u: %s", d->cfg.http_host, d->cfg.http_port, err);
        return 1;
    }
    snprintf(d->api_url, sizeof d->api_url, "http://%.63s:%u/v1/conversations",
             d->cfg.http_host, hist_api_port(d->api));
    return 0;
}

/* The loop until a signal, then the last status.  Returns the exit status. */
static int run(struct hd *d)
{
    struct hist_counts hc;
    hist_store_counts(d->st, &hc);
    cbus_log_info("started: bus %s (id %016llx) as lossless consumer %s from %s; store %s (%llu "
                  "messages, %llu events so far); %zu prices; API %s; status %s", d->cfg.bus,
                  (unsigned long long)d->bus_id, d->cfg.consumer, d->started_from, d->cfg.db,
                  (unsigned long long)hc.messages, (unsigned long long)hc.events,
                  d->prices ? cost_prices_count(d->prices) : 0,
                  d->api_url[0] ? d->api_url : "off", d->status_path[0] ? d->status_path : "off");
    struct cbus_loop *l = &d->loop;
    l->on_batch = on_batch;
    l->on_arrived = on_arrived;
    if (d->cfg.max_age_ns)
        cbus_loop_every(l, d->cfg.retention_every_ns, 0, retention_timer, 0);
    if (d->status_path[0]) /* SIGUSR1 writes it at once */
        cbus_loop_every(l, d->cfg.status_interval_ns, 0, status_timer, 1);
    int rc = cbus_loop_run(l);
    if (d->stopping)
        rc = 0;
    hist_store_counts(d->st, &hc);
    cbus_log_info("stopping: %llu messages stored (%llu duplicates refused, %llu events without "
                  "a conversation)", (unsigned long long)hc.messages,
                  (unsigned long long)hc.duplicates, (unsigned long long)hc.skipped);
    write_status(d, 0);
    return rc;
}

int hist_daemon_main(int argc, char **argv)
{
    static struct hd dd;
    struct hd *d = &dd;
    memset(d, 0, sizeof *d);
    int rc = configure(d, argc, argv);
    if (rc)
        return rc < 0 ? 0 : rc;
    if ((rc = open_files(d)))
        goto out;
    cbus_consumer *c = NULL;
    int r = attach(d, &c);
    if (r) {
        if (r != 1)
            cbus_log_error("attach to bus %s as %s: %s", d->cfg.bus, d->cfg.consumer,
                           cbus_strerror(r));
        rc = r == 1 ? 0 : 1;
        goto out;
    }
    struct cbus_consumer_opts ao = {.name = d->cfg.consumer, .mode = CBUS_LOSSLESS,
                                   .kinds = hist_needed_kinds()};
    if (cbus_loop_init(&d->loop, c, d->cfg.bus, &ao, (unsigned)d->cfg.batch, 1, d)) {
        cbus_log_error("out of memory");
        rc = 1;
        goto out;
    }
    d->bus_id = d->loop.at.bus_id;
    d->to_index = 1; /* what an earlier run left unindexed */
    if ((rc = start_api(d)) == 0)
        rc = run(d);
out:
    hist_api_stop(d->api);
    cbus_loop_close(&d->loop); /* the consumer and its bus (loop_init owns it even on failure) */
    hist_store_close(d->st);
    cost_prices_free(d->prices);
    return rc;
}
