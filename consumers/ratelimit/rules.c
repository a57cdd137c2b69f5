#include "rules.h"

#include <cbus/layout.h>

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const dim_names[RL_DIM__COUNT] = {"user",     "session", "model",
                                                     "provider", "agent",   "tenant"};
/* The admission scope a dim's verdicts go to (every dim has one). */
static const int dim_scope[RL_DIM__COUNT] = {CBUS_SCOPE_USER,     CBUS_SCOPE_SESSION,
                                             CBUS_SCOPE_MODEL,    CBUS_SCOPE_PROVIDER,
                                             CBUS_SCOPE_AGENT,    CBUS_SCOPE_TENANT};

const char *rl_dim_name(unsigned dim)
{
    return dim < RL_DIM__COUNT ? dim_names[dim] : "?";
}

int rl_glob(const char *pat, const char *s, size_t n)
{
    /* Iterative wildcard match with one backtrack point: linear for the
     * patterns people write (a prefix, a suffix, one star in the middle). */
    size_t i = 0, star_p = (size_t)-1, star_i = 0;
    const char *p = pat;
    size_t pi = 0;
    while (i < n) {
        if (p[pi] == '*') {
            star_p = ++pi;
            star_i = i;
        } else if (p[pi] && p[pi] == s[i]) {
            pi++;
            i++;
        } else if (star_p != (size_t)-1) {
            pi = star_p;
            i = ++star_i;
        } else {
            return 0;
        }
    }
    while (p[pi] == '*')
        pi++;
    return p[pi] == '\0';
}

void rl_rules_init(struct rl_rules *rs)
{
    memset(rs, 0, sizeof *rs);
}

static void rule_free(struct rl_rule *r)
{
    for (unsigned d = 0; d < RL_DIM__COUNT; d++)
        free(r->pattern[d]);
    free(r->text);
}

void rl_rules_free(struct rl_rules *rs)
{
    for (size_t i = 0; i < rs->count; i++)
        rule_free(&rs->rule[i]);
    free(rs->rule);
    for (unsigned g = 0; g < RL_GROUPS; g++)
        free(rs->order[g]);
    memset(rs, 0, sizeof *rs);
}

/* Whole number 1..max for a limit option. */
static int parse_count(const char *opt, const char *v, uint64_t max, uint64_t *out, char *err,
                       size_t errlen)
{
    char *end;
    if (!isdigit((unsigned char)*v)) {
        snprintf(err, errlen, "%s: '%s' is not a whole number", opt, v);
        return -EINVAL;
    }
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || *end) {
        snprintf(err, errlen, "%s: '%s' is not a whole number", opt, v);
        return -EINVAL;
    }
    if (x < 1 || x > max) {
        snprintf(err, errlen, "%s: %llu is out of range [1, %llu]", opt, x, (unsigned long long)max);
        return -EINVAL;
    }
    *out = x;
    return 0;
}

/* Limits up to 1e12 per minute keep every GCRA product inside 128 bits
 * with room to spare. */
#define RL_MAX_LIMIT UINT64_C(1000000000000)

/* What a rule's text said beyond its selectors and limits. */
struct rule_opts {
    int global, have_tokens, have_enforce;
    int enforce; /* a dim, RL_NO_PUBLISH, or -2: not named */
};

/* NAME=PATTERN for one of the dims. */
static int parse_selector(struct rl_rule *r, unsigned dim, const char *k, const char *v, char *err,
                          size_t errlen)
{
    if (r->pattern[dim]) {
        snprintf(err, errlen, "%s= given twice", k);
        return -EINVAL;
    }
    size_t vl = strlen(v);
    if (vl == 0) {
        snprintf(err, errlen, "%s=: empty pattern (use * for any value)", k);
        return -EINVAL;
    }
    /* A literal matches the whole value by hash: a value longer
     * than the event field still has exactly one rule. */
    if (!strchr(v, '*'))
        r->literal_hash[dim] = cbus_key_hash(v, vl);
    r->pattern[dim] = strdup(v);
    if (!r->pattern[dim]) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    r->group |= 1u << dim;
    for (const char *c = v; *c; c++)
        r->specificity += *c != '*';
    return 0;
}

/* A limit (rpm=, tpm=, burst=, token_burst=), given at most once. */
static int parse_limit(const char *k, const char *v, uint64_t *slot, char *err, size_t errlen)
{
    if (*slot) {
        snprintf(err, errlen, "%s= given twice", k);
        return -EINVAL;
    }
    return parse_count(k, v, RL_MAX_LIMIT, slot, err, errlen);
}

/* Every NAME=VALUE that is not a selector. */
static int parse_option(struct rl_rule *r, struct rule_opts *ro, const char *k, const char *v, char *err,
                        size_t errlen)
{
    if (!strcmp(k, "rpm"))
        return parse_limit(k, v, &r->req.limit, err, errlen);
    if (!strcmp(k, "tpm"))
        return parse_limit(k, v, &r->tok.limit, err, errlen);
    if (!strcmp(k, "burst"))
        return parse_limit(k, v, &r->req.burst, err, errlen);
    if (!strcmp(k, "token_burst"))
        return parse_limit(k, v, &r->tok.burst, err, errlen);
    if (!strcmp(k, "tokens")) {
        if (ro->have_tokens++) {
            snprintf(err, errlen, "tokens= given twice");
            return -EINVAL;
        }
        if (!strcmp(v, "total"))
            r->tokens = RL_TOKENS_TOTAL;
        else if (!strcmp(v, "input"))
            r->tokens = RL_TOKENS_INPUT;
        else if (!strcmp(v, "output"))
            r->tokens = RL_TOKENS_OUTPUT;
        else {
            snprintf(err, errlen, "tokens=%s: want input, output or total", v);
            return -EINVAL;
        }
        return 0;
    }
    if (!strcmp(k, "enforce")) {
        if (ro->have_enforce++) {
            snprintf(err, errlen, "enforce= given twice");
            return -EINVAL;
        }
        if (!strcmp(v, "none"))
            ro->enforce = RL_NO_PUBLISH;
        for (unsigned d = 0; d < RL_DIM__COUNT && ro->enforce == -2; d++)
            if (!strcmp(v, dim_names[d]))
                ro->enforce = (int)d;
        if (ro->enforce == -2) {
            snprintf(err, errlen, "enforce=%s: want none, user, session, model, provider, "
                     "agent or tenant", v);
            return -EINVAL;
        }
        return 0;
    }
    snprintf(err, errlen,
             "unknown option '%s' (want user=, session=, model=, provider=, agent=, tenant=, "
             "global, rpm=, "
             "tpm=, burst=, token_burst=, tokens=, enforce=)", k);
    return -EINVAL;
}

/* The checks over the whole rule, its default bursts and where its
 * verdicts go. */
static int finish_rule(struct rl_rule *r, const struct rule_opts *ro, char *err, size_t errlen)
{
    const char *bad = NULL;
    if (ro->global && r->group)
        bad = "'global' cannot be combined with user=, session=, model=, provider=, agent= or tenant=";
    else if (!ro->global && !r->group)
        bad = "no selector: name 'global' or at least one of user=, session=, model=, provider=, "
              "agent=, tenant=";
    else if (!r->req.limit && !r->tok.limit)
        bad = "no limit: give rpm= and/or tpm=";
    else if (r->req.burst && !r->req.limit)
        bad = "burst= without rpm=";
    else if (r->tok.burst && !r->tok.limit)
        bad = "token_burst= without tpm=";
    else if (ro->have_tokens && !r->tok.limit)
        bad = "tokens= without tpm=";
    if (bad) {
        snprintf(err, errlen, "%s", bad);
        return -EINVAL;
    }
    if (!r->req.burst)
        r->req.burst = r->req.limit;
    if (!r->tok.burst)
        r->tok.burst = r->tok.limit;
    /* Where verdicts go.  A one-dim rule's key is exactly a scope key of the
     * admission table; a combination's is not, so it is counted only unless
     * the operator opts into enforcing it on one of its dims. */
    int enforce = ro->enforce, have_enforce = ro->have_enforce;
    unsigned ndims = (unsigned)__builtin_popcount(r->group);
    if (have_enforce && enforce >= 0 && !(r->group & (1u << enforce))) {
        snprintf(err, errlen, "enforce=%s: the rule has no %s= selector", dim_names[enforce],
                 dim_names[enforce]);
        return -EINVAL;
    }
    if (!r->group)
        r->publish_scope = have_enforce && enforce == RL_NO_PUBLISH ? RL_NO_PUBLISH : CBUS_SCOPE_GLOBAL;
    else if (ndims == 1 && !have_enforce)
        r->publish_scope = dim_scope[__builtin_ctz(r->group)];
    else if (have_enforce && enforce >= 0)
        r->publish_scope = dim_scope[enforce];
    else
        r->publish_scope = RL_NO_PUBLISH;
    return 0;
}

static int parse_rule(struct rl_rule *r, const char *text, char *err, size_t errlen)
{
    char *copy = strdup(text);
    if (!copy) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    struct rule_opts ro = {.enforce = -2};
    int rc = 0;
    char *save = NULL;
    for (char *tok = strtok_r(copy, " \t", &save); tok && !rc; tok = strtok_r(NULL, " \t", &save)) {
        if (!strcmp(tok, "global")) {
            if (ro.global) {
                snprintf(err, errlen, "'global' given twice");
                rc = -EINVAL;
            }
            ro.global = 1;
            continue;
        }
        char *eq = strchr(tok, '=');
        if (!eq || eq == tok) {
            snprintf(err, errlen, "'%s' is not NAME=VALUE or 'global'", tok);
            rc = -EINVAL;
            continue;
        }
        *eq = '\0';
        int dim = -1;
        for (unsigned d = 0; d < RL_DIM__COUNT; d++)
            if (!strcmp(tok, dim_names[d]))
                dim = (int)d;
        rc = dim >= 0 ? parse_selector(r, (unsigned)dim, tok, eq + 1, err, errlen)
                      : parse_option(r, &ro, tok, eq + 1, err, errlen);
    }
    if (!rc)
        rc = finish_rule(r, &ro, err, errlen);
    free(copy);
    return rc;
}

static char *canonical_text(const struct rl_rule *r)
{
    char buf[512];
    size_t n = 0;
#define ADD(...)                                                                  \
    do {                                                                          \
        int w_ = snprintf(buf + n, sizeof buf - n, __VA_ARGS__);                  \
        if (w_ > 0)                                                               \
            n = n + (size_t)w_ < sizeof buf ? n + (size_t)w_ : sizeof buf - 1;    \
    } while (0)
    if (!r->group)
        ADD("global");
    for (unsigned d = 0; d < RL_DIM__COUNT; d++)
        if (r->pattern[d])
            ADD("%s%s=%s", n ? " " : "", dim_names[d], r->pattern[d]);
    if (r->req.limit) {
        ADD(" rpm=%llu", (unsigned long long)r->req.limit);
        if (r->req.burst != r->req.limit)
            ADD(" burst=%llu", (unsigned long long)r->req.burst);
    }
    if (r->tok.limit) {
        static const char *const kinds[] = {"total", "input", "output"};
        ADD(" tpm=%llu tokens=%s", (unsigned long long)r->tok.limit, kinds[r->tokens]);
        if (r->tok.burst != r->tok.limit)
            ADD(" token_burst=%llu", (unsigned long long)r->tok.burst);
    }
    if (r->publish_scope == RL_NO_PUBLISH)
        ADD(" enforce=none");
    else if (__builtin_popcount(r->group) > 1)
        for (unsigned d = 0; d < RL_DIM__COUNT; d++)
            if (dim_scope[d] == r->publish_scope)
                ADD(" enforce=%s", dim_names[d]);
#undef ADD
    return strdup(buf);
}

int rl_rules_add(struct rl_rules *rs, const char *text, unsigned line, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (rs->count == rs->cap) {
        size_t ncap = rs->cap ? rs->cap * 2 : 8;
        struct rl_rule *n = realloc(rs->rule, ncap * sizeof *n);
        if (!n) {
            snprintf(err, errlen, "out of memory");
            return -ENOMEM;
        }
        rs->rule = n;
        rs->cap = ncap;
    }
    struct rl_rule *r = &rs->rule[rs->count];
    memset(r, 0, sizeof *r);
    r->line = line;
    int rc = parse_rule(r, text, err, errlen);
    if (!rc && !(r->text = canonical_text(r))) {
        snprintf(err, errlen, "out of memory");
        rc = -ENOMEM;
    }
    if (rc) {
        rule_free(r);
        return rc;
    }
    rs->count++;
    return 0;
}

static const struct rl_rules *sort_rs;

static int by_precedence(const void *a, const void *b)
{
    const struct rl_rule *x = &sort_rs->rule[*(const unsigned *)a];
    const struct rl_rule *y = &sort_rs->rule[*(const unsigned *)b];
    if (x->specificity != y->specificity)
        return x->specificity > y->specificity ? -1 : 1;
    return x->line < y->line ? -1 : x->line > y->line;
}

static int same_selector(const struct rl_rule *a, const struct rl_rule *b)
{
    if (a->group != b->group)
        return 0;
    for (unsigned d = 0; d < RL_DIM__COUNT; d++)
        if (a->pattern[d] && strcmp(a->pattern[d], b->pattern[d]))
            return 0;
    return 1;
}

int rl_rules_finish(struct rl_rules *rs, unsigned *bad_line, char *err, size_t errlen)
{
    for (size_t i = 0; i < rs->count; i++)
        for (size_t j = 0; j < i; j++)
            if (same_selector(&rs->rule[i], &rs->rule[j])) {
                *bad_line = rs->rule[i].line;
                snprintf(err, errlen, "same selector as the rule on line %u (merge them into one rule)",
                         rs->rule[j].line);
                return -EINVAL;
            }
    rs->n_groups = 0;
    for (unsigned g = 0; g < RL_GROUPS; g++) {
        free(rs->order[g]);
        rs->order[g] = NULL;
        rs->order_count[g] = 0;
        for (size_t i = 0; i < rs->count; i++)
            rs->order_count[g] += rs->rule[i].group == g;
        if (!rs->order_count[g])
            continue;
        if (rs->n_groups == RL_GROUPS_USED_MAX) {
            for (size_t i = 0; i < rs->count; i++)
                if (rs->rule[i].group == g) {
                    *bad_line = rs->rule[i].line;
                    break;
                }
            snprintf(err, errlen, "more than %u different selector combinations",
                     RL_GROUPS_USED_MAX);
            return -EINVAL;
        }
        rs->order[g] = malloc(rs->order_count[g] * sizeof(unsigned));
        if (!rs->order[g]) {
            snprintf(err, errlen, "out of memory");
            return -ENOMEM;
        }
        unsigned n = 0;
        for (size_t i = 0; i < rs->count; i++)
            if (rs->rule[i].group == g)
                rs->order[g][n++] = (unsigned)i;
        sort_rs = rs;
        qsort(rs->order[g], n, sizeof(unsigned), by_precedence);
        sort_rs = NULL;
        rs->groups[rs->n_groups++] = g;
    }
    return 0;
}

int rl_rules_match(const struct rl_rules *rs, unsigned group, const struct rl_dims *d)
{
    for (unsigned k = 0; k < RL_DIM__COUNT; k++)
        if ((group & (1u << k)) && d->len[k] == 0)
            return -1;
    for (unsigned i = 0; i < rs->order_count[group]; i++) {
        unsigned idx = rs->order[group][i];
        const struct rl_rule *r = &rs->rule[idx];
        int ok = 1;
        for (unsigned k = 0; k < RL_DIM__COUNT && ok; k++)
            if (r->literal_hash[k])
                ok = r->literal_hash[k] == d->hash[k];
            else if (r->pattern[k])
                ok = rl_glob(r->pattern[k], d->s[k], d->len[k]);
        if (ok)
            return (int)idx;
    }
    return -1;
}
