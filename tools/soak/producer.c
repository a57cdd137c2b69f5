/* Producers: threads of the orchestrator and separate processes.
 *
 * Each producer instance numbers only the events the bus accepted: the
 * sequence number goes into the event's request_id before the emit, and is
 * advanced (and published in the shared state) only when the emit returned 0.
 * A dropped emit (-EAGAIN: a lossless consumer held the ring past the bound)
 * is retried with the same number by the next event, so the committed events
 * of one instance are exactly 0..committed-1, in ring order.
 *
 * Threads emit LLM request runs (llm_start, tokens, llm_end with usage) whose
 * usage they sum for the cost check.  Processes are the ones the scheduler
 * SIGKILLs, possibly between a commit and the publication of its count, so
 * they emit no llm_end: the cost check's expected sum stays exact. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cbus/producer.h>

#include "held.h"
#include "soak.h"

struct emitter {
    cbus_producer *p;
    struct soak_prod *sp;
    uint32_t index;
    uint64_t seq;
    uint64_t events;
    struct held_meter held;
};

static uint64_t rng_next(uint64_t *s)
{
    /* xorshift64*: enough for choosing kinds and counts */
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * UINT64_C(2685821657736338717);
}

static void publish_stats(struct emitter *em)
{
    struct cbus_producer_stats ps;
    if (cbus_producer_stats(em->p, &ps) == 0)
        atomic_store_explicit(&em->sp->max_wait_ns, ps.max_wait_ns, memory_order_relaxed);
}

/* Invariant 6's measure: an emit slower than the bound is published with the
 * time it held the thread (held.c), run-queue waits excluded. */
static void note_held(struct emitter *em, uint64_t start, uint64_t end)
{
    const uint64_t slow = em->held.slow;
    held_after_emit(&em->held, start, end);
    if (em->held.slow == slow)
        return; /* the fast case */
    struct soak_prod *sp = em->sp;
    for (unsigned i = atomic_load_explicit(&sp->n_long, memory_order_relaxed); i < em->held.n_long; i++) {
        const struct held_long *l = &em->held.longs[i];
        atomic_store_explicit(&sp->longs[i].start_ns, l->start_ns, memory_order_relaxed);
        atomic_store_explicit(&sp->longs[i].end_ns, l->end_ns, memory_order_relaxed);
        atomic_store_explicit(&sp->longs[i].held_ns, l->held_ns, memory_order_relaxed);
        atomic_store_explicit(&sp->longs[i].host_ns, l->host_ns, memory_order_relaxed);
        atomic_store_explicit(&sp->n_long, i + 1, memory_order_release);
    }
    atomic_store_explicit(&sp->slow_emits, em->held.slow, memory_order_relaxed);
    atomic_store_explicit(&sp->max_emit_wall_ns, em->held.max_wall_ns, memory_order_relaxed);
    atomic_store_explicit(&sp->max_held_ns, em->held.max_held_ns, memory_order_release);
    atomic_store_explicit(&sp->held_overrun_ns, em->held.overrun_ns, memory_order_relaxed);
    atomic_store_explicit(&sp->held_unmeasured, em->held.unmeasured, memory_order_relaxed);
}

/* Emits one event of kind with the next sequence proof.  Returns the emit's code. */
static int emit_one(struct emitter *em, cbus_ctx *ctx, unsigned kind, const struct cbus_usage *usage)
{
    char rid[CBUS_REQUEST_LEN + 8];
    soak_proof_format(rid, sizeof rid, em->index, em->seq, kind, usage);
    cbus_ctx_set_request_id(ctx, rid);
    int r;
    const uint64_t start = soak_now_ns();
    switch (kind) {
    case CBUS_EV_LLM_START: {
        struct cbus_llm_start_info info = {.prompt_count = 1, .est_input_tokens = 100};
        r = cbus_llm_start(em->p, ctx, "soak prompt", &info);
        break;
    }
    case CBUS_EV_LLM_NEW_TOKEN:
        r = cbus_llm_new_token(em->p, ctx, "tok", 3);
        break;
    case CBUS_EV_LLM_END:
        r = cbus_llm_end(em->p, ctx, usage, "soak output");
        break;
    case CBUS_EV_TOOL_START:
        r = cbus_tool_start(em->p, ctx, "search", "{\"q\":\"soak\"}");
        break;
    case CBUS_EV_TOOL_END:
        r = cbus_tool_end(em->p, ctx, "result");
        break;
    case CBUS_EV_RETRIEVER_START:
        r = cbus_retriever_start(em->p, ctx, "docs", "soak query");
        break;
    case CBUS_EV_RETRIEVER_END:
        r = cbus_retriever_end(em->p, ctx, 3);
        break;
    default:
        r = cbus_custom(em->p, ctx, "soak", "custom event");
        break;
    }
    note_held(em, start, soak_now_ns());
    if (r == 0) {
        if (kind == CBUS_EV_LLM_END) {
            const uint32_t v[SOAK_TOK__COUNT] = {usage->input_tokens, usage->output_tokens,
                                                 usage->cache_read_tokens,
                                                 usage->cache_creation_tokens,
                                                 usage->reasoning_tokens};
            for (int f = 0; f < SOAK_TOK__COUNT; f++)
                atomic_fetch_add_explicit(&em->sp->tok[f], v[f], memory_order_relaxed);
            atomic_fetch_add_explicit(&em->sp->llm_ends, 1, memory_order_relaxed);
        }
        em->seq++;
        /* RELEASE: the sums above are visible to whoever reads this count. */
        atomic_store_explicit(&em->sp->committed, em->seq, memory_order_release);
    } else if (r == -EAGAIN) {
        atomic_fetch_add_explicit(&em->sp->dropped, 1, memory_order_relaxed);
    }
    if ((++em->events & 255) == 0)
        publish_stats(em);
    return r;
}

/* Parks between events while the orchestrator re-creates the bus.  Returns 1
 * if it did (the thread slept). */
static int maybe_park(const struct soak_producer_args *a)
{
    _Atomic uint32_t *pause = a->process ? &a->st->pause_procs : &a->st->pause_threads;
    if (!atomic_load_explicit(pause, memory_order_acquire))
        return 0;
    _Atomic uint32_t *parked = a->process ? &a->st->parked_procs : &a->st->parked_threads;
    atomic_fetch_add(parked, 1);
    while (atomic_load_explicit(pause, memory_order_acquire) &&
           !atomic_load_explicit(&a->st->stop, memory_order_acquire))
        soak_sleep_ns(1000000);
    atomic_fetch_sub(parked, 1);
    return 1;
}

/* One producer instance on one bus incarnation.  Returns 0 when the bus was
 * re-created (the caller starts a new instance), 1 on stop, -errno. */
static int produce_epoch(const struct soak_producer_args *a, uint32_t index)
{
    struct soak_prod *sp = &a->st->prod[index];
    char name[24];
    snprintf(name, sizeof name, "soak-%c%" PRIu32, a->process ? 'p' : 't', index);
    struct cbus_producer_opts po = {.name = name};
    struct emitter em = {.sp = sp, .index = index};
    uint32_t epoch;
    int r;
    for (int tries = 0;; tries++) {
        epoch = atomic_load(&a->st->epoch);
        r = cbus_producer_open(&em.p, a->bus, &po);
        if (!r && atomic_load(&a->st->epoch) == epoch)
            break;
        if (!r)
            cbus_producer_close(em.p); /* raced a re-creation: open the new one */
        else if (tries > 1000)
            return r;
        else
            soak_sleep_ns(10000000);
        if (atomic_load(&a->st->stop))
            return 1;
    }
    atomic_store(&sp->epoch, epoch);
    /* No schedstat (a kernel without CONFIG_SCHED_INFO): the orchestrator
     * checked it before starting anyone, so this is not expected; the
     * meter then counts every slow emit as unmeasured. */
    (void)held_open(&em.held, a->st->wait_bound_ns, a->st->held_slack_ns);
    em.held.long_ns = a->st->held_long_ns;
    uint64_t rng = soak_now_ns() ^ ((uint64_t)index << 32) ^ (uint64_t)getpid();
    const uint64_t interval = a->rate > 0 ? (uint64_t)(1e9 / a->rate) : 0;
    uint64_t next = soak_now_ns();
    int rc = 1;
    while (!atomic_load_explicit(&a->st->stop, memory_order_acquire)) {
        if (maybe_park(a))
            held_rebase(&em.held);
        if (atomic_load_explicit(&a->st->epoch, memory_order_acquire) != epoch) {
            rc = 0;
            break;
        }
        cbus_ctx ctx;
        cbus_ctx_init(&ctx);
        uint64_t x = rng_next(&rng);
        char user[16], session[24];
        snprintf(user, sizeof user, "u%u", (unsigned)(x % 20));
        snprintf(session, sizeof session, "s%u-%u", index, (unsigned)((x >> 8) % 50));
        cbus_ctx_set_provider(&ctx, "openai");
        cbus_ctx_set_model(&ctx, "soak-model");
        cbus_ctx_set_user(&ctx, user);
        cbus_ctx_set_session(&ctx, session);
        unsigned kinds[8], n = 0;
        struct cbus_usage usage;
        soak_usage_make(&usage, rng_next(&rng));
        if (!a->process) {
            kinds[n++] = CBUS_EV_LLM_START;
            for (unsigned t = 0; t < 1 + (x >> 16) % 3; t++)
                kinds[n++] = CBUS_EV_LLM_NEW_TOKEN;
            kinds[n++] = CBUS_EV_LLM_END;
        } else if ((x >> 16) % 3 == 0) {
            kinds[n++] = CBUS_EV_RETRIEVER_START;
            kinds[n++] = CBUS_EV_RETRIEVER_END;
            kinds[n++] = CBUS_EV_CUSTOM;
        } else {
            kinds[n++] = CBUS_EV_TOOL_START;
            kinds[n++] = CBUS_EV_TOOL_END;
        }
        for (unsigned i = 0; i < n; i++) {
            int er = emit_one(&em, &ctx, kinds[i], &usage);
            if (er && er != -EAGAIN) {
                soak_sleep_ns(1000000); /* a dead (truncated) bus: wait for the new one */
                held_rebase(&em.held);
            }
            if (!interval)
                continue;
            /* Paced in bursts: sleep only once ahead by a few ms, so events
             * leave back to back (contending on the claim) between sleeps. */
            next += interval;
            uint64_t now = soak_now_ns();
            if (next > now + 4000000) {
                soak_sleep_ns(next - now);
                held_rebase(&em.held);
            } else if (now > next + 1000000000u)
                next = now; /* descheduled for long: do not burst to catch up */
        }
    }
    publish_stats(&em);
    held_close(&em.held);
    cbus_producer_close(em.p);
    atomic_store_explicit(&sp->exited, 1, memory_order_release);
    return rc;
}

int soak_produce(const struct soak_producer_args *a)
{
    uint32_t index = a->index;
    for (;;) {
        int r = produce_epoch(a, index);
        if (r)
            return r < 0 ? r : 0;
        /* The bus was re-created: a new instance numbers the new bus's events. */
        index = atomic_fetch_add(&a->st->next_instance, 1);
        if (index >= SOAK_MAX_PROD)
            return 0; /* out of instance slots: stop emitting */
        atomic_store(&a->st->prod[index].is_process, (uint32_t)a->process);
        atomic_store(&a->st->prod[index].used, 1);
    }
}

int soak_producer_main(int argc, char **argv)
{
    const char *state = NULL, *bus = NULL;
    long index = -1;
    double rate = 0;
    static const struct option lo[] = {{"state", 1, 0, 's'}, {"bus", 1, 0, 'b'},
                                       {"index", 1, 0, 'i'}, {"rate", 1, 0, 'r'},
                                       {0, 0, 0, 0}};
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 's': state = optarg; break;
        case 'b': bus = optarg; break;
        case 'i': index = strtol(optarg, NULL, 10); break;
        case 'r': rate = strtod(optarg, NULL); break;
        default: return 2;
        }
    }
    if (!state || !bus || index < 0 || index >= SOAK_MAX_PROD) {
        fprintf(stderr, "cbus-soak producer: --state, --bus and --index are required\n");
        return 2;
    }
    struct soak_shared *st;
    int r = soak_state_open(state, &st);
    if (r) {
        fprintf(stderr, "cbus-soak producer: %s: %s\n", state, strerror(-r));
        return 1;
    }
    struct soak_producer_args a = {.bus = bus, .st = st, .index = (uint32_t)index, .rate = rate,
                                   .process = 1};
    r = soak_produce(&a);
    if (r)
        fprintf(stderr, "cbus-soak producer %ld: %s\n", index, cbus_strerror(r));
    soak_state_close(st);
    return r ? 1 : 0;
}
