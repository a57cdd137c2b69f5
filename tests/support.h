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

#endif
