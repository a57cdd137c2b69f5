/* consumers/events/units.c: durations and sizes as configs and flags write
 * them, and what each parser refuses. */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdint.h>

#include "units.h"

TestSuite(events_units);

static uint64_t dur(const char *text)
{
    uint64_t v = 0;
    cr_assert_eq(cbus_parse_duration_ns(text, &v), 0, "%s", text);
    return v;
}

static uint64_t size(const char *text)
{
    uint64_t v = 0;
    cr_assert_eq(cbus_parse_size(text, &v), 0, "%s", text);
    return v;
}

Test(events_units, durations_take_every_suffix)
{
    cr_assert_eq(dur("2"), UINT64_C(2000000000)); /* no suffix: seconds */
    cr_assert_eq(dur("2s"), UINT64_C(2000000000));
    cr_assert_eq(dur("250ms"), UINT64_C(250000000));
    cr_assert_eq(dur("7us"), UINT64_C(7000));
    cr_assert_eq(dur("15ns"), UINT64_C(15));
    cr_assert_eq(dur("1.5m"), UINT64_C(90000000000));
    cr_assert_eq(dur("1h"), UINT64_C(3600000000000));
    cr_assert_eq(dur("7d"), UINT64_C(604800000000000));
    cr_assert_eq(dur("0"), 0);
}

Test(events_units, durations_refuse_what_is_not_one)
{
    /* (strtod underneath: "1e3" and "0x10" are taken, as 1000 s and 16 s) */
    static const char *const bad[] = {"", "s", "-1s", "+1s", " 1s", "1 s", "1sec", "1S", "ms1",
                                      "nan", "inf", "1e"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        uint64_t v = 42;
        cr_assert_eq(cbus_parse_duration_ns(bad[i], &v), -EINVAL, "'%s'", bad[i]);
        cr_assert_eq(v, 42, "'%s' wrote %llu", bad[i], (unsigned long long)v);
    }
    uint64_t v;
    cr_assert_eq(cbus_parse_duration_ns(NULL, &v), -EINVAL);
    cr_assert_eq(cbus_parse_duration_ns("300000000d", &v), -ERANGE); /* past 2^64 ns */
}

Test(events_units, sizes_are_powers_of_1024)
{
    cr_assert_eq(size("4096"), 4096);
    cr_assert_eq(size("4k"), 4096);
    cr_assert_eq(size("4K"), 4096);
    cr_assert_eq(size("4KiB"), 4096);
    cr_assert_eq(size("4kB"), 4096);
    cr_assert_eq(size("256M"), UINT64_C(256) << 20);
    cr_assert_eq(size("1GiB"), UINT64_C(1) << 30);
    cr_assert_eq(size("0"), 0);
}

Test(events_units, sizes_refuse_fractions_units_and_overflow)
{
    static const char *const bad[] = {"", "k", "-1", "1.5M", "1T", "1 M", "1MiBs", "1iB", "M1"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        uint64_t v = 42;
        cr_assert_eq(cbus_parse_size(bad[i], &v), -EINVAL, "'%s'", bad[i]);
        cr_assert_eq(v, 42, "'%s' wrote %llu", bad[i], (unsigned long long)v);
    }
    uint64_t v;
    cr_assert_eq(cbus_parse_size(NULL, &v), -EINVAL);
    cr_assert_eq(cbus_parse_size("18446744073709551616", &v), -ERANGE); /* 2^64 */
    cr_assert_eq(cbus_parse_size("17179869184G", &v), -ERANGE);        /* 2^34 GiB = 2^64 */
    cr_assert_eq(size("17179869183G"), UINT64_C(17179869183) << 30);
}
