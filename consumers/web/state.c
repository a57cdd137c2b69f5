/* The documents cbus-web serves, rendered on the consumer loop's thread
 * every state_interval and swapped in under docmu:
 *   GET /v1/state  JSON: the daemon, the bus (as `cbusctl stat --json` names
 *                  its fields), cbus-cost's snapshot, cbus-ratelimit's
 *                  status and throttled keys, the newest error events;
 *   GET /metrics   Prometheus text: the daemon's and the bus's counters, and
 *                  cbus-ratelimit's counters relayed from its status file.
 * The snapshot and the status are files other daemons write: read with a
 * size cap and parsed (cJSON) before anything of them is passed on, so a
 * torn or hostile file is reported, never forwarded. */
#include <cbus/bus.h>
#include <cbus/cbus.h>

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "event_json.h"
#include "inspect.h"
#include "web.h"

#define FILE_MAX (32u << 20) /* a cost snapshot at 1,000 users is ~700 KB */

void web_note_error(struct web *w, const struct cbus_event *ev)
{
    struct sbuf *b = &w->errors[w->errors_next];
    sbuf_reset(b);
    cbus_event_json(b, ev, NULL);
    w->errors_next = (w->errors_next + 1) % WEB_ERRORS_KEPT;
    if (w->nerrors < WEB_ERRORS_KEPT)
        w->nerrors++;
}

/* Reads path whole (at most FILE_MAX).  Returns a malloc'd NUL-terminated
 * copy or NULL with why set. */
static char *slurp(const char *path, const char **why)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        *why = errno == ENOENT ? "no such file (is the daemon running?)" : strerror(errno);
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode) || st.st_size > (off_t)FILE_MAX) {
        *why = "not a regular file of at most 32 MiB";
        close(fd);
        return NULL;
    }
    size_t cap = (size_t)st.st_size + 1, len = 0;
    char *buf = malloc(cap);
    if (!buf) {
        *why = "out of memory";
        close(fd);
        return NULL;
    }
    for (;;) {
        ssize_t r = read(fd, buf + len, cap - 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
        if (len == cap - 1)
            break; /* a file that grew meanwhile is cut: the parse says so */
    }
    close(fd);
    buf[len] = '\0';
    return buf;
}

/* The file's JSON, re-printed by cJSON (so only well-formed JSON is passed
 * on), or null and an "<key>_error" member. */
static cJSON *load_json(const char *path, const char **why)
{
    *why = NULL;
    if (!path) {
        *why = "not configured";
        return NULL;
    }
    char *text = slurp(path, why);
    if (!text)
        return NULL;
    cJSON *j = cJSON_Parse(text);
    free(text);
    if (!j || !cJSON_IsObject(j)) {
        cJSON_Delete(j);
        *why = "not a JSON object (torn or foreign file)";
        return NULL;
    }
    return j;
}

static void put_json(struct sbuf *b, const char *key, cJSON *j, const char *why)
{
    sbuf_printf(b, ",\"%s\":", key);
    char *text = j ? cJSON_PrintUnformatted(j) : NULL;
    if (text) {
        sbuf_puts(b, text);
        free(text);
    } else {
        sbuf_puts(b, "null");
    }
    sbuf_printf(b, ",\"%s_error\":", key);
    if (why)
        sbuf_json_str(b, why, strlen(why));
    else
        sbuf_puts(b, "null");
}

/* A non-negative integer member of o, or -1. */
static double count_of(cJSON *o, const char *key)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble < 1e18 ? v->valuedouble : -1;
}

/* The rate limiter's keys that are throttled now (its hot list); its
 * counters relayed to /metrics (cbus-ratelimit serves no metrics itself). */
static void put_throttled(struct web *w, struct sbuf *b, struct sbuf *m, cJSON *rl)
{
    sbuf_puts(b, ",\"throttled\":[");
    cJSON *lim = rl ? cJSON_GetObjectItemCaseSensitive(rl, "limiter") : NULL;
    cJSON *hot = lim ? cJSON_GetObjectItemCaseSensitive(lim, "hot") : NULL;
    int first = 1;
    unsigned nthrottled = 0;
    cJSON *k;
    cJSON_ArrayForEach(k, hot)
    {
        cJSON *state = cJSON_GetObjectItemCaseSensitive(k, "state");
        if (!cJSON_IsString(state) || strcmp(state->valuestring, "throttled"))
            continue;
        nthrottled++;
        char *text = cJSON_PrintUnformatted(k);
        if (!text)
            continue;
        if (!first)
            sbuf_puts(b, ",");
        sbuf_puts(b, text);
        free(text);
        first = 0;
    }
    sbuf_puts(b, "]");
    if (!lim)
        return;
    static const struct { const char *member, *metric, *type; } relay[] = {
        {"requests", "cbus_ratelimit_requests_total", "counter"},
        {"throttles", "cbus_ratelimit_throttles_total", "counter"},
        {"over_limit", "cbus_ratelimit_over_limit_total", "counter"},
        {"keys", "cbus_ratelimit_keys", "gauge"},
    };
    for (size_t i = 0; i < sizeof relay / sizeof relay[0]; i++) {
        double v = count_of(lim, relay[i].member);
        if (v < 0)
            continue;
        sbuf_printf(m, "# TYPE %s %s\n%s{bus=\"", relay[i].metric, relay[i].type, relay[i].metric);
        sbuf_prom_label(m, w->o.bus, strlen(w->o.bus));
        sbuf_printf(m, "\"} %.0f\n", v);
    }
    sbuf_puts(m, "# HELP cbus_ratelimit_throttled_keys Keys throttled now among the limiter's hottest.\n"
                 "# TYPE cbus_ratelimit_throttled_keys gauge\ncbus_ratelimit_throttled_keys{bus=\"");
    sbuf_prom_label(m, w->o.bus, strlen(w->o.bus));
    sbuf_printf(m, "\"} %u\n", nthrottled);
}

/* The bus's own counters: JSON into b, Prometheus samples into m. */
static void bus_counters(struct web *w, cbus_bus *bus, struct sbuf *b, struct sbuf *m, uint64_t tail, double dt)
{
    const struct cbus_shm_header *h = cbus_bus_header(bus);
    uint64_t dropped = atomic_load_explicit(&h->dropped, memory_order_relaxed);
    uint64_t untethered = atomic_load_explicit(&h->untethered, memory_order_relaxed);
    char idhex[17];
    snprintf(idhex, sizeof idhex, "%016" PRIx64, h->bus_id);
    sbuf_puts(b, ",\"bus\":{\"bus\":");
    sbuf_json_str(b, w->o.bus, strlen(w->o.bus));
    sbuf_printf(b, ",\"bus_id\":\"%s\",\"capacity\":%" PRIu64 ",\"lanes\":%u,\"tail\":%" PRIu64
                   ",\"dropped\":%" PRIu64 ",\"untethered\":%" PRIu64 ",\"tail_rate\":",
                idhex, h->capacity, cbus_bus_lanes(bus), tail, dropped, untethered);
    if (dt > 0 && tail >= w->prev_tail)
        sbuf_printf(b, "%.1f", (double)(tail - w->prev_tail) / dt);
    else
        sbuf_puts(b, "null");
    sbuf_printf(m, "# TYPE cbus_bus_tail counter\ncbus_bus_tail{bus=\"");
    sbuf_prom_label(m, w->o.bus, strlen(w->o.bus));
    sbuf_printf(m, "\"} %" PRIu64 "\n# TYPE cbus_bus_dropped_total counter\ncbus_bus_dropped_total{bus=\"", tail);
    sbuf_prom_label(m, w->o.bus, strlen(w->o.bus));
    sbuf_printf(m, "\"} %" PRIu64 "\n# TYPE cbus_bus_untethered_total counter\ncbus_bus_untethered_total{bus=\"", dropped);
    sbuf_prom_label(m, w->o.bus, strlen(w->o.bus));
    sbuf_printf(m, "\"} %" PRIu64 "\n", untethered);
    w->prev_tail = tail;
}

/* The four per-consumer metric families, gathered apart so each family's
 * samples stay together in the exposition. */
struct consumer_metrics {
    struct sbuf fam[4];
};

static const char *const consumer_metric_names[4] = {"cbus_consumer_lag", "cbus_consumer_consumed_total",
                                                     "cbus_consumer_lost_total",
                                                     "cbus_consumer_abandoned_total"};

static void consumer_json(struct web *w, const struct cbus_consumer_snap *c, uint64_t tail, double dt,
                          uint64_t now, int first, struct sbuf *b, struct consumer_metrics *cm)
{
    unsigned i = c->idx;
    uint64_t lagv = tail > c->read_pos ? tail - c->read_pos : 0;
    const char *state = c->state == CBUS_CSTATE_ACTIVE   ? "active"
                        : c->state == CBUS_CSTATE_PARKED ? "parked"
                                                         : "attaching";
    sbuf_printf(b, "%s{\"index\":%u,\"name\":", first ? "" : ",", i);
    sbuf_json_str(b, c->name, strlen(c->name));
    sbuf_printf(b, ",\"pid\":%u,\"state\":\"%s\",\"alive\":%s,\"mode\":\"%s\",\"cursor\":%" PRIu64
                   ",\"read_pos\":%" PRIu64 ",\"lag\":%" PRIu64 ",\"consumed\":%" PRIu64
                   ",\"lost\":%" PRIu64 ",\"abandoned\":%" PRIu64 ",\"untethered_count\":%" PRIu64
                   ",\"heartbeat_age_ns\":%" PRIu64 ",\"rate\":",
                c->pid, state, c->alive < 0 ? "null" : c->alive ? "true" : "false",
                c->flags & CBUS_CFLAG_LOSSLESS ? "lossless" : "lossy", c->cursor, c->read_pos, lagv,
                c->consumed, c->lost, c->abandoned, c->untethered,
                now > c->heartbeat_ns ? now - c->heartbeat_ns : 0);
    if (dt > 0 && w->prev_gen[i] == c->generation + 1 && c->consumed >= w->prev_consumed[i])
        sbuf_printf(b, "%.1f}", (double)(c->consumed - w->prev_consumed[i]) / dt);
    else
        sbuf_puts(b, "null}");
    w->prev_gen[i] = c->generation + 1; /* 0: never seen */
    w->prev_consumed[i] = c->consumed;
    if (c->state != CBUS_CSTATE_ACTIVE)
        return;
    uint64_t vals[4] = {lagv, c->consumed, c->lost, c->abandoned};
    for (int k = 0; k < 4; k++) {
        struct sbuf *f = &cm->fam[k];
        sbuf_printf(f, "%s{bus=\"", consumer_metric_names[k]);
        sbuf_prom_label(f, w->o.bus, strlen(w->o.bus));
        sbuf_puts(f, "\",consumer=\"");
        sbuf_prom_label(f, c->name, strlen(c->name));
        sbuf_printf(f, "\",index=\"%u\"} %" PRIu64 "\n", i, vals[k]);
    }
}

static void producers_json(cbus_bus *bus, unsigned maxp, struct sbuf *b)
{
    int first = 1;
    for (unsigned i = 0; i < maxp; i++) {
        struct cbus_producer_entry *e = cbus_bus_producer_entry(bus, i);
        if (!e || !atomic_load_explicit(&e->in_use, memory_order_acquire))
            continue;
        char name[sizeof e->name + 1];
        memcpy(name, e->name, sizeof e->name);
        name[sizeof e->name] = '\0';
        sbuf_printf(b, "%s{\"index\":%u,\"pid\":%u,\"name\":", first ? "" : ",", i,
                    atomic_load_explicit(&e->pid, memory_order_relaxed));
        sbuf_json_str(b, name, strlen(name));
        sbuf_printf(b, ",\"emitted\":%" PRIu64 ",\"dropped\":%" PRIu64 ",\"waited_ns\":%" PRIu64 "}",
                    atomic_load_explicit(&e->emitted, memory_order_relaxed),
                    atomic_load_explicit(&e->dropped, memory_order_relaxed),
                    atomic_load_explicit(&e->waited_ns, memory_order_relaxed));
        first = 0;
    }
}

static void bus_json(struct web *w, cbus_bus *bus, struct sbuf *b, struct sbuf *m, uint64_t now)
{
    const struct cbus_shm_header *h = cbus_bus_header(bus);
    unsigned maxc = h->max_consumers < CBUS_MAX_CONSUMERS ? h->max_consumers : CBUS_MAX_CONSUMERS;
    unsigned maxp = h->max_producers < CBUS_MAX_PRODUCERS ? h->max_producers : CBUS_MAX_PRODUCERS;
    uint64_t tail = cbus_bus_tail(bus);
    double dt = w->prev_ns && now > w->prev_ns ? (double)(now - w->prev_ns) / 1e9 : 0;
    bus_counters(w, bus, b, m, tail, dt);

    sbuf_puts(b, ",\"consumers\":[");
    struct consumer_metrics cm;
    static const char *const types[4] = {"gauge", "counter", "counter", "counter"};
    for (int k = 0; k < 4; k++) {
        sbuf_init(&cm.fam[k]);
        sbuf_printf(&cm.fam[k], "# TYPE %s %s\n", consumer_metric_names[k], types[k]);
    }
    int first = 1;
    for (unsigned i = 0; i < maxc; i++) {
        struct cbus_consumer_snap c;
        if (!cbus_consumer_snap_read(bus, i, &c))
            continue;
        consumer_json(w, &c, tail, dt, now, first, b, &cm);
        first = 0;
    }
    sbuf_puts(b, "],\"producers\":[");
    producers_json(bus, maxp, b);
    sbuf_puts(b, "]}");
    for (int k = 0; k < 4; k++) {
        sbuf_add(m, cm.fam[k].data, cm.fam[k].len);
        if (cm.fam[k].failed)
            m->failed = 1;
        sbuf_free(&cm.fam[k]);
    }
}

static uint64_t realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void web_render_docs(struct web *w, uint64_t now)
{
    struct sbuf b, m;
    sbuf_init(&b);
    sbuf_init(&m);
    pthread_mutex_lock(&w->cmu);
    unsigned nclients = w->nclients;
    uint64_t total = w->clients_total, cut = w->clients_cut, refused = w->clients_refused;
    pthread_mutex_unlock(&w->cmu);
    pthread_mutex_lock(&w->hist.mu);
    uint64_t head = atomic_load_explicit(&w->hist.head, memory_order_relaxed);
    uint64_t oldest = w->hist.oldest;
    pthread_mutex_unlock(&w->hist.mu);
    struct cbus_consumer_stats cs;
    memset(&cs, 0, sizeof cs);
    cbus_consumer_stats(w->cons, &cs);
    uint64_t frames = atomic_load_explicit(&w->frames_sent, memory_order_relaxed);
    uint64_t bytes = atomic_load_explicit(&w->bytes_sent, memory_order_relaxed);

    sbuf_printf(&b, "{\"generated_at_ns\":%" PRIu64 ",\"daemon\":{\"pid\":%d,\"consumer\":",
                realtime_ns(), (int)getpid());
    sbuf_json_str(&b, w->o.name, strlen(w->o.name));
    sbuf_printf(&b, ",\"events\":%" PRIu64 ",\"consumed\":%" PRIu64 ",\"lost\":%" PRIu64
                    ",\"lag\":%" PRIu64 ",\"clients\":%u,\"clients_total\":%" PRIu64
                    ",\"clients_cut\":%" PRIu64 ",\"clients_refused\":%" PRIu64
                    ",\"client_queue\":%" PRIu64 ",\"frames_sent\":%" PRIu64 ",\"bytes_sent\":%" PRIu64
                    ",\"history\":{\"capacity\":%" PRIu64 ",\"held\":%" PRIu64 ",\"oldest\":%" PRIu64
                    ",\"head\":%" PRIu64 "},\"epoch\":\"%s\"}",
                w->events, cs.consumed, cs.lost, cs.lag, nclients, total, cut, refused,
                w->o.client_queue, frames, bytes, w->hist.cap, head - oldest, oldest, head, w->epoch);

    sbuf_puts(&m, "# HELP cbus_web_clients Streams open now.\n# TYPE cbus_web_clients gauge\n");
    sbuf_printf(&m, "cbus_web_clients %u\n", nclients);
    sbuf_printf(&m, "# TYPE cbus_web_clients_total counter\ncbus_web_clients_total %" PRIu64 "\n", total);
    sbuf_printf(&m, "# HELP cbus_web_clients_cut_total Streams cut loose: past their queue bound.\n"
                    "# TYPE cbus_web_clients_cut_total counter\ncbus_web_clients_cut_total %" PRIu64 "\n", cut);
    sbuf_printf(&m, "# TYPE cbus_web_clients_refused_total counter\ncbus_web_clients_refused_total %" PRIu64 "\n",
                refused);
    sbuf_printf(&m, "# TYPE cbus_web_events_total counter\ncbus_web_events_total %" PRIu64 "\n", w->events);
    sbuf_printf(&m, "# TYPE cbus_web_frames_total counter\ncbus_web_frames_total %" PRIu64 "\n", frames);
    sbuf_printf(&m, "# TYPE cbus_web_sent_bytes_total counter\ncbus_web_sent_bytes_total %" PRIu64 "\n", bytes);
    sbuf_printf(&m, "# TYPE cbus_web_history_events gauge\ncbus_web_history_events %" PRIu64 "\n",
                head - oldest);

    bus_json(w, cbus_consumer_bus(w->cons), &b, &m, now);
    w->prev_ns = now;

    const char *why;
    cJSON *cost = load_json(w->o.cost_snapshot, &why);
    put_json(&b, "cost", cost, why);
    cJSON_Delete(cost);
    cJSON *rl = load_json(w->o.ratelimit_status, &why);
    put_json(&b, "ratelimit", rl, why);
    put_throttled(w, &b, &m, rl);
    cJSON_Delete(rl);

    sbuf_puts(&b, ",\"errors\":[");
    for (unsigned i = 0; i < w->nerrors; i++) { /* newest first */
        unsigned at = (w->errors_next + WEB_ERRORS_KEPT - 1 - i) % WEB_ERRORS_KEPT;
        sbuf_puts(&b, i ? "," : "");
        sbuf_add(&b, w->errors[at].data, w->errors[at].len);
    }
    sbuf_puts(&b, "]}\n");

    if (!b.failed && !m.failed) {
        pthread_mutex_lock(&w->docmu);
        free(w->state_doc);
        free(w->metrics_doc);
        w->state_doc = b.data;
        w->state_len = b.len;
        w->metrics_doc = m.data;
        w->metrics_len = m.len;
        pthread_mutex_unlock(&w->docmu);
    } else {
        sbuf_free(&b);
        sbuf_free(&m);
    }
}
