/* cbusctl end to end: the real binary against real buses in /dev/shm. */
#include "run.h"
#include "support.h"

#include <cbus/bus.h>
#include <cbus/consumer.h>
#include <cbus/producer.h>

#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define T_RUN 10000 /* ms: a bound for a hung binary, not a timing assert */

static char bus[64];
static char path[96];
static struct run_result rr;

static void setup(void)
{
    test_bus_name(bus, sizeof bus);
    snprintf(path, sizeof path, "/dev/shm/cbus.%s", bus);
    memset(&rr, 0, sizeof rr);
}

static void teardown(void)
{
    run_free(&rr);
    cbus_bus_destroy(bus);
}

TestSuite(cbusctl_cli, .init = setup, .fini = teardown);

/* Runs cbusctl, replacing the previous result. */
#define CTL(...)                                 \
    do {                                         \
        run_free(&rr);                           \
        run_cbusctl(&rr, T_RUN, __VA_ARGS__, NULL); \
    } while (0)

#define ASSERT_EXIT(want)                                                                  \
    cr_assert_eq(rr.code, (want), "exit %d, expected %d\nstdout: %s\nstderr: %s", rr.code, \
                 (want), rr.out, rr.err)

static cJSON *stat_json(void)
{
    CTL("stat", bus, "--json");
    ASSERT_EXIT(0);
    cJSON *j = cJSON_Parse(rr.out);
    cr_assert(j, "stat --json is not JSON: %s", rr.out);
    return j;
}

static double jnum(const cJSON *j, const char *k)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);
    cr_assert(cJSON_IsNumber(v), "no number '%s'", k);
    return v->valuedouble;
}

static const char *jstr(const cJSON *j, const char *k)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);
    cr_assert(cJSON_IsString(v), "no string '%s'", k);
    return v->valuestring;
}

static cJSON *find_consumer(cJSON *stat, const char *name)
{
    cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(stat, "consumers"))
    {
        if (!strcmp(jstr(c, "name"), name))
            return c;
    }
    return NULL;
}

/* Waits until a consumer called name is attached (by polling the table
 * through the library), so a background tail is known to be listening. */
static void wait_attached(const char *name)
{
    cbus_bus *b;
    cr_assert_eq(cbus_bus_open(&b, bus, CBUS_OPEN_READONLY), 0);
    uint64_t end = test_now_ms() + T_RUN;
    for (;;) {
        for (unsigned i = 0; i < CBUS_MAX_CONSUMERS; i++) {
            struct cbus_consumer_entry *e = cbus_bus_consumer_entry(b, i);
            if (e && atomic_load(&e->state) == CBUS_CSTATE_ACTIVE &&
                !strncmp(e->name, name, sizeof e->name)) {
                cbus_bus_close(b);
                return;
            }
        }
        cr_assert(test_now_ms() < end, "consumer %s never attached", name);
        test_sleep_ms(5);
    }
}

Test(cbusctl_cli, create_stat_destroy)
{
    CTL("create", bus, "--capacity", "1024", "--lossless-wait", "2ms", "--stall-timeout", "3s");
    ASSERT_EXIT(0);
    cr_assert(strstr(rr.out, "created bus"), "%s", rr.out);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0600);

    cJSON *j = stat_json();
    cr_assert_str_eq(jstr(j, "bus"), bus);
    cr_assert_eq(jnum(j, "capacity"), 1024);
    cr_assert_eq(jnum(j, "slot_size"), CBUS_SLOT_SIZE);
    cr_assert_eq(jnum(j, "total_size"), (double)st.st_size);
    cr_assert_eq(jnum(j, "lossless_wait_ns"), 2e6);
    cr_assert_eq(jnum(j, "stall_timeout_ns"), 3e9);
    cr_assert_eq(jnum(j, "tail"), 0);
    cr_assert_eq(jnum(j, "dropped"), 0);
    cJSON *layout = cJSON_GetObjectItemCaseSensitive(j, "layout");
    cr_assert_eq(jnum(layout, "major"), CBUS_LAYOUT_MAJOR);
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "consumers")), 0);
    cr_assert(cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(j, "producers")));
    cr_assert_eq(strlen(jstr(j, "bus_id")), 16);
    cJSON_Delete(j);

    CTL("stat", bus);
    ASSERT_EXIT(0);
    cr_assert(strstr(rr.out, "capacity 1024 slots"), "%s", rr.out);
    cr_assert(strstr(rr.out, "consumers: 0"), "%s", rr.out);

    CTL("destroy", bus);
    ASSERT_EXIT(0);
    cr_assert_neq(stat(path, &st), 0);
    CTL("destroy", bus);
    ASSERT_EXIT(1);
}

Test(cbusctl_cli, create_refuses_existing_and_bad_options)
{
    CTL("create", bus, "--capacity", "1024");
    ASSERT_EXIT(0);
    CTL("create", bus);
    ASSERT_EXIT(1);
    cr_assert(strstr(rr.err, "already exists"), "%s", rr.err);

    cbus_bus_destroy(bus);
    CTL("create", bus, "--capacity", "3000");
    ASSERT_EXIT(2);
    cr_assert(strstr(rr.err, "power of two"), "%s", rr.err);
    CTL("create", bus, "--lossless-wait", "soon");
    ASSERT_EXIT(2);
    cr_assert(strstr(rr.err, "--lossless-wait"), "%s", rr.err);
    CTL("create", bus, "--capacity", "1024", "--size", "8M");
    ASSERT_EXIT(2);
    CTL("create", bus, "--group", "no-such-group-cbusctl");
    ASSERT_EXIT(1);
    cr_assert(strstr(rr.err, "no-such-group-cbusctl"), "%s", rr.err);
    struct stat st;
    cr_assert_neq(stat(path, &st), 0, "a refused create leaves no segment");
}

Test(cbusctl_cli, create_by_size_fits)
{
    CTL("create", bus, "--size", "3M");
    ASSERT_EXIT(0);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_leq(st.st_size, 3 << 20);
    cJSON *j = stat_json();
    double cap = jnum(j, "capacity");
    cJSON_Delete(j);
    /* The largest power of two that fits: twice as many would not. */
    cr_assert_gt(cap * 2 * CBUS_SLOT_SIZE, (double)(3 << 20) - 2 * (double)(st.st_size - cap * CBUS_SLOT_SIZE));
}

Test(cbusctl_cli, bad_names_are_usage_errors)
{
    const char *bad[] = {"a/b", "..", ".hidden", "", "x y",
                         "this-name-is-far-too-long-for-a-bus-0123456789"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CTL("create", bad[i]);
        ASSERT_EXIT(2);
        cr_assert(strstr(rr.err, "invalid bus name"), "%s", rr.err);
        CTL("stat", bad[i]);
        ASSERT_EXIT(2);
        CTL("tail", bad[i]);
        ASSERT_EXIT(2);
        CTL("emit", bad[i], "--kind", "text");
        ASSERT_EXIT(2);
        CTL("evict", bad[i], "0");
        ASSERT_EXIT(2);
        CTL("destroy", bad[i]);
        ASSERT_EXIT(2);
    }
    CTL("frobnicate");
    ASSERT_EXIT(2);
    CTL("stat");
    ASSERT_EXIT(2);
}

Test(cbusctl_cli, missing_bus_says_how_to_create_it)
{
    char want[512];
    snprintf(want, sizeof want, "no bus '%s' (%s): create it with cbusctl create %s", bus, path,
             bus);
    const char *cmds[] = {"stat", "tail"};
    for (size_t i = 0; i < 2; i++) {
        CTL(cmds[i], bus);
        ASSERT_EXIT(1);
        cr_assert(strstr(rr.err, want), "%s", rr.err);
    }
    CTL("emit", bus, "--kind", "text");
    ASSERT_EXIT(1);
    cr_assert(strstr(rr.err, want), "%s", rr.err);
    CTL("evict", bus, "3");
    ASSERT_EXIT(1);
    cr_assert(strstr(rr.err, want), "%s", rr.err);
}

static void overwrite(off_t off, const void *p, size_t n)
{
    int fd = open(path, O_WRONLY);
    cr_assert_geq(fd, 0);
    cr_assert_eq(pwrite(fd, p, n, off), (ssize_t)n);
    close(fd);
}

Test(cbusctl_cli, garbage_header_is_refused_clearly)
{
    CTL("create", bus, "--capacity", "1024");
    ASSERT_EXIT(0);
    char junk[256];
    memset(junk, 0xa5, sizeof junk);
    overwrite(0, junk, sizeof junk);
    const char *cmds[] = {"stat", "tail"};
    for (size_t i = 0; i < 2; i++) {
        CTL(cmds[i], bus);
        ASSERT_EXIT(1); /* not a crash: a signal would be 128+ */
        cr_assert(strstr(rr.err, "not a cbus segment"), "%s", rr.err);
        cr_assert(strstr(rr.err, "cbusctl destroy"), "%s", rr.err);
    }
    CTL("destroy", bus);
    ASSERT_EXIT(0);
}

Test(cbusctl_cli, wrong_layout_version_is_named)
{
    CTL("create", bus, "--capacity", "1024");
    ASSERT_EXIT(0);
    uint16_t major = CBUS_LAYOUT_MAJOR + 7;
    overwrite(offsetof(struct cbus_shm_header, layout_major), &major, sizeof major);
    CTL("stat", bus);
    ASSERT_EXIT(1);
    char want[64];
    snprintf(want, sizeof want, "layout version %d.%d", CBUS_LAYOUT_MAJOR + 7, CBUS_LAYOUT_MINOR);
    cr_assert(strstr(rr.err, want), "%s", rr.err);
    CTL("emit", bus, "--kind", "text");
    ASSERT_EXIT(1);
    cr_assert(strstr(rr.err, want), "%s", rr.err);
}

Test(cbusctl_cli, unknown_required_feature_is_named)
{
    /* A segment made by a newer cbus that needs a protocol this one does
     * not know: refused, with the bits and the fix; an unknown compat bit
     * is not a reason to refuse. */
    CTL("create", bus, "--capacity", "1024");
    ASSERT_EXIT(0);
    uint32_t compat = UINT32_C(1) << 17;
    overwrite(offsetof(struct cbus_shm_header, compat_features), &compat, sizeof compat);
    CTL("emit", bus, "--kind", "text");
    ASSERT_EXIT(0);
    uint32_t req = CBUS_FEATURE_NEED_WAKE | UINT32_C(1) << 20;
    overwrite(offsetof(struct cbus_shm_header, required_features), &req, sizeof req);
    const char *cmds[] = {"stat", "tail", "emit"};
    for (size_t i = 0; i < 3; i++) {
        if (i == 2)
            CTL(cmds[i], bus, "--kind", "text");
        else
            CTL(cmds[i], bus);
        ASSERT_EXIT(1);
        cr_assert(strstr(rr.err, "needs features this cbusctl does not know"), "%s", rr.err);
        cr_assert(strstr(rr.err, "unknown 0x00100000"), "%s", rr.err);
        cr_assert(strstr(rr.err, "cbusctl destroy"), "%s", rr.err);
    }
}

Test(cbusctl_cli, corrupt_offsets_and_truncation_are_refused)
{
    CTL("create", bus, "--capacity", "1024");
    ASSERT_EXIT(0);
    uint64_t huge = UINT64_C(1) << 40;
    overwrite(offsetof(struct cbus_shm_header, slots_off), &huge, sizeof huge);
    CTL("stat", bus, "--json");
    ASSERT_EXIT(1);
    cr_assert(strstr(rr.err, bus), "%s", rr.err);
    cr_assert_eq(rr.out[0], '\0', "nothing on stdout for a refused bus");

    cbus_bus_destroy(bus);
    CTL("create", bus, "--capacity", "1024");
    ASSERT_EXIT(0);
    cr_assert_eq(truncate(path, 8192), 0);
    CTL("stat", bus);
    ASSERT_EXIT(1);
    cr_assert(strstr(rr.err, "truncated"), "%s", rr.err);

    /* A creator that died before publishing `ready`. */
    cbus_bus_destroy(bus);
    CTL("create", bus, "--capacity", "1024");
    ASSERT_EXIT(0);
    uint32_t zero = 0;
    overwrite(offsetof(struct cbus_shm_header, ready), &zero, sizeof zero);
    CTL("tail", bus);
    ASSERT_EXIT(1);
    cr_assert(strstr(rr.err, "never finished by its creator"), "%s", rr.err);

    /* Not even a file. */
    cbus_bus_destroy(bus);
    cr_assert_eq(mkdir(path, 0700), 0);
    CTL("stat", bus);
    rmdir(path);
    ASSERT_EXIT(1);
    cr_assert(strstr(rr.err, "not a regular file"), "%s", rr.err);
}

Test(cbusctl_cli, fifo_at_the_bus_name_is_refused_without_hanging)
{
    /* /dev/shm is world-writable: anyone can plant a FIFO at a bus's name.
     * The library refuses it without blocking; cbusctl's own look at the
     * refused file must not block either (a plain O_RDONLY open of a FIFO
     * waits for a writer for ever).  run_cbusctl kills it after T_RUN:
     * exit -1 is the hang. */
    cr_assert_eq(mkfifo(path, 0600), 0);
    const char *cmds[] = {"stat", "tail"};
    for (size_t i = 0; i < 2; i++) {
        CTL(cmds[i], bus);
        cr_assert_neq(rr.code, -1, "cbusctl %s hung on a FIFO at %s (killed after %d ms)",
                      cmds[i], path, T_RUN);
        ASSERT_EXIT(1);
        cr_assert(strstr(rr.err, "is not a regular file"), "%s: %s", cmds[i], rr.err);
    }
    CTL("stat", bus, "--json");
    cr_assert_neq(rr.code, -1, "cbusctl stat --json hung on a FIFO");
    ASSERT_EXIT(1);
    cr_assert_eq(rr.out[0], '\0', "nothing on stdout for a refused bus");
}

Test(cbusctl_cli, world_writable_segment_is_refused_with_the_true_reason)
{
    /* Our own bus, made o+rw (or o+r, o+w): the library refuses it with
     * -CBUS_EWORLD (it was -EPERM, which cbusctl once explained as "belongs
     * to uid 0, not you (uid 0)").  The reason is the mode, and
     * --trust-owner does not help. */
    CTL("create", bus, "--capacity", "1024");
    ASSERT_EXIT(0);
    static const mode_t modes[] = {0666, 0604, 0602};
    for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++) {
        cr_assert_eq(chmod(path, modes[m]), 0);
        char want[64];
        snprintf(want, sizeof want, "is mode %04o", (unsigned)modes[m]);
        const char *cmds[][4] = {{"stat", bus, NULL, NULL},
                                 {"tail", bus, NULL, NULL},
                                 {"emit", bus, "--kind", "text"},
                                 {"stat", bus, "--trust-owner", NULL}};
        for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
            CTL(cmds[i][0], cmds[i][1], cmds[i][2], cmds[i][3]);
            ASSERT_EXIT(1);
            cr_assert(strstr(rr.err, want), "%s %s: %s", cmds[i][0], cmds[i][2] ? cmds[i][2] : "",
                      rr.err);
            cr_assert(!strstr(rr.err, "belongs to uid"), "%s: %s", cmds[i][0], rr.err);
            cr_assert(strstr(rr.err, "cbusctl create"), "says how to fix it: %s", rr.err);
        }
    }
    cr_assert_eq(chmod(path, 0600), 0);
    CTL("stat", bus);
    ASSERT_EXIT(0);
}

Test(cbusctl_cli, permission_denied_and_foreign_owner)
{
    if (geteuid() != 0)
        cbus_test_skip_or_fail("needs root to create a bus another uid cannot open");
    CTL("create", bus, "--capacity", "1024");
    ASSERT_EXIT(0);
    /* A root-owned 0600 bus, opened as nobody. */
    const char *argv[] = {"cbusctl", "stat", bus, NULL};
    run_free(&rr);
    run_cbusctl_as(&rr, 65534, T_RUN, argv);
    if (rr.code == 126 || rr.code == 127)
        cbus_test_skip_or_fail("uid 65534 cannot execute %s (build tree not world-readable)", CBUSCTL_PATH);
    ASSERT_EXIT(1);
    cr_assert(strstr(rr.err, "permission denied"), "%s", rr.err);
    cr_assert(strstr(rr.err, "mode 0600"), "%s", rr.err);

    /* A bus owned by someone else: refused unless trusted. */
    cr_assert_eq(chown(path, 65534, 65534), 0);
    CTL("emit", bus, "--kind", "text");
    ASSERT_EXIT(1);
    cr_assert(strstr(rr.err, "--trust-owner"), "%s", rr.err);
    CTL("emit", bus, "--kind", "text", "--trust-owner");
    ASSERT_EXIT(0);
    /* stat is read-only: it shows a foreign bus, with its owner. */
    cJSON *j = stat_json();
    cr_assert_eq(jnum(j, "uid"), 65534);
    cr_assert_eq(jnum(j, "tail"), 1);
    cJSON_Delete(j);
}

Test(cbusctl_cli, emit_then_tail_count_json)
{
    CTL("create", bus, "--capacity", "1024");
    ASSERT_EXIT(0);
    struct bg_proc tail;
    bg_start(&tail, "tail", bus, "--json", "--count", "2", "--name", "t-json", NULL);
    wait_attached("t-json");

    CTL("emit", bus, "--kind", "llm_end", "--model", "gpt-4o", "--user", "alice", "--provider",
        "openai", "--input-tokens", "10", "--output-tokens", "20", "--cache-read-tokens", "4",
        "--duration", "1.5s", "--finish-reason", "stop");
    ASSERT_EXIT(0);
    cr_assert_eq(rr.out[0], '\0');
    CTL("emit", bus, "--kind", "tool_start", "--name", "search", "--preview", "weather in Paris",
        "--run-id", "0123456789abcdef0123456789abcdef");
    ASSERT_EXIT(0);

    run_free(&rr);
    bg_finish(&tail, &rr, T_RUN);
    ASSERT_EXIT(0);
    char *nl = strchr(rr.out, '\n');
    cr_assert(nl, "%s", rr.out);
    *nl = '\0';
    cJSON *a = cJSON_Parse(rr.out), *b = cJSON_Parse(nl + 1);
    cr_assert(a && b, "%s / %s", rr.out, nl + 1);
    cr_assert_str_eq(jstr(a, "kind"), "llm_end");
    cr_assert_str_eq(jstr(a, "model"), "gpt-4o");
    cr_assert_str_eq(jstr(a, "user"), "alice");
    cr_assert_str_eq(jstr(a, "provider"), "openai");
    cJSON *u = cJSON_GetObjectItemCaseSensitive(a, "usage");
    cr_assert_eq(jnum(u, "input_tokens"), 10);
    cr_assert_eq(jnum(u, "output_tokens"), 20);
    cr_assert_eq(jnum(u, "cache_read_tokens"), 4);
    cr_assert(!cJSON_GetObjectItemCaseSensitive(u, "reasoning_tokens"), "not given: absent");
    cr_assert_eq(jnum(a, "duration_ns"), 1.5e9);
    cr_assert_str_eq(jstr(a, "finish_reason"), "stop");
    cr_assert_str_eq(jstr(b, "kind"), "tool_start");
    cr_assert_str_eq(jstr(b, "name"), "search");
    cr_assert_str_eq(jstr(b, "preview"), "weather in Paris");
    cr_assert_str_eq(jstr(b, "run_id"), "01234567-89ab-cdef-0123-456789abcdef");
    cr_assert_lt(jnum(a, "event_id"), jnum(b, "event_id"));
    cJSON_Delete(a);
    cJSON_Delete(b);

    /* The tail detached on its way out. */
    cJSON *j = stat_json();
    cr_assert_null(find_consumer(j, "t-json"));
    cJSON_Delete(j);
}

/* A 10 KB prompt emitted from a file reaches tail --json --body whole, with
 * the messages JSON, tags, metadata, agent and tenant; without --body the
 * event shows no body object. */
Test(cbusctl_cli, tail_json_body_shows_a_10k_prompt_whole)
{
    CTL("create", bus, "--capacity", "1024");
    ASSERT_EXIT(0);
    static char prompt[10241];
    for (size_t i = 0; i < sizeof prompt - 1; i++)
        prompt[i] = (char)('a' + i % 26);
    memcpy(prompt + 5000, "\"quoted\"\n\xc3\xa9", 12);
    char file[128], mfile[128];
    snprintf(file, sizeof file, "/tmp/%s.prompt", bus);
    snprintf(mfile, sizeof mfile, "/tmp/%s.messages", bus);
    FILE *f = fopen(file, "w");
    cr_assert(f);
    fwrite(prompt, 1, sizeof prompt - 1, f);
    fclose(f);
    static const char msgs[] = "[{\"role\":\"user\",\"parts\":[{\"type\":\"text\",\"content\":\"hi\"}]}]";
    f = fopen(mfile, "w");
    cr_assert(f);
    fputs(msgs, f);
    fclose(f);

    CTL("emit", bus, "--kind", "chat_model_start", "--text-file", file, "--messages-file", mfile,
        "--agent", "planner", "--tenant", "team-a", "--tag", "prod", "--tag", "eval",
        "--metadata", "ls_provider=openai");
    ASSERT_EXIT(0);
    unlink(file);
    unlink(mfile);
    CTL("tail", bus, "--oldest", "--json", "--body", "--count", "1");
    ASSERT_EXIT(0);
    cJSON *j = cJSON_Parse(rr.out);
    cr_assert(j, "%s", rr.err);
    cr_assert_str_eq(jstr(j, "kind"), "chat_model_start");
    cr_assert_str_eq(jstr(j, "agent"), "planner");
    cr_assert_str_eq(jstr(j, "tenant"), "team-a");
    cJSON *b = cJSON_GetObjectItemCaseSensitive(j, "body");
    cr_assert(cJSON_IsObject(b), "no body: %.300s", rr.out);
    cr_assert_str_eq(jstr(b, "text"), prompt, "the prompt is not whole");
    cr_assert_str_eq(jstr(b, "messages"), msgs);
    cJSON *tags = cJSON_GetObjectItemCaseSensitive(b, "tags");
    cr_assert_eq(cJSON_GetArraySize(tags), 2);
    cr_assert_str_eq(cJSON_GetArrayItem(tags, 0)->valuestring, "prod");
    cr_assert_str_eq(jstr(cJSON_GetObjectItemCaseSensitive(b, "metadata"), "ls_provider"),
                     "openai");
    cr_assert_null(cJSON_GetObjectItemCaseSensitive(b, "cut"));
    cJSON_Delete(j);

    CTL("tail", bus, "--oldest", "--json", "--count", "1");
    ASSERT_EXIT(0);
    j = cJSON_Parse(rr.out);
    cr_assert(j);
    cr_assert_null(cJSON_GetObjectItemCaseSensitive(j, "body"));
    cJSON_Delete(j);

    /* The text view shows the body under the event, escaped. */
    CTL("tail", bus, "--oldest", "--body", "--count", "1");
    ASSERT_EXIT(0);
    cr_assert(strstr(rr.out, "\n    text: abcdefghij"), "%.300s", rr.out);
    cr_assert(strstr(rr.out, "\"quoted\"\\n\xc3\xa9"), "newline shown escaped");
    cr_assert(strstr(rr.out, "\n    tags: prod, eval\n"), "%.300s", strstr(rr.out, "tags"));
}

/* System instructions (emit --system-file: cbus_chat_model_start_system)
 * and the provider's response id (emit --response-id:
 * cbus_llm_end_response) reach tail --body, as "system" and "response_id"
 * in the JSON and as their own lines in the text view; a response id that
 * is not one is a usage error and emits nothing. */
Test(cbusctl_cli, tail_body_shows_system_instructions_and_the_response_id)
{
    CTL("create", bus, "--capacity", "1024");
    ASSERT_EXIT(0);
    static const char sys[] = "[{\"type\":\"text\",\"content\":\"You are a geography tutor.\"}]";
    char sfile[128];
    snprintf(sfile, sizeof sfile, "/tmp/%s.system", bus);
    FILE *f = fopen(sfile, "w");
    cr_assert(f);
    fputs(sys, f);
    fclose(f);
    CTL("emit", bus, "--kind", "chat_model_start", "--system-file", sfile, "--preview",
        "Capital of Italy?", "--tag", "geo");
    ASSERT_EXIT(0);
    CTL("emit", bus, "--kind", "llm_start", "--system-file", sfile, "--preview", "p");
    ASSERT_EXIT(0);
    unlink(sfile);
    CTL("emit", bus, "--kind", "llm_end", "--response-id", "chatcmpl-AbC123", "--preview", "Rome.",
        "--output-tokens", "2");
    ASSERT_EXIT(0);
    CTL("emit", bus, "--kind", "llm_end", "--response-id", "not an id");
    ASSERT_EXIT(2);
    CTL("emit", bus, "--kind", "tool_end", "--response-id", "x");
    ASSERT_EXIT(2);
    CTL("emit", bus, "--kind", "llm_end", "--system-file", "/nonexistent");
    ASSERT_EXIT(2);

    CTL("tail", bus, "--oldest", "--json", "--body", "--count", "3");
    ASSERT_EXIT(0);
    char *line2 = strchr(rr.out, '\n');
    cr_assert(line2);
    char *line3 = strchr(line2 + 1, '\n');
    cr_assert(line3);
    *line2 = *line3 = '\0';
    cJSON *j = cJSON_Parse(rr.out);
    cr_assert(j, "%s", rr.out);
    cr_assert_str_eq(jstr(j, "kind"), "chat_model_start");
    cJSON *b = cJSON_GetObjectItemCaseSensitive(j, "body");
    cr_assert(cJSON_IsObject(b), "no body: %.300s", rr.out);
    cr_assert_str_eq(jstr(b, "system"), sys);
    cr_assert_str_eq(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(b, "tags"), 0)->valuestring,
                     "geo");
    cJSON_Delete(j);
    j = cJSON_Parse(line2 + 1);
    cr_assert(j, "%s", line2 + 1);
    cr_assert_str_eq(jstr(j, "kind"), "llm_start");
    cr_assert_str_eq(jstr(cJSON_GetObjectItemCaseSensitive(j, "body"), "system"), sys);
    cJSON_Delete(j);
    j = cJSON_Parse(line3 + 1);
    cr_assert(j, "%s", line3 + 1);
    cr_assert_str_eq(jstr(j, "kind"), "llm_end");
    cr_assert_str_eq(jstr(j, "preview"), "Rome.");
    b = cJSON_GetObjectItemCaseSensitive(j, "body");
    cr_assert_str_eq(jstr(b, "response_id"), "chatcmpl-AbC123");
    cr_assert_eq(cJSON_GetArraySize(b), 1, "only the id: %s", line3 + 1);
    cJSON_Delete(j);

    CTL("tail", bus, "--oldest", "--body", "--count", "3");
    ASSERT_EXIT(0);
    cr_assert(strstr(rr.out, "\n    system: [{\"type\":\"text\",\"content\":\"You are a geography tutor.\"}]"),
              "%.600s", rr.out);
    cr_assert(strstr(rr.out, "\n    response_id: chatcmpl-AbC123"), "%.600s", rr.out);
}

/* A bus of lanes: create says so, stat shows the count, emits from several
 * processes all reach tail --oldest, and bad lane counts are usage errors. */
Test(cbusctl_cli, create_with_lanes_then_stat_emit_and_tail)
{
    CTL("create", bus, "--capacity", "1024", "--lanes", "3");
    ASSERT_EXIT(2);
    cr_assert(strstr(rr.err, "power of two"), "%s", rr.err);
    CTL("create", bus, "--capacity", "1024", "--lanes", "8");
    ASSERT_EXIT(2);
    cr_assert(strstr(rr.err, "fewer than 256"), "%s", rr.err);
    CTL("create", bus, "--capacity", "1024", "--lanes", "4");
    ASSERT_EXIT(0);
    cr_assert(strstr(rr.out, "in 4 lanes"), "%s", rr.out);
    cJSON *j = stat_json();
    cr_assert_eq(jnum(j, "lanes"), 4);
    cJSON_Delete(j);
    for (int i = 0; i < 5; i++) {
        char tokens[8];
        snprintf(tokens, sizeof tokens, "%d", i + 1);
        CTL("emit", bus, "--kind", "llm_end", "--model", "gpt-4o", "--input-tokens", tokens);
        ASSERT_EXIT(0);
    }
    CTL("tail", bus, "--oldest", "--json", "--count", "5");
    ASSERT_EXIT(0);
    int seen = 0;
    for (char *line = rr.out; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        cJSON *e = cJSON_Parse(line);
        cr_assert(e, "%s", line);
        int tok = (int)jnum(cJSON_GetObjectItemCaseSensitive(e, "usage"), "input_tokens");
        cr_assert(tok >= 1 && tok <= 5 && !(seen & (1 << tok)), "event %d once", tok);
        seen |= 1 << tok;
        cJSON_Delete(e);
        line = nl ? nl + 1 : NULL;
    }
    cr_assert_eq(seen, 0x3e, "all five events, each once");
}

Test(cbusctl_cli, tail_oldest_filters_and_prints_text)
{
    CTL("create", bus, "--capacity", "1024");
    ASSERT_EXIT(0);
    CTL("emit", bus, "--kind", "llm_end", "--model", "gpt-4o", "--user", "alice",
        "--input-tokens", "1");
    ASSERT_EXIT(0);
    CTL("emit", bus, "--kind", "llm_end", "--model", "claude", "--user", "bob",
        "--input-tokens", "2", "--preview", "line1\nline2\033[31m");
    ASSERT_EXIT(0);
    CTL("emit", bus, "--kind", "llm_error", "--model", "claude", "--user", "bob",
        "--http-status", "429", "--name", "RateLimitError");
    ASSERT_EXIT(0);

    CTL("tail", bus, "--oldest", "--user", "bob", "--count", "1");
    ASSERT_EXIT(0);
    cr_assert(strstr(rr.out, "llm_end"), "%s", rr.out);
    cr_assert(strstr(rr.out, "user=bob"), "%s", rr.out);
    cr_assert(strstr(rr.out, "in=2"), "%s", rr.out);
    cr_assert(!strstr(rr.out, "alice"), "%s", rr.out);
    /* Control bytes from the bus never reach the terminal raw. */
    cr_assert(!strchr(rr.out, '\033'), "%s", rr.out);
    cr_assert(strstr(rr.out, "line1\\nline2\\x1b[31m"), "%s", rr.out);
    cr_assert_eq(strchr(rr.out, '\n'), rr.out + strlen(rr.out) - 1, "one line: %s", rr.out);

    CTL("tail", bus, "--oldest", "--kind", "llm_error", "--model", "claude", "--count", "1",
        "--json");
    ASSERT_EXIT(0);
    cJSON *e = cJSON_Parse(rr.out);
    cr_assert(e, "%s", rr.out);
    cr_assert_str_eq(jstr(e, "kind"), "llm_error");
    cr_assert_eq(jnum(e, "http_status"), 429);
    cr_assert_str_eq(jstr(e, "name"), "RateLimitError");
    cJSON_Delete(e);

    CTL("tail", bus, "--kind", "llm_stop");
    ASSERT_EXIT(2);
    cr_assert(strstr(rr.err, "llm_end"), "lists the kinds: %s", rr.err);
}

/* Issue 12 item 3: a terminal also acts on C1 controls (CSI as U+009B or
 * a raw 0x9b byte), and invalid UTF-8 or a bidi override garbles or hides
 * the line: tail's text view shows all of them as escapes. */
Test(cbusctl_cli, tail_text_escapes_c1_invalid_utf8_and_bidi)
{
    CTL("create", bus, "--capacity", "1024");
    ASSERT_EXIT(0);
    CTL("emit", bus, "--kind", "llm_end", "--model", "m\xc2\x9b" "2J\x9b" "31m",
        "--user", "open\xff" "ai", "--preview", "ok\xe2\x80\xae" "evil", "--input-tokens", "1");
    ASSERT_EXIT(0);
    CTL("tail", bus, "--oldest", "--count", "1");
    ASSERT_EXIT(0);
    cr_assert(strstr(rr.out, "model=m\\u009b2J\\x9b31m"), "%s", rr.out);
    cr_assert(strstr(rr.out, "user=open\\xffai"), "%s", rr.out);
    cr_assert(strstr(rr.out, "\"ok\\u202eevil\""), "%s", rr.out);
    for (const unsigned char *p = (const unsigned char *)rr.out; *p; p++)
        cr_assert(*p < 0x80, "non-ASCII byte 0x%02x reached the terminal: %s", *p, rr.out);
}

Test(cbusctl_cli, emit_refuses_options_of_another_kind)
{
    CTL("create", bus, "--capacity", "1024");
    ASSERT_EXIT(0);
    CTL("emit", bus, "--kind", "tool_start", "--input-tokens", "5");
    ASSERT_EXIT(2);
    cr_assert(strstr(rr.err, "--input-tokens does not apply to kind tool_start"), "%s", rr.err);
    CTL("emit", bus, "--kind", "nonsense");
    ASSERT_EXIT(2);
    CTL("emit", bus);
    ASSERT_EXIT(2);
    CTL("emit", bus, "--kind", "llm_end", "--input-tokens", "-3");
    ASSERT_EXIT(2);
    CTL("emit", bus, "--kind", "llm_end", "--run-id", "not-a-uuid");
    ASSERT_EXIT(2);
    cJSON *j = stat_json();
    cr_assert_eq(jnum(j, "tail"), 0, "nothing was emitted");
    cJSON_Delete(j);
}

Test(cbusctl_cli, tail_detaches_on_sigint)
{
    CTL("create", bus, "--capacity", "1024");
    ASSERT_EXIT(0);
    struct bg_proc tail;
    bg_start(&tail, "tail", bus, "--name", "t-int", NULL);
    wait_attached("t-int");
    CTL("emit", bus, "--kind", "text", "--preview", "hello", "--repeat", "3");
    ASSERT_EXIT(0);

    /* The tail is live: stat lists it alive, lossy, untethered, by name,
     * and counts what it consumed. */
    cJSON *j, *c;
    uint64_t end = test_now_ms() + T_RUN;
    for (;;) {
        j = stat_json();
        c = find_consumer(j, "t-int");
        cr_assert(c, "%s", rr.out);
        if (jnum(c, "consumed") == 3)
            break;
        cr_assert(test_now_ms() < end, "the tail never consumed 3: %s", rr.out);
        cJSON_Delete(j);
    }
    cr_assert_eq(jnum(c, "lost"), 0);
    cr_assert_eq(jnum(c, "lag"), 0);
    cr_assert_eq(jnum(c, "pid"), tail.pid);
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "alive")));
    cr_assert_str_eq(jstr(c, "mode"), "lossy");
    cr_assert(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(c, "tethered")));
    cr_assert(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(c, "rate")));
    cJSON_Delete(j);

    kill(tail.pid, SIGINT);
    run_free(&rr);
    bg_finish(&tail, &rr, T_RUN);
    ASSERT_EXIT(0);
    cr_assert(strstr(rr.out, "hello"), "%s", rr.out);
    j = stat_json();
    cr_assert_null(find_consumer(j, "t-int"), "detached on SIGINT");
    cJSON_Delete(j);
}

Test(cbusctl_cli, evict_sigkilled_consumer)
{
    CTL("create", bus, "--capacity", "1024");
    ASSERT_EXIT(0);
    struct bg_proc victim, live;
    bg_start(&victim, "tail", bus, "--name", "victim", NULL);
    bg_start(&live, "tail", bus, "--name", "bystander", NULL);
    wait_attached("victim");
    wait_attached("bystander");
    kill(victim.pid, SIGKILL);
    run_free(&rr);
    bg_finish(&victim, &rr, T_RUN);
    cr_assert_eq(rr.code, 128 + SIGKILL);

    cJSON *j = stat_json();
    cJSON *c = find_consumer(j, "victim");
    cr_assert(c, "a SIGKILLed consumer's entry stays until evicted: %s", rr.out);
    cr_assert(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(c, "alive")), "%s", rr.out);
    int victim_idx = (int)jnum(c, "index");
    int live_idx = (int)jnum(find_consumer(j, "bystander"), "index");
    cJSON_Delete(j);
    CTL("stat", bus);
    ASSERT_EXIT(0);
    cr_assert(strstr(rr.out, "DEAD"), "%s", rr.out);

    /* A live consumer is not evicted without --force. */
    char idx[16];
    snprintf(idx, sizeof idx, "%d", live_idx);
    CTL("evict", bus, idx);
    ASSERT_EXIT(1);
    cr_assert(strstr(rr.err, "is alive"), "%s", rr.err);

    CTL("evict", bus, "victim");
    ASSERT_EXIT(0);
    cr_assert(strstr(rr.out, "victim"), "%s", rr.out);
    j = stat_json();
    cr_assert_null(find_consumer(j, "victim"));
    cr_assert(find_consumer(j, "bystander"));
    cJSON_Delete(j);
    snprintf(idx, sizeof idx, "%d", victim_idx);
    CTL("evict", bus, idx);
    ASSERT_EXIT(1);
    cr_assert(strstr(rr.err, "free"), "%s", rr.err);
    CTL("evict", bus, "nobody-here");
    ASSERT_EXIT(1);
    CTL("evict", bus, "99999");
    ASSERT_EXIT(2);

    /* Forced: the bystander's next call sees it was evicted, and it exits 1. */
    snprintf(idx, sizeof idx, "%d", live_idx);
    CTL("evict", bus, idx, "--force");
    ASSERT_EXIT(0);
    CTL("emit", bus, "--kind", "text");
    ASSERT_EXIT(0);
    run_free(&rr);
    bg_finish(&live, &rr, T_RUN);
    ASSERT_EXIT(1);
    cr_assert(strstr(rr.err, "evicted"), "%s", rr.err);
}

Test(cbusctl_cli, stat_shows_producers_and_lossless_consumer)
{
    CTL("create", bus, "--capacity", "1024");
    ASSERT_EXIT(0);
    /* A lossless consumer that reads nothing: it gates producers and lags. */
    cbus_consumer *keeper;
    struct cbus_consumer_opts co = {.name = "keeper", .mode = CBUS_LOSSLESS};
    cr_assert_eq(cbus_consumer_attach(&keeper, bus, &co), 0);
    cbus_producer *p;
    struct cbus_producer_opts po = {.name = "testprod"};
    cr_assert_eq(cbus_producer_open(&p, bus, &po), 0);
    cbus_ctx ctx;
    cbus_ctx_init(&ctx);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(cbus_text(p, &ctx, "x"), 0);

    cJSON *j = stat_json();
    cr_assert_eq(jnum(j, "tail"), 3);
    cJSON *pe, *found = NULL;
    cJSON_ArrayForEach(pe, cJSON_GetObjectItemCaseSensitive(j, "producers"))
    {
        if (!strcmp(jstr(pe, "name"), "testprod"))
            found = pe;
    }
    cr_assert(found, "%s", rr.out);
    cr_assert_eq(jnum(found, "pid"), getpid());
    cr_assert_eq(jnum(found, "dropped"), 0);
    cr_assert_leq(jnum(found, "emitted"), 3);
    cJSON *k = find_consumer(j, "keeper");
    cr_assert(k, "%s", rr.out);
    cr_assert_str_eq(jstr(k, "mode"), "lossless");
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(k, "tethered")), "%s", rr.out);
    cr_assert_eq(jnum(k, "lag"), 3);
    cr_assert_eq(jnum(k, "consumed"), 0);
    cr_assert_eq(jnum(k, "pid"), getpid());
    cr_assert_eq(jnum(j, "tethered_consumers"), 1);
    cJSON_Delete(j);
    CTL("stat", bus);
    ASSERT_EXIT(0);
    cr_assert(strstr(rr.out, "testprod"), "%s", rr.out);
    cr_assert(strstr(rr.out, "lossless"), "%s", rr.out);
    cbus_producer_close(p);
    cbus_consumer_detach(keeper);
}

/* An operator sees which kinds each lossless consumer holds producers for
 * (issue 13 item 2): "all", the kinds by name, or "-" for a lossy one. */
Test(cbusctl_cli, stat_shows_the_kinds_each_lossless_consumer_needs)
{
    CTL("create", bus, "--capacity", "1024");
    ASSERT_EXIT(0);
    cbus_consumer *cost, *audit, *tailer;
    struct cbus_consumer_opts co = {.name = "cost", .mode = CBUS_LOSSLESS,
                                    .kinds = CBUS_KIND_BIT(CBUS_EV_LLM_END) |
                                             CBUS_KIND_BIT(CBUS_EV_LLM_ERROR)};
    cr_assert_eq(cbus_consumer_attach(&cost, bus, &co), 0);
    struct cbus_consumer_opts ao = {.name = "audit", .mode = CBUS_LOSSLESS};
    cr_assert_eq(cbus_consumer_attach(&audit, bus, &ao), 0);
    struct cbus_consumer_opts to = {.name = "tailer", .mode = CBUS_LOSSY};
    cr_assert_eq(cbus_consumer_attach(&tailer, bus, &to), 0);
    cJSON *j = stat_json();
    cr_assert_str_eq(jstr(find_consumer(j, "cost"), "kinds"), "llm_end,llm_error", "%s", rr.out);
    cr_assert_str_eq(jstr(find_consumer(j, "audit"), "kinds"), "all", "%s", rr.out);
    cr_assert_str_eq(jstr(find_consumer(j, "tailer"), "kinds"), "-", "%s", rr.out);
    cJSON_Delete(j);
    CTL("stat", bus);
    ASSERT_EXIT(0);
    cr_assert(strstr(rr.out, "KINDS"), "%s", rr.out);
    const char *line = strstr(rr.out, " cost ");
    cr_assert(line, "%s", rr.out);
    const char *eol = strchr(line, '\n');
    cr_assert(eol && memmem(line, (size_t)(eol - line), "llm_end,llm_error", 17), "%s", rr.out);
    cbus_consumer_detach(tailer);
    cbus_consumer_detach(audit);
    cbus_consumer_detach(cost);
}

Test(cbusctl_cli, create_with_a_body_limit_and_stat_shows_it)
{
    CTL("create", bus, "--capacity", "65536", "--body-limit", "1052672");
    ASSERT_EXIT(0);
    cJSON *j = stat_json();
    cr_assert_eq(jnum(j, "body_limit"), 1052672, "%s", rr.out);
    cJSON_Delete(j);
    CTL("destroy", bus);
    ASSERT_EXIT(0);
    CTL("create", bus, "--capacity", "1024", "--body-limit", "1048576");
    ASSERT_EXIT(2);
    cr_assert(strstr(rr.err, "a sixteenth of a lane"), "%s", rr.err);
}

Test(cbusctl_cli, stat_watch_json_until_sigint)
{
    CTL("create", bus, "--capacity", "1024");
    ASSERT_EXIT(0);
    struct bg_proc w;
    bg_start(&w, "stat", bus, "--json", "--watch", "0.1", NULL);
    cr_assert(bg_wait_line(&w, T_RUN), "no sample printed");
    kill(w.pid, SIGINT);
    run_free(&rr);
    bg_finish(&w, &rr, T_RUN);
    ASSERT_EXIT(0);
    int lines = 0;
    for (char *s = rr.out, *nl; (nl = strchr(s, '\n')); s = nl + 1) {
        *nl = '\0';
        cJSON *j = cJSON_Parse(s);
        cr_assert(j, "line %d: %s", lines, s);
        cr_assert(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(j, "interval_ms")));
        cJSON_Delete(j);
        lines++;
    }
    cr_assert_geq(lines, 1);

    /* Watching a bus that goes away ends with a message, not a frozen screen. */
    bg_start(&w, "stat", bus, "--watch", "0.1", NULL);
    cr_assert(bg_wait_line(&w, T_RUN), "no sample printed");
    cbus_bus_destroy(bus);
    run_free(&rr);
    bg_finish(&w, &rr, T_RUN);
    ASSERT_EXIT(1);
    cr_assert(strstr(rr.err, "destroyed"), "%s", rr.err);
}

Test(cbusctl_cli, lapped_tail_reports_exact_loss)
{
    CTL("create", bus, "--capacity", "1024");
    ASSERT_EXIT(0);
    struct bg_proc tail;
    bg_start(&tail, "tail", bus, "--name", "t-lap", "--json", NULL);
    wait_attached("t-lap");
    /* Frozen while producers write three laps: it must lose, and say how much. */
    kill(tail.pid, SIGSTOP);
    CTL("emit", bus, "--kind", "llm_new_token", "--preview", "tok", "--repeat", "3000");
    ASSERT_EXIT(0);
    kill(tail.pid, SIGCONT);

    cJSON *j, *c;
    uint64_t end = test_now_ms() + T_RUN;
    for (;;) {
        j = stat_json();
        c = find_consumer(j, "t-lap");
        cr_assert(c, "%s", rr.out);
        if (jnum(c, "consumed") + jnum(c, "lost") + jnum(c, "abandoned") == 3000)
            break;
        cr_assert(test_now_ms() < end, "accounting never reached 3000: %s", rr.out);
        cJSON_Delete(j);
    }
    double lost = jnum(c, "lost"), consumed = jnum(c, "consumed");
    cr_assert_gt(lost, 0);
    cr_assert_leq(consumed, 1024, "a 1024-slot ring cannot hand over more than one lap");
    cJSON_Delete(j);

    kill(tail.pid, SIGINT);
    run_free(&rr);
    bg_finish(&tail, &rr, T_RUN);
    ASSERT_EXIT(0);
    char want[64];
    snprintf(want, sizeof want, "%.0f lost in all", lost);
    cr_assert(strstr(rr.err, want), "%s", rr.err);
    size_t lines = 0;
    for (const char *s = rr.out; (s = strchr(s, '\n')); s++)
        lines++;
    cr_assert_eq(lines, (size_t)consumed, "one line per consumed event");
}
