/* Process identity (pid + start time against pid reuse) and futexes. */
#include "internal.h"

#include <limits.h>
#include <linux/futex.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

uint64_t cbus__pid_start_time(int pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* comm may hold spaces and parentheses: fields start after the last ')'. */
    char *p = strrchr(buf, ')');
    if (!p)
        return 0;
    p++;
    /* field 22 (starttime) is the 20th field after comm */
    for (int field = 3; field <= 22; field++) {
        p = strchr(p, ' ');
        if (!p)
            return 0;
        p++;
        if (field == 22)
            return strtoull(p, NULL, 10);
    }
    return 0;
}

int cbus__pid_alive(uint32_t pid, uint64_t start_time)
{
    /* pid comes from shared memory: never let 0 or a negative value reach kill(). */
    if (pid == 0 || pid > (uint32_t)INT_MAX)
        return 0;
    if (kill((pid_t)pid, 0) < 0 && errno == ESRCH)
        return 0;
    if (start_time) {
        uint64_t now = cbus__pid_start_time((int)pid);
        if (now && now != start_time)
            return 0; /* pid reused by another process */
        if (!now)
            return 0;
    }
    return 1;
}

static CBUS__TLS uint32_t cached_tid;

uint32_t cbus__gettid(void)
{
    if (CBUS__UNLIKELY(!cached_tid))
        cached_tid = (uint32_t)syscall(SYS_gettid);
    return cached_tid;
}

void cbus__proc_after_fork(void)
{
    cached_tid = 0; /* the child's thread has another tid */
}

int cbus__futex_wait(_Atomic uint32_t *addr, uint32_t val, uint64_t timeout_ns)
{
    struct timespec ts = {(time_t)(timeout_ns / 1000000000u), (long)(timeout_ns % 1000000000u)};
    /* Shared (not PRIVATE) futex: waiters and wakers are different processes. */
    long r = syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT, val, &ts, NULL, 0);
    if (r < 0)
        return errno == EAGAIN || errno == ETIMEDOUT ? 0 : -errno;
    return 0;
}

int cbus__futex_wake(_Atomic uint32_t *addr)
{
    long r = syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
    return r < 0 ? -errno : (int)r;
}
