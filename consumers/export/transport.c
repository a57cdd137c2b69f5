#include "transport.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <cbus/cbus.h>

#define RESP_MAX 8192

struct xfer {
    CURL *easy;
    struct batch *b;
    char retry_after[64];
    int resp_json;          /* the answer says Content-Type: application/json */
    int resp_pb;            /* ... application/x-protobuf */
    char resp[RESP_MAX];
    size_t resp_len;
    char errbuf[CURL_ERROR_SIZE];
};

struct transport {
    CURLM *multi;
    struct xfer *slots;
    unsigned nslots;
    unsigned in_flight;
    struct curl_slist *headers[WIRE_COUNT][2]; /* [batch format][gzip] */
    uint64_t connects;
};

static size_t on_header(char *buf, size_t size, size_t n, void *arg)
{
    struct xfer *x = arg;
    size_t len = size * n;
    if (len > 12 && !strncasecmp(buf, "Retry-After:", 12)) {
        size_t v = len - 12;
        if (v >= sizeof x->retry_after)
            v = sizeof x->retry_after - 1;
        memcpy(x->retry_after, buf + 12, v);
        x->retry_after[v] = '\0';
        /* strip CR LF */
        for (char *p = x->retry_after; *p; p++)
            if (*p == '\r' || *p == '\n')
                *p = '\0';
    } else if (len > 13 && !strncasecmp(buf, "Content-Type:", 13)) {
        const char *v = buf + 13, *e = buf + len;
        while (v < e && (*v == ' ' || *v == '\t'))
            v++;
        size_t vl = (size_t)(e - v);
        x->resp_json = vl >= 16 && !strncasecmp(v, "application/json", 16);
        x->resp_pb = (vl >= 22 && !strncasecmp(v, "application/x-protobuf", 22)) ||
                     (vl >= 20 && !strncasecmp(v, "application/protobuf", 20));
    }
    return len;
}

static size_t on_body(char *buf, size_t size, size_t n, void *arg)
{
    struct xfer *x = arg;
    size_t len = size * n, room = RESP_MAX - 1 - x->resp_len;
    size_t take = len < room ? len : room;
    memcpy(x->resp + x->resp_len, buf, take);
    x->resp_len += take;
    x->resp[x->resp_len] = '\0';
    return len;
}

static struct curl_slist *build_headers(const struct export_config *cfg, unsigned format, int gzip,
                                        const char *auth_header, int *bad)
{
    struct curl_slist *l = NULL, *n;
#define ADD(s)                                                                                     \
    do {                                                                                           \
        n = curl_slist_append(l, (s));                                                             \
        if (!n) {                                                                                  \
            *bad = 1;                                                                              \
            return l;                                                                              \
        }                                                                                          \
        l = n;                                                                                     \
    } while (0)
    ADD(format == WIRE_MSGPACK         ? "Content-Type: application/msgpack"
        : format == WIRE_OTLP_PROTOBUF ? "Content-Type: application/x-protobuf"
                                       : "Content-Type: application/json");
    if (gzip)
        ADD("Content-Encoding: gzip");
    ADD("Expect:"); /* no 100-continue round trip for large bodies */
    for (unsigned i = 0; i < cfg->n_headers; i++)
        ADD(cfg->headers[i]);
    if (auth_header)
        ADD(auth_header);
#undef ADD
    return l;
}

/* The credentials the config names, read from the environment: Basic auth's
 * user and password (*user NULL when not configured) and the optional
 * header (*auth_header malloc'd "Name: value", NULL when unset). */
static int auth_from_env(const struct export_config *cfg, const char **user, const char **pass,
                         char **auth_header, char *err, size_t errlen)
{
    *user = *pass = NULL;
    *auth_header = NULL;
    if (cfg->basic_user_env[0]) {
        *user = getenv(cfg->basic_user_env);
        *pass = getenv(cfg->basic_password_env);
        if (!*user || !*pass || !**user) {
            snprintf(err, errlen, "[auth] Basic auth: environment variables %s and %s must be set",
                     cfg->basic_user_env, cfg->basic_password_env);
            return -EINVAL;
        }
    }
    /* The header variable is optional: unset means no extra header. */
    const char *ah = cfg->auth_header_env[0] ? getenv(cfg->auth_header_env) : NULL;
    if (!ah || !*ah)
        return 0;
    if (strchr(ah, '\r') || strchr(ah, '\n')) {
        snprintf(err, errlen, "environment variable %s holds a line break", cfg->auth_header_env);
        return -EINVAL;
    }
    /* "Name: value", or a bare value meaning the Authorization header */
    const char *colon = strchr(ah, ':'), *space = strchr(ah, ' ');
    int named = colon && (!space || colon < space);
    size_t len = strlen(ah) + 32;
    *auth_header = malloc(len);
    if (!*auth_header) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    snprintf(*auth_header, len, "%s%s", named ? "" : "Authorization: ", ah);
    return 0;
}

/* One in-flight slot's easy handle, set up once for every request it sends. */
static int slot_init(struct xfer *x, const struct export_config *cfg, const char *user, const char *pass)
{
    CURL *e = x->easy = curl_easy_init();
    if (!e)
        return -ENOMEM;
    curl_easy_setopt(e, CURLOPT_URL, cfg->url);
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "cbus-export/" CBUS_VERSION_STRING);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(cfg->request_timeout_ns / 1000000));
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)(cfg->connect_timeout_ns / 1000000));
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
    curl_easy_setopt(e, CURLOPT_PRIVATE, x);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    if (!strncmp(cfg->url, "http://", 7))
        curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    if (cfg->ca_file[0])
        curl_easy_setopt(e, CURLOPT_CAINFO, cfg->ca_file);
    if (!cfg->tls_verify) {
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (user) {
        curl_easy_setopt(e, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        curl_easy_setopt(e, CURLOPT_USERNAME, user);
        curl_easy_setopt(e, CURLOPT_PASSWORD, pass);
    }
    return 0;
}

int transport_new(struct transport **out, const struct export_config *cfg, char *err, size_t errlen)
{
    static int global_done;
    if (!global_done) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT)) {
            snprintf(err, errlen, "curl_global_init failed");
            return -ENOMEM;
        }
        global_done = 1;
    }
    const char *user, *pass;
    char *auth_header;
    int rc = auth_from_env(cfg, &user, &pass, &auth_header, err, errlen);
    if (rc)
        return rc;
    struct transport *t = calloc(1, sizeof *t);
    if (!t) {
        free(auth_header);
        return -ENOMEM;
    }
    int bad = 0;
    for (unsigned f = 0; f < WIRE_COUNT; f++)
        for (int g = 0; g < 2; g++)
            t->headers[f][g] = build_headers(cfg, f, g, auth_header, &bad);
    if (auth_header) {
        /* curl_slist_append copied it; do not keep a second copy around */
        explicit_bzero(auth_header, strlen(auth_header));
        free(auth_header);
    }
    t->nslots = (unsigned)cfg->max_in_flight;
    t->slots = calloc(t->nslots, sizeof *t->slots);
    t->multi = curl_multi_init();
    if (bad || !t->slots || !t->multi) {
        transport_free(t);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    curl_multi_setopt(t->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)t->nslots);
    curl_multi_setopt(t->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)t->nslots);
    curl_multi_setopt(t->multi, CURLMOPT_MAXCONNECTS, (long)t->nslots);
    curl_multi_setopt(t->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    for (unsigned i = 0; i < t->nslots; i++) {
        if (slot_init(&t->slots[i], cfg, user, pass)) {
            transport_free(t);
            snprintf(err, errlen, "curl_easy_init failed");
            return -ENOMEM;
        }
    }
    *out = t;
    return 0;
}

void transport_free(struct transport *t)
{
    if (!t)
        return;
    for (unsigned i = 0; i < t->nslots && t->slots; i++) {
        if (!t->slots[i].easy)
            continue;
        if (t->slots[i].b)
            curl_multi_remove_handle(t->multi, t->slots[i].easy);
        curl_easy_cleanup(t->slots[i].easy);
    }
    if (t->multi)
        curl_multi_cleanup(t->multi);
    for (int f = 0; f < WIRE_COUNT; f++)
        for (int g = 0; g < 2; g++)
            curl_slist_free_all(t->headers[f][g]);
    free(t->slots);
    free(t);
}

int transport_send(struct transport *t, struct batch *b)
{
    struct xfer *x = NULL;
    for (unsigned i = 0; i < t->nslots; i++) {
        if (!t->slots[i].b) {
            x = &t->slots[i];
            break;
        }
    }
    if (!x)
        return -EBUSY;
    x->b = b;
    x->retry_after[0] = '\0';
    x->resp_json = x->resp_pb = 0;
    x->resp_len = 0;
    x->resp[0] = '\0';
    x->errbuf[0] = '\0';
    if (b->format >= WIRE_COUNT)
        return -EINVAL; /* the spool refuses such a file; never index past the table */
    curl_easy_setopt(x->easy, CURLOPT_HTTPHEADER, t->headers[b->format][b->gzip ? 1 : 0]);
    curl_easy_setopt(x->easy, CURLOPT_POSTFIELDS, b->body.data);
    curl_easy_setopt(x->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)b->body.len);
    if (curl_multi_add_handle(t->multi, x->easy) != CURLM_OK) {
        x->b = NULL;
        return -ENOMEM;
    }
    b->sending = 1;
    t->in_flight++;
    return 0;
}

unsigned transport_in_flight(const struct transport *t)
{
    return t->in_flight;
}

unsigned transport_slots(const struct transport *t)
{
    return t->nslots;
}

uint64_t transport_connects(const struct transport *t)
{
    return t->connects;
}

static void finish(struct transport *t, CURLMsg *m, transport_done_fn done, void *arg)
{
    struct xfer *x = NULL;
    curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
    struct batch *b = x->b;
    struct send_result r;
    memset(&r, 0, sizeof r);
    r.curl_code = (int)m->data.result;
    long conns = 0;
    curl_easy_getinfo(x->easy, CURLINFO_NUM_CONNECTS, &conns);
    t->connects += (uint64_t)conns;
    if (!r.curl_code)
        curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &r.status);
    r.outcome = retry_classify(r.status, r.curl_code);
    if (r.curl_code) {
        snprintf(r.message, sizeof r.message, "%s", x->errbuf[0] ? x->errbuf : curl_easy_strerror(m->data.result));
    } else if (r.outcome == SEND_OK) {
        /* OTLP/HTTP answers in the request's encoding; the answer's own
         * Content-Type decides when it names one */
        int pb = x->resp_pb || (!x->resp_json && b->format == WIRE_OTLP_PROTOBUF);
        if (pb)
            r.partial = retry_partial_success_pb(x->resp, x->resp_len, &r.rejected, r.message, sizeof r.message);
        else
            r.partial = retry_partial_success(x->resp, x->resp_len, &r.rejected, r.message, sizeof r.message);
    } else {
        /* first line of the answer, for the log */
        size_t n = strcspn(x->resp, "\r\n");
        if (n >= sizeof r.message)
            n = sizeof r.message - 1;
        memcpy(r.message, x->resp, n);
        r.message[n] = '\0';
    }
    if (r.outcome == SEND_RETRY && x->retry_after[0] &&
        retry_after_parse(x->retry_after, time(NULL), &r.retry_after_ns) == 0)
        r.has_retry_after = 1;
    curl_multi_remove_handle(t->multi, x->easy);
    x->b = NULL;
    t->in_flight--;
    b->sending = 0;
    done(arg, b, &r);
}

void transport_run(struct transport *t, int timeout_ms, transport_done_fn done, void *arg)
{
    int running = 0;
    if (timeout_ms > 0 && t->in_flight)
        curl_multi_poll(t->multi, NULL, 0, timeout_ms, NULL);
    curl_multi_perform(t->multi, &running);
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(t->multi, &left)))
        if (m->msg == CURLMSG_DONE)
            finish(t, m, done, arg);
}
