/* Repeated identical errors: one line, then a summary (driven clock). */
#include <criterion/criterion.h>

#include <stdio.h>
#include <string.h>

#include "errlimit.h"

#define SEC UINT64_C(1000000000)

static char lines[32][700];
static int n_lines;

static void collect(void *arg, int is_error, const char *line)
{
    (void)arg;
    (void)is_error;
    if (n_lines < 32)
        snprintf(lines[n_lines++], sizeof lines[0], "%s", line);
}

static struct cost_errlimit e;

static void setup(void)
{
    memset(&e, 0, sizeof e);
    e.emit = collect;
    e.interval_ns = 60 * SEC;
    n_lines = 0;
}

TestSuite(cost_errlimit, .init = setup);

Test(cost_errlimit, identical_failures_log_once_then_summarise_on_success)
{
    /* 239 ENOSPC retries in 7 s: the case from the issue */
    for (int i = 0; i < 239; i++)
        cost_errlimit_fail(&e, SEC + (uint64_t)i * (7 * SEC / 239), "%s: %s", "/s/snapshot.json",
                           "No space left on device");
    cr_assert_eq(n_lines, 1);
    cr_assert_str_eq(lines[0], "/s/snapshot.json: No space left on device");
    cost_errlimit_ok(&e, 9 * SEC);
    cr_assert_eq(n_lines, 2);
    cr_assert(strstr(lines[1], "repeated 238 times"), "%s", lines[1]);
    cr_assert(strstr(lines[1], "succeeded"), "%s", lines[1]);
    /* a new failure after recovery is logged at once */
    cost_errlimit_fail(&e, 10 * SEC, "x: %s", "No space left on device");
    cr_assert_eq(n_lines, 3);
}

Test(cost_errlimit, a_different_message_is_logged_and_closes_the_run)
{
    cost_errlimit_fail(&e, SEC, "a");
    cost_errlimit_fail(&e, SEC, "a");
    cost_errlimit_fail(&e, SEC, "b");
    cr_assert_eq(n_lines, 3);
    cr_assert_str_eq(lines[0], "a");
    cr_assert_str_eq(lines[1], "a: repeated 1 times");
    cr_assert_str_eq(lines[2], "b");
}

Test(cost_errlimit, a_long_run_is_summarised_once_per_interval)
{
    for (uint64_t t = 0; t <= 150; t++) /* one failure a second for 150 s */
        cost_errlimit_fail(&e, SEC + t * SEC, "disk full");
    /* the first line, then a summary at 60 s and 120 s */
    cr_assert_eq(n_lines, 3, "%d", n_lines);
    cr_assert(strstr(lines[1], "repeated 60 times (still failing)"), "%s", lines[1]);
    cr_assert(strstr(lines[2], "repeated 60 times (still failing)"), "%s", lines[2]);
    cost_errlimit_flush(&e);
    cr_assert_eq(n_lines, 4);
    cr_assert(strstr(lines[3], "repeated 30 times"), "%s", lines[3]);
}

Test(cost_errlimit, success_without_a_failure_logs_nothing)
{
    cost_errlimit_ok(&e, SEC);
    cost_errlimit_flush(&e);
    cr_assert_eq(n_lines, 0);
    cost_errlimit_fail(&e, SEC, "once");
    cost_errlimit_ok(&e, 2 * SEC);
    cr_assert_eq(n_lines, 2);
    cr_assert_str_eq(lines[1], "once: succeeded again");
}
