/* SHA-256 through OpenSSL's low-level SHA256_Init/Update/Final: deprecated
 * in OpenSSL 3 in favour of EVP, but EVP's per-digest dispatch costs more
 * than hashing a whole record here (measured on this machine with SHA-NI:
 * 802 ns per 372-byte record via EVP_DigestInit_ex2/Update/Final_ex, 382 ns
 * via SHA256_*), and the chain hashes every record on the hot path. */
#define OPENSSL_SUPPRESS_DEPRECATED 1

#include "format.h"

#include "event_body.h"

#include <errno.h>
#include <string.h>

#include <openssl/sha.h>

const char *audit_redaction_name(unsigned r)
{
    static const char *const names[] = {"keep", "hash", "drop"};
    return r < 3 ? names[r] : "?";
}

int audit_chain_init(struct audit_chain *c)
{
    memset(c, 0, sizeof *c);
    return 0;
}

void audit_chain_free(struct audit_chain *c)
{
    (void)c;
}

void audit_sha256(struct audit_chain *c, const void *a, size_t alen, const void *b, size_t blen,
                  uint8_t out[AUDIT_HASH_LEN])
{
    (void)c;
    SHA256_CTX ctx;
    SHA256_Init(&ctx);
    SHA256_Update(&ctx, a, alen);
    SHA256_Update(&ctx, b, blen);
    SHA256_Final(out, &ctx);
}

void audit_hex(char *out, const uint8_t *p, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

#define KEY(w, lit) cbus_mp_put_str((w), (lit), (uint32_t)(sizeof(lit) - 1))

/* The trailer: "hash" key, bin8 header, digest; hashed region ends before it. */
static void put_trailer(struct cbus_mp_writer *w, const uint8_t hash[AUDIT_HASH_LEN])
{
    KEY(w, "hash");
    cbus_mp_put_bin(w, hash, AUDIT_HASH_LEN);
}

int audit_header_encode(struct audit_chain *c, struct audit_header *h, uint8_t *out, size_t cap)
{
    if (cap < AUDIT_HEADER_MAX)
        return -ENOSPC;
    if (h->redaction > AUDIT_REDACT_DROP)
        return -EINVAL;
    size_t bus_len = strnlen(h->bus, sizeof h->bus);
    size_t prev_len = strnlen(h->prev_file, sizeof h->prev_file);
    if (bus_len == sizeof h->bus || prev_len == sizeof h->prev_file)
        return -EINVAL;
    if (h->pos.lanes == 0)
        h->pos = (struct cbus_position){.lanes = 1, .pos = {h->bus_cursor}};
    if (!audit_lanes_valid(h->pos.lanes))
        return -EINVAL;
    h->bus_cursor = 0;
    for (unsigned L = 0; L < h->pos.lanes; L++)
        h->bus_cursor += h->pos.pos[L];
    memcpy(h->prev_hash, c->hash, AUDIT_HASH_LEN);
    h->format = AUDIT_FORMAT;

    struct cbus_mp_writer w = {out};
    cbus_mp_put_map(&w, 13);
    KEY(&w, "cbus_audit");
    cbus_mp_put_uint(&w, AUDIT_FORMAT);
    KEY(&w, "file_seq");
    cbus_mp_put_uint(&w, h->file_seq);
    KEY(&w, "created_ns");
    cbus_mp_put_uint(&w, h->created_ns);
    KEY(&w, "first_seq");
    cbus_mp_put_uint(&w, h->first_seq);
    KEY(&w, "bus_cursor");
    cbus_mp_put_uint(&w, h->bus_cursor);
    KEY(&w, "lanes");
    cbus_mp_put_uint(&w, h->pos.lanes);
    KEY(&w, "bus_position");
    cbus_mp_put_array(&w, h->pos.lanes);
    for (unsigned L = 0; L < h->pos.lanes; L++)
        cbus_mp_put_uint(&w, h->pos.pos[L]);
    KEY(&w, "bus");
    cbus_mp_put_str(&w, h->bus, (uint32_t)bus_len);
    KEY(&w, "bus_id");
    uint8_t id[8];
    for (int i = 0; i < 8; i++)
        id[i] = (uint8_t)(h->bus_id >> (56 - 8 * i));
    cbus_mp_put_hex(&w, id, 8);
    KEY(&w, "prev_file");
    cbus_mp_put_str(&w, h->prev_file, (uint32_t)prev_len);
    KEY(&w, "prev_hash");
    cbus_mp_put_bin(&w, h->prev_hash, AUDIT_HASH_LEN);
    KEY(&w, "redaction");
    const char *rn = audit_redaction_name(h->redaction);
    cbus_mp_put_str(&w, rn, (uint32_t)strlen(rn));
    size_t body = (size_t)(w.p - out);
    audit_sha256(c, c->hash, AUDIT_HASH_LEN, out, body, h->hash);
    put_trailer(&w, h->hash);
    memcpy(c->hash, h->hash, AUDIT_HASH_LEN);
    return (int)(w.p - out);
}

/* Ends a record whose body is out..w->p: hashes it onto the chain, writes
 * the trailer, moves the chain on.  Returns the record's length. */
static int chain_close(struct audit_chain *c, struct cbus_mp_writer *w, uint8_t *out)
{
    size_t body = (size_t)(w->p - out);
    uint8_t hash[AUDIT_HASH_LEN];
    audit_sha256(c, c->hash, AUDIT_HASH_LEN, out, body, hash);
    put_trailer(w, hash);
    memcpy(c->hash, hash, AUDIT_HASH_LEN);
    c->next_seq++;
    return (int)(w->p - out);
}

int audit_record_encode(struct audit_chain *c, const struct cbus_event *ev,
                        const struct cbus_body *body, const struct audit_redact *red,
                        uint8_t *out, size_t cap)
{
    if (cap < AUDIT_RECORD_BODY_MAX(body))
        return -ENOSPC;
    struct cbus_evmp_opts opts = {.preview = CBUS_EVMP_PREVIEW_KEEP};
    uint8_t digest[AUDIT_HASH_LEN];
    if (red && red->mode == AUDIT_REDACT_DROP) {
        opts.preview = CBUS_EVMP_PREVIEW_DROP;
    } else if (red && red->mode == AUDIT_REDACT_HASH) {
        size_t n = strnlen(ev->preview, sizeof ev->preview);
        audit_sha256(c, red->salt, red->salt_len, ev->preview, n, digest);
        opts.preview = CBUS_EVMP_PREVIEW_HASH;
        opts.preview_sha256 = digest;
    }
    /* The body's policy is its kind's: a prompt may be kept where a tool
     * result is only hashed.  Hashed sections are salted like previews. */
    uint8_t sec_digest[CBUS_EVMP_BODY_TYPES][AUDIT_HASH_LEN];
    if (red && body && body->len) {
        opts.body = ev->kind < CBUS_EV__COUNT ? red->body[ev->kind] : red->body_default;
        if (opts.body == AUDIT_REDACT_HASH) {
            struct cbus_body_parts bp;
            cbus_body_parts_of(body, &bp);
            for (unsigned t = 1; t < CBUS_BODY_TYPES; t++)
                if (bp.part[t].data)
                    audit_sha256(c, red->salt, red->salt_len, bp.part[t].data, bp.part[t].len,
                                 sec_digest[t]);
            opts.body_sha256 = (const uint8_t(*)[32])sec_digest;
        }
    }
    struct cbus_mp_writer w = {out};
    cbus_mp_put_map(&w, 3);
    KEY(&w, "seq");
    cbus_mp_put_uint(&w, c->next_seq);
    KEY(&w, "event");
    int n = cbus_evmp_encode(ev, body, &opts, w.p, cap - (size_t)(w.p - out) - AUDIT_TRAILER);
    if (n < 0)
        return n;
    w.p += n;
    return chain_close(c, &w, out);
}

/* lane < 0: a one-lane gap record (no "lane" key, as in format 2). */
static int gap_encode(struct audit_chain *c, int lane, uint64_t from, uint64_t to, uint8_t *out,
                      size_t cap)
{
    if (cap < AUDIT_RECORD_MAX)
        return -ENOSPC;
    if (from >= to || lane >= CBUS_MAX_LANES)
        return -EINVAL;
    struct cbus_mp_writer w = {out};
    cbus_mp_put_map(&w, 3);
    KEY(&w, "seq");
    cbus_mp_put_uint(&w, c->next_seq);
    KEY(&w, "gap");
    cbus_mp_put_map(&w, lane < 0 ? 2 : 3);
    if (lane >= 0) {
        KEY(&w, "lane");
        cbus_mp_put_uint(&w, (uint64_t)lane);
    }
    KEY(&w, "from");
    cbus_mp_put_uint(&w, from);
    KEY(&w, "to");
    cbus_mp_put_uint(&w, to);
    return chain_close(c, &w, out);
}

int audit_gap_encode(struct audit_chain *c, uint64_t from, uint64_t to, uint8_t *out, size_t cap)
{
    return gap_encode(c, -1, from, to, out, cap);
}

int audit_gap_encode_lane(struct audit_chain *c, unsigned lane, uint64_t from, uint64_t to,
                          uint8_t *out, size_t cap)
{
    return gap_encode(c, lane < CBUS_MAX_LANES ? (int)lane : CBUS_MAX_LANES, from, to, out, cap);
}

int audit_lanes_valid(uint64_t lanes)
{
    return lanes >= 1 && lanes <= CBUS_MAX_LANES && (lanes & (lanes - 1)) == 0;
}

int audit_event_id(const uint8_t *event, size_t len, uint64_t *id)
{
    /* event_msgpack.h writes event_id second (after kind); look for it by
     * name all the same, as its readers must. */
    struct cbus_mp_reader r = {event, event + len};
    uint32_t n, kl;
    const char *k;
    if (cbus_mp_read_map(&r, &n))
        return -EBADMSG;
    for (uint32_t i = 0; i < n; i++) {
        if (cbus_mp_read_str(&r, &k, &kl))
            return -EBADMSG;
        if (kl == 8 && memcmp(k, "event_id", 8) == 0)
            return cbus_mp_read_uint(&r, id) ? -EBADMSG : 0;
        if (cbus_mp_skip(&r))
            return -EBADMSG;
    }
    return -EBADMSG;
}

int audit_event_span(const uint8_t *event, size_t len, uint64_t *id, uint64_t *positions)
{
    struct cbus_mp_reader r = {event, event + len};
    uint32_t n, kl;
    const char *k;
    uint64_t flags = 0, body_len = 0;
    int have_id = 0;
    if (cbus_mp_read_map(&r, &n))
        return -EBADMSG;
    for (uint32_t i = 0; i < n; i++) {
        if (cbus_mp_read_str(&r, &k, &kl))
            return -EBADMSG;
        int rc;
        if (kl == 8 && memcmp(k, "event_id", 8) == 0) {
            rc = cbus_mp_read_uint(&r, id);
            have_id = 1;
        } else if (kl == 5 && memcmp(k, "flags", 5) == 0) {
            rc = cbus_mp_read_uint(&r, &flags);
        } else if (kl == 8 && memcmp(k, "body_len", 8) == 0) {
            rc = cbus_mp_read_uint(&r, &body_len);
        } else {
            rc = cbus_mp_skip(&r);
        }
        if (rc)
            return -EBADMSG;
    }
    if (!have_id || body_len > UINT32_MAX)
        return -EBADMSG;
    *positions = 1 + ((flags & CBUS_FLAG_BODY) ? CBUS_BODY_SLOTS(body_len) : 0);
    return 0;
}

static int key_is(const char *k, uint32_t n, const char *lit)
{
    return strlen(lit) == n && memcmp(k, lit, n) == 0;
}

/* {"from": uint, "to": uint} with from < to. */
static int parse_gap(struct cbus_mp_reader *r, struct audit_item *it, const char **why)
{
    uint32_t n;
    const char *k;
    uint32_t kl;
    unsigned seen = 0;
    int rc = cbus_mp_read_map(r, &n);
    for (uint32_t i = 0; rc == 0 && i < n; i++) {
        if ((rc = cbus_mp_read_str(r, &k, &kl)))
            break;
        if (key_is(k, kl, "lane")) {
            uint64_t lane;
            if ((rc = cbus_mp_read_uint(r, &lane)) == 0 && lane >= CBUS_MAX_LANES) {
                *why = "gap lane out of range";
                return -EBADMSG;
            }
            it->gap_lane = (unsigned)lane;
        } else if (key_is(k, kl, "from")) {
            rc = cbus_mp_read_uint(r, &it->gap_from);
            seen |= 1;
        } else if (key_is(k, kl, "to")) {
            rc = cbus_mp_read_uint(r, &it->gap_to);
            seen |= 2;
        } else {
            rc = cbus_mp_skip(r);
        }
    }
    if (rc) {
        if (rc == -EBADMSG)
            *why = "malformed gap map";
        return rc;
    }
    if (seen != 3 || it->gap_from >= it->gap_to) {
        *why = "gap lacks from/to or is empty";
        return -EBADMSG;
    }
    return 0;
}

void audit_item_expected_hash(struct audit_chain *c, const uint8_t prev[AUDIT_HASH_LEN],
                              const uint8_t *buf, const struct audit_item *it,
                              uint8_t out[AUDIT_HASH_LEN])
{
    audit_sha256(c, prev, AUDIT_HASH_LEN, buf, it->len - AUDIT_TRAILER, out);
}

/* ---- parsing --------------------------------------------------------------- */


/* Reads the trailer ("hash": bin32), which must end the value. */
static int read_trailer(struct cbus_mp_reader *r, const uint8_t **hash, const char **why)
{
    const char *k;
    uint32_t kl;
    const uint8_t *h;
    uint32_t hl;
    int rc = cbus_mp_read_str(r, &k, &kl);
    if (rc == 0 && !key_is(k, kl, "hash")) {
        *why = "last key is not \"hash\"";
        return -EBADMSG;
    }
    if (rc == 0)
        rc = cbus_mp_read_bin(r, &h, &hl);
    if (rc == -EBADMSG)
        *why = "malformed \"hash\" entry";
    if (rc)
        return rc;
    if (hl != AUDIT_HASH_LEN) {
        *why = "hash is not 32 bytes";
        return -EBADMSG;
    }
    *hash = h;
    return 0;
}

enum { HDR_OUT_OF_RANGE = 1 }; /* header_entry: read, but the value is not allowed */

/* 16 lowercase hex digits, as the header writes a bus id. */
static int parse_bus_id(const char *s, uint32_t sl, uint64_t *id)
{
    if (sl != 16)
        return -1;
    uint64_t v = 0;
    for (unsigned j = 0; j < 16; j++) {
        char ch = s[j];
        unsigned d = ch >= '0' && ch <= '9' ? (unsigned)(ch - '0')
                   : ch >= 'a' && ch <= 'f' ? (unsigned)(ch - 'a' + 10) : 99;
        if (d > 15)
            return -1;
        v = v << 4 | d;
    }
    *id = v;
    return 0;
}

/* A string value that must fit dst (cap bytes, NUL included). */
static int read_str_into(struct cbus_mp_reader *r, char *dst, size_t cap)
{
    const char *s;
    uint32_t sl;
    int rc = cbus_mp_read_str(r, &s, &sl);
    if (rc)
        return rc;
    if (sl >= cap)
        return HDR_OUT_OF_RANGE;
    memcpy(dst, s, sl);
    return 0;
}

/* One header entry's value, for key k.  seen gathers the required keys
 * (1 file_seq, 2 first_seq, 4 prev_hash); *positions is bus_position's
 * length.  Returns 0, HDR_OUT_OF_RANGE or the reader's error. */
static int header_entry(struct cbus_mp_reader *r, struct audit_header *h, const char *k, uint32_t kl,
                        unsigned *seen, uint32_t *positions)
{
    const char *s;
    uint32_t sl;
    int rc;
    if (key_is(k, kl, "file_seq")) {
        *seen |= 1;
        return cbus_mp_read_uint(r, &h->file_seq);
    }
    if (key_is(k, kl, "created_ns"))
        return cbus_mp_read_uint(r, &h->created_ns);
    if (key_is(k, kl, "first_seq")) {
        *seen |= 2;
        return cbus_mp_read_uint(r, &h->first_seq);
    }
    if (key_is(k, kl, "bus_cursor"))
        return cbus_mp_read_uint(r, &h->bus_cursor);
    if (key_is(k, kl, "lanes")) {
        uint64_t lanes;
        if ((rc = cbus_mp_read_uint(r, &lanes)))
            return rc;
        if (!audit_lanes_valid(lanes))
            return HDR_OUT_OF_RANGE;
        h->pos.lanes = (uint32_t)lanes;
        return 0;
    }
    if (key_is(k, kl, "bus_position")) {
        uint32_t an;
        if ((rc = cbus_mp_read_array(r, &an)))
            return rc;
        if (an == 0 || an > CBUS_MAX_LANES)
            return HDR_OUT_OF_RANGE;
        for (uint32_t j = 0; rc == 0 && j < an; j++)
            rc = cbus_mp_read_uint(r, &h->pos.pos[j]);
        *positions = an;
        return rc;
    }
    if (key_is(k, kl, "bus"))
        return read_str_into(r, h->bus, sizeof h->bus);
    if (key_is(k, kl, "bus_id")) {
        if ((rc = cbus_mp_read_str(r, &s, &sl)))
            return rc;
        return parse_bus_id(s, sl, &h->bus_id) ? HDR_OUT_OF_RANGE : 0;
    }
    if (key_is(k, kl, "prev_file"))
        return read_str_into(r, h->prev_file, sizeof h->prev_file);
    if (key_is(k, kl, "prev_hash")) {
        const uint8_t *p;
        if ((rc = cbus_mp_read_bin(r, &p, &sl)))
            return rc;
        if (sl != AUDIT_HASH_LEN)
            return HDR_OUT_OF_RANGE;
        memcpy(h->prev_hash, p, AUDIT_HASH_LEN);
        *seen |= 4;
        return 0;
    }
    if (key_is(k, kl, "redaction")) {
        if ((rc = cbus_mp_read_str(r, &s, &sl)))
            return rc;
        for (unsigned m = 0; m <= AUDIT_REDACT_DROP; m++) {
            if (key_is(s, sl, audit_redaction_name(m))) {
                h->redaction = m;
                return 0;
            }
        }
        return HDR_OUT_OF_RANGE;
    }
    return cbus_mp_skip(r); /* a later minor version's key */
}

static int parse_header(struct cbus_mp_reader *r, uint32_t n, struct audit_item *it,
                        const char **why)
{
    struct audit_header *h = &it->hdr;
    memset(h, 0, sizeof *h);
    h->redaction = AUDIT_REDACT_KEEP;
    unsigned seen = 0;
    uint32_t positions = 0; /* bus_position entries read */
    int rc;
    /* "cbus_audit" was read by the caller; entries until the trailer. */
    if ((rc = cbus_mp_read_uint(r, &h->format)))
        goto bad;
    if (h->format < 1 || h->format > AUDIT_FORMAT) { /* every older format is still read */
        *why = "unsupported format version";
        return -EBADMSG;
    }
    for (uint32_t i = 1; i + 1 < n; i++) {
        const char *k;
        uint32_t kl;
        if ((rc = cbus_mp_read_str(r, &k, &kl)))
            goto bad;
        rc = header_entry(r, h, k, kl, &seen, &positions);
        if (rc == HDR_OUT_OF_RANGE) {
            *why = "header value out of range";
            return -EBADMSG;
        }
        if (rc)
            goto bad;
    }
    if (seen != 7) {
        *why = "header lacks file_seq, first_seq or prev_hash";
        return -EBADMSG;
    }
    /* Before format 3 (or without "lanes"): one lane at bus_cursor. */
    if (h->pos.lanes == 0 && positions == 0) {
        h->pos = (struct cbus_position){.lanes = 1, .pos = {h->bus_cursor}};
    } else if (h->pos.lanes == 0 || positions != h->pos.lanes) {
        *why = "header lanes and bus_position disagree";
        return -EBADMSG;
    }
    const uint8_t *hash;
    if ((rc = read_trailer(r, &hash, why)))
        return rc;
    memcpy(h->hash, hash, AUDIT_HASH_LEN);
    it->hash = hash;
    return 0;
bad:
    if (rc == -EBADMSG)
        *why = "malformed header entry";
    return rc;
}

int audit_parse(const uint8_t *buf, size_t len, struct audit_item *it, const char **why)
{
    static const char *dummy;
    if (!why)
        why = &dummy;
    *why = "";
    memset(it, 0, sizeof *it);
    struct cbus_mp_reader r = {buf, buf + len};
    uint32_t n;
    const char *k;
    uint32_t kl;
    int rc = cbus_mp_read_map(&r, &n);
    if (rc == -EBADMSG)
        *why = "not a msgpack map";
    if (rc)
        return rc;
    if ((rc = cbus_mp_read_str(&r, &k, &kl))) {
        if (rc == -EBADMSG)
            *why = "first key is not a string";
        return rc;
    }
    if (key_is(k, kl, "cbus_audit")) {
        if (n < 3) {
            *why = "header map too small";
            return -EBADMSG;
        }
        it->is_header = 1;
        if ((rc = parse_header(&r, n, it, why)))
            return rc;
    } else if (key_is(k, kl, "seq")) {
        if (n != 3) {
            *why = "record map does not have exactly 3 entries";
            return -EBADMSG;
        }
        if ((rc = cbus_mp_read_uint(&r, &it->seq))) {
            if (rc == -EBADMSG)
                *why = "seq is not an unsigned integer";
            return rc;
        }
        rc = cbus_mp_read_str(&r, &k, &kl);
        if (rc == 0 && key_is(k, kl, "gap")) {
            it->is_gap = 1;
            if ((rc = parse_gap(&r, it, why)) || (rc = read_trailer(&r, &it->hash, why)))
                return rc;
            it->len = (size_t)(r.p - buf);
            return 0;
        }
        if (rc == 0 && !key_is(k, kl, "event")) {
            *why = "second key is neither \"event\" nor \"gap\"";
            return -EBADMSG;
        }
        if (rc) {
            if (rc == -EBADMSG)
                *why = "second key is not a string";
            return rc;
        }
        it->event = r.p;
        if (cbus_mp_peek(&r) != CBUS_MP_MAP && r.p < r.end) {
            *why = "event is not a map";
            return -EBADMSG;
        }
        if ((rc = cbus_mp_skip(&r))) {
            if (rc == -EBADMSG)
                *why = "malformed event map";
            return rc;
        }
        it->event_len = (size_t)(r.p - it->event);
        if ((rc = read_trailer(&r, &it->hash, why)))
            return rc;
    } else {
        *why = "neither a file header nor a record";
        return -EBADMSG;
    }
    it->len = (size_t)(r.p - buf);
    return 0;
}
