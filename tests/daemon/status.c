/* The daemons' status envelope (consumers/daemon/status.c) and the one
 * view of it, `cbusctl status` (tools/cbusctl/status.c, the real binary):
 * a consumer on a real bus, events read, the document parsed back. */
#include <criterion/criterion.h>

#include <cbus/bus.h>
#include <cbus/cbus.h>
#include <cbus/consumer.h>
#include <cbus/producer.h>

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "attach.h"
#include "cbusctl/run.h"
#include "log.h"
#include "sbuf.h"
#include "status.h"
#include "support.h"

static char bus[64], dir[256];

static void setup(void)
{
    cbus_log_init("test_status", CBUS_LOG_WARN);
    test_bus_name(bus, sizeof bus);
    test_bus_create(bus, 1024);
    snprintf(dir, sizeof dir, "/tmp/cbus-status-test-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
    cbus_bus_destroy(bus);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(daemon_status, .init = setup, .fini = teardown);

static void emit_n(unsigned n)
{
    cbus_producer *p;
    cr_assert_eq(cbus_producer_open(&p, bus, NULL), 0);
    cbus_ctx *ctx = cbus_ctx_new();
    for (unsigned i = 0; i < n; i++)
        cr_assert_eq(cbus_tool_event(p, ctx, "ev", NULL), 0);
    cbus_ctx_free(ctx);
    cbus_producer_close(p);
}

/* A consumer named name that has read n events, followed by at. */
static void consumer_with_events(struct cbus_attach *at, const char *name, unsigned mode,
                                 unsigned n)
{
    emit_n(n);
    struct cbus_consumer_opts o = {.name = name, .mode = mode, .start = CBUS_START_OLDEST};
    cbus_consumer *c;
    cr_assert_eq(cbus_consumer_attach(&c, bus, &o), 0);
    struct cbus_event ev[16];
    unsigned got = 0;
    while (got < n) {
        int r = cbus_consumer_poll(c, ev, 16);
        cr_assert_geq(r, 0);
        got += (unsigned)r;
    }
    memset(at, 0, sizeof *at);
    cbus_attach_init(at, c, bus, &o, 0);
}

static void write_doc(const char *path, const char *daemon, const struct cbus_attach *at,
                      int running, const char *own)
{
    struct sbuf b;
    sbuf_init(&b);
    cbus_status_begin(&b, daemon, at, running);
    sbuf_puts(&b, own);
    cbus_status_end(&b);
    cr_assert_eq(cbus_status_write(path, &b), 0);
    sbuf_free(&b);
}

static cJSON *parse_file(const char *path)
{
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    static char buf[65536];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    cJSON *j = cJSON_Parse(buf);
    cr_assert_not_null(j, "%s: not JSON: %s", path, buf);
    return j;
}

static const cJSON *get(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    cr_assert_not_null(v, "no member %s", k);
    return v;
}

Test(daemon_status, envelope_has_every_member_in_order)
{
    struct cbus_attach at;
    consumer_with_events(&at, "auditx", CBUS_LOSSLESS, 5);
    cr_assert_eq(cbus_consumer_commit_to(at.c, 3), 0);
    char path[400];
    snprintf(path, sizeof path, "%s/s.json", dir);
    write_doc(path, "cbus-test", &at, 1, "\"own\":{\"x\":7}");
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0600, "status files are the daemon user's alone");
    cJSON *j = parse_file(path);
    /* The order status.h promises: daemon, bus, bus_id, pid, updated first,
     * consumer, then the daemon's own object. */
    static const char *const order[] = {"daemon", "bus", "bus_id", "pid", "updated",
                                        "updated_realtime_ns", "running", "consumer", "own"};
    const cJSON *m = j->child;
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++, m = m->next) {
        cr_assert_not_null(m, "member %zu missing", i);
        cr_assert_str_eq(m->string, order[i]);
    }
    cr_assert_null(m, "nothing after the daemon's own object");
    cr_assert_str_eq(get(j, "daemon")->valuestring, "cbus-test");
    cr_assert_str_eq(get(j, "bus")->valuestring, bus);
    char id[32];
    snprintf(id, sizeof id, "%016" PRIx64, cbus_consumer_bus_id(at.c));
    cr_assert_str_eq(get(j, "bus_id")->valuestring, id);
    cr_assert_eq(get(j, "pid")->valueint, getpid());
    const char *upd = get(j, "updated")->valuestring;
    cr_assert_eq(strlen(upd), 24, "RFC 3339 with ms and Z: %s", upd);
    cr_assert(upd[4] == '-' && upd[10] == 'T' && upd[19] == '.' && upd[23] == 'Z', "%s", upd);
    cr_assert(cJSON_IsTrue(get(j, "running")));
    const cJSON *c = get(j, "consumer");
    cr_assert_str_eq(get(c, "name")->valuestring, "auditx");
    cr_assert_str_eq(get(c, "mode")->valuestring, "lossless");
    cr_assert_eq(get(c, "consumed")->valueint, 5);
    cr_assert_eq(get(c, "lost")->valueint, 0);
    cr_assert_eq(get(c, "lag")->valueint, 0);
    cr_assert_eq(get(c, "read_pos")->valueint, 5);
    cr_assert_eq(get(c, "cursor")->valueint, 3, "committed: what the consumer acknowledged");
    cr_assert(cJSON_IsTrue(get(c, "tethered")));
    cr_assert_eq(get(c, "reattached")->valueint, 0);
    cr_assert_eq(get(get(j, "own"), "x")->valueint, 7);
    cJSON_Delete(j);
    cbus_attach_close(&at);
}

Test(daemon_status, no_consumer_yet_leaves_bus_and_consumer_out)
{
    char path[400];
    snprintf(path, sizeof path, "%s/s.json", dir);
    write_doc(path, "cbus-test", NULL, 0, "\"own\":{}");
    cJSON *j = parse_file(path);
    cr_assert_null(cJSON_GetObjectItemCaseSensitive(j, "bus"));
    cr_assert_null(cJSON_GetObjectItemCaseSensitive(j, "consumer"));
    cr_assert(cJSON_IsFalse(get(j, "running")));
    cJSON_Delete(j);
}

Test(daemon_status, a_failed_buffer_is_not_written)
{
    struct sbuf b;
    sbuf_init(&b);
    b.failed = 1;
    char path[400];
    snprintf(path, sizeof path, "%s/s.json", dir);
    cr_assert_eq(cbus_status_write(path, &b), -ENOMEM);
    cr_assert_neq(access(path, F_OK), 0);
    sbuf_free(&b);
}

/* ---- cbusctl status ---------------------------------------------------------- */

Test(daemon_status, cbusctl_status_shows_a_file_in_text_and_json)
{
    struct cbus_attach at;
    consumer_with_events(&at, "exportx", CBUS_LOSSY, 3);
    char path[400];
    snprintf(path, sizeof path, "%s/export.json", dir);
    write_doc(path, "cbus-export", &at, 1, "\"export\":{\"sent_items\":42,\"last\":\"ok\"}");
    struct run_result r;
    run_cbusctl(&r, 10000, "status", path, NULL);
    cr_assert_eq(r.code, 0, "stderr: %s", r.err);
    cr_assert(strstr(r.out, "cbus-export  pid "), "%s", r.out);
    cr_assert(strstr(r.out, "running"), "our own pid is alive: %s", r.out);
    cr_assert(strstr(r.out, "consumer exportx, lossy: consumed 3, lost 0, lag 0, read 3, committed 0, untethered"), "%s",
              r.out);
    cr_assert(strstr(r.out, "export:") && strstr(r.out, "sent_items 42") && strstr(r.out, "last ok"),
              "%s", r.out);
    char b[200];
    snprintf(b, sizeof b, "bus %s (id ", bus);
    cr_assert(strstr(r.out, b), "%s", r.out);
    run_free(&r);
    run_cbusctl(&r, 10000, "status", "--json", path, NULL);
    cr_assert_eq(r.code, 0, "stderr: %s", r.err);
    cJSON *j = cJSON_Parse(r.out);
    cr_assert(cJSON_IsArray(j) && cJSON_GetArraySize(j) == 1, "%s", r.out);
    cJSON *e = cJSON_GetArrayItem(j, 0);
    cr_assert_str_eq(get(e, "file")->valuestring, path);
    cr_assert_str_eq(get(e, "state")->valuestring, "running");
    const cJSON *st = get(e, "status");
    cr_assert_eq(get(get(st, "consumer"), "consumed")->valueint, 3);
    cr_assert_eq(get(get(st, "export"), "sent_items")->valueint, 42);
    cJSON_Delete(j);
    run_free(&r);
    cbus_attach_close(&at);
}

static void spit(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    cr_assert_eq(fclose(f), 0);
}

Test(daemon_status, cbusctl_status_finds_every_daemon_in_a_state_dir)
{
    struct cbus_attach at;
    consumer_with_events(&at, "costx", CBUS_LOSSLESS, 1);
    char p[600];
    /* The state root's layout: one subdirectory per daemon. */
    snprintf(p, sizeof p, "%s/cost", dir);
    cr_assert_eq(mkdir(p, 0700), 0);
    snprintf(p, sizeof p, "%s/cost/status.json", dir);
    write_doc(p, "cbus-cost", &at, 1, "\"cost\":{\"events\":1}");
    snprintf(p, sizeof p, "%s/ratelimit.json", dir);
    write_doc(p, "cbus-ratelimit", &at, 1, "\"limiter\":{\"events\":1}");
    /* Not status files: skipped without a word. */
    snprintf(p, sizeof p, "%s/cost/snapshot.json", dir);
    spit(p, "{\"version\":1,\"total\":{}}");
    snprintf(p, sizeof p, "%s/broken.json", dir);
    spit(p, "{\"daemon\":");
    snprintf(p, sizeof p, "%s/notes.txt", dir);
    spit(p, "hello");
    struct run_result r;
    run_cbusctl(&r, 10000, "status", "--json", dir, NULL);
    cr_assert_eq(r.code, 0, "stderr: %s", r.err);
    cJSON *j = cJSON_Parse(r.out);
    cr_assert(cJSON_IsArray(j), "%s", r.out);
    cr_assert_eq(cJSON_GetArraySize(j), 2, "%s", r.out);
    int cost = 0, rl = 0;
    cJSON *e;
    cJSON_ArrayForEach(e, j)
    {
        const char *d = get(get(e, "status"), "daemon")->valuestring;
        cost += !strcmp(d, "cbus-cost");
        rl += !strcmp(d, "cbus-ratelimit");
    }
    cr_assert(cost == 1 && rl == 1, "%s", r.out);
    cJSON_Delete(j);
    run_free(&r);
    cbus_attach_close(&at);
}

Test(daemon_status, cbusctl_status_tells_stopped_and_gone_daemons)
{
    /* A clean stop wrote running false; a SIGKILLed daemon left running
     * true behind with a pid that is gone. */
    char stopped[400], gone[400];
    snprintf(stopped, sizeof stopped, "%s/stopped.json", dir);
    write_doc(stopped, "cbus-audit", NULL, 0, "\"audit\":{}");
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        snprintf(gone, sizeof gone, "%s/gone.json", dir);
        struct sbuf b;
        sbuf_init(&b);
        cbus_status_begin(&b, "cbus-export", NULL, 1);
        sbuf_puts(&b, "\"export\":{}");
        cbus_status_end(&b);
        _exit(cbus_status_write(gone, &b) ? 1 : 0);
    }
    int st = test_wait_pid(pid, 10000);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    snprintf(gone, sizeof gone, "%s/gone.json", dir);
    struct run_result r;
    run_cbusctl(&r, 10000, "status", stopped, gone, NULL);
    cr_assert_eq(r.code, 0, "stderr: %s", r.err);
    cr_assert(strstr(r.out, "cbus-audit  pid ") && strstr(r.out, "  stopped  "), "%s", r.out);
    cr_assert(strstr(r.out, "cbus-export  pid ") && strstr(r.out, "  gone  "), "%s", r.out);
    run_free(&r);
}

Test(daemon_status, cbusctl_status_errors)
{
    struct run_result r;
    char p[400];
    snprintf(p, sizeof p, "%s/missing.json", dir);
    run_cbusctl(&r, 10000, "status", p, NULL);
    cr_assert_eq(r.code, 1);
    cr_assert(strstr(r.err, "No such file"), "%s", r.err);
    run_free(&r);
    snprintf(p, sizeof p, "%s/other.json", dir);
    spit(p, "{\"version\":1}");
    run_cbusctl(&r, 10000, "status", p, NULL);
    cr_assert_eq(r.code, 1);
    cr_assert(strstr(r.err, "not a cbus daemon status file"), "%s", r.err);
    run_free(&r);
    run_cbusctl(&r, 10000, "status", dir, NULL); /* only other.json in it */
    cr_assert_eq(r.code, 1);
    cr_assert(strstr(r.err, "no daemon status files"), "%s", r.err);
    run_free(&r);
    run_cbusctl(&r, 10000, "status", "--bogus", NULL);
    cr_assert_eq(r.code, 2);
    run_free(&r);
}

/* Strings come from producers (keys) and the file is not trusted: control
 * bytes reach the terminal escaped. */
Test(daemon_status, cbusctl_status_escapes_strings)
{
    char p[400];
    snprintf(p, sizeof p, "%s/evil.json", dir);
    spit(p, "{\"daemon\":\"cbus-\\u001b[31mx\",\"pid\":1,\"running\":false,"
            "\"own\":{\"key\":\"a\\u001b]0;pwned\\u0007b\"}}");
    struct run_result r;
    run_cbusctl(&r, 10000, "status", p, NULL);
    cr_assert_eq(r.code, 0, "stderr: %s", r.err);
    cr_assert_null(strchr(r.out, '\x1b'), "%s", r.out);
    cr_assert_null(strchr(r.out, '\a'), "%s", r.out);
    run_free(&r);
}
