/* Following the bus: the one policy every consumer daemon uses when its bus
 * is truncated, removed or re-created under it (cbusctl destroy + create,
 * rm + create, ftruncate).  Poll and wait do not notice a re-created bus
 * (the old segment keeps working, and only producers that opened it before
 * write to it), so the daemons ask cbus_consumer_check() at heartbeat
 * cadence, through cbus_attach_check():
 *
 *   0        nothing to do.
 *   -ENOENT  the name was removed and nothing is there yet: keep reading the
 *            old segment (producers that mapped it may still be writing)
 *            and re-attach once a bus of that name exists again.  Logged once.
 *   -EIDRM   another segment is at the name (re-created): attach to it by
 *            name, same consumer name and mode, from its OLDEST event in
 *            every mode (no daemon of ours has read any of it, and what was
 *            emitted between its creation and our noticing counts as much as
 *            what comes after), then leave the old one (detach).  Logged in
 *            one line: old and new bus id, start position, events left
 *            unread in the old segment.
 *   -EIO     truncated: the old segment is dead (the SIGBUS guard replaced
 *            its pages with zeros; its events are lost).  Attach as above as
 *            soon as a valid bus is at the name again (the truncated file has
 *            to be replaced first: cbusctl destroy + create).  Logged once.
 *   -ESTALE  our entry was evicted: returned to the caller, which stops as
 *            it did before (the operator asked for it).
 *
 * A failed attach to the new bus (not valid yet, a live consumer with our
 * name on it) is logged once per distinct error and retried at the next
 * check; meanwhile the daemon keeps its old consumer. */
#ifndef CBUS_COMMON_ATTACH_H
#define CBUS_COMMON_ATTACH_H

#include <cbus/bus.h>
#include <cbus/consumer.h>

#include <stdint.h>

struct cbus_attach {
    cbus_consumer *c;         /* the current consumer (owned by this struct) */
    cbus_bus *bus;            /* its bus (borrowed from c) */
    uint64_t bus_id;          /* its bus id */
    uint64_t reattached;      /* times it moved to a new segment */
    int dead;                 /* truncated and not re-created yet: c is stale, idle */
    /* Called once a new bus is attached, before the old consumer is
     * detached: finish with the old bus (checkpoint, drain, commit, release
     * admission writers).  May be NULL. */
    void (*leaving)(void *arg, cbus_consumer *old);
    void *arg;
    /* private */
    char bus_name[CBUS_NAME_MAX];
    char name[CBUS_NAME_MAX];
    unsigned mode, flags;
    uint64_t kinds;
    uint32_t open_flags;
    uint64_t check_every_ns;
    uint64_t next_check_ns;
    int last_state;           /* the last code logged: log each change once */
    int last_attach_err;
};

/* Where a daemon starts reading (issue 18): the one resume policy, used by
 * every daemon's first attach, lossless (cost, audit, history) and lossy
 * (export, web, ratelimit) alike.  `saved` is the daemon's own durable
 * position with the bus id it was taken on (cost's checkpoint, history's
 * store, audit's log, export's clean-stop cursor file); a daemon that keeps
 * none passes NULL.
 *
 *   1. saved, and the bus at the name is that bus (same id, same lane
 *      count): right after it (CBUS_START_CURSOR).  Events lapped meanwhile
 *      count as lost.
 *   2. saved, but another bus is at the name (re-created since: another id,
 *      or another lane count): the new bus's OLDEST event, in every mode.
 *      The reason is the one of the running re-attach above: no daemon of
 *      ours has read any of the new bus, and what was emitted between its
 *      creation and our start counts as much as what comes after.  (Export
 *      used to start at the newest event here, audit and cost at the
 *      oldest: now all at the oldest.)  The daemon keeps what it holds
 *      (totals, store, log); one warning line names both bus ids.
 *   3. nothing saved (a first start; or a lossy daemon that saves nothing
 *      after a crash): the daemon's `[bus] start` (opts.start: OLDEST,
 *      NEWEST or RESUME, the dead entry's committed cursor else NEWEST).
 *      Each daemon's default and its reason are in its docs page: oldest
 *      for the lossless ones (nothing in the ring is missed) and ratelimit
 *      (its counts are rebuilt from the ring's timestamps); newest for web
 *      (a live view); resume for export.
 *
 * With wait_for_bus, a bus that does not exist yet is waited for (logged
 * once, a look every 200 ms) until it exists or cbus_daemon_stop is set. */
enum cbus_start_from {
    CBUS_FROM_SAVED = 1,      /* case 1 */
    CBUS_FROM_RECREATED,      /* case 2 */
    CBUS_FROM_CONFIG,         /* case 3 */
};

struct cbus_attach_start {
    const char *bus;
    struct cbus_consumer_opts opts;      /* name, mode, kinds, flags, and the case-3 start */
    const struct cbus_position *saved;   /* NULL: nothing saved */
    uint64_t saved_bus_id;
    int wait_for_bus;
    unsigned from;                       /* out: enum cbus_start_from */
    unsigned started;                    /* out: the enum cbus_start that attached */
};

/* Attaches *c by the policy above.  Returns 0, 1 (stopped while waiting
 * for the bus) or the -errno of cbus_consumer_attach (not logged: the
 * daemon says it in its own words). */
int cbus_attach_start(cbus_consumer **c, struct cbus_attach_start *s);

/* "the saved position", "the oldest event", ...: where s->started, for a
 * daemon's started line. */
const char *cbus_attach_start_name(const struct cbus_attach_start *s);

/* Takes ownership of c, attached to bus_name with opts (name, mode, flags
 * and open_flags are reused for every re-attach).  check_every_ns 0 = 1 s. */
void cbus_attach_init(struct cbus_attach *a, cbus_consumer *c, const char *bus_name,
                      const struct cbus_consumer_opts *opts, uint64_t check_every_ns);

/* Applies the policy above.  Looks at most every check_every_ns, unless
 * now is set (after poll or wait said -ESTALE) and the bus is not known
 * dead.  Returns 1 when a->c is a new consumer on a new bus (the caller
 * refreshes what it keeps per bus: positions, capacity, bus id, admission
 * writer), 0 otherwise, -ESTALE when evicted. */
int cbus_attach_check(struct cbus_attach *a, int now);

/* cbus_consumer_wait() on the current consumer, following the bus: sleeps
 * instead while the bus is dead, and re-attaches when the consumer turns
 * out stale because of the bus.  Returns 1 (data, or just re-attached),
 * 0 (timeout), -EINTR, -ESTALE (evicted). */
int cbus_attach_wait(struct cbus_attach *a, uint64_t timeout_ns);

/* Detaches the current consumer (closing its bus).  Idempotent. */
void cbus_attach_close(struct cbus_attach *a);

#endif
