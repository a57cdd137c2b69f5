#include "redact.h"

#include <string.h>

struct out {
    char *p;
    size_t left; /* room, not counting the NUL */
};

static void put(struct out *o, const char *s, size_t n)
{
    for (size_t i = 0; i < n && o->left; i++, o->left--) {
        unsigned char c = (unsigned char)s[i];
        *o->p++ = c < 0x20 || c == 0x7f ? '?' : (char)c;
    }
}

char *cbus_redact_url(char *out, size_t outlen, const char *url)
{
    if (!outlen)
        return out;
    struct out o = {out, outlen - 1};
    const char *s = url ? url : "";
    /* The authority starts after "scheme://" (or at the start of text that
     * has none) and ends at the path, query or fragment. */
    const char *auth = strstr(s, "://");
    /* A scheme's "://" is the first '/' of the text: one later is path.
     * Without a scheme there is no telling host from path, so an '@'
     * anywhere before the query ends a userinfo. */
    int scheme = auth && auth + 1 == s + strcspn(s, "/?#");
    auth = scheme ? auth + 3 : s;
    put(&o, s, (size_t)(auth - s));
    size_t alen = strcspn(auth, scheme ? "/?#" : "?#");
    /* The last '@' ends the userinfo: a password may itself hold an '@'. */
    const char *at = NULL;
    for (const char *p = auth; p < auth + alen; p++)
        if (*p == '@')
            at = p;
    if (at) {
        put(&o, "***", 3);
        put(&o, at, (size_t)(auth + alen - at));
    } else {
        put(&o, auth, alen);
    }
    const char *path = auth + alen;
    size_t plen = strcspn(path, "?#");
    put(&o, path, plen);
    const char *rest = path + plen;
    if (*rest == '?') {
        put(&o, "?***", 4);
        rest += strcspn(rest, "#");
    }
    if (*rest == '#')
        put(&o, "#***", 4);
    *o.p = '\0';
    return out;
}
