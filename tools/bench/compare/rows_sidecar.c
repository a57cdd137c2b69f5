/* Row 3: a sidecar over a Unix domain socket.  The producer thread builds the
 * event, encodes it with msgpack-c (the keys of consumers/events/
 * event_msgpack.h's schema, written through libmsgpack's packer, as a user
 * of the library would) and write(2)s it to a stream socket; a forked
 * sidecar process on the other core reads the stream with msgpack-c's
 * streaming unpacker and decodes every map back into a struct cbus_event.
 * The socket blocks when the sidecar falls behind: that wait is part of
 * the producer's cost, as it is for a real sidecar client. */
#include "bench.h"

#include <msgpack.h>

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- encoding ------------------------------------------------------------------ */

static void pack_key(msgpack_packer *pk, const char *k)
{
    size_t n = strlen(k);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, k, n);
}

static void pack_field(msgpack_packer *pk, const char *k, const char *f, size_t cap)
{
    size_t n = strnlen(f, cap);
    pack_key(pk, k);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, f, n);
}

static void pack_hex(msgpack_packer *pk, const char *k, const uint8_t id[16])
{
    static const char digits[] = "0123456789abcdef";
    char hex[32];
    for (int i = 0; i < 16; i++) {
        hex[2 * i] = digits[id[i] >> 4];
        hex[2 * i + 1] = digits[id[i] & 15];
    }
    pack_key(pk, k);
    msgpack_pack_str(pk, 32);
    msgpack_pack_str_body(pk, hex, 32);
}

static void pack_u64(msgpack_packer *pk, const char *k, uint64_t v)
{
    pack_key(pk, k);
    msgpack_pack_uint64(pk, v);
}

/* The llm_end subset of the schema: every field the payload carries. */
static void pack_event(msgpack_packer *pk, const struct cbus_event *ev)
{
    const struct cbus_usage *u = &ev->u.usage;
    msgpack_pack_map(pk, 20);
    pack_key(pk, "kind");
    msgpack_pack_str(pk, 7);
    msgpack_pack_str_body(pk, "llm_end", 7);
    pack_u64(pk, "event_id", ev->event_id);
    pack_u64(pk, "ts_realtime_ns", ev->ts_realtime_ns);
    pack_u64(pk, "ts_mono_ns", ev->ts_mono_ns);
    pack_u64(pk, "pid", ev->pid);
    pack_u64(pk, "tid", ev->tid);
    pack_u64(pk, "flags", ev->flags);
    pack_hex(pk, "run_id", ev->run_id);
    pack_hex(pk, "trace_id", ev->trace_id);
    pack_field(pk, "provider", ev->provider, sizeof ev->provider);
    pack_field(pk, "model", ev->model, sizeof ev->model);
    pack_field(pk, "user", ev->user, sizeof ev->user);
    pack_field(pk, "session", ev->session, sizeof ev->session);
    pack_field(pk, "request_id", ev->request_id, sizeof ev->request_id);
    pack_field(pk, "preview", ev->preview, sizeof ev->preview);
    pack_key(pk, "usage");
    msgpack_pack_map(pk, 4);
    pack_u64(pk, "input_tokens", u->input_tokens);
    pack_u64(pk, "output_tokens", u->output_tokens);
    pack_u64(pk, "cache_read_tokens", u->cache_read_tokens);
    pack_u64(pk, "reasoning_tokens", u->reasoning_tokens);
    pack_u64(pk, "duration_ns", u->duration_ns);
    pack_u64(pk, "ttft_ns", u->ttft_ns);
    pack_field(pk, "finish_reason", "stop", 4);
    pack_u64(pk, "generations", u->generations);
}

/* ---- decoding (the sidecar) ---------------------------------------------------- */

static int key_is(const msgpack_object *k, const char *s)
{
    size_t n = strlen(s);
    return k->type == MSGPACK_OBJECT_STR && k->via.str.size == n && !memcmp(k->via.str.ptr, s, n);
}

static void copy_str(char *dst, size_t cap, const msgpack_object *v)
{
    if (v->type != MSGPACK_OBJECT_STR)
        return;
    size_t n = v->via.str.size < cap ? v->via.str.size : cap - 1;
    memcpy(dst, v->via.str.ptr, n);
    dst[n] = '\0';
}

static void copy_hex(uint8_t id[16], const msgpack_object *v)
{
    if (v->type != MSGPACK_OBJECT_STR || v->via.str.size != 32)
        return;
    for (int i = 0; i < 16; i++) {
        unsigned hi = (unsigned)v->via.str.ptr[2 * i], lo = (unsigned)v->via.str.ptr[2 * i + 1];
        hi = hi <= '9' ? hi - '0' : hi - 'a' + 10;
        lo = lo <= '9' ? lo - '0' : lo - 'a' + 10;
        id[i] = (uint8_t)(hi << 4 | lo);
    }
}

static int decode_event(const msgpack_object *o, struct cbus_event *ev)
{
    if (o->type != MSGPACK_OBJECT_MAP)
        return -EBADMSG;
    memset(ev, 0, sizeof *ev);
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object *k = &o->via.map.ptr[i].key, *v = &o->via.map.ptr[i].val;
        uint64_t x = v->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? v->via.u64 : 0;
        if (key_is(k, "kind"))
            ev->kind = key_is(v, "llm_end") ? CBUS_EV_LLM_END : CBUS_EV_NONE;
        else if (key_is(k, "event_id"))
            ev->event_id = x;
        else if (key_is(k, "ts_realtime_ns"))
            ev->ts_realtime_ns = x;
        else if (key_is(k, "ts_mono_ns"))
            ev->ts_mono_ns = x;
        else if (key_is(k, "pid"))
            ev->pid = (uint32_t)x;
        else if (key_is(k, "tid"))
            ev->tid = (uint32_t)x;
        else if (key_is(k, "flags"))
            ev->flags = (uint16_t)x;
        else if (key_is(k, "run_id"))
            copy_hex(ev->run_id, v);
        else if (key_is(k, "trace_id"))
            copy_hex(ev->trace_id, v);
        else if (key_is(k, "provider"))
            copy_str(ev->provider, sizeof ev->provider, v);
        else if (key_is(k, "model"))
            copy_str(ev->model, sizeof ev->model, v);
        else if (key_is(k, "user"))
            copy_str(ev->user, sizeof ev->user, v);
        else if (key_is(k, "session"))
            copy_str(ev->session, sizeof ev->session, v);
        else if (key_is(k, "request_id"))
            copy_str(ev->request_id, sizeof ev->request_id, v);
        else if (key_is(k, "preview"))
            copy_str(ev->preview, sizeof ev->preview, v);
        else if (key_is(k, "duration_ns"))
            ev->u.usage.duration_ns = x;
        else if (key_is(k, "ttft_ns"))
            ev->u.usage.ttft_ns = x;
        else if (key_is(k, "generations"))
            ev->u.usage.generations = (uint16_t)x;
        else if (key_is(k, "finish_reason"))
            ev->u.usage.finish_reason = key_is(v, "stop") ? CBUS_FINISH_STOP : CBUS_FINISH_OTHER;
        else if (key_is(k, "usage") && v->type == MSGPACK_OBJECT_MAP)
            for (uint32_t j = 0; j < v->via.map.size; j++) {
                const msgpack_object *uk = &v->via.map.ptr[j].key, *uv = &v->via.map.ptr[j].val;
                uint32_t n = uv->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (uint32_t)uv->via.u64 : 0;
                if (key_is(uk, "input_tokens"))
                    ev->u.usage.input_tokens = n;
                else if (key_is(uk, "output_tokens"))
                    ev->u.usage.output_tokens = n;
                else if (key_is(uk, "cache_read_tokens"))
                    ev->u.usage.cache_read_tokens = n;
                else if (key_is(uk, "reasoning_tokens"))
                    ev->u.usage.reasoning_tokens = n;
            }
    }
    return ev->kind == CBUS_EV_LLM_END ? 0 : -EBADMSG;
}

/* The sidecar: decodes until EOF, then answers with how many events it
 * decoded and how many of them checked out. */
static void sidecar_main(int lfd)
{
    bench_pin(1);
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0)
        _exit(1);
    msgpack_unpacker unp;
    if (!msgpack_unpacker_init(&unp, 1 << 16))
        _exit(1);
    msgpack_unpacked res;
    msgpack_unpacked_init(&res);
    uint64_t counts[2] = {0, 0}; /* decoded, valid */
    struct cbus_event ev;
    for (;;) {
        if (!msgpack_unpacker_reserve_buffer(&unp, 1 << 16))
            _exit(1);
        ssize_t k = read(fd, msgpack_unpacker_buffer(&unp), msgpack_unpacker_buffer_capacity(&unp));
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        msgpack_unpacker_buffer_consumed(&unp, (size_t)k);
        while (msgpack_unpacker_next(&unp, &res) == MSGPACK_UNPACK_SUCCESS) {
            counts[0]++;
            if (!decode_event(&res.data, &ev) && ev.u.usage.input_tokens == 1200)
                counts[1]++;
        }
    }
    msgpack_unpacked_destroy(&res);
    msgpack_unpacker_destroy(&unp);
    if (write(fd, counts, sizeof counts) != (ssize_t)sizeof counts)
        _exit(1);
    _exit(0);
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -errno;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static int run_sidecar(const struct bench_payload *pl, const char *dir, uint64_t events,
                       struct run_stats *rs, uint64_t counts[2], size_t *msg_bytes)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s/sidecar.sock", dir);
    unlink(sa.sun_path);
    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0)
        return -errno;
    if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) || listen(lfd, 1)) {
        int e = -errno;
        close(lfd);
        return e;
    }
    pid_t kid = fork();
    if (kid == 0)
        sidecar_main(lfd);
    close(lfd);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int rc = 0;
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa))
        rc = -errno;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    size_t nb = events / BENCH_BATCH;
    double *v = malloc(nb * sizeof *v);
    struct cbus_event ev;
    uint64_t seq = 0;
    uint64_t t_start = bench_now_ns();
    for (size_t b = 0; b < nb && !rc; b++) {
        uint64_t t0 = bench_now_ns();
        for (int i = 0; i < BENCH_BATCH && !rc; i++) {
            bench_payload_fill(pl, &ev, seq++);
            msgpack_sbuffer_clear(&sb);
            pack_event(&pk, &ev);
            rc = write_all(fd, sb.data, sb.size);
        }
        v[b] = (double)(bench_now_ns() - t0) / BENCH_BATCH;
    }
    uint64_t elapsed = bench_now_ns() - t_start;
    *msg_bytes = sb.size;
    msgpack_sbuffer_destroy(&sb);
    counts[0] = counts[1] = 0;
    if (fd >= 0) {
        shutdown(fd, SHUT_WR);
        size_t got = 0;
        while (got < 2 * sizeof(uint64_t)) {
            ssize_t k = read(fd, (char *)counts + got, 2 * sizeof(uint64_t) - got);
            if (k <= 0)
                break;
            got += (size_t)k;
        }
        close(fd);
    }
    if (rc)
        kill(kid, SIGKILL);
    waitpid(kid, NULL, 0);
    unlink(sa.sun_path);
    if (!rc) {
        memset(rs, 0, sizeof *rs);
        bench_summarize(v, nb, rs);
        rs->events = nb * BENCH_BATCH;
        rs->mevents_s = (double)rs->events / ((double)elapsed / 1e3);
        rs->lost = rs->events - counts[1];
    }
    free(v);
    return rc;
}

void bench_rows_sidecar(const struct bench_opts *o, struct row *rows, int *n)
{
    struct row *r = bench_row_new(rows, n, "sidecar", "sidecar over a Unix socket",
                                  "1 thread; msgpack-c encode + write(2), decoding process",
                                  ROW_LATENCY);
    r->chart = 1;
    char dir[] = "/tmp/cbus-compare-uds.XXXXXX";
    if (!mkdtemp(dir)) {
        bench_row_skip(r, "mkdtemp: %s", strerror(errno));
        return;
    }
    struct bench_payload pl;
    bench_payload_init(&pl);
    bench_pin(0);
    uint64_t counts[2] = {0, 0}, decoded = 0, valid = 0;
    size_t msg = 0;
    int rc = 0;
    for (int i = 0; i < o->runs && !rc; i++) {
        rc = run_sidecar(&pl, dir, o->slow_events, &r->run[i], counts, &msg);
        if (!rc) {
            r->nruns++;
            decoded += counts[0];
            valid += counts[1];
        }
    }
    rmdir(dir);
    if (rc) {
        bench_row_skip(r, "socket: %s", strerror(-rc));
        return;
    }
    bench_aggregate(r);
    snprintf(r->note, sizeof r->note,
             "%zu-byte msgpack map per event; the sidecar decoded %llu maps, %llu intact, of %llu",
             msg, (unsigned long long)decoded, (unsigned long long)valid,
             (unsigned long long)r->agg.events);
    bench_progress(o, r);
}
