/* cbus-audit as users run it: the real binary on a real bus, producers in
 * other processes, SIGKILL under load, a disk that fills up, bad configs. */
#include <criterion/criterion.h>

#include <cbus/bus.h>
#include <cbus/producer.h>

#include <errno.h>
#include <stdatomic.h>
#include <inttypes.h>
#include <pthread.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "state.h"
#include "support.h"
#include "test_util.h"

static char tmp[200];
static char dir[300];
static char logfile[300];
static char bus[64];
static char mnt[280];
static int mounted;

static void setup(void)
{
    tu_tmpdir(tmp, sizeof tmp);
    snprintf(dir, sizeof dir, "%s/log", tmp);
    snprintf(logfile, sizeof logfile, "%s/daemon.log", tmp);
    test_bus_name(bus, sizeof bus);
    mounted = 0;
}

static cbus_producer *tp; /* a producer in the test process itself */

static void teardown(void)
{
    cbus_producer_close(tp);
    tp = NULL;
    tu_kill_all(); /* daemons and producers left by a failed assertion */
    if (mounted)
        umount2(mnt, MNT_DETACH);
    cbus_bus_destroy(bus);
    tu_rmrf(tmp);
}

static char *slurp_text(const char *path)
{
    size_t len;
    uint8_t *b = tu_slurp(path, &len);
    if (!b)
        return strdup("");
    char *s = malloc(len + 1);
    memcpy(s, b, len);
    s[len] = '\0';
    free(b);
    return s;
}

static void stop_daemon(pid_t pid)
{
    kill(pid, SIGTERM);
    int st = tu_wait(pid, 20000);
    char *log = slurp_text(logfile);
    cr_assert(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "daemon exit %d:\n%s", st, log);
    free(log);
}

static void verify_ok(const char *d, const char *expect)
{
    char out[4096];
    char *argv[] = {(char *)CBUS_AUDIT_BIN, (char *)"verify", (char *)d, NULL};
    cr_assert_eq(tu_run(argv, out, sizeof out), 0, "%s", out);
    if (expect)
        cr_assert(strstr(out, expect), "%s", out);
}

/* Emits events [first, first+n) tagged with their number (retry events,
 * attempt = i: cbus_emit() overrides an llm_new_token's index with the
 * context's counter); ok[i] = 1 when the emit succeeded.  Runs in a child
 * process. */
static pid_t producer_paced(unsigned first, unsigned n, volatile uint8_t *ok,
                            unsigned pace_every, unsigned burst, unsigned pace_us);

static pid_t producer(unsigned first, unsigned n, volatile uint8_t *ok, unsigned pace_every)
{
    return producer_paced(first, n, ok, pace_every, 0, 200);
}

/* The same, the first burst events unpaced, then a pause of pace_us every
 * pace_every events. */
static pid_t producer_paced(unsigned first, unsigned n, volatile uint8_t *ok,
                            unsigned pace_every, unsigned burst, unsigned pace_us)
{
    pid_t pid = fork();
    if (pid) {
        tu_track(pid);
        return pid;
    }
    tu_child_dies_with_parent();
    cbus_producer *p;
    if (cbus_producer_open(&p, bus, NULL))
        _exit(3);
    cbus_ctx ctx;
    cbus_ctx_init(&ctx);
    cbus_ctx_set_model(&ctx, "gpt-4o");
    cbus_ctx_set_user(&ctx, "alice");
    for (unsigned i = first; i < first + n; i++) {
        struct cbus_retry_info ti = {.attempt = i};
        struct cbus_emit_args a = {.kind = CBUS_EV_RETRY, .preview = "tok",
                                   .preview_len = 3, .payload = &ti, .payload_len = sizeof ti};
        int rc = cbus_emit(p, &ctx, &a);
        ok[i] = rc == 0;
        if (rc && rc != -EAGAIN)
            _exit(4);
        if (pace_every && i - first >= burst && i % pace_every == 0)
            usleep(pace_us);
    }
    cbus_producer_close(p);
    _exit(0);
}

/* The log holds exactly the events whose emit succeeded, in order, once. */
static void assert_log_matches(const volatile uint8_t *ok, unsigned n)
{
    struct cbus_event *evs;
    long cnt = tu_read_events(dir, &evs);
    cr_assert_geq(cnt, 0, "log does not parse");
    unsigned want = 0;
    long k = 0;
    for (unsigned i = 0; i < n; i++) {
        if (!ok[i])
            continue;
        want++;
        cr_assert_lt(k, cnt, "event %u missing (log has %ld)", i, cnt);
        cr_assert_eq(evs[k].u.retry.attempt, i, "record %ld holds %u, expected %u", k,
                     evs[k].u.retry.attempt, i);
        if (k > 0 && evs[k].event_id != 0) /* ids restart only with a new bus */
            cr_assert_gt(evs[k].event_id, evs[k - 1].event_id);
        k++;
    }
    cr_assert_eq(cnt, (long)want, "log has %ld records, %u events were emitted", cnt, want);
    free(evs);
}

static uint64_t bus_tail(void)
{
    cbus_bus *b;
    cr_assert_eq(cbus_bus_open(&b, bus, 0), 0);
    uint64_t t = cbus_bus_tail(b);
    cbus_bus_close(b);
    return t;
}

Test(audit_daemon, default_config_logs_every_event_once_across_restarts, .init = setup,
     .fini = teardown)
{
    test_bus_create(bus, 0);
    volatile uint8_t *ok = mmap(NULL, 6000, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    pid_t d = tu_start_daemon(bus, CBUS_AUDIT_INI, dir, logfile);
    int idx = tu_wait_consumer(bus, "audit", 20000);
    cr_assert_geq(idx, 0, "daemon did not attach");
    cr_assert_eq(tu_wait(producer(0, 5000, ok, 0), 30000), 0);
    cr_assert_eq(tu_wait_cursor(bus, idx, bus_tail(), 20000), 0, "not all durable");
    stop_daemon(d);
    char *log = slurp_text(logfile);
    cr_assert(strstr(log, "cbus-audit info: started: bus"), "%s", log);
    free(log);
    /* The status envelope (consumers/daemon/status.h), last written at the
     * clean stop: DIR/status.json by default. */
    char sp[400];
    snprintf(sp, sizeof sp, "%s/status.json", dir);
    char *st = slurp_text(sp);
    cr_assert(strstr(st, "{\"daemon\":\"cbus-audit\",\"bus\":") && strstr(st, "\"running\":false") &&
              strstr(st, "\"consumer\":{\"name\":\"audit\",\"mode\":\"lossless\",\"consumed\":5000,") &&
              strstr(st, "\"audit\":{") && strstr(st, "\"durable_records\":5000,"),
              "status file: %s", st);
    free(st);

    /* A clean restart resumes after the last record: nothing twice. */
    d = tu_start_daemon(bus, CBUS_AUDIT_INI, dir, logfile);
    idx = tu_wait_consumer(bus, "audit", 20000);
    cr_assert_geq(idx, 0);
    cr_assert_eq(tu_wait(producer(5000, 1000, ok, 0), 30000), 0);
    cr_assert_eq(tu_wait_cursor(bus, idx, bus_tail(), 20000), 0);
    stop_daemon(d);
    assert_log_matches(ok, 6000);
    verify_ok(dir, "6000 records");
    munmap((void *)ok, 6000);
}

Test(audit_daemon, recreated_bus_continues_the_chain_in_a_new_file, .init = setup,
     .fini = teardown)
{
    test_bus_create(bus, 0);
    volatile uint8_t *ok = mmap(NULL, 200, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    for (unsigned life = 0; life < 2; life++) {
        if (life)
            test_bus_create(bus, 0); /* the server restarted: new bus id, ids from 0 */
        pid_t d = tu_start_daemon(bus, CBUS_AUDIT_INI, dir, logfile);
        int idx = tu_wait_consumer(bus, "audit", 20000);
        cr_assert_geq(idx, 0);
        cr_assert_eq(tu_wait(producer(life * 100, 100, ok, 0), 30000), 0);
        cr_assert_eq(tu_wait_cursor(bus, idx, bus_tail(), 20000), 0);
        stop_daemon(d);
    }
    char **paths;
    size_t n = tu_log_files(dir, &paths);
    cr_assert_eq(n, 2);
    tu_free_paths(paths, n);
    struct cbus_event *evs;
    cr_assert_eq(tu_read_events(dir, &evs), 200);
    for (unsigned i = 0; i < 200; i++) {
        cr_assert_eq(evs[i].u.retry.attempt, i);
        cr_assert_eq(evs[i].event_id, i % 100, "event ids restart with the new bus");
    }
    free(evs);
    verify_ok(dir, "OK: 2 files, 200 records");
    char *log = slurp_text(logfile);
    cr_assert(strstr(log, "re-created since; reading it from its oldest event"), "%s", log);
    free(log);
    munmap((void *)ok, 200);
}

/* Occurrences of what in the daemon's log. */
static unsigned log_count(const char *what)
{
    char *log = slurp_text(logfile);
    unsigned n = 0;
    for (char *s = log; (s = strstr(s, what)); s++)
        n++;
    free(log);
    return n;
}

/* The daemon attaches before recovery, so being on the bus does not mean
 * running: waits for its n-th "started" line, so a kill hits a daemon that
 * is logging (kills during recovery are the next test's business). */
static void wait_started(unsigned n)
{
    uint64_t end = test_now_ms() + 30000;
    while (log_count("info: started: ") < n && test_now_ms() < end)
        test_sleep_ms(5);
    if (log_count("info: started: ") != n) {
        char *log = slurp_text(logfile);
        cr_assert_fail("start %u did not get going:\n%s", n, log);
    }
}

Test(audit_daemon, sigkill_under_load_and_restart_keeps_every_event_once_in_order,
     .init = setup, .fini = teardown)
{
    enum { N = 100000 };
    /* Room for every event: while the daemon is dead nothing may be
     * overwritten, so "every event" is checkable exactly. */
    test_bus_create(bus, 1u << 17);
    volatile uint8_t *ok = mmap(NULL, N, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    pid_t d = tu_start_daemon(bus, CBUS_AUDIT_INI, dir, logfile);
    cr_assert_geq(tu_wait_consumer(bus, "audit", 20000), 0);
    wait_started(1);
    pid_t p = producer(0, N, ok, 64);
    for (int kill_round = 0; kill_round < 3; kill_round++) {
        test_sleep_ms(60 + 40 * (unsigned)kill_round);
        kill(d, SIGKILL);
        cr_assert_geq(tu_wait(d, 5000), 0);
        d = tu_start_daemon(bus, CBUS_AUDIT_INI, dir, logfile);
        wait_started((unsigned)kill_round + 2);
    }
    cr_assert_eq(tu_wait(p, 60000), 0, "producer");
    int idx = tu_wait_consumer(bus, "audit", 20000);
    cr_assert_eq(tu_wait_cursor(bus, idx, bus_tail(), 30000), 0, "not all durable");
    stop_daemon(d);
    assert_log_matches(ok, N);
    verify_ok(dir, NULL);
    char *log = slurp_text(logfile);
    unsigned starts = 0;
    for (char *s = log; (s = strstr(s, "info: started: ")); s++)
        starts++;
    cr_assert_eq(starts, 4, "%s", log);
    free(log);
    munmap((void *)ok, N);
}

struct lane_sender {
    cbus_producer *p;
    unsigned first, n, pace_every;
    volatile uint8_t *ok;
};

static void *lane_send(void *arg)
{
    struct lane_sender *s = arg;
    cbus_ctx ctx;
    cbus_ctx_init(&ctx);
    cbus_ctx_set_model(&ctx, "gpt-4o");
    for (unsigned i = s->first; i < s->first + s->n; i++) {
        struct cbus_retry_info ti = {.attempt = i};
        struct cbus_emit_args a = {.kind = CBUS_EV_RETRY, .payload = &ti,
                                   .payload_len = sizeof ti};
        int rc = cbus_emit(s->p, &ctx, &a);
        s->ok[i] = rc == 0;
        if (rc && rc != -EAGAIN)
            _exit(4);
        if (s->pace_every && i % s->pace_every == 0)
            usleep(200);
    }
    return NULL;
}

/* A child process whose `threads` threads each emit per_thread events,
 * thread t numbers [first + t * per_thread, ...): each thread takes a lane
 * of its own while there are free ones. */
static pid_t producer_threads(unsigned first, unsigned threads, unsigned per_thread,
                              volatile uint8_t *ok, unsigned pace_every)
{
    pid_t pid = fork();
    if (pid) {
        tu_track(pid);
        return pid;
    }
    tu_child_dies_with_parent();
    cbus_producer *p;
    if (cbus_producer_open(&p, bus, NULL))
        _exit(3);
    pthread_t th[8];
    struct lane_sender s[8];
    for (unsigned t = 0; t < threads && t < 8; t++) {
        s[t] = (struct lane_sender){p, first + t * per_thread, per_thread, pace_every, ok};
        if (pthread_create(&th[t], NULL, lane_send, &s[t]))
            _exit(5);
    }
    for (unsigned t = 0; t < threads && t < 8; t++)
        pthread_join(th[t], NULL);
    cbus_producer_close(p);
    _exit(0);
}

/* A bus of four lanes, two producer processes of two threads each, the
 * daemon SIGKILLed three times under load: every accepted event is in the
 * log exactly once, each thread's events in the order it emitted them,
 * each lane's ids increasing, and verify checks the chain and every lane's
 * positions (no gap: nothing was lost).  Resume goes through the saved
 * position vector (state file and log) and cbus_consumer_commit_position. */
Test(audit_daemon, four_lanes_sigkill_under_load_keeps_every_event_once_per_lane_in_order,
     .init = setup, .fini = teardown)
{
    enum { PROCS = 2, THREADS = 2, PER = 20000, N = PROCS * THREADS * PER };
    /* Room for every event in each lane (a lane is a quarter of the ring):
     * while the daemon is dead nothing may be overwritten. */
    struct cbus_create_opts co = {.capacity = 1u << 17, .lanes = 4};
    cbus_bus_destroy(bus);
    cr_assert_eq(cbus_bus_create(bus, &co), 0);
    volatile uint8_t *ok = mmap(NULL, N, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    pid_t d = tu_start_daemon(bus, CBUS_AUDIT_INI, dir, logfile);
    cr_assert_geq(tu_wait_consumer(bus, "audit", 20000), 0);
    wait_started(1);
    pid_t p[PROCS];
    for (unsigned k = 0; k < PROCS; k++)
        p[k] = producer_threads(k * THREADS * PER, THREADS, PER, ok, 8);
    for (int kill_round = 0; kill_round < 3; kill_round++) {
        test_sleep_ms(60 + 40 * (unsigned)kill_round);
        kill(d, SIGKILL);
        cr_assert_geq(tu_wait(d, 5000), 0);
        d = tu_start_daemon(bus, CBUS_AUDIT_INI, dir, logfile);
        wait_started((unsigned)kill_round + 2);
    }
    for (unsigned k = 0; k < PROCS; k++)
        cr_assert_eq(tu_wait(p[k], 60000), 0, "producer %u", k);
    int idx = tu_wait_consumer(bus, "audit", 20000);
    cr_assert_eq(tu_wait_caught_up(bus, idx, 30000), 0, "not all durable");
    stop_daemon(d);

    struct cbus_event *evs;
    long cnt = tu_read_events(dir, &evs);
    cr_assert_geq(cnt, 0, "log does not parse");
    uint8_t *seen = calloc(N, 1);
    long next_of_thread[PROCS * THREADS] = {0};
    uint64_t next_id[4] = {0};
    unsigned lanes_used = 0;
    for (long k = 0; k < cnt; k++) {
        unsigned i = evs[k].u.retry.attempt, L = (unsigned)(evs[k].event_id % 4);
        cr_assert_lt(i, N);
        cr_assert(ok[i], "record %ld holds event %u, whose emit failed", k, i);
        cr_assert(!seen[i], "event %u logged twice", i);
        seen[i] = 1;
        cr_assert_geq((long)i, next_of_thread[i / PER], "thread %u out of order at event %u",
                      i / PER, i);
        next_of_thread[i / PER] = (long)i + 1;
        cr_assert_geq(evs[k].event_id, next_id[L], "lane %u ids go backwards", L);
        next_id[L] = evs[k].event_id + 1;
        lanes_used |= 1u << L;
    }
    unsigned want = 0;
    for (unsigned i = 0; i < N; i++) {
        want += ok[i];
        cr_assert(!ok[i] || seen[i], "event %u accepted but not logged", i);
    }
    cr_assert_eq(cnt, (long)want);
    cr_assert_gt(want, N / 2, "most events got through (%u of %u)", want, (unsigned)N);
    cr_assert_eq(lanes_used, 0xfu, "all four lanes carried events");
    free(seen);
    free(evs);
    char expect[64];
    snprintf(expect, sizeof expect, "%u records", want);
    verify_ok(dir, expect);
    verify_ok(dir, "no gaps in event ids");
    cr_assert_eq(log_count("info: started: "), 4);
    char *lg = slurp_text(logfile); /* said when it fails: once seen at -j2, not reproduced */
    cr_assert_eq(log_count("4 lanes"), 4, "every start saw the four lanes\n%s", lg);
    free(lg);
    munmap((void *)ok, N);
}

static uint64_t proc_rchar(pid_t pid)
{
    char path[64], line[128];
    snprintf(path, sizeof path, "/proc/%d/io", (int)pid);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s", path);
    uint64_t v = UINT64_MAX;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "rchar: %" SCNu64, &v) == 1)
            break;
    fclose(f);
    return v;
}

static uint64_t log_bytes(void)
{
    char **paths;
    size_t n = tu_log_files(dir, &paths);
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        struct stat sb;
        if (stat(paths[i], &sb) == 0)
            total += (uint64_t)sb.st_size;
    }
    tu_free_paths(paths, n);
    return total;
}

/* The bytes of the log a restart must check: the current file past the
 * durable end the state file names.  The state file is written after each
 * batch's fdatasync, so it trails the file by the batches in flight at the
 * kill: a few KB on an idle disk, megabytes when other processes load it
 * (a fixed bound of a tenth of the log was crossed so). */
static uint64_t uncovered_tail(void)
{
    struct audit_state s;
    cr_assert_eq(audit_state_load(dir, "audit", &s), 0, "no state file");
    char path[600];
    snprintf(path, sizeof path, "%s/%s", dir, s.name);
    struct stat sb;
    cr_assert_eq(stat(path, &sb), 0, "%s: %s", path, strerror(errno));
    return (uint64_t)sb.st_size > s.offset ? (uint64_t)sb.st_size - s.offset : 0;
}

/* What a restart reads besides that tail: its config, the state file, the
 * value the state file names (to check its hash), a few /proc files: 14 KB
 * measured. */
#define RESTART_READ_SLACK (UINT64_C(256) << 10)

/* Issue 12 item 15: a restart on a large log re-read and re-hashed the whole
 * file (4.25 s for 740 MB, past the stall timeout).  Now it reads what the
 * state file does not cover: checked by the bytes the daemon read (its
 * /proc/PID/io) against that tail, not by timing. */
Test(audit_daemon, sigkill_under_load_with_a_large_log_resumes_from_its_tail, .init = setup,
     .fini = teardown)
{
    enum { FILL = 100000, N = 60000, KILLS = 6 };
    test_bus_create(bus, 1u << 17);
    volatile uint8_t *ok = mmap(NULL, FILL + N, PROT_READ | PROT_WRITE,
                                MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    pid_t d = tu_start_daemon(bus, CBUS_AUDIT_INI, dir, logfile);
    int idx = tu_wait_consumer(bus, "audit", 20000);
    cr_assert_geq(idx, 0);
    cr_assert_eq(tu_wait(producer(0, FILL, ok, 0), 60000), 0);
    cr_assert_eq(tu_wait_cursor(bus, idx, bus_tail(), 30000), 0, "fill not durable");
    uint64_t size = log_bytes();
    cr_assert_gt(size, 20u << 20, "a large log: %" PRIu64 " bytes", size);

    pid_t p = producer(FILL, N, ok, 64);
    for (unsigned k = 0; k < KILLS; k++) {
        test_sleep_ms(30 + 20 * k); /* where in the stream the kill lands; nothing is timed */
        kill(d, SIGKILL);
        cr_assert_geq(tu_wait(d, 5000), 0);
        uint64_t tail = uncovered_tail(); /* nothing writes the log until the restart */
        /* Only what the fill did not cover can be uncovered (it was durable
         * before these kills, and N < FILL): the whole-file read this test
         * was written for stays past the bound below. */
        cr_assert_lt(tail + RESTART_READ_SLACK, size, "restart %u: %" PRIu64 " bytes uncovered",
                     k, tail);
        d = tu_start_daemon(bus, CBUS_AUDIT_INI, dir, logfile);
        uint64_t end = test_now_ms() + 30000;
        while (log_count("info: recovery: ") < k + 2 && test_now_ms() < end)
            test_sleep_ms(5);
        cr_assert_eq(log_count("info: recovery: "), k + 2, "restart %u did not recover", k);
        uint64_t read = proc_rchar(d);
        cr_assert_lt(read, tail + RESTART_READ_SLACK,
                     "restart %u read %" PRIu64 " bytes of a %" PRIu64 "-byte log, %" PRIu64
                     " past the state file", k, read, size, tail);
    }
    cr_assert_eq(tu_wait(p, 120000), 0, "producer");
    idx = tu_wait_consumer(bus, "audit", 20000);
    cr_assert_eq(tu_wait_cursor(bus, idx, bus_tail(), 30000), 0, "not all durable");
    stop_daemon(d);
    assert_log_matches(ok, FILL + N);
    verify_ok(dir, "no gaps in event ids");
    cr_assert_eq(log_count("(from the state file)"), KILLS);
    munmap((void *)ok, FILL + N);
}

/* Recovery that outlasts the stall timeout (a whole-file check: no state
 * file; each step paused by the test hook) keeps the consumer alive on the
 * bus: it heartbeats per step, so producers never untether it and nothing
 * is lost.  The margin: steps ~0.4 s apart vs the 2 s stall timeout, and
 * recovery takes 4 s or more (10+ steps). */
Test(audit_daemon, slow_recovery_heartbeats_and_stays_tethered, .init = setup, .fini = teardown)
{
    enum { FILL = 100000, N = (1u << 14) + 6000 };
    test_bus_create(bus, 1u << 14);
    volatile uint8_t *ok = mmap(NULL, FILL + N, PROT_READ | PROT_WRITE,
                                MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    pid_t d = tu_start_daemon(bus, CBUS_AUDIT_INI, dir, logfile);
    int idx = tu_wait_consumer(bus, "audit", 20000);
    cr_assert_geq(idx, 0);
    cr_assert_eq(tu_wait(producer(0, FILL, ok, 8), 120000), 0); /* paced: the ring is small */
    cr_assert_eq(tu_wait_cursor(bus, idx, bus_tail(), 30000), 0, "fill not durable");
    kill(d, SIGKILL);
    cr_assert_geq(tu_wait(d, 5000), 0);
    char state[400];
    snprintf(state, sizeof state, "%s/.audit.state", dir);
    cr_assert_eq(unlink(state), 0, "%s", strerror(errno));
    uint64_t size = log_bytes();
    cr_assert_gt(size, 20u << 20, "%" PRIu64 " bytes: 10+ recovery steps", size);

    cbus_bus *b;
    cr_assert_eq(cbus_bus_open(&b, bus, 0), 0);
    uint64_t untethered = atomic_load(&cbus_bus_header(b)->untethered);
    /* Fills the ring at once, then emits about one event per ms throughout
     * the recovery: each one blocked by our consumer checks its heartbeat. */
    pid_t p = producer_paced(FILL, N, ok, 1, 1u << 14, 1000);
    setenv("CBUS_AUDIT_TEST_RECOVERY_PAUSE_MS", "400", 1);
    d = tu_start_daemon(bus, CBUS_AUDIT_INI, dir, logfile);
    unsetenv("CBUS_AUDIT_TEST_RECOVERY_PAUSE_MS");
    uint64_t end = test_now_ms() + 120000;
    while (log_count("info: recovery: ") < 2 && test_now_ms() < end)
        test_sleep_ms(10);
    cr_assert_eq(log_count("info: recovery: "), 2, "recovery did not finish");
    cr_assert_eq(log_count("(whole file checked)"), 1);
    cr_assert_eq(tu_wait(p, 120000), 0, "producer");
    idx = tu_wait_consumer(bus, "audit", 20000);
    cr_assert_eq(tu_wait_cursor(bus, idx, bus_tail(), 30000), 0, "not all durable");
    cr_assert_eq(atomic_load(&cbus_bus_header(b)->untethered), untethered,
                 "the recovering daemon was untethered");
    cbus_bus_close(b);
    stop_daemon(d);
    assert_log_matches(ok, FILL + N);
    verify_ok(dir, "no gaps in event ids");
    munmap((void *)ok, FILL + N);
}

/* The CPU time a call spent waiting: the wait the producer recorded less
 * the time this thread was off a CPU during the call (support.h): on a
 * loaded machine a thread is descheduled for hundreds of ms, and the wait
 * is a spin, so a producer held past the bound spins past it on a CPU.
 * ONCPU_SLACK_NS is CPU time: ten times the 1 ms default bound. */
#define ONCPU_SLACK_NS UINT64_C(10000000)

static int emit_retry_oncpu(unsigned i, uint64_t *max_oncpu)
{
    cbus_ctx ctx;
    cbus_ctx_init(&ctx);
    cbus_ctx_set_model(&ctx, "gpt-4o");
    struct cbus_retry_info ti = {.attempt = i};
    struct cbus_emit_args a = {.kind = CBUS_EV_RETRY, .preview = "tok", .preview_len = 3,
                               .payload = &ti, .payload_len = sizeof ti};
    struct cbus_producer_stats s0, s1;
    cbus_producer_stats(tp, &s0);
    struct test_cpu_mark m;
    test_cpu_mark(&m);
    int rc = cbus_emit(tp, &ctx, &a);
    uint64_t off = test_offcpu_ns(&m);
    cbus_producer_stats(tp, &s1);
    uint64_t waited = s1.waited_ns - s0.waited_ns; /* one call waits at most once */
    uint64_t on = waited > off ? waited - off : 0;
    if (on > *max_oncpu)
        *max_oncpu = on;
    cr_assert(rc == 0 || rc == -EAGAIN, "emit %u: %s", i, cbus_strerror(rc));
    return rc;
}

/* A write of tail past the ring (tail += 3 x capacity) leaves the daemon
 * only skipped positions and no event to process, and it commits only what
 * it has made durable.  Until the library acknowledged such positions
 * itself (bus/consumer.c, 2c4aa77) the cursor stayed behind them, and the
 * producers it gates dropped every event for ever.  Now they are released,
 * every event accepted after the jump is logged once, and the log records
 * the skipped positions as a gap that verify accepts. */
Test(audit_daemon, tail_jump_past_the_ring_releases_producers_and_records_the_gap,
     .init = setup, .fini = teardown)
{
    enum { CAP = 1024, BEFORE = 50, AFTER = 200, N = BEFORE + 1 + AFTER };
    struct cbus_create_opts o = {.capacity = CAP, .stall_timeout_ns = 300000000u};
    cbus_bus_destroy(bus);
    cr_assert_eq(cbus_bus_create(bus, &o), 0);
    volatile uint8_t *ok = mmap(NULL, N, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    pid_t d = tu_start_daemon(bus, CBUS_AUDIT_INI, dir, logfile);
    int idx = tu_wait_consumer(bus, "audit", 20000);
    cr_assert_geq(idx, 0, "daemon did not attach");
    wait_started(1);
    cr_assert_eq(cbus_producer_open(&tp, bus, NULL), 0);
    cbus_bus *b = cbus_producer_bus(tp);
    cr_assert(atomic_load(&cbus_bus_consumer_entry(b, (unsigned)idx)->flags) & CBUS_CFLAG_TETHERED);
    uint64_t max_oncpu = 0;
    for (unsigned i = 0; i < BEFORE; i++)
        ok[i] = emit_retry_oncpu(i, &max_oncpu) == 0;
    for (unsigned i = 0; i < BEFORE; i++)
        cr_assert(ok[i], "event %u before the jump was dropped", i);
    cr_assert_eq(tu_wait_cursor(bus, idx, BEFORE, 20000), 0, "not durable before the jump");

    /* the hostile write */
    atomic_fetch_add((_Atomic uint64_t *)&cbus_bus_header(b)->tail, 3 * CAP);

    /* Emits succeed again once the skipped positions are acknowledged (each
     * drop meanwhile waits the bus's bound at most).  The first event that
     * gets through is number BEFORE; the drops before it are retried. */
    uint64_t end = test_now_ms() + 30000;
    int rc;
    while ((rc = emit_retry_oncpu(BEFORE, &max_oncpu)) != 0 && test_now_ms() < end)
        test_sleep_ms(1);
    cr_assert_eq(rc, 0, "producers never released after the jump");
    ok[BEFORE] = 1;
    for (unsigned i = BEFORE + 1; i < N; i++)
        ok[i] = emit_retry_oncpu(i, &max_oncpu) == 0;
    for (unsigned i = BEFORE + 1; i < N; i++)
        cr_assert(ok[i], "event %u after the release was dropped", i);
    cr_assert_leq(max_oncpu, cbus_bus_header(b)->lossless_wait_ns + ONCPU_SLACK_NS,
                  "a producer was held %llu ns on a CPU",
                  (unsigned long long)max_oncpu);
    uint64_t tail = cbus_bus_tail(b);
    cr_assert_eq(tail, (uint64_t)N + 3 * CAP);
    cr_assert_eq(tu_wait_cursor(bus, idx, tail, 20000), 0, "not all durable");
    stop_daemon(d);
    assert_log_matches(ok, N);
    char want[128];
    snprintf(want, sizeof want, "1 recorded gap in event ids (%u positions lost)", 3 * CAP);
    verify_ok(dir, want);
    munmap((void *)ok, N);
}

static const char disk_ini[] =
    "[audit]\nname = audit\n"
    "[io]\nbatch_events = 256\nbatch_bytes = 64k\n"
    "[disk]\nretry_initial = 20ms\nretry_max = 200ms\n";

Test(audit_daemon, disk_full_backs_off_and_resumes_without_loss, .init = setup,
     .fini = teardown)
{
    enum { N = 4000 };
    char ini[400];
    snprintf(ini, sizeof ini, "%s/disk.ini", tmp);
    tu_spit(ini, (const uint8_t *)disk_ini, sizeof disk_ini - 1);
    /* A 512 KiB tmpfs holds about 1700 records; else the same RLIMIT_FSIZE. */
    snprintf(mnt, sizeof mnt, "%s/mnt", tmp);
    mkdir(mnt, 0755);
    int use_rlimit = 0;
    /* CBUS_AUDIT_TEST_RLIMIT=1 exercises the fallback where mount works too. */
    if (!getenv("CBUS_AUDIT_TEST_RLIMIT") && mount("tmpfs", mnt, "tmpfs", 0, "size=512k") == 0) {
        mounted = 1;
        snprintf(dir, sizeof dir, "%s/log", mnt);
    } else {
        use_rlimit = 1;
    }
    /* A small ring, so the stuck daemon fills it and producers hit the bound.
     * The bound is a second, not 1 ms: a daemon that is merely slow (a loaded
     * machine) must not make the producer drop before the disk is full, or
     * fewer records than fill the disk are ever written (seen under
     * stress-ng with two test runs beside it).  Once the daemon is stuck on
     * the full disk, one wait times out and the rest drop at once. */
    struct cbus_create_opts bo = {.capacity = 1024, .lossless_wait_ns = 1000000000u};
    cbus_bus_destroy(bus);
    cr_assert_eq(cbus_bus_create(bus, &bo), 0);
    volatile uint8_t *ok = mmap(NULL, N, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    pid_t d = tu_start_daemon(bus, ini, dir, logfile);
    int idx = tu_wait_consumer(bus, "audit", 20000);
    cr_assert_geq(idx, 0);
    if (use_rlimit) {
        struct rlimit rl = {512 << 10, RLIM_INFINITY}; /* soft: raisable later */
        if (prlimit(d, RLIMIT_FSIZE, &rl, NULL) != 0) {
            kill(d, SIGKILL);
            tu_wait(d, 5000);
            cbus_test_skip_or_fail("neither a tmpfs mount nor RLIMIT_FSIZE can be set up here");
        }
    }
    /* Paced so the daemon keeps up until the disk fills; then the ring
     * fills and the producer finishes anyway: it waits at most the bus's
     * bound per event, then drops and counts. */
    cr_assert_eq(tu_wait(producer(0, N, ok, 16), 60000), 0, "producer hung");
    unsigned dropped = 0;
    for (unsigned i = 0; i < N; i++)
        dropped += !ok[i];
    cr_assert_gt(dropped, 0, "the disk never filled?");
    char *log = NULL;
    for (uint64_t end = test_now_ms() + 20000; test_now_ms() < end; test_sleep_ms(20)) {
        free(log);
        log = slurp_text(logfile);
        if (strstr(log, use_rlimit ? "File too large" : "No space left on device"))
            break;
    }
    cr_assert(strstr(log, "retrying with backoff"), "%s", log);
    free(log);

    /* Space returns: writing resumes and everything accepted gets written. */
    if (use_rlimit) {
        struct rlimit rl = {RLIM_INFINITY, RLIM_INFINITY};
        cr_assert_eq(prlimit(d, RLIMIT_FSIZE, &rl, NULL), 0, "%s", strerror(errno));
    } else {
        cr_assert_eq(mount("tmpfs", mnt, "tmpfs", MS_REMOUNT, "size=64m"), 0);
    }
    cr_assert_eq(tu_wait_cursor(bus, idx, bus_tail(), 20000), 0, "writing did not resume");
    stop_daemon(d);
    log = slurp_text(logfile);
    cr_assert(strstr(log, "resumed after"), "%s", log);
    free(log);
    assert_log_matches(ok, N);
    verify_ok(dir, NULL);
    munmap((void *)ok, N);
}

/* A 1 MiB prompt through a bus (body limit 1 MiB + 4 KiB, 65536 slots) into
 * the daemon: cat --body shows it whole, verify passes.  A kind whose policy
 * is hash stores each section's SHA-256 and length, not its text.  System
 * instructions (cbus_chat_model_start_system) are kept and shown; a
 * response id (cbus_llm_end_response) under a hash policy is its digest. */
Test(audit_daemon, bodies_kept_whole_or_hashed_by_kind_and_verified, .init = setup,
     .fini = teardown)
{
    struct cbus_create_opts co = {.capacity = 65536, .body_limit = (1u << 20) + 4096};
    cr_assert_eq(cbus_bus_create(bus, &co), 0);
    char ini[400];
    snprintf(ini, sizeof ini, "%s/bodies.ini", tmp);
    static const char conf[] = "[audit]\nname = audit\nstart = oldest\n"
                               "[redact]\nbody.tool_end = hash\nbody.llm_end = hash\nbody = keep\n";
    tu_spit(ini, (const uint8_t *)conf, sizeof conf - 1);

    static char prompt[1u << 20];
    for (size_t i = 0; i < sizeof prompt; i++)
        prompt[i] = (char)('a' + (i * 7 + i / 26) % 26);
    static const char secret[] = "the tool's result, which this log must not keep in clear";
    cr_assert_eq(cbus_producer_open(&tp, bus, NULL), 0);
    cbus_ctx ctx;
    cbus_ctx_init(&ctx);
    struct cbus_emit_args a = {.kind = CBUS_EV_LLM_START, .preview = prompt,
                               .preview_len = sizeof prompt};
    cr_assert_eq(cbus_emit(tp, &ctx, &a), 0);
    struct cbus_emit_args t = {.kind = CBUS_EV_TOOL_END, .name = "search", .preview = secret,
                               .preview_len = sizeof secret - 1};
    cr_assert_eq(cbus_emit(tp, &ctx, &t), 0);
    static const char sys[] = "[{\"type\":\"text\",\"content\":\"You are a geography tutor.\"}]";
    cr_assert_eq(cbus_chat_model_start_system(tp, &ctx, NULL, 0, sys, sizeof sys - 1, "Capital?", NULL), 0);
    cr_assert_eq(cbus_llm_end_response(tp, &ctx, NULL, "Rome.", NULL, 0, "chatcmpl-AbC123"), 0);

    pid_t d = tu_start_daemon(bus, ini, dir, logfile);
    int idx = tu_wait_consumer(bus, "audit", 20000);
    cr_assert_geq(idx, 0, "daemon did not attach");
    cr_assert_eq(tu_wait_cursor(bus, idx, bus_tail(), 20000), 0, "not all durable");
    stop_daemon(d);
    verify_ok(dir, "4 records");

    size_t cap = 4u << 20;
    char *out = malloc(cap);
    char *argv[] = {(char *)CBUS_AUDIT_BIN, (char *)"cat", (char *)"--body", dir, NULL};
    cr_assert_eq(tu_run(argv, out, cap), 0, "%.500s", out);
    char *needle = malloc(sizeof prompt + 16);
    int k = snprintf(needle, 16, "\"text\":\"");
    memcpy(needle + k, prompt, sizeof prompt);
    memcpy(needle + k + sizeof prompt, "\"", 2);
    cr_assert(strstr(out, needle), "the 1 MiB prompt is not whole in cat --body");
    free(needle);

    struct audit_chain ch;
    audit_chain_init(&ch);
    uint8_t dg[AUDIT_HASH_LEN];
    audit_sha256(&ch, "", 0, secret, sizeof secret - 1, dg);
    audit_chain_free(&ch);
    char hex[2 * AUDIT_HASH_LEN + 1], want[200];
    audit_hex(hex, dg, sizeof dg);
    snprintf(want, sizeof want, "\"body\":{\"redacted\":\"hash\",\"text_sha256\":\"%s\","
                                "\"text_len\":%zu}", hex, sizeof secret - 1);
    cr_assert(strstr(out, want), "no %s in\n%.300s", want, strstr(out, "tool_end"));
    cr_assert(strstr(out, "\"body\":{\"system\":\"[{\\\"type\\\":\\\"text\\\",\\\"content\\\":"
                          "\\\"You are a geography tutor.\\\"}]\"}"),
              "%.300s", strstr(out, "chat_model_start"));
    audit_chain_init(&ch);
    audit_sha256(&ch, "", 0, "chatcmpl-AbC123", 15, dg);
    audit_chain_free(&ch);
    audit_hex(hex, dg, sizeof dg);
    snprintf(want, sizeof want, "\"body\":{\"redacted\":\"hash\",\"response_id_sha256\":\"%s\","
                                "\"response_id_len\":15}", hex);
    cr_assert(strstr(out, want), "no %s in\n%.300s", want, strstr(out, "llm_end"));
    /* Without --body the events carry no body object. */
    cr_assert_eq(tu_run((char *[]){(char *)CBUS_AUDIT_BIN, (char *)"cat", dir, NULL}, out, cap),
                 0);
    cr_assert_null(strstr(out, "\"body\":"));
    free(out);

    /* The hashed text is nowhere in the log; the kept prompt is. */
    char **paths;
    size_t n = tu_log_files(dir, &paths);
    int found_prompt = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len;
        uint8_t *b = tu_slurp(paths[i], &len);
        cr_assert_null(memmem(b, len, secret, sizeof secret - 1), "%s keeps the tool text",
                       paths[i]);
        cr_assert_null(memmem(b, len, "chatcmpl-AbC123", 15), "%s keeps the hashed id", paths[i]);
        found_prompt |= memmem(b, len, prompt, sizeof prompt) != NULL;
        free(b);
    }
    tu_free_paths(paths, n);
    cr_assert(found_prompt);
}

Test(audit_daemon, bad_config_exits_2_naming_file_line_and_key, .init = setup, .fini = teardown)
{
    char ini[400], out[2048];
    snprintf(ini, sizeof ini, "%s/bad.ini", tmp);
    static const char bad[] = "[audit]\nbus = demo\n[io]\nqueue_depth = 4\n";
    tu_spit(ini, (const uint8_t *)bad, sizeof bad - 1);
    char *argv[] = {(char *)CBUS_AUDIT_BIN, (char *)"--config", ini, NULL};
    cr_assert_eq(tu_run(argv, out, sizeof out), 2, "%s", out);
    cr_assert(strstr(out, "bad.ini:4: [io] queue_depth: 4 is out of range [8, 1024]"), "%s", out);

    static const char unknown[] = "[redact]\npreview = scramble\n";
    tu_spit(ini, (const uint8_t *)unknown, sizeof unknown - 1);
    cr_assert_eq(tu_run(argv, out, sizeof out), 2, "%s", out);
    cr_assert(strstr(out, "bad.ini:2: [redact] preview:"), "%s", out);

    static const char badkind[] = "[redact]\nbody = keep\nbody.llm_begin = hash\n";
    tu_spit(ini, (const uint8_t *)badkind, sizeof badkind - 1);
    cr_assert_eq(tu_run(argv, out, sizeof out), 2, "%s", out);
    cr_assert(strstr(out, "bad.ini:3: [redact] body.llm_begin: unknown kind 'llm_begin'"), "%s",
              out);
    static const char badpolicy[] = "[redact]\nbody.llm_start = scramble\n";
    tu_spit(ini, (const uint8_t *)badpolicy, sizeof badpolicy - 1);
    cr_assert_eq(tu_run(argv, out, sizeof out), 2, "%s", out);
    cr_assert(strstr(out, "bad.ini:2: [redact] body.llm_start:"), "%s", out);

    /* A second daemon on the same directory (another consumer name) refuses. */
    test_bus_create(bus, 0);
    pid_t d = tu_start_daemon(bus, CBUS_AUDIT_INI, dir, logfile);
    cr_assert_geq(tu_wait_consumer(bus, "audit", 20000), 0);
    static const char second[] = "[audit]\nname = audit2\n";
    tu_spit(ini, (const uint8_t *)second, sizeof second - 1);
    char *two[] = {(char *)CBUS_AUDIT_BIN, (char *)"--config", ini, (char *)"--bus", bus,
                   (char *)"--dir", dir, NULL};
    cr_assert_eq(tu_run(two, out, sizeof out), 1, "%s", out);
    cr_assert(strstr(out, "another cbus-audit is writing this directory"), "%s", out);
    stop_daemon(d);

    static const char nobus[] = "[audit]\nname = a\n";
    tu_spit(ini, (const uint8_t *)nobus, sizeof nobus - 1);
    cr_assert_eq(tu_run(argv, out, sizeof out), 2, "%s", out);
    cr_assert(strstr(out, "no bus"), "%s", out);

    char *nosuch[] = {(char *)CBUS_AUDIT_BIN, (char *)"--bus", (char *)"no_such_bus_x",
                      (char *)"--dir", dir, NULL};
    cr_assert_eq(tu_run(nosuch, out, sizeof out), 1, "%s", out);
    cr_assert(strstr(out, "cannot attach to bus no_such_bus_x"), "%s", out);
}

/* Item 27: a test that fails after starting a daemon must not leave it
 * running (it would hold ctest's output pipe until the timeout).  The
 * helper below fails on purpose, but only when run by the test after it. */
Test(audit_daemon, helper_fails_after_starting_a_daemon, .init = setup, .fini = teardown)
{
    const char *pidfile = getenv("CBUS_AUDIT_TEST_PIDFILE");
    if (!pidfile)
        return; /* a no-op in a normal run */
    test_bus_create(bus, 0);
    pid_t d = tu_start_daemon(bus, CBUS_AUDIT_INI, dir, logfile);
    cr_assert_geq(tu_wait_consumer(bus, "audit", 20000), 0);
    char line[32];
    int n = snprintf(line, sizeof line, "%d\n", (int)d);
    tu_spit(pidfile, (const uint8_t *)line, (size_t)n);
    cr_assert_fail("failing on purpose with daemon %d running", (int)d);
}

Test(audit_daemon, a_failed_test_leaves_no_daemon_running, .init = setup, .fini = teardown)
{
    char pidfile[400];
    snprintf(pidfile, sizeof pidfile, "%s/daemon.pid", tmp);
    pid_t t = fork();
    if (t == 0) {
        tu_child_dies_with_parent();
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(null, 2);
        setenv("CBUS_AUDIT_TEST_PIDFILE", pidfile, 1);
        unsetenv("BXFI_MAP"); /* else the new process takes itself for a Criterion worker */
        execl("/proc/self/exe", "audit_daemon", "--filter=audit_daemon/helper_fails_after_*",
              (char *)NULL);
        _exit(127);
    }
    tu_track(t);
    int st = tu_wait(t, 60000);
    cr_assert(st >= 0 && WIFEXITED(st), "the failing run did not finish (%d)", st);
    cr_assert_neq(WEXITSTATUS(st), 0, "the helper test was meant to fail");
    size_t len;
    uint8_t *b = tu_slurp(pidfile, &len);
    cr_assert_not_null(b, "the helper never started its daemon");
    pid_t d = (pid_t)strtol((const char *)b, NULL, 10);
    free(b);
    cr_assert_gt(d, 0);
    /* The helper's .fini SIGKILLed and reaped it: no such process now.
     * (Its pid is not ours to reap; a zombie would mean it was not reaped.) */
    cr_assert(kill(d, 0) < 0 && errno == ESRCH, "daemon %d still exists after the failed test",
              (int)d);
}

/* Rotations and retention whose directory fsyncs outlast the bus's stall
 * timeout (2.5 s against 2 s) (a loaded disk, made by CBUS_TEST_SLOW_FSYNC_MS:
 * files.h) while the producer waits on the full ring behind the daemon:
 * the writer brackets them as the loop's slow sections (writer_slow), the
 * beat thread heartbeats through them, so cbus-audit is never untethered
 * and every event the producer got in is a durable record.  Without the
 * slow section the first new file gets it cut loose. */
static const char slow_ini[] =
    "[audit]\nname = audit\n"
    "[io]\nbatch_events = 256\nbatch_bytes = 64k\n"
    "[rotate]\nmax_bytes = 64k\nretain_files = 2\n";

Test(audit_daemon, slow_rotation_fsync_keeps_the_consumer_tethered, .init = setup,
     .fini = teardown, .timeout = 240)
{
    char ini[400];
    snprintf(ini, sizeof ini, "%s/slow.ini", tmp);
    tu_spit(ini, (const uint8_t *)slow_ini, sizeof slow_ini - 1);
    /* The default 2 s: beats every 500 ms (1 s was missed beside
     * stress-ng, as history's twin test was) */
    struct cbus_create_opts bo = {.capacity = 1024, .stall_timeout_ns = 2000000000u};
    cbus_bus_destroy(bus);
    cr_assert_eq(cbus_bus_create(bus, &bo), 0);
    cr_assert_eq(setenv("CBUS_TEST_SLOW_FSYNC_MS", "2500", 1), 0);
    pid_t d = tu_start_daemon(bus, ini, dir, logfile);
    unsetenv("CBUS_TEST_SLOW_FSYNC_MS");
    int idx = tu_wait_consumer(bus, "audit", 20000);
    cr_assert_geq(idx, 0);
    wait_started(1);
    cr_assert_eq(cbus_producer_open(&tp, bus, NULL), 0);
    cbus_bus *b = cbus_producer_bus(tp);
    struct cbus_consumer_entry *ce = cbus_bus_consumer_entry(b, (unsigned)idx);
    cbus_ctx ctx;
    cbus_ctx_init(&ctx);
    long sent = 0, refused = 0;
    /* On until two files were opened after the first and retention has
     * removed one, each with the ring full behind it (a bound, not a
     * measurement: 150 s). */
    uint64_t end = test_now_ms() + 150000;
    for (unsigned i = 0; test_now_ms() < end; i++) {
        struct cbus_retry_info ti = {.attempt = i};
        struct cbus_emit_args a = {.kind = CBUS_EV_RETRY, .preview = "slow disk",
                                   .preview_len = 9, .payload = &ti, .payload_len = sizeof ti};
        if (cbus_emit(tp, &ctx, &a) == 0)
            sent++;
        else
            refused++;
        cr_assert(atomic_load(&ce->flags) & CBUS_CFLAG_TETHERED,
                  "untethered after %ld events sent, %ld refused\n%s", sent, refused,
                  slurp_text(logfile));
        if (i % 512 == 511 && refused && log_count("info: writing ") >= 3 &&
            log_count("retention: removed") >= 1)
            break;
    }
    cr_assert_geq(log_count("info: writing "), 3, "no rotations: nothing was tested\n%s",
                  slurp_text(logfile));
    cr_assert_geq(log_count("retention: removed"), 1, "%s", slurp_text(logfile));
    cr_assert_gt(refused, 0, "the ring never filled behind a rotation: nothing was tested");
    cr_assert_eq(tu_wait_cursor(bus, idx, cbus_bus_tail(b), 60000), 0, "not all durable");
    cr_assert_eq(atomic_load(&ce->untethered_count), 0, "%s", slurp_text(logfile));
    cbus_producer_close(tp);
    tp = NULL;
    stop_daemon(d);
    char sp[400], want[64];
    snprintf(sp, sizeof sp, "%s/status.json", dir);
    snprintf(want, sizeof want, "\"durable_records\":%ld,", sent);
    char *st = slurp_text(sp);
    cr_assert(strstr(st, want), "%ld events sent; status: %s", sent, st);
    free(st);
    verify_ok(dir, NULL); /* what retention left still chains */
}
