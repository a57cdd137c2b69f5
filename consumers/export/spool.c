#include "spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#define SPOOL_MAGIC "CBXSPOOL"
#define SPOOL_VERSION 1
#define SPOOL_HDR 64
#define SPOOL_EXT ".cbxs"

struct spool {
    char dir[512];
    int dirfd;                 /* -1: memory spool */
    struct io_uring ring;
    int ring_ok;
    int ring_broken;           /* the kernel refused a submit or a wait: spool in memory */
    struct batch *head, *tail;
    size_t count;
    uint64_t bytes;
    uint64_t limit;
    uint64_t next_seq;
    struct spool_stats st;
};

/* On-disk header, little endian (the machine's: the spool never moves hosts). */
struct spool_hdr {
    char magic[8];
    uint32_t version;
    uint8_t format;
    uint8_t gzip;
    uint16_t _reserved0;
    uint32_t items;
    uint32_t crc;
    uint64_t body_len;
    uint64_t min_pos;
    uint64_t max_pos;
    uint64_t created_realtime_ns;
    uint64_t _reserved1;
};
_Static_assert(sizeof(struct spool_hdr) == SPOOL_HDR, "spool header is 64 bytes");

void batch_free(struct batch *b)
{
    if (!b)
        return;
    sbuf_free(&b->body);
    free(b);
}

/* Submits what is queued and reaps n completions.  Returns the first
 * negative result (as -errno), else the result of the LAST completion in
 * submission order (its user_data is its index).  res[] gets every result.
 *
 * It never returns with an operation of this call still in the ring: a
 * signal (the soak's SIGSTOP/SIGCONT, a SIGHUP) makes io_uring_enter return
 * -EINTR, and a completion left behind would be taken by the next call as
 * its own -- a stale close's 0 read as a new file's descriptor, writes to
 * the wrong file, and a crash (seen under `stress-ng`: "spool write failed:
 * Bad file descriptor", then SIGSEGV).  So interrupted submits and waits
 * are retried; only a submit the kernel refuses outright is an error, and
 * then nothing of this call was submitted and the queue is dropped. */
static int uring_run(struct spool *s, unsigned n, int *res)
{
    for (unsigned i = 0; i < n; i++)
        res[i] = -ECANCELED;
    if (s->ring_broken)
        return -EIO;
    /* What the kernel took is what left the submission ring, not what
     * io_uring_submit() says: an interrupted io_uring_enter may have taken
     * the entries and still returned -EINTR, and the retry then submits 0
     * (seen under ASan with a 50 us timer: the call returned -ECANCELED and
     * left four completions for the next one). */
    int refused = 0;
    for (unsigned tries = 0; io_uring_sq_ready(&s->ring) > 0; tries++) {
        int r = io_uring_submit(&s->ring);
        if (r >= 0 || r == -EINTR || r == -EAGAIN || r == -EBUSY) {
            if (tries < 100000)
                continue;
            r = -EIO; /* the kernel takes nothing, again and again */
        }
        /* SQEs the kernel did not take cannot be taken back out of the
         * ring, and a later submit would run them: the ring is done for
         * (the spool goes on in memory).  Reap what went. */
        s->ring_broken = 1;
        refused = r;
        break;
    }
    const unsigned left = io_uring_sq_ready(&s->ring);
    const unsigned submitted = left < n ? n - left : 0;
    if (refused && submitted == 0)
        return refused;
    for (unsigned got = 0; got < submitted;) {
        struct io_uring_cqe *cqe;
        int r = io_uring_wait_cqe(&s->ring, &cqe);
        if (r == -EINTR || r == -EAGAIN)
            continue;
        if (r < 0) {
            s->ring_broken = 1;
            return r;
        }
        unsigned idx = (unsigned)io_uring_cqe_get_data64(cqe);
        if (idx < n)
            res[idx] = cqe->res;
        io_uring_cqe_seen(&s->ring, cqe);
        got++;
    }
    int first_err = 0;
    for (unsigned i = 0; i < n; i++)
        if (res[i] < 0 && !first_err)
            first_err = res[i];
    return first_err ? first_err : res[n - 1];
}

/* Queues one operation: prep fills a fresh SQE (io_uring_prep_* clears
 * flags and user_data, so they are set after it).  The ring has 8 entries
 * and every chain here is at most 4 long. */
#define QUEUE(s, idx, link, prep_call)                                                             \
    do {                                                                                           \
        struct io_uring_sqe dummy_, *q_ = io_uring_get_sqe(&(s)->ring);                            \
        if (!q_) { /* only once the ring is broken: uring_run fails the call */                    \
            q_ = &dummy_;                                                                          \
            (s)->ring_broken = 1;                                                                  \
        }                                                                                          \
        struct io_uring_sqe *sqe = q_;                                                             \
        prep_call;                                                                                 \
        io_uring_sqe_set_data64(q_, (idx));                                                        \
        if (link)                                                                                  \
            q_->flags |= IOSQE_IO_LINK;                                                            \
    } while (0)

static void file_name(char *out, size_t cap, uint64_t seq)
{
    snprintf(out, cap, "%020llu" SPOOL_EXT, (unsigned long long)seq);
}

/* A signal that arrives while io_uring runs an operation in its worker
 * (openat, fsync) ends the operation with -ECANCELED (or -EINTR), and a
 * linked chain with it: nothing was done wrong, the operation is run again
 * (seen under a 50 us timer: about one open in a thousand).  Bounded, so a
 * storm of signals ends as an error the caller counts, never a spin. */
#define SPOOL_INTR_RETRIES 64
static int interrupted(int r)
{
    return r == -ECANCELED || r == -EINTR;
}

/* Opens name relative to the spool directory through io_uring. */
static int uring_open(struct spool *s, const char *name, int flags, mode_t mode)
{
    int r;
    for (int tries = 0; tries < SPOOL_INTR_RETRIES; tries++) {
        int res[1] = {0};
        QUEUE(s, 0, 0, io_uring_prep_openat(sqe, s->dirfd, name, flags | O_CLOEXEC, mode));
        r = uring_run(s, 1, res);
        if (!interrupted(r) || s->ring_broken)
            break;
    }
    return r;
}

static int write_file_once(struct spool *s, struct batch *b)
{
    char name[40];
    file_name(name, sizeof name, b->seq);
    int fd = uring_open(s, name, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        return fd;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct spool_hdr h = {
        .version = SPOOL_VERSION,
        .format = b->format,
        .gzip = b->gzip,
        .items = b->items,
        .crc = (uint32_t)crc32(0, (const Bytef *)b->body.data, (uInt)b->body.len),
        .body_len = b->body.len,
        .min_pos = b->min_pos,
        .max_pos = b->max_pos,
        .created_realtime_ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec,
    };
    memcpy(h.magic, SPOOL_MAGIC, 8);
    struct iovec iov[2] = {{&h, sizeof h}, {b->body.data, b->body.len}};
    /* write -> fsync(file) -> close -> fsync(dir): the new name is durable
     * only once the directory is synced too.  A failed link cancels the rest. */
    int res[4] = {0, 0, 0, 0};
    QUEUE(s, 0, 1, io_uring_prep_writev(sqe, fd, iov, 2, 0));
    QUEUE(s, 1, 1, io_uring_prep_fsync(sqe, fd, 0));
    QUEUE(s, 2, 1, io_uring_prep_close(sqe, fd));
    QUEUE(s, 3, 0, io_uring_prep_fsync(sqe, s->dirfd, 0));
    int r = uring_run(s, 4, res);
    if (res[0] >= 0 && (size_t)res[0] != sizeof h + b->body.len)
        r = -EIO; /* short write: disk full while writing */
    if (r < 0) {
        if (res[2] == -ECANCELED)
            close(fd); /* the linked close never ran */
        unlinkat(s->dirfd, name, 0);
        return r;
    }
    return 0;
}

static int read_file_once(struct spool *s, uint64_t seq, struct spool_hdr *h, struct sbuf *body)
{
    char name[40];
    file_name(name, sizeof name, seq);
    int fd = uring_open(s, name, O_RDONLY, 0);
    if (fd < 0)
        return fd;
    int res[3] = {0, 0, 0};
    if (!body) {
        QUEUE(s, 0, 1, io_uring_prep_read(sqe, fd, h, sizeof *h, 0));
        QUEUE(s, 1, 0, io_uring_prep_close(sqe, fd));
        int r = uring_run(s, 2, res);
        if (res[1] == -ECANCELED)
            close(fd); /* the linked close never ran */
        if (r < 0 && res[0] < 0)
            return res[0];
        if (res[0] != (int)sizeof *h || memcmp(h->magic, SPOOL_MAGIC, 8) || h->version != SPOOL_VERSION ||
            h->body_len > (1ull << 31) || h->format >= WIRE_COUNT)
            return -EBADMSG;
        return 0;
    }
    sbuf_reset(body);
    if (sbuf_reserve(body, h->body_len)) {
        close(fd);
        return -ENOMEM;
    }
    struct spool_hdr h2;
    struct iovec iov[2] = {{&h2, sizeof h2}, {body->data, h->body_len}};
    QUEUE(s, 0, 1, io_uring_prep_readv(sqe, fd, iov, 2, 0));
    QUEUE(s, 1, 0, io_uring_prep_close(sqe, fd));
    uring_run(s, 2, res);
    if (res[1] == -ECANCELED)
        close(fd); /* the linked close never ran */
    if (res[0] < 0)
        return res[0];
    if ((size_t)res[0] != sizeof h2 + h->body_len || memcmp(&h2, h, sizeof h2))
        return -EBADMSG;
    body->len = h->body_len;
    body->data[body->len] = '\0';
    if ((uint32_t)crc32(0, (const Bytef *)body->data, (uInt)body->len) != h->crc)
        return -EBADMSG;
    return 0;
}

/* The file operations, run again when a signal cancelled them (a failed
 * write is unlinked and its descriptor closed first: a retry starts clean). */
static int write_file(struct spool *s, struct batch *b)
{
    int r;
    for (int tries = 0; tries < SPOOL_INTR_RETRIES; tries++)
        if (!interrupted(r = write_file_once(s, b)) || s->ring_broken)
            break;
    return r;
}

static int read_file(struct spool *s, uint64_t seq, struct spool_hdr *h, struct sbuf *body)
{
    int r;
    for (int tries = 0; tries < SPOOL_INTR_RETRIES; tries++)
        if (!interrupted(r = read_file_once(s, seq, h, body)) || s->ring_broken)
            break;
    return r;
}

static void unlink_seq(struct spool *s, uint64_t seq)
{
    char name[40];
    file_name(name, sizeof name, seq);
    int res[1] = {0};
    QUEUE(s, 0, 0, io_uring_prep_unlinkat(sqe, s->dirfd, name, 0));
    if (uring_run(s, 1, res) < 0 && res[0] != -ENOENT)
        unlinkat(s->dirfd, name, 0);
}

/* Links b in by seq: from the tail, since it is nearly always the newest. */
static void insert_sorted(struct spool *s, struct batch *b)
{
    struct batch *after = s->tail;
    while (after && after->seq > b->seq)
        after = after->prev;
    b->prev = after;
    b->next = after ? after->next : s->head;
    if (b->next)
        b->next->prev = b;
    else
        s->tail = b;
    if (after)
        after->next = b;
    else
        s->head = b;
    s->count++;
    s->bytes += b->body_len;
    b->in_spool = 1;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int recover(struct spool *s, char *err, size_t errlen)
{
    DIR *d = fdopendir(dup(s->dirfd));
    if (!d) {
        snprintf(err, errlen, "spool %s: %s", s->dir, strerror(errno));
        return -errno;
    }
    size_t n = 0, cap = 64;
    uint64_t *seqs = malloc(cap * sizeof *seqs);
    struct dirent *de;
    while (seqs && (de = readdir(d))) {
        size_t len = strlen(de->d_name);
        char *end;
        if (len != 20 + sizeof SPOOL_EXT - 1 || strcmp(de->d_name + 20, SPOOL_EXT))
            continue;
        unsigned long long seq = strtoull(de->d_name, &end, 10);
        if (end != de->d_name + 20)
            continue;
        if (n == cap) {
            cap *= 2;
            uint64_t *ns = realloc(seqs, cap * sizeof *ns);
            if (!ns) {
                free(seqs);
                seqs = NULL;
                break;
            }
            seqs = ns;
        }
        seqs[n++] = seq;
    }
    closedir(d);
    if (!seqs) {
        snprintf(err, errlen, "spool %s: out of memory", s->dir);
        return -ENOMEM;
    }
    qsort(seqs, n, sizeof *seqs, cmp_u64);
    for (size_t i = 0; i < n; i++) {
        struct spool_hdr h;
        int r = read_file(s, seqs[i], &h, NULL);
        if (r) {
            s->st.corrupt++;
            unlink_seq(s, seqs[i]);
            continue;
        }
        struct batch *b = calloc(1, sizeof *b);
        if (!b)
            break;
        b->seq = seqs[i];
        /* positions of an earlier run (maybe another bus): durable, never held */
        batch_holds_none(b);
        b->max_pos = 0;
        b->items = h.items;
        b->format = h.format;
        b->gzip = h.gzip;
        b->body_len = h.body_len;
        b->on_disk = 1;
        sbuf_init(&b->body);
        insert_sorted(s, b);
        s->st.recovered++;
    }
    s->next_seq = n ? seqs[n - 1] + 1 : 1;
    free(seqs);
    return 0;
}

int spool_open(struct spool **out, const char *dir, uint64_t limit, char *err, size_t errlen)
{
    struct spool *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->dirfd = -1;
    s->limit = limit;
    s->next_seq = 1;
    if (dir && *dir) {
        snprintf(s->dir, sizeof s->dir, "%s", dir);
        if (mkdir(dir, 0700) && errno != EEXIST) {
            int e = errno;
            snprintf(err, errlen, "spool dir %s: %s", dir, strerror(e));
            free(s);
            return -e;
        }
        s->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (s->dirfd < 0) {
            int e = errno;
            snprintf(err, errlen, "spool dir %s: %s", dir, strerror(e));
            free(s);
            return -e;
        }
        int r = io_uring_queue_init(8, &s->ring, 0);
        if (r < 0) {
            snprintf(err, errlen, "io_uring_queue_init: %s (the disk spool needs io_uring)", strerror(-r));
            close(s->dirfd);
            free(s);
            return r;
        }
        s->ring_ok = 1;
        r = recover(s, err, errlen);
        if (r) {
            spool_close(s);
            return r;
        }
    }
    *out = s;
    return 0;
}

void spool_close(struct spool *s)
{
    if (!s)
        return;
    for (struct batch *b = s->head, *n; b; b = n) {
        n = b->next;
        batch_free(b);
    }
    if (s->ring_ok)
        io_uring_queue_exit(&s->ring);
    if (s->dirfd >= 0)
        close(s->dirfd);
    free(s);
}

uint64_t spool_take_seq(struct spool *s)
{
    return s->next_seq++;
}

int spool_append(struct spool *s, struct batch *b)
{
    if (!b->seq)
        b->seq = s->next_seq++;
    b->body_len = b->body.len;
    b->sending = 0;
    int r = 0;
    s->st.appended++;
    s->st.append_bytes += b->body_len;
    if (s->dirfd >= 0) {
        r = write_file(s, b);
        if (r == 0) {
            b->on_disk = 1;
            sbuf_free(&b->body);
        } else {
            s->st.write_errors++;
        }
    }
    insert_sorted(s, b);
    return r;
}

struct batch *spool_head(struct spool *s)
{
    return s->head;
}

struct batch *spool_oldest_idle(struct spool *s)
{
    for (struct batch *b = s->head; b; b = b->next)
        if (!b->sending)
            return b;
    return NULL;
}

int spool_load(struct spool *s, struct batch *b)
{
    if (!b->on_disk || b->body.len)
        return 0;
    struct spool_hdr h = {0};
    int r = read_file(s, b->seq, &h, NULL);
    if (r == 0 && (h.body_len != b->body_len))
        r = -EBADMSG;
    if (r == 0)
        r = read_file(s, b->seq, &h, &b->body);
    if (r == -EBADMSG || r == -ENOENT) {
        s->st.corrupt++;
        return -EBADMSG;
    }
    return r;
}

void spool_unload(struct spool *s, struct batch *b)
{
    (void)s;
    if (b->on_disk)
        sbuf_free(&b->body);
}

void spool_remove(struct spool *s, struct batch *b)
{
    if (b->prev)
        b->prev->next = b->next;
    else
        s->head = b->next;
    if (b->next)
        b->next->prev = b->prev;
    else
        s->tail = b->prev;
    s->count--;
    s->bytes -= b->body_len;
    if (b->on_disk)
        unlink_seq(s, b->seq);
    batch_free(b);
}

size_t spool_count(const struct spool *s)
{
    return s->count;
}

uint64_t spool_bytes(const struct spool *s)
{
    return s->bytes;
}

uint64_t spool_limit(const struct spool *s)
{
    return s->limit;
}

int spool_on_disk(const struct spool *s)
{
    return s->dirfd >= 0;
}

uint64_t spool_min_volatile_pos(const struct spool *s)
{
    uint64_t m = UINT64_MAX;
    for (const struct batch *b = s->head; b; b = b->next)
        if (!b->on_disk && b->min_pos < m)
            m = b->min_pos;
    return m;
}

void spool_min_volatile_lanes(const struct spool *s, unsigned lanes, uint64_t *out)
{
    for (const struct batch *b = s->head; b; b = b->next)
        if (!b->on_disk)
            for (unsigned L = 0; L < lanes; L++)
                if (b->lane_min[L] < out[L])
                    out[L] = b->lane_min[L];
}

const struct spool_stats *spool_stats(const struct spool *s)
{
    return &s->st;
}
