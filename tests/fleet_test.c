/* The fleet suites' fixture: see fleet_test.h. */
#include "fleet_test.h"

#include <criterion/criterion.h>

#include <cbus/admit.h>
#include <cbus/bus.h>

#include <errno.h>
#include <hiredis/hiredis.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support.h"

struct fleet_test fleet;

void fleet_setup(const char *tag)
{
    memset(&fleet, 0, sizeof fleet);
    fleet.parent_pid = getpid();
    int r = redis_test_start(&fleet.rs, 0);
    if (r == -ENOENT)
        cbus_test_skip_or_fail("no redis-server (apt-get install redis-server)");
    cr_assert_eq(r, 0, "redis-server did not start: %s", strerror(-r));
    snprintf(fleet.dir, sizeof fleet.dir, "/tmp/cbus-%s-test-XXXXXX", tag);
    cr_assert_not_null(mkdtemp(fleet.dir));
    for (int i = 0; i < FLEET_NODES; i++) {
        test_bus_name(fleet.bus[i], sizeof fleet.bus[i]);
        cbus_bus_destroy(fleet.bus[i]);
        struct cbus_create_opts o = {.capacity = 4096};
        cr_assert_eq(cbus_bus_create(fleet.bus[i], &o), 0);
    }
    fleet.sh = mmap(NULL, sizeof *fleet.sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                    -1, 0);
    cr_assert_neq(fleet.sh, MAP_FAILED);
    memset(fleet.sh, 0, sizeof *fleet.sh);
}

void fleet_stop_all(pid_t *p)
{
    for (int i = 0; i < FLEET_NODES; i++)
        if (p[i] > 0) {
            kill(p[i], SIGKILL);
            waitpid(p[i], NULL, 0);
            p[i] = 0;
        }
}

void fleet_teardown(void)
{
    fleet_stop_all(fleet.loads);
    fleet_stop_all(fleet.daemons);
    redis_test_kill(&fleet.rs);
    for (int i = 0; i < FLEET_NODES; i++)
        cbus_bus_destroy(fleet.bus[i]);
    if (fleet.sh)
        munmap(fleet.sh, sizeof *fleet.sh);
    fleet.sh = NULL;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s'", fleet.dir, fleet.rs.dir);
    cr_assert_eq(system(cmd), 0);
}

const char *fleet_path(int node, const char *what)
{
    static char p[4][512];
    static int k;
    char *o = p[k++ % 4];
    snprintf(o, 512, "%s/n%d.%s", fleet.dir, node, what);
    return o;
}

char *fleet_read(const char *path)
{
    static char buf[1 << 18];
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

void fleet_write(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

void fleet_start_daemon(int node, const char *const *argv)
{
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != fleet.parent_pid)
            _exit(127); /* the test died before the prctl */
        int fd = open(fleet_path(node, "log"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
            dup2(fd, 1);
        }
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    fleet.daemons[node] = pid;
}

void fleet_start_load(int node, void (*make_ctx)(cbus_ctx *ctx, int node),
                      const struct cbus_usage *u, const char *reply, unsigned gap_us)
{
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        cbus_producer *p;
        if (cbus_producer_open(&p, fleet.bus[node], NULL))
            _exit(3);
        cbus_ctx c;
        make_ctx(&c, node);
        while (!atomic_load(&fleet.sh->stop)) {
            if (cbus_admit(p, &c, NULL) == CBUS_ALLOW) {
                if (cbus_llm_start(p, &c, "hello", NULL) || cbus_llm_end(p, &c, u, reply))
                    _exit(4);
                atomic_fetch_add(&fleet.sh->sent[node], 1);
            }
            usleep(gap_us);
        }
        cbus_producer_close(p);
        _exit(0);
    }
    fleet.loads[node] = pid;
}

long long fleet_redis_field(const char *pattern, const char *field, int zero_if_unset)
{
    struct timeval tv = {.tv_sec = 1};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", (int)fleet.rs.port, tv);
    if (!c || c->err) {
        if (c)
            redisFree(c);
        return -1;
    }
    long long n = -1;
    redisReply *keys = redisCommand(c, "KEYS %s", pattern);
    if (keys && keys->type == REDIS_REPLY_ARRAY && keys->elements == 1) {
        redisReply *v = redisCommand(c, "HGET %s %s", keys->element[0]->str, field);
        if (v && v->type == REDIS_REPLY_STRING)
            n = strtoll(v->str, NULL, 10);
        else if (v && v->type == REDIS_REPLY_NIL && zero_if_unset)
            n = 0;
        if (v)
            freeReplyObject(v);
    } else if (keys && keys->type == REDIS_REPLY_ARRAY && keys->elements == 0 && zero_if_unset) {
        n = 0;
    }
    if (keys)
        freeReplyObject(keys);
    redisFree(c);
    return n;
}
