/* cbus-export end to end: a real bus, the real daemon, a real HTTP server on
 * loopback (cbus-collector, which stores every accepted body), and every
 * stored payload decoded by an independent decoder (tests/decode_store.py):
 * OTLP/JSON bodies by Google's strict protobuf-JSON parser into the official
 * OTLP request message, as a collector reads them, msgpack by msgpack.
 *
 * The decoder runs under the test venv's python (scripts/venv.sh; the path in
 * the environment variable CBUS_TEST_PYTHON, else the configured default).
 * Without that venv the strict parse is skipped with a warning, unless
 * CBUS_TEST_STRICT=1 (the test command), where it fails the test. */
#include <criterion/criterion.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cbus/bus.h>
#include <cbus/producer.h>

#include "harness.h"
#include "support.h"

#define SYS_PY "/usr/bin/python3"
#define DECODER CBUS_SOURCE_DIR "/tests/export/decode_store.py"
#ifndef CBUS_TEST_PYTHON_DEFAULT
#define CBUS_TEST_PYTHON_DEFAULT CBUS_SOURCE_DIR "/build/venv/bin/python"
#endif

/* The python that runs the decoder, and whether it can parse strictly. */
static const char *test_python(int *strict)
{
    const char *env = getenv("CBUS_TEST_PYTHON");
    const char *py = env && *env ? env : CBUS_TEST_PYTHON_DEFAULT;
    char cmd[700];
    snprintf(cmd, sizeof cmd,
             "'%s' -c 'import google.protobuf, opentelemetry.proto, msgpack' 2>/dev/null", py);
    if (access(py, X_OK) == 0 && system(cmd) == 0) {
        *strict = 1;
        return py;
    }
    cr_assert(!cbus_test_strict(),
              "CBUS_TEST_STRICT=1 but %s is not a python with tests/requirements.txt: run scripts/venv.sh "
              "and set CBUS_TEST_PYTHON",
              py);
    cr_log_warn("no test venv at %s: OTLP bodies are not checked by the protobuf-JSON parser", py);
    *strict = 0;
    return SYS_PY;
}

static char bus[64];
static char dir[64];
static cbus_producer *prod;
static struct collector col;
static struct exporter_proc ex;

static void setup(void)
{
    test_bus_name(bus, sizeof bus);
    test_bus_create(bus, 0);
    strcpy(dir, "/tmp/cbus-export-e2e-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    cr_assert_eq(cbus_producer_open(&prod, bus, NULL), 0);
    memset(&col, 0, sizeof col);
    memset(&ex, 0, sizeof ex);
}

static void teardown(void)
{
    if (ex.pid > 0) {
        kill(ex.pid, SIGKILL);
        waitpid(ex.pid, NULL, 0);
    }
    if (col.pid > 0)
        collector_stop(&col);
    cbus_producer_close(prod);
    cbus_bus_destroy(bus);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {
    }
}

TestSuite(export_daemon, .init = setup, .fini = teardown, .timeout = 60);

/* Config text for the exporter: the common part plus extra lines. */
static const char *config_path(unsigned port, const char *path, const char *extra)
{
    static char buf[2048];
    snprintf(buf, sizeof buf,
             "[bus]\nstart = newest\nconsumer_name = exp\n"
             "[export]\nendpoint = http://127.0.0.1:%u%s\nbatch_max_age = 50ms\n"
             "retry_initial = 50ms\nretry_max = 200ms\nshutdown_timeout = 3s\n"
             "[spool]\ndir = %s/spool\n[status]\ninterval = 20ms\n%s\n",
             port, path, dir, extra ? extra : "");
    return buf;
}

static const char *config(unsigned port, const char *extra)
{
    return config_path(port, "", extra);
}

/* Decodes the collector's store with python; the caller cJSON_Delete()s. */
static cJSON *decode(void)
{
    char cmd[1024], out[128];
    int strict;
    const char *py = test_python(&strict);
    snprintf(out, sizeof out, "%s/decoded.json", dir);
    snprintf(cmd, sizeof cmd, "'%s' " DECODER " %s %s > %s", py, strict ? "--strict" : "", col.store, out);
    cr_assert_eq(system(cmd), 0, "decoder failed: %s", cmd);
    FILE *f = fopen(out, "r");
    cr_assert_not_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    char *text = malloc((size_t)n + 1);
    cr_assert_eq(fread(text, 1, (size_t)n, f), (size_t)n);
    text[n] = '\0';
    fclose(f);
    cJSON *root = cJSON_Parse(text);
    free(text);
    cr_assert_not_null(root);
    cJSON *bad = cJSON_GetObjectItem(root, "violations");
    cr_assert_eq(cJSON_GetArraySize(bad), 0, "OTLP rule broken: %s",
                 cJSON_GetArraySize(bad) ? cJSON_GetArrayItem(bad, 0)->valuestring : "");
    return root;
}

static cJSON *attr(cJSON *span, const char *key)
{
    return cJSON_GetObjectItem(cJSON_GetObjectItem(span, "attrs"), key);
}

static const char *s_of(cJSON *o, const char *key)
{
    cJSON *v = cJSON_GetObjectItem(o, key);
    return cJSON_IsString(v) ? v->valuestring : "";
}

static cJSON *span_by_id(cJSON *spans, const char *id)
{
    cJSON *s;
    cJSON_ArrayForEach(s, spans) {
        if (!strcmp(s_of(s, "span"), id))
            return s;
    }
    return NULL;
}

/* Counts spans carrying cbus.run.id == uuid. */
static int count_run(cJSON *spans, const char *uuid)
{
    int n = 0;
    cJSON *s;
    cJSON_ArrayForEach(s, spans) {
        cJSON *r = attr(s, "cbus.run.id");
        if (cJSON_IsString(r) && !strcmp(r->valuestring, uuid))
            n++;
    }
    return n;
}

/* One agent turn: chain (agent) -> chat with 2 streamed tokens -> tool.
 * Every tenth chat fails instead.  Records the run ids. 9 or 8 events. */
static void agent_turn(int i, char (*uuids)[3][37])
{
    cbus_ctx root, chat, tool;
    cbus_ctx_init(&root);
    cbus_ctx_set_user(&root, "alice");
    cbus_ctx_set_session(&root, "s-1");
    cr_assert_eq(cbus_chain_start(prod, &root, "planner", "question"), 0);
    cbus_ctx_child(&chat, &root);
    cbus_ctx_set_provider(&chat, "anthropic");
    cbus_ctx_set_model(&chat, "claude-sonnet-4");
    cr_assert_eq(cbus_chat_model_start(prod, &chat, "q", NULL), 0);
    cbus_llm_new_token(prod, &chat, "Hel", 3);
    cbus_llm_new_token(prod, &chat, "lo", 2);
    if (i % 10 == 9) {
        cbus_llm_error(prod, &chat, "RateLimitError", "slow down", 429);
    } else {
        struct cbus_usage u = {.input_tokens = 1000, .output_tokens = 20, .cache_read_tokens = 800,
                               .cache_creation_tokens = 100, .reasoning_tokens = 5,
                               .finish_reason = CBUS_FINISH_TOOL_CALLS,
                               .usage_present = CBUS_USAGE_INPUT | CBUS_USAGE_OUTPUT | CBUS_USAGE_CACHE_READ |
                                                CBUS_USAGE_CACHE_CREATION | CBUS_USAGE_REASONING};
        cbus_llm_end(prod, &chat, &u, "Hello");
    }
    cbus_agent_action(prod, &root, "search", "weather");
    cbus_ctx_child(&tool, &root);
    cbus_tool_start(prod, &tool, "search", "weather");
    cbus_tool_end(prod, &tool, "sunny");
    cbus_chain_end(prod, &root, "done");
    if (uuids) {
        cbus_id_uuid(uuids[i][0], root.tmpl.run_id);
        cbus_id_uuid(uuids[i][1], chat.tmpl.run_id);
        cbus_id_uuid(uuids[i][2], tool.tmpl.run_id);
    }
}

static void tool_span(int i)
{
    cbus_ctx c;
    cbus_ctx_init(&c);
    char name[32];
    snprintf(name, sizeof name, "tool%d", i);
    cr_assert_eq(cbus_tool_start(prod, &c, name, NULL), 0);
    cr_assert_eq(cbus_tool_end(prod, &c, NULL), 0);
}

/* Re-creates the test's bus (and its producer) with capacity slots (0 =
 * default); with high_id, until its random id is above INT64_MAX: the half of
 * all buses whose id an OTLP intValue cannot carry. */
static void recreate_bus(uint64_t capacity, int high_id)
{
    for (int i = 0; i < 64; i++) {
        cbus_producer_close(prod);
        prod = NULL;
        cbus_bus_destroy(bus);
        test_bus_create(bus, capacity);
        cr_assert_eq(cbus_producer_open(&prod, bus, NULL), 0);
        if (!high_id || cbus_bus_header(cbus_producer_bus(prod))->bus_id > (uint64_t)INT64_MAX)
            return;
    }
    cr_assert_fail("64 buses in a row had an id below 2^63");
}

/* The exporter's status file, read once: counters that must agree are taken
 * from one snapshot.  NULL while there is none. */
static cJSON *status_snapshot(void)
{
    return json_file(ex.status);
}

static double num_at(cJSON *o, const char *a, const char *b)
{
    cJSON *v = cJSON_GetObjectItem(cJSON_GetObjectItem(o, a), b);
    cr_assert(cJSON_IsNumber(v) || cJSON_IsBool(v), "status has no %s.%s", a, b);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : v->valuedouble;
}

/* A run that ends in chain_error, with a tool child that succeeds. */
static void failed_chain(char uuid[37])
{
    cbus_ctx c, t;
    cbus_ctx_init(&c);
    cr_assert_eq(cbus_chain_start(prod, &c, "pipeline", "in"), 0);
    cbus_ctx_child(&t, &c);
    cr_assert_eq(cbus_tool_start(prod, &t, "lookup", "q"), 0);
    cr_assert_eq(cbus_tool_end(prod, &t, "r"), 0);
    cr_assert_eq(cbus_chain_error(prod, &c, "ValueError", "bad input"), 0);
    cbus_id_uuid(uuid, c.tmpl.run_id);
}

static cJSON *span_of_run(cJSON *spans, const char *uuid)
{
    cJSON *s;
    cJSON_ArrayForEach(s, spans) {
        cJSON *r = attr(s, "cbus.run.id");
        if (cJSON_IsString(r) && !strcmp(r->valuestring, uuid))
            return s;
    }
    cr_assert_fail("no span for run %s", uuid);
    return NULL;
}

Test(export_daemon, otlp_bodies_pass_the_strict_protobuf_parser_with_a_high_bus_id)
{
    /* Before the fix, cbus.bus.id of such a bus was an intValue above
     * INT64_MAX: Google's parser (and a collector) rejected every body. */
    recreate_bus(0, 1);
    uint64_t bus_id = cbus_bus_header(cbus_producer_bus(prod))->bus_id;
    /* --parse: the collector also refuses (400) an intValue that is no int64 */
    cr_assert_eq(collector_start(&col, dir, 0, (const char *[]){"--parse", NULL}), 0);
    /* OTLP/JSON: the intValue rule is a JSON one (the other tests send the
     * default, protobuf) */
    cr_assert_eq(exporter_start(&ex, dir, bus, config(col.port, "[export]\nbatch_max_items = 16\n[otlp]\nencoding = json\n")), 0);
    for (int i = 0; i < 20; i++)
        agent_turn(i, NULL); /* 3 spans each */
    char uuid[37];
    failed_chain(uuid); /* 2 spans */
    /* a backoff above INT64_MAX (a buggy producer): folded into an open run,
     * and as a point event of a closed run */
    cbus_ctx r;
    cbus_ctx_init(&r);
    cr_assert_eq(cbus_tool_start(prod, &r, "t", NULL), 0);
    cr_assert_eq(cbus_retry(prod, &r, 1, UINT64_MAX, "x"), 0);
    cr_assert_eq(cbus_tool_end(prod, &r, NULL), 0);
    cr_assert_eq(cbus_retry(prod, &r, 2, UINT64_MAX, "y"), 0); /* 2 spans */
    enum { SPANS = 20 * 3 + 2 + 2 };
    cr_assert_eq(wait_for(get_collector, &col, "spans", SPANS, 20000), SPANS);
    cr_assert_eq(exporter_stop(&ex, 10000), 0);
    collector_stop(&col);
    cr_assert_eq(collector_stat(&col, "bad"), 0, "the collector refused a body");
    cr_assert_eq(collector_stat(&col, "protobuf"), 0, "encoding = json");
    cJSON *root = decode(); /* asserts no violation: the strict parser took every body */
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(root, "spans")), SPANS);
    char hex[17];
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)bus_id);
    cJSON *res;
    cJSON_ArrayForEach(res, cJSON_GetObjectItem(root, "resources")) {
        cJSON *id = cJSON_GetObjectItem(res, "cbus.bus.id");
        cr_assert(cJSON_IsString(id), "cbus.bus.id is a string");
        cr_assert_str_eq(id->valuestring, hex);
    }
    cJSON_Delete(root);
}

Test(export_daemon, chain_error_is_exported_with_status_error_and_error_type)
{
    cr_assert_eq(collector_start(&col, dir, 0, NULL), 0);
    cr_assert_eq(exporter_start(&ex, dir, bus, config(col.port, NULL)), 0);
    char uuid[37];
    failed_chain(uuid);
    cr_assert_eq(wait_for(get_collector, &col, "spans", 2, 10000), 2);
    cr_assert_eq(exporter_stop(&ex, 10000), 0);
    collector_stop(&col);
    cJSON *root = decode();
    cJSON *spans = cJSON_GetObjectItem(root, "spans");
    cr_assert_eq(cJSON_GetArraySize(spans), 2);
    cJSON *chain = span_of_run(spans, uuid);
    cr_assert_str_eq(s_of(chain, "name"), "invoke_workflow pipeline");
    cr_assert_str_eq(attr(chain, "gen_ai.operation.name")->valuestring, "invoke_workflow");
    cr_assert_str_eq(attr(chain, "gen_ai.workflow.name")->valuestring, "pipeline");
    cr_assert_eq(cJSON_GetObjectItem(chain, "status")->valueint, 2, "a failed chain is STATUS_CODE_ERROR");
    cr_assert_str_eq(s_of(chain, "status_message"), "bad input");
    cr_assert_str_eq(attr(chain, "error.type")->valuestring, "ValueError");
    cr_assert_null(attr(chain, "cbus.run.start_missing"), "paired with its chain_start");
    cJSON *s;
    cJSON_ArrayForEach(s, spans) {
        if (s == chain)
            continue;
        cr_assert_str_eq(s_of(s, "name"), "execute_tool lookup");
        cr_assert_eq(cJSON_GetObjectItem(s, "status")->valueint, 1, "the child succeeded");
        cr_assert_str_eq(s_of(s, "parent"), s_of(chain, "span"));
    }
    cJSON_Delete(root);
}

/* The [langfuse] profile against a loopback collector that asks what
 * Langfuse's OTLP endpoint asks (cbus-collector --langfuse): the path
 * /api/public/otel/v1/traces, Basic auth with the project's public and
 * secret key, x-langfuse-ingestion-version: 4.  Then what Langfuse reads
 * from the spans (its OTLP ingestion docs): langfuse.observation.type on
 * every span (retrieval and invoke_workflow do not map by
 * gen_ai.operation.name), langfuse.user.id / langfuse.session.id, the model
 * and token counts of generations. */
Test(export_daemon, langfuse_profile_sends_what_langfuse_reads)
{
    cr_assert_eq(collector_start(&col, dir, 0, (const char *[]){"--parse", "--langfuse", "pk-lf-test:sk-lf-secret", NULL}), 0);
    setenv("CBUS_TEST_LF_PK", "pk-lf-test", 1);
    setenv("CBUS_TEST_LF_SK", "sk-lf-secret", 1);
    char extra[512];
    snprintf(extra, sizeof extra,
             "[langfuse]\nhost = http://127.0.0.1:%u/\npublic_key_env = CBUS_TEST_LF_PK\nsecret_key_env = CBUS_TEST_LF_SK\n"
             "[export]\ncapture_content = true\n"
             "[cost]\nprices = " CBUS_SOURCE_DIR "/consumers/cost/model_prices_and_context_window.json\n",
             col.port);
    /* the profile sets the endpoint: the common part's is replaced */
    cr_assert_eq(exporter_start(&ex, dir, bus, config(col.port, extra)), 0);
    char uuids[1][3][37];
    agent_turn(0, uuids); /* agent, generation, tool */
    cbus_ctx wf, rv, ch;
    cbus_ctx_init(&wf);
    cbus_ctx_set_user(&wf, "bob");
    cbus_ctx_set_session(&wf, "s-2");
    cr_assert_eq(cbus_ctx_add_tag(&wf, "prod"), 0);
    cr_assert_eq(cbus_ctx_add_tag(&wf, "eval"), 0);
    cr_assert_eq(cbus_ctx_set_metadata(&wf, "team", "search"), 0);
    const char *question = "What does the cbus bus carry, and how are bodies stored?";
    cr_assert_eq(cbus_chain_start(prod, &wf, "RetrievalQA", question), 0);
    cbus_ctx_child(&rv, &wf);
    cr_assert_eq(cbus_retriever_start(prod, &rv, "docs", "q"), 0);
    cr_assert_eq(cbus_retriever_end(prod, &rv, 2), 0);
    cbus_ctx_child(&ch, &wf);
    cbus_ctx_set_model(&ch, "gpt-4o");
    static const char msgs[] =
        "[{\"role\":\"system\",\"parts\":[{\"type\":\"text\",\"content\":\"Answer from the documents.\"}]},"
        "{\"role\":\"user\",\"parts\":[{\"type\":\"text\",\"content\":\"What does the cbus bus carry?\"}]}]";
    static const char answer[] =
        "[{\"role\":\"assistant\",\"parts\":[{\"type\":\"text\",\"content\":\"LLM callback events.\"}],"
        "\"finish_reason\":\"stop\"}]";
    cr_assert_eq(cbus_chat_model_start_messages(prod, &ch, msgs, sizeof msgs - 1, "What does the cbus bus carry?", NULL), 0);
    struct cbus_usage u = {.input_tokens = 50, .output_tokens = 5, .usage_present = CBUS_USAGE_INPUT | CBUS_USAGE_OUTPUT};
    cr_assert_eq(cbus_llm_end_messages(prod, &ch, &u, answer, sizeof answer - 1), 0);
    cr_assert_eq(cbus_chain_end(prod, &wf, NULL), 0);
    cr_assert_eq(wait_for(get_collector, &col, "spans", 6, 10000), 6);
    cr_assert_eq(exporter_stop(&ex, 10000), 0);
    collector_stop(&col);
    cr_assert_eq(collector_stat(&col, "unauthorized"), 0);
    cr_assert_eq(collector_stat(&col, "bad"), 0);
    cJSON *root = decode();
    cJSON *spans = cJSON_GetObjectItem(root, "spans");
    cr_assert_eq(cJSON_GetArraySize(spans), 6);
    static const struct { const char *name, *type, *user; } want[] = {
        {"invoke_agent planner", "agent", "alice"},
        {"chat claude-sonnet-4", "generation", "alice"},
        {"execute_tool search", "tool", "alice"},
        {"invoke_workflow RetrievalQA", "chain", "bob"},
        {"retrieval docs", "retriever", NULL}, /* the child context carries no user */
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        cJSON *sp = NULL, *it;
        cJSON_ArrayForEach(it, spans) if (!strcmp(s_of(it, "name"), want[i].name)) sp = it;
        cr_assert_not_null(sp, "no span %s", want[i].name);
        cr_assert_str_eq(attr(sp, "langfuse.observation.type")->valuestring, want[i].type, "%s", want[i].name);
        if (want[i].user) {
            cr_assert_str_eq(attr(sp, "langfuse.user.id")->valuestring, want[i].user);
            cr_assert_str_eq(attr(sp, "user.id")->valuestring, want[i].user);
        }
        if (!strcmp(want[i].type, "generation")) {
            cr_assert_str_eq(attr(sp, "langfuse.session.id")->valuestring, "s-1");
            cr_assert_str_eq(attr(sp, "gen_ai.request.model")->valuestring, "claude-sonnet-4");
            cr_assert_eq(attr(sp, "gen_ai.usage.input_tokens")->valueint, 1000);
            cr_assert_eq(attr(sp, "gen_ai.usage.output_tokens")->valueint, 20);
            /* content (capture_content): what Langfuse shows as input and output */
            cr_assert_str_eq(attr(sp, "langfuse.observation.input")->valuestring, "q");
            cr_assert_str_eq(attr(sp, "langfuse.observation.output")->valuestring, "Hello");
        }
    }
    /* tags and metadata: the trace's from its root span, every span's own */
    cJSON *sp = NULL, *it;
    cJSON_ArrayForEach(it, spans) if (!strcmp(s_of(it, "name"), "invoke_workflow RetrievalQA")) sp = it;
    cJSON *tags = attr(sp, "langfuse.trace.tags");
    cr_assert(cJSON_IsArray(tags) && cJSON_GetArraySize(tags) == 2);
    cr_assert_str_eq(cJSON_GetArrayItem(tags, 0)->valuestring, "prod");
    cr_assert_str_eq(cJSON_GetArrayItem(tags, 1)->valuestring, "eval");
    cr_assert_str_eq(attr(sp, "langfuse.trace.metadata.team")->valuestring, "search");
    cr_assert_str_eq(attr(sp, "langfuse.observation.metadata.team")->valuestring, "search");
    cr_assert_str_eq(attr(sp, "langfuse.observation.input")->valuestring, question, "the whole text, from the body");
    cr_assert_null(attr(sp, "langfuse.observation.output"), "chain_end had no output");
    cJSON_ArrayForEach(it, spans) if (!strcmp(s_of(it, "name"), "chat gpt-4o")) sp = it;
    cr_assert_str_eq(attr(sp, "langfuse.observation.type")->valuestring, "generation");
    cr_assert_str_eq(attr(sp, "langfuse.observation.input")->valuestring, msgs);
    cr_assert_str_eq(attr(sp, "langfuse.observation.output")->valuestring, answer);
    cr_assert_str_eq(attr(sp, "langfuse.observation.metadata.team")->valuestring, "search", "inherited by the child");
    cr_assert_null(attr(sp, "langfuse.trace.metadata.team"), "only the root sets trace metadata");
    cr_assert_eq(cJSON_GetArraySize(attr(sp, "langfuse.trace.tags")), 2);
    /* cost from cbus-cost's table and code: LiteLLM's gpt-4o, 50 in at
     * 2.5e-6 and 5 out at 1e-5 USD per token */
    cr_assert_float_eq(attr(sp, "gen_ai.usage.cost")->valuedouble, 0.000175, 1e-15);
    cJSON *cd = cJSON_Parse(attr(sp, "langfuse.observation.cost_details")->valuestring);
    cr_assert_not_null(cd);
    cr_assert_float_eq(cJSON_GetObjectItem(cd, "input")->valuedouble, 0.000125, 1e-15);
    cr_assert_float_eq(cJSON_GetObjectItem(cd, "output")->valuedouble, 0.00005, 1e-15);
    cr_assert_float_eq(cJSON_GetObjectItem(cd, "total")->valuedouble, 0.000175, 1e-15);
    cr_assert_null(cJSON_GetObjectItem(cd, "input_cache_read"), "not reported: not charged, not shown");
    cJSON_Delete(cd);
    cJSON_ArrayForEach(it, spans) if (!strcmp(s_of(it, "name"), "chat claude-sonnet-4")) sp = it;
    cr_assert_null(attr(sp, "gen_ai.usage.cost"), "a model the table does not know has no cost");
    cJSON_Delete(root);
}

/* Content capture through the real daemon, default profile and encoding
 * (protobuf): bodies are read from the bus, a prompt longer than the cap is
 * cut and listed, text is wrapped as one message, invalid UTF-8 arrives as
 * U+FFFD, an error's whole message is the status; decoded by Google's
 * protobuf runtime. */
Test(export_daemon, content_capture_sends_messages_tool_texts_and_cuts)
{
    cr_assert_eq(collector_start(&col, dir, 0, (const char *[]){"--parse", NULL}), 0);
    cr_assert_eq(exporter_start(&ex, dir, bus, config(col.port, "[export]\ncapture_content = true\n"
                                                                 "content_max_bytes = 4k\n")), 0);
    static char prompt[20000];
    memset(prompt, 'p', sizeof prompt - 1);
    memcpy(prompt, "bad \xff byte ", 11);
    cbus_ctx c, t;
    cbus_ctx_init(&c);
    cbus_ctx_set_model(&c, "m-content");
    cr_assert_eq(cbus_chat_model_start(prod, &c, prompt, NULL), 0);
    struct cbus_usage u = {.input_tokens = 5, .output_tokens = 1, .usage_present = CBUS_USAGE_INPUT | CBUS_USAGE_OUTPUT,
                           .finish_reason = CBUS_FINISH_STOP};
    cr_assert_eq(cbus_llm_end(prod, &c, &u, "Paris is the capital of France, and its largest city."), 0);
    cbus_ctx_init(&t);
    cr_assert_eq(cbus_tool_start(prod, &t, "geo", "{\"city\":\"Paris\",\"fields\":[\"population\",\"area\"]}"), 0);
    static char msg[1000];
    memset(msg, 'e', sizeof msg - 1);
    cr_assert_eq(cbus_tool_error(prod, &t, "LookupError", msg), 0);
    /* instructions apart from the history, and the response id at the end */
    cbus_ctx s;
    cbus_ctx_init(&s);
    cbus_ctx_set_model(&s, "m-system");
    const char *sys = "[{\"type\":\"text\",\"content\":\"You are a geography tutor.\"}]";
    const char *hist = "[{\"role\":\"user\",\"parts\":[{\"type\":\"text\",\"content\":\"Capital of Italy?\"}]}]";
    cr_assert_eq(cbus_chat_model_start_system(prod, &s, hist, strlen(hist), sys, strlen(sys), "Capital of Italy?", NULL), 0);
    cr_assert_eq(cbus_llm_end_response(prod, &s, &u, "Rome.", NULL, 0, "chatcmpl-B9xYz"), 0);
    cr_assert_eq(wait_for(get_collector, &col, "spans", 3, 10000), 3);
    cr_assert_eq(exporter_stop(&ex, 10000), 0);
    collector_stop(&col);
    cr_assert_eq(collector_stat(&col, "bad"), 0);
    cr_assert_gt(collector_stat(&col, "protobuf"), 0, "the default encoding");
    cJSON *root = decode();
    cJSON *spans = cJSON_GetObjectItem(root, "spans"), *chat = NULL, *tool = NULL, *it;
    cJSON_ArrayForEach(it, spans) {
        if (!strcmp(s_of(it, "name"), "chat m-content"))
            chat = it;
        if (!strcmp(s_of(it, "name"), "execute_tool geo"))
            tool = it;
    }
    cr_assert(chat && tool);
    cJSON *im = cJSON_Parse(attr(chat, "gen_ai.input.messages")->valuestring);
    cr_assert_not_null(im, "the wrapped prompt is JSON");
    cJSON *m0 = cJSON_GetArrayItem(im, 0);
    cr_assert_str_eq(cJSON_GetObjectItem(m0, "role")->valuestring, "user");
    const char *txt = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(m0, "parts"), 0), "content")->valuestring;
    cr_assert_eq(strncmp(txt, "bad \xef\xbf\xbd byte ", 13), 0, "invalid UTF-8 as U+FFFD: %.20s", txt);
    cr_assert_eq(strlen(txt), 4096 + 2, "cut to the 4k cap (the bad byte became 3): %zu", strlen(txt));
    cJSON_Delete(im);
    cJSON *cut = attr(chat, "cbus.content.cut");
    cr_assert(cJSON_IsArray(cut) && cJSON_GetArraySize(cut) == 1);
    cr_assert_str_eq(cJSON_GetArrayItem(cut, 0)->valuestring, "gen_ai.input.messages");
    cJSON *om = cJSON_Parse(attr(chat, "gen_ai.output.messages")->valuestring);
    cJSON *o0 = cJSON_GetArrayItem(om, 0);
    cr_assert_str_eq(cJSON_GetObjectItem(o0, "role")->valuestring, "assistant");
    cr_assert_str_eq(cJSON_GetObjectItem(o0, "finish_reason")->valuestring, "stop");
    cr_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(o0, "parts"), 0), "content")->valuestring,
                     "Paris is the capital of France, and its largest city.");
    cJSON_Delete(om);
    cr_assert_str_eq(attr(tool, "gen_ai.tool.call.arguments")->valuestring,
                     "{\"city\":\"Paris\",\"fields\":[\"population\",\"area\"]}");
    cr_assert_eq(strlen(s_of(tool, "status_message")), sizeof msg - 1, "the whole error message");
    cr_assert_null(attr(tool, "gen_ai.tool.call.result"));
    cJSON *sc = NULL;
    cJSON_ArrayForEach(it, spans) if (!strcmp(s_of(it, "name"), "chat m-system")) sc = it;
    cr_assert_not_null(sc);
    cr_assert_str_eq(attr(sc, "gen_ai.system_instructions")->valuestring, sys);
    cr_assert_str_eq(attr(sc, "gen_ai.input.messages")->valuestring, hist);
    cr_assert_str_eq(attr(sc, "gen_ai.response.id")->valuestring, "chatcmpl-B9xYz");
    cr_assert_null(attr(chat, "gen_ai.response.id"));
    cr_assert_null(attr(chat, "gen_ai.system_instructions"));
    cJSON_Delete(root);
}

/* The [phoenix] profile against a collector that answers 415 to anything
 * but protobuf, as Phoenix does (cbus-collector --phoenix), then what
 * Phoenix reads (OpenInference): the span kinds, the model and token counts
 * of LLM spans, input and output values with their MIME types, the project. */
Test(export_daemon, phoenix_profile_sends_openinference)
{
    cr_assert_eq(collector_start(&col, dir, 0, (const char *[]){"--parse", "--phoenix", NULL}), 0);
    char extra[512];
    snprintf(extra, sizeof extra, "[phoenix]\nhost = http://127.0.0.1:%u/\nproject = cbus-test\n"
                                  "[export]\ncapture_content = true\n", col.port);
    cr_assert_eq(exporter_start(&ex, dir, bus, config(col.port, extra)), 0);
    char uuids[1][3][37];
    agent_turn(0, uuids); /* agent, generation, tool */
    /* a chat with instructions and a retriever with documents: what
     * Phoenix's LLM and retriever panes read, flattened */
    cbus_ctx s, r;
    cbus_ctx_init(&s);
    cbus_ctx_set_model(&s, "m-oi");
    const char *sys = "Answer in French.";
    const char *hist = "[{\"role\":\"user\",\"parts\":[{\"type\":\"text\",\"content\":\"Capital of Italy?\"}]}]";
    cr_assert_eq(cbus_chat_model_start_system(prod, &s, hist, strlen(hist), sys, strlen(sys), NULL, NULL), 0);
    cr_assert_eq(cbus_llm_end_response(prod, &s, NULL, "Rome.", NULL, 0, "msg_01abc"), 0);
    cbus_ctx_init(&r);
    cr_assert_eq(cbus_retriever_start(prod, &r, "kb", "capital of Italy"), 0);
    cr_assert_eq(cbus_retriever_end_documents(prod, &r, 2,
                                              "[{\"id\":\"it-1\",\"content\":\"Rome is the capital of Italy.\","
                                              "\"metadata\":{\"src\":\"wiki\"}},{\"id\":\"it-2\",\"content\":\"Milan.\"}]"),
                 0);
    cr_assert_eq(wait_for(get_collector, &col, "spans", 5, 10000), 5);
    cr_assert_eq(exporter_stop(&ex, 10000), 0);
    collector_stop(&col);
    cr_assert_eq(collector_stat(&col, "unauthorized"), 0, "every body was protobuf");
    cr_assert_eq(collector_stat(&col, "bad"), 0);
    cr_assert_eq(collector_stat(&col, "protobuf"), collector_stat(&col, "requests"));
    cJSON *root = decode();
    cJSON *spans = cJSON_GetObjectItem(root, "spans");
    static const struct { const char *name, *kind, *in, *out; } want[] = {
        {"invoke_agent planner", "AGENT", "question", "done"},
        {"chat claude-sonnet-4", "LLM", "q", "Hello"},
        {"execute_tool search", "TOOL", "weather", "sunny"},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        cJSON *sp = NULL, *it;
        cJSON_ArrayForEach(it, spans) if (!strcmp(s_of(it, "name"), want[i].name)) sp = it;
        cr_assert_not_null(sp, "no span %s", want[i].name);
        cr_assert_str_eq(attr(sp, "openinference.span.kind")->valuestring, want[i].kind);
        cr_assert_str_eq(attr(sp, "input.value")->valuestring, want[i].in);
        cr_assert_str_eq(attr(sp, "input.mime_type")->valuestring, "text/plain");
        cr_assert_str_eq(attr(sp, "output.value")->valuestring, want[i].out);
        cr_assert_str_eq(attr(sp, "user.id")->valuestring, "alice");
        if (!strcmp(want[i].kind, "LLM")) {
            cr_assert_str_eq(attr(sp, "llm.model_name")->valuestring, "claude-sonnet-4");
            cr_assert_str_eq(attr(sp, "llm.provider")->valuestring, "anthropic");
            cr_assert_eq(attr(sp, "llm.token_count.prompt")->valueint, 1000);
            cr_assert_eq(attr(sp, "llm.token_count.completion")->valueint, 20);
            cr_assert_eq(attr(sp, "llm.token_count.total")->valueint, 1020);
            cr_assert_eq(attr(sp, "llm.token_count.prompt_details.cache_read")->valueint, 800);
            cr_assert_eq(attr(sp, "llm.token_count.prompt_details.cache_write")->valueint, 100);
            cr_assert_eq(attr(sp, "llm.token_count.completion_details.reasoning")->valueint, 5);
        }
        if (!strcmp(want[i].kind, "TOOL"))
            cr_assert_str_eq(attr(sp, "tool.name")->valuestring, "search");
    }
    cJSON *oi = NULL, *rs = NULL, *it;
    cJSON_ArrayForEach(it, spans) {
        if (!strcmp(s_of(it, "name"), "chat m-oi"))
            oi = it;
        if (!strcmp(s_of(it, "name"), "retrieval kb"))
            rs = it;
    }
    cr_assert(oi && rs);
    cr_assert_str_eq(attr(oi, "llm.input_messages.0.message.role")->valuestring, "system");
    cr_assert_str_eq(attr(oi, "llm.input_messages.0.message.content")->valuestring, "Answer in French.");
    cr_assert_str_eq(attr(oi, "llm.input_messages.1.message.role")->valuestring, "user");
    cr_assert_str_eq(attr(oi, "llm.input_messages.1.message.content")->valuestring, "Capital of Italy?");
    cr_assert_str_eq(attr(oi, "llm.output_messages.0.message.role")->valuestring, "assistant");
    cr_assert_str_eq(attr(oi, "llm.output_messages.0.message.content")->valuestring, "Rome.");
    cr_assert_str_eq(attr(oi, "gen_ai.response.id")->valuestring, "msg_01abc");
    cr_assert_str_eq(attr(rs, "openinference.span.kind")->valuestring, "RETRIEVER");
    cr_assert_str_eq(attr(rs, "retrieval.documents.0.document.id")->valuestring, "it-1");
    cr_assert_str_eq(attr(rs, "retrieval.documents.0.document.content")->valuestring, "Rome is the capital of Italy.");
    cr_assert_str_eq(attr(rs, "retrieval.documents.0.document.metadata")->valuestring, "{\"src\":\"wiki\"}");
    cr_assert_str_eq(attr(rs, "retrieval.documents.1.document.content")->valuestring, "Milan.");
    cJSON *res = cJSON_GetArrayItem(cJSON_GetObjectItem(root, "resources"), 0);
    cr_assert_str_eq(cJSON_GetObjectItem(res, "openinference.project.name")->valuestring, "cbus-test");
    cJSON_Delete(root);
}

/* A wrong key: Langfuse answers 401, which is final (dropped and counted,
 * never retried or spooled). */
Test(export_daemon, langfuse_wrong_key_is_rejected_not_retried)
{
    cr_assert_eq(collector_start(&col, dir, 0, (const char *[]){"--langfuse", "pk-lf-test:sk-lf-secret", NULL}), 0);
    setenv("CBUS_TEST_LF_PK", "pk-lf-test", 1);
    setenv("CBUS_TEST_LF_SK", "wrong", 1);
    char extra[512];
    snprintf(extra, sizeof extra,
             "[langfuse]\nhost = http://127.0.0.1:%u\npublic_key_env = CBUS_TEST_LF_PK\nsecret_key_env = CBUS_TEST_LF_SK\n",
             col.port);
    cr_assert_eq(exporter_start(&ex, dir, bus, config(col.port, extra)), 0);
    tool_span(0);
    cr_assert_eq(wait_for(get_exporter, &ex, "export.rejected_batches", 1, 10000), 1);
    cr_assert_eq(exporter_stat(&ex, "export.last_status"), 401);
    cr_assert_eq(exporter_stop(&ex, 10000), 0);
    collector_stop(&col);
    cr_assert_eq(collector_stat(&col, "unauthorized"), 1);
    cr_assert_eq(collector_stat(&col, "accepted"), 0);
    cr_assert_eq(collector_stat(&col, "requests"), 0, "refused before it counts as a request");
}

Test(export_daemon, retriever_end_pairs_with_its_start_not_a_tool_start)
{
    cr_assert_eq(collector_start(&col, dir, 0, NULL), 0);
    cr_assert_eq(exporter_start(&ex, dir, bus, config(col.port, NULL)), 0);
    /* a retriever run, start and end */
    cbus_ctx rv;
    cbus_ctx_init(&rv);
    cr_assert_eq(cbus_retriever_start(prod, &rv, "VectorStoreRetriever", "capital of France"), 0);
    cr_assert_eq(cbus_retriever_end(prod, &rv, 5), 0);
    char rv_uuid[37];
    cbus_id_uuid(rv_uuid, rv.tmpl.run_id);
    /* a tool start, then a retriever end with the same run id: a producer
     * bug; the end must not close the tool */
    cbus_ctx tl, bad;
    cbus_ctx_init(&tl);
    cr_assert_eq(cbus_tool_start(prod, &tl, "search", NULL), 0);
    cbus_ctx_init(&bad);
    cbus_ctx_set_run_id(&bad, tl.tmpl.run_id);
    cr_assert_eq(cbus_retriever_end(prod, &bad, 3), 0);
    char tl_uuid[37];
    cbus_id_uuid(tl_uuid, tl.tmpl.run_id);
    /* the retriever span and the unmatched end; the tool stays open */
    cr_assert_eq(wait_for(get_collector, &col, "spans", 2, 10000), 2);
    cr_assert_eq(exporter_stop(&ex, 10000), 0); /* exports the open tool, unfinished */
    collector_stop(&col);
    cr_assert_eq(collector_stat(&col, "spans"), 3);
    cJSON *root = decode();
    cJSON *spans = cJSON_GetObjectItem(root, "spans");
    cJSON *r = span_of_run(spans, rv_uuid);
    cr_assert_str_eq(attr(r, "cbus.run.kind")->valuestring, "retriever");
    cr_assert_str_eq(s_of(r, "name"), "retrieval VectorStoreRetriever");
    cr_assert_eq(cJSON_GetObjectItem(r, "kind")->valueint, 3, "a retrieval span is CLIENT");
    cr_assert_str_eq(attr(r, "gen_ai.operation.name")->valuestring, "retrieval");
    cr_assert_str_eq(attr(r, "gen_ai.data_source.id")->valuestring, "VectorStoreRetriever");
    cr_assert_eq(attr(r, "cbus.retriever.document_count")->valueint, 5);
    cr_assert_eq(cJSON_GetObjectItem(r, "status")->valueint, 1);
    cr_assert_null(attr(r, "cbus.run.start_missing"), "start and end are one span");
    cr_assert_eq(count_run(spans, rv_uuid), 1);
    int tools = 0, ends = 0;
    cJSON *s;
    cJSON_ArrayForEach(s, spans) {
        cJSON *id = attr(s, "cbus.run.id");
        if (!cJSON_IsString(id) || strcmp(id->valuestring, tl_uuid))
            continue;
        const char *kind = attr(s, "cbus.run.kind")->valuestring;
        if (!strcmp(kind, "tool")) {
            tools++;
            cr_assert(cJSON_IsTrue(attr(s, "cbus.run.unfinished")), "the tool never ended");
            cr_assert_null(attr(s, "cbus.retriever.document_count"));
            cr_assert_eq(cJSON_GetObjectItem(s, "status")->valueint, 0);
        } else {
            ends++;
            cr_assert_str_eq(kind, "retriever");
            cr_assert(cJSON_IsTrue(attr(s, "cbus.run.start_missing")), "an end with no matching start");
            cr_assert_eq(attr(s, "cbus.retriever.document_count")->valueint, 3);
        }
    }
    cr_assert_eq(tools, 1);
    cr_assert_eq(ends, 1);
    cJSON_Delete(root);
}

Test(export_daemon, rejected_batches_make_the_endpoint_not_ok_with_the_last_error)
{
    cr_assert_eq(collector_start(&col, dir, 0, (const char *[]){"--fail-first", "1000", "--status", "400", NULL}), 0);
    cr_assert_eq(exporter_start(&ex, dir, bus, config(col.port, NULL)), 0);
    cr_assert_eq(exporter_stat(&ex, "export.endpoint_ok"), 1, "OK before any answer");
    for (int i = 0; i < 10; i++)
        tool_span(i);
    cr_assert_eq(wait_for(get_exporter, &ex, "export.last_error.status", 400, 10000), 400);
    cJSON *st = status_snapshot();
    cr_assert_not_null(st);
    cr_assert_eq(num_at(st, "export", "endpoint_ok"), 0, "every batch rejected: not OK");
    cr_assert_geq(num_at(st, "export", "rejected_batches"), 1);
    cJSON *le = cJSON_GetObjectItem(cJSON_GetObjectItem(st, "export"), "last_error");
    cr_assert(cJSON_IsString(cJSON_GetObjectItem(le, "message")));
    cr_assert(strstr(cJSON_GetObjectItem(le, "message")->valuestring, "injected failure"),
              "the answer's start: %s", cJSON_GetObjectItem(le, "message")->valuestring);
    double at = cJSON_GetObjectItem(le, "unix_ms")->valuedouble;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    double now_ms = (double)now.tv_sec * 1e3 + (double)now.tv_nsec / 1e6;
    cr_assert(at > now_ms - 60000 && at <= now_ms + 1000, "last_error.unix_ms %.0f is not now (%.0f)", at, now_ms);
    cJSON_Delete(st);
}

/* Runs cbus-loadgen to completion on the test's bus; returns its summary. */
static cJSON *run_loadgen(unsigned requests)
{
    char prices[128], summary[128], nreq[16];
    snprintf(prices, sizeof prices, "%s/prices.json", dir);
    snprintf(summary, sizeof summary, "%s/loadgen.json", dir);
    snprintf(nreq, sizeof nreq, "%u", requests);
    FILE *f = fopen(prices, "w");
    cr_assert_not_null(f);
    /* a small LiteLLM-style table: two chat models, one with reasoning */
    fputs("{\"gpt-4o\":{\"mode\":\"chat\",\"input_cost_per_token\":2.5e-06,\"output_cost_per_token\":1e-05,"
          "\"litellm_provider\":\"openai\"},"
          "\"o3-mini\":{\"mode\":\"chat\",\"input_cost_per_token\":1.1e-06,\"output_cost_per_token\":4.4e-06,"
          "\"litellm_provider\":\"openai\",\"supports_reasoning\":true}}",
          f);
    fclose(f);
    pid_t parent = getpid();
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        child_die_with_parent(parent);
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0 && !getenv("CBUS_TEST_VERBOSE"))
            dup2(devnull, 1); /* its totals are read from the summary file */
        execl(CBUS_BINARY_DIR "/tools/loadgen/cbus-loadgen", "cbus-loadgen", "--bus", bus, "--prices", prices,
              "--requests", nreq, "--threads", "1", "--seed", "7", "--quiet", "--summary-json", summary,
              (char *)NULL);
        _exit(127);
    }
    int st = test_wait_pid(pid, 60000); /* kills and reaps it past the deadline */
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "cbus-loadgen: wait status %d", st);
    cJSON *sum = json_file(summary);
    cr_assert_not_null(sum, "no %s", summary);
    return sum;
}

Test(export_daemon, loadgen_traces_have_every_parent_and_ttft_within_the_span)
{
    /* The ring holds the whole run: loadgen first, with no consumer, then the
     * exporter from the oldest event.  No drop, no race. */
    recreate_bus(1u << 16, 0);
    cJSON *sum = run_loadgen(150);
    int64_t events = (int64_t)cJSON_GetObjectItem(sum, "events")->valuedouble;
    cr_assert_eq(cJSON_GetObjectItem(sum, "dropped")->valuedouble, 0);
    cr_assert_lt(events, 1 << 16, "the ring must hold the run");
    cJSON_Delete(sum);
    cr_assert_eq(collector_start(&col, dir, 0, NULL), 0);
    cr_assert_eq(exporter_start(&ex, dir, bus, config(col.port, "[bus]\nstart = oldest\n")), 0);
    cr_assert_eq(wait_for(get_exporter, &ex, "consumer.consumed", events, 30000), events);
    cr_assert_eq(exporter_stop(&ex, 10000), 0);
    collector_stop(&col);
    cr_assert_eq(exporter_stat(&ex, "consumer.lost"), 0);
    cr_assert_eq(exporter_stat(&ex, "export.sent_items"), exporter_stat(&ex, "export.items"), "all delivered");
    cr_assert_eq(exporter_stat(&ex, "export.spans.unfinished"), 0, "every run ended");
    cJSON *root = decode();
    cJSON *spans = cJSON_GetObjectItem(root, "spans");
    int n = cJSON_GetArraySize(spans), llm = 0, retrievers = 0, with_parent = 0;
    cr_assert_gt(n, 150);
    cJSON *s;
    cJSON_ArrayForEach(s, spans) {
        const char *kind = attr(s, "cbus.run.kind")->valuestring;
        if (*s_of(s, "parent")) {
            with_parent++;
            cJSON *p = span_by_id(spans, s_of(s, "parent"));
            cr_assert_not_null(p, "%s span %s: parent %s never arrived", kind, s_of(s, "span"), s_of(s, "parent"));
            cr_assert_str_eq(s_of(p, "trace"), s_of(s, "trace"));
        }
        cr_assert_null(attr(s, "cbus.run.start_missing"), "%s span without its start", kind);
        if (!strcmp(kind, "retriever")) {
            retrievers++;
            cr_assert_str_eq(s_of(span_by_id(spans, s_of(s, "parent")), "name"), "invoke_workflow RetrievalQA");
        }
        if (strcmp(kind, "chat_model") && strcmp(kind, "llm"))
            continue;
        cJSON *ttft = attr(s, "gen_ai.response.time_to_first_chunk");
        if (!ttft)
            continue; /* a failed attempt before any chunk */
        llm++;
        double dur = cJSON_GetObjectItem(s, "end")->valuedouble - cJSON_GetObjectItem(s, "start")->valuedouble;
        /* seconds from exact decimals: 1 ns of slack for the double */
        cr_assert_leq(ttft->valuedouble * 1e9, dur + 1, "%s: time to first chunk %.9f s > span %.0f ns",
                      s_of(s, "name"), ttft->valuedouble, dur);
    }
    cr_assert_gt(llm, 150, "every request has an LLM call");
    cr_assert_gt(retrievers, 0, "the retrieval path ran");
    cr_assert_gt(with_parent, 0);
    cJSON_Delete(root);
}

Test(export_daemon, an_accepted_batch_after_rejections_makes_the_endpoint_ok_again)
{
    cr_assert_eq(collector_start(&col, dir, 0, (const char *[]){"--fail-first", "1", "--status", "400", NULL}), 0);
    /* one request at a time: the first answer is the 400, every later one a 2xx */
    cr_assert_eq(exporter_start(&ex, dir, bus, config(col.port, "[export]\nmax_in_flight = 1\n")), 0);
    for (int i = 0; i < 10; i++)
        tool_span(i);
    cr_assert_eq(wait_for(get_exporter, &ex, "export.last_error.status", 400, 10000), 400);
    for (int i = 0; i < 10; i++)
        tool_span(i);
    cr_assert_geq(wait_for(get_exporter, &ex, "export.sent_batches", 1, 10000), 1);
    cJSON *st = status_snapshot();
    cr_assert_not_null(st);
    cr_assert_eq(num_at(st, "export", "endpoint_ok"), 1, "a 2xx after the 400s: OK again");
    cr_assert_eq(num_at(st, "export", "last_status"), 200);
    cJSON *le = cJSON_GetObjectItem(cJSON_GetObjectItem(st, "export"), "last_error");
    cr_assert_eq(cJSON_GetObjectItem(le, "status")->valueint, 400, "the last error stays on record");
    cJSON_Delete(st);
}

Test(export_daemon, otlp_every_run_once_with_attributes_and_links)
{
    cr_assert_eq(collector_start(&col, dir, 0, (const char *[]){"--parse", NULL}), 0);
    cr_assert_eq(exporter_start(&ex, dir, bus, config(col.port, "[export]\nmax_in_flight = 3\nbatch_max_items = 64\ngzip = true\n")), 0);
    enum { N = 200 };
    static char uuids[N][3][37];
    for (int i = 0; i < N; i++)
        agent_turn(i, uuids);
    cr_assert_eq(wait_for(get_collector, &col, "spans", 3 * N, 20000), 3 * N);
    cr_assert_eq(exporter_stop(&ex, 10000), 0, "clean exit on SIGTERM");
    collector_stop(&col);
    cr_assert_eq(collector_stat(&col, "spans"), 3 * N, "nothing extra: tokens are folded, not exported");
    cr_assert_leq(collector_stat(&col, "connections"), 3, "keep-alive: at most one connection per request slot");
    cr_assert_gt(collector_stat(&col, "requests"), 3);
    cr_assert_eq(collector_stat(&col, "gzip"), collector_stat(&col, "accepted"), "every body gzip-compressed");
    cr_assert_eq(collector_stat(&col, "protobuf"), collector_stat(&col, "accepted"), "protobuf is the default");
    cJSON *root = decode();
    cJSON *spans = cJSON_GetObjectItem(root, "spans");
    cr_assert_eq(cJSON_GetArraySize(spans), 3 * N);
    for (int i = 0; i < N; i++)
        for (int k = 0; k < 3; k++)
            cr_assert_eq(count_run(spans, uuids[i][k]), 1, "run %s arrived %d times", uuids[i][k],
                         count_run(spans, uuids[i][k]));
    int chats = 0, errors = 0;
    cJSON *s;
    cJSON_ArrayForEach(s, spans) {
        const char *kind = attr(s, "cbus.run.kind")->valuestring;
        if (!strcmp(kind, "chain")) {
            cr_assert_str_eq(s_of(s, "name"), "invoke_agent planner");
            cr_assert_str_eq(s_of(s, "parent"), "", "the agent is the root");
            continue;
        }
        /* every child links to its agent span, in the same trace */
        cJSON *parent = span_by_id(spans, s_of(s, "parent"));
        cr_assert_not_null(parent, "%s has no parent in the export", s_of(s, "name"));
        cr_assert_str_eq(s_of(parent, "name"), "invoke_agent planner");
        cr_assert_str_eq(s_of(parent, "trace"), s_of(s, "trace"));
        if (!strcmp(kind, "tool")) {
            cr_assert_str_eq(s_of(s, "name"), "execute_tool search");
            cr_assert_eq(cJSON_GetObjectItem(s, "kind")->valueint, 1);
            continue;
        }
        cr_assert_str_eq(kind, "chat_model");
        cr_assert_str_eq(s_of(s, "name"), "chat claude-sonnet-4");
        cr_assert_eq(cJSON_GetObjectItem(s, "kind")->valueint, 3);
        cr_assert_str_eq(attr(s, "gen_ai.provider.name")->valuestring, "anthropic");
        cr_assert_str_eq(attr(s, "user.id")->valuestring, "alice");
        cr_assert_str_eq(attr(s, "gen_ai.conversation.id")->valuestring, "s-1");
        cr_assert_eq(attr(s, "cbus.stream.chunks")->valueint, 2);
        cr_assert_not_null(attr(s, "gen_ai.response.time_to_first_chunk"));
        if (cJSON_GetObjectItem(s, "status")->valueint == 2) {
            errors++;
            cr_assert_str_eq(attr(s, "error.type")->valuestring, "RateLimitError");
            cr_assert_eq(attr(s, "http.response.status_code")->valueint, 429);
            cr_assert_null(attr(s, "gen_ai.usage.input_tokens"));
        } else {
            chats++;
            cr_assert_eq(cJSON_GetObjectItem(s, "status")->valueint, 1);
            cr_assert_eq(attr(s, "gen_ai.usage.input_tokens")->valueint, 1000);
            cr_assert_eq(attr(s, "gen_ai.usage.output_tokens")->valueint, 20);
            cr_assert_eq(attr(s, "gen_ai.usage.cache_read.input_tokens")->valueint, 800);
            cr_assert_eq(attr(s, "gen_ai.usage.cache_creation.input_tokens")->valueint, 100);
            cr_assert_eq(attr(s, "gen_ai.usage.reasoning.output_tokens")->valueint, 5);
            cr_assert_str_eq(cJSON_GetArrayItem(attr(s, "gen_ai.response.finish_reasons"), 0)->valuestring,
                             "tool_calls");
        }
    }
    cr_assert_eq(chats, N - N / 10);
    cr_assert_eq(errors, N / 10);
    cJSON_Delete(root);
}

Test(export_daemon, msgpack_gzip_every_event_once)
{
    int strict;
    const char *py = test_python(&strict);
    char probe[600];
    snprintf(probe, sizeof probe, "'%s' -c 'import msgpack' 2>/dev/null", py);
    if (system(probe))
        cbus_test_skip_or_fail("python3-msgpack is not installed for %s", py);
    cr_assert_eq(collector_start(&col, dir, 0, NULL), 0);
    /* msgpack takes the endpoint as the full URL */
    const char *cfg = config_path(col.port, "/ingest", "[export]\nformat = msgpack\ngzip = true\nbatch_max_items = 100\n");
    cr_assert_eq(exporter_start(&ex, dir, bus, cfg), 0);
    uint64_t first = cbus_bus_tail(cbus_producer_bus(prod));
    enum { TURNS = 150 };
    for (int i = 0; i < TURNS; i++)
        agent_turn(i, NULL);
    uint64_t last = cbus_bus_tail(cbus_producer_bus(prod));
    int64_t want = (int64_t)(last - first);
    cr_assert_eq(wait_for(get_collector, &col, "events", want, 20000), want);
    cr_assert_eq(exporter_stop(&ex, 10000), 0);
    collector_stop(&col);
    cr_assert_gt(collector_stat(&col, "gzip"), 0, "bodies arrived gzip-compressed");
    cJSON *root = decode();
    cJSON *evs = cJSON_GetObjectItem(root, "events");
    cr_assert_eq(cJSON_GetArraySize(evs), want);
    static unsigned char seen[TURNS * 10];
    memset(seen, 0, sizeof seen);
    int tokens = 0;
    cJSON *e;
    cJSON_ArrayForEach(e, evs) {
        uint64_t id = (uint64_t)cJSON_GetObjectItem(e, "event_id")->valuedouble;
        cr_assert(id >= first && id < last, "event id %llu out of range", (unsigned long long)id);
        cr_assert_eq(seen[id - first]++, 0, "event %llu arrived twice", (unsigned long long)id);
        if (!strcmp(s_of(e, "kind"), "llm_new_token"))
            tokens++;
    }
    cr_assert_eq(tokens, 2 * TURNS, "raw format: every event, tokens included");
    cJSON_Delete(root);
}

Test(export_daemon, endpoint_down_then_up_replays_spool_in_order)
{
    unsigned port = free_port();
    cr_assert_eq(exporter_start(&ex, dir, bus, config(port, "[export]\nbatch_max_items = 20\n")), 0);
    enum { N = 200 };
    for (int i = 0; i < N; i++)
        tool_span(i);
    /* all ten batches end up spooled while nothing listens */
    cr_assert_geq(wait_for(get_exporter, &ex, "export.spooled", N / 20, 10000), N / 20);
    cr_assert_eq(exporter_stat(&ex, "export.endpoint_ok"), 0);
    cr_assert_eq(exporter_stat(&ex, "export.sent_items"), 0);
    cr_assert_eq(collector_start(&col, dir, port, NULL), 0);
    cr_assert_eq(wait_for(get_collector, &col, "spans", N, 20000), N);
    cr_assert_geq(wait_for(get_exporter, &ex, "export.replayed", N / 20, 5000), N / 20);
    cr_assert_eq(exporter_stop(&ex, 10000), 0);
    collector_stop(&col);
    cJSON *root = decode();
    cJSON *spans = cJSON_GetObjectItem(root, "spans");
    cr_assert_eq(cJSON_GetArraySize(spans), N, "each span once");
    /* in order: the stored bodies (numbered by arrival) carry rising event ids */
    double prev = -1;
    cJSON *s;
    cJSON_ArrayForEach(s, spans) {
        double id = attr(s, "cbus.event.id")->valuedouble;
        cr_assert_gt(id, prev, "span with event id %.0f arrived after %.0f", id, prev);
        prev = id;
    }
    cJSON_Delete(root);
}

Test(export_daemon, retry_after_429_is_honoured)
{
    cr_assert_eq(collector_start(&col, dir, 0, (const char *[]){"--fail-first", "1", "--status", "429",
                                                                "--retry-after", "2", NULL}), 0);
    cr_assert_eq(exporter_start(&ex, dir, bus, config(col.port, "[export]\nretry_initial = 10ms\nretry_max = 20ms\n")), 0);
    for (int i = 0; i < 10; i++)
        tool_span(i);
    cr_assert_eq(wait_for(get_collector, &col, "spans", 10, 10000), 10);
    cr_assert_eq(exporter_stop(&ex, 10000), 0);
    collector_stop(&col);
    /* The backoff alone (10-20 ms) would have retried a hundred times in the
     * 2 s: one failure, one retry, and the retry came no sooner than the
     * Retry-After said (arrival times on one monotonic clock; the exporter
     * starts its wait after the answer, which is after the first arrival). */
    cr_assert_eq(collector_stat(&col, "failed"), 1);
    cr_assert_eq(collector_stat(&col, "requests"), 2, "retried before Retry-After elapsed");
    int64_t gap = collector_stat(&col, "post_ms.1") - collector_stat(&col, "post_ms.0");
    cr_assert_geq(gap, 1999, "the retry came %lld ms after the 429 with Retry-After: 2", (long long)gap);
}

Test(export_daemon, status_400_drops_the_batch_without_retry)
{
    cr_assert_eq(collector_start(&col, dir, 0, (const char *[]){"--fail-first", "1000", "--status", "400", NULL}), 0);
    cr_assert_eq(exporter_start(&ex, dir, bus, config(col.port, NULL)), 0);
    for (int i = 0; i < 10; i++)
        tool_span(i);
    cr_assert_eq(wait_for(get_exporter, &ex, "export.rejected_batches", 1, 10000), 1);
    /* A batch kept for a retry goes to the spool at the answer: in the same
     * snapshot as the rejection, nothing was kept. */
    cJSON *st = status_snapshot();
    cr_assert_not_null(st);
    cr_assert_eq(num_at(st, "export", "rejected_items"), 10);
    cr_assert_eq(num_at(st, "export", "retried"), 0);
    cr_assert_eq(num_at(st, "export", "spooled"), 0);
    cr_assert_eq(num_at(st, "export", "requests"), 1);
    cJSON_Delete(st);
    /* a clean stop sends whatever is still kept: still one request */
    cr_assert_eq(exporter_stop(&ex, 10000), 0);
    collector_stop(&col);
    cr_assert_eq(collector_stat(&col, "requests"), 1, "a 400 is never retried");
    cr_assert_eq(exporter_stat(&ex, "export.requests"), 1);
}

Test(export_daemon, partial_success_is_counted_not_retried)
{
    cr_assert_eq(collector_start(&col, dir, 0, (const char *[]){"--partial", "2", NULL}), 0);
    cr_assert_eq(exporter_start(&ex, dir, bus, config(col.port, NULL)), 0);
    for (int i = 0; i < 10; i++)
        tool_span(i);
    cr_assert_eq(wait_for(get_exporter, &ex, "export.partial_batches", 1, 10000), 1);
    cJSON *st = status_snapshot();
    cr_assert_not_null(st);
    cr_assert_eq(num_at(st, "export", "partial_rejected"), 2);
    cr_assert_eq(num_at(st, "export", "retried"), 0);
    cr_assert_eq(num_at(st, "export", "spooled"), 0, "nothing kept for a retry");
    cr_assert_eq(num_at(st, "export", "endpoint_ok"), 1, "a 2xx: the endpoint is fine");
    cJSON_Delete(st);
    cr_assert_eq(exporter_stop(&ex, 10000), 0);
    collector_stop(&col);
    cr_assert_eq(collector_stat(&col, "requests"), 1, "a partial success is not retried");
    cr_assert_eq(exporter_stat(&ex, "export.requests"), 1);
}

Test(export_daemon, slow_endpoint_does_not_hold_producers)
{
    cr_assert_eq(collector_start(&col, dir, 0, (const char *[]){"--delay-ms", "400", NULL}), 0);
    cr_assert_eq(exporter_start(&ex, dir, bus, config(col.port, "[bus]\nmode = lossy\n[export]\nbatch_max_items = 100\nmax_in_flight = 1\nqueue_batches = 1\n")), 0);
    for (int i = 0; i < 20000; i++)
        tool_span(i);
    struct cbus_producer_stats ps;
    cr_assert_eq(cbus_producer_stats(prod, &ps), 0);
    cr_assert_eq(ps.dropped, 0);
    cr_assert_eq(ps.waited_ns, 0, "a lossy exporter never makes a producer wait");
    cr_assert_geq(wait_for(get_collector, &col, "accepted", 1, 10000), 1, "the slow endpoint still gets data");
    cr_assert_eq(exporter_stop(&ex, 10000), 0);
}

Test(export_daemon, sigkill_and_restart_lose_nothing_acknowledged_lossless)
{
    cr_assert_eq(collector_start(&col, dir, 0, NULL), 0);
    const char *cfg = config(col.port, "[bus]\nmode = lossless\nstart = resume\n[export]\nbatch_max_items = 25\n");
    cr_assert_eq(exporter_start(&ex, dir, bus, cfg), 0);
    enum { N = 400 };
    static char uuids[N][37];
    for (int i = 0; i < N / 2; i++) {
        cbus_ctx c;
        cbus_ctx_init(&c);
        cbus_tool_start(prod, &c, "t", NULL);
        cbus_tool_end(prod, &c, NULL);
        cbus_id_uuid(uuids[i], c.tmpl.run_id);
    }
    /* kill it in the middle of its work */
    cr_assert_geq(wait_for(get_collector, &col, "spans", N / 8, 10000), N / 8);
    kill(ex.pid, SIGKILL);
    waitpid(ex.pid, NULL, 0);
    ex.pid = 0;
    for (int i = N / 2; i < N; i++) {
        cbus_ctx c;
        cbus_ctx_init(&c);
        cbus_tool_start(prod, &c, "t", NULL);
        cbus_tool_end(prod, &c, NULL);
        cbus_id_uuid(uuids[i], c.tmpl.run_id);
    }
    cr_assert_eq(exporter_start(&ex, dir, bus, cfg), 0, "restarts and resumes its cursor");
    cr_assert_geq(wait_for(get_collector, &col, "spans", N, 20000), N);
    cr_assert_eq(exporter_stop(&ex, 10000), 0);
    collector_stop(&col);
    cJSON *root = decode();
    cJSON *spans = cJSON_GetObjectItem(root, "spans");
    for (int i = 0; i < N; i++)
        cr_assert_geq(count_run(spans, uuids[i]), 1, "run %d (%s) was lost", i, uuids[i]);
    cJSON_Delete(root);
}

/* The consumer entry called name on the test's bus, once it is active and
 * tethered (a lossless consumer), waiting up to ms; NULL if it never is. */
static struct cbus_consumer_entry *tethered_entry(const char *name, unsigned ms)
{
    cbus_bus *b = cbus_producer_bus(prod);
    uint64_t end = test_now_ms() + ms;
    do {
        for (unsigned i = 0; i < CBUS_MAX_CONSUMERS; i++) {
            struct cbus_consumer_entry *e = cbus_bus_consumer_entry(b, i);
            if (atomic_load(&e->state) == CBUS_CSTATE_ACTIVE && !strncmp(e->name, name, sizeof e->name) &&
                (atomic_load(&e->flags) & CBUS_CFLAG_TETHERED))
                return e;
        }
        test_sleep_ms(5);
    } while (test_now_ms() < end);
    return NULL;
}

/* A write of tail past the ring (tail += 3 x capacity) leaves a lossless
 * exporter only skipped positions and no event.  Its producers must be
 * released (it acknowledges positions it holds nothing for: its floor is
 * the read position when idle) and every span emitted after that exported.
 * (The audit daemon's twin of this test failed before the library fix
 * 2c4aa77; the exporter commits its read position itself, so this one
 * guards that it keeps doing so.) */
Test(export_daemon, tail_jump_past_the_ring_releases_producers_lossless)
{
    enum { CAP = 1024, BEFORE = 20, AFTER = 50 };
    cbus_producer_close(prod);
    prod = NULL;
    cbus_bus_destroy(bus);
    struct cbus_create_opts o = {.capacity = CAP, .stall_timeout_ns = 300000000u};
    cr_assert_eq(cbus_bus_create(bus, &o), 0);
    cr_assert_eq(cbus_producer_open(&prod, bus, NULL), 0);
    cr_assert_eq(collector_start(&col, dir, 0, NULL), 0);
    cr_assert_eq(exporter_start(&ex, dir, bus, config(col.port, "[bus]\nmode = lossless\n[export]\nbatch_max_items = 10\n")), 0);
    cr_assert_not_null(tethered_entry("exp", 20000), "the exporter never tethered");
    static char uuids[BEFORE + 1 + AFTER][37];
    int n = 0;
    for (; n < BEFORE; n++) {
        cbus_ctx c;
        cbus_ctx_init(&c);
        cr_assert_eq(cbus_tool_start(prod, &c, "t", NULL), 0);
        cr_assert_eq(cbus_tool_end(prod, &c, NULL), 0);
        cbus_id_uuid(uuids[n], c.tmpl.run_id);
    }
    cr_assert_eq(wait_for(get_collector, &col, "spans", BEFORE, 20000), BEFORE);

    /* the hostile write */
    atomic_fetch_add((_Atomic uint64_t *)&cbus_bus_header(cbus_producer_bus(prod))->tail, 3 * CAP);

    /* Emits succeed again once the skipped positions are acknowledged. */
    cbus_ctx c;
    int rc;
    uint64_t end = test_now_ms() + 30000;
    do {
        cbus_ctx_init(&c);
        rc = cbus_tool_start(prod, &c, "t", NULL);
        cr_assert(rc == 0 || rc == -EAGAIN, "%s", cbus_strerror(rc));
        if (rc)
            test_sleep_ms(1);
    } while (rc && test_now_ms() < end);
    cr_assert_eq(rc, 0, "producers never released after the jump");
    cr_assert_eq(cbus_tool_end(prod, &c, NULL), 0);
    cbus_id_uuid(uuids[n++], c.tmpl.run_id);
    for (int i = 0; i < AFTER; i++, n++) {
        cbus_ctx_init(&c);
        cr_assert_eq(cbus_tool_start(prod, &c, "t", NULL), 0, "dropped after the release");
        cr_assert_eq(cbus_tool_end(prod, &c, NULL), 0, "dropped after the release");
        cbus_id_uuid(uuids[n], c.tmpl.run_id);
    }
    cr_assert_eq(wait_for(get_collector, &col, "spans", n, 20000), n);
    cr_assert_eq(exporter_stop(&ex, 10000), 0);
    collector_stop(&col);
    cr_assert_eq(collector_stat(&col, "spans"), n, "every span once");
    cJSON *root = decode();
    cJSON *spans = cJSON_GetObjectItem(root, "spans");
    for (int i = 0; i < n; i++)
        cr_assert_eq(count_run(spans, uuids[i]), 1, "run %d (%s)", i, uuids[i]);
    cJSON_Delete(root);
}

/* Threads of the test process, each emitting tool spans on its own lane. */
struct lane_spans {
    pthread_barrier_t *go, *mid; /* mid: NULL = one phase */
    int first, n, open;           /* open: runs started in phase 1, ended in phase 2 */
    char (*uuids)[37];
    int failed;
};

static void span_once(struct lane_spans *t, int i)
{
    cbus_ctx c;
    cbus_ctx_init(&c);
    if (cbus_tool_start(prod, &c, "t", NULL) || cbus_tool_end(prod, &c, NULL)) {
        t->failed++;
        return;
    }
    cbus_id_uuid(t->uuids[i], c.tmpl.run_id);
}

static void *lane_spans_thread(void *arg)
{
    struct lane_spans *t = arg;
    pthread_barrier_wait(t->go); /* all threads hold a lane at once: four lanes */
    cbus_ctx open[16];
    int i = t->first, end = t->first + t->n;
    for (int k = 0; k < t->open; k++, i++) {
        cbus_ctx_init(&open[k]);
        if (cbus_tool_start(prod, &open[k], "t", NULL))
            t->failed++;
        cbus_id_uuid(t->uuids[i], open[k].tmpl.run_id);
    }
    int half = t->mid ? (end - i) / 2 : end - i;
    for (int k = 0; k < half; k++, i++)
        span_once(t, i);
    if (t->mid) {
        pthread_barrier_wait(t->mid); /* the test kills the exporter */
        pthread_barrier_wait(t->mid);
        for (int k = 0; k < t->open; k++) /* same thread, same lane as the start */
            if (cbus_tool_end(prod, &open[k], NULL))
                t->failed++;
    }
    for (; i < end; i++)
        span_once(t, i);
    return NULL;
}

/* threads x per spans, run i's uuid in uuids[first + i]; with mid (threads +
 * 1 parties), each thread first starts `open` runs, emits half its spans,
 * waits twice at mid (the caller acts in between), ends those runs and emits
 * the rest.  Returns the failed emits. */
static int emit_on_lanes(int threads, int first, int per, int open, char (*uuids)[37],
                         pthread_barrier_t *mid, void (*between)(void))
{
    pthread_t th[8];
    struct lane_spans t[8];
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, (unsigned)threads);
    for (int k = 0; k < threads; k++) {
        t[k] = (struct lane_spans){&go, mid, first + k * per, per, open, uuids, 0};
        cr_assert_eq(pthread_create(&th[k], NULL, lane_spans_thread, &t[k]), 0);
    }
    if (mid) {
        pthread_barrier_wait(mid);
        between();
        pthread_barrier_wait(mid);
    }
    int failed = 0;
    for (int k = 0; k < threads; k++) {
        pthread_join(th[k], NULL);
        failed += t[k].failed;
    }
    pthread_barrier_destroy(&go);
    return failed;
}

enum { LT = 4, LPER = 200, LOPEN = 8, LN = LT * LPER, LM = LT * 50 };

/* Between the phases: once every finished span of phase 1 is delivered (the
 * runs left open are all the exporter holds), SIGKILL. */
static void kill_exporter_holding_open_runs(void)
{
    int64_t want = LT * (LPER - LOPEN) / 2;
    cr_assert_geq(wait_for(get_collector, &col, "spans", want, 20000), want);
    kill(ex.pid, SIGKILL);
    waitpid(ex.pid, NULL, 0);
    ex.pid = 0;
}

/* Every span exported for run uuid had its start and its end. */
static int run_complete(cJSON *spans, const char *uuid)
{
    int n = 0;
    cJSON *s;
    cJSON_ArrayForEach(s, spans) {
        cJSON *r = attr(s, "cbus.run.id");
        if (!cJSON_IsString(r) || strcmp(r->valuestring, uuid))
            continue;
        if (attr(s, "cbus.run.start_missing") || attr(s, "cbus.run.unfinished"))
            return -1;
        n++;
    }
    return n;
}

/* Lossless on a bus of four lanes (issue 13): four threads on four lanes,
 * each with runs open (held in memory, so their starts must not be
 * acknowledged in any lane) when the exporter is SIGKILLed; restarted from
 * the dead entry's per-lane cursor, it re-reads them: every run is
 * exported with its start and end, none lost.  Then a clean stop saves the
 * position of every lane, and the next run sends exactly the spans emitted
 * meanwhile, each once. */
Test(export_daemon, lossless_on_four_lanes_sigkill_and_clean_restart_lose_nothing)
{
    cbus_producer_close(prod);
    prod = NULL;
    cbus_bus_destroy(bus);
    /* a lane of 1024 slots holds everything emitted while the exporter is down */
    struct cbus_create_opts o = {.capacity = 4096, .lanes = 4};
    cr_assert_eq(cbus_bus_create(bus, &o), 0);
    cr_assert_eq(cbus_producer_open(&prod, bus, NULL), 0);
    cr_assert_eq(collector_start(&col, dir, 0, NULL), 0);
    const char *cfg = config(col.port, "[bus]\nmode = lossless\nstart = resume\n"
                                       "[export]\nbatch_max_items = 25\n");
    cr_assert_eq(exporter_start(&ex, dir, bus, cfg), 0);
    cr_assert_not_null(tethered_entry("exp", 20000), "the exporter never tethered");
    static char uuids[LN + LM][37];
    pthread_barrier_t mid;
    pthread_barrier_init(&mid, NULL, LT + 1);
    cr_assert_eq(emit_on_lanes(LT, 0, LPER, LOPEN, uuids, &mid, kill_exporter_holding_open_runs), 0);
    pthread_barrier_destroy(&mid);
    cbus_bus *b = cbus_producer_bus(prod);
    for (unsigned L = 0; L < 4; L++)
        cr_assert_gt(cbus_bus_lane_tail(b, L), 0, "lane %u carried no event", L);
    cr_assert_eq(exporter_start(&ex, dir, bus, cfg), 0, "restarts from the dead entry's cursor");
    cr_assert_geq(wait_for(get_collector, &col, "spans", LN, 20000), LN);
    cr_assert_eq(exporter_stop(&ex, 10000), 0);

    /* The clean stop saved every lane's position. */
    char path[128], line[512] = "";
    snprintf(path, sizeof path, "%s/spool/cursor", dir);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "no saved cursor");
    cr_assert_not_null(fgets(line, sizeof line, f));
    fclose(f);
    unsigned long long id, sum, lanes, w[4];
    cr_assert_eq(sscanf(line, "%llu %llu %llu %llu %llu %llu %llu", &id, &sum, &lanes, &w[0], &w[1],
                        &w[2], &w[3]), 7, "%s", line);
    cr_assert_eq(lanes, 4, "%s", line);
    for (unsigned L = 0; L < 4; L++)
        cr_assert_eq(w[L], cbus_bus_lane_tail(b, L), "lane %u saved at %llu, tail %llu", L, w[L],
                     (unsigned long long)cbus_bus_lane_tail(b, L));

    cr_assert_eq(emit_on_lanes(LT, LN, LM / LT, 0, uuids, NULL, NULL), 0); /* no exporter runs */
    /* Counted before the exporter starts: it sends at once what is waiting,
     * and a count taken after its start could already include some of it
     * (then the wait below never ends, seen under load).  The collector's
     * total is not compared afterwards either; each new run is counted by
     * its id below, and the clean stop delivers every one of them. */
    int64_t before = collector_stat(&col, "spans");
    cr_assert_eq(exporter_start(&ex, dir, bus, cfg), 0);
    cr_assert_geq(wait_for(get_collector, &col, "spans", before + LM, 20000), before + LM);
    cr_assert_eq(exporter_stop(&ex, 10000), 0);
    collector_stop(&col);
    cr_assert_eq(exporter_stat(&ex, "export.sent_items"), LM, "the last run sent only the new spans");
    cJSON *root = decode();
    cJSON *spans = cJSON_GetObjectItem(root, "spans");
    for (int i = 0; i < LN; i++)
        cr_assert_geq(run_complete(spans, uuids[i]), 1, "run %d (%s) lost, or exported without "
                      "its start or end", i, uuids[i]);
    for (int i = LN; i < LN + LM; i++)
        cr_assert_eq(count_run(spans, uuids[i]), 1, "run %d (%s): nothing twice after a clean stop",
                     i, uuids[i]);
    cJSON_Delete(root);
}

Test(export_daemon, bad_config_exits_2_naming_the_line)
{
    char path[128], cmd[512];
    snprintf(path, sizeof path, "%s/bad.ini", dir);
    FILE *f = fopen(path, "w");
    fputs("[export]\nformat = otlp\nmax_in_flight = many\n", f);
    fclose(f);
    snprintf(cmd, sizeof cmd, CBUS_BINARY_DIR "/consumers/export/cbus-export --bus %s --config %s 2>%s/err.txt",
             bus, path, dir);
    int st = system(cmd);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2, "exit status %d", st);
    snprintf(path, sizeof path, "%s/err.txt", dir);
    f = fopen(path, "r");
    char line[512] = "";
    cr_assert_not_null(fgets(line, sizeof line, f));
    fclose(f);
    cr_assert(strstr(line, "bad.ini:3: [export] max_in_flight:"), "%s", line);
}

Test(export_daemon, clean_restart_continues_at_the_saved_cursor)
{
    cr_assert_eq(collector_start(&col, dir, 0, NULL), 0);
    const char *cfg = config(col.port, "[bus]\nstart = resume\n");
    cr_assert_eq(exporter_start(&ex, dir, bus, cfg), 0);
    for (int i = 0; i < 50; i++)
        tool_span(i);
    cr_assert_eq(wait_for(get_collector, &col, "spans", 50, 10000), 50);
    cr_assert_eq(exporter_stop(&ex, 10000), 0);
    /* emitted while no exporter runs */
    for (int i = 0; i < 70; i++)
        tool_span(i);
    cr_assert_eq(exporter_start(&ex, dir, bus, cfg), 0);
    cr_assert_eq(wait_for(get_collector, &col, "spans", 120, 10000), 120);
    /* a clean stop flushes everything the second run holds: after it,
     * nothing more can come */
    cr_assert_eq(exporter_stop(&ex, 10000), 0);
    collector_stop(&col);
    cr_assert_eq(exporter_stat(&ex, "export.sent_items"), 70, "the second run sent only the new spans");
    cr_assert_eq(collector_stat(&col, "spans"), 120, "nothing twice after a clean stop");
}

/* The daemons' resume policy (consumers/daemon/attach.h, case 2): the
 * cursor a clean stop saved belongs to a bus that was re-created while no
 * exporter ran; the new bus is read from its OLDEST event, so the spans
 * emitted on it before the restart are exported.  (Export used to start at
 * the newest event here and sent none of them.) */
Test(export_daemon, saved_cursor_of_a_recreated_bus_reads_the_new_bus_from_its_oldest_event)
{
    cr_assert_eq(collector_start(&col, dir, 0, NULL), 0);
    const char *cfg = config(col.port, "[bus]\nstart = resume\n");
    cr_assert_eq(exporter_start(&ex, dir, bus, cfg), 0);
    for (int i = 0; i < 50; i++)
        tool_span(i);
    cr_assert_eq(wait_for(get_collector, &col, "spans", 50, 10000), 50);
    cr_assert_eq(exporter_stop(&ex, 10000), 0);
    recreate_bus(0, 0); /* emitted on the new bus while no exporter runs */
    for (int i = 0; i < 70; i++)
        tool_span(i);
    cr_assert_eq(exporter_start(&ex, dir, bus, cfg), 0);
    cr_assert_eq(wait_for(get_collector, &col, "spans", 120, 10000), 120);
    cr_assert_eq(exporter_stop(&ex, 10000), 0);
    collector_stop(&col);
    cr_assert_eq(exporter_stat(&ex, "export.sent_items"), 70);
    cr_assert_eq(collector_stat(&col, "spans"), 120);
}

Test(export_daemon, dropped_connection_is_retried)
{
    cr_assert_eq(collector_start(&col, dir, 0, (const char *[]){"--drop-first", "1", NULL}), 0);
    cr_assert_eq(exporter_start(&ex, dir, bus, config(col.port, NULL)), 0);
    for (int i = 0; i < 10; i++)
        tool_span(i);
    cr_assert_eq(wait_for(get_collector, &col, "spans", 10, 10000), 10);
    cr_assert_eq(collector_stat(&col, "dropped"), 1);
    cr_assert_geq(wait_for(get_exporter, &ex, "export.retried", 1, 2000), 1);
}

Test(export_daemon, spool_survives_a_restart_while_the_endpoint_is_down)
{
    unsigned port = free_port();
    const char *cfg = config(port, "[export]\nbatch_max_items = 10\nshutdown_timeout = 200ms\n");
    cr_assert_eq(exporter_start(&ex, dir, bus, cfg), 0);
    for (int i = 0; i < 50; i++)
        tool_span(i);
    cr_assert_geq(wait_for(get_exporter, &ex, "export.spooled", 5, 10000), 5);
    cr_assert_eq(exporter_stop(&ex, 10000), 0);
    cr_assert_eq(collector_start(&col, dir, port, NULL), 0);
    cr_assert_eq(exporter_start(&ex, dir, bus, cfg), 0);
    cr_assert_eq(exporter_stat(&ex, "export.spool_recovered"), 5, "the spool was found on disk");
    cr_assert_eq(wait_for(get_collector, &col, "spans", 50, 10000), 50);
    cr_assert_eq(exporter_stop(&ex, 10000), 0);
    collector_stop(&col);
    cJSON *root = decode();
    double prev = -1;
    cJSON *s;
    cJSON_ArrayForEach(s, cJSON_GetObjectItem(root, "spans")) {
        double id = attr(s, "cbus.event.id")->valuedouble;
        cr_assert_gt(id, prev, "replayed out of order");
        prev = id;
    }
    cJSON_Delete(root);
}

Test(export_daemon, full_spool_drops_its_oldest_batches_lossy)
{
    unsigned port = free_port();
    /* ~10 spans of ~1 KB per batch, 64 KiB of spool: room for about six */
    cr_assert_eq(exporter_start(&ex, dir, bus, config(port, "[export]\nbatch_max_items = 10\n[spool]\nlimit = 64k\n")), 0);
    enum { N = 300 };
    for (int i = 0; i < N; i++)
        tool_span(i);
    cr_assert_geq(wait_for(get_exporter, &ex, "export.spooled", N / 10, 10000), N / 10);
    int64_t dropped = exporter_stat(&ex, "export.spool_dropped_items");
    cr_assert_gt(dropped, 0);
    cr_assert_leq(exporter_stat(&ex, "export.spool_bytes"), 65536);
    cr_assert_eq(collector_start(&col, dir, port, NULL), 0);
    cr_assert_eq(wait_for(get_collector, &col, "spans", N - dropped, 10000), N - dropped);
    cr_assert_eq(exporter_stop(&ex, 10000), 0);
    collector_stop(&col);
    cJSON *root = decode();
    cJSON *spans = cJSON_GetObjectItem(root, "spans");
    cr_assert_eq(cJSON_GetArraySize(spans), N - dropped, "the survivors, once each");
    /* the oldest went: the newest span made it */
    double max = 0;
    cJSON *s;
    cJSON_ArrayForEach(s, spans) {
        double id = attr(s, "cbus.event.id")->valuedouble;
        if (id > max)
            max = id;
    }
    cr_assert_eq((uint64_t)max, cbus_bus_tail(cbus_producer_bus(prod)) - 2);
    cJSON_Delete(root);
}

Test(export_daemon, run_that_never_ends_is_exported_after_the_timeout)
{
    cr_assert_eq(collector_start(&col, dir, 0, NULL), 0);
    cr_assert_eq(exporter_start(&ex, dir, bus, config(col.port, "[spans]\nrun_timeout = 100ms\n")), 0);
    cbus_ctx c;
    cbus_ctx_init(&c);
    cbus_ctx_set_model(&c, "gpt-4o");
    cr_assert_eq(cbus_chat_model_start(prod, &c, "hello?", NULL), 0);
    cbus_llm_new_token(prod, &c, "h", 1);
    /* no end: the exporter gives up on it while still running */
    cr_assert_eq(wait_for(get_collector, &col, "spans", 1, 10000), 1);
    cr_assert_eq(exporter_stat(&ex, "export.spans.unfinished"), 1);
    cr_assert_eq(exporter_stop(&ex, 10000), 0);
    collector_stop(&col);
    cJSON *root = decode();
    cJSON *s = cJSON_GetArrayItem(cJSON_GetObjectItem(root, "spans"), 0);
    cr_assert_str_eq(s_of(s, "name"), "chat gpt-4o");
    cr_assert_eq(cJSON_GetObjectItem(s, "status")->valueint, 0, "status unset");
    cr_assert(cJSON_IsTrue(attr(s, "cbus.run.unfinished")));
    cr_assert_eq(attr(s, "cbus.stream.chunks")->valueint, 1);
    cJSON_Delete(root);
}

/* Item 27: a test that fails, or crashes, after starting its daemons must not
 * leave them running (they would hold ctest's output pipe until its timeout).
 * The helper below starts a collector and an exporter and then fails or
 * aborts, but only when the test after it runs it. */
Test(export_daemon, helper_starts_daemons_then_fails_or_crashes)
{
    const char *pidfile = getenv("CBUS_EXPORT_TEST_PIDFILE");
    const char *how = getenv("CBUS_EXPORT_TEST_HOW");
    if (!pidfile || !how)
        return; /* a no-op in a normal run */
    cr_assert_eq(collector_start(&col, dir, 0, NULL), 0);
    cr_assert_eq(exporter_start(&ex, dir, bus, config(col.port, NULL)), 0);
    FILE *f = fopen(pidfile, "w");
    cr_assert_not_null(f);
    fprintf(f, "%d %d %s %s\n", (int)col.pid, (int)ex.pid, bus, dir);
    fclose(f);
    if (!strcmp(how, "crash"))
        abort(); /* no .fini: only PR_SET_PDEATHSIG is left to stop them */
    cr_assert_fail("failing on purpose with daemons %d and %d running", (int)col.pid, (int)ex.pid);
}

/* Gone, or a zombie (dead, its pipes closed, waiting for whoever adopted it). */
static int process_gone(pid_t pid)
{
    if (kill(pid, 0) < 0 && errno == ESRCH)
        return 1;
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    return p && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X');
}

static void check_no_daemon_left(const char *how)
{
    char pidfile[128];
    snprintf(pidfile, sizeof pidfile, "%s/daemons-%s.pid", dir, how);
    pid_t parent = getpid();
    pid_t t = fork();
    cr_assert_geq(t, 0);
    if (t == 0) {
        child_die_with_parent(parent);
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(null, 2);
        setenv("CBUS_EXPORT_TEST_PIDFILE", pidfile, 1);
        setenv("CBUS_EXPORT_TEST_HOW", how, 1);
        unsetenv("BXFI_MAP"); /* else the new process takes itself for a Criterion worker */
        execl("/proc/self/exe", "export_daemon", "--jobs", "1",
              "--filter=export_daemon/helper_starts_daemons_then_*", (char *)NULL);
        _exit(127);
    }
    int st = test_wait_pid(t, 60000);
    cr_assert(st >= 0 && WIFEXITED(st), "the %s run did not finish (%d)", how, st);
    cr_assert_neq(WEXITSTATUS(st), 0, "the helper test was meant to %s", how);
    FILE *f = fopen(pidfile, "r");
    cr_assert_not_null(f, "the helper never started its daemons");
    int cp = 0, ep = 0;
    char hbus[64], hdir[64];
    cr_assert_eq(fscanf(f, "%d %d %63s %63s", &cp, &ep, hbus, hdir), 4);
    fclose(f);
    cr_assert(cp > 0 && ep > 0);
    /* a crashed test never ran its .fini: remove its bus and directory here */
    if (!strcmp(how, "crash")) {
        cbus_bus_destroy(hbus);
        cr_assert(!strncmp(hdir, "/tmp/cbus-export-e2e-", 21), "%s", hdir);
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", hdir);
        cr_assert_eq(system(cmd), 0);
    }
    /* the kernel kills them at once; allow a loaded machine time to run it */
    uint64_t end = test_now_ms() + 10000;
    while ((!process_gone(cp) || !process_gone(ep)) && test_now_ms() < end)
        test_sleep_ms(10);
    cr_assert(process_gone(cp), "collector %d still runs after the helper test %s", cp, how);
    cr_assert(process_gone(ep), "exporter %d still runs after the helper test %s", ep, how);
}

Test(export_daemon, a_failed_test_leaves_no_daemon_running)
{
    check_no_daemon_left("fail");
}

Test(export_daemon, a_crashed_test_leaves_no_daemon_running)
{
    check_no_daemon_left("crash");
}
