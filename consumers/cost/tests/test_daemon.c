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
    static struct hook_server h;
    memset(&h, 0, sizeof h);
    pthread_mutex_init(&h.mu, NULL);
    h.fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(h.fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t al = sizeof a;
    getsockname(h.fd, (struct sockaddr *)&a, &al);
    listen(h.fd, 8);
    pthread_create(&h.t, NULL, hook_loop, &h);

    char cfg[1024];
    snprintf(cfg, sizeof cfg,
             "%s[webhook]\nurl = http://127.0.0.1:%u/alerts\ntimeout = 2s\n"
             "[prometheus]\nlisten = 127.0.0.1:0\n",
             BASE_CONFIG, ntohs(a.sin_port));
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
        pthread_mutex_lock(&h.mu);
        n = 0;
        for (const char *c = h.got; (c = strstr(c, "POST /alerts")); c++)
            n++;
        pthread_mutex_unlock(&h.mu);
        if (n >= 3)
            break;
        test_sleep_ms(20);
    }
    cr_assert_eq(n, 3, "alerts: %s\nlog: %s", h.got, log_text(0));
    cr_assert(strstr(h.got, "\"event\":\"threshold\",\"scope\":\"user\",\"who\":\"alice\",\"threshold_pct\":50"),
              "%s", h.got);
    cr_assert(strstr(h.got, "\"event\":\"budget_exceeded\""), "%s", h.got);
    cr_assert(strstr(h.got, "\"spent_usd\":0.012000000000,\"limit_usd\":0.010000000000,\"period\":\"1d\""),
              "%s", h.got);

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
    h.stop = 1;
    shutdown(h.fd, SHUT_RDWR);
    close(h.fd);
    pthread_join(h.t, NULL);
    cbus_producer_close(p);
}
