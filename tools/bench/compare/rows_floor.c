/* Row 5: the floor.  A plain copy of the prebuilt 496-byte event into the
 * next 512-byte slot of a ring-sized buffer (16384 slots, 8 MiB: the default
 * cbus ring), with nothing else: no timestamp, no claim, no publication.
 * Whatever an emit costs above this is the price of being a bus. */
#include "bench.h"

#include <stdlib.h>
#include <string.h>

#define FLOOR_SLOTS 16384

static void run_floor(const struct cbus_event *src, uint64_t events, struct run_stats *rs)
{
    char *ring = aligned_alloc(64, (size_t)FLOOR_SLOTS * CBUS_SLOT_SIZE);
    memset(ring, 0, (size_t)FLOOR_SLOTS * CBUS_SLOT_SIZE);
    size_t nb = events / BENCH_BATCH;
    double *v = malloc(nb * sizeof *v);
    uint64_t pos = 0;
    uint64_t t_start = bench_now_ns();
    for (size_t b = 0; b < nb; b++) {
        uint64_t t0 = bench_now_ns();
        for (int i = 0; i < BENCH_BATCH; i++) {
            memcpy(ring + (pos & (FLOOR_SLOTS - 1)) * CBUS_SLOT_SIZE + 16, src, sizeof *src);
            pos++;
            /* keep the compiler from merging or dropping the copies */
            __asm__ volatile("" ::: "memory");
        }
        v[b] = (double)(bench_now_ns() - t0) / BENCH_BATCH;
    }
    uint64_t elapsed = bench_now_ns() - t_start;
    memset(rs, 0, sizeof *rs);
    bench_summarize(v, nb, rs);
    rs->events = nb * BENCH_BATCH;
    rs->mevents_s = (double)rs->events / ((double)elapsed / 1e3);
    free(v);
    free(ring);
}

void bench_rows_floor(const struct bench_opts *o, struct row *rows, int *n)
{
    struct row *r = bench_row_new(rows, n, "floor", "floor: memcpy",
                                  "1 thread; copy the event into the next slot of an 8 MiB ring",
                                  ROW_LATENCY);
    r->chart = 1;
    struct bench_payload pl;
    bench_payload_init(&pl);
    struct cbus_event ev;
    bench_payload_fill(&pl, &ev, 0);
    bench_pin(0);
    for (int i = 0; i < o->runs; i++)
        run_floor(&ev, o->events, &r->run[r->nruns++]);
    bench_aggregate(r);
    snprintf(r->note, sizeof r->note, "%zu bytes per event, nothing else", sizeof ev);
    bench_progress(o, r);
}
