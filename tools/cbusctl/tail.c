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

int cmd_tail(int argc, char **argv)
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
    struct filter f = {0};
    int json = 0, want_body = 0, r;
    uint64_t count = 0;
    char cname[CBUS_NAME_MAX];
    struct cbus_consumer_opts co = {.mode = CBUS_LOSSY, .start = CBUS_START_NEWEST};

    snprintf(cname, sizeof cname, "tail-%d", (int)getpid());
    co.name = cname;
    optind = 0;
    for (int c; (c = getopt_long(argc, argv, "h", longopts, NULL)) != -1;) {
        switch (c) {
        case 'k':
            if ((r = parse_kinds(optarg, &f.kinds)))
                return r;
            break;
        case 'u':
            f.user = optarg;
            break;
        case 'm':
            f.model = optarg;
            break;
        case 'j':
            json = 1;
            break;
        case 'b':
            want_body = 1;
            break;
        case 'n':
            if ((r = cli_u64("tail", "--count", optarg, 1, UINT64_MAX, &count)))
                return r;
            break;
        case 'o':
            co.start = CBUS_START_OLDEST;
            break;
        case 'N':
            if (cbus_name_valid(optarg) || strlen(optarg) >= CONSUMER_NAME_SIZE)
                return cli_usage_error("tail", "--name '%s': use 1..%zu characters of "
                                               "[A-Za-z0-9_.-], not starting with '.'",
                                       optarg, CONSUMER_NAME_SIZE - 1);
            co.name = optarg;
            break;
        case 'T':
            co.open_flags |= CBUS_OPEN_TRUST_OWNER;
            break;
        case 'h':
            tail_help(stdout);
            return EXIT_OK;
        default:
            tail_help(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind != argc - 1)
        return cli_usage_error("tail", "expected exactly one bus NAME");
    const char *name = argv[optind];
    if ((r = cli_bus_name("tail", name)))
        return r;

    cbus_consumer *c;
    r = cbus_consumer_attach(&c, name, &co);
    if (r == -EBUSY) {
        cli_error("a live consumer named '%s' is already attached to bus '%s': pick another "
                  "--name",
                  co.name, name);
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

    /* SIGPIPE is ignored there: a closed pipe (| head) shows up as a write
     * error, and we detach cleanly instead of dying with the entry held. */
    cbus_daemon_signals();
    struct cbus_event *evs = calloc(BATCH, sizeof *evs);
    /* --body: bodies are copied into one buffer of the bus's body limit
     * (poll_bodies stops a batch early when the next body does not fit). */
    struct cbus_body bodies[BATCH];
    size_t body_cap = want_body ? cbus_bus_body_limit(cbus_consumer_bus(c)) : 0;
    void *body_buf = body_cap ? malloc(body_cap) : NULL;
    struct sbuf out;
    sbuf_init(&out);
    uint64_t printed = 0, lost_seen = 0;
    int rc = EXIT_OK;
    if (!evs || (body_cap && !body_buf)) {
        cli_error("out of memory");
        rc = EXIT_RUNTIME;
    }

    while (evs && !cbus_daemon_stop && (!count || printed < count)) {
        int n = want_body ? cbus_consumer_poll_bodies(c, evs, bodies, BATCH, body_buf, body_cap)
                          : cbus_consumer_poll(c, evs, BATCH);
        if (n == -ESTALE) {
            cli_error("tail consumer '%s' was evicted from bus '%s'", co.name, name);
            rc = EXIT_RUNTIME;
            break;
        }
        if (n < 0) {
            cli_error("reading bus '%s': %s", name, cbus_strerror(n));
            rc = EXIT_RUNTIME;
            break;
        }
        if (n == 0) {
            int w = cbus_consumer_wait(c, WAIT_NS);
            if (w == -ESTALE) {
                cli_error("tail consumer '%s' was evicted from bus '%s'", co.name, name);
                rc = EXIT_RUNTIME;
                break;
            }
            if (w < 0 && w != -EINTR) {
                cli_error("waiting on bus '%s': %s", name, cbus_strerror(w));
                rc = EXIT_RUNTIME;
                break;
            }
            continue;
        }

        sbuf_reset(&out);
        for (int i = 0; i < n && (!count || printed < count); i++) {
            if (!matches(&f, &evs[i]))
                continue;
            const struct cbus_body *body = want_body ? &bodies[i] : NULL;
            if (json)
                cbus_event_json(&out, &evs[i], body);
            else
                event_text(&out, &evs[i], body);
            sbuf_add(&out, "\n", 1);
            printed++;
        }
        if (out.failed) {
            cli_error("out of memory");
            rc = EXIT_RUNTIME;
            break;
        }
        if (out.len && (fwrite(out.data, 1, out.len, stdout) != out.len || fflush(stdout)))
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

    sbuf_free(&out);
    free(body_buf);
    free(evs);
    cbus_consumer_detach(c);
    return rc;
}
