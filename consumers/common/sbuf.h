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
/* A bounded event field (may lack its NUL) as a JSON string. */
#define sbuf_json_field(b, field) sbuf_json_str((b), (field), strnlen((field), sizeof(field)))
/* Prometheus label value escaping (backslash, quote, newline). */
void sbuf_prom_label(struct sbuf *b, const char *s, size_t n);

#endif
