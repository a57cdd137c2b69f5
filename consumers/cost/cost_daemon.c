#include "cost_daemon.h"

#include <cbus/admit.h>
#include <cbus/bus.h>
#include <cbus/consumer.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "loop.h"
#include "checkpoint.h"
#include "cost_config.h"
#include "daemon.h"
#include "errlimit.h"
#include "fleet_cost.h"
#include "http.h"
#include "ledger.h"
#include "log.h"
#include "prices.h"
#include "redact.h"
#include "render.h"
#include "sbuf.h"
#include "status.h"
#include "webhook.h"

#define BATCH 512
#define SEC   UINT64_C(1000000000)

struct daemon {
    struct cost_config cfg;
    struct cost_price_table *prices;
    struct cost_ledger led;
    cbus_consumer *c;         /* loop.at.c: the consumer attach.c follows the bus with */
    cbus_bus *bus;            /* borrowed from the consumer */
    struct cbus_loop loop;    /* polls, waits, heartbeats, follows the bus (loop.h) */
    uint64_t next_ckpt, last_ckpt; /* the interval checkpoint, the last one */
    uint64_t capacity;        /* of the bus we are on */
    unsigned writer;
    int have_writer;
    uint64_t bus_id;
    struct cost_webhook *hook;
    struct cost_http *http;
    uint64_t alerts;
    uint64_t ckpt_cursor;     /* cursor of the last durable checkpoint */
    /* lost / abandoned counted by earlier runs (from the checkpoint): the
     * consumer's own counters start at 0 at every attach. */
    uint64_t lost_base, abandoned_base;
    /* This consumer's own counts when last read: folded into the bases when
     * attach.c moves us to a new bus (a new consumer starts from 0). */
    uint64_t run_lost, run_abandoned;
    /* One line per run of identical failures, not one per retry. */
    struct cost_errlimit snap_err, prom_err, ckpt_err, commit_err;
    char ckpt_path[COST_PATH_MAX + 32];
    char snap_path[COST_PATH_MAX + 32];
    char status_path[COST_PATH_MAX + 32]; /* the status envelope (status.h) */
    int stopped;              /* the loop has returned: status says running false */
    struct sbuf ckbuf, json, prom;
    cost_fleet *fleet;        /* [cluster]: budgets fleet-wide through Redis, or NULL */
    int fleet_alerting;       /* on_alert is called by fleet_cost.c for a mark it claimed */
    const char *started_from; /* where the first attach started (attach.h) */
};

static uint64_t real_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * SEC + (uint64_t)ts.tv_nsec;
}

/* The admission scope of a budget's verdicts, or -1: the admission table
 * has no agent or tenant scope (layout.h), so those budgets alert (log,
 * webhook, outputs) but publish no verdict. */
static int admit_scope(unsigned scope)
{
    switch (scope) {
    case COST_SCOPE_GLOBAL: return CBUS_SCOPE_GLOBAL;
    case COST_SCOPE_USER: return CBUS_SCOPE_USER;
    case COST_SCOPE_SESSION: return CBUS_SCOPE_SESSION;
    case COST_SCOPE_AGENT: return CBUS_SCOPE_AGENT;
    case COST_SCOPE_TENANT: return CBUS_SCOPE_TENANT;
    default: return -1;
    }
}

/* Verdict lapses at the end of the period on the bus's clock, so even a
 * daemon that stalls past midnight does not keep a user blocked. */
static uint64_t verdict_until(const struct cost_budget *b, uint64_t period_end_day)
{
    if (!b->period_days || period_end_day == 0 || period_end_day == UINT64_MAX)
        return 0;
    uint64_t end = period_end_day * COST_DAY_NS, now = real_ns();
    uint64_t left = end > now ? end - now : SEC;
    return cbus_now_ns() + left;
}

static void publish_verdict(struct daemon *d, unsigned scope, const char *key, uint64_t key_hash,
                            unsigned verdict, uint64_t until)
{
    int as = admit_scope(scope);
    if (!d->have_writer || as < 0)
        return;
    /* Keyed by the whole value's hash, as producers look it up
     * (producer/emit.c set_key); key, the shown field, is for display. */
    int r = cbus_admit_publish_hash(d->bus, d->writer, (unsigned)as, key_hash, key, verdict,
                                    until);
    if (r) {
        char k[CBUS_HUMAN_MAX(64)];
        cbus_human_str(k, sizeof k, key, 64);
        cbus_log_error("admission verdict for %s %s: %s", cost_scope_name(scope), k,
                       cbus_strerror(r));
    }
}

static void on_alert(void *arg, const struct cost_alert *a)
{
    struct daemon *d = arg;
    /* In a fleet the ledger's crossings are this node's spend alone: the
     * fleet's crossings (fleet_cost.c) alert instead, once for the fleet.
     * A new period still clears what this node published. */
    if (d->fleet && !d->fleet_alerting && a->kind != COST_ALERT_RESET)
        return;
    char spent[64], limit[64], start[32], end[32];
    cost_pico_format_usd(spent, sizeof spent, a->spent_pico);
    cost_pico_format_usd(limit, sizeof limit, a->limit_pico);
    cost_format_time(start, sizeof start, a->period_start_day * COST_DAY_NS);
    if (a->period_end_day == UINT64_MAX)
        snprintf(end, sizeof end, "never");
    else
        cost_format_time(end, sizeof end, a->period_end_day * COST_DAY_NS);
    const char *scope = cost_scope_name(a->scope);
    /* The key is a producer's string: escaped for the log (the webhook's
     * JSON has its own escaping and gets the exact key). */
    char key[CBUS_HUMAN_MAX(64)];
    cbus_human_str(key, sizeof key, a->key, 64);
    static const char *const kinds[] = {"threshold", "soft_budget", "budget_exceeded",
                                        "budget_reset"};
    char period[16];
    if (a->budget->period_days)
        snprintf(period, sizeof period, "%ud", a->budget->period_days);
    else
        snprintf(period, sizeof period, "none");
    switch (a->kind) {
    case COST_ALERT_THRESHOLD:
    case COST_ALERT_SOFT:
        cbus_log_warn("budget %s %s: %s %u%% reached: spent %s of %s USD (period %s from %s)",
                      scope, key, a->kind == COST_ALERT_SOFT ? "soft budget" : "threshold",
                      a->pct, spent, limit, period, start);
        break;
    case COST_ALERT_EXCEEDED:
        if (admit_scope(a->scope) < 0)
            cbus_log_warn("budget %s %s: EXCEEDED: spent %s of %s USD (period %s from %s); "
                          "no admission scope for %ss: alert only", scope, key, spent, limit,
                          period, start, scope);
        else
            cbus_log_warn("budget %s %s: EXCEEDED: spent %s of %s USD (period %s from %s); "
                          "admission verdict published until %s", scope, key, spent, limit,
                          period, start, end);
        publish_verdict(d, a->scope, a->admit_key, a->admit_hash, CBUS_BUDGET_EXCEEDED,
                        verdict_until(a->budget, a->period_end_day));
        break;
    case COST_ALERT_RESET:
        cbus_log_info("budget %s %s: new period, verdict cleared (previous period spent %s USD)",
                      scope, key, spent);
        publish_verdict(d, a->scope, a->admit_key, a->admit_hash, CBUS_ALLOW, 0);
        break;
    }
    d->alerts++;
    if (d->hook) {
        struct sbuf b;
        sbuf_init(&b);
        sbuf_printf(&b, "{\"source\":\"cbus-cost\",\"event\":\"%s\",\"scope\":\"%s\",\"who\":",
                    kinds[a->kind], scope);
        sbuf_json_str(&b, a->key, (size_t)-1);
        sbuf_printf(&b, ",\"threshold_pct\":%u,\"spent_usd\":%s,\"limit_usd\":%s,"
                        "\"period\":\"%s\",\"period_start\":\"%s\",\"period_end\":\"%s\",\"bus\":",
                    a->pct, spent, limit, period, start, end);
        sbuf_json_str(&b, d->cfg.bus, (size_t)-1);
        sbuf_puts(&b, "}");
        if (!b.failed)
            cost_webhook_post(d->hook, b.data);
        sbuf_free(&b);
    }
}

/* fleet_cost.c's hooks: a mark this node claimed for the fleet, and a
 * verdict every node publishes once the fleet's spend reaches a limit. */
static void fleet_alert(void *arg, const struct cost_alert *a)
{
    struct daemon *d = arg;
    d->fleet_alerting = 1;
    on_alert(d, a);
    d->fleet_alerting = 0;
}

static void fleet_verdict(void *arg, unsigned scope, const char *key, uint64_t key_hash,
                          unsigned verdict, uint64_t until_ns)
{
    publish_verdict(arg, scope, key, key_hash, verdict, until_ns);
}

static void on_unpriced(void *arg, const char *provider, const char *model, const char *why)
{
    (void)arg;
    char pv[CBUS_HUMAN_MAX(CBUS_PROVIDER_LEN)], md[CBUS_HUMAN_MAX(CBUS_MODEL_LEN)];
    cbus_human_str(pv, sizeof pv, provider, CBUS_PROVIDER_LEN);
    cbus_human_str(md, sizeof md, model, CBUS_MODEL_LEN);
    cbus_log_warn("model %s%s%s: %s; counted as unpriced (tokens tracked, no cost)",
                  pv, *pv ? "/" : "", md, why);
}

static void republish(void *arg, unsigned scope, const char *key, uint64_t key_hash,
                      const struct cost_budget_state *st, const struct cost_budget *b)
{
    struct daemon *d = arg;
    publish_verdict(d, scope, key, key_hash, CBUS_BUDGET_EXCEEDED,
                    verdict_until(b, st->period_end_day));
}

/* After a restart the admission table may still hold verdicts this writer
 * published before it died; the checkpoint is the truth: clear the rest. */
static void reconcile_verdicts(struct daemon *d)
{
    const struct cbus_shm_header *h = cbus_bus_header(d->bus);
    for (unsigned i = 0; i < h->admission_entries; i++) {
        const struct cbus_admit_entry *e = cbus_admit_entry_at(d->bus, i);
        if (!e || !atomic_load_explicit(&e->key_hash, memory_order_acquire))
            continue;
        uint32_t w = atomic_load_explicit(&e->word, memory_order_acquire);
        if ((w >> 16) != d->writer || (w & 0xff) != CBUS_BUDGET_EXCEEDED)
            continue;
        cbus_admit_clear_at(d->bus, d->writer, i);
    }
    cost_ledger_each_exceeded(&d->led, republish, d);
}

static void render_info(struct daemon *d, struct cost_render_info *ri)
{
    memset(ri, 0, sizeof *ri);
    ri->bus = d->cfg.bus;
    ri->bus_id = d->bus_id;
    ri->pid = (long)getpid();
    ri->now_realtime_ns = real_ns();
    ri->max_sessions = d->cfg.snapshot_max_sessions;
    ri->prom_users = d->cfg.prom_users;
    ri->checkpoint_cursor = d->ckpt_cursor;
    ri->alerts = d->alerts;
    ri->prices_loaded = cost_prices_count(d->prices);
    cost_webhook_counts(d->hook, &ri->webhook_sent, &ri->webhook_failed);
    struct cbus_consumer_stats cs;
    ri->lost = d->lost_base;
    ri->abandoned = d->abandoned_base;
    if (d->c && cbus_consumer_stats(d->c, &cs) == 0) {
        ri->consumed = cs.consumed;
        ri->lost = d->lost_base + cs.lost;
        ri->abandoned = d->abandoned_base + cs.abandoned;
        d->run_lost = cs.lost;
        d->run_abandoned = cs.abandoned;
        ri->lag = cs.lag;
        ri->tethered = cs.tethered;
    }
}

/* The status file: the common envelope (status.h), then "cost" (the
 * totals across runs; the snapshot beside it has the ledger). */
static void write_status(struct daemon *d, const struct cost_render_info *ri, uint64_t now)
{
    struct sbuf b;
    sbuf_init(&b);
    cbus_status_begin(&b, "cbus-cost", &d->loop.at, !d->stopped);
    sbuf_printf(&b, "\"cost\":{\"events\":%llu,\"cursor\":%llu,\"checkpoint_cursor\":%llu,"
                    "\"lost\":%llu,\"abandoned\":%llu,\"alerts\":%llu,\"webhook_sent\":%llu,"
                    "\"webhook_failed\":%llu,\"prices\":%llu,\"snapshot\":",
                (unsigned long long)d->led.events, (unsigned long long)d->led.cursor,
                (unsigned long long)ri->checkpoint_cursor, (unsigned long long)ri->lost,
                (unsigned long long)ri->abandoned, (unsigned long long)ri->alerts,
                (unsigned long long)ri->webhook_sent, (unsigned long long)ri->webhook_failed,
                (unsigned long long)ri->prices_loaded);
    sbuf_json_str(&b, d->snap_path, (size_t)-1);
    sbuf_puts(&b, "}");
    cbus_status_end(&b);
    int r = d->status_path[0] ? cbus_status_write(d->status_path, &b) : 0;
    if (r)
        cost_errlimit_fail(&d->snap_err, now, "%s: %s", d->status_path, strerror(-r));
    sbuf_free(&b);
}

static void write_outputs(struct daemon *d)
{
    struct cost_render_info ri;
    render_info(d, &ri);
    sbuf_reset(&d->json);
    cost_render_json(&d->json, &d->led, &ri);
    sbuf_reset(&d->prom);
    cost_render_prom(&d->prom, &d->led, &ri);
    if (d->fleet) {
        cost_fleet_json(d->fleet, &d->json, cbus_now_ns());
        cost_fleet_prom(d->fleet, &d->prom, cbus_now_ns());
    }
    if (d->json.failed || d->prom.failed) {
        cbus_log_error("rendering outputs: out of memory");
        return;
    }
    /* Regenerated every interval: atomic (rename) but not fsync'ed; a write
     * can still block on a disk that is flushing, hence the slow section. */
    uint64_t now = cbus_now_ns();
    cbus_loop_slow_begin(&d->loop);
    int r = cost_write_file(d->snap_path, d->json.data, d->json.len, 0);
    if (r)
        cost_errlimit_fail(&d->snap_err, now, "%s: %s", d->snap_path, strerror(-r));
    else
        cost_errlimit_ok(&d->snap_err, now);
    if (d->cfg.prom_textfile[0]) {
        r = cost_write_file(d->cfg.prom_textfile, d->prom.data, d->prom.len, 0);
        if (r)
            cost_errlimit_fail(&d->prom_err, now, "%s: %s", d->cfg.prom_textfile, strerror(-r));
        else
            cost_errlimit_ok(&d->prom_err, now);
    }
    if (d->http)
        cost_http_publish(d->http, d->prom.data, d->prom.len, d->json.data, d->json.len);
    if (!d->cfg.status_interval_ns || d->stopped)
        write_status(d, &ri, now);
    cbus_loop_slow_end(&d->loop);
}

/* [status] interval set: the status file on its own cadence. */
static int status_timer(void *arg, uint64_t now)
{
    struct daemon *d = arg;
    struct cost_render_info ri;
    render_info(d, &ri);
    write_status(d, &ri, now);
    return 0;
}

/* Durable first, then let producers overwrite: the cursor committed to the
 * bus never passes what the checkpoint on disk accounts for. */
static int checkpoint(struct daemon *d)
{
    /* The loss counters as of the cursor being saved: they are read after
     * the poll that set led.cursor, so they count the losses below it. */
    struct cbus_consumer_stats cs;
    if (d->c && cbus_consumer_stats(d->c, &cs) == 0) {
        d->led.lost = d->lost_base + cs.lost;
        d->led.abandoned = d->abandoned_base + cs.abandoned;
        d->run_lost = cs.lost;
        d->run_abandoned = cs.abandoned;
    }
    uint64_t now = cbus_now_ns();
    /* The fsync may take seconds on a loaded disk: heartbeat meanwhile, or
     * producers waiting on our cursor untether us (the soak saw it). */
    cbus_loop_slow_begin(&d->loop);
    int r = cost_checkpoint_save(&d->led, d->bus_id, real_ns(), d->ckpt_path, &d->ckbuf,
                                 d->cfg.fsync);
    cbus_loop_slow_end(&d->loop);
    if (r) {
        cost_errlimit_fail(&d->ckpt_err, now, "checkpoint %s: %s (cursor not advanced)",
                           d->ckpt_path, strerror(-r));
        return r;
    }
    cost_errlimit_ok(&d->ckpt_err, now);
    d->ckpt_cursor = d->led.cursor;
    if (d->c) {
        r = cbus_consumer_commit_position(d->c, &d->led.pos);
        if (r)
            cost_errlimit_fail(&d->commit_err, now, "commit cursor: %s", cbus_strerror(r));
        else
            cost_errlimit_ok(&d->commit_err, now);
    }
    return 0;
}

/* --state-dir moves everything the config kept in its state dir: the
 * checkpoint and snapshot, and the Prometheus textfile when the config put
 * it inside the state dir (as the shipped cost.ini does).  A textfile the
 * config put elsewhere (a node_exporter collector dir) stays where it is.
 * Both paths are still unexpanded here ("%b"), so they compare as written. */
static int follow_state_dir(struct cost_config *c, const char *state_dir)
{
    size_t old = strlen(c->state_dir);
    while (old > 1 && c->state_dir[old - 1] == '/')
        old--;
    if (c->prom_textfile[0] && old && !strncmp(c->prom_textfile, c->state_dir, old) &&
        c->prom_textfile[old] == '/') {
        char moved[COST_PATH_MAX];
        int n = snprintf(moved, sizeof moved, "%s%s", state_dir, c->prom_textfile + old);
        if (n < 0 || (size_t)n >= sizeof moved)
            return -ENAMETOOLONG;
        memcpy(c->prom_textfile, moved, (size_t)n + 1);
    }
    int n = snprintf(c->state_dir, sizeof c->state_dir, "%s", state_dir);
    return n < 0 || (size_t)n >= sizeof c->state_dir ? -ENAMETOOLONG : 0;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: cbus-cost [--bus NAME] [--config PATH] [--state-dir DIR]\n"
            "                 [--listen HOST:PORT] [--verbose]\n"
            "       cbus-cost report (--state-dir DIR | --config PATH [--bus NAME]) [--json]\n"
            "                 [--sessions N] [--no-refresh]\n");
}

/* The ledger's position becomes the consumer's read position: every event
 * below it in each lane was applied, lost or abandoned. */
static void take_read_position(struct daemon *d)
{
    struct cbus_position p;
    if (cbus_consumer_position(d->c, &p) == 0)
        cost_ledger_set_position(&d->led, &p);
}

/* Attaches by the daemons' resume policy (attach.h): after the
 * checkpoint's position if it is this bus's; from the new bus's oldest
 * event if the bus was re-created since (the totals carry on); else
 * [bus] start.  Waits for the bus.  Returns 0, 1 (stopped) or -errno. */
static int attach(struct daemon *d, int have_ckpt, uint64_t saved_bus_id)
{
    struct cbus_attach_start as = {
        .bus = d->cfg.bus,
        .opts = {.name = d->cfg.consumer, .mode = CBUS_LOSSLESS, .start = d->cfg.start,
                 .kinds = cost_ledger_needed_kinds()},
        .saved = have_ckpt ? &d->led.pos : NULL,
        .saved_bus_id = saved_bus_id,
        .wait_for_bus = 1,
    };
    int r = cbus_attach_start(&d->c, &as);
    if (r)
        return r;
    if (as.from == CBUS_FROM_RECREATED)
        cbus_log_warn("bus %s: keeping the checkpoint's totals on the new bus", d->cfg.bus);
    d->started_from = cbus_attach_start_name(&as);
    d->bus = cbus_consumer_bus(d->c);
    d->bus_id = cbus_consumer_bus_id(d->c);
    /* Positions of the old bus mean nothing here: the ledger's is ours now. */
    if (as.started != CBUS_START_CURSOR)
        take_read_position(d);
    return 0;
}

/* attach.c found another bus at our name: make the old bus's totals
 * durable (committed there) and take our verdicts off it. */
static void leaving_bus(void *arg, cbus_consumer *old)
{
    struct daemon *d = arg;
    if (!d->loop.at.dead && d->led.cursor != d->ckpt_cursor)
        checkpoint(d);
    /* The old consumer's losses stay counted on the new bus, and so do the
     * events it leaves unread there: they will never be accounted.  (A
     * truncated segment cannot be read: its last known counts stand.) */
    struct cbus_consumer_stats cs;
    if (!d->loop.at.dead && cbus_consumer_stats(old, &cs) == 0) {
        d->run_lost = cs.lost + cs.lag;
        d->run_abandoned = cs.abandoned;
    }
    d->lost_base += d->run_lost;
    d->abandoned_base += d->run_abandoned;
    d->run_lost = d->run_abandoned = 0;
    if (d->have_writer && !d->loop.at.dead)
        cbus_admit_writer_release(d->bus, d->writer);
    d->have_writer = 0;
}

/* The admission writer on the bus we are on, and our verdicts on it as
 * the checkpoint has them.  A failure is logged: budgets are then tracked,
 * not enforced. */
static void register_writer(struct daemon *d)
{
    int r = cbus_admit_writer_register(d->bus, d->cfg.consumer, &d->writer);
    if (r)
        cbus_log_error("admission writer %s: %s (budgets are tracked but not enforced)",
                       d->cfg.consumer, cbus_strerror(r));
    d->have_writer = r == 0;
    if (d->have_writer)
        reconcile_verdicts(d);
}

/* Now on a new bus (attach.c): its positions, admission writer and verdicts;
 * the totals carry on, checkpointed at once with the new bus id. */
static int arrived_bus(void *arg)
{
    struct daemon *d = arg;
    d->c = d->loop.at.c;
    d->bus = d->loop.at.bus;
    d->bus_id = d->loop.at.bus_id;
    d->capacity = cbus_bus_header(d->bus)->capacity;
    take_read_position(d);
    checkpoint(d);
    register_writer(d);
    return 0;
}

/* ---- the loop's hooks (consumers/daemon/loop.h) --------------------------- */

static int on_batch(void *arg, const struct cbus_event *ev, const struct cbus_body *bodies, int n,
                    uint64_t now)
{
    struct daemon *d = arg;
    (void)bodies;
    if (n > 0)
        cost_ledger_apply_batch(&d->led, ev, (size_t)n);
    /* Everything below the read position was applied, lost or abandoned:
     * the checkpoint may acknowledge all of it, also when this poll returned
     * no event (positions skipped after a forward jump of tail): the
     * producers gated behind our cursor would otherwise never send the
     * event that moves it. */
    if (cbus_consumer_read_pos(d->c) != d->led.cursor)
        take_read_position(d);
    /* Checkpoint on the interval, or early when unacknowledged events fill
     * a quarter of the ring: a lossless consumer that sits on its cursor
     * makes producers wait.  While events keep coming, not more than every
     * 2 ms; once the ring is drained (n == 0), at once: the producers may be
     * blocked on us and will not wake us. */
    uint64_t pending = d->led.cursor - d->ckpt_cursor;
    if (pending && (now >= d->next_ckpt ||
                    (pending > d->capacity / 4 && (n == 0 || now - d->last_ckpt > 2000000u)))) {
        checkpoint(d);
        d->last_ckpt = now;
        d->next_ckpt = now + d->cfg.checkpoint_interval_ns;
    }
    if (d->led.cursor != d->ckpt_cursor)
        cbus_loop_wake_at(&d->loop, d->next_ckpt); /* wake for the interval checkpoint */
    return 0;
}

static void admission_beat(void *arg)
{
    struct daemon *d = arg;
    if (d->have_writer)
        cbus_admit_writer_heartbeat(d->bus, d->writer);
}

static int on_heartbeat(void *arg, uint64_t now)
{
    (void)now;
    admission_beat(arg);
    return 0;
}

static int outputs_timer(void *arg, uint64_t now)
{
    struct daemon *d = arg;
    (void)now;
    cost_ledger_tick(&d->led, real_ns());
    write_outputs(d);
    return 0;
}

static int fleet_timer(void *arg, uint64_t now) /* fleet_cost.h: one round trip to Redis */
{
    struct daemon *d = arg;
    cost_fleet_sync(d->fleet, now, real_ns());
    return 0;
}

static int expire_timer(void *arg, uint64_t now)
{
    struct daemon *d = arg;
    (void)now;
    if (d->cfg.session_ttl_ns) {
        uint64_t rn = real_ns();
        size_t gone = cost_ledger_expire_sessions(
            &d->led, rn > d->cfg.session_ttl_ns ? rn - d->cfg.session_ttl_ns : 0);
        if (gone)
            cbus_log_info("expired %zu idle sessions", gone);
    }
    return 0;
}

/* ---- start-up, run, shut-down ------------------------------------------------ */

/* The command line and the config, then the prices.  Returns 0, or the
 * exit status (-1: --help, exit 0; logged). */
static int configure(struct daemon *d, int argc, char **argv)
{
    const char *state_dir = NULL, *listen_at = NULL;
    const struct cbus_daemon_opt own[] = {
        {"state-dir", 's', &state_dir, NULL},
        {"listen", 'l', &listen_at, NULL},
        {NULL, 0, NULL, NULL},
    };
    struct cbus_daemon_args args = {.prog = "cbus-cost", .usage = usage, .opts = own};
    int r = cbus_daemon_args(&args, argc, argv);
    if (r >= 0)
        return r == 0 ? -1 : r;
    char err[1024];
    if (cost_config_load(&d->cfg, args.config, err, sizeof err)) {
        cbus_log_error("%s", err);
        return 2;
    }
    if (cbus_daemon_pick_bus(d->cfg.bus, sizeof d->cfg.bus, args.bus))
        return 2;
    if (state_dir && follow_state_dir(&d->cfg, state_dir)) {
        cbus_log_error("--state-dir %s: path too long", state_dir);
        return 2;
    }
    if (listen_at) {
        char text[128];
        snprintf(text, sizeof text, "[prometheus]\nlisten = %s\n", listen_at);
        struct cost_config tmp;
        if (cost_config_parse(&tmp, "--listen", text, NULL, err, sizeof err)) {
            cbus_log_error("%s", err);
            return 2;
        }
        snprintf(d->cfg.http_host, sizeof d->cfg.http_host, "%s", tmp.http_host);
        d->cfg.http_port = tmp.http_port;
        cost_config_free(&tmp);
    }
    cost_config_finish(&d->cfg);
    if (cost_prices_load(&d->prices, d->cfg.prices_file,
                         d->cfg.overrides_file[0] ? d->cfg.overrides_file : NULL, err, sizeof err)) {
        cbus_log_error("%s", err);
        return 2;
    }
    return 0;
}

/* The state dir (private or refused: cbus-cost often runs as root, issue
 * 12 item 16) and the files in it.  Returns 0 or 1 (logged). */
static int prepare_state(struct daemon *d)
{
    char why[8192];
    if (cbus_state_dir_prepare(d->cfg.state_dir, 0700, why, sizeof why)) {
        cbus_log_error("%s", why);
        return 1;
    }
    int n1 = snprintf(d->ckpt_path, sizeof d->ckpt_path, "%s/checkpoint.bin", d->cfg.state_dir);
    int n2 = snprintf(d->snap_path, sizeof d->snap_path, "%s/snapshot.json", d->cfg.state_dir);
    int n3 = d->cfg.status_off ? 0
             : d->cfg.status_file[0]
                 ? snprintf(d->status_path, sizeof d->status_path, "%s", d->cfg.status_file)
                 : snprintf(d->status_path, sizeof d->status_path, "%s/status.json",
                            d->cfg.state_dir);
    if (n1 < 0 || (size_t)n1 >= sizeof d->ckpt_path || n2 < 0 || (size_t)n2 >= sizeof d->snap_path ||
        n3 < 0 || (size_t)n3 >= sizeof d->status_path) {
        cbus_log_error("state dir %s: path too long", d->cfg.state_dir);
        return 1;
    }
    /* A [status] file outside the state dir: its directory private too. */
    if (d->cfg.status_file[0] && !d->cfg.status_off &&
        cbus_state_file_dir_prepare(d->cfg.status_file, 0700, why, sizeof why)) {
        cbus_log_error("[status] file: %s", why);
        return 1;
    }
    return 0;
}

/* The ledger with its budgets, the fleet, and the checkpoint it resumes
 * from (*have_ckpt, *saved_bus_id).  Returns 0 or 1 (logged). */
static int open_ledger(struct daemon *d, int *have_ckpt, uint64_t *saved_bus_id)
{
    const struct cost_config *c = &d->cfg;
    struct cost_budget_set bs = {
        .global = c->global_idx >= 0 ? &c->budgets[c->global_idx] : NULL,
        .user_default = c->user_default_idx >= 0 ? &c->budgets[c->user_default_idx] : NULL,
        .session_default = c->session_default_idx >= 0 ? &c->budgets[c->session_default_idx] : NULL,
        .agent_default = c->agent_default_idx >= 0 ? &c->budgets[c->agent_default_idx] : NULL,
        .tenant_default = c->tenant_default_idx >= 0 ? &c->budgets[c->tenant_default_idx] : NULL,
        .list = c->budgets,
        .n = c->n_budgets,
    };
    struct cost_ledger_opts lo = {c->max_models, c->max_users, c->max_sessions, c->max_agents,
                                  c->max_tenants};
    if (cost_ledger_init(&d->led, d->prices, &bs, &lo)) {
        cbus_log_error("out of memory");
        return 1;
    }
    d->led.on_alert = on_alert;
    d->led.alert_arg = d;
    d->led.on_unpriced = on_unpriced;
    if (c->cluster.enabled) {
        /* Redis is reached at the first sync: unreachable is a log line and
         * local estimates, never a daemon that does not start. */
        struct cost_fleet_hooks fh = {fleet_alert, fleet_verdict, d};
        int r = cost_fleet_open(&d->fleet, &d->led, &c->cluster, &fh);
        if (r) {
            cbus_log_error("cluster: %s", strerror(-r));
            return 1;
        }
        cbus_log_info("fleet: node %s, prefix %s, budgets summed in redis every %llu ms",
                      c->cluster.node, c->cluster.prefix,
                      (unsigned long long)(c->cluster.interval_ns / 1000000u));
    }
    char err[1024];
    int r = cost_checkpoint_load(&d->led, saved_bus_id, d->ckpt_path, err, sizeof err);
    *have_ckpt = r == 0;
    if (r && r != -ENOENT) {
        cbus_log_error("%s; move it away to start from zero", err);
        return 1;
    }
    d->ckpt_cursor = d->led.cursor;
    d->lost_base = d->led.lost;
    d->abandoned_base = d->led.abandoned;
    return 0;
}

/* On the bus: the loop around the consumer, the admission writer and its
 * verdicts, the webhook and the metrics listener.  Returns 0 or 1 (logged). */
static int start_services(struct daemon *d)
{
    struct cbus_consumer_opts ao = {.name = d->cfg.consumer, .mode = CBUS_LOSSLESS,
                                   .kinds = cost_ledger_needed_kinds()};
    if (cbus_loop_init(&d->loop, d->c, d->cfg.bus, &ao, BATCH, 0, d)) {
        cbus_log_error("out of memory");
        d->c = NULL; /* detached by cbus_loop_init */
        return 1;
    }
    d->loop.at.leaving = leaving_bus;
    d->loop.at.arg = d;
    register_writer(d);
    int r;
    if (d->cfg.webhook_url[0] &&
        (r = cost_webhook_start(&d->hook, d->cfg.webhook_url, d->cfg.webhook_timeout_ns))) {
        cbus_log_error("webhook: %s", strerror(-r));
        return 1;
    }
    if (d->cfg.http_host[0] && (r = cost_http_start(&d->http, d->cfg.http_host, d->cfg.http_port))) {
        cbus_log_error("listen %s:%u: %s", d->cfg.http_host, d->cfg.http_port, strerror(-r));
        return 1;
    }
    return 0;
}

static void log_started(struct daemon *d, int have_ckpt)
{
    const struct cbus_shm_header *hdr = cbus_bus_header(d->bus);
    char metrics[96] = "off", hook[CBUS_REDACT_SIZE(sizeof d->cfg.webhook_url)] = "off";
    if (d->hook)
        cbus_redact_url(hook, sizeof hook, d->cfg.webhook_url);
    if (d->http)
        if (snprintf(metrics, sizeof metrics, "http://%.40s:%u/metrics", d->cfg.http_host,
                     cost_http_port(d->http)) < 0)
            metrics[0] = '\0';
    cbus_log_info("started: bus %s (id %016llx, %llu slots) as lossless consumer %s from cursor %llu "
                  "(%s), %s; %zu prices from %s%s%s; %zu budgets; state %s; metrics %s; webhook %s",
                  d->cfg.bus, (unsigned long long)d->bus_id, (unsigned long long)hdr->capacity,
                  d->cfg.consumer, (unsigned long long)d->led.cursor,
                  have_ckpt ? "checkpoint" : "fresh", d->started_from, cost_prices_count(d->prices),
                  d->cfg.prices_file, d->cfg.overrides_file[0] ? " + " : "",
                  d->cfg.overrides_file, d->cfg.n_budgets, d->cfg.state_dir,
                  metrics, hook);
}

/* The loop until a signal, then the final state: durable, then published.
 * Returns the loop's status. */
static int run(struct daemon *d, int have_ckpt)
{
    const struct cbus_shm_header *hdr = cbus_bus_header(d->bus);
    /* The admission heartbeat must beat at least every admit_stale_ns / 3. */
    uint64_t hb_every = hdr->admit_stale_ns / 4;
    if (hb_every == 0 || hb_every > SEC)
        hb_every = SEC;
    d->capacity = hdr->capacity;
    uint64_t now = cbus_now_ns();
    d->next_ckpt = now + d->cfg.checkpoint_interval_ns;
    d->last_ckpt = now;
    write_outputs(d);
    struct cbus_loop *l = &d->loop;
    l->on_batch = on_batch;
    l->on_heartbeat = on_heartbeat;
    l->on_slow_beat = admission_beat; /* verdicts stay in force through a slow checkpoint */
    l->on_arrived = arrived_bus;
    l->hb_every_ns = hb_every;
    l->max_wait_ns = hb_every < 100000000u ? hb_every : 100000000u;
    cbus_loop_every(l, d->cfg.snapshot_interval_ns, 0, outputs_timer, 1);
    if (d->cfg.status_interval_ns)
        cbus_loop_every(l, d->cfg.status_interval_ns, 0, status_timer, 1);
    cbus_loop_every(l, 60 * SEC, 60 * SEC, expire_timer, 0);
    if (d->fleet)
        cbus_loop_every(l, cbus_cluster_tick_ns(&d->cfg.cluster), 0, fleet_timer, 0);
    int rc = cbus_loop_run(l);
    d->stopped = 1;
    if (d->led.cursor != d->ckpt_cursor || !have_ckpt)
        checkpoint(d);
    cost_ledger_tick(&d->led, real_ns());
    write_outputs(d);
    cost_errlimit_flush(&d->snap_err);
    cost_errlimit_flush(&d->prom_err);
    cost_errlimit_flush(&d->ckpt_err);
    cost_errlimit_flush(&d->commit_err);
    cbus_log_info("stopping: %llu events accounted, cursor %llu checkpointed",
                  (unsigned long long)d->led.events, (unsigned long long)d->ckpt_cursor);
    return rc;
}

/* Everything open_ledger and after made, in reverse; safe on a daemon that
 * got only part of the way. */
static void shut_down(struct daemon *d)
{
    if (d->fleet && d->loop.ev) { /* the last counts, if Redis answers within its timeout */
        uint64_t t = cbus_now_ns(), end = t + d->cfg.cluster.timeout_ns + d->cfg.cluster.interval_ns;
        while (cost_fleet_sync(d->fleet, t, real_ns()) == -EINPROGRESS && t < end) {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
            t = cbus_now_ns();
        }
    }
    cost_fleet_close(d->fleet);
    cost_http_stop(d->http);
    cost_webhook_stop(d->hook);
    if (d->have_writer)
        cbus_admit_writer_release(d->bus, d->writer); /* fail open while we are down */
    if (d->loop.ev)
        cbus_loop_close(&d->loop); /* the consumer and its bus */
    else
        cbus_consumer_detach(d->c);
    cost_ledger_free(&d->led);
    sbuf_free(&d->ckbuf);
    sbuf_free(&d->json);
    sbuf_free(&d->prom);
}

int cost_daemon_main(int argc, char **argv)
{
    static struct daemon dd;
    struct daemon *d = &dd;
    memset(d, 0, sizeof *d);
    sbuf_init(&d->ckbuf);
    sbuf_init(&d->json);
    sbuf_init(&d->prom);
    int have_ckpt = 0, rc = configure(d, argc, argv);
    uint64_t saved_bus_id = 0;
    if (rc == 0 && (rc = prepare_state(d)) == 0 &&
        (rc = open_ledger(d, &have_ckpt, &saved_bus_id)) == 0) {
        int r = attach(d, have_ckpt, saved_bus_id);
        if (r && r != 1) {
            cbus_log_error("attach to bus %s as %s: %s", d->cfg.bus, d->cfg.consumer,
                           cbus_strerror(r));
            rc = 1;
        } else if (r == 0 && (rc = start_services(d)) == 0) {
            log_started(d, have_ckpt);
            rc = run(d, have_ckpt);
        }
    }
    shut_down(d);
    cost_prices_free(d->prices);
    cost_config_free(&d->cfg);
    return rc < 0 ? 0 : rc;
}
