/* cbus: a shared-memory event bus for LLM callback events.
 *
 * Conventions for every public call: 0 or a count on success, a negative
 * errno on failure (cbus_strerror() turns it into text).  The library never
 * prints.  Names are 1..31 characters of [A-Za-z0-9_.-], not starting with
 * '.', so "/", ".." and over-long names are refused with -EINVAL.
 */
#ifndef CBUS_CBUS_H
#define CBUS_CBUS_H

#include <errno.h> /* the negative codes every call returns */
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <cbus/layout.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(CBUS_BUILDING_LIBRARY)
#define CBUS_API __attribute__((visibility("default")))
#else
#define CBUS_API
#endif

/* The version of these headers; cbus_version() is the library's at run time.
 * A caller that loaded libcbus.so compares them (or just the major: the API
 * and the segment layout keep their promises within one major version).
 * CMakeLists.txt's project(VERSION) must match (tests/bus/abi.c checks). */
#define CBUS_VERSION_MAJOR  0
#define CBUS_VERSION_MINOR  1
#define CBUS_VERSION_PATCH  0
#define CBUS_VERSION_STRING "0.1.0"
#define CBUS_VERSION_NUMBER \
    ((unsigned)CBUS_VERSION_MAJOR << 16 | (unsigned)CBUS_VERSION_MINOR << 8 | CBUS_VERSION_PATCH)

/* The two codes cbus gives a meaning errno does not have (each call's list
 * says which it returns).  Both are negated like every other code. */
#define CBUS_EWORLD   EKEYREJECTED    /* the segment is world-accessible (mode o+rwx):
                                         refused; recreate it 0600/0660 */
#define CBUS_EFEATURE EPROTONOSUPPORT /* the segment needs a feature (required_features)
                                         this library does not know: use the newer
                                         library that created it, or recreate it */

typedef struct cbus_bus cbus_bus;
typedef struct cbus_producer cbus_producer;
typedef struct cbus_consumer cbus_consumer;
typedef struct cbus_ctx cbus_ctx;

/* The library's version ("0.1.0") and its CBUS_VERSION_NUMBER, at run time. */
CBUS_API const char *cbus_version(void);
CBUS_API unsigned cbus_version_number(void);

/* Error text for a negative errno returned by any cbus call, with cbus's
 * meaning where it has one (-EPROTO: not a cbus segment of this layout,
 * -CBUS_EWORLD, -CBUS_EFEATURE, ...). */
CBUS_API const char *cbus_strerror(int err);

/* Validates a bus or consumer name.  Returns 0 or -EINVAL. */
CBUS_API int cbus_name_valid(const char *name);

/* Monotonic nanoseconds on the same clock events are stamped with.  With no
 * bus open it is CLOCK_MONOTONIC. */
CBUS_API uint64_t cbus_now_ns(void);

/* Human-readable name of an event kind ("llm_end"), or NULL when out of range,
 * and the reverse (returns the kind or -EINVAL). */
CBUS_API const char *cbus_kind_name(unsigned kind);
CBUS_API int cbus_kind_from_name(const char *name);
CBUS_API const char *cbus_finish_reason_name(unsigned reason);
CBUS_API int cbus_finish_reason_from_name(const char *name);

/* Bounded string field of an event as a C string copy (NUL-terminated even if
 * the segment's bytes were not).  Returns the length copied. */
CBUS_API size_t cbus_field_copy(char *dst, size_t dst_size, const char *field, size_t field_size);
#define CBUS_FIELD(dst, ev_field) cbus_field_copy((dst), sizeof(dst), (ev_field), sizeof(ev_field))

/* 128-bit ids as 32 lowercase hex characters plus NUL (W3C trace id form),
 * and UUID form (36 characters plus NUL). */
CBUS_API void cbus_id_hex(char out[33], const uint8_t id[16]);
CBUS_API void cbus_id_uuid(char out[37], const uint8_t id[16]);
CBUS_API int cbus_id_parse(uint8_t id[16], const char *text); /* hex or UUID; 0 or -EINVAL */
CBUS_API int cbus_id_is_zero(const uint8_t id[16]);

#ifdef __cplusplus
}
#endif

#endif
