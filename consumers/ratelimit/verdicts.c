/* The verdicts the limiter wants in the admission table, and writing them.
 *
 * Several keys can speak for one table key (a user's rpm and tpm, or a
 * combination rule enforced on the user): the table gets the longest
 * throttle any of them asks for.  A verdict is written when it lengthens and
 * cleared (CBUS_ALLOW) once it has lapsed, which frees its table slot; the
 * table entry carries until_ns, so a producer stops honouring a lapsed
 * verdict at that instant whether or not the clear has been written yet.
 */
#include "limiter_int.h"

#include <string.h>

static size_t pub_key(char kb[RL_PUB_KEY_LEN], unsigned scope, uint64_t hash)
{
    kb[0] = (char)scope;
    memcpy(kb + 1, &hash, 8);
    return RL_PUB_KEY_LEN;
}

void rl__want(rl_limiter *l, unsigned scope, const char *value, size_t len, uint64_t hash,
              uint64_t until_ns)
{
    char kb[RL_PUB_KEY_LEN];
    size_t kl = pub_key(kb, scope, hash);
    uint64_t h = rl_hash_bytes(kb, kl, 0x5c09e);
    struct rl_pub *p = rl_map_find(&l->pubs, h, kb, kl);
    if (!p) {
        int err;
        p = rl_map_insert(&l->pubs, h, kb, kl, &err);
        if (!p) {
            l->st.publish_failed++;
            return;
        }
        if (len > RL_PUB_SHOWN_MAX - 1)
            len = RL_PUB_SHOWN_MAX - 1;
        memcpy(p->shown, value, len);
        p->shown[len] = '\0';
    }
    if (until_ns > p->want_until) {
        p->want_until = until_ns;
        if (!p->dirty) {
            p->dirty = 1;
            l->dirty++;
        }
    }
}

unsigned rl_drain(rl_limiter *l, uint64_t now, rl_publish_fn fn, void *ctx)
{
    unsigned calls = 0;
    for (size_t i = l->pubs.count; i-- > 0;) {
        struct rl_pub *p = rl_map_at(&l->pubs, i);
        unsigned scope = (unsigned char)p->key[0];
        uint64_t hash;
        memcpy(&hash, p->key + 1, 8);
        if (p->want_until <= now) {
            if (p->pub_until) {
                calls++;
                if (fn(ctx, scope, hash, p->shown, CBUS_ALLOW, 0) == 0)
                    l->st.cleared++;
            }
            if (p->dirty)
                l->dirty--;
            rl_map_remove(&l->pubs, p);
            continue;
        }
        if (!p->dirty)
            continue;
        p->dirty = 0;
        l->dirty--;
        calls++;
        if (fn(ctx, scope, hash, p->shown, CBUS_THROTTLED, p->want_until) == 0) {
            p->pub_until = p->want_until;
            l->st.published++;
        } else {
            l->st.publish_failed++;
        }
    }
    return calls;
}

uint64_t rl_published_until(const rl_limiter *l, unsigned scope, const char *key)
{
    char kb[RL_PUB_KEY_LEN];
    size_t kl = pub_key(kb, scope, cbus_key_hash(key, strlen(key)));
    const struct rl_pub *p = rl_map_find(&l->pubs, rl_hash_bytes(kb, kl, 0x5c09e), kb, kl);
    return p ? p->want_until : 0;
}
