/* cbusctl emit: inject one event (or --repeat N) through the producer API,
 * for demos, smoke tests and checking that consumers react. */
#include "cbusctl.h"

#include <cbus/producer.h>

#include "event_body.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* Options go by the payload a kind fills (the kind map in layout.h), so a
 * kind added there takes the options of its payload with no edit here. */
#define P(payload) (UINT32_C(1) << (payload))
#define K(kind) P(cbus_kind_payload(kind))
#define KINDS_START P(CBUS_PAYLOAD_LLM_START)
#define KINDS_ERROR P(CBUS_PAYLOAD_ERROR)
#define KINDS_SPAN  P(CBUS_PAYLOAD_SPAN)
#define KINDS_DURATION (P(CBUS_PAYLOAD_USAGE) | KINDS_ERROR | KINDS_SPAN | P(CBUS_PAYLOAD_RETRIEVER))
#define KINDS_ALL UINT32_MAX

enum opt_id {
    O_KIND = 1, O_PROVIDER, O_MODEL, O_USER, O_SESSION, O_REQUEST, O_RUN, O_PARENT, O_TRACE,
    O_NAME, O_PREVIEW,
    O_INPUT, O_OUTPUT, O_CACHE_READ, O_CACHE_CREATION, O_REASONING, O_TTFT, O_FINISH,
    O_GENERATIONS,
    O_DURATION,
    O_PROMPTS, O_EST_INPUT, O_MAX_TOKENS,
    O_INDEX,
    O_HTTP,
    O_ATTEMPT, O_BACKOFF,
    O_DOCS,
    O_SCORE_VALUE, O_SCORE_TYPE,
    O_AGENT, O_TENANT, O_TAG, O_METADATA, O_TEXT_FILE, O_MESSAGES_FILE,
    O_SYSTEM_FILE, O_RESPONSE_ID,
    O_REPEAT, O_PRODUCER, O_TRUST, O_HELP,
    O__COUNT
};

/* Which kinds each per-kind option applies to: anything else is a usage
 * error, so a typo'd kind does not silently emit an event without its numbers. */
static uint32_t applies_to(int id)
{
    switch (id) {
    case O_INPUT: case O_OUTPUT: case O_CACHE_READ: case O_CACHE_CREATION: case O_REASONING:
    case O_TTFT: case O_FINISH: case O_GENERATIONS:
        return P(CBUS_PAYLOAD_USAGE);
    case O_DURATION:
        return KINDS_DURATION;
    case O_PROMPTS: case O_EST_INPUT: case O_MAX_TOKENS: case O_SYSTEM_FILE:
        return KINDS_START;
    case O_RESPONSE_ID:
        return P(CBUS_PAYLOAD_USAGE);
    case O_INDEX:
        return P(CBUS_PAYLOAD_TOKEN);
    case O_HTTP:
        return KINDS_ERROR;
    case O_ATTEMPT: case O_BACKOFF:
        return P(CBUS_PAYLOAD_RETRY);
    case O_DOCS:
        return P(CBUS_PAYLOAD_RETRIEVER);
    case O_SCORE_VALUE: case O_SCORE_TYPE:
        return P(CBUS_PAYLOAD_SCORE);
    default:
        return KINDS_ALL;
    }
}

static const struct option longopts[] = {
    {"kind", required_argument, NULL, O_KIND},
    {"provider", required_argument, NULL, O_PROVIDER},
    {"model", required_argument, NULL, O_MODEL},
    {"user", required_argument, NULL, O_USER},
    {"session", required_argument, NULL, O_SESSION},
    {"request-id", required_argument, NULL, O_REQUEST},
    {"run-id", required_argument, NULL, O_RUN},
    {"parent-run-id", required_argument, NULL, O_PARENT},
    {"trace-id", required_argument, NULL, O_TRACE},
    {"name", required_argument, NULL, O_NAME},
    {"preview", required_argument, NULL, O_PREVIEW},
    {"text", required_argument, NULL, O_PREVIEW},
    {"input-tokens", required_argument, NULL, O_INPUT},
    {"output-tokens", required_argument, NULL, O_OUTPUT},
    {"cache-read-tokens", required_argument, NULL, O_CACHE_READ},
    {"cache-creation-tokens", required_argument, NULL, O_CACHE_CREATION},
    {"reasoning-tokens", required_argument, NULL, O_REASONING},
    {"ttft", required_argument, NULL, O_TTFT},
    {"finish-reason", required_argument, NULL, O_FINISH},
    {"generations", required_argument, NULL, O_GENERATIONS},
    {"duration", required_argument, NULL, O_DURATION},
    {"prompt-count", required_argument, NULL, O_PROMPTS},
    {"est-input-tokens", required_argument, NULL, O_EST_INPUT},
    {"max-tokens", required_argument, NULL, O_MAX_TOKENS},
    {"index", required_argument, NULL, O_INDEX},
    {"http-status", required_argument, NULL, O_HTTP},
    {"attempt", required_argument, NULL, O_ATTEMPT},
    {"backoff", required_argument, NULL, O_BACKOFF},
    {"document-count", required_argument, NULL, O_DOCS},
    {"score-value", required_argument, NULL, O_SCORE_VALUE},
    {"score-type", required_argument, NULL, O_SCORE_TYPE},
    {"agent", required_argument, NULL, O_AGENT},
    {"tenant", required_argument, NULL, O_TENANT},
    {"tag", required_argument, NULL, O_TAG},
    {"metadata", required_argument, NULL, O_METADATA},
    {"text-file", required_argument, NULL, O_TEXT_FILE},
    {"messages-file", required_argument, NULL, O_MESSAGES_FILE},
    {"system-file", required_argument, NULL, O_SYSTEM_FILE},
    {"response-id", required_argument, NULL, O_RESPONSE_ID},
    {"repeat", required_argument, NULL, O_REPEAT},
    {"producer-name", required_argument, NULL, O_PRODUCER},
    {"trust-owner", no_argument, NULL, O_TRUST},
    {"help", no_argument, NULL, O_HELP},
    {0},
};

static void emit_help(FILE *f)
{
    fprintf(f,
            "usage: cbusctl emit NAME --kind KIND [options]\n"
            "Emits one event through the producer API (as producer 'cbusctl').  Prints nothing\n"
            "on success.\n"
            "Context (any kind):\n"
            "  --provider P --model M --user U --session S --request-id R\n"
            "  --run-id ID --parent-run-id ID --trace-id ID   (UUID or 32 hex; default: new ids)\n"
            "  --name N                tool / chain / custom event name or error type\n"
            "  --agent A --tenant T    agent name or slug; team or organisation\n"
            "  --preview TEXT          the event's text (alias --text): its first %d bytes are\n"
            "                          the preview, the whole text goes in the body\n"
            "  --text-file FILE        the text from a file, whole (instead of --preview)\n"
            "  --messages-file FILE    chat messages JSON for the body (chat_model_start,\n"
            "                          llm_end)\n"
            "  --tag T                 a tag of the run (repeatable; on start events, scores)\n"
            "  --metadata K=V          a metadata entry (repeatable; on start events, scores)\n"
            "Per kind:\n"
            "  llm_end: --input-tokens --output-tokens --cache-read-tokens\n"
            "           --cache-creation-tokens --reasoning-tokens (OpenTelemetry convention:\n"
            "           input includes cache tokens, output includes reasoning; a count not\n"
            "           given is absent, not zero) --ttft D --finish-reason R --generations N\n"
            "           --response-id ID (the provider's id of the response, in the body)\n"
            "  llm_start, chat_model_start: --prompt-count --est-input-tokens --max-tokens\n"
            "           --system-file FILE (system instructions given apart from the\n"
            "           messages: gen_ai.system_instructions JSON or text, in the body)\n"
            "  llm_new_token: --index\n"
            "  *_error: --http-status\n"
            "  retry: --attempt --backoff D\n"
            "  retriever_end: --document-count\n"
            "  score: --score-value V --score-type numeric|boolean|categorical (the\n"
            "         category is the --text; the name is the score's name)\n"
            "  --duration D            llm_end, *_error, retriever_end, chain_end, tool_end,\n"
            "                          agent_finish\n"
            "Other:\n"
            "  --repeat N              emit N identical events (default 1)\n"
            "  --producer-name NAME    producer table name (default cbusctl)\n"
            "  --trust-owner           emit into a bus owned by another uid\n",
            CBUS_PREVIEW_LEN - 1);
}

/* A whole file, for --text-file and --messages-file (at most 64 MiB: the
 * body limit is at most 16 MiB, the rest is cut by the library). */
static int read_file(const char *flag, const char *path, char **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        cli_error("emit: %s '%s': %s", flag, path, strerror(errno));
        return EXIT_USAGE;
    }
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap || cap >= (64u << 20))
            break;
        char *nb = realloc(buf, cap * 2);
        if (!nb) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    int err = ferror(f);
    fclose(f);
    if (buf) { /* NUL-ended too: the producer calls that take a string */
        char *nb = realloc(buf, n + 1);
        if (!nb)
            free(buf);
        buf = nb;
        if (buf)
            buf[n] = '\0';
    }
    if (!buf || err) {
        free(buf);
        cli_error("emit: %s '%s': %s", flag, path, buf ? "read error" : "out of memory");
        return EXIT_RUNTIME;
    }
    *out = buf;
    *len = n;
    return 0;
}

static const char *opt_name(int id)
{
    for (const struct option *o = longopts; o->name; o++)
        if (o->val == id)
            return o->name;
    return "?";
}

static int parse_id(const char *flag, const char *text, uint8_t id[16])
{
    if (cbus_id_parse(id, text))
        return cli_usage_error("emit", "%s '%s': expected a UUID or 32 hex characters", flag, text);
    return 0;
}

/* cbus_emit, or the call that carries system instructions or a response
 * id (cbus_emit has no room for them).  Those calls take the text as a
 * string: a text file with a NUL in it goes up to the NUL. */
static int emit_one(cbus_producer *p, cbus_ctx *ctx, const struct cbus_emit_args *ea,
                    const char *system, size_t system_len, const char *response_id)
{
    const void *pl = ea->payload_len ? ea->payload : NULL;
    if (system && ea->kind == CBUS_EV_CHAT_MODEL_START)
        return cbus_chat_model_start_system(p, ctx, ea->messages, ea->messages_len, system,
                                            system_len, ea->preview, pl);
    if (system && ea->kind == CBUS_EV_LLM_START)
        return cbus_llm_start_system(p, ctx, ea->preview, system, system_len, pl);
    if (system)
        return -EINVAL; /* applies_to() lets it only on the two starts */
    if (response_id && ea->kind == CBUS_EV_LLM_END)
        return cbus_llm_end_response(p, ctx, pl, ea->preview, ea->messages, ea->messages_len,
                                     response_id);
    if (response_id)
        return -EINVAL;
    return cbus_emit(p, ctx, ea);
}

/* The command line, as cmd_emit's steps read it. */
struct emit_opts {
    const char *arg[O__COUNT];
    int given[O__COUNT];
    const char *tags[64], *meta[64];
    unsigned ntags, nmeta;
    const char *bus;
    int kind;
    int help; /* --help was given and printed */
};

/* Reads and checks the command line into *o: the flags, the bus name, the
 * kind and which flags apply to it.  Returns EXIT_OK or EXIT_USAGE. */
static int parse_emit_args(int argc, char **argv, struct emit_opts *o)
{
    int r;
    optind = 0;
    for (int c; (c = getopt_long(argc, argv, "h", longopts, NULL)) != -1;) {
        if (c == 'h' || c == O_HELP) {
            emit_help(stdout);
            o->help = 1;
            return EXIT_OK;
        }
        if (c <= 0 || c >= O__COUNT) {
            emit_help(stderr);
            return EXIT_USAGE;
        }
        o->given[c] = 1;
        o->arg[c] = optarg;
        if (c == O_TAG || c == O_METADATA) {
            unsigned *n = c == O_TAG ? &o->ntags : &o->nmeta;
            if (*n == 64)
                return cli_usage_error("emit", "--%s: at most 64", opt_name(c));
            (c == O_TAG ? o->tags : o->meta)[(*n)++] = optarg;
        }
    }
    if (o->given[O_PREVIEW] && o->given[O_TEXT_FILE])
        return cli_usage_error("emit", "--text and --text-file: give one");
    if (o->given[O_RESPONSE_ID]) { /* as cbus_llm_end_response checks it: a usage error here */
        size_t n = strlen(o->arg[O_RESPONSE_ID]), i = 0;
        while (i < n && (unsigned char)o->arg[O_RESPONSE_ID][i] > 0x20 &&
               (unsigned char)o->arg[O_RESPONSE_ID][i] < 0x7f)
            i++;
        if (!n || n > CBUS_RESPONSE_ID_MAX || i < n)
            return cli_usage_error("emit",
                                   "--response-id '%s': 1 to %d bytes of printable ASCII, "
                                   "no space",
                                   o->arg[O_RESPONSE_ID], CBUS_RESPONSE_ID_MAX);
    }
    if (o->given[O_NAME] && (o->given[O_SYSTEM_FILE] || o->given[O_RESPONSE_ID]))
        return cli_usage_error("emit", "--name: not carried with --%s",
                               o->given[O_SYSTEM_FILE] ? "system-file" : "response-id");
    if (optind != argc - 1)
        return cli_usage_error("emit", "expected exactly one bus NAME");
    o->bus = argv[optind];
    if ((r = cli_bus_name("emit", o->bus)))
        return r;
    if (!o->given[O_KIND])
        return cli_usage_error("emit", "--kind is required (llm_start, llm_end, tool_start, ...)");
    int kind = o->kind = cbus_kind_from_name(o->arg[O_KIND]);
    if (kind <= 0)
        return cli_usage_error("emit", "--kind '%s': unknown kind", o->arg[O_KIND]);
    for (const struct option *opt = longopts; opt->name; opt++) {
        if (o->given[opt->val] && !(applies_to(opt->val) & K(kind)))
            return cli_usage_error("emit", "--%s does not apply to kind %s", opt->name, o->arg[O_KIND]);
    }
    return EXIT_OK;
}

/* The event's context from the flags: ids and bounded strings, tags and
 * metadata.  Returns EXIT_OK or EXIT_USAGE. */
static int set_context(const struct emit_opts *o, cbus_ctx *ctx)
{
    uint8_t id[16];
    int r;
    cbus_ctx_init(ctx);
    static const struct {
        int id;
        int (*set)(cbus_ctx *, const char *);
    } strings[] = {
        {O_PROVIDER, cbus_ctx_set_provider}, {O_MODEL, cbus_ctx_set_model},
        {O_USER, cbus_ctx_set_user},         {O_SESSION, cbus_ctx_set_session},
        {O_REQUEST, cbus_ctx_set_request_id}, {O_AGENT, cbus_ctx_set_agent},
        {O_TENANT, cbus_ctx_set_tenant},
    };
    for (size_t i = 0; i < sizeof strings / sizeof strings[0]; i++) {
        if (o->given[strings[i].id] && (r = strings[i].set(ctx, o->arg[strings[i].id])) < 0) {
            cli_error("emit: setting a context string: %s", cbus_strerror(r));
            return EXIT_USAGE;
        }
    }
    for (unsigned i = 0; i < o->ntags; i++)
        if ((r = cbus_ctx_add_tag(ctx, o->tags[i])) < 0) {
            cli_error("emit: --tag '%s': %s", o->tags[i], cbus_strerror(r));
            return EXIT_USAGE;
        }
    for (unsigned i = 0; i < o->nmeta; i++) {
        char kv[1024];
        char *eq;
        if (strlen(o->meta[i]) >= sizeof kv || !(eq = strchr(strcpy(kv, o->meta[i]), '=')))
            return cli_usage_error("emit", "--metadata '%s': expected KEY=VALUE", o->meta[i]);
        *eq = '\0';
        if ((r = cbus_ctx_set_metadata(ctx, kv, eq + 1)) < 0) {
            cli_error("emit: --metadata '%s': %s", o->meta[i], cbus_strerror(r));
            return EXIT_USAGE;
        }
    }
    if (o->given[O_RUN]) {
        if ((r = parse_id("--run-id", o->arg[O_RUN], id)))
            return r;
        cbus_ctx_set_run_id(ctx, id);
    }
    if (o->given[O_PARENT]) {
        if ((r = parse_id("--parent-run-id", o->arg[O_PARENT], id)))
            return r;
        cbus_ctx_set_parent_run_id(ctx, id);
    }
    if (o->given[O_TRACE]) {
        if ((r = parse_id("--trace-id", o->arg[O_TRACE], id)))
            return r;
        cbus_ctx_set_trace_id(ctx, id);
    }
    return EXIT_OK;
}

/* An end's usage from the flags (duration already parsed).  Returns EXIT_OK
 * or EXIT_USAGE. */
static int set_usage(const struct emit_opts *o, uint64_t duration, struct cbus_usage *u)
{
    int r;
    static const struct {
        int id;
        unsigned bit;
        size_t off;
    } counts[] = {
        {O_INPUT, CBUS_USAGE_INPUT, offsetof(struct cbus_usage, input_tokens)},
        {O_OUTPUT, CBUS_USAGE_OUTPUT, offsetof(struct cbus_usage, output_tokens)},
        {O_CACHE_READ, CBUS_USAGE_CACHE_READ, offsetof(struct cbus_usage, cache_read_tokens)},
        {O_CACHE_CREATION, CBUS_USAGE_CACHE_CREATION, offsetof(struct cbus_usage, cache_creation_tokens)},
        {O_REASONING, CBUS_USAGE_REASONING, offsetof(struct cbus_usage, reasoning_tokens)},
    };
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
        if (!o->given[counts[i].id])
            continue;
        uint32_t v;
        char flag[48];
        snprintf(flag, sizeof flag, "--%s", opt_name(counts[i].id));
        if ((r = cli_u32("emit", flag, o->arg[counts[i].id], &v)))
            return r;
        memcpy((char *)u + counts[i].off, &v, sizeof v);
        u->usage_present |= (uint8_t)counts[i].bit;
    }
    if (o->given[O_DURATION]) {
        u->duration_ns = duration;
        u->usage_present |= CBUS_USAGE_DURATION;
    }
    if (o->given[O_TTFT]) {
        if ((r = cli_duration("emit", "--ttft", o->arg[O_TTFT], &u->ttft_ns)))
            return r;
        u->usage_present |= CBUS_USAGE_TTFT;
    }
    if (o->given[O_FINISH]) {
        int fr = cbus_finish_reason_from_name(o->arg[O_FINISH]);
        if (fr < 0)
            return cli_usage_error("emit",
                                   "--finish-reason '%s': expected stop, length, "
                                   "tool_calls, content_filter, error or other",
                                   o->arg[O_FINISH]);
        u->finish_reason = (uint8_t)fr;
    }
    if (o->given[O_GENERATIONS]) {
        uint64_t g = 0;
        if ((r = cli_u64("emit", "--generations", o->arg[O_GENERATIONS], 0, UINT16_MAX, &g)))
            return r;
        u->generations = (uint16_t)g;
    }
    return EXIT_OK;
}

/* The kind's payload from the flags into *pl, its size into *len (0: the
 * kind has none).  Returns EXIT_OK or EXIT_USAGE. */
static int set_payload(const struct emit_opts *o, union cbus_event_payload *pl, size_t *len)
{
    size_t pl_len = 0;
    uint64_t duration = 0;
    int r;
    const int kind = o->kind;
    memset(pl, 0, sizeof *pl);
    if (o->given[O_DURATION] && (r = cli_duration("emit", "--duration", o->arg[O_DURATION], &duration)))
        return r;

    if (K(kind) & P(CBUS_PAYLOAD_USAGE)) {
        if ((r = set_usage(o, duration, &pl->usage)))
            return r;
        pl_len = sizeof pl->usage;
    } else if (K(kind) & KINDS_START) {
        if ((o->given[O_PROMPTS] &&
             (r = cli_u32("emit", "--prompt-count", o->arg[O_PROMPTS], &pl->llm_start.prompt_count))) ||
            (o->given[O_EST_INPUT] && (r = cli_u32("emit", "--est-input-tokens", o->arg[O_EST_INPUT],
                                                   &pl->llm_start.est_input_tokens))) ||
            (o->given[O_MAX_TOKENS] &&
             (r = cli_u32("emit", "--max-tokens", o->arg[O_MAX_TOKENS], &pl->llm_start.max_tokens))))
            return r;
        pl_len = sizeof pl->llm_start;
    } else if (K(kind) & P(CBUS_PAYLOAD_TOKEN)) {
        if (o->given[O_INDEX] && (r = cli_u32("emit", "--index", o->arg[O_INDEX], &pl->token.index)))
            return r;
        pl_len = sizeof pl->token;
    } else if (K(kind) & KINDS_ERROR) {
        if (o->given[O_HTTP]) {
            uint64_t st = 0;
            if ((r = cli_u64("emit", "--http-status", o->arg[O_HTTP], 100, 599, &st)))
                return r;
            pl->error.http_status = (int32_t)st;
        }
        pl->error.duration_ns = duration;
        pl_len = sizeof pl->error;
    } else if (K(kind) & P(CBUS_PAYLOAD_RETRY)) {
        if ((o->given[O_ATTEMPT] &&
             (r = cli_u32("emit", "--attempt", o->arg[O_ATTEMPT], &pl->retry.attempt))) ||
            (o->given[O_BACKOFF] &&
             (r = cli_duration("emit", "--backoff", o->arg[O_BACKOFF], &pl->retry.backoff_ns))))
            return r;
        pl_len = sizeof pl->retry;
    } else if (K(kind) & P(CBUS_PAYLOAD_RETRIEVER)) {
        if (o->given[O_DOCS] &&
            (r = cli_u32("emit", "--document-count", o->arg[O_DOCS], &pl->retriever.document_count)))
            return r;
        pl->retriever.duration_ns = duration;
        pl_len = sizeof pl->retriever;
    } else if (K(kind) & KINDS_SPAN) {
        pl->span.duration_ns = duration;
        pl_len = sizeof pl->span;
    } else if (K(kind) & P(CBUS_PAYLOAD_SCORE)) {
        pl->score.type = CBUS_SCORE_NUMERIC;
        if (o->given[O_SCORE_TYPE]) {
            int t = cbus_score_type_from_name(o->arg[O_SCORE_TYPE], strlen(o->arg[O_SCORE_TYPE]));
            if (t < 0)
                return cli_usage_error("emit",
                                       "--score-type '%s': expected numeric, boolean "
                                       "or categorical",
                                       o->arg[O_SCORE_TYPE]);
            pl->score.type = (uint8_t)t;
        }
        if (o->given[O_SCORE_VALUE]) {
            char *end;
            errno = 0;
            pl->score.value = strtod(o->arg[O_SCORE_VALUE], &end);
            if (errno || end == o->arg[O_SCORE_VALUE] || *end)
                return cli_usage_error("emit", "--score-value '%s': expected a number",
                                       o->arg[O_SCORE_VALUE]);
        }
        pl_len = sizeof pl->score;
    }
    *len = pl_len;
    return 0;
}

/* Opens a producer on the bus and emits the event --repeat times, with the
 * text, messages and system instructions read from their files.  Returns
 * the exit status. */
static int emit_events(const struct emit_opts *o, cbus_ctx *ctx, const union cbus_event_payload *pl,
                       size_t pl_len)
{
    int r;
    uint64_t repeat = 1;
    if (o->given[O_REPEAT] && (r = cli_u64("emit", "--repeat", o->arg[O_REPEAT], 1, UINT64_MAX, &repeat)))
        return r;
    struct cbus_producer_opts po = {.name = o->given[O_PRODUCER] ? o->arg[O_PRODUCER] : "cbusctl"};
    if (o->given[O_PRODUCER] && strlen(po.name) >= PRODUCER_NAME_SIZE)
        return cli_usage_error("emit", "--producer-name '%s': at most %zu characters", po.name,
                               PRODUCER_NAME_SIZE - 1);
    if (o->given[O_TRUST])
        po.open_flags |= CBUS_OPEN_TRUST_OWNER;

    char *text = NULL, *messages = NULL, *system = NULL;
    size_t text_len = SIZE_MAX, messages_len = 0, system_len = 0;
    if (o->given[O_TEXT_FILE] && (r = read_file("--text-file", o->arg[O_TEXT_FILE], &text, &text_len)))
        return r;
    if ((o->given[O_MESSAGES_FILE] &&
         (r = read_file("--messages-file", o->arg[O_MESSAGES_FILE], &messages, &messages_len))) ||
        (o->given[O_SYSTEM_FILE] &&
         (r = read_file("--system-file", o->arg[O_SYSTEM_FILE], &system, &system_len)))) {
        free(text);
        free(messages);
        return r;
    }

    cbus_producer *p;
    if ((r = cbus_producer_open(&p, o->bus, &po))) {
        cli_explain_open_error(o->bus, r);
        free(text);
        free(messages);
        free(system);
        return EXIT_RUNTIME;
    }
    struct cbus_emit_args ea = {
        .kind = (unsigned)o->kind,
        .name = o->arg[O_NAME],
        .preview = text ? text : o->arg[O_PREVIEW],
        .preview_len = text_len,
        .payload = pl_len ? pl : NULL,
        .payload_len = pl_len,
        .messages = messages,
        .messages_len = messages_len,
    };
    uint64_t dropped = 0;
    int rc = EXIT_OK;
    for (uint64_t i = 0; i < repeat; i++) {
        r = emit_one(p, ctx, &ea, system, system_len, o->arg[O_RESPONSE_ID]);
        if (r == -EAGAIN) {
            dropped++;
        } else if (r < 0) {
            cli_error("emit into bus '%s': %s", o->bus, cbus_strerror(r));
            rc = EXIT_RUNTIME;
            break;
        }
    }
    if (dropped) {
        cli_error("%" PRIu64 " of %" PRIu64 " events dropped: a lossless consumer kept bus '%s' "
                  "full past the producer wait bound (see cbusctl stat %s)",
                  dropped, repeat, o->bus, o->bus);
        rc = EXIT_RUNTIME;
    }
    cbus_producer_close(p);
    free(text);
    free(messages);
    free(system);
    return rc;
}

int cmd_emit(int argc, char **argv)
{
    struct emit_opts o = {0};
    int r = parse_emit_args(argc, argv, &o);
    if (r || o.help)
        return r;
    cbus_ctx ctx;
    union cbus_event_payload pl;
    size_t pl_len = 0;
    if ((r = set_context(&o, &ctx)) || (r = set_payload(&o, &pl, &pl_len)))
        return r;
    return emit_events(&o, &ctx, &pl, pl_len);
}
