/* Verifying consumers: child processes that check the sequence proofs.
 *
 * Per producer instance a verifier keeps the next sequence it expects, the
 * number of distinct sequences it saw and the position of the last one.  A
 * sequence below the expected one is a duplicate or a reordering (always a
 * violation); one above it is a gap, which the final check compares with the
 * loss the library reported.
 *
 * The verifier can be SIGKILLed anywhere, so its state commits per batch:
 *   1. per-producer records of the batch are written to the spare copy
 *      rec[p][!which[p]] and listed in the journal;
 *   2. the new totals go to the spare global record g[!gw], stamped with the
 *      batch id; jstate = 1; gw flips (the commit point);
 *   3. which[p] flips for every journal entry; jstate = 0;
 *   4. the bus cursor is committed (only now may producers overwrite).
 * A restart first finishes step 3 if step 2 happened (recover()), then
 * attaches at g.applied_pos with CBUS_START_CURSOR: everything before it is
 * accounted for, everything after it is read (or counted lost) again.
 * Events the library redelivers are recognised by position and skipped. */
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cbus/bus.h>
#include <cbus/consumer.h>

#include "soak.h"

static volatile sig_atomic_t stop_flag;

static void on_term(int sig)
{
    (void)sig;
    stop_flag = 1;
}

void soak_verifier_recover(struct soak_verifier *v)
{
    if (!atomic_load_explicit(&v->jstate, memory_order_acquire))
        return;
    uint32_t gw = atomic_load_explicit(&v->gw, memory_order_acquire);
    if (v->g[gw].batch_id == v->jbatch) /* the commit point was passed: redo */
        for (uint32_t i = 0; i < v->jn && i < SOAK_BATCH; i++)
            atomic_store_explicit(&v->which[v->je[i].prod], (uint8_t)v->je[i].target,
                                  memory_order_release);
    atomic_store_explicit(&v->jstate, 0, memory_order_release);
}

static void note_violation(struct soak_verifier *v, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void note_violation(struct soak_verifier *v, const char *fmt, ...)
{
    if (v->first_violation[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v->first_violation, sizeof v->first_violation, fmt, ap);
    va_end(ap);
}

struct batch {
    uint8_t touched[SOAK_MAX_PROD]; /* 1 when rec[p][spare] holds this batch's value */
    uint64_t redelivered;
    uint64_t bad;                   /* bad proofs in this batch (after g.bad in bad_pos) */
    uint64_t bad_base;              /* g.bad when the batch started */
    unsigned lanes;
    uint64_t attach_pos[CBUS_MAX_LANES]; /* per lane: events below were accounted before this life */
};

static void apply_event(struct soak_verifier *v, struct batch *b, const struct cbus_event *ev)
{
    uint32_t p;
    uint64_t s;
    if (soak_proof_check(ev, &p, &s)) {
        /* Not a violation by itself: the soak writes garbage into slots on
         * purpose.  The position is recorded (committed with the batch) and
         * the orchestrator checks it is one it wrote. */
        if (ev->event_id / b->lanes < b->attach_pos[ev->event_id & (b->lanes - 1)]) {
            b->redelivered++;
            return;
        }
        atomic_fetch_add_explicit(&v->bad_proof, 1, memory_order_relaxed);
        if (b->bad_base + b->bad < SOAK_MAX_BAD)
            v->bad_pos[b->bad_base + b->bad] = ev->event_id;
        b->bad++;
        return;
    }
    uint32_t w = atomic_load_explicit(&v->which[p], memory_order_relaxed);
    struct soak_vrec *cur = b->touched[p] ? &v->rec[p][!w] : &v->rec[p][w];
    /* An instance is one thread: all its events are in one lane, where
     * event ids grow with lane positions. */
    if (ev->event_id < cur->last_pos1) {
        b->redelivered++; /* applied before a restart, beyond the saved position */
        return;
    }
    if (s < cur->next_seq) {
        atomic_fetch_add_explicit(&v->dup, 1, memory_order_relaxed);
        note_violation(v, "position %" PRIu64 ": producer %" PRIu32 " seq %" PRIu64
                          " after seq %" PRIu64 " (duplicate or reordered)",
                       ev->event_id, p, s, cur->next_seq - 1);
        return;
    }
    struct soak_vrec n = {.next_seq = s + 1, .seen = cur->seen + 1, .last_pos1 = ev->event_id + 1};
    if (!b->touched[p]) {
        if (v->jn >= SOAK_BATCH)
            abort(); /* cannot happen: at most one entry per event of the batch */
        v->je[v->jn].prod = p;
        v->je[v->jn].target = !w;
        v->jn++;
        b->touched[p] = 1;
    }
    v->rec[p][!w] = n;
}

static void commit_batch(struct soak_verifier *v, struct batch *b, const struct soak_vglobal *base,
                         uint64_t dead_untethered, const struct cbus_consumer_stats *cs,
                         const struct cbus_position *pos)
{
    uint32_t gw = atomic_load_explicit(&v->gw, memory_order_relaxed);
    struct soak_vglobal *g = &v->g[!gw];
    const struct soak_vglobal *cur = &v->g[gw];
    *g = (struct soak_vglobal){
        .batch_id = cur->batch_id + 1,
        .applied_pos = cs->read_pos,
        .consumed = base->consumed + cs->consumed,
        .lost = base->lost + cs->lost,
        .abandoned = base->abandoned + cs->abandoned,
        .untethered = base->untethered + dead_untethered + cs->untethered_count,
        .redelivered = cur->redelivered + b->redelivered,
        .lifetimes = base->lifetimes + 1,
        .bad = cur->bad + b->bad,
        .epoch = cur->epoch,
    };
    for (unsigned L = 0; L < pos->lanes; L++)
        g->lane_pos[L] = pos->pos[L];
    v->jbatch = g->batch_id;
    /* RELEASE: journal and spare records are complete before jstate says so. */
    atomic_store_explicit(&v->jstate, 1, memory_order_release);
    atomic_store_explicit(&v->gw, !gw, memory_order_release); /* the commit point */
    for (uint32_t i = 0; i < v->jn; i++) {
        atomic_store_explicit(&v->which[v->je[i].prod], (uint8_t)v->je[i].target,
                              memory_order_release);
        b->touched[v->je[i].prod] = 0;
    }
    atomic_store_explicit(&v->jstate, 0, memory_order_release);
    v->jn = 0;
    b->redelivered = 0;
    b->bad_base += b->bad;
    b->bad = 0;
    atomic_store_explicit(&v->progress_ns, soak_now_ns(), memory_order_relaxed);
}

/* The untether count of a dead predecessor's entry: the bus may have cut it
 * loose while it was dead, and attaching resets the entry's counters. */
static uint64_t dead_entry_untethered(const char *bus_name, const char *name)
{
    cbus_bus *bus;
    if (cbus_bus_open(&bus, bus_name, 0))
        return 0;
    uint64_t n = 0;
    for (unsigned i = 0; i < CBUS_MAX_CONSUMERS; i++) {
        struct cbus_consumer_entry *e = cbus_bus_consumer_entry(bus, i);
        if (e && atomic_load(&e->state) == CBUS_CSTATE_ACTIVE &&
            !strncmp(e->name, name, sizeof e->name))
        {
            uint64_t u = atomic_load(&e->untethered_count);
            n += u ? u : !(atomic_load(&e->flags) & CBUS_CFLAG_TETHERED);
        }
    }
    cbus_bus_close(bus);
    return n;
}

/* The bus incarnation this verifier read is over: its totals go to hist[]
 * and the next epoch's start at zero.  Flipping g is the commit point (the
 * per-producer records are not touched: instances belong to one epoch). */
static void finish_epoch(struct soak_verifier *v)
{
    uint32_t gw = atomic_load_explicit(&v->gw, memory_order_relaxed);
    const struct soak_vglobal *cur = &v->g[gw];
    if (cur->epoch < SOAK_MAX_EPOCH)
        v->hist[cur->epoch] = *cur;
    v->g[!gw] = (struct soak_vglobal){.batch_id = cur->batch_id + 1, .epoch = cur->epoch + 1,
                                      .redelivered = cur->redelivered, .bad = cur->bad};
    /* RELEASE: hist[] is written before the new totals are current. */
    atomic_store_explicit(&v->gw, !gw, memory_order_release);
}

/* Reads one bus incarnation.  Returns 0 when it is over (re-created and
 * drained, or truncated), 1 on error, 2 on stop. */
static int run_epoch(struct soak_shared *st, struct soak_verifier *v, const char *bus, unsigned index)
{
    struct soak_vglobal base = v->g[atomic_load(&v->gw)];
    char name[24];
    snprintf(name, sizeof name, "soak-v%u", index);
    uint64_t dead_untethered = v->lossless ? dead_entry_untethered(bus, name) : 0;
    struct cbus_position at = {.lanes = st->lanes ? st->lanes : 1};
    for (unsigned L = 0; L < at.lanes; L++)
        at.pos[L] = base.lane_pos[L];
    struct cbus_consumer_opts o = {.name = name,
                                   .mode = v->lossless ? CBUS_LOSSLESS : CBUS_LOSSY,
                                   .start = CBUS_START_CURSOR,
                                   .position = &at};
    cbus_consumer *c = NULL;
    int r;
    for (int tries = 0; (r = cbus_consumer_attach(&c, bus, &o)) == -EBUSY && tries < 500; tries++)
        soak_sleep_ns(10000000); /* the predecessor's entry is not seen dead yet */
    if (r) {
        fprintf(stderr, "cbus-soak verifier %u: attach (epoch %" PRIu64 ", bus epoch %u): %s\n", index,
                base.epoch, atomic_load(&st->epoch), cbus_strerror(r));
        return 1;
    }
    atomic_store(&v->attached, 1);
    atomic_store(&v->attached_epoch, (uint32_t)base.epoch + 1);
    struct batch *b = calloc(1, sizeof *b);
    struct cbus_event *evs = malloc(SOAK_BATCH * sizeof *evs);
    if (!b || !evs)
        abort();
    b->bad_base = base.bad;
    b->lanes = at.lanes;
    for (unsigned L = 0; L < at.lanes; L++)
        b->attach_pos[L] = at.pos[L];
    struct cbus_consumer_stats cs = {0}, last = {0};
    r = 2;
    while (!stop_flag) {
        /* Re-created: drain to its final tail.  Truncated: nothing more can
         * be read (the rest died with the segment). */
        const uint64_t e = base.epoch;
        const int over = e < SOAK_MAX_EPOCH && atomic_load(&st->epoch) > e;
        const uint32_t how = over ? atomic_load(&st->epoch_state[e]) : 0;
        if (how == 2 || (how == 1 && cs.read_pos >= atomic_load(&st->epoch_tail[e]))) {
            r = 0;
            break;
        }
        int n = cbus_consumer_poll(c, evs, SOAK_BATCH);
        if (n < 0) {
            if (e < SOAK_MAX_EPOCH && atomic_load(&st->epoch_state[e]) == 2) {
                soak_sleep_ns(1000000); /* the truncated bus: wait for the epoch */
                continue;
            }
            fprintf(stderr, "cbus-soak verifier %u: poll: %s\n", index, cbus_strerror(n));
            r = 1;
            break;
        }
        for (int i = 0; i < n; i++)
            apply_event(v, b, &evs[i]);
        cbus_consumer_stats(c, &cs);
        if (n > 0 || cs.read_pos != last.read_pos || cs.untethered_count != last.untethered_count) {
            struct cbus_position pos;
            cbus_consumer_position(c, &pos);
            commit_batch(v, b, &base, dead_untethered, &cs, &pos);
            cbus_consumer_commit(c);
            last = cs;
        }
        if (n == 0)
            cbus_consumer_wait(c, over ? 1000000 : 50000000);
        else if (soak_now_ns() < atomic_load_explicit(&v->slow_until_ns, memory_order_relaxed))
            soak_sleep_ns(40000000); /* ~1600 events/s; the next poll heartbeats */
    }
    atomic_store(&v->attached, 0);
    atomic_store(&v->attached_epoch, 0);
    if (r == 0)
        finish_epoch(v);
    cbus_consumer_detach(c);
    free(evs);
    free(b);
    return r;
}

static int run(struct soak_shared *st, struct soak_verifier *v, const char *bus, unsigned index)
{
    soak_verifier_recover(v);
    int r;
    while ((r = run_epoch(st, v, bus, index)) == 0) {
    }
    return r == 2 ? 0 : r;
}

int soak_verifier_main(int argc, char **argv)
{
    const char *state = NULL, *bus = NULL;
    long index = -1;
    static const struct option lo[] = {{"state", 1, 0, 's'}, {"bus", 1, 0, 'b'},
                                       {"index", 1, 0, 'i'}, {0, 0, 0, 0}};
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 's': state = optarg; break;
        case 'b': bus = optarg; break;
        case 'i': index = strtol(optarg, NULL, 10); break;
        default: return 2;
        }
    }
    if (!state || !bus || index < 0 || index >= SOAK_MAX_VER) {
        fprintf(stderr, "cbus-soak verifier: --state, --bus and --index are required\n");
        return 2;
    }
    struct sigaction sa = {.sa_handler = on_term};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    struct soak_shared *st;
    int r = soak_state_open(state, &st);
    if (r) {
        fprintf(stderr, "cbus-soak verifier: %s: %s\n", state, strerror(-r));
        return 1;
    }
    r = run(st, &st->ver[index], bus, (unsigned)index);
    soak_state_close(st);
    return r;
}
