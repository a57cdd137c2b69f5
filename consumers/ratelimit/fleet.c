#include "fleet.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "limiter_int.h"
#include "sbuf.h"

/* One GCRA bucket per (rule, key) for the fleet, times in microseconds of
 * Redis's clock (TIME), kept as doubles ('%.17g': a tat of ~1.8e15 us keeps
 * a quarter of a microsecond).  Arguments: emission interval of requests
 * in us (0 = no request limit), request units, the same for tokens.  Units
 * may be negative (a token estimate refunded): as in limiter.c a refund
 * never takes a bucket below now.  'n' and 'u' count the units applied, so
 * "nothing counted twice" can be checked from outside.  The key lives
 * while its bucket is not full, and a minute more. */
static const char rl_item_lua[] =
    "local function charge(tat, iv, n, now, at)\n"
    "  if iv <= 0 or n == 0 then return tat end\n"
    "  if n > 0 then return math.max(tat, at) + n * iv end\n"
    "  if tat > now then return math.max(now, tat + n * iv) end\n"
    "  return tat\n"
    "end\n"
    "local function item(k, a, apply, now, at)\n"
    "  local v = redis.call('HMGET', k, 'r', 't')\n"
    "  local rt, tt = tonumber(v[1]) or 0, tonumber(v[2]) or 0\n"
    "  if apply then\n"
    "    local ir, nr, it, nt = tonumber(a[1]), tonumber(a[2]), tonumber(a[3]), tonumber(a[4])\n"
    "    if not (ir and nr and it and nt) then return {0, 0} end\n"
    "    rt = charge(rt, ir, nr, now, at)\n"
    "    tt = charge(tt, it, nt, now, at)\n"
    "    redis.call('HSET', k, 'r', string.format('%.17g', rt), 't', string.format('%.17g', tt))\n"
    "    if nr ~= 0 then redis.call('HINCRBY', k, 'n', nr) end\n"
    "    if nt ~= 0 then redis.call('HINCRBY', k, 'u', nt) end\n"
    "    local live = math.max(rt, tt) - now\n"
    "    if live < 0 then live = 0 end\n"
    "    redis.call('PEXPIRE', k, math.floor(live / 1000) + 60000)\n"
    "  end\n"
    "  local dr, dt = 0, 0\n"
    "  if rt > now then dr = math.floor((rt - now) * 1000) end\n"
    "  if tt > now then dt = math.floor((tt - now) * 1000) end\n"
    "  return {dr, dt}\n"
    "end\n";

struct rl_fleet {
    rl_limiter *l;
    cbus_cluster *cl;
    size_t cursor;        /* where the next batch starts in the key table */
    uint64_t applied;     /* keys given the fleet's view */
    uint64_t missing;     /* replies for keys this node no longer holds */
};

int rl_fleet_open(rl_fleet **out, rl_limiter *l, const struct cbus_cluster_conf *conf)
{
    if (!out || !l || !conf || !conf->enabled)
        return -EINVAL;
    rl_fleet *f = calloc(1, sizeof *f);
    if (!f)
        return -ENOMEM;
    static const struct cbus_cluster_script sc = {"ratelimit", rl_item_lua, 4, 2};
    int r = cbus_cluster_open(&f->cl, conf, &sc);
    if (r) {
        free(f);
        return r;
    }
    f->l = l;
    rl_set_fleet(l, conf->local_share);
    *out = f;
    return 0;
}

void rl_fleet_close(rl_fleet *f)
{
    if (!f)
        return;
    cbus_cluster_close(f->cl);
    free(f);
}

const cbus_cluster *rl_fleet_cluster(const rl_fleet *f)
{
    return f->cl;
}

/* The bucket's name in Redis: the rule as written and the key's bytes
 * (values and whole-value hashes), hashed: nodes that share a rule share
 * its buckets; a rule changed on one node is another bucket. */
static void item_suffix(const rl_limiter *l, const struct rl_key *k, char out[32])
{
    const struct rl_rule *r = &l->rules.rule[k->rule];
    char buf[1024 + RL_KEY_MAX];
    size_t tl = strlen(r->text);
    if (tl > 1024)
        tl = 1024;
    memcpy(buf, r->text, tl);
    buf[tl] = '\n';
    memcpy(buf + tl + 1, k->key, k->hdr.klen);
    snprintf(out, 32, "rl:%016" PRIx64, cbus_key_hash(buf, tl + 1 + k->hdr.klen));
}

static void interval_us(char *out, size_t n, const struct rl_limit *lim)
{
    if (!lim->limit)
        snprintf(out, n, "0");
    else
        snprintf(out, n, "%.17g", 60e6 / (double)lim->limit);
}

static void fill(void *arg, cbus_cluster *cl, uint64_t now)
{
    rl_fleet *f = arg;
    rl_limiter *l = f->l;
    size_t n = l->keys.count;
    if (!n)
        return;
    if (f->cursor >= n)
        f->cursor = 0;
    for (size_t j = 0; j < n; j++) {
        size_t i = (f->cursor + j) % n;
        struct rl_key *k = rl_map_at(&l->keys, i);
        const struct rl_rule *r = &l->rules.rule[k->rule];
        /* Keys with counts to send, and keys still filling whose fleet
         * view may have moved (others spend on them too). */
        int live = k->until_ns > now || (r->req.limit && k->req_tat > (rl_u128)now * r->req.limit) ||
                   (r->tok.limit && k->tok_tat > (rl_u128)now * r->tok.limit);
        if (!k->fleet_req && !k->fleet_tok && !(k->fleet_synced && live))
            continue;
        char suffix[32], ir[40], nr[24], it[40], nt[24];
        item_suffix(l, k, suffix);
        interval_us(ir, sizeof ir, &r->req);
        interval_us(it, sizeof it, &r->tok);
        snprintf(nr, sizeof nr, "%" PRId64, k->fleet_req);
        snprintf(nt, sizeof nt, "%" PRId64, k->fleet_tok);
        const char *args[4] = {ir, nr, it, nt};
        if (cbus_cluster_add(cl, suffix, args, k->key, k->hdr.klen)) {
            f->cursor = i; /* full (or no memory): the rest go in the next batch */
            return;
        }
        /* In the batch now: what this node charges from here on is new. */
        k->fleet_req = 0;
        k->fleet_tok = 0;
    }
}

static void apply(void *arg, const void *cookie, size_t len, const int64_t *res, unsigned nres,
                  uint64_t now)
{
    rl_fleet *f = arg;
    rl_limiter *l = f->l;
    if (nres != 2 || !len || len > RL_KEY_MAX)
        return;
    const char *kb = cookie;
    struct rl_key *k = rl_map_find(&l->keys, rl_hash_bytes(kb, len, (unsigned char)kb[0]), kb, len);
    if (!k) {
        f->missing++; /* expired here meanwhile: its next request brings it back */
        return;
    }
    uint64_t dr = res[0] > 0 ? (uint64_t)res[0] : 0, dt = res[1] > 0 ? (uint64_t)res[1] : 0;
    rl__fleet_set(l, k, dr, dt, now);
    f->applied++;
}

int rl_fleet_sync(rl_fleet *f, uint64_t now)
{
    int r = cbus_cluster_sync(f->cl, now, fill, apply, f);
    /* Away (or not yet reached): local_share of each limit, on our own. */
    struct cbus_cluster_stats st;
    cbus_cluster_get_stats(f->cl, now, &st);
    rl_set_fleet_away(f->l, !st.up);
    return r;
}

void rl_fleet_status_json(const rl_fleet *f, struct sbuf *b, uint64_t now)
{
    cbus_cluster_status_json(f->cl, b, now);
    /* cbus_cluster_status_json closed the object: reopen for our counters. */
    if (b->len && b->data[b->len - 1] == '}') {
        b->len--;
        sbuf_printf(b, ",\"keys_applied\":%llu,\"keys_missing\":%llu}",
                    (unsigned long long)f->applied, (unsigned long long)f->missing);
    }
}
