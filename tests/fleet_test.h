/* A fleet on one machine, for the fleet suites of cbus-cost and
 * cbus-ratelimit (issue 21): one real redis-server (redis_test.h), FLEET_NODES
 * buses each with a daemon and a load generator, a page the generators count
 * in, a temporary directory.  Every process forked here dies with the test
 * (PR_SET_PDEATHSIG) and teardown kills and reaps what is left. */
#ifndef CBUS_TESTS_FLEET_TEST_H
#define CBUS_TESTS_FLEET_TEST_H

#include <cbus/producer.h>

#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>

#include "redis_test.h"

#define FLEET_NODES 3

struct fleet_shared {
    _Atomic uint64_t sent[FLEET_NODES];   /* requests each node's load sent */
    _Atomic int stop;                     /* the loads stop */
};

struct fleet_test {
    struct redis_test rs;
    char dir[256];
    char bus[FLEET_NODES][64];
    pid_t daemons[FLEET_NODES], loads[FLEET_NODES];
    struct fleet_shared *sh;
    pid_t parent_pid;
};

extern struct fleet_test fleet;

/* Redis (skipped or failed by cbus_test_skip_or_fail when there is no
 * redis-server), the buses (4096 slots), the page, /tmp/cbus-<tag>-test-XXXXXX. */
void fleet_setup(const char *tag);
void fleet_teardown(void);
/* SIGKILL and reap each of the FLEET_NODES pids in p that is set. */
void fleet_stop_all(pid_t *p);
/* DIR/n<node>.<what>, in one of four rotating buffers. */
const char *fleet_path(int node, const char *what);
/* The whole file (up to 256 KiB) in a static buffer, or NULL. */
char *fleet_read(const char *path);
void fleet_write(const char *path, const char *text);
/* Forks node's daemon: argv (NULL-ended; argv[0] the binary), stdout and
 * stderr to fleet_path(node, "log"). */
void fleet_start_daemon(int node, const char *const *argv);
/* Forks node's load: a context from make_ctx(ctx, node), then every
 * gap_us cbus_admit on the node's bus; when it allows, llm_start then
 * llm_end (usage u, or reply), counted in sh->sent[node]; until sh->stop. */
void fleet_start_load(int node, void (*make_ctx)(cbus_ctx *ctx, int node),
                      const struct cbus_usage *u, const char *reply, unsigned gap_us);

/* The integer field of the only key matching pattern in the test's Redis;
 * -1 when it does not answer, when not exactly one key matches or the field
 * is not set; with zero_if_unset, 0 for no key or an unset field (a bucket
 * read but never charged). */
long long fleet_redis_field(const char *pattern, const char *field, int zero_if_unset);

#endif
