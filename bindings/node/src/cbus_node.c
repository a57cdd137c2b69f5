/* cbus for Node.js: a Node-API addon over the public C API.
 *
 * What it adds to the C API, and why (issue 17):
 *   - One producer per process and bus, shared by every handle and every
 *     worker thread (refcounted under a mutex that only open and close
 *     take).  A worker that opens the bus maps nothing new; the last handle
 *     to go closes it, also when it goes because its worker was terminated
 *     (an env cleanup hook releases what the env still holds).  A thread's
 *     unflushed counts reach the producer at thread exit (the library's key
 *     destructor, producer/producer.c).
 *   - Runs keyed by the caller's string run ids inside the addon (a table
 *     per producer handle), so a LangChain callback is one call: the start
 *     makes the run's context (a child of its parent run's, when the parent
 *     is known), the end frees it.  A run id that is a UUID is the event's
 *     run id, so events name the runs LangChain names.
 *   - Strings are JavaScript strings converted by Node-API to UTF-8 (whole
 *     characters, lengths in bytes): the library cuts previews only between
 *     characters.
 *   - A consumer whose wait runs on the libuv pool (napi_async_work over
 *     cbus_consumer_wait, a futex), so the main thread never polls a bus.
 *
 * Nothing here prints; every argument is checked and a wrong type throws a
 * TypeError that names the argument.  Emits return the library's code
 * (0, or a negative errno such as -EAGAIN for a counted drop): the bus's
 * conditions never throw into the host. */
#define NAPI_VERSION 8
#include <node_api.h>

#include <cbus/bus.h>
#include <cbus/consumer.h>
#include <cbus/producer.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RUN_KEY_MAX   128           /* bytes of a run id string, NUL included */
#define RUNS_MAX      (1u << 20)    /* open runs per producer handle */
#define POLL_MAX_DEF  256
#define POLL_MAX_MAX  4096

/* ---- small helpers -------------------------------------------------------- */

/* Throws the pending Node-API error as a JS error (if none is pending yet). */
static void throw_last(napi_env env)
{
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (pending)
        return;
    const napi_extended_error_info *info = NULL;
    napi_get_last_error_info(env, &info);
    napi_throw_error(env, NULL, info && info->error_message ? info->error_message
                                                            : "cbus: Node-API call failed");
}

#define CHECK(env, call)                 \
    do {                                 \
        if ((call) != napi_ok) {         \
            throw_last(env);             \
            return NULL;                 \
        }                                \
    } while (0)

static napi_value throw_type(napi_env env, const char *arg, const char *what)
{
    char msg[160];
    snprintf(msg, sizeof msg, "cbus: %s must be %s", arg, what);
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
    return NULL;
}

static napi_value throw_range(napi_env env, const char *arg, const char *what)
{
    char msg[160];
    snprintf(msg, sizeof msg, "cbus: %s %s", arg, what);
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", msg);
    return NULL;
}

/* An Error for a cbus code r (< 0), with .errno = r and .code = "E...". */
static napi_value throw_code(napi_env env, const char *what, int r)
{
    char msg[256];
    snprintf(msg, sizeof msg, "cbus: %s: %s", what, cbus_strerror(r));
    napi_value m, e, n;
    if (napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &m) != napi_ok ||
        napi_create_error(env, NULL, m, &e) != napi_ok)
        return NULL;
    if (napi_create_int32(env, r, &n) == napi_ok)
        napi_set_named_property(env, e, "errno", n);
    const char *code = r == -ENOENT ? "ENOENT" : r == -EEXIST ? "EEXIST" : r == -EINVAL ? "EINVAL"
                     : r == -EACCES ? "EACCES" : r == -EPERM ? "EPERM" : r == -EPROTO ? "EPROTO"
                     : r == -EBUSY ? "EBUSY" : r == -ENOSPC ? "ENOSPC" : r == -ESTALE ? "ESTALE"
                     : r == -ENOMEM ? "ENOMEM" : "ECBUS";
    napi_value c;
    if (napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &c) == napi_ok)
        napi_set_named_property(env, e, "code", c);
    napi_throw(env, e);
    return NULL;
}

static napi_value int_value(napi_env env, int32_t v)
{
    napi_value out;
    CHECK(env, napi_create_int32(env, v, &out));
    return out;
}

static int is_nullish(napi_env env, napi_value v)
{
    napi_valuetype t;
    if (!v || napi_typeof(env, v, &t) != napi_ok)
        return 1;
    return t == napi_undefined || t == napi_null;
}

/* A growable UTF-8 buffer: after warm-up a string costs no allocation. */
struct sbuf {
    char *p;
    size_t cap;
};

static int sbuf_reserve(struct sbuf *b, size_t n)
{
    if (n <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < n)
        cap *= 2;
    char *q = realloc(b->p, cap);
    if (!q)
        return -1;
    b->p = q;
    b->cap = cap;
    return 0;
}

/* v as UTF-8 into b.  Returns 0 (string), 1 (null/undefined and nullable:
 * *out = NULL), -1 (exception thrown). */
static int get_str(napi_env env, napi_value v, const char *arg, int nullable, struct sbuf *b,
                   const char **out, size_t *len)
{
    if (sbuf_reserve(b, 256)) {
        napi_throw_error(env, "ENOMEM", "cbus: out of memory");
        return -1;
    }
    /* The read checks the type itself (napi_string_expected): no napi_typeof
     * before it, a tenth of a token's Node-API instructions (callgrind). */
    size_t n = 0;
    napi_status st = v ? napi_get_value_string_utf8(env, v, b->p, b->cap, &n) : napi_string_expected;
    if (st == napi_string_expected) {
        napi_valuetype t = napi_undefined;
        if (v)
            napi_typeof(env, v, &t);
        if (nullable && (t == napi_undefined || t == napi_null)) {
            *out = NULL;
            *len = 0;
            return 1;
        }
        throw_type(env, arg, nullable ? "a string, null or undefined" : "a string");
        return -1;
    }
    if (st != napi_ok) {
        throw_last(env);
        return -1;
    }
    if (n + 1 >= b->cap) { /* may have been cut: ask for the whole length */
        if (napi_get_value_string_utf8(env, v, NULL, 0, &n) != napi_ok) {
            throw_last(env);
            return -1;
        }
        if (sbuf_reserve(b, n + 1)) {
            napi_throw_error(env, "ENOMEM", "cbus: out of memory");
            return -1;
        }
        if (napi_get_value_string_utf8(env, v, b->p, b->cap, &n) != napi_ok) {
            throw_last(env);
            return -1;
        }
    }
    *out = b->p;
    *len = n;
    return 0;
}

/* A number argument: undefined/null gives dflt.  Integer in [lo, hi]. */
static int get_int(napi_env env, napi_value v, const char *arg, double lo, double hi, double dflt,
                   double *out)
{
    napi_valuetype t = napi_undefined;
    if (v)
        napi_typeof(env, v, &t);
    if (t == napi_undefined || t == napi_null) {
        *out = dflt;
        return 0;
    }
    if (t != napi_number) {
        throw_type(env, arg, "a number");
        return -1;
    }
    double d;
    napi_get_value_double(env, v, &d);
    if (!isfinite(d) || d != floor(d) || d < lo || d > hi) {
        char what[96];
        snprintf(what, sizeof what, "must be an integer from %.0f to %.0f", lo, hi);
        throw_range(env, arg, what);
        return -1;
    }
    *out = d;
    return 0;
}

/* obj[key] if obj is an object (else undefined, or NULL on error). */
static napi_value prop(napi_env env, napi_value obj, const char *key)
{
    napi_value v = NULL;
    if (napi_get_named_property(env, obj, key, &v) != napi_ok)
        return NULL;
    return v;
}

static int check_object(napi_env env, napi_value v, const char *arg)
{
    napi_valuetype t = napi_undefined;
    if (v)
        napi_typeof(env, v, &t);
    if (t == napi_undefined || t == napi_null)
        return 1;
    if (t != napi_object) {
        throw_type(env, arg, "an object, null or undefined");
        return -1;
    }
    return 0;
}

/* ---- per-env state: what an env holds, released at its cleanup ------------- */

struct envst;
struct res {
    struct res *next, *prev;
    struct envst *es;              /* NULL once released from the env */
    void (*release)(struct res *);
};

struct envst {
    struct res head;               /* list of live handles */
};

static void res_link(struct envst *es, struct res *r, void (*release)(struct res *))
{
    r->es = es;
    r->release = release;
    r->next = es->head.next;
    r->prev = &es->head;
    es->head.next->prev = r;
    es->head.next = r;
}

static void res_unlink(struct res *r)
{
    if (!r->es)
        return;
    r->prev->next = r->next;
    r->next->prev = r->prev;
    r->next = r->prev = NULL;
    r->es = NULL;
}

/* The env is going away (process exit, or its worker ended or was
 * terminated): release whatever its handles still hold.  Node runs this
 * before it finalizes the env's wrapped objects (its own hook was added
 * first and cleanup hooks run in reverse order); the finalizers then see
 * res.es == NULL and only free. */
static void env_cleanup(void *arg)
{
    struct envst *es = arg;
    while (es->head.next != &es->head) {
        struct res *r = es->head.next;
        res_unlink(r);
        r->release(r);
    }
    free(es);
}

/* ---- the process's shared producers ---------------------------------------- */

struct shared {
    struct shared *next;
    cbus_producer *p;
    unsigned refs;
    unsigned flags;
    char bus[CBUS_NAME_MAX];
    char name[CBUS_NAME_MAX];
};

static pthread_mutex_t shared_mu = PTHREAD_MUTEX_INITIALIZER;
static struct shared *shared_list;

/* Returns 0 with *out (a reference taken), or the code of cbus_producer_open. */
static int shared_get(struct shared **out, const char *bus, const char *name, unsigned flags)
{
    int r = 0;
    pthread_mutex_lock(&shared_mu);
    struct shared *s;
    for (s = shared_list; s; s = s->next)
        if (!strcmp(s->bus, bus) && !strcmp(s->name, name ? name : "") && s->flags == flags)
            break;
    if (s) {
        s->refs++;
    } else if (!(s = calloc(1, sizeof *s))) {
        r = -ENOMEM;
    } else {
        struct cbus_producer_opts o = {.name = name, .flags = flags};
        r = cbus_producer_open(&s->p, bus, &o);
        if (r) {
            free(s);
            s = NULL;
        } else {
            s->refs = 1;
            s->flags = flags;
            snprintf(s->bus, sizeof s->bus, "%s", bus);
            snprintf(s->name, sizeof s->name, "%s", name ? name : "");
            s->next = shared_list;
            shared_list = s;
        }
    }
    pthread_mutex_unlock(&shared_mu);
    *out = s;
    return r;
}

static void shared_put(struct shared *s)
{
    pthread_mutex_lock(&shared_mu);
    if (--s->refs == 0) {
        for (struct shared **q = &shared_list; *q; q = &(*q)->next) {
            if (*q == s) {
                *q = s->next;
                break;
            }
        }
        /* No other handle uses s->p: every user holds a reference. */
        cbus_producer_close(s->p);
        free(s);
    }
    pthread_mutex_unlock(&shared_mu);
}

/* ---- runs --------------------------------------------------------------------
 * Open addressing, linear probing, keyed by the run id string's bytes. */
struct run {
    uint64_t hash;
    uint32_t klen;
    uint32_t hidx;                 /* its entry in prod.hslab: the numeric handle */
    char key[RUN_KEY_MAX];
    cbus_ctx ctx;
};
#define TOMB ((struct run *)1)

struct prod {
    struct res res;
    struct shared *sh;             /* NULL once closed */
    cbus_producer *p;
    struct run **tab;
    uint32_t cap, used, tombs;     /* slots, live runs, tombstones */
    /* Numeric run handles (runHandle()): entry index + generation * 2^20, so a
     * token needs no run id string copied and hashed.  An entry's generation
     * moves on when its run ends: a handle kept past that is stale, never
     * another run's. */
    struct hent { struct run *r; uint32_t gen, next_free; } *hslab;
    uint32_t hcap, hfree;          /* hfree: head of the free list, or UINT32_MAX */
    struct sbuf sb[4];             /* name, text, messages, system instructions or response id */
    struct cbus_ctx scratch;       /* for point events on runs we never saw start */
};

static uint64_t key_hash(const char *k, size_t n)
{
    uint64_t h = UINT64_C(14695981039346656037);
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)k[i]) * UINT64_C(1099511628211);
    return h ^ h >> 29;
}

static struct run **run_slot(struct prod *pr, const char *k, size_t n, uint64_t h, int for_insert)
{
    if (!pr->cap)
        return NULL;
    uint32_t mask = pr->cap - 1;
    struct run **tomb = NULL;
    for (uint32_t i = (uint32_t)h & mask, step = 0; step < pr->cap; i = (i + 1) & mask, step++) {
        struct run *r = pr->tab[i];
        if (!r)
            return for_insert && tomb ? tomb : &pr->tab[i];
        if (r == TOMB) {
            if (!tomb)
                tomb = &pr->tab[i];
            continue;
        }
        if (r->hash == h && r->klen == n && !memcmp(r->key, k, n))
            return &pr->tab[i];
    }
    return for_insert ? tomb : NULL;
}

static struct run *run_find(struct prod *pr, const char *k, size_t n)
{
    struct run **s = run_slot(pr, k, n, key_hash(k, n), 0);
    return s && *s && *s != TOMB ? *s : NULL;
}

static int run_grow(struct prod *pr)
{
    uint32_t ncap = pr->cap ? pr->cap * 2 : 64;
    if (pr->used * 4 < pr->cap) /* mostly tombstones: rehash at the same size */
        ncap = pr->cap;
    struct run **nt = calloc(ncap, sizeof *nt);
    if (!nt)
        return -ENOMEM;
    for (uint32_t i = 0; i < pr->cap; i++) {
        struct run *r = pr->tab[i];
        if (!r || r == TOMB)
            continue;
        uint32_t j = (uint32_t)r->hash & (ncap - 1);
        while (nt[j])
            j = (j + 1) & (ncap - 1);
        nt[j] = r;
    }
    free(pr->tab);
    pr->tab = nt;
    pr->cap = ncap;
    pr->tombs = 0;
    return 0;
}

#define HANDLE_IDX_BITS 20 /* RUNS_MAX entries */

static int handle_take(struct prod *pr, struct run *r)
{
    if (pr->hfree == UINT32_MAX || !pr->hslab) {
        uint32_t ncap = pr->hcap ? pr->hcap * 2 : 64;
        if (ncap > RUNS_MAX)
            return -ENOSPC;
        struct hent *n = realloc(pr->hslab, ncap * sizeof *n);
        if (!n)
            return -ENOMEM;
        for (uint32_t i = pr->hcap; i < ncap; i++)
            n[i] = (struct hent){NULL, 0, i + 1 < ncap ? i + 1 : UINT32_MAX};
        pr->hfree = pr->hcap;
        pr->hslab = n;
        pr->hcap = ncap;
    }
    uint32_t i = pr->hfree;
    pr->hfree = pr->hslab[i].next_free;
    pr->hslab[i].r = r;
    r->hidx = i;
    return 0;
}

static void handle_give_back(struct prod *pr, struct run *r)
{
    struct hent *h = &pr->hslab[r->hidx];
    h->r = NULL;
    h->gen = (h->gen + 1) & 0xffffffffu;
    h->next_free = pr->hfree;
    pr->hfree = r->hidx;
}

static double handle_of(const struct prod *pr, const struct run *r)
{
    return (double)pr->hslab[r->hidx].gen * (double)(1u << HANDLE_IDX_BITS) + (double)r->hidx;
}

/* The run of a numeric handle, or NULL when it is stale or not a handle. */
static struct run *handle_run(const struct prod *pr, double h)
{
    if (!(h >= 0 && h < 4503599627370496.0)) /* 2^52; NaN fails too */
        return NULL;
    uint64_t v = (uint64_t)h;
    if ((double)v != h)
        return NULL;
    uint32_t i = (uint32_t)(v & ((1u << HANDLE_IDX_BITS) - 1));
    uint32_t gen = (uint32_t)(v >> HANDLE_IDX_BITS);
    if (i >= pr->hcap || !pr->hslab[i].r || pr->hslab[i].gen != gen)
        return NULL;
    return pr->hslab[i].r;
}

/* A new run under key k (an existing one of that key is replaced). */
static struct run *run_add(struct prod *pr, const char *k, size_t n, int *err)
{
    uint64_t h = key_hash(k, n);
    struct run **s = run_slot(pr, k, n, h, 1);
    if (s && *s && *s != TOMB) { /* the same id started again: start over */
        return *s;
    }
    if (pr->used >= RUNS_MAX) {
        *err = -ENOSPC;
        return NULL;
    }
    if ((pr->used + pr->tombs + 1) * 2 > pr->cap) {
        if ((*err = run_grow(pr)))
            return NULL;
        s = run_slot(pr, k, n, h, 1);
    }
    struct run *r = malloc(sizeof *r);
    if (!r) {
        *err = -ENOMEM;
        return NULL;
    }
    if ((*err = handle_take(pr, r))) {
        free(r);
        return NULL;
    }
    r->hash = h;
    r->klen = (uint32_t)n;
    memcpy(r->key, k, n);
    r->key[n] = 0;
    if (*s == TOMB)
        pr->tombs--;
    *s = r;
    pr->used++;
    return r;
}

static void run_del(struct prod *pr, struct run *r)
{
    struct run **s = run_slot(pr, r->key, r->klen, r->hash, 0);
    if (s && *s == r) {
        *s = TOMB;
        pr->used--;
        pr->tombs++;
    }
    handle_give_back(pr, r);
    free(r);
}

static void runs_free(struct prod *pr)
{
    for (uint32_t i = 0; i < pr->cap; i++)
        if (pr->tab[i] && pr->tab[i] != TOMB)
            free(pr->tab[i]);
    free(pr->tab);
    pr->tab = NULL;
    pr->cap = pr->used = pr->tombs = 0;
    free(pr->hslab);
    pr->hslab = NULL;
    pr->hcap = 0;
    pr->hfree = UINT32_MAX;
}

/* ---- the Producer class -------------------------------------------------------- */

static void prod_release(struct res *r)
{
    struct prod *pr = (struct prod *)r;
    runs_free(pr);
    if (pr->sh) {
        shared_put(pr->sh);
        pr->sh = NULL;
        pr->p = NULL;
    }
}

static void prod_finalize(napi_env env, void *data, void *hint)
{
    (void)env;
    (void)hint;
    struct prod *pr = data;
    if (pr->res.es) {
        res_unlink(&pr->res);
        prod_release(&pr->res);
    }
    runs_free(pr);
    for (size_t i = 0; i < sizeof pr->sb / sizeof pr->sb[0]; i++)
        free(pr->sb[i].p);
    free(pr);
}

/* new Producer(bus, {name, failClosed}) */
static napi_value prod_new(napi_env env, napi_callback_info info)
{
    size_t argc = 2;
    napi_value argv[2], self;
    CHECK(env, napi_get_cb_info(env, info, &argc, argv, &self, NULL));
    struct envst *es;
    CHECK(env, napi_get_instance_data(env, (void **)&es));
    struct sbuf b = {0}, nb = {0};
    const char *bus, *name = NULL;
    size_t len;
    napi_value ret = NULL;
    if (get_str(env, argc > 0 ? argv[0] : NULL, "bus", 0, &b, &bus, &len) < 0)
        goto out;
    if (cbus_name_valid(bus)) {
        throw_range(env, "bus", "must be 1..31 characters of [A-Za-z0-9_.-], not starting with '.'");
        goto out;
    }
    napi_value opts = argc > 1 ? argv[1] : NULL;
    int none = check_object(env, opts, "options");
    if (none < 0)
        goto out;
    unsigned flags = 0;
    if (!none) {
        if (get_str(env, prop(env, opts, "name"), "options.name", 1, &nb, &name, &len) < 0)
            goto out;
        if (name && cbus_name_valid(name)) {
            throw_range(env, "options.name", "must be 1..31 characters of [A-Za-z0-9_.-]");
            goto out;
        }
        napi_value fc = prop(env, opts, "failClosed");
        napi_valuetype t = napi_undefined;
        if (fc)
            napi_typeof(env, fc, &t);
        if (t == napi_boolean) {
            bool v;
            napi_get_value_bool(env, fc, &v);
            if (v)
                flags |= CBUS_PRODUCER_ADMIT_FAIL_CLOSED;
        } else if (t != napi_undefined && t != napi_null) {
            throw_type(env, "options.failClosed", "a boolean");
            goto out;
        }
    }
    struct prod *pr = calloc(1, sizeof *pr);
    if (!pr) {
        throw_code(env, "open", -ENOMEM);
        goto out;
    }
    int r = shared_get(&pr->sh, bus, name, flags);
    if (r) {
        free(pr);
        throw_code(env, bus, r);
        goto out;
    }
    pr->p = pr->sh->p;
    cbus_ctx_init(&pr->scratch);
    if (napi_wrap(env, self, pr, prod_finalize, NULL, NULL) != napi_ok) {
        shared_put(pr->sh);
        free(pr);
        throw_last(env);
        goto out;
    }
    res_link(es, &pr->res, prod_release);
    ret = self;
out:
    free(b.p);
    free(nb.p);
    return ret;
}

/* this, the call's arguments, and the open producer (or throw). */
static struct prod *prod_this(napi_env env, napi_callback_info info, size_t *argc, napi_value *argv)
{
    napi_value self;
    if (napi_get_cb_info(env, info, argc, argv, &self, NULL) != napi_ok) {
        throw_last(env);
        return NULL;
    }
    struct prod *pr = NULL;
    if (napi_unwrap(env, self, (void **)&pr) != napi_ok || !pr) {
        napi_throw_type_error(env, NULL, "cbus: not a Producer");
        return NULL;
    }
    return pr;
}

/* The run key argument: a string of 1..127 bytes.  Returns 0 or -1 (thrown). */
static int get_key(napi_env env, napi_value v, const char *arg, int nullable, char key[RUN_KEY_MAX],
                   size_t *n)
{
    napi_valuetype t = napi_undefined;
    if (v)
        napi_typeof(env, v, &t);
    if (t != napi_string) {
        if (nullable && (t == napi_undefined || t == napi_null)) {
            *n = 0;
            return 1;
        }
        throw_type(env, arg, nullable ? "a string, null or undefined" : "a string");
        return -1;
    }
    if (napi_get_value_string_utf8(env, v, key, RUN_KEY_MAX, n) != napi_ok) {
        throw_last(env);
        return -1;
    }
    if (*n == 0 || *n >= RUN_KEY_MAX - 1) {
        size_t full = *n;
        napi_get_value_string_utf8(env, v, NULL, 0, &full);
        if (full == 0 || full > RUN_KEY_MAX - 2) {
            throw_range(env, arg, "must be 1..126 bytes of UTF-8");
            return -1;
        }
    }
    return 0;
}

/* Sets a context key field from info[prop] (string or absent). */
static int set_field(napi_env env, napi_value obj, const char *key, const char *arg,
                     struct sbuf *b, cbus_ctx *ctx, int (*set)(cbus_ctx *, const char *))
{
    const char *s;
    size_t n;
    int r = get_str(env, prop(env, obj, key), arg, 1, b, &s, &n);
    if (r < 0)
        return -1;
    if (r == 0)
        set(ctx, s);
    return 0;
}

/* Applies a start's info object to the run's context: keys, tags, metadata.
 * Returns 0 or -1 (thrown). */
static int apply_info(napi_env env, struct prod *pr, napi_value infoobj, cbus_ctx *ctx,
                      struct cbus_llm_start_info *li, const char **messages, size_t *messages_len,
                      const char **system, size_t *system_len)
{
    struct sbuf *b = &pr->sb[0];
    static const struct {
        const char *key, *arg;
        int (*set)(cbus_ctx *, const char *);
    } keys[] = {
        {"provider", "info.provider", cbus_ctx_set_provider},
        {"model", "info.model", cbus_ctx_set_model},
        {"user", "info.user", cbus_ctx_set_user},
        {"session", "info.session", cbus_ctx_set_session},
        {"agent", "info.agent", cbus_ctx_set_agent},
        {"tenant", "info.tenant", cbus_ctx_set_tenant},
        {"requestId", "info.requestId", cbus_ctx_set_request_id},
    };
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (set_field(env, infoobj, keys[i].key, keys[i].arg, b, ctx, keys[i].set))
            return -1;
    napi_value tags = prop(env, infoobj, "tags");
    if (!is_nullish(env, tags)) {
        bool isarr = false;
        napi_is_array(env, tags, &isarr);
        if (!isarr) {
            throw_type(env, "info.tags", "an array of strings");
            return -1;
        }
        uint32_t n = 0;
        napi_get_array_length(env, tags, &n);
        for (uint32_t i = 0; i < n; i++) {
            napi_value t;
            const char *s;
            size_t l;
            if (napi_get_element(env, tags, i, &t) != napi_ok) {
                throw_last(env);
                return -1;
            }
            if (get_str(env, t, "info.tags[i]", 0, b, &s, &l) < 0)
                return -1;
            cbus_ctx_add_tag(ctx, s); /* -E2BIG: counted in the body's `dropped` */
        }
    }
    napi_value meta = prop(env, infoobj, "metadata");
    if (!is_nullish(env, meta)) {
        napi_valuetype t;
        napi_typeof(env, meta, &t);
        if (t != napi_object) {
            throw_type(env, "info.metadata", "an object of strings");
            return -1;
        }
        napi_value names;
        uint32_t n = 0;
        if (napi_get_property_names(env, meta, &names) != napi_ok) {
            throw_last(env);
            return -1;
        }
        napi_get_array_length(env, names, &n);
        for (uint32_t i = 0; i < n; i++) {
            napi_value k, v;
            const char *ks, *vs;
            size_t kl, vl;
            if (napi_get_element(env, names, i, &k) != napi_ok ||
                napi_get_property(env, meta, k, &v) != napi_ok) {
                throw_last(env);
                return -1;
            }
            if (get_str(env, k, "info.metadata key", 0, &pr->sb[0], &ks, &kl) < 0 ||
                get_str(env, v, "info.metadata value", 0, &pr->sb[1], &vs, &vl) < 0)
                return -1;
            cbus_ctx_set_metadata(ctx, ks, vs);
        }
    }
    double d;
    if (get_int(env, prop(env, infoobj, "promptCount"), "info.promptCount", 0, UINT32_MAX, 0, &d))
        return -1;
    li->prompt_count = (uint32_t)d;
    if (get_int(env, prop(env, infoobj, "estInputTokens"), "info.estInputTokens", 0, UINT32_MAX, 0, &d))
        return -1;
    li->est_input_tokens = (uint32_t)d;
    if (get_int(env, prop(env, infoobj, "maxTokens"), "info.maxTokens", 0, UINT32_MAX, 0, &d))
        return -1;
    li->max_tokens = (uint32_t)d;
    if (get_str(env, prop(env, infoobj, "messages"), "info.messages", 1, &pr->sb[2], messages,
                messages_len) < 0 ||
        get_str(env, prop(env, infoobj, "system"), "info.system", 1, &pr->sb[3], system,
                system_len) < 0)
        return -1;
    return 0;
}

enum start_kind { S_LLM = 0, S_CHAT = 1, S_CHAIN = 2, S_TOOL = 3, S_RETRIEVER = 4 };

/* start(kind, runId, parentRunId, name, text, info): opens run runId (a
 * child of parentRunId's run when this handle has it) and emits its start.
 * kind: 0 llm, 1 chat model, 2 chain, 3 tool, 4 retriever.  info (optional):
 * {provider, model, user, session, agent, tenant, requestId, tags: string[],
 * metadata: {k: string}, promptCount, estInputTokens, maxTokens, messages:
 * JSON string (chat), system: system instructions given apart from the
 * messages, gen_ai.system_instructions JSON or text (llm and chat model
 * starts)}.  Returns the emit's code. */
static napi_value prod_start(napi_env env, napi_callback_info info)
{
    size_t argc = 6;
    napi_value argv[6] = {0};
    struct prod *pr = prod_this(env, info, &argc, argv);
    if (!pr)
        return NULL;
    double kd;
    if (get_int(env, argv[0], "kind", 0, 4, -1, &kd))
        return NULL;
    if (kd < 0)
        return throw_type(env, "kind", "a number");
    char key[RUN_KEY_MAX], pkey[RUN_KEY_MAX];
    size_t kn, pn;
    if (get_key(env, argv[1], "runId", 0, key, &kn) < 0)
        return NULL;
    int haveparent = get_key(env, argv[2], "parentRunId", 1, pkey, &pn);
    if (haveparent < 0)
        return NULL;
    haveparent = !haveparent;
    if (check_object(env, argv[5], "info") < 0)
        return NULL;
    if (!pr->p)
        return int_value(env, -ESTALE);
    /* name and text in sbuf 0/1 are read after info: info uses sbuf 0..2
     * while it is applied, so read name and text last into their own. */
    int err = 0;
    struct run *r = run_add(pr, key, kn, &err);
    if (!r)
        return int_value(env, err);
    struct run *parent = haveparent ? run_find(pr, pkey, pn) : NULL;
    if (parent && parent != r) {
        cbus_ctx_child(&r->ctx, &parent->ctx);
    } else {
        cbus_ctx_init(&r->ctx);
        if (haveparent) {
            uint8_t pid[16];
            if (cbus_id_parse(pid, pkey) == 0)
                cbus_ctx_set_parent_run_id(&r->ctx, pid);
        }
    }
    uint8_t id[16];
    if (cbus_id_parse(id, key) == 0)
        cbus_ctx_set_run_id(&r->ctx, id);
    struct cbus_llm_start_info li = {0};
    const char *messages = NULL, *system = NULL;
    size_t mlen = 0, slen = 0;
    if (!is_nullish(env, argv[5]) &&
        apply_info(env, pr, argv[5], &r->ctx, &li, &messages, &mlen, &system, &slen)) {
        run_del(pr, r);
        return NULL;
    }
    /* messages and system stay in sb[2] and sb[3]; name and text go to sb[0] and sb[1] */
    const char *name, *text;
    size_t nl, tl;
    if (get_str(env, argv[3], "name", 1, &pr->sb[0], &name, &nl) < 0 ||
        get_str(env, argv[4], "text", 1, &pr->sb[1], &text, &tl) < 0) {
        run_del(pr, r);
        return NULL;
    }
    int rc;
    switch ((int)kd) {
    case S_LLM:
        rc = system ? cbus_llm_start_system(pr->p, &r->ctx, text, system, slen, &li)
                    : cbus_llm_start(pr->p, &r->ctx, text, &li);
        break;
    case S_CHAT:
        rc = system     ? cbus_chat_model_start_system(pr->p, &r->ctx, messages, mlen, system, slen,
                                                       text, &li)
             : messages ? cbus_chat_model_start_messages(pr->p, &r->ctx, messages, mlen, text, &li)
                        : cbus_chat_model_start(pr->p, &r->ctx, text, &li);
        break;
    case S_CHAIN:
        rc = cbus_chain_start(pr->p, &r->ctx, name, text);
        break;
    case S_TOOL:
        rc = cbus_tool_start(pr->p, &r->ctx, name, text);
        break;
    default:
        rc = cbus_retriever_start(pr->p, &r->ctx, name, text);
        break;
    }
    return int_value(env, rc);
}

/* The run of argv[0], or the scratch context for a run this handle never
 * saw start (its events still carry its id).  NULL: thrown. */
static cbus_ctx *run_ctx(napi_env env, struct prod *pr, napi_value v, struct run **rp)
{
    char key[RUN_KEY_MAX];
    size_t kn;
    if (get_key(env, v, "runId", 0, key, &kn) < 0)
        return NULL;
    struct run *r = run_find(pr, key, kn);
    *rp = r;
    if (r)
        return &r->ctx;
    cbus_ctx_init(&pr->scratch);
    uint8_t id[16];
    if (cbus_id_parse(id, key) == 0)
        cbus_ctx_set_run_id(&pr->scratch, id);
    return &pr->scratch;
}

/* token(runId, chunk) and stream(runId, chunk): the hot path. */
static napi_value token_common(napi_env env, napi_callback_info info, int stream)
{
    size_t argc = 2;
    napi_value argv[2] = {0};
    struct prod *pr = prod_this(env, info, &argc, argv);
    if (!pr)
        return NULL;
    struct run *r;
    cbus_ctx *ctx = run_ctx(env, pr, argv[0], &r);
    if (!ctx)
        return NULL;
    const char *s;
    size_t n;
    if (get_str(env, argv[1], "chunk", 1, &pr->sb[1], &s, &n) < 0)
        return NULL;
    if (!pr->p)
        return int_value(env, -ESTALE);
    int rc = stream ? cbus_chat_model_stream(pr->p, ctx, s, n) : cbus_llm_new_token(pr->p, ctx, s, n);
    return int_value(env, rc);
}

static napi_value prod_token(napi_env env, napi_callback_info info)
{
    return token_common(env, info, 0);
}

/* The token call bound to this handle: a function whose data is the handle
 * (no unwrap per call, about 40 ns less), holding the Producer object alive
 * through its `producer` property. */
static napi_value bound_token(napi_env env, napi_callback_info info)
{
    size_t argc = 2;
    napi_value argv[2] = {0};
    struct prod *pr = NULL;
    if (napi_get_cb_info(env, info, &argc, argv, NULL, (void **)&pr) != napi_ok || !pr) {
        throw_last(env);
        return NULL;
    }
    struct run *r;
    cbus_ctx *ctx;
    double h;
    if (napi_get_value_double(env, argv[0], &h) == napi_ok) {
        /* a numeric handle from runHandle(); a stale one says so and the
         * caller asks again by run id (the run may have ended) */
        if (!pr->p)
            return int_value(env, -ESTALE);
        if (!(r = handle_run(pr, h)))
            return int_value(env, -ESRCH);
        ctx = &r->ctx;
    } else if (!(ctx = run_ctx(env, pr, argv[0], &r))) {
        return NULL;
    }
    const char *s;
    size_t n;
    if (get_str(env, argv[1], "chunk", 1, &pr->sb[1], &s, &n) < 0)
        return NULL;
    if (!pr->p)
        return int_value(env, -ESTALE);
    return int_value(env, cbus_llm_new_token(pr->p, ctx, s, n));
}

static napi_value prod_token_fn(napi_env env, napi_callback_info info)
{
    size_t argc = 0;
    napi_value self, fn;
    CHECK(env, napi_get_cb_info(env, info, &argc, NULL, &self, NULL));
    struct prod *pr = NULL;
    if (napi_unwrap(env, self, (void **)&pr) != napi_ok || !pr) {
        napi_throw_type_error(env, NULL, "cbus: not a Producer");
        return NULL;
    }
    CHECK(env, napi_create_function(env, "token", NAPI_AUTO_LENGTH, bound_token, pr, &fn));
    CHECK(env, napi_set_named_property(env, fn, "producer", self));
    return fn;
}

/* runHandle(runId): the run's numeric handle for the bound token function,
 * or -1 when no run of that id is open. */
static napi_value prod_run_handle(napi_env env, napi_callback_info info)
{
    size_t argc = 1;
    napi_value argv[1] = {0};
    struct prod *pr = prod_this(env, info, &argc, argv);
    if (!pr)
        return NULL;
    char key[RUN_KEY_MAX];
    size_t kn;
    if (get_key(env, argv[0], "runId", 0, key, &kn) < 0)
        return NULL;
    struct run *r = run_find(pr, key, kn);
    napi_value out;
    CHECK(env, napi_create_double(env, r ? handle_of(pr, r) : -1.0, &out));
    return out;
}

static napi_value prod_stream(napi_env env, napi_callback_info info)
{
    return token_common(env, info, 1);
}

/* Reads a usage count: absent (undefined/null) leaves its bit clear. */
static int usage_count(napi_env env, napi_value obj, const char *key, const char *arg,
                       uint32_t *field, uint8_t *present, unsigned bit)
{
    double d;
    if (get_int(env, prop(env, obj, key), arg, 0, UINT32_MAX, -1, &d))
        return -1;
    if (d >= 0) {
        *field = (uint32_t)d;
        *present |= (uint8_t)bit;
    }
    return 0;
}

/* llmEnd(runId, output, usage, messages, responseId): usage {inputTokens,
 * outputTokens, cacheReadTokens, cacheCreationTokens, reasoningTokens,
 * finishReason (name), generations}; absent counts stay absent.  responseId:
 * the provider's id of the response (gen_ai.response.id), 1..256 bytes of
 * printable ASCII without spaces, else a RangeError (nothing is emitted).
 * Ends the run. */
static napi_value prod_llm_end(napi_env env, napi_callback_info info)
{
    size_t argc = 5;
    napi_value argv[5] = {0};
    struct prod *pr = prod_this(env, info, &argc, argv);
    if (!pr)
        return NULL;
    struct run *r;
    cbus_ctx *ctx = run_ctx(env, pr, argv[0], &r);
    if (!ctx)
        return NULL;
    struct cbus_usage u = {0};
    int none = check_object(env, argv[2], "usage");
    if (none < 0)
        return NULL;
    if (!none) {
        napi_value o = argv[2];
        if (usage_count(env, o, "inputTokens", "usage.inputTokens", &u.input_tokens, &u.usage_present, CBUS_USAGE_INPUT) ||
            usage_count(env, o, "outputTokens", "usage.outputTokens", &u.output_tokens, &u.usage_present, CBUS_USAGE_OUTPUT) ||
            usage_count(env, o, "cacheReadTokens", "usage.cacheReadTokens", &u.cache_read_tokens, &u.usage_present, CBUS_USAGE_CACHE_READ) ||
            usage_count(env, o, "cacheCreationTokens", "usage.cacheCreationTokens", &u.cache_creation_tokens, &u.usage_present, CBUS_USAGE_CACHE_CREATION) ||
            usage_count(env, o, "reasoningTokens", "usage.reasoningTokens", &u.reasoning_tokens, &u.usage_present, CBUS_USAGE_REASONING))
            return NULL;
        double g;
        if (get_int(env, prop(env, o, "generations"), "usage.generations", 0, 65535, 0, &g))
            return NULL;
        u.generations = (uint16_t)g;
        const char *fr;
        size_t fl;
        int got = get_str(env, prop(env, o, "finishReason"), "usage.finishReason", 1, &pr->sb[0], &fr, &fl);
        if (got < 0)
            return NULL;
        if (got == 0) {
            int f = cbus_finish_reason_from_name(fr);
            u.finish_reason = (uint8_t)(f > 0 ? f : CBUS_FINISH_OTHER);
        }
    }
    const char *out, *msg, *rid;
    size_t ol, ml, rl;
    if (get_str(env, argv[1], "output", 1, &pr->sb[1], &out, &ol) < 0 ||
        get_str(env, argv[3], "messages", 1, &pr->sb[2], &msg, &ml) < 0 ||
        get_str(env, argv[4], "responseId", 1, &pr->sb[3], &rid, &rl) < 0)
        return NULL;
    if (rid) { /* what cbus_llm_end_response refuses, said as the argument's fault */
        size_t i = 0;
        while (i < rl && (unsigned char)rid[i] > 0x20 && (unsigned char)rid[i] < 0x7f)
            i++;
        if (!rl || rl > CBUS_RESPONSE_ID_MAX || i < rl)
            return throw_range(env, "responseId", "must be 1..256 bytes of printable ASCII, no space");
    }
    int rc = !pr->p ? -ESTALE
             : rid  ? cbus_llm_end_response(pr->p, ctx, &u, out, msg, ml, rid)
             : msg  ? cbus_llm_end_messages(pr->p, ctx, &u, msg, ml)
                    : cbus_llm_end(pr->p, ctx, &u, out);
    if (r)
        run_del(pr, r);
    return int_value(env, rc);
}

enum end_kind { E_CHAIN = 0, E_TOOL = 1, E_RETRIEVER = 2 };

/* end(kind, runId, text | documentCount): chain 0, tool 1, retriever 2.  Ends the run. */
static napi_value prod_end(napi_env env, napi_callback_info info)
{
    size_t argc = 4;
    napi_value argv[4] = {0};
    struct prod *pr = prod_this(env, info, &argc, argv);
    if (!pr)
        return NULL;
    double kd;
    if (get_int(env, argv[0], "kind", 0, 2, -1, &kd))
        return NULL;
    if (kd < 0)
        return throw_type(env, "kind", "a number");
    struct run *r;
    cbus_ctx *ctx = run_ctx(env, pr, argv[1], &r);
    if (!ctx)
        return NULL;
    const char *s = NULL;
    size_t n;
    double docs = 0;
    if (kd == E_RETRIEVER) {
        if (get_int(env, argv[2], "documentCount", 0, UINT32_MAX, 0, &docs) ||
            get_str(env, argv[3], "documents", 1, &pr->sb[1], &s, &n) < 0)
            return NULL;
    } else if (get_str(env, argv[2], "output", 1, &pr->sb[1], &s, &n) < 0) {
        return NULL;
    }
    int rc = !pr->p            ? -ESTALE
             : kd == E_CHAIN   ? cbus_chain_end(pr->p, ctx, s)
             : kd == E_TOOL    ? cbus_tool_end(pr->p, ctx, s)
                               : cbus_retriever_end_documents(pr->p, ctx, (uint32_t)docs, s);
    if (r)
        run_del(pr, r);
    return int_value(env, rc);
}

/* error(kind, runId, errorType, message, httpStatus): llm 0, chain 1, tool 2,
 * retriever 3.  Ends the run. */
static napi_value prod_error(napi_env env, napi_callback_info info)
{
    size_t argc = 5;
    napi_value argv[5] = {0};
    struct prod *pr = prod_this(env, info, &argc, argv);
    if (!pr)
        return NULL;
    double kd, st;
    if (get_int(env, argv[0], "kind", 0, 3, -1, &kd))
        return NULL;
    if (kd < 0)
        return throw_type(env, "kind", "a number");
    struct run *r;
    cbus_ctx *ctx = run_ctx(env, pr, argv[1], &r);
    if (!ctx)
        return NULL;
    const char *et, *msg;
    size_t el, ml;
    if (get_str(env, argv[2], "errorType", 1, &pr->sb[0], &et, &el) < 0 ||
        get_str(env, argv[3], "message", 1, &pr->sb[1], &msg, &ml) < 0 ||
        get_int(env, argv[4], "httpStatus", 0, 999, 0, &st))
        return NULL;
    int rc = -ESTALE;
    if (pr->p) {
        switch ((int)kd) {
        case 0: rc = cbus_llm_error(pr->p, ctx, et, msg, (int)st); break;
        case 1: rc = cbus_chain_error(pr->p, ctx, et, msg); break;
        case 2: rc = cbus_tool_error(pr->p, ctx, et, msg); break;
        default: rc = cbus_retriever_error(pr->p, ctx, et, msg); break;
        }
    }
    if (r)
        run_del(pr, r);
    return int_value(env, rc);
}

enum point_kind { P_AGENT_ACTION = 0, P_AGENT_FINISH = 1, P_TEXT = 2, P_CUSTOM = 3, P_TOOL_EVENT = 4 };

/* point(kind, runId, name, text): agentAction 0 (name = tool, text = input),
 * agentFinish 1 (text = output), text 2, custom 3 (name, data), toolEvent 4
 * (name, data).  Events inside a run: the run stays open. */
static napi_value prod_point(napi_env env, napi_callback_info info)
{
    size_t argc = 4;
    napi_value argv[4] = {0};
    struct prod *pr = prod_this(env, info, &argc, argv);
    if (!pr)
        return NULL;
    double kd;
    if (get_int(env, argv[0], "kind", 0, 4, -1, &kd))
        return NULL;
    if (kd < 0)
        return throw_type(env, "kind", "a number");
    struct run *r;
    cbus_ctx *ctx = run_ctx(env, pr, argv[1], &r);
    if (!ctx)
        return NULL;
    const char *nm, *tx;
    size_t nl, tl;
    if (get_str(env, argv[2], "name", 1, &pr->sb[0], &nm, &nl) < 0 ||
        get_str(env, argv[3], "text", 1, &pr->sb[1], &tx, &tl) < 0)
        return NULL;
    if (!pr->p)
        return int_value(env, -ESTALE);
    int rc;
    switch ((int)kd) {
    case P_AGENT_ACTION: rc = cbus_agent_action(pr->p, ctx, nm, tx); break;
    case P_AGENT_FINISH: rc = cbus_agent_finish(pr->p, ctx, tx); break;
    case P_TEXT: rc = cbus_text(pr->p, ctx, tx); break;
    case P_CUSTOM: rc = cbus_custom(pr->p, ctx, nm, tx); break;
    default: rc = cbus_tool_event(pr->p, ctx, nm, tx); break;
    }
    return int_value(env, rc);
}

/* retry(runId, attempt, backoffNs, reason) */
static napi_value prod_retry(napi_env env, napi_callback_info info)
{
    size_t argc = 4;
    napi_value argv[4] = {0};
    struct prod *pr = prod_this(env, info, &argc, argv);
    if (!pr)
        return NULL;
    struct run *r;
    cbus_ctx *ctx = run_ctx(env, pr, argv[0], &r);
    if (!ctx)
        return NULL;
    double at, bo;
    const char *reason;
    size_t rl;
    if (get_int(env, argv[1], "attempt", 0, UINT32_MAX, 1, &at) ||
        get_int(env, argv[2], "backoffNs", 0, 9007199254740991.0, 0, &bo) ||
        get_str(env, argv[3], "reason", 1, &pr->sb[1], &reason, &rl) < 0)
        return NULL;
    if (!pr->p)
        return int_value(env, -ESTALE);
    return int_value(env, cbus_retry(pr->p, ctx, (uint32_t)at, (uint64_t)bo, reason));
}

/* score(runId, name, type, value, category, comment): type 1 numeric,
 * 2 boolean, 3 categorical. */
static napi_value prod_score(napi_env env, napi_callback_info info)
{
    size_t argc = 6;
    napi_value argv[6] = {0};
    struct prod *pr = prod_this(env, info, &argc, argv);
    if (!pr)
        return NULL;
    struct run *r;
    cbus_ctx *ctx = run_ctx(env, pr, argv[0], &r);
    if (!ctx)
        return NULL;
    const char *name, *cat, *comment;
    size_t l;
    double type, value = 0;
    if (get_str(env, argv[1], "name", 0, &pr->sb[0], &name, &l) < 0 ||
        get_int(env, argv[2], "type", 1, 3, 1, &type) ||
        get_str(env, argv[4], "category", 1, &pr->sb[1], &cat, &l) < 0 ||
        get_str(env, argv[5], "comment", 1, &pr->sb[2], &comment, &l) < 0)
        return NULL;
    if (!is_nullish(env, argv[3])) {
        napi_valuetype t;
        napi_typeof(env, argv[3], &t);
        if (t == napi_boolean) {
            bool b;
            napi_get_value_bool(env, argv[3], &b);
            value = b;
        } else if (t == napi_number) {
            napi_get_value_double(env, argv[3], &value);
        } else {
            return throw_type(env, "value", "a number or a boolean");
        }
    }
    if (!pr->p)
        return int_value(env, -ESTALE);
    return int_value(env, cbus_score(pr->p, ctx, name, (unsigned)type, value, cat, comment));
}

/* forget(runId): drops a run without an event (a run LangChain abandoned). */
static napi_value prod_forget(napi_env env, napi_callback_info info)
{
    size_t argc = 1;
    napi_value argv[1] = {0};
    struct prod *pr = prod_this(env, info, &argc, argv);
    if (!pr)
        return NULL;
    struct run *r;
    if (!run_ctx(env, pr, argv[0], &r))
        return NULL;
    napi_value out;
    CHECK(env, napi_get_boolean(env, r != NULL, &out));
    if (r)
        run_del(pr, r);
    return out;
}

static napi_value prod_runs(napi_env env, napi_callback_info info)
{
    size_t argc = 0;
    struct prod *pr = prod_this(env, info, &argc, NULL);
    if (!pr)
        return NULL;
    return int_value(env, (int32_t)pr->used);
}

static int set_num(napi_env env, napi_value obj, const char *key, double v)
{
    napi_value n;
    return napi_create_double(env, v, &n) != napi_ok || napi_set_named_property(env, obj, key, n) != napi_ok;
}

static int set_str(napi_env env, napi_value obj, const char *key, const char *s)
{
    napi_value v;
    return napi_create_string_utf8(env, s, NAPI_AUTO_LENGTH, &v) != napi_ok ||
           napi_set_named_property(env, obj, key, v) != napi_ok;
}

/* stats(): {emitted, dropped, waitedNs, maxWaitNs} of the process's shared producer. */
static napi_value prod_stats(napi_env env, napi_callback_info info)
{
    size_t argc = 0;
    struct prod *pr = prod_this(env, info, &argc, NULL);
    if (!pr)
        return NULL;
    if (!pr->p)
        return throw_code(env, "stats", -ESTALE);
    struct cbus_producer_stats st;
    cbus_producer_stats(pr->p, &st);
    napi_value o;
    CHECK(env, napi_create_object(env, &o));
    if (set_num(env, o, "emitted", (double)st.emitted) || set_num(env, o, "dropped", (double)st.dropped) ||
        set_num(env, o, "waitedNs", (double)st.waited_ns) || set_num(env, o, "maxWaitNs", (double)st.max_wait_ns)) {
        throw_last(env);
        return NULL;
    }
    return o;
}

/* check(): cbus_producer_check's code (0, -ENOENT, -EIDRM, -EIO). */
static napi_value prod_check(napi_env env, napi_callback_info info)
{
    size_t argc = 0;
    struct prod *pr = prod_this(env, info, &argc, NULL);
    if (!pr)
        return NULL;
    return int_value(env, pr->p ? cbus_producer_check(pr->p) : -ESTALE);
}

static napi_value prod_close(napi_env env, napi_callback_info info)
{
    size_t argc = 0;
    struct prod *pr = prod_this(env, info, &argc, NULL);
    if (!pr)
        return NULL;
    if (pr->res.es) {
        res_unlink(&pr->res);
        prod_release(&pr->res);
    }
    napi_value u;
    napi_get_undefined(env, &u);
    return u;
}

static napi_value prod_closed(napi_env env, napi_callback_info info)
{
    size_t argc = 0;
    struct prod *pr = prod_this(env, info, &argc, NULL);
    if (!pr)
        return NULL;
    napi_value b;
    CHECK(env, napi_get_boolean(env, pr->p == NULL, &b));
    return b;
}

/* ---- the Consumer class ------------------------------------------------------- */

struct cons {
    struct res res;
    cbus_consumer *c;
    int bodies;                    /* poll bodies too */
    int busy;                      /* a wait is on the pool */
    int detach_pending;            /* released while busy: detach when it completes */
    int orphan;                    /* the JS object is gone: free when it completes */
    struct cbus_event *evs;
    struct cbus_body *bods;
    void *buf;
    size_t buflen;
    unsigned max;
    napi_async_work work;
    napi_deferred deferred;
    uint64_t timeout_ns;
    int result;
};

static void cons_free(struct cons *cs)
{
    free(cs->evs);
    free(cs->bods);
    free(cs->buf);
    free(cs);
}

static void cons_release(struct res *r)
{
    struct cons *cs = (struct cons *)r;
    if (cs->busy) { /* the pool thread is in cbus_consumer_wait: detach after */
        cs->detach_pending = 1;
        return;
    }
    if (cs->c) {
        cbus_consumer_detach(cs->c);
        cs->c = NULL;
    }
}

static void cons_finalize(napi_env env, void *data, void *hint)
{
    (void)env;
    (void)hint;
    struct cons *cs = data;
    if (cs->res.es)
        res_unlink(&cs->res);
    cons_release(&cs->res);
    if (cs->busy)
        cs->orphan = 1;
    else
        cons_free(cs);
}

static int parse_kinds(napi_env env, napi_value v, uint64_t *out)
{
    *out = 0;
    if (is_nullish(env, v))
        return 0;
    bool isarr = false;
    napi_is_array(env, v, &isarr);
    if (!isarr) {
        throw_type(env, "options.kinds", "an array of kind names");
        return -1;
    }
    uint32_t n = 0;
    napi_get_array_length(env, v, &n);
    struct sbuf b = {0};
    int rc = 0;
    for (uint32_t i = 0; i < n && !rc; i++) {
        napi_value e;
        const char *s;
        size_t l;
        if (napi_get_element(env, v, i, &e) != napi_ok || get_str(env, e, "options.kinds[i]", 0, &b, &s, &l) < 0) {
            rc = -1;
            break;
        }
        int k = cbus_kind_from_name(s);
        if (k <= 0) {
            throw_range(env, "options.kinds", "names a kind cbus does not have");
            rc = -1;
            break;
        }
        *out |= CBUS_KIND_BIT(k);
    }
    free(b.p);
    return rc;
}

/* new Consumer(bus, {name, mode: 'lossy'|'lossless', start: 'newest'|'oldest'|'resume',
 *                    kinds: string[], bodies: boolean, batch: number}) */
static napi_value cons_new(napi_env env, napi_callback_info info)
{
    size_t argc = 2;
    napi_value argv[2] = {0}, self;
    CHECK(env, napi_get_cb_info(env, info, &argc, argv, &self, NULL));
    struct envst *es;
    CHECK(env, napi_get_instance_data(env, (void **)&es));
    struct sbuf b = {0}, nb = {0}, mb = {0}, sb = {0};
    const char *bus, *name = NULL, *mode = NULL, *start = NULL;
    size_t l;
    napi_value ret = NULL;
    struct cons *cs = NULL;
    if (get_str(env, argv[0], "bus", 0, &b, &bus, &l) < 0)
        goto out;
    if (cbus_name_valid(bus)) {
        throw_range(env, "bus", "must be 1..31 characters of [A-Za-z0-9_.-], not starting with '.'");
        goto out;
    }
    if (check_object(env, argv[1], "options") != 0) {
        if (!is_nullish(env, argv[1]))
            goto out;
        throw_type(env, "options", "an object with a name");
        goto out;
    }
    napi_value o = argv[1];
    if (get_str(env, prop(env, o, "name"), "options.name", 0, &nb, &name, &l) < 0 ||
        get_str(env, prop(env, o, "mode"), "options.mode", 1, &mb, &mode, &l) < 0 ||
        get_str(env, prop(env, o, "start"), "options.start", 1, &sb, &start, &l) < 0)
        goto out;
    struct cbus_consumer_opts co = {.name = name, .mode = CBUS_LOSSY, .start = CBUS_START_NEWEST};
    if (cbus_name_valid(name)) {
        throw_range(env, "options.name", "must be 1..31 characters of [A-Za-z0-9_.-]");
        goto out;
    }
    if (mode && !strcmp(mode, "lossless"))
        co.mode = CBUS_LOSSLESS;
    else if (mode && strcmp(mode, "lossy")) {
        throw_range(env, "options.mode", "must be 'lossy' or 'lossless'");
        goto out;
    }
    if (start && !strcmp(start, "oldest"))
        co.start = CBUS_START_OLDEST;
    else if (start && !strcmp(start, "resume"))
        co.start = CBUS_START_RESUME;
    else if (start && strcmp(start, "newest")) {
        throw_range(env, "options.start", "must be 'newest', 'oldest' or 'resume'");
        goto out;
    }
    if (parse_kinds(env, prop(env, o, "kinds"), &co.kinds))
        goto out;
    double batch;
    if (get_int(env, prop(env, o, "batch"), "options.batch", 1, POLL_MAX_MAX, POLL_MAX_DEF, &batch))
        goto out;
    int bodies = 1;
    napi_value bv = prop(env, o, "bodies");
    if (!is_nullish(env, bv)) {
        napi_valuetype t;
        napi_typeof(env, bv, &t);
        if (t != napi_boolean) {
            throw_type(env, "options.bodies", "a boolean");
            goto out;
        }
        bool v;
        napi_get_value_bool(env, bv, &v);
        bodies = v;
    }
    cs = calloc(1, sizeof *cs);
    if (!cs) {
        throw_code(env, "attach", -ENOMEM);
        goto out;
    }
    cs->max = (unsigned)batch;
    cs->bodies = bodies;
    int r = cbus_consumer_attach(&cs->c, bus, &co);
    if (r) {
        throw_code(env, bus, r);
        goto fail;
    }
    cs->evs = calloc(cs->max, sizeof *cs->evs);
    cs->bods = calloc(cs->max, sizeof *cs->bods);
    uint32_t lim = cbus_bus_body_limit(cbus_consumer_bus(cs->c));
    cs->buflen = (size_t)lim * 2 > 256 * 1024 ? (size_t)lim * 2 : 256 * 1024;
    cs->buf = bodies ? malloc(cs->buflen) : NULL;
    if (!cs->evs || !cs->bods || (bodies && !cs->buf)) {
        throw_code(env, "attach", -ENOMEM);
        goto fail;
    }
    if (napi_wrap(env, self, cs, cons_finalize, NULL, NULL) != napi_ok) {
        throw_last(env);
        goto fail;
    }
    res_link(es, &cs->res, cons_release);
    ret = self;
    goto out;
fail:
    if (cs->c)
        cbus_consumer_detach(cs->c);
    cons_free(cs);
out:
    free(b.p);
    free(nb.p);
    free(mb.p);
    free(sb.p);
    return ret;
}

static struct cons *cons_this(napi_env env, napi_callback_info info, size_t *argc, napi_value *argv)
{
    napi_value self;
    if (napi_get_cb_info(env, info, argc, argv, &self, NULL) != napi_ok) {
        throw_last(env);
        return NULL;
    }
    struct cons *cs = NULL;
    if (napi_unwrap(env, self, (void **)&cs) != napi_ok || !cs) {
        napi_throw_type_error(env, NULL, "cbus: not a Consumer");
        return NULL;
    }
    return cs;
}

/* A usable consumer for poll/commit/stats: not closed, not waiting. */
static struct cons *cons_ready(napi_env env, napi_callback_info info, size_t *argc, napi_value *argv)
{
    struct cons *cs = cons_this(env, info, argc, argv);
    if (!cs)
        return NULL;
    if (!cs->c || cs->detach_pending) {
        throw_code(env, "consumer", -ESTALE);
        return NULL;
    }
    if (cs->busy) {
        napi_throw_error(env, "EBUSY", "cbus: the consumer is waiting (await wait() first)");
        return NULL;
    }
    return cs;
}

static void set_id_str(napi_env env, napi_value o, const char *key, const uint8_t id[16], int uuid)
{
    char s[40];
    if (uuid)
        cbus_id_uuid(s, id);
    else
        cbus_id_hex(s, id);
    set_str(env, o, key, s);
}

/* A bounded field (from shared memory, maybe unterminated) if non-empty. */
static void set_field_str(napi_env env, napi_value o, const char *key, const char *f, size_t cap)
{
    size_t n = strnlen(f, cap);
    if (!n)
        return;
    napi_value v;
    if (napi_create_string_utf8(env, f, n, &v) == napi_ok)
        napi_set_named_property(env, o, key, v);
}
#define SET_FIELD(env, o, key, ev, f) set_field_str(env, o, key, (ev)->f, sizeof (ev)->f)

static void set_body(napi_env env, napi_value o, const struct cbus_body *b)
{
    napi_value body, tags = NULL, meta = NULL;
    if (napi_create_object(env, &body) != napi_ok)
        return;
    size_t off = 0;
    struct cbus_body_section sec;
    const char *d;
    int cut = 0, r;
    uint32_t skipped = 0;
    while ((r = cbus_body_next(b->data, b->len, &off, &sec, &d)) == 1) {
        if (sec.flags & CBUS_BODY_SECTION_CUT)
            cut = 1;
        napi_value v;
        switch (sec.type) {
        case CBUS_BODY_TEXT:
        case CBUS_BODY_MESSAGES:
        case CBUS_BODY_SYSTEM:
        case CBUS_BODY_RESPONSE_ID:
            if (napi_create_string_utf8(env, d, sec.len, &v) == napi_ok)
                napi_set_named_property(env, body,
                                        sec.type == CBUS_BODY_TEXT       ? "text"
                                        : sec.type == CBUS_BODY_MESSAGES ? "messages"
                                        : sec.type == CBUS_BODY_SYSTEM   ? "system"
                                                                         : "responseId",
                                        v);
            break;
        case CBUS_BODY_TAGS: {
            if (!tags && napi_create_array(env, &tags) != napi_ok)
                break;
            uint32_t i = 0;
            for (size_t p = 0; p < sec.len;) {
                size_t n = strnlen(d + p, sec.len - p);
                if (napi_create_string_utf8(env, d + p, n, &v) == napi_ok)
                    napi_set_element(env, tags, i++, v);
                p += n + 1;
            }
            break;
        }
        case CBUS_BODY_METADATA: {
            if (!meta && napi_create_object(env, &meta) != napi_ok)
                break;
            for (size_t p = 0; p < sec.len;) {
                size_t kn = strnlen(d + p, sec.len - p);
                size_t vp = p + kn + 1;
                if (vp > sec.len)
                    break; /* a key without its value (cut): dropped */
                size_t vn = strnlen(d + vp, sec.len - vp);
                napi_value k;
                if (napi_create_string_utf8(env, d + p, kn, &k) == napi_ok &&
                    napi_create_string_utf8(env, d + vp, vn, &v) == napi_ok)
                    napi_set_property(env, meta, k, v); /* the last value of a key wins */
                p = vp + vn + 1;
            }
            break;
        }
        default:
            skipped++; /* a section this addon does not know (a newer producer's): counted */
            break;
        }
    }
    if (skipped) {
        napi_value n;
        if (napi_create_uint32(env, skipped, &n) == napi_ok)
            napi_set_named_property(env, body, "skippedSections", n);
    }
    if (tags)
        napi_set_named_property(env, body, "tags", tags);
    if (meta)
        napi_set_named_property(env, body, "metadata", meta);
    if (cut || r < 0) {
        napi_value t;
        napi_get_boolean(env, true, &t);
        napi_set_named_property(env, body, "cut", t);
    }
    napi_set_named_property(env, o, "body", body);
}

static napi_value event_js(napi_env env, const struct cbus_event *ev, const struct cbus_body *b)
{
    napi_value o, v;
    if (napi_create_object(env, &o) != napi_ok)
        return NULL;
    const char *kn = cbus_kind_name(ev->kind);
    set_str(env, o, "kind", kn ? kn : "unknown");
    set_num(env, o, "kindId", ev->kind);
    set_num(env, o, "eventId", (double)ev->event_id);
    set_num(env, o, "flags", ev->flags);
    set_num(env, o, "pid", ev->pid);
    set_num(env, o, "tid", ev->tid);
    if (napi_create_bigint_uint64(env, ev->ts_realtime_ns, &v) == napi_ok)
        napi_set_named_property(env, o, "tsRealtimeNs", v);
    if (napi_create_bigint_uint64(env, ev->ts_mono_ns, &v) == napi_ok)
        napi_set_named_property(env, o, "tsMonoNs", v);
    set_id_str(env, o, "runId", ev->run_id, 1);
    if (ev->flags & CBUS_FLAG_HAS_PARENT)
        set_id_str(env, o, "parentRunId", ev->parent_run_id, 1);
    if (ev->flags & CBUS_FLAG_HAS_TRACE)
        set_id_str(env, o, "traceId", ev->trace_id, 0);
    SET_FIELD(env, o, "provider", ev, provider);
    SET_FIELD(env, o, "model", ev, model);
    SET_FIELD(env, o, "user", ev, user);
    SET_FIELD(env, o, "session", ev, session);
    SET_FIELD(env, o, "agent", ev, agent);
    SET_FIELD(env, o, "tenant", ev, tenant);
    SET_FIELD(env, o, "requestId", ev, request_id);
    SET_FIELD(env, o, "name", ev, name);
    SET_FIELD(env, o, "preview", ev, preview);
    napi_value u;
    if (napi_create_object(env, &u) != napi_ok)
        return o;
    switch (cbus_kind_payload(ev->kind)) {
    case CBUS_PAYLOAD_USAGE: {
        const struct cbus_usage *us = &ev->u.usage;
        unsigned pr = us->usage_present;
        if (pr & CBUS_USAGE_INPUT) set_num(env, u, "inputTokens", us->input_tokens);
        if (pr & CBUS_USAGE_OUTPUT) set_num(env, u, "outputTokens", us->output_tokens);
        if (pr & CBUS_USAGE_CACHE_READ) set_num(env, u, "cacheReadTokens", us->cache_read_tokens);
        if (pr & CBUS_USAGE_CACHE_CREATION) set_num(env, u, "cacheCreationTokens", us->cache_creation_tokens);
        if (pr & CBUS_USAGE_REASONING) set_num(env, u, "reasoningTokens", us->reasoning_tokens);
        if (pr & CBUS_USAGE_DURATION) set_num(env, u, "durationNs", (double)us->duration_ns);
        if (pr & CBUS_USAGE_TTFT) set_num(env, u, "ttftNs", (double)us->ttft_ns);
        const char *fr = cbus_finish_reason_name(us->finish_reason);
        if (us->finish_reason && fr) set_str(env, u, "finishReason", fr);
        if (us->generations) set_num(env, u, "generations", us->generations);
        napi_set_named_property(env, o, "usage", u);
        break;
    }
    case CBUS_PAYLOAD_LLM_START:
        set_num(env, u, "promptCount", ev->u.llm_start.prompt_count);
        set_num(env, u, "estInputTokens", ev->u.llm_start.est_input_tokens);
        set_num(env, u, "maxTokens", ev->u.llm_start.max_tokens);
        napi_set_named_property(env, o, "llmStart", u);
        break;
    case CBUS_PAYLOAD_TOKEN:
        set_num(env, o, "tokenIndex", ev->u.token.index);
        break;
    case CBUS_PAYLOAD_ERROR:
        set_num(env, u, "httpStatus", ev->u.error.http_status);
        set_num(env, u, "durationNs", (double)ev->u.error.duration_ns);
        napi_set_named_property(env, o, "error", u);
        break;
    case CBUS_PAYLOAD_RETRY:
        set_num(env, u, "attempt", ev->u.retry.attempt);
        set_num(env, u, "backoffNs", (double)ev->u.retry.backoff_ns);
        napi_set_named_property(env, o, "retry", u);
        break;
    case CBUS_PAYLOAD_RETRIEVER:
        set_num(env, u, "documentCount", ev->u.retriever.document_count);
        set_num(env, u, "durationNs", (double)ev->u.retriever.duration_ns);
        napi_set_named_property(env, o, "retriever", u);
        break;
    case CBUS_PAYLOAD_SPAN:
        set_num(env, o, "durationNs", (double)ev->u.span.duration_ns);
        break;
    case CBUS_PAYLOAD_SCORE: {
        unsigned t = ev->u.score.type;
        set_str(env, u, "type", t == CBUS_SCORE_BOOLEAN ? "boolean" : t == CBUS_SCORE_CATEGORICAL ? "categorical" : "numeric");
        if (t != CBUS_SCORE_CATEGORICAL)
            set_num(env, u, "value", ev->u.score.value);
        napi_set_named_property(env, o, "score", u);
        break;
    }
    default:
        break;
    }
    if (b && b->data && b->len)
        set_body(env, o, b);
    return o;
}

/* poll(max?): an array of events (empty: nothing new). */
static napi_value cons_poll(napi_env env, napi_callback_info info)
{
    size_t argc = 1;
    napi_value argv[1] = {0};
    struct cons *cs = cons_ready(env, info, &argc, argv);
    if (!cs)
        return NULL;
    double m;
    if (get_int(env, argv[0], "max", 1, cs->max, cs->max, &m))
        return NULL;
    int n = cs->bodies ? cbus_consumer_poll_bodies(cs->c, cs->evs, cs->bods, (unsigned)m, cs->buf, cs->buflen)
                       : cbus_consumer_poll(cs->c, cs->evs, (unsigned)m);
    if (n < 0)
        return throw_code(env, "poll", n);
    napi_value arr;
    CHECK(env, napi_create_array_with_length(env, (size_t)n, &arr));
    for (int i = 0; i < n; i++) {
        napi_value e = event_js(env, &cs->evs[i], cs->bodies ? &cs->bods[i] : NULL);
        if (!e) {
            throw_last(env);
            return NULL;
        }
        napi_set_element(env, arr, (uint32_t)i, e);
    }
    return arr;
}

static napi_value cons_commit(napi_env env, napi_callback_info info)
{
    size_t argc = 0;
    struct cons *cs = cons_ready(env, info, &argc, NULL);
    if (!cs)
        return NULL;
    return int_value(env, cbus_consumer_commit(cs->c));
}

static void wait_execute(napi_env env, void *data)
{
    (void)env;
    struct cons *cs = data; /* only this pool thread touches cs->c now (busy) */
    cs->result = cbus_consumer_wait(cs->c, cs->timeout_ns);
}

static void wait_complete(napi_env env, napi_status status, void *data)
{
    struct cons *cs = data;
    cs->busy = 0;
    napi_delete_async_work(env, cs->work);
    cs->work = NULL;
    if (cs->detach_pending && cs->c) {
        cbus_consumer_detach(cs->c);
        cs->c = NULL;
    }
    napi_deferred d = cs->deferred;
    cs->deferred = NULL;
    if (status == napi_ok && d) {
        napi_value v;
        if (cs->result >= 0 || cs->result == -EINTR) {
            napi_get_boolean(env, cs->result == 1, &v);
            napi_resolve_deferred(env, d, v);
        } else {
            char msg[128];
            snprintf(msg, sizeof msg, "cbus: wait: %s", cbus_strerror(cs->result));
            napi_value m, e;
            napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &m);
            napi_create_error(env, NULL, m, &e);
            napi_reject_deferred(env, d, e);
        }
    } else if (d) {
        napi_value v;
        napi_get_boolean(env, false, &v);
        napi_resolve_deferred(env, d, v);
    }
    if (cs->orphan)
        cons_free(cs);
}

/* wait(timeoutMs): a Promise of true (events may be there) or false (timeout),
 * waited for on the libuv pool (futex: no CPU while idle). */
static napi_value cons_wait(napi_env env, napi_callback_info info)
{
    size_t argc = 1;
    napi_value argv[1] = {0};
    struct cons *cs = cons_ready(env, info, &argc, argv);
    if (!cs)
        return NULL;
    double ms;
    if (get_int(env, argv[0], "timeoutMs", 0, 3600000, 1000, &ms))
        return NULL;
    napi_value promise, name;
    CHECK(env, napi_create_promise(env, &cs->deferred, &promise));
    CHECK(env, napi_create_string_utf8(env, "cbus.wait", NAPI_AUTO_LENGTH, &name));
    cs->timeout_ns = (uint64_t)ms * 1000000u;
    if (napi_create_async_work(env, NULL, name, wait_execute, wait_complete, cs, &cs->work) != napi_ok ||
        napi_queue_async_work(env, cs->work) != napi_ok) {
        throw_last(env);
        return NULL;
    }
    cs->busy = 1;
    return promise;
}

static napi_value cons_stats(napi_env env, napi_callback_info info)
{
    size_t argc = 0;
    struct cons *cs = cons_ready(env, info, &argc, NULL);
    if (!cs)
        return NULL;
    struct cbus_consumer_stats st;
    int r = cbus_consumer_stats(cs->c, &st);
    if (r)
        return throw_code(env, "stats", r);
    napi_value o;
    CHECK(env, napi_create_object(env, &o));
    set_num(env, o, "consumed", (double)st.consumed);
    set_num(env, o, "lost", (double)st.lost);
    set_num(env, o, "abandoned", (double)st.abandoned);
    set_num(env, o, "bodySlots", (double)st.body_slots);
    set_num(env, o, "readPos", (double)st.read_pos);
    set_num(env, o, "cursor", (double)st.cursor);
    set_num(env, o, "tail", (double)st.tail);
    set_num(env, o, "lag", (double)st.lag);
    napi_value b;
    napi_get_boolean(env, st.tethered != 0, &b);
    napi_set_named_property(env, o, "tethered", b);
    return o;
}

static napi_value cons_close(napi_env env, napi_callback_info info)
{
    size_t argc = 0;
    struct cons *cs = cons_this(env, info, &argc, NULL);
    if (!cs)
        return NULL;
    if (cs->res.es)
        res_unlink(&cs->res);
    cons_release(&cs->res);
    napi_value u;
    napi_get_undefined(env, &u);
    return u;
}

static napi_value cons_closed(napi_env env, napi_callback_info info)
{
    size_t argc = 0;
    struct cons *cs = cons_this(env, info, &argc, NULL);
    if (!cs)
        return NULL;
    napi_value b;
    CHECK(env, napi_get_boolean(env, !cs->c || cs->detach_pending, &b));
    return b;
}

/* ---- module functions ---------------------------------------------------------- */

/* createBus(name, {capacity, lanes, bodyLimit, losslessWaitNs, stallTimeoutNs}) */
static napi_value m_create_bus(napi_env env, napi_callback_info info)
{
    size_t argc = 2;
    napi_value argv[2] = {0};
    CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
    struct sbuf b = {0};
    const char *name;
    size_t l;
    napi_value ret = NULL;
    if (get_str(env, argv[0], "name", 0, &b, &name, &l) < 0)
        goto out;
    int none = check_object(env, argv[1], "options");
    if (none < 0)
        goto out;
    struct cbus_create_opts o = {0};
    if (!none) {
        double cap, lanes, bl, lw, st;
        if (get_int(env, prop(env, argv[1], "capacity"), "options.capacity", 0, 1 << 24, 0, &cap) ||
            get_int(env, prop(env, argv[1], "lanes"), "options.lanes", 0, CBUS_MAX_LANES, 0, &lanes) ||
            get_int(env, prop(env, argv[1], "bodyLimit"), "options.bodyLimit", 0, CBUS_BODY_LIMIT_MAX, 0, &bl) ||
            get_int(env, prop(env, argv[1], "losslessWaitNs"), "options.losslessWaitNs", 0, 9007199254740991.0, 0, &lw) ||
            get_int(env, prop(env, argv[1], "stallTimeoutNs"), "options.stallTimeoutNs", 0, 9007199254740991.0, 0, &st))
            goto out;
        o.capacity = (uint64_t)cap;
        o.lanes = (uint32_t)lanes;
        o.body_limit = (uint32_t)bl;
        o.lossless_wait_ns = (uint64_t)lw;
        o.stall_timeout_ns = (uint64_t)st;
    }
    int r = cbus_bus_create(name, &o);
    if (r) {
        throw_code(env, name, r);
        goto out;
    }
    napi_get_undefined(env, &ret);
out:
    free(b.p);
    return ret;
}

/* destroyBus(name): true if removed, false if there was none. */
static napi_value m_destroy_bus(napi_env env, napi_callback_info info)
{
    size_t argc = 1;
    napi_value argv[1] = {0};
    CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
    struct sbuf b = {0};
    const char *name;
    size_t l;
    napi_value ret = NULL;
    if (get_str(env, argv[0], "name", 0, &b, &name, &l) < 0)
        goto out;
    int r = cbus_bus_destroy(name);
    if (r && r != -ENOENT) {
        throw_code(env, name, r);
        goto out;
    }
    napi_get_boolean(env, r == 0, &ret);
out:
    free(b.p);
    return ret;
}

/* busInfo(name): {tail, dropped, producers: [{pid, name, emitted, dropped}],
 * consumers: [{name, pid}]} read from the segment (read-only mapping, closed
 * before returning). */
static napi_value m_bus_info(napi_env env, napi_callback_info info)
{
    size_t argc = 1;
    napi_value argv[1] = {0};
    CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
    struct sbuf b = {0};
    const char *name;
    size_t l;
    napi_value ret = NULL;
    if (get_str(env, argv[0], "name", 0, &b, &name, &l) < 0)
        goto out;
    cbus_bus *bus;
    int r = cbus_bus_open(&bus, name, CBUS_OPEN_READONLY);
    if (r) {
        throw_code(env, name, r);
        goto out;
    }
    const struct cbus_shm_header *h = cbus_bus_header(bus);
    napi_value o, ps, cs;
    if (napi_create_object(env, &o) != napi_ok || napi_create_array(env, &ps) != napi_ok ||
        napi_create_array(env, &cs) != napi_ok) {
        cbus_bus_close(bus);
        throw_last(env);
        goto out;
    }
    set_num(env, o, "tail", (double)cbus_bus_tail(bus));
    set_num(env, o, "dropped", (double)atomic_load_explicit(&h->dropped, memory_order_relaxed));
    set_num(env, o, "bodyLimit", cbus_bus_body_limit(bus));
    set_num(env, o, "lanes", cbus_bus_lanes(bus));
    uint32_t np = 0, nc = 0;
    for (unsigned i = 0; i < CBUS_MAX_PRODUCERS; i++) {
        struct cbus_producer_entry *e = cbus_bus_producer_entry(bus, i);
        if (!e || atomic_load_explicit(&e->in_use, memory_order_acquire) != 1)
            continue;
        napi_value pe;
        napi_create_object(env, &pe);
        set_num(env, pe, "pid", atomic_load_explicit(&e->pid, memory_order_relaxed));
        set_field_str(env, pe, "name", e->name, sizeof e->name);
        set_num(env, pe, "emitted", (double)atomic_load_explicit(&e->emitted, memory_order_relaxed));
        set_num(env, pe, "dropped", (double)atomic_load_explicit(&e->dropped, memory_order_relaxed));
        napi_set_element(env, ps, np++, pe);
    }
    for (unsigned i = 0; i < CBUS_MAX_CONSUMERS; i++) {
        struct cbus_consumer_entry *e = cbus_bus_consumer_entry(bus, i);
        if (!e || atomic_load_explicit(&e->state, memory_order_acquire) != CBUS_CSTATE_ACTIVE)
            continue;
        napi_value ce;
        napi_create_object(env, &ce);
        set_num(env, ce, "pid", atomic_load_explicit(&e->pid, memory_order_relaxed));
        set_field_str(env, ce, "name", e->name, sizeof e->name);
        napi_set_element(env, cs, nc++, ce);
    }
    napi_set_named_property(env, o, "producers", ps);
    napi_set_named_property(env, o, "consumers", cs);
    cbus_bus_close(bus);
    ret = o;
out:
    free(b.p);
    return ret;
}

/* sharedProducers(): [{bus, name, refs}] of this process (a test aid: what
 * the refcount holds). */
static napi_value m_shared(napi_env env, napi_callback_info info)
{
    (void)info;
    napi_value arr;
    CHECK(env, napi_create_array(env, &arr));
    pthread_mutex_lock(&shared_mu);
    uint32_t i = 0;
    for (struct shared *s = shared_list; s; s = s->next) {
        napi_value o;
        if (napi_create_object(env, &o) != napi_ok)
            break;
        set_str(env, o, "bus", s->bus);
        set_str(env, o, "name", s->name);
        set_num(env, o, "refs", s->refs);
        napi_set_element(env, arr, i++, o);
    }
    pthread_mutex_unlock(&shared_mu);
    return arr;
}

static napi_value m_strerror(napi_env env, napi_callback_info info)
{
    size_t argc = 1;
    napi_value argv[1] = {0}, out;
    CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
    double c;
    if (get_int(env, argv[0], "code", -100000, 100000, 0, &c))
        return NULL;
    CHECK(env, napi_create_string_utf8(env, cbus_strerror((int)c), NAPI_AUTO_LENGTH, &out));
    return out;
}

static napi_value m_version(napi_env env, napi_callback_info info)
{
    (void)info;
    napi_value out;
    CHECK(env, napi_create_string_utf8(env, cbus_version(), NAPI_AUTO_LENGTH, &out));
    return out;
}

/* ---- module init ------------------------------------------------------------------ */

#define METHOD(n, f) {n, NULL, f, NULL, NULL, NULL, napi_default_method, NULL}

static napi_value init(napi_env env, napi_value exports)
{
    struct envst *es = calloc(1, sizeof *es);
    if (!es) {
        napi_throw_error(env, "ENOMEM", "cbus: out of memory");
        return NULL;
    }
    es->head.next = es->head.prev = &es->head;
    if (napi_set_instance_data(env, es, NULL, NULL) != napi_ok ||
        napi_add_env_cleanup_hook(env, env_cleanup, es) != napi_ok) {
        free(es);
        throw_last(env);
        return NULL;
    }
    static const napi_property_descriptor pm[] = {
        METHOD("start", prod_start),     METHOD("token", prod_token),   METHOD("stream", prod_stream),
        METHOD("tokenFunction", prod_token_fn), METHOD("runHandle", prod_run_handle),
        METHOD("llmEnd", prod_llm_end),  METHOD("end", prod_end),       METHOD("error", prod_error),
        METHOD("point", prod_point),     METHOD("retry", prod_retry),   METHOD("score", prod_score),
        METHOD("forget", prod_forget),   METHOD("runs", prod_runs),     METHOD("stats", prod_stats),
        METHOD("check", prod_check),     METHOD("close", prod_close),   METHOD("closed", prod_closed),
    };
    static const napi_property_descriptor cm[] = {
        METHOD("poll", cons_poll),   METHOD("commit", cons_commit), METHOD("wait", cons_wait),
        METHOD("stats", cons_stats), METHOD("close", cons_close),   METHOD("closed", cons_closed),
    };
    napi_value pc, cc;
    CHECK(env, napi_define_class(env, "NativeProducer", NAPI_AUTO_LENGTH, prod_new, NULL,
                                 sizeof pm / sizeof pm[0], pm, &pc));
    CHECK(env, napi_define_class(env, "NativeConsumer", NAPI_AUTO_LENGTH, cons_new, NULL,
                                 sizeof cm / sizeof cm[0], cm, &cc));
    napi_property_descriptor mod[] = {
        {"NativeProducer", NULL, NULL, NULL, NULL, pc, napi_enumerable, NULL},
        {"NativeConsumer", NULL, NULL, NULL, NULL, cc, napi_enumerable, NULL},
        METHOD("createBus", m_create_bus),
        METHOD("destroyBus", m_destroy_bus),
        METHOD("busInfo", m_bus_info),
        METHOD("sharedProducers", m_shared),
        METHOD("strerror", m_strerror),
        METHOD("version", m_version),
    };
    CHECK(env, napi_define_properties(env, exports, sizeof mod / sizeof mod[0], mod));
    return exports;
}

/* node_api.h's macro defines two exported functions without prototypes. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-prototypes"
NAPI_MODULE_INIT()
{
    return init(env, exports);
}
#pragma GCC diagnostic pop
