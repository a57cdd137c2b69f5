/* Hostile operators on the segment file (issue 12, items 9 and 10):
 * ftruncate under a live producer and consumer (the SIGBUS guard), and a
 * bus removed or re-created under its users (cbus_*_check()).  Real
 * processes and real files: the truncating party is the parent, the
 * victims are forked children that report through a pipe. */
#include <cbus/bus.h>
#include <cbus/consumer.h>
#include <cbus/producer.h>

#include <criterion/criterion.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support.h"

static char name[64], name2[64];
static pid_t kids[4];
static int nkids;

static void setup(void)
{
    test_bus_name(name, sizeof name);
    test_bus_name(name2, sizeof name2);
    nkids = 0;
}

static void teardown(void)
{
    for (int i = 0; i < nkids; i++)
        if (kids[i] > 0) {
            kill(kids[i], SIGKILL);
            waitpid(kids[i], NULL, 0);
        }
    cbus_bus_destroy(name);
    cbus_bus_destroy(name2);
}

TestSuite(bus_guard, .init = setup, .fini = teardown, .timeout = 60);

static pid_t spawn(void (*fn)(int fd), int *rfd)
{
    int p[2];
    cr_assert_eq(pipe(p), 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        close(p[0]);
        fn(p[1]);
        _exit(0);
    }
    close(p[1]);
    kids[nkids++] = pid;
    *rfd = p[0];
    return pid;
}

/* Reads exactly n bytes from fd (the child's report), failing on EOF. */
static void read_all(int fd, void *buf, size_t n)
{
    char *b = buf;
    while (n) {
        ssize_t r = read(fd, b, n);
        cr_assert_gt(r, 0, "child ended before reporting (died?)");
        b += r;
        n -= (size_t)r;
    }
}

static void write_all(int fd, const void *buf, size_t n)
{
    if (write(fd, buf, n) != (ssize_t)n)
        _exit(90);
}

/* Reaps the child with a generous deadline: its status. */
static int reap(pid_t pid)
{
    int st = test_wait_pid(pid, 30000);
    for (int i = 0; i < nkids; i++)
        if (kids[i] == pid)
            kids[i] = 0;
    return st;
}

static void truncate_bus(const char *bus, off_t len)
{
    char path[96];
    snprintf(path, sizeof path, "/dev/shm/cbus.%s", bus);
    int fd = open(path, O_RDWR);
    cr_assert_geq(fd, 0);
    cr_assert_eq(ftruncate(fd, len), 0);
    close(fd);
}

static void assert_exited_ok(int st)
{
    cr_assert(st != -1, "child did not finish in time");
    cr_assert(!WIFSIGNALED(st), "child killed by signal %d (%s)", WTERMSIG(st),
              strsignal(WTERMSIG(st)));
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child exit status %d", WEXITSTATUS(st));
}

/* ---- a producer survives truncation ---------------------------------------- */

struct prod_report {
    uint64_t ok_before;       /* emits that returned 0 */
    uint64_t stale;           /* emits that returned -ESTALE */
    uint64_t other_errors;
    uint64_t dropped;         /* the producer's own counter */
    int check;                /* cbus_producer_check() after */
    int other_bus_emit;       /* an emit into the second, untouched bus */
    int other_bus_check;
};

static void producer_child(int fd)
{
    cbus_producer *p, *q;
    if (cbus_producer_open(&p, name, NULL) || cbus_producer_open(&q, name2, NULL))
        _exit(3);
    cbus_ctx ctx;
    cbus_ctx_init(&ctx);
    struct prod_report rep = {0};
    uint64_t deadline = test_now_ms() + 20000;
    /* Emit until the parent's truncation shows up as -ESTALE; say when the
     * first emits went through so the parent truncates a running producer. */
    char ready = 'r';
    while (test_now_ms() < deadline) {
        int r = cbus_text(p, &ctx, "hello");
        if (r == 0) {
            if (++rep.ok_before == 1000)
                write_all(fd, &ready, 1);
        } else if (r == -ESTALE) {
            rep.stale++;
            break;
        } else if (r != -EAGAIN) {
            rep.other_errors++;
        }
    }
    if (!rep.stale)
        _exit(4);
    /* Every later emit is dropped, counted, never a crash. */
    for (int i = 0; i < 999; i++) {
        int r = cbus_text(p, &ctx, "after");
        if (r == -ESTALE)
            rep.stale++;
        else
            rep.other_errors++;
    }
    struct cbus_producer_stats st;
    cbus_producer_stats(p, &st);
    rep.dropped = st.dropped;
    rep.check = cbus_producer_check(p);
    rep.other_bus_emit = cbus_text(q, &ctx, "other bus");
    rep.other_bus_check = cbus_producer_check(q);
    cbus_producer_close(p);
    cbus_producer_close(q);
    write_all(fd, &rep, sizeof rep);
}

Test(bus_guard, truncated_segment_producer_survives_and_counts_drops)
{
    test_bus_create(name, 1024);
    test_bus_create(name2, 1024);
    int fd;
    pid_t pid = spawn(producer_child, &fd);
    char c;
    read_all(fd, &c, 1);
    truncate_bus(name, 4096); /* the header page stays, the ring goes */
    struct prod_report rep;
    read_all(fd, &rep, sizeof rep);
    close(fd);
    assert_exited_ok(reap(pid));
    cr_assert_geq(rep.ok_before, 1000);
    cr_assert_eq(rep.stale, 1000, "every emit after the truncation returns -ESTALE");
    cr_assert_eq(rep.other_errors, 0);
    cr_assert_eq(rep.dropped, rep.stale, "dropped %llu, -ESTALE %llu",
                 (unsigned long long)rep.dropped, (unsigned long long)rep.stale);
    cr_assert_eq(rep.check, -EIO);
    cr_assert_eq(rep.other_bus_emit, 0, "another bus in the same process is unaffected");
    cr_assert_eq(rep.other_bus_check, 0);
}

/* ---- a consumer (daemon-like loop) survives truncation --------------------- */

struct cons_report {
    uint64_t consumed;
    int stale;                /* the poll/wait result that ended the loop */
    int check;
    int detach_ok;
};

static void consumer_child(int fd)
{
    cbus_consumer *c;
    struct cbus_consumer_opts o = {.name = "guarded", .mode = CBUS_LOSSLESS,
                                   .start = CBUS_START_OLDEST};
    if (cbus_consumer_attach(&c, name, &o))
        _exit(3);
    struct cbus_event evs[64];
    struct cons_report rep = {0};
    int told = 0;
    uint64_t deadline = test_now_ms() + 20000;
    while (test_now_ms() < deadline) {
        int n = cbus_consumer_poll(c, evs, 64);
        if (n < 0) {
            rep.stale = n;
            break;
        }
        rep.consumed += (uint64_t)n;
        cbus_consumer_commit(c);
        if (rep.consumed >= 100 && !told) {
            char ready = 'r';
            write_all(fd, &ready, 1);
            told = 1;
        }
        if (n == 0) {
            int w = cbus_consumer_wait(c, 50000000u);
            if (w < 0 && w != -EINTR) {
                rep.stale = w;
                break;
            }
        }
    }
    rep.check = cbus_consumer_check(c);
    cbus_consumer_detach(c); /* must not fault either */
    rep.detach_ok = 1;
    write_all(fd, &rep, sizeof rep);
}

Test(bus_guard, truncated_segment_consumer_survives)
{
    test_bus_create(name, 1024);
    int fd;
    pid_t pid = spawn(consumer_child, &fd);
    cbus_producer *p;
    cr_assert_eq(cbus_producer_open(&p, name, NULL), 0);
    cbus_ctx ctx;
    cbus_ctx_init(&ctx);
    /* Wait for the consumer to attach, then give it 100 events. */
    uint64_t t0 = test_now_ms();
    while (cbus_bus_consumer_entry(cbus_producer_bus(p), 0)->state != CBUS_CSTATE_ACTIVE) {
        cr_assert_lt(test_now_ms() - t0, 10000, "consumer did not attach");
        test_sleep_ms(1);
    }
    for (int i = 0; i < 100; i++)
        cr_assert_eq(cbus_text(p, &ctx, "x"), 0);
    char c;
    read_all(fd, &c, 1);
    /* To zero: the header page goes too.  Our own producer is the next to
     * touch it: it survives as well. */
    truncate_bus(name, 0);
    int r = cbus_text(p, &ctx, "after");
    cr_assert_eq(r, -ESTALE, "emit after truncation: %d", r);
    struct cons_report rep;
    read_all(fd, &rep, sizeof rep);
    close(fd);
    assert_exited_ok(reap(pid));
    cr_assert_geq(rep.consumed, 100);
    cr_assert_eq(rep.stale, -ESTALE);
    cr_assert_eq(rep.check, -EIO);
    cr_assert(rep.detach_ok);
    cbus_producer_close(p);
}

/* ---- SIGBUS that is not ours still does what it did -------------------------- */

static char scratch_path[64];

/* A file mapping of our own, cut short, touched: a SIGBUS not in a bus. */
static void fault_outside_bus(void)
{
    snprintf(scratch_path, sizeof scratch_path, "/dev/shm/guardtest.%d", (int)getpid());
    int fd = open(scratch_path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || ftruncate(fd, 8192) < 0)
        _exit(5);
    volatile char *m = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED)
        _exit(6);
    unlink(scratch_path);
    if (ftruncate(fd, 0) < 0)
        _exit(7);
    m[4096] = 1; /* SIGBUS */
    _exit(8);
}

static void unrelated_fault_child(int fd)
{
    (void)fd;
    int null = open("/dev/null", O_WRONLY);
    if (null >= 0)
        dup2(null, 2); /* a sanitizer's fault report is expected noise here */
    cbus_producer *p;
    if (cbus_producer_open(&p, name, NULL))
        _exit(3);
    fault_outside_bus();
}

Test(bus_guard, fault_outside_a_bus_takes_the_default_action)
{
    test_bus_create(name, 1024);
    int fd;
    pid_t pid = spawn(unrelated_fault_child, &fd);
    close(fd);
    int st = reap(pid);
    cr_assert(st != -1);
#if defined(__SANITIZE_ADDRESS__)
    /* ASan installs its own SIGBUS handler before main: chained to, it
     * reports the fault and exits 1, or aborts with abort_on_error=1 (as
     * the test command runs it): the "default action" there. */
    if ((WIFEXITED(st) && WEXITSTATUS(st) == 1) || (WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT))
        return;
#endif
    cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGBUS, "status %#x: not killed by SIGBUS", st);
}

static void host_handler(int sig, siginfo_t *info, void *uctx)
{
    (void)sig;
    (void)info;
    (void)uctx;
    _exit(42);
}

static void install_host_handler(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = host_handler;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, NULL);
}

/* The host had a SIGBUS handler before the bus was opened: a fault that is
 * not ours reaches it, and a truncation of the bus is still survived. */
static void chained_child(int fd)
{
    install_host_handler();
    cbus_producer *p;
    if (cbus_producer_open(&p, name, NULL))
        _exit(3);
    cbus_ctx ctx;
    cbus_ctx_init(&ctx);
    if (cbus_text(p, &ctx, "x"))
        _exit(4);
    char ready = 'r';
    write_all(fd, &ready, 1);
    uint64_t deadline = test_now_ms() + 20000;
    int r = 0;
    while ((r = cbus_text(p, &ctx, "x")) != -ESTALE && test_now_ms() < deadline) {
    }
    if (r != -ESTALE)
        _exit(9);
    char survived = 's';
    write_all(fd, &survived, 1);
    fault_outside_bus(); /* host_handler: exit 42 */
}

Test(bus_guard, previous_handler_gets_faults_that_are_not_ours)
{
    test_bus_create(name, 1024);
    int fd;
    pid_t pid = spawn(chained_child, &fd);
    char c;
    read_all(fd, &c, 1);
    truncate_bus(name, 4096);
    read_all(fd, &c, 1);
    cr_assert_eq(c, 's', "the truncation was not survived");
    close(fd);
    int st = reap(pid);
    cr_assert(st != -1);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 42, "status %#x (42 = host handler ran)", st);
}

/* The host installs its handler after opening the bus (faulthandler, a JVM):
 * cbus_guard_install() puts the guard back in front of it. */
static void reinstall_child(int fd)
{
    cbus_producer *p;
    if (cbus_producer_open(&p, name, NULL))
        _exit(3);
    install_host_handler();
    if (cbus_guard_install())
        _exit(10);
    if (cbus_guard_install()) /* twice: must not chain to itself */
        _exit(11);
    cbus_ctx ctx;
    cbus_ctx_init(&ctx);
    char ready = 'r';
    write_all(fd, &ready, 1);
    uint64_t deadline = test_now_ms() + 20000;
    int r = 0;
    while ((r = cbus_text(p, &ctx, "x")) != -ESTALE && test_now_ms() < deadline) {
    }
    if (r != -ESTALE)
        _exit(9);
    char survived = 's';
    write_all(fd, &survived, 1);
    fault_outside_bus();
}

Test(bus_guard, reinstalled_guard_survives_and_chains_to_later_handler)
{
    test_bus_create(name, 1024);
    int fd;
    pid_t pid = spawn(reinstall_child, &fd);
    char c;
    read_all(fd, &c, 1);
    truncate_bus(name, 4096);
    read_all(fd, &c, 1);
    cr_assert_eq(c, 's', "the truncation was not survived");
    close(fd);
    int st = reap(pid);
    cr_assert(st != -1);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 42, "status %#x (42 = host handler ran)", st);
}

/* ---- removed and re-created ------------------------------------------------ */

Test(bus_guard, check_reports_removed_then_recreated)
{
    test_bus_create(name, 1024);
    cbus_producer *p;
    cbus_consumer *c;
    struct cbus_consumer_opts o = {.name = "checker", .mode = CBUS_LOSSY};
    cr_assert_eq(cbus_producer_open(&p, name, NULL), 0);
    cr_assert_eq(cbus_consumer_attach(&c, name, &o), 0);
    cr_assert_eq(cbus_producer_check(p), 0);
    cr_assert_eq(cbus_consumer_check(c), 0);

    cr_assert_eq(cbus_bus_destroy(name), 0);
    cr_assert_eq(cbus_producer_check(p), -ENOENT);
    cr_assert_eq(cbus_consumer_check(c), -ENOENT);
    /* The old segment still works for those who map it. */
    cbus_ctx ctx;
    cbus_ctx_init(&ctx);
    cr_assert_eq(cbus_text(p, &ctx, "into the unlinked segment"), 0);
    struct cbus_event ev;
    cr_assert_eq(cbus_consumer_poll(c, &ev, 1), 1);

    test_bus_create(name, 1024);
    cr_assert_eq(cbus_producer_check(p), -EIDRM);
    cr_assert_eq(cbus_consumer_check(c), -EIDRM);

    /* Following it: a new handle is on the new segment. */
    cbus_producer *p2;
    cr_assert_eq(cbus_producer_open(&p2, name, NULL), 0);
    cr_assert_eq(cbus_producer_check(p2), 0);
    cr_assert_neq(cbus_bus_header(cbus_producer_bus(p2))->bus_id,
                  cbus_bus_header(cbus_producer_bus(p))->bus_id);
    cbus_producer_close(p2);
    cbus_consumer_detach(c);
    cbus_producer_close(p);
}

Test(bus_guard, check_reports_eviction_and_shrink)
{
    test_bus_create(name, 1024);
    cbus_consumer *c;
    struct cbus_consumer_opts o = {.name = "evictee", .mode = CBUS_LOSSY};
    cr_assert_eq(cbus_consumer_attach(&c, name, &o), 0);
    cr_assert_eq(cbus_bus_evict(cbus_consumer_bus(c), (unsigned)cbus_consumer_index(c), 1), 0);
    cr_assert_eq(cbus_consumer_check(c), -ESTALE);
    cbus_consumer_detach(c);

    /* Shrunk but not touched since: reported before anything faults. */
    cbus_bus *bus;
    cr_assert_eq(cbus_bus_open(&bus, name, 0), 0);
    cr_assert_eq(cbus_bus_check(bus), 0);
    truncate_bus(name, 4096);
    cr_assert_eq(cbus_bus_check(bus), -EIO);
    cbus_bus_close(bus);
}

/* Open and close many buses: guard slots are given back at close. */
Test(bus_guard, guard_slots_are_reused_after_close)
{
    test_bus_create(name, 1024);
    for (int i = 0; i < 1000; i++) {
        cbus_bus *bus;
        cr_assert_eq(cbus_bus_open(&bus, name, 0), 0);
        cbus_bus_close(bus);
    }
    /* Still guarded after all that: a producer survives a truncation. */
    int fd;
    pid_t pid = spawn(reinstall_child, &fd);
    char c;
    read_all(fd, &c, 1);
    truncate_bus(name, 4096);
    read_all(fd, &c, 1);
    cr_assert_eq(c, 's', "the truncation was not survived");
    close(fd);
    int st = reap(pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 42, "status %#x", st);
}
