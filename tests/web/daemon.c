/* cbus-web end to end: a real bus, a real cbus-web process, producers in
 * this process, and clients over real loopback sockets reading the raw
 * HTTP and Server-Sent Events bytes. */
#include <criterion/criterion.h>

#include <cbus/bus.h>
#include <cbus/consumer.h>
#include <cbus/producer.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon.h"
#include "support.h"

static char bus[64];
static char dir[64], status_path[128];
static pid_t daemon_pid;
static unsigned port;
static const char *config_only; /* start_daemon: --config this, no --bus or --status-file */
static cbus_producer *prod;

static void stop_daemon(void)
{
    if (daemon_pid > 0) {
        kill(daemon_pid, SIGTERM);
        int st = test_wait_pid(daemon_pid, 5000);
        daemon_pid = 0;
        /* A clean stop (under ASan: no leak, no error either). */
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "cbus-web stopped with status %#x", st);
    }
}

static void setup(void)
{
    test_bus_name(bus, sizeof bus);
    test_bus_create(bus, 65536);
    snprintf(dir, sizeof dir, "/tmp/cbus-web-test.XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(status_path, sizeof status_path, "%s/status.json", dir);
    config_only = NULL;
    cr_assert_eq(cbus_producer_open(&prod, bus, NULL), 0);
}

static void teardown(void)
{
    stop_daemon();
    cbus_producer_close(prod);
    prod = NULL;
    cbus_bus_destroy(bus);
    unlink(status_path);
    rmdir(dir);
}

TestSuite(web_daemon, .init = setup, .fini = teardown, .timeout = 120);

/* Starts cbus-web on a free loopback port with extra args (NULL-ended);
 * env_token sets CBUS_WEB_TOKEN.  Reads "listening HOST PORT" from its
 * stdout.  Returns the exit status instead when it exits first. */
static int start_daemon(const char *env_token, const char *const *extra)
{
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        if (env_token)
            setenv("CBUS_WEB_TOKEN", env_token, 1);
        else
            unsetenv("CBUS_WEB_TOKEN");
        const char *argv[32] = {WEB_DAEMON_PATH, "--listen", "127.0.0.1:0",
                                "--prices", WEB_PRICES, "--cost-snapshot", "/nonexistent/snap.json",
                                "--ratelimit-status", "/nonexistent/rl.json"};
        int n = 9;
        if (config_only) { /* bus and status file from the config */
            argv[n++] = "--config";
            argv[n++] = config_only;
        } else {
            argv[n++] = "--bus";
            argv[n++] = bus;
            argv[n++] = "--status-file";
            argv[n++] = status_path;
        }
        for (int i = 0; extra && extra[i] && n < 31; i++)
            argv[n++] = extra[i];
        argv[n] = NULL;
        execv(WEB_DAEMON_PATH, (char *const *)argv);
        _exit(127);
    }
    close(fds[1]);
    char buf[256];
    size_t len = 0;
    uint64_t until = test_now_ms() + 10000;
    while (test_now_ms() < until && len < sizeof buf - 1) {
        struct pollfd pfd = {fds[0], POLLIN, 0};
        if (poll(&pfd, 1, 100) <= 0)
            continue;
        ssize_t r = read(fds[0], buf + len, sizeof buf - 1 - len);
        if (r <= 0)
            break;
        len += (size_t)r;
        buf[len] = '\0';
        if (strchr(buf, '\n'))
            break;
    }
    close(fds[0]);
    buf[len] = '\0';
    char host[64];
    if (sscanf(buf, "listening %63s %u", host, &port) == 2) {
        daemon_pid = pid;
        return -1;
    }
    int st = test_wait_pid(pid, 5000);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static void start_ok(const char *env_token, const char *const *extra)
{
    cr_assert_eq(start_daemon(env_token, extra), -1, "cbus-web did not start");
}

static int dial(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0, "%s", strerror(errno));
    return fd;
}

static void send_all(int fd, const char *s)
{
    size_t n = strlen(s);
    cr_assert_eq(send(fd, s, n, MSG_NOSIGNAL), (ssize_t)n);
}

/* GET path with extra header lines ("K: V\r\n..."), whole answer. */
static char *get(const char *path, const char *headers)
{
    int fd = dial();
    char req[2048];
    snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nConnection: close\r\n%s\r\n",
             path, port, headers ? headers : "");
    send_all(fd, req);
    size_t cap = 1 << 20, len = 0;
    char *buf = malloc(cap + 1);
    uint64_t until = test_now_ms() + 10000;
    while (len < cap && test_now_ms() < until) {
        struct pollfd pfd = {fd, POLLIN, 0};
        if (poll(&pfd, 1, 100) <= 0)
            continue;
        ssize_t r = read(fd, buf + len, cap - len);
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    buf[len] = '\0';
    close(fd);
    return buf;
}

static int status_of(const char *resp)
{
    int st = 0;
    sscanf(resp, "HTTP/1.%*d %d", &st);
    return st;
}

/* ---- SSE clients ------------------------------------------------------------ */

struct sse {
    int fd;
    char *raw;          /* bytes off the socket */
    size_t rlen, roff;
    char *buf;          /* the body, de-chunked */
    size_t len, cap, off; /* off: parsed up to here */
    int head_done, chunked, eof;
    size_t chunk_left;  /* bytes of the current chunk still to come */
    int status;
};

static void sse_open(struct sse *s, const char *path, const char *headers)
{
    memset(s, 0, sizeof *s);
    s->fd = dial();
    s->cap = 1 << 20;
    s->buf = malloc(s->cap);
    s->raw = malloc(s->cap);
    char req[2048];
    snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nAccept: text/event-stream\r\n%s\r\n",
             path, port, headers ? headers : "");
    send_all(s->fd, req);
}

static void sse_close(struct sse *s)
{
    close(s->fd);
    free(s->buf);
    free(s->raw);
}

/* Moves what can be decoded from raw to buf (the head, then chunks). */
static void decode(struct sse *s)
{
    if (!s->head_done) {
        char *end = memmem(s->raw, s->rlen, "\r\n\r\n", 4);
        if (!end)
            return;
        *end = '\0';
        sscanf(s->raw, "HTTP/1.%*d %d", &s->status);
        s->chunked = strcasestr(s->raw, "Transfer-Encoding: chunked") != NULL;
        s->roff = (size_t)(end - s->raw) + 4;
        s->head_done = 1;
    }
    for (;;) {
        size_t avail = s->rlen - s->roff;
        if (!s->chunked || s->chunk_left) {
            size_t n = s->chunked && s->chunk_left < avail ? s->chunk_left : avail;
            cr_assert_leq(s->len + n, s->cap, "body buffer full");
            memcpy(s->buf + s->len, s->raw + s->roff, n);
            s->len += n;
            s->roff += n;
            if (s->chunked)
                s->chunk_left -= n;
            if (!s->chunked || s->chunk_left)
                break;
            continue;
        }
        /* a chunk-size line, preceded by the CRLF that ends the previous chunk */
        char *p = s->raw + s->roff;
        char *nl = memmem(p, avail, "\r\n", 2);
        if (nl == p) { /* the previous chunk's CRLF */
            s->roff += 2;
            continue;
        }
        if (!nl)
            break;
        unsigned long n = strtoul(p, NULL, 16);
        s->roff = (size_t)(nl - s->raw) + 2;
        if (n == 0) {
            s->eof = 1;
            break;
        }
        s->chunk_left = n;
    }
    memmove(s->raw, s->raw + s->roff, s->rlen - s->roff);
    s->rlen -= s->roff;
    s->roff = 0;
}

/* The next SSE frame's "id:", "event:" and "data:".  Returns 1, 0 on
 * timeout, -1 at the end of the stream. */
struct frame {
    char id[64], event[32];
    char data[8192];
};

static int sse_next(struct sse *s, struct frame *f, unsigned timeout_ms)
{
    uint64_t until = test_now_ms() + timeout_ms;
    memset(f, 0, sizeof *f);
    for (;;) {
        for (;;) {
            char *nl = memchr(s->buf + s->off, '\n', s->len - s->off);
            if (!nl)
                break;
            size_t n = (size_t)(nl - (s->buf + s->off));
            char line[9000];
            if (n >= sizeof line)
                n = sizeof line - 1;
            memcpy(line, s->buf + s->off, n);
            line[n] = '\0';
            s->off = (size_t)(nl - s->buf) + 1;
            if (!strncmp(line, "id: ", 4))
                snprintf(f->id, sizeof f->id, "%.63s", line + 4);
            else if (!strncmp(line, "event: ", 7))
                snprintf(f->event, sizeof f->event, "%.31s", line + 7);
            else if (!strncmp(line, "data: ", 6))
                snprintf(f->data, sizeof f->data, "%.8191s", line + 6);
            else if (!n && (f->data[0] || f->event[0]))
                return 1;
        }
        if (s->off > s->cap / 2) {
            memmove(s->buf, s->buf + s->off, s->len - s->off);
            s->len -= s->off;
            s->off = 0;
        }
        if (s->eof)
            return -1;
        uint64_t now = test_now_ms();
        if (now >= until)
            return 0;
        struct pollfd pfd = {s->fd, POLLIN, 0};
        if (poll(&pfd, 1, until - now < 50 ? (int)(until - now) : 50) <= 0)
            continue;
        ssize_t r = read(s->fd, s->raw + s->rlen, s->cap - s->rlen);
        if (r <= 0)
            return -1;
        s->rlen += (size_t)r;
        decode(s);
    }
}

/* Waits until the daemon has n streams open (it says so in /v1/state). */
static void wait_clients(unsigned n)
{
    uint64_t until = test_now_ms() + 10000;
    char want[64];
    snprintf(want, sizeof want, "\"clients\":%u,", n);
    while (test_now_ms() < until) {
        char *r = get("/v1/state", NULL);
        int ok = strstr(r, want) != NULL;
        free(r);
        if (ok)
            return;
        test_sleep_ms(100);
    }
    cr_assert_fail("the daemon never had %u streams", n);
}

static void token(cbus_ctx *c, const char *text)
{
    cr_assert_eq(cbus_llm_new_token(prod, c, text, strlen(text)), 0);
}

/* ---- tests ------------------------------------------------------------------ */

Test(web_daemon, events_filtered_by_user_and_kind_in_order)
{
    start_ok(NULL, NULL);
    struct sse s;
    sse_open(&s, "/v1/events?user=ann&kind=llm_new_token", NULL);
    wait_clients(1);
    cbus_ctx ann, bob;
    cbus_ctx_init(&ann);
    cbus_ctx_init(&bob);
    cbus_ctx_set_user(&ann, "ann");
    cbus_ctx_set_user(&bob, "bob");
    cbus_ctx_set_model(&ann, "gpt-4o");
    cr_assert_eq(cbus_llm_start(prod, &ann, "hi", NULL), 0);
    for (int i = 0; i < 50; i++) {
        char t[16];
        snprintf(t, sizeof t, "tok%d", i);
        token(&ann, t);
        token(&bob, "bob");
    }
    struct frame f;
    for (int i = 0; i < 50; i++) {
        cr_assert_eq(sse_next(&s, &f, 5000), 1, "frame %d", i);
        char want[64];
        snprintf(want, sizeof want, "\"preview\":\"tok%d\"", i);
        cr_assert(strstr(f.data, "\"kind\":\"llm_new_token\""), "%s", f.data);
        cr_assert(strstr(f.data, "\"user\":\"ann\""), "%s", f.data);
        cr_assert(strstr(f.data, want), "frame %d: %s", i, f.data);
        cr_assert_neq(f.id[0], '\0');
    }
    cr_assert_eq(sse_next(&s, &f, 300), 0, "nothing else matches: %s", f.data);
    sse_close(&s);
}

Test(web_daemon, bad_filters_are_400_naming_the_parameter)
{
    start_ok(NULL, NULL);
    char *r = get("/v1/events?colour=red", NULL);
    cr_assert_eq(status_of(r), 400, "%s", r);
    cr_assert(strstr(r, "\"param\":\"colour\""), "%s", r);
    cr_assert(strstr(r, "unknown filter 'colour'"), "%s", r);
    free(r);
    r = get("/v1/events?kind=llm_end,nonsense", NULL);
    cr_assert_eq(status_of(r), 400, "%s", r);
    cr_assert(strstr(r, "\"param\":\"kind\""), "%s", r);
    free(r);
    r = get("/v1/events?trace=zz", NULL);
    cr_assert_eq(status_of(r), 400, "%s", r);
    cr_assert(strstr(r, "\"param\":\"trace\""), "%s", r);
    free(r);
    r = get("/v1/runs/nothex/progress", NULL);
    cr_assert_eq(status_of(r), 400, "%s", r);
    free(r);
    r = get("/v1/runs/0123456789abcdef0123456789abcdef/progress?user=x", NULL);
    cr_assert_eq(status_of(r), 400, "%s", r);
    free(r);
    r = get("/v1/nothing", NULL);
    cr_assert_eq(status_of(r), 404, "%s", r);
    free(r);
}

static uint64_t id_seq(const char *id)
{
    const char *dash = strrchr(id, '-');
    cr_assert_not_null(dash, "id %s", id);
    return strtoull(dash + 1, NULL, 10);
}

Test(web_daemon, last_event_id_resumes_from_the_history)
{
    const char *const extra[] = {"--history", "1024", "--client-queue", "1024", NULL};
    start_ok(NULL, extra);
    cbus_ctx c;
    cbus_ctx_init(&c);
    cbus_ctx_set_user(&c, "ann");
    /* Settle the daemon on the bus before emitting (it starts at the newest). */
    struct sse s;
    sse_open(&s, "/v1/events", NULL);
    wait_clients(1);
    for (int i = 0; i < 10; i++) {
        char t[16];
        snprintf(t, sizeof t, "r%d", i);
        token(&c, t);
    }
    struct frame f;
    char ids[10][64];
    for (int i = 0; i < 10; i++) {
        cr_assert_eq(sse_next(&s, &f, 5000), 1);
        snprintf(ids[i], sizeof ids[i], "%s", f.id);
    }
    sse_close(&s);
    /* Resume after the 5th: the 6th to the 10th, nothing before. */
    char hdr[128];
    snprintf(hdr, sizeof hdr, "Last-Event-ID: %s\r\n", ids[4]);
    sse_open(&s, "/v1/events", hdr);
    for (int i = 5; i < 10; i++) {
        cr_assert_eq(sse_next(&s, &f, 5000), 1);
        cr_assert_str_eq(f.id, ids[i]);
        char want[32];
        snprintf(want, sizeof want, "\"preview\":\"r%d\"", i);
        cr_assert(strstr(f.data, want), "%s", f.data);
    }
    sse_close(&s);
    /* An id of another daemon run: a reset notice, then live events. */
    sse_open(&s, "/v1/events", "Last-Event-ID: 1234-5\r\n");
    cr_assert_eq(sse_next(&s, &f, 5000), 1);
    cr_assert_str_eq(f.event, "reset");
    sse_close(&s);
    /* Past the history (1024 events): a "lost" notice with the count, then
     * the oldest still held. */
    for (int i = 0; i < 2000; i++)
        token(&c, "x");
    test_sleep_ms(300);
    sse_open(&s, "/v1/events", hdr);
    cr_assert_eq(sse_next(&s, &f, 5000), 1);
    cr_assert_str_eq(f.event, "lost", "%s %s", f.event, f.data);
    uint64_t missed = strtoull(strstr(f.data, "\"missed\":") + 9, NULL, 10);
    cr_assert_eq(sse_next(&s, &f, 5000), 1);
    uint64_t first = id_seq(f.id);
    cr_assert_eq(first, id_seq(ids[4]) + 1 + missed, "first %llu after missing %llu",
                 (unsigned long long)first, (unsigned long long)missed);
    cr_assert_gt(missed, 900u);
    sse_close(&s);
    /* start=oldest replays the history from its oldest event. */
    sse_open(&s, "/v1/events?start=oldest", NULL);
    cr_assert_eq(sse_next(&s, &f, 5000), 1);
    cr_assert_eq(id_seq(f.id), first);
    sse_close(&s);
}

Test(web_daemon, progress_stream_shows_each_step)
{
    start_ok(NULL, NULL);
    struct sse live;
    sse_open(&live, "/v1/events", NULL);
    wait_clients(1);
    cbus_ctx root, llm, tool;
    cbus_ctx_init(&root);
    cbus_ctx_set_user(&root, "ann");
    cr_assert_eq(cbus_chain_start(prod, &root, "agent", "question"), 0);
    cbus_ctx_child(&llm, &root);
    cbus_ctx_set_provider(&llm, "openai");
    cbus_ctx_set_model(&llm, "gpt-4o");
    cr_assert_eq(cbus_llm_start(prod, &llm, "question", NULL), 0);
    token(&llm, "Hel");
    token(&llm, "lo");
    struct cbus_usage u = {.input_tokens = 1000, .output_tokens = 100,
                           .usage_present = CBUS_USAGE_INPUT | CBUS_USAGE_OUTPUT};
    cr_assert_eq(cbus_llm_end(prod, &llm, &u, "Hello"), 0);
    /* The client joins mid-run: the steps so far come from the history. */
    char trace[33], path[128];
    cbus_id_hex(trace, root.tmpl.trace_id);
    snprintf(path, sizeof path, "/v1/runs/%s/progress", trace);
    struct frame f;
    for (int i = 0; i < 5; i++)
        cr_assert_eq(sse_next(&live, &f, 5000), 1);
    struct sse s;
    sse_open(&s, path, NULL);
    const char *want[][3] = {
        {"\"step\":1,\"action\":\"chain agent\",\"status\":\"in_progress\"", "chain_start", NULL},
        {"\"step\":2,\"action\":\"llm gpt-4o\",\"status\":\"in_progress\"", "llm_start", NULL},
        {"\"chunk\":\"Hel\"", "llm_new_token", NULL},
        {"\"chunk\":\"lo\"", "llm_new_token", NULL},
        {"\"step\":2,\"action\":\"llm gpt-4o\",\"status\":\"complete\"", "llm_end",
         "\"cost_usd\":\"0.003500000000\""},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        cr_assert_eq(sse_next(&s, &f, 5000), 1, "step frame %zu", i);
        cr_assert_str_eq(f.event, "progress");
        cr_assert(strstr(f.data, want[i][0]), "frame %zu: %s", i, f.data);
        cr_assert(strstr(f.data, want[i][1]), "frame %zu: %s", i, f.data);
        if (want[i][2])
            cr_assert(strstr(f.data, want[i][2]), "frame %zu: %s", i, f.data);
    }
    /* Live from here on: a tool that fails, then the agent ends. */
    cbus_ctx_child(&tool, &root);
    cr_assert_eq(cbus_tool_start(prod, &tool, "search", "q"), 0);
    cr_assert_eq(sse_next(&s, &f, 5000), 1);
    cr_assert(strstr(f.data, "\"step\":3,\"action\":\"tool search\",\"status\":\"in_progress\""), "%s", f.data);
    cr_assert_eq(cbus_tool_error(prod, &tool, "Timeout", "took too long"), 0);
    cr_assert_eq(sse_next(&s, &f, 5000), 1);
    cr_assert(strstr(f.data, "\"status\":\"error\""), "%s", f.data);
    cr_assert(strstr(f.data, "\"error\":\"Timeout\""), "%s", f.data);
    cr_assert_eq(cbus_chain_end(prod, &root, "done"), 0);
    cr_assert_eq(sse_next(&s, &f, 5000), 1);
    cr_assert(strstr(f.data, "\"step\":1,\"action\":\"chain agent\",\"status\":\"complete\""), "%s", f.data);
    cr_assert(strstr(f.data, "\"done\":true"), "%s", f.data);
    cr_assert_eq(sse_next(&s, &f, 5000), 1);
    cr_assert_str_eq(f.event, "done");
    cr_assert_eq(sse_next(&s, &f, 5000), -1, "the stream ends with the trace");
    sse_close(&s);
    sse_close(&live);
    /* The error is in the state's recent errors. */
    char *r = get("/v1/state", NULL);
    (void)r;
    free(r);
}

Test(web_daemon, a_client_that_never_reads_is_cut_and_others_get_everything)
{
    /* A queue of 8,192 events: the reading client survives a stall of the
     * server's thread of that many events on a loaded machine, while the
     * stuck one (its socket buffers hold ~10k of these frames at most) falls
     * 30,000 behind. */
    const char *const extra[] = {"--history", "16384", "--client-queue", "8192", NULL};
    start_ok(NULL, extra);
    /* The stuck client: a tiny receive window, and it never reads. */
    int stuck = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int small = 4096;
    setsockopt(stuck, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(connect(stuck, (struct sockaddr *)&a, sizeof a), 0);
    char req[256];
    snprintf(req, sizeof req, "GET /v1/events HTTP/1.1\r\nHost: 127.0.0.1:%u\r\n\r\n", port);
    send_all(stuck, req);
    struct sse s;
    sse_open(&s, "/v1/events?user=ann", NULL);
    wait_clients(2);
    cbus_ctx c;
    cbus_ctx_init(&c);
    cbus_ctx_set_user(&c, "ann");
    cbus_ctx_set_model(&c, "a-model-name-that-makes-the-json-longer");
    /* 40,000 events (~18 MB of JSON for the stuck client, far past any
     * socket buffer), paced at about 20k/s so a reading client keeps up
     * on a loaded machine; the reader drains as they come. */
    enum { N = 40000 };
    int got = 0;
    struct frame f;
    for (int i = 0; i < N; i++) {
        char t[32];
        snprintf(t, sizeof t, "chunk-%d", i);
        token(&c, t);
        if (i % 100 == 99) {
            test_sleep_ms(1);
            while (sse_next(&s, &f, 1) == 1) {
                char want[40];
                snprintf(want, sizeof want, "\"preview\":\"chunk-%d\"", got);
                cr_assert(strstr(f.data, want), "frame %d: %.200s", got, f.data);
                got++;
            }
        }
    }
    while (got < N) {
        int r = sse_next(&s, &f, 5000);
        cr_assert_eq(r, 1, "the reading client stopped at %d of %d (%s)", got, N, f.event);
        char want[40];
        snprintf(want, sizeof want, "\"preview\":\"chunk-%d\"", got);
        cr_assert(strstr(f.data, want), "frame %d: %.200s", got, f.data);
        got++;
    }
    /* The state is rendered every second. */
    char *r = NULL;
    for (uint64_t until = test_now_ms() + 5000; test_now_ms() < until; test_sleep_ms(100)) {
        free(r);
        r = get("/v1/state", NULL);
        if (strstr(r, "\"events\":40000,"))
            break;
    }
    cr_assert(strstr(r, "\"clients_cut\":1,"), "%.600s", r);
    /* The consumer was never slowed: it lost nothing. */
    cr_assert(strstr(r, "\"lost\":0,"), "%.600s", r);
    free(r);
    r = get("/metrics", NULL);
    cr_assert(strstr(r, "cbus_web_clients_cut_total 1\n"), "%s", r);
    free(r);
    close(stuck);
    sse_close(&s);
}

Test(web_daemon, origin_and_token_rules)
{
    start_ok(NULL, NULL);
    char *r = get("/v1/state", "Origin: http://evil.example\r\n");
    cr_assert_eq(status_of(r), 403, "%s", r);
    free(r);
    char same[96];
    snprintf(same, sizeof same, "Origin: http://127.0.0.1:%u\r\n", port);
    r = get("/v1/state", same);
    cr_assert_eq(status_of(r), 200, "%s", r);
    free(r);
    /* DNS rebinding: a foreign name for our loopback address. */
    int fd = dial();
    send_all(fd, "GET /v1/state HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n");
    char buf[512] = {0};
    test_sleep_ms(200);
    cr_assert_gt(read(fd, buf, sizeof buf - 1), 0);
    cr_assert_eq(status_of(buf), 403, "%s", buf);
    close(fd);
    r = get("/", NULL);
    cr_assert_eq(status_of(r), 200, "%s", r);
    cr_assert(strstr(r, "<html"), "%.300s", r);
    free(r);
    stop_daemon();

    const char *tok = "0123456789abcdef-token";
    start_ok(tok, NULL);
    r = get("/v1/state", NULL);
    cr_assert_eq(status_of(r), 401, "%s", r);
    free(r);
    r = get("/v1/events", NULL);
    cr_assert_eq(status_of(r), 401, "%s", r);
    free(r);
    r = get("/v1/state", "Authorization: Bearer wrong-token-wrong-token\r\n");
    cr_assert_eq(status_of(r), 401, "%s", r);
    free(r);
    r = get("/v1/state", "Authorization: Bearer 0123456789abcdef-token\r\n");
    cr_assert_eq(status_of(r), 200, "%s", r);
    free(r);
    r = get("/v1/state", "Origin: http://evil.example\r\n");
    cr_assert_eq(status_of(r), 403, "%s", r);
    free(r);
    r = get("/v1/state", "Origin: http://other.example\r\nAuthorization: Bearer 0123456789abcdef-token\r\n");
    cr_assert_eq(status_of(r), 200, "%s", r);
    cr_assert(strstr(r, "Access-Control-Allow-Origin: http://other.example"), "%s", r);
    free(r);
    /* The page itself carries no data: it loads without the token. */
    r = get("/", NULL);
    cr_assert_eq(status_of(r), 200, "%.300s", r);
    free(r);
    stop_daemon();

    /* Not loopback without a token: refused at start. */
    const char *const wide[] = {"--listen", "0.0.0.0:0", NULL};
    cr_assert_eq(start_daemon(NULL, wide), 2);
}

Test(web_daemon, state_has_the_bus_numbers)
{
    start_ok(NULL, NULL);
    struct sse s;
    sse_open(&s, "/v1/events", NULL);
    wait_clients(1);
    cbus_ctx c;
    cbus_ctx_init(&c);
    for (int i = 0; i < 123; i++)
        token(&c, "t");
    cr_assert_eq(cbus_llm_error(prod, &c, "RateLimitError", "slow down", 429), 0);
    struct frame f;
    for (int i = 0; i < 124; i++)
        cr_assert_eq(sse_next(&s, &f, 5000), 1);
    sse_close(&s);
    cbus_bus *b;
    cr_assert_eq(cbus_bus_open(&b, bus, 0), 0);
    uint64_t tail = cbus_bus_tail(b);
    cbus_bus_close(b);
    char want[64];
    snprintf(want, sizeof want, "\"tail\":%llu,", (unsigned long long)tail);
    uint64_t until = test_now_ms() + 5000;
    char *r = NULL;
    while (test_now_ms() < until) {
        free(r);
        r = get("/v1/state", NULL);
        if (strstr(r, want) && strstr(r, "\"consumed\":124,"))
            break;
        test_sleep_ms(100);
    }
    cr_assert(strstr(r, want), "%s", r);
    cr_assert(strstr(r, "\"name\":\"web\""), "%s", r);
    cr_assert(strstr(r, "\"errors\":[{\"kind\":\"llm_error\""), "%s", r);
    cr_assert(strstr(r, "\"http_status\":429"), "%s", r);
    cr_assert(strstr(r, "\"cost\":null,\"cost_error\":\"no such file"), "%s", r);
    free(r);
    /* The common status envelope (status.h), and running:false after a stop. */
    stop_daemon();
    FILE *sf = fopen(status_path, "r");
    cr_assert_not_null(sf, "%s", status_path);
    char doc[4096] = {0};
    cr_assert_gt(fread(doc, 1, sizeof doc - 1, sf), 0);
    fclose(sf);
    cr_assert(strstr(doc, "\"daemon\":\"cbus-web\""), "%s", doc);
    cr_assert(strstr(doc, "\"running\":false"), "%s", doc);
    cr_assert(strstr(doc, "\"web\":{\"listen\":\"127.0.0.1\""), "%s", doc);
    cr_assert(strstr(doc, "\"events\":124,"), "%s", doc);
}

/* The sections every daemon shares: [bus] name (no --bus), [bus] consumer,
 * [status] file and interval; the envelope is read by the real `cbusctl
 * status` like the other daemons'.  (Before, any section but [web] was
 * refused.) */
Test(web_daemon, bus_and_status_sections_and_cbusctl_status)
{
    char cfg[128], sf[128], text[512];
    snprintf(cfg, sizeof cfg, "%s/web.ini", dir);
    snprintf(sf, sizeof sf, "%s/from-config.json", dir);
    snprintf(text, sizeof text, "[bus]\nname = %s\nconsumer = webcfg\n[status]\nfile = %s\n"
                                "interval = 20ms\n[web]\nstate_interval = 1h\n", bus, sf);
    FILE *f = fopen(cfg, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
    config_only = cfg;
    start_ok(NULL, NULL);
    /* Written on the [status] interval, not with the hourly documents. */
    char *doc = NULL;
    uint64_t until = test_now_ms() + 10000;
    while (test_now_ms() < until) {
        size_t len;
        free(doc);
        doc = NULL;
        if (cbus_read_file(sf, 0, &doc, &len) == 0 && strstr(doc, "\"webcfg\""))
            break;
        test_sleep_ms(10);
    }
    cr_assert(doc && strstr(doc, "\"daemon\":\"cbus-web\""), "%s", doc ? doc : "(none)");
    cr_assert(strstr(doc, "\"consumer\":{\"name\":\"webcfg\""), "%s", doc);
    free(doc);
    char cmd[256], out[8192];
    snprintf(cmd, sizeof cmd, "%s status %s", CBUSCTL_BIN, sf);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s", out);
    cr_assert(strstr(out, "cbus-web") && strstr(out, "running"), "%s", out);
    stop_daemon();
    unlink(sf);
    unlink(cfg);
}
