/* sbuf's terminal escaper: what a hostile producer string becomes in a
 * human view. */
#include <criterion/criterion.h>

#include <string.h>

#include "sbuf.h"

static char *human(const char *s, size_t n)
{
    static struct sbuf b;
    sbuf_free(&b);
    sbuf_human_str(&b, s, n);
    cr_assert(!b.failed);
    return b.data;
}

/* No byte a terminal acts on survives: C0, DEL, C1 (raw or as UTF-8). */
static void assert_terminal_safe(const char *out)
{
    for (const unsigned char *p = (const unsigned char *)out; *p; p++) {
        cr_assert(*p >= 0x20 && *p != 0x7f, "control byte 0x%02x in '%s'", *p, out);
        if (*p == 0xc2)
            cr_assert(p[1] < 0x80 || p[1] > 0x9f, "C1 control in '%s'", out);
    }
}

Test(events_sbuf, human_escapes_controls_and_keeps_text)
{
    cr_assert_str_eq(human("plain gpt-4o", (size_t)-1), "plain gpt-4o");
    cr_assert_str_eq(human("a\x1b[2Jb", (size_t)-1), "a\\x1b[2Jb");
    cr_assert_str_eq(human("l1\nl2\tx\r", (size_t)-1), "l1\\nl2\\tx\\r");
    cr_assert_str_eq(human("a\\x1b", (size_t)-1), "a\\\\x1b"); /* a literal backslash is not an escape */
    cr_assert_str_eq(human("\x7f", (size_t)-1), "\\x7f");
    cr_assert_str_eq(human("caf\xc3\xa9 \xe2\x82\xac", (size_t)-1), "caf\xc3\xa9 \xe2\x82\xac");
}

Test(events_sbuf, human_escapes_invalid_utf8_and_c1)
{
    cr_assert_str_eq(human("open\xff" "ai", (size_t)-1), "open\\xffai");
    cr_assert_str_eq(human("\x9b" "31m", (size_t)-1), "\\x9b31m");           /* raw 8-bit CSI */
    cr_assert_str_eq(human("\xc2\x9b" "31m", (size_t)-1), "\\u009b31m");     /* CSI as UTF-8 */
    cr_assert_str_eq(human("\xc0\xaf", (size_t)-1), "\\xc0\\xaf");           /* overlong '/' */
    cr_assert_str_eq(human("\xed\xa0\x80", (size_t)-1), "\\xed\\xa0\\x80"); /* surrogate */
    cr_assert_str_eq(human("cut\xe2\x82", (size_t)-1), "cut\\xe2\\x82");     /* cut sequence */
    cr_assert_str_eq(human("a\xe2\x80\xae" "b", (size_t)-1), "a\\u202eb");   /* bidi override */
    cr_assert_str_eq(human("\xef\xbb\xbf", (size_t)-1), "\\ufeff");
}

Test(events_sbuf, human_stops_at_length_or_nul)
{
    char field[4] = {'a', '\x1b', 'b', 'c'}; /* a full fixed field has no NUL */
    struct sbuf b;
    sbuf_init(&b);
    sbuf_human_field(&b, field);
    cr_assert_str_eq(b.data, "a\\x1bbc");
    sbuf_free(&b);
    cr_assert_str_eq(human("ab\0cd", 5), "ab");
}

/* Every byte value, in every position: the output is terminal-safe and
 * within the documented bound. */
Test(events_sbuf, human_output_safe_and_bounded_for_all_bytes)
{
    unsigned char in[512];
    for (unsigned i = 0; i < 255; i++) {
        in[2 * i] = (unsigned char)(i + 1);
        in[2 * i + 1] = (unsigned char)(255 - i);
    }
    for (size_t n = 1; n <= 510; n++) {
        const char *out = human((const char *)in, n);
        assert_terminal_safe(out);
        cr_assert_leq(strlen(out), 4 * n);
    }
}

Test(events_sbuf, human_buf_never_cuts_an_escape)
{
    char out[6];
    size_t n = cbus_human_str(out, sizeof out, "ab\x1b" "cd", (size_t)-1);
    cr_assert_str_eq(out, "ab"); /* "\x1b" (4) does not fit after "ab" in 5 */
    cr_assert_eq(n, 2);
    char big[CBUS_HUMAN_MAX(8)];
    cbus_human_str(big, sizeof big, "\xff\xff\xff\xff\xff\xff\xff\xff", 8);
    cr_assert_eq(strlen(big), 32);
    cr_assert_eq(cbus_human_str(out, 1, "abc", 3), 0);
    cr_assert_str_eq(out, "");
}
