/* Reading bodies: their sections, each length checked (a body comes from
 * shared memory, and a buggy or hostile producer may have written it). */
#include "internal.h"

#include <cbus/consumer.h>

CBUS_API int cbus_body_next(const void *body, size_t len, size_t *off,
                            struct cbus_body_section *sec, const char **data)
{
    if (!off || !sec || !data || (!body && len))
        return -EINVAL;
    if (*off >= len)
        return 0;
    if (len - *off < sizeof *sec)
        return -EBADMSG;
    const unsigned char *b = body;
    memcpy(sec, b + *off, sizeof *sec);
    if (sec->len > len - *off - sizeof *sec || sec->len > sec->orig_len)
        return -EBADMSG;
    *data = (const char *)b + *off + sizeof *sec;
    *off += sizeof *sec + sec->len;
    return 1;
}

CBUS_API int cbus_body_find(const void *body, size_t len, unsigned type,
                            struct cbus_body_section *sec, const char **data)
{
    size_t off = 0;
    int r;
    while ((r = cbus_body_next(body, len, &off, sec, data)) == 1)
        if (sec->type == type)
            return 1;
    return r;
}
