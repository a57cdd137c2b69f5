/* Admission table: verdicts that deciding consumers (rate limiter, budget
 * checks) publish, and producers read in O(1) with no syscall and no lock.
 *
 * A verdict is keyed by (scope, key): the whole user, session, model or
 * provider value of a context (by its hash, so values longer than the
 * event's field are still told apart), or the global scope (key "*").  cbus_admit() checks the
 * global scope and the context's user, session, model and provider; the most
 * restrictive verdict wins (budget exceeded over throttled; for throttled the
 * longest retry-after).
 */
#ifndef CBUS_ADMIT_H
#define CBUS_ADMIT_H

#include <cbus/cbus.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Extra verdict for fail-closed producers: a writer stopped heartbeating. */
#define CBUS_ADMIT_STALE 3

/* Returns CBUS_ALLOW (0), CBUS_THROTTLED (retry_after_ns set),
 * CBUS_BUDGET_EXCEEDED, CBUS_ADMIT_STALE (fail-closed producer: a verdict
 * writer is dead, or a verdict entry stays half-written after a few retries;
 * a fail-open producer takes either as no verdict), or -EINVAL.
 * retry_after_ns may be NULL. */
CBUS_API int cbus_admit(cbus_producer *p, const cbus_ctx *ctx, uint64_t *retry_after_ns);

/* Sleeps (nanosleep, never spins) until cbus_admit() allows or timeout_ns
 * passes.  Returns CBUS_ALLOW, CBUS_BUDGET_EXCEEDED at once (waiting will not
 * help), -ETIMEDOUT, -EINVAL. */
CBUS_API int cbus_admit_wait(cbus_producer *p, const cbus_ctx *ctx, uint64_t timeout_ns);

/* The admission-table hash of a key (never 0): key_hash is the whole
 * value's cbus_key_hash() (layout.h; the event's key_hash[] holds it), mixed
 * with the scope.  Keys longer than their event field are told apart by it. */
CBUS_API uint64_t cbus_admit_hash(unsigned scope, uint64_t key_hash);
/* cbus_admit_hash(scope, cbus_key_hash(key, strlen(key))). */
CBUS_API uint64_t cbus_admit_key_hash(unsigned scope, const char *key);

/* ---- writer side (consumers that decide) -------------------------------- */
/* Registers a writer; *writer gets its index.  A stale registration of the
 * same name (dead pid) is taken over.  Returns 0, -ENOSPC, -EINVAL, -EBUSY. */
CBUS_API int cbus_admit_writer_register(cbus_bus *bus, const char *name, unsigned *writer);
/* Call at least every admit_stale_ns / 3 (the header's value). */
CBUS_API int cbus_admit_writer_heartbeat(cbus_bus *bus, unsigned writer);
/* Clears the writer's verdicts and frees its registration. */
CBUS_API void cbus_admit_writer_release(cbus_bus *bus, unsigned writer);

/* Publishes a verdict for (scope, key), key being the whole value.  verdict
 * CBUS_ALLOW clears it.  until_ns: monotonic (cbus_now_ns()) time the
 * verdict lapses, 0 = until replaced.  Returns 0, -ENOSPC (table full),
 * -EINVAL. */
CBUS_API int cbus_admit_publish(cbus_bus *bus, unsigned writer, unsigned scope,
                                const char *key, unsigned verdict, uint64_t until_ns);
/* The same for a key known by its whole value's hash (a consumer has the
 * event's key_hash[] and the cut field): key_hash != 0; display is what
 * cbusctl shows (a value longer than the entry's display field, or one whose
 * hash is not key_hash, is shown as prefix + "#" + hash).  Returns as above. */
CBUS_API int cbus_admit_publish_hash(cbus_bus *bus, unsigned writer, unsigned scope,
                                     uint64_t key_hash, const char *display, unsigned verdict,
                                     uint64_t until_ns);
/* Clears entry i (cbus_admit_entry_at) if writer owns it: how a restarted
 * writer drops verdicts it no longer holds without knowing their keys.
 * Returns 0, -ENOENT (empty or another writer's), -EINVAL. */
CBUS_API int cbus_admit_clear_at(cbus_bus *bus, unsigned writer, unsigned i);

/* For tools: entry i (0..admission_entries-1) or NULL. */
CBUS_API const struct cbus_admit_entry *cbus_admit_entry_at(cbus_bus *bus, unsigned i);
CBUS_API const struct cbus_admit_writer *cbus_admit_writer_at(cbus_bus *bus, unsigned i);

#ifdef __cplusplus
}
#endif

#endif
