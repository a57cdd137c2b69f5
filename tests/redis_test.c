#include "redis_test.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

static const char *redis_bin(void)
{
    static const char *const cands[] = {"/usr/bin/redis-server", "/usr/local/bin/redis-server",
                                        "/usr/sbin/redis-server"};
    const char *e = getenv("CBUS_REDIS_SERVER");
    if (e && *e)
        return e;
    for (size_t i = 0; i < sizeof cands / sizeof cands[0]; i++)
        if (access(cands[i], X_OK) == 0)
            return cands[i];
    return NULL;
}

static unsigned free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0)
        return 0;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof a;
    unsigned port = 0;
    if (bind(s, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(s, (struct sockaddr *)&a, &l) == 0)
        port = ntohs(a.sin_port);
    close(s);
    return port;
}

static const char *auth_password;

static redisContext *conn(unsigned port)
{
    struct timeval tv = {.tv_sec = 1};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", (int)port, tv);
    if (c && c->err) {
        redisFree(c);
        return NULL;
    }
    if (c)
        redisSetTimeout(c, tv);
    if (c && auth_password) {
        redisReply *rep = redisCommand(c, "AUTH %s", auth_password);
        if (rep)
            freeReplyObject(rep);
    }
    return c;
}

static int redis_test_start_attempt(struct redis_test *r, unsigned port, int attempt)
{
    const char *bin = redis_bin();
    if (!bin)
        return -ENOENT;
    if (!r->dir[0]) {
        snprintf(r->dir, sizeof r->dir, "/tmp/cbus-redis-XXXXXX");
        if (!mkdtemp(r->dir))
            return -errno;
    }
    auth_password = r->password;
    r->port = port ? port : free_port();
    if (!r->port)
        return -EADDRNOTAVAIL;
    char ps[16];
    snprintf(ps, sizeof ps, "%u", r->port);
    pid_t pid = fork();
    if (pid < 0)
        return -errno;
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0) {
            dup2(null, 1);
            dup2(null, 2);
        }
        if (r->password)
            execl(bin, bin, "--port", ps, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                  "--dir", r->dir, "--daemonize", "no", "--loglevel", "warning", "--requirepass",
                  r->password, (char *)NULL);
        else
            execl(bin, bin, "--port", ps, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                  "--dir", r->dir, "--daemonize", "no", "--loglevel", "warning", (char *)NULL);
        _exit(127);
    }
    r->pid = pid;
    for (int i = 0; i < 500; i++) { /* up to 5 s */
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            r->pid = 0;
            /* Most often the port: free_port() closed it, and another test's
             * server (criterion runs tests side by side) took it first. */
            return port || attempt >= 5 ? -ECHILD : redis_test_start_attempt(r, 0, attempt + 1);
        }
        redisContext *c = conn(r->port);
        if (c) {
            /* Ours, not another test's server that holds the port: its
             * process id is the child's (a shared server would mix the
             * tests' keys: cost_fleet saw the other test's spend). */
            redisReply *rep = redisCommand(c, "INFO server");
            const char *pidp = rep && rep->type == REDIS_REPLY_STRING ? strstr(rep->str, "process_id:") : NULL;
            int ours = pidp && strtol(pidp + 11, NULL, 10) == (long)pid;
            if (rep)
                freeReplyObject(rep);
            redisFree(c);
            if (ours)
                return 0;
        }
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    redis_test_kill(r);
    return -ETIMEDOUT;
}

int redis_test_start(struct redis_test *r, unsigned port)
{
    return redis_test_start_attempt(r, port, 0);
}

void redis_test_kill(struct redis_test *r)
{
    if (r->pid > 0) {
        kill(r->pid, SIGCONT);
        kill(r->pid, SIGKILL);
        waitpid(r->pid, NULL, 0);
    }
    r->pid = 0;
}

void redis_test_pause(struct redis_test *r, int paused)
{
    if (r->pid > 0)
        kill(r->pid, paused ? SIGSTOP : SIGCONT);
}

long long redis_test_int(const struct redis_test *r, const char *fmt, ...)
{
    redisContext *c = conn(r->port);
    if (!c)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    redisReply *rep = redisvCommand(c, fmt, ap);
    va_end(ap);
    long long v = -1;
    if (rep && rep->type == REDIS_REPLY_INTEGER)
        v = rep->integer;
    else if (rep && rep->type == REDIS_REPLY_STRING)
        v = strtoll(rep->str, NULL, 10);
    else if (rep && rep->type == REDIS_REPLY_STATUS)
        v = 0;
    if (rep)
        freeReplyObject(rep);
    redisFree(c);
    return v;
}

long long redis_test_keys_outside(const struct redis_test *r, const char *prefix, long long *total)
{
    redisContext *c = conn(r->port);
    if (!c)
        return -1;
    redisReply *rep = redisCommand(c, "KEYS *");
    long long out = -1;
    if (rep && rep->type == REDIS_REPLY_ARRAY) {
        out = 0;
        for (size_t i = 0; i < rep->elements; i++)
            if (strncmp(rep->element[i]->str, prefix, strlen(prefix)))
                out++;
        if (total)
            *total = (long long)rep->elements;
    }
    if (rep)
        freeReplyObject(rep);
    redisFree(c);
    return out;
}
