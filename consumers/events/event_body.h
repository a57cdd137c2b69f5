/* A body's sections, found once for every renderer (event_json.c,
 * event_msgpack.c, cbusctl's text view, cbus-audit): the first section of
 * each known type, by type.  A body comes from shared memory or a file, so
 * every length is checked (cbus_body_next); sections of unknown types are
 * skipped, as layout.h asks of readers. */
#ifndef CBUS_COMMON_EVENT_BODY_H
#define CBUS_COMMON_EVENT_BODY_H

#include <cbus/consumer.h>
#include <cbus/layout.h>

#include <stddef.h>
#include <stdint.h>

#define CBUS_BODY_TYPES 7 /* index = enum cbus_body_type (1..6); 0 unused */

struct cbus_body_part {
    const char *data;   /* len bytes; NULL when the body has no section of this type */
    uint32_t len;
    uint32_t orig_len;
    uint32_t dropped;
    uint16_t flags;     /* CBUS_BODY_SECTION_* */
};

struct cbus_body_parts {
    struct cbus_body_part part[CBUS_BODY_TYPES];
    int count;          /* known sections found */
    int unknown;        /* sections skipped: of a type this reader does not know (a newer
                           producer's), or a second one of a type (the first counts); a
                           section of type 0 with no bytes counts as orig_len of them (the
                           marker cbus_evmp_decode_body leaves where its encoder skipped
                           some) */
    int cut;            /* a section was cut at the body limit */
    int malformed;      /* a section did not fit: the parts before it are kept */
};

/* The keys a renderer shows the whole-value hash of when they were cut
 * ("user_hash": key_hash[CBUS_KEY_USER] with CBUS_TRUNC_USER), in key order:
 * one table for the JSON and msgpack renderings. */
struct cbus_cut_key {
    unsigned bit;       /* CBUS_TRUNC_* */
    unsigned key;       /* enum cbus_key */
    const char *name;   /* "user_hash" */
};
extern const struct cbus_cut_key cbus_cut_keys[CBUS_KEY__COUNT];

/* Fills *out from body (NULL or empty: no parts).  Returns the count. */
int cbus_body_parts_of(const struct cbus_body *body, struct cbus_body_parts *out);

/* "text", "messages", "tags", "metadata", "system", "response_id" (the
 * names cbus-export's docs and the Python binding use); NULL for other
 * types. */
const char *cbus_body_type_name(unsigned type);

/* Walks a NUL-separated list (tags, or metadata keys and values in turn).
 * Start with *off = 0.  Returns 1 with *item and *n set, 0 at the end.  A last
 * entry without its NUL (a section cut mid-entry) is still an entry. */
int cbus_body_list_next(const struct cbus_body_part *p, uint32_t *off, const char **item,
                        uint32_t *n);

/* "numeric", "boolean", "categorical" (enum cbus_score_type); NULL for
 * other values.  from_name: the type, or -1. */
const char *cbus_score_type_name(unsigned type);
int cbus_score_type_from_name(const char *s, size_t n);

#endif
