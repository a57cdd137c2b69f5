/* Reading another process's consumer entry for display: what cbusctl stat
 * and cbus-web show of each consumer, read one way (issue 18: one reader,
 * not one per view).  Every field is a relaxed load of shared memory that
 * any same-uid process may write: callers display it, bound it, and never
 * index with it. */
#ifndef CBUS_DAEMON_INSPECT_H
#define CBUS_DAEMON_INSPECT_H

#include <cbus/bus.h>
#include <cbus/cbus.h>

#include <stdint.h>

struct cbus_consumer_snap {
    unsigned idx;
    uint32_t state, flags, pid;
    int alive;              /* cbus_bus_consumer_alive(): 1, 0, or -errno */
    uint64_t generation, heartbeat_ns, consumed, lost, abandoned, untethered;
    uint64_t kinds;         /* with CBUS_CFLAG_KINDS: the kinds it needs */
    uint64_t read_pos, cursor; /* summed over the lanes, like cbus_consumer_stats() */
    char name[CBUS_NAME_MAX]; /* NUL-terminated; torn if re-attached meanwhile */
};

/* Entry idx of bus as it is now into *c.  Returns 1 for an entry in use,
 * 0 for a free one or an idx past the table (c then holds only idx). */
int cbus_consumer_snap_read(cbus_bus *bus, unsigned idx, struct cbus_consumer_snap *c);

#endif
