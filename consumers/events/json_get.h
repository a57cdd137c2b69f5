/* Typed members of a parsed JSON object that another process wrote (a
 * status file, a snapshot, an event body): a member of the wrong type reads
 * as absent, so a torn or hostile document degrades to missing fields, never
 * to a crash.  One spelling for the daemons and tools that read such files. */
#ifndef CBUS_EVENTS_JSON_GET_H
#define CBUS_EVENTS_JSON_GET_H

#include <cjson/cJSON.h>

/* Member k of o as a number; 0 if o is NULL, or k is absent or no number. */
static inline double cbus_json_num(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

/* Member k of o as a string; absent if o is NULL, or k is absent or no
 * string. */
static inline const char *cbus_json_str(const cJSON *o, const char *k, const char *absent)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : absent;
}

#endif
