/* Fleet state in Redis: see cluster.h for the protocol. */
#include "cluster.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include <cbus/cbus.h>

#include "log.h"
#include "sbuf.h"

#define MS UINT64_C(1000000)
#define BACKOFF_MAX_NS (2000 * MS)

/* ---- configuration ----------------------------------------------------------- */

void cbus_cluster_conf_init(struct cbus_cluster_conf *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->prefix, sizeof c->prefix, "cbus:");
    c->interval_ns = 100 * MS;
    c->timeout_ns = 50 * MS;
    c->local_share = 1.0;
    c->max_items = 10000;
}

static int printable_id(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (!n || n >= max)
        return 0;
    for (; *s; s++)
        if (*s <= ' ' || *s > '~' || *s == '/')
            return 0;
    return 1;
}

static int parse_address(struct cbus_cluster_conf *c, const char *v)
{
    if (!strncmp(v, "unix:", 5)) {
        if (v[5] != '/' || strlen(v + 5) >= sizeof c->unix_path)
            return -EINVAL;
        snprintf(c->unix_path, sizeof c->unix_path, "%s", v + 5);
        c->host[0] = '\0';
        return 0;
    }
    if (!strncmp(v, "redis://", 8))
        v += 8;
    const char *colon = strrchr(v, ':');
    const char *host = v;
    size_t hl = colon ? (size_t)(colon - v) : strlen(v);
    if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') { /* [::1]:6379 */
        host++;
        hl -= 2;
    }
    if (!hl || hl >= sizeof c->host)
        return -EINVAL;
    for (size_t i = 0; i < hl; i++)
        if (host[i] <= ' ' || host[i] > '~' || host[i] == '/' || host[i] == '@')
            return -EINVAL;
    unsigned long port = 6379;
    if (colon) {
        char *end;
        errno = 0;
        port = strtoul(colon + 1, &end, 10);
        if (errno || end == colon + 1 || *end || port == 0 || port > 65535)
            return -EINVAL;
    }
    memcpy(c->host, host, hl);
    c->host[hl] = '\0';
    c->port = (unsigned)port;
    c->unix_path[0] = '\0';
    return 0;
}

int cbus_cluster_conf_entry(struct cbus_cluster_conf *c, const struct cbus_cfg *cfg,
                            const struct cbus_cfg_entry *e, char *err, size_t errlen)
{
    uint64_t v;
    int r = 0;
    if (!strcmp(e->key, "address")) {
        if (parse_address(c, e->value))
            return cbus_cfg_error(cfg, e, err, errlen,
                                  "'%s' is not HOST:PORT, [IPv6]:PORT or unix:/PATH", e->value);
        c->enabled = 1;
    } else if (!strcmp(e->key, "prefix")) {
        /* Printable, no spaces: it starts every key we touch (and only those). */
        size_t pl = strlen(e->value);
        if (!pl || pl >= sizeof c->prefix)
            return cbus_cfg_error(cfg, e, err, errlen,
                                  "'%s': want 1..63 printable characters, no spaces", e->value);
        for (const char *s = e->value; *s; s++)
            if (*s <= ' ' || *s > '~')
                return cbus_cfg_error(cfg, e, err, errlen,
                                      "'%s': want 1..63 printable characters, no spaces", e->value);
        snprintf(c->prefix, sizeof c->prefix, "%s", e->value);
    } else if (!strcmp(e->key, "node")) {
        if (!printable_id(e->value, sizeof c->node))
            return cbus_cfg_error(cfg, e, err, errlen,
                                  "'%s': want 1..63 printable characters, no spaces or '/'",
                                  e->value);
        snprintf(c->node, sizeof c->node, "%s", e->value);
    } else if (!strcmp(e->key, "interval")) {
        r = cbus_cfg_duration_ns(cfg, e, &c->interval_ns, err, errlen);
        if (!r && (c->interval_ns < 10 * MS || c->interval_ns > 10000 * MS))
            return cbus_cfg_error(cfg, e, err, errlen, "want 10ms .. 10s");
    } else if (!strcmp(e->key, "timeout")) {
        r = cbus_cfg_duration_ns(cfg, e, &c->timeout_ns, err, errlen);
        if (!r && (c->timeout_ns < 1 * MS || c->timeout_ns > 5000 * MS))
            return cbus_cfg_error(cfg, e, err, errlen, "want 1ms .. 5s");
    } else if (!strcmp(e->key, "local_share")) {
        r = cbus_cfg_double(cfg, e, 0.001, 1.0, &c->local_share, err, errlen);
    } else if (!strcmp(e->key, "db")) {
        r = cbus_cfg_u64(cfg, e, 0, 1000000, &v, err, errlen);
        c->db = (unsigned)v;
    } else if (!strcmp(e->key, "max_items")) {
        r = cbus_cfg_u64(cfg, e, 1, 1000000, &v, err, errlen);
        c->max_items = (unsigned)v;
    } else if (!strcmp(e->key, "user")) {
        if (!printable_id(e->value, sizeof c->user))
            return cbus_cfg_error(cfg, e, err, errlen, "'%s' is not a user name", e->value);
        snprintf(c->user, sizeof c->user, "%s", e->value);
    } else if (!strcmp(e->key, "password_env")) {
        /* The secret stays out of the file (which status and --check show). */
        const char *p = getenv(e->value);
        if (!p || !*p)
            return cbus_cfg_error(cfg, e, err, errlen, "environment variable %s is not set",
                                  e->value);
        if (strlen(p) >= sizeof c->password)
            return cbus_cfg_error(cfg, e, err, errlen, "the password in %s is too long", e->value);
        snprintf(c->password, sizeof c->password, "%s", p);
    } else if (!strcmp(e->key, "tls")) {
        int on = 0;
        r = cbus_cfg_bool(cfg, e, &on, err, errlen);
        if (!r && on)
            return cbus_cfg_error(cfg, e, err, errlen,
                                  "this build's hiredis (0.14, Debian 12) has no TLS; reach a "
                                  "TLS Redis through a local TLS tunnel (stunnel) instead");
    } else {
        return cbus_cfg_error(cfg, e, err, errlen,
                              "unknown key (want address, prefix, node, interval, timeout, "
                              "local_share, db, user, password_env, tls, max_items)");
    }
    return r;
}

int cbus_cluster_conf_finish(struct cbus_cluster_conf *c, const struct cbus_cfg *cfg,
                             int section_seen, char *err, size_t errlen)
{
    if (!section_seen)
        return 0;
    if (!c->enabled) {
        snprintf(err, errlen, "%s: [cluster]: address is required (HOST:PORT or unix:/PATH)",
                 cfg->path);
        return -EINVAL;
    }
    if (!c->node[0]) {
        char h[256] = "";
        if (gethostname(h, sizeof h - 1) || !printable_id(h, sizeof c->node)) {
            snprintf(err, errlen, "%s: [cluster]: no usable host name for the node id: set node =",
                     cfg->path);
            return -EINVAL;
        }
        snprintf(c->node, sizeof c->node, "%s", h);
    }
    return 0;
}

/* ---- the script ------------------------------------------------------------- */

/* KEYS[1]: the batch hash; KEYS[2..]: the items' keys.
 * ARGV: node/role, run, seq, nargs, at_us (0 = now), then nargs per item.
 * Returns {now_us, applied, item results...} (flattened, nres per item). */
static const char script_head[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local apply = true\n"
    "local last = redis.call('HGET', KEYS[1], ARGV[1])\n"
    "if last then\n"
    "  local r, s = string.match(last, '^(%d+):(%d+)$')\n"
    "  if r == ARGV[2] and tonumber(s) >= tonumber(ARGV[3]) then apply = false end\n"
    "end\n"
    "if apply then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ':' .. ARGV[3]) end\n"
    "local at = tonumber(ARGV[5])\n"
    "if at == 0 or at > now then at = now end\n"
    "local na = tonumber(ARGV[4])\n";
static const char script_tail[] =
    "local out = {now, apply and 1 or 0}\n"
    "for i = 2, #KEYS do\n"
    "  local a = {}\n"
    "  for j = 1, na do a[j] = ARGV[5 + (i - 2) * na + j] end\n"
    "  local r = item(KEYS[i], a, apply, now, at)\n"
    "  for j = 1, #r do out[#out + 1] = r[j] end\n"
    "end\n"
    "return out\n";

/* ---- the connection and batches --------------------------------------------- */

enum { PHASE_DOWN, PHASE_HANDSHAKE, PHASE_READY, PHASE_INFLIGHT };

struct item {
    size_t key_off, args_off, cookie_off; /* into arena */
    uint32_t cookie_len;
};

struct cbus_cluster {
    struct cbus_cluster_conf conf;
    struct cbus_cluster_script script;
    char *lua;
    char sha[41];
    redisContext *rc;
    int phase;                 /* PHASE_* */
    unsigned hs_replies;       /* handshake replies still awaited */
    uint64_t deadline_ns;      /* the awaited replies are late after this */
    uint64_t last_send_ns, sent_at_ns;
    char batch_key[CBUS_CLUSTER_PREFIX_MAX + 8];
    char field[CBUS_CLUSTER_NODE_MAX + 32];
    char run[24];
    uint64_t seq;              /* of the sealed batch */
    int sealed;                /* a batch is awaiting its reply */
    int sent;                  /* ... and was sent at least once */
    uint64_t sealed_at_ns;
    struct item *items;
    size_t n_items, cap_items;
    char *arena;
    size_t arena_len, arena_cap;
    uint64_t next_connect_ns, backoff_ns;
    uint64_t down_since_ns;    /* away since (0 = up, or not tried yet) */
    int64_t offset_ns;         /* Redis time - monotonic */
    int have_offset;
    struct cbus_cluster_stats st;
    int logged_down;
};

static uint64_t real_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int cbus_cluster_open(cbus_cluster **out, const struct cbus_cluster_conf *conf,
                      const struct cbus_cluster_script *script)
{
    if (!out || !conf || !script || !script->role || !script->item_lua || script->nargs < 1 ||
        script->nargs > 8 || script->nres < 1 || script->nres > 8 || !conf->enabled)
        return -EINVAL;
    cbus_cluster *cl = calloc(1, sizeof *cl);
    if (!cl)
        return -ENOMEM;
    cl->conf = *conf;
    cl->script = *script;
    size_t n = sizeof script_head + strlen(script->item_lua) + sizeof script_tail + 1;
    cl->lua = malloc(n);
    if (!cl->lua) {
        free(cl);
        return -ENOMEM;
    }
    snprintf(cl->lua, n, "%s%s\n%s", script_head, script->item_lua, script_tail);
    snprintf(cl->batch_key, sizeof cl->batch_key, "%sseq", conf->prefix);
    snprintf(cl->field, sizeof cl->field, "%s/%s", conf->node, script->role);
    /* A run id: a restarted daemon starts its seq again at 1, and must not
     * be taken for a replay of its predecessor's batches. */
    snprintf(cl->run, sizeof cl->run, "%" PRIu64, real_ns() / 1000 * 100 + (uint64_t)(getpid() % 100));
    *out = cl;
    return 0;
}

void cbus_cluster_close(cbus_cluster *cl)
{
    if (!cl)
        return;
    if (cl->rc)
        redisFree(cl->rc);
    free(cl->items);
    free(cl->arena);
    free(cl->lua);
    free(cl);
}

const struct cbus_cluster_conf *cbus_cluster_conf(const cbus_cluster *cl)
{
    return &cl->conf;
}

int64_t cbus_cluster_clock_offset_ns(const cbus_cluster *cl)
{
    return cl->have_offset ? cl->offset_ns : 0;
}

static int arena_put(cbus_cluster *cl, const void *p, size_t n, size_t *off)
{
    if (cl->arena_len + n + 1 > cl->arena_cap) {
        size_t cap = cl->arena_cap ? cl->arena_cap * 2 : 65536;
        while (cap < cl->arena_len + n + 1)
            cap *= 2;
        char *a = realloc(cl->arena, cap);
        if (!a)
            return -ENOMEM;
        cl->arena = a;
        cl->arena_cap = cap;
    }
    *off = cl->arena_len;
    memcpy(cl->arena + cl->arena_len, p, n);
    cl->arena[cl->arena_len + n] = '\0';
    cl->arena_len += n + 1;
    return 0;
}

int cbus_cluster_add(cbus_cluster *cl, const char *suffix, const char *const *args,
                     const void *cookie, size_t cookie_len)
{
    if (!cl || !suffix || !args || (cookie_len && !cookie) || cookie_len > 4096)
        return -EINVAL;
    size_t sl = strlen(suffix);
    if (!sl || sl > 200)
        return -EINVAL;
    for (size_t i = 0; i < sl; i++)
        if (suffix[i] <= ' ' || suffix[i] > '~')
            return -EINVAL;
    if (cl->n_items >= cl->conf.max_items)
        return -ENOSPC;
    if (cl->n_items == cl->cap_items) {
        size_t cap = cl->cap_items ? cl->cap_items * 2 : 256;
        struct item *it = realloc(cl->items, cap * sizeof *it);
        if (!it)
            return -ENOMEM;
        cl->items = it;
        cl->cap_items = cap;
    }
    struct item *it = &cl->items[cl->n_items];
    size_t save = cl->arena_len, off;
    char key[CBUS_CLUSTER_PREFIX_MAX + 208];
    int kl = snprintf(key, sizeof key, "%s%s", cl->conf.prefix, suffix);
    if (arena_put(cl, key, (size_t)kl, &it->key_off))
        goto nomem;
    it->args_off = cl->arena_len;
    for (unsigned i = 0; i < cl->script.nargs; i++)
        if (!args[i] || arena_put(cl, args[i], strlen(args[i]), &off))
            goto nomem;
    if (arena_put(cl, cookie_len ? cookie : "", cookie_len, &it->cookie_off))
        goto nomem;
    it->cookie_len = (uint32_t)cookie_len;
    cl->n_items++;
    return 0;
nomem:
    cl->arena_len = save;
    return -ENOMEM;
}

static void set_error(cbus_cluster *cl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(cbus_cluster *cl, const char *fmt, ...)
{
    char msg[sizeof cl->st.last_error];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* One line per change of trouble, not one per interval. */
    if (strcmp(msg, cl->st.last_error) || !cl->logged_down) {
        char addr[400];
        if (cl->conf.unix_path[0])
            snprintf(addr, sizeof addr, "unix:%s", cl->conf.unix_path);
        else
            snprintf(addr, sizeof addr, "%s:%u", cl->conf.host, cl->conf.port);
        cbus_log_warn("cluster: redis %s: %s; deciding on local limits (local_share %g of each "
                      "fleet limit) until it answers", addr, msg, cl->conf.local_share);
        cl->logged_down = 1;
    }
    snprintf(cl->st.last_error, sizeof cl->st.last_error, "%s", msg);
}

static void went_down(cbus_cluster *cl, uint64_t now)
{
    if (cl->rc) {
        redisFree(cl->rc);
        cl->rc = NULL;
    }
    cl->phase = PHASE_DOWN;
    cl->st.failures++;
    if (!cl->down_since_ns) { /* up (or never tried) -> away */
        cl->st.cutoffs++;
        cl->down_since_ns = now ? now : 1;
    }
    cl->st.up = 0;
    cl->backoff_ns = cl->backoff_ns ? cl->backoff_ns * 2 : cl->conf.interval_ns;
    if (cl->backoff_ns > BACKOFF_MAX_NS)
        cl->backoff_ns = BACKOFF_MAX_NS;
    cl->next_connect_ns = now + cl->backoff_ns;
}

/* hiredis 0.14 allocates an array reply as soon as it reads its header: a
 * peer that is not Redis could ask for a billion elements.  The replies we
 * expect have at most 2 + max_items * nres; anything longer is refused
 * (the reader reports an error, the round fails) before it is allocated. */
static void *(*hiredis_create_array)(const redisReadTask *, int);
static redisReplyObjectFunctions guarded_fns;
static long guard_max_elements = 1024;

static void *guarded_create_array(const redisReadTask *task, int elements)
{
    if (elements < 0 || elements > guard_max_elements)
        return NULL; /* hiredis: "out of memory" error, context unusable: we reconnect */
    return hiredis_create_array(task, elements);
}

static void guard_reader(redisContext *c, long max_elements)
{
    if (!c->reader || !c->reader->fn)
        return;
    if (!hiredis_create_array) {
        guarded_fns = *c->reader->fn;
        hiredis_create_array = guarded_fns.createArray;
        guarded_fns.createArray = guarded_create_array;
    }
    if (max_elements > guard_max_elements)
        guard_max_elements = max_elements;
    c->reader->fn = &guarded_fns;
}

/* An integer from an integer reply or a decimal string; 0 or -EPROTO. */
static int reply_int(const redisReply *r, int64_t *out)
{
    if (r->type == REDIS_REPLY_INTEGER) {
        *out = r->integer;
        return 0;
    }
    if (r->type != REDIS_REPLY_STRING || !r->len || r->len > 24)
        return -EPROTO;
    char buf[32], *end;
    memcpy(buf, r->str, r->len);
    buf[r->len] = '\0';
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (errno || *end)
        return -EPROTO;
    *out = v;
    return 0;
}

/* Non-blocking connect; the handshake (AUTH, SELECT, SCRIPT LOAD) is
 * queued at once and answered on later turns. */
static int start_connect(cbus_cluster *cl, uint64_t now)
{
    cl->rc = cl->conf.unix_path[0] ? redisConnectUnixNonBlock(cl->conf.unix_path)
                                   : redisConnectNonBlock(cl->conf.host, (int)cl->conf.port);
    if (!cl->rc) {
        set_error(cl, "connect: out of memory");
        return -ENOMEM;
    }
    if (cl->rc->err) {
        set_error(cl, "connect: %s", cl->rc->errstr);
        return -ECONNREFUSED;
    }
    guard_reader(cl->rc, 2 + (long)cl->conf.max_items * (long)cl->script.nres);
    cl->hs_replies = 0;
    if (cl->conf.password[0]) {
        const char *av[3] = {"AUTH", cl->conf.user, cl->conf.password};
        size_t al[3] = {4, strlen(cl->conf.user), strlen(cl->conf.password)};
        int ac = 3;
        if (!cl->conf.user[0]) {
            av[1] = cl->conf.password;
            al[1] = al[2];
            ac = 2;
        }
        redisAppendCommandArgv(cl->rc, ac, av, al);
        cl->hs_replies++;
    }
    if (cl->conf.db) {
        char db[16];
        snprintf(db, sizeof db, "%u", cl->conf.db);
        const char *av[2] = {"SELECT", db};
        size_t al[2] = {6, strlen(db)};
        redisAppendCommandArgv(cl->rc, 2, av, al);
        cl->hs_replies++;
    }
    const char *av[3] = {"SCRIPT", "LOAD", cl->lua};
    size_t al[3] = {6, 4, strlen(cl->lua)};
    redisAppendCommandArgv(cl->rc, 3, av, al);
    cl->hs_replies++;
    cl->phase = PHASE_HANDSHAKE;
    cl->deadline_ns = now + cl->conf.timeout_ns;
    return 0;
}

/* One handshake reply (in order: AUTH, SELECT, SCRIPT LOAD).  0 or -errno. */
static int handshake_reply(cbus_cluster *cl, redisReply *rep)
{
    const char *what = cl->hs_replies == 1 ? "SCRIPT LOAD" : "AUTH/SELECT";
    if (rep->type == REDIS_REPLY_ERROR) {
        set_error(cl, "%s: %.100s", what, rep->str ? rep->str : "error");
        return -EACCES;
    }
    if (cl->hs_replies > 1)
        return 0;
    int ok = rep->type == REDIS_REPLY_STRING && rep->len == 40;
    for (size_t i = 0; ok && i < 40; i++)
        ok = (rep->str[i] >= '0' && rep->str[i] <= '9') || (rep->str[i] >= 'a' && rep->str[i] <= 'f');
    if (!ok) {
        set_error(cl, "SCRIPT LOAD: not a SHA-1 in the reply (is this Redis?)");
        return -EPROTO;
    }
    memcpy(cl->sha, rep->str, 40);
    cl->sha[40] = '\0';
    return 0;
}

/* Queues the sealed batch as one EVALSHA (written on this and later turns). */
static int queue_batch(cbus_cluster *cl, uint64_t now)
{
    size_t n = cl->n_items, na = cl->script.nargs;
    size_t argc = 3 + 1 + n + 5 + n * na;
    const char **av = malloc(argc * sizeof *av);
    size_t *al = malloc(argc * sizeof *al);
    if (!av || !al) {
        free(av);
        free(al);
        set_error(cl, "out of memory");
        return -ENOMEM;
    }
    char nkeys[24], seq[24], nargs[24], at[24];
    snprintf(nkeys, sizeof nkeys, "%zu", n + 1);
    snprintf(seq, sizeof seq, "%" PRIu64, cl->seq);
    snprintf(nargs, sizeof nargs, "%zu", na);
    /* The batch's time on Redis's clock: when it was sealed (a batch resent
     * after a cut-off is charged from when its counts were made). */
    int64_t at_us = 0;
    if (cl->have_offset)
        at_us = ((int64_t)cl->sealed_at_ns + cl->offset_ns) / 1000;
    snprintf(at, sizeof at, "%" PRId64, at_us > 0 ? at_us : 0);
    size_t k = 0;
    av[k++] = "EVALSHA";
    av[k++] = cl->sha;
    av[k++] = nkeys;
    av[k++] = cl->batch_key;
    for (size_t i = 0; i < n; i++)
        av[k++] = cl->arena + cl->items[i].key_off;
    av[k++] = cl->field;
    av[k++] = cl->run;
    av[k++] = seq;
    av[k++] = nargs;
    av[k++] = at;
    for (size_t i = 0; i < n; i++) {
        const char *a = cl->arena + cl->items[i].args_off;
        for (size_t j = 0; j < na; j++) {
            av[k++] = a;
            a += strlen(a) + 1;
        }
    }
    for (size_t i = 0; i < k; i++)
        al[i] = strlen(av[i]);
    int r = redisAppendCommandArgv(cl->rc, (int)k, av, al);
    free(av);
    free(al);
    if (r != REDIS_OK) {
        set_error(cl, "EVALSHA: %s", cl->rc->errstr[0] ? cl->rc->errstr : "out of memory");
        return -ENOMEM;
    }
    if (cl->sent)
        cl->st.resent++;
    cl->sent = 1;
    cl->sent_at_ns = cbus_now_ns();
    cl->last_send_ns = now;
    cl->phase = PHASE_INFLIGHT;
    cl->deadline_ns = now + cl->conf.timeout_ns;
    return 0;
}

/* The batch's reply: checked whole before anything is applied. */
static int batch_reply(cbus_cluster *cl, redisReply *rep, uint64_t now, cbus_cluster_apply_fn apply,
                       void *arg)
{
    if (rep->type == REDIS_REPLY_ERROR) {
        /* NOSCRIPT (a Redis restarted under the same connection, SCRIPT
         * FLUSH) and the rest: reconnect, which loads the script again. */
        set_error(cl, "EVALSHA: %.100s", rep->str ? rep->str : "error");
        return -EIO;
    }
    size_t n = cl->n_items;
    size_t want = 2 + n * cl->script.nres;
    int64_t redis_now = 0, applied = 0;
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != want ||
        reply_int(rep->element[0], &redis_now) || reply_int(rep->element[1], &applied) ||
        redis_now <= 0 || (applied != 0 && applied != 1)) {
        set_error(cl, "EVALSHA: unexpected reply (type %d, %zu elements, want %zu, a time and a "
                  "0/1 flag first)", rep->type, rep->type == REDIS_REPLY_ARRAY ? rep->elements : 0,
                  want);
        return -EPROTO;
    }
    int64_t res[8];
    for (size_t i = 0; i < n; i++)
        for (unsigned j = 0; j < cl->script.nres; j++)
            if (reply_int(rep->element[2 + i * cl->script.nres + j], &res[0])) {
                set_error(cl, "EVALSHA: item %zu value %u is not an integer", i, j);
                return -EPROTO;
            }
    uint64_t t1 = cbus_now_ns();
    uint64_t rtt = t1 > cl->sent_at_ns ? t1 - cl->sent_at_ns : 0;
    /* The script read TIME about half way through the round trip (an upper
     * bound: the reply may have waited for this turn). */
    cl->offset_ns = redis_now * 1000 - (int64_t)(cl->sent_at_ns + rtt / 2);
    cl->have_offset = 1;
    if (!applied)
        cl->st.replays_skipped++;
    for (size_t i = 0; i < n; i++) {
        for (unsigned j = 0; j < cl->script.nres; j++)
            reply_int(rep->element[2 + i * cl->script.nres + j], &res[j]);
        if (apply)
            apply(arg, cl->arena + cl->items[i].cookie_off, cl->items[i].cookie_len, res,
                  cl->script.nres, now);
    }
    cl->st.items += n;
    cl->st.syncs++;
    cl->st.rtt_last_ns = rtt;
    if (rtt > cl->st.rtt_max_ns)
        cl->st.rtt_max_ns = rtt;
    return 0;
}

/* Writes what the socket takes, reads what it has, handles whole replies.
 * Never waits.  Returns 1 when the batch's reply was applied, 0 when more
 * is awaited, or -errno (error set). */
static int pump(cbus_cluster *cl, uint64_t now, cbus_cluster_apply_fn apply, void *arg)
{
    int done = 0;
    const char *what = cl->phase == PHASE_HANDSHAKE ? "connect" : "EVALSHA";
    if (redisBufferWrite(cl->rc, &done) != REDIS_OK || redisBufferRead(cl->rc) != REDIS_OK) {
        set_error(cl, "%s: %s", what, cl->rc->errstr[0] ? cl->rc->errstr : "connection lost");
        return -EIO;
    }
    for (;;) {
        void *v = NULL;
        if (redisGetReplyFromReader(cl->rc, &v) != REDIS_OK) {
            set_error(cl, "%s: %s", what, cl->rc->errstr[0] ? cl->rc->errstr : "bad reply");
            return -EPROTO;
        }
        if (!v)
            return 0;
        redisReply *rep = v;
        int r;
        if (cl->phase == PHASE_HANDSHAKE) {
            r = handshake_reply(cl, rep);
            if (!r && --cl->hs_replies == 0) {
                cl->phase = PHASE_READY;
                cl->st.connects++;
            }
        } else if (cl->phase == PHASE_INFLIGHT) {
            r = batch_reply(cl, rep, now, apply, arg);
            if (!r) {
                freeReplyObject(rep);
                cl->phase = PHASE_READY;
                return 1;
            }
        } else {
            set_error(cl, "a reply nobody asked for");
            r = -EPROTO;
        }
        freeReplyObject(rep);
        if (r)
            return r;
    }
}

static void came_up(cbus_cluster *cl, uint64_t now)
{
    cl->sealed = 0;
    if (!cl->st.up) {
        if (cl->down_since_ns)
            cbus_log_info("cluster: redis answers again: fleet limits back after %.1f s away",
                          (double)(now > cl->down_since_ns ? now - cl->down_since_ns : 0) / 1e9);
        else
            cbus_log_info("cluster: node %s synced with redis (prefix %s, every %llu ms)",
                          cl->conf.node, cl->conf.prefix,
                          (unsigned long long)(cl->conf.interval_ns / MS));
        cl->logged_down = 0;
    }
    if (cl->down_since_ns && now > cl->down_since_ns)
        cl->st.cut_off_ns += now - cl->down_since_ns;
    cl->down_since_ns = 0;
    cl->backoff_ns = 0;
    cl->st.up = 1;
    cl->st.last_error[0] = '\0';
}

uint64_t cbus_cluster_tick_ns(const struct cbus_cluster_conf *c)
{
    uint64_t t = c->interval_ns / 20;
    return t < MS ? MS : t > 10 * MS ? 10 * MS : t;
}

int cbus_cluster_sync(cbus_cluster *cl, uint64_t now, cbus_cluster_fill_fn fill,
                      cbus_cluster_apply_fn apply, void *arg)
{
    if (!cl)
        return -EINVAL;
    int r;
    if (cl->phase == PHASE_DOWN) {
        if (now < cl->next_connect_ns)
            return -EAGAIN;
        r = start_connect(cl, now);
        if (r)
            goto fail;
    }
    if (cl->phase == PHASE_READY) {
        /* One batch per interval; a sealed one (its reply lost) at once. */
        if (!cl->sealed && cl->last_send_ns && now - cl->last_send_ns < cl->conf.interval_ns)
            return -EINPROGRESS;
        if (!cl->sealed) {
            cl->n_items = 0;
            cl->arena_len = 0;
            if (fill)
                fill(arg, cl, now);
            cl->seq++;
            cl->sealed = 1;
            cl->sent = 0;
            cl->sealed_at_ns = now;
        }
        r = queue_batch(cl, now);
        if (r)
            goto fail;
    }
    r = pump(cl, now, apply, arg);
    if (r < 0)
        goto fail;
    if (r == 1) {
        came_up(cl, now);
        return 0;
    }
    if (now > cl->deadline_ns) {
        set_error(cl, "%s: no answer within %llu ms",
                  cl->phase == PHASE_HANDSHAKE ? "connect" : "EVALSHA",
                  (unsigned long long)(cl->conf.timeout_ns / MS));
        r = -ETIMEDOUT;
        goto fail;
    }
    return -EINPROGRESS;
fail:
    went_down(cl, now);
    return r;
}

void cbus_cluster_get_stats(const cbus_cluster *cl, uint64_t now, struct cbus_cluster_stats *out)
{
    *out = cl->st;
    if (cl->down_since_ns && now > cl->down_since_ns)
        out->cut_off_ns += now - cl->down_since_ns;
    out->pending_items = cl->sealed ? cl->n_items : 0;
}

void cbus_cluster_status_json(const cbus_cluster *cl, struct sbuf *b, uint64_t now)
{
    struct cbus_cluster_stats st;
    cbus_cluster_get_stats(cl, now, &st);
    sbuf_puts(b, "\"cluster\":{\"state\":");
    sbuf_puts(b, st.up ? "\"up\"" : "\"away\"");
    sbuf_puts(b, ",\"node\":");
    sbuf_json_str(b, cl->conf.node, (size_t)-1);
    sbuf_puts(b, ",\"prefix\":");
    sbuf_json_str(b, cl->conf.prefix, (size_t)-1);
    char addr[400];
    if (cl->conf.unix_path[0])
        snprintf(addr, sizeof addr, "unix:%s", cl->conf.unix_path);
    else
        snprintf(addr, sizeof addr, "%s:%u", cl->conf.host, cl->conf.port);
    sbuf_puts(b, ",\"address\":");
    sbuf_json_str(b, addr, (size_t)-1);
    sbuf_printf(b,
                ",\"interval_ms\":%llu,\"local_share\":%g,\"syncs\":%llu,\"failures\":%llu,"
                "\"connects\":%llu,\"items\":%llu,\"resent\":%llu,\"replays_skipped\":%llu,"
                "\"cutoffs\":%llu,\"cut_off_ms\":%llu,\"rtt_last_us\":%llu,\"rtt_max_us\":%llu,"
                "\"pending_items\":%llu,\"last_error\":",
                (unsigned long long)(cl->conf.interval_ns / MS), cl->conf.local_share,
                (unsigned long long)st.syncs, (unsigned long long)st.failures,
                (unsigned long long)st.connects, (unsigned long long)st.items,
                (unsigned long long)st.resent, (unsigned long long)st.replays_skipped,
                (unsigned long long)st.cutoffs, (unsigned long long)(st.cut_off_ns / MS),
                (unsigned long long)(st.rtt_last_ns / 1000), (unsigned long long)(st.rtt_max_ns / 1000),
                (unsigned long long)st.pending_items);
    sbuf_json_str(b, st.last_error, (size_t)-1);
    sbuf_puts(b, "}");
}

void cbus_cluster_prom(const cbus_cluster *cl, struct sbuf *b, const char *daemon, uint64_t now)
{
    struct cbus_cluster_stats st;
    cbus_cluster_get_stats(cl, now, &st);
    sbuf_printf(b,
                "# HELP cbus_%s_cluster_up 1 while the fleet state in Redis answers\n"
                "# TYPE cbus_%s_cluster_up gauge\ncbus_%s_cluster_up %d\n"
                "# HELP cbus_%s_cluster_cut_off_seconds_total Time spent on local limits, Redis away\n"
                "# TYPE cbus_%s_cluster_cut_off_seconds_total counter\n"
                "cbus_%s_cluster_cut_off_seconds_total %.3f\n"
                "# TYPE cbus_%s_cluster_syncs_total counter\ncbus_%s_cluster_syncs_total %llu\n"
                "# TYPE cbus_%s_cluster_failures_total counter\ncbus_%s_cluster_failures_total %llu\n",
                daemon, daemon, daemon, st.up, daemon, daemon, daemon, (double)st.cut_off_ns / 1e9,
                daemon, daemon, (unsigned long long)st.syncs, daemon, daemon,
                (unsigned long long)st.failures);
}
