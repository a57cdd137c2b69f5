/* The sequence proof: request_id = "soak:<producer>:<seq>:<check>".
 *
 * <check> is 16 hex digits of a hash over the producer, the sequence, the
 * event kind and, for llm_end, the usage counts, so a verifier catches an
 * event that was torn or mixed with another one in the ring, not only a
 * missing or repeated sequence number. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "soak.h"

/* The emit fills duration and time to first token (and their bits): the
 * proof covers only what the producer chose. */
#define TOKEN_BITS (CBUS_USAGE_INPUT | CBUS_USAGE_OUTPUT | CBUS_USAGE_CACHE_READ | \
                    CBUS_USAGE_CACHE_CREATION | CBUS_USAGE_REASONING)

static uint64_t mix(uint64_t h, uint64_t v)
{
    h ^= v + UINT64_C(0x9e3779b97f4a7c15) + (h << 6) + (h >> 2);
    h *= UINT64_C(0xff51afd7ed558ccd);
    return h ^ (h >> 33);
}

static uint64_t proof_hash(uint32_t prod, uint64_t seq, unsigned kind, const struct cbus_usage *u)
{
    uint64_t h = mix(mix(mix(UINT64_C(0x736f616b), prod), seq), kind);
    if (kind == CBUS_EV_LLM_END && u)
        h = mix(mix(mix(mix(mix(mix(h, u->input_tokens), u->output_tokens), u->cache_read_tokens),
                        u->cache_creation_tokens), u->reasoning_tokens),
                 u->usage_present & TOKEN_BITS);
    return h;
}

void soak_proof_format(char *out, size_t len, uint32_t prod, uint64_t seq, unsigned kind,
                       const struct cbus_usage *usage)
{
    snprintf(out, len, SOAK_PROOF_PREFIX "%" PRIu32 ":%" PRIu64 ":%016" PRIx64, prod, seq,
             proof_hash(prod, seq, kind, usage));
}

int soak_proof_check(const struct cbus_event *ev, uint32_t *prod, uint64_t *seq)
{
    char rid[CBUS_REQUEST_LEN + 1];
    CBUS_FIELD(rid, ev->request_id);
    const size_t pl = sizeof SOAK_PROOF_PREFIX - 1;
    if (strncmp(rid, SOAK_PROOF_PREFIX, pl))
        return -EBADMSG;
    char *end;
    const char *s = rid + pl;
    unsigned long long p = strtoull(s, &end, 10);
    if (end == s || *end != ':' || p >= SOAK_MAX_PROD)
        return -EBADMSG;
    s = end + 1;
    unsigned long long q = strtoull(s, &end, 10);
    if (end == s || *end != ':')
        return -EBADMSG;
    s = end + 1;
    unsigned long long h = strtoull(s, &end, 16);
    if (end - s != 16 || *end)
        return -EBADMSG;
    if (h != proof_hash((uint32_t)p, q, ev->kind, &ev->u.usage))
        return -EBADMSG;
    *prod = (uint32_t)p;
    *seq = q;
    return 0;
}

/* Usage counts from a random word, following the header's convention:
 * input includes cache reads and creations, output includes reasoning. */
void soak_usage_make(struct cbus_usage *u, uint64_t rnd)
{
    memset(u, 0, sizeof *u);
    u->cache_read_tokens = (uint32_t)(rnd % 700);
    u->cache_creation_tokens = (uint32_t)((rnd >> 10) % 300);
    u->input_tokens = u->cache_read_tokens + u->cache_creation_tokens + (uint32_t)((rnd >> 20) % 2000) + 1;
    u->reasoning_tokens = (uint32_t)((rnd >> 32) % 200);
    u->output_tokens = u->reasoning_tokens + (uint32_t)((rnd >> 40) % 800) + 1;
    u->usage_present = CBUS_USAGE_INPUT | CBUS_USAGE_OUTPUT | CBUS_USAGE_CACHE_READ |
                       CBUS_USAGE_CACHE_CREATION | CBUS_USAGE_REASONING;
    u->finish_reason = CBUS_FINISH_STOP;
    u->generations = 1;
}
