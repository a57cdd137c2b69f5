/* cbusctl tail: attach a lossy consumer and print events as they come.
 * Lossy on purpose: watching a bus must never slow the server. */
#include "cbusctl.h"

#include "daemon.h"
#include "event_json.h"
#include "sbuf.h"

#include <cbus/consumer.h>

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BATCH 64
#define WAIT_NS (500 * UINT64_C(1000000))

struct filter {
    uint32_t kinds;        /* bit per enum cbus_kind; 0 = all */
    const char *user;      /* exact match, NULL = any */
    const char *model;
};

static int field_is(const char *field, size_t size, const char *want)
{
    size_t n = strnlen(field, size);
    return strlen(want) == n && memcmp(field, want, n) == 0;
}

static int matches(const struct filter *f, const struct cbus_event *ev)
{
    if (f->kinds && (ev->kind >= 32 || !(f->kinds & (UINT32_C(1) << ev->kind))))
        return 0;
    if (f->user && !field_is(ev->user, sizeof ev->user, f->user))
        return 0;
    if (f->model && !field_is(ev->model, sizeof ev->model, f->model))
        return 0;
    return 1;
}

/* "llm_end,llm_error" -> bits; repeated --kind adds. */
static int parse_kinds(const char *text, uint32_t *bits)
{
    char buf[256];
    if (strlen(text) >= sizeof buf)
        return cli_usage_error("tail", "--kind '%s': too long", text);
    strcpy(buf, text);
    char *save = NULL;
    for (char *k = strtok_r(buf, ",", &save); k; k = strtok_r(NULL, ",", &save)) {
        int kind = cbus_kind_from_name(k);
        if (kind <= 0 || kind >= 32) {
            char list[512] = "";
            size_t used = 0;
            for (unsigned i = 1; i < CBUS_EV__COUNT && used < sizeof list; i++) {
                const char *n = cbus_kind_name(i);
                if (n)
                    used += (size_t)snprintf(list + used, sizeof list - used, "%s%s",
                                             used ? ", " : "", n);
            }
            return cli_usage_error("tail", "--kind '%s': unknown kind (one of: %s)", k, list);
        }
        *bits |= UINT32_C(1) << kind;
    }
    return 0;
}

static void tail_help(FILE *f)
{
    fprintf(f,
            "usage: cbusctl tail NAME [options]\n"
            "Attaches a lossy consumer (never slows producers) and prints events as they\n"
            "arrive, one per line, until interrupted; detaches on SIGINT/SIGTERM.\n"
            "  --kind K[,K...]   only these kinds (repeatable): llm_end, llm_error, ...\n"
            "  --user U          only events whose user is exactly U\n"
            "  --model M         only events whose model is exactly M\n"
            "  --json            one JSON object per line (the project's event JSON)\n"
            "  --body            show each event's body (whole prompt, answer, messages,\n"
            "                    tags, metadata): indented lines under the event, or\n"
            "                    the \"body\" object with --json\n"
            "  --count N         exit after printing N events\n"
            "  --oldest          start at the oldest event still in the ring, not the newest\n"
            "  --name NAME       consumer name shown by stat (default tail-PID)\n"
            "  --trust-owner     attach to a bus owned by another uid\n"
            "Events the tail missed because producers lapped it are reported on stderr.\n");
}

/* The command line, as cmd_tail's steps read it. */
struct tail_opts {
    struct filter f;
    int json, want_body;
    uint64_t count;               /* 0: until interrupted */
    char cname[CBUS_NAME_MAX];    /* the default consumer name, tail-PID */
    struct cbus_consumer_opts co; /* co.name: cname or --name */
    const char *bus;
    int help; /* --help was given and printed */
};

/* Reads and checks the command line into *t.  Returns EXIT_OK or
 * EXIT_USAGE. */
static int parse_tail_args(int argc, char **argv, struct tail_opts *t)
{
    static const struct option longopts[] = {
        {"kind", required_argument, NULL, 'k'},
        {"user", required_argument, NULL, 'u'},
        {"model", required_argument, NULL, 'm'},
        {"json", no_argument, NULL, 'j'},
        {"body", no_argument, NULL, 'b'},
        {"count", required_argument, NULL, 'n'},
        {"oldest", no_argument, NULL, 'o'},
        {"name", required_argument, NULL, 'N'},
        {"trust-owner", no_argument, NULL, 'T'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    int r;
    t->co = (struct cbus_consumer_opts){.mode = CBUS_LOSSY, .start = CBUS_START_NEWEST};
    snprintf(t->cname, sizeof t->cname, "tail-%d", (int)getpid());
    t->co.name = t->cname;
    optind = 0;
    for (int c; (c = getopt_long(argc, argv, "h", longopts, NULL)) != -1;) {
        switch (c) {
        case 'k':
            if ((r = parse_kinds(optarg, &t->f.kinds)))
                return r;
            break;
        case 'u':
            t->f.user = optarg;
            break;
        case 'm':
            t->f.model = optarg;
            break;
        case 'j':
            t->json = 1;
            break;
        case 'b':
            t->want_body = 1;
            break;
        case 'n':
            if ((r = cli_u64("tail", "--count", optarg, 1, UINT64_MAX, &t->count)))
                return r;
            break;
        case 'o':
            t->co.start = CBUS_START_OLDEST;
            break;
        case 'N':
            if (cbus_name_valid(optarg) || strlen(optarg) >= CONSUMER_NAME_SIZE)
                return cli_usage_error("tail", "--name '%s': use 1..%zu characters of "
                                               "[A-Za-z0-9_.-], not starting with '.'",
                                       optarg, CONSUMER_NAME_SIZE - 1);
            t->co.name = optarg;
            break;
        case 'T':
            t->co.open_flags |= CBUS_OPEN_TRUST_OWNER;
            break;
        case 'h':
            tail_help(stdout);
            t->help = 1;
            return EXIT_OK;
        default:
            tail_help(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind != argc - 1)
        return cli_usage_error("tail", "expected exactly one bus NAME");
    t->bus = argv[optind];
    return cli_bus_name("tail", t->bus);
}

/* Attaches the tail's consumer, saying why it could not.  Returns EXIT_OK
 * or EXIT_RUNTIME. */
static int attach_tail(const struct tail_opts *t, cbus_consumer **c)
{
    const char *name = t->bus;
    int r = cbus_consumer_attach(c, name, &t->co);
    if (r == -EBUSY) {
        cli_error("a live consumer named '%s' is already attached to bus '%s': pick another "
                  "--name",
                  t->co.name, name);
        return EXIT_RUNTIME;
    }
    if (r == -ENOSPC) {
        cli_error("all %d consumer entries of bus '%s' are in use: see cbusctl stat %s and evict "
                  "dead ones",
                  CBUS_MAX_CONSUMERS, name, name);
        return EXIT_RUNTIME;
    }
    if (r) {
        cli_explain_open_error(name, r);
        return EXIT_RUNTIME;
    }
    return EXIT_OK;
}

/* Waits for events when a poll found none.  Returns EXIT_OK to poll again,
 * or EXIT_RUNTIME (evicted, or the wait failed). */
static int wait_events(const struct tail_opts *t, cbus_consumer *c)
{
    int w = cbus_consumer_wait(c, WAIT_NS);
    if (w == -ESTALE) {
        cli_error("tail consumer '%s' was evicted from bus '%s'", t->co.name, t->bus);
        return EXIT_RUNTIME;
    }
    if (w < 0 && w != -EINTR) {
        cli_error("waiting on bus '%s': %s", t->bus, cbus_strerror(w));
        return EXIT_RUNTIME;
    }
    return EXIT_OK;
}

/* The batch's events that match, as text or JSON lines, into out, up to
 * --count in all (*printed counts them). */
static void render_batch(const struct tail_opts *t, const struct cbus_event *evs,
                         const struct cbus_body *bodies, int n, struct sbuf *out, uint64_t *printed)
{
    sbuf_reset(out);
    for (int i = 0; i < n && (!t->count || *printed < t->count); i++) {
        if (!matches(&t->f, &evs[i]))
            continue;
        const struct cbus_body *body = t->want_body ? &bodies[i] : NULL;
        if (t->json)
            cbus_event_json(out, &evs[i], body);
        else
            event_text(out, &evs[i], body);
        sbuf_add(out, "\n", 1);
        (*printed)++;
    }
}

/* Polls, prints and commits until --count, a signal, or an error; reports
 * the events lost to lapping on stderr as they happen.  Returns the exit
 * status. */
static int follow(const struct tail_opts *t, cbus_consumer *c, struct cbus_event *evs,
                  struct cbus_body *bodies, void *body_buf, size_t body_cap, struct sbuf *out)
{
    uint64_t printed = 0, lost_seen = 0;
    while (!cbus_daemon_stop && (!t->count || printed < t->count)) {
        int n = t->want_body ? cbus_consumer_poll_bodies(c, evs, bodies, BATCH, body_buf, body_cap)
                             : cbus_consumer_poll(c, evs, BATCH);
        if (n == -ESTALE) {
            cli_error("tail consumer '%s' was evicted from bus '%s'", t->co.name, t->bus);
            return EXIT_RUNTIME;
        }
        if (n < 0) {
            cli_error("reading bus '%s': %s", t->bus, cbus_strerror(n));
            return EXIT_RUNTIME;
        }
        if (n == 0) {
            if (wait_events(t, c))
                return EXIT_RUNTIME;
            continue;
        }
        render_batch(t, evs, bodies, n, out, &printed);
        if (out->failed) {
            cli_error("out of memory");
            return EXIT_RUNTIME;
        }
        if (out->len && (fwrite(out->data, 1, out->len, stdout) != out->len || fflush(stdout)))
            break; /* reader went away (EPIPE): a normal end for a tail */
        cbus_consumer_commit(c);

        struct cbus_consumer_stats st;
        if (cbus_consumer_stats(c, &st) == 0 && st.lost > lost_seen) {
            fprintf(stderr, "cbusctl tail: lost %" PRIu64 " events (producers lapped this tail; "
                            "%" PRIu64 " lost in all)\n",
                    st.lost - lost_seen, st.lost);
            lost_seen = st.lost;
        }
    }
    return EXIT_OK;
}

int cmd_tail(int argc, char **argv)
{
    struct tail_opts t = {0};
    int r = parse_tail_args(argc, argv, &t);
    if (r || t.help)
        return r;
    cbus_consumer *c;
    if ((r = attach_tail(&t, &c)))
        return r;

    /* SIGPIPE is ignored there: a closed pipe (| head) shows up as a write
     * error, and we detach cleanly instead of dying with the entry held. */
    cbus_daemon_signals();
    struct cbus_event *evs = calloc(BATCH, sizeof *evs);
    /* --body: bodies are copied into one buffer of the bus's body limit
     * (poll_bodies stops a batch early when the next body does not fit). */
    struct cbus_body bodies[BATCH];
    size_t body_cap = t.want_body ? cbus_bus_body_limit(cbus_consumer_bus(c)) : 0;
    void *body_buf = body_cap ? malloc(body_cap) : NULL;
    struct sbuf out;
    sbuf_init(&out);
    int rc;
    if (!evs || (body_cap && !body_buf)) {
        cli_error("out of memory");
        rc = EXIT_RUNTIME;
    } else {
        rc = follow(&t, c, evs, bodies, body_buf, body_cap, &out);
    }
    sbuf_free(&out);
    free(body_buf);
    free(evs);
    cbus_consumer_detach(c);
    return rc;
}
