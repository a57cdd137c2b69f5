/* The history store suites' fixture: see hist_test.h. */
#include "hist_test.h"

#include <criterion/criterion.h>

#include <cbus/bus.h>
#include <cbus/consumer.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support.h"

void hist_test_open(struct hist_test *t, const char *tag)
{
    memset(t, 0, sizeof *t);
    test_bus_name(t->bus, sizeof t->bus);
    test_bus_create(t->bus, 16384);
    cr_assert_eq(cbus_producer_open(&t->prod, t->bus, NULL), 0);
    snprintf(t->dir, sizeof t->dir, "/tmp/cbus-%s-XXXXXX", tag);
    cr_assert_not_null(mkdtemp(t->dir));
    snprintf(t->db, sizeof t->db, "%s/h.db", t->dir);
    char err[512];
    cr_assert_eq(hist_store_open(&t->st, t->db, 0, err, sizeof err), 0, "%s", err);
}

void hist_test_close(struct hist_test *t)
{
    hist_store_close(t->st);
    cbus_producer_close(t->prod);
    cbus_bus_destroy(t->bus);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", t->dir);
    if (system(cmd)) {
    }
    t->st = NULL;
    t->prod = NULL;
}

void hist_test_drain(struct hist_test *t, const char *consumer, uint64_t bus_id)
{
    cbus_consumer *c;
    struct cbus_consumer_opts o = {.name = consumer, .start = CBUS_START_OLDEST};
    cr_assert_eq(cbus_consumer_attach(&c, t->bus, &o), 0);
    size_t blen = cbus_bus_body_limit(cbus_consumer_bus(c));
    void *buf = malloc(blen);
    cr_assert_not_null(buf);
    struct cbus_event ev[64];
    struct cbus_body bodies[64];
    cr_assert_eq(hist_store_begin(t->st), 0);
    int n;
    while ((n = cbus_consumer_poll_bodies(c, ev, bodies, 64, buf, blen)) > 0)
        for (int i = 0; i < n; i++)
            cr_assert_eq(hist_store_event(t->st, bus_id, &ev[i], &bodies[i]), 0, "%s",
                         hist_store_errmsg(t->st));
    cr_assert_geq(n, 0);
    struct cbus_position pos;
    cr_assert_eq(cbus_consumer_position(c, &pos), 0);
    cr_assert_eq(hist_store_commit(t->st, bus_id, &pos), 0, "%s", hist_store_errmsg(t->st));
    free(buf);
    cbus_consumer_detach(c);
}
