/* cbus-web under load (issue 20 item 5): C SSE clients follow a bus that a
 * producer thread fills at R events/s, each client filtered to one user
 * (the producer cycles through C users, so each receives R/C events/s), or
 * unfiltered with --all.  Reports the daemon's CPU (from /proc, user+sys
 * over the run), what every client received against what it should have
 * (exact: the events of its user), streams cut loose and events the
 * daemon's consumer lost.  A program, not a test: figures go in the README.
 *
 *   cbus-bench-web-sse --daemon build/release/consumers/web/cbus-web \
 *                 [--clients 100] [--rate 50000] [--seconds 10] [--all]
 */
#include <cbus/bus.h>
#include <cbus/consumer.h>
#include <cbus/producer.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAXC 1000

static char bus[64];
static unsigned nclients = 100, rate = 50000, seconds = 10;
static int all;
static _Atomic int producing = 1;
static uint64_t emitted, per_user[MAXC], prod_t0, prod_t1;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double proc_cpu_s(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    /* after ")": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime */
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static void *produce(void *arg)
{
    (void)arg;
    cbus_producer *p;
    if (cbus_producer_open(&p, bus, NULL)) {
        fprintf(stderr, "producer open failed\n");
        exit(1);
    }
    cbus_ctx *ctx = calloc(nclients, sizeof *ctx);
    for (unsigned i = 0; i < nclients; i++) {
        char u[32];
        cbus_ctx_init(&ctx[i]);
        snprintf(u, sizeof u, "user-%04u", i);
        cbus_ctx_set_user(&ctx[i], u);
        cbus_ctx_set_model(&ctx[i], "gpt-4o");
    }
    /* 1 ms ticks, rate/1000 events each. */
    uint64_t per_tick = rate / 1000 ? rate / 1000 : 1;
    uint64_t t = now_ns(), end = t + (uint64_t)seconds * 1000000000u;
    prod_t0 = t;
    unsigned u = 0;
    while (t < end) {
        for (uint64_t k = 0; k < per_tick; k++) {
            if (cbus_llm_new_token(p, &ctx[u], " token", 6) == 0) {
                per_user[u]++;
                emitted++;
            }
            u = (u + 1) % nclients;
        }
        t += 1000000;
        struct timespec ts = {(time_t)(t / 1000000000u), (long)(t % 1000000000u)};
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
    }
    prod_t1 = now_ns();
    atomic_store(&producing, 0);
    free(ctx);
    cbus_producer_close(p);
    return NULL;
}

struct client {
    int fd;
    int closed;       /* the daemon closed the stream */
    uint64_t frames;
    char carry[8];
    size_t carry_len;
};

static int dial(unsigned port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) {
        perror("connect");
        exit(1);
    }
    return fd;
}

/* Counts "data: " in the stream (HTTP/1.0: no chunk framing in between),
 * across read boundaries. */
static void count(struct client *c, const char *buf, size_t n)
{
    static const char pat[] = "data: ";
    const size_t pl = sizeof pat - 1;
    char joined[8 + 65536];
    memcpy(joined, c->carry, c->carry_len);
    memcpy(joined + c->carry_len, buf, n);
    size_t len = c->carry_len + n;
    for (const char *p = joined; (p = memmem(p, (size_t)(joined + len - p), pat, pl)); p += pl)
        c->frames++;
    size_t keep = len < pl - 1 ? len : pl - 1;
    memcpy(c->carry, joined + len - keep, keep);
    c->carry_len = keep;
}

static char *http_get(unsigned port, const char *path)
{
    int fd = dial(port);
    char req[256];
    snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
    send(fd, req, strlen(req), MSG_NOSIGNAL);
    static char buf[1 << 20];
    size_t len = 0;
    ssize_t r;
    while ((r = read(fd, buf + len, sizeof buf - 1 - len)) > 0)
        len += (size_t)r;
    buf[len] = '\0';
    close(fd);
    return buf;
}

static uint64_t json_u64(const char *doc, const char *key)
{
    const char *p = strstr(doc, key);
    return p ? strtoull(p + strlen(key), NULL, 10) : UINT64_MAX;
}

int main(int argc, char **argv)
{
    const char *daemon = NULL;
    static const struct option lo[] = {{"daemon", 1, 0, 'd'}, {"clients", 1, 0, 'c'}, {"rate", 1, 0, 'r'},
                                       {"seconds", 1, 0, 's'}, {"all", 0, 0, 'a'}, {0, 0, 0, 0}};
    int o;
    while ((o = getopt_long(argc, argv, "d:c:r:s:a", lo, NULL)) != -1) {
        switch (o) {
        case 'd': daemon = optarg; break;
        case 'c': nclients = (unsigned)atoi(optarg); break;
        case 'r': rate = (unsigned)atoi(optarg); break;
        case 's': seconds = (unsigned)atoi(optarg); break;
        case 'a': all = 1; break;
        default: return 2;
        }
    }
    if (!daemon || !nclients || nclients > MAXC || !rate || !seconds) {
        fprintf(stderr, "usage: cbus-bench-web-sse --daemon PATH [--clients N<=%d] [--rate R] [--seconds S] [--all]\n", MAXC);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    snprintf(bus, sizeof bus, "webbench%d", (int)getpid());
    struct cbus_create_opts co = {.capacity = 1u << 18};
    int r = cbus_bus_create(bus, &co);
    if (r) {
        fprintf(stderr, "create %s: %s\n", bus, cbus_strerror(r));
        return 1;
    }
    int out[2];
    if (pipe(out))
        return 1;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(out[1], 1);
        close(out[0]);
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 2);
        execl(daemon, daemon, "--bus", bus, "--listen", "127.0.0.1:0", "--prices", "",
              "--cost-snapshot", "/nonexistent", "--ratelimit-status", "/nonexistent",
              "--history", "65536", "--client-queue", "32768", "--status-file", "", (char *)NULL);
        _exit(127);
    }
    close(out[1]);
    char line[128] = {0};
    size_t ll = 0;
    while (ll < sizeof line - 1 && read(out[0], line + ll, 1) == 1 && line[ll] != '\n')
        ll++;
    unsigned port = 0;
    if (sscanf(line, "listening %*s %u", &port) != 1) {
        fprintf(stderr, "cbus-web did not start\n");
        return 1;
    }
    struct client *cl = calloc(nclients, sizeof *cl);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    for (unsigned i = 0; i < nclients; i++) {
        cl[i].fd = dial(port);
        char req[256];
        if (all)
            snprintf(req, sizeof req, "GET /v1/events HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
        else
            snprintf(req, sizeof req, "GET /v1/events?user=user-%04u HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", i);
        send(cl[i].fd, req, strlen(req), MSG_NOSIGNAL);
        fcntl(cl[i].fd, F_SETFL, O_NONBLOCK);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
        epoll_ctl(ep, EPOLL_CTL_ADD, cl[i].fd, &ev);
    }
    /* All streams open before the load. */
    for (int tries = 0; tries < 100; tries++) {
        char want[64];
        snprintf(want, sizeof want, "\"clients\":%u,", nclients);
        if (strstr(http_get(port, "/v1/state"), want))
            break;
        usleep(50000);
    }
    double cpu0 = proc_cpu_s(pid);
    struct timespec self0;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &self0);
    uint64_t t0 = now_ns();
    pthread_t th;
    pthread_create(&th, NULL, produce, NULL);
    static char buf[65536];
    uint64_t quiet_since = 0;
    (void)quiet_since;
    for (;;) {
        struct epoll_event evs[64];
        int n = epoll_wait(ep, evs, 64, 100);
        for (int k = 0; k < n; k++) {
            struct client *c = &cl[evs[k].data.u32];
            ssize_t got;
            while ((got = read(c->fd, buf, sizeof buf)) > 0)
                count(c, buf, (size_t)got);
            if (got == 0 || (got < 0 && errno != EAGAIN)) { /* closed: cut loose */
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                c->closed = 1;
            }
        }
        if (atomic_load(&producing)) {
            quiet_since = 0;
            continue;
        }
        /* After the load: until every client has what it should, or 5 s
         * without a frame (a starved daemon on a loaded machine can pause
         * for a second or more, so quiet alone does not mean done). */
        int done = 1;
        for (unsigned i = 0; i < nclients && done; i++)
            done = cl[i].closed || cl[i].frames >= (all ? emitted : per_user[i]);
        if (done)
            break;
        if (n > 0)
            quiet_since = now_ns();
        else if (!quiet_since)
            quiet_since = now_ns();
        else if (now_ns() - quiet_since > 5000000000u)
            break;
    }
    pthread_join(th, NULL);
    uint64_t t1 = now_ns();
    double cpu1 = proc_cpu_s(pid);
    struct timespec self1;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &self1);
    double wall = (double)(t1 - t0) / 1e9;
    usleep(1200000);                             /* a fresh state document */
    char *st = http_get(port, "/v1/state");
    uint64_t lost = json_u64(st, "\"lost\":"), cut = json_u64(st, "\"clients_cut\":");
    uint64_t minr = UINT64_MAX, maxr = 0, exact = 0;
    for (unsigned i = 0; i < nclients; i++) {
        uint64_t want = all ? emitted : per_user[i];
        if (cl[i].frames < minr)
            minr = cl[i].frames;
        if (cl[i].frames > maxr)
            maxr = cl[i].frames;
        exact += cl[i].frames == want;
    }
    double load[3] = {0};
    getloadavg(load, 3);
    double pwall = (double)(prod_t1 - prod_t0) / 1e9;
    uint64_t frames = 0;
    for (unsigned i = 0; i < nclients; i++)
        frames += cl[i].frames;
    printf("clients %u (%s), target %u events/s for %u s: emitted %" PRIu64 " in %.2f s (%.0f/s)\n",
           nclients, all ? "unfiltered" : "one user each", rate, seconds, emitted, pwall,
           (double)emitted / pwall);
    printf("cbus-web CPU %.2f s over %.2f s (load and drain) = %.1f%% of one core; %.2f us per event, "
           "%.2f us per frame sent (%" PRIu64 " frames)\n",
           cpu1 - cpu0, wall, 100.0 * (cpu1 - cpu0) / wall, 1e6 * (cpu1 - cpu0) / (double)emitted,
           1e6 * (cpu1 - cpu0) / (double)(frames ? frames : 1), frames);
    printf("per client received min %" PRIu64 " max %" PRIu64 ", exact for %" PRIu64 "/%u clients (each should get %s)\n",
           minr, maxr, exact, nclients, all ? "every event" : "its user's events");
    unsigned closed = 0;
    for (unsigned i = 0; i < nclients; i++)
        closed += (unsigned)cl[i].closed;
    printf("streams cut loose %" PRIu64 " (%u closed by the daemon), events the daemon's consumer lost %" PRIu64 "\n",
           cut, closed, lost);
    printf("bench process CPU %.2f s (producer + readers); load average %.2f %.2f %.2f\n",
           (double)(self1.tv_sec - self0.tv_sec) + (double)(self1.tv_nsec - self0.tv_nsec) / 1e9,
           load[0], load[1], load[2]);
    kill(pid, SIGTERM);
    int ws;
    waitpid(pid, &ws, 0);
    cbus_bus_destroy(bus);
    return exact == nclients && lost == 0 && cut == 0 ? 0 : 1;
}
