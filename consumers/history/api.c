#include "api.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "sbuf.h"

struct hist_api {
    struct cbus_httpd *h;
    struct hist_store *st;
};

int hist_parse_since(const char *t, unsigned long long now_ns, unsigned long long *out)
{
    if (!t || !*t)
        return -EINVAL;
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *end = strptime(t, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!end) {
        memset(&tm, 0, sizeof tm);
        end = strptime(t, "%Y-%m-%d", &tm);
    }
    if (end && (!*end || !strcmp(end, "Z"))) {
        time_t s = timegm(&tm);
        if (s < 0)
            return -EINVAL;
        *out = (unsigned long long)s * 1000000000ull;
        return 0;
    }
    /* a bare number: epoch seconds; with a unit: that long ago */
    char *e;
    unsigned long long v = strtoull(t, &e, 10);
    if (e != t && !*e && t[0] != '-') {
        *out = v * 1000000000ull;
        return 0;
    }
    uint64_t ago;
    if (cbus_parse_duration_ns(t, &ago))
        return -EINVAL;
    *out = ago < now_ns ? now_ns - ago : 0;
    return 0;
}

static void reply_json(struct cbus_http_response *res, int status, struct sbuf *b)
{
    if (b->failed) {
        cbus_http_reply(res, 500, "application/json", "{\"error\":\"out of memory\"}\n", 26);
        return;
    }
    cbus_http_reply(res, status, "application/json", b->data ? b->data : "", b->len);
}

static void reply_error(struct cbus_http_response *res, int status, const char *msg)
{
    struct sbuf b;
    sbuf_init(&b);
    sbuf_puts(&b, "{\"error\":");
    sbuf_json_str(&b, msg, (size_t)-1);
    sbuf_puts(&b, "}\n");
    reply_json(res, status, &b);
    sbuf_free(&b);
}

static void store_error(struct cbus_http_response *res, struct hist_store *st, int r)
{
    if (r == -ENOENT)
        reply_error(res, 404, "no such conversation");
    else if (r == -EBUSY)
        reply_error(res, 503, "store busy; try again");
    else
        reply_error(res, 500, hist_store_errmsg(st));
}

static unsigned limit_arg(const struct cbus_http_request *req, int *bad)
{
    const char *v = cbus_http_query(req, "limit");
    if (!v)
        return 0;
    char *e;
    unsigned long n = strtoul(v, &e, 10);
    if (e == v || *e || n == 0 || n > 10000) {
        *bad = 1;
        return 0;
    }
    return (unsigned)n;
}

/* The store's answer r: the JSON in b, or the error it names. */
static void answer(struct cbus_http_response *res, struct hist_store *st, int r, struct sbuf *b)
{
    if (r)
        store_error(res, st, r);
    else
        reply_json(res, 200, b);
}

static uint64_t realtime_now_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
}

/* GET /v1/search?q=TEXT[&limit=N] */
static void serve_search(struct hist_store *st, const struct cbus_http_request *req,
                         struct cbus_http_response *res, struct sbuf *b)
{
    int bad = 0;
    const char *q = cbus_http_query(req, "q");
    unsigned limit = limit_arg(req, &bad);
    if (!q || !*q || bad) {
        reply_error(res, 400, "want ?q=TEXT (and limit 1..10000)");
        return;
    }
    answer(res, st, hist_render_search(st, q, limit, 1, b), b);
}

/* GET /v1/conversations[?user=U&since=T&limit=N] */
static void serve_list(struct hist_store *st, const struct cbus_http_request *req,
                       struct cbus_http_response *res, struct sbuf *b)
{
    int bad = 0;
    struct hist_list_q q = {.user = cbus_http_query(req, "user")};
    const char *since = cbus_http_query(req, "since");
    unsigned long long ns = 0;
    if (since && hist_parse_since(since, realtime_now_ns(), &ns)) {
        reply_error(res, 400, "since: want 7d, 2026-12-01, 2026-12-01T10:00:00Z or epoch seconds");
        return;
    }
    q.since_ns = ns;
    q.limit = limit_arg(req, &bad);
    if (bad) {
        reply_error(res, 400, "limit: want 1..10000");
        return;
    }
    answer(res, st, hist_render_list(st, &q, 1, b), b);
}

/* PATCH /v1/conversations/{id} {"title": "..."} */
static void serve_rename(struct hist_store *st, const struct cbus_http_request *req,
                         struct cbus_http_response *res, const char *id, struct sbuf *b)
{
    cJSON *j = cJSON_ParseWithLength(req->body, req->body_len);
    const cJSON *title = cJSON_GetObjectItemCaseSensitive(j, "title");
    if (!cJSON_IsObject(j) || !cJSON_IsString(title) || !*title->valuestring ||
        strlen(title->valuestring) > HIST_TITLE_MAX) {
        cJSON_Delete(j);
        reply_error(res, 400, "want a JSON object {\"title\": \"...\"} (1..512 bytes)");
        return;
    }
    int r = hist_store_rename(st, id, title->valuestring, realtime_now_ns());
    cJSON_Delete(j);
    if (!r)
        r = hist_render_conv(st, id, 1, 0, b);
    answer(res, st, r, b);
}

/* /v1/conversations/{id}[/messages]: the id is everything between
 * (libmicrohttpd has decoded %XX already) */
static void serve_conversation(struct hist_store *st, const struct cbus_http_request *req,
                               struct cbus_http_response *res, const char *start, int get, struct sbuf *b)
{
    char id[HIST_ID_MAX + 16];
    size_t len = strlen(start);
    int messages = 0;
    static const char suf[] = "/messages";
    if (len > sizeof suf - 1 && !strcmp(start + len - (sizeof suf - 1), suf)) {
        messages = 1;
        len -= sizeof suf - 1;
    }
    if (!len || len > HIST_ID_MAX) {
        reply_error(res, 404, "no such conversation");
        return;
    }
    memcpy(id, start, len);
    id[len] = '\0';
    if (get) {
        answer(res, st, messages ? hist_render_messages(st, id, b) : hist_render_conv(st, id, 1, 1, b), b);
    } else if (!strcmp(req->method, "PATCH") && !messages) {
        serve_rename(st, req, res, id, b);
    } else {
        res->allow = messages ? "GET, HEAD" : "GET, HEAD, PATCH";
        reply_error(res, 405, "method not allowed");
    }
}

void hist_api_handle(struct hist_store *st, const struct cbus_http_request *req,
                     struct cbus_http_response *res)
{
    static const char pre[] = "/v1/conversations";
    const char *path = req->path;
    int get = !strcmp(req->method, "GET") || !strcmp(req->method, "HEAD");
    int in_conversations = !strncmp(path, pre, sizeof pre - 1) &&
                           (!path[sizeof pre - 1] || path[sizeof pre - 1] == '/');
    const char *rest = path + sizeof pre - 1;
    int collection = in_conversations && (!*rest || !strcmp(rest, "/"));
    if (!in_conversations && strcmp(path, "/v1/stats") && strcmp(path, "/v1/search")) {
        reply_error(res, 404, "not found");
        return;
    }
    if (!get && (!in_conversations || collection)) {
        res->allow = "GET, HEAD";
        reply_error(res, 405, "method not allowed");
        return;
    }
    struct sbuf b;
    sbuf_init(&b);
    if (!strcmp(path, "/v1/stats"))
        answer(res, st, hist_render_stats(st, &b), &b);
    else if (!strcmp(path, "/v1/search"))
        serve_search(st, req, res, &b);
    else if (collection)
        serve_list(st, req, res, &b);
    else
        serve_conversation(st, req, res, rest + 1, get, &b);
    sbuf_free(&b);
}

static void handler(void *ctx, const struct cbus_http_request *req, struct cbus_http_response *res)
{
    struct hist_api *a = ctx;
    hist_api_handle(a->st, req, res);
}

int hist_api_start(struct hist_api **out, const char *db, const char *host, unsigned port,
                   const char *token, char *err, size_t errlen)
{
    struct hist_api *a = calloc(1, sizeof *a);
    if (!a) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    int r = hist_store_open(&a->st, db, 0, err, errlen);
    if (r) {
        free(a);
        return r;
    }
    struct cbus_httpd_opts o = {.host = host, .port = port, .handler = handler, .ctx = a,
                                .max_body = 16 * 1024, .bearer_token = token};
    r = cbus_httpd_start(&a->h, &o);
    if (r) {
        snprintf(err, errlen, "%s", strerror(-r));
        hist_store_close(a->st);
        free(a);
        return r;
    }
    *out = a;
    return 0;
}

unsigned hist_api_port(const struct hist_api *a)
{
    return a ? cbus_httpd_port(a->h) : 0;
}

void hist_api_stop(struct hist_api *a)
{
    if (!a)
        return;
    cbus_httpd_stop(a->h);
    hist_store_close(a->st);
    free(a);
}
