/* Stream filters: what a client asked for, checked against events read from
 * shared memory (every string bounded by its array). */
#include <cbus/cbus.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "web.h"

static int fail(char *err, size_t errlen, const char *fmt, const char *a, const char *b)
{
    snprintf(err, errlen, fmt, a, b ? b : "");
    return -EINVAL;
}

static int set_key(int *has, uint64_t *hash, char *shown, size_t shown_len, const char *key,
                   const char *value, char *err, size_t errlen)
{
    size_t n = strlen(value);
    if (!n)
        return fail(err, errlen, "filter '%s': empty value%s", key, NULL);
    *has = 1;
    *hash = cbus_key_hash(value, n);
    snprintf(shown, shown_len, "%s", value);
    return 0;
}

int web_filter_arg(struct web_filter *f, const char *key, const char *value, char *err,
                   size_t errlen)
{
    if (!key || !*key)
        return fail(err, errlen, "empty query parameter%s%s", "", NULL);
    int *seen = NULL;
    if (!strcmp(key, "run"))
        seen = &f->has_run;
    else if (!strcmp(key, "trace"))
        seen = &f->has_trace;
    else if (!strcmp(key, "session"))
        seen = &f->has_session;
    else if (!strcmp(key, "user"))
        seen = &f->has_user;
    if (seen && *seen)
        return fail(err, errlen, "filter '%s' given twice%s", key, NULL);
    if (!value)
        value = "";
    if (!strcmp(key, "run") || !strcmp(key, "trace")) {
        uint8_t *id = key[0] == 'r' ? f->run : f->trace;
        if (cbus_id_parse(id, value))
            return fail(err, errlen, "filter '%s': '%s' is not a 32-hex or UUID id", key, value);
        *seen = 1;
        return 0;
    }
    if (!strcmp(key, "session"))
        return set_key(&f->has_session, &f->session_hash, f->session, sizeof f->session, key,
                       value, err, errlen);
    if (!strcmp(key, "user"))
        return set_key(&f->has_user, &f->user_hash, f->user, sizeof f->user, key, value, err,
                       errlen);
    if (!strcmp(key, "kind")) {
        if (f->kinds)
            return fail(err, errlen, "filter '%s' given twice%s", key, NULL);
        const char *p = value;
        do {
            const char *comma = strchr(p, ',');
            size_t n = comma ? (size_t)(comma - p) : strlen(p);
            char name[40];
            if (n == 0 || n >= sizeof name)
                return fail(err, errlen, "filter 'kind': bad kind list '%s'%s", value, NULL);
            memcpy(name, p, n);
            name[n] = '\0';
            int k = cbus_kind_from_name(name);
            if (k < 0)
                return fail(err, errlen, "filter 'kind': unknown kind '%s'%s", name, NULL);
            f->kinds |= CBUS_KIND_BIT((unsigned)k);
            p = comma ? comma + 1 : NULL;
        } while (p);
        return 0;
    }
    if (!strcmp(key, "start")) {
        if (!strcmp(value, "oldest"))
            f->start_oldest = 1;
        else if (!strcmp(value, "newest"))
            f->start_oldest = 0;
        else
            return fail(err, errlen, "parameter 'start': '%s' is neither oldest nor newest%s",
                        value, NULL);
        return 0;
    }
    return fail(err, errlen, "unknown filter '%s' (run, trace, session, user, kind, start)%s", key,
                NULL);
}

/* The whole value's hash, and the shown bytes unless the producer cut them
 * (a cut key is told apart by its hash alone, as everywhere in cbus). */
static int key_match(const struct cbus_event *ev, unsigned k, uint64_t hash, const char *shown,
                     const char *field, size_t field_len, unsigned trunc_flag)
{
    if (ev->key_hash[k] != hash)
        return 0;
    if (ev->flags & trunc_flag)
        return 1;
    size_t n = strnlen(field, field_len);
    return strlen(shown) == n && !memcmp(shown, field, n);
}

int web_filter_match(const struct web_filter *f, const struct cbus_event *ev)
{
    if (f->kinds && (ev->kind >= 64 || !(f->kinds & CBUS_KIND_BIT(ev->kind))))
        return 0;
    if (f->has_run && memcmp(ev->run_id, f->run, 16))
        return 0;
    if (f->has_trace && (!(ev->flags & CBUS_FLAG_HAS_TRACE) || memcmp(ev->trace_id, f->trace, 16)))
        return 0;
    if (f->has_user && !key_match(ev, CBUS_KEY_USER, f->user_hash, f->user, ev->user,
                                  sizeof ev->user, CBUS_TRUNC_USER))
        return 0;
    if (f->has_session && !key_match(ev, CBUS_KEY_SESSION, f->session_hash, f->session,
                                     ev->session, sizeof ev->session, CBUS_TRUNC_SESSION))
        return 0;
    return 1;
}
