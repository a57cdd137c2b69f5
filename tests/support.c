#include "support.h"

#include <cbus/bus.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

const char *test_bus_name(char *buf, size_t len)
{
    static unsigned counter;
    const char *prefix = getenv("CBUS_TEST_PREFIX");
    snprintf(buf, len, "%.12s_%d_%u", prefix ? prefix : "test", (int)getpid(), counter++);
    return buf;
}

void test_bus_create(const char *name, uint64_t capacity)
{
    struct cbus_create_opts o = {.capacity = capacity};
    cbus_bus_destroy(name);
    int r = cbus_bus_create(name, &o);
    if (r) {
        fprintf(stderr, "cbus_bus_create(%s): %s\n", name, cbus_strerror(r));
        abort();
    }
}

uint64_t test_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void test_cpu_mark(struct test_cpu_mark *m)
{
    m->wall_ns = clock_ns(CLOCK_MONOTONIC);
    m->cpu_ns = clock_ns(CLOCK_THREAD_CPUTIME_ID);
}

uint64_t test_offcpu_ns(const struct test_cpu_mark *m)
{
    /* CPU time first: wall time read after it only makes the result larger
     * by the read itself, never smaller than the real off-CPU time. */
    uint64_t cpu = clock_ns(CLOCK_THREAD_CPUTIME_ID) - m->cpu_ns;
    uint64_t wall = clock_ns(CLOCK_MONOTONIC) - m->wall_ns;
    return wall > cpu ? wall - cpu : 0;
}

void test_sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) && errno == EINTR) {
    }
}

int test_wait_pid(pid_t pid, unsigned timeout_ms)
{
    uint64_t end = test_now_ms() + timeout_ms;
    int status;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return status;
        if (r < 0)
            return -1;
        if (test_now_ms() > end) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return -1;
        }
        test_sleep_ms(2);
    }
}

int cbus_test_strict(void)
{
    const char *s = getenv("CBUS_TEST_STRICT");
    return s && !strcmp(s, "1");
}

int cbus_test_skip_code(const char *why)
{
    if (cbus_test_strict()) {
        fprintf(stderr, "FAIL: CBUS_TEST_STRICT=1, so this cannot be skipped: %s\n", why);
        return 1;
    }
    fprintf(stderr, "skip: %s\n", why);
    return 77;
}
