/* cbusctl create / destroy */
#include "cbusctl.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define CAPACITY_MIN (UINT64_C(1) << 10)
#define CAPACITY_MAX (UINT64_C(1) << 24)

static void create_help(FILE *f)
{
    fprintf(f,
            "usage: cbusctl create NAME [options]\n"
            "Creates /dev/shm/cbus.NAME, zero-filled (a full /dev/shm fails here, not later).\n"
            "  --capacity N          slots, a power of two %" PRIu64 "..%" PRIu64
            " (default 16384 = 8 MiB of slots)\n"
            "  --size BYTES          instead of --capacity: the largest capacity fitting in\n"
            "                        BYTES (4096, 64k, 8M), e.g. to stay under Docker's 64M\n"
            "  --group G             chown to group G and make it mode 0660\n"
            "  --mode OCTAL          file mode (default 0600; 0660 with --group)\n"
            "  --lossless-wait D     how long a producer waits for a lossless consumer before\n"
            "                        dropping (default 1ms)\n"
            "  --stall-timeout D     heartbeat age that untethers a lossless consumer (default 2s)\n"
            "  --abandon-timeout D   wait before skipping a dead writer's slot (default 20ms)\n"
            "  --admit-stale D       admission writer heartbeat age that makes it stale (default 3s)\n"
            "  --admission-entries N admission table entries, a power of two (default 4096)\n"
            "  --lanes N             producer lanes, a power of two 1..64 (default 1): each\n"
            "                        producer thread owns one, so threads do not contend;\n"
            "                        the capacity is split between them (at least 256 each)\n"
            "  --body-limit BYTES    bytes of body (whole prompt, answer, messages) one event may\n"
            "                        carry, 496 up to a sixteenth of a lane's slots x 496\n"
            "                        (default 65536, cut to fit)\n"
            "Durations: 500us, 1ms, 2s.\n",
            CAPACITY_MIN, CAPACITY_MAX);
}

static int is_pow2(uint64_t v)
{
    return v && !(v & (v - 1));
}

/* --mode: octal, owner read and write, never world-accessible. */
static int parse_mode(const char *text, uint32_t *out)
{
    char *end;
    errno = 0;
    unsigned long m = strtoul(text, &end, 8);
    if (errno || end == text || *end || m > 0777)
        return cli_usage_error("create", "--mode '%s': expected octal like 0600 or 0660", text);
    if ((m & 0600) != 0600 || (m & ~0660ul))
        return cli_usage_error("create",
                               "--mode %s: the owner needs read and write, and "
                               "a bus is never world-accessible (0600, 0640, "
                               "0660)",
                               text);
    *out = (uint32_t)m;
    return EXIT_OK;
}

/* A power of two in min..max. */
static int parse_pow2(const char *flag, const char *text, uint64_t min, uint64_t max, uint64_t *out)
{
    int r = cli_u64("create", flag, text, min, max, out);
    if (r)
        return r;
    if (!is_pow2(*out))
        return cli_usage_error("create", "%s %s: must be a power of two", flag, text);
    return EXIT_OK;
}

/* A duration above zero. */
static int parse_positive_duration(const char *flag, const char *text, uint64_t *out)
{
    int r = cli_duration("create", flag, text, out);
    if (r)
        return r;
    if (!*out)
        return cli_usage_error("create", "%s must be above zero", flag);
    return EXIT_OK;
}

/* One option of getopt's into *o (--size into *size). */
static int parse_create_opt(int c, const char *arg, struct cbus_create_opts *o, uint64_t *size)
{
    uint64_t v = 0;
    int r;
    switch (c) {
    case 'c':
        return parse_pow2("--capacity", arg, CAPACITY_MIN, CAPACITY_MAX, &o->capacity);
    case 's':
        return cli_u64("create", "--size", arg, 1, UINT64_MAX, size);
    case 'g':
        o->group_name = arg;
        return EXIT_OK;
    case 'm':
        return parse_mode(arg, &o->mode);
    case 'w':
        return parse_positive_duration("--lossless-wait", arg, &o->lossless_wait_ns);
    case 't':
        return parse_positive_duration("--stall-timeout", arg, &o->stall_timeout_ns);
    case 'a':
        return parse_positive_duration("--abandon-timeout", arg, &o->abandon_timeout_ns);
    case 'A':
        return parse_positive_duration("--admit-stale", arg, &o->admit_stale_ns);
    case 'e':
        if ((r = parse_pow2("--admission-entries", arg, 1, UINT32_MAX, &v)))
            return r;
        o->admission_entries = (uint32_t)v;
        return EXIT_OK;
    case 'l':
        if ((r = parse_pow2("--lanes", arg, 1, CBUS_MAX_LANES, &v)))
            return r;
        o->lanes = (uint32_t)v;
        return EXIT_OK;
    case 'b':
        if ((r = cli_u64("create", "--body-limit", arg, CBUS_BODY_PER_SLOT, CBUS_BODY_LIMIT_MAX, &v)))
            return r;
        o->body_limit = (uint32_t)v;
        return EXIT_OK;
    default: /* getopt's '?': it said what was wrong */
        create_help(stderr);
        return EXIT_USAGE;
    }
}

/* --size: the capacity into o->capacity. */
static int capacity_for_size(struct cbus_create_opts *o, uint64_t size)
{
    /* The largest power-of-two capacity whose whole segment fits. */
    uint64_t best = 0;
    for (uint64_t cap = CAPACITY_MIN; cap <= CAPACITY_MAX; cap <<= 1) {
        o->capacity = cap;
        size_t need = cbus_bus_size(o);
        if (need && need <= size)
            best = cap;
    }
    o->capacity = CAPACITY_MIN;
    if (!best) {
        char b1[32], b2[32];
        return cli_usage_error("create", "--size %s: too small, the smallest bus takes %s",
                               fmt_bytes(b1, sizeof b1, size), fmt_bytes(b2, sizeof b2, cbus_bus_size(o)));
    }
    o->capacity = best;
    return EXIT_OK;
}

/* The lanes and the body limit against the capacity; the bus's slots into
 * *slots. */
static int check_layout(const struct cbus_create_opts *o, uint64_t *slots)
{
    uint64_t lanes_cap = *slots = o->capacity ? o->capacity : 16384;
    if (o->lanes && lanes_cap / o->lanes < 256)
        return cli_usage_error("create",
                               "--lanes %u: %" PRIu64 " slots give each lane %" PRIu64
                               ", fewer than 256; raise --capacity or lower --lanes",
                               o->lanes, lanes_cap, lanes_cap / o->lanes);
    uint64_t lane_slots = lanes_cap / (o->lanes ? o->lanes : 1);
    if (o->body_limit && o->body_limit > lane_slots / 16 * CBUS_BODY_PER_SLOT)
        return cli_usage_error("create",
                               "--body-limit %u: a body may take a sixteenth of a lane, "
                               "%" PRIu64 " bytes with %" PRIu64 " slots per lane; "
                               "raise --capacity (a 1 MiB body needs 65536 per lane)",
                               o->body_limit, lane_slots / 16 * CBUS_BODY_PER_SLOT, lane_slots);
    return EXIT_OK;
}

/* What cbus_bus_create's error r means to the operator; the exit status. */
static int explain_create_error(int r, const char *name, const char *path, const struct cbus_create_opts *o)
{
    switch (r) {
    case -EEXIST:
        cli_error("bus '%s' already exists (%s): remove it first with cbusctl destroy %s", name,
                  path, name);
        return EXIT_RUNTIME;
    case -ENOSPC:
        cli_error("no room in /dev/shm for bus '%s' (%zu bytes): choose a smaller --capacity or "
                  "--size, or enlarge /dev/shm",
                  name, cbus_bus_size(o));
        return EXIT_RUNTIME;
    case -ENOENT:
        if (o->group_name) {
            cli_error("no group '%s'", o->group_name);
            return EXIT_RUNTIME;
        }
        cli_error("create bus '%s': %s", name, cbus_strerror(r));
        return EXIT_RUNTIME;
    case -EPERM:
    case -EACCES:
        cli_error("permission denied creating bus '%s' (%s)%s", name, path,
                  o->group_name ? ": you must be a member of the group to chown to it" : "");
        return EXIT_RUNTIME;
    case -EINVAL:
        cli_error("create bus '%s': the library refused the options (%s)", name, cbus_strerror(r));
        return EXIT_USAGE;
    default:
        cli_error("create bus '%s': %s", name, cbus_strerror(r));
        return EXIT_RUNTIME;
    }
}

int cmd_create(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"capacity", required_argument, NULL, 'c'},
        {"size", required_argument, NULL, 's'},
        {"group", required_argument, NULL, 'g'},
        {"mode", required_argument, NULL, 'm'},
        {"lossless-wait", required_argument, NULL, 'w'},
        {"stall-timeout", required_argument, NULL, 't'},
        {"abandon-timeout", required_argument, NULL, 'a'},
        {"admit-stale", required_argument, NULL, 'A'},
        {"admission-entries", required_argument, NULL, 'e'},
        {"lanes", required_argument, NULL, 'l'},
        {"body-limit", required_argument, NULL, 'b'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    struct cbus_create_opts o = {0};
    uint64_t size = 0, lanes_cap;
    int r;

    optind = 0;
    for (int c; (c = getopt_long(argc, argv, "h", longopts, NULL)) != -1;) {
        if (c == 'h') {
            create_help(stdout);
            return EXIT_OK;
        }
        if ((r = parse_create_opt(c, optarg, &o, &size)))
            return r;
    }
    if (optind != argc - 1)
        return cli_usage_error("create", "expected exactly one bus NAME");
    const char *name = argv[optind];
    if ((r = cli_bus_name("create", name)))
        return r;
    if (size && o.capacity)
        return cli_usage_error("create", "give --capacity or --size, not both");
    if ((size && (r = capacity_for_size(&o, size))) || (r = check_layout(&o, &lanes_cap)))
        return r;

    char path[64];
    cli_shm_path(path, sizeof path, name);
    if ((r = cbus_bus_create(name, &o)))
        return explain_create_error(r, name, path, &o);

    struct stat st;
    char sz[32];
    if (stat(path, &st) == 0)
        printf("created bus '%s' (%s): %" PRIu64 " slots x %d B%s%.0u%s, %s, mode %04o\n", name, path,
               lanes_cap, CBUS_SLOT_SIZE, o.lanes > 1 ? " in " : "", o.lanes > 1 ? o.lanes : 0u,
               o.lanes > 1 ? " lanes" : "", fmt_bytes(sz, sizeof sz, (uint64_t)st.st_size),
               (unsigned)(st.st_mode & 07777));
    else
        printf("created bus '%s' (%s)\n", name, path);
    return EXIT_OK;
}

int cmd_destroy(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    optind = 0;
    for (int c; (c = getopt_long(argc, argv, "h", longopts, NULL)) != -1;) {
        if (c == 'h') {
            printf("usage: cbusctl destroy NAME\n"
                   "Removes /dev/shm/cbus.NAME.  Processes that have it mapped keep working on the\n"
                   "old segment until they exit; new opens see no bus.\n");
            return EXIT_OK;
        }
        return cli_usage_error("destroy", "unknown option");
    }
    if (optind != argc - 1)
        return cli_usage_error("destroy", "expected exactly one bus NAME");
    const char *name = argv[optind];
    int r = cli_bus_name("destroy", name);
    if (r)
        return r;
    r = cbus_bus_destroy(name);
    if (r) {
        cli_explain_open_error(name, r);
        return EXIT_RUNTIME;
    }
    printf("destroyed bus '%s'\n", name);
    return EXIT_OK;
}
