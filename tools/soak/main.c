/* cbus-soak: a chaos soak of the bus and its consumer daemons.
 *
 * Producer threads (in this process) and producer processes emit events
 * carrying sequence proofs; verifying consumers (child processes, lossless
 * and lossy) and the daemons read them while a scheduler SIGKILLs and
 * restarts consumers, daemons and producer processes, SIGSTOPs consumers for
 * less or more than the bus's stall timeout, and makes the exporter's
 * collector fail or disappear.  At the end it drains, checks the invariants
 * (see docs/soak.md), prints the figures and exits 1 on any violation. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cbus/bus.h>
#include <cbus/consumer.h>

#include "units.h"
#include "held.h"
#include "orch.h"

struct soak_cfg G;
struct soak_shared *ST;

/* Held past bound + this on the CPU is an overrun (invariant 6): covers the
 * producer's own work the held meter may include (held.c), tens of us. */
#define HELD_SLACK_NS UINT64_C(500000)

/* The wait bound the bus is created with: the one the soak checks, unless a
 * test plants a longer one (--plant-gate-wait). */
static uint64_t bus_wait_bound(void)
{
    return G.plant_wait_ns ? G.plant_wait_ns : G.lossless_wait_ns;
}

static unsigned violations;
static struct child kids[SOAK_MAX_VER + 16];
static unsigned nkids;
static uint32_t n_instances(void)
{
    return atomic_load(&ST->next_instance);
}
/* Per bus incarnation (epoch): its final tail and its header's drop count,
 * read by the orchestrator while producers were parked. */
static uint64_t epoch_dropped[SOAK_MAX_EPOCH], prod_kills_epoch[SOAK_MAX_EPOCH];
static int cost_unprovable; /* a re-creation came before the cost daemon had caught up */
static char cost_unprovable_why[160];
static uint64_t rng_state;
static cbus_bus *BUS;
static volatile sig_atomic_t interrupted;

/* figures */
static uint64_t max_wait_seen, prod_kills_total, cost_untethered_seen, cost_untethered_epoch;
/* The longest a thread that asked to sleep 1 ms was kept off the CPU beyond
 * that: how late this machine runs a ready thread.  A producer's bounded
 * wait is a spin that can be preempted just as long. */
static _Atomic uint64_t sched_delay_max;
static _Atomic int sched_stop;

/* The machine's stalls, as the sampler saw them: the intervals in which it
 * was due after its 1 ms but not running.  An ordinary thread, on purpose:
 * what delays it (a hypervisor pause, a container's CPU quota throttling
 * every thread of its cgroup, interrupts) holds a producer in an emit just
 * as long, and /proc/stat's steal does not see all of it.  A producer spinning
 * in the library cannot keep it waiting that long: the scheduler runs a
 * woken sleeper on the other CPU, or preempts for it, within a tick or two.
 * Read only after the sampler is joined. */
#define STALLS_MAX 65536
static struct stall {
    uint64_t from_ns, to_ns;
} stalls[STALLS_MAX];
static unsigned n_stalls, stalls_missed;

static void *sched_sampler(void *arg)
{
    (void)arg;
    while (!atomic_load(&sched_stop)) {
        uint64_t t0 = soak_now_ns();
        soak_sleep_ns(1000000);
        uint64_t d = soak_now_ns() - t0;
        d = d > 1000000 ? d - 1000000 : 0;
        if (d > atomic_load(&sched_delay_max))
            atomic_store(&sched_delay_max, d);
        if (d > 1000000) { /* over 1 ms late: a stall worth keeping */
            if (n_stalls < STALLS_MAX)
                stalls[n_stalls++] = (struct stall){t0 + 1000000, t0 + 1000000 + d};
            else
                stalls_missed++;
        }
    }
    return NULL;
}

/* How much of [from, to] the machine stalled (stalls are in time order and
 * do not overlap: one thread records them one after another). */
static uint64_t stalled_within(uint64_t from, uint64_t to)
{
    uint64_t sum = 0;
    for (unsigned i = 0; i < n_stalls && stalls[i].from_ns < to; i++) {
        uint64_t lo = stalls[i].from_ns > from ? stalls[i].from_ns : from;
        uint64_t hi = stalls[i].to_ns < to ? stalls[i].to_ns : to;
        if (hi > lo)
            sum += hi - lo;
    }
    return sum;
}

void violation(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stdout, "VIOLATION: ");
    vfprintf(stdout, fmt, ap);
    fprintf(stdout, "\n");
    fflush(stdout);
    va_end(ap);
    violations++;
}

uint64_t rnd(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * UINT64_C(2685821657736338717);
}

uint64_t rnd_range(uint64_t lo, uint64_t hi)
{
    return hi <= lo ? lo : lo + rnd() % (hi - lo);
}

static void on_int(int sig)
{
    (void)sig;
    interrupted = 1;
}

/* ---- invariant 6: producers held on the CPU ------------------------------ */

/* Every emit slower than the bound on the wall clock was measured by its
 * producer with run-queue waits excluded (held.c).  (a) None may hold its
 * thread past bound + --wait-margin, less the larger of the host's steal +
 * irq in its window (/proc/stat) and the machine's stalls in it (the 1 ms
 * sleeper's).  (b) Their overruns past bound + slack, summed, may not exceed
 * what the host took from the VM's CPUs while the producers ran (steal,
 * interrupts, softirqs: the guest kernel counts that as the thread
 * running), plus a tick per counter for the rounding of /proc/stat: a
 * correct bounded spin overruns only by such time, a wait longer than the
 * bound does so on every wait (--plant-gate-wait).  The stalls (a) took
 * out of an emit beyond its host time come off the sum too (a planted 5 ms
 * wait is never one of those emits, so (b) keeps its power). */
static void check_held(uint64_t steal_ns, uint64_t irq_ns)
{
    const uint64_t host_ns = steal_ns + irq_ns;
    uint64_t slow = 0, unmeasured = 0, max_held = 0, max_wall = 0, overrun = 0;
    uint64_t max_before_stalls = 0, stalled_in_longest = 0, stalled_off = 0;
    for (unsigned p = 0; p < n_instances(); p++) {
        const struct soak_prod *sp = &ST->prod[p];
        slow += atomic_load(&sp->slow_emits);
        unmeasured += atomic_load(&sp->held_unmeasured);
        overrun += atomic_load(&sp->held_overrun_ns);
        uint64_t h = atomic_load(&sp->max_held_ns), w = atomic_load(&sp->max_emit_wall_ns);
        if (h > max_held)
            max_held = h;
        if (h > max_before_stalls)
            max_before_stalls = h;
        if (w > max_wall)
            max_wall = w;
        /* The emits held past bound + margin: take out the machine's
         * stalls where they are more than the host time already out. */
        uint32_t n = atomic_load_explicit(&sp->n_long, memory_order_acquire);
        for (uint32_t i = 0; i < n && i < SOAK_HELD_LONG_MAX; i++) {
            const uint64_t held = atomic_load(&sp->longs[i].held_ns);
            const uint64_t host = atomic_load(&sp->longs[i].host_ns);
            const uint64_t stalled = stalled_within(atomic_load(&sp->longs[i].start_ns),
                                                    atomic_load(&sp->longs[i].end_ns));
            const uint64_t out = stalled > host ? stalled : host;
            const uint64_t left = held > out ? held - out : 0;
            /* (b) allows for the host time already; the stall beyond it
             * comes off this emit's part of the summed overrun. */
            const uint64_t part = held > G.lossless_wait_ns + HELD_SLACK_NS
                                      ? held - G.lossless_wait_ns - HELD_SLACK_NS : 0;
            const uint64_t beyond = stalled > host ? stalled - host : 0;
            stalled_off += beyond < part ? beyond : part;
            if (held - (held > host ? host : held) > max_before_stalls) {
                max_before_stalls = held - (held > host ? host : held);
                stalled_in_longest = stalled;
            }
            if (left > max_held)
                max_held = left;
        }
    }
    overrun = overrun > stalled_off ? overrun - stalled_off : 0;
    const uint64_t allowance = host_ns + 3 * held_host_tick_ns();
    printf("  producers held: %" PRIu64 " emits over the %.3f ms bound on the wall clock (longest %.3f "
           "ms); held at most %.3f ms with run-queue waits and the host's steal + irq or the "
           "machine's stalls in its window excluded (bound + margin %.3f ms); "
           "overrun past bound + %.1f ms %.3f ms in all (%.3f ms of stalls off); the host took %.0f ms steal + %.0f ms irq "
           "(+%.0f ms rounding)%s\n", slow, G.lossless_wait_ns / 1e6, max_wall / 1e6, max_held / 1e6,
           (G.lossless_wait_ns + G.wait_margin_ns) / 1e6, HELD_SLACK_NS / 1e6, overrun / 1e6,
           stalled_off / 1e6, steal_ns / 1e6, irq_ns / 1e6, 3 * held_host_tick_ns() / 1e6, unmeasured ? " (some unmeasured)" : "");
    if (max_before_stalls > G.lossless_wait_ns + G.wait_margin_ns)
        printf("  machine stalls: the longest emit was held %.3f ms less steal + irq, of which the "
               "machine stalled %.3f ms (the 1 ms sleeper's; %u stalls over 1 ms recorded%s)\n",
               max_before_stalls / 1e6, stalled_in_longest / 1e6, n_stalls,
               stalls_missed ? ", some missed" : "");
    if (unmeasured)
        violation("%" PRIu64 " slow emits had no schedstat reading: invariant 6 is unproven", unmeasured);
    if (max_held > G.lossless_wait_ns + G.wait_margin_ns)
        violation("a producer was held %.3f ms on the CPU in one emit (run-queue waits and the host's "
                  "steal + irq or the machine's stalls excluded), "
                  "past the bound %.3f ms + margin %.0f ms", max_held / 1e6,
                  G.lossless_wait_ns / 1e6, G.wait_margin_ns / 1e6);
    if (overrun > allowance)
        violation("producers were held %.3f ms past the bound + %.1f ms on the CPU (summed over %" PRIu64
                  " slow emits), more than the %.3f ms the host took from the CPUs meanwhile",
                  overrun / 1e6, HELD_SLACK_NS / 1e6, slow, allowance / 1e6);
}

/* The planted-wait run: has the producers' summed overrun passed twice
 * what the host has taken from the CPUs since steal0/irq0? */
static int planted_evidence_enough(uint64_t steal0, uint64_t irq0)
{
    uint64_t steal = steal0, irq = irq0, overrun = 0;
    if (held_host_time(&steal, &irq))
        return 1; /* cannot tell: end as planned */
    for (unsigned p = 0; p < n_instances(); p++)
        overrun += atomic_load(&ST->prod[p].held_overrun_ns);
    return overrun > 2 * (steal - steal0 + irq - irq0 + 3 * held_host_tick_ns());
}

/* ---- options -------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: cbus-soak [--duration 30s] [--rate 6000] [--threads 3] [--procs 2]\n"
            "                 [--lossless 2] [--lossy 1] [--capacity 16384] [--lanes 4] [--stall-timeout 2s]\n"
            "                 [--lossless-wait 1ms] [--wait-margin 50ms] [--chaos-every 400ms]\n"
            "                 [--seed N] [--no-daemons] [--keep] [--verbose]\n"
            "                 [--faults LIST|default|all|none] [--fault-every 1s]\n"
            "                 [--cost PATH] [--audit PATH] [--export PATH] [--ratelimit PATH]\n"
            "                 [--collector PATH] [--slow-start] [--plant-gate-wait DUR (test only)]\n"
            "Short mode (CI): --duration 30s.  Long mode: --duration 30m.\n"
            "Exit status: 0 all invariants hold, 1 a violation (printed), 2 bad usage, 3 setup failed.\n");
}

static int parse_dur(const char *opt, const char *v, uint64_t *out)
{
    if (cbus_parse_duration_ns(v, out) || !*out) {
        fprintf(stderr, "cbus-soak: %s: '%s' is not a duration (e.g. 30s, 30m, 500ms)\n", opt, v);
        return -1;
    }
    return 0;
}

static int parse_uint(const char *opt, const char *v, unsigned lo, unsigned hi, unsigned *out)
{
    char *end;
    unsigned long x = strtoul(v, &end, 10);
    if (!*v || *end || x < lo || x > hi) {
        fprintf(stderr, "cbus-soak: %s: '%s' is not an integer in %u..%u\n", opt, v, lo, hi);
        return -1;
    }
    *out = (unsigned)x;
    return 0;
}

/* Segment faults by name (docs/soak.md).  The default set is the faults the
 * bus is expected to survive on this tree. */
static const struct {
    const char *name;
    unsigned bit;
} fault_names[] = {{"counters", F_COUNTERS}, {"slot", F_SLOT},        {"entry", F_ENTRY},
                   {"tail", F_TAIL},         {"tail-large", F_TAIL_LARGE}, {"forge", F_FORGE},
                   {"recreate", F_RECREATE}, {"truncate", F_TRUNCATE}};
#define FAULTS_DEFAULT (F_COUNTERS | F_SLOT | F_ENTRY | F_TAIL | F_FORGE | F_RECREATE | F_TRUNCATE)
#define FAULTS_ALL     (F_COUNTERS | F_SLOT | F_ENTRY | F_TAIL | F_TAIL_LARGE | F_FORGE | F_RECREATE | F_TRUNCATE)

static int parse_faults(const char *v, unsigned *out)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", v);
    *out = 0;
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        unsigned bit = 0;
        if (!strcmp(t, "default"))
            bit = FAULTS_DEFAULT;
        else if (!strcmp(t, "all"))
            bit = FAULTS_ALL;
        else if (!strcmp(t, "none"))
            bit = 0;
        else {
            for (size_t i = 0; i < sizeof fault_names / sizeof fault_names[0]; i++)
                if (!strcmp(t, fault_names[i].name))
                    bit = fault_names[i].bit;
            if (!bit) {
                fprintf(stderr, "cbus-soak: --faults: unknown fault '%s' (counters, slot, entry, tail, "
                        "tail-large, forge, recreate, truncate, default, all, none)\n", t);
                return -1;
            }
        }
        *out |= bit;
    }
    return 0;
}

static void faults_describe(char *out, size_t len, unsigned f)
{
    size_t n = 0;
    out[0] = '\0';
    for (size_t i = 0; i < sizeof fault_names / sizeof fault_names[0]; i++)
        if (f & fault_names[i].bit)
            n += (size_t)snprintf(out + n, n < len ? len - n : 0, "%s%s", n ? "," : "", fault_names[i].name);
    if (!f)
        snprintf(out, len, "none");
}

static int parse_args(int argc, char **argv)
{
    G.duration_ns = 30000000000u;
    G.rate = 6000;
    G.threads = 3;
    G.procs = 2;
    G.verifiers_lossless = 2;
    G.verifiers_lossy = 1;
    G.capacity = 16384;
    G.lanes = 4;
    G.stall_timeout_ns = 2000000000u;
    G.lossless_wait_ns = 1000000u;
    G.wait_margin_ns = 50000000u;
    G.chaos_mean_ns = 400000000u;
    G.faults = FAULTS_DEFAULT;
    G.fault_mean_ns = 1000000000u;
    G.seed = soak_now_ns();
#ifdef SOAK_COST
    G.bin[K_COST] = SOAK_COST;
#endif
#ifdef SOAK_AUDIT
    G.bin[K_AUDIT] = SOAK_AUDIT;
#endif
#ifdef SOAK_EXPORT
    G.bin[K_EXPORT] = SOAK_EXPORT;
#endif
#ifdef SOAK_RATELIMIT
    G.bin[K_RATELIMIT] = SOAK_RATELIMIT;
#endif
#ifdef SOAK_COLLECTOR
    G.bin[K_COLLECTOR] = SOAK_COLLECTOR;
#endif
    static const struct option lo[] = {
        {"duration", 1, 0, 'd'},  {"rate", 1, 0, 'r'},          {"threads", 1, 0, 't'},
        {"procs", 1, 0, 'p'},     {"lossless", 1, 0, 'L'},      {"lossy", 1, 0, 'Y'},
        {"capacity", 1, 0, 'c'},  {"stall-timeout", 1, 0, 'S'}, {"lossless-wait", 1, 0, 'W'},
        {"wait-margin", 1, 0, 'M'}, {"chaos-every", 1, 0, 'C'}, {"seed", 1, 0, 's'},
        {"no-daemons", 0, 0, 'n'}, {"keep", 0, 0, 'k'},         {"verbose", 0, 0, 'v'},
        {"cost", 1, 0, 1},        {"audit", 1, 0, 2},           {"export", 1, 0, 3},
        {"ratelimit", 1, 0, 4},   {"collector", 1, 0, 5},       {"help", 0, 0, 'h'},
        {"faults", 1, 0, 'F'},    {"fault-every", 1, 0, 'E'},   {"plant-gate-wait", 1, 0, 6},
        {"slow-start", 0, 0, 7},  {"lanes", 1, 0, 8},
        {0, 0, 0, 0}};
    int ch;
    unsigned u;
    while ((ch = getopt_long(argc, argv, "hv", lo, NULL)) != -1) {
        switch (ch) {
        case 'd': if (parse_dur("--duration", optarg, &G.duration_ns)) return -1; break;
        case 'r': {
            char *end;
            G.rate = strtod(optarg, &end);
            if (*end || G.rate < 0 || G.rate > 1e7) {
                fprintf(stderr, "cbus-soak: --rate: '%s' is not events/s in 0..1e7 (0 = unpaced)\n", optarg);
                return -1;
            }
            break;
        }
        case 't': if (parse_uint("--threads", optarg, 1, 16, &G.threads)) return -1; break;
        case 'p': if (parse_uint("--procs", optarg, 0, 16, &G.procs)) return -1; break;
        case 'L': if (parse_uint("--lossless", optarg, 0, SOAK_MAX_VER, &G.verifiers_lossless)) return -1; break;
        case 'Y': if (parse_uint("--lossy", optarg, 0, SOAK_MAX_VER, &G.verifiers_lossy)) return -1; break;
        case 'c':
            if (parse_uint("--capacity", optarg, 1024, 1u << 24, &u)) return -1;
            if (u & (u - 1)) {
                fprintf(stderr, "cbus-soak: --capacity: %u is not a power of two\n", u);
                return -1;
            }
            G.capacity = u;
            break;
        case 'S': if (parse_dur("--stall-timeout", optarg, &G.stall_timeout_ns)) return -1; break;
        case 'W': if (parse_dur("--lossless-wait", optarg, &G.lossless_wait_ns)) return -1; break;
        case 'M': if (parse_dur("--wait-margin", optarg, &G.wait_margin_ns)) return -1; break;
        case 'C': if (parse_dur("--chaos-every", optarg, &G.chaos_mean_ns)) return -1; break;
        case 'F': if (parse_faults(optarg, &G.faults)) return -1; break;
        case 'E': if (parse_dur("--fault-every", optarg, &G.fault_mean_ns)) return -1; break;
        case 's': G.seed = strtoull(optarg, NULL, 0); break;
        case 'n': G.no_daemons = 1; break;
        case 'k': G.keep = 1; break;
        case 'v': G.verbose = 1; break;
        case 1: G.bin[K_COST] = optarg; break;
        case 2: G.bin[K_AUDIT] = optarg; break;
        case 3: G.bin[K_EXPORT] = optarg; break;
        case 4: G.bin[K_RATELIMIT] = optarg; break;
        case 5: G.bin[K_COLLECTOR] = optarg; break;
        case 7: G.slow_start = 1; break;
        case 8:
            if (parse_uint("--lanes", optarg, 1, CBUS_MAX_LANES, &G.lanes)) return -1;
            if (G.lanes & (G.lanes - 1)) {
                fprintf(stderr, "cbus-soak: --lanes: %u is not a power of two\n", G.lanes);
                return -1;
            }
            break;
        case 6: if (parse_dur("--plant-gate-wait", optarg, &G.plant_wait_ns)) return -1; break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); return -1;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "cbus-soak: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    if (G.verifiers_lossless + G.verifiers_lossy > SOAK_MAX_VER) {
        fprintf(stderr, "cbus-soak: at most %d verifiers in all\n", SOAK_MAX_VER);
        return -1;
    }
    rng_state = G.seed | 1;
    return 0;
}

/* ---- children ------------------------------------------------------------- */

static struct child *add_child(enum child_kind k, unsigned idx, const char *name)
{
    struct child *c = &kids[nkids++];
    memset(c, 0, sizeof *c);
    c->kind = k;
    c->idx = idx;
    snprintf(c->name, sizeof c->name, "%s", name);
    return c;
}

static int start_child(struct child *c)
{
    if (c->kind == K_PRODUCER) {
        if (n_instances() >= SOAK_MAX_PROD) {
            c->state = C_OFF; /* out of instance slots: this slot stays down */
            return 0;
        }
        c->instance = atomic_fetch_add(&ST->next_instance, 1);
        atomic_store(&ST->prod[c->instance].is_process, 1);
        atomic_store(&ST->prod[c->instance].used, 1);
    }
    if (c->kind == K_VERIFIER) /* a killed one never cleared it */
        atomic_store(&ST->ver[c->idx].attached_epoch, 0);
    int r = child_spawn(c);
    if (r)
        violation("cannot start %s: %s", c->name, strerror(-r));
    return r;
}

static struct child *find_pid(pid_t pid)
{
    for (unsigned i = 0; i < nkids; i++)
        if (kids[i].pid == pid)
            return &kids[i];
    return NULL;
}

/* Children that exit on their own (we reap our SIGKILLs in child_kill). */
static void reap(void)
{
    int st;
    pid_t pid;
    while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
        struct child *c = find_pid(pid);
        if (!c)
            continue;
        c->pid = 0;
        c->state = C_DEAD;
        c->unexpected_exits++;
        c->until_ns = soak_now_ns() + 200000000u;
        c->killed_at_ns = soak_now_ns();
        violation("%s exited by itself (%s %d)", c->name,
                  WIFEXITED(st) ? "status" : "signal",
                  WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
        child_log_tail(c, 8);
    }
}

/* ---- sampling: the producers' waits and the cost daemon's tether ------------ */

static int entry_by_name(const char *name)
{
    for (unsigned i = 0; i < CBUS_MAX_CONSUMERS; i++) {
        struct cbus_consumer_entry *e = cbus_bus_consumer_entry(BUS, i);
        if (e && atomic_load(&e->state) == CBUS_CSTATE_ACTIVE &&
            !strncmp(e->name, name, sizeof e->name))
            return (int)i;
    }
    return -1;
}

/* The cost daemon's run-queue delay, sampled each turn of the scheduler
 * (/proc/PID/schedstat, second field: ns its main thread waited runnable for
 * a CPU).  The soak keeps the daemon's planned stalls far below the stall
 * timeout, so an untether is a violation unless the machine itself kept the
 * daemon off the CPU for a good part of the window before it: that is
 * measured here, not guessed from wall time (a stress-ng run of the suite
 * untethered it twice in ten runs, with the daemon runnable but not run). */
/* Whether process pid is in state D (uninterruptible: waiting on the disk),
 * from /proc/PID/stat's state, after the ")". */
static int proc_in_disk_wait(pid_t pid)
{
    char path[64], st[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t m = read(fd, st, sizeof st - 1);
    close(fd);
    if (m <= 0)
        return 0;
    st[m] = '\0';
    const char *rp = strrchr(st, ')');
    return rp && rp[1] == ' ' && rp[2] == 'D';
}

#define COST_RQ_RING 1024
static struct {
    uint64_t t_ns, run_delay_ns;
    pid_t pid;
    int in_io;             /* state D (uninterruptible: waiting on the disk) */
} cost_rq[COST_RQ_RING];
static unsigned cost_rq_n;
static uint64_t cost_untethered_excused, cost_rq_excuse_ns;

static void cost_rq_sample(pid_t pid, uint64_t now)
{
    char path[64], buf[128];
    snprintf(path, sizeof path, "/proc/%d/schedstat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    unsigned long long run, wait;
    if (n <= 0)
        return;
    buf[n] = '\0';
    if (sscanf(buf, "%llu %llu", &run, &wait) != 2)
        return;
    /* and whether it is waiting on the disk (a checkpoint's fsync behind the
     * audit log's writes) */
    const int in_io = proc_in_disk_wait(pid);
    unsigned i = cost_rq_n++ % COST_RQ_RING;
    cost_rq[i].t_ns = now;
    cost_rq[i].pid = pid;
    cost_rq[i].run_delay_ns = wait;
    cost_rq[i].in_io = in_io;
}

/* Run-queue delay of the cost daemon (all its incarnations) since since_ns:
 * the growth between consecutive readings of one process, and the whole of
 * a new process's (it started after the reading before it).  *io_ns: the
 * time between readings that both found it waiting on the disk. */
static uint64_t cost_rq_delay_since(uint64_t since_ns, uint64_t *io_ns)
{
    unsigned n = cost_rq_n < COST_RQ_RING ? cost_rq_n : COST_RQ_RING;
    uint64_t sum = 0;
    *io_ns = 0;
    for (unsigned k = 1; k < n; k++) {
        unsigned i = (cost_rq_n - n + k) % COST_RQ_RING, j = (i + COST_RQ_RING - 1) % COST_RQ_RING;
        if (cost_rq[i].t_ns < since_ns)
            continue;
        if (cost_rq[i].pid != cost_rq[j].pid) {
            sum += cost_rq[i].run_delay_ns;
            continue;
        }
        if (cost_rq[i].run_delay_ns > cost_rq[j].run_delay_ns)
            sum += cost_rq[i].run_delay_ns - cost_rq[j].run_delay_ns;
        if (cost_rq[i].in_io && cost_rq[j].in_io)
            *io_ns += cost_rq[i].t_ns - cost_rq[j].t_ns;
    }
    return sum;
}

static void sample(void)
{
    for (unsigned i = 0; i < CBUS_MAX_PRODUCERS; i++) {
        struct cbus_producer_entry *e = cbus_bus_producer_entry(BUS, i);
        if (e && atomic_load(&e->in_use)) {
            uint64_t w = atomic_load(&e->max_wait_ns);
            if (w > max_wait_seen)
                max_wait_seen = w;
        }
    }
    for (unsigned p = 0; p < n_instances(); p++) {
        uint64_t w = atomic_load(&ST->prod[p].max_wait_ns);
        if (w > max_wait_seen)
            max_wait_seen = w;
    }
    const struct child *cc = NULL;
    for (unsigned i = 0; i < nkids; i++)
        if (kids[i].kind == K_COST)
            cc = &kids[i];
    uint64_t now = soak_now_ns();
    if (cc && cc->pid > 0 && cc->state != C_OFF)
        cost_rq_sample(cc->pid, now);
    int ci = entry_by_name("cost");
    if (ci >= 0) {
        struct cbus_consumer_entry *e = cbus_bus_consumer_entry(BUS, (unsigned)ci);
        uint64_t u = atomic_load(&e->untethered_count);
        if (u > cost_untethered_epoch) {
            /* Say what the daemon was doing: the soak never holds it near
             * the stall timeout, so this is the machine or the daemon. */
            uint64_t window = G.stall_timeout_ns + G.stall_timeout_ns / 2;
            uint64_t io = 0, rq = cost_rq_delay_since(now > window ? now - window : 0, &io);
            uint64_t hb = atomic_load(&e->heartbeat_ns), bnow = cbus_now_ns();
            printf("  cbus-cost entry: heartbeat %.3f s old, cursor %" PRIu64 " read_pos %" PRIu64
                   ", tail %" PRIu64 ", pid %u\n", bnow > hb ? (bnow - hb) / 1e9 : 0.0,
                   (uint64_t)atomic_load(&e->cursor), (uint64_t)atomic_load(&e->read_pos),
                   cbus_bus_tail(BUS), (unsigned)atomic_load(&e->pid));
            if (cc)
                printf("  cbus-cost untethered by the bus: it is %s, last killed %.3f s ago, last "
                       "restarted %.3f s ago, last stopped %.3f s ago; in the last %.1f s it waited %.0f ms "
                       "on the run queue and was seen waiting on the disk for %.0f ms; max "
                       "scheduling delay so far %.0f ms\n",
                       cc->state == C_RUNNING ? "running" : cc->state == C_STOPPED ? "stopped" : "dead",
                       cc->killed_at_ns ? (now - cc->killed_at_ns) / 1e9 : -1.0,
                       (now - cc->started_ns) / 1e9,
                       cc->stopped_at_ns ? (now - cc->stopped_at_ns) / 1e9 : -1.0, window / 1e9,
                       rq / 1e6, io / 1e6, atomic_load(&sched_delay_max) / 1e6);
            /* Planned stalls keep it still for at most a quarter of the
             * stall timeout; a quarter more, runnable but not run, is the
             * machine's doing (a margin no healthy run comes near: a few ms
             * of run-queue delay is usual here). */
            /* A death the soak itself did not end in time (its restart is
             * planned within 200 ms, but a re-creation or a drain can hold
             * the scheduler): measured from the soak's own kill and start. */
            /* The death counts when it ended (or goes on) inside the window,
             * however long before it began: a kill 3.7 s back, restarted
             * 4 ms ago, was not counted by a window measured from the kill. */
            uint64_t dead = 0;
            if (cc && cc->killed_at_ns) {
                uint64_t back = cc->started_ns > cc->killed_at_ns ? cc->started_ns : now;
                if (now - back < window)
                    dead = back - cc->killed_at_ns;
            }
            if (dead >= G.stall_timeout_ns / 4)
                printf("  cbus-cost was dead %.3f s before the soak restarted it (planned: under "
                       "0.2 s): the soak's doing\n", dead / 1e9);
            if (rq + io + (dead >= G.stall_timeout_ns / 4 ? dead : 0) >= G.stall_timeout_ns / 4) {
                cost_untethered_excused += u - cost_untethered_epoch;
                if (rq + io > cost_rq_excuse_ns)
                    cost_rq_excuse_ns = rq + io;
            }
            cost_untethered_seen += u - cost_untethered_epoch;
            cost_untethered_epoch = u;
        }
    }
}

/* ---- the chaos scheduler -------------------------------------------------- */

static uint64_t stalls_short, stalls_long, kills_total, collector_faults, throttles;

static int stoppable(const struct child *c)
{
    return c->kind != K_PRODUCER && c->kind != K_COLLECTOR;
}

static void act(uint64_t now)
{
    /* Pick a running child at random, then an action that fits it. */
    struct child *cand[64];
    unsigned n = 0;
    /* A verifier still reading a previous bus incarnation is left alone: a
     * restarted one could not open that bus again (it is unlinked). */
    int draining = 0;
    for (unsigned v = 0; v < ST->nver; v++)
        draining |= ST->ver[v].g[atomic_load(&ST->ver[v].gw)].epoch != atomic_load(&ST->epoch);
    for (unsigned i = 0; i < nkids; i++)
        if (kids[i].state == C_RUNNING && !(draining && kids[i].kind == K_VERIFIER))
            cand[n++] = &kids[i];
    if (!n)
        return;
    struct child *c = cand[rnd() % n];
    const uint64_t stall = G.stall_timeout_ns;
    if (c->kind == K_COLLECTOR) {
        /* Endpoint failures: gone for a while, or answering 503/429, or
         * dropping connections; back to healthy after a few seconds. */
        child_kill(c);
        c->faults++;
        collector_faults++;
        unsigned what = (unsigned)(rnd() % 4);
        if (what == 0) {
            c->coll_mode = COLL_HEALTHY;
            c->until_ns = now + rnd_range(1000000000u, 5000000000u);
            c->killed_at_ns = now;
            return; /* DEAD until then */
        }
        c->coll_mode = what == 1 ? COLL_FAIL_503 : what == 2 ? COLL_FAIL_429 : COLL_DROP;
        start_child(c);
        c->until_ns = now + rnd_range(2000000000u, 6000000000u); /* then healthy again */
        return;
    }
    if (c->kind == K_VERIFIER && ST->ver[c->idx].lossless && rnd() % 3 == 0) {
        uint64_t t = rnd_range(3000000000u, 8000000000u);
        atomic_store(&ST->ver[c->idx].slow_until_ns, now + t);
        throttles++;
        c->throttles++;
        if (G.verbose)
            fprintf(stderr, "soak: %s reads slowly for %" PRIu64 " ms\n", c->name, t / 1000000);
        return;
    }
    int do_stop = stoppable(c) && rnd() % 2;
    if (do_stop) {
        uint64_t t;
        if (c->kind == K_COST) {
            /* never near the stall timeout: its totals must stay exact */
            t = rnd_range(10000000u, stall / 4);
            stalls_short++;
            c->stops_short++;
        } else if (rnd() % 2) {
            t = rnd_range(stall + stall / 2, 6 * stall);
            stalls_long++;
            c->stops_long++;
        } else {
            t = rnd_range(10000000u, stall / 2);
            stalls_short++;
            c->stops_short++;
        }
        if (t > c->longest_stop_ns)
            c->longest_stop_ns = t;
        kill(c->pid, SIGSTOP);
        c->state = C_STOPPED;
        c->stopped_at_ns = now;
        c->until_ns = now + t;
        if (G.verbose)
            fprintf(stderr, "soak: SIGSTOP %s for %" PRIu64 " ms\n", c->name, t / 1000000);
        return;
    }
    uint64_t dead = c->kind == K_COST ? rnd_range(0, 200000000u) : rnd_range(0, 3 * stall);
    child_kill(c);
    c->kills++;
    kills_total++;
    if (c->kind == K_PRODUCER) {
        prod_kills_total++;
        prod_kills_epoch[atomic_load(&ST->epoch) % SOAK_MAX_EPOCH]++;
    }
    c->killed_at_ns = now;
    c->until_ns = now + dead;
    if (dead > c->longest_dead_ns)
        c->longest_dead_ns = dead;
    if (G.verbose)
        fprintf(stderr, "soak: SIGKILL %s, restart in %" PRIu64 " ms\n", c->name, dead / 1000000);
}

static void timers(uint64_t now)
{
    for (unsigned i = 0; i < nkids; i++) {
        struct child *c = &kids[i];
        if (c->state == C_STOPPED && now >= c->until_ns) {
            kill(c->pid, SIGCONT);
            c->state = C_RUNNING;
        } else if (c->state == C_DEAD && now >= c->until_ns) {
            start_child(c);
        } else if (c->kind == K_COLLECTOR && c->state == C_RUNNING &&
                   c->coll_mode != COLL_HEALTHY && now >= c->until_ns) {
            child_kill(c);
            c->coll_mode = COLL_HEALTHY;
            start_child(c);
        }
    }
}

/* Brings every child back to running and healthy (end of the chaos phase). */
static void heal_all(void)
{
    faults_heal();
    for (unsigned i = 0; i < nkids; i++) {
        struct child *c = &kids[i];
        if (c->state == C_STOPPED) {
            kill(c->pid, SIGCONT);
            c->state = C_RUNNING;
        } else if (c->state == C_DEAD) {
            start_child(c);
        }
        if (c->kind == K_COLLECTOR && c->coll_mode != COLL_HEALTHY) {
            child_kill(c);
            c->coll_mode = COLL_HEALTHY;
            start_child(c);
        }
    }
}

/* ---- bus re-creation and truncation --------------------------------------- */

static int truncate_file(const char *path, off_t len)
{
    int fd = open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int r = ftruncate(fd, len);
    close(fd);
    return r;
}

static unsigned running_producer_procs(void)
{
    unsigned n = 0;
    for (unsigned i = 0; i < nkids; i++)
        n += kids[i].kind == K_PRODUCER && kids[i].state == C_RUNNING;
    return n;
}

static int daemon_attached(void);

/* Waits for the daemon kid (reattach_name, reattach_pid) to attach to the
 * current bus within bound_ns of its own time: the bound grows by the time
 * the daemon is seen waiting on the disk (state D, sampled every 2 ms; at
 * most 60 s more), which it cannot re-attach through and which is the
 * machine's (suite run 9 of 10 under stress-ng: cbus-cost sat in D on
 * folio_wait_bit for over 10 s, then caught up).  *io_ns: that time. */
static int wait_reattached(pid_t pid, uint64_t bound_ns, uint64_t *io_ns)
{
    const uint64_t start = soak_now_ns(), cap = 60000000000u;
    uint64_t last = start;
    *io_ns = 0;
    while (!daemon_attached()) {
        uint64_t now = soak_now_ns();
        if (proc_in_disk_wait(pid))
            *io_ns += now - last;
        last = now;
        if (now - start > bound_ns + (*io_ns < cap ? *io_ns : cap))
            return -1;
        soak_sleep_ns(2000000);
    }
    return 0;
}

static int wait_until(int (*cond)(void), uint64_t timeout_ns)
{
    uint64_t end = soak_now_ns() + timeout_ns;
    while (!cond()) {
        if (soak_now_ns() > end)
            return -1;
        soak_sleep_ns(2000000);
    }
    return 0;
}

static int threads_parked(void)
{
    return atomic_load(&ST->parked_threads) == G.threads;
}

static int procs_parked(void)
{
    return atomic_load(&ST->parked_procs) == running_producer_procs();
}

static int verifiers_on_bus(void)
{
    for (unsigned v = 0; v < ST->nver; v++)
        if (atomic_load(&ST->ver[v].attached_epoch) != atomic_load(&ST->epoch) + 1)
            return 0;
    return 1;
}

/* A consumer entry's committed cursor (want_cursor) or read position,
 * summed over the lanes: it equals cbus_bus_tail() only when the entry is at
 * the tail in every lane (no lane's word passes its tail). */
static uint64_t entry_sum(int idx, int want_cursor)
{
    uint64_t sum = 0;
    for (unsigned L = 0; idx >= 0 && L < cbus_bus_lanes(BUS); L++) {
        uint64_t cur = 0, rd = 0;
        cbus_bus_consumer_lane(BUS, (unsigned)idx, L, &cur, &rd);
        sum += want_cursor ? cur : rd;
    }
    return sum;
}

static uint64_t cost_cursor_target;
static int cost_caught_up(void)
{
    int ci = entry_by_name("cost");
    return ci >= 0 && entry_sum(ci, 1) >= cost_cursor_target;
}

static const char *daemon_entry_name(enum child_kind k)
{
    return k == K_COST ? "cost" : k == K_AUDIT ? "audit" : k == K_EXPORT ? "export"
         : k == K_RATELIMIT ? "ratelimit" : NULL;
}

/* What a daemon that missed a bound was doing: its process state and kernel
 * wait channel (/proc), its consumer entry on the current bus, its log's
 * tail.  A missed bound under load is then told from a stuck daemon. */
static void diagnose_child(const struct child *c, const char *entry)
{
    char p[64], st[512] = "", wchan[64] = "";
    snprintf(p, sizeof p, "/proc/%d/stat", (int)c->pid);
    FILE *f = fopen(p, "r");
    if (f) {
        if (!fgets(st, sizeof st, f))
            st[0] = 0;
        fclose(f);
    }
    snprintf(p, sizeof p, "/proc/%d/wchan", (int)c->pid);
    if ((f = fopen(p, "r"))) {
        if (!fgets(wchan, sizeof wchan, f))
            wchan[0] = 0;
        fclose(f);
    }
    const char *rp = strrchr(st, ')');
    char state = rp && rp[1] == ' ' ? rp[2] : '?';
    int ei = entry ? entry_by_name(entry) : -1;
    fprintf(stderr, "  %s (pid %d): process state %c, wchan %s, entry %s", c->name, (int)c->pid,
            st[0] ? state : '-', wchan[0] ? wchan : "-", ei >= 0 ? "" : "none on this bus");
    if (ei >= 0) {
        const struct cbus_consumer_entry *e = cbus_bus_consumer_entry(BUS, (unsigned)ei);
        fprintf(stderr, "pid %u, committed %" PRIu64 " of tail %" PRIu64 ", heartbeat %.1f s ago",
                (unsigned)atomic_load(&e->pid), entry_sum(ei, 1), cbus_bus_tail(BUS),
                (double)(soak_now_ns() - atomic_load(&e->heartbeat_ns)) / 1e9);
    }
    fputc('\n', stderr);
    child_log_tail(c, 12);
}

static const char *reattach_name;
static pid_t reattach_pid;
static int daemon_attached(void)
{
    /* this process's entry, not a dead predecessor's */
    int i = entry_by_name(reattach_name);
    return i >= 0 && (pid_t)cbus_bus_consumer_entry(BUS, (unsigned)i)->pid == reattach_pid;
}

/* Destroys the bus under the running daemons and creates it again (after
 * truncating the segment file to 4 KiB first, when truncate).  Producer
 * threads park first and the cost daemon's committed cursor must reach the
 * tail, so its totals stay exactly checkable; producer processes keep
 * emitting through a truncation (they must survive it) and park before the
 * new bus exists; verifiers drain the old bus (or give it up, truncated) and
 * attach to the new one before anything is emitted into it, so every
 * per-epoch invariant stays exact.  Returns 0, or -1 if it did not start. */
static int recreate_bus(int truncate)
{
    const uint32_t e = atomic_load(&ST->epoch);
    if (e + 1 >= SOAK_MAX_EPOCH)
        return -1;
    for (unsigned v = 0; v < ST->nver; v++)
        if (ST->ver[v].g[atomic_load(&ST->ver[v].gw)].epoch != e)
            return -1; /* still draining the previous one */
    /* A gap just added to the tail is passed only with an event after it
     * (consumers skip it after one stall timeout, and the cost daemon moves
     * its cursor with events): not while the producers are parked. */
    if (FS.last_tail_jump_ns && soak_now_ns() - FS.last_tail_jump_ns < 3 * G.stall_timeout_ns)
        return -1;
    /* Every verifier must be there to drain the old bus: continue the
     * stopped ones, restart the dead ones, and wait for them to attach. */
    /* Daemons too: each must notice the re-creation by itself within a
     * bound, which a SIGSTOPped one cannot. */
    for (unsigned i = 0; i < nkids; i++) {
        struct child *c = &kids[i];
        if (c->kind == K_PRODUCER || c->kind == K_COLLECTOR)
            continue;
        if (c->kind == K_VERIFIER)
            atomic_store(&ST->ver[c->idx].slow_until_ns, 0);
        if (c->state == C_STOPPED) {
            kill(c->pid, SIGCONT);
            c->state = C_RUNNING;
        } else if (c->state == C_DEAD) {
            start_child(c);
        }
    }
    if (wait_until(verifiers_on_bus, 20000000000u))
        return -1;
    /* ... and the daemons just restarted attached to the old bus: one that
     * starts in the middle of the re-creation sees a segment not yet
     * formatted (-EPROTO) and exits, which is a start-up failure, not the
     * re-attachment this fault checks (docs/soak.md). */
    for (unsigned i = 0; i < nkids; i++) {
        const char *en = daemon_entry_name(kids[i].kind);
        if (!en || kids[i].state != C_RUNNING)
            continue;
        reattach_name = en;
        reattach_pid = kids[i].pid;
        if (wait_until(daemon_attached, 20000000000u))
            return -1;
    }
    faults_heal(); /* forged entries go with the old bus; not the bus's fault */
    atomic_store(&ST->pause_threads, 1);
    if (!truncate)
        atomic_store(&ST->pause_procs, 1);
    if (wait_until(threads_parked, 10000000000u) || (!truncate && wait_until(procs_parked, 10000000000u)))
        violation("producers did not park within 10 s for a bus re-creation");
    /* The cost daemon: running, and its committed cursor at the tail. */
    for (unsigned i = 0; i < nkids; i++) {
        struct child *c = &kids[i];
        if (c->kind != K_COST)
            continue;
        if (c->state == C_STOPPED) {
            kill(c->pid, SIGCONT);
            c->state = C_RUNNING;
        } else if (c->state == C_DEAD) {
            start_child(c);
        }
        cost_cursor_target = cbus_bus_tail(BUS);
        if (wait_until(cost_caught_up, 20000000000u) && !cost_unprovable) {
            cost_unprovable = 1;
            snprintf(cost_unprovable_why, sizeof cost_unprovable_why,
                     "the cost daemon had not committed up to the tail %" PRIu64 " 20 s after epoch %u's "
                     "producers parked", cost_cursor_target, e);
            diagnose_child(c, "cost");
        }
    }
    const struct cbus_shm_header *hdr = cbus_bus_header(BUS);
    char path[64];
    snprintf(path, sizeof path, "/dev/shm/cbus.%s", G.bus);
    if (truncate) {
        /* Producer processes are still emitting: the final tail is
         * whatever they had claimed when the pages went. */
        epoch_dropped[e] = atomic_load(&hdr->dropped);
        atomic_store(&ST->epoch_state[e], 2);
        if (truncate_file(path, 4096))
            violation("cannot truncate %s: %s", path, strerror(errno));
        FS.truncations++;
        soak_sleep_ns(rnd_range(10000000u, 300000000u)); /* let them run into it */
        atomic_store(&ST->pause_procs, 1);
        if (wait_until(procs_parked, 10000000000u))
            violation("producer processes did not park within 10 s after the truncation");
    } else {
        atomic_store(&ST->epoch_tail[e], cbus_bus_tail(BUS));
        epoch_dropped[e] = atomic_load(&hdr->dropped);
        atomic_store(&ST->epoch_state[e], 1);
        FS.recreations++;
    }
    faults_set_bus(NULL);
    cbus_bus_close(BUS);
    BUS = NULL;
    int r = cbus_bus_destroy(G.bus);
    struct cbus_create_opts co = {.capacity = G.capacity,
                                  .lanes = G.lanes,
                                  .lossless_wait_ns = bus_wait_bound(),
                                  .stall_timeout_ns = G.stall_timeout_ns};
    if (!r || r == -ENOENT)
        r = cbus_bus_create(G.bus, &co);
    if (!r)
        r = cbus_bus_open(&BUS, G.bus, 0);
    if (r) {
        violation("re-creating bus %s: %s", G.bus, cbus_strerror(r));
        interrupted = 1; /* nothing sensible can follow */
        return 0;
    }
    faults_set_bus(BUS);
    cost_untethered_epoch = 0;
    atomic_store(&ST->epoch, e + 1);
    if (G.verbose)
        fprintf(stderr, "soak: bus %s %s (epoch %u -> %u)\n", G.bus, truncate ? "truncated and re-created" : "re-created", e, e + 1);
    if (wait_until(verifiers_on_bus, 60000000000u))
        violation("verifiers did not move to the re-created bus within 60 s");
    /* Every daemon must find the new bus by itself (it notices the
     * re-creation and re-attaches); nothing is emitted until the cost daemon
     * is there, so its totals stay checkable. */
    const uint64_t reattach_bound = 10000000000u + atomic_load(&sched_delay_max);
    for (unsigned i = 0; i < nkids; i++) {
        const char *en = daemon_entry_name(kids[i].kind);
        if (!en || kids[i].state == C_OFF)
            continue;
        reattach_name = en;
        reattach_pid = kids[i].pid;
        uint64_t io = 0, t0 = soak_now_ns();
        if (wait_reattached(kids[i].pid, reattach_bound, &io)) {
            violation("%s did not re-attach to the re-created bus (epoch %u) within %.1f s (+%.1f s "
                      "seen waiting on the disk)", kids[i].name, e + 1, reattach_bound / 1e9, io / 1e9);
            diagnose_child(&kids[i], en);
        } else if (soak_now_ns() - t0 > reattach_bound) {
            printf("  %s re-attached to the re-created bus (epoch %u) after %.1f s, %.1f s of it "
                   "waiting on the disk (state D): the machine's, not counted against its %.1f s\n",
                   kids[i].name, e + 1, (soak_now_ns() - t0) / 1e9, io / 1e9, reattach_bound / 1e9);
        }
    }
    atomic_store(&ST->pause_procs, 0);
    atomic_store(&ST->pause_threads, 0);
    return 0;
}

/* ---- producer threads ----------------------------------------------------- */

struct thread_arg {
    pthread_t th;
    struct soak_producer_args a;
    int rc;
};

static void *producer_thread(void *p)
{
    struct thread_arg *t = p;
    t->rc = soak_produce(&t->a);
    return NULL;
}

/* ---- setup and teardown -------------------------------------------------- */

static int rm_tree(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        return errno == ENOTDIR ? (unlink(path) ? -errno : 0) : -errno;
    struct dirent *de;
    char sub[PATH_MAX];
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        snprintf(sub, sizeof sub, "%s/%s", path, de->d_name);
        struct stat st;
        if (lstat(sub, &st) == 0 && S_ISDIR(st.st_mode))
            rm_tree(sub);
        else
            unlink(sub);
    }
    closedir(d);
    return rmdir(path) ? -errno : 0;
}

static int binary_usable(const char *p)
{
    return p && access(p, X_OK) == 0;
}

static void wait_attached(const char *name, uint64_t timeout_ns)
{
    uint64_t end = soak_now_ns() + timeout_ns;
    while (entry_by_name(name) < 0 && soak_now_ns() < end)
        soak_sleep_ns(20000000);
    if (entry_by_name(name) < 0)
        violation("%s did not attach within %" PRIu64 " s", name, timeout_ns / 1000000000u);
}

/* ---- the final checks ------------------------------------------------------ */

struct epoch_sum {
    uint64_t committed, dropped, tail, uncommitted;
    int known; /* the final tail is known (not truncated) */
};

static void check_verifiers(uint32_t E, const struct epoch_sum *ep, const uint64_t *committed)
{
    for (unsigned v = 0; v < ST->nver; v++) {
        struct soak_verifier *sv = &ST->ver[v];
        soak_verifier_recover(sv);
        const struct soak_vglobal cur = sv->g[atomic_load(&sv->gw)];
        const char *mode = sv->lossless ? "lossless" : "lossy";
        if (sv->first_violation[0])
            violation("soak-v%u: %s", v, sv->first_violation);
        if (atomic_load(&sv->dup))
            violation("soak-v%u: %" PRIu64 " duplicated or reordered events", v, atomic_load(&sv->dup));
        /* A bad proof is an event whose bytes the soak wrote: anywhere else
         * it is a torn or mixed-up copy. */
        uint64_t bad_foreign = 0, nb = cur.bad < SOAK_MAX_BAD ? cur.bad : SOAK_MAX_BAD;
        for (uint64_t i = 0; i < nb; i++)
            if (!faults_corrupted(sv->bad_pos[i]) && bad_foreign++ == 0)
                violation("soak-v%u: bad proof at position %" PRIu64 ", a slot the soak did not write",
                          v, sv->bad_pos[i]);
        if (bad_foreign > 1)
            violation("soak-v%u: %" PRIu64 " bad proofs in all at positions the soak did not write", v,
                      bad_foreign);
        if (cur.epoch != E)
            violation("soak-v%u never moved to the last bus incarnation (at %" PRIu64 " of %u)", v, cur.epoch, E);
        struct soak_vglobal sum = {0};
        uint64_t missing_sum = 0, died_sum = 0, prev_bad = 0;
        for (uint32_t e = 0; e <= E && e <= cur.epoch; e++) {
            const struct soak_vglobal g = e == cur.epoch ? cur : sv->hist[e];
            const uint64_t bad = g.bad - prev_bad;
            prev_bad = g.bad;
            uint64_t seen = 0, missing = 0;
            for (uint32_t p = 0; p < n_instances(); p++) {
                if (atomic_load(&ST->prod[p].epoch) != e)
                    continue;
                const struct soak_vrec *r = &sv->rec[p][atomic_load(&sv->which[p])];
                seen += r->seen;
                missing += committed[p] - r->seen;
            }
            const struct epoch_sum *es = &ep[e];
            /* Positions the verifier never reached: they went with a
             * truncated segment (unknown how many), or it did not drain. */
            const uint64_t died = es->known && es->tail > g.applied_pos ? es->tail - g.applied_pos : 0;
            if (es->known && g.applied_pos != es->tail)
                violation("soak-v%u wedged in epoch %u: at position %" PRIu64 ", its final tail %" PRIu64, v, e,
                          g.applied_pos, es->tail);
            if (g.consumed + g.lost + g.abandoned != g.applied_pos)
                violation("soak-v%u epoch %u: consumed + lost + abandoned = %" PRIu64 " != positions passed %" PRIu64,
                          v, e, g.consumed + g.lost + g.abandoned, g.applied_pos);
            if (seen + bad != g.consumed)
                violation("soak-v%u epoch %u: %" PRIu64 " distinct events seen + %" PRIu64
                          " with a corrupted proof != %" PRIu64 " consumed (not exactly once)",
                          v, e, seen, bad, g.consumed);
            /* Every position is a committed event or an uncommitted claim,
             * and each is consumed, lost or abandoned: so what the verifier
             * did not see is what it lost, saw abandoned or saw corrupted,
             * less the uncommitted claims.  Unprovable for a truncated
             * epoch: its final tail is unknown (docs/soak.md). */
            if (es->known && g.lost + g.abandoned + bad != missing + es->uncommitted)
                violation("soak-v%u epoch %u: lost %" PRIu64 " + abandoned %" PRIu64 " + corrupted %" PRIu64
                          " != missing %" PRIu64 " + uncommitted claims %" PRIu64, v, e, g.lost, g.abandoned,
                          bad, missing, es->uncommitted);
            /* lost may count positions of a tail jump longer than the
             * ring: the library cannot tell them from a lap (they were never
             * events; missing says so). */
            if (sv->lossless && !g.untethered &&
                (g.lost > FS.tail_positions_epoch[e] || (es->known && missing != bad)))
                violation("soak-v%u epoch %u: lossless and never untethered, yet %" PRIu64 " events missing (%"
                          PRIu64 " of them corrupted by the soak), %" PRIu64 " lost", v, e, missing, bad, g.lost);
            sum.consumed += g.consumed;
            sum.lost += g.lost;
            sum.abandoned += g.abandoned;
            sum.untethered += g.untethered;
            sum.lifetimes += g.lifetimes;
            missing_sum += missing;
            died_sum += died;
        }
        printf("  verifier soak-v%u (%s): consumed %" PRIu64 " lost %" PRIu64 " abandoned %" PRIu64
               " missing %" PRIu64 " corrupted %" PRIu64 " redelivered %" PRIu64 " untethered %" PRIu64
               " lives %" PRIu64 "%s\n",
               v, mode, sum.consumed, sum.lost, sum.abandoned, missing_sum, cur.bad, cur.redelivered,
               sum.untethered, sum.lifetimes, E ? " (over all bus incarnations)" : "");
        (void)died_sum;
    }
}

/* ---- the run, phase by phase (main) -------------------------------------- */

/* What main's phases hand on to each other. */
struct run {
    int have[K__COUNT];         /* the daemons started (their binary exists) */
    pthread_t sampler;          /* sched_sampler */
    struct thread_arg *ths;     /* the G.threads producer threads */
    uint64_t steal0, irq0;      /* the host's steal and irq time at the producers' start */
    uint64_t steal1, irq1;      /* ... and at their end */
    uint64_t t0;                /* when the chaos began */
    uint64_t tail, elapsed;     /* the bus's tail and the time since t0 when the producers ended */
    uint32_t E;                 /* the last bus incarnation (epoch) */
    uint64_t *committed;        /* per producer instance */
    const struct epoch_sum *ep; /* per epoch */
    uint64_t committed_sum, dropped_sum, uncommitted, positions;
};

/* Under the test command a daemon that cannot be checked fails the run
 * instead of being skipped with a message CI would not read.  Returns 0 or
 * the exit status 3. */
static int strict_daemons_present(void)
{
    const char *strict = getenv("CBUS_TEST_STRICT");
    if (strict && !strcmp(strict, "1") && !G.no_daemons) {
        int missing = 0;
        for (enum child_kind k = K_COST; k < K__COUNT; k++)
            if (!binary_usable(G.bin[k])) {
                fprintf(stderr, "cbus-soak: CBUS_TEST_STRICT=1 and %s is missing (%s): its checks "
                        "cannot be skipped\n", kind_name(k), G.bin[k] ? G.bin[k] : "not built");
                missing = 1;
            }
        if (missing)
            return 3;
    }
    return 0;
}

/* This program, the run's temp dir, its state file and its bus name.
 * Returns 0 or the exit status 3. */
static int set_up_paths(void)
{
    ssize_t sl = readlink("/proc/self/exe", G.self, sizeof G.self - 1);
    if (sl <= 0) {
        perror("cbus-soak: /proc/self/exe");
        return 3;
    }
    G.self[sl] = '\0';
    snprintf(G.tmp, sizeof G.tmp, "%s/cbus-soak.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (strlen(G.tmp) + 1 >= sizeof G.tmp) {
        fprintf(stderr, "cbus-soak: TMPDIR is too long\n");
        return 3;
    }
    if (!mkdtemp(G.tmp)) {
        perror("cbus-soak: mkdtemp");
        return 3;
    }
    snprintf(G.state_path, sizeof G.state_path, "%s/state", G.tmp);
    snprintf(G.bus, sizeof G.bus, "soak-%d", (int)getpid());
    return 0;
}

/* Signals, the state shared with the children, and a probe of what
 * invariant 6 needs from the kernel.  Returns 0 or the exit status 3. */
static int set_up_state(void)
{
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_int};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    int r = soak_state_create(G.state_path, &ST);
    if (r) {
        fprintf(stderr, "cbus-soak: %s: %s\n", G.state_path, strerror(-r));
        return 3;
    }
    ST->wait_bound_ns = G.lossless_wait_ns;
    ST->lanes = G.lanes;
    ST->held_slack_ns = HELD_SLACK_NS;
    ST->held_long_ns = G.lossless_wait_ns + G.wait_margin_ns;
    /* Invariant 6 needs the kernel's run-queue accounting and the host's
     * steal and interrupt times: without them it could not tell the
     * scheduler's delays from the library's. */
    struct held_meter probe;
    uint64_t steal0, irq0;
    if ((r = held_open(&probe, 0, 0)) != 0 || (r = held_host_time(&steal0, &irq0)) != 0) {
        fprintf(stderr, "cbus-soak: /proc/thread-self/schedstat or /proc/stat: %s (a kernel "
                "without CONFIG_SCHED_INFO cannot check invariant 6)\n", strerror(-r));
        return 3;
    }
    held_close(&probe);
    return 0;
}

/* The bus, and what the run will do to it.  Returns 0 or the exit
 * status 3. */
static int set_up_bus(void)
{
    struct cbus_create_opts co = {.capacity = G.capacity,
                                  .lanes = G.lanes,
                                  .lossless_wait_ns = bus_wait_bound(),
                                  .stall_timeout_ns = G.stall_timeout_ns};
    int r = cbus_bus_create(G.bus, &co);
    if (!r)
        r = cbus_bus_open(&BUS, G.bus, 0);
    if (r) {
        fprintf(stderr, "cbus-soak: bus %s: %s\n", G.bus, cbus_strerror(r));
        return 3;
    }
    const struct cbus_shm_header *hdr = cbus_bus_header(BUS);
    printf("cbus-soak: bus %s (capacity %" PRIu64 " in %u lanes, stall timeout %" PRIu64 " ms, lossless wait %" PRIu64
           " us), %u producer threads + %u processes at %.0f events/s, seed %" PRIu64 ", temp %s\n",
           G.bus, hdr->capacity, cbus_bus_lanes(BUS), hdr->stall_timeout_ns / 1000000, hdr->lossless_wait_ns / 1000,
           G.threads, G.procs, G.rate, G.seed, G.tmp);
    char fdesc[160];
    faults_describe(fdesc, sizeof fdesc, G.faults);
    printf("  segment faults: %s, every %.0f ms on average\n", fdesc, G.fault_mean_ns / 1e6);
    faults_set_bus(BUS);
    return 0;
}

/* The verifiers and the daemons, each attached before anything is
 * emitted.  Returns 0 or the exit status 3. */
static int start_consumers(struct run *R)
{
    /* verifiers first, so they see every position from 0 */
    ST->nver = G.verifiers_lossless + G.verifiers_lossy;
    for (unsigned v = 0; v < ST->nver; v++) {
        char name[32];
        snprintf(name, sizeof name, "soak-v%u", v);
        ST->ver[v].lossless = v < G.verifiers_lossless;
        start_child(add_child(K_VERIFIER, v, name));
    }
    /* daemons: each one whose binary exists */
    int *have = R->have;
    if (!G.no_daemons) {
        if (free_loopback_port(&G.port) || daemons_write_configs()) {
            fprintf(stderr, "cbus-soak: cannot prepare the daemons' configuration in %s\n", G.tmp);
            return 3;
        }
        const enum child_kind order[] = {K_COLLECTOR, K_COST, K_AUDIT, K_EXPORT, K_RATELIMIT};
        for (unsigned i = 0; i < sizeof order / sizeof order[0]; i++) {
            enum child_kind k = order[i];
            if (k == K_EXPORT && !binary_usable(G.bin[K_COLLECTOR])) {
                printf("  skipping cbus-export: no cbus-collector to export to\n");
                continue;
            }
            if (!binary_usable(G.bin[k])) {
                printf("  skipping %s checks: binary %s not found\n", kind_name(k),
                       G.bin[k] ? G.bin[k] : "(not built)");
                continue;
            }
            have[k] = 1;
            start_child(add_child(k, 0, kind_name(k)));
        }
    } else {
        printf("  daemons skipped (--no-daemons)\n");
    }
    for (unsigned v = 0; v < ST->nver; v++) {
        char name[32];
        snprintf(name, sizeof name, "soak-v%u", v);
        wait_attached(name, 10000000000u);
    }
    if (have[K_COST])
        wait_attached("cost", 20000000000u);
    if (have[K_AUDIT])
        wait_attached("audit", 20000000000u);
    return 0;
}

/* The scheduling sampler, then the producer threads and processes. */
static void start_producers(struct run *R)
{
    pthread_create(&R->sampler, NULL, sched_sampler, NULL);

    if (G.plant_wait_ns)
        printf("  PLANTED: producers wait up to %.3f ms in the gate; invariant 6 checks %.3f ms\n",
               G.plant_wait_ns / 1e6, G.lossless_wait_ns / 1e6);
    if (G.slow_start && G.verifiers_lossless)
        /* --slow-start: the first lossless verifier reads slowly for the
         * first two thirds of the run, so producers are sure to meet the
         * gate (the planted-wait test and its control). */
        /* (planted: slow until the run ends, however long it is extended) */
        atomic_store(&ST->ver[0].slow_until_ns,
                     soak_now_ns() + (G.plant_wait_ns ? 4 * G.duration_ns : G.duration_ns * 2 / 3));
    held_host_time(&R->steal0, &R->irq0); /* host time from here to the producers' end */

    /* producers */
    struct thread_arg *ths = R->ths = calloc(G.threads, sizeof *ths);
    const double per = G.rate / (G.threads + G.procs);
    for (unsigned t = 0; t < G.threads; t++) {
        uint32_t idx = atomic_fetch_add(&ST->next_instance, 1);
        atomic_store(&ST->prod[idx].used, 1);
        ths[t].a = (struct soak_producer_args){.bus = G.bus, .st = ST, .index = idx, .rate = per};
        pthread_create(&ths[t].th, NULL, producer_thread, &ths[t]);
    }
    for (unsigned p = 0; p < G.procs; p++) {
        char name[32];
        snprintf(name, sizeof name, "producer%u", p);
        start_child(add_child(K_PRODUCER, p, name));
    }
}

/* The chaos: kills, stops, faults and re-creations until the run's
 * duration is over (longer for a planted wait, see inside). */
static void run_chaos(struct run *R)
{
    const uint64_t steal0 = R->steal0, irq0 = R->irq0;
    uint64_t t0 = soak_now_ns(), now = t0, next_act = t0 + G.chaos_mean_ns, next_report = t0 + 10000000000u;
    uint64_t next_fault = t0 + G.fault_mean_ns;
    uint64_t next_recreate = t0 + rnd_range(3000000000u, 10000000000u);
    uint64_t next_plant_check = 0;
    int planted_extended = 0;
    while (!interrupted) {
        now = soak_now_ns();
        if (now >= t0 + G.duration_ns) {
            /* A planted wait is shown only when the overrun it causes beats
             * what the host took from the CPUs (check_held): on a machine
             * with heavy steal the planted run goes on, up to 4x its
             * duration, until the evidence is twice the allowance, instead
             * of ending inconclusive.  Without a plant: never extended. */
            if (!G.plant_wait_ns || now >= t0 + 4 * G.duration_ns)
                break;
            if (now >= next_plant_check) {
                next_plant_check = now + 100000000u;
                if (planted_evidence_enough(steal0, irq0))
                    break;
                planted_extended = 1;
            }
        }
        reap();
        timers(now);
        sample();
        faults_tick(now, atomic_load(&sched_delay_max));
        if (now >= next_act) {
            act(now);
            next_act = now + rnd_range(G.chaos_mean_ns / 4, G.chaos_mean_ns * 7 / 4);
        }
        /* No segment fault in the last 5 s: a jumped tail at the very end
         * would leave no event after it to carry the consumers' cursors
         * past it. */
        if (now >= next_fault && now + 5000000000u < t0 + G.duration_ns) {
            faults_act(now);
            next_fault = now + rnd_range(G.fault_mean_ns / 4, G.fault_mean_ns * 7 / 4);
        }
        const unsigned rf = G.faults & (F_RECREATE | F_TRUNCATE);
        if (rf && now >= next_recreate && now + 5000000000u < t0 + G.duration_ns) {
            int trunc = rf == F_TRUNCATE || (rf == (F_RECREATE | F_TRUNCATE) && rnd() % 2);
            /* not started (a verifier is down or still draining): soon again */
            next_recreate = recreate_bus(trunc) ? now + 500000000u
                                                : soak_now_ns() + rnd_range(5000000000u, 15000000000u);
        }
        if (now >= next_report) {
            printf("  %4" PRIu64 " s: tail %" PRIu64 ", kills %" PRIu64 ", stalls %" PRIu64 "/%" PRIu64
                   " (short/long), collector faults %" PRIu64 ", dropped %" PRIu64 "\n",
                   (now - t0) / 1000000000u, cbus_bus_tail(BUS), kills_total, stalls_short, stalls_long,
                   collector_faults, atomic_load(&cbus_bus_header(BUS)->dropped));
            fflush(stdout);
            next_report = now + (G.duration_ns > 300000000000u ? 60000000000u : 10000000000u);
        }
        soak_sleep_ns(20000000);
    }
    if (interrupted)
        violation("interrupted before the end of the run");
    if (G.plant_wait_ns) {
        atomic_store(&ST->ver[0].slow_until_ns, 0);
        if (planted_extended)
            printf("  PLANTED: run extended to %.1f s (the host's steal and irq hid the overrun at %.0f s)\n",
                   (soak_now_ns() - t0) / 1e9, G.duration_ns / 1e9);
    }
    R->t0 = t0;
}

/* The end of the chaos: heal, stop the producers, and note where the
 * bus and the host's time stand. */
static void stop_producers(struct run *R)
{
    struct thread_arg *ths = R->ths;
    const uint64_t t0 = R->t0, steal0 = R->steal0, irq0 = R->irq0;
    heal_all();
    atomic_store(&ST->stop, 1);
    for (unsigned t = 0; t < G.threads; t++) {
        pthread_join(ths[t].th, NULL);
        if (ths[t].a.index < SOAK_MAX_PROD && ths[t].rc)
            violation("producer thread %u: %s", t, cbus_strerror(ths[t].rc));
    }
    for (unsigned i = 0; i < nkids; i++) {
        if (kids[i].kind != K_PRODUCER || kids[i].state != C_RUNNING)
            continue;
        int st = 0;
        uint64_t end = soak_now_ns() + 10000000000u;
        pid_t w;
        while ((w = waitpid(kids[i].pid, &st, WNOHANG)) == 0 && soak_now_ns() < end)
            soak_sleep_ns(10000000);
        if (w != kids[i].pid || !WIFEXITED(st) || WEXITSTATUS(st)) {
            violation("%s did not finish cleanly", kids[i].name);
            if (w == 0)
                child_kill(&kids[i]);
        }
        kids[i].pid = 0;
        kids[i].state = C_OFF;
    }
    uint64_t steal1 = steal0, irq1 = irq0;
    held_host_time(&steal1, &irq1);
    sample();
    const uint64_t tail = cbus_bus_tail(BUS);
    const uint64_t elapsed = soak_now_ns() - t0;
    R->steal1 = steal1;
    R->irq1 = irq1;
    R->tail = tail;
    R->elapsed = elapsed;
}

/* Drain: every verifier reaches the tail, every daemon entry's read
 * position reaches it (a wedged consumer never does). */
static void drain(const struct run *R)
{
    const uint64_t tail = R->tail;
    uint64_t drain_end = soak_now_ns() + 60000000000u;
    for (;;) {
        reap();
        int pending = 0;
        for (unsigned v = 0; v < ST->nver; v++)
            pending |= ST->ver[v].g[atomic_load(&ST->ver[v].gw)].applied_pos < tail;
        for (unsigned i = 0; i < nkids; i++) {
            const char *en = daemon_entry_name(kids[i].kind);
            if (!en)
                continue;
            int ei = entry_by_name(en);
            if (ei < 0 || entry_sum(ei, 0) < tail)
                pending = 1;
        }
        if (!pending || soak_now_ns() > drain_end)
            break;
        soak_sleep_ns(50000000);
    }
    printf("  drained in %.1f s\n", (soak_now_ns() + 60000000000u - drain_end) / 1e9);
    for (unsigned i = 0; i < nkids; i++) {
        const char *en = daemon_entry_name(kids[i].kind);
        if (!en)
            continue;
        int ei = entry_by_name(en);
        uint64_t rp = ei < 0 ? 0 : entry_sum(ei, 0);
        if (rp < tail)
            violation("%s wedged: read position %" PRIu64 " never reached the tail %" PRIu64
                      " (60 s after the producers stopped)", kids[i].name, rp, tail);
    }
}

/* What was committed: the producers' own counts, plus an event a killed
 * producer process committed but did not live to count, if a verifier
 * saw it.  Per bus incarnation (epoch): each producer instance emitted
 * into one. */
static void count_committed(struct run *R)
{
    const uint64_t tail = R->tail;
    const uint32_t E = atomic_load(&ST->epoch);
    uint64_t *committed = calloc(SOAK_MAX_PROD, sizeof *committed);
    static struct epoch_sum ep[SOAK_MAX_EPOCH];
    uint64_t committed_sum = 0, dropped_sum = 0;
    for (uint32_t p = 0; p < n_instances(); p++) {
        committed[p] = atomic_load(&ST->prod[p].committed);
        dropped_sum += atomic_load(&ST->prod[p].dropped);
        for (unsigned v = 0; v < ST->nver; v++) {
            struct soak_verifier *sv = &ST->ver[v];
            soak_verifier_recover(sv);
            uint64_t ns = sv->rec[p][atomic_load(&sv->which[p])].next_seq;
            if (ns == committed[p] + 1 && atomic_load(&ST->prod[p].is_process))
                committed[p] = ns;
            else if (ns > committed[p])
                violation("soak-v%u saw producer %u seq %" PRIu64 " but only %" PRIu64 " were committed",
                          v, p, ns - 1, committed[p]);
        }
        committed_sum += committed[p];
        struct epoch_sum *es = &ep[atomic_load(&ST->prod[p].epoch) % SOAK_MAX_EPOCH];
        es->committed += committed[p];
        es->dropped += atomic_load(&ST->prod[p].dropped);
    }
    uint64_t uncommitted = 0, positions = 0;
    for (uint32_t e = 0; e <= E; e++) {
        struct epoch_sum *es = &ep[e];
        es->known = e == E || atomic_load(&ST->epoch_state[e]) == 1;
        es->tail = e == E ? tail : atomic_load(&ST->epoch_tail[e]);
        const uint64_t bus_dropped_e = (e == E ? atomic_load(&cbus_bus_header(BUS)->dropped) : epoch_dropped[e]) -
                                       FS.dropped_injected_epoch[e];
        if (!es->known) {
            /* Truncated: its final tail and its last drops died with the
             * segment; the header was read just before.  So only: the bus
             * counted no drop a producer did not see. */
            if (bus_dropped_e > es->dropped + prod_kills_epoch[e])
                violation("epoch %u (truncated): the bus counted %" PRIu64 " drops before the truncation, the "
                          "producers only %" PRIu64, e, bus_dropped_e, es->dropped);
            continue;
        }
        positions += es->tail;
        if (es->committed > es->tail)
            violation("epoch %u: more events committed (%" PRIu64 ") than positions claimed (%" PRIu64 ")",
                      e, es->committed, es->tail);
        es->uncommitted = es->tail >= es->committed ? es->tail - es->committed : 0;
        uncommitted += es->uncommitted;
        /* Never-committed positions: claims of killed producer processes,
         * plus the positions the soak added to tail (nobody claimed those). */
        if (es->uncommitted > prod_kills_epoch[e] + FS.tail_positions_epoch[e] ||
            es->uncommitted < FS.tail_positions_epoch[e])
            violation("epoch %u: %" PRIu64 " positions never committed, not within the %" PRIu64
                      " added to tail + the %" PRIu64 " producer processes killed", e, es->uncommitted,
                      FS.tail_positions_epoch[e], prod_kills_epoch[e]);
        /* less what the soak added to the counter itself */
        if (bus_dropped_e < es->dropped || bus_dropped_e - es->dropped > prod_kills_epoch[e])
            violation("epoch %u: the bus counted %" PRIu64 " drops, the producers %" PRIu64 " (%" PRIu64
                      " producer processes killed)", e, bus_dropped_e, es->dropped, prod_kills_epoch[e]);
    }
    R->E = E;
    R->committed = committed;
    R->ep = ep;
    R->committed_sum = committed_sum;
    R->dropped_sum = dropped_sum;
    R->uncommitted = uncommitted;
    R->positions = positions;
}

/* What the run did, in numbers. */
static void report(const struct run *R)
{
    const uint64_t elapsed = R->elapsed, positions = R->positions, committed_sum = R->committed_sum;
    const uint64_t uncommitted = R->uncommitted, dropped_sum = R->dropped_sum;
    const uint32_t E = R->E;
    printf("cbus-soak: %.1f s, %" PRIu64 " positions, %" PRIu64 " events committed (%.0f/s), %" PRIu64
           " uncommitted claims (killed producers), %" PRIu64 " emits dropped by the lossless bound\n",
           elapsed / 1e9, positions, committed_sum, committed_sum / (elapsed / 1e9), uncommitted, dropped_sum);
    if (E)
        printf("  %u bus incarnations (%" PRIu64 " re-created, %" PRIu64 " truncated); positions and uncommitted "
               "claims count the incarnations whose final tail is known\n", E + 1, FS.recreations, FS.truncations);
    printf("  chaos: %" PRIu64 " kills (%" PRIu64 " producer processes), %" PRIu64 " stalls (%" PRIu64
           " short < stall timeout, %" PRIu64 " long > it), %" PRIu64 " collector faults, %" PRIu64
           " consumers untethered by the bus (the last incarnation), %" PRIu64 " slow-reader phases\n",
           kills_total, prod_kills_total, stalls_short + stalls_long, stalls_short, stalls_long,
           collector_faults, atomic_load(&cbus_bus_header(BUS)->untethered) - FS.untethered_injected_epoch[E], throttles);
    printf("  segment faults: %" PRIu64 " counter writes (+%" PRIu64 " drops, +%" PRIu64
           " untethers injected), %" PRIu64 " slot corruptions, %" PRIu64 " consumer-entry writes (%" PRIu64
           " heartbeats zeroed), %" PRIu64 " tail jumps (+%" PRIu64 " positions), %" PRIu64
           " forged entries (%" PRIu64 " untethered by the bus, longest held %.1f s, %" PRIu64
           " evicted by the soak after the bound, %" PRIu64 " at the end), %" PRIu64 " re-creations, %" PRIu64
           " truncations\n",
           FS.counters, FS.dropped_injected, FS.untethered_injected, FS.slots, FS.entries,
           FS.entry_heartbeats, FS.tail_jumps, FS.tail_positions, FS.forged, FS.forged_untethered,
           FS.forged_max_ns / 1e9, FS.forged_evicted, FS.forged_evicted_at_end, FS.recreations,
           FS.truncations);
    for (unsigned i = 0; i < nkids; i++)
        if (kids[i].kind != K_PRODUCER)
            printf("  %-16s kills %u, stops %u short / %u long, slow phases %u, faults %u\n",
                   kids[i].name, kids[i].kills, kids[i].stops_short, kids[i].stops_long,
                   kids[i].throttles, kids[i].faults);
    printf("  %-16s kills %" PRIu64 " (%u instances)\n", "producer procs", prod_kills_total,
           n_instances() - G.threads);
}

/* Invariant 6: how long the library held a producer (check_held). */
static void check_waits(const struct run *R)
{
    atomic_store(&sched_stop, 1);
    pthread_join(R->sampler, NULL);
    const uint64_t sched = atomic_load(&sched_delay_max);
    printf("  library's max producer wait %.3f ms (wall clock; the machine delayed a 1 ms sleeper "
           "by up to %.1f ms)\n", max_wait_seen / 1e6, sched / 1e6);
    check_held(R->steal1 - R->steal0, R->irq1 - R->irq0);
}

/* cbus-cost's totals against the soak's independent sum. */
static void check_cost(const struct run *R)
{
    const int *have = R->have;
    const uint64_t tail = R->tail;
    if (have[K_COST]) {
        char msg[768];
        int excused = 0;
        int c = daemons_cost_check(cbus_bus_header(BUS)->bus_id, tail, msg, sizeof msg, &excused);
        printf("  cost: %s\n", msg);
        if (cost_unprovable)
            printf("  cost: not exactly checkable in this run: %s\n", cost_unprovable_why);
        if (c < 0)
            violation("cost: %s", msg);
        else if (c > 0 && cost_unprovable)
            printf("  cost: differs (see above)\n");
        else if (c > 0 && !excused && !cost_untethered_seen)
            violation("cost totals differ from the soak's independent sum");
        else if (c > 0)
            printf("  cost: differs, but the daemon was untethered (lost events): not checked\n");
        if (cost_untethered_seen > cost_untethered_excused)
            violation("cbus-cost was untethered (the soak keeps its stalls short: should not happen)");
        else if (cost_untethered_seen)
            printf("  cost: untethered %" PRIu64 " time(s) while the machine kept it %.0f ms on the "
                   "run queue or the disk (>= a quarter of the stall timeout): the host's doing, "
                   "not counted as a violation\n", cost_untethered_seen, cost_rq_excuse_ns / 1e6);
    }
}

/* Stops the daemons: each must exit 0 on SIGTERM. */
static void stop_daemons(void)
{
    for (unsigned i = 0; i < nkids; i++) {
        if (kids[i].kind == K_PRODUCER || kids[i].state == C_OFF)
            continue;
        int st;
        child_term(&kids[i], &st, 20000000000u);
        if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st)) {
            const char *how = st == -1 ? "timeout" : WIFEXITED(st) ? "status" : "signal";
            int code = st == -1 ? 0 : WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st);
            /* The collector is a test fixture, not a product daemon: its
             * exit is reported, not counted as a violation of the bus's
             * guarantees. */
            if (kids[i].kind == K_COLLECTOR)
                printf("  WARNING: %s (test fixture) did not exit 0 on SIGTERM (%s %d)\n",
                       kids[i].name, how, code);
            else
                violation("%s did not exit 0 on SIGTERM (%s %d)", kids[i].name, how, code);
            child_log_tail(&kids[i], 8);
        }
    }
}

/* cbus-audit's log, verified by its own verifier. */
static void check_audit(const struct run *R)
{
    const int *have = R->have;
    if (have[K_AUDIT]) {
        char msg[512];
        int a = daemons_audit_verify(msg, sizeof msg);
        printf("  audit verify: %s (exit %d)\n", msg, a);
        if (a != 0)
            violation("cbus-audit verify failed: %s", msg);
    }
}

/* Cleans up, looks for leftovers, and gives the verdict: the exit status. */
static int finish(struct run *R)
{
    uint64_t *committed = R->committed;
    struct thread_arg *ths = R->ths;
    cbus_bus_close(BUS);
    cbus_bus_destroy(G.bus);
    soak_state_close(ST);
    char shm[64];
    snprintf(shm, sizeof shm, "/dev/shm/cbus.%s", G.bus);
    if (access(shm, F_OK) == 0)
        violation("shm segment %s left behind", shm);
    if (violations && G.keep)
        printf("  kept %s for inspection\n", G.tmp);
    else {
        rm_tree(G.tmp);
        if (access(G.tmp, F_OK) == 0)
            violation("temp dir %s left behind", G.tmp);
    }
    free(committed);
    free(ths);
    if (violations) {
        printf("cbus-soak: FAILED, %u invariant violation%s\n", violations, violations > 1 ? "s" : "");
        return 1;
    }
    printf("cbus-soak: OK, all invariants hold\n");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 2 && !strcmp(argv[1], "--role")) {
        if (!strcmp(argv[2], "producer"))
            return soak_producer_main(argc - 2, argv + 2);
        if (!strcmp(argv[2], "verifier"))
            return soak_verifier_main(argc - 2, argv + 2);
        fprintf(stderr, "cbus-soak: unknown role '%s'\n", argv[2]);
        return 2;
    }
    if (parse_args(argc, argv))
        return 2;
    struct run R = {0};
    int r;
    if ((r = strict_daemons_present()) || (r = set_up_paths()) || (r = set_up_state()) ||
        (r = set_up_bus()) || (r = start_consumers(&R)))
        return r;
    start_producers(&R);
    run_chaos(&R);
    stop_producers(&R);
    drain(&R);
    count_committed(&R);
    report(&R);
    check_waits(&R);
    check_verifiers(R.E, R.ep, R.committed);
    check_cost(&R);
    stop_daemons();
    check_audit(&R);
    return finish(&R);
}
