/* The daemons' files (declared in files.h): the private state dir (%S),
 * made and checked before use, and whole files replaced atomically or read
 * whole, for the daemons and the tools alike (cbusctl, the collector). */
#include "files.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pwd.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int cbus_state_dir_default(char *out, size_t len, const char *sub)
{
    const char *base = getenv("XDG_STATE_HOME"), *tail = "/cbus";
    if (!base || base[0] != '/') {
        if (geteuid() == 0) {
            base = "/var/lib";
        } else {
            base = getenv("HOME");
            if (!base || base[0] != '/') {
                struct passwd *pw = getpwuid(geteuid());
                base = pw && pw->pw_dir && pw->pw_dir[0] == '/' ? pw->pw_dir : NULL;
            }
            if (!base)
                return -ENOENT;
            tail = "/.local/state/cbus";
        }
    }
    int n = snprintf(out, len, "%s%s%s%s", base, tail, sub ? "/" : "", sub ? sub : "");
    return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* One component on the way to a state dir: an existing ancestor must not
 * let another user rename or replace what lies below it. */
static int check_ancestor(const char *path, char *why, size_t whylen)
{
    struct stat st;
    uid_t me = geteuid();
    if (lstat(path, &st) < 0)
        return -errno;
    if (S_ISLNK(st.st_mode)) {
        if (st.st_uid != 0 && st.st_uid != me) {
            snprintf(why, whylen, "%s: a symlink owned by uid %u, not by us (uid %u) or root",
                     path, (unsigned)st.st_uid, (unsigned)me);
            return -EPERM;
        }
        if (stat(path, &st) < 0)
            return -errno;
    }
    if (!S_ISDIR(st.st_mode)) {
        snprintf(why, whylen, "%s: not a directory", path);
        return -ENOTDIR;
    }
    if (st.st_uid != 0 && st.st_uid != me) {
        snprintf(why, whylen, "%s: owned by uid %u, not by us (uid %u) or root", path,
                 (unsigned)st.st_uid, (unsigned)me);
        return -EPERM;
    }
    if ((st.st_mode & (S_IWGRP | S_IWOTH)) && !(st.st_mode & S_ISVTX)) {
        snprintf(why, whylen, "%s: mode %04o lets group or others rename what is in it", path,
                 (unsigned)(st.st_mode & 07777));
        return -EPERM;
    }
    return 0;
}

int cbus_state_dir_prepare(const char *dir, unsigned mode, char *why, size_t whylen)
{
    char path[4096];
    if (whylen)
        why[0] = '\0';
    int n = snprintf(path, sizeof path, "%s", dir);
    if (n <= 0 || (size_t)n >= sizeof path) {
        snprintf(why, whylen, "state dir %s: %s", dir, n <= 0 ? "empty path" : "path too long");
        return n <= 0 ? -EINVAL : -ENAMETOOLONG;
    }
    while (n > 1 && path[n - 1] == '/')
        path[--n] = '\0';
    /* Each ancestor: make it if missing, then check it. */
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(path, (mode_t)mode) < 0 && errno != EEXIST) {
            int e = -errno;
            snprintf(why, whylen, "state dir %s: mkdir %s: %s", dir, path, strerror(-e));
            return e;
        }
        char reason[4200];
        int r = check_ancestor(path, reason, sizeof reason);
        if (r) {
            snprintf(why, whylen, "state dir %s: %s", dir, r == -EPERM || r == -ENOTDIR
                                                               ? reason : strerror(-r));
            return r;
        }
        *p = '/';
    }
    if (mkdir(path, (mode_t)mode) < 0 && errno != EEXIST) {
        int e = -errno;
        snprintf(why, whylen, "state dir %s: %s", dir, strerror(-e));
        return e;
    }
    /* The directory itself: ours alone.  A symlink here is refused, whoever
     * made it (the target could be anywhere); O_NOFOLLOW closes the race
     * with this lstat (Linux then fails with ELOOP or ENOTDIR). */
    struct stat lst;
    if (lstat(path, &lst) == 0 && S_ISLNK(lst.st_mode)) {
        snprintf(why, whylen, "state dir %s: is a symlink (give the real directory)", dir);
        return -EPERM;
    }
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        int e = -errno;
        snprintf(why, whylen, "state dir %s: %s", dir,
                 e == -ELOOP ? "is a symlink (give the real directory)"
                 : e == -ENOTDIR ? "not a directory" : strerror(-e));
        return e == -ELOOP ? -EPERM : e;
    }
    struct stat st;
    int r = fstat(fd, &st) < 0 ? -errno : 0;
    close(fd);
    if (r) {
        snprintf(why, whylen, "state dir %s: %s", dir, strerror(-r));
        return r;
    }
    if (st.st_uid != geteuid()) {
        snprintf(why, whylen, "state dir %s: owned by uid %u, not by us (uid %u): another user "
                 "could plant the files we write there; chown it or choose another dir",
                 dir, (unsigned)st.st_uid, (unsigned)geteuid());
        return -EPERM;
    }
    if (st.st_mode & (S_IWGRP | S_IWOTH)) {
        snprintf(why, whylen, "state dir %s: mode %04o lets group or others write to it; "
                 "chmod go-w it or choose another dir", dir, (unsigned)(st.st_mode & 07777));
        return -EPERM;
    }
    return 0;
}

int cbus_state_file_dir_prepare(const char *file, unsigned mode, char *why, size_t whylen)
{
    char dir[4096];
    int n = snprintf(dir, sizeof dir, "%s", file);
    if (n <= 0 || (size_t)n >= sizeof dir) {
        snprintf(why, whylen, "%s: %s", file, n <= 0 ? "empty path" : "path too long");
        return n <= 0 ? -EINVAL : -ENAMETOOLONG;
    }
    return cbus_state_dir_prepare(dirname(dir), mode, why, whylen);
}

/* Opens a new temporary beside path: a unique name (pid, a counter and the
 * clock), created exclusively and never through a symlink. */
static int open_temp(const char *path, char *tmp, size_t tmplen)
{
    static _Atomic unsigned counter;
    for (int tries = 0; tries < 16; tries++) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        unsigned c = atomic_fetch_add_explicit(&counter, 1, memory_order_relaxed);
        int n = snprintf(tmp, tmplen, "%s.tmp.%ld.%u.%lx", path, (long)getpid(), c,
                         (unsigned long)ts.tv_nsec);
        if (n < 0 || (size_t)n >= tmplen)
            return -ENAMETOOLONG;
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd >= 0 || errno != EEXIST)
            return fd >= 0 ? fd : -errno;
    }
    return -EEXIST;
}

void cbus_test_slow_disk(void)
{
    static int ms = -1;
    if (ms < 0) {
        const char *v = getenv("CBUS_TEST_SLOW_FSYNC_MS");
        long n = v ? strtol(v, NULL, 10) : 0;
        ms = n > 0 && n < 600000 ? (int)n : 0;
    }
    if (ms) {
        struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
            ;
    }
}

int cbus_replace_file(const char *path, const void *data, size_t len, int durable)
{
    char tmp[4096];
    int fd = open_temp(path, tmp, sizeof tmp);
    if (fd < 0)
        return fd;
    const char *p = data;
    size_t left = len;
    while (left) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            int e = -errno;
            close(fd);
            unlink(tmp);
            return e;
        }
        p += w;
        left -= (size_t)w;
    }
    if (durable)
        cbus_test_slow_disk();
    if ((durable && fsync(fd) < 0) || close(fd) < 0) {
        int e = -errno;
        unlink(tmp);
        return e;
    }
    /* rename replaces a symlink planted at path itself; it never follows it. */
    if (rename(tmp, path) < 0) {
        int e = -errno;
        unlink(tmp);
        return e;
    }
    if (durable) {
        /* The rename is durable only once the directory is synced. */
        char dir[4096];
        snprintf(dir, sizeof dir, "%s", path);
        int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
    }
    return 0;
}

int cbus_write_file_atomic(const char *path, const void *data, size_t len)
{
    return cbus_replace_file(path, data, len, 1);
}

int cbus_read_file(const char *path, size_t max, char **out, size_t *len)
{
    if (!max)
        max = (size_t)64 << 20;
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return -errno;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    int rc = 0;
    for (;;) {
        if (!buf) {
            rc = -ENOMEM;
            break;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (n > max) {
            rc = -EFBIG;
            break;
        }
        if (n < cap - 1)
            break; /* end of file, or an error (ferror below) */
        char *nb = realloc(buf, cap * 2);
        if (!nb)
            free(buf);
        buf = nb;
        cap *= 2;
    }
    if (!rc && ferror(f))
        rc = -EIO;
    fclose(f);
    if (rc) {
        free(buf);
        return rc;
    }
    buf[n] = '\0';
    *out = buf;
    if (len)
        *len = n;
    return 0;
}
