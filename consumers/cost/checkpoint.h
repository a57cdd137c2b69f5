/* Checkpoints: the ledger's totals together with the bus cursor they
 * account up to, in one file written atomically (temp, fsync, rename, fsync
 * of the directory).  After any crash the file holds a state S and cursor C
 * such that S counts exactly the events below C: resuming the bus from C
 * counts nothing twice and, while the ring still holds them, misses nothing.
 *
 * Format (little-endian, this build's struct layouts; a different build
 * refuses the file rather than misreading it):
 *   "CBUSCOST" u32 version u32 layout-stamp u64 bus_id u64 cursor
 *   [u32 lanes, u64 position per lane: version 3; their sum is the cursor]
 *   u64 saved_realtime_ns u64 events [u64 lost u64 abandoned: version 2]
 *   u64 n_models u64 n_users u64 n_sessions
 *   total counters, total latency, global budget state, anomalies,
 *   overflow aggregates, then per model: key + counters + latency,
 *   per user: key + counters + budget state, per session: the same;
 *   histograms are stored sparse (nonzero buckets only);
 *   u32 CRC-32 (zlib) of everything before it.
 */
#ifndef CBUS_COST_CHECKPOINT_H
#define CBUS_COST_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "ledger.h"
#include "sbuf.h"

/* Serialises l (with bus_id) into buf and writes it atomically to path.
 * Returns 0 or -errno. */
int cost_checkpoint_save(const struct cost_ledger *l, uint64_t bus_id, uint64_t now_realtime_ns,
                         const char *path, struct sbuf *buf, int do_fsync);

/* Atomic replace of path.  With do_fsync, durable across power loss
 * (cbus_write_file_atomic: fsync of file and directory); without, still
 * atomic against a crash of this process (write temp, rename): the page
 * cache survives SIGKILL. */
int cost_write_file(const char *path, const void *data, size_t len, int do_fsync);

/* Loads path into l (freshly initialised, with its prices and budgets) and
 * rebinds prices and budgets.  Returns 0, -ENOENT (no checkpoint yet),
 * -EBADMSG / -EPROTO with a message in err (corrupt / other build), or
 * -EOVERFLOW with a message in err (more entries than the ledger's
 * max_models / max_users / max_sessions hold). */
int cost_checkpoint_load(struct cost_ledger *l, uint64_t *bus_id, const char *path, char *err,
                         size_t errlen);

#endif
