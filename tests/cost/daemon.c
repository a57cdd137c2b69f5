/* The cbus-cost binary against a real bus: admission verdicts seen by a
 * producer, SIGKILL and restart without double counting, config errors. */
#include <criterion/criterion.h>

#include <cbus/admit.h>
#include <cbus/bus.h>
#include <cbus/producer.h>

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/stat.h>
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

/* Every daemon a test forked, until reaped: .fini kills and reaps what a
 * failing assertion left running (it would hold ctest's pipe open). */
static pid_t kids[16];

static void track(pid_t pid)
{
    for (unsigned i = 0; i < sizeof kids / sizeof kids[0]; i++)
        if (!kids[i]) {
            kids[i] = pid;
            return;
        }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    cr_assert_fail("more than 16 daemons in one test");
}

static void reaped(pid_t pid)
{
    for (unsigned i = 0; i < sizeof kids / sizeof kids[0]; i++)
        if (kids[i] == pid)
            kids[i] = 0;
}

/* SIGKILL (what a crash is) and reap. */
static void kill_reap(pid_t pid)
{
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    reaped(pid);
}

static void hook_stop(void);

static void setup(void)
{
    memset(kids, 0, sizeof kids);
    snprintf(dir, sizeof dir, "/tmp/cost_daemon_XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    test_bus_name(bus, sizeof bus);
    have_bus = 0;
}

static void teardown(void)
{
    for (unsigned i = 0; i < sizeof kids / sizeof kids[0]; i++)
        if (kids[i] > 0)
            kill_reap(kids[i]);
    hook_stop();
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

/* Starts cbus-cost with stderr to DIR/log.N and DIR/state_dir as its
 * --state-dir; returns its pid, tracked for teardown. */
static pid_t spawn_at(const char *config, int n, const char *state_dir)
{
    char cfg[128], log[128], state[128];
    snprintf(cfg, sizeof cfg, "%s/%s", dir, config);
    snprintf(log, sizeof log, "%s/log.%d", dir, n);
    snprintf(state, sizeof state, "%s/%s", dir, state_dir);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(fd, 2);
        execl(BIN, BIN, "--bus", bus, "--config", cfg, "--state-dir", state, (char *)NULL);
        _exit(127);
    }
    track(pid);
    return pid;
}

static pid_t spawn(const char *config, int n)
{
    return spawn_at(config, n, "state");
}

static int exit_code(pid_t pid)
{
    int st = test_wait_pid(pid, 20000);
    reaped(pid); /* test_wait_pid kills and reaps it after the deadline */
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

/* Waits (generous deadline) until the snapshot's field is >= want. */
static int wait_num(const char *field, double want, unsigned ms)
{
    uint64_t end = test_now_ms() + ms;
    while (test_now_ms() < end) {
        if (snapshot_num(field) >= want)
            return 1;
        test_sleep_ms(10);
    }
    return snapshot_num(field) >= want;
}

/* Waits until log n contains text. */
static int wait_log(int n, const char *text, unsigned ms)
{
    uint64_t end = test_now_ms() + ms;
    while (test_now_ms() < end) {
        if (strstr(log_text(n), text))
            return 1;
        test_sleep_ms(10);
    }
    return strstr(log_text(n), text) != NULL;
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
    cr_assert(wait_num("checkpoint_cursor", 1, 10000), "%s", log_text(0));
    kill_reap(pid);
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
    cr_assert(wait_log(1, "started:", 5000), "%s", log_text(1));
    cr_assert_eq(cbus_admit(p, &alice, NULL), CBUS_BUDGET_EXCEEDED, "%s", log_text(1));
    kill(pid, SIGTERM);
    cr_assert_eq(exit_code(pid), 0, "%s", log_text(1));
    cr_assert_eq(cbus_admit(p, &alice, NULL), CBUS_ALLOW);
    cr_assert_eq(snapshot_total(NULL, 0), 1, "not counted twice after restart");
    cbus_producer_close(p);
}

Test(cost_daemon, global_budget_blocks_every_user_and_session_budget_its_session)
{
    test_bus_create(bus, 0);
    have_bus = 1;
    write_file("c.ini", "[prices]\nfile = " PRICES "\n[state]\nsnapshot_interval = 20ms\n"
                        "[budget.global]\nlimit_usd = 0.05\n"
                        "[budget.session.*]\nlimit_usd = 0.02\nperiod = none\n");
    pid_t pid = spawn("c.ini", 0);
    cbus_producer *p;
    cr_assert_eq(cbus_producer_open(&p, bus, NULL), 0);
    cbus_ctx a, b;
    make_ctx(&a, "alice");
    cbus_ctx_set_session(&a, "chat-1");
    make_ctx(&b, "bob");
    cbus_ctx_set_session(&b, "chat-2");
    struct cbus_usage u = {.input_tokens = 10000, .usage_present = CBUS_USAGE_INPUT}; /* 0.025 */
    cr_assert_eq(cbus_llm_end(p, &a, &u, NULL), 0);
    uint64_t end = test_now_ms() + 10000;
    while (cbus_admit(p, &a, NULL) != CBUS_BUDGET_EXCEEDED && test_now_ms() < end)
        test_sleep_ms(10);
    cr_assert_eq(cbus_admit(p, &a, NULL), CBUS_BUDGET_EXCEEDED, "session chat-1: %s", log_text(0));
    cr_assert_eq(cbus_admit(p, &b, NULL), CBUS_ALLOW, "chat-2 is under its session budget");
    cr_assert_eq(cbus_llm_end(p, &b, &u, NULL), 0); /* global: 0.05 of 0.05 */
    end = test_now_ms() + 10000;
    while (cbus_admit(p, &b, NULL) != CBUS_BUDGET_EXCEEDED && test_now_ms() < end)
        test_sleep_ms(10);
    cr_assert_eq(cbus_admit(p, &b, NULL), CBUS_BUDGET_EXCEEDED, "global: %s", log_text(0));
    cbus_ctx c;
    make_ctx(&c, "carol"); /* never spent anything: blocked by the global budget */
    cr_assert_eq(cbus_admit(p, &c, NULL), CBUS_BUDGET_EXCEEDED, "%s", log_text(0));
    cr_assert(strstr(log_text(0), "budget global *: EXCEEDED"), "%s", log_text(0));
    kill(pid, SIGTERM);
    cr_assert_eq(exit_code(pid), 0, "%s", log_text(0));
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
    /* fsync off: rename alone must be enough against SIGKILL */
    char cfg[512];
    snprintf(cfg, sizeof cfg, "%s[state]\nfsync = false\n", BASE_CONFIG);
    write_file("c.ini", cfg);
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
            cr_assert(wait_num("checkpoint_cursor", N / 3, 15000), "%s", log_text(0));
        }
        if (i == N / 2) {
            kill_reap(pid);
        }
        if (i % 500 == 0)
            test_sleep_ms(5);
    }
    pid = spawn("c.ini", 1);
    cr_assert(wait_requests(N, 15000), "log: %s", log_text(1));
    /* Kill once more after everything is checkpointed, restart, stop cleanly. */
    cr_assert(wait_num("checkpoint_cursor", N, 10000), "%s", log_text(1));
    kill_reap(pid);
    pid = spawn("c.ini", 2);
    cr_assert(wait_log(2, "started:", 10000), "%s", log_text(2));
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
    cr_assert(strstr(out, "\nTOTAL ") && strstr(out, "\nUSER "), "%s", out);
    /* a bad --sessions is refused, not read as 0 */
    snprintf(cmd, sizeof cmd, "%s report --state-dir %s/state --no-refresh --sessions ten 2>&1", BIN, dir);
    f = popen(cmd, "r");
    n = fread(out, 1, sizeof out - 1, f);
    out[n] = '\0';
    cr_assert_eq(WEXITSTATUS(pclose(f)), 2, "%s", out);
    cr_assert(strstr(out, "--sessions ten: want 0..1000000"), "%s", out);
    cbus_producer_close(p);
}

/* Four producer threads on a bus of four lanes (each owns one): the
 * checkpoint holds a position per lane, and a SIGKILL mid-stream and a
 * restart count every request once, to the pico-dollar. */
struct lane_sender {
    cbus_producer *p;
    int thread, n;
    int failed;
};

static void *lane_send(void *arg)
{
    struct lane_sender *s = arg;
    cbus_ctx ctx;
    char user[16];
    snprintf(user, sizeof user, "lane%d", s->thread);
    make_ctx(&ctx, user);
    for (int i = 0; i < s->n; i++) {
        struct cbus_usage u = {.input_tokens = 1000u + (uint32_t)i, .output_tokens = (uint32_t)(i % 300),
                               .usage_present = CBUS_USAGE_INPUT | CBUS_USAGE_OUTPUT};
        if (cbus_llm_end(s->p, &ctx, &u, NULL))
            s->failed++;
        if (i % 250 == 0)
            test_sleep_ms(2);
    }
    return NULL;
}

Test(cost_daemon, sigkill_and_restart_on_a_bus_of_four_lanes_counts_every_event_once)
{
    struct cbus_create_opts bo = {.capacity = 4096, .lanes = 4, .lossless_wait_ns = 5000000000u};
    cbus_bus_destroy(bus);
    cr_assert_eq(cbus_bus_create(bus, &bo), 0);
    have_bus = 1;
    char cfg[512];
    snprintf(cfg, sizeof cfg, "%s[state]\nfsync = false\n", BASE_CONFIG);
    write_file("c.ini", cfg);
    pid_t pid = spawn("c.ini", 0);
    cr_assert(wait_log(0, "started:", 10000), "%s", log_text(0));
    cbus_producer *p;
    cr_assert_eq(cbus_producer_open(&p, bus, NULL), 0);
    enum { T = 4, N = 1500 };
    cost_u128 expect = 0;
    for (int t = 0; t < T; t++)
        for (int i = 0; i < N; i++)
            expect += (cost_u128)(1000u + (uint32_t)i) * IN_RATE + (cost_u128)(i % 300) * OUT_RATE;
    pthread_t th[T];
    struct lane_sender s[T];
    for (int t = 0; t < T; t++) {
        s[t] = (struct lane_sender){.p = p, .thread = t, .n = N};
        cr_assert_eq(pthread_create(&th[t], NULL, lane_send, &s[t]), 0);
    }
    /* kill it once it has checkpointed part of the stream */
    cr_assert(wait_num("checkpoint_cursor", T * N / 4, 30000), "%s", log_text(0));
    kill_reap(pid);
    pid = spawn("c.ini", 1);
    /* the snapshot may already show the killed one's counts: wait for the
     * restart itself (and its signal handlers) */
    cr_assert(wait_log(1, "started:", 10000), "%s", log_text(1));
    for (int t = 0; t < T; t++) {
        pthread_join(th[t], NULL);
        cr_assert_eq(s[t].failed, 0, "thread %d: no emit was dropped", t);
    }
    cr_assert(wait_requests(T * N, 30000), "log: %s", log_text(1));
    cr_assert(wait_num("checkpoint_cursor", T * N, 10000), "%s", log_text(1));
    kill(pid, SIGTERM);
    cr_assert_eq(exit_code(pid), 0, "%s", log_text(1));
    char cost[64], want[64];
    cr_assert_eq(snapshot_total(cost, sizeof cost), T * N);
    cost_pico_format_usd(want, sizeof want, expect);
    cr_assert_str_eq(cost, want);
    cr_assert(strstr(log_text(1), "(checkpoint)"), "%s", log_text(1));
    cbus_producer_close(p);
}

/* A loopback HTTP server that answers 204 to every request and keeps the
 * request texts. */
struct hook_server {
    int fd;
    unsigned port;
    pthread_t t;
    pthread_mutex_t mu;
    char got[16384];
    size_t len;
    int stop;
};

static void *hook_loop(void *arg)
{
    struct hook_server *h = arg;
    for (;;) {
        int c = accept(h->fd, NULL, NULL);
        if (c < 0 || h->stop) {
            if (c >= 0)
                close(c);
            return NULL;
        }
        char req[4096];
        size_t got = 0;
        for (;;) {
            ssize_t r = recv(c, req + got, sizeof req - 1 - got, 0);
            if (r <= 0)
                break;
            got += (size_t)r;
            req[got] = '\0';
            char *end = strstr(req, "\r\n\r\n");
            char *cl = strcasestr(req, "Content-Length:");
            if (end && cl && strlen(end + 4) >= (size_t)atoi(cl + 15))
                break;
        }
        const char *ok = "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        send(c, ok, strlen(ok), MSG_NOSIGNAL);
        close(c);
        pthread_mutex_lock(&h->mu);
        if (h->len + got + 2 < sizeof h->got) {
            memcpy(h->got + h->len, req, got);
            h->len += got;
            h->got[h->len++] = '\n';
            h->got[h->len] = '\0';
        }
        pthread_mutex_unlock(&h->mu);
    }
}

static struct hook_server hook;
static int hook_running;

/* Starts the loopback hook server; teardown stops it on every path. */
static struct hook_server *hook_start(void)
{
    struct hook_server *h = &hook;
    memset(h, 0, sizeof *h);
    pthread_mutex_init(&h->mu, NULL);
    h->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(h->fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t al = sizeof a;
    getsockname(h->fd, (struct sockaddr *)&a, &al);
    h->port = ntohs(a.sin_port);
    cr_assert_eq(listen(h->fd, 8), 0);
    cr_assert_eq(pthread_create(&h->t, NULL, hook_loop, h), 0);
    hook_running = 1;
    return h;
}

static void hook_stop(void)
{
    if (!hook_running)
        return;
    hook_running = 0;
    hook.stop = 1;
    shutdown(hook.fd, SHUT_RDWR);
    close(hook.fd);
    pthread_join(hook.t, NULL);
}

static size_t collect(char *p, size_t size, size_t n, void *arg)
{
    char *buf = arg;
    size_t have = strlen(buf), add = size * n;
    if (have + add < 65536) {
        memcpy(buf + have, p, add);
        buf[have + add] = '\0';
    }
    return size * n;
}

Test(cost_daemon, webhook_alerts_and_metrics_endpoint)
{
    test_bus_create(bus, 0);
    have_bus = 1;
    struct hook_server *h = hook_start();
    char cfg[1024];
    snprintf(cfg, sizeof cfg,
             "%s[webhook]\nurl = http://127.0.0.1:%u/alerts\ntimeout = 2s\n"
             "[prometheus]\nlisten = 127.0.0.1:0\n",
             BASE_CONFIG, h->port);
    write_file("c.ini", cfg);
    pid_t pid = spawn("c.ini", 0);
    cbus_producer *p;
    cr_assert_eq(cbus_producer_open(&p, bus, NULL), 0);
    cbus_ctx alice;
    make_ctx(&alice, "alice");
    /* 0.006 then 0.006 USD against 0.01: 50% on the first, 80% and
     * exceeded on the second. */
    struct cbus_usage u = {.input_tokens = 2400, .usage_present = CBUS_USAGE_INPUT};
    cr_assert_eq(cbus_llm_end(p, &alice, &u, NULL), 0);
    cr_assert_eq(cbus_llm_end(p, &alice, &u, NULL), 0);
    uint64_t end = test_now_ms() + 15000;
    int n = 0;
    while (test_now_ms() < end) {
        pthread_mutex_lock(&h->mu);
        n = 0;
        for (const char *c = h->got; (c = strstr(c, "POST /alerts")); c++)
            n++;
        pthread_mutex_unlock(&h->mu);
        if (n >= 3)
            break;
        test_sleep_ms(20);
    }
    cr_assert_eq(n, 3, "alerts: %s\nlog: %s", h->got, log_text(0));
    cr_assert(strstr(h->got, "\"event\":\"threshold\",\"scope\":\"user\",\"who\":\"alice\",\"threshold_pct\":50"),
              "%s", h->got);
    cr_assert(strstr(h->got, "\"event\":\"budget_exceeded\""), "%s", h->got);
    cr_assert(strstr(h->got, "\"spent_usd\":0.012000000000,\"limit_usd\":0.010000000000,\"period\":\"1d\""),
              "%s", h->got);

    /* /metrics on the port the daemon logged */
    const char *m = strstr(log_text(0), "metrics http://127.0.0.1:");
    cr_assert_not_null(m, "%s", log_text(0));
    unsigned port = (unsigned)atoi(m + strlen("metrics http://127.0.0.1:"));
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%u/metrics", port);
    static char body[65536];
    end = test_now_ms() + 5000;
    do {
        body[0] = '\0';
        CURL *c = curl_easy_init();
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, body);
        cr_assert_eq(curl_easy_perform(c), CURLE_OK);
        curl_easy_cleanup(c);
        if (strstr(body, "cbus_cost_budget_exceeded{scope=\"user\",key=\"alice\"} 1"))
            break;
        test_sleep_ms(20);
    } while (test_now_ms() < end);
    cr_assert(strstr(body, "cbus_cost_usd_total{provider=\"openai\",model=\"gpt-4o\"} 0.012000000000"),
              "%s", body);
    cr_assert(strstr(body, "cbus_cost_budget_exceeded{scope=\"user\",key=\"alice\"} 1"), "%s", body);

    kill(pid, SIGTERM);
    cr_assert_eq(exit_code(pid), 0, "%s", log_text(0));
    hook_stop();
    cbus_producer_close(p);
}

/* ---- issue 12: hostile strings, secrets, config, state, errors ---------- */

/* Runs `cbus-cost report` on DIR/state; returns its stdout (static). */
static const char *report_text(void)
{
    static char out[65536];
    char cmd[256];
    snprintf(cmd, sizeof cmd, "%s report --state-dir %s/state --no-refresh", BIN, dir);
    FILE *f = popen(cmd, "r");
    cr_assert_not_null(f);
    size_t n = fread(out, 1, sizeof out - 1, f);
    out[n] = '\0';
    cr_assert_eq(pclose(f), 0, "%s", out);
    return out;
}

/* The first byte a terminal would act on: C0 controls but '\n', DEL. */
static long control_byte_at(const char *s)
{
    for (const unsigned char *u = (const unsigned char *)s; *u; u++)
        if ((*u < 0x20 && *u != '\n') || *u == 0x7f)
            return (long)(u - (const unsigned char *)s);
    return -1;
}

Test(cost_daemon, hostile_producer_strings_are_escaped_in_report_and_log)
{
    test_bus_create(bus, 0);
    have_bus = 1;
    write_file("c.ini", BASE_CONFIG);
    pid_t pid = spawn("c.ini", 0);
    cbus_producer *p;
    cr_assert_eq(cbus_producer_open(&p, bus, NULL), 0);
    /* OSC 52 (clipboard write), CSI clear screen, BEL, DEL, a C1 CSI,
     * invalid UTF-8: what one hostile producer can put in every string. */
    cbus_ctx evil, evil_model;
    make_ctx(&evil, "\x1b]52;c;aGk=\x07" "eve\x7f\xff");
    cbus_ctx_set_session(&evil, "\x1b[2Jsess\xc2\x9b" "1m");
    make_ctx(&evil_model, "mallory");
    cbus_ctx_set_provider(&evil_model, "open\x1b[5m" "ai");
    cbus_ctx_set_model(&evil_model, "gpt\x1b[31m-x\r\n");
    struct cbus_usage u = {.input_tokens = 10000, .usage_present = CBUS_USAGE_INPUT};
    cr_assert_eq(cbus_llm_end(p, &evil, &u, NULL), 0);       /* over budget: alert log */
    cr_assert_eq(cbus_llm_end(p, &evil_model, &u, NULL), 0); /* unpriced: model log */
    cr_assert(wait_requests(2, 10000), "%s", log_text(0));
    cr_assert(wait_log(0, "EXCEEDED", 10000), "%s", log_text(0));
    cr_assert(wait_log(0, "counted as unpriced", 10000), "%s", log_text(0));
    kill(pid, SIGTERM);
    cr_assert_eq(exit_code(pid), 0, "%s", log_text(0));

    const char *out = report_text();
    long at = control_byte_at(out);
    cr_assert_eq(at, -1, "control byte 0x%02x at %ld in the report:\n%s",
                 at >= 0 ? (unsigned char)out[at] : 0, at, out);
    cr_assert(strstr(out, "\\x1b]52;c;aGk=\\x07eve\\x7f"), "%s", out);
    cr_assert(strstr(out, "\\x1b[2Jsess\\u009b1m"), "%s", out);
    cr_assert(strstr(out, "open\\x1b[5mai/gpt\\x1b[31m-x\\r\\n"), "%s", out);
    const char *log = log_text(0);
    at = control_byte_at(log);
    cr_assert_eq(at, -1, "control byte at %ld in the log:\n%s", at, log);
    cr_assert(strstr(log, "budget user \\x1b]52;c;aGk=\\x07eve\\x7f\\xff: EXCEEDED"), "%s", log);
    cr_assert(strstr(log, "model open\\x1b[5mai/gpt\\x1b[31m-x\\r\\n: "), "%s", log);
    cbus_producer_close(p);
}

Test(cost_daemon, webhook_credentials_and_token_never_reach_the_log)
{
    test_bus_create(bus, 0);
    have_bus = 1;
    /* A port nobody listens on: every delivery fails and is logged. */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t al = sizeof a;
    getsockname(s, (struct sockaddr *)&a, &al);
    close(s);
    char cfg[1024];
    snprintf(cfg, sizeof cfg,
             "%s[webhook]\nurl = http://alice:s3cretpw@127.0.0.1:%u/hooks/alert?token=t0kenvalue#frag\n"
             "timeout = 1s\n", BASE_CONFIG, ntohs(a.sin_port));
    write_file("c.ini", cfg);
    pid_t pid = spawn("c.ini", 0);
    cbus_producer *p;
    cr_assert_eq(cbus_producer_open(&p, bus, NULL), 0);
    cbus_ctx alice;
    make_ctx(&alice, "alice");
    struct cbus_usage u = {.input_tokens = 10000, .usage_present = CBUS_USAGE_INPUT};
    cr_assert_eq(cbus_llm_end(p, &alice, &u, NULL), 0);
    char shown[128];
    snprintf(shown, sizeof shown, "webhook http://***@127.0.0.1:%u/hooks/alert?***#***: ",
             ntohs(a.sin_port));
    cr_assert(wait_log(0, shown, 20000), "%s", log_text(0));
    cr_assert(strstr(log_text(0), "; webhook http://***@127.0.0.1:"), "%s", log_text(0));
    kill(pid, SIGTERM);
    cr_assert_eq(exit_code(pid), 0, "%s", log_text(0));
    cr_assert_null(strstr(log_text(0), "s3cretpw"), "%s", log_text(0));
    cr_assert_null(strstr(log_text(0), "//alice"), "%s", log_text(0));
    cr_assert_null(strstr(log_text(0), "t0kenvalue"), "%s", log_text(0));
    cbus_producer_close(p);

    /* A URL the config refuses is not echoed whole either. */
    write_file("bad.ini", "[webhook]\nurl = ftp://bob:hunter2@example.com/x?key=k3y\n");
    pid = spawn("bad.ini", 1);
    cr_assert_eq(exit_code(pid), 2, "%s", log_text(1));
    cr_assert(strstr(log_text(1), "bad.ini:2:"), "%s", log_text(1));
    cr_assert_null(strstr(log_text(1), "hunter2"), "%s", log_text(1));
    cr_assert_null(strstr(log_text(1), "k3y"), "%s", log_text(1));
}

Test(cost_daemon, directory_or_nul_byte_config_is_refused)
{
    char sub[128];
    snprintf(sub, sizeof sub, "%s/conf.d", dir);
    cr_assert_eq(mkdir(sub, 0700), 0);
    pid_t pid = spawn("conf.d", 0);
    cr_assert_eq(exit_code(pid), 2, "%s", log_text(0));
    cr_assert(strstr(log_text(0), "conf.d: is a directory, not a config file"), "%s", log_text(0));

    /* A NUL in the middle would hide the budget after it. */
    char path[128];
    snprintf(path, sizeof path, "%s/nul.ini", dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    static const char text[] = "[state]\nfsync = false\n\0\n[budget.global]\nlimit_usd = 1\n";
    cr_assert_eq(fwrite(text, 1, sizeof text - 1, f), sizeof text - 1);
    fclose(f);
    pid = spawn("nul.ini", 1);
    cr_assert_eq(exit_code(pid), 2, "%s", log_text(1));
    cr_assert(strstr(log_text(1), "nul.ini: contains a NUL byte"), "%s", log_text(1));
}

Test(cost_daemon, state_dir_option_moves_the_prometheus_textfile)
{
    test_bus_create(bus, 0);
    have_bus = 1;
    /* The shipped layout: the textfile inside the config's state dir. */
    write_file("c.ini", "[prices]\nfile = " PRICES "\n"
                        "[state]\ndir = /nonexistent-cbus-cost/%b\nsnapshot_interval = 20ms\n"
                        "[prometheus]\ntextfile = /nonexistent-cbus-cost/%b/cbus_cost.prom\n");
    pid_t pid = spawn_at("c.ini", 0, "elsewhere");
    char prom[128];
    snprintf(prom, sizeof prom, "%s/elsewhere/cbus_cost.prom", dir);
    uint64_t end = test_now_ms() + 10000;
    while (access(prom, F_OK) != 0 && test_now_ms() < end)
        test_sleep_ms(10);
    cr_assert_eq(access(prom, F_OK), 0, "%s", log_text(0));
    kill(pid, SIGTERM);
    cr_assert_eq(exit_code(pid), 0, "%s", log_text(0));
    cr_assert_null(strstr(log_text(0), "nonexistent-cbus-cost"), "%s", log_text(0));
    cr_assert(strstr(read_path(prom), "cbus_cost_events_total 0\n"), "%s", read_path(prom));
}

/* Occurrences of needle in hay. */
static int count_of(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *c = hay; (c = strstr(c, needle)); c += strlen(needle))
        n++;
    return n;
}

Test(cost_daemon, repeated_write_error_is_logged_once_then_summarised)
{
    test_bus_create(bus, 0);
    have_bus = 1;
    /* A textfile in a directory that does not exist fails at every
     * snapshot (every 20 ms) with the same error. */
    char cfg[512];
    snprintf(cfg, sizeof cfg, "%s[prometheus]\ntextfile = %s/missing/cbus_cost.prom\n", BASE_CONFIG,
             dir);
    write_file("c.ini", cfg);
    pid_t pid = spawn("c.ini", 0);
    /* Five distinct snapshots: at least five failed textfile writes. */
    double seen[5] = {0};
    int distinct = 0;
    uint64_t end = test_now_ms() + 15000;
    while (distinct < 5 && test_now_ms() < end) {
        double g = snapshot_num("generated_at_ns");
        if (g > 0 && (distinct == 0 || g != seen[distinct - 1]))
            seen[distinct++] = g;
        test_sleep_ms(5);
    }
    cr_assert_eq(distinct, 5, "%s", log_text(0));
    kill(pid, SIGTERM);
    cr_assert_eq(exit_code(pid), 0, "%s", log_text(0));
    const char *log = log_text(0);
    cr_assert_eq(count_of(log, "missing/cbus_cost.prom: No such file or directory"), 2,
                 "the error once, its summary once:\n%s", log);
    const char *sum = strstr(log, "No such file or directory: repeated ");
    cr_assert_not_null(sum, "%s", log);
    cr_assert_geq(atoi(sum + strlen("No such file or directory: repeated ")), 4, "%s", log);
}

/* The committed cursor of consumer name on bus (the registry in shm). */
static uint64_t bus_cursor_of(cbus_bus *b, const char *name)
{
    const struct cbus_shm_header *hd = cbus_bus_header(b);
    for (unsigned i = 0; i < hd->max_consumers; i++) {
        struct cbus_consumer_entry *e = cbus_bus_consumer_entry(b, i);
        if (e && atomic_load(&e->state) == CBUS_CSTATE_ACTIVE && !strcmp(e->name, name))
            return atomic_load(&e->cursor);
    }
    cr_assert_fail("no active consumer %s", name);
    return 0;
}

/* The cursor saved in a checkpoint file (header: magic, version, stamp,
 * bus id, cursor). */
static uint64_t file_cursor(const char *path)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s", path);
    unsigned char h[32];
    cr_assert_eq(fread(h, 1, sizeof h, f), sizeof h);
    fclose(f);
    uint64_t c;
    memcpy(&c, h + 24, sizeof c);
    return c;
}

Test(cost_daemon, failed_checkpoint_never_acknowledges_the_cursor)
{
    test_bus_create(bus, 0);
    have_bus = 1;
    char cfg[512];
    snprintf(cfg, sizeof cfg, "%s[state]\nfsync = false\n", BASE_CONFIG);
    write_file("c.ini", cfg);
    pid_t pid = spawn("c.ini", 0);
    cbus_producer *p;
    cr_assert_eq(cbus_producer_open(&p, bus, NULL), 0);
    cbus_bus *b = cbus_producer_bus(p);
    enum { N1 = 300, N2 = 500 };
    cbus_ctx ctx;
    make_ctx(&ctx, "carol");
    struct cbus_usage u = {.input_tokens = 1, .usage_present = CBUS_USAGE_INPUT};
    for (int i = 0; i < N1; i++)
        cr_assert_eq(cbus_llm_end(p, &ctx, &u, NULL), 0);
    cr_assert(wait_num("checkpoint_cursor", N1, 10000), "%s", log_text(0));

    /* From now on every save fails (even for root): the checkpoint's
     * name is taken by a non-empty directory, so the rename cannot land.
     * The last good file is kept aside; a save racing the swap just
     * becomes that last good file. */
    char ck[128], saved[128], blocker[160];
    snprintf(ck, sizeof ck, "%s/state/checkpoint.bin", dir);
    snprintf(saved, sizeof saved, "%s/checkpoint.good", dir);
    snprintf(blocker, sizeof blocker, "%s/x", ck);
    for (int tries = 0;; tries++) {
        cr_assert_lt(tries, 1000);
        if (rename(ck, saved) != 0)
            continue;
        if (mkdir(ck, 0700) == 0)
            break;
    }
    write_file("state/checkpoint.bin/x", "x");
    uint64_t durable = file_cursor(saved);
    cr_assert_geq(durable, N1);
    for (int i = 0; i < N2; i++)
        cr_assert_eq(cbus_llm_end(p, &ctx, &u, NULL), 0);
    /* Read and accounted, but not durable: the saves fail. */
    cr_assert(wait_num("cursor", N1 + N2, 10000), "%s", log_text(0));
    cr_assert(wait_log(0, "(cursor not advanced)", 10000), "%s", log_text(0));
    cr_assert(wait_num("events", N1 + N2, 10000), "%s", log_text(0));
    /* Give it failed saves to (wrongly) acknowledge: the log is rate-
     * limited, so wait on the snapshot instead: it keeps reporting the
     * durable checkpoint cursor. */
    cr_assert_eq(snapshot_num("checkpoint_cursor"), (double)durable, "%s", log_text(0));
    cr_assert_eq(bus_cursor_of(b, "cost"), durable,
                 "the bus was told more than the disk holds\n%s", log_text(0));
    cr_assert_eq(file_cursor(saved), durable);

    /* Crash, disk fixed, restart: everything counted exactly once. */
    kill_reap(pid);
    cr_assert_eq(unlink(blocker), 0);
    cr_assert_eq(rmdir(ck), 0);
    cr_assert_eq(rename(saved, ck), 0);
    pid = spawn("c.ini", 1);
    cr_assert(wait_requests(N1 + N2, 15000), "%s", log_text(1));
    cr_assert(wait_num("checkpoint_cursor", N1 + N2, 10000), "%s", log_text(1));
    kill(pid, SIGTERM);
    cr_assert_eq(exit_code(pid), 0, "%s", log_text(1));
    cr_assert_eq(snapshot_total(NULL, 0), N1 + N2, "%s", log_text(1));
    cbus_producer_close(p);
}

static unsigned consumer_flags(cbus_bus *b, const char *name)
{
    const struct cbus_shm_header *hd = cbus_bus_header(b);
    for (unsigned i = 0; i < hd->max_consumers; i++) {
        struct cbus_consumer_entry *e = cbus_bus_consumer_entry(b, i);
        if (e && atomic_load(&e->state) == CBUS_CSTATE_ACTIVE && !strcmp(e->name, name))
            return atomic_load(&e->flags);
    }
    return 0;
}

Test(cost_daemon, lost_events_stay_counted_across_restarts)
{
    /* A small ring and a short stall timeout: a stopped daemon is cut
     * loose quickly and producers lap it. */
    struct cbus_create_opts o = {.capacity = 1024, .stall_timeout_ns = 300000000u};
    cbus_bus_destroy(bus);
    cr_assert_eq(cbus_bus_create(bus, &o), 0);
    have_bus = 1;
    char cfg[512];
    snprintf(cfg, sizeof cfg, "%s[state]\nfsync = false\n", BASE_CONFIG);
    write_file("c.ini", cfg);
    pid_t pid = spawn("c.ini", 0);
    cr_assert(wait_log(0, "started:", 10000), "%s", log_text(0));
    cbus_producer *p;
    cr_assert_eq(cbus_producer_open(&p, bus, NULL), 0);
    cbus_bus *b = cbus_producer_bus(p);
    cr_assert(consumer_flags(b, "cost") & CBUS_CFLAG_TETHERED);
    cr_assert_eq(kill(pid, SIGSTOP), 0);
    cbus_ctx ctx;
    make_ctx(&ctx, "dave");
    struct cbus_usage u = {.input_tokens = 1, .usage_present = CBUS_USAGE_INPUT};
    uint64_t end = test_now_ms() + 20000;
    while ((consumer_flags(b, "cost") & CBUS_CFLAG_TETHERED) && test_now_ms() < end) {
        cbus_llm_end(p, &ctx, &u, NULL); /* fills the ring, then waits and drops */
        test_sleep_ms(1);
    }
    cr_assert_eq(consumer_flags(b, "cost") & CBUS_CFLAG_TETHERED, 0, "never cut loose");
    for (int i = 0; i < 3 * 1024; i++) /* laps the stopped reader */
        cr_assert_eq(cbus_llm_end(p, &ctx, &u, NULL), 0);
    cr_assert_eq(kill(pid, SIGCONT), 0);
    uint64_t tail = cbus_bus_tail(b);
    cr_assert(wait_num("checkpoint_cursor", (double)tail, 15000), "%s", log_text(0));
    cr_assert(wait_num("lost", 1, 10000), "%s", log_text(0));
    double lost = snapshot_num("lost");
    cr_assert_geq(lost, 1024, "a whole ring was lapped");

    /* Crash and restart: the new run has lost nothing itself, yet the
     * snapshot still accounts for what the earlier run lost. */
    kill_reap(pid);
    pid = spawn("c.ini", 1);
    cr_assert(wait_log(1, "started:", 10000), "%s", log_text(1));
    end = test_now_ms() + 10000;
    while (snapshot_num("pid") != (double)pid && test_now_ms() < end)
        test_sleep_ms(10);
    cr_assert_eq(snapshot_num("pid"), (double)pid, "%s", log_text(1));
    cr_assert_eq(snapshot_num("lost"), lost, "%s", log_text(1));
    kill(pid, SIGTERM);
    cr_assert_eq(exit_code(pid), 0, "%s", log_text(1));
    cr_assert_eq(snapshot_num("lost"), lost);
    cbus_producer_close(p);
}

/* The consumer entry of name: its times cut loose, or UINT64_MAX if absent. */
static uint64_t consumer_untethered(cbus_bus *b, const char *name)
{
    const struct cbus_shm_header *hd = cbus_bus_header(b);
    for (unsigned i = 0; i < hd->max_consumers; i++) {
        struct cbus_consumer_entry *e = cbus_bus_consumer_entry(b, i);
        if (e && atomic_load(&e->state) == CBUS_CSTATE_ACTIVE && !strcmp(e->name, name))
            return atomic_load(&e->untethered_count);
    }
    return UINT64_MAX;
}

/* A checkpoint whose fsync outlasts the bus's stall timeout several times
 * (a loaded disk, made by CBUS_TEST_SLOW_FSYNC_MS) while producers wait on
 * the full ring behind it: the loop's beat thread heartbeats through the
 * fsync (loop.h, slow calls), so no producer untethers cbus-cost and every
 * event a producer got in is accounted, none lost.  Without the slow
 * section the first such checkpoint gets it cut loose (the soak saw it). */
Test(cost_daemon, slow_checkpoint_fsync_keeps_the_consumer_tethered)
{
    /* A stall timeout of 1 s: the beat thread beats every 250 ms, so only a
     * daemon kept off the CPUs for a whole second could miss (500 ms was
     * missed once in a -j2 run beside four other daemon suites). */
    struct cbus_create_opts o = {.capacity = 1024, .stall_timeout_ns = 1000000000u};
    cbus_bus_destroy(bus);
    cr_assert_eq(cbus_bus_create(bus, &o), 0);
    have_bus = 1;
    write_file("c.ini", BASE_CONFIG); /* fsync on, checkpoint every 50 ms */
    cr_assert_eq(setenv("CBUS_TEST_SLOW_FSYNC_MS", "3000", 1), 0); /* 3 stall timeouts */
    pid_t pid = spawn("c.ini", 0);
    unsetenv("CBUS_TEST_SLOW_FSYNC_MS");
    cr_assert(wait_log(0, "started:", 20000), "%s", log_text(0));
    cbus_producer *p;
    cr_assert_eq(cbus_producer_open(&p, bus, NULL), 0);
    cbus_bus *b = cbus_producer_bus(p);
    cbus_ctx ctx;
    make_ctx(&ctx, "erin");
    struct cbus_usage u = {.input_tokens = 1, .usage_present = CBUS_USAGE_INPUT};
    /* Six rings' worth: the ring fills behind each slow checkpoint, the
     * producer waits (then drops: counted as not sent), several times over. */
    long sent = 0, refused = 0;
    for (int i = 0; i < 6 * 1024; i++) {
        if (cbus_llm_end(p, &ctx, &u, NULL) == 0)
            sent++;
        else
            refused++;
        cr_assert(consumer_flags(b, "cost") & CBUS_CFLAG_TETHERED,
                  "untethered after %ld events sent\n%s", sent, log_text(0));
    }
    cr_assert_gt(refused, 0, "the ring never filled behind a checkpoint: nothing was tested");
    cr_assert(wait_requests(sent, 30000), "%ld sent, %ld accounted\n%s", sent,
              snapshot_total(NULL, 0), log_text(0));
    cr_assert_eq(consumer_untethered(b, "cost"), 0, "%s", log_text(0));
    cr_assert_eq(snapshot_num("lost"), 0, "%s", log_text(0));
    kill(pid, SIGTERM);
    cr_assert_eq(exit_code(pid), 0, "%s", log_text(0));
    cbus_producer_close(p);
}

/* A top-level string of the snapshot into out ("" if absent). */
static void snapshot_str(const char *field, char *out, size_t len)
{
    char p[128];
    snprintf(p, sizeof p, "%s/state/snapshot.json", dir);
    char *t = read_path(p);
    cJSON *root = t ? cJSON_Parse(t) : NULL;
    const cJSON *v = root ? cJSON_GetObjectItem(root, field) : NULL;
    snprintf(out, len, "%s", cJSON_IsString(v) ? v->valuestring : "");
    cJSON_Delete(root);
}

Test(cost_daemon, lost_events_stay_counted_when_the_bus_is_recreated)
{
    struct cbus_create_opts o = {.capacity = 1024, .stall_timeout_ns = 300000000u};
    cbus_bus_destroy(bus);
    cr_assert_eq(cbus_bus_create(bus, &o), 0);
    have_bus = 1;
    char cfg[512];
    snprintf(cfg, sizeof cfg, "%s[state]\nfsync = false\n", BASE_CONFIG);
    write_file("c.ini", cfg);
    pid_t pid = spawn("c.ini", 0);
    cr_assert(wait_log(0, "started:", 10000), "%s", log_text(0));
    cbus_producer *p;
    cr_assert_eq(cbus_producer_open(&p, bus, NULL), 0);
    cbus_bus *b = cbus_producer_bus(p);
    cr_assert_eq(kill(pid, SIGSTOP), 0);
    cbus_ctx ctx;
    make_ctx(&ctx, "erin");
    struct cbus_usage u = {.input_tokens = 1, .usage_present = CBUS_USAGE_INPUT};
    uint64_t end = test_now_ms() + 20000;
    while ((consumer_flags(b, "cost") & CBUS_CFLAG_TETHERED) && test_now_ms() < end) {
        cbus_llm_end(p, &ctx, &u, NULL);
        test_sleep_ms(1);
    }
    cr_assert_eq(consumer_flags(b, "cost") & CBUS_CFLAG_TETHERED, 0, "never cut loose");
    for (int i = 0; i < 3 * 1024; i++)
        cr_assert_eq(cbus_llm_end(p, &ctx, &u, NULL), 0);
    cr_assert_eq(kill(pid, SIGCONT), 0);
    uint64_t tail = cbus_bus_tail(b);
    cr_assert(wait_num("checkpoint_cursor", (double)tail, 15000), "%s", log_text(0));
    cr_assert(wait_num("lost", 1024, 10000), "%s", log_text(0));
    double lost = snapshot_num("lost");
    char old_id[32], id[32];
    snapshot_str("bus_id", old_id, sizeof old_id);
    cbus_producer_close(p);

    /* The bus is re-created under the running daemon: it follows it to
     * the new segment with a new consumer, whose own lost count is 0. */
    cr_assert_eq(cbus_bus_destroy(bus), 0);
    cr_assert_eq(cbus_bus_create(bus, &o), 0);
    cr_assert(wait_log(0, "re-attached as lossless", 20000), "%s", log_text(0));
    end = test_now_ms() + 10000;
    do {
        snapshot_str("bus_id", id, sizeof id);
        if (strcmp(id, old_id))
            break;
        test_sleep_ms(10);
    } while (test_now_ms() < end);
    cr_assert_str_neq(id, old_id, "%s", log_text(0));
    cr_assert_eq(snapshot_num("lost"), lost, "%s", log_text(0));
    kill(pid, SIGTERM);
    cr_assert_eq(exit_code(pid), 0, "%s", log_text(0));
    cr_assert_eq(snapshot_num("lost"), lost, "kept in the checkpoint of the new bus");
}

/* The resume policy (attach.h, case 2): a checkpoint of a bus that was
 * re-created while the daemon was down starts the new bus at its OLDEST
 * event, whatever [bus] start says (that is for a start with nothing
 * saved), so what producers emitted before the restart is accounted.  The
 * totals carry on.  Before the one policy, start = newest skipped them. */
Test(cost_daemon, checkpoint_of_a_recreated_bus_reads_the_new_bus_from_its_oldest_event)
{
    test_bus_create(bus, 0);
    have_bus = 1;
    char cfg[512];
    snprintf(cfg, sizeof cfg, "%s[state]\nfsync = false\n[bus]\nstart = newest\n", BASE_CONFIG);
    write_file("c.ini", cfg);
    pid_t pid = spawn("c.ini", 0);
    cr_assert(wait_log(0, "started:", 10000), "%s", log_text(0));
    cr_assert(strstr(log_text(0), "(fresh), the newest event"), "%s", log_text(0));
    enum { N1 = 30, N2 = 40 };
    cbus_ctx ctx;
    make_ctx(&ctx, "frank");
    struct cbus_usage u = {.input_tokens = 1, .usage_present = CBUS_USAGE_INPUT};
    cbus_producer *p;
    cr_assert_eq(cbus_producer_open(&p, bus, NULL), 0);
    for (int i = 0; i < N1; i++)
        cr_assert_eq(cbus_llm_end(p, &ctx, &u, NULL), 0);
    cbus_producer_close(p);
    cr_assert(wait_requests(N1, 15000), "%s", log_text(0));
    kill(pid, SIGTERM);
    cr_assert_eq(exit_code(pid), 0, "%s", log_text(0));

    /* Re-created while the daemon is down, and written to before it is back. */
    cr_assert_eq(cbus_bus_destroy(bus), 0);
    test_bus_create(bus, 0);
    cr_assert_eq(cbus_producer_open(&p, bus, NULL), 0);
    for (int i = 0; i < N2; i++)
        cr_assert_eq(cbus_llm_end(p, &ctx, &u, NULL), 0);
    cbus_producer_close(p);
    pid = spawn("c.ini", 1);
    cr_assert(wait_log(1, "started:", 10000), "%s", log_text(1));
    cr_assert(strstr(log_text(1), "is not the bus the saved position is for (another bus id"),
              "%s", log_text(1));
    cr_assert(strstr(log_text(1), "(checkpoint), the oldest event (bus re-created since the save)"),
              "%s", log_text(1));
    cr_assert(wait_requests(N1 + N2, 15000), "%ld of %d\n%s", snapshot_total(NULL, 0), N1 + N2,
              log_text(1));
    kill(pid, SIGTERM);
    cr_assert_eq(exit_code(pid), 0, "%s", log_text(1));
    cr_assert_eq(snapshot_total(NULL, 0), N1 + N2, "%s", log_text(1));
}

/* A forged forward jump of tail by more than the ring: the poll skips the
 * positions (lost, then abandoned) and returns no event.  The daemon must
 * still acknowledge them, or producers gated behind its cursor drop
 * forever and no event ever arrives to move it. */
Test(cost_daemon, tail_jump_past_the_ring_releases_producers)
{
    struct cbus_create_opts o = {.capacity = 1024, .stall_timeout_ns = 300000000u};
    cbus_bus_destroy(bus);
    cr_assert_eq(cbus_bus_create(bus, &o), 0);
    have_bus = 1;
    char cfg[512];
    snprintf(cfg, sizeof cfg, "%s[state]\nfsync = false\n", BASE_CONFIG);
    write_file("c.ini", cfg);
    pid_t pid = spawn("c.ini", 0);
    cr_assert(wait_log(0, "started:", 10000), "%s", log_text(0));
    cbus_producer *p;
    cr_assert_eq(cbus_producer_open(&p, bus, NULL), 0);
    cbus_bus *b = cbus_producer_bus(p);
    cr_assert(consumer_flags(b, "cost") & CBUS_CFLAG_TETHERED);
    cbus_ctx ctx;
    make_ctx(&ctx, "frank");
    struct cbus_usage u = {.input_tokens = 1, .usage_present = CBUS_USAGE_INPUT};
    long ok = 0;
    for (int i = 0; i < 5; i++, ok++)
        cr_assert_eq(cbus_llm_end(p, &ctx, &u, NULL), 0);
    cr_assert(wait_requests(ok, 10000), "%s", log_text(0));

    /* the hostile write */
    atomic_fetch_add((_Atomic uint64_t *)&cbus_bus_header(b)->tail, 3 * o.capacity);

    /* Emits succeed again once the daemon acknowledged the skipped
     * positions (each drop waits the bus's bound first). */
    uint64_t end = test_now_ms() + 30000;
    int rc;
    while ((rc = cbus_llm_end(p, &ctx, &u, NULL)) != 0 && test_now_ms() < end)
        test_sleep_ms(1);
    cr_assert_eq(rc, 0, "producers never released: %s", log_text(0));
    ok++;
    for (int i = 0; i < 50; i++, ok++)
        cr_assert_eq(cbus_llm_end(p, &ctx, &u, NULL), 0);
    cr_assert(wait_requests(ok, 15000), "requests %ld, want %ld: %s", snapshot_total(NULL, 0), ok,
              log_text(0));
    kill(pid, SIGTERM);
    cr_assert_eq(exit_code(pid), 0, "%s", log_text(0));
    cbus_producer_close(p);
}

/* ---- bursts (issue 13 item 2) ----------------------------------------------
 * A LangChain.js app streamed 5 runs of 40k tokens each with cbus-cost
 * attached, on a ring the tokens fill many times over while cost commits
 * only at its checkpoints: cost counted 4 of 5 requests, because the llm_end
 * came while producers were dropping at once after one timed-out wait.  Cost
 * tells producers it needs only LLM ends and errors, so the tokens are what
 * is dropped, and bulk kinds never take the last eighth of the ring. */
struct stream_runner {
    cbus_producer *p;
    int runs, tokens;
    int ends_refused;
};

static void *stream_runs(void *arg)
{
    struct stream_runner *s = arg;
    for (int r = 0; r < s->runs; r++) {
        cbus_ctx ctx;
        make_ctx(&ctx, "streamer");
        cbus_llm_start(s->p, &ctx, "tell me a long story", NULL);
        for (int i = 0; i < s->tokens; i++)
            cbus_llm_new_token(s->p, &ctx, "word ", 5);
        struct cbus_usage u = {.input_tokens = 100, .output_tokens = (uint32_t)s->tokens,
                               .usage_present = CBUS_USAGE_INPUT | CBUS_USAGE_OUTPUT};
        s->ends_refused += cbus_llm_end(s->p, &ctx, &u, NULL) != 0;
    }
    return NULL;
}

/* threads of stream_runs on one producer; returns the llm_ends refused,
 * plus 1000 if any call was held waiting for the consumer. */
static int stream_threads(int threads, int runs, int tokens)
{
    cbus_producer *p;
    if (cbus_producer_open(&p, bus, NULL))
        return -1;
    pthread_t th[4];
    struct stream_runner s[4];
    for (int t = 0; t < threads; t++) {
        s[t] = (struct stream_runner){.p = p, .runs = runs, .tokens = tokens};
        if (pthread_create(&th[t], NULL, stream_runs, &s[t]))
            return -1;
    }
    int refused = 0;
    for (int t = 0; t < threads; t++) {
        pthread_join(th[t], NULL);
        refused += s[t].ends_refused;
    }
    /* Cost needs no token and no start, and ends find the last eighth of
     * the ring free: nothing ever waits for it. */
    struct cbus_producer_stats st;
    if (cbus_producer_stats(p, &st) || st.waited_ns)
        refused += 1000;
    cbus_producer_close(p);
    return refused;
}

static const char *STREAM_CONFIG =
    "[prices]\nfile = " PRICES "\n"
    "[state]\ncheckpoint_interval = 50ms\nsnapshot_interval = 20ms\nfsync = false\n";

/* procs processes (the test's own and procs-1 children) of threads threads
 * each stream runs runs; cost must count every request and every token. */
static void burst_case(uint32_t lanes, int procs, int threads)
{
    /* The real default bound (1 ms): the wait that lost the llm_end. */
    struct cbus_create_opts bo = {.capacity = 1024, .lanes = lanes};
    cbus_bus_destroy(bus);
    cr_assert_eq(cbus_bus_create(bus, &bo), 0);
    have_bus = 1;
    write_file("s.ini", STREAM_CONFIG);
    pid_t pid = spawn("s.ini", 0);
    cr_assert(wait_log(0, "started:", 10000), "%s", log_text(0));
    enum { RUNS = 5, TOKENS = 40000 };
    for (int k = 1; k < procs; k++) {
        pid_t c = fork();
        cr_assert_geq(c, 0);
        if (c == 0)
            _exit(stream_threads(threads, RUNS, TOKENS) == 0 ? 0 : 1);
        track(c);
    }
    cr_assert_eq(stream_threads(threads, RUNS, TOKENS), 0,
                 "every llm_end was taken, and no call waited (>= 1000: one did)");
    for (unsigned i = 0; i < sizeof kids / sizeof kids[0]; i++) {
        if (kids[i] <= 0 || kids[i] == pid)
            continue;
        pid_t c = kids[i];
        cr_assert_eq(exit_code(c), 0, "the other process's llm_ends were taken too");
    }
    const long want = (long)procs * threads * RUNS;
    cr_assert(wait_requests(want, 30000), "requests %ld of %ld; log: %s", snapshot_total(NULL, 0),
              want, log_text(0));
    char cost[64], expect[64];
    cr_assert_eq(snapshot_total(cost, sizeof cost), want);
    cost_pico_format_usd(expect, sizeof expect,
                         (cost_u128)want * (100u * (cost_u128)IN_RATE + TOKENS * (cost_u128)OUT_RATE));
    cr_assert_str_eq(cost, expect, "every llm_end's tokens priced");
    kill(pid, SIGTERM);
    cr_assert_eq(exit_code(pid), 0, "%s", log_text(0));
}

Test(cost_daemon, streamed_runs_on_a_small_ring_count_every_llm_end)
{
    burst_case(1, 1, 1);
}

Test(cost_daemon, streamed_runs_from_threads_and_a_process_on_two_lanes_count_every_llm_end)
{
    burst_case(2, 2, 3);
}

/* Issue 14: two 200-byte user names that differ in the last byte (equal
 * shown prefixes) through a real bus: two users in the snapshot, each with
 * its own cost; a tenant budget alerts for its tenant. */
/* Admission waits for the verdict the daemon publishes after its alert. */
static int wait_admit(cbus_producer *p, const cbus_ctx *ctx, int want, int timeout_ms)
{
    for (int waited = 0; waited < timeout_ms; waited += 10) {
        if (cbus_admit(p, ctx, NULL) == want)
            return 1;
        usleep(10000);
    }
    return cbus_admit(p, ctx, NULL) == want;
}

Test(cost_daemon, two_long_users_are_two_rows_and_tenants_are_budgeted)
{
    test_bus_create(bus, 0);
    have_bus = 1;
    char na[201], nb[201];
    memset(na, 'u', 200);
    na[200] = '\0';
    memcpy(na, "user:default/", 13);
    memcpy(nb, na, sizeof na);
    na[199] = 'a';
    nb[199] = 'b';
    /* b (0.05 USD) goes over its own 0.04; a (0.025) shares b's first 199
     * bytes and its verdict must not stop a. */
    char cfg[1024];
    snprintf(cfg, sizeof cfg,
             "[prices]\nfile = " PRICES "\n"
             "[state]\ncheckpoint_interval = 50ms\nsnapshot_interval = 20ms\n"
             "[budget.tenant.team-a]\nlimit_usd = 0.03\nperiod = 1d\n"
             "[budget.user.%s]\nlimit_usd = 0.04\nperiod = 1d\n", nb);
    write_file("c.ini", cfg);
    pid_t pid = spawn("c.ini", 0);
    cbus_producer *p;
    cr_assert_eq(cbus_producer_open(&p, bus, NULL), 0);
    cbus_ctx a, b;
    make_ctx(&a, na);
    make_ctx(&b, nb);
    cbus_ctx_set_tenant(&a, "team-a");
    cbus_ctx_set_tenant(&b, "team-a");
    cbus_ctx_set_agent(&b, "planner");
    /* 0.025 USD a call: a one, b two (0.075 for team-a: over 0.03) */
    struct cbus_usage u = {.input_tokens = 10000, .cache_read_tokens = 4000, .output_tokens = 500,
                           .usage_present = CBUS_USAGE_INPUT | CBUS_USAGE_OUTPUT |
                                            CBUS_USAGE_CACHE_READ};
    cr_assert_eq(cbus_llm_end(p, &a, &u, NULL), 0);
    cr_assert_eq(cbus_llm_end(p, &b, &u, NULL), 0);
    cr_assert_eq(cbus_llm_end(p, &b, &u, NULL), 0);
    /* scores reach the daemon too (it declares the kind lossless) */
    cr_assert_eq(cbus_score(p, &b, "fix-quality", CBUS_SCORE_NUMERIC, 0.75, NULL, NULL), 0);
    cr_assert_eq(cbus_score(p, &b, "fix-quality", CBUS_SCORE_NUMERIC, 0.5, NULL, NULL), 0);
    cr_assert(wait_requests(3, 10000), "%s", log_text(0));
    cr_assert(wait_num("events", 5, 10000), "%s", log_text(0));
    char sa[80], sb[80];
    snprintf(sa, sizeof sa, "%.39s\u2026#%08x", na, (unsigned)(cbus_key_hash(na, 200) >> 32));
    snprintf(sb, sizeof sb, "%.39s\u2026#%08x", nb, (unsigned)(cbus_key_hash(nb, 200) >> 32));
    char path[128];
    snprintf(path, sizeof path, "%s/state/snapshot.json", dir);
    cJSON *root = cJSON_Parse(read_path(path));
    cr_assert_not_null(root);
    const cJSON *users = cJSON_GetObjectItem(root, "users");
    cr_assert_eq(cJSON_GetArraySize(users), 2);
    int seen = 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, users) {
        const char *name = cJSON_GetObjectItem(r, "user")->valuestring;
        const char *cost = cJSON_GetObjectItem(r, "cost_usd")->valuestring;
        if (!strcmp(name, sa)) {
            cr_assert_str_eq(cost, "0.025000000000");
            seen |= 1;
        } else if (!strcmp(name, sb)) {
            cr_assert_str_eq(cost, "0.050000000000");
            seen |= 2;
        }
    }
    cr_assert_eq(seen, 3, "users: %s", cJSON_Print(users));
    const cJSON *t0 = cJSON_GetArrayItem(cJSON_GetObjectItem(root, "tenants"), 0);
    cr_assert_str_eq(cJSON_GetObjectItem(t0, "tenant")->valuestring, "team-a");
    cr_assert_str_eq(cJSON_GetObjectItem(t0, "cost_usd")->valuestring, "0.075000000000");
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetObjectItem(t0, "budget"), "exceeded")));
    const cJSON *a0 = cJSON_GetArrayItem(cJSON_GetObjectItem(root, "agents"), 0);
    cr_assert_str_eq(cJSON_GetObjectItem(a0, "agent")->valuestring, "planner");
    cr_assert_eq(cJSON_GetObjectItem(a0, "requests")->valuedouble, 2);
    const cJSON *sc = cJSON_GetArrayItem(cJSON_GetObjectItem(root, "scores"), 0);
    cr_assert_str_eq(cJSON_GetObjectItem(sc, "name")->valuestring, "fix-quality");
    cr_assert_str_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(sc, "numeric"), "mean")->valuestring,
                     "0.625000000");
    cJSON_Delete(root);
    /* The report keeps the two users apart too: their hash suffixes stay
     * whole in the 40-column cell. */
    const char *rep = report_text();
    cr_assert(strstr(rep, sa + strlen(sa) - 12) && strstr(rep, sb + strlen(sb) - 12), "%s", rep);
    cr_assert(strstr(rep, "TENANT") && strstr(rep, "team-a") && strstr(rep, "EXCEEDED"), "%s", rep);
    cr_assert(strstr(rep, "fix-quality") && strstr(rep, "mean 0.625000000"), "%s", rep);
    cr_assert(wait_log(0, "budget tenant team-a: EXCEEDED", 5000), "%s", log_text(0));
    /* Verdicts by the whole value: b's user budget stops b alone, team-a's
     * budget stops team-a (tenants have an admission scope), team-b runs. */
    cbus_ctx ua, ub, tb;
    make_ctx(&ua, na);
    make_ctx(&ub, nb);
    make_ctx(&tb, "carol");
    cbus_ctx_set_tenant(&tb, "team-b");
    cr_assert(wait_admit(p, &ub, CBUS_BUDGET_EXCEEDED, 60000), "%s", log_text(0));
    cr_assert(wait_admit(p, &a, CBUS_BUDGET_EXCEEDED, 60000), "team-a: %s", log_text(0));
    cr_assert_eq(cbus_admit(p, &ua, NULL), CBUS_ALLOW, "a shares b's cut prefix only");
    cr_assert_eq(cbus_admit(p, &tb, NULL), CBUS_ALLOW);
    kill(pid, SIGTERM);
    cr_assert_eq(exit_code(pid), 0, "%s", log_text(0));
    cbus_producer_close(p);
}
