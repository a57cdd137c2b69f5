/* What every consumer daemon does the same way: stop on SIGTERM/SIGINT,
 * write files atomically. */
#ifndef CBUS_COMMON_DAEMON_H
#define CBUS_COMMON_DAEMON_H

#include <signal.h>
#include <stddef.h>

/* Set to 1 by SIGTERM or SIGINT after cbus_daemon_signals(). */
extern volatile sig_atomic_t cbus_daemon_stop;
/* Set to 1 by SIGUSR1 (dump status / snapshot on request). */
extern volatile sig_atomic_t cbus_daemon_usr1;

/* Installs the handlers without SA_RESTART, so a blocking wait returns -EINTR
 * and the loop sees the flag.  Ignores SIGPIPE (a closed HTTP peer). */
void cbus_daemon_signals(void);

/* Replaces path atomically (path.tmp, then rename): readers never see a
 * partial file.  With durable, the data and the rename are also fsynced
 * (file, then directory), so the new file survives a power cut; without, it
 * survives a crash of the process only (status files, snapshots).
 * Returns 0 or -errno. */
int cbus_replace_file(const char *path, const void *data, size_t len, int durable);

/* cbus_replace_file(path, data, len, 1). */
int cbus_write_file_atomic(const char *path, const void *data, size_t len);

#endif
