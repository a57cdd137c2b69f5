/* consumers/daemon/cluster.c against a real redis-server (started here on a
 * loopback port), a port where nothing listens, and a fake server that
 * answers garbage. */
#include <criterion/criterion.h>

#include <cbus/cbus.h>

#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cluster.h"
#include "config.h"
#include "log.h"
#include "redis_test.h"
#include "sbuf.h"
#include "support.h"

#define MS UINT64_C(1000000)

/* A plain fleet counter: adds a[1] when the batch is new, returns the total. */
static const char count_lua[] =
    "local function item(k, a, apply, now, at)\n"
    "  if apply then redis.call('INCRBY', k, a[1]) end\n"
    "  return {redis.call('GET', k) or '0'}\n"
    "end\n";
static const struct cbus_cluster_script count_script = {"test", count_lua, 1, 1};

static struct redis_test rs;

static void teardown(void)
{
    redis_test_kill(&rs);
}

static void need_redis(void)
{
    memset(&rs, 0, sizeof rs);
    int r = redis_test_start(&rs, 0);
    if (r == -ENOENT)
        cbus_test_skip_or_fail("no redis-server (apt-get install redis-server)");
    cr_assert_eq(r, 0, "redis-server did not start: %s", strerror(-r));
}

static int conf_parse(struct cbus_cluster_conf *c, const char *text, char *err, size_t errlen)
{
    struct cbus_cfg cfg;
    int r = cbus_cfg_parse(&cfg, "fleet.ini", text, err, errlen);
    if (r)
        return r;
    cbus_cluster_conf_init(c);
    int seen = 0;
    for (size_t i = 0; i < cfg.count && !r; i++)
        if (!strcmp(cfg.entries[i].section, "cluster")) {
            seen = 1;
            r = cbus_cluster_conf_entry(c, &cfg, &cfg.entries[i], err, errlen);
        }
    if (!r)
        r = cbus_cluster_conf_finish(c, &cfg, seen, err, errlen);
    cbus_cfg_free(&cfg);
    return r;
}

static void conf_for(struct cbus_cluster_conf *c, unsigned port, const char *node)
{
    char text[512], err[512];
    snprintf(text, sizeof text,
             "[cluster]\naddress = 127.0.0.1:%u\nprefix = t21:\nnode = %s\ntimeout = 200ms\n", port,
             node);
    cr_assert_eq(conf_parse(c, text, err, sizeof err), 0, "%s", err);
}

struct totals {
    long long v[16];
    unsigned n;
};

static void fill_one(void *arg, cbus_cluster *cl, uint64_t now)
{
    (void)now;
    const char *const *args = arg;
    cr_assert_eq(cbus_cluster_add(cl, "c:x", args, "x", 1), 0);
}

static void apply_tot(void *arg, const void *cookie, size_t cl, const int64_t *res, unsigned n,
                      uint64_t now)
{
    (void)cookie;
    (void)cl;
    (void)now;
    struct totals *t = arg;
    cr_assert_eq(n, 1);
    t->v[t->n++ % 16] = res[0];
}

struct fill_apply {
    const char *const *args;
    struct totals t;
};

static void fill_fa(void *arg, cbus_cluster *cl, uint64_t now)
{
    fill_one((void *)((struct fill_apply *)arg)->args, cl, now);
}

static void apply_fa(void *arg, const void *cookie, size_t cl, const int64_t *res, unsigned n,
                     uint64_t now)
{
    apply_tot(&((struct fill_apply *)arg)->t, cookie, cl, res, n, now);
}

/* cbus_cluster_sync() never waits: turn it until it has an answer, on a
 * clock that starts at t and runs with real time. */
static int sync_at(cbus_cluster *cl, uint64_t t, struct fill_apply *fa)
{
    uint64_t start = cbus_now_ns();
    for (;;) {
        int r = cbus_cluster_sync(cl, t + (cbus_now_ns() - start), fill_fa, apply_fa, fa);
        if (r != -EINPROGRESS)
            return r;
        cr_assert_lt(cbus_now_ns() - start, 5000 * MS, "no answer in 5 s");
        usleep(200);
    }
}

TestSuite(daemon_cluster, .fini = teardown);

Test(daemon_cluster, config_errors_name_the_line)
{
    struct cbus_cluster_conf c;
    char err[512];
    cr_assert_eq(conf_parse(&c, "[cluster]\naddress = 127.0.0.1:6379\n", err, sizeof err), 0, "%s", err);
    cr_assert(c.enabled);
    cr_assert_str_eq(c.host, "127.0.0.1");
    cr_assert_eq(c.port, 6379);
    cr_assert_str_eq(c.prefix, "cbus:");
    cr_assert_eq(c.interval_ns, 100 * MS);
    cr_assert(c.node[0], "node defaults to the host name");
    cr_assert_eq(conf_parse(&c, "[cluster]\naddress = unix:/run/redis.sock\nnode = n1\n", err,
                            sizeof err), 0, "%s", err);
    cr_assert_str_eq(c.unix_path, "/run/redis.sock");
    cr_assert_eq(conf_parse(&c, "[cluster]\naddress = [::1]:7000\nnode=a\n", err, sizeof err), 0);
    cr_assert_str_eq(c.host, "::1");
    cr_assert_eq(c.port, 7000);

    static const struct {
        const char *text, *want;
    } bad[] = {
        {"[cluster]\n\naddress = host:99999\n", "fleet.ini:3: [cluster] address: 'host:99999' is not"},
        {"[cluster]\naddress = :6379\n", "fleet.ini:2: [cluster] address"},
        {"[cluster]\naddress = a:1\ninterval = 1ms\n", "fleet.ini:3: [cluster] interval: want 10ms .. 10s"},
        {"[cluster]\naddress = a:1\nlocal_share = 2\n", "fleet.ini:3: [cluster] local_share"},
        {"[cluster]\naddress = a:1\ntls = true\n", "fleet.ini:3: [cluster] tls: this build's hiredis"},
        {"[cluster]\naddress = a:1\nnode = a b\n", "fleet.ini:3: [cluster] node"},
        {"[cluster]\naddress = a:1\npassword_env = CBUS_T21_NO_SUCH_VAR\n",
         "fleet.ini:3: [cluster] password_env: environment variable CBUS_T21_NO_SUCH_VAR is not set"},
        {"[cluster]\naddress = a:1\nadress = b\n", "fleet.ini:3: [cluster] adress: unknown key"},
        {"[cluster]\nnode = n1\n", "fleet.ini: [cluster]: address is required"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        cr_assert_neq(conf_parse(&c, bad[i].text, err, sizeof err), 0, "accepted: %s", bad[i].text);
        cr_assert(strstr(err, bad[i].want), "case %zu: got '%s', want '%s'", i, err, bad[i].want);
    }
}

Test(daemon_cluster, unreachable_address_is_away_not_fatal)
{
    /* A loopback port where nothing listens: refused at once. */
    struct redis_test none = {0};
    (void)none;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof a;
    cr_assert_eq(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    getsockname(s, (struct sockaddr *)&a, &l);
    unsigned port = ntohs(a.sin_port);
    close(s);
    struct cbus_cluster_conf c;
    conf_for(&c, port, "n1");
    cbus_cluster *cl;
    cr_assert_eq(cbus_cluster_open(&cl, &c, &count_script), 0);
    const char *args[] = {"1"};
    struct fill_apply fa = {.args = args};
    uint64_t now = cbus_now_ns();
    int r = sync_at(cl, now, &fa);
    cr_assert_lt(r, 0);
    /* Backoff: the next tries within the interval do not reconnect. */
    cr_assert_eq(cbus_cluster_sync(cl, now + 1, fill_fa, apply_fa, &fa), -EAGAIN);
    struct cbus_cluster_stats st;
    cbus_cluster_get_stats(cl, now + 500 * MS, &st);
    cr_assert_eq(st.up, 0);
    cr_assert_eq(st.failures, 1);
    cr_assert_eq(st.cutoffs, 1);
    cr_assert(st.cut_off_ns > 400 * MS && st.cut_off_ns <= 500 * MS,
              "cut off counted from the failed start: %llu", (unsigned long long)st.cut_off_ns);
    cr_assert(strstr(st.last_error, "connect"), "%s", st.last_error);
    struct sbuf b;
    sbuf_init(&b);
    cbus_cluster_status_json(cl, &b, now + 500 * MS);
    cr_assert(strstr(b.data, "\"state\":\"away\""), "%s", b.data);
    cr_assert(strstr(b.data, "\"cut_off_ms\":4"), "%s", b.data);
    sbuf_free(&b);
    cr_assert_eq(fa.t.n, 0);
    cbus_cluster_close(cl);
}

Test(daemon_cluster, counts_add_up_and_only_our_prefix_is_touched)
{
    need_redis();
    cr_assert_eq(redis_test_int(&rs, "SET other:key 42"), 0);
    cr_assert_eq(redis_test_int(&rs, "SET t21x 7"), 0); /* a longer name that shares letters */
    struct cbus_cluster_conf c1, c2;
    conf_for(&c1, rs.port, "n1");
    conf_for(&c2, rs.port, "n2");
    cbus_cluster *a, *b;
    cr_assert_eq(cbus_cluster_open(&a, &c1, &count_script), 0);
    cr_assert_eq(cbus_cluster_open(&b, &c2, &count_script), 0);
    const char *three[] = {"3"}, *five[] = {"5"};
    struct fill_apply fa = {.args = three}, fb = {.args = five};
    uint64_t now = cbus_now_ns();
    for (int i = 0; i < 10; i++, now += 100 * MS) {
        cr_assert_eq(sync_at(a, now, &fa), 0);
        cr_assert_eq(sync_at(b, now, &fb), 0);
    }
    cr_assert_eq(fb.t.v[(fb.t.n - 1) % 16], 80, "fleet total read back");
    cr_assert_eq(redis_test_int(&rs, "GET t21:c:x"), 80);
    cr_assert_eq(redis_test_int(&rs, "GET other:key"), 42);
    cr_assert_eq(redis_test_int(&rs, "GET t21x"), 7);
    long long total = 0;
    /* other:key and t21x only: everything we wrote starts with "t21:". */
    cr_assert_eq(redis_test_keys_outside(&rs, "t21:", &total), 2);
    cr_assert_eq(total, 4, "t21:c:x and t21:seq");
    struct cbus_cluster_stats st;
    cbus_cluster_get_stats(a, now, &st);
    cr_assert_eq(st.up, 1);
    cr_assert_eq(st.syncs, 10);
    cr_assert_eq(st.connects, 1);
    cr_assert_eq(st.cut_off_ns, 0);
    cbus_cluster_close(a);
    cbus_cluster_close(b);
}

Test(daemon_cluster, a_batch_whose_reply_was_lost_is_not_counted_twice)
{
    need_redis();
    struct cbus_cluster_conf c;
    conf_for(&c, rs.port, "n1");
    cbus_cluster *cl;
    cr_assert_eq(cbus_cluster_open(&cl, &c, &count_script), 0);
    const char *seven[] = {"7"};
    struct fill_apply fa = {.args = seven};
    uint64_t now = cbus_now_ns();
    cr_assert_eq(sync_at(cl, now, &fa), 0);
    /* Stopped Redis: the batch is sent, the reply does not come in time. */
    redis_test_pause(&rs, 1);
    cr_assert_lt(sync_at(cl, now + 100 * MS, &fa), 0);
    redis_test_pause(&rs, 0);
    /* It ran the script once resumed (the command was in its socket). */
    long long v = 0;
    for (int i = 0; i < 200 && (v = redis_test_int(&rs, "GET t21:c:x")) != 14; i++)
        test_sleep_ms(10);
    cr_assert_eq(v, 14, "the stopped Redis applied the batch when resumed");
    /* The same batch again, after the backoff: recognised, not applied. */
    int r = -EAGAIN;
    for (uint64_t t = now + 200 * MS; r == -EAGAIN; t += 100 * MS)
        r = sync_at(cl, t, &fa);
    cr_assert_eq(r, 0);
    cr_assert_eq(redis_test_int(&rs, "GET t21:c:x"), 14);
    cr_assert_eq(fa.t.v[(fa.t.n - 1) % 16], 14, "read back, not added");
    struct cbus_cluster_stats st;
    cbus_cluster_get_stats(cl, now, &st);
    cr_assert_eq(st.resent, 1);
    cr_assert_eq(st.replays_skipped, 1);
    cr_assert_eq(st.cutoffs, 1);
    cr_assert_eq(st.connects, 2);
    /* The next batch is a new one. */
    cr_assert_eq(sync_at(cl, now + 10000 * MS, &fa), 0);
    cr_assert_eq(redis_test_int(&rs, "GET t21:c:x"), 21);
    cbus_cluster_close(cl);
    /* A restarted daemon (new run, seq from 1 again) is not a replay. */
    cr_assert_eq(cbus_cluster_open(&cl, &c, &count_script), 0);
    cr_assert_eq(sync_at(cl, now, &fa), 0);
    cr_assert_eq(redis_test_int(&rs, "GET t21:c:x"), 28);
    cbus_cluster_close(cl);
}

Test(daemon_cluster, redis_restarted_is_reconnected)
{
    need_redis();
    struct cbus_cluster_conf c;
    conf_for(&c, rs.port, "n1");
    cbus_cluster *cl;
    cr_assert_eq(cbus_cluster_open(&cl, &c, &count_script), 0);
    const char *one[] = {"1"};
    struct fill_apply fa = {.args = one};
    uint64_t now = cbus_now_ns();
    cr_assert_eq(sync_at(cl, now, &fa), 0);
    redis_test_kill(&rs);
    cr_assert_lt(sync_at(cl, now + 100 * MS, &fa), 0);
    cr_assert_eq(redis_test_start(&rs, rs.port), 0);
    /* New server, no scripts loaded, no state: reconnects, loads, applies. */
    int r = -EAGAIN;
    uint64_t t = now + 200 * MS;
    for (; r == -EAGAIN; t += 100 * MS)
        r = sync_at(cl, t, &fa);
    cr_assert_eq(r, 0);
    cr_assert_eq(redis_test_int(&rs, "GET t21:c:x"), 1, "the batch cut off by the kill, once");
    struct cbus_cluster_stats st;
    cbus_cluster_get_stats(cl, t, &st);
    cr_assert_eq(st.up, 1);
    cr_assert_gt(st.cut_off_ns, 0);
    cbus_cluster_close(cl);
}

Test(daemon_cluster, auth_with_password_env_and_a_wrong_password_is_a_clear_error)
{
    memset(&rs, 0, sizeof rs);
    rs.password = "s3cret-t21";
    int r = redis_test_start(&rs, 0);
    if (r == -ENOENT)
        cbus_test_skip_or_fail("no redis-server (apt-get install redis-server)");
    cr_assert_eq(r, 0);
    char text[512], err[512];
    struct cbus_cluster_conf c;
    setenv("CBUS_T21_PW", "s3cret-t21", 1);
    snprintf(text, sizeof text, "[cluster]\naddress = 127.0.0.1:%u\nprefix = t21:\nnode = n1\n"
             "timeout = 400ms\npassword_env = CBUS_T21_PW\n", rs.port);
    cr_assert_eq(conf_parse(&c, text, err, sizeof err), 0, "%s", err);
    cr_assert_str_eq(c.password, "s3cret-t21");
    cbus_cluster *cl;
    cr_assert_eq(cbus_cluster_open(&cl, &c, &count_script), 0);
    const char *two[] = {"2"};
    struct fill_apply fa = {.args = two};
    uint64_t now = cbus_now_ns();
    cr_assert_eq(sync_at(cl, now, &fa), 0);
    cr_assert_eq(redis_test_int(&rs, "GET t21:c:x"), 2);
    cbus_cluster_close(cl);
    /* The wrong password: refused, said so, nothing applied. */
    setenv("CBUS_T21_PW", "wrong", 1);
    cr_assert_eq(conf_parse(&c, text, err, sizeof err), 0, "%s", err);
    cr_assert_eq(cbus_cluster_open(&cl, &c, &count_script), 0);
    cr_assert_lt(sync_at(cl, now, &fa), 0);
    struct cbus_cluster_stats st;
    cbus_cluster_get_stats(cl, now, &st);
    cr_assert(strstr(st.last_error, "AUTH") && strstr(st.last_error, "WRONGPASS"), "%s",
              st.last_error);
    cr_assert_eq(redis_test_int(&rs, "GET t21:c:x"), 2);
    cbus_cluster_close(cl);
    unsetenv("CBUS_T21_PW");
}

/* A server that is not Redis: per connection, one kind of nonsense. */
static pid_t fake_pid;
static unsigned fake_server(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof a;
    cr_assert_eq(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(listen(s, 16), 0);
    getsockname(s, (struct sockaddr *)&a, &l);
    fake_pid = fork();
    cr_assert_geq(fake_pid, 0);
    if (fake_pid == 0) {
        static const char *const answers[][2] = {
            {"+OK\r\n", "+OK\r\n"},                                      /* not a SHA */
            {"\x01\x02garbage\xff\r\n", "x"},                            /* protocol garbage */
            {"$40\r\n0123456789abcdef0123456789abcdef01234567\r\n", "*2\r\n:5\r\n:7\r\n"}, /* short */
            {"$40\r\n0123456789abcdef0123456789abcdef01234567\r\n",
             "*3\r\n:5\r\n:1\r\n$3\r\nabc\r\n"},                          /* not a number */
            {"$40\r\n0123456789abcdef0123456789abcdef01234567\r\n", "-ERR no\r\n"},
            {"$40\r\n0123456789abcdef0123456789abcdef01234567\r\n", "*3\r\n:-1\r\n:1\r\n:3\r\n"},
            {"$40\r\n0123456789abcdef0123456789abcdef01234567\r\n", "*999999999\r\n"}, /* then EOF */
        };
        for (unsigned n = 0;; n++) {
            int c = accept(s, NULL, NULL);
            if (c < 0)
                _exit(0);
            char buf[65536];
            for (int k = 0; k < 2; k++) {
                if (read(c, buf, sizeof buf) <= 0)
                    break;
                const char *ans = answers[n % 7][k];
                if (write(c, ans, strlen(ans)) < 0)
                    break;
            }
            close(c);
        }
    }
    close(s);
    return ntohs(a.sin_port);
}

Test(daemon_cluster, garbage_answers_are_survived)
{
    unsigned port = fake_server();
    struct cbus_cluster_conf c;
    conf_for(&c, port, "n1");
    cbus_cluster *cl;
    cr_assert_eq(cbus_cluster_open(&cl, &c, &count_script), 0);
    const char *one[] = {"1"};
    struct fill_apply fa = {.args = one};
    uint64_t t = cbus_now_ns();
    int tries = 0;
    for (int i = 0; i < 200 && tries < 14; i++, t += 3000 * MS) {
        int r = sync_at(cl, t, &fa);
        cr_assert_neq(r, 0, "nonsense taken for a reply");
        tries += r != -EAGAIN;
    }
    cr_assert_eq(fa.t.n, 0, "nothing applied from garbage");
    struct cbus_cluster_stats st;
    cbus_cluster_get_stats(cl, t, &st);
    cr_assert_eq(st.up, 0);
    cr_assert_geq(st.failures, 14);
    cbus_cluster_close(cl);
    kill(fake_pid, SIGKILL);
    waitpid(fake_pid, NULL, 0);
}
