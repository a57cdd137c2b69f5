/* One event read by id, without a consumer (cbusctl, tools): the same
 * seqlock read as a consumer's poll, nothing committed. */
#include "internal.h"

CBUS_API int cbus_bus_peek(cbus_bus *bus, uint64_t id, struct cbus_event *out)
{
    if (!bus || !out)
        return -EINVAL;
    unsigned lane = (unsigned)(id & (bus->lane_count - 1));
    uint64_t pos = id >> bus->lane_shift;
    uint64_t tail = atomic_load_explicit(bus->tails[lane], memory_order_acquire);
    if (pos >= tail)
        return -EAGAIN;
    if (tail - pos > bus->lane_cap)
        return -ESPIPE;
    struct cbus_slot *s = &cbus__lane_slots(bus, lane)[pos & bus->mask];
    uint64_t seq = atomic_load_explicit(&s->seq, memory_order_acquire);
    if (seq < CBUS_SEQ_COMMITTED(pos))
        return -EAGAIN;
    if (seq != CBUS_SEQ_COMMITTED(pos))
        return -ESPIPE;
    cbus__slot_read(out, &s->ev);
    atomic_thread_fence(memory_order_acquire);
    if (atomic_load_explicit(&s->seq, memory_order_relaxed) != seq)
        return -ESPIPE;
    out->event_id = id;
    return 0;
}
