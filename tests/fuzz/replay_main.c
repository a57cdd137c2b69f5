/* Replays fuzz inputs without libFuzzer: `replay_<target> PATH...` runs the
 * target's LLVMFuzzerTestOneInput once per file (a directory: each regular
 * file in it, in name order).  ctest runs it over the seed corpus and the
 * regression inputs, so every crash ever found stays fixed under the
 * build's sanitizers.  Exit 0 when every input ran, 1 on an unreadable path
 * (a crash or a hang aborts the process, as under libFuzzer). */
#include "fuzz.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

/* An input that hangs is a failure too (libFuzzer's -timeout): each input
 * gets REPLAY_TIMEOUT_S seconds, then the replay aborts naming it. */
#define REPLAY_TIMEOUT_S 10
static const char *g_current;

static void on_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "replay: input hangs (over 10 s): ";
    ssize_t r = write(2, msg, sizeof msg - 1);
    r = write(2, g_current, strlen(g_current));
    r = write(2, "\n", 1);
    (void)r;
    abort();
}

/* Targets that need set-up define it; the others get this one. */
__attribute__((weak)) int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        return -1;
    }
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 4096;
            uint8_t *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                return -1;
            }
            buf = nb;
        }
        size_t r = fread(buf + len, 1, cap - len, f);
        len += r;
        if (r == 0)
            break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        fprintf(stderr, "replay: %s: read error\n", path);
        return -1;
    }
    /* An exact-size copy so ASan catches a read one past the input. */
    uint8_t *exact = malloc(len ? len : 1);
    if (!exact) {
        free(buf);
        return -1;
    }
    memcpy(exact, buf, len);
    free(buf);
    g_current = path;
    alarm(REPLAY_TIMEOUT_S);
    LLVMFuzzerTestOneInput(exact, len);
    alarm(0);
    free(exact);
    return 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int run_dir(const char *dir, unsigned *count)
{
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "replay: %s: %s\n", dir, strerror(errno));
        return -1;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue; /* ., .., and .gitkeep-style markers */
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            char **nn = realloc(names, cap * sizeof *names);
            if (!nn)
                break;
            names = nn;
        }
        size_t l = strlen(dir) + strlen(de->d_name) + 2;
        names[n] = malloc(l);
        if (!names[n])
            break;
        size_t dl = strlen(dir);
        snprintf(names[n], l, "%.*s/%s", (int)(dl > 1 && dir[dl - 1] == '/' ? dl - 1 : dl), dir,
                 de->d_name);
        n++;
    }
    closedir(d);
    if (n)
        qsort(names, n, sizeof *names, by_name);
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        struct stat st;
        if (stat(names[i], &st) == 0 && S_ISREG(st.st_mode)) {
            if (run_file(names[i]))
                rc = -1;
            else
                (*count)++;
        }
        free(names[i]);
    }
    free(names);
    return rc;
}

int main(int argc, char **argv)
{
    signal(SIGALRM, on_alarm);
    LLVMFuzzerInitialize(&argc, &argv);
    unsigned count = 0;
    int rc = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) < 0) {
            /* A target may have no regressions yet: a missing directory is
             * not an error, a missing file is. */
            if (errno == ENOENT && argv[i][strlen(argv[i]) - 1] == '/')
                continue;
            fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
            rc = 1;
            continue;
        }
        if (S_ISDIR(st.st_mode) ? run_dir(argv[i], &count) : run_file(argv[i]))
            rc = 1;
        else if (!S_ISDIR(st.st_mode))
            count++;
    }
    printf("replay: %u inputs ran\n", count);
    return rc;
}
