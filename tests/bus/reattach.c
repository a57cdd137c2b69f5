/* The four daemons follow their bus (issue 12, items 9 and 10): the real
 * binaries, a real bus destroyed and re-created (or truncated) under them,
 * and events emitted into the new bus must reach them.  "Reached" is read
 * from the daemon's own consumer entry on the new segment (what its polls
 * publish), so the same check serves every daemon. */
#include <cbus/bus.h>
#include <cbus/consumer.h>
#include <cbus/producer.h>

#include <criterion/criterion.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support.h"

#define PRICES CBUS_SOURCE_DIR "/consumers/cost/model_prices_and_context_window.json"

static char bus[64];
static char dir[64];
static pid_t daemon_pid;

static void setup(void)
{
    test_bus_name(bus, sizeof bus);
    snprintf(dir, sizeof dir, "/tmp/bus_reattach_XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    daemon_pid = 0;
}

static void teardown(void)
{
    if (daemon_pid > 0) {
        kill(daemon_pid, SIGKILL);
        waitpid(daemon_pid, NULL, 0);
        daemon_pid = 0;
    }
    cbus_bus_destroy(bus);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cleanup of %s failed\n", dir);
}

TestSuite(bus_reattach, .init = setup, .fini = teardown, .timeout = 120);

struct daemon_kind {
    const char *bin;          /* under CBUS_BINARY_DIR */
    const char *consumer;     /* its consumer name on the bus */
    const char *config;       /* %s = dir */
};

static const struct daemon_kind COST = {
    "/consumers/cost/cbus-cost", "cost",
    "[prices]\nfile = " PRICES "\n[state]\ncheckpoint_interval = 50ms\nsnapshot_interval = 50ms\n"};
static const struct daemon_kind AUDIT = {
    "/consumers/audit/cbus-audit", "audit", "[audit]\nname = audit\n"};
static const struct daemon_kind RATELIMIT = {
    "/consumers/ratelimit/cbus-ratelimit", "ratelimit",
    "[ratelimit]\nname = ratelimit\nstatus_interval = 50ms\n[rules]\nrule = user=* rpm=100000\n"};
/* An endpoint nobody listens on: the exporter retries and keeps reading. */
static const struct daemon_kind EXPORT = {
    "/consumers/export/cbus-export", "exp",
    "[bus]\nconsumer_name = exp\nmode = lossy\nstart = oldest\n"
    "[export]\nendpoint = http://127.0.0.1:9/v1/traces\n[spool]\ndir =\n"};

static char log_path[128];

static void start_daemon(const struct daemon_kind *k)
{
    char cfg[128], state[128], bin[512];
    snprintf(cfg, sizeof cfg, "%s/d.ini", dir);
    snprintf(state, sizeof state, "%s/state", dir);
    snprintf(log_path, sizeof log_path, "%s/log", dir);
    snprintf(bin, sizeof bin, "%s%s", CBUS_BINARY_DIR, k->bin);
    FILE *f = fopen(cfg, "w");
    cr_assert_not_null(f);
    fputs(k->config, f);
    fclose(f);
    cr_assert_eq(access(bin, X_OK), 0, "%s not built", bin);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive a crashed test */
        int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(fd, 1);
        dup2(fd, 2);
        if (k == &COST)
            execl(bin, bin, "--bus", bus, "--config", cfg, "--state-dir", state, (char *)NULL);
        else if (k == &AUDIT)
            execl(bin, bin, "--bus", bus, "--config", cfg, "--dir", state, (char *)NULL);
        else if (k == &RATELIMIT)
            execl(bin, bin, "--bus", bus, "--config", cfg, "--status-file", state, (char *)NULL);
        else
            execl(bin, bin, "--bus", bus, "--config", cfg, (char *)NULL);
        _exit(127);
    }
    daemon_pid = pid;
}

static const char *log_text(void)
{
    static char buf[1 << 16];
    FILE *f = fopen(log_path, "r");
    if (!f)
        return "";
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

static void assert_daemon_alive(void)
{
    int st;
    pid_t r = waitpid(daemon_pid, &st, WNOHANG);
    if (r == daemon_pid) {
        daemon_pid = 0;
        cr_assert_fail("the daemon died (%s %d); its log:\n%s",
                       WIFSIGNALED(st) ? "signal" : "exit",
                       WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st), log_text());
    }
}

/* consumed by the live entry named cname on this bus handle, or -1. */
static long entry_consumed(cbus_bus *b, const char *cname)
{
    for (unsigned i = 0; i < CBUS_MAX_CONSUMERS; i++) {
        struct cbus_consumer_entry *e = cbus_bus_consumer_entry(b, i);
        if (atomic_load(&e->state) == CBUS_CSTATE_ACTIVE &&
            !strncmp(e->name, cname, sizeof e->name))
            return (long)atomic_load(&e->consumed);
    }
    return -1;
}

/* Waits (generous deadline, then asserts) until the daemon's entry on the
 * bus b has consumed at least n events. */
static void wait_consumed(cbus_bus *b, const char *cname, long n, const char *what)
{
    uint64_t t0 = test_now_ms();
    long got;
    while ((got = entry_consumed(b, cname)) < n) {
        assert_daemon_alive();
        if (test_now_ms() - t0 > 30000)
            break;
        test_sleep_ms(5);
    }
    cr_assert_geq(got, n, "%s: consumer '%s' consumed %ld of %ld; daemon log:\n%s", what, cname,
                  got, n, log_text());
}

static void emit_n(cbus_producer *p, int n)
{
    cbus_ctx ctx;
    cbus_ctx_init(&ctx);
    cbus_ctx_set_user(&ctx, "u1");
    cbus_ctx_set_model(&ctx, "gpt-4o");
    for (int i = 0; i < n; i++)
        cr_assert_eq(cbus_text(p, &ctx, "hello"), 0);
}

static void stop_daemon(void)
{
    kill(daemon_pid, SIGTERM);
    int st = test_wait_pid(daemon_pid, 30000);
    daemon_pid = 0;
    cr_assert(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
              "daemon did not stop cleanly (status %#x); log:\n%s", st, log_text());
}

/* The audit log still verifies across the move (one chain, a new file per
 * bus id) and holds every event: `cbus-audit cat` prints one line each. */
static void assert_audit_log_verifies(int events)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "'%s/consumers/audit/cbus-audit' verify -q '%s/state' >/dev/null 2>&1",
             CBUS_BINARY_DIR, dir);
    int st = system(cmd);
    cr_assert(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "verify failed (%#x)", st);
    snprintf(cmd, sizeof cmd, "'%s/consumers/audit/cbus-audit' cat '%s/state' 2>/dev/null | wc -l",
             CBUS_BINARY_DIR, dir);
    FILE *f = popen(cmd, "r");
    cr_assert_not_null(f);
    int lines = -1;
    cr_assert_eq(fscanf(f, "%d", &lines), 1);
    pclose(f);
    cr_assert_eq(lines, events, "cbus-audit cat shows %d records, expected %d", lines, events);
}

/* Destroyed, then (a moment later) re-created: the daemon first keeps
 * reading the unlinked segment, then moves to the new one. */
static void recreated_bus_is_followed(const struct daemon_kind *k)
{
    test_bus_create(bus, 1024);
    start_daemon(k);
    cbus_producer *old;
    cr_assert_eq(cbus_producer_open(&old, bus, NULL), 0);
    wait_consumed(cbus_producer_bus(old), k->consumer, 0, "attach");
    emit_n(old, 50);
    wait_consumed(cbus_producer_bus(old), k->consumer, 50, "old bus");

    cr_assert_eq(cbus_bus_destroy(bus), 0);
    /* Removed, nothing re-created: the old segment is still read. */
    emit_n(old, 10);
    wait_consumed(cbus_producer_bus(old), k->consumer, 60, "unlinked old bus");

    test_bus_create(bus, 1024);
    cbus_producer *p;
    cr_assert_eq(cbus_producer_open(&p, bus, NULL), 0);
    cr_assert_eq(cbus_producer_check(old), -EIDRM);
    emit_n(p, 100);
    wait_consumed(cbus_producer_bus(p), k->consumer, 100, "re-created bus");
    cr_assert(strstr(log_text(), "re-attached"), "no re-attach line in the log:\n%s", log_text());
    /* And it keeps reading there. */
    emit_n(p, 25);
    wait_consumed(cbus_producer_bus(p), k->consumer, 125, "re-created bus, later");
    stop_daemon();
    if (k == &AUDIT)
        assert_audit_log_verifies(185);
    cbus_producer_close(p);
    cbus_producer_close(old);
}

Test(bus_reattach, cost_follows_a_recreated_bus)
{
    recreated_bus_is_followed(&COST);
}

Test(bus_reattach, audit_follows_a_recreated_bus)
{
    recreated_bus_is_followed(&AUDIT);
}

Test(bus_reattach, ratelimit_follows_a_recreated_bus)
{
    recreated_bus_is_followed(&RATELIMIT);
}

Test(bus_reattach, export_follows_a_recreated_bus)
{
    recreated_bus_is_followed(&EXPORT);
}

/* Truncated under it: the daemon survives (SIGBUS guard), says so, waits,
 * and follows the bus once it is re-created. */
static void truncated_bus_is_survived(const struct daemon_kind *k)
{
    test_bus_create(bus, 1024);
    start_daemon(k);
    cbus_producer *old;
    cr_assert_eq(cbus_producer_open(&old, bus, NULL), 0);
    emit_n(old, 50);
    wait_consumed(cbus_producer_bus(old), k->consumer, 50, "before truncation");
    char path[96];
    snprintf(path, sizeof path, "/dev/shm/cbus.%s", bus);
    cr_assert_eq(truncate(path, 4096), 0);
    /* The daemon notices within its check interval and logs it. */
    uint64_t t0 = test_now_ms();
    while (!strstr(log_text(), "truncated under us") && test_now_ms() - t0 < 30000) {
        assert_daemon_alive();
        test_sleep_ms(5);
    }
    cr_assert(strstr(log_text(), "truncated under us"), "log:\n%s", log_text());
    assert_daemon_alive();

    cbus_bus_destroy(bus);
    test_bus_create(bus, 1024);
    cbus_producer *p;
    cr_assert_eq(cbus_producer_open(&p, bus, NULL), 0);
    emit_n(p, 100);
    wait_consumed(cbus_producer_bus(p), k->consumer, 100, "re-created after truncation");
    cr_assert(strstr(log_text(), "truncated and re-created"), "log:\n%s", log_text());
    stop_daemon();
    cbus_producer_close(p);
    cbus_producer_close(old);
}

Test(bus_reattach, cost_survives_truncation_and_follows)
{
    truncated_bus_is_survived(&COST);
}

Test(bus_reattach, audit_survives_truncation_and_follows)
{
    truncated_bus_is_survived(&AUDIT);
}

Test(bus_reattach, ratelimit_survives_truncation_and_follows)
{
    truncated_bus_is_survived(&RATELIMIT);
}

Test(bus_reattach, export_survives_truncation_and_follows)
{
    truncated_bus_is_survived(&EXPORT);
}
