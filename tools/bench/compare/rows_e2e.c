/* Rows 6: end to end.  cbus-loadgen (tools/loadgen) emits realistic callback
 * traffic as fast as it can for a few seconds; its achievable event rate is
 * measured
 *   e2e-nobus  with no bus (only if the load generator has such a mode),
 *   e2e-bus    with a bus and no consumer,
 *   e2e-4c     with the four consumer daemons attached: cbus-cost,
 *              cbus-audit (fdatasync'ed log in a temp dir), cbus-export
 *              (OTLP/HTTP to a loopback cbus-collector) and cbus-ratelimit,
 *              each with a config written for the run;
 * and then paced (--rate, requests/s, a busy server's load rather than a
 * flood) with the bus alone and with the four daemons, where what counts is
 * the load generator's CPU time per event and what was dropped.
 * The programs are looked up in the build tree this binary belongs to; rows
 * whose programs are not built are skipped with the list of what is missing. */
#include "bench.h"

#include <cbus/bus.h>

#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CBUS_SOURCE_DIR
#define CBUS_SOURCE_DIR "."
#endif

static const char *const daemons[] = {"cost", "audit", "export", "ratelimit"};
#define NDAEMONS 4

struct e2e {
    char root[512];             /* the build tree */
    char loadgen[600], collector[600], daemon[NDAEMONS][600];
    char prices[600];
    char dir[64];               /* temp dir for configs, logs, state */
    char bus[32];
};

static int exists(const char *p)
{
    return access(p, X_OK) == 0;
}

static void last_line(char *dst, size_t cap, const char *text)
{
    size_t n = strlen(text);
    while (n && (text[n - 1] == '\n' || text[n - 1] == ' '))
        n--;
    size_t s = n;
    while (s && text[s - 1] != '\n')
        s--;
    snprintf(dst, cap, "%.*s", (int)(n - s), text + s);
}

static void file_last_line(char *dst, size_t cap, const char *path)
{
    static char buf[16384];
    FILE *f = fopen(path, "r");
    size_t n = 0;
    if (f) {
        fseek(f, 0, SEEK_END);
        long sz = ftell(f);
        fseek(f, sz > (long)sizeof buf - 1 ? sz - (long)sizeof buf + 1 : 0, SEEK_SET);
        n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
    }
    buf[n] = '\0';
    last_line(dst, cap, buf);
}

/* One load generator run: fills rs->mevents_s from its summary line. */
static int run_loadgen(const struct bench_opts *o, const struct e2e *e, const char *bus,
                       unsigned rate, struct run_stats *rs, char *why, size_t whycap)
{
    char dur[16], thr[16], rate_s[16];
    snprintf(dur, sizeof dur, "%us", o->e2e_seconds);
    snprintf(thr, sizeof thr, "%u", o->e2e_threads);
    char *argv[16] = {(char *)e->loadgen};
    int k = 1;
    if (bus) {
        argv[k++] = "--bus";
        argv[k++] = (char *)bus;
    } else {
        argv[k++] = "--no-bus";
    }
    char *rest[] = {"--threads", thr, "--duration", dur, "--prices", (char *)e->prices,
                    "--seed", "1", "--quiet", NULL};
    for (int i = 0; rest[i]; i++)
        argv[k++] = rest[i];
    if (rate) {
        snprintf(rate_s, sizeof rate_s, "%u", rate);
        argv[k++] = "--rate";
        argv[k++] = rate_s;
    }
    argv[k] = NULL;
    static char out[16384];
    struct rusage ru = {0};
    int rc = bench_run_cmd_ru(argv, out, sizeof out, &ru);
    const char *p = strstr(out, "events emitted ");
    unsigned long long emitted = 0, dropped = 0;
    double evs = 0;
    if (rc || !p || sscanf(p, "events emitted %llu, dropped %llu, %lf events/s", &emitted, &dropped,
                           &evs) != 3) {
        char line[160];
        last_line(line, sizeof line, out);
        snprintf(why, whycap, "cbus-loadgen exited %d: %s", rc, line);
        return -1;
    }
    memset(rs, 0, sizeof *rs);
    rs->events = emitted;
    rs->dropped = dropped;
    rs->mevents_s = evs / 1e6;
    double cpu = (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                 (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    rs->cpu_ns = emitted ? cpu * 1e9 / (double)emitted : 0;
    return 0;
}

/* utime + stime of a process, in seconds (/proc/PID/stat). */
static double proc_cpu_s(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    unsigned long long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return 0;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static int write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -errno;
    fputs(text, f);
    return fclose(f) ? -errno : 0;
}

static int wait_for_file(const char *path, int ms)
{
    for (int i = 0; i < ms / 10; i++) {
        if (access(path, R_OK) == 0)
            return 0;
        usleep(10000);
    }
    return -ETIMEDOUT;
}

static int active_consumers(const char *bus_name)
{
    cbus_bus *bus;
    if (cbus_bus_open(&bus, bus_name, 0))
        return -1;
    int n = 0;
    for (unsigned i = 0; i < CBUS_MAX_CONSUMERS; i++)
        if (atomic_load(&cbus_bus_consumer_entry(bus, i)->state) == CBUS_CSTATE_ACTIVE)
            n++;
    cbus_bus_close(bus);
    return n;
}

/* Sum of lost events over the bus's consumers. */
static uint64_t consumers_lost(const char *bus_name)
{
    cbus_bus *bus;
    if (cbus_bus_open(&bus, bus_name, 0))
        return 0;
    uint64_t lost = 0;
    for (unsigned i = 0; i < CBUS_MAX_CONSUMERS; i++) {
        struct cbus_consumer_entry *c = cbus_bus_consumer_entry(bus, i);
        if (atomic_load(&c->state) == CBUS_CSTATE_ACTIVE)
            lost += atomic_load(&c->lost);
    }
    cbus_bus_close(bus);
    return lost;
}

static void stop_pid(pid_t pid)
{
    if (pid <= 0)
        return;
    kill(pid, SIGTERM);
    for (int i = 0; i < 1000; i++) {
        if (waitpid(pid, NULL, WNOHANG) == pid)
            return;
        usleep(10000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st, (void)flag, (void)f;
    remove(p);
    return 0;
}

/* Writes the four daemons' configs into e->dir; port is the collector's. */
static int write_configs(const struct e2e *e, unsigned port)
{
    char path[700], text[2048];
    int rc = 0;
    snprintf(path, sizeof path, "%s/cost.ini", e->dir);
    snprintf(text, sizeof text,
             "[bus]\nconsumer = cost\nstart = newest\n"
             "[prices]\nfile = %s\n"
             "[state]\ndir = %s/cost\n"
             "[prometheus]\ntextfile = %s/cost/cbus_cost.prom\n",
             e->prices, e->dir, e->dir);
    rc |= write_text(path, text);
    snprintf(path, sizeof path, "%s/audit.ini", e->dir);
    snprintf(text, sizeof text,
             "[audit]\nname = audit\ndir = %s/audit-log\nstart = newest\n", e->dir);
    rc |= write_text(path, text);
    snprintf(path, sizeof path, "%s/export.ini", e->dir);
    snprintf(text, sizeof text,
             "[bus]\nconsumer_name = export\nmode = lossy\nstart = newest\n"
             "[export]\nformat = otlp\nendpoint = http://127.0.0.1:%u\n"
             "[spool]\ndir = %s/spool\n"
             "[status]\nfile = %s/export.status.json\n",
             port, e->dir, e->dir);
    rc |= write_text(path, text);
    snprintf(path, sizeof path, "%s/ratelimit.ini", e->dir);
    snprintf(text, sizeof text,
             "[ratelimit]\nname = ratelimit\n"
             "[rules]\nrule = user=* rpm=60 tpm=200000\nrule = global rpm=10000\n");
    rc |= write_text(path, text);
    return rc ? -EIO : 0;
}

/* Starts the collector and the daemons, waits for the four consumers.
 * pids[0] is the collector.  Returns 0, or -1 with why filled. */
static int start_consumers(struct e2e *e, pid_t pids[NDAEMONS + 1], char *why, size_t cap)
{
    char log[700], portfile[700], cfg[700], status[700];
    snprintf(portfile, sizeof portfile, "%s/collector.port", e->dir);
    snprintf(log, sizeof log, "%s/collector.log", e->dir);
    char *cargv[] = {e->collector, "--listen", "127.0.0.1:0", "--port-file", portfile, NULL};
    pids[0] = bench_spawn_logged(cargv, log);
    if (pids[0] < 0 || wait_for_file(portfile, 5000)) {
        file_last_line(why, cap, log);
        return -1;
    }
    unsigned port = 0;
    FILE *f = fopen(portfile, "r");
    if (!f || fscanf(f, "%u", &port) != 1) {
        snprintf(why, cap, "cannot read %.150s", portfile);
        if (f)
            fclose(f);
        return -1;
    }
    fclose(f);
    if (write_configs(e, port)) {
        snprintf(why, cap, "cannot write configs in %.60s", e->dir);
        return -1;
    }
    for (int i = 0; i < NDAEMONS; i++) {
        snprintf(cfg, sizeof cfg, "%s/%s.ini", e->dir, daemons[i]);
        snprintf(log, sizeof log, "%s/%s.log", e->dir, daemons[i]);
        snprintf(status, sizeof status, "%s/ratelimit.status.json", e->dir);
        char *argv[] = {e->daemon[i], "--bus", e->bus, "--config", cfg, NULL, NULL, NULL};
        if (!strcmp(daemons[i], "ratelimit")) {
            argv[5] = "--status-file";
            argv[6] = status;
        }
        pids[i + 1] = bench_spawn_logged(argv, log);
        if (pids[i + 1] < 0) {
            snprintf(why, cap, "cannot start cbus-%s: %s", daemons[i], strerror(-pids[i + 1]));
            return -1;
        }
    }
    for (int t = 0; t < 1000; t++) {
        if (active_consumers(e->bus) >= NDAEMONS)
            return 0;
        for (int i = 0; i < NDAEMONS; i++)
            if (waitpid(pids[i + 1], NULL, WNOHANG) == pids[i + 1]) {
                char line[160];
                snprintf(log, sizeof log, "%s/%s.log", e->dir, daemons[i]);
                file_last_line(line, sizeof line, log);
                snprintf(why, cap, "cbus-%s exited: %s", daemons[i], line);
                pids[i + 1] = 0;
                return -1;
            }
        usleep(10000);
    }
    snprintf(why, cap, "the four consumers did not attach within 10 s");
    return -1;
}

/* One end-to-end row: e2e_runs load generator runs on a fresh bus, with the
 * four daemons attached when daemons is set.  rate 0 = as fast as it can. */
static void e2e_row(const struct bench_opts *o, struct e2e *e, struct row *r, int with_daemons,
                    unsigned rate, const struct row *base)
{
    char why[200] = "";
    for (int i = 0; i < o->e2e_runs; i++) {
        snprintf(e->dir, sizeof e->dir, "/tmp/cbus-compare-e2e.XXXXXX");
        if (!mkdtemp(e->dir)) {
            snprintf(why, sizeof why, "mkdtemp: %s", strerror(errno));
            break;
        }
        cbus_bus_destroy(e->bus);
        struct cbus_create_opts co = {0};
        int rc = cbus_bus_create(e->bus, &co);
        pid_t pids[NDAEMONS + 1] = {0};
        int ok = 0;
        if (rc) {
            snprintf(why, sizeof why, "cannot create bus: %s", cbus_strerror(rc));
        } else if (!with_daemons || !start_consumers(e, pids, why, sizeof why)) {
            struct run_stats *rs = &r->run[r->nruns];
            double cpu0 = 0, cpu1 = 0;
            for (int k = 1; k <= NDAEMONS; k++)
                cpu0 += pids[k] > 0 ? proc_cpu_s(pids[k]) : 0;
            uint64_t t0 = bench_now_ns();
            if (!run_loadgen(o, e, e->bus, rate, rs, why, sizeof why)) {
                double secs = (double)(bench_now_ns() - t0) / 1e9;
                usleep(200000); /* let the consumers reach the tail before reading losses */
                for (int k = 1; k <= NDAEMONS; k++)
                    cpu1 += pids[k] > 0 ? proc_cpu_s(pids[k]) : 0;
                rs->side_cpu = secs > 0 ? (cpu1 - cpu0) / secs : 0;
                rs->lost = consumers_lost(e->bus);
                r->nruns++;
                ok = 1;
            }
        }
        for (int k = NDAEMONS; k >= 0; k--)
            stop_pid(pids[k]);
        cbus_bus_destroy(e->bus);
        nftw(e->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        if (!ok)
            break;
    }
    if (!r->nruns) {
        bench_row_skip(r, "%s", why);
        return;
    }
    bench_aggregate(r);
    uint64_t offered = r->agg.events + r->agg.dropped;
    char extra[96] = "";
    if (base && base->kind != ROW_SKIPPED && base->agg.cpu_ns > 0)
        snprintf(extra, sizeof extra, " (%+.0f%% vs the bus alone)",
                 100.0 * (r->agg.cpu_ns / base->agg.cpu_ns - 1));
    snprintf(r->note, sizeof r->note,
             "%s; load generator CPU %.0f ns/event%s; %.1f%% of offered events dropped, "
             "%llu lost by lossy consumers",
             with_daemons ? "cost, audit, export, ratelimit attached" : "no consumer",
             r->agg.cpu_ns, extra,
             offered ? 100.0 * (double)r->agg.dropped / (double)offered : 0.0,
             (unsigned long long)r->agg.lost);
    if (with_daemons) {
        size_t len = strlen(r->note);
        snprintf(r->note + len, sizeof r->note - len, "; daemons used %.2f cores",
                 r->agg.side_cpu);
    }
    bench_progress(o, r);
}

void bench_rows_e2e(const struct bench_opts *o, struct row *rows, int *n)
{
    static struct e2e e;
    char cfg[128];
    snprintf(cfg, sizeof cfg, "cbus-loadgen, %u thread(s), %u s", o->e2e_threads, o->e2e_seconds);
    struct row *nobus = bench_row_new(rows, n, "e2e-nobus", "end to end: no bus", cfg, ROW_RATE);
    struct row *bus = bench_row_new(rows, n, "e2e-bus", "end to end: bus, no consumer", cfg,
                                    ROW_RATE);
    struct row *four = bench_row_new(rows, n, "e2e-4c", "end to end: bus + 4 daemons", cfg,
                                     ROW_RATE);
    snprintf(e.root, sizeof e.root, "%s/../../..", o->self_dir);
    snprintf(e.loadgen, sizeof e.loadgen, "%s/tools/loadgen/cbus-loadgen", e.root);
    snprintf(e.collector, sizeof e.collector, "%s/tools/cbus-collector/cbus-collector", e.root);
    snprintf(e.prices, sizeof e.prices, "%s/consumers/cost/model_prices_and_context_window.json",
             CBUS_SOURCE_DIR);
    if (!exists(e.loadgen)) {
        const char *why = "cbus-loadgen is not built (cmake --build BUILD --target cbus-loadgen)";
        bench_row_skip(nobus, "%s", why);
        bench_row_skip(bus, "%s", why);
        bench_row_skip(four, "%s", why);
        return;
    }
    char why[200] = "";
    /* No-bus mode: only if the load generator offers one. */
    static char help[8192];
    char *hargv[] = {e.loadgen, "--help", NULL};
    bench_run_cmd(hargv, help, sizeof help);
    if (!strstr(help, "--no-bus")) {
        bench_row_skip(nobus, "cbus-loadgen has no mode without a bus (no --no-bus option)");
    } else {
        for (int i = 0; i < o->e2e_runs; i++)
            if (!run_loadgen(o, &e, NULL, 0, &nobus->run[nobus->nruns], why, sizeof why))
                nobus->nruns++;
        if (!nobus->nruns) {
            bench_row_skip(nobus, "%s", why);
        } else {
            bench_aggregate(nobus);
            snprintf(nobus->note, sizeof nobus->note, "no bus; load generator CPU %.0f ns/event",
                     nobus->agg.cpu_ns);
            bench_progress(o, nobus);
        }
    }

    snprintf(e.bus, sizeof e.bus, "compare-e2e%d", (int)getpid());
    char missing[256] = "";
    if (!exists(e.collector))
        snprintf(missing + strlen(missing), sizeof missing - strlen(missing), " cbus-collector");
    for (int i = 0; i < NDAEMONS; i++) {
        snprintf(e.daemon[i], sizeof e.daemon[i], "%s/consumers/%s/cbus-%s", e.root, daemons[i],
                 daemons[i]);
        if (!exists(e.daemon[i]))
            snprintf(missing + strlen(missing), sizeof missing - strlen(missing), " cbus-%s",
                     daemons[i]);
    }
    e2e_row(o, &e, bus, 0, 0, NULL);
    if (missing[0])
        bench_row_skip(four, "not built:%s", missing);
    else
        e2e_row(o, &e, four, 1, 0, NULL);

    snprintf(cfg, sizeof cfg, "cbus-loadgen, %u thread(s), %u s, %u requests/s", o->e2e_threads,
             o->e2e_seconds, o->e2e_rate);
    struct row *pbus = bench_row_new(rows, n, "e2e-paced-bus", "end to end, paced: bus", cfg,
                                     ROW_RATE);
    struct row *pfour = bench_row_new(rows, n, "e2e-paced-4c", "end to end, paced: bus + 4 daemons",
                                      cfg, ROW_RATE);
    e2e_row(o, &e, pbus, 0, o->e2e_rate, NULL);
    if (missing[0])
        bench_row_skip(pfour, "not built:%s", missing);
    else
        e2e_row(o, &e, pfour, 1, o->e2e_rate, pbus);
}
