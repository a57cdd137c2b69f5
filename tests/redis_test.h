/* A real redis-server for tests (issue 21): started on a free loopback
 * port in a temporary directory, no persistence, killed at the end. */
#ifndef CBUS_COMMON_TESTS_REDIS_TEST_H
#define CBUS_COMMON_TESTS_REDIS_TEST_H

#include <sys/types.h>

struct redis_test {
    pid_t pid;
    unsigned port;
    char dir[128];
    const char *password;   /* set before start: --requirepass, and AUTH for our own checks */
};

/* Starts redis-server (on port, or a free one when port is 0) and waits
 * until it answers PING.  Returns 0, -ENOENT (no redis-server: the caller
 * skips or fails with cbus_test_skip_or_fail), or -errno. */
int redis_test_start(struct redis_test *r, unsigned port);
/* SIGKILL and reap; idempotent (the port and dir are kept for a restart). */
void redis_test_kill(struct redis_test *r);
/* SIGSTOP / SIGCONT: a Redis that stops answering without closing. */
void redis_test_pause(struct redis_test *r, int paused);
/* A command for the test's own checks (a hiredis-format string); returns
 * the reply as an integer, or the string reply parsed, or -1. */
long long redis_test_int(const struct redis_test *r, const char *fmt, ...);
/* Number of keys, and of keys outside prefix (0 is what a test wants). */
long long redis_test_keys_outside(const struct redis_test *r, const char *prefix, long long *total);

#endif
