/* Lanes (issue 13 item 1): a bus of several rings, one per producer thread.
 * Real threads and processes: exactly once in per-thread order for lossless
 * consumers, exact accounting for lossy ones, lanes given back by threads
 * that exit and taken over from processes that die, more threads than
 * lanes, resume from a saved position after SIGKILL. */
#include <cbus/bus.h>
#include <cbus/consumer.h>
#include <cbus/producer.h>

#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support.h"

static char name[64];
static pid_t kids[8];
static unsigned nkids;

static void track(pid_t pid)
{
    if (pid > 0 && nkids < sizeof kids / sizeof kids[0])
        kids[nkids++] = pid;
}

static void setup(void)
{
    test_bus_name(name, sizeof name);
    nkids = 0;
}

static void teardown(void)
{
    for (unsigned i = 0; i < nkids; i++) {
        if (waitpid(kids[i], NULL, WNOHANG) == 0) {
            kill(kids[i], SIGKILL);
            waitpid(kids[i], NULL, 0);
        }
    }
    cbus_bus_destroy(name);
}

TestSuite(bus_lanes, .init = setup, .fini = teardown, .timeout = 180);

/* Each event carries who sent it and its sequence number there. */
struct tag {
    uint32_t proc;
    uint32_t thread;
    uint32_t seq;
};

static int emit_tag(cbus_producer *p, cbus_ctx *ctx, struct tag t)
{
    struct cbus_emit_args a = {.kind = CBUS_EV_CUSTOM, .name = "t", .payload = &t,
                               .payload_len = sizeof t};
    return cbus_emit(p, ctx, &a);
}

static void make_bus(uint32_t lanes, uint64_t capacity, uint64_t lossless_wait_ns)
{
    /* A 60 s stall timeout: a writer preempted between its claim and its
     * mark for the default 2 s (seen under stress-ng and parallel builds)
     * would have its position skipped as abandoned, and these tests are
     * about lanes, not about stalls (bus_procs and bus_tail test those). */
    struct cbus_create_opts o = {.capacity = capacity, .lanes = lanes,
                                 .lossless_wait_ns = lossless_wait_ns,
                                 .stall_timeout_ns = 60000000000u};
    cr_assert_eq(cbus_bus_create(name, &o), 0);
}

struct sender {
    cbus_producer *p;
    uint32_t proc, thread, count;
    uint32_t lane_pid, lane_tid; /* the lane owner seen after the first emit */
    int failed;
    int drops_ok;     /* a lossy bus: -EAGAIN is a counted drop, not a failure */
    uint64_t dropped; /* the -EAGAIN returns seen */
};

static void *send_thread(void *arg)
{
    struct sender *s = arg;
    cbus_ctx ctx;
    cbus_ctx_init(&ctx);
    for (uint32_t i = 0; i < s->count; i++) {
        int r = emit_tag(s->p, &ctx, (struct tag){s->proc, s->thread, i});
        if (r == -EAGAIN && s->drops_ok) {
            s->dropped++;
        } else if (r != 0) {
            s->failed = 1;
            break;
        }
    }
    return NULL;
}

/* Runs n threads sending count events each on p; returns the failures.
 * With `dropped`, -EAGAIN (counted drops) are summed there instead. */
static int send_threads_dropping(cbus_producer *p, uint32_t proc, unsigned n, uint32_t count,
                                 uint64_t *dropped)
{
    pthread_t th[16];
    struct sender s[16];
    for (unsigned i = 0; i < n; i++) {
        s[i] = (struct sender){.p = p, .proc = proc, .thread = i, .count = count,
                               .drops_ok = dropped != NULL};
        if (pthread_create(&th[i], NULL, send_thread, &s[i]))
            return -1;
    }
    int failed = 0;
    for (unsigned i = 0; i < n; i++) {
        pthread_join(th[i], NULL);
        failed += s[i].failed;
        if (dropped)
            *dropped += s[i].dropped;
    }
    return failed;
}

static int send_threads(cbus_producer *p, uint32_t proc, unsigned n, uint32_t count)
{
    return send_threads_dropping(p, proc, n, count, NULL);
}

/* Reads until `want` events arrived (or the deadline), checking that every
 * (proc, thread) stream arrives exactly once and in order. */
struct streams {
    uint32_t next[4][16];
    uint64_t got, out_of_order;
    uint64_t ids_seen_max;
};

static void take(struct streams *st, const struct cbus_event *ev)
{
    struct tag t;
    memcpy(&t, &ev->u, sizeof t);
    if (t.proc >= 4 || t.thread >= 16 || st->next[t.proc][t.thread] != t.seq)
        st->out_of_order++;
    else
        st->next[t.proc][t.thread]++;
    st->got++;
}

static void read_until(cbus_consumer *c, struct streams *st, uint64_t want, unsigned ms)
{
    struct cbus_event ev[256];
    uint64_t t0 = test_now_ms();
    while (st->got < want && test_now_ms() - t0 < ms) {
        int n = cbus_consumer_poll(c, ev, 256);
        cr_assert_geq(n, 0);
        for (int i = 0; i < n; i++)
            take(st, &ev[i]);
        cbus_consumer_commit(c);
        if (n == 0)
            cbus_consumer_wait(c, 10000000u);
    }
}

/* Two producer processes of three threads each (six threads, four lanes:
 * some share), a lossless consumer: every stream exactly once, in order. */
Test(bus_lanes, threads_and_processes_reach_a_lossless_consumer_exactly_once_in_order)
{
    make_bus(4, 4096, 10000000000u); /* a 10 s bound: nothing is dropped */
    cbus_consumer *c;
    struct cbus_consumer_opts o = {.name = "ll", .mode = CBUS_LOSSLESS};
    cr_assert_eq(cbus_consumer_attach(&c, name, &o), 0);
    const uint32_t per = 20000;
    for (uint32_t proc = 0; proc < 2; proc++) {
        pid_t k = fork();
        cr_assert_geq(k, 0);
        if (k == 0) {
            cbus_producer *p;
            if (cbus_producer_open(&p, name, NULL))
                _exit(3);
            int f = send_threads(p, proc, 3, per);
            cbus_producer_close(p);
            _exit(f ? 4 : 0);
        }
        track(k);
    }
    struct streams st = {0};
    read_until(c, &st, 6 * per, 120000);
    for (unsigned i = 0; i < nkids; i++) {
        int ws = test_wait_pid(kids[i], 30000);
        cr_assert(WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "producer %u failed", i);
    }
    cr_assert_eq(st.out_of_order, 0, "every thread's events arrive once, in order");
    cr_assert_eq(st.got, 6 * per);
    for (uint32_t proc = 0; proc < 2; proc++)
        for (uint32_t t = 0; t < 3; t++)
            cr_assert_eq(st.next[proc][t], per);
    struct cbus_consumer_stats cs;
    cbus_consumer_stats(c, &cs);
    cr_assert_eq(cs.lanes, 4);
    cr_assert_eq(cs.lost + cs.abandoned, 0);
    cr_assert_eq(cs.read_pos, cs.tail, "every claimed position was passed");
    cbus_consumer_detach(c);
}

/* A lossy consumer that does not read while four threads flood two lanes
 * is lapped: consumed + lost + abandoned is exactly every position claimed.
 * Two threads share each lane, so a thread preempted between its claim and
 * its write can find its slot already taken by its partner a lap on (seen
 * under ASan in CI): that emit is dropped, returns -EAGAIN and is counted
 * in the producer's stats -- honest, and the position still accounted. */
Test(bus_lanes, lapped_lossy_consumer_counts_every_position_across_lanes)
{
    make_bus(2, 1024, 0);
    cbus_consumer *c;
    struct cbus_consumer_opts o = {.name = "ly", .mode = CBUS_LOSSY};
    cr_assert_eq(cbus_consumer_attach(&c, name, &o), 0);
    cbus_producer *p;
    cr_assert_eq(cbus_producer_open(&p, name, NULL), 0);
    uint64_t dropped = 0;
    cr_assert_eq(send_threads_dropping(p, 0, 4, 5000, &dropped), 0);
    struct cbus_producer_stats ps;
    cr_assert_eq(cbus_producer_stats(p, &ps), 0);
    cr_assert_eq(ps.dropped, dropped, "every -EAGAIN is counted, nothing else is");
    cr_assert_eq(ps.emitted + ps.dropped, 20000);
    struct streams st = {0};
    struct cbus_event ev[256];
    for (int n; (n = cbus_consumer_poll(c, ev, 256)) > 0;)
        for (int i = 0; i < n; i++)
            take(&st, &ev[i]);
    struct cbus_consumer_stats cs;
    cbus_consumer_stats(c, &cs);
    cr_assert_eq(cs.tail, 20000, "every emit claimed one position");
    cr_assert_eq(cs.consumed + cs.lost + cs.abandoned, 20000);
    cr_assert_eq(cs.consumed, st.got);
    cr_assert_leq(cs.consumed, 1024, "at most a ring's worth survived");
    cr_assert_gt(cs.lost, 0);
    cbus_consumer_detach(c);
    cbus_producer_close(p);
}

static void *one_emit(void *arg)
{
    struct sender *s = arg;
    cbus_ctx ctx;
    cbus_ctx_init(&ctx);
    s->failed = emit_tag(s->p, &ctx, (struct tag){0, s->thread, 0}) != 0;
    cbus_bus *bus = cbus_producer_bus(s->p);
    for (unsigned L = 0; L < cbus_bus_lanes(bus); L++) {
        uint32_t pid, tid;
        cbus_bus_lane_owner(bus, L, &pid, &tid);
        if (tid == (uint32_t)gettid()) {
            s->lane_pid = pid;
            s->lane_tid = tid;
        }
    }
    return NULL;
}

/* one_emit, then stays alive holding the lane (killed with its process) */
static void *hold_lane(void *arg)
{
    one_emit(arg);
    for (;;)
        pause();
    return NULL;
}

static unsigned owned_lanes(cbus_bus *bus)
{
    unsigned n = 0;
    for (unsigned L = 0; L < cbus_bus_lanes(bus); L++) {
        uint32_t pid, tid;
        cbus_bus_lane_owner(bus, L, &pid, &tid);
        n += pid != 0;
    }
    return n;
}

/* A thread owns a lane from its first emit, and gives it back when it
 * exits; the producer gives back what its live threads hold at close. */
Test(bus_lanes, a_thread_that_exits_gives_its_lane_back)
{
    make_bus(2, 1024, 0);
    cbus_producer *p;
    cr_assert_eq(cbus_producer_open(&p, name, NULL), 0);
    cbus_bus *bus = cbus_producer_bus(p);
    cr_assert_eq(owned_lanes(bus), 0);
    for (int round = 0; round < 5; round++) {
        /* two threads at a time, one after the other: with lanes given back,
         * each always finds a free lane of its own */
        pthread_t th[2];
        struct sender s[2] = {{.p = p, .thread = 0}, {.p = p, .thread = 1}};
        for (int i = 0; i < 2; i++)
            cr_assert_eq(pthread_create(&th[i], NULL, one_emit, &s[i]), 0);
        for (int i = 0; i < 2; i++) {
            pthread_join(th[i], NULL);
            cr_assert_eq(s[i].failed, 0);
            cr_assert_eq(s[i].lane_pid, (uint32_t)getpid(), "round %d: thread %d owned a lane",
                         round, i);
        }
        cr_assert_eq(owned_lanes(bus), 0, "round %d: exited threads gave their lanes back", round);
    }
    /* held by this (live) thread until close */
    cbus_ctx ctx;
    cbus_ctx_init(&ctx);
    cr_assert_eq(emit_tag(p, &ctx, (struct tag){0, 9, 0}), 0);
    cr_assert_eq(owned_lanes(bus), 1);
    cbus_producer *p2;
    cr_assert_eq(cbus_producer_open(&p2, name, NULL), 0);
    cbus_producer_close(p);
    cr_assert_eq(owned_lanes(cbus_producer_bus(p2)), 0, "close gave the lane back");
    cbus_producer_close(p2);
}

/* A process SIGKILLed while its threads hold every lane: a new thread takes
 * a lane over instead of sharing one for ever. */
Test(bus_lanes, lanes_of_a_killed_process_are_taken_over)
{
    make_bus(2, 1024, 0);
    int go[2];
    cr_assert_eq(pipe(go), 0);
    pid_t k = fork();
    cr_assert_geq(k, 0);
    if (k == 0) {
        cbus_producer *p;
        if (cbus_producer_open(&p, name, NULL))
            _exit(3);
        /* two threads that emit and then stay alive holding their lanes */
        struct sender s[2] = {{.p = p, .thread = 0}, {.p = p, .thread = 1}};
        pthread_t th[2];
        for (int i = 0; i < 2; i++)
            if (pthread_create(&th[i], NULL, one_emit, &s[i]))
                _exit(4);
        for (int i = 0; i < 2; i++)
            pthread_join(th[i], NULL);
        /* joined threads gave their lanes back: take both again from here
         * and one more thread that never exits */
        cbus_ctx ctx;
        cbus_ctx_init(&ctx);
        if (emit_tag(p, &ctx, (struct tag){1, 0, 0}))
            _exit(5);
        struct sender s2 = {.p = p, .thread = 2};
        pthread_t t2;
        if (pthread_create(&t2, NULL, hold_lane, &s2))
            _exit(6);
        while (owned_lanes(cbus_producer_bus(p)) < 2)
            usleep(1000);
        char b = 1;
        if (write(go[1], &b, 1) != 1)
            _exit(7);
        for (;;)
            pause();
    }
    track(k);
    close(go[1]);
    char b;
    cr_assert_eq(read(go[0], &b, 1), 1, "the child holds both lanes");
    close(go[0]);
    kill(k, SIGKILL);
    cr_assert(WIFSIGNALED(test_wait_pid(k, 10000)));

    cbus_producer *p;
    cr_assert_eq(cbus_producer_open(&p, name, NULL), 0);
    struct sender s = {.p = p, .thread = 0};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, one_emit, &s), 0);
    pthread_join(th, NULL);
    cr_assert_eq(s.failed, 0);
    cr_assert_eq(s.lane_pid, (uint32_t)getpid(), "the dead process's lane was taken over");
    cbus_producer_close(p);
}

/* Eight threads on two lanes: shared lanes are multi-writer rings, so
 * nothing is lost or duplicated, and each thread's order holds. */
Test(bus_lanes, more_threads_than_lanes_lose_nothing)
{
    make_bus(2, 2048, 10000000000u);
    cbus_consumer *c;
    struct cbus_consumer_opts o = {.name = "ll", .mode = CBUS_LOSSLESS};
    cr_assert_eq(cbus_consumer_attach(&c, name, &o), 0);
    pid_t k = fork();
    cr_assert_geq(k, 0);
    if (k == 0) {
        cbus_producer *p;
        if (cbus_producer_open(&p, name, NULL))
            _exit(3);
        int f = send_threads(p, 0, 8, 5000);
        cbus_producer_close(p);
        _exit(f ? 4 : 0);
    }
    track(k);
    struct streams st = {0};
    read_until(c, &st, 8 * 5000, 120000);
    int ws = test_wait_pid(k, 30000);
    cr_assert(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
    cr_assert_eq(st.out_of_order, 0);
    cr_assert_eq(st.got, 40000);
    cbus_consumer_detach(c);
}

/* A checkpointing consumer saves its position (one word per lane) with what
 * it processed and commits it; SIGKILLed, it resumes from the saved position
 * and gets the rest, none twice. */
Test(bus_lanes, resume_from_a_saved_position_after_sigkill)
{
    make_bus(4, 4096, 10000000000u);
    char path[] = "/tmp/cbus-lanes-pos.XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    /* the consumer goes first so it gates everything */
    int ready[2], done[2];
    cr_assert_eq(pipe(ready), 0);
    cr_assert_eq(pipe(done), 0);
    pid_t k = fork();
    cr_assert_geq(k, 0);
    if (k == 0) {
        cbus_consumer *c;
        struct cbus_consumer_opts o = {.name = "ckpt", .mode = CBUS_LOSSLESS};
        if (cbus_consumer_attach(&c, name, &o))
            _exit(3);
        char b = 1;
        if (write(ready[1], &b, 1) != 1)
            _exit(4);
        /* read 3000 events, checkpoint the position, then report and hang */
        struct cbus_event ev[100];
        uint64_t got = 0;
        while (got < 3000) {
            int n = cbus_consumer_poll(c, ev, (unsigned)(3000 - got < 100 ? 3000 - got : 100));
            if (n < 0)
                _exit(5);
            got += (uint64_t)n;
            if (!n)
                cbus_consumer_wait(c, 10000000u);
        }
        struct cbus_position pos;
        cbus_consumer_position(c, &pos);
        FILE *f = fopen(path, "w");
        if (!f || fwrite(&pos, sizeof pos, 1, f) != 1 || fclose(f))
            _exit(6);
        if (cbus_consumer_commit_position(c, &pos))
            _exit(7);
        if (write(done[1], &b, 1) != 1)
            _exit(8);
        for (;;) {
            cbus_consumer_heartbeat(c);
            usleep(1000);
        }
    }
    track(k);
    char b;
    cr_assert_eq(read(ready[0], &b, 1), 1);
    cbus_producer *p;
    cr_assert_eq(cbus_producer_open(&p, name, NULL), 0);
    cr_assert_eq(send_threads(p, 0, 4, 1000), 0, "4000 events fit the ring");
    cr_assert_eq(read(done[0], &b, 1), 1, "the consumer checkpointed");
    kill(k, SIGKILL);
    cr_assert(WIFSIGNALED(test_wait_pid(k, 10000)));

    struct cbus_position pos;
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    cr_assert_eq(fread(&pos, sizeof pos, 1, f), 1);
    fclose(f);
    unlink(path);
    cr_assert_eq(pos.lanes, 4);
    uint64_t saved = 0;
    for (unsigned L = 0; L < 4; L++)
        saved += pos.pos[L];
    cr_assert_eq(saved, 3000);

    cbus_consumer *c;
    struct cbus_consumer_opts o = {.name = "ckpt", .mode = CBUS_LOSSLESS,
                                   .start = CBUS_START_CURSOR, .position = &pos};
    cr_assert_eq(cbus_consumer_attach(&c, name, &o), 0);
    /* what the dead one read is not delivered again; the rest is, in order
     * per thread, continuing where the saved position left each stream */
    struct cbus_event ev[256];
    uint64_t got = 0, t0 = test_now_ms();
    uint32_t last[4] = {0};
    int seen[4] = {0};
    while (got < 1000 && test_now_ms() - t0 < 30000) {
        int n = cbus_consumer_poll(c, ev, 256);
        cr_assert_geq(n, 0);
        for (int i = 0; i < n; i++) {
            struct tag t;
            memcpy(&t, &ev[i].u, sizeof t);
            cr_assert_lt(t.thread, 4);
            cr_assert(!seen[t.thread] || t.seq == last[t.thread] + 1, "thread %u: %u after %u",
                      t.thread, t.seq, last[t.thread]);
            seen[t.thread] = 1;
            last[t.thread] = t.seq;
        }
        got += (uint64_t)n;
        if (!n)
            cbus_consumer_wait(c, 10000000u);
    }
    cr_assert_eq(got, 1000, "exactly the 1000 events after the saved position");
    for (unsigned t = 0; t < 4; t++)
        cr_assert(!seen[t] || last[t] == 999, "thread %u's stream ends at its last event", t);
    cr_assert_eq(cbus_consumer_poll(c, ev, 256), 0);
    cbus_consumer_detach(c);
    cbus_producer_close(p);
}

/* A consumer that saves, per lane, just past the last event it made durable
 * (cbus-audit, cbus-cost) trails the cursor in a lane where poll acknowledged
 * positions it skipped after that event (a tail jump past the ring here).
 * Committing its saved position must still move the other lanes: refusing
 * the whole vector would hold their producers for good. */
Test(bus_lanes, commit_position_behind_a_cursor_poll_moved_still_commits_the_other_lanes)
{
    struct cbus_create_opts co = {.capacity = 1024, .lanes = 2, .abandon_timeout_ns = 1000000u,
                                  .stall_timeout_ns = 300000000u};
    cr_assert_eq(cbus_bus_create(name, &co), 0);
    cbus_producer *p;
    cr_assert_eq(cbus_producer_open(&p, name, NULL), 0);
    cbus_consumer *c;
    struct cbus_consumer_opts o = {.name = "trail", .mode = CBUS_LOSSLESS};
    cr_assert_eq(cbus_consumer_attach(&c, name, &o), 0);
    cbus_ctx ctx;
    cbus_ctx_init(&ctx);
    for (uint32_t i = 0; i < 5; i++)
        cr_assert_eq(emit_tag(p, &ctx, (struct tag){0, 0, i}), 0);
    struct cbus_event ev[64];
    uint64_t got = 0, t0 = test_now_ms();
    unsigned a = 0; /* this thread's lane (tid-hashed); the other thread takes the other */
    while (got < 5 && test_now_ms() - t0 < 10000) {
        int n = cbus_consumer_poll(c, ev, 64);
        cr_assert_geq(n, 0);
        for (int i = 0; i < n; i++)
            a = (unsigned)(ev[i].event_id % 2);
        got += (uint64_t)n;
    }
    cr_assert_eq(got, 5);
    cr_assert_eq(cbus_consumer_commit(c), 0); /* lane a's cursor: 5 */
    struct cbus_position mine;
    cr_assert_eq(cbus_consumer_position(c, &mine), 0);
    cr_assert_eq(mine.pos[a], 5);
    /* The hostile write: lane a's tail three lanes ahead; poll skips it all
     * and acknowledges the skipped positions itself. */
    const struct cbus_shm_header *h = cbus_bus_header(cbus_producer_bus(p));
    _Atomic uint64_t *tail = a == 0 ? (_Atomic uint64_t *)&h->tail
        : (_Atomic uint64_t *)&((struct cbus_lane *)((char *)h + h->lanes_off))[a].tail;
    atomic_fetch_add(tail, 3 * 512);
    struct cbus_consumer_stats cs = {0};
    t0 = test_now_ms();
    while (cs.cursor < 5 + 3 * 512 && test_now_ms() - t0 < 30000) {
        cbus_consumer_heartbeat(c);
        cr_assert_eq(cbus_consumer_poll(c, ev, 64), 0, "nothing was emitted");
        cbus_consumer_stats(c, &cs);
        if (cs.cursor < 5 + 3 * 512)
            test_sleep_ms(5);
    }
    cr_assert_geq(cs.cursor, 5 + 3 * 512, "poll acknowledged the skipped positions");
    /* Another thread: the other lane.  Its events are "made durable": mine
     * moves there only, and stays just past the last event in lane a. */
    cr_assert_eq(send_threads(p, 1, 1, 10), 0);
    got = 0;
    t0 = test_now_ms();
    while (got < 10 && test_now_ms() - t0 < 10000) {
        int n = cbus_consumer_poll(c, ev, 64);
        cr_assert_geq(n, 0);
        for (int i = 0; i < n; i++) {
            cr_assert_eq(ev[i].event_id % 2, 1 - a, "the other lane");
            mine.pos[1 - a] = ev[i].event_id / 2 + 1;
        }
        got += (uint64_t)n;
    }
    cr_assert_eq(got, 10);
    uint64_t before = cs.cursor;
    cr_assert_eq(cbus_consumer_commit_position(c, &mine), 0, "lane a behind its cursor");
    cbus_consumer_stats(c, &cs);
    cr_assert_eq(cs.cursor, before + 10, "the other lane committed, lane a left where poll put it");
    cbus_consumer_detach(c);
    cbus_producer_close(p);
}

/* A position saved on a bus since re-created with another lane count is
 * stale (-ESTALE: start afresh), not malformed (-EINVAL). */
Test(bus_lanes, saved_position_of_a_recreated_bus_is_stale_whatever_its_lanes)
{
    make_bus(4, 1024, 0);
    cbus_bus *b;
    cr_assert_eq(cbus_bus_open(&b, name, 0), 0);
    uint64_t id = cbus_bus_header(b)->bus_id;
    cbus_bus_close(b);
    struct cbus_position one = {.lanes = 1};
    struct cbus_consumer_opts o = {.name = "stale", .start = CBUS_START_CURSOR,
                                   .position = &one, .expect_bus_id = id ^ 1};
    cbus_consumer *c;
    cr_assert_eq(cbus_consumer_attach(&c, name, &o), -ESTALE);
    o.expect_bus_id = id;
    cr_assert_eq(cbus_consumer_attach(&c, name, &o), -EINVAL, "same bus, wrong lane count");
}

/* One-lane calls on a bus of several lanes are refused, not misread. */
Test(bus_lanes, positions_are_validated)
{
    make_bus(4, 1024, 0);
    cbus_consumer *c;
    struct cbus_consumer_opts o = {.name = "v", .start = CBUS_START_CURSOR, .cursor = 5};
    cr_assert_eq(cbus_consumer_attach(&c, name, &o), -EINVAL, "a bare cursor has one lane");
    struct cbus_position pos = {.lanes = 2};
    o.position = &pos;
    cr_assert_eq(cbus_consumer_attach(&c, name, &o), -EINVAL, "another lane count");
    o = (struct cbus_consumer_opts){.name = "v"};
    cr_assert_eq(cbus_consumer_attach(&c, name, &o), 0);
    cr_assert_eq(cbus_consumer_commit_to(c, 0), -EINVAL);
    cr_assert_eq(cbus_consumer_position(c, &pos), 0);
    cr_assert_eq(pos.lanes, 4);
    pos.pos[3] += 1; /* beyond the read position */
    cr_assert_eq(cbus_consumer_commit_position(c, &pos), -EINVAL);
    pos.pos[3] -= 1;
    cr_assert_eq(cbus_consumer_commit_position(c, &pos), 0);
    cr_assert_eq(cbus_consumer_position(NULL, &pos), -EINVAL);
    cr_assert_eq(cbus_consumer_commit_position(c, NULL), -EINVAL);
    cbus_consumer_detach(c);
    struct cbus_create_opts bad = {.capacity = 1024, .lanes = 3};
    cr_assert_eq(cbus_bus_create("lanes-bad", &bad), -EINVAL, "not a power of two");
    bad.lanes = 8; /* 128 slots a lane */
    cr_assert_eq(cbus_bus_create("lanes-bad", &bad), -EINVAL, "lanes below 256 slots");
    bad.lanes = 128;
    cr_assert_eq(cbus_bus_create("lanes-bad", &bad), -EINVAL);
}

/* Event ids are unique per bus and name their lane: peek finds each. */
Test(bus_lanes, event_ids_are_unique_and_peek_finds_them)
{
    make_bus(4, 1024, 0);
    cbus_consumer *c;
    struct cbus_consumer_opts o = {.name = "ids"};
    cr_assert_eq(cbus_consumer_attach(&c, name, &o), 0);
    cbus_producer *p;
    cr_assert_eq(cbus_producer_open(&p, name, NULL), 0);
    cr_assert_eq(send_threads(p, 0, 4, 100), 0);
    struct cbus_event ev[512];
    int n = cbus_consumer_poll(c, ev, 512);
    cr_assert_eq(n, 400);
    cbus_bus *bus = cbus_consumer_bus(c);
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < i; j++)
            cr_assert_neq(ev[i].event_id, ev[j].event_id);
        struct cbus_event pk;
        cr_assert_eq(cbus_bus_peek(bus, ev[i].event_id, &pk), 0);
        cr_assert_eq(memcmp(&pk.u, &ev[i].u, sizeof(struct tag)), 0);
        cr_assert_eq(pk.event_id, ev[i].event_id);
    }
    cbus_consumer_detach(c);
    cbus_producer_close(p);
}

/* The header says lanes only with the feature bit: a segment that claims
 * several lanes without it (or the bit without them) is refused. */
Test(bus_lanes, lane_count_and_feature_bit_must_agree)
{
    make_bus(2, 1024, 0);
    cbus_bus *bus;
    cr_assert_eq(cbus_bus_open(&bus, name, 0), 0);
    struct cbus_shm_header *h = (struct cbus_shm_header *)cbus_bus_header(bus);
    cr_assert(h->required_features & CBUS_FEATURE_LANES);
    h->required_features &= ~CBUS_FEATURE_LANES;
    cbus_bus *b2;
    cr_assert_eq(cbus_bus_open(&b2, name, 0), -EBADMSG);
    h->required_features |= CBUS_FEATURE_LANES;
    h->lane_count = 4; /* lanes_off/lane capacity no longer fit */
    cr_assert_eq(cbus_bus_open(&b2, name, 0), -EBADMSG);
    h->lane_count = 2;
    cr_assert_eq(cbus_bus_open(&b2, name, 0), 0);
    cbus_bus_close(b2);
    cbus_bus_close(bus);
}
