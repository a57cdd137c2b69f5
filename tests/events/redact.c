/* The shared URL redactor (consumers/events/redact.c): what of a URL a
 * log line may show. */
#include <criterion/criterion.h>

#include <string.h>

#include "redact.h"

TestSuite(events_redact);

static const char *red(const char *url)
{
    static char out[256];
    return cbus_redact_url(out, sizeof out, url);
}

Test(events_redact, url_userinfo_query_and_fragment_are_starred)
{
    cr_assert_str_eq(red("https://alice:s3cret@hooks.example.com:8443/services/x?token=t0k#frag"),
                     "https://***@hooks.example.com:8443/services/x?***#***");
    cr_assert_str_eq(red("http://user@host/p"), "http://***@host/p");
    cr_assert_str_eq(red("http://host/p?a=1&b=2"), "http://host/p?***");
    cr_assert_str_eq(red("http://host#only-frag"), "http://host#***");
    cr_assert_str_eq(red("http://host?q"), "http://host?***");
}

Test(events_redact, url_without_secrets_is_unchanged)
{
    cr_assert_str_eq(red("http://127.0.0.1:4318/v1/traces"), "http://127.0.0.1:4318/v1/traces");
    cr_assert_str_eq(red("https://[::1]:8080/"), "https://[::1]:8080/");
    cr_assert_str_eq(red(""), "");
    cr_assert_str_eq(red(NULL), "");
}

Test(events_redact, password_holding_at_sign_and_at_in_path)
{
    /* the last '@' before the path ends the userinfo */
    cr_assert_str_eq(red("https://u:p@ss@host/a@b"), "https://***@host/a@b");
    /* an '@' only in the path or query is not userinfo */
    cr_assert_str_eq(red("https://host/a@b?c@d"), "https://host/a@b?***");
}

Test(events_redact, text_that_is_not_a_url_is_redacted_too)
{
    cr_assert_str_eq(red("ftp//u:pw@host/x?k"), "***@host/x?***");
    cr_assert_str_eq(red("u:pw@host/x?k=v"), "***@host/x?***");
    cr_assert_str_eq(red("hxxp://u:pw@host"), "hxxp://***@host");
}

Test(events_redact, control_bytes_and_short_buffers)
{
    cr_assert_str_eq(red("http://host/a\nb\x1b[31m"), "http://host/a?b?[31m");
    char small[12];
    cbus_redact_url(small, sizeof small, "https://user:pw@host/path?x");
    cr_assert_str_eq(small, "https://***");
    char one[1] = {'x'};
    cbus_redact_url(one, 1, "https://a:b@c");
    cr_assert_eq(one[0], '\0');
    const char *long_url = "https://user:password@example.com/a/very/long/path?token=abc";
    char exact[CBUS_REDACT_SIZE(64)];
    cbus_redact_url(exact, sizeof exact, long_url);
    cr_assert_str_eq(exact, "https://***@example.com/a/very/long/path?***");
}
