#include "prices.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "files.h"

/* Field names as LiteLLM spells them, in enum cost_rate_field order. */
static const char *const rate_names[COST_RATE__COUNT] = {
    "input_cost_per_token",
    "output_cost_per_token",
    "cache_read_input_token_cost",
    "cache_creation_input_token_cost",
    "output_cost_per_reasoning_token",
};

/* No per-token rate in the real table is above 0.6 USD; 1000 catches a
 * price written per million tokens by mistake without refusing real data. */
#define RATE_MAX_USD 1000.0

struct price_entry {
    char *name;
    uint64_t hash;
    int usable;                 /* has an input or output per-token rate */
    struct cost_price price;
};

struct cost_price_table {
    struct price_entry *e;
    size_t n, cap;
    uint32_t *slot;             /* index + 1, 0 = empty */
    size_t slot_mask;
};

static uint64_t str_hash(const char *s)
{
    uint64_t h = UINT64_C(14695981039346656037);
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * UINT64_C(1099511628211);
    return h;
}

static long find(const struct cost_price_table *t, const char *name, uint64_t h)
{
    if (!t->slot)
        return -1;
    for (size_t i = h & t->slot_mask;; i = (i + 1) & t->slot_mask) {
        uint32_t s = t->slot[i];
        if (!s)
            return -1;
        if (t->e[s - 1].hash == h && strcmp(t->e[s - 1].name, name) == 0)
            return (long)(s - 1);
    }
}

static int rehash(struct cost_price_table *t, size_t nslots)
{
    uint32_t *s = calloc(nslots, sizeof *s);
    if (!s)
        return -ENOMEM;
    free(t->slot);
    t->slot = s;
    t->slot_mask = nslots - 1;
    for (size_t k = 0; k < t->n; k++) {
        size_t i = t->e[k].hash & t->slot_mask;
        while (s[i])
            i = (i + 1) & t->slot_mask;
        s[i] = (uint32_t)(k + 1);
    }
    return 0;
}

/* Reads one rate field: absent leaves *set unchanged; a value that is not a
 * number in range is an error naming the entry and the field. */
static int read_rate(const cJSON *obj, const char *field, const char *file, const char *entry,
                     uint64_t *pico, int *present, char *err, size_t errlen)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, field);
    *present = 0;
    if (!v || cJSON_IsNull(v))
        return 0;
    if (!cJSON_IsNumber(v)) {
        snprintf(err, errlen, "%s: entry \"%s\": %s: expected a number (USD per token)", file,
                 entry, field);
        return -EINVAL;
    }
    double d = v->valuedouble;
    if (!isfinite(d) || d < 0 || d > RATE_MAX_USD) {
        snprintf(err, errlen, "%s: entry \"%s\": %s: %g is not a price in USD per token (0..%g)",
                 file, entry, field, d, RATE_MAX_USD);
        return -EINVAL;
    }
    /* The one place a double becomes money: round to the nearest pico-dollar
     * (values like 2.9999900000000002e-06 are float noise in the file). */
    *pico = (uint64_t)llround(d * 1e12);
    *present = 1;
    return 0;
}

/* Applies the fallbacks so the hot path never branches on a missing rate:
 * cache reads and writes without their own rate are charged as plain input
 * (the conservative choice: never silently free), reasoning without its own
 * rate is charged as output (it is part of the output count). */
static void complete_rates(struct cost_rates *r)
{
    if (!(r->set & COST_RATE_SET(COST_RATE_CACHE_READ)))
        r->pico[COST_RATE_CACHE_READ] = r->pico[COST_RATE_INPUT];
    if (!(r->set & COST_RATE_SET(COST_RATE_CACHE_CREATION)))
        r->pico[COST_RATE_CACHE_CREATION] = r->pico[COST_RATE_INPUT];
    if (!(r->set & COST_RATE_SET(COST_RATE_REASONING)))
        r->pico[COST_RATE_REASONING] = r->pico[COST_RATE_OUTPUT];
}

/* "<field>_above_<N>k_tokens" => N*1000 in *above and the field index;
 * returns 0 when key is not such a tier key. */
static int tier_key(const char *key, unsigned *field, uint64_t *above)
{
    for (unsigned f = 0; f < COST_RATE__COUNT; f++) {
        size_t n = strlen(rate_names[f]);
        if (strncmp(key, rate_names[f], n) != 0 || strncmp(key + n, "_above_", 7) != 0)
            continue;
        const char *p = key + n + 7;
        char *end;
        unsigned long long k = strtoull(p, &end, 10);
        if (end == p || strcmp(end, "k_tokens") != 0 || k == 0 || k > 100000000ULL)
            continue;
        *field = f;
        *above = k * 1000;
        return 1;
    }
    return 0;
}

static int parse_entry(const cJSON *obj, const char *file, const char *name,
                       struct price_entry *pe, char *err, size_t errlen)
{
    struct cost_price *p = &pe->price;
    memset(p, 0, sizeof *p);
    for (unsigned f = 0; f < COST_RATE__COUNT; f++) {
        int present;
        int r = read_rate(obj, rate_names[f], file, name, &p->base.pico[f], &present, err, errlen);
        if (r)
            return r;
        if (present)
            p->base.set |= COST_RATE_SET(f);
    }
    pe->usable = (p->base.set & (COST_RATE_SET(COST_RATE_INPUT) | COST_RATE_SET(COST_RATE_OUTPUT))) != 0;

    /* Tiers: gather the given tier fields, then fill the rest from base. */
    struct cost_rates given[COST_TIERS_MAX];
    memset(given, 0, sizeof given);
    const cJSON *c;
    cJSON_ArrayForEach(c, obj) {
        unsigned f;
        uint64_t above;
        if (!c->string || !tier_key(c->string, &f, &above))
            continue;
        unsigned t;
        for (t = 0; t < p->n_tiers; t++)
            if (p->tier[t].above_tokens == above)
                break;
        if (t == p->n_tiers) {
            if (p->n_tiers == COST_TIERS_MAX) {
                snprintf(err, errlen, "%s: entry \"%s\": %s: more than %d token tiers", file, name,
                         c->string, COST_TIERS_MAX);
                return -EINVAL;
            }
            p->tier[p->n_tiers++].above_tokens = above;
        }
        int present;
        int r = read_rate(obj, c->string, file, name, &given[t].pico[f], &present, err, errlen);
        if (r)
            return r;
        if (present)
            given[t].set |= COST_RATE_SET(f);
    }
    for (unsigned t = 0; t < p->n_tiers; t++) {
        struct cost_rates r = p->base; /* uncompleted base: only given fields */
        for (unsigned f = 0; f < COST_RATE__COUNT; f++)
            if (given[t].set & COST_RATE_SET(f)) {
                r.pico[f] = given[t].pico[f];
                r.set |= COST_RATE_SET(f);
            }
        complete_rates(&r);
        p->tier[t].r = r;
    }
    complete_rates(&p->base);
    /* Ascending thresholds: cost_price_rates() keeps the last one exceeded. */
    for (unsigned i = 1; i < p->n_tiers; i++)
        for (unsigned j = i; j > 0 && p->tier[j - 1].above_tokens > p->tier[j].above_tokens; j--) {
            __typeof__(p->tier[0]) tmp = p->tier[j];
            p->tier[j] = p->tier[j - 1];
            p->tier[j - 1] = tmp;
        }
    return 0;
}

static void syntax_error(const char *file, const char *json, const char *at, char *err,
                         size_t errlen)
{
    unsigned line = 1, col = 1;
    if (!at)
        at = json;
    for (const char *c = json; c < at && *c; c++) {
        if (*c == '\n') {
            line++;
            col = 1;
        } else {
            col++;
        }
    }
    char near[24];
    size_t n = strcspn(at, "\n");
    if (n > sizeof near - 1)
        n = sizeof near - 1;
    memcpy(near, at, n);
    near[n] = '\0';
    snprintf(err, errlen, "%s:%u:%u: JSON syntax error near '%s'", file, line, col, near);
}

int cost_prices_merge(struct cost_price_table *t, const char *name, const char *json, char *err,
                      size_t errlen)
{
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(json, &end, 1);
    if (!root) {
        syntax_error(name, json, end ? end : cJSON_GetErrorPtr(), err, errlen);
        return -EINVAL;
    }
    if (!cJSON_IsObject(root)) {
        snprintf(err, errlen, "%s: the top level must be an object of model entries", name);
        cJSON_Delete(root);
        return -EINVAL;
    }
    int rc = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, root) {
        if (cJSON_IsString(c))
            continue; /* metadata such as "last_updated" */
        if (!cJSON_IsObject(c)) {
            snprintf(err, errlen, "%s: entry \"%s\": expected an object of prices", name,
                     c->string);
            rc = -EINVAL;
            break;
        }
        struct price_entry pe = {0};
        rc = parse_entry(c, name, c->string, &pe, err, errlen);
        if (rc)
            break;
        pe.hash = str_hash(c->string);
        long at = find(t, c->string, pe.hash);
        if (at >= 0) {
            pe.name = t->e[at].name;
            t->e[at] = pe;
            t->e[at].price.key = pe.name;
            continue;
        }
        if (t->n == t->cap) {
            size_t cap = t->cap ? t->cap * 2 : 1024;
            struct price_entry *n = realloc(t->e, cap * sizeof *n);
            if (!n) {
                rc = -ENOMEM;
                break;
            }
            t->e = n;
            t->cap = cap;
        }
        pe.name = strdup(c->string);
        if (!pe.name) {
            rc = -ENOMEM;
            break;
        }
        pe.price.key = pe.name;
        t->e[t->n++] = pe;
        if (2 * t->n > t->slot_mask || !t->slot) {
            rc = rehash(t, t->slot ? (t->slot_mask + 1) * 2 : 4096);
            if (rc)
                break;
        } else {
            size_t i = pe.hash & t->slot_mask;
            while (t->slot[i])
                i = (i + 1) & t->slot_mask;
            t->slot[i] = (uint32_t)t->n;
        }
    }
    if (rc == -ENOMEM)
        snprintf(err, errlen, "%s: out of memory", name);
    cJSON_Delete(root);
    return rc;
}

int cost_prices_parse(struct cost_price_table **out, const char *name, const char *json,
                      char *err, size_t errlen)
{
    struct cost_price_table *t = calloc(1, sizeof *t);
    if (!t) {
        snprintf(err, errlen, "%s: out of memory", name);
        return -ENOMEM;
    }
    int r = cost_prices_merge(t, name, json, err, errlen);
    if (r) {
        cost_prices_free(t);
        return r;
    }
    *out = t;
    return 0;
}

static char *slurp(const char *path, char *err, size_t errlen, int *rc)
{
    char *buf;
    size_t len;
    *rc = cbus_read_file(path, 0, &buf, &len);
    if (*rc) {
        snprintf(err, errlen, "%s: %s", path, *rc == -EIO ? "read error" : strerror(-*rc));
        return NULL;
    }
    if (strlen(buf) != len) {
        free(buf);
        *rc = -EINVAL;
        snprintf(err, errlen, "%s: contains a NUL byte (not a JSON text file)", path);
        return NULL;
    }
    return buf;
}

int cost_prices_load(struct cost_price_table **out, const char *path, const char *overrides,
                     char *err, size_t errlen)
{
    int rc = 0;
    char *text = slurp(path, err, errlen, &rc);
    if (!text)
        return rc;
    struct cost_price_table *t = NULL;
    rc = cost_prices_parse(&t, path, text, err, errlen);
    free(text);
    if (rc)
        return rc;
    if (overrides) {
        text = slurp(overrides, err, errlen, &rc);
        if (!text) {
            cost_prices_free(t);
            return rc;
        }
        rc = cost_prices_merge(t, overrides, text, err, errlen);
        free(text);
        if (rc) {
            cost_prices_free(t);
            return rc;
        }
    }
    *out = t;
    return 0;
}

void cost_prices_free(struct cost_price_table *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->n; i++)
        free(t->e[i].name);
    free(t->e);
    free(t->slot);
    free(t);
}

size_t cost_prices_count(const struct cost_price_table *t)
{
    return t ? t->n : 0;
}

const struct cost_price *cost_prices_lookup(const struct cost_price_table *t, const char *provider,
                                            const char *model, const char **why)
{
    *why = "not in the price table";
    if (!t || !model || !*model)
        return NULL;
    long at = find(t, model, str_hash(model));
    if (at < 0 && provider && *provider) {
        char key[256];
        int n = snprintf(key, sizeof key, "%s/%s", provider, model);
        if (n > 0 && (size_t)n < sizeof key)
            at = find(t, key, str_hash(key));
    }
    if (at < 0)
        return NULL;
    if (!t->e[at].usable) {
        *why = "its price entry has no per-token input or output price";
        return NULL;
    }
    return &t->e[at].price;
}

cost_u128 cost_usage_price(const struct cost_price *p, const struct cbus_usage *u,
                           cost_u128 parts[COST_PART__COUNT], unsigned *anomalies)
{
    unsigned pres = u->usage_present, anom = 0;
    uint64_t in = pres & CBUS_USAGE_INPUT ? u->input_tokens : 0;
    uint64_t out = pres & CBUS_USAGE_OUTPUT ? u->output_tokens : 0;
    uint64_t cr = pres & CBUS_USAGE_CACHE_READ ? u->cache_read_tokens : 0;
    uint64_t cc = pres & CBUS_USAGE_CACHE_CREATION ? u->cache_creation_tokens : 0;
    uint64_t rs = pres & CBUS_USAGE_REASONING ? u->reasoning_tokens : 0;
    uint64_t uncached = 0;
    if (pres & CBUS_USAGE_INPUT) {
        if (cr + cc > in)
            anom |= COST_ANOM_CACHE_EXCEEDS_INPUT;
        else
            uncached = in - cr - cc;
    }
    uint64_t plain_out = 0;
    if (pres & CBUS_USAGE_OUTPUT) {
        if (rs > out) {
            anom |= COST_ANOM_REASONING_EXCEEDS_OUTPUT;
            rs = out;
        }
        plain_out = out - rs;
    }
    if (anomalies)
        *anomalies = anom;
    if (parts)
        memset(parts, 0, COST_PART__COUNT * sizeof parts[0]);
    if (!p)
        return 0;
    const struct cost_rates *r = cost_price_rates(p, pres & CBUS_USAGE_INPUT ? in : cr + cc);
    cost_u128 v[COST_PART__COUNT] = {
        [COST_PART_INPUT] = (cost_u128)uncached * r->pico[COST_RATE_INPUT],
        [COST_PART_CACHE_READ] = (cost_u128)cr * r->pico[COST_RATE_CACHE_READ],
        [COST_PART_CACHE_CREATION] = (cost_u128)cc * r->pico[COST_RATE_CACHE_CREATION],
        [COST_PART_OUTPUT] = (cost_u128)plain_out * r->pico[COST_RATE_OUTPUT],
        [COST_PART_REASONING] = (cost_u128)rs * r->pico[COST_RATE_REASONING],
    };
    if (parts)
        memcpy(parts, v, sizeof v);
    return v[0] + v[1] + v[2] + v[3] + v[4];
}
