/* The command line over the store: list, show, rename, export, search,
 * expire, forget.  Text from producers is shown escaped for the terminal
 * (sbuf_human_str), JSON with invalid UTF-8 replaced (sbuf_json_str). */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cbus/cbus.h>

#include "api.h"
#include "config.h"
#include "history_config.h"
#include "history_daemon.h"
#include "sbuf.h"
#include "store.h"

static const char *const commands[] = {"list", "show", "rename", "export", "search", "expire",
                                       "forget", NULL};

int hist_cli_is_command(const char *arg)
{
    for (unsigned i = 0; commands[i]; i++)
        if (!strcmp(arg, commands[i]))
            return 1;
    return 0;
}

static unsigned long long real_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec;
}

static int cli_usage(const char *cmd)
{
    fprintf(stderr,
            "usage: cbus-history %s ... [--db PATH | --config PATH [--bus NAME]]\n"
            "  list [--user U] [--since T] [--limit N] [--json]   T: 7d, 2026-12-01, epoch s\n"
            "  show CONV [--json]\n"
            "  rename CONV TITLE\n"
            "  export CONV --json\n"
            "  search TEXT [--limit N] [--json]\n"
            "  expire --older-than DURATION\n"
            "  forget USER\n", cmd);
    return 2;
}

/* What the command line said. */
struct cli_args {
    const char *cmd, *db, *config, *bus, *user, *since, *older;
    const char *a1, *a2; /* the command's operands */
    int json;
    unsigned long limit;
};

/* Options and operands; returns -1 when they are fine, else the exit code. */
static int parse_args(struct cli_args *a, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"db", required_argument, NULL, 'd'},
        {"config", required_argument, NULL, 'c'},
        {"bus", required_argument, NULL, 'b'},
        {"json", no_argument, NULL, 'j'},
        {"user", required_argument, NULL, 'u'},
        {"since", required_argument, NULL, 's'},
        {"limit", required_argument, NULL, 'n'},
        {"older-than", required_argument, NULL, 'o'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *cmd = a->cmd = argv[0];
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "d:c:b:ju:s:n:o:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'd': a->db = optarg; break;
        case 'c': a->config = optarg; break;
        case 'b': a->bus = optarg; break;
        case 'j': a->json = 1; break;
        case 'u': a->user = optarg; break;
        case 's': a->since = optarg; break;
        case 'n': {
            char *e;
            a->limit = strtoul(optarg, &e, 10);
            if (e == optarg || *e || a->limit == 0 || a->limit > 1000000) {
                fprintf(stderr, "cbus-history %s: --limit %s: want 1..1000000\n", cmd, optarg);
                return 2;
            }
            break;
        }
        case 'o': a->older = optarg; break;
        case 'h': cli_usage(cmd); return 0;
        default: return cli_usage(cmd);
        }
    }
    a->a1 = optind < argc ? argv[optind] : NULL;
    a->a2 = optind + 1 < argc ? argv[optind + 1] : NULL;
    int nargs = argc - optind;
    int want = !strcmp(cmd, "list") || !strcmp(cmd, "expire") ? 0 : !strcmp(cmd, "rename") ? 2 : 1;
    if (nargs != want) {
        fprintf(stderr, "cbus-history %s: %s\n", cmd,
                nargs < want ? "missing argument" : "too many arguments");
        return cli_usage(cmd);
    }
    if (!strcmp(cmd, "export") && !a->json) {
        fprintf(stderr, "cbus-history export: the format is JSON: give --json\n");
        return 2;
    }
    return -1;
}

/* The store the config (or --db, --bus) names, opened for reading: never
 * created by reading it.  Returns -1 and *st, or the exit code. */
static int open_store(const struct cli_args *a, struct hist_config *cfg, struct hist_store **st)
{
    char err[1024];
    if (hist_config_load(cfg, a->config, err, sizeof err)) {
        fprintf(stderr, "cbus-history: %s\n", err);
        return 2;
    }
    if (a->bus)
        snprintf(cfg->bus, sizeof cfg->bus, "%s", a->bus);
    if (a->db)
        snprintf(cfg->db, sizeof cfg->db, "%s", a->db);
    else if (strstr(cfg->db, "%b") && !cfg->bus[0]) {
        fprintf(stderr, "cbus-history %s: which store? give --db PATH, or --bus NAME\n", a->cmd);
        return 2;
    }
    hist_config_finish(cfg);
    if (access(cfg->db, F_OK)) {
        fprintf(stderr, "cbus-history %s: no store at %s (%s); has the daemon run?\n", a->cmd, cfg->db,
                strerror(errno));
        return 1;
    }
    if (hist_store_open(st, cfg->db, 0, err, sizeof err)) {
        fprintf(stderr, "cbus-history %s: store %s\n", a->cmd, err);
        return 1;
    }
    return -1;
}

/* Runs the command into b.  Returns the store's answer (0, -ENOENT for an
 * unknown conversation, other: a store error), or sets *usage_rc for an
 * operand that is wrong. */
static int run_command(const struct cli_args *a, struct hist_store *st, struct sbuf *b, int *usage_rc)
{
    const char *cmd = a->cmd;
    int r;
    uint64_t c = 0, m = 0;
    if (!strcmp(cmd, "list")) {
        struct hist_list_q q = {.user = a->user, .limit = (unsigned)a->limit};
        if (a->since) {
            unsigned long long ns;
            if (hist_parse_since(a->since, real_ns(), &ns)) {
                fprintf(stderr, "cbus-history list: --since %s: want 7d, 2026-12-01, "
                                "2026-12-01T10:00:00Z or epoch seconds\n", a->since);
                *usage_rc = 2;
                return 0;
            }
            q.since_ns = ns;
        }
        return hist_render_list(st, &q, a->json, b);
    }
    if (!strcmp(cmd, "show") || !strcmp(cmd, "export"))
        return hist_render_conv(st, a->a1, a->json, 1, b);
    if (!strcmp(cmd, "search"))
        return hist_render_search(st, a->a1, (unsigned)a->limit, a->json, b);
    if (!strcmp(cmd, "rename")) {
        if (!*a->a2 || strlen(a->a2) > HIST_TITLE_MAX) {
            fprintf(stderr, "cbus-history rename: the title must be 1..%d bytes\n", HIST_TITLE_MAX);
            *usage_rc = 2;
            return 0;
        }
        r = hist_store_rename(st, a->a1, a->a2, real_ns());
        if (!r)
            sbuf_printf(b, "renamed\n");
        return r;
    }
    if (!strcmp(cmd, "forget")) {
        r = hist_store_forget(st, a->a1, &c, &m);
        if (!r)
            sbuf_printf(b, "forgot user: %llu conversations, %llu messages deleted\n",
                        (unsigned long long)c, (unsigned long long)m);
        return r;
    }
    /* expire */
    uint64_t age;
    if (!a->older || cbus_parse_duration_ns(a->older, &age)) {
        fprintf(stderr, "cbus-history expire: give --older-than DURATION (30d, 12h)\n");
        *usage_rc = 2;
        return 0;
    }
    unsigned long long now = real_ns();
    r = hist_store_expire(st, now > age ? now - age : 0, &c, &m);
    if (!r)
        sbuf_printf(b, "expired: %llu conversations, %llu messages deleted\n", (unsigned long long)c,
                    (unsigned long long)m);
    return r;
}

int hist_cli_main(int argc, char **argv)
{
    struct cli_args a = {0};
    int rc = parse_args(&a, argc, argv);
    if (rc >= 0)
        return rc;
    struct hist_config cfg;
    struct hist_store *st;
    rc = open_store(&a, &cfg, &st);
    if (rc >= 0)
        return rc;
    struct sbuf b;
    sbuf_init(&b);
    rc = 0;
    int r = run_command(&a, st, &b, &rc);
    if (rc) {
        /* an operand was wrong: said already */
    } else if (r == -ENOENT) {
        struct sbuf shown;
        sbuf_init(&shown);
        sbuf_human_str(&shown, a.a1, (size_t)-1);
        fprintf(stderr, "cbus-history %s: no conversation '%s' in %s\n", a.cmd,
                shown.data ? shown.data : "", cfg.db);
        sbuf_free(&shown);
        rc = 1;
    } else if (r) {
        fprintf(stderr, "cbus-history %s: %s: %s\n", a.cmd, cfg.db, hist_store_errmsg(st));
        rc = 1;
    } else if (b.len) {
        fwrite(b.data, 1, b.len, stdout);
    }
    sbuf_free(&b);
    hist_store_close(st);
    return rc;
}
