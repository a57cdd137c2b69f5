/* The hardened segment and the secrets rule (issue 9, item 4): what
 * SECURITY.md promises, shown by tests that fail when it stops holding.
 * tests/bus/shm.c already covers O_EXCL + 0600, symlinks, other owners,
 * magic/layout/fingerprint/size validation and random headers; this suite
 * adds the group mode, the mode refused at create and at open, non-regular
 * files, what a forged gate or a stuck lossless consumer can cost a
 * producer, and that exporter credentials stay out of logs, argv, status
 * files, spool files and cbusctl output. */
#include <criterion/criterion.h>

#include <cbus/admit.h>
#include <cbus/bus.h>
#include <cbus/consumer.h>
#include <cbus/layout.h>
#include <cbus/producer.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
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
    unlink(path);
}

TestSuite(bus_hardening, .init = setup, .fini = teardown, .timeout = 60);

/* ---- the segment's mode ----------------------------------------------------- */

Test(bus_hardening, group_segment_is_0660_with_its_group_whatever_the_umask)
{
    struct group *g = getgrgid(getegid());
    cr_assert_not_null(g, "no name for our own group");
    char gname[64];
    snprintf(gname, sizeof gname, "%s", g->gr_name);
    mode_t old = umask(077); /* would cut 0660 to 0600 if create trusted it */
    int r = cbus_bus_create(name, &(struct cbus_create_opts){.capacity = 1024, .group_name = gname});
    umask(old);
    cr_assert_eq(r, 0, "create with group %s: %d", gname, r);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_mode & 07777, 0660, "mode %o", (unsigned)(st.st_mode & 07777));
    cr_assert_eq(st.st_gid, getegid());
    cr_assert_eq(cbus_bus_create(name, NULL), -EEXIST, "O_EXCL");
}

Test(bus_hardening, unknown_group_is_enoent_and_leaves_nothing)
{
    int r = cbus_bus_create(name, &(struct cbus_create_opts){.capacity = 1024,
                                                             .group_name = "cbus-no-such-group-x"});
    cr_assert_eq(r, -ENOENT);
    cr_assert_eq(access(path, F_OK), -1, "a refused create left %s", path);
}

Test(bus_hardening, world_or_executable_modes_are_refused_at_create)
{
    static const unsigned modes[] = {0666, 0644, 0604, 0602, 0700, 0670, 01600, 04600};
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        int r = cbus_bus_create(name, &(struct cbus_create_opts){.capacity = 1024, .mode = modes[i]});
        cr_assert_eq(r, -EINVAL, "mode %o: %d", modes[i], r);
        cr_assert_eq(access(path, F_OK), -1, "mode %o left a segment", modes[i]);
    }
}

Test(bus_hardening, world_accessible_segment_is_refused_at_open)
{
    /* Someone chmods the segment o+rw: any local user could then forge
     * events or read prompts.  Opening it must fail, with -CBUS_EWORLD (not
     * a foreign owner's -EPERM: the fix differs), until it is recreated. */
    test_bus_create(name, 1024);
    static const mode_t modes[] = {0666, 0606, 0604, 0602};
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        cr_assert_eq(chmod(path, modes[i]), 0);
        cbus_bus *b = NULL;
        int r = cbus_bus_open(&b, name, 0);
        if (r == 0)
            cbus_bus_close(b);
        cr_expect_eq(r, -CBUS_EWORLD, "mode %o opened with %d (want -CBUS_EWORLD)",
                     (unsigned)modes[i], r);
    }
    cr_assert_eq(chmod(path, 0600), 0);
    cbus_bus *b;
    cr_assert_eq(cbus_bus_open(&b, name, 0), 0, "0600 opens again");
    cbus_bus_close(b);
}

Test(bus_hardening, fifo_in_place_of_the_segment_is_eproto_without_blocking)
{
    /* /dev/shm is world-writable: anyone can put a FIFO at a bus's name
     * before it is created.  Opening must answer -EPROTO, not wait for a
     * writer (open(2) of a FIFO O_RDONLY blocks).  Each open runs in a
     * child so a hang fails the test instead of wedging the suite. */
    cr_assert_eq(mkfifo(path, 0600), 0);
    static const unsigned flags[] = {0, CBUS_OPEN_READONLY, CBUS_OPEN_READONLY | CBUS_OPEN_TRUST_OWNER};
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
        pid_t pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
            cbus_bus *b = NULL;
            _exit(cbus_bus_open(&b, name, flags[i]) == -EPROTO && !b ? 0 : 1);
        }
        int ws = test_wait_pid(pid, 5000);
        cr_expect(ws != -1, "open with flags %#x blocked on the FIFO (killed after 5 s)", flags[i]);
        if (ws != -1)
            cr_expect(WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "open with flags %#x: not -EPROTO",
                      flags[i]);
    }
}

Test(bus_hardening, directory_in_place_of_the_segment_is_refused)
{
    cr_assert_eq(mkdir(path, 0700), 0);
    cbus_bus *b = NULL;
    int r = cbus_bus_open(&b, name, 0);
    cr_assert(r == -EISDIR || r == -EPROTO, "open of a directory: %d", r);
    cr_assert_eq(rmdir(path), 0);
}

Test(bus_hardening, segment_grown_after_create_is_ebadmsg)
{
    /* A writer can extend the file; the header's size must then disagree,
     * and the library refuses rather than mapping what the header claims. */
    test_bus_create(name, 1024);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(truncate(path, st.st_size + 4096), 0);
    cbus_bus *b;
    cr_assert_eq(cbus_bus_open(&b, name, 0), -EBADMSG);
}

/* ---- what a forged table or a stuck consumer can cost a producer ------------ */

/* Not a timing assert: CPU time, which no preemption stretches.  A wait the
 * producer recorded is on the bus clock, which runs on while the thread is
 * descheduled (a loaded 2-vCPU machine deschedules one for hundreds of ms,
 * past any wall-clock slack), so each call's recorded wait, less the time
 * the thread was off a CPU during the call (support.h), is held to the 2 ms
 * bound plus this: five times the bound, thousands of passes of the wait
 * loop.  A producer that keeps waiting spins on a CPU for part of it. */
#define ONCPU_SLACK_NS UINT64_C(10000000)

struct waits {
    uint64_t max_oncpu; /* the longest wait of one call, less its time off a CPU */
    unsigned calls;     /* calls that waited at all */
};

/* cbus_text(), recording in w how long the call waited while it ran. */
static int text_timed(cbus_producer *p, cbus_ctx *ctx, struct waits *w)
{
    struct cbus_producer_stats s0, s1;
    cbus_producer_stats(p, &s0);
    struct test_cpu_mark m;
    test_cpu_mark(&m);
    int r = cbus_text(p, ctx, "x");
    uint64_t off = test_offcpu_ns(&m);
    cbus_producer_stats(p, &s1);
    uint64_t waited = s1.waited_ns - s0.waited_ns; /* one call waits at most once */
    uint64_t on = waited > off ? waited - off : 0;
    if (on > w->max_oncpu)
        w->max_oncpu = on;
    w->calls += waited > 0;
    return r;
}

static void *mem_bus(size_t *len, cbus_bus **bus)
{
    struct cbus_create_opts o = {.capacity = 1024, .lossless_wait_ns = 2000000,
                                 .stall_timeout_ns = 60000000000u};
    *len = cbus_bus_size(&o);
    void *mem = mmap(NULL, *len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(mem, MAP_FAILED);
    cr_assert_eq(cbus_bus_format(mem, *len, "hard", &o), 0);
    cr_assert_eq(cbus_bus_open_mem(bus, mem, *len), 0);
    return mem;
}

Test(bus_hardening, forged_gate_word_does_not_hold_producers)
{
    /* A consumer (anyone who can write the segment) claims 5 tethered
     * consumers in the gate word while no entry is tethered. */
    size_t len;
    cbus_bus *bus;
    void *mem = mem_bus(&len, &bus);
    struct cbus_shm_header *h = mem;
    atomic_store(&h->gate, (uint64_t)5 | (uint64_t)77 << 16);
    cbus_producer *p;
    cr_assert_eq(cbus_producer_open_bus(&p, bus, NULL), 0);
    cbus_ctx ctx;
    cbus_ctx_init(&ctx);
    struct waits w = {0};
    for (int i = 0; i < 3000; i++) {
        int r = text_timed(p, &ctx, &w);
        cr_assert(r == 0 || r == -EAGAIN, "emit %d: %d", i, r);
    }
    struct cbus_producer_stats st;
    cr_assert_eq(cbus_producer_stats(p, &st), 0);
    cr_assert_leq(w.max_oncpu, h->lossless_wait_ns + ONCPU_SLACK_NS,
                  "waited %llu ns on a CPU (recorded max %llu ns)",
                  (unsigned long long)w.max_oncpu, (unsigned long long)st.max_wait_ns);
    cbus_producer_close(p);
    cbus_bus_close(bus);
    munmap(mem, len);
}

Test(bus_hardening, stuck_lossless_consumer_costs_one_bounded_wait_then_drops)
{
    /* A lossless consumer that stays alive (heartbeats) but never commits:
     * the worst a consumer can do to producers by the protocol.  The
     * producer waits at most the bound once, then drops and counts, and the
     * lapped events are exactly the dropped ones. */
    size_t len;
    cbus_bus *bus;
    void *mem = mem_bus(&len, &bus);
    cbus_consumer *c;
    struct cbus_consumer_opts co = {.name = "stuck", .mode = CBUS_LOSSLESS};
    cr_assert_eq(cbus_consumer_attach_bus(&c, bus, &co), 0);
    cbus_producer *p;
    cr_assert_eq(cbus_producer_open_bus(&p, bus, NULL), 0);
    cbus_ctx ctx;
    cbus_ctx_init(&ctx);
    unsigned ok = 0, dropped = 0;
    struct waits w = {0};
    for (int i = 0; i < 5000; i++) {
        if (i % 256 == 0)
            cbus_consumer_heartbeat(c);
        int r = text_timed(p, &ctx, &w);
        cr_assert(r == 0 || r == -EAGAIN, "emit: %d", r);
        r == 0 ? ok++ : dropped++;
    }
    struct cbus_producer_stats st;
    cr_assert_eq(cbus_producer_stats(p, &st), 0);
    cr_assert_eq(ok, 1024, "the ring holds exactly one lap for the stuck consumer");
    cr_assert_eq(st.dropped, dropped);
    uint64_t bound = cbus_bus_header(bus)->lossless_wait_ns;
    cr_assert_leq(w.max_oncpu, bound + ONCPU_SLACK_NS,
                  "one wait %llu ns on a CPU (recorded %llu ns), bound %llu",
                  (unsigned long long)w.max_oncpu, (unsigned long long)st.max_wait_ns,
                  (unsigned long long)bound);
    /* One bounded wait per thread while the consumer does not move, not one
     * per event (3976): counted, not timed (the total wait was, and
     * preemption alone can cross any total). */
    cr_assert_eq(w.calls, 1, "%u emits waited (%llu ns in all): a wait per drop?", w.calls,
                 (unsigned long long)st.waited_ns);
    /* The consumer still reads every event it was promised, in order. */
    struct cbus_event ev[64];
    uint64_t got = 0;
    int n;
    while ((n = cbus_consumer_poll(c, ev, 64)) > 0)
        got += (uint64_t)n;
    cr_assert_eq(got, 1024);
    cbus_consumer_detach(c);
    cbus_producer_close(p);
    cbus_bus_close(bus);
    munmap(mem, len);
}

/* ---- a forged tethered consumer entry (issue 12, item 8) -------------------- */

static pid_t live_child = -1;

static void forged_teardown(void)
{
    if (live_child > 0) {
        kill(live_child, SIGKILL);
        waitpid(live_child, NULL, 0);
        live_child = -1;
    }
    teardown();
}

/* A pid that was alive a moment ago and is reaped now. */
static uint32_t dead_pid(void)
{
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0)
        _exit(0);
    cr_assert_eq(waitpid(pid, NULL, 0), pid);
    return (uint32_t)pid;
}

struct forgery {
    const char *what;
    uint32_t pid;
    uint64_t start_time;
    uint64_t heartbeat_ns;
    int held; /* 1: a crashed consumer's grace, producers stay gated */
};

/* Writes one tethered lossless consumer entry straight into the segment's
 * file (as any process that can write it could), cursor 0, and counts it in
 * the gate word; then a producer emits three laps of the ring.  A forgery
 * must not hold it: every emit succeeds, nothing is dropped, and the entry
 * is untethered once, counted in the entry and in the header.  A dead pid
 * with a past heartbeat is a crashed consumer: it keeps producers gated
 * (one bounded wait, then drops) for the stall timeout, the grace in which
 * its restart takes over the entry and cursor without loss. */
static void forged_entry(const struct forgery *f)
{
    cbus_bus_destroy(name);
    /* Stall timeout 60 s: only the forgery checks can cut the entry loose
     * within the test, never a heartbeat that merely ages. */
    struct cbus_create_opts o = {.capacity = 1024, .lossless_wait_ns = 2000000,
                                 .stall_timeout_ns = 60000000000u};
    cr_assert_eq(cbus_bus_create(name, &o), 0);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    cr_assert_geq(fd, 0);
    struct stat st;
    cr_assert_eq(fstat(fd, &st), 0);
    char *base = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    cr_assert_neq(base, MAP_FAILED);
    close(fd);
    struct cbus_shm_header *h = (struct cbus_shm_header *)base;
    struct cbus_consumer_entry *e =
        (struct cbus_consumer_entry *)(base + h->consumers_off) + 5;
    e->pid = f->pid;
    e->pid_start_time = f->start_time;
    snprintf(e->name, sizeof e->name, "forged");
    atomic_store(&e->heartbeat_ns, f->heartbeat_ns);
    atomic_store(&e->cursor, 0);
    atomic_store(&e->read_pos, 0);
    atomic_store(&e->flags, CBUS_CFLAG_LOSSLESS | CBUS_CFLAG_TETHERED);
    atomic_store(&e->state, CBUS_CSTATE_ACTIVE);
    atomic_fetch_add(&h->gate, (UINT64_C(1) << 16) + 1); /* one more tethered, new epoch */

    cbus_producer *p;
    cr_assert_eq(cbus_producer_open(&p, name, NULL), 0);
    cbus_ctx ctx;
    cbus_ctx_init(&ctx);
    unsigned failed = 0;
    for (int i = 0; i < 3 * 1024; i++)
        failed += cbus_text(p, &ctx, "x") != 0;
    struct cbus_producer_stats ps;
    cr_assert_eq(cbus_producer_stats(p, &ps), 0);
    if (f->held) {
        cr_expect_eq(failed, 2 * 1024, "%s: %u of 3072 emits failed (want 2048)", f->what, failed);
        cr_expect_eq(ps.dropped, 2 * 1024, "%s: %llu dropped", f->what,
                     (unsigned long long)ps.dropped);
        cr_expect_eq(atomic_load(&h->untethered), 0, "%s: untethered in its grace", f->what);
        cr_expect_neq(atomic_load(&e->flags) & CBUS_CFLAG_TETHERED, 0, "%s: cut loose", f->what);
    } else {
        cr_expect_eq(failed, 0, "%s: %u of 3072 emits failed (producers held)", f->what, failed);
        cr_expect_eq(ps.dropped, 0, "%s: %llu dropped", f->what, (unsigned long long)ps.dropped);
        cr_expect_eq(atomic_load(&e->untethered_count), 1, "%s: entry untethered %llu times",
                     f->what, (unsigned long long)atomic_load(&e->untethered_count));
        cr_expect_eq(atomic_load(&h->untethered), 1, "%s: header counts %llu untethered",
                     f->what, (unsigned long long)atomic_load(&h->untethered));
        cr_expect_eq(atomic_load(&e->flags) & CBUS_CFLAG_TETHERED, 0, "%s: still tethered",
                     f->what);
        cr_expect_eq(atomic_load(&h->gate) & 0xffff, 0, "%s: gate still counts it", f->what);
    }
    cbus_producer_close(p);
    munmap(base, (size_t)st.st_size);
    cbus_bus_destroy(name);
}

Test(bus_hardening, forged_tethered_entry_with_future_heartbeat_or_impossible_pid_is_untethered,
     .fini = forged_teardown)
{
    /* A live process to name in forgeries whose pid is not the problem. */
    live_child = fork();
    cr_assert_geq(live_child, 0);
    if (live_child == 0) {
        for (;;)
            pause();
    }
    uint64_t now = cbus_now_ns();
    uint64_t hour = 3600 * UINT64_C(1000000000);
    const struct forgery cases[] = {
        /* a heartbeat in the future: `now <= hb` must not mean fresh */
        {"live pid, heartbeat 1 h ahead", (uint32_t)live_child, 0, now + hour, 0},
        {"live pid, heartbeat UINT64_MAX", (uint32_t)live_child, 0, UINT64_MAX, 0},
        {"dead pid, heartbeat 1 h ahead", dead_pid(), 0, now + hour, 0},
        /* a pid attach never writes */
        {"pid 0, fresh heartbeat", 0, 0, now, 0},
        {"pid above INT_MAX, fresh heartbeat", 0x80000001u, 0, now, 0},
        /* a consumer that crashed a moment ago is in its restart grace */
        {"dead pid, past heartbeat", dead_pid(), 0, now, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        forged_entry(&cases[i]);
}

/* ---- a torn admission entry (issue 12, item 14) ----------------------------- */

/* Defined in bus/admit.c (the static library exports it to tests): retries
 * this thread spent on torn admission entries. */
extern _Thread_local uint64_t cbus__admit_torn_retries;

static struct cbus_admit_entry *entry_of(cbus_bus *bus, unsigned scope, const char *key)
{
    uint64_t h = cbus_admit_key_hash(scope, key);
    unsigned n = cbus_bus_header(bus)->admission_entries;
    for (unsigned i = 0; i < n; i++) {
        struct cbus_admit_entry *e = (struct cbus_admit_entry *)cbus_admit_entry_at(bus, i);
        if (atomic_load(&e->key_hash) == h)
            return e;
    }
    cr_assert_fail("no admission entry for %s", key);
    return NULL;
}

static void ctx_for_user(cbus_ctx *ctx, const char *user)
{
    cbus_ctx_init(ctx);
    cr_assert_eq(cbus_ctx_set_user(ctx, user), 0);
}

Test(bus_hardening, torn_admission_entry_is_no_verdict_after_bounded_retries)
{
    /* A verdict writer killed between its two seq stores (or anyone who can
     * write the segment) leaves an entry odd.  cbus_admit() must give up
     * after a few retries -- counted, not timed -- and answer as for no
     * verdict: allow, or CBUS_ADMIT_STALE for a fail-closed producer. */
    struct cbus_create_opts o = {.capacity = 1024, .admission_entries = 64};
    size_t len = cbus_bus_size(&o);
    void *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(mem, MAP_FAILED);
    cr_assert_eq(cbus_bus_format(mem, len, "admit", &o), 0);
    cbus_bus *bus;
    cr_assert_eq(cbus_bus_open_mem(&bus, mem, len), 0);
    unsigned w;
    cr_assert_eq(cbus_admit_writer_register(bus, "rl", &w), 0);
    cbus_producer *open_p, *closed_p;
    cr_assert_eq(cbus_producer_open_bus(&open_p, bus, NULL), 0);
    cr_assert_eq(cbus_producer_open_bus(&closed_p, bus,
                                        &(struct cbus_producer_opts){.flags = CBUS_PRODUCER_ADMIT_FAIL_CLOSED}),
                 0);

    /* Two users whose keys probe from the same slot: b's entry sits right
     * after a's, so a torn a lies on b's probe path. */
    const char *a = "alice";
    char b[32];
    uint64_t ha = cbus_admit_key_hash(CBUS_SCOPE_USER, a);
    for (unsigned i = 0;; i++) {
        snprintf(b, sizeof b, "user%u", i);
        if ((cbus_admit_key_hash(CBUS_SCOPE_USER, b) & 63) == (ha & 63))
            break;
        cr_assert_lt(i, 100000);
    }
    cr_assert_eq(cbus_admit_publish(bus, w, CBUS_SCOPE_USER, a, CBUS_THROTTLED, 0), 0);
    cr_assert_eq(cbus_admit_publish(bus, w, CBUS_SCOPE_USER, b, CBUS_THROTTLED, 0), 0);
    cbus_ctx ca, cb;
    ctx_for_user(&ca, a);
    ctx_for_user(&cb, b);
    cr_assert_eq(cbus_admit(open_p, &ca, NULL), CBUS_THROTTLED);
    cr_assert_eq(cbus_admit(closed_p, &ca, NULL), CBUS_THROTTLED, "the writer is live");
    cr_assert_eq(cbus_admit(open_p, &cb, NULL), CBUS_THROTTLED);

    /* Leave a's entry odd, as a writer dying mid-update does. */
    struct cbus_admit_entry *ea = entry_of(bus, CBUS_SCOPE_USER, a);
    atomic_fetch_add(&ea->seq, 1);
    cbus__admit_torn_retries = 0;
    cr_expect_eq(cbus_admit(open_p, &ca, NULL), CBUS_ALLOW, "fail open: a torn verdict allows");
    cr_expect_gt(cbus__admit_torn_retries, 0, "the torn entry was retried at all");
    cr_expect_leq(cbus__admit_torn_retries, 16, "%llu retries for one torn entry",
                  (unsigned long long)cbus__admit_torn_retries);
    cr_expect_eq(cbus_admit(closed_p, &ca, NULL), CBUS_ADMIT_STALE,
                 "fail closed: a verdict that cannot be read refuses");
    /* Another key's torn entry on the probe path does not hide b's verdict. */
    cr_expect_eq(cbus_admit(open_p, &cb, NULL), CBUS_THROTTLED,
                 "b's verdict, behind a's torn entry, was not found");

    /* Every entry odd (the fuzzer's regression input): one call still costs
     * a bounded number of retries over all five scopes. */
    for (unsigned i = 0; i < 64; i++) {
        struct cbus_admit_entry *e = (struct cbus_admit_entry *)cbus_admit_entry_at(bus, i);
        if (!(atomic_load(&e->seq) & 1))
            atomic_fetch_add(&e->seq, 1);
    }
    cbus_ctx all;
    ctx_for_user(&all, b);
    cbus_ctx_set_session(&all, "s");
    cbus_ctx_set_model(&all, "m");
    cbus_ctx_set_provider(&all, "p");
    cbus__admit_torn_retries = 0;
    cr_expect_eq(cbus_admit(open_p, &all, NULL), CBUS_ALLOW);
    cr_expect_leq(cbus__admit_torn_retries, 16, "%llu retries for one call",
                  (unsigned long long)cbus__admit_torn_retries);
    cr_expect_eq(cbus_admit(closed_p, &all, NULL), CBUS_ADMIT_STALE);

    /* A writer that updates a torn entry makes it whole again (seq rounds
     * up to even), and its verdict reads normally. */
    cr_assert_eq(cbus_admit_publish(bus, w, CBUS_SCOPE_USER, a, CBUS_BUDGET_EXCEEDED, 0), 0);
    cr_expect_eq(cbus_admit(closed_p, &ca, NULL), CBUS_BUDGET_EXCEEDED);

    cbus_producer_close(open_p);
    cbus_producer_close(closed_p);
    cbus_admit_writer_release(bus, w);
    cbus_bus_close(bus);
    munmap(mem, len);
}

/* ---- secrets: exporter credentials ----------------------------------------- */

#define SECRET "sk-SEKRIT-4242-do-not-print"

struct fake_collector {
    int fd;
    atomic_int stop;
    atomic_int requests;
    atomic_int saw_secret;   /* the Authorization header arrived: the secret was used */
    pthread_t th;
};

static void serve_one(struct fake_collector *fc, int c)
{
    char buf[65536];
    size_t len = 0;
    long body = -1;
    size_t head_end = 0;
    for (;;) {
        struct pollfd pfd = {c, POLLIN, 0};
        if (poll(&pfd, 1, 2000) <= 0)
            break;
        ssize_t r = read(c, buf + len, sizeof buf - 1 - len);
        if (r <= 0)
            break;
        len += (size_t)r;
        buf[len] = '\0';
        if (!head_end) {
            char *e = strstr(buf, "\r\n\r\n");
            if (!e)
                continue;
            head_end = (size_t)(e - buf) + 4;
            char *cl = strcasestr(buf, "content-length:");
            body = cl ? strtol(cl + 15, NULL, 10) : 0;
            if (strstr(buf, "Authorization: Bearer " SECRET))
                atomic_store(&fc->saw_secret, 1);
        }
        if (head_end && len >= head_end + (size_t)body)
            break;
        if (len >= sizeof buf - 1)
            len = head_end = 0; /* large body: only the head matters here */
    }
    static const char resp[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                               "Connection: close\r\n\r\n";
    ssize_t w = write(c, resp, sizeof resp - 1);
    (void)w;
    atomic_fetch_add(&fc->requests, 1);
    close(c);
}

static void *collector_main(void *arg)
{
    struct fake_collector *fc = arg;
    while (!atomic_load(&fc->stop)) {
        struct pollfd pfd = {fc->fd, POLLIN, 0};
        if (poll(&pfd, 1, 100) <= 0)
            continue;
        int c = accept(fc->fd, NULL, NULL);
        if (c >= 0)
            serve_one(fc, c);
    }
    return NULL;
}

static int collector_start(struct fake_collector *fc)
{
    memset(fc, 0, sizeof *fc);
    fc->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(fc->fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(fc->fd, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(listen(fc->fd, 16), 0);
    socklen_t al = sizeof a;
    cr_assert_eq(getsockname(fc->fd, (struct sockaddr *)&a, &al), 0);
    cr_assert_eq(pthread_create(&fc->th, NULL, collector_main, fc), 0);
    return ntohs(a.sin_port);
}

static void collector_stop(struct fake_collector *fc)
{
    atomic_store(&fc->stop, 1);
    pthread_join(fc->th, NULL);
    close(fc->fd);
}

/* Whether file holds SECRET (or any 12-character piece of it). */
static int file_has_secret(const char *file)
{
    FILE *f = fopen(file, "rb");
    if (!f)
        return 0;
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    for (size_t i = 0; i + 12 <= sizeof SECRET - 1; i++)
        if (memmem(buf, n, SECRET + i, 12))
            return 1;
    return 0;
}

static void dir_has_no_secret(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *de;
    char p[1024];
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        cr_expect(!file_has_secret(p), "the secret is in %s", p);
    }
    closedir(d);
}

static void rm_rf(const char *dir)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    int r = system(cmd);
    (void)r;
}

/* ---- admission keys are whole values (issue 14) --------------------------- */

Test(bus_hardening, admission_verdicts_are_keyed_by_the_whole_value)
{
    /* Two 200-byte users that share everything the event's user field
     * holds: a verdict for one must not stop the other, whether published
     * by the whole value or by the field and the event's key_hash. */
    struct cbus_create_opts o = {.capacity = 1024, .admission_entries = 64};
    size_t len = cbus_bus_size(&o);
    void *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(mem, MAP_FAILED);
    cr_assert_eq(cbus_bus_format(mem, len, "admitkeys", &o), 0);
    cbus_bus *bus;
    cr_assert_eq(cbus_bus_open_mem(&bus, mem, len), 0);
    unsigned w;
    cr_assert_eq(cbus_admit_writer_register(bus, "rl", &w), 0);
    cbus_producer *p;
    cr_assert_eq(cbus_producer_open_bus(&p, bus, NULL), 0);
    char a[201], b[201], shown[CBUS_USER_LEN + 1];
    memset(a, 'u', 200);
    a[200] = '\0';
    memcpy(a, "user:default/", 13);
    memcpy(b, a, sizeof a);
    a[199] = 'a';
    b[199] = 'b';
    cbus_ctx ca, cb;
    ctx_for_user(&ca, a);
    ctx_for_user(&cb, b);
    cr_assert_eq(cbus_admit(p, &ca, NULL), CBUS_ALLOW);

    /* by the whole value */
    cr_assert_eq(cbus_admit_publish(bus, w, CBUS_SCOPE_USER, a, CBUS_THROTTLED, 0), 0);
    cr_assert_eq(cbus_admit(p, &ca, NULL), CBUS_THROTTLED);
    cr_assert_eq(cbus_admit(p, &cb, NULL), CBUS_ALLOW);
    cr_assert_eq(cbus_admit_publish(bus, w, CBUS_SCOPE_USER, a, CBUS_ALLOW, 0), 0);
    cr_assert_eq(cbus_admit(p, &ca, NULL), CBUS_ALLOW);

    /* by the field a consumer sees and the event's whole-value hash */
    struct cbus_event ev;
    memset(&ev, 0, sizeof ev);
    memcpy(&ev, &ca.tmpl, sizeof ev);
    cr_assert(ev.flags & CBUS_TRUNC_USER);
    snprintf(shown, sizeof shown, "%.*s", (int)strnlen(ev.user, sizeof ev.user), ev.user);
    cr_assert_eq(cbus_admit_publish_hash(bus, w, CBUS_SCOPE_USER, ev.key_hash[CBUS_KEY_USER],
                                         shown, CBUS_BUDGET_EXCEEDED, 0), 0);
    cr_assert_eq(cbus_admit(p, &cb, NULL), CBUS_ALLOW, "b shares a's field, not its value");
    cr_assert_eq(cbus_admit(p, &ca, NULL), CBUS_BUDGET_EXCEEDED);
    /* what cbusctl shows: the cut field's prefix and the whole hash */
    struct cbus_admit_entry *e = entry_of(bus, CBUS_SCOPE_USER, a);
    char want[64];
    snprintf(want, sizeof want, "\u2026#%08x", (unsigned)(cbus_key_hash(a, 200) >> 32));
    cr_assert(strncmp(e->key, "user:default/", 13) == 0 && strstr(e->key, want), "%.40s", e->key);
    cr_assert_lt(strnlen(e->key, sizeof e->key), sizeof e->key, "shown key is NUL-terminated");

    /* agent and tenant are scopes too */
    cbus_ctx ct;
    cbus_ctx_init(&ct);
    cbus_ctx_set_tenant(&ct, "team-a");
    cbus_ctx_set_agent(&ct, "planner");
    cr_assert_eq(cbus_admit_publish(bus, w, CBUS_SCOPE_TENANT, "team-a", CBUS_BUDGET_EXCEEDED, 0), 0);
    cr_assert_eq(cbus_admit(p, &ct, NULL), CBUS_BUDGET_EXCEEDED);
    cbus_ctx_set_tenant(&ct, "team-b");
    cr_assert_eq(cbus_admit(p, &ct, NULL), CBUS_ALLOW);
    cr_assert_eq(cbus_admit_publish(bus, w, CBUS_SCOPE_AGENT, "planner", CBUS_THROTTLED, 0), 0);
    cr_assert_eq(cbus_admit(p, &ct, NULL), CBUS_THROTTLED);

    /* a restarted writer clears its entries by index, without their keys */
    unsigned cleared = 0, n = cbus_bus_header(bus)->admission_entries;
    for (unsigned i = 0; i < n; i++)
        if (cbus_admit_clear_at(bus, w, i) == 0)
            cleared++;
    cr_assert_geq(cleared, 3);
    cr_assert_eq(cbus_admit(p, &ca, NULL), CBUS_ALLOW);
    cr_assert_eq(cbus_admit(p, &ct, NULL), CBUS_ALLOW);

    /* bad arguments */
    cr_assert_eq(cbus_admit_publish_hash(bus, w, CBUS_SCOPE_USER, 0, "x", CBUS_THROTTLED, 0), -EINVAL);
    cr_assert_eq(cbus_admit_publish_hash(bus, w, CBUS_SCOPE__COUNT, 1, "x", CBUS_THROTTLED, 0),
                 -EINVAL);
    cr_assert_eq(cbus_admit_publish_hash(bus, w + 1, CBUS_SCOPE_USER, 1, "x", CBUS_THROTTLED, 0),
                 -EINVAL);
    cr_assert_eq(cbus_admit_clear_at(bus, w, n), -EINVAL);
    cr_assert_eq(cbus_admit_clear_at(NULL, w, 0), -EINVAL);
    /* a display of NULL is shown as the hash alone */
    cr_assert_eq(cbus_admit_publish_hash(bus, w, CBUS_SCOPE_SESSION, 42, NULL, CBUS_THROTTLED, 0), 0);

    cbus_producer_close(p);
    cbus_admit_writer_release(bus, w);
    cbus_bus_close(bus);
    munmap(mem, len);
}

Test(bus_hardening, exporter_secret_stays_out_of_logs_argv_status_spool_and_cbusctl, .timeout = 90)
{
    char exporter[512], cbusctl[512];
    snprintf(exporter, sizeof exporter, "%s/consumers/export/cbus-export", CBUS_BINARY_DIR);
    snprintf(cbusctl, sizeof cbusctl, "%s/tools/cbusctl/cbusctl", CBUS_BINARY_DIR);
    if (access(exporter, X_OK))
        cbus_test_skip_or_fail("cbus-export is not built (%s)", exporter);
    test_bus_create(name, 1024);
    char dir[] = "/tmp/cbus-hardening.XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    struct fake_collector fc;
    int port = collector_start(&fc);

    char cfg[600], log[600], status[600], spool[600];
    snprintf(cfg, sizeof cfg, "%s/export.ini", dir);
    snprintf(log, sizeof log, "%s/export.log", dir);
    snprintf(status, sizeof status, "%s/status.json", dir);
    snprintf(spool, sizeof spool, "%s/spool", dir);
    FILE *f = fopen(cfg, "w");
    cr_assert_not_null(f);
    fprintf(f,
            "[bus]\nconsumer_name = export\nmode = lossy\nstart = oldest\n"
            "[export]\nformat = msgpack\nendpoint = http://127.0.0.1:%d/ingest\n"
            "batch_max_age = 50ms\nretry_initial = 50ms\nretry_max = 200ms\n"
            "request_timeout = 2s\nshutdown_timeout = 1s\n"
            "[spool]\ndir = %s\n[auth]\nheader_env = CBUS_TEST_EXPORT_AUTH\n"
            "[status]\nfile = %s\ninterval = 100ms\n",
            port, spool, status);
    fclose(f);

    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0)
            _exit(127);
        dup2(fd, 1);
        dup2(fd, 2);
        setenv("CBUS_TEST_EXPORT_AUTH", "Authorization: Bearer " SECRET, 1);
        execl(exporter, exporter, "--bus", name, "--config", cfg, "--verbose", (char *)NULL);
        _exit(127);
    }

    cbus_producer *p;
    cr_assert_eq(cbus_producer_open(&p, name, NULL), 0);
    cbus_ctx ctx;
    cbus_ctx_init(&ctx);
    cbus_ctx_set_model(&ctx, "gpt-4o");
    /* Failing requests (503) are retried: errors get logged, the secret must not. */
    uint64_t deadline = test_now_ms() + 20000;
    while (atomic_load(&fc.requests) < 3 && test_now_ms() < deadline) {
        cbus_text(p, &ctx, "hello");
        test_sleep_ms(50);
    }
    cr_expect_geq(atomic_load(&fc.requests), 3, "the exporter never reached the collector");
    cr_expect(atomic_load(&fc.saw_secret), "the credential was not sent (so its absence proves nothing)");

    /* argv: what ps shows to every user. */
    char cmdline[600];
    snprintf(cmdline, sizeof cmdline, "/proc/%d/cmdline", (int)pid);
    cr_expect(!file_has_secret(cmdline), "the secret is in the exporter's argv");

    /* cbusctl stat on the bus it exports from. */
    if (access(cbusctl, X_OK) == 0) {
        char out[600], cmd[4096];
        snprintf(out, sizeof out, "%s/cbusctl.out", dir);
        snprintf(cmd, sizeof cmd, "'%s' stat '%s' > '%s' 2>&1; '%s' stat '%s' --json >> '%s' 2>&1",
                 cbusctl, name, out, cbusctl, name, out);
        int r = system(cmd);
        (void)r;
        cr_expect(!file_has_secret(out), "the secret is in cbusctl output");
    }

    kill(pid, SIGTERM);
    int ws = test_wait_pid(pid, 15000);
    cr_expect(WIFEXITED(ws), "exporter did not stop on SIGTERM");
    cbus_producer_close(p);
    collector_stop(&fc);

    cr_expect(!file_has_secret(log), "the secret is in the exporter's log");
    cr_expect(!file_has_secret(status), "the secret is in the status file");
    dir_has_no_secret(spool);
    rm_rf(dir);
    cbus_bus_destroy(name);
}
