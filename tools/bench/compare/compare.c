/* cbus-bench-compare: cbus against what users would use instead, side by side, in
 * one run, on the same llm_end-sized payload.
 *
 *   cbus-bench-compare [--out DIR] [--runs N] [--events N] [--slow-events N]
 *                [--only LIST] [--e2e-seconds S] [--e2e-runs N] [--e2e-threads N]
 *                [--e2e-rate REQ_PER_S] [--quiet]
 *
 * Rows (each can be picked with --only, comma-separated):
 *   cbus       cbus emit, 1 and 2 producer threads x 0/1/4 consumers, lossy
 *              and lossless; the drain rate of one consumer
 *   callbacks  in-process handlers in the emitting thread (LangChain's pattern)
 *   sidecar    msgpack-c over a Unix stream socket to a decoding process
 *   lttng      LTTng-UST tracepoint, no session and a recording session
 *   floor      a plain copy of the event into a ring-sized buffer
 *   e2e        cbus-loadgen's event rate with the bus alone and with the four
 *              consumer daemons attached
 * Prints one table with ratios to cbus; with --out, writes results.md,
 * results.csv, latency.dat, latency.svg, latency.gp and (gnuplot) latency.png.
 * Exit 0, 2 (usage). */
#include "bench.h"

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static void usage(void)
{
    fprintf(stderr,
            "usage: cbus-bench-compare [--out DIR] [--runs N] [--events N] [--slow-events N]\n"
            "                    [--only cbus,callbacks,sidecar,lttng,floor,e2e]\n"
            "                    [--e2e-seconds S] [--e2e-runs N] [--e2e-threads N]\n"
            "                    [--e2e-rate REQ_PER_S] [--quiet]\n");
}

static int wanted(const struct bench_opts *o, const char *name)
{
    if (!o->only)
        return 1;
    size_t n = strlen(name);
    for (const char *p = o->only; *p;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && !strncmp(p, name, n))
            return 1;
        p += len + (e != NULL);
    }
    return 0;
}

static void utc_now(char *b, size_t cap)
{
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(b, cap, "%Y-%m-%d %H:%M", &tm);
}

static void loadavg(char *b, size_t cap)
{
    FILE *f = fopen("/proc/loadavg", "r");
    double a = 0, c = 0, d = 0;
    if (f) {
        if (fscanf(f, "%lf %lf %lf", &a, &c, &d) != 3)
            a = c = d = 0;
        fclose(f);
    }
    snprintf(b, cap, "%.2f/%.2f/%.2f", a, c, d);
}

/* Busy and total jiffies of the whole machine (/proc/stat). */
static void cpu_jiffies(double *busy, double *total)
{
    unsigned long long v[10] = {0};
    FILE *f = fopen("/proc/stat", "r");
    if (f) {
        if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7]) != 8)
            memset(v, 0, sizeof v);
        fclose(f);
    }
    *total = 0;
    for (int i = 0; i < 8; i++)
        *total += (double)v[i];
    *busy = *total - (double)v[3] - (double)v[4];
}

static double own_cpu_s(void)
{
    struct rusage s, c;
    getrusage(RUSAGE_SELF, &s);
    getrusage(RUSAGE_CHILDREN, &c);
    return (double)(s.ru_utime.tv_sec + s.ru_stime.tv_sec + c.ru_utime.tv_sec + c.ru_stime.tv_sec) +
           (double)(s.ru_utime.tv_usec + s.ru_stime.tv_usec + c.ru_utime.tv_usec +
                    c.ru_stime.tv_usec) / 1e6;
}

static void cpu_model(char *b, size_t cap)
{
    snprintf(b, cap, "unknown CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return;
    char line[256];
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "model name", 10)) {
            char *p = strchr(line, ':');
            if (p) {
                p += 2;
                p[strcspn(p, "\n")] = '\0';
                snprintf(b, cap, "%s", p);
            }
            break;
        }
    fclose(f);
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *e;
    errno = 0;
    unsigned long long v = strtoull(s, &e, 10);
    if (errno || e == s || *e || s[0] == '-')
        return -EINVAL;
    *out = v;
    return 0;
}

int main(int argc, char **argv)
{
    struct bench_opts o = {.runs = 5, .events = 1000000, .slow_events = 200000, .e2e_runs = 3,
                           .e2e_seconds = 5, .e2e_threads = 1, .e2e_rate = 500};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t x;
        if (!strcmp(a, "--quiet")) {
            o.quiet = 1;
            continue;
        }
        if (!v) {
            usage();
            return 2;
        }
        i++;
        if (!strcmp(a, "--out"))
            o.out_dir = v;
        else if (!strcmp(a, "--only"))
            o.only = v;
        else if (!strcmp(a, "--runs") && !parse_u64(v, &x) && x >= 1 && x <= BENCH_MAX_RUNS)
            o.runs = (int)x;
        else if (!strcmp(a, "--events") && !parse_u64(v, &x) && x >= 1000 && x <= 100000000)
            o.events = x;
        else if (!strcmp(a, "--slow-events") && !parse_u64(v, &x) && x >= 1000 && x <= 100000000)
            o.slow_events = x;
        else if (!strcmp(a, "--e2e-seconds") && !parse_u64(v, &x) && x >= 1 && x <= 600)
            o.e2e_seconds = (unsigned)x;
        else if (!strcmp(a, "--e2e-runs") && !parse_u64(v, &x) && x >= 1 && x <= BENCH_MAX_RUNS)
            o.e2e_runs = (int)x;
        else if (!strcmp(a, "--e2e-threads") && !parse_u64(v, &x) && x >= 1 && x <= 64)
            o.e2e_threads = (unsigned)x;
        else if (!strcmp(a, "--e2e-rate") && !parse_u64(v, &x) && x >= 1 && x <= 1000000)
            o.e2e_rate = (unsigned)x;
        else {
            fprintf(stderr, "cbus-bench-compare: bad option %s %s (--runs 1..%d, --events and "
                            "--slow-events 1000..1e8, --e2e-seconds 1..600, --e2e-runs 1..%d, "
                            "--e2e-threads 1..64, --e2e-rate 1..1e6)\n",
                    a, v, BENCH_MAX_RUNS, BENCH_MAX_RUNS);
            usage();
            return 2;
        }
    }
    static char self[PATH_MAX];
    ssize_t k = readlink("/proc/self/exe", self, sizeof self - 1);
    if (k <= 0) {
        fprintf(stderr, "cbus-bench-compare: readlink /proc/self/exe: %s\n", strerror(errno));
        return 1;
    }
    self[k] = '\0';
    o.self_dir = dirname(self);

    struct bench_env env = {.ncpus = bench_ncpus()};
    size_t len = 0;
    for (int i = 0; i < argc && len < sizeof env.command - 1; i++)
        len += (size_t)snprintf(env.command + len, sizeof env.command - len, "%s%s", i ? " " : "",
                                argv[i]);
    utc_now(env.started, sizeof env.started);
    loadavg(env.load_start, sizeof env.load_start);
    cpu_model(env.cpu_model, sizeof env.cpu_model);
    double busy0, total0, busy1, total1;
    cpu_jiffies(&busy0, &total0);
    double own0 = own_cpu_s();

    static struct row rows[BENCH_MAX_ROWS];
    int n = 0;
    fprintf(stderr, "cbus-bench-compare: %d runs per row, %llu events per run (%llu slow rows)\n",
            o.runs, (unsigned long long)o.events, (unsigned long long)o.slow_events);
    if (wanted(&o, "cbus"))
        bench_rows_cbus(&o, rows, &n);
    if (wanted(&o, "callbacks"))
        bench_rows_callbacks(&o, rows, &n);
    if (wanted(&o, "sidecar"))
        bench_rows_sidecar(&o, rows, &n);
    if (wanted(&o, "lttng"))
        bench_rows_lttng(&o, rows, &n);
    if (wanted(&o, "floor"))
        bench_rows_floor(&o, rows, &n);
    if (wanted(&o, "e2e"))
        bench_rows_e2e(&o, rows, &n);

    cpu_jiffies(&busy1, &total1);
    double hz = (double)sysconf(_SC_CLK_TCK);
    double others = (busy1 - busy0) / hz - (own_cpu_s() - own0);
    double all = (total1 - total0) / hz;
    env.busy_others = all > 0 && others > 0 ? others / all : 0;
    utc_now(env.ended, sizeof env.ended);
    loadavg(env.load_end, sizeof env.load_end);
    bench_report(&o, &env, rows, n);
    return 0;
}
