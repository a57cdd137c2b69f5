/* Walking a log file value by value, checking the chain: what `verify`,
 * `cat` and start-up recovery share. */
#ifndef CBUS_AUDIT_SCAN_H
#define CBUS_AUDIT_SCAN_H

#include <stddef.h>
#include <stdint.h>

#include "format.h"

/* The chain as checked so far, carried from one file to the next. */
struct audit_verify_state {
    int started;                      /* a file was checked: the next must continue it */
    uint8_t hash[AUDIT_HASH_LEN];     /* hash of the last good value */
    uint64_t next_seq;
    uint64_t file_seq;
    char file_name[AUDIT_FILE_NAME_MAX];
    uint64_t records;                 /* good records over all files */
    /* Event-id continuity per lane (format.h): checked only with check_ids
     * (verify); recovery never cuts a log for a hole in ids, but follows
     * pos all the same: it is where the consumer resumes. */
    int check_ids;
    struct cbus_position pos;         /* next lane position in each lane; lanes 0 =
                                         not known yet (taken from the next header) */
    uint64_t bus_id;                  /* of the last file accepted */
    uint64_t gaps;                    /* gap records seen */
    uint64_t gap_positions;           /* positions they cover */
    /* Called about every AUDIT_SCAN_PROGRESS bytes scanned (and by
     * audit_read_range per chunk): recovery heartbeats the bus through it. */
    void (*progress)(void *arg);
    void *progress_arg;
};

#define AUDIT_SCAN_PROGRESS (4u << 20)

struct audit_scan_result {
    struct audit_header hdr;
    int has_header;
    uint64_t records;                 /* good records in this file */
    size_t good_end;                  /* offset just past the last good value */
    size_t last_off;                  /* offset of the last good value (0: the header) */
    int has_last_event;
    uint64_t last_event_id;           /* event_id of the last good record */
    struct cbus_position pos;         /* the bus position after the good part: in
                                         each lane, just past its last record there
                                         (event_id / lanes + 1, or a gap record's
                                         "to"), else where the header or the state
                                         it continues put it */
    /* the first problem, if any */
    int bad;
    int torn;                         /* the problem: input ends inside a value */
    size_t bad_offset;
    int64_t bad_index;                /* record index in the file, -1 = the header */
    uint64_t bad_seq;                 /* seq expected there */
    char why[256];
};

/* Called for every good record (cat).  Return nonzero to stop the scan. */
typedef int (*audit_record_cb)(void *arg, const struct audit_item *it);

/* Scans buf (one whole file called name, basename only).  With
 * check_hashes, verifies every hash and the continuation from st; without,
 * only parses (cat).  Updates st to the end of the good part.
 * Returns 0 (scanned; res->bad tells whether all was good), or the
 * callback's nonzero value. */
int audit_scan(struct audit_chain *c, struct audit_verify_state *st, const char *name,
               const uint8_t *buf, size_t len, int check_hashes, audit_record_cb cb, void *arg,
               struct audit_scan_result *res);

/* Continues the scan of a file whose bytes before base were checked
 * already: buf holds the file from offset base on, st the chain there (hash,
 * next_seq, file_name); index is the record index at base.  Offsets in res
 * are file offsets.  No header is expected.  Returns as audit_scan. */
int audit_scan_tail(struct audit_chain *c, struct audit_verify_state *st, const uint8_t *buf,
                    size_t len, uint64_t base, int64_t index, struct audit_scan_result *res);

/* Reads a file from offset from to its end into memory (malloc'd; NULL
 * with *len = 0 when nothing is there), in chunks, calling progress(arg)
 * (may be NULL) after each.  *total gets the file size.  Returns 0 or -errno. */
int audit_read_range(const char *path, uint64_t from, uint8_t **buf, size_t *len,
                     uint64_t *total, void (*progress)(void *), void *arg);

/* Reads a whole file into memory (malloc'd; NULL with *len = 0 for an empty
 * file).  Returns 0 or -errno. */
int audit_read_file(const char *path, uint8_t **buf, size_t *len);

/* Reads the file at path (audit_read_file: links followed, it is a file an
 * operator named) and scans it as audit_scan does, under name: what
 * `verify` and `cat` do with each file they are given.  Returns 0 (read and
 * scanned; res->bad tells whether all was good; a callback that stopped the
 * scan has said why itself), or -errno: not read (res untouched). */
int audit_scan_file(struct audit_chain *c, struct audit_verify_state *st, const char *path,
                    const char *name, int check_hashes, audit_record_cb cb, void *arg,
                    struct audit_scan_result *res);

#endif
