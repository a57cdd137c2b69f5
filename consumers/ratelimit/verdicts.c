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

void rl__want(rl_limiter *l, unsigned scope, const char *value, size_t len, uint64_t until_ns)
{
    char kb[RL_PUB_KEY_MAX];
    if (len > RL_PUB_KEY_MAX - 1)
        len = RL_PUB_KEY_MAX - 1;
    kb[0] = (char)scope;
    memcpy(kb + 1, value, len);
    uint64_t h = rl_hash_bytes(kb, len + 1, 0x5c09e);
    struct rl_pub *p = rl_map_find(&l->pubs, h, kb, len + 1);
    if (!p) {
        int err;
        p = rl_map_insert(&l->pubs, h, kb, len + 1, &err);
        if (!p) {
            l->st.publish_failed++;
            return;
        }
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
        char key[RL_PUB_KEY_MAX];
        unsigned scope = (unsigned char)p->key[0];
        memcpy(key, p->key + 1, p->hdr.klen - 1);
        key[p->hdr.klen - 1] = '\0';
        if (p->want_until <= now) {
            if (p->pub_until) {
                calls++;
                if (fn(ctx, scope, key, CBUS_ALLOW, 0) == 0)
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
        if (fn(ctx, scope, key, CBUS_THROTTLED, p->want_until) == 0) {
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
    char kb[RL_PUB_KEY_MAX];
    size_t len = strlen(key);
    if (len > RL_PUB_KEY_MAX - 1)
        len = RL_PUB_KEY_MAX - 1;
    kb[0] = (char)scope;
    memcpy(kb + 1, key, len);
    const struct rl_pub *p = rl_map_find(&l->pubs, rl_hash_bytes(kb, len + 1, 0x5c09e), kb, len + 1);
    return p ? p->want_until : 0;
}
