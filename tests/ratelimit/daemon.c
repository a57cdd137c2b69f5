/* The daemon as users run it: a real bus, a real cbus-ratelimit process, a
 * producer asking cbus_admit(); SIGTERM, SIGKILL and bad configurations. */
#include <criterion/criterion.h>

#include <cbus/admit.h>
#include <cbus/bus.h>
#include <cbus/producer.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support.h"

#define MS UINT64_C(1000000)
#define STALE_MS 300

static char bus[64];
static char dir[256];
static char cfg_path[512], status_path[512], log_path[512];
static pid_t daemon_pid; /* the daemon this test started: teardown kills and reaps it */
static pid_t parent_pid;

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

static char *read_text(const char *path)
{
    static char buf[65536];
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void setup(void)
{
    test_bus_name(bus, sizeof bus);
    struct cbus_create_opts o = {.capacity = 1024, .admit_stale_ns = STALE_MS * MS};
    cbus_bus_destroy(bus);
    cr_assert_eq(cbus_bus_create(bus, &o), 0);
    snprintf(dir, sizeof dir, "/tmp/cbus-rl-test-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(cfg_path, sizeof cfg_path, "%s/rl.ini", dir);
    snprintf(status_path, sizeof status_path, "%s/status.json", dir);
    snprintf(log_path, sizeof log_path, "%s/daemon.log", dir);
    daemon_pid = 0;
    parent_pid = getpid();
}

static void teardown(void)
{
    if (daemon_pid > 0) {
        kill(daemon_pid, SIGKILL);
        waitpid(daemon_pid, NULL, 0);
    }
    cbus_bus_destroy(bus);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

/* Starts the daemon with stderr to log_path and records it in daemon_pid
 * (one daemon at a time), so teardown kills it on every path; if the test
 * process itself dies (a crash skips teardown), PDEATHSIG kills the daemon,
 * so no daemon outlives its test to hold ctest's pipe. */
static pid_t spawn(const char *a1, const char *a2)
{
    cr_assert_eq(daemon_pid, 0, "a daemon is already running");
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent_pid)
            _exit(127); /* the test died before prctl */
        int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
            dup2(fd, 1);
        }
        execl(RL_DAEMON_PATH, "cbus-ratelimit", "--bus", bus, "--config", cfg_path,
              "--status-file", status_path, a1, a2, (char *)NULL);
        _exit(127);
    }
    daemon_pid = pid;
    return pid;
}

/* Waits for the daemon to exit (test_wait_pid kills it past the deadline). */
static int wait_daemon(unsigned timeout_ms)
{
    int status = test_wait_pid(daemon_pid, timeout_ms);
    daemon_pid = 0;
    return status;
}

static cbus_bus *wait_writer(void)
{
    cbus_bus *b;
    cr_assert_eq(cbus_bus_open(&b, bus, 0), 0);
    uint64_t end = test_now_ms() + 5000;
    for (;;) {
        for (unsigned i = 0; i < CBUS_ADMIT_MAX_WRITERS; i++) {
            const struct cbus_admit_writer *w = cbus_admit_writer_at(b, i);
            if (atomic_load(&w->in_use) && !strncmp(w->name, "ratelimit", sizeof w->name))
                return b;
        }
        cr_assert_lt(test_now_ms(), end, "daemon never registered; log:\n%s", read_text(log_path));
        test_sleep_ms(5);
    }
}

static const char *rules = "[ratelimit]\nstatus_interval = 50ms\n[rules]\n"
                           "rule = user=* rpm=5\n";

/* Sends n requests for user and waits until cbus_admit() says throttled. */
static uint64_t throttle_user(cbus_producer *p, cbus_ctx *ctx, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        cr_assert_eq(cbus_llm_start(p, ctx, "hello", NULL), 0);
        cr_assert_eq(cbus_llm_end(p, ctx, NULL, "hi"), 0);
    }
    /* The bound: the limiter decides after reading the events and the
     * verdict is one shared-memory store away; 3 s covers a loaded CI box. */
    uint64_t end = test_now_ms() + 3000, retry = 0;
    int v;
    while ((v = cbus_admit(p, ctx, &retry)) != CBUS_THROTTLED) {
        cr_assert_eq(v, CBUS_ALLOW);
        cr_assert_lt(test_now_ms(), end, "no verdict within 3 s; log:\n%s", read_text(log_path));
        test_sleep_ms(1);
    }
    return retry;
}

Test(ratelimit_daemon, producer_sees_the_verdict_and_sigterm_clears_it, .init = setup,
     .fini = teardown)
{
    write_file(cfg_path, rules);
    spawn(NULL, NULL);
    cbus_bus *b = wait_writer();
    cbus_producer *p;
    cr_assert_eq(cbus_producer_open_bus(&p, b, NULL), 0);
    cbus_ctx alice, bob;
    cbus_ctx_init(&alice);
    cbus_ctx_set_user(&alice, "alice");
    cbus_ctx_init(&bob);
    cbus_ctx_set_user(&bob, "bob");
    uint64_t retry = throttle_user(p, &alice, 5);
    /* rpm=5: one request every 12 s once the burst of 5 is spent */
    cr_assert(retry > 0 && retry <= 12000 * MS, "retry %llu", (unsigned long long)retry);
    cr_assert_eq(cbus_admit(p, &bob, NULL), CBUS_ALLOW);
    cr_assert_eq(cbus_admit_wait(p, &alice, 20 * MS), -ETIMEDOUT);

    /* The status file and command show alice's key. */
    uint64_t end = test_now_ms() + 3000;
    const char *st;
    while (!(st = read_text(status_path)) || !strstr(st, "user=alice")) {
        cr_assert_lt(test_now_ms(), end, "status never showed alice");
        test_sleep_ms(10);
    }
    cr_assert(strstr(st, "\"state\":\"throttled\""), "%s", st);
    char cmd[2048], out[512];
    snprintf(out, sizeof out, "%s/status.txt", dir);
    snprintf(cmd, sizeof cmd, "%s status --status-file %s --bus %s > %s", RL_DAEMON_PATH,
             status_path, bus, out);
    cr_assert_eq(system(cmd), 0);
    const char *txt = read_text(out);
    cr_assert(strstr(txt, "user=alice") && strstr(txt, "throttled"), "%s", txt);
    cr_assert(strstr(txt, "alice") && strstr(txt, "ratelimit"), "%s", txt);

    /* SIGTERM: exit 0, verdicts withdrawn. */
    kill(daemon_pid, SIGTERM);
    int status = wait_daemon(5000);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d; log:\n%s", status,
              read_text(log_path));
    cr_assert_eq(cbus_admit(p, &alice, NULL), CBUS_ALLOW);
    const char *log = read_text(log_path);
    cr_assert(strstr(log, "started") && strstr(log, "stopped"), "%s", log);
    cbus_producer_close(p);
    cbus_bus_close(b);
}

Test(ratelimit_daemon, sigkill_fails_open_after_staleness_or_closed_when_asked, .init = setup,
     .fini = teardown)
{
    write_file(cfg_path, rules);
    spawn(NULL, NULL);
    cbus_bus *b = wait_writer();
    cbus_producer *p, *closed;
    cr_assert_eq(cbus_producer_open_bus(&p, b, NULL), 0);
    struct cbus_producer_opts co = {.name = "closed", .flags = CBUS_PRODUCER_ADMIT_FAIL_CLOSED};
    cr_assert_eq(cbus_producer_open_bus(&closed, b, &co), 0);
    cbus_ctx alice, bob;
    cbus_ctx_init(&alice);
    cbus_ctx_set_user(&alice, "alice");
    cbus_ctx_init(&bob);
    cbus_ctx_set_user(&bob, "bob");
    throttle_user(p, &alice, 5);
    cr_assert_eq(cbus_admit(closed, &bob, NULL), CBUS_ALLOW);

    kill(daemon_pid, SIGKILL);
    wait_daemon(5000);
    /* The dead writer's last heartbeat, frozen now. */
    uint64_t hb = 0;
    for (unsigned i = 0; i < CBUS_ADMIT_MAX_WRITERS; i++) {
        const struct cbus_admit_writer *w = cbus_admit_writer_at(b, i);
        if (atomic_load(&w->in_use) && !strncmp(w->name, "ratelimit", sizeof w->name))
            hb = atomic_load(&w->heartbeat_ns);
    }
    cr_assert_neq(hb, 0, "the dead limiter's writer entry is gone");
    /* The verdict outlives its writer until the heartbeat is stale... */
    uint64_t end = test_now_ms() + 5000;
    while (cbus_admit(p, &alice, NULL) == CBUS_THROTTLED) {
        cr_assert_lt(test_now_ms(), end, "still throttled 5 s after the limiter died");
        test_sleep_ms(5);
    }
    /* ...and not before: measured from the heartbeat itself, not from the
     * kill (a descheduled daemon may have heartbeat long before we killed
     * it), so no scheduling delay can make this fail.  The 10 % allows for
     * the bus clock and cbus_now_ns() being calibrated separately. */
    uint64_t now = cbus_now_ns();
    cr_assert_geq(now - hb, STALE_MS * MS * 9 / 10, "fail-open after only %llu ns",
                  (unsigned long long)(now - hb));
    cr_assert_eq(cbus_admit(p, &alice, NULL), CBUS_ALLOW);
    /* A fail-closed producer refuses everyone once the writer is stale. */
    cr_assert_eq(cbus_admit(closed, &alice, NULL), CBUS_ADMIT_STALE);
    cr_assert_eq(cbus_admit(closed, &bob, NULL), CBUS_ADMIT_STALE);

    /* A restarted limiter takes its writer slot over and serves again. */
    spawn(NULL, NULL);
    cbus_ctx carol;
    cbus_ctx_init(&carol);
    cbus_ctx_set_user(&carol, "carol");
    end = test_now_ms() + 5000;
    while (cbus_admit(closed, &carol, NULL) == CBUS_ADMIT_STALE) {
        cr_assert_lt(test_now_ms(), end, "restarted limiter never heartbeat; log:\n%s",
                     read_text(log_path));
        test_sleep_ms(5);
    }
    /* It took over the dead writer's slot, so alice's verdict is live again,
     * and it replayed the ring from its oldest event: its own status shows
     * alice's key rebuilt from the events sent before the restart. */
    cr_assert_eq(cbus_admit(p, &alice, NULL), CBUS_THROTTLED);
    char pidtag[64];
    snprintf(pidtag, sizeof pidtag, "\"pid\":%d,", (int)daemon_pid);
    const char *st;
    end = test_now_ms() + 3000;
    while (!(st = read_text(status_path)) || !strstr(st, pidtag) || !strstr(st, "user=alice")) {
        cr_assert_lt(test_now_ms(), end, "restarted limiter did not rebuild alice's key: %s", st);
        test_sleep_ms(10);
    }
    cr_assert(strstr(st, "\"requests\":5,"), "%s", st);
    throttle_user(p, &carol, 5);
    cbus_producer_close(closed);
    cbus_producer_close(p);
    cbus_bus_close(b);
}

Test(ratelimit_daemon, bad_config_exits_2_naming_the_line, .init = setup, .fini = teardown)
{
    write_file(cfg_path, "[ratelimit]\nstatus_top = 5\n\n[rules]\nrule = user=* rpm=60\n"
                         "rule = model=* rpm=sixty\n");
    spawn(NULL, NULL);
    int status = wait_daemon(5000);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 2, "status %d", status);
    const char *log = read_text(log_path);
    cr_assert(strstr(log, "rl.ini:6: [rules] rule: rpm: 'sixty' is not a whole number"), "%s", log);

    write_file(cfg_path, rules);
    spawn("--frobnicate", NULL);
    status = wait_daemon(5000);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 2, "status %d", status);

    /* the shipped default configuration is accepted */
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s --check --config %s > /dev/null", RL_DAEMON_PATH,
             RL_DEFAULT_CONFIG);
    cr_assert_eq(system(cmd), 0);
}

/* Without --config the daemon reads the installed config
 * (${sysconfdir}/cbus/ratelimit.ini, a compile definition); when it is
 * missing, the error names that path and the exit code is 2. */
Test(ratelimit_daemon, no_config_reads_the_installed_one, .init = setup, .fini = teardown)
{
    if (access(RL_INSTALLED_CONFIG, F_OK) == 0)
        cbus_test_skip_or_fail("%s exists on this machine: not the missing case", RL_INSTALLED_CONFIG);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s --bus %s > %s 2>&1", RL_DAEMON_PATH, bus, log_path);
    int status = system(cmd);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 2, "status %d", status);
    const char *log = read_text(log_path);
    cr_assert(log && strstr(log, RL_INSTALLED_CONFIG ": No such file"), "%s", log ? log : "");
}

/* Issue 12 item 3: a hostile producer's user name reaches `status` twice,
 * through the status file's JSON (which decodes \u001b back to ESC) and
 * through the admission table in shared memory; neither may put a control
 * byte, a C1 control or invalid UTF-8 on the operator's terminal. */
Test(ratelimit_daemon, status_escapes_hostile_producer_strings, .init = setup, .fini = teardown)
{
    write_file(cfg_path, rules);
    spawn(NULL, NULL);
    cbus_bus *b = wait_writer();
    cbus_producer *p;
    cr_assert_eq(cbus_producer_open_bus(&p, b, NULL), 0);
    cbus_ctx evil;
    cbus_ctx_init(&evil);
    cbus_ctx_set_user(&evil, "ev\x1b]0;pwned\x07il\xc2\x9b" "2J\xff");
    throttle_user(p, &evil, 5);
    uint64_t end = test_now_ms() + 3000;
    const char *st;
    while (!(st = read_text(status_path)) || !strstr(st, "pwned")) {
        cr_assert_lt(test_now_ms(), end, "status never showed the key");
        test_sleep_ms(10);
    }
    char cmd[2048], out[512];
    snprintf(out, sizeof out, "%s/status.txt", dir);
    snprintf(cmd, sizeof cmd, "%s status --status-file %s --bus %s > %s", RL_DAEMON_PATH,
             status_path, bus, out);
    cr_assert_eq(system(cmd), 0);
    const char *txt = read_text(out);
    for (const unsigned char *c = (const unsigned char *)txt; *c; c++) {
        cr_assert(*c >= 0x20 || *c == '\n', "control byte 0x%02x in:\n%s", *c, txt);
        cr_assert(*c != 0x7f && *c != 0x9b && *c != 0xff, "byte 0x%02x in:\n%s", *c, txt);
        if (*c == 0xc2)
            cr_assert(c[1] < 0x80 || c[1] > 0x9f, "C1 control in:\n%s", txt);
    }
    /* Both views show the key, escaped: the file's copy (0xff became
     * U+FFFD when it was written as JSON) and the table's raw bytes. */
    cr_assert(strstr(txt, "user=ev\\x1b]0;pwned\\x07il\\u009b2J\xef\xbf\xbd"), "%s", txt);
    cr_assert(strstr(txt, " ev\\x1b]0;pwned\\x07il\\u009b2J\\xff "), "%s", txt);
    cbus_producer_close(p);
    cbus_bus_close(b);
}

/* Issue 12 item 16: the daemon replaces its status file every second,
 * often as root; a directory another user owns or can write to is refused
 * at start with one line naming it, and nothing is written there. */
Test(ratelimit_daemon, status_dir_not_private_is_refused, .init = setup, .fini = teardown)
{
    write_file(cfg_path, rules);
    char open_dir[300];
    snprintf(open_dir, sizeof open_dir, "%s/open", dir);
    cr_assert_eq(mkdir(open_dir, 0700), 0);
    cr_assert_eq(chmod(open_dir, 0777), 0);
    snprintf(status_path, sizeof status_path, "%s/status.json", open_dir);
    spawn(NULL, NULL);
    int status = wait_daemon(5000);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 1, "status %d; log:\n%s", status,
              read_text(log_path));
    const char *log = read_text(log_path);
    cr_assert(strstr(log, open_dir) && strstr(log, "0777"), "%s", log);
    cr_assert_eq(access(status_path, F_OK), -1, "a status file was written");

    if (geteuid() != 0)
        return; /* chown needs root; events_files covers the check itself */
    cr_assert_eq(chmod(open_dir, 0700), 0);
    cr_assert_eq(chown(open_dir, 65534, 65534), 0);
    spawn(NULL, NULL);
    status = wait_daemon(5000);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 1, "status %d", status);
    log = read_text(log_path);
    cr_assert(strstr(log, open_dir) && strstr(log, "owned by uid 65534"), "%s", log);
    cr_assert_eq(access(status_path, F_OK), -1, "a status file was written");
}

/* Item 27: a test process that dies after starting its daemon (a crash
 * skips .fini) takes the daemon with it, so nothing is left holding ctest's
 * pipe.  The "test" here is a child that spawns the daemon and aborts. */
Test(ratelimit_daemon, crashed_test_leaves_no_daemon_running, .init = setup, .fini = teardown)
{
    write_file(cfg_path, rules);
    int pfd[2];
    cr_assert_eq(pipe(pfd), 0);
    pid_t t = fork();
    cr_assert_geq(t, 0);
    if (t == 0) {
        close(pfd[0]);
        parent_pid = getpid();
        pid_t d = spawn(NULL, NULL);
        if (write(pfd[1], &d, sizeof d) != (ssize_t)sizeof d)
            _exit(3);
        wait_writer(); /* the daemon is up and serving */
        abort();
    }
    close(pfd[1]);
    pid_t d = 0;
    cr_assert_eq(read(pfd[0], &d, sizeof d), (ssize_t)sizeof d);
    close(pfd[0]);
    int status;
    cr_assert_eq(waitpid(t, &status, 0), t);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT, "test child status %d", status);
    /* Gone (or a zombie waiting for init) within a generous bound; only
     * then is this pid's state asserted. */
    uint64_t end = test_now_ms() + 10000;
    for (;;) {
        char p[64], st[256] = "";
        snprintf(p, sizeof p, "/proc/%d/stat", (int)d);
        FILE *f = fopen(p, "r");
        if (!f)
            break;
        size_t n = fread(st, 1, sizeof st - 1, f);
        fclose(f);
        st[n] = '\0';
        const char *rp = strrchr(st, ')');
        if (rp && rp[1] == ' ' && (rp[2] == 'Z' || rp[2] == 'X'))
            break;
        if (test_now_ms() > end) {
            kill(d, SIGKILL); /* do not leak it ourselves */
            cr_assert_fail("daemon %d outlived its crashed test: %s", (int)d, st);
        }
        test_sleep_ms(10);
    }
}

/* Issue 14: two 200-byte user names that differ in the last byte (their
 * shown 39-byte prefixes are equal) through a real bus: the daemon counts
 * them as two keys, one throttled and the other not. */
Test(ratelimit_daemon, two_long_users_sharing_a_prefix_are_limited_apart, .init = setup,
     .fini = teardown)
{
    write_file(cfg_path, rules);
    spawn(NULL, NULL);
    cbus_bus *b = wait_writer();
    cbus_producer *p;
    cr_assert_eq(cbus_producer_open_bus(&p, b, NULL), 0);
    char na[201], nb[201];
    memset(na, 'u', 200);
    na[200] = '\0';
    memcpy(na, "user:default/", 13);
    memcpy(nb, na, sizeof na);
    na[199] = 'a';
    nb[199] = 'b';
    cbus_ctx a, c;
    cbus_ctx_init(&a);
    cbus_ctx_set_user(&a, na);
    cbus_ctx_init(&c);
    cbus_ctx_set_user(&c, nb);
    /* a sends 6 (over rpm=5), b one */
    for (unsigned i = 0; i < 6; i++)
        cr_assert_eq(cbus_llm_start(p, &a, "hello", NULL), 0);
    cr_assert_eq(cbus_llm_start(p, &c, "hello", NULL), 0);
    char ka[160], kb[160];
    snprintf(ka, sizeof ka, "\"key\":\"user=%.39s\u2026#%08x\",\"rule_line\":4,\"state\":\"throttled\"",
             na, (unsigned)(cbus_key_hash(na, 200) >> 32));
    snprintf(kb, sizeof kb, "\"key\":\"user=%.39s\u2026#%08x\",\"rule_line\":4,\"state\":\"ok\"", nb,
             (unsigned)(cbus_key_hash(nb, 200) >> 32));
    uint64_t end = test_now_ms() + 60000;
    const char *st;
    while (!(st = read_text(status_path)) || !strstr(st, ka) || !strstr(st, kb)) {
        cr_assert_lt(test_now_ms(), end, "status never showed both keys apart:\n%s\nwant %s\nand %s",
                     st ? st : "(none)", ka, kb);
        test_sleep_ms(10);
    }
    cr_assert(strstr(st, "\"keys\":2,"), "%s", st);
    /* ...and the producer sees a's throttle only: the admission table is
     * keyed by the whole value, not the 39 bytes the two share. */
    uint64_t retry = 0;
    while (cbus_admit(p, &a, &retry) != CBUS_THROTTLED) {
        cr_assert_lt(test_now_ms(), end, "a's throttle never reached the producer");
        test_sleep_ms(10);
    }
    cr_assert_gt(retry, 0);
    cr_assert_eq(cbus_admit(p, &c, NULL), CBUS_ALLOW, "b shares a's shown prefix only");
    cbus_producer_close(p);
    cbus_bus_close(b);
}
