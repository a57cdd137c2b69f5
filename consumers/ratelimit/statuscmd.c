#include "statuscmd.h"

#include <cbus/admit.h>
#include <cbus/bus.h>

#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"
#include "ratelimit_config.h"
#include "sbuf.h"
#include "json_get.h"

/* Every string shown here comes from a producer (keys are user, session
 * and model names) or from shared memory: printed through this, so a
 * hostile producer cannot drive the operator's terminal (issue 12 item 3).
 * A few rotating buffers let one printf take several strings. */
static const char *safe(const char *s, size_t n)
{
    static char bufs[6][CBUS_HUMAN_MAX(256)];
    static unsigned next;
    char *o = bufs[next++ % 6];
    cbus_human_str(o, sizeof bufs[0], s, n);
    return o;
}
#define SAFE(s) safe((s), (size_t)-1)

/* The private state dir (daemon.h): /var/lib/cbus/ratelimit under the
 * systemd unit (root), ~/.local/state/cbus/ratelimit for a user; never
 * /tmp.  The daemon and the status command compute the same path. */
int rl_default_status_path(char *out, size_t outlen, const char *bus_name)
{
    char dir[1024];
    int r = cbus_state_dir_default(dir, sizeof dir, "ratelimit");
    if (r)
        return r;
    int n = snprintf(out, outlen, "%s/status-%s.json", dir, bus_name);
    return n < 0 || (size_t)n >= outlen ? -ENAMETOOLONG : 0;
}

static char *slurp(const char *path)
{
    char *b;
    int r = cbus_read_file(path, 0, &b, NULL);
    if (r)
        errno = -r; /* the callers say strerror(errno) */
    return r ? NULL : b;
}

static void fmt_pair(char *out, size_t n, const cJSON *k, const char *used, const char *burst,
                     const char *limit)
{
    if (!cJSON_GetObjectItemCaseSensitive(k, limit)) {
        snprintf(out, n, "-");
        return;
    }
    snprintf(out, n, "%.0f/%.0f (%.0f/min)", cbus_json_num(k, used), cbus_json_num(k, burst),
             cbus_json_num(k, limit));
}

static int print_status(const char *path, unsigned top)
{
    char *text = slurp(path);
    if (!text) {
        fprintf(stderr, "cbus-ratelimit status: %s: %s (is the daemon running?)\n", path,
                strerror(errno));
        return 1;
    }
    cJSON *root = cJSON_Parse(text);
    free(text);
    if (!root) {
        fprintf(stderr, "cbus-ratelimit status: %s: not valid JSON\n", path);
        return 1;
    }
    const cJSON *lim = cJSON_GetObjectItemCaseSensitive(root, "limiter");
    const cJSON *cons = cJSON_GetObjectItemCaseSensitive(root, "consumer");
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double age =
        ((double)ts.tv_sec * 1e9 + (double)ts.tv_nsec - cbus_json_num(root, "updated_realtime_ns")) / 1e9;
    printf("cbus-ratelimit '%s' on bus %s, pid %.0f, status %.1f s old\n",
           SAFE(cbus_json_str(cons, "name", "")), SAFE(cbus_json_str(root, "bus", "")),
           cbus_json_num(root, "pid"), age);
    printf("events %.0f  requests %.0f  tokens in/out %.0f/%.0f  lost %.0f  lag %.0f\n",
           cbus_json_num(lim, "events"), cbus_json_num(lim, "requests"), cbus_json_num(lim, "input_tokens"),
           cbus_json_num(lim, "output_tokens"), cbus_json_num(cons, "lost"), cbus_json_num(cons, "lag"));
    printf("throttles %.0f  over_limit %.0f  published %.0f  cleared %.0f  publish_failed %.0f  "
           "in table %.0f\n",
           cbus_json_num(lim, "throttles"), cbus_json_num(lim, "over_limit"), cbus_json_num(lim, "published"),
           cbus_json_num(lim, "cleared"), cbus_json_num(lim, "publish_failed"),
           cbus_json_num(lim, "published_now"));
    printf("keys %.0f (peak %.0f, expired %.0f, untracked events %.0f)  pending estimates %.0f\n\n",
           cbus_json_num(lim, "keys"), cbus_json_num(lim, "keys_peak"), cbus_json_num(lim, "keys_expired"),
           cbus_json_num(lim, "untracked"), cbus_json_num(lim, "pending"));
    const cJSON *cl = cJSON_GetObjectItemCaseSensitive(root, "cluster");
    if (cl) /* fleet mode (docs/fleet.md) */
        printf("fleet: %s, node %s, redis %s%s, syncs %.0f, failures %.0f, cut off %.1f s in %.0f "
               "cut-offs, rtt %.0f us%s%s\n\n",
               SAFE(cbus_json_str(cl, "state", "")), SAFE(cbus_json_str(cl, "node", "")),
               SAFE(cbus_json_str(cl, "address", "")), SAFE(cbus_json_str(cl, "prefix", "")),
               cbus_json_num(cl, "syncs"), cbus_json_num(cl, "failures"),
               cbus_json_num(cl, "cut_off_ms") / 1000, cbus_json_num(cl, "cutoffs"),
               cbus_json_num(cl, "rtt_last_us"), *cbus_json_str(cl, "last_error", "") ? ", last error: " : "",
               SAFE(cbus_json_str(cl, "last_error", "")));
    printf("%-5s %-9s %-9s %s\n", "LINE", "THROTTLES", "OVER", "RULE");
    const cJSON *r;
    cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(lim, "rules"))
    {
        printf("%-5.0f %-9.0f %-9.0f %s%s\n", cbus_json_num(r, "line"), cbus_json_num(r, "throttles"),
               cbus_json_num(r, "over_limit"), SAFE(cbus_json_str(r, "rule", "")),
               cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "published"))
                   ? ""
                   : "   (counted, not published)");
    }
    printf("\n%-36s %-5s %-9s %-9s %-24s %-28s %s\n", "KEY", "LINE", "STATE", "RETRY",
           "REQUESTS USED/BURST", "TOKENS USED/BURST", "OVER");
    unsigned shown = 0;
    const cJSON *k;
    cJSON_ArrayForEach(k, cJSON_GetObjectItemCaseSensitive(lim, "hot"))
    {
        if (shown++ >= top)
            break;
        char req[64], tok[64], retry[32] = "-";
        fmt_pair(req, sizeof req, k, "requests_used", "burst", "rpm");
        fmt_pair(tok, sizeof tok, k, "tokens_used", "token_burst", "tpm");
        if (cbus_json_num(k, "retry_after_ms") > 0)
            snprintf(retry, sizeof retry, "%.3fs", cbus_json_num(k, "retry_after_ms") / 1000);
        printf("%-36s %-5.0f %-9s %-9s %-24s %-28s %.0f\n", SAFE(cbus_json_str(k, "key", "")),
               cbus_json_num(k, "rule_line"), SAFE(cbus_json_str(k, "state", "")), retry, req, tok,
               cbus_json_num(k, "over_limit"));
    }
    if (!shown)
        printf("(no key has used any of its allowance)\n");
    cJSON_Delete(root);
    return 0;
}

/* One consistent copy of an admission entry (its seqlock), or 0 if empty. */
static int read_entry(const struct cbus_admit_entry *e, uint32_t *word, uint64_t *until,
                      char key[CBUS_ADMIT_KEY_LEN + 1])
{
    for (int tries = 0; tries < 100; tries++) {
        /* ACQUIRE: pairs with the writer's RELEASE store of the even seq. */
        uint32_t s1 = atomic_load_explicit(&e->seq, memory_order_acquire);
        if (s1 & 1)
            continue;
        uint64_t hash = atomic_load_explicit(&e->key_hash, memory_order_relaxed);
        *word = atomic_load_explicit(&e->word, memory_order_relaxed);
        *until = atomic_load_explicit(&e->until_ns, memory_order_relaxed);
        memcpy(key, e->key, CBUS_ADMIT_KEY_LEN);
        key[CBUS_ADMIT_KEY_LEN] = '\0';
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&e->seq, memory_order_relaxed) == s1)
            return hash != 0;
    }
    return 0;
}

static int print_table(const char *bus_name)
{
    cbus_bus *bus;
    int r = cbus_bus_open(&bus, bus_name, CBUS_OPEN_READONLY);
    if (r) {
        fprintf(stderr, "cbus-ratelimit status: bus %s: %s\n", bus_name, cbus_strerror(r));
        return 1;
    }
    static const char *const scopes[] = {"global", "user",     "session", "model",
                                         "provider", "agent", "tenant"};
    static const char *const verdicts[] = {"allow", "throttled", "budget_exceeded"};
    const struct cbus_shm_header *h = cbus_bus_header(bus);
    uint64_t now = cbus_now_ns();
    printf("\nadmission table of bus %s (%u entries, stale after %.1f s):\n", bus_name,
           h->admission_entries, (double)h->admit_stale_ns / 1e9);
    for (unsigned w = 0; w < h->admit_max_writers; w++) {
        const struct cbus_admit_writer *aw = cbus_admit_writer_at(bus, w);
        if (!aw || !atomic_load_explicit(&aw->in_use, memory_order_acquire))
            continue;
        uint64_t hb = atomic_load_explicit(&aw->heartbeat_ns, memory_order_relaxed);
        printf("  writer %u %s pid %u heartbeat %.2f s ago%s\n", w, safe(aw->name, sizeof aw->name),
               atomic_load_explicit(&aw->pid, memory_order_relaxed), now > hb ? (double)(now - hb) / 1e9 : 0.0,
               now > hb && now - hb > h->admit_stale_ns ? " STALE" : "");
    }
    printf("  %-9s %-40s %-16s %-9s %s\n", "SCOPE", "KEY", "VERDICT", "RETRY", "WRITER");
    unsigned shown = 0;
    for (unsigned i = 0; i < h->admission_entries; i++) {
        const struct cbus_admit_entry *e = cbus_admit_entry_at(bus, i);
        uint32_t word;
        uint64_t until;
        char key[CBUS_ADMIT_KEY_LEN + 1];
        if (!e || !read_entry(e, &word, &until, key))
            continue;
        unsigned verdict = word & 0xff, scope = (word >> 8) & 0xff, writer = word >> 16;
        if (verdict == CBUS_ALLOW || (until && until <= now))
            continue;
        const struct cbus_admit_writer *aw = cbus_admit_writer_at(bus, writer);
        char retry[32] = "-";
        if (until)
            snprintf(retry, sizeof retry, "%.3fs", (double)(until - now) / 1e9);
        printf("  %-9s %-40s %-16s %-9s %s\n", scope < CBUS_SCOPE__COUNT ? scopes[scope] : "?",
               safe(key, sizeof key), verdict < 3 ? verdicts[verdict] : "?", retry,
               aw ? safe(aw->name, sizeof aw->name) : "?");
        shown++;
    }
    if (!shown)
        printf("  (no verdict in force)\n");
    cbus_bus_close(bus);
    return 0;
}

int rl_status_main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"bus", required_argument, NULL, 'b'},
        {"config", required_argument, NULL, 'c'},
        {"status-file", required_argument, NULL, 's'},
        {"top", required_argument, NULL, 't'},
        {"json", no_argument, NULL, 'j'},
        {NULL, 0, NULL, 0},
    };
    const char *bus = NULL, *config = NULL, *file = NULL;
    unsigned top = 20;
    int json = 0, opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "b:c:s:t:j", longopts, NULL)) != -1) {
        switch (opt) {
        case 'b': bus = optarg; break;
        case 'c': config = optarg; break;
        case 's': file = optarg; break;
        case 't': top = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'j': json = 1; break;
        default:
            fprintf(stderr, "usage: cbus-ratelimit status [--bus NAME] [--config PATH] "
                            "[--status-file PATH] [--top N] [--json]\n");
            return 2;
        }
    }
    char path[1024] = "";
    if (file) {
        snprintf(path, sizeof path, "%s", file);
    } else if (config) {
        struct rl_config c;
        char err[1024];
        if (rl_config_load(&c, config, err, sizeof err)) {
            fprintf(stderr, "cbus-ratelimit status: %s\n", err);
            return 2;
        }
        snprintf(path, sizeof path, "%s", c.status_file);
        static char cbus[CBUS_NAME_MAX];
        if (!bus && c.bus[0])
            bus = strcpy(cbus, c.bus); /* [bus] name */
        rl_config_free(&c);
    }
    if (!path[0] && bus && rl_default_status_path(path, sizeof path, bus)) {
        fprintf(stderr, "cbus-ratelimit status: no state directory (set XDG_STATE_HOME or HOME, "
                        "or give --status-file PATH)\n");
        return 2;
    }
    if (!path[0]) {
        fprintf(stderr, "cbus-ratelimit status: give --bus NAME, --config PATH or --status-file PATH\n");
        return 2;
    }
    if (json) {
        char *text = slurp(path);
        if (!text) {
            fprintf(stderr, "cbus-ratelimit status: %s: %s\n", path, strerror(errno));
            return 1;
        }
        fputs(text, stdout);
        free(text);
        return 0;
    }
    int rc = print_status(path, top);
    if (bus && print_table(bus))
        rc = 1;
    return rc;
}
