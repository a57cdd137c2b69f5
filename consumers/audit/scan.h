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
};

struct audit_scan_result {
    struct audit_header hdr;
    int has_header;
    uint64_t records;                 /* good records in this file */
    size_t good_end;                  /* offset just past the last good value */
    int has_last_event;
    uint64_t last_event_id;           /* event_id of the last good record */
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

/* Reads a whole file into memory (malloc'd; NULL with *len = 0 for an empty
 * file).  Returns 0 or -errno. */
int audit_read_file(const char *path, uint8_t **buf, size_t *len);

#endif
