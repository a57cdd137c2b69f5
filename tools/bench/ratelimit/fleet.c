/* Fleet overshoot and sync cost (issue 21 item 4): N simulated nodes in one
 * process, each a real limiter in fleet mode with its own connection to one
 * real redis-server (started here on a loopback port), saturated by alice:
 * every millisecond each node offers a request, sent when its own limiter
 * (rl_check) allows it.  The verdict is immediate here, so what this counts
 * is the algorithm's overshoot (blind windows, leases, rounding), not the
 * reaction time of a daemon's loop (the multi-process test has that).
 *
 *   cbus-bench-ratelimit-fleet [-u USERS] [seconds] [nodes...]
 *
 * With -u, each node's offers go round-robin over USERS users, so a batch
 * carries that many keys: the CPU figure for a node with many active keys
 * (the overshoot columns then count all users together).
 *
 * For each N: sent vs what GCRA allows in the run (burst + rate * T), with
 * local_share = 1/N (leases) and 1 (no lease), and the thread CPU time the
 * sync turns took per node per second. */
#include <cbus/layout.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cluster.h"
#include "config.h"
#include "fleet.h"
#include "limiter.h"
#include "redis_test.h"
#include "rules.h"

#define MS UINT64_C(1000000)
#define MAXN 64

static uint64_t mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t cpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

#define BURST 100
#define RATE_PER_S 10

static unsigned users = 1;

static int run(unsigned port, unsigned n, double share, unsigned secs, const char *prefix,
               double *overshoot, double *cpu_us_per_node_s)
{
    rl_limiter *l[MAXN];
    rl_fleet *f[MAXN];
    for (unsigned i = 0; i < n; i++) {
        struct rl_rules rs;
        rl_rules_init(&rs);
        char err[256];
        unsigned bad;
        if (rl_rules_add(&rs, "user=* rpm=600 burst=100", 1, err, sizeof err) ||
            rl_rules_finish(&rs, &bad, err, sizeof err)) {
            fprintf(stderr, "rules: %s\n", err);
            return 1;
        }
        if (rl_new(&l[i], &rs, NULL))
            return 1;
        struct cbus_cluster_conf c;
        cbus_cluster_conf_init(&c);
        c.enabled = 1;
        snprintf(c.host, sizeof c.host, "127.0.0.1");
        c.port = port;
        snprintf(c.prefix, sizeof c.prefix, "%s", prefix);
        snprintf(c.node, sizeof c.node, "n%u", i);
        c.local_share = share;
        c.timeout_ns = 500 * MS;
        if (rl_fleet_open(&f[i], l[i], &c))
            return 1;
    }
    struct cbus_event ev;
    memset(&ev, 0, sizeof ev);
    ev.kind = CBUS_EV_LLM_START;
    snprintf(ev.user, sizeof ev.user, "alice");
    ev.key_hash[CBUS_KEY_USER] = cbus_key_hash("alice", 5);
    uint64_t tick = 0;
    /* Every node up before the clock starts. */
    uint64_t end = mono() + 5000 * MS;
    for (unsigned i = 0; i < n; i++)
        while (rl_fleet_sync(f[i], mono()) != 0)
            if (mono() > end) {
                fprintf(stderr, "node %u never synced\n", i);
                return 1;
            }
    uint64_t sent = 0, sync_cpu = 0;
    uint64_t t0 = mono(), stop = t0 + (uint64_t)secs * 1000 * MS, next = t0;
    while (mono() < stop) {
        uint64_t now = mono();
        if (users > 1) {
            snprintf(ev.user, sizeof ev.user, "user-%u", (unsigned)(tick++ % users));
            ev.key_hash[CBUS_KEY_USER] = cbus_key_hash(ev.user, strlen(ev.user));
        }
        for (unsigned i = 0; i < n; i++) {
            ev.ts_mono_ns = now;
            if (rl_check(l[i], &ev, now, NULL) == CBUS_ALLOW) {
                rl_feed(l[i], &ev);
                sent++;
            }
        }
        uint64_t c0 = cpu();
        for (unsigned i = 0; i < n; i++)
            rl_fleet_sync(f[i], mono());
        sync_cpu += cpu() - c0;
        if (getenv("FLEET_DEBUG") && (next - t0) % (250 * MS) == 0) {
            struct rl_stats st;
            rl_get_stats(l[0], &st);
            uint64_t ra = 0;
            ev.ts_mono_ns = now;
            int v = rl_check(l[0], &ev, now, &ra);
            printf("t=%.2f sent %llu node0 requests %llu verdict %d retry %.3f\n",
                   (double)(now - t0) / 1e9, (unsigned long long)sent,
                   (unsigned long long)st.requests, v, (double)ra / 1e9);
        }
        next += MS;
        while (mono() < next)
            ;
    }
    double t = (double)(mono() - t0) / 1e9;
    double allowed = (BURST + RATE_PER_S * t) * (users < (unsigned)(t * 1000) ? users : 1);
    if (users > 1) /* lightly loaded keys: every offer conforms */
        allowed = (double)sent;
    *overshoot = (double)sent - allowed;
    *cpu_us_per_node_s = (double)sync_cpu / 1e3 / n / t;
    printf("  N=%-3u local_share=%-5.3f sent %6llu  allowed %6.0f  over %+6.0f (%+.1f%% of the "
           "limit; %u nodes alone: %.0f)  sync CPU %.0f us per node-second\n",
           n, share, (unsigned long long)sent, allowed, *overshoot, 100.0 * *overshoot / allowed,
           n, n * allowed, *cpu_us_per_node_s);
    for (unsigned i = 0; i < n; i++) {
        rl_fleet_close(f[i]);
        rl_free(l[i]);
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 2 && !strcmp(argv[1], "-u")) {
        users = (unsigned)atoi(argv[2]);
        if (!users)
            users = 1;
        argc -= 2;
        argv += 2;
    }
    unsigned secs = argc > 1 ? (unsigned)atoi(argv[1]) : 5;
    unsigned ns[16] = {1, 3, 10}, nn = 3;
    if (argc > 2) {
        nn = 0;
        for (int i = 2; i < argc && nn < 16; i++)
            ns[nn++] = (unsigned)atoi(argv[i]);
    }
    struct redis_test rs;
    memset(&rs, 0, sizeof rs);
    int r = redis_test_start(&rs, 0);
    if (r) {
        fprintf(stderr, "redis-server: %s\n", strerror(-r));
        return 1;
    }
    printf("fleet overshoot: user=* rpm=600 burst=100, every node offers 1000 requests/s, "
           "%u s, sync every 100 ms, %u user(s)\n", secs, users);
    int rc = 0;
    for (unsigned k = 0; k < nn && !rc; k++) {
        if (ns[k] < 1 || ns[k] > MAXN)
            continue;
        double o, c;
        char prefix[32];
        snprintf(prefix, sizeof prefix, "bench%u:", 2 * k);
        rc |= run(rs.port, ns[k], 1.0 / ns[k], secs, prefix, &o, &c);
        snprintf(prefix, sizeof prefix, "bench%u:", 2 * k + 1);
        if (ns[k] > 1)
            rc |= run(rs.port, ns[k], 1.0, secs, prefix, &o, &c);
    }
    redis_test_kill(&rs);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", rs.dir);
    if (system(cmd)) {
    }
    return rc;
}
