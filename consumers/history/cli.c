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

int hist_cli_main(int argc, char **argv)
{
    const char *cmd = argv[0];
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
    const char *db = NULL, *config = NULL, *bus = NULL, *user = NULL, *since = NULL;
    const char *older = NULL;
    int json = 0, opt;
    unsigned long limit = 0;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "d:c:b:ju:s:n:o:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'd': db = optarg; break;
        case 'c': config = optarg; break;
        case 'b': bus = optarg; break;
        case 'j': json = 1; break;
        case 'u': user = optarg; break;
        case 's': since = optarg; break;
        case 'n': {
            char *e;
            limit = strtoul(optarg, &e, 10);
            if (e == optarg || *e || limit == 0 || limit > 1000000) {
                fprintf(stderr, "cbus-history %s: --limit %s: want 1..1000000\n", cmd, optarg);
                return 2;
            }
            break;
        }
        case 'o': older = optarg; break;
        case 'h': cli_usage(cmd); return 0;
        default: return cli_usage(cmd);
        }
    }
    const char *a1 = optind < argc ? argv[optind] : NULL;
    const char *a2 = optind + 1 < argc ? argv[optind + 1] : NULL;
    int nargs = argc - optind;
    int want = !strcmp(cmd, "list") || !strcmp(cmd, "expire") ? 0 : !strcmp(cmd, "rename") ? 2 : 1;
    if (nargs != want) {
        fprintf(stderr, "cbus-history %s: %s\n", cmd,
                nargs < want ? "missing argument" : "too many arguments");
        return cli_usage(cmd);
    }
    if (!strcmp(cmd, "export") && !json) {
        fprintf(stderr, "cbus-history export: the format is JSON: give --json\n");
        return 2;
    }
    char err[1024];
    struct hist_config cfg;
    if (hist_config_load(&cfg, config, err, sizeof err)) {
        fprintf(stderr, "cbus-history: %s\n", err);
        return 2;
    }
    if (bus)
        snprintf(cfg.bus, sizeof cfg.bus, "%s", bus);
    if (db)
        snprintf(cfg.db, sizeof cfg.db, "%s", db);
    else if (strstr(cfg.db, "%b") && !cfg.bus[0]) {
        fprintf(stderr, "cbus-history %s: which store? give --db PATH, or --bus NAME\n", cmd);
        return 2;
    }
    hist_config_finish(&cfg);
    /* Never create a store by reading it. */
    if (access(cfg.db, F_OK)) {
        fprintf(stderr, "cbus-history %s: no store at %s (%s); has the daemon run?\n", cmd, cfg.db,
                strerror(errno));
        return 1;
    }
    struct hist_store *st;
    if (hist_store_open(&st, cfg.db, 0, err, sizeof err)) {
        fprintf(stderr, "cbus-history %s: store %s\n", cmd, err);
        return 1;
    }
    struct sbuf b;
    sbuf_init(&b);
    int r = 0, rc = 0;
    if (!strcmp(cmd, "list")) {
        struct hist_list_q q = {.user = user, .limit = (unsigned)limit};
        if (since) {
            unsigned long long ns;
            if (hist_parse_since(since, real_ns(), &ns)) {
                fprintf(stderr, "cbus-history list: --since %s: want 7d, 2026-12-01, "
                                "2026-12-01T10:00:00Z or epoch seconds\n", since);
                rc = 2;
                goto out;
            }
            q.since_ns = ns;
        }
        r = hist_render_list(st, &q, json, &b);
    } else if (!strcmp(cmd, "show") || !strcmp(cmd, "export")) {
        r = hist_render_conv(st, a1, json, 1, &b);
    } else if (!strcmp(cmd, "search")) {
        r = hist_render_search(st, a1, (unsigned)limit, json, &b);
    } else if (!strcmp(cmd, "rename")) {
        if (!*a2 || strlen(a2) > HIST_TITLE_MAX) {
            fprintf(stderr, "cbus-history rename: the title must be 1..%d bytes\n", HIST_TITLE_MAX);
            rc = 2;
            goto out;
        }
        r = hist_store_rename(st, a1, a2, real_ns());
        if (!r)
            sbuf_printf(&b, "renamed\n");
    } else if (!strcmp(cmd, "forget")) {
        uint64_t c = 0, m = 0;
        r = hist_store_forget(st, a1, &c, &m);
        if (!r)
            sbuf_printf(&b, "forgot user: %llu conversations, %llu messages deleted\n",
                        (unsigned long long)c, (unsigned long long)m);
    } else { /* expire */
        uint64_t age;
        if (!older || cbus_parse_duration_ns(older, &age)) {
            fprintf(stderr, "cbus-history expire: give --older-than DURATION (30d, 12h)\n");
            rc = 2;
            goto out;
        }
        unsigned long long now = real_ns();
        uint64_t c = 0, m = 0;
        r = hist_store_expire(st, now > age ? now - age : 0, &c, &m);
        if (!r)
            sbuf_printf(&b, "expired: %llu conversations, %llu messages deleted\n",
                        (unsigned long long)c, (unsigned long long)m);
    }
    if (r == -ENOENT) {
        struct sbuf shown;
        sbuf_init(&shown);
        sbuf_human_str(&shown, a1, (size_t)-1);
        fprintf(stderr, "cbus-history %s: no conversation '%s' in %s\n", cmd,
                shown.data ? shown.data : "", cfg.db);
        sbuf_free(&shown);
        rc = 1;
    } else if (r) {
        fprintf(stderr, "cbus-history %s: %s: %s\n", cmd, cfg.db, hist_store_errmsg(st));
        rc = 1;
    } else if (b.len) {
        fwrite(b.data, 1, b.len, stdout);
    }
out:
    sbuf_free(&b);
    hist_store_close(st);
    return rc;
}
