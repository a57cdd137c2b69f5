/* cbus-history's configuration (history.ini): the INI format of
 * consumers/daemon/config.h, with errors naming file, line and key. */
#ifndef CBUS_HISTORY_HCONFIG_H
#define CBUS_HISTORY_HCONFIG_H

#include <cbus/layout.h>

#include <stddef.h>
#include <stdint.h>

#define HIST_PATH_MAX 1024

struct hist_config {
    char bus[CBUS_NAME_MAX];
    char consumer[CBUS_NAME_MAX - 8];
    unsigned start;               /* [bus] start: enum cbus_start with an empty store (oldest) */
    char status_file[HIST_PATH_MAX]; /* [status] file; "" = DB.status.json */
    int status_off;               /* [status] file = off */
    uint64_t status_interval_ns;  /* [status] interval (1 s) */
    char db[HIST_PATH_MAX];       /* the store file; %b = the bus name */
    int fsync;                    /* synchronous=FULL: commits survive power loss */
    uint64_t batch;               /* events a transaction holds at most */
    uint64_t max_age_ns;          /* retention: conversations idle longer go; 0 = keep */
    uint64_t retention_every_ns;  /* how often retention runs */
    char prices[HIST_PATH_MAX];   /* LiteLLM price table for cost totals; "" = no cost */
    char prices_overrides[HIST_PATH_MAX];
    char http_host[64];           /* "" = no HTTP API */
    unsigned http_port;
};

/* defaults, then text (name is used in messages; relative paths are
 * relative to base_dir).  Returns 0 or -EINVAL with "FILE:LINE: ..." in err. */
int hist_config_parse(struct hist_config *c, const char *name, const char *text,
                      const char *base_dir, char *err, size_t errlen);
/* Loads path (NULL = defaults). */
int hist_config_load(struct hist_config *c, const char *path, char *err, size_t errlen);
/* "HOST:PORT", loopback only (127.0.0.0/8 or ::1).  0 or -EINVAL (why set). */
int hist_parse_listen(const char *v, char *host, size_t hostlen, unsigned *port, const char **why);
/* Expands %b in the db path once the bus is known.  0 or -ENAMETOOLONG. */
int hist_config_finish(struct hist_config *c);

#endif
