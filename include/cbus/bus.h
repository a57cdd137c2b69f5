/* Creating, opening and inspecting a bus segment (/dev/shm/cbus.NAME). */
#ifndef CBUS_BUS_H
#define CBUS_BUS_H

#include <cbus/cbus.h>

#ifdef __cplusplus
extern "C" {
#endif

struct cbus_create_opts {
    uint64_t capacity;          /* slots, power of two, 1024..2^24; 0 = 16384 (8 MiB) */
    uint32_t mode;              /* 0 = 0600; 0660 with group_name */
    const char *group_name;     /* NULL = none; else chown to this group, mode 0660 */
    uint64_t lossless_wait_ns;  /* 0 = 1 ms */
    uint64_t stall_timeout_ns;  /* 0 = 2 s: heartbeat age that untethers a lossless consumer */
    uint64_t abandon_timeout_ns;/* 0 = 20 ms: a dead writer's slot is skipped after this */
    uint64_t admit_stale_ns;    /* 0 = 3 s */
    uint32_t admission_entries; /* power of two, 0 = 4096 */
    uint32_t lanes;             /* producer lanes, power of two 1..64, 0 = 1: a thread
                                   owns a lane, so threads do not contend on one tail;
                                   capacity is split between them (in the struct's
                                   former tail padding: its size is unchanged) */
    uint32_t body_limit;        /* bytes of body one event may carry (docs/bodies.md),
                                   496..CBUS_BODY_LIMIT_MAX and at most a sixteenth of
                                   a lane; 0 = CBUS_BODY_LIMIT_DEFAULT, cut to fit */
};

/* Creates /dev/shm/cbus.NAME (O_EXCL) sized for opts, zero-filled so a full
 * /dev/shm fails here and not as a SIGBUS later.
 * Returns 0, -EEXIST (already exists), -EINVAL (name or option, a mode with
 * other-user or execute bits included), -ENOSPC (no room in /dev/shm),
 * -EACCES (no write permission in /dev/shm), -EPERM (group_name is a group
 * you cannot chown to: not a member), -ENOENT (no such group), -ENOMEM. */
CBUS_API int cbus_bus_create(const char *name, const struct cbus_create_opts *opts);

/* Removes the name; mapped users keep working until they unmap.
 * Returns 0, -ENOENT, -EINVAL, -EACCES. */
CBUS_API int cbus_bus_destroy(const char *name);

#define CBUS_OPEN_TRUST_OWNER (1u << 0) /* accept a segment owned by another uid */
#define CBUS_OPEN_READONLY    (1u << 1) /* map read-only (inspection tools) */

/* Opens and validates a segment: regular file (a FIFO or device is refused
 * without blocking), no symlink, owned by us (unless CBUS_OPEN_TRUST_OWNER),
 * not world-accessible, size matches the header, magic, endianness, layout
 * major and fingerprint, every offset in bounds.
 * Returns 0, or one code per problem (each has one fix):
 *   -ENOENT         no bus of this name
 *   -EACCES         the kernel refused the open (mode/group: ask its owner)
 *   -EPERM          owned by another uid (pass CBUS_OPEN_TRUST_OWNER to accept)
 *   -CBUS_EWORLD    world-accessible (any o+rwx bit): recreate it
 *   -ELOOP          the name is a symlink
 *   -EPROTO         not a cbus segment of this layout: not a regular file,
 *                   too short, bad magic, other byte order, other layout
 *                   major or fingerprint
 *   -CBUS_EFEATURE  a cbus segment needing a feature this library does not
 *                   know (an unknown required_features bit)
 *   -EBADMSG        header inconsistent (corrupt, truncated, never finished)
 *   -EINVAL         bad name or out
 *   -ENOMEM, or another -errno of open/fstat/mmap. */
CBUS_API int cbus_bus_open(cbus_bus **out, const char *name, unsigned flags);
/* Same on any memory the caller provides (anonymous or memfd mapping), as
 * laid out by cbus_bus_format().  The memory must outlive the handle.
 * Returns 0, -EPROTO, -CBUS_EFEATURE, -EBADMSG (as cbus_bus_open()),
 * -EINVAL, -ENOMEM. */
CBUS_API int cbus_bus_open_mem(cbus_bus **out, void *base, size_t len);
CBUS_API int cbus_bus_format(void *base, size_t len, const char *name, const struct cbus_create_opts *opts);
/* Bytes needed for a segment with these options (0 when invalid). */
CBUS_API size_t cbus_bus_size(const struct cbus_create_opts *opts);
CBUS_API void cbus_bus_close(cbus_bus *bus);

/* Read access for tools (cbusctl) and consumers: the validated header. */
CBUS_API const struct cbus_shm_header *cbus_bus_header(const cbus_bus *bus);
CBUS_API struct cbus_consumer_entry *cbus_bus_consumer_entry(cbus_bus *bus, unsigned idx);
CBUS_API struct cbus_producer_entry *cbus_bus_producer_entry(cbus_bus *bus, unsigned idx);
/* Positions claimed so far, summed over the lanes. */
CBUS_API uint64_t cbus_bus_tail(const cbus_bus *bus);
/* Lanes (for tools): the count, slots per lane, a lane's tail, the thread
 * that owns it (pid 0: free; a lane of a one-lane bus has no owner), and a
 * consumer entry's committed cursor and read position in it.  The getters
 * return -EINVAL on a bad index. */
CBUS_API unsigned cbus_bus_lanes(const cbus_bus *bus);
CBUS_API uint64_t cbus_bus_lane_capacity(const cbus_bus *bus);
/* Bytes of body one event may carry on this bus (cbus_create_opts.body_limit). */
CBUS_API uint32_t cbus_bus_body_limit(const cbus_bus *bus);
CBUS_API uint64_t cbus_bus_lane_tail(const cbus_bus *bus, unsigned lane);
CBUS_API int cbus_bus_lane_owner(const cbus_bus *bus, unsigned lane, uint32_t *pid, uint32_t *tid);
CBUS_API int cbus_bus_consumer_lane(const cbus_bus *bus, unsigned idx, unsigned lane,
                                    uint64_t *cursor, uint64_t *read_pos);
CBUS_API int cbus_bus_fd(const cbus_bus *bus);

/* Is this handle still on the segment its name refers to?  Cheap (fstat and
 * lstat, no lock): call it at heartbeat cadence, never per event.
 * Returns 0 (yes), -EIO (the segment was truncated under us: its pages are
 * gone and the guard replaced them with zeros, or it shrank and would fault
 * next; the handle is dead, open the bus again once it is re-created),
 * -ENOENT (the name was removed (cbusctl destroy, rm): this segment still
 * works for whoever maps it, but nothing new will open it), -EIDRM (the name
 * now refers to another segment: the bus was re-created; open it again to
 * follow it), -EINVAL, or another -errno from fstat/lstat.
 * Buses opened with cbus_bus_open_mem() are neither guarded nor named by a
 * file: always 0. */
CBUS_API int cbus_bus_check(cbus_bus *bus);

/* The SIGBUS guard (bus/guard.c, SECURITY.md).  cbus_bus_open() installs,
 * once per process, a SIGBUS handler that survives a truncated segment: for
 * a fault inside a bus mapping it maps zero pages over the mapping, marks
 * the bus broken (emits and consumer calls then return -ESTALE and
 * cbus_bus_check() -EIO) and returns; any other SIGBUS goes to the handler
 * that was installed before it (or the default action).  A host that
 * installs its own SIGBUS handler later (Python's faulthandler, a JVM)
 * replaces ours: a truncation then kills the process as it would without
 * cbus, unless that handler chains to its predecessor with the original
 * siginfo.  Calling cbus_guard_install() after the host's handler is in
 * place puts the guard back in front, chaining to the host's handler.
 * Returns 0 or -errno from sigaction. */
CBUS_API int cbus_guard_install(void);

/* Liveness of a consumer entry: 1 alive, 0 dead (its OFD lock is gone or its
 * pid/start time no longer match), -errno on error. */
CBUS_API int cbus_bus_consumer_alive(cbus_bus *bus, unsigned idx);
/* Frees a consumer entry whose owner is dead (cbusctl evict).  With force,
 * frees it even if alive (the owner sees -ESTALE on its next call).
 * Returns 0, -EBUSY (alive and not forced), -ENOENT (free), -EINVAL. */
CBUS_API int cbus_bus_evict(cbus_bus *bus, unsigned idx, int force);
/* Reads the event of id `id` (lane position * lanes + lane; on a one-lane bus
 * the ring position) into *out if still present and committed.
 * Returns 0, -EAGAIN (not yet committed), -ESPIPE (overwritten). For tools. */
CBUS_API int cbus_bus_peek(cbus_bus *bus, uint64_t id, struct cbus_event *out);

#ifdef __cplusplus
}
#endif

#endif
