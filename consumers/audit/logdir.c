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
#include "state.h"

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
    cbus_test_slow_disk(); /* a test's slow disk (files.h) */
    int r = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    return r;
}

/* Keeps the bytes from file offset from (tail[0..len)) in PATH.torn-FROM. */
static int keep_cut_bytes(const char *path, const uint8_t *tail, size_t len, uint64_t from,
                          char *side, size_t side_len)
{
    snprintf(side, side_len, "%s.torn-%llu", path, (unsigned long long)from);
    return cbus_write_file_atomic(side, tail, len);
}

static void hook(const struct audit_recover_hooks *h)
{
    if (h && h->progress)
        h->progress(h->arg);
}

/* A bad tail found by a scan: buf holds the file from offset base to its end
 * (end = base + len).  Cuts it at res->good_end, keeping the bytes aside,
 * and says so.  Returns 0 or -errno with err filled. */
static int cut_tail(const char *dir, const char *path, const uint8_t *buf, size_t len,
                    uint64_t base, struct audit_scan_result *res, uint64_t next_seq,
                    struct audit_resume *out, char *err, size_t errlen)
{
    char side[4200];
    size_t rel = res->good_end - (size_t)base, cut = len - rel;
    /* Blocks allocated but never written before a crash read back as
     * zeros: a torn tail too, not tampering.  So does a hole left when a
     * later batch's write reached the disk before an earlier one's
     * (batches are written concurrently); nothing after the hole was
     * acknowledged, because only the contiguous durable prefix is ever
     * committed. */
    size_t z = rel;
    while (z < len && buf[z] == 0)
        z++;
    if (z == len) {
        res->torn = 1;
        snprintf(res->why, sizeof res->why, "zero-filled tail");
    } else if (z - rel >= 16) {
        res->torn = 1;
        snprintf(res->why, sizeof res->why,
                 "%zu zero bytes: a hole of unwritten blocks before later data", z - rel);
    }
    int rc = keep_cut_bytes(path, buf + rel, cut, res->good_end, side, sizeof side);
    if (rc == 0 && truncate(path, (off_t)res->good_end) < 0)
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
                 res->good_end, strerror(-rc));
        return rc;
    }
    audit_fsync_dir(dir);
    if (res->torn)
        cbus_log_warn("recovery: %s: torn tail at offset %zu (index %lld: %s): "
                      "truncated %zu bytes (kept in %s); the chain resumes at seq %llu",
                      path, res->bad_offset, (long long)res->bad_index, res->why, cut, side,
                      (unsigned long long)next_seq);
    else
        cbus_log_error("recovery: %s: bad record at offset %zu (index %lld): %s; "
                       "cut %zu bytes from there (kept in %s); the chain resumes at "
                       "seq %llu", path, res->bad_offset, (long long)res->bad_index,
                       res->why, cut, side, (unsigned long long)next_seq);
    out->trimmed_bytes = cut;
    return 0;
}

/* Checks one whole file continuing st (st->started: its header must
 * continue the chain).  Returns 0 (good, possibly after cutting its tail;
 * out and c describe it), 1 (no good header: set aside, out unchanged), 2
 * (a header that does not continue st: nothing changed), or -errno. */
static int recover_file(struct audit_chain *c, const char *dir, const char *name,
                        struct audit_verify_state *st, const struct audit_recover_hooks *hooks,
                        struct audit_resume *out, char *err, size_t errlen)
{
    char path[4096], side[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    uint8_t *buf;
    size_t len;
    uint64_t total;
    int rc = audit_read_range(path, 0, &buf, &len, &total, hooks ? hooks->progress : NULL,
                              hooks ? hooks->arg : NULL);
    if (rc) {
        snprintf(err, errlen, "%s: %s", path, strerror(-rc));
        return rc;
    }
    out->bytes_read += len;
    int continuing = st->started;
    struct audit_scan_result res;
    audit_scan(c, st, name, buf, len, 1, NULL, NULL, &res);
    if (!res.has_header && continuing && !res.torn) {
        free(buf);
        return 2;
    }
    if (!res.has_header) {
        /* Created but its header never reached the disk (or it was
         * damaged): set the whole file aside and continue the chain from
         * its predecessor. */
        rc = len ? keep_cut_bytes(path, buf, len, 0, side, sizeof side) : 0;
        free(buf);
        if (rc == 0 && unlink(path) < 0)
            rc = -errno;
        if (rc) {
            snprintf(err, errlen, "%s: %s; cannot set it aside: %s", path, res.why,
                     strerror(-rc));
            return rc;
        }
        audit_fsync_dir(dir);
        cbus_log_warn("recovery: %s: %s; %zu bytes moved to %s, continuing from the previous "
                      "file", path, res.why, len, len ? side : "(nothing)");
        return 1;
    }
    out->trimmed_bytes = 0;
    if (res.bad && (rc = cut_tail(dir, path, buf, len, 0, &res, st->next_seq, out, err, errlen))) {
        free(buf);
        return rc;
    }
    free(buf);
    memcpy(c->hash, st->hash, sizeof c->hash);
    c->next_seq = st->next_seq;
    out->have_file = 1;
    snprintf(out->name, sizeof out->name, "%s", name);
    out->file_seq = res.hdr.file_seq;
    out->file_size = res.good_end;
    out->created_ns = res.hdr.created_ns;
    out->redaction = res.hdr.redaction;
    out->bus_id = res.hdr.bus_id;
    out->format = res.hdr.format;
    out->records_in_file = res.records;
    out->last_off = res.last_off;
    out->have_cursor = 1;
    out->pos = res.pos;
    return 0;
}

/* The value the state names (read from its last_off into buf, len bytes,
 * of a file of total bytes) ends exactly at the state's offset with the
 * state's hash and sequence: then the chain up to there is what the state
 * says (the whole chain is `verify`'s job, not a restart's). */
static int state_matches(const struct audit_state *s, const uint8_t *buf, size_t len,
                         uint64_t total)
{
    size_t vlen = (size_t)(s->offset - s->last_off);
    struct audit_item it;
    if (total < s->offset || len < vlen || audit_parse(buf, len, &it, NULL) != 0 ||
        it.len != vlen || memcmp(it.hash, s->hash, AUDIT_HASH_LEN) != 0)
        return 0;
    if (it.is_header)
        return s->last_off == 0 && it.hdr.file_seq == s->file_seq &&
               it.hdr.first_seq == s->next_seq && it.hdr.bus_id == s->bus_id;
    return s->last_off > 0 && it.seq + 1 == s->next_seq;
}

/* Where the writer resumes: the state's file, extended by the records
 * found after the state's offset (res). */
static void resume_at(struct audit_resume *out, const char *name, const struct audit_state *s,
                      const struct audit_scan_result *res)
{
    out->have_file = 1;
    snprintf(out->name, sizeof out->name, "%s", name);
    out->file_seq = s->file_seq;
    out->file_size = res->good_end;
    out->created_ns = s->created_ns;
    out->redaction = (unsigned)s->redaction;
    out->bus_id = s->bus_id;
    out->format = s->format;
    out->records_in_file = s->records_in_file + res->records;
    out->last_off = res->records ? res->last_off : s->last_off;
    out->have_cursor = 1;
    out->pos = res->pos;
}

/* The fast path: resume from the state file s.  Returns 0 (done), 1 (the
 * state does not match the log: nothing changed, use the slow path), or
 * -errno. */
static int recover_from_state(struct audit_chain *c, const char *dir,
                              const struct audit_file_ent *files, size_t n,
                              const struct audit_state *s,
                              const struct audit_recover_hooks *hooks, struct audit_resume *out,
                              char *err, size_t errlen)
{
    size_t i = 0;
    while (i < n && (strcmp(files[i].name, s->name) || files[i].file_seq != s->file_seq))
        i++;
    if (i == n)
        return 1;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, files[i].name);
    uint8_t *buf;
    size_t len;
    uint64_t total;
    int rc = audit_read_range(path, s->last_off, &buf, &len, &total,
                              hooks ? hooks->progress : NULL, hooks ? hooks->arg : NULL);
    if (rc) {
        snprintf(err, errlen, "%s: %s", path, strerror(-rc));
        return rc;
    }
    out->bytes_read += len;
    size_t vlen = (size_t)(s->offset - s->last_off);
    if (!state_matches(s, buf, len, total)) {
        free(buf);
        cbus_log_warn("recovery: the state file does not match %s (offset %llu); checking the "
                      "whole file", path, (unsigned long long)s->offset);
        return 1;
    }
    struct audit_verify_state st = {.started = 1, .next_seq = s->next_seq,
                                    .file_seq = s->file_seq, .bus_id = s->bus_id,
                                    .pos = s->pos,
                                    .progress = hooks ? hooks->progress : NULL,
                                    .progress_arg = hooks ? hooks->arg : NULL};
    memcpy(st.hash, s->hash, AUDIT_HASH_LEN);
    snprintf(st.file_name, sizeof st.file_name, "%s", files[i].name);
    struct audit_scan_result res;
    audit_scan_tail(c, &st, buf + vlen, len - vlen, s->offset, (int64_t)s->records_in_file, &res);
    out->trimmed_bytes = 0;
    if (res.bad && (rc = cut_tail(dir, path, buf + vlen, len - vlen, s->offset, &res,
                                  st.next_seq, out, err, errlen))) {
        free(buf);
        return rc;
    }
    free(buf);
    resume_at(out, files[i].name, s, &res);
    memcpy(c->hash, st.hash, sizeof c->hash);
    c->next_seq = st.next_seq;
    /* Files created after the state was written (a rotation just before
     * the crash): each must continue the chain; one whose header never
     * became durable is set aside. */
    for (size_t j = i + 1; j < n; j++) {
        struct audit_resume next = *out;
        rc = recover_file(c, dir, files[j].name, &st, hooks, &next, err, errlen);
        out->bytes_read = next.bytes_read;
        if (rc < 0)
            return rc;
        if (rc == 2) {
            /* Not this chain: leave it to the slow path (it says why). */
            memcpy(c->hash, s->hash, sizeof c->hash);
            return 1;
        }
        if (rc == 0)
            *out = next;
    }
    out->from_state = 1;
    return 0;
}

int audit_recover(struct audit_chain *c, const char *dir, const char *prefix,
                  struct audit_resume *out, char *err, size_t errlen)
{
    return audit_recover_ex(c, dir, prefix, NULL, out, err, errlen);
}

int audit_recover_ex(struct audit_chain *c, const char *dir, const char *prefix,
                     const struct audit_recover_hooks *hooks, struct audit_resume *out, char *err,
                     size_t errlen)
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
    struct audit_state s;
    if (n && audit_state_load(dir, prefix, &s) == 0) {
        rc = recover_from_state(c, dir, files, n, &s, hooks, out, err, errlen);
        if (rc <= 0) {
            free(files);
            return rc;
        }
        uint64_t read = out->bytes_read;
        memset(out, 0, sizeof *out);
        out->bytes_read = read;
        memset(c->hash, 0, sizeof c->hash);
        c->next_seq = 0;
    }
    /* No usable state: check the last file whole (a file without a good
     * header is set aside and its predecessor checked). */
    for (size_t i = n; i-- > 0;) {
        hook(hooks);
        struct audit_verify_state st = {.progress = hooks ? hooks->progress : NULL,
                                        .progress_arg = hooks ? hooks->arg : NULL};
        rc = recover_file(c, dir, files[i].name, &st, hooks, out, err, errlen);
        if (rc < 0) {
            free(files);
            return rc;
        }
        if (rc == 0)
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
