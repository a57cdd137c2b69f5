#include "harness.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef CBUS_BINARY_DIR
#error "CBUS_BINARY_DIR must name the build directory"
#endif

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void nap_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) && errno == EINTR) {
    }
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    char *buf = malloc(1 << 16);
    size_t n = buf ? fread(buf, 1, (1 << 16) - 1, f) : 0;
    fclose(f);
    if (buf)
        buf[n] = '\0';
    return buf;
}

static int64_t json_path(const char *path, const char *key)
{
    char *text = slurp(path);
    if (!text)
        return -1;
    cJSON *root = cJSON_Parse(text);
    free(text);
    if (!root)
        return -1;
    cJSON *o = root;
    char k[128];
    snprintf(k, sizeof k, "%s", key);
    /* "a.b.2": a number steps into an array */
    for (char *save = NULL, *part = strtok_r(k, ".", &save); part && o; part = strtok_r(NULL, ".", &save))
        o = cJSON_IsArray(o) ? cJSON_GetArrayItem(o, atoi(part)) : cJSON_GetObjectItemCaseSensitive(o, part);
    int64_t v = cJSON_IsNumber(o) ? (int64_t)o->valuedouble : cJSON_IsBool(o) ? cJSON_IsTrue(o) : -1;
    cJSON_Delete(root);
    return v;
}

void child_die_with_parent(pid_t parent)
{
    /* The test process may die on any path (a crash, a failed assert in a
     * helper, SIGKILL from ctest's timeout): its daemons die with it instead of
     * holding ctest's output pipe open.  getppid() closes the race with a
     * parent that died before the prctl. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(127);
}

cJSON *json_file(const char *path)
{
    char *text = slurp(path);
    if (!text)
        return NULL;
    cJSON *root = cJSON_Parse(text);
    free(text);
    return root;
}

int collector_start(struct collector *c, const char *dir, unsigned port, const char *const *args)
{
    memset(c, 0, sizeof *c);
    snprintf(c->dir, sizeof c->dir, "%s", dir);
    snprintf(c->stats, sizeof c->stats, "%s/collector.json", dir);
    snprintf(c->store, sizeof c->store, "%s/store", dir);
    char portfile[300], listen[64];
    snprintf(portfile, sizeof portfile, "%s/collector.port", dir);
    unlink(portfile);
    snprintf(listen, sizeof listen, "127.0.0.1:%u", port);
    const char *argv[40] = {CBUS_BINARY_DIR "/tools/cbus-collector/cbus-collector", "--listen", listen,
                            "--port-file", portfile, "--stats", c->stats, "--store", c->store};
    int n = 9;
    for (int i = 0; args && args[i] && n < 38; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    pid_t parent = getpid();
    c->pid = fork();
    if (c->pid == 0) {
        child_die_with_parent(parent);
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0 && !getenv("CBUS_TEST_VERBOSE"))
            dup2(devnull, 2);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    if (c->pid < 0)
        return -1;
    for (uint64_t end = now_ms() + 5000; now_ms() < end;) {
        char *p = slurp(portfile);
        if (p) {
            c->port = (unsigned)atoi(p);
            free(p);
            return 0;
        }
        int st;
        if (waitpid(c->pid, &st, WNOHANG) == c->pid) {
            c->pid = 0;
            return -1;
        }
        nap_ms(5);
    }
    return -1;
}

static int stop_child(pid_t pid, unsigned timeout_ms)
{
    if (pid <= 0)
        return -1;
    kill(pid, SIGTERM);
    int st;
    for (uint64_t end = now_ms() + timeout_ms; now_ms() < end;) {
        if (waitpid(pid, &st, WNOHANG) == pid)
            return st;
        nap_ms(5);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    return -1;
}

void collector_stop(struct collector *c)
{
    stop_child(c->pid, 5000);
    c->pid = 0;
}

int64_t collector_stat(const struct collector *c, const char *key)
{
    return json_path(c->stats, key);
}

int exporter_start(struct exporter_proc *e, const char *dir, const char *bus, const char *config_text)
{
    memset(e, 0, sizeof *e);
    snprintf(e->config, sizeof e->config, "%s/export.ini", dir);
    snprintf(e->status, sizeof e->status, "%s/status.json", dir);
    FILE *f = fopen(e->config, "w");
    if (!f)
        return -1;
    fputs(config_text, f);
    fclose(f);
    unlink(e->status);
    pid_t parent = getpid();
    e->pid = fork();
    if (e->pid == 0) {
        child_die_with_parent(parent);
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0 && !getenv("CBUS_TEST_VERBOSE"))
            dup2(devnull, 2);
        execl(CBUS_BINARY_DIR "/consumers/export/cbus-export", "cbus-export", "--bus", bus, "--config",
              e->config, "--status-file", e->status, (char *)NULL);
        _exit(127);
    }
    if (e->pid < 0)
        return -1;
    /* started once the first status file appears (it is written after attach) */
    for (uint64_t end = now_ms() + 5000; now_ms() < end;) {
        if (access(e->status, R_OK) == 0)
            return 0;
        int st;
        if (waitpid(e->pid, &st, WNOHANG) == e->pid) {
            e->pid = 0;
            return -1;
        }
        nap_ms(5);
    }
    return -1;
}

int exporter_stop(struct exporter_proc *e, unsigned timeout_ms)
{
    int st = stop_child(e->pid, timeout_ms);
    e->pid = 0;
    return st;
}

int64_t exporter_stat(const struct exporter_proc *e, const char *path)
{
    return json_path(e->status, path);
}

int64_t get_collector(const void *arg, const char *key)
{
    return collector_stat(arg, key);
}

int64_t get_exporter(const void *arg, const char *key)
{
    return exporter_stat(arg, key);
}

int64_t wait_for(int64_t (*get)(const void *arg, const char *key), const void *arg, const char *key,
                 int64_t want, unsigned timeout_ms)
{
    int64_t v = -1;
    for (uint64_t end = now_ms() + timeout_ms;;) {
        v = get(arg, key);
        if (v >= want || now_ms() >= end)
            return v;
        nap_ms(10);
    }
}

double proc_cpu_seconds(pid_t pid)
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
    if (!p)
        return -1;
    unsigned long utime = 0, stime = 0;
    /* fields after the command: state(3) ... utime(14) stime(15) */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) != 2)
        return -1;
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

unsigned free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(fd, (struct sockaddr *)&sa, sizeof sa);
    socklen_t sl = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    close(fd);
    return ntohs(sa.sin_port);
}
