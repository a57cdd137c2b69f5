/* The audit log writer: records appended into batch buffers, written with
 * io_uring, several batches in flight, each made durable with fdatasync
 * (linked to its write, or one fdatasync every sync interval).
 *
 * The writer tells its caller the bus position that is durable: in each
 * lane, just past the last record there in the longest run of batches, from
 * the oldest on, whose data has reached the disk.  Batches complete out of order (a later
 * one's fdatasync may finish first); only that contiguous prefix counts, so
 * a cursor committed from it never covers a record that a crash could lose.
 *
 * Errors (ENOSPC, EIO, EFBIG): the failed batch is kept and retried with
 * exponential backoff, one probe at a time, nothing else is submitted
 * meanwhile.  A failed fdatasync rewrites the whole batch before syncing
 * again: after a writeback error Linux may drop the dirty pages, so a
 * second fdatasync alone could succeed without the data (the 2018
 * "fsyncgate" lesson). */
#ifndef CBUS_AUDIT_WRITER_H
#define CBUS_AUDIT_WRITER_H

#include <stddef.h>
#include <stdint.h>

#include "format.h"
#include "logdir.h"

enum audit_sync { AUDIT_SYNC_BATCH = 0, AUDIT_SYNC_INTERVAL = 1 };

struct audit_writer_opts {
    const char *dir;
    const char *prefix;
    const char *bus;              /* written into file headers */
    unsigned queue_depth;         /* batches in flight (2..1024) */
    size_t batch_bytes;           /* buffer per batch (>= 8 KiB) */
    unsigned batch_events;        /* records per batch before it is submitted */
    unsigned sync;                /* enum audit_sync */
    uint64_t sync_interval_ns;    /* AUDIT_SYNC_INTERVAL */
    uint64_t max_file_bytes;      /* rotate past this size (0 = never) */
    uint64_t max_file_age_ns;     /* rotate a file older than this (0 = never) */
    unsigned retain_files;        /* keep at most this many files (0 = all) */
    struct audit_redact redact;
    uint64_t retry_initial_ns;    /* first backoff after an I/O error */
    uint64_t retry_max_ns;        /* backoff cap */
    /* CLOCK_REALTIME in ns for file creation times and rotation by age;
     * NULL = the system clock.  Injectable so rotation can be driven by a
     * test's clock instead of by sleeps a busy machine can stretch. */
    uint64_t (*realtime_ns)(void *arg);
    void *clock_arg;
    /* Called while audit_writer_open recovers the directory (may be NULL):
     * the daemon heartbeats its bus consumer, which the recovery would
     * otherwise leave silent past the stall timeout on a large log. */
    void (*progress)(void *arg);
    void *progress_arg;
};

struct audit_writer_stats {
    uint64_t records;             /* appended */
    uint64_t durable_records;
    uint64_t bytes;               /* written (retries excluded) */
    uint64_t batches;             /* submitted */
    uint64_t syncs;               /* fdatasync completed */
    uint64_t io_errors;           /* failed writes or syncs */
    uint64_t rotations;
    uint64_t files_removed;       /* by retention */
    uint64_t gaps;                /* gap records written (positions never received) */
    uint64_t gap_positions;       /* positions they cover */
    uint64_t replayed;            /* events skipped: already in the log (resumed behind it) */
    uint64_t state_errors;        /* state file writes that failed */
    int failing;                  /* an I/O error is being retried now */
    char file[AUDIT_FILE_NAME_MAX];
};

struct audit_writer;

/* Recovers the directory (see audit_recover) and sets up io_uring.  *resume
 * tells where the log stands (the bus cursor and bus id to resume from).
 * Returns 0 or -errno with err filled. */
int audit_writer_open(struct audit_writer **out, const struct audit_writer_opts *o,
                      struct audit_resume *resume, char *err, size_t errlen);
void audit_writer_close(struct audit_writer *w);

/* Binds the writer to a bus instance: the first file is created now (its
 * header durable soon after), and a log whose last file belongs to another
 * bus id (or another redaction mode, format or lane count) continues in a
 * new file.  cursor is the consumer's start position in every lane
 * (cbus_consumer_position), recorded in the new file's header.
 * Returns 0 or -errno (-EINVAL: a bad lane count; file creation failed: logged). */
int audit_writer_set_bus(struct audit_writer *w, uint64_t bus_id,
                         const struct cbus_position *cursor);

/* Lowers (or raises) the records per batch from now on (n >= 1). */
void audit_writer_set_batch_events(struct audit_writer *w, unsigned n);

/* The writer's few blocking calls (the directory's fsync and retention's
 * unlinks at a rotation; its data goes through io_uring) are bracketed by
 * slow(arg, 1) and slow(arg, 0): the daemon's loop heartbeats meanwhile
 * (consumers/daemon loop.h, slow sections).  NULL: none. */
void audit_writer_set_slow(struct audit_writer *w, void (*slow)(void *arg, int begin), void *arg);

/* Appends one record, preceded by a gap record when ev's lane position is
 * past the one after the last record of its lane (the positions between
 * never arrived); an event below that is already in the log and is skipped.
 * body (NULL = none) is stored in the record as the redaction policy for
 * ev's kind says; a batch is grown for a body that does not fit one.
 * Returns 0, -EAGAIN when no batch buffer is free or a rotation is
 * draining (call audit_writer_service() and retry), -ENOMEM (growing). */
int audit_writer_append(struct audit_writer *w, const struct cbus_event *ev,
                        const struct cbus_body *body);

/* Call when the bus has nothing new, so records do not wait for a full
 * batch: submits the batch being filled once no older batch is in flight
 * (group commit; see writer.c).  Call it again after audit_writer_service()
 * until audit_writer_idle() to drain. */
void audit_writer_flush(struct audit_writer *w);

/* Submits, reaps completions, retries, rotates.  Waits up to wait_ns for a
 * completion when I/O is in flight (0 = do not wait).
 * Returns 0 or a fatal -errno (io_uring itself failing). */
int audit_writer_service(struct audit_writer *w, uint64_t wait_ns);

/* The durable bus position (every lane) into *out: returns 0 (out untouched)
 * until a record has been made durable since the writer opened, else 1. */
int audit_writer_durable_position(const struct audit_writer *w, struct cbus_position *out);
/* 1 when nothing is buffered, in flight or waiting for a retry. */
int audit_writer_idle(const struct audit_writer *w);
/* 1 while an I/O error is being retried. */
int audit_writer_failing(const struct audit_writer *w);
void audit_writer_stats(const struct audit_writer *w, struct audit_writer_stats *out);

#endif
