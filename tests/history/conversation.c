/* Explicit conversation events: the producer calls (cbus_conversation_*)
 * refuse bad arguments, and what they emit is stored as the caller said. */
#include <criterion/criterion.h>

#include <cbus/bus.h>
#include <cbus/consumer.h>
#include <cbus/producer.h>

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sbuf.h"
#include "hist_test.h"
#include "store.h"
#include "support.h"

static struct hist_test T; /* the bus, its producer, the store (hist_test.h) */
static cbus_ctx ctx;

static void setup(void)
{
    hist_test_open(&T, "histc");
    cbus_ctx_init(&ctx);
    cbus_ctx_set_user(&ctx, "ann");
    cbus_ctx_set_agent(&ctx, "planner");
}

static void teardown(void)
{
    hist_test_close(&T);
}

/* Everything on the bus so far, applied in one batch. */
static void drain(void)
{
    hist_test_drain(&T, "hist-conv", 0xab);
}

static cJSON *conv_json(const char *conv)
{
    struct sbuf b;
    sbuf_init(&b);
    cr_assert_eq(hist_render_conv(T.st, conv, 1, 1, &b), 0, "no conversation %s", conv);
    cJSON *j = cJSON_Parse(b.data);
    cr_assert_not_null(j);
    sbuf_free(&b);
    return j;
}

static const char *str(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static const cJSON *msg(const cJSON *conv, int i)
{
    return cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(conv, "thread"), i);
}

Test(history_conversation, bad_arguments_are_refused, .init = setup, .fini = teardown)
{
    struct cbus_conv_message m = {.role = "user", .text = "hi", .text_len = SIZE_MAX};
    cr_expect_eq(cbus_conversation_message(NULL, &ctx, "c", &m), -EINVAL);
    cr_expect_eq(cbus_conversation_message(T.prod, NULL, "c", &m), -EINVAL);
    cr_expect_eq(cbus_conversation_message(T.prod, &ctx, "c", NULL), -EINVAL);
    /* no id and no session in the context */
    cr_expect_eq(cbus_conversation_message(T.prod, &ctx, NULL, &m), -EINVAL);
    cr_expect_eq(cbus_conversation_create(T.prod, &ctx, "", NULL), -EINVAL);
    cr_expect_eq(cbus_conversation_create(T.prod, &ctx, "a\nb", NULL), -EINVAL);
    char longid[CBUS_CONV_ID_MAX + 2];
    memset(longid, 'i', sizeof longid - 1);
    longid[sizeof longid - 1] = '\0';
    cr_expect_eq(cbus_conversation_create(T.prod, &ctx, longid, NULL), -EINVAL);
    longid[CBUS_CONV_ID_MAX] = '\0'; /* exactly the maximum */
    cr_expect_eq(cbus_conversation_create(T.prod, &ctx, longid, NULL), 0);
    m.role = "robot";
    cr_expect_eq(cbus_conversation_message(T.prod, &ctx, "c", &m), -EINVAL);
    m.role = NULL;
    cr_expect_eq(cbus_conversation_message(T.prod, &ctx, "c", &m), -EINVAL);
    m.role = "user";
    m.id = "x\ty";
    cr_expect_eq(cbus_conversation_message(T.prod, &ctx, "c", &m), -EINVAL);
    m.id = NULL;
    m.parent_id = "";
    cr_expect_eq(cbus_conversation_message(T.prod, &ctx, "c", &m), -EINVAL);
    m.parent_id = NULL;
    static const char *const odd[] = {"key", NULL};
    m.metadata = odd;
    cr_expect_eq(cbus_conversation_message(T.prod, &ctx, "c", &m), -EINVAL);
    static const char *const empty_key[] = {"", "v", NULL};
    m.metadata = empty_key;
    cr_expect_eq(cbus_conversation_message(T.prod, &ctx, "c", &m), -EINVAL);
    static char big[CBUS_CONV_FIELDS_MAX];
    memset(big, 'v', sizeof big - 1);
    const char *huge[] = {"k", big, NULL};
    m.metadata = huge;
    cr_expect_eq(cbus_conversation_message(T.prod, &ctx, "c", &m), -E2BIG);
    m.metadata = NULL;
    m.text = NULL;
    m.text_len = 3; /* a length without its text */
    cr_expect_eq(cbus_conversation_message(T.prod, &ctx, "c", &m), -EINVAL);
    cr_expect_eq(cbus_conversation_rename(T.prod, &ctx, "c", NULL), -EINVAL);
    cr_expect_eq(cbus_conversation_rename(T.prod, &ctx, "c", ""), -EINVAL);
    char longtitle[CBUS_CONV_TITLE_MAX + 2];
    memset(longtitle, 't', sizeof longtitle - 1);
    longtitle[sizeof longtitle - 1] = '\0';
    cr_expect_eq(cbus_conversation_rename(T.prod, &ctx, "c", longtitle), -EINVAL);
    cr_expect_eq(cbus_conversation_set_state(T.prod, &ctx, "c", "Archived"), -EINVAL);
    cr_expect_eq(cbus_conversation_set_state(T.prod, &ctx, "c", ""), -EINVAL);
    cr_expect_eq(cbus_conversation_set_state(T.prod, &ctx, "c", NULL), -EINVAL);
    /* only the one good call reached the bus */
    drain();
    struct hist_counts hc;
    hist_store_counts(T.st, &hc);
    cr_expect_eq(hc.events, 1);
}

Test(history_conversation, operations_are_stored_as_given, .init = setup, .fini = teardown)
{
    cr_assert_eq(cbus_conversation_create(T.prod, &ctx, "trip-1", "Trip planning"), 0);
    struct cbus_conv_message m1 = {.id = "m1", .role = "user",
                                   .text = "Plan three days in Paris, please, on a budget.",
                                   .text_len = SIZE_MAX};
    cr_assert_eq(cbus_conversation_message(T.prod, &ctx, "trip-1", &m1), 0);
    static const char *const meta[] = {"source", "arshai", "quote\"d", "a\nb", NULL};
    struct cbus_conv_message m2 = {.id = "m2", .role = "assistant", .text = "Day 1: the Louvre.",
                                   .text_len = SIZE_MAX, .parent_id = "m1", .metadata = meta};
    cr_assert_eq(cbus_conversation_message(T.prod, &ctx, "trip-1", &m2), 0);
    /* a branch: another answer to m1 */
    struct cbus_conv_message m3 = {.id = "m3", .role = "assistant", .text = "Or Versailles.",
                                   .text_len = SIZE_MAX, .parent_id = "m1"};
    cr_assert_eq(cbus_conversation_message(T.prod, &ctx, "trip-1", &m3), 0);
    cr_assert_eq(cbus_conversation_rename(T.prod, &ctx, "trip-1", "Paris on a budget"), 0);
    cr_assert_eq(cbus_conversation_set_state(T.prod, &ctx, "trip-1", "archived"), 0);
    /* create again: the title stays */
    cr_assert_eq(cbus_conversation_create(T.prod, &ctx, "trip-1", "Other"), 0);
    /* a message for a conversation never created creates it; no id: one
     * is made; bytes that are not UTF-8 pass through */
    static const char bad[] = "ol\xe9 \xff";
    struct cbus_conv_message m4 = {.role = "user", .text = bad, .text_len = sizeof bad - 1};
    cr_assert_eq(cbus_conversation_message(T.prod, &ctx, "trip-2", &m4), 0);
    /* the context's session is the conversation when none is given */
    cbus_ctx_set_session(&ctx, "trip-3");
    struct cbus_conv_message m5 = {.id = "1", .role = "system", .text = "Be brief.",
                                   .text_len = SIZE_MAX};
    cr_assert_eq(cbus_conversation_message(T.prod, &ctx, NULL, &m5), 0);
    /* ids are per conversation: "m1" again, in another one */
    cr_assert_eq(cbus_conversation_message(T.prod, &ctx, "trip-4", &m1), 0);
    /* a rename of one never seen creates it, titled */
    cr_assert_eq(cbus_conversation_rename(T.prod, &ctx, "trip-5", "Late title"), 0);
    drain();

    cJSON *j = conv_json("trip-1");
    cr_expect_str_eq(str(j, "title"), "Paris on a budget");
    cr_expect_str_eq(str(j, "state"), "archived");
    cr_expect_str_eq(str(j, "user"), "ann");
    cr_expect_str_eq(str(j, "agent"), "planner");
    cr_expect_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "thread")), 3);
    cr_expect_str_eq(str(msg(j, 0), "id"), "m1");
    cr_expect_null(str(msg(j, 0), "parent"));
    cr_expect_str_eq(str(msg(j, 0), "text"), m1.text);
    cr_expect_str_eq(str(msg(j, 1), "parent"), "m1");
    cr_expect_str_eq(str(msg(j, 1), "role"), "assistant");
    const cJSON *md = cJSON_GetObjectItemCaseSensitive(msg(j, 1), "metadata");
    cr_expect_str_eq(str(md, "source"), "arshai");
    cr_expect_str_eq(str(md, "quote\"d"), "a\nb");
    cr_expect_str_eq(str(msg(j, 2), "parent"), "m1", "a branch keeps its explicit parent");
    cJSON_Delete(j);

    j = conv_json("trip-2");
    cr_expect_str_eq(str(msg(j, 0), "text"), "ol\xef\xbf\xbd \xef\xbf\xbd");
    cr_expect(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(msg(j, 0), "text_replaced")));
    cr_expect_eq(strncmp(str(msg(j, 0), "id"), "00000000000000ab-", 17), 0, "%s",
                 str(msg(j, 0), "id"));
    cJSON_Delete(j);
    j = conv_json("trip-3");
    cr_expect_str_eq(str(msg(j, 0), "role"), "system");
    cJSON_Delete(j);
    j = conv_json("trip-4");
    cr_expect_str_eq(str(msg(j, 0), "id"), "m1");
    cJSON_Delete(j);
    j = conv_json("trip-5");
    cr_expect_str_eq(str(j, "title"), "Late title");
    cJSON_Delete(j);
    struct hist_counts hc;
    hist_store_counts(T.st, &hc);
    cr_expect_eq(hc.duplicates, 0);
}

Test(history_conversation, explicit_history_is_not_stored_again_from_prompts, .init = setup,
     .fini = teardown)
{
    /* A framework that records its own history and also reports the model
     * call (with the whole history in the prompt): one copy of each. */
    cbus_ctx_set_session(&ctx, "both");
    struct cbus_conv_message u = {.id = "u1", .role = "user", .text = "Hello there",
                                  .text_len = SIZE_MAX};
    cr_assert_eq(cbus_conversation_message(T.prod, &ctx, NULL, &u), 0);
    static const char prompt[] =
        "[{\"role\":\"system\",\"parts\":[{\"type\":\"text\",\"content\":\"Be kind.\"}]},"
        "{\"role\":\"human\",\"parts\":[{\"type\":\"text\",\"content\":\"Hello there\"}]}]";
    cbus_ctx llm;
    cbus_ctx_child(&llm, &ctx);
    cr_assert_eq(cbus_chat_model_start_messages(T.prod, &llm, prompt, sizeof prompt - 1, NULL, NULL), 0);
    drain();
    cJSON *j = conv_json("both");
    cr_expect_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "thread")), 2);
    cr_expect_str_eq(str(msg(j, 0), "id"), "u1");
    cr_expect_str_eq(str(msg(j, 1), "role"), "system");
    cJSON_Delete(j);
}
