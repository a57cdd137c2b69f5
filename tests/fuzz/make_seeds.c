/* Writes the structured seed inputs into corpus/<target>/ from real
 * encodings (the project's own encoders), so each fuzzer starts from inputs
 * that reach deep: committed slots holding realistic events, msgpack event
 * maps, a hash-chained audit log, runs of start/token/end events.
 * Text seeds (configs, price tables, rules) are plain files committed as is.
 *
 *   fuzz_make_seeds CORPUS_DIR      (scripts/fuzz.sh --seeds runs it)
 */
#include "fuzz.h"

#include "checkpoint.h"
#include "event_msgpack.h"
#include "format.h"
#include "ledger.h"
#include "prices.h"

#include <cbus/layout.h>

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *g_dir;

static void put(const char *target, const char *name, const void *p, size_t n)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", g_dir, target);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/%s/%s", g_dir, target, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n) {
        perror(path);
        exit(1);
    }
    fclose(f);
}

static void set(char *field, size_t size, const char *s)
{
    memset(field, 0, size);
    memcpy(field, s, strlen(s) < size ? strlen(s) : size);
}

/* A realistic run: start, two tokens, end with usage; a tool and an error. */
static size_t make_events(struct cbus_event *ev)
{
    size_t n = 0;
    uint8_t run[16], tool[16], trace[16];
    for (int i = 0; i < 16; i++) {
        run[i] = (uint8_t)(0x11 * (i + 1));
        tool[i] = (uint8_t)(0x22 + i);
        trace[i] = (uint8_t)(0xa0 + i);
    }
    const unsigned kinds[] = {CBUS_EV_CHAT_MODEL_START, CBUS_EV_LLM_NEW_TOKEN,
                              CBUS_EV_LLM_NEW_TOKEN,    CBUS_EV_LLM_END,
                              CBUS_EV_TOOL_START,       CBUS_EV_TOOL_END,
                              CBUS_EV_LLM_START,        CBUS_EV_LLM_ERROR,
                              CBUS_EV_RETRY,            CBUS_EV_CUSTOM};
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        struct cbus_event *e = &ev[n++];
        memset(e, 0, sizeof *e);
        e->kind = (uint16_t)kinds[k];
        e->pid = 4242;
        e->tid = 4243;
        e->event_id = k;
        e->ts_realtime_ns = UINT64_C(1790000000000000000) + k * 1000000;
        e->ts_mono_ns = UINT64_C(5000000000) + k * 1000000;
        memcpy(e->run_id, kinds[k] == CBUS_EV_TOOL_START || kinds[k] == CBUS_EV_TOOL_END ? tool : run, 16);
        memcpy(e->trace_id, trace, 16);
        e->flags = CBUS_FLAG_HAS_TRACE;
        if (kinds[k] == CBUS_EV_TOOL_START || kinds[k] == CBUS_EV_TOOL_END) {
            memcpy(e->parent_run_id, run, 16);
            e->flags |= CBUS_FLAG_HAS_PARENT;
            set(e->name, sizeof e->name, "web_search");
        }
        set(e->provider, sizeof e->provider, "openai");
        set(e->model, sizeof e->model, "gpt-4o");
        set(e->user, sizeof e->user, "alice");
        set(e->session, sizeof e->session, "conv-1");
        set(e->request_id, sizeof e->request_id, "req-1");
        switch (kinds[k]) {
        case CBUS_EV_CHAT_MODEL_START:
            e->u.llm_start.prompt_count = 3;
            e->u.llm_start.est_input_tokens = 1200;
            set(e->preview, sizeof e->preview, "What is the weather in Paris? \xc3\xa9\xe2\x82");
            e->flags |= CBUS_TRUNC_PREVIEW;
            break;
        case CBUS_EV_LLM_NEW_TOKEN:
            e->u.token.index = (uint32_t)(k - 1);
            set(e->preview, sizeof e->preview, "Sun");
            break;
        case CBUS_EV_LLM_END:
            e->u.usage = (struct cbus_usage){.input_tokens = 1200, .output_tokens = 300,
                                             .cache_read_tokens = 1000, .reasoning_tokens = 100,
                                             .usage_present = 0x7f, .finish_reason = CBUS_FINISH_STOP,
                                             .generations = 1, .duration_ns = 900000000,
                                             .ttft_ns = 200000000};
            break;
        case CBUS_EV_LLM_ERROR:
            e->u.error.http_status = 429;
            e->u.error.duration_ns = 5000000;
            set(e->name, sizeof e->name, "RateLimitError");
            break;
        case CBUS_EV_RETRY:
            e->u.retry.attempt = 1;
            e->u.retry.backoff_ns = 1000000000;
            break;
        case CBUS_EV_CUSTOM:
            set(e->name, sizeof e->name, "guardrail");
            set(e->preview, sizeof e->preview, "{\"blocked\":false}");
            break;
        default:
            break;
        }
    }
    return n;
}

/* A body of every section type in type order (the text cut, tags with an
 * entry dropped), then what a reader must skip and say: a section of a
 * type from a newer producer, and a second text section. */
static size_t make_body(uint8_t *body, size_t cap)
{
    static const char msgs[] = "[{\"role\":\"user\",\"parts\":[{\"type\":\"text\","
                               "\"content\":\"hi\"}]}]";
    static const char sys[] = "[{\"type\":\"text\",\"content\":\"You are a geography tutor.\"}]";
    const struct {
        unsigned type;
        const char *data;
        uint32_t len, orig_len, dropped;
    } sec[] = {
        {CBUS_BODY_TEXT, "the whole prompt, cut \xc3", 23, 900, 0}, /* ends in a cut character */
        {CBUS_BODY_MESSAGES, msgs, sizeof msgs - 1, sizeof msgs - 1, 0},
        {CBUS_BODY_TAGS, "prod\0eval\0", 10, 10, 1},
        {CBUS_BODY_METADATA, "k\0v\0env\0dev\0", 12, 12, 0},
        {CBUS_BODY_SYSTEM, sys, sizeof sys - 1, sizeof sys - 1, 0},
        {CBUS_BODY_RESPONSE_ID, "chatcmpl-AbC123", 15, 15, 0},
        {CBUS_BODY_RESPONSE_ID + 1, "a newer producer's section", 26, 26, 0},
        {CBUS_BODY_TEXT, "a second text", 13, 13, 0},
    };
    size_t off = 0;
    for (size_t i = 0; i < sizeof sec / sizeof sec[0]; i++) {
        struct cbus_body_section h = {(uint16_t)sec[i].type,
                                      sec[i].orig_len > sec[i].len ? CBUS_BODY_SECTION_CUT : 0,
                                      sec[i].len, sec[i].orig_len, sec[i].dropped};
        if (off + sizeof h + sec[i].len > cap)
            break;
        memcpy(body + off, &h, sizeof h);
        memcpy(body + off + sizeof h, sec[i].data, sec[i].len);
        off += sizeof h + sec[i].len;
    }
    return off;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: fuzz_make_seeds CORPUS_DIR\n");
        return 2;
    }
    g_dir = argv[1];
    struct cbus_event ev[16];
    size_t n = make_events(ev);
    char name[64];

    /* event_codec: one raw event per seed. */
    for (size_t i = 0; i < n; i++) {
        uint8_t b[sizeof ev[0] + 1];
        memcpy(b, &ev[i], sizeof ev[0]);
        b[sizeof ev[0]] = (uint8_t)(i % 3);
        snprintf(name, sizeof name, "event-%02zu", i);
        put("event_codec", name, b, sizeof b);
    }
    /* event_codec: a chat start and its body of every section, in each
     * redaction mode. */
    {
        static uint8_t b[sizeof ev[0] + 1 + 1024];
        struct cbus_event e = ev[0];
        e.kind = CBUS_EV_CHAT_MODEL_START;
        size_t bl = make_body(b + sizeof e + 1, 1024);
        e.flags |= CBUS_FLAG_BODY | CBUS_FLAG_BODY_CUT;
        e.body_len = (uint32_t)bl;
        memcpy(b, &e, sizeof e);
        for (uint8_t m = 0; m < 3; m++) {
            b[sizeof e] = m;
            snprintf(name, sizeof name, "event-body-%u", (unsigned)m);
            put("event_codec", name, b, sizeof e + 1 + bl);
        }
    }

    /* msgpack: each event encoded, and one with a preview hash. */
    for (size_t i = 0; i < n; i++) {
        uint8_t b[CBUS_EVMP_MAX];
        int len = cbus_evmp_encode(&ev[i], NULL, NULL, b, sizeof b);
        snprintf(name, sizeof name, "event-%02zu", i);
        put("msgpack", name, b, (size_t)len);
    }

    /* msgpack: a chat start with a body of every section (one cut, and two
     * the encoder skips and counts), and an llm_end with a response id. */
    {
        static uint8_t body[1024], b[CBUS_EVMP_MAX + CBUS_EVMP_BODY_MAX(1024)];
        size_t off = make_body(body, sizeof body);
        struct cbus_event e = ev[0];
        e.kind = CBUS_EV_CHAT_MODEL_START;
        e.flags |= CBUS_FLAG_BODY | CBUS_FLAG_BODY_CUT;
        e.body_len = (uint32_t)off;
        struct cbus_body bd = {body, (uint32_t)off};
        int len = cbus_evmp_encode(&e, &bd, NULL, b, sizeof b);
        put("msgpack", "event-body", b, (size_t)len);
        struct cbus_body_section h = {CBUS_BODY_RESPONSE_ID, 0, 15, 15, 0};
        memcpy(body, &h, sizeof h);
        memcpy(body + sizeof h, "msg_01XFDUDYJgA", 15);
        e.kind = CBUS_EV_LLM_END;
        e.flags = CBUS_FLAG_BODY;
        e.body_len = sizeof h + 15;
        bd.len = e.body_len;
        len = cbus_evmp_encode(&e, &bd, NULL, b, sizeof b);
        put("msgpack", "event-response-id", b, (size_t)len);
    }

    /* export_otlp: the whole run as one input, link bytes 0 (raw events). */
    {
        static uint8_t b[1 + 16 * (1 + sizeof ev[0])];
        size_t off = 0;
        b[off++] = 0x07; /* previews, resource attributes, expiry */
        for (size_t i = 0; i < n; i++) {
            b[off++] = 0;
            memcpy(b + off, &ev[i], sizeof ev[0]);
            off += sizeof ev[0];
        }
        put("export_otlp", "run", b, off);
        b[0] = 0x30; /* max_open 4, no previews */
        put("export_otlp", "run-small-table", b, off);
    }
    /* export_otlp with bodies (flags bit 3, then a profile byte): every start
     * and end carries text (a documents list, which a retriever end's
     * Phoenix attributes parse), messages, tags, metadata, system
     * instructions (read on starts) and a response id (read on ends). */
    {
        static const char msgs[] = "[{\"role\":\"user\",\"parts\":[{\"type\":\"text\",\"content\":\"hi\"},"
                                   "{\"type\":\"tool_call\",\"id\":\"c1\",\"name\":\"f\",\"arguments\":{\"x\":1}}]}]";
        static const char docs[] = "[{\"id\":\"d1\",\"content\":\"the whole text \xc3\xa9, a \\\"quote\\\"\","
                                   "\"metadata\":{\"k\":1},\"score\":0.5}]";
        static const char sys[] = "[{\"type\":\"text\",\"content\":\"Be brief.\"}]";
        static const struct {
            unsigned type;
            const char *data;
            uint32_t len;
        } sec[] = {
            {CBUS_BODY_TEXT, docs, sizeof docs - 1},
            {CBUS_BODY_MESSAGES, msgs, sizeof msgs - 1},
            {CBUS_BODY_TAGS, "prod\0eval", 9},
            {CBUS_BODY_METADATA, "team\0search\0server.port\0" "443", 26},
            {CBUS_BODY_SYSTEM, sys, sizeof sys - 1},
            {CBUS_BODY_RESPONSE_ID, "chatcmpl-seed1", 14},
        };
        uint8_t body[512];
        size_t blen = 0;
        for (size_t i = 0; i < sizeof sec / sizeof sec[0]; i++) {
            struct cbus_body_section h = {(uint16_t)sec[i].type, 0, sec[i].len, sec[i].len, 0};
            memcpy(body + blen, &h, sizeof h);
            memcpy(body + blen + sizeof h, sec[i].data, sec[i].len);
            blen += sizeof h + sec[i].len;
        }
        static uint8_t b[2 + 16 * (3 + 512 + sizeof ev[0])];
        static const uint8_t profiles[] = {0x0d, 0x0e}; /* Langfuse / Phoenix, protobuf, prices */
        for (int k = 0; k < 2; k++) {
            size_t off = 0;
            b[off++] = 0x08 | 0x01;
            b[off++] = profiles[k];
            for (size_t i = 0; i < n; i++) {
                b[off++] = 0;
                size_t bl = cbus_kind_phase(ev[i].kind) == CBUS_PHASE_START || cbus_kind_phase(ev[i].kind) == CBUS_PHASE_END
                                ? blen : 0;
                b[off++] = (uint8_t)bl;
                b[off++] = (uint8_t)(bl >> 8);
                memcpy(b + off, body, bl);
                off += bl;
                memcpy(b + off, &ev[i], sizeof ev[0]);
                off += sizeof ev[0];
            }
            put("export_otlp", k ? "content-phoenix" : "content-langfuse", b, off);
        }
    }

    /* audit_log: a header and every event as records; verify and cat modes. */
    {
        static uint8_t file[1 + AUDIT_HEADER_MAX + 16 * AUDIT_RECORD_MAX];
        struct audit_chain c;
        audit_chain_init(&c);
        struct audit_header h;
        memset(&h, 0, sizeof h);
        h.format = AUDIT_FORMAT;
        h.created_ns = ev[0].ts_realtime_ns;
        snprintf(h.bus, sizeof h.bus, "demo");
        h.bus_id = 0x1234abcd;
        h.redaction = AUDIT_REDACT_KEEP;
        size_t off = 1;
        int len = audit_header_encode(&c, &h, file + off, AUDIT_HEADER_MAX);
        off += (size_t)len;
        struct audit_redact red = {.mode = AUDIT_REDACT_KEEP};
        for (size_t i = 0; i < n; i++) {
            len = audit_record_encode(&c, &ev[i], NULL, &red, file + off, AUDIT_RECORD_MAX);
            off += (size_t)len;
        }
        audit_chain_free(&c);
        file[0] = 1;
        put("audit_log", "verify", file, off);
        file[0] = 0;
        put("audit_log", "cat", file, off);
        file[0] = 5;
        put("audit_log", "verify-twice", file, off);
        file[0] = 1;
        put("audit_log", "torn-tail", file, off - 20);
    }
    /* audit_log (format 5): records with bodies of every section, kept,
     * and hashed for chat starts by the per-kind policy. */
    {
        static uint8_t file[1 + AUDIT_HEADER_MAX + 16 * (AUDIT_RECORD_MAX + CBUS_EVMP_BODY_MAX(1024))];
        static uint8_t body[1024];
        size_t bl = make_body(body, sizeof body);
        struct cbus_body bd = {body, (uint32_t)bl};
        struct audit_chain c;
        audit_chain_init(&c);
        struct audit_header h;
        memset(&h, 0, sizeof h);
        h.created_ns = ev[0].ts_realtime_ns;
        snprintf(h.bus, sizeof h.bus, "demo");
        h.bus_id = 0x1234abcd;
        h.redaction = AUDIT_REDACT_KEEP;
        size_t off = 1;
        off += (size_t)audit_header_encode(&c, &h, file + off, AUDIT_HEADER_MAX);
        struct audit_redact red = {.mode = AUDIT_REDACT_KEEP, .salt = (const uint8_t *)"salt",
                                   .salt_len = 4};
        red.body[CBUS_EV_CHAT_MODEL_START] = AUDIT_REDACT_HASH;
        uint64_t id = 0;
        for (size_t i = 0; i < n; i++) {
            struct cbus_event e = ev[i];
            e.event_id = id;
            e.flags |= CBUS_FLAG_BODY | CBUS_FLAG_BODY_CUT;
            e.body_len = (uint32_t)bl;
            id += 1 + CBUS_BODY_SLOTS(bl);
            off += (size_t)audit_record_encode(&c, &e, &bd, &red, file + off, sizeof file - off);
        }
        audit_chain_free(&c);
        file[0] = 0;
        put("audit_log", "cat-bodies", file, off);
        file[0] = 1;
        put("audit_log", "verify-bodies", file, off);
    }

    /* ratelimit_rules: rules, NUL, then the events. */
    {
        static const char rules[] = "[rules]\nrule = user=* rpm=2 tpm=1000\n"
                                    "rule = model=gpt-4o* tpm=500 tokens=input enforce=model\n"
                                    "rule = global rpm=3\n";
        static uint8_t b[sizeof rules + 16 * sizeof ev[0]];
        memcpy(b, rules, sizeof rules); /* with its NUL */
        memcpy(b + sizeof rules, ev, n * sizeof ev[0]);
        put("ratelimit_rules", "rules-and-events", b, sizeof rules + n * sizeof ev[0]);
    }

    /* cost_checkpoint: a real checkpoint of a ledger that counted the run
     * (mode 1: the harness keeps the CRC right). */
    {
        char err[256];
        struct cost_price_table *tab;
        if (cost_prices_parse(&tab, "seed.json",
                              "{\"gpt-4o\":{\"input_cost_per_token\":2.5e-6,"
                              "\"output_cost_per_token\":1e-5}}", err, sizeof err)) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        struct cost_ledger l;
        cost_ledger_init(&l, tab, NULL, NULL);
        for (size_t i = 0; i < n; i++)
            cost_ledger_apply(&l, &ev[i]);
        char tmp[] = "/tmp/cbus-seed-ckpt.XXXXXX";
        int fd = mkstemp(tmp);
        close(fd);
        struct sbuf b;
        sbuf_init(&b);
        if (cost_checkpoint_save(&l, 0x1234abcd, ev[0].ts_realtime_ns, tmp, &b, 0)) {
            fprintf(stderr, "checkpoint save failed\n");
            return 1;
        }
        FILE *f = fopen(tmp, "rb");
        static uint8_t ck[1 + 65536];
        size_t len = fread(ck + 1, 1, sizeof ck - 1, f);
        fclose(f);
        unlink(tmp);
        ck[0] = 1;
        put("cost_checkpoint", "ledger", ck, len + 1);
        ck[0] = 0;
        put("cost_checkpoint", "ledger-crc-checked", ck, len + 1);
        sbuf_free(&b);
        cost_ledger_free(&l);
        cost_prices_free(tab);
    }

    /* segment: mode, cursor, 8 admission bytes, then ops (see fuzz_segment.c). */
    {
        static uint8_t b[8192];
        size_t off = 0;
        b[off++] = 0x03 | 0x08 | 0x40 | 0x80; /* lossless, OLDEST, 1 emit, admit, decide */
        memset(b + off, 0, 8 + 8);
        off += 16;
        b[off++] = 3; /* OP_TAIL_NEAR */
        b[off++] = (uint8_t)n;
        b[off++] = 0;
        for (size_t i = 0; i < n; i++) {
            b[off++] = 4; /* OP_COMMIT */
            b[off++] = (uint8_t)i;
            b[off++] = 0;
            b[off++] = (uint8_t)(sizeof ev[0] & 0xff);
            b[off++] = (uint8_t)(sizeof ev[0] >> 8);
            memcpy(b + off, &ev[i], sizeof ev[0]);
            off += sizeof ev[0];
        }
        put("segment", "committed-run", b, off);
        b[0] = 0x02 | 0x08; /* lossy, OLDEST */
        b[off++] = 6;       /* OP_BUSY at n: dead writer */
        b[off++] = (uint8_t)n;
        b[off++] = 0;
        b[off++] = 0;
        b[17 + 1] = (uint8_t)(n + 1); /* tail past the busy slot */
        put("segment", "abandoned-slot", b, off);
        uint8_t h[] = {0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                       2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}; /* tail huge */
        put("segment", "tail-huge", h, sizeof h);
        uint8_t g[] = {0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                       9, 5, 0, 0, 0, 0, 0, 0, 0}; /* gate says 5 tethered */
        put("segment", "gate-lies", g, sizeof g);
        uint8_t hd[] = {0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                        0, 48, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 1, 0}; /* capacity 2^40 */
        put("segment", "capacity-lies", hd, sizeof hd);
    }
    return 0;
}
