#include "log.h"

#include "sbuf.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static const char *log_name = "cbus";
static enum cbus_log_level log_min = CBUS_LOG_INFO;

void cbus_log_init(const char *daemon_name, enum cbus_log_level min_level)
{
    if (daemon_name)
        log_name = daemon_name;
    log_min = min_level;
}

void cbus_log(enum cbus_log_level level, const char *fmt, ...)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    if (level < log_min)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char line[2048], msg[2048];
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s: ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, log_name, names[level]);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* Messages carry producer strings (keys, names, paths from configs):
     * escaped like every human view, so a line stays one line and cannot
     * drive the terminal or journal viewer that shows it.  A backslash is
     * kept as it is: callers that already escaped a string (cost's budget
     * lines) are not escaped twice.  0x5c never occurs inside a UTF-8
     * sequence, so cutting at backslashes cuts no character. */
    if (n > 0 && (size_t)n < sizeof line) {
        size_t o = (size_t)n;
        for (const char *m = msg; *m && o + 1 < sizeof line;) {
            size_t seg = strcspn(m, "\\");
            o += cbus_human_str(line + o, sizeof line - o, m, seg);
            m += seg;
            if (*m == '\\' && o + 1 < sizeof line) {
                line[o++] = '\\';
                line[o] = '\0';
                m++;
            } else if (*m) {
                break; /* the escaped segment filled the line */
            }
        }
    }
    /* One write per line so lines from several daemons do not interleave. */
    size_t len = strnlen(line, sizeof line - 2);
    line[len++] = '\n';
    fwrite(line, 1, len, stderr);
}
