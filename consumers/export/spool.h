/* The disk spool: batches that could not be delivered yet, in order, in a
 * directory, written and read with io_uring.
 *
 * One file per batch, DIR/<20-digit sequence>.cbxs: a 64-byte header (magic
 * "CBXSPOOL", version, format, gzip flag, item count, CRC-32 of the body,
 * body length, ring positions, creation time) and the HTTP body exactly as
 * it will be sent.  A file is durable once its write, fsync and the
 * directory's fsync complete (one linked io_uring chain); a file torn by a
 * crash fails its length or CRC check on replay and is discarded (its
 * events were never acknowledged to the bus, so they are read again).
 *
 * With no directory the spool keeps bodies in memory: same order and limit,
 * nothing survives a restart, and nothing in it is durable.
 */
#ifndef CBUS_EXPORT_SPOOL_H
#define CBUS_EXPORT_SPOOL_H

#include <stddef.h>
#include <stdint.h>

#include "batch.h"

struct spool_stats {
    uint64_t appended;        /* batches put in */
    uint64_t append_bytes;
    uint64_t write_errors;    /* disk writes that failed (the batch stayed in memory) */
    uint64_t recovered;       /* batches found on disk at open */
    uint64_t corrupt;         /* files discarded: torn or damaged */
};

struct spool;

/* Opens (creating dir if needed) and indexes the batches already there, in
 * sequence order.  dir NULL or "" = memory spool.  Returns 0 or -errno (err). */
int spool_open(struct spool **out, const char *dir, uint64_t limit, char *err, size_t errlen);
/* Frees the index; files stay for the next run. */
void spool_close(struct spool *s);

/* The next sequence number: batches take one when they are built, so the
 * spool (and its file names) stays in build order even when an older batch
 * comes back from a failed request after newer ones were spooled. */
uint64_t spool_take_seq(struct spool *s);
/* Inserts b by its seq (taking ownership); normally that is the tail.  On disk the body is written, synced and
 * freed (b->on_disk = 1).  A write error leaves the body in memory and
 * returns -errno: the batch is still queued, just not durable. */
int spool_append(struct spool *s, struct batch *b);
/* Oldest batch, or NULL. */
struct batch *spool_head(struct spool *s);
/* Oldest batch not being sent, or NULL (what to drop when full). */
struct batch *spool_oldest_idle(struct spool *s);
/* Loads a spooled batch's body for sending.  Returns 0, or -EBADMSG for a
 * torn or damaged file (the caller removes it), -errno. */
int spool_load(struct spool *s, struct batch *b);
/* Frees the loaded body of an on-disk batch (it stays spooled). */
void spool_unload(struct spool *s, struct batch *b);
/* Deletes b's file and frees b. */
void spool_remove(struct spool *s, struct batch *b);

size_t spool_count(const struct spool *s);
uint64_t spool_bytes(const struct spool *s);   /* bodies held, on disk or in memory */
uint64_t spool_limit(const struct spool *s);
int spool_on_disk(const struct spool *s);
/* Lowest ring position held by a batch that is not durable (memory), or UINT64_MAX. */
uint64_t spool_min_volatile_pos(const struct spool *s);
/* The same per lane: lowers out[L] (L < lanes) to the lowest lane position a
 * batch in memory holds there. */
void spool_min_volatile_lanes(const struct spool *s, unsigned lanes, uint64_t *out);
const struct spool_stats *spool_stats(const struct spool *s);

void batch_free(struct batch *b);

#endif
