/* cbus-web: a lossy consumer that shows the bus in a browser and streams
 * events and run progress to user interfaces (web.h, docs/web.md). */
#include <cbus/bus.h>
#include <cbus/consumer.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "daemon.h"
#include "event_json.h"
#include "httpd.h"
#include "log.h"
#include "loop.h"
#include "prices.h"
#include "status.h"
#include "web.h"

#define BATCH 256
#define MS UINT64_C(1000000)
/* A batch lands in the history at once: a queue of a few batches, or
 * every client would be cut by the first full poll. */
#define QUEUE_MIN (4 * BATCH)
#define WAKE_EVERY_NS (10 * MS) /* streams are woken at most this often while events pour in */

struct daemon {
    struct web w;
    struct cbus_loop loop;
    struct cbus_cfg cfg;
    struct cost_price_table *prices;
    char listen[80];
    char token[256];
    char cost_path[1024], rl_path[1024];
    char status_path[1024];
    const char *status_file;   /* the common status envelope (status.h) */
    unsigned port;
    /* the shared [bus] and [status] sections (config.h) */
    char cfg_bus[CBUS_NAME_MAX], cfg_consumer[CBUS_NAME_MAX], cfg_status[1024];
    int status_off;
    uint64_t status_interval_ns;   /* 0: with the documents, every state_interval */
};

/* The daemons' common status document: the envelope, then "web". */
static void write_status(struct daemon *d, int running)
{
    if (!d->status_file)
        return;
    struct web *w = &d->w;
    struct sbuf b;
    sbuf_init(&b);
    cbus_status_begin(&b, "cbus-web", &d->loop.at, running);
    pthread_mutex_lock(&w->cmu);
    unsigned n = w->nclients;
    uint64_t total = w->clients_total, cut = w->clients_cut, refused = w->clients_refused;
    pthread_mutex_unlock(&w->cmu);
    sbuf_puts(&b, "\"web\":{\"listen\":");
    sbuf_json_str(&b, w->o.listen_host, strlen(w->o.listen_host));
    sbuf_printf(&b, ",\"port\":%u,\"token\":%s,\"events\":%" PRIu64 ",\"clients\":%u,"
                    "\"clients_total\":%" PRIu64 ",\"clients_cut\":%" PRIu64 ",\"clients_refused\":%" PRIu64
                    ",\"frames_sent\":%" PRIu64 ",\"bytes_sent\":%" PRIu64 "}",
                d->port, w->o.token ? "true" : "false", w->events, n, total, cut, refused,
                atomic_load_explicit(&w->frames_sent, memory_order_relaxed),
                atomic_load_explicit(&w->bytes_sent, memory_order_relaxed));
    cbus_status_end(&b);
    int r = cbus_status_write(d->status_file, &b);
    if (r)
        cbus_log_warn("status file %s: %s", d->status_file, strerror(-r));
    sbuf_free(&b);
}

/* ---- the loop's hooks ---------------------------------------------------- */

static int on_batch(void *arg, const struct cbus_event *ev, const struct cbus_body *bodies, int n,
                    uint64_t now)
{
    struct daemon *d = arg;
    struct web *w = &d->w;
    (void)bodies;
    if (n <= 0)
        return 0;
    sbuf_reset(&w->render);
    for (int i = 0; i < n; i++) {
        size_t at = w->render.len;
        cbus_event_json(&w->render, &ev[i], NULL);
        w->lens[i] = (uint32_t)(w->render.len - at);
        if (cbus_kind_phase(ev[i].kind) == CBUS_PHASE_ERROR)
            web_note_error(w, &ev[i]);
    }
    if (w->render.failed) {
        cbus_log_warn("out of memory rendering a batch: %d events not shown", n);
        return 0;
    }
    web_hist_append(&w->hist, ev, n, w->render.data, w->lens);
    w->events += (uint64_t)n;
    if (now - w->last_wake_ns >= WAKE_EVERY_NS)
        web_wake(w, now, 0);
    else
        w->wake_pending = 1;
    return 0;
}

static int before_sleep(void *arg, uint64_t now)
{
    struct daemon *d = arg;
    /* Events wait for their streams at most WAKE_EVERY_NS: a wake-up (a
     * resume, a send per stream) costs more than a batch's events, so the
     * loop never wakes the streams more often than that, and before it
     * sleeps it asks to be up again when the pending ones are due. */
    if (!d->w.wake_pending)
        return 0;
    if (now - d->w.last_wake_ns >= WAKE_EVERY_NS)
        web_wake(&d->w, now, 0);
    else
        cbus_loop_wake_at(&d->loop, d->w.last_wake_ns + WAKE_EVERY_NS);
    return 0;
}

/* Pings for quiet streams, cuts for stuck ones, disconnects noticed. */
static int tick(void *arg, uint64_t now)
{
    struct daemon *d = arg;
    web_wake(&d->w, now, 0);
    return 0;
}

static int docs_timer(void *arg, uint64_t now)
{
    struct daemon *d = arg;
    web_render_docs(&d->w, now);
    if (!d->status_interval_ns)
        write_status(d, 1);
    return 0;
}

/* [status] interval set: the status file on its own cadence. */
static int status_timer(void *arg, uint64_t now)
{
    (void)now;
    write_status(arg, 1);
    return 0;
}

static int arrived(void *arg)
{
    struct daemon *d = arg;
    d->w.cons = d->loop.at.c;
    return 0;
}

/* ---- configuration -------------------------------------------------------- */

static int parse_listen(struct daemon *d, const char *v)
{
    char host[64];
    const char *colon;
    if (v[0] == '[') {
        const char *end = strchr(v, ']');
        if (!end || end[1] != ':' || (size_t)(end - v - 1) >= sizeof host)
            return -EINVAL;
        memcpy(host, v + 1, (size_t)(end - v - 1));
        host[end - v - 1] = '\0';
        colon = end + 1;
    } else {
        colon = strrchr(v, ':');
        if (!colon || (size_t)(colon - v) >= sizeof host)
            return -EINVAL;
        memcpy(host, v, (size_t)(colon - v));
        host[colon - v] = '\0';
    }
    char *end;
    errno = 0;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (errno || *end || end == colon + 1 || port > 65535)
        return -EINVAL;
    snprintf(d->listen, sizeof d->listen, "%s", host);
    d->w.o.listen_host = d->listen;
    d->w.o.listen_port = (unsigned)port;
    return 0;
}

static int read_token(struct daemon *d, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        snprintf(err, errlen, "token file %s: %s", path, strerror(errno));
        return -1;
    }
    size_t n = fread(d->token, 1, sizeof d->token - 1, f);
    fclose(f);
    d->token[n] = '\0';
    while (n && (d->token[n - 1] == '\n' || d->token[n - 1] == '\r' || d->token[n - 1] == ' '))
        d->token[--n] = '\0';
    if (n < 16 || strpbrk(d->token, " \t\r\n")) {
        snprintf(err, errlen, "token file %s: want one line of at least 16 characters, no spaces",
                 path);
        return -1;
    }
    d->w.o.token = d->token;
    return 0;
}

static int load_config(struct daemon *d, const char *path, char *err, size_t errlen)
{
    int r = cbus_cfg_load(&d->cfg, path, err, errlen);
    if (r)
        return r;
    struct web_opts *o = &d->w.o;
    /* [bus] name/consumer and [status] file/interval, shared by every daemon;
     * the old [web] name and status_file still taken, with a warning. */
    const struct cbus_cfg_common cc = {
        .daemon_section = "web", .bus = d->cfg_bus, .consumer = d->cfg_consumer,
        .consumer_size = sizeof d->cfg_consumer, .status_file = d->cfg_status,
        .status_file_size = sizeof d->cfg_status, .status_off = &d->status_off,
        .status_interval_ns = &d->status_interval_ns};
    for (size_t i = 0; i < d->cfg.count; i++) {
        const struct cbus_cfg_entry *e = &d->cfg.entries[i];
        int taken = cbus_cfg_common_entry(&cc, &d->cfg, e, err, errlen);
        if (taken < 0)
            return taken;
        if (taken)
            continue;
        if (strcmp(e->section, "web"))
            return cbus_cfg_error(&d->cfg, e, err, errlen,
                                  "unknown section or key (want [web], [bus] or [status])");
        const char *k = e->key;
        uint64_t v;
        if (!strcmp(k, "listen")) {
            if (parse_listen(d, e->value))
                return cbus_cfg_error(&d->cfg, e, err, errlen, "want HOST:PORT or [V6]:PORT");
        } else if (!strcmp(k, "token_file")) {
            if (read_token(d, e->value, err, errlen))
                return -EINVAL;
        } else if (!strcmp(k, "history")) {
            if (cbus_cfg_u64(&d->cfg, e, QUEUE_MIN, 1u << 24, &o->history, err, errlen))
                return -EINVAL;
        } else if (!strcmp(k, "history_bytes")) {
            if (cbus_cfg_size(&d->cfg, e, &v, err, errlen))
                return -EINVAL;
            if (v < 65536 || v > (UINT64_C(1) << 32))
                return cbus_cfg_error(&d->cfg, e, err, errlen, "want 64k .. 4G");
            o->history_bytes = v;
        } else if (!strcmp(k, "client_queue")) {
            if (cbus_cfg_u64(&d->cfg, e, QUEUE_MIN, 1u << 24, &o->client_queue, err, errlen))
                return -EINVAL;
        } else if (!strcmp(k, "max_clients")) {
            if (cbus_cfg_u64(&d->cfg, e, 1, HTTPD_MAX_CONN - 8, &v, err, errlen))
                return -EINVAL;
            o->max_clients = (unsigned)v;
        } else if (!strcmp(k, "cost_snapshot")) {
            o->cost_snapshot = e->value;
        } else if (!strcmp(k, "ratelimit_status")) {
            o->ratelimit_status = e->value;
        } else if (!strcmp(k, "prices")) {
            o->prices = e->value;
        } else if (!strcmp(k, "state_interval")) {
            if (cbus_cfg_duration_ns(&d->cfg, e, &o->state_interval_ns, err, errlen))
                return -EINVAL;
            if (o->state_interval_ns < 10 * MS)
                return cbus_cfg_error(&d->cfg, e, err, errlen, "want at least 10ms");
        } else {
            return cbus_cfg_error(&d->cfg, e, err, errlen, "unknown key");
        }
    }
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: cbus-web [--bus NAME] [--config PATH] [--listen HOST:PORT] [--token-file PATH]\n"
            "                [--cost-snapshot PATH] [--ratelimit-status PATH] [--prices PATH]\n"
            "                [--history N] [--client-queue N] [--name NAME] [--status-file PATH]\n"
            "                [--verbose]\n"
            "  Serves the dashboard at http://HOST:PORT/ (default 127.0.0.1:9471), events as\n"
            "  Server-Sent Events at /v1/events, run progress at /v1/runs/TRACE/progress,\n"
            "  state at /v1/state and Prometheus metrics at /metrics.  A listener that is\n"
            "  not loopback needs a token (--token-file, or CBUS_WEB_TOKEN).\n");
}

static int is_loopback(const char *host)
{
    return !strncmp(host, "127.", 4) || !strcmp(host, "::1");
}

/* The files the config left to their defaults (the other daemons' state
 * dirs for --bus), the status file's directory, and the checks that need
 * them all.  Returns 0 or the exit status (logged). */
static int default_paths(struct daemon *d)
{
    struct web_opts *o = &d->w.o;
    if (!o->cost_snapshot) {
        char dir[900];
        if (!cbus_state_dir_default(dir, sizeof dir, "cost")) {
            snprintf(d->cost_path, sizeof d->cost_path, "%s/%s/snapshot.json", dir, o->bus);
            o->cost_snapshot = d->cost_path;
        }
    }
    if (!o->ratelimit_status) {
        char dir[900];
        if (!cbus_state_dir_default(dir, sizeof dir, "ratelimit")) {
            snprintf(d->rl_path, sizeof d->rl_path, "%s/status-%s.json", dir, o->bus);
            o->ratelimit_status = d->rl_path;
        }
    }
    if (!d->status_file && !d->status_off) {
        char dir[900];
        if (!cbus_state_dir_default(dir, sizeof dir, "web")) {
            snprintf(d->status_path, sizeof d->status_path, "%s/status-%s.json", dir, o->bus);
            d->status_file = d->status_path;
        }
    }
    if (d->status_file) {
        /* Private, like every daemon's state: the file is replaced every second. */
        char why[8192];
        if (cbus_state_file_dir_prepare(d->status_file, 0700, why, sizeof why)) {
            cbus_log_error("status file %s: %s", d->status_file, why);
            return 1;
        }
    }
    if (!is_loopback(o->listen_host) && !o->token) {
        cbus_log_error("listen %s is not loopback: give a token (--token-file or CBUS_WEB_TOKEN)",
                       o->listen_host);
        return 2;
    }
    if (o->client_queue > o->history)
        o->client_queue = o->history; /* a client cannot be further behind than the history */
    return 0;
}

/* A whole number of events from a flag: 0, or -1 (logged). */
static int flag_events(const char *flag, const char *text, uint64_t min, uint64_t *out)
{
    char *end;
    unsigned long long v = strtoull(text, &end, 10);
    if (*end || !*text || v < min || v > (1u << 24)) {
        cbus_log_error("%s %s: want %llu .. 16777216 events", flag, text, (unsigned long long)min);
        return -1;
    }
    *out = v;
    return 0;
}

/* Defaults, the command line, the config file, then the flags over it.
 * Returns 0, or the exit status (-1: --help, exit 0; logged). */
static int configure(struct daemon *d, int argc, char **argv)
{
    struct web_opts *o = &d->w.o;
    o->name = "web";
    o->listen_host = "127.0.0.1";
    o->listen_port = 9471;
    o->history = 16384;
    o->history_bytes = 16u << 20;
    o->client_queue = 8192;
    o->max_clients = 200;
    o->state_interval_ns = 1000 * MS;
#ifdef CBUS_WEB_PRICES
    o->prices = CBUS_WEB_PRICES;
#endif
    const char *listen = NULL, *token_file = NULL, *cost = NULL, *rl = NULL, *prices = NULL,
               *name = NULL, *history = NULL, *queue = NULL, *status_file = NULL;
    const struct cbus_daemon_opt own[] = {
        {"listen", 'l', &listen, NULL},          {"token-file", 't', &token_file, NULL},
        {"cost-snapshot", 'C', &cost, NULL},     {"ratelimit-status", 'R', &rl, NULL},
        {"prices", 'p', &prices, NULL},          {"history", 'H', &history, NULL},
        {"client-queue", 'q', &queue, NULL},     {"name", 'n', &name, NULL},
        {"status-file", 'S', &status_file, NULL}, {NULL, 0, NULL, NULL},
    };
    struct cbus_daemon_args args = {.prog = "cbus-web", .usage = usage, .opts = own};
    int r = cbus_daemon_args(&args, argc, argv);
    if (r >= 0)
        return r == 0 ? -1 : r;
    char err[1024];
    if (args.config && load_config(d, args.config, err, sizeof err)) {
        cbus_log_error("%s", err);
        return 2;
    }
    if (cbus_daemon_pick_bus(d->cfg_bus, sizeof d->cfg_bus, args.bus))
        return 2;
    o->bus = d->cfg_bus;
    if (d->cfg_consumer[0])
        o->name = d->cfg_consumer;
    if (d->cfg_status[0])
        d->status_file = d->cfg_status;
    /* Flags override the file. */
    if (listen && parse_listen(d, listen)) {
        cbus_log_error("--listen %s: want HOST:PORT or [V6]:PORT", listen);
        return 2;
    }
    if (token_file && read_token(d, token_file, err, sizeof err)) {
        cbus_log_error("%s", err);
        return 2;
    }
    const char *env_token = getenv("CBUS_WEB_TOKEN");
    if (!o->token && env_token && *env_token) {
        if (strlen(env_token) < 16 || strlen(env_token) >= sizeof d->token) {
            cbus_log_error("CBUS_WEB_TOKEN: want 16 to 255 characters");
            return 2;
        }
        snprintf(d->token, sizeof d->token, "%s", env_token);
        o->token = d->token;
    }
    if (name) {
        if (cbus_name_valid(name)) {
            cbus_log_error("--name %s: not a valid consumer name", name);
            return 2;
        }
        o->name = name;
    }
    if ((history && flag_events("--history", history, QUEUE_MIN, &o->history)) ||
        (queue && flag_events("--client-queue", queue, QUEUE_MIN, &o->client_queue)))
        return 2;
    if (cost)
        o->cost_snapshot = cost;
    if (rl)
        o->ratelimit_status = rl;
    if (prices)
        o->prices = *prices ? prices : NULL;
    if (status_file)
        d->status_file = *status_file && strcmp(status_file, "off") ? status_file : NULL; /* "", off: none */
    return default_paths(d);
}

/* What the streams share: prices, the history, the locks and buffers.
 * Returns 0 or 1 (logged; free_state undoes what was done). */
static int set_up(struct daemon *d)
{
    struct web *w = &d->w;
    struct web_opts *o = &w->o;
    char err[1024];
    if (o->prices) {
        int r = cost_prices_load(&d->prices, o->prices, NULL, err, sizeof err);
        if (r) {
            cbus_log_warn("prices %s: %s; progress shows cost_usd null", o->prices, err);
            d->prices = NULL;
        }
    }
    w->prices = d->prices;
    pthread_mutex_init(&w->cmu, NULL);
    pthread_mutex_init(&w->docmu, NULL);
    sbuf_init(&w->render);
    for (unsigned i = 0; i < WEB_ERRORS_KEPT; i++)
        sbuf_init(&w->errors[i]);
    if (web_hist_init(&w->hist, o->history, o->history_bytes)) {
        cbus_log_error("history of %" PRIu64 " events: out of memory", o->history);
        return 1;
    }
    w->lens = calloc(BATCH, sizeof *w->lens);
    if (!w->lens)
        return 1;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    w->start_realtime_ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    snprintf(w->epoch, sizeof w->epoch, "%" PRIx64, w->start_realtime_ns / 1000);
    return 0;
}

static void free_state(struct daemon *d)
{
    struct web *w = &d->w;
    free(w->lens);
    sbuf_free(&w->render);
    for (unsigned i = 0; i < WEB_ERRORS_KEPT; i++)
        sbuf_free(&w->errors[i]);
    free(w->state_doc);
    free(w->metrics_doc);
    web_hist_free(&w->hist);
    cost_prices_free(d->prices);
    cbus_cfg_free(&d->cfg);
}

/* On the bus and listening: the loop until a signal, then every stream
 * ends with a bye.  Returns the exit status. */
static int serve(struct daemon *d)
{
    struct web *w = &d->w;
    struct web_opts *o = &w->o;
    int rc = 1;
    /* Lossy, from the newest event: a view never slows producers, and the
     * history fills from now (a restart starts a new epoch of ids). */
    struct cbus_consumer_opts co = {.name = o->name, .mode = CBUS_LOSSY, .start = CBUS_START_NEWEST};
    /* The daemons' resume policy (attach.h): a live view saves nothing: case 3. */
    int r = cbus_attach_start(&w->cons, &(struct cbus_attach_start){.bus = o->bus, .opts = co});
    if (r) {
        cbus_log_error("bus %s: attach as %s: %s", o->bus, o->name, cbus_strerror(r));
        return 1;
    }
    if (cbus_loop_init(&d->loop, w->cons, o->bus, &co, BATCH, 0, d)) {
        cbus_log_error("out of memory");
        return 1;
    }
    web_render_docs(w, cbus_now_ns());
    struct cbus_httpd_opts ho = {.host = o->listen_host, .port = o->listen_port,
                                 .handler = web_handle, .ctx = w};
    r = cbus_httpd_start(&w->httpd, &ho);
    if (r) {
        cbus_log_error("listen %s:%u: %s", o->listen_host, o->listen_port, strerror(-r));
        goto err_loop;
    }
    unsigned port = cbus_httpd_port(w->httpd);
    d->port = port;
    write_status(d, 1);
    int v6 = strchr(o->listen_host, ':') != NULL;
    cbus_log_info("started: bus %s as %s, dashboard http://%s%s%s:%u/%s, history %" PRIu64
                  " events, client queue %" PRIu64 ", prices %s",
                  o->bus, o->name, v6 ? "[" : "", o->listen_host, v6 ? "]" : "", port,
                  o->token ? " (token required)" : "", w->hist.cap, o->client_queue,
                  d->prices ? o->prices : "none");
    /* The port on stdout too, alone on a line: a script that asked for
     * port 0 reads it from there. */
    printf("listening %s %u\n", o->listen_host, port);
    fflush(stdout);

    struct cbus_loop *l = &d->loop;
    l->on_batch = on_batch;
    l->on_arrived = arrived;
    l->before_sleep = before_sleep;
    l->max_wait_ns = 100 * MS;
    cbus_loop_every(l, 500 * MS, 500 * MS, tick, 0);
    cbus_loop_every(l, o->state_interval_ns, o->state_interval_ns, docs_timer, 1);
    if (d->status_interval_ns && d->status_file)
        cbus_loop_every(l, d->status_interval_ns, 0, status_timer, 1);
    rc = cbus_loop_run(l);

    /* Streams end with a "bye" frame; then the server stops (no connection
     * may be suspended when it does). */
    atomic_store_explicit(&w->stopping, 1, memory_order_relaxed);
    for (int i = 0; i < 50 && web_clients(w); i++) {
        web_wake(w, cbus_now_ns(), 1);
        struct timespec nap = {0, 10 * 1000 * 1000};
        nanosleep(&nap, NULL);
    }
    web_wake(w, cbus_now_ns(), 1);
    cbus_httpd_stop(w->httpd);
    write_status(d, 0);
    cbus_log_info("stopped: %" PRIu64 " events, %" PRIu64 " streams, %" PRIu64 " cut loose",
                  w->events, w->clients_total, w->clients_cut);
err_loop:
    cbus_loop_close(&d->loop);
    return rc;
}

int main(int argc, char **argv)
{
    static struct daemon d; /* large (the tables): not on the stack */
    int rc = configure(&d, argc, argv);
    if (rc == 0 && (rc = set_up(&d)) == 0)
        rc = serve(&d);
    free_state(&d);
    return rc < 0 ? 0 : rc;
}
