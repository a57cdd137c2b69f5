/* cbusctl evict: free the consumer entry of a dead (or, forced, a live)
 * consumer, so its name, its slot in the table and any tether go away. */
#include "cbusctl.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <string.h>

static void evict_help(FILE *f)
{
    fprintf(f,
            "usage: cbusctl evict NAME INDEX|CONSUMER [--force] [--trust-owner]\n"
            "Frees a consumer entry whose process is dead (cbusctl stat shows ALIVE DEAD).\n"
            "By consumer name, every dead entry with that name is freed.\n"
            "  --force         free it even if its process is alive (it gets -ESTALE on its\n"
            "                  next call); needs an INDEX or a name held by one entry\n"
            "  --trust-owner   act on a bus owned by another uid\n");
}

static int all_digits(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (!isdigit((unsigned char)*s))
            return 0;
    return 1;
}

static void entry_desc(cbus_bus *bus, unsigned idx, char *out, size_t len)
{
    struct cbus_consumer_entry *e = cbus_bus_consumer_entry(bus, idx);
    char nm[4 * sizeof e->name];
    if (!e) {
        snprintf(out, len, "consumer %u", idx);
        return;
    }
    fmt_safe(nm, sizeof nm, e->name, sizeof e->name);
    snprintf(out, len, "consumer %u '%s' (pid %u)", idx, nm, atomic_load_explicit(&e->pid, memory_order_relaxed));
}

/* Evicts one entry and reports; returns an exit code. */
static int evict_one(cbus_bus *bus, const char *bus_name, unsigned idx, int force)
{
    char desc[160];
    entry_desc(bus, idx, desc, sizeof desc);
    int alive = cbus_bus_consumer_alive(bus, idx);
    int r = cbus_bus_evict(bus, idx, force);
    switch (r) {
    case 0:
        printf("evicted %s from bus '%s'%s\n", desc, bus_name,
               alive > 0 ? " (it was alive: forced)" : "");
        return EXIT_OK;
    case -EBUSY:
        cli_error("%s on bus '%s' is alive: stop it first, or pass --force to evict it anyway "
                  "(it will see -ESTALE)",
                  desc, bus_name);
        return EXIT_RUNTIME;
    case -ENOENT:
        cli_error("consumer entry %u of bus '%s' is free: nothing to evict", idx, bus_name);
        return EXIT_RUNTIME;
    default:
        cli_error("evict %s from bus '%s': %s", desc, bus_name, cbus_strerror(r));
        return EXIT_RUNTIME;
    }
}

int cmd_evict(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"force", no_argument, NULL, 'f'},
        {"trust-owner", no_argument, NULL, 'T'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    int force = 0, r;
    unsigned flags = 0;

    optind = 0;
    for (int c; (c = getopt_long(argc, argv, "h", longopts, NULL)) != -1;) {
        switch (c) {
        case 'f':
            force = 1;
            break;
        case 'T':
            flags |= CBUS_OPEN_TRUST_OWNER;
            break;
        case 'h':
            evict_help(stdout);
            return EXIT_OK;
        default:
            evict_help(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind != argc - 2)
        return cli_usage_error("evict", "expected a bus NAME and a consumer INDEX or name");
    const char *name = argv[optind], *who = argv[optind + 1];
    if ((r = cli_bus_name("evict", name)))
        return r;

    cbus_bus *bus;
    if ((r = cli_open_bus(&bus, name, flags)))
        return r;
    const struct cbus_shm_header *h = cbus_bus_header(bus);
    unsigned maxc = h->max_consumers < CBUS_MAX_CONSUMERS ? h->max_consumers : CBUS_MAX_CONSUMERS;

    if (all_digits(who)) {
        uint64_t idx = 0;
        if ((r = cli_u64("evict", "INDEX", who, 0, maxc - 1, &idx))) {
            cbus_bus_close(bus);
            return r;
        }
        r = evict_one(bus, name, (unsigned)idx, force);
        cbus_bus_close(bus);
        return r;
    }

    /* By name: live consumers have unique names, but dead entries keep
     * theirs, so one name may match several entries. */
    unsigned match[CBUS_MAX_CONSUMERS], nmatch = 0, ndead = 0;
    size_t wlen = strlen(who);
    for (unsigned i = 0; i < maxc; i++) {
        struct cbus_consumer_entry *e = cbus_bus_consumer_entry(bus, i);
        if (!e || atomic_load_explicit(&e->state, memory_order_acquire) == CBUS_CSTATE_FREE)
            continue;
        if (strnlen(e->name, sizeof e->name) != wlen || memcmp(e->name, who, wlen))
            continue;
        match[nmatch++] = i;
        if (cbus_bus_consumer_alive(bus, i) == 0)
            ndead++;
    }
    int rc = EXIT_OK;
    if (!nmatch) {
        cli_error("no consumer named '%s' on bus '%s' (see cbusctl stat %s)", who, name, name);
        rc = EXIT_RUNTIME;
    } else if (nmatch == 1) {
        rc = evict_one(bus, name, match[0], force);
    } else if (force) {
        cli_error("%u entries of bus '%s' are named '%s': give the INDEX to force one out", nmatch,
                  name, who);
        rc = EXIT_USAGE;
    } else if (!ndead) {
        cli_error("consumers named '%s' on bus '%s' are alive: stop them first, or pass "
                  "--force with an INDEX",
                  who, name);
        rc = EXIT_RUNTIME;
    } else {
        for (unsigned i = 0; i < nmatch; i++) {
            if (cbus_bus_consumer_alive(bus, match[i]) == 0 && evict_one(bus, name, match[i], 0))
                rc = EXIT_RUNTIME;
        }
    }
    cbus_bus_close(bus);
    return rc;
}
