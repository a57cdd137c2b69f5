/* The log directory: file names, listing, start-up recovery, retention.
 *
 * Files are named PREFIX-YYYYMMDDTHHMMSS.mmmZ-NNNNNNNN.cbaudit (UTC creation
 * time, then the file_seq), so a plain `ls` sorts them by time and the
 * chain order is also readable from the name. */
#ifndef CBUS_AUDIT_LOGDIR_H
#define CBUS_AUDIT_LOGDIR_H

#include <stddef.h>
#include <stdint.h>

#include "format.h"

#define AUDIT_SUFFIX ".cbaudit"

struct audit_file_ent {
    char name[AUDIT_FILE_NAME_MAX];
    uint64_t file_seq;
};

/* Returns 0 or -ENAMETOOLONG. */
int audit_name_make(char *out, size_t n, const char *prefix, uint64_t created_ns,
                    uint64_t file_seq);
/* 0 and *file_seq when name is one of ours for prefix, else -EINVAL. */
int audit_name_parse(const char *name, const char *prefix, uint64_t *file_seq);
/* The log files of dir, sorted by file_seq.  *out is malloc'd.
 * Returns 0 or -errno (-ENOENT: no such directory). */
int audit_dir_list(const char *dir, const char *prefix, struct audit_file_ent **out, size_t *n);
/* Makes directory entries (create, rename, unlink) durable. */
int audit_fsync_dir(const char *dir);

/* Where the log stands after recovery: the writer continues from here. */
struct audit_resume {
    int have_file;                          /* a last file exists and is good */
    char name[AUDIT_FILE_NAME_MAX];
    uint64_t file_seq;
    uint64_t file_size;                     /* bytes after recovery */
    uint64_t created_ns;
    unsigned redaction;
    uint64_t bus_id;
    int have_cursor;
    struct cbus_position pos;               /* bus position to resume from (every lane) */
    uint64_t records_in_file;
    uint64_t trimmed_bytes;                 /* cut off a torn/bad tail */
    uint64_t format;                        /* of the last file's header */
    uint64_t last_off;                      /* where the last good value starts */
    int from_state;                         /* resumed from the state file */
    uint64_t bytes_read;                    /* of log files, by recovery */
};

/* Called during recovery about every few MiB read or hashed (and per file):
 * the daemon heartbeats its bus consumer through it. */
struct audit_recover_hooks {
    void (*progress)(void *arg);
    void *arg;
};

/* Recovers dir.  With a good state file (state.h) that matches the log,
 * only the bytes after its offset are read and checked (plus any file
 * created after it); otherwise the whole last file's chain is checked; a tail that is torn (power cut
 * mid-write) or otherwise bad is cut off, its bytes kept beside the log in
 * NAME.torn-OFFSET (never silently destroyed), and logged; a last file whose
 * header never became durable is moved aside the same way and its
 * predecessor becomes the last file.  On return the chain c holds the hash
 * and next seq to continue with.  Returns 0 or -errno with err filled. */
int audit_recover(struct audit_chain *c, const char *dir, const char *prefix,
                  struct audit_resume *out, char *err, size_t errlen);
/* The same, calling hooks (may be NULL) while it works. */
int audit_recover_ex(struct audit_chain *c, const char *dir, const char *prefix,
                     const struct audit_recover_hooks *hooks, struct audit_resume *out, char *err,
                     size_t errlen);

/* Deletes the oldest files beyond keep (0 = keep all).  Returns the number
 * removed or -errno. */
int audit_retention(const char *dir, const char *prefix, unsigned keep);

#endif
