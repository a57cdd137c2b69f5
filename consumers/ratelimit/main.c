/* cbus-ratelimit: counts requests and tokens from the bus against RPM/TPM
 * rules and publishes throttle verdicts into the bus's admission table,
 * where producers read them with cbus_admit() in nanoseconds. */
#include <cbus/admit.h>
#include <cbus/bus.h>
#include <cbus/consumer.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"
#include "fleet.h"
#include "limiter.h"
#include "log.h"
#include "loop.h"
#include "ratelimit_config.h"
#include "sbuf.h"
#include "status.h"
#include "statuscmd.h"

#define BATCH 256
#define MS UINT64_C(1000000)

struct daemon {
    const char *bus_name;
    struct rl_config cfg;
    cbus_bus *bus;
    cbus_consumer *cons;      /* loop.at.c */
    struct cbus_loop loop;    /* polls, waits, follows the bus when it is re-created */
    unsigned writer;
    rl_limiter *l;
    rl_fleet *fleet;          /* [cluster]: fleet-wide buckets in Redis, or NULL */
    uint64_t last_lost;
    uint64_t last_fail;
    uint64_t last_ts;         /* the newest event's timestamp */
    int caught_up;            /* the last poll drained the ring */
};

static int publish(void *ctx, unsigned scope, uint64_t key_hash, const char *key,
                   unsigned verdict, uint64_t until)
{
    struct daemon *d = ctx;
    int r = cbus_admit_publish_hash(d->bus, d->writer, scope, key_hash, key, verdict, until);
    if (r)
        cbus_log_debug("publish %u/%s: %s", scope, key, cbus_strerror(r));
    return r;
}

static void write_status(struct daemon *d, uint64_t now)
{
    struct cbus_consumer_stats cs;
    memset(&cs, 0, sizeof cs);
    cbus_consumer_stats(d->cons, &cs);
    /* The common envelope (status.h), then the limiter and the fleet. */
    struct sbuf b;
    sbuf_init(&b);
    cbus_status_begin(&b, "cbus-ratelimit", &d->loop.at, 1);
    sbuf_puts(&b, "\"limiter\":");
    rl_status_json(d->l, &b, now, d->cfg.status_top);
    if (d->fleet) {
        sbuf_puts(&b, ",");
        rl_fleet_status_json(d->fleet, &b, now);
    }
    cbus_status_end(&b);
    int r = cbus_status_write(d->cfg.status_file, &b);
    if (r)
        cbus_log_warn("status file %s: %s", d->cfg.status_file, strerror(-r));
    if (cs.lost > d->last_lost) {
        cbus_log_warn("lost %llu events (lapped by producers): counts are low by as much",
                      (unsigned long long)(cs.lost - d->last_lost));
        d->last_lost = cs.lost;
    }
    struct rl_stats st;
    rl_get_stats(d->l, &st);
    if (st.publish_failed > d->last_fail) {
        cbus_log_warn("%llu verdicts could not be published (admission table full?)",
                      (unsigned long long)(st.publish_failed - d->last_fail));
        d->last_fail = st.publish_failed;
    }
    sbuf_free(&b);
}

/* attach.c found another bus at our name: our verdicts go with us. */
static void leaving_bus(void *arg, cbus_consumer *old)
{
    struct daemon *d = arg;
    (void)old;
    if (!d->loop.at.dead)
        cbus_admit_writer_release(d->bus, d->writer);
}

/* On the new bus: same counts (the traffic is the same), a new admission
 * writer; verdicts are published there as they change.  Returns 0 or 1
 * (no writer: stop, as at start). */
static int arrived_bus(void *arg)
{
    struct daemon *d = arg;
    d->cons = d->loop.at.c;
    d->bus = d->loop.at.bus;
    int r = cbus_admit_writer_register(d->bus, d->cfg.name, &d->writer);
    if (r) {
        cbus_log_error("admission writer %s on the new bus: %s", d->cfg.name, cbus_strerror(r));
        d->writer = CBUS_ADMIT_MAX_WRITERS; /* releasing it at exit is then a no-op */
        return 1;
    }
    return 0;
}

/* ---- the loop's hooks (consumers/daemon/loop.h) --------------------------- */

static int on_batch(void *arg, const struct cbus_event *ev, const struct cbus_body *bodies, int n,
                    uint64_t now)
{
    struct daemon *d = arg;
    (void)bodies;
    rl_feed_batch(d->l, ev, (size_t)n);
    if (n > 0) {
        d->last_ts = ev[n - 1].ts_mono_ns;
        rl_drain(d->l, now, publish, d); /* publish at once what changed */
    }
    d->caught_up = n < BATCH;
    return 0;
}

static int drain_timer(void *arg, uint64_t now) /* lapsed verdicts cleared */
{
    struct daemon *d = arg;
    rl_drain(d->l, now, publish, d);
    return 0;
}

static int on_heartbeat(void *arg, uint64_t now)
{
    struct daemon *d = arg;
    (void)now;
    int r = d->loop.at.dead ? 0 : cbus_admit_writer_heartbeat(d->bus, d->writer);
    if (r)
        cbus_log_warn("admission heartbeat: %s", cbus_strerror(r));
    return 0;
}

static int expire_timer(void *arg, uint64_t now)
{
    struct daemon *d = arg;
    /* Behind the ring, expire only what the events read so far allow:
     * a key dropped ahead of its backlog would lose its debt. */
    rl_expire(d->l, d->caught_up || d->last_ts == 0 ? now : d->last_ts);
    return 0;
}

static int fleet_timer(void *arg, uint64_t now) /* fleet.h: one round trip to Redis */
{
    struct daemon *d = arg;
    if (rl_fleet_sync(d->fleet, now) == 0)
        rl_drain(d->l, now, publish, d); /* the fleet's verdicts, at once */
    return 0;
}

static int status_timer(void *arg, uint64_t now)
{
    write_status(arg, now);
    return 0;
}

static int run(struct daemon *d)
{
    const struct cbus_shm_header *h = cbus_bus_header(d->bus);
    uint64_t hb_every = h->admit_stale_ns / 4;
    if (hb_every < MS)
        hb_every = MS;
    d->caught_up = 1;
    struct cbus_loop *l = &d->loop;
    l->on_batch = on_batch;
    l->on_heartbeat = on_heartbeat;
    l->on_arrived = arrived_bus;
    l->hb_every_ns = hb_every;
    l->max_wait_ns = hb_every < 100 * MS ? hb_every : 100 * MS;
    cbus_loop_every(l, 100 * MS, 0, drain_timer, 0);
    cbus_loop_every(l, 1000 * MS, 1000 * MS, expire_timer, 0);
    cbus_loop_every(l, d->cfg.status_interval_ns, 0, status_timer, 1);
    if (d->fleet)
        cbus_loop_every(l, cbus_cluster_tick_ns(&d->cfg.cluster), 0, fleet_timer, 0);
    return cbus_loop_run(l);
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: cbus-ratelimit --bus NAME [--config PATH] [--status-file PATH] [--verbose]\n"
            "       cbus-ratelimit --check --config PATH      validate the configuration\n"
            "       cbus-ratelimit status [--bus NAME] [--config PATH] [--status-file PATH]\n"
            "                             [--top N] [--json]  hottest keys and the admission table\n");
}

/* The command line, the config (--check stops there), the bus and the
 * status file.  Returns 0, or the exit status (-1: exit 0; logged). */
static int configure(struct daemon *d, int argc, char **argv, const char **config)
{
    const char *status_file = NULL;
    int check = 0;
    const struct cbus_daemon_opt own[] = {
        {"status-file", 's', &status_file, NULL},
        {"check", 'k', NULL, &check},
        {NULL, 0, NULL, NULL},
    };
    struct cbus_daemon_args args = {.prog = "cbus-ratelimit", .usage = usage, .opts = own};
    int r = cbus_daemon_args(&args, argc, argv);
    if (r >= 0)
        return r == 0 ? -1 : r;
    if (!args.config && check) {
        fprintf(stderr, "cbus-ratelimit: --check needs --config PATH\n");
        return 2;
    }
    *config = args.config ? args.config : RL_DEFAULT_CONFIG_PATH;
    char err[1024];
    if (rl_config_load(&d->cfg, *config, err, sizeof err)) {
        cbus_log_error("%s", err);
        return 2;
    }
    if (check) {
        printf("%s: %zu rules ok\n", *config, d->cfg.rules.count);
        return -1;
    }
    if (cbus_daemon_pick_bus(d->cfg.bus, sizeof d->cfg.bus, args.bus))
        return 2;
    d->bus_name = d->cfg.bus;
    if (status_file)
        snprintf(d->cfg.status_file, sizeof d->cfg.status_file, "%s", status_file);
    else if (!d->cfg.status_file[0] &&
             rl_default_status_path(d->cfg.status_file, sizeof d->cfg.status_file, d->bus_name)) {
        cbus_log_error("no state directory for the status file (set XDG_STATE_HOME or HOME, or "
                       "give status_file or --status-file)");
        return 2;
    }
    /* The status file's directory must be private: the daemon (often root)
     * replaces a file there every second (issue 12 item 16). */
    char why[8192];
    if (cbus_state_file_dir_prepare(d->cfg.status_file, 0700, why, sizeof why)) {
        cbus_log_error("status file %s: %s", d->cfg.status_file, why);
        return 1;
    }
    return 0;
}

/* The limiter and, with [cluster], the fleet.  Returns 0 or 1 (logged). */
static int open_limiter(struct daemon *d)
{
    int r = rl_new(&d->l, &d->cfg.rules, &d->cfg.opts);
    if (r) {
        cbus_log_error("limiter: %s", strerror(-r));
        return 1;
    }
    /* Redis is reached at the first sync: an unreachable one is a log
     * line and local limits, never a daemon that does not start. */
    if (d->cfg.cluster.enabled && (r = rl_fleet_open(&d->fleet, d->l, &d->cfg.cluster))) {
        cbus_log_error("cluster: %s", strerror(-r));
        return 1;
    }
    return 0;
}

/* On the bus: the consumer in the loop and the admission writer.
 * Returns 0 or 1 (logged). */
static int join_bus(struct daemon *d)
{
    struct cbus_consumer_opts co = {.name = d->cfg.name, .mode = CBUS_LOSSY, .start = CBUS_START_OLDEST};
    /* From the oldest event still in the ring: a restarted limiter rebuilds
     * its counts exactly (decisions use event timestamps), and verdicts that
     * have lapsed meanwhile are never published.  The daemons' resume
     * policy (attach.h): nothing saved, so case 3.  The consumer owns its
     * bus so that attach.c can move it to a re-created one. */
    int r = cbus_attach_start(&d->cons, &(struct cbus_attach_start){.bus = d->bus_name, .opts = co});
    if (r) {
        cbus_log_error("bus %s: attach as %s: %s", d->bus_name, d->cfg.name, cbus_strerror(r));
        return 1;
    }
    d->bus = cbus_consumer_bus(d->cons);
    if (cbus_loop_init(&d->loop, d->cons, d->bus_name, &co, BATCH, 0, d)) {
        cbus_log_error("out of memory");
        return 1;
    }
    d->loop.at.leaving = leaving_bus;
    d->loop.at.arg = d;
    r = cbus_admit_writer_register(d->bus, d->cfg.name, &d->writer);
    if (r) {
        cbus_log_error("admission writer %s: %s", d->cfg.name, cbus_strerror(r));
        return 1;
    }
    return 0;
}

static void log_started(const struct daemon *d, const char *config)
{
    cbus_log_info("started: bus %s, %zu rules from %s, writer %u, status %s%s", d->bus_name,
                  d->cfg.rules.count, config, d->writer, d->cfg.status_file,
                  d->cfg.opts.count_only ? ", count only" : "");
    if (!d->fleet)
        return;
    const struct cbus_cluster_conf *cc = &d->cfg.cluster;
    char addr[400];
    if (cc->unix_path[0])
        snprintf(addr, sizeof addr, "unix:%s", cc->unix_path);
    else
        snprintf(addr, sizeof addr, "%s:%u", cc->host, cc->port);
    cbus_log_info("fleet: node %s, redis %s, prefix %s, sync every %llu ms, local_share %g",
                  cc->node, addr, cc->prefix, (unsigned long long)(cc->interval_ns / MS),
                  cc->local_share);
}

/* After the loop: the fleet's last counts, the last status, our verdicts
 * taken off the bus. */
static void finish(struct daemon *d)
{
    if (d->fleet) { /* this node's last counts, if Redis answers within its timeout */
        const struct cbus_cluster_conf *cc = &d->cfg.cluster;
        uint64_t t = cbus_now_ns(), end = t + cc->timeout_ns + cc->interval_ns;
        while (rl_fleet_sync(d->fleet, t) == -EINPROGRESS && t < end) {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
            t = cbus_now_ns();
        }
    }
    write_status(d, cbus_now_ns());
    /* Our verdicts go with us: a limiter that stops cleanly leaves no throttle. */
    cbus_admit_writer_release(d->bus, d->writer);
    struct rl_stats st;
    rl_get_stats(d->l, &st);
    cbus_log_info("stopped: %llu events, %llu requests, %llu throttles, %llu over limit",
                  (unsigned long long)st.events, (unsigned long long)st.requests,
                  (unsigned long long)st.throttles, (unsigned long long)st.over_limit);
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "status"))
        return rl_status_main(argc - 1, argv + 1);
    static struct daemon d;
    const char *config = NULL;
    int rc = configure(&d, argc, argv, &config);
    if (rc == 0 && (rc = open_limiter(&d)) == 0 && (rc = join_bus(&d)) == 0) {
        log_started(&d, config);
        rc = run(&d);
        finish(&d);
    }
    cbus_loop_close(&d.loop); /* the consumer and its bus; nothing if never made */
    rl_fleet_close(d.fleet);
    rl_free(d.l);
    rl_config_free(&d.cfg);
    return rc < 0 ? 0 : rc;
}
