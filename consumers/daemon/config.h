/* The daemons' configuration format: INI-style, one setting per line.
 *
 *   # comment            ; also a comment
 *   [section]
 *   key = value          # values may be "quoted" to keep spaces or '#'
 *
 * The parser keeps every entry with its line number so a daemon can say
 * exactly which line is wrong ("cost.ini:12: [budget] limit_usd: not a number").
 * Typed helpers parse values and write such messages into err.
 *
 * A value that is "%S" or starts with "%S/" names the daemons' private
 * state directory (cbus_state_dir_default() in daemon.h: $XDG_STATE_HOME/cbus,
 * /var/lib/cbus for root, ~/.local/state/cbus), so the shipped configs can
 * keep state out of /tmp without naming a user's home:  dir = %S/cost/%b
 */
#ifndef CBUS_COMMON_CONFIG_H
#define CBUS_COMMON_CONFIG_H

#include <stddef.h>
#include <stdint.h>

struct cbus_cfg_entry {
    const char *section;   /* "" before the first [section] */
    const char *key;
    const char *value;
    unsigned line;
};

struct cbus_cfg {
    char *path;
    struct cbus_cfg_entry *entries;
    size_t count;
    char *arena;           /* owns the strings */
    char *expanded;        /* owns values with %S expanded */
};

/* Loads and parses path (cbus_cfg_read_text).  Returns 0, or -errno with a
 * message in err ("FILE:LINE: what is wrong"). */
int cbus_cfg_load(struct cbus_cfg *cfg, const char *path, char *err, size_t errlen);
/* The text of the config file at path into *text (malloc'd, NUL-ended):
 * only a regular file (a directory or FIFO is refused, opened without
 * blocking), at most 64 MiB, no NUL byte (the parser would stop there and
 * ignore the rest).  Returns 0 or -errno with "PATH: why" in err. */
int cbus_cfg_read_text(const char *path, char **text, char *err, size_t errlen);
/* A path from a config value: v itself if absolute or base_dir is empty,
 * else base_dir/v (the config's own directory).  0 or -ENAMETOOLONG. */
int cbus_cfg_path(char *dst, size_t dstlen, const char *base_dir, const char *v);
/* A daemon's parser of its config text (name for messages; base_dir: the
 * config's own directory, for cbus_cfg_path).  Returns 0 or -errno. */
typedef int (*cbus_cfg_parse_fn)(void *conf, const char *name, const char *text,
                                 const char *base_dir, char *err, size_t errlen);
/* Reads the config file at path (cbus_cfg_read_text) and hands its text and
 * directory to parse.  Returns 0, or -errno with a message in err. */
int cbus_cfg_load_with(const char *path, cbus_cfg_parse_fn parse, void *conf, char *err,
                       size_t errlen);
/* A key no parser took: "unknown key" when e's section is one of sections
 * (NULL-ended), else "unknown section [S]".  Returns -EINVAL (err filled). */
int cbus_cfg_unknown(const struct cbus_cfg *cfg, const struct cbus_cfg_entry *e,
                     const char *const *sections, char *err, size_t errlen);
/* Replaces the first "%b" in the path s (len bytes) by the bus name.
 * Returns 0, or -ENAMETOOLONG (s unchanged). */
int cbus_cfg_expand_bus(char *s, size_t len, const char *bus);
/* "HOST:PORT" (or "[V6]:PORT") on loopback only: 127.0.0.0/8, ::1 or
 * localhost (-> 127.0.0.1); port 0..65535 (0: any free one).  Returns 0 or
 * -EINVAL with *why set to a phrase for the message. */
int cbus_parse_loopback_listen(const char *v, char *host, size_t hostlen, unsigned *port,
                               const char **why);
/* Parses text already in memory; name is used in messages. */
int cbus_cfg_parse(struct cbus_cfg *cfg, const char *name, const char *text, char *err, size_t errlen);
void cbus_cfg_free(struct cbus_cfg *cfg);

/* Formats "FILE:LINE: [section] key: " + message into err; returns -EINVAL. */
int cbus_cfg_error(const struct cbus_cfg *cfg, const struct cbus_cfg_entry *e, char *err,
                   size_t errlen, const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Value parsers: 0 or -EINVAL (err filled, naming file, line and key). */
int cbus_cfg_u64(const struct cbus_cfg *cfg, const struct cbus_cfg_entry *e, uint64_t min,
                 uint64_t max, uint64_t *out, char *err, size_t errlen);
int cbus_cfg_double(const struct cbus_cfg *cfg, const struct cbus_cfg_entry *e, double min,
                    double max, double *out, char *err, size_t errlen);
int cbus_cfg_bool(const struct cbus_cfg *cfg, const struct cbus_cfg_entry *e, int *out,
                  char *err, size_t errlen);
/* "250ms", "2s", "5m", "1h", "1d", "7d"; a bare number is seconds. */
int cbus_cfg_duration_ns(const struct cbus_cfg *cfg, const struct cbus_cfg_entry *e,
                         uint64_t *out, char *err, size_t errlen);
/* "4096", "64k", "8M", "1G" (powers of 1024). */
int cbus_cfg_size(const struct cbus_cfg *cfg, const struct cbus_cfg_entry *e, uint64_t *out,
                  char *err, size_t errlen);
/* One of choices (NULL-terminated); *out gets its index. */
int cbus_cfg_choice(const struct cbus_cfg *cfg, const struct cbus_cfg_entry *e,
                    const char *const *choices, unsigned *out, char *err, size_t errlen);

/* The sections every daemon shares (issue 18), parsed once here:
 *
 *   [bus]     name = BUS            the bus to read (--bus overrides)
 *             consumer = NAME       the consumer name on it
 *             start = newest|oldest where a start with nothing saved reads
 *                                   from (attach.h: the resume policy)
 *   [status]  file = PATH | off     the status envelope (status.h)
 *             interval = DURATION   how often it is rewritten (>= 10ms)
 *
 * Old spellings are still taken, each with a warning naming file:line and
 * the new spelling: [<daemon>] bus, [<daemon>] name (audit, ratelimit),
 * [<daemon>] start (audit),
 * [bus] consumer_name (export), [<daemon>] status_file and status_interval
 * (ratelimit).  The daemon points at its own fields (NULL: it has no such
 * setting, and the key stays its own business). */
struct cbus_cfg_common {
    const char *daemon_section;   /* "audit", "ratelimit": where its old spellings live */
    char *bus;                    /* CBUS_NAME_MAX bytes */
    char *consumer;
    size_t consumer_size;         /* a daemon may need a shorter name (ratelimit) */
    char *status_file;
    size_t status_file_size;
    int *status_off;              /* set by file = off; NULL: off empties status_file */
    int status_required;          /* the daemon always writes one: off is refused */
    uint64_t *status_interval_ns;
    /* [bus] start = newest | oldest (| resume with start_resume): where a
     * start without a saved position reads from (attach.h, case 3), as an
     * enum cbus_start. */
    unsigned *start;
    int start_resume;
};

/* Takes e if it is one of the shared keys or an old spelling of one.
 * Returns 1 (taken), 0 (not one of them) or -EINVAL (err filled). */
int cbus_cfg_common_entry(const struct cbus_cfg_common *cc, const struct cbus_cfg *cfg,
                          const struct cbus_cfg_entry *e, char *err, size_t errlen);

/* Shared parsers for values that also come from flags (no file context):
 * cbus_parse_duration_ns, cbus_parse_size (consumers/events/units.h). */
#include "units.h"

#endif
