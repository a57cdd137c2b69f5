/* Helpers shared by the test suites. */
#ifndef CBUS_TESTS_SUPPORT_H
#define CBUS_TESTS_SUPPORT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* A bus name unique to this process and call: "<CBUS_TEST_PREFIX>_<pid>_<n>". */
const char *test_bus_name(char *buf, size_t len);
/* Creates a bus with capacity slots (0 = default); aborts the test on failure. */
void test_bus_create(const char *name, uint64_t capacity);
/* Waits for pid with a deadline; returns its wait status, or -1 after killing it. */
int test_wait_pid(pid_t pid, unsigned timeout_ms);
/* Monotonic milliseconds. */
uint64_t test_now_ms(void);
/* Sleeps ms milliseconds. */
void test_sleep_ms(unsigned ms);

/* Telling a wait from a preemption.  A producer's recorded wait is measured
 * on the bus clock, which runs on while the thread is descheduled, so on a
 * loaded machine it exceeds the wait bound by however long the scheduler
 * kept the thread off a CPU: a wall-clock bound on it can always be crossed.
 * The time the thread was ON a CPU cannot be stretched by scheduling, so a
 * test subtracts from a call's recorded wait the time the thread spent off
 * a CPU during that call (wall time less CLOCK_THREAD_CPUTIME_ID time),
 * leaving what the producer spent waiting while it ran.  Steal time is not
 * CPU time (CONFIG_PARAVIRT_TIME_ACCOUNTING) either. */
struct test_cpu_mark {
    uint64_t wall_ns, cpu_ns;
};
void test_cpu_mark(struct test_cpu_mark *m);
/* Nanoseconds this thread spent off a CPU since test_cpu_mark(m). */
uint64_t test_offcpu_ns(const struct test_cpu_mark *m);

/* 1 when CBUS_TEST_STRICT=1 (the test command, scripts/test.sh, sets it):
 * a test that cannot run here (a missing package, binary or privilege) must
 * fail, so CI never passes a test that did not run. */
int cbus_test_strict(void);
/* In a Criterion test: skip it, or fail it under CBUS_TEST_STRICT=1.  The
 * first argument is a string literal (a printf format). */
#define cbus_test_skip_or_fail(...)                                                   \
    do {                                                                              \
        if (cbus_test_strict())                                                       \
            cr_assert_fail("CBUS_TEST_STRICT=1, so this cannot be skipped: " __VA_ARGS__); \
        else                                                                          \
            cr_skip_test(__VA_ARGS__);                                                \
    } while (0)
/* Exit status of a plain test program that cannot run here: 77 (ctest's
 * SKIP_RETURN_CODE), or 1 under CBUS_TEST_STRICT=1; says so on stderr. */
int cbus_test_skip_code(const char *why);

#endif
