#include "writer.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "state.h"

enum batch_state {
    B_FREE = 0,
    B_FILLING,   /* records being appended */
    B_READY,     /* to be submitted (new, short write, or retry) */
    B_INFLIGHT,  /* write (+ linked fdatasync) submitted */
    B_WRITTEN,   /* interval mode: written, waiting for the next fdatasync */
    B_SYNCING,   /* interval mode: covered by the fdatasync in flight */
    B_DURABLE,   /* on disk; freed once every older batch is too */
};

struct batch {
    uint8_t *buf;
    size_t cap;             /* bytes of buf: batch_bytes, more once a body needed it */
    size_t len;             /* bytes filled */
    size_t done;            /* bytes written by completed writes */
    uint64_t off;           /* file offset of buf[0] */
    unsigned nrec;
    int has_cursor;         /* it holds a record: pos is then a durable cursor */
    enum batch_state state;
    unsigned pending;       /* CQEs still to come for the current submission */
    int wres;               /* write result */
    int sres;               /* linked fdatasync result */
    uint64_t sync_gen;      /* interval mode: the fdatasync that covers it */
    /* The chain at the end of this batch, for the state file once durable. */
    int has_end;
    uint64_t end_off;       /* file offset after its last value */
    uint64_t last_off;      /* where that value starts */
    uint64_t end_seq;
    uint8_t end_hash[AUDIT_HASH_LEN];
    uint64_t end_records;   /* records in the file up to here */
    struct cbus_position pos; /* bus position after its last record in every lane
                                 (a header batch: the file's start) */
};

/* user_data: batch index << 2 | op; for OP_ISYNC, the sync generation << 2 | op */
#define OP_WRITE 1u
#define OP_SYNC  2u
#define OP_ISYNC 3u  /* interval fdatasync (no batch) */
#define OP_STATE 0u  /* fdatasync of the state file */
#define STATE_SYNC_NS 1000000000u /* the state file is made durable about this often */

struct audit_writer {
    struct audit_writer_opts o;
    void (*slow)(void *arg, int begin); /* audit_writer_set_slow */
    void *slow_arg;
    char dir[4096];
    char prefix[64];
    char bus[CBUS_NAME_MAX];
    struct io_uring ring;
    int ring_ok;
    struct audit_chain chain;

    struct batch *b;
    unsigned qd;
    unsigned head;          /* oldest batch in use */
    unsigned used;          /* batches in use, from head on; the last may be FILLING */
    unsigned inflight_ops;  /* SQEs submitted and not completed */

    /* current file */
    int fd;
    char name[AUDIT_FILE_NAME_MAX];
    uint64_t file_seq;
    uint64_t file_off;      /* where the next byte goes (filling batch included) */
    uint64_t file_created_ns;
    uint64_t file_records;
    uint64_t file_bus_id;
    unsigned file_redaction;
    uint64_t file_format;
    int have_file;

    /* the state file (state.h) */
    int state_fd;
    struct audit_state state;
    int state_dirty;        /* written since its last fdatasync */
    int state_sync_inflight;
    uint64_t state_sync_ns;

    uint64_t bus_id;
    int bus_set;
    struct cbus_position last; /* after the last appended record, per lane */
    int has_last_cursor;
    struct cbus_position durable;
    int has_durable_cursor;
    int rotate_pending;

    /* interval sync: several may be in flight (ext4 overlaps them in one
     * journal commit); each covers the writes completed before it started */
    unsigned isync_inflight;
    uint64_t isync_gen;     /* generation of the last one submitted */
    uint64_t last_sync_ns;

    /* errors */
    int failing;
    uint64_t fail_since_ns;
    uint64_t next_retry_ns;
    uint64_t backoff_ns;
    uint64_t retries;

    struct audit_writer_stats st;
};

/* The library's clock (one time base with the loop's). */
static uint64_t mono_ns(void)
{
    return cbus_now_ns();
}

static uint64_t real_ns(const struct audit_writer *w)
{
    if (w->o.realtime_ns)
        return w->o.realtime_ns(w->o.clock_arg);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static struct batch *batch_at(struct audit_writer *w, unsigned i)
{
    return &w->b[(w->head + i) % w->qd];
}

static struct batch *filling(struct audit_writer *w)
{
    if (!w->used)
        return NULL;
    struct batch *b = batch_at(w, w->used - 1);
    return b->state == B_FILLING ? b : NULL;
}

/* A fresh FILLING batch at the end of the queue, or NULL when all are in use. */
static struct batch *take_batch(struct audit_writer *w)
{
    if (w->used == w->qd)
        return NULL;
    struct batch *b = batch_at(w, w->used);
    w->used++;
    uint8_t *buf = b->buf;
    size_t cap = b->cap;
    memset(b, 0, sizeof *b);
    b->buf = buf;
    b->cap = cap;
    b->off = w->file_off;
    b->state = B_FILLING;
    return b;
}

static void finish_filling(struct audit_writer *w)
{
    struct batch *b = filling(w);
    if (!b)
        return;
    if (b->len == 0) { /* nothing in it: give it back */
        b->state = B_FREE;
        w->used--;
        return;
    }
    b->state = B_READY;
}

void audit_writer_flush(struct audit_writer *w)
{
    /* Group commit: a partial batch goes out at once only when nothing older
     * is still on its way to the disk.  Otherwise it keeps filling and goes
     * when the older batches are durable (or when it is full), so a steady
     * stream that the daemon keeps up with becomes a few large fdatasyncs
     * rather than one per poll: ext4 commits its journal for each one, and
     * small syncs would bound throughput at a few hundred batches a second.
     * The extra latency is at most one sync of the batches ahead of it. */
    if (w->used == 1)
        finish_filling(w);
}

/* ---- files ------------------------------------------------------------------- */

static int open_new_file(struct audit_writer *w, const struct cbus_position *cursor)
{
    if (w->used == w->qd)
        return -EBUSY; /* callers open files only with every batch retired */
    uint64_t now = real_ns(w);
    uint64_t seq = w->have_file ? w->file_seq + 1 : 0;
    char name[AUDIT_FILE_NAME_MAX], path[4300];
    int rc = audit_name_make(name, sizeof name, w->prefix, now, seq);
    if (rc)
        return rc;
    snprintf(path, sizeof path, "%s/%s", w->dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    if (fd < 0) {
        rc = -errno;
        cbus_log_error("cannot create %s: %s", path, strerror(errno));
        return rc;
    }
    struct audit_header h = {0};
    h.file_seq = seq;
    h.created_ns = now;
    h.first_seq = w->chain.next_seq;
    h.pos = *cursor;
    snprintf(h.bus, sizeof h.bus, "%s", w->bus);
    h.bus_id = w->bus_id;
    snprintf(h.prev_file, sizeof h.prev_file, "%s", w->have_file ? w->name : "");
    h.redaction = w->o.redact.mode;

    if (w->fd >= 0)
        close(w->fd);
    w->fd = fd;
    snprintf(w->name, sizeof w->name, "%s", name);
    w->file_seq = seq;
    w->file_off = 0;
    w->file_created_ns = now;
    w->file_records = 0;
    w->file_bus_id = w->bus_id;
    w->file_redaction = w->o.redact.mode;
    w->have_file = 1;
    snprintf(w->st.file, sizeof w->st.file, "%s", name);

    /* The header goes out as the first batch of the file, through the same
     * durable path as records; the directory entry is synced now. */
    struct batch *b = take_batch(w);
    int n = audit_header_encode(&w->chain, &h, b->buf, w->o.batch_bytes);
    if (n < 0)
        return n;
    b->len = (size_t)n;
    w->file_off = (uint64_t)n;
    b->state = B_READY;
    b->has_end = 1;
    b->end_off = (uint64_t)n;
    b->last_off = 0;
    b->end_seq = w->chain.next_seq;
    memcpy(b->end_hash, w->chain.hash, AUDIT_HASH_LEN);
    b->end_records = 0;
    b->pos = *cursor;
    w->file_format = AUDIT_FORMAT;
    if (w->slow)
        w->slow(w->slow_arg, 1);
    audit_fsync_dir(w->dir);
    if (w->slow)
        w->slow(w->slow_arg, 0);
    cbus_log_info("writing %s (file %llu, first seq %llu, bus cursor %llu%s)", path,
                  (unsigned long long)seq, (unsigned long long)h.first_seq,
                  (unsigned long long)h.bus_cursor,
                  h.pos.lanes > 1 ? " summed over the lanes" : "");
    if (w->slow)
        w->slow(w->slow_arg, 1);
    int removed = audit_retention(w->dir, w->prefix, w->o.retain_files);
    if (w->slow)
        w->slow(w->slow_arg, 0);
    if (removed > 0)
        w->st.files_removed += (uint64_t)removed;
    return 0;
}

static int open_last_file(struct audit_writer *w, const struct audit_resume *r)
{
    char path[4300];
    snprintf(path, sizeof path, "%s/%s", w->dir, r->name);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    w->fd = fd;
    snprintf(w->name, sizeof w->name, "%s", r->name);
    snprintf(w->st.file, sizeof w->st.file, "%s", r->name);
    w->file_seq = r->file_seq;
    w->file_off = r->file_size;
    w->file_created_ns = r->created_ns;
    w->file_records = r->records_in_file;
    w->file_bus_id = r->bus_id;
    w->file_redaction = r->redaction;
    w->file_format = r->format;
    w->have_file = 1;
    /* Event ids go on from the log's last record: a consumer that resumes
     * behind it re-reads records already written (skipped in append), one
     * that resumes past it lost the positions between (a gap record). */
    if (r->have_cursor) {
        w->last = r->pos;
        w->has_last_cursor = 1;
    }
    return 0;
}

/* Describes the durable end of the current file in the state file. */
static void state_save(struct audit_writer *w, uint64_t off, uint64_t last_off, uint64_t seq,
                       const uint8_t hash[AUDIT_HASH_LEN], uint64_t records,
                       const struct cbus_position *pos)
{
    if (w->state_fd < 0)
        return;
    struct audit_state *s = &w->state;
    snprintf(s->name, sizeof s->name, "%s", w->name);
    s->file_seq = w->file_seq;
    s->format = w->file_format;
    s->created_ns = w->file_created_ns;
    s->bus_id = w->file_bus_id;
    s->redaction = w->file_redaction;
    s->offset = off;
    s->last_off = last_off;
    s->next_seq = seq;
    memcpy(s->hash, hash, AUDIT_HASH_LEN);
    s->records_in_file = records;
    s->pos = *pos;
    int rc = audit_state_write(w->state_fd, s);
    if (rc == 0) {
        w->state_dirty = 1;
    } else if (!w->st.state_errors++) {
        /* Only the restart's speed depends on it: say so once. */
        cbus_log_warn("cannot write the state file in %s: %s; a restart will check the whole "
                      "last file", w->dir, strerror(-rc));
    }
}

/* The batch buffers, page-aligned: the kernel copies whole pages into the
 * page cache. */
static int alloc_batches(struct audit_writer *w, char *err, size_t errlen)
{
    for (unsigned i = 0; i < w->qd; i++) {
        w->b[i].cap = w->o.batch_bytes;
        if (posix_memalign((void **)&w->b[i].buf, 4096, w->o.batch_bytes)) {
            snprintf(err, errlen, "out of memory for %u batches of %zu bytes", w->qd,
                     w->o.batch_bytes);
            return -ENOMEM;
        }
    }
    return 0;
}

/* The state file that lets the next restart skip re-reading the log.
 * Without it the writer still works (a restart checks the whole last
 * file), so failing to open it is a warning, not an error. */
static void open_state_file(struct audit_writer *w, const struct audit_resume *resume)
{
    w->state_fd = audit_state_open(w->dir, w->prefix);
    if (w->state_fd < 0) {
        cbus_log_warn("cannot open the state file in %s: %s; a restart will check the whole "
                      "last file", w->dir, strerror(-w->state_fd));
        return;
    }
    struct audit_state old;
    if (audit_state_load(w->dir, w->prefix, &old) == 0)
        w->state.gen = old.gen;
    /* What recovery just checked, so the next restart starts there. */
    if (resume->have_file)
        state_save(w, resume->file_size, resume->last_off, w->chain.next_seq, w->chain.hash,
                   resume->records_in_file, &resume->pos);
}

int audit_writer_open(struct audit_writer **out, const struct audit_writer_opts *o,
                      struct audit_resume *resume, char *err, size_t errlen)
{
    *out = NULL;
    if (o->queue_depth < 2 || o->queue_depth > 1024 || o->batch_bytes < 8192 ||
        o->batch_bytes < AUDIT_HEADER_MAX + AUDIT_RECORD_MAX || !o->batch_events) {
        snprintf(err, errlen, "writer: bad queue depth or batch size");
        return -EINVAL;
    }
    struct audit_writer *w = calloc(1, sizeof *w);
    if (!w) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    w->o = *o;
    w->fd = -1;
    w->state_fd = -1;
    w->qd = o->queue_depth;
    snprintf(w->dir, sizeof w->dir, "%s", o->dir);
    snprintf(w->prefix, sizeof w->prefix, "%s", o->prefix);
    snprintf(w->bus, sizeof w->bus, "%s", o->bus ? o->bus : "");
    w->o.dir = w->dir;
    w->o.prefix = w->prefix;
    w->backoff_ns = o->retry_initial_ns;
    int rc = audit_chain_init(&w->chain);
    if (rc) {
        snprintf(err, errlen, "libcrypto: cannot set up SHA-256");
        goto err_free;
    }
    w->b = calloc(w->qd, sizeof *w->b);
    if (!w->b) {
        rc = -ENOMEM;
        snprintf(err, errlen, "out of memory");
        goto err_chain;
    }
    if ((rc = alloc_batches(w, err, errlen)))
        goto err_bufs;
    /* Two SQEs per batch (write + linked fdatasync) plus the interval sync. */
    rc = io_uring_queue_init(2 * w->qd + 2, &w->ring, 0);
    if (rc < 0) {
        snprintf(err, errlen, "io_uring_queue_init: %s", strerror(-rc));
        goto err_bufs;
    }
    w->ring_ok = 1;
    struct audit_recover_hooks hooks = {o->progress, o->progress_arg};
    rc = audit_recover_ex(&w->chain, w->dir, w->prefix, &hooks, resume, err, errlen);
    if (rc)
        goto err_ring;
    if (resume->have_file && (rc = open_last_file(w, resume))) {
        snprintf(err, errlen, "%s/%s: %s", w->dir, resume->name, strerror(-rc));
        goto err_ring;
    }
    open_state_file(w, resume);
    w->last_sync_ns = mono_ns();
    *out = w;
    return 0;
err_ring:
    io_uring_queue_exit(&w->ring);
err_bufs:
    for (unsigned i = 0; i < w->qd; i++)
        free(w->b[i].buf);
    free(w->b);
err_chain:
    audit_chain_free(&w->chain);
err_free:
    free(w);
    return rc;
}

void audit_writer_close(struct audit_writer *w)
{
    if (!w)
        return;
    if (w->ring_ok) {
        /* Whatever is still in flight must complete before the buffers go. */
        while (w->inflight_ops) {
            struct io_uring_cqe *cqe;
            int r = io_uring_wait_cqe(&w->ring, &cqe);
            if (r == -EINTR || r == -EAGAIN)
                continue; /* a signal: the operations are still in flight */
            if (r < 0)
                break;
            io_uring_cqe_seen(&w->ring, cqe);
            w->inflight_ops--;
        }
        io_uring_queue_exit(&w->ring);
    }
    if (w->fd >= 0)
        close(w->fd);
    if (w->state_fd >= 0) {
        if (w->state_dirty)
            fdatasync(w->state_fd);
        close(w->state_fd);
    }
    for (unsigned i = 0; i < w->qd; i++)
        free(w->b[i].buf);
    free(w->b);
    audit_chain_free(&w->chain);
    free(w);
}

int audit_writer_set_bus(struct audit_writer *w, uint64_t bus_id,
                         const struct cbus_position *cursor)
{
    if (!audit_lanes_valid(cursor->lanes))
        return -EINVAL;
    w->bus_id = bus_id;
    w->bus_set = 1;
    if (!w->has_last_cursor) {
        /* A new log: positions start where the consumer does. */
        w->last = *cursor;
        w->has_last_cursor = 1;
    }
    if (!w->have_file)
        return open_new_file(w, cursor);
    /* A bus keeps its lane count for life: another count under the same
     * id would be a damaged log, and its positions mean nothing here. */
    int other_bus = w->file_bus_id != bus_id || w->last.lanes != cursor->lanes;
    if (other_bus || w->file_redaction != w->o.redact.mode || w->file_format != AUDIT_FORMAT) {
        cbus_log_info("%s belongs to bus id %016llx (redaction %s, format %llu); continuing the "
                      "chain in a new file for bus id %016llx (redaction %s, format %u)",
                      w->name, (unsigned long long)w->file_bus_id,
                      audit_redaction_name(w->file_redaction),
                      (unsigned long long)w->file_format, (unsigned long long)bus_id,
                      audit_redaction_name(w->o.redact.mode), AUDIT_FORMAT);
        w->rotate_pending = 1;
        if (other_bus) {
            /* The new header records the consumer's start on the new bus:
             * its positions have nothing to do with the old bus's. */
            w->last = *cursor;
            w->has_last_cursor = 1;
        }
    }
    return 0;
}

void audit_writer_set_batch_events(struct audit_writer *w, unsigned n)
{
    w->o.batch_events = n ? n : 1;
}

void audit_writer_set_slow(struct audit_writer *w, void (*slow)(void *arg, int begin), void *arg)
{
    w->slow = slow;
    w->slow_arg = arg;
}

/* ---- appending ------------------------------------------------------------- */

/* An empty batch (taken, not in flight) made big enough for need bytes:
 * a record with a body of up to the bus's body limit always fits one. */
static int grow_batch(struct batch *b, size_t need)
{
    if (b->cap >= need)
        return 0;
    uint8_t *buf;
    if (posix_memalign((void **)&buf, 4096, need))
        return -ENOMEM;
    free(b->buf);
    b->buf = buf;
    b->cap = need;
    return 0;
}

/* The current file is full or old enough to rotate (never an empty one). */
static int rotation_due(struct audit_writer *w)
{
    return w->file_records &&
           ((w->o.max_file_bytes && w->file_off >= w->o.max_file_bytes) ||
            (w->o.max_file_age_ns && real_ns(w) - w->file_created_ns >= w->o.max_file_age_ns));
}

/* A gap record for the positions of lane from its expected position up to
 * lp, which the consumer never received. */
static int append_gap(struct audit_writer *w, struct batch *b, unsigned lanes, unsigned lane,
                      uint64_t lp)
{
    uint64_t from = w->last.pos[lane];
    int g = lanes > 1 ? audit_gap_encode_lane(&w->chain, lane, from, lp, b->buf + b->len,
                                              b->cap - b->len)
                      : audit_gap_encode(&w->chain, from, lp, b->buf + b->len, b->cap - b->len);
    if (g < 0)
        return g; /* cannot happen: room was checked */
    w->st.gaps++;
    w->st.gap_positions += lp - from;
    b->last_off = w->file_off;
    b->len += (size_t)g;
    w->file_off += (uint64_t)g;
    w->file_records++;
    w->st.records++;
    return 0;
}

int audit_writer_append(struct audit_writer *w, const struct cbus_event *ev,
                        const struct cbus_body *body)
{
    if (!w->have_file)
        return -EAGAIN; /* the first file could not be created: service retries */
    if (w->rotate_pending)
        return -EAGAIN;
    if (rotation_due(w)) {
        w->rotate_pending = 1;
        finish_filling(w);
        return -EAGAIN;
    }
    /* Each lane is its own sequence (event id = lane position * lanes +
     * lane); lanes is a power of two. */
    const unsigned lanes = w->last.lanes ? w->last.lanes : 1;
    const unsigned lane = (unsigned)(ev->event_id & (lanes - 1));
    const uint64_t lp = ev->event_id / lanes;
    /* Positions below the log's end were written before a restart (the
     * consumer resumed behind the log): not twice. */
    if (w->has_last_cursor && lp < w->last.pos[lane]) {
        w->st.replayed++;
        return 0;
    }
    /* Positions the consumer never received (lost or abandoned on the bus)
     * are recorded where they would have been, so `verify` can tell a
     * recorded loss from records deleted later. */
    int gap = w->has_last_cursor && lp > w->last.pos[lane];
    size_t body_need = body && body->len ? CBUS_EVMP_BODY_MAX(body->len) : 0;
    size_t need = (gap ? 2u : 1u) * AUDIT_RECORD_MAX + body_need;
    struct batch *b = filling(w);
    /* Batches stay about batch_bytes: one is closed when the record would
     * take it past that (a body beyond it goes into a batch grown for it). */
    if (b && (b->nrec >= w->o.batch_events || b->len + need > b->cap ||
              b->len + need - body_need > w->o.batch_bytes)) {
        b->state = B_READY;
        b = NULL;
    }
    if (!b && !(b = take_batch(w)))
        return -EAGAIN;
    if (b->len + need > b->cap) {
        int g = grow_batch(b, b->len + need);
        if (g)
            return g;
    }
    if (gap) {
        int g = append_gap(w, b, lanes, lane, lp);
        if (g < 0)
            return g;
    }
    uint64_t at = w->file_off;
    int n = audit_record_encode(&w->chain, ev, body, &w->o.redact, b->buf + b->len,
                                b->cap - b->len);
    if (n < 0)
        return n; /* cannot happen: room was checked */
    b->len += (size_t)n;
    b->nrec++;
    b->has_cursor = 1;
    /* The body's slots follow the event in its lane: the next position to
     * expect (and the cursor to commit) is past them. */
    w->last.pos[lane] = lp + 1 + ((ev->flags & CBUS_FLAG_BODY) ? CBUS_BODY_SLOTS(ev->body_len) : 0);
    w->has_last_cursor = 1;
    w->file_off += (uint64_t)n;
    w->file_records++;
    w->st.records++;
    b->has_end = 1;
    b->end_off = w->file_off;
    b->last_off = at;
    b->end_seq = w->chain.next_seq;
    memcpy(b->end_hash, w->chain.hash, AUDIT_HASH_LEN);
    b->end_records = w->file_records;
    b->pos = w->last;
    return 0;
}

/* ---- submission and completion ---------------------------------------------- */

static int submit_batch(struct audit_writer *w, unsigned idx)
{
    struct batch *b = &w->b[idx];
    struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);
    if (!sqe)
        return -EBUSY;
    io_uring_prep_write(sqe, w->fd, b->buf + b->done, (unsigned)(b->len - b->done),
                        b->off + b->done);
    io_uring_sqe_set_data64(sqe, (uint64_t)idx << 2 | OP_WRITE);
    /* Straight to an io-wq worker: a buffered write attempted inline would
     * copy megabytes into the page cache on this thread, which is the
     * pipeline's bottleneck (encoding and hashing); the worker does it on
     * the other core. */
    sqe->flags |= IOSQE_ASYNC;
    b->pending = 1;
    b->wres = 0;
    b->sres = 0;
    if (w->o.sync == AUDIT_SYNC_BATCH) {
        /* The fdatasync starts only after this write completed in full: a
         * failed or short write cancels it (-ECANCELED). */
        sqe->flags |= IOSQE_IO_LINK;
        struct io_uring_sqe *s2 = io_uring_get_sqe(&w->ring);
        if (!s2) {
            /* Cannot happen: the ring has two SQEs per batch. Undo the link. */
            sqe->flags &= (unsigned char)~IOSQE_IO_LINK;
        } else {
            io_uring_prep_fsync(s2, w->fd, IORING_FSYNC_DATASYNC);
            io_uring_sqe_set_data64(s2, (uint64_t)idx << 2 | OP_SYNC);
            b->pending = 2;
        }
    }
    w->inflight_ops += b->pending;
    b->state = B_INFLIGHT;
    w->st.batches++;
    return 0;
}

/* A write, sync or file creation failed (b is NULL for the latter). */
static void io_failed(struct audit_writer *w, struct batch *b, int err, const char *what)
{
    uint64_t now = mono_ns();
    w->st.io_errors++;
    if (b)
        b->state = B_READY;
    if (!w->failing) {
        w->failing = 1;
        w->fail_since_ns = now;
        w->backoff_ns = w->o.retry_initial_ns;
        w->retries = 0;
        char where[64] = "";
        if (b)
            snprintf(where, sizeof where, " at offset %llu",
                     (unsigned long long)(b->off + b->done));
        cbus_log_error("%s %s/%s%s failed: %s; retrying with backoff (up to %.1f s) without "
                       "losing anything; the bus cursor is not advanced meanwhile, so producers "
                       "see at most the bus's bounded wait and counted drops",
                       what, w->dir, b ? w->name : "", where, strerror(-err),
                       (double)w->o.retry_max_ns / 1e9);
    }
    w->next_retry_ns = now + w->backoff_ns;
    w->backoff_ns = w->backoff_ns * 2 > w->o.retry_max_ns ? w->o.retry_max_ns : w->backoff_ns * 2;
}

static void io_succeeded(struct audit_writer *w)
{
    if (w->failing) {
        cbus_log_info("writes to %s/%s resumed after %.1f s (%llu retries)", w->dir, w->name,
                      (double)(mono_ns() - w->fail_since_ns) / 1e9,
                      (unsigned long long)w->retries);
        w->failing = 0;
        w->backoff_ns = w->o.retry_initial_ns;
    }
}

static void batch_complete(struct audit_writer *w, struct batch *b)
{
    if (b->wres < 0) {
        io_failed(w, b, b->wres, "write to");
        return;
    }
    b->done += (size_t)b->wres;
    if (b->done < b->len) {
        /* Short write (e.g. the disk filled mid-batch): write the rest; a
         * persisting error shows up on that attempt. */
        b->state = B_READY;
        return;
    }
    if (w->o.sync == AUDIT_SYNC_BATCH) {
        if (b->sres < 0) {
            b->done = 0; /* rewrite before syncing again (see writer.h) */
            io_failed(w, b, b->sres, "fdatasync of");
            return;
        }
        w->st.syncs++;
        b->state = B_DURABLE;
    } else {
        b->state = B_WRITTEN;
    }
    w->st.bytes += b->len;
    io_succeeded(w);
}

static void isync_complete(struct audit_writer *w, uint64_t gen, int res)
{
    w->isync_inflight--;
    for (unsigned i = 0; i < w->used; i++) {
        struct batch *b = batch_at(w, i);
        if (b->state != B_SYNCING)
            continue;
        if (res < 0 && b->sync_gen == gen) {
            b->done = 0; /* rewrite: the failed sync may have dropped its pages */
            io_failed(w, b, res, "fdatasync of");
        } else if (res >= 0 && b->sync_gen <= gen) {
            /* A sync also covers batches an earlier, still running one was
             * started for: their writes completed before this one began. */
            b->state = B_DURABLE;
        }
    }
    if (res >= 0) {
        w->st.syncs++;
        io_succeeded(w);
    }
}

static void reap(struct audit_writer *w)
{
    struct io_uring_cqe *cqe;
    unsigned head, n = 0;
    io_uring_for_each_cqe(&w->ring, head, cqe) {
        n++;
        uint64_t ud = io_uring_cqe_get_data64(cqe);
        unsigned op = (unsigned)(ud & 3u), idx = (unsigned)(ud >> 2);
        w->inflight_ops--;
        if (op == OP_STATE) {
            w->state_sync_inflight = 0;
            if (cqe->res < 0)
                w->state_dirty = 1; /* try again next time */
            continue;
        }
        if (op == OP_ISYNC) {
            isync_complete(w, ud >> 2, cqe->res);
            continue;
        }
        if (idx >= w->qd)
            continue;
        struct batch *b = &w->b[idx];
        if (op == OP_WRITE)
            b->wres = cqe->res;
        else
            b->sres = cqe->res;
        if (--b->pending == 0)
            batch_complete(w, b);
    }
    io_uring_cq_advance(&w->ring, n);
}

/* Frees durable batches from the oldest on; their cursor becomes durable. */
static void retire(struct audit_writer *w)
{
    struct batch last = {0};
    while (w->used) {
        struct batch *b = batch_at(w, 0);
        if (b->state != B_DURABLE)
            break;
        if (b->has_cursor) {
            w->durable = b->pos;
            w->has_durable_cursor = 1;
        }
        if (b->has_end)
            last = *b;
        w->st.durable_records += b->nrec;
        b->state = B_FREE;
        w->head = (w->head + 1) % w->qd;
        w->used--;
    }
    /* After the data is durable and before the caller commits the cursor:
     * the state never claims more than the log holds.  (Batches retire
     * before a rotation opens the next file, so they belong to w->name.) */
    if (last.has_end)
        state_save(w, last.end_off, last.last_off, last.end_seq, last.end_hash,
                   last.end_records, &last.pos);
}

/* The state file is rewritten per durable batch but synced only about once
 * a second: after a power cut recovery checks at most that much more. */
static void maybe_state_sync(struct audit_writer *w, uint64_t now)
{
    if (w->state_fd < 0 || !w->state_dirty || w->state_sync_inflight ||
        now - w->state_sync_ns < STATE_SYNC_NS)
        return;
    struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);
    if (!sqe)
        return;
    io_uring_prep_fsync(sqe, w->state_fd, IORING_FSYNC_DATASYNC);
    io_uring_sqe_set_data64(sqe, OP_STATE);
    sqe->flags |= IOSQE_ASYNC;
    w->state_sync_inflight = 1;
    w->state_dirty = 0;
    w->state_sync_ns = now;
    w->inflight_ops++;
}

static void submit_ready(struct audit_writer *w, uint64_t now)
{
    if (w->failing && (now < w->next_retry_ns || w->inflight_ops))
        return;
    for (unsigned i = 0; i < w->used; i++) {
        struct batch *b = batch_at(w, i);
        if (b->state != B_READY)
            continue;
        if (submit_batch(w, (unsigned)(b - w->b)))
            break;
        if (w->failing) {
            w->retries++;
            break; /* one probe at a time while the disk is failing */
        }
    }
}

static void maybe_interval_sync(struct audit_writer *w, uint64_t now, int urgent)
{
    if (w->o.sync != AUDIT_SYNC_INTERVAL || w->isync_inflight >= w->qd)
        return;
    if (!urgent && now - w->last_sync_ns < w->o.sync_interval_ns)
        return;
    int any = 0;
    for (unsigned i = 0; i < w->used; i++)
        any |= batch_at(w, i)->state == B_WRITTEN;
    if (!any)
        return;
    struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);
    if (!sqe)
        return;
    /* Covers every write that has completed; later ones wait for the next
     * tick.  It does not wait for syncs still running: they overlap. */
    uint64_t gen = ++w->isync_gen;
    io_uring_prep_fsync(sqe, w->fd, IORING_FSYNC_DATASYNC);
    io_uring_sqe_set_data64(sqe, gen << 2 | OP_ISYNC);
    for (unsigned i = 0; i < w->used; i++) {
        struct batch *b = batch_at(w, i);
        if (b->state == B_WRITTEN) {
            b->state = B_SYNCING;
            b->sync_gen = gen;
        }
    }
    w->isync_inflight++;
    w->inflight_ops++;
    w->last_sync_ns = now;
}

int audit_writer_service(struct audit_writer *w, uint64_t wait_ns)
{
    uint64_t now = mono_ns();
    if (!w->have_file && w->bus_set) {
        if (w->failing && now < w->next_retry_ns)
            goto wait;
        int rc = open_new_file(w, &w->last);
        if (rc) {
            io_failed(w, NULL, rc, "creating a log file in");
            goto wait;
        }
    }
    /* A rotation waits until the old file is entirely durable, so a file's
     * records never depend on a later file's state. */
    if (w->rotate_pending) {
        finish_filling(w);
        if (w->used == 0 && !w->isync_inflight && (!w->failing || now >= w->next_retry_ns)) {
            /* A file that cannot be created (disk full, EMFILE) is retried
             * with the same backoff as a failed write; appends wait. */
            int rc = open_new_file(w, &w->last);
            if (rc) {
                io_failed(w, NULL, rc, "creating a new log file in");
            } else {
                w->rotate_pending = 0;
                w->st.rotations++;
            }
        }
    }
    submit_ready(w, now);
    /* A rotation drains: sync at once rather than at the next interval. */
    maybe_interval_sync(w, now, w->rotate_pending);
    maybe_state_sync(w, now);
    if (io_uring_sq_ready(&w->ring)) {
        int rc = io_uring_submit(&w->ring);
        if (rc < 0 && rc != -EAGAIN && rc != -EINTR)
            return rc;
    }
wait:
    reap(w);
    if (wait_ns && w->inflight_ops && !io_uring_cq_ready(&w->ring)) {
        struct __kernel_timespec ts = {(long long)(wait_ns / 1000000000u),
                                       (long long)(wait_ns % 1000000000u)};
        struct io_uring_cqe *cqe;
        int rc = io_uring_wait_cqe_timeout(&w->ring, &cqe, &ts);
        if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EAGAIN)
            return rc;
        reap(w);
    } else if (wait_ns && !w->inflight_ops && (w->failing || w->o.sync == AUDIT_SYNC_INTERVAL)) {
        /* Nothing in flight: sleep toward the next retry or sync time. */
        uint64_t due = w->failing ? w->next_retry_ns : w->last_sync_ns + w->o.sync_interval_ns;
        uint64_t left = due > now ? due - now : 0;
        if (left > wait_ns)
            left = wait_ns;
        if (left) {
            struct timespec ts = {(time_t)(left / 1000000000u), (long)(left % 1000000000u)};
            nanosleep(&ts, NULL);
        }
    }
    retire(w);
    return 0;
}

int audit_writer_durable_position(const struct audit_writer *w, struct cbus_position *out)
{
    if (w->has_durable_cursor)
        *out = w->durable;
    return w->has_durable_cursor;
}

int audit_writer_idle(const struct audit_writer *w)
{
    return w->used == 0 && w->inflight_ops == 0 && !w->rotate_pending;
}

int audit_writer_failing(const struct audit_writer *w)
{
    return w->failing;
}

void audit_writer_stats(const struct audit_writer *w, struct audit_writer_stats *out)
{
    *out = w->st;
    out->failing = w->failing;
}
