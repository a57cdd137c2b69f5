/* Durations and sizes written as text (declared in units.h). */
#include "units.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

int cbus_parse_duration_ns(const char *text, uint64_t *out)
{
    if (!text || !isdigit((unsigned char)*text))
        return -EINVAL;
    char *end;
    errno = 0;
    double x = strtod(text, &end);
    if (errno || end == text || !isfinite(x) || x < 0)
        return -EINVAL;
    double mult;
    if (!*end || !strcmp(end, "s"))
        mult = 1e9;
    else if (!strcmp(end, "ns"))
        mult = 1;
    else if (!strcmp(end, "us"))
        mult = 1e3;
    else if (!strcmp(end, "ms"))
        mult = 1e6;
    else if (!strcmp(end, "m"))
        mult = 60e9;
    else if (!strcmp(end, "h"))
        mult = 3600e9;
    else if (!strcmp(end, "d"))
        mult = 86400e9;
    else
        return -EINVAL;
    double ns = x * mult;
    if (ns > 1.8e19)
        return -ERANGE;
    *out = (uint64_t)ns;
    return 0;
}

int cbus_parse_size(const char *text, uint64_t *out)
{
    if (!text || !isdigit((unsigned char)*text))
        return -EINVAL;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(text, &end, 10);
    if (errno)
        return -ERANGE;
    unsigned shift = 0;
    if (*end == 'k' || *end == 'K')
        shift = 10;
    else if (*end == 'm' || *end == 'M')
        shift = 20;
    else if (*end == 'g' || *end == 'G')
        shift = 30;
    else if (*end)
        return -EINVAL;
    if (shift) {
        end++;
        if (*end == 'i')
            end++;
        if (*end == 'B' || *end == 'b')
            end++;
        if (*end)
            return -EINVAL;
    }
    if (shift && x > (UINT64_MAX >> shift))
        return -ERANGE;
    *out = (uint64_t)x << shift;
    return 0;
}
