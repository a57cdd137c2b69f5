/* cbus-history's store: conversations built from real events (a producer
 * on a real bus, read back with their bodies) reproduce the thread. */
#include <criterion/criterion.h>

#include <cbus/bus.h>
#include <cbus/consumer.h>
#include <cbus/producer.h>

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "api.h"
#include "ingest.h"
#include "prices.h"
#include "sbuf.h"
#include "hist_test.h"
#include "store.h"
#include "support.h"

static struct hist_test T; /* the bus, its producer, the store (hist_test.h) */

static void setup(void)
{
    hist_test_open(&T, "hist-test");
}

static void teardown(void)
{
    hist_test_close(&T);
}

/* Everything on the bus so far, applied in one batch. */
static void drain(void)
{
    hist_test_drain(&T, "hist-test", 1);
}

/* OpenTelemetry-shaped messages, LangChain's types as roles (what the
 * Python handler sends). */
static char *messages_json(const char *const *pairs)
{
    struct sbuf b;
    sbuf_init(&b);
    sbuf_puts(&b, "[");
    for (int i = 0; pairs[i]; i += 2) {
        sbuf_printf(&b, "%s{\"role\":\"%s\",\"parts\":[{\"type\":\"text\",\"content\":", i ? "," : "",
                    pairs[i]);
        sbuf_json_str(&b, pairs[i + 1], (size_t)-1);
        sbuf_puts(&b, "}]}");
    }
    sbuf_puts(&b, "]");
    return b.data;
}

static void llm_call(cbus_ctx *root, const char *const *prompt, const char *answer, uint32_t in,
                     uint32_t out)
{
    cbus_ctx llm;
    cr_assert_eq(cbus_ctx_child(&llm, root), 0);
    cbus_ctx_set_model(&llm, "gpt-4o");
    char *m = messages_json(prompt);
    int last = 0;
    while (prompt[last])
        last += 2;
    cr_assert_eq(cbus_chat_model_start_messages(T.prod, &llm, m, strlen(m), prompt[last - 1], NULL), 0);
    free(m);
    struct cbus_usage u = {.input_tokens = in, .output_tokens = out,
                           .usage_present = CBUS_USAGE_INPUT | CBUS_USAGE_OUTPUT};
    cr_assert_eq(cbus_llm_end(T.prod, &llm, &u, answer), 0);
}

static void tool_call(cbus_ctx *root, const char *name, const char *input, const char *output)
{
    cbus_ctx t;
    cr_assert_eq(cbus_ctx_child(&t, root), 0);
    cr_assert_eq(cbus_tool_start(T.prod, &t, name, input), 0);
    cr_assert_eq(cbus_tool_end(T.prod, &t, output), 0);
}

#define S  "You are a weather assistant. Answer in one sentence, and use the tools you have."
#define U1 "What is the weather in Paris right now?"
#define A1 "Let me look that up."
#define T1 "sunny, 21C, light wind from the south-west"
#define A2 "It is sunny in Paris, 21C."
#define U2 "And tomorrow?"
#define A3 "Rain, most of the day."
#define A4 "Still rain, I am afraid."

/* A LangChain-style agent run over three turns: the model is called with
 * the whole history every time; a tool runs in the first turn; the user
 * repeats a question word for word in the third. */
static void emit_conversation(const char *session, const char *user)
{
    cbus_ctx root;
    cbus_ctx_init(&root);
    cbus_ctx_set_session(&root, session);
    cbus_ctx_set_user(&root, user);
    cbus_ctx_set_agent(&root, "weather-bot");
    cbus_ctx_set_tenant(&root, "acme");
    cbus_ctx_set_metadata(&root, "channel", "web");
    cr_assert_eq(cbus_chain_start(T.prod, &root, "AgentExecutor", U1), 0);
    const char *p1[] = {"system", S, "human", U1, NULL};
    llm_call(&root, p1, A1, 40, 8);
    tool_call(&root, "weather", "Paris", T1);
    const char *p2[] = {"system", S, "human", U1, "ai", A1, "tool", T1, NULL};
    llm_call(&root, p2, A2, 70, 10);
    cr_assert_eq(cbus_chain_end(T.prod, &root, A2), 0);
    const char *p3[] = {"system", S, "human", U1, "ai", A1, "tool", T1, "ai", A2, "human", U2, NULL};
    llm_call(&root, p3, A3, 90, 6);
    const char *p4[] = {"system", S, "human", U1, "ai", A1, "tool", T1, "ai", A2, "human", U2,
                        "ai", A3, "human", U2, NULL};
    llm_call(&root, p4, A4, 100, 7);
}

static cJSON *export_json(const char *conv)
{
    struct sbuf b;
    sbuf_init(&b);
    cr_assert_eq(hist_render_conv(T.st, conv, 1, 1, &b), 0);
    cJSON *j = cJSON_Parse(b.data);
    cr_assert_not_null(j, "export is not JSON: %s", b.data);
    sbuf_free(&b);
    return j;
}

static const char *str(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

Test(history_store, langchain_run_reproduces_the_thread, .init = setup, .fini = teardown)
{
    emit_conversation("conv-1", "ann");
    drain();
    cJSON *j = export_json("conv-1");
    static const char *const want[][3] = {
        {"system", "message", S},       {"user", "message", U1},
        {"assistant", "message", A1},   {"tool", "tool_call", "Paris"},
        {"tool", "tool_result", T1},    {"assistant", "message", A2},
        {"user", "message", U2},        {"assistant", "message", A3},
        {"user", "message", U2},        {"assistant", "message", A4},
    };
    const cJSON *thread = cJSON_GetObjectItemCaseSensitive(j, "thread");
    cr_assert_eq(cJSON_GetArraySize(thread), 10, "%s", cJSON_Print(thread));
    const char *prev_id = NULL, *call_id = NULL;
    for (int i = 0; i < 10; i++) {
        const cJSON *m = cJSON_GetArrayItem(thread, i);
        cr_expect_str_eq(str(m, "role"), want[i][0], "message %d", i);
        cr_expect_str_eq(str(m, "kind"), want[i][1], "message %d", i);
        cr_expect_str_eq(str(m, "text"), want[i][2], "message %d", i);
        /* each message's parent is the one before it; the tool's result's
         * parent is its call */
        if (i == 0)
            cr_expect_null(str(m, "parent"));
        else
            cr_expect_str_eq(str(m, "parent"), prev_id, "message %d", i);
        if (i == 3) {
            call_id = str(m, "id");
            cr_expect_str_eq(str(m, "name"), "weather");
        }
        if (i == 4)
            cr_expect_str_eq(str(m, "parent"), call_id);
        prev_id = str(m, "id");
    }
    /* the run's metadata rides on the prompt's messages */
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(thread, 1), "metadata");
    cr_expect_str_eq(str(meta, "channel"), "web");
    cr_expect_str_eq(str(cJSON_GetArrayItem(thread, 2), "model"), "gpt-4o");
    cr_expect_str_eq(str(j, "user"), "ann");
    cr_expect_str_eq(str(j, "agent"), "weather-bot");
    cr_expect_str_eq(str(j, "tenant"), "acme");
    cr_expect_eq(cJSON_GetObjectItemCaseSensitive(j, "messages")->valueint, 10);
    cr_expect_eq(cJSON_GetObjectItemCaseSensitive(j, "input_tokens")->valueint, 300);
    cr_expect_eq(cJSON_GetObjectItemCaseSensitive(j, "output_tokens")->valueint, 31);
    cJSON_Delete(j);
    struct hist_counts hc;
    hist_store_counts(T.st, &hc);
    cr_expect_eq(hc.duplicates, 0);
    cr_expect_eq(hc.messages, 10);
}

Test(history_store, events_applied_twice_are_refused_as_duplicates, .init = setup,
     .fini = teardown)
{
    emit_conversation("conv-1", "ann");
    drain();
    drain(); /* the same events again: a replay */
    struct hist_counts hc;
    hist_store_counts(T.st, &hc);
    cr_expect_eq(hc.messages, 10);
    /* the answers and the tool's call and result come again with their
     * ids: refused; the prompts' messages are recognised as history */
    cr_expect_eq(hc.duplicates, 6);
    cJSON *j = export_json("conv-1");
    cr_expect_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "thread")), 10);
    cJSON_Delete(j);
}

Test(history_store, rollback_leaves_nothing_and_cursor_unmoved, .init = setup, .fini = teardown)
{
    uint64_t bid;
    struct cbus_position pos;
    cr_assert_eq(hist_store_cursor(T.st, &bid, &pos), -ENOENT);
    struct hist_msg m = {.conv = "c", .id = "m1", .role = "user", .text = "hi", .text_len = 2,
                         .input_tokens = -1, .output_tokens = -1, .ts_ns = 1};
    cr_assert_eq(hist_store_begin(T.st), 0);
    cr_assert_eq(hist_store_message(T.st, &m), 0);
    hist_store_rollback(T.st);
    struct sbuf b;
    sbuf_init(&b);
    cr_expect_eq(hist_render_conv(T.st, "c", 1, 1, &b), -ENOENT);
    cr_assert_eq(hist_store_cursor(T.st, &bid, &pos), -ENOENT);
    struct hist_counts hc;
    hist_store_counts(T.st, &hc);
    cr_expect_eq(hc.messages, 0);
    sbuf_free(&b);
}

Test(history_store, message_for_unknown_conversation_creates_it, .init = setup, .fini = teardown)
{
    struct hist_msg m = {.conv = "new-conv", .id = "m1", .role = "user", .text = "hello",
                         .text_len = 5, .input_tokens = -1, .output_tokens = -1, .ts_ns = 5,
                         .user = "bob"};
    cr_assert_eq(hist_store_begin(T.st), 0);
    cr_assert_eq(hist_store_message(T.st, &m), 0);
    struct cbus_position pos = {.lanes = 1};
    cr_assert_eq(hist_store_commit(T.st, 7, &pos), 0);
    cJSON *j = export_json("new-conv");
    cr_expect_str_eq(str(j, "user"), "bob");
    cr_expect_str_eq(str(j, "state"), "active");
    cr_expect_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "thread")), 1);
    cJSON_Delete(j);
    uint64_t bid;
    cr_assert_eq(hist_store_cursor(T.st, &bid, &pos), 0);
    cr_expect_eq(bid, 7);
    cr_expect_eq(pos.lanes, 1);
}

Test(history_store, rename_of_missing_conversation_is_enoent, .init = setup, .fini = teardown)
{
    cr_expect_eq(hist_store_rename(T.st, "nope", "A title", 1), -ENOENT);
    emit_conversation("conv-1", "ann");
    drain();
    cr_expect_eq(hist_store_rename(T.st, "conv-1", "Weather in Paris", 1), 0);
    cJSON *j = export_json("conv-1");
    cr_expect_str_eq(str(j, "title"), "Weather in Paris");
    cJSON_Delete(j);
}

Test(history_store, non_utf8_text_is_kept_and_shown_safely, .init = setup, .fini = teardown)
{
    /* a lone continuation byte, an overlong NUL, and a terminal escape */
    static const char bad[] = "caf\xc3 ok \xc0\x80 \x1b[2J end";
    struct hist_msg m = {.conv = "c", .id = "m1", .role = "user", .text = bad,
                         .text_len = sizeof bad - 1, .input_tokens = -1, .output_tokens = -1,
                         .ts_ns = 5};
    cr_assert_eq(hist_store_begin(T.st), 0);
    cr_assert_eq(hist_store_message(T.st, &m), 0);
    struct cbus_position pos = {.lanes = 1};
    cr_assert_eq(hist_store_commit(T.st, 7, &pos), 0);
    cJSON *j = export_json("c");
    const cJSON *m0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "thread"), 0);
    cr_expect_str_eq(str(m0, "text"), "caf\xef\xbf\xbd ok \xef\xbf\xbd\xef\xbf\xbd \x1b[2J end");
    cr_expect(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(m0, "text_replaced")));
    cJSON_Delete(j);
    struct sbuf b;
    sbuf_init(&b);
    cr_assert_eq(hist_render_conv(T.st, "c", 0, 1, &b), 0);
    /* the human view shows the exact bytes, escaped: no raw ESC reaches a terminal */
    cr_expect_not_null(strstr(b.data, "caf\\xc3 ok \\xc0\\x80 \\x1b[2J end"), "%s", b.data);
    cr_expect_null(strchr(b.data, '\x1b'));
    sbuf_free(&b);
}

Test(history_store, search_finds_messages_by_words, .init = setup, .fini = teardown)
{
    emit_conversation("conv-1", "ann");
    drain();
    struct sbuf b;
    sbuf_init(&b);
    cr_assert_eq(hist_render_search(T.st, "sunny Paris", 10, 1, &b), 0);
    cJSON *j = cJSON_Parse(b.data);
    const cJSON *res = cJSON_GetObjectItemCaseSensitive(j, "results");
    cr_expect_eq(cJSON_GetArraySize(res), 1, "%s", b.data);
    cr_expect_str_eq(str(cJSON_GetArrayItem(res, 0), "conversation"), "conv-1");
    cJSON_Delete(j);
    /* query syntax in the text is text, not FTS5 operators */
    sbuf_reset(&b);
    cr_assert_eq(hist_render_search(T.st, "\"rain\" OR NEAR(", 10, 1, &b), 0);
    j = cJSON_Parse(b.data);
    cr_expect_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "results")), 0);
    cJSON_Delete(j);
    sbuf_free(&b);
}

Test(history_store, retention_and_forget_delete_whole_conversations, .init = setup,
     .fini = teardown)
{
    emit_conversation("conv-ann", "ann");
    emit_conversation("conv-bob", "bob");
    emit_conversation("conv-ann-2", "ann");
    drain();
    uint64_t c = 0, m = 0;
    /* nothing is older than an hour ago */
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    uint64_t ns = (uint64_t)now.tv_sec * 1000000000u;
    cr_assert_eq(hist_store_expire(T.st, ns - 3600 * UINT64_C(1000000000), &c, &m), 0);
    cr_expect_eq(c, 0);
    /* indexed first: forget must take the words out of the index too */
    uint64_t n, left;
    cr_assert_eq(hist_store_index(T.st, 1000, &n, &left), 0);
    cr_expect_eq(n, 30);
    cr_assert_eq(hist_store_forget(T.st, "ann", &c, &m), 0);
    cr_expect_eq(c, 2);
    cr_expect_eq(m, 20);
    struct sbuf b;
    sbuf_init(&b);
    cr_expect_eq(hist_render_conv(T.st, "conv-ann", 1, 1, &b), -ENOENT);
    /* and no search finds their words any more; bob's remain */
    cr_assert_eq(hist_render_search(T.st, "tomorrow", 50, 1, &b), 0);
    cJSON *j = cJSON_Parse(b.data);
    const cJSON *res = cJSON_GetObjectItemCaseSensitive(j, "results");
    cr_expect_eq(cJSON_GetArraySize(res), 2, "%s", b.data);
    const cJSON *r;
    cJSON_ArrayForEach(r, res)
        cr_expect_str_eq(str(r, "conversation"), "conv-bob");
    cJSON_Delete(j);
    /* everything updated before a minute from now goes */
    cr_assert_eq(hist_store_expire(T.st, ns + 60 * UINT64_C(1000000000), &c, &m), 0);
    cr_expect_eq(c, 1);
    cr_expect_eq(m, 10);
    sbuf_reset(&b);
    struct hist_list_q q = {0};
    cr_assert_eq(hist_render_list(T.st, &q, 1, &b), 0);
    cr_expect_str_eq(b.data, "{\"conversations\":[]}\n");
    sbuf_free(&b);
}

Test(history_store, cut_session_keeps_its_identity, .init = setup, .fini = teardown)
{
    /* two sessions that share their first 39 bytes are two conversations */
    char s1[80], s2[80];
    memset(s1, 'x', 60);
    memcpy(s2, s1, 60);
    s1[60] = s2[60] = '\0';
    s1[50] = '1';
    s2[50] = '2';
    emit_conversation(s1, "ann");
    emit_conversation(s2, "ann");
    drain();
    struct sbuf b;
    sbuf_init(&b);
    struct hist_list_q q = {0};
    cr_assert_eq(hist_render_list(T.st, &q, 1, &b), 0);
    cJSON *j = cJSON_Parse(b.data);
    const cJSON *convs = cJSON_GetObjectItemCaseSensitive(j, "conversations");
    cr_expect_eq(cJSON_GetArraySize(convs), 2, "%s", b.data);
    const cJSON *c;
    cJSON_ArrayForEach(c, convs)
        cr_expect_eq(cJSON_GetObjectItemCaseSensitive(c, "messages")->valueint, 10);
    cJSON_Delete(j);
    sbuf_free(&b);
}

static void api(const char *method, const char *path, const char *body, int *status,
                struct sbuf *out)
{
    struct cbus_http_request req = {.method = method, .path = path, .body = body ? body : "",
                                    .body_len = body ? strlen(body) : 0};
    struct cbus_http_response res = {.status = 200};
    hist_api_handle(T.st, &req, &res);
    *status = res.status;
    sbuf_reset(out);
    if (res.body)
        sbuf_add(out, res.body, res.len);
    free(res.body);
}

Test(history_store, api_handler_answers_and_refuses, .init = setup, .fini = teardown)
{
    emit_conversation("conv-1", "ann");
    drain();
    struct sbuf b;
    sbuf_init(&b);
    int status;
    api("GET", "/v1/conversations/conv-1/messages", NULL, &status, &b);
    cr_expect_eq(status, 200);
    cJSON *j = cJSON_Parse(b.data);
    cr_expect_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "messages")), 10);
    cJSON_Delete(j);
    api("GET", "/v1/conversations/missing", NULL, &status, &b);
    cr_expect_eq(status, 404);
    api("PATCH", "/v1/conversations/missing", "{\"title\":\"x\"}", &status, &b);
    cr_expect_eq(status, 404);
    api("PATCH", "/v1/conversations/conv-1", "{\"title\":", &status, &b);
    cr_expect_eq(status, 400);
    api("PATCH", "/v1/conversations/conv-1", "{\"title\":\"Paris weather\"}", &status, &b);
    cr_expect_eq(status, 200);
    j = cJSON_Parse(b.data);
    cr_expect_str_eq(str(j, "title"), "Paris weather");
    cJSON_Delete(j);
    api("DELETE", "/v1/conversations/conv-1", NULL, &status, &b);
    cr_expect_eq(status, 405);
    api("GET", "/v2/whatever", NULL, &status, &b);
    cr_expect_eq(status, 404);
    sbuf_free(&b);
}

Test(history_store, search_index_catches_up_in_steps, .init = setup, .fini = teardown)
{
    emit_conversation("conv-1", "ann");
    emit_conversation("conv-2", "bob");
    drain();
    struct sbuf b;
    sbuf_init(&b);
    cr_assert_eq(hist_render_stats(T.st, &b), 0);
    cr_expect_not_null(strstr(b.data, "\"not_yet_indexed\":20"), "%s", b.data);
    uint64_t n, left;
    cr_assert_eq(hist_store_index(T.st, 7, &n, &left), 0);
    cr_expect_eq(n, 7);
    cr_expect_eq(left, 13);
    /* not inside a batch */
    cr_assert_eq(hist_store_begin(T.st), 0);
    cr_expect_eq(hist_store_index(T.st, 7, &n, &left), -EBUSY);
    hist_store_rollback(T.st);
    /* a forget of rows on both sides of the indexed mark */
    uint64_t c, m;
    cr_assert_eq(hist_store_forget(T.st, "ann", &c, &m), 0);
    cr_assert_eq(hist_store_index(T.st, 1000, &n, &left), 0);
    cr_expect_eq(n, 10);
    cr_expect_eq(left, 0);
    sbuf_reset(&b);
    cr_assert_eq(hist_render_search(T.st, "tomorrow", 50, 1, &b), 0);
    cJSON *j = cJSON_Parse(b.data);
    const cJSON *res = cJSON_GetObjectItemCaseSensitive(j, "results");
    cr_expect_eq(cJSON_GetArraySize(res), 2, "%s", b.data); /* bob's two turns only */
    const cJSON *r;
    cJSON_ArrayForEach(r, res)
        cr_expect_str_eq(str(r, "conversation"), "conv-2");
    cJSON_Delete(j);
    /* new rows after the delete are above the mark (AUTOINCREMENT); drain()
     * replays the whole ring, so conv-1 comes back too: 3 conversations */
    emit_conversation("conv-3", "cid");
    drain();
    sbuf_reset(&b);
    cr_assert_eq(hist_render_search(T.st, "tomorrow", 50, 1, &b), 0); /* indexes the rest first */
    j = cJSON_Parse(b.data);
    cr_expect_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "results")), 6, "%s",
                 b.data);
    cJSON_Delete(j);
    sbuf_reset(&b);
    cr_assert_eq(hist_render_stats(T.st, &b), 0);
    cr_expect_not_null(strstr(b.data, "\"not_yet_indexed\":0"), "%s", b.data);
    /* the index agrees with the rows (FTS5's own check) */
    cr_expect_eq(hist_store_index(T.st, 1, &n, &left), 0);
    sbuf_free(&b);
}

Test(history_store, cost_totals_use_the_price_table, .init = setup, .fini = teardown)
{
    /* cbus-cost's price code (consumers/events/prices.c), with a table of one model */
    static const char table[] = "{\"gpt-4o\": {\"input_cost_per_token\": 2.5e-06,"
                                " \"output_cost_per_token\": 1e-05, \"litellm_provider\": \"openai\","
                                " \"mode\": \"chat\"}}";
    struct cost_price_table *t;
    char err[256];
    cr_assert_eq(cost_prices_parse(&t, "t.json", table, err, sizeof err), 0, "%s", err);
    hist_store_set_prices(T.st, t);
    emit_conversation("conv-1", "ann");
    drain();
    cJSON *j = export_json("conv-1");
    /* 300 input tokens at 2.5 USD/M and 31 output at 10 USD/M: 0.00106 exactly */
    const cJSON *cost = cJSON_GetObjectItemCaseSensitive(j, "cost_usd");
    cr_assert(cJSON_IsNumber(cost), "%s", cJSON_Print(j));
    cr_expect_float_eq(cost->valuedouble, 0.00106, 1e-12);
    const cJSON *a1 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "thread"), 2);
    cr_expect_float_eq(cJSON_GetObjectItemCaseSensitive(a1, "cost_usd")->valuedouble,
                       40 * 2.5e-6 + 8 * 1e-5, 1e-12);
    const cJSON *u1 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "thread"), 1);
    cr_expect(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(u1, "cost_usd")));
    cJSON_Delete(j);
    hist_store_set_prices(T.st, NULL);
    cost_prices_free(t);
}

Test(history_store, unknown_model_is_not_priced, .init = setup, .fini = teardown)
{
    static const char table[] = "{\"other-model\": {\"input_cost_per_token\": 1e-06,"
                                " \"output_cost_per_token\": 1e-06, \"mode\": \"chat\"}}";
    struct cost_price_table *t;
    char err[256];
    cr_assert_eq(cost_prices_parse(&t, "t.json", table, err, sizeof err), 0, "%s", err);
    hist_store_set_prices(T.st, t);
    emit_conversation("conv-1", "ann");
    drain();
    cJSON *j = export_json("conv-1");
    cr_expect(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, "cost_usd")), "null, not 0");
    cJSON_Delete(j);
    hist_store_set_prices(T.st, NULL);
    cost_prices_free(t);
}
