/* Money and token arithmetic for cbus-cost.
 *
 * Unit: the pico-dollar (1e-12 USD).  Per-token rates are converted from the
 * price table's doubles once, at load time, to integer pico-dollars per token
 * (rounded to nearest); from then on every cost is an exact integer product
 * and every total an exact integer sum.  The finest rate in LiteLLM's table is
 * 1.3e-10 USD/token (130 pico-dollars), so pico-dollars lose nothing a nano-
 * dollar unit would keep.  A u32 token count times a rate can pass 2^64, so
 * products and totals are 128-bit (2^128 pico-dollars is 3.4e14 USD).
 */
#ifndef CBUS_COST_MONEY_H
#define CBUS_COST_MONEY_H

#include <stddef.h>
#include <stdint.h>

__extension__ typedef unsigned __int128 cost_u128;

#define COST_PICO_PER_USD UINT64_C(1000000000000)
#define COST_U128_MAX (~(cost_u128)0)

/* Writes v pico-dollars as a decimal USD string with 12 fractional digits
 * ("12.000000000345").  Returns the length written (buffer of 64 suffices). */
size_t cost_pico_format_usd(char *out, size_t outlen, cost_u128 v);
/* Writes a u128 as a decimal integer string. */
size_t cost_u128_format(char *out, size_t outlen, cost_u128 v);
/* Parses a decimal integer string into *out.  Returns 0 or -EINVAL. */
int cost_u128_parse(const char *s, cost_u128 *out);
/* pico-dollars to USD as a double, for display and Prometheus only. */
static inline double cost_pico_to_usd(cost_u128 v)
{
    return (double)(v / COST_PICO_PER_USD) + (double)(uint64_t)(v % COST_PICO_PER_USD) / 1e12;
}
/* A USD amount from a config or price file to pico-dollars, rounded to
 * nearest.  Returns 0, or -ERANGE when negative, not finite or above max_usd. */
int cost_usd_to_pico(double usd, double max_usd, cost_u128 *out);

#endif
