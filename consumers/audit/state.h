/* The chain state file: where the log's durable end is, so a restart
 * resumes from it and checks only the bytes written after it, instead of
 * re-reading and re-hashing the whole current file (740 MB took 4.25 s,
 * past the bus's stall timeout, and the consumer was cut loose).
 *
 * DIR/.PREFIX.state holds two 1024-byte slots, written alternately after
 * each batch becomes durable; each carries a generation and a SHA-256 of
 * its bytes, so a torn write leaves the other slot good.  It is written
 * only after the data it describes was fdatasync'd, so it never claims
 * more than the log holds; it is fdatasync'd itself about once a second
 * (a power cut loses at most that much of it: recovery then checks a
 * longer tail).  It is a hint, never trusted over the log: recovery checks
 * that the value it names really ends at its offset with its hash, and
 * falls back to scanning the whole last file otherwise.  `verify` ignores it. */
#ifndef CBUS_AUDIT_STATE_H
#define CBUS_AUDIT_STATE_H

#include <stddef.h>
#include <stdint.h>

#include "format.h"

/* Version 2 (magic CBAUDST2) holds a position per lane.  A version 1 file
 * (two 512-byte slots, one cursor) still loads, as one lane; the first write
 * after it goes into a version 2 slot, which the loader prefers. */
#define AUDIT_STATE_SLOT 1024
#define AUDIT_STATE_SLOT_V1 512

struct audit_state {
    uint64_t gen;                       /* bumped per write; the higher good slot wins */
    char name[AUDIT_FILE_NAME_MAX];     /* the log file (basename) */
    uint64_t file_seq;
    uint64_t format;                    /* of that file's header */
    uint64_t created_ns;
    uint64_t bus_id;
    uint64_t redaction;
    uint64_t offset;                    /* durable end: bytes of the file checked */
    uint64_t last_off;                  /* where the value ending at offset starts */
    uint64_t next_seq;                  /* chain seq after it */
    uint8_t hash[AUDIT_HASH_LEN];       /* its hash */
    uint64_t records_in_file;           /* records before offset */
    struct cbus_position pos;           /* bus position after the last record, per lane */
};

/* DIR/.PREFIX.state.  Returns 0 or -ENAMETOOLONG. */
int audit_state_path(char *out, size_t n, const char *dir, const char *prefix);
/* The newest good slot.  Returns 0, -ENOENT (no file), -EBADMSG (no good
 * slot) or -errno. */
int audit_state_load(const char *dir, const char *prefix, struct audit_state *out);
/* Opens (creating, 0600, no symlinks) for audit_state_write.  Returns an fd
 * or -errno. */
int audit_state_open(const char *dir, const char *prefix);
/* Writes s into slot (s->gen + 1) % 2 with s->gen bumped.  Returns 0 or -errno. */
int audit_state_write(int fd, struct audit_state *s);

#endif
