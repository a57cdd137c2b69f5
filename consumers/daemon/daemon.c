#include "daemon.h"
#include "log.h"

#include <cbus/cbus.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <pwd.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

volatile sig_atomic_t cbus_daemon_stop;
volatile sig_atomic_t cbus_daemon_usr1;

static void on_stop(int sig)
{
    (void)sig;
    cbus_daemon_stop = 1;
}

static void on_usr1(int sig)
{
    (void)sig;
    cbus_daemon_usr1 = 1;
}

int cbus_daemon_args(struct cbus_daemon_args *a, int argc, char **argv)
{
    enum { MAX_OPTS = 16 };
    struct option lo[MAX_OPTS + 5];
    char shorts[3 * MAX_OPTS + 16] = "b:c:vh";
    size_t n = 0, sl = strlen(shorts);
    for (; a->opts && a->opts[n].name; n++) {
        if (n == MAX_OPTS)
            return 2; /* a daemon's own table, not a user's mistake: caught by its tests */
        const struct cbus_daemon_opt *o = &a->opts[n];
        /* val: the short letter, else 256 + index (never a character) */
        lo[n] = (struct option){o->name, o->value ? required_argument : no_argument, NULL,
                                o->short_name ? o->short_name : 256 + (int)n};
        if (o->short_name) {
            shorts[sl++] = o->short_name;
            if (o->value)
                shorts[sl++] = ':';
            shorts[sl] = '\0';
        }
    }
    lo[n++] = (struct option){"bus", required_argument, NULL, 'b'};
    lo[n++] = (struct option){"config", required_argument, NULL, 'c'};
    lo[n++] = (struct option){"verbose", no_argument, NULL, 'v'};
    lo[n++] = (struct option){"help", no_argument, NULL, 'h'};
    lo[n] = (struct option){NULL, 0, NULL, 0};
    a->bus = a->config = NULL;
    a->verbose = 0;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, shorts, lo, NULL)) != -1) {
        switch (opt) {
        case 'b': a->bus = optarg; continue;
        case 'c': a->config = optarg; continue;
        case 'v': a->verbose = 1; continue;
        case 'h': a->usage(stdout); return 0;
        case '?': a->usage(stderr); return 2;
        default: break;
        }
        const struct cbus_daemon_opt *o = NULL;
        for (size_t i = 0; a->opts && a->opts[i].name && !o; i++)
            if (opt == (a->opts[i].short_name ? a->opts[i].short_name : 256 + (int)i))
                o = &a->opts[i];
        if (!o) {
            a->usage(stderr);
            return 2;
        }
        if (o->value)
            *o->value = optarg;
        else if (o->flag)
            *o->flag = 1;
    }
    if (optind < argc) {
        fprintf(stderr, "%s: unexpected argument '%s'\n", a->prog, argv[optind]);
        a->usage(stderr);
        return 2;
    }
    cbus_log_init(a->prog, a->verbose ? CBUS_LOG_DEBUG : CBUS_LOG_INFO);
    cbus_daemon_signals();
    return -1;
}

int cbus_daemon_pick_bus(char *cfg_bus, size_t cap, const char *arg)
{
    if (arg) {
        if (cbus_name_valid(arg) || strlen(arg) >= cap) {
            cbus_log_error("--bus %s: not a valid bus name (1..31 of [A-Za-z0-9_.-])", arg);
            return 2;
        }
        snprintf(cfg_bus, cap, "%s", arg);
    }
    if (!cfg_bus[0]) {
        cbus_log_error("no bus: give --bus NAME or [bus] name in the config");
        return 2;
    }
    return 0;
}

void cbus_daemon_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_stop;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
}
