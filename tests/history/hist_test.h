/* What the history store suites share (store, conversation): a bus with a
 * producer, a store in a temporary directory, and a drain that applies
 * everything on the bus in one transaction, as the daemon would. */
#ifndef CBUS_TESTS_HISTORY_HIST_TEST_H
#define CBUS_TESTS_HISTORY_HIST_TEST_H

#include <cbus/producer.h>

#include <stddef.h>
#include <stdint.h>

#include "store.h"

struct hist_test {
    char bus[64], dir[256], db[300];
    cbus_producer *prod;
    struct hist_store *st;
};

/* A bus of 16384 slots with a producer, /tmp/cbus-<tag>-XXXXXX, DIR/h.db
 * opened (no fsync). */
void hist_test_open(struct hist_test *t, const char *tag);
void hist_test_close(struct hist_test *t);
/* Every event on the bus so far, read by a new consumer named consumer
 * from the oldest, stored and committed with its position as bus_id's. */
void hist_test_drain(struct hist_test *t, const char *consumer, uint64_t bus_id);

#endif
