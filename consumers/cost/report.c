/* cbus-cost report: prints the live daemon's tables from its JSON snapshot.
 * When the daemon is alive it is asked (SIGUSR1) for a fresh snapshot first. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cost_config.h"
#include "daemon.h"
#include "cost_daemon.h"
#include "sbuf.h"
#include "json_get.h"

static char *read_file(const char *path)
{
    char *b;
    return cbus_read_file(path, 0, &b, NULL) ? NULL : b;
}

/* The snapshot's pid may have been reused since the daemon died: SIGUSR1
 * kills most programs, so only signal a process that is cbus-cost. */
static int is_cbus_cost(long pid)
{
    char path[64], comm[64] = "";
    snprintf(path, sizeof path, "/proc/%ld/comm", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    if (!fgets(comm, sizeof comm, f))
        comm[0] = '\0';
    fclose(f);
    comm[strcspn(comm, "\n")] = '\0';
    return strcmp(comm, "cbus-cost") == 0;
}

/* Every string in the snapshot came from a producer (or from whoever can
 * write the state dir): shown through cbus_human_str(), never raw.  Four
 * rotating buffers so one printf can show several. */
static const char *esc(const char *s)
{
    static char bufs[4][CBUS_HUMAN_MAX(512)];
    static unsigned next;
    char *b = bufs[next++ % 4];
    cbus_human_str(b, sizeof bufs[0], s, 512);
    return b;
}

/* s escaped, cut to width bytes at a character boundary and padded to it
 * ("%-40.40s" on the raw string would cut an escape or a UTF-8 sequence). */
static void cell(const char *s, size_t width)
{
    char b[CBUS_HUMAN_MAX(512)];
    cbus_human_str(b, width + 1 < sizeof b ? width + 1 : sizeof b, s, 512);
    size_t n = strlen(b);
    fputs(b, stdout);
    for (; n < width; n++)
        putchar(' ');
}

/* A key in a column of width: a key its producer cut ends in "…#" and
 * eight hex digits (cost_key_show), which stay whole, with as much of the
 * prefix as fits before them, so two rows of one prefix never look alike. */
static void key_cell(const char *s, size_t width)
{
    static const char mark[] = "\xe2\x80\xa6#"; /* U+2026 then '#' */
    size_t n = strlen(s);
    if (n <= width || n < 12 || memcmp(s + n - 12, mark, 4)) {
        cell(s, width);
        return;
    }
    char pre[512];
    size_t keep = width - 10; /* the ellipsis is one column, '#' and 8 digits nine */
    snprintf(pre, sizeof pre, "%.*s", (int)(n - 12 < keep ? n - 12 : keep), s);
    char b[CBUS_HUMAN_MAX(512)];
    cbus_human_str(b, keep + 1, pre, sizeof pre);
    fputs(b, stdout);
    fputs(s + n - 12, stdout);
    for (size_t w = strlen(b) + 10; w < width; w++)
        putchar(' ');
}

/* A token count, or "-" when absent (null). */
static void tok(char *out, size_t n, const cJSON *agg, const char *type)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(agg, "tokens");
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(t, type);
    if (cJSON_IsNumber(v))
        snprintf(out, n, "%.0f", v->valuedouble);
    else
        snprintf(out, n, "-");
}

/* USD from the exact string, cut to 6 decimals for the table. */
static void usd6(char *out, size_t n, const char *exact)
{
    const char *dot = strchr(exact, '.');
    if (!dot) {
        snprintf(out, n, "%s", exact[0] ? exact : "-");
        return;
    }
    snprintf(out, n, "%.*s", (int)(dot - exact) + 7, exact);
}

static void lat(char *out, size_t n, const cJSON *agg, const char *h, const char *q)
{
    const cJSON *o = cJSON_GetObjectItemCaseSensitive(agg, h);
    if (!cJSON_IsObject(o)) {
        snprintf(out, n, "-");
        return;
    }
    snprintf(out, n, "%.1f", cbus_json_num(o, q));
}

static void print_counts(const cJSON *a)
{
    char in[24], out[24], cr[24], cc[24], rs[24], cost[48];
    tok(in, sizeof in, a, "input");
    tok(out, sizeof out, a, "output");
    tok(cr, sizeof cr, a, "cache_read");
    tok(cc, sizeof cc, a, "cache_creation");
    tok(rs, sizeof rs, a, "reasoning");
    usd6(cost, sizeof cost, cbus_json_str(a, "cost_usd", ""));
    printf(" %8.0f %5.0f %11s %10s %10s %10s %9s %14s", cbus_json_num(a, "requests"),
           cbus_json_num(a, "errors"), in, out, cr, cc, rs, esc(cost));
}

static void print_budget(const cJSON *a)
{
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(a, "budget");
    if (!cJSON_IsObject(b)) {
        printf("  -");
        return;
    }
    char spent[48], limit[48];
    usd6(spent, sizeof spent, cbus_json_str(b, "spent_usd", ""));
    usd6(limit, sizeof limit, cbus_json_str(b, "limit_usd", ""));
    printf("  %s/%s per %s%s", esc(spent), esc(limit), esc(cbus_json_str(b, "period", "")),
           cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(b, "exceeded")) ? "  EXCEEDED" : "");
}

static void header(const char *first)
{
    printf("%-40s %8s %5s %11s %10s %10s %10s %9s %14s", first, "REQS", "ERRS", "INPUT", "OUTPUT",
           "CACHE_RD", "CACHE_WR", "REASON", "COST_USD");
}

/* Scores: one line per row (by name, by name and model, by name and agent). */
static void print_scores(const cJSON *root)
{
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(root, "scores"), *r;
    if (!cJSON_GetArraySize(list))
        return;
    printf("\n%-32s %-40s %7s  %s\n", "SCORE", "BY", "COUNT", "MEAN / SUCCESS RATE / CATEGORIES");
    cJSON_ArrayForEach(r, list) {
        char who[160];
        const char *by = cbus_json_str(r, "by", "");
        if (!strcmp(by, "model"))
            snprintf(who, sizeof who, "%s/%s", cbus_json_str(r, "provider", ""),
                     cbus_json_str(r, "model", ""));
        else if (!strcmp(by, "agent"))
            snprintf(who, sizeof who, "agent %s", cbus_json_str(r, "agent", ""));
        else
            snprintf(who, sizeof who, "(all)");
        key_cell(cbus_json_str(r, "name", ""), 32);
        printf(" ");
        key_cell(who, 40);
        printf(" %7.0f ", cbus_json_num(r, "count"));
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(r, "numeric");
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(r, "boolean");
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(r, "categorical");
        if (cJSON_IsObject(n))
            printf(" mean %s (n=%.0f)", esc(cbus_json_str(n, "mean", "")), cbus_json_num(n, "count"));
        if (cJSON_IsObject(b))
            printf(" success %.4f (%.0f of %.0f)", cbus_json_num(b, "success_rate"), cbus_json_num(b, "true"),
                   cbus_json_num(b, "count"));
        if (cJSON_IsObject(c)) {
            const cJSON *cat;
            cJSON_ArrayForEach(cat, cJSON_GetObjectItemCaseSensitive(c, "categories")) {
                char h[CBUS_HUMAN_MAX(64)];
                cbus_human_str(h, sizeof h, cat->string, 64);
                printf(" %s=%.0f", h, cat->valuedouble);
            }
        }
        printf("\n");
    }
}

/* The latency percentiles and rates that close a model's (or the total's) row. */
static void print_latencies(const cJSON *m)
{
    char p50[16], p95[16], p99[16], t50[16];
    lat(p50, sizeof p50, m, "duration_ms", "p50");
    lat(p95, sizeof p95, m, "duration_ms", "p95");
    lat(p99, sizeof p99, m, "duration_ms", "p99");
    lat(t50, sizeof t50, m, "ttft_ms", "p50");
    printf(" %8s %8s %8s %8s %6.0f %8.0f\n", p50, p95, p99, t50, cbus_json_num(m, "rpm"),
           cbus_json_num(m, "tpm"));
}

static void print_models(const cJSON *root)
{
    header("PROVIDER/MODEL");
    printf(" %8s %8s %8s %8s %6s %8s\n", "P50_MS", "P95_MS", "P99_MS", "TTFT50", "RPM", "TPM");
    const cJSON *m;
    cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(root, "models")) {
        char name[96];
        const char *prov = cbus_json_str(m, "provider", "");
        snprintf(name, sizeof name, "%s%s%s%s", prov, *prov ? "/" : "", cbus_json_str(m, "model", ""),
                 cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(m, "price_key")) ? " (unpriced)" : "");
        cell(name, 40);
        print_counts(m);
        print_latencies(m);
    }
    const cJSON *total = cJSON_GetObjectItemCaseSensitive(root, "total");
    printf("%-40s", "TOTAL");
    print_counts(total);
    print_latencies(total);
    if (cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(total, "budget"))) {
        printf("global budget:");
        print_budget(total);
        printf("\n");
    }
}

/* One table of budget holders (users, agents, tenants, sessions): at most
 * max rows (-1: all), key field `field`, "(none)" for an empty key when
 * none_label is set. */
static void print_holders(const cJSON *list, const char *title, const char *field, long max, int none_label)
{
    printf("\n");
    header(title);
    printf("  BUDGET (SPENT/LIMIT)\n");
    long shown = 0;
    const cJSON *u;
    cJSON_ArrayForEach(u, list) {
        if (shown++ == max)
            break;
        const char *name = cbus_json_str(u, field, "");
        key_cell(none_label && !*name ? "(none)" : name, 40);
        print_counts(u);
        print_budget(u);
        printf("\n");
    }
}

static void print_anomalies(const cJSON *root)
{
    const cJSON *an = cJSON_GetObjectItemCaseSensitive(root, "anomalies"), *a;
    int any = 0;
    cJSON_ArrayForEach(a, an) {
        if (cJSON_IsNumber(a) && a->valuedouble > 0) {
            printf("%s%s %.0f", any ? ", " : "\nanomalies: ", esc(a->string), a->valuedouble);
            any = 1;
        }
    }
    if (any)
        printf("\n");
}

static void print_table(const cJSON *root, long max_sessions, int live)
{
    if (!live)
        printf("(cbus-cost pid %.0f is not running: this is its last snapshot)\n",
               cbus_json_num(root, "pid"));
    printf("bus %s  generated %s  events %.0f  cursor %.0f (checkpointed %.0f)  lag %.0f  lost %.0f"
           "  alerts %.0f\n",
           esc(cbus_json_str(root, "bus", "")), esc(cbus_json_str(root, "generated_at", "")),
           cbus_json_num(root, "events"), cbus_json_num(root, "cursor"),
           cbus_json_num(root, "checkpoint_cursor"), cbus_json_num(root, "lag"), cbus_json_num(root, "lost"),
           cbus_json_num(root, "alerts"));
    printf("\n");
    print_models(root);
    print_holders(cJSON_GetObjectItemCaseSensitive(root, "users"), "USER", "user", -1, 1);
    static const char *const groups[][3] = {{"agents", "agent", "AGENT"},
                                            {"tenants", "tenant", "TENANT"}};
    for (unsigned g = 0; g < 2; g++) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(root, groups[g][0]);
        if (cJSON_GetArraySize(list))
            print_holders(list, groups[g][2], groups[g][1], -1, 0);
    }
    print_scores(root);
    const cJSON *ss = cJSON_GetObjectItemCaseSensitive(root, "sessions");
    if (cJSON_GetArraySize(ss) && max_sessions) {
        print_holders(ss, "SESSION (highest cost first)", "session", max_sessions, 0);
        printf("(%.0f sessions tracked)\n", cbus_json_num(root, "sessions_total"));
    }
    print_anomalies(root);
}

/* The state directory --state-dir names, or the config's (for --bus). */
static int report_state_dir(char *dir, size_t cap, const char *state_dir, const char *config, const char *bus)
{
    if (state_dir) {
        snprintf(dir, cap, "%s", state_dir);
        return 0;
    }
    if (!config) {
        fprintf(stderr, "cbus-cost report: give --state-dir DIR or --config PATH\n");
        return 2;
    }
    struct cost_config c;
    char err[1024];
    if (cost_config_load(&c, config, err, sizeof err)) {
        fprintf(stderr, "cbus-cost report: %s\n", err);
        return 2;
    }
    if (bus)
        snprintf(c.bus, sizeof c.bus, "%s", bus);
    cost_config_finish(&c);
    snprintf(dir, cap, "%s", c.state_dir);
    cost_config_free(&c);
    return 0;
}

/* Asks the live daemon pid for a fresh snapshot and waits up to 1.5 s for
 * it; on success *root and *text are replaced by the new one. */
static void refresh_snapshot(long pid, const char *path, cJSON **root, char **text)
{
    double gen = cbus_json_num(*root, "generated_at_ns");
    if (kill((pid_t)pid, SIGUSR1))
        return;
    for (int i = 0; i < 75; i++) {
        struct timespec ts = {0, 20000000L};
        nanosleep(&ts, NULL);
        char *t2 = read_file(path);
        cJSON *r2 = t2 ? cJSON_Parse(t2) : NULL;
        if (r2 && cbus_json_num(r2, "generated_at_ns") != gen) {
            cJSON_Delete(*root);
            free(*text);
            *root = r2;
            *text = t2;
            return;
        }
        cJSON_Delete(r2);
        free(t2);
    }
}

int cost_report_main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"state-dir", required_argument, NULL, 's'}, {"config", required_argument, NULL, 'c'},
        {"bus", required_argument, NULL, 'b'},       {"json", no_argument, NULL, 'j'},
        {"sessions", required_argument, NULL, 'n'},  {"no-refresh", no_argument, NULL, 'r'},
        {NULL, 0, NULL, 0},
    };
    const char *state_dir = NULL, *config = NULL, *bus = NULL;
    int json = 0, refresh = 1, opt;
    long max_sessions = 10;
    char *end;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "s:c:b:jn:r", longopts, NULL)) != -1) {
        switch (opt) {
        case 's': state_dir = optarg; break;
        case 'c': config = optarg; break;
        case 'b': bus = optarg; break;
        case 'j': json = 1; break;
        case 'n':
            max_sessions = strtol(optarg, &end, 10);
            if (end == optarg || *end || max_sessions < 0 || max_sessions > 1000000) {
                fprintf(stderr, "cbus-cost report: --sessions %s: want 0..1000000\n", optarg);
                return 2;
            }
            break;
        case 'r': refresh = 0; break;
        default:
            fprintf(stderr, "usage: cbus-cost report (--state-dir DIR | --config PATH [--bus NAME]) "
                            "[--json] [--sessions N] [--no-refresh]\n");
            return 2;
        }
    }
    char dir[COST_PATH_MAX];
    int rc = report_state_dir(dir, sizeof dir, state_dir, config, bus);
    if (rc)
        return rc;
    char path[COST_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/snapshot.json", dir);
    char *text = read_file(path);
    if (!text) {
        fprintf(stderr, "cbus-cost report: %s: %s (is cbus-cost running with this state dir?)\n",
                path, strerror(errno));
        return 1;
    }
    cJSON *root = cJSON_Parse(text);
    long pid = root ? (long)cbus_json_num(root, "pid") : 0;
    int live = pid > 0 && is_cbus_cost(pid);
    if (root && refresh && live)
        refresh_snapshot(pid, path, &root, &text);
    if (!root) {
        fprintf(stderr, "cbus-cost report: %s: not valid JSON\n", path);
        free(text);
        return 1;
    }
    if (json)
        fputs(text, stdout);
    else
        print_table(root, max_sessions, live);
    cJSON_Delete(root);
    free(text);
    return 0;
}
