#include "scan.h"

#include <errno.h>
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

    size_t off = it.len, last_rec_off = 0;
    int64_t index = 0;
    res->good_end = off;
    while (off < len) {
        rc = audit_parse(buf + off, len - off, &it, &why);
        if (rc == -ENODATA) {
            set_bad(res, off, index, st->next_seq,
                    "file ends inside a record (torn write; %zu trailing bytes)", len - off);
            res->torn = 1;
            break;
        }
        if (rc) {
            set_bad(res, off, index, st->next_seq, "malformed record: %s", why);
            break;
        }
        if (it.is_header) {
            set_bad(res, off, index, st->next_seq, "a file header in the middle of the file");
            break;
        }
        if (it.seq != st->next_seq) {
            set_bad(res, off, index, st->next_seq,
                    "seq %llu where %llu was expected (record deleted, inserted or reordered)",
                    (unsigned long long)it.seq, (unsigned long long)st->next_seq);
            break;
        }
        if (check_hashes) {
            audit_item_expected_hash(c, st->hash, buf + off, &it, expect);
            if (memcmp(expect, it.hash, AUDIT_HASH_LEN) != 0) {
                set_bad(res, off, index, st->next_seq,
                        "hash mismatch (record modified, or the chain before it was altered)");
                break;
            }
        }
        if (cb) {
            int stop = cb(arg, &it);
            if (stop)
                return stop;
        }
        memcpy(st->hash, it.hash, AUDIT_HASH_LEN);
        st->next_seq++;
        st->records++;
        res->records++;
        last_rec_off = off;
        off += it.len;
        res->good_end = off;
        index++;
    }
    if (res->records) {
        /* Only the last record's event id matters (the resume cursor). */
        struct cbus_event ev;
        if (audit_parse(buf + last_rec_off, len - last_rec_off, &it, NULL) == 0 &&
            cbus_evmp_decode(it.event, it.event_len, &ev, NULL) == 0) {
            res->has_last_event = 1;
            res->last_event_id = ev.event_id;
        }
    }
    return 0;
}

int audit_read_file(const char *path, uint8_t **buf, size_t *len)
{
    *buf = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
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
    size_t n = (size_t)st.st_size, got = 0;
    uint8_t *b = n ? malloc(n) : NULL;
    if (n && !b) {
        close(fd);
        return -ENOMEM;
    }
    while (got < n) {
        ssize_t r = pread(fd, b + got, n - got, (off_t)got);
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
    }
    close(fd);
    *buf = b;
    *len = got;
    return 0;
}
