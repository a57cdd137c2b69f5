/* The daemon: a lossless bus consumer feeding the writer, committing the bus
 * cursor only as far as the writer says is durable. */
#include "audit.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cbus/bus.h>
#include <cbus/consumer.h>

#include <cbus/cbus.h>

#include "loop.h"
#include "daemon.h"
#include "log.h"
#include "state.h"
#include "status.h"

#define POLL_MAX 256
#define IO_WAIT_NS 500000u          /* wait for a completion while I/O is in flight */
#define IDLE_WAIT_NS 200000000u     /* bus wait with nothing in flight */
#define FAIL_WAIT_NS 20000000u      /* while retrying a failed write */
#define HEARTBEAT_NS 100000000u
#define SHUTDOWN_LIMIT_NS 10000000000ull
#define REPORT_EVERY_NS 60000000000ull  /* the lost-events line, when there are new ones */

/* The daemons' resume policy (consumers/daemon/attach.h).  The log, not
 * the bus, says what is durable: resume right after its last record, so
 * nothing is written twice and nothing acknowledged is missing, even if the
 * crash came between fdatasync and commit; a log of a bus re-created since
 * starts the new bus at its oldest event (in a new file: the writer sees
 * the other bus id); no log yet: [audit] start. */
static int attach(cbus_consumer **c, const struct audit_config *cfg, const struct audit_resume *r)
{
    struct cbus_attach_start as = {
        .bus = cfg->bus,
        .opts = {.name = cfg->name, .mode = CBUS_LOSSLESS,
                 .start = cfg->start},
        .saved = r->have_cursor ? &r->pos : NULL,
        .saved_bus_id = r->bus_id,
    };
    return cbus_attach_start(c, &as);
}

/* Attached before recovery, so the bus sees a live, heartbeating consumer
 * of our name while a large log is checked: a SIGKILLed daemon's entry
 * stops heartbeating, and producers untether it after the stall timeout,
 * losing the events it held back.  Taking the name over re-tethers at once.
 * Starts where the state file says the log ends (a cheap read, no scan),
 * else at the dead entry's committed cursor; both are at or behind the
 * log's real end, and the writer skips what it already has.  Returns NULL
 * when it cannot (then the normal attach after recovery reports why). */
static cbus_consumer *attach_early(const struct audit_config *cfg)
{
    struct audit_state s;
    /* Without a state file: the dead entry's cursor (RESUME), but RESUME
     * with no entry of our name starts at the tail, and a fresh daemon told
     * to start at the oldest event would then gate producers only from the
     * tail on while it recovers (and show a cursor at the tail it has not
     * logged: a test that waited for the cursor saw no records).  Oldest is
     * at or behind any dead entry's cursor, and the writer skips what the
     * log already has. */
    struct cbus_consumer_opts o = {.name = cfg->name, .mode = CBUS_LOSSLESS,
                                   .start = cfg->start == CBUS_START_OLDEST ? CBUS_START_OLDEST
                                                              : CBUS_START_RESUME};
    if (audit_state_load(cfg->dir, cfg->prefix, &s) == 0) {
        o.start = CBUS_START_CURSOR;
        o.position = &s.pos;
        o.expect_bus_id = s.bus_id;
    }
    cbus_consumer *c;
    if (cbus_consumer_attach(&c, cfg->bus, &o) == 0)
        return c;
    /* A state of another lane count (a damaged file: the bus id matched):
     * the dead entry's cursor will do, recovery says where the log ends. */
    o.start = CBUS_START_RESUME;
    o.position = NULL;
    return cbus_consumer_attach(&c, cfg->bus, &o) == 0 ? c : NULL;
}

/* The consumer reads at or behind p in every lane (then the writer skips
 * what the log already has, and nothing is missed). */
static int position_at_or_behind(const cbus_consumer *c, const struct cbus_position *p)
{
    struct cbus_position now;
    if (cbus_consumer_position(c, &now) || now.lanes != p->lanes)
        return 0;
    for (unsigned L = 0; L < now.lanes; L++)
        if (now.pos[L] > p->pos[L])
            return 0;
    return 1;
}

/* Test hook: CBUS_AUDIT_TEST_RECOVERY_PAUSE_MS makes each recovery step
 * pause that long first, so a test can make recovery outlast the bus's
 * stall timeout without a huge log (read once at start, not on any hot
 * path). */
static unsigned recovery_pause_ms;

static void recovery_heartbeat(void *arg)
{
    if (recovery_pause_ms) {
        struct timespec ts = {(time_t)(recovery_pause_ms / 1000),
                              (long)(recovery_pause_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (arg)
        cbus_consumer_heartbeat(arg);
}

/* The daemon's state beside the loop (consumers/daemon/loop.h): the loop
 * polls, waits, heartbeats and follows the bus; audit appends, syncs and
 * commits. */
struct audit_daemon {
    const struct audit_config *cfg;
    struct audit_writer *w;
    struct cbus_loop loop;      /* owns the consumer (loop.at.c) */
    struct cbus_position committed;
    int has_committed;
    uint64_t lost_reported;
    uint64_t fail_since;
    char status_path[4200];     /* "" = no status file */
    int status_err;             /* the last status write error logged */
};

static cbus_consumer *consumer(const struct audit_daemon *d)
{
    return d->loop.at.c;
}

static int same_position(const struct cbus_position *a, const struct cbus_position *b)
{
    return a->lanes == b->lanes && !memcmp(a->pos, b->pos, a->lanes * sizeof a->pos[0]);
}

/* Every lane's cursor goes to just past its last durable record (a lane
 * whose cursor poll already moved over skipped positions stays there). */
static void commit_durable(struct audit_daemon *d)
{
    struct cbus_position cur;
    if (!audit_writer_durable_position(d->w, &cur) ||
        (d->has_committed && same_position(&cur, &d->committed)))
        return;
    int rc = cbus_consumer_commit_position(consumer(d), &cur);
    if (rc == 0) {
        d->committed = cur;
        d->has_committed = 1;
    } else if (rc != -ESTALE) {
        uint64_t sum = 0;
        for (unsigned L = 0; L < cur.lanes; L++)
            sum += cur.pos[L];
        cbus_log_warn("commit of position %" PRIu64 " (%u lane%s): %s", sum, cur.lanes,
                      cur.lanes == 1 ? "" : "s, summed", cbus_strerror(rc));
    }
}

/* The consumer stays tethered while the writer is stuck (the bus would
 * otherwise cut it loose after its stall timeout), unless the operator
 * prefers producers to run free after untether_after: then the loop stops
 * heartbeating until the writer recovers. */
static void untether_policy(struct audit_daemon *d, uint64_t now)
{
    if (!audit_writer_failing(d->w)) {
        d->fail_since = 0;
        d->loop.no_heartbeat = 0;
        return;
    }
    if (!d->fail_since)
        d->fail_since = now;
    d->loop.no_heartbeat =
        d->cfg->untether_after_ns && now - d->fail_since >= d->cfg->untether_after_ns;
}

/* attach.c found another bus at our name: make everything read from the
 * old one durable (and committed there) first, so that the writer's
 * durable cursor never mixes the two buses' positions. */
static void leaving_bus(void *arg, cbus_consumer *old)
{
    struct audit_daemon *d = arg;
    (void)old;
    uint64_t deadline = cbus_now_ns() + SHUTDOWN_LIMIT_NS;
    while (!audit_writer_idle(d->w) && cbus_now_ns() < deadline) {
        audit_writer_flush(d->w);
        audit_writer_service(d->w, 10000000u);
        commit_durable(d);
        if (!d->loop.at.dead)
            cbus_consumer_heartbeat(consumer(d));
    }
    commit_durable(d);
    /* What is durable now belongs to the old bus: never commit it on the new. */
    d->has_committed = audit_writer_durable_position(d->w, &d->committed);
}

/* Now on a new bus: the log continues in a new file for its bus id. */
/* The writer's blocking calls, as the loop's slow sections. */
static void writer_slow(void *arg, int begin)
{
    struct audit_daemon *d = arg;
    if (begin)
        cbus_loop_slow_begin(&d->loop);
    else
        cbus_loop_slow_end(&d->loop);
}

static int arrived_bus(void *arg)
{
    struct audit_daemon *d = arg;
    d->lost_reported = 0;
    struct cbus_position start;
    cbus_consumer_position(consumer(d), &start);
    audit_writer_set_bus(d->w, d->loop.at.bus_id, &start);
    return 0;
}

static void report(struct audit_daemon *d, int always)
{
    struct cbus_consumer_stats cs;
    if (!consumer(d) || cbus_consumer_stats(consumer(d), &cs))
        return;
    if (cs.lost > d->lost_reported) {
        cbus_log_warn("%" PRIu64 " events were overwritten on the bus before cbus-audit read them "
                      "(%" PRIu64 " in total; recorded in the log as gap records)",
                      cs.lost - d->lost_reported, cs.lost);
        d->lost_reported = cs.lost;
    }
    if (!always)
        return;
    struct audit_writer_stats ws;
    audit_writer_stats(d->w, &ws);
    cbus_log_info("status: file %s, %" PRIu64 " records (%" PRIu64 " durable), %" PRIu64
                  " bytes, %" PRIu64 " batches, %" PRIu64 " syncs, %" PRIu64 " rotations, %" PRIu64
                  " I/O errors%s; bus lag %" PRIu64 ", lost %" PRIu64 ", cursor %" PRIu64,
                  ws.file, ws.records, ws.durable_records, ws.bytes, ws.batches, ws.syncs,
                  ws.rotations, ws.io_errors, ws.failing ? " (failing now)" : "", cs.lag, cs.lost,
                  cs.cursor);
}

/* ---- the loop's hooks ------------------------------------------------------ */

/* Reaps completions, commits what is durable, appends the batch.  What the
 * writer has no room for (disk slow or failing, a rotation draining) is
 * held: the loop offers it again after io_wait, without polling. */
static int on_batch(void *arg, const struct cbus_event *ev, const struct cbus_body *bodies, int n,
                    uint64_t now)
{
    struct audit_daemon *d = arg;
    int rc = audit_writer_service(d->w, 0);
    if (rc) {
        cbus_log_error("io_uring: %s", strerror(-rc));
        return 1;
    }
    commit_durable(d);
    if (n == 0)
        audit_writer_flush(d->w); /* the bus is idle: do not wait for a full batch */
    int i = 0;
    while (i < n && (rc = audit_writer_append(d->w, &ev[i], &bodies[i])) == 0)
        i++;
    if (i < n && rc != -EAGAIN) {
        /* Cannot happen (room is checked before encoding); stop rather
         * than skip an event: its cursor is never committed. */
        cbus_log_error("cannot encode event %" PRIu64 ": %s", ev[i].event_id, strerror(-rc));
        return 1;
    }
    if (i < n)
        cbus_loop_hold(&d->loop, (unsigned)i);
    untether_policy(d, now);
    return 0;
}

/* With records in flight, the wait is for their completions (the loop's
 * heartbeat keeps us tethered meanwhile); with none, the bus wait. */
static int io_wait(void *arg, uint64_t max_ns)
{
    struct audit_daemon *d = arg;
    if (audit_writer_idle(d->w) && !cbus_loop_held(&d->loop, NULL, NULL))
        return 0;
    uint64_t wait = audit_writer_failing(d->w) ? FAIL_WAIT_NS : IO_WAIT_NS;
    audit_writer_service(d->w, (unsigned)(wait < max_ns ? wait : max_ns));
    return 1;
}

static int lost_timer(void *arg, uint64_t now)
{
    (void)now;
    report(arg, 0);
    return 0;
}

static int status_timer(void *arg, uint64_t now)
{
    (void)now;
    report(arg, 1);
    return 0;
}

/* The status file: the common envelope (status.h), then "audit". */
static void write_status(struct audit_daemon *d, int running)
{
    if (!d->status_path[0])
        return;
    struct audit_writer_stats ws;
    audit_writer_stats(d->w, &ws);
    struct sbuf b;
    sbuf_init(&b);
    cbus_status_begin(&b, "cbus-audit", &d->loop.at, running);
    sbuf_puts(&b, "\"audit\":{\"dir\":");
    sbuf_json_str(&b, d->cfg->dir, (size_t)-1);
    sbuf_puts(&b, ",\"file\":");
    sbuf_json_str(&b, ws.file, strnlen(ws.file, sizeof ws.file));
    sbuf_printf(&b, ",\"records\":%" PRIu64 ",\"durable_records\":%" PRIu64 ",\"bytes\":%" PRIu64
                    ",\"batches\":%" PRIu64 ",\"syncs\":%" PRIu64 ",\"io_errors\":%" PRIu64
                    ",\"rotations\":%" PRIu64 ",\"files_removed\":%" PRIu64 ",\"gaps\":%" PRIu64
                    ",\"gap_positions\":%" PRIu64 ",\"replayed\":%" PRIu64
                    ",\"state_errors\":%" PRIu64 ",\"failing\":%s,\"untethered_by_policy\":%s}",
                ws.records, ws.durable_records, ws.bytes, ws.batches, ws.syncs, ws.io_errors,
                ws.rotations, ws.files_removed, ws.gaps, ws.gap_positions, ws.replayed,
                ws.state_errors, ws.failing ? "true" : "false",
                d->loop.no_heartbeat ? "true" : "false");
    cbus_status_end(&b);
    int r = cbus_status_write(d->status_path, &b);
    if (r && r != d->status_err)
        cbus_log_warn("status file %s: %s", d->status_path, strerror(-r));
    d->status_err = r;
    sbuf_free(&b);
}

static int status_file_timer(void *arg, uint64_t now)
{
    (void)now;
    write_status(arg, 1);
    return 0;
}

/* Drain: everything polled is appended and made durable, then committed,
 * so a clean stop replays nothing and loses nothing. */
static void drain(struct audit_daemon *d)
{
    uint64_t deadline = cbus_now_ns() + SHUTDOWN_LIMIT_NS;
    for (;;) {
        const struct cbus_event *ev;
        const struct cbus_body *bodies;
        unsigned n = cbus_loop_held(&d->loop, &ev, &bodies), i = 0;
        while (i < n && audit_writer_append(d->w, &ev[i], &bodies[i]) == 0)
            i++;
        cbus_loop_take(&d->loop, i);
        audit_writer_flush(d->w);
        audit_writer_service(d->w, 10000000u);
        commit_durable(d);
        if (!cbus_loop_held(&d->loop, NULL, NULL) && audit_writer_idle(d->w))
            break;
        uint64_t now = cbus_now_ns();
        untether_policy(d, now);
        cbus_loop_busy(&d->loop);
        if (now > deadline) {
            cbus_log_warn("stopping with unwritten records (disk failing?); they were not "
                          "acknowledged on the bus and will be read again at the next start");
            break;
        }
    }
}

/* One writer per directory: a second daemon appending to the same files
 * would interleave two chains.  The kernel drops the lock when we die.
 * Returns the lock's fd or -1 (logged). */
static int lock_dir(const struct audit_config *cfg)
{
    /* Private or refused: no other user may plant files in it (issue 12 item 16). */
    char why[8192];
    if (cbus_state_dir_prepare(cfg->dir, 0750, why, sizeof why)) {
        cbus_log_error("log directory: %s", why);
        return -1;
    }
    char lock_path[4200];
    snprintf(lock_path, sizeof lock_path, "%s/.cbus-audit.lock", cfg->dir);
    int lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (lock_fd < 0 || flock(lock_fd, LOCK_EX | LOCK_NB) < 0) {
        cbus_log_error("%s: %s", lock_path,
                       errno == EWOULDBLOCK ? "another cbus-audit is writing this directory"
                                            : strerror(errno));
        if (lock_fd >= 0)
            close(lock_fd);
        return -1;
    }
    return lock_fd;
}

/* Recovery (with a consumer attached early, heartbeating through it), then
 * the consumer the daemon runs with.  Returns 0 or 1 (logged). */
static int recover_and_attach(const struct audit_config *cfg, struct audit_writer **w,
                              cbus_consumer **c)
{
    char err[512];
    struct audit_writer_opts wo;
    audit_config_writer_opts(cfg, &wo);
    struct audit_resume resume;
    const char *pause = getenv("CBUS_AUDIT_TEST_RECOVERY_PAUSE_MS");
    recovery_pause_ms = pause ? (unsigned)strtoul(pause, NULL, 10) : 0;
    cbus_consumer *early = attach_early(cfg);
    wo.progress = recovery_heartbeat;
    wo.progress_arg = early;
    int rc = audit_writer_open(w, &wo, &resume, err, sizeof err);
    if (rc) {
        cbus_log_error("%s", err);
        cbus_consumer_detach(early);
        return 1;
    }
    cbus_log_info("recovery: %s%s, %llu bytes of log read",
                  resume.have_file ? resume.name : "no log yet",
                  resume.have_file ? (resume.from_state ? " (from the state file)"
                                                        : " (whole file checked)")
                                   : "",
                  (unsigned long long)resume.bytes_read);
    *c = NULL;
    rc = 0;
    if (early && resume.have_cursor && cbus_consumer_bus_id(early) == resume.bus_id &&
        position_at_or_behind(early, &resume.pos)) {
        *c = early; /* behind or at the log's end: the writer skips what it has */
    } else {
        /* Past the log's end (its entry was gone: a clean stop), another
         * bus, or no log: attach where the log says, as without it. */
        cbus_consumer_detach(early);
        rc = attach(c, cfg, &resume);
    }
    if (rc) {
        cbus_log_error("cannot attach to bus %s as %s: %s", cfg->bus, cfg->name,
                       cbus_strerror(rc));
        audit_writer_close(*w);
        return 1;
    }
    return 0;
}

/* Producers wait on the committed cursor, so every record in flight (read,
 * not yet durable) holds a ring slot.  If the batches in flight could fill
 * the ring, producers would stall (then drop) while the disk syncs: keep
 * at most half the ring in flight.  Returns the batch size used. */
static unsigned fit_batches(const struct audit_config *cfg, struct audit_writer *w,
                            cbus_consumer *c)
{
    unsigned batch_events = cfg->batch_events;
    const struct cbus_shm_header *hdr = cbus_bus_header(cbus_consumer_bus(c));
    /* Per lane: the events in flight may all be one thread's, in one lane. */
    uint64_t lane_cap = hdr ? (hdr->lane_capacity ? hdr->lane_capacity : hdr->capacity) : 0;
    uint64_t half_ring = lane_cap / 2;
    if (half_ring && (uint64_t)batch_events * cfg->queue_depth > half_ring) {
        uint64_t fit = half_ring / cfg->queue_depth;
        batch_events = (unsigned)(fit ? fit : 1);
        audit_writer_set_batch_events(w, batch_events);
        cbus_log_info("batch_events lowered from %u to %u: %u batches in flight must fit in "
                      "half of a lane's ring (%" PRIu64 " slots)", cfg->batch_events, batch_events,
                      cfg->queue_depth, lane_cap);
    }
    return batch_events;
}

static void log_started(const struct audit_config *cfg, cbus_consumer *c, unsigned batch_events,
                        const struct cbus_position *start_pos)
{
    char sync[64];
    if (cfg->sync == AUDIT_SYNC_BATCH)
        snprintf(sync, sizeof sync, "fdatasync per batch");
    else
        snprintf(sync, sizeof sync, "fdatasync every %.1f ms", (double)cfg->sync_interval_ns / 1e6);
    cbus_log_info("started: bus %s (id %016" PRIx64 ", %u lane%s) as lossless consumer '%s' from "
                  "cursor %" PRIu64 "%s, log %s, %s, queue depth %u, batch %u events / %" PRIu64
                  " bytes, previews %s",
                  cfg->bus, cbus_consumer_bus_id(c), start_pos->lanes,
                  start_pos->lanes == 1 ? "" : "s", cfg->name, cbus_consumer_read_pos(c),
                  start_pos->lanes == 1 ? "" : " (summed over the lanes)", cfg->dir, sync,
                  cfg->queue_depth, batch_events, cfg->batch_bytes,
                  audit_redaction_name(cfg->preview));
}

/* The loop until a signal (or an error), then the drain.  Takes c.
 * Returns the exit status. */
static int run_loop(const struct audit_config *cfg, struct audit_writer *w, cbus_consumer *c)
{
    struct audit_daemon d = {.cfg = cfg, .w = w};
    if (!cfg->status_off)
        snprintf(d.status_path, sizeof d.status_path, "%s", cfg->status_file);
    if (!cfg->status_off && !cfg->status_file[0])
        snprintf(d.status_path, sizeof d.status_path, "%s/status.json", cfg->dir);
    char why[8192];
    if (cfg->status_file[0] && !cfg->status_off &&
        cbus_state_file_dir_prepare(cfg->status_file, 0700, why, sizeof why)) {
        cbus_log_error("[status] file: %s", why);
        cbus_consumer_detach(c);
        return 1;
    }
    struct cbus_consumer_opts ao = {.name = cfg->name, .mode = CBUS_LOSSLESS};
    d.loop.at.leaving = leaving_bus;
    d.loop.at.arg = &d;
    if (cbus_loop_init(&d.loop, c, cfg->bus, &ao, POLL_MAX, 1, &d)) {
        cbus_log_error("out of memory");
        return 1;
    }
    audit_writer_set_slow(w, writer_slow, &d);
    struct cbus_loop *l = &d.loop;
    l->on_batch = on_batch;
    l->on_arrived = arrived_bus;
    l->io_wait = io_wait;
    l->hb_every_ns = HEARTBEAT_NS;
    l->max_wait_ns = IDLE_WAIT_NS;
    cbus_loop_every(l, REPORT_EVERY_NS, REPORT_EVERY_NS, lost_timer, 0);
    cbus_loop_every(l, 0, 0, status_timer, 1);
    cbus_loop_every(l, cfg->status_interval_ns, 0, status_file_timer, 1);
    int status = cbus_loop_run(l);
    drain(&d);
    report(&d, 1);
    write_status(&d, 0);
    audit_writer_set_slow(w, NULL, NULL); /* d and its loop end here */
    cbus_loop_close(l);
    return status;
}

int audit_run(const struct audit_config *cfg)
{
    int lock_fd = lock_dir(cfg);
    if (lock_fd < 0)
        return 1;
    /* io_uring writes past RLIMIT_FSIZE must fail with EFBIG, not kill us. */
    signal(SIGXFSZ, SIG_IGN);
    struct audit_writer *w;
    cbus_consumer *c;
    if (recover_and_attach(cfg, &w, &c)) {
        close(lock_fd);
        return 1;
    }
    unsigned batch_events = fit_batches(cfg, w, c);
    struct cbus_position start_pos;
    cbus_consumer_position(c, &start_pos);
    audit_writer_set_bus(w, cbus_consumer_bus_id(c), &start_pos);
    log_started(cfg, c, batch_events, &start_pos);
    int status = run_loop(cfg, w, c);
    audit_writer_close(w);
    close(lock_fd);
    cbus_log_info("stopped");
    return status;
}
