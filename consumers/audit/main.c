/* cbus-audit: tamper-evident append-only audit log of a cbus bus.
 *
 *   cbus-audit [run] --bus NAME [--config PATH] [--dir DIR] [-v]   the daemon
 *   cbus-audit verify FILE|DIR...                                 check the chain
 *   cbus-audit cat [filters] FILE|DIR...                          JSON lines
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include <cbus/cbus.h>

#include "audit.h"
#include "daemon.h"
#include "log.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: cbus-audit [run] --bus NAME [--config PATH] [--dir DIR] [-v]\n"
            "       cbus-audit verify [-q] FILE|DIR...\n"
            "       cbus-audit cat [--since T] [--until T] [--user U] [--kind K,...] FILE|DIR...\n"
            "Writes every event of bus NAME, losslessly, to a hash-chained msgpack log\n"
            "(see docs/audit.md).  Exit status: 0 ok, 1 runtime failure, 2 bad usage/config.\n");
}

static int run_main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"bus", required_argument, NULL, 'b'}, {"config", required_argument, NULL, 'c'},
        {"dir", required_argument, NULL, 'd'}, {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},      {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0}};
    const char *bus = NULL, *config = NULL, *dir = NULL;
    int verbose = 0, opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "b:c:d:vh", longopts, NULL)) != -1) {
        switch (opt) {
        case 'b': bus = optarg; break;
        case 'c': config = optarg; break;
        case 'd': dir = optarg; break;
        case 'v': verbose = 1; break;
        case 'h': usage(stdout); return 0;
        case 'V': printf("cbus-audit %s\n", CBUS_VERSION_STRING); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "cbus-audit: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    cbus_log_init("cbus-audit", verbose ? CBUS_LOG_DEBUG : CBUS_LOG_INFO);
    struct audit_config cfg;
    char err[512];
    audit_config_defaults(&cfg);
    if (config && audit_config_load(&cfg, config, err, sizeof err)) {
        fprintf(stderr, "cbus-audit: %s\n", err);
        return 2;
    }
    if (bus) {
        if (cbus_name_valid(bus) || strlen(bus) >= sizeof cfg.bus) {
            fprintf(stderr, "cbus-audit: --bus '%s': not a bus name (1..31 of [A-Za-z0-9_.-])\n",
                    bus);
            return 2;
        }
        snprintf(cfg.bus, sizeof cfg.bus, "%s", bus);
    }
    if (dir) {
        if (!*dir || strlen(dir) >= sizeof cfg.dir) {
            fprintf(stderr, "cbus-audit: --dir: empty or too long\n");
            return 2;
        }
        snprintf(cfg.dir, sizeof cfg.dir, "%s", dir);
    }
    if (audit_config_check(&cfg, err, sizeof err)) {
        fprintf(stderr, "cbus-audit: %s\n", err);
        return 2;
    }
    cbus_daemon_signals();
    return audit_run(&cfg);
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "verify"))
        return audit_verify_main(argc - 1, argv + 1);
    if (argc > 1 && !strcmp(argv[1], "cat"))
        return audit_cat_main(argc - 1, argv + 1);
    if (argc > 1 && !strcmp(argv[1], "run"))
        return run_main(argc - 1, argv + 1);
    return run_main(argc, argv);
}
