/* Rows 4: LTTng-UST.  The tracepoint runs in a helper program,
 * cbus-bench-compare-lttng (lttng_probe.c), so liblttng-ust stays out of the other
 * rows:
 *   no session  the tracepoint compiled in, nothing tracing it;
 *   session     a userspace session recording to a temp directory
 *               (lttng create --output, enable-event -u, add-context
 *               vpid/vtid, start), with 64 MiB per-CPU buffers, at 1 and
 *               2 threads (one per CPU, as cbus's two producer rows), and
 *               with LTTng's default channel.
 * A session daemon is used if one runs; otherwise one is started
 * (lttng-sessiond --daemonize --no-kernel) and stopped afterwards.  Where
 * LTTng cannot run (not built in, lttng-tools missing, no session daemon)
 * the rows are skipped with the reason. */
#include "bench.h"

#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef CBUS_BENCH_HAVE_LTTNG

/* `lttng --no-sessiond ARGS...`: never spawns a daemon behind our back. */
static int lttng(char *out, size_t cap, ...)
{
    char *argv[16] = {"lttng", "--no-sessiond"};
    int n = 2;
    va_list ap;
    va_start(ap, cap);
    for (char *a; n < 15 && (a = va_arg(ap, char *));)
        argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    return bench_run_cmd(argv, out, cap);
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

/* Runs the helper and fills the row from its "run" lines. */
static int run_helper(const struct bench_opts *o, struct row *r, uint64_t events, const char *expect,
                      int pause_ms, int threads)
{
    char path[512], ev[32], runs[16], pause[16], nth[8];
    snprintf(path, sizeof path, "%s/cbus-bench-compare-lttng", o->self_dir);
    snprintf(ev, sizeof ev, "%llu", (unsigned long long)events);
    snprintf(runs, sizeof runs, "%d", o->runs);
    snprintf(pause, sizeof pause, "%d", pause_ms);
    snprintf(nth, sizeof nth, "%d", threads);
    char *argv[] = {path, "--events", ev, "--runs", runs, "--expect", (char *)expect,
                    "--pause-ms", pause, "--threads", nth, NULL};
    static char out[1 << 16];
    int rc = bench_run_cmd(argv, out, sizeof out);
    if (rc) {
        char why[160];
        last_line(why, sizeof why, out);
        bench_row_skip(r, "%s exited %d: %s", path, rc, why);
        return -1;
    }
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n"))
        if (r->nruns < BENCH_MAX_RUNS && !bench_run_parse(line, &r->run[r->nruns]))
            r->nruns++;
    if (!r->nruns) {
        bench_row_skip(r, "%s reported no runs", path);
        return -1;
    }
    bench_aggregate(r);
    return 0;
}

static pid_t read_pidfile(void)
{
    char path[512];
    const char *home = getenv("HOME");
    if (geteuid() == 0)
        snprintf(path, sizeof path, "/var/run/lttng/lttng-sessiond.pid");
    else
        snprintf(path, sizeof path, "%s/.lttng/lttng-sessiond.pid", home ? home : "/");
    FILE *f = fopen(path, "r");
    long pid = 0;
    if (f) {
        if (fscanf(f, "%ld", &pid) != 1)
            pid = 0;
        fclose(f);
    }
    return (pid_t)pid;
}

/* 0 with *started = the pid of a daemon we started (0: one was running). */
static int ensure_sessiond(pid_t *started, char *why, size_t cap)
{
    static char out[4096];
    *started = 0;
    if (lttng(out, sizeof out, "list", (char *)NULL) == 0)
        return 0;
    if (!bench_in_path("lttng-sessiond")) {
        snprintf(why, cap, "no session daemon running and lttng-sessiond not in PATH");
        return -1;
    }
    char *argv[] = {"lttng-sessiond", "--daemonize", "--no-kernel", NULL};
    int rc = bench_run_cmd(argv, out, sizeof out);
    if (rc || lttng(out, sizeof out, "list", (char *)NULL) != 0) {
        char line[128];
        last_line(line, sizeof line, out);
        snprintf(why, cap, "cannot start lttng-sessiond --daemonize --no-kernel (exit %d): %s", rc,
                 line);
        return -1;
    }
    *started = read_pidfile();
    return 0;
}

static void stop_sessiond(pid_t pid)
{
    if (pid <= 0 || kill(pid, SIGTERM))
        return;
    for (int i = 0; i < 500 && kill(pid, 0) == 0; i++)
        usleep(10000);
}

static uint64_t tree_bytes;
static int add_size(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)p, (void)f;
    if (flag == FTW_F)
        tree_bytes += (uint64_t)st->st_size;
    return 0;
}
static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st, (void)flag, (void)f;
    remove(p);
    return 0;
}

/* "Warning: N events were discarded" from `lttng stop`. */
static uint64_t discarded(const char *out)
{
    const char *s = strstr(out, " events were discarded");
    if (!s)
        return 0;
    while (s > out && s[-1] >= '0' && s[-1] <= '9')
        s--;
    return strtoull(s, NULL, 10);
}

/* One recording session around one helper run.  big: a 64 MiB-per-CPU
 * channel (16 x 4 MiB sub-buffers) that holds a whole run, and a pause
 * between runs for the consumer daemon to write it out, so that what is
 * timed is recording, not discarding; else LTTng's default channel. */
static void session_row(const struct bench_opts *o, struct row *r, int big, int threads)
{
    if (!bench_in_path("lttng")) {
        bench_row_skip(r, "lttng-tools is not installed (apt-get install lttng-tools)");
        return;
    }
    char why[200];
    pid_t started;
    if (ensure_sessiond(&started, why, sizeof why)) {
        bench_row_skip(r, "%s", why);
        return;
    }
    char dir[] = "/tmp/cbus-compare-lttng.XXXXXX";
    if (!mkdtemp(dir)) {
        bench_row_skip(r, "mkdtemp: %s", strerror(errno));
        stop_sessiond(started);
        return;
    }
    char name[64], outopt[600];
    snprintf(name, sizeof name, "cbus-compare-%d", (int)getpid());
    snprintf(outopt, sizeof outopt, "--output=%s", dir);
    char *chan = big ? "big" : "channel0";
    static char out[8192];
    int rc;
    const char *step = "create";
    if (!(rc = lttng(out, sizeof out, "create", name, outopt, (char *)NULL))) {
        step = "enable-channel";
        if (big)
            rc = lttng(out, sizeof out, "enable-channel", "-u", "-s", name, "--subbuf-size=4M",
                       "--num-subbuf=16", chan, (char *)NULL);
        if (!rc) {
            step = "enable-event";
            rc = lttng(out, sizeof out, "enable-event", "-u", "-s", name, "-c", chan,
                       "cbus_bench:llm_end", (char *)NULL);
        }
        if (!rc) {
            step = "add-context";
            rc = lttng(out, sizeof out, "add-context", "-u", "-s", name, "-c", chan, "-t", "vpid",
                       "-t", "vtid", (char *)NULL);
        }
        if (!rc) {
            step = "start";
            rc = lttng(out, sizeof out, "start", name, (char *)NULL);
        }
        if (rc) {
            char line[128];
            last_line(line, sizeof line, out);
            bench_row_skip(r, "lttng %s failed (exit %d): %s", step, rc, line);
        } else if (!run_helper(o, r, o->slow_events, "enabled", big ? 1000 * threads : 0,
                               threads)) {
            lttng(out, sizeof out, "stop", name, (char *)NULL);
            uint64_t lost = discarded(out);
            tree_bytes = 0;
            nftw(dir, add_size, 16, FTW_PHYS);
            r->agg.lost = lost;
            uint64_t kept = r->agg.events > lost ? r->agg.events - lost : 0;
            snprintf(r->note, sizeof r->note,
                     "%s, discard mode: %llu of %llu events discarded (%.1f%%); "
                     "%.0f bytes/event on disk",
                     big ? "16 x 4 MiB sub-buffers" : "default channel",
                     (unsigned long long)lost, (unsigned long long)r->agg.events,
                     100.0 * (double)lost / (double)(r->agg.events ? r->agg.events : 1),
                     kept ? (double)tree_bytes / (double)kept : 0.0);
        }
        lttng(out, sizeof out, "destroy", name, (char *)NULL);
    } else {
        char line[128];
        last_line(line, sizeof line, out);
        bench_row_skip(r, "lttng create failed (exit %d): %s", rc, line);
    }
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    stop_sessiond(started);
}

void bench_rows_lttng(const struct bench_opts *o, struct row *rows, int *n)
{
    struct row *idle = bench_row_new(rows, n, "lttng-idle", "LTTng-UST tracepoint",
                                     "1 thread; no session (tracepoint disabled)", ROW_LATENCY);
    idle->chart = 1;
    if (!run_helper(o, idle, o->events, "disabled", 0, 1)) {
        snprintf(idle->note, sizeof idle->note, "records nothing: the price of the probe site");
        bench_progress(o, idle);
    }
    struct row *act = bench_row_new(rows, n, "lttng-session", "LTTng-UST tracepoint",
                                    "1 thread; session recording to a temp dir, 64 MiB buffers",
                                    ROW_LATENCY);
    act->chart = 1;
    session_row(o, act, 1, 1);
    bench_progress(o, act);
    struct row *two = bench_row_new(rows, n, "lttng-session-2t", "LTTng-UST tracepoint",
                                    "2 threads, one per CPU; session, 64 MiB buffers per CPU",
                                    ROW_LATENCY);
    session_row(o, two, 1, 2);
    bench_progress(o, two);
    struct row *def = bench_row_new(rows, n, "lttng-default", "LTTng-UST tracepoint",
                                    "1 thread; session recording to a temp dir, default channel",
                                    ROW_LATENCY);
    session_row(o, def, 0, 1);
    bench_progress(o, def);
}

#else

void bench_rows_lttng(const struct bench_opts *o, struct row *rows, int *n)
{
    (void)o;
    static const char why[] = "built without LTTng-UST: apt-get install liblttng-ust-dev "
                              "lttng-tools, then re-run cmake";
    bench_row_skip(bench_row_new(rows, n, "lttng-idle", "LTTng-UST tracepoint",
                                 "1 thread; no session (tracepoint disabled)", ROW_LATENCY),
                   "%s", why);
    bench_row_skip(bench_row_new(rows, n, "lttng-session", "LTTng-UST tracepoint",
                                 "1 thread; session recording to a temp dir, 64 MiB buffers",
                                 ROW_LATENCY),
                   "%s", why);
    bench_row_skip(bench_row_new(rows, n, "lttng-session-2t", "LTTng-UST tracepoint",
                                 "2 threads, one per CPU; session, 64 MiB buffers per CPU",
                                 ROW_LATENCY),
                   "%s", why);
    bench_row_skip(bench_row_new(rows, n, "lttng-default", "LTTng-UST tracepoint",
                                 "1 thread; session recording to a temp dir, default channel",
                                 ROW_LATENCY),
                   "%s", why);
}

#endif
