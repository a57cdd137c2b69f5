/* The daemons' re-attach policy: see attach.h. */
#include "attach.h"

#include <cbus/cbus.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "daemon.h"
#include "log.h"

#define DEFAULT_CHECK_NS 1000000000ull
#define DEAD_NAP_NS      100000000ull  /* while dead, wait calls sleep this long at most */

void cbus_attach_init(struct cbus_attach *a, cbus_consumer *c, const char *bus_name,
                      const struct cbus_consumer_opts *opts, uint64_t check_every_ns)
{
    void (*leaving)(void *, cbus_consumer *) = a->leaving;
    void *arg = a->arg;
    memset(a, 0, sizeof *a);
    a->leaving = leaving;
    a->arg = arg;
    a->c = c;
    a->bus = cbus_consumer_bus(c);
    a->bus_id = cbus_consumer_bus_id(c);
    snprintf(a->bus_name, sizeof a->bus_name, "%s", bus_name);
    snprintf(a->name, sizeof a->name, "%s", opts->name);
    a->mode = opts->mode;
    a->flags = opts->flags;
    a->kinds = opts->kinds;
    a->open_flags = opts->open_flags;
    a->check_every_ns = check_every_ns ? check_every_ns : DEFAULT_CHECK_NS;
    a->next_check_ns = cbus_now_ns() + a->check_every_ns;
}

/* Attaches to whatever bus is at the name now.  Returns 1 (moved), 0 (not
 * possible yet: logged once per distinct error). */
static int move(struct cbus_attach *a, int why)
{
    struct cbus_consumer_opts o = {.name = a->name, .mode = a->mode, .start = CBUS_START_OLDEST,
                                   .open_flags = a->open_flags, .flags = a->flags,
                                   .kinds = a->kinds};
    cbus_consumer *nc;
    int r = cbus_consumer_attach(&nc, a->bus_name, &o);
    if (r) {
        /* Still the truncated file, or nothing yet: what we said we wait for. */
        int expected = a->dead && (r == -EBADMSG || r == -EPROTO || r == -ENOENT);
        if (r != a->last_attach_err && !expected)
            cbus_log_warn("bus %s: cannot attach to the bus now at that name yet: %s; "
                          "retrying every %" PRIu64 " ms", a->bus_name, cbus_strerror(r),
                          a->check_every_ns / 1000000);
        a->last_attach_err = r;
        return 0;
    }
    uint64_t old_id = a->bus_id, unread = 0;
    struct cbus_consumer_stats st;
    if (!a->dead && cbus_consumer_stats(a->c, &st) == 0)
        unread = st.lag;
    if (a->leaving)
        a->leaving(a->arg, a->c);
    cbus_consumer_detach(a->c);
    a->c = nc;
    a->bus = cbus_consumer_bus(nc);
    a->bus_id = cbus_consumer_bus_id(nc);
    a->reattached++;
    a->dead = 0;
    a->last_state = 0;
    a->last_attach_err = 0;
    char left[96];
    if (why == -EIO)
        snprintf(left, sizeof left, "the events in the truncated segment are lost");
    else
        snprintf(left, sizeof left, "%" PRIu64 " events were left unread in the old segment",
                 unread);
    cbus_log_warn("bus %s was %s (bus id %016" PRIx64 " -> %016" PRIx64 "): re-attached as %s "
                  "consumer '%s' from the new bus's oldest event (position %" PRIu64 "); %s",
                  a->bus_name, why == -EIO ? "truncated and re-created" : "re-created", old_id,
                  a->bus_id, a->mode == CBUS_LOSSLESS ? "lossless" : "lossy", a->name,
                  cbus_consumer_read_pos(nc), left);
    return 1;
}

int cbus_attach_check(struct cbus_attach *a, int now)
{
    if (!a->c)
        return 0;
    uint64_t t = cbus_now_ns();
    /* "now" skips the cadence only for the first sign of trouble: once the
     * bus is known dead, attempts stay at the cadence. */
    if (t < a->next_check_ns && (!now || a->dead))
        return 0;
    a->next_check_ns = t + a->check_every_ns;
    int r = a->dead ? -EIO : cbus_consumer_check(a->c);
    switch (r) {
    case 0:
        return 0;
    case -ESTALE:
        return -ESTALE;
    case -ENOENT:
        if (a->last_state != r)
            cbus_log_warn("bus %s was removed (nothing at its name now): still reading the old "
                          "segment; re-attaching when a bus of that name is created",
                          a->bus_name);
        a->last_state = r;
        return 0;
    case -EIO:
        if (!a->dead)
            cbus_log_error("bus %s was truncated under us: the segment is gone with the events "
                           "in it; waiting for the bus to be re-created (cbusctl destroy + create)",
                           a->bus_name);
        a->dead = 1;
        a->last_state = r;
        return move(a, r);
    case -EIDRM:
        return move(a, r);
    default:
        /* fstat/lstat failing: nothing we can act on; say it once. */
        if (a->last_state != r)
            cbus_log_warn("bus %s: checking the segment: %s", a->bus_name, cbus_strerror(r));
        a->last_state = r;
        return 0;
    }
}

int cbus_attach_wait(struct cbus_attach *a, uint64_t timeout_ns)
{
    if (!a->dead) {
        int r = cbus_consumer_wait(a->c, timeout_ns);
        if (r != -ESTALE)
            return r;
        r = cbus_attach_check(a, 1);
        if (r)
            return r; /* 1: re-attached, poll; -ESTALE: evicted */
        if (!a->dead)
            return -ESTALE;
    }
    uint64_t nap = timeout_ns < DEAD_NAP_NS ? timeout_ns : DEAD_NAP_NS;
    struct timespec ts = {(time_t)(nap / 1000000000u), (long)(nap % 1000000000u)};
    if (nanosleep(&ts, NULL) < 0 && errno == EINTR)
        return -EINTR;
    return cbus_attach_check(a, 0);
}

void cbus_attach_close(struct cbus_attach *a)
{
    cbus_consumer_detach(a->c);
    a->c = NULL;
    a->bus = NULL;
}

int cbus_attach_start(cbus_consumer **c, struct cbus_attach_start *s)
{
    struct cbus_consumer_opts o = s->opts;
    s->from = CBUS_FROM_CONFIG;
    if (s->saved) {
        o.start = CBUS_START_CURSOR;
        o.position = s->saved;
        o.expect_bus_id = s->saved_bus_id;
        s->from = CBUS_FROM_SAVED;
    }
    int logged = 0;
    for (;;) {
        int r = cbus_consumer_attach(c, s->bus, &o);
        /* -ESTALE: another bus id; -EINVAL: the same id with another lane
         * count (a damaged save).  Either way the position means nothing
         * on this bus: case 2. */
        if ((r == -ESTALE || r == -EINVAL) && s->from == CBUS_FROM_SAVED) {
            cbus_log_warn("bus %s is not the bus the saved position is for (%s; saved on bus id "
                          "%016" PRIx64 "): re-created since; reading it from its oldest event",
                          s->bus, r == -ESTALE ? "another bus id" : "another lane count",
                          s->saved_bus_id);
            o.start = CBUS_START_OLDEST;
            o.position = NULL;
            o.expect_bus_id = 0;
            s->from = CBUS_FROM_RECREATED;
            continue;
        }
        if (r == -ENOENT && s->wait_for_bus) {
            if (!logged)
                cbus_log_info("bus %s does not exist yet; waiting for it", s->bus);
            logged = 1;
            struct timespec ts = {0, 200000000L};
            nanosleep(&ts, NULL);
            if (cbus_daemon_stop)
                return 1;
            continue;
        }
        s->started = o.start;
        return r;
    }
}

const char *cbus_attach_start_name(const struct cbus_attach_start *s)
{
    switch (s->started) {
    case CBUS_START_CURSOR: return "the saved position";
    case CBUS_START_OLDEST:
        return s->from == CBUS_FROM_RECREATED ? "the oldest event (bus re-created since the save)"
                                              : "the oldest event";
    case CBUS_START_RESUME: return "its last committed cursor, else the newest event";
    default: return "the newest event";
    }
}
