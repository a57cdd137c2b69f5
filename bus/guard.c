/* The SIGBUS guard: a truncated segment must not kill the host.
 *
 * Anyone with write access to /dev/shm/cbus.NAME can ftruncate() it; every
 * later access to a page past the new end raises SIGBUS in every process
 * that maps it (the inference server included).  Sealed memfds
 * (F_SEAL_SHRINK) would forbid the shrink, but a bus must outlive its
 * creator and be opened by name by unrelated processes later, and a memfd
 * can only be passed over a socket or through /proc/PID/fd: it cannot be
 * linked into /dev/shm (EXDEV).  So the library guards its mappings instead:
 *
 *   - every segment mapping is registered in a static table of atomics
 *     (the only thing the handler reads: no locks, no allocation);
 *   - one SIGBUS handler, installed at the first registration, looks the
 *     fault address up; for an address inside a registered mapping it sets
 *     that mapping's process-local broken word, maps anonymous zero pages
 *     over the whole mapping (MAP_FIXED, a raw syscall) and returns, so the
 *     faulting load or store completes harmlessly on the zero page;
 *   - for any other address (not ours) it chains to the handler that was
 *     installed before it, or to the default action (the process dies as it
 *     would have without cbus).
 *
 * After that, emit and the consumer calls see the broken word (one load of
 * process-local memory, no syscall) and return -ESTALE; cbus_bus_check()
 * says -EIO.  A host that installs its own SIGBUS handler after opening a
 * bus replaces ours: see cbus_guard_install() in bus.h. */
#include "internal.h"

#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define GUARD_SLOTS 256

enum { SLOT_FREE = 0, SLOT_CLAIMED = 1, SLOT_ACTIVE = 2 };

struct guard_slot {
    _Atomic uint32_t state;    /* SLOT_* */
    _Atomic uint32_t broken;   /* set by the handler; read by emit and the consumer calls */
    _Atomic uintptr_t base;
    _Atomic uintptr_t len;
};

static struct guard_slot slots[GUARD_SLOTS];
/* The broken word of buses that are not guarded (caller memory, or the
 * table is full): never set. */
static _Atomic uint32_t never_broken;
static _Atomic uint64_t guard_fired;

static struct sigaction prev_action;
static _Atomic int installed;
static _Atomic int installing;

static void *raw_mmap_anon(void *addr, size_t len)
{
    /* The raw syscall, not a libc wrapper that might take a lock or set
     * errno lazily: this runs inside a signal handler. */
#if defined(SYS_mmap)
    return (void *)syscall(SYS_mmap, addr, len, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
#else
    return mmap(addr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
#endif
}

/* Hands a signal that is not ours to whoever had SIGBUS before us. */
static void chain(int sig, siginfo_t *info, void *uctx)
{
    const struct sigaction *p = &prev_action;
    if (p->sa_flags & SA_SIGINFO) {
        if (p->sa_sigaction) {
            p->sa_sigaction(sig, info, uctx);
            return;
        }
    } else if (p->sa_handler != SIG_DFL && p->sa_handler != SIG_IGN) {
        p->sa_handler(sig);
        return;
    } else if (p->sa_handler == SIG_IGN && info && info->si_code <= 0) {
        return; /* a SIGBUS sent with kill(), ignored before we came */
    }
    /* Default action: restore it and let the signal take the process down
     * the way it would have without us (a fault re-executes and faults
     * again; a sent signal is re-raised, delivered once we return). */
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(SIGBUS, &dfl, NULL);
    if (!info || info->si_code <= 0)
        raise(SIGBUS);
}

static void on_sigbus(int sig, siginfo_t *info, void *uctx)
{
    int saved_errno = errno;
    /* Only a fault (si_code > 0) carries an address worth looking up. */
    uintptr_t addr = info && info->si_code > 0 ? (uintptr_t)info->si_addr : 0;
    if (addr) {
        for (unsigned i = 0; i < GUARD_SLOTS; i++) {
            struct guard_slot *s = &slots[i];
            /* ACQUIRE: pairs with the RELEASE store of SLOT_ACTIVE in
             * cbus__guard_register(): base and len are those of this slot. */
            if (atomic_load_explicit(&s->state, memory_order_acquire) != SLOT_ACTIVE)
                continue;
            uintptr_t base = atomic_load_explicit(&s->base, memory_order_relaxed);
            uintptr_t len = atomic_load_explicit(&s->len, memory_order_relaxed);
            if (addr - base >= len)
                continue;
            /* Flag first, then swap the pages: a thread that reads zeros
             * from the new pages already sees the flag (the mmap's TLB
             * shootdown orders it for the other threads). */
            atomic_store_explicit(&s->broken, 1, memory_order_seq_cst);
            if (raw_mmap_anon((void *)base, (size_t)len) == (void *)base) {
                atomic_fetch_add_explicit(&guard_fired, 1, memory_order_relaxed);
                errno = saved_errno;
                return; /* the faulting access is retried on the zero page */
            }
            break; /* could not replace the pages: as if we were not here */
        }
    }
    errno = saved_errno;
    chain(sig, info, uctx);
}

CBUS_API int cbus_guard_install(void)
{
    /* One installer at a time; others wait the few microseconds it takes. */
    int expect = 0;
    while (!atomic_compare_exchange_weak_explicit(&installing, &expect, 1, memory_order_acquire,
                                                  memory_order_relaxed)) {
        expect = 0;
        cbus__cpu_relax();
    }
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigbus;
    /* SA_ONSTACK: a thread with an alternate stack (Go, some runtimes)
     * handles the fault there.  No SA_RESETHAND: we stay for the next one. */
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    int r = 0;
    if (sigaction(SIGBUS, NULL, &old) < 0) {
        r = -errno;
    } else if ((old.sa_flags & SA_SIGINFO) && old.sa_sigaction == on_sigbus) {
        r = 0; /* already first in line: keep the handler we chain to */
    } else {
        /* Whoever is there now (the default, or a host's handler installed
         * after ours) becomes the one we chain to.  The handler reads
         * prev_action only for signals that are not ours, and none can be
         * ours before we are installed. */
        prev_action = old;
        if (sigaction(SIGBUS, &sa, NULL) < 0)
            r = -errno;
    }
    if (!r)
        atomic_store_explicit(&installed, 1, memory_order_release);
    atomic_store_explicit(&installing, 0, memory_order_release);
    return r;
}

int cbus__guard_register(void *base, size_t len, const _Atomic uint32_t **broken)
{
    *broken = &never_broken;
    if (!atomic_load_explicit(&installed, memory_order_acquire) && cbus_guard_install())
        return -1;
    for (int i = 0; i < GUARD_SLOTS; i++) {
        struct guard_slot *s = &slots[i];
        uint32_t expect = SLOT_FREE;
        if (!atomic_compare_exchange_strong_explicit(&s->state, &expect, SLOT_CLAIMED,
                                                     memory_order_acq_rel, memory_order_relaxed))
            continue;
        atomic_store_explicit(&s->base, (uintptr_t)base, memory_order_relaxed);
        atomic_store_explicit(&s->len, (uintptr_t)len, memory_order_relaxed);
        atomic_store_explicit(&s->broken, 0, memory_order_relaxed);
        /* RELEASE: pairs with the ACQUIRE load of state in on_sigbus(). */
        atomic_store_explicit(&s->state, SLOT_ACTIVE, memory_order_release);
        *broken = &s->broken;
        return i;
    }
    return -1; /* more than GUARD_SLOTS buses mapped: this one is unguarded */
}

/* Before the munmap: after it the range may be reused by an unrelated
 * mapping, which the handler must then leave alone. */
void cbus__guard_unregister(int slot)
{
    if (slot < 0 || slot >= GUARD_SLOTS)
        return;
    atomic_store_explicit(&slots[slot].state, SLOT_FREE, memory_order_release);
}

uint64_t cbus__guard_fired(void)
{
    return atomic_load_explicit(&guard_fired, memory_order_relaxed);
}
