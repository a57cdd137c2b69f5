/* The four consumer daemons and the collector, as the soak runs them:
 * configuration files written into the run's temp dir (every path they
 * write under it), the cost daemon's totals against the soak's own sum, and
 * the audit chain verification. */
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "orch.h"

__extension__ typedef unsigned __int128 u128; /* pico-dollar sums, as cbus-cost keeps them */

/* The soak's own price table: one model with round per-token prices, so the
 * expected cost is an exact integer number of pico-dollars. */
#define PRICE_IN_PICO        1000000u  /* 1e-06 USD */
#define PRICE_OUT_PICO       2000000u
#define PRICE_CREAD_PICO     100000u
#define PRICE_CCREATE_PICO   1250000u
#define PRICE_REASON_PICO    3000000u

static int write_text(const char *name, const char *text)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", G.tmp, name);
    FILE *f = fopen(path, "w");
    if (!f)
        return -errno;
    fputs(text, f);
    return fclose(f) ? -errno : 0;
}

int daemons_write_configs(void)
{
    char b[4096];
    int r = write_text("prices.json",
                       "{\"soak-model\": {\"litellm_provider\": \"openai\", \"mode\": \"chat\",\n"
                       "  \"input_cost_per_token\": 1e-06, \"output_cost_per_token\": 2e-06,\n"
                       "  \"cache_read_input_token_cost\": 1e-07,\n"
                       "  \"cache_creation_input_token_cost\": 1.25e-06,\n"
                       "  \"output_cost_per_reasoning_token\": 3e-06}}\n");
    snprintf(b, sizeof b,
             "[bus]\nconsumer = cost\nstart = oldest\n"
             "[prices]\nfile = %s/prices.json\n"
             "[state]\ndir = %s/cost\ncheckpoint_interval = 1s\nsnapshot_interval = 500ms\n"
             "[prometheus]\ntextfile = %s/cost/cbus_cost.prom\n",
             G.tmp, G.tmp, G.tmp);
    r = r ? r : write_text("cost.ini", b);
    snprintf(b, sizeof b,
             "[audit]\nname = audit\ndir = %s/audit\nprefix = audit\nstart = oldest\n"
             "[io]\nsync = interval\nsync_interval = 20ms\n"
             "[rotate]\nmax_bytes = 32M\nmax_age = 0\n",
             G.tmp);
    r = r ? r : write_text("audit.ini", b);
    snprintf(b, sizeof b,
             "[bus]\nconsumer_name = export\nmode = lossy\nstart = resume\n"
             "[export]\nformat = otlp\nendpoint = http://127.0.0.1:%u\nbatch_max_age = 500ms\n"
             "request_timeout = 2s\nconnect_timeout = 1s\nretry_initial = 100ms\nretry_max = 2s\n"
             "shutdown_timeout = 2s\n"
             "[spool]\ndir = %s/export-spool\nlimit = 64M\n"
             "[status]\nfile = %s/export.status.json\ninterval = 1s\n",
             G.port, G.tmp, G.tmp);
    r = r ? r : write_text("export.ini", b);
    r = r ? r : write_text("ratelimit.ini",
                           "[ratelimit]\nname = ratelimit\nstatus_interval = 1s\n"
                           "[rules]\nrule = user=* rpm=600 tpm=2000000\nrule = global rpm=1000000\n");
    return r;
}

int free_loopback_port(unsigned *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    int r = 0;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) || getsockname(fd, (struct sockaddr *)&sa, &sl))
        r = -errno;
    else
        *port = ntohs(sa.sin_port);
    close(fd);
    return r;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    char *s = malloc(cap);
    size_t k;
    while (s && (k = fread(s + n, 1, cap - n - 1, f)) > 0) {
        n += k;
        if (n + 1 == cap) {
            char *t = realloc(s, cap * 2);
            if (!t) {
                free(s);
                s = NULL;
                break;
            }
            s = t;
            cap *= 2;
        }
    }
    fclose(f);
    if (s)
        s[n] = '\0';
    return s;
}

static int json_u64(const cJSON *obj, const char *key, uint64_t *out)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!cJSON_IsNumber(x))
        return -1;
    *out = (uint64_t)x->valuedouble; /* exact below 2^53, which the soak stays under */
    return 0;
}

/* "12.000000345678" -> pico-dollars. */
static int usd_to_pico(const char *s, u128 *out)
{
    u128 v = 0;
    const char *dot = strchr(s, '.');
    if (!dot || strlen(dot + 1) != 12)
        return -1;
    for (const char *p = s; *p; p++) {
        if (p == dot)
            continue;
        if (*p < '0' || *p > '9')
            return -1;
        v = v * 10 + (unsigned)(*p - '0');
    }
    *out = v;
    return 0;
}

static const char *const tok_json[SOAK_TOK__COUNT] = {"input", "output", "cache_read",
                                                      "cache_creation", "reasoning"};

/* Compares the cost daemon's snapshot with the sum of the llm_end usage the
 * producer threads committed.  Waits (up to 30 s) for the snapshot to cover
 * final_tail.  Returns 0 (equal), 1 (differs: msg says how), -1 (no usable
 * snapshot). */
int daemons_cost_check(uint64_t final_bus_id, uint64_t final_tail, char *msg, size_t len, int *excused)
{
    uint64_t want[SOAK_TOK__COUNT] = {0}, ends = 0;
    for (unsigned p = 0; p < SOAK_MAX_PROD; p++) {
        if (!atomic_load(&ST->prod[p].used))
            continue;
        ends += atomic_load(&ST->prod[p].llm_ends);
        for (int f = 0; f < SOAK_TOK__COUNT; f++)
            want[f] += atomic_load(&ST->prod[p].tok[f]);
    }
    u128 want_cost =
        (u128)(want[SOAK_TOK_INPUT] - want[SOAK_TOK_CACHE_READ] -
                            want[SOAK_TOK_CACHE_CREATION]) * PRICE_IN_PICO +
        (u128)want[SOAK_TOK_CACHE_READ] * PRICE_CREAD_PICO +
        (u128)want[SOAK_TOK_CACHE_CREATION] * PRICE_CCREATE_PICO +
        (u128)(want[SOAK_TOK_OUTPUT] - want[SOAK_TOK_REASONING]) * PRICE_OUT_PICO +
        (u128)want[SOAK_TOK_REASONING] * PRICE_REASON_PICO;

    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/cost/snapshot.json", G.tmp);
    cJSON *root = NULL;
    uint64_t end = soak_now_ns() + 30000000000u, cursor = 0;
    /* Only a snapshot of the final bus counts: one left on disk from an
     * earlier incarnation (the daemon killed or stopped before its first
     * snapshot on the re-created bus) can have a larger cursor than the
     * final tail and totals short of the end. */
    char want_id[24], got_id[24] = "none";
    snprintf(want_id, sizeof want_id, "%016" PRIx64, final_bus_id);
    for (;;) {
        char *text = slurp(path);
        cJSON_Delete(root);
        root = text ? cJSON_Parse(text) : NULL;
        free(text);
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(root, "bus_id");
        if (cJSON_IsString(id))
            snprintf(got_id, sizeof got_id, "%s", id->valuestring);
        if (root && cJSON_IsString(id) && !strcmp(id->valuestring, want_id) &&
            !json_u64(root, "cursor", &cursor) && cursor >= final_tail)
            break;
        if (soak_now_ns() > end) {
            snprintf(msg, len, "snapshot %s does not reach position %" PRIu64 " of bus %s (at %" PRIu64
                     " of bus %s)", path, final_tail, want_id, cursor, got_id);
            cJSON_Delete(root);
            return -1;
        }
        soak_sleep_ns(100000000);
    }
    uint64_t lost = 0;
    json_u64(root, "lost", &lost);
    *excused = lost > 0;
    const cJSON *total = cJSON_GetObjectItemCaseSensitive(root, "total");
    const cJSON *toks = cJSON_GetObjectItemCaseSensitive(total, "tokens");
    const cJSON *usd = cJSON_GetObjectItemCaseSensitive(total, "cost_usd");
    uint64_t req = 0, got[SOAK_TOK__COUNT] = {0};
    u128 got_cost = 0;
    int bad = json_u64(total, "requests", &req) || !cJSON_IsString(usd) ||
              usd_to_pico(usd->valuestring, &got_cost);
    for (int f = 0; f < SOAK_TOK__COUNT && !bad; f++)
        bad = json_u64(toks, tok_json[f], &got[f]);
    if (bad) {
        snprintf(msg, len, "snapshot %s: total.requests/tokens/cost_usd missing", path);
        cJSON_Delete(root);
        return -1;
    }
    int diff = req != ends || got_cost != want_cost;
    for (int f = 0; f < SOAK_TOK__COUNT; f++)
        diff |= got[f] != want[f];
    int n = snprintf(msg, len,
                     "requests %" PRIu64 "/%" PRIu64 ", input %" PRIu64 "/%" PRIu64
                     ", output %" PRIu64 "/%" PRIu64 ", cache_read %" PRIu64 "/%" PRIu64
                     ", cache_creation %" PRIu64 "/%" PRIu64 ", reasoning %" PRIu64 "/%" PRIu64
                     ", cost_usd %s/%" PRIu64 ".%012" PRIu64 " (daemon/soak)",
                     req, ends, got[0], want[0], got[1], want[1], got[2], want[2], got[3], want[3],
                     got[4], want[4], usd->valuestring,
                     (uint64_t)(want_cost / 1000000000000u), (uint64_t)(want_cost % 1000000000000u));
    (void)n;
    cJSON_Delete(root);
    return diff;
}

/* Runs `cbus-audit verify DIR`.  Returns its exit status (0 = chain verifies)
 * or -1; msg gets its last output line. */
int daemons_audit_verify(char *msg, size_t len)
{
    char cmd[PATH_MAX * 2 + 64];
    snprintf(cmd, sizeof cmd, "'%s' verify '%s/audit' 2>&1", G.bin[K_AUDIT], G.tmp);
    FILE *p = popen(cmd, "r");
    if (!p) {
        snprintf(msg, len, "popen: %s", strerror(errno));
        return -1;
    }
    char line[512];
    msg[0] = '\0';
    while (fgets(line, sizeof line, p)) {
        line[strcspn(line, "\n")] = '\0';
        if (line[0])
            snprintf(msg, len, "%s", line);
    }
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}
