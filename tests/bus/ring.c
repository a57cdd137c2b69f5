/* Ring behaviour within one process: events, accounting, the gate. */
#include <cbus/admit.h>
#include <cbus/bus.h>
#include <cbus/consumer.h>
#include <cbus/producer.h>

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "support.h"

static char name[64];
static cbus_producer *p;
static cbus_ctx ctx;

static void setup(void)
{
    test_bus_name(name, sizeof name);
    test_bus_create(name, 1024);
    cr_assert_eq(cbus_producer_open(&p, name, NULL), 0);
    cbus_ctx_init(&ctx);
}

static void teardown(void)
{
    cbus_producer_close(p);
    cbus_bus_destroy(name);
}

TestSuite(bus_ring, .init = setup, .fini = teardown);

static cbus_consumer *attach(const char *cname, unsigned mode, unsigned start)
{
    cbus_consumer *c;
    struct cbus_consumer_opts o = {.name = cname, .mode = mode, .start = start};
    int r = cbus_consumer_attach(&c, name, &o);
    cr_assert_eq(r, 0, "attach %s: %s", cname, cbus_strerror(r));
    return c;
}

Test(bus_ring, every_kind_round_trips_with_its_fields)
{
    cbus_consumer *c = attach("c", CBUS_LOSSLESS, CBUS_START_NEWEST);
    cbus_ctx_set_provider(&ctx, "openai");
    cbus_ctx_set_model(&ctx, "gpt-4o");
    cbus_ctx_set_user(&ctx, "alice");
    cbus_ctx_set_session(&ctx, "s-1");
    cbus_ctx_set_request_id(&ctx, "req-9");
    struct cbus_llm_start_info info = {.prompt_count = 2, .est_input_tokens = 100};
    cr_assert_eq(cbus_chat_model_start(p, &ctx, "What is 2+2?", &info), 0);
    cr_assert_eq(cbus_llm_new_token(p, &ctx, "4", 1), 0);
    cr_assert_eq(cbus_llm_new_token(p, &ctx, ".", 1), 0);
    struct cbus_usage u = {.input_tokens = 120, .output_tokens = 7, .cache_read_tokens = 100,
                           .usage_present = CBUS_USAGE_INPUT | CBUS_USAGE_OUTPUT |
                                            CBUS_USAGE_CACHE_READ,
                           .finish_reason = CBUS_FINISH_STOP};
    cr_assert_eq(cbus_llm_end(p, &ctx, &u, "4."), 0);
    cbus_ctx tool;
    cr_assert_eq(cbus_ctx_child(&tool, &ctx), 0);
    cr_assert_eq(cbus_tool_start(p, &tool, "calculator", "2+2"), 0);
    cr_assert_eq(cbus_tool_error(p, &tool, "ValueError", "bad input"), 0);
    cr_assert_eq(cbus_retriever_end(p, &tool, 7), 0);
    cr_assert_eq(cbus_retry(p, &ctx, 2, 5000, "429"), 0);
    cr_assert_eq(cbus_custom(p, &ctx, "my_event", "{\"a\":1}"), 0);

    struct cbus_event ev[16];
    int n = cbus_consumer_poll(c, ev, 16);
    cr_assert_eq(n, 9);
    cr_assert_eq(ev[0].kind, CBUS_EV_CHAT_MODEL_START);
    cr_assert_eq(ev[0].u.llm_start.est_input_tokens, 100);
    cr_assert_str_eq(ev[0].provider, "openai");
    cr_assert_str_eq(ev[0].model, "gpt-4o");
    cr_assert_str_eq(ev[0].user, "alice");
    cr_assert_str_eq(ev[0].session, "s-1");
    cr_assert_str_eq(ev[0].request_id, "req-9");
    cr_assert_str_eq(ev[0].preview, "What is 2+2?");
    cr_assert_eq(ev[0].pid, (uint32_t)getpid());
    cr_assert_eq(ev[1].kind, CBUS_EV_LLM_NEW_TOKEN);
    cr_assert_eq(ev[1].u.token.index, 0);
    cr_assert_eq(ev[2].u.token.index, 1);
    cr_assert_eq(ev[3].kind, CBUS_EV_LLM_END);
    cr_assert_eq(ev[3].u.usage.input_tokens, 120);
    cr_assert_eq(ev[3].u.usage.cache_read_tokens, 100);
    cr_assert(ev[3].u.usage.usage_present & CBUS_USAGE_DURATION, "duration filled from start");
    cr_assert(ev[3].u.usage.usage_present & CBUS_USAGE_TTFT, "ttft filled from first token");
    cr_assert_leq(ev[3].u.usage.ttft_ns, ev[3].u.usage.duration_ns);
    cr_assert_eq(ev[3].u.usage.duration_ns, ev[3].ts_mono_ns - ev[0].ts_mono_ns);
    cr_assert_eq(ev[3].u.usage.finish_reason, CBUS_FINISH_STOP);
    cr_assert(!(ev[3].u.usage.usage_present & CBUS_USAGE_REASONING), "absent stays absent");
    /* child run: same trace, parent = the llm run */
    cr_assert_eq(memcmp(ev[4].trace_id, ev[0].trace_id, 16), 0);
    cr_assert_eq(memcmp(ev[4].parent_run_id, ev[0].run_id, 16), 0);
    cr_assert(ev[4].flags & CBUS_FLAG_HAS_PARENT);
    cr_assert_neq(memcmp(ev[4].run_id, ev[0].run_id, 16), 0);
    cr_assert_str_eq(ev[4].name, "calculator");
    cr_assert_eq(ev[5].kind, CBUS_EV_TOOL_ERROR);
    cr_assert_str_eq(ev[5].name, "ValueError");
    cr_assert_str_eq(ev[5].preview, "bad input");
    cr_assert_eq(ev[6].u.retriever.document_count, 7);
    cr_assert_eq(ev[7].u.retry.attempt, 2);
    cr_assert_str_eq(ev[8].name, "my_event");
    for (int i = 0; i < n; i++) {
        cr_assert_eq(ev[i].event_id, (uint64_t)i, "event ids are ring positions");
        if (i)
            cr_assert_geq(ev[i].ts_mono_ns, ev[i - 1].ts_mono_ns, "per-thread time is monotonic");
    }
    cbus_consumer_detach(c);
}

Test(bus_ring, timestamps_match_the_system_clocks)
{
    cbus_consumer *c = attach("c", CBUS_LOSSY, CBUS_START_NEWEST);
    struct timespec m0, r0, m1, r1;
    clock_gettime(CLOCK_MONOTONIC, &m0);
    clock_gettime(CLOCK_REALTIME, &r0);
    cbus_text(p, &ctx, "t");
    clock_gettime(CLOCK_MONOTONIC, &m1);
    clock_gettime(CLOCK_REALTIME, &r1);
    struct cbus_event ev;
    cr_assert_eq(cbus_consumer_poll(c, &ev, 1), 1);
    uint64_t lo = (uint64_t)m0.tv_sec * 1000000000u + (uint64_t)m0.tv_nsec;
    uint64_t hi = (uint64_t)m1.tv_sec * 1000000000u + (uint64_t)m1.tv_nsec;
    /* TSC-derived: within 1 ms of the bracket (calibration error is ppm). */
    cr_assert_geq(ev.ts_mono_ns + 1000000u, lo);
    cr_assert_leq(ev.ts_mono_ns, hi + 1000000u);
    uint64_t rlo = (uint64_t)r0.tv_sec * 1000000000u + (uint64_t)r0.tv_nsec;
    uint64_t rhi = (uint64_t)r1.tv_sec * 1000000000u + (uint64_t)r1.tv_nsec;
    cr_assert_geq(ev.ts_realtime_ns + 1000000u, rlo);
    cr_assert_leq(ev.ts_realtime_ns, rhi + 1000000u);
    cbus_consumer_detach(c);
}

Test(bus_ring, long_strings_are_cut_and_flagged)
{
    cbus_consumer *c = attach("c", CBUS_LOSSY, CBUS_START_NEWEST);
    char big[400];
    memset(big, 'm', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    cr_assert_eq(cbus_ctx_set_model(&ctx, big), 0);
    cr_assert_eq(cbus_text(p, &ctx, big), 0);
    /* a multibyte character straddling the cut is not split */
    char utf[CBUS_PREVIEW_LEN + 8];
    memset(utf, 'a', sizeof utf);
    memcpy(utf + CBUS_PREVIEW_LEN - 2, "\xc3\xa9\xc3\xa9", 4);
    utf[sizeof utf - 1] = '\0';
    cr_assert_eq(cbus_text(p, &ctx, utf), 0);
    struct cbus_event ev[2];
    cr_assert_eq(cbus_consumer_poll(c, ev, 2), 2);
    cr_assert_eq(strnlen(ev[0].model, sizeof ev[0].model), CBUS_MODEL_LEN - 1);
    cr_assert(ev[0].flags & CBUS_TRUNC_MODEL);
    cr_assert(ev[0].flags & CBUS_TRUNC_PREVIEW);
    cr_assert_eq(strnlen(ev[0].preview, sizeof ev[0].preview), CBUS_PREVIEW_LEN - 1);
    size_t l = strnlen(ev[1].preview, sizeof ev[1].preview);
    cr_assert_eq(l, CBUS_PREVIEW_LEN - 2, "cut before the straddling character");
    cbus_consumer_detach(c);
}

Test(bus_ring, bad_arguments_are_einval_not_crashes)
{
    cbus_ctx raw;
    memset(&raw, 0, sizeof raw); /* never initialised */
    cr_assert_eq(cbus_text(p, &raw, "x"), -EINVAL);
    cr_assert_eq(cbus_text(NULL, &ctx, "x"), -EINVAL);
    cr_assert_eq(cbus_text(p, NULL, "x"), -EINVAL);
    cr_assert_eq(cbus_llm_end(NULL, NULL, NULL, NULL), -EINVAL);
    struct cbus_emit_args a = {.kind = 999};
    cr_assert_eq(cbus_emit(p, &ctx, &a), -EINVAL);
    a.kind = CBUS_EV_CUSTOM;
    a.payload_len = 65;
    a.payload = &a;
    cr_assert_eq(cbus_emit(p, &ctx, &a), -EINVAL);
    cr_assert_eq(cbus_emit(p, &ctx, NULL), -EINVAL);
    cr_assert_eq(cbus_ctx_set_model(NULL, "x"), -EINVAL);
    cr_assert_eq(cbus_ctx_child(&ctx, &ctx), -EINVAL);
    cbus_consumer *c;
    cr_assert_eq(cbus_consumer_attach(&c, name, NULL), -EINVAL);
    struct cbus_consumer_opts o = {.name = "bad/name"};
    cr_assert_eq(cbus_consumer_attach(&c, name, &o), -EINVAL);
    o.name = "ok";
    o.mode = 7;
    cr_assert_eq(cbus_consumer_attach(&c, name, &o), -EINVAL);
    cr_assert_eq(cbus_consumer_poll(NULL, NULL, 1), -EINVAL);
    cr_assert_eq(cbus_producer_open(NULL, name, NULL), -EINVAL);
}

Test(bus_ring, lapped_consumer_counts_lost_exactly)
{
    cbus_consumer *c = attach("lossy", CBUS_LOSSY, CBUS_START_NEWEST);
    const int total = 5000; /* ~5 laps of a 1024-slot ring */
    for (int i = 0; i < total; i++)
        cr_assert_eq(cbus_text(p, &ctx, "x"), 0, "lossy consumers never slow producers");
    struct cbus_event ev[64];
    uint64_t got = 0, last = 0;
    int n, first = 1;
    while ((n = cbus_consumer_poll(c, ev, 64)) > 0) {
        for (int i = 0; i < n; i++) {
            if (!first)
                cr_assert_gt(ev[i].event_id, last, "in order");
            last = ev[i].event_id;
            first = 0;
        }
        got += (uint64_t)n;
    }
    struct cbus_consumer_stats st;
    cbus_consumer_stats(c, &st);
    cr_assert_eq(st.consumed, got);
    cr_assert_eq(st.consumed + st.lost + st.abandoned, (uint64_t)total);
    cr_assert_eq(st.lost, (uint64_t)total - 1024, "only the last ring's worth survives");
    cbus_consumer_detach(c);
}

Test(bus_ring, lossless_consumer_gates_then_producer_drops_and_counts)
{
    cbus_consumer *c = attach("lossless", CBUS_LOSSLESS, CBUS_START_NEWEST);
    int ok = 0, dropped = 0;
    for (int i = 0; i < 1500; i++) {
        int r = cbus_text(p, &ctx, "x");
        if (r == 0)
            ok++;
        else if (r == -EAGAIN)
            dropped++;
        else
            cr_assert_fail("unexpected %d", r);
    }
    cr_assert_eq(ok, 1024, "exactly one ring's worth is accepted");
    cr_assert_eq(dropped, 1500 - 1024);
    struct cbus_producer_stats ps;
    cbus_producer_stats(p, &ps);
    cr_assert_eq(ps.dropped, (uint64_t)dropped);
    cr_assert_eq(ps.emitted, (uint64_t)ok);
    cbus_bus *bus = cbus_producer_bus(p);
    cr_assert_eq(cbus_bus_header(bus)->dropped, (uint64_t)dropped);
    /* the consumer sees every accepted event, then producers flow again */
    struct cbus_event ev[128];
    uint64_t got = 0;
    int n;
    while ((n = cbus_consumer_poll(c, ev, 128)) > 0)
        got += (uint64_t)n;
    cr_assert_eq(got, 1024);
    cr_assert_eq(cbus_consumer_commit(c), 0);
    cr_assert_eq(cbus_text(p, &ctx, "after"), 0);
    cbus_consumer_detach(c);
}

Test(bus_ring, commit_cannot_run_ahead_or_back)
{
    cbus_consumer *c = attach("c", CBUS_LOSSLESS, CBUS_START_NEWEST);
    cbus_text(p, &ctx, "a");
    cbus_text(p, &ctx, "b");
    struct cbus_event ev[2];
    cr_assert_eq(cbus_consumer_poll(c, ev, 1), 1);
    cr_assert_eq(cbus_consumer_commit_to(c, 2), -EINVAL, "beyond what was read");
    cr_assert_eq(cbus_consumer_commit_to(c, 1), 0);
    cr_assert_eq(cbus_consumer_commit_to(c, 0), -EINVAL, "backwards");
    cbus_consumer_detach(c);
}

Test(bus_ring, detach_releases_the_gate)
{
    cbus_consumer *c = attach("c", CBUS_LOSSLESS, CBUS_START_NEWEST);
    const struct cbus_shm_header *h = cbus_bus_header(cbus_producer_bus(p));
    cr_assert_eq(CBUS_GATE_COUNT(h->gate), 1);
    cbus_consumer_detach(c);
    cr_assert_eq(CBUS_GATE_COUNT(h->gate), 0);
    for (int i = 0; i < 3000; i++)
        cr_assert_eq(cbus_text(p, &ctx, "x"), 0);
}

Test(bus_ring, stalled_lossless_consumer_is_untethered)
{
    /* A bus with a short stall timeout; a consumer that never polls. */
    char n2[64];
    test_bus_name(n2, sizeof n2);
    struct cbus_create_opts o = {.capacity = 1024, .stall_timeout_ns = 50000000u};
    cr_assert_eq(cbus_bus_create(n2, &o), 0);
    cbus_producer *p2;
    cr_assert_eq(cbus_producer_open(&p2, n2, NULL), 0);
    cbus_consumer *c;
    struct cbus_consumer_opts co = {.name = "sleepy", .mode = CBUS_LOSSLESS};
    cr_assert_eq(cbus_consumer_attach(&c, n2, &co), 0);
    uint64_t t0 = test_now_ms();
    int dropped = 0;
    while (test_now_ms() - t0 < 2000) {
        if (cbus_text(p2, &ctx, "x") == -EAGAIN)
            dropped++;
        struct cbus_consumer_stats st;
        cbus_consumer_stats(c, &st);
        if (!st.tethered)
            break;
    }
    struct cbus_consumer_stats st;
    cbus_consumer_stats(c, &st);
    cr_assert_eq(st.tethered, 0, "cut loose after its heartbeat went stale");
    cr_assert_eq(st.untethered_count, 1);
    cr_assert_gt(dropped, 0);
    for (int i = 0; i < 5000; i++)
        cr_assert_eq(cbus_text(p2, &ctx, "x"), 0, "producers flow freely once untethered");
    /* it now reads as a lossy consumer and counts what it lost */
    struct cbus_event ev[256];
    while (cbus_consumer_poll(c, ev, 256) > 0) {
    }
    cbus_consumer_stats(c, &st);
    cr_assert_eq(st.consumed + st.lost, cbus_bus_tail(cbus_producer_bus(p2)));
    cr_assert_gt(st.lost, 0);
    /* caught up: it tethers again */
    cr_assert_eq(cbus_consumer_commit(c), 0);
    cr_assert_eq(cbus_consumer_poll(c, ev, 1), 0);
    cbus_consumer_stats(c, &st);
    cr_assert_eq(st.tethered, 1);
    cbus_consumer_detach(c);
    cbus_producer_close(p2);
    cbus_bus_destroy(n2);
}

Test(bus_ring, sixty_four_consumers_then_enospc)
{
    cbus_consumer *cs[CBUS_MAX_CONSUMERS];
    for (int i = 0; i < CBUS_MAX_CONSUMERS; i++) {
        char cn[16];
        snprintf(cn, sizeof cn, "c%d", i);
        cs[i] = attach(cn, i % 2 ? CBUS_LOSSLESS : CBUS_LOSSY, CBUS_START_NEWEST);
    }
    cbus_consumer *extra;
    struct cbus_consumer_opts o = {.name = "extra"};
    cr_assert_eq(cbus_consumer_attach(&extra, name, &o), -ENOSPC);
    o.name = "c3";
    cr_assert_eq(cbus_consumer_attach(&extra, name, &o), -EBUSY, "names are unique among live consumers");
    for (int i = 0; i < 100; i++)
        cr_assert_eq(cbus_text(p, &ctx, "x"), 0);
    for (int i = 0; i < CBUS_MAX_CONSUMERS; i++) {
        struct cbus_event ev[128];
        cr_assert_eq(cbus_consumer_poll(cs[i], ev, 128), 100);
        cbus_consumer_detach(cs[i]);
    }
}

Test(bus_ring, start_positions)
{
    for (int i = 0; i < 10; i++)
        cbus_text(p, &ctx, "x");
    cbus_consumer *oldest = attach("o", CBUS_LOSSY, CBUS_START_OLDEST);
    cbus_consumer *newest = attach("n", CBUS_LOSSY, CBUS_START_NEWEST);
    cbus_consumer *cur;
    struct cbus_consumer_opts o = {.name = "k", .start = CBUS_START_CURSOR, .cursor = 7};
    cr_assert_eq(cbus_consumer_attach(&cur, name, &o), 0);
    struct cbus_event ev[16];
    cr_assert_eq(cbus_consumer_poll(oldest, ev, 16), 10);
    cr_assert_eq(cbus_consumer_poll(newest, ev, 16), 0);
    cr_assert_eq(cbus_consumer_poll(cur, ev, 16), 3);
    cr_assert_eq(ev[0].event_id, 7);
    struct cbus_consumer_opts bad = {.name = "z", .start = CBUS_START_CURSOR, .cursor = 1,
                                     .expect_bus_id = cbus_consumer_bus_id(cur) ^ 1};
    cbus_consumer *z;
    cr_assert_eq(cbus_consumer_attach(&z, name, &bad), -ESTALE, "a cursor from another bus");
    cbus_consumer_detach(oldest);
    cbus_consumer_detach(newest);
    cbus_consumer_detach(cur);
}

Test(bus_ring, wait_sleeps_and_wakes_on_emit)
{
    cbus_consumer *c = attach("c", CBUS_LOSSY, CBUS_START_NEWEST);
    cr_assert_eq(cbus_consumer_wait(c, 20000000u), 0, "times out on an empty ring");
    cbus_text(p, &ctx, "x");
    cr_assert_eq(cbus_consumer_wait(c, 1000000000u), 1);
    cbus_consumer_detach(c);
}

Test(bus_ring, evicted_consumer_gets_estale)
{
    cbus_consumer *c = attach("c", CBUS_LOSSLESS, CBUS_START_NEWEST);
    cbus_bus *bus;
    cr_assert_eq(cbus_bus_open(&bus, name, 0), 0);
    int idx = cbus_consumer_index(c);
    cr_assert_eq(cbus_bus_evict(bus, (unsigned)idx, 0), -EBUSY, "alive: not without force");
    cr_assert_eq(cbus_bus_evict(bus, (unsigned)idx, 1), 0);
    struct cbus_event ev;
    cr_assert_eq(cbus_consumer_poll(c, &ev, 1), -ESTALE);
    cr_assert_eq(CBUS_GATE_COUNT(cbus_bus_header(bus)->gate), 0);
    cbus_consumer_detach(c);
    cbus_bus_close(bus);
}

static cbus_consumer *attach_kept(const char *cname, unsigned mode, unsigned start)
{
    cbus_consumer *c;
    struct cbus_consumer_opts o = {.name = cname, .mode = mode, .start = start,
                                   .flags = CBUS_CONSUMER_KEEP};
    int r = cbus_consumer_attach(&c, name, &o);
    cr_assert_eq(r, 0, "attach %s: %s", cname, cbus_strerror(r));
    return c;
}

Test(bus_ring, kept_consumer_parks_at_detach_and_resumes)
{
    cbus_consumer *c = attach_kept("durable", CBUS_LOSSLESS, CBUS_START_NEWEST);
    for (int i = 0; i < 10; i++)
        cbus_text(p, &ctx, "x");
    struct cbus_event ev[16];
    cr_assert_eq(cbus_consumer_poll(c, ev, 4), 4);
    cr_assert_eq(cbus_consumer_commit(c), 0);
    cbus_consumer_detach(c);
    const struct cbus_shm_header *h = cbus_bus_header(cbus_producer_bus(p));
    cr_assert_eq(CBUS_GATE_COUNT(h->gate), 0, "a parked consumer does not gate producers");
    cbus_bus *bus = cbus_producer_bus(p);
    int parked = 0;
    for (unsigned i = 0; i < CBUS_MAX_CONSUMERS; i++)
        parked += cbus_bus_consumer_entry(bus, i)->state == CBUS_CSTATE_PARKED;
    cr_assert_eq(parked, 1);
    cbus_consumer *again = attach_kept("durable", CBUS_LOSSLESS, CBUS_START_RESUME);
    cr_assert_eq(cbus_consumer_poll(again, ev, 16), 6, "resumes after the 4 it committed");
    cr_assert_eq(ev[0].event_id, 4);
    cbus_consumer_detach(again);
    /* without RESUME the parked name is reused but starts where asked; without
     * KEEP a detach leaves nothing behind */
    cbus_consumer *fresh = attach("durable", CBUS_LOSSY, CBUS_START_NEWEST);
    cr_assert_eq(cbus_consumer_poll(fresh, ev, 16), 0);
    cbus_consumer_detach(fresh);
    for (unsigned i = 0; i < CBUS_MAX_CONSUMERS; i++)
        cr_assert_eq(cbus_bus_consumer_entry(bus, i)->state, CBUS_CSTATE_FREE);
}

Test(bus_ring, parked_entries_are_reused_when_the_table_is_full)
{
    for (int i = 0; i < CBUS_MAX_CONSUMERS; i++) {
        char cn[16];
        snprintf(cn, sizeof cn, "p%d", i);
        cbus_consumer_detach(attach_kept(cn, CBUS_LOSSY, CBUS_START_NEWEST));
    }
    cbus_consumer *c = attach("newcomer", CBUS_LOSSY, CBUS_START_NEWEST);
    cbus_consumer_detach(c);
}

Test(bus_ring, generic_emit_keeps_an_explicit_token_index)
{
    cbus_consumer *c = attach("c", CBUS_LOSSY, CBUS_START_NEWEST);
    struct cbus_token_info t = {.index = 41};
    struct cbus_emit_args a = {.kind = CBUS_EV_LLM_NEW_TOKEN, .preview = "x", .preview_len = 1,
                               .payload = &t, .payload_len = sizeof t};
    cr_assert_eq(cbus_emit(p, &ctx, &a), 0);
    cr_assert_eq(cbus_llm_new_token(p, &ctx, "y", 1), 0);
    struct cbus_event ev[2];
    cr_assert_eq(cbus_consumer_poll(c, ev, 2), 2);
    cr_assert_eq(ev[0].u.token.index, 41);
    cr_assert_eq(ev[1].u.token.index, 42, "typed calls continue after it");
    cr_assert_eq(cbus_kind_from_name(cbus_kind_name(CBUS_EV_NONE)), CBUS_EV_NONE);
    cr_assert_eq(cbus_kind_from_name("llm_end"), CBUS_EV_LLM_END);
    cr_assert_eq(cbus_kind_from_name("nope"), -EINVAL);
    cbus_consumer_detach(c);
}

/* Issue 12 item 23.  A lossless consumer that tethers with its cursor behind
 * the bound the producers cached (min of the tethered cursors they saw, plus
 * the capacity) must bump the gate epoch, or producers keep claiming up to
 * the stale bound and overwrite what the newcomer has not read.  Setup: one
 * ring's worth is in the ring, consumer "ahead" is tethered at the head and
 * the producer has cached its bound; then "behind" tethers at position 1. */
enum behind_start { BEHIND_OLDEST, BEHIND_RESUME, BEHIND_CURSOR };

static void behind_consumer_tethers(enum behind_start how)
{
    char n2[64];
    test_bus_name(n2, sizeof n2);
    /* A stall timeout of minutes: nobody is cut loose while the test runs,
     * however slow the machine. */
    struct cbus_create_opts o = {.capacity = 1024, .stall_timeout_ns = 600000000000ull};
    cr_assert_eq(cbus_bus_create(n2, &o), 0);
    cbus_producer *p2;
    cr_assert_eq(cbus_producer_open(&p2, n2, NULL), 0);
    cr_assert_eq(cbus_text(p2, &ctx, "x"), 0);
    if (how == BEHIND_RESUME) {
        /* park "behind" with its cursor at 1 */
        cbus_consumer *k;
        struct cbus_consumer_opts ko = {.name = "behind", .mode = CBUS_LOSSLESS,
                                        .flags = CBUS_CONSUMER_KEEP};
        cr_assert_eq(cbus_consumer_attach(&k, n2, &ko), 0);
        cbus_consumer_detach(k);
    }
    for (int i = 1; i < 1024; i++)
        cr_assert_eq(cbus_text(p2, &ctx, "x"), 0);
    cbus_consumer *ahead;
    struct cbus_consumer_opts ao = {.name = "ahead", .mode = CBUS_LOSSLESS};
    cr_assert_eq(cbus_consumer_attach(&ahead, n2, &ao), 0);
    /* this emit caches ahead's bound (1024 + 1024) in the producer thread */
    cr_assert_eq(cbus_text(p2, &ctx, "x"), 0);
    cr_assert_eq(cbus_bus_tail(cbus_producer_bus(p2)), 1025);

    cbus_consumer *behind;
    struct cbus_consumer_opts bo = {.name = "behind", .mode = CBUS_LOSSLESS};
    bo.start = how == BEHIND_OLDEST ? CBUS_START_OLDEST
             : how == BEHIND_RESUME ? CBUS_START_RESUME : CBUS_START_CURSOR;
    bo.cursor = 1;
    if (how == BEHIND_RESUME)
        bo.flags = CBUS_CONSUMER_KEEP;
    cr_assert_eq(cbus_consumer_attach(&behind, n2, &bo), 0);
    cr_assert_eq(cbus_consumer_read_pos(behind), 1);

    /* The ring is full for "behind": every further emit must be dropped. */
    int dropped = 0;
    for (int i = 0; i < 1023; i++) {
        int r = cbus_text(p2, &ctx, "x");
        cr_assert(r == 0 || r == -EAGAIN, "emit: %d", r);
        dropped += r == -EAGAIN;
    }
    struct cbus_event ev[128];
    int n;
    while ((n = cbus_consumer_poll(behind, ev, 128)) > 0) {
    }
    cr_assert_geq(n, 0);
    struct cbus_consumer_stats st;
    cbus_consumer_stats(behind, &st);
    cr_assert_eq(st.lost, 0, "the new consumer lost %llu of %llu",
                 (unsigned long long)st.lost, (unsigned long long)(st.lost + st.consumed));
    cr_assert_eq(st.consumed, 1024, "positions 1..1024 all delivered");
    cr_assert_eq(dropped, 1023, "producers were held at the newcomer's cursor");
    cbus_consumer_detach(behind);
    cbus_consumer_detach(ahead);
    cbus_producer_close(p2);
    cbus_bus_destroy(n2);
}

Test(bus_ring, tether_behind_cached_bound_oldest_loses_nothing)
{
    behind_consumer_tethers(BEHIND_OLDEST);
}

Test(bus_ring, tether_behind_cached_bound_resume_loses_nothing)
{
    behind_consumer_tethers(BEHIND_RESUME);
}

Test(bus_ring, tether_behind_cached_bound_saved_cursor_loses_nothing)
{
    behind_consumer_tethers(BEHIND_CURSOR);
}
