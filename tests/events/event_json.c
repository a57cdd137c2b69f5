/* The shared event JSON rendering (consumers/events/event_json.c), parsed
 * back with cJSON: what `cbusctl tail --json` and `cbus-audit cat` print. */
#include "event_json.h"

#include <cbus/cbus.h>

#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct cbus_event ev;
static struct sbuf out;

static void setup(void)
{
    memset(&ev, 0, sizeof ev);
    ev.kind = CBUS_EV_LLM_END;
    ev.event_id = 42;
    ev.ts_realtime_ns = UINT64_C(1763950000123456789); /* above 2^53 on purpose */
    ev.ts_mono_ns = 987654321;
    ev.pid = 1234;
    ev.tid = 1235;
    for (int i = 0; i < 16; i++)
        ev.run_id[i] = (uint8_t)(0x10 + i);
    sbuf_init(&out);
}

static void teardown(void)
{
    sbuf_free(&out);
}

/* Renders ev and parses it; fails the test if it is not one JSON object. */
static cJSON *render(void)
{
    sbuf_reset(&out);
    cbus_event_json(&out, &ev, NULL);
    cr_assert(!out.failed);
    cr_assert(!strchr(out.data, '\n'), "one line: %s", out.data);
    cJSON *j = cJSON_Parse(out.data);
    cr_assert(j, "not JSON: %s", out.data);
    cr_assert(cJSON_IsObject(j));
    return j;
}

static const char *str(cJSON *j, const char *k)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static double num(cJSON *j, const char *k)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);
    cr_assert(cJSON_IsNumber(v), "%s is not a number in %s", k, out.data);
    return v->valuedouble;
}

static int has(cJSON *j, const char *k)
{
    return cJSON_GetObjectItemCaseSensitive(j, k) != NULL;
}

TestSuite(events_event_json, .init = setup, .fini = teardown);

Test(events_event_json, common_fields_by_name)
{
    strcpy(ev.model, "gpt-4o");
    strcpy(ev.provider, "openai");
    strcpy(ev.user, "alice");
    cJSON *j = render();
    cr_assert_str_eq(str(j, "kind"), "llm_end");
    cr_assert_eq(num(j, "event_id"), 42);
    cr_assert_eq(num(j, "pid"), 1234);
    cr_assert_eq(num(j, "tid"), 1235);
    cr_assert_str_eq(str(j, "model"), "gpt-4o");
    cr_assert_str_eq(str(j, "provider"), "openai");
    cr_assert_str_eq(str(j, "user"), "alice");
    cr_assert_str_eq(str(j, "run_id"), "10111213-1415-1617-1819-1a1b1c1d1e1f");
    /* Empty strings and ids without their flag are left out, not rendered empty. */
    cr_assert(!has(j, "session") && !has(j, "preview") && !has(j, "request_id"));
    cr_assert(!has(j, "parent_run_id") && !has(j, "trace_id") && !has(j, "truncated"));
    cJSON_Delete(j);
}

Test(events_event_json, timestamps_are_exact_integers)
{
    cJSON *j = render();
    /* A double cannot hold this value; the text must carry every digit. */
    cr_assert(strstr(out.data, "\"ts_realtime_ns\":1763950000123456789,"), "%s", out.data);
    cr_assert(strstr(out.data, "\"ts_mono_ns\":987654321,"), "%s", out.data);
    cJSON_Delete(j);
}

Test(events_event_json, usage_lists_only_present_counts)
{
    ev.u.usage.usage_present = CBUS_USAGE_INPUT | CBUS_USAGE_CACHE_READ | CBUS_USAGE_TTFT;
    ev.u.usage.input_tokens = 100;
    ev.u.usage.output_tokens = 777; /* no present bit: must not appear */
    ev.u.usage.cache_read_tokens = 40;
    ev.u.usage.ttft_ns = 120000000;
    ev.u.usage.duration_ns = 999; /* no present bit */
    ev.u.usage.finish_reason = CBUS_FINISH_LENGTH;
    cJSON *j = render();
    cJSON *u = cJSON_GetObjectItemCaseSensitive(j, "usage");
    cr_assert(cJSON_IsObject(u), "%s", out.data);
    cr_assert_eq(cJSON_GetArraySize(u), 2);
    cr_assert_eq(num(u, "input_tokens"), 100);
    cr_assert_eq(num(u, "cache_read_tokens"), 40);
    cr_assert(!has(u, "output_tokens"));
    cr_assert_eq(num(j, "ttft_ns"), 120000000);
    cr_assert(!has(j, "duration_ns"));
    cr_assert_str_eq(str(j, "finish_reason"), "length");
    cJSON_Delete(j);
}

Test(events_event_json, llm_end_without_usage_has_no_usage_object)
{
    cJSON *j = render();
    cr_assert(!has(j, "usage"), "absent is not zero: %s", out.data);
    cr_assert(!has(j, "finish_reason"));
    cJSON_Delete(j);
}

Test(events_event_json, full_width_fields_stop_at_their_array)
{
    /* No NUL anywhere in model: the reader must stop at 64 bytes and not
     * run into user. */
    memset(ev.model, 'm', sizeof ev.model);
    memset(ev.user, 'u', sizeof ev.user);
    memset(ev.preview, 'p', sizeof ev.preview);
    ev.flags = CBUS_TRUNC_MODEL | CBUS_TRUNC_PREVIEW;
    cJSON *j = render();
    cr_assert_eq(strlen(str(j, "model")), CBUS_MODEL_LEN);
    cr_assert_eq(strspn(str(j, "model"), "m"), CBUS_MODEL_LEN);
    cr_assert_eq(strlen(str(j, "user")), CBUS_USER_LEN);
    cr_assert_eq(strlen(str(j, "preview")), CBUS_PREVIEW_LEN);
    cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "truncated");
    cr_assert(cJSON_IsArray(t));
    cr_assert_eq(cJSON_GetArraySize(t), 2);
    cr_assert_str_eq(cJSON_GetArrayItem(t, 0)->valuestring, "model");
    cr_assert_str_eq(cJSON_GetArrayItem(t, 1)->valuestring, "preview");
    cJSON_Delete(j);
}

Test(events_event_json, hostile_bytes_stay_valid_json)
{
    ev.kind = CBUS_EV_LLM_NEW_TOKEN;
    ev.u.token.index = 7;
    /* quote, backslash, newline, a control byte, a lone continuation byte
     * and a UTF-8 sequence cut by the preview limit */
    static const char hostile[] = "a\"b\\c\nd\001e\x80" "f\xc3";
    memcpy(ev.preview, hostile, sizeof hostile - 1);
    memcpy(ev.user, "\xe2\x82\xac", 3); /* a valid euro sign passes through */
    cJSON *j = render();
    cr_assert_str_eq(str(j, "preview"), "a\"b\\c\nd\001e\xef\xbf\xbd" "f\xef\xbf\xbd");
    cr_assert_str_eq(str(j, "user"), "\xe2\x82\xac");
    cr_assert_eq(num(j, "index"), 7);
    cJSON_Delete(j);
}

Test(events_event_json, parent_and_trace_only_with_their_flags)
{
    memset(ev.parent_run_id, 0xab, 16);
    memset(ev.trace_id, 0xcd, 16);
    cJSON *j = render();
    cr_assert(!has(j, "parent_run_id") && !has(j, "trace_id"));
    cJSON_Delete(j);
    ev.flags = CBUS_FLAG_HAS_PARENT | CBUS_FLAG_HAS_TRACE;
    j = render();
    cr_assert_str_eq(str(j, "parent_run_id"), "abababab-abab-abab-abab-abababababab");
    cr_assert_str_eq(str(j, "trace_id"), "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd");
    cJSON_Delete(j);
}

Test(events_event_json, unknown_kind_and_reason_render_as_numbers)
{
    ev.kind = 999;
    cJSON *j = render();
    cr_assert_str_eq(str(j, "kind"), "unknown");
    cr_assert_eq(num(j, "kind_code"), 999);
    cJSON_Delete(j);
    ev.kind = CBUS_EV_LLM_END;
    ev.u.usage.finish_reason = 200;
    j = render();
    cr_assert_eq(num(j, "finish_reason"), 200);
    cJSON_Delete(j);
}

Test(events_event_json, per_kind_numbers)
{
    ev.kind = CBUS_EV_RETRY;
    ev.u.retry.attempt = 3;
    ev.u.retry.backoff_ns = 2000000000;
    cJSON *j = render();
    cr_assert_eq(num(j, "attempt"), 3);
    cr_assert_eq(num(j, "backoff_ns"), 2e9);
    cJSON_Delete(j);

    memset(&ev.u, 0, sizeof ev.u);
    ev.kind = CBUS_EV_TOOL_ERROR;
    ev.u.error.http_status = 503;
    ev.u.error.duration_ns = 5000;
    strcpy(ev.name, "TimeoutError");
    j = render();
    cr_assert_eq(num(j, "http_status"), 503);
    cr_assert_eq(num(j, "duration_ns"), 5000);
    cr_assert_str_eq(str(j, "name"), "TimeoutError");
    cJSON_Delete(j);

    memset(&ev.u, 0, sizeof ev.u);
    ev.kind = CBUS_EV_RETRIEVER_END;
    ev.u.retriever.document_count = 0;
    j = render();
    cr_assert_eq(num(j, "document_count"), 0, "zero documents is a real count");
    cr_assert(!has(j, "duration_ns"));
    cJSON_Delete(j);

    memset(&ev.u, 0, sizeof ev.u);
    ev.kind = CBUS_EV_CHAT_MODEL_START;
    ev.u.llm_start.prompt_count = 4;
    ev.u.llm_start.max_tokens = 256;
    j = render();
    cr_assert_eq(num(j, "prompt_count"), 4);
    cr_assert_eq(num(j, "max_tokens"), 256);
    cr_assert(!has(j, "est_input_tokens"));
    cJSON_Delete(j);
}

/* ---- events v2 --------------------------------------------------------- */

static cJSON *render_body(const void *body, uint32_t len)
{
    struct cbus_body b = {body, len};
    sbuf_reset(&out);
    cbus_event_json(&out, &ev, &b);
    cr_assert(!out.failed);
    cJSON *j = cJSON_Parse(out.data);
    cr_assert(j, "not JSON: %s", out.data);
    return j;
}

static size_t add_section(uint8_t *buf, size_t at, unsigned type, const void *data, uint32_t len,
                          uint32_t orig_len, uint32_t dropped)
{
    struct cbus_body_section s = {(uint16_t)type, orig_len > len ? CBUS_BODY_SECTION_CUT : 0,
                                  len, orig_len, dropped};
    memcpy(buf + at, &s, sizeof s);
    memcpy(buf + at + sizeof s, data, len);
    return at + sizeof s + len;
}

/* Two 200-byte users that differ in the last byte show the same 39-byte
 * prefix; their whole-value hashes tell them apart.  An uncut key has no
 * hash entry; agent and tenant render like the other keys. */
Test(events_event_json, cut_keys_render_their_whole_value_hash)
{
    char a[200], b[200];
    memset(a, 'u', sizeof a);
    memcpy(b, a, sizeof b);
    b[199] = 'v';
    char ha[2][17];
    for (int i = 0; i < 2; i++) {
        memcpy(ev.user, a, sizeof ev.user - 1);
        ev.flags = CBUS_TRUNC_USER | CBUS_TRUNC_AGENT;
        ev.key_hash[CBUS_KEY_USER] = cbus_key_hash(i ? b : a, 200);
        strcpy(ev.agent, "planner-agent-with-a-lo");
        strcpy(ev.tenant, "team-a");
        cJSON *j = render();
        cr_assert_str_eq(str(j, "agent"), "planner-agent-with-a-lo");
        cr_assert_str_eq(str(j, "tenant"), "team-a");
        cr_assert_eq(strlen(str(j, "user")), 39);
        cr_assert(str(j, "user_hash"), "%s", out.data);
        snprintf(ha[i], sizeof ha[i], "%s", str(j, "user_hash"));
        cr_assert_eq(strlen(ha[i]), 16);
        cr_assert(str(j, "agent_hash"));
        cr_assert(!has(j, "tenant_hash"), "tenant was not cut: %s", out.data);
        cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "truncated");
        char *list = cJSON_PrintUnformatted(t);
        cr_assert(list && strstr(list, "\"agent\""), "%s", out.data);
        free(list);
        cJSON_Delete(j);
    }
    cr_assert_str_neq(ha[0], ha[1]);
    char want[17];
    snprintf(want, sizeof want, "%016llx", (unsigned long long)cbus_key_hash(b, 200));
    cr_assert_str_eq(ha[1], want);
}

Test(events_event_json, score_payload_by_type)
{
    ev.kind = CBUS_EV_SCORE;
    strcpy(ev.name, "fix_quality");
    ev.u.score.type = CBUS_SCORE_NUMERIC;
    ev.u.score.value = 0.875;
    cJSON *j = render();
    cr_assert_str_eq(str(j, "kind"), "score");
    cJSON *sc = cJSON_GetObjectItemCaseSensitive(j, "score");
    cr_assert_str_eq(str(sc, "type"), "numeric");
    cr_assert_eq(num(sc, "value"), 0.875);
    cJSON_Delete(j);

    ev.u.score.type = CBUS_SCORE_CATEGORICAL;
    strcpy(ev.preview, "partial");
    j = render();
    sc = cJSON_GetObjectItemCaseSensitive(j, "score");
    cr_assert_str_eq(str(sc, "type"), "categorical");
    cr_assert_str_eq(str(sc, "category"), "partial");
    cJSON_Delete(j);

    ev.u.score.type = CBUS_SCORE_BOOLEAN;
    ev.u.score.value = __builtin_nan(""); /* from shared memory: anything */
    j = render();
    sc = cJSON_GetObjectItemCaseSensitive(j, "score");
    cr_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(sc, "value")), "%s", out.data);
    cJSON_Delete(j);

    ev.kind = CBUS_EV_CHAT_MODEL_STREAM;
    j = render();
    cr_assert_str_eq(str(j, "kind"), "chat_model_stream");
    cr_assert(has(j, "index"));
    cJSON_Delete(j);
}

/* The body object: text whole (invalid UTF-8 as U+FFFD, a NUL as \u0000),
 * messages JSON as a string, tags, metadata, the cut and its original
 * length, dropped entries; a malformed section is said, not read past. */
Test(events_event_json, body_renders_every_section)
{
    static uint8_t body[16384];
    static char text[10000];
    memset(text, 'p', sizeof text);
    memcpy(text + 10, "\xff\x00\"q\"", 5);
    static const char msgs[] = "[{\"role\":\"user\",\"parts\":[{\"type\":\"text\",\"content\":\"hi\"}]}]";
    static const char tags[] = "prod\0team-a\0";
    static const char meta[] = "ls_provider\0openai\0cut-key";
    ev.kind = CBUS_EV_CHAT_MODEL_START;
    ev.flags = CBUS_FLAG_BODY | CBUS_FLAG_BODY_CUT;
    size_t len = add_section(body, 0, CBUS_BODY_TEXT, text, sizeof text, 70000, 0);
    len = add_section(body, len, CBUS_BODY_MESSAGES, msgs, sizeof msgs - 1, sizeof msgs - 1, 0);
    len = add_section(body, len, CBUS_BODY_TAGS, tags, sizeof tags - 1, sizeof tags - 1, 2);
    len = add_section(body, len, 99, "unknown", 7, 7, 0);
    len = add_section(body, len, CBUS_BODY_METADATA, meta, sizeof meta - 1, sizeof meta - 1, 0);
    ev.body_len = (uint32_t)len;
    cJSON *j = render_body(body, (uint32_t)len);
    cr_assert_eq(num(j, "body_len"), (double)len);
    cJSON *b = cJSON_GetObjectItemCaseSensitive(j, "body");
    cr_assert(cJSON_IsObject(b), "%s", out.data);
    const char *t = str(b, "text");
    cr_assert(t);
    cr_assert_eq(strlen(t), 10 + 3 /* U+FFFD */); /* cJSON's string stops at the \u0000 */
    cr_assert(strstr(out.data, "\\u0000\\\"q\\\""), "NUL and quotes escaped");
    cr_assert_str_eq(str(b, "messages"), msgs);
    cJSON *tg = cJSON_GetObjectItemCaseSensitive(b, "tags");
    cr_assert_eq(cJSON_GetArraySize(tg), 2);
    cr_assert_str_eq(cJSON_GetArrayItem(tg, 1)->valuestring, "team-a");
    cJSON *md = cJSON_GetObjectItemCaseSensitive(b, "metadata");
    cr_assert_str_eq(str(md, "ls_provider"), "openai");
    cr_assert_str_eq(str(md, "cut-key"), "");
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(b, "cut")));
    cr_assert_eq(num(cJSON_GetObjectItemCaseSensitive(b, "orig_len"), "text"), 70000);
    cr_assert_eq(num(cJSON_GetObjectItemCaseSensitive(b, "dropped"), "tags"), 2);
    cr_assert(!has(b, "malformed"));
    cr_assert_eq(num(b, "skipped_sections"), 1, "the section of type 99 is said, not shown");
    cJSON_Delete(j);

    /* The same body with its last section's length running past the end. */
    j = render_body(body, (uint32_t)len - 4);
    b = cJSON_GetObjectItemCaseSensitive(j, "body");
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(b, "malformed")), "%s", out.data);
    cr_assert(!has(b, "metadata"));
    cr_assert(has(b, "tags"));
    cJSON_Delete(j);

    /* No body given: no body object, whatever the flags say. */
    j = render();
    cr_assert(!has(j, "body"));
    cJSON_Delete(j);
}

/* Sections 5 and 6 (cbus_chat_model_start_system, cbus_llm_end_response)
 * render under the names cbus-export and the Python binding use, after the
 * four older ones; a cut system section gives its original length; sections
 * of types no reader knows yet (a newer producer's) and a type's second
 * section are counted in skipped_sections, and what follows them still
 * renders. */
Test(events_event_json, body_renders_system_and_response_id_and_counts_what_it_skips)
{
    static uint8_t body[4096];
    static const char sys[] = "[{\"type\":\"text\",\"content\":\"You are a \\\"tutor\\\".\"}]";
    static const char rid[] = "chatcmpl-AbC123";
    ev.kind = CBUS_EV_CHAT_MODEL_START;
    ev.flags = CBUS_FLAG_BODY;
    size_t len = add_section(body, 0, 7, "from a newer producer", 21, 21, 0);
    len = add_section(body, len, CBUS_BODY_SYSTEM, sys, sizeof sys - 1, sizeof sys - 1, 0);
    len = add_section(body, len, 0xffff, "", 0, 0, 0);
    len = add_section(body, len, CBUS_BODY_RESPONSE_ID, rid, sizeof rid - 1, sizeof rid - 1, 0);
    len = add_section(body, len, CBUS_BODY_SYSTEM, "second", 6, 6, 0);
    len = add_section(body, len, CBUS_BODY_TEXT, "the text", 8, 8, 0);
    ev.body_len = (uint32_t)len;
    cJSON *j = render_body(body, (uint32_t)len);
    cJSON *b = cJSON_GetObjectItemCaseSensitive(j, "body");
    cr_assert(cJSON_IsObject(b), "%s", out.data);
    cr_assert_str_eq(str(b, "system"), sys, "the first system section, whole");
    cr_assert_str_eq(str(b, "response_id"), rid);
    cr_assert_str_eq(str(b, "text"), "the text", "read on past the skipped ones");
    cr_assert_eq(num(b, "skipped_sections"), 3, "types 7 and 0xffff, the second system");
    cr_assert(!has(b, "cut") && !has(b, "malformed"), "%s", out.data);
    /* type order: text first, then system, then response_id */
    const char *t = strstr(out.data, "\"text\":"), *sy = strstr(out.data, "\"system\":"),
               *ri = strstr(out.data, "\"response_id\":");
    cr_assert(t && sy && ri && t < sy && sy < ri, "%s", out.data);
    cJSON_Delete(j);

    /* A system section cut at the body limit says so with its length. */
    len = add_section(body, 0, CBUS_BODY_SYSTEM, sys, 10, 5000, 0);
    ev.flags = CBUS_FLAG_BODY | CBUS_FLAG_BODY_CUT;
    ev.body_len = (uint32_t)len;
    j = render_body(body, (uint32_t)len);
    b = cJSON_GetObjectItemCaseSensitive(j, "body");
    cr_assert_eq(strlen(str(b, "system")), 10);
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(b, "cut")));
    cr_assert_eq(num(cJSON_GetObjectItemCaseSensitive(b, "orig_len"), "system"), 5000);
    cr_assert(!has(b, "skipped_sections"));
    cJSON_Delete(j);

    /* A body of only unknown sections still has a body object saying so. */
    len = add_section(body, 0, 42, "x", 1, 1, 0);
    ev.flags = CBUS_FLAG_BODY;
    ev.body_len = (uint32_t)len;
    j = render_body(body, (uint32_t)len);
    b = cJSON_GetObjectItemCaseSensitive(j, "body");
    cr_assert(cJSON_IsObject(b), "%s", out.data);
    cr_assert_eq(num(b, "skipped_sections"), 1);
    cr_assert_eq(cJSON_GetArraySize(b), 1, "%s", out.data);
    cJSON_Delete(j);
}
