#include "logdir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"
#include "log.h"
#include "scan.h"

int audit_name_make(char *out, size_t n, const char *prefix, uint64_t created_ns,
                    uint64_t file_seq)
{
    time_t secs = (time_t)(created_ns / 1000000000u);
    struct tm tm;
    gmtime_r(&secs, &tm);
    int w = snprintf(out, n, "%s-%04d%02d%02dT%02d%02d%02d.%03uZ-%08llu" AUDIT_SUFFIX, prefix,
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, (unsigned)(created_ns / 1000000u % 1000u),
                     (unsigned long long)file_seq);
    return w < 0 || (size_t)w >= n ? -ENAMETOOLONG : 0;
}

int audit_name_parse(const char *name, const char *prefix, uint64_t *file_seq)
{
    size_t pl = strlen(prefix), nl = strlen(name), sl = strlen(AUDIT_SUFFIX);
    /* PREFIX '-' 8+1+6 '.' 3 'Z' '-' 8+ digits SUFFIX */
    if (nl < pl + 1 + 20 + 1 + 8 + sl || strncmp(name, prefix, pl) != 0 || name[pl] != '-' ||
        strcmp(name + nl - sl, AUDIT_SUFFIX) != 0)
        return -EINVAL;
    const char *t = name + pl + 1;
    static const char shape[] = "dddddddd" "Tdddddd" ".dddZ-";
    for (size_t i = 0; i < sizeof shape - 1; i++) {
        if (shape[i] == 'd' ? (t[i] < '0' || t[i] > '9') : t[i] != shape[i])
            return -EINVAL;
    }
    const char *d = t + sizeof shape - 1, *end = name + nl - sl;
    if (end - d < 8)
        return -EINVAL;
    uint64_t v = 0;
    for (; d < end; d++) {
        if (*d < '0' || *d > '9' || v > UINT64_MAX / 10)
            return -EINVAL;
        v = v * 10 + (uint64_t)(*d - '0');
    }
    *file_seq = v;
    return 0;
}

static int ent_cmp(const void *a, const void *b)
{
    const struct audit_file_ent *x = a, *y = b;
    if (x->file_seq != y->file_seq)
        return x->file_seq < y->file_seq ? -1 : 1;
    return strcmp(x->name, y->name);
}

int audit_dir_list(const char *dir, const char *prefix, struct audit_file_ent **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d)
        return -errno;
    size_t cap = 0, cnt = 0;
    struct audit_file_ent *v = NULL;
    struct dirent *de;
    while ((de = readdir(d))) {
        uint64_t seq;
        if (audit_name_parse(de->d_name, prefix, &seq) ||
            strlen(de->d_name) >= AUDIT_FILE_NAME_MAX)
            continue;
        if (cnt == cap) {
            cap = cap ? cap * 2 : 16;
            struct audit_file_ent *nv = realloc(v, cap * sizeof *nv);
            if (!nv) {
                free(v);
                closedir(d);
                return -ENOMEM;
            }
            v = nv;
        }
        memcpy(v[cnt].name, de->d_name, strlen(de->d_name) + 1); /* length checked above */
        v[cnt].file_seq = seq;
        cnt++;
    }
    closedir(d);
    if (cnt)
        qsort(v, cnt, sizeof *v, ent_cmp);
    *out = v;
    *n = cnt;
    return 0;
}

int audit_fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int r = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    return r;
}

/* Keeps buf[from..len) in PATH.torn-FROM before the file is cut. */
static int keep_cut_bytes(const char *path, const uint8_t *buf, size_t from, size_t len,
                          char *side, size_t side_len)
{
    snprintf(side, side_len, "%s.torn-%zu", path, from);
    return cbus_write_file_atomic(side, buf + from, len - from);
}

int audit_recover(struct audit_chain *c, const char *dir, const char *prefix,
                  struct audit_resume *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    memset(c->hash, 0, sizeof c->hash);
    c->next_seq = 0;
    struct audit_file_ent *files;
    size_t n;
    int rc = audit_dir_list(dir, prefix, &files, &n);
    if (rc) {
        snprintf(err, errlen, "%s: %s", dir, strerror(-rc));
        return rc;
    }
    for (size_t i = n; i-- > 0;) {
        char path[4096], side[4200];
        snprintf(path, sizeof path, "%s/%s", dir, files[i].name);
        uint8_t *buf;
        size_t len;
        if ((rc = audit_read_file(path, &buf, &len))) {
            snprintf(err, errlen, "%s: %s", path, strerror(-rc));
            free(files);
            return rc;
        }
        struct audit_verify_state st = {0};
        struct audit_scan_result res;
        audit_scan(c, &st, files[i].name, buf, len, 1, NULL, NULL, &res);
        if (!res.has_header) {
            /* Created but its header never reached the disk (or it was
             * damaged): set the whole file aside and continue the chain
             * from its predecessor. */
            rc = len ? keep_cut_bytes(path, buf, 0, len, side, sizeof side) : 0;
            free(buf);
            if (rc == 0 && unlink(path) < 0)
                rc = -errno;
            if (rc) {
                snprintf(err, errlen, "%s: %s; cannot set it aside: %s", path, res.why,
                         strerror(-rc));
                free(files);
                return rc;
            }
            audit_fsync_dir(dir);
            cbus_log_warn("recovery: %s: %s; %zu bytes moved to %s, continuing from the previous "
                          "file", path, res.why, len, len ? side : "(nothing)");
            continue;
        }
        if (res.bad) {
            size_t cut = len - res.good_end;
            /* Blocks allocated but never written before a crash read back as
             * zeros: a torn tail too, not tampering.  So does a hole left
             * when a later batch's write reached the disk before an earlier
             * one's (batches are written concurrently); nothing after the
             * hole was acknowledged, because only the contiguous durable
             * prefix is ever committed. */
            size_t z = res.good_end;
            while (z < len && buf[z] == 0)
                z++;
            if (z == len) {
                res.torn = 1;
                snprintf(res.why, sizeof res.why, "zero-filled tail");
            } else if (z - res.good_end >= 16) {
                res.torn = 1;
                snprintf(res.why, sizeof res.why,
                         "%zu zero bytes: a hole of unwritten blocks before later data",
                         z - res.good_end);
            }
            rc = keep_cut_bytes(path, buf, res.good_end, len, side, sizeof side);
            if (rc == 0 && truncate(path, (off_t)res.good_end) < 0)
                rc = -errno;
            if (rc == 0) {
                int fd = open(path, O_WRONLY | O_CLOEXEC);
                if (fd < 0 || fdatasync(fd) < 0)
                    rc = -errno;
                if (fd >= 0)
                    close(fd);
            }
            if (rc) {
                snprintf(err, errlen, "%s: cannot cut the bad tail at offset %zu: %s", path,
                         res.good_end, strerror(-rc));
                free(buf);
                free(files);
                return rc;
            }
            audit_fsync_dir(dir);
            if (res.torn)
                cbus_log_warn("recovery: %s: torn tail at offset %zu (index %lld: %s): "
                              "truncated %zu bytes (kept in %s); the chain resumes at seq %llu",
                              path, res.bad_offset, (long long)res.bad_index, res.why, cut, side,
                              (unsigned long long)st.next_seq);
            else
                cbus_log_error("recovery: %s: bad record at offset %zu (index %lld): %s; "
                               "cut %zu bytes from there (kept in %s); the chain resumes at "
                               "seq %llu", path, res.bad_offset, (long long)res.bad_index,
                               res.why, cut, side, (unsigned long long)st.next_seq);
            out->trimmed_bytes = cut;
        }
        free(buf);
        memcpy(c->hash, st.hash, sizeof c->hash);
        c->next_seq = st.next_seq;
        out->have_file = 1;
        snprintf(out->name, sizeof out->name, "%s", files[i].name);
        out->file_seq = res.hdr.file_seq;
        out->file_size = res.good_end;
        out->created_ns = res.hdr.created_ns;
        out->redaction = res.hdr.redaction;
        out->bus_id = res.hdr.bus_id;
        out->records_in_file = res.records;
        out->have_cursor = 1;
        out->cursor = res.has_last_event ? res.last_event_id + 1 : res.hdr.bus_cursor;
        break;
    }
    free(files);
    return 0;
}

int audit_retention(const char *dir, const char *prefix, unsigned keep)
{
    if (!keep)
        return 0;
    struct audit_file_ent *files;
    size_t n;
    int rc = audit_dir_list(dir, prefix, &files, &n);
    if (rc)
        return rc;
    int removed = 0;
    for (size_t i = 0; i + keep < n; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, files[i].name);
        if (unlink(path) == 0) {
            removed++;
            cbus_log_info("retention: removed %s", path);
        } else {
            cbus_log_warn("retention: cannot remove %s: %s", path, strerror(errno));
        }
    }
    free(files);
    if (removed)
        audit_fsync_dir(dir);
    return removed;
}
