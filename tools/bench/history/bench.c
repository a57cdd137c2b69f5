/* cbus-bench-history: how fast the store takes messages, and how fast a
 * long conversation is shown (the README's figures come from it).
 *
 *   cbus-bench-history [--messages N] [--text BYTES] [--batch B] [--fsync]
 *                      [--show N] [--dir DIR]
 *
 * Store: real events with bodies on a real bus (explicit conversation
 * messages of BYTES of text, 100 a conversation; then LangChain-style
 * agent turns: a chat-model start whose prompt repeats the history, and
 * its llm_end), polled with their bodies in batches of B (as the daemon
 * does) and applied in one transaction per batch with the cursor.  Only
 * the poll + store part is timed (the producer fills the ring first, in
 * rounds that fit it).  Show: one conversation of N messages rendered as
 * the CLI's text and as JSON (median of 7).  Prints messages/s and ms; run
 * it a few times and take the median. */
#include <cbus/bus.h>
#include <cbus/consumer.h>
#include <cbus/producer.h>

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sbuf.h"
#include "store.h"

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* CPU time of the store part: the figure that does not depend on how many
 * other processes share the cores (wall time is printed beside it). */
static uint64_t cpu_total;

static void die(const char *what, int r)
{
    fprintf(stderr, "cbus-bench-history: %s: %s\n", what, r < 0 ? strerror(-r) : "failed");
    exit(1);
}

/* Polls everything there is, one transaction per batch.  Returns the
 * messages stored; *ns gets the time spent. */
static uint64_t drain(cbus_consumer *c, struct hist_store *st, unsigned batch, void *buf,
                      size_t blen, struct cbus_event *ev, struct cbus_body *bodies, uint64_t *ns)
{
    struct hist_counts before, after;
    hist_store_counts(st, &before);
    uint64_t t0 = mono_ns(), c0 = cpu_ns();
    int n;
    while ((n = cbus_consumer_poll_bodies(c, ev, bodies, batch, buf, blen)) > 0) {
        int r = hist_store_begin(st);
        for (int i = 0; i < n && !r; i++)
            r = hist_store_event(st, 1, &ev[i], &bodies[i]);
        struct cbus_position pos;
        if (!r)
            r = cbus_consumer_position(c, &pos);
        if (!r)
            r = hist_store_commit(st, 1, &pos);
        if (r)
            die(hist_store_errmsg(st), r);
        cbus_consumer_commit_position(c, &pos);
    }
    if (n < 0)
        die("poll", n);
    *ns += mono_ns() - t0;
    cpu_total += cpu_ns() - c0;
    hist_store_counts(st, &after);
    return after.messages - before.messages;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"messages", required_argument, NULL, 'm'}, {"text", required_argument, NULL, 't'},
        {"batch", required_argument, NULL, 'b'},    {"fsync", no_argument, NULL, 'f'},
        {"show", required_argument, NULL, 's'},     {"dir", required_argument, NULL, 'd'},
        {NULL, 0, NULL, 0},
    };
    unsigned long msgs = 200000, text_len = 200, batch = 1024, show = 1000;
    int fsync_on = 0, opt;
    const char *dir = NULL;
    while ((opt = getopt_long(argc, argv, "m:t:b:fs:d:", longopts, NULL)) != -1) {
        switch (opt) {
        case 'm': msgs = strtoul(optarg, NULL, 10); break;
        case 't': text_len = strtoul(optarg, NULL, 10); break;
        case 'b': batch = strtoul(optarg, NULL, 10); break;
        case 'f': fsync_on = 1; break;
        case 's': show = strtoul(optarg, NULL, 10); break;
        case 'd': dir = optarg; break;
        default:
            fprintf(stderr, "usage: cbus-bench-history [--messages N] [--text BYTES] "
                            "[--batch B] [--fsync] [--show N] [--dir DIR]\n");
            return 2;
        }
    }
    if (!msgs || !batch || batch > 65536 || text_len > 16384) {
        fprintf(stderr, "cbus-bench-history: bad arguments\n");
        return 2;
    }
    char tmp[256], db[320];
    if (dir) {
        snprintf(tmp, sizeof tmp, "%s", dir);
    } else {
        snprintf(tmp, sizeof tmp, "/tmp/cbus-history-bench-XXXXXX");
        if (!mkdtemp(tmp))
            die("mkdtemp", -errno);
    }
    snprintf(db, sizeof db, "%s/bench.db", tmp);
    unlink(db);
    char err[512];
    struct hist_store *st;
    int r = hist_store_open(&st, db, fsync_on ? HIST_STORE_FSYNC : 0, err, sizeof err);
    if (r) {
        fprintf(stderr, "cbus-bench-history: %s\n", err);
        return 1;
    }
    char bus[32];
    snprintf(bus, sizeof bus, "hbench%d", (int)getpid());
    struct cbus_create_opts co = {.capacity = 1u << 17};
    cbus_bus_destroy(bus);
    if ((r = cbus_bus_create(bus, &co)))
        die("create bus", r);
    cbus_producer *p;
    if ((r = cbus_producer_open(&p, bus, NULL)))
        die("producer", r);
    cbus_consumer *c;
    struct cbus_consumer_opts o = {.name = "bench", .mode = CBUS_LOSSLESS,
                                   .start = CBUS_START_OLDEST};
    if ((r = cbus_consumer_attach(&c, bus, &o)))
        die("consumer", r);
    size_t blen = cbus_bus_body_limit(cbus_consumer_bus(c));
    void *buf = malloc(blen);
    struct cbus_event *ev = calloc(batch, sizeof *ev);
    struct cbus_body *bodies = calloc(batch, sizeof *bodies);
    char *text = malloc(text_len + 1);
    if (!buf || !ev || !bodies || !text)
        die("malloc", -ENOMEM);
    static const char words[] = "the quick brown fox jumps over a lazy dog while tokens flow ";
    for (size_t i = 0; i < text_len; i++)
        text[i] = words[i % (sizeof words - 1)];
    text[text_len] = '\0';

    /* 1. explicit messages: 100 a conversation, rounds that fit the ring */
    cbus_ctx ctx;
    cbus_ctx_init(&ctx);
    cbus_ctx_set_user(&ctx, "bench-user");
    uint64_t stored = 0, ns = 0;
    cpu_total = 0;
    const unsigned long round = 20000;
    char conv[48], id[32];
    for (unsigned long done = 0; done < msgs;) {
        unsigned long n = msgs - done < round ? msgs - done : round;
        for (unsigned long i = 0; i < n; i++) {
            unsigned long k = done + i;
            snprintf(conv, sizeof conv, "bench-%lu", k / 100);
            snprintf(id, sizeof id, "m%lu", k % 100);
            struct cbus_conv_message m = {.id = id, .role = k % 2 ? "assistant" : "user",
                                          .text = text, .text_len = text_len};
            if ((r = cbus_conversation_message(p, &ctx, conv, &m)))
                die("emit", r);
        }
        stored += drain(c, st, (unsigned)batch, buf, blen, ev, bodies, &ns);
        done += n;
    }
    if (stored != msgs)
        fprintf(stderr, "cbus-bench-history: stored %llu of %lu\n", (unsigned long long)stored,
                msgs);
    printf("explicit messages: %llu stored (%lu B text each, batches of %lu, fsync %s) in "
           "%.3f s: %.0f messages/s; %.3f s CPU: %.0f messages per CPU second\n",
           (unsigned long long)stored, text_len, batch, fsync_on ? "on" : "off", (double)ns / 1e9,
           (double)stored / ((double)ns / 1e9), (double)cpu_total / 1e9,
           (double)stored / ((double)cpu_total / 1e9));

    /* the search index, caught up afterwards as the daemon does when idle */
    {
        uint64_t t0 = mono_ns(), c0 = cpu_ns(), n, left = 1, total = 0;
        while (left) {
            if ((r = hist_store_index(st, 4096, &n, &left)))
                die(hist_store_errmsg(st), r);
            total += n;
        }
        uint64_t w = mono_ns() - t0, cpu = cpu_ns() - c0;
        printf("search index caught up: %llu messages in %.3f s (%.3f s CPU): %.0f messages per "
               "CPU second\n", (unsigned long long)total, (double)w / 1e9, (double)cpu / 1e9,
               (double)total / ((double)cpu / 1e9));
    }

    /* 2. agent turns: each prompt repeats the whole history (up to 20
     * messages), the answer follows: 2 new messages a turn */
    uint64_t stored2 = 0, ns2 = 0;
    cpu_total = 0;
    struct sbuf prompt;
    sbuf_init(&prompt);
    unsigned long turns = msgs / 2 / 10 * 10;
    for (unsigned long done = 0; done < turns;) {
        unsigned long n = turns - done < round / 4 ? turns - done : round / 4;
        for (unsigned long i = 0; i < n; i++) {
            unsigned long t = done + i, turn = t % 10;
            cbus_ctx root, llm;
            cbus_ctx_init(&root);
            snprintf(conv, sizeof conv, "agent-%lu", t / 10);
            cbus_ctx_set_session(&root, conv);
            cbus_ctx_child(&llm, &root);
            sbuf_reset(&prompt);
            sbuf_puts(&prompt, "[");
            for (unsigned long k = 0; k <= turn; k++) {
                sbuf_printf(&prompt, "%s{\"role\":\"human\",\"parts\":[{\"type\":\"text\","
                                     "\"content\":\"q%lu %.*s\"}]}", k ? "," : "", k, 40, text);
                if (k < turn)
                    sbuf_printf(&prompt, ",{\"role\":\"ai\",\"parts\":[{\"type\":\"text\","
                                         "\"content\":\"a%lu %.*s\"}]}", k, 40, text);
            }
            sbuf_puts(&prompt, "]");
            if ((r = cbus_chat_model_start_messages(p, &llm, prompt.data, prompt.len, NULL, NULL)))
                die("emit", r);
            char ans[64];
            snprintf(ans, sizeof ans, "a%lu %.40s", turn, text);
            struct cbus_usage u = {.input_tokens = 100, .output_tokens = 20,
                                   .usage_present = CBUS_USAGE_INPUT | CBUS_USAGE_OUTPUT};
            if ((r = cbus_llm_end(p, &llm, &u, ans)))
                die("emit", r);
        }
        stored2 += drain(c, st, (unsigned)batch, buf, blen, ev, bodies, &ns2);
        done += n;
    }
    printf("agent turns (prompt repeats the history): %llu new messages from %lu turns in "
           "%.3f s: %.0f messages/s; %.3f s CPU: %.0f messages per CPU second\n",
           (unsigned long long)stored2, turns, (double)ns2 / 1e9,
           (double)stored2 / ((double)ns2 / 1e9), (double)cpu_total / 1e9,
           (double)stored2 / ((double)cpu_total / 1e9));

    /* 3. show one conversation of `show` messages */
    for (unsigned long k = 0; k < show; k++) {
        snprintf(id, sizeof id, "s%lu", k);
        struct cbus_conv_message m = {.id = id, .role = k % 2 ? "assistant" : "user",
                                      .text = text, .text_len = text_len};
        if ((r = cbus_conversation_message(p, &ctx, "long", &m)))
            die("emit", r);
        if (k % 10000 == 9999)
            drain(c, st, (unsigned)batch, buf, blen, ev, bodies, &ns);
    }
    drain(c, st, (unsigned)batch, buf, blen, ev, bodies, &ns);
    struct hist_store *rd;
    if ((r = hist_store_open(&rd, db, 0, err, sizeof err)))
        die(err, r);
    uint64_t t_text[7], t_json[7];
    size_t text_bytes = 0, json_bytes = 0;
    struct sbuf out;
    sbuf_init(&out);
    for (int i = 0; i < 7; i++) {
        sbuf_reset(&out);
        uint64_t t0 = mono_ns();
        if ((r = hist_render_conv(rd, "long", 0, 1, &out)))
            die("show", r);
        t_text[i] = mono_ns() - t0;
        text_bytes = out.len;
        sbuf_reset(&out);
        t0 = mono_ns();
        if ((r = hist_render_conv(rd, "long", 1, 1, &out)))
            die("export", r);
        t_json[i] = mono_ns() - t0;
        json_bytes = out.len;
    }
    qsort(t_text, 7, sizeof t_text[0], cmp_u64);
    qsort(t_json, 7, sizeof t_json[0], cmp_u64);
    printf("show of a %lu-message conversation: %.2f ms as text (%zu B), %.2f ms as JSON "
           "(%zu B), median of 7\n", show, (double)t_text[3] / 1e6, text_bytes,
           (double)t_json[3] / 1e6, json_bytes);
    sbuf_free(&out);
    sbuf_free(&prompt);
    hist_store_close(rd);
    hist_store_close(st);
    cbus_consumer_detach(c);
    cbus_producer_close(p);
    cbus_bus_destroy(bus);
    if (!dir) {
        char cmd[400];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
        if (system(cmd)) {
        }
    }
    free(buf);
    free(ev);
    free(bodies);
    free(text);
    return 0;
}
