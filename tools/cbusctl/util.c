#include "cbusctl.h"

#include "units.h"
#include "daemon.h"
#include "sbuf.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

void cli_error(const char *fmt, ...)
{
    va_list ap;
    fputs("cbusctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "cbusctl %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see cbusctl %s --help)\n", cmd);
    return EXIT_USAGE;
}

int cli_bus_name(const char *cmd, const char *name)
{
    if (cbus_name_valid(name) == 0)
        return 0;
    return cli_usage_error(cmd, "invalid bus name '%s': use 1..%d characters of [A-Za-z0-9_.-], "
                                "not starting with '.'",
                           name, CBUS_NAME_MAX - 1);
}

int cli_u64(const char *cmd, const char *flag, const char *text, uint64_t min, uint64_t max,
            uint64_t *out)
{
    uint64_t v = 0;
    /* Sizes accept k/M/G suffixes; plain counts are plain numbers to the same parser. */
    if (cbus_parse_size(text, &v))
        return cli_usage_error(cmd, "%s '%s': not a number", flag, text);
    if (v < min || v > max)
        return cli_usage_error(cmd, "%s %s: must be between %" PRIu64 " and %" PRIu64, flag, text,
                               min, max);
    *out = v;
    return 0;
}

int cli_u32(const char *cmd, const char *flag, const char *text, uint32_t *out)
{
    uint64_t v = 0;
    int r = cli_u64(cmd, flag, text, 0, UINT32_MAX, &v);
    if (!r)
        *out = (uint32_t)v;
    return r;
}

int cli_duration(const char *cmd, const char *flag, const char *text, uint64_t *out)
{
    if (cbus_parse_duration_ns(text, out))
        return cli_usage_error(cmd, "%s '%s': not a duration (examples: 500us, 1ms, 2s)", flag,
                               text);
    return 0;
}

int cli_seconds(const char *cmd, const char *flag, const char *text, double min, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text || *end || !isfinite(v) || v < min)
        return cli_usage_error(cmd, "%s '%s': expected seconds >= %g", flag, text, min);
    *out = v;
    return 0;
}

void cli_shm_path(char *out, size_t len, const char *name)
{
    snprintf(out, len, "/dev/shm/cbus.%s", name);
}

/* The library says -EPROTO or -EBADMSG; read the header ourselves (layout.h
 * is self-contained for this) to say which field is wrong. */
static void explain_bad_header(const char *name, const char *path, int err)
{
    char fix[160];
    snprintf(fix, sizeof fix, "destroy and recreate it (cbusctl destroy %s; cbusctl create %s)",
             name, name);

    /* O_NONBLOCK: the library refused what may be a FIFO planted at the
     * name, and a plain read-only open of a FIFO waits for a writer. */
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        cli_error("bus '%s' (%s): %s", name, path, cbus_strerror(err));
        return;
    }
    struct cbus_shm_header h;
    memset(&h, 0, sizeof h);
    struct stat st;
    int have_st = fstat(fd, &st) == 0;
    /* Read only a regular file: what else sits at the name is not ours. */
    ssize_t n = have_st && S_ISREG(st.st_mode) ? pread(fd, &h, sizeof h, 0) : -1;
    close(fd);

    if (have_st && !S_ISREG(st.st_mode)) {
        cli_error("%s is not a regular file, so not a cbus segment: remove it", path);
    } else if (n < (ssize_t)offsetof(struct cbus_shm_header, fingerprint) + 8) {
        cli_error("%s is not a cbus segment (only %zd bytes): %s", path, n < 0 ? 0 : n, fix);
    } else if (h.magic != CBUS_MAGIC) {
        cli_error("%s is not a cbus segment (bad magic 0x%016" PRIx64 "): %s", path, h.magic, fix);
    } else if (h.endian != CBUS_ENDIAN_MARK) {
        cli_error("%s was created on a machine of the other byte order: %s", path, fix);
    } else if (h.layout_major != CBUS_LAYOUT_MAJOR) {
        cli_error("bus '%s' has layout version %u.%u but this cbusctl speaks %d.%d: use the "
                  "cbusctl built with the library that created it, or %s",
                  name, h.layout_major, h.layout_minor, CBUS_LAYOUT_MAJOR, CBUS_LAYOUT_MINOR, fix);
    } else if (h.fingerprint != CBUS_LAYOUT_FINGERPRINT) {
        cli_error("bus '%s' has layout fingerprint 0x%016" PRIx64 " but this cbusctl expects "
                  "0x%016" PRIx64 " (built from another layout.h): %s",
                  name, h.fingerprint, (uint64_t)CBUS_LAYOUT_FINGERPRINT, fix);
    } else if (n == (ssize_t)sizeof h && atomic_load(&h.ready) != 1) {
        cli_error("bus '%s' was never finished by its creator (pid %u): it died while creating "
                  "it, or the header is corrupt: %s",
                  name, h.creator_pid, fix);
    } else if (have_st && h.total_size != (uint64_t)st.st_size) {
        cli_error("bus '%s' header says %" PRIu64 " bytes but %s has %jd: corrupt or truncated "
                  "segment: %s",
                  name, h.total_size, path, (intmax_t)st.st_size, fix);
    } else {
        cli_error("bus '%s' (%s) has a corrupt header (%s): %s", name, path, cbus_strerror(err),
                  fix);
    }
}

/* The library says -CBUS_EFEATURE: name the bits this cbusctl does not know. */
static void explain_features(const char *name, const char *path)
{
    struct cbus_shm_header h;
    memset(&h, 0, sizeof h);
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    ssize_t n = fd < 0 ? -1 : pread(fd, &h, sizeof h, 0);
    if (fd >= 0)
        close(fd);
    uint32_t unknown = n == (ssize_t)sizeof h
                           ? h.required_features & ~(uint32_t)CBUS_FEATURES_REQUIRED_KNOWN
                           : 0;
    cli_error("bus '%s' (%s) needs features this cbusctl does not know (required_features "
              "0x%08" PRIx32 ", unknown 0x%08" PRIx32 "; cbus %s knows 0x%08" PRIx32 "): it was "
              "created by a newer cbus; use the cbusctl of that version, or destroy and recreate "
              "it (cbusctl destroy %s; cbusctl create %s)",
              name, path, h.required_features, unknown, cbus_version(),
              (uint32_t)CBUS_FEATURES_REQUIRED_KNOWN, name, name);
}

void cli_explain_open_error(const char *name, int err)
{
    char path[64];
    cli_shm_path(path, sizeof path, name);
    struct stat st;
    switch (err) {
    case -ENOENT:
        cli_error("no bus '%s' (%s): create it with cbusctl create %s", name, path, name);
        break;
    case -EACCES:
        if (stat(path, &st) == 0)
            cli_error("permission denied on bus '%s' (%s is mode %04o, owner uid %u gid %u; you "
                      "are uid %u): run as its owner or a member of its group (cbusctl create "
                      "--group)",
                      name, path, (unsigned)(st.st_mode & 07777), (unsigned)st.st_uid,
                      (unsigned)st.st_gid, (unsigned)geteuid());
        else
            cli_error("permission denied on bus '%s' (%s)", name, path);
        break;
    case -EPERM:
        /* Only another owner now (a world-accessible mode is -CBUS_EWORLD).
         * lstat: the library does not follow a symlink at the name either. */
        if (lstat(path, &st) == 0 && st.st_uid != geteuid())
            cli_error("bus '%s' (%s) belongs to uid %u, not you (uid %u): pass --trust-owner to "
                      "use it anyway",
                      name, path, (unsigned)st.st_uid, (unsigned)geteuid());
        else
            cli_error("bus '%s' (%s): %s", name, path, cbus_strerror(err));
        break;
    case -CBUS_EWORLD:
        if (lstat(path, &st) == 0)
            cli_error("bus '%s' (%s) is mode %04o: any user on this machine can read or write "
                      "it (forge events, read prompts), so it is refused whoever owns it: "
                      "recreate it (cbusctl destroy %s; cbusctl create %s)",
                      name, path, (unsigned)(st.st_mode & 07777), name, name);
        else
            cli_error("bus '%s' (%s): %s", name, path, cbus_strerror(err));
        break;
    case -CBUS_EFEATURE:
        explain_features(name, path);
        break;
    case -EPROTO:
    case -EBADMSG:
        explain_bad_header(name, path, err);
        break;
    default:
        cli_error("bus '%s' (%s): %s", name, path, cbus_strerror(err));
        break;
    }
}

int cli_open_bus(cbus_bus **out, const char *name, unsigned flags)
{
    int r = cbus_bus_open(out, name, flags);
    if (r == 0)
        return EXIT_OK;
    cli_explain_open_error(name, r);
    return EXIT_RUNTIME;
}

const char *fmt_ns(char *buf, size_t len, uint64_t ns)
{
    if (ns < 1000)
        snprintf(buf, len, "%" PRIu64 "ns", ns);
    else if (ns < 1000000)
        snprintf(buf, len, "%.1fus", (double)ns / 1e3);
    else if (ns < 1000000000)
        snprintf(buf, len, "%.2fms", (double)ns / 1e6);
    else
        snprintf(buf, len, "%.2fs", (double)ns / 1e9);
    return buf;
}

const char *fmt_bytes(char *buf, size_t len, uint64_t bytes)
{
    if (bytes < 1024)
        snprintf(buf, len, "%" PRIu64 "B", bytes);
    else if (bytes < (UINT64_C(1) << 20))
        snprintf(buf, len, "%.1fKiB", (double)bytes / 1024);
    else if (bytes < (UINT64_C(1) << 30))
        snprintf(buf, len, "%.1fMiB", (double)bytes / (1 << 20));
    else
        snprintf(buf, len, "%.1fGiB", (double)bytes / (1 << 30));
    return buf;
}

void fmt_safe(char *out, size_t len, const char *field, size_t field_size)
{
    cbus_human_str(out, len, field, field_size); /* one escaper for every human view */
}

uint64_t cli_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int cli_sleep_ns(uint64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
    /* cbus_daemon_signals() installs handlers without SA_RESTART: a signal
     * ends the sleep with EINTR and the stop flag tells us why. */
    while (nanosleep(&ts, &ts) && errno == EINTR) {
        if (cbus_daemon_stop)
            return 1;
    }
    return cbus_daemon_stop ? 1 : 0;
}
