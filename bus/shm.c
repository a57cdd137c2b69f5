/* The segment: create, format, open and validate /dev/shm/cbus.NAME.
 * Nothing in a segment is trusted until cbus__bus_validate() has checked
 * magic, endianness, layout, fingerprint and every offset against the file
 * size (lttng-ust: "we don't trust the shm_ref"). */
#include "internal.h"

#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_CAPACITY      16384u
#define MIN_CAPACITY          1024u
#define MAX_CAPACITY          (1u << 24)
#define DEFAULT_ADMIT_ENTRIES 4096u
#define MAX_ADMIT_ENTRIES     (1u << 20)
#define MIN_LANE_CAPACITY     256u

struct layout {
    uint64_t capacity;
    uint32_t admission_entries;
    uint32_t lane_count;
    uint64_t lane_capacity;
    uint64_t consumers_off, producers_off, admission_off, slots_off, lanes_off, lane_cursors_off,
        total;
};

static int is_pow2(uint64_t x)
{
    return x && !(x & (x - 1));
}

static uint64_t align_up(uint64_t x, uint64_t a)
{
    return (x + a - 1) & ~(a - 1);
}

/* lane_count 0 is a segment from before lanes: one lane, no lane tables. */
static int compute_layout(struct layout *l, uint64_t capacity, uint32_t admission_entries,
                          uint32_t lane_count)
{
    if (!is_pow2(capacity) || capacity < MIN_CAPACITY || capacity > MAX_CAPACITY)
        return -EINVAL;
    if (lane_count == 0)
        lane_count = 1;
    if (!is_pow2(lane_count) || lane_count > CBUS_MAX_LANES ||
        capacity / lane_count < MIN_LANE_CAPACITY)
        return -EINVAL;
    if (!is_pow2(admission_entries) || admission_entries < 64 ||
        admission_entries > MAX_ADMIT_ENTRIES)
        return -EINVAL;
    l->capacity = capacity;
    l->admission_entries = admission_entries;
    l->consumers_off = CBUS_HEADER_SIZE;
    l->producers_off = l->consumers_off + CBUS_MAX_CONSUMERS * sizeof(struct cbus_consumer_entry);
    l->admission_off = l->producers_off + CBUS_MAX_PRODUCERS * sizeof(struct cbus_producer_entry);
    uint64_t admit_end = l->admission_off +
                         CBUS_ADMIT_MAX_WRITERS * sizeof(struct cbus_admit_writer) +
                         (uint64_t)admission_entries * sizeof(struct cbus_admit_entry);
    l->slots_off = align_up(admit_end, 4096);
    l->total = l->slots_off + capacity * CBUS_SLOT_SIZE;
    l->lane_count = lane_count;
    l->lane_capacity = capacity / lane_count;
    l->lanes_off = l->lane_cursors_off = 0;
    if (lane_count > 1) {
        /* after the slots, so a one-lane segment is byte for byte the
         * layout from before lanes */
        l->lanes_off = l->total;
        l->lane_cursors_off = l->lanes_off + lane_count * sizeof(struct cbus_lane);
        l->total = align_up(l->lane_cursors_off +
                                CBUS_MAX_CONSUMERS * sizeof(struct cbus_lane_cursors), 4096);
    }
    return 0;
}

static void fill_defaults(struct cbus_create_opts *o, const struct cbus_create_opts *in)
{
    memset(o, 0, sizeof *o);
    if (in)
        *o = *in;
    if (!o->capacity)
        o->capacity = DEFAULT_CAPACITY;
    if (!o->lossless_wait_ns)
        o->lossless_wait_ns = 1000000u;
    if (!o->stall_timeout_ns)
        o->stall_timeout_ns = 2000000000u;
    if (!o->abandon_timeout_ns)
        o->abandon_timeout_ns = 20000000u;
    if (!o->admit_stale_ns)
        o->admit_stale_ns = 3000000000u;
    if (!o->admission_entries)
        o->admission_entries = DEFAULT_ADMIT_ENTRIES;
}

/* The body limit for a lane of lane_cap slots: asked (0 = the default,
 * cut to what fits), or 0 if what was asked does not fit.  A body may take
 * at most a sixteenth of a lane (the bulk kinds leave an eighth free, and a
 * lapping reader must be able to tell a body from the next lap). */
uint32_t cbus__body_limit_for(uint32_t asked, uint64_t lane_cap)
{
    uint64_t fit = lane_cap / 16 * CBUS_BODY_PER_SLOT;
    if (fit > CBUS_BODY_LIMIT_MAX)
        fit = CBUS_BODY_LIMIT_MAX;
    if (!asked)
        return (uint32_t)(fit < CBUS_BODY_LIMIT_DEFAULT ? fit : CBUS_BODY_LIMIT_DEFAULT);
    return asked >= CBUS_BODY_PER_SLOT && asked <= fit ? asked : 0;
}

CBUS_API size_t cbus_bus_size(const struct cbus_create_opts *opts)
{
    struct cbus_create_opts o;
    struct layout l;
    fill_defaults(&o, opts);
    if (compute_layout(&l, o.capacity, o.admission_entries, o.lanes))
        return 0;
    return (size_t)l.total;
}

int cbus__shm_path(char *out, size_t len, const char *name)
{
    if (cbus_name_valid(name))
        return -EINVAL;
    int n = snprintf(out, len, "/dev/shm/cbus.%s", name);
    return n > 0 && (size_t)n < len ? 0 : -EINVAL;
}

static void set_field(struct cbus_shm_header *h, int i, const char *name, size_t off, size_t size)
{
    snprintf(h->fields[i].name, sizeof h->fields[i].name, "%s", name);
    h->fields[i].offset = (uint16_t)off;
    h->fields[i].size = (uint16_t)size;
}

#define FIELD(i, f) set_field(h, i, #f, offsetof(struct cbus_event, f), sizeof(((struct cbus_event *)0)->f))

CBUS_API int cbus_bus_format(void *base, size_t len, const char *name,
                             const struct cbus_create_opts *opts)
{
    struct cbus_create_opts o;
    struct layout l;
    if (!base || cbus_name_valid(name))
        return -EINVAL;
    fill_defaults(&o, opts);
    if (compute_layout(&l, o.capacity, o.admission_entries, o.lanes) || l.total > len)
        return -EINVAL;
    uint32_t body_limit = cbus__body_limit_for(o.body_limit, l.lane_capacity);
    if (!body_limit)
        return -EINVAL;
    if (o.lossless_wait_ns > 10000000000u || o.stall_timeout_ns < 1000000u ||
        o.abandon_timeout_ns < 1000000u || o.admit_stale_ns < 1000000u)
        return -EINVAL;
    memset(base, 0, (size_t)l.total);
    struct cbus_shm_header *h = base;
    h->magic = CBUS_MAGIC;
    h->endian = CBUS_ENDIAN_MARK;
    h->layout_major = CBUS_LAYOUT_MAJOR;
    h->layout_minor = CBUS_LAYOUT_MINOR; /* for old tools' display only */
    /* What this segment relies on: its consumers sleep with the need_wake
     * handshake (bus/consumer.c).  A reader that does not know it would
     * sleep through every event, so it is required, not compat. */
    h->required_features = CBUS_FEATURE_NEED_WAKE;
    h->compat_features = 0;
    h->fingerprint = CBUS_LAYOUT_FINGERPRINT;
    h->header_size = CBUS_HEADER_SIZE;
    h->slot_size = CBUS_SLOT_SIZE;
    h->capacity = l.capacity;
    h->total_size = l.total;
    h->consumers_off = l.consumers_off;
    h->max_consumers = CBUS_MAX_CONSUMERS;
    h->max_producers = CBUS_MAX_PRODUCERS;
    h->producers_off = l.producers_off;
    h->admission_off = l.admission_off;
    h->admission_entries = l.admission_entries;
    h->admit_max_writers = CBUS_ADMIT_MAX_WRITERS;
    h->slots_off = l.slots_off;
    h->lane_count = l.lane_count;
    h->lane_capacity = l.lane_capacity;
    h->lanes_off = l.lanes_off;
    h->lane_cursors_off = l.lane_cursors_off;
    h->body_limit = body_limit;
    if (l.lane_count > 1)
        h->required_features |= CBUS_FEATURE_LANES;
    uint64_t id = 0;
    FILE *r = fopen("/dev/urandom", "re");
    if (!r || fread(&id, sizeof id, 1, r) != 1)
        id = cbus__real_ns() ^ ((uint64_t)getpid() << 32);
    if (r)
        fclose(r);
    h->bus_id = id ? id : 1;
    h->creator_pid = (uint32_t)getpid();
    h->creator_start_time = cbus__pid_start_time(getpid());
    h->created_realtime_ns = cbus__real_ns();
    h->mode = o.mode ? o.mode : (o.group_name ? 0660 : 0600);
    h->lossless_wait_ns = o.lossless_wait_ns;
    h->stall_timeout_ns = o.stall_timeout_ns;
    h->abandon_timeout_ns = o.abandon_timeout_ns;
    h->admit_stale_ns = o.admit_stale_ns;
    cbus__clock_calibrate(h);
    snprintf(h->name, sizeof h->name, "%s", name);
    FIELD(0, kind);
    FIELD(1, flags);
    FIELD(2, pid);
    FIELD(3, tid);
    FIELD(4, event_id);
    FIELD(5, ts_realtime_ns);
    FIELD(6, ts_mono_ns);
    FIELD(7, run_id);
    FIELD(8, parent_run_id);
    FIELD(9, trace_id);
    FIELD(10, u);
    FIELD(11, provider);
    FIELD(12, model);
    FIELD(13, user);
    FIELD(14, session);
    FIELD(15, request_id);
    FIELD(16, name);
    FIELD(17, preview);
    FIELD(18, body_len);
    FIELD(19, key_hash);
    FIELD(20, agent);
    FIELD(21, tenant);
    /* RELEASE: publishes everything above.  Pairs with the ACQUIRE load of
     * ready in cbus__bus_validate(). */
    atomic_store_explicit(&h->ready, 1, memory_order_release);
    return 0;
}

CBUS_API int cbus_bus_create(const char *name, const struct cbus_create_opts *opts)
{
    char path[64];
    struct cbus_create_opts o;
    struct layout l;
    if (cbus__shm_path(path, sizeof path, name))
        return -EINVAL;
    fill_defaults(&o, opts);
    if (compute_layout(&l, o.capacity, o.admission_entries, o.lanes) ||
        !cbus__body_limit_for(o.body_limit, l.lane_capacity))
        return -EINVAL;
    if (o.mode & ~0660u)
        return -EINVAL; /* never world-accessible, never executable */
    gid_t gid = (gid_t)-1;
    if (o.group_name) {
        struct group *g = getgrnam(o.group_name);
        if (!g)
            return -ENOENT;
        gid = g->gr_gid;
    }
    mode_t mode = o.mode ? o.mode : (o.group_name ? 0660 : 0600);
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0)
        return -errno;
    int err;
    void *base = MAP_FAILED;
    /* umask may have cut the mode: set exactly what was asked. */
    if (fchmod(fd, mode) < 0 || (gid != (gid_t)-1 && fchown(fd, (uid_t)-1, gid) < 0)) {
        err = -errno;
        goto err_unlink;
    }
    if (ftruncate(fd, (off_t)l.total) < 0) {
        err = -errno;
        goto err_unlink;
    }
    /* Reserve the pages now: a full /dev/shm fails here, not as SIGBUS in a
     * producer later. */
    err = posix_fallocate(fd, 0, (off_t)l.total);
    if (err) {
        err = -err;
        goto err_unlink;
    }
    base = mmap(NULL, (size_t)l.total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        err = -errno;
        goto err_unlink;
    }
    err = cbus_bus_format(base, (size_t)l.total, name, &o);
    if (err)
        goto err_unmap;
    munmap(base, (size_t)l.total);
    close(fd);
    return 0;

err_unmap:
    munmap(base, (size_t)l.total);
err_unlink:
    unlink(path);
    close(fd);
    return err;
}

CBUS_API int cbus_bus_destroy(const char *name)
{
    char path[64];
    if (cbus__shm_path(path, sizeof path, name))
        return -EINVAL;
    return unlink(path) < 0 ? -errno : 0;
}

int cbus__bus_validate(cbus_bus *bus, size_t file_len)
{
    struct cbus_shm_header *h = bus->base;
    if (file_len < CBUS_HEADER_SIZE)
        return -EPROTO;
    if (h->magic != CBUS_MAGIC)
        return -EPROTO;
    if (h->endian != CBUS_ENDIAN_MARK || h->layout_major != CBUS_LAYOUT_MAJOR ||
        h->fingerprint != CBUS_LAYOUT_FINGERPRINT)
        return -EPROTO;
    /* ACQUIRE: pairs with the RELEASE store in cbus_bus_format(). */
    if (atomic_load_explicit(&h->ready, memory_order_acquire) != 1)
        return -EBADMSG;
    /* A required bit we do not know is a protocol we would break; compat
     * bits we do not know are additions we may ignore. */
    if (h->required_features & ~(uint32_t)CBUS_FEATURES_REQUIRED_KNOWN)
        return -CBUS_EFEATURE;
    struct layout l;
    if (h->header_size != CBUS_HEADER_SIZE || h->slot_size != CBUS_SLOT_SIZE ||
        compute_layout(&l, h->capacity, h->admission_entries, h->lane_count))
        return -EBADMSG;
    /* The feature bit and the count agree, and a pre-lanes segment (count 0)
     * has nothing in the lane words. */
    if (!!(h->required_features & CBUS_FEATURE_LANES) != (l.lane_count > 1) ||
        (h->lane_count == 0 && (h->lane_capacity || h->lanes_off || h->lane_cursors_off)) ||
        (h->lane_count != 0 && (h->lane_capacity != l.lane_capacity ||
                                h->lanes_off != l.lanes_off ||
                                h->lane_cursors_off != l.lane_cursors_off)))
        return -EBADMSG;
    if (h->total_size != l.total || l.total != file_len || h->consumers_off != l.consumers_off ||
        h->producers_off != l.producers_off || h->admission_off != l.admission_off ||
        h->slots_off != l.slots_off || h->max_consumers != CBUS_MAX_CONSUMERS ||
        h->max_producers != CBUS_MAX_PRODUCERS || h->admit_max_writers != CBUS_ADMIT_MAX_WRITERS)
        return -EBADMSG;
    if (h->lossless_wait_ns > 10000000000u || h->stall_timeout_ns < 1000000u ||
        h->abandon_timeout_ns < 1000000u || h->admit_stale_ns < 1000000u)
        return -EBADMSG;
    /* The body limit the creator chose must be one it could have chosen:
     * readers size buffers by it, and a body never takes more than a
     * sixteenth of a lane. */
    if (cbus__body_limit_for(h->body_limit, l.lane_capacity) != h->body_limit)
        return -EBADMSG;
    char *base = bus->base;
    bus->hdr = h;
    bus->capacity = l.capacity;
    bus->slots = (struct cbus_slot *)(base + l.slots_off);
    bus->lane_count = l.lane_count;
    bus->lane_shift = (unsigned)__builtin_ctz(l.lane_count);
    bus->lane_cap = l.lane_capacity;
    bus->mask = l.lane_capacity - 1;
    bus->lanes = l.lanes_off ? (struct cbus_lane *)(base + l.lanes_off) : NULL;
    bus->lane_cursors =
        l.lane_cursors_off ? (struct cbus_lane_cursors *)(base + l.lane_cursors_off) : NULL;
    for (unsigned i = 0; i < l.lane_count; i++)
        bus->tails[i] = i == 0 ? &h->tail : &bus->lanes[i].tail;
    bus->consumers = (struct cbus_consumer_entry *)(base + l.consumers_off);
    bus->producers = (struct cbus_producer_entry *)(base + l.producers_off);
    bus->awriters = (struct cbus_admit_writer *)(base + l.admission_off);
    bus->aentries = (struct cbus_admit_entry *)(base + l.admission_off +
                                                CBUS_ADMIT_MAX_WRITERS * sizeof(struct cbus_admit_writer));
    bus->amask = l.admission_entries - 1;
    bus->body_limit = h->body_limit;
    bus->lossless_wait_ns = h->lossless_wait_ns;
    bus->stall_timeout_ns = h->stall_timeout_ns;
    bus->abandon_timeout_ns = h->abandon_timeout_ns;
    bus->admit_stale_ns = h->admit_stale_ns;
    cbus__clock_load(&bus->clock, h);
    memcpy(bus->name, h->name, sizeof bus->name);
    bus->name[sizeof bus->name - 1] = '\0';
    return 0;
}

CBUS_API int cbus_bus_open(cbus_bus **out, const char *name, unsigned flags)
{
    char path[64];
    if (!out)
        return -EINVAL;
    *out = NULL;
    if (cbus__shm_path(path, sizeof path, name))
        return -EINVAL;
    int ro = !!(flags & CBUS_OPEN_READONLY);
    /* O_NONBLOCK: anyone can put a FIFO at our name in world-writable
     * /dev/shm, and a read-only open of a FIFO would wait for a writer. */
    int fd = open(path, (ro ? O_RDONLY : O_RDWR) | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return -errno;
    int err;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        err = -errno;
        goto err_close;
    }
    if (!S_ISREG(st.st_mode)) {
        err = -EPROTO;
        goto err_close;
    }
    if (st.st_uid != geteuid() && !(flags & CBUS_OPEN_TRUST_OWNER)) {
        err = -EPERM;
        goto err_close;
    }
    /* Any local user could forge events in (or read prompts from) a segment
     * someone made world-accessible: refuse it until it is recreated. */
    if (st.st_mode & 0007) {
        err = -CBUS_EWORLD; /* not -EPERM: the fix differs (recreate, not trust) */
        goto err_close;
    }
    if (st.st_size < CBUS_HEADER_SIZE) {
        err = -EPROTO;
        goto err_close;
    }
    cbus_bus *bus = calloc(1, sizeof *bus);
    if (!bus) {
        err = -ENOMEM;
        goto err_close;
    }
    bus->len = (size_t)st.st_size;
    /* MAP_POPULATE: fault every page in now, so no emit ever pays a page
     * fault on its first lap of the ring. */
    bus->base = mmap(NULL, bus->len, ro ? PROT_READ : PROT_READ | PROT_WRITE,
                     MAP_SHARED | (ro ? 0 : MAP_POPULATE), fd, 0);
    if (bus->base == MAP_FAILED) {
        err = -errno;
        goto err_free;
    }
    bus->fd = fd;
    bus->owns_mapping = 1;
    bus->readonly = ro;
    bus->dev = st.st_dev;
    bus->ino = st.st_ino;
    /* Guarded before the first read: the file may be cut short right now. */
    bus->guard_slot = cbus__guard_register(bus->base, bus->len, &bus->broken);
    err = cbus__bus_validate(bus, bus->len);
    if (err)
        goto err_unmap;
    if (atomic_load_explicit(bus->broken, memory_order_acquire)) {
        err = -EBADMSG; /* truncated while we validated: what we read was zeros */
        goto err_unmap;
    }
    bus->bus_id = bus->hdr->bus_id;
    /* The name we opened by, not the one the header claims: the consumer
     * lock and cbus_bus_check() look the file up by it. */
    memset(bus->name, 0, sizeof bus->name);
    memcpy(bus->name, name, strlen(name));
    *out = bus;
    return 0;

err_unmap:
    cbus__guard_unregister(bus->guard_slot);
    munmap(bus->base, bus->len);
err_free:
    free(bus);
err_close:
    close(fd);
    return err;
}

static _Atomic uint32_t mem_never_broken;

CBUS_API int cbus_bus_open_mem(cbus_bus **out, void *base, size_t len)
{
    if (!out || !base)
        return -EINVAL;
    *out = NULL;
    cbus_bus *bus = calloc(1, sizeof *bus);
    if (!bus)
        return -ENOMEM;
    bus->base = base;
    bus->len = len;
    bus->fd = -1;
    /* The caller's memory (anonymous, memfd, maybe not page aligned) is not
     * ours to replace: it is not guarded. */
    bus->guard_slot = -1;
    bus->broken = &mem_never_broken;
    int err = cbus__bus_validate(bus, len);
    if (err) {
        free(bus);
        return err;
    }
    bus->bus_id = bus->hdr->bus_id;
    *out = bus;
    return 0;
}

CBUS_API void cbus_bus_close(cbus_bus *bus)
{
    if (!bus)
        return;
    if (bus->owns_mapping) {
        cbus__guard_unregister(bus->guard_slot);
        munmap(bus->base, bus->len);
    }
    if (bus->fd >= 0)
        close(bus->fd);
    free(bus);
}

CBUS_API int cbus_bus_check(cbus_bus *bus)
{
    if (!bus)
        return -EINVAL;
    /* ACQUIRE: pairs with the handler's store in guard.c. */
    if (atomic_load_explicit(bus->broken, memory_order_acquire))
        return -EIO;
    if (bus->fd < 0)
        return 0; /* the caller's memory: no file to compare with */
    struct stat st, ps;
    if (fstat(bus->fd, &st) < 0)
        return -errno;
    /* Shrunk but not touched yet: the next access past the end would fault. */
    if ((uint64_t)st.st_size < bus->len)
        return -EIO;
    char path[64];
    if (cbus__shm_path(path, sizeof path, bus->name))
        return -EINVAL;
    if (lstat(path, &ps) < 0)
        return errno == ENOENT ? -ENOENT : -errno;
    /* Our file is open, so its inode number cannot be reused meanwhile:
     * another (dev, ino) at the name is another segment. */
    if (ps.st_dev != bus->dev || ps.st_ino != bus->ino)
        return -EIDRM;
    if (bus->hdr->bus_id != bus->bus_id)
        return -EIDRM; /* formatted again in place */
    return 0;
}

CBUS_API int cbus_producer_check(cbus_producer *p)
{
    return p ? cbus_bus_check(cbus_producer_bus(p)) : -EINVAL;
}

CBUS_API int cbus_consumer_check(cbus_consumer *c)
{
    if (!c)
        return -EINVAL;
    int r = cbus_bus_check(cbus_consumer_bus(c));
    if (r)
        return r;
    /* stats is a pure read that says -ESTALE when our entry was taken. */
    struct cbus_consumer_stats st;
    return cbus_consumer_stats(c, &st) == -ESTALE ? -ESTALE : 0;
}

CBUS_API const struct cbus_shm_header *cbus_bus_header(const cbus_bus *bus)
{
    return bus ? bus->hdr : NULL;
}

CBUS_API struct cbus_consumer_entry *cbus_bus_consumer_entry(cbus_bus *bus, unsigned idx)
{
    return bus && idx < CBUS_MAX_CONSUMERS ? &bus->consumers[idx] : NULL;
}

CBUS_API struct cbus_producer_entry *cbus_bus_producer_entry(cbus_bus *bus, unsigned idx)
{
    return bus && idx < CBUS_MAX_PRODUCERS ? &bus->producers[idx] : NULL;
}

CBUS_API uint64_t cbus_bus_tail(const cbus_bus *bus)
{
    if (!bus)
        return 0;
    uint64_t sum = 0;
    for (unsigned L = 0; L < bus->lane_count; L++)
        sum += atomic_load_explicit(bus->tails[L], memory_order_acquire);
    return sum;
}

CBUS_API unsigned cbus_bus_lanes(const cbus_bus *bus)
{
    return bus ? bus->lane_count : 0;
}

CBUS_API uint64_t cbus_bus_lane_tail(const cbus_bus *bus, unsigned lane)
{
    return bus && lane < bus->lane_count ? atomic_load_explicit(bus->tails[lane], memory_order_acquire)
                                         : 0;
}

CBUS_API uint32_t cbus_bus_body_limit(const cbus_bus *bus)
{
    return bus ? bus->body_limit : 0;
}

CBUS_API uint64_t cbus_bus_lane_capacity(const cbus_bus *bus)
{
    return bus ? bus->lane_cap : 0;
}

CBUS_API int cbus_bus_lane_owner(const cbus_bus *bus, unsigned lane, uint32_t *pid, uint32_t *tid)
{
    if (!bus || lane >= bus->lane_count || !pid || !tid)
        return -EINVAL;
    uint64_t o = bus->lanes ? atomic_load_explicit(&bus->lanes[lane].owner, memory_order_acquire) : 0;
    *pid = (uint32_t)(o >> 32);
    *tid = (uint32_t)o;
    return 0;
}

CBUS_API int cbus_bus_consumer_lane(const cbus_bus *bus, unsigned idx, unsigned lane,
                                    uint64_t *cursor, uint64_t *read_pos)
{
    if (!bus || idx >= CBUS_MAX_CONSUMERS || lane >= bus->lane_count || !cursor || !read_pos)
        return -EINVAL;
    *cursor = atomic_load_explicit(cbus__cursor_word(bus, idx, lane), memory_order_acquire);
    *read_pos = atomic_load_explicit(cbus__read_pos_word(bus, idx, lane), memory_order_relaxed);
    return 0;
}

CBUS_API int cbus_bus_fd(const cbus_bus *bus)
{
    return bus ? bus->fd : -1;
}
