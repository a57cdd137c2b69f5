/* Budgets across a fleet (issue 21): three buses, each with its own
 * cbus-cost and a load generator spending for one tenant, against one real
 * redis-server started here.  Each node alone spends about a third of the
 * budget, so no node's own ledger reaches even the 50% mark: only the
 * fleet's sum in Redis does, and each mark alerts once for the fleet. */
#include <criterion/criterion.h>

#include <cbus/admit.h>
#include <cbus/bus.h>
#include <cbus/producer.h>

#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "fleet_test.h"
#include "support.h"

#define BIN CBUS_BINARY_DIR "/consumers/cost/cbus-cost"
#define PRICES CBUS_SOURCE_DIR "/consumers/cost/model_prices_and_context_window.json"
#define NODES FLEET_NODES
#define PICO_PER_CALL INT64_C(5000000000) /* 2,000 gpt-4o input tokens: 0.005 USD */

static void setup(void)
{
    fleet_setup("cfleet");
}

static void teardown(void)
{
    fleet_teardown();
}

static void start_daemon(int node)
{
    char cfg[2048];
    snprintf(cfg, sizeof cfg,
             "[prices]\nfile = %s\n[state]\ncheckpoint_interval = 50ms\nsnapshot_interval = 20ms\n"
             "[budget.tenant.*]\nlimit_usd = 0.10\nperiod = 1d\nthresholds = 50, 80, 100\n"
             "[cluster]\naddress = 127.0.0.1:%u\nprefix = t21c:\nnode = n%d\nlocal_share = 0.333\n"
             "timeout = 400ms\n",
             PRICES, fleet.rs.port, node);
    fleet_write(fleet_path(node, "ini"), cfg);
    char state[512];
    snprintf(state, sizeof state, "%s/state%d", fleet.dir, node);
    const char *argv[] = {BIN, "--bus", fleet.bus[node], "--config", fleet_path(node, "ini"),
                          "--state-dir", state, NULL};
    fleet_start_daemon(node, argv);
}

static void make_ctx(cbus_ctx *ctx, int node)
{
    char user[32];
    snprintf(user, sizeof user, "user-of-n%d", node);
    cbus_ctx_init(ctx);
    cbus_ctx_set_provider(ctx, "openai");
    cbus_ctx_set_model(ctx, "gpt-4o");
    cbus_ctx_set_user(ctx, user);
    cbus_ctx_set_tenant(ctx, "acme");
}

/* Spends 0.005 USD for tenant acme every 20 ms while the node admits it. */
static void start_load(int node)
{
    static const struct cbus_usage u = {.input_tokens = 2000, .usage_present = CBUS_USAGE_INPUT};
    fleet_start_load(node, make_ctx, &u, NULL, 20000);
}

static int count_in(const char *text, const char *needle)
{
    int n = 0;
    for (const char *s = text; s && (s = strstr(s, needle)); s += strlen(needle))
        n++;
    return n;
}

static long long fleet_spend(void)
{
    return fleet_redis_field("t21c:cost:tenant:*", "s", 0);
}

TestSuite(cost_fleet, .init = setup, .fini = teardown, .timeout = 90);

Test(cost_fleet, a_tenant_budget_crossing_alerts_once_for_the_fleet)
{
    for (int i = 0; i < NODES; i++)
        start_daemon(i);
    /* Every node synced once before the spending starts. */
    uint64_t end = test_now_ms() + 10000;
    for (int i = 0; i < NODES; i++) {
        const char *log;
        while (!(log = fleet_read(fleet_path(i, "log"))) || !strstr(log, "synced with redis")) {
            cr_assert_lt(test_now_ms(), end, "node %d never synced: %s", i, log ? log : "");
            test_sleep_ms(10);
        }
    }
    for (int i = 0; i < NODES; i++)
        start_load(i);
    /* Every node's producers see the tenant stopped: the fleet's verdict
     * is in each node's own admission table. */
    cbus_producer *p[NODES];
    cbus_ctx ctx[NODES];
    for (int i = 0; i < NODES; i++) {
        cr_assert_eq(cbus_producer_open(&p[i], fleet.bus[i], NULL), 0);
        make_ctx(&ctx[i], i);
    }
    end = test_now_ms() + 20000;
    for (int i = 0; i < NODES; i++)
        while (cbus_admit(p[i], &ctx[i], NULL) != CBUS_BUDGET_EXCEEDED) {
            cr_assert_lt(test_now_ms(), end, "node %d never stopped acme; sent %llu; log:\n%s", i,
                         (unsigned long long)atomic_load(&fleet.sh->sent[i]), fleet_read(fleet_path(i, "log")));
            test_sleep_ms(10);
        }
    test_sleep_ms(300); /* anything in flight reaches its daemon */
    atomic_store(&fleet.sh->stop, 1);
    for (int i = 0; i < NODES; i++) {
        int st = test_wait_pid(fleet.loads[i], 5000);
        fleet.loads[i] = 0;
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "load %d: %d", i, st);
    }
    uint64_t total = 0, per[NODES];
    for (int i = 0; i < NODES; i++)
        total += per[i] = atomic_load(&fleet.sh->sent[i]);
    cr_log_info("fleet: %llu calls (%llu %llu %llu) on a 20-call budget", (unsigned long long)total,
                (unsigned long long)per[0], (unsigned long long)per[1], (unsigned long long)per[2]);
    /* The verdict came from the fleet: some node was stopped (above) while
     * it had spent under the budget itself.  How the calls split between
     * the nodes is the scheduler's: under stress-ng one load process spent
     * 24 of them before the others ran (it used to be asserted < 16). */
    int below = -1;
    for (int i = 0; i < NODES && below < 0; i++)
        if (per[i] < 20)
            below = i;
    cr_assert_geq(below, 0, "every node spent the whole budget alone (%llu %llu %llu)",
                  (unsigned long long)per[0], (unsigned long long)per[1], (unsigned long long)per[2]);
    /* The fleet's spend, exact to the pico-dollar, once. */
    long long want = (long long)total * PICO_PER_CALL, got = -1;
    end = test_now_ms() + 5000;
    while ((got = fleet_spend()) != want && test_now_ms() < end)
        test_sleep_ms(20);
    cr_assert_eq(got, want, "redis holds %lld pico, %llu calls sent (%lld)", got,
                 (unsigned long long)total, want);
    cr_assert_geq(total, 20, "the budget (20 calls) was reached: %llu", (unsigned long long)total);
    /* The lease bound (docs/fleet.md): over by one call per node (its cost
     * is known at its llm_end) plus what each node's producer starts while
     * the verdict is on its way; the margin allows 5 of those per node
     * (100 ms at one call per 20 ms).
     * Without leases (each node spending what the fleet had left until the
     * next sync) this ran 30-36 calls. */
    cr_assert_leq(total, 20 + NODES * (1 + 5), "sent %llu calls on a 20-call budget",
                  (unsigned long long)total);
    /* Each mark alerted once, on one node or another. */
    int thr50 = 0, thr80 = 0, exceeded = 0;
    static char logs[NODES][1 << 18];
    for (int i = 0; i < NODES; i++) {
        snprintf(logs[i], sizeof logs[i], "%s", fleet_read(fleet_path(i, "log")));
        thr50 += count_in(logs[i], "budget tenant acme: threshold 50% reached");
        thr80 += count_in(logs[i], "budget tenant acme: threshold 80% reached");
        exceeded += count_in(logs[i], "budget tenant acme: EXCEEDED");
    }
    cr_assert_eq(thr50, 1, "50%%: %d\n%s\n%s\n%s", thr50, logs[0], logs[1], logs[2]);
    cr_assert_eq(thr80, 1, "80%%: %d\n%s\n%s\n%s", thr80, logs[0], logs[1], logs[2]);
    cr_assert_eq(exceeded, 1, "exceeded: %d\n%s\n%s\n%s", exceeded, logs[0], logs[1], logs[2]);
    /* The snapshot says the cluster is up and nothing was cut off. */
    char snap[512];
    snprintf(snap, sizeof snap, "%s/state0/snapshot.json", fleet.dir);
    const char *s = fleet_read(snap);
    cr_assert(s && strstr(s, "\"cluster\":{\"state\":\"up\"") && strstr(s, "\"alerts\":"),
              "%s", s ? s : "(none)");
    for (int i = 0; i < NODES; i++)
        cbus_producer_close(p[i]);
}

static const char *snap_of(int node)
{
    static char p[512];
    snprintf(p, sizeof p, "%s/state%d/snapshot.json", fleet.dir, node);
    return p;
}

Test(cost_fleet, redis_away_holds_each_node_at_its_share_and_alerts_once_on_return)
{
    for (int i = 0; i < NODES; i++)
        start_daemon(i);
    uint64_t end = test_now_ms() + 10000;
    for (int i = 0; i < NODES; i++) {
        const char *log;
        while (!(log = fleet_read(fleet_path(i, "log"))) || !strstr(log, "synced with redis")) {
            cr_assert_lt(test_now_ms(), end, "node %d never synced", i);
            test_sleep_ms(10);
        }
    }
    redis_test_pause(&fleet.rs, 1);
    end = test_now_ms() + 10000;
    /* The log's line, not the snapshot's "away": that is also what a
     * snapshot written before the first sync says (the cluster is not up
     * yet), which let the loads start before a node noticed the pause. */
    for (int i = 0; i < NODES; i++) {
        const char *log;
        while (!(log = fleet_read(fleet_path(i, "log"))) ||
               !strstr(log, "deciding on local limits")) {
            cr_assert_lt(test_now_ms(), end, "node %d never away", i);
            test_sleep_ms(10);
        }
    }
    for (int i = 0; i < NODES; i++)
        start_load(i);
    /* Alone, each node spends its share of the 20 calls, then holds acme. */
    cbus_producer *p[NODES];
    cbus_ctx ctx[NODES];
    end = test_now_ms() + 20000;
    for (int i = 0; i < NODES; i++) {
        cr_assert_eq(cbus_producer_open(&p[i], fleet.bus[i], NULL), 0);
        make_ctx(&ctx[i], i);
        while (cbus_admit(p[i], &ctx[i], NULL) != CBUS_BUDGET_EXCEEDED) {
            cr_assert_lt(test_now_ms(), end, "node %d never held acme; log:\n%s", i,
                         fleet_read(fleet_path(i, "log")));
            test_sleep_ms(10);
        }
    }
    test_sleep_ms(500);
    uint64_t away_sent = 0;
    for (int i = 0; i < NODES; i++) {
        away_sent += atomic_load(&fleet.sh->sent[i]);
        const char *log = fleet_read(fleet_path(i, "log"));
        cr_assert(strstr(log, "held here until redis answers"), "%s", log);
        cr_assert(!strstr(log, "threshold 50% reached"), "an alert without the fleet: %s", log);
    }
    cr_log_info("away: %llu calls held at the nodes' shares", (unsigned long long)away_sent);
    /* A third of the budget each (7 calls), one more each for the call
     * whose cost tips it, and what starts while the hold is on its way. */
    cr_assert_leq(away_sent, 20 + NODES * 5, "away: %llu calls on a 20-call budget",
                  (unsigned long long)away_sent);
    redis_test_pause(&fleet.rs, 0);
    /* Back: the counts reach Redis once; the marks alert once each. */
    end = test_now_ms() + 15000;
    int exceeded = 0;
    while (exceeded < 1 && test_now_ms() < end) {
        exceeded = 0;
        for (int i = 0; i < NODES; i++)
            exceeded += count_in(fleet_read(fleet_path(i, "log")), "budget tenant acme: EXCEEDED");
        test_sleep_ms(20);
    }
    test_sleep_ms(500);
    atomic_store(&fleet.sh->stop, 1);
    for (int i = 0; i < NODES; i++) {
        int st = test_wait_pid(fleet.loads[i], 5000);
        fleet.loads[i] = 0;
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "load %d: %d", i, st);
    }
    uint64_t total = 0;
    for (int i = 0; i < NODES; i++)
        total += atomic_load(&fleet.sh->sent[i]);
    long long want = (long long)total * PICO_PER_CALL, got = -1;
    end = test_now_ms() + 5000;
    while ((got = fleet_spend()) != want && test_now_ms() < end)
        test_sleep_ms(20);
    cr_assert_eq(got, want, "redis holds %lld pico, %llu calls sent", got,
                 (unsigned long long)total);
    int thr50 = 0;
    exceeded = 0;
    for (int i = 0; i < NODES; i++) {
        const char *log = fleet_read(fleet_path(i, "log"));
        thr50 += count_in(log, "budget tenant acme: threshold 50% reached");
        exceeded += count_in(log, "budget tenant acme: EXCEEDED");
    }
    cr_assert_eq(thr50, 1, "50%%: %d", thr50);
    cr_assert_eq(exceeded, 1, "exceeded: %d", exceeded);
    for (int i = 0; i < NODES; i++) {
        cr_assert_eq(cbus_admit(p[i], &ctx[i], NULL), CBUS_BUDGET_EXCEEDED, "node %d", i);
        const char *s = fleet_read(snap_of(i));
        cr_assert(s && strstr(s, "\"state\":\"up\""), "%s", s ? s : "");
        cbus_producer_close(p[i]);
    }
}
