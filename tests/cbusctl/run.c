#include "run.h"

#include "support.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define MAX_ARGS 64

struct cap {
    char *data;
    size_t len, cap;
};

static void cap_add(struct cap *c, const char *p, size_t n)
{
    if (c->len + n + 1 > c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 4096;
        while (cap < c->len + n + 1)
            cap *= 2;
        c->data = realloc(c->data, cap);
        if (!c->data)
            abort();
        c->cap = cap;
    }
    memcpy(c->data + c->len, p, n);
    c->len += n;
    c->data[c->len] = '\0';
}

static pid_t spawn(const char *const *argv, int as_uid, int *out_fd, int *err_fd)
{
    int o[2], e[2];
    if (pipe2(o, O_CLOEXEC) || pipe2(e, O_CLOEXEC))
        abort();
    /* Room for a ring's worth of tail output, so a background tail the test
     * reads only at the end never blocks on a full pipe. */
    fcntl(o[1], F_SETPIPE_SZ, 1 << 20);
    pid_t pid = fork();
    if (pid < 0)
        abort();
    if (pid == 0) {
        dup2(o[1], STDOUT_FILENO);
        dup2(e[1], STDERR_FILENO);
        if (as_uid >= 0) {
            /* Opened before dropping privileges and run by descriptor: the
             * other uid needs execute permission on the binary only, not a
             * way through the build tree's folders (a fresh clone in a 0700
             * mktemp -d has none, and the test must still run). */
            int exe = open(CBUSCTL_PATH, O_RDONLY);
            if (exe < 0 || setgid((gid_t)as_uid) || setuid((uid_t)as_uid))
                _exit(126);
            fexecve(exe, (char *const *)argv, environ);
            _exit(127);
        }
        execv(CBUSCTL_PATH, (char *const *)argv);
        _exit(127);
    }
    close(o[1]);
    close(e[1]);
    *out_fd = o[0];
    *err_fd = e[0];
    return pid;
}

/* Reads both pipes to EOF (or the deadline), then reaps the child. */
static void collect(pid_t pid, int out_fd, int err_fd, struct run_result *r, unsigned timeout_ms)
{
    struct cap out = {0}, err = {0};
    cap_add(&out, "", 0);
    cap_add(&err, "", 0);
    uint64_t end = test_now_ms() + timeout_ms;
    int open_fds = 2, timed_out = 0;
    struct pollfd pf[2] = {{out_fd, POLLIN, 0}, {err_fd, POLLIN, 0}};
    while (open_fds) {
        uint64_t now = test_now_ms();
        if (now >= end) {
            timed_out = 1;
            kill(pid, SIGKILL);
            break;
        }
        int n = poll(pf, 2, (int)(end - now));
        if (n < 0 && errno == EINTR)
            continue;
        for (int i = 0; i < 2; i++) {
            if (pf[i].fd < 0 || !pf[i].revents)
                continue;
            char buf[4096];
            ssize_t k = read(pf[i].fd, buf, sizeof buf);
            if (k > 0) {
                cap_add(i ? &err : &out, buf, (size_t)k);
            } else if (k == 0 || errno != EINTR) {
                close(pf[i].fd);
                pf[i].fd = -1;
                open_fds--;
            }
        }
    }
    for (int i = 0; i < 2; i++)
        if (pf[i].fd >= 0)
            close(pf[i].fd);
    int status = test_wait_pid(pid, timed_out ? 1000 : timeout_ms);
    if (timed_out || status == -1)
        r->code = -1;
    else if (WIFEXITED(status))
        r->code = WEXITSTATUS(status);
    else
        r->code = 128 + WTERMSIG(status);
    r->out = out.data;
    r->err = err.data;
}

void run_cbusctl_as(struct run_result *r, int as_uid, unsigned timeout_ms, const char *const *argv)
{
    int out_fd, err_fd;
    pid_t pid = spawn(argv, as_uid, &out_fd, &err_fd);
    collect(pid, out_fd, err_fd, r, timeout_ms);
}

static void build_argv(const char **argv, const char *arg, va_list ap)
{
    int n = 0;
    argv[n++] = "cbusctl";
    for (const char *a = arg; a && n < MAX_ARGS - 1; a = va_arg(ap, const char *))
        argv[n++] = a;
    argv[n] = NULL;
}

void run_cbusctl(struct run_result *r, unsigned timeout_ms, const char *arg, ...)
{
    const char *argv[MAX_ARGS];
    va_list ap;
    va_start(ap, arg);
    build_argv(argv, arg, ap);
    va_end(ap);
    run_cbusctl_as(r, -1, timeout_ms, argv);
}

void run_free(struct run_result *r)
{
    free(r->out);
    free(r->err);
    r->out = r->err = NULL;
}

void bg_start(struct bg_proc *p, const char *arg, ...)
{
    const char *argv[MAX_ARGS];
    va_list ap;
    va_start(ap, arg);
    build_argv(argv, arg, ap);
    va_end(ap);
    p->pid = spawn(argv, -1, &p->out_fd, &p->err_fd);
    p->early = NULL;
    p->early_len = 0;
}

int bg_wait_line(struct bg_proc *p, unsigned timeout_ms)
{
    uint64_t end = test_now_ms() + timeout_ms;
    while (!p->early || !memchr(p->early, '\n', p->early_len)) {
        uint64_t now = test_now_ms();
        if (now >= end)
            return 0;
        struct pollfd pf = {p->out_fd, POLLIN, 0};
        if (poll(&pf, 1, (int)(end - now)) <= 0)
            continue;
        char buf[4096];
        ssize_t k = read(p->out_fd, buf, sizeof buf);
        if (k == 0)
            return 0;
        if (k < 0)
            continue;
        p->early = realloc(p->early, p->early_len + (size_t)k + 1);
        if (!p->early)
            abort();
        memcpy(p->early + p->early_len, buf, (size_t)k);
        p->early_len += (size_t)k;
        p->early[p->early_len] = '\0';
    }
    return 1;
}

void bg_finish(struct bg_proc *p, struct run_result *r, unsigned timeout_ms)
{
    collect(p->pid, p->out_fd, p->err_fd, r, timeout_ms);
    if (p->early) {
        size_t n = strlen(r->out);
        char *all = malloc(p->early_len + n + 1);
        if (!all)
            abort();
        memcpy(all, p->early, p->early_len);
        memcpy(all + p->early_len, r->out, n + 1);
        free(r->out);
        free(p->early);
        r->out = all;
        p->early = NULL;
    }
}
