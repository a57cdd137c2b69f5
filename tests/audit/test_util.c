#include "test_util.h"

#include <cbus/bus.h>
#include <cbus/cbus.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "format.h"
#include "logdir.h"
#include "scan.h"
#include "support.h"

char *tu_tmpdir(char *buf, size_t len)
{
    snprintf(buf, len, "/tmp/cbus-audit-test.XXXXXX");
    if (!mkdtemp(buf))
        abort();
    return buf;
}

void tu_rmrf(const char *path)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", path);
}

void tu_event(struct cbus_event *ev, uint64_t i)
{
    memset(ev, 0, sizeof *ev);
    ev->kind = (uint16_t)(1 + i % (CBUS_EV__COUNT - 1));
    ev->flags = CBUS_FLAG_HAS_TRACE | (i % 3 == 0 ? CBUS_FLAG_HAS_PARENT : 0);
    ev->pid = 1000 + (uint32_t)(i % 7);
    ev->tid = 2000 + (uint32_t)(i % 5);
    ev->event_id = i;
    ev->ts_realtime_ns = 1795489948000000000ull + i * 1000000ull;
    ev->ts_mono_ns = 5000000000ull + i * 1000000ull;
    for (int k = 0; k < 16; k++) {
        ev->run_id[k] = (uint8_t)(i * 31 + (uint64_t)k);
        ev->trace_id[k] = (uint8_t)(i / 10 + (uint64_t)k * 3 + 1);
        if (i % 3 == 0)
            ev->parent_run_id[k] = (uint8_t)(k + 7);
    }
    snprintf(ev->provider, sizeof ev->provider, "%s", i % 2 ? "openai" : "anthropic");
    snprintf(ev->model, sizeof ev->model, "model-%u", (unsigned)(i % 4));
    snprintf(ev->user, sizeof ev->user, "user-%u", (unsigned)(i % 3));
    snprintf(ev->session, sizeof ev->session, "s-%u", (unsigned)(i % 11));
    snprintf(ev->preview, sizeof ev->preview, "preview text %llu", (unsigned long long)i);
    /* As a producer sets them: each key's hash of its whole value. */
    ev->key_hash[CBUS_KEY_PROVIDER] = cbus_key_hash(ev->provider, strlen(ev->provider));
    ev->key_hash[CBUS_KEY_MODEL] = cbus_key_hash(ev->model, strlen(ev->model));
    ev->key_hash[CBUS_KEY_USER] = cbus_key_hash(ev->user, strlen(ev->user));
    ev->key_hash[CBUS_KEY_SESSION] = cbus_key_hash(ev->session, strlen(ev->session));
    switch (ev->kind) {
    case CBUS_EV_LLM_START:
    case CBUS_EV_CHAT_MODEL_START:
        ev->u.llm_start.prompt_count = 2;
        ev->u.llm_start.est_input_tokens = (uint32_t)i;
        ev->u.llm_start.max_tokens = 512;
        break;
    case CBUS_EV_LLM_NEW_TOKEN:
        ev->u.token.index = (uint32_t)i;
        break;
    case CBUS_EV_LLM_END:
        ev->u.usage.input_tokens = 100 + (uint32_t)i;
        ev->u.usage.output_tokens = 50;
        ev->u.usage.cache_read_tokens = 20;
        ev->u.usage.usage_present = CBUS_USAGE_INPUT | CBUS_USAGE_OUTPUT |
                                    CBUS_USAGE_CACHE_READ | CBUS_USAGE_DURATION;
        ev->u.usage.duration_ns = 1234567;
        ev->u.usage.finish_reason = CBUS_FINISH_STOP;
        break;
    case CBUS_EV_TOOL_START:
        snprintf(ev->name, sizeof ev->name, "search");
        break;
    case CBUS_EV_RETRY:
        ev->u.retry.attempt = 2;
        ev->u.retry.backoff_ns = 250000000;
        break;
    default:
        break;
    }
}

void tu_writer_opts(struct audit_writer_opts *o, const char *dir)
{
    memset(o, 0, sizeof *o);
    o->dir = dir;
    o->prefix = "audit";
    o->bus = "testbus";
    o->queue_depth = 8;
    o->batch_bytes = 64 << 10;
    o->batch_events = 64;
    o->sync = AUDIT_SYNC_BATCH;
    o->sync_interval_ns = 5000000;
    o->retry_initial_ns = 10000000;
    o->retry_max_ns = 100000000;
}

int tu_write_log(const struct audit_writer_opts *opts, uint64_t first, uint64_t n)
{
    struct audit_writer *w;
    struct audit_resume r;
    char err[256];
    int rc = audit_writer_open(&w, opts, &r, err, sizeof err);
    if (rc) {
        fprintf(stderr, "writer: %s\n", err);
        return rc;
    }
    audit_writer_set_bus(w, 0x1234, &(struct cbus_position){.lanes = 1, .pos = {first}});
    struct cbus_event ev;
    for (uint64_t i = first; i < first + n; i++) {
        tu_event(&ev, i);
        while ((rc = audit_writer_append(w, &ev, NULL)) == -EAGAIN)
            audit_writer_service(w, 1000000);
        if (rc)
            break;
    }
    while (!audit_writer_idle(w)) {
        audit_writer_flush(w);
        audit_writer_service(w, 1000000);
    }
    audit_writer_close(w);
    return rc;
}

size_t tu_log_files(const char *dir, char ***paths)
{
    struct audit_file_ent *files;
    size_t n;
    *paths = NULL;
    if (audit_dir_list(dir, "audit", &files, &n))
        return 0;
    char **p = calloc(n ? n : 1, sizeof *p);
    for (size_t i = 0; i < n; i++) {
        p[i] = malloc(strlen(dir) + strlen(files[i].name) + 2);
        sprintf(p[i], "%s/%s", dir, files[i].name);
    }
    free(files);
    *paths = p;
    return n;
}

void tu_free_paths(char **paths, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(paths[i]);
    free(paths);
}

long tu_read_events(const char *dir, struct cbus_event **evs)
{
    char **paths;
    size_t nf = tu_log_files(dir, &paths);
    size_t cap = 1024, cnt = 0;
    struct cbus_event *v = malloc(cap * sizeof *v);
    long result = 0;
    for (size_t f = 0; f < nf && result == 0; f++) {
        size_t len;
        uint8_t *buf = tu_slurp(paths[f], &len);
        size_t off = 0;
        while (off < len) {
            struct audit_item it;
            if (audit_parse(buf + off, len - off, &it, NULL)) {
                result = -1;
                break;
            }
            if (!it.is_header && !it.is_gap) {
                if (cnt == cap) {
                    cap *= 2;
                    v = realloc(v, cap * sizeof *v);
                }
                if (cbus_evmp_decode(it.event, it.event_len, &v[cnt], NULL)) {
                    result = -1;
                    break;
                }
                cnt++;
            }
            off += it.len;
        }
        free(buf);
    }
    tu_free_paths(paths, nf);
    *evs = v;
    return result ? -1 : (long)cnt;
}

#define TU_MAX_CHILDREN 64
static pid_t children[TU_MAX_CHILDREN];

void tu_track(pid_t pid)
{
    if (pid <= 0)
        return;
    for (unsigned i = 0; i < TU_MAX_CHILDREN; i++)
        if (!children[i]) {
            children[i] = pid;
            return;
        }
    /* No room to remember it: do not let it outlive the test. */
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

static void untrack(pid_t pid)
{
    for (unsigned i = 0; i < TU_MAX_CHILDREN; i++)
        if (children[i] == pid)
            children[i] = 0;
}

int tu_wait(pid_t pid, unsigned timeout_ms)
{
    int st = test_wait_pid(pid, timeout_ms); /* reaps it on every path */
    untrack(pid);
    return st;
}

void tu_kill_all(void)
{
    for (unsigned i = 0; i < TU_MAX_CHILDREN; i++) {
        if (!children[i])
            continue;
        kill(children[i], SIGKILL);
        waitpid(children[i], NULL, 0);
        children[i] = 0;
    }
}

void tu_child_dies_with_parent(void)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
}

int tu_run(char *const argv[], char *out, size_t len)
{
    int pfd[2];
    if (pipe(pfd))
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        tu_child_dies_with_parent();
        dup2(pfd[1], 1);
        dup2(pfd[1], 2);
        close(pfd[0]);
        close(pfd[1]);
        execv(argv[0], argv);
        _exit(127);
    }
    close(pfd[1]);
    size_t got = 0;
    for (;;) {
        char tmp[4096];
        ssize_t r = read(pfd[0], tmp, sizeof tmp);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        size_t take = (size_t)r;
        if (len && got + take > len - 1)
            take = len - 1 - got;
        memcpy(out + got, tmp, take);
        got += take;
    }
    close(pfd[0]);
    if (len)
        out[got] = '\0';
    int status;
    if (waitpid(pid, &status, 0) < 0)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

pid_t tu_start_daemon(const char *bus, const char *ini, const char *dir, const char *logfile)
{
    pid_t pid = fork();
    if (pid == 0) {
        tu_child_dies_with_parent();
        int fd = open(logfile, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execl(CBUS_AUDIT_BIN, CBUS_AUDIT_BIN, "--bus", bus, "--config", ini, "--dir", dir,
              (char *)NULL);
        _exit(127);
    }
    tu_track(pid);
    return pid;
}

int tu_wait_consumer(const char *bus_name, const char *name, unsigned ms)
{
    uint64_t end = test_now_ms() + ms;
    cbus_bus *bus;
    if (cbus_bus_open(&bus, bus_name, 0))
        return -1;
    int idx = -1;
    while (idx < 0 && test_now_ms() < end) {
        for (unsigned i = 0; i < CBUS_MAX_CONSUMERS; i++) {
            struct cbus_consumer_entry *e = cbus_bus_consumer_entry(bus, i);
            if (e && atomic_load(&e->state) == CBUS_CSTATE_ACTIVE &&
                !strncmp(e->name, name, sizeof e->name) && cbus_bus_consumer_alive(bus, i) == 1)
                idx = (int)i;
        }
        if (idx < 0)
            test_sleep_ms(5);
    }
    cbus_bus_close(bus);
    return idx;
}

int tu_wait_cursor(const char *bus_name, int idx, uint64_t target, unsigned ms)
{
    uint64_t end = test_now_ms() + ms;
    cbus_bus *bus;
    if (cbus_bus_open(&bus, bus_name, 0))
        return -1;
    struct cbus_consumer_entry *e = cbus_bus_consumer_entry(bus, (unsigned)idx);
    int rc = -1;
    while (test_now_ms() < end) {
        if (atomic_load(&e->cursor) >= target) {
            rc = 0;
            break;
        }
        test_sleep_ms(5);
    }
    cbus_bus_close(bus);
    return rc;
}

int tu_wait_caught_up(const char *bus_name, int idx, unsigned ms)
{
    uint64_t end = test_now_ms() + ms;
    cbus_bus *bus;
    if (cbus_bus_open(&bus, bus_name, 0))
        return -1;
    int rc = -1;
    while (rc && test_now_ms() < end) {
        rc = 0;
        for (unsigned L = 0; L < cbus_bus_lanes(bus); L++) {
            uint64_t cur, rd;
            if (cbus_bus_consumer_lane(bus, (unsigned)idx, L, &cur, &rd) ||
                cur < cbus_bus_lane_tail(bus, L))
                rc = -1;
        }
        if (rc)
            test_sleep_ms(5);
    }
    cbus_bus_close(bus);
    return rc;
}

size_t tu_value_offsets(const uint8_t *buf, size_t len, size_t *offs, size_t max)
{
    size_t off = 0, n = 0;
    while (off < len && n < max) {
        struct audit_item it;
        if (audit_parse(buf + off, len - off, &it, NULL))
            break;
        offs[n++] = off;
        off += it.len;
    }
    return n;
}

uint8_t *tu_slurp(const char *path, size_t *len)
{
    uint8_t *buf;
    if (audit_read_file(path, &buf, len))
        return NULL;
    return buf;
}

void tu_spit(const char *path, const uint8_t *buf, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        abort();
    size_t done = 0;
    while (done < len) {
        ssize_t w = write(fd, buf + done, len - done);
        if (w <= 0)
            abort();
        done += (size_t)w;
    }
    close(fd);
}
