#include "money.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

size_t cost_u128_format(char *out, size_t outlen, cost_u128 v)
{
    char tmp[48];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + (unsigned)(v % 10));
        v /= 10;
    } while (v);
    if (outlen == 0)
        return 0;
    size_t w = n < outlen - 1 ? n : outlen - 1;
    for (size_t i = 0; i < w; i++)
        out[i] = tmp[n - 1 - i];
    out[w] = '\0';
    return w;
}

size_t cost_pico_format_usd(char *out, size_t outlen, cost_u128 v)
{
    char whole[48];
    cost_u128_format(whole, sizeof whole, v / COST_PICO_PER_USD);
    int n = snprintf(out, outlen, "%s.%012llu", whole,
                     (unsigned long long)(uint64_t)(v % COST_PICO_PER_USD));
    return n < 0 ? 0 : (size_t)n;
}

int cost_u128_parse(const char *s, cost_u128 *out)
{
    if (!s || !*s)
        return -EINVAL;
    cost_u128 v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -EINVAL;
        cost_u128 n = v * 10 + (unsigned)(*s - '0');
        if (n / 10 != v)
            return -EINVAL;
        v = n;
    }
    *out = v;
    return 0;
}

int cost_usd_to_pico(double usd, double max_usd, cost_u128 *out)
{
    if (!isfinite(usd) || usd < 0 || usd > max_usd)
        return -ERANGE;
    /* Split so that amounts above 2^53 pico-dollars keep their cents exact:
     * the whole dollars are an integer, only the fraction is scaled. */
    double whole = floor(usd);
    double frac = usd - whole;
    long long fp = llround(frac * 1e12);
    *out = (cost_u128)(uint64_t)whole * COST_PICO_PER_USD + (cost_u128)(uint64_t)fp;
    return 0;
}
