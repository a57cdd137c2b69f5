#include "span.h"

#include "content.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CLOSED_SLOTS 4096 /* power of two; 32 KiB */

struct span_table {
    struct span **buckets;
    size_t nbuckets;           /* power of two */
    size_t count;
    size_t max_open;
    struct span *head, *tail;  /* arrival order */
    unsigned lanes;            /* of the bus: a power of two */
    struct span_hold *lane_head[CBUS_MAX_LANES], *lane_tail[CBUS_MAX_LANES];
    struct span *free_list;    /* recycled spans: no malloc per run in steady state */
    size_t free_count;
    span_emit_fn emit;
    void *arg;
    struct span_stats st;
    int keep_bodies, keep_content; /* span_table_bodies() */
    size_t content_cap;
    uint64_t body_memory;
    /* Run hashes of recently exported runs, direct-mapped: a point event that
     * comes after its run closed (a retry after llm_error) still hangs under
     * that run's span, which was exported.  A run pushed out of here, or never
     * seen, gives its point events no parent: a parentSpanId that never
     * arrives is worse than none.  64-bit hashes: a false match is ~2^-64. */
    uint64_t closed[CLOSED_SLOTS];
};

static uint64_t mix64(uint64_t x)
{
    /* splitmix64's finaliser: every input bit affects every output bit */
    x ^= x >> 30;
    x *= UINT64_C(0xbf58476d1ce4e5b9);
    x ^= x >> 27;
    x *= UINT64_C(0x94d049bb133111eb);
    x ^= x >> 31;
    return x;
}

static uint64_t load64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static void store_be64(uint8_t *out, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        out[i] = (uint8_t)v;
        v >>= 8;
    }
}

static uint64_t run_hash(const uint8_t id[16])
{
    return mix64(load64(id) ^ mix64(load64(id + 8) + UINT64_C(0x9e3779b97f4a7c15)));
}

void span_id_from_run(uint8_t out[8], const uint8_t run_id[16])
{
    uint64_t h = run_hash(run_id);
    store_be64(out, h ? h : 1);
}

void span_id_from_event(uint8_t out[8], const uint8_t run_id[16], uint64_t event_id)
{
    uint64_t h = mix64(run_hash(run_id) ^ mix64(event_id + UINT64_C(0x632be59bd9b4e019)));
    store_be64(out, h ? h : 1);
}

void trace_id_derive(uint8_t out[16], const uint8_t id[16])
{
    uint64_t a = run_hash(id);
    uint64_t b = mix64(a ^ UINT64_C(0xd6e8feb86659fd93));
    store_be64(out, a ? a : 1);
    store_be64(out + 8, b);
}

static int id_zero(const uint8_t id[16])
{
    return load64(id) == 0 && load64(id + 8) == 0;
}

int event_has_parent(const struct cbus_event *ev)
{
    return (ev->flags & CBUS_FLAG_HAS_PARENT) || !id_zero(ev->parent_run_id);
}

int event_has_trace(const struct cbus_event *ev)
{
    return !id_zero(ev->trace_id);
}

int span_table_new(struct span_table **out, size_t max_open, span_emit_fn emit, void *arg)
{
    struct span_table *t = calloc(1, sizeof *t);
    if (!t)
        return -ENOMEM;
    t->nbuckets = 1024;
    t->buckets = calloc(t->nbuckets, sizeof *t->buckets);
    if (!t->buckets) {
        free(t);
        return -ENOMEM;
    }
    t->max_open = max_open ? max_open : 1;
    t->lanes = 1;
    t->emit = emit;
    t->arg = arg;
    *out = t;
    return 0;
}

void span_table_set_lanes(struct span_table *t, unsigned lanes)
{
    t->lanes = lanes >= 1 && lanes <= CBUS_MAX_LANES && !(lanes & (lanes - 1)) ? lanes : 1;
}

void span_table_bodies(struct span_table *t, int keep, int content, size_t cap, uint64_t memory)
{
    t->keep_bodies = keep || content;
    t->keep_content = content;
    t->content_cap = cap;
    t->body_memory = memory;
}

/* A span made of one event and emitted at once: it shows that event's body
 * as it is (nothing to copy, the caller's buffer outlives the emit): as its
 * start's (a point) or its end's (an end whose start was not seen). */
static void body_borrow(struct span *s, const struct cbus_body *body, int as_end)
{
    if (!body || !body->data || !body->len)
        return;
    if (as_end) {
        s->end_body = body->data;
        s->end_body_len = body->len;
    } else {
        s->start_body = body->data;
        s->start_body_len = body->len;
    }
}

/* The hold of event ev, not linked anywhere yet. */
static void hold_of(const struct span_table *t, struct span_hold *h, struct span *owner,
                    const struct cbus_event *ev)
{
    h->prev = h->next = h->more = NULL;
    h->owner = owner;
    h->lane = (unsigned)(ev->event_id & (t->lanes - 1));
    h->lp = ev->event_id / t->lanes;
    h->linked = 0;
}

static void hold_link(struct span_table *t, struct span_hold *h)
{
    /* Events of a lane arrive in lane order: appending keeps the list sorted. */
    h->prev = t->lane_tail[h->lane];
    h->next = NULL;
    if (h->prev)
        h->prev->next = h;
    else
        t->lane_head[h->lane] = h;
    t->lane_tail[h->lane] = h;
    h->linked = 1;
}

static void hold_unlink(struct span_table *t, struct span_hold *h)
{
    if (!h->linked)
        return;
    if (h->prev)
        h->prev->next = h->next;
    else
        t->lane_head[h->lane] = h->next;
    if (h->next)
        h->next->prev = h->prev;
    else
        t->lane_tail[h->lane] = h->prev;
    h->prev = h->next = NULL;
    h->linked = 0;
}

/* Run s took in ev: it holds ev's lane from there unless it holds that lane
 * already (from an earlier, lower, position).  link: s stays open (its
 * holds are on the lanes' lists); else it is on its way out, and the hold
 * only tells the batch it goes into. */
static void hold_add(struct span_table *t, struct span *s, const struct cbus_event *ev, int link)
{
    unsigned lane = (unsigned)(ev->event_id & (t->lanes - 1));
    for (struct span_hold *h = &s->hold; h; h = h->more)
        if (h->lane == lane)
            return;
    struct span_hold *h = malloc(sizeof *h);
    if (!h)
        return; /* the event's data may be acknowledged early: the span still goes out */
    hold_of(t, h, s, ev);
    if (link)
        hold_link(t, h);
    h->more = s->hold.more;
    s->hold.more = h;
}

static void holds_free(struct span_table *t, struct span *s)
{
    for (struct span_hold *h = s->hold.more, *n; h; h = n) {
        n = h->more;
        if (t)
            hold_unlink(t, h);
        free(h);
    }
    s->hold.more = NULL;
}

static void body_release(struct span_table *t, struct span *s)
{
    if (s->body_owned) {
        if (t)
            t->st.body_bytes -= s->start_body_len;
        free((void *)s->start_body);
    }
    s->start_body = NULL;
    s->start_body_len = 0;
    s->body_owned = 0;
    if (s->event_body) {
        for (uint32_t i = 0; i < SPAN_MAX_EVENTS; i++) {
            if (t)
                t->st.body_bytes -= s->event_body[i].len;
            free(s->event_body[i].p);
        }
        free(s->event_body);
        s->event_body = NULL;
    }
    s->end_body = NULL;
    s->end_body_len = 0;
}

static void span_release(struct span_table *t, struct span *s)
{
    holds_free(t, s);
    body_release(t, s);
    /* keep a bounded pool; the events array stays with the span */
    if (t->free_count < 4096) {
        s->hnext = t->free_list;
        t->free_list = s;
        t->free_count++;
    } else {
        free(s->events);
        free(s);
    }
}

void span_table_free(struct span_table *t)
{
    if (!t)
        return;
    for (struct span *s = t->head, *n; s; s = n) {
        n = s->next;
        holds_free(NULL, s);
        body_release(NULL, s);
        free(s->events);
        free(s);
    }
    for (struct span *s = t->free_list, *n; s; s = n) {
        n = s->hnext;
        free(s->events);
        free(s);
    }
    free(t->buckets);
    free(t);
}

static struct span *span_alloc(struct span_table *t)
{
    struct span *s = t->free_list;
    struct cbus_event *events = NULL;
    if (s) {
        t->free_list = s->hnext;
        t->free_count--;
        events = s->events;
    } else {
        s = malloc(sizeof *s);
        if (!s)
            return NULL;
    }
    /* only the header part needs clearing; start/end are written by the caller */
    memset(&s->end_kind, 0, sizeof *s - offsetof(struct span, end_kind));
    s->events = events;
    return s;
}

static size_t bucket_of(const struct span_table *t, const uint8_t id[16])
{
    return (size_t)run_hash(id) & (t->nbuckets - 1);
}

static struct span *lookup(const struct span_table *t, const uint8_t id[16])
{
    for (struct span *s = t->buckets[bucket_of(t, id)]; s; s = s->hnext)
        if (!memcmp(s->start.run_id, id, 16))
            return s;
    return NULL;
}

static void grow(struct span_table *t)
{
    size_t nb = t->nbuckets * 2;
    struct span **b = calloc(nb, sizeof *b);
    if (!b)
        return; /* keep the smaller table: slower chains, still correct */
    for (size_t i = 0; i < t->nbuckets; i++) {
        for (struct span *s = t->buckets[i], *n; s; s = n) {
            n = s->hnext;
            size_t j = (size_t)run_hash(s->start.run_id) & (nb - 1);
            s->hnext = b[j];
            b[j] = s;
        }
    }
    free(t->buckets);
    t->buckets = b;
    t->nbuckets = nb;
}

static void unlink_span(struct span_table *t, struct span *s)
{
    struct span **pp = &t->buckets[bucket_of(t, s->start.run_id)];
    while (*pp != s)
        pp = &(*pp)->hnext;
    *pp = s->hnext;
    if (s->prev)
        s->prev->next = s->next;
    else
        t->head = s->next;
    if (s->next)
        s->next->prev = s->prev;
    else
        t->tail = s->prev;
    for (struct span_hold *h = &s->hold; h; h = h->more)
        hold_unlink(t, h);
    t->count--;
}

static void remember_closed(struct span_table *t, const uint8_t run_id[16])
{
    uint64_t h = run_hash(run_id);
    t->closed[h & (CLOSED_SLOTS - 1)] = h | 1; /* never 0: 0 marks an empty slot */
}

static int recently_closed(const struct span_table *t, const uint8_t run_id[16])
{
    uint64_t h = run_hash(run_id);
    return t->closed[h & (CLOSED_SLOTS - 1)] == (h | 1);
}

static void emit(struct span_table *t, struct span *s)
{
    /* every span but a point carries its run's span id: children and later
     * point events of that run can link to it */
    if (s->end_kind != SPAN_POINT)
        remember_closed(t, s->start.run_id);
    t->st.spans++;
    if (s->end_kind == SPAN_UNFINISHED)
        t->st.unfinished++;
    else if (s->end_kind == SPAN_START_MISSING)
        t->st.start_missing++;
    else if (s->end_kind == SPAN_POINT)
        t->st.points++;
    t->emit(s, t->arg);
}

static uint64_t realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void finish_unfinished(struct span_table *t, struct span *s, uint64_t end_realtime)
{
    unlink_span(t, s);
    s->end_kind = SPAN_UNFINISHED;
    s->unfinished_end_ns = end_realtime > s->start.ts_realtime_ns ? end_realtime : s->start.ts_realtime_ns;
    emit(t, s);
    span_release(t, s);
}

/* Fills the ids every exported span needs from its first event. */
static void set_ids(struct span_table *t, struct span *s, const struct cbus_event *ev, int point)
{
    if (point)
        span_id_from_event(s->span_id, ev->run_id, ev->event_id);
    else
        span_id_from_run(s->span_id, ev->run_id);
    const struct span *parent = NULL;
    if (point) {
        /* A point event with no open run (point_event() folds it otherwise):
         * it hangs under its run, or its parent run, only if that run's span
         * was exported; else it is a root span of its trace. */
        const uint8_t *link = NULL;
        if (!id_zero(ev->run_id) && recently_closed(t, ev->run_id))
            link = ev->run_id;
        else if (event_has_parent(ev) && recently_closed(t, ev->parent_run_id))
            link = ev->parent_run_id;
        if (link) {
            s->has_parent = 1;
            span_id_from_run(s->parent_span_id, link);
        }
    } else if (event_has_parent(ev)) {
        s->has_parent = 1;
        span_id_from_run(s->parent_span_id, ev->parent_run_id);
        parent = lookup(t, ev->parent_run_id);
    }
    if (event_has_trace(ev))
        memcpy(s->trace_id, ev->trace_id, 16);
    else if (parent)
        memcpy(s->trace_id, parent->trace_id, 16);
    else
        trace_id_derive(s->trace_id, s->has_parent && !point ? ev->parent_run_id : ev->run_id);
}

/* A span of one event that no open run takes: an end whose start was never
 * seen (SPAN_START_MISSING: what the end knows, under the run's span id, so
 * a receiver that saw the unfinished export can replace it) or a lone point
 * (SPAN_POINT: a span id of its own).  Exported at once. */
static void emit_alone(struct span_table *t, const struct cbus_event *ev,
                       const struct cbus_body *body, enum span_end_kind kind)
{
    struct span *s = span_alloc(t);
    if (!s)
        return;
    s->start = *ev;
    if (kind == SPAN_START_MISSING)
        s->end = *ev;
    s->start_pos = ev->event_id;
    hold_of(t, &s->hold, s, ev);
    s->end_kind = kind;
    if (t->keep_bodies)
        body_borrow(s, body, kind == SPAN_START_MISSING);
    set_ids(t, s, ev, kind == SPAN_POINT);
    emit(t, s);
    span_release(t, s);
}

static void open_run(struct span_table *t, const struct cbus_event *ev, const struct cbus_body *body,
                     uint64_t now_ns)
{
    struct span *old = lookup(t, ev->run_id);
    if (old) /* a second start for a live run: the first one will never end */
        finish_unfinished(t, old, ev->ts_realtime_ns);
    while (t->count >= t->max_open && t->head)
        finish_unfinished(t, t->head, ev->ts_realtime_ns);
    struct span *s = span_alloc(t);
    if (!s)
        return;
    s->start = *ev;
    s->start_pos = ev->event_id;
    s->arrival_ns = now_ns;
    if (t->keep_bodies && body && body->data && body->len) {
        /* a trimmed copy: the poll buffer is reused before the run ends */
        uint32_t len = 0;
        void *copy = content_keep(body, t->keep_content, t->content_cap, &len);
        if (copy && t->st.body_bytes + len <= t->body_memory) {
            s->start_body = copy;
            s->start_body_len = len;
            s->body_owned = 1;
            t->st.body_bytes += len;
        } else if (copy) {
            free(copy); /* over the bound: the span goes without, and says so */
            s->body_dropped = 1;
            t->st.bodies_dropped++;
        }
    }
    hold_of(t, &s->hold, s, ev);
    hold_link(t, &s->hold);
    set_ids(t, s, ev, 0);
    if (t->count >= t->nbuckets)
        grow(t);
    size_t b = bucket_of(t, ev->run_id);
    s->hnext = t->buckets[b];
    t->buckets[b] = s;
    s->prev = t->tail;
    s->next = NULL;
    if (t->tail)
        t->tail->next = s;
    else
        t->head = s;
    t->tail = s;
    t->count++;
}

/* An end or error closes a start of its own family (the kind map). */
static int start_matches(unsigned start_kind, unsigned end_kind)
{
    enum cbus_kind_phase ep = cbus_kind_phase(end_kind);
    return (ep == CBUS_PHASE_END || ep == CBUS_PHASE_ERROR) &&
           cbus_kind_phase(start_kind) == CBUS_PHASE_START &&
           cbus_kind_family(start_kind) == cbus_kind_family(end_kind);
}

static void close_run(struct span_table *t, const struct cbus_event *ev, const struct cbus_body *body)
{
    struct span *s = lookup(t, ev->run_id);
    if (s && start_matches(s->start.kind, ev->kind)) {
        unlink_span(t, s);
        hold_add(t, s, ev, 0); /* its lane too: the batch holds it from now on */
        s->end = *ev;
        s->end_kind = SPAN_ENDED;
        if (t->keep_bodies)
            body_borrow(s, body, 1);
        emit(t, s);
        span_release(t, s);
        return;
    }
    /* No start: we attached mid-run, or it was exported unfinished already.
     * Export what the end event knows; its span id is the run's, so a
     * receiver that saw the unfinished export can replace it. */
    emit_alone(t, ev, body, SPAN_START_MISSING);
}

/* A copy of what a body holds for the span, within the memory bound:
 * NULL when there is nothing to keep or no room (then counted). */
static void *keep_body(struct span_table *t, const struct cbus_body *body, uint32_t *len)
{
    if (!t->keep_bodies || !body || !body->data || !body->len)
        return NULL;
    void *copy = content_keep(body, t->keep_content, t->content_cap, len);
    if (copy && t->st.body_bytes + *len > t->body_memory) {
        free(copy);
        t->st.bodies_dropped++;
        return NULL;
    }
    if (copy)
        t->st.body_bytes += *len;
    return copy;
}

static void add_point(struct span_table *t, struct span *s, const struct cbus_event *ev,
                      const struct cbus_body *body)
{
    if (cbus_kind_family(ev->kind) == CBUS_FAMILY_AGENT)
        s->is_agent = 1;
    if (s->n_events >= SPAN_MAX_EVENTS) {
        s->events_dropped++;
        t->st.events_overflow++;
        return;
    }
    if (!s->events) {
        s->events = malloc(SPAN_MAX_EVENTS * sizeof *s->events);
        if (!s->events) {
            s->events_dropped++;
            return;
        }
    }
    if (t->keep_content && body && body->data && body->len) {
        if (!s->event_body)
            s->event_body = calloc(SPAN_MAX_EVENTS, sizeof *s->event_body);
        if (s->event_body) {
            struct span_body *sb = &s->event_body[s->n_events];
            sb->p = keep_body(t, body, &sb->len);
            if (!sb->p)
                sb->len = 0;
        }
    }
    s->events[s->n_events++] = *ev;
    t->st.events_folded++;
}

static void point_event(struct span_table *t, const struct cbus_event *ev, const struct cbus_body *body)
{
    struct span *s = lookup(t, ev->run_id);
    if (!s && event_has_parent(ev))
        s = lookup(t, ev->parent_run_id);
    if (s) {
        add_point(t, s, ev, body);
        hold_add(t, s, ev, 1);
        return;
    }
    emit_alone(t, ev, body, SPAN_POINT);
}

void span_table_feed(struct span_table *t, const struct cbus_event *ev, uint64_t now_ns)
{
    span_table_feed_body(t, ev, NULL, now_ns);
}

void span_table_feed_body(struct span_table *t, const struct cbus_event *ev,
                          const struct cbus_body *body, uint64_t now_ns)
{
    /* By the kind map's phase.  Agent callbacks have no start (LangChain
     * runs an agent as a chain): agent_finish, though an end, is a point
     * inside that chain's span, like agent_action. */
    enum cbus_kind_phase phase = cbus_kind_phase(ev->kind);
    if (cbus_kind_family(ev->kind) == CBUS_FAMILY_AGENT)
        phase = CBUS_PHASE_POINT;
    switch (phase) {
    case CBUS_PHASE_START:
        open_run(t, ev, body, now_ns);
        return;
    case CBUS_PHASE_END:
    case CBUS_PHASE_ERROR:
        close_run(t, ev, body);
        return;
    default:
        break;
    }
    switch (cbus_kind_payload(ev->kind)) {
    case CBUS_PAYLOAD_TOKEN: {
        struct span *s = lookup(t, ev->run_id);
        if (!s) {
            t->st.chunks_orphan++;
            break;
        }
        if (!s->chunks++)
            s->first_chunk_mono_ns = ev->ts_mono_ns;
        hold_add(t, s, ev, 1);
        t->st.chunks_folded++;
        break;
    }
    default: /* every other point, and kinds from a newer layout */
        point_event(t, ev, body);
        break;
    }
}

size_t span_table_expire(struct span_table *t, uint64_t older_than_ns, const uint64_t *hold)
{
    size_t n = 0;
    uint64_t now_rt = 0;
    /* arrival order: the timeout can only hold at the head */
    while (t->head && t->head->arrival_ns < older_than_ns) {
        if (!now_rt)
            now_rt = realtime_ns();
        finish_unfinished(t, t->head, now_rt);
        n++;
    }
    /* position order within a lane: the limit can only hold at a lane's head */
    for (unsigned L = 0; hold && L < t->lanes; L++) {
        while (t->lane_head[L] && t->lane_head[L]->lp < hold[L]) {
            if (!now_rt)
                now_rt = realtime_ns();
            finish_unfinished(t, t->lane_head[L]->owner, now_rt);
            n++;
        }
    }
    return n;
}

size_t span_table_flush(struct span_table *t)
{
    size_t n = 0;
    uint64_t now_rt = realtime_ns();
    while (t->head) {
        finish_unfinished(t, t->head, now_rt);
        n++;
    }
    return n;
}

uint64_t span_table_min_pos(const struct span_table *t)
{
    uint64_t m = UINT64_MAX;
    for (unsigned L = 0; L < t->lanes; L++) {
        const struct span_hold *h = t->lane_head[L];
        if (h && h->lp * t->lanes + L < m)
            m = h->lp * t->lanes + L;
    }
    return m;
}

void span_table_min_lanes(const struct span_table *t, uint64_t *out)
{
    for (unsigned L = 0; L < t->lanes; L++)
        out[L] = t->lane_head[L] ? t->lane_head[L]->lp : UINT64_MAX;
}

const struct span_stats *span_table_stats(struct span_table *t)
{
    t->st.open = t->count;
    return &t->st;
}
