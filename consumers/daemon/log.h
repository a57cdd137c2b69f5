/* One-line log messages for the consumer daemons: timestamp, daemon, level.
 * Daemons print; the library never does. */
#ifndef CBUS_COMMON_LOG_H
#define CBUS_COMMON_LOG_H

#include <stdarg.h>

enum cbus_log_level { CBUS_LOG_DEBUG, CBUS_LOG_INFO, CBUS_LOG_WARN, CBUS_LOG_ERROR };

/* Sets the name printed on every line and the lowest level shown. */
void cbus_log_init(const char *daemon_name, enum cbus_log_level min_level);
void cbus_log(enum cbus_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define cbus_log_debug(...) cbus_log(CBUS_LOG_DEBUG, __VA_ARGS__)
#define cbus_log_info(...)  cbus_log(CBUS_LOG_INFO, __VA_ARGS__)
#define cbus_log_warn(...)  cbus_log(CBUS_LOG_WARN, __VA_ARGS__)
#define cbus_log_error(...) cbus_log(CBUS_LOG_ERROR, __VA_ARGS__)

#endif
