#include "exporter.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#include <cbus/cbus.h>
#include <cbus/consumer.h>

#include "event_msgpack.h"
#include "log.h"
#include "otlp.h"
#include "prices.h"
#include "span.h"
#include "spool.h"
#include "transport.h"

/* msgpack batch: {"format":"cbus.events","version":1,"bus":..,"bus_id":..,
 * "host":..,"pid":..,"events":[...]} with the array length patched in at the
 * end (array 32: a valid, if not minimal, msgpack header). */
#define MP_BATCH_KEYS 7

struct blist {
    struct batch *head, *tail;
    size_t count;
};

struct exporter {
    struct export_config cfg;
    struct otlp_resource res;
    struct otlp_opts oopts;
    struct otlp_mark omark;     /* of the OTLP batch being built (x->cur) */
    char host[256];
    char bus[40];
    uint64_t bus_id;
    uint32_t pid;
    unsigned lanes;             /* of the bus: how event ids split into lanes */
    struct span_table *spans;
    struct cost_price_table *prices; /* gen_ai.usage.cost; NULL = not priced */
    struct batch *cur;
    size_t mp_count_off;        /* msgpack: offset of the array 32 length */
    struct blist queue;         /* finished, waiting for a request slot */
    struct blist direct;        /* sent straight from memory, in flight */
    struct spool *spool;
    struct transport *tr;
    int unhealthy;              /* the last attempt failed in a retryable way */
    int rejecting;              /* the last answer was a final failure (400, 413, TLS...) */
    /* The last failed request, for the status file: an endpoint that answers
     * every batch with 400 is up but loses everything, and must not look OK. */
    struct {
        long status;            /* HTTP status, 0 = none (transport error) */
        int curl_code;
        uint64_t realtime_ns;   /* 0 = no failure yet */
        char message[121];      /* curl's error or the start of the answer */
    } last_err;
    unsigned attempt;           /* consecutive retryable failures */
    uint64_t next_try_ns;       /* no spool request before this */
    uint64_t now_ns;
    uint64_t rng;
    uint64_t last_reject_log_ns, suppressed_rejects;
    uint64_t last_partial_log_ns, suppressed_partials;
    struct sbuf pool[4];        /* body buffers of delivered batches, reused */
    unsigned npool;
    struct exporter_stats st;
};

static void list_push(struct blist *l, struct batch *b)
{
    b->next = NULL;
    b->prev = l->tail;
    if (l->tail)
        l->tail->next = b;
    else
        l->head = b;
    l->tail = b;
    l->count++;
}

static void list_del(struct blist *l, struct batch *b)
{
    if (b->prev)
        b->prev->next = b->next;
    else
        l->head = b->next;
    if (b->next)
        b->next->prev = b->prev;
    else
        l->tail = b->prev;
    b->next = b->prev = NULL;
    l->count--;
}

static struct batch *list_pop(struct blist *l)
{
    struct batch *b = l->head;
    if (b)
        list_del(l, b);
    return b;
}

static uint64_t rnd(struct exporter *x)
{
    /* xorshift64*: jitter only, no need for more */
    x->rng ^= x->rng >> 12;
    x->rng ^= x->rng << 25;
    x->rng ^= x->rng >> 27;
    return x->rng * UINT64_C(2685821657736338717);
}

/* ---- building batches ---------------------------------------------------- */

static struct batch *batch_new(struct exporter *x)
{
    struct batch *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    sbuf_init(&b->body);
    b->format = x->cfg.format == EXPORT_MSGPACK                ? WIRE_MSGPACK
                : x->oopts.encoding == OTLP_PROTOBUF ? WIRE_OTLP_PROTOBUF
                                                     : WIRE_OTLP_JSON;
    batch_holds_none(b);
    b->created_ns = x->now_ns;
    if (x->npool) {
        /* a recycled buffer: no fresh pages to fault in for every batch */
        b->body = x->pool[--x->npool];
        sbuf_reset(&b->body);
    }
    if (sbuf_reserve(&b->body, x->cfg.batch_max_bytes / 2 + 4096)) {
        free(b);
        return NULL;
    }
    if (x->cfg.format == EXPORT_OTLP) {
        otlp_begin(&b->body, &x->res, &x->oopts, &x->omark);
    } else {
        uint8_t hdr[512];
        struct cbus_mp_writer w = {hdr};
        cbus_mp_put_map(&w, MP_BATCH_KEYS);
        cbus_mp_put_str(&w, "format", 6);
        cbus_mp_put_str(&w, "cbus.events", 11);
        cbus_mp_put_str(&w, "version", 7);
        cbus_mp_put_uint(&w, CBUS_EVMP_FORMAT);
        cbus_mp_put_str(&w, "bus", 3);
        cbus_mp_put_str(&w, x->bus, (uint32_t)strlen(x->bus));
        cbus_mp_put_str(&w, "bus_id", 6);
        cbus_mp_put_uint(&w, x->bus_id);
        cbus_mp_put_str(&w, "host", 4);
        cbus_mp_put_text(&w, x->host, (uint32_t)strlen(x->host));
        cbus_mp_put_str(&w, "pid", 3);
        cbus_mp_put_uint(&w, x->pid);
        cbus_mp_put_str(&w, "events", 6);
        *w.p++ = 0xdd; /* array 32, length patched at finalize */
        x->mp_count_off = (size_t)(w.p - hdr);
        memset(w.p, 0, 4);
        w.p += 4;
        sbuf_add(&b->body, hdr, (size_t)(w.p - hdr));
    }
    return b;
}

static int gzip_body(struct exporter *x, struct batch *b)
{
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    /* 15 + 16: a gzip wrapper, which is what Content-Encoding: gzip means */
    if (deflateInit2(&zs, x->cfg.gzip_level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return -ENOMEM;
    struct sbuf out;
    sbuf_init(&out);
    size_t bound = deflateBound(&zs, (uLong)b->body.len) + 32;
    if (sbuf_reserve(&out, bound)) {
        deflateEnd(&zs);
        return -ENOMEM;
    }
    zs.next_in = (Bytef *)b->body.data;
    zs.avail_in = (uInt)b->body.len;
    zs.next_out = (Bytef *)out.data;
    zs.avail_out = (uInt)bound;
    int r = deflate(&zs, Z_FINISH);
    size_t n = bound - zs.avail_out;
    deflateEnd(&zs);
    if (r != Z_STREAM_END) {
        sbuf_free(&out);
        return -EIO;
    }
    out.len = n;
    sbuf_free(&b->body);
    b->body = out;
    b->gzip = 1;
    return 0;
}

static void deliver(struct exporter *x, struct batch *b);

static void finalize(struct exporter *x)
{
    struct batch *b = x->cur;
    if (!b)
        return;
    x->cur = NULL;
    if (!b->items) {
        batch_free(b);
        return;
    }
    if (b->format != WIRE_MSGPACK) {
        otlp_end(&b->body, &x->oopts, &x->omark);
    } else {
        uint8_t *p = (uint8_t *)b->body.data + x->mp_count_off;
        p[0] = (uint8_t)(b->items >> 24);
        p[1] = (uint8_t)(b->items >> 16);
        p[2] = (uint8_t)(b->items >> 8);
        p[3] = (uint8_t)b->items;
    }
    if (b->body.failed) {
        cbus_log_error("out of memory building a batch of %u items: dropped", b->items);
        x->st.rejected_batches++;
        x->st.rejected_items += b->items;
        batch_free(b);
        return;
    }
    x->st.batches++;
    x->st.body_bytes += b->body.len;
    b->seq = spool_take_seq(x->spool);
    if (x->cfg.gzip && gzip_body(x, b))
        cbus_log_warn("gzip failed: sending the batch uncompressed");
    b->body_len = b->body.len;
    deliver(x, b);
}

static void need_batch(struct exporter *x)
{
    if (!x->cur)
        x->cur = batch_new(x);
}

/* The batch being built carries data of lane position lp in lane. */
static void batch_holds(struct exporter *x, unsigned lane, uint64_t lp)
{
    struct batch *b = x->cur;
    if (lane < CBUS_MAX_LANES && lp < b->lane_min[lane])
        b->lane_min[lane] = lp;
}

static void batch_added(struct exporter *x, uint64_t pos)
{
    struct batch *b = x->cur;
    b->items++;
    x->st.items++;
    if (pos < b->min_pos)
        b->min_pos = pos;
    if (pos > b->max_pos || b->max_pos == 0)
        b->max_pos = pos;
    if (b->items >= x->cfg.batch_max_items || b->body.len >= x->cfg.batch_max_bytes)
        finalize(x);
}

static void on_span(const struct span *s, void *arg)
{
    struct exporter *x = arg;
    need_batch(x);
    if (!x->cur)
        return;
    otlp_span(&x->cur->body, s, x->cur->items == 0, &x->oopts);
    /* every lane the span has data from (its events may come from several
     * threads), before batch_added may send the batch on its way */
    for (const struct span_hold *h = &s->hold; h; h = h->more)
        batch_holds(x, h->lane, h->lp);
    batch_added(x, s->start_pos);
}

static void add_event(struct exporter *x, const struct cbus_event *ev)
{
    need_batch(x);
    if (!x->cur || sbuf_reserve(&x->cur->body, CBUS_EVMP_MAX))
        return;
    struct cbus_evmp_opts o = {
        .preview = x->cfg.include_previews ? CBUS_EVMP_PREVIEW_KEEP : CBUS_EVMP_PREVIEW_DROP};
    int n = cbus_evmp_encode(ev, NULL, &o, (uint8_t *)x->cur->body.data + x->cur->body.len,
                             x->cur->body.cap - x->cur->body.len - 1);
    if (n <= 0)
        return;
    x->cur->body.len += (size_t)n;
    batch_holds(x, (unsigned)(ev->event_id & (x->lanes - 1)), ev->event_id / x->lanes);
    batch_added(x, ev->event_id);
}

void exporter_feed(struct exporter *x, const struct cbus_event *ev, uint64_t now_ns)
{
    exporter_feed_body(x, ev, NULL, now_ns);
}

void exporter_feed_body(struct exporter *x, const struct cbus_event *ev, const struct cbus_body *body,
                        uint64_t now_ns)
{
    x->now_ns = now_ns;
    x->st.events++;
    if (x->cfg.format == EXPORT_OTLP)
        span_table_feed_body(x->spans, ev, body, now_ns);
    else
        add_event(x, ev);
}

int exporter_wants_bodies(const struct exporter *x)
{
    return x->cfg.format == EXPORT_OTLP && (x->cfg.capture_content || x->cfg.langfuse || x->cfg.phoenix);
}

/* ---- delivery -------------------------------------------------------------- */

static void drop_batch(struct exporter *x, struct batch *b)
{
    if (!b->body.failed && b->body.data && x->npool < sizeof x->pool / sizeof x->pool[0]) {
        x->pool[x->npool++] = b->body;
        sbuf_init(&b->body);
    }
    if (b->in_spool)
        spool_remove(x->spool, b);
    else
        batch_free(b);
}

static void enforce_spool_limit(struct exporter *x)
{
    if (x->cfg.lossless)
        return; /* back-pressure instead (exporter_paused): a lossless exporter never drops */
    while (spool_bytes(x->spool) > spool_limit(x->spool)) {
        struct batch *v = spool_oldest_idle(x->spool);
        if (!v)
            break;
        x->st.spool_dropped_batches++;
        x->st.spool_dropped_items += v->items;
        if (x->st.spool_dropped_batches == 1 || x->st.spool_dropped_batches % 100 == 0)
            cbus_log_warn("spool full (%" PRIu64 " bytes): dropped its oldest batch (%" PRIu64
                          " batches dropped so far)",
                          spool_limit(x->spool), x->st.spool_dropped_batches);
        spool_remove(x->spool, v);
    }
}

static void to_spool(struct exporter *x, struct batch *b)
{
    int r = spool_append(x->spool, b);
    x->st.spooled++;
    if (r) {
        x->st.spool_errors++;
        cbus_log_error("spool write failed: %s (batch kept in memory, not durable)", strerror(-r));
    }
    enforce_spool_limit(x);
}

/* The library's clock, the one the loop hands to exporter_tick: deadlines
 * and send times on one time base. */
static uint64_t mono_now(void)
{
    return cbus_now_ns();
}

static void send_direct(struct exporter *x, struct batch *b)
{
    list_push(&x->direct, b);
    b->sent_ns = mono_now();
    if (transport_send(x->tr, b)) {
        list_del(&x->direct, b);
        list_push(&x->queue, b);
        return;
    }
    x->st.requests++;
}

static void deliver(struct exporter *x, struct batch *b)
{
    if (x->unhealthy || spool_count(x->spool)) {
        to_spool(x, b);
    } else if (transport_in_flight(x->tr) < transport_slots(x->tr) && !x->queue.count) {
        send_direct(x, b);
    } else {
        /* A busy but healthy endpoint: wait in memory.  exporter_paused()
         * stops reading the ring once queue_batches are waiting, so a slow
         * endpoint costs ring space (lossy: counted losses), not disk. */
        list_push(&x->queue, b);
    }
}

/* Everything in memory goes to the spool, in order, behind what is there. */
static void queue_to_spool(struct exporter *x)
{
    struct batch *b;
    while ((b = list_pop(&x->queue)))
        to_spool(x, b);
}

static void pump(struct exporter *x)
{
    if (!x->unhealthy && !spool_count(x->spool)) {
        while (x->queue.count && transport_in_flight(x->tr) < transport_slots(x->tr))
            send_direct(x, list_pop(&x->queue));
        return;
    }
    /* Draining the spool: strictly one request at a time, oldest first,
     * so a receiver sees the batches in the order they were made. */
    struct batch *h = spool_head(x->spool);
    if (!h || h->sending || x->now_ns < x->next_try_ns)
        return;
    if (transport_in_flight(x->tr) >= transport_slots(x->tr))
        return;
    int r = spool_load(x->spool, h);
    if (r == -EBADMSG) {
        cbus_log_warn("spool batch %" PRIu64 " is damaged: discarded", h->seq);
        x->st.spool_dropped_batches++;
        x->st.spool_dropped_items += h->items;
        spool_remove(x->spool, h);
        return;
    }
    if (r) {
        cbus_log_error("reading spool batch %" PRIu64 ": %s", h->seq, strerror(-r));
        x->next_try_ns = x->now_ns + x->cfg.retry_initial_ns;
        return;
    }
    h->sent_ns = mono_now();
    if (transport_send(x->tr, h) == 0)
        x->st.requests++;
    else
        spool_unload(x->spool, h);
}

static int rate_ok(uint64_t now, uint64_t *last)
{
    if (*last && now - *last < 10000000000ull)
        return 0;
    *last = now;
    return 1;
}

static void note_error(struct exporter *x, const struct send_result *r)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    x->last_err.status = r->status;
    x->last_err.curl_code = r->curl_code;
    x->last_err.realtime_ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    /* a short excerpt: the start of the answer is what says why */
    size_t n = strnlen(r->message, sizeof x->last_err.message - 1);
    memcpy(x->last_err.message, r->message, n);
    x->last_err.message[n] = '\0';
}

/* A batch the endpoint took, perhaps only in part (the spans it refused
 * are not retried: OTLP says a partial success must not be). */
static void on_sent(struct exporter *x, struct batch *b, const struct send_result *r)
{
    x->st.sent_batches++;
    x->st.sent_items += b->items;
    x->st.sent_bytes += b->body_len;
    if (b->in_spool)
        x->st.replayed++;
    if (r->partial) {
        x->st.partial_batches++;
        x->st.partial_rejected += r->rejected;
        if (rate_ok(x->now_ns, &x->last_partial_log_ns)) {
            cbus_log_warn("partial success: %" PRIu64 " spans rejected (%s); not retried (+%" PRIu64
                          " similar)",
                          r->rejected, r->message[0] ? r->message : "no message", x->suppressed_partials);
            x->suppressed_partials = 0;
        } else {
            x->suppressed_partials++;
        }
    }
    if (x->unhealthy) {
        cbus_log_info("endpoint is back (HTTP %ld); %zu spooled batches to replay", r->status,
                      spool_count(x->spool) - (b->in_spool ? 1 : 0));
        x->unhealthy = 0;
    }
    x->attempt = 0;
    drop_batch(x, b);
}

/* A batch refused for good (a 4xx other than 429, or a request curl
 * cannot make): dropped and counted, and the endpoint is reported as not
 * OK although it answers. */
static void on_rejected(struct exporter *x, struct batch *b, const struct send_result *r)
{
    x->st.rejected_batches++;
    x->st.rejected_items += b->items;
    if (rate_ok(x->now_ns, &x->last_reject_log_ns)) {
        if (r->curl_code)
            cbus_log_error("request failed for good (%s): batch of %u dropped (+%" PRIu64 " similar)",
                           r->message, b->items, x->suppressed_rejects);
        else
            cbus_log_error("HTTP %ld: batch of %u dropped, not retried: %s (+%" PRIu64 " similar)",
                           r->status, b->items, r->message, x->suppressed_rejects);
        x->suppressed_rejects = 0;
    } else {
        x->suppressed_rejects++;
    }
    x->unhealthy = 0; /* it answered: no backoff, nothing to spool */
    x->rejecting = 1; /* but it is losing our data: not OK */
    x->attempt = 0;
    drop_batch(x, b);
}

/* A batch to try again: after the server's Retry-After, else after a
 * jittered exponential backoff; meanwhile it and what follows go to the
 * spool. */
static void on_retry(struct exporter *x, struct batch *b, const struct send_result *r)
{
    x->st.retried++;
    uint64_t delay = r->has_retry_after
                         ? r->retry_after_ns
                         : retry_backoff_ns(x->attempt, x->cfg.retry_initial_ns, x->cfg.retry_max_ns, rnd(x));
    x->attempt++;
    if (!x->unhealthy) {
        char why[300];
        if (r->curl_code)
            snprintf(why, sizeof why, "%s", r->message);
        else
            snprintf(why, sizeof why, "HTTP %ld", r->status);
        cbus_log_warn("endpoint unavailable (%s): spooling, next try in %" PRIu64 " ms%s", why,
                      delay / 1000000, r->has_retry_after ? " (Retry-After)" : "");
    }
    x->unhealthy = 1;
    uint64_t t = x->now_ns + delay;
    if (t > x->next_try_ns || r->has_retry_after)
        x->next_try_ns = t;
    if (b->in_spool) {
        spool_unload(x->spool, b); /* stays at the head */
    } else {
        to_spool(x, b);
        queue_to_spool(x);
    }
}

static void on_done(void *arg, struct batch *b, const struct send_result *r)
{
    struct exporter *x = arg;
    /* Now, not the loop's time: the answer may have taken part of this
     * wait, and a Retry-After counts from the answer (RFC 9110 10.2.3). */
    uint64_t answered = mono_now();
    if (answered > x->now_ns)
        x->now_ns = answered;
    x->st.last_status = r->status;
    if (r->outcome == SEND_OK)
        x->rejecting = 0;
    else
        note_error(x, r);
    cbus_log_debug("batch %" PRIu64 " (%u items, %" PRIu64 " bytes): HTTP %ld after %.3f ms (built %.3f ms before)",
                   b->seq, b->items, b->body_len, r->status, (double)(mono_now() - b->sent_ns) / 1e6,
                   (double)(b->sent_ns - b->created_ns) / 1e6);
    if (!b->in_spool)
        list_del(&x->direct, b);
    switch (r->outcome) {
    case SEND_OK:
        on_sent(x, b, r);
        break;
    case SEND_REJECT:
        on_rejected(x, b, r);
        break;
    case SEND_RETRY:
        on_retry(x, b, r);
        break;
    }
}

void exporter_tick(struct exporter *x, uint64_t now_ns, const struct cbus_position *hold)
{
    x->now_ns = now_ns;
    if (x->spans) {
        uint64_t older = now_ns > x->cfg.run_timeout_ns ? now_ns - x->cfg.run_timeout_ns : 0;
        span_table_expire(x->spans, older, hold && hold->lanes == x->lanes ? hold->pos : NULL);
    }
    if (x->cur && now_ns - x->cur->created_ns >= x->cfg.batch_max_age_ns)
        finalize(x);
    pump(x);
    transport_run(x->tr, 0, on_done, x);
    pump(x);
}

void exporter_flush(struct exporter *x)
{
    finalize(x);
    pump(x);
}

void exporter_set_bus_id(struct exporter *x, uint64_t bus_id)
{
    exporter_flush(x); /* the batch being built says the old id */
    x->bus_id = bus_id;
    x->res.bus_id = bus_id;
}

void exporter_set_lanes(struct exporter *x, unsigned lanes)
{
    x->lanes = lanes >= 1 && lanes <= CBUS_MAX_LANES && !(lanes & (lanes - 1)) ? lanes : 1;
    if (x->spans)
        span_table_set_lanes(x->spans, x->lanes);
}

int exporter_wait(struct exporter *x, int timeout_ms)
{
    if (!transport_in_flight(x->tr))
        return 0;
    transport_run(x->tr, timeout_ms, on_done, x);
    return 1;
}

uint64_t exporter_next_deadline(const struct exporter *x)
{
    uint64_t d = UINT64_MAX;
    if (x->cur)
        d = x->cur->created_ns + x->cfg.batch_max_age_ns;
    struct batch *h = spool_head(x->spool);
    if (h && !h->sending && x->next_try_ns < d)
        d = x->next_try_ns;
    return d;
}

void exporter_floor_position(const struct exporter *x, const struct cbus_position *read,
                             struct cbus_position *out)
{
    *out = *read;
    const unsigned n = read->lanes == x->lanes ? read->lanes : 0; /* else: hold nothing back */
    uint64_t m[CBUS_MAX_LANES];
    for (unsigned L = 0; L < n; L++)
        m[L] = read->pos[L];
    if (x->spans && n) {
        uint64_t s[CBUS_MAX_LANES];
        span_table_min_lanes(x->spans, s);
        for (unsigned L = 0; L < n; L++)
            if (s[L] < m[L])
                m[L] = s[L];
    }
    for (unsigned L = 0; L < n; L++) {
        if (x->cur && x->cur->lane_min[L] < m[L])
            m[L] = x->cur->lane_min[L];
        for (const struct batch *b = x->queue.head; b; b = b->next)
            if (b->lane_min[L] < m[L])
                m[L] = b->lane_min[L];
        for (const struct batch *b = x->direct.head; b; b = b->next)
            if (b->lane_min[L] < m[L])
                m[L] = b->lane_min[L];
    }
    if (n)
        spool_min_volatile_lanes(x->spool, n, m);
    for (unsigned L = 0; L < n; L++)
        out->pos[L] = m[L];
}

uint64_t exporter_floor(const struct exporter *x, uint64_t read_pos)
{
    uint64_t m = read_pos;
    if (x->spans) {
        uint64_t s = span_table_min_pos(x->spans);
        if (s < m)
            m = s;
    }
    if (x->cur && x->cur->min_pos < m)
        m = x->cur->min_pos;
    for (const struct batch *b = x->queue.head; b; b = b->next)
        if (b->min_pos < m)
            m = b->min_pos;
    for (const struct batch *b = x->direct.head; b; b = b->next)
        if (b->min_pos < m)
            m = b->min_pos;
    uint64_t v = spool_min_volatile_pos(x->spool);
    return v < m ? v : m;
}

int exporter_paused(const struct exporter *x)
{
    if (x->queue.count >= x->cfg.queue_batches)
        return 1;
    return x->cfg.lossless && spool_bytes(x->spool) > spool_limit(x->spool);
}

int exporter_idle(const struct exporter *x)
{
    return !x->cur && !x->queue.count && !x->direct.count && !spool_count(x->spool) &&
           (!x->tr || !transport_in_flight(x->tr));
}

size_t exporter_shutdown(struct exporter *x, uint64_t deadline_ns)
{
    if (x->spans)
        span_table_flush(x->spans);
    finalize(x);
    for (;;) {
        x->now_ns = mono_now();
        if (exporter_idle(x) || x->now_ns >= deadline_ns)
            break;
        /* while the endpoint is failing, do not wait out a long backoff */
        if (x->unhealthy && x->next_try_ns > deadline_ns && !transport_in_flight(x->tr))
            break;
        pump(x);
        if (!exporter_wait(x, 10)) {
            struct timespec nap = {0, 5000000};
            nanosleep(&nap, NULL);
        }
    }
    /* What is still in memory goes to the spool (on disk: it survives) */
    struct batch *b;
    transport_free(x->tr); /* aborts requests still in flight */
    x->tr = NULL;
    while ((b = list_pop(&x->direct))) {
        b->sending = 0;
        to_spool(x, b);
    }
    for (struct batch *s = spool_head(x->spool); s; s = s->next) {
        if (s->sending) {
            s->sending = 0;
            spool_unload(x->spool, s);
        }
    }
    queue_to_spool(x);
    size_t lost = 0;
    if (!spool_on_disk(x->spool))
        lost = spool_count(x->spool);
    return lost;
}

int exporter_new(struct exporter **out, const struct export_config *cfg,
                 const struct exporter_identity *id, char *err, size_t errlen)
{
    struct exporter *x = calloc(1, sizeof *x);
    if (!x)
        return -ENOMEM;
    /* the config's header strings stay owned by the caller's config */
    x->cfg = *cfg;
    snprintf(x->host, sizeof x->host, "%s", id->host_name ? id->host_name : "");
    snprintf(x->bus, sizeof x->bus, "%s", id->bus_name ? id->bus_name : "");
    x->bus_id = id->bus_id;
    x->pid = id->pid;
    x->lanes = 1;
    x->res = (struct otlp_resource){
        .service_name = x->cfg.service_name,
        .host_name = x->host[0] ? x->host : NULL,
        .pid = id->pid,
        .bus_name = x->bus[0] ? x->bus : NULL,
        .bus_id = id->bus_id,
        .extra = x->cfg.resource_attributes[0] ? x->cfg.resource_attributes : NULL,
        .project = x->cfg.phoenix && x->cfg.phoenix_project[0] ? x->cfg.phoenix_project : NULL,
    };
    x->oopts.include_previews = cfg->include_previews;
    x->oopts.encoding = cfg->otlp_encoding;
    x->oopts.langfuse = cfg->langfuse;
    x->oopts.phoenix = cfg->phoenix;
    x->oopts.capture_content = cfg->capture_content;
    x->oopts.content_max = (size_t)cfg->content_max_bytes;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    x->rng = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)id->pid ^ UINT64_C(0x9e3779b97f4a7c15);
    x->now_ns = mono_now();
    int r;
    if (cfg->format == EXPORT_OTLP && (r = span_table_new(&x->spans, cfg->max_open_runs, on_span, x))) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (cfg->format == EXPORT_OTLP && cfg->prices_file[0]) {
        /* the table and code cbus-cost prices with (consumers/events/prices.c) */
        char perr[512];
        int pr = cost_prices_load(&x->prices, cfg->prices_file,
                                  cfg->prices_overrides[0] ? cfg->prices_overrides : NULL, perr, sizeof perr);
        if (pr && (cfg->prices_explicit || cfg->prices_overrides[0])) {
            snprintf(err, errlen, "[cost] prices: %s", perr);
            r = -EINVAL;
            goto fail;
        }
        if (pr)
            cbus_log_info("no price table at %s: spans carry no gen_ai.usage.cost (set [cost] prices)",
                          cfg->prices_file);
        x->oopts.prices = x->prices;
    }
    if (x->spans)
        span_table_bodies(x->spans, exporter_wants_bodies(x), cfg->capture_content,
                          (size_t)cfg->content_max_bytes, cfg->content_memory);
    if ((r = spool_open(&x->spool, cfg->spool_dir, cfg->spool_limit, err, errlen)))
        goto fail;
    if ((r = transport_new(&x->tr, cfg, err, errlen)))
        goto fail;
    *out = x;
    return 0;
fail:
    exporter_free(x);
    return r;
}

void exporter_free(struct exporter *x)
{
    if (!x)
        return;
    transport_free(x->tr);
    struct batch *b;
    while ((b = list_pop(&x->queue)))
        batch_free(b);
    while ((b = list_pop(&x->direct)))
        batch_free(b);
    batch_free(x->cur);
    spool_close(x->spool);
    span_table_free(x->spans);
    cost_prices_free(x->prices);
    while (x->npool)
        sbuf_free(&x->pool[--x->npool]);
    free(x);
}

const struct exporter_stats *exporter_stats(const struct exporter *x)
{
    return &x->st;
}

void exporter_status_json(const struct exporter *x, struct sbuf *b)
{
    const struct exporter_stats *s = &x->st;
    sbuf_printf(b,
                "{\"events\":%" PRIu64 ",\"items\":%" PRIu64 ",\"batches\":%" PRIu64
                ",\"body_bytes\":%" PRIu64 ",\"requests\":%" PRIu64 ",\"sent_batches\":%" PRIu64
                ",\"sent_items\":%" PRIu64 ",\"sent_bytes\":%" PRIu64 ",\"retried\":%" PRIu64
                ",\"rejected_batches\":%" PRIu64 ",\"rejected_items\":%" PRIu64
                ",\"partial_batches\":%" PRIu64 ",\"partial_rejected\":%" PRIu64
                ",\"spooled\":%" PRIu64 ",\"replayed\":%" PRIu64 ",\"spool_dropped_batches\":%" PRIu64
                ",\"spool_dropped_items\":%" PRIu64 ",\"spool_errors\":%" PRIu64
                ",\"spool_batches\":%zu,\"spool_bytes\":%" PRIu64 ",\"spool_recovered\":%" PRIu64
                ",\"spool_corrupt\":%" PRIu64 ",\"queue\":%zu,\"in_flight\":%u,\"connections\":%" PRIu64
                ",\"endpoint_ok\":%s,\"last_status\":%ld",
                s->events, s->items, s->batches, s->body_bytes, s->requests, s->sent_batches,
                s->sent_items, s->sent_bytes, s->retried, s->rejected_batches, s->rejected_items,
                s->partial_batches, s->partial_rejected, s->spooled, s->replayed,
                s->spool_dropped_batches, s->spool_dropped_items, s->spool_errors,
                spool_count(x->spool), spool_bytes(x->spool), spool_stats(x->spool)->recovered,
                spool_stats(x->spool)->corrupt, x->queue.count,
                x->tr ? transport_in_flight(x->tr) : 0u, x->tr ? transport_connects(x->tr) : 0,
                x->unhealthy || x->rejecting ? "false" : "true", s->last_status);
    if (x->last_err.realtime_ns) {
        /* the message comes from the network: escaped, never raw */
        sbuf_printf(b, ",\"last_error\":{\"status\":%ld,\"curl_code\":%d,\"unix_ms\":%" PRIu64 ",\"message\":",
                    x->last_err.status, x->last_err.curl_code, x->last_err.realtime_ns / 1000000u);
        sbuf_json_str(b, x->last_err.message, strlen(x->last_err.message));
        sbuf_puts(b, "}");
    }
    if (x->spans) {
        const struct span_stats *p = span_table_stats(x->spans);
        sbuf_printf(b,
                    ",\"spans\":{\"exported\":%" PRIu64 ",\"open\":%" PRIu64 ",\"unfinished\":%" PRIu64
                    ",\"start_missing\":%" PRIu64 ",\"points\":%" PRIu64 ",\"chunks_folded\":%" PRIu64
                    ",\"chunks_orphan\":%" PRIu64 ",\"events_folded\":%" PRIu64
                    ",\"body_bytes\":%" PRIu64 ",\"bodies_dropped\":%" PRIu64 "}",
                    p->spans, p->open, p->unfinished, p->start_missing, p->points, p->chunks_folded,
                    p->chunks_orphan, p->events_folded, p->body_bytes, p->bodies_dropped);
    }
    sbuf_puts(b, "}");
}
