/* The soak's shared state file (see soak.h) and its clock helpers. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "soak.h"

static int map_fd(int fd, struct soak_shared **out)
{
    void *p = mmap(NULL, sizeof **out, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED)
        return -errno;
    *out = p;
    return 0;
}

int soak_state_create(const char *path, struct soak_shared **out)
{
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return -errno;
    /* ftruncate gives zero pages: every counter starts at 0. */
    if (ftruncate(fd, (off_t)sizeof **out) < 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    int r = map_fd(fd, out);
    if (!r)
        (*out)->magic = SOAK_MAGIC;
    return r;
}

int soak_state_open(const char *path, struct soak_shared **out)
{
    int fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) < 0 || (size_t)st.st_size != sizeof **out) {
        close(fd);
        return -EPROTO;
    }
    int r = map_fd(fd, out);
    if (!r && (*out)->magic != SOAK_MAGIC) {
        soak_state_close(*out);
        return -EPROTO;
    }
    return r;
}

void soak_state_close(struct soak_shared *s)
{
    if (s)
        munmap(s, sizeof *s);
}

uint64_t soak_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void soak_sleep_ns(uint64_t ns)
{
    struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000u), .tv_nsec = (long)(ns % 1000000000u)};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}
