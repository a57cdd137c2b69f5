/* Target: the rate limiter's rule parser (consumers/ratelimit/rules.c) and
 * its config file (ratelimit_config.c), then the limiter fed arbitrary events.
 *
 * Input: config text up to the first NUL byte (a "[rules]" section is
 * prepended when the text has no section header, so most inputs reach the
 * rule parser), then events of 496 bytes each (at most 16).  When the
 * config parses: the limiter counts the events, checks and drains verdicts,
 * expires keys, and its status must be valid JSON.  Each line of the text is
 * also fed to rl_rules_add() on its own, and rl_glob() matches the line's
 * halves against each other. */
#include "fuzz.h"

#include "limiter.h"
#include "ratelimit_config.h"
#include "rules.h"
#include "sbuf.h"

#include <cjson/cJSON.h>
#include <stdlib.h>

static int publish(void *ctx, unsigned scope, uint64_t key_hash, const char *key,
                   unsigned verdict, uint64_t until)
{
    (void)ctx;
    (void)until;
    FZ_CHECK(scope < CBUS_SCOPE__COUNT && verdict <= CBUS_BUDGET_EXCEEDED && key && key_hash,
             "publish scope %u verdict %u", scope, verdict);
    return 0;
}

static void each_line(const char *text)
{
    struct rl_rules rs;
    rl_rules_init(&rs);
    char err[256];
    char line[512];
    unsigned no = 0;
    for (const char *p = text; *p && no < 64;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        if (len < sizeof line) {
            memcpy(line, p, len);
            line[len] = '\0';
            if (rl_rules_add(&rs, line, ++no, err, sizeof err))
                FZ_CHECK(memchr(err, '\0', sizeof err) && err[0], "rule refused without a message");
            rl_glob(line, line + len / 2, len - len / 2);
        }
        p = nl ? nl + 1 : p + len;
    }
    unsigned bad = 0;
    if (rl_rules_finish(&rs, &bad, err, sizeof err) == 0) {
        struct rl_dims d = {{"alice", "s1", "gpt-4o", "openai"}, {5, 2, 6, 6}};
        for (unsigned g = 0; g < RL_GROUPS; g++) {
            int i = rl_rules_match(&rs, g, &d);
            FZ_CHECK(i >= -1 && i < (int)rs.count, "match %d of %zu", i, rs.count);
        }
    }
    rl_rules_free(&rs);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    size_t tlen = nul ? (size_t)(nul - data) : size;
    const char prefix[] = "[rules]\n";
    int has_section = memchr(data, '[', tlen) != NULL;
    size_t plen = has_section ? 0 : sizeof prefix - 1;
    char *text = malloc(plen + tlen + 1);
    if (!text)
        return 0;
    memcpy(text, prefix, plen);
    memcpy(text + plen, data, tlen);
    text[plen + tlen] = '\0';
    const uint8_t *evs = nul ? nul + 1 : data + size;
    size_t nev = (size_t)(data + size - evs) / sizeof(struct cbus_event);
    if (nev > 16)
        nev = 16;

    each_line(text);

    struct rl_config c;
    char err[1024];
    if (rl_config_parse(&c, "fuzz.ini", text, err, sizeof err)) {
        FZ_CHECK(!strncmp(err, "fuzz.ini", 8), "message does not name the file: %.60s", err);
        free(text);
        return 0;
    }
    /* The operator's memory bounds are honoured as written; the harness
     * keeps them small so libFuzzer's RSS limit means a leak, not a big table. */
    if (!c.opts.max_keys || c.opts.max_keys > 4096)
        c.opts.max_keys = 4096;
    if (!c.opts.max_pending || c.opts.max_pending > 4096)
        c.opts.max_pending = 4096;
    if (!c.opts.max_published || c.opts.max_published > 4096)
        c.opts.max_published = 4096;
    rl_limiter *l;
    if (rl_new(&l, &c.rules, &c.opts)) {
        rl_config_free(&c);
        free(text);
        return 0;
    }
    rl_config_free(&c);
    struct cbus_event ev[16];
    memcpy(ev, evs, nev * sizeof ev[0]);
    uint64_t now = 0;
    for (size_t i = 0; i < nev; i++) {
        rl_feed(l, &ev[i]);
        now = ev[i].ts_mono_ns;
        uint64_t retry = 0;
        int v = rl_check(l, &ev[i], now, &retry);
        FZ_CHECK(v == CBUS_ALLOW || v == CBUS_THROTTLED, "check returned %d", v);
        rl_drain(l, now, publish, NULL);
    }
    if (nev > 1)
        rl_feed_batch(l, ev, nev);
    rl_expire(l, now);
    struct sbuf b;
    sbuf_init(&b);
    rl_status_json(l, &b, now, 5);
    if (!b.failed) {
        cJSON *j = cJSON_ParseWithLength(b.data, b.len);
        FZ_CHECK(j != NULL, "status is not JSON: %.200s", b.data);
        cJSON_Delete(j);
    }
    sbuf_free(&b);
    rl_free(l);
    free(text);
    return 0;
}
