/* cbus-bench-compare: shared pieces of the side-by-side benchmark.
 *
 * Every method is timed the same way: BENCH_BATCH events between two
 * clock_gettime calls (one call costs about as much as a cbus emit, so single
 * events cannot be timed honestly), the batch time divided by BENCH_BATCH is
 * one sample.  A run's samples give its median, p99 and p99.9; a row reports
 * the median of each over its runs.  Batch averaging smooths single-event
 * spikes: p99.9 here is "the 99.9th slowest stretch of 32 events", which is
 * what an emitting thread feels, not the slowest single call. */
#ifndef CBUS_BENCH_H
#define CBUS_BENCH_H

#include <cbus/layout.h>
#include <cbus/producer.h>

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#define BENCH_BATCH 32
#define BENCH_MAX_RUNS 64
/* Points of the latency-by-percentile curve: x = -log10(1 - p) from 0
 * (p = 0) to 3 (p = 0.999), evenly spaced on that "nines" axis. */
#define BENCH_NQ 61
#define BENCH_NINES 3.0

struct run_stats {
    double median, p99, p999;   /* ns per event */
    double mevents_s;           /* events / elapsed wall time, millions per second */
    uint64_t dropped;           /* producer-side drops (cbus lossless gate) */
    uint64_t lost;              /* consumer-side losses (lapped lossy consumers, LTTng discards) */
    uint64_t events;            /* events emitted in the run */
    double cpu_ns;              /* end to end: the load generator's CPU ns per emitted event */
    double side_cpu;            /* end to end: the daemons' CPU, in cores */
    double q[BENCH_NQ];         /* the curve */
};

enum row_kind {
    ROW_LATENCY,  /* ns per event */
    ROW_RATE,     /* a throughput only (drain, end to end) */
    ROW_SKIPPED,  /* could not run here: note says why */
};

struct row {
    char id[24];                /* short key for CSV and the chart legend */
    char method[40];
    char config[72];
    enum row_kind kind;
    int chart;                  /* draw its curve */
    int nruns;
    struct run_stats run[BENCH_MAX_RUNS];
    struct run_stats agg;       /* medians over runs; q of the median run */
    char note[200];
};

struct bench_opts {
    int runs;
    uint64_t events;            /* per run for the fast rows (cbus, floor, no-session LTTng) */
    uint64_t slow_events;       /* per run for rows that cost microseconds or fill disks:
                                 * callbacks, sidecar, LTTng session, 4 sleeping consumers */
    const char *out_dir;        /* NULL: print only */
    const char *self_dir;       /* directory of this executable (helpers live beside it) */
    const char *only;           /* comma-separated method filter, NULL = all */
    int quiet;
    int e2e_runs;               /* load generator runs per end-to-end row */
    unsigned e2e_seconds;       /* length of one load generator run */
    unsigned e2e_threads;       /* load generator worker threads */
    unsigned e2e_rate;          /* requests/s of the paced end-to-end rows */
};

/* ---- time, placement ---------------------------------------------------- */
static inline uint64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Pins the calling thread to cpu (mod the online count); a no-op on one CPU. */
void bench_pin(int cpu);
int bench_ncpus(void);

/* ---- statistics ---------------------------------------------------------- */
/* Sorts v (n per-event ns samples) and fills the latency fields and q[]. */
void bench_summarize(double *v, size_t n, struct run_stats *out);
/* Medians over the row's runs into row->agg (q from the run with the median median). */
void bench_aggregate(struct row *r);
/* Sorted-array quantile, p in [0, 1]. */
double bench_quantile(const double *sorted, size_t n, double p);
double bench_nines_p(int i);    /* p of curve point i */

/* ---- the payload: one llm_end, the same for every method ------------------- */
struct bench_payload {
    cbus_ctx ctx;               /* provider, model, user, session, request id, run/trace ids */
    struct cbus_usage usage;
    const char *output;         /* the preview text */
};
void bench_payload_init(struct bench_payload *pl);
/* What a non-cbus producer does to build the record: template copy,
 * timestamps (clock_gettime: what user code would call), usage, preview. */
void bench_payload_fill(const struct bench_payload *pl, struct cbus_event *ev, uint64_t seq);

/* ---- the rows ------------------------------------------------------------- */
/* Each appends its rows to rows[*n] (capacity BENCH_MAX_ROWS) and prints
 * progress to stderr. */
#define BENCH_MAX_ROWS 32
void bench_rows_cbus(const struct bench_opts *o, struct row *rows, int *n);
void bench_rows_callbacks(const struct bench_opts *o, struct row *rows, int *n);
void bench_rows_sidecar(const struct bench_opts *o, struct row *rows, int *n);
void bench_rows_lttng(const struct bench_opts *o, struct row *rows, int *n);
void bench_rows_floor(const struct bench_opts *o, struct row *rows, int *n);
void bench_rows_e2e(const struct bench_opts *o, struct row *rows, int *n);

struct row *bench_row_new(struct row *rows, int *n, const char *id, const char *method,
                          const char *config, enum row_kind kind);
void bench_row_skip(struct row *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void bench_progress(const struct bench_opts *o, const struct row *r);

/* ---- helpers for rows that drive other programs ----------------------------- */
/* Runs argv (no shell), stdout+stderr captured into out (NUL-terminated, may
 * be cut).  Returns the exit status, or -errno when it could not start. */
int bench_run_cmd(char *const argv[], char *out, size_t outcap);
struct rusage;
/* Same, and the child's resource usage into *ru. */
int bench_run_cmd_ru(char *const argv[], char *out, size_t outcap, struct rusage *ru);
/* Starts argv in the background, stdout+stderr appended to log.  Returns the
 * pid, or -errno. */
int bench_spawn_logged(char *const argv[], const char *log);
/* 1 when prog is an executable in PATH. */
int bench_in_path(const char *prog);
/* Serialises/parses a run_stats line (helpers report through stdout). */
void bench_run_print(FILE *f, const struct run_stats *s);
int bench_run_parse(const char *line, struct run_stats *s);

/* ---- output ---------------------------------------------------------------- */
struct bench_env {
    char started[32], ended[32];
    char load_start[64], load_end[64];
    char cpu_model[96];
    int ncpus;
    double busy_others;         /* CPU share used by other processes during the run, 0..1 */
    char command[256];
};
void bench_report(const struct bench_opts *o, const struct bench_env *env, struct row *rows, int n);

#endif
