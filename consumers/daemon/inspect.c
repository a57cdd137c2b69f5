/* See inspect.h. */
#include "inspect.h"

#include <stdatomic.h>
#include <string.h>

int cbus_consumer_snap_read(cbus_bus *bus, unsigned idx, struct cbus_consumer_snap *c)
{
    *c = (struct cbus_consumer_snap){.idx = idx};
    struct cbus_consumer_entry *e = cbus_bus_consumer_entry(bus, idx);
    if (!e)
        return 0;
    c->state = atomic_load_explicit(&e->state, memory_order_acquire);
    if (c->state == CBUS_CSTATE_FREE)
        return 0;
    c->flags = atomic_load_explicit(&e->flags, memory_order_relaxed);
    c->pid = atomic_load_explicit(&e->pid, memory_order_relaxed);
    c->generation = atomic_load_explicit(&e->generation, memory_order_relaxed);
    c->heartbeat_ns = atomic_load_explicit(&e->heartbeat_ns, memory_order_relaxed);
    c->consumed = atomic_load_explicit(&e->consumed, memory_order_relaxed);
    c->lost = atomic_load_explicit(&e->lost, memory_order_relaxed);
    c->abandoned = atomic_load_explicit(&e->abandoned, memory_order_relaxed);
    c->untethered = atomic_load_explicit(&e->untethered_count, memory_order_relaxed);
    c->kinds = atomic_load_explicit(&e->kinds, memory_order_relaxed);
    for (unsigned L = 0; L < cbus_bus_lanes(bus); L++) {
        uint64_t cur, rp;
        if (cbus_bus_consumer_lane(bus, idx, L, &cur, &rp) == 0) {
            c->cursor += cur;
            c->read_pos += rp;
        }
    }
    /* Another process writes the name: a torn one is shown as it is, and
     * the terminator bounds it; writers of JSON make it valid UTF-8. */
    _Static_assert(sizeof c->name > sizeof e->name, "room for the terminator");
    memcpy(c->name, e->name, sizeof e->name);
    c->name[sizeof e->name] = '\0';
    c->alive = cbus_bus_consumer_alive(bus, idx);
    return 1;
}
