/* The gate: which lossless consumers producers must not overrun.
 *
 * hdr->gate packs the number of tethered consumers (low 16 bits) with an
 * epoch (the rest).  Producers read it on every emit: zero tethered means the
 * wait-free fetch_add claim; otherwise they claim with CAS below
 * min(tethered cursors) + capacity, which they cache per thread and
 * recompute only when the epoch changes or the cached bound is reached.
 *
 * A consumer's TETHERED flag is the single source of truth; whoever flips it
 * (with CAS, so exactly once) adjusts the count and bumps the epoch. */
#include "internal.h"

#define GATE_ONE   UINT64_C(1)
#define GATE_EPOCH (UINT64_C(1) << 16)

void cbus__consumer_untether(cbus_bus *bus, struct cbus_consumer_entry *e)
{
    uint32_t f = atomic_load_explicit(&e->flags, memory_order_acquire);
    while (f & CBUS_CFLAG_TETHERED) {
        if (atomic_compare_exchange_weak_explicit(&e->flags, &f, f & ~CBUS_CFLAG_TETHERED,
                                                  memory_order_acq_rel, memory_order_acquire)) {
            /* count - 1, epoch + 1 in one add */
            atomic_fetch_add_explicit(&bus->hdr->gate, GATE_EPOCH - GATE_ONE, memory_order_seq_cst);
            return;
        }
    }
}

int cbus__consumer_tether(cbus_bus *bus, struct cbus_consumer_entry *e)
{
    uint32_t f = atomic_load_explicit(&e->flags, memory_order_acquire);
    while (!(f & CBUS_CFLAG_TETHERED)) {
        if (atomic_compare_exchange_weak_explicit(&e->flags, &f, f | CBUS_CFLAG_TETHERED,
                                                  memory_order_acq_rel, memory_order_acquire)) {
            /* seq_cst: producers that see the new count also see the cursor
             * stored (release) before this call. */
            atomic_fetch_add_explicit(&bus->hdr->gate, GATE_EPOCH + GATE_ONE, memory_order_seq_cst);
            return 1;
        }
    }
    return 0;
}
