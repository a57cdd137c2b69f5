#include "config.h"

#include "daemon.h"
#include "log.h"

#include <cbus/consumer.h>

#include <cbus/cbus.h>
#include <cbus/layout.h>

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
        s[--n] = '\0';
    return s;
}

/* Cuts an unquoted trailing comment and unquotes a "quoted" value in place.
 * Returns NULL on an unterminated quote. */
static char *clean_value(char *v)
{
    v = trim(v);
    if (*v == '"') {
        char *end = strchr(v + 1, '"');
        if (!end)
            return NULL;
        *end = '\0';
        return v + 1;
    }
    for (char *c = v; *c; c++) {
        if ((*c == '#' || *c == ';') && (c == v || c[-1] == ' ' || c[-1] == '\t')) {
            *c = '\0';
            break;
        }
    }
    return trim(v);
}

static int valid_key(const char *k)
{
    if (!*k)
        return 0;
    for (; *k; k++)
        if (!isalnum((unsigned char)*k) && *k != '_' && *k != '-' && *k != '.' && *k != '/' &&
            *k != '*' && *k != ':')
            return 0;
    return 1;
}

static int is_state_ref(const char *v)
{
    return v[0] == '%' && v[1] == 'S' && (v[2] == '\0' || v[2] == '/');
}

/* "%S" and "%S/..." values become the state directory: one allocation for
 * all of them, so entries can point into it. */
static int expand_state_dirs(struct cbus_cfg *cfg, char *err, size_t errlen)
{
    char root[4096];
    size_t need = 0;
    int have_root = 0;
    for (size_t i = 0; i < cfg->count; i++) {
        if (!is_state_ref(cfg->entries[i].value))
            continue;
        if (!have_root) {
            int r = cbus_state_dir_default(root, sizeof root, NULL);
            if (r)
                return cbus_cfg_error(cfg, &cfg->entries[i], err, errlen,
                                      "%%S: %s (set XDG_STATE_HOME or HOME, or give a path)",
                                      r == -ENOENT ? "no home directory for the state dir"
                                                   : "state dir path too long");
            have_root = 1;
        }
        need += strlen(root) + strlen(cfg->entries[i].value + 2) + 1;
    }
    if (!need)
        return 0;
    cfg->expanded = malloc(need);
    if (!cfg->expanded) {
        snprintf(err, errlen, "%s: out of memory", cfg->path);
        return -ENOMEM;
    }
    char *o = cfg->expanded;
    for (size_t i = 0; i < cfg->count; i++) {
        struct cbus_cfg_entry *e = &cfg->entries[i];
        if (!is_state_ref(e->value))
            continue;
        int n = sprintf(o, "%s%s", root, e->value + 2);
        e->value = o;
        o += n + 1;
    }
    return 0;
}

int cbus_cfg_parse(struct cbus_cfg *cfg, const char *name, const char *text, char *err,
                   size_t errlen)
{
    memset(cfg, 0, sizeof *cfg);
    if (!name || !text)
        return -EINVAL;
    cfg->path = strdup(name);
    cfg->arena = strdup(text);
    size_t cap = 16;
    cfg->entries = calloc(cap, sizeof *cfg->entries);
    if (!cfg->path || !cfg->arena || !cfg->entries) {
        cbus_cfg_free(cfg);
        snprintf(err, errlen, "%s: out of memory", name);
        return -ENOMEM;
    }
    const char *section = "";
    unsigned lineno = 0;
    /* strtok_r would merge empty lines and lose the count: walk by hand. */
    char *line = cfg->arena;
    while (line) {
        lineno++;
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        char *s = trim(line);
        if (*s == '\0' || *s == '#' || *s == ';') {
            line = nl ? nl + 1 : NULL;
            continue;
        }
        if (*s == '[') {
            char *end = strchr(s, ']');
            if (!end || trim(end + 1)[0] != '\0') {
                snprintf(err, errlen, "%s:%u: malformed section header (want [name])", name, lineno);
                cbus_cfg_free(cfg);
                return -EINVAL;
            }
            *end = '\0';
            section = trim(s + 1);
            if (!valid_key(section)) {
                snprintf(err, errlen, "%s:%u: bad section name '%s'", name, lineno, section);
                cbus_cfg_free(cfg);
                return -EINVAL;
            }
            line = nl ? nl + 1 : NULL;
            continue;
        }
        char *eq = strchr(s, '=');
        if (!eq) {
            snprintf(err, errlen, "%s:%u: expected 'key = value'", name, lineno);
            cbus_cfg_free(cfg);
            return -EINVAL;
        }
        *eq = '\0';
        char *key = trim(s);
        char *value = clean_value(eq + 1);
        if (!valid_key(key)) {
            snprintf(err, errlen, "%s:%u: bad key '%s'", name, lineno, key);
            cbus_cfg_free(cfg);
            return -EINVAL;
        }
        if (!value) {
            snprintf(err, errlen, "%s:%u: %s: unterminated quote", name, lineno, key);
            cbus_cfg_free(cfg);
            return -EINVAL;
        }
        if (cfg->count == cap) {
            cap *= 2;
            struct cbus_cfg_entry *n = realloc(cfg->entries, cap * sizeof *n);
            if (!n) {
                cbus_cfg_free(cfg);
                snprintf(err, errlen, "%s: out of memory", name);
                return -ENOMEM;
            }
            cfg->entries = n;
        }
        cfg->entries[cfg->count++] =
            (struct cbus_cfg_entry){.section = section, .key = key, .value = value, .line = lineno};
        line = nl ? nl + 1 : NULL;
    }
    int r = expand_state_dirs(cfg, err, errlen);
    if (r)
        cbus_cfg_free(cfg);
    return r;
}

#define CFG_MAX_BYTES ((size_t)64 << 20)

int cbus_cfg_read_text(const char *path, char **text, char *err, size_t errlen)
{
    *text = NULL;
    /* O_NONBLOCK: a FIFO planted at the path must not hang the start; a
     * directory would read as an empty file, i.e. a daemon on defaults.
     * Only a regular file is a config. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "%s: %s", path, strerror(e));
        return -e;
    }
    struct stat st;
    int fs = fstat(fd, &st);
    if (fs < 0 || !S_ISREG(st.st_mode)) {
        int isdir = fs == 0 && S_ISDIR(st.st_mode);
        close(fd);
        snprintf(err, errlen, "%s: %s", path,
                 isdir ? "is a directory, not a config file" : "not a regular file");
        return isdir ? -EISDIR : -EINVAL;
    }
    size_t cap = (size_t)st.st_size + 4096, n = 0;
    char *buf = cap <= CFG_MAX_BYTES + 4096 ? malloc(cap) : NULL;
    int rc = buf ? 0 : (cap > CFG_MAX_BYTES + 4096 ? -EFBIG : -ENOMEM);
    while (!rc) {
        if (n + 1 >= cap) { /* it grew since the fstat */
            char *nb = cap <= CFG_MAX_BYTES ? realloc(buf, cap * 2) : NULL;
            if (!nb) {
                rc = cap > CFG_MAX_BYTES ? -EFBIG : -ENOMEM;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t r = read(fd, buf + n, cap - n - 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            rc = -EIO;
        else if (r == 0)
            break;
        else
            n += (size_t)r;
    }
    close(fd);
    if (!rc && n > CFG_MAX_BYTES)
        rc = -EFBIG;
    if (!rc && memchr(buf, '\0', n))
        rc = -EBADMSG;
    if (rc) {
        free(buf);
        snprintf(err, errlen, "%s: %s", path,
                 rc == -EFBIG    ? "larger than 64 MiB"
                 : rc == -EIO    ? "read error"
                 : rc == -EBADMSG ? "contains a NUL byte (not a text file)"
                                 : strerror(-rc));
        return rc == -EBADMSG ? -EINVAL : rc;
    }
    buf[n] = '\0';
    *text = buf;
    return 0;
}

int cbus_cfg_load(struct cbus_cfg *cfg, const char *path, char *err, size_t errlen)
{
    memset(cfg, 0, sizeof *cfg);
    char *buf;
    int r = cbus_cfg_read_text(path, &buf, err, errlen);
    if (r)
        return r;
    r = cbus_cfg_parse(cfg, path, buf, err, errlen);
    free(buf);
    return r;
}

int cbus_cfg_load_with(const char *path, cbus_cfg_parse_fn parse, void *conf, char *err,
                       size_t errlen)
{
    char *text;
    int r = cbus_cfg_read_text(path, &text, err, errlen);
    if (r)
        return r;
    char *dir = strdup(path);
    if (!dir) {
        free(text);
        snprintf(err, errlen, "%s: out of memory", path);
        return -ENOMEM;
    }
    r = parse(conf, path, text, dirname(dir), err, errlen);
    free(dir);
    free(text);
    return r;
}

int cbus_cfg_unknown(const struct cbus_cfg *cfg, const struct cbus_cfg_entry *e,
                     const char *const *sections, char *err, size_t errlen)
{
    for (size_t i = 0; sections[i]; i++)
        if (!strcmp(e->section, sections[i]))
            return cbus_cfg_error(cfg, e, err, errlen, "unknown key");
    return cbus_cfg_error(cfg, e, err, errlen, "unknown section [%s]", e->section);
}

int cbus_cfg_expand_bus(char *s, size_t len, const char *bus)
{
    char *p = strstr(s, "%b");
    if (!p)
        return 0;
    size_t head = (size_t)(p - s), blen = strlen(bus), tail = strlen(p + 2);
    if (head + blen + tail >= len)
        return -ENAMETOOLONG;
    memmove(p + blen, p + 2, tail + 1);
    memcpy(p, bus, blen);
    return 0;
}

int cbus_cfg_path(char *dst, size_t dstlen, const char *base_dir, const char *v)
{
    int n;
    if (v[0] == '/' || !base_dir || !base_dir[0])
        n = snprintf(dst, dstlen, "%s", v);
    else
        n = snprintf(dst, dstlen, "%s/%s", base_dir, v);
    return n < 0 || (size_t)n >= dstlen ? -ENAMETOOLONG : 0;
}

int cbus_parse_loopback_listen(const char *v, char *host, size_t hostlen, unsigned *port,
                               const char **why)
{
    const char *colon = strrchr(v, ':');
    *why = "want HOST:PORT (127.0.0.1:9470 or [::1]:9470)";
    if (!colon || colon == v)
        return -EINVAL;
    char h[64];
    size_t hl = (size_t)(colon - v);
    if (v[0] == '[' && hl > 2 && v[hl - 1] == ']') { /* [::1]:port */
        v++;
        hl -= 2;
    }
    if (hl >= sizeof h || hl >= hostlen)
        return -EINVAL;
    memcpy(h, v, hl);
    h[hl] = '\0';
    char *end;
    unsigned long p = strtoul(colon + 1, &end, 10);
    if (*end || colon[1] == '\0' || p > 65535) {
        *why = "port must be 0..65535";
        return -EINVAL;
    }
    if (!strcmp(h, "localhost"))
        snprintf(h, sizeof h, "127.0.0.1");
    struct in_addr a4;
    struct in6_addr a6;
    int loop4 = inet_pton(AF_INET, h, &a4) == 1 && (ntohl(a4.s_addr) >> 24) == 127;
    int loop6 = inet_pton(AF_INET6, h, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
    if (!loop4 && !loop6) {
        *why = "served on loopback only (127.0.0.0/8, ::1)";
        return -EINVAL;
    }
    snprintf(host, hostlen, "%s", h);
    *port = (unsigned)p;
    return 0;
}

void cbus_cfg_free(struct cbus_cfg *cfg)
{
    free(cfg->path);
    free(cfg->entries);
    free(cfg->arena);
    free(cfg->expanded);
    memset(cfg, 0, sizeof *cfg);
}

int cbus_cfg_error(const struct cbus_cfg *cfg, const struct cbus_cfg_entry *e, char *err,
                   size_t errlen, const char *fmt, ...)
{
    int n;
    if (e->section[0])
        n = snprintf(err, errlen, "%s:%u: [%s] %s: ", cfg->path, e->line, e->section, e->key);
    else
        n = snprintf(err, errlen, "%s:%u: %s: ", cfg->path, e->line, e->key);
    if (n >= 0 && (size_t)n < errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return -EINVAL;
}

int cbus_cfg_u64(const struct cbus_cfg *cfg, const struct cbus_cfg_entry *e, uint64_t min,
                 uint64_t max, uint64_t *out, char *err, size_t errlen)
{
    const char *v = e->value;
    char *end;
    errno = 0;
    if (!isdigit((unsigned char)*v))
        return cbus_cfg_error(cfg, e, err, errlen, "'%s' is not a whole number", v);
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || *end)
        return cbus_cfg_error(cfg, e, err, errlen, "'%s' is not a whole number", v);
    if (x < min || x > max)
        return cbus_cfg_error(cfg, e, err, errlen, "%llu is out of range [%llu, %llu]", x,
                              (unsigned long long)min, (unsigned long long)max);
    *out = x;
    return 0;
}

int cbus_cfg_double(const struct cbus_cfg *cfg, const struct cbus_cfg_entry *e, double min,
                    double max, double *out, char *err, size_t errlen)
{
    char *end;
    errno = 0;
    double x = strtod(e->value, &end);
    if (errno || end == e->value || *end || !isfinite(x))
        return cbus_cfg_error(cfg, e, err, errlen, "'%s' is not a number", e->value);
    if (x < min || x > max)
        return cbus_cfg_error(cfg, e, err, errlen, "%g is out of range [%g, %g]", x, min, max);
    *out = x;
    return 0;
}

int cbus_cfg_bool(const struct cbus_cfg *cfg, const struct cbus_cfg_entry *e, int *out,
                  char *err, size_t errlen)
{
    static const char *const yes[] = {"true", "yes", "on", "1"}, *const no[] = {"false", "no", "off", "0"};
    for (unsigned i = 0; i < 4; i++) {
        if (!strcasecmp(e->value, yes[i])) {
            *out = 1;
            return 0;
        }
        if (!strcasecmp(e->value, no[i])) {
            *out = 0;
            return 0;
        }
    }
    return cbus_cfg_error(cfg, e, err, errlen, "'%s' is not a boolean (true/false)", e->value);
}

int cbus_cfg_duration_ns(const struct cbus_cfg *cfg, const struct cbus_cfg_entry *e,
                         uint64_t *out, char *err, size_t errlen)
{
    if (cbus_parse_duration_ns(e->value, out))
        return cbus_cfg_error(cfg, e, err, errlen,
                              "'%s' is not a duration (examples: 250ms, 2s, 5m, 1h, 7d)", e->value);
    return 0;
}

int cbus_cfg_size(const struct cbus_cfg *cfg, const struct cbus_cfg_entry *e, uint64_t *out,
                  char *err, size_t errlen)
{
    if (cbus_parse_size(e->value, out))
        return cbus_cfg_error(cfg, e, err, errlen, "'%s' is not a size (examples: 4096, 64k, 8M, 1G)",
                              e->value);
    return 0;
}

int cbus_cfg_choice(const struct cbus_cfg *cfg, const struct cbus_cfg_entry *e,
                    const char *const *choices, unsigned *out, char *err, size_t errlen)
{
    char list[256] = "";
    size_t used = 0;
    for (unsigned i = 0; choices[i]; i++) {
        if (!strcmp(e->value, choices[i])) {
            *out = i;
            return 0;
        }
        int n = snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", choices[i]);
        if (n > 0 && (size_t)n < sizeof list - used)
            used += (size_t)n;
    }
    return cbus_cfg_error(cfg, e, err, errlen, "'%s' is not one of: %s", e->value, list);
}

/* ---- the shared [bus] and [status] sections ---------------------------------- */

enum common_key { CK_BUS, CK_CONSUMER, CK_STATUS_FILE, CK_STATUS_INTERVAL, CK_START, CK_NONE };

static const char *const common_spelling[] = {"[bus] name", "[bus] consumer", "[status] file",
                                              "[status] interval", "[bus] start"};

/* Which shared key e is, and whether under an old spelling. */
static enum common_key common_key_of(const struct cbus_cfg_common *cc,
                                     const struct cbus_cfg_entry *e, int *old)
{
    const char *s = e->section, *k = e->key;
    *old = 0;
    if (!strcmp(s, "bus") && !strcmp(k, "name"))
        return CK_BUS;
    if (!strcmp(s, "bus") && !strcmp(k, "consumer"))
        return CK_CONSUMER;
    if (!strcmp(s, "status") && !strcmp(k, "file"))
        return CK_STATUS_FILE;
    if (!strcmp(s, "status") && !strcmp(k, "interval"))
        return CK_STATUS_INTERVAL;
    if (!strcmp(s, "bus") && !strcmp(k, "start"))
        return CK_START;
    *old = 1;
    if (!strcmp(s, "bus") && !strcmp(k, "consumer_name"))
        return CK_CONSUMER;
    if (!cc->daemon_section || strcmp(s, cc->daemon_section))
        return CK_NONE;
    if (!strcmp(k, "bus"))
        return CK_BUS;
    if (!strcmp(k, "name"))
        return CK_CONSUMER;
    if (!strcmp(k, "status_file"))
        return CK_STATUS_FILE;
    if (!strcmp(k, "status_interval"))
        return CK_STATUS_INTERVAL;
    if (!strcmp(k, "start"))
        return CK_START;
    return CK_NONE;
}

static int common_name(const struct cbus_cfg *cfg, const struct cbus_cfg_entry *e, char *dst,
                       size_t size, const char *what, char *err, size_t errlen)
{
    size_t n = strlen(e->value);
    if (cbus_name_valid(e->value) || n >= size)
        return cbus_cfg_error(cfg, e, err, errlen,
                              "'%s' is not a valid %s name (1..%zu of [A-Za-z0-9_.-])", e->value,
                              what, size - 1);
    memcpy(dst, e->value, n + 1);
    return 1;
}

int cbus_cfg_common_entry(const struct cbus_cfg_common *cc, const struct cbus_cfg *cfg,
                          const struct cbus_cfg_entry *e, char *err, size_t errlen)
{
    int old;
    enum common_key k = common_key_of(cc, e, &old);
    if (k == CK_NONE || (k == CK_BUS && !cc->bus) || (k == CK_CONSUMER && !cc->consumer) ||
        (k == CK_STATUS_FILE && !cc->status_file) ||
        (k == CK_STATUS_INTERVAL && !cc->status_interval_ns) || (k == CK_START && !cc->start))
        return 0;
    if (old)
        cbus_log_warn("%s:%u: [%s] %s is deprecated: write %s (still accepted)",
                      cfg->path ? cfg->path : "config", e->line, e->section, e->key,
                      common_spelling[k]);
    switch (k) {
    case CK_BUS:
        return common_name(cfg, e, cc->bus, CBUS_NAME_MAX, "bus", err, errlen);
    case CK_CONSUMER:
        return common_name(cfg, e, cc->consumer, cc->consumer_size, "consumer", err, errlen);
    case CK_STATUS_FILE: {
        size_t n = strlen(e->value);
        int off = !strcmp(e->value, "off");
        if (off && cc->status_required)
            return cbus_cfg_error(cfg, e, err, errlen, "this daemon always writes its status");
        if (cc->status_off)
            *cc->status_off = off;
        if (off) {
            cc->status_file[0] = '\0';
            return 1;
        }
        if (n == 0 || n >= cc->status_file_size)
            return cbus_cfg_error(cfg, e, err, errlen, "must be 1..%zu characters",
                                  cc->status_file_size - 1);
        memcpy(cc->status_file, e->value, n + 1);
        return 1;
    }
    case CK_STATUS_INTERVAL: {
        int r = cbus_cfg_duration_ns(cfg, e, cc->status_interval_ns, err, errlen);
        if (r)
            return r;
        if (*cc->status_interval_ns < 10000000u)
            return cbus_cfg_error(cfg, e, err, errlen, "must be at least 10ms");
        return 1;
    }
    case CK_START: {
        /* enum cbus_start values, in the order of the choices */
        static const char *const with_resume[] = {"newest", "oldest", "resume", NULL};
        static const char *const without[] = {"newest", "oldest", NULL};
        static const unsigned map[] = {CBUS_START_NEWEST, CBUS_START_OLDEST, CBUS_START_RESUME};
        unsigned i;
        int r = cbus_cfg_choice(cfg, e, cc->start_resume ? with_resume : without, &i, err, errlen);
        if (r)
            return r;
        *cc->start = map[i];
        return 1;
    }
    default:
        return 0;
    }
}
