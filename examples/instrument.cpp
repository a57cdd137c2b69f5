// examples/instrument.c in C++: the public headers are usable from C++
// (extern "C", and layout.h's shared words are std::atomic there).
// tests/cxx_abi.sh builds it with g++ and clang++ and runs it on a real bus:
//   c++ -std=c++17 instrument.cpp $(pkg-config --cflags --libs cbus) -o instrument-cxx
#include <cbus/admit.h>
#include <cbus/producer.h>

#include <cstdio>
#include <cstring>
#include <memory>

namespace {

// A context from the library's allocator: the caller needs no struct size.
struct ctx_free {
    void operator()(cbus_ctx *c) const { cbus_ctx_free(c); }
};
using ctx_ptr = std::unique_ptr<cbus_ctx, ctx_free>;

int handle_chat(cbus_producer *bus, const char *user, const char *session, const char *prompt)
{
    ctx_ptr run(cbus_ctx_new()); // new run id and trace id
    if (!run)
        return 500;
    cbus_ctx_set_provider(run.get(), "openai");
    cbus_ctx_set_model(run.get(), "gpt-4o");
    cbus_ctx_set_user(run.get(), user);
    cbus_ctx_set_session(run.get(), session);

    uint64_t retry_after_ns = 0;
    if (cbus_admit(bus, run.get(), &retry_after_ns) != CBUS_ALLOW) {
        std::printf("429: retry after %.3f s\n", static_cast<double>(retry_after_ns) / 1e9);
        return 429;
    }
    cbus_llm_start_info info{};
    info.prompt_count = 1;
    info.est_input_tokens = 900;
    cbus_chat_model_start(bus, run.get(), prompt, &info);
    static const char *const chunks[] = {"The capital", " of France", " is Paris."};
    for (const char *chunk : chunks)
        cbus_llm_new_token(bus, run.get(), chunk, std::strlen(chunk));
    cbus_usage u{};
    u.input_tokens = 1200;
    u.cache_read_tokens = 1024;
    u.output_tokens = 350;
    u.usage_present = CBUS_USAGE_INPUT | CBUS_USAGE_CACHE_READ | CBUS_USAGE_OUTPUT;
    u.finish_reason = CBUS_FINISH_STOP;
    cbus_llm_end(bus, run.get(), &u, "The capital of France is Paris.");

    ctx_ptr tool(cbus_ctx_new()); // a child run: same trace, parent = run
    if (!tool || cbus_ctx_child(tool.get(), run.get()))
        return 500;
    cbus_tool_start(bus, tool.get(), "web_search", "{\"q\":\"Paris weather\"}");
    cbus_tool_end(bus, tool.get(), "{\"temp_c\":18}");
    return 200;
}

} // namespace

int main(int argc, char **argv)
{
    const char *name = argc > 1 ? argv[1] : "prod";
    cbus_producer *bus = nullptr;
    int r = cbus_producer_open(&bus, name, nullptr);
    if (r) {
        std::fprintf(stderr, "cbus: %s: %s\n", name, cbus_strerror(r));
        return 1;
    }
    int status = handle_chat(bus, "alice", "s-1", "What is the capital of France?");
    struct cbus_producer_stats st{}; // "struct": a function has this name too
    cbus_producer_stats(bus, &st);
    std::printf("cbus %s, status %d, emitted %llu, dropped %llu\n", cbus_version(), status,
                static_cast<unsigned long long>(st.emitted),
                static_cast<unsigned long long>(st.dropped));
    cbus_producer_close(bus);
    return 0;
}
