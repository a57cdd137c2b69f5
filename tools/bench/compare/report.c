/* cbus-bench-compare output: the terminal table, results.md, results.csv, the
 * latency-by-percentile chart as SVG (written here, no dependency) and, when
 * gnuplot is installed, as PNG through a gnuplot script left beside it. */
#include "bench.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define REF_ID "cbus-1p-1l"     /* the row ratios are taken against */
#define CBUS0_ID "cbus-1p-0c"

static const struct row *find(const struct row *rows, int n, const char *id)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(rows[i].id, id) && rows[i].kind != ROW_SKIPPED)
            return &rows[i];
    return NULL;
}

static void fmt_ns(char *b, size_t cap, double ns)
{
    if (ns >= 100000)
        snprintf(b, cap, "%.0f", ns);
    else if (ns >= 100)
        snprintf(b, cap, "%.0f", ns);
    else
        snprintf(b, cap, "%.1f", ns);
}

static void fmt_ratio(char *b, size_t cap, const struct row *r, const struct row *ref)
{
    if (!ref || r->kind != ROW_LATENCY || ref->agg.median <= 0)
        b[0] = '\0';
    else
        snprintf(b, cap, "%.2f", r->agg.median / ref->agg.median);
}

/* ---- terminal -------------------------------------------------------------------- */

static void print_table(FILE *f, const struct row *rows, int n)
{
    const struct row *ref = find(rows, n, REF_ID);
    fprintf(f, "\n%-18s %-28s %10s %10s %10s %10s %8s  %s\n", "row", "method", "median ns",
            "p99 ns", "p99.9 ns", "Mevents/s", "x cbus", "notes");
    for (int i = 0; i < n; i++) {
        const struct row *r = &rows[i];
        char a[32], b[32], c[32], x[32];
        if (r->kind == ROW_SKIPPED) {
            fprintf(f, "%-18s %-28s %10s %10s %10s %10s %8s  SKIPPED: %s\n", r->id, r->method, "-",
                    "-", "-", "-", "-", r->note);
            continue;
        }
        if (r->kind == ROW_RATE) {
            fprintf(f, "%-18s %-28s %10s %10s %10s %10.2f %8s  %s\n", r->id, r->method, "", "", "",
                    r->agg.mevents_s, "", r->note);
            continue;
        }
        fmt_ns(a, sizeof a, r->agg.median);
        fmt_ns(b, sizeof b, r->agg.p99);
        fmt_ns(c, sizeof c, r->agg.p999);
        fmt_ratio(x, sizeof x, r, ref);
        fprintf(f, "%-18s %-28s %10s %10s %10s %10.2f %8s  %s\n", r->id, r->method, a, b, c,
                r->agg.mevents_s, x, r->note);
    }
}

/* ---- targets ---------------------------------------------------------------------- */

struct target {
    const char *what;
    double value;
    int ok, known;
    char detail[160];
};

/* Issue 13's producer-scaling targets: two producer threads, no consumer, on
 * a bus of two lanes (the design the issue asks for: a lane per thread),
 * against one thread, and cbus against LTTng-UST recording at each thread
 * count.  cbus-2p-0c (both threads on one lane's tail) stays in the table
 * as the before. */
#define TWO_THREAD_ID "cbus-2p-0c-2lanes"
static int two_thread_targets(const struct row *rows, int n, struct target *t)
{
    const struct row *c1 = find(rows, n, "cbus-1p-0c"), *c2 = find(rows, n, TWO_THREAD_ID);
    const struct row *l1 = find(rows, n, "lttng-session"), *l2 = find(rows, n, "lttng-session-2t");
    int k = 0;
    t[k] = (struct target){.what = "2 producer threads on 2 lanes: each <= 1.25x the 1-thread ns per emit"};
    if (c1 && c2) {
        t[k].known = 1;
        t[k].value = c2->agg.median / c1->agg.median;
        t[k].ok = t[k].value <= 1.25;
        snprintf(t[k].detail, sizeof t[k].detail, "%.1f ns (%s) vs %.1f ns (%s): %.2fx",
                 c2->agg.median, c2->id, c1->agg.median, c1->id, t[k].value);
    }
    k++;
    t[k] = (struct target){.what = "2 producer threads on 2 lanes: >= 1.6x the 1-thread events/s in all"};
    if (c1 && c2) {
        t[k].known = 1;
        t[k].value = c2->agg.mevents_s / c1->agg.mevents_s;
        t[k].ok = t[k].value >= 1.6;
        snprintf(t[k].detail, sizeof t[k].detail, "%.2f (%s) vs %.2f (%s) Mevents/s: %.2fx",
                 c2->agg.mevents_s, c2->id, c1->agg.mevents_s, c1->id, t[k].value);
    }
    k++;
    const struct row *pair[2][2] = {{c1, l1}, {c2, l2}};
    static const char *const what[2] = {
        "cbus >= 10x cheaper per event than LTTng-UST recording, 1 thread",
        "cbus >= 10x cheaper per event than LTTng-UST recording, 2 threads"};
    for (int i = 0; i < 2; i++, k++) {
        t[k] = (struct target){.what = what[i]};
        if (pair[i][0] && pair[i][1]) {
            t[k].known = 1;
            t[k].value = pair[i][1]->agg.median / pair[i][0]->agg.median;
            t[k].ok = t[k].value >= 10;
            snprintf(t[k].detail, sizeof t[k].detail, "%.1f ns vs %.1f ns (%s): %.1fx",
                     pair[i][1]->agg.median, pair[i][0]->agg.median, pair[i][0]->id, t[k].value);
        }
    }
    return k;
}

static int targets(const struct row *rows, int n, struct target *t)
{
    const struct row *ref = find(rows, n, REF_ID), *c0 = find(rows, n, CBUS0_ID);
    const struct row *lt = find(rows, n, "lttng-session"), *sc = find(rows, n, "sidecar");
    const struct row *fl = find(rows, n, "floor");
    const struct row *e1 = find(rows, n, "e2e-bus"), *e4 = find(rows, n, "e2e-4c");
    const struct row *p1 = find(rows, n, "e2e-paced-bus"), *p4 = find(rows, n, "e2e-paced-4c");
    int k = 0;
    /* Each emit target twice: against the emit alone (no consumer: what the
     * call costs) and against the emit with one lossy consumer tailing the
     * ring (what it costs while a consumer pulls the cache lines away). */
    const struct row *cb[2] = {c0, ref};
    static const char *const cbname[2] = {"alone", "with a consumer"};
    for (int i = 0; i < 2; i++) {
        static char what[3][2][96];
        snprintf(what[0][i], sizeof what[0][i],
                 "cbus emit (%s) >= 5x faster than LTTng-UST with a session", cbname[i]);
        t[k] = (struct target){.what = what[0][i]};
        if (cb[i] && lt) {
            t[k].known = 1;
            t[k].value = lt->agg.median / cb[i]->agg.median;
            t[k].ok = t[k].value >= 5;
            snprintf(t[k].detail, sizeof t[k].detail, "%.1f ns vs %.1f ns (%s): %.1fx",
                     lt->agg.median, cb[i]->agg.median, cb[i]->id, t[k].value);
        }
        k++;
        snprintf(what[1][i], sizeof what[1][i],
                 "cbus emit (%s) >= 20x faster than the socket sidecar", cbname[i]);
        t[k] = (struct target){.what = what[1][i]};
        if (cb[i] && sc) {
            t[k].known = 1;
            t[k].value = sc->agg.median / cb[i]->agg.median;
            t[k].ok = t[k].value >= 20;
            snprintf(t[k].detail, sizeof t[k].detail, "%.0f ns vs %.1f ns (%s): %.1fx",
                     sc->agg.median, cb[i]->agg.median, cb[i]->id, t[k].value);
        }
        k++;
        snprintf(what[2][i], sizeof what[2][i], "cbus emit (%s) within 3x of the copy floor",
                 cbname[i]);
        t[k] = (struct target){.what = what[2][i]};
        if (cb[i] && fl) {
            t[k].known = 1;
            t[k].value = cb[i]->agg.median / fl->agg.median;
            t[k].ok = t[k].value <= 3;
            snprintf(t[k].detail, sizeof t[k].detail, "%.1f ns (%s) vs %.1f ns: %.2fx",
                     cb[i]->agg.median, cb[i]->id, fl->agg.median, t[k].value);
        }
        k++;
    }
    t[k] = (struct target){.what = "load generator rate drops < 5% with four consumers attached"};
    if (e1 && e4) {
        t[k].known = 1;
        t[k].value = 100.0 * (1.0 - e4->agg.mevents_s / e1->agg.mevents_s);
        t[k].ok = t[k].value < 5;
        snprintf(t[k].detail, sizeof t[k].detail, "%.3f vs %.3f Mevents/s: %.1f%% drop",
                 e4->agg.mevents_s, e1->agg.mevents_s, t[k].value);
    }
    k++;
    t[k] = (struct target){.what = "the same, paced load (--e2e-rate requests/s)"};
    if (p1 && p4) {
        t[k].known = 1;
        t[k].value = 100.0 * (1.0 - p4->agg.mevents_s / p1->agg.mevents_s);
        t[k].ok = t[k].value < 5;
        snprintf(t[k].detail, sizeof t[k].detail, "%.4f vs %.4f Mevents/s: %.1f%% drop",
                 p4->agg.mevents_s, p1->agg.mevents_s, t[k].value);
    }
    k++;
    k += two_thread_targets(rows, n, t + k);
    return k;
}

static void print_targets(FILE *f, const struct row *rows, int n, int md)
{
    struct target t[16];
    int k = targets(rows, n, t);
    if (md)
        fprintf(f, "| target | result | measured |\n|---|---|---|\n");
    else
        fprintf(f, "\ntargets:\n");
    for (int i = 0; i < k; i++) {
        const char *res = !t[i].known ? "not measured" : t[i].ok ? "met" : "MISSED";
        if (md)
            fprintf(f, "| %s | %s | %s |\n", t[i].what, res, t[i].known ? t[i].detail : "row skipped");
        else
            fprintf(f, "  %-64s %-12s %s\n", t[i].what, res, t[i].known ? t[i].detail : "");
    }
}

/* ---- files ------------------------------------------------------------------------ */

static FILE *open_out(const char *dir, const char *name, char *path, size_t cap)
{
    snprintf(path, cap, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f)
        fprintf(stderr, "cbus-bench-compare: %s: %s\n", path, strerror(errno));
    return f;
}

/* A CSV field in double quotes (RFC 4180: a quote inside is doubled): the
 * configurations and notes hold commas. */
static void csv_quoted(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"')
            fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

static void write_csv(const char *dir, const struct row *rows, int n)
{
    char path[1024];
    FILE *f = open_out(dir, "results.csv", path, sizeof path);
    if (!f)
        return;
    const struct row *ref = find(rows, n, REF_ID);
    fprintf(f, "row,method,config,status,runs,median_ns,p99_ns,p999_ns,mevents_per_s,"
               "ratio_to_cbus,events,dropped,lost,note\n");
    for (int i = 0; i < n; i++) {
        const struct row *r = &rows[i];
        char x[32];
        fmt_ratio(x, sizeof x, r, ref);
        fprintf(f, "%s,", r->id);
        csv_quoted(f, r->method);
        fputc(',', f);
        csv_quoted(f, r->config);
        if (r->kind == ROW_SKIPPED)
            fprintf(f, ",skipped,0,,,,,,,,,");
        else if (r->kind == ROW_RATE)
            fprintf(f, ",rate,%d,,,,%.4f,,%llu,%llu,%llu,", r->nruns, r->agg.mevents_s,
                    (unsigned long long)r->agg.events, (unsigned long long)r->agg.dropped,
                    (unsigned long long)r->agg.lost);
        else
            fprintf(f, ",ok,%d,%.2f,%.2f,%.2f,%.4f,%s,%llu,%llu,%llu,", r->nruns, r->agg.median,
                    r->agg.p99, r->agg.p999, r->agg.mevents_s, x,
                    (unsigned long long)r->agg.events, (unsigned long long)r->agg.dropped,
                    (unsigned long long)r->agg.lost);
        csv_quoted(f, r->note);
        fputc('\n', f);
    }
    fclose(f);
    fprintf(stderr, "wrote %s\n", path);
}

static void write_md(const char *dir, const struct bench_opts *o, const struct bench_env *env,
                     const struct row *rows, int n, int have_png)
{
    char path[1024];
    FILE *f = open_out(dir, "results.md", path, sizeof path);
    if (!f)
        return;
    const struct row *ref = find(rows, n, REF_ID);
    fprintf(f, "<!-- written by cbus-bench-compare; do not edit -->\n");
    fprintf(f, "Measured %s to %s UTC on %s, %d CPUs.  Load average %s at the start, %s at the "
               "end; other processes used %.0f%% of the machine's CPU time during the run.\n\n",
            env->started, env->ended, env->cpu_model, env->ncpus, env->load_start, env->load_end,
            100.0 * env->busy_others);
    fprintf(f, "Command: `%s`  \n%d runs per row; %llu events per run (%llu for the callback, "
               "sidecar, LTTng-session and 4-sleeping-consumer rows).  ns per event, timed over batches of %d; "
               "median, p99 and p99.9 are medians over the runs.  \"x cbus\" is the row's "
               "median divided by the median of row `%s` (above 1: slower than cbus).\n\n",
            env->command, o->runs, (unsigned long long)o->events,
            (unsigned long long)o->slow_events, BENCH_BATCH, REF_ID);
    fprintf(f, "| row | method | configuration | median ns | p99 ns | p99.9 ns | Mevents/s | x cbus | notes |\n");
    fprintf(f, "|---|---|---|---:|---:|---:|---:|---:|---|\n");
    for (int i = 0; i < n; i++) {
        const struct row *r = &rows[i];
        char a[32], b[32], c[32], x[32];
        if (r->kind == ROW_SKIPPED) {
            fprintf(f, "| %s | %s | %s | - | - | - | - | - | skipped: %s |\n", r->id, r->method,
                    r->config, r->note);
            continue;
        }
        if (r->kind == ROW_RATE) {
            fprintf(f, "| %s | %s | %s | | | | %.3f | | %s |\n", r->id, r->method, r->config,
                    r->agg.mevents_s, r->note);
            continue;
        }
        fmt_ns(a, sizeof a, r->agg.median);
        fmt_ns(b, sizeof b, r->agg.p99);
        fmt_ns(c, sizeof c, r->agg.p999);
        fmt_ratio(x, sizeof x, r, ref);
        fprintf(f, "| %s | %s | %s | %s | %s | %s | %.2f | %s | %s |\n", r->id, r->method,
                r->config, a, b, c, r->agg.mevents_s, x, r->note);
    }
    fprintf(f, "\n");
    print_targets(f, rows, n, 1);
    fprintf(f, "\n![latency by percentile](%s)\n", have_png ? "latency.png" : "latency.svg");
    fclose(f);
    fprintf(stderr, "wrote %s\n", path);
}

/* ---- the chart ---------------------------------------------------------------------- */

static const char *const palette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                      "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
                                      "#000000", "#aec7e8"};
#define NPAL (sizeof palette / sizeof palette[0])

static void fmt_human(char *b, size_t cap, double ns)
{
    if (ns >= 1e6)
        snprintf(b, cap, "%.2f ms", ns / 1e6);
    else if (ns >= 1e3)
        snprintf(b, cap, "%.1f µs", ns / 1e3);
    else
        snprintf(b, cap, "%.1f ns", ns);
}

static double nines_x(int i)
{
    return BENCH_NINES * i / (BENCH_NQ - 1);
}

static void write_dat(const char *dir, const struct row *rows, int n)
{
    char path[1024];
    FILE *f = open_out(dir, "latency.dat", path, sizeof path);
    if (!f)
        return;
    fprintf(f, "nines percentile");
    for (int i = 0; i < n; i++)
        if (rows[i].chart && rows[i].kind == ROW_LATENCY)
            fprintf(f, " %s", rows[i].id);
    fprintf(f, "\n");
    for (int q = 0; q < BENCH_NQ; q++) {
        fprintf(f, "%.4f %.4f", nines_x(q), 100.0 * bench_nines_p(q));
        for (int i = 0; i < n; i++)
            if (rows[i].chart && rows[i].kind == ROW_LATENCY)
                fprintf(f, " %.2f", rows[i].agg.q[q] > 0.1 ? rows[i].agg.q[q] : 0.1);
        fprintf(f, "\n");
    }
    fclose(f);
}

static void write_svg(const char *dir, const struct row *rows, int n)
{
    char path[1024];
    FILE *f = open_out(dir, "latency.svg", path, sizeof path);
    if (!f)
        return;
    const double W = 960, H = 580, L = 80, R = 300, T = 50, B = 60;
    double lo = 1e300, hi = 0;
    for (int i = 0; i < n; i++)
        if (rows[i].chart && rows[i].kind == ROW_LATENCY)
            for (int q = 0; q < BENCH_NQ; q++) {
                double v = rows[i].agg.q[q] > 0.1 ? rows[i].agg.q[q] : 0.1;
                lo = v < lo ? v : lo;
                hi = v > hi ? v : hi;
            }
    if (hi <= 0)
        lo = 1, hi = 10;
    double d0 = floor(log10(lo)), d1 = ceil(log10(hi));
    if (d1 <= d0)
        d1 = d0 + 1;
    double pw = W - L - R, ph = H - T - B;
#define XP(x) (L + (x) / BENCH_NINES * pw)
#define YP(v) (T + ph - (log10(v) - d0) / (d1 - d0) * ph)
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
               "viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\" font-size=\"12\">\n",
            W, H, W, H);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    fprintf(f, "<text x=\"%.0f\" y=\"28\" font-size=\"16\" font-weight=\"bold\">ns per event "
               "by percentile (batches of %d, llm_end payload, median run)</text>\n", L, BENCH_BATCH);
    /* grid: decades and their 2x/5x, percentiles */
    static const char *const units[] = {"1 ns", "10 ns", "100 ns", "1 µs", "10 µs", "100 µs",
                                        "1 ms", "10 ms", "100 ms", "1 s"};
    for (double d = d0; d <= d1; d++) {
        for (int m = 1; m <= 5; m += (m == 1 ? 1 : 3)) {
            double v = m * pow(10, d);
            if (log10(v) > d1 + 1e-9)
                break;
            fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"%s\"/>\n",
                    L, L + pw, YP(v), YP(v), m == 1 ? "#bbb" : "#eee");
            int di = (int)d;
            if (m == 1 && di >= 0 && di < 10)
                fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n", L - 6,
                        YP(v) + 4, units[di]);
            else if (m != 1)
                fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" fill=\"#999\" "
                           "font-size=\"10\">%d</text>\n", L - 6, YP(v) + 3, m);
        }
    }
    static const struct { double x; const char *label; } xt[] = {
        {0, "p0"}, {0.30103, "p50"}, {1, "p90"}, {2, "p99"}, {3, "p99.9"}};
    for (size_t i = 0; i < sizeof xt / sizeof xt[0]; i++) {
        fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#ccc\"/>\n",
                XP(xt[i].x), XP(xt[i].x), T, T + ph);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", XP(xt[i].x),
                T + ph + 18, xt[i].label);
    }
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">percentile of 32-event "
               "batches</text>\n", L + pw / 2, H - 14);
    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
               "stroke=\"#444\"/>\n", L, T, pw, ph);
    int c = 0;
    for (int i = 0; i < n; i++) {
        const struct row *r = &rows[i];
        if (!r->chart || r->kind != ROW_LATENCY)
            continue;
        const char *col = palette[c % NPAL];
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", col);
        for (int q = 0; q < BENCH_NQ; q++)
            fprintf(f, "%.1f,%.1f ", XP(nines_x(q)), YP(r->agg.q[q] > 0.1 ? r->agg.q[q] : 0.1));
        fprintf(f, "\"/>\n");
        double ly = T + 10 + 34.0 * c;
        fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                   "stroke-width=\"3\"/>\n", L + pw + 14, L + pw + 40, ly, ly, col);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\">%s</text>\n", L + pw + 46, ly + 4, r->id);
        char m[32], t[32];
        fmt_human(m, sizeof m, r->agg.median);
        fmt_human(t, sizeof t, r->agg.p999);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" fill=\"#666\" font-size=\"10\">median %s, "
                   "p99.9 %s</text>\n", L + pw + 46, ly + 17, m, t);
        c++;
    }
#undef XP
#undef YP
    fprintf(f, "</svg>\n");
    fclose(f);
    fprintf(stderr, "wrote %s\n", path);
}

/* Returns 1 when latency.png was drawn. */
static int write_gnuplot(const char *dir, const struct row *rows, int n)
{
    char path[1024];
    FILE *f = open_out(dir, "latency.gp", path, sizeof path);
    if (!f)
        return 0;
    int cols = 0;
    for (int i = 0; i < n; i++)
        if (rows[i].chart && rows[i].kind == ROW_LATENCY)
            cols++;
    fprintf(f, "# written by cbus-bench-compare: gnuplot latency.gp (in this directory) -> latency.png\n"
               "set terminal pngcairo size 1100,640 font 'sans,10' noenhanced\n"
               "set output 'latency.png'\n"
               "set title 'ns per event by percentile (batches of %d, llm_end payload, median run)'\n"
               "set logscale y\nset format y '%%g'\nset grid ytics mytics xtics\n"
               "set ylabel 'ns per event'\nset xlabel 'percentile of 32-event batches'\n"
               "set xtics ('p0' 0, 'p50' 0.30103, 'p90' 1, 'p99' 2, 'p99.9' 3)\n"
               "set xrange [0:3]\nset key outside right top\n",
            BENCH_BATCH);
    /* the SVG's colours, so the two charts match (gnuplot repeats after 8) */
    for (size_t i = 0; i < NPAL; i++)
        fprintf(f, "set linetype %zu lc rgb '%s'\n", i + 1, palette[i]);
    fprintf(f, "plot for [i=3:%d] 'latency.dat' using 1:i with lines lw 2 title columnheader(i)\n",
            cols + 2);
    fclose(f);
    if (!bench_in_path("gnuplot")) {
        fprintf(stderr, "cbus-bench-compare: gnuplot not installed: no latency.png (latency.svg is "
                        "written regardless; apt-get install gnuplot-nox for the PNG)\n");
        return 0;
    }
    char cwd[1024];
    if (!getcwd(cwd, sizeof cwd) || chdir(dir))
        return 0;
    char out[2048];
    char *argv[] = {"gnuplot", "latency.gp", NULL};
    int rc = bench_run_cmd(argv, out, sizeof out);
    if (chdir(cwd))
        return 0;
    if (rc) {
        fprintf(stderr, "cbus-bench-compare: gnuplot failed (exit %d): %s\n", rc, out);
        return 0;
    }
    fprintf(stderr, "wrote %s/latency.png\n", dir);
    return 1;
}

void bench_report(const struct bench_opts *o, const struct bench_env *env, struct row *rows, int n)
{
    printf("cbus-bench-compare: %d runs per row, %llu events per run (%llu for the slow rows); "
           "ns per event over batches of %d\n", o->runs, (unsigned long long)o->events,
           (unsigned long long)o->slow_events, BENCH_BATCH);
    printf("load average %s at start, %s at end; other processes used %.0f%% of the CPU time\n",
           env->load_start, env->load_end, 100.0 * env->busy_others);
    print_table(stdout, rows, n);
    print_targets(stdout, rows, n, 0);
    fflush(stdout);
    if (!o->out_dir)
        return;
    if (mkdir(o->out_dir, 0755) && errno != EEXIST) {
        fprintf(stderr, "cbus-bench-compare: %s: %s\n", o->out_dir, strerror(errno));
        return;
    }
    write_csv(o->out_dir, rows, n);
    write_dat(o->out_dir, rows, n);
    write_svg(o->out_dir, rows, n);
    int png = write_gnuplot(o->out_dir, rows, n);
    write_md(o->out_dir, o, env, rows, n, png);
}
