/* cbusctl stat: the bus header, the producer table and every consumer entry,
 * with rates measured between two samples. */
#include "cbusctl.h"

#include "daemon.h"
#include "inspect.h"
#include "sbuf.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* A one-shot stat samples twice this far apart to report rates. */
#define RATE_SAMPLE_NS (200 * UINT64_C(1000000))

struct psnap {
    unsigned idx;
    uint32_t pid;
    uint64_t emitted, dropped, waited_ns, max_wait_ns;
    char name[17];
};

struct snap {
    uint64_t t_ns;          /* cli_mono_ns() when taken */
    uint64_t bus_now_ns;    /* cbus_now_ns(): the clock heartbeats use */
    uint64_t tail, dropped, untethered, overflow_emitted, gate;
    uint32_t waiters;
    unsigned nc, np;
    struct cbus_consumer_snap c[CBUS_MAX_CONSUMERS];
    struct psnap p[CBUS_MAX_PRODUCERS];
};

static void take(cbus_bus *bus, struct snap *s)
{
    const struct cbus_shm_header *h = cbus_bus_header(bus);
    /* The library validated these against the compiled-in maxima; clamp
     * anyway so a header changed after open cannot walk us off the tables. */
    unsigned maxc = h->max_consumers < CBUS_MAX_CONSUMERS ? h->max_consumers : CBUS_MAX_CONSUMERS;
    unsigned maxp = h->max_producers < CBUS_MAX_PRODUCERS ? h->max_producers : CBUS_MAX_PRODUCERS;

    s->t_ns = cli_mono_ns();
    s->bus_now_ns = cbus_now_ns();
    s->tail = cbus_bus_tail(bus);
    s->dropped = atomic_load_explicit(&h->dropped, memory_order_relaxed);
    s->untethered = atomic_load_explicit(&h->untethered, memory_order_relaxed);
    s->overflow_emitted = atomic_load_explicit(&h->producer_overflow_emitted, memory_order_relaxed);
    s->gate = atomic_load_explicit(&h->gate, memory_order_relaxed);
    s->waiters = atomic_load_explicit(&h->waiters, memory_order_relaxed);

    s->nc = 0;
    for (unsigned i = 0; i < maxc; i++) {
        if (cbus_consumer_snap_read(bus, i, &s->c[s->nc]))
            s->nc++;
    }

    s->np = 0;
    for (unsigned i = 0; i < maxp; i++) {
        struct cbus_producer_entry *e = cbus_bus_producer_entry(bus, i);
        if (!e || !atomic_load_explicit(&e->in_use, memory_order_acquire))
            continue;
        struct psnap *p = &s->p[s->np++];
        p->idx = i;
        p->pid = atomic_load_explicit(&e->pid, memory_order_relaxed);
        p->emitted = atomic_load_explicit(&e->emitted, memory_order_relaxed);
        p->dropped = atomic_load_explicit(&e->dropped, memory_order_relaxed);
        p->waited_ns = atomic_load_explicit(&e->waited_ns, memory_order_relaxed);
        p->max_wait_ns = atomic_load_explicit(&e->max_wait_ns, memory_order_relaxed);
        memcpy(p->name, e->name, sizeof e->name);
        p->name[sizeof e->name] = '\0';
    }
}

/* Events per second between two samples of the same entry, or -1 when the
 * entry was re-attached (or appeared) in between. */
static double consumer_rate(const struct snap *prev, const struct snap *cur,
                            const struct cbus_consumer_snap *c)
{
    if (!prev || cur->t_ns <= prev->t_ns)
        return -1;
    for (unsigned i = 0; i < prev->nc; i++) {
        const struct cbus_consumer_snap *p = &prev->c[i];
        if (p->idx != c->idx || p->generation != c->generation || p->consumed > c->consumed)
            continue;
        return (double)(c->consumed - p->consumed) * 1e9 / (double)(cur->t_ns - prev->t_ns);
    }
    return -1;
}

static double tail_rate(const struct snap *prev, const struct snap *cur)
{
    if (!prev || cur->t_ns <= prev->t_ns || cur->tail < prev->tail)
        return -1;
    return (double)(cur->tail - prev->tail) * 1e9 / (double)(cur->t_ns - prev->t_ns);
}

static uint64_t lag_of(const struct snap *s, const struct cbus_consumer_snap *c)
{
    return s->tail > c->read_pos ? s->tail - c->read_pos : 0;
}

static uint64_t hb_age(const struct snap *s, const struct cbus_consumer_snap *c)
{
    return s->bus_now_ns > c->heartbeat_ns ? s->bus_now_ns - c->heartbeat_ns : 0;
}

static const char *state_name(uint32_t st)
{
    return st == CBUS_CSTATE_ACTIVE    ? "active"
           : st == CBUS_CSTATE_CLAIMED ? "attaching"
           : st == CBUS_CSTATE_PARKED  ? "parked"
                                       : "?";
}

struct busfile {
    int have;
    unsigned mode, uid, gid;
};

static void json_rate(struct sbuf *b, const char *key, double rate)
{
    if (rate < 0)
        sbuf_printf(b, ",\"%s\":null", key);
    else
        sbuf_printf(b, ",\"%s\":%.1f", key, rate);
}

/* What a lossless consumer told producers it needs: "all", or the kinds by
 * name (unknown bits, from a newer library or a stray write, as numbers).
 * A lossy consumer needs nothing: "-". */
static const char *fmt_kinds(char *buf, size_t len, const struct cbus_consumer_snap *c)
{
    if (!(c->flags & CBUS_CFLAG_LOSSLESS))
        return "-";
    if (!(c->flags & CBUS_CFLAG_KINDS))
        return "all";
    size_t off = 0;
    buf[0] = '\0';
    for (unsigned k = 0; k < 64 && off < len; k++) {
        if (!(c->kinds & CBUS_KIND_BIT(k)))
            continue;
        const char *n = cbus_kind_name(k);
        int w = n && k ? snprintf(buf + off, len - off, "%s%s", off ? "," : "", n)
                       : snprintf(buf + off, len - off, "%s%u", off ? "," : "", k);
        off += w > 0 ? (size_t)w : 0;
    }
    return buf;
}

static void print_json(const char *name, const struct cbus_shm_header *h, const struct busfile *bf,
                       const struct snap *prev, const struct snap *s)
{
    struct sbuf b;
    char path[64];
    sbuf_init(&b);
    cli_shm_path(path, sizeof path, name);

    sbuf_puts(&b, "{\"bus\":");
    sbuf_json_str(&b, name, strlen(name));
    sbuf_printf(&b, ",\"path\":\"%s\"", path);
    sbuf_printf(&b,
                ",\"layout\":{\"major\":%u,\"minor\":%u,\"fingerprint\":\"%016" PRIx64 "\"}"
                ",\"capacity\":%" PRIu64 ",\"lanes\":%u,\"slot_size\":%u,\"total_size\":%" PRIu64
                ",\"bus_id\":\"%016" PRIx64 "\",\"creator_pid\":%u,\"created_realtime_ns\":%" PRIu64,
                h->layout_major, h->layout_minor, h->fingerprint, h->capacity,
                h->lane_count ? h->lane_count : 1u, h->slot_size, h->total_size, h->bus_id, h->creator_pid, h->created_realtime_ns);
    if (bf->have)
        sbuf_printf(&b, ",\"mode\":\"%04o\",\"uid\":%u,\"gid\":%u", bf->mode, bf->uid, bf->gid);
    sbuf_printf(&b,
                ",\"lossless_wait_ns\":%" PRIu64 ",\"stall_timeout_ns\":%" PRIu64
                ",\"abandon_timeout_ns\":%" PRIu64 ",\"body_limit\":%u",
                h->lossless_wait_ns, h->stall_timeout_ns, h->abandon_timeout_ns, h->body_limit);
    sbuf_printf(&b,
                ",\"tail\":%" PRIu64 ",\"dropped\":%" PRIu64 ",\"untethered\":%" PRIu64
                ",\"tethered_consumers\":%u,\"sleeping_consumers\":%u",
                s->tail, s->dropped, s->untethered, CBUS_GATE_COUNT(s->gate), s->waiters);
    json_rate(&b, "tail_rate", tail_rate(prev, s));
    if (prev)
        sbuf_printf(&b, ",\"interval_ms\":%.1f", (double)(s->t_ns - prev->t_ns) / 1e6);

    sbuf_puts(&b, ",\"producers\":[");
    for (unsigned i = 0; i < s->np; i++) {
        const struct psnap *p = &s->p[i];
        sbuf_printf(&b, "%s{\"index\":%u,\"pid\":%u,\"name\":", i ? "," : "", p->idx, p->pid);
        sbuf_json_str(&b, p->name, strnlen(p->name, sizeof p->name));
        sbuf_printf(&b,
                    ",\"emitted\":%" PRIu64 ",\"dropped\":%" PRIu64 ",\"waited_ns\":%" PRIu64
                    ",\"max_wait_ns\":%" PRIu64 "}",
                    p->emitted, p->dropped, p->waited_ns, p->max_wait_ns);
    }
    sbuf_printf(&b, "],\"producer_overflow_emitted\":%" PRIu64, s->overflow_emitted);

    sbuf_puts(&b, ",\"consumers\":[");
    for (unsigned i = 0; i < s->nc; i++) {
        const struct cbus_consumer_snap *c = &s->c[i];
        sbuf_printf(&b, "%s{\"index\":%u,\"name\":", i ? "," : "", c->idx);
        sbuf_json_str(&b, c->name, strnlen(c->name, sizeof c->name));
        sbuf_printf(&b, ",\"pid\":%u,\"state\":\"%s\",\"alive\":%s", c->pid, state_name(c->state),
                    c->alive > 0 ? "true" : c->alive == 0 ? "false" : "null");
        sbuf_printf(&b,
                    ",\"mode\":\"%s\",\"tethered\":%s,\"sleeping\":%s,\"cursor\":%" PRIu64
                    ",\"read_pos\":%" PRIu64 ",\"lag\":%" PRIu64 ",\"consumed\":%" PRIu64
                    ",\"lost\":%" PRIu64 ",\"abandoned\":%" PRIu64 ",\"untethered_count\":%" PRIu64
                    ",\"heartbeat_age_ns\":%" PRIu64 ",\"kinds\":",
                    c->flags & CBUS_CFLAG_LOSSLESS ? "lossless" : "lossy",
                    c->flags & CBUS_CFLAG_TETHERED ? "true" : "false",
                    c->flags & CBUS_CFLAG_SLEEPING ? "true" : "false", c->cursor, c->read_pos,
                    lag_of(s, c), c->consumed, c->lost, c->abandoned, c->untethered,
                    hb_age(s, c));
        char kb[512];
        const char *kinds = fmt_kinds(kb, sizeof kb, c);
        sbuf_json_str(&b, kinds, strlen(kinds)); /* "all", "-" or "llm_end,llm_error" */
        json_rate(&b, "rate", consumer_rate(prev, s, c));
        sbuf_puts(&b, "}");
    }
    sbuf_puts(&b, "]}\n");
    if (!b.failed)
        fwrite(b.data, 1, b.len, stdout);
    sbuf_free(&b);
}

static const char *fmt_rate(char *buf, size_t len, double rate)
{
    if (rate < 0)
        snprintf(buf, len, "-");
    else if (rate >= 1e6)
        snprintf(buf, len, "%.2fM", rate / 1e6);
    else if (rate >= 1e4)
        snprintf(buf, len, "%.1fk", rate / 1e3);
    else
        snprintf(buf, len, "%.1f", rate);
    return buf;
}

static void print_human(const char *name, const struct cbus_shm_header *h, const struct busfile *bf,
                        const struct snap *prev, const struct snap *s)
{
    char path[64], b1[32], b2[32], b3[32], b4[32], kb[512];
    cli_shm_path(path, sizeof path, name);

    char created[32] = "?";
    time_t secs = (time_t)(h->created_realtime_ns / 1000000000u);
    struct tm tm;
    if (localtime_r(&secs, &tm))
        strftime(created, sizeof created, "%Y-%m-%d %H:%M:%S", &tm);

    printf("bus %s  %s  layout %u.%u  bus id %016" PRIx64 "\n", name, path, h->layout_major,
           h->layout_minor, h->bus_id);
    printf("capacity %" PRIu64 " slots x %u B (%s)", h->capacity, h->slot_size,
           fmt_bytes(b1, sizeof b1, h->total_size));
    if (h->lane_count > 1)
        printf("  %u lanes of %" PRIu64, h->lane_count, h->lane_capacity);
    if (bf->have)
        printf("  mode %04o uid %u gid %u", bf->mode, bf->uid, bf->gid);
    printf("  created %s by pid %u\n", created, h->creator_pid);
    printf("lossless wait %s  stall timeout %s  abandon timeout %s  body limit %u B\n",
           fmt_ns(b1, sizeof b1, h->lossless_wait_ns), fmt_ns(b2, sizeof b2, h->stall_timeout_ns),
           fmt_ns(b3, sizeof b3, h->abandon_timeout_ns), h->body_limit);
    printf("tail %" PRIu64 " (%s/s)  dropped %" PRIu64 "  untethered %" PRIu64
           "  tethered consumers %u  sleeping %u\n",
           s->tail, fmt_rate(b1, sizeof b1, tail_rate(prev, s)), s->dropped, s->untethered,
           CBUS_GATE_COUNT(s->gate), s->waiters);

    printf("\nproducers: %u", s->np);
    if (s->overflow_emitted)
        printf(" (+%" PRIu64 " events from producers without a table entry)", s->overflow_emitted);
    printf("\n");
    if (s->np) {
        printf("  %-4s %-8s %-16s %12s %10s %10s %10s\n", "IDX", "PID", "NAME", "EMITTED",
               "DROPPED", "WAITED", "MAX WAIT");
        for (unsigned i = 0; i < s->np; i++) {
            const struct psnap *p = &s->p[i];
            char nm[64];
            fmt_safe(nm, sizeof nm, p->name, sizeof p->name);
            printf("  %-4u %-8u %-16s %12" PRIu64 " %10" PRIu64 " %10s %10s\n", p->idx, p->pid, nm,
                   p->emitted, p->dropped, fmt_ns(b1, sizeof b1, p->waited_ns),
                   fmt_ns(b2, sizeof b2, p->max_wait_ns));
        }
    }

    printf("\nconsumers: %u\n", s->nc);
    if (s->nc) {
        printf("  %-4s %-20s %-8s %-5s %-8s %-4s %12s %12s %8s %12s %10s %6s %9s %8s  %s\n", "IDX",
               "NAME", "PID", "ALIVE", "MODE", "TETH", "CURSOR", "READ", "LAG", "CONSUMED", "LOST",
               "ABAND", "RATE/s", "HB AGE", "KINDS");
        for (unsigned i = 0; i < s->nc; i++) {
            const struct cbus_consumer_snap *c = &s->c[i];
            char nm[96];
            fmt_safe(nm, sizeof nm, c->name, sizeof c->name);
            const char *alive = c->alive > 0 ? "yes" : c->alive == 0 ? "DEAD" : "?";
            if (c->state == CBUS_CSTATE_PARKED)
                alive = "park";
            else if (c->state != CBUS_CSTATE_ACTIVE)
                alive = c->alive == 0 ? "DEAD" : "attch";
            printf("  %-4u %-20s %-8u %-5s %-8s %-4s %12" PRIu64 " %12" PRIu64 " %8" PRIu64
                   " %12" PRIu64 " %10" PRIu64 " %6" PRIu64 " %9s %8s  %s\n",
                   c->idx, nm, c->pid, alive, c->flags & CBUS_CFLAG_LOSSLESS ? "lossless" : "lossy",
                   c->flags & CBUS_CFLAG_TETHERED ? "yes" : "no", c->cursor, c->read_pos,
                   lag_of(s, c), c->consumed, c->lost, c->abandoned,
                   fmt_rate(b3, sizeof b3, consumer_rate(prev, s, c)),
                   fmt_ns(b4, sizeof b4, hb_age(s, c)), fmt_kinds(kb, sizeof kb, c));
        }
        for (unsigned i = 0; i < s->nc; i++) {
            if (s->c[i].alive == 0 && s->c[i].state == CBUS_CSTATE_ACTIVE) {
                printf("\nA DEAD entry keeps its name and cursor until evicted: "
                       "cbusctl evict %s INDEX\n",
                       name);
                break;
            }
        }
    }
}

/* 1 when the name no longer leads to the segment we mapped (st). */
static int replaced(const char *name, const struct stat *mapped)
{
    char path[64];
    struct stat now;
    cli_shm_path(path, sizeof path, name);
    if (!mapped->st_ino)
        return 0;
    if (stat(path, &now) != 0)
        return 1;
    return now.st_ino != mapped->st_ino || now.st_dev != mapped->st_dev;
}

static void stat_help(FILE *f)
{
    fprintf(f,
            "usage: cbusctl stat NAME [--json] [--watch SECONDS]\n"
            "Shows the bus header, producer counters and every consumer entry (index, name,\n"
            "pid, alive, mode, tethered, cursor, read position, lag, consumed, lost,\n"
            "abandoned, rate).  Rates are measured between two samples: 200 ms apart for a\n"
            "one-shot stat, one interval apart with --watch.\n"
            "  --json          one JSON object (one per line with --watch)\n"
            "  --watch S       refresh every S seconds until interrupted\n"
            "A bus owned by another uid is shown (read-only) with its owner.\n");
}

int cmd_stat(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"json", no_argument, NULL, 'j'},
        {"watch", required_argument, NULL, 'w'},
        {"trust-owner", no_argument, NULL, 'T'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    int json = 0, r;
    double watch = 0;
    /* Read-only inspection trusts any owner: it cannot hurt the bus, and an
     * admin looking at a service's bus is the common case.  The owner's uid
     * is printed, so a squatted segment is visible as such. */
    unsigned flags = CBUS_OPEN_READONLY | CBUS_OPEN_TRUST_OWNER;

    optind = 0;
    for (int c; (c = getopt_long(argc, argv, "h", longopts, NULL)) != -1;) {
        switch (c) {
        case 'j':
            json = 1;
            break;
        case 'w':
            if ((r = cli_seconds("stat", "--watch", optarg, 0.05, &watch)))
                return r;
            break;
        case 'T': /* accepted for symmetry with tail/emit/evict */
            break;
        case 'h':
            stat_help(stdout);
            return EXIT_OK;
        default:
            stat_help(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind != argc - 1)
        return cli_usage_error("stat", "expected exactly one bus NAME");
    const char *name = argv[optind];
    if ((r = cli_bus_name("stat", name)))
        return r;

    cbus_bus *bus;
    if ((r = cli_open_bus(&bus, name, flags)))
        return r;
    const struct cbus_shm_header *h = cbus_bus_header(bus);
    struct busfile bf = {0};
    struct stat st = {0};
    if (fstat(cbus_bus_fd(bus), &st) == 0) {
        bf.have = 1;
        bf.mode = (unsigned)(st.st_mode & 07777);
        bf.uid = (unsigned)st.st_uid;
        bf.gid = (unsigned)st.st_gid;
    }

    struct snap *prev = malloc(sizeof *prev), *cur = malloc(sizeof *cur);
    if (!prev || !cur) {
        cli_error("out of memory");
        free(prev);
        free(cur);
        cbus_bus_close(bus);
        return EXIT_RUNTIME;
    }
    cbus_daemon_signals();
    int tty = isatty(STDOUT_FILENO);
    uint64_t interval = RATE_SAMPLE_NS;
    take(bus, prev);
    int rc = EXIT_OK;
    for (;;) {
        if (cli_sleep_ns(interval))
            break;
        if (watch && replaced(name, &st)) {
            /* Our mapping outlives the name: say so rather than show a dead bus forever. */
            cli_error("bus '%s' was destroyed or recreated: stopped watching", name);
            rc = EXIT_RUNTIME;
            break;
        }
        take(bus, cur);
        if (watch && tty && !json)
            fputs("\033[H\033[2J", stdout); /* home + clear: a refreshing screen */
        if (json)
            print_json(name, h, &bf, prev, cur);
        else
            print_human(name, h, &bf, prev, cur);
        if (fflush(stdout) || ferror(stdout) || !watch)
            break;
        if (!tty && !json)
            printf("\n");
        struct snap *t = prev;
        prev = cur;
        cur = t;
        interval = (uint64_t)(watch * 1e9);
    }
    free(prev);
    free(cur);
    cbus_bus_close(bus);
    return rc;
}
