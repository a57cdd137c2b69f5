/* Child processes of the soak: spawn (fork + exec, so nothing of the
 * multi-threaded parent runs in the child), SIGKILL, SIGTERM with a deadline. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "orch.h"

const char *kind_name(enum child_kind k)
{
    static const char *const names[K__COUNT] = {"verifier", "producer", "cbus-cost", "cbus-audit",
                                                "cbus-export", "cbus-ratelimit", "cbus-collector"};
    return k < K__COUNT ? names[k] : "?";
}

static void log_path(const struct child *c, char *out, size_t len)
{
    snprintf(out, len, "%s/%s.log", G.tmp, c->name);
}

/* Builds argv for c into v (strings in buf).  Returns argc. */
static int build_argv(struct child *c, char *v[24], char buf[8][PATH_MAX])
{
    int n = 0;
    switch (c->kind) {
    case K_VERIFIER:
    case K_PRODUCER:
        v[n++] = G.self;
        v[n++] = "--role";
        v[n++] = c->kind == K_VERIFIER ? "verifier" : "producer";
        v[n++] = "--state";
        v[n++] = G.state_path;
        v[n++] = "--bus";
        v[n++] = G.bus;
        v[n++] = "--index";
        snprintf(buf[0], PATH_MAX, "%u", c->kind == K_VERIFIER ? c->idx : c->instance);
        v[n++] = buf[0];
        if (c->kind == K_PRODUCER) {
            v[n++] = "--rate";
            snprintf(buf[1], PATH_MAX, "%.1f", G.rate / (G.threads + G.procs));
            v[n++] = buf[1];
        }
        break;
    case K_COST:
    case K_AUDIT:
    case K_EXPORT:
    case K_RATELIMIT: {
        static const char *const ini[] = {[K_COST] = "cost", [K_AUDIT] = "audit",
                                          [K_EXPORT] = "export", [K_RATELIMIT] = "ratelimit"};
        v[n++] = (char *)G.bin[c->kind];
        v[n++] = "--bus";
        v[n++] = G.bus;
        v[n++] = "--config";
        snprintf(buf[0], PATH_MAX, "%s/%s.ini", G.tmp, ini[c->kind]);
        v[n++] = buf[0];
        if (c->kind == K_RATELIMIT) {
            v[n++] = "--status-file";
            snprintf(buf[1], PATH_MAX, "%s/ratelimit.status.json", G.tmp);
            v[n++] = buf[1];
        }
        break;
    }
    case K_COLLECTOR:
        v[n++] = (char *)G.bin[K_COLLECTOR];
        v[n++] = "--listen";
        snprintf(buf[0], PATH_MAX, "127.0.0.1:%u", G.port);
        v[n++] = buf[0];
        v[n++] = "--stats";
        snprintf(buf[1], PATH_MAX, "%s/collector.stats.json", G.tmp);
        v[n++] = buf[1];
        switch (c->coll_mode) {
        case COLL_FAIL_503:
            v[n++] = "--fail-rate";
            v[n++] = "0.7";
            v[n++] = "--status";
            v[n++] = "503";
            break;
        case COLL_FAIL_429:
            v[n++] = "--fail-rate";
            v[n++] = "1";
            v[n++] = "--status";
            v[n++] = "429";
            v[n++] = "--retry-after";
            v[n++] = "1";
            break;
        case COLL_DROP:
            v[n++] = "--drop-first";
            v[n++] = "50";
            break;
        default:
            break;
        }
        break;
    default:
        break;
    }
    v[n] = NULL;
    return n;
}

int child_spawn(struct child *c)
{
    char *v[24];
    char buf[8][PATH_MAX];
    build_argv(c, v, buf);
    char logp[PATH_MAX];
    log_path(c, logp, sizeof logp);
    int fd = open(logp, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    /* posix_spawn, not fork: glibc's is a vfork-style clone that shares the
     * address space until the exec.  fork would copy this process's page
     * tables under its mmap lock and leave its private pages copy-on-write,
     * so the producer threads beside it (invariant 6's subjects) would
     * block on that lock or fault on their own stacks: an emit held 1.26 s
     * off the run queue, beside a library wait of 7 ms, under stress-ng. */
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    sigset_t none;
    sigemptyset(&none);
    int e = posix_spawn_file_actions_init(&fa);
    if (e) {
        close(fd);
        return -e;
    }
    e = posix_spawnattr_init(&at);
    if (e) {
        posix_spawn_file_actions_destroy(&fa);
        close(fd);
        return -e;
    }
    if (!(e = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0)) &&
        !(e = posix_spawn_file_actions_adddup2(&fa, fd, 1)) &&
        !(e = posix_spawn_file_actions_adddup2(&fa, fd, 2)) &&
        !(e = posix_spawnattr_setsigmask(&at, &none)) &&
        !(e = posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK))) {
        pid_t pid;
        e = posix_spawn(&pid, v[0], &fa, &at, v, environ);
        if (!e)
            c->pid = pid;
    }
    posix_spawnattr_destroy(&at);
    posix_spawn_file_actions_destroy(&fa);
    if (e) {
        close(fd);
        return -e;
    }
    close(fd);
    c->state = C_RUNNING;
    c->started_ns = soak_now_ns();
    if (G.verbose)
        fprintf(stderr, "soak: started %s (pid %d)\n", c->name, (int)c->pid);
    return 0;
}

void child_kill(struct child *c)
{
    if (c->pid <= 0)
        return;
    kill(c->pid, SIGKILL);
    while (waitpid(c->pid, NULL, 0) < 0 && errno == EINTR) {
    }
    G.dead_pid = c->pid; /* reaped: a pid no live process has (forged entries claim it) */
    c->pid = 0;
    c->state = C_DEAD;
}

void child_term(struct child *c, int *status, uint64_t timeout_ns)
{
    *status = 0;
    if (c->pid <= 0)
        return;
    if (c->state == C_STOPPED)
        kill(c->pid, SIGCONT);
    kill(c->pid, SIGTERM);
    uint64_t end = soak_now_ns() + timeout_ns;
    for (;;) {
        pid_t r = waitpid(c->pid, status, WNOHANG);
        if (r == c->pid)
            break;
        if (r < 0 && errno != EINTR) {
            *status = -1;
            break;
        }
        if (soak_now_ns() > end) {
            kill(c->pid, SIGKILL);
            waitpid(c->pid, status, 0);
            *status = -1; /* did not stop in time */
            break;
        }
        soak_sleep_ns(10000000);
    }
    c->pid = 0;
    c->state = C_OFF;
}

void child_log_tail(const struct child *c, unsigned lines)
{
    char logp[PATH_MAX];
    log_path(c, logp, sizeof logp);
    FILE *f = fopen(logp, "r");
    if (!f)
        return;
    /* keep the last `lines` lines in a ring of line buffers */
    char ring[16][512];
    unsigned n = 0;
    if (lines > 16)
        lines = 16;
    while (fgets(ring[n % lines], sizeof ring[0], f))
        n++;
    fclose(f);
    for (unsigned i = n > lines ? n - lines : 0; i < n; i++)
        fprintf(stderr, "    %s| %s", c->name, ring[i % lines]);
}
