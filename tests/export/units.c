/* Unit suites for cbus-export: span assembly and OTLP/JSON (decoded with
 * cJSON, not by the encoder), retry rules, config errors, the io_uring spool.
 * No bus, no network.
 *
 * Every export_otlp batch is encoded twice, as JSON and as protobuf, and
 * parse_batch() has tests/pb_equal.py (Google's protobuf runtime and its
 * JSON parser, the official OTLP messages) check that the two decode to the
 * same ExportTraceServiceRequest: each assertion below on the JSON holds for
 * the protobuf body too. */
#include <criterion/criterion.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cbus/cbus.h>

#include "content.h"
#include "export_config.h"
#include "otlp.h"
#include "retry.h"
#include "span.h"
#include "spool.h"

/* ---- helpers ---------------------------------------------------------------- */

static struct sbuf out, out_pb;
static int nspans;
static struct otlp_opts oopts;
static struct otlp_mark omark, omark_pb;

static struct otlp_opts pb_opts(void)
{
    struct otlp_opts o = oopts;
    o.encoding = OTLP_PROTOBUF;
    return o;
}

static void collect(const struct span *s, void *arg)
{
    (void)arg;
    otlp_span(&out, s, nspans == 0, &oopts);
    struct otlp_opts po = pb_opts();
    otlp_span(&out_pb, s, nspans == 0, &po);
    nspans++;
}

#define SYS_PY "/usr/bin/python3"
#ifndef CBUS_TEST_PYTHON_DEFAULT
#define CBUS_TEST_PYTHON_DEFAULT CBUS_SOURCE_DIR "/build/venv/bin/python"
#endif

/* The venv python that has protobuf and opentelemetry-proto, or NULL
 * (then the comparison is skipped, or fails under CBUS_TEST_STRICT=1). */
static const char *pb_python(void)
{
    const char *env = getenv("CBUS_TEST_PYTHON");
    const char *py = env && *env ? env : CBUS_TEST_PYTHON_DEFAULT;
    char cmd[700];
    snprintf(cmd, sizeof cmd, "'%s' -c 'import google.protobuf, opentelemetry.proto' 2>/dev/null", py);
    if (access(py, X_OK) == 0 && system(cmd) == 0)
        return py;
    const char *strict = getenv("CBUS_TEST_STRICT");
    cr_assert(!(strict && *strict == '1'),
              "CBUS_TEST_STRICT=1 but %s lacks protobuf/opentelemetry-proto: run scripts/venv.sh", py);
    cr_log_warn("no test venv at %s: the protobuf encoding is not checked", py);
    return NULL;
}

/* Has pb_equal.py decode both bodies and compare them; returns its exit code. */
static int pb_compare(const struct sbuf *json, const struct sbuf *pb, char *report, size_t rlen)
{
    const char *py = pb_python();
    if (!py)
        return 0;
    char jp[] = "/tmp/cbus-otlp-XXXXXX.json", pp[] = "/tmp/cbus-otlp-XXXXXX.pb";
    int jf = mkstemps(jp, 5), pf = mkstemps(pp, 3);
    cr_assert(jf >= 0 && pf >= 0);
    cr_assert_eq(write(jf, json->data, json->len), (ssize_t)json->len);
    cr_assert_eq(write(pf, pb->data, pb->len), (ssize_t)pb->len);
    close(jf);
    close(pf);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "'%s' " CBUS_SOURCE_DIR "/tests/export/pb_equal.py %s %s 2>&1", py, jp, pp);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t n = fread(report, 1, rlen - 1, p);
    report[n] = '\0';
    int st = pclose(p);
    unlink(jp);
    unlink(pp);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 99;
}

static struct span_table *table;

static void setup(void)
{
    sbuf_init(&out);
    sbuf_init(&out_pb);
    nspans = 0;
    memset(&oopts, 0, sizeof oopts);
    oopts.include_previews = 0;
    oopts.encoding = OTLP_JSON;
    struct otlp_resource r = {.service_name = "svc", .host_name = "h", .pid = 42, .bus_name = "b",
                              .bus_id = 7, .extra = "deployment.environment=test"};
    otlp_begin(&out, &r, &oopts, &omark);
    struct otlp_opts po = pb_opts();
    otlp_begin(&out_pb, &r, &po, &omark_pb);
    cr_assert_eq(span_table_new(&table, 1000, collect, NULL), 0);
}

static void teardown(void)
{
    span_table_free(table);
    sbuf_free(&out);
    sbuf_free(&out_pb);
}

static uint64_t pos;

static struct cbus_event ev(unsigned kind, uint8_t run, uint8_t parent, uint64_t t_ns)
{
    struct cbus_event e;
    memset(&e, 0, sizeof e);
    e.kind = (uint16_t)kind;
    e.event_id = pos++;
    e.ts_realtime_ns = 1700000000000000000ull + t_ns;
    e.ts_mono_ns = 1000000000ull + t_ns;
    e.pid = 10;
    e.tid = 11;
    e.run_id[15] = run;
    e.run_id[0] = 0xaa;
    if (parent) {
        e.parent_run_id[15] = parent;
        e.parent_run_id[0] = 0xaa;
        e.flags |= CBUS_FLAG_HAS_PARENT;
    }
    memset(e.trace_id, 0x11, 16);
    e.flags |= CBUS_FLAG_HAS_TRACE;
    return e;
}

static cJSON *parse_batch(void)
{
    otlp_end(&out, &oopts, &omark);
    struct otlp_opts po = pb_opts();
    otlp_end(&out_pb, &po, &omark_pb);
    cr_assert(!out.failed && !out_pb.failed);
    static char report[1 << 16];
    int r = pb_compare(&out, &out_pb, report, sizeof report);
    cr_assert_eq(r, 0, "protobuf and JSON encodings differ (pb_equal.py exit %d):\n%s", r, report);
    cJSON *root = cJSON_Parse(out.data);
    cr_assert_not_null(root, "not JSON: %.300s", out.data);
    return root;
}

static cJSON *spans_of(cJSON *root)
{
    cJSON *rs = cJSON_GetArrayItem(cJSON_GetObjectItem(root, "resourceSpans"), 0);
    cJSON *ss = cJSON_GetArrayItem(cJSON_GetObjectItem(rs, "scopeSpans"), 0);
    return cJSON_GetObjectItem(ss, "spans");
}

static cJSON *attr(cJSON *span, const char *key)
{
    cJSON *a;
    cJSON_ArrayForEach(a, cJSON_GetObjectItem(span, "attributes")) {
        if (!strcmp(cJSON_GetObjectItem(a, "key")->valuestring, key))
            return cJSON_GetObjectItem(a, "value");
    }
    return NULL;
}

static const char *attr_s(cJSON *span, const char *key)
{
    cJSON *v = attr(span, key);
    cJSON *s = v ? cJSON_GetObjectItem(v, "stringValue") : NULL;
    return s ? s->valuestring : NULL;
}

static const char *attr_i(cJSON *span, const char *key)
{
    cJSON *v = attr(span, key);
    cJSON *s = v ? cJSON_GetObjectItem(v, "intValue") : NULL;
    /* 64-bit integers are decimal strings in OTLP/JSON */
    return s && cJSON_IsString(s) ? s->valuestring : NULL;
}

static const char *str(cJSON *o, const char *key)
{
    cJSON *v = cJSON_GetObjectItem(o, key);
    return v && cJSON_IsString(v) ? v->valuestring : NULL;
}

static cJSON *find_span(cJSON *spans, const char *name)
{
    cJSON *s;
    cJSON_ArrayForEach(s, spans) {
        if (!strcmp(str(s, "name"), name))
            return s;
    }
    cr_assert_fail("no span named %s", name);
    return NULL;
}

static void hex8(char out8[17], const uint8_t id[8])
{
    for (int i = 0; i < 8; i++)
        sprintf(out8 + 2 * i, "%02x", id[i]);
}

/* ---- span assembly + OTLP ---------------------------------------------------- */

TestSuite(export_otlp, .init = setup, .fini = teardown);

Test(export_otlp, chat_span_has_genai_attributes_and_folds_tokens)
{
    struct cbus_event s = ev(CBUS_EV_CHAT_MODEL_START, 1, 9, 0);
    strcpy(s.model, "gpt-4o");
    strcpy(s.provider, "openai");
    strcpy(s.user, "alice");
    strcpy(s.session, "sess-1");
    s.u.llm_start.max_tokens = 256;
    span_table_feed(table, &s, 1);
    for (int i = 0; i < 5; i++) {
        struct cbus_event t = ev(CBUS_EV_LLM_NEW_TOKEN, 1, 9, 250000000ull + (uint64_t)i * 1000000);
        span_table_feed(table, &t, 2);
    }
    struct cbus_event e = ev(CBUS_EV_LLM_END, 1, 9, 2000000000ull);
    strcpy(e.model, "gpt-4o-2024-08-06");
    e.u.usage = (struct cbus_usage){.input_tokens = 1200, .output_tokens = 300, .cache_read_tokens = 1000,
                                    .reasoning_tokens = 100, .finish_reason = CBUS_FINISH_STOP,
                                    .usage_present = CBUS_USAGE_INPUT | CBUS_USAGE_OUTPUT |
                                                     CBUS_USAGE_CACHE_READ | CBUS_USAGE_REASONING};
    span_table_feed(table, &e, 3);
    cr_assert_eq(nspans, 1, "tokens are folded, not exported: one span");
    cJSON *root = parse_batch();
    cJSON *sp = cJSON_GetArrayItem(spans_of(root), 0);
    cr_assert_str_eq(str(sp, "name"), "chat gpt-4o");
    cr_assert_eq(cJSON_GetObjectItem(sp, "kind")->valueint, 3);
    cr_assert_str_eq(str(sp, "traceId"), "11111111111111111111111111111111");
    cr_assert_eq(strlen(str(sp, "spanId")), 16);
    uint8_t pid[8], run9[16] = {0xaa};
    run9[15] = 9;
    span_id_from_run(pid, run9);
    char phex[17];
    hex8(phex, pid);
    cr_assert_str_eq(str(sp, "parentSpanId"), phex, "parent link computed from parent_run_id");
    cr_assert_str_eq(str(sp, "startTimeUnixNano"), "1700000000000000000");
    cr_assert_str_eq(str(sp, "endTimeUnixNano"), "1700000002000000000");
    cr_assert_str_eq(attr_s(sp, "gen_ai.operation.name"), "chat");
    cr_assert_str_eq(attr_s(sp, "gen_ai.provider.name"), "openai");
    cr_assert_str_eq(attr_s(sp, "gen_ai.request.model"), "gpt-4o");
    cr_assert_str_eq(attr_s(sp, "gen_ai.response.model"), "gpt-4o-2024-08-06");
    cr_assert_str_eq(attr_i(sp, "gen_ai.usage.input_tokens"), "1200");
    cr_assert_str_eq(attr_i(sp, "gen_ai.usage.output_tokens"), "300");
    cr_assert_str_eq(attr_i(sp, "gen_ai.usage.cache_read.input_tokens"), "1000");
    cr_assert_str_eq(attr_i(sp, "gen_ai.usage.reasoning.output_tokens"), "100");
    cr_assert_null(attr(sp, "gen_ai.usage.cache_creation.input_tokens"), "absent is not zero");
    cr_assert_str_eq(attr_i(sp, "gen_ai.request.max_tokens"), "256");
    cr_assert_str_eq(attr_s(sp, "user.id"), "alice");
    cr_assert_str_eq(attr_s(sp, "session.id"), "sess-1");
    cr_assert_str_eq(attr_s(sp, "gen_ai.conversation.id"), "sess-1");
    cr_assert_str_eq(attr_i(sp, "cbus.stream.chunks"), "5");
    cJSON *ttft = cJSON_GetObjectItem(attr(sp, "gen_ai.response.time_to_first_chunk"), "doubleValue");
    cr_assert(ttft && ttft->valuedouble > 0.2499 && ttft->valuedouble < 0.2501);
    cJSON *fr = cJSON_GetObjectItem(cJSON_GetObjectItem(attr(sp, "gen_ai.response.finish_reasons"), "arrayValue"), "values");
    cr_assert_str_eq(str(cJSON_GetArrayItem(fr, 0), "stringValue"), "stop");
    cr_assert_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(sp, "status"), "code")->valueint, 1);
    /* resource */
    cJSON *res = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(root, "resourceSpans"), 0), "resource");
    cr_assert_str_eq(attr_s(res, "service.name"), "svc");
    cr_assert_str_eq(attr_s(res, "host.name"), "h");
    cr_assert_str_eq(attr_i(res, "process.pid"), "42");
    cr_assert_str_eq(attr_s(res, "deployment.environment"), "test");
    cJSON_Delete(root);
}

Test(export_otlp, error_tool_agent_and_points)
{
    struct cbus_event c = ev(CBUS_EV_CHAIN_START, 1, 0, 0);
    strcpy(c.name, "planner");
    span_table_feed(table, &c, 1);
    struct cbus_event a = ev(CBUS_EV_AGENT_ACTION, 1, 0, 10);
    strcpy(a.name, "search");
    span_table_feed(table, &a, 1);
    struct cbus_event t = ev(CBUS_EV_TOOL_START, 2, 1, 20);
    strcpy(t.name, "search");
    span_table_feed(table, &t, 1);
    struct cbus_event te = ev(CBUS_EV_TOOL_ERROR, 2, 1, 30);
    strcpy(te.name, "TimeoutError");
    strcpy(te.preview, "took \"too\" long");
    te.u.error.http_status = 504;
    span_table_feed(table, &te, 1);
    struct cbus_event ce = ev(CBUS_EV_CHAIN_END, 1, 0, 40);
    span_table_feed(table, &ce, 1);
    struct cbus_event orphan = ev(CBUS_EV_CUSTOM, 5, 0, 50);
    strcpy(orphan.name, "cache_hit");
    span_table_feed(table, &orphan, 1);
    cr_assert_eq(nspans, 3);
    cJSON *root = parse_batch();
    cJSON *spans = spans_of(root);
    cJSON *tool = find_span(spans, "execute_tool search");
    cr_assert_eq(cJSON_GetObjectItem(tool, "kind")->valueint, 1);
    cr_assert_str_eq(attr_s(tool, "gen_ai.tool.name"), "search");
    cr_assert_str_eq(attr_s(tool, "error.type"), "TimeoutError");
    cr_assert_str_eq(attr_i(tool, "http.response.status_code"), "504");
    cJSON *st = cJSON_GetObjectItem(tool, "status");
    cr_assert_eq(cJSON_GetObjectItem(st, "code")->valueint, 2);
    cr_assert_str_eq(str(st, "message"), "took \"too\" long");
    cJSON *agent = find_span(spans, "invoke_agent planner");
    cr_assert_str_eq(attr_s(agent, "gen_ai.operation.name"), "invoke_agent");
    cr_assert_str_eq(str(tool, "parentSpanId"), str(agent, "spanId"));
    cr_assert_null(cJSON_GetObjectItem(agent, "parentSpanId"), "a root span has no parent");
    cJSON *evs = cJSON_GetObjectItem(agent, "events");
    cr_assert_eq(cJSON_GetArraySize(evs), 1);
    cr_assert_str_eq(str(cJSON_GetArrayItem(evs, 0), "name"), "agent_action");
    cJSON *pt = find_span(spans, "custom cache_hit");
    cr_assert_null(cJSON_GetObjectItem(pt, "parentSpanId"),
                   "run 5 never started: a parent link would dangle, so there is none");
    cJSON_Delete(root);
}

/* GenAI conventions: "retrieval {data source}" CLIENT, "invoke_workflow
 * {name}" for a chain without agent events, gen_ai.request.stream when tokens
 * streamed, scores as gen_ai.evaluation.result events (or a score span when
 * their run is gone). */
Test(export_otlp, retrieval_workflow_stream_and_scores)
{
    struct cbus_event c = ev(CBUS_EV_CHAIN_START, 1, 0, 0);
    strcpy(c.name, "RetrievalQA");
    span_table_feed(table, &c, 1);
    struct cbus_event r = ev(CBUS_EV_RETRIEVER_START, 2, 1, 10);
    strcpy(r.name, "docs-index");
    span_table_feed(table, &r, 1);
    struct cbus_event re = ev(CBUS_EV_RETRIEVER_END, 2, 1, 20);
    re.u.retriever.document_count = 4;
    span_table_feed(table, &re, 1);
    struct cbus_event l = ev(CBUS_EV_CHAT_MODEL_START, 3, 1, 30);
    strcpy(l.model, "m");
    span_table_feed(table, &l, 1);
    struct cbus_event tok = ev(CBUS_EV_LLM_NEW_TOKEN, 3, 1, 35);
    span_table_feed(table, &tok, 1);
    struct cbus_event le = ev(CBUS_EV_LLM_END, 3, 1, 40);
    span_table_feed(table, &le, 1);
    /* a non-streamed call says nothing about streaming */
    struct cbus_event l2 = ev(CBUS_EV_CHAT_MODEL_START, 4, 1, 42);
    strcpy(l2.model, "quiet");
    span_table_feed(table, &l2, 1);
    struct cbus_event l2e = ev(CBUS_EV_LLM_END, 4, 1, 43);
    span_table_feed(table, &l2e, 1);
    /* three scores on the open chain: numeric, boolean, categorical */
    struct cbus_event sn = ev(CBUS_EV_SCORE, 1, 0, 45);
    strcpy(sn.name, "helpfulness");
    sn.u.score.type = CBUS_SCORE_NUMERIC;
    sn.u.score.value = 0.8125;
    span_table_feed(table, &sn, 1);
    struct cbus_event sb = ev(CBUS_EV_SCORE, 1, 0, 46);
    strcpy(sb.name, "correct");
    sb.u.score.type = CBUS_SCORE_BOOLEAN;
    sb.u.score.value = 1;
    span_table_feed(table, &sb, 1);
    struct cbus_event sc = ev(CBUS_EV_SCORE, 1, 0, 47);
    strcpy(sc.name, "tone");
    sc.u.score.type = CBUS_SCORE_CATEGORICAL;
    strcpy(sc.preview, "polite");
    span_table_feed(table, &sc, 1);
    struct cbus_event ce = ev(CBUS_EV_CHAIN_END, 1, 0, 50);
    span_table_feed(table, &ce, 1);
    /* a score of a run never seen: its own span */
    struct cbus_event so = ev(CBUS_EV_SCORE, 9, 0, 60);
    strcpy(so.name, "latency_ok");
    so.u.score.type = CBUS_SCORE_NUMERIC;
    so.u.score.value = 3;
    span_table_feed(table, &so, 1);
    cr_assert_eq(nspans, 5);
    cJSON *root = parse_batch();
    cJSON *spans = spans_of(root);
    cJSON *ret = find_span(spans, "retrieval docs-index");
    cr_assert_eq(cJSON_GetObjectItem(ret, "kind")->valueint, 3, "retrieval is CLIENT");
    cr_assert_str_eq(attr_s(ret, "gen_ai.operation.name"), "retrieval");
    cr_assert_str_eq(attr_s(ret, "gen_ai.data_source.id"), "docs-index");
    cr_assert_str_eq(attr_i(ret, "cbus.retriever.document_count"), "4");
    cJSON *wf = find_span(spans, "invoke_workflow RetrievalQA");
    cr_assert_eq(cJSON_GetObjectItem(wf, "kind")->valueint, 1);
    cr_assert_str_eq(attr_s(wf, "gen_ai.operation.name"), "invoke_workflow");
    cr_assert_str_eq(attr_s(wf, "gen_ai.workflow.name"), "RetrievalQA");
    cr_assert_null(attr(wf, "cbus.name"));
    cJSON *chat = find_span(spans, "chat m");
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(attr(chat, "gen_ai.request.stream"), "boolValue")));
    cr_assert_null(attr(find_span(spans, "chat quiet"), "gen_ai.request.stream"), "unknown, not false");
    cJSON *evs = cJSON_GetObjectItem(wf, "events");
    cr_assert_eq(cJSON_GetArraySize(evs), 3);
    cJSON *e0 = cJSON_GetArrayItem(evs, 0), *e1 = cJSON_GetArrayItem(evs, 1), *e2 = cJSON_GetArrayItem(evs, 2);
    cr_assert_str_eq(str(e0, "name"), "gen_ai.evaluation.result");
    cr_assert_str_eq(attr_s(e0, "gen_ai.evaluation.name"), "helpfulness");
    cr_assert_float_eq(cJSON_GetObjectItem(attr(e0, "gen_ai.evaluation.score.value"), "doubleValue")->valuedouble,
                       0.8125, 0);
    cr_assert_null(attr(e0, "gen_ai.evaluation.score.label"));
    cr_assert_str_eq(attr_s(e1, "gen_ai.evaluation.name"), "correct");
    cr_assert_str_eq(attr_s(e1, "gen_ai.evaluation.score.label"), "true");
    cr_assert_float_eq(cJSON_GetObjectItem(attr(e1, "gen_ai.evaluation.score.value"), "doubleValue")->valuedouble,
                       1.0, 0);
    cr_assert_str_eq(attr_s(e2, "gen_ai.evaluation.score.label"), "polite");
    cr_assert_null(attr(e2, "gen_ai.evaluation.score.value"), "a category has no value");
    cJSON *own = find_span(spans, "score latency_ok");
    cr_assert_str_eq(attr_s(own, "gen_ai.evaluation.name"), "latency_ok");
    cr_assert_float_eq(cJSON_GetObjectItem(attr(own, "gen_ai.evaluation.score.value"), "doubleValue")->valuedouble,
                       3.0, 0);
    cJSON_Delete(root);
}

Test(export_otlp, point_event_after_its_run_hangs_under_the_exported_span)
{
    /* a retry after llm_error: the run is closed and was exported */
    struct cbus_event s = ev(CBUS_EV_CHAT_MODEL_START, 3, 0, 0);
    span_table_feed(table, &s, 1);
    struct cbus_event e = ev(CBUS_EV_LLM_ERROR, 3, 0, 10);
    span_table_feed(table, &e, 1);
    struct cbus_event r = ev(CBUS_EV_RETRY, 3, 0, 20);
    r.u.retry.attempt = 1;
    span_table_feed(table, &r, 1);
    /* a point event whose parent run ended: hangs under the parent */
    struct cbus_event c = ev(CBUS_EV_CHAIN_START, 4, 0, 30);
    span_table_feed(table, &c, 1);
    struct cbus_event ce = ev(CBUS_EV_CHAIN_END, 4, 0, 40);
    span_table_feed(table, &ce, 1);
    struct cbus_event t = ev(CBUS_EV_TEXT, 6, 4, 50);
    span_table_feed(table, &t, 1);
    cr_assert_eq(nspans, 4);
    cJSON *root = parse_batch();
    cJSON *spans = spans_of(root);
    cJSON *chat = cJSON_GetArrayItem(spans, 0), *retry = cJSON_GetArrayItem(spans, 1);
    cJSON *chain = cJSON_GetArrayItem(spans, 2), *text = cJSON_GetArrayItem(spans, 3);
    cr_assert_str_eq(str(retry, "parentSpanId"), str(chat, "spanId"));
    cr_assert_str_eq(str(text, "parentSpanId"), str(chain, "spanId"));
    cJSON_Delete(root);
}

Test(export_otlp, integers_above_int64_max_are_never_an_int_value)
{
    /* an event folded into an open run carries the retry numbers */
    struct cbus_event s = ev(CBUS_EV_TOOL_START, 1, 0, 0);
    span_table_feed(table, &s, 1);
    struct cbus_event r = ev(CBUS_EV_RETRY, 1, 0, 10);
    r.u.retry.attempt = 1;
    r.u.retry.backoff_ns = UINT64_C(16360377253861318754);
    span_table_feed(table, &r, 1);
    struct cbus_event r2 = ev(CBUS_EV_RETRY, 1, 0, 20);
    r2.u.retry.backoff_ns = (uint64_t)INT64_MAX;
    span_table_feed(table, &r2, 1);
    struct cbus_event e = ev(CBUS_EV_TOOL_END, 1, 0, 30);
    span_table_feed(table, &e, 1);
    cr_assert_eq(nspans, 1);
    cr_assert(strstr(out.data, "\"cbus.retry.backoff_ns\",\"value\":{\"stringValue\":\"16360377253861318754\"}"),
              "%s", out.data);
    cr_assert(strstr(out.data, "\"cbus.retry.backoff_ns\",\"value\":{\"intValue\":\"9223372036854775807\"}"),
              "INT64_MAX itself is still an intValue: %s", out.data);
    /* the resource's bus id (7 here) is 16 hex digits, not a number */
    cr_assert(strstr(out.data, "{\"key\":\"cbus.bus.id\",\"value\":{\"stringValue\":\"0000000000000007\"}}"),
              "%s", out.data);
    cJSON *root = parse_batch();
    cJSON_Delete(root);
}

Test(export_otlp, unfinished_and_start_missing)
{
    struct cbus_event s = ev(CBUS_EV_LLM_START, 1, 0, 0);
    strcpy(s.model, "m");
    span_table_feed(table, &s, 100);
    struct cbus_event s2 = ev(CBUS_EV_RETRIEVER_START, 2, 0, 0);
    span_table_feed(table, &s2, 500);
    cr_assert_eq(span_table_min_pos(table), s.event_id);
    cr_assert_eq(span_table_expire(table, 200, NULL), 1, "only the run older than the timeout");
    cr_assert_eq(span_table_min_pos(table), s2.event_id);
    struct cbus_event e = ev(CBUS_EV_LLM_END, 1, 0, 3000000000ull);
    e.u.usage.duration_ns = 3000000000ull;
    e.u.usage.usage_present = CBUS_USAGE_DURATION;
    span_table_feed(table, &e, 600);
    cr_assert_eq(span_table_flush(table), 1);
    cr_assert_eq(span_table_min_pos(table), UINT64_MAX);
    cJSON *root = parse_batch();
    cJSON *spans = spans_of(root);
    cr_assert_eq(cJSON_GetArraySize(spans), 3);
    cJSON *u = cJSON_GetArrayItem(spans, 0);
    cr_assert_eq(cJSON_GetObjectItem(u, "kind")->valueint, 3);
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(attr(u, "cbus.run.unfinished"), "boolValue")));
    cr_assert_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(u, "status"), "code")->valueint, 0);
    cJSON *m = cJSON_GetArrayItem(spans, 1);
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(attr(m, "cbus.run.start_missing"), "boolValue")));
    cr_assert_str_eq(str(m, "spanId"), str(u, "spanId"), "same run, same span id: receivers can replace");
    cr_assert_str_eq(str(m, "startTimeUnixNano"), "1700000000000000000", "start = end - duration");
    cJSON_Delete(root);
}

/* What the last span handed to collect() held, per lane. */
static uint64_t held[CBUS_MAX_LANES];

static void collect_holds(const struct span *s, void *arg)
{
    (void)arg;
    for (unsigned L = 0; L < CBUS_MAX_LANES; L++)
        held[L] = UINT64_MAX;
    for (const struct span_hold *h = &s->hold; h; h = h->more)
        held[h->lane] = h->lp;
    nspans++;
}

/* An event of a four-lane bus: lane position lp in lane L. */
static struct cbus_event ev4(unsigned kind, uint8_t run, uint64_t lp, unsigned L)
{
    struct cbus_event e = ev(kind, run, 0, lp);
    e.event_id = lp * 4 + L;
    return e;
}

/* On a bus of lanes, what a lossless exporter may not acknowledge is per
 * lane: an open run holds the lane of its start and of every event folded
 * in from another thread's lane (tokens here), each lane's lowest held
 * position is its list head, a finished span hands all its lanes to the
 * batch, and the hold limit expires runs per lane. */
Test(export_otlp, open_runs_hold_every_lane_they_have_events_in)
{
    span_table_free(table);
    cr_assert_eq(span_table_new(&table, 1000, collect_holds, NULL), 0);
    span_table_set_lanes(table, 4);
    uint64_t m[4];
    struct cbus_event a = ev4(CBUS_EV_CHAT_MODEL_START, 1, 10, 0);
    span_table_feed(table, &a, 1);
    struct cbus_event tok = ev4(CBUS_EV_LLM_NEW_TOKEN, 1, 3, 2); /* another thread's lane */
    span_table_feed(table, &tok, 1);
    struct cbus_event tok2 = ev4(CBUS_EV_LLM_NEW_TOKEN, 1, 4, 2);
    span_table_feed(table, &tok2, 1);
    struct cbus_event b = ev4(CBUS_EV_TOOL_START, 2, 5, 2);
    span_table_feed(table, &b, 1);
    struct cbus_event c = ev4(CBUS_EV_TOOL_START, 3, 7, 1);
    span_table_feed(table, &c, 1);
    span_table_min_lanes(table, m);
    cr_assert_eq(m[0], 10);
    cr_assert_eq(m[1], 7);
    cr_assert_eq(m[2], 3, "run 1's token holds lane 2 below run 2's start");
    cr_assert_eq(m[3], UINT64_MAX);
    cr_assert_eq(span_table_min_pos(table), 3 * 4 + 2);

    /* run 1 ends in lane 3: the span carries lanes 0, 2 and 3 to its batch */
    struct cbus_event e = ev4(CBUS_EV_LLM_END, 1, 8, 3);
    span_table_feed(table, &e, 1);
    cr_assert_eq(nspans, 1);
    cr_assert_eq(held[0], 10);
    cr_assert_eq(held[1], UINT64_MAX);
    cr_assert_eq(held[2], 3, "the first token's position, not the second's");
    cr_assert_eq(held[3], 8, "its end, from a lane it held nothing in before");
    span_table_min_lanes(table, m);
    cr_assert_eq(m[0], UINT64_MAX);
    cr_assert_eq(m[2], 5, "lane 2 is held by run 2 now");
    cr_assert_eq(m[3], UINT64_MAX, "a leaving span's hold is not left behind");

    /* the hold limit, per lane: lane 1 below 8 expires run 3 only */
    uint64_t hold[4] = {0, 8, 0, 0};
    cr_assert_eq(span_table_expire(table, 0, hold), 1);
    span_table_min_lanes(table, m);
    cr_assert_eq(m[1], UINT64_MAX);
    cr_assert_eq(m[2], 5);
    cr_assert_eq(span_table_flush(table), 1);
    span_table_min_lanes(table, m);
    for (unsigned L = 0; L < 4; L++)
        cr_assert_eq(m[L], UINT64_MAX);
}

Test(export_otlp, bad_utf8_and_quotes_stay_valid_json)
{
    oopts.include_previews = 1;
    struct cbus_event s = ev(CBUS_EV_LLM_START, 1, 0, 0);
    memcpy(s.model, "we\"ird\\m\x01odel\xe2\x82", 14); /* cut multibyte at the end */
    memset(s.preview, 'x', sizeof s.preview);            /* no NUL at all */
    span_table_feed(table, &s, 1);
    span_table_flush(table);
    cJSON *root = parse_batch();
    cJSON *sp = cJSON_GetArrayItem(spans_of(root), 0);
    cr_assert_str_eq(attr_s(sp, "gen_ai.request.model"), "we\"ird\\m\x01odel\xef\xbf\xbd");
    cr_assert_eq(strlen(attr_s(sp, "cbus.input.preview")), CBUS_PREVIEW_LEN);
    cJSON_Delete(root);
}

Test(export_otlp, ids_are_deterministic_and_nonzero)
{
    uint8_t zero[16] = {0}, a[8], b[8], t1[16], t2[16];
    span_id_from_run(a, zero);
    span_id_from_run(b, zero);
    cr_assert_eq(memcmp(a, b, 8), 0);
    static const uint8_t z8[8];
    cr_assert_neq(memcmp(a, z8, 8), 0);
    trace_id_derive(t1, zero);
    trace_id_derive(t2, zero);
    cr_assert_eq(memcmp(t1, t2, 16), 0);
    uint8_t r1[16] = {1}, r2[16] = {2};
    span_id_from_run(a, r1);
    span_id_from_run(b, r2);
    cr_assert_neq(memcmp(a, b, 8), 0);
}

Test(export_otlp, numbers_as_decimal_strings)
{
    struct sbuf b;
    sbuf_init(&b);
    otlp_put_u64(&b, 0);
    sbuf_puts(&b, ",");
    otlp_put_u64(&b, UINT64_MAX);
    cr_assert_str_eq(b.data, "0,18446744073709551615");
    sbuf_free(&b);
}

/* ---- retry rules ---------------------------------------------------------------- */

Test(export_retry, classify_statuses)
{
    cr_assert_eq(retry_classify(200, 0), SEND_OK);
    cr_assert_eq(retry_classify(204, 0), SEND_OK);
    cr_assert_eq(retry_classify(429, 0), SEND_RETRY);
    cr_assert_eq(retry_classify(502, 0), SEND_RETRY);
    cr_assert_eq(retry_classify(503, 0), SEND_RETRY);
    cr_assert_eq(retry_classify(504, 0), SEND_RETRY);
    cr_assert_eq(retry_classify(400, 0), SEND_REJECT);
    cr_assert_eq(retry_classify(401, 0), SEND_REJECT);
    cr_assert_eq(retry_classify(413, 0), SEND_REJECT);
    cr_assert_eq(retry_classify(500, 0), SEND_REJECT);
    cr_assert_eq(retry_classify(0, 7 /* CURLE_COULDNT_CONNECT */), SEND_RETRY);
    cr_assert_eq(retry_classify(0, 52 /* CURLE_GOT_NOTHING */), SEND_RETRY);
    cr_assert_eq(retry_classify(0, 56 /* CURLE_RECV_ERROR */), SEND_RETRY);
    cr_assert_eq(retry_classify(0, 60 /* CURLE_PEER_FAILED_VERIFICATION */), SEND_REJECT);
}

Test(export_retry, retry_after_seconds_and_dates)
{
    uint64_t ns = 0;
    cr_assert_eq(retry_after_parse(" 3", 0, &ns), 0);
    cr_assert_eq(ns, 3000000000ull);
    /* Sun, 06 Nov 1994 08:49:37 GMT = 784111777 */
    cr_assert_eq(retry_after_parse("Sun, 06 Nov 1994 08:49:37 GMT", 784111770, &ns), 0);
    cr_assert_eq(ns, 7000000000ull);
    cr_assert_eq(retry_after_parse("Sun, 06 Nov 1994 08:49:37 GMT", 784111790, &ns), 0);
    cr_assert_eq(ns, 0, "a date in the past means now");
    cr_assert_eq(retry_after_parse("soon", 0, &ns), -EINVAL);
    cr_assert_eq(retry_after_parse("5s", 0, &ns), -EINVAL);
}

Test(export_retry, backoff_grows_with_jitter_and_caps)
{
    for (uint64_t r = 0; r < 1000; r += 7) {
        uint64_t d0 = retry_backoff_ns(0, 100, 10000, r * 2654435761u);
        cr_assert(d0 >= 50 && d0 <= 100);
        uint64_t d3 = retry_backoff_ns(3, 100, 10000, r * 2654435761u);
        cr_assert(d3 >= 400 && d3 <= 800);
        uint64_t d20 = retry_backoff_ns(20, 100, 10000, r * 2654435761u);
        cr_assert(d20 >= 5000 && d20 <= 10000);
    }
}

Test(export_retry, partial_success)
{
    uint64_t n;
    char msg[64];
    const char *a = "{\"partialSuccess\":{\"rejectedSpans\":\"3\",\"errorMessage\":\"bad span\"}}";
    cr_assert_eq(retry_partial_success(a, strlen(a), &n, msg, sizeof msg), 1);
    cr_assert_eq(n, 3);
    cr_assert_str_eq(msg, "bad span");
    const char *b = "{\"partialSuccess\":{}}";
    cr_assert_eq(retry_partial_success(b, strlen(b), &n, msg, sizeof msg), 0, "empty = full success");
    cr_assert_eq(retry_partial_success("{}", 2, &n, msg, sizeof msg), 0);
    cr_assert_eq(retry_partial_success("garbage", 7, &n, msg, sizeof msg), 0);
}

/* ExportTraceServiceResponse {partial_success = 1 {rejected_spans = 1,
 * error_message = 2}} on the wire; the expected bytes were checked against
 * python protobuf (ExportTraceServiceResponse(partial_success={...})
 * .SerializeToString()). */
Test(export_retry, partial_success_protobuf)
{
    uint64_t n;
    char msg[64];
    static const uint8_t a[] = {0x0a, 0x0c, 0x08, 0x03, 0x12, 0x08, 'b', 'a', 'd', ' ', 's', 'p', 'a', 'n'};
    cr_assert_eq(retry_partial_success_pb(a, sizeof a, &n, msg, sizeof msg), 1);
    cr_assert_eq(n, 3);
    cr_assert_str_eq(msg, "bad span");
    /* a count of 300 (two-byte varint), an unknown field before it (field 7
     * fixed32), the message with a newline that must not reach the log raw */
    static const uint8_t b[] = {0x3d, 1, 2, 3, 4, 0x0a, 0x08, 0x08, 0xac, 0x02, 0x12, 0x03, 'a', '\n', 'b'};
    cr_assert_eq(retry_partial_success_pb(b, sizeof b, &n, msg, sizeof msg), 1);
    cr_assert_eq(n, 300);
    cr_assert_str_eq(msg, "a b");
    static const uint8_t empty_ps[] = {0x0a, 0x00};
    cr_assert_eq(retry_partial_success_pb(empty_ps, sizeof empty_ps, &n, msg, sizeof msg), 0, "empty = full success");
    cr_assert_eq(retry_partial_success_pb("", 0, &n, msg, sizeof msg), 0, "an empty answer is full success");
    /* negative rejected_spans (int64 -1: ten bytes) and no message: nothing rejected */
    static const uint8_t neg[] = {0x0a, 0x0b, 0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    cr_assert_eq(retry_partial_success_pb(neg, sizeof neg, &n, msg, sizeof msg), 0);
    cr_assert_eq(n, 0);
    /* lengths past the end (a cut answer), a varint that never ends, a group */
    static const uint8_t cut[] = {0x0a, 0x0c, 0x08, 0x03, 0x12, 0x08, 'b', 'a'};
    cr_assert_eq(retry_partial_success_pb(cut, sizeof cut, &n, msg, sizeof msg), 0);
    static const uint8_t inner_cut[] = {0x0a, 0x04, 0x08, 0x03, 0x12, 0x08};
    cr_assert_eq(retry_partial_success_pb(inner_cut, sizeof inner_cut, &n, msg, sizeof msg), 0);
    static const uint8_t endless[] = {0x0a, 0x03, 0x08, 0x80, 0x80};
    cr_assert_eq(retry_partial_success_pb(endless, sizeof endless, &n, msg, sizeof msg), 0);
    static const uint8_t huge[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f};
    cr_assert_eq(retry_partial_success_pb(huge, sizeof huge, &n, msg, sizeof msg), 0);
    static const uint8_t group[] = {0x0b, 0x0c};
    cr_assert_eq(retry_partial_success_pb(group, sizeof group, &n, msg, sizeof msg), 0);
    /* a JSON answer is not protobuf */
    const char *j = "{\"partialSuccess\":{\"rejectedSpans\":\"3\"}}";
    cr_assert_eq(retry_partial_success_pb(j, strlen(j), &n, msg, sizeof msg), 0);
}

/* ---- config ------------------------------------------------------------------- */

static char tmpdir[64];

static void mk_tmp(void)
{
    strcpy(tmpdir, "/tmp/cbus-export-unit-XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
}

static void rm_tmp(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    cr_assert_eq(system(cmd), 0);
}

static int load_text(struct export_config *c, const char *text, char *err, size_t errlen)
{
    char path[128];
    snprintf(path, sizeof path, "%s/x.ini", tmpdir);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    export_config_defaults(c);
    int r = export_config_load(c, path, err, errlen);
    if (!r)
        r = export_config_finish(c, err, errlen);
    return r;
}

TestSuite(export_config, .init = mk_tmp, .fini = rm_tmp);

Test(export_config, shipped_default_config_is_valid)
{
    struct export_config c;
    char err[256] = "";
    export_config_defaults(&c);
    int r = export_config_load(&c, CBUS_BINARY_DIR "/consumers/export/export.ini", err, sizeof err);
    cr_assert_eq(r, 0, "%s", err);
    cr_assert_eq(export_config_finish(&c, err, sizeof err), 0, "%s", err);
    cr_assert_str_eq(c.url, "http://127.0.0.1:4318/v1/traces");
    export_config_free(&c);
}

Test(export_config, errors_name_file_line_and_key)
{
    struct export_config c;
    char err[256];
    cr_assert_eq(load_text(&c, "[export]\nformat = otlp\nbatch_max_items = lots\n", err, sizeof err), -EINVAL);
    cr_assert(strstr(err, "x.ini:3: [export] batch_max_items:"), "%s", err);
    cr_assert_eq(load_text(&c, "[export]\nendpont = http://x\n", err, sizeof err), -EINVAL);
    cr_assert(strstr(err, ":2: [export] endpont: unknown setting"), "%s", err);
    cr_assert_eq(load_text(&c, "[export]\nendpoint = ftp://x\n", err, sizeof err), -EINVAL);
    cr_assert_eq(load_text(&c, "[headers]\nAuthorization = Bearer sekrit\n", err, sizeof err), -EINVAL);
    cr_assert(strstr(err, "secrets do not belong"), "%s", err);
    cr_assert_null(strstr(err, "sekrit"), "the secret is not echoed");
    cr_assert_eq(load_text(&c, "[auth]\nbasic_user_env = LANGFUSE_PUBLIC_KEY\n", err, sizeof err), -EINVAL);
    cr_assert_eq(load_text(&c, "[bus]\nmode = sometimes\n", err, sizeof err), -EINVAL);
    cr_assert(strstr(err, "lossy, lossless"), "%s", err);
}

Test(export_config, endpoint_paths)
{
    struct export_config c;
    char err[256];
    cr_assert_eq(load_text(&c, "[export]\nendpoint = https://cloud.langfuse.com/api/public/otel/\n", err, sizeof err), 0, "%s", err);
    cr_assert_str_eq(c.url, "https://cloud.langfuse.com/api/public/otel/v1/traces");
    cr_assert_eq(load_text(&c, "[export]\nendpoint = http://h:4318/v1/traces\n", err, sizeof err), 0);
    cr_assert_str_eq(c.url, "http://h:4318/v1/traces");
    cr_assert_eq(load_text(&c, "[export]\nformat = msgpack\nendpoint = http://h/ingest\n[headers]\nX-Tenant = a b\n", err, sizeof err), 0);
    cr_assert_str_eq(c.url, "http://h/ingest");
    cr_assert_eq(c.n_headers, 1);
    cr_assert_str_eq(c.headers[0], "X-Tenant: a b");
    export_config_free(&c);
}

Test(export_config, langfuse_profile)
{
    struct export_config c;
    char err[256];
    cr_assert_eq(load_text(&c, "[langfuse]\nhost = https://cloud.langfuse.com/\n", err, sizeof err), 0, "%s", err);
    cr_assert_str_eq(c.url, "https://cloud.langfuse.com/api/public/otel/v1/traces");
    cr_assert_str_eq(c.basic_user_env, "LANGFUSE_PUBLIC_KEY");
    cr_assert_str_eq(c.basic_password_env, "LANGFUSE_SECRET_KEY");
    cr_assert_eq(c.n_headers, 1);
    cr_assert_str_eq(c.headers[0], "x-langfuse-ingestion-version: 4");
    cr_assert(c.langfuse);
    cr_assert_eq(c.otlp_encoding, OTLP_PROTOBUF);
    export_config_free(&c);
    cr_assert_eq(load_text(&c, "[export]\nformat = msgpack\n[langfuse]\nhost = http://h\n", err, sizeof err), -EINVAL);
    cr_assert(strstr(err, "format = otlp"), "%s", err);
    export_config_free(&c);
    cr_assert_eq(load_text(&c, "[langfuse]\nhost = h\n", err, sizeof err), -EINVAL);
    export_config_free(&c);
    cr_assert_eq(load_text(&c, "[langfuse]\nhost = http://h\npublic_key_env = pk-lf-1234\n", err, sizeof err), -EINVAL,
                 "a key where its variable's name goes");
    export_config_free(&c);
}

/* ---- spool ------------------------------------------------------------------- */

TestSuite(export_spool, .init = mk_tmp, .fini = rm_tmp);

static struct batch *mk_batch(const char *body, uint64_t at)
{
    struct batch *b = calloc(1, sizeof *b);
    sbuf_init(&b->body);
    sbuf_puts(&b->body, body);
    b->items = (uint32_t)strlen(body);
    b->min_pos = b->max_pos = at;
    return b;
}

Test(export_spool, survives_reopen_in_order)
{
    struct spool *s;
    char err[256];
    cr_assert_eq(spool_open(&s, tmpdir, 1 << 20, err, sizeof err), 0, "%s", err);
    int ar = spool_append(s, mk_batch("first", 10));
    cr_assert_eq(ar, 0, "%s", strerror(-ar));
    cr_assert_eq(spool_append(s, mk_batch("second", 20)), 0);
    cr_assert_eq(spool_append(s, mk_batch("third", 30)), 0);
    cr_assert_eq(spool_min_volatile_pos(s), UINT64_MAX, "on disk = durable, holds nothing");
    cr_assert_eq(spool_bytes(s), 16);
    spool_remove(s, spool_head(s));
    spool_close(s);
    cr_assert_eq(spool_open(&s, tmpdir, 1 << 20, err, sizeof err), 0, "%s", err);
    cr_assert_eq(spool_count(s), 2);
    cr_assert_eq(spool_stats(s)->recovered, 2);
    struct batch *h = spool_head(s);
    cr_assert_eq(spool_load(s, h), 0);
    cr_assert_str_eq(h->body.data, "second");
    cr_assert_eq(h->items, 6);
    cr_assert_eq(spool_load(s, h->next), 0);
    cr_assert_str_eq(h->next->body.data, "third");
    /* appends continue after the recovered sequence */
    cr_assert_eq(spool_append(s, mk_batch("fourth", 40)), 0);
    cr_assert(spool_head(s)->next->next->seq > spool_head(s)->next->seq);
    spool_close(s);
}

static volatile sig_atomic_t alarms;
static void on_alarm(int sig)
{
    (void)sig;
    alarms++;
}

Test(export_spool, signals_during_io_never_mix_up_completions, .timeout = 120)
{
    /* A signal makes io_uring_enter return -EINTR.  The spool once returned
     * then with completions still in the ring, and the next operation took
     * one of them as its own (a close's 0 as a new file's descriptor): under
     * the soak's SIGSTOP/SIGCONT the exporter wrote batches to the wrong
     * file ("Bad file descriptor", batches "damaged") and crashed.  Here a
     * timer interrupts the spool's waits thousands of times (no SA_RESTART)
     * while every batch must come back whole and in order. */
    struct sigaction sa = {.sa_handler = on_alarm}, old;
    sigemptyset(&sa.sa_mask);
    cr_assert_eq(sigaction(SIGALRM, &sa, &old), 0);
    struct spool *s;
    char err[256];
    cr_assert_eq(spool_open(&s, tmpdir, 1 << 24, err, sizeof err), 0, "%s", err);
    struct itimerval it = {{0, 50}, {0, 50}};
    cr_assert_eq(setitimer(ITIMER_REAL, &it, NULL), 0);
    char body[64];
    unsigned i, next_read = 0;
    for (i = 0; i < 4000 && (i < 300 || alarms < 2000); i++) {
        snprintf(body, sizeof body, "batch %u", i);
        int ar = spool_append(s, mk_batch(body, i + 1));
        cr_assert_eq(ar, 0, "append %u: %s", i, strerror(-ar));
        if (i % 3 == 2) { /* keep a few on disk, read back the oldest */
            struct batch *h = spool_head(s);
            cr_assert_eq(spool_load(s, h), 0, "load at %u", i);
            snprintf(body, sizeof body, "batch %u", next_read++);
            cr_assert_str_eq(h->body.data, body);
            spool_remove(s, h);
        }
    }
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    sigaction(SIGALRM, &old, NULL);
    cr_assert_eq(spool_stats(s)->write_errors, 0);
    cr_assert_eq(spool_stats(s)->corrupt, 0);
    cr_assert_gt(alarms, 100, "the timer interrupted the spool %d times in %u batches", (int)alarms, i);
    spool_close(s);
    /* and what is left on disk reads back in order after a reopen */
    cr_assert_eq(spool_open(&s, tmpdir, 1 << 24, err, sizeof err), 0, "%s", err);
    cr_assert_eq(spool_stats(s)->corrupt, 0);
    cr_assert_eq(spool_count(s), i - i / 3, "every third append was read back and removed");
    spool_close(s);
}

Test(export_spool, torn_file_is_discarded)
{
    struct spool *s;
    char err[256];
    cr_assert_eq(spool_open(&s, tmpdir, 1 << 20, err, sizeof err), 0);
    cr_assert_eq(spool_append(s, mk_batch("a whole batch body", 1)), 0);
    cr_assert_eq(spool_append(s, mk_batch("the next one", 2)), 0);
    uint64_t seq = spool_head(s)->seq;
    spool_close(s);
    char path[256];
    snprintf(path, sizeof path, "%s/%020llu.cbxs", tmpdir, (unsigned long long)seq);
    cr_assert_eq(truncate(path, 64 + 5), 0); /* a crash in the middle of the body */
    cr_assert_eq(spool_open(&s, tmpdir, 1 << 20, err, sizeof err), 0);
    cr_assert_eq(spool_count(s), 2);
    cr_assert_eq(spool_load(s, spool_head(s)), -EBADMSG);
    spool_remove(s, spool_head(s));
    cr_assert_eq(spool_load(s, spool_head(s)), 0);
    cr_assert_str_eq(spool_head(s)->body.data, "the next one");
    spool_close(s);
}

Test(export_spool, memory_spool_is_volatile)
{
    struct spool *s;
    char err[256];
    cr_assert_eq(spool_open(&s, NULL, 1 << 20, err, sizeof err), 0);
    cr_assert_eq(spool_append(s, mk_batch("x", 77)), 0);
    cr_assert_eq(spool_append(s, mk_batch("y", 78)), 0);
    cr_assert_eq(spool_min_volatile_pos(s), 77, "memory batches hold the lossless cursor");
    cr_assert_str_eq(spool_head(s)->body.data, "x");
    spool_close(s);
}

Test(export_otlp, ttft_seconds_are_exact_decimals)
{
    struct cbus_event s = ev(CBUS_EV_LLM_START, 1, 0, 0);
    span_table_feed(table, &s, 1);
    struct cbus_event e = ev(CBUS_EV_LLM_END, 1, 0, 5000000000ull);
    e.u.usage.ttft_ns = 1000000123ull;
    e.u.usage.usage_present = CBUS_USAGE_TTFT;
    span_table_feed(table, &e, 2);
    struct cbus_event s2 = ev(CBUS_EV_LLM_START, 2, 0, 0);
    span_table_feed(table, &s2, 1);
    struct cbus_event e2 = ev(CBUS_EV_LLM_END, 2, 0, 1);
    e2.u.usage.ttft_ns = 2000000000ull;
    e2.u.usage.usage_present = CBUS_USAGE_TTFT;
    span_table_feed(table, &e2, 2);
    cr_assert(strstr(out.data, "\"doubleValue\":1.000000123}"), "%s", out.data);
    cr_assert(strstr(out.data, "\"doubleValue\":2}"), "%s", out.data);
    cJSON *root = parse_batch();
    cJSON_Delete(root);
}

/* ---- content capture, tags, metadata (issue 15 item 1) ------------------------ */

/* Appends one body section to buf (at *len). */
static void section(unsigned char *buf, uint32_t *len, unsigned type, const void *data, uint32_t n,
                    uint16_t flags, uint32_t orig_len)
{
    struct cbus_body_section sec;
    memset(&sec, 0, sizeof sec);
    sec.type = (uint16_t)type;
    sec.flags = flags;
    sec.len = n;
    sec.orig_len = orig_len ? orig_len : n;
    memcpy(buf + *len, &sec, sizeof sec);
    memcpy(buf + *len + sizeof sec, data, n);
    *len += (uint32_t)sizeof sec + n;
}

static void feed_b(const struct cbus_event *e, const unsigned char *buf, uint32_t len)
{
    struct cbus_body b = {buf, len};
    span_table_feed_body(table, e, len ? &b : NULL, 1);
}

static void capture_on(size_t cap)
{
    oopts.capture_content = 1;
    oopts.content_max = cap;
    span_table_bodies(table, 1, 1, cap, 64u << 20);
}

/* The JSON an attribute's string holds, parsed by cJSON (not by us). */
static cJSON *attr_json(cJSON *span, const char *key)
{
    const char *v = attr_s(span, key);
    cr_assert_not_null(v, "no attribute %s", key);
    cJSON *j = cJSON_Parse(v);
    cr_assert_not_null(j, "%s is not JSON: %.200s", key, v);
    return j;
}

/* [{"role":R,"parts":[{"type":"text","content":C}]...}]: the one text part */
static const char *one_text(cJSON *msgs, const char *role)
{
    cr_assert(cJSON_IsArray(msgs) && cJSON_GetArraySize(msgs) == 1);
    cJSON *m = cJSON_GetArrayItem(msgs, 0);
    cr_assert_str_eq(str(m, "role"), role);
    cJSON *part = cJSON_GetArrayItem(cJSON_GetObjectItem(m, "parts"), 0);
    cr_assert_str_eq(str(part, "type"), "text");
    return str(part, "content");
}

static const char *const chat_json =
    "[{\"role\":\"system\",\"parts\":[{\"type\":\"text\",\"content\":\"Be brief.\"}]},"
    "{\"role\":\"user\",\"parts\":[{\"type\":\"text\",\"content\":\"What is the capital of France?\"}]}]";

Test(export_otlp, content_is_not_captured_by_default)
{
    span_table_bodies(table, 1, 0, 16384, 64u << 20); /* bodies read (a profile), content off */
    unsigned char b[1024];
    uint32_t n = 0;
    section(b, &n, CBUS_BODY_MESSAGES, chat_json, (uint32_t)strlen(chat_json), 0, 0);
    struct cbus_event s = ev(CBUS_EV_CHAT_MODEL_START, 1, 0, 0);
    strcpy(s.preview, "What is the capital of France");
    s.flags |= CBUS_TRUNC_PREVIEW | CBUS_FLAG_BODY;
    feed_b(&s, b, n);
    struct cbus_event e = ev(CBUS_EV_LLM_END, 1, 0, 10);
    strcpy(e.preview, "Paris.");
    feed_b(&e, NULL, 0);
    cJSON *root = parse_batch();
    cJSON *sp = cJSON_GetArrayItem(spans_of(root), 0);
    cr_assert_null(attr(sp, "gen_ai.input.messages"));
    cr_assert_null(attr(sp, "gen_ai.output.messages"));
    cr_assert_null(strstr(out.data, "Paris"), "no content leaves without capture_content");
    cr_assert_null(strstr(out.data, "capital"));
    cJSON_Delete(root);
}

Test(export_otlp, content_messages_tool_retrieval_and_errors)
{
    capture_on(16384);
    unsigned char b[8192];
    uint32_t n = 0;
    /* a chat: messages in, a long text out */
    section(b, &n, CBUS_BODY_MESSAGES, chat_json, (uint32_t)strlen(chat_json), 0, 0);
    struct cbus_event s = ev(CBUS_EV_CHAT_MODEL_START, 1, 0, 0);
    strcpy(s.model, "gpt-4o");
    feed_b(&s, b, n);
    const char *answer = "The capital of France is Paris, which is also its largest city.";
    n = 0;
    section(b, &n, CBUS_BODY_TEXT, answer, (uint32_t)strlen(answer), 0, 0);
    struct cbus_event e = ev(CBUS_EV_LLM_END, 1, 0, 10);
    e.u.usage.finish_reason = CBUS_FINISH_STOP;
    feed_b(&e, b, n);
    /* a tool whose arguments fit in the preview (no body) and whose result does not */
    struct cbus_event t = ev(CBUS_EV_TOOL_START, 2, 0, 20);
    strcpy(t.name, "search");
    strcpy(t.preview, "{\"q\":\"paris\"}");
    feed_b(&t, NULL, 0);
    const char *result = "{\"hits\":[\"Paris is the capital\",\"Paris has 2.1M people\"]}";
    n = 0;
    section(b, &n, CBUS_BODY_TEXT, result, (uint32_t)strlen(result), 0, 0);
    struct cbus_event te = ev(CBUS_EV_TOOL_END, 2, 0, 30);
    feed_b(&te, b, n);
    /* a retrieval: query in, documents out */
    const char *query = "capital city of France, population and history";
    n = 0;
    section(b, &n, CBUS_BODY_TEXT, query, (uint32_t)strlen(query), 0, 0);
    struct cbus_event r = ev(CBUS_EV_RETRIEVER_START, 3, 0, 40);
    strcpy(r.name, "wiki");
    feed_b(&r, b, n);
    const char *docs = "[{\"id\":\"doc_1\",\"score\":0.9,\"content\":\"Paris\"}]";
    n = 0;
    section(b, &n, CBUS_BODY_TEXT, docs, (uint32_t)strlen(docs), 0, 0);
    struct cbus_event re = ev(CBUS_EV_RETRIEVER_END, 3, 0, 50);
    feed_b(&re, b, n);
    /* a chain that fails with a long message */
    struct cbus_event c = ev(CBUS_EV_CHAIN_START, 4, 0, 60);
    strcpy(c.name, "qa");
    strcpy(c.preview, "{\"question\":\"why\"}");
    feed_b(&c, NULL, 0);
    char msg[600];
    memset(msg, 'x', sizeof msg);
    memcpy(msg, "Traceback (most recent call last):", 34);
    n = 0;
    section(b, &n, CBUS_BODY_TEXT, msg, sizeof msg, 0, 0);
    struct cbus_event ce = ev(CBUS_EV_CHAIN_ERROR, 4, 0, 70);
    strcpy(ce.name, "ValueError");
    memcpy(ce.preview, msg, 31);
    feed_b(&ce, b, n);
    cr_assert_eq(nspans, 4);

    cJSON *root = parse_batch();
    cJSON *spans = spans_of(root);
    cJSON *chat = find_span(spans, "chat gpt-4o");
    cr_assert_str_eq(attr_s(chat, "gen_ai.input.messages"), chat_json, "a message list goes as it came");
    cJSON *om = attr_json(chat, "gen_ai.output.messages");
    cr_assert_str_eq(one_text(om, "assistant"), answer);
    cr_assert_str_eq(str(cJSON_GetArrayItem(om, 0), "finish_reason"), "stop");
    cJSON_Delete(om);
    cr_assert_null(attr(chat, "cbus.content.cut"));
    cJSON *tool = find_span(spans, "execute_tool search");
    cr_assert_str_eq(attr_s(tool, "gen_ai.tool.call.arguments"), "{\"q\":\"paris\"}");
    cr_assert_str_eq(attr_s(tool, "gen_ai.tool.call.result"), result);
    cr_assert_null(attr(tool, "gen_ai.input.messages"));
    cJSON *ret = find_span(spans, "retrieval wiki");
    cr_assert_str_eq(attr_s(ret, "gen_ai.retrieval.query.text"), query);
    cr_assert_str_eq(attr_s(ret, "gen_ai.retrieval.documents"), docs);
    cJSON *wf = find_span(spans, "invoke_workflow qa");
    cJSON *im = attr_json(wf, "gen_ai.input.messages");
    cr_assert_str_eq(one_text(im, "user"), "{\"question\":\"why\"}");
    cJSON_Delete(im);
    cr_assert_null(attr(wf, "gen_ai.output.messages"), "an error's message is its status, not output");
    cJSON *stt = cJSON_GetObjectItem(wf, "status");
    cr_assert_eq(cJSON_GetObjectItem(stt, "code")->valueint, 2);
    cr_assert_eq(strlen(str(stt, "message")), sizeof msg, "the whole message, not its preview");
    cJSON_Delete(root);
}

Test(export_otlp, content_bad_input_is_sent_as_text_cut_and_marked)
{
    capture_on(256);
    unsigned char b[8192];
    uint32_t n = 0;
    /* messages that are not JSON, with invalid UTF-8 and a quote */
    const char *broken = "[{\"role\":\"user\", oops \xff\xfe \"quoted\"";
    section(b, &n, CBUS_BODY_MESSAGES, broken, (uint32_t)strlen(broken), 0, 0);
    struct cbus_event s = ev(CBUS_EV_CHAT_MODEL_START, 1, 0, 0);
    strcpy(s.model, "m1");
    feed_b(&s, b, n);
    /* an output longer than the cap: cut at a character boundary, marked */
    char big[1000];
    for (size_t i = 0; i + 2 <= sizeof big; i += 2)
        memcpy(big + i, "\xc3\xa9", 2); /* é: a cut must not split it */
    n = 0;
    section(b, &n, CBUS_BODY_TEXT, big, sizeof big, 0, 0);
    struct cbus_event e = ev(CBUS_EV_LLM_END, 1, 0, 10);
    feed_b(&e, b, n);
    /* a message list cut by the bus's body limit: flagged, and no longer JSON */
    n = 0;
    section(b, &n, CBUS_BODY_MESSAGES, chat_json, 60, CBUS_BODY_SECTION_CUT, (uint32_t)strlen(chat_json));
    struct cbus_event s2 = ev(CBUS_EV_CHAT_MODEL_START, 2, 0, 20);
    strcpy(s2.model, "m2");
    s2.flags |= CBUS_FLAG_BODY_CUT;
    feed_b(&s2, b, n);
    struct cbus_event e2 = ev(CBUS_EV_LLM_END, 2, 0, 30);
    feed_b(&e2, NULL, 0);
    cJSON *root = parse_batch(); /* pb_equal.py: the protobuf strings are UTF-8 */
    cJSON *spans = spans_of(root);
    cJSON *c1 = find_span(spans, "chat m1");
    cJSON *im = attr_json(c1, "gen_ai.input.messages");
    const char *txt = one_text(im, "user");
    cr_assert(strstr(txt, "oops \xef\xbf\xbd\xef\xbf\xbd \"quoted\""), "sent as text, bad bytes as U+FFFD: %s", txt);
    cJSON_Delete(im);
    cJSON *om = attr_json(c1, "gen_ai.output.messages");
    const char *cut = one_text(om, "assistant");
    cr_assert_eq(strlen(cut), 256, "cut to the cap, whole characters (%zu)", strlen(cut));
    cJSON_Delete(om);
    cJSON *cl = cJSON_GetObjectItem(cJSON_GetObjectItem(attr(c1, "cbus.content.cut"), "arrayValue"), "values");
    cr_assert_eq(cJSON_GetArraySize(cl), 1);
    cr_assert_str_eq(str(cJSON_GetArrayItem(cl, 0), "stringValue"), "gen_ai.output.messages");
    cJSON *c2 = find_span(spans, "chat m2");
    cJSON *im2 = attr_json(c2, "gen_ai.input.messages");
    cr_assert_eq(strncmp(one_text(im2, "user"), chat_json, 60), 0, "the cut list as text");
    cJSON_Delete(im2);
    cl = cJSON_GetObjectItem(cJSON_GetObjectItem(attr(c2, "cbus.content.cut"), "arrayValue"), "values");
    cr_assert_str_eq(str(cJSON_GetArrayItem(cl, 0), "stringValue"), "gen_ai.input.messages");
    cJSON_Delete(root);
}

Test(export_otlp, langfuse_tags_metadata_and_content)
{
    oopts.langfuse = 1;
    capture_on(16384);
    unsigned char b[4096];
    uint32_t n = 0;
    const char tags[] = "prod\0beta";
    const char meta[] = "team\0search\0server.address\0api.openai.com\0server.port\0" "443\0"
                        "gen_ai.tool.call.id\0call_1\0team\0ranking\0we\"ird\0v";
    section(b, &n, CBUS_BODY_TAGS, tags, sizeof tags - 1, 0, 0);
    section(b, &n, CBUS_BODY_METADATA, meta, sizeof meta - 1, 0, 0);
    section(b, &n, CBUS_BODY_MESSAGES, chat_json, (uint32_t)strlen(chat_json), 0, 0);
    struct cbus_event s = ev(CBUS_EV_CHAT_MODEL_START, 1, 0, 0);
    strcpy(s.model, "gpt-4o");
    feed_b(&s, b, n);
    struct cbus_event e = ev(CBUS_EV_LLM_END, 1, 0, 10);
    strcpy(e.preview, "Paris.");
    feed_b(&e, NULL, 0);
    /* a child: observation metadata, not trace metadata */
    n = 0;
    section(b, &n, CBUS_BODY_METADATA, "k\0v", 3, 0, 0);
    struct cbus_event t = ev(CBUS_EV_TOOL_START, 2, 1, 20);
    strcpy(t.name, "calc");
    feed_b(&t, b, n);
    struct cbus_event te = ev(CBUS_EV_TOOL_END, 2, 1, 30);
    strcpy(te.preview, "4");
    feed_b(&te, NULL, 0);
    cJSON *root = parse_batch();
    cJSON *spans = spans_of(root);
    cJSON *chat = find_span(spans, "chat gpt-4o");
    cJSON *tl = cJSON_GetObjectItem(cJSON_GetObjectItem(attr(chat, "langfuse.trace.tags"), "arrayValue"), "values");
    cr_assert_eq(cJSON_GetArraySize(tl), 2);
    cr_assert_str_eq(str(cJSON_GetArrayItem(tl, 0), "stringValue"), "prod");
    cr_assert_str_eq(str(cJSON_GetArrayItem(tl, 1), "stringValue"), "beta");
    cr_assert_str_eq(attr_s(chat, "langfuse.observation.metadata.team"), "ranking", "a key set twice: the last wins");
    cr_assert_str_eq(attr_s(chat, "langfuse.trace.metadata.team"), "ranking", "root span: trace metadata too");
    cr_assert_str_eq(attr_s(chat, "langfuse.observation.metadata.we_ird"), "v", "keys made safe");
    cr_assert_str_eq(attr_s(chat, "server.address"), "api.openai.com");
    cr_assert_str_eq(attr_i(chat, "server.port"), "443");
    cr_assert_str_eq(attr_s(chat, "gen_ai.tool.call.id"), "call_1");
    cr_assert_str_eq(attr_s(chat, "langfuse.observation.input"), chat_json);
    cr_assert_str_eq(attr_s(chat, "langfuse.observation.output"), "Paris.");
    cr_assert_null(attr(chat, "gen_ai.input.messages"), "not sent twice under the profile");
    int teams = 0;
    cJSON *a;
    cJSON_ArrayForEach(a, cJSON_GetObjectItem(chat, "attributes"))
        teams += !strcmp(str(a, "key"), "langfuse.observation.metadata.team");
    cr_assert_eq(teams, 1, "one attribute per key");
    cJSON *tool = find_span(spans, "execute_tool calc");
    cr_assert_str_eq(attr_s(tool, "langfuse.observation.metadata.k"), "v");
    cr_assert_null(attr(tool, "langfuse.trace.metadata.k"), "a child span sets no trace metadata");
    cr_assert_str_eq(attr_s(tool, "langfuse.observation.output"), "4");
    cJSON_Delete(root);
}

Test(export_otlp, open_runs_keep_bodies_within_the_memory_bound)
{
    oopts.capture_content = 1;
    span_table_bodies(table, 1, 1, 16384, 1u << 20);
    static unsigned char b[700000];
    uint32_t n = 0;
    static char big[600000];
    memset(big, 'a', sizeof big);
    section(b, &n, CBUS_BODY_TEXT, big, sizeof big, 0, 0);
    for (uint8_t r = 1; r <= 3; r++) {
        struct cbus_event s = ev(CBUS_EV_LLM_START, r, 0, r);
        feed_b(&s, b, n);
    }
    const struct span_stats *st = span_table_stats(table);
    cr_assert_lt(st->body_bytes, 3 * 16384 + 200, "each open run holds its text cut to the cap (%llu)",
                 (unsigned long long)st->body_bytes);
    cr_assert_eq(st->bodies_dropped, 0);
    span_table_bodies(table, 1, 1, 16384, st->body_bytes + 100);
    struct cbus_event s4 = ev(CBUS_EV_LLM_START, 4, 0, 4);
    feed_b(&s4, b, n);
    cr_assert_eq(span_table_stats(table)->bodies_dropped, 1, "beyond the bound a body is not kept");
    span_table_flush(table);
    cr_assert_eq(span_table_stats(table)->body_bytes, 0, "every copy freed");
    cJSON *root = parse_batch();
    cJSON *sp4 = find_span(spans_of(root), "text_completion");
    (void)sp4;
    int dropped = 0, cut = 0;
    cJSON *s;
    cJSON_ArrayForEach(s, spans_of(root)) {
        dropped += attr(s, "cbus.content.dropped") != NULL;
        cut += attr(s, "cbus.content.cut") != NULL;
    }
    cr_assert_eq(dropped, 1);
    cr_assert_eq(cut, 3, "the three kept texts are cut and say so");
    cJSON_Delete(root);
}

Test(export_content, json_validator)
{
    int arr = 0;
    cr_assert(content_json_valid(chat_json, strlen(chat_json), &arr) && arr);
    const char *obj = " {\"a\":[1,-2.5e3,true,false,null,\"\\u00e9\\n\"]} ";
    cr_assert(content_json_valid(obj, strlen(obj), &arr) && !arr);
    cr_assert(!content_json_valid("[1,]", 4, NULL));
    cr_assert(!content_json_valid("[1] x", 5, NULL));
    cr_assert(!content_json_valid("{\"a\" 1}", 7, NULL));
    cr_assert(!content_json_valid("\"a\x01\"", 4, NULL), "a control byte in a string");
    cr_assert(!content_json_valid("[01]", 4, NULL));
    cr_assert(!content_json_valid("", 0, NULL));
    cr_assert(!content_json_valid("[\"\\x\"]", 6, NULL));
    static char deep[20001];
    memset(deep, '[', 10000);
    memset(deep + 10000, ']', 10000);
    cr_assert(!content_json_valid(deep, 20000, NULL), "nesting beyond the bound is refused, not recursed");
    /* long strings: the eight-byte scan must stop at each kind of byte it skips past */
    cr_assert(!content_json_valid("[\"abcdefghijklmnopq\x1frstuvwxyz\"]", 31, NULL), "a control byte after 17");
    cr_assert(content_json_valid("[\"abcdefghijklmnopq\\\"rstuvwxyz\"]", 32, NULL), "an escaped quote after 17");
    cr_assert(!content_json_valid("[\"abcdefghijklmnopq\\xrstuvwxyz\"]", 32, NULL), "a bad escape after 17");
    cr_assert(content_json_valid("[\"abcdefghijklmnopq\xc3\xa9rstuvwxyz\" , 1]", 36, NULL), "UTF-8 is not a stop");
    cr_assert(!content_json_valid("[\"abcdefghijklmnopqrstuvwxyz", 28, NULL), "an unterminated long string");
    cr_assert_eq(content_cut_len("ab\xc3\xa9", 4, 3), 2, "never half a character");
    cr_assert_eq(content_cut_len("abcd", 4, 9), 4);
}

/* ---- gen_ai.usage.cost (issue 15 item 2) ---------------------------------------- */

Test(export_otlp, cost_from_the_cost_daemons_table_and_code)
{
    struct cost_price_table *pt;
    char err[256];
    /* a tier above 1k input tokens, as LiteLLM writes them */
    const char *tab = "{\"m\":{\"input_cost_per_token\":2.5e-06,\"output_cost_per_token\":1e-05,"
                      "\"cache_read_input_token_cost\":1.25e-06,\"output_cost_per_reasoning_token\":2e-05,"
                      "\"input_cost_per_token_above_1k_tokens\":5e-06}}";
    cr_assert_eq(cost_prices_parse(&pt, "t", tab, err, sizeof err), 0, "%s", err);
    oopts.prices = pt;
    oopts.langfuse = 1;
    struct cbus_event s = ev(CBUS_EV_CHAT_MODEL_START, 1, 0, 0);
    strcpy(s.model, "m");
    span_table_feed(table, &s, 1);
    struct cbus_event e = ev(CBUS_EV_LLM_END, 1, 0, 10);
    strcpy(e.model, "m");
    e.u.usage = (struct cbus_usage){.input_tokens = 1200, .output_tokens = 300, .cache_read_tokens = 1000,
                                    .reasoning_tokens = 100,
                                    .usage_present = CBUS_USAGE_INPUT | CBUS_USAGE_OUTPUT |
                                                     CBUS_USAGE_CACHE_READ | CBUS_USAGE_REASONING};
    span_table_feed(table, &e, 2);
    /* the same end, unknown to the table */
    struct cbus_event s2 = ev(CBUS_EV_CHAT_MODEL_START, 2, 0, 20);
    strcpy(s2.model, "other");
    span_table_feed(table, &s2, 1);
    struct cbus_event e2 = e;
    e2.event_id = pos++;
    e2.run_id[15] = 2;
    strcpy(e2.model, "other");
    span_table_feed(table, &e2, 2);
    cJSON *root = parse_batch();
    cJSON *sp = find_span(spans_of(root), "chat m");
    /* above 1k tokens: input 5e-6; 200 uncached, 1000 cache reads at their
     * own rate (no tier), 200 plain output, 100 reasoning */
    cost_u128 want = cost_usage_price(cost_prices_lookup(pt, "", "m", &(const char *){NULL}), &e.u.usage, NULL, NULL);
    cr_assert(want == (cost_u128)(200 * 5000000ull + 1000 * 1250000ull + 200 * 10000000ull + 100 * 20000000ull));
    double got = cJSON_GetObjectItem(attr(sp, "gen_ai.usage.cost"), "doubleValue")->valuedouble;
    cr_assert_float_eq(got, 0.006250, 1e-15, "%.17g", got);
    cJSON *cd = cJSON_Parse(attr_s(sp, "langfuse.observation.cost_details"));
    cr_assert_not_null(cd);
    cr_assert_float_eq(cJSON_GetObjectItem(cd, "input")->valuedouble, 0.001, 1e-15);
    cr_assert_float_eq(cJSON_GetObjectItem(cd, "input_cache_read")->valuedouble, 0.00125, 1e-15);
    cr_assert_float_eq(cJSON_GetObjectItem(cd, "output")->valuedouble, 0.002, 1e-15);
    cr_assert_float_eq(cJSON_GetObjectItem(cd, "output_reasoning")->valuedouble, 0.002, 1e-15);
    cr_assert_float_eq(cJSON_GetObjectItem(cd, "total")->valuedouble, 0.00625, 1e-15);
    cr_assert_null(cJSON_GetObjectItem(cd, "input_cache_creation"), "not reported, not shown");
    cJSON_Delete(cd);
    cr_assert_null(attr(find_span(spans_of(root), "chat other"), "gen_ai.usage.cost"));
    cJSON_Delete(root);
    cost_prices_free(pt);
}

/* ---- the phoenix profile (issue 15 item 4) -------------------------------------- */

Test(export_config, phoenix_profile)
{
    struct export_config c;
    char err[256];
    cr_assert_eq(load_text(&c, "[phoenix]\nhost = http://phoenix:6006/\nproject = rag\n", err, sizeof err), 0, "%s", err);
    cr_assert_str_eq(c.url, "http://phoenix:6006/v1/traces");
    cr_assert(c.phoenix);
    cr_assert_str_eq(c.phoenix_project, "rag");
    export_config_free(&c);
    cr_assert_eq(load_text(&c, "[otlp]\nencoding = json\n[phoenix]\nhost = http://p\n", err, sizeof err), -EINVAL);
    cr_assert(strstr(err, "415"), "%s", err);
    export_config_free(&c);
    cr_assert_eq(load_text(&c, "[phoenix]\nhost = http://p\n[langfuse]\nhost = http://l\n", err, sizeof err), -EINVAL);
    export_config_free(&c);
}

Test(export_otlp, phoenix_openinference_attributes)
{
    oopts.phoenix = 1;
    capture_on(16384);
    struct cost_price_table *pt;
    char err[256];
    cr_assert_eq(cost_prices_parse(&pt, "t", "{\"gpt-4o\":{\"input_cost_per_token\":2.5e-06,\"output_cost_per_token\":1e-05}}",
                                   err, sizeof err), 0, "%s", err);
    oopts.prices = pt;
    unsigned char b[4096];
    uint32_t n = 0;
    section(b, &n, CBUS_BODY_TAGS, "prod\0rag", 8, 0, 0);
    section(b, &n, CBUS_BODY_METADATA, "team\0search\0q\"uote\0x\\y", 23, 0, 0);
    struct cbus_event c = ev(CBUS_EV_CHAIN_START, 1, 0, 0);
    strcpy(c.name, "qa");
    strcpy(c.preview, "why?");
    feed_b(&c, b, n);
    n = 0;
    section(b, &n, CBUS_BODY_MESSAGES, chat_json, (uint32_t)strlen(chat_json), 0, 0);
    struct cbus_event s = ev(CBUS_EV_CHAT_MODEL_START, 2, 1, 10);
    strcpy(s.model, "gpt-4o");
    strcpy(s.provider, "openai");
    feed_b(&s, b, n);
    struct cbus_event e = ev(CBUS_EV_LLM_END, 2, 1, 20);
    strcpy(e.model, "gpt-4o");
    strcpy(e.preview, "Paris.");
    e.u.usage = (struct cbus_usage){.input_tokens = 1000, .output_tokens = 100, .cache_read_tokens = 200,
                                    .usage_present = CBUS_USAGE_INPUT | CBUS_USAGE_OUTPUT | CBUS_USAGE_CACHE_READ};
    feed_b(&e, NULL, 0);
    struct cbus_event t = ev(CBUS_EV_TOOL_START, 3, 1, 30);
    strcpy(t.name, "calc");
    strcpy(t.preview, "{\"x\":1}");
    feed_b(&t, NULL, 0);
    struct cbus_event te = ev(CBUS_EV_TOOL_END, 3, 1, 40);
    feed_b(&te, NULL, 0);
    struct cbus_event r = ev(CBUS_EV_RETRIEVER_START, 4, 1, 50);
    strcpy(r.name, "kb");
    feed_b(&r, NULL, 0);
    struct cbus_event re = ev(CBUS_EV_RETRIEVER_END, 4, 1, 60);
    feed_b(&re, NULL, 0);
    struct cbus_event ce = ev(CBUS_EV_CHAIN_END, 1, 0, 70);
    feed_b(&ce, NULL, 0);
    cJSON *root = parse_batch();
    cJSON *spans = spans_of(root);
    cJSON *chat = find_span(spans, "chat gpt-4o");
    cr_assert_str_eq(attr_s(chat, "openinference.span.kind"), "LLM");
    cr_assert_str_eq(attr_s(chat, "llm.model_name"), "gpt-4o");
    cr_assert_str_eq(attr_s(chat, "llm.provider"), "openai");
    cr_assert_str_eq(attr_i(chat, "llm.token_count.prompt"), "1000");
    cr_assert_str_eq(attr_i(chat, "llm.token_count.completion"), "100");
    cr_assert_str_eq(attr_i(chat, "llm.token_count.total"), "1100");
    cr_assert_str_eq(attr_i(chat, "llm.token_count.prompt_details.cache_read"), "200");
    cr_assert_str_eq(attr_s(chat, "input.value"), chat_json);
    cr_assert_str_eq(attr_s(chat, "input.mime_type"), "application/json");
    cr_assert_str_eq(attr_s(chat, "output.value"), "Paris.");
    cr_assert_str_eq(attr_s(chat, "output.mime_type"), "text/plain");
    cr_assert_null(attr(chat, "gen_ai.input.messages"), "content under one name only");
    /* 800 uncached at 2.5e-6 and 200 cache reads at the input rate (the
     * table has no cache rate), 100 out at 1e-5 */
    cr_assert_float_eq(cJSON_GetObjectItem(attr(chat, "llm.cost.total"), "doubleValue")->valuedouble, 0.0035, 1e-15);
    cr_assert_float_eq(cJSON_GetObjectItem(attr(chat, "llm.cost.prompt"), "doubleValue")->valuedouble, 0.0025, 1e-15);
    cr_assert_float_eq(cJSON_GetObjectItem(attr(chat, "llm.cost.completion"), "doubleValue")->valuedouble, 0.001, 1e-15);
    cJSON *tool = find_span(spans, "execute_tool calc");
    cr_assert_str_eq(attr_s(tool, "openinference.span.kind"), "TOOL");
    cr_assert_str_eq(attr_s(tool, "tool.name"), "calc");
    cr_assert_str_eq(attr_s(tool, "input.value"), "{\"x\":1}");
    cr_assert_str_eq(attr_s(tool, "input.mime_type"), "application/json");
    cr_assert_str_eq(attr_s(find_span(spans, "retrieval kb"), "openinference.span.kind"), "RETRIEVER");
    cJSON *wf = find_span(spans, "invoke_workflow qa");
    cr_assert_str_eq(attr_s(wf, "openinference.span.kind"), "CHAIN");
    cr_assert_str_eq(attr_s(wf, "input.value"), "why?");
    cJSON *tags = cJSON_GetObjectItem(cJSON_GetObjectItem(attr(wf, "tag.tags"), "arrayValue"), "values");
    cr_assert_eq(cJSON_GetArraySize(tags), 2);
    cr_assert_str_eq(str(cJSON_GetArrayItem(tags, 1), "stringValue"), "rag");
    cJSON *md = cJSON_Parse(attr_s(wf, "metadata"));
    cr_assert_not_null(md, "metadata is one JSON object: %s", attr_s(wf, "metadata"));
    cr_assert_str_eq(str(md, "team"), "search");
    cr_assert_str_eq(str(md, "q\"uote"), "x\\y", "keys and values escaped, not mangled");
    cJSON_Delete(md);
    cJSON_Delete(root);
    cost_prices_free(pt);
}

Test(export_otlp, agent_tenant_and_plain_tags_metadata)
{
    capture_on(16384); /* bodies read, no receiver profile */
    unsigned char b[512];
    uint32_t n = 0;
    section(b, &n, CBUS_BODY_TAGS, "prod", 4, 0, 0);
    section(b, &n, CBUS_BODY_METADATA, "server.address\0api.anthropic.com\0team\0x", 40, 0, 0);
    struct cbus_event s = ev(CBUS_EV_CHAT_MODEL_START, 1, 0, 0);
    strcpy(s.model, "m");
    strcpy(s.agent, "planner");
    strcpy(s.tenant, "acme");
    s.flags |= CBUS_TRUNC_TENANT;
    feed_b(&s, b, n);
    struct cbus_event e = ev(CBUS_EV_LLM_END, 1, 0, 10);
    feed_b(&e, NULL, 0);
    cJSON *root = parse_batch();
    cJSON *sp = find_span(spans_of(root), "chat m");
    cr_assert_str_eq(attr_s(sp, "gen_ai.agent.name"), "planner");
    cr_assert_str_eq(attr_s(sp, "cbus.tenant"), "acme");
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(attr(sp, "cbus.truncated"), "boolValue")), "a cut tenant is a cut");
    cJSON *tl = cJSON_GetObjectItem(cJSON_GetObjectItem(attr(sp, "cbus.tags"), "arrayValue"), "values");
    cr_assert_str_eq(str(cJSON_GetArrayItem(tl, 0), "stringValue"), "prod");
    cr_assert_str_eq(attr_s(sp, "cbus.metadata.team"), "x");
    cr_assert_str_eq(attr_s(sp, "server.address"), "api.anthropic.com");
    cr_assert_null(attr(sp, "langfuse.trace.tags"));
    cJSON_Delete(root);
}

Test(export_otlp, point_event_texts_with_capture)
{
    capture_on(300);
    struct cbus_event c = ev(CBUS_EV_CHAIN_START, 1, 0, 0);
    strcpy(c.name, "agent");
    feed_b(&c, NULL, 0);
    unsigned char b[2048];
    uint32_t n = 0;
    const char *comment = "The answer names the right city and cites the source document.";
    section(b, &n, CBUS_BODY_TEXT, comment, (uint32_t)strlen(comment), 0, 0);
    struct cbus_event sc = ev(CBUS_EV_SCORE, 1, 0, 10);
    strcpy(sc.name, "faithful");
    sc.u.score.type = CBUS_SCORE_CATEGORICAL;
    strcpy(sc.preview, "yes");
    feed_b(&sc, b, n);
    char input[400];
    memset(input, 'i', sizeof input);
    n = 0;
    section(b, &n, CBUS_BODY_TEXT, input, sizeof input, 0, 0);
    struct cbus_event aa = ev(CBUS_EV_AGENT_ACTION, 1, 0, 20);
    strcpy(aa.name, "search");
    memcpy(aa.preview, input, 31);
    aa.flags |= CBUS_TRUNC_PREVIEW;
    feed_b(&aa, b, n);
    struct cbus_event cu = ev(CBUS_EV_CUSTOM, 1, 0, 30);
    strcpy(cu.name, "checkpoint");
    strcpy(cu.preview, "{\"step\":3}");
    feed_b(&cu, NULL, 0);
    struct cbus_event ce = ev(CBUS_EV_CHAIN_END, 1, 0, 40);
    feed_b(&ce, NULL, 0);
    /* a score of a run never seen: its own span, with its comment */
    n = 0;
    section(b, &n, CBUS_BODY_TEXT, comment, (uint32_t)strlen(comment), 0, 0);
    struct cbus_event so = ev(CBUS_EV_SCORE, 9, 0, 50);
    strcpy(so.name, "late");
    so.u.score.type = CBUS_SCORE_NUMERIC;
    so.u.score.value = 1;
    feed_b(&so, b, n);
    cr_assert_eq(span_table_stats(table)->body_bytes, 0, "the events' copies freed with their span");
    cJSON *root = parse_batch();
    cJSON *spans = spans_of(root);
    cJSON *evs = cJSON_GetObjectItem(find_span(spans, "invoke_agent agent"), "events");
    cr_assert_eq(cJSON_GetArraySize(evs), 3);
    cJSON *e0 = cJSON_GetArrayItem(evs, 0), *e1 = cJSON_GetArrayItem(evs, 1), *e2 = cJSON_GetArrayItem(evs, 2);
    cr_assert_str_eq(attr_s(e0, "gen_ai.evaluation.explanation"), comment);
    cr_assert_str_eq(attr_s(e0, "gen_ai.evaluation.score.label"), "yes");
    cr_assert_eq(strlen(attr_s(e1, "gen_ai.tool.call.arguments")), 300, "cut to the cap");
    cr_assert_not_null(attr(e1, "cbus.content.cut"));
    cr_assert_str_eq(attr_s(e2, "cbus.custom.data"), "{\"step\":3}", "a text that fit its preview");
    cr_assert_str_eq(attr_s(find_span(spans, "score late"), "gen_ai.evaluation.explanation"), comment);
    cJSON_Delete(root);
}

/* ---- system instructions, response id, OpenInference lists (issue 15) -------- */

/* No attribute key twice on a span (a receiver keeps one of them). */
static void assert_unique_keys(cJSON *span)
{
    cJSON *a, *b;
    cJSON_ArrayForEach(a, cJSON_GetObjectItem(span, "attributes")) {
        int n = 0;
        cJSON_ArrayForEach(b, cJSON_GetObjectItem(span, "attributes"))
            n += !strcmp(str(a, "key"), str(b, "key"));
        cr_assert_eq(n, 1, "attribute %s sent %d times", str(a, "key"), n);
    }
}

static int cut_listed(cJSON *span, const char *key)
{
    cJSON *v = cJSON_GetObjectItem(cJSON_GetObjectItem(attr(span, "cbus.content.cut"), "arrayValue"), "values"), *x;
    cJSON_ArrayForEach(x, v) {
        if (!strcmp(str(x, "stringValue"), key))
            return 1;
    }
    return 0;
}

static const char *const sys_json = "[{\"type\":\"text\",\"content\":\"You are a geography tutor.\"}]";

Test(export_otlp, system_instructions_and_response_id)
{
    capture_on(64);
    unsigned char b[4096];
    uint32_t n = 0;
    /* a chat whose instructions came apart from the history, and whose
     * metadata also names a response id: the end's own id wins */
    section(b, &n, CBUS_BODY_METADATA, "gen_ai.response.id\0from-metadata", 33, 0, 0);
    section(b, &n, CBUS_BODY_SYSTEM, sys_json, (uint32_t)strlen(sys_json), 0, 0);
    const char *msgs = "[{\"role\":\"user\",\"parts\":[{\"type\":\"text\",\"content\":\"Capital?\"}]}]";
    section(b, &n, CBUS_BODY_MESSAGES, msgs, (uint32_t)strlen(msgs), 0, 0);
    struct cbus_event s = ev(CBUS_EV_CHAT_MODEL_START, 1, 0, 0);
    strcpy(s.model, "claude");
    feed_b(&s, b, n);
    n = 0;
    section(b, &n, CBUS_BODY_RESPONSE_ID, "msg_01XFDUDYJgAACzvnptvVoYEL", 28, 0, 0);
    struct cbus_event e = ev(CBUS_EV_LLM_END, 1, 0, 10);
    strcpy(e.preview, "Paris.");
    feed_b(&e, b, n);
    /* a completion with plain-text instructions, and an end whose "id"
     * holds a space (it came from shared memory): not sent */
    n = 0;
    section(b, &n, CBUS_BODY_SYSTEM, "Be \"brief\".", 11, 0, 0);
    struct cbus_event s2 = ev(CBUS_EV_LLM_START, 2, 0, 20);
    strcpy(s2.model, "davinci");
    strcpy(s2.preview, "Say hi");
    feed_b(&s2, b, n);
    n = 0;
    section(b, &n, CBUS_BODY_RESPONSE_ID, "not an id", 9, 0, 0);
    struct cbus_event e2 = ev(CBUS_EV_LLM_END, 2, 0, 30);
    feed_b(&e2, b, n);
    /* instructions over the cap (64 bytes): cut, sent as text, listed */
    char longsys[200];
    memset(longsys, 'r', sizeof longsys);
    n = 0;
    section(b, &n, CBUS_BODY_SYSTEM, longsys, sizeof longsys, 0, 0);
    struct cbus_event s3 = ev(CBUS_EV_CHAT_MODEL_START, 3, 0, 40);
    strcpy(s3.model, "long");
    feed_b(&s3, b, n);
    struct cbus_event e3 = ev(CBUS_EV_LLM_END, 3, 0, 50);
    feed_b(&e3, NULL, 0);
    cJSON *root = parse_batch();
    cJSON *spans = spans_of(root);
    cJSON *chat = find_span(spans, "chat claude");
    cr_assert_str_eq(attr_s(chat, "gen_ai.system_instructions"), sys_json, "a parts array goes as it came");
    cr_assert_str_eq(attr_s(chat, "gen_ai.input.messages"), msgs, "the history apart from the instructions");
    cr_assert_str_eq(attr_s(chat, "gen_ai.response.id"), "msg_01XFDUDYJgAACzvnptvVoYEL");
    assert_unique_keys(chat);
    cJSON *tc = find_span(spans, "text_completion davinci");
    cJSON *si = attr_json(tc, "gen_ai.system_instructions");
    cr_assert_eq(cJSON_GetArraySize(si), 1);
    cr_assert_str_eq(str(cJSON_GetArrayItem(si, 0), "type"), "text");
    cr_assert_str_eq(str(cJSON_GetArrayItem(si, 0), "content"), "Be \"brief\".");
    cJSON_Delete(si);
    cr_assert_null(attr(tc, "gen_ai.response.id"), "an id with a space is not an id");
    cJSON *lc = find_span(spans, "chat long");
    si = attr_json(lc, "gen_ai.system_instructions");
    cr_assert_eq(strlen(str(cJSON_GetArrayItem(si, 0), "content")), 64u, "cut at the cap");
    cJSON_Delete(si);
    cr_assert(cut_listed(lc, "gen_ai.system_instructions"));
    cJSON_Delete(root);
}

Test(export_otlp, response_id_without_content_and_instructions_only_with_it)
{
    span_table_bodies(table, 1, 0, 16384, 64u << 20); /* bodies read (a profile), content off */
    unsigned char b[1024];
    uint32_t n = 0;
    section(b, &n, CBUS_BODY_SYSTEM, sys_json, (uint32_t)strlen(sys_json), 0, 0);
    struct cbus_event s = ev(CBUS_EV_CHAT_MODEL_START, 1, 0, 0);
    strcpy(s.model, "m");
    feed_b(&s, b, n);
    n = 0;
    section(b, &n, CBUS_BODY_RESPONSE_ID, "chatcmpl-9", 10, 0, 0);
    struct cbus_event e = ev(CBUS_EV_LLM_END, 1, 0, 10);
    feed_b(&e, b, n);
    cJSON *root = parse_batch();
    cJSON *chat = cJSON_GetArrayItem(spans_of(root), 0);
    cr_assert_str_eq(attr_s(chat, "gen_ai.response.id"), "chatcmpl-9", "an id, not content");
    cr_assert_null(attr(chat, "gen_ai.system_instructions"), "instructions are content");
    cr_assert_null(strstr(out.data, "geography"));
    cJSON_Delete(root);
}

Test(export_otlp, langfuse_input_starts_with_the_instructions)
{
    oopts.langfuse = 1;
    capture_on(16384);
    unsigned char b[4096];
    uint32_t n = 0;
    section(b, &n, CBUS_BODY_SYSTEM, sys_json, (uint32_t)strlen(sys_json), 0, 0);
    section(b, &n, CBUS_BODY_MESSAGES, chat_json, (uint32_t)strlen(chat_json), 0, 0);
    struct cbus_event s = ev(CBUS_EV_CHAT_MODEL_START, 1, 0, 0);
    strcpy(s.model, "gpt-4o");
    feed_b(&s, b, n);
    struct cbus_event e = ev(CBUS_EV_LLM_END, 1, 0, 10);
    feed_b(&e, NULL, 0);
    n = 0;
    section(b, &n, CBUS_BODY_SYSTEM, "Be brief.", 9, 0, 0);
    struct cbus_event s2 = ev(CBUS_EV_LLM_START, 2, 0, 20);
    strcpy(s2.model, "davinci");
    strcpy(s2.preview, "Say \"hi\"");
    feed_b(&s2, b, n);
    struct cbus_event e2 = ev(CBUS_EV_LLM_END, 2, 0, 30);
    feed_b(&e2, NULL, 0);
    cJSON *root = parse_batch();
    cJSON *spans = spans_of(root);
    cJSON *in = attr_json(find_span(spans, "chat gpt-4o"), "langfuse.observation.input");
    cr_assert_eq(cJSON_GetArraySize(in), 3, "instructions, then the two messages of the history");
    cr_assert_str_eq(str(cJSON_GetArrayItem(in, 0), "role"), "system");
    cJSON *p0 = cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetArrayItem(in, 0), "parts"), 0);
    cr_assert_str_eq(str(p0, "content"), "You are a geography tutor.");
    cr_assert_str_eq(str(cJSON_GetArrayItem(in, 1), "role"), "system", "the history's own system message stays");
    cr_assert_str_eq(str(cJSON_GetArrayItem(in, 2), "role"), "user");
    cJSON_Delete(in);
    in = attr_json(find_span(spans, "text_completion davinci"), "langfuse.observation.input");
    cr_assert_eq(cJSON_GetArraySize(in), 2, "instructions, then the prompt as one user message");
    cJSON *u = cJSON_GetArrayItem(in, 1);
    cr_assert_str_eq(str(u, "role"), "user");
    cr_assert_str_eq(str(cJSON_GetArrayItem(cJSON_GetObjectItem(u, "parts"), 0), "content"), "Say \"hi\"");
    cr_assert_str_eq(str(cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetArrayItem(in, 0), "parts"), 0), "content"),
                     "Be brief.");
    cJSON_Delete(in);
    cr_assert_null(attr(find_span(spans, "chat gpt-4o"), "gen_ai.system_instructions"), "once, in the input");
    cJSON_Delete(root);
}

Test(export_otlp, phoenix_flattened_messages_and_documents)
{
    oopts.phoenix = 1;
    capture_on(16384);
    unsigned char b[16384];
    uint32_t n = 0;
    const char *hist =
        "[{\"role\":\"user\",\"parts\":[{\"type\":\"text\",\"content\":\"Weather in Paris?\"}]},"
        "{\"role\":\"assistant\",\"parts\":[{\"type\":\"tool_call\",\"id\":\"call_1\",\"name\":\"weather\","
        "\"arguments\":{\"city\":\"Paris\"}}]},"
        "{\"role\":\"tool\",\"parts\":[{\"type\":\"tool_call_response\",\"id\":\"call_1\",\"response\":\"18C\"}]},"
        "{\"role\":\"user\",\"parts\":[{\"type\":\"text\",\"content\":\"And\"},{\"type\":\"text\",\"content\":\"Rome?\"}]}]";
    section(b, &n, CBUS_BODY_SYSTEM, sys_json, (uint32_t)strlen(sys_json), 0, 0);
    section(b, &n, CBUS_BODY_MESSAGES, hist, (uint32_t)strlen(hist), 0, 0);
    struct cbus_event s = ev(CBUS_EV_CHAT_MODEL_START, 1, 0, 0);
    strcpy(s.model, "gpt-4o");
    feed_b(&s, b, n);
    const char *outm = "[{\"role\":\"assistant\",\"parts\":[{\"type\":\"reasoning\",\"content\":\"look it up\"},"
                       "{\"type\":\"text\",\"content\":\"21C in Rome.\"}],\"finish_reason\":\"stop\"}]";
    n = 0;
    section(b, &n, CBUS_BODY_MESSAGES, outm, (uint32_t)strlen(outm), 0, 0);
    struct cbus_event e = ev(CBUS_EV_LLM_END, 1, 0, 10);
    feed_b(&e, b, n);
    /* a completion: the prompt and the output text as one message each */
    struct cbus_event s2 = ev(CBUS_EV_LLM_START, 2, 0, 20);
    strcpy(s2.model, "davinci");
    strcpy(s2.preview, "Say hi");
    feed_b(&s2, NULL, 0);
    struct cbus_event e2 = ev(CBUS_EV_LLM_END, 2, 0, 30);
    strcpy(e2.preview, "Hi!");
    feed_b(&e2, NULL, 0);
    /* a retriever's documents */
    const char *docs = "[{\"id\":\"doc-1\",\"content\":\"Paris is the capital.\",\"metadata\":{\"src\":\"wiki\",\"page\":3},"
                       "\"score\":0.875},{\"id\":7,\"content\":\"Rome too.\"}]";
    struct cbus_event r = ev(CBUS_EV_RETRIEVER_START, 3, 0, 40);
    strcpy(r.name, "kb");
    strcpy(r.preview, "capitals");
    feed_b(&r, NULL, 0);
    n = 0;
    section(b, &n, CBUS_BODY_TEXT, docs, (uint32_t)strlen(docs), 0, 0);
    struct cbus_event re = ev(CBUS_EV_RETRIEVER_END, 3, 0, 50);
    feed_b(&re, b, n);
    /* a message list cut by the bus: no list (it is not whole), input.value still */
    n = 0;
    section(b, &n, CBUS_BODY_MESSAGES, hist, 40, CBUS_BODY_SECTION_CUT, (uint32_t)strlen(hist));
    struct cbus_event s3 = ev(CBUS_EV_CHAT_MODEL_START, 4, 0, 60);
    strcpy(s3.model, "cut");
    feed_b(&s3, b, n);
    struct cbus_event e3 = ev(CBUS_EV_LLM_END, 4, 0, 70);
    feed_b(&e3, NULL, 0);
    /* more documents than a list holds: the first 128, and the list says cut */
    char *many = malloc(16384);
    cr_assert_not_null(many);
    size_t m = 0;
    many[m++] = '[';
    for (int i = 0; i < 200; i++)
        m += (size_t)sprintf(many + m, "%s{\"content\":\"d%d\"}", i ? "," : "", i);
    many[m++] = ']';
    struct cbus_event r2 = ev(CBUS_EV_RETRIEVER_START, 5, 0, 80);
    strcpy(r2.name, "big");
    feed_b(&r2, NULL, 0);
    n = 0;
    section(b, &n, CBUS_BODY_TEXT, many, (uint32_t)m, 0, 0);
    struct cbus_event re2 = ev(CBUS_EV_RETRIEVER_END, 5, 0, 90);
    feed_b(&re2, b, n);
    free(many);

    cJSON *root = parse_batch();
    cJSON *spans = spans_of(root);
    cJSON *chat = find_span(spans, "chat gpt-4o");
    assert_unique_keys(chat);
    cr_assert_str_eq(attr_s(chat, "llm.input_messages.0.message.role"), "system", "the instructions first");
    cr_assert_str_eq(attr_s(chat, "llm.input_messages.0.message.content"), "You are a geography tutor.");
    cr_assert_str_eq(attr_s(chat, "llm.input_messages.1.message.role"), "user");
    cr_assert_str_eq(attr_s(chat, "llm.input_messages.1.message.content"), "Weather in Paris?");
    cr_assert_str_eq(attr_s(chat, "llm.input_messages.2.message.tool_calls.0.tool_call.id"), "call_1");
    cr_assert_str_eq(attr_s(chat, "llm.input_messages.2.message.tool_calls.0.tool_call.function.name"), "weather");
    cr_assert_str_eq(attr_s(chat, "llm.input_messages.2.message.tool_calls.0.tool_call.function.arguments"),
                     "{\"city\":\"Paris\"}");
    cr_assert_str_eq(attr_s(chat, "llm.input_messages.3.message.role"), "tool");
    cr_assert_str_eq(attr_s(chat, "llm.input_messages.3.message.tool_call_id"), "call_1");
    cr_assert_str_eq(attr_s(chat, "llm.input_messages.3.message.content"), "18C");
    cr_assert_null(attr(chat, "llm.input_messages.4.message.content"), "two texts: contents, not content");
    cr_assert_str_eq(attr_s(chat, "llm.input_messages.4.message.contents.0.message_content.type"), "text");
    cr_assert_str_eq(attr_s(chat, "llm.input_messages.4.message.contents.0.message_content.text"), "And");
    cr_assert_str_eq(attr_s(chat, "llm.input_messages.4.message.contents.1.message_content.text"), "Rome?");
    cr_assert_null(attr(chat, "llm.input_messages.5.message.role"));
    cr_assert_str_eq(attr_s(chat, "llm.output_messages.0.message.role"), "assistant");
    cr_assert_str_eq(attr_s(chat, "llm.output_messages.0.message.contents.0.message_content.type"), "reasoning");
    cr_assert_str_eq(attr_s(chat, "llm.output_messages.0.message.contents.0.message_content.text"), "look it up");
    cr_assert_str_eq(attr_s(chat, "llm.output_messages.0.message.contents.1.message_content.text"), "21C in Rome.");
    cr_assert_str_eq(attr_s(chat, "input.value"), hist, "input.value: the history as it came");
    cr_assert_null(attr(chat, "gen_ai.system_instructions"), "under the profile: in the message list");
    cJSON *tc = find_span(spans, "text_completion davinci");
    cr_assert_str_eq(attr_s(tc, "llm.input_messages.0.message.role"), "user");
    cr_assert_str_eq(attr_s(tc, "llm.input_messages.0.message.content"), "Say hi");
    cr_assert_str_eq(attr_s(tc, "llm.output_messages.0.message.role"), "assistant");
    cr_assert_str_eq(attr_s(tc, "llm.output_messages.0.message.content"), "Hi!");
    cJSON *ret = find_span(spans, "retrieval kb");
    assert_unique_keys(ret);
    cr_assert_str_eq(attr_s(ret, "retrieval.documents.0.document.id"), "doc-1");
    cr_assert_str_eq(attr_s(ret, "retrieval.documents.0.document.content"), "Paris is the capital.");
    cJSON *md = attr_json(ret, "retrieval.documents.0.document.metadata");
    cr_assert_str_eq(str(md, "src"), "wiki");
    cr_assert_eq(cJSON_GetObjectItem(md, "page")->valueint, 3);
    cJSON_Delete(md);
    cr_assert_float_eq(cJSON_GetObjectItem(attr(ret, "retrieval.documents.0.document.score"), "doubleValue")->valuedouble,
                       0.875, 1e-12);
    cr_assert_str_eq(attr_s(ret, "retrieval.documents.1.document.id"), "7", "a numeric id as its JSON");
    cr_assert_null(attr(ret, "retrieval.documents.1.document.score"));
    cr_assert_null(attr(ret, "retrieval.documents.1.document.metadata"));
    cr_assert_str_eq(attr_s(ret, "output.value"), docs);
    cJSON *cut = find_span(spans, "chat cut");
    cr_assert_null(attr(cut, "llm.input_messages.0.message.role"), "a cut list is not parsed");
    cr_assert_not_null(attr_s(cut, "input.value"));
    cr_assert(cut_listed(cut, "input.value"));
    cJSON *big = find_span(spans, "retrieval big");
    cr_assert_str_eq(attr_s(big, "retrieval.documents.127.document.content"), "d127");
    cr_assert_null(attr(big, "retrieval.documents.128.document.content"));
    cr_assert(cut_listed(big, "retrieval.documents"));
    cJSON_Delete(root);
}
