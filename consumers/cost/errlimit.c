#include "errlimit.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "log.h"

#define DEFAULT_INTERVAL_NS UINT64_C(60000000000)

static void emit(struct cost_errlimit *e, int is_error, const char *line)
{
    if (e->emit)
        e->emit(e->arg, is_error, line);
    else if (is_error)
        cbus_log_error("%s", line);
    else
        cbus_log_info("%s", line);
}

static void summarise(struct cost_errlimit *e, const char *tail)
{
    char line[700];
    snprintf(line, sizeof line, "%s: repeated %llu times%s", e->last,
             (unsigned long long)e->repeats, tail);
    emit(e, 1, line);
    e->repeats = 0;
}

void cost_errlimit_fail(struct cost_errlimit *e, uint64_t now_ns, const char *fmt, ...)
{
    char msg[sizeof e->last];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    uint64_t every = e->interval_ns ? e->interval_ns : DEFAULT_INTERVAL_NS;
    if (e->last[0] && !strcmp(msg, e->last)) {
        e->repeats++;
        if (now_ns - e->summary_ns >= every) {
            summarise(e, " (still failing)");
            e->summary_ns = now_ns;
        }
        return;
    }
    if (e->last[0] && e->repeats)
        summarise(e, "");
    memcpy(e->last, msg, sizeof e->last);
    e->repeats = 0;
    e->summary_ns = now_ns;
    emit(e, 1, msg);
}

void cost_errlimit_ok(struct cost_errlimit *e, uint64_t now_ns)
{
    (void)now_ns;
    if (!e->last[0])
        return;
    if (e->repeats)
        summarise(e, ", then succeeded");
    else {
        char line[700];
        snprintf(line, sizeof line, "%s: succeeded again", e->last);
        emit(e, 0, line);
    }
    e->last[0] = '\0';
}

void cost_errlimit_flush(struct cost_errlimit *e)
{
    if (e->last[0] && e->repeats)
        summarise(e, " (at exit)");
}
