#include "scan.h"

#include <errno.h>
#include <stdint.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void set_bad(struct audit_scan_result *res, size_t off, int64_t index, uint64_t seq,
                    const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void set_bad(struct audit_scan_result *res, size_t off, int64_t index, uint64_t seq,
                    const char *fmt, ...)
{
    res->bad = 1;
    res->bad_offset = off;
    res->bad_index = index;
    res->bad_seq = seq;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(res->why, sizeof res->why, fmt, ap);
    va_end(ap);
}

static int header_continues(const struct audit_verify_state *st, const struct audit_header *h,
                            struct audit_scan_result *res)
{
    if (memcmp(h->prev_hash, st->hash, AUDIT_HASH_LEN) != 0) {
        set_bad(res, 0, -1, st->next_seq,
                "header prev_hash does not match the last hash of %s "
                "(a file is missing, reordered or was modified)", st->file_name);
        return 0;
    }
    if (h->first_seq != st->next_seq) {
        set_bad(res, 0, -1, st->next_seq, "header first_seq %llu, expected %llu after %s",
                (unsigned long long)h->first_seq, (unsigned long long)st->next_seq,
                st->file_name);
        return 0;
    }
    if (h->file_seq != st->file_seq + 1) {
        set_bad(res, 0, -1, st->next_seq, "header file_seq %llu, expected %llu after %s",
                (unsigned long long)h->file_seq, (unsigned long long)st->file_seq + 1,
                st->file_name);
        return 0;
    }
    if (strcmp(h->prev_file, st->file_name) != 0) {
        set_bad(res, 0, -1, st->next_seq, "header names previous file '%s', expected '%s'",
                h->prev_file, st->file_name);
        return 0;
    }
    return 1;
}

/* Follows one good record's lane position; with check_ids, it must be the
 * next one in its lane (format.h). */
static int ids_continue(struct audit_verify_state *st, const struct audit_item *it, size_t off,
                        int64_t index, struct audit_scan_result *res)
{
    const unsigned lanes = st->pos.lanes ? st->pos.lanes : 1;
    uint64_t from, to, id = 0;
    unsigned lane;
    if (it->is_gap) {
        lane = it->gap_lane;
        from = it->gap_from;
        to = it->gap_to;
        if (lane >= lanes) {
            if (!st->check_ids)
                return 1;
            set_bad(res, off, index, st->next_seq, "gap record for lane %u of a %u-lane bus",
                    lane, lanes);
            return 0;
        }
    } else {
        uint64_t span;
        if (audit_event_span(it->event, it->event_len, &id, &span)) {
            if (!st->check_ids)
                return 1; /* hashed as written: recovery keeps it, verify says why */
            set_bad(res, off, index, st->next_seq, "event does not decode");
            return 0;
        }
        lane = (unsigned)(id & (lanes - 1));
        from = id / lanes;
        to = from + span; /* an event's body slots follow it in its lane */
    }
    uint64_t next = st->pos.pos[lane];
    if (st->check_ids && from != next) {
        /* On one lane, lane positions are event ids: say it in those. */
        char where[48] = "";
        if (lanes > 1)
            snprintf(where, sizeof where, "lane %u of %u: ", lane, lanes);
        if (it->is_gap)
            set_bad(res, off, index, st->next_seq,
                    "%sgap record for %s %llu..%llu where %llu was expected", where,
                    lanes > 1 ? "lane positions" : "event ids", (unsigned long long)from,
                    (unsigned long long)to - 1, (unsigned long long)next);
        else if (lanes > 1 && from > next)
            set_bad(res, off, index, st->next_seq,
                    "%slane positions %llu..%llu missing with no recorded loss (event id %llu, "
                    "lane position %llu, follows lane position %llu: records deleted, or "
                    "events lost unrecorded)", where, (unsigned long long)next,
                    (unsigned long long)from - 1, (unsigned long long)id,
                    (unsigned long long)from, (unsigned long long)next - 1);
        else if (from > next)
            set_bad(res, off, index, st->next_seq,
                    "event ids %llu..%llu missing with no recorded loss (event id %llu follows "
                    "%llu: records deleted, or events lost unrecorded)",
                    (unsigned long long)next, (unsigned long long)from - 1,
                    (unsigned long long)from, (unsigned long long)next - 1);
        else if (lanes > 1)
            set_bad(res, off, index, st->next_seq,
                    "%sevent id %llu (lane position %llu) where lane position %llu was expected "
                    "(repeated or out of order)", where, (unsigned long long)id,
                    (unsigned long long)from, (unsigned long long)next);
        else
            set_bad(res, off, index, st->next_seq,
                    "event id %llu where %llu was expected (repeated or out of order)",
                    (unsigned long long)from, (unsigned long long)next);
        return 0;
    }
    if (it->is_gap && st->check_ids) {
        st->gaps++;
        st->gap_positions += to - from;
    }
    /* Without check_ids (recovery) a lane never moves back. */
    if (to > st->pos.pos[lane] || st->check_ids)
        st->pos.pos[lane] = to;
    return 1;
}

/* The records of buf[off..len), where buf[0] is file offset base. */
static int scan_records(struct audit_chain *c, struct audit_verify_state *st, const uint8_t *buf,
                        size_t len, size_t off, uint64_t base, int64_t index, int check_hashes,
                        audit_record_cb cb, void *arg, struct audit_scan_result *res)
{
    const char *why;
    struct audit_item it;
    uint8_t expect[AUDIT_HASH_LEN];
    size_t last_rec = SIZE_MAX, progress_at = off;
    int rc;
    while (off < len) {
        if (st->progress && off - progress_at >= AUDIT_SCAN_PROGRESS) {
            st->progress(st->progress_arg);
            progress_at = off;
        }
        size_t at = (size_t)base + off;
        rc = audit_parse(buf + off, len - off, &it, &why);
        if (rc == -ENODATA) {
            set_bad(res, at, index, st->next_seq,
                    "file ends inside a record (torn write; %zu trailing bytes)", len - off);
            res->torn = 1;
            break;
        }
        if (rc) {
            set_bad(res, at, index, st->next_seq, "malformed record: %s", why);
            break;
        }
        if (it.is_header) {
            set_bad(res, at, index, st->next_seq, "a file header in the middle of the file");
            break;
        }
        if (it.seq != st->next_seq) {
            set_bad(res, at, index, st->next_seq,
                    "seq %llu where %llu was expected (record deleted, inserted or reordered)",
                    (unsigned long long)it.seq, (unsigned long long)st->next_seq);
            break;
        }
        if (check_hashes) {
            audit_item_expected_hash(c, st->hash, buf + off, &it, expect);
            if (memcmp(expect, it.hash, AUDIT_HASH_LEN) != 0) {
                set_bad(res, at, index, st->next_seq,
                        "hash mismatch (record modified, or the chain before it was altered)");
                break;
            }
        }
        if (!ids_continue(st, &it, at, index, res))
            break;
        if (cb && !it.is_gap) {
            int stop = cb(arg, &it);
            if (stop)
                return stop;
        }
        memcpy(st->hash, it.hash, AUDIT_HASH_LEN);
        st->next_seq++;
        st->records++;
        res->records++;
        last_rec = off;
        res->last_off = at;
        off += it.len;
        res->good_end = (size_t)base + off;
        index++;
    }
    if (last_rec != SIZE_MAX &&
        audit_parse(buf + last_rec, len - last_rec, &it, NULL) == 0) {
        uint64_t id;
        if (!it.is_gap && audit_event_id(it.event, it.event_len, &id) == 0) {
            res->has_last_event = 1;
            res->last_event_id = id;
        }
    }
    res->pos = st->pos;
    return 0;
}

int audit_scan(struct audit_chain *c, struct audit_verify_state *st, const char *name,
               const uint8_t *buf, size_t len, int check_hashes, audit_record_cb cb, void *arg,
               struct audit_scan_result *res)
{
    memset(res, 0, sizeof *res);
    const char *why;
    struct audit_item it;
    uint8_t expect[AUDIT_HASH_LEN];

    int rc = audit_parse(buf, len, &it, &why);
    if (rc || !it.is_header) {
        if (len == 0)
            set_bad(res, 0, -1, st->next_seq, "empty file (no header)");
        else if (rc == -ENODATA)
            set_bad(res, 0, -1, st->next_seq, "file ends inside its header");
        else
            set_bad(res, 0, -1, st->next_seq, "bad file header: %s",
                    rc ? why : "first value is a record");
        res->torn = rc == -ENODATA || len == 0;
        return 0;
    }
    if (check_hashes) {
        audit_item_expected_hash(c, it.hdr.prev_hash, buf, &it, expect);
        if (memcmp(expect, it.hash, AUDIT_HASH_LEN) != 0) {
            set_bad(res, 0, -1, st->started ? st->next_seq : it.hdr.first_seq,
                    "header hash mismatch (header modified)");
            return 0;
        }
        if (st->started && !header_continues(st, &it.hdr, res))
            return 0;
    }
    res->hdr = it.hdr;
    res->has_header = 1;
    /* The file is accepted as a start: it carries its own chain start. */
    st->started = 1;
    memcpy(st->hash, it.hdr.hash, AUDIT_HASH_LEN);
    st->next_seq = it.hdr.first_seq;
    st->file_seq = it.hdr.file_seq;
    snprintf(st->file_name, sizeof st->file_name, "%s", name);
    /* Positions restart with a bus id: the header says where the consumer
     * started on it.  Within one bus id they carry over from file to file
     * (a bus keeps its lane count for life; another count is another bus). */
    if (!st->pos.lanes || st->bus_id != it.hdr.bus_id || st->pos.lanes != it.hdr.pos.lanes)
        st->pos = it.hdr.pos;
    st->bus_id = it.hdr.bus_id;
    res->good_end = it.len;
    res->last_off = 0;
    return scan_records(c, st, buf, len, it.len, 0, 0, check_hashes, cb, arg, res);
}

int audit_scan_tail(struct audit_chain *c, struct audit_verify_state *st, const uint8_t *buf,
                    size_t len, uint64_t base, int64_t index, struct audit_scan_result *res)
{
    memset(res, 0, sizeof *res);
    res->good_end = (size_t)base;
    res->last_off = SIZE_MAX; /* unknown until a record is good */
    return scan_records(c, st, buf, len, 0, base, index, 1, NULL, NULL, res);
}

/* Reads path from offset from to its end, in 8 MiB preads (progress after
 * each), opened with open_flags. */
static int read_from(const char *path, int open_flags, uint64_t from, uint8_t **buf, size_t *len,
                     uint64_t *total, void (*progress)(void *), void *arg)
{
    *buf = NULL;
    *len = 0;
    *total = 0;
    int fd = open(path, open_flags);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return -EINVAL;
    }
    *total = (uint64_t)st.st_size;
    size_t n = (uint64_t)st.st_size > from ? (size_t)((uint64_t)st.st_size - from) : 0, got = 0;
    uint8_t *b = n ? malloc(n) : NULL;
    if (n && !b) {
        close(fd);
        return -ENOMEM;
    }
    while (got < n) {
        size_t want = n - got > (8u << 20) ? (8u << 20) : n - got;
        ssize_t r = pread(fd, b + got, want, (off_t)(from + got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = -errno;
            free(b);
            close(fd);
            return e;
        }
        if (r == 0)
            break; /* shrank under us: take what is there */
        got += (size_t)r;
        if (progress)
            progress(arg);
    }
    close(fd);
    *buf = b;
    *len = got;
    return 0;
}

int audit_read_range(const char *path, uint64_t from, uint8_t **buf, size_t *len,
                     uint64_t *total, void (*progress)(void *), void *arg)
{
    /* the daemon's own log directory: never follow a planted link */
    return read_from(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW, from, buf, len, total, progress, arg);
}

int audit_read_file(const char *path, uint8_t **buf, size_t *len)
{
    /* files an operator names on the command line (verify, cat): links are theirs */
    uint64_t total;
    return read_from(path, O_RDONLY | O_CLOEXEC, 0, buf, len, &total, NULL, NULL);
}

int audit_scan_file(struct audit_chain *c, struct audit_verify_state *st, const char *path,
                    const char *name, int check_hashes, audit_record_cb cb, void *arg,
                    struct audit_scan_result *res)
{
    uint8_t *buf;
    size_t len;
    int rc = audit_read_file(path, &buf, &len);
    if (rc)
        return rc;
    audit_scan(c, st, name, buf, len, check_hashes, cb, arg, res);
    free(buf);
    return 0;
}
