/* The [bus] and [status] sections every daemon shares (config.c,
 * cbus_cfg_common_entry): new spellings, old spellings with a deprecation
 * line naming file:line, bad values, keys a daemon does not have. */
#include <criterion/criterion.h>

#include <cbus/consumer.h>
#include <cbus/layout.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "log.h"

struct fields {
    char bus[CBUS_NAME_MAX], consumer[CBUS_NAME_MAX], status_file[256];
    int status_off;
    uint64_t interval;
};

static struct fields f;
static char err[512];
static char logbuf[8192];

static struct cbus_cfg_common cc_for(const char *daemon)
{
    return (struct cbus_cfg_common){.daemon_section = daemon, .bus = f.bus, .consumer = f.consumer,
                                    .consumer_size = sizeof f.consumer,
                                    .status_file = f.status_file,
                                    .status_file_size = sizeof f.status_file,
                                    .status_off = &f.status_off, .status_interval_ns = &f.interval};
}

/* Applies every entry of text; returns the first error (0 if none) and
 * counts the entries taken.  What the log printed is in logbuf. */
static int apply(const struct cbus_cfg_common *cc, const char *text, int *taken)
{
    memset(logbuf, 0, sizeof logbuf);
    char path[] = "/tmp/cbus-config-log-XXXXXX";
    int lfd = mkstemp(path);
    cr_assert_geq(lfd, 0);
    fflush(stderr);
    int saved = dup(2);
    dup2(lfd, 2);
    struct cbus_cfg cfg;
    int r = cbus_cfg_parse(&cfg, "daemon.ini", text, err, sizeof err);
    cr_assert_eq(r, 0, "%s", err);
    *taken = 0;
    for (size_t i = 0; i < cfg.count && !r; i++) {
        int t = cbus_cfg_common_entry(cc, &cfg, &cfg.entries[i], err, sizeof err);
        if (t < 0)
            r = t;
        else
            *taken += t;
    }
    cbus_cfg_free(&cfg);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    lseek(lfd, 0, SEEK_SET);
    ssize_t n = read(lfd, logbuf, sizeof logbuf - 1);
    logbuf[n > 0 ? n : 0] = '\0';
    close(lfd);
    unlink(path);
    return r;
}

static void setup(void)
{
    memset(&f, 0, sizeof f);
    cbus_log_init("test_config", CBUS_LOG_INFO);
}

TestSuite(daemon_config, .init = setup);

Test(daemon_config, shared_keys_are_taken_without_a_word)
{
    struct cbus_cfg_common cc = cc_for("audit");
    int taken;
    cr_assert_eq(apply(&cc, "[bus]\nname = demo\nconsumer = aud\n[status]\nfile = /x/s.json\n"
                            "interval = 250ms\n[audit]\ndir = x\n", &taken), 0, "%s", err);
    cr_assert_eq(taken, 4, "[audit] dir is the daemon's own");
    cr_assert_str_eq(f.bus, "demo");
    cr_assert_str_eq(f.consumer, "aud");
    cr_assert_str_eq(f.status_file, "/x/s.json");
    cr_assert_eq(f.interval, 250000000u);
    cr_assert_eq(f.status_off, 0);
    cr_assert_null(strstr(logbuf, "deprecated"), "%s", logbuf);
}

Test(daemon_config, old_spellings_are_taken_with_a_warning_naming_file_and_line)
{
    struct cbus_cfg_common cc = cc_for("ratelimit");
    int taken;
    cr_assert_eq(apply(&cc, "[ratelimit]\nname = rl\nstatus_file = /s.json\nstatus_interval = 2s\n"
                            "bus = demo\n[bus]\nconsumer_name = rl2\n", &taken), 0, "%s", err);
    cr_assert_eq(taken, 5);
    cr_assert_str_eq(f.consumer, "rl2", "the later line wins, as in any INI");
    cr_assert_str_eq(f.bus, "demo");
    cr_assert_str_eq(f.status_file, "/s.json");
    cr_assert_eq(f.interval, 2000000000u);
    cr_assert(strstr(logbuf, "daemon.ini:2: [ratelimit] name is deprecated: write [bus] consumer"),
              "%s", logbuf);
    cr_assert(strstr(logbuf, "daemon.ini:3: [ratelimit] status_file is deprecated: write [status] file"),
              "%s", logbuf);
    cr_assert(strstr(logbuf, "daemon.ini:4: [ratelimit] status_interval is deprecated: write "
                             "[status] interval"), "%s", logbuf);
    cr_assert(strstr(logbuf, "daemon.ini:5: [ratelimit] bus is deprecated: write [bus] name"), "%s",
              logbuf);
    cr_assert(strstr(logbuf, "daemon.ini:7: [bus] consumer_name is deprecated: write [bus] consumer"),
              "%s", logbuf);
}

Test(daemon_config, another_daemons_section_is_not_taken)
{
    /* [audit] name is audit's old spelling, not export's. */
    struct cbus_cfg_common cc = cc_for(NULL);
    int taken;
    cr_assert_eq(apply(&cc, "[audit]\nname = x\n[ratelimit]\nname = y\n", &taken), 0);
    cr_assert_eq(taken, 0);
    cr_assert_str_eq(f.consumer, "");
}

Test(daemon_config, a_setting_the_daemon_lacks_is_left_to_it)
{
    struct cbus_cfg_common cc = {.bus = f.bus, .consumer = f.consumer,
                                 .consumer_size = sizeof f.consumer};
    int taken;
    cr_assert_eq(apply(&cc, "[bus]\nname = b\n[status]\nfile = /s\ninterval = 1s\n", &taken), 0);
    cr_assert_eq(taken, 1, "no status fields: [status] stays the daemon's (unknown) section");
}

Test(daemon_config, bad_values_name_file_line_and_key)
{
    struct cbus_cfg_common cc = cc_for("audit");
    int taken;
    cr_assert_eq(apply(&cc, "[bus]\nname = bad/name\n", &taken), -EINVAL);
    cr_assert(strstr(err, "daemon.ini:2: [bus] name: 'bad/name' is not a valid bus name"), "%s",
              err);
    cr_assert_eq(apply(&cc, "[bus]\n\nconsumer = a-very-long-consumer-name-past-31\n", &taken),
                 -EINVAL);
    cr_assert(strstr(err, "daemon.ini:3: [bus] consumer:"), "%s", err);
    cr_assert_eq(apply(&cc, "[status]\ninterval = 5ms\n", &taken), -EINVAL);
    cr_assert(strstr(err, "daemon.ini:2: [status] interval: must be at least 10ms"), "%s", err);
    cr_assert_eq(apply(&cc, "[status]\ninterval = soon\n", &taken), -EINVAL);
    cc.consumer_size = 8; /* a daemon that derives longer names from it */
    cr_assert_eq(apply(&cc, "[audit]\nname = eightch\n", &taken), 0);
    cr_assert_eq(apply(&cc, "[audit]\nname = ninechar\n", &taken), -EINVAL);
    cr_assert(strstr(err, "(1..7 of"), "%s", err);
}

Test(daemon_config, status_off)
{
    struct cbus_cfg_common cc = cc_for("audit");
    int taken;
    cr_assert_eq(apply(&cc, "[status]\nfile = off\n", &taken), 0);
    cr_assert_eq(f.status_off, 1);
    cr_assert_str_eq(f.status_file, "");
    /* Without a flag, off means no file. */
    snprintf(f.status_file, sizeof f.status_file, "/old");
    cc.status_off = NULL;
    cr_assert_eq(apply(&cc, "[status]\nfile = off\n", &taken), 0);
    cr_assert_str_eq(f.status_file, "");
    /* A daemon that always writes one refuses it. */
    cc.status_required = 1;
    cr_assert_eq(apply(&cc, "[status]\nfile = off\n", &taken), -EINVAL);
    cr_assert(strstr(err, "always writes its status"), "%s", err);
}

/* [bus] start: the resume policy's case 3 (attach.h) as an enum cbus_start;
 * resume only for a daemon that offers it; a daemon without the setting
 * leaves the key alone. */
Test(daemon_config, bus_start_is_shared_and_resume_only_where_offered)
{
    unsigned start = 99;
    struct cbus_cfg_common cc = cc_for("cost");
    cc.start = &start;
    int taken;
    cr_assert_eq(apply(&cc, "[bus]\nstart = newest\n", &taken), 0, "%s", err);
    cr_assert_eq(taken, 1);
    cr_assert_eq(start, CBUS_START_NEWEST);
    cr_assert_eq(apply(&cc, "[bus]\nstart = oldest\n", &taken), 0, "%s", err);
    cr_assert_eq(start, CBUS_START_OLDEST);
    cr_assert_eq(apply(&cc, "[bus]\nstart = resume\n", &taken), -EINVAL);
    cr_assert_not_null(strstr(err, "daemon.ini:2: [bus] start: 'resume' is not one of: newest, oldest"),
                       "%s", err);
    cc.start_resume = 1;
    cr_assert_eq(apply(&cc, "[bus]\nstart = resume\n", &taken), 0, "%s", err);
    cr_assert_eq(start, CBUS_START_RESUME);
    /* audit's old spelling: taken, with the deprecation line */
    struct cbus_cfg_common au = cc_for("audit");
    au.start = &start;
    cr_assert_eq(apply(&au, "[audit]\nstart = newest\n", &taken), 0, "%s", err);
    cr_assert_eq(taken, 1);
    cr_assert_eq(start, CBUS_START_NEWEST);
    cr_assert_not_null(strstr(logbuf, "daemon.ini:2: [audit] start is deprecated: write [bus] start"),
                       "%s", logbuf);
    struct cbus_cfg_common none = cc_for("cost");
    cr_assert_eq(apply(&none, "[bus]\nstart = oldest\n", &taken), 0, "%s", err);
    cr_assert_eq(taken, 0, "a daemon without the setting keeps the key to itself");
}

/* The one config reader (cbus_cfg_read_text, under cbus_cfg_load and the
 * cost and history loaders): a directory, a FIFO (without blocking: no
 * writer ever opens it) and a NUL byte are refused with the path named. */
Test(daemon_config, config_reader_refuses_a_directory_a_fifo_and_a_nul)
{
    char d[] = "/tmp/cbus-cfgread-XXXXXX";
    cr_assert_not_null(mkdtemp(d));
    char fifo[64], nul[64], ok[64];
    snprintf(fifo, sizeof fifo, "%s/fifo.ini", d);
    snprintf(nul, sizeof nul, "%s/nul.ini", d);
    snprintf(ok, sizeof ok, "%s/ok.ini", d);
    cr_assert_eq(mkfifo(fifo, 0600), 0);
    int fd = open(nul, O_WRONLY | O_CREAT, 0600);
    cr_assert_eq(write(fd, "[bus]\nname = a\0\n[x]\n", 20), 20);
    close(fd);
    fd = open(ok, O_WRONLY | O_CREAT, 0600);
    cr_assert_eq(write(fd, "[bus]\nname = a\n", 15), 15);
    close(fd);
    char *text;
    cr_assert_eq(cbus_cfg_read_text(d, &text, err, sizeof err), -EISDIR);
    cr_assert_not_null(strstr(err, "is a directory, not a config file"), "%s", err);
    cr_assert_eq(cbus_cfg_read_text(fifo, &text, err, sizeof err), -EINVAL);
    cr_assert_not_null(strstr(err, "fifo.ini: not a regular file"), "%s", err);
    cr_assert_eq(cbus_cfg_read_text(nul, &text, err, sizeof err), -EINVAL);
    cr_assert_not_null(strstr(err, "nul.ini: contains a NUL byte"), "%s", err);
    cr_assert_eq(cbus_cfg_read_text(ok, &text, err, sizeof err), 0, "%s", err);
    cr_assert_str_eq(text, "[bus]\nname = a\n");
    free(text);
    struct cbus_cfg cfg;
    cr_assert_eq(cbus_cfg_load(&cfg, fifo, err, sizeof err), -EINVAL, "cbus_cfg_load reads the same way");
    unlink(fifo);
    unlink(nul);
    unlink(ok);
    rmdir(d);
}

/* HOST:PORT on loopback only, the parser cost and history share. */
Test(daemon_config, loopback_listen_takes_v4_v6_and_localhost_only)
{
    char host[64];
    unsigned port;
    const char *why;
    cr_assert_eq(cbus_parse_loopback_listen("127.0.0.1:9464", host, sizeof host, &port, &why), 0);
    cr_assert_str_eq(host, "127.0.0.1");
    cr_assert_eq(port, 9464);
    cr_assert_eq(cbus_parse_loopback_listen("[::1]:0", host, sizeof host, &port, &why), 0);
    cr_assert_str_eq(host, "::1");
    cr_assert_eq(port, 0);
    cr_assert_eq(cbus_parse_loopback_listen("localhost:80", host, sizeof host, &port, &why), 0);
    cr_assert_str_eq(host, "127.0.0.1");
    cr_assert_eq(cbus_parse_loopback_listen("0.0.0.0:80", host, sizeof host, &port, &why), -EINVAL);
    cr_assert_not_null(strstr(why, "loopback only"), "%s", why);
    cr_assert_eq(cbus_parse_loopback_listen("127.0.0.1:70000", host, sizeof host, &port, &why),
                 -EINVAL);
    cr_assert_eq(cbus_parse_loopback_listen("9464", host, sizeof host, &port, &why), -EINVAL);
    cr_assert_eq(cbus_parse_loopback_listen("127.0.0.1:", host, sizeof host, &port, &why), -EINVAL);
}

/* What cbus_cfg_load_with hands a daemon's parser: the text, the file as
 * the name in messages, and the file's directory for relative paths. */
struct seen_parse {
    char name[128], text[64], base[128];
};

static int record_parse(void *conf, const char *name, const char *text, const char *base_dir,
                        char *e, size_t elen)
{
    struct seen_parse *s = conf;
    snprintf(s->name, sizeof s->name, "%s", name);
    snprintf(s->text, sizeof s->text, "%s", text);
    snprintf(s->base, sizeof s->base, "%s", base_dir);
    if (strstr(text, "bad"))
        return snprintf(e, elen, "%s:1: bad", name), -EINVAL;
    return 0;
}

Test(daemon_config, load_with_gives_the_parser_text_name_and_directory)
{
    char d[] = "/tmp/cbus-cfgload-XXXXXX";
    cr_assert_not_null(mkdtemp(d));
    char ok[64], bad[64], missing[64];
    snprintf(ok, sizeof ok, "%s/ok.ini", d);
    snprintf(bad, sizeof bad, "%s/bad.ini", d);
    snprintf(missing, sizeof missing, "%s/none.ini", d);
    int fd = open(ok, O_WRONLY | O_CREAT, 0600);
    cr_assert_eq(write(fd, "[a]\nk = v\n", 10), 10);
    close(fd);
    fd = open(bad, O_WRONLY | O_CREAT, 0600);
    cr_assert_eq(write(fd, "bad\n", 4), 4);
    close(fd);
    struct seen_parse s = {0};
    cr_assert_eq(cbus_cfg_load_with(ok, record_parse, &s, err, sizeof err), 0, "%s", err);
    cr_assert_str_eq(s.name, ok);
    cr_assert_str_eq(s.text, "[a]\nk = v\n");
    cr_assert_str_eq(s.base, d);
    cr_assert_eq(cbus_cfg_load_with(bad, record_parse, &s, err, sizeof err), -EINVAL);
    cr_assert_not_null(strstr(err, "bad.ini:1: bad"), "the parser's message: %s", err);
    memset(&s, 0, sizeof s);
    cr_assert_eq(cbus_cfg_load_with(missing, record_parse, &s, err, sizeof err), -ENOENT);
    cr_assert_not_null(strstr(err, "none.ini: "), "%s", err);
    cr_assert_str_eq(s.name, "", "an unreadable file never reaches the parser");
    unlink(ok);
    unlink(bad);
    rmdir(d);
}

Test(daemon_config, unknown_names_the_key_in_a_known_section_else_the_section)
{
    static const char *const known[] = {"bus", "store", NULL};
    struct cbus_cfg cfg;
    cr_assert_eq(cbus_cfg_parse(&cfg, "d.ini", "[store]\nsize = 1\n[stor]\npath = x\n", err,
                                sizeof err), 0, "%s", err);
    cr_assert_eq(cbus_cfg_unknown(&cfg, &cfg.entries[0], known, err, sizeof err), -EINVAL);
    cr_assert_not_null(strstr(err, "d.ini:2: [store] size: unknown key"), "%s", err);
    cr_assert_eq(cbus_cfg_unknown(&cfg, &cfg.entries[1], known, err, sizeof err), -EINVAL);
    cr_assert_not_null(strstr(err, "d.ini:4: [stor] path: unknown section [stor]"), "%s", err);
    cbus_cfg_free(&cfg);
}

Test(daemon_config, expand_bus_puts_the_bus_name_in_or_leaves_a_path_that_would_not_fit)
{
    char p[32] = "/var/lib/%b/x.db";
    cr_assert_eq(cbus_cfg_expand_bus(p, sizeof p, "prod"), 0);
    cr_assert_str_eq(p, "/var/lib/prod/x.db");
    cr_assert_eq(cbus_cfg_expand_bus(p, sizeof p, "other"), 0, "no %%b: nothing to do");
    cr_assert_str_eq(p, "/var/lib/prod/x.db");
    char q[20] = "/s/%b/checkpoint";
    cr_assert_eq(cbus_cfg_expand_bus(q, sizeof q, "abcde"), 0);
    cr_assert_str_eq(q, "/s/abcde/checkpoint", "exactly fills: 19 bytes and the NUL in 20");
    char r[20] = "/s/%b/checkpoint";
    cr_assert_eq(cbus_cfg_expand_bus(r, sizeof r, "abcdef"), -ENAMETOOLONG);
    cr_assert_str_eq(r, "/s/%b/checkpoint", "unchanged");
}
