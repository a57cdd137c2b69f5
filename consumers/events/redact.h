/* Secrets out of log lines: the one place that decides what of a URL a log
 * may show.  Webhook and collector URLs carry credentials in the userinfo
 * (https://user:pass@host) and tokens in the query (?token=...), and log
 * files are read by more people than the config file is. */
#ifndef CBUS_COMMON_REDACT_H
#define CBUS_COMMON_REDACT_H

#include <stddef.h>

/* Writes url to out with its userinfo, query and fragment replaced by
 * three stars: "https://u:p@host:8443/hook?token=x#f" becomes
 * "https://" "***@host:8443/hook?" "***#" "***" (quoted in pieces here only
 * because a slash before a star opens a comment).
 * Scheme, host, port and path are kept (they say where, not who).  Text
 * that is not a URL (no scheme) loses whatever precedes its last '@'
 * before a '?' or '#', and whatever follows those.  Control bytes become '?'
 * so the result is one printable line.  Always NUL-terminates (outlen > 0);
 * a result longer than out is cut.  Returns out. */
char *cbus_redact_url(char *out, size_t outlen, const char *url);

/* Buffer size that holds any redaction of a URL of n bytes (each part that
 * is replaced becomes at most 3 bytes longer). */
#define CBUS_REDACT_SIZE(n) ((n) + 16)

#endif
