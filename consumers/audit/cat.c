/* `cbus-audit cat`: the log's events as JSON lines (event_json.h shape),
 * filtered by time, user and kind.  It reads; `verify` checks. */
#include "audit.h"

#include <cbus/cbus.h>

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "event_json.h"
#include "sbuf.h"
#include "scan.h"

struct cat {
    int has_since, has_until;
    uint64_t since_ns, until_ns;   /* [since, until) on ts_realtime_ns */
    const char *user;
    uint32_t kinds;                /* bit per kind; 0 = all */
    int with_seq;
    int with_body;                 /* --body: each event's body as stored */
    uint8_t *body_buf;             /* its sections rebuilt (kept bodies) */
    size_t body_cap;
    struct sbuf out;
    uint64_t printed;
    int decode_errors;
    const char *path;
};

static uint64_t now_real_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* "2026-11-24T03:00:00Z" (fraction optional), "@NS" (ns since the epoch),
 * or a duration ("15m", "2h") meaning that long ago. */
static int parse_time(const char *s, uint64_t *out)
{
    if (s[0] == '@') {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(s + 1, &end, 10);
        if (errno || end == s + 1 || *end)
            return -EINVAL;
        *out = v;
        return 0;
    }
    struct tm tm = {0};
    const char *rest = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (rest) {
        uint64_t frac = 0, scale = 1000000000u;
        if (*rest == '.') {
            rest++;
            while (*rest >= '0' && *rest <= '9') {
                if (scale > 1) {
                    scale /= 10;
                    frac += (uint64_t)(*rest - '0') * scale;
                }
                rest++;
            }
        }
        if (strcmp(rest, "Z") != 0)
            return -EINVAL;
        time_t t = timegm(&tm);
        if (t < 0)
            return -EINVAL;
        *out = (uint64_t)t * 1000000000u + frac;
        return 0;
    }
    uint64_t ago;
    if (cbus_parse_duration_ns(s, &ago))
        return -EINVAL;
    uint64_t now = now_real_ns();
    *out = ago > now ? 0 : now - ago;
    return 0;
}

static int parse_kinds(const char *s, uint32_t *mask)
{
    char buf[512];
    snprintf(buf, sizeof buf, "%s", s);
    char *save, *tok = strtok_r(buf, ",", &save);
    while (tok) {
        int k = cbus_kind_from_name(tok);
        if (k < 0 || k >= 32) {
            fprintf(stderr, "cbus-audit cat: unknown kind '%s'\n", tok);
            return -EINVAL;
        }
        *mask |= 1u << k;
        tok = strtok_r(NULL, ",", &save);
    }
    return 0;
}

/* The value of a str key of the event map (preview_sha256), if present. */
static int event_str(const uint8_t *p, size_t len, const char *key, const char **s, uint32_t *n)
{
    struct cbus_mp_reader r = {p, p + len};
    uint32_t cnt;
    if (cbus_mp_read_map(&r, &cnt))
        return -1;
    size_t kl = strlen(key);
    for (uint32_t i = 0; i < cnt; i++) {
        const char *k;
        uint32_t l;
        if (cbus_mp_read_str(&r, &k, &l))
            return -1;
        if (l == kl && !memcmp(k, key, kl))
            return cbus_mp_read_str(&r, s, n);
        if (cbus_mp_skip(&r))
            return -1;
    }
    return -1;
}

/* The event's "body" map when it was stored redacted (hash or drop), as a
 * JSON object: "redacted", and each section's "_sha256", "_len" and the
 * like, scalar values only.  Returns 1 when written, 0 when the body is
 * kept or absent. */
static int redacted_body_json(struct sbuf *b, const uint8_t *p, size_t len)
{
    struct cbus_mp_reader r = {p, p + len};
    uint32_t cnt;
    if (cbus_mp_read_map(&r, &cnt))
        return 0;
    for (uint32_t i = 0; i < cnt; i++) {
        const char *k;
        uint32_t l;
        if (cbus_mp_read_str(&r, &k, &l))
            return 0;
        if (l == 4 && !memcmp(k, "body", 4))
            break;
        if (cbus_mp_skip(&r))
            return 0;
        if (i + 1 == cnt)
            return 0;
    }
    const char *red;
    uint32_t rl;
    if (event_str(r.p, (size_t)(r.end - r.p), "redacted", &red, &rl))
        return 0; /* kept: the sections, rendered by event_json */
    if (cbus_mp_read_map(&r, &cnt))
        return 0;
    sbuf_puts(b, ",\"body\":{");
    for (uint32_t i = 0; i < cnt; i++) {
        const char *k, *v;
        uint32_t l, vl;
        uint64_t u;
        if (cbus_mp_read_str(&r, &k, &l))
            break;
        sbuf_printf(b, "%s", i ? "," : "");
        sbuf_json_str(b, k, l);
        sbuf_puts(b, ":");
        if (cbus_mp_peek(&r) == CBUS_MP_UINT && cbus_mp_read_uint(&r, &u) == 0) {
            sbuf_printf(b, "%llu", (unsigned long long)u);
        } else if (cbus_mp_read_text(&r, &v, &vl) == 0) {
            sbuf_json_str(b, v, vl);
        } else {
            sbuf_puts(b, "null");
            if (cbus_mp_skip(&r))
                break;
        }
    }
    sbuf_puts(b, "}");
    return 1;
}

static int on_record(void *arg, const struct audit_item *it)
{
    struct cat *c = arg;
    struct cbus_event ev;
    struct cbus_body body = {NULL, 0};
    if (c->with_body && c->body_cap < CBUS_EVMP_REBUILD_MAX(it->event_len)) {
        size_t cap = CBUS_EVMP_REBUILD_MAX(it->event_len);
        uint8_t *nb = realloc(c->body_buf, cap);
        if (!nb) {
            fprintf(stderr, "cbus-audit cat: out of memory\n");
            return -ENOMEM;
        }
        c->body_buf = nb;
        c->body_cap = cap;
    }
    if (cbus_evmp_decode_body(it->event, it->event_len, &ev, NULL, c->body_buf, c->body_cap,
                              c->with_body ? &body : NULL)) {
        if (!c->decode_errors++)
            fprintf(stderr, "cbus-audit cat: %s: seq %llu: event does not decode\n", c->path,
                    (unsigned long long)it->seq);
        return 0;
    }
    if (c->has_since && ev.ts_realtime_ns < c->since_ns)
        return 0;
    if (c->has_until && ev.ts_realtime_ns >= c->until_ns)
        return 0;
    if (c->kinds && (ev.kind >= 32 || !(c->kinds & (1u << ev.kind))))
        return 0;
    if (c->user && (strnlen(ev.user, sizeof ev.user) != strlen(c->user) ||
                    memcmp(ev.user, c->user, strlen(c->user))))
        return 0;
    size_t start = c->out.len;
    cbus_event_json(&c->out, &ev, c->with_body && body.len ? &body : NULL);
    /* Additions to the event_json object, spliced before its closing brace. */
    const char *h;
    uint32_t hl;
    if (c->out.len > start && c->out.data[c->out.len - 1] == '}') {
        int hashed = event_str(it->event, it->event_len, "preview_sha256", &h, &hl) == 0;
        int redacted = c->with_body && !body.len && (ev.flags & CBUS_FLAG_BODY);
        if (hashed || c->with_seq || redacted) {
            c->out.len--;
            if (hashed) {
                sbuf_puts(&c->out, ",\"preview_sha256\":");
                sbuf_json_str(&c->out, h, hl);
            }
            if (redacted)
                redacted_body_json(&c->out, it->event, it->event_len);
            if (c->with_seq)
                sbuf_printf(&c->out, ",\"audit_seq\":%llu", (unsigned long long)it->seq);
            sbuf_puts(&c->out, "}");
        }
    }
    sbuf_puts(&c->out, "\n");
    c->printed++;
    if (c->out.len > (1u << 16)) {
        fwrite(c->out.data, 1, c->out.len, stdout);
        sbuf_reset(&c->out);
    }
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: cbus-audit cat [--since T] [--until T] [--user U] [--kind K[,K...]] [--seq]\n"
            "                      [--body] FILE|DIR...\n"
            "  Prints the events as JSON lines.  T: 2026-11-24T03:00:00Z, @NS (ns since the\n"
            "  epoch) or a duration meaning that long ago (15m, 2h, 7d).  --seq adds the\n"
            "  record's chain position as \"audit_seq\".  --body adds each event's body as\n"
            "  stored: the sections whole, or for a hashed or dropped one what was kept of it\n"
            "  (\"redacted\", each section's _sha256 and _len).  Does not check hashes: use\n"
            "  verify.\n");
}

int audit_cat_main(int argc, char **argv)
{
    struct cat c = {0};
    static const struct option longopts[] = {
        {"since", required_argument, NULL, 's'}, {"until", required_argument, NULL, 'u'},
        {"user", required_argument, NULL, 'U'},  {"kind", required_argument, NULL, 'k'},
        {"seq", no_argument, NULL, 'q'},         {"help", no_argument, NULL, 'h'},
        {"body", no_argument, NULL, 'b'},
        {NULL, 0, NULL, 0}};
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (opt) {
        case 's':
        case 'u': {
            uint64_t t;
            if (parse_time(optarg, &t)) {
                fprintf(stderr, "cbus-audit cat: bad time '%s'\n", optarg);
                return 2;
            }
            if (opt == 's') {
                c.has_since = 1;
                c.since_ns = t;
            } else {
                c.has_until = 1;
                c.until_ns = t;
            }
            break;
        }
        case 'U':
            c.user = optarg;
            break;
        case 'k':
            if (parse_kinds(optarg, &c.kinds))
                return 2;
            break;
        case 'q':
            c.with_seq = 1;
            break;
        case 'b':
            c.with_body = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    char **paths;
    size_t n;
    if (audit_operand_paths(argc, argv, usage, &paths, &n))
        return 2;
    struct audit_chain chain = {0};
    sbuf_init(&c.out);
    int status = 0;
    for (size_t i = 0; i < n; i++) {
        struct audit_verify_state st = {0};
        struct audit_scan_result res;
        c.path = paths[i];
        int rc = audit_scan_file(&chain, &st, paths[i], paths[i], 0, on_record, &c, &res);
        if (rc < 0) {
            fprintf(stderr, "cbus-audit cat: %s: %s\n", paths[i], strerror(-rc));
            status = 1;
            continue;
        }
        if (res.bad) {
            fprintf(stderr, "cbus-audit cat: %s: stopped at offset %zu: %s\n", paths[i],
                    res.bad_offset, res.why);
            status = 1;
        }
    }
    fwrite(c.out.data ? c.out.data : "", 1, c.out.len, stdout);
    fflush(stdout);
    if (c.decode_errors)
        status = 1;
    sbuf_free(&c.out);
    free(c.body_buf);
    audit_paths_free(paths, n);
    return status;
}
