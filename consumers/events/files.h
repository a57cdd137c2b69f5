/* The private state dir (%S in a config value) and whole files, replaced
 * atomically or read whole: the one file reader of the daemons and the tools
 * (cbusctl, the collector) and of the price table (prices.c).  Here in
 * consumers/events/, not in the daemon skeleton, because programs that link
 * only the event code need it too. */
#ifndef CBUS_EVENTS_FILES_H
#define CBUS_EVENTS_FILES_H

#include <stddef.h>

/* The root of the daemons' private state ("%S" in a config value):
 * $XDG_STATE_HOME/cbus when XDG_STATE_HOME is an absolute path, else
 * /var/lib/cbus for root (the systemd units' StateDirectory), else
 * $HOME/.local/state/cbus (HOME, or the passwd entry).  Never /tmp: a
 * shared directory lets another user plant the files a daemon writes.
 * With sub, "/sub" is appended.  Returns 0, -ENOENT (no home directory)
 * or -ENAMETOOLONG. */
int cbus_state_dir_default(char *out, size_t len, const char *sub);

/* Makes dir and any missing parents (new ones get mode, e.g. 0700) and
 * checks that it is private, so no other user can plant or swap the files
 * a daemon (often root) writes there: dir must be a directory owned by our
 * effective uid and not writable by group or others; every ancestor (and a
 * symlink on the way) must be owned by us or root and, if others can write
 * to it, sticky (like /tmp).  On refusal why gets one line naming the path
 * and the reason ("state dir /x: owned by uid 65534, not by us (uid 0)").
 * Returns 0, -EPERM (not private), -ENOTDIR, -ENAMETOOLONG or -errno. */
int cbus_state_dir_prepare(const char *dir, unsigned mode, char *why, size_t whylen);

/* cbus_state_dir_prepare() for the directory that holds file. */
int cbus_state_file_dir_prepare(const char *file, unsigned mode, char *why, size_t whylen);

/* Replaces path atomically (a new temporary beside it, then rename):
 * readers never see a partial file.  The temporary has a unique name and
 * is created with O_CREAT|O_EXCL|O_NOFOLLOW, mode 0600: a symlink or file
 * planted at any name is never followed or reused, and state files are
 * readable by the daemon's user only.  With durable, the data and the
 * rename are also fsynced (file, then directory), so the new file survives a power cut; without, it
 * survives a crash of the process only (status files, snapshots).
 * Returns 0 or -errno. */
int cbus_replace_file(const char *path, const void *data, size_t len, int durable);

/* Reads the whole of path into *out (malloc'd, NUL-terminated; *len
 * without the NUL, may be NULL): the one whole-file reader of the daemons
 * and tools (configs, price tables, checkpoints, status files).  A file
 * past max bytes (0: 64 MiB) is refused.  Returns 0, -errno (open),
 * -EFBIG, -ENOMEM or -EIO (a read error). */
int cbus_read_file(const char *path, size_t max, char **out, size_t *len);

/* cbus_replace_file(path, data, len, 1). */
int cbus_write_file_atomic(const char *path, const void *data, size_t len);

/* TEST ONLY: a slow disk.  CBUS_TEST_SLOW_FSYNC_MS (read once a process;
 * unset, or a bad value: 0) makes this sleep that long; it is called where
 * a daemon waits for the disk to make something durable: the fsync of a
 * durable cbus_replace_file (cost's checkpoint), the store's commit when
 * it syncs (cbus-history), the log directory's fsync (cbus-audit: a new
 * file, retention).  So a test can make one outlast the bus's stall
 * timeout and check that the daemon's loop heartbeats through it
 * (loop.h, slow calls).  Never set in production. */
void cbus_test_slow_disk(void);

#endif
