/* Consumer API: read events from a bus at your own pace.
 *
 * Two positions per consumer:
 *   read position  advanced by cbus_consumer_poll() (private to the process);
 *   cursor         published by cbus_consumer_commit(): what a lossless
 *                  consumer lets producers overwrite.  Commit only what you
 *                  have made durable; after a crash, resume from it.
 * A bus has one or more lanes (cbus_create_opts.lanes): rings side by side,
 * each written by the producer threads that own it.  Positions are per lane;
 * a saved position is one word per lane (struct cbus_position).  Poll
 * delivers each lane in order (so each producer thread's events in the order
 * it emitted them) and sweeps the lanes in turn; events of different lanes
 * come in no defined order: merge by ts_mono_ns where order across threads
 * matters.  An event id is its lane position * lanes + lane: unique per bus,
 * increasing within a lane.  On a one-lane bus it is the position itself, and
 * ev.event_id + 1 is the cursor that acknowledges ev (cbus_consumer_commit_to).
 *
 * Accounting is exact: for positions from the attach point on,
 *   consumed + body_slots + lost + abandoned == positions passed
 * (an event with a body takes the positions after its own for the body).
 */
#ifndef CBUS_CONSUMER_H
#define CBUS_CONSUMER_H

#include <cbus/cbus.h>

#ifdef __cplusplus
extern "C" {
#endif

enum cbus_consumer_mode {
    CBUS_LOSSY = 0,     /* never slows producers; counts what it loses when lapped */
    CBUS_LOSSLESS = 1,  /* producers wait (bounded) for it, then drop and count */
};

enum cbus_start {
    CBUS_START_NEWEST = 0,  /* only events claimed after attach */
    CBUS_START_OLDEST = 1,  /* the oldest event still in the ring */
    CBUS_START_CURSOR = 2,  /* opts.cursor (a saved cursor); gone events count as lost */
    CBUS_START_RESUME = 3,  /* the committed cursor of the last consumer of this name
                               (dead, or detached with CBUS_CONSUMER_KEEP), else NEWEST */
};

#define CBUS_CONSUMER_KEEP (1u << 0) /* park name + cursor at detach for CBUS_START_RESUME */

/* A consumer's place in every lane: what a checkpointing consumer saves
 * (cbus_consumer_position) and resumes from (CBUS_START_CURSOR).  Store the
 * `lanes` words of pos that are used; a position of another lane count
 * belongs to another bus layout and is refused. */
struct cbus_position {
    uint32_t lanes;
    uint32_t _reserved;
    uint64_t pos[CBUS_MAX_LANES];
};

struct cbus_consumer_opts {
    const char *name;       /* required, cbus_name_valid(); unique among live consumers */
    unsigned mode;          /* enum cbus_consumer_mode */
    unsigned start;         /* enum cbus_start */
    uint64_t cursor;        /* with CBUS_START_CURSOR on a one-lane bus, position NULL */
    uint64_t expect_bus_id; /* with CBUS_START_CURSOR: nonzero => -ESTALE if the bus differs
                               (checked before the position's lane count) */
    uint32_t open_flags;    /* CBUS_OPEN_* */
    unsigned flags;         /* CBUS_CONSUMER_* */
    const struct cbus_position *position; /* with CBUS_START_CURSOR: one word per lane
                                             (lanes must match the bus's) */
    /* Lossless only: the kinds this consumer cannot do without, as
     * CBUS_KIND_BIT(kind) bits; 0 = every kind.  When the ring is full up to
     * this consumer, a producer drops an event of a kind no lossless consumer
     * needs at once (counted) instead of waiting the bound for it, so a flood
     * of tokens costs the host nothing while llm_end still waits its turn.
     * Poll still returns every event that arrives, of every kind. */
    uint64_t kinds;
};

/* Returns 0, the codes of cbus_bus_open(), -EINVAL (opts; with
 * CBUS_START_CURSOR, a position whose lane count is not the bus's, or a bare
 * cursor on a bus of several lanes), -EBUSY (a live
 * consumer has this name), -ENOSPC (all CBUS_MAX_CONSUMERS entries in use),
 * -ESTALE (expect_bus_id differs: the bus was recreated), -EBADMSG (the
 * segment's tail is out of range and could not be put back). */
CBUS_API int cbus_consumer_attach(cbus_consumer **out, const char *bus_name,
                                  const struct cbus_consumer_opts *opts);
/* On an open bus (borrowed: must outlive the consumer). */
CBUS_API int cbus_consumer_attach_bus(cbus_consumer **out, cbus_bus *bus,
                                      const struct cbus_consumer_opts *opts);
/* Releases the entry: producers stop waiting for it at once.  With
 * CBUS_CONSUMER_KEEP the entry is parked with its name and committed cursor,
 * so a restart with CBUS_START_RESUME continues where it committed (parked
 * entries are reused when no free entry is left); without, nothing is left
 * behind.  NULL is a no-op. */
CBUS_API void cbus_consumer_detach(cbus_consumer *c);

/* Copies up to max committed events into out, each lane in order; never blocks
 * for long (a slot whose producer is mid-write is waited for at most the
 * abandon timeout, and only when its writer is dead or unknown).
 * Returns the count (0 = nothing new), -EINVAL, -ESTALE (evicted, or the
 * segment was truncated under us: cbus_consumer_check() says which). */
CBUS_API int cbus_consumer_poll(cbus_consumer *c, struct cbus_event *out, unsigned max);

/* An event's body, as poll_bodies put it in the caller's buffer (valid
 * until the buffer is reused).  data NULL, len 0: the event has none. */
struct cbus_body {
    const void *data;
    uint32_t len;             /* == the event's body_len */
};
/* Like cbus_consumer_poll, and each event's body (its sections: see
 * cbus_body_next) into buf, bodies[i] for out[i].  buflen must be at least
 * the bus's body limit (cbus_bus_body_limit), so a body always fits into an
 * empty buffer; poll stops early when the next body does not fit in what is
 * left.  A body is delivered whole or not at all: one lapped while it was
 * read counts its event as lost.  Returns the count, -EINVAL, -ENOBUFS
 * (buflen below the body limit), -ESTALE. */
CBUS_API int cbus_consumer_poll_bodies(cbus_consumer *c, struct cbus_event *out,
                                       struct cbus_body *bodies, unsigned max, void *buf,
                                       size_t buflen);

/* Walks a body's sections (it came from shared memory: every length is
 * checked).  Start with *off = 0.  Returns 1 with *sec and *data (sec->len
 * bytes) set, 0 at the end, -EBADMSG for a section that does not fit. */
CBUS_API int cbus_body_next(const void *body, size_t len, size_t *off,
                            struct cbus_body_section *sec, const char **data);
/* The first section of a type: 1 (found), 0 (none), -EBADMSG. */
CBUS_API int cbus_body_find(const void *body, size_t len, unsigned type,
                            struct cbus_body_section *sec, const char **data);

/* Sleeps until an event may be available, timeout_ns passes, or a signal.
 * Uses no CPU while idle (futex); heartbeats while it waits.
 * Returns 1 (data), 0 (timeout), -EINTR, -ESTALE. */
CBUS_API int cbus_consumer_wait(cbus_consumer *c, uint64_t timeout_ns);

/* Publishes the read position (or pos, <= read position) as the cursor.
 * commit_to takes a one-lane position (-EINVAL on a bus of several lanes:
 * use cbus_consumer_commit_position).
 * Once the cursor covers every event poll handed out, poll itself moves it
 * over positions it skipped after them (lost, abandoned: nothing to
 * process), so a lossless consumer that commits only what it processed is
 * never left gating producers that can send it nothing (a jump of tail).
 * Returns 0, -EINVAL (pos beyond the read position or behind the cursor), -ESTALE. */
CBUS_API int cbus_consumer_commit(cbus_consumer *c);
CBUS_API int cbus_consumer_commit_to(cbus_consumer *c, uint64_t pos);

/* The read position in every lane now: just past every event poll has
 * handed out.  Save it with what those events made durable, commit it
 * (cbus_consumer_commit_position) once they are, and resume from it with
 * CBUS_START_CURSOR.  Returns 0, -EINVAL. */
CBUS_API int cbus_consumer_position(const cbus_consumer *c, struct cbus_position *out);
/* Publishes p as the cursor: each lane's word at most its read position; a
 * word behind the lane's cursor leaves that lane as it is (poll moves a
 * cursor over positions it skipped after the last event it handed out, so a
 * consumer's own record of what it made durable can trail it in a lane that
 * had no event since).  All or nothing.  Returns 0, -EINVAL (lanes differ, a
 * word beyond the read position), -ESTALE. */
CBUS_API int cbus_consumer_commit_position(cbus_consumer *c, const struct cbus_position *p);

/* Is this consumer still reading the bus its name refers to?  A bus
 * destroyed and re-created (cbusctl destroy + create, rm + create) is not
 * noticed by poll or wait: they keep reading the old segment, which only
 * producers that opened it before keep writing to.  Call this at heartbeat
 * cadence (it costs an fstat and an lstat); consumers/daemon/attach.c is
 * the daemons' re-attach policy built on it.
 * Returns 0, -ESTALE (our entry was evicted), -EIO (segment truncated: the
 * handle is dead), -ENOENT (name removed, nothing re-created yet: the old
 * segment still works), -EIDRM (the name is another segment now: attach
 * again to follow it), -EINVAL, or an -errno of fstat/lstat.
 * See cbus_bus_check(). */
CBUS_API int cbus_consumer_check(cbus_consumer *c);

/* Proof of life for a consumer busy between polls (poll and wait heartbeat
 * on their own).  A lossless consumer silent for the bus's stall timeout is
 * untethered (made lossy); it re-tethers by itself once it has caught up. */
CBUS_API int cbus_consumer_heartbeat(cbus_consumer *c);

/* Positions are summed over the lanes: consumed + body_slots + lost +
 * abandoned equals read_pos minus the read position at attach (lost and
 * abandoned count positions: an event lost with its body counts each). */
struct cbus_consumer_stats {
    uint64_t consumed;
    uint64_t lost;
    uint64_t abandoned;
    uint64_t read_pos;
    uint64_t cursor;
    uint64_t tail;        /* producers' claim positions now */
    uint64_t lag;         /* tail - read_pos */
    unsigned mode;        /* asked for */
    int tethered;         /* currently gating producers */
    uint64_t untethered_count;
    unsigned lanes;       /* the bus's lane count */
    uint64_t kinds;       /* as attached (0 = every kind) */
    uint64_t body_slots;  /* positions taken by the bodies of consumed events */
};
CBUS_API int cbus_consumer_stats(cbus_consumer *c, struct cbus_consumer_stats *out);
CBUS_API uint64_t cbus_consumer_read_pos(const cbus_consumer *c); /* summed over lanes */
CBUS_API uint64_t cbus_consumer_bus_id(const cbus_consumer *c);
CBUS_API cbus_bus *cbus_consumer_bus(cbus_consumer *c);
CBUS_API int cbus_consumer_index(const cbus_consumer *c);

#ifdef __cplusplus
}
#endif

#endif
