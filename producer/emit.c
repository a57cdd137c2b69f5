/* The emit path (the context API: ctx.c; trace and run ids: ids.c).
 *
 * An emit: one timestamp (rdtsc), one claim (fetch_add; CAS only while a
 * lossless consumer is tethered), one copy of the context's pre-built event,
 * a few field stores, one release store.  No syscall unless a consumer sleeps
 * (then one futex wake), no lock, no allocation, no print. */
#include "producer_internal.h"

#include <stdio.h>
#include <unistd.h>

/* emit() copies the template around the payload: the key hashes and
 * strings follow it. */
_Static_assert(offsetof(struct cbus_event, key_hash) ==
                   offsetof(struct cbus_event, u) + sizeof(((struct cbus_event *)0)->u),
               "the key hashes follow the payload union");

static void wake_consumers(struct cbus_shm_header *hdr)
{
    atomic_fetch_add_explicit(&hdr->wake_seq, 1, memory_order_release);
    cbus__futex_wake(&hdr->wake_seq);
}

struct emit_req {
    unsigned kind;
    const char *name;       /* per-event name override, or NULL for the ctx's */
    size_t name_len;
    const char *preview;    /* the event's text: its start in preview, all of it in the body */
    size_t preview_len;
    const void *payload;    /* copied into ev->u */
    size_t payload_len;
    const char *messages;   /* chat messages as JSON, body only */
    size_t messages_len;
    const char *text;       /* body text other than the preview's (a score's comment) */
    size_t text_len;
    const char *system;     /* LLM starts: system instructions, body only */
    size_t system_len;
    const char *response_id;/* llm_end: the provider's response id, body only */
    size_t response_id_len;
};

/* ---- bodies (docs/bodies.md) -----------------------------------------------
 * An event's body is sections (struct cbus_body_section + bytes) in the
 * CBUS_BODY_SLOTS(body_len) slots after its own position, claimed with it.
 * The plan is made before the claim: which sections, how long, where the
 * bus's body limit cuts them. */
enum { SEC_TAGS, SEC_META, SEC_SYSTEM, SEC_MESSAGES, SEC_TEXT, SEC_RESPONSE_ID, SEC__COUNT };

struct body_plan {
    uint32_t total;            /* bytes of body: headers and carried bytes */
    int cut;
    struct {
        const char *src;
        uint32_t len, orig_len, dropped;
        uint16_t type;
    } sec[SEC__COUNT];
    unsigned n;
};

/* Tags and metadata ride on the events that open a run (and on scores):
 * consumers that need them on later events keep them by run id. */
static inline int carries_context(unsigned kind)
{
    return cbus_kind_phase(kind) == CBUS_PHASE_START || kind == CBUS_EV_SCORE;
}

static void plan_add(struct body_plan *b, uint32_t limit, uint16_t type, const char *src,
                     size_t len, uint32_t dropped)
{
    if (!len && !dropped)
        return;
    if (limit < b->total + sizeof(struct cbus_body_section)) {
        b->cut = 1; /* not even its header fits: left out, the event says cut */
        return;
    }
    uint32_t room = limit - b->total - (uint32_t)sizeof(struct cbus_body_section);
    uint32_t orig = len > UINT32_MAX ? UINT32_MAX : (uint32_t)len;
    uint32_t take = orig < room ? orig : room;
    if (take < orig) {
        b->cut = 1;
        /* not half a UTF-8 sequence at the cut (text and JSON alike) */
        while (take > 0 && ((unsigned char)src[take] & 0xc0) == 0x80)
            take--;
    }
    b->sec[b->n].src = src;
    b->sec[b->n].len = take;
    b->sec[b->n].orig_len = orig;
    b->sec[b->n].dropped = dropped;
    b->sec[b->n].type = type;
    b->n++;
    b->total += (uint32_t)sizeof(struct cbus_body_section) + take;
}

/* The request's fields one by one, not its address: handing &rq out of line
 * makes every emit, bodiless or not, build rq in memory (a rep stos and a
 * dozen stores, measured with callgrind). */
struct body_src {
    const char *preview, *messages, *text, *system, *response_id;
    size_t preview_len, messages_len, text_len, system_len, response_id_len;
};

/* Out of line: a body is the slow, big case; the bodiless emit stays small. */
static __attribute__((noinline)) uint32_t plan_body_src(const cbus_producer *p,
                                                        const cbus_ctx *ctx, unsigned kind,
                                                        struct body_src src,
                                                        struct body_plan *b)
{
    uint32_t limit = p->bus->body_limit;
    b->total = 0;
    b->cut = 0;
    b->n = 0;
    if (carries_context(kind)) {
        plan_add(b, limit, CBUS_BODY_TAGS, ctx->tags, ctx->tags_len, ctx->tags_dropped);
        plan_add(b, limit, CBUS_BODY_METADATA, ctx->meta, ctx->meta_len, ctx->meta_dropped);
    }
    if (src.system)
        plan_add(b, limit, CBUS_BODY_SYSTEM, src.system, src.system_len, 0);
    if (src.messages)
        plan_add(b, limit, CBUS_BODY_MESSAGES, src.messages, src.messages_len, 0);
    if (src.text)
        plan_add(b, limit, CBUS_BODY_TEXT, src.text, src.text_len, 0);
    else if (src.preview_len >= CBUS_PREVIEW_LEN)
        plan_add(b, limit, CBUS_BODY_TEXT, src.preview, src.preview_len, 0);
    if (src.response_id)
        plan_add(b, limit, CBUS_BODY_RESPONSE_ID, src.response_id, src.response_id_len, 0);
    return b->total;
}

static inline uint32_t plan_body(const cbus_producer *p, const cbus_ctx *ctx,
                                 const struct emit_req *rq, struct body_plan *b)
{
    struct body_src src = {rq->preview, rq->messages, rq->text, rq->system, rq->response_id,
                           rq->preview_len, rq->messages_len, rq->text_len, rq->system_len,
                           rq->response_id_len};
    return plan_body_src(p, ctx, rq->kind, src, b);
}

/* Does this event need a body?  Cheap, inline: a text that fits the preview
 * and no messages or context extras is the common case. */
static inline int wants_body(const cbus_ctx *ctx, const struct emit_req *rq)
{
    return rq->preview_len >= CBUS_PREVIEW_LEN || rq->messages || rq->text || rq->system ||
           rq->response_id ||
           (carries_context(rq->kind) && (ctx->tags_len | ctx->meta_len | ctx->tags_dropped |
                                          ctx->meta_dropped));
}

/* Writes the body into the slots at pos + 1 .. (claimed with the event,
 * whose own slot is already marked busy), each slot marked, written and
 * committed on its own: a reader that finds the event committed finds its
 * body committed (the event is committed after), and a reader lapped in the
 * middle sees a slot that is not its position's. */
static __attribute__((noinline)) void write_body(cbus_producer *p, struct cbus__producer_tls *t,
                                                 uint64_t pos, const struct body_plan *b)
{
    uint64_t nslots = CBUS_BODY_SLOTS(b->total);
    unsigned si = 0;             /* section being written */
    uint32_t soff = 0;           /* bytes of it written; header first */
    int hdr_done = 0;
    for (uint64_t k = 1; k <= nslots; k++) {
        uint64_t bp = pos + k;
        struct cbus_slot *slot = &t->slots[bp & p->mask];
        atomic_store_explicit(&slot->writer_pid, t->pid, memory_order_relaxed);
        atomic_store_explicit(&slot->part, CBUS_PART_BODY, memory_order_relaxed);
        atomic_store_explicit(&slot->seq, CBUS_SEQ_BUSY(bp), memory_order_relaxed);
        atomic_thread_fence(memory_order_release);
#ifdef CBUS__TSAN
        struct cbus_event local;
        unsigned char *dst = (unsigned char *)&local;
#else
        unsigned char *dst = (unsigned char *)&slot->ev;
#endif
        uint32_t room = CBUS_BODY_PER_SLOT, at = 0;
        while (room && si < b->n) {
            if (!hdr_done) {
                struct cbus_body_section h = {.type = b->sec[si].type,
                                              .flags = b->sec[si].len < b->sec[si].orig_len
                                                           ? CBUS_BODY_SECTION_CUT : 0,
                                              .len = b->sec[si].len,
                                              .orig_len = b->sec[si].orig_len,
                                              .dropped = b->sec[si].dropped};
                /* a section header may straddle two slots */
                uint32_t hl = (uint32_t)sizeof h - soff, c = hl < room ? hl : room;
                memcpy(dst + at, (const unsigned char *)&h + soff, c);
                at += c;
                room -= c;
                soff += c;
                if (soff == sizeof h) {
                    hdr_done = 1;
                    soff = 0;
                }
                continue;
            }
            uint32_t left = b->sec[si].len - soff, c = left < room ? left : room;
            memcpy(dst + at, b->sec[si].src + soff, c);
            at += c;
            room -= c;
            soff += c;
            if (soff == b->sec[si].len) {
                si++;
                soff = 0;
                hdr_done = 0;
            }
        }
        if (room)
            memset(dst + at, 0, room); /* no stale bytes of an older lap */
#ifdef CBUS__TSAN
        cbus__slot_write(&slot->ev, &local);
#endif
        atomic_store_explicit(&slot->seq, CBUS_SEQ_COMMITTED(bp), memory_order_release);
    }
}

/* Inlined into every typed call: the kind, and so the phase and payload
 * switches below, are then constants and fold away (-15 instructions and a
 * call per emit, measured with callgrind). */
static inline __attribute__((always_inline)) int emit(cbus_producer *p, cbus_ctx *ctx,
                                                      const struct emit_req *rq)
{
    if (CBUS__UNLIKELY(!p || !ctx || ctx->magic != CBUS_CTX_MAGIC || rq->kind == CBUS_EV_NONE ||
                       rq->kind >= CBUS_EV__COUNT || rq->payload_len > 64))
        return -EINVAL;
    struct cbus_shm_header *hdr = p->hdr;
    struct cbus__producer_tls *t = &cbus__ptls;
    if (CBUS__UNLIKELY(t->generation != p->generation)) {
        /* first emit of this thread with this producer (out of line) */
        cbus__producer_thread_start(p, t);
    }
    uint64_t real;
    uint64_t now = cbus__clock_now(&p->bus->clock, &real);

    __typeof__(ctx->tmpl.u) u;
    memcpy(&u, &ctx->tmpl.u, sizeof u);
    if (rq->payload_len)
        memcpy(&u, rq->payload, rq->payload_len);
    /* Run bookkeeping in the context: durations and time to first token,
     * by the kind map's phase and payload (constants once emit is inlined
     * into a typed call).  Done before the claim, on a local copy of the
     * payload, so the claim-to-commit window (where a preempted producer
     * holds up every consumer) is only stores into the slot.  An event that
     * is then dropped has still moved the run on: its start time, its
     * token's index (a consumer sees the gap) -- as it happened. */
    if (cbus_kind_phase(rq->kind) == CBUS_PHASE_START) {
        ctx->run_start_ns = now;
        ctx->first_token_ns = 0;
        ctx->token_index = 0;
    } else switch (cbus_kind_payload(rq->kind)) {
    case CBUS_PAYLOAD_TOKEN:
        /* The context numbers chunks; a generic emit with its own payload
         * keeps its index and moves the context's count past it. */
        if (!rq->payload_len)
            u.token.index = ctx->token_index;
        ctx->token_index = u.token.index + 1;
        if (!ctx->first_token_ns)
            ctx->first_token_ns = now;
        break;
    case CBUS_PAYLOAD_USAGE:
        if (!(u.usage.usage_present & CBUS_USAGE_DURATION) && ctx->run_start_ns) {
            u.usage.duration_ns = now - ctx->run_start_ns;
            u.usage.usage_present |= CBUS_USAGE_DURATION;
        }
        if (!(u.usage.usage_present & CBUS_USAGE_TTFT) && ctx->first_token_ns &&
            ctx->run_start_ns) {
            u.usage.ttft_ns = ctx->first_token_ns - ctx->run_start_ns;
            u.usage.usage_present |= CBUS_USAGE_TTFT;
        }
        break;
    case CBUS_PAYLOAD_ERROR:
        if (!u.error.duration_ns && ctx->run_start_ns)
            u.error.duration_ns = now - ctx->run_start_ns;
        break;
    case CBUS_PAYLOAD_RETRIEVER:
        if (!u.retriever.duration_ns && ctx->run_start_ns)
            u.retriever.duration_ns = now - ctx->run_start_ns;
        break;
    case CBUS_PAYLOAD_SPAN:
        if (!u.span.duration_ns && ctx->run_start_ns)
            u.span.duration_ns = now - ctx->run_start_ns;
        break;
    default:
        break;
    }

    /* A body takes the slots after the event's own, claimed with it. */
    struct body_plan plan;
    uint64_t nslots = 1;
    if (CBUS__UNLIKELY(wants_body(ctx, rq))) {
        nslots += CBUS_BODY_SLOTS(plan_body(p, ctx, rq, &plan));
    }

    uint64_t pos;
    uint64_t gate = atomic_load_explicit(&hdr->gate, memory_order_relaxed);
    if (CBUS__LIKELY(CBUS_GATE_COUNT(gate) == 0)) {
        /* seq_cst: also orders this claim before the load of waiters below
         * against the consumer's waiters increment (see cbus_consumer_wait). */
        pos = atomic_fetch_add_explicit(t->tail, nslots, memory_order_seq_cst);
    } else {
        int r = cbus__claim_gated(p, t, gate, now, rq->kind, nslots, &pos);
        if (r)
            return r;
    }

    struct cbus_slot *slot = &t->slots[pos & p->mask];
    /* A slot already at this lap or a later one: tail was moved back (or out
     * of range), or the slot word is a stray write.  bus/tail.c puts tail
     * right; a position below where the ring got to is never written over:
     * dropped, counted.  The load is of the line written next (and, for a
     * body, of its last slot's line). */
    uint64_t last = pos + nslots - 1;
    if (CBUS__UNLIKELY(last >= CBUS__POS_LIMIT ||
                       atomic_load_explicit(&slot->seq, memory_order_relaxed) >= CBUS_SEQ_BUSY(pos) ||
                       (nslots > 1 && atomic_load_explicit(&t->slots[last & p->mask].seq,
                                                           memory_order_relaxed) >= CBUS_SEQ_BUSY(last)))) {
        if (atomic_load_explicit(p->broken, memory_order_relaxed)) {
            cbus__producer_drop(p);
            return -ESTALE; /* zero pages after a truncation: nothing to repair */
        }
        uint64_t reached = cbus__tail_repair(p->bus, t->lane, 0);
        if (last >= CBUS__POS_LIMIT || pos < reached)
            return cbus__producer_drop(p);
    }
    atomic_store_explicit(&slot->writer_pid, t->pid, memory_order_relaxed);
    atomic_store_explicit(&slot->part, CBUS_PART_EVENT, memory_order_relaxed);
    atomic_store_explicit(&slot->seq, CBUS_SEQ_BUSY(pos), memory_order_relaxed);
    /* RELEASE fence: the busy mark is ordered before the payload stores, so
     * a reader that sees any new payload byte sees the busy mark on its
     * re-check (seqlock writer; pairs with the acquire fence in poll). */
    atomic_thread_fence(memory_order_release);
    if (CBUS__UNLIKELY(nslots > 1))
        write_body(p, t, pos, &plan);

#ifdef CBUS__TSAN
    struct cbus_event local, *ev = &local;
#else
    struct cbus_event *ev = &slot->ev;
#endif
    /* The context's pre-built event around the payload built above. */
    memcpy(ev, &ctx->tmpl, offsetof(struct cbus_event, u));
    memcpy(&ev->u, &u, sizeof u);
    memcpy(ev->key_hash, ctx->tmpl.key_hash, sizeof *ev - offsetof(struct cbus_event, key_hash));
    if (CBUS__UNLIKELY(nslots > 1)) {
        ev->body_len = plan.total;
        ev->flags |= (uint16_t)(CBUS_FLAG_BODY | (plan.cut ? CBUS_FLAG_BODY_CUT : 0));
    }
    ev->kind = (uint16_t)rq->kind;
    ev->pid = t->pid;
    ev->tid = t->tid;
    ev->event_id = cbus__event_id(p->bus, t->lane, pos);
    ev->ts_realtime_ns = real;
    ev->ts_mono_ns = now;
    if (rq->name)
        cbus__put_str(ev->name, sizeof ev->name, rq->name, rq->name_len, &ev->flags, CBUS_TRUNC_NAME);
    if (rq->preview)
        cbus__put_str(ev->preview, sizeof ev->preview, rq->preview, rq->preview_len, &ev->flags,
                CBUS_TRUNC_PREVIEW);

#ifdef CBUS__TSAN
    cbus__slot_write(&slot->ev, &local);
#endif
    /* RELEASE: publishes the payload written above.
     * Pairs with the ACQUIRE load of slot->seq in cbus_consumer_poll(). */
    atomic_store_explicit(&slot->seq, CBUS_SEQ_COMMITTED(pos), memory_order_release);

    /* seq_cst: a consumer that found the ring empty after announcing itself
     * (waiters, need_wake) is seen here (Dekker pairing with its seq_cst
     * stores and tail load); the producer that takes need_wake makes the
     * one wake.  Otherwise no syscall. */
    if (CBUS__UNLIKELY(atomic_load_explicit(&hdr->waiters, memory_order_seq_cst) != 0) &&
        atomic_exchange_explicit(&hdr->need_wake, 0, memory_order_seq_cst))
        wake_consumers(hdr);

    /* Truncated under us (bus/guard.c): everything above went to zero pages.
     * Looked at after the commit, not before, so an emit that straddles the
     * fault is counted dropped too.  One load of a process-local word. */
    if (CBUS__UNLIKELY(atomic_load_explicit(p->broken, memory_order_relaxed))) {
        cbus__producer_drop(p);
        return -ESTALE;
    }

    if (CBUS__UNLIKELY(++t->pending == 256))
        cbus__producer_flush(p, t);
    return 0;
}

/* The whole text: its start goes into the preview, all of it into the body. */
static inline size_t text_len(const char *s)
{
    return s ? strlen(s) : 0;
}

#define REQ(k, nm, pv) \
    (struct emit_req){.kind = (k), .name = (nm), .name_len = (nm) ? cbus__bounded_strlen((nm), CBUS_NAME_LEN + 1) : 0, \
                      .preview = (pv), .preview_len = text_len(pv)}

/* Sets the run's name in the context (so ends and errors carry it) and emits. */
static int emit_named_start(cbus_producer *p, cbus_ctx *ctx, unsigned kind, const char *name,
                            const char *preview)
{
    if (!ctx || ctx->magic != CBUS_CTX_MAGIC)
        return -EINVAL;
    memset(ctx->tmpl.name, 0, sizeof ctx->tmpl.name);
    ctx->tmpl.flags &= (uint16_t)~CBUS_TRUNC_NAME;
    if (name)
        cbus__put_str(ctx->tmpl.name, sizeof ctx->tmpl.name, name,
                cbus__bounded_strlen(name, CBUS_NAME_LEN + 1), &ctx->tmpl.flags, CBUS_TRUNC_NAME);
    struct emit_req rq = REQ(kind, NULL, preview);
    return emit(p, ctx, &rq);
}

CBUS_API int cbus_llm_start(cbus_producer *p, cbus_ctx *ctx, const char *prompt,
                            const struct cbus_llm_start_info *info)
{
    struct emit_req rq = REQ(CBUS_EV_LLM_START, NULL, prompt);
    if (info) {
        rq.payload = info;
        rq.payload_len = sizeof *info;
    }
    return emit(p, ctx, &rq);
}

CBUS_API int cbus_chat_model_start(cbus_producer *p, cbus_ctx *ctx, const char *last_message,
                                   const struct cbus_llm_start_info *info)
{
    struct emit_req rq = REQ(CBUS_EV_CHAT_MODEL_START, NULL, last_message);
    if (info) {
        rq.payload = info;
        rq.payload_len = sizeof *info;
    }
    return emit(p, ctx, &rq);
}

CBUS_API int cbus_llm_new_token(cbus_producer *p, cbus_ctx *ctx, const char *chunk, size_t len)
{
    struct emit_req rq = {.kind = CBUS_EV_LLM_NEW_TOKEN, .preview = chunk,
                          .preview_len = chunk ? len : 0};
    return emit(p, ctx, &rq);
}

CBUS_API int cbus_chat_model_start_messages(cbus_producer *p, cbus_ctx *ctx,
                                            const char *messages_json, size_t messages_len,
                                            const char *last_message,
                                            const struct cbus_llm_start_info *info)
{
    /* the same event without a system section */
    return cbus_chat_model_start_system(p, ctx, messages_json, messages_len, NULL, 0, last_message,
                                        info);
}

CBUS_API int cbus_llm_end_messages(cbus_producer *p, cbus_ctx *ctx, const struct cbus_usage *usage,
                                   const char *messages_json, size_t messages_len)
{
    if (!messages_json && messages_len)
        return -EINVAL;
    struct cbus_usage u = {0};
    if (usage)
        u = *usage;
    struct emit_req rq = REQ(CBUS_EV_LLM_END, NULL, NULL);
    rq.messages = messages_json;
    rq.messages_len = messages_json ? messages_len : 0;
    rq.payload = &u;
    rq.payload_len = sizeof u;
    return emit(p, ctx, &rq);
}

CBUS_API int cbus_chat_model_start_system(cbus_producer *p, cbus_ctx *ctx,
                                          const char *messages_json, size_t messages_len,
                                          const char *system, size_t system_len,
                                          const char *last_message,
                                          const struct cbus_llm_start_info *info)
{
    if ((!messages_json && messages_len) || (!system && system_len))
        return -EINVAL;
    struct emit_req rq = REQ(CBUS_EV_CHAT_MODEL_START, NULL, last_message);
    rq.messages = messages_json;
    rq.messages_len = messages_json ? messages_len : 0;
    rq.system = system;
    rq.system_len = system ? system_len : 0;
    if (info) {
        rq.payload = info;
        rq.payload_len = sizeof *info;
    }
    return emit(p, ctx, &rq);
}

CBUS_API int cbus_llm_start_system(cbus_producer *p, cbus_ctx *ctx, const char *prompt,
                                   const char *system, size_t system_len,
                                   const struct cbus_llm_start_info *info)
{
    if (!system && system_len)
        return -EINVAL;
    struct emit_req rq = REQ(CBUS_EV_LLM_START, NULL, prompt);
    rq.system = system;
    rq.system_len = system ? system_len : 0;
    if (info) {
        rq.payload = info;
        rq.payload_len = sizeof *info;
    }
    return emit(p, ctx, &rq);
}

/* An id, not a text: 1..CBUS_RESPONSE_ID_MAX printable ASCII bytes, so a
 * reader can put it into any attribute or header as it is. */
static size_t response_id_len(const char *id)
{
    size_t n = 0;
    while (n <= CBUS_RESPONSE_ID_MAX && id[n]) {
        unsigned char c = (unsigned char)id[n];
        if (c <= 0x20 || c >= 0x7f)
            return 0;
        n++;
    }
    return n <= CBUS_RESPONSE_ID_MAX ? n : 0;
}

CBUS_API int cbus_llm_end_response(cbus_producer *p, cbus_ctx *ctx, const struct cbus_usage *usage,
                                   const char *output, const char *messages_json,
                                   size_t messages_len, const char *response_id)
{
    if (!messages_json && messages_len)
        return -EINVAL;
    size_t idl = 0;
    if (response_id && !(idl = response_id_len(response_id)))
        return -EINVAL;
    struct cbus_usage u = {0};
    if (usage)
        u = *usage;
    struct emit_req rq = REQ(CBUS_EV_LLM_END, NULL, output);
    rq.messages = messages_json;
    rq.messages_len = messages_json ? messages_len : 0;
    rq.response_id = response_id;
    rq.response_id_len = idl;
    rq.payload = &u;
    rq.payload_len = sizeof u;
    return emit(p, ctx, &rq);
}

CBUS_API int cbus_chat_model_stream(cbus_producer *p, cbus_ctx *ctx, const char *chunk, size_t len)
{
    struct emit_req rq = {.kind = CBUS_EV_CHAT_MODEL_STREAM, .preview = chunk,
                          .preview_len = chunk ? len : 0};
    return emit(p, ctx, &rq);
}

CBUS_API int cbus_tool_event(cbus_producer *p, cbus_ctx *ctx, const char *event_name,
                             const char *data)
{
    struct emit_req rq = REQ(CBUS_EV_TOOL_EVENT, event_name, data);
    return emit(p, ctx, &rq);
}

CBUS_API int cbus_score(cbus_producer *p, cbus_ctx *ctx, const char *name, unsigned type,
                        double value, const char *category, const char *comment)
{
    if (!name || !*name)
        return -EINVAL;
    struct cbus_score_info sc = {.type = (uint8_t)type};
    switch (type) {
    case CBUS_SCORE_NUMERIC:
        if (!__builtin_isfinite(value))
            return -EINVAL;
        sc.value = value;
        break;
    case CBUS_SCORE_BOOLEAN:
        if (value != 0.0 && value != 1.0)
            return -EINVAL;
        sc.value = value;
        break;
    case CBUS_SCORE_CATEGORICAL:
        if (!category || !*category)
            return -EINVAL;
        break;
    default:
        return -EINVAL;
    }
    /* The category is the preview (shown and counted); the comment is the
     * body's text. */
    struct emit_req rq = REQ(CBUS_EV_SCORE, name, type == CBUS_SCORE_CATEGORICAL ? category : NULL);
    rq.payload = &sc;
    rq.payload_len = sizeof sc;
    if (comment && *comment) {
        rq.text = comment;
        rq.text_len = strlen(comment);
    }
    return emit(p, ctx, &rq);
}

CBUS_API int cbus_llm_end(cbus_producer *p, cbus_ctx *ctx, const struct cbus_usage *usage,
                          const char *output)
{
    struct cbus_usage u = {0};
    if (usage)
        u = *usage;
    struct emit_req rq = REQ(CBUS_EV_LLM_END, NULL, output);
    rq.payload = &u;
    rq.payload_len = sizeof u;
    return emit(p, ctx, &rq);
}

static int emit_error(cbus_producer *p, cbus_ctx *ctx, unsigned kind, const char *error_type,
                      const char *message, int http_status)
{
    struct cbus_error_info e = {.http_status = http_status};
    struct emit_req rq = REQ(kind, error_type, message);
    rq.payload = &e;
    rq.payload_len = sizeof e;
    return emit(p, ctx, &rq);
}

CBUS_API int cbus_llm_error(cbus_producer *p, cbus_ctx *ctx, const char *error_type,
                            const char *message, int http_status)
{
    return emit_error(p, ctx, CBUS_EV_LLM_ERROR, error_type, message, http_status);
}

CBUS_API int cbus_chain_start(cbus_producer *p, cbus_ctx *ctx, const char *chain_name,
                              const char *inputs)
{
    return emit_named_start(p, ctx, CBUS_EV_CHAIN_START, chain_name, inputs);
}

CBUS_API int cbus_chain_end(cbus_producer *p, cbus_ctx *ctx, const char *outputs)
{
    struct emit_req rq = REQ(CBUS_EV_CHAIN_END, NULL, outputs);
    return emit(p, ctx, &rq);
}

CBUS_API int cbus_chain_error(cbus_producer *p, cbus_ctx *ctx, const char *error_type,
                              const char *message)
{
    return emit_error(p, ctx, CBUS_EV_CHAIN_ERROR, error_type, message, 0);
}

CBUS_API int cbus_tool_start(cbus_producer *p, cbus_ctx *ctx, const char *tool_name,
                             const char *input)
{
    return emit_named_start(p, ctx, CBUS_EV_TOOL_START, tool_name, input);
}

CBUS_API int cbus_tool_end(cbus_producer *p, cbus_ctx *ctx, const char *output)
{
    struct emit_req rq = REQ(CBUS_EV_TOOL_END, NULL, output);
    return emit(p, ctx, &rq);
}

CBUS_API int cbus_tool_error(cbus_producer *p, cbus_ctx *ctx, const char *error_type,
                             const char *message)
{
    return emit_error(p, ctx, CBUS_EV_TOOL_ERROR, error_type, message, 0);
}

CBUS_API int cbus_agent_action(cbus_producer *p, cbus_ctx *ctx, const char *tool_name,
                               const char *tool_input)
{
    struct emit_req rq = REQ(CBUS_EV_AGENT_ACTION, tool_name, tool_input);
    return emit(p, ctx, &rq);
}

CBUS_API int cbus_agent_finish(cbus_producer *p, cbus_ctx *ctx, const char *output)
{
    struct emit_req rq = REQ(CBUS_EV_AGENT_FINISH, NULL, output);
    return emit(p, ctx, &rq);
}

CBUS_API int cbus_retriever_start(cbus_producer *p, cbus_ctx *ctx, const char *retriever_name,
                                  const char *query)
{
    return emit_named_start(p, ctx, CBUS_EV_RETRIEVER_START, retriever_name, query);
}

CBUS_API int cbus_retriever_end(cbus_producer *p, cbus_ctx *ctx, uint32_t document_count)
{
    struct cbus_retriever_info r = {.document_count = document_count};
    struct emit_req rq = {.kind = CBUS_EV_RETRIEVER_END, .payload = &r, .payload_len = sizeof r};
    return emit(p, ctx, &rq);
}

CBUS_API int cbus_retriever_end_documents(cbus_producer *p, cbus_ctx *ctx, uint32_t document_count,
                                          const char *documents)
{
    struct cbus_retriever_info r = {.document_count = document_count};
    struct emit_req rq = {.kind = CBUS_EV_RETRIEVER_END, .payload = &r, .payload_len = sizeof r,
                          .preview = documents, .preview_len = text_len(documents)};
    return emit(p, ctx, &rq);
}

CBUS_API int cbus_retriever_error(cbus_producer *p, cbus_ctx *ctx, const char *error_type,
                                  const char *message)
{
    return emit_error(p, ctx, CBUS_EV_RETRIEVER_ERROR, error_type, message, 0);
}

CBUS_API int cbus_text(cbus_producer *p, cbus_ctx *ctx, const char *text)
{
    struct emit_req rq = REQ(CBUS_EV_TEXT, NULL, text);
    return emit(p, ctx, &rq);
}

CBUS_API int cbus_retry(cbus_producer *p, cbus_ctx *ctx, uint32_t attempt, uint64_t backoff_ns,
                        const char *reason)
{
    struct cbus_retry_info r = {.attempt = attempt, .backoff_ns = backoff_ns};
    struct emit_req rq = REQ(CBUS_EV_RETRY, NULL, reason);
    rq.payload = &r;
    rq.payload_len = sizeof r;
    return emit(p, ctx, &rq);
}

CBUS_API int cbus_custom(cbus_producer *p, cbus_ctx *ctx, const char *event_name,
                         const char *data)
{
    struct emit_req rq = REQ(CBUS_EV_CUSTOM, event_name, data);
    return emit(p, ctx, &rq);
}

int cbus__emit_body(cbus_producer *p, cbus_ctx *ctx, unsigned kind, const char *name,
                    const char *preview, size_t preview_len, const char *messages,
                    size_t messages_len, const char *text, size_t text_len)
{
    struct emit_req rq = {.kind = kind, .name = name,
                          .name_len = name ? cbus__bounded_strlen(name, CBUS_NAME_LEN + 1) : 0,
                          .preview = preview, .preview_len = preview ? preview_len : 0,
                          .messages = messages, .messages_len = messages ? messages_len : 0,
                          .text = text, .text_len = text ? text_len : 0};
    return emit(p, ctx, &rq);
}

CBUS_API int cbus_emit(cbus_producer *p, cbus_ctx *ctx, const struct cbus_emit_args *a)
{
    if (!a)
        return -EINVAL;
    struct emit_req rq = {.kind = a->kind, .name = a->name, .preview = a->preview,
                          .payload = a->payload, .payload_len = a->payload_len,
                          .messages = a->messages, .messages_len = a->messages ? a->messages_len : 0};
    if (a->messages_len && !a->messages)
        return -EINVAL;
    if (a->name)
        rq.name_len = cbus__bounded_strlen(a->name, CBUS_NAME_LEN + 1);
    if (a->preview)
        rq.preview_len = a->preview_len == SIZE_MAX ? text_len(a->preview) : a->preview_len;
    if (a->payload_len && !a->payload)
        return -EINVAL;
    return emit(p, ctx, &rq);
}
