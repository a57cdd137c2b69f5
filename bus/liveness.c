/* Whether a consumer entry's owner still lives, and evicting one that does
 * not (cbusctl evict, tools): the pid and its start time, then the OFD lock
 * the owner holds on its entry while it lives (bus/consumer.c takes it). */
#include "internal.h"

#include <fcntl.h>
#include <unistd.h>

/* The OFD lock a consumer holds on its entry's first byte while it lives;
 * the kernel drops it at death.  Returns 1 held, 0 not held, -1 unknown. */
static int entry_lock_held(cbus_bus *bus, unsigned idx)
{
    if (bus->fd < 0)
        return -1;
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET,
                       .l_start = (off_t)(bus->hdr->consumers_off + idx * sizeof(struct cbus_consumer_entry)),
                       .l_len = 1};
    if (fcntl(bus->fd, F_OFD_GETLK, &fl) < 0)
        return -1;
    return fl.l_type != F_UNLCK;
}

CBUS_API int cbus_bus_consumer_alive(cbus_bus *bus, unsigned idx)
{
    if (!bus || idx >= CBUS_MAX_CONSUMERS)
        return -EINVAL;
    struct cbus_consumer_entry *e = &bus->consumers[idx];
    if (atomic_load_explicit(&e->state, memory_order_acquire) != CBUS_CSTATE_ACTIVE)
        return 0; /* free, parked, or still being attached */
    if (!cbus__pid_alive(atomic_load_explicit(&e->pid, memory_order_relaxed),
                        atomic_load_explicit(&e->pid_start_time, memory_order_relaxed)))
        return 0;
    /* The pid lives; its lock says whether it still holds this entry (a
     * process that closed its consumer without detaching, or that forked). */
    if ((uint32_t)getpid() != atomic_load_explicit(&e->pid, memory_order_relaxed) && entry_lock_held(bus, idx) == 0)
        return 0;
    return 1;
}

CBUS_API int cbus_bus_evict(cbus_bus *bus, unsigned idx, int force)
{
    if (!bus || idx >= CBUS_MAX_CONSUMERS || bus->readonly)
        return -EINVAL;
    struct cbus_consumer_entry *e = &bus->consumers[idx];
    uint32_t st = atomic_load_explicit(&e->state, memory_order_acquire);
    if (st == CBUS_CSTATE_FREE)
        return -ENOENT;
    if (!force && cbus_bus_consumer_alive(bus, idx) == 1)
        return -EBUSY;
    cbus__consumer_untether(bus, e);
    /* The owner (if any) compares generation on every call: -ESTALE. */
    atomic_fetch_add_explicit(&e->generation, 1, memory_order_acq_rel);
    if (!atomic_compare_exchange_strong_explicit(&e->state, &st, CBUS_CSTATE_FREE,
                                                 memory_order_acq_rel, memory_order_acquire))
        return -EBUSY;
    return 0;
}
