/* How a server instruments its LLM calls with cbus: the README's example as
 * a program.  Build against an installed cbus:
 *   cc -std=c11 instrument.c $(pkg-config --cflags --libs cbus) -o instrument
 *   cbusctl create prod && ./instrument prod && cbusctl tail prod --oldest --count 8
 */
#include <cbus/admit.h>
#include <cbus/producer.h>

#include <stdio.h>
#include <string.h>

static int handle_chat(cbus_producer *bus, const char *user, const char *session,
                       const char *prompt)
{
    cbus_ctx run;
    cbus_ctx_init(&run); /* new run id and trace id */
    cbus_ctx_set_provider(&run, "openai");
    cbus_ctx_set_model(&run, "gpt-4o");
    cbus_ctx_set_user(&run, user);
    cbus_ctx_set_session(&run, session);

    uint64_t retry_after_ns = 0;
    if (cbus_admit(bus, &run, &retry_after_ns) != CBUS_ALLOW) {
        printf("429: retry after %.3f s\n", (double)retry_after_ns / 1e9);
        return 429;
    }
    struct cbus_llm_start_info info = {.prompt_count = 1, .est_input_tokens = 900};
    cbus_chat_model_start(bus, &run, prompt, &info);
    static const char *const chunks[] = {"The capital", " of France", " is Paris."};
    for (int i = 0; i < 3; i++)
        cbus_llm_new_token(bus, &run, chunks[i], strlen(chunks[i])); /* index, TTFT tracked */
    struct cbus_usage u = {.input_tokens = 1200, .cache_read_tokens = 1024, .output_tokens = 350,
                           .usage_present = CBUS_USAGE_INPUT | CBUS_USAGE_CACHE_READ |
                                            CBUS_USAGE_OUTPUT,
                           .finish_reason = CBUS_FINISH_STOP};
    cbus_llm_end(bus, &run, &u, "The capital of France is Paris."); /* duration, TTFT filled in */

    cbus_ctx tool; /* a child run: same trace, parent = run */
    cbus_ctx_child(&tool, &run);
    cbus_tool_start(bus, &tool, "web_search", "{\"q\":\"Paris weather\"}");
    cbus_tool_end(bus, &tool, "{\"temp_c\":18}");
    return 200;
}

int main(int argc, char **argv)
{
    const char *name = argc > 1 ? argv[1] : "prod";
    cbus_producer *bus;
    int r = cbus_producer_open(&bus, name, NULL); /* /dev/shm/cbus.NAME */
    if (r) {
        /* A server runs on without its bus; here there is nothing else to do. */
        fprintf(stderr, "cbus: %s: %s\n", name, cbus_strerror(r));
        return 1;
    }
    int status = handle_chat(bus, "alice", "s-1", "What is the capital of France?");
    struct cbus_producer_stats st;
    cbus_producer_stats(bus, &st);
    printf("status %d, emitted %llu, dropped %llu\n", status, (unsigned long long)st.emitted,
           (unsigned long long)st.dropped);
    cbus_producer_close(bus);
    return 0;
}
