/* cbus-history as a process: the real binary, real producer processes,
 * SIGKILL under load, the HTTP API over loopback, a full disk. */
#include <criterion/criterion.h>

#include <cbus/bus.h>
#include <cbus/consumer.h>
#include <cbus/producer.h>

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sbuf.h"
#include "support.h"

#ifndef CBUS_HISTORY_BIN
#error "CBUS_HISTORY_BIN: the cbus-history binary"
#endif

static char bus[64], dir[256], cfg[300], dbpath[300], logpath[300];
/* Daemons this test started: a failed assertion ends the test before it
 * stops them, so teardown kills what is left (no orphan outlives a test). */
static pid_t started[16];
static unsigned nstarted;

static void setup(void)
{
    test_bus_name(bus, sizeof bus);
    /* room for every event of a test: the ring never laps, so a daemon
     * killed for a while loses nothing the producers sent */
    test_bus_create(bus, 1u << 17);
    snprintf(dir, sizeof dir, "/tmp/cbus-histd-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(cfg, sizeof cfg, "%s/history.ini", dir);
    snprintf(dbpath, sizeof dbpath, "%s/h.db", dir);
    snprintf(logpath, sizeof logpath, "%s/daemon.log", dir);
}

static void teardown(void)
{
    for (unsigned i = 0; i < nstarted; i++)
        /* only a child of ours not yet reaped: never a reused pid */
        if (started[i] > 0 && waitpid(started[i], NULL, WNOHANG) == 0) {
            kill(started[i], SIGKILL);
            test_wait_pid(started[i], 5000);
        }
    nstarted = 0;
    cbus_bus_destroy(bus);
    if (getenv("CBUS_TEST_KEEP")) { /* to read the daemon's log afterwards */
        fprintf(stderr, "kept %s\n", dir);
        return;
    }
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd)) {
    }
}

static void write_cfg(const char *db, const char *extra)
{
    FILE *f = fopen(cfg, "w");
    cr_assert_not_null(f);
    fprintf(f, "[bus]\nname = %s\n[store]\npath = %s\nfsync = false\n%s", bus, db,
            extra ? extra : "");
    fclose(f);
}

/* Starts the daemon (argv after the binary, NULL-terminated), its output
 * appended to the log. */
static pid_t start_daemon_argv(const char *const *argv)
{
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        int fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    if (nstarted < sizeof started / sizeof started[0])
        started[nstarted++] = pid;
    return pid;
}

static pid_t start_daemon(void)
{
    const char *argv[] = {CBUS_HISTORY_BIN, "--config", cfg, NULL};
    return start_daemon_argv(argv);
}

static void stop_daemon(pid_t pid)
{
    kill(pid, SIGTERM);
    int st = test_wait_pid(pid, 20000);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "daemon exit status %d", st);
}

static int64_t db_int(const char *path, const char *sql)
{
    sqlite3 *db;
    int64_t v = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
        sqlite3_busy_timeout(db, 2000);
        sqlite3_stmt *q;
        if (sqlite3_prepare_v2(db, sql, -1, &q, NULL) == SQLITE_OK) {
            if (sqlite3_step(q) == SQLITE_ROW)
                v = sqlite3_column_int64(q, 0);
            sqlite3_finalize(q);
        }
    }
    sqlite3_close(db);
    return v;
}

static int64_t stored(const char *path)
{
    return db_int(path, "SELECT count(*) FROM messages");
}

/* Waits until the store holds at least n messages; returns what it holds. */
static int64_t wait_stored(const char *path, int64_t n, unsigned timeout_ms)
{
    uint64_t end = test_now_ms() + timeout_ms;
    int64_t have;
    while ((have = stored(path)) < n && test_now_ms() < end)
        test_sleep_ms(20);
    return have;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return strdup("");
    struct sbuf b;
    sbuf_init(&b);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        sbuf_add(&b, chunk, n);
    fclose(f);
    return b.data ? b.data : strdup("");
}

static int log_has(const char *needle, unsigned timeout_ms)
{
    uint64_t end = test_now_ms() + timeout_ms;
    for (;;) {
        char *t = slurp(logpath);
        int found = strstr(t, needle) != NULL;
        free(t);
        if (found || test_now_ms() > end)
            return found;
        test_sleep_ms(20);
    }
}

/* A conversation of 10 messages from 12 events (tests/test_store.c has
 * the same run checked message by message). */
static int emit_conversation(cbus_producer *p, const char *session, const char *user)
{
    static const char *const pr[] = {
        "[{\"role\":\"system\",\"parts\":[{\"type\":\"text\",\"content\":\"You are a weather assistant.\"}]},"
        "{\"role\":\"human\",\"parts\":[{\"type\":\"text\",\"content\":\"Weather in Paris?\"}]}]",
        "[{\"role\":\"system\",\"parts\":[{\"type\":\"text\",\"content\":\"You are a weather assistant.\"}]},"
        "{\"role\":\"human\",\"parts\":[{\"type\":\"text\",\"content\":\"Weather in Paris?\"}]},"
        "{\"role\":\"ai\",\"parts\":[{\"type\":\"text\",\"content\":\"Let me look.\"}]},"
        "{\"role\":\"tool\",\"parts\":[{\"type\":\"text\",\"content\":\"sunny 21C\"}]}]",
        "[{\"role\":\"system\",\"parts\":[{\"type\":\"text\",\"content\":\"You are a weather assistant.\"}]},"
        "{\"role\":\"human\",\"parts\":[{\"type\":\"text\",\"content\":\"Weather in Paris?\"}]},"
        "{\"role\":\"ai\",\"parts\":[{\"type\":\"text\",\"content\":\"Let me look.\"}]},"
        "{\"role\":\"tool\",\"parts\":[{\"type\":\"text\",\"content\":\"sunny 21C\"}]},"
        "{\"role\":\"ai\",\"parts\":[{\"type\":\"text\",\"content\":\"Sunny, 21C.\"}]},"
        "{\"role\":\"human\",\"parts\":[{\"type\":\"text\",\"content\":\"And tomorrow?\"}]}]",
        "[{\"role\":\"system\",\"parts\":[{\"type\":\"text\",\"content\":\"You are a weather assistant.\"}]},"
        "{\"role\":\"human\",\"parts\":[{\"type\":\"text\",\"content\":\"Weather in Paris?\"}]},"
        "{\"role\":\"ai\",\"parts\":[{\"type\":\"text\",\"content\":\"Let me look.\"}]},"
        "{\"role\":\"tool\",\"parts\":[{\"type\":\"text\",\"content\":\"sunny 21C\"}]},"
        "{\"role\":\"ai\",\"parts\":[{\"type\":\"text\",\"content\":\"Sunny, 21C.\"}]},"
        "{\"role\":\"human\",\"parts\":[{\"type\":\"text\",\"content\":\"And tomorrow?\"}]},"
        "{\"role\":\"ai\",\"parts\":[{\"type\":\"text\",\"content\":\"Rain.\"}]},"
        "{\"role\":\"human\",\"parts\":[{\"type\":\"text\",\"content\":\"And tomorrow?\"}]}]",
    };
    static const char *const out[] = {"Let me look.", "Sunny, 21C.", "Rain.", "Still rain."};
    cbus_ctx root, c;
    cbus_ctx_init(&root);
    cbus_ctx_set_session(&root, session);
    cbus_ctx_set_user(&root, user);
    int r = 0;
    struct cbus_usage u = {.input_tokens = 10, .output_tokens = 2,
                           .usage_present = CBUS_USAGE_INPUT | CBUS_USAGE_OUTPUT};
    for (int i = 0; i < 4 && !r; i++) {
        cbus_ctx_child(&c, &root);
        r = cbus_chat_model_start_messages(p, &c, pr[i], strlen(pr[i]), NULL, NULL);
        if (!r)
            r = cbus_llm_end(p, &c, &u, out[i]);
        if (!r && i == 0) {
            cbus_ctx_child(&c, &root);
            r = cbus_tool_start(p, &c, "weather", "Paris");
            if (!r)
                r = cbus_tool_end(p, &c, "sunny 21C");
        }
    }
    return r;
}

/* A producer process: n conversations named prefix-i; exits 0 when every
 * emit was taken. */
static pid_t producer(const char *prefix, int from, int n, unsigned pause_every)
{
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid)
        return pid;
    cbus_producer *p;
    if (cbus_producer_open(&p, bus, NULL))
        _exit(3);
    char sess[64];
    for (int i = from; i < from + n; i++) {
        snprintf(sess, sizeof sess, "%s-%d", prefix, i);
        if (emit_conversation(p, sess, i % 2 ? "ann" : "bob"))
            _exit(4);
        if (pause_every && i % pause_every == 0)
            test_sleep_ms(1);
    }
    cbus_producer_close(p);
    _exit(0);
}

static void wait_ok(pid_t pid)
{
    int st = test_wait_pid(pid, 60000);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "producer exit status %d", st);
}

Test(history_daemon, sigkill_under_load_stores_every_message_once, .init = setup,
     .fini = teardown, .timeout = 180)
{
    write_cfg(dbpath, NULL);
    pid_t d = start_daemon();
    const int convs = 1500;
    pid_t p = producer("kill", 0, convs, 10);
    /* killed three times while it works through the backlog, each time
     * started again at once */
    const int64_t marks[] = {convs * 10 / 5, convs * 10 * 2 / 5, convs * 10 * 3 / 5};
    for (int k = 0; k < 3; k++) {
        int64_t have = wait_stored(dbpath, marks[k], 60000);
        cr_assert_geq(have, marks[k], "stored %lld of %lld", (long long)have, (long long)marks[k]);
        kill(d, SIGKILL);
        cr_log_info("SIGKILL %d with %lld of %d messages stored", k + 1, (long long)stored(dbpath),
                    convs * 10);
        test_wait_pid(d, 10000);
        d = start_daemon();
    }
    wait_ok(p);
    int64_t have = wait_stored(dbpath, convs * 10, 60000);
    stop_daemon(d);
    cr_expect_eq(have, convs * 10, "%lld messages of %d", (long long)have, convs * 10);
    cr_expect_eq(stored(dbpath), convs * 10);
    /* nothing applied twice: every replayed message would be refused and
     * counted here */
    cr_expect_eq(db_int(dbpath, "SELECT duplicates FROM cursor"), 0);
    cr_expect_eq(db_int(dbpath, "SELECT count(*) FROM conversations"), convs);
    cr_expect_eq(db_int(dbpath, "SELECT count(*) FROM conversations WHERE messages != 10"), 0);
    cr_expect_eq(db_int(dbpath, "SELECT count(DISTINCT conv || '/' || role || '/' || text)"
                                " FROM messages"), convs * 9,
                 "the two 'And tomorrow?' turns are the only equal messages of a conversation");
    char *log = slurp(logpath);
    cr_expect_not_null(strstr(log, "started:"), "%s", log);
    free(log);
}

/* A tiny HTTP/1.0 client: status, and the body into b. */
static int http(unsigned port, const char *method, const char *path, const char *body,
                struct sbuf *b)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0, "connect: %s", strerror(errno));
    char req[2048];
    int n = snprintf(req, sizeof req,
                     "%s %s HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n\r\n%s", method, path, body ? strlen(body) : 0,
                     body ? body : "");
    cr_assert_eq(write(fd, req, (size_t)n), n);
    struct sbuf r;
    sbuf_init(&r);
    char chunk[4096];
    ssize_t got;
    while ((got = read(fd, chunk, sizeof chunk)) > 0)
        sbuf_add(&r, chunk, (size_t)got);
    close(fd);
    int status = 0;
    cr_assert(r.data && sscanf(r.data, "HTTP/1.%*d %d", &status) == 1, "no status line");
    const char *sep = strstr(r.data, "\r\n\r\n");
    sbuf_reset(b);
    if (sep)
        sbuf_puts(b, sep + 4);
    sbuf_free(&r);
    return status;
}

/* Status of a GET with an Authorization header (auth NULL: none). */
static int http_auth(unsigned port, const char *path, const char *auth)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    char req[1024];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n%s%s%s\r\n", path,
                     auth ? "Authorization: " : "", auth ? auth : "", auth ? "\r\n" : "");
    cr_assert_eq(write(fd, req, (size_t)n), n);
    char resp[256] = "";
    ssize_t got = read(fd, resp, sizeof resp - 1);
    close(fd);
    int status = 0;
    cr_assert(got > 0 && sscanf(resp, "HTTP/1.%*d %d", &status) == 1);
    return status;
}

static unsigned api_port(void)
{
    cr_assert(log_has("/v1/conversations", 10000), "no API line in the log");
    char *t = slurp(logpath);
    const char *p = strstr(t, "API http://127.0.0.1:");
    cr_assert_not_null(p, "%s", t);
    unsigned port = (unsigned)strtoul(p + strlen("API http://127.0.0.1:"), NULL, 10);
    free(t);
    return port;
}

Test(history_daemon, http_api_over_loopback, .init = setup, .fini = teardown, .timeout = 60)
{
    write_cfg(dbpath, NULL);
    const char *argv[] = {CBUS_HISTORY_BIN, "--config", cfg, "--listen", "127.0.0.1:0", NULL};
    pid_t d = start_daemon_argv(argv);
    pid_t p = producer("api", 0, 3, 0);
    wait_ok(p);
    cr_assert_eq(wait_stored(dbpath, 30, 20000), 30);
    unsigned port = api_port();
    struct sbuf b;
    sbuf_init(&b);
    cr_expect_eq(http(port, "GET", "/v1/conversations?user=ann", NULL, &b), 200);
    cJSON *j = cJSON_Parse(b.data);
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(j, "conversations");
    cr_expect_eq(cJSON_GetArraySize(list), 1, "%s", b.data); /* api-1 is ann's */
    cr_expect_str_eq(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(list, 0), "id")->valuestring,
                     "api-1");
    cJSON_Delete(j);
    cr_expect_eq(http(port, "GET", "/v1/conversations?since=1h&limit=2", NULL, &b), 200);
    j = cJSON_Parse(b.data);
    cr_expect_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "conversations")), 2);
    cJSON_Delete(j);
    cr_expect_eq(http(port, "GET", "/v1/conversations?since=never", NULL, &b), 400);
    cr_expect_eq(http(port, "GET", "/v1/conversations/api-0", NULL, &b), 200);
    j = cJSON_Parse(b.data);
    cr_expect_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "thread")), 10);
    cJSON_Delete(j);
    cr_expect_eq(http(port, "GET", "/v1/conversations/api-0/messages", NULL, &b), 200);
    j = cJSON_Parse(b.data);
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(j, "messages");
    cr_expect_eq(cJSON_GetArraySize(msgs), 10);
    cr_expect_str_eq(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(msgs, 9), "text")->valuestring,
                     "Still rain.");
    cJSON_Delete(j);
    cr_expect_eq(http(port, "PATCH", "/v1/conversations/api-0", "{\"title\":\"Paris\"}", &b), 200);
    cr_expect_eq(http(port, "PATCH", "/v1/conversations/nope", "{\"title\":\"x\"}", &b), 404);
    cr_expect_eq(http(port, "GET", "/v1/search?q=rain", NULL, &b), 200);
    j = cJSON_Parse(b.data);
    cr_expect_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "results")), 6, "%s", b.data);
    cJSON_Delete(j);
    /* the rename shows in the CLI too (its own connection, while the daemon runs) */
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s list --db %s --json", CBUS_HISTORY_BIN, dbpath);
    FILE *f = popen(cmd, "r");
    cr_assert_not_null(f);
    char out[8192];
    size_t n = fread(out, 1, sizeof out - 1, f);
    out[n] = '\0';
    cr_expect_eq(pclose(f), 0);
    cr_expect_not_null(strstr(out, "\"title\":\"Paris\""), "%s", out);
    stop_daemon(d);
    sbuf_free(&b);
}

static int run(const char *cmd, char *out, size_t cap)
{
    FILE *f = popen(cmd, "r");
    cr_assert_not_null(f);
    size_t n = fread(out, 1, cap - 1, f);
    out[n] = '\0';
    int st = pclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

Test(history_daemon, cli_commands, .init = setup, .fini = teardown, .timeout = 60)
{
    write_cfg(dbpath, NULL);
    pid_t d = start_daemon();
    wait_ok(producer("cli", 0, 4, 0));
    cr_assert_eq(wait_stored(dbpath, 40, 20000), 40);
    stop_daemon(d);
    char cmd[1024], out[65536];
    snprintf(cmd, sizeof cmd, "%s show cli-2 --db %s", CBUS_HISTORY_BIN, dbpath);
    cr_expect_eq(run(cmd, out, sizeof out), 0);
    cr_expect_not_null(strstr(out, "tool tool_call weather"), "%s", out);
    cr_expect_not_null(strstr(out, "parent "), "%s", out);
    snprintf(cmd, sizeof cmd, "%s rename nope 'A title' --db %s 2>&1", CBUS_HISTORY_BIN, dbpath);
    cr_expect_eq(run(cmd, out, sizeof out), 1);
    cr_expect_not_null(strstr(out, "no conversation 'nope'"), "%s", out);
    snprintf(cmd, sizeof cmd, "%s rename cli-2 'Weather, Paris' --db %s", CBUS_HISTORY_BIN, dbpath);
    cr_expect_eq(run(cmd, out, sizeof out), 0);
    snprintf(cmd, sizeof cmd, "%s export cli-2 --json --db %s", CBUS_HISTORY_BIN, dbpath);
    cr_expect_eq(run(cmd, out, sizeof out), 0);
    cJSON *j = cJSON_Parse(out);
    cr_assert_not_null(j, "%s", out);
    cr_expect_str_eq(cJSON_GetObjectItemCaseSensitive(j, "title")->valuestring, "Weather, Paris");
    cr_expect_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "thread")), 10);
    cJSON_Delete(j);
    snprintf(cmd, sizeof cmd, "%s search 'still rain' --db %s --json", CBUS_HISTORY_BIN, dbpath);
    cr_expect_eq(run(cmd, out, sizeof out), 0);
    j = cJSON_Parse(out);
    cr_expect_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "results")), 4, "%s", out);
    cJSON_Delete(j);
    snprintf(cmd, sizeof cmd, "%s list --user ann --db %s", CBUS_HISTORY_BIN, dbpath);
    cr_expect_eq(run(cmd, out, sizeof out), 0);
    cr_expect_not_null(strstr(out, "cli-1"), "%s", out);
    cr_expect_null(strstr(out, "cli-2"), "%s", out);
    snprintf(cmd, sizeof cmd, "%s forget ann --db %s", CBUS_HISTORY_BIN, dbpath);
    cr_expect_eq(run(cmd, out, sizeof out), 0);
    cr_expect_not_null(strstr(out, "2 conversations, 20 messages"), "%s", out);
    snprintf(cmd, sizeof cmd, "%s expire --older-than 1h --db %s", CBUS_HISTORY_BIN, dbpath);
    cr_expect_eq(run(cmd, out, sizeof out), 0);
    cr_expect_not_null(strstr(out, "0 conversations"), "%s", out);
    cr_expect_eq(db_int(dbpath, "SELECT count(*) FROM conversations"), 2);
    snprintf(cmd, sizeof cmd, "%s show cli-1 --db %s 2>&1", CBUS_HISTORY_BIN, dbpath);
    cr_expect_eq(run(cmd, out, sizeof out), 1);
    /* wrong operands: exit 2, saying which, and the store untouched */
    static const char *const bad[][2] = {
        {"list --since soonish", "--since soonish: want"},
        {"rename cli-2 ''", "the title must be 1.."},
        {"show", "missing argument"},
        {"show cli-1 cli-2", "too many arguments"},
        {"expire", "give --older-than"},
        {"export cli-2", "give --json"},
        {"search x --limit 0", "--limit 0: want 1..1000000"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(cmd, sizeof cmd, "%s %s --db %s 2>&1", CBUS_HISTORY_BIN, bad[i][0], dbpath);
        cr_expect_eq(run(cmd, out, sizeof out), 2, "%s", bad[i][0]);
        cr_expect_not_null(strstr(out, bad[i][1]), "%s: %s", bad[i][0], out);
    }
    cr_expect_eq(db_int(dbpath, "SELECT count(*) FROM conversations"), 2);
    snprintf(cmd, sizeof cmd, "%s list --db %s/missing.db 2>&1", CBUS_HISTORY_BIN, dir);
    cr_expect_eq(run(cmd, out, sizeof out), 1);
    cr_expect_not_null(strstr(out, "no store at"), "%s", out);
}

Test(history_daemon, config_errors_name_file_and_line, .init = setup, .fini = teardown)
{
    write_cfg(dbpath, "[retention]\nmax_age = soon\n");
    char cmd[1024], out[4096];
    snprintf(cmd, sizeof cmd, "%s --config %s 2>&1", CBUS_HISTORY_BIN, cfg);
    cr_expect_eq(run(cmd, out, sizeof out), 2);
    cr_expect_not_null(strstr(out, "history.ini:7: [retention] max_age"), "%s", out);
    write_cfg(dbpath, "[http]\nlisten = 0.0.0.0:9470\n");
    cr_expect_eq(run(cmd, out, sizeof out), 2);
    cr_expect_not_null(strstr(out, "history.ini:7: [http] listen"), "%s", out);
    cr_expect_not_null(strstr(out, "loopback only"), "%s", out);
    write_cfg(dbpath, "[stor]\npath = x\n");
    cr_expect_eq(run(cmd, out, sizeof out), 2);
    cr_expect_not_null(strstr(out, "unknown section [stor]"), "%s", out);
}

/* [status] file and interval, the section every daemon shares: the
 * envelope lands where the config says, at its interval, and the one
 * `cbusctl status` view reads it like the other daemons'; "off" writes none
 * (not even the default beside the store). */
Test(history_daemon, status_section_and_cbusctl_status, .init = setup, .fini = teardown,
     .timeout = 60)
{
    char status[320], extra[400], cmd[1024], out[65536], dflt[320];
    snprintf(status, sizeof status, "%s/st/history-status.json", dir);
    snprintf(dflt, sizeof dflt, "%s.status.json", dbpath);
    snprintf(extra, sizeof extra, "[status]\nfile = %s\ninterval = 50ms\n", status);
    write_cfg(dbpath, extra);
    pid_t d = start_daemon();
    wait_ok(producer("st", 0, 2, 0));
    cr_assert_eq(wait_stored(dbpath, 20, 20000), 20);
    /* The envelope with the daemon's own object, rewritten at the interval
     * until it counts what was stored. */
    int64_t messages = -1;
    uint64_t end = test_now_ms() + 20000;
    while (messages != 20 && test_now_ms() < end) {
        char *t = slurp(status);
        cJSON *j = t ? cJSON_Parse(t) : NULL;
        const cJSON *h = cJSON_GetObjectItemCaseSensitive(j, "history");
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(h, "messages");
        messages = cJSON_IsNumber(m) ? (int64_t)m->valuedouble : -1;
        if (messages == 20) {
            cr_expect_str_eq(cJSON_GetObjectItemCaseSensitive(j, "daemon")->valuestring,
                             "cbus-history");
            cr_expect_str_eq(cJSON_GetObjectItemCaseSensitive(j, "bus")->valuestring, bus);
            const cJSON *c = cJSON_GetObjectItemCaseSensitive(j, "consumer");
            cr_expect_str_eq(cJSON_GetObjectItemCaseSensitive(c, "mode")->valuestring,
                             "lossless");
        }
        cJSON_Delete(j);
        free(t);
        test_sleep_ms(20);
    }
    cr_assert_eq(messages, 20, "status file %s", status);
    cr_expect_eq(access(dflt, F_OK), -1, "the default status file was written too");
    snprintf(cmd, sizeof cmd, "%s status %s --json", CBUSCTL_BIN, status);
    cr_assert_eq(run(cmd, out, sizeof out), 0, "%s", out);
    cJSON *j = cJSON_Parse(out);
    cr_assert_not_null(j, "%s", out);
    const cJSON *first = cJSON_GetArrayItem(j, 0); /* [{file, state, age_s, status}] */
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(first, "status");
    const cJSON *dn = cJSON_GetObjectItemCaseSensitive(st, "daemon");
    cr_expect(cJSON_IsString(dn) && !strcmp(dn->valuestring, "cbus-history"), "%s", out);
    const cJSON *state = cJSON_GetObjectItemCaseSensitive(first, "state");
    cr_expect(cJSON_IsString(state) && !strcmp(state->valuestring, "running"), "%s", out);
    cJSON_Delete(j);
    snprintf(cmd, sizeof cmd, "%s status %s", CBUSCTL_BIN, status);
    cr_assert_eq(run(cmd, out, sizeof out), 0, "%s", out);
    cr_expect_not_null(strstr(out, "cbus-history"), "%s", out);
    cr_expect_not_null(strstr(out, "running"), "%s", out);
    stop_daemon(d);

    /* off: no status file anywhere. */
    unlink(status);
    write_cfg(dbpath, "[status]\nfile = off\n");
    d = start_daemon();
    wait_ok(producer("st2", 0, 1, 0));
    cr_assert_eq(wait_stored(dbpath, 30, 20000), 30);
    stop_daemon(d); /* a clean stop writes the last status: none here */
    cr_expect_eq(access(status, F_OK), -1);
    cr_expect_eq(access(dflt, F_OK), -1, "[status] file = off still wrote %s", dflt);
}

/* The consumer entry of our daemon on the bus: tethered, never cut loose. */
static void expect_tethered(void)
{
    cbus_bus *b;
    cr_assert_eq(cbus_bus_open(&b, bus, 0), 0);
    int found = 0;
    for (unsigned i = 0; i < CBUS_MAX_CONSUMERS; i++) {
        struct cbus_consumer_entry *e = cbus_bus_consumer_entry(b, i);
        if (!e || atomic_load(&e->state) != CBUS_CSTATE_ACTIVE || strcmp(e->name, "history"))
            continue;
        found = 1;
        cr_expect(atomic_load(&e->flags) & CBUS_CFLAG_TETHERED, "not tethered while paused");
        cr_expect_eq(atomic_load(&e->untethered_count), 0);
    }
    cr_expect(found, "no active consumer 'history' on the bus");
    cbus_bus_close(b);
}

/* A counter of GET /v1/stats (the store as of its last commit, read by
 * the daemon's own API thread: inside its mount namespace). */
static int64_t api_stat(unsigned port, const char *key)
{
    struct sbuf b;
    sbuf_init(&b);
    int64_t v = -1;
    if (http(port, "GET", "/v1/stats", NULL, &b) == 200) {
        cJSON *j = cJSON_Parse(b.data);
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(j, key);
        if (cJSON_IsNumber(n))
            v = (int64_t)n->valuedouble;
        cJSON_Delete(j);
    }
    sbuf_free(&b);
    return v;
}

static int64_t api_wait(unsigned port, int64_t n, unsigned timeout_ms)
{
    uint64_t end = test_now_ms() + timeout_ms;
    int64_t have;
    while ((have = api_stat(port, "messages_written")) < n && test_now_ms() < end)
        test_sleep_ms(20);
    return have;
}

Test(history_daemon, full_disk_pauses_tethered_and_resumes, .init = setup, .fini = teardown,
     .timeout = 120)
{
    /* A real full disk: a 4 MiB tmpfs in the daemon's own mount namespace
     * (unprivileged: a user namespace), filled from outside through
     * /proc/PID/root; the store is read through the daemon's API (SQLite
     * resolves /proc/PID/root to our own namespace's path). */
    if (system("unshare -Urm true >/dev/null 2>&1") != 0)
        cbus_test_skip_or_fail("unshare -Urm: no user and mount namespaces here");
    char disk[300], inner_db[340], script[2048];
    snprintf(disk, sizeof disk, "%s/disk", dir);
    cr_assert_eq(mkdir(disk, 0700), 0);
    snprintf(inner_db, sizeof inner_db, "%s/h.db", disk);
    write_cfg(inner_db, "[http]\nlisten = 127.0.0.1:0\n");
    snprintf(script, sizeof script,
             "mount -t tmpfs -o size=4m,mode=0700 tmpfs '%s' && exec '%s' --config '%s'", disk,
             CBUS_HISTORY_BIN, cfg);
    /* the status file on the real disk: the store's is full */
    char status[320];
    snprintf(status, sizeof status, "%s/history.status.json", dir);
    snprintf(script, sizeof script,
             "mount -t tmpfs -o size=4m,mode=0700 tmpfs '%s' && exec '%s' --config '%s' "
             "--status-file '%s'", disk, CBUS_HISTORY_BIN, cfg, status);
    const char *argv[] = {"/usr/bin/unshare", "-Urm", "/bin/sh", "-c", script, NULL};
    pid_t d = start_daemon_argv(argv);
    char ballast[400];
    snprintf(ballast, sizeof ballast, "/proc/%d/root%s/ballast", (int)d, disk);
    unsigned port = api_port();
    wait_ok(producer("disk", 0, 50, 0));
    cr_assert_eq(api_wait(port, 500, 20000), 500);
    /* fill the disk */
    int fd = open(ballast, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    cr_assert_geq(fd, 0, "%s: %s", ballast, strerror(errno));
    static char chunk[65536];
    memset(chunk, 'x', sizeof chunk);
    while (write(fd, chunk, sizeof chunk) > 0) {
    }
    cr_assert_eq(errno, ENOSPC, "filling the disk: %s", strerror(errno));
    while (write(fd, chunk, 512) > 0) {
    }
    close(fd);
    wait_ok(producer("disk", 50, 100, 0));
    cr_assert(log_has("disk full", 20000), "no 'disk full' in the log: %s", slurp(logpath));
    cr_assert(log_has("paused", 1000));
    int64_t during = api_stat(port, "messages_written");
    cr_expect_lt(during, 1500, "stored %lld while the disk is full", (long long)during);
    /* past the bus's stall timeout (2 s): still tethered (heartbeats) */
    test_sleep_ms(2500);
    expect_tethered();
    /* and the status file says so, and why */
    char *st = slurp(status);
    cJSON *sj = cJSON_Parse(st);
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(sj, "history");
    cr_expect(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(h, "paused")), "%s", st);
    const cJSON *why = cJSON_GetObjectItemCaseSensitive(h, "paused_reason");
    cr_expect(cJSON_IsString(why) && strstr(why->valuestring, "disk full"), "%s", st);
    cr_expect_str_eq(cJSON_GetObjectItemCaseSensitive(sj, "daemon")->valuestring, "cbus-history");
    cJSON_Delete(sj);
    free(st);
    cr_expect_eq(api_stat(port, "messages_written"), during, "nothing is stored while the disk is full");
    cr_assert_eq(unlink(ballast), 0);
    int64_t have = api_wait(port, 1500, 30000);
    cr_expect_eq(have, 1500, "stored %lld of 1500 after room came back", (long long)have);
    cr_expect(log_has("resumed after", 5000), "no 'resumed' in the log");
    cr_expect_eq(api_stat(port, "duplicates"), 0);
    stop_daemon(d);
    st = slurp(status);
    sj = cJSON_Parse(st);
    h = cJSON_GetObjectItemCaseSensitive(sj, "history");
    cr_expect(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(h, "paused")), "%s", st);
    cr_expect(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(sj, "running")), "%s", st);
    cr_expect_eq(cJSON_GetObjectItemCaseSensitive(h, "messages")->valueint, 1500, "%s", st);
    cJSON_Delete(sj);
    free(st);
}

Test(history_daemon, http_api_token, .init = setup, .fini = teardown, .timeout = 60)
{
    write_cfg(dbpath, NULL);
    setenv("CBUS_HISTORY_TOKEN", "s3cret-token-0123456789", 1);
    const char *argv[] = {CBUS_HISTORY_BIN, "--config", cfg, "--listen", "127.0.0.1:0", NULL};
    pid_t d = start_daemon_argv(argv);
    unsetenv("CBUS_HISTORY_TOKEN");
    unsigned port = api_port();
    cr_expect_eq(http_auth(port, "/v1/conversations", NULL), 401);
    cr_expect_eq(http_auth(port, "/v1/conversations", "Bearer wrong-token-0123456789"), 401);
    cr_expect_eq(http_auth(port, "/v1/conversations", "Bearer s3cret-token-0123456789"), 200);
    stop_daemon(d);
    /* a token too short to be one is refused at start */
    setenv("CBUS_HISTORY_TOKEN", "short", 1);
    char cmd[1024], out[4096];
    snprintf(cmd, sizeof cmd, "%s --config %s --listen 127.0.0.1:0 2>&1", CBUS_HISTORY_BIN, cfg);
    cr_expect_eq(run(cmd, out, sizeof out), 2);
    cr_expect_not_null(strstr(out, "CBUS_HISTORY_TOKEN: want 16 to 255"), "%s", out);
    unsetenv("CBUS_HISTORY_TOKEN");
}

Test(history_daemon, retention_timer_deletes_idle_conversations, .init = setup, .fini = teardown,
     .timeout = 60)
{
    write_cfg(dbpath, "[retention]\nmax_age = 3s\ncheck_every = 200ms\n");
    pid_t d = start_daemon();
    wait_ok(producer("ret", 0, 2, 0));
    /* every message written (the cursor row counts them, deleted or not),
     * then, idle longer than max_age, deleted by the daemon's own timer
     * (on a slow machine maybe before all were seen at once: no count of
     * live rows is asserted before) */
    uint64_t end = test_now_ms() + 30000;
    while (db_int(dbpath, "SELECT messages FROM cursor") < 20 && test_now_ms() < end)
        test_sleep_ms(50);
    cr_assert_eq(db_int(dbpath, "SELECT messages FROM cursor"), 20);
    int64_t convs;
    while ((convs = db_int(dbpath, "SELECT count(*) FROM conversations")) != 0 &&
           test_now_ms() < end)
        test_sleep_ms(50);
    cr_expect_eq(convs, 0);
    cr_expect_eq(stored(dbpath), 0);
    cr_expect(log_has("retention: ", 2000), "%s", slurp(logpath));
    stop_daemon(d);
}

/* The flags of the active consumer "history" on b (0: none), its
 * untethered count in *untethered. */
static unsigned history_consumer(cbus_bus *b, uint64_t *untethered)
{
    for (unsigned i = 0; i < CBUS_MAX_CONSUMERS; i++) {
        struct cbus_consumer_entry *e = cbus_bus_consumer_entry(b, i);
        if (e && atomic_load(&e->state) == CBUS_CSTATE_ACTIVE && !strcmp(e->name, "history")) {
            *untethered = atomic_load(&e->untethered_count);
            return (unsigned)atomic_load(&e->flags);
        }
    }
    *untethered = UINT64_MAX;
    return 0;
}

/* Every transaction that syncs outlasts the bus's stall timeout by half
 * again (a loaded disk, made by CBUS_TEST_SLOW_FSYNC_MS: files.h) while a
 * producer waits on the full ring behind it: a batch's commit, the search
 * index's step, retention's delete.  The loop's beat thread heartbeats
 * through each (loop.h, slow calls), so no producer untethers cbus-history
 * and every event a producer got in is stored.  Without the slow section
 * around any one of the three, that one gets it cut loose. */
Test(history_daemon, slow_commits_keep_the_consumer_tethered, .init = setup, .fini = teardown,
     .timeout = 240)
{
    /* The default 2 s: the beat thread beats every 500 ms, so only a
     * daemon kept off the CPUs for 1.5 s could miss (1 s was missed 3
     * times in 7 beside stress-ng --cpu 2 and the audit suite's twin). */
    struct cbus_create_opts o = {.capacity = 1024, .stall_timeout_ns = 2000000000u};
    cbus_bus_destroy(bus);
    cr_assert_eq(cbus_bus_create(bus, &o), 0);
    FILE *f = fopen(cfg, "w");
    cr_assert_not_null(f);
    /* sessions idle for 4 s are deleted, every 100 ms: while the
     * producer goes on with new ones, retention deletes (and syncs) too */
    fprintf(f, "[bus]\nname = %s\n[store]\npath = %s\nfsync = true\n"
               "[retention]\nmax_age = 4s\ncheck_every = 100ms\n", bus, dbpath);
    fclose(f);
    cr_assert_eq(setenv("CBUS_TEST_SLOW_FSYNC_MS", "3000", 1), 0);
    pid_t d = start_daemon();
    unsetenv("CBUS_TEST_SLOW_FSYNC_MS");
    cr_assert(log_has("started:", 20000), "%s", slurp(logpath));
    cbus_producer *p;
    cr_assert_eq(cbus_producer_open(&p, bus, NULL), 0);
    cbus_bus *b = cbus_producer_bus(p);
    struct cbus_usage u = {.input_tokens = 3, .output_tokens = 1,
                           .usage_present = CBUS_USAGE_INPUT | CBUS_USAGE_OUTPUT};
    long sent = 0, refused = 0;
    int retention_ran = 0;
    uint64_t untethered;
    /* On until retention has deleted at least once with the ring full
     * behind the daemon (a bound, not a measurement: 120 s). */
    uint64_t end = test_now_ms() + 120000;
    cbus_ctx c;
    for (long i = 0; !(retention_ran && refused) && test_now_ms() < end; i++) {
        char sess[32];
        snprintf(sess, sizeof sess, "slow-%ld", i / 64);
        /* a call: its prompt and its answer are messages (the index has
         * rows to take, retention rows to delete) */
        static const char prompt[] =
            "[{\"role\":\"human\",\"parts\":[{\"type\":\"text\",\"content\":\"Weather?\"}]}]";
        if (i % 2 == 0) { /* a new call: its start, then its end */
            cbus_ctx root;
            cbus_ctx_init(&root);
            cbus_ctx_set_session(&root, sess);
            cbus_ctx_set_user(&root, "ann");
            cbus_ctx_child(&c, &root);
        }
        int r = i % 2 ? cbus_llm_end(p, &c, &u, "Sunny.")
                      : cbus_chat_model_start_messages(p, &c, prompt, sizeof prompt - 1, NULL, NULL);
        if (r == 0)
            sent++;
        else
            refused++;
        cr_assert(history_consumer(b, &untethered) & CBUS_CFLAG_TETHERED,
                  "untethered after %ld events sent, %ld refused\n%s", sent, refused,
                  slurp(logpath));
        if (i % 512 == 511 && !retention_ran) {
            char *t = slurp(logpath);
            retention_ran = strstr(t, "retention: ") != NULL;
            free(t);
        }
    }
    cr_assert(retention_ran, "retention never deleted: nothing of it was tested\n%s",
              slurp(logpath));
    cr_assert_gt(refused, 0, "the ring never filled behind a commit: nothing was tested");
    uint64_t until = test_now_ms() + 60000;
    while (db_int(dbpath, "SELECT events FROM cursor") < sent && test_now_ms() < until)
        test_sleep_ms(50);
    cr_assert_eq(db_int(dbpath, "SELECT events FROM cursor"), sent, "%ld sent\n%s", sent,
                 slurp(logpath));
    history_consumer(b, &untethered);
    cr_assert_eq(untethered, 0, "%s", slurp(logpath));
    cbus_producer_close(p);
    stop_daemon(d);
}
