/* Segment creation, validation and bad input. */
#include <cbus/bus.h>
#include <cbus/consumer.h>
#include <cbus/producer.h>

#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "support.h"

static char name[64];
static char path[128];

static void setup(void)
{
    test_bus_name(name, sizeof name);
    snprintf(path, sizeof path, "/dev/shm/cbus.%s", name);
}

static void teardown(void)
{
    cbus_bus_destroy(name);
}

TestSuite(bus_shm, .init = setup, .fini = teardown);

Test(bus_shm, layout_offsets_are_published_in_header)
{
    test_bus_create(name, 1024);
    cbus_bus *bus;
    cr_assert_eq(cbus_bus_open(&bus, name, 0), 0);
    const struct cbus_shm_header *h = cbus_bus_header(bus);
    cr_assert_eq(h->magic, CBUS_MAGIC);
    cr_assert_eq(h->fingerprint, CBUS_LAYOUT_FINGERPRINT);
    cr_assert_eq(h->slot_size, 512);
    cr_assert_eq(h->capacity, 1024);
    cr_assert_neq(h->bus_id, 0);
    int found = 0;
    for (int i = 0; i < CBUS_FIELD_TABLE_MAX && h->fields[i].size; i++) {
        if (!strcmp(h->fields[i].name, "model")) {
            cr_assert_eq(h->fields[i].offset, offsetof(struct cbus_event, model));
            cr_assert_eq(h->fields[i].size, CBUS_MODEL_LEN);
            found = 1;
        }
    }
    cr_assert(found, "the field table names the model field");
    cbus_bus_close(bus);
}

Test(bus_shm, segment_is_0600_and_exclusive)
{
    test_bus_create(name, 1024);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0600);
    cr_assert_eq(cbus_bus_create(name, NULL), -EEXIST);
    cr_assert_eq(cbus_bus_destroy(name), 0);
    cr_assert_eq(cbus_bus_destroy(name), -ENOENT);
}

Test(bus_shm, bad_names_are_refused)
{
    const char *bad[] = {"", "a/b", "..", "../etc", ".hidden", "has space",
                         "0123456789012345678901234567890123456789", "tab\t"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_eq(cbus_bus_create(bad[i], NULL), -EINVAL, "name '%s'", bad[i]);
        cbus_bus *b;
        cr_assert_eq(cbus_bus_open(&b, bad[i], 0), -EINVAL);
    }
    cr_assert_eq(cbus_bus_create(NULL, NULL), -EINVAL);
    cr_assert_eq(cbus_name_valid("ok-name_1.2"), 0);
}

Test(bus_shm, bad_options_are_refused)
{
    struct cbus_create_opts o = {.capacity = 1000}; /* not a power of two */
    cr_assert_eq(cbus_bus_create(name, &o), -EINVAL);
    o.capacity = 512; /* too small */
    cr_assert_eq(cbus_bus_create(name, &o), -EINVAL);
    o.capacity = 1024;
    o.mode = 0666; /* world access is never allowed */
    cr_assert_eq(cbus_bus_create(name, &o), -EINVAL);
    o.mode = 0;
    o.group_name = "no-such-group-cbus";
    cr_assert_eq(cbus_bus_create(name, &o), -ENOENT);
    cr_assert_eq(access(path, F_OK), -1, "nothing left behind");
}

Test(bus_shm, missing_bus_is_enoent)
{
    cbus_bus *b;
    cr_assert_eq(cbus_bus_open(&b, name, 0), -ENOENT);
    cbus_producer *p;
    cr_assert_eq(cbus_producer_open(&p, name, NULL), -ENOENT);
}

static void patch_segment(size_t off, const void *bytes, size_t n)
{
    int fd = open(path, O_RDWR);
    cr_assert_geq(fd, 0);
    cr_assert_eq(pwrite(fd, bytes, n, (off_t)off), (ssize_t)n);
    close(fd);
}

Test(bus_shm, other_layout_version_is_eproto)
{
    test_bus_create(name, 1024);
    uint16_t major = CBUS_LAYOUT_MAJOR + 1;
    patch_segment(offsetof(struct cbus_shm_header, layout_major), &major, sizeof major);
    cbus_bus *b;
    cr_assert_eq(cbus_bus_open(&b, name, 0), -EPROTO);
    cbus_consumer *c;
    struct cbus_consumer_opts o = {.name = "c"};
    cr_assert_eq(cbus_consumer_attach(&c, name, &o), -EPROTO);
    cr_assert_str_not_empty(cbus_strerror(-EPROTO));
}

Test(bus_shm, wrong_fingerprint_is_eproto)
{
    test_bus_create(name, 1024);
    uint64_t fp = 12345;
    patch_segment(offsetof(struct cbus_shm_header, fingerprint), &fp, sizeof fp);
    cbus_bus *b;
    cr_assert_eq(cbus_bus_open(&b, name, 0), -EPROTO);
}

Test(bus_shm, inconsistent_sizes_are_ebadmsg)
{
    test_bus_create(name, 1024);
    uint64_t cap = 1u << 20; /* claims more slots than the file holds */
    patch_segment(offsetof(struct cbus_shm_header, capacity), &cap, sizeof cap);
    cbus_bus *b;
    cr_assert_eq(cbus_bus_open(&b, name, 0), -EBADMSG);
    cap = 1024;
    patch_segment(offsetof(struct cbus_shm_header, capacity), &cap, sizeof cap);
    uint64_t off = 8; /* slots overlapping the header */
    patch_segment(offsetof(struct cbus_shm_header, slots_off), &off, sizeof off);
    cr_assert_eq(cbus_bus_open(&b, name, 0), -EBADMSG);
}

Test(bus_shm, truncated_segment_is_refused)
{
    test_bus_create(name, 1024);
    cr_assert_eq(truncate(path, 100000), 0);
    cbus_bus *b;
    cr_assert_eq(cbus_bus_open(&b, name, 0), -EBADMSG);
    cr_assert_eq(truncate(path, 100), 0);
    cr_assert_eq(cbus_bus_open(&b, name, 0), -EPROTO);
}

Test(bus_shm, random_garbage_never_crashes)
{
    /* Headers made of random bytes, and a valid header with random bytes
     * after the magic: every open fails cleanly. */
    size_t len = cbus_bus_size(&(struct cbus_create_opts){.capacity = 1024});
    unsigned char *junk = malloc(len);
    srand(42);
    for (int round = 0; round < 200; round++) {
        for (size_t i = 0; i < 4096; i++)
            junk[i] = (unsigned char)rand();
        if (round % 2) {
            struct cbus_shm_header h = {.magic = CBUS_MAGIC, .endian = CBUS_ENDIAN_MARK,
                                        .layout_major = CBUS_LAYOUT_MAJOR,
                                        .fingerprint = CBUS_LAYOUT_FINGERPRINT};
            memcpy(junk, &h, offsetof(struct cbus_shm_header, header_size));
            junk[offsetof(struct cbus_shm_header, ready)] = 1;
        }
        cbus_bus *b = NULL;
        int r = cbus_bus_open_mem(&b, junk, len);
        cr_assert_lt(r, 0, "round %d opened garbage", round);
        cr_assert_null(b);
    }
    free(junk);
}

Test(bus_shm, symlink_is_not_followed)
{
    char target[64];
    test_bus_name(target, sizeof target);
    test_bus_create(target, 1024);
    char tpath[128];
    snprintf(tpath, sizeof tpath, "/dev/shm/cbus.%s", target);
    cr_assert_eq(symlink(tpath, path), 0);
    cbus_bus *b;
    cr_assert_eq(cbus_bus_open(&b, name, 0), -ELOOP);
    unlink(path);
    cbus_bus_destroy(target);
}

Test(bus_shm, segment_of_another_user_needs_trust)
{
    test_bus_create(name, 1024);
    if (geteuid() != 0)
        cbus_test_skip_or_fail("needs root to chown");
    cr_assert_eq(chown(path, 65534, (gid_t)-1), 0);
    cbus_bus *b;
    cr_assert_eq(cbus_bus_open(&b, name, 0), -EPERM);
    cr_assert_eq(cbus_bus_open(&b, name, CBUS_OPEN_TRUST_OWNER), 0);
    cbus_bus_close(b);
}

Test(bus_shm, memory_bus_works_like_a_named_one)
{
    struct cbus_create_opts o = {.capacity = 1024};
    size_t len = cbus_bus_size(&o);
    void *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(mem, MAP_FAILED);
    cr_assert_eq(cbus_bus_format(mem, len, "mem", &o), 0);
    cbus_bus *b;
    cr_assert_eq(cbus_bus_open_mem(&b, mem, len), 0);
    cbus_bus *b2;
    cr_assert_eq(cbus_bus_open_mem(&b2, mem, len - 4096), -EBADMSG);
    cr_assert_null(b2);
    cr_assert_eq(cbus_bus_open_mem(&b2, mem, len), 0);
    cbus_producer *p;
    cr_assert_eq(cbus_producer_open_bus(&p, b, NULL), 0);
    cbus_consumer *c;
    struct cbus_consumer_opts co = {.name = "m", .mode = CBUS_LOSSLESS};
    cr_assert_eq(cbus_consumer_attach_bus(&c, b2, &co), 0);
    cbus_ctx ctx;
    cbus_ctx_init(&ctx);
    cr_assert_eq(cbus_text(p, &ctx, "hello"), 0);
    struct cbus_event ev;
    cr_assert_eq(cbus_consumer_poll(c, &ev, 1), 1);
    cr_assert_str_eq(ev.preview, "hello");
    cbus_consumer_detach(c);
    cbus_producer_close(p);
    cbus_bus_close(b);
    cbus_bus_close(b2);
    munmap(mem, len);
}

/* Emits one event and returns its bus-clock timestamp (ts_mono_ns);
 * *before and *after bracket it on CLOCK_MONOTONIC. */
static uint64_t stamp(cbus_bus *bus, cbus_producer *p, uint64_t *before, uint64_t *after)
{
    cbus_ctx ctx;
    cbus_ctx_init(&ctx);
    uint64_t pos = cbus_bus_tail(bus);
    *before = cbus_now_ns();
    cr_assert_eq(cbus_text(p, &ctx, "t"), 0);
    *after = cbus_now_ns();
    struct cbus_event ev;
    cr_assert_eq(cbus_bus_peek(bus, pos, &ev), 0);
    return ev.ts_mono_ns;
}

/* Opens a bus whose header claims a TSC at forged_hz (with a matching mult,
 * so it passes the plausibility checks) and compares how far the bus clock
 * moves with CLOCK_MONOTONIC over 100 ms.  The brackets make scheduling
 * harmless: a preemption lengthens both the bus clock's and the outer
 * interval, and the bus clock moved at least the inner interval. */
static void forged_rate_is_not_trusted(uint64_t forged_hz)
{
    struct cbus_create_opts o = {.capacity = 1024};
    size_t len = cbus_bus_size(&o);
    void *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(mem, MAP_FAILED);
    cr_assert_eq(cbus_bus_format(mem, len, "clk", &o), 0);
    struct cbus_shm_header *h = mem;
    h->clock_source = CBUS_CLOCK_TSC;
    h->tsc_shift = 32;
    h->tsc_hz = forged_hz;
    h->tsc_mult = (uint64_t)(4294967296.0 * 1e9 / (double)forged_hz);
    cbus_bus *bus;
    cr_assert_eq(cbus_bus_open_mem(&bus, mem, len), 0, "a plausible header opens");
    cbus_producer *p;
    cr_assert_eq(cbus_producer_open_bus(&p, bus, NULL), 0);
    uint64_t b1, a1, b2, a2;
    uint64_t t1 = stamp(bus, p, &b1, &a1);
    test_sleep_ms(100);
    uint64_t t2 = stamp(bus, p, &b2, &a2);
    cr_assert_gt(t2, t1);
    uint64_t bus_dt = t2 - t1, inner = b2 - a1, outer = a2 - b1;
    /* A clock at the forged rate moves 1/ratio as fast: 25 ms or 400 ms here. */
    cr_expect_geq(bus_dt, inner / 2, "forged %llu Hz: bus clock moved %llu ns in >= %llu ns",
                  (unsigned long long)forged_hz, (unsigned long long)bus_dt,
                  (unsigned long long)inner);
    cr_expect_leq(bus_dt, outer * 2, "forged %llu Hz: bus clock moved %llu ns in <= %llu ns",
                  (unsigned long long)forged_hz, (unsigned long long)bus_dt,
                  (unsigned long long)outer);
    cr_expect_eq(h->tsc_hz, forged_hz, "the header is left as found (readers recalibrate)");
    cbus_producer_close(p);
    cbus_bus_close(bus);
    munmap(mem, len);
}

Test(bus_shm, forged_tsc_rate_in_header_is_cross_checked_against_the_host)
{
    /* What the creator measured, or a typical rate when this host has no
     * TSC we trust (then the forged TSC claim must fall back entirely). */
    struct cbus_create_opts o = {.capacity = 1024};
    size_t len = cbus_bus_size(&o);
    void *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(mem, MAP_FAILED);
    cr_assert_eq(cbus_bus_format(mem, len, "clk", &o), 0);
    const struct cbus_shm_header *h = mem;
    uint64_t real = h->clock_source == CBUS_CLOCK_TSC ? h->tsc_hz : UINT64_C(2500000000);
    munmap(mem, len);
    uint64_t fast = real * 4 > UINT64_C(9900000000) ? UINT64_C(9900000000) : real * 4;
    uint64_t slow = real / 4 < UINT64_C(110000000) ? UINT64_C(110000000) : real / 4;
    /* Both stay inside the accepted 100 MHz..10 GHz, at least 2.5x off. */
    cr_assert_geq(fast, real * 5 / 2, "this host's TSC (%llu Hz) is too fast to forge above",
                  (unsigned long long)real);
    forged_rate_is_not_trusted(fast);
    forged_rate_is_not_trusted(slow);
}
