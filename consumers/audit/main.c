/* cbus-audit: tamper-evident append-only audit log of a cbus bus.
 *
 *   cbus-audit [run] --bus NAME [--config PATH] [--dir DIR] [-v]   the daemon
 *   cbus-audit verify FILE|DIR...                                 check the chain
 *   cbus-audit cat [filters] FILE|DIR...                          JSON lines
 */
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
    const char *dir = NULL;
    int version = 0;
    const struct cbus_daemon_opt own[] = {
        {"dir", 'd', &dir, NULL},
        {"version", 0, NULL, &version},
        {NULL, 0, NULL, NULL},
    };
    struct cbus_daemon_args args = {.prog = "cbus-audit", .usage = usage, .opts = own};
    int r = cbus_daemon_args(&args, argc, argv);
    if (r >= 0)
        return r;
    if (version) {
        printf("cbus-audit %s\n", CBUS_VERSION_STRING);
        return 0;
    }
    const char *bus = args.bus, *config = args.config;
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
