/* The ABI contract a caller that cannot read our headers relies on (issue 13
 * item 3): version at run time, context size and allocator. */
#include <cbus/bus.h>
#include <cbus/consumer.h>
#include <cbus/producer.h>

#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "support.h"

static char name[64];

static void setup(void)
{
    test_bus_name(name, sizeof name);
}

static void teardown(void)
{
    cbus_bus_destroy(name);
}

TestSuite(bus_abi, .init = setup, .fini = teardown);

Test(bus_abi, version_matches_headers_and_build)
{
    cr_assert_str_eq(cbus_version(), CBUS_VERSION_STRING);
    cr_assert_eq(cbus_version_number(), CBUS_VERSION_NUMBER);
    char want[32];
    snprintf(want, sizeof want, "%d.%d.%d", CBUS_VERSION_MAJOR, CBUS_VERSION_MINOR,
             CBUS_VERSION_PATCH);
    cr_assert_str_eq(want, CBUS_VERSION_STRING);
    /* CMakeLists.txt's project(VERSION), what libcbus.so's soname and cbus.pc say. */
    cr_assert_str_eq(CBUS_PROJECT_VERSION, CBUS_VERSION_STRING);
}

Test(bus_abi, ctx_size_is_the_struct)
{
    cr_assert_eq(cbus_ctx_size(), sizeof(struct cbus_ctx));
}

Test(bus_abi, ctx_new_emits_like_a_stack_ctx)
{
    test_bus_create(name, 1024);
    cbus_consumer *c;
    struct cbus_consumer_opts co = {.name = "abi", .mode = CBUS_LOSSY};
    cr_assert_eq(cbus_consumer_attach(&c, name, &co), 0);
    cbus_producer *p;
    cr_assert_eq(cbus_producer_open(&p, name, NULL), 0);

    cbus_ctx *ctx = cbus_ctx_new();
    cr_assert_not_null(ctx);
    cr_assert_eq(cbus_ctx_set_model(ctx, "gpt-4o"), 0);
    cbus_ctx *child = cbus_ctx_new();
    cr_assert_not_null(child);
    cr_assert_eq(cbus_ctx_child(child, ctx), 0);
    cr_assert_eq(cbus_chain_start(p, ctx, "qa", "in"), 0);
    cr_assert_eq(cbus_tool_start(p, child, "search", "q"), 0);

    struct cbus_event ev[2];
    cr_assert_eq(cbus_consumer_poll(c, ev, 2), 2);
    cr_assert_eq(ev[0].kind, CBUS_EV_CHAIN_START);
    cr_assert_str_eq(ev[0].model, "gpt-4o");
    cr_assert(!cbus_id_is_zero(ev[0].run_id));
    cr_assert(!cbus_id_is_zero(ev[0].trace_id));
    cr_assert_eq(memcmp(ev[1].parent_run_id, ev[0].run_id, 16), 0);
    cr_assert_eq(memcmp(ev[1].trace_id, ev[0].trace_id, 16), 0);
    cr_assert_str_eq(ev[1].model, "gpt-4o");

    cbus_ctx_free(child);
    cbus_ctx_free(ctx);
    cbus_ctx_free(NULL); /* a no-op */
    cbus_producer_close(p);
    cbus_consumer_detach(c);
}

/* ---- feature bits ------------------------------------------------------- */

static char path[128];

static void patch_u32(size_t off, uint32_t v)
{
    snprintf(path, sizeof path, "/dev/shm/cbus.%s", name);
    int fd = open(path, O_RDWR);
    cr_assert_geq(fd, 0);
    cr_assert_eq(pwrite(fd, &v, sizeof v, (off_t)off), (ssize_t)sizeof v);
    close(fd);
}

Test(bus_abi, new_segment_declares_need_wake_as_required)
{
    test_bus_create(name, 1024);
    cbus_bus *b;
    cr_assert_eq(cbus_bus_open(&b, name, 0), 0);
    const struct cbus_shm_header *h = cbus_bus_header(b);
    cr_assert_eq(h->required_features, CBUS_FEATURE_NEED_WAKE);
    cr_assert_eq(h->compat_features, 0);
    cbus_bus_close(b);
}

Test(bus_abi, unknown_required_feature_is_refused_with_efeature)
{
    test_bus_create(name, 1024);
    patch_u32(offsetof(struct cbus_shm_header, required_features),
              CBUS_FEATURE_NEED_WAKE | UINT32_C(1) << 31);
    cbus_bus *b = NULL;
    cr_assert_eq(cbus_bus_open(&b, name, 0), -CBUS_EFEATURE);
    cr_assert_null(b);
    cr_assert_eq(cbus_bus_open(&b, name, CBUS_OPEN_READONLY), -CBUS_EFEATURE);
    cbus_consumer *c = NULL;
    struct cbus_consumer_opts co = {.name = "old"};
    cr_assert_eq(cbus_consumer_attach(&c, name, &co), -CBUS_EFEATURE);
    cbus_producer *p = NULL;
    cr_assert_eq(cbus_producer_open(&p, name, NULL), -CBUS_EFEATURE);
    /* Distinct from "not a cbus segment of this layout", with its own text. */
    cr_assert_neq(CBUS_EFEATURE, EPROTO);
    cr_assert(strstr(cbus_strerror(-CBUS_EFEATURE), "feature"), "%s",
              cbus_strerror(-CBUS_EFEATURE));
}

Test(bus_abi, unknown_compat_feature_is_accepted)
{
    test_bus_create(name, 1024);
    patch_u32(offsetof(struct cbus_shm_header, compat_features), UINT32_C(1) << 30 | 1u);
    cbus_consumer *c;
    struct cbus_consumer_opts co = {.name = "new", .mode = CBUS_LOSSLESS};
    cr_assert_eq(cbus_consumer_attach(&c, name, &co), 0);
    cbus_producer *p;
    cr_assert_eq(cbus_producer_open(&p, name, NULL), 0);
    cbus_ctx ctx;
    cbus_ctx_init(&ctx);
    cr_assert_eq(cbus_text(p, &ctx, "hello"), 0);
    struct cbus_event ev;
    cr_assert_eq(cbus_consumer_poll(c, &ev, 1), 1);
    cr_assert_eq(ev.kind, CBUS_EV_TEXT);
    cbus_producer_close(p);
    cbus_consumer_detach(c);
}

/* ---- one meaning per code ------------------------------------------------ */

Test(bus_abi, world_access_and_other_owner_have_distinct_codes)
{
    cr_assert_neq(CBUS_EWORLD, EPERM);
    cr_assert_neq(CBUS_EWORLD, EACCES);
    cr_assert_neq(CBUS_EWORLD, CBUS_EFEATURE);
    test_bus_create(name, 1024);
    snprintf(path, sizeof path, "/dev/shm/cbus.%s", name);
    cr_assert_eq(chmod(path, 0604), 0);
    cbus_bus *b = NULL;
    cr_assert_eq(cbus_bus_open(&b, name, 0), -CBUS_EWORLD);
    /* Trusting the owner does not make a world-accessible segment safe. */
    cr_assert_eq(cbus_bus_open(&b, name, CBUS_OPEN_TRUST_OWNER), -CBUS_EWORLD);
    cr_assert(strstr(cbus_strerror(-CBUS_EWORLD), "world-accessible"), "%s",
              cbus_strerror(-CBUS_EWORLD));
    cr_assert_eq(chmod(path, 0600), 0);
    if (geteuid() != 0)
        return; /* the other-owner half needs chown */
    cr_assert_eq(chown(path, 65534, (gid_t)-1), 0);
    cr_assert_eq(cbus_bus_open(&b, name, 0), -EPERM);
    cr_assert(strstr(cbus_strerror(-EPERM), "another user"), "%s", cbus_strerror(-EPERM));
}

/* ---- the kind map ----------------------------------------------------------- */

Test(bus_abi, kind_map_covers_every_kind_once)
{
    unsigned seen[CBUS_EV__COUNT] = {0};
#define SEE(E, n, v, f, p, pl)                                                                 \
    seen[v]++;                                                                                 \
    cr_assert_eq(CBUS_EV_##E, v);                                                              \
    cr_assert_str_eq(cbus_kind_name(v), #n);                                                   \
    cr_assert_eq(cbus_kind_from_name(#n), v);                                                  \
    cr_assert_eq(cbus_kind_family(v), CBUS_FAMILY_##f);                                        \
    cr_assert_eq(cbus_kind_phase(v), CBUS_PHASE_##p);                                          \
    cr_assert_eq(cbus_kind_payload(v), CBUS_PAYLOAD_##pl);
    CBUS_KIND_MAP(SEE)
#undef SEE
    for (unsigned k = 1; k < CBUS_EV__COUNT; k++) {
        cr_assert_eq(seen[k], 1, "kind %u in the map %u times", k, seen[k]);
        cr_assert_neq(cbus_kind_family(k), CBUS_FAMILY_NONE);
        cr_assert_neq(cbus_kind_phase(k), CBUS_PHASE_NONE);
    }
    /* A kind from a newer segment is none of these, never a crash. */
    unsigned unknown[] = {0, CBUS_EV__COUNT, 999, 65535};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        cr_assert_eq(cbus_kind_family(unknown[i]), CBUS_FAMILY_NONE);
        cr_assert_eq(cbus_kind_phase(unknown[i]), CBUS_PHASE_NONE);
        cr_assert_eq(cbus_kind_payload(unknown[i]), CBUS_PAYLOAD_NONE);
    }
    cr_assert_null(cbus_kind_name(CBUS_EV__COUNT));
}

Test(bus_abi, every_family_with_runs_has_a_start_an_end_and_an_error)
{
    /* span.c pairs ends with starts by family: a run family missing one of
     * them would leave spans open or unpaired. */
    static const enum cbus_kind_family runs[] = {CBUS_FAMILY_LLM, CBUS_FAMILY_CHAIN,
                                                 CBUS_FAMILY_TOOL, CBUS_FAMILY_RETRIEVER};
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
        unsigned have = 0;
        for (unsigned k = 1; k < CBUS_EV__COUNT; k++)
            if (cbus_kind_family(k) == runs[i])
                have |= 1u << cbus_kind_phase(k);
        unsigned want = 1u << CBUS_PHASE_START | 1u << CBUS_PHASE_END | 1u << CBUS_PHASE_ERROR;
        cr_assert_eq(have & want, want, "family %d: phases %#x", (int)runs[i], have);
    }
}

Test(bus_abi, payload_of_a_kind_is_what_its_typed_call_fills)
{
    test_bus_create(name, 1024);
    cbus_consumer *c;
    struct cbus_consumer_opts co = {.name = "pl", .mode = CBUS_LOSSY};
    cr_assert_eq(cbus_consumer_attach(&c, name, &co), 0);
    cbus_producer *p;
    cr_assert_eq(cbus_producer_open(&p, name, NULL), 0);
    cbus_ctx ctx;
    cbus_ctx_init(&ctx);
    cr_assert_eq(cbus_retriever_start(p, &ctx, "r", "q"), 0);
    cr_assert_eq(cbus_retriever_end(p, &ctx, 7), 0);
    cr_assert_eq(cbus_retry(p, &ctx, 3, 1000, "x"), 0);
    struct cbus_event ev[3];
    cr_assert_eq(cbus_consumer_poll(c, ev, 3), 3);
    cr_assert_eq(cbus_kind_payload(ev[1].kind), CBUS_PAYLOAD_RETRIEVER);
    cr_assert_eq(ev[1].u.retriever.document_count, 7);
    cr_assert_eq(cbus_kind_payload(ev[2].kind), CBUS_PAYLOAD_RETRY);
    cr_assert_eq(ev[2].u.retry.attempt, 3);
    cbus_producer_close(p);
    cbus_consumer_detach(c);
}
