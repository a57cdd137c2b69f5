#include "state.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const char magic[8] = {'C', 'B', 'A', 'U', 'D', 'S', 'T', '2'};
static const char magic_v1[8] = {'C', 'B', 'A', 'U', 'D', 'S', 'T', '1'};

int audit_state_path(char *out, size_t n, const char *dir, const char *prefix)
{
    int w = snprintf(out, n, "%s/.%s.state", dir, prefix);
    return w < 0 || (size_t)w >= n ? -ENAMETOOLONG : 0;
}

/* Little-endian fields, so the file means the same on any host. */
static uint8_t *put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
    return p + 8;
}

static const uint8_t *get64(const uint8_t *p, uint64_t *v)
{
    *v = 0;
    for (int i = 0; i < 8; i++)
        *v |= (uint64_t)p[i] << (8 * i);
    return p + 8;
}

#define SUM_AT (AUDIT_STATE_SLOT - AUDIT_HASH_LEN)
#define SUM_AT_V1 (AUDIT_STATE_SLOT_V1 - AUDIT_HASH_LEN)
/* The fields before the position, then lanes (8) and a word per lane. */
#define FIXED_LEN (8 + 8 + AUDIT_FILE_NAME_MAX + 8 * 8 + AUDIT_HASH_LEN + 8)
_Static_assert(FIXED_LEN + 8 + 8 * CBUS_MAX_LANES <= SUM_AT, "state slot too small");

static void encode(const struct audit_state *s, uint8_t slot[AUDIT_STATE_SLOT])
{
    memset(slot, 0, AUDIT_STATE_SLOT);
    uint8_t *p = slot;
    memcpy(p, magic, 8);
    p += 8;
    p = put64(p, s->gen);
    memcpy(p, s->name, AUDIT_FILE_NAME_MAX);
    p[AUDIT_FILE_NAME_MAX - 1] = '\0';
    p += AUDIT_FILE_NAME_MAX;
    p = put64(p, s->file_seq);
    p = put64(p, s->format);
    p = put64(p, s->created_ns);
    p = put64(p, s->bus_id);
    p = put64(p, s->redaction);
    p = put64(p, s->offset);
    p = put64(p, s->last_off);
    p = put64(p, s->next_seq);
    memcpy(p, s->hash, AUDIT_HASH_LEN);
    p += AUDIT_HASH_LEN;
    p = put64(p, s->records_in_file);
    p = put64(p, s->pos.lanes);
    for (unsigned L = 0; L < s->pos.lanes && L < CBUS_MAX_LANES; L++)
        p = put64(p, s->pos.pos[L]);
    struct audit_chain c;
    audit_chain_init(&c);
    audit_sha256(&c, slot, SUM_AT, "", 0, slot + SUM_AT);
    audit_chain_free(&c);
}

/* A slot of version 2 (v1 = 0) or 1 (v1 = 1: 512 bytes, one cursor). */
static int decode(const uint8_t *slot, int v1, struct audit_state *s)
{
    uint8_t sum[AUDIT_HASH_LEN];
    struct audit_chain c;
    size_t sum_at = v1 ? SUM_AT_V1 : SUM_AT;
    audit_chain_init(&c);
    audit_sha256(&c, slot, sum_at, "", 0, sum);
    audit_chain_free(&c);
    if (memcmp(slot, v1 ? magic_v1 : magic, 8) || memcmp(sum, slot + sum_at, AUDIT_HASH_LEN))
        return -EBADMSG;
    memset(s, 0, sizeof *s);
    const uint8_t *p = slot + 8;
    p = get64(p, &s->gen);
    memcpy(s->name, p, AUDIT_FILE_NAME_MAX);
    if (!memchr(s->name, '\0', AUDIT_FILE_NAME_MAX))
        return -EBADMSG;
    p += AUDIT_FILE_NAME_MAX;
    p = get64(p, &s->file_seq);
    p = get64(p, &s->format);
    p = get64(p, &s->created_ns);
    p = get64(p, &s->bus_id);
    p = get64(p, &s->redaction);
    p = get64(p, &s->offset);
    p = get64(p, &s->last_off);
    p = get64(p, &s->next_seq);
    memcpy(s->hash, p, AUDIT_HASH_LEN);
    p += AUDIT_HASH_LEN;
    p = get64(p, &s->records_in_file);
    uint64_t lanes = 1;
    if (!v1)
        p = get64(p, &lanes);
    if (!audit_lanes_valid(lanes))
        return -EBADMSG;
    s->pos.lanes = (uint32_t)lanes;
    for (unsigned L = 0; L < lanes; L++)
        p = get64(p, &s->pos.pos[L]);
    if (s->last_off >= s->offset || s->redaction > AUDIT_REDACT_DROP)
        return -EBADMSG;
    return 0;
}

int audit_state_load(const char *dir, const char *prefix, struct audit_state *out)
{
    char path[4200];
    if (audit_state_path(path, sizeof path, dir, prefix))
        return -ENAMETOOLONG;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -errno;
    uint8_t buf[2 * AUDIT_STATE_SLOT];
    ssize_t n = pread(fd, buf, sizeof buf, 0);
    int e = n < 0 ? -errno : 0;
    close(fd);
    if (e)
        return e;
    int found = 0;
    for (int i = 0; i < 2; i++) {
        struct audit_state s;
        if ((size_t)n < (size_t)(i + 1) * AUDIT_STATE_SLOT ||
            decode(buf + i * AUDIT_STATE_SLOT, 0, &s))
            continue;
        if (!found || s.gen > out->gen)
            *out = s;
        found = 1;
    }
    /* A file of version 1 (before lanes): its slots, unless one of ours
     * was written over it (the newer format wins, whatever the gen). */
    const int have_v2 = found;
    for (int i = 0; i < 2 && !have_v2; i++) {
        struct audit_state s;
        if ((size_t)n < (size_t)(i + 1) * AUDIT_STATE_SLOT_V1 ||
            decode(buf + i * AUDIT_STATE_SLOT_V1, 1, &s))
            continue;
        if (!found || s.gen > out->gen)
            *out = s;
        found = 1;
    }
    return found ? 0 : -EBADMSG;
}

int audit_state_open(const char *dir, const char *prefix)
{
    char path[4200];
    if (audit_state_path(path, sizeof path, dir, prefix))
        return -ENAMETOOLONG;
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    return fd < 0 ? -errno : fd;
}

int audit_state_write(int fd, struct audit_state *s)
{
    s->gen++;
    uint8_t slot[AUDIT_STATE_SLOT];
    encode(s, slot);
    ssize_t n = pwrite(fd, slot, sizeof slot, (off_t)(s->gen % 2) * AUDIT_STATE_SLOT);
    if (n < 0)
        return -errno;
    return n == (ssize_t)sizeof slot ? 0 : -EIO;
}
