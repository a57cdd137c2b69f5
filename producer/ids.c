/* Trace and run ids: 16 random bytes from a per-thread splitmix64 seeded
 * once from getrandom (no syscall after the first id a thread makes). */
#include "producer_internal.h"

#include <sys/random.h>
#include <unistd.h>

/* splitmix64 per thread, seeded once from getrandom. */
static uint64_t rng_next(void)
{
    static _Thread_local uint64_t state;
    static _Thread_local int seeded;
    if (CBUS__UNLIKELY(!seeded)) {
        if (getrandom(&state, sizeof state, GRND_NONBLOCK) != sizeof state)
            state = cbus__mono_ns() ^ ((uint64_t)getpid() << 32) ^ cbus__gettid();
        seeded = 1;
    }
    uint64_t z = (state += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

CBUS_API void cbus_trace_id_new(uint8_t out[16])
{
    if (!out)
        return;
    uint64_t a = rng_next(), b = rng_next();
    memcpy(out, &a, 8);
    memcpy(out + 8, &b, 8);
    if (cbus_id_is_zero(out))
        out[15] = 1; /* all-zero is "no id" */
}

CBUS_API void cbus_run_id_new(uint8_t out[16])
{
    if (!out)
        return;
    cbus_trace_id_new(out);
    out[6] = (uint8_t)((out[6] & 0x0f) | 0x40); /* version 4 */
    out[8] = (uint8_t)((out[8] & 0x3f) | 0x80); /* RFC 4122 variant */
}
