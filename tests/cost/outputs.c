/* JSON snapshot, Prometheus text, the loopback /metrics server and the
 * alert webhook (against a real loopback HTTP listener). */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http.h"
#include "checkpoint.h"
#include "ledger.h"
#include "render.h"
#include "webhook.h"

#define T0 (UINT64_C(20000) * COST_DAY_NS)

static struct cost_price_table *tab;
static struct cost_ledger led;
static struct cost_budget ub;

static void setup(void)
{
    char err[256];
    cr_assert_eq(cost_prices_parse(&tab, "t.json",
                                   "{\"gpt-4o\": {\"input_cost_per_token\": 2.5e-6, "
                                   "\"output_cost_per_token\": 1e-5, "
                                   "\"cache_read_input_token_cost\": 1.25e-6}}",
                                   err, sizeof err), 0);
    memset(&ub, 0, sizeof ub);
    snprintf(ub.key, sizeof ub.key, "*");
    ub.scope = COST_SCOPE_USER;
    ub.limit_pico = COST_PICO_PER_USD / 100;
    ub.period_days = 1;
    cost_budget_build(&ub, NULL, 0);
    struct cost_budget_set bs = {.user_default = &ub};
    cr_assert_eq(cost_ledger_init(&led, tab, &bs, NULL), 0);
    const char *users[] = {"alice", "bob \"quoted\""};
    for (int i = 0; i < 4; i++) {
        struct cbus_event ev;
        memset(&ev, 0, sizeof ev);
        ev.kind = CBUS_EV_LLM_END;
        ev.event_id = (uint64_t)i;
        ev.ts_realtime_ns = T0;
        snprintf(ev.provider, sizeof ev.provider, "openai");
        snprintf(ev.model, sizeof ev.model, i == 3 ? "unknown-model" : "gpt-4o");
        snprintf(ev.user, sizeof ev.user, "%s", users[i % 2]);
        snprintf(ev.session, sizeof ev.session, "s%d", i);
        ev.u.usage.input_tokens = 10000;
        ev.u.usage.cache_read_tokens = 4000;
        ev.u.usage.output_tokens = 500;
        ev.u.usage.duration_ns = 1500000000u;
        ev.u.usage.usage_present = CBUS_USAGE_INPUT | CBUS_USAGE_OUTPUT |
                                   CBUS_USAGE_CACHE_READ | CBUS_USAGE_DURATION;
        cost_ledger_apply(&led, &ev);
    }
}

static void teardown(void)
{
    cost_ledger_free(&led);
    cost_prices_free(tab);
}

TestSuite(cost_outputs, .init = setup, .fini = teardown);

static struct cost_render_info info(void)
{
    struct cost_render_info ri = {.bus = "demo", .bus_id = 0x1234, .pid = 42,
                                  .now_realtime_ns = T0 + 1000, .max_sessions = 2,
                                  .prom_users = 1};
    return ri;
}

Test(cost_outputs, json_snapshot_is_valid_and_exact)
{
    struct sbuf b;
    sbuf_init(&b);
    struct cost_render_info ri = info();
    cost_render_json(&b, &led, &ri);
    cJSON *root = cJSON_Parse(b.data);
    cr_assert_not_null(root, "%s", b.data);
    const cJSON *total = cJSON_GetObjectItem(root, "total");
    /* 3 priced calls at 0.025 USD */
    cr_assert_str_eq(cJSON_GetObjectItem(total, "cost_usd")->valuestring, "0.075000000000");
    const cJSON *tokens = cJSON_GetObjectItem(total, "tokens");
    cr_assert_eq(cJSON_GetObjectItem(tokens, "input")->valuedouble, 40000);
    cr_assert(cJSON_IsNull(cJSON_GetObjectItem(tokens, "reasoning")), "absent, not zero");
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(root, "models")), 2);
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(root, "sessions")), 2, "capped");
    cr_assert_eq(cJSON_GetObjectItem(root, "sessions_total")->valuedouble, 4);
    const cJSON *dur = cJSON_GetObjectItem(total, "duration_ms");
    cr_assert_eq(cJSON_GetObjectItem(dur, "count")->valuedouble, 4);
    double p50 = cJSON_GetObjectItem(dur, "p50")->valuedouble;
    cr_assert(p50 > 1400 && p50 < 1600, "%f", p50);
    const cJSON *u0 = cJSON_GetArrayItem(cJSON_GetObjectItem(root, "users"), 0);
    const cJSON *bud = cJSON_GetObjectItem(u0, "budget");
    cr_assert_not_null(bud);
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(bud, "exceeded")), "0.05 of 0.01 USD");
    cJSON_Delete(root);
    sbuf_free(&b);
}

Test(cost_outputs, prometheus_text_has_costs_tokens_histograms)
{
    struct sbuf b;
    sbuf_init(&b);
    struct cost_render_info ri = info();
    cost_render_prom(&b, &led, &ri);
    cr_assert(strstr(b.data, "cbus_cost_usd_total{provider=\"openai\",model=\"gpt-4o\"} 0.075000000000\n"),
              "%s", b.data);
    cr_assert(strstr(b.data, "cbus_cost_tokens_total{provider=\"openai\",model=\"gpt-4o\",type=\"cache_read\"} 12000\n"));
    cr_assert_null(strstr(b.data, "type=\"reasoning\""), "never reported: no series");
    cr_assert(strstr(b.data, "cbus_cost_unpriced_requests_total{provider=\"openai\",model=\"unknown-model\"} 1\n"));
    cr_assert(strstr(b.data, "cbus_cost_request_duration_seconds_bucket{provider=\"openai\",model=\"gpt-4o\",le=\"1.28\"} 0\n"));
    cr_assert(strstr(b.data, "cbus_cost_request_duration_seconds_bucket{provider=\"openai\",model=\"gpt-4o\",le=\"2.56\"} 3\n"));
    cr_assert(strstr(b.data, "cbus_cost_request_duration_seconds_count{provider=\"openai\",model=\"gpt-4o\"} 3\n"));
    cr_assert(strstr(b.data, "cbus_cost_user_usd_total{user=\"bob \\\"quoted\\\"\"}"), "escaped label");
    cr_assert(strstr(b.data, "cbus_cost_budget_exceeded{scope=\"user\",key=\"alice\"} 1\n"));
    cr_assert(strstr(b.data, "# TYPE cbus_cost_usd_total counter\n"));
    sbuf_free(&b);
}

static size_t collect(char *p, size_t size, size_t n, void *arg)
{
    sbuf_add(arg, p, size * n);
    return size * n;
}

Test(cost_outputs, http_serves_metrics_on_loopback)
{
    struct cost_http *h;
    cr_assert_eq(cost_http_start(&h, "127.0.0.1", 0), 0);
    cost_http_publish(h, "m 1\n", 4, "{\"a\":1}", 7);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%u/metrics", cost_http_port(h));
    CURL *c = curl_easy_init();
    struct sbuf body;
    sbuf_init(&body);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
    cr_assert_eq(curl_easy_perform(c), CURLE_OK);
    long status;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    cr_assert_eq(status, 200);
    cr_assert_str_eq(body.data, "m 1\n");
    sbuf_reset(&body);
    snprintf(url, sizeof url, "http://127.0.0.1:%u/nope", cost_http_port(h));
    curl_easy_setopt(c, CURLOPT_URL, url);
    cr_assert_eq(curl_easy_perform(c), CURLE_OK);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    cr_assert_eq(status, 404);
    curl_easy_cleanup(c);
    sbuf_free(&body);
    cost_http_stop(h);
}

/* A one-shot loopback HTTP server that stores the request it gets. */
struct catcher {
    int fd;
    unsigned port;
    char req[8192];
    pthread_t t;
};

static void *catch_one(void *arg)
{
    struct catcher *k = arg;
    int c = accept(k->fd, NULL, NULL);
    if (c < 0)
        return NULL;
    size_t got = 0;
    for (;;) {
        ssize_t r = recv(c, k->req + got, sizeof k->req - 1 - got, 0);
        if (r <= 0)
            break;
        got += (size_t)r;
        k->req[got] = '\0';
        char *hdr_end = strstr(k->req, "\r\n\r\n");
        char *cl = strcasestr(k->req, "Content-Length:");
        if (hdr_end && cl && strlen(hdr_end + 4) >= (size_t)atoi(cl + 15))
            break;
    }
    const char *ok = "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    send(c, ok, strlen(ok), MSG_NOSIGNAL);
    close(c);
    return NULL;
}

Test(cost_outputs, webhook_posts_alert_json)
{
    struct catcher k;
    memset(&k, 0, sizeof k);
    k.fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(k.fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t al = sizeof a;
    getsockname(k.fd, (struct sockaddr *)&a, &al);
    listen(k.fd, 4);
    pthread_create(&k.t, NULL, catch_one, &k);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%u/alerts", ntohs(a.sin_port));
    struct cost_webhook *w;
    cr_assert_eq(cost_webhook_start(&w, url, 2000000000u), 0);
    cost_webhook_post(w, "{\"who\":\"alice\",\"spent_usd\":1.5,\"limit_usd\":1,\"period\":\"1d\"}");
    cost_webhook_stop(w); /* delivers what is queued */
    pthread_join(k.t, NULL);
    close(k.fd);
    cr_assert(strstr(k.req, "POST /alerts HTTP/1.1"), "%s", k.req);
    cr_assert(strcasestr(k.req, "Content-Type: application/json"));
    cr_assert(strstr(k.req, "\"who\":\"alice\""));
}

/* An independent UTF-8 check (not the code under test's). */
static int valid_utf8(const unsigned char *s, size_t n, size_t *bad_at)
{
    for (size_t i = 0; i < n;) {
        unsigned c = s[i], len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3
                                              : (c >> 3) == 30 ? 4 : 0;
        if (!len || i + len > n)
            goto bad;
        uint32_t cp = len == 1 ? c : c & (0xffu >> (len + 1));
        for (unsigned k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                goto bad;
            cp = cp << 6 | (s[i + k] & 0x3fu);
        }
        static const uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min[len] || cp > 0x10ffff || (cp >= 0xd800 && cp < 0xe000))
            goto bad;
        i += len;
        continue;
    bad:
        *bad_at = i;
        return 0;
    }
    return 1;
}

static void hostile_event(const char *provider, const char *model, const char *user)
{
    struct cbus_event ev;
    memset(&ev, 0, sizeof ev);
    ev.kind = CBUS_EV_LLM_END;
    ev.event_id = 100;
    ev.ts_realtime_ns = T0;
    memcpy(ev.provider, provider, strnlen(provider, sizeof ev.provider));
    memcpy(ev.model, model, strnlen(model, sizeof ev.model));
    memcpy(ev.user, user, strnlen(user, sizeof ev.user));
    ev.u.usage.input_tokens = 10;
    ev.u.usage.duration_ns = 1000000u;
    ev.u.usage.usage_present = CBUS_USAGE_INPUT | CBUS_USAGE_DURATION;
    cost_ledger_apply(&led, &ev);
}

/* Prometheus' own parser must accept b (skipped, or failed under
 * CBUS_TEST_STRICT=1, when promtool is not installed). */
static void promtool_ok(const struct sbuf *b)
{
    const char *promtool = "/usr/bin/promtool";
    if (access(promtool, X_OK) != 0) {
        const char *strict = getenv("CBUS_TEST_STRICT");
        cr_assert(!(strict && !strcmp(strict, "1")),
                  "promtool missing (Debian package prometheus; scripts/deps.sh installs it)");
        cr_skip_test("promtool not installed (Debian package prometheus)");
    }
    char path[] = "/tmp/cost_prom_XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, b->data, b->len), (ssize_t)b->len);
    close(fd);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "%s check metrics < %s > %s.out 2>&1", promtool, path, path);
    int st = system(cmd);
    char out[4096] = "";
    snprintf(cmd, sizeof cmd, "%s.out", path);
    FILE *f = fopen(cmd, "r");
    if (f) {
        out[fread(out, 1, sizeof out - 1, f)] = '\0';
        fclose(f);
    }
    unlink(cmd);
    unlink(path);
    cr_assert_eq(st, 0, "promtool check metrics: %s", out);
}

Test(cost_outputs, prometheus_labels_with_invalid_utf8_pass_promtool)
{
    hostile_event("open\xff" "ai", "gpt\\4o\"x\ny\xc3", "eve\xe2\x82\x1b[2J\xed\xa0\x80");
    struct sbuf b;
    sbuf_init(&b);
    struct cost_render_info ri = info();
    cost_render_prom(&b, &led, &ri);
    cr_assert(!b.failed);
    size_t at = 0;
    cr_assert(valid_utf8((const unsigned char *)b.data, b.len, &at), "invalid UTF-8 at %zu: %.60s",
              at, b.data + (at > 20 ? at - 20 : 0));
    /* Byte for byte what snapshot.json says (U+FFFD per bad byte), with
     * backslash, quote and newline escaped as the exposition format wants. */
    cr_assert(strstr(b.data, "cbus_cost_usd_total{provider=\"open\xef\xbf\xbd" "ai\","
                             "model=\"gpt\\\\4o\\\"x\\ny\xef\xbf\xbd\"}"), "%s", b.data);
    cr_assert(strstr(b.data, "{user=\"eve\xef\xbf\xbd\xef\xbf\xbd\x1b[2J\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"}"),
              "%s", b.data);

    /* And a real parser agrees: Prometheus' own promtool. */
    promtool_ok(&b);
    sbuf_free(&b);
}

static int connect_loopback(unsigned port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

static int hold[50];
static struct cost_http *held_http;

/* .fini for the test below: its sockets and server go on every path. */
static void close_held(void)
{
    for (unsigned i = 0; i < sizeof hold / sizeof hold[0]; i++)
        if (hold[i] > 0)
            close(hold[i]);
    memset(hold, 0, sizeof hold);
    cost_http_stop(held_http);
    held_http = NULL;
}

Test(cost_outputs, http_scrape_answers_behind_50_idle_and_slowloris_connections,
     .fini = close_held)
{
    cr_assert_eq(cost_http_start(&held_http, "127.0.0.1", 0), 0);
    cost_http_publish(held_http, "m 1\n", 4, "{}", 2);
    unsigned port = cost_http_port(held_http);
    /* 25 connections that never send a byte, 25 that stop mid-header. */
    for (unsigned i = 0; i < 50; i++) {
        hold[i] = connect_loopback(port);
        if (i % 2) {
            const char *part = "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ";
            cr_assert_eq(send(hold[i], part, strlen(part), MSG_NOSIGNAL), (ssize_t)strlen(part));
        }
    }
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%u/metrics", port);
    CURL *c = curl_easy_init();
    struct sbuf body;
    sbuf_init(&body);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
    /* Generous: the server answers at once; one connection at a time with
     * a 2 s read timeout each needed 100 s. */
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 20000L);
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    cr_assert_eq(rc, CURLE_OK, "%s", curl_easy_strerror(rc));
    cr_assert_eq(status, 200);
    cr_assert_str_eq(body.data, "m 1\n");
    sbuf_free(&body);
    /* And the idle ones are dropped: the newest one sees the server close
     * it once its request deadline passes (EOF or reset, within 30 s). */
    struct timeval tv = {30, 0};
    setsockopt(hold[48], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char x;
    ssize_t r = recv(hold[48], &x, 1, 0);
    cr_assert(r == 0 || (r < 0 && errno == ECONNRESET), "idle connection still open: %zd %s", r,
              strerror(errno));
    setsockopt(hold[49], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    r = recv(hold[49], &x, 1, 0); /* the slowloris one too */
    cr_assert(r == 0 || (r < 0 && errno == ECONNRESET), "slowloris connection still open");
}

/* ---- events v2 (issue 14): cut keys shown apart, agents and tenants ------ */

static void whole_event(uint64_t id, const char *user, const char *agent, const char *tenant)
{
    struct cbus_event ev;
    memset(&ev, 0, sizeof ev);
    ev.kind = CBUS_EV_LLM_END;
    ev.event_id = id;
    ev.ts_realtime_ns = T0;
    snprintf(ev.provider, sizeof ev.provider, "openai");
    snprintf(ev.model, sizeof ev.model, "gpt-4o");
    const struct {
        const char *v;
        char *f;
        size_t cap;
        unsigned k;
    } f[] = {{user, ev.user, sizeof ev.user, CBUS_KEY_USER},
             {agent, ev.agent, sizeof ev.agent, CBUS_KEY_AGENT},
             {tenant, ev.tenant, sizeof ev.tenant, CBUS_KEY_TENANT}};
    for (unsigned i = 0; i < 3; i++) {
        size_t n = strlen(f[i].v);
        memcpy(f[i].f, f[i].v, n < f[i].cap - 1 ? n : f[i].cap - 1);
        ev.key_hash[f[i].k] = cbus_key_hash(f[i].v, n);
    }
    ev.u.usage.input_tokens = 1000; /* 0.0025 USD */
    ev.u.usage.usage_present = CBUS_USAGE_INPUT;
    cost_ledger_apply(&led, &ev);
}

Test(cost_outputs, cut_keys_show_their_hash_and_agents_tenants_are_exported)
{
    char a[201], bname[201];
    memset(a, 'z', 200);
    a[200] = '\0';
    memcpy(bname, a, sizeof a);
    bname[199] = 'y';
    whole_event(10, a, "planner-agent-with-a-long-slug", "team-a");
    whole_event(11, bname, "planner-agent-with-a-long-slug", "team-a");
    whole_event(12, bname, "coder", "team-b");
    char sa[80], sb[80];
    snprintf(sa, sizeof sa, "%.39s\u2026#%08x", a, (unsigned)(cbus_key_hash(a, 200) >> 32));
    snprintf(sb, sizeof sb, "%.39s\u2026#%08x", bname, (unsigned)(cbus_key_hash(bname, 200) >> 32));

    struct sbuf b;
    sbuf_init(&b);
    struct cost_render_info ri = info();
    cost_render_json(&b, &led, &ri);
    cJSON *root = cJSON_Parse(b.data);
    cr_assert_not_null(root, "%s", b.data);
    int seen_a = 0, seen_b = 0;
    const cJSON *u;
    cJSON_ArrayForEach(u, cJSON_GetObjectItem(root, "users")) {
        const char *name = cJSON_GetObjectItem(u, "user")->valuestring;
        if (!strcmp(name, sa)) {
            seen_a++;
            cr_assert_str_eq(cJSON_GetObjectItem(u, "cost_usd")->valuestring, "0.002500000000");
        }
        if (!strcmp(name, sb)) {
            seen_b++;
            cr_assert_str_eq(cJSON_GetObjectItem(u, "cost_usd")->valuestring, "0.005000000000");
        }
    }
    cr_assert(seen_a == 1 && seen_b == 1, "%s", b.data);
    const cJSON *agents = cJSON_GetObjectItem(root, "agents");
    cr_assert_eq(cJSON_GetArraySize(agents), 2, "%s", b.data);
    char sl[80];
    const char *slug = "planner-agent-with-a-long-slug";
    snprintf(sl, sizeof sl, "%.23s\u2026#%08x", slug,
             (unsigned)(cbus_key_hash(slug, strlen(slug)) >> 32));
    const cJSON *a0 = cJSON_GetArrayItem(agents, 0);
    cr_assert_str_eq(cJSON_GetObjectItem(a0, "agent")->valuestring, sl);
    cr_assert_eq(cJSON_GetObjectItem(a0, "requests")->valuedouble, 2);
    const cJSON *tenants = cJSON_GetObjectItem(root, "tenants");
    cr_assert_eq(cJSON_GetArraySize(tenants), 2);
    const cJSON *t1 = cJSON_GetArrayItem(tenants, 1);
    cr_assert_str_eq(cJSON_GetObjectItem(t1, "tenant")->valuestring, "team-b");
    cr_assert_str_eq(cJSON_GetObjectItem(t1, "cost_usd")->valuestring, "0.002500000000");
    cJSON_Delete(root);

    sbuf_reset(&b);
    cost_render_prom(&b, &led, &ri);
    char want[160];
    snprintf(want, sizeof want, "cbus_cost_user_usd_total{user=\"%s\"} 0.002500000000\n", sa);
    cr_assert(strstr(b.data, want), "%s", b.data);
    snprintf(want, sizeof want, "cbus_cost_user_usd_total{user=\"%s\"} 0.005000000000\n", sb);
    cr_assert(strstr(b.data, want), "%s", b.data);
    cr_assert(strstr(b.data, "cbus_cost_tenant_usd_total{tenant=\"team-a\"} 0.005000000000\n"),
              "%s", b.data);
    cr_assert(strstr(b.data, "cbus_cost_agent_requests_total{agent=\"coder\"} 1\n"), "%s", b.data);
    promtool_ok(&b);
    sbuf_free(&b);
}

/* ---- scores (issue 14 item 4): a known set, exact means and rates -------- */

static void score_event(uint64_t id, const char *model, const char *agent, const char *name,
                        unsigned type, double value, const char *category)
{
    struct cbus_event ev;
    memset(&ev, 0, sizeof ev);
    ev.kind = CBUS_EV_SCORE;
    ev.event_id = id;
    ev.ts_realtime_ns = T0;
    snprintf(ev.provider, sizeof ev.provider, "openai");
    snprintf(ev.model, sizeof ev.model, "%s", model);
    if (agent)
        snprintf(ev.agent, sizeof ev.agent, "%s", agent);
    snprintf(ev.name, sizeof ev.name, "%s", name);
    if (category)
        snprintf(ev.preview, sizeof ev.preview, "%s", category);
    ev.u.score.type = (uint8_t)type;
    ev.u.score.value = value;
    cost_ledger_apply(&led, &ev);
}

static const cJSON *score_row(const cJSON *root, const char *name, const char *by,
                              const char *who)
{
    const cJSON *r;
    cJSON_ArrayForEach(r, cJSON_GetObjectItem(root, "scores")) {
        if (strcmp(cJSON_GetObjectItem(r, "name")->valuestring, name) ||
            strcmp(cJSON_GetObjectItem(r, "by")->valuestring, by))
            continue;
        const cJSON *w = cJSON_GetObjectItem(r, !strcmp(by, "agent") ? "agent" : "model");
        if (!who || (w && !strcmp(w->valuestring, who)))
            return r;
    }
    cr_assert_fail("no score row %s by %s %s", name, by, who ? who : "");
    return NULL;
}

static void check_scores(const struct cost_ledger *l)
{
    struct sbuf b;
    sbuf_init(&b);
    struct cost_render_info ri = info();
    cost_render_json(&b, l, &ri);
    cJSON *root = cJSON_Parse(b.data);
    cr_assert_not_null(root, "%s", b.data);
    /* quality: 0.5, 0.75, 1 on gpt-4o (by planner) and 0.1, 0.2 on gpt-4o-mini */
    const cJSON *q = cJSON_GetObjectItem(score_row(root, "quality", "name", NULL), "numeric");
    cr_assert_eq(cJSON_GetObjectItem(q, "count")->valuedouble, 5);
    cr_assert_str_eq(cJSON_GetObjectItem(q, "mean")->valuestring, "0.510000000");
    cr_assert_eq(cJSON_GetObjectItem(q, "min")->valuedouble, 0.1);
    cr_assert_eq(cJSON_GetObjectItem(q, "max")->valuedouble, 1);
    const cJSON *h = cJSON_GetObjectItem(q, "histogram");
    /* le 0.1: one (0.1); le 0.5: three; le 1: five */
    cr_assert_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(h, 1), "count")->valuedouble, 1);
    cr_assert_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(h, 5), "count")->valuedouble, 3);
    cr_assert_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(h, 10), "count")->valuedouble, 5);
    q = cJSON_GetObjectItem(score_row(root, "quality", "model", "gpt-4o"), "numeric");
    cr_assert_str_eq(cJSON_GetObjectItem(q, "mean")->valuestring, "0.750000000");
    q = cJSON_GetObjectItem(score_row(root, "quality", "model", "gpt-4o-mini"), "numeric");
    cr_assert_str_eq(cJSON_GetObjectItem(q, "mean")->valuestring, "0.150000000");
    q = cJSON_GetObjectItem(score_row(root, "quality", "agent", "planner"), "numeric");
    cr_assert_eq(cJSON_GetObjectItem(q, "count")->valuedouble, 3);
    cr_assert_str_eq(cJSON_GetObjectItem(q, "mean")->valuestring, "0.750000000");
    /* fixed: 3 of 4 true */
    const cJSON *f = cJSON_GetObjectItem(score_row(root, "fixed", "name", NULL), "boolean");
    cr_assert_eq(cJSON_GetObjectItem(f, "true")->valuedouble, 3);
    cr_assert_eq(cJSON_GetObjectItem(f, "success_rate")->valuedouble, 0.75);
    f = cJSON_GetObjectItem(score_row(root, "fixed", "agent", "planner"), "boolean");
    cr_assert_eq(cJSON_GetObjectItem(f, "success_rate")->valuedouble, 0.5);
    /* verdict: good twice, bad once */
    const cJSON *c = cJSON_GetObjectItem(
        cJSON_GetObjectItem(score_row(root, "verdict", "name", NULL), "categorical"), "categories");
    cr_assert_eq(cJSON_GetObjectItem(c, "good")->valuedouble, 2);
    cr_assert_eq(cJSON_GetObjectItem(c, "bad")->valuedouble, 1);
    cJSON_Delete(root);

    sbuf_reset(&b);
    cost_render_prom(&b, l, &ri);
    cr_assert(strstr(b.data, "cbus_cost_score_value_count{name=\"quality\"} 5\n"), "%s", b.data);
    cr_assert(strstr(b.data, "cbus_cost_score_value_sum{name=\"quality\"} 2.550000000\n"), "%s",
              b.data);
    cr_assert(strstr(b.data, "cbus_cost_model_score_value_bucket{name=\"quality\",provider=\"openai\","
                             "model=\"gpt-4o\",le=\"0.5\"} 1\n"), "%s", b.data);
    cr_assert(strstr(b.data, "cbus_cost_score_success_ratio{name=\"fixed\"} 0.75\n"), "%s", b.data);
    cr_assert(strstr(b.data, "cbus_cost_agent_score_boolean_total{name=\"fixed\",agent=\"planner\","
                             "value=\"false\"} 1\n"), "%s", b.data);
    cr_assert(strstr(b.data, "cbus_cost_score_category_total{name=\"verdict\",category=\"good\"} 2\n"),
              "%s", b.data);
    promtool_ok(&b);
    sbuf_free(&b);
}

Test(cost_outputs, scores_aggregate_exactly_per_name_model_and_agent)
{
    uint64_t id = 100;
    score_event(id++, "gpt-4o", "planner", "quality", CBUS_SCORE_NUMERIC, 0.5, NULL);
    score_event(id++, "gpt-4o", "planner", "quality", CBUS_SCORE_NUMERIC, 0.75, NULL);
    score_event(id++, "gpt-4o", "planner", "quality", CBUS_SCORE_NUMERIC, 1.0, NULL);
    score_event(id++, "gpt-4o-mini", NULL, "quality", CBUS_SCORE_NUMERIC, 0.1, NULL);
    score_event(id++, "gpt-4o-mini", NULL, "quality", CBUS_SCORE_NUMERIC, 0.2, NULL);
    score_event(id++, "gpt-4o", "planner", "fixed", CBUS_SCORE_BOOLEAN, 1, NULL);
    score_event(id++, "gpt-4o", "planner", "fixed", CBUS_SCORE_BOOLEAN, 0, NULL);
    score_event(id++, "gpt-4o", "coder", "fixed", CBUS_SCORE_BOOLEAN, 1, NULL);
    score_event(id++, "gpt-4o", NULL, "fixed", CBUS_SCORE_BOOLEAN, 1, NULL);
    score_event(id++, "gpt-4o", NULL, "verdict", CBUS_SCORE_CATEGORICAL, 0, "good");
    score_event(id++, "gpt-4o", NULL, "verdict", CBUS_SCORE_CATEGORICAL, 0, "bad");
    score_event(id++, "gpt-4o-mini", NULL, "verdict", CBUS_SCORE_CATEGORICAL, 0, "good");
    score_event(id++, "gpt-4o", NULL, "quality", 9, 0.5, NULL); /* unknown type: not counted */
    cr_assert_eq(led.scores.bad_type, 1);
    cr_assert_eq(led.total.requests, 4, "scores are not calls");
    cr_assert(cost_ledger_needed_kinds() & CBUS_KIND_BIT(CBUS_EV_SCORE));
    check_scores(&led);

    /* checkpointed: the same outputs after a save and a load */
    char dir[] = "/tmp/cost_scores_XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof path, "%s/checkpoint.bin", dir);
    struct sbuf sb;
    sbuf_init(&sb);
    cr_assert_eq(cost_checkpoint_save(&led, 1, T0, path, &sb, 0), 0);
    sbuf_free(&sb);
    struct cost_budget_set bs = {.user_default = &ub};
    struct cost_ledger l2;
    cr_assert_eq(cost_ledger_init(&l2, tab, &bs, NULL), 0);
    uint64_t bus_id;
    char err[256];
    cr_assert_eq(cost_checkpoint_load(&l2, &bus_id, path, err, sizeof err), 0, "%s", err);
    cr_assert_eq(l2.scores.rows.n, led.scores.rows.n);
    check_scores(&l2);
    cost_ledger_free(&l2);
    unlink(path);
    rmdir(dir);
}
