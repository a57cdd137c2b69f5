/* The cbus-cost binary against a real bus: admission verdicts seen by a
 * producer, SIGKILL and restart without double counting, config errors. */
#include <criterion/criterion.h>

#include <cbus/admit.h>
#include <cbus/bus.h>
#include <cbus/producer.h>

#include <cjson/cJSON.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "money.h"
#include "support.h"

#define BIN CBUS_BINARY_DIR "/consumers/cost/cbus-cost"
#define PRICES CBUS_SOURCE_DIR "/consumers/cost/model_prices_and_context_window.json"

static char dir[64];
static char bus[64];
static int have_bus;

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/cost_daemon_XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    test_bus_name(bus, sizeof bus);
    have_bus = 0;
}

static void teardown(void)
{
    if (have_bus)
        cbus_bus_destroy(bus);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cleanup of %s failed\n", dir);
}

TestSuite(cost_daemon, .init = setup, .fini = teardown, .timeout = 60);

static void write_file(const char *name, const char *text)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

static char *read_path(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

/* Starts cbus-cost with stderr to DIR/log.N; returns its pid. */
static pid_t spawn(const char *config, int n)
{
    char cfg[128], log[128], state[128];
    snprintf(cfg, sizeof cfg, "%s/%s", dir, config);
    snprintf(log, sizeof log, "%s/log.%d", dir, n);
    snprintf(state, sizeof state, "%s/state", dir);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(fd, 2);
        execl(BIN, BIN, "--bus", bus, "--config", cfg, "--state-dir", state, (char *)NULL);
        _exit(127);
    }
    return pid;
}

static int exit_code(pid_t pid)
{
    int st = test_wait_pid(pid, 20000);
    cr_assert(st >= 0 && WIFEXITED(st), "status %d", st);
    return WEXITSTATUS(st);
}

static const char *log_text(int n)
{
    char p[128];
    snprintf(p, sizeof p, "%s/log.%d", dir, n);
    const char *t = read_path(p);
    return t ? t : "";
}

/* total.requests and total.cost_usd from the snapshot, or -1. */
static long snapshot_total(char *cost, size_t costlen)
{
    char p[128];
    snprintf(p, sizeof p, "%s/state/snapshot.json", dir);
    char *t = read_path(p);
    if (!t)
        return -1;
    cJSON *root = cJSON_Parse(t);
    if (!root)
        return -1;
    const cJSON *total = cJSON_GetObjectItem(root, "total");
    long n = (long)cJSON_GetObjectItem(total, "requests")->valuedouble;
    if (cost)
        snprintf(cost, costlen, "%s", cJSON_GetObjectItem(total, "cost_usd")->valuestring);
    cJSON_Delete(root);
    return n;
}

/* A top-level number of the snapshot, or -1. */
static double snapshot_num(const char *field)
{
    char p[128];
    snprintf(p, sizeof p, "%s/state/snapshot.json", dir);
    char *t = read_path(p);
    cJSON *root = t ? cJSON_Parse(t) : NULL;
    if (!root)
        return -1;
    const cJSON *v = cJSON_GetObjectItem(root, field);
    double d = cJSON_IsNumber(v) ? v->valuedouble : -1;
    cJSON_Delete(root);
    return d;
}

static int wait_requests(long want, unsigned ms)
{
    uint64_t end = test_now_ms() + ms;
    while (test_now_ms() < end) {
        if (snapshot_total(NULL, 0) == want)
            return 1;
        test_sleep_ms(20);
    }
    return 0;
}

static const char *BASE_CONFIG =
    "[prices]\nfile = " PRICES "\n"
    "[state]\ncheckpoint_interval = 50ms\nsnapshot_interval = 20ms\n"
    "[budget.user.*]\nlimit_usd = 0.01\nperiod = 1d\n";

Test(cost_daemon, bad_config_exits_2_naming_the_line)
{
    write_file("bad.ini", "[state]\ncheckpoint_interval = 2s\nsnapshot_interval = often\n");
    pid_t pid = spawn("bad.ini", 0);
    cr_assert_eq(exit_code(pid), 2);
    cr_assert(strstr(log_text(0), "bad.ini:3:"), "%s", log_text(0));
    cr_assert(strstr(log_text(0), "snapshot_interval"), "%s", log_text(0));
}

Test(cost_daemon, bad_price_file_exits_2_naming_the_field)
{
    write_file("p.json", "{\"gpt-4o\": {\"input_cost_per_token\": \"2.5e-6\"}}");
    char cfg[256];
    snprintf(cfg, sizeof cfg, "[prices]\nfile = %s/p.json\n", dir);
    write_file("c.ini", cfg);
    pid_t pid = spawn("c.ini", 0);
    cr_assert_eq(exit_code(pid), 2);
    cr_assert(strstr(log_text(0), "input_cost_per_token"), "%s", log_text(0));
    cr_assert(strstr(log_text(0), "gpt-4o"), "%s", log_text(0));
}

static void make_ctx(cbus_ctx *ctx, const char *user)
{
    cbus_ctx_init(ctx);
    cbus_ctx_set_provider(ctx, "openai");
    cbus_ctx_set_model(ctx, "gpt-4o");
    cbus_ctx_set_user(ctx, user);
}

Test(cost_daemon, budget_exceeded_verdict_reaches_the_producer)
{
    test_bus_create(bus, 0);
    have_bus = 1;
    write_file("c.ini", BASE_CONFIG);
    pid_t pid = spawn("c.ini", 0);
    cbus_producer *p;
    cr_assert_eq(cbus_producer_open(&p, bus, NULL), 0);
    cbus_ctx alice, bob;
    make_ctx(&alice, "alice");
    make_ctx(&bob, "bob");
    cr_assert_eq(cbus_admit(p, &alice, NULL), CBUS_ALLOW);
    /* 0.025 USD: over alice's 0.01 USD daily budget */
    struct cbus_usage u = {.input_tokens = 10000, .cache_read_tokens = 4000, .output_tokens = 500,
                           .usage_present = CBUS_USAGE_INPUT | CBUS_USAGE_OUTPUT |
                                            CBUS_USAGE_CACHE_READ};
    cr_assert_eq(cbus_llm_end(p, &alice, &u, NULL), 0);
    uint64_t end = test_now_ms() + 10000;
    int v;
    while ((v = cbus_admit(p, &alice, NULL)) != CBUS_BUDGET_EXCEEDED && test_now_ms() < end)
        test_sleep_ms(10);
    cr_assert_eq(v, CBUS_BUDGET_EXCEEDED, "log: %s", log_text(0));
    cr_assert_eq(cbus_admit(p, &bob, NULL), CBUS_ALLOW, "only alice is over budget");
    cr_assert_eq(cbus_admit_wait(p, &alice, 1000000000u), CBUS_BUDGET_EXCEEDED);
    cr_assert(strstr(log_text(0), "budget user alice: EXCEEDED"), "%s", log_text(0));

    /* The verdict survives a SIGKILL and restart (republished from the
     * checkpoint), and a clean stop releases it (fail open while down). */
    cr_assert(wait_requests(1, 5000));
    uint64_t ck_end = test_now_ms() + 10000;
    while (snapshot_num("checkpoint_cursor") < 1 && test_now_ms() < ck_end)
        test_sleep_ms(10);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    pid = spawn("c.ini", 1);
    /* Until the new daemon holds the "cost" writer slot, the old verdict is
     * merely not stale yet; after it, only a republished one counts. */
    uint64_t until = test_now_ms() + 10000;
    cbus_bus *b = cbus_producer_bus(p);
    int mine = 0;
    while (!mine && test_now_ms() < until) {
        for (unsigned w = 0; w < CBUS_ADMIT_MAX_WRITERS; w++) {
            const struct cbus_admit_writer *aw = cbus_admit_writer_at(b, w);
            if (aw && atomic_load(&aw->in_use) && aw->pid == (uint32_t)pid)
                mine = 1;
        }
        if (!mine)
            test_sleep_ms(10);
    }
    cr_assert(mine, "%s", log_text(1));
    until = test_now_ms() + 5000;
    while (!strstr(log_text(1), "started:") && test_now_ms() < until)
        test_sleep_ms(10);
    cr_assert_eq(cbus_admit(p, &alice, NULL), CBUS_BUDGET_EXCEEDED, "%s", log_text(1));
    kill(pid, SIGTERM);
    cr_assert_eq(exit_code(pid), 0, "%s", log_text(1));
    cr_assert_eq(cbus_admit(p, &alice, NULL), CBUS_ALLOW);
    cr_assert_eq(snapshot_total(NULL, 0), 1, "not counted twice after restart");
    cbus_producer_close(p);
}

/* Rates of gpt-4o in the real table, in pico-dollars per token. */
#define IN_RATE 2500000u
#define CR_RATE 1250000u
#define OUT_RATE 10000000u

Test(cost_daemon, sigkill_and_restart_counts_every_event_once)
{
    test_bus_create(bus, 0);
    have_bus = 1;
    write_file("c.ini", BASE_CONFIG);
    pid_t pid = spawn("c.ini", 0);
    cbus_producer *p;
    cr_assert_eq(cbus_producer_open(&p, bus, NULL), 0);
    enum { N = 4000 };
    cost_u128 expect = 0;
    cbus_ctx ctx[8];
    for (int i = 0; i < 8; i++) {
        char user[16];
        snprintf(user, sizeof user, "user%d", i);
        make_ctx(&ctx[i], user);
    }
    for (int i = 0; i < N; i++) {
        struct cbus_usage u = {.input_tokens = 1000u + (uint32_t)i,
                               .cache_read_tokens = (uint32_t)(i % 700),
                               .output_tokens = (uint32_t)(i % 300),
                               .usage_present = CBUS_USAGE_INPUT | CBUS_USAGE_OUTPUT |
                                                CBUS_USAGE_CACHE_READ};
        /* The independent sum: OpenTelemetry convention, cache inside input. */
        expect += (cost_u128)(u.input_tokens - u.cache_read_tokens) * IN_RATE +
                  (cost_u128)u.cache_read_tokens * CR_RATE + (cost_u128)u.output_tokens * OUT_RATE;
        cr_assert_eq(cbus_llm_end(p, &ctx[i % 8], &u, NULL), 0);
        if (i == N / 3) {
            /* let it read and checkpoint some, then kill it mid-stream */
            uint64_t end = test_now_ms() + 15000;
            while (snapshot_num("checkpoint_cursor") < N / 3 && test_now_ms() < end)
                test_sleep_ms(10);
        }
        if (i == N / 2) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
        }
        if (i % 500 == 0)
            test_sleep_ms(5);
    }
    pid = spawn("c.ini", 1);
    cr_assert(wait_requests(N, 15000), "log: %s", log_text(1));
    /* Kill once more after everything is checkpointed, restart, stop cleanly. */
    uint64_t ck_end = test_now_ms() + 10000;
    while (snapshot_num("checkpoint_cursor") < N && test_now_ms() < ck_end)
        test_sleep_ms(10);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    pid = spawn("c.ini", 2);
    uint64_t until = test_now_ms() + 10000;
    while (!strstr(log_text(2), "started:") && test_now_ms() < until)
        test_sleep_ms(10);
    kill(pid, SIGTERM);
    cr_assert_eq(exit_code(pid), 0, "%s", log_text(2));
    char cost[64], want[64];
    cr_assert_eq(snapshot_total(cost, sizeof cost), N);
    cost_pico_format_usd(want, sizeof want, expect);
    cr_assert_str_eq(cost, want);
    cr_assert(strstr(log_text(1), "from cursor") && strstr(log_text(1), "(checkpoint)"),
              "%s", log_text(1));

    /* The report subcommand prints the table from the snapshot. */
    char cmd[256];
    snprintf(cmd, sizeof cmd, "%s report --state-dir %s/state --no-refresh", BIN, dir);
    FILE *f = popen(cmd, "r");
    char out[8192];
    size_t n = fread(out, 1, sizeof out - 1, f);
    out[n] = '\0';
    cr_assert_eq(pclose(f), 0);
    cr_assert(strstr(out, "openai/gpt-4o"), "%s", out);
    cr_assert(strstr(out, "user7"), "%s", out);
    cbus_producer_close(p);
}
