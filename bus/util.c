/* Names, errors and small conversions every user of the library needs. */
#include "internal.h"

#include <stdio.h>

/* From the kind map (layout.h): one line there names a new kind here. */
static const char *const kind_names[CBUS_EV__COUNT] = {
    [CBUS_EV_NONE] = "none",
#define KIND_NAME(E, n, v, f, p, pl) [CBUS_EV_##E] = #n,
    CBUS_KIND_MAP(KIND_NAME)
#undef KIND_NAME
};

static const char *const finish_names[CBUS_FINISH__COUNT] = {
    [CBUS_FINISH_UNSET] = "unset",
    [CBUS_FINISH_STOP] = "stop",
    [CBUS_FINISH_LENGTH] = "length",
    [CBUS_FINISH_TOOL_CALLS] = "tool_calls",
    [CBUS_FINISH_CONTENT_FILTER] = "content_filter",
    [CBUS_FINISH_ERROR] = "error",
    [CBUS_FINISH_OTHER] = "other",
};

CBUS_API const char *cbus_kind_name(unsigned kind)
{
    return kind < CBUS_EV__COUNT ? kind_names[kind] : NULL;
}

CBUS_API int cbus_kind_from_name(const char *name)
{
    if (!name)
        return -EINVAL;
    for (unsigned k = 0; k < CBUS_EV__COUNT; k++) /* "none" too: names round-trip */
        if (!strcmp(name, kind_names[k]))
            return (int)k;
    return -EINVAL;
}

CBUS_API const char *cbus_finish_reason_name(unsigned reason)
{
    return reason < CBUS_FINISH__COUNT ? finish_names[reason] : NULL;
}

CBUS_API int cbus_finish_reason_from_name(const char *name)
{
    if (!name)
        return -EINVAL;
    for (unsigned k = 0; k < CBUS_FINISH__COUNT; k++)
        if (!strcmp(name, finish_names[k]))
            return (int)k;
    return -EINVAL;
}

CBUS_API const char *cbus_strerror(int err)
{
    switch (err) {
    case 0:
        return "success";
    case -EPROTO:
        return "not a cbus segment of this layout (magic, endianness or layout version differ)";
    case -EBADMSG:
        return "cbus segment header is inconsistent (corrupt or truncated)";
    case -ESTALE:
        return "stale handle: consumer evicted, or the bus was truncated or recreated";
    case -EIO:
        return "the bus segment was truncated under us (its pages are gone)";
    case -EIDRM:
        return "the bus name now refers to another segment (the bus was recreated)";
    case -EAGAIN:
        return "event dropped: a lossless consumer kept the ring full past the wait bound";
    case -EEXIST:
        return "a bus with this name already exists";
    case -ENOENT:
        return "no such bus";
    case -EINVAL:
        return "invalid argument";
    case -EBUSY:
        return "in use by a live process";
    case -ENOSPC:
        return "no space (/dev/shm full, or table full)";
    case -EPERM:
        return "segment is owned by another user (pass CBUS_OPEN_TRUST_OWNER to accept)";
    case -CBUS_EWORLD:
        return "segment is world-accessible (other users could forge or read events): "
               "recreate it with mode 0600 or 0660";
    case -CBUS_EFEATURE:
        return "segment needs a feature this cbus does not know (created by a newer cbus): "
               "use that cbus, or recreate the bus";
    default:
        return err < 0 ? strerror(-err) : "unknown error";
    }
}

CBUS_API int cbus_name_valid(const char *name)
{
    if (!name || !*name || name[0] == '.')
        return -EINVAL;
    size_t n = 0;
    for (const char *c = name; *c; c++, n++) {
        if (n >= CBUS_NAME_MAX - 1)
            return -EINVAL;
        int ok = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
                 (*c >= '0' && *c <= '9') || *c == '_' || *c == '-' || *c == '.';
        if (!ok)
            return -EINVAL;
    }
    return 0;
}

CBUS_API size_t cbus_field_copy(char *dst, size_t dst_size, const char *field, size_t field_size)
{
    if (!dst || !dst_size)
        return 0;
    size_t n = field ? strnlen(field, field_size) : 0;
    if (n >= dst_size)
        n = dst_size - 1;
    if (n)
        memcpy(dst, field, n);
    dst[n] = '\0';
    return n;
}

CBUS_API void cbus_id_hex(char out[33], const uint8_t id[16])
{
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        out[2 * i] = hex[id[i] >> 4];
        out[2 * i + 1] = hex[id[i] & 15];
    }
    out[32] = '\0';
}

CBUS_API void cbus_id_uuid(char out[37], const uint8_t id[16])
{
    char hex[33];
    cbus_id_hex(hex, id);
    snprintf(out, 37, "%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8, hex + 12, hex + 16, hex + 20);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

CBUS_API int cbus_id_parse(uint8_t id[16], const char *text)
{
    if (!id || !text)
        return -EINVAL;
    uint8_t out[16];
    int nibbles = 0;
    for (const char *c = text; *c; c++) {
        if (*c == '-' && (nibbles == 8 || nibbles == 12 || nibbles == 16 || nibbles == 20))
            continue;
        int v = hexval(*c);
        if (v < 0 || nibbles >= 32)
            return -EINVAL;
        if (nibbles % 2 == 0)
            out[nibbles / 2] = (uint8_t)(v << 4);
        else
            out[nibbles / 2] |= (uint8_t)v;
        nibbles++;
    }
    if (nibbles != 32)
        return -EINVAL;
    memcpy(id, out, 16);
    return 0;
}

CBUS_API int cbus_id_is_zero(const uint8_t id[16])
{
    static const uint8_t zero[16];
    return !id || !memcmp(id, zero, 16);
}
