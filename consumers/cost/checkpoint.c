#include "checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "daemon.h"

#define CKPT_MAGIC   "CBUSCOST"
/* 2: u64 lost and u64 abandoned after events.  Version 1 files still load
 * (lost and abandoned 0), so an upgrade does not cost the totals. */
#define CKPT_VERSION 4u
/* 3: the position in every lane.  4 (events v2, issue 14): table keys carry
 * each value's whole hash after its shown bytes (keys never merge), and the
 * agent and tenant tables follow the sessions.  Versions 1-3 load: their
 * keys are taken as whole values (what they counted them as) and they have
 * no agents or tenants. */
/* Changes whenever a struct written raw changes size or the histogram
 * units change meaning. */
#define CKPT_STAMP                                                                     \
    ((uint32_t)(sizeof(struct cost_counters) * 31u + sizeof(struct cost_budget_state) * 7u + \
                sizeof(struct cost_anomalies) * 3u + COST_HIST_BUCKETS * 131u +        \
                COST_TOK__COUNT * 1009u + COST_MARKS_MAX + (uint32_t)COST_DUR_UNIT_NS * 3u + \
                (uint32_t)COST_TTFT_UNIT_NS * 5u))

static void put(struct sbuf *b, const void *p, size_t n)
{
    sbuf_add(b, p, n);
}
static void put_u64(struct sbuf *b, uint64_t v)
{
    put(b, &v, sizeof v);
}

static void put_hist(struct sbuf *b, const struct cost_hist *h)
{
    put_u64(b, h->count);
    put_u64(b, h->min_ns);
    put_u64(b, h->max_ns);
    put(b, &h->sum_ns, sizeof h->sum_ns);
    uint32_t nz = 0;
    for (unsigned i = 0; i < COST_HIST_BUCKETS; i++)
        nz += h->b[i] != 0;
    put(b, &nz, sizeof nz);
    for (unsigned i = 0; i < COST_HIST_BUCKETS; i++)
        if (h->b[i]) {
            uint16_t idx = (uint16_t)i;
            put(b, &idx, sizeof idx);
            put_u64(b, h->b[i]);
        }
}

static void put_lat(struct sbuf *b, const struct cost_latency *l)
{
    put_hist(b, &l->duration);
    put_hist(b, &l->ttft);
}

int cost_write_file(const char *path, const void *data, size_t len, int do_fsync)
{
    return cbus_replace_file(path, data, len, do_fsync);
}

int cost_checkpoint_save(const struct cost_ledger *l, uint64_t bus_id, uint64_t now_realtime_ns,
                         const char *path, struct sbuf *b, int do_fsync)
{
    sbuf_reset(b);
    uint32_t ver = CKPT_VERSION, stamp = CKPT_STAMP;
    put(b, CKPT_MAGIC, 8);
    put(b, &ver, 4);
    put(b, &stamp, 4);
    put_u64(b, bus_id);
    put_u64(b, l->cursor);
    /* version 3: the position in every lane */
    uint32_t lanes = l->pos.lanes ? l->pos.lanes : 1;
    put(b, &lanes, 4);
    for (uint32_t i = 0; i < lanes; i++)
        put_u64(b, l->pos.pos[i]);
    put_u64(b, now_realtime_ns);
    put_u64(b, l->events);
    put_u64(b, l->lost);
    put_u64(b, l->abandoned);
    put_u64(b, l->models.n);
    put_u64(b, l->users.n);
    put_u64(b, l->sessions.n);
    put_u64(b, l->agents.n); /* version 4 */
    put_u64(b, l->tenants.n);
    put(b, &l->total, sizeof l->total);
    put_lat(b, &l->total_lat);
    put(b, &l->global_b, sizeof l->global_b);
    put(b, &l->an, sizeof l->an);
    put(b, &l->model_overflow.c, sizeof l->model_overflow.c);
    put_lat(b, &l->model_overflow.lat);
    put(b, &l->user_overflow.c, sizeof l->user_overflow.c);
    put(b, &l->an2, sizeof l->an2); /* version 4 */
    put(b, &l->agent_overflow.c, sizeof l->agent_overflow.c);
    put(b, &l->tenant_overflow.c, sizeof l->tenant_overflow.c);
    for (size_t i = 0; i < l->models.n; i++) {
        const struct cost_model *m = cost_ktab_val_at(&l->models, i);
        put(b, cost_ktab_key_at(&l->models, i), COST_MODEL_KEY);
        put(b, &m->c, sizeof m->c);
        put_lat(b, &m->lat);
    }
    for (size_t i = 0; i < l->users.n; i++) {
        const struct cost_user *u = cost_ktab_val_at(&l->users, i);
        put(b, cost_ktab_key_at(&l->users, i), COST_USER_KEY);
        put(b, &u->c, sizeof u->c);
        put(b, &u->b, sizeof u->b);
    }
    for (size_t i = 0; i < l->sessions.n; i++) {
        const struct cost_session *s = cost_ktab_val_at(&l->sessions, i);
        put(b, cost_ktab_key_at(&l->sessions, i), COST_SESSION_KEY);
        put(b, &s->c, sizeof s->c);
        put(b, &s->b, sizeof s->b);
    }
    const struct cost_ktab *groups[2] = {&l->agents, &l->tenants};
    for (unsigned g = 0; g < 2; g++)
        for (size_t i = 0; i < groups[g]->n; i++) {
            const struct cost_user *e = cost_ktab_val_at(groups[g], i);
            put(b, cost_ktab_key_at(groups[g], i), groups[g]->key_size);
            put(b, &e->c, sizeof e->c);
            put(b, &e->b, sizeof e->b);
        }
    /* version 4: scores, raw rows (their size is checked at load) */
    const struct cost_scores *sc = &l->scores;
    uint32_t row_size = (uint32_t)sizeof(struct cost_score);
    put(b, &row_size, sizeof row_size);
    put_u64(b, sc->overflow);
    put_u64(b, sc->bad_type);
    put_u64(b, sc->rows.n);
    put_u64(b, sc->cats.n);
    for (size_t i = 0; i < sc->rows.n; i++) {
        put(b, cost_ktab_key_at(&sc->rows, i), COST_SCORE_KEY);
        put(b, cost_ktab_val_at(&sc->rows, i), sizeof(struct cost_score));
    }
    for (size_t i = 0; i < sc->cats.n; i++) {
        put(b, cost_ktab_key_at(&sc->cats, i), COST_SCORE_CAT_KEY);
        put(b, cost_ktab_val_at(&sc->cats, i), sizeof(uint64_t));
    }
    if (b->failed)
        return -ENOMEM;
    uint32_t crc = (uint32_t)crc32(0L, (const Bytef *)b->data, (uInt)b->len);
    put(b, &crc, sizeof crc);
    if (b->failed)
        return -ENOMEM;
    return cost_write_file(path, b->data, b->len, do_fsync);
}

/* ---- loading: every length is checked against what is left -------------- */

struct rd {
    const unsigned char *p;
    size_t left;
    int bad;
};

static void get(struct rd *r, void *out, size_t n)
{
    if (r->bad || r->left < n) {
        r->bad = 1;
        memset(out, 0, n);
        return;
    }
    memcpy(out, r->p, n);
    r->p += n;
    r->left -= n;
}
static uint64_t get_u64(struct rd *r)
{
    uint64_t v;
    get(r, &v, sizeof v);
    return v;
}

static void get_hist(struct rd *r, struct cost_hist *h)
{
    memset(h, 0, sizeof *h);
    h->count = get_u64(r);
    h->min_ns = get_u64(r);
    h->max_ns = get_u64(r);
    get(r, &h->sum_ns, sizeof h->sum_ns);
    uint32_t nz;
    get(r, &nz, sizeof nz);
    if (nz > COST_HIST_BUCKETS) {
        r->bad = 1;
        return;
    }
    for (uint32_t i = 0; i < nz && !r->bad; i++) {
        uint16_t idx;
        get(r, &idx, sizeof idx);
        uint64_t v = get_u64(r);
        if (idx >= COST_HIST_BUCKETS) {
            r->bad = 1;
            return;
        }
        h->b[idx] = v;
    }
}

static void get_lat(struct rd *r, struct cost_latency *l)
{
    get_hist(r, &l->duration);
    get_hist(r, &l->ttft);
}

/* Version 1-3 checkpoints were written by builds of layout 1.x, whose
 * fields were provider 16, model 64, user 48 and session 48 bytes, and keyed
 * by those bytes alone. */
#define OLD_PROVIDER_LEN 16
#define OLD_MODEL_LEN    64
#define OLD_USER_LEN     48

/* One old field as a version 4 key part: the bytes were all those versions
 * knew of the value, so they are hashed as its whole value, and cut to the
 * new field (a value longer than it is then shown with its hash). */
static void old_part(unsigned char *dst, size_t field_len, unsigned char *hash_at,
                     const unsigned char *old, size_t old_len)
{
    size_t n = strnlen((const char *)old, old_len);
    uint64_t h = cbus_key_hash((const char *)old, n);
    memcpy(dst, old, n < field_len - 1 ? n : field_len - 1);
    memcpy(hash_at, &h, 8);
}

/* A key of a version 1-3 checkpoint as a version 4 key. */
static void get_old_key(struct rd *r, unsigned char *key, unsigned table)
{
    unsigned char old[OLD_PROVIDER_LEN + OLD_MODEL_LEN];
    memset(key, 0, COST_KEY_MAX);
    if (table == 0) {
        get(r, old, OLD_PROVIDER_LEN + OLD_MODEL_LEN);
        old_part(key, CBUS_PROVIDER_LEN, key + COST_MODEL_PH, old, OLD_PROVIDER_LEN);
        old_part(key + CBUS_PROVIDER_LEN, CBUS_MODEL_LEN, key + COST_MODEL_MH,
                 old + OLD_PROVIDER_LEN, OLD_MODEL_LEN);
        return;
    }
    /* users and sessions: 48 bytes each in those versions */
    size_t field = table == 1 ? CBUS_USER_LEN : CBUS_SESSION_LEN;
    get(r, old, OLD_USER_LEN);
    old_part(key, field, key + field, old, OLD_USER_LEN);
}

/* The score tables of a version 4 file: 0, or -EPROTO / -EOVERFLOW / -errno
 * with err set; a short or inconsistent file sets r->bad. */
static int load_scores(struct rd *r, struct cost_scores *sc, const char *path, char *err,
                       size_t errlen)
{
    uint32_t row_size;
    get(r, &row_size, sizeof row_size);
    if (r->bad)
        return 0;
    if (row_size != sizeof(struct cost_score)) {
        snprintf(err, errlen, "%s: score rows of %u bytes (this build: %zu)", path, row_size,
                 sizeof(struct cost_score));
        return -EPROTO;
    }
    sc->overflow = get_u64(r);
    sc->bad_type = get_u64(r);
    uint64_t n[2] = {get_u64(r), get_u64(r)};
    struct cost_ktab *t[2] = {&sc->rows, &sc->cats};
    size_t vsz[2] = {sizeof(struct cost_score), sizeof(uint64_t)};
    for (unsigned k = 0; k < 2 && !r->bad; k++) {
        if (n[k] > t[k]->max_entries) {
            snprintf(err, errlen, "%s: holds %llu score rows, more than the maximum %zu", path,
                     (unsigned long long)n[k], t[k]->max_entries);
            return -EOVERFLOW;
        }
        for (uint64_t i = 0; i < n[k] && !r->bad; i++) {
            unsigned char key[COST_SCORE_CAT_KEY];
            get(r, key, t[k]->key_size);
            uint64_t h = cost_key_hash(key, t[k]->key_size);
            if (r->bad || cost_ktab_find(t[k], key, h) >= 0) {
                r->bad = 1;
                break;
            }
            long idx = cost_ktab_insert(t[k], key, h);
            if (idx < 0) {
                snprintf(err, errlen, "%s: %s", path, strerror((int)-idx));
                return (int)idx;
            }
            get(r, cost_ktab_val_at(t[k], (size_t)idx), vsz[k]);
        }
    }
    return 0;
}

static char *read_all(const char *path, size_t *len, int *rc)
{
    char *buf;
    *rc = cbus_read_file(path, 0, &buf, len);
    return *rc ? NULL : buf;
}

/* Magic, checksum and version: 0 with *r past them and *ver set. */
static int check_envelope(const char *buf, size_t len, struct rd *r, uint32_t *ver, const char *path,
                          char *err, size_t errlen)
{
    if (len < 8 + 4 + 4 + 4 || memcmp(buf, CKPT_MAGIC, 8)) {
        snprintf(err, errlen, "%s: not a cbus-cost checkpoint", path);
        return -EBADMSG;
    }
    uint32_t crc;
    memcpy(&crc, buf + len - 4, 4);
    if (crc != (uint32_t)crc32(0L, (const Bytef *)buf, (uInt)(len - 4))) {
        snprintf(err, errlen, "%s: checksum mismatch (corrupt checkpoint)", path);
        return -EBADMSG;
    }
    *r = (struct rd){(const unsigned char *)buf + 8, len - 8 - 4, 0};
    uint32_t stamp;
    get(r, ver, 4);
    get(r, &stamp, 4);
    if (*ver < 1 || *ver > CKPT_VERSION || stamp != CKPT_STAMP) {
        snprintf(err, errlen,
                 "%s: written by an incompatible cbus-cost build (version %u, layout %08x; "
                 "this build %u, %08x)", path, *ver, stamp, CKPT_VERSION, CKPT_STAMP);
        return -EPROTO;
    }
    return 0;
}

/* The saved read position: one cursor, and from version 3 one per lane
 * (which must add up to it). */
static int load_position(struct rd *r, uint32_t ver, struct cost_ledger *l, const char *path, char *err,
                         size_t errlen)
{
    uint64_t cursor = get_u64(r);
    struct cbus_position pos = {.lanes = 1, .pos = {cursor}}; /* before version 3: one lane */
    if (ver >= 3) {
        get(r, &pos.lanes, 4);
        if (pos.lanes == 0 || pos.lanes > CBUS_MAX_LANES || (pos.lanes & (pos.lanes - 1))) {
            snprintf(err, errlen, "%s: %u lanes in the saved position (corrupt checkpoint)", path,
                     pos.lanes);
            return -EBADMSG;
        }
        uint64_t sum = 0;
        for (uint32_t i = 0; i < pos.lanes; i++)
            sum += pos.pos[i] = get_u64(r);
        if (sum != cursor) {
            snprintf(err, errlen, "%s: the saved position does not add up to its cursor "
                     "(corrupt checkpoint)", path);
            return -EBADMSG;
        }
    }
    cost_ledger_set_position(l, &pos);
    return 0;
}

/* Table t's n entries (0 models, 1 users, 2 sessions, 3 agents, 4 tenants);
 * a key seen twice marks the reader bad. */
static int load_table(struct rd *r, uint32_t ver, unsigned t, struct cost_ktab *kt, uint64_t n,
                      const char *path, char *err, size_t errlen)
{
    if (n > kt->max_entries) {
        snprintf(err, errlen, "%s: holds %llu entries, more than the configured maximum %zu "
                 "(raise max_models/max_users/max_sessions/max_agents/max_tenants)", path,
                 (unsigned long long)n, kt->max_entries);
        return -EOVERFLOW;
    }
    for (uint64_t i = 0; i < n && !r->bad; i++) {
        unsigned char key[COST_KEY_MAX];
        if (ver >= 4)
            get(r, key, kt->key_size);
        else
            get_old_key(r, key, t);
        if (r->bad)
            break;
        uint64_t h = cost_key_hash(key, kt->key_size);
        if (cost_ktab_find(kt, key, h) >= 0) {
            r->bad = 1;
            break;
        }
        long idx = cost_ktab_insert(kt, key, h);
        if (idx < 0) {
            snprintf(err, errlen, "%s: %s", path, strerror((int)-idx));
            return (int)idx;
        }
        void *v = cost_ktab_val_at(kt, (size_t)idx);
        if (t == 0) {
            struct cost_model *m = v;
            get(r, &m->c, sizeof m->c);
            get_lat(r, &m->lat);
        } else if (t == 1 || t >= 3) {
            struct cost_user *u = v;
            get(r, &u->c, sizeof u->c);
            get(r, &u->b, sizeof u->b);
        } else {
            struct cost_session *s = v;
            get(r, &s->c, sizeof s->c);
            get(r, &s->b, sizeof s->b);
        }
    }
    return 0;
}

int cost_checkpoint_load(struct cost_ledger *l, uint64_t *bus_id, const char *path, char *err,
                         size_t errlen)
{
    int rc = 0;
    size_t len;
    char *buf = read_all(path, &len, &rc);
    if (!buf) {
        if (rc != -ENOENT)
            snprintf(err, errlen, "%s: %s", path, strerror(-rc));
        return rc;
    }
    struct rd r;
    uint32_t ver;
    if ((rc = check_envelope(buf, len, &r, &ver, path, err, errlen)))
        goto out;
    *bus_id = get_u64(&r);
    if ((rc = load_position(&r, ver, l, path, err, errlen)))
        goto out;
    (void)get_u64(&r); /* saved_realtime_ns: informational */
    l->events = get_u64(&r);
    if (ver >= 2) {
        l->lost = get_u64(&r);
        l->abandoned = get_u64(&r);
    }
    uint64_t nm = get_u64(&r), nu = get_u64(&r), ns = get_u64(&r), na = 0, nt = 0;
    if (ver >= 4) {
        na = get_u64(&r);
        nt = get_u64(&r);
    }
    get(&r, &l->total, sizeof l->total);
    get_lat(&r, &l->total_lat);
    get(&r, &l->global_b, sizeof l->global_b);
    get(&r, &l->an, sizeof l->an);
    get(&r, &l->model_overflow.c, sizeof l->model_overflow.c);
    get_lat(&r, &l->model_overflow.lat);
    get(&r, &l->user_overflow.c, sizeof l->user_overflow.c);
    if (ver >= 4) {
        get(&r, &l->an2, sizeof l->an2);
        get(&r, &l->agent_overflow.c, sizeof l->agent_overflow.c);
        get(&r, &l->tenant_overflow.c, sizeof l->tenant_overflow.c);
    }
    struct cost_ktab *tabs[5] = {&l->models, &l->users, &l->sessions, &l->agents, &l->tenants};
    uint64_t counts[5] = {nm, nu, ns, na, nt};
    for (unsigned t = 0; t < 5 && !r.bad; t++)
        if ((rc = load_table(&r, ver, t, tabs[t], counts[t], path, err, errlen)))
            goto out;
    if (ver >= 4 && !r.bad && (rc = load_scores(&r, &l->scores, path, err, errlen)))
        goto out;
    if (r.bad || r.left) {
        snprintf(err, errlen, "%s: truncated or inconsistent checkpoint", path);
        rc = -EBADMSG;
        goto out;
    }
    cost_ledger_rebind(l);
    rc = 0;
out:
    free(buf);
    return rc;
}
