/* cbus-bench-compare: statistics, placement, payload and child-process helpers
 * shared by every row. */
#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <sched.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

int bench_ncpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (int)n;
}

void bench_pin(int cpu)
{
    int n = bench_ncpus();
    if (n < 2)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu % n, &set);
    sched_setaffinity(0, sizeof set, &set);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double bench_quantile(const double *sorted, size_t n, double p)
{
    if (!n)
        return 0;
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return sorted[i < n ? i : n - 1];
}

double bench_nines_p(int i)
{
    double x = BENCH_NINES * i / (BENCH_NQ - 1);
    return 1.0 - pow(10.0, -x);
}

void bench_summarize(double *v, size_t n, struct run_stats *out)
{
    qsort(v, n, sizeof *v, cmp_double);
    out->median = bench_quantile(v, n, 0.5);
    out->p99 = bench_quantile(v, n, 0.99);
    out->p999 = bench_quantile(v, n, 0.999);
    for (int i = 0; i < BENCH_NQ; i++)
        out->q[i] = bench_quantile(v, n, bench_nines_p(i));
}

static double median_of(struct row *r, size_t off)
{
    double v[BENCH_MAX_RUNS];
    for (int i = 0; i < r->nruns; i++)
        v[i] = *(const double *)((const char *)&r->run[i] + off);
    qsort(v, (size_t)r->nruns, sizeof v[0], cmp_double);
    return v[r->nruns / 2];
}

void bench_aggregate(struct row *r)
{
    if (r->nruns < 1)
        return;
    int mid = 0;
    double m = median_of(r, offsetof(struct run_stats, median));
    for (int i = 0; i < r->nruns; i++)
        if (r->run[i].median == m)
            mid = i;
    r->agg = r->run[mid];
    r->agg.median = m;
    r->agg.p99 = median_of(r, offsetof(struct run_stats, p99));
    r->agg.p999 = median_of(r, offsetof(struct run_stats, p999));
    r->agg.mevents_s = median_of(r, offsetof(struct run_stats, mevents_s));
    r->agg.cpu_ns = median_of(r, offsetof(struct run_stats, cpu_ns));
    r->agg.side_cpu = median_of(r, offsetof(struct run_stats, side_cpu));
    /* drops and losses: the total over runs, they are rare events */
    r->agg.dropped = r->agg.lost = r->agg.events = 0;
    for (int i = 0; i < r->nruns; i++) {
        r->agg.dropped += r->run[i].dropped;
        r->agg.lost += r->run[i].lost;
        r->agg.events += r->run[i].events;
    }
}

/* ---- the payload ---------------------------------------------------------------- */

void bench_payload_init(struct bench_payload *pl)
{
    cbus_ctx_init(&pl->ctx);
    cbus_ctx_set_provider(&pl->ctx, "openai");
    cbus_ctx_set_model(&pl->ctx, "gpt-4o-2024-08-06");
    cbus_ctx_set_user(&pl->ctx, "user-000123");
    cbus_ctx_set_session(&pl->ctx, "session-8f2a41c7-7a0e-4d8e-9b1f-2c55e2a1d9b0");
    cbus_ctx_set_request_id(&pl->ctx, "req-5d1c9e7b3a2f");
    pl->usage = (struct cbus_usage){
        .input_tokens = 1200, .output_tokens = 350, .cache_read_tokens = 1024,
        .reasoning_tokens = 64,
        .usage_present = CBUS_USAGE_INPUT | CBUS_USAGE_OUTPUT | CBUS_USAGE_CACHE_READ |
                         CBUS_USAGE_REASONING | CBUS_USAGE_DURATION | CBUS_USAGE_TTFT,
        .finish_reason = CBUS_FINISH_STOP, .generations = 1,
        .duration_ns = 1500000000u, .ttft_ns = 200000000u};
    pl->output = "The answer is 42: the total of the invoice lines is $1,204.50 (EUR 1,110.20).";
}

void bench_payload_fill(const struct bench_payload *pl, struct cbus_event *ev, uint64_t seq)
{
    /* pid and tid cached as any logger does: getpid() is a real syscall
     * (glibc stopped caching it), about a microsecond on this VM. */
    static _Thread_local uint32_t tid, pid;
    if (!tid) {
        tid = (uint32_t)gettid();
        pid = (uint32_t)getpid();
    }
    struct timespec mono, real;
    clock_gettime(CLOCK_MONOTONIC, &mono);
    clock_gettime(CLOCK_REALTIME, &real);
    memcpy(ev, &pl->ctx.tmpl, sizeof *ev);
    ev->kind = CBUS_EV_LLM_END;
    ev->pid = pid;
    ev->tid = tid;
    ev->event_id = seq;
    ev->ts_mono_ns = (uint64_t)mono.tv_sec * 1000000000u + (uint64_t)mono.tv_nsec;
    ev->ts_realtime_ns = (uint64_t)real.tv_sec * 1000000000u + (uint64_t)real.tv_nsec;
    ev->u.usage = pl->usage;
    size_t n = strnlen(pl->output, sizeof ev->preview);
    if (n >= sizeof ev->preview) {
        n = sizeof ev->preview - 1;
        ev->flags |= CBUS_TRUNC_PREVIEW;
    }
    memcpy(ev->preview, pl->output, n);
    ev->preview[n] = '\0';
}

/* ---- rows ------------------------------------------------------------------------ */

struct row *bench_row_new(struct row *rows, int *n, const char *id, const char *method,
                          const char *config, enum row_kind kind)
{
    if (*n >= BENCH_MAX_ROWS) {
        fprintf(stderr, "cbus-bench-compare: too many rows\n");
        exit(1);
    }
    struct row *r = &rows[(*n)++];
    memset(r, 0, sizeof *r);
    snprintf(r->id, sizeof r->id, "%s", id);
    snprintf(r->method, sizeof r->method, "%s", method);
    snprintf(r->config, sizeof r->config, "%s", config);
    r->kind = kind;
    return r;
}

void bench_row_skip(struct row *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->note, sizeof r->note, fmt, ap);
    va_end(ap);
    r->kind = ROW_SKIPPED;
    r->chart = 0;
    fprintf(stderr, "  %-16s SKIPPED: %s\n", r->id, r->note);
}

void bench_progress(const struct bench_opts *o, const struct row *r)
{
    if (o->quiet || r->kind == ROW_SKIPPED)
        return;
    if (r->kind == ROW_RATE)
        fprintf(stderr, "  %-16s %10.2f Mevents/s   %s\n", r->id, r->agg.mevents_s, r->note);
    else
        fprintf(stderr, "  %-16s median %8.1f ns  p99 %8.1f  p99.9 %8.1f  %s\n", r->id,
                r->agg.median, r->agg.p99, r->agg.p999, r->note);
}

/* ---- child programs ------------------------------------------------------------ */

int bench_in_path(const char *prog)
{
    const char *path = getenv("PATH");
    if (!path)
        path = "/usr/bin:/bin";
    char buf[4096];
    for (const char *p = path; *p;) {
        const char *e = strchr(p, ':');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        snprintf(buf, sizeof buf, "%.*s/%s", (int)len, p, prog);
        if (len && access(buf, X_OK) == 0)
            return 1;
        p += len + (e != NULL);
    }
    return 0;
}

int bench_run_cmd(char *const argv[], char *out, size_t outcap)
{
    return bench_run_cmd_ru(argv, out, outcap, NULL);
}

int bench_run_cmd_ru(char *const argv[], char *out, size_t outcap, struct rusage *ru)
{
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC))
        return -errno;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pfd[1], 1);
    posix_spawn_file_actions_adddup2(&fa, pfd[1], 2);
    pid_t pid;
    int rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(pfd[1]);
    if (rc) {
        close(pfd[0]);
        return -rc;
    }
    size_t len = 0;
    char sink[4096];
    for (;;) {
        char *dst = out && len + 1 < outcap ? out + len : sink;
        size_t cap = out && len + 1 < outcap ? outcap - 1 - len : sizeof sink;
        ssize_t k = read(pfd[0], dst, cap);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        if (dst != sink)
            len += (size_t)k;
    }
    close(pfd[0]);
    if (out && outcap)
        out[len] = '\0';
    int st;
    struct rusage sink_ru;
    while (wait4(pid, &st, 0, ru ? ru : &sink_ru) < 0)
        if (errno != EINTR)
            return -errno;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int bench_spawn_logged(char *const argv[], const char *log)
{
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    pid_t pid;
    int rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    return rc ? -rc : (int)pid;
}

void bench_run_print(FILE *f, const struct run_stats *s)
{
    fprintf(f, "run %.3f %.3f %.3f %.6f %llu %llu %llu", s->median, s->p99, s->p999, s->mevents_s,
            (unsigned long long)s->dropped, (unsigned long long)s->lost,
            (unsigned long long)s->events);
    for (int i = 0; i < BENCH_NQ; i++)
        fprintf(f, " %.3f", s->q[i]);
    fputc('\n', f);
}

int bench_run_parse(const char *line, struct run_stats *s)
{
    if (strncmp(line, "run ", 4))
        return -EINVAL;
    char *p = (char *)line + 4, *e;
    double *d[] = {&s->median, &s->p99, &s->p999, &s->mevents_s};
    for (size_t i = 0; i < 4; i++) {
        *d[i] = strtod(p, &e);
        if (e == p)
            return -EINVAL;
        p = e;
    }
    uint64_t *u[] = {&s->dropped, &s->lost, &s->events};
    for (size_t i = 0; i < 3; i++) {
        *u[i] = strtoull(p, &e, 10);
        if (e == p)
            return -EINVAL;
        p = e;
    }
    for (int i = 0; i < BENCH_NQ; i++) {
        s->q[i] = strtod(p, &e);
        if (e == p)
            return -EINVAL;
        p = e;
    }
    return 0;
}
