/* Events to conversations and messages: hist_store_event() (store.h) is
 * defined in ingest.c; these are its helpers that others use too. */
#ifndef CBUS_HISTORY_INGEST_H
#define CBUS_HISTORY_INGEST_H

#include <cbus/layout.h>

#include <stddef.h>
#include <stdint.h>

#include "store.h"

/* The conversation id of an event (its session; a cut session gets "~" and
 * the whole value's hash).  Returns 1, or 0 when the event has no session. */
int hist_conv_id(const struct cbus_event *ev, char *out, size_t cap);
/* user | assistant | tool | system for a role or LangChain message type. */
const char *hist_role_norm(const char *role);
/* The kinds the daemon needs (a lossless consumer's kinds mask). */
uint64_t hist_needed_kinds(void);

#endif
