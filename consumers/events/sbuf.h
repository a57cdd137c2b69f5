/* A growable byte buffer with printf and JSON string escaping: how the
 * daemons and cbusctl build JSON, Prometheus text and HTTP bodies. */
#ifndef CBUS_COMMON_SBUF_H
#define CBUS_COMMON_SBUF_H

#include <stddef.h>
#include <stdint.h>

struct sbuf {
    char *data;     /* NUL-terminated while not failed */
    size_t len;
    size_t cap;
    int failed;     /* an allocation failed: contents are incomplete */
};

void sbuf_init(struct sbuf *b);
void sbuf_free(struct sbuf *b);
void sbuf_reset(struct sbuf *b);                 /* len = 0, keeps memory */
int sbuf_reserve(struct sbuf *b, size_t extra);  /* 0 or -ENOMEM */
void sbuf_add(struct sbuf *b, const void *p, size_t n);
void sbuf_puts(struct sbuf *b, const char *s);
void sbuf_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s (n bytes, or up to a NUL) as a quoted JSON string: escapes
 * quotes, backslashes and control bytes; invalid UTF-8 becomes U+FFFD. */
void sbuf_json_str(struct sbuf *b, const char *s, size_t n);
/* Length of s (n bytes, or up to a NUL) once every byte that is not part of
 * a valid UTF-8 sequence is replaced by U+FFFD, as sbuf_json_str() does;
 * *valid is set when nothing needs replacing (the length is then the input's).
 * Protobuf strings must be UTF-8: the OTLP protobuf encoder sizes a string
 * with this before writing its length prefix. */
size_t cbus_utf8_clean_len(const char *s, size_t n, int *valid);
/* Appends s (n bytes, or up to a NUL) with invalid UTF-8 replaced by U+FFFD,
 * unquoted: exactly cbus_utf8_clean_len() bytes. */
void sbuf_utf8_clean(struct sbuf *b, const char *s, size_t n);
/* Exactly n bytes (a body section: a NUL is data, escaped as \u0000). */
void sbuf_json_bytes(struct sbuf *b, const char *s, size_t n);
/* A bounded event field (may lack its NUL) as a JSON string. */
#define sbuf_json_field(b, field) sbuf_json_str((b), (field), strnlen((field), sizeof(field)))
/* Appends s (n bytes, or up to a NUL) made safe for a terminal: a human
 * view (cbusctl tail, cbus-ratelimit status, cbus-cost report) shows
 * producer strings, and a producer must not be able to move the cursor,
 * retitle the window or hide text.  Backslash becomes "\\", \n \t \r
 * stay readable, other C0 controls, DEL and bytes that are not valid UTF-8
 * become \xNN, C1 controls (U+0080..U+009F: CSI and friends) and the
 * invisible or reordering format characters (zero-width, bidi overrides
 * and isolates, BOM) become \uNNNN.  Everything else valid UTF-8 is kept.
 * The output is at most 4 bytes per input byte (CBUS_HUMAN_MAX). */
void sbuf_human_str(struct sbuf *b, const char *s, size_t n);
/* Exactly n bytes (a NUL is data, shown as \x00). */
void sbuf_human_bytes(struct sbuf *b, const char *s, size_t n);
#define sbuf_human_field(b, field) sbuf_human_str((b), (field), strnlen((field), sizeof(field)))
#define CBUS_HUMAN_MAX(n) (4 * (size_t)(n) + 1) /* out size that never truncates */
/* The same into a fixed buffer (always NUL-terminated when cap > 0); an
 * escape that does not fit is dropped whole, never cut.  Returns the
 * length written. */
size_t cbus_human_str(char *out, size_t cap, const char *s, size_t n);
/* Prometheus label value escaping (backslash, quote, newline). */
void sbuf_prom_label(struct sbuf *b, const char *s, size_t n);

#endif
