/* What every consumer daemon does the same way: stop on SIGTERM/SIGINT,
 * keep state in a private directory, write files atomically. */
#ifndef CBUS_COMMON_DAEMON_H
#define CBUS_COMMON_DAEMON_H

#include <signal.h>
#include <stddef.h>
#include <stdio.h>

/* Set to 1 by SIGTERM or SIGINT after cbus_daemon_signals(). */
extern volatile sig_atomic_t cbus_daemon_stop;
/* Set to 1 by SIGUSR1 (dump status / snapshot on request). */
extern volatile sig_atomic_t cbus_daemon_usr1;

/* Installs the handlers without SA_RESTART, so a blocking wait returns -EINTR
 * and the loop sees the flag.  Ignores SIGPIPE (a closed HTTP peer). */
void cbus_daemon_signals(void);

/* A daemon's own command-line option beside the shared ones. */
struct cbus_daemon_opt {
    const char *name;       /* "state-dir": --state-dir */
    char short_name;        /* 's' for -s, or 0 */
    const char **value;     /* --name VALUE: where the value goes (NULL: a flag) */
    int *flag;              /* a flag: set to 1 */
};

/* The command line of a daemon (the shared part of every main). */
struct cbus_daemon_args {
    const char *prog;                    /* "cbus-cost": the log's name, messages */
    void (*usage)(FILE *f);
    const struct cbus_daemon_opt *opts;  /* the daemon's own, ended by {NULL}; may be NULL */
    /* out: what every daemon takes: --bus NAME (-b), --config PATH (-c),
     * --verbose (-v); --help (-h) prints usage */
    const char *bus, *config;
    int verbose;
};

/* Parses argv (getopt_long; no positional arguments), then starts logging
 * (cbus_log_init: debug with --verbose) and installs the signal handlers
 * (cbus_daemon_signals: from here a SIGTERM during start-up is a clean
 * stop).  Returns -1 to go on, or the exit status to return: 0 after
 * --help, 2 after a bad or stray argument (usage on stderr). */
int cbus_daemon_args(struct cbus_daemon_args *a, int argc, char **argv);

/* The bus a daemon reads, in cfg_bus (cap bytes, the config's [bus] name or
 * empty): a --bus argument (arg, may be NULL) replaces it once validated.
 * Returns 0, or logs why (cbus_log_error: call cbus_log_init first) and
 * returns 2, the daemons' exit code for a bad command line or config. */
int cbus_daemon_pick_bus(char *cfg_bus, size_t cap, const char *arg);

/* ---- files.c: the private state dir, whole files replaced or read ---- */

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

#endif
